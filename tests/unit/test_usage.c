/*
 * Unit tests for usage: non-streaming replies, a realistic stream folded
 * event by event (fed through the sse scanner), the latest-non-zero rule,
 * hostile numbers and strings, and error events.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sse.h"
#include "usage.h"

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
    ev = event("message_delta", "{\"usage\":{\"input_tokens\":300,\"cache_creation_input_tokens\":20,"
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
        "", "{", "null", "[]", "{\"usage\":7}", "{\"usage\":{\"output_tokens\":\"50\"}}",
        "{\"usage\":{\"output_tokens\":-50}}", "{\"usage\":{\"output_tokens\":1e19}}",
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

    ev = event("error", "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}");
    memset(type, 'x', sizeof type);
    assert_true(usage_is_error_event(&ev, type, sizeof type));
    assert_string_equal(type, "overloaded_error");

    /* Truncated to the caller's buffer. */
    char small[6];
    assert_true(usage_is_error_event(&ev, small, sizeof small));
    assert_string_equal(small, "overl");

    /* Still an error event when the data does not say which. */
    static const char *const vague[] = {"", "not json", "{}", "{\"error\":\"x\"}", "{\"error\":{\"type\":5}}"};
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_message_json), cmocka_unit_test(test_message_json_refused),
        cmocka_unit_test(test_hostile_values), cmocka_unit_test(test_stream),
        cmocka_unit_test(test_event_rules),  cmocka_unit_test(test_error_event),
    };
    return cmocka_run_group_tests_name("usage", tests, NULL, NULL);
}
