"""A fleet: several instances of the real proxy sharing state through a real
redis-server ([cluster] redis_url), with fake upstreams.

Each test starts its own redis-server (Debian package redis-server) on a free
port in its temporary directory, without persistence, and stops it by PID.
Without redis-server every test here is skipped, loudly.

  one probe set     three instances, each endpoint checked once per interval
  shared failure    a 529 met by A keeps B and C off that endpoint within 1 s
  shared sessions   a session served through A stays on its endpoint via B
  checker failover  the lease holder is killed; another checks within a lease
  Redis outage      Redis is killed and restarted under traffic: no request
                    fails, each instance says so, and sharing resumes
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

from harness import (Proxy, ZephyrTestCase, child_env, free_port, http_request, make_config,
                     messages_body, port_accepts, scaled, wait_for)

PROMTOOL = shutil.which("promtool")
REDIS_BIN = shutil.which("redis-server") or ("/usr/bin/redis-server"
                                             if os.path.exists("/usr/bin/redis-server") else None)


class RedisServer:
    """A redis-server of our own: loopback, a free port, no persistence."""

    def __init__(self, tmpdir, port=None, password=None):
        self.dir = tmpdir
        self.port = port or free_port()
        self.password = password
        self.proc = None
        self.start()

    def start(self):
        args = [REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--protected-mode", "yes", "--logfile", os.path.join(self.dir, "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(lambda: port_accepts(self.port), scaled(10), desc="redis-server accepting")

    def kill(self):
        """SIGKILL, as a crash: no goodbye to the clients."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def served(port, headers=None, timeout=10):
    hdrs = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    hdrs.update(headers or {})
    return http_request(port, "POST", "/v1/messages", messages_body(), hdrs, timeout=timeout)


class FleetCase(ZephyrTestCase):

    def setUp(self):
        if not REDIS_BIN:
            sys.stderr.write("\n*** test_fleet: SKIPPED: redis-server is not installed "
                             "(apt-get install redis-server) ***\n")
            self.skipTest("redis-server is not installed (apt-get install redis-server)")
        super().setUp()
        self.redis = RedisServer(self.tmp)
        self.addCleanup(self.redis.stop)
        self.fleet = "t" + uuid.uuid4().hex[:8]
        self.n_cfg = 0

    def instance(self, groups, health_check, lease_ms=3000, server=None, password=None):
        """One proxy of the fleet.  Its cleanup accepts that a test killed it."""
        extra = ("[cluster]\nredis_url = \"redis://127.0.0.1:%d/0\"\nfleet = \"%s\"\n"
                 "lease_ms = %d\n" % (self.redis.port, self.fleet, lease_ms))
        env = {}
        if password is not None:
            extra += "redis_password_env = \"ZT_REDIS_PW\"\n"
            env["ZT_REDIS_PW"] = password
        server = dict(server or {})
        server.setdefault("shutdown_grace_ms", 2000)
        text = make_config(groups, server, health_check, extra)
        self.n_cfg += 1
        path = self.write_config(text, name="fleet%d.toml" % self.n_cfg)
        p = Proxy(path, env=child_env(env))
        p.killed = False
        self.addCleanup(lambda: None if p.killed else self._stop_proxy(p))
        return p

    def fleet_of(self, n, groups, health_check, **kw):
        ps = [self.instance(groups, health_check, **kw) for _ in range(n)]
        for p in ps:
            wait_for(lambda p=p: p.status()["cluster"]["redis"] == "connected", scaled(10),
                     desc="instance connected to Redis")
        return ps

    def checkers(self, ps):
        """{endpoint name: [indices of the instances that check it]}"""
        out = {}
        for i, p in enumerate(ps):
            if p.killed:
                continue
            for name in p.status()["cluster"]["checking"]:
                out.setdefault(name, []).append(i)
        return out

    def one_checker_each(self, ps, names):
        def cond():
            c = self.checkers(ps)
            return c if sorted(c) == sorted(names) and all(len(v) == 1 for v in c.values()) \
                else None
        return wait_for(cond, scaled(10), interval=0.05, desc="one checker per endpoint")

    @staticmethod
    def ep(p, name):
        return next(e for e in p.status()["endpoints"] if e["name"] == name)


