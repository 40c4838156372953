"""What the logs say about a request and about start-up (issue 14):

- the request line (stderr) and the JSON request log name the model the
  client asked for (also when the request fails), whether it streams, the
  cache-read and cache-write tokens and the upstream's request-id, and leave
  out Claude Code's `?beta=true`;
- request ids do not repeat when the proxy starts again (an appended log
  file stays unambiguous);
- the starting endpoint is reported after `listening`, and not at all when
  start-up fails or under --test-timing.

The upstream is a small Python server (LogUpstream): the C fake sends a
request-id but no cache token counts."""

import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import threading
import time

from harness import (PROXY_BIN, ZephyrTestCase, child_env, make_config, messages_body, refused_port,
                     scaled, wait_for)
from scripted import ScriptedHandler, ScriptedHTTPServer, sse_events

HC = {"method": "count_tokens", "interval_seconds": 300, "timeout_seconds": 5}
USAGE = {"input_tokens": 21, "output_tokens": 7, "cache_read_input_tokens": 51234,
         "cache_creation_input_tokens": 1789}
ID_RE = re.compile(r"^r[0-9a-z]{6}$")


class _Handler(ScriptedHandler):
    def _send(self, status, body):
        self.answer(status, body, [("request-id", self.owner.next_request_id())])

    def do_GET(self):
        if self.path.startswith("/v1/models"):
            self._send(200, json.dumps({"data": [{"id": "claude-haiku-4-5"}]}).encode())
        else:
            self._send(404, b'{"type":"error","error":{"type":"not_found_error","message":"no"}}')

    def do_POST(self):
        body = json.loads(self.read_body() or b"{}")
        if "count_tokens" in self.path:
            self._send(200, b'{"input_tokens":5}')
            return
        status = self.owner.status
        if status != 200:
            self._send(status, json.dumps({"type": "error", "error": {
                "type": "invalid_request_error", "message": "scripted"}}).encode())
            return
        model = body.get("model", "")
        if not body.get("stream"):
            self._send(200, json.dumps({
                "id": "msg_zt", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
                "usage": USAGE}).encode())
            return
        events = sse_events(model, dict(USAGE, output_tokens=1), USAGE["output_tokens"])
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", self.owner.next_request_id())
        self.end_headers()
        for chunk in events:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")


class LogUpstream(ScriptedHTTPServer):
    """Answers the Messages API with cache token counts and a `request-id`
    header (req_zt_1, req_zt_2, ...); status other than 200 answers that
    error instead."""

    def __init__(self):
        self.status = 200
        self._n = 0
        self._lock = threading.Lock()
        super().__init__(_Handler)

    def next_request_id(self):
        with self._lock:
            self._n += 1
            return "req_zt_%d" % self._n


def request_lines(text):
    """The request lines of a stderr text: [(id, rest of the line)]."""
    out = []
    for ln in text.splitlines():
        m = re.search(r"\b(r[0-9a-z]{5,8}) (GET|POST) (\S+) (.*)$", ln)
        if m:
            out.append((m.group(1), m.group(2) + " " + m.group(3) + " " + m.group(4)))
    return out


