"""A hostile HTTP/2 upstream against the built-in client (review of the h2
work): each test scripts an h2front.py origin that misbehaves and checks the
proxy neither crashes, leaks, grows without bound nor leaves a client
hanging.  Everything is bounded in bytes and time."""
import json
import threading
import time
import unittest

from harness import ZephyrTestCase, build_request, messages_body, scaled, wait_for
from tlsfront import TestPKI

try:
    from h2front import H2Origin
    from hyperframe.frame import PingFrame
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


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@need_h2
class H2Hostile(ZephyrTestCase):

    def scripted(self, script):
        """An origin whose streams go to script(conn, sid, mode) (mode: the
        x-test-mode header); a false result gets a normal answer."""
        def handler(conn, sid, st):
            mode = dict(st["headers"]).get("x-test-mode")
            if not script(conn, sid, mode):
                reply(conn, sid)
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
        self.assertLess(peak[0] - before, 24 * 1024, "RSS grew %d KB" % (peak[0] - before))
        t.join(scaled(30))
        self.assertEqual(self.post(p).status, 200)


if __name__ == "__main__":
    unittest.main()
