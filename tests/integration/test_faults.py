"""
Fault injection: every way an upstream can fail, against streaming and
non-streaming requests, each with the outcome the client must see.  This is
the proof of the "request-path failover and hardening" issue.

Set-up of every test: two or three upstreams in one group, named ep-alpha,
ep-bravo, ep-charlie, preferred in that order.  The order is made
deterministic by slowing the later fakes down (40 ms steps) while the
start-up health checks measure them, then checked on /status, then the
slowness is removed.  Health checks use count_tokens every 300 s, so after
start-up the only checks are the quick re-checks the proxy asks for after a
live failure (and the failed-endpoint cadence, where a test sets it).

Faults come from:
  - the fake upstream's knobs set per fake with fake.config(...) (the fake
    then misbehaves on every request, checks included, like a broken
    server), or per request with x-fake-* headers where only one request
    must misbehave (client errors, which must not be retried anyway);
  - RawUpstream below, a small Python server for what the fake cannot do:
    reset before headers, garbage, a bad status line, a header with a bare
    CR, an oversized header block, a body cut short or stalled after the
    headers, a stream stalled after its opening events, a trickled body,
    429 with anthropic-ratelimit-*-reset headers, an error that echoes the
    token.

Where requests went is proved by each upstream's own counters ("messages"
counts POST /v1/messages only, so health checks do not disturb it), and the
replay of the request body by the CRC-32 the serving upstream computed.
Client-side retries do not exist here: every request is one raw socket.

Every test is bounded (well under 15 s, most about a second); timing bounds
that depend on how fast the binaries run are stretched under ASan.
"""

import json
import os
import re
import secrets
import socket
import struct
import subprocess
import threading
import time
import unittest
import uuid
import zlib
from datetime import datetime, timedelta, timezone

from harness import (PROXY_BIN, RawConn, Response, ZephyrTestCase, build_request, child_env,
                     chunked, fake_headers, http_request, is_anthropic_error,
                     make_config, messages_body, scaled, stats_header, wait_for)
from scripted import ScriptedServer

NAMES = ("ep-alpha", "ep-bravo", "ep-charlie")
HEALTH = {"method": "count_tokens", "interval_seconds": 300, "timeout_seconds": 5}
ORDER_STEP_MS = 150  # well above scheduling noise on a loaded 2-core machine
MB = 1024 * 1024


def body_of(stream, size=200 * 1024, seed=1):
    """A Messages request body of about size bytes with varied content, so
    that a replay that drops or reorders bytes changes its CRC."""
    words = []
    n = 0
    i = seed
    while n < size:
        w = "w%x" % (i * 2654435761 % 1000003)
        words.append(w)
        n += len(w) + 1
        i += 1
    return messages_body(stream=stream, text=" ".join(words))


# ---------------------------------------------------------------------------
# a misbehaving upstream


def _rfc3339(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


class RawUpstream(ScriptedServer):
    """A tiny HTTP/1.1 server on 127.0.0.1, one thread per connection,
    Connection: close on every answer.

    mode "ok" answers like the fake: count_tokens, JSON messages and SSE
    streams.  Every other mode misbehaves on every request (health checks
    included) unless checks_ok is set, in which case count_tokens is still
    answered properly.  Counters: requests, messages (POST /v1/messages),
    aborted (the peer closed while a stalled answer was pending),
    last_body_crc32, last_body_bytes, last_headers."""

    SSE_START = ('event: message_start\ndata: {"type":"message_start","message":{"id":"msg_raw",'
                 '"type":"message","role":"assistant","model":"claude-zt-test","content":[],'
                 '"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":5,'
                 '"output_tokens":1}}}\n\n')
    SSE_CBS = ('event: content_block_start\ndata: {"type":"content_block_start","index":0,'
               '"content_block":{"type":"text","text":""}}\n\n')
    SSE_PING = 'event: ping\ndata: {"type": "ping"}\n\n'
    SSE_DELTA = ('event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                 '"delta":{"type":"text_delta","text":"w%d "}}\n\n')
    SSE_END = ('event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
               'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
               '"stop_sequence":null},"usage":{"output_tokens":3}}\n\n'
               'event: message_stop\ndata: {"type":"message_stop"}\n\n')

    def __init__(self, name="raw", mode="ok"):
        self.name = name
        self.mode = mode
        self.checks_ok = False
        self.delay = 0.0          # before any answer in mode "ok"
        self.trickle_pieces = 4
        self.trickle_gap = 0.5
        self.reset_in_s = 20      # for mode ratelimit_reset
        self.lock = threading.Lock()
        self.requests = 0
        self.messages = 0
        self.aborted = 0
        self.last_body_crc32 = None
        self.last_body_bytes = None
        self.last_headers = []
        super().__init__()

    # -- the test's view --

    def set(self, **kw):
        with self.lock:
            for k, v in kw.items():
                if not hasattr(self, k):
                    raise AttributeError(k)
                setattr(self, k, v)

    def stats(self):
        with self.lock:
            return {"requests": self.requests, "messages": self.messages, "aborted": self.aborted,
                    "last_body_crc32": self.last_body_crc32, "last_body_bytes": self.last_body_bytes,
                    "last_headers": list(self.last_headers)}

    def _stall(self, s, limit=30.0):
        """Waits without answering until the peer closes (counted in
        aborted) or the server stops."""
        s.settimeout(0.1)
        deadline = time.monotonic() + limit
        while not self.stop_ev.is_set() and time.monotonic() < deadline:
            try:
                d = s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                d = b""
            if not d:
                with self.lock:
                    self.aborted += 1
                return

    @staticmethod
    def _chunk(data):
        if isinstance(data, str):
            data = data.encode()
        return b"%x\r\n" % len(data) + data + b"\r\n"

    def handle(self, s):
        req, _ = self.recv_request(s, idle=self.conn_timeout)
        if req is None:
            return
        method, path, headers, body = req.method, req.path, req.headers, req.body
        is_check = path.endswith("/count_tokens")
        is_msg = method == "POST" and path.split("?")[0].endswith("/v1/messages")
        with self.lock:
            self.requests += 1
            if is_msg:
                self.messages += 1
            self.last_body_crc32 = zlib.crc32(body)
            self.last_body_bytes = len(body)
            self.last_headers = headers
            mode = self.mode
            if is_check and self.checks_ok:
                mode = "ok"
            delay = self.delay
        stream = bool(re.search(rb'"stream"\s*:\s*true', body))
        getattr(self, "_m_" + mode)(s, is_check, stream, headers, delay)

    def _send_json(self, s, status, obj, extra=""):
        b = json.dumps(obj).encode()
        s.sendall(("HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                   "x-fake-name: %s\r\n%sconnection: close\r\n\r\n"
                   % (status, len(b), self.name, extra)).encode() + b)

    def _message(self):
        return {"id": "msg_raw", "type": "message", "role": "assistant", "model": "claude-zt-test",
                "content": [{"type": "text", "text": "w0 w1 w2 "}], "stop_reason": "end_turn",
                "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 3}}

    def _sse_head(self):
        return ("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
                "x-fake-name: %s\r\nconnection: close\r\n\r\n" % self.name).encode()

    def _m_ok(self, s, is_check, stream, headers, delay):
        if delay:
            time.sleep(delay)
        if is_check:
            self._send_json(s, 200, {"input_tokens": 5})
        elif stream:
            s.sendall(self._sse_head() + self._chunk(self.SSE_START + self.SSE_CBS + self.SSE_PING)
                      + b"".join(self._chunk(self.SSE_DELTA % i) for i in range(3))
                      + self._chunk(self.SSE_END) + b"0\r\n\r\n")
        else:
            self._send_json(s, 200, self._message())

    def _m_reset(self, s, *a):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def _m_garbage(self, s, *a):
        s.sendall(b"I am not an HTTP server \x00\xff\r\n\r\nat all\r\n")

    def _m_bad_status(self, s, *a):
        s.sendall(b"HTTP/1.1 2x0 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")

    def _m_bare_cr(self, s, *a):
        b = json.dumps(self._message()).encode()
        s.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-evil: a\rb\r\n"
                  b"content-length: %d\r\n\r\n" % len(b) + b)

    def _m_huge_headers(self, s, *a):
        b = json.dumps(self._message()).encode()
        hdrs = b"".join(b"x-filler-%d: %s\r\n" % (i, b"f" * 1000) for i in range(80))
        s.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + hdrs
                  + b"content-length: %d\r\n\r\n" % len(b) + b)

    def _m_partial_cl(self, s, *a):
        s.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4000\r\n\r\n"
                  + json.dumps(self._message()).encode()[:60])
        time.sleep(0.05)

    def _m_partial_chunked(self, s, *a):
        s.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                  + self._chunk(json.dumps(self._message()).encode()[:60]))
        time.sleep(0.05)

    def _m_stall_body(self, s, *a):
        s.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4000\r\n\r\n"
                  + json.dumps(self._message()).encode()[:60])
        self._stall(s)

    def _m_sse_stall_start(self, s, *a):
        s.sendall(self._sse_head() + self._chunk(self.SSE_START) + self._chunk(self.SSE_PING))
        self._stall(s)

    def _m_sse_stall_delta(self, s, *a):
        s.sendall(self._sse_head() + self._chunk(self.SSE_START + self.SSE_CBS + self.SSE_PING)
                  + self._chunk(self.SSE_DELTA % 0))
        self._stall(s)

    def _m_sse_clean_end_after_start(self, s, *a):
        s.sendall(self._sse_head() + self._chunk(self.SSE_START + self.SSE_PING) + b"0\r\n\r\n")

    def _m_sse_clean_end_no_stop(self, s, *a):
        s.sendall(self._sse_head() + self._chunk(self.SSE_START + self.SSE_CBS + self.SSE_PING)
                  + self._chunk(self.SSE_DELTA % 0) + b"0\r\n\r\n")

    def _m_sse_bad_chunk(self, s, *a):
        s.sendall(self._sse_head() + self._chunk(self.SSE_START + self.SSE_CBS + self.SSE_PING)
                  + self._chunk(self.SSE_DELTA % 0))
        time.sleep(0.05)
        s.sendall(b"zz\r\nnot a chunk\r\n")
        time.sleep(0.05)

    def _m_trickle(self, s, is_check, stream, headers, delay):
        b = json.dumps(self._message()).encode()
        s.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                  b"x-fake-name: %s\r\n\r\n" % (len(b), self.name.encode()))
        n = self.trickle_pieces
        step = (len(b) + n - 1) // n
        for i in range(0, len(b), step):
            time.sleep(self.trickle_gap)
            s.sendall(b[i:i + step])

    def _m_ratelimit_reset(self, s, *a):
        reset = _rfc3339(datetime.now(timezone.utc) + timedelta(seconds=self.reset_in_s))
        self._send_json(s, 429, {"type": "error", "error": {"type": "rate_limit_error",
                                                            "message": "slow down"}},
                        "anthropic-ratelimit-requests-limit: 50\r\n"
                        "anthropic-ratelimit-requests-remaining: 0\r\n"
                        "anthropic-ratelimit-requests-reset: %s\r\n"
                        "anthropic-ratelimit-tokens-reset: %s\r\n" % (reset, reset))

    def _m_echo_token_500(self, s, is_check, stream, headers, delay):
        h = dict(headers)
        key = h.get("x-api-key") or h.get("authorization", "")
        self._send_json(s, 500, {"type": "error", "error": {
            "type": "api_error", "message": "internal error for key %s (len %d)" % (key, len(key))}})


