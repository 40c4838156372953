"""The endpoint next in line is kept warm (issue 15).

After a user's request the built-in client keeps a verified connection to
the current endpoint ready (test_https.py).  The endpoint a request fails
over to, the next in line (/status "next_endpoint"), is kept ready the same
way, so the first failed-over request pays no connect and no TLS handshake.
An endpoint that is neither current nor next gets no connection.

Every endpoint is an https:// TlsRelay in front of a fake upstream: the
relay counts handshakes and open connections.  An idle period is played by
relay.drop_all(), which closes the connections as an origin does after its
keep-alive timeout; the client's sweep (every 5 s) opens a new warm one for
the pools it keeps warm.  Checks run once at start (interval 3600 s), so
nothing but the warm-up opens connections afterwards.  Waits are on
conditions, bounded."""

import re
import unittest

from harness import ZephyrTestCase, http_request, make_config, scaled, wait_for
from tlsfront import TestPKI, TlsRelay

HC = {"interval_seconds": 3600, "failed_interval_seconds": 3600}
SWEEP = scaled(20)  # the sweep runs every 5 s; a warm-up is one connect + handshake


def handshakes_metric(p):
    text = http_request(p.port, "GET", "/metrics").body.decode()
    total = 0
    for resumed in ("false", "true"):
        m = re.search(r'^zephyr_upstream_tls_handshakes_total\{resumed="%s"\} (\d+)$' % resumed,
                      text, re.M)
        total += int(m.group(1)) if m else 0
    return total


class Prewarm(ZephyrTestCase):

    def tls_fake(self, name, **knobs):
        f = self.start_fake(name, **knobs)
        f.relay = TlsRelay(f.port)
        self.addCleanup(f.relay.stop)
        f.url = "https://127.0.0.1:%d" % f.relay.port
        return f

    def proxy(self, groups_text=None, fakes=()):
        server = {"switch_threshold_ms": 100000, "stream_holdback_ms": 0}
        if groups_text is None:
            text = make_config([{"name": "g", "endpoints": [(f.name, f.url) for f in fakes]}],
                               server=server, health_check=HC)
        else:
            text = make_config([], server=server, health_check=HC, extra=groups_text)
        p = self.start_proxy(config_text=text, env={"SSL_CERT_FILE": TestPKI.get().ca})
        wait_for(lambda: not p.status()["checks"]["running"], scaled(10), desc="start-up checks")
        return p

    def served_by(self, p):
        r = self.post_messages(p.port)
        self.assertEqual(r.status, 200, r)
        return r.header("x-zephyr-endpoint")

    def next_name(self, p):
        ne = p.status()["next_endpoint"]
        return ne and ne["name"]

    def idle_then_warm(self, f):
        """Closes f's connections (an idle period's end) and waits until a
        new verified one is open.  Returns the relay's counts then."""
        f.relay.drop_all()
        wait_for(lambda: f.relay.open_count() == 0, scaled(5), desc="%s's connections closed" % f.name)
        before = f.relay.counts()["handshakes"]
        wait_for(lambda: f.relay.open_count() >= 1 and f.relay.counts()["handshakes"] > before,
                 SWEEP, desc="a warm connection to %s, the next in line" % f.name)
        return f.relay.counts()

    def test_next_in_line_is_warm_and_failover_pays_no_handshake(self):
        a, b = self.tls_fake("a"), self.tls_fake("b")
        p = self.proxy(fakes=(a, b))
        self.assertEqual(p.status()["current_endpoint"]["name"], "a")
        self.assertEqual(self.next_name(p), "b")
        self.assertEqual(self.served_by(p), "a")  # the proxy is in use: warm-ups begin
        b_messages = b.stats()["messages"]
        warmed = self.idle_then_warm(b)
        self.assertEqual(b.stats()["messages"], b_messages, "the warm-up sent a request to b")
        # a goes away; the request fails over to b on the warm connection.
        a.relay.stop()
        metric = handshakes_metric(p)
        self.assertEqual(self.served_by(p), "b")
        self.assertEqual(b.relay.counts()["handshakes"], warmed["handshakes"],
                         "the first request failed over to b paid a TLS handshake")
        self.assertEqual(handshakes_metric(p), metric, "a TLS handshake on the failover path")
        self.assertEqual(p.status()["current_endpoint"]["name"], "b")

    def test_an_endpoint_not_next_in_line_is_not_kept_warm(self):
        # c answers its check 300 ms slower than b: b is next in line, not c.
        a, b, c = self.tls_fake("a"), self.tls_fake("b"), self.tls_fake("c", latency_ms=300)
        p = self.proxy(fakes=(a, b, c))
        self.assertEqual(p.status()["current_endpoint"]["name"], "a")
        self.assertEqual(self.next_name(p), "b")
        self.assertEqual(self.served_by(p), "a")
        c.relay.drop_all()
        wait_for(lambda: c.relay.open_count() == 0, scaled(5), desc="c's connections closed")
        c_before = c.relay.counts()["handshakes"]
        # Two sweeps pass (b warmed twice); the first would have warmed c too.
        self.idle_then_warm(b)
        self.idle_then_warm(b)
        self.assertEqual(c.relay.open_count(), 0, "c, not next in line, was kept warm")
        self.assertEqual(c.relay.counts()["handshakes"], c_before)
        # a fails: b is current, c becomes next in line and is warmed.
        a.relay.stop()
        self.assertEqual(self.served_by(p), "b")
        wait_for(lambda: self.next_name(p) == "c", scaled(5), desc="c next in line")
        wait_for(lambda: c.relay.open_count() >= 1 and c.relay.counts()["handshakes"] > c_before,
                 SWEEP, desc="a warm connection to c, next in line now")

    def test_fallback_group_first_is_next_in_line(self):
        # A group of one: its next in line is the best of its fallback group.
        a, b = self.tls_fake("a"), self.tls_fake("b")
        text = ('[[groups]]\nname = "main"\ndefault = true\nfallback_groups = ["spare"]\n'
                'endpoints = [{ url = "%s", name = "a" }]\n\n'
                '[[groups]]\nname = "spare"\nendpoints = [{ url = "%s", name = "b" }]\n'
                % (a.url, b.url))
        p = self.proxy(groups_text=text)
        self.assertEqual(self.next_name(p), "b")
        self.assertEqual(self.served_by(p), "a")
        warmed = self.idle_then_warm(b)
        a.relay.stop()
        self.assertEqual(self.served_by(p), "b")
        self.assertEqual(b.relay.counts()["handshakes"], warmed["handshakes"],
                         "the first request failed over to the fallback group paid a handshake")


if __name__ == "__main__":
    unittest.main()
