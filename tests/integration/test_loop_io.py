"""Work that must never freeze the event loop, and reload's .env semantics.

- A stderr that nobody reads (a full pipe) does not stop traffic: log lines
  are dropped and counted (zephyr_log_lines_dropped_total), and a notice
  with the count follows once the reader catches up.
- A .env that is a FIFO does not freeze a reload: /health keeps answering
  and the reload reports an error naming the file.
- Values that came from .env follow .env on reload (replaced, or unset when
  .env drops them); a variable the user set in the environment still wins.
"""

import fcntl
import os
import re
import signal
import subprocess
import threading
import time

from harness import (LISTEN_RE, PROXY_BIN, ZephyrTestCase, child_env, http_json,
                     http_request, make_config, scaled, stats_header, wait_for)

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
HC = {"method": "count_tokens", "interval_seconds": 300, "timeout_seconds": 5}


def dropped_total(port):
    r = http_request(port, "GET", "/metrics", timeout=5)
    m = re.search(rb"^zephyr_log_lines_dropped_total (\d+)$", r.body, re.M)
    return int(m.group(1)) if m else None


class StalledStderr(ZephyrTestCase):

    def test_full_stderr_pipe_does_not_stop_traffic(self):
        fake = self.start_fake("a")
        path = self.write_config(make_config([{"name": "main", "endpoints": [("a", fake.url)]}],
                                             health_check=HC))
        rfd, wfd = os.pipe()
        try:
            fcntl.fcntl(wfd, F_SETPIPE_SZ, 4096)  # the smallest pipe: fills at once
        except OSError:
            pass
        proc = subprocess.Popen([PROXY_BIN, "--config", path, "--port", "0"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=wfd,
                                env=child_env(), cwd=self.tmp)
        os.close(wfd)
        reader = {"text": b"", "stop": False}

        def cleanup():
            reader["stop"] = True
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            os.close(rfd)
        self.addCleanup(cleanup)

        # Read only up to the "listening on" line; after that nobody reads.
        got = b""
        deadline = time.monotonic() + scaled(10)
        m = None
        while not m and time.monotonic() < deadline:
            chunk = os.read(rfd, 4096)
            if not chunk:
                break
            got += chunk
            m = LISTEN_RE.search(got.decode("utf-8", "replace"))
        self.assertTrue(m, "no 'listening on' line:\n%s" % got.decode("utf-8", "replace"))
        port = int(m.group(2))

        # Each request logs a line of about 3 KB (its path): 200 of them are
        # 600 KB, more than the pipe and the proxy's 256 KiB buffer hold.
        pad = "p" * 3000
        slow = []
        t0 = time.monotonic()
        for i in range(200):
            t = time.monotonic()
            r = http_request(port, "POST", "/v1/messages?pad=%s&i=%d" % (pad, i),
                             b'{"model":"claude-zt-test","max_tokens":8,"messages":[]}',
                             {"content-type": "application/json"}, timeout=scaled(5))
            self.assertEqual(r.status, 200, "request %d: %r" % (i, r))
            if time.monotonic() - t > scaled(1):
                slow.append(i)
        self.assertLess(time.monotonic() - t0, scaled(60))
        self.assertEqual(slow, [], "requests that took over %.1fs" % scaled(1))
        r = http_request(port, "GET", "/health", timeout=scaled(2))
        self.assertEqual(r.status, 200)
        dropped = dropped_total(port)
        self.assertIsNotNone(dropped, "no zephyr_log_lines_dropped_total in /metrics")
        self.assertGreater(dropped, 0)

        # Once someone reads again, the writer catches up and says how many
        # lines it dropped.
        def drain():
            while not reader["stop"]:
                try:
                    chunk = os.read(rfd, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                reader["text"] += chunk
        th = threading.Thread(target=drain, daemon=True)
        th.start()
        wait_for(lambda: re.search(rb"log: \d+ line\(s\) dropped", reader["text"]), scaled(5),
                 desc="the 'lines dropped' notice on stderr")
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(scaled(15)), 0)
        th.join(5)


class ReloadOffLoop(ZephyrTestCase):

    def _config(self, a):
        return make_config([{"name": "main", "endpoints": [("a", a.url)]}], health_check=HC)

    def test_fifo_dotenv_does_not_freeze_reload(self):
        a = self.start_fake("a")
        p = self.start_proxy(config_text=self._config(a))
        envpath = os.path.join(self.tmp, ".env")
        os.mkfifo(envpath)
        result = {}

        def reload():
            try:
                result["r"] = http_json(p.port, "POST", "/admin/reload", {}, timeout=scaled(10))
            except Exception as e:  # noqa: BLE001
                result["r"] = e
        th = threading.Thread(target=reload, daemon=True)
        th.start()
        try:
            # The loop keeps answering while (and after) the reload runs.
            r = http_request(p.port, "GET", "/health", timeout=scaled(2))
            self.assertEqual(r.status, 200)
            th.join(scaled(5))
            self.assertFalse(th.is_alive(), "POST /admin/reload never answered")
            code, body = result["r"]
            self.assertEqual(code, 400, body)
            msg = body["error"]["message"]
            self.assertIn(envpath, msg)
            self.assertIn("FIFO", msg)
            self.assertIn("reload failed", msg)
            self.assertEqual(self.post_messages(p.port).status, 200)
            # SIGHUP too: the failure is logged, nothing freezes.
            p.signal(signal.SIGHUP)
            wait_for(lambda: "SIGHUP: reload failed" in p.stderr_text()
                     and "FIFO" in p.stderr_text(), scaled(5), desc="SIGHUP failure logged")
            self.assertEqual(http_request(p.port, "GET", "/health", timeout=scaled(2)).status, 200)
        finally:
            # Unfreeze a proxy that opened the FIFO on its loop (the old
            # code), so that it can be stopped.
            try:
                fd = os.open(envpath, os.O_WRONLY | os.O_NONBLOCK)
                os.close(fd)
            except OSError:
                pass
            th.join(scaled(5))

    def test_concurrent_reloads_all_answered(self):
        a = self.start_fake("a")
        p = self.start_proxy(config_text=self._config(a))
        results = []

        def reload():
            results.append(http_json(p.port, "POST", "/admin/reload", {}, timeout=scaled(10)))
        ths = [threading.Thread(target=reload, daemon=True) for _ in range(4)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(scaled(10))
        self.assertEqual(sorted(c for c, _ in results), [200] * 4, results)


    def test_fifo_ca_file_does_not_freeze_reload(self):
        """A ca_file that is a FIFO is refused at reload without being
        opened: the check looks with stat(), so the loop never waits for a
        writer (review finding: fopen() on the loop froze every stream)."""
        a = self.start_fake("a")
        p = self.start_proxy(config_text=self._config(a))
        fifo = os.path.join(self.tmp, "ca.pem")
        os.mkfifo(fifo)
        text = (self._config(a) + '\n[[groups]]\nname = "tls"\n'
                'endpoints = [{ url = "https://127.0.0.1:9", name = "t", ca_file = "%s" }]\n'
                % fifo)
        self.write_config(text)
        try:
            t0 = time.monotonic()
            code, body = http_json(p.port, "POST", "/admin/reload", {}, timeout=scaled(5))
            self.assertLess(time.monotonic() - t0, scaled(3))
            self.assertEqual(code, 400, body)
            self.assertIn("ca_file: cannot read %s: not a regular file" % fifo,
                          body["error"]["message"])
            self.assertEqual(http_request(p.port, "GET", "/health", timeout=scaled(2)).status, 200)
            self.assertEqual(self.post_messages(p.port).status, 200)
        finally:
            try:  # unfreeze a proxy that opened the FIFO (the old code)
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass


class DotenvFollowsReload(ZephyrTestCase):

    def test_dotenv_change_reaches_upstream_and_user_env_wins(self):
        a = self.start_fake("a")
        a.config(token="tok-one-from-dotenv")
        cfg = make_config([{"name": "main", "auth_token_env": "ZT_TOKEN",
                            "endpoints": [("a", a.url)]}],
                          server={"access_key_env": "ZT_ACCESS"}, health_check=HC)
        dotenv = "ZT_TOKEN=tok-one-from-dotenv\nZT_ACCESS=access-from-dotenv\n"
        p = self.start_proxy(config_text=cfg, dotenv=dotenv, env={"ZT_ACCESS": "access-of-user"})
        p.access_key = "access-of-user"  # for p.admin(): the guard asks every path but /health

        def send(hdrs, key="access-of-user"):
            return self.post_messages(p.port, headers=[("x-zephyr-key", key)] + hdrs)
        r, stats = self.captured(a, send)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(stats_header(stats, "x-api-key"), ["tok-one-from-dotenv"])

        # A new token in .env; the upstream wants it from now on.
        a.config(token="tok-two-from-dotenv")
        self.write_config(cfg, dotenv="ZT_TOKEN=tok-two-from-dotenv\n"
                                      "ZT_ACCESS=access-from-dotenv-2\n")
        code, body = p.admin("reload")
        self.assertEqual(code, 200, body)
        r, stats = self.captured(a, send)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(stats_header(stats, "x-api-key"), ["tok-two-from-dotenv"])
        # The user's ZT_ACCESS still wins over both .env values.
        self.assertEqual(self.post_messages(
            p.port, headers=[("x-zephyr-key", "access-from-dotenv-2")]).status, 401)

        # A name .env no longer assigns is gone: the reload is refused and
        # the running configuration keeps the token it had.
        self.write_config(cfg, dotenv="# ZT_TOKEN removed\n")
        code, body = p.admin("reload")
        self.assertEqual(code, 400, body)
        self.assertIn("ZT_TOKEN", body["error"]["message"])
        self.assertNotIn("tok-two", body["error"]["message"])
        r, stats = self.captured(a, send)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(stats_header(stats, "x-api-key"), ["tok-two-from-dotenv"])
        self.assertNotIn("tok-two-from-dotenv", p.stderr_text())


if __name__ == "__main__":
    import unittest
    unittest.main()
