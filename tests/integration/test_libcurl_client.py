"""The same forwarding and fault tests again with [server] http_client =
"libcurl": by default http:// endpoints go through the built-in HTTP/1.1
client (src/h1.c), and libcurl carries https:// endpoints and proxies.  This
machine's tests reach only 127.0.0.1 over plain HTTP, so forcing libcurl is
how its side of src/upstream.c stays covered: head collection, pause and
resume, error mapping, aborts.

Only subclasses are defined here; the base classes are imported as modules,
so unittest does not run them twice."""
import unittest

import test_faults
import test_proxy


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


if __name__ == "__main__":
    unittest.main()
