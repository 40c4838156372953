/*
 * Unit tests for usage: non-streaming replies, a realistic stream folded
 * event by event (fed through the sse scanner), the latest-non-zero rule,
 * hostile numbers and strings, and error events.  The incremental reply
 * reader (struct usage_json) is also fed every cut of its input, every
 * prefix, cJSON's quirks, and a few thousand mutated replies, and must agree
 * with the cJSON reader it replaced (copied below as the reference).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <math.h>
#include <zlib.h>

#include "sse.h"
#include "usage.h"
#include "util.h"

#include "../usage_ref.h"

static struct sse_event event(const char *name, const char *data)
{
    struct sse_event ev = {
        .name = name,
        .name_len = strlen(name),
        .data = data,
        .data_len = strlen(data),
        .end_offset = 0,
    };
    return ev;
}

static void test_message_json(void **state)
{
    (void)state;
    static const char reply[] =
        "{\"id\":\"msg_013Zva2CMHLNnXjNJJKqJ2EF\",\"type\":\"message\",\"role\":\"assistant\","
        "\"model\":\"claude-sonnet-4-20250514\",\"content\":[{\"type\":\"text\",\"text\":\"Hi!\"}],"
        "\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":2095,"
        "\"cache_creation_input_tokens\":1024,\"cache_read_input_tokens\":4096,\"output_tokens\":503,"
        "\"service_tier\":\"standard\"}}";
    struct usage u = {.input = 99, .model = "old"};
    assert_int_equal(usage_from_message_json(reply, strlen(reply), &u), 0);
    assert_int_equal(u.input, 2095);
    assert_int_equal(u.output, 503);
    assert_int_equal(u.cache_read, 4096);
    assert_int_equal(u.cache_creation, 1024);
    assert_string_equal(u.model, "claude-sonnet-4-20250514");

    /* Absent counts become 0: the reply replaces what was there. */
    static const char partial[] = "{\"usage\":{\"output_tokens\":7}}";
    assert_int_equal(usage_from_message_json(partial, strlen(partial), &u), 0);
    assert_int_equal(u.input, 0);
    assert_int_equal(u.output, 7);
    assert_int_equal(u.cache_read, 0);
    assert_int_equal(u.cache_creation, 0);
    assert_string_equal(u.model, "");

    /* Only len bytes are read. */
    char padded[64];
    snprintf(padded, sizeof padded, "%s garbage", partial);
    assert_int_equal(usage_from_message_json(padded, strlen(partial), &u), 0);
    assert_int_equal(usage_from_message_json(padded, strlen(padded), &u), -1);
}

static void test_message_json_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "null",
        "[]",
        "42",
        "{",
        "{\"usage\":null}",
        "{\"usage\":[1,2]}",
        "{\"usage\":\"lots\"}",
        "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}",
        "[{\"usage\":{\"input_tokens\":1}}]",
        "{\"message\":{\"usage\":{\"input_tokens\":1}}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct usage u = {.input = 5, .model = "keep"};
        if (usage_from_message_json(bad[i], strlen(bad[i]), &u) != -1)
            fail_msg("usage_from_message_json accepted \"%s\"", bad[i]);
        assert_int_equal(u.input, 5);
        assert_string_equal(u.model, "keep");
    }
}

static void test_hostile_values(void **state)
{
    (void)state;
    static const char reply[] =
        "{\"model\":\"evil\\u001b[2Jmodel\\n\",\"usage\":{\"input_tokens\":-5,"
        "\"output_tokens\":1e300,\"cache_read_input_tokens\":\"12\","
        "\"cache_creation_input_tokens\":12.9}}";
    struct usage u;
    assert_int_equal(usage_from_message_json(reply, strlen(reply), &u), 0);
    assert_int_equal(u.input, 0);
    assert_int_equal(u.output, 0);
    assert_int_equal(u.cache_read, 0);
    assert_int_equal(u.cache_creation, 12);
    assert_string_equal(u.model, "evil?[2Jmodel?");

    /* A model name longer than the field is cut, never mid-character. */
    char big[512];
    char name[200];
    memset(name, 'm', 94);
    strcpy(name + 94, "\xc3\xa9tail"); /* the two-byte é straddles the cut */
    snprintf(big, sizeof big, "{\"model\":\"%s\",\"usage\":{}}", name);
    assert_int_equal(usage_from_message_json(big, strlen(big), &u), 0);
    assert_int_equal(strlen(u.model), 94);
    memset(name, 'm', 93);
    strcpy(name + 93, "\xc3\xa9tail"); /* é ends exactly at the cut */
    snprintf(big, sizeof big, "{\"model\":\"%s\",\"usage\":{}}", name);
    assert_int_equal(usage_from_message_json(big, strlen(big), &u), 0);
    assert_int_equal(strlen(u.model), 95);
    assert_memory_equal(u.model + 93, "\xc3\xa9", 2);
    memset(name, 'm', 93);
    strcpy(name + 93, "\xe2\x82\xac"); /* a three-byte euro sign straddles the cut */
    snprintf(big, sizeof big, "{\"model\":\"%s\",\"usage\":{}}", name);
    assert_int_equal(usage_from_message_json(big, strlen(big), &u), 0);
    assert_int_equal(strlen(u.model), 93);
}

/* The stream the sse tests use, fed through the real scanner. */
static const char stream[] =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\","
    "\"role\":\"assistant\",\"content\":[],\"model\":\"claude-opus-4-1-20250805\",\"stop_reason\":null,"
    "\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":0,"
    "\"cache_read_input_tokens\":2048,\"output_tokens\":2}}}\n\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
    "event: ping\n"
    "data: {\"type\": \"ping\"}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\"{\\\"usage\\\":{\\\"output_tokens\\\":999}}\"}}\n\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},"
    "\"usage\":{\"output_tokens\":15}}\n\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"input_tokens\":0,"
    "\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":2048,\"output_tokens\":42}}\n\n"
    "event: message_stop\n"
    "data: {\"type\":\"message_stop\"}\n\n";

struct fold {
    struct usage u;
    int changes;
    int events;
};

static int on_event(void *ud, const struct sse_event *ev)
{
    struct fold *f = ud;
    char type[32];
    f->events++;
    f->changes += usage_from_sse_event(ev, &f->u);
    assert_false(usage_is_error_event(ev, type, sizeof type));
    return 0;
}

