"""Endpoint selection end to end: fake upstreams whose latency changes at
run time, the switch threshold, immediate failover, recovery, manual pin
with fallback, sticky sessions, the deferred (graceful) switch and groups.

Checks are run on demand through POST /admin/check (the periodic interval
is long), so each test decides when the proxy learns something."""

import unittest

from harness import ZephyrTestCase, http_request, make_config, messages_body, scaled, wait_for

HC = {"method": "messages", "interval_seconds": 600, "timeout_seconds": 5,
      "failed_interval_seconds": 600}


class Switching(ZephyrTestCase):

    def proxy(self, groups, **server):
        server.setdefault("switch_threshold_ms", 50)
        server.setdefault("stream_holdback_ms", 0)
        return self.start_proxy(config_text=make_config(groups, server=server, health_check=HC))

    def check(self, p, times=1):
        for _ in range(times):
            code, _ = p.admin("check")
            self.assertEqual(code, 200)
            wait_for(lambda: not p.status()["checks"]["running"], scaled(5), desc="check done")

    def current(self, p):
        ce = p.status()["current_endpoint"]
        return ce and ce["name"]

    def served_by(self, p, headers=()):
        r = self.post_messages(p.port, headers=headers)
        self.assertEqual(r.status, 200, r)
        return r.header("x-zephyr-endpoint")

    def test_threshold_hysteresis_then_switch(self):
        a = self.start_fake("a", latency_ms=100)
        b = self.start_fake("b", latency_ms=130)
        p = self.proxy([{"name": "g", "endpoints": [("a", a.url), ("b", b.url)]}])
        self.check(p, 2)
        self.assertEqual(self.current(p), "a")
        # b is faster now, but only by ~30 ms: below the 50 ms threshold.
        a.config(latency_ms=160)
        self.check(p, 6)
        self.assertEqual(self.current(p), "a", "switched for a gain below the threshold")
        self.assertEqual(self.served_by(p), "a")
        # A clear gain moves traffic.
        a.config(latency_ms=450)
        for _ in range(8):
            self.check(p)
            if self.current(p) == "b":
                break
        self.assertEqual(self.current(p), "b")
        self.assertEqual(self.served_by(p), "b")
        ev = [e for e in p.status()["events"] if e["kind"] == "switch" and e["reason"] == "faster"]
        self.assertTrue(ev, "no 'faster' switch event")
        self.assertEqual((ev[0]["from"], ev[0]["to"]), ("a", "b"))
        self.assertRegex(p.stderr_text(), r"switch \[g\] a \(\d+ ms\) -> b \(\d+ ms\): faster")

    def test_failure_moves_traffic_at_once_and_recovery_needs_a_check(self):
        a = self.start_fake("a")
        b = self.start_fake("b", latency_ms=20)
        p = self.proxy([{"name": "g", "endpoints": [("a", a.url), ("b", b.url)]}])
        self.check(p)
        self.assertEqual(self.current(p), "a")
        a.config(status=500)
        # The very next request is served by b (retried there), and a is failed.
        self.assertEqual(self.served_by(p), "b")
        st = p.status()
        self.assertEqual(st["current_endpoint"]["name"], "b")
        ea = [e for e in st["endpoints"] if e["name"] == "a"][0]
        self.assertEqual(ea["status"], "failed")
        self.assertFalse(ea["available"])
        self.assertIn("500", ea["error"])
        # Fixed upstream: still failed until a check passes.
        a.config(status=200)
        self.assertEqual(self.served_by(p), "b")
        self.check(p)
        ea = [e for e in p.status()["endpoints"] if e["name"] == "a"][0]
        self.assertEqual(ea["status"], "healthy")
        self.assertTrue(any(e["kind"] == "recovery" for e in p.status()["events"]))

    def test_killed_endpoint_next_request_goes_elsewhere(self):
        a = self.start_fake("a")
        b = self.start_fake("b", latency_ms=20)
        p = self.proxy([{"name": "g", "endpoints": [("a", a.url), ("b", b.url)]}])
        self.check(p)
        self.assertEqual(self.current(p), "a")
        a.stop(scaled(5))
        self.assertEqual(self.served_by(p), "b")
        self.assertEqual(self.current(p), "b")

    def test_manual_pin_fallback_and_return(self):
        a = self.start_fake("a")
        b = self.start_fake("b", latency_ms=200)
        p = self.proxy([{"name": "g", "endpoints": [("a", a.url), ("b", b.url)]}])
        self.check(p, 2)
        code, _ = p.admin("pin", {"endpoint": "b"})
        self.assertEqual(code, 200)
        self.check(p, 3)
        st = p.status()
        self.assertEqual((st["mode"], st["pinned_endpoint"], st["current_endpoint"]["name"]),
                         ("manual", "b", "b"), "a faster endpoint must not override the pin")
        self.assertEqual(self.served_by(p), "b")
        b.config(status=503)
        self.assertEqual(self.served_by(p), "a")
        st = p.status()
        self.assertTrue(st["pin_overridden"])
        self.assertEqual(st["current_endpoint"]["name"], "a")
        b.config(status=200)
        self.check(p)
        st = p.status()
        self.assertFalse(st["pin_overridden"])
        self.assertEqual(st["current_endpoint"]["name"], "b")
        self.assertEqual(self.served_by(p), "b")
        code, _ = p.admin("mode", {"mode": "auto"})
        self.assertEqual(code, 200)
        self.assertEqual(p.status()["mode"], "auto")

    def test_sticky_sessions(self):
        a = self.start_fake("a")
        b = self.start_fake("b", latency_ms=150)
        p = self.proxy([{"name": "g", "endpoints": [("a", a.url), ("b", b.url)]}])
        self.check(p, 2)
        s1 = [("x-claude-code-session-id", "session-one")]
        self.assertEqual(self.served_by(p, s1), "a")
        # a becomes clearly slower: new traffic moves to b, the session stays.
        a.config(latency_ms=500)
        b.config(latency_ms=0)
        for _ in range(8):
            self.check(p)
            if self.current(p) == "b":
                break
        self.assertEqual(self.current(p), "b")
        self.assertEqual(self.served_by(p, s1), "a")
        self.assertEqual(self.served_by(p, [("x-claude-code-session-id", "session-two")]), "b")
        self.assertEqual(self.served_by(p), "b")
        # The session's endpoint fails: the session moves on.
        a.config(status=500)
        self.assertEqual(self.served_by(p, s1), "b")

    def test_sticky_by_metadata_user_id(self):
        a = self.start_fake("a")
        b = self.start_fake("b", latency_ms=150)
        p = self.proxy([{"name": "g", "endpoints": [("a", a.url), ("b", b.url)]}])
        self.check(p, 2)
        body = messages_body(extra={"metadata": {"user_id": "user_abc_account_1_session_x"}})
        r = self.post_messages(p.port, body=body)
        self.assertEqual(r.header("x-zephyr-endpoint"), "a")
        a.config(latency_ms=500)
        b.config(latency_ms=0)
        for _ in range(8):
            self.check(p)
            if self.current(p) == "b":
                break
        self.assertEqual(self.current(p), "b")
        r = self.post_messages(p.port, body=body)
        self.assertEqual(r.header("x-zephyr-endpoint"), "a", "metadata.user_id session moved")
        self.assertEqual(self.served_by(p), "b")

    def test_graceful_switch_waits_for_in_flight_stream(self):
        a = self.start_fake("a", latency_ms=0, events=12, gap_ms=150)
        b = self.start_fake("b", latency_ms=100)
        p = self.proxy([{"name": "g", "endpoints": [("a", a.url), ("b", b.url)]}],
                       graceful_switch_timeout_ms=20000)
        self.check(p, 2)
        self.assertEqual(self.current(p), "a")
        s = self.stream(p.port)
        events = s.events()
        self.assertEqual(next(events).event, "message_start")
        a.config(latency_ms=600)
        pending = None
        for _ in range(8):
            self.check(p)
            pending = p.status()["pending_switch"]
            if pending:
                break
        self.assertIsNotNone(pending, "no pending switch while a stream runs on a")
        self.assertEqual(pending["to"], "b")
        self.assertEqual(self.current(p), "a", "switched while a request was in flight")
        names = [e.event for e in events]
        self.assertEqual(names[-1], "message_stop", "the stream was cut")
        wait_for(lambda: self.current(p) == "b", scaled(3), desc="deferred switch after stream")
        self.assertIsNone(p.status()["pending_switch"])

    def test_group_switch(self):
        a = self.start_fake("a")
        c = self.start_fake("c")
        p = self.proxy([{"name": "one", "endpoints": [("a", a.url)]},
                        {"name": "two", "default": True, "endpoints": [("c", c.url)]}])
        self.assertEqual(p.status()["current_group"], "two")
        self.assertEqual(self.served_by(p), "c")
        code, _ = p.admin("group", {"group": "one"})
        self.assertEqual(code, 200)
        st = p.status()
        self.assertEqual(st["current_group"], "one")
        self.assertEqual(self.served_by(p), "a")
        # Both groups' endpoints are checked and reported.
        self.assertEqual(sorted(e["name"] for e in st["endpoints"]), ["a", "c"])
        self.assertTrue(all(e["checks"] >= 1 for e in st["endpoints"]))
        code, body = p.admin("group", {"group": "nope"})
        self.assertEqual(code, 400, body)


class AdminGuards(ZephyrTestCase):

    def test_cross_site_admin_requests_are_refused(self):
        a = self.start_fake("a")
        p = self.start_proxy(config_text=make_config(
            [{"name": "g", "endpoints": [("a", a.url)]}], health_check=HC))
        host = "127.0.0.1:%d" % p.port
        cases = [({"Origin": "http://evil.example"}, 403),
                 ({"Host": "evil.example:%d" % p.port, "Origin": "http://evil.example:%d" % p.port}, 403),
                 ({"Origin": "http://" + host}, 200),
                 ({}, 200)]
        for headers, want in cases:
            r = http_request(p.port, "POST", "/admin/pause", b"{}",
                             dict(headers, **{"content-type": "application/json"}))
            self.assertEqual(r.status, want, (headers, r))
        self.assertTrue(p.status()["checks"]["paused"])


if __name__ == "__main__":
    unittest.main()
