"""
Regression tests for defects a review found in the merged code (each test
failed on ae9400c):

- the access key, presented as x-api-key / Authorization: Bearer while the
  current group has a token, went upstream when the request fell over to a
  group without one;
- a 4xx that repeats the client's words ("quota" in an anthropic-beta value)
  was read as a usage cap and rested every endpoint;
- through an HTTP proxy to an https endpoint, the proxy's CONNECT reply was
  taken for the upstream's head;
- a FIFO as request_log or ca_file froze the loop on reload;
- a compressed 4xx error body was never judged;
- model mapping used the first "model" key and missed an escaped key;
- an HTTP/1.0 request without Host passed the Host check on loopback.

Upstreams are ScriptedUpstream (tests/integration/test_providers.py) or small
servers in this process, all on 127.0.0.1 with ephemeral ports.
"""

import gzip
import json
import os
import signal
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))

from harness import (DEFAULT_TIMEOUT, http_request, messages_body, scaled,  # noqa: E402
                     wait_for)
from scripted import ScriptedServer  # noqa: E402
from test_providers import (ProvidersCase, api_error, group_toml, make_private_ca,  # noqa: E402
                            ok_message, server_toml)

ACCESS = "zk-access-SECRET-1234567890abcdef"


class TestAccessKeyNeverForwarded(ProvidersCase):
    def _chain(self):
        bad = self.scripted(lambda req: (500, {}, api_error("api_error", "boom")))
        good = self.scripted()
        text = (server_toml(access_key_env="ZT_ACCESS")
                + group_toml("a", [("a1", bad.url)], token_env="ZT_TOK_A", fallback=["b"])
                + group_toml("b", [("b1", good.url)]))
        # server= only tells the harness which variable holds the key.
        p = self.start_proxy(config_text=text, server={"access_key_env": "ZT_ACCESS"},
                             env={"ZT_ACCESS": ACCESS, "ZT_TOK_A": "tok-group-a-111"})
        return p, bad, good

    def test_access_key_as_client_credential_is_not_sent_to_fallback_group(self):
        for hdr in (("x-api-key", ACCESS), ("authorization", "Bearer " + ACCESS)):
            with self.subTest(header=hdr[0]):
                p, bad, good = self._chain()
                self.post_messages(p.port, headers=[hdr])
                self.assertEqual(len(bad.seen()), 1)
                self.assertEqual(bad.seen()[0]["headers"].get("x-api-key"), "tok-group-a-111")
                # The fallback group has no token: the request may go there
                # without credentials, never with the access key.
                for req in good.seen():
                    self.assertNotIn(ACCESS, json.dumps(req["headers"]), req["headers"])
                for req in bad.seen():
                    self.assertNotIn(ACCESS, json.dumps(req["headers"]), req["headers"])
                self._stop_proxy(p)

    def test_other_client_credential_still_goes_to_group_without_token(self):
        p, bad, good = self._chain()
        r = self.post_messages(p.port, headers=[("x-zephyr-key", ACCESS),
                                                ("x-api-key", "sk-client-own-42")])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(good.seen()[-1]["headers"].get("x-api-key"), "sk-client-own-42")


def echo_beta(req):
    """Anthropic's real answer to an unknown anthropic-beta value: a 400 that
    repeats the client's words in backticks."""
    beta = req["headers"].get("anthropic-beta")
    if beta:
        msg = ("Unexpected value(s) `%s` for the `anthropic-beta` header. Please consult our "
               "documentation at docs.anthropic.com or try again without the header." % beta)
        return 400, {}, api_error("invalid_request_error", msg)
    return 200, {}, ok_message(req["json"].get("model", "?"))


