"""Resident memory of an idle proxy (issue 15: "idle RSS under 8 MB with
https endpoints configured").

A proxy with one endpoint, http:// or https:// (the fake upstream behind
tlsfront.TlsRelay, so the start-up health check runs a real TLS handshake
through src/tls.c), is left idle after that check; its VmRSS must come
down to the budget within a bounded wait (the proxy trims its heap 1 s
after it goes quiet and gives back the loader's tables and the parser's
code then, see app_trim_heap and src/mem.h).  libcurl must stay unloaded
and libm unmapped.  On failure the message lists the largest mappings.

The budgets are this build's figures on Debian 12 (OpenSSL 3.0, glibc
2.36) plus ~0.4 MB for a noisy machine: https 7.5 MB, http:// only 4.0 MB
(before src/mem.c 8.8 and 5.3 MB, which fail them; before the change that
added this test 9.3 and 5.8 MB).  docs/DESIGN.md ("Idle memory") has the
table.  Other machines map other library versions: ZEPHYR_IDLE_RSS_HTTPS_MB
and ZEPHYR_IDLE_RSS_HTTP_MB override the budgets.  Skipped under ASan,
where the shadow memory and the quarantine make RSS meaningless.

LoaderPagesGivenBack checks what giving the loader's pages back must not
break (it runs under ASan too): libcurl loaded by a reload after the pass
(its dlopen reads the other libraries' tables again) serves a request, and
the pass runs again after that load.
"""
import os
import re
import unittest

from harness import ASAN, ZephyrTestCase, make_config, rss_kb, scaled, wait_for
from tlsfront import TestPKI, TlsRelay

HTTPS_BUDGET_MB = float(os.environ.get("ZEPHYR_IDLE_RSS_HTTPS_MB", "7.9"))
HTTP_BUDGET_MB = float(os.environ.get("ZEPHYR_IDLE_RSS_HTTP_MB", "4.5"))
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


def first_segment(pid, lib):
    """(Size, Rss) in kB of lib's first mapping (file offset 0: the ELF
    headers and the loader's tables), or None if lib is not mapped."""
    with open("/proc/%d/smaps" % pid) as f:
        text = f.read()
    for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", text):
        head = block.split("\n", 1)[0].split()
        if len(head) > 5 and lib in os.path.basename(head[5]) and int(head[2], 16) == 0:
            size = int(re.search(r"^Size:\s+(\d+)", block, re.M).group(1))
            rss = int(re.search(r"^Rss:\s+(\d+)", block, re.M).group(1))
            return size, rss
    return None


def loader_tables_given_back(pid):
    """libcrypto's tables (~740 of its 788 kB first mapping) are not resident."""
    size, rss = first_segment(pid, "libcrypto")
    return rss * 4 < size


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


class LoaderPagesGivenBack(ZephyrTestCase):
    """src/mem.c gives back pages that only the dynamic loader reads; what
    reads them later must still work."""

    def test_libcurl_loaded_after_the_pass_serves_requests(self):
        fake = self.start_fake()
        p = self.proxy_for(fake, health_check={"interval_seconds": 3600})
        wait_for(lambda: loader_tables_given_back(p.pid), scaled(10),
                 desc="libcrypto's loader tables given back (app_trim_heap, 1 s after quiet)")
        with open("/proc/%d/maps" % p.pid) as f:
            self.assertNotIn("libcurl", f.read())
        # A reload that needs libcurl loads it now (src/curlso.c): dlopen
        # relocates libcurl against libssl, libcrypto and libc, whose
        # tables were given back and are read from the page cache again.
        self.write_config(make_config([{"name": "main", "endpoints": [("a", fake.url)]}],
                                      server={"http_client": "libcurl"},
                                      health_check={"interval_seconds": 3600}))
        code, body = p.admin("reload")
        self.assertEqual(code, 200, body)
        with open("/proc/%d/maps" % p.pid) as f:
            self.assertIn("libcurl", f.read())
        for _ in range(3):
            r = self.post_messages(p.port)
            self.assertEqual(r.status, 200, r)
        # The load read libcrypto's tables back; it is followed by one more
        # pass (dl_iterate_phdr's counter) at the next trim, which comes at
        # most every 10 s.
        wait_for(lambda: loader_tables_given_back(p.pid), scaled(25),
                 desc="the loader tables given back again after libcurl was loaded")
        r = self.post_messages(p.port)
        self.assertEqual(r.status, 200, r)


if __name__ == "__main__":
    unittest.main()
