"""
Integration test harness for claude-zephyr.

It starts the real binaries from $ZEPHYR_BUILD (default "build", relative to
the repository root): the fake upstream (`fake-upstream --port 0`, which prints
`PORT n` on stdout) and the proxy (`claude-zephyr --config F --port 0`, which
logs `listening on http://127.0.0.1:PORT` on stderr).  Both only ever listen on
127.0.0.1 with ephemeral ports.

Everything here is bounded in time: every socket has a timeout, every child
process is collected by ZephyrTestCase's cleanups (SIGTERM, then SIGKILL), and
the output pipes of children are drained by threads so a chatty child never
blocks on a full pipe.

Under AddressSanitizer (a build directory whose path contains "asan", or
ZEPHYR_ASAN=1) children run with ASAN_OPTIONS=detect_leaks=1:abort_on_error=0,
timing bounds are stretched by SCALE, and the cleanup of every proxy asserts a
clean exit: status 0 after SIGTERM and no sanitizer report on stderr.

Only the Python 3 standard library is used.
"""

import fcntl
import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import uuid

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _build_dir():
    b = os.environ.get("ZEPHYR_BUILD", "build")
    if not os.path.isabs(b):
        b = os.path.join(REPO_ROOT, b)
    return os.path.abspath(b)


BUILD_DIR = _build_dir()
PROXY_BIN = os.path.join(BUILD_DIR, "claude-zephyr")
FAKE_BIN = os.path.join(BUILD_DIR, "fake-upstream")

ASAN = os.environ.get("ZEPHYR_ASAN") == "1" or "asan" in os.path.basename(BUILD_DIR).lower() \
    or "/asan" in BUILD_DIR.lower()
# Multiplier for bounds that depend on how fast the binaries run.  Bounds that
# come from the proxy's own timers (idle/header timeouts) are not scaled.
SCALE = 2.5 if ASAN else 1.0

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer",
                     "ERROR: UndefinedBehaviorSanitizer")

LISTEN_RE = re.compile(r"listening on http://([0-9.]+):(\d+)(?=\D)")

DEFAULT_TIMEOUT = 10.0 * SCALE


def scaled(seconds):
    return seconds * SCALE


# ---------------------------------------------------------------------------
# small utilities


def wait_for(cond, timeout, interval=0.02, desc="condition"):
    """Polls cond() until it returns a truthy value; returns it.  Exceptions
    raised by cond count as "not yet".  Raises AssertionError on timeout with
    the last value or exception."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = cond()
            if v:
                return v
            last = v
        except Exception as e:  # noqa: BLE001 - polled conditions may race
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s (last: %r)"
                                 % (timeout, desc, last))
        time.sleep(interval)


def free_port():
    """A port that was free a moment ago (bound then closed): nothing listens."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


_refusing = []