# ---------------------------------------------------------------------------
# one client exchange


class Outcome:
    """What a client saw: the response head (or none), the body, how the
    body ended, and for event streams the events with arrival times."""

    def __init__(self):
        self.resp = None
        self.status = None
        self.body = b""
        self.end = None           # complete | eof | truncated | reset | timeout | no-response
        self.events = []          # [(t, name, data)]
        self.t0 = time.monotonic()
        self.t_head = None
        self.t_end = None
        self.marker = None

    @property
    def elapsed(self):
        return (self.t_end or time.monotonic()) - self.t0

    def header(self, name, default=None):
        return self.resp.header(name, default) if self.resp else default

    def names(self):
        return [e[1] for e in self.events]

    def event_json(self, i):
        return json.loads(self.events[i][2])

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def is_sse(self):
        return "text/event-stream" in (self.header("content-type") or "")

    def __repr__(self):
        return ("<Outcome status=%r end=%r elapsed=%.2fs headers=%r events=%r body=%r>"
                % (self.status, self.end, self.elapsed, self.resp.headers if self.resp else None,
                   self.names(), self.body[:400]))


def _sse_blocks(text):
    out = []
    for block in text.split("\n\n"):
        ev, data = None, []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            k, _, v = line.partition(":")
            v = v[1:] if v.startswith(" ") else v
            if k == "event":
                ev = v
            elif k == "data":
                data.append(v)
        if ev is not None or data:
            out.append((ev or "message", "\n".join(data)))
    return out


def exchange(port, stream, body=None, headers=(), timeout=None, marker=True, path="/v1/messages"):
    """POST one Messages request on a fresh connection and read whatever
    comes back until the body's framing is satisfied or the connection
    ends.  Never raises for what the proxy does."""
    o = Outcome()
    timeout = scaled(10) if timeout is None else timeout
    hdrs = [("content-type", "application/json"), ("anthropic-version", "2023-06-01")]
    if stream:
        hdrs.append(("accept", "text/event-stream"))
    hdrs += list(headers)
    if marker:
        o.marker = uuid.uuid4().hex
        hdrs.append(("x-zt-marker", o.marker))
    if body is None:
        body = messages_body(stream=stream)
    c = RawConn(port, timeout=timeout)
    try:
        c.send(build_request("POST", path, hdrs, body))
        try:
            o.resp = c.read_head()
        except (EOFError, ConnectionResetError, BrokenPipeError):
            o.end = "no-response"
            return o
        except socket.timeout:
            o.end = "timeout"
            return o
        o.status = o.resp.status
        o.t_head = time.monotonic()
        pending = b""
        sse = o.is_sse()
        try:
            for t, piece in c.body_pieces(o.resp, "POST"):
                o.body += piece
                if sse:
                    pending = (pending + piece).replace(b"\r\n", b"\n")
                    while b"\n\n" in pending:
                        block, _, pending = pending.partition(b"\n\n")
                        for name, data in _sse_blocks(block.decode("utf-8", "replace")):
                            o.events.append((t, name, data))
            o.end = o.resp.end
        except socket.timeout:
            o.end = "timeout"
        except (ConnectionResetError, BrokenPipeError):
            o.end = "reset"
        except EOFError:
            o.end = "truncated"
        return o
    finally:
        o.t_end = time.monotonic()
        c.close()


# ---------------------------------------------------------------------------


