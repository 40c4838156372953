"""The web dashboard (/dashboard) in headless Chromium.

The page is served by the proxy itself and must be self-contained: the test
checks the HTML for external references and the browser for requests that
leave the proxy's origin.  In the browser (driven by playwright-core through
tests/integration/web_check.mjs) it must show every configured endpoint, show
a switch made by clicking a pin button and one made through POST /admin/pin
within 3 s, go back to auto mode with its mode control, show an error the
admin API returns, and render without script errors.  A screenshot is saved to
build/test-artifacts/dashboard.png.

Needs /usr/bin/chromium (Debian packages chromium, chromium-driver), node and
npm; playwright-core is installed once into build/node-web from npm.  Without
any of them the test is skipped, loudly.
"""

import json
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import unittest

from harness import REPO_ROOT, ZephyrTestCase, http_request, npm_ensure, scaled, wait_for

NODE_DIR = os.path.join(REPO_ROOT, "build", "node-web")
PW_PKG = "playwright-core@1"
CHROMIUM = os.environ.get("ZEPHYR_CHROMIUM", "/usr/bin/chromium")
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web_check.mjs")
ARTIFACTS = os.path.join(REPO_ROOT, "build", "test-artifacts")



def _ensure_playwright():
    """Installs playwright-core once; returns None or why it is missing."""
    pkg = os.path.join(NODE_DIR, "node_modules", "playwright-core", "package.json")
    return npm_ensure(NODE_DIR, [PW_PKG], [pkg])


def _skip_loudly(reason):
    print("\n!!! SKIPPED web dashboard test: %s\n" % reason, flush=True)
    raise unittest.SkipTest(reason)


def png_size(path):
    """(width, height) of a PNG file; raises AssertionError if it is not one."""
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 33 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise AssertionError("%s is not a PNG (starts %r)" % (path, head[:16]))
    return struct.unpack(">II", head[16:24])


