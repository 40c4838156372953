"""The request guard (issue 12, docs/SECURITY.md): the token the proxy injects
can be spent only by the clients it is meant for.

Each attack is played against a real proxy and a fake upstream that counts
what reaches it:

- DNS rebinding: a page on 127.evil.example (which its DNS points at
  127.0.0.1) sends Host: 127.evil.example:PORT, on /admin/*, /v1/* and /status;
- a cross-site "simple" POST (Content-Type: text/plain, no preflight) and a
  CORS preflight from another origin;
- the read paths (/status, /metrics, /dashboard, /admin/*) without the access
  key, on a bind that is not the default name: 127.0.0.2 is loopback but not
  127.0.0.1, so the Host 127.0.0.2:PORT must pass as the bind address;
- --demo bound beyond loopback without an access key.

Every refusal is a 403 (401 for a missing key) in Anthropic's error shape,
and nothing reaches the upstream.
"""

import json
import secrets
import subprocess
import unittest

from harness import (PROXY_BIN, RawConn, ZephyrTestCase, build_request, child_env,
                     is_anthropic_error, make_config, messages_body, scaled, stats_header,
                     wait_for)

HC = {"method": "messages", "interval_seconds": 600, "timeout_seconds": 5,
      "failed_interval_seconds": 600}
TOKEN = "sk-zt-group-" + "7" * 24
EVIL = "127.evil.example"


def send(port, method, path, headers=(), body=None, ip="127.0.0.1"):
    """One request on a fresh connection to ip:port; headers is a list of
    (name, value) and may carry its own Host."""
    c = RawConn(port, host=ip, timeout=scaled(10))
    try:
        c.send(build_request(method, path, list(headers), body, host="%s:%d" % (ip, port)))
        return c.read_response(method)
    finally:
        c.close()