class FaultCase(ZephyrTestCase):
    """Helpers shared by the fault tests."""

    def cluster(self, ups=3, server=None, health=None, token=None, settle_order=True):
        """Starts the upstreams (an int n: n fakes; or a list whose items
        are None for a fake or a RawUpstream) and a proxy with one group of
        them named NAMES[i], preferred in list order.  Returns (proxy, ups)."""
        if isinstance(ups, int):
            ups = [None] * ups
        made = []
        for i, u in enumerate(ups):
            if u is None:
                u = self.start_fake(NAMES[i])
            else:
                self.addCleanup(u.close)
            made.append(u)
        # make the preference order deterministic while the start-up checks measure
        for i, u in enumerate(made):
            if isinstance(u, RawUpstream):
                u.set(delay=i * ORDER_STEP_MS / 1000.0)
            else:
                u.config(latency_ms=i * ORDER_STEP_MS)
        g = {"name": "main", "endpoints": [(NAMES[i], u.url) for i, u in enumerate(made)]}
        env = {}
        if token is not None:
            g["auth_token_env"] = "ZT_TOKEN"
            env["ZT_TOKEN"] = token
            for u in made:
                if not isinstance(u, RawUpstream):
                    u.config(token=token)
        srv = {"connect_timeout_ms": 2000, "header_timeout_ms": 4000, "idle_timeout_ms": 4000}
        srv.update(server or {})
        hc = dict(HEALTH)
        hc.update(health or {})
        # The arranged order is set-up, not the behaviour under test: when
        # scheduling noise on a loaded machine (parallel shards, a first TLS
        # handshake) outweighs ORDER_STEP_MS in the one start-up check, start
        # a fresh proxy and measure again, at most three times.
        for attempt in range(3):
            p = self.start_proxy([g], server=srv, health_check=hc, env=env)
            if not settle_order:
                break
            st = wait_for(lambda: self._ordered(p, len(made)), scaled(15), interval=0.03,
                          desc="every endpoint checked healthy, ep-alpha current")
            lat = [self.ep(st, NAMES[i])["smoothed_latency_ms"] for i in range(len(made))]
            if lat == sorted(lat):
                break
            if attempt == 2:
                self.fail("preference order not as arranged in 3 start-ups: %r" % lat)
            p.stop()
        for u in made:
            if isinstance(u, RawUpstream):
                u.set(delay=0.0)
            else:
                u.config(latency_ms=0)
        return p, made

    def _ordered(self, p, n):
        st = p.status(timeout=3)
        eps = [self.ep(st, NAMES[i]) for i in range(n)]
        if any(e["status"] != "healthy" or e["smoothed_latency_ms"] is None for e in eps):
            return None
        cur = st.get("current_endpoint") or {}
        return st if cur.get("name") == NAMES[0] else None

    @staticmethod
    def ep(status, name):
        for e in status["endpoints"]:
            if e["name"] == name:
                return e
        raise AssertionError("no endpoint %r in /status" % name)

    @staticmethod
    def stats(u):
        return u.stats()

    def messages(self, ups):
        """messages counter of every upstream still running (None for a
        stopped fake)."""
        out = []
        for u in ups:
            if not isinstance(u, RawUpstream) and not u.running():
                out.append(None)
            else:
                out.append(u.stats()["messages"])
        return out

    def assertRouted(self, before, after, expect, what=""):
        """Each upstream's messages counter grew by exactly expect[i]."""
        got = [None if a is None else a - b for b, a in zip(before, after)]
        want = [None if a is None else e for a, e in zip(after, expect)]
        self.assertEqual(got, want, "requests per upstream (%s) %s" % (", ".join(NAMES[:len(got)]), what))

    def assertServed(self, o, by, attempts, stream, deltas=3):
        """A complete, correct reply from upstream `by` after `attempts`."""
        self.assertEqual(o.status, 200, o)
        self.assertEqual(o.header("x-zephyr-endpoint"), by, o)
        self.assertEqual(o.header("x-zephyr-attempts"), str(attempts), o)
        self.assertEqual(o.end, "complete", o)
        if stream:
            names = o.names()
            self.assertTrue(o.is_sse(), o)
            self.assertEqual(names.count("message_start"), 1, "one message_start only: %r" % names)
            self.assertEqual(names[0], "message_start", names)
            self.assertEqual(names[-1], "message_stop", names)
            self.assertNotIn("error", names)
            texts = [json.loads(d)["delta"]["text"] for _, n, d in o.events if n == "content_block_delta"]
            self.assertEqual(texts, ["w%d " % i for i in range(deltas)], names)
        else:
            d = o.json()
            self.assertEqual(d.get("type"), "message", o)
            self.assertTrue(d.get("content"), o)

    def assertReplayed(self, u, o, body):
        """Upstream u received exactly body with the request o."""
        st = u.stats()
        self.assertIn(o.marker, stats_header(st, "x-zt-marker"),
                      "the serving upstream's last request is not the marked one")
        self.assertEqual(st["last_body_bytes"], len(body), "replayed body length")
        self.assertEqual(st["last_body_crc32"], zlib.crc32(body), "replayed body CRC-32")

    def assertClientError(self, o, statuses, types=None):
        self.assertIn(o.status, statuses if isinstance(statuses, (tuple, list)) else (statuses,), o)
        self.assertIn("application/json", o.header("content-type") or "", o)
        self.assertEqual(o.end, "complete", o)
        r = Response(o.status, "", o.resp.headers, o.body)
        self.assertTrue(is_anthropic_error(r), "not an Anthropic-shaped error: %r" % o)
        d = o.json()
        if types is not None:
            self.assertIn(d["error"]["type"], types, o)
        return d

    def assertStreamEndsWithError(self, o, types=("overloaded_error", "api_error")):
        """After bytes went out: the body is a well-formed event stream that
        ends with an error event and a proper end of the chunked body."""
        self.assertEqual(o.status, 200, o)
        self.assertTrue(o.is_sse(), o)
        self.assertEqual(o.end, "complete", "the stream was cut instead of ended: %r" % o)
        self.assertIn("chunked", (o.header("transfer-encoding") or "").lower(), o)
        names = o.names()
        self.assertTrue(names and names[-1] == "error", "last event is not an error: %r" % names)
        self.assertNotIn("message_stop", names)
        d = json.loads(o.events[-1][2])
        self.assertEqual(d.get("type"), "error", d)
        self.assertIn(d["error"]["type"], types, d)
        self.assertTrue(d["error"].get("message"), d)
        return d

    def wait_idle(self, p):
        wait_for(lambda: p.active() == (0, []), scaled(3), desc="no request in flight")

    def assertFailureRecorded(self, p, name, status=("failed",)):
        e = self.ep(p.status(), name)
        self.assertGreaterEqual(e["failures"], 1, "no failure recorded for %s: %r" % (name, e))
        if status:
            self.assertIn(e["status"], status, e)


def both_modes(cls):
    """For every method both_<name>(self, stream), adds test_<name>_json and
    test_<name>_sse."""
    for attr in list(vars(cls)):
        if not attr.startswith("both_"):
            continue
        fn = getattr(cls, attr)
        base = attr[len("both_"):]

        def make(f, stream):
            def t(self):
                f(self, stream)
            t.__doc__ = f.__doc__
            return t
        setattr(cls, "test_%s_json" % base, make(fn, False))
        setattr(cls, "test_%s_sse" % base, make(fn, True))
    return cls


# ---------------------------------------------------------------------------


