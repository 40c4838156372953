"""The fake upstream and the demo as test fixtures outside the product's core
(issue 16): src/fake/ is no part of libzephyr.a (unit tests and fuzzers never
link it), the fake reads requests with the proxy's own parser (reqparse.c) and
request bodies with cJSON instead of an HTTP stack and a JSON scanner of its
own, and the demo, linked into the product for --demo, still runs from an
installed binary."""

import json
import os
import re
import signal
import subprocess
import time
import unittest

from harness import (BUILD_DIR, LISTEN_RE, REPO_ROOT, ZephyrTestCase, _Drain, child_env,
                     http_request, scaled, wait_for)


class FakeOutOfTheCore(ZephyrTestCase):

    def test_core_library_holds_neither_the_fake_nor_the_demo(self):
        lib = os.path.join(BUILD_DIR, "libzephyr.a")
        members = subprocess.run(["ar", "t", lib], capture_output=True, text=True,
                                 check=True).stdout.split()
        self.assertIn("reqparse.o", members)
        self.assertNotIn("fakeup.o", members)
        self.assertNotIn("demo.o", members)
        # A unit test links the core only: no fake server comes with it.
        syms = subprocess.run(["nm", os.path.join(BUILD_DIR, "tests", "test_reqparse")],
                              capture_output=True, text=True, check=True).stdout
        self.assertNotIn("fakeup_new", syms)
        # The product still carries both, for --demo.
        syms = subprocess.run(["nm", os.path.join(BUILD_DIR, "claude-zephyr")],
                              capture_output=True, text=True, check=True).stdout
        self.assertIn("demo_start", syms)
        self.assertIn("fakeup_new", syms)

    def test_fake_refuses_what_the_proxy_refuses(self):
        """The fake parses with reqparse.c: what llhttp 8.1 lets through and
        the proxy refuses (a space before the colon, an HTTP/1.1 request
        without Host) is refused by the fake too, with reqparse's reason.
        Its own parser took both: the knob header was ignored and 200 came."""
        fake = self.start_fake("strict")
        c = self.raw(fake.port)
        c.send(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-fake-status : 529\r\n"
               b"Content-Length: 2\r\n\r\n{}")
        r = c.read_response("POST")
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["error"]["type"], "invalid_request_error")
        self.assertIn("malformed header name", r.json()["error"]["message"])
        self.assertTrue(c.closed_by_peer(scaled(5)), "connection left open after a 400")

        c = self.raw(fake.port)
        c.send(b"POST /v1/messages HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
        r = c.read_response("POST")
        self.assertEqual(r.status, 400, r)
        self.assertIn("Host", r.json()["error"]["message"])
        # Nothing of either reached the counters of API requests.
        self.assertEqual(fake.stats()["requests"], 0)

    def test_model_with_escapes_stays_valid_json(self):
        """The model goes back into JSON (the echo, the 404 of the models
        knob) escaped from its decoded text, never cut inside an escape.  The
        fake's scanner kept the raw escaped text and cut the 404's message at
        140 bytes, here in the middle of a \\" escape: the body was not JSON."""
        fake = self.start_fake("models", models="claude-a")
        model = "x" + '"' * 80
        body = json.dumps({"model": model, "max_tokens": 8,
                           "messages": [{"role": "user", "content": "hi"}]})
        r = http_request(fake.port, "POST", "/v1/messages", body=body,
                         headers={"content-type": "application/json"})
        self.assertEqual(r.status, 404, r)
        err = json.loads(r.body)["error"]
        self.assertEqual(err["type"], "not_found_error")
        self.assertTrue(err["message"].startswith("model: x" + '"' * 60), err["message"])

        fake.config(models="")
        r = http_request(fake.port, "POST", "/v1/messages", body=body,
                         headers={"content-type": "application/json"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(json.loads(r.body)["model"], model)
        # Served models still match by their decoded name.
        fake.config(models="claude-a")
        body = '{"model": "claude\\u002da", "max_tokens": 8, "messages": []}'
        r = http_request(fake.port, "POST", "/v1/messages", body=body)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(json.loads(r.body)["model"], "claude-a")

    def test_installed_binary_runs_the_demo(self):
        """make install puts one binary in place; --demo (what ./run.sh runs
        without a config) works from there, with no build directory."""
        dest = os.path.join(self.tmp, "dest")
        r = subprocess.run(["make", "-s", "install", "PREFIX=/opt/zephyr", "DESTDIR=" + dest,
                            "B=" + os.path.relpath(BUILD_DIR, REPO_ROOT)],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        binary = os.path.join(dest, "opt/zephyr/bin/claude-zephyr")
        work = os.path.join(self.tmp, "empty")
        os.mkdir(work)
        env = child_env(extra={"XDG_CONFIG_HOME": work, "HOME": work})
        proc = subprocess.Popen([binary, "--port", "0"], cwd=work, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        out, err = _Drain(proc.stdout), _Drain(proc.stderr)

        def stop():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(scaled(15))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            for d in (out, err):
                d.join(2)
                d.f.close()
        self.addCleanup(stop)
        m = err.wait_match(LISTEN_RE, scaled(10))
        self.assertIsNotNone(m, "installed binary did not listen:\n" + err.text())
        self.assertIsNotNone(err.wait_match(re.compile("demo mode"), scaled(5)), err.text())
        port = int(m.group(2))
        body = json.dumps({"model": "demo", "max_tokens": 16, "stream": True,
                           "messages": [{"role": "user", "content": "hi"}]})
        r = http_request(port, "POST", "/v1/messages", body=body,
                         headers={"content-type": "application/json"},
                         timeout=scaled(15))
        self.assertEqual(r.status, 200, r)
        self.assertIn(b"event: message_stop", r.body)
        self.assertRegex(r.header("x-fake-name") or "", r"^relay-")
        stop()
        self.assertEqual(proc.returncode, 0, err.text()[-3000:])


class FakeOnTheProductsConnections(ZephyrTestCase):
    """The fake serves through conn.c, the proxy's own client-connection
    module (issue 16): one write queue with its backpressure, one close
    path, and two small server options (absolute-form targets, a count of
    accepted connections) instead of a connection layer of its own."""

    def test_stream_waits_for_a_reader_that_stops_then_completes(self):
        """A stream far larger than the socket buffers, to a client that
        reads nothing: the fake stops producing at conn.c's high-water mark
        (the stream stays unfinished), and goes on from conn.c's drained
        callback once the client reads, to the last event.  Without the
        backpressure the whole stream is queued at once and counted
        complete; without the drained callback it never ends."""
        events = 100000  # about 14 MB of SSE: more than any socket buffers hold
        fake = self.start_fake("bp", events=events)
        c = self.raw(fake.port, rcvbuf=65536, timeout=scaled(30))
        body = b'{"stream":true,"model":"m","messages":[]}'
        c.send(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
               % (len(body), body))
        resp = c.read_head()
        self.assertEqual(resp.status, 200, resp)
        wait_for(lambda: fake.stats()["streams_started"] == 1, scaled(10), desc="stream started")
        # Held back while nobody reads: watched for a bounded while.
        deadline = time.monotonic() + scaled(1.5)
        while time.monotonic() < deadline:
            st = fake.stats()
            self.assertEqual(st["streams_completed"], 0, "stream finished with no reader: %r" % st)
            self.assertEqual(st["active"], 1, st)
        data = b"".join(p for _, p in c.body_pieces(resp, "POST"))
        self.assertEqual(resp.end, "complete")
        self.assertEqual(data.count(b"event: content_block_delta"), events)
        self.assertTrue(data.endswith(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"))
        st = wait_for(lambda: (lambda s: s if s["streams_completed"] == 1 else None)(fake.stats()),
                      scaled(10), desc="stream counted complete")
        self.assertEqual(st["active"], 0, st)
        self.assertEqual(st["streams_aborted"], 0, st)

    def test_connection_counters_and_absolute_form(self):
        """connections counts what conn.c accepted since the reset,
        connections_open what it still holds; absolute-form targets (the
        fake standing in for an HTTP proxy) are taken as reqparse.c's
        absolute_ok allows, where the proxy's own clients get a 400.  A
        request left hanging is cut when the fake stops (the cleanup checks
        that it exits at SIGTERM, sanitizer-clean)."""
        fake = self.start_fake("count")
        fake.reset()
        conns = [self.raw(fake.port) for _ in range(3)]
        for c in conns:
            c.send(b"POST http://api.invalid/relay/v1/messages HTTP/1.1\r\nHost: api.invalid\r\n"
                   b"Content-Length: 2\r\n\r\n{}")
            r = c.read_response("POST")
            self.assertEqual(r.status, 200, r)
        st = fake.stats()  # on a fourth connection
        self.assertEqual(st["connections"], 4, st)
        self.assertGreaterEqual(st["connections_open"], 4, st)
        self.assertEqual(st["requests"], 3, st)
        for c in conns:
            c.close()
        wait_for(lambda: fake.stats()["connections_open"] <= 2, scaled(10),
                 desc="closed connections leave connections_open")
        before = fake.stats()["connections"]
        self.assertEqual(fake.stats()["connections"], before + 1)
        hung = self.raw(fake.port)
        hung.send(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-fake-hang: true\r\n"
                  b"Content-Length: 2\r\n\r\n{}")
        wait_for(lambda: fake.stats()["active"] == 1, scaled(10), desc="hanging request")


if __name__ == "__main__":
    unittest.main()