class Guard(ZephyrTestCase):

    def setUp(self):
        super().setUp()
        self.fake = self.start_fake("a")
        self.fake.config(token=TOKEN)

    def proxy(self, server=None, env=None, health_check=HC, **kw):
        p = self.start_proxy([{"name": "g", "auth_token_env": "ZT_TOKEN",
                               "endpoints": [("a", self.fake.url)]}],
                             server=server, health_check=health_check,
                             env=dict({"ZT_TOKEN": TOKEN}, **(env or {})), **kw)
        return p

    def upstream_requests(self):
        return self.fake.stats()["requests"]

    def assertRefused(self, r, status=403):
        self.assertEqual(r.status, status, r)
        self.assertTrue(is_anthropic_error(r), r)
        self.assertNotIn(TOKEN.encode(), r.body)

    # -- DNS rebinding ----------------------------------------------------

    def test_rebinding_host_on_admin(self):
        p = self.proxy()
        evil = "%s:%d" % (EVIL, p.port)
        r = send(p.port, "POST", "/admin/pause", [("Host", evil), ("Origin", "http://" + evil),
                                                  ("Content-Type", "application/json")], b"{}")
        self.assertRefused(r)
        self.assertFalse(p.status()["checks"]["paused"])
        # The proxy's own name still works.
        own = "127.0.0.1:%d" % p.port
        r = send(p.port, "POST", "/admin/pause", [("Origin", "http://" + own),
                                                  ("Content-Type", "application/json")], b"{}")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(p.status()["checks"]["paused"])

    def test_rebinding_host_on_v1(self):
        p = self.proxy()
        before = self.upstream_requests()
        for extra in ([], [("Origin", "http://%s:%d" % (EVIL, p.port))]):
            r = send(p.port, "POST", "/v1/messages",
                     [("Host", "%s:%d" % (EVIL, p.port)), ("Content-Type", "application/json"),
                      ("anthropic-version", "2023-06-01")] + extra, messages_body())
            self.assertRefused(r)
        self.assertEqual(self.upstream_requests(), before, "a rebinding request reached the upstream")
        # The same request under the proxy's own names is served with the token.
        for host in ("127.0.0.1:%d" % p.port, "localhost:%d" % p.port, "localhost"):
            r = send(p.port, "POST", "/v1/messages",
                     [("Host", host), ("Content-Type", "application/json")], messages_body())
            self.assertEqual(r.status, 200, (host, r))
        self.assertEqual(stats_header(self.fake.stats(), "x-api-key"), [TOKEN])

    def test_rebinding_host_on_status(self):
        p = self.proxy()
        for path in ("/status", "/metrics", "/dashboard"):
            r = send(p.port, "GET", path, [("Host", "%s:%d" % (EVIL, p.port))])
            self.assertRefused(r)
            self.assertNotIn(b"endpoints", r.body)
        for host in ("127.0.0.1.evil.example", "localhost.evil.example:%d" % p.port,
                     "[::1].evil", "127.1"):
            self.assertRefused(send(p.port, "GET", "/status", [("Host", host)]))
        self.assertEqual(send(p.port, "GET", "/status", [("Host", "[::1]:%d" % p.port)]).status, 200)
        # The operator sees what was refused, to add a name of theirs to allowed_hosts.
        wait_for(lambda: "refused GET with Host %s:%d" % (EVIL, p.port) in p.stderr_text(),
                 scaled(3), desc="the refusal in the log")

    def test_allowed_hosts(self):
        p = self.proxy(server={"allowed_hosts": ["zephyr.test"]})
        r = send(p.port, "GET", "/status", [("Host", "zephyr.test:%d" % p.port)])
        self.assertEqual(r.status, 200, r)
        self.assertRefused(send(p.port, "GET", "/status", [("Host", "x.zephyr.test")]))

    # -- cross-site requests ----------------------------------------------

    def test_cross_site_simple_post(self):
        p = self.proxy()
        before = self.upstream_requests()
        r = send(p.port, "POST", "/v1/messages",
                 [("Origin", "http://evil.example"), ("Content-Type", "text/plain")],
                 messages_body())
        self.assertRefused(r)
        r = send(p.port, "POST", "/v1/messages",
                 [("Origin", "null"), ("Content-Type", "text/plain")], messages_body())
        self.assertRefused(r)
        self.assertEqual(self.upstream_requests(), before, "a cross-site POST reached the upstream")
        # The proxy's own page may; a client without Origin (the CLI, the SDK) may.
        for extra in ([("Origin", "http://127.0.0.1:%d" % p.port)], []):
            r = send(p.port, "POST", "/v1/messages",
                     [("Content-Type", "application/json")] + extra, messages_body())
            self.assertEqual(r.status, 200, r)

    PREFLIGHT = [("Access-Control-Request-Method", "POST"),
                 ("Access-Control-Request-Headers", "content-type,x-api-key")]

    def test_cross_site_preflight(self):
        p = self.proxy()
        before = self.upstream_requests()
        r = send(p.port, "OPTIONS", "/v1/messages", [("Origin", "http://evil.example")]
                 + self.PREFLIGHT)
        self.assertRefused(r)
        self.assertIsNone(r.header("access-control-allow-origin"), r)
        self.assertEqual(self.upstream_requests(), before, "a preflight reached the upstream")

    def test_allowed_origin_preflight(self):
        p = self.proxy(server={"allowed_origins": ["http://localhost:3000"]})
        before = self.upstream_requests()
        pre = self.PREFLIGHT
        self.assertRefused(send(p.port, "OPTIONS", "/v1/messages",
                                [("Origin", "http://localhost:3001")] + pre))
        # An allowed origin's preflight is answered here, never forwarded.
        r = send(p.port, "OPTIONS", "/v1/messages", [("Origin", "http://localhost:3000")] + pre)
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.header("access-control-allow-origin"), "http://localhost:3000")
        self.assertEqual(r.header("access-control-allow-headers"), "content-type,x-api-key")
        self.assertEqual(self.upstream_requests(), before, "a preflight reached the upstream")
        r = send(p.port, "POST", "/v1/messages",
                 [("Origin", "http://localhost:3000"), ("Content-Type", "application/json")],
                 messages_body())
        self.assertEqual(r.status, 200, r)

    # -- the access key on every path -------------------------------------

    def test_read_paths_need_the_key_on_a_non_default_bind(self):
        key = "zk-" + secrets.token_hex(16)
        p = self.proxy(server={"bind": "127.0.0.2", "access_key_env": "ZT_ACCESS"},
                       env={"ZT_ACCESS": key}, settle=False,
                       health_check=dict(HC, method="count_tokens"))
        ip = "127.0.0.2"
        wait_for(lambda: send(p.port, "GET", "/health", ip=ip).status == 200, scaled(10),
                 desc="/health on 127.0.0.2")
        for method, path in (("GET", "/status"), ("GET", "/metrics"), ("GET", "/dashboard"),
                             ("POST", "/admin/pause"), ("POST", "/v1/messages")):
            body = b"{}" if method == "POST" else None
            r = send(p.port, method, path, [("Content-Type", "application/json")], body, ip=ip)
            self.assertEqual(r.status, 401, (path, r))
            for leak in (b"endpoints", b"zephyr_", b"127.0.0.1:%d" % self.fake.port, b"events"):
                self.assertNotIn(leak, r.body, (path, r.body[:300]))
            if path == "/dashboard":
                self.assertIn(b'type="password"', r.body)
                self.assertIn("Content-Security-Policy", "".join(k.title() for k, _ in r.headers))
            else:
                self.assertTrue(is_anthropic_error(r), r)
            r = send(p.port, method, path, [("x-zephyr-key", key[:-1] + ("1" if key.endswith("0") else "0")),
                                             ("Content-Type", "application/json")], body, ip=ip)
            self.assertEqual(r.status, 401, (path, r))
        self.assertEqual(self.fake.stats()["messages"], 0, "a request without the key went upstream")
        # With the key every path answers, under the bind address as Host.
        hk = [("x-zephyr-key", key)]
        r = send(p.port, "GET", "/status", hk, ip=ip)
        self.assertEqual(r.status, 200, r)
        self.assertNotIn(key.encode(), r.body)
        self.assertNotIn(TOKEN.encode(), r.body)
        r = send(p.port, "GET", "/metrics", [("Authorization", "Bearer " + key)], ip=ip)
        self.assertEqual(r.status, 200, r)
        self.assertIn(b"zephyr_", r.body)
        r = send(p.port, "GET", "/dashboard", hk, ip=ip)
        self.assertEqual(r.status, 200, r)
        self.assertIn(b'id="endpoints"', r.body)
        # The admin API wants the key and, without an admin key, a loopback peer.
        r = send(p.port, "POST", "/admin/pause", hk + [("Content-Type", "application/json")],
                 b"{}", ip=ip)
        self.assertEqual(r.status, 200, r)
        r = send(p.port, "POST", "/v1/messages", hk + [("Content-Type", "application/json")],
                 messages_body(), ip=ip)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(stats_header(self.fake.stats(), "x-api-key"), [TOKEN])
        self.assertEqual(stats_header(self.fake.stats(), "x-zephyr-key"), [])
        # The Host rule still holds on this bind.
        self.assertRefused(send(p.port, "GET", "/status", hk + [("Host", EVIL)], ip=ip))
        self.assertNotIn(key, p.stderr_text())

    def test_admin_key_still_works_with_the_access_key(self):
        key = "zk-" + secrets.token_hex(16)
        admin = "za-" + secrets.token_hex(16)
        p = self.proxy(server={"access_key_env": "ZT_ACCESS", "admin_key_env": "ZT_ADMIN"},
                       env={"ZT_ACCESS": key, "ZT_ADMIN": admin})
        ct = [("Content-Type", "application/json")]
        r = send(p.port, "POST", "/admin/pause", ct + [("x-zephyr-admin-key", admin)], b"{}")
        self.assertEqual(r.status, 401, r)
        r = send(p.port, "POST", "/admin/pause", ct + [("x-zephyr-key", key)], b"{}")
        self.assertRefused(r, 403)
        r = send(p.port, "POST", "/admin/pause",
                 ct + [("x-zephyr-key", key), ("x-zephyr-admin-key", admin)], b"{}")
        self.assertEqual(r.status, 200, r)

    # -- configuration ----------------------------------------------------

    def test_demo_beyond_loopback_needs_an_access_key(self):
        r = subprocess.run([PROXY_BIN, "--demo", "--port", "0", "--bind", "0.0.0.0"],
                           capture_output=True, env=child_env(), timeout=scaled(10), cwd=self.tmp)
        err = r.stderr.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 1, err)
        self.assertIn("access key", err)
        self.assertNotIn("listening on", err)

    def test_bad_entries_are_configuration_errors(self):
        cfg = make_config([{"name": "g", "endpoints": [("a", self.fake.url)]}],
                          server={"allowed_hosts": ["zephyr.lan:8080", "ok.lan"],
                                  "allowed_origins": ["*", "http://localhost:3000/"]},
                          health_check=HC)
        path = self.write_config(cfg)
        r = subprocess.run([PROXY_BIN, "--config", path, "--check-config"], capture_output=True,
                           env=child_env(), timeout=scaled(10), cwd=self.tmp)
        err = r.stderr.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 1, err)
        self.assertRegex(err, r"config\.toml:\d+: server\.allowed_hosts\[0\]: .*without scheme, port")
        self.assertRegex(err, r"server\.allowed_origins\[0\]: .*wildcards")
        self.assertRegex(err, r"server\.allowed_origins\[1\]: .*trailing slash")
        self.assertNotIn("allowed_hosts[1]", err)


if __name__ == "__main__":
    unittest.main()