@both_modes
class FailoverBeforeFirstByte(FaultCase):
    """Nothing has reached the client: the next endpoint serves, the body is
    replayed intact, the failed endpoint is charged."""

    def _failover(self, stream, break_first, ups=3, server=None, expect_attempts=2):
        p, ups = self.cluster(ups, server=server)
        break_first(ups)
        body = body_of(stream)
        before = self.messages(ups)
        o = exchange(p.port, stream, body)
        self.assertServed(o, NAMES[expect_attempts - 1], expect_attempts, stream)
        self.assertReplayed(ups[expect_attempts - 1], o, body)
        self.wait_idle(p)
        return p, ups, before, o

    def both_connection_refused(self, stream):
        def kill(ups):
            ups[0].stop()
        p, ups, before, o = self._failover(stream, kill)
        self.assertRouted(before, self.messages(ups), [None, 1, 0])
        self.assertFailureRecorded(p, NAMES[0])

    def both_reset_before_headers(self, stream):
        p, ups, before, o = self._failover(stream, lambda u: u[0].set(mode="reset"),
                                           ups=[RawUpstream(), None, None])
        self.assertRouted(before, self.messages(ups), [1, 1, 0])
        self.assertFailureRecorded(p, NAMES[0])

    def _status(self, stream, status):
        p, ups, before, o = self._failover(stream, lambda u: u[0].config(status=status))
        self.assertRouted(before, self.messages(ups), [1, 1, 0], "after %d" % status)
        self.assertFailureRecorded(p, NAMES[0])

    def both_status_500(self, stream):
        self._status(stream, 500)

    def both_status_502(self, stream):
        self._status(stream, 502)

    def both_status_503(self, stream):
        self._status(stream, 503)

    def both_status_504(self, stream):
        self._status(stream, 504)

    def both_status_529_overloaded(self, stream):
        # overloaded_retry_in_place_ms defaults to 0: straight to the next endpoint
        self._status(stream, 529)

    def both_hang_before_headers(self, stream):
        t0 = time.monotonic()
        p, ups, before, o = self._failover(stream, lambda u: u[0].config(hang=True),
                                           server={"header_timeout_ms": 1000})
        self.assertGreaterEqual(o.elapsed, 0.9, o)
        self.assertLess(o.elapsed, 1.0 + scaled(2.5), o)
        self.assertRouted(before, self.messages(ups), [1, 1, 0])
        self.assertFailureRecorded(p, NAMES[0])
        # the abandoned upstream request was closed, not left hanging
        wait_for(lambda: ups[0].stats()["active"] == 0, scaled(3),
                 desc="the hanging upstream request to be closed by the proxy")
        self.assertLess(time.monotonic() - t0, 14)

    def both_closed_before_any_content(self, stream):
        """close_after=0: a stream is cut right after message_start (which
        must have been held back); a JSON reply is cut before its headers."""
        p, ups, before, o = self._failover(stream, lambda u: u[0].config(close_after=0))
        got = [a - b for a, b in zip(self.messages(ups), before)]
        # A connection that closes without any answer looks to curl like a
        # stale kept-alive one, which it re-sends once by itself: ep-alpha
        # may see the request twice; it must go nowhere else but ep-bravo.
        self.assertIn(got[0], (1, 2) if not stream else (1,), got)
        self.assertEqual(got[1:], [1, 0], got)
        self.assertFailureRecorded(p, NAMES[0])

    def test_error_event_right_after_message_start_sse(self):
        """A 200 whose stream says overloaded before any content moves to
        another endpoint unseen by the client (hold-back of the opening
        events)."""
        p, ups, before, o = self._failover(True, lambda u: u[0].config(error_after=0))
        self.assertRouted(before, self.messages(ups), [1, 1, 0])

    def test_stall_after_opening_events_fails_over_sse(self):
        """message_start and ping, then silence: the stall watchdog fires
        while the opening events are still held back, so the request moves."""
        srv = {"idle_timeout_ms": 1000, "stream_holdback_ms": 3000}
        p, ups, before, o = self._failover(True, lambda u: u[0].set(mode="sse_stall_start"),
                                           ups=[RawUpstream(), None], server=srv)
        self.assertGreaterEqual(o.elapsed, 0.9, o)
        self.assertLess(o.elapsed, 3.0, "failed over only after the hold-back window: %r" % o)
        self.assertRouted(before, self.messages(ups), [1, 1])
        self.assertFailureRecorded(p, NAMES[0])
        wait_for(lambda: ups[0].stats()["aborted"] == 1, scaled(3),
                 desc="the stalled upstream stream to be closed by the proxy")

    def test_clean_end_right_after_message_start_fails_over_sse(self):
        """A 200 stream that ends properly but with nothing after
        message_start: not a reply, and nothing was sent yet."""
        p, ups, before, o = self._failover(True, lambda u: u[0].set(mode="sse_clean_end_after_start"),
                                           ups=[RawUpstream(), None])
        self.assertRouted(before, self.messages(ups), [1, 1])

    def both_tls_failure(self, stream):
        """An https endpoint whose server does not speak TLS: the handshake
        fails, the request moves on.  (Checks go through the stub CLI here,
        which passes for any endpoint, and the broken endpoint is pinned so
        that it is tried first.)"""
        fa, fb = self.start_fake(NAMES[0]), self.start_fake(NAMES[1])
        g = {"name": "main", "endpoints": [(NAMES[0], "https://127.0.0.1:%d" % fa.port),
                                           (NAMES[1], fb.url)]}
        stub = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "stubs", "claude-stub.sh")
        p = self.start_proxy([g], server={"connect_timeout_ms": 2000, "header_timeout_ms": 4000},
                             health_check={"method": "cli", "claude_binary_path": os.path.abspath(stub),
                                           "interval_seconds": 300, "timeout_seconds": 5})
        wait_for(lambda: all(e["status"] == "healthy" for e in p.status()["endpoints"]), scaled(5),
                 desc="both endpoints checked healthy by the stub CLI")
        st, d = p.admin("pin", {"endpoint": NAMES[0]})
        self.assertEqual(st, 200, d)
        body = body_of(stream)
        before = [fa.stats()["messages"], fb.stats()["messages"]]
        o = exchange(p.port, stream, body)
        self.assertServed(o, NAMES[1], 2, stream)
        self.assertReplayed(fb, o, body)
        self.assertEqual([fa.stats()["messages"] - before[0], fb.stats()["messages"] - before[1]], [0, 1])
        self.assertFailureRecorded(p, NAMES[0])

    def _malformed(self, stream, mode):
        p, ups, before, o = self._failover(stream, lambda u: u[0].set(mode=mode),
                                           ups=[RawUpstream(), None, None])
        self.assertRouted(before, self.messages(ups), [1, 1, 0], mode)
        self.assertFailureRecorded(p, NAMES[0])
        # nothing of the malformed answer reached the client
        self.assertNotIn("x-evil", [k for k, _ in o.resp.headers])
        self.assertNotIn("x-filler-1", [k for k, _ in o.resp.headers])

    def both_malformed_garbage(self, stream):
        self._malformed(stream, "garbage")

    def both_malformed_status_line(self, stream):
        self._malformed(stream, "bad_status")

    def both_malformed_bare_cr_in_header(self, stream):
        self._malformed(stream, "bare_cr")

    def both_malformed_oversized_header_block(self, stream):
        self._malformed(stream, "huge_headers")

    def both_two_failures_then_success(self, stream):
        """502 on the first, reset on the second, the third serves: three
        attempts, the body replayed twice."""
        def brk(ups):
            ups[0].config(status=502)
            ups[1].set(mode="reset")
        p, ups, before, o = self._failover(stream, brk, ups=[None, RawUpstream(), None],
                                           expect_attempts=3)
        self.assertRouted(before, self.messages(ups), [1, 1, 1])
        self.assertFailureRecorded(p, NAMES[0])
        self.assertFailureRecorded(p, NAMES[1])

    def test_body_near_the_cap_replayed_intact(self):
        """A body of almost max_body_mb, sent chunked in odd pieces, reaches
        the second endpoint byte for byte."""
        p, ups = self.cluster(2, server={"max_body_mb": 4})
        ups[0].config(status=503)
        body = body_of(False, size=4 * MB - 64 * 1024, seed=7)
        self.assertLess(len(body), 4 * MB)
        marker = uuid.uuid4().hex
        c = self.raw(p.port, timeout=scaled(15))
        hdrs = [("content-type", "application/json"), ("transfer-encoding", "chunked"),
                ("x-zt-marker", marker)]
        data = build_request("POST", "/v1/messages", hdrs) + chunked(body, [1, 4093, 65536, 7, 300000])
        for i in range(0, len(data), 99991):
            c.send(data[i:i + 99991])
        r = c.read_response("POST")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-zephyr-endpoint"), NAMES[1], r)
        self.assertEqual(r.header("x-zephyr-attempts"), "2", r)
        st = ups[1].stats()
        self.assertIn(marker, stats_header(st, "x-zt-marker"))
        self.assertEqual(st["last_body_bytes"], len(body))
        self.assertEqual(st["last_body_crc32"], zlib.crc32(body))

    def both_success_headers_on_first_attempt(self, stream):
        p, ups = self.cluster(2)
        before = self.messages(ups)
        o = exchange(p.port, stream)
        self.assertServed(o, NAMES[0], 1, stream)
        self.assertRouted(before, self.messages(ups), [1, 0])

    def test_holdback_window_releases_opening_events_sse(self):
        """The opening events are held at most stream_holdback_ms when no
        content follows: a slow first token is not a failure."""
        p, ups = self.cluster(2, server={"stream_holdback_ms": 300, "idle_timeout_ms": 5000})
        ups[0].config(gap_ms=2500, events=1)
        c = self.raw(p.port, timeout=scaled(10))
        t0 = time.monotonic()
        c.send(build_request("POST", "/v1/messages", [("content-type", "application/json")],
                             messages_body(stream=True)))
        head = c.read_head()
        self.assertEqual(head.status, 200, head)
        first = b""
        pieces = c.body_pieces(head, "POST")
        for _, piece in pieces:
            first += piece
            if b"\n\n" in first:
                break
        t_first = time.monotonic() - t0
        self.assertIn(b"message_start", first)
        self.assertLess(t_first, 0.3 + scaled(0.9),
                        "message_start held %.2fs, beyond the 300 ms window" % t_first)
        rest = b"".join(piece for _, piece in pieces)
        self.assertEqual(head.end, "complete")
        self.assertIn(b"message_stop", first + rest)
        self.assertEqual(head.header("x-zephyr-endpoint"), NAMES[0])


# ---------------------------------------------------------------------------


