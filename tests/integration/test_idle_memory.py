"""Resident memory of an idle proxy (issue 15: "idle RSS under 8 MB with
https endpoints configured").

A proxy with one endpoint, http:// or https:// (the fake upstream behind
tlsfront.TlsRelay, so the start-up health check runs a real TLS handshake
through src/tls.c), is left idle after that check; its VmRSS must come
down to the budget within a bounded wait (the proxy trims its heap 1 s
after it goes quiet, see app_trim_heap).  libcurl must stay unloaded and
libm unmapped.  On failure the message lists the largest mappings.

The budgets are this build's figures on Debian 12 (OpenSSL 3.0, glibc
2.36) plus 0.35-0.45 MB, not the issue's 8 MB, which the https case misses
(7.7 MB with make OPENSSL_STATIC=1): of its ~8.6 MB, 4.1 MB are libcrypto's
pages (its whole 2.5 MB of code is
touched by one handshake, 64 KB fault-around windows) and 1.6 MB libc's;
docs/DESIGN.md ("Idle memory") has the table and what would close the gap.
Before the change that added this test the figures were 9.3 and 5.8 MB.
Other machines map other library versions: ZEPHYR_IDLE_RSS_HTTPS_MB and
ZEPHYR_IDLE_RSS_HTTP_MB override the budgets.  Skipped under ASan, where
the shadow memory and the quarantine make RSS meaningless.
"""

import os
import re
import unittest

from harness import ASAN, ZephyrTestCase, rss_kb, scaled, wait_for
from tlsfront import TestPKI, TlsRelay

HTTPS_BUDGET_MB = float(os.environ.get("ZEPHYR_IDLE_RSS_HTTPS_MB", "8.9"))
HTTP_BUDGET_MB = float(os.environ.get("ZEPHYR_IDLE_RSS_HTTP_MB", "5.5"))
ISSUE_TARGET_MB = 8.0


def mappings(pid, top=12):
    """The largest mappings by Rss, summed per file: 'kB name' lines."""
    sizes = {}
    name = None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                parts = line.split()
                name = os.path.basename(parts[5]) if len(parts) > 5 else "[anon]"
            elif line.startswith("Rss:"):
                sizes[name] = sizes.get(name, 0) + int(line.split()[1])
    rows = sorted(sizes.items(), key=lambda kv: -kv[1])[:top]
    return "\n".join("  %6d kB %s" % (kb, n) for n, kb in rows)


class IdleMemory(ZephyrTestCase):

    def setUp(self):
        super().setUp()
        if ASAN:
            self.skipTest("idle RSS is not measured under ASan (shadow memory and the "
                          "quarantine dominate it); run against the plain build")

    def idle_rss(self, https):
        fake = self.start_fake()
        env = {}
        url = fake.url
        relay = None
        if https:
            relay = TlsRelay(fake.port)
            self.addCleanup(relay.stop)
            url = "https://127.0.0.1:%d" % relay.port
            env["SSL_CERT_FILE"] = TestPKI.get().ca
        p = self.proxy_for(fake, url=url, env=env,
                           health_check={"interval_seconds": 3600})
        if relay:
            wait_for(lambda: relay.counts()["handshakes"] >= 1, scaled(10),
                     desc="the start-up check's TLS handshake")
        wait_for(lambda: (p.status().get("endpoints") or [{}])[0].get("status") == "healthy",
                 scaled(10), desc="the endpoint checked healthy")
        return p, p.proc.pid

    def assert_libraries(self, pid):
        with open("/proc/%d/maps" % pid) as f:
            maps = f.read()
        self.assertNotIn("libcurl", maps, "libcurl was loaded for a configuration that "
                         "does not need it (src/curlso.c)")
        self.assertIsNone(re.search(r"/libm\.so", maps),
                          "libm.so is mapped (~0.4 MB resident): a libm function crept in; "
                          "use util_exp/util_llround or integer arithmetic")

    def assert_idle_under(self, pid, budget_mb, what):
        try:
            wait_for(lambda: rss_kb(pid) <= budget_mb * 1024, scaled(5),
                     desc="idle RSS to reach the budget")
        except AssertionError:
            self.fail("idle RSS %s %.2f MB > budget %.2f MB; largest mappings:\n%s"
                      % (what, rss_kb(pid) / 1024.0, budget_mb, mappings(pid)))

    def test_idle_rss_with_an_https_endpoint(self):
        p, pid = self.idle_rss(https=True)
        self.assert_idle_under(pid, HTTPS_BUDGET_MB, "with an https:// endpoint")
        self.assert_libraries(pid)
        print("\nidle RSS with an https endpoint: %.2f MB (budget %.2f, issue target %.1f)"
              % (rss_kb(pid) / 1024.0, HTTPS_BUDGET_MB, ISSUE_TARGET_MB))

    def test_idle_rss_with_http_endpoints_only(self):
        p, pid = self.idle_rss(https=False)
        self.assert_idle_under(pid, HTTP_BUDGET_MB, "with http:// endpoints only")
        self.assert_libraries(pid)
        print("\nidle RSS with http endpoints only: %.2f MB (budget %.2f)"
              % (rss_kb(pid) / 1024.0, HTTP_BUDGET_MB))


if __name__ == "__main__":
    unittest.main()
