"""The web dashboard (/dashboard) in headless Chromium.

The page is served by the proxy itself and must be self-contained: the test
checks the HTML for external references and the browser for requests that
leave the proxy's origin.  In the browser (driven by playwright-core through
tests/integration/web_check.mjs) it must show every configured endpoint, show
a switch made by clicking a pin button and one made through POST /admin/pin
within 3 s, go back to auto mode with its mode control, show an error the
admin API returns, and render without script errors.  A screenshot is saved to
build/test-artifacts/dashboard.png.

The lifecycle test follows a proxy that stops and starts again under the open
page (the proxy is unreachable: greyed data, "disconnected since", nothing
counting down; back as a new process: a restart marker, no "switched" banner,
old notices gone, chart lines broken), a reload that is not a restart, the
chart's tooltip, failure marks and legend, check_error and panic routing, and
a 390 px phone (no sideways scrolling, pin buttons on screen, the cards leave
room).  Its screenshots go to build/screenshots/web-lifecycle/.

Needs /usr/bin/chromium (Debian packages chromium, chromium-driver), node and
npm; playwright-core is installed once into build/node-web from npm.  Without
any of them the test is skipped, loudly.
"""

import json
import os
import queue
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
import unittest

from harness import (REPO_ROOT, Proxy, ZephyrTestCase, child_env, http_request, npm_ensure, scaled,
                     wait_for)