static void test_stream(void **state)
{
    (void)state;
    struct sse_scanner s;
    struct fold f = {0};
    sse_init(&s, 1 << 16);
    /* One byte at a time, as a slow upstream would deliver it. */
    for (size_t i = 0; i < sizeof stream - 1; i++)
        assert_int_equal(sse_feed(&s, stream + i, 1, on_event, &f), 0);
    sse_release(&s);
    assert_int_equal(f.events, 8);
    assert_int_equal(f.changes, 3); /* message_start, then each message_delta */
    assert_int_equal(f.u.input, 472);
    assert_int_equal(f.u.output, 42);
    assert_int_equal(f.u.cache_read, 2048);
    assert_int_equal(f.u.cache_creation, 0);
    assert_string_equal(f.u.model, "claude-opus-4-1-20250805");
}

static void test_event_rules(void **state)
{
    (void)state;
    struct usage u = {0};
    struct sse_event ev;

    /* Events other than message_start and message_delta are not parsed. */
    ev = event("message", "{\"usage\":{\"output_tokens\":5}}");
    assert_int_equal(usage_from_sse_event(&ev, &u), 0);
    ev = event("content_block_delta", "{\"usage\":{\"output_tokens\":5}}");
    assert_int_equal(usage_from_sse_event(&ev, &u), 0);
    ev = event("Message_Delta", "{\"usage\":{\"output_tokens\":5}}");
    assert_int_equal(usage_from_sse_event(&ev, &u), 0);
    assert_int_equal(u.output, 0);

    /* A message_start with zero input (some gateways) and the real count
     * arriving in message_delta. */
    ev = event("message_start", "{\"type\":\"message_start\",\"message\":{\"model\":\"m1\","
                                "\"usage\":{\"input_tokens\":0,\"output_tokens\":1}}}");
    assert_int_equal(usage_from_sse_event(&ev, &u), 1);
    assert_int_equal(u.input, 0);
    assert_int_equal(u.output, 1);
    assert_string_equal(u.model, "m1");
    ev = event("message_delta",
               "{\"usage\":{\"input_tokens\":300,\"cache_creation_input_tokens\":20,"
               "\"output_tokens\":9}}");
    assert_int_equal(usage_from_sse_event(&ev, &u), 1);
    assert_int_equal(u.input, 300);
    assert_int_equal(u.cache_creation, 20);
    assert_int_equal(u.output, 9);
    /* The same numbers again change nothing; zeros erase nothing. */
    assert_int_equal(usage_from_sse_event(&ev, &u), 0);
    ev = event("message_delta", "{\"usage\":{\"input_tokens\":0,\"cache_creation_input_tokens\":0,"
                                "\"output_tokens\":0}}");
    assert_int_equal(usage_from_sse_event(&ev, &u), 0);
    assert_int_equal(u.input, 300);
    assert_int_equal(u.output, 9);

    /* message_delta carries usage at the top level, not under message. */
    ev = event("message_delta", "{\"message\":{\"usage\":{\"output_tokens\":77}}}");
    assert_int_equal(usage_from_sse_event(&ev, &u), 0);
    ev = event("message_start", "{\"usage\":{\"output_tokens\":77}}");
    assert_int_equal(usage_from_sse_event(&ev, &u), 0);
    assert_int_equal(u.output, 9);

    /* Junk is ignored. */
    static const char *const junk[] = {
        "",
        "{",
        "null",
        "[]",
        "{\"usage\":7}",
        "{\"usage\":{\"output_tokens\":\"50\"}}",
        "{\"usage\":{\"output_tokens\":-50}}",
        "{\"usage\":{\"output_tokens\":1e19}}",
        "{\"usage\":{\"output_tokens\":null}}",
    };
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        ev = event("message_delta", junk[i]);
        if (usage_from_sse_event(&ev, &u) != 0)
            fail_msg("message_delta \"%s\" changed usage", junk[i]);
        ev = event("message_start", junk[i]);
        assert_int_equal(usage_from_sse_event(&ev, &u), 0);
    }
    assert_int_equal(u.output, 9);

    /* A large but sane count. */
    ev = event("message_delta", "{\"usage\":{\"output_tokens\":8000000000}}");
    assert_int_equal(usage_from_sse_event(&ev, &u), 1);
    assert_int_equal(u.output, 8000000000LL);
}

static void test_error_event(void **state)
{
    (void)state;
    char type[32];
    struct sse_event ev;

    ev = event(
        "error",
        "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}");
    memset(type, 'x', sizeof type);
    assert_true(usage_is_error_event(&ev, type, sizeof type));
    assert_string_equal(type, "overloaded_error");

    /* Truncated to the caller's buffer. */
    char small[6];
    assert_true(usage_is_error_event(&ev, small, sizeof small));
    assert_string_equal(small, "overl");

    /* Still an error event when the data does not say which. */
    static const char *const vague[] = {"", "not json", "{}", "{\"error\":\"x\"}",
                                        "{\"error\":{\"type\":5}}"};
    for (size_t i = 0; i < sizeof vague / sizeof vague[0]; i++) {
        ev = event("error", vague[i]);
        memset(type, 'x', sizeof type);
        assert_true(usage_is_error_event(&ev, type, sizeof type));
        assert_string_equal(type, "");
    }
    ev = event("error", "{}");
    assert_true(usage_is_error_event(&ev, NULL, 0));

    /* Not error events; type is left alone. */
    static const char *const names[] = {"message", "Error", "errors", "message_stop", ""};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        ev = event(names[i], "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}");
        strcpy(type, "untouched");
        assert_false(usage_is_error_event(&ev, type, sizeof type));
        assert_string_equal(type, "untouched");
    }
}

/* The incremental reader (struct usage_json) against the reference in
 * usage_ref.h: the cJSON reader usage_from_message_json() used before. */

/* Field by field: the reference leaves stack bytes after the model's
 * terminator (it copies its whole temporary). */
static bool same_usage(const struct usage *a, const struct usage *b)
{
    return a->input == b->input && a->output == b->output && a->cache_read == b->cache_read &&
           a->cache_creation == b->cache_creation && strcmp(a->model, b->model) == 0;
}