def refused_port():
    """A port where every connection is refused for the rest of this
    process: bound but never listening, so that no other test (nor a
    parallel shard, see tests/run.sh) can start listening on it, as could
    happen to a free_port() that nothing holds."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    _refusing.append(s)
    return s.getsockname()[1]


def port_accepts(port, timeout=0.5):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError:
        return False
    s.close()
    return True


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


_npm_errors = {}


def npm_ensure(node_dir, packages, markers):
    """Installs npm packages into node_dir once (tests that need real
    clients or a browser driver).  Returns None when every path in markers
    exists afterwards, else the reason, which is remembered so that later
    tests skip at once instead of retrying the install."""
    if all(os.path.exists(m) for m in markers):
        return None
    key = (node_dir, tuple(packages))
    if key in _npm_errors:
        return _npm_errors[key]
    # Parallel shards (tests/run.sh) may need the same node_dir at once: one
    # installs, the others wait on the lock and then find the markers.
    os.makedirs(node_dir, exist_ok=True)
    with open(node_dir + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all(os.path.exists(m) for m in markers):
            return None
        return _npm_install(node_dir, packages, markers, key)


def _npm_install(node_dir, packages, markers, key):
    what = "npm install " + " ".join(packages)
    if not os.path.exists(os.path.join(node_dir, "package.json")):
        with open(os.path.join(node_dir, "package.json"), "w") as f:
            f.write('{"name": "zephyr-test-%s", "private": true}\n' % os.path.basename(node_dir))
    try:
        r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", node_dir]
                           + list(packages), stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        _npm_errors[key] = "%s failed: %s" % (what, e)
        return _npm_errors[key]
    if r.returncode != 0 or not all(os.path.exists(m) for m in markers):
        _npm_errors[key] = "%s failed (exit %d): %s" % (what, r.returncode,
                                                        (r.stderr or r.stdout)[-600:])
        return _npm_errors[key]
    return None


def child_env(extra=None, unset=()):
    """The environment for children: ours, minus anything that could leak a
    real configuration in, plus sanitizer options and the given overrides."""
    env = dict(os.environ)
    for k in list(env):
        if k.startswith(("ANTHROPIC_", "ZT_")):
            del env[k]
    for k in unset:
        env.pop(k, None)
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    env.pop("LSAN_OPTIONS", None)
    if extra:
        env.update(extra)
    return env


def sanitizer_report(text):
    for m in SANITIZER_MARKERS:
        if m in text:
            return m
    return None


class _Drain(threading.Thread):
    """Reads a pipe to EOF into a buffer, so the child never blocks on it."""

    def __init__(self, fileobj):
        super().__init__(daemon=True)
        self.f = fileobj
        self.buf = bytearray()
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.eof = False
        self.start()

    def run(self):
        fd = self.f.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            with self.cond:
                if not data:
                    self.eof = True
                    self.cond.notify_all()
                    return
                self.buf += data
                self.cond.notify_all()

    def text(self):
        with self.lock:
            return self.buf.decode("utf-8", "replace")

    def wait_match(self, regex, timeout):
        """Waits until regex matches the collected text; returns the match or
        None at timeout / EOF without match."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                m = regex.search(self.buf.decode("utf-8", "replace"))
                if m or self.eof:
                    return m
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(min(left, 0.1))


# ---------------------------------------------------------------------------
# raw HTTP/1.1 client, for exact-byte tests


class Response:
    def __init__(self, status, reason, headers, body=b"", raw_head=b""):
        self.status = status
        self.reason = reason
        self.headers = headers      # list of (lowercase name, value)
        self.body = body
        self.raw_head = raw_head

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<Response %d %r headers=%r body=%r>" % (
            self.status, self.reason, self.headers, self.body[:300])


