"""Live reload: SIGHUP and POST /admin/reload.  A valid new file takes
effect, endpoints that did not change keep their history, a broken file
leaves the running configuration in place with its error reported, and a
stream in flight is not touched."""

import signal
import unittest

from harness import ZephyrTestCase, make_config, scaled, wait_for

HC = {"method": "count_tokens", "interval_seconds": 300, "timeout_seconds": 5}


class Reload(ZephyrTestCase):

    def _config(self, endpoints, extra_server=None):
        server = {"shutdown_grace_ms": 3000}
        server.update(extra_server or {})
        return make_config([{"name": "main", "endpoints": endpoints}], server=server,
                           health_check=HC)

    def _names(self, p):
        return [e["name"] for e in p.status()["endpoints"]]

    def test_sighup_adds_endpoint_and_keeps_history(self):
        a = self.start_fake("a")
        b = self.start_fake("b")
        p = self.start_proxy(config_text=self._config([("a", a.url)]))
        before = [e for e in p.status()["endpoints"] if e["name"] == "a"][0]
        self.assertGreaterEqual(before["checks"], 1)
        self.write_config(self._config([("a", a.url), ("b", b.url)]))
        p.signal(signal.SIGHUP)
        wait_for(lambda: self._names(p) == ["a", "b"], scaled(5), desc="b appears after SIGHUP")
        after = [e for e in p.status()["endpoints"] if e["name"] == "a"][0]
        # The unchanged endpoint kept what was known about it.
        self.assertGreaterEqual(after["checks"], before["checks"])
        self.assertEqual(after["history"][:len(before["history"])], before["history"])
        self.assertIn("configuration reloaded", p.stderr_text())
        # Traffic still flows.
        r = self.post_messages(p.port)
        self.assertEqual(r.status, 200, r)

    def test_broken_file_keeps_running_config(self):
        a = self.start_fake("a")
        p = self.start_proxy(config_text=self._config([("a", a.url)]))
        self.write_config("[server]\nport = \"oops\"\n")
        code, body = p.admin("reload")
        self.assertEqual(code, 400, body)
        msg = body["error"]["message"]
        self.assertIn("reload failed", msg)
        self.assertIn("server.port", msg)
        self.assertIn("config.toml:2:", msg)
        # The old configuration is still serving.
        self.assertEqual(self._names(p), ["a"])
        self.assertEqual(self.post_messages(p.port).status, 200)
        p.signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP: reload failed" in p.stderr_text(), scaled(5),
                 desc="SIGHUP failure logged")
        self.assertEqual(self.post_messages(p.port).status, 200)

    def test_stream_in_flight_survives_reload(self):
        a = self.start_fake("a", events=8, gap_ms=150)
        b = self.start_fake("b")
        p = self.start_proxy(config_text=self._config([("a", a.url)]))
        s = self.stream(p.port)
        events = s.events()
        first = next(events)
        self.assertEqual(first.event, "message_start")
        # Replace the endpoint entirely while the stream runs.
        self.write_config(self._config([("b", b.url)]))
        code, body = p.admin("reload")
        self.assertEqual(code, 200, body)
        rest = [e.event for e in events]
        self.assertEqual(rest[-1], "message_stop", rest)
        self.assertEqual(sum(1 for e in rest if e == "content_block_delta"), 8)
        wait_for(lambda: p.status()["active_connections"] == 0, scaled(3), desc="no request left")
        self.assertEqual(self._names(p), ["b"])
        r = self.post_messages(p.port)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-zephyr-endpoint"), "b")

    def test_mode_and_pin_carry_over(self):
        a = self.start_fake("a")
        b = self.start_fake("b")
        p = self.start_proxy(config_text=self._config([("a", a.url), ("b", b.url)]))
        self.assertEqual(p.admin("pin", {"endpoint": "b"})[0], 200)
        self.write_config(self._config([("a", a.url), ("b", b.url)], {"switch_threshold_ms": 80}))
        self.assertEqual(p.admin("reload")[0], 200)
        st = p.status()
        self.assertEqual(st["mode"], "manual")
        self.assertEqual(st["pinned_endpoint"], "b")
        self.assertEqual(st["config"]["switch_threshold_ms"], 80)


if __name__ == "__main__":
    unittest.main()
