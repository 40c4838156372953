"""The README works as written.

Every command in the README's shell blocks (```sh) is run here when it can
be: in a scratch directory holding copies of the files the README names
(config.example.toml, .env.example, monitor.sh, run.sh; build/ is the build
under test), with a scratch HOME, each with a time limit; `127.0.0.1:8080`
is a demo proxy this test starts on a free port.  A command that cannot run
in a test (installing packages, running the proxy until Ctrl-C, Claude Code
itself) is checked as far as it can be (its shell syntax, the files it
names, every option it gives the proxy) and then reported as skipped with
the reason.  So a README command with a wrong flag fails here.

Also: what a newcomer needs is on the first screen, every link of the README
and of docs/ leads somewhere, and `./run.sh` builds only the proxy, quietly.
"""

import os
import re
import shlex
import shutil
import subprocess
import unittest

from harness import (BUILD_DIR, PROXY_BIN, REPO_ROOT, Proxy, ZephyrTestCase, child_env,
                     scaled)

README = os.path.join(REPO_ROOT, "README.md")
DOCS = os.path.join(REPO_ROOT, "docs")
FIRST_SCREEN = 40          # lines: a terminal, or the top of the page on GitHub
RUN_TIMEOUT = 30
# Files the README's commands use, copied into the scratch directory.
COPIED = ("config.example.toml", ".env.example", "monitor.sh", "run.sh")
DEFAULT_ADDR = re.compile(r"\b(?:127\.0\.0\.1|localhost):8080\b")


def shell_blocks(text):
    """[(first line number, [lines])] of the ```sh / ```bash / ```shell blocks."""
    out = []
    for m in re.finditer(r"^```(sh|bash|shell)[ \t]*\n(.*?)^```", text, re.M | re.S):
        out.append((text.count("\n", 0, m.start()) + 2, m.group(2).splitlines()))
    return out


def commands(lines):
    """Logical command lines of a block: continuation lines joined, comments
    and blank lines dropped.  Returns [(raw line, [argv, ...])], one argv per
    `&&`-joined part."""
    out, cur = [], ""
    for ln in lines:
        if ln.rstrip().endswith("\\"):
            cur += ln.rstrip()[:-1] + " "
            continue
        cur += ln
        words = shlex.split(cur, comments=True)
        if words:
            parts, part = [], []
            for w in words:
                if w == "&&":
                    parts.append(part)
                    part = []
                else:
                    part.append(w)
            parts.append(part)
            out.append((cur.strip(), parts))
        cur = ""
    return out