class RawConn:
    """A client socket with a read buffer.  Every operation is bounded by the
    socket timeout.  Optional pacing makes it a slow reader."""

    def __init__(self, port, timeout=DEFAULT_TIMEOUT, rcvbuf=None, host="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.buf = bytearray()
        self.eof = False
        self.last_recv_time = time.monotonic()
        self.total_received = 0
        # pacing: while time.monotonic() < slow_until, each recv reads at most
        # slow_chunk bytes and sleeps slow_delay seconds first.
        self.slow_until = 0.0
        self.slow_chunk = 1024
        self.slow_delay = 0.0

    def settimeout(self, t):
        self.sock.settimeout(t)

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self):
        """One recv into the buffer.  Returns False on EOF."""
        if self.eof:
            return False
        n = 65536
        if time.monotonic() < self.slow_until:
            if self.slow_delay:
                time.sleep(self.slow_delay)
            n = self.slow_chunk
        data = self.sock.recv(n)
        self.last_recv_time = time.monotonic()
        if not data:
            self.eof = True
            return False
        self.total_received += len(data)
        self.buf += data
        return True

    def read_until(self, delim, limit=1 << 20):
        while True:
            i = self.buf.find(delim)
            if i >= 0:
                out = bytes(self.buf[:i + len(delim)])
                del self.buf[:i + len(delim)]
                return out
            if len(self.buf) > limit:
                raise AssertionError("no %r within %d bytes" % (delim, limit))
            if not self._fill():
                raise EOFError("connection closed while waiting for %r (have %r)"
                               % (delim, bytes(self.buf[:200])))

    def read_exact(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError("connection closed with %d of %d bytes" % (len(self.buf), n))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_available(self):
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def read_head(self):
        raw = self.read_until(b"\r\n\r\n", limit=256 * 1024)
        lines = raw[:-4].split(b"\r\n")
        m = re.match(rb"HTTP/1\.[01] (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise AssertionError("bad status line %r" % lines[0])
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise AssertionError("bad header line %r" % line)
            headers.append((name.decode("latin-1").strip().lower(),
                            value.decode("latin-1").strip()))
        return Response(int(m.group(1)), (m.group(2) or b"").decode("latin-1"), headers,
                        raw_head=raw)

    def body_pieces(self, resp, method="GET"):
        """Yields (arrival_time, bytes) of the decoded body as it arrives.
        Sets resp.end to "complete" (framing satisfied), "eof" (connection
        closed, close-delimited body) or raises on truncated framing."""
        resp.end = None
        if method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200:
            resp.end = "complete"
            return
        te = (resp.header("transfer-encoding") or "").lower()
        cl = resp.header("content-length")
        if "chunked" in te:
            while True:
                line = self.read_until(b"\r\n", limit=4096)
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    # trailers until an empty line
                    while self.read_until(b"\r\n", limit=65536) != b"\r\n":
                        pass
                    resp.end = "complete"
                    return
                left = size
                while left:
                    if not self.buf and not self._fill():
                        raise EOFError("connection closed inside a chunk (%d left)" % left)
                    take = min(left, len(self.buf))
                    piece = bytes(self.buf[:take])
                    del self.buf[:take]
                    left -= take
                    yield (self.last_recv_time, piece)
                if self.read_exact(2) != b"\r\n":
                    raise AssertionError("chunk not followed by CRLF")
        elif cl is not None:
            left = int(cl)
            while left:
                if not self.buf and not self._fill():
                    raise EOFError("connection closed with %d body bytes missing" % left)
                take = min(left, len(self.buf))
                piece = bytes(self.buf[:take])
                del self.buf[:take]
                left -= take
                yield (self.last_recv_time, piece)
            resp.end = "complete"
        else:
            while True:
                if self.buf:
                    piece = bytes(self.buf)
                    self.buf.clear()
                    yield (self.last_recv_time, piece)
                if not self._fill():
                    resp.end = "eof"
                    return

    def read_response(self, method="GET"):
        resp = self.read_head()
        resp.body = b"".join(p for _, p in self.body_pieces(resp, method))
        return resp

    def closed_by_peer(self, timeout):
        """True if the peer closes (EOF or reset) within timeout, after any
        bytes still in flight; False if the connection is still open."""
        old = self.sock.gettimeout()
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                try:
                    data = self.sock.recv(65536)
                except socket.timeout:
                    return False
                except (ConnectionResetError, BrokenPipeError):
                    return True
                if not data:
                    return True
                self.buf += data
        finally:
            self.sock.settimeout(old)

    def no_data_within(self, timeout):
        """True if nothing arrives (and the connection stays open) for timeout."""
        if self.buf:
            return False
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return True
        finally:
            self.sock.settimeout(old)
        self.buf += data
        return False


def build_request(method, path, headers=(), body=None, host="127.0.0.1"):
    """Raw request bytes.  headers: list of (name, value); a Host header and a
    Content-Length (when body is not None and no framing header is given) are
    added."""
    lines = ["%s %s HTTP/1.1" % (method, path)]
    names = {k.lower() for k, _ in headers}
    if "host" not in names:
        lines.append("Host: %s" % host)
    for k, v in headers:
        lines.append("%s: %s" % (k, v))
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        lines.append("Content-Length: %d" % len(body))
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (body or b"")


def chunked(body, sizes):
    """Encodes body with Transfer-Encoding: chunked, chunk sizes cycling
    through sizes."""
    out = bytearray()
    i = 0
    k = 0
    while i < len(body):
        n = sizes[k % len(sizes)]
        k += 1
        part = body[i:i + n]
        i += n
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    out += b"0\r\n\r\n"
    return bytes(out)


def messages_body(model="claude-zt-test", stream=False, text="hi", max_tokens=16, extra=None):
    d = {"model": model, "max_tokens": max_tokens,
         "messages": [{"role": "user", "content": text}]}
    if stream:
        d["stream"] = True
    if extra:
        d.update(extra)
    return json.dumps(d).encode()


def fake_headers(**knobs):
    """Per-request fake-upstream knobs: x-fake-<knob-with-dashes>: value."""
    out = []
    for k, v in knobs.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        out.append(("x-fake-" + k.replace("_", "-"), str(v)))
    return out


def is_anthropic_error(resp):
    """The body is {"type":"error","error":{"type":str,"message":str}}."""
    try:
        d = resp.json()
    except Exception:  # noqa: BLE001
        return False
    return (isinstance(d, dict) and d.get("type") == "error"
            and isinstance(d.get("error"), dict)
            and isinstance(d["error"].get("type"), str) and d["error"]["type"]
            and isinstance(d["error"].get("message"), str) and d["error"]["message"] != "")


# ---------------------------------------------------------------------------
# SSE


class SseEvent:
    def __init__(self, t, event, data):
        self.t = t
        self.event = event
        self.data = data

    def json(self):
        return json.loads(self.data)

    def __repr__(self):
        return "<SseEvent %s %r>" % (self.event, self.data[:80])


class SseStream:
    """Sends a request on a RawConn and parses the SSE response as it arrives,
    recording the arrival time of each event (time.monotonic())."""

    def __init__(self, conn, request_bytes):
        self.conn = conn
        self.t0 = time.monotonic()
        conn.send(request_bytes)
        self.resp = conn.read_head()
        self.t_head = time.monotonic()
        self.events_seen = []
        self.end = None          # "complete" | "eof" | "reset" | "timeout" | "truncated"
        self.t_end = None

    def events(self):
        pending = b""
        try:
            for t, piece in self.conn.body_pieces(self.resp, "POST"):
                pending = (pending + piece).replace(b"\r\n", b"\n")
                while True:
                    i = pending.find(b"\n\n")
                    if i < 0:
                        break
                    block = pending[:i].decode("utf-8", "replace")
                    pending = pending[i + 2:]
                    ev = _parse_sse_block(t, block)
                    if ev is not None:
                        self.events_seen.append(ev)
                        yield ev
            self.end = self.resp.end
        except socket.timeout:
            self.end = "timeout"
        except (ConnectionResetError, BrokenPipeError):
            self.end = "reset"
        except EOFError:
            self.end = "truncated"
        self.t_end = time.monotonic()

    def read_all(self):
        for _ in self.events():
            pass
        return self.events_seen

    def names(self):
        return [e.event for e in self.events_seen]


def _parse_sse_block(t, block):
    event = None
    data = []
    for line in block.split("\n"):
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if event is None and not data:
        return None
    return SseEvent(t, event or "message", "\n".join(data))


# ---------------------------------------------------------------------------
# http.client helpers


def http_request(port, method, path, body=None, headers=None, timeout=DEFAULT_TIMEOUT):
    """One request on a fresh connection; returns a Response (body read)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        r = conn.getresponse()
        body = r.read()
        return Response(r.status, r.reason, [(k.lower(), v) for k, v in r.getheaders()], body)
    finally:
        conn.close()


def http_json(port, method, path, obj=None, timeout=DEFAULT_TIMEOUT):
    body = None if obj is None else json.dumps(obj).encode()
    hdrs = {"content-type": "application/json"} if body is not None else {}
    r = http_request(port, method, path, body, hdrs, timeout)
    return r.status, (json.loads(r.body) if r.body else None)


# ---------------------------------------------------------------------------
# processes


class _Child:
    what = "child"

    def __init__(self):
        self.proc = None
        self.exit_code = None
        self.stopped = False
        self.stdout = None
        self.stderr = None

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr_text(self):
        return self.stderr.text() if self.stderr else ""

    def stdout_text(self):
        return self.stdout.text() if self.stdout else ""

    def signal(self, sig):
        if self.running():
            self.proc.send_signal(sig)

    def wait(self, timeout):
        try:
            self.exit_code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        # let the drain threads see EOF, then release the pipes
        for d in (self.stdout, self.stderr):
            if d:
                d.join(timeout=2)
                if not d.is_alive():
                    d.f.close()
        return self.exit_code

    def stop(self, timeout=None):
        """SIGTERM, wait, SIGKILL.  Returns (exit_code, killed)."""
        if timeout is None:
            timeout = scaled(10)
        killed = False
        if self.proc is None:
            return None, False
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            if self.wait(timeout) is None:
                killed = True
                self.proc.kill()
                self.wait(5)
        else:
            self.wait(5)
        self.exit_code = self.proc.returncode
        self.stopped = True
        return self.exit_code, killed


class FakeUpstream(_Child):
    what = "fake-upstream"

    def __init__(self, name="fake", knobs=None, extra_args=()):
        super().__init__()
        self.name = name
        if not os.path.exists(FAKE_BIN):
            raise AssertionError("fake upstream binary missing: %s (build it first)" % FAKE_BIN)
        args = [FAKE_BIN, "--port", "0", "--bind", "127.0.0.1", "--name", name] + list(extra_args)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=child_env())
        self.stdout = _Drain(self.proc.stdout)
        self.stderr = _Drain(self.proc.stderr)
        m = self.stdout.wait_match(re.compile(r"^PORT (\d+)\r?\n", re.M), scaled(10))
        if not m:
            self.stop(2)
            raise AssertionError("fake-upstream did not print 'PORT n' (exit %r)\nstdout: %s\nstderr: %s"
                                 % (self.proc.returncode, self.stdout_text(), self.stderr_text()))
        self.port = int(m.group(1))
        self.url = "http://127.0.0.1:%d" % self.port
        if knobs:
            self.config(**knobs)

    def config(self, **knobs):
        st, d = http_json(self.port, "POST", "/_fake/config", knobs)
        if st != 200:
            raise AssertionError("fake /_fake/config -> %d %r" % (st, d))
        return d

    def stats(self):
        st, d = http_json(self.port, "GET", "/_fake/stats")
        if st != 200:
            raise AssertionError("fake /_fake/stats -> %d %r" % (st, d))
        return d

    def reset(self):
        st, d = http_json(self.port, "POST", "/_fake/reset", {})
        if st != 200:
            raise AssertionError("fake /_fake/reset -> %d %r" % (st, d))
        return d


def stats_header(stats, name):
    """All values of header name (case-insensitive) in the fake's last_headers."""
    name = name.lower()
    return [v for k, v in stats.get("last_headers", []) if k.lower() == name]


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(v)


def make_config(groups, server=None, health_check=None, extra=""):
    """TOML text.  groups: list of dicts with keys name, endpoints (list of
    (name, url)), and optionally auth_token_env, auth_header, default.
    server / health_check: dicts of keys.  A short shutdown_grace_ms is added
    unless given, so stopping a proxy in cleanup is always quick."""
    server = dict(server or {})
    server.setdefault("shutdown_grace_ms", 3000)
    out = ["[server]"]
    for k, v in server.items():
        out.append("%s = %s" % (k, toml_value(v)))
    out.append("")
    for g in groups:
        out.append("[[groups]]")
        out.append("name = %s" % toml_value(g["name"]))
        for k in ("auth_token_env", "auth_header", "default"):
            if k in g:
                out.append("%s = %s" % (k, toml_value(g[k])))
        out.append("endpoints = [")
        for name, url in g["endpoints"]:
            out.append("  { url = %s, name = %s }," % (toml_value(url), toml_value(name)))
        out.append("]")
        out.append("")
    if health_check:
        out.append("[health_check]")
        for k, v in health_check.items():
            out.append("%s = %s" % (k, toml_value(v)))
        out.append("")
    out.append(extra)
    return "\n".join(out)


class Proxy(_Child):
    what = "claude-zephyr"

    def __init__(self, config_path, env=None, extra_args=(), cwd=None, port_arg="0"):
        super().__init__()
        if not os.path.exists(PROXY_BIN):
            raise AssertionError("proxy binary missing: %s (build it first)" % PROXY_BIN)
        self.config_path = config_path
        args = [PROXY_BIN, "--config", config_path]
        if port_arg is not None:
            args += ["--port", str(port_arg)]
        args += list(extra_args)
        self.args = args
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env or child_env(),
                                     cwd=cwd or os.path.dirname(config_path))
        self.stdout = _Drain(self.proc.stdout)
        self.stderr = _Drain(self.proc.stderr)
        m = self.stderr.wait_match(LISTEN_RE, scaled(10))
        if not m:
            code, _ = self.stop(3)
            raise AssertionError("proxy did not log 'listening on http://ADDR:PORT' (exit %r)\n"
                                 "stderr:\n%s" % (code, self.stderr_text()))
        self.port = int(m.group(2))
        self.url = "http://127.0.0.1:%d" % self.port

    # server.access_key_env's value, when the test set one: /status and the
    # admin API need it like every path but /health.
    access_key = None

    def _key_headers(self):
        return {"x-zephyr-key": self.access_key} if self.access_key else {}

    def status(self, timeout=DEFAULT_TIMEOUT):
        r = http_request(self.port, "GET", "/status", headers=self._key_headers(), timeout=timeout)
        if r.status != 200:
            raise AssertionError("/status -> %r" % r)
        return r.json()

    def admin(self, op, obj=None):
        r = http_request(self.port, "POST", "/admin/" + op,
                         json.dumps(obj if obj is not None else {}).encode(),
                         dict(self._key_headers(), **{"content-type": "application/json"}))
        return r.status, (json.loads(r.body) if r.body else None)

    def settle(self, timeout=None):
        """Best effort: waits until the start-up health checks are over
        (checks not running, no endpoint "checking") and a current endpoint is
        chosen, so they do not interleave with what a test measures on the
        fake.  Never fails: a proxy that checks later just proceeds."""
        timeout = scaled(5) if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                st = self.status(timeout=2)
                chk = st.get("checks") or {}
                eps = st.get("endpoints") or []
                if (not chk.get("running") and st.get("current_endpoint")
                        and all(e.get("status") != "checking" for e in eps)):
                    return st
            except Exception:  # noqa: BLE001
                pass
            time.sleep(0.03)
        return None

    def active(self):
        st = self.status()
        inflight = [r for r in (st.get("requests") or [])
                    if r.get("state") != "done" and not str(r.get("path", "")).startswith("/status")]
        return st.get("active_connections"), inflight


# ---------------------------------------------------------------------------
# the base test case


class ZephyrTestCase(unittest.TestCase):
    """Owns every process and socket a test creates and cleans them up.  The
    cleanup of every proxy checks it exits 0 on SIGTERM and that stderr shows
    no sanitizer report."""

    maxDiff = 4000
    # [server] http_client for proxies started from groups (not from
    # config_text); None keeps the default (the built-in HTTP/1.1 client).
    http_client = None

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="zt-")
        self.addCleanup(self._rm_tmp)

    def _rm_tmp(self):
        import shutil
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- processes --

    def start_fake(self, name="fake", **knobs):
        f = FakeUpstream(name)
        self.addCleanup(self._stop_fake, f)
        if knobs:
            f.config(**knobs)
        return f

    def _stop_fake(self, f):
        code, killed = f.stop(scaled(5))
        err = f.stderr_text()
        rep = sanitizer_report(err)
        self.assertIsNone(rep, "fake-upstream %s: sanitizer report on stderr:\n%s" % (f.name, err[-6000:]))
        self.assertFalse(killed, "fake-upstream %s did not exit after SIGTERM" % f.name)
        self.assertEqual(code, 0, "fake-upstream %s exit code %r after SIGTERM\n%s"
                         % (f.name, code, err[-3000:]))

    def write_config(self, text, name="config.toml", dotenv=None):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        if dotenv is not None:
            with open(os.path.join(os.path.dirname(path), ".env"), "w") as f:
                f.write(dotenv)
        return path

    def start_proxy(self, groups=None, server=None, health_check=None, env=None,
                    extra_args=(), settle=True, config_text=None, dotenv=None, cwd=None):
        if config_text is None:
            if self.http_client:
                server = dict(server or {})
                server.setdefault("http_client", self.http_client)
            config_text = make_config(groups, server, health_check)
        path = self.write_config(config_text, dotenv=dotenv)
        p = Proxy(path, env=child_env(env), extra_args=extra_args, cwd=cwd)
        p.access_key = (env or {}).get((server or {}).get("access_key_env"))
        self.addCleanup(self._stop_proxy, p)
        if settle:
            p.settle()
        return p

    def proxy_for(self, fake, token=None, auth_header=None, server=None, ep_name="a",
                  group="main", url=None, **kw):
        """A proxy with one group and one endpoint pointing at fake.  With
        token, the group reads it from ZT_TOKEN and the fake requires it."""
        g = {"name": group, "endpoints": [(ep_name, url or fake.url)]}
        env = {}
        if token is not None:
            g["auth_token_env"] = "ZT_TOKEN"
            env["ZT_TOKEN"] = token
            fake.config(token=token)
        if auth_header is not None:
            g["auth_header"] = auth_header
        env.update(kw.pop("env", {}) or {})
        return self.start_proxy([g], server=server, env=env, **kw)

    def _stop_proxy(self, p):
        if not p.stopped:
            code, killed = p.stop(scaled(15))
        else:
            code, killed = p.exit_code, False
        err = p.stderr_text()
        rep = sanitizer_report(err)
        self.assertIsNone(rep, "claude-zephyr: sanitizer report (%s) on stderr:\n%s" % (rep, err[-8000:]))
        self.assertFalse(killed, "claude-zephyr did not exit within %.0fs of SIGTERM\n%s"
                         % (scaled(15), err[-3000:]))
        self.assertEqual(code, 0, "claude-zephyr exit code %r after SIGTERM\n%s" % (code, err[-3000:]))

    # -- sockets --

    def raw(self, port, **kw):
        c = RawConn(port, **kw)
        self.addCleanup(c.close)
        return c

    # -- requests that are checked on the fake --

    def captured(self, fake, send, attempts=3):
        """Runs send(marker_headers) -> result, then returns (result, stats)
        where stats are the fake's counters for exactly that request (found
        by a unique x-zt-marker header).  Retries if a health check hit the
        fake in between and overwrote last_*."""
        last = None
        for _ in range(attempts):
            marker = uuid.uuid4().hex
            result = send([("x-zt-marker", marker)])
            stats = fake.stats()
            if marker in stats_header(stats, "x-zt-marker"):
                return result, stats
            last = (result, stats)
        self.fail("the fake never saw the marked request; last result %r, last_headers %r"
                  % (last[0], last[1].get("last_headers")))

    def post_messages(self, port, body=None, headers=(), path="/v1/messages", timeout=DEFAULT_TIMEOUT):
        """POST on a fresh raw connection; returns the Response."""
        c = self.raw(port, timeout=timeout)
        given = {k.lower() for k, _ in headers}
        hdrs = [(k, v) for k, v in (("content-type", "application/json"), ("anthropic-version", "2023-06-01"))
                if k not in given] + list(headers)
        c.send(build_request("POST", path, hdrs, body if body is not None else messages_body()))
        r = c.read_response("POST")
        c.close()
        return r

    def stream(self, port, headers=(), body=None, **conn_kw):
        c = self.raw(port, **conn_kw)
        given = {k.lower() for k, _ in headers}
        hdrs = [(k, v) for k, v in (("content-type", "application/json"), ("anthropic-version", "2023-06-01"),
                                    ("accept", "text/event-stream")) if k not in given] + list(headers)
        return SseStream(c, build_request("POST", "/v1/messages", hdrs,
                                          body if body is not None else messages_body(stream=True)))

    def assertAnthropicError(self, resp, status=None):
        if status is not None:
            if isinstance(status, (tuple, list, set)):
                self.assertIn(resp.status, status, resp)
            else:
                self.assertEqual(resp.status, status, resp)
        self.assertTrue(is_anthropic_error(resp),
                        "not an Anthropic-shaped error body {type:error,error:{type,message}}: %r" % resp)
        ct = resp.header("content-type") or ""
        self.assertIn("application/json", ct, resp)
