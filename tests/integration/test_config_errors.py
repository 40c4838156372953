"""
Configuration errors and the command line of claude-zephyr.

Every kind of configuration error is checked twice: with --check-config
(exit 1, problems on stderr) and with a plain start (exit 1 quickly, nothing
ever listens).  The message must have the form

    PATH:LINE: key: what is wrong; what would be right

so each case names the line(s) it may be reported on, a word that must appear
in that message (the key) and extra words (did-you-mean, variable name ...).
Tokens must never appear in any output.
"""

import os
import re
import secrets
import subprocess
import tempfile
import time
import unittest

from harness import (PROXY_BIN, ZephyrTestCase, child_env, free_port, port_accepts,
                     sanitizer_report, scaled, stats_header)

TOKEN = "sk-zt-cfg-" + secrets.token_hex(12)
PLACEHOLDER = "your-token-here"

BASE = """\
[server]
bind = "127.0.0.1"
port = 8080
switch_threshold_ms = 50

[[groups]]
name = "grp-main"
auth_token_env = "ZT_CFG_TOKEN"
endpoints = [
  { url = "http://127.0.0.1:9", name = "ep-alpha" },
  { url = "http://127.0.0.1:10", name = "ep-beta" },
]

[[groups]]
name = "grp-alt"
endpoints = [
  { url = "https://example.invalid/api", name = "ep-gamma" },
]

[health_check]
interval_seconds = 120
timeout_seconds = 15
min_interval_seconds = 30
max_interval_seconds = 3600
"""
# line numbers in BASE (1-based)
L_BIND = 2
L_PORT = 3
L_G1 = 6
L_G1_TOKEN_ENV = 8
L_G1_EP_A = 10
L_G1_EP_B = 11
L_HC_INTERVAL = 21
L_HC_TIMEOUT = 22
L_HC_MIN = 23
L_HC_MAX = 24

ENV_OK = {"ZT_CFG_TOKEN": TOKEN}


def replace_line(text, lineno, new):
    lines = text.split("\n")
    lines[lineno - 1] = new
    return "\n".join(lines)


def _assert_base_lines():
    lines = BASE.split("\n")
    assert lines[L_BIND - 1].startswith("bind"), lines[L_BIND - 1]
    assert lines[L_PORT - 1].startswith("port")
    assert lines[L_G1 - 1] == "[[groups]]"
    assert lines[L_G1_TOKEN_ENV - 1].startswith("auth_token_env")
    assert "ep-alpha" in lines[L_G1_EP_A - 1] and "ep-beta" in lines[L_G1_EP_B - 1]
    assert lines[L_HC_INTERVAL - 1].startswith("interval_seconds")
    assert lines[L_HC_TIMEOUT - 1].startswith("timeout_seconds")
    assert lines[L_HC_MIN - 1].startswith("min_interval_seconds")
    assert lines[L_HC_MAX - 1].startswith("max_interval_seconds")


_assert_base_lines()


def no_groups():
    return BASE.split("[[groups]]")[0] + BASE[BASE.index("[health_check]"):]


def group_without_endpoints():
    t = BASE
    for ln in (L_G1_EP_A, L_G1_EP_B):
        t = replace_line(t, ln, "")
    t = replace_line(t, L_G1_EP_A - 1, "")
    return replace_line(t, L_G1_EP_B + 1, "")


# name -> (config text, env, acceptable lines (None: any), key word, extra words,
#          words that must not appear anywhere in the output)
CASES = {
    "toml_syntax_error": (replace_line(BASE, L_BIND, 'bind = "127.0.0.1'), ENV_OK,
                          {L_BIND}, None, [], []),
    "wrong_type": (replace_line(BASE, L_PORT, 'port = "abc"'), ENV_OK,
                   {L_PORT}, "port", [], []),
    "unknown_key_did_you_mean": (replace_line(BASE, L_PORT, "prot = 8080"), ENV_OK,
                                 {L_PORT}, "prot", [r"\bport\b"], []),
    "no_groups": (no_groups(), ENV_OK, None, "groups", [], []),
    "group_without_endpoints": (group_without_endpoints(), ENV_OK,
                                set(range(L_G1, L_G1_EP_B + 2)), "endpoints", [], []),
    "duplicate_endpoint_names": (replace_line(BASE, L_G1_EP_B,
                                              '  { url = "http://127.0.0.1:10", name = "ep-alpha" },'),
                                 ENV_OK, {L_G1_EP_A, L_G1_EP_B}, "name", ["ep-alpha"], []),
    "bad_url_scheme": (replace_line(BASE, L_G1_EP_A, '  { url = "ftp://x", name = "ep-alpha" },'),
                       ENV_OK, {L_G1_EP_A}, "url", ["http"], []),
    "missing_token_variable": (replace_line(BASE, L_G1_TOKEN_ENV, 'auth_token_env = "ZT_CFG_MISSING_VAR"'),
                               {}, {L_G1_TOKEN_ENV}, "auth_token_env", ["ZT_CFG_MISSING_VAR"], []),
    "placeholder_token": (BASE, {"ZT_CFG_TOKEN": PLACEHOLDER}, {L_G1_TOKEN_ENV}, "auth_token_env",
                          ["(?i)placeholder"], [PLACEHOLDER]),
    "check_timeout_not_below_interval": (
        replace_line(replace_line(BASE, L_HC_INTERVAL, "interval_seconds = 60"),
                     L_HC_TIMEOUT, "timeout_seconds = 60"),
        ENV_OK, {L_HC_INTERVAL, L_HC_TIMEOUT}, "timeout_seconds", [], []),
    "min_interval_above_max": (
        replace_line(replace_line(BASE, L_HC_MIN, "min_interval_seconds = 600"),
                     L_HC_MAX, "max_interval_seconds = 300"),
        ENV_OK, {L_HC_MIN, L_HC_MAX}, "_interval_seconds", [r"min_interval_seconds|max_interval_seconds"], []),
}