class RequestLine(ZephyrTestCase):

    def upstream(self):
        u = LogUpstream()
        self.addCleanup(u.close)
        return u

    def proxy(self, url):
        # One file per proxy: with a shared one, json_lines(p2, 1) found the
        # first proxy's line and, under load, read it as p2's.
        self.logs = getattr(self, "logs", 0) + 1
        log = os.path.join(self.tmp, "requests-%d.jsonl" % self.logs)
        p = self.start_proxy([{"name": "main", "endpoints": [("a", url)]}],
                             server={"request_log": log}, health_check=HC)
        p.log = log
        return p

    def line_for(self, p, needle):
        found = []

        def look():
            found[:] = [l for _, l in request_lines(p.stderr_text()) if needle in l]
            return found
        wait_for(look, scaled(5), desc="a request line with %r" % needle)
        return found[-1]

    def json_lines(self, p, n):
        def read():
            if not os.path.exists(p.log):
                return []
            with open(p.log) as f:
                return [json.loads(l) for l in f.read().splitlines()]
        wait_for(lambda: len(read()) >= n, scaled(5), desc="%d request log lines" % n)
        return read()

    def test_json_reply_line_has_model_stream_cache_tokens_and_request_id(self):
        u = self.upstream()
        p = self.proxy(u.url)
        r = self.post_messages(p.port, body=messages_body(model="claude-zt-asked"),
                               path="/v1/messages?beta=true")
        self.assertEqual(r.status, 200, r)
        line = self.line_for(p, "-> 200")
        self.assertIn("POST /v1/messages ", line)
        self.assertNotIn("beta=true", line)
        self.assertIn("model=claude-zt-asked ", line)
        self.assertIn("stream=no", line)
        self.assertIn("tokens=21/7", line)
        self.assertIn("cache_read=51234", line)
        self.assertIn("cache_write=1789", line)
        self.assertRegex(line, r"request-id=req_zt_\d+")
        rec = self.json_lines(p, 1)[-1]
        self.assertEqual(rec["path"], "/v1/messages")
        self.assertEqual(rec["requested_model"], "claude-zt-asked")
        self.assertIs(rec["stream"], False)
        self.assertRegex(rec["upstream_request_id"], r"^req_zt_\d+$")
        self.assertEqual(rec["usage"]["cache_read"], 51234)
        self.assertEqual(rec["usage"]["cache_creation"], 1789)
        self.assertRegex(rec["id"], ID_RE)

    def test_stream_line_says_stream_and_counts_cache_tokens(self):
        u = self.upstream()
        p = self.proxy(u.url)
        s = self.stream(p.port, body=messages_body(model="claude-zt-streamed", stream=True))
        self.assertEqual([e.event for e in s.events()][-1], "message_stop")
        line = self.line_for(p, "claude-zt-streamed")
        self.assertIn("stream=yes", line)
        self.assertIn("-> 200", line)
        self.assertIn("cache_read=51234", line)
        self.assertIn("cache_write=1789", line)
        self.assertRegex(line, r"request-id=req_zt_\d+")
        rec = [r for r in self.json_lines(p, 1) if r["requested_model"] == "claude-zt-streamed"][-1]
        self.assertIs(rec["stream"], True)
        self.assertEqual(rec["usage"]["cache_read"], 51234)

    def test_model_is_logged_when_the_request_fails(self):
        # An upstream error (not retried) and an endpoint nobody listens on:
        # the model comes from the request, so both lines name it.
        u = self.upstream()
        u.status = 400
        p = self.proxy(u.url)
        r = self.post_messages(p.port, body=messages_body(model="claude-zt-refused"))
        self.assertEqual(r.status, 400, r)
        line = self.line_for(p, "claude-zt-refused")
        self.assertIn("-> 400", line)
        self.assertRegex(line, r"request-id=req_zt_\d+")

        dead = "http://127.0.0.1:%d" % refused_port()  # nothing listens there
        p2 = self.proxy(dead)
        r = self.post_messages(p2.port, body=messages_body(model="claude-zt-nowhere", stream=True))
        self.assertGreaterEqual(r.status, 500, r)
        line = self.line_for(p2, "claude-zt-nowhere")
        self.assertIn("stream=yes", line)
        self.assertIn("request-id=-", line)
        rec = self.json_lines(p2, 1)[-1]
        self.assertEqual(rec["requested_model"], "claude-zt-nowhere")
        self.assertIsNone(rec["upstream_request_id"])

    def test_only_the_top_level_model_counts_and_peer_text_cannot_forge_a_line(self):
        u = self.upstream()
        p = self.proxy(u.url)
        # "model" keys inside tools and messages come before the top-level one.
        body = ('{"tools":[{"name":"t","input_schema":{"properties":{"model":{"type":"string"}}}}],'
                '"messages":[{"role":"user","content":"say \\"model\\": \\"wrong\\""}],'
                '"max_tokens":16,"model":"claude-zt-top","stream":false}').encode()
        self.assertEqual(self.post_messages(p.port, body=body).status, 200)
        line = self.line_for(p, "claude-zt-top")
        self.assertIn("model=claude-zt-top ", line)
        # A model with a line break and spaces stays on one line.
        evil = messages_body(model="x\nINFO r000000 POST /forged a -> 200 ok")
        self.assertEqual(self.post_messages(p.port, body=evil).status, 200)
        self.line_for(p, "model=x?nINFO?r000000?POST?/forged?a?->?200?ok")
        self.assertFalse([l for l in p.stderr_text().splitlines() if l.startswith("INFO r000000")])