def proxy_options_ok(args, work):
    """Asserts the proxy accepts every option in args.  It parses them all
    before a final --help (an unknown option, or a bad --cycles/--interval,
    exits 2); the values it checks after parsing (--port, --bind,
    --log-level) are tried once more with --check-config on a small valid
    configuration."""
    r = subprocess.run([PROXY_BIN] + list(args) + ["--help"], capture_output=True, text=True,
                       timeout=RUN_TIMEOUT, env=child_env(), stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise AssertionError("claude-zephyr refuses the options %s: %s"
                             % (" ".join(args), r.stderr.strip().splitlines()[0]
                                if r.stderr.strip() else "exit %d" % r.returncode))
    valued = []
    for k, a in enumerate(args):
        if a in ("--port", "--bind", "--log-level") and k + 1 < len(args):
            valued += [a, args[k + 1]]
        elif a.split("=")[0] in ("--port", "--bind", "--log-level"):
            valued.append(a)
    if valued:
        cfg = os.path.join(work, "options-check.toml")
        with open(cfg, "w") as f:
            f.write('[[groups]]\nname = "g"\nendpoints = [{ url = "http://127.0.0.1:9", name = "a" }]\n')
        r = subprocess.run([PROXY_BIN, "--check-config", "--config", cfg] + valued,
                           capture_output=True, text=True, timeout=RUN_TIMEOUT, env=child_env(),
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise AssertionError("claude-zephyr refuses %s: %s" % (" ".join(valued), r.stderr.strip()))


class Checker:
    """Runs (or checks) README commands in a scratch directory.  check()
    returns None when the command ran, or the reason it could not run (after
    the static checks); it raises AssertionError when the command is wrong."""

    def __init__(self, work, port):
        self.work = work
        self.port = port
        self.env = child_env({"HOME": os.path.join(work, "home")}, unset=("XDG_CONFIG_HOME",))
        self.exported = {}

    def at_proxy(self, s):
        return DEFAULT_ADDR.sub("127.0.0.1:%d" % self.port, s)

    def run(self, argv, ok_codes=(0,)):
        r = subprocess.run(argv, cwd=self.work, env=self.env, capture_output=True, text=True,
                           timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
        if r.returncode not in ok_codes:
            raise AssertionError("%s -> exit %d\nstdout: %s\nstderr: %s"
                                 % (" ".join(argv), r.returncode, r.stdout[-1500:], r.stderr[-1500:]))
        return r

    def syntax(self, raw):
        r = subprocess.run(["bash", "-n", "-c", raw], capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            raise AssertionError("not valid shell: %s\n%s" % (raw, r.stderr))

    def check(self, raw, parts):
        self.syntax(raw)
        notes = []
        for argv in parts:
            note = self.check_one(argv)
            if note:
                notes.append(note)
        return "; ".join(notes) or None

    def check_one(self, argv):
        prog, args = argv[0], argv[1:]
        if prog == "export":
            for a in args:
                name, _, value = a.partition("=")
                self.exported[name] = value
                self.env[name] = value
            if "ANTHROPIC_BASE_URL" in self.exported:
                url = self.exported["ANTHROPIC_BASE_URL"]
                if not DEFAULT_ADDR.search(url):
                    raise AssertionError("ANTHROPIC_BASE_URL %s is not where the proxy listens "
                                         "by default (127.0.0.1:8080)" % url)
            return None
        if prog in ("cp", "chmod"):
            if prog == "cp":
                src = args[-2]
                if not os.path.exists(os.path.join(REPO_ROOT, src)):
                    raise AssertionError("%s: no such file in the repository" % src)
            self.run(argv)
            if prog == "cp" and args[-1] == ".env":
                # What the README asks next ("put your tokens there"); the
                # placeholders are refused on purpose.
                path = os.path.join(self.work, ".env")
                with open(path) as f:
                    text = f.read()
                with open(path, "w") as f:
                    f.write(re.sub(r"your-[a-z-]+-here", "zt-readme-token-0123456789", text))
            return None
        if prog in ("build/claude-zephyr", "claude-zephyr"):
            runnable = {"--check-config", "--help", "--version"}
            if runnable & set(args):
                r = self.run([PROXY_BIN] + args)
                if "--check-config" in args and ": OK" not in r.stdout:
                    raise AssertionError("--check-config did not say OK:\n" + r.stdout)
                if "--help" in args and "usage:" not in r.stdout:
                    raise AssertionError("--help printed no usage")
                return None
            proxy_options_ok(args, self.work)
            return "runs the proxy until stopped (options checked with --help)"
        if prog == "./run.sh":
            self.run(["sh", "-n", "run.sh"])
            if args[:1] == ["test"]:
                with open(os.path.join(self.work, "run.sh")) as f:
                    if '"test"' not in f.read():
                        raise AssertionError("run.sh has no `test` branch")
                return ("./run.sh test installs packages and runs the whole suite, this test "
                        "included (run.sh syntax checked)")
            proxy_options_ok(args, self.work)
            return ("./run.sh installs packages and runs the proxy until stopped (run.sh "
                    "syntax and the proxy options checked; RunScript runs it for real)")
        if prog == "curl":
            self.run(["curl", "-fsS", "--max-time", "10"] + [self.at_proxy(a) for a in args])
            return None
        if prog == "./monitor.sh":
            self.run(["sh", "monitor.sh"] + [self.at_proxy(a) for a in args])
            return None
        if prog == "claude":
            for need in ("ANTHROPIC_BASE_URL",):
                if need not in self.exported:
                    raise AssertionError("claude is run without %s exported before it" % need)
            if not ({"ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY"} & set(self.exported)):
                raise AssertionError("claude is run without ANTHROPIC_AUTH_TOKEN or "
                                     "ANTHROPIC_API_KEY: Claude Code would ask to log in")
            return ("Claude Code is not installed for this test and needs a terminal "
                    "(test_clients.py runs it against the proxy; the variables were checked)")
        # Anything else: it must at least exist.
        if "/" in prog:
            if not os.path.exists(os.path.join(REPO_ROOT, prog)):
                raise AssertionError("%s: no such file in the repository" % prog)
        elif shutil.which(prog) is None:
            return "%s is not installed here (shell syntax checked)" % prog
        return "%s is not one this check knows how to run (shell syntax checked)" % prog


class ReadmeCommands(ZephyrTestCase):

    def scratch(self):
        work = os.path.join(self.tmp, "work")
        os.makedirs(os.path.join(work, "home"))
        for name in COPIED:
            shutil.copy2(os.path.join(REPO_ROOT, name), os.path.join(work, name))
        os.symlink(BUILD_DIR, os.path.join(work, "build"))
        return work

    def demo_proxy(self):
        dummy = self.write_config("", name="unused.toml")  # --demo reads no file
        p = Proxy(dummy, extra_args=("--demo",), cwd=self.tmp)
        self.addCleanup(self._stop_proxy, p)
        return p

    def test_first_screen_has_what_a_newcomer_needs(self):
        with open(README) as f:
            top = "".join(f.readlines()[:FIRST_SCREEN])
        for need, why in (("http://127.0.0.1:8080/dashboard", "the dashboard's address"),
                          ("./run.sh ", "the command that runs the proxy"),
                          ("./run.sh test", "the command that runs the tests"),
                          ("ANTHROPIC_BASE_URL=http://127.0.0.1:8080", "how to point claude at it")):
            self.assertIn(need, top, "%s is not in the README's first %d lines" % (why, FIRST_SCREEN))
        self.assertRegex(top, r"ANTHROPIC_(AUTH_TOKEN|API_KEY)=",
                         "the README's first screen does not say what key to give claude")
        self.assertRegex(top, r"(?s)ANTHROPIC_AUTH_TOKEN.*(removes|replaces|injects)",
                         "the first screen does not say why any key will do")
        with open(README) as f:
            self.assertLess(len(f.readlines()), 150, "the README grew back into a manual: "
                            "reference material belongs in docs/")

    def test_every_command_runs(self):
        with open(README) as f:
            blocks = shell_blocks(f.read())
        self.assertTrue(blocks, "no ```sh blocks in the README")
        p = self.demo_proxy()
        chk = Checker(self.scratch(), p.port)
        ran, skipped = [], []
        for line, lines in blocks:
            chk.exported = {}  # each block is a fresh terminal
            for raw, parts in commands(lines):
                with self.subTest(readme_line=line, command=raw):
                    why = chk.check(raw, parts)
                    if why:
                        skipped.append(raw)
                        self.skipTest("not run: %s" % why)
                    ran.append(raw)
        self.assertTrue(any("--check-config" in r for r in ran), ran)
        self.assertTrue(any(r.startswith("curl") for r in ran), ran)

    def test_the_check_catches_a_wrong_command(self):
        p = self.demo_proxy()
        chk = Checker(self.scratch(), p.port)
        for bad in ("build/claude-zephyr --chek-config", "./run.sh --dashbaord",
                    "./run.sh --port 9000 --dashboard --conect http://x", "cp config.exmple.toml config.toml",
                    "curl http://127.0.0.1:8080/stauts", "./monitor.sh -Z http://127.0.0.1:8080",
                    "build/claude-zephyr --port 99999"):
            with self.subTest(command=bad):
                parts = commands([bad])[0][1]
                with self.assertRaises(AssertionError, msg="the README check accepts %r" % bad):
                    chk.check(bad, parts)

    def test_links_lead_somewhere(self):
        pages = [README] + [os.path.join(DOCS, f) for f in sorted(os.listdir(DOCS)) if f.endswith(".md")]
        bad = []
        for page in pages:
            with open(page) as f:
                text = f.read()
            for target in re.findall(r"\]\(([^)\s]+)\)", text):
                if re.match(r"[a-z]+:", target):
                    continue
                path, _, anchor = target.partition("#")
                full = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
                if not os.path.exists(full):
                    bad.append("%s: %s (no such file)" % (os.path.relpath(page, REPO_ROOT), target))
                    continue
                if anchor and full.endswith(".md"):
                    with open(full) as f:
                        slugs = {slug(h) for h in re.findall(r"^#+\s+(.*)$", f.read(), re.M)}
                    if anchor not in slugs:
                        bad.append("%s: %s (no such heading)" % (os.path.relpath(page, REPO_ROOT), target))
        self.assertFalse(bad, "links that lead nowhere:\n" + "\n".join(bad))


def slug(heading):
    """GitHub's anchor for a heading."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


class RunScript(ZephyrTestCase):
    """./run.sh for real, in a copy of the repository whose build is almost
    up to date (two objects removed, so something is compiled), with
    dpkg-query answering that every package is installed."""

    def copy_repo(self):
        src_build = os.path.join(REPO_ROOT, "build")
        for need in ("obj/main.o", "libzephyr.a", "llhttp/llhttp.h"):
            if not os.path.exists(os.path.join(src_build, need)):
                self.skipTest("no plain build in build/ to start from (%s missing); "
                              "building from scratch here would take minutes" % need)
        dst = os.path.join(self.tmp, "repo")
        ls = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True,
                            timeout=30)
        files = [f for f in ls.stdout.decode().split("\0") if f] if ls.returncode == 0 else []
        if not files:
            self.skipTest("not a git checkout: cannot tell which files belong to the repository")
        for f in files:
            if os.path.exists(os.path.join(REPO_ROOT, f)):
                os.makedirs(os.path.dirname(os.path.join(dst, f)), exist_ok=True)
                shutil.copy2(os.path.join(REPO_ROOT, f), os.path.join(dst, f))
        os.makedirs(os.path.join(dst, "build"))
        shutil.copytree(os.path.join(src_build, "llhttp"), os.path.join(dst, "build", "llhttp"))
        shutil.copytree(os.path.join(src_build, "obj"), os.path.join(dst, "build", "obj"),
                        ignore=shutil.ignore_patterns("tests"))
        shutil.copy2(os.path.join(src_build, "libzephyr.a"), os.path.join(dst, "build"))
        for o in ("main", "util"):
            os.unlink(os.path.join(dst, "build", "obj", o + ".o"))
        stub = os.path.join(self.tmp, "bin")
        os.makedirs(stub)
        with open(os.path.join(stub, "dpkg-query"), "w") as f:
            f.write("#!/bin/sh\nprintf 'install ok installed'\n")
        os.chmod(os.path.join(stub, "dpkg-query"), 0o755)
        return dst, stub

    def run_sh(self, dst, stub, args, extra_env=None):
        env = child_env(dict({"PATH": stub + os.pathsep + os.environ.get("PATH", ""),
                              "HOME": self.tmp}, **(extra_env or {})), unset=("V", "MAKEFLAGS"))
        return subprocess.run(["./run.sh"] + args, cwd=dst, env=env, capture_output=True,
                              text=True, timeout=scaled(300), stdin=subprocess.DEVNULL)

    def test_run_sh_builds_only_the_proxy_quietly(self):
        dst, stub = self.copy_repo()
        r = self.run_sh(dst, stub, ["--version"])
        out = r.stdout + r.stderr
        self.assertEqual(r.returncode, 0, out[-3000:])
        self.assertIn("claude-zephyr", r.stdout)
        commands_shown = [l for l in out.splitlines()
                          if re.match(r"^(cc|gcc|c\+\+|g\+\+|ar|rm) ", l)]
        self.assertFalse(commands_shown, "./run.sh printed compiler command lines:\n"
                         + "\n".join(commands_shown[:10]))
        self.assertLessEqual(len(out.splitlines()), 3, "./run.sh is noisy:\n" + out[-3000:])
        self.assertFalse(os.path.exists(os.path.join(dst, "build", "fake-upstream")),
                         "./run.sh built the fake upstream, which only the tests need")
        self.assertFalse(os.path.exists(os.path.join(dst, "build", "tests")),
                         "./run.sh built the unit tests")
        # V=1 shows the commands.
        os.unlink(os.path.join(dst, "build", "obj", "main.o"))
        r = self.run_sh(dst, stub, ["--version"], {"V": "1"})
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        self.assertRegex(r.stdout + r.stderr, r"(?m)^(cc|gcc) .*src/main\.c")


if __name__ == "__main__":
    unittest.main()
