"""Sticky sessions against the user's choices (issue 14): a pin moves every
session, a session leaves a failed or resting endpoint, it leaves for a
faster one only by server.session_switch_threshold_ms (0: never for speed),
/status shows the sessions (short ids only), and POST
/admin/sessions/release lets them go.

Requests carry X-Claude-Code-Session-Id as Claude Code sends it; which
endpoint served a request is read from x-zephyr-endpoint.  Checks run on
demand (POST /admin/check): the periodic interval is long."""

import re
import unittest

from harness import ZephyrTestCase, make_config, scaled, wait_for

HC = {"method": "messages", "interval_seconds": 600, "timeout_seconds": 5,
      "failed_interval_seconds": 600}

SID1 = "5f0c3a9e-1d2b-4c6e-8a7f-0123456789ab"
SID2 = "9b8a7c6d-5e4f-4a3b-9c2d-fedcba987654"


def sid(value):
    return [("x-claude-code-session-id", value)]


class Sessions(ZephyrTestCase):

    def proxy(self, endpoints, **server):
        server.setdefault("switch_threshold_ms", 50)
        server.setdefault("stream_holdback_ms", 0)
        groups = [{"name": "g", "endpoints": [(f.name, f.url) for f in endpoints]}]
        return self.start_proxy(config_text=make_config(groups, server=server, health_check=HC))

    def start_named(self, name, **knobs):
        f = self.start_fake(name, **knobs)
        f.name = name
        return f

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

    def smoothed(self, p, name):
        return [e for e in p.status()["endpoints"] if e["name"] == name][0]["smoothed_latency_ms"]

    def check_until(self, p, cond, desc, limit=30):
        for _ in range(limit):
            self.check(p)
            if cond():
                return
        self.fail("after %d checks: %s" % (limit, desc))

    def wait_log(self, p, pattern, count=1):
        """Waits until the proxy's log holds pattern count times (the log
        is read by a thread: a line may arrive just after the reply)."""
        try:
            wait_for(lambda: len(re.findall(pattern, p.stderr_text())) >= count, scaled(5),
                     desc="log line %r" % pattern)
        except AssertionError:
            self.fail("no log line %r:\n%s" % (pattern, p.stderr_text()))
        self.assertEqual(len(re.findall(pattern, p.stderr_text())), count, p.stderr_text())

    def sessions_on(self, p):
        return {e["name"]: e["sessions"] for e in p.status()["endpoints"]}

    # ---- the pin -------------------------------------------------------

    def test_pin_moves_every_session_and_says_so_once(self):
        a = self.start_named("a")
        b = self.start_named("b", latency_ms=150)
        p = self.proxy([a, b])
        self.check(p, 2)
        self.assertEqual(self.current(p), "a")
        self.assertEqual(self.served_by(p, sid(SID1)), "a")
        self.assertEqual(self.served_by(p, sid(SID2)), "a")
        code, _ = p.admin("pin", {"endpoint": "b"})
        self.assertEqual(code, 200)
        # The case: pinned, yet the session stayed where it was.
        self.assertEqual(self.served_by(p, sid(SID1)), "b", "a pin must move the session")
        self.assertEqual(self.served_by(p, sid(SID2)), "b")
        self.assertEqual(self.served_by(p, sid(SID1)), "b")
        self.assertEqual(self.sessions_on(p), {"a": 0, "b": 2})
        self.wait_log(p, r"pin: 2 sessions of group g move to b")
        # Back to auto: b is slower by less than the session threshold
        # (500 ms by default), so the sessions stay on b for their cache.
        code, _ = p.admin("mode", {"mode": "auto"})
        self.assertEqual(code, 200)
        self.check(p)
        self.assertEqual(self.current(p), "a")
        self.assertEqual(self.served_by(p, sid(SID1)), "b")

    # ---- failure and rest ------------------------------------------------

    def test_session_leaves_a_failed_endpoint_and_status_shows_where_it_is(self):
        a = self.start_named("a")
        b = self.start_named("b", latency_ms=100)
        p = self.proxy([a, b])
        self.check(p, 2)
        self.assertEqual(self.served_by(p, sid(SID1)), "a")
        st = p.status()["sessions"]
        self.assertEqual(st["total"], 1)
        self.assertEqual([(s["endpoint"], s["group"]) for s in st["list"]], [("a", "g")])
        short = st["list"][0]["id"]
        self.assertRegex(short, r"^[0-9a-f]{8}$")
        a.config(status=500)
        self.assertEqual(self.served_by(p, sid(SID1)), "b")
        st = p.status()
        self.assertEqual([(s["id"], s["endpoint"]) for s in st["sessions"]["list"]], [(short, "b")])
        self.assertEqual(self.sessions_on(p), {"a": 0, "b": 1})
        self.wait_log(p, r"session %s \[g\] moves a \(\d+ ms\) -> b \(\d+ ms\): failure" % short)
        # a recovers: the session keeps its new endpoint (its cache is there now).
        a.config(status=200)
        self.check(p)
        self.assertEqual(self.current(p), "a")
        self.assertEqual(self.served_by(p, sid(SID1)), "b")

    def test_session_leaves_a_resting_endpoint(self):
        a = self.start_named("a")
        b = self.start_named("b", latency_ms=100)
        p = self.proxy([a, b])
        self.check(p, 2)
        self.assertEqual(self.served_by(p, sid(SID1)), "a")
        a.config(status=429, retry_after=60)
        self.assertEqual(self.served_by(p, sid(SID1)), "b")
        ea = [e for e in p.status()["endpoints"] if e["name"] == "a"][0]
        self.assertIsNotNone(ea["rested"])
        self.assertEqual(self.sessions_on(p), {"a": 0, "b": 1})

    # ---- speed ---------------------------------------------------------

    def test_session_threshold_small_gap_keeps_large_gap_moves(self):
        a = self.start_named("a")
        b = self.start_named("b", latency_ms=150)
        p = self.proxy([a, b], session_switch_threshold_ms=300)
        self.assertEqual(p.status()["config"]["session_switch_threshold_ms"], 300)
        self.check(p, 2)
        self.assertEqual(self.served_by(p, sid(SID1)), "a")
        # b becomes faster by about 200 ms: new traffic moves, the session stays.
        a.config(latency_ms=200)
        b.config(latency_ms=0)
        self.check_until(p, lambda: self.current(p) == "b" and
                         self.smoothed(p, "a") - self.smoothed(p, "b") > 150,
                         "b current and faster by > 150 ms")
        self.assertEqual(self.served_by(p, sid(SID1)), "a", "moved below the session threshold")
        self.assertEqual(self.served_by(p), "b")
        # Now by far more than 300 ms: the session moves, once.
        a.config(latency_ms=900)
        self.check_until(p, lambda: self.smoothed(p, "a") - self.smoothed(p, "b") > 400,
                         "a slower than b by > 400 ms")
        self.assertEqual(self.served_by(p, sid(SID1)), "b", "stayed beyond the session threshold")
        self.assertEqual(self.served_by(p, sid(SID1)), "b")
        self.wait_log(p, r"session [0-9a-f]{8} \[g\] moves a \(\d+ ms\) -> b \(\d+ ms\): faster")

    def test_session_threshold_zero_never_moves_for_speed(self):
        a = self.start_named("a")
        b = self.start_named("b", latency_ms=150)
        p = self.proxy([a, b], session_switch_threshold_ms=0)
        self.assertEqual(p.status()["sessions"]["switch_threshold_ms"], 0)
        self.check(p, 2)
        self.assertEqual(self.served_by(p, sid(SID1)), "a")
        a.config(latency_ms=1200)
        b.config(latency_ms=0)
        self.check_until(p, lambda: self.smoothed(p, "a") - self.smoothed(p, "b") > 800,
                         "a slower than b by > 800 ms")
        self.assertEqual(self.current(p), "b")
        self.assertEqual(self.served_by(p, sid(SID1)), "a", "0 must mean never for speed alone")
        # A failure still moves it.
        a.config(status=500)
        self.assertEqual(self.served_by(p, sid(SID1)), "b")

    # ---- release and /status ---------------------------------------------

    def test_release_one_endpoint_then_all(self):
        a = self.start_named("a")
        b = self.start_named("b", latency_ms=150)
        p = self.proxy([a, b], session_switch_threshold_ms=0)
        self.check(p, 2)
        self.assertEqual(self.served_by(p, sid(SID1)), "a")
        a.config(latency_ms=400)
        b.config(latency_ms=0)
        self.check_until(p, lambda: self.current(p) == "b", "b current")
        self.assertEqual(self.served_by(p, sid(SID2)), "b")
        self.assertEqual(self.served_by(p, sid(SID1)), "a")
        self.assertEqual(self.sessions_on(p), {"a": 1, "b": 1})
        code, body = p.admin("sessions/release", {"endpoint": "nope"})
        self.assertEqual(code, 400, body)
        code, body = p.admin("sessions/release", {"endpoint": 5})
        self.assertEqual(code, 400, body)
        self.assertEqual(self.sessions_on(p), {"a": 1, "b": 1})
        # Release a's sessions: SID1 is routed afresh (to b), SID2 untouched.
        code, body = p.admin("sessions/release", {"endpoint": "a"})
        self.assertEqual(code, 200, body)
        self.assertEqual(body["done"], "sessions/release")
        self.assertEqual(self.sessions_on(p), {"a": 0, "b": 1})
        self.assertEqual(self.served_by(p, sid(SID1)), "b")
        self.assertEqual(self.sessions_on(p), {"a": 0, "b": 2})
        self.wait_log(p, r"sessions released: 1 \(endpoint a\)")
        # Release all.
        code, body = p.admin("sessions/release", {})
        self.assertEqual(code, 200, body)
        st = p.status()["sessions"]
        self.assertEqual((st["total"], st["list"]), (0, []))
        self.wait_log(p, r"sessions released: 2 \(all endpoints\)")

    def test_status_never_shows_the_session_id(self):
        a = self.start_named("a")
        p = self.proxy([a])
        self.check(p)
        for s in (SID1, SID2):
            self.assertEqual(self.served_by(p, sid(s)), "a")
        st = p.status()
        ids = [s["id"] for s in st["sessions"]["list"]]
        self.assertEqual(len(ids), 2)
        self.assertNotEqual(ids[0], ids[1])
        for s in st["sessions"]["list"]:
            self.assertRegex(s["id"], r"^[0-9a-f]{8}$")
            self.assertGreaterEqual(s["age_s"], 0)
            self.assertGreaterEqual(s["idle_s"], 0)
        text = str(st) + p.stderr_text()
        for s in (SID1, SID2):
            self.assertNotIn(s[:8], text)
            self.assertNotIn(s[-12:], text)


if __name__ == "__main__":
    unittest.main()
