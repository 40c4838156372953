"""Hardening (issue 11): a group of any size, secrets that could inject
header lines, core dumps, and file descriptors leaking into children.

- A group of 300 endpoints is switched to, pinned past its 256th endpoint
  and carries traffic; the proxy survives (it once wrote past a 256-entry
  stack array and died with SIGSEGV).
- A token, access key or admin key holding CR, LF or another control
  character is refused at start and at reload, at its file:line, naming the
  variable and never showing the value; nothing reaches the upstream.
- The proxy runs with RLIMIT_CORE 0 and is not dumpable: seen from outside
  as "Max core file size 0 0" in /proc/PID/limits and as /proc/PID/ files
  owned by root although the process runs as another user (the kernel does
  that only for non-dumpable processes, so the proxy runs as nobody here
  when the tests run as root).
- Every descriptor the proxy holds, the request log included, is
  close-on-exec (the O_CLOEXEC bit in /proc/PID/fdinfo/N).
"""

import os
import re
import resource
import signal
import subprocess
import unittest

from harness import (LISTEN_RE, PROXY_BIN, REPO_ROOT, ZephyrTestCase, _Drain, child_env,
                     http_request, make_config, scaled, stats_header, wait_for)

HC = {"method": "count_tokens", "interval_seconds": 300, "timeout_seconds": 5,
      "max_concurrent": 8}
BIG = 300
EVIL = "tok-Q9zr\r\nx-evil: injected"


class BigGroup(ZephyrTestCase):

    def test_300_endpoints_group_pin_and_traffic(self):
        a = self.start_fake("a")
        b = self.start_fake("b")
        big = {"name": "big", "endpoints": [("e%03d" % i, a.url) for i in range(BIG)]}
        small = {"name": "small", "default": True, "endpoints": [("s0", b.url)]}
        p = self.start_proxy([small, big], health_check=HC, settle=False)
        wait_for(lambda: all(e["status"] == "healthy" for e in p.status()["endpoints"]),
                 scaled(30), desc="all %d endpoints checked" % (BIG + 1))

        code, body = p.admin("group", {"group": "big"})
        self.assertEqual(code, 200, body)
        self.assertEqual(p.status()["current_group"], "big")
        r = self.post_messages(p.port)
        self.assertEqual(r.status, 200, r)
        self.assertRegex(r.header("x-zephyr-endpoint") or "", r"^e\d{3}$")

        code, body = p.admin("pin", {"endpoint": "e299"})
        self.assertEqual(code, 200, body)
        st = p.status()
        self.assertEqual((st["mode"], st.get("pinned_endpoint")), ("manual", "e299"))
        for _ in range(3):
            r = self.post_messages(p.port)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("x-zephyr-endpoint"), "e299")

        # Back to the small group, then a pin that switches to the big one.
        self.assertEqual(p.admin("group", {"group": "small"})[0], 200)
        self.assertEqual(self.post_messages(p.port).header("x-zephyr-endpoint"), "s0")
        code, body = p.admin("pin", {"endpoint": "e256"})
        self.assertEqual(code, 200, body)
        self.assertEqual(p.status()["current_group"], "big")
        self.assertEqual(self.post_messages(p.port).header("x-zephyr-endpoint"), "e256")
        self.assertEqual(p.admin("mode", {"mode": "auto"})[0], 200)
        r = self.post_messages(p.port)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(p.running(), "proxy died:\n" + p.stderr_text()[-3000:])


