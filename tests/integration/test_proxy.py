"""
Core forwarding of claude-zephyr, end to end: the real proxy in front of the
fake upstream, driven by raw sockets so bytes and timings are exact.

Per-test behaviour of the fake (events, gaps, latency ...) is selected with
x-fake-<knob> request headers, which the proxy must pass through like any
custom header; the fake's global knobs are left alone so the proxy's own
health checks keep succeeding.
"""

import http.client
import json
import os
import re
import secrets
import signal
import socket
import threading
import time
import unittest
import zlib

from harness import (SCALE, SseStream, ZephyrTestCase, build_request, chunked, fake_headers,
                     refused_port, http_request, is_anthropic_error, messages_body, rss_kb,
                     scaled, stats_header, wait_for)

TOKEN = "sk-zt-" + secrets.token_hex(12)
CLIENT_KEY = "sk-client-" + secrets.token_hex(12)
CLIENT_BEARER = "sk-clientbearer-" + secrets.token_hex(12)

MB = 1024 * 1024


def deltas(events):
    return [e for e in events if e.event == "content_block_delta"]


def delta_text(ev):
    return ev.json()["delta"]["text"]


def send_in_background(conn, data):
    """Sends data from a thread, ignoring errors: the proxy may answer and
    close before it has read everything."""
    def run():
        try:
            conn.sock.sendall(data)
        except OSError:
            pass
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


class CoreForwarding(ZephyrTestCase):

    def test_non_streaming_roundtrip(self):
        fake = self.start_fake("up1")
        p = self.proxy_for(fake)
        body = messages_body(model="claude-zt-echo", text="hello there")
        direct = self.post_messages(fake.port, body)
        r = self.post_messages(p.port, body)
        self.assertEqual(r.status, 200, r)
        self.assertIn("application/json", r.header("content-type", ""))
        d = r.json()
        self.assertEqual(d["type"], "message")
        self.assertEqual(d["model"], "claude-zt-echo")
        self.assertTrue(d["content"] and d["content"][0]["type"] == "text", d)
        # the body is the upstream's, byte for byte apart from the message id
        dd = direct.json()
        d.pop("id", None)
        dd.pop("id", None)
        self.assertEqual(d, dd)
        self.assertRegex(r.header("request-id") or "", r"^req_fake_\d+$", r)
        self.assertEqual(r.header("x-fake-name"), "up1", r)

    def test_streaming_is_not_buffered(self):
        fake = self.start_fake()
        p = self.proxy_for(fake)
        s = self.stream(p.port, fake_headers(events=5, gap_ms=200))
        self.assertEqual(s.resp.status, 200, s.resp)
        self.assertIn("text/event-stream", s.resp.header("content-type", ""))
        evs = s.read_all()
        self.assertEqual(s.end, "complete", s.names())
        names = s.names()
        self.assertEqual(names[0], "message_start", names)
        self.assertEqual(names[-1], "message_stop", names)
        ds = deltas(evs)
        self.assertEqual([delta_text(e) for e in ds], ["w%d " % i for i in range(5)])
        first = evs[0].t - s.t0
        self.assertLess(first, scaled(0.6), "first event after %.3fs" % first)
        spread = ds[-1].t - ds[0].t
        self.assertGreaterEqual(spread, 0.5, "deltas arrived within %.3fs: buffered?" % spread)

    def test_1mb_body_intact(self):
        fake = self.start_fake()
        p = self.proxy_for(fake)
        body = messages_body(text="x" * MB + "".join(chr(97 + i % 26) for i in range(4099)))
        self.assertGreater(len(body), MB)
        r, st = self.captured(fake, lambda m: self.post_messages(p.port, body, m))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(st["last_body_bytes"], len(body))
        self.assertEqual(st["last_body_crc32"], zlib.crc32(body))

    def test_chunked_request_body_intact(self):
        fake = self.start_fake()
        p = self.proxy_for(fake)
        body = messages_body(text="".join("%07d," % i for i in range(40000)))

        def send(marker):
            c = self.raw(p.port)
            hdrs = [("Content-Type", "application/json"), ("anthropic-version", "2023-06-01"),
                    ("Transfer-Encoding", "chunked")] + marker
            data = build_request("POST", "/v1/messages", hdrs) + chunked(body, [1, 7, 100, 4096, 65536, 3, 30000])
            # several writes, splitting chunk headers and data at odd places
            for i in range(0, len(data), 9973):
                c.send(data[i:i + 9973])
            return c.read_response("POST")

        r, st = self.captured(fake, send)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(st["last_body_bytes"], len(body))
        self.assertEqual(st["last_body_crc32"], zlib.crc32(body))

    def test_expect_100_continue(self):
        fake = self.start_fake()
        p = self.proxy_for(fake)
        body = messages_body(text="y" * 200000)

        def send(marker):
            c = self.raw(p.port, timeout=scaled(5))
            hdrs = [("Content-Type", "application/json"), ("Expect", "100-continue"),
                    ("Content-Length", str(len(body)))] + marker
            c.send(build_request("POST", "/v1/messages", hdrs))
            interim = c.read_head()
            self.assertEqual(interim.status, 100, "expected 100 Continue before the body: %r" % interim)
            c.send(body)
            return c.read_response("POST")

        r, st = self.captured(fake, send)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(st["last_body_bytes"], len(body))
        self.assertEqual(st["last_body_crc32"], zlib.crc32(body))


