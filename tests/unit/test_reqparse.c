/*
 * Unit tests for reqparse: how a request ends (dispatched or refused with
 * which status) for the framing and header rules, each input fed whole,
 * one byte at a time, and split in two at every offset; all must agree.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "reqparse.h"

#define MAX_BODY 64

struct end {
    int status; /* 0: a request was dispatched */
    size_t body_len;
};

/* Feeds data as a first piece of split bytes (0: none) and then pieces of
 * step bytes.  The parser consumes every byte it is given until a request
 * is DONE or refused, so each piece is fed once. */
static struct end run(const char *data, size_t len, size_t split, size_t step)
{
    struct reqparse rp;
    reqparse_init(&rp, MAX_BODY);
    size_t off = 0;
    while (off < len && rp.phase != REQPARSE_DONE && rp.phase != REQPARSE_ERROR) {
        size_t n = off == 0 && split ? split : step;
        if (n > len - off)
            n = len - off;
        size_t used = reqparse_feed(&rp, data + off, n);
        if (used != n && rp.phase != REQPARSE_DONE && rp.phase != REQPARSE_ERROR)
            fail_msg("%zu of %zu bytes consumed while still parsing", used, n);
        off += n;
    }
    struct end e = {0, 0};
    if (rp.phase == REQPARSE_ERROR)
        e.status = rp.status;
    else if (rp.phase == REQPARSE_DONE)
        e.body_len = rp.req.body.len;
    else
        e.status = -1; /* still waiting for bytes */
    reqparse_release(&rp);
    return e;
}

static void expect(const char *data, int status)
{
    size_t len = strlen(data);
    struct end whole = run(data, len, 0, len);
    if (whole.status != status)
        fail_msg("whole: got %d, want %d for:\n%s", whole.status, status, data);
    struct end bytes = run(data, len, 0, 1);
    if (bytes.status != status || bytes.body_len != whole.body_len)
        fail_msg("byte at a time: got %d, want %d for:\n%s", bytes.status, status, data);
    for (size_t split = 1; split < len; split++) {
        struct end two = run(data, len, split, len);
        if (two.status != status || two.body_len != whole.body_len)
            fail_msg("split at %zu: got %d, want %d for:\n%s", split, two.status, status, data);
    }
}

#define REQ11 "POST /v1/messages HTTP/1.1\r\n"
#define REQ10 "POST /v1/messages HTTP/1.0\r\n"

static void test_host(void **state)
{
    (void)state;
    expect(REQ11 "Host: a\r\nContent-Length: 2\r\n\r\n{}", 0);
    expect(REQ11 "host:\r\nContent-Length: 2\r\n\r\n{}", 0); /* empty is allowed */
    expect(REQ11 "Content-Length: 2\r\n\r\n{}", 400);
    expect(REQ11 "Host: a\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}", 400);
    expect(REQ11 "Host: a\r\nhOST: b\r\n\r\n", 400);
    expect(REQ10 "Content-Length: 2\r\n\r\n{}", 0);
    expect(REQ10 "Host: a\r\nHost: b\r\n\r\n", 400);
    expect("GET / HTTP/1.1\r\n\r\n", 400);
}

static void test_transfer_encoding(void **state)
{
    (void)state;
    expect(REQ11 "Host: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 0);
    expect(REQ11 "Host: a\r\nTransfer-Encoding: CHUNKED \r\n\r\n2\r\n{}\r\n0\r\n\r\n", 0);
    expect(REQ11 "Host: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 501);
    expect(REQ11 "Host: a\r\nTransfer-Encoding: gzip,chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 501);
    expect(REQ11 "Host: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n", 501);
    expect(REQ11 "Host: a\r\nTransfer-Encoding: gzip\r\n\r\n{}", 501);
    /* chunked not last: llhttp refuses it first, as RFC 9112 6.3 says (400) */
    expect(REQ11 "Host: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n{}", 400);
    expect(REQ11 "Host: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "0\r\n\r\n",
           400);
    expect(REQ11 "Host: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "0\r\n\r\n",
           400);
    expect(REQ10 "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
    /* Content-Length with Transfer-Encoding stays a framing error. */
    expect(REQ11 "Host: a\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
           400);
}

static void test_other_limits(void **state)
{
    (void)state;
    expect(REQ11 "Host: a\r\nExpect: teapot\r\nContent-Length: 2\r\n\r\n{}", 417);
    expect(REQ11 "Host: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}", 0);
    expect(REQ11 "Host: a\r\nContent-Length: 65\r\n\r\n", 413);
    expect(REQ11 "Host: a\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n"
                 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n0\r\n\r\n",
           413);
    expect(REQ11 "Host: a\r\nBad Name: v\r\n\r\n", 400);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host),
        cmocka_unit_test(test_transfer_encoding),
        cmocka_unit_test(test_other_limits),
    };
    return cmocka_run_group_tests_name("reqparse", tests, NULL, NULL);
}
