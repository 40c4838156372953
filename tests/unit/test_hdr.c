/*
 * Unit tests for hdr: header name and value tables, hop-by-hop rules
 * including names listed in Connection, credentials, request targets, and
 * endpoint URL split/join tables.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hdr.h"
#include "util.h"

struct bytes_case {
    const char *s;
    size_t len; /* 0: strlen(s) */
    bool ok;
};

static size_t case_len(const struct bytes_case *c)
{
    return c->len ? c->len : strlen(c->s);
}

static void test_name_valid(void **state)
{
    (void)state;
    static const struct bytes_case cases[] = {
        {"content-type", 0, true},
        {"X-Api-Key", 0, true},
        {"anthropic-beta", 0, true},
        {"a", 0, true},
        {"!#$%&'*+-.^_`|~09AZaz", 0, true},
        {"", 0, false},
        {"content-type ", 0, false}, /* space before the colon */
        {" content-type", 0, false},
        {"content type", 0, false},
        {"content-type:", 0, false},
        {"x\ty", 0, false},
        {"x\r\ny", 0, false},
        {"x\0y", 3, false},
        {"x\"y", 0, false},
        {"x(y)", 0, false},
        {"x,y", 0, false},
        {"x/y", 0, false},
        {"x;y", 0, false},
        {"x=y", 0, false},
        {"x@y", 0, false},
        {"x[y]", 0, false},
        {"x{y}", 0, false},
        {"x\\y", 0, false},
        {"x?y", 0, false},
        {"x<y>", 0, false},
        {"\x7f", 0, false},
        {"caf\xc3\xa9", 0, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (hdr_name_valid(cases[i].s, case_len(&cases[i])) != cases[i].ok)
            fail_msg("hdr_name_valid case %zu (\"%s\") should be %d", i, cases[i].s, cases[i].ok);
    }
    /* Every byte outside the token set is refused on its own. */
    for (int c = 0; c < 256; c++) {
        char b = (char)c;
        bool want = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
        if (hdr_name_valid(&b, 1) != want)
            fail_msg("hdr_name_valid byte 0x%02x should be %d", c, want);
    }
}

static void test_value_valid(void **state)
{
    (void)state;
    static const struct bytes_case cases[] = {
        {"", 0, true},
        {"application/json", 0, true},
        {"a\tb", 0, true},
        {"\t", 0, true},
        {"with spaces, commas; and \"quotes\"", 0, true},
        {"caf\xc3\xa9", 0, true}, /* obs-text */
        {"\x80\xff", 0, true},
        {"a\rb", 0, false},
        {"a\nb", 0, false},
        {"a\r\n b", 0, false}, /* folded line */
        {"a\0b", 3, false},
        {"a\x01", 0, false},
        {"\x1b[31m", 0, false},
        {"a\x7f", 0, false},
        {"a\x0b", 0, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (hdr_value_valid(cases[i].s, case_len(&cases[i])) != cases[i].ok)
            fail_msg("hdr_value_valid case %zu should be %d", i, cases[i].ok);
    }
    for (int c = 0; c < 256; c++) {
        char b = (char)c;
        bool want = c == '\t' || (c >= 0x20 && c != 0x7f);
        if (hdr_value_valid(&b, 1) != want)
            fail_msg("hdr_value_valid byte 0x%02x should be %d", c, want);
    }
}

static void test_hop_by_hop(void **state)
{
    (void)state;
    static const struct bytes_case cases[] = {
        {"connection", 0, true},
        {"Connection", 0, true},
        {"KEEP-ALIVE", 0, true},
        {"te", 0, true},
        {"TE", 0, true},
        {"trailer", 0, true},
        {"transfer-encoding", 0, true},
        {"upgrade", 0, true},
        {"proxy-connection", 0, true},
        {"Proxy-Authenticate", 0, true},
        {"proxy-authorization", 0, true},
        {"proxy-anything", 0, true},
        {"proxy-", 0, true},
        {"proxy", 0, false},
        {"proxyx", 0, false},
        {"trailers", 0, false},
        {"tee", 0, false},
        {"t", 0, false},
        {"", 0, false},
        {"content-length", 0, false},
        {"content-type", 0, false},
        {"x-api-key", 0, false},
        {"authorization", 0, false},
        {"anthropic-version", 0, false},
        {"connection\0", 11, false},
        {"te\0", 3, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (hdr_is_hop_by_hop(cases[i].s, case_len(&cases[i])) != cases[i].ok)
            fail_msg("hdr_is_hop_by_hop case %zu (\"%s\") should be %d", i, cases[i].s,
                     cases[i].ok);
    }
    /* Only the given length counts: a prefix of a longer buffer. */
    assert_true(hdr_is_hop_by_hop("te-not", 2));
    assert_false(hdr_is_hop_by_hop("connection", 4));
}

static void test_connection_lists(void **state)
{
    (void)state;
    static const struct {
        const char *conn;
        const char *name;
        bool ok;
    } cases[] = {
        {"close", "close", true},
        {"keep-alive, X-Foo", "x-foo", true},
        {"keep-alive,X-Foo", "X-FOO", true},
        {"  x-foo  ", "x-foo", true},
        {"\tx-foo\t,\tx-bar", "x-bar", true},
        {",,x-foo,,", "x-foo", true},
        {"x-foo , x-bar , x-baz", "x-baz", true},
        {"x-foo , x-bar , x-baz", "x-bar", true},
        {"x-foobar", "x-foo", false},
        {"x-fo", "x-foo", false},
        {"x-foo", "x-fo", false},
        {"x-f oo", "x-foo", false},
        {"", "x-foo", false},
        {",", "x-foo", false},
        {" , ", "x-foo", false},
        {"x-foo", "", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bool got = hdr_connection_lists(cases[i].conn, strlen(cases[i].conn), cases[i].name,
                                        strlen(cases[i].name));
        if (got != cases[i].ok)
            fail_msg("hdr_connection_lists(\"%s\", \"%s\") should be %d", cases[i].conn,
                     cases[i].name, cases[i].ok);
    }
    /* Bytes past conn_len are not part of the list. */
    assert_false(hdr_connection_lists("x-a, x-foo", 4, "x-foo", 5));
    assert_true(hdr_connection_lists("x-a, x-foo", 10, "x-foo", 5));
    /* A NUL inside an item does not end the comparison early. */
    assert_false(hdr_connection_lists("a\0b", 3, "a\0c", 3));
    assert_true(hdr_connection_lists("a\0b", 3, "A\0B", 3));
}

static void test_credential(void **state)
{
    (void)state;
    assert_true(hdr_is_credential("x-api-key", 9));
    assert_true(hdr_is_credential("X-API-Key", 9));
    assert_true(hdr_is_credential("authorization", 13));
    assert_true(hdr_is_credential("Authorization", 13));
    assert_false(hdr_is_credential("x-api-keys", 10));
    assert_false(hdr_is_credential("x-api-key", 8));
    assert_false(hdr_is_credential("authorizatio", 12));
    assert_false(hdr_is_credential("proxy-authorization", 19));
    assert_false(hdr_is_credential("", 0));
    assert_false(hdr_is_credential("anthropic-version", 17));
}

static void test_target_valid(void **state)
{
    (void)state;
    static const struct bytes_case cases[] = {
        {"/", 0, true},
        {"/v1/messages", 0, true},
        {"/v1/messages?beta=true", 0, true},
        {"/v1/messages/count_tokens?beta=true&x=%20y", 0, true},
        {"//double", 0, true},
        {"/a/../b/./c", 0, true},
        {"/~user/!$&'()*+,;=:@", 0, true},
        {"", 0, false},
        {"*", 0, false},
        {"v1/messages", 0, false},
        {"http://x.com/v1/messages", 0, false},
        {"x.com:443", 0, false},
        {"/v1/messages#frag", 0, false},
        {"/v1/mess ages", 0, false},
        {"/v1/messages\t", 0, false},
        {"/v1/messages\r\n", 0, false},
        {"/v1\0/messages", 12, false},
        {"/v1/\x7f", 0, false},
        {"/caf\xc3\xa9", 0, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (hdr_target_valid(cases[i].s, case_len(&cases[i])) != cases[i].ok)
            fail_msg("hdr_target_valid case %zu (\"%s\") should be %d", i, cases[i].s, cases[i].ok);
    }
}

static void test_url_split(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        int rc;
        enum hdr_scheme scheme;
        const char *host;
        unsigned port;
        bool port_explicit;
        const char *prefix;
    } cases[] = {
        {"https://api.anthropic.com", 0, HDR_SCHEME_HTTPS, "api.anthropic.com", 443, false, ""},
        {"https://api.anthropic.com/", 0, HDR_SCHEME_HTTPS, "api.anthropic.com", 443, false, ""},
        {"https://api.anthropic.com//", 0, HDR_SCHEME_HTTPS, "api.anthropic.com", 443, false, ""},
        {"http://h", 0, HDR_SCHEME_HTTP, "h", 80, false, ""},
        {"http://h:81", 0, HDR_SCHEME_HTTP, "h", 81, true, ""},
        {"http://h:80", 0, HDR_SCHEME_HTTP, "h", 80, true, ""},
        {"http://127.0.0.1:8080/", 0, HDR_SCHEME_HTTP, "127.0.0.1", 8080, true, ""},
        {"https://x.com/api", 0, HDR_SCHEME_HTTPS, "x.com", 443, false, "/api"},
        {"https://x.com/api/", 0, HDR_SCHEME_HTTPS, "x.com", 443, false, "/api"},
        {"https://x.com:8443/a/b/c/", 0, HDR_SCHEME_HTTPS, "x.com", 8443, true, "/a/b/c"},
        {"https://x.com/a%20b/./../c", 0, HDR_SCHEME_HTTPS, "x.com", 443, false, "/a%20b/./../c"},
        {"https://x.com/a//b//", 0, HDR_SCHEME_HTTPS, "x.com", 443, false, "/a//b"},
        {"HTTPS://X.com", 0, HDR_SCHEME_HTTPS, "X.com", 443, false, ""},
        {"http://[::1]", 0, HDR_SCHEME_HTTP, "[::1]", 80, false, ""},
        {"http://[::1]:8080/p/", 0, HDR_SCHEME_HTTP, "[::1]", 8080, true, "/p"},
        {"https://[2001:db8::1]/", 0, HDR_SCHEME_HTTPS, "[2001:db8::1]", 443, false, ""},
        {"https://[::ffff:192.0.2.1]:1", 0, HDR_SCHEME_HTTPS, "[::ffff:192.0.2.1]", 1, true, ""},
        {"http://h:65535", 0, HDR_SCHEME_HTTP, "h", 65535, true, ""},
        {"http://h:00081", 0, HDR_SCHEME_HTTP, "h", 81, true, ""},
        {"http://my_host-1.local", 0, HDR_SCHEME_HTTP, "my_host-1.local", 80, false, ""},
        /* Refused. */
        {"", -1, 0, NULL, 0, false, NULL},
        {"api.anthropic.com", -1, 0, NULL, 0, false, NULL},
        {"ftp://x.com", -1, 0, NULL, 0, false, NULL},
        {"ws://x.com", -1, 0, NULL, 0, false, NULL},
        {"httpx://x.com", -1, 0, NULL, 0, false, NULL},
        {"http:/x.com", -1, 0, NULL, 0, false, NULL},
        {"http//x.com", -1, 0, NULL, 0, false, NULL},
        {"http://", -1, 0, NULL, 0, false, NULL},
        {"http:///p", -1, 0, NULL, 0, false, NULL},
        {"http://:80", -1, 0, NULL, 0, false, NULL},
        {"http://h:", -1, 0, NULL, 0, false, NULL},
        {"http://h:/p", -1, 0, NULL, 0, false, NULL},
        {"http://h:0", -1, 0, NULL, 0, false, NULL},
        {"http://h:65536", -1, 0, NULL, 0, false, NULL},
        {"http://h:123456", -1, 0, NULL, 0, false, NULL},
        {"http://h:8x", -1, 0, NULL, 0, false, NULL},
        {"http://h:-1", -1, 0, NULL, 0, false, NULL},
        {"http://user:pw@h", -1, 0, NULL, 0, false, NULL},
        {"http://h/p?q=1", -1, 0, NULL, 0, false, NULL},
        {"http://h?q=1", -1, 0, NULL, 0, false, NULL},
        {"http://h/p#f", -1, 0, NULL, 0, false, NULL},
        {"http://h/p q", -1, 0, NULL, 0, false, NULL},
        {"http://h /p", -1, 0, NULL, 0, false, NULL},
        {" http://h", -1, 0, NULL, 0, false, NULL},
        {"http://h/\r\n", -1, 0, NULL, 0, false, NULL},
        {"http://h/caf\xc3\xa9", -1, 0, NULL, 0, false, NULL},
        {"http://h\\p", -1, 0, NULL, 0, false, NULL},
        {"http://::1/", -1, 0, NULL, 0, false, NULL},
        {"http://[::1", -1, 0, NULL, 0, false, NULL},
        {"http://[]", -1, 0, NULL, 0, false, NULL},
        {"http://[nothex]/", -1, 0, NULL, 0, false, NULL},
        {"http://[::1]x", -1, 0, NULL, 0, false, NULL},
        {"http://[fe80::1%25eth0]/", -1, 0, NULL, 0, false, NULL},
        {"http://[127.0.0.1]/", -1, 0, NULL, 0, false, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct hdr_url u;
        int rc = hdr_url_split(cases[i].url, &u);
        if (rc != cases[i].rc)
            fail_msg("hdr_url_split(\"%s\") returned %d, want %d", cases[i].url, rc, cases[i].rc);
        if (rc != 0)
            continue;
        assert_int_equal(u.scheme, cases[i].scheme);
        assert_int_equal(u.host_len, strlen(cases[i].host));
        if (memcmp(u.host, cases[i].host, u.host_len) != 0)
            fail_msg("hdr_url_split(\"%s\") host %.*s", cases[i].url, (int)u.host_len, u.host);
        assert_int_equal(u.port, cases[i].port);
        assert_int_equal(u.port_explicit, cases[i].port_explicit);
        if (u.prefix_len != strlen(cases[i].prefix) ||
            memcmp(u.prefix, cases[i].prefix, u.prefix_len) != 0)
            fail_msg("hdr_url_split(\"%s\") prefix \"%.*s\", want \"%s\"", cases[i].url,
                     (int)u.prefix_len, u.prefix, cases[i].prefix);
    }
    /* A host name longer than DNS allows is refused. */
    char longurl[300] = "http://";
    memset(longurl + 7, 'a', 254);
    longurl[7 + 254] = '\0';
    struct hdr_url u;
    assert_int_equal(hdr_url_split(longurl, &u), -1);
    longurl[7 + 253] = '\0';
    assert_int_equal(hdr_url_split(longurl, &u), 0);
}

static void test_url_join(void **state)
{
    (void)state;
    static const struct {
        const char *endpoint;
        const char *target;
        const char *want; /* NULL: refused */
    } cases[] = {
        {"https://x.com/api/", "/v1/messages?beta=true", "https://x.com/api/v1/messages?beta=true"},
        {"https://x.com/api", "/v1/messages?beta=true", "https://x.com/api/v1/messages?beta=true"},
        {"https://x.com/api//", "/v1/messages", "https://x.com/api/v1/messages"},
        {"http://h:81", "/", "http://h:81/"},
        {"http://h:81/", "/", "http://h:81/"},
        {"https://api.anthropic.com", "/v1/messages", "https://api.anthropic.com/v1/messages"},
        {"https://api.anthropic.com/", "/v1/messages", "https://api.anthropic.com/v1/messages"},
        {"HTTPS://X.com:443", "/v1/messages", "HTTPS://X.com:443/v1/messages"},
        {"http://[::1]:8080/p/", "/v1/x?a=%2F", "http://[::1]:8080/p/v1/x?a=%2F"},
        {"https://x.com/a%2Fb/", "/v1/../messages", "https://x.com/a%2Fb/v1/../messages"},
        {"https://x.com", "//v1", "https://x.com//v1"},
        {"https://x.com", "/?", "https://x.com/?"},
        /* Refused. */
        {"https://x.com/api/", "v1/messages", NULL},
        {"https://x.com/api/", "", NULL},
        {"https://x.com/api/", "*", NULL},
        {"https://x.com/api/", "http://y.com/v1/messages", NULL},
        {"https://x.com/api/", "/v1/messages#f", NULL},
        {"https://x.com/api/", "/v1/mess ages", NULL},
        {"https://x.com/api/", "/v1/messages\r\nX-Injected: 1", NULL},
        {"ftp://x.com/api/", "/v1/messages", NULL},
        {"https://x.com/api?x=1", "/v1/messages", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = hdr_url_join(cases[i].endpoint, cases[i].target);
        if (cases[i].want == NULL) {
            if (got != NULL)
                fail_msg("hdr_url_join(\"%s\", \"%s\") = \"%s\", want NULL", cases[i].endpoint,
                         cases[i].target, got);
            continue;
        }
        if (got == NULL)
            fail_msg("hdr_url_join(\"%s\", \"%s\") = NULL", cases[i].endpoint, cases[i].target);
        assert_string_equal(got, cases[i].want);
        /* The result's scheme, host and port are the endpoint's. */
        struct hdr_url a, b;
        char *q = strchr(got, '?');
        if (q)
            *q = '\0';
        assert_int_equal(hdr_url_split(cases[i].endpoint, &a), 0);
        assert_int_equal(hdr_url_split(got, &b), 0);
        assert_int_equal(a.scheme, b.scheme);
        assert_int_equal(a.port, b.port);
        assert_int_equal(a.host_len, b.host_len);
        assert_memory_equal(a.host, b.host, a.host_len);
        free(got);
    }
}

static void test_content_length_parse(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t len;     /* 0: strlen(s) */
        long long want; /* -1: refused */
    } cases[] = {
        {"0", 0, 0},
        {"330", 0, 330},
        {"000012", 0, 12},
        {"999999999999999999", 0, 999999999999999999LL},
        {"1000000000000000000", 0, -1}, /* 19 digits */
        {"", 0, -1},
        {"+5", 0, -1},
        {"-1", 0, -1},
        {" 5", 0, -1},
        {"5 ", 0, -1},
        {"5,5", 0, -1},
        {"0x10", 0, -1},
        {"5\t", 0, -1},
        /* A view: the bytes after len are the next record or stale bytes,
         * never part of the value (the 330 that went out as 3300). */
        {"3300", 3, 330},
        {"12345", 2, 12},
        {"1\0"
         "2",
         1, 1},
        {"1\0"
         "2",
         3, -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].s);
        /* An exact-size heap copy, so that ASan sees a read past len. */
        char *v = malloc(len ? len : 1);
        memcpy(v, cases[i].s, len);
        long long got = -7;
        int rc = hdr_content_length_parse(v, len, &got);
        if (cases[i].want < 0) {
            if (rc != -1)
                fail_msg("case %zu (%.*s): accepted as %lld", i, (int)len, cases[i].s, got);
        } else {
            if (rc != 0 || got != cases[i].want)
                fail_msg("case %zu (%.*s): rc %d, got %lld, want %lld", i, (int)len, cases[i].s, rc,
                         got, cases[i].want);
        }
        free(v);
    }
}

/* "name: value\n" lines, one per field, into views (the lines stay in
 * text, which must outlive the fields). */
static size_t fields_of(char *text, struct hdr_field *f, size_t max)
{
    size_t n = 0;
    for (char *line = strtok(text, "\n"); line && n < max; line = strtok(NULL, "\n")) {
        char *colon = strchr(line, ':');
        assert_non_null(colon);
        f[n].name = line;
        f[n].name_len = (size_t)(colon - line);
        f[n].value = colon + 1 + (colon[1] == ' ');
        f[n].value_len = strlen(f[n].value);
        n++;
    }
    return n;
}

static void test_resp_filter(void **state)
{
    (void)state;
    static const struct {
        int status;
        const char *fields;
        int rc;
        const char *out; /* the forwarded lines, for rc 0 */
        long long length;
        bool chunked;
        const char *why; /* a word of the refusal, for rc -1 */
    } cases[] = {
        {200, "content-type: application/json\ncontent-length: 330\n", 0,
         "content-type: application/json\r\n", 330, false, NULL},
        {200, "Transfer-Encoding: chunked\nx-a: 1\n", 0, "x-a: 1\r\n", -1, true, NULL},
        {200, "transfer-encoding: CHUNKED\n", 0, "", -1, true, NULL},
        {204, "x-a: 1\n", 0, "x-a: 1\r\n", -1, false, NULL},
        /* hop-by-hop, Connection-listed and the proxy's own names go */
        {200,
         "connection: x-secret, keep-alive\nx-secret: s\nkeep-alive: 5\nx-kept: k\n"
         "proxy-authenticate: Basic\nupgrade: h2c\ntrailer: x\nx-zephyr-endpoint: evil\n",
         0, "x-kept: k\r\n", -1, false, NULL},
        {200, "x-secret: s\nConnection: close\nCONNECTION: X-Secret\n", 0, "", -1, false, NULL},
        {999, "", 0, "", -1, false, NULL},
        /* refused */
        {101, "upgrade: websocket\n", -1, NULL, 0, false, "101"},
        {100, "", -1, NULL, 0, false, "final"},
        {199, "", -1, NULL, 0, false, "final"},
        {1000, "", -1, NULL, 0, false, "final"},
        {200, "content-length: 5\ncontent-length: 5\n", -1, NULL, 0, false, "more than one"},
        {200, "content-length: 5\ncontent-length: 3\n", -1, NULL, 0, false, "more than one"},
        {200, "content-length: 5, 5\n", -1, NULL, 0, false, "malformed"},
        {200, "content-length: +5\n", -1, NULL, 0, false, "malformed"},
        {200, "content-length:\n", -1, NULL, 0, false, "malformed"},
        {200, "content-length: 5\ntransfer-encoding: chunked\n", -1, NULL, 0, false, "both"},
        {200, "transfer-encoding: chunked\ncontent-length: 5\n", -1, NULL, 0, false, "both"},
        {200, "transfer-encoding: gzip, chunked\n", -1, NULL, 0, false, "other than chunked"},
        {200, "transfer-encoding: identity\n", -1, NULL, 0, false, "other than chunked"},
        {200, "transfer-encoding: chunked\ntransfer-encoding: chunked\n", -1, NULL, 0, false,
         "more than one"},
        {200, "bad name: 1\n", -1, NULL, 0, false, "malformed header"},
        {200, "x-a: a\rb\n", -1, NULL, 0, false, "malformed header"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *text = strdup(cases[i].fields);
        struct hdr_field f[16];
        size_t n = fields_of(text, f, 16);
        struct buf out;
        buf_init(&out, 4096);
        struct hdr_resp r;
        int rc = hdr_resp_filter(cases[i].status, f, n, &out, &r);
        if (rc != cases[i].rc)
            fail_msg("case %zu: rc %d, want %d (%s)", i, rc, cases[i].rc, r.why ? r.why : "");
        if (rc == 0) {
            assert_string_equal(out.data ? out.data : "", cases[i].out);
            assert_int_equal(r.content_length, cases[i].length);
            assert_int_equal(r.chunked, cases[i].chunked);
            assert_null(r.why);
        } else {
            assert_non_null(r.why);
            if (!strstr(r.why, cases[i].why))
                fail_msg("case %zu: why \"%s\", want \"%s\"", i, r.why, cases[i].why);
        }
        buf_release(&out);
        free(text);
    }
}

static void test_resp_filter_order_and_kind(void **state)
{
    (void)state;
    /* The decision does not depend on where Content-Length stands, and the
     * content type is read from any position. */
    static const char *const heads[] = {
        "content-length: 42\ncontent-type: text/event-stream\nx-a: 1\n",
        "x-a: 1\ncontent-type: text/event-stream\ncontent-length: 42\n",
        "content-type: text/event-stream\ncontent-length: 42\nx-a: 1\n",
    };
    for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++) {
        char *text = strdup(heads[i]);
        struct hdr_field f[8];
        size_t n = fields_of(text, f, 8);
        struct buf out;
        buf_init(&out, 4096);
        struct hdr_resp r;
        assert_int_equal(hdr_resp_filter(200, f, n, &out, &r), 0);
        assert_int_equal(r.content_length, 42);
        assert_true(r.is_sse);
        assert_false(r.is_json);
        assert_null(strstr(out.data, "ontent-length"));
        buf_release(&out);
        free(text);
    }
    /* A head larger than the caller's cap is refused, not cut. */
    char *text = strdup("x-a: 0123456789\nx-b: 0123456789\n");
    struct hdr_field f[4];
    size_t n = fields_of(text, f, 4);
    struct buf out;
    buf_init(&out, 20);
    struct hdr_resp r;
    assert_int_equal(hdr_resp_filter(200, f, n, &out, &r), -1);
    assert_non_null(strstr(r.why, "too large"));
    buf_release(&out);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_valid),
        cmocka_unit_test(test_value_valid),
        cmocka_unit_test(test_hop_by_hop),
        cmocka_unit_test(test_connection_lists),
        cmocka_unit_test(test_credential),
        cmocka_unit_test(test_target_valid),
        cmocka_unit_test(test_url_split),
        cmocka_unit_test(test_url_join),
        cmocka_unit_test(test_content_length_parse),
        cmocka_unit_test(test_resp_filter),
        cmocka_unit_test(test_resp_filter_order_and_kind),
    };
    return cmocka_run_group_tests_name("hdr", tests, NULL, NULL);
}
