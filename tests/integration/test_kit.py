"""The operator's kit: the JSON-lines request log, monitor.sh, make install,
the man page and --version."""

import json
import os
import subprocess
import unittest

from harness import REPO_ROOT, PROXY_BIN, ZephyrTestCase, make_config, scaled, wait_for

TOKEN = "sk-zt-kit-token-0123456789abcdef"
HC = {"method": "count_tokens", "interval_seconds": 300, "timeout_seconds": 5}


class Kit(ZephyrTestCase):

    def test_request_log_has_one_line_per_request_without_secrets(self):
        fake = self.start_fake("a")
        fake.config(token=TOKEN)
        log = os.path.join(self.tmp, "requests.jsonl")
        p = self.start_proxy(
            config_text=make_config([{"name": "g", "auth_token_env": "ZT_TOKEN",
                                      "endpoints": [("a", fake.url)]}],
                                    server={"request_log": log}, health_check=HC),
            env={"ZT_TOKEN": TOKEN})
        self.assertEqual(self.post_messages(p.port, headers=[("x-api-key", "client-secret-key")]).status, 200)
        s = self.stream(p.port)
        self.assertEqual([e.event for e in s.events()][-1], "message_stop")
        wait_for(lambda: os.path.exists(log) and len(open(log).read().splitlines()) >= 2,
                 scaled(3), desc="two request log lines")
        text = open(log).read()
        self.assertNotIn(TOKEN, text)
        self.assertNotIn("client-secret-key", text)
        lines = [json.loads(l) for l in text.splitlines()]
        self.assertEqual(len(lines), 2)
        for rec in lines:
            self.assertEqual(rec["endpoint"], "a")
            self.assertEqual(rec["status"], 200)
            self.assertEqual(rec["method"], "POST")
            self.assertEqual(rec["path"], "/v1/messages")
            self.assertGreater(rec["usage"]["input"], 0)
            self.assertEqual(rec["usage"]["output"], 3)
            for key in ("id", "t", "attempts", "bytes_in", "bytes_out", "total_ms", "ttfb_ms", "model"):
                self.assertIn(key, rec)
        self.assertEqual(lines[0]["model"], "claude-zt-test")

    def test_monitor_once(self):
        fake = self.start_fake("alpha")
        p = self.start_proxy(config_text=make_config(
            [{"name": "g", "endpoints": [("alpha", fake.url)]}], health_check=HC))
        r = subprocess.run(["sh", os.path.join(REPO_ROOT, "monitor.sh"), "-1", p.url],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("alpha", r.stdout)
        self.assertIn("auto", r.stdout)
        p.stop(scaled(10))
        r = subprocess.run(["sh", os.path.join(REPO_ROOT, "monitor.sh"), "-1", p.url],
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertTrue(r.stderr.strip(), "no message when the proxy is unreachable")

    def test_make_install_with_destdir(self):
        dest = os.path.join(self.tmp, "dest")
        build = os.path.dirname(PROXY_BIN)
        r = subprocess.run(["make", "-s", "install", "PREFIX=/opt/zephyr", "DESTDIR=" + dest,
                            "B=" + os.path.relpath(build, REPO_ROOT)],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        for f in ("bin/claude-zephyr", "bin/claude-zephyr-monitor", "share/man/man1/claude-zephyr.1"):
            self.assertTrue(os.path.isfile(os.path.join(dest, "opt/zephyr", f)), f)
        v = subprocess.run([os.path.join(dest, "opt/zephyr/bin/claude-zephyr"), "--version"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(v.returncode, 0)
        self.assertRegex(v.stdout, r"^claude-zephyr \d+\.\d+\.\d+")
        man = open(os.path.join(dest, "opt/zephyr/share/man/man1/claude-zephyr.1")).read()
        for opt in ("--check-config", "--dashboard", "--test-timing", "SIGHUP"):
            self.assertIn(opt.replace("-", "\\-"), man.replace("\\-", "\\-"), opt)


if __name__ == "__main__":
    unittest.main()
