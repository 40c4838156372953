"""An HTTP/2 TLS origin for the tests (python3-h2), in front of the fake
upstream or scripted.

H2Origin listens with TLS on 127.0.0.1 (the test PKI's "good" certificate,
ALPN "h2" and "http/1.1"; with alpn=["http/1.1"] it refuses HTTP/2) and
speaks HTTP/2 to each client connection.  Each request stream either goes
to a handler (a scripted, possibly hostile answer) or, by default, is relayed
as an HTTP/1.1 request to target_port (the fake upstream), one plain
connection per stream, the answer streamed back as it arrives: headers as
HEADERS, body chunks as DATA (waiting for the client's flow-control window),
the end as END_STREAM; a fake that closes or resets before or during its
answer becomes RST_STREAM(INTERNAL_ERROR) on that stream only, so the
fake's faults reach the proxy per stream.

It counts handshakes, connections, streams and the most streams in flight
at once on one connection.  Everything is bounded: sockets have timeouts,
threads are daemons stopped by stop().
"""

import http.client
import select
import socket
import ssl
import sys
import threading

try:
    import h2  # noqa: F401
except ImportError:
    # Debian's python3-h2 is pure Python: an interpreter of the same
    # version not installed by Debian (pyenv) can use it as well.
    sys.path.append("/usr/lib/python3/dist-packages")
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.errors  # noqa: E402
import h2.events  # noqa: E402
import h2.exceptions  # noqa: E402
import h2.settings  # noqa: E402

from tlsfront import TestPKI  # noqa: E402

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"}


class H2Conn:
    """One client connection: the h2 state machine under a lock."""

    def __init__(self, origin, tls):
        self.origin = origin
        self.tls = tls
        self.lock = threading.Condition()
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8",
                                        validate_outbound_headers=False,
                                        normalize_outbound_headers=False,
                                        validate_inbound_headers=False)
        self.h2 = h2.connection.H2Connection(config=cfg)
        self.streams = {}  # id -> {"headers": [...], "body": bytearray}
        self.in_flight = 0
        self.window_waits = 0  # send_data found the stream's window shut
        self.closed = False

    def flush(self):
        data = self.h2.data_to_send()
        if data:
            try:
                self.tls.sendall(data)
            except OSError:
                self.closed = True

    def run(self):
        o = self.origin
        with self.lock:
            # The bound is in the first SETTINGS frame, as a server sends it.
            self.h2.local_settings = h2.settings.Settings(
                client=False,
                initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: o.max_streams})
            self.h2.initiate_connection()
            self.flush()
        while not self.closed and not o.stopping:
            # One SSL object must never be read and written at once (OpenSSL
            # does not allow it; the handler threads write under the lock):
            # wait for bytes outside the lock, read them under it.
            if not self.tls.pending():
                try:
                    ready, _, _ = select.select([self.tls], [], [], 0.2)
                except (OSError, ValueError):
                    break
                if not ready:
                    continue
            with self.lock:
                try:
                    data = self.tls.recv(65536)
                except socket.timeout:
                    continue
                except (OSError, ssl.SSLError):
                    break
                if not data:
                    break
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError:
                    self.flush()
                    break
                for ev in events:
                    self.on_event(ev)
                self.flush()
                self.lock.notify_all()
        with self.lock:
            self.closed = True
            self.lock.notify_all()

    def on_event(self, ev):
        o = self.origin
        if isinstance(ev, h2.events.RequestReceived):
            self.streams[ev.stream_id] = {"headers": ev.headers, "body": bytearray()}
            self.in_flight += 1
            with o.lock:
                o.streams += 1
                o.max_in_flight = max(o.max_in_flight, self.in_flight)
        elif isinstance(ev, h2.events.DataReceived):
            st = self.streams.get(ev.stream_id)
            if st is not None:
                st["body"] += ev.data
            self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            st = self.streams.get(ev.stream_id)
            if st is not None:
                threading.Thread(target=self.serve_stream, args=(ev.stream_id, st), daemon=True).start()
        elif isinstance(ev, h2.events.StreamReset):
            st = self.streams.pop(ev.stream_id, None)
            if st is not None:
                self.in_flight -= 1
                up = st.get("up")
                if up is not None and up.sock is not None:
                    try:  # the relayed request ends with its stream
                        up.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            with o.lock:
                o.resets_received += 1

    def stream_done(self, sid):
        if self.streams.pop(sid, None) is not None:
            self.in_flight -= 1

    # -- helpers for handlers (each takes the lock) --

    def send_headers(self, sid, status, headers=(), end=False):
        with self.lock:
            if sid not in self.streams or self.closed:
                return False
            self.h2.send_headers(sid, [(":status", str(status))] + list(headers), end_stream=end)
            if end:
                self.stream_done(sid)
            self.flush()
            return True

    def send_data(self, sid, data, end=False, timeout=30):
        """Waits for the window; False when the stream or connection ended."""
        data = bytes(data)
        while True:
            with self.lock:
                if sid not in self.streams or self.closed:
                    return False
                if not data:
                    self.h2.end_stream(sid) if end else None
                    if end:
                        self.stream_done(sid)
                    self.flush()
                    return True
                try:
                    win = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
                except h2.exceptions.StreamClosedError:
                    return False
                if win <= 0:
                    self.window_waits += 1
                    if not self.lock.wait(timeout):
                        return False
                    continue
                chunk, data = data[:win], data[win:]
                self.h2.send_data(sid, chunk, end_stream=end and not data)
                if end and not data:
                    self.stream_done(sid)
                self.flush()
                if not data:
                    return True

    def reset(self, sid, code=h2.errors.ErrorCodes.INTERNAL_ERROR):
        with self.lock:
            if sid in self.streams and not self.closed:
                self.h2.reset_stream(sid, code)
                self.stream_done(sid)
                self.flush()

    def goaway(self, last_stream_id):
        """GOAWAY written past the state machine, which would refuse to
        finish the streams at or below last_stream_id afterwards."""
        from hyperframe.frame import GoAwayFrame
        f = GoAwayFrame(stream_id=0)
        f.last_stream_id = last_stream_id
        f.error_code = 0
        with self.lock:
            self.flush()
            self.tls.sendall(f.serialize())

    def window(self, sid):
        with self.lock:
            try:
                return self.h2.local_flow_control_window(sid)
            except Exception:  # noqa: BLE001
                return None

    # -- the default: relay to the fake --

    def serve_stream(self, sid, st):
        o = self.origin
        if o.handler is not None:
            try:
                o.handler(self, sid, st)
            except Exception:  # noqa: BLE001 - a broken script resets its stream
                self.reset(sid)
            return
        hdrs = dict((k, v) for k, v in st["headers"])
        method, path, auth = hdrs.get(":method"), hdrs.get(":path"), hdrs.get(":authority")
        up = http.client.HTTPConnection("127.0.0.1", o.target_port, timeout=30)
        try:
            up.connect()
            with self.lock:
                if sid not in self.streams:
                    return
                st["up"] = up
            fwd = {k: v for k, v in st["headers"] if not k.startswith(":")}
            fwd["host"] = auth
            body = bytes(st["body"])
            up.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for k, v in fwd.items():
                if k != "content-length":
                    up.putheader(k, v)
            if body or method in ("POST", "PUT", "PATCH"):
                up.putheader("content-length", str(len(body)))
            up.endheaders(body)
            resp = up.getresponse()
            out = [(k.lower(), v) for k, v in resp.getheaders() if k.lower() not in _HOP]
            if not self.send_headers(sid, resp.status, out, end=method == "HEAD"):
                return
            if method == "HEAD":
                return
            while True:
                chunk = resp.read1(65536)
                if not chunk:
                    break
                if not self.send_data(sid, chunk):
                    return
            self.send_data(sid, b"", end=True)
        except (OSError, http.client.HTTPException):
            self.reset(sid)
        finally:
            up.close()


