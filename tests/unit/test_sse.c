/*
 * Unit tests for sse: a realistic Anthropic stream fed whole, one byte at a
 * time and split at every offset must give the same events and end offsets;
 * the same with CRLF and lone-CR line endings; comments and odd fields;
 * oversized events; a callback that stops the scan.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sse.h"
#include "util.h"

#define MAX_EVENTS 64

/* Everything the callback saw: a byte-exact trace for comparing runs, and
 * the first MAX_EVENTS events for direct assertions. */
struct recorder {
    struct buf trace;
    size_t n;
    char name[MAX_EVENTS][32];
    char *data[MAX_EVENTS];
    uint64_t end[MAX_EVENTS];
    size_t stop_at; /* 1-based event number to stop at; 0 = never */
    int stop_rc;
};

static void rec_init(struct recorder *r)
{
    memset(r, 0, sizeof *r);
    buf_init(&r->trace, 1 << 24);
}

static void rec_release(struct recorder *r)
{
    buf_release(&r->trace);
    for (size_t i = 0; i < r->n && i < MAX_EVENTS; i++)
        free(r->data[i]);
}

static int on_event(void *ud, const struct sse_event *ev)
{
    struct recorder *r = ud;
    assert_non_null(ev->name);
    assert_non_null(ev->data);
    assert_int_equal(ev->data[ev->data_len], '\0');
    assert_int_equal(buf_appendf(&r->trace, "%zu:", ev->name_len), 0);
    assert_int_equal(buf_append(&r->trace, ev->name, ev->name_len), 0);
    assert_int_equal(buf_appendf(&r->trace, "|%zu:", ev->data_len), 0);
    assert_int_equal(buf_append(&r->trace, ev->data, ev->data_len), 0);
    assert_int_equal(buf_appendf(&r->trace, "|%llu\n", (unsigned long long)ev->end_offset), 0);
    if (r->n < MAX_EVENTS) {
        snprintf(r->name[r->n], sizeof r->name[r->n], "%.*s", (int)ev->name_len, ev->name);
        r->data[r->n] = xstrndup(ev->data, ev->data_len);
        r->end[r->n] = ev->end_offset;
    }
    r->n++;
    if (r->stop_at && r->n == r->stop_at)
        return r->stop_rc;
    return 0;
}

/* Feeds s in pieces at the given cut points (ascending), then finishes. */
static void feed_cuts(struct sse_scanner *s, const char *p, size_t n, const size_t *cuts,
                      size_t ncuts, struct recorder *r)
{
    size_t at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : n;
        assert_int_equal(sse_feed(s, p + at, to - at, on_event, r), 0);
        at = to;
    }
    assert_int_equal(s->offset, n);
    assert_int_equal(sse_finish(s, on_event, r), 0);
}

static void run_whole(const char *p, size_t n, size_t max, struct recorder *r, uint64_t *oversized)
{
    struct sse_scanner s;
    sse_init(&s, max);
    feed_cuts(&s, p, n, NULL, 0, r);
    assert_int_equal(s.events, r->n);
    if (oversized)
        *oversized = s.oversized;
    sse_release(&s);
}

/* Byte at a time, every two-way split, and a few seeded random chunkings
 * must all reproduce the whole-input trace. */
static void check_splits(const char *p, size_t n, size_t max, const struct recorder *whole,
                         uint64_t whole_oversized)
{
    struct sse_scanner s;
    struct recorder r;

    rec_init(&r);
    sse_init(&s, max);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(sse_feed(&s, p + i, 1, on_event, &r), 0);
    assert_int_equal(sse_finish(&s, on_event, &r), 0);
    assert_int_equal(r.trace.len, whole->trace.len);
    assert_memory_equal(r.trace.data, whole->trace.data, r.trace.len);
    assert_int_equal(s.oversized, whole_oversized);
    sse_release(&s);
    rec_release(&r);

    for (size_t cut = 0; cut <= n; cut++) {
        rec_init(&r);
        sse_init(&s, max);
        feed_cuts(&s, p, n, &cut, 1, &r);
        if (r.trace.len != whole->trace.len ||
            memcmp(r.trace.data, whole->trace.data, r.trace.len) != 0)
            fail_msg("split at offset %zu of %zu changed the events", cut, n);
        assert_int_equal(s.oversized, whole_oversized);
        sse_release(&s);
        rec_release(&r);
    }

    unsigned seed = 12345;
    for (int round = 0; round < 20; round++) {
        size_t cuts[4096], ncuts = 0, at = 0;
        while (ncuts < 4096) {
            seed = seed * 1103515245u + 12345u;
            at += 1 + (seed >> 16) % 17;
            if (at >= n)
                break;
            cuts[ncuts++] = at;
        }
        rec_init(&r);
        sse_init(&s, max);
        feed_cuts(&s, p, n, cuts, ncuts, &r);
        assert_int_equal(r.trace.len, whole->trace.len);
        assert_memory_equal(r.trace.data, whole->trace.data, r.trace.len);
        sse_release(&s);
        rec_release(&r);
    }
}