static void show(const char *t, size_t n)
{
    fprintf(stderr, "text (%zu bytes): \"", n);
    for (size_t i = 0; i < n && i < 400; i++) {
        unsigned char c = (unsigned char)t[i];
        fprintf(stderr, c < 0x20 || c >= 0x7f || c == '"' || c == '\\' ? "\\x%02x" : "%c", c);
    }
    fprintf(stderr, "%s\"\n", n > 400 ? "..." : "");
}

static void expect(int rc_want, const struct usage *want, int rc, const struct usage *got,
                   const char *t, size_t n, const char *how)
{
    struct usage untouched;
    sentinel(&untouched);
    if (rc == rc_want && same_usage(want, got) &&
        (rc == 0 || memcmp(got, &untouched, sizeof *got) == 0))
        return;
    show(t, n);
    fail_msg(
        "%s: want %d in=%lld out=%lld cr=%lld cc=%lld model=\"%s\"; got %d in=%lld out=%lld cr=%lld cc=%lld "
        "model=\"%s\"",
        how, rc_want, want->input, want->output, want->cache_read, want->cache_creation,
        want->model, rc, got->input, got->output, got->cache_read, got->cache_creation, got->model);
}

/* Feeds t in pieces ending at the given cut offsets (ascending), then the rest. */
static int scan_cuts(const char *t, size_t n, const size_t *cuts, size_t ncuts, struct usage *u)
{
    struct usage_json s;
    size_t at = 0;
    usage_json_init(&s);
    for (size_t i = 0; i < ncuts; i++) {
        usage_json_feed(&s, t + at, cuts[i] - at);
        at = cuts[i];
    }
    usage_json_feed(&s, t + at, n - at);
    return usage_json_finish(&s, u);
}

static int scan_bytes(const char *t, size_t n, struct usage *u)
{
    struct usage_json s;
    usage_json_init(&s);
    for (size_t i = 0; i < n; i++)
        usage_json_feed(&s, t + i, 1);
    return usage_json_finish(&s, u);
}

static unsigned rng_next(unsigned *state)
{
    *state = *state * 1103515245u + 12345u;
    return *state >> 8;
}

/* Pieces of 0..max bytes (empty ones too), chosen by seed. */
static int scan_random(const char *t, size_t n, unsigned seed, size_t max, struct usage *u)
{
    struct usage_json s;
    usage_json_init(&s);
    for (size_t at = 0; at < n;) {
        size_t len = rng_next(&seed) % (max + 1);
        if (len > n - at)
            len = n - at;
        usage_json_feed(&s, t + at, len);
        at += len;
    }
    return usage_json_finish(&s, u);
}

/* The scanner, whole, byte by byte and in random pieces, agrees with the
 * reference; returns the reference's answer in *want. */
static int agrees(const char *t, size_t n, unsigned seeds, struct usage *want)
{
    struct usage got;
    sentinel(want);
    int rc = ref_from_message_json(t, n, want);
    sentinel(&got);
    expect(rc, want, usage_from_message_json(t, n, &got), &got, t, n, "whole");
    sentinel(&got);
    expect(rc, want, scan_bytes(t, n, &got), &got, t, n, "byte by byte");
    for (unsigned seed = 1; seed <= seeds; seed++) {
        sentinel(&got);
        expect(rc, want, scan_random(t, n, seed, seed % 2 ? 7 : 40, &got), &got, t, n,
               "random pieces");
    }
    return rc;
}

static int agrees_str(const char *t, struct usage *want)
{
    return agrees(t, strlen(t), 4, want);
}

/* Replies used by several tests: a real one, and one dense with escapes,
 * numbers, literals and names split in every way. */
static const char real_reply[] =
    "{\"id\":\"msg_013Zva2CMHLNnXjNJJKqJ2EF\",\"type\":\"message\",\"role\":\"assistant\","
    "\"model\":\"claude-sonnet-4-20250514\",\"content\":[{\"type\":\"text\",\"text\":\"Hi!\"}],"
    "\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":2095,"
    "\"cache_creation_input_tokens\":1024,\"cache_read_input_tokens\":4096,\"output_tokens\":503,"
    "\"service_tier\":\"standard\"}}";

static const char dense_reply[] =
    "\xef\xbb\xbf \t{\"m\\u006fdel\" : \"cl\\u00e9ude-\\ud83d\\ude00\\\"q\\\\b\\/s\\b\\f\\n\\r\\t!\",\r\n"
    "\"content\":[{\"text\":\"{\\\"usage\\\":{\\\"output_tokens\\\":9}} \\u20ac\"},true,false,null,"
    "-0.5e-3,1E+2,0,[],{},[[{\"usage\":{}}]]],\n"
    "\"usage\" :{ \"input_tokens\" : 12.5e1 ,\"output_tokens\":007,\"cache_read_input_tokens\":4096,"
    "\"cache_creation_input_tokens\":1e3,\"input_tokens\":1,\"model\":\"inner\"} ,\"model\":\"second\"}\n";

static void test_json_size(void **state)
{
    (void)state;
    /* It lives in every in-flight request. */
    assert_true(sizeof(struct usage_json) <= 400);
}

static void test_json_every_cut(void **state)
{
    (void)state;
    static const char *const texts[] = {real_reply, dense_reply};
    for (size_t k = 0; k < 2; k++) {
        const char *t = texts[k];
        size_t n = strlen(t);
        struct usage want, got;
        assert_int_equal(agrees(t, n, 200, &want), 0);
        /* Cut once at every offset, then twice at every pair of offsets. */
        for (size_t i = 0; i <= n; i++) {
            sentinel(&got);
            expect(0, &want, scan_cuts(t, n, &i, 1, &got), &got, t, n, "one cut");
            for (size_t j = i; j <= n; j += 3) {
                size_t cuts[2] = {i, j};
                sentinel(&got);
                expect(0, &want, scan_cuts(t, n, cuts, 2, &got), &got, t, n, "two cuts");
            }
        }
    }
    struct usage u;
    assert_int_equal(usage_from_message_json(dense_reply, strlen(dense_reply), &u), 0);
    assert_int_equal(u.input, 125);
    assert_int_equal(u.output, 7);
    assert_int_equal(u.cache_read, 4096);
    assert_int_equal(u.cache_creation, 1000);
    assert_string_equal(u.model, "cl\xc3\xa9ude-\xf0\x9f\x98\x80\"q\\b/s?????"
                                 "!");
}