class H2Origin:
    def __init__(self, target_port=None, handler=None, max_streams=100, alpn=("h2", "http/1.1"),
                 pki=None):
        self.pki = pki or TestPKI.get()
        self.target_port = target_port
        self.handler = handler
        self.max_streams = max_streams
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(*self.pki.cert("good"))
        self.ctx.set_alpn_protocols(list(alpn))
        self.lock = threading.Lock()
        self.handshakes = self.resumed = self.h2_conns = self.h1_conns = 0
        self.streams = self.max_in_flight = self.resets_received = 0
        self.conns = []
        self.stopping = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.url = "https://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def counts(self):
        with self.lock:
            return {"handshakes": self.handshakes, "resumed": self.resumed, "h2": self.h2_conns,
                    "h1": self.h1_conns, "streams": self.streams,
                    "max_in_flight": self.max_in_flight, "resets": self.resets_received}

    def _accept_loop(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, raw):
        raw.settimeout(10)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            try:
                tls = self.ctx.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):
                return
            with self.lock:
                self.handshakes += 1
                if tls.session_reused:
                    self.resumed += 1
                if tls.selected_alpn_protocol() != "h2":
                    self.h1_conns += 1
                    return  # HTTP/1.1 is not served: the tests only want to see it chosen
                self.h2_conns += 1
            c = H2Conn(self, tls)
            with self.lock:
                self.conns.append(c)
            c.run()
        finally:
            try:
                raw.close()
            except OSError:
                pass

    def drop_all(self):
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.tls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        try:
            self.sock.close()
        except OSError:
            pass
        self.drop_all()