@both_modes
class RateLimits(FaultCase):

    def both_429_rests_endpoint_and_moves_on(self, stream):
        p, ups = self.cluster(2)
        ups[0].config(status=429, retry_after=30)
        before = self.messages(ups)
        body = body_of(stream)
        o = exchange(p.port, stream, body)
        self.assertServed(o, NAMES[1], 2, stream)
        self.assertReplayed(ups[1], o, body)
        # the endpoint rests: the next requests go straight to the other one
        for _ in range(3):
            o2 = exchange(p.port, stream)
            self.assertServed(o2, NAMES[1], 1, stream)
        self.assertRouted(before, self.messages(ups), [1, 4])
        e = self.ep(p.status(), NAMES[0])
        self.assertFalse(e["available"], e)
        self.assertNotEqual(e["status"], "auth_failed", e)

    def both_all_rate_limited_429_with_retry_after(self, stream):
        p, ups = self.cluster(2)
        for u in ups:
            u.config(status=429, retry_after=20)
        before = self.messages(ups)
        o = exchange(p.port, stream)
        d = self.assertClientError(o, 429, ("rate_limit_error",))
        ra = o.header("retry-after")
        self.assertIsNotNone(ra, "no retry-after on the final 429: %r" % o)
        self.assertTrue(15 <= int(ra) <= 21, "retry-after %r, the endpoints rest 20 s" % ra)
        self.assertIn("until", d["error"]["message"].lower(), "the message should say until when: %r" % d)
        self.assertRouted(before, self.messages(ups), [1, 1])
        # while they rest, nothing is sent upstream and the answer is the same
        o2 = exchange(p.port, stream)
        d2 = self.assertClientError(o2, 429, ("rate_limit_error",))
        self.assertTrue(o2.header("retry-after") and 14 <= int(o2.header("retry-after")) <= 21, o2)
        self.assertIn("until", d2["error"]["message"].lower(), d2)
        self.assertRouted(before, self.messages(ups), [1, 1], "while every endpoint rests")

    def test_ratelimit_reset_headers_honoured(self):
        """429 without retry-after but with anthropic-ratelimit-*-reset 20 s
        ahead: the endpoints rest that long (not a 5 s default)."""
        ra, rb = RawUpstream("ra", "ratelimit_reset"), RawUpstream("rb", "ratelimit_reset")
        for u in (ra, rb):
            u.set(checks_ok=True)
        p, ups = self.cluster([ra, rb])
        o = exchange(p.port, False)
        self.assertClientError(o, 429, ("rate_limit_error",))
        v = o.header("retry-after")
        self.assertIsNotNone(v, o)
        self.assertTrue(14 <= int(v) <= 21, "retry-after %r for resets 20 s ahead" % v)
        self.assertEqual([ra.stats()["messages"], rb.stats()["messages"]], [1, 1])

    def test_529_short_retry_in_place_then_elsewhere(self):
        p, ups = self.cluster(2, server={"overloaded_retry_in_place_ms": 200})
        ups[0].config(status=529)
        before = self.messages(ups)
        o = exchange(p.port, False)
        self.assertEqual(o.header("x-zephyr-endpoint"), NAMES[1], o)
        self.assertServed(o, NAMES[1], int(o.header("x-zephyr-attempts") or 0), False)
        got = [a - b for a, b in zip(self.messages(ups), before)]
        self.assertIn(got[0], (1, 2), "in-place retries on the overloaded endpoint: %r" % got)
        self.assertEqual(got[1], 1)


# ---------------------------------------------------------------------------


def token_fragments(token, n=8):
    return {token[i:i + n] for i in range(0, len(token) - n + 1)}


@both_modes
class AuthAndClientErrors(FaultCase):

    def assertNoToken(self, token, *texts):
        frags = token_fragments(token)
        for t in texts:
            if isinstance(t, bytes):
                t = t.decode("utf-8", "replace")
            for f in frags:
                self.assertNotIn(f, t, "a piece of the token (%r) is shown" % f)

    def _auth(self, stream, status):
        token = "sk-zt-" + secrets.token_hex(16)
        p, ups = self.cluster(2, token=token)
        if status == 401:
            ups[0].config(token="sk-other-" + secrets.token_hex(8))
        else:
            ups[0].config(status=403)
        before = self.messages(ups)
        o = exchange(p.port, stream)
        self.assertClientError(o, status)
        self.assertRouted(before, self.messages(ups), [1, 0], "a refused token is not retried")
        e = self.ep(p.status(), NAMES[0])
        self.assertEqual(e["status"], "auth_failed", e)
        self.assertFalse(e["available"], e)
        # traffic goes elsewhere now
        o2 = exchange(p.port, stream)
        self.assertServed(o2, NAMES[1], 1, stream)
        # it stays out, whatever re-checks run, until a check passes
        n = self.ep(p.status(), NAMES[0])["checks"]
        self.assertEqual(p.admin("check")[0], 200)
        wait_for(lambda: (lambda st: not st["checks"]["running"] and self.ep(st, NAMES[0])["checks"] > n)(
            p.status()), scaled(5), desc="a re-check of the refused endpoint to finish")
        e = self.ep(p.status(), NAMES[0])
        self.assertEqual(e["status"], "auth_failed", "re-enabled without a passing check: %r" % e)
        if status == 401:
            ups[0].config(token=token)
        else:
            ups[0].config(status=200)
        self.assertEqual(p.admin("check")[0], 200)
        wait_for(lambda: self.ep(p.status(), NAMES[0])["status"] == "healthy", scaled(5),
                 desc="the endpoint healthy after a passing check")
        self.assertNoToken(token, o.body, o2.body, json.dumps(p.status()), p.stderr_text())

    def both_401_token_refused(self, stream):
        self._auth(stream, 401)

    def both_403_token_refused(self, stream):
        self._auth(stream, 403)

    def _client_error(self, stream, status):
        p, ups = self.cluster(2)
        before = self.messages(ups)
        o = exchange(p.port, stream, headers=fake_headers(status=status))
        self.assertClientError(o, status)
        self.assertEqual(o.header("x-zephyr-attempts"), "1", o)
        self.assertEqual(o.header("x-zephyr-endpoint"), NAMES[0], o)
        self.assertRouted(before, self.messages(ups), [1, 0], "a %d is never retried" % status)
        e = self.ep(p.status(), NAMES[0])
        self.assertEqual(e["status"], "healthy", e)
        self.assertEqual(e["failures"], 0, e)

    def both_client_error_400_returned_as_is(self, stream):
        self._client_error(stream, 400)

    def both_client_error_404_returned_as_is(self, stream):
        self._client_error(stream, 404)

    def both_client_error_413_returned_as_is(self, stream):
        self._client_error(stream, 413)

    def both_client_error_422_returned_as_is(self, stream):
        self._client_error(stream, 422)


# ---------------------------------------------------------------------------


class AfterFirstByte(FaultCase):
    """Bytes went to the client: no failover; the break is made visible."""

    def test_close_mid_stream_ends_with_error_event_sse(self):
        p, ups = self.cluster(2)
        ups[0].config(close_after=2)
        before = self.messages(ups)
        o = exchange(p.port, True)
        self.assertStreamEndsWithError(o)
        texts = [json.loads(d)["delta"]["text"] for _, n, d in o.events if n == "content_block_delta"]
        self.assertEqual(texts, ["w0 ", "w1 "])
        self.assertRouted(before, self.messages(ups), [1, 0], "no retry after bytes went out")
        self.assertFailureRecorded(p, NAMES[0])
        self.wait_idle(p)

    def test_error_event_mid_stream_reaches_client_sse(self):
        p, ups = self.cluster(2)
        ups[0].config(error_after=2)
        before = self.messages(ups)
        o = exchange(p.port, True)
        d = self.assertStreamEndsWithError(o, ("overloaded_error",))
        self.assertRouted(before, self.messages(ups), [1, 0])
        self.assertTrue(d["error"]["message"])
        self.wait_idle(p)

    def test_stall_mid_stream_ends_with_error_event_sse(self):
        p, ups = self.cluster([RawUpstream(), None], server={"idle_timeout_ms": 1000})
        ups[0].set(mode="sse_stall_delta")
        before = self.messages(ups)
        o = exchange(p.port, True)
        self.assertStreamEndsWithError(o)
        self.assertIn("content_block_delta", o.names())
        self.assertGreaterEqual(o.elapsed, 0.9, o)
        self.assertLess(o.elapsed, 1.0 + scaled(2), o)
        self.assertRouted(before, self.messages(ups), [1, 0])
        self.assertFailureRecorded(p, NAMES[0])
        wait_for(lambda: ups[0].stats()["aborted"] == 1, scaled(3),
                 desc="the stalled upstream stream to be closed by the proxy")
        self.wait_idle(p)

    def test_clean_end_without_message_stop_ends_with_error_event_sse(self):
        """Content went out, then the upstream ended its stream properly but
        without message_stop: the client must not take it for a complete
        reply."""
        p, ups = self.cluster([RawUpstream(), None])
        ups[0].set(mode="sse_clean_end_no_stop")
        before = self.messages(ups)
        o = exchange(p.port, True)
        self.assertStreamEndsWithError(o)
        self.assertIn("content_block_delta", o.names())
        self.assertRouted(before, self.messages(ups), [1, 0])
        self.wait_idle(p)

    def test_malformed_chunking_mid_stream_ends_with_error_event_sse(self):
        p, ups = self.cluster([RawUpstream(), None])
        ups[0].set(mode="sse_bad_chunk")
        before = self.messages(ups)
        o = exchange(p.port, True)
        self.assertStreamEndsWithError(o)
        self.assertIn("content_block_delta", o.names())
        self.assertNotIn(b"not a chunk", o.body)
        self.assertRouted(before, self.messages(ups), [1, 0])
        self.assertFailureRecorded(p, NAMES[0])
        self.wait_idle(p)

    def test_stall_after_released_opening_events_ends_with_error_event_sse(self):
        """The hold-back window passed (the client has message_start), then
        silence: the watchdog ends the stream with an error event."""
        p, ups = self.cluster(2, server={"idle_timeout_ms": 1500, "stream_holdback_ms": 300})
        ups[0].config(gap_ms=6000, events=1)
        before = self.messages(ups)
        o = exchange(p.port, True)
        self.assertStreamEndsWithError(o)
        self.assertEqual(o.names()[0], "message_start")
        self.assertLess(o.elapsed, 1.5 + scaled(2), o)
        self.assertRouted(before, self.messages(ups), [1, 0])
        self.assertFailureRecorded(p, NAMES[0])
        self.wait_idle(p)

    def _json_break(self, mode, server=None, max_elapsed=None):
        p, ups = self.cluster([RawUpstream(), None], server=server)
        ups[0].set(mode=mode)
        before = self.messages(ups)
        o = exchange(p.port, False)
        self.assertEqual(o.status, 200, o)
        self.assertEqual(o.header("x-zephyr-endpoint"), NAMES[0], o)
        self.assertIn(o.end, ("truncated", "reset"),
                      "a broken JSON reply must not look complete: %r" % o)
        self.assertRaises(ValueError, json.loads, o.body.decode("utf-8", "replace"))
        if max_elapsed is not None:
            self.assertLess(o.elapsed, max_elapsed, o)
        self.assertRouted(before, self.messages(ups), [1, 0])
        self.assertFailureRecorded(p, NAMES[0])
        self.wait_idle(p)
        return ups

    def test_json_cut_short_of_content_length(self):
        self._json_break("partial_cl")

    def test_json_chunked_cut_without_last_chunk(self):
        self._json_break("partial_chunked")

    def test_json_stalled_mid_body(self):
        ups = self._json_break("stall_body", server={"idle_timeout_ms": 1000},
                               max_elapsed=1.0 + scaled(2))
        wait_for(lambda: ups[0].stats()["aborted"] == 1, scaled(3),
                 desc="the stalled upstream reply to be closed by the proxy")

    def test_slow_trickle_below_idle_timeout_succeeds_sse(self):
        p, ups = self.cluster(2, server={"idle_timeout_ms": 1500, "stream_holdback_ms": 300})
        ups[0].config(gap_ms=900, events=3)
        before = self.messages(ups)
        o = exchange(p.port, True)
        self.assertServed(o, NAMES[0], 1, True)
        self.assertGreater(o.elapsed, 2.5)
        self.assertRouted(before, self.messages(ups), [1, 0])
        self.assertEqual(self.ep(p.status(), NAMES[0])["failures"], 0)

    def test_slow_trickle_below_idle_timeout_succeeds_json(self):
        p, ups = self.cluster([RawUpstream(), None], server={"idle_timeout_ms": 1500})
        ups[0].set(mode="trickle", trickle_pieces=3, trickle_gap=0.9)
        before = self.messages(ups)
        o = exchange(p.port, False)
        self.assertServed(o, NAMES[0], 1, False)
        self.assertGreater(o.elapsed, 2.5)
        self.assertRouted(before, self.messages(ups), [1, 0])
        self.assertEqual(self.ep(p.status(), NAMES[0])["failures"], 0)

    def test_slow_headers_below_header_timeout_succeed_json(self):
        p, ups = self.cluster(2, server={"header_timeout_ms": 1500})
        ups[0].config(latency_ms=900)
        before = self.messages(ups)
        o = exchange(p.port, False)
        self.assertServed(o, NAMES[0], 1, False)
        self.assertRouted(before, self.messages(ups), [1, 0])