static void test_json_prefixes(void **state)
{
    (void)state;
    static const char *const texts[] = {real_reply, dense_reply};
    for (size_t k = 0; k < 2; k++) {
        const char *t = texts[k];
        size_t n = strlen(t);
        size_t last = n; /* just after the root's closing brace */
        while (t[last - 1] != '}')
            last--;
        for (size_t i = 0; i <= n; i++) {
            struct usage want, got;
            int rc = agrees(t, i, 1, &want);
            assert_int_equal(rc, i >= last ? 0 : -1);
            /* Every prefix also cut at every offset. */
            for (size_t j = 0; j <= i; j += 5) {
                sentinel(&got);
                expect(rc, &want, scan_cuts(t, i, &j, 1, &got), &got, t, i, "prefix, cut");
            }
        }
    }
}

static void test_json_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        /* trailing bytes other than JSON whitespace */
        "{\"usage\":{}}x",
        "{\"usage\":{}}{}",
        "{\"usage\":{}}\x01",
        "{\"usage\":{}} \x0b",
        "{\"usage\":{}},",
        "{\"usage\":{}}}",
        "{\"usage\":{}}\xef\xbb\xbf",
        /* literals */
        "{\"usage\":{},\"a\":nul}",
        "{\"usage\":{},\"a\":nulll}",
        "{\"usage\":{},\"a\":True}",
        "{\"usage\":{},\"a\":tru}",
        "{\"usage\":{},\"a\":fals}",
        "{\"usage\":{},\"a\":falsey}",
        "{\"usage\":{},\"a\":nan}",
        "{\"usage\":{},\"a\":Infinity}",
        "{\"usage\":{},\"a\":undefined}",
        /* numbers strtod() would not read wholly */
        "{\"usage\":{\"input_tokens\":1e}}",
        "{\"usage\":{\"input_tokens\":1e+}}",
        "{\"usage\":{\"input_tokens\":-}}",
        "{\"usage\":{\"input_tokens\":--1}}",
        "{\"usage\":{\"input_tokens\":+1}}",
        "{\"usage\":{\"input_tokens\":.5}}",
        "{\"usage\":{\"input_tokens\":1.2.3}}",
        "{\"usage\":{\"input_tokens\":1-2}}",
        "{\"usage\":{\"input_tokens\":0x10}}",
        "{\"usage\":{\"input_tokens\":1e5e5}}",
        "{\"usage\":{\"input_tokens\":-.}}",
        "{\"usage\":{\"input_tokens\":1ee5}}",
        "{\"usage\":{\"input_tokens\":1e5.}}",
        "{\"usage\":{\"input_tokens\":1.e}}",
        /* escapes */
        "{\"usage\":{},\"a\":\"\\x\"}",
        "{\"usage\":{},\"a\":\"\\U0041\"}",
        "{\"usage\":{},\"a\":\"\\u12\"}",
        "{\"usage\":{},\"a\":\"\\u004\"}",
        "{\"usage\":{},\"a\":\"\\",
        "{\"usage\":{},\"a\":\"\\u0041",
        "{\"usage\":{},\"a\":\"\\'\"}",
        /* lone or broken surrogates, as cJSON refuses them */
        "{\"usage\":{},\"a\":\"\\uDC00\"}",
        "{\"usage\":{},\"a\":\"\\uDFFF\"}",
        "{\"usage\":{},\"a\":\"\\uD800\"}",
        "{\"usage\":{},\"a\":\"\\uDBFFx\"}",
        "{\"usage\":{},\"a\":\"\\uD800abcdef\"}",
        "{\"usage\":{},\"a\":\"\\uD800\\u0041\"}",
        "{\"usage\":{},\"a\":\"\\uD800\\uD800\"}",
        "{\"usage\":{},\"a\":\"\\uD800\\uE000\"}",
        "{\"usage\":{},\"a\":\"\\uD800\\uDCxx\"}",
        "{\"usage\":{},\"a\":\"\\uD800\\n\"}",
        "{\"usage\":{},\"a\":\"\\uD800\\uDC0\"}",
        /* structure */
        "{\"usage\":{}",
        "{\"usage\":{}]",
        "{\"usage\":{]}",
        "{\"usage\":[}}",
        "{\"usage\":{},}",
        "{\"usage\":{},\"a\":[1,]}",
        "{\"usage\":{},\"a\":[,1]}",
        "{\"usage\" {}}",
        "{\"usage\"::{}}",
        "{\"usage\":{}\"a\":1}",
        "{'usage':{}}",
        "{usage:{}}",
        "{\"usage\":{}, /* c */ \"a\":1}",
        "{\"usage\":{},\"a\":1 2}",
        "{\"usage\":{},\"a\"}",
        "{\"usage\":{},\"a\":}",
        "{,\"usage\":{}}",
        "{\"usage\":{}}\"",
        "\xef\xbb{\"usage\":{}}",
        " \xef\xbb\xbf{\"usage\":{}}",
        "\xef\xbb\xbf",
        /* whitespace to the end inside */
        "{\"usage\":{} ",
        "{\"usage\":{ ",
        "{\"usage\": ",
        "{ ",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct usage want;
        if (agrees_str(bad[i], &want) != -1) {
            show(bad[i], strlen(bad[i]));
            fail_msg("cJSON accepts it: the test is wrong");
        }
    }
    /* A NUL after the root is not whitespace either. */
    struct usage want;
    assert_int_equal(agrees("{\"usage\":{}}\0", 13, 4, &want), -1);
}