class OneProbeSet(FleetCase):

    def test_three_instances_check_each_endpoint_once_per_interval(self):
        a = self.start_fake("a")
        b = self.start_fake("b")
        groups = [{"name": "g", "endpoints": [("a", a.url), ("b", b.url)]}]
        interval = 2
        ps = self.fleet_of(3, groups, {"interval_seconds": interval, "timeout_seconds": 1})
        self.one_checker_each(ps, ["a", "b"])
        # Every instance knows both endpoints as healthy, checked or not.
        for p in ps:
            wait_for(lambda p=p: all(e["status"] == "healthy" for e in p.status()["endpoints"]),
                     scaled(8), desc="healthy everywhere")
        # From now on count the checks each fake receives.  Three instances
        # checking on their own would deliver 4 checks in about one interval;
        # one checker for the fleet needs three intervals for them.
        for f in (a, b):
            f.reset()
        t0 = time.monotonic()
        wait_for(lambda: a.stats()["messages"] >= 4 and b.stats()["messages"] >= 4,
                 scaled(20), interval=0.05, desc="4 checks on each endpoint")
        elapsed = time.monotonic() - t0
        counts = (a.stats()["messages"], b.stats()["messages"])
        sys.stderr.write("\n  fleet of 3: 4 checks per endpoint took %.2f s (interval %d s), "
                         "counts %r\n" % (elapsed, interval, counts))
        self.assertGreaterEqual(elapsed, 3 * interval - 1.0,
                                "checks came faster than one set per interval: %r" % (counts,))
        self.assertLessEqual(max(counts), 5, counts)


class SharedOutcomes(FleetCase):

    HC = {"interval_seconds": 600, "timeout_seconds": 2, "failed_interval_seconds": 600}

    def test_a_529_on_one_instance_moves_the_others_within_a_second(self):
        a = self.start_fake("a")
        b = self.start_fake("b", latency_ms=150)
        groups = [{"name": "g", "endpoints": [("a", a.url), ("b", b.url)]}]
        ps = self.fleet_of(3, groups, self.HC)
        self.one_checker_each(ps, ["a", "b"])
        for p in ps:
            wait_for(lambda p=p: (p.status().get("current_endpoint") or {}).get("name") == "a"
                     and self.ep(p, "a")["status"] == "healthy", scaled(8),
                     desc="a healthy and current everywhere")
        A, B, C = ps
        a.config(status=529)
        r = served(A.port)
        t_fail = time.monotonic()
        self.assertEqual(r.status, 200, r)  # A moved on to b itself
        self.assertEqual(r.header("x-zephyr-endpoint"), "b")
        for p in (B, C):
            wait_for(lambda p=p: self.ep(p, "a")["status"] == "failed", scaled(3),
                     interval=0.01, desc="a failed on the other instances")
        took = time.monotonic() - t_fail
        sys.stderr.write("\n  failure on A known to B and C after %.3f s\n" % took)
        self.assertLess(took, 1.0)
        before = a.stats()["messages"]
        for p in (B, C):
            r = served(p.port)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("x-zephyr-endpoint"), "b", r)
            self.assertEqual(r.header("x-zephyr-attempts"), "1",
                             "B/C tried the failed endpoint first: %r" % r)
        # Nothing but (at most) the checker's quick re-check reached a.
        self.assertLessEqual(a.stats()["messages"] - before, 1)
        self.assertIn("fleet:", self.ep(B, "a")["error"])

    def test_a_session_stays_on_its_endpoint_through_another_instance(self):
        a = self.start_fake("a")
        b = self.start_fake("b", latency_ms=150)
        groups = [{"name": "g", "endpoints": [("a", a.url), ("b", b.url)]}]
        A, B = self.fleet_of(2, groups, self.HC)
        self.one_checker_each([A, B], ["a", "b"])
        for p in (A, B):
            wait_for(lambda p=p: (p.status().get("current_endpoint") or {}).get("name") == "a",
                     scaled(8), desc="a current everywhere")
        # A serves the session on b (pinned there); B's own choice is a.
        code, _ = A.admin("pin", {"endpoint": "b"})
        self.assertEqual(code, 200)
        # B counts the sessions bound to b, remote bindings included.  (It
        # waited for one more applied message, which under load was not
        # always the binding: the request's own outcome may come first.)
        def on_b(p):
            return [e["sessions"] for e in p.status()["endpoints"] if e["name"] == "b"][0]
        before = on_b(B)
        sid = {"x-claude-code-session-id": "sess-" + uuid.uuid4().hex}
        r = served(A.port, sid)
        self.assertEqual(r.header("x-zephyr-endpoint"), "b", r)
        wait_for(lambda: on_b(B) > before, scaled(2), interval=0.01, desc="B applied the binding")
        r = served(B.port, sid)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-zephyr-endpoint"), "b", "the session lost its endpoint")
        # A session B never heard of still goes where B would send it.
        r = served(B.port, {"x-claude-code-session-id": "other-" + uuid.uuid4().hex})
        self.assertEqual(r.header("x-zephyr-endpoint"), "a", r)


