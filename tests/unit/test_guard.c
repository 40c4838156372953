/*
 * Unit tests for guard: the Host rule (loopback names, the bind address,
 * server.allowed_hosts, IP literals parsed as literals, never a prefix),
 * the Origin rule (own origin, allowed origins, preflights' headers), the
 * configuration entries' validation, and the key comparison.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "guard.h"

static char *hosts_list[] = {"zephyr.lan", "192.168.1.20", "::2"};
static char *origins_list[] = {"http://localhost:3000", "chrome-extension://abcdef"};

static struct config make_cfg(const char *bind)
{
    struct config c;
    memset(&c, 0, sizeof c);
    c.bind = (char *)bind;
    c.allowed_hosts = hosts_list;
    c.n_allowed_hosts = 3;
    c.allowed_origins = origins_list;
    c.n_allowed_origins = 2;
    return c;
}

static bool host_ok(const struct config *c, const char *h)
{
    return guard_host_ok(c, h, strlen(h));
}

static void test_host_on_loopback(void **state)
{
    (void)state;
    struct config c = make_cfg("127.0.0.1");
    static const char *const good[] = {
        "localhost",  "LOCALHOST:8080",      "127.0.0.1",  "127.0.0.1:8080", "[::1]",
        "[::1]:8080", "[0:0:0:0:0:0:0:1]:1", "zephyr.lan", "Zephyr.LAN:443", "192.168.1.20:8080",
        "[::2]",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!host_ok(&c, good[i]))
            fail_msg("Host %s refused", good[i]);
    static const char *const bad[] = {
        "127.evil.example",
        "127.evil.example:8080",
        "127.0.0.1.evil.example",
        "localhost.evil",
        "evil.localhost",
        "evil.example",
        "127.0.0.2",
        "127.1",
        "2130706433",
        "0x7f000001",
        "127.000.000.001",
        "localhost:",
        "localhost:80x",
        "localhost:123456",
        "localhost:99999",
        "::1",
        "[::1",
        "[::1]x",
        "[::1]:",
        "[evil]",
        "",
        ":8080",
        "local host",
        "zephyr.lan.",
        "zephyr.lan:1:2",
        "[::ffff:127.0.0.2]",
        "a@localhost",
        "localhost/x",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (host_ok(&c, bad[i]))
            fail_msg("Host %s accepted", bad[i]);
}

static void test_host_bind_address_is_accepted(void **state)
{
    (void)state;
    struct config c = make_cfg("127.0.0.2");
    assert_true(host_ok(&c, "127.0.0.2:9000"));
    assert_true(host_ok(&c, "127.0.0.1"));
    assert_false(host_ok(&c, "127.0.0.3"));
    c = make_cfg("::1");
    assert_true(host_ok(&c, "[::1]:80"));
    c = make_cfg("localhost");
    assert_true(host_ok(&c, "localhost"));
    assert_false(host_ok(&c, "evil.example"));
}

static void test_host_beyond_loopback_is_not_checked(void **state)
{
    (void)state;
    struct config c = make_cfg("0.0.0.0");
    assert_true(host_ok(&c, "evil.example:8080"));
    c = make_cfg("192.168.1.5");
    assert_true(host_ok(&c, "anything"));
}

static enum guard_verdict check(const struct config *c, const char *host, const char *origin)
{
    return guard_check(c, host, host ? strlen(host) : 0, origin, origin ? strlen(origin) : 0);
}

static void test_origin(void **state)
{
    (void)state;
    struct config c = make_cfg("127.0.0.1");
    assert_int_equal(check(&c, "127.0.0.1:8080", NULL), GUARD_PASS);
    assert_int_equal(check(&c, NULL, NULL), GUARD_BAD_HOST); /* HTTP/1.0 without Host */
    struct config wide = make_cfg("0.0.0.0");
    assert_int_equal(check(&wide, NULL, NULL), GUARD_PASS); /* the access key guards */
    assert_int_equal(check(&c, "127.0.0.1:8080", "http://127.0.0.1:8080"), GUARD_PASS);
    assert_int_equal(check(&c, "localhost:8080", "HTTP://LOCALHOST:8080"), GUARD_PASS);
    assert_int_equal(check(&c, "zephyr.lan", "https://zephyr.lan"), GUARD_PASS);
    assert_int_equal(check(&c, "127.0.0.1:8080", "http://localhost:3000"), GUARD_PASS);
    assert_int_equal(check(&c, "127.0.0.1:8080", "chrome-extension://abcdef"), GUARD_PASS);
    assert_int_equal(check(&c, "127.0.0.1:8080", "http://evil.example"), GUARD_BAD_ORIGIN);
    assert_int_equal(check(&c, "127.0.0.1:8080", "http://127.0.0.1:8081"), GUARD_BAD_ORIGIN);
    assert_int_equal(check(&c, "127.0.0.1:8080", "http://127.0.0.1:8080/"), GUARD_BAD_ORIGIN);
    assert_int_equal(check(&c, "127.0.0.1:8080", "null"), GUARD_BAD_ORIGIN);
    assert_int_equal(check(&c, "127.0.0.1:8080", ""), GUARD_BAD_ORIGIN);
    assert_int_equal(check(&c, "127.0.0.1:8080", "http://localhost:30000"), GUARD_BAD_ORIGIN);
    assert_int_equal(check(&wide, NULL, "http://127.0.0.1:8080"), GUARD_BAD_ORIGIN);
    /* the rebinding page: its Origin matches its Host, and the Host is refused */
    assert_int_equal(check(&c, "127.evil.example:8080", "http://127.evil.example:8080"),
                     GUARD_BAD_HOST);
    /* beyond loopback any Host passes, and the own-origin rule follows it */
    c = make_cfg("0.0.0.0");
    assert_int_equal(check(&c, "10.0.0.5:8080", "http://10.0.0.5:8080"), GUARD_PASS);
    assert_int_equal(check(&c, "10.0.0.5:8080", "http://evil.example"), GUARD_BAD_ORIGIN);
}

