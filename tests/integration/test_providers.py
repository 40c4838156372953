"""
Several provider accounts behind one proxy: fallback chains across groups,
per-endpoint tokens, usage caps that rest an endpoint, stream header
timeouts, model mapping and model-aware routing.

Besides the fake upstream binary, these tests use ScriptedUpstream: a tiny
HTTP/1.1 server in this process (127.0.0.1, ephemeral port) that records
every request (headers and body) and answers each with what the test's
script returns, so that error bodies can be exactly what the official API
or a relay sends.
"""

import json
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))

from harness import (ZephyrTestCase, messages_body, scaled, stats_header,  # noqa: E402
                     toml_value, wait_for)
from scripted import ScriptedHandler, ScriptedHTTPServer  # noqa: E402


def ok_message(model):
    return json.dumps({
        "id": "msg_scripted", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }).encode()


def api_error(etype, message):
    return json.dumps({"type": "error", "error": {"type": etype, "message": message}}).encode()


class _ScriptedHandler(ScriptedHandler):
    def do_GET(self):
        self._answer(200, {}, b"ok")

    def do_POST(self):
        body = self.read_body()
        try:
            obj = json.loads(body or b"{}")
        except ValueError:
            obj = {}
        req = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
               "body": body, "json": obj}
        if "claude-zephyr-health" in (self.headers.get("user-agent") or ""):
            self._answer(200, {}, ok_message(obj.get("model", "?")))
            return
        with self.owner.lock:
            self.owner.requests.append(req)
        status, hdrs, out = self.owner.script(req)
        self._answer(status, hdrs, out)

    def _answer(self, status, hdrs, body):
        # x-scripted not last: at eeb715c the proxy reads content-length with
        # strtoll past the end of the last header's value (h1 keeps values
        # unterminated), which the on_head rework fixes.
        self.answer(status, body, list(hdrs.items()) + [("x-scripted", "1")])


class ScriptedUpstream(ScriptedHTTPServer):
    """Records requests; answers POSTs with script(req) -> (status, headers,
    body), health checks (user-agent claude-zephyr-health) always with 200."""

    def __init__(self, script=None, tls=None):
        self.requests = []
        self.lock = threading.Lock()
        self.script = script or (lambda req: (200, {}, ok_message(req["json"].get("model", "?"))))
        super().__init__(_ScriptedHandler, tls)

    def seen(self):
        with self.lock:
            return list(self.requests)


def group_toml(name, endpoints, token_env=None, fallback=None, extra=None):
    """endpoints: list of (name, url) or (name, url, {extra endpoint keys})."""
    out = ["[[groups]]", "name = %s" % toml_value(name)]
    if token_env:
        out.append("auth_token_env = %s" % toml_value(token_env))
    if fallback is not None:
        out.append("fallback_groups = %s" % toml_value(fallback))
    for k, v in (extra or {}).items():
        out.append("%s = %s" % (k, v))
    out.append("endpoints = [")
    for ep in endpoints:
        keys = {"url": toml_value(ep[1]), "name": toml_value(ep[0])}
        for k, v in (ep[2] if len(ep) > 2 else {}).items():
            keys[k] = v if k in ("models", "headers") else toml_value(v)
        out.append("  { %s }," % ", ".join("%s = %s" % kv for kv in keys.items()))
    out.append("]")
    return "\n".join(out) + "\n"


def server_toml(**keys):
    keys.setdefault("shutdown_grace_ms", 3000)
    return "[server]\n" + "".join("%s = %s\n" % (k, toml_value(v)) for k, v in keys.items()) + "\n"


class ProvidersCase(ZephyrTestCase):
    def scripted(self, script=None, tls=None):
        s = ScriptedUpstream(script, tls)
        self.addCleanup(s.close)
        return s

    def dead_url(self):
        from harness import refused_port
        return "http://127.0.0.1:%d" % refused_port()


