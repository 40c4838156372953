"""Response framing through both upstream clients (issue 11).

Whatever an upstream sends, what the client receives must be one valid
HTTP/1.1 message whose framing matches its body, and nothing may follow it
on a keep-alive connection.  The upstream here is a scripted socket server
that sends the exact bytes a test chooses, split where the test says; the
client side reads with a strict HTTP/1.1 response parser (StrictReader) and
then either checks that the connection closed or sends another request on
it and parses that answer too, so that a forged second response, a short
body or a wrong Content-Length shows.

Every test runs once through the built-in client and once through libcurl
([server] http_client = "libcurl").  The differential test draws random
valid responses (header order and case, Content-Length, chunked or
close-delimited, sizes, split points); its seed is printed and can be
replayed with ZEPHYR_TEST_SEED.  ZEPHYR_FRAMING_CASES sets the count per
client (default 200).
"""
import os
import random
import re
import socket
import threading
import unittest

from harness import ZephyrTestCase, scaled
from scripted import ScriptedServer

HEALTH = {"method": "count_tokens", "interval_seconds": 300, "timeout_seconds": 5}
TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
READ_TIMEOUT = scaled(5)


class ScriptedUpstream(ScriptedServer):
    """Answers each request with the scripted bytes for its x-zt-case
    header (a list of pieces sent one by one, then the connection is kept or
    closed as the script says).  Health checks and unknown cases get a
    plain JSON 200.  Connections are kept alive between requests, as a real
    upstream would, so the upstream clients reuse them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.scripts = {}
        self.seen = []
        super().__init__(nodelay=True)

    def script(self, case, pieces, close):
        with self.lock:
            self.scripts[case] = (list(pieces), close)

    def handle(self, s):
        buf = b""
        while not self.stop_ev.is_set():
            req, buf = self.recv_request(s, buf)
            if req is None:
                return
            case = req.h.get("x-zt-case")
            with self.lock:
                self.seen.append(case)
                script = self.scripts.get(case)
            if script is None:
                body = b'{"input_tokens":1}'
                s.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                          b"content-length: %d\r\n\r\n%s" % (len(body), body))
                continue
            pieces, close = script
            for p in pieces:
                s.sendall(p)
            if close:
                return


class FramingError(AssertionError):
    pass


class StrictReader:
    """A client connection whose responses are parsed byte-exactly as
    HTTP/1.1 (RFC 9112): status line, header fields, then a body framed by
    Content-Length, chunked coding or the end of the connection, and
    nothing else."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT)
        self.buf = bytearray()
        self.eof = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        if self.eof:
            return False
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            raise FramingError("timed out after %.1fs waiting for bytes (have %r)"
                               % (READ_TIMEOUT, bytes(self.buf[:200])))
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                if b"\n" in line or b"\r" in line:
                    raise FramingError("bare CR or LF in %r" % line)
                return line
            if len(self.buf) > 70000:
                raise FramingError("line too long")
            if not self._fill():
                raise FramingError("connection closed inside a line (have %r)" % bytes(self.buf))

    def _exact(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise FramingError("connection closed after %d of %d body bytes" % (len(self.buf), n))
        d = bytes(self.buf[:n])
        del self.buf[:n]
        return d

    def read_response(self, method="POST"):
        """Returns (status, [(name, value)], body, closes); closes tells
        whether the message says the connection ends after it."""
        line = self._line()
        m = re.match(rb"^HTTP/1\.1 ([1-9][0-9][0-9]) ([\t !-~\x80-\xff]*)$", line)
        if not m:
            raise FramingError("bad status line %r" % line)
        status = int(m.group(1))
        headers = []
        while True:
            line = self._line()
            if line == b"":
                break
            name, colon, value = line.partition(b":")
            if not colon or not TOKEN_RE.match(name):
                raise FramingError("bad header line %r" % line)
            value = value.strip(b" \t")
            if any(c < 0x20 and c != 9 or c == 0x7f for c in value):
                raise FramingError("control byte in header %r" % line)
            headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))
        cl = [v for k, v in headers if k == "content-length"]
        te = [v for k, v in headers if k == "transfer-encoding"]
        conn = ",".join(v for k, v in headers if k == "connection").lower()
        closes = "close" in [t.strip() for t in conn.split(",")]
        if len(cl) > 1 or len(te) > 1 or (cl and te):
            raise FramingError("conflicting framing headers: %r" % headers)
        if te and te[0].lower() != "chunked":
            raise FramingError("transfer-encoding %r" % te)
        if cl and not re.match(r"^[0-9]+$", cl[0]):
            raise FramingError("content-length %r" % cl)
        if method == "HEAD" or status in (204, 304) or status < 200:
            return status, headers, b"", closes
        if te:
            body = bytearray()
            while True:
                size_line = self._line()
                mm = re.match(rb"^([0-9a-fA-F]+)$", size_line)
                if not mm:
                    raise FramingError("bad chunk size line %r" % size_line)
                n = int(mm.group(1), 16)
                if n == 0:
                    break
                body += self._exact(n)
                if self._exact(2) != b"\r\n":
                    raise FramingError("chunk data not followed by CRLF")
            while self._line() != b"":
                pass  # trailer fields
            return status, headers, bytes(body), closes
        if cl:
            return status, headers, self._exact(int(cl[0])), closes
        if not closes:
            raise FramingError("no Content-Length, no chunked coding and no Connection: close")
        while self._fill():
            pass
        body = bytes(self.buf)
        self.buf.clear()
        return status, headers, body, True

    def assert_closed_clean(self):
        """After a closing response: no further byte, then EOF."""
        while self._fill():
            pass
        if self.buf:
            raise FramingError("%d bytes after a Connection: close response: %r"
                               % (len(self.buf), bytes(self.buf[:200])))

    def assert_reusable(self):
        """Sends GET /health on the same connection: its answer must parse
        from the very next byte (nothing stray before it)."""
        if self.buf:
            raise FramingError("%d stray bytes after the response: %r"
                               % (len(self.buf), bytes(self.buf[:200])))
        self.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, _, _, closes = self.read_response("GET")
        if status != 200:
            raise FramingError("GET /health on the same connection answered %d" % status)
        return closes