class CheckerFailover(FleetCase):

    def test_another_instance_takes_the_lease_within_one_period(self):
        a = self.start_fake("a")
        groups = [{"name": "g", "endpoints": [("a", a.url)]}]
        lease_ms = 2000
        ps = self.fleet_of(3, groups, {"interval_seconds": 600, "timeout_seconds": 2},
                           lease_ms=lease_ms)
        holder = self.one_checker_each(ps, ["a"])["a"][0]
        before = a.stats()["messages"]
        victim = ps[holder]
        victim.killed = True
        victim.proc.kill()
        t_kill = time.monotonic()
        victim.wait(10)
        new = wait_for(lambda: self.checkers(ps).get("a"), scaled(3 * lease_ms / 1000),
                       interval=0.02, desc="another checker")
        took = time.monotonic() - t_kill
        sys.stderr.write("\n  checker killed; instance %d took over after %.3f s (lease %.1f s)\n"
                         % (new[0], took, lease_ms / 1000))
        self.assertEqual(len(new), 1, new)
        self.assertNotEqual(new[0], holder)
        self.assertLessEqual(took, lease_ms / 1000 + 0.3)
        # and it checks: the new checker looks at once
        wait_for(lambda: a.stats()["messages"] > before, scaled(5), desc="a check by the new holder")


class Reload(FleetCase):

    def test_a_reload_keeps_the_checker_lease(self):
        a = self.start_fake("a")
        groups = [{"name": "g", "endpoints": [("a", a.url)]}]
        ps = self.fleet_of(2, groups, {"interval_seconds": 600, "timeout_seconds": 2},
                           lease_ms=3000)
        holder = self.one_checker_each(ps, ["a"])["a"][0]
        p = ps[holder]
        p.signal(signal.SIGHUP)
        self.assertTrue(p.stderr.wait_match(re.compile(r"configuration reloaded"), scaled(10)),
                        "no reload logged")
        # Still the checker at once: the key in Redis names it, and a fresh
        # SET NX after the reload would have left the endpoint unchecked
        # until the key ran out.
        self.assertEqual(self.checkers(ps), {"a": [holder]})
        self.assertEqual(p.status()["cluster"]["redis"], "connected")