class TestClientWordsAreNoUsageCap(ProvidersCase):
    def test_echoed_client_words_rest_no_endpoint(self):
        for beta in ("my-quota-feature", "billing-2025", "credit balance is too low",
                     "insufficient balance, usage limit"):
            with self.subTest(beta=beta):
                ups = [self.scripted(echo_beta) for _ in range(3)]
                text = server_toml() + group_toml("g", [("e%d" % i, u.url)
                                                        for i, u in enumerate(ups)])
                p = self.start_proxy(config_text=text)
                r = self.post_messages(p.port, headers=[("anthropic-beta", beta)])
                self.assertEqual(r.status, 400, r)
                self.assertIn(beta.encode(), r.body)
                st = p.status()
                self.assertEqual([e["rested"] for e in st["endpoints"]], [None] * 3,
                                 st["endpoints"])
                r = self.post_messages(p.port)
                self.assertEqual(r.status, 200, r)
                self._stop_proxy(p)

    def test_bare_words_and_404_are_no_usage_cap(self):
        cases = [
            (400, api_error("invalid_request_error", "quota: the field is not permitted")),
            (400, api_error("invalid_request_error", "insufficient balance in tools.billing")),
            (403, api_error("permission_error", "billing address missing for this org")),
            (404, api_error("not_found_error", "insufficient_quota: no such path")),
            (429, api_error("rate_limit_error", "Number of request tokens has exceeded your "
                                                "per-minute rate limit")),
        ]
        for status, body in cases:
            with self.subTest(status=status, body=body):
                up = self.scripted(lambda req, s=status, b=body: (s, {}, b))
                text = server_toml() + group_toml("g", [("e", up.url)])
                p = self.start_proxy(config_text=text)
                self.post_messages(p.port)
                ep = p.status()["endpoints"][0]
                self.assertTrue(ep["rested"] is None or "usage cap" not in ep["rested"]["reason"],
                                ep)
                self._stop_proxy(p)

    def test_provider_cap_phrases_still_rest(self):
        cases = [
            (429, api_error("rate_limit_error", "You exceeded your current quota, please check "
                                                "your plan and billing details.")),
            (403, api_error("permission_error",
                            "\u4f59\u989d\u4e0d\u8db3\uff0c\u8bf7\u5145\u503c")),
            (400, api_error("invalid_request_error", "Your credit balance is too low to access "
                                                     "the Anthropic API.")),
            (400, api_error("insufficient_quota", "quota used up")),
        ]
        for status, body in cases:
            with self.subTest(status=status, body=body):
                capped = self.scripted(lambda req, s=status, b=body: (s, {}, b))
                good = self.scripted()
                text = (server_toml() + group_toml("a", [("capped", capped.url)], fallback=["b"])
                        + group_toml("b", [("good", good.url)]))
                p = self.start_proxy(config_text=text)
                r = self.post_messages(p.port)
                self.assertEqual(r.status, 200, r)
                ep = [e for e in p.status()["endpoints"] if e["name"] == "capped"][0]
                self.assertIsNotNone(ep["rested"], ep)
                self.assertIn("usage cap", ep["rested"]["reason"])
                self._stop_proxy(p)