def request_bytes(case, body=b'{"model":"m","max_tokens":1,"messages":[]}', method="POST"):
    return (b"%s /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"anthropic-version: 2023-06-01\r\nx-zt-case: %s\r\ncontent-length: %d\r\n\r\n%s"
            % (method.encode(), case.encode(), len(body), body))


def chunk(data, ext=b""):
    return b"%x%s\r\n%s\r\n" % (len(data), ext, data)


def split_at(data, cuts):
    pts = sorted(set(c for c in cuts if 0 < c < len(data)))
    out, prev = [], 0
    for p in pts:
        out.append(data[prev:p])
        prev = p
    out.append(data[prev:])
    return out


def random_case(rng):
    """One valid upstream response.  Returns (pieces, close, expect) where
    expect holds the status, the body and the end-to-end headers the client
    must get, and the names it must not get."""
    status = rng.choice([200, 200, 200, 200, 201, 400, 404, 204])
    size = 0 if status == 204 else rng.choice([0, 1, 2, 9, 10, 99, 330, 1000, 3300, 4096, 20000, 70000])
    body = bytes(rng.getrandbits(8) for _ in range(size)) if size <= 4096 else os.urandom(size)
    framing = "none" if status == 204 else rng.choice(["cl", "cl", "chunked", "chunked", "close"])
    e2e = [("x-r-%d" % i, "v%d-%s" % (i, "9" * rng.randint(0, 12))) for i in range(rng.randint(0, 6))]
    e2e.append(("content-type", rng.choice(["application/octet-stream", "text/plain"])))
    fields = [(n, v) for n, v in e2e]
    hop_names = []
    if framing == "cl":
        fields.append(("content-length", str(size)))
    elif framing == "chunked":
        fields.append(("transfer-encoding", "chunked"))
    if rng.random() < 0.3:
        fields.append(("keep-alive", "timeout=5"))
        hop_names.append("keep-alive")
    if rng.random() < 0.3:
        fields.append(("x-hop-%d" % rng.randint(0, 9), "secret"))
        hop_names.append(fields[-1][0])
        fields.append(("connection", fields[-1][0]))
    close = framing == "close" or rng.random() < 0.2
    if close:
        fields.append(("connection", "close"))
    rng.shuffle(fields)
    fields = [("".join(c.upper() if rng.random() < 0.3 else c for c in n), v) for n, v in fields]
    head = b"HTTP/1.1 %d %s\r\n" % (status, rng.choice([b"OK", b"Whatever", b""]))
    head += b"".join(b"%s: %s\r\n" % (n.encode(), v.encode()) for n, v in fields) + b"\r\n"
    if framing == "chunked":
        enc, i = b"", 0
        while i < len(body):
            n = rng.choice([1, 7, 100, 4096, 65536])
            enc += chunk(body[i:i + n], rng.choice([b"", b"", b";x=1"]))
            i += n
        enc += b"0\r\n" + (b"x-trailer: 1\r\n" if rng.random() < 0.2 else b"") + b"\r\n"
    else:
        enc = body
    data = head + enc
    cuts = [rng.randrange(len(data)) for _ in range(rng.randint(0, 4))]
    if rng.random() < 0.3:
        cuts.append(len(head) - rng.randint(1, 4))  # inside the blank line or last field
    return split_at(data, cuts), close, {"status": status, "body": body, "e2e": e2e,
                                         "absent": hop_names}


