"""https:// endpoints through the built-in client (src/h1.c + src/tls.c).

The fake upstream speaks plain HTTP; tlsfront.TlsRelay puts TLS in front of
it with a certificate from a CA made for the test run, which the proxy
trusts through SSL_CERT_FILE (the "system store" path of src/tls.c).

- TLS behaviour: verification failures (wrong host, expired, unknown CA)
  are a 502 naming the endpoint and the TLS problem; SNI for names, none
  for IP literals; one handshake per pooled connection; the session resumed
  after the origin closed the connection; libcurl never loaded.
- The forwarding and fault suites again, over TLS (subclasses, as
  test_libcurl_client.py does for libcurl): only start_fake changes, so the
  fake's faults (closes, resets, stalls, bad framing) arrive through TLS.

Only subclasses of the imported suites are defined here; the base classes
are imported as modules so unittest does not run them twice."""
import json
import re
import unittest

import test_faults
import test_proxy
from harness import ZephyrTestCase, http_request, scaled, stats_header, wait_for
from tlsfront import TestPKI, TlsRelay


def maps_of(pid):
    with open("/proc/%d/maps" % pid) as f:
        return f.read()


def metric(p, name, labels):
    text = http_request(p.port, "GET", "/metrics").body.decode()
    m = re.search(r"^%s\{%s\} (\d+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    return int(m.group(1)) if m else None


class TlsMixin:
    """Every fake gets a TLS front; every proxy trusts the test CA."""
    tls_host = "127.0.0.1"

    def start_fake(self, name="fake", **knobs):
        f = super().start_fake(name, **knobs)
        relay = TlsRelay(f.port)
        self.addCleanup(relay.stop)
        f.relay = relay
        f.url = "https://%s:%d" % (self.tls_host, relay.port)
        return f

    def start_proxy(self, groups=None, server=None, health_check=None, env=None, **kw):
        env = dict(env or {})
        env.setdefault("SSL_CERT_FILE", TestPKI.get().ca)
        return super().start_proxy(groups, server=server, health_check=health_check, env=env, **kw)


class TlsCoreForwarding(TlsMixin, test_proxy.CoreForwarding):
    pass


class TlsHeaders(TlsMixin, test_proxy.Headers):

    def test_upstream_sees_endpoint_host(self):
        # Host is the endpoint's authority: here the TLS front's port.
        fake = self.start_fake()
        p = self.proxy_for(fake, server={"allowed_hosts": ["api.anthropic.com"]})
        r, st = self.captured(fake, lambda m: self.post_messages(
            p.port, headers=[("Host", "api.anthropic.com")] + m))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(stats_header(st, "host"), ["127.0.0.1:%d" % fake.relay.port])


class TlsSlowAndGone(TlsMixin, test_proxy.SlowAndGone):
    pass


class TlsFailoverBeforeFirstByte(TlsMixin, test_faults.FailoverBeforeFirstByte):
    pass


class TlsAfterFirstByte(TlsMixin, test_faults.AfterFirstByte):
    pass


class TlsBehaviour(ZephyrTestCase):

    def tls_proxy(self, kind="good", host="127.0.0.1", trust=True, **kw):
        fake = self.start_fake()
        relay = TlsRelay(fake.port, kind)
        self.addCleanup(relay.stop)
        env = {"SSL_CERT_FILE": TestPKI.get().ca} if trust else {}
        env.update(kw.pop("env", {}))
        p = self.proxy_for(fake, url="https://%s:%d" % (host, relay.port), env=env, **kw)
        return fake, relay, p

    def test_requests_over_tls_reuse_one_handshake_per_connection(self):
        fake, relay, p = self.tls_proxy()
        for _ in range(10):
            r = self.post_messages(p.port)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["type"], "message")
        c = relay.counts()
        # The start-up check and the requests: a connection each at most,
        # then kept alive; never a handshake per request.
        self.assertGreaterEqual(c["handshakes"], 1)
        self.assertLessEqual(c["handshakes"], 3, c)
        full = metric(p, "zephyr_upstream_tls_handshakes_total", 'resumed="false"')
        resumed = metric(p, "zephyr_upstream_tls_handshakes_total", 'resumed="true"')
        self.assertEqual(full + resumed, c["handshakes"], (full, resumed, c))
        self.assertNotIn("libcurl", maps_of(p.pid))

    def test_session_resumed_after_the_origin_closes(self):
        fake, relay, p = self.tls_proxy()
        self.assertEqual(self.post_messages(p.port).status, 200)
        before = relay.counts()
        relay.drop_all()
        wait_for(lambda: relay.open_count() == 0, scaled(5), desc="relay connections closed")
        r = self.post_messages(p.port)
        self.assertEqual(r.status, 200, r)
        after = relay.counts()
        self.assertGreater(after["handshakes"], before["handshakes"])
        self.assertGreater(after["resumed"], before["resumed"], after)
        self.assertGreaterEqual(metric(p, "zephyr_upstream_tls_handshakes_total", 'resumed="true"'), 1)

    def assert_tls_502(self, r, *words):
        self.assertAnthropicError(r, 502)
        msg = json.loads(r.body)["error"]["message"]
        self.assertIn("TLS", msg)
        self.assertIn("a:", msg)  # the endpoint's name
        for w in words:
            self.assertIn(w, msg)
        return msg

    def test_wrong_host_is_502_naming_the_tls_problem(self):
        fake, relay, p = self.tls_proxy("wronghost", host="localhost", settle=False)
        self.assert_tls_502(self.post_messages(p.port), "hostname mismatch")
        self.assertEqual(fake.stats()["messages"], 0)

    def test_expired_certificate_is_502(self):
        fake, relay, p = self.tls_proxy("expired", settle=False)
        self.assert_tls_502(self.post_messages(p.port), "certificate has expired")

    def test_unknown_ca_is_502(self):
        fake, relay, p = self.tls_proxy("unknown", settle=False)
        self.assert_tls_502(self.post_messages(p.port), "certificate verify failed")

    def test_system_store_does_not_trust_the_test_ca(self):
        fake, relay, p = self.tls_proxy(trust=False, settle=False)
        self.assert_tls_502(self.post_messages(p.port), "unable to get local issuer certificate")
        self.assertEqual(fake.stats()["messages"], 0)

    def test_sni_and_name_check_for_a_host_name(self):
        fake, relay, p = self.tls_proxy(host="localhost")
        self.assertEqual(self.post_messages(p.port).status, 200)
        self.assertIn("localhost", relay.sni)
        self.assertEqual(set(relay.sni), {"localhost"})

    def test_no_sni_for_an_ip_literal(self):
        fake, relay, p = self.tls_proxy(host="127.0.0.1")
        self.assertEqual(self.post_messages(p.port).status, 200)
        self.assertTrue(relay.sni)
        self.assertEqual(set(relay.sni), {None})

    def test_https_proxy_variable_sends_https_through_libcurl(self):
        fake, relay, p = self.tls_proxy(env={"https_proxy": "http://127.0.0.1:9", "no_proxy": ""},
                                        settle=False)
        self.post_messages(p.port)  # fails: nothing listens on the proxy's port
        self.assertIn("libcurl", maps_of(p.pid))

    def test_warm_connection_reopened_after_the_origin_closes(self):
        # After a user's request the pool keeps a verified connection ready:
        # when the origin closes it, the client opens (and handshakes) a new
        # one by itself, so the next request pays no handshake.
        fake, relay, p = self.tls_proxy(health_check={"interval_seconds": 3600})
        self.assertEqual(self.post_messages(p.port).status, 200)
        relay.drop_all()
        wait_for(lambda: relay.open_count() == 0, scaled(5), desc="relay connections closed")
        before = relay.counts()["handshakes"]
        # The sweep runs every 5 s.
        wait_for(lambda: relay.open_count() == 1 and relay.counts()["handshakes"] > before,
                 scaled(15), desc="a warm connection opened without a request")
        warmed = relay.counts()
        self.assertGreater(warmed["resumed"], 0, "the warm-up resumes the session")
        r = self.post_messages(p.port)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(relay.counts()["handshakes"], warmed["handshakes"],
                         "the request after the pause paid a handshake")

    def test_streaming_over_tls(self):
        fake, relay, p = self.tls_proxy()
        s = self.stream(p.port)
        s.read_all()
        names = s.names()
        self.assertEqual(s.end, "complete", names)
        self.assertEqual(names[0], "message_start")
        self.assertEqual(names[-1], "message_stop")


if __name__ == "__main__":
    unittest.main()