# ---------------------------------------------------------------------------


@both_modes
class EveryEndpointFails(FaultCase):

    def assertNamesEndpoints(self, d, names):
        msg = d["error"]["message"]
        for n in names:
            self.assertIn(n, msg, "the error should name every endpoint tried: %r" % msg)

    def both_all_endpoints_5xx(self, stream):
        """Every endpoint answers 503: the client gets 529 overloaded_error
        with Retry-After (issue 11: one answer, 529, while the cause is
        overload), and so does the next client (docs/DESIGN.md, "Failover
        before the first byte")."""
        p, ups = self.cluster(3)
        for u in ups:
            u.config(status=503)
        before = self.messages(ups)
        o = exchange(p.port, stream)
        d = self.assertClientError(o, 529, ("overloaded_error",))
        self.assertEqual(o.header("retry-after"), "5", o)
        self.assertNamesEndpoints(d, NAMES)
        self.assertRouted(before, self.messages(ups), [1, 1, 1])
        self.wait_idle(p)
        o2 = exchange(p.port, stream)
        self.assertClientError(o2, 529, ("overloaded_error",))
        self.assertEqual(o2.header("retry-after"), "5", o2)

    def both_all_endpoints_refused(self, stream):
        p, ups = self.cluster(2)
        for u in ups:
            u.stop()
        o = exchange(p.port, stream)
        d = self.assertClientError(o, 502, ("api_error",))
        self.assertNamesEndpoints(d, NAMES[:2])
        self.assertLess(o.elapsed, scaled(3), o)
        self.wait_idle(p)

    def both_all_endpoints_hang(self, stream):
        p, ups = self.cluster(2, server={"header_timeout_ms": 800})
        for u in ups:
            u.config(hang=True)
        o = exchange(p.port, stream)
        d = self.assertClientError(o, 504, ("timeout_error",))
        self.assertNamesEndpoints(d, NAMES[:2])
        self.assertGreaterEqual(o.elapsed, 1.5, o)
        self.assertLess(o.elapsed, 1.6 + scaled(2), o)
        self.wait_idle(p)

    def test_max_attempts_bounds_the_tries(self):
        p, ups = self.cluster(3, server={"max_attempts": 2})
        for u in ups:
            u.config(status=500)
        before = self.messages(ups)
        o = exchange(p.port, False)
        self.assertClientError(o, 502, ("api_error",))
        self.assertRouted(before, self.messages(ups), [1, 1, 0], "max_attempts = 2")

    def test_retry_budget_bounds_the_total_time(self):
        p, ups = self.cluster(3, server={"header_timeout_ms": 1000, "retry_budget_ms": 1200})
        for u in ups:
            u.config(hang=True)
        before = self.messages(ups)
        o = exchange(p.port, False)
        self.assertClientError(o, 504, ("timeout_error",))
        self.assertGreaterEqual(o.elapsed, 0.9, o)
        self.assertLess(o.elapsed, 2.0 + scaled(0.4), "gave up after %.2fs with a 1.2 s budget" % o.elapsed)
        self.assertRouted(before, self.messages(ups), [1, 1, 0], "no attempt after the budget")
        self.wait_idle(p)


# ---------------------------------------------------------------------------


class CircuitBreaker(FaultCase):
    HC = {"failed_interval_seconds": 1}

    def _open(self, p, ups):
        """Breaks ep-alpha and waits until its circuit opens; returns the
        endpoint's /status entry at that moment."""
        ups[0].config(status=500)
        o = exchange(p.port, False)
        self.assertServed(o, NAMES[1], 2, False)
        return wait_for(lambda: (lambda e: e if e["circuit"] == "open" else None)(
            self.ep(p.status(), NAMES[0])), scaled(6), interval=0.05,
            desc="ep-alpha's circuit to open after repeated failures")

    def _reopened(self, p, longer_than):
        """Waits for ep-alpha's circuit to be open again with a back-off
        longer than the last one; returns its /status entry."""
        def cond():
            e = self.ep(p.status(), NAMES[0])
            return e if e["circuit"] == "open" and (e["circuit_retry_in_s"] or 0) > longer_than else None
        return wait_for(cond, longer_than + scaled(4), interval=0.05,
                        desc="a failed trial to re-open the circuit for longer than %.1f s" % longer_than)

    def test_circuit_opens_holds_traffic_and_backs_off_longer(self):
        """Three failures in a row open the circuit; while it is open the
        endpoint gets nothing (requests go elsewhere, checks wait); when the
        back-off runs out one trial is let through, and its failure opens
        the circuit again for longer, twice over."""
        p, ups = self.cluster(2, health=self.HC)
        t0 = time.monotonic()
        e = self._open(p, ups)
        backoffs = []
        for k in range(3):
            r = e["circuit_retry_in_s"]
            self.assertIsNotNone(r, e)
            self.assertTrue(0 < r <= 5.5, "back-off %r s" % r)
            if backoffs:
                self.assertGreater(r, backoffs[-1] * 1.5, "the back-off did not grow: %r then %r" % (backoffs, r))
            backoffs.append(r)
            seen = ups[0].stats()["requests"]
            if k == 0:
                for _ in range(3):
                    self.assertServed(exchange(p.port, False), NAMES[1], 1, False)
            time.sleep(max(0.0, r - 0.4))
            self.assertEqual(ups[0].stats()["requests"], seen,
                             "ep-alpha got traffic while its circuit was open (opening %d)" % (k + 1))
            if k < 2:
                e = self._reopened(p, r + 0.2)
                self.assertEqual(ups[0].stats()["requests"] - seen, 1,
                                 "not exactly one trial between openings %d and %d" % (k + 1, k + 2))
        self.assertLess(time.monotonic() - t0, 13)

    def test_circuit_trial_success_closes_it(self):
        p, ups = self.cluster(2, health=self.HC)
        e = self._open(p, ups)
        ups[0].config(status=200)
        st = self.ep(p.status(), NAMES[0])
        self.assertIn(st["circuit"], ("open", "half_open"), st)
        e = wait_for(lambda: (lambda x: x if x["circuit"] == "closed" else None)(
            self.ep(p.status(), NAMES[0])), (e["circuit_retry_in_s"] or 5) + scaled(4), interval=0.05,
            desc="a passing trial to close the circuit")
        self.assertIsNone(e["circuit_retry_in_s"], e)
        self.assertEqual(e["status"], "healthy", e)
        self.assertTrue(e["available"], e)