/* What cJSON accepts beyond RFC 8259, and the scanner with it. */
static void test_json_quirks(void **state)
{
    (void)state;
    struct usage u;
    /* Leading zeros, "-.5", "1.", "1.e3": whatever strtod() reads wholly. */
    assert_int_equal(
        agrees_str("{\"usage\":{\"input_tokens\":007,\"output_tokens\":-.5,"
                   "\"cache_read_input_tokens\":3.,\"cache_creation_input_tokens\":1.e3}}",
                   &u),
        0);
    assert_int_equal(u.input, 7);
    assert_int_equal(u.output, 0);
    assert_int_equal(u.cache_read, 3);
    assert_int_equal(u.cache_creation, 1000);
    /* Any byte up to 0x20 is whitespace between tokens, NUL included. */
    static const char ctl[] = "\x01\x1f{\0\"usage\"\x0b:\x1f{\"output_tokens\"\x02:\x03"
                              "5\x7f}}";
    assert_int_equal(agrees(ctl, sizeof ctl - 1, 8, &u), -1); /* 0x7f is not */
    static const char ctl2[] = "\x01\x1f{\0\"usage\"\x0b:\x1f{\"output_tokens\"\x02:\x03"
                               "5\x1e}}\r\n";
    assert_int_equal(agrees(ctl2, sizeof ctl2 - 1, 8, &u), 0);
    assert_int_equal(u.output, 5);
    /* A BOM at the very start. */
    assert_int_equal(agrees_str("\xef\xbb\xbf{\"usage\":{\"output_tokens\":6}}", &u), 0);
    assert_int_equal(u.output, 6);
    /* Raw control bytes inside strings are kept (and then replaced). */
    assert_int_equal(agrees_str("{\"model\":\"a\x01\tb\x7f\",\"usage\":{}}", &u), 0);
    assert_string_equal(u.model, "a??b?");
    /* A \u with a non-hex digit decodes to NUL but still spans six bytes. */
    assert_int_equal(agrees_str("{\"model\":\"ab\\uZZZZcd\",\"usage\":{}}", &u), 0);
    assert_string_equal(u.model, "ab");
    assert_int_equal(agrees_str("{\"model\":\"ab\\u12\\\"cd\",\"usage\":{}}", &u), 0);
    assert_string_equal(u.model, "ab");
    /* ... so the decoder can fall out of step with the end finder: here the
     * six bytes \u000\ swallow half of \\, and the lone backslash left takes
     * the closing quote as its escaped byte. */
    assert_int_equal(agrees_str("{\"model\":\"x\\u000\\\\\",\"usage\":{}}", &u), 0);
    assert_string_equal(u.model, "x");
    assert_int_equal(agrees_str("{\"usage\":{},\"a\":\"\\u000\\\\\"}", &u), 0);
    /* ... and then fail where in-step decoding would not: \u000\ then \x. */
    assert_int_equal(agrees_str("{\"usage\":{},\"a\":\"\\u000\\\\x\"}", &u), -1);
    assert_int_equal(agrees_str("{\"usage\":{},\"a\":\"\\u000\\\\n\"}", &u), 0);
    /* Names compare as C strings: a NUL ends them. */
    assert_int_equal(agrees_str("{\"usage\\u0000junk\":{\"input_tokens\":8}}", &u), 0);
    assert_int_equal(u.input, 8);
    static const char rawnul[] = "{\"usage\0junk\":{\"input_tokens\":9},\"model\":\"m\0n\"}";
    assert_int_equal(agrees(rawnul, sizeof rawnul - 1, 8, &u), 0);
    assert_int_equal(u.input, 9);
    assert_string_equal(u.model, "m");
    /* Names may be escaped. */
    assert_int_equal(
        agrees_str("{\"\\u0075sage\":{\"input\\u005ftokens\":10},\"m\\u006fdel\":\"q\"}", &u), 0);
    assert_int_equal(u.input, 10);
    assert_string_equal(u.model, "q");
    /* Surrogate pairs in either case of hex. */
    assert_int_equal(agrees_str("{\"model\":\"\\uD83D\\uDE00\\ud83d\\ude00\",\"usage\":{}}", &u),
                     0);
    assert_string_equal(u.model, "\xf0\x9f\x98\x80\xf0\x9f\x98\x80");
}

static char *nest(int depth, bool objects)
{
    /* {"usage":{"output_tokens":4},"d": + depth-1 containers */
    char *t = malloc((size_t)depth * 8 + 64);
    assert_non_null(t);
    size_t n = (size_t)sprintf(t, "{\"usage\":{\"output_tokens\":4},\"d\":");
    for (int i = 1; i < depth; i++)
        n += (size_t)sprintf(t + n, "%s", objects && i + 1 < depth ? "{\"k\":" : "[");
    for (int i = depth - 1; i >= 1; i--)
        t[n++] = objects && i + 1 < depth ? '}' : ']';
    t[n++] = '}';
    t[n] = '\0';
    return t;
}

static void test_json_depth(void **state)
{
    (void)state;
    for (int objects = 0; objects <= 1; objects++) {
        for (int depth = 998; depth <= 1002; depth++) {
            struct usage u;
            char *t = nest(depth, objects);
            assert_int_equal(agrees(t, strlen(t), 2, &u), depth <= 1000 ? 0 : -1);
            if (depth <= 1000)
                assert_int_equal(u.output, 4);
            free(t);
        }
    }
    /* Depth goes down again: many shallow containers are fine. */
    char *t = malloc(40000);
    size_t n = (size_t)sprintf(t, "{\"usage\":{},\"a\":[");
    for (int i = 0; i < 3000; i++)
        n += (size_t)sprintf(t + n, "%s[[]]", i ? "," : "");
    strcpy(t + n, "]}");
    struct usage u;
    assert_int_equal(agrees(t, strlen(t), 2, &u), 0);
    free(t);
}

static long long count_of(const char *number)
{
    char t[1024];
    struct usage u;
    snprintf(t, sizeof t, "{\"usage\":{\"input_tokens\":%s}}", number);
    if (agrees(t, strlen(t), 4, &u) != 0)
        fail_msg("refused %s", number);
    return u.input;
}