class WebDashboard(ZephyrTestCase):

    def setUp(self):
        super().setUp()
        if not os.access(CHROMIUM, os.X_OK):
            _skip_loudly("%s not found: apt-get install chromium chromium-driver "
                         "(run.sh should list them in TEST_PKGS)" % CHROMIUM)
        for tool in ("node", "npm"):
            if not shutil.which(tool):
                _skip_loudly("%s not found (nodejs/npm are needed to drive Chromium)" % tool)
        reason = _ensure_playwright()
        if reason:
            _skip_loudly(reason)

    def test_page_is_self_contained(self):
        fake = self.start_fake("solo")
        p = self.proxy_for(fake, ep_name="solo")
        r = http_request(p.port, "GET", "/dashboard")
        self.assertEqual(r.status, 200, r)
        self.assertTrue((r.header("content-type") or "").startswith("text/html"), r.headers)
        html = r.body.decode("utf-8")
        self.assertIn("<!DOCTYPE html>", html[:100])
        self.assertGreater(len(html), 5000)
        # Nothing is loaded from elsewhere: no src/href to another origin or a
        # protocol-relative URL, no CSS import or url(), no external font.
        for pat in (r'''(?:src|href|action)\s*=\s*["']?\s*(?:[a-z]+:)?//''', r"@import",
                    r"url\(", r"@font-face", r"<link\b", r"<script[^>]+src", r"<iframe\b"):
            self.assertIsNone(re.search(pat, html, re.I), "external reference %r in the page" % pat)
        self.assertIn("Content-Security-Policy", html)
        # A query string does not change the page.
        r2 = http_request(p.port, "GET", "/dashboard?x=1")
        self.assertEqual(r2.status, 200)
        self.assertEqual(r2.body, r.body)

    def test_dashboard_in_chromium(self):
        self.run_dashboard(access_key=None)

    def test_dashboard_in_chromium_with_access_key(self):
        """server.access_key_env set: /dashboard answers 401 with a sign-in
        page; the key typed once opens the dashboard and is kept for the tab."""
        self.run_dashboard(access_key="zk-web-" + "5a" * 12)

    def run_dashboard(self, access_key):
        server, penv = None, None
        if access_key:
            server, penv = {"access_key_env": "ZT_ACCESS"}, {"ZT_ACCESS": access_key}
        fa = self.start_fake("fa")
        fb = self.start_fake("fb", latency_ms=int(scaled(40)))
        fc = self.start_fake("fc", latency_ms=int(scaled(80)))
        endpoints = ["alpha", "bravo", "charlie-\u03b3"]
        p = self.start_proxy(
            [{"name": "main", "endpoints": [("alpha", fa.url), ("bravo", fb.url)]},
             {"name": "backup", "endpoints": [("charlie-\u03b3", fc.url)]}],
            health_check={"interval_seconds": 3, "min_interval_seconds": 3, "timeout_seconds": 2},
            server=server, env=penv)
        wait_for(lambda: (p.status().get("current_endpoint") or {}).get("name") == "alpha",
                 scaled(10), desc="alpha current")
        # A little traffic so that tables and token counts have something,
        # a few checks so that the charts have lines, and a slow stream that
        # is in flight while the page is looked at.
        kh = [("x-zephyr-key", access_key)] if access_key else []
        for _ in range(2):
            self.assertEqual(self.post_messages(p.port, headers=kh).status, 200)
        wait_for(lambda: all(len(e["history"]) >= 3 for e in p.status()["endpoints"]),
                 scaled(20), interval=0.2, desc="three checks per endpoint")
        slow = self.stream(p.port, headers=[("x-fake-events", "100"), ("x-fake-gap-ms", "200")] + kh)
        self.assertEqual(slow.resp.status, 200)
        reader = threading.Thread(target=slow.read_all, daemon=True)
        reader.start()

        os.makedirs(ARTIFACTS, exist_ok=True)
        shot = os.path.join(ARTIFACTS, "dashboard-key.png" if access_key else "dashboard.png")
        if os.path.exists(shot):
            os.unlink(shot)
        user_data = os.path.join(self.tmp, "chromium-profile")
        os.makedirs(user_data)
        env = dict(os.environ)
        env.update({
            "PW_DIR": NODE_DIR, "CHROMIUM": CHROMIUM, "BASE_URL": p.url,
            "ENDPOINTS": json.dumps(endpoints), "PIN_CLICK": "bravo", "PIN_API": "charlie-\u03b3",
            "SCREENSHOT": shot, "USER_DATA": user_data, "HOME": self.tmp, "EXPECT_ACTIVE": "1",
        })
        if access_key:
            env["ACCESS_KEY"] = access_key
        try:
            r = subprocess.run(["node", SCRIPT], capture_output=True, text=True, env=env,
                               timeout=150, cwd=self.tmp)
        except subprocess.TimeoutExpired as e:
            self.fail("web_check.mjs did not finish in 150 s\nstdout: %s\nstderr: %s"
                      % (e.stdout, e.stderr))
        self.assertEqual(r.returncode, 0, "web_check.mjs failed:\n%s\n%s\nproxy stderr:\n%s"
                         % (r.stdout[-3000:], r.stderr[-5000:], p.stderr_text()[-3000:]))
        out = json.loads(r.stdout.strip().splitlines()[-1])
        # End the slow stream from our side; the reader sees EOF and stops.
        try:
            slow.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        reader.join(timeout=5)

        if access_key:
            self.assertIn("access key", out["signin_text"])
            for name in endpoints:
                self.assertNotIn(name, out["signin_text"], "the sign-in page shows data")
            self.assertIn("wrong access key", out["signin_error"])
            self.assertEqual(out["reload_status"], 401)
            self.assertFalse(out["reload_asked"], "a reload asked for the key again")
        self.assertEqual(sorted(out["shown"]), sorted(endpoints))
        self.assertEqual(out["initial_current"], "alpha")
        self.assertLessEqual(out["click_switch_ms"], 3000)
        self.assertEqual(out["mode_after_click"], "manual")
        self.assertIn("bravo", out["banner"])
        self.assertLessEqual(out["api_switch_ms"], 3000)
        self.assertEqual(out["mode_after_auto"], "auto")
        self.assertIn("zt injected failure", out["error_notice"])
        self.assertGreater(out["chart_nodes"], 20, "the latency chart drew (almost) nothing")
        self.assertIn("streaming", out["active_requests"])
        self.assertIn("/v1/messages", out["active_requests"])
        for name in endpoints:
            self.assertIn(name, out["legend"])
        self.assertEqual(out["external_requests"], [], "the page loaded something from elsewhere")
        self.assertEqual(out["problems"], [], "script errors in the page")

        # The clicks reached the proxy: its events say so.
        msgs = [e["message"] for e in p.status()["events"]]
        self.assertTrue(any("pinned to bravo" in m for m in msgs), msgs)
        self.assertTrue(any("mode: auto" in m for m in msgs), msgs)
        self.assertEqual(p.status()["mode"], "auto")

        self.assertTrue(os.path.exists(shot), "no screenshot at " + shot)
        self.assertGreater(os.path.getsize(shot), 10000, "the screenshot is suspiciously small")
        w, h = png_size(shot)
        self.assertGreaterEqual(w, 1000)
        self.assertGreaterEqual(h, 600)
        print("\n    screenshot: %s (%dx%d)" % (os.path.relpath(shot, REPO_ROOT), w, h), flush=True)


if __name__ == "__main__":
    unittest.main()