static void test_key_eq(void **state)
{
    (void)state;
    const char *secret = "zk-0123456789abcdef";
    assert_true(guard_key_eq(secret, strlen(secret), secret));
    assert_false(guard_key_eq("zk-0123456789abcdeF", 19, secret));
    assert_false(guard_key_eq("zk-0123456789abcde", 18, secret));   /* a prefix */
    assert_false(guard_key_eq("zk-0123456789abcdefX", 20, secret)); /* longer */
    assert_false(guard_key_eq("", 0, secret));
    assert_false(guard_key_eq("x", 1, ""));
    assert_false(guard_key_eq("", 0, ""));
    /* a NUL in what is given never matches the secret's end */
    assert_false(guard_key_eq("zk-0123456789abcdef\0", 20, secret));
    /* the view is honoured: bytes past len are not read as part of the key */
    assert_true(guard_key_eq("zk-0123456789abcdefGARBAGE", 19, secret));
}

static void test_entries(void **state)
{
    (void)state;
    static const char *const good_hosts[] = {"zephyr.lan", "192.168.1.20", "::1",
                                             "[::1]",      "my_host",      "LOCALHOST"};
    for (size_t i = 0; i < sizeof good_hosts / sizeof good_hosts[0]; i++)
        if (guard_host_entry_problem(good_hosts[i]))
            fail_msg("host entry %s refused: %s", good_hosts[i],
                     guard_host_entry_problem(good_hosts[i]));
    static const char *const bad_hosts[] = {
        "*",   "zephyr.lan:8080", "http://zephyr.lan", "", "[::1", "[::1]:80", "a b",
        "x/y", "[evil]"};
    for (size_t i = 0; i < sizeof bad_hosts / sizeof bad_hosts[0]; i++)
        if (!guard_host_entry_problem(bad_hosts[i]))
            fail_msg("host entry %s accepted", bad_hosts[i]);
    static const char *const good_origins[] = {"http://localhost:3000", "https://app.example",
                                               "chrome-extension://abcdef", "http://[::1]:3000"};
    for (size_t i = 0; i < sizeof good_origins / sizeof good_origins[0]; i++)
        if (guard_origin_entry_problem(good_origins[i]))
            fail_msg("origin entry %s refused", good_origins[i]);
    static const char *const bad_origins[] = {"*",
                                              "null",
                                              "localhost:3000",
                                              "http://",
                                              "http://a.example/",
                                              "http://a.example/x",
                                              "http://u@a.example",
                                              "://a",
                                              "ht tp://a"};
    for (size_t i = 0; i < sizeof bad_origins / sizeof bad_origins[0]; i++)
        if (!guard_origin_entry_problem(bad_origins[i]))
            fail_msg("origin entry %s accepted", bad_origins[i]);
}

static void test_preflight_headers(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 4096);
    const char *o = "http://localhost:3000";
    const char *rh = "content-type, x-api-key, anthropic-version";
    guard_preflight_headers(&b, o, strlen(o), rh, strlen(rh));
    assert_non_null(strstr(b.data, "Access-Control-Allow-Origin: http://localhost:3000\r\n"));
    assert_non_null(strstr(b.data, "Access-Control-Allow-Headers: content-type, x-api-key, "
                                   "anthropic-version\r\n"));
    assert_non_null(strstr(b.data, "Vary: Origin\r\n"));
    buf_reset(&b);
    /* a value that is not a plain list of names is not echoed */
    const char *odd = "x-a\r\nSet-Cookie: a=b";
    guard_preflight_headers(&b, o, strlen(o), odd, strlen(odd));
    assert_null(strstr(b.data, "Allow-Headers"));
    assert_null(strstr(b.data, "Set-Cookie"));
    buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host_on_loopback),
        cmocka_unit_test(test_host_bind_address_is_accepted),
        cmocka_unit_test(test_host_beyond_loopback_is_not_checked),
        cmocka_unit_test(test_origin),
        cmocka_unit_test(test_key_eq),
        cmocka_unit_test(test_entries),
        cmocka_unit_test(test_preflight_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
