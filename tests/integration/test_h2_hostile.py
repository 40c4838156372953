"""A hostile HTTP/2 upstream against the built-in client (review of the h2
work): each test scripts an h2front.py origin that misbehaves and checks the
proxy neither crashes, leaks, grows without bound nor leaves a client
hanging.  Everything is bounded in bytes and time."""
import json
import threading
import time
import unittest

from harness import ASAN, ZephyrTestCase, rss_kb, build_request, messages_body, scaled, wait_for
from tlsfront import TestPKI

try:
    from h2front import H2Origin
    from hyperframe.frame import PingFrame
    import h2.exceptions
    HAVE_H2 = True
except ImportError:  # pragma: no cover - run.sh installs python3-h2
    HAVE_H2 = False

need_h2 = unittest.skipUnless(HAVE_H2, "python3-h2 is not installed (run.sh test installs it)")

MESSAGE = {"id": "msg_h2", "type": "message", "role": "assistant", "model": "claude-zt-test",
           "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
           "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}


def reply(conn, sid):
    body = json.dumps(MESSAGE).encode()
    if conn.send_headers(sid, 200, [("content-type", "application/json"),
                                    ("content-length", str(len(body)))]):
        conn.send_data(sid, body, end=True)


@need_h2
class H2Hostile(ZephyrTestCase):

    def setUp(self):
        super().setUp()
        self.script_errors = []

    def scripted(self, script):
        """An origin whose streams go to script(conn, sid, mode) (mode: the
        x-test-mode header); a false result gets a normal answer."""
        def handler(conn, sid, st):
            mode = dict(st["headers"]).get("x-test-mode")
            try:
                if not script(conn, sid, mode):
                    reply(conn, sid)
            except (h2.exceptions.ProtocolError, OSError) as e:
                self.script_errors.append((mode, repr(e)))  # the proxy may have closed it
        o = H2Origin(None, handler=handler)
        self.addCleanup(o.stop)
        return o

    def proxy(self, o, server=None):
        env = {"SSL_CERT_FILE": TestPKI.get().ca}
        g = {"name": "main", "endpoints": [("a", o.url)]}
        return self.start_proxy([g], server=server, env=env)

    def post(self, p, mode=None, **kw):
        hdrs = [("x-test-mode", mode)] if mode else []
        try:
            return self.post_messages(p.port, headers=hdrs, **kw)
        except (EOFError, OSError):
            return None

    def test_stream_ended_while_paused_then_connection_lost(self):
        """The server ends a paused stream (END_STREAM needs no window) and
        closes the connection: the exchange must still end (once), with no
        use of the freed stream when the client drains or goes away."""
        chunk = b"event: ping\ndata: " + b"x" * 16000 + b"\n\n"
        state = {}

        def script(conn, sid, mode):
            if mode != "big":
                return False
            conn.send_headers(sid, 200, [("content-type", "text/event-stream")])
            for _ in range(2000):  # ~32 MB at most: far more than window and sockets
                if not conn.send_data(sid, chunk, timeout=scaled(3)):
                    break
            # The window stayed shut: the proxy keeps what it has (paused).
            with conn.lock:
                conn.h2.end_stream(sid)
                conn.flush()
            state["ended"] = True
            try:
                conn.tls.shutdown(2)
            except OSError:
                pass
            return True
        o = self.scripted(script)
        p = self.proxy(o)
        r0 = self.post(p)
        self.assertEqual(r0.status, 200, (r0.body, p.stderr_text()[-3000:]))
        c = self.raw(p.port, rcvbuf=16384, timeout=scaled(20))
        c.send(build_request("POST", "/v1/messages",
                             [("content-type", "application/json"), ("x-test-mode", "big"),
                              ("anthropic-version", "2023-06-01")],
                             messages_body(stream=True)))
        wait_for(lambda: state.get("ended"), scaled(60), desc="the origin ended the paused stream")
        time.sleep(0.5)  # the proxy sees the END_STREAM and EOF (no condition to wait on)
        # The client now drains: the exchange must come to an end.
        resp = c.read_head()
        self.assertEqual(resp.status, 200)
        try:
            for _ in c.body_pieces(resp, "POST"):
                pass
        except EOFError:
            pass  # cut off: the kept bytes are lost with the connection
        self.assertTrue(p.running(), p.stderr_text()[-2000:])
        self.assertEqual(self.post(p).status, 200)

    def test_ping_flood_from_a_server_that_does_not_read(self):
        """PINGs, each answered by an ACK, from a server that never reads:
        the proxy must not queue the answers without bound."""
        ping = PingFrame(0)
        ping.opaque_data = b"zephyr!!"
        # 960 PINGs then 80 KB of frames of an unknown type (ignored): no
        # read of the proxy (64 KB) holds more than ~1000 PINGs, nghttp2's
        # own bound on unsent ACKs.
        unknown = (16384).to_bytes(3, "big") + bytes([0xfa, 0, 0, 0, 0, 0]) + b"\0" * 16384
        blob = ping.serialize() * 960 + unknown * 5
        limit = 120 * 1024 * 1024
        res = {}

        def script(conn, sid, mode):
            if mode != "flood":
                return False
            sent = 0
            with conn.lock:  # the reader thread stops at the lock: nothing is read
                try:
                    while sent < limit:
                        conn.tls.sendall(blob)
                        sent += len(blob)
                except OSError as e:
                    res["error"] = repr(e)
            res["sent"] = sent
            return True
        o = self.scripted(script)
        p = self.proxy(o, server={"max_attempts": 1})
        self.assertEqual(self.post(p).status, 200)
        before = rss_kb(p.pid)
        peak = [before]
        t = threading.Thread(target=lambda: res.setdefault("r", self.post(p, "flood", timeout=scaled(60))),
                             daemon=True)
        t.start()

        def done():
            peak[0] = max(peak[0], rss_kb(p.pid))
            return "sent" in res
        wait_for(done, scaled(120), desc="the flood over")
        peak[0] = max(peak[0], rss_kb(p.pid))
        self.assertTrue(p.running())
        self.assertLess(res["sent"], limit, "the proxy read %d bytes of PINGs from a server that "
                        "reads none of its answers" % res["sent"])
        if not ASAN:  # its quarantine keeps freed blocks resident
            self.assertLess(peak[0] - before, 24 * 1024, "RSS grew %d KB" % (peak[0] - before))
        t.join(scaled(30))
        self.assertEqual(self.post(p).status, 200)


    # -- malformed or hostile responses: each ends its exchange, bounded --

    def run_modes(self, script, cases, server=None):
        """cases: mode -> a check of the response (None: cut off)."""
        o = self.scripted(script)
        p = self.proxy(o, server=dict({"max_attempts": 1}, **(server or {})))
        self.assertEqual(self.post(p).status, 200)
        for mode, check in cases.items():
            t0 = time.monotonic()
            r = self.post(p, mode, timeout=scaled(30))
            self.assertLess(time.monotonic() - t0, scaled(25), mode)
            check(mode, r)
            self.assertTrue(p.running(), p.stderr_text()[-2000:])
            r2 = self.post(p)
            self.assertEqual(r2.status, 200, (mode, r2.body, p.stderr_text()[-600:], self.script_errors))
        return o, p

    def not_ok(self, mode, r):
        self.assertTrue(r is None or r.status >= 500, (mode, r and r.status, r and r.body))

    def test_malformed_response_heads(self):
        def script(conn, sid, mode):
            h = conn.h2
            body = json.dumps(MESSAGE).encode()
            with conn.lock:
                if mode == "nostatus":
                    h.send_headers(sid, [("content-type", "application/json")], end_stream=True)
                elif mode == "alphastatus":
                    h.send_headers(sid, [(":status", "2x0")], end_stream=True)
                elif mode == "twostatus":
                    h.send_headers(sid, [(":status", "200"), (":status", "500")], end_stream=True)
                elif mode == "longstatus":
                    h.send_headers(sid, [(":status", "2000")], end_stream=True)
                elif mode == "upper":
                    h.send_headers(sid, [(":status", "200"), ("X-Upper", "1")], end_stream=True)
                elif mode == "crlf":
                    h.send_headers(sid, [(":status", "200"), ("x-evil", "a\r\nx-injected: 1")],
                                   end_stream=True)
                elif mode == "status101":  # past the state machine, which refuses it
                    from hyperframe.frame import HeadersFrame
                    f = HeadersFrame(sid)
                    f.data = h.encoder.encode([(":status", "101")])
                    f.flags.add("END_HEADERS")
                    f.flags.add("END_STREAM")
                    conn.flush()
                    conn.tls.sendall(f.serialize())
                elif mode == "manyheaders":
                    h.send_headers(sid, [(":status", "200")] +
                                   [("x-h%d" % i, "v") for i in range(300)], end_stream=True)
                elif mode == "short":
                    h.send_headers(sid, [(":status", "200"), ("content-length", "500")])
                    h.send_data(sid, body, end_stream=True)
                elif mode == "1xxstorm":
                    for _ in range(2000):
                        h.send_headers(sid, [(":status", "103"), ("link", "</x>; rel=preload")])
                    conn.flush()
                    h.send_headers(sid, [(":status", "200"), ("content-type", "application/json")])
                    h.send_data(sid, body)
                    h.send_headers(sid, [("x-trailer", "t")], end_stream=True)  # trailers
                elif mode == "rst_after_end":
                    h.send_headers(sid, [(":status", "200"), ("content-type", "application/json")])
                    h.send_data(sid, body, end_stream=True)
                    conn.flush()
                    from hyperframe.frame import RstStreamFrame
                    f = RstStreamFrame(sid)
                    f.error_code = 2
                    conn.tls.sendall(f.serialize())
                else:
                    return False
                conn.stream_done(sid)
                conn.flush()
            return True

        def ok(mode, r):
            self.assertEqual(r.status, 200, (mode, r.body))
            self.assertEqual(r.json()["type"], "message", mode)
        cases = {m: self.not_ok for m in ("nostatus", "alphastatus", "twostatus", "longstatus",
                                          "upper", "crlf", "status101", "manyheaders", "short")}
        cases["1xxstorm"] = ok
        cases["rst_after_end"] = ok
        self.run_modes(script, cases)
        self.assertEqual(self.script_errors, [])  # each answer went out as scripted

    def test_connection_errors_and_goaway_loop(self):
        """Connection errors nghttp2 answers with GOAWAY and then reads no
        more (PUSH_PROMISE after our ENABLE_PUSH 0, a bad HPACK index, a
        window past 2^31-1) must end the streams on the connection at once,
        and a server that answers every stream with GOAWAY(last 0) gets one
        retry, not a loop."""
        from hyperframe.frame import PushPromiseFrame, GoAwayFrame
        seen = {}

        def script(conn, sid, mode):
            if mode == "push":
                f = PushPromiseFrame(sid)
                f.promised_stream_id = 2
                f.data = conn.h2.encoder.encode([(":method", "GET"), (":path", "/p"),
                                                 (":scheme", "https"), (":authority", "x")])
                f.flags.add("END_HEADERS")
                with conn.lock:
                    conn.tls.sendall(f.serialize())
                reply(conn, sid)
                return True
            if mode in ("badhpack", "winoverflow"):
                from hyperframe.frame import HeadersFrame, WindowUpdateFrame
                if mode == "badhpack":  # an index past both tables: COMPRESSION_ERROR
                    f = HeadersFrame(sid)
                    f.data = b"\xff\xff\xff\x7f"
                    f.flags.add("END_HEADERS")
                else:  # the connection's send window past 2^31-1: FLOW_CONTROL_ERROR
                    f = WindowUpdateFrame(0)
                    f.window_increment = 0x7fffffff
                with conn.lock:
                    conn.flush()
                    conn.tls.sendall(f.serialize())
                return True
            if mode == "goaway":
                seen["goaway"] = seen.get("goaway", 0) + 1
                g = GoAwayFrame(0)
                g.last_stream_id = 0
                with conn.lock:
                    conn.tls.sendall(g.serialize())
                return True
            return False
        self.run_modes(script, {"push": lambda m, r: None, "badhpack": self.not_ok,
                                "winoverflow": self.not_ok, "goaway": self.not_ok})
        # One retry for the refused stream at most, not a loop of connections.
        self.assertLessEqual(seen["goaway"], 2, seen)


if __name__ == "__main__":
    unittest.main()
