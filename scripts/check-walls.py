#!/usr/bin/env python3
"""
The walls between modules, checked by `make lint` (see docs/DESIGN.md,
"Module map").  What a script can see, it checks:

  1. Pure modules do no I/O: no libuv, libcurl, file, socket, clock,
     process or signal calls, no environment writes.  They get what they
     need as arguments (a clock value, text already read).
  2. Only the upstream layer talks to libcurl: only upstream.c, fetch.c,
     fetch.h and curlso.c (with curlso.h) include curl headers or call curl_*.
  3. Only main.c and app.c own process-wide signal handling (sigaction,
     signal, uv_signal_*).  Exception: dashboard.c, whose handler restores
     the terminal when the process dies, and which follows SIGWINCH.
  4. Only cluster.c (a loop-layer module) talks to Redis: hiredis headers
     and redis* calls.
  5. struct state, struct ep and struct group are defined in state.c only
     (state.h declares them incomplete), so the compiler keeps every other
     module and test out of their fields: they use state.h's functions and
     state_snapshot_take().  Checked here: no other file under src/ or
     tests/ defines them again, and nothing includes state.c.

Comments and string literals are removed before matching, so prose may name
any function.  Prints one line per breach (file:line: rule: what) and exits
1 when there is one.
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

PURE = ["config", "policy", "interval", "hdr", "sse", "usage", "reqparse", "status",
        "metrics", "dashview", "dheap", "dotenv", "guard", "state"]
# What a pure module may still do, and why.
PURE_ALLOW = {
    # Secrets are resolved from the *_env variables the file names, as at
    # start; the loop applies .env before parsing (dotenv_env.c).
    "config": {"getenv"},
}
IO_CALLS = [
    # files and descriptors
    "fopen", "fdopen", "freopen", "fclose", "fread", "fwrite", "fgets", "fputs", "fputc",
    "fprintf", "vfprintf", "printf", "vprintf", "puts", "putchar", "getchar", "perror",
    "open", "openat", "close", "read", "write", "pread", "pwrite", "readv", "writev",
    "stat", "fstat", "lstat", "opendir", "readdir", "unlink", "rename", "mkdir",
    "buf_read_file", "dotenv_read_file", "realpath",
    # sockets
    "socket", "connect", "bind", "listen", "accept", "send", "recv", "poll", "select",
    # clocks
    "time", "clock_gettime", "gettimeofday", "now_mono_ms", "now_wall_ms", "uv_now",
    "uv_hrtime",
    # environment, processes, signals
    "getenv", "secure_getenv", "setenv", "unsetenv", "putenv", "system", "popen", "fork",
    "execv", "execvp", "execve", "kill", "signal", "sigaction", "raise",
    # threads
    "pthread_create", "pthread_mutex_lock",
]
IO_INCLUDES = ["uv.h", "curl/curl.h", "fcntl.h", "unistd.h", "pthread.h", "dirent.h",
               "sys/socket.h", "signal.h", "sys/stat.h"]

CURL_OK = {"upstream.c", "fetch.c", "fetch.h", "curlso.c", "curlso.h"}
SIGNAL_OK = {"main.c", "app.c", "dashboard.c"}
REDIS_OK = {"cluster.c"}
STATE_PRIVATE = ("state", "ep", "group")  # struct tags only state.c defines
TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests")
SIGNAL_CALLS = ["sigaction", "signal", "uv_signal_init", "uv_signal_start"]


def strip(text):
    """Comments and string/char literals become spaces; lines are kept."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(c + re.sub(r"[^\n]", " ", text[i + 1:j - 1]) + c if j - i >= 2 else c)
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def calls(code, names):
    """(line, name) for every call of one of names (not a member call)."""
    pat = re.compile(r"(?<![A-Za-z0-9_.>])(%s)\s*\(" % "|".join(map(re.escape, names)))
    for m in pat.finditer(code):
        yield code.count("\n", 0, m.start()) + 1, m.group(1)