/* Returns a malloc'd copy of s with every "\n" replaced by eol. */
static char *with_eol(const char *s, const char *eol, size_t *outlen)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    for (const char *p = s; *p; p++) {
        if (*p == '\n')
            assert_int_equal(buf_append(&b, eol, strlen(eol)), 0);
        else
            assert_int_equal(buf_append(&b, p, 1), 0);
    }
    *outlen = b.len;
    return b.data;
}

static const char *const anthropic_names[] = {
    "message_start",       "content_block_start", "ping",
    "content_block_delta", "content_block_delta", "content_block_delta",
    "content_block_delta", "content_block_stop",  "message_delta",
    "message_stop",
};
#define ANTHROPIC_EVENTS (sizeof anthropic_names / sizeof anthropic_names[0])

static const char anthropic_stream[] =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\","
    "\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-20250514\","
    "\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,"
    "\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":2048,\"output_tokens\":2}}}\n"
    "\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n"
    "\n"
    "event: ping\n"
    "data: {\"type\": \"ping\"}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"! How\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\" can I help\\n\\nyou today?\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" \\u00e9\"}}\n"
    "\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n"
    "\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},"
    "\"usage\":{\"output_tokens\":15}}\n"
    "\n"
    "event: message_stop\n"
    "data: {\"type\":\"message_stop\"}\n"
    "\n";

/* Checks names, data (the text after "data: " in the LF stream) and that
 * each end offset is just after an occurrence of blank, in order. */
static void check_anthropic(const struct recorder *r, const char *p, size_t n, const char *blank)
{
    assert_int_equal(r->n, ANTHROPIC_EVENTS);
    const char *lf = anthropic_stream;
    size_t search = 0;
    for (size_t i = 0; i < ANTHROPIC_EVENTS; i++) {
        assert_string_equal(r->name[i], anthropic_names[i]);
        lf = strstr(lf, "data: ") + 6;
        size_t dlen = strcspn(lf, "\n");
        assert_int_equal(strlen(r->data[i]), dlen);
        assert_memory_equal(r->data[i], lf, dlen);
        const char *hit = memmem(p + search, n - search, blank, strlen(blank));
        assert_non_null(hit);
        search = (size_t)(hit - p) + strlen(blank);
        assert_int_equal(r->end[i], search);
    }
    assert_int_equal(r->end[ANTHROPIC_EVENTS - 1], n);
}

static void test_anthropic_lf(void **state)
{
    (void)state;
    size_t n = strlen(anthropic_stream);
    struct recorder r;
    rec_init(&r);
    run_whole(anthropic_stream, n, 1 << 16, &r, NULL);
    check_anthropic(&r, anthropic_stream, n, "\n\n");
    check_splits(anthropic_stream, n, 1 << 16, &r, 0);
    rec_release(&r);
}

static void test_anthropic_crlf(void **state)
{
    (void)state;
    size_t n;
    char *p = with_eol(anthropic_stream, "\r\n", &n);
    struct recorder r;
    rec_init(&r);
    run_whole(p, n, 1 << 16, &r, NULL);
    check_anthropic(&r, p, n, "\r\n\r\n");
    check_splits(p, n, 1 << 16, &r, 0);
    rec_release(&r);
    free(p);
}

static void test_anthropic_cr(void **state)
{
    (void)state;
    size_t n;
    char *p = with_eol(anthropic_stream, "\r", &n);
    struct recorder r;
    rec_init(&r);
    run_whole(p, n, 1 << 16, &r, NULL);
    check_anthropic(&r, p, n, "\r\r");
    check_splits(p, n, 1 << 16, &r, 0);
    rec_release(&r);

    /* A blank line that is a lone CR at the end of what has arrived waits
     * for the next byte (it could be the LF of a CRLF); sse_finish()
     * settles it at end of stream. */
    struct sse_scanner s;
    rec_init(&r);
    sse_init(&s, 1 << 16);
    assert_int_equal(sse_feed(&s, p, n, on_event, &r), 0);
    assert_int_equal(r.n, ANTHROPIC_EVENTS - 1);
    assert_int_equal(sse_finish(&s, on_event, &r), 0);
    assert_int_equal(r.n, ANTHROPIC_EVENTS);
    assert_int_equal(r.end[ANTHROPIC_EVENTS - 1], n);
    sse_release(&s);
    rec_release(&r);
    free(p);
}