class Headers(ZephyrTestCase):

    def test_custom_headers_pass_through_unchanged(self):
        fake = self.start_fake()
        p = self.proxy_for(fake, token=TOKEN)
        plain = [
            ("anthropic-version", "2023-06-01"),
            ("x-stainless-lang", "js"),
            ("x-stainless-package-version", "0.55.1"),
            ("x-stainless-os", "Linux"),
            ("x-stainless-arch", "x64"),
            ("x-stainless-runtime", "node"),
            ("x-stainless-runtime-version", "v22.11.0"),
            ("x-stainless-retry-count", "0"),
            ("x-stainless-timeout", "600"),
            ("X-Stainless-Helper-Method", "stream"),
            ("x-app", "cli"),
            ("user-agent", "claude-cli/1.0.71 (external, cli)"),
            ("anthropic-dangerous-direct-browser-access", "true"),
            ("x-zt-odd-value", "a=b; c=\"d e\", f/g"),
        ]
        betas = [("anthropic-beta", "claude-code-20250219,oauth-2025-04-20"),
                 ("anthropic-beta", "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14")]
        r, st = self.captured(fake, lambda m: self.post_messages(
            p.port, headers=plain + betas + m))
        self.assertEqual(r.status, 200, r)
        for name, value in plain:
            self.assertEqual(stats_header(st, name), [value], "header %s" % name)
        got = [v.strip() for h in stats_header(st, "anthropic-beta") for v in h.split(",")]
        want = [v for _, h in betas for v in h.split(",")]
        self.assertEqual(got, want, "anthropic-beta values")

    def test_client_credentials_replaced_by_group_token(self):
        fake = self.start_fake()
        p = self.proxy_for(fake, token=TOKEN)
        creds = [("x-api-key", CLIENT_KEY), ("Authorization", "Bearer " + CLIENT_BEARER)]
        # the fake really checks the token: the client's own key is refused
        direct = self.post_messages(fake.port, headers=creds)
        self.assertEqual(direct.status, 401, direct)
        r, st = self.captured(fake, lambda m: self.post_messages(p.port, headers=creds + m))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(stats_header(st, "x-api-key"), [TOKEN])
        self.assertEqual(stats_header(st, "authorization"), [])
        seen = json.dumps(st["last_headers"])
        self.assertNotIn(CLIENT_KEY, seen)
        self.assertNotIn(CLIENT_BEARER, seen)

    def test_bearer_auth_header(self):
        fake = self.start_fake()
        p = self.proxy_for(fake, token=TOKEN, auth_header="bearer")
        creds = [("x-api-key", CLIENT_KEY), ("authorization", "Bearer " + CLIENT_BEARER)]
        r, st = self.captured(fake, lambda m: self.post_messages(p.port, headers=creds + m))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(stats_header(st, "authorization"), ["Bearer " + TOKEN])
        self.assertEqual(stats_header(st, "x-api-key"), [])
        seen = json.dumps(st["last_headers"])
        self.assertNotIn(CLIENT_KEY, seen)
        self.assertNotIn(CLIENT_BEARER, seen)

    def test_group_without_token_passes_client_key(self):
        fake = self.start_fake()
        p = self.proxy_for(fake)  # no auth_token_env
        fake.config(token=CLIENT_KEY)  # after the start-up checks: now the client's key is required
        r, st = self.captured(fake, lambda m: self.post_messages(
            p.port, headers=[("x-api-key", CLIENT_KEY)] + m))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(stats_header(st, "x-api-key"), [CLIENT_KEY])
        self.assertEqual(stats_header(st, "authorization"), [])

    def test_hop_by_hop_headers_removed(self):
        fake = self.start_fake()
        p = self.proxy_for(fake)
        hop = [("Connection", "x-foo"), ("X-Foo", "must-not-pass"), ("Keep-Alive", "timeout=5, max=100"),
               ("TE", "trailers"), ("Trailer", "x-checksum"), ("Upgrade", "h2c"),
               ("Proxy-Authorization", "Basic dXNlcjpwYXNz")]
        r, st = self.captured(fake, lambda m: self.post_messages(p.port, headers=hop + m))
        self.assertEqual(r.status, 200, r)
        names = [k.lower() for k, _ in st["last_headers"]]
        for h in ("x-foo", "keep-alive", "te", "trailer", "upgrade", "proxy-authorization"):
            self.assertNotIn(h, names, "hop-by-hop header %s reached the upstream: %r" % (h, st["last_headers"]))
        for v in stats_header(st, "connection"):
            self.assertNotIn("x-foo", v.lower())
        self.assertNotIn("must-not-pass", json.dumps(st["last_headers"]))
        self.assertNotIn("dXNlcjpwYXNz", json.dumps(st["last_headers"]))

    def test_upstream_sees_endpoint_host(self):
        fake = self.start_fake()
        # The client's Host must pass the guard (docs/SECURITY.md) to be forwarded at all.
        p = self.proxy_for(fake, server={"allowed_hosts": ["api.anthropic.com"]})
        r, st = self.captured(fake, lambda m: self.post_messages(
            p.port, headers=[("Host", "api.anthropic.com")] + m))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(stats_header(st, "host"), ["127.0.0.1:%d" % fake.port])

    def test_endpoint_path_prefix(self):
        fake = self.start_fake()
        p = self.proxy_for(fake, url=fake.url + "/prefix/")
        r, st = self.captured(fake, lambda m: self.post_messages(
            p.port, path="/v1/messages?beta=true", headers=m))
        self.assertNotIn(r.status, (502, 503, 504), r)
        self.assertEqual(st["last_path"], "/prefix/v1/messages?beta=true")
        self.assertEqual(st["last_method"], "POST")