def includes(raw):
    for ln, line in enumerate(raw.splitlines(), 1):
        m = re.match(r"\s*#\s*include\s*[<\"]([^>\"]+)[>\"]", line)
        if m:
            yield ln, m.group(1)


def state_private(src_files):
    """Breaches of rule 5 (paths from the top of the tree)."""
    paths = [os.path.join("src", f) for f in src_files]
    for root, _, names in os.walk(TESTS):
        paths += [os.path.relpath(os.path.join(root, n), os.path.join(SRC, ".."))
                  for n in names if n.endswith((".c", ".h"))]
    pat = re.compile(r"\bstruct\s+(%s)\s*\{" % "|".join(STATE_PRIVATE))
    for path in sorted(paths):
        if path == os.path.join("src", "state.c"):
            continue
        raw = open(os.path.join(SRC, "..", path), encoding="utf-8", errors="replace").read()
        code = strip(raw)
        for m in pat.finditer(code):
            yield "%s:%d: struct %s is state.c's own; use state.h's functions or a snapshot" % (
                path, code.count("\n", 0, m.start()) + 1, m.group(1))
        for ln, inc in includes(raw):
            if os.path.basename(inc) == "state.c":
                yield "%s:%d: includes state.c; use state.h" % (path, ln)


def main():
    bad = []
    files = sorted(f for f in os.listdir(SRC) if f.endswith((".c", ".h")))
    for f in files:
        raw = open(os.path.join(SRC, f), encoding="utf-8", errors="replace").read()
        code = strip(raw)
        mod, ext = os.path.splitext(f)
        if mod in PURE and ext == ".h":
            # A header may need a type (sockaddr_storage), never the loop or libcurl.
            for ln, inc in includes(raw):
                if inc in ("uv.h", "curl/curl.h"):
                    bad.append("%s:%d: pure module: includes <%s>" % (f, ln, inc))
        if mod in PURE and ext == ".c":
            allow = PURE_ALLOW.get(mod, set())
            for ln, inc in includes(raw):
                if inc in IO_INCLUDES:
                    bad.append("%s:%d: pure module: includes <%s>" % (f, ln, inc))
            for ln, name in calls(code, [c for c in IO_CALLS if c not in allow]):
                bad.append("%s:%d: pure module: calls %s(); take it as an argument" % (f, ln, name))
            for m in re.finditer(r"(?<![A-Za-z0-9_])(uv_[a-z_]+|curl_[a-z_]+)\s*\(", code):
                bad.append("%s:%d: pure module: calls %s()" % (f, code.count("\n", 0, m.start()) + 1,
                                                            m.group(1)))
        if f not in CURL_OK:
            for ln, inc in includes(raw):
                if inc.startswith("curl/"):
                    bad.append("%s:%d: only the upstream layer talks to libcurl: includes <%s>"
                               % (f, ln, inc))
            for m in re.finditer(r"(?<![A-Za-z0-9_.>])(curl_[a-z_]+)\s*\(", code):
                bad.append("%s:%d: only the upstream layer talks to libcurl: calls %s()"
                           % (f, code.count("\n", 0, m.start()) + 1, m.group(1)))
        if f not in SIGNAL_OK:
            for ln, name in calls(code, SIGNAL_CALLS):
                bad.append("%s:%d: only main.c and app.c own signal handling: calls %s()"
                           % (f, ln, name))
        if f not in REDIS_OK:
            for ln, inc in includes(raw):
                if inc.startswith("hiredis/"):
                    bad.append("%s:%d: only cluster.c talks to Redis: includes <%s>" % (f, ln, inc))
            for m in re.finditer(r"(?<![A-Za-z0-9_.>])(redis[A-Z][A-Za-z]*)\s*\(", code):
                bad.append("%s:%d: only cluster.c talks to Redis: calls %s()"
                           % (f, code.count("\n", 0, m.start()) + 1, m.group(1)))
    bad = ["src/" + b for b in bad] + list(state_private(files))
    for b in bad:
        print(b)
    if bad:
        print("check-walls: %d breach(es); see docs/DESIGN.md, Module map" % len(bad))
        return 1
    print("check-walls: %d files, the walls hold" % len(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