class FramingCase(ZephyrTestCase):
    def proxy(self, up):
        g = {"name": "main", "endpoints": [("up", up.url)]}
        p = self.start_proxy([g], server={"header_timeout_ms": 5000, "idle_timeout_ms": 5000},
                             health_check=HEALTH)
        return p

    def upstream(self):
        up = ScriptedUpstream()
        self.addCleanup(up.close)
        return up

    def client(self, p):
        c = StrictReader(p.port)
        self.addCleanup(c.close)
        return c

    def exchange(self, p, up, case, pieces, close=False, method="POST"):
        """Scripts the case, sends it on a new connection, returns
        (status, headers, body, reader) after checking the framing and what
        follows it."""
        up.script(case, pieces, close)
        c = self.client(p)
        c.send(request_bytes(case, method=method))
        status, headers, body, closes = c.read_response(method)
        if closes:
            c.assert_closed_clean()
        else:
            c.assert_reusable()
        return status, headers, body


class Framing(FramingCase):
    """Each defect of issue 11's "Response framing" list, one test each."""

    def test_content_length_last_is_parsed_from_its_own_bytes(self):
        # The built-in client packs header values back to back and recycles
        # its buffer: a Content-Length that is the last field used to be
        # read on into the stale bytes of the previous head (12 + "345").
        up = self.upstream()
        p = self.proxy(up)
        for i, (size, pad) in enumerate([(12345, "a"), (12, "a"), (12345, "b"), (12, "b")]):
            body = bytes([0x41 + i]) * size
            head = b"HTTP/1.1 200 OK\r\nx-pad: %s\r\ncontent-length: %d\r\n\r\n" % (pad.encode(), size)
            status, _, got, = self.exchange(p, up, "stale-%d" % i, [head + body])
            self.assertEqual(status, 200)
            self.assertEqual(got, body)

    def test_concurrent_requests_keep_their_own_lengths(self):
        # The report: 4 concurrent requests on a fresh proxy, lengths last.
        up = self.upstream()
        p = self.proxy(up)
        sizes = [330, 3300, 33, 33000, 3, 330, 12345, 12]
        for rnd in range(3):
            readers = []
            for i in range(4):
                size = sizes[(rnd * 4 + i) % len(sizes)]
                case = "conc-%d-%d" % (rnd, i)
                body = bytes([0x61 + i]) * size
                up.script(case, [b"HTTP/1.1 200 OK\r\nx-i: %d\r\ncontent-length: %d\r\n\r\n%s"
                                 % (i, size, body)], False)
                c = self.client(p)
                c.send(request_bytes(case))
                readers.append((c, body))
            for c, body in readers:
                status, _, got, closes = c.read_response()
                self.assertEqual((status, len(got)), (200, len(body)))
                self.assertEqual(got, body)
                self.assertFalse(closes)
                c.assert_reusable()

    def test_head_response_carries_no_body(self):
        up = self.upstream()
        p = self.proxy(up)
        up.script("head", [b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"], False)
        c = self.client(p)
        c.send(b"HEAD /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nx-zt-case: head\r\n\r\n")
        status, headers, body, closes = c.read_response("HEAD")
        self.assertEqual((status, body), (200, b""))
        self.assertIn(("content-length", "100"), headers)
        self.assertFalse(closes)
        c.assert_reusable()

    def test_content_length_with_transfer_encoding_is_refused(self):
        # CL: 5 with a chunked body whose rest is a forged response: libcurl
        # de-chunks and ignores the length; the proxy used to send the
        # length and then the whole body, a second response on the client's
        # keep-alive connection.
        up = self.upstream()
        p = self.proxy(up)
        forged = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged"
        for order in ("cl-first", "te-first"):
            f = [b"content-length: 5\r\n", b"transfer-encoding: chunked\r\n"]
            if order == "te-first":
                f.reverse()
            resp = b"HTTP/1.1 200 OK\r\n" + b"".join(f) + b"\r\n" + chunk(b"hello" + forged) + b"0\r\n\r\n"
            status, headers, body = self.exchange(p, up, "clte-" + order, [resp])
            self.assertEqual(status, 502, (order, headers, body))
            self.assertNotIn(b"forged", body)
            # the endpoint is now marked failed; bring it back for the next order
            p = self.proxy(up)

    def _refused(self, case, resp, close=False, pieces=None):
        up = self.upstream()
        p = self.proxy(up)
        status, headers, body = self.exchange(p, up, case, pieces or [resp], close=close)
        self.assertEqual(status, 502, (case, headers, body))
        self.assertIn(b"api_error", body)
        return body

    def test_duplicate_content_length_is_refused(self):
        self._refused("dup-same", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello")
        self._refused("dup-diff", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 3\r\n\r\nhello")

    def test_malformed_content_length_is_refused(self):
        for i, v in enumerate([b"+5", b"5,5", b"0x5", b"5 5", b"-1", b"99999999999999999999"]):
            self._refused("badcl-%d" % i, b"HTTP/1.1 200 OK\r\ncontent-length: %s\r\n\r\nhello" % v,
                          close=True)

    def test_transfer_encoding_other_than_chunked_is_refused(self):
        self._refused("te-gzip", b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n"
                      + chunk(b"\x1f\x8b\x08hello") + b"0\r\n\r\n")

    def test_switching_protocols_is_refused(self):
        # A 101 nobody asked for, followed by raw bytes: they used to reach
        # the client (libcurl path) with no status line before them.
        body = self._refused("101", b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n"
                             b"connection: upgrade\r\n\r\nRAW BYTES OF ANOTHER PROTOCOL",
                             close=True)
        self.assertNotIn(b"RAW BYTES", body)

    def test_headers_named_by_connection_are_dropped(self):
        up = self.upstream()
        p = self.proxy(up)
        resp = (b"HTTP/1.1 200 OK\r\nx-secret: s3\r\nconnection: x-secret, X-Other\r\n"
                b"x-other: o\r\nx-kept: k\r\ncontent-length: 2\r\n\r\nok")
        status, headers, body = self.exchange(p, up, "connlist", [resp])
        self.assertEqual((status, body), (200, b"ok"))
        names = [k for k, _ in headers]
        self.assertIn("x-kept", names)
        self.assertNotIn("x-secret", names)
        self.assertNotIn("x-other", names)

    def test_upstream_cannot_spoof_the_proxy_headers(self):
        up = self.upstream()
        p = self.proxy(up)
        resp = b"HTTP/1.1 200 OK\r\nx-zephyr-endpoint: evil\r\ncontent-length: 2\r\n\r\nok"
        _, headers, _ = self.exchange(p, up, "spoof", [resp])
        self.assertEqual([v for k, v in headers if k == "x-zephyr-endpoint"], ["up"])


class CurlFraming(Framing):
    http_client = "libcurl"


class Differential(FramingCase):
    """Random valid upstream responses; the client must get the same status
    and body in a valid message, with nothing after it."""

    def test_random_responses(self):
        seed = int(os.environ.get("ZEPHYR_TEST_SEED") or random.SystemRandom().randrange(1 << 30))
        count = int(os.environ.get("ZEPHYR_FRAMING_CASES") or 200)
        print("\n%s: seed %d (replay with ZEPHYR_TEST_SEED=%d), %d cases"
              % (type(self).__name__, seed, seed, count), flush=True)
        rng = random.Random(seed)
        up = self.upstream()
        p = self.proxy(up)
        c = None
        for i in range(count):
            pieces, close, want = random_case(rng)
            case = "r%d" % i
            up.script(case, pieces, close)
            if c is None:
                c = self.client(p)
            what = "case %d of seed %d: %r" % (i, seed, b"".join(pieces)[:300])
            try:
                c.send(request_bytes(case))
                status, headers, body, closes = c.read_response("POST")
                self.assertEqual(status, want["status"], what)
                self.assertEqual(len(body), len(want["body"]), what)
                self.assertEqual(body, want["body"], what)
                got = dict(headers)
                for n, v in want["e2e"]:
                    self.assertEqual(got.get(n), v, "%s: header %s" % (what, n))
                for n in want["absent"]:
                    self.assertNotIn(n, got, what)
                if closes:
                    c.assert_closed_clean()
                    c = None
                elif rng.random() < 0.3 and c.assert_reusable():
                    c.assert_closed_clean()
                    c = None
            except FramingError as e:
                self.fail("%s: %s" % (what, e))
        self.assertIsNotNone(p.status())


class CurlDifferential(Differential):
    http_client = "libcurl"


if __name__ == "__main__":
    unittest.main()
