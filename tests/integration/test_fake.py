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
import unittest

from harness import (BUILD_DIR, LISTEN_RE, REPO_ROOT, ZephyrTestCase, _Drain, child_env,
                     http_request, scaled)


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


if __name__ == "__main__":
    unittest.main()