static void test_json_numbers(void **state)
{
    (void)state;
    char big[600];
    assert_int_equal(count_of("0"), 0);
    assert_int_equal(count_of("-0"), 0);
    assert_int_equal(count_of("-5"), 0);
    assert_int_equal(count_of("0.0"), 0);
    assert_int_equal(count_of("12.9"), 12);
    assert_int_equal(count_of("999999999999999"), 999999999999999LL);
    assert_int_equal(count_of("9007199254740993"), 9007199254740992LL); /* 2^53 + 1 rounds */
    assert_int_equal(count_of("123456789012345678"), 123456789012345680LL);
    assert_int_equal(count_of("1e18"), 1000000000000000000LL);
    assert_int_equal(count_of("8999999999999998976"), 8999999999999998976LL);
    assert_int_equal(count_of("8999999999999999999"), 0); /* rounds to 9e18 */
    assert_int_equal(count_of("9e18"), 0);
    assert_int_equal(count_of("9223372036854775807"), 0);
    assert_int_equal(count_of("1e300"), 0);
    assert_int_equal(count_of("1e400"), 0); /* inf */
    assert_int_equal(count_of("-1e400"), 0);
    assert_int_equal(count_of("1e-400"), 0);
    assert_int_equal(count_of("1E+0000000000000000000000000000005"), 100000);
    assert_int_equal(count_of("1e-0000000000000000000000000000001"), 0);
    assert_int_equal(count_of("1e99999999999999999999999999999"), 0);
    assert_int_equal(count_of("0e99999999999999999999999999999"), 0);
    assert_int_equal(count_of("0.99999999999999994"), 0);
    assert_int_equal(count_of("0.99999999999999995"), 1); /* rounds to 1.0 */
    /* Ties and what lies past them, with digits beyond those kept. */
    assert_int_equal(count_of("4503599627370496.5"), 4503599627370496LL);
    assert_int_equal(count_of("4503599627370497.5"), 4503599627370498LL);
    snprintf(big, sizeof big, "4503599627370496.5%0100d1", 0);
    assert_int_equal(count_of(big), 4503599627370497LL);
    snprintf(big, sizeof big, "4503599627370496.4%0100d", 0);
    memset(big + 18, '9', 100);
    assert_int_equal(count_of(big), 4503599627370496LL);
    assert_int_equal(count_of("1.99999999999999988897769753748434595763683319091796875"), 2);
    assert_int_equal(count_of("1.99999999999999988897769753748434595763683319091796874"), 1);
    snprintf(big, sizeof big, "1.99999999999999988897769753748434595763683319091796874%0100d", 9);
    assert_int_equal(count_of(big), 1);
    /* Long runs of digits: leading zeros, dropped integer digits, scale. */
    snprintf(big, sizeof big, "%0200d", 42);
    assert_int_equal(count_of(big), 42);
    snprintf(big, sizeof big, "1%0199de-190", 0);
    assert_int_equal(count_of(big), 1000000000);
    snprintf(big, sizeof big, "0.%069d1e71", 0);
    assert_int_equal(count_of(big), 10);
    snprintf(big, sizeof big, "%0300d", 1);
    big[0] = '7';
    assert_int_equal(count_of(big), 0);
    /* Only numbers count; cJSON_IsNumber() refuses the rest. */
    static const char *const not_numbers[] = {"\"12\"", "true", "null", "[1]", "{\"n\":1}"};
    for (size_t i = 0; i < sizeof not_numbers / sizeof not_numbers[0]; i++)
        assert_int_equal(count_of(not_numbers[i]), 0);
}

static void test_json_first_member(void **state)
{
    (void)state;
    struct usage u;
    /* cJSON_GetObjectItemCaseSensitive() finds the first member of a name. */
    assert_int_equal(agrees_str("{\"usage\":{\"input_tokens\":1,\"input_tokens\":2}}", &u), 0);
    assert_int_equal(u.input, 1);
    assert_int_equal(agrees_str("{\"usage\":{\"input_tokens\":\"x\",\"input_tokens\":2}}", &u), 0);
    assert_int_equal(u.input, 0);
    assert_int_equal(agrees_str("{\"usage\":{\"input_tokens\":-1,\"input_tokens\":2}}", &u), 0);
    assert_int_equal(u.input, 0);
    assert_int_equal(
        agrees_str("{\"usage\":{\"output_tokens\":1},\"usage\":{\"output_tokens\":2}}", &u), 0);
    assert_int_equal(u.output, 1);
    assert_int_equal(agrees_str("{\"usage\":null,\"usage\":{\"output_tokens\":2}}", &u), -1);
    assert_int_equal(agrees_str("{\"usage\":[],\"usage\":{\"output_tokens\":2}}", &u), -1);
    assert_int_equal(agrees_str("{\"model\":\"a\",\"model\":\"b\",\"usage\":{}}", &u), 0);
    assert_string_equal(u.model, "a");
    assert_int_equal(agrees_str("{\"model\":5,\"model\":\"b\",\"usage\":{}}", &u), 0);
    assert_string_equal(u.model, "");
    assert_int_equal(agrees_str("{\"model\":\"\",\"model\":\"b\",\"usage\":{}}", &u), 0);
    assert_string_equal(u.model, "");
    /* A name that only decodes to the same text is the same name. */
    assert_int_equal(
        agrees_str("{\"usage\":{\"output_tokens\":1},\"us\\u0061ge\":{\"output_tokens\":2}}", &u),
        0);
    assert_int_equal(u.output, 1);
    assert_int_equal(agrees_str("{\"us\\u0061ge\":5,\"usage\":{\"output_tokens\":2}}", &u), -1);
}

static void test_json_where(void **state)
{
    (void)state;
    struct usage u;
    static const char *const refused[] = {
        "{\"usage\":7}",
        "{\"usage\":\"{}\"}",
        "{\"usage\":true}",
        "{\"usage\":1e5}",
        "{\"a\":{\"usage\":{\"input_tokens\":1}}}",           /* depth 2 */
        "{\"a\":[{\"usage\":{\"input_tokens\":1}}]}",         /* in an array */
        "{\"a\":\"\\\"usage\\\":{\\\"input_tokens\\\":1}\"}", /* in a string */
        "{\"Usage\":{}}",
        "{\"usage \":{}}",
        "{\"usag\":{}}",
        "{\"usages\":{}}",
        "{\"usage\\u0001\":{}}",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        if (agrees_str(refused[i], &u) != -1)
            fail_msg("accepted %s", refused[i]);
    }
    /* Counts count only as direct members of the top-level usage. */
    assert_int_equal(
        agrees_str("{\"usage\":{\"x\":{\"input_tokens\":5},\"y\":[{\"output_tokens\":6}]},"
                   "\"input_tokens\":7,\"z\":{\"usage\":{\"cache_read_input_tokens\":8}}}",
                   &u),
        0);
    assert_int_equal(u.input, 0);
    assert_int_equal(u.output, 0);
    assert_int_equal(u.cache_read, 0);
    /* Nor in an object that follows the usage object. */
    assert_int_equal(agrees_str("{\"usage\":{\"input_tokens\":1},\"x\":{\"output_tokens\":5},"
                                "\"y\":[{\"cache_read_input_tokens\":6}]}",
                                &u),
                     0);
    assert_int_equal(u.input, 1);
    assert_int_equal(u.output, 0);
    assert_int_equal(u.cache_read, 0);
    /* The model counts only at the top. */
    assert_int_equal(
        agrees_str(
            "{\"usage\":{\"model\":\"u\"},\"a\":{\"model\":\"a\"},\"b\":[{\"model\":\"b\"}]}", &u),
        0);
    assert_string_equal(u.model, "");
    /* Names that are near misses, long, or past the longest kept. */
    assert_int_equal(
        agrees_str(
            "{\"usage\":{\"input_token\":1,\"input_tokens_\":2,\"cache_creation_input_tokens_x\":3,"
            "\"cache_creation_input_token\":4,\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\":5,"
            "\"cache_creation_input_tokens\":6}}",
            &u),
        0);
    assert_int_equal(u.input, 0);
    assert_int_equal(u.cache_creation, 6);
    /* The usage object may come first, last, or be empty. */
    assert_int_equal(agrees_str("{\"usage\":{}}", &u), 0);
    assert_int_equal(agrees_str("{\"a\":[],\"usage\":{\"output_tokens\":3}}", &u), 0);
    assert_int_equal(u.output, 3);
}

