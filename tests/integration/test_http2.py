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

import test_clients
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
class H2RealClients(H2Mixin, test_clients.RealClients):
    """Claude Code and the SDK (retries off) through the proxy to an https
    endpoint that speaks HTTP/2, with the group's own key, as they meet the
    real API; the origin must have seen the requests over h2."""

    def start_fake(self, name="fake", **knobs):
        f = super().start_fake(name, **knobs)
        self.last_origin = f.relay
        return f

    def run_claude_code(self, access_key):
        super().run_claude_code(access_key)
        self.assertGreaterEqual(self.last_origin.counts()["h2"], 1, self.last_origin.counts())

    def run_sdk(self, access_key):
        super().run_sdk(access_key)
        self.assertGreaterEqual(self.last_origin.counts()["h2"], 1, self.last_origin.counts())


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


    def test_burst_waits_for_the_connection_being_set_up(self):
        # The pool knows the endpoint speaks h2; its connections are gone.
        f, o = self.origin()
        f.config(latency_ms=200)
        p = self.proxy(o)
        self.assertEqual(self.post_messages(p.port).status, 200)
        o.drop_all()
        wait_for(lambda: metric(p, "zephyr_upstream_h2_connections") == 0, scaled(10),
                 desc="the proxy's h2 connections closed")
        before = handshakes(p)
        results = []
        lock = threading.Lock()

        def one():
            r = self.post_messages(p.port, timeout=scaled(30))
            with lock:
                results.append(r.status)
        ts = [threading.Thread(target=one) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(scaled(40))
        self.assertEqual(results, [200] * 8)
        # One handshake for the burst: the others waited for its connection.
        self.assertEqual(handshakes(p) - before, 1, o.counts())

    # -- scripted (hostile) origins --

    def scripted(self, script, **kw):
        """An origin whose streams are answered by script(conn, sid, mode),
        mode being the request's x-test-mode header (None: a normal answer,
        as health checks get)."""
        def handler(conn, sid, st):
            mode = dict(st["headers"]).get("x-test-mode")
            if not script(conn, sid, mode):
                reply(conn, sid)
        f, o = self.origin(handler=handler, fake=False, **kw)
        return o

    def post(self, p, mode=None, **kw):
        """The response, or None when the proxy cut it off (after the head
        it cannot answer with an error any more)."""
        hdrs = [("x-test-mode", mode)] if mode else []
        try:
            return self.post_messages(p.port, headers=hdrs, **kw)
        except EOFError:
            return None

    def test_rst_stream_mid_response_fails_that_stream_only(self):
        hold = threading.Event()

        def script(conn, sid, mode):
            if mode == "slow":
                hold.wait(scaled(10))
                return False
            if mode == "rst":
                conn.send_headers(sid, 200, [("content-type", "application/json")])
                conn.send_data(sid, b'{"type":"mess')
                conn.reset(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
                hold.set()
                return True
            return False
        o = self.scripted(script)
        p = self.proxy(o, server={"max_attempts": 1})
        self.assertEqual(self.post(p).status, 200)
        conns = o.counts()["h2"]
        slow = []
        t = threading.Thread(target=lambda: slow.append(self.post(p, "slow")))
        t.start()
        wait_for(lambda: o.counts()["streams"] >= 3, scaled(5), desc="the slow stream open")
        r = self.post(p, "rst")
        t.join(scaled(15))
        self.assertTrue(r is None or r.status != 200, r)
        self.assertEqual(slow[0].status, 200, slow)
        self.assertEqual(slow[0].json()["type"], "message")
        # Both ran on the one connection; the reset ended only its stream.
        self.assertEqual(o.counts()["h2"], conns, o.counts())

    def test_goaway_below_an_in_flight_stream_is_retried_on_a_new_connection(self):
        first = {}
        late = []
        second_seen = threading.Event()
        done = threading.Event()

        def script(conn, sid, mode):
            if mode == "held" and not first:
                first["sid"] = sid
                second_seen.wait(scaled(10))
                reply(conn, sid)  # processed: it was at or below last_stream_id
                return True
            if mode == "late":
                late.append(conn)
            if mode == "late" and not done.is_set():
                done.set()
                # This stream is above last_stream_id: not processed.
                conn.goaway(first["sid"])
                second_seen.set()
                return True
            return False
        o = self.scripted(script)
        p = self.proxy(o, server={"max_attempts": 1})
        self.assertEqual(self.post(p).status, 200)
        conns = o.counts()["h2"]
        held = []
        t = threading.Thread(target=lambda: held.append(self.post(p, "held")))
        t.start()
        wait_for(lambda: "sid" in first, scaled(5), desc="the held stream open")
        r = self.post(p, "late")
        t.join(scaled(15))
        self.assertEqual(held[0].status, 200, held)
        # Sent again, once, on a new connection (max_attempts = 1: not the
        # proxy's failover), where it got the ordinary answer.
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["type"], "message")
        self.assertEqual(len(late), 2, late)
        # Not again on the connection that sent GOAWAY: on another one of the
        # pool or a new one.
        self.assertIsNot(late[0], late[1])
        self.assertGreaterEqual(o.counts()["h2"], conns, o.counts())

    def test_connection_specific_response_header_is_a_protocol_error(self):
        def script(conn, sid, mode):
            if mode == "connhdr":
                body = json.dumps(MESSAGE).encode()
                conn.send_headers(sid, 200, [("content-type", "application/json"),
                                             ("connection", "keep-alive"),
                                             ("content-length", str(len(body)))])
                conn.send_data(sid, body, end=True)
                return True
            return False
        o = self.scripted(script)
        p = self.proxy(o, server={"max_attempts": 1})
        self.assertEqual(self.post(p).status, 200)
        conns = o.counts()["h2"]
        r = self.post(p, "connhdr")
        self.assertEqual(r.status, 502, r)
        self.assertIn("PROTOCOL_ERROR", r.body.decode(), r)
        # The connection itself is fine: the next request runs on it.
        self.assertEqual(self.post(p).status, 200)
        self.assertEqual(o.counts()["h2"], conns, o.counts())

    def test_data_beyond_content_length_is_a_protocol_error(self):
        def script(conn, sid, mode):
            if mode == "long":
                body = json.dumps(MESSAGE).encode()
                conn.send_headers(sid, 200, [("content-type", "application/json"),
                                             ("content-length", str(len(body) - 5))])
                conn.send_data(sid, body, end=True)
                return True
            return False
        o = self.scripted(script)
        p = self.proxy(o, server={"max_attempts": 1})
        r = self.post(p, "long")
        self.assertTrue(r is None or r.status != 200, r)
        self.assertEqual(self.post(p).status, 200)

    def test_max_concurrent_streams_is_respected(self):
        f, o = self.origin(max_streams=2)
        f.config(latency_ms=300)
        p = self.proxy(o)
        self.assertEqual(self.post_messages(p.port).status, 200)
        results = []
        lock = threading.Lock()

        def one():
            r = self.post_messages(p.port, timeout=scaled(30))
            with lock:
                results.append(r.status)
        ts = [threading.Thread(target=one) for _ in range(10)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(scaled(40))
        self.assertEqual(sorted(results), [200] * 10)
        c = o.counts()
        self.assertLessEqual(c["max_in_flight"], 2, c)
        self.assertGreaterEqual(c["streams"], 11, c)

    def test_paused_stream_does_not_block_another_on_the_connection(self):
        chunk = b"event: content_block_delta\ndata: " + json.dumps(
            {"type": "content_block_delta", "index": 0,
             "delta": {"type": "text_delta", "text": "x" * 16000}}).encode() + b"\n\n"
        total = 600  # ~9.6 MB: more than the stream window and the sockets hold
        big = {}
        sent = {}

        def script(conn, sid, mode):
            if mode != "big":
                return False
            big["conn"] = conn
            conn.send_headers(sid, 200, [("content-type", "text/event-stream")])
            conn.send_data(sid, sse_start())
            big["sid"] = sid
            for i in range(total):
                if not conn.send_data(sid, chunk, timeout=scaled(120)):
                    return True
                sent["n"] = i + 1
            conn.send_data(sid, sse_stop(), end=True)
            return True
        o = self.scripted(script)
        p = self.proxy(o)
        self.assertEqual(self.post(p).status, 200)
        conns = o.counts()["h2"]
        # A client that does not read: its stream pauses at the proxy.
        c = self.raw(p.port, rcvbuf=16384, timeout=scaled(60))
        from harness import build_request, messages_body
        c.send(build_request("POST", "/v1/messages",
                             [("content-type", "application/json"), ("x-test-mode", "big"),
                              ("anthropic-version", "2023-06-01")],
                             messages_body(stream=True)))
        # The proxy stopped taking this stream once the sockets to its client
        # were full: the stream's window stays shut, the origin stops.
        def stalled():
            if not big.get("conn"):
                return False
            n = sent.get("n", 0)
            time.sleep(0.3)
            return (sent.get("n", 0) == n < total and big["conn"].window(big["sid"]) == 0)
        wait_for(stalled, scaled(20), desc="the origin held by the paused stream's window")
        t0 = time.monotonic()
        r = self.post(p)
        self.assertEqual(r.status, 200, r)
        self.assertLess(time.monotonic() - t0, scaled(5))
        self.assertEqual(o.counts()["h2"], conns, o.counts())
        self.assertLess(sent.get("n", 0), total, "the whole stream went out: nothing paused")
        self.assertEqual(big["conn"].window(big["sid"]), 0)
        # The paused stream then runs to its end.
        resp = c.read_head()
        self.assertEqual(resp.status, 200)
        n = sum(len(piece) for _, piece in c.body_pieces(resp, "POST"))
        self.assertGreater(n, total * len(chunk))
        self.assertEqual(resp.end, "complete")

    def test_sse_arrives_event_by_event(self):
        f, o = self.origin()
        f.config(events=4, gap_ms=300)
        p = self.proxy(o, server={"stream_holdback_ms": 0})
        self.assertEqual(self.post_messages(p.port).status, 200)
        conns = o.counts()["h2"]
        s = self.stream(p.port)
        s.read_all()
        self.assertEqual(s.end, "complete", s.names())
        deltas = [e.t for e in s.events_seen if e.event == "content_block_delta"]
        self.assertGreaterEqual(len(deltas), 4, s.names())
        # Spread over the gaps, not delivered at once at the end.
        self.assertGreater(deltas[-1] - deltas[0], 0.6, deltas)
        self.assertEqual(o.counts()["h2"], conns)

    def test_http2_false_offers_http1_only(self):
        f, o = self.origin()
        p = self.proxy(o, server={"http2": False}, settle=False)
        wait_for(lambda: o.counts()["handshakes"] >= 1, scaled(10), desc="a handshake")
        c = o.counts()
        self.assertEqual(c["h2"], 0, c)
        self.assertGreaterEqual(c["h1"], 1, c)


MESSAGE = {"id": "msg_h2", "type": "message", "role": "assistant", "model": "claude-zt-test",
           "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
           "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}


def reply(conn, sid):
    body = json.dumps(MESSAGE).encode()
    if conn.send_headers(sid, 200, [("content-type", "application/json"),
                                    ("content-length", str(len(body)))]):
        conn.send_data(sid, body, end=True)


def sse_start():
    m = dict(MESSAGE, content=[], stop_reason=None)
    return (b"event: message_start\ndata: " + json.dumps({"type": "message_start", "message": m}).encode() +
            b"\n\nevent: content_block_start\ndata: " +
            json.dumps({"type": "content_block_start", "index": 0,
                        "content_block": {"type": "text", "text": ""}}).encode() + b"\n\n")


def sse_stop():
    return (b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
            b"event: message_delta\ndata: " +
            json.dumps({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                        "usage": {"output_tokens": 1}}).encode() +
            b"\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")

if __name__ == "__main__":
    unittest.main()