class TestFallbackChain(ProvidersCase):
    def test_group_down_falls_back_to_next_group_with_its_token(self):
        b = self.start_fake("b", token="tok-group-b-222")
        text = (server_toml()
                + group_toml("a", [("a1", self.dead_url())], token_env="ZT_TOK_A", fallback=["b"])
                + group_toml("b", [("b1", b.url)], token_env="ZT_TOK_B"))
        p = self.start_proxy(config_text=text, env={"ZT_TOK_A": "tok-group-a-111",
                                                    "ZT_TOK_B": "tok-group-b-222"})
        r, stats = self.captured(b, lambda h: self.post_messages(p.port, headers=h))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-zephyr-group"), "b", r)
        self.assertEqual(r.header("x-zephyr-endpoint"), "b1", r)
        self.assertEqual(stats_header(stats, "x-api-key"), ["tok-group-b-222"])
        st = p.status()
        self.assertTrue(st["fallback"]["active"], st["fallback"])
        self.assertEqual(st["fallback"]["group"], "b")
        self.assertGreaterEqual(st["fallback"]["requests"], 1)
        gb = [g for g in st["groups"] if g["name"] == "b"][0]
        self.assertGreaterEqual(gb["fallback_served"], 1)
        self.assertEqual([g for g in st["groups"] if g["name"] == "a"][0]["fallback_groups"], ["b"])
        self.assertIn("fallback", p.stderr_text())
        self.assertNotIn("tok-group-b-222", p.stderr_text())

    def test_failed_attempts_in_group_move_to_fallback_group(self):
        a = self.start_fake("a")
        b = self.start_fake("b")
        text = (server_toml()
                + group_toml("a", [("a1", a.url)], token_env="ZT_TOK_A", fallback=["b"])
                + group_toml("b", [("b1", b.url)], token_env="ZT_TOK_B"))
        p = self.start_proxy(config_text=text, env={"ZT_TOK_A": "tok-group-a-111",
                                                    "ZT_TOK_B": "tok-group-b-222"})
        a.config(status=503)
        r, stats = self.captured(b, lambda h: self.post_messages(p.port, headers=h))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-zephyr-group"), "b", r)
        self.assertEqual(r.header("x-zephyr-attempts"), "2", r)
        self.assertEqual(stats_header(stats, "x-api-key"), ["tok-group-b-222"])
        self.assertGreaterEqual(a.stats()["messages"], 1)
        # The current group comes back as soon as it is usable again.
        a.config(status=200)
        p.admin("check", {})
        def back():
            r2 = self.post_messages(p.port)
            return r2.status == 200 and r2.header("x-zephyr-group") == "a" and r2
        wait_for(back, scaled(20), interval=0.3, desc="group a serving again")
        self.assertFalse(p.status()["fallback"]["active"])

    def test_fallback_validation(self):
        text = (server_toml()
                + group_toml("a", [("a1", "http://127.0.0.1:9")], fallback=["a", "nope", "b", "b"])
                + group_toml("b", [("b1", "http://127.0.0.1:9")]))
        path = self.write_config(text)
        import subprocess
        from harness import PROXY_BIN, child_env
        r = subprocess.run([PROXY_BIN, "--config", path, "--check-config"], capture_output=True,
                           text=True, timeout=scaled(10), env=child_env())
        self.assertNotEqual(r.returncode, 0)
        err = r.stderr + r.stdout
        self.assertIn("groups[0].fallback_groups", err)
        self.assertIn("this group itself", err)
        self.assertIn("no group is named \"nope\"", err)
        self.assertIn("listed twice", err)