static void test_json_model(void **state)
{
    (void)state;
    struct usage u;
    char t[1024], name[400];
    /* Escaped multi-byte characters straddling the cut. */
    for (int pad = 88; pad <= 96; pad++) {
        static const char *const tails[] = {
            "\\u00e9\\u00e9", "\\u20ac\\u20ac", "\\ud83d\\ude00\\ud83d\\ude00", "\\u0000",
            "\\n\\t",         "\\\"\\\\",       "\xc3\xa9\xe2\x82\xac"};
        for (size_t k = 0; k < sizeof tails / sizeof tails[0]; k++) {
            memset(name, 'm', (size_t)pad);
            strcpy(name + pad, tails[k]);
            snprintf(t, sizeof t, "{\"model\":\"%s\",\"usage\":{}}", name);
            assert_int_equal(agrees(t, strlen(t), 4, &u), 0);
            assert_true(strlen(u.model) <= 95);
        }
    }
    /* A long model, cut inside escapes in every way. */
    strcpy(name, "claude-");
    for (int i = 0; i < 40; i++)
        strcat(name, i % 3 ? "\\u00e9x" : "\\t");
    snprintf(t, sizeof t, "{\"model\":\"%s\",\"usage\":{}}", name);
    assert_int_equal(agrees(t, strlen(t), 50, &u), 0);
    /* The field is replaced, never merged with what was there. */
    strcpy(u.model, "older-and-longer-model-name");
    assert_int_equal(usage_from_message_json("{\"model\":\"new\",\"usage\":{}}", 26, &u), 0);
    assert_string_equal(u.model, "new");
}

/*
 * A few thousand replies made by mutating valid ones (byte changes,
 * truncations, insertions of tokens, deletions, repeats), each read by both
 * readers whole, byte by byte and in random pieces.
 */
static size_t mutate(char *t, size_t n, size_t cap, unsigned *rng)
{
    static const char bytes[] = "\"\\{}[],:0123456789-+.eEutnfalsr \t\n\x01\x7f\xc3\xef";
    static const char *const tokens[] = {
        "\\u",
        "\\uD800",
        "\\uDC00",
        "\\ud83d\\ude00",
        "\\u0000",
        "\\\\",
        "\\\"",
        "\"usage\":",
        "\"model\":",
        "{}",
        "[]",
        "null",
        "true",
        "1e",
        "-.",
        "1.",
        "007",
        "9e18",
        "\"\"",
        ",",
        "\xef\xbb\xbf",
        "{\"input_tokens\":1}",
        "\"output_tokens\":",
        "\\u000\\\\",
    };
    int ops = 1 + (int)(rng_next(rng) % 3);
    for (int k = 0; k < ops && n > 0; k++) {
        size_t at = rng_next(rng) % n;
        switch (rng_next(rng) % 6) {
        case 0: /* a byte becomes an interesting one */
            t[at] = bytes[rng_next(rng) % (sizeof bytes - 1)];
            break;
        case 1: /* a bit flips */ t[at] = (char)(t[at] ^ (1 << (rng_next(rng) % 8))); break;
        case 2: /* truncation */ n = at; break;
        case 3: { /* insertion */
            const char *tok = tokens[rng_next(rng) % (sizeof tokens / sizeof tokens[0])];
            size_t len = strlen(tok);
            if (n + len > cap)
                break;
            memmove(t + at + len, t + at, n - at);
            memcpy(t + at, tok, len);
            n += len;
            break;
        }
        case 4: { /* deletion */
            size_t len = 1 + rng_next(rng) % 8;
            if (len > n - at)
                len = n - at;
            memmove(t + at, t + at + len, n - at - len);
            n -= len;
            break;
        }
        default: { /* a stretch repeats */
            size_t len = 1 + rng_next(rng) % 16;
            if (len > n - at)
                len = n - at;
            if (n + len > cap)
                break;
            memmove(t + at + len, t + at, n - at);
            n += len;
            break;
        }
        }
    }
    return n;
}

static void test_json_differential(void **state)
{
    (void)state;
    static const char *const bases[] = {
        real_reply,
        dense_reply,
        "{\"usage\":{\"input_tokens\":1,\"output_tokens\":2,\"cache_read_input_tokens\":3,"
        "\"cache_creation_input_tokens\":4},\"model\":\"m\"}",
        "{\"model\":\"ab\\uZZZZcd\",\"usage\":{\"input_tokens\":12.5e1},\"x\":\"\\u000\\\\\"}",
        "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}",
        "{\"usage\":{\"output_tokens\":8999999999999999999.5,\"input_tokens\":-0,\"input_tokens\":4}}",
        "{\"model\":\"\\ud83d\\ude00\\u00e9\\/\",\"a\":[1,-2.5,3e-2,true,false,null,{\"b\":[]}],\"usage\":{}}",
        "\xef\xbb\xbf\x01{\"usage\" : { \"input_tokens\" : 5 } }\r\n",
    };
    char t[2048];
    unsigned rng = 12345;
    int accepted = 0, total = 0;
    for (size_t b = 0; b < sizeof bases / sizeof bases[0]; b++) {
        for (int i = 0; i < 500; i++) {
            size_t n = strlen(bases[b]);
            memcpy(t, bases[b], n);
            n = mutate(t, n, sizeof t, &rng);
            struct usage want;
            accepted += agrees(t, n, 3, &want) == 0;
            total++;
        }
    }
    /* The mutations must not all be refused, or little is compared. */
    assert_true(accepted > total / 10);
    printf("[          ] differential: %d of %d mutated replies accepted by both\n", accepted,
           total);
}