class SecretsWithControlCharacters(ZephyrTestCase):

    def _run_start(self, config_text, env=None, dotenv=None):
        """Starts the proxy on a configuration that must be refused; returns
        (exit code, stderr).  A proxy that starts anyway fails the test."""
        path = self.write_config(config_text, dotenv=dotenv)
        try:
            cp = subprocess.run([PROXY_BIN, "--config", path, "--port", "0"],
                                stdin=subprocess.DEVNULL, capture_output=True,
                                env=child_env(env), cwd=self.tmp, timeout=scaled(8))
        except subprocess.TimeoutExpired as e:
            self.fail("the proxy started with a secret holding CR LF:\n%s"
                      % (e.stderr or b"").decode(errors="replace")[-2000:])
        return cp.returncode, cp.stderr.decode(errors="replace")

    def test_start_refuses_each_secret(self):
        text = make_config([{"name": "main", "auth_token_env": "ZT_TOKEN",
                             "endpoints": [("a", "http://127.0.0.1:9")]}],
                           server={"access_key_env": "ZT_ACCESS", "admin_key_env": "ZT_ADMIN"})
        env = {"ZT_TOKEN": EVIL, "ZT_ACCESS": "acc-Q9zr\nx-evil: 1", "ZT_ADMIN": "adm-Q9zr\r"}
        code, err = self._run_start(text, env)
        self.assertEqual(code, 1, err)
        lines = text.splitlines()
        for key, var in (("server.access_key_env", "ZT_ACCESS"), ("server.admin_key_env", "ZT_ADMIN"),
                         ("groups[0].auth_token_env", "ZT_TOKEN")):
            n = 1 + next(i for i, l in enumerate(lines) if l.startswith(key.split(".")[1]))
            self.assertIn("config.toml:%d: %s: environment variable %s holds a control character"
                          % (n, key, var), err)
        for secret in ("Q9zr", "x-evil"):
            self.assertNotIn(secret, err)

    def test_start_refuses_token_from_dotenv(self):
        text = make_config([{"name": "main", "auth_token_env": "ZT_TOKEN",
                             "endpoints": [("a", "http://127.0.0.1:9")]}])
        code, err = self._run_start(text, dotenv='ZT_TOKEN="tok-Q9zr\\r\\nx-evil: injected"\n')
        self.assertEqual(code, 1, err)
        self.assertIn("groups[0].auth_token_env: environment variable ZT_TOKEN holds a control "
                      "character", err)
        self.assertNotIn("Q9zr", err)

    def test_reload_refuses_token_and_keeps_running_config(self):
        a = self.start_fake("a")
        good = {"name": "main", "auth_token_env": "ZT_GOOD", "endpoints": [("a", a.url)]}
        p = self.start_proxy([good], health_check=HC, env={"ZT_GOOD": "tok-good-1"})
        # The new file names a variable that a new .env line sets to CR LF.
        bad = dict(good, auth_token_env="ZT_BAD")
        self.write_config(make_config([bad], health_check=HC),
                          dotenv='ZT_BAD="tok-Q9zr\\r\\nx-evil: injected"\n')
        code, body = p.admin("reload")
        self.assertEqual(code, 400, body)
        msg = body["error"]["message"]
        self.assertIn("reload failed", msg)
        self.assertIn("groups[0].auth_token_env: environment variable ZT_BAD holds a control "
                      "character", msg)
        self.assertNotIn("Q9zr", msg)
        p.signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP: reload failed" in p.stderr_text(), scaled(5),
                 desc="SIGHUP reload refused")
        self.assertNotIn("Q9zr", p.stderr_text())
        # The running configuration still serves, with its own token only.
        (r, stats) = self.captured(a, lambda h: self.post_messages(p.port, headers=h))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(stats_header(stats, "x-api-key"), ["tok-good-1"])
        self.assertEqual(stats_header(stats, "x-evil"), [])

    def test_connect_refuses_admin_key(self):
        try:
            cp = subprocess.run([PROXY_BIN, "--dashboard", "--connect", "http://127.0.0.1:9"],
                                stdin=subprocess.DEVNULL, capture_output=True,
                                env=child_env({"ZEPHYR_ADMIN_KEY": "adm-Q9zr\r\nx-evil: 1"}),
                                cwd=self.tmp, timeout=scaled(8))
        except subprocess.TimeoutExpired:
            self.fail("--connect ran with an admin key holding CR LF")
        err = cp.stderr.decode(errors="replace")
        self.assertEqual(cp.returncode, 1, err)
        self.assertIn("ZEPHYR_ADMIN_KEY holds a control character", err)
        self.assertNotIn("Q9zr", err)

    def test_connect_refuses_access_key(self):
        # The access key goes into every request header of --connect too.
        try:
            cp = subprocess.run([PROXY_BIN, "--dashboard", "--connect", "http://127.0.0.1:9"],
                                stdin=subprocess.DEVNULL, capture_output=True,
                                env=child_env({"ZEPHYR_ACCESS_KEY": "acc-W7yq\r\nx-evil: 1"}),
                                cwd=self.tmp, timeout=scaled(8))
        except subprocess.TimeoutExpired:
            self.fail("--connect ran with an access key holding CR LF")
        err = cp.stderr.decode(errors="replace")
        self.assertEqual(cp.returncode, 1, err)
        self.assertIn("ZEPHYR_ACCESS_KEY holds a control character", err)
        self.assertNotIn("W7yq", err)