class TestEndpointToken(ProvidersCase):
    def test_endpoint_token_overrides_group_token(self):
        a = self.start_fake("a", token="tok-endpoint-own-9")
        text = (server_toml()
                + group_toml("g", [("e1", a.url, {"auth_token_env": "ZT_TOK_E",
                                                  "auth_header": "bearer"})],
                             token_env="ZT_TOK_G"))
        p = self.start_proxy(config_text=text, env={"ZT_TOK_G": "tok-group-shared-1",
                                                    "ZT_TOK_E": "tok-endpoint-own-9"})
        r, stats = self.captured(a, lambda h: self.post_messages(p.port, headers=h))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(stats_header(stats, "authorization"), ["Bearer tok-endpoint-own-9"])
        self.assertEqual(stats_header(stats, "x-api-key"), [])
        st = p.status()
        self.assertEqual([e["status"] for e in st["endpoints"]], ["healthy"], st["endpoints"])


class TestUsageCaps(ProvidersCase):
    CAP_BODIES = [
        (400, api_error("invalid_request_error",
                        "Your credit balance is too low to access the Anthropic API. Please go to "
                        "Plans & Billing to upgrade or purchase credits.")),
        (402, api_error("billing_error", "insufficient balance")),
        (403, api_error("permission_error", "quota exhausted for this key")),
        (429, api_error("rate_limit_error", "usage limit reached for this account")),
    ]

    def test_usage_cap_rests_endpoint_and_fails_over(self):
        for status, body in self.CAP_BODIES:
            with self.subTest(status=status):
                self._one_cap(status, body)

    def _one_cap(self, status, body):
        capped = self.scripted(lambda req: (status, {}, body))
        good = self.scripted()
        text = (server_toml(usage_cap_rest_s=1800)
                + group_toml("a", [("capped", capped.url)], token_env="ZT_TOK_A", fallback=["b"])
                + group_toml("b", [("good", good.url)], token_env="ZT_TOK_B"))
        p = self.start_proxy(config_text=text, env={"ZT_TOK_A": "tok-group-a-111",
                                                    "ZT_TOK_B": "tok-group-b-222"})
        r = self.post_messages(p.port)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-zephyr-endpoint"), "good", r)
        self.assertEqual(len(capped.seen()), 1)
        ep = [e for e in p.status()["endpoints"] if e["name"] == "capped"][0]
        self.assertIsNotNone(ep["rested"], ep)
        self.assertIn("usage cap", ep["rested"]["reason"])
        self.assertGreater(ep["rested"]["seconds_left"], 1700)
        self.assertNotIn(ep["status"], ("failed", "auth_failed"), ep)
        # Resting: the next request does not go there at all.
        r = self.post_messages(p.port)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(capped.seen()), 1)
        self._stop_proxy(p)

    def test_usage_cap_rest_follows_retry_after(self):
        capped = self.scripted(lambda req: (402, {"retry-after": "120"},
                                            api_error("billing_error", "no credit")))
        good = self.scripted()
        text = (server_toml()
                + group_toml("a", [("capped", capped.url)], fallback=["b"])
                + group_toml("b", [("good", good.url)]))
        p = self.start_proxy(config_text=text)
        r = self.post_messages(p.port)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(capped.seen()), 1)
        ep = [e for e in p.status()["endpoints"] if e["name"] == "capped"][0]
        self.assertIsNotNone(ep["rested"], ep)
        self.assertLess(ep["rested"]["seconds_left"], 121)
        self.assertGreater(ep["rested"]["seconds_left"], 100)

    def test_ordinary_4xx_passes_through_unchanged(self):
        body = api_error("invalid_request_error", "max_tokens: field required")
        up = self.scripted(lambda req: (400, {}, body))
        text = server_toml() + group_toml("g", [("e", up.url)])
        p = self.start_proxy(config_text=text)
        r = self.post_messages(p.port)
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.body, body)
        self.assertEqual(len(up.seen()), 1)
        ep = p.status()["endpoints"][0]
        self.assertIsNone(ep["rested"], ep)


