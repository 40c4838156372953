"""GET /metrics against the real binary: the exposition passes
`promtool check metrics` (Debian package prometheus), and its numbers match
what happened: requests by endpoint and status class, tokens by model equal to
what the fake upstream reported (message_start input_tokens and message_delta
output_tokens in a stream, usage in a JSON reply), a retry and a failover,
health checks and their tokens, histogram counts equal to the requests.

The fake reports input_tokens = request body bytes // 4 (at least 1) and
output_tokens = its `events` knob (3 by default), in both reply shapes.

Without promtool the test is skipped, loudly.
"""

import re
import shutil
import subprocess
import unittest

from harness import ZephyrTestCase, http_request, messages_body, scaled, wait_for

PROMTOOL = shutil.which("promtool")

SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def _unescape(v):
    return re.sub(r'\\(.)', lambda m: {"n": "\n", "\\": "\\", '"': '"'}.get(m.group(1), m.group(0)), v)


def parse_exposition(text):
    """{name: [(labels dict, value float)]}, plus {family: type} and the set
    of families with HELP.  Raises AssertionError on a malformed line."""
    samples, types, helps = {}, {}, set()
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# HELP "):
            helps.add(line.split(" ", 3)[2])
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            types[name] = typ
            continue
        if line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        if not m:
            raise AssertionError("malformed sample line %r" % line)
        labels = {}
        body = m.group(3) or ""
        pos = 0
        while pos < len(body):
            lm = LABEL_RE.match(body, pos)
            if not lm:
                raise AssertionError("malformed labels in %r" % line)
            labels[lm.group(1)] = _unescape(lm.group(2))
            pos = lm.end()
        samples.setdefault(m.group(1), []).append((labels, float(m.group(4))))
    return samples, types, helps


class Exposition:
    def __init__(self, text):
        self.text = text
        self.samples, self.types, self.helps = parse_exposition(text)

    def get(self, name, **labels):
        """The value of the one sample of name whose labels include labels;
        None when there is none."""
        found = [v for l, v in self.samples.get(name, [])
                 if all(l.get(k) == str(x) for k, x in labels.items())]
        if len(found) > 1:
            raise AssertionError("%d samples of %s match %r" % (len(found), name, labels))
        return found[0] if found else None

    def total(self, name, **labels):
        return sum(v for l, v in self.samples.get(name, [])
                   if all(l.get(k) == str(x) for k, x in labels.items()))

    def series(self, name):
        return self.samples.get(name, [])


