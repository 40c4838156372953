"""
The scenarios every new user meets against the real API, end to end: the
fake upstream in its strict mode (models = "real") refuses retired and
unknown models the way the real API does (404 not_found_error "model:
NAME"), and the proxy must keep serving traffic whatever its checks say.

  - a default configuration (check model claude-haiku-4-5) is healthy;
  - a wrong check model (the retired claude-3-5-haiku-latest) is a check
    problem (check_error in /status and /metrics, one log line that says
    what to change, a /v1/models warning), never an outage;
  - check_model per endpoint, for relays that name models differently;
  - method = "cli" with no claude binary: check_error, traffic served;
  - a wrong token: the client gets 401 authentication_error, not 503;
  - an https:// endpoint with a self-signed certificate: the client gets
    502 api_error naming the endpoint and the TLS problem, not 503.
"""

import os
import re
import shutil
import ssl
import subprocess
import unittest

from harness import (ZephyrTestCase, http_request, messages_body, scaled, wait_for)
from scripted import ScriptedServer

RETIRED = "claude-3-5-haiku-latest"
CURRENT = "claude-sonnet-4-6"


def ep(status, name):
    for e in status["endpoints"]:
        if e["name"] == name:
            return e
    raise AssertionError("no endpoint %r in /status" % name)


def config(endpoints, token_env=None, health=None, group_extra=""):
    """TOML for one group; endpoints: list of (name, url, check_model or None)."""
    out = ["[server]", "shutdown_grace_ms = 3000", "", "[[groups]]", 'name = "main"']
    if token_env:
        out.append('auth_token_env = "%s"' % token_env)
    if group_extra:
        out.append(group_extra)
    out.append("endpoints = [")
    for name, url, model in endpoints:
        extra = ', check_model = "%s"' % model if model else ""
        out.append('  { url = "%s", name = "%s"%s },' % (url, name, extra))
    out.append("]")
    if health:
        out.append("[health_check]")
        for k, v in health.items():
            out.append('%s = %s' % (k, ('"%s"' % v) if isinstance(v, str) else v))
    return "\n".join(out) + "\n"