class RedisOutage(FleetCase):

    def test_no_request_fails_while_redis_is_away_and_sharing_resumes(self):
        a = self.start_fake("a")
        b = self.start_fake("b")
        groups = [{"name": "g", "endpoints": [("a", a.url), ("b", b.url)]}]
        hc = {"interval_seconds": 600, "timeout_seconds": 2}
        ps = self.fleet_of(3, groups, hc, lease_ms=2000)
        self.one_checker_each(ps, ["a", "b"])
        results, stop = [], threading.Event()

        def traffic():
            k = 0
            deadline = time.monotonic() + scaled(40)
            while not stop.is_set() and time.monotonic() < deadline and k < 3000:
                p = ps[k % 3]
                k += 1
                try:
                    results.append(served(p.port, timeout=10).status)
                except Exception as e:  # noqa: BLE001
                    results.append(repr(e))
        th = threading.Thread(target=traffic)
        th.start()
        try:
            wait_for(lambda: len(results) >= 20, scaled(10), desc="traffic flowing")
            self.redis.kill()
            for p in ps:
                wait_for(lambda p=p: p.status()["cluster"]["redis"] != "connected", scaled(5),
                         desc="instance sees Redis gone")
                st = p.status()["cluster"]
                self.assertFalse(st["shared"])
                self.assertIsNotNone(st["down_for_s"])
                m = http_request(p.port, "GET", "/metrics").body.decode()
                self.assertIn("zephyr_cluster_redis_up 0", m)
            n_down = len(results)
            wait_for(lambda: len(results) >= n_down + 30, scaled(10), desc="traffic while down")
            self.redis.start()
            for p in ps:
                wait_for(lambda p=p: p.status()["cluster"]["redis"] == "connected", scaled(15),
                         desc="instance back on Redis")
            n_up = len(results)
            wait_for(lambda: len(results) >= n_up + 10, scaled(10), desc="traffic after")
        finally:
            stop.set()
            th.join(30)
        bad = [r for r in results if r != 200]
        sys.stderr.write("\n  %d requests across the outage, %d failed\n" % (len(results), len(bad)))
        self.assertEqual(bad, [], "requests failed during the Redis outage")
        # Shared again: one checker per endpoint, and an outcome travels.
        self.one_checker_each(ps, ["a", "b"])
        A, B, _ = ps
        code, _ = A.admin("pin", {"endpoint": "a"})
        self.assertEqual(code, 200)
        a.config(status=529)
        r = served(A.port)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.ep(A, "a")["status"], "failed")
        wait_for(lambda: self.ep(B, "a")["status"] == "failed", scaled(2), interval=0.01,
                 desc="the failure reached B after the outage")


class RedisPassword(FleetCase):
    """AUTH with the password from the environment; the password never shows."""

    PW = "zt-redis-Secret-4f9a2c77e1"

    def setUp(self):
        super().setUp()
        self.redis.stop()
        self.redis = RedisServer(self.tmp, password=self.PW)
        self.addCleanup(self.redis.stop)

    def test_password_from_the_environment_and_never_shown(self):
        a = self.start_fake("a")
        groups = [{"name": "g", "endpoints": [("a", a.url)]}]
        hc = {"interval_seconds": 600, "timeout_seconds": 2}
        good = self.instance(groups, hc, password=self.PW)
        wrong = self.instance(groups, hc, password="zt-wrong-Password-77")
        wait_for(lambda: good.status()["cluster"]["redis"] == "connected", scaled(10),
                 desc="connected with the password")
        wait_for(lambda: "WRONGPASS" in wrong.status()["cluster"]["last_error"]
                 or "invalid" in wrong.status()["cluster"]["last_error"], scaled(10),
                 desc="the wrong password refused")
        self.assertNotEqual(wrong.status()["cluster"]["redis"], "connected")
        r = served(wrong.port)  # a refused Redis fails no request
        self.assertEqual(r.status, 200, r)
        for p, pw in ((good, self.PW), (wrong, "zt-wrong-Password-77")):
            texts = [json.dumps(p.status()), http_request(p.port, "GET", "/metrics").body.decode()]
            self.assertIn("zephyr_cluster_redis_up %d" % (p is good), texts[1])
            if PROMTOOL:
                chk = subprocess.run([PROMTOOL, "check", "metrics"], input=texts[1].encode(),
                                     capture_output=True, timeout=30)
                self.assertEqual(chk.returncode, 0, chk.stdout + chk.stderr)
            p.stop(scaled(10))
            texts.append(p.stderr_text())
            for t in texts:
                self.assertNotIn(pw, t)


if __name__ == "__main__":
    import unittest
    unittest.main()