/* Mixed line endings in one stream, as a sloppy upstream might send. */
static void test_mixed_eol(void **state)
{
    (void)state;
    static const char in[] = "data: a\r\n\r"
                             "data: b\r\n\n"
                             "data: c\n\r\n"
                             "data: d\r\r\n"
                             "data: e\n\r"
                             "data: f\n\n";
    size_t n = sizeof in - 1;
    struct recorder r;
    rec_init(&r);
    run_whole(in, n, 1024, &r, NULL);
    assert_int_equal(r.n, 6);
    static const char *const want[] = {"a", "b", "c", "d", "e", "f"};
    static const uint64_t ends[] = {10, 20, 30, 40, 49, 58};
    for (size_t i = 0; i < 6; i++) {
        assert_string_equal(r.name[i], "message");
        assert_string_equal(r.data[i], want[i]);
        assert_int_equal(r.end[i], ends[i]);
    }
    check_splits(in, n, 1024, &r, 0);
    rec_release(&r);
}

static void test_fields(void **state)
{
    (void)state;
    static const char in[] = ": this is a comment\n"
                             ":\n"
                             "data: first\n"
                             ": comment inside an event\n"
                             "data:second\n"
                             "data:  third has one leading space left\n"
                             "data\n"
                             "data:\n"
                             "id: 42\n"
                             "retry: 1000\n"
                             "foo: bar\n"
                             "Data: wrong case is an unknown field\n"
                             "dataxxxxxxxxxxxxxxxx: long names are unknown fields\n"
                             "event: one\n"
                             "event:two\n"
                             "\n"
                             /* No data: not dispatched, and its name must not leak. */
                             "event: lonely\n"
                             "\n"
                             "\n"
                             "\n"
                             "data: after blanks\n"
                             "\n"
                             "event:\n"
                             "data: empty event name means message\n"
                             "\n"
                             "event\n"
                             "data\n"
                             "\n"
                             "data:\x01 controls\x7f and \xc3\xa9 pass through\n"
                             "\n"
                             ": a trailing event without its blank line is not dispatched\n"
                             "data: incomplete\n";
    size_t n = sizeof in - 1;
    struct recorder r;
    rec_init(&r);
    run_whole(in, n, 1024, &r, NULL);
    assert_int_equal(r.n, 5);
    assert_string_equal(r.name[0], "two");
    assert_string_equal(r.data[0], "first\nsecond\n third has one leading space left\n\n");
    assert_string_equal(r.name[1], "message");
    assert_string_equal(r.data[1], "after blanks");
    assert_string_equal(r.name[2], "message");
    assert_string_equal(r.data[2], "empty event name means message");
    assert_string_equal(r.name[3], "message");
    assert_string_equal(r.data[3], "");
    assert_string_equal(r.data[4], "\x01 controls\x7f and \xc3\xa9 pass through");
    for (size_t i = 0; i < r.n; i++)
        assert_true(r.end[i] <= n && in[r.end[i] - 1] == '\n' && in[r.end[i] - 2] == '\n');
    check_splits(in, n, 1024, &r, 0);
    rec_release(&r);
}

static void test_nul_in_data(void **state)
{
    (void)state;
    static const char in[] = "event: e\0x\ndata: a\0b\n\n";
    size_t n = sizeof in - 1;
    struct recorder r;
    rec_init(&r);
    run_whole(in, n, 1024, &r, NULL);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.trace.len, 15);
    assert_memory_equal(r.trace.data, "3:e\0x|3:a\0b|22\n", 15);
    check_splits(in, n, 1024, &r, 0);
    rec_release(&r);
}