class RequestIds(ZephyrTestCase):

    def ids_of_one_run(self, cfg):
        p = self.start_proxy(config_text=cfg)
        for _ in range(4):
            self.assertEqual(self.post_messages(p.port).status, 200)
        wait_for(lambda: len(request_lines(p.stderr_text())) >= 4, scaled(5),
                 desc="four request lines")
        code, _ = p.stop(scaled(10))
        self.assertEqual(code, 0)
        return [i for i, _ in request_lines(p.stderr_text())]

    def test_ids_do_not_repeat_across_restarts(self):
        fake = self.start_fake()
        cfg = make_config([{"name": "main", "endpoints": [("a", fake.url)]}], health_check=HC)
        first = self.ids_of_one_run(cfg)
        second = self.ids_of_one_run(cfg)
        self.assertFalse(set(first) & set(second),
                         "the second run repeats ids of the first: %r / %r" % (first, second))
        self.assertEqual(len(set(first)), len(first), first)
        for i in first + second:
            self.assertRegex(i, ID_RE)  # still short: "r" and 6 characters


STARTING = re.compile(r"initial|group main, endpoint")


class StartingEndpointLine(ZephyrTestCase):

    def config(self, url):
        return self.write_config(make_config([{"name": "main", "endpoints": [("a", url)]}],
                                             health_check=HC))

    def test_reported_after_listening(self):
        fake = self.start_fake()
        p = self.start_proxy(config_text=make_config(
            [{"name": "main", "endpoints": [("a", fake.url)]}], health_check=HC))
        wait_for(lambda: STARTING.search(p.stderr_text()), scaled(5), desc="the starting endpoint")
        lines = p.stderr_text().splitlines()
        listen = next(k for k, l in enumerate(lines) if "listening on http://" in l)
        early = [l for l in lines[:listen] if STARTING.search(l)]
        self.assertFalse(early, "start-up choice logged before listening:\n" + "\n".join(lines[:listen + 1]))
        self.assertNotIn("none (?)", p.stderr_text())
        self.assertIn("group main, endpoint a", p.stderr_text())

    def test_absent_when_start_up_fails(self):
        fake = self.start_fake()
        busy = socket.socket()
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        r = subprocess.run([PROXY_BIN, "--config", self.config(fake.url), "--port",
                            str(busy.getsockname()[1])], capture_output=True, text=True,
                           timeout=scaled(20), env=child_env(), stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertNotIn("listening", r.stderr)
        self.assertFalse(STARTING.search(r.stderr + r.stdout),
                         "a starting endpoint is reported although start-up failed:\n" + r.stderr)

    def test_absent_under_test_timing(self):
        fake = self.start_fake()
        r = subprocess.run([PROXY_BIN, "--config", self.config(fake.url), "--test-timing",
                            "--cycles", "1", "--interval", "1"], capture_output=True, text=True,
                           timeout=scaled(30), env=child_env(), stdin=subprocess.DEVNULL)
        self.assertIn("cycle", r.stdout)
        self.assertFalse(STARTING.search(r.stderr + r.stdout),
                         "--test-timing reports a starting endpoint:\n" + r.stderr)

    def test_nothing_is_printed_around_the_terminal_dashboard(self):
        # The screen before the dashboard takes it (alternate screen on) and
        # after it gives it back is the user's terminal: no log line belongs
        # there.  The built-in demo needs no configuration.
        pid, fd = pty.fork()
        if pid == 0:  # the child: only exec, and never return into the test runner
            try:
                os.chdir(self.tmp)
                env = child_env({"TERM": "xterm"})
                os.execve(PROXY_BIN, [PROXY_BIN, "--demo", "--port", "0", "--dashboard"], env)
            finally:
                os._exit(127)
        out = bytearray()
        status = None

        def read_for(seconds, until=None):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                if until and until(out):
                    return True
                r, _, _ = select.select([fd], [], [], 0.1)
                if r:
                    try:
                        d = os.read(fd, 65536)
                    except OSError:
                        return False
                    if not d:
                        return False
                    out.extend(d)
            return False
        try:
            self.assertTrue(read_for(scaled(10), lambda o: b"relay-" in o),
                            "the dashboard did not show the demo endpoints: %r" % bytes(out[-500:]))
            os.write(fd, b"q")
            read_for(scaled(15))
            _, status = os.waitpid(pid, 0)
        finally:
            if status is None:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            os.close(fd)
        on, off = out.find(b"\x1b[?1049h"), out.rfind(b"\x1b[?1049l")
        self.assertGreaterEqual(on, 0, "no alternate screen: %r" % bytes(out[:300]))
        self.assertGreater(off, on)
        before = bytes(out[:on])
        after = re.sub(rb"\x1b(\[[0-9;?]*[A-Za-z]|[()][0-9A-B]|[=>])", b"", bytes(out[off:]))
        self.assertEqual(before.strip(), b"", "printed before the dashboard: %r" % before)
        self.assertEqual(after.strip(), b"", "printed after the dashboard: %r" % after)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