class Connections(ZephyrTestCase):

    def test_head_root_then_keepalive(self):
        fake = self.start_fake()
        p = self.proxy_for(fake)
        c = self.raw(p.port)
        c.send(build_request("HEAD", "/", [("User-Agent", "claude-cli/1.0")]))
        r = c.read_response("HEAD")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(c.no_data_within(0.3), "bytes after a HEAD response: %r" % bytes(c.buf[:200]))
        c.send(build_request("POST", "/v1/messages", [("content-type", "application/json")], messages_body()))
        r2 = c.read_response("POST")
        self.assertEqual(r2.status, 200, r2)
        self.assertEqual(r2.json()["type"], "message")

    def test_keepalive_several_requests(self):
        fake = self.start_fake()
        p = self.proxy_for(fake)
        conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=scaled(10))
        self.addCleanup(conn.close)
        local = None
        for i in range(4):
            conn.request("POST", "/v1/messages", body=messages_body(model="ka-%d" % i),
                         headers={"content-type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            self.assertEqual(r.status, 200)
            self.assertEqual(json.loads(data)["model"], "ka-%d" % i)
            self.assertFalse(r.will_close, "proxy closed a keep-alive connection after request %d" % i)
            name = conn.sock.getsockname()
            if local is None:
                local = name
            self.assertEqual(name, local, "a new connection was opened")
        conn.request("GET", "/health")
        r = conn.getresponse()
        r.read()
        self.assertEqual(r.status, 200)
        self.assertEqual(conn.sock.getsockname(), local)

    def test_pipelining(self):
        fake = self.start_fake()
        p = self.proxy_for(fake)
        c = self.raw(p.port)
        hdrs = [("content-type", "application/json")]
        c.send(build_request("POST", "/v1/messages", hdrs, messages_body(model="pipe-one")) +
               build_request("POST", "/v1/messages", hdrs, messages_body(model="pipe-two")))
        r1 = c.read_response("POST")
        r2 = c.read_response("POST")
        self.assertEqual((r1.status, r2.status), (200, 200), (r1, r2))
        self.assertEqual(r1.json()["model"], "pipe-one")
        self.assertEqual(r2.json()["model"], "pipe-two")


class OwnPaths(ZephyrTestCase):

    def test_health_and_status(self):
        f1 = self.start_fake("f1")
        f2 = self.start_fake("f2")
        f1.config(token=TOKEN)
        f2.config(token=TOKEN)
        groups = [
            {"name": "main", "auth_token_env": "ZT_TOKEN", "default": True,
             "endpoints": [("ep-a", f1.url), ("ep-b", f2.url)]},
            {"name": "alt", "endpoints": [("ep-c", f2.url)]},
        ]
        p = self.start_proxy(groups, server={"switch_threshold_ms": 77},
                             health_check={"interval_seconds": 300, "timeout_seconds": 15,
                                           "min_interval_seconds": 30, "max_interval_seconds": 3600},
                             env={"ZT_TOKEN": TOKEN}, extra_args=["--log-level", "debug"])
        r = self.post_messages(p.port)
        self.assertEqual(r.status, 200, r)
        h = http_request(p.port, "GET", "/health")
        self.assertEqual(h.status, 200, h)
        sr = http_request(p.port, "GET", "/status")
        self.assertEqual(sr.status, 200, sr)
        self.assertIn("application/json", sr.header("content-type", ""))
        st = sr.json()
        for k in ("mode", "current_group", "current_endpoint", "endpoints", "active_connections",
                  "uptime_s", "config"):
            self.assertIn(k, st, "missing key %s" % k)
        self.assertIn(st["mode"], ("auto", "manual"))
        self.assertEqual(st["current_group"], "main")
        ce = st["current_endpoint"]
        self.assertIsInstance(ce, dict)
        self.assertIn(ce["name"], ("ep-a", "ep-b"))
        self.assertIn(ce["url"], (f1.url, f2.url))
        self.assertIsInstance(st["active_connections"], int)
        self.assertIsInstance(st["uptime_s"], (int, float))
        eps = {e["name"]: e for e in st["endpoints"]}
        self.assertEqual(set(eps), {"ep-a", "ep-b", "ep-c"})
        for e in eps.values():
            for k in ("name", "url", "group", "available", "latency_ms", "error", "active_connections"):
                self.assertIn(k, e, "endpoint %s lacks %s" % (e.get("name"), k))
            self.assertIsInstance(e["available"], bool)
            self.assertIsInstance(e["active_connections"], int)
            self.assertTrue(e["latency_ms"] is None or isinstance(e["latency_ms"], (int, float)))
        self.assertEqual(eps["ep-a"]["url"], f1.url)
        self.assertEqual(eps["ep-a"]["group"], "main")
        self.assertEqual(eps["ep-c"]["group"], "alt")
        cfg = st["config"]
        self.assertIn("port", cfg)
        self.assertEqual(cfg["switch_threshold_ms"], 77)
        self.assertEqual(cfg["health_check"]["interval_seconds"], 300)
        self.assertNotIn(TOKEN, sr.body.decode("utf-8", "replace"))
        self.assertNotIn(TOKEN, p.stderr_text())
        self.assertNotIn(TOKEN, p.stdout_text())

    def test_request_log_line(self):
        fake = self.start_fake()
        p = self.proxy_for(fake, ep_name="ep-logline")
        r = self.post_messages(p.port)
        self.assertEqual(r.status, 200, r)

        def line():
            for ln in p.stderr_text().splitlines():
                if ("POST" in ln and "/v1/messages" in ln and "ep-logline" in ln
                        and re.search(r"\b200\b", ln)):
                    return ln
            return None
        try:
            wait_for(line, scaled(3), desc="the request log line")
        except AssertionError:
            self.fail("no stderr line with POST, /v1/messages, ep-logline and 200:\n"
                      + p.stderr_text()[-4000:])


class SlowAndGone(ZephyrTestCase):

    def _rss_sampler(self, pid):
        samples = []
        stop = threading.Event()

        def run():
            while not stop.is_set():
                try:
                    samples.append(rss_kb(pid))
                except (OSError, RuntimeError):
                    return
                stop.wait(0.05)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return samples, stop, t

    def test_slow_client_stream_completes_with_bounded_memory(self):
        fake = self.start_fake()
        p = self.proxy_for(fake)
        self.assertEqual(self.post_messages(p.port).status, 200)  # warm up
        base = rss_kb(p.pid)
        samples, stop, t = self._rss_sampler(p.pid)
        n = 30000
        c = self.raw(p.port, rcvbuf=4096, timeout=scaled(15))
        c.slow_until = time.monotonic() + 1.5
        c.slow_chunk, c.slow_delay = 1024, 0.005
        hdrs = [("content-type", "application/json")] + fake_headers(events=n)
        s = SseStream(c, build_request("POST", "/v1/messages", hdrs, messages_body(stream=True)))
        self.assertEqual(s.resp.status, 200, s.resp)
        evs = s.read_all()
        stop.set()
        t.join(2)
        self.assertEqual(s.end, "complete", "stream ended %s after %d events" % (s.end, len(evs)))
        ds = deltas(evs)
        self.assertEqual(len(ds), n)
        for i, e in enumerate(ds):
            if delta_text(e) != "w%d " % i:
                self.fail("delta %d is %r" % (i, e.data))
        self.assertEqual(evs[-1].event, "message_stop")
        growth = (max(samples) - base) / 1024.0
        self.assertLess(growth, 50, "proxy RSS grew by %.1f MB" % growth)

    def test_slow_client_large_response_bounded_memory(self):
        fake = self.start_fake()
        p = self.proxy_for(fake)
        self.assertEqual(self.post_messages(p.port).status, 200)  # warm up
        base = rss_kb(p.pid)
        size = 96 * 1000 * 1000
        c = self.raw(p.port, rcvbuf=4096, timeout=scaled(15))
        hdrs = [("content-type", "application/json")] + fake_headers(body_bytes=size)
        c.send(build_request("POST", "/v1/messages", hdrs, messages_body()))
        head = c.read_head()
        self.assertEqual(head.status, 200, head)
        # read slowly for 3 s while sampling the proxy's memory: a proxy that
        # does not apply backpressure reads the whole upstream body meanwhile
        samples, stop, t = self._rss_sampler(p.pid)
        c.slow_until = time.monotonic() + 3.0
        c.slow_chunk, c.slow_delay = 4096, 0.01
        pieces = []
        it = c.body_pieces(head, "POST")
        for _, piece in it:
            pieces.append(piece)
            if time.monotonic() >= c.slow_until:
                break
        stop.set()
        t.join(2)
        growth = (max(samples) - base) / 1024.0
        for _, piece in it:
            pieces.append(piece)
        self.assertEqual(head.end, "complete")
        body = b"".join(pieces)
        d = json.loads(body)
        self.assertEqual(d["type"], "message")
        self.assertGreaterEqual(len(d["content"][0]["text"]), size)
        self.assertLess(growth, 50, "proxy RSS grew by %.1f MB while the client read slowly" % growth)

    def test_client_hangs_up_mid_stream(self):
        fake = self.start_fake()
        p = self.proxy_for(fake)
        before = fake.stats()["streams_aborted"]
        s = self.stream(p.port, fake_headers(events=50, gap_ms=100))
        self.assertEqual(s.resp.status, 200, s.resp)
        got = 0
        for e in s.events():
            if e.event == "content_block_delta":
                got += 1
                if got == 2:
                    break
        self.assertEqual(got, 2)
        # the fake is streaming now; the proxy counts it
        active, inflight = p.active()
        self.assertEqual(active, 1)
        s.conn.close()
        t0 = time.monotonic()
        wait_for(lambda: fake.stats()["streams_aborted"] > before, scaled(2),
                 desc="the upstream stream to be aborted after the client left")
        wait_for(lambda: p.active() == (0, []), scaled(2),
                 desc="/status active_connections 0 and no request in flight")
        self.assertLess(time.monotonic() - t0, scaled(2.5))
        self.assertEqual(fake.stats()["active"], 0)


class ProxyErrors(ZephyrTestCase):

    def _small_body_proxy(self):
        fake = self.start_fake()
        return self.proxy_for(fake, server={"max_body_mb": 1})

    def test_413_body_too_large(self):
        p = self._small_body_proxy()
        body = messages_body(text="z" * (2 * MB))
        c = self.raw(p.port, timeout=scaled(5))
        c.send(build_request("POST", "/v1/messages", [("Content-Type", "application/json"),
                                                       ("Content-Length", str(len(body)))]))
        send_in_background(c, body)
        r = c.read_response("POST")
        self.assertAnthropicError(r, 413)

    def test_413_announced_content_length_without_reading_it(self):
        p = self._small_body_proxy()
        c = self.raw(p.port, timeout=scaled(5))
        c.send(build_request("POST", "/v1/messages", [("Content-Type", "application/json"),
                                                       ("Content-Length", str(2 * MB))]) + b"{" + b" " * 999)
        r = c.read_response("POST")  # only 1000 of 2 MiB were sent
        self.assertAnthropicError(r, 413)

    def test_413_chunked_body_too_large(self):
        p = self._small_body_proxy()
        body = messages_body(text="q" * (2 * MB))
        c = self.raw(p.port, timeout=scaled(5))
        c.send(build_request("POST", "/v1/messages", [("Content-Type", "application/json"),
                                                       ("Transfer-Encoding", "chunked")]))
        send_in_background(c, chunked(body, [65536]))
        r = c.read_response("POST")
        self.assertAnthropicError(r, 413)

    def test_400_malformed_requests_close_connection(self):
        fake = self.start_fake()
        p = self.proxy_for(fake)
        cases = {
            "not http": b"this is not http\r\n\r\n",
            "bad request line": b"GET /v1/messages HTTP/1.1 extra\r\nHost: a\r\n\r\n",
            "bare CR in value": b"POST /v1/messages HTTP/1.1\r\nHost: a\r\nX-Bad: a\rb\r\n"
                                b"Content-Length: 2\r\n\r\n{}",
            "space before colon": b"POST /v1/messages HTTP/1.1\r\nHost: a\r\nX-Foo : bar\r\n"
                                  b"Content-Length: 2\r\n\r\n{}",
            "NUL in header": b"POST /v1/messages HTTP/1.1\r\nHost: a\r\nX-Nul: a\x00b\r\n"
                             b"Content-Length: 2\r\n\r\n{}",
        }
        for name, data in cases.items():
            with self.subTest(name):
                c = self.raw(p.port, timeout=scaled(5))
                c.send(data)
                r = c.read_response("GET")
                self.assertAnthropicError(r, 400)
                self.assertTrue(c.closed_by_peer(scaled(2)), "connection left open after a 400")
                c.close()
        self.assertEqual(http_request(p.port, "GET", "/health").status, 200)

    def test_431_huge_header_block(self):
        fake = self.start_fake()
        p = self.proxy_for(fake)
        c = self.raw(p.port, timeout=scaled(5))
        data = build_request("POST", "/v1/messages", [("Content-Type", "application/json"),
                                                      ("X-Big", "a" * 100000)], messages_body())
        send_in_background(c, data)
        r = c.read_response("POST")
        self.assertAnthropicError(r, 431)
        self.assertEqual(http_request(p.port, "GET", "/health").status, 200)

    def test_unusable_upstream_502_then_503(self):
        """Both endpoints refuse connections and their checks have failed.
        Checks alone never refuse a request (panic routing, docs/DESIGN.md):
        the next requests still try both endpoints and get 502 naming each
        attempt; once three live failures in a row have opened both
        circuits, nothing is usable and the answer is 503 api_error with
        Retry-After, at once."""
        groups = [{"name": "main", "endpoints": [("dead-1", "http://127.0.0.1:%d" % refused_port()),
                                                 ("dead-2", "http://127.0.0.1:%d" % refused_port())]}]
        p = self.start_proxy(groups, settle=False)
        wait_for(lambda: all(e["status"] == "failed" for e in p.status()["endpoints"]), scaled(5),
                 desc="the start-up checks to fail both endpoints")
        for _ in range(3):
            r = self.post_messages(p.port)
            self.assertAnthropicError(r, 502)
            self.assertIn("all 2 attempt(s) failed", r.json()["error"]["message"], r)
        t0 = time.monotonic()
        r = self.post_messages(p.port)
        self.assertAnthropicError(r, 503)
        self.assertEqual(r.json()["error"]["type"], "api_error", r)
        self.assertRegex(r.header("retry-after") or "", r"^[1-9][0-9]*$", r)
        self.assertLess(time.monotonic() - t0, scaled(5))
        wait_for(lambda: p.active() == (0, []), scaled(2), desc="no request in flight")

    def test_504_upstream_header_timeout(self):
        fake = self.start_fake()
        p = self.proxy_for(fake, server={"header_timeout_ms": 1000})
        t0 = time.monotonic()
        r = self.post_messages(p.port, headers=fake_headers(latency_ms=20000), timeout=scaled(10))
        took = time.monotonic() - t0
        self.assertAnthropicError(r, 504)
        self.assertGreaterEqual(took, 0.9)
        self.assertLess(took, 1.0 + scaled(3))
        wait_for(lambda: p.active() == (0, []), scaled(2), desc="no request in flight")


class Timeouts(ZephyrTestCase):

    def test_stream_idle_timeout_ends_stream(self):
        fake = self.start_fake()
        p = self.proxy_for(fake, server={"idle_timeout_ms": 1000})
        s = self.stream(p.port, fake_headers(events=2, gap_ms=8000), timeout=6.0)
        self.assertEqual(s.resp.status, 200, s.resp)
        s.read_all()
        took = s.t_end - s.t0
        self.assertNotEqual(s.end, "timeout", "the proxy did not end an idle stream")
        self.assertNotIn("message_stop", s.names())
        self.assertGreaterEqual(took, 0.9)
        self.assertLess(took, 5.0, "idle stream ended after %.2fs" % took)
        wait_for(lambda: p.active() == (0, []), scaled(2), desc="no request in flight")

    def test_long_stream_has_no_total_deadline(self):
        fake = self.start_fake()
        p = self.proxy_for(fake, server={"idle_timeout_ms": 1000, "header_timeout_ms": 1000})
        s = self.stream(p.port, fake_headers(events=6, gap_ms=500))
        self.assertEqual(s.resp.status, 200, s.resp)
        evs = s.read_all()
        self.assertEqual(s.end, "complete", s.names())
        self.assertEqual(len(deltas(evs)), 6)
        self.assertEqual(evs[-1].event, "message_stop")
        self.assertGreater(s.t_end - s.t0, 2.0)

    def test_client_header_timeout(self):
        fake = self.start_fake()
        p = self.proxy_for(fake, server={"client_header_timeout_ms": 1000})
        c = self.raw(p.port)
        c.send(b"POST /v1/messages HTTP/1.1\r\nHost: a\r\n")
        t0 = time.monotonic()
        self.assertTrue(c.closed_by_peer(1.0 + scaled(3)), "a client that never finished its headers was kept")
        self.assertGreaterEqual(time.monotonic() - t0, 0.8)
        if c.buf:
            self.assertTrue(bytes(c.buf).startswith(b"HTTP/1.1 408"), bytes(c.buf[:200]))

    def test_keepalive_idle_timeout(self):
        fake = self.start_fake()
        p = self.proxy_for(fake, server={"keepalive_timeout_ms": 1000})
        c = self.raw(p.port)
        c.send(build_request("GET", "/health"))
        self.assertEqual(c.read_response("GET").status, 200)
        t0 = time.monotonic()
        self.assertTrue(c.closed_by_peer(1.0 + scaled(3)), "idle keep-alive connection never closed")
        self.assertGreaterEqual(time.monotonic() - t0, 0.8)


class Shutdown(ZephyrTestCase):

    def test_graceful_shutdown_finishes_stream(self):
        fake = self.start_fake()
        p = self.proxy_for(fake, server={"shutdown_grace_ms": 10000})
        s = self.stream(p.port, fake_headers(events=10, gap_ms=200))
        self.assertEqual(s.resp.status, 200, s.resp)
        refused = threading.Event()

        def probe():
            deadline = time.monotonic() + scaled(1.5)
            while time.monotonic() < deadline:
                try:
                    x = socket.create_connection(("127.0.0.1", p.port), timeout=0.5)
                    x.close()
                except ConnectionRefusedError:
                    refused.set()
                    return
                except OSError:
                    pass
                time.sleep(0.05)

        prober = None
        for e in s.events():
            if e.event == "content_block_delta" and prober is None:
                p.signal(signal.SIGTERM)
                prober = threading.Thread(target=probe, daemon=True)
                prober.start()
        self.assertIsNotNone(prober, "no delta before the end")
        self.assertEqual(s.end, "complete", s.names())
        self.assertEqual(len(deltas(s.events_seen)), 10)
        self.assertEqual(s.events_seen[-1].event, "message_stop")
        prober.join(scaled(3))
        self.assertTrue(refused.is_set(), "new connections were still accepted after SIGTERM")
        code = p.wait(scaled(5))
        self.assertEqual(code, 0, "exit status after SIGTERM: %r\n%s" % (code, p.stderr_text()[-3000:]))


if __name__ == "__main__":
    unittest.main()