class Metrics(ZephyrTestCase):

    def setUp(self):
        super().setUp()
        if not PROMTOOL:
            reason = ("promtool not found: apt-get install prometheus "
                      "(run.sh should list it in TEST_PKGS)")
            print("\n!!! SKIPPED /metrics test: %s\n" % reason, flush=True)
            raise unittest.SkipTest(reason)

    def metrics(self, p):
        r = http_request(p.port, "GET", "/metrics")
        self.assertEqual(r.status, 200, r)
        ct = r.header("content-type") or ""
        self.assertTrue(ct.startswith("text/plain"), ct)
        self.assertIn("version=0.0.4", ct)
        return r.body.decode("utf-8")

    def promtool(self, text):
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, "promtool check metrics failed:\n%s%s\n--- exposition:\n%s"
                         % (r.stdout, r.stderr, text[:6000]))
        self.assertEqual((r.stdout + r.stderr).strip(), "",
                         "promtool has lint remarks:\n%s%s" % (r.stdout, r.stderr))

    def test_metrics_count_what_happened(self):
        fa = self.start_fake("fa")
        fb = self.start_fake("fb", latency_ms=int(scaled(60)))
        p = self.start_proxy(
            [{"name": "main", "endpoints": [("a", fa.url), ("b", fb.url)]}],
            health_check={"interval_seconds": 600, "timeout_seconds": 10})
        wait_for(lambda: p.status()["current_endpoint"]["name"] == "a", scaled(10),
                 desc="a current")
        wait_for(lambda: all(e["status"] == "healthy" for e in p.status()["endpoints"]),
                 scaled(10), desc="both endpoints healthy")

        # Before any traffic: valid, and every configured endpoint is there.
        text = self.metrics(p)
        self.promtool(text)
        m = Exposition(text)
        for ep in ("a", "b"):
            self.assertEqual(m.get("zephyr_requests_total", endpoint=ep, group="main",
                                   status_class="2xx"), 0, ep)
            self.assertGreaterEqual(m.get("zephyr_checks_total", endpoint=ep, result="ok"), 1, ep)

        # 1. a JSON reply, 2. a stream, 3. a 400 that is not retried: all on a.
        json_body = messages_body(model="claude-zt-json")
        r = self.post_messages(p.port, json_body)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-zephyr-endpoint"), "a")
        self.assertEqual(r.json()["usage"]["output_tokens"], 3)

        sse_body = messages_body(model="claude-zt-sse", stream=True)
        s = self.stream(p.port, body=sse_body)
        self.assertEqual(s.resp.status, 200)
        names = [e.event for e in s.read_all()]
        self.assertEqual(s.end, "complete")
        self.assertIn("message_delta", names)
        start = [e for e in s.events_seen if e.event == "message_start"][0].json()
        delta = [e for e in s.events_seen if e.event == "message_delta"][0].json()
        self.assertEqual(start["message"]["usage"]["input_tokens"], len(sse_body) // 4)
        self.assertEqual(delta["usage"]["output_tokens"], 3)

        bad_body = messages_body(model="claude-zt-bad")
        r = self.post_messages(p.port, bad_body, headers=[("x-fake-status", "400")])
        self.assertEqual(r.status, 400, r)

        # 4. a fails with 500: the proxy retries on b, the client sees 200.
        fa.config(status=500)
        fo_body = messages_body(model="claude-zt-failover")
        r = self.post_messages(p.port, fo_body)
        fa.config(status=200)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-zephyr-endpoint"), "b", r)
        self.assertEqual(r.header("x-zephyr-attempts"), "2", r)

        # Let a recover so the gauges below are settled.
        p.admin("check")
        wait_for(lambda: all(e["status"] == "healthy" and e["circuit"] == "closed"
                             for e in p.status()["endpoints"])
                 and p.status()["active_connections"] == 0,
                 scaled(15), desc="both endpoints healthy again")
        wait_for(lambda: not p.status()["checks"]["running"], scaled(15), desc="checks done")

        before = p.status()
        text = self.metrics(p)
        after = p.status()
        self.promtool(text)
        m = Exposition(text)

        # Every family has HELP and TYPE, every name is ours.
        for name in m.samples:
            self.assertTrue(name.startswith("zephyr_"), name)
        for fam in m.types:
            self.assertIn(fam, m.helps, "no HELP for " + fam)
        self.assertEqual(m.types.get("zephyr_requests_total"), "counter")
        self.assertEqual(m.types.get("zephyr_request_duration_seconds"), "histogram")
        self.assertEqual(m.types.get("zephyr_request_ttfb_seconds"), "histogram")
        self.assertEqual(m.types.get("zephyr_endpoint_up"), "gauge")
        self.assertIsNotNone(m.get("zephyr_build_info"))

        # Requests by endpoint, group and status class.
        self.assertEqual(m.get("zephyr_requests_total", endpoint="a", group="main",
                               status_class="2xx"), 2)
        self.assertEqual(m.get("zephyr_requests_total", endpoint="a", group="main",
                               status_class="4xx"), 1)
        self.assertEqual(m.get("zephyr_requests_total", endpoint="a", group="main",
                               status_class="5xx"), 0)
        self.assertEqual(m.get("zephyr_requests_total", endpoint="b", group="main",
                               status_class="2xx"), 1)
        self.assertEqual(m.total("zephyr_requests_total"), 4)

        # The retry and the failover.
        self.assertEqual(m.total("zephyr_retries_total", endpoint="a"), 1, m.series("zephyr_retries_total"))
        self.assertEqual(m.total("zephyr_retries_total", endpoint="b"), 0)
        self.assertEqual(m.get("zephyr_failovers_total", endpoint="b", group="main"), 1)
        self.assertEqual(m.get("zephyr_failovers_total", endpoint="a", group="main"), 0)

        # Tokens by endpoint and model, as the fake reported them.
        def tokens(ep, model, typ):
            return m.get("zephyr_tokens_total", endpoint=ep, group="main", model=model, type=typ)
        self.assertEqual(tokens("a", "claude-zt-json", "input"), len(json_body) // 4)
        self.assertEqual(tokens("a", "claude-zt-json", "output"), 3)
        self.assertEqual(tokens("a", "claude-zt-sse", "input"), len(sse_body) // 4)
        self.assertEqual(tokens("a", "claude-zt-sse", "output"), 3)
        self.assertEqual(tokens("a", "claude-zt-sse", "cache_read"), 0)
        self.assertEqual(tokens("b", "claude-zt-failover", "input"), len(fo_body) // 4)
        self.assertEqual(tokens("b", "claude-zt-failover", "output"), 3)
        self.assertIsNone(tokens("a", "claude-zt-bad", "input"), "an error reply has no usage")
        self.assertIsNone(tokens("a", "claude-zt-failover", "input"))
        # The same totals as /status shows.
        self.assertEqual(m.total("zephyr_tokens_total", type="input"),
                         after["traffic_tokens"]["input"])
        self.assertEqual(m.total("zephyr_tokens_total", type="output"),
                         after["traffic_tokens"]["output"])

        # Histograms: one observation of total time per request, buckets
        # cumulative, +Inf equal to the count.
        for fam in ("zephyr_request_duration_seconds", "zephyr_request_ttfb_seconds",
                    "zephyr_check_duration_seconds"):
            by_series = {}
            for labels, v in m.series(fam + "_bucket"):
                key = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
                by_series.setdefault(key, []).append((labels["le"], v))
            self.assertTrue(by_series, fam)
            for key, buckets in by_series.items():
                values = [v for _, v in buckets]
                self.assertEqual(values, sorted(values), "%s%r not cumulative" % (fam, key))
                self.assertEqual(buckets[-1][0], "+Inf")
                count = m.get(fam + "_count", **dict(key))
                self.assertEqual(buckets[-1][1], count, "%s%r +Inf != count" % (fam, key))
                self.assertGreaterEqual(m.get(fam + "_sum", **dict(key)), 0)
        self.assertEqual(m.get("zephyr_request_duration_seconds_count", endpoint="a", group="main"), 3)
        self.assertEqual(m.get("zephyr_request_duration_seconds_count", endpoint="b", group="main"), 1)
        self.assertEqual(m.total("zephyr_request_duration_seconds_count"),
                         m.total("zephyr_requests_total"))
        self.assertGreaterEqual(m.get("zephyr_request_ttfb_seconds_count", endpoint="a", group="main"), 2)
        self.assertLessEqual(m.get("zephyr_request_ttfb_seconds_count", endpoint="a", group="main"), 3)
        self.assertEqual(m.get("zephyr_request_ttfb_seconds_count", endpoint="b", group="main"), 1)
        # b answers after ~60 ms: its time to first byte says so.
        self.assertGreaterEqual(m.get("zephyr_request_ttfb_seconds_sum", endpoint="b", group="main"),
                                0.05)

        # Health checks: results, latency, tokens (between two /status reads).
        for ep in ("a", "b"):
            ok = m.get("zephyr_checks_total", endpoint=ep, result="ok")
            self.assertGreaterEqual(ok, 1, ep)
            self.assertGreaterEqual(m.get("zephyr_check_duration_seconds_count", endpoint=ep), 1)
            self.assertIsNotNone(m.get("zephyr_endpoint_check_latency_seconds", endpoint=ep))
            eb = [e for e in before["endpoints"] if e["name"] == ep][0]
            ea = [e for e in after["endpoints"] if e["name"] == ep][0]
            for typ in ("input", "output"):
                v = m.get("zephyr_check_tokens_total", endpoint=ep, group="main", type=typ)
                self.assertIsNotNone(v, (ep, typ))
                self.assertGreater(v, 0, (ep, typ))
                self.assertGreaterEqual(v, eb["tokens_used"][typ], (ep, typ))
                self.assertLessEqual(v, ea["tokens_used"][typ], (ep, typ))
            self.assertLessEqual(ok + m.get("zephyr_checks_total", endpoint=ep, result="failed"),
                                 ea["checks"], ep)
        # a's quick re-check while it answered 500 may have failed; b's never.
        self.assertEqual(m.get("zephyr_checks_total", endpoint="b", result="failed"), 0)
        self.assertGreaterEqual(m.get("zephyr_check_duration_seconds_sum", endpoint="b"), 0.05)

        # Gauges read from the state.
        for ep in ("a", "b"):
            self.assertEqual(m.get("zephyr_endpoint_up", endpoint=ep, group="main"), 1, ep)
            self.assertEqual(m.get("zephyr_endpoint_status", endpoint=ep, group="main",
                                   status="healthy"), 1, ep)
            self.assertEqual(m.get("zephyr_endpoint_circuit_state", endpoint=ep, group="main",
                                   state="closed"), 1, ep)
            self.assertEqual(m.get("zephyr_endpoint_circuit_state", endpoint=ep, group="main",
                                   state="open"), 0, ep)
            self.assertEqual(m.get("zephyr_endpoint_active_connections", endpoint=ep,
                                   group="main"), 0, ep)
        cur = after["current_endpoint"]["name"]
        self.assertEqual(before["current_endpoint"]["name"], cur)
        self.assertEqual(m.get("zephyr_endpoint_current", endpoint=cur, group="main"), 1)
        self.assertEqual(m.total("zephyr_endpoint_current"), 1)
        self.assertEqual(m.get("zephyr_group_current", group="main"), 1)
        self.assertEqual(m.get("zephyr_active_connections"), 0)
        self.assertEqual(m.get("zephyr_manual_mode"), 0)
        self.assertEqual(m.get("zephyr_config_check_interval_seconds"), 600)
        self.assertGreater(m.get("zephyr_check_interval_seconds"), 0)

    def test_active_connections_and_manual_mode(self):
        fake = self.start_fake("slow")
        p = self.proxy_for(fake, ep_name="only")
        s = self.stream(p.port, headers=[("x-fake-gap-ms", "300"), ("x-fake-events", "5")])
        self.assertEqual(s.resp.status, 200)
        text = wait_for(lambda: (lambda t: t if Exposition(t).get("zephyr_active_connections") == 1
                                 else None)(self.metrics(p)), scaled(5), desc="one active")
        self.promtool(text)
        m = Exposition(text)
        self.assertEqual(m.get("zephyr_endpoint_active_connections", endpoint="only", group="main"), 1)
        self.assertEqual(m.get("zephyr_upstream_connections", client="builtin", state="busy"), 1)
        s.read_all()
        self.assertEqual(s.end, "complete")
        # The finished stream's connection waits in the keep-alive pool.
        wait_for(lambda: Exposition(self.metrics(p)).get("zephyr_upstream_connections",
                                                         client="builtin", state="idle") == 1,
                 scaled(5), desc="one idle upstream connection")
        self.assertEqual(p.admin("pin", {"endpoint": "only"})[0], 200)
        wait_for(lambda: Exposition(self.metrics(p)).get("zephyr_active_connections") == 0,
                 scaled(5), desc="no active request")
        m = Exposition(self.metrics(p))
        self.assertEqual(m.get("zephyr_manual_mode"), 1)
        self.assertEqual(m.get("zephyr_requests_total", endpoint="only", group="main",
                               status_class="2xx"), 1)


if __name__ == "__main__":
    unittest.main()
