"""
The terminal dashboard, end to end in tmux: the real proxy (or a --connect
client) runs in a detached tmux session on a private tmux server; the tests
send keys with `tmux send-keys` and assert on what `tmux capture-pane` shows,
and on /status for the effect of each key.

Each session runs `sh -c 'BINARY ...; echo EXITED $?; sleep 60'`, so a test
sees the exit status on the pane once the dashboard has gone, and a leftover
curses screen (the endpoint table still on the pane after "EXITED") means
the terminal was not restored.  With --dashboard the "listening on" line is
not on the terminal: the config sets server.log_file and the port is read
from there.

Skipped, loudly, when tmux is not installed.
"""

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
import unicodedata
import unittest
import uuid

from harness import (PROXY_BIN, SANITIZER_MARKERS, Proxy, ZephyrTestCase, child_env, fake_headers,
                     free_port, http_json, http_request, make_config, messages_body, port_accepts,
                     refused_port, scaled, wait_for)

TMUX = shutil.which("tmux")
LISTEN_RE = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
# An endpoint row: cursor column, current mark, status mark, name, status.
ROW_RE = re.compile(r"^(?P<cursor>[> ])(?P<cur>[* ]) [●✗◌·!+x~?] (?P<name>[a-z/]+) +"
                    r"(healthy|failed|checking|unknown|auth fail|健康|失败|检查中|未知|认证失败) ")
STEP = scaled(8)     # bound of every wait for the screen or the proxy


class Pane:
    """A detached tmux session on a private tmux server."""

    def __init__(self, test, command, cols=100, rows=30, env=None, after=""):
        self.sock = "zt-%s" % uuid.uuid4().hex[:10]
        self.name = "dash"
        e = child_env(env)
        e.setdefault("LANG", "C.UTF-8")
        e["TERM"] = "xterm-256color"
        e.pop("TMUX", None)
        assigns = " ".join("%s=%s" % (k, shlex.quote(e[k]))
                           for k in ("LANG", "ASAN_OPTIONS", "UBSAN_OPTIONS", "ZEPHYR_UI_LANGUAGE",
                                     "ZEPHYR_ADMIN_KEY")
                           if k in e)
        inner = "ulimit -c 0; env %s %s; echo EXITED $?; %s sleep 60" % (assigns, command, after)
        self.tmux("new-session", "-d", "-s", self.name, "-x", str(cols), "-y", str(rows),
                  "sh -c %s" % shlex.quote(inner), env=e)
        test.addCleanup(self.kill)

    def tmux(self, *args, env=None, check=True):
        r = subprocess.run([TMUX, "-u", "-f", "/dev/null", "-L", self.sock] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10,
                           env=env, check=False)
        if check and r.returncode != 0:
            raise AssertionError("tmux %s failed: %s" % (" ".join(args), r.stderr.decode()))
        return r.stdout.decode("utf-8", "replace")

    def kill(self):
        self.tmux("kill-server", check=False)

    def text(self):
        return self.tmux("capture-pane", "-p", "-t", self.name)

    def history(self):
        return self.tmux("capture-pane", "-p", "-S", "-500", "-t", self.name)

    def keys(self, *keys):
        for k in keys:
            self.tmux("send-keys", "-t", self.name, k)
            time.sleep(0.05)

    def resize(self, cols, rows):
        self.tmux("resize-window", "-t", self.name, "-x", str(cols), "-y", str(rows))

    def child_pid(self):
        """The pid of the claude-zephyr that sh runs, or None once it has
        exited (sh then runs echo and sleep)."""
        out = self.tmux("display-message", "-p", "-t", self.name, "#{pane_pid}", check=False)
        if not out.strip().isdigit():
            return None
        shpid = int(out.strip())
        try:
            with open("/proc/%d/task/%d/children" % (shpid, shpid)) as f:
                kids = [int(k) for k in f.read().split()]
            for k in kids:
                with open("/proc/%d/cmdline" % k, "rb") as f:
                    if b"claude-zephyr" in f.read():
                        return k
        except (OSError, ValueError):
            return None
        return None

    def wait(self, pred, desc, timeout=None):
        """Polls the pane until pred(text) is truthy; returns that value."""
        last = [""]

        def probe():
            last[0] = self.text()
            return pred(last[0])
        try:
            return wait_for(probe, timeout or STEP, interval=0.05, desc=desc)
        except AssertionError as e:
            raise AssertionError("%s\n--- pane ---\n%s" % (e, last[0])) from None

    def wait_text(self, needle, timeout=None):
        return self.wait(lambda t: needle in t and t, "%r on the pane" % needle, timeout)