def run(args, env, timeout=None, cwd=None):
    return subprocess.run([PROXY_BIN] + args, stdin=subprocess.DEVNULL, capture_output=True,
                          env=child_env(env), timeout=timeout or scaled(10), cwd=cwd)


class ConfigErrors(unittest.TestCase):
    maxDiff = 4000

    def setUp(self):
        if not os.path.exists(PROXY_BIN):
            self.fail("proxy binary missing: %s (build it first)" % PROXY_BIN)
        self.dir = tempfile.mkdtemp(prefix="zt-cfg-")
        self.addCleanup(lambda: __import__("shutil").rmtree(self.dir, ignore_errors=True))

    def write(self, text):
        path = os.path.join(self.dir, "config.toml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def check_clean(self, out, err):
        rep = sanitizer_report(err)
        self.assertIsNone(rep, "sanitizer report on stderr:\n" + err[-6000:])

    def check_message(self, path, err, lines, key, extra, secret_words, out=""):
        """Finds a 'PATH:LINE: ...' line satisfying the case and returns it."""
        pat = re.compile(re.escape(path) + r":(\d+):\s*(.*)")
        found = []
        for ln in err.splitlines():
            m = pat.search(ln)
            if not m:
                continue
            found.append(ln)
            lineno, rest = int(m.group(1)), m.group(2)
            if lines is not None and lineno not in lines:
                continue
            if key is not None and key not in rest:
                continue
            if not all(re.search(x, rest) for x in extra):
                continue
            if ";" not in rest:
                continue  # 'what is wrong; what would be right'
            break
        else:
            self.fail("no message '%s:LINE: %s...; hint' with LINE in %s and %r in stderr "
                      "(messages found: %r)\nstderr:\n%s"
                      % (path, key or "", sorted(lines) if lines else "any", extra, found, err[-3000:]))
        for w in secret_words + [TOKEN]:
            self.assertNotIn(w, err)
            self.assertNotIn(w, out)

    def _check_config_case(self, name):
        text, env, lines, key, extra, secrets_ = CASES[name]
        path = self.write(text)
        r = run(["--config", path, "--check-config"], env)
        out, err = r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
        self.check_clean(out, err)
        self.assertEqual(r.returncode, 1, "exit %d\nstdout:\n%s\nstderr:\n%s" % (r.returncode, out, err))
        self.check_message(path, err, lines, key, extra, secrets_, out)

    def _start_case(self, name):
        text, env, lines, key, extra, secrets_ = CASES[name]
        path = self.write(text)
        port = free_port()
        proc = subprocess.Popen([PROXY_BIN, "--config", path, "--port", str(port)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=child_env(env), cwd=self.dir)
        listened = False
        deadline = time.monotonic() + scaled(5)
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                if port_accepts(port, 0.1):
                    listened = True
                time.sleep(0.01)
        finally:
            if proc.poll() is None:
                proc.kill()
            out, err = proc.communicate(timeout=scaled(5))
        out, err = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        self.check_clean(out, err)
        self.assertEqual(proc.returncode, 1, "start with a bad config: exit %r within %.0fs\nstderr:\n%s"
                         % (proc.returncode, scaled(5), err[-3000:]))
        self.assertFalse(listened, "the proxy listened with a bad config")
        self.assertNotIn("listening on", err)
        self.check_message(path, err, lines, key, extra, secrets_, out)

    # -- valid configurations --

    def test_valid_config_check_summary(self):
        path = self.write(BASE)
        r = run(["--config", path, "--check-config"], ENV_OK)
        out, err = r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
        self.check_clean(out, err)
        self.assertEqual(r.returncode, 0, "stdout:\n%s\nstderr:\n%s" % (out, err))
        for w in ("grp-main", "grp-alt", "ep-alpha", "ep-beta", "ep-gamma"):
            self.assertIn(w, out, "summary does not name %s:\n%s" % (w, out))
        self.assertNotIn(TOKEN, out + err)

    def test_dotenv_beside_config_check(self):
        path = self.write(BASE)
        with open(os.path.join(self.dir, ".env"), "w") as f:
            f.write("# tokens for the test\nZT_CFG_TOKEN=%s\n" % TOKEN)
        elsewhere = tempfile.mkdtemp(prefix="zt-cwd-")
        self.addCleanup(lambda: __import__("shutil").rmtree(elsewhere, ignore_errors=True))
        r = run(["--config", path, "--check-config"], {}, cwd=elsewhere)
        out, err = r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
        self.check_clean(out, err)
        self.assertEqual(r.returncode, 0, "token from .env beside the config not found\nstderr:\n%s" % err)
        self.assertNotIn(TOKEN, out + err)

    # -- command line --

    def test_unknown_flag_exit_2_with_usage(self):
        r = run(["--no-such-flag"], ENV_OK)
        err = r.stderr.decode("utf-8", "replace")
        self.check_clean("", err)
        self.assertEqual(r.returncode, 2, err)
        self.assertRegex(err, r"(?i)usage")

    def test_version(self):
        r = run(["--version"], ENV_OK)
        out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
        self.check_clean("", out)
        self.assertEqual(r.returncode, 0, out)
        self.assertRegex(out, r"\d+\.\d+")

    def test_help(self):
        r = run(["--help"], ENV_OK)
        out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
        self.check_clean("", out)
        self.assertEqual(r.returncode, 0, out)
        self.assertRegex(out, r"(?i)usage")
        self.assertIn("--config", out)
        self.assertIn("--check-config", out)

    # -- errors that say what to do next --

    def test_option_without_value_is_one_line(self):
        r = run(["--port"], ENV_OK)
        err = r.stderr.decode("utf-8", "replace")
        self.check_clean("", err)
        self.assertEqual(r.returncode, 2, err)
        self.assertEqual(err.count("\n"), 1, "one line, not the whole help:\n" + err)
        self.assertIn("--port needs a value", err)

    def test_missing_config_file_names_the_way_out(self):
        r = run(["--config", os.path.join(self.dir, "nothing-here.toml")], ENV_OK)
        err = r.stderr.decode("utf-8", "replace")
        self.check_clean("", err)
        self.assertEqual(r.returncode, 1, err)
        self.assertIn("nothing-here.toml", err)
        self.assertIn("config.example.toml", err)
        self.assertIn("--demo", err)

    def test_port_in_use_suggests_another(self):
        import socket
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        r = run(["--demo", "--port", str(port)], {})
        err = r.stderr.decode("utf-8", "replace")
        self.check_clean("", err)
        self.assertEqual(r.returncode, 1, err)
        self.assertIn("cannot listen on 127.0.0.1:%d" % port, err)
        self.assertIn("--port", err)
        self.assertIn("another claude-zephyr", err)

    def test_version_does_not_load_libcurl(self):
        # A libcurl that cannot be loaded: loading it would log an error.
        r = run(["--version"], dict(ENV_OK, ZEPHYR_LIBCURL="/nonexistent/libcurl.so.4"))
        out, err = r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
        self.check_clean(out, err)
        self.assertEqual(r.returncode, 0, err)
        self.assertEqual(err, "", "--version tried to load libcurl")
        self.assertIn("libcurl: loaded on demand", out)


def _add_cases():
    for name in CASES:
        def t_check(self, name=name):
            self._check_config_case(name)

        def t_start(self, name=name):
            self._start_case(name)
        t_check.__name__ = "test_%s_check_config" % name
        t_start.__name__ = "test_%s_start" % name
        setattr(ConfigErrors, t_check.__name__, t_check)
        setattr(ConfigErrors, t_start.__name__, t_start)


_add_cases()


class DotEnv(ZephyrTestCase):
    """A token from a .env file beside the config is used; the environment
    wins over .env."""

    def _run(self, env_token, dotenv_token, expect):
        fake = self.start_fake()
        fake.config(token=expect)
        text = ('[server]\nshutdown_grace_ms = 3000\n\n[[groups]]\nname = "main"\n'
                'auth_token_env = "ZT_DOTENV_TOKEN"\nendpoints = [\n  { url = "%s", name = "a" },\n]\n'
                % fake.url)
        elsewhere = tempfile.mkdtemp(prefix="zt-cwd-")
        self.addCleanup(lambda: __import__("shutil").rmtree(elsewhere, ignore_errors=True))
        env = {"ZT_DOTENV_TOKEN": env_token} if env_token else {}
        p = self.start_proxy(config_text=text, env=env, cwd=elsewhere,
                             dotenv="# test\nZT_DOTENV_TOKEN=%s\n" % dotenv_token)
        r, st = self.captured(fake, lambda m: self.post_messages(p.port, headers=m))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(stats_header(st, "x-api-key"), [expect])
        for t in (env_token, dotenv_token):
            if t:
                self.assertNotIn(t, p.stderr_text())

    def test_token_from_dotenv_beside_config(self):
        tok = "sk-zt-dotenv-" + secrets.token_hex(8)
        self._run(None, tok, tok)

    def test_environment_wins_over_dotenv(self):
        env_tok = "sk-zt-env-" + secrets.token_hex(8)
        self._run(env_tok, "sk-zt-dotenv-" + secrets.token_hex(8), env_tok)


if __name__ == "__main__":
    unittest.main()