/* ---- compressed replies ---------------------------------------------------- */

struct sink {
    struct usage_json json;
    size_t bytes;
};

static void to_json(void *ud, const char *data, size_t len)
{
    struct sink *k = ud;
    k->bytes += len;
    usage_json_feed(&k->json, data, len);
}

/* gzip (wbits 31) or zlib (15) of text into out; returns the length. */
static size_t compress_to(const char *text, size_t len, unsigned char *out, size_t size, int wbits)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = (Bytef *)(uintptr_t)text;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)size;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    size_t n = z.total_out;
    deflateEnd(&z);
    return n;
}

static const char gz_reply[] =
    "{\"id\":\"msg_1\",\"type\":\"message\",\"model\":\"claude-gz\",\"content\":[{\"type\":"
    "\"text\",\"text\":\"hello\"}],\"usage\":{\"input_tokens\":321,\"output_tokens\":54}}";

static void test_inflate_reply(void **state)
{
    (void)state;
    unsigned char gz[512];
    static const int wbits[] = {31, 15};
    static const char *codings[] = {"gzip", " Deflate "};
    for (int w = 0; w < 2; w++) {
        size_t n = compress_to(gz_reply, strlen(gz_reply), gz, sizeof gz, wbits[w]);
        /* every piece size, down to a byte at a time */
        for (size_t piece = 1; piece <= n; piece++) {
            struct usage_inflate in;
            struct sink k = {.bytes = 0};
            usage_json_init(&k.json);
            assert_int_equal(usage_inflate_init(&in, codings[w], strlen(codings[w]), 1 << 20), 0);
            for (size_t i = 0; i < n; i += piece)
                assert_int_equal(usage_inflate_feed(&in, (const char *)gz + i,
                                                    n - i < piece ? n - i : piece, to_json, &k),
                                 USAGE_INFLATE_OK);
            usage_inflate_release(&in);
            usage_inflate_release(&in); /* idempotent */
            struct usage u = {0};
            assert_int_equal(usage_json_finish(&k.json, &u), 0);
            assert_int_equal(u.input, 321);
            assert_int_equal(u.output, 54);
            assert_string_equal(u.model, "claude-gz");
        }
    }
}

static void test_inflate_refused(void **state)
{
    (void)state;
    struct usage_inflate in;
    assert_int_equal(usage_inflate_init(&in, "br", 2, 1 << 20), -1);
    assert_int_equal(usage_inflate_init(&in, "gzip, br", 8, 1 << 20), -1);
    assert_null(in.z);
    assert_true(usage_coding_identity(NULL, 0));
    assert_true(usage_coding_identity(" identity", 9));
    assert_false(usage_coding_identity("gzip", 4));

    /* not gzip at all */
    struct sink k = {.bytes = 0};
    usage_json_init(&k.json);
    assert_int_equal(usage_inflate_init(&in, "gzip", 4, 1 << 20), 0);
    assert_int_equal(usage_inflate_feed(&in, gz_reply, strlen(gz_reply), to_json, &k),
                     USAGE_INFLATE_CORRUPT);
    usage_inflate_release(&in);

    /* a bomb: 4 MiB of zeros stops at the cap */
    size_t big = 4u << 20;
    char *zeros = calloc(1, big);
    unsigned char *gz = malloc(big);
    size_t n = compress_to(zeros, big, gz, big, 31);
    assert_true(n < 16 * 1024);
    k.bytes = 0;
    usage_json_init(&k.json);
    assert_int_equal(usage_inflate_init(&in, "gzip", 4, 100000), 0);
    assert_int_equal(usage_inflate_feed(&in, (const char *)gz, n, to_json, &k),
                     USAGE_INFLATE_TOO_LARGE);
    assert_int_equal(k.bytes, 100000);
    usage_inflate_release(&in);
    free(zeros);
    free(gz);
}

/* Two gzip members one after the other read as one text. */
static void test_inflate_members(void **state)
{
    (void)state;
    unsigned char gz[1024];
    size_t half = strlen(gz_reply) / 2;
    size_t n1 = compress_to(gz_reply, half, gz, sizeof gz, 31);
    size_t n2 = compress_to(gz_reply + half, strlen(gz_reply) - half, gz + n1, sizeof gz - n1, 31);
    struct usage_inflate in;
    struct sink k = {.bytes = 0};
    usage_json_init(&k.json);
    assert_int_equal(usage_inflate_init(&in, "x-gzip", 6, 1 << 20), 0);
    assert_int_equal(usage_inflate_feed(&in, (const char *)gz, n1 + n2, to_json, &k),
                     USAGE_INFLATE_OK);
    usage_inflate_release(&in);
    struct usage u = {0};
    assert_int_equal(usage_json_finish(&k.json, &u), 0);
    assert_int_equal(u.input, 321);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_message_json),      cmocka_unit_test(test_message_json_refused),
        cmocka_unit_test(test_hostile_values),    cmocka_unit_test(test_stream),
        cmocka_unit_test(test_event_rules),       cmocka_unit_test(test_error_event),
        cmocka_unit_test(test_json_size),         cmocka_unit_test(test_json_every_cut),
        cmocka_unit_test(test_json_prefixes),     cmocka_unit_test(test_json_invalid),
        cmocka_unit_test(test_json_quirks),       cmocka_unit_test(test_json_depth),
        cmocka_unit_test(test_json_numbers),      cmocka_unit_test(test_json_first_member),
        cmocka_unit_test(test_json_where),        cmocka_unit_test(test_json_model),
        cmocka_unit_test(test_json_differential), cmocka_unit_test(test_inflate_reply),
        cmocka_unit_test(test_inflate_refused),   cmocka_unit_test(test_inflate_members),
    };
    return cmocka_run_group_tests_name("usage", tests, NULL, NULL);
}
