"""HTTP/2 to https endpoints that offer it (issue 15): the built-in client
negotiates h2 by ALPN and runs many exchanges as streams of one connection.

The origin is tests/integration/h2front.py (python3-h2): a TLS HTTP/2
server relaying each stream to the fake upstream, or a scripted one for the
hostile cases.  H2Mixin reruns representative suites of test_proxy and
test_faults over it, as test_https.py does over TLS with HTTP/1.1.

Only subclasses of the imported suites are defined here; the base classes
are imported as modules so unittest does not run them twice."""
import json
import re
import threading
import time
import unittest

import test_faults
import test_proxy
from harness import ZephyrTestCase, http_request, scaled, wait_for
from tlsfront import TestPKI

try:
    from h2front import H2Origin
    import h2.errors
    HAVE_H2 = True
except ImportError:  # pragma: no cover - run.sh installs python3-h2
    HAVE_H2 = False

need_h2 = unittest.skipUnless(HAVE_H2, "python3-h2 is not installed (run.sh test installs it)")


def metric(p, name, labels=""):
    text = http_request(p.port, "GET", "/metrics").body.decode()
    pat = r"^%s%s (\d+)$" % (re.escape(name), r"\{%s\}" % re.escape(labels) if labels else "")
    m = re.search(pat, text, re.M)
    return int(m.group(1)) if m else None


def handshakes(p):
    return (metric(p, "zephyr_upstream_tls_handshakes_total", 'resumed="false"') +
            metric(p, "zephyr_upstream_tls_handshakes_total", 'resumed="true"'))


class H2Mixin:
    """Every fake gets an HTTP/2 TLS origin in front; every proxy trusts the
    test CA."""

    def start_fake(self, name="fake", **knobs):
        f = super().start_fake(name, **knobs)
        origin = H2Origin(f.port)
        self.addCleanup(origin.stop)
        f.relay = origin
        f.url = origin.url
        return f

    def start_proxy(self, groups=None, server=None, health_check=None, env=None, **kw):
        env = dict(env or {})
        env.setdefault("SSL_CERT_FILE", TestPKI.get().ca)
        return super().start_proxy(groups, server=server, health_check=health_check, env=env, **kw)


@need_h2
class H2CoreForwarding(H2Mixin, test_proxy.CoreForwarding):
    pass


@need_h2
class H2FailoverBeforeFirstByte(H2Mixin, test_faults.FailoverBeforeFirstByte):
    pass


@need_h2
class H2AfterFirstByte(H2Mixin, test_faults.AfterFirstByte):
    pass


@need_h2
class H2Behaviour(ZephyrTestCase):

    def origin(self, handler=None, fake=True, **kw):
        f = self.start_fake() if fake else None
        o = H2Origin(f.port if f else None, handler=handler, **kw)
        self.addCleanup(o.stop)
        return f, o

    def proxy(self, o, server=None, **kw):
        env = {"SSL_CERT_FILE": TestPKI.get().ca}
        g = {"name": "main", "endpoints": [("a", o.url)]}
        return self.start_proxy([g], server=server, env=env, **kw)

    def test_h2_negotiated_and_many_requests_share_one_handshake(self):
        f, o = self.origin()
        p = self.proxy(o)
        self.assertEqual(self.post_messages(p.port).status, 200)
        before = handshakes(p)
        results = []

        def one():
            results.append(self.post_messages(p.port).status)
        ts = [threading.Thread(target=one) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(scaled(30))
        self.assertEqual(results, [200] * 8)
        c = o.counts()
        self.assertEqual(c["h1"], 0, c)
        self.assertGreaterEqual(c["h2"], 1, c)
        # The 8 concurrent requests ran as streams of the connection the
        # first one opened: no handshake of their own.
        self.assertEqual(handshakes(p), before, c)
        self.assertEqual(c["handshakes"], handshakes(p), c)
        self.assertGreaterEqual(c["max_in_flight"], 2, c)
        self.assertGreaterEqual(metric(p, "zephyr_upstream_h2_connections"), 1)


if __name__ == "__main__":
    unittest.main()