class ConnectProxy(ScriptedServer):
    """A minimal HTTP proxy that only tunnels (CONNECT to 127.0.0.1), as
    corporate proxies in front of https endpoints do; counts tunnels."""

    conn_timeout = DEFAULT_TIMEOUT

    def __init__(self):
        self.tunnels = 0
        super().__init__(backlog=16)

    @staticmethod
    def _pump(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle(self, c):
        data = b""
        try:
            while b"\r\n\r\n" not in data and len(data) < 65536:
                d = c.recv(4096)
                if not d:
                    return
                data += d
            line = data.split(b"\r\n")[0].split()
            host, port = line[1].rsplit(b":", 1)
            if line[0] != b"CONNECT" or host not in (b"127.0.0.1", b"localhost"):
                c.sendall(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                return
            u = socket.create_connection(("127.0.0.1", int(port)), timeout=DEFAULT_TIMEOUT)
        except (OSError, ValueError, IndexError):
            c.close()
            return
        self.tunnels += 1
        c.sendall(b"HTTP/1.1 200 Connection established\r\nProxy-Agent: zt-tunnel\r\n\r\n")
        c.settimeout(None)
        threading.Thread(target=self._pump, args=(c, u), daemon=True).start()
        self._pump(u, c)


class TestConnectTunnel(ProvidersCase):
    def test_tunnel_reply_is_not_taken_for_the_upstream_head(self):
        certs = make_private_ca(self.tmp)
        if not certs:
            self.skipTest("openssl could not make a test CA; no https endpoint to tunnel to")
        ca, cert, key = certs

        def overloaded(req):
            return 529, {"x-upstream": "real"}, api_error("overloaded_error", "Overloaded")
        tls = self.scripted(overloaded, tls=(cert, key))
        # Every answer closes its connection, so that each exchange (the
        # health check's, then the request's) opens its own tunnel.
        tls.server.RequestHandlerClass.protocol_version = "HTTP/1.0"
        plain = self.scripted()
        tunnel = ConnectProxy()
        self.addCleanup(tunnel.close)
        text = (server_toml(overloaded_retry_in_place_ms=0, http_client="libcurl")
                + group_toml("g", [("tls", tls.url, {"proxy": tunnel.url, "ca_file": ca}),
                                   ("plain", plain.url)])
                + "[health_check]\ninterval_seconds = 3600\n")
        p = self.start_proxy(config_text=text)
        p.admin("pin", {"endpoint": "tls"})
        r = self.post_messages(p.port)
        self.assertGreaterEqual(tunnel.tunnels, 2)
        self.assertEqual(len(tls.seen()), 1)
        # The 529 behind the tunnel is what decides: the request moves on.
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-zephyr-endpoint"), "plain", r)
        self.assertIsNone(r.header("proxy-agent"), r)
        self.assertEqual(json.loads(r.body)["content"][0]["text"], "hello")


class TestReloadNeverBlocksOnAFifo(ProvidersCase):
    """A reload runs on the loop: opening a FIFO there (request_log for
    writing, ca_file for reading) waited for the other end, and the proxy
    stopped answering, /health included."""

    def _fifo(self, name):
        path = os.path.join(self.tmp, name)
        os.mkfifo(path)
        return path

    def _unblock(self, path, flags):
        # Should the open on the loop hang (the defect), the other end lets
        # it go so that the proxy can still be stopped cleanly.
        def go():
            try:
                fd = os.open(path, flags | os.O_NONBLOCK)
            except OSError:
                return
            self.addCleanup(os.close, fd)
        self.addCleanup(go)

    def _health_answers(self, p):
        r = http_request(p.port, "GET", "/health", timeout=scaled(3))
        self.assertEqual(r.status, 200, r)

    def test_fifo_request_log_on_reload(self):
        up = self.scripted()
        text = server_toml() + group_toml("g", [("e", up.url)])
        p = self.start_proxy(config_text=text)
        fifo = self._fifo("requests.fifo")
        self._unblock(fifo, os.O_RDONLY)
        with open(p.config_path, "w") as f:
            f.write(server_toml(request_log=fifo) + group_toml("g", [("e", up.url)]))
        p.signal(signal.SIGHUP)
        wait_for(lambda: "request_log" in p.stderr_text(), scaled(5),
                 desc="request_log refused after SIGHUP")
        self.assertIn("no reader", p.stderr_text())
        self._health_answers(p)
        r = self.post_messages(p.port, timeout=scaled(5))
        self.assertEqual(r.status, 200, r)

    def test_fifo_ca_file_on_reload(self):
        up = self.scripted()
        text = server_toml() + group_toml("g", [("e", up.url)])
        p = self.start_proxy(config_text=text)
        fifo = self._fifo("ca.fifo")
        self._unblock(fifo, os.O_WRONLY)
        with open(p.config_path, "w") as f:
            f.write(server_toml() + group_toml("g", [("e", up.url), ("t", "https://127.0.0.1:1",
                                                                    {"ca_file": fifo})]))
        p.signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in p.stderr_text(), scaled(5),
                 desc="reload refused after SIGHUP")
        self.assertIn("not a regular file", p.stderr_text())
        self._health_answers(p)
        self.assertEqual([e["name"] for e in p.status()["endpoints"]], ["e"])


CREDIT = api_error("invalid_request_error",
                   "Your credit balance is too low to access the Anthropic API. Please go to "
                   "Plans & Billing to upgrade or purchase credits.")


class TestCompressedErrorBodiesAreJudged(ProvidersCase):
    def _gz_when_asked(self, status, body):
        def script(req):
            if "gzip" in (req["headers"].get("accept-encoding") or ""):
                return status, {"content-encoding": "gzip"}, gzip.compress(body)
            return status, {}, body
        return script

    def _chain(self, status, body):
        bad = self.scripted(self._gz_when_asked(status, body))
        good = self.scripted()
        text = (server_toml() + group_toml("a", [("bad", bad.url)], fallback=["b"])
                + group_toml("b", [("good", good.url)]))
        return self.start_proxy(config_text=text), bad, good

    def test_gzip_usage_cap_rests_and_fails_over(self):
        p, bad, good = self._chain(400, CREDIT)
        r = self.post_messages(p.port, headers=[("accept-encoding", "gzip, deflate")])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-zephyr-endpoint"), "good", r)
        ep = [e for e in p.status()["endpoints"] if e["name"] == "bad"][0]
        self.assertIsNotNone(ep["rested"], ep)
        self.assertIn("credit balance", ep["rested"]["reason"])

    def test_gzip_missing_model_moves_on(self):
        body = api_error("not_found_error", "model: claude-zt-test")
        p, bad, good = self._chain(404, body)
        r = self.post_messages(p.port, headers=[("accept-encoding", "gzip")])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-zephyr-endpoint"), "good", r)
        self.assertEqual(len(bad.seen()), 1)

    def test_gzip_ordinary_4xx_reaches_client_as_sent(self):
        body = api_error("invalid_request_error", "max_tokens: field required")
        up = self.scripted(self._gz_when_asked(400, body))
        p = self.start_proxy(config_text=server_toml() + group_toml("g", [("e", up.url)]))
        r = self.post_messages(p.port, headers=[("accept-encoding", "gzip")])
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.header("content-encoding"), "gzip", r)
        self.assertEqual(gzip.decompress(r.body), body)
        self.assertIsNone(p.status()["endpoints"][0]["rested"])