def display_width(s):
    """Terminal cells of s: East Asian wide and full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)


def rows_of(text):
    """{name: (cursor, current)} for every endpoint row on the pane."""
    out = {}
    for line in text.splitlines():
        m = ROW_RE.match(line)
        if m:
            out[m.group("name")] = (m.group("cursor") == ">", m.group("cur") == "*")
    return out


def current_on_pane(text):
    cur = [n for n, (_, c) in rows_of(text).items() if c]
    return cur[0] if len(cur) == 1 else None


def cursor_on_pane(text):
    cur = [n for n, (c, _) in rows_of(text).items() if c]
    return cur[0] if len(cur) == 1 else None


@unittest.skipIf(TMUX is None, "tmux is not installed: the dashboard tests need it (apt-get install tmux)")
class Dashboard(ZephyrTestCase):

    def start_fakes(self, names=("alpha", "bravo", "charlie")):
        fakes = {}
        for i, n in enumerate(names):
            # Distinct latencies, so that the first endpoint is the fastest
            # and stays current in auto mode.
            fakes[n] = self.start_fake(n, latency_ms=i * 120)
        return fakes

    def config(self, groups, language=None, grace_ms=3000):
        self.log_path = os.path.join(self.tmp, "zephyr.log")
        extra = '[ui]\nlanguage = "%s"\n' % language if language else ""
        return self.write_config(make_config(
            groups,
            server={"log_file": self.log_path, "shutdown_grace_ms": grace_ms},
            health_check={"interval_seconds": 120, "timeout_seconds": 5}, extra=extra))

    def start_dashboard(self, groups, language=None, cols=100, rows=30):
        path = self.config(groups, language)
        cmd = "%s --config %s --port 0 --dashboard" % (shlex.quote(PROXY_BIN), shlex.quote(path))
        pane = Pane(self, cmd, cols=cols, rows=rows)
        self.addCleanup(self.stop_leftover, pane)

        def port():
            with open(self.log_path) as f:
                m = LISTEN_RE.search(f.read())
            return int(m.group(1)) if m else None
        try:
            self.port = wait_for(port, STEP, desc="the listening line in server.log_file")
        except AssertionError:
            raise AssertionError("the proxy did not start\n--- pane ---\n%s" % pane.text()) from None
        return pane

    def stop_leftover(self, pane):
        """Cleanup: a dashboard that is still running gets SIGTERM, then
        SIGKILL."""
        pid = pane.child_pid()
        if not pid:
            return
        try:
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: pane.child_pid() is None, scaled(10), desc="the dashboard to exit")
        except ProcessLookupError:
            pass
        except AssertionError:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def status(self, port=None):
        st, d = http_json(port or self.port, "GET", "/status")
        self.assertEqual(st, 200, d)
        return d

    def wait_status(self, pred, desc, port=None):
        return wait_for(lambda: pred(self.status(port)), STEP, desc=desc)

    def settle(self, port):
        """Best effort: waits until no check is running, so that quitting
        measures the dashboard and not a check torn down mid-flight."""
        def idle():
            st = self.status(port)
            return (not st["checks"]["running"]
                    and all(e.get("status") != "checking" for e in st["endpoints"]))
        try:
            wait_for(idle, STEP, desc="the checks to finish")
        except AssertionError:
            pass

    def assert_quits_cleanly(self, pane, *keys, port=None):
        if port:
            self.settle(port)
        pane.keys(*keys)
        pane.wait_text("EXITED 0", timeout=scaled(10))
        text = pane.history()
        for m in SANITIZER_MARKERS:
            self.assertNotIn(m, text, "sanitizer report on the terminal:\n%s" % text)
        screen = pane.text()
        # The curses screen is gone: the pane shows the shell's lines only.
        self.assertNotIn("ENDPOINT", screen, screen)
        self.assertNotIn("q quit", screen, screen)
        self.assertEqual(rows_of(screen), {}, screen)
        if port:
            wait_for(lambda: not port_accepts(port), STEP, desc="the proxy no longer listening")

    def main_group(self, fakes):
        return [{"name": "main", "endpoints": [(n, f.url) for n, f in fakes.items()]}]

    # ------------------------------------------------------------------

    def test_shows_endpoints_and_keys_then_q_quits(self):
        fakes = self.start_fakes()
        pane = self.start_dashboard(self.main_group(fakes))
        text = pane.wait(lambda t: set(rows_of(t)) == {"alpha", "bravo", "charlie"} and t,
                         "the three endpoint rows")
        for label in ("claude-zephyr", "127.0.0.1:%d" % self.port, "Mode:", "Group:", "Current:",
                      "Load:", "Interval:", "ACTIVE REQUESTS", "RECENT EVENTS"):
            self.assertIn(label, text, text)
        # The next check, or how long the running one has until its timeout.
        self.assertRegex(text.splitlines()[2],
                         r"^ (Next check: |checking: \d+(\.\d)? s until timeout)")
        keys_line = text.rstrip("\n").splitlines()[-1]
        for k in ("q quit", "r check", "p pause", "m mode", "Enter pin", "g/Tab group", "? help"):
            self.assertIn(k, keys_line, text)
        # The current mark agrees with /status once the checks have run.
        self.wait_status(lambda s: (s.get("current_endpoint") or {}).get("name") == "alpha",
                         "alpha current")
        pane.wait(lambda t: current_on_pane(t) == "alpha", "the current mark on alpha")
        pane.wait(lambda t: re.search(r"\* \S alpha\s+healthy", t), "alpha shown healthy")
        # Log lines go to the file, never over the screen.
        self.assertNotRegex(pane.text(), r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
        with open(self.log_path) as f:
            self.assertIn("listening on", f.read())
        self.assert_quits_cleanly(pane, "q", port=self.port)

    def test_pin_moves_current_mark_and_m_toggles_mode(self):
        fakes = self.start_fakes()
        pane = self.start_dashboard(self.main_group(fakes))
        self.wait_status(lambda s: (s.get("current_endpoint") or {}).get("name") == "alpha",
                         "alpha current")
        pane.wait(lambda t: current_on_pane(t) == "alpha" and "Mode: auto" in t,
                  "alpha current in auto mode")
        # The cursor starts on the current endpoint; two steps down is charlie.
        pane.wait(lambda t: cursor_on_pane(t) == "alpha", "the cursor on alpha")
        pane.keys("Down")
        pane.wait(lambda t: cursor_on_pane(t) == "bravo", "the cursor on bravo")
        pane.keys("Down")
        pane.wait(lambda t: cursor_on_pane(t) == "charlie", "the cursor on charlie")
        pane.keys("Up")
        pane.wait(lambda t: cursor_on_pane(t) == "bravo", "the cursor back on bravo")
        pane.keys("Enter")
        text = pane.wait(lambda t: current_on_pane(t) == "bravo" and "Mode: manual" in t and t,
                         "the current mark on bravo, manual mode")
        self.assertIn("pinned bravo", text)
        st = self.status()
        self.assertEqual(st["mode"], "manual")
        self.assertEqual(st["pinned_endpoint"], "bravo")
        self.assertEqual(st["current_endpoint"]["name"], "bravo")
        # Log lines of the switch went to the file, not over the screen.
        self.assertNotRegex(pane.text(), r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
        # m: back to auto, and the fastest endpoint becomes current again.
        pane.keys("m")
        pane.wait(lambda t: "Mode: auto" in t, "auto mode on the pane")
        self.wait_status(lambda s: s["mode"] == "auto", "auto mode in /status")
        pane.keys("m")
        pane.wait(lambda t: "Mode: manual" in t, "manual mode again")
        self.wait_status(lambda s: s["mode"] == "manual", "manual mode in /status")
        self.assert_quits_cleanly(pane, "Q", port=self.port)

    def test_sessions_column_view_and_release_key(self):
        """Issue 14: a session's count in its endpoint row, the sessions view
        (s) with its short id, and x releasing the cursor's endpoint's."""
        fakes = self.start_fakes(("alpha", "bravo"))
        pane = self.start_dashboard(self.main_group(fakes))
        self.wait_status(lambda s: (s.get("current_endpoint") or {}).get("name") == "alpha",
                         "alpha current")
        r = http_request(self.port, "POST", "/v1/messages", messages_body(),
                         dict(fake_headers(), **{"x-claude-code-session-id": "tmux-sess-0042"}))
        self.assertEqual(r.status, 200, r)
        short = self.status()["sessions"]["list"][0]["id"]
        pane.wait(lambda t: re.search(r"SESS", t) and re.search(r"alpha .* 1 ", t), "SESS 1 on alpha")
        pane.keys("s")
        text = pane.wait(lambda t: "SESSIONS (1)" in t and short in t and t, "the sessions view")
        self.assertNotIn("tmux-sess", text)
        pane.wait(lambda t: cursor_on_pane(t) == "alpha", "the cursor on alpha")
        pane.keys("x")
        pane.wait(lambda t: "SESSIONS (0)" in t and "no sessions" in t, "released on the pane")
        self.assertEqual(self.status()["sessions"]["total"], 0)
        self.assert_quits_cleanly(pane, "q", port=self.port)

    def test_pause_resume_help_and_check_now(self):
        fakes = self.start_fakes(("alpha", "bravo"))
        pane = self.start_dashboard(self.main_group(fakes))
        pane.wait(lambda t: set(rows_of(t)) == {"alpha", "bravo"}, "the endpoint rows")
        pane.keys("p")
        pane.wait(lambda t: "Next check: paused" in t and "p resume" in t, "paused")
        self.wait_status(lambda s: s["checks"]["paused"] is True, "checks paused in /status")
        pane.keys("p")
        pane.wait(lambda t: "Next check: paused" not in t and "p pause" in t, "resumed")
        self.wait_status(lambda s: s["checks"]["paused"] is False, "checks resumed in /status")
        pane.keys("?")
        text = pane.wait(lambda t: "KEYS" in t and "MARKS" in t and t, "the help page")
        self.assertIn("pin the endpoint under the cursor", text)
        self.assertEqual(rows_of(text), {}, "the help page replaces the table")
        pane.keys("?")
        pane.wait(lambda t: "KEYS" not in t and set(rows_of(t)) == {"alpha", "bravo"},
                  "the table again")
        pane.keys("r")
        pane.wait_text("check started")
        self.assert_quits_cleanly(pane, "C-c", port=self.port)

    def test_group_key_and_all_groups(self):
        a = self.start_fake("alpha")
        b = self.start_fake("bravo", latency_ms=100)
        d = self.start_fake("delta")
        groups = [{"name": "main", "endpoints": [("alpha", a.url), ("bravo", b.url)]},
                  {"name": "backup", "endpoints": [("delta", d.url)]}]
        pane = self.start_dashboard(groups)
        pane.wait(lambda t: set(rows_of(t)) == {"alpha", "bravo"} and "Group: main" in t,
                  "main's endpoints")
        pane.keys("g")
        pane.wait(lambda t: set(rows_of(t)) == {"delta"} and "Group: backup" in t,
                  "backup's endpoint after g")
        self.wait_status(lambda s: s["current_group"] == "backup", "backup current in /status")
        pane.keys("Tab")
        pane.wait(lambda t: "Group: main" in t, "main again after Tab")
        pane.keys("a")
        pane.wait(lambda t: all(n in t for n in ("main/alpha", "main/bravo", "backup/delta")),
                  "every group's endpoints after a")
        self.assert_quits_cleanly(pane, "q", port=self.port)

    def test_sigterm_restores_the_terminal(self):
        fakes = self.start_fakes(("alpha",))
        pane = self.start_dashboard(self.main_group(fakes))
        pane.wait(lambda t: "alpha" in rows_of(t), "the endpoint row")
        pid = pane.child_pid()
        self.assertIsNotNone(pid)
        os.kill(pid, signal.SIGTERM)
        pane.wait_text("EXITED 0", timeout=scaled(10))
        screen = pane.text()
        self.assertEqual(rows_of(screen), {}, screen)
        self.assertNotIn("q quit", screen)
        wait_for(lambda: not port_accepts(self.port), STEP, desc="the proxy gone")

    def test_fatal_signal_restores_the_terminal(self):
        port = refused_port()
        cmd = "%s --dashboard --connect http://127.0.0.1:%d" % (shlex.quote(PROXY_BIN), port)
        pane = Pane(self, cmd, after="stty -a | grep -o -e ' -icanon' -e ' icanon' | sed 's/^/MODE/';")
        self.addCleanup(self.stop_leftover, pane)
        pane.wait_text("cannot reach")
        pid = pane.child_pid()
        self.assertIsNotNone(pid)
        os.kill(pid, signal.SIGQUIT)
        text = pane.wait_text("MODE", timeout=scaled(10))
        self.assertIn("EXITED 131", text)
        self.assertIn("MODE icanon", text, "the terminal was left in raw mode")
        self.assertNotIn("cannot reach", text)
        self.assertNotIn("q quit", text)

    def test_resize_down_to_80x24_and_up(self):
        fakes = self.start_fakes()
        pane = self.start_dashboard(self.main_group(fakes), cols=120, rows=40)
        pane.wait(lambda t: set(rows_of(t)) == {"alpha", "bravo", "charlie"}, "the rows at 120x40")
        pane.resize(80, 24)

        def fits(t):
            lines = t.rstrip("\n").splitlines()
            return (set(rows_of(t)) == {"alpha", "bravo", "charlie"} and len(lines) <= 24
                    and all(len(x) <= 80 for x in lines) and "? help" in lines[-1]
                    and "q quit" in lines[-1])
        pane.wait(fits, "a whole frame at 80x24")
        pane.resize(160, 45)
        pane.wait(lambda t: set(rows_of(t)) == {"alpha", "bravo", "charlie"}
                  and "? help" in t.rstrip("\n").splitlines()[-1]
                  and any(len(x) > 100 for x in t.splitlines()), "a wider frame at 160x45")
        self.assert_quits_cleanly(pane, "q", port=self.port)

    def test_chinese_ui(self):
        fakes = self.start_fakes(("alpha", "bravo"))
        pane = self.start_dashboard(self.main_group(fakes), language="zh")
        text = pane.wait(lambda t: "模式" in t and "端点" in t and t, "Chinese labels")
        self.assertIn("帮助", text.rstrip("\n").splitlines()[-1])
        self.assertEqual(set(rows_of(text)), {"alpha", "bravo"}, text)
        self.assert_quits_cleanly(pane, "q", port=self.port)

    def test_connect_to_running_proxy(self):
        fakes = self.start_fakes(("alpha", "bravo"))
        proxy = self.start_proxy(self.main_group(fakes))
        self.wait_status(lambda s: (s.get("current_endpoint") or {}).get("name") == "alpha",
                         "alpha current", port=proxy.port)
        cmd = "%s --dashboard --connect %s" % (shlex.quote(PROXY_BIN), proxy.url)
        pane = Pane(self, cmd)
        self.addCleanup(self.stop_leftover, pane)
        text = pane.wait(lambda t: current_on_pane(t) == "alpha" and "bravo" in rows_of(t) and t,
                         "the remote proxy's endpoints")
        self.assertIn(proxy.url, text)
        pane.keys("Down", "Enter")
        pane.wait(lambda t: current_on_pane(t) == "bravo" and "Mode: manual" in t,
                  "bravo pinned through the admin API")
        st = proxy.status()
        self.assertEqual(st["pinned_endpoint"], "bravo")
        pane.keys("m")
        self.wait_status(lambda s: s["mode"] == "auto", "auto mode", port=proxy.port)
        pane.wait_text("Mode: auto")
        self.assert_quits_cleanly(pane, "q")
        # Only the dashboard went away; the proxy still serves.
        self.assertTrue(proxy.running())
        self.assertEqual(proxy.status()["mode"], "auto")

    def test_connect_with_admin_key(self):
        fakes = self.start_fakes(("alpha", "bravo"))
        key = "zt-admin-" + uuid.uuid4().hex
        proxy = self.start_proxy(self.main_group(fakes), server={"admin_key_env": "ZT_ADMIN_KEY"},
                                 env={"ZT_ADMIN_KEY": key})
        self.wait_status(lambda s: (s.get("current_endpoint") or {}).get("name") == "alpha",
                         "alpha current", port=proxy.port)
        cmd = "%s --dashboard --connect %s" % (shlex.quote(PROXY_BIN), proxy.url)
        # Without the key the operation is refused, and the screen says so.
        pane = Pane(self, cmd)
        self.addCleanup(self.stop_leftover, pane)
        pane.wait(lambda t: current_on_pane(t) == "alpha", "the remote endpoints")
        pane.keys("p")
        pane.wait_text("HTTP 403")
        self.assertFalse(proxy.status()["checks"]["paused"])
        self.assert_quits_cleanly(pane, "q")
        # With ZEPHYR_ADMIN_KEY it goes through.
        pane = Pane(self, cmd, env={"ZEPHYR_ADMIN_KEY": key})
        self.addCleanup(self.stop_leftover, pane)
        pane.wait(lambda t: current_on_pane(t) == "alpha", "the remote endpoints")
        pane.keys("p")
        pane.wait(lambda t: "Next check: paused" in t, "paused through the admin API")
        self.assertTrue(proxy.status()["checks"]["paused"])
        self.assert_quits_cleanly(pane, "q")

    def test_connect_with_access_key(self):
        fakes = self.start_fakes(("alpha", "bravo"))
        key = "zt-access-" + uuid.uuid4().hex
        proxy = self.start_proxy(self.main_group(fakes), server={"access_key_env": "ZT_ACCESS"},
                                 env={"ZT_ACCESS": key})
        cmd = "%s --dashboard --connect %s" % (shlex.quote(PROXY_BIN), proxy.url)
        # Without the key /status is refused, and the screen says so.
        pane = Pane(self, cmd)
        self.addCleanup(self.stop_leftover, pane)
        pane.wait_text("HTTP 401")
        self.assert_quits_cleanly(pane, "q")
        # With ZEPHYR_ACCESS_KEY it shows the proxy and can drive it.
        pane = Pane(self, cmd, env={"ZEPHYR_ACCESS_KEY": key})
        self.addCleanup(self.stop_leftover, pane)
        pane.wait(lambda t: current_on_pane(t) == "alpha", "the remote endpoints")
        pane.keys("p")
        pane.wait(lambda t: "Next check: paused" in t, "paused through the admin API")
        self.assertTrue(proxy.status()["checks"]["paused"])
        self.assert_quits_cleanly(pane, "q")

    def test_connect_language_from_the_environment(self):
        port = refused_port()
        cmd = "%s --dashboard --connect 127.0.0.1:%d" % (shlex.quote(PROXY_BIN), port)
        pane = Pane(self, cmd, env={"ZEPHYR_UI_LANGUAGE": "zh"})
        self.addCleanup(self.stop_leftover, pane)
        text = pane.wait_text("无法连接 http://127.0.0.1:%d" % port)
        self.assertIn("q 退出", text)
        self.assert_quits_cleanly(pane, "q")

    def test_connect_unreachable_keeps_retrying(self):
        port = free_port()
        cmd = "%s --dashboard --connect http://127.0.0.1:%d" % (shlex.quote(PROXY_BIN), port)
        pane = Pane(self, cmd, cols=100, rows=30)
        self.addCleanup(self.stop_leftover, pane)
        text = pane.wait_text("cannot reach http://127.0.0.1:%d" % port)
        self.assertIn("q quit", text)
        # It keeps polling: a proxy that appears later on that port shows up.
        fakes = self.start_fakes(("alpha",))
        path = self.write_config(make_config(self.main_group(fakes)), name="late.toml")
        proxy = Proxy(path, env=child_env(), port_arg=str(port))
        self.addCleanup(self._stop_proxy, proxy)
        pane.wait(lambda t: "alpha" in rows_of(t) and "cannot reach" not in t,
                  "the proxy that came up")
        self.assert_quits_cleanly(pane, "q")
        self.assertTrue(proxy.running())

    # ---- layout by priority (issue 14) ---------------------------------

    LONG = ("relay-frankfurt-primary-1", "relay-frankfurt-primary-2", "relay-frankfurt-primary-3")

    def start_crowded(self, cols, rows, language=None):
        """Three endpoints whose names differ only at the end, with traffic
        of different amounts (some failing) on each; waits until the pane
        shows the same request total as /status."""
        fakes = {n: self.start_fake(n, latency_ms=i * 120) for i, n in enumerate(self.LONG)}
        pane = self.start_dashboard(self.main_group(fakes), language=language, cols=cols,
                                    rows=rows)
        self.wait_status(lambda s: all(e["status"] == "healthy" for e in s["endpoints"]),
                         "every endpoint checked")
        plan = {self.LONG[0]: (34, 0), self.LONG[1]: (3, 2), self.LONG[2]: (11, 1)}
        for name, (ok, bad) in plan.items():
            st, _ = http_json(self.port, "POST", "/admin/pin", {"endpoint": name})
            self.assertEqual(st, 200)
            for i in range(ok + bad):
                hdrs = {"content-type": "application/json"}
                if i >= ok:
                    hdrs.update(fake_headers(status=500))
                http_request(self.port, "POST", "/v1/messages", messages_body(), hdrs)
        st = self.status()
        word = "请求" if language == "zh" else "requests"
        want = "%s %d" % (word, st["requests_total"])
        pane.wait(lambda t: re.search(re.escape(want) + r"\s*$", t.splitlines()[0]),
                  "%r at the end of the title" % want)
        return pane, self.status()

    @staticmethod
    def table(text, head_word, status_head):
        """(header line, {row line}) of the endpoint table on the pane."""
        lines = text.splitlines()
        h = [i for i, l in enumerate(lines) if l.startswith("     " + head_word)]
        if not h:
            raise AssertionError("no table header on the pane:\n" + text)
        rows = []
        for l in lines[h[0] + 1:]:
            if not re.match(r"^[> ][* ] \S ", l):
                break
            rows.append(l)
        return lines[h[0]], rows

    def cell_ending_at(self, row, end):
        """The right-aligned number whose last digit is at column end-1."""
        m = re.search(r"(\S+)$", row[:end])
        self.assertIsNotNone(m, row)
        return m.group(1)

    def test_80x24_numbers_exact_names_apart(self):
        pane, st = self.start_crowded(80, 24)
        # The pane redraws every 250 ms: wait for a frame and a /status that
        # agree on every endpoint's counters, then check that frame in full.
        seen = {}

        def agree(t):
            s = self.status()
            try:
                head, rows = self.table(t, "ENDPOINT", "STATUS")
                ends = [head.index(w) + len(w) for w in ("REQS", "FAIL")]
            except (AssertionError, ValueError):
                return False
            want = sorted((str(int(e["requests"])), str(int(e["failures"])))
                          for e in s["endpoints"])
            got = sorted(tuple(re.search(r"(\S+)$", r[:end]).group(1) for end in ends)
                         for r in rows)
            seen.update(text=t, st=s)
            return want == got
        pane.wait(agree, "the pane's REQS and FAIL equal to /status's")
        text, st = seen["text"], seen["st"]
        lines = text.splitlines()
        self.assertLessEqual(max(len(l) for l in lines), 80)
        title = lines[0]
        self.assertRegex(title, r"requests %d\s*$" % st["requests_total"])
        head, rows = self.table(text, "ENDPOINT", "STATUS")
        for col in ("STATUS", "SMOOTHED", "REQS", "FAIL", "LAST ERROR"):
            self.assertIn(col, head, text)
        self.assertNotIn("…", head)
        self.assertEqual(len(rows), 3, text)
        reqs_end = head.index("REQS") + len("REQS")
        fail_end = head.index("FAIL") + len("FAIL")
        name_end = head.index("STATUS")
        by_status = {e["name"]: e for e in st["endpoints"]}
        shown = []
        for row in rows:
            name = row[5:name_end].strip()
            shown.append(name)
            # A cut name says so, and keeps its distinguishing end.
            full = [n for n in self.LONG if n == name or
                    ("…" in name and n.startswith(name.split("…")[0])
                     and n.endswith(name.split("…")[1]))]
            self.assertEqual(len(full), 1, "name %r matches %r\n%s" % (name, full, text))
            e = by_status[full[0]]
            self.assertEqual(self.cell_ending_at(row, reqs_end), str(int(e["requests"])), text)
            self.assertEqual(self.cell_ending_at(row, fail_end), str(int(e["failures"])), text)
            sm = e["smoothed_latency_ms"]
            self.assertIn(" %.0fms " % sm if sm < 1000 else " %.2fs " % (sm / 1000), row)
        self.assertEqual(len(set(shown)), 3, text)
        self.assertGreater(sum(int(e["requests"]) for e in st["endpoints"]), 34)
        self.assertGreater(sum(int(e["failures"]) for e in st["endpoints"]), 0)
        self.assert_quits_cleanly(pane, "q", port=self.port)

    def test_160x45_every_column(self):
        pane, st = self.start_crowded(160, 45)
        text = pane.text()
        head, rows = self.table(text, "ENDPOINT", "STATUS")
        for col in ("STATUS", "SMOOTHED", "LAST", "HISTORY", "OK%", "CIRCUIT", "NOW", "REQS",
                    "FAIL"):
            self.assertIn(col, head, text)
        # Room enough: the names whole, the history there.
        for n in self.LONG:
            self.assertTrue(any(n in r for r in rows), text)
        self.assertTrue(all(re.search(r"[▁▂▃▄▅▆▇█]", r) for r in rows), text)
        self.assertIn("Check tokens:", text.splitlines()[2])
        # One panel below at this width.
        self.assertIn("RECENT EVENTS", text)
        self.assertNotRegex(text, r" LOG\b")
        self.assert_quits_cleanly(pane, "q", port=self.port)

    def test_250x70_events_and_log_side_by_side(self):
        pane, st = self.start_crowded(250, 70)
        text = pane.wait(lambda t: any("RECENT EVENTS" in l and re.search(r" LOG\b", l)
                                       for l in t.splitlines()) and t,
                         "the events and the log headers on one row")
        lines = text.splitlines()
        h = [i for i, l in enumerate(lines) if "RECENT EVENTS" in l][0]
        self.assertGreaterEqual(lines[h].index(" LOG"), 120)
        # Below: an event on the left and a log line on the right, same row.
        self.assertRegex(lines[h + 1], r"^\s+\d\d:\d\d:\d\d \S+.*\s\d{4}-\d\d-\d\dT", text)
        used = [l for l in lines[h:-2] if l.strip()]
        self.assertGreater(len(used), 10, text)
        self.assert_quits_cleanly(pane, "q", port=self.port)

    def test_chinese_80x24_whole_headers_and_texts(self):
        pane, st = self.start_crowded(80, 24, language="zh")
        text = pane.text()
        lines = text.splitlines()
        for l in lines:
            self.assertLessEqual(display_width(l), 80, l)
        self.assertRegex(lines[0], r"请求 %d\s*$" % st["requests_total"])
        head, rows = self.table(text, "端点", "状态")
        for col in ("状态", "平滑延迟", "请求", "失败", "最近错误"):
            self.assertIn(col, head, text)
        self.assertNotIn("…", head)
        self.assertEqual(len(rows), 3, text)
        # The load level and the check method in Chinese too.
        self.assertRegex(lines[2], r"负载: (空闲|轻度|繁忙)")
        self.assertNotRegex(lines[2], r"\b(idle|light|busy|messages)\b")
        # Event texts: the pins made manual-mode events.
        self.assertIn("模式：手动，固定到", text)
        self.assertNotIn("mode: manual", text)
        self.assert_quits_cleanly(pane, "q", port=self.port)

    def test_demo_takes_the_language(self):
        cmd = "%s --demo --port 0 --dashboard" % shlex.quote(PROXY_BIN)
        pane = Pane(self, cmd, env={"ZEPHYR_UI_LANGUAGE": "zh"})
        self.addCleanup(self.stop_leftover, pane)
        text = pane.wait(lambda t: "relay-tokyo" in t and "模式" in t and t, "the demo in Chinese")
        self.assertIn("q 退出", text.rstrip("\n").splitlines()[-1])
        self.assert_quits_cleanly(pane, "q")

    def test_connect_log_key_says_log_is_remote(self):
        fakes = self.start_fakes(("alpha",))
        proxy = self.start_proxy(self.main_group(fakes))
        cmd = "%s --dashboard --connect %s" % (shlex.quote(PROXY_BIN), proxy.url)
        pane = Pane(self, cmd)
        self.addCleanup(self.stop_leftover, pane)
        pane.wait(lambda t: "alpha" in rows_of(t), "the remote endpoint")
        pane.keys("l")
        text = pane.wait_text("the log is not available with --connect")
        self.assertNotIn("no log lines", text)

    def test_connect_slow_proxy_never_freezes_the_screen(self):
        """A proxy that takes its time with /status (here: never answers)
        does not hold up the screen: a key is handled while the request is
        still open.  The fetch used to be a blocking libcurl transfer on the
        dashboard's loop, so a key waited until it timed out (1.5 s)."""
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        self.addCleanup(srv.close)
        port = srv.getsockname()[1]
        conns = []            # [socket, time the request arrived, time the client closed]
        lock = threading.Lock()
        done = threading.Event()
        self.addCleanup(done.set)

        def serve():
            srv.settimeout(0.05)
            while not done.is_set():
                try:
                    c, _ = srv.accept()
                    c.setblocking(False)
                    with lock:
                        conns.append([c, None, None])
                except OSError:
                    pass
                with lock:
                    for rec in conns:
                        if rec[2] is not None:
                            continue
                        try:
                            data = rec[0].recv(65536)
                        except BlockingIOError:
                            continue
                        except OSError:
                            data = b""
                        if data and rec[1] is None and b"\r\n\r\n" in data:
                            rec[1] = time.monotonic()
                        if not data:
                            rec[2] = time.monotonic()
                            rec[0].close()
            with lock:
                for rec in conns:
                    if rec[2] is None:
                        rec[0].close()
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        self.addCleanup(t.join, 5)

        cmd = "%s --dashboard --connect http://127.0.0.1:%d" % (shlex.quote(PROXY_BIN), port)
        pane = Pane(self, cmd)
        self.addCleanup(self.stop_leftover, pane)

        def open_request():
            with lock:
                return next((r for r in conns if r[1] is not None and r[2] is None), None)
        # Up to three tries, so that a machine too busy to redraw within the
        # request's 1.5 s does not fail the test; a frozen screen fails all.
        late = []
        help_on = False
        for _ in range(3):
            rec = wait_for(open_request, STEP, interval=0.01, desc="a /status request held open")
            pane.keys("?")
            help_on = not help_on
            if help_on:
                pane.wait(lambda t: "KEYS" in t and "MARKS" in t, "the help page")
            else:
                pane.wait(lambda t: "KEYS" not in t, "the help page gone")
            with lock:
                closed = rec[2]
            if closed is None:
                break
            late.append(closed - rec[1])
        else:
            self.fail("every key was handled only after the /status request ended (%s s after "
                      "it arrived): the screen froze while it waited"
                      % ", ".join("%.2f" % x for x in late))
        # The request times out and the screen says so; polling goes on.
        if help_on:
            pane.keys("?")
        pane.wait_text("cannot reach http://127.0.0.1:%d" % port)
        self.assert_quits_cleanly(pane, "q")


if __name__ == "__main__":
    unittest.main()