class TestStreamHeaderTimeout(ProvidersCase):
    def _two_groups(self, **server):
        hung = self.start_fake("hung")
        good = self.start_fake("good")
        text = (server_toml(header_timeout_ms=20000, **server)
                + group_toml("a", [("hung", hung.url)], fallback=["b"])
                + group_toml("b", [("good", good.url)]))
        p = self.start_proxy(config_text=text)
        hung.config(hang=True)
        return p, hung, good

    def test_stream_moves_on_after_stream_header_timeout(self):
        p, hung, good = self._two_groups(stream_header_timeout_ms=800)
        t0 = time.monotonic()
        s = self.stream(p.port)
        evs = s.read_all()
        took = time.monotonic() - t0
        self.assertEqual(s.resp.status, 200, s.resp)
        self.assertEqual(s.resp.header("x-zephyr-endpoint"), "good", s.resp)
        self.assertEqual(s.resp.header("x-zephyr-attempts"), "2", s.resp)
        self.assertIn("message_stop", [e.event for e in evs])
        self.assertGreaterEqual(took, 0.7)
        self.assertLess(took, scaled(5), "a hung endpoint held the stream %.1f s" % took)

    def test_waiting_request_moves_on_when_its_endpoint_is_marked_failed(self):
        p, hung, good = self._two_groups(stream_header_timeout_ms=1000)
        # A non-streaming request keeps the long header timeout (20 s) ...
        c = self.raw(p.port, timeout=scaled(15))
        from harness import build_request
        c.send(build_request("POST", "/v1/messages", [("content-type", "application/json")],
                             messages_body()))
        wait_for(lambda: hung.stats()["active"] >= 1, scaled(5), desc="request waiting on hung")
        self.assertTrue(c.no_data_within(0.3))
        # ... until a stream on the same endpoint times out and marks it failed:
        # then it moves on at once instead of waiting out its 20 s.
        t0 = time.monotonic()
        s = self.stream(p.port)
        s.read_all()
        self.assertEqual(s.resp.header("x-zephyr-endpoint"), "good", s.resp)
        r = c.read_response("POST")
        took = time.monotonic() - t0
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-zephyr-endpoint"), "good", r)
        self.assertLess(took, scaled(5), "the waiting request stayed %.1f s" % took)

    def test_timeout_validation(self):
        import subprocess
        from harness import PROXY_BIN, child_env
        for server, needle in (({"stream_header_timeout_ms": 40000, "retry_budget_ms": 30000},
                                "server.stream_header_timeout_ms"),
                               ({"retry_budget_ms": 20000}, "server.retry_budget_ms"),
                               ({"stream_header_timeout_ms": 9000, "header_timeout_ms": 5000},
                                "longer than server.header_timeout_ms")):
            text = server_toml(**server) + group_toml("a", [("a1", "http://127.0.0.1:9")])
            path = self.write_config(text)
            r = subprocess.run([PROXY_BIN, "--config", path, "--check-config"],
                               capture_output=True, text=True, timeout=scaled(10), env=child_env())
            self.assertEqual(r.returncode, 1, (server, r.stdout, r.stderr))
            self.assertIn(needle, r.stderr, server)


MODELS = '{ "claude-opus-4-8" = "vendor/claude-opus-4.8", "*" = "claude-sonnet-4-6" }'