static void test_oversized(void **state)
{
    (void)state;
    /* Cap 16: name + data (with the '\n' between lines) may reach 16. */
    static const char in[] = "event: abcdef\ndata: 0123456789\n\n"  /* 6 + 10 = 16: kept */
                             "event: abcdefg\ndata: 0123456789\n\n" /* 17: skipped */
                             "data: 01234567\ndata: 0123456\n\n"    /* 8 + 1 + 7 = 16: kept */
                             "data: 01234567\ndata: 01234567\n\n"   /* 17: skipped */
                             "data: this line alone is far longer than sixteen bytes\n"
                             "event: big\n\n"                            /* skipped */
                             "event: event-name-longer-than-the-cap\n\n" /* skipped, no data */
                             "data: small\n\n";
    size_t n = sizeof in - 1;
    struct recorder r;
    uint64_t oversized;
    rec_init(&r);
    run_whole(in, n, 16, &r, &oversized);
    assert_int_equal(r.n, 3);
    assert_int_equal(oversized, 4);
    assert_string_equal(r.name[0], "abcdef");
    assert_string_equal(r.data[0], "0123456789");
    assert_string_equal(r.data[1], "01234567\n0123456");
    assert_string_equal(r.name[2], "message");
    assert_string_equal(r.data[2], "small");
    assert_int_equal(r.end[2], n);
    check_splits(in, n, 16, &r, 4);
    rec_release(&r);

    /* A huge event never grows the buffers past the cap. */
    struct sse_scanner s;
    rec_init(&r);
    sse_init(&s, 1000);
    assert_int_equal(sse_feed(&s, "data: ", 6, on_event, &r), 0);
    char chunk[100];
    memset(chunk, 'x', sizeof chunk);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(sse_feed(&s, chunk, sizeof chunk, on_event, &r), 0);
    assert_true(s.data.len <= 1000);
    assert_true(s.data.size <= 2048);
    assert_int_equal(sse_feed(&s, "\n\ndata: ok\n\n", 12, on_event, &r), 0);
    assert_int_equal(s.oversized, 1);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.data[0], "ok");
    assert_int_equal(r.end[0], 6 + 1000 * sizeof chunk + 12);
    sse_release(&s);
    rec_release(&r);

    /* A cap of 0 keeps only events with empty data and the default name. */
    rec_init(&r);
    run_whole("data\n\ndata: x\n\n", 15, 0, &r, &oversized);
    assert_int_equal(r.n, 1);
    assert_int_equal(oversized, 1);
    rec_release(&r);
}

/* A callback that returns non-zero stops the scan right after its event;
 * feeding the rest then gives what an uninterrupted scan gives. */
static void check_stop(const char *p, size_t n)
{
    struct recorder whole;
    rec_init(&whole);
    run_whole(p, n, 1 << 16, &whole, NULL);

    for (size_t stop = 1; stop <= whole.n; stop++) {
        struct sse_scanner s;
        struct recorder r;
        rec_init(&r);
        r.stop_at = stop;
        r.stop_rc = -7;
        sse_init(&s, 1 << 16);
        size_t at = 0;
        int rc;
        while ((rc = sse_feed(&s, p + at, n - at, on_event, &r)) != 0) {
            assert_int_equal(rc, -7);
            assert_int_equal(s.offset, r.end[r.n - 1]);
            at = (size_t)s.offset;
            r.stop_at = 0;
        }
        rc = sse_finish(&s, on_event, &r);
        if (rc != 0) {
            assert_int_equal(rc, -7);
            assert_int_equal(r.n, whole.n);
        }
        assert_int_equal(r.trace.len, whole.trace.len);
        assert_memory_equal(r.trace.data, whole.trace.data, r.trace.len);
        sse_release(&s);
        rec_release(&r);
    }
    rec_release(&whole);
}

static void test_callback_stops(void **state)
{
    (void)state;
    check_stop(anthropic_stream, strlen(anthropic_stream));
    size_t n;
    char *p = with_eol(anthropic_stream, "\r", &n);
    check_stop(p, n);
    free(p);
    p = with_eol(anthropic_stream, "\r\n", &n);
    check_stop(p, n);
    free(p);
}

static void test_reinit(void **state)
{
    (void)state;
    struct sse_scanner s;
    struct recorder r;
    rec_init(&r);
    sse_init(&s, 64);
    assert_int_equal(sse_feed(&s, "event: x\ndata: half", 19, on_event, &r), 0);
    sse_release(&s);
    sse_init(&s, 64);
    assert_int_equal(s.offset, 0);
    assert_int_equal(sse_feed(&s, "data: y\n\n", 9, on_event, &r), 0);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.name[0], "message");
    assert_string_equal(r.data[0], "y");
    assert_int_equal(r.end[0], 9);
    assert_int_equal(sse_feed(&s, NULL, 0, on_event, &r), 0);
    sse_release(&s);
    rec_release(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_anthropic_lf), cmocka_unit_test(test_anthropic_crlf),
        cmocka_unit_test(test_anthropic_cr), cmocka_unit_test(test_mixed_eol),
        cmocka_unit_test(test_fields),       cmocka_unit_test(test_nul_in_data),
        cmocka_unit_test(test_oversized),    cmocka_unit_test(test_callback_stops),
        cmocka_unit_test(test_reinit),
    };
    return cmocka_run_group_tests_name("sse", tests, NULL, NULL);
}