# ---------------------------------------------------------------------------


class ClientSide(FaultCase):
    """Limits on what clients send, the access key, and secrets."""

    def _bad(self, p, data, status, fake, closes=True):
        before = fake.stats()["messages"]
        c = self.raw(p.port, timeout=scaled(5))
        try:
            c.send(data)
        except OSError:
            pass  # the proxy may answer and close before all of a refused request is sent
        r = c.read_response("POST")
        self.assertAnthropicError(r, status)
        if closes:
            self.assertTrue(c.closed_by_peer(scaled(2)), "connection left open after a %d" % status)
        c.close()
        self.assertEqual(fake.stats()["messages"], before, "a rejected request reached the upstream")
        return r

    def test_414_request_target_too_long(self):
        fake = self.start_fake()
        p = self.proxy_for(fake, health_check=HEALTH)
        self._bad(p, build_request("POST", "/v1/messages?x=" + "a" * 9000,
                                   [("content-type", "application/json")], messages_body()), 414, fake)
        self.assertEqual(http_request(p.port, "GET", "/health").status, 200)

    def test_431_too_many_headers(self):
        fake = self.start_fake()
        p = self.proxy_for(fake, health_check=HEALTH)
        hdrs = [("x-h-%d" % i, "v") for i in range(250)]
        self._bad(p, build_request("POST", "/v1/messages", hdrs, messages_body()), 431, fake)

    def test_malformed_framing_400_and_nothing_upstream(self):
        fake = self.start_fake()
        p = self.proxy_for(fake, health_check=HEALTH)
        body = messages_body()
        cases = {
            "content-length and chunked":
                b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body, [50]),
            "two different content-lengths":
                b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\nContent-Length: 5\r\n\r\n"
                % len(body) + body,
            "bad chunk size":
                b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
            "absolute-form target":
                b"POST http://evil.example/v1/messages HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}",
            "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "negative content-length":
                b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nContent-Length: -1\r\n\r\n{}",
        }
        for name, data in cases.items():
            with self.subTest(name):
                self._bad(p, data, 400, fake)
        # obs-fold: unfolded (RFC 9112 5.2; docs/DESIGN.md), so no line break goes upstream
        for fold in (b" ", b"\t"):
            with self.subTest("folded header", fold=fold):
                c = self.raw(p.port, timeout=scaled(5))
                c.send(b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nX-A: one\r\n" + fold + b"two\r\n"
                       b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                r = c.read_response("POST")
                self.assertEqual(r.status, 200, r)
                vals = stats_header(fake.stats(), "x-a")
                self.assertEqual(len(vals), 1, vals)
                self.assertNotRegex(vals[0], r"[\r\n]", vals)
                self.assertRegex(vals[0], r"^one[ \t]+two$", vals)
                c.close()
        self.assertEqual(http_request(p.port, "GET", "/health").status, 200)

    def test_names_in_every_connection_header_are_hop_by_hop(self):
        """A header named in any Connection header (there may be several
        lines) is not forwarded (RFC 9110 7.6.1)."""
        fake = self.start_fake()
        p = self.proxy_for(fake, health_check=HEALTH)
        c = self.raw(p.port, timeout=scaled(5))
        c.send(build_request("POST", "/v1/messages",
                             [("content-type", "application/json"), ("connection", "keep-alive"),
                              ("connection", "x-hop-one"), ("connection", "te, x-hop-two"),
                              ("x-hop-one", "secret-1"), ("x-hop-two", "secret-2"), ("x-keep", "yes")],
                             messages_body()))
        r = c.read_response("POST")
        self.assertEqual(r.status, 200, r)
        st = fake.stats()
        self.assertEqual(stats_header(st, "x-keep"), ["yes"])
        self.assertEqual(stats_header(st, "x-hop-one") + stats_header(st, "x-hop-two"), [],
                         "headers named in Connection forwarded: %r" % st["last_headers"])
        self.assertEqual(stats_header(st, "connection"), [])

    def test_chunked_request_trailers_are_safe(self):
        """Trailer fields after a chunked body are not headers: the request is
        forwarded with its real headers intact and the trailers dropped
        (docs/DESIGN.md: request trailers are ignored), and the proxy survives.  (Regression: conn.c appended trailers to the header
        buffer after the header views were taken, a use-after-free.)"""
        fake = self.start_fake()
        p = self.proxy_for(fake, health_check=HEALTH)
        body = messages_body()
        marker = uuid.uuid4().hex
        for trailer_len in (10, 5000, 60000):
            with self.subTest(trailer_len=trailer_len):
                c = self.raw(p.port, timeout=scaled(5))
                c.send(b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                       b"X-Claude-Code-Session-Id: sess-1\r\nX-Zt-Marker: " + marker.encode() + b"\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body, [40])[:-2]
                       + b"X-Trailer: " + b"t" * trailer_len + b"\r\n\r\n")
                r = c.read_response("POST")
                self.assertEqual(r.status, 200, r)
                st = fake.stats()
                self.assertEqual(stats_header(st, "x-zt-marker"), [marker])
                self.assertEqual(stats_header(st, "x-claude-code-session-id"), ["sess-1"])
                self.assertEqual(stats_header(st, "x-trailer"), [])
                self.assertEqual(st["last_body_crc32"], zlib.crc32(body))
                c.close()
        self.assertEqual(http_request(p.port, "GET", "/health").status, 200)

    def test_client_reset_mid_stream_is_survived(self):
        """Clients that reset (RST) while a fast stream is being relayed: the
        write that fails happens inside curl's write callback, and the
        request must not be torn down under curl's feet.  (Regression:
        conn_send3 -> conn_close -> client_gone -> preq_finish ->
        curl_easy_cleanup from inside on_body crashed the proxy in libcurl.)"""
        fake = self.start_fake()
        p = self.proxy_for(fake, health_check=HEALTH)
        body = messages_body(stream=True)
        for i in range(25):
            s = socket.create_connection(("127.0.0.1", p.port), timeout=scaled(5))
            try:
                s.sendall(build_request("POST", "/v1/messages", [("content-type", "application/json")]
                                        + fake_headers(events=20000), body))
                got = 0
                while got < 20000 + i * 997:
                    d = s.recv(65536)
                    if not d:
                        break
                    got += len(d)
            except OSError as e:
                self.fail("stream %d broken from the proxy's side: %r (proxy running: %s)"
                          % (i, e, p.running()))
            finally:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
            self.assertTrue(p.running(), "the proxy died after %d client resets" % (i + 1))
        self.assertEqual(http_request(p.port, "GET", "/health").status, 200)
        wait_for(lambda: p.active() == (0, []), scaled(3), desc="no request in flight")
        wait_for(lambda: fake.stats()["active"] == 0, scaled(3), desc="upstream streams closed")

    def test_upgrade_request_then_more_bytes(self):
        """A request with Connection: Upgrade is served as a plain one, and
        what the client sends after it is a new request.  (Regression:
        llhttp's upgrade pause was taken for a second message and an empty
        request was dispatched: a NULL target crashed the proxy.)"""
        fake = self.start_fake()
        p = self.proxy_for(fake, health_check=HEALTH)
        # docs/DESIGN.md: an Upgrade request is served as a plain one, so what
        # follows is the next request: a good one is answered, garbage gets
        # 400 and the connection closes.
        for follow, status in ((b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n", 200),
                               (b"\x00\x01garbage\r\n\r\n", 400)):
            with self.subTest(follow=follow[:12]):
                c = self.raw(p.port, timeout=scaled(5))
                c.send(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
                r = c.read_response("GET")
                self.assertEqual(r.status, 200, r)
                c.send(follow)
                r2 = c.read_response("GET")
                self.assertEqual(r2.status, status, r2)
                if status == 400:
                    self.assertAnthropicError(r2, 400)
                    self.assertTrue(c.closed_by_peer(scaled(2)), "connection left open after a 400")
                c.close()
                self.assertEqual(http_request(p.port, "GET", "/health").status, 200,
                                 "the proxy stopped answering after bytes followed an Upgrade request")
        # the same through the proxied path
        c = self.raw(p.port, timeout=scaled(5))
        c.send(build_request("POST", "/v1/messages", [("content-type", "application/json"),
                                                      ("connection", "upgrade"), ("upgrade", "h2c")],
                             messages_body()) + build_request("GET", "/health"))
        r = c.read_response("POST")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(stats_header(fake.stats(), "upgrade"), [], "Upgrade forwarded upstream")
        r2 = c.read_response("GET")
        self.assertEqual(r2.status, 200, r2)
        self.assertEqual(http_request(p.port, "GET", "/health").status, 200)

    def test_slow_header_sender_dropped_at_deadline(self):
        """A client trickling its headers does not extend the deadline."""
        fake = self.start_fake()
        p = self.proxy_for(fake, server={"client_header_timeout_ms": 1000}, health_check=HEALTH)
        c = self.raw(p.port, timeout=scaled(5))
        data = build_request("POST", "/v1/messages", [("x-pad", "p" * 60)], messages_body())
        t0 = time.monotonic()
        closed = False
        for i in range(len(data)):
            try:
                c.send(data[i:i + 1])
            except OSError:
                closed = True
                break
            if time.monotonic() - t0 > 3.5:
                break
            time.sleep(0.02)
            if i % 10 == 0 and c.closed_by_peer(0.001):
                closed = True
                break
        took = time.monotonic() - t0
        self.assertTrue(closed or c.closed_by_peer(scaled(2)), "a slowloris client was kept")
        self.assertLess(took, 1.0 + scaled(1.5), "dropped after %.2fs" % took)
        self.assertEqual(fake.stats()["messages"], 0)

    def test_max_connections_503_with_retry_after(self):
        fake = self.start_fake()
        p = self.proxy_for(fake, server={"max_connections": 4}, health_check=HEALTH)
        # Fill the four slots with kept-alive connections, each proven
        # accepted by a request.  A connection the proxy is still closing
        # (one /status of settle(), say) may hold a slot a moment longer:
        # then a connection is refused with 503 and tried again.
        held = []
        deadline = time.monotonic() + scaled(5)
        while len(held) < 4:
            c = self.raw(p.port, timeout=scaled(5))
            c.send(build_request("GET", "/health"))
            r = c.read_response("GET")
            if r.status == 503 and time.monotonic() < deadline:
                c.close()
                time.sleep(0.1)
                continue
            self.assertEqual(r.status, 200, r)
            held.append(c)
        extra = self.raw(p.port, timeout=scaled(5))
        try:
            r = extra.read_response("GET")
        except (socket.timeout, EOFError, OSError) as e:
            self.fail("no 503 for the connection over max_connections (%r); proxy log:\n%s"
                      % (e, p.stderr_text()[-3000:]))
        self.assertAnthropicError(r, 503)
        self.assertIsNotNone(r.header("retry-after"), r)
        self.assertTrue(extra.closed_by_peer(scaled(2)))
        for c in held:
            c.close()
        wait_for(lambda: http_request(p.port, "GET", "/health").status == 200, scaled(3),
                 desc="service after the held connections closed")
        o = exchange(p.port, False)
        self.assertEqual(o.status, 200, o)

    def _access_proxy(self, token=None):
        key = "zk-" + secrets.token_hex(16)
        fake = self.start_fake()
        env = {"ZT_ACCESS": key}
        g = {"name": "main", "endpoints": [("ep-alpha", fake.url)]}
        if token:
            g["auth_token_env"] = "ZT_TOKEN"
            env["ZT_TOKEN"] = token
            fake.config(token=token)
        p = self.start_proxy([g], server={"access_key_env": "ZT_ACCESS"}, health_check=HEALTH, env=env)
        return p, fake, key

    def assertNotForwarded(self, fake, secret):
        st = fake.stats()
        self.assertEqual(stats_header(st, "x-zephyr-key"), [], st["last_headers"])
        for k, v in st["last_headers"]:
            for f in token_fragments(secret):
                self.assertNotIn(f, v, "the access key reached the upstream in %s" % k)

    def test_access_key_required_and_never_forwarded(self):
        p, fake, key = self._access_proxy()
        o = exchange(p.port, False, marker=False)
        self.assertClientError(o, 401, ("authentication_error",))
        o = exchange(p.port, False, headers=[("x-zephyr-key", "wrong-" + key[:4])], marker=False)
        self.assertClientError(o, 401, ("authentication_error",))
        self.assertEqual(fake.stats()["messages"], 0, "an unauthenticated request reached the upstream")
        for stream in (False, True):
            o = exchange(p.port, stream, headers=[("x-zephyr-key", key), ("x-api-key", "client-own")])
            self.assertEqual(o.status, 200, o)
            self.assertNotForwarded(fake, key)
            # a group without a token passes the client's own credentials
            self.assertEqual(stats_header(fake.stats(), "x-api-key"), ["client-own"])

    def test_access_key_as_api_key_when_group_injects_token(self):
        token = "sk-zt-" + secrets.token_hex(16)
        p, fake, key = self._access_proxy(token=token)
        for hdr in (("x-api-key", key), ("authorization", "Bearer " + key)):
            o = exchange(p.port, False, headers=[hdr])
            self.assertEqual(o.status, 200, o)
            self.assertNotForwarded(fake, key)
            self.assertEqual(stats_header(fake.stats(), "x-api-key"), [token])
        o = exchange(p.port, False, headers=[("x-api-key", "sk-not-the-key")])
        self.assertClientError(o, 401)

    def test_non_loopback_bind_without_access_key_refuses_to_start(self):
        fake = self.start_fake()
        cfg = make_config([{"name": "main", "endpoints": [("ep-alpha", fake.url)]}],
                          server={"bind": "0.0.0.0"}, health_check=HEALTH)
        path = self.write_config(cfg)
        r = subprocess.run([PROXY_BIN, "--config", path, "--port", "0"], capture_output=True,
                           env=child_env(), timeout=scaled(10), cwd=self.tmp)
        err = r.stderr.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 1, err)
        self.assertIn("access_key_env", err)
        self.assertNotIn("listening on", err)
        # the same with --bind on the command line
        path2 = self.write_config(make_config([{"name": "main", "endpoints": [("ep-alpha", fake.url)]}],
                                              health_check=HEALTH), name="c2.toml")
        r = subprocess.run([PROXY_BIN, "--config", path2, "--port", "0", "--bind", "0.0.0.0"],
                           capture_output=True, env=child_env(), timeout=scaled(10), cwd=self.tmp)
        err = r.stderr.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 1, err)
        self.assertIn("access_key_env", err)

    def test_token_never_shown_in_status_logs_or_error_bodies(self):
        """Both endpoints answer 500 with an error that echoes the token they
        received; the client's error, /status and the log must not show it,
        not even a piece of it."""
        token = "sk-zt-" + secrets.token_hex(16)
        ra, rb = RawUpstream("ra"), RawUpstream("rb")
        p, ups = self.cluster([ra, rb], token=token)
        for u in ups:
            u.set(mode="echo_token_500")
        outs = [exchange(p.port, s) for s in (False, True)]
        # docs/DESIGN.md: both attempts failed (502); the checks fail too,
        # but checks alone never refuse a request (panic routing), so the
        # second request is tried again and fails the same way.
        self.assertEqual([(o.status, o.json()["error"]["type"]) for o in outs],
                         [(502, "api_error"), (502, "api_error")], outs)
        # the upstreams really did echo it, so the test means something
        self.assertEqual(dict(ra.stats()["last_headers"]).get("x-api-key"), token)
        # a check of each endpoint runs (and fails on the echoing 500) before
        # the log is searched for the token
        counts = [self.ep(p.status(), n)["checks"] for n in NAMES[:2]]
        self.assertEqual(p.admin("check")[0], 200)
        wait_for(lambda: (lambda st: not st["checks"]["running"] and all(
            self.ep(st, n)["checks"] > c for n, c in zip(NAMES[:2], counts)))(p.status()),
            scaled(5), desc="the requested check of both endpoints to finish")
        st = json.dumps(p.status())
        frags = token_fragments(token)
        for where, text in [("client error body", o.body.decode("utf-8", "replace")) for o in outs] + \
                [("/status", st), ("log", p.stderr_text())]:
            for f in frags:
                self.assertNotIn(f, text, "a piece of the token (%r) is in the %s" % (f, where))


if __name__ == "__main__":
    unittest.main()