class TestModels(ProvidersCase):
    def test_model_map_rewrites_the_body_sent_upstream(self):
        up = self.scripted()
        own = self.scripted()
        text = (server_toml()
                + group_toml("g", [("mapped", up.url)], extra={"models": MODELS}, fallback=["h"])
                + group_toml("h", [("own", own.url, {"models": '{ "claude-opus-4-8" = "own-opus" }'})]))
        p = self.start_proxy(config_text=text)
        body = json.dumps({"model": "claude-opus-4-8", "max_tokens": 16,
                           "metadata": {"model": "keep-me"},
                           "messages": [{"role": "user", "content": "say \"model\": x"}]}).encode()
        r = self.post_messages(p.port, body=body)
        self.assertEqual(r.status, 200, r)
        sent = up.seen()[-1]
        self.assertEqual(sent["json"]["model"], "vendor/claude-opus-4.8")
        self.assertEqual(sent["json"]["metadata"], {"model": "keep-me"})
        self.assertEqual(sent["body"], body.replace(b'"claude-opus-4-8"', b'"vendor/claude-opus-4.8"'))
        # "*" maps every other model; count_tokens bodies too.
        r = self.post_messages(p.port, body=messages_body(model="claude-haiku-x"),
                               path="/v1/messages/count_tokens")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(up.seen()[-1]["json"]["model"], "claude-sonnet-4-6")
        self.assertEqual(up.seen()[-1]["path"], "/v1/messages/count_tokens")
        # Usage is counted under the model the client asked for.
        from harness import http_request
        m = http_request(p.port, "GET", "/metrics").body.decode()
        self.assertIn('model="claude-opus-4-8"', m)
        self.assertNotIn('model="vendor/claude-opus-4.8"', m)

    def test_endpoint_map_replaces_group_map_and_unmapped_pass(self):
        up = self.scripted()
        text = (server_toml()
                + group_toml("g", [("e", up.url, {"models": '{ "claude-opus-4-8" = "own-opus" }'})],
                             extra={"models": MODELS}))
        p = self.start_proxy(config_text=text)
        self.assertEqual(self.post_messages(p.port, body=messages_body(model="claude-opus-4-8")).status, 200)
        self.assertEqual(up.seen()[-1]["json"]["model"], "own-opus")
        raw = messages_body(model="claude-other")
        self.assertEqual(self.post_messages(p.port, body=raw).status, 200)
        self.assertEqual(up.seen()[-1]["json"]["model"], "claude-other")
        self.assertEqual(up.seen()[-1]["body"], raw)

    def test_404_model_moves_to_next_endpoint_without_health_penalty(self):
        def no_opus(req):
            if req["json"].get("model") == "claude-opus-4-8":
                return 404, {}, api_error("not_found_error", "model: claude-opus-4-8")
            return 200, {}, ok_message(req["json"].get("model", "?"))
        a = self.scripted(no_opus)
        b = self.scripted()
        text = (server_toml()
                + group_toml("a", [("a1", a.url)], fallback=["b"])
                + group_toml("b", [("b1", b.url)]))
        p = self.start_proxy(config_text=text)
        r = self.post_messages(p.port, body=messages_body(model="claude-opus-4-8"))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-zephyr-endpoint"), "b1", r)
        self.assertEqual(len(a.seen()), 1)
        st = p.status()
        a1 = [e for e in st["endpoints"] if e["name"] == "a1"][0]
        self.assertEqual(a1["status"], "healthy", a1)
        self.assertEqual(a1["failures"], 0, a1)
        # Remembered: the next opus request goes straight to b1; others stay on a1.
        r = self.post_messages(p.port, body=messages_body(model="claude-opus-4-8"))
        self.assertEqual(r.header("x-zephyr-endpoint"), "b1", r)
        self.assertEqual(len(a.seen()), 1)
        r = self.post_messages(p.port, body=messages_body(model="claude-sonnet-4-6"))
        self.assertEqual(r.header("x-zephyr-endpoint"), "a1", r)

    def test_404_model_reaches_client_when_no_endpoint_serves_it(self):
        body404 = api_error("not_found_error", "model: claude-nope")
        a = self.scripted(lambda req: (404, {}, body404))
        b = self.scripted(lambda req: (404, {}, body404))
        text = server_toml() + group_toml("g", [("a1", a.url), ("b1", b.url)])
        p = self.start_proxy(config_text=text)
        r = self.post_messages(p.port, body=messages_body(model="claude-nope"))
        self.assertEqual(r.status, 404, r)
        self.assertEqual(r.body, body404)
        self.assertEqual(len(a.seen()) + len(b.seen()), 2)
        self.assertEqual(r.header("x-zephyr-attempts"), "2", r)


