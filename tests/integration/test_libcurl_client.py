"""The same forwarding and fault tests again with [server] http_client =
"libcurl": by default http:// endpoints go through the built-in HTTP/1.1
client (src/h1.c), and libcurl carries https:// endpoints and proxies.  This
machine's tests reach only 127.0.0.1 over plain HTTP, so forcing libcurl is
how its side of src/upstream.c stays covered: head collection, pause and
resume, error mapping, aborts.

Only subclasses are defined here; the base classes are imported as modules,
so unittest does not run them twice."""
import subprocess
import unittest

import test_faults
import test_proxy
from harness import PROXY_BIN, ZephyrTestCase, child_env, refused_port, make_config, scaled


class CurlCoreForwarding(test_proxy.CoreForwarding):
    http_client = "libcurl"


class CurlHeaders(test_proxy.Headers):
    http_client = "libcurl"


class CurlSlowAndGone(test_proxy.SlowAndGone):
    http_client = "libcurl"


class CurlFailoverBeforeFirstByte(test_faults.FailoverBeforeFirstByte):
    http_client = "libcurl"


class CurlAfterFirstByte(test_faults.AfterFirstByte):
    http_client = "libcurl"



def maps_of(pid):
    with open("/proc/%d/maps" % pid) as f:
        return f.read()


class ClientChoice(ZephyrTestCase):
    """Which client carries an exchange, and libcurl loaded only when one
    needs it (src/curlso.c): a configuration of http:// endpoints never maps
    libcurl and its TLS libraries."""

    def request_ok(self, p):
        r = self.post_messages(p.port)
        self.assertEqual(r.status, 200, r)
        return r

    def test_builtin_client_leaves_libcurl_unloaded(self):
        fake = self.start_fake()
        p = self.proxy_for(fake)
        self.request_ok(p)
        self.assertNotIn("libcurl", maps_of(p.pid))

    def test_libcurl_client_loads_libcurl(self):
        fake = self.start_fake()
        p = self.proxy_for(fake, server={"http_client": "libcurl"})
        self.request_ok(p)
        self.assertIn("libcurl", maps_of(p.pid))

    def test_proxy_variable_sends_http_through_libcurl(self):
        # With http_proxy set, http:// goes through libcurl, which sends the
        # request to the proxy in absolute form; the fake upstream stands in
        # for the proxy and answers it.
        origin_port = refused_port()
        fake = self.start_fake()
        p = self.proxy_for(fake, url="http://127.0.0.1:%d" % origin_port,
                           env={"http_proxy": fake.url, "no_proxy": ""}, settle=False)
        self.request_ok(p)
        self.assertIn("libcurl", maps_of(p.pid))

    def test_https_endpoint_without_libcurl_refuses_to_start(self):
        path = self.write_config(make_config(
            [{"name": "main", "endpoints": [("tls", "https://127.0.0.1:9")]}],
            server={"http_client": "libcurl"}))
        r = subprocess.run([PROXY_BIN, "--config", path, "--port", "0"], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=scaled(20),
                           env=child_env({"ZEPHYR_LIBCURL": "/nonexistent/libcurl.so.4"}))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("cannot load /nonexistent/libcurl.so.4", r.stderr)
        self.assertIn("endpoint tls needs libcurl", r.stderr)

    def test_reload_to_an_endpoint_needing_missing_libcurl_keeps_running_config(self):
        fake = self.start_fake()
        p = self.proxy_for(fake, env={"ZEPHYR_LIBCURL": "/nonexistent/libcurl.so.4"})
        self.write_config(make_config(
            [{"name": "main", "endpoints": [("tls", "https://127.0.0.1:9")]}],
            server={"http_client": "libcurl"}))
        code, body = p.admin("reload")
        self.assertEqual(code, 400, body)
        self.assertIn("endpoint tls needs libcurl", body["error"]["message"])
        self.request_ok(p)  # still the old configuration

    def test_http_endpoints_run_without_libcurl(self):
        fake = self.start_fake()
        p = self.proxy_for(fake, env={"ZEPHYR_LIBCURL": "/nonexistent/libcurl.so.4"})
        self.request_ok(p)
        self.assertNotIn("cannot load", p.stderr_text())


if __name__ == "__main__":
    unittest.main()