NODE_DIR = os.path.join(REPO_ROOT, "build", "node-web")
PW_PKG = "playwright-core@1"
CHROMIUM = os.environ.get("ZEPHYR_CHROMIUM", "/usr/bin/chromium")
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web_check.mjs")
ARTIFACTS = os.path.join(REPO_ROOT, "build", "test-artifacts")
SHOTS = os.path.join(REPO_ROOT, "build", "screenshots", "web-lifecycle")



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
        session = [("x-claude-code-session-id", "web-session-7c1f9e2a")]
        for _ in range(2):
            self.assertEqual(self.post_messages(p.port, headers=kh + session).status, 200)
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
            "SESSION_ON": "alpha",
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
        # The session's row: a short id (never the session id), on alpha; released by the button.
        self.assertEqual(len(out["sessions_rows"]), 1, out["sessions_rows"])
        self.assertRegex(out["sessions_rows"][0], r"^[0-9a-f]{8}alpha")
        self.assertNotIn("web-sess", out["sessions_rows"][0])
        self.assertTrue(out["sessions_released"])
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

    @staticmethod
    def _end_node(node):
        if node.poll() is None:
            node.kill()
            node.wait(timeout=10)
        for f in (node.stdin, node.stdout, node.stderr):
            f.close()

    def test_dashboard_lifecycle_in_chromium(self):
        fa = self.start_fake("fa")
        fb = self.start_fake("fb")
        fc = self.start_fake("fc", latency_ms=int(scaled(30)))
        endpoints = ["alpha", "bravo", "charlie"]
        groups = [{"name": "main", "endpoints": [("alpha", fa.url), ("bravo", fb.url), ("charlie", fc.url)]}]
        hc = {"interval_seconds": 3, "min_interval_seconds": 3, "timeout_seconds": 2}
        procs = {"p": self.start_proxy(groups, health_check=hc)}
        p = procs["p"]
        wait_for(lambda: (p.status().get("current_endpoint") or {}).get("name") == "alpha",
                 scaled(10), desc="alpha current")
        wait_for(lambda: all(len(e["history"]) >= 2 for e in p.status()["endpoints"]),
                 scaled(20), interval=0.2, desc="two checks per endpoint")
        # bravo's checks fail from now on: failure marks on the chart.
        fb.config(status=500)
        wait_for(lambda: any(not h["ok"] for e in p.status()["endpoints"] if e["name"] == "bravo"
                             for h in e["history"]), scaled(20), interval=0.2, desc="a failed check of bravo")
        started = p.status()["started_at"]

        shutil.rmtree(SHOTS, ignore_errors=True)
        os.makedirs(SHOTS)
        user_data = os.path.join(self.tmp, "chromium-profile")
        os.makedirs(user_data)
        env = dict(os.environ)
        env.update({
            "PW_DIR": NODE_DIR, "CHROMIUM": CHROMIUM, "BASE_URL": p.url, "SCENARIO": "lifecycle",
            "ENDPOINTS": json.dumps(endpoints), "PIN_CLICK": "charlie", "FAILING": "bravo",
            "SHOT_DIR": SHOTS, "USER_DATA": user_data, "HOME": self.tmp,
        })

        def do(what):
            """What web_check.mjs asks of the proxy while the page is open."""
            if what == "reload":
                code, body = procs["p"].admin("reload")
                self.assertEqual(code, 200, body)
                self.assertEqual(procs["p"].status()["started_at"], started,
                                 "a reload changed started_at: it is not a restart")
            elif what == "stop":
                code, killed = procs["p"].stop(scaled(15))
                self.assertEqual((code, killed), (0, False), procs["p"].stderr_text()[-2000:])
            elif what == "start":
                p2 = Proxy(p.config_path, env=child_env(), port_arg=str(p.port))
                self.addCleanup(self._stop_proxy, p2)
                procs["p"] = p2
                p2.settle()
                self.assertNotEqual(p2.status()["started_at"], started)
            else:
                raise AssertionError("unknown request %r" % what)

        node = subprocess.Popen(["node", SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=self.tmp)
        self.addCleanup(self._end_node, node)
        lines, errs = queue.Queue(), []
        threading.Thread(target=lambda: [lines.put(l) for l in node.stdout] + [lines.put(None)],
                         daemon=True).start()
        threading.Thread(target=lambda: errs.extend(node.stderr), daemon=True).start()
        out_lines, deadline = [], time.monotonic() + 200
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                node.kill()
                self.fail("web_check.mjs did not finish in 200 s\nstdout: %s\nstderr: %s"
                          % ("".join(out_lines), "".join(errs)))
            if line is None:
                break
            if line.startswith("@@ask "):
                try:
                    do(line[6:].strip())
                    reply = "ok"
                except Exception as e:  # noqa: BLE001 - told to the script, raised again below
                    reply = "err %s" % e
                node.stdin.write(reply + "\n")
                node.stdin.flush()
                if reply != "ok":
                    self.fail("while the page was open: " + reply)
            else:
                out_lines.append(line)
        rc = node.wait(timeout=10)
        self.assertEqual(rc, 0, "web_check.mjs failed:\n%s\n%s\nproxy stderr:\n%s"
                         % ("".join(out_lines)[-3000:], "".join(errs)[-5000:],
                            procs["p"].stderr_text()[-3000:]))
        out = json.loads(out_lines[-1])
        print("\n    screenshots: %s" % os.path.relpath(SHOTS, REPO_ROOT), flush=True)

        # Each part is a subtest, so that a page that gets several wrong
        # reports all of them.
        errors = out["phase_errors"]
        with self.subTest("chart"):
            # Failure marks in the endpoint's colour.
            self.assertNotIn("chart", errors)
            self.assertTrue(out["fail_colours"])
            for c in out["fail_colours"]:
                self.assertEqual(c, out["ok_colour"], "bravo's failure marks are not in bravo's colour")
        with self.subTest("legend"):
            # The legend draws what the smoothed line looks like.
            smoothed = [k for k in out["legend_samples"] if "smoothed" in k["text"]]
            self.assertTrue(smoothed and smoothed[0]["drawn"] >= 1 and smoothed[0]["w"] >= 10, out["legend_samples"])
        with self.subTest("tooltip"):
            self.assertNotIn("tooltip", errors)
            self.assertTrue(out["tooltip"]["visible"])
            self.assertIn(out["tooltip"]["ep"], out["tooltip"]["text"])
            self.assertRegex(out["tooltip"]["text"], r"\d\d:\d\d:\d\d .* ms")
        with self.subTest("1400 px layout"):
            # Whole card subtitles, no empty band under the controls.
            self.assertFalse(out["wide"]["tokens_cut"], out["wide"])
            self.assertLessEqual(out["wide"]["below_controls"], 16, out["wide"])
        with self.subTest("before the stop"):
            # A reload is not a restart; a click's switch and an error show.
            self.assertNotIn("before", errors)
            self.assertEqual(out["restarts_before"], "0")
            self.assertIn("charlie", out["banner_before"])
            self.assertIn("zt stale notice", out["notice_before"])
        with self.subTest("disconnected"):
            # The proxy stopped: said so, greyed, nothing counting on.
            self.assertNotIn("down", errors)
            for d in (out["down"]["first"], out["down"]["later"]):
                self.assertTrue(d["page_text"], "no 'disconnected since' on the page")
                self.assertRegex(d["banner"], r"disconnected since \d\d:\d\d:\d\d")
                self.assertTrue(d["banner_shown"])
                self.assertTrue(d["opacity"] < 0.8 or "grayscale" in d["filter"], d)
                self.assertNotIn("next in", d["checks_sub"])
                self.assertEqual(d["uptime"], "\u2013")
                self.assertFalse(d["switch_shown"], "the old switch banner is still up")
            self.assertEqual(out["down"]["first"]["checks_sub"], out["down"]["later"]["checks_sub"])
            self.assertEqual(out["down"]["first"]["banner"], out["down"]["later"]["banner"])
        with self.subTest("restarted"):
            # A restart, not a switch; the old notice is gone.
            a = out["after"]
            self.assertTrue(a["restart_shown"], a)
            self.assertIn("restarted", a["restart_banner"])
            self.assertFalse(a["switch_shown"], a)
            self.assertNotIn("switched", a["switch_text"])
            self.assertNotIn("zt stale notice", a["notice"])
            self.assertFalse(a["greyed"] or a["down_shown"], a)
            self.assertGreaterEqual(a["restart_marks"], 1)
            self.assertTrue(any("restart" in e for e in a["events"]), a["events"])
        with self.subTest("line breaks"):
            self.assertGreaterEqual(out["check_runs"], 2, "alpha's check line joins straight across the restart")
        with self.subTest("check_error and panic"):
            self.assertNotIn("flags", errors)
            f = out["flags"]
            self.assertIn("zt model claude-gone", f["row"])
            self.assertIn("check error", f["row"])
            self.assertTrue(f["cerr_shown"])
            self.assertIn("panic", f["group_card"])
            self.assertGreaterEqual(f["panic_tags"], 1)
        with self.subTest("fallback group on the group card (issue 13)"):
            self.assertNotIn("fallback", errors)
            self.assertIn("fallback: served by relay-b", out.get("fallback") or "", out.get("fallback"))
        with self.subTest("390 px phone"):
            ph = out["phone"]
            self.assertEqual(ph["inner_width"], 390)
            self.assertLessEqual(ph["scroll_width"], ph["inner_width"], "the page scrolls sideways")
            self.assertEqual(len(ph["pins"]), 3)
            for b in ph["pins"]:
                self.assertGreaterEqual(b["l"], 0, ph["pins"])
                self.assertLessEqual(b["r"], ph["inner_width"], ph["pins"])
            self.assertLess(ph["cards"]["b"], 0.6 * ph["inner_height"], "the cards fill the first screen")
            self.assertGreaterEqual(ph["labels"], 7)
            self.assertEqual(ph["label_overlaps"], 0, "chart axis labels overlap")
        self.assertEqual(out["phase_errors"], {})
        self.assertEqual(out["external_requests"], [])
        self.assertEqual(out["problems"], [], "script errors in the page")
        for name in ("wide-live.png", "wide-down.png", "wide-restarted.png", "phone.png"):
            self.assertGreater(os.path.getsize(os.path.join(SHOTS, name)), 10000, name)


if __name__ == "__main__":
    unittest.main()
