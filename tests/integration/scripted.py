"""
Scripted upstreams: small servers in the test process that send what a test
chooses, where the C fake upstream has no such mode (exact bytes, broken
framing, paced reads, TLS, error bodies as a relay sends them).

Two bases, both on 127.0.0.1 with an ephemeral port (`port`, `url`), both
stopped by close():

  ScriptedServer      raw sockets: one thread per connection runs
                      handle(conn); recv_request() reads one HTTP/1.1
                      request (head and Content-Length or chunked body).
                      For exact bytes and faults.
  ScriptedHTTPServer  http.server with a ScriptedHandler subclass (each
                      server gets its own copy of the class, so a test may
                      change class attributes such as protocol_version).
                      For well-formed answers with scripted content.

Every wait is bounded or ends when the server stops; only the Python 3
standard library is used.
"""

import http.server
import json
import select
import socket
import ssl
import threading
import time


def sse_events(model, start_usage, output_tokens, text="hi"):
    """The events of a short streamed Messages reply (message_start with
    start_usage, one text delta, message_delta with output_tokens), each as
    the bytes `event: NAME\ndata: JSON\n\n`."""
    ev = [("message_start", {"type": "message_start", "message": {
        "id": "msg_zt", "type": "message", "role": "assistant", "model": model,
        "content": [], "usage": start_usage}}),
          ("content_block_start", {"type": "content_block_start", "index": 0,
                                   "content_block": {"type": "text", "text": ""}}),
          ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                   "delta": {"type": "text_delta", "text": text}}),
          ("content_block_stop", {"type": "content_block_stop", "index": 0}),
          ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                             "usage": {"output_tokens": output_tokens}}),
          ("message_stop", {"type": "message_stop"})]
    return [("event: %s\ndata: %s\n\n" % (n, json.dumps(d))).encode() for n, d in ev]


class Request:
    """One request as the server read it: method, path, headers (a list of
    (lowercase name, value) in order), h (the same as a dict, last wins) and
    body (the raw bytes; for chunked, the chunked encoding as received)."""

    def __init__(self, method, path, headers, body):
        self.method = method
        self.path = path
        self.headers = headers
        self.h = dict(headers)
        self.body = body


class ScriptedServer:
    """A raw TCP server, one daemon thread per connection running
    handle(conn); the connection is closed after it, and OSError (the peer
    went away) ends it quietly.  close() stops accepting, tells the
    connection threads (stop_ev) and joins them."""

    # Timeout of accepted sockets (sends, and reads a subclass does itself).
    conn_timeout = 10.0
    poll = 0.05

    def __init__(self, backlog=64, rcvbuf=None, nodelay=False):
        self.stop_ev = threading.Event()
        self.threads = []
        self.nodelay = nodelay
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:
            # set on the listener, so accepted sockets start with it
            self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(backlog)
        self.lsock.settimeout(self.poll)
        self.port = self.lsock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self._spawn(self._accept_loop)

    def handle(self, conn):
        raise NotImplementedError

    def close(self):
        self.stop_ev.set()
        try:
            self.lsock.close()
        except OSError:
            pass
        for t in list(self.threads):
            t.join(3)

    def _spawn(self, target, *args):
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept_loop(self):
        while not self.stop_ev.is_set():
            try:
                s, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self.nodelay:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._spawn(self._serve, s)

    def _serve(self, conn):
        conn.settimeout(self.conn_timeout)
        try:
            self.handle(conn)
        except OSError:
            pass    # the peer hung up: not what these servers assert on
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def recv_some(self, conn, limit):
        """One recv of up to 64 KiB.  Waits in poll steps so that close() is
        noticed (then b""); b"" on EOF; socket.timeout after limit seconds
        without a byte (None: no limit)."""
        deadline = None if limit is None else time.monotonic() + limit
        while not self.stop_ev.is_set():
            if select.select([conn], [], [], self.poll)[0]:
                return conn.recv(65536)
            if deadline is not None and time.monotonic() >= deadline:
                raise socket.timeout("nothing received within %.1fs" % limit)
        return b""

    def recv_request(self, conn, buf=b"", idle=None, body=True):
        """Reads one request; buf holds bytes already read.  idle bounds the
        wait for the head (None: until the peer closes or the server stops);
        each wait for body bytes is bounded by conn_timeout.  Returns
        (Request, bytes read past it), or (None, b"") when the peer closed
        first.  With body=False only the head is read (the body is left in
        the returned bytes, for a subclass that reads it at its own pace)."""
        while b"\r\n\r\n" not in buf:
            d = self.recv_some(conn, idle)
            if not d:
                return None, b""
            buf += d
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        headers = []
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers.append((k.strip().lower(), v.strip()))
        req = Request(parts[0], parts[1] if len(parts) > 1 else "", headers, b"")
        if not body:
            return req, buf
        if "content-length" in req.h:
            n = int(req.h["content-length"])
            while len(buf) < n:
                d = self.recv_some(conn, self.conn_timeout)
                if not d:
                    return None, b""
                buf += d
            req.body, buf = buf[:n], buf[n:]
        elif "chunked" in req.h.get("transfer-encoding", "").lower():
            while not buf.endswith(b"0\r\n\r\n"):
                d = self.recv_some(conn, self.conn_timeout)
                if not d:
                    return None, b""
                buf += d
            req.body, buf = buf, b""
        return req, buf


class ScriptedHandler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1, quiet; self.owner is the ScriptedHTTPServer."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    @property
    def owner(self):
        return self.server.owner

    def read_body(self):
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def answer(self, status, body, headers=(), ctype="application/json"):
        """A complete answer: content-type, content-length, then headers
        (name, value) in the given order."""
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


class ScriptedHTTPServer:
    """A threading http.server on 127.0.0.1 serving handler (a subclass of
    ScriptedHandler), optionally over TLS (tls = (certfile, keyfile))."""

    def __init__(self, handler, tls=None):
        handler = type(handler.__name__, (handler,), {})   # this server's own copy
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.owner = self
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            self.url = "https://127.0.0.1:%d" % self.port
        # shutdown() waits for serve_forever to look at its flag, which it
        # does every poll_interval (0.5 s by default, in every cleanup).
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