class TestHostRequiredOnLoopback(ProvidersCase):
    def _send(self, p, data, method="GET"):
        c = self.raw(p.port, timeout=scaled(5))
        c.send(data)
        return c.read_response(method)

    def test_http10_without_host_is_refused_except_health(self):
        up = self.scripted()
        p = self.start_proxy(config_text=server_toml() + group_toml("g", [("e", up.url)]))
        r = self._send(p, b"GET /status HTTP/1.0\r\n\r\n")
        self.assertEqual(r.status, 403, r)
        self.assertEqual(r.json()["error"]["type"], "permission_error")
        body = messages_body()
        r = self._send(p, b"POST /v1/messages HTTP/1.0\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(body) + body, "POST")
        self.assertEqual(r.status, 403, r)
        self.assertEqual(up.seen(), [])
        r = self._send(p, b"GET /health HTTP/1.0\r\n\r\n")
        self.assertEqual(r.status, 200, r)
        r = self._send(p, b"GET /status HTTP/1.0\r\nHost: localhost\r\n\r\n")
        self.assertEqual(r.status, 200, r)
        self.assertIn("without Host", p.stderr_text())


class TestModelKeyAsUpstreamsReadIt(ProvidersCase):
    def _proxy(self):
        up = self.scripted()
        text = server_toml() + group_toml("g", [("e", up.url)],
                                          extra={"models": '{ "claude-opus-4-8" = "vendor-opus" }'})
        return self.start_proxy(config_text=text), up

    def test_escaped_model_key_is_mapped(self):
        p, up = self._proxy()
        body = (b'{"mod\\u0065l": "claude-opus-4-8", "max_tokens": 16, '
                b'"messages": [{"role": "user", "content": "hi"}]}')
        r = self.post_messages(p.port, body=body)
        self.assertEqual(r.status, 200, r)
        sent = up.seen()[-1]
        self.assertEqual(sent["json"]["model"], "vendor-opus", sent["body"])

    def test_duplicate_model_keys_are_refused(self):
        p, up = self._proxy()
        bodies = [
            b'{"model": "claude-haiku-x", "max_tokens": 16, "model": "claude-opus-4-8", '
            b'"messages": [{"role": "user", "content": "hi"}]}',
            b'{"model": "claude-opus-4-8", "max_tokens": 16, "mod\\u0065l": "claude-haiku-x", '
            b'"messages": [{"role": "user", "content": "hi"}]}',
        ]
        for body in bodies:
            with self.subTest(body=body):
                r = self.post_messages(p.port, body=body)
                self.assertEqual(r.status, 400, r)
                self.assertIn(b"more than one", r.body)
        self.assertEqual(up.seen(), [])
        # A "model" inside nested objects is no duplicate.
        r = self.post_messages(p.port, body=json.dumps({
            "model": "claude-opus-4-8", "max_tokens": 16, "metadata": {"model": "x"},
            "messages": [{"role": "user", "content": "hi"}]}).encode())
        self.assertEqual(r.status, 200, r)
        self.assertEqual(up.seen()[-1]["json"]["model"], "vendor-opus")


if __name__ == "__main__":
    unittest.main()