class TestRealWorld(ZephyrTestCase):

    def real_fake(self, name="fake", **knobs):
        return self.start_fake(name, models="real", **knobs)

    def post(self, proxy, model=CURRENT, headers=()):
        return self.post_messages(proxy.port, messages_body(model=model), headers=headers)

    def wait_status(self, proxy, name, pred, what, timeout=None):
        box = {}

        def cond():
            box["ep"] = ep(proxy.status(), name)
            return pred(box["ep"])
        try:
            wait_for(cond, scaled(10) if timeout is None else timeout, desc=what)
        except AssertionError:
            self.fail("%s; last /status entry %r\nproxy log:\n%s"
                      % (what, box.get("ep"), proxy.stderr_text()[-3000:]))
        return box["ep"]

    # -- the fake itself ---------------------------------------------------

    def test_fake_refuses_retired_and_unknown_models_like_the_real_api(self):
        f = self.real_fake()
        for model in (RETIRED, "claude-nonesuch"):
            r = self.post_messages(f.port, messages_body(model=model))
            self.assertEqual(r.status, 404, r)
            self.assertEqual(r.json(), {"type": "error", "error": {
                "type": "not_found_error", "message": "model: %s" % model}})
        for model in ("claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-8",
                      "claude-haiku-4-5-20251001"):
            r = self.post_messages(f.port, messages_body(model=model))
            self.assertEqual(r.status, 200, (model, r))
        r = http_request(f.port, "GET", "/v1/models")
        self.assertEqual(r.status, 200, r)
        ids = [m["id"] for m in r.json()["data"]]
        self.assertIn("claude-haiku-4-5", ids)
        self.assertNotIn(RETIRED, ids)
        # Without the knob every model is served, as the older tests expect.
        f.config(models="")
        self.assertEqual(self.post_messages(f.port, messages_body(model=RETIRED)).status, 200)

    # -- check models ------------------------------------------------------

    def test_default_configuration_is_healthy_against_the_real_model_list(self):
        f = self.real_fake()
        p = self.start_proxy(config_text=config([("a", f.url, None)]))
        e = self.wait_status(p, "a", lambda e: e["status"] not in ("unknown", "checking"),
                             "first check of a")
        self.assertEqual(e["status"], "healthy", e)
        self.assertIsNone(e["check_error"], e)
        r = self.post(p)
        self.assertEqual(r.status, 200, r)

    def test_wrong_check_model_is_a_visible_check_error_not_an_outage(self):
        fa = self.real_fake("fa")
        fb = self.real_fake("fb")
        p = self.start_proxy(config_text=config([("a", fa.url, None), ("b", fb.url, None)],
                                                health={"model": RETIRED}))
        for name in ("a", "b"):
            self.wait_status(p, name, lambda e: e["checks"] >= 1, "first check of %s" % name)
        # Every request is served although no check ever passes.
        for _ in range(4):
            r = self.post(p)
            self.assertEqual(r.status, 200, "%r\nproxy log:\n%s" % (r, p.stderr_text()[-2000:]))
        for name in ("a", "b"):
            e = self.wait_status(p, name, lambda e: e["status"] == "check_error",
                                 "check_error on %s" % name)
            self.assertIn("set check_model", e["check_error"])
            self.assertIn(RETIRED, e["check_error"])
            self.assertTrue(e["available"], e)
            self.assertEqual(e["circuit"], "closed", e)
        # More checks of the same problem: still one log line per endpoint.
        n_checks = ep(p.status(), "a")["checks"]
        p.admin("check")
        self.wait_status(p, "a", lambda e: e["checks"] > n_checks, "a second check of a")
        r = self.post(p)
        self.assertEqual(r.status, 200, r)
        log = p.stderr_text()
        lines = [l for l in log.splitlines() if "check of endpoint a is misconfigured" in l]
        self.assertEqual(len(lines), 1, log[-3000:])
        self.assertIn("set check_model: this endpoint does not serve %s" % RETIRED, lines[0])
        self.assertNotIn("no usable endpoint", log)
        # /metrics shows the status of its own.
        m = http_request(p.port, "GET", "/metrics").body.decode()
        self.assertRegex(m, r'zephyr_endpoint_status\{endpoint="a",group="main",'
                            r'status="check_error"\} 1')
        # The /v1/models probe at start warned too.
        e = self.wait_status(p, "a", lambda e: e.get("models_warning"), "models_warning on a")
        self.assertIn(RETIRED, e["models_warning"])
        self.assertIn("does not list", p.stderr_text())

    def test_check_model_per_endpoint(self):
        relay = self.start_fake("relay", models="relay-haiku,relay-sonnet")
        real = self.real_fake("real")
        p = self.start_proxy(config_text=config(
            [("relay", relay.url, "relay-haiku"), ("real", real.url, None)]))
        for name in ("relay", "real"):
            e = self.wait_status(p, name, lambda e: e["status"] not in ("unknown", "checking"),
                                 "first check of %s" % name)
            self.assertEqual(e["status"], "healthy", e)
            self.assertIsNone(e["models_warning"], e)

    def test_cli_binary_missing_is_a_check_error(self):
        f = self.real_fake()
        missing = os.path.join(self.tmp, "no-claude-here")
        p = self.start_proxy(config_text=config([("a", f.url, None)], health={
            "method": "cli", "claude_binary_path": missing}))
        self.wait_status(p, "a", lambda e: e["checks"] >= 1, "first check of a")
        r = self.post(p)
        self.assertEqual(r.status, 200, r)
        e = self.wait_status(p, "a", lambda e: e["status"] == "check_error", "check_error on a")
        self.assertIn("claude_binary_path", e["check_error"])
        self.assertIn("is not an executable file", p.stderr_text())
        # --check-config says so too, and still passes.
        cp = subprocess.run([p.args[0], "--check-config", "--config", p.config_path],
                            capture_output=True, text=True, timeout=scaled(20))
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn("warning: health_check.claude_binary_path", cp.stderr)

    def test_check_config_says_when_libcurl_cannot_be_loaded(self):
        path = self.write_config(config([("tls-ep", "https://127.0.0.1:9", None)]))
        # https:// goes through libcurl only behind a proxy variable.
        env = dict(os.environ, ZEPHYR_LIBCURL=os.path.join(self.tmp, "no-libcurl.so"),
                   https_proxy="http://127.0.0.1:9")
        from harness import PROXY_BIN
        cp = subprocess.run([PROXY_BIN, "--check-config", "--config", path], env=env,
                            capture_output=True, text=True, timeout=scaled(20))
        self.assertEqual(cp.returncode, 1, "stdout: %s\nstderr: %s" % (cp.stdout, cp.stderr))
        self.assertIn("endpoint tls-ep needs libcurl", cp.stderr)
        self.assertNotIn(": OK", cp.stdout)
        # With libcurl loadable the same file is fine.
        cp = subprocess.run([PROXY_BIN, "--check-config", "--config", path],
                            capture_output=True, text=True, timeout=scaled(20))
        self.assertEqual(cp.returncode, 0, cp.stderr)

    # -- the error that names the real cause -------------------------------

    def test_wrong_token_gives_401_not_503(self):
        f = self.real_fake(token="sk-zt-right-token-0123456789")
        p = self.start_proxy(config_text=config([("a", f.url, None), ("b", f.url + "/", None)],
                                                token_env="ZT_TOKEN"),
                             env={"ZT_TOKEN": "sk-zt-wrong-token-9876543210"})
        for name in ("a", "b"):
            self.wait_status(p, name, lambda e: e["status"] == "auth_failed",
                             "auth_failed on %s" % name)
        for i in range(6):
            r = self.post(p)
            self.assertAnthropicError(r, 401)
            self.assertEqual(r.json()["error"]["type"], "authentication_error", r)
        msg = r.json()["error"]["message"]
        self.assertNotIn("sk-zt-wrong-token", msg)
        self.assertNotIn("sk-zt-wrong-token", p.stderr_text())

    def test_every_endpoint_overloaded_gives_529_not_503(self):
        fa = self.real_fake("oa", status=529)
        fb = self.real_fake("ob", status=529)
        p = self.start_proxy(config_text=config([("a", fa.url, None), ("b", fb.url, None)]))
        for name in ("a", "b"):
            self.wait_status(p, name, lambda e: e["status"] == "failed", "%s failed" % name)
        # Past the live circuits too (3 live failures each): always 529.
        for _ in range(6):
            r = self.post(p)
            self.assertAnthropicError(r, 529)
            self.assertEqual(r.json()["error"]["type"], "overloaded_error", r)
            self.assertIsNotNone(r.header("retry-after"), r)

    def test_self_signed_certificate_gives_502_naming_endpoint_and_tls(self):
        if not shutil.which("openssl"):
            self.skipTest("openssl is not installed: cannot make a self-signed certificate")
        cert, key = os.path.join(self.tmp, "cert.pem"), os.path.join(self.tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert],
                       check=True, capture_output=True, timeout=scaled(60))
        srv = TlsServer(cert, key)
        self.addCleanup(srv.stop)
        p = self.start_proxy(config_text=config([("selfsigned", "https://127.0.0.1:%d" % srv.port,
                                                  None)]))
        self.wait_status(p, "selfsigned", lambda e: e["status"] == "failed",
                         "the check of selfsigned failing")
        # Enough requests to go past the live circuit too: every answer
        # names the endpoint and the TLS problem.
        for _ in range(5):
            r = self.post(p)
            self.assertAnthropicError(r, 502)
            err = r.json()["error"]
            self.assertEqual(err["type"], "api_error", r)
            self.assertIn("selfsigned", err["message"])
            self.assertRegex(err["message"], r"TLS|SSL|certificate")


class TlsServer(ScriptedServer):
    """A TLS server on 127.0.0.1 with the given certificate; answers 200 to
    anything that gets through the handshake (nothing should)."""

    conn_timeout = 2

    def __init__(self, cert, key):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        super().__init__(backlog=16)

    def handle(self, c):
        try:
            with self.ctx.wrap_socket(c, server_side=True) as s:
                s.recv(65536)
                s.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        except ssl.SSLError:
            pass

    def stop(self):
        self.close()


if __name__ == "__main__":
    unittest.main()