def _proc_status_uid(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError("no Uid line in /proc/%d/status" % pid)


class CoreDumps(ZephyrTestCase):

    def _start_as(self, uid):
        """The proxy on a loopback-only config, with RLIMIT_CORE raised as
        far as allowed first (so that a proxy which does not lower it shows
        a non-zero limit), running as uid (None: as we are)."""
        text = make_config([{"name": "main", "endpoints": [("a", "http://127.0.0.1:9")]}],
                           health_check={"method": "count_tokens", "interval_seconds": 300,
                                         "timeout_seconds": 2})
        path = self.write_config(text)
        os.chmod(self.tmp, 0o755)
        os.chmod(path, 0o644)

        def raise_core():
            soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
            top = resource.RLIM_INFINITY if os.geteuid() == 0 else hard
            resource.setrlimit(resource.RLIMIT_CORE, (top, top))

        kw = {}
        if uid is not None:
            kw = {"user": uid, "group": uid, "extra_groups": []}
        proc = subprocess.Popen([PROXY_BIN, "--config", path, "--port", "0"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=child_env(), cwd=self.tmp,
                                preexec_fn=raise_core, **kw)
        err = _Drain(proc.stderr)

        def stop():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(scaled(10))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            err.join(2)
            err.f.close()
            self.assertEqual(proc.returncode, 0, err.text()[-3000:])
        self.addCleanup(stop)
        m = err.wait_match(LISTEN_RE, scaled(10))
        self.assertTrue(m, "proxy did not start:\n" + err.text()[-3000:])
        return proc, int(m.group(2))

    def test_no_core_file_and_not_dumpable(self):
        uid = 65534 if os.geteuid() == 0 else None
        proc, port = self._start_as(uid)
        with open("/proc/%d/limits" % proc.pid) as f:
            line = [l for l in f if l.startswith("Max core file size")][0]
        self.assertEqual(line.split()[4:6], ["0", "0"], line)
        # Not dumpable: the kernel gives /proc/PID/ to root, whoever runs it.
        runs_as = _proc_status_uid(proc.pid)
        self.assertNotEqual(runs_as, 0, "the proxy must run as another user for this check")
        self.assertEqual(os.stat("/proc/%d/status" % proc.pid).st_uid, 0,
                         "/proc/PID/ of a process running as uid %d belongs to it: dumpable"
                         % runs_as)
        self.assertEqual(os.stat("/proc/%d/environ" % proc.pid).st_uid, 0)
        self.assertEqual(http_request(port, "GET", "/status").status, 200)

    def test_systemd_unit_limits_core(self):
        with open(os.path.join(REPO_ROOT, "contrib", "claude-zephyr.service")) as f:
            text = f.read()
        service = text.split("[Service]", 1)[1].split("\n[", 1)[0]
        self.assertRegex(service, re.compile(r"^LimitCORE=0$", re.M))


class CloseOnExec(ZephyrTestCase):

    def test_every_descriptor_is_close_on_exec(self):
        self.check_close_on_exec(None)

    def test_every_descriptor_is_close_on_exec_libcurl(self):
        """libcurl opens its sockets itself: they must not leak into the
        `claude` children of the cli check either."""
        self.check_close_on_exec("libcurl")

    def check_close_on_exec(self, client):
        a = self.start_fake("a")
        log = os.path.join(self.tmp, "requests.log")
        server = {"request_log": log}
        if client:
            server["http_client"] = client
        p = self.start_proxy([{"name": "main", "endpoints": [("a", a.url)]}], health_check=HC,
                             server=server)
        self.assertEqual(self.post_messages(p.port).status, 200)
        wait_for(lambda: os.path.getsize(log) > 0, scaled(5), desc="request logged")
        fds, leaky = {}, []
        fd_dir = "/proc/%d/fd" % p.pid
        for name in os.listdir(fd_dir):
            fd = int(name)
            if fd <= 2:
                continue
            try:
                target = os.readlink(os.path.join(fd_dir, name))
                with open("/proc/%d/fdinfo/%d" % (p.pid, fd)) as f:
                    flags = int(re.search(r"^flags:\s*([0-7]+)", f.read(), re.M).group(1), 8)
            except (FileNotFoundError, ProcessLookupError):
                continue  # closed while we looked
            fds[fd] = target
            if not flags & 0o2000000:  # O_CLOEXEC
                leaky.append((fd, target))
        self.assertIn(log, fds.values(), "the request log is not open: %r" % fds)
        self.assertEqual(leaky, [], "descriptors a child would inherit")


if __name__ == "__main__":
    unittest.main()