def make_private_ca(d):
    """A CA and a server certificate for 127.0.0.1 signed by it, made with
    the openssl command; returns (ca.pem, cert.pem, key.pem) or None."""
    import shutil
    import subprocess
    if not shutil.which("openssl"):
        return None
    ca_key, ca, key, csr, cert = (os.path.join(d, n) for n in
                                  ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem"))
    ext = os.path.join(d, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n")
    cmds = [
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
         "-days", "2", "-subj", "/CN=zephyr test CA"],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "2", "-extfile", ext],
    ]
    for c in cmds:
        if subprocess.run(c, capture_output=True, timeout=60).returncode != 0:
            return None
    return ca, cert, key


class TestEndpointConnection(ProvidersCase):
    def test_endpoint_headers_are_sent_and_env_values_stay_secret(self):
        fake = self.start_fake("relay")
        text = server_toml() + group_toml("g", [("e", fake.url, {
            "headers": '{ "X-Relay-Account" = "acme", "X-Relay-Key" = "${ZT_RELAY_KEY}" }'})])
        p = self.start_proxy(config_text=text, env={"ZT_RELAY_KEY": "relay-secret-7f3a9c"})
        r, stats = self.captured(fake, lambda h: self.post_messages(p.port, headers=h))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(stats_header(stats, "x-relay-account"), ["acme"])
        self.assertEqual(stats_header(stats, "x-relay-key"), ["relay-secret-7f3a9c"])
        # The health check sends them too.
        st = p.status()
        self.assertEqual(st["endpoints"][0]["status"], "healthy")
        self.assertNotIn("relay-secret-7f3a9c", json.dumps(st))
        self.assertNotIn("relay-secret-7f3a9c", p.stderr_text())

    def test_endpoint_proxy_carries_the_exchange(self):
        via = self.scripted()  # acts as the HTTP proxy: it sees absolute-form targets
        dead = self.dead_url()
        text = server_toml() + group_toml("g", [("e", dead, {"proxy": via.url})])
        p = self.start_proxy(config_text=text)
        r = self.post_messages(p.port)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(via.seen()[-1]["path"], dead + "/v1/messages")

    def test_ca_file_verifies_a_private_ca(self):
        certs = make_private_ca(self.tmp)
        if not certs:
            self.skipTest("openssl could not make a test CA; ca_file not exercised")
        ca, cert, key = certs
        up = self.scripted(tls=(cert, key))
        text = (server_toml()
                + group_toml("a", [("private", up.url, {"ca_file": ca})], fallback=["b"])
                + group_toml("b", [("plain", up.url)]))
        p = self.start_proxy(config_text=text)
        r = self.post_messages(p.port)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-zephyr-endpoint"), "private", r)
        # Without the CA the same server is refused: verification is never off.
        plain = [e for e in p.status()["endpoints"] if e["name"] == "plain"][0]
        self.assertEqual(plain["status"], "failed", plain)

    def test_connection_settings_validation(self):
        import subprocess
        from harness import PROXY_BIN, child_env
        text = server_toml() + group_toml("g", [
            ("a", "http://127.0.0.1:9", {"headers": '{ "Host" = "x", "Bad Name" = "y", '
                                                    '"X-Split" = "a\\r\\nInjected: 1" }',
                                         "proxy": "ftp://p.example", "ca_file": "/nonexistent/ca.pem"})])
        path = self.write_config(text)
        r = subprocess.run([PROXY_BIN, "--config", path, "--check-config"], capture_output=True,
                           text=True, timeout=scaled(10), env=child_env())
        self.assertEqual(r.returncode, 1, r)
        for needle in ("Host cannot be set here", '"Bad Name" is not a valid header name', "control characters",
                       "proxy: not a proxy URL", "ca_file: cannot read /nonexistent/ca.pem",
                       "applies to https:// endpoints only"):
            self.assertIn(needle, r.stderr)


if __name__ == "__main__":
    unittest.main()
