/*
 * Unit tests for dashview.c: the dashboard's frames and keys from plain
 * /status documents.  Every frame is checked for the same invariants (no
 * row wider than the screen, spans that tile the text, no control bytes,
 * nothing outside ASCII in ASCII mode), at many sizes, in both languages,
 * and with every node of a realistic document replaced in turn by a value
 * of the wrong type.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dashview.h"
#include "util.h"

static const char sample_json[] =
    "{\"version\":\"0.1.0\",\"listen\":\"127.0.0.1:8080\",\"uptime_s\":3725,\"mode\":\"auto\","
    "\"current_group\":\"main\","
    "\"current_endpoint\":{\"name\":\"alpha\",\"url\":\"https://a\",\"group\":\"main\"},"
    "\"pinned_endpoint\":null,\"pin_overridden\":false,\"pending_switch\":null,"
    "\"active_connections\":1,\"requests_total\":40,\"retries_total\":2,"
    "\"traffic_tokens\":{\"input\":1234,\"output\":56789},"
    "\"checks\":{\"method\":\"messages\",\"paused\":false,\"running\":false,\"interval_s\":120,"
    "\"next_check_in_s\":95,\"load_level\":\"idle\",\"dynamic_scaling\":false,"
    "\"tokens_used\":{\"input\":8,\"output\":1}},"
    "\"groups\":[{\"name\":\"main\",\"current\":true,\"auth\":\"x-api-key\",\"endpoints\":3},"
    "{\"name\":\"backup\",\"current\":false,\"auth\":\"bearer\",\"endpoints\":1}],"
    "\"endpoints\":["
    "{\"name\":\"alpha\",\"url\":\"https://a\",\"group\":\"main\",\"current\":true,"
    "\"available\":true,\"status\":\"healthy\",\"latency_ms\":812.0,\"smoothed_latency_ms\":790.5,"
    "\"ttfb_ms\":500.1,\"success_rate\":1.0,\"checks\":12,\"error\":null,"
    "\"active_connections\":1,\"requests\":40,\"failures\":0,\"circuit\":\"closed\","
    "\"circuit_retry_in_s\":null,\"tokens_used\":{\"input\":8,\"output\":1},"
    "\"history\":[{\"t\":1764000000000,\"ok\":true,\"latency_ms\":100.0,\"error\":null},"
    "{\"t\":1764000001000,\"ok\":false,\"latency_ms\":null,\"error\":\"HTTP 529\"},"
    "{\"t\":1764000002000,\"ok\":true,\"latency_ms\":800.0,\"error\":null}]},"
    "{\"name\":\"bravo\",\"url\":\"https://b\",\"group\":\"main\",\"current\":false,"
    "\"available\":true,\"status\":\"healthy\",\"latency_ms\":300.0,\"success_rate\":0.9,"
    "\"checks\":10,\"error\":null,\"active_connections\":0,\"requests\":3,\"failures\":1,"
    "\"circuit\":\"closed\",\"circuit_retry_in_s\":null,\"rate_limited_for_s\":30.0,"
    "\"history\":[]},"
    "{\"name\":\"charlie\",\"url\":\"https://c\",\"group\":\"main\",\"current\":false,"
    "\"available\":false,\"status\":\"failed\",\"latency_ms\":null,\"success_rate\":0.5,"
    "\"checks\":4,\"error\":\"HTTP 529 overloaded\",\"active_connections\":0,\"requests\":0,"
    "\"failures\":4,\"circuit\":\"open\",\"circuit_retry_in_s\":12.5,\"history\":[]},"
    "{\"name\":\"delta\",\"url\":\"https://d\",\"group\":\"backup\",\"current\":false,"
    "\"available\":false,\"status\":\"unknown\",\"latency_ms\":null,\"success_rate\":null,"
    "\"checks\":0,\"error\":null,\"active_connections\":0,\"requests\":0,\"failures\":0,"
    "\"circuit\":\"closed\",\"circuit_retry_in_s\":null,\"history\":[]}],"
    "\"requests\":[{\"id\":\"r3f2a\",\"method\":\"POST\",\"path\":\"/v1/messages\","
    "\"endpoint\":\"alpha\",\"group\":\"main\",\"state\":\"streaming\",\"age_ms\":1200,"
    "\"bytes_in\":80000,\"bytes_out\":5120,\"attempts\":1}],"
    "\"events\":[{\"t\":1764000000000,\"kind\":\"switch\","
    "\"message\":\"a -> b (faster: 812 ms -> 300 ms)\",\"from\":\"a\",\"to\":\"b\","
    "\"reason\":\"faster\"},"
    "{\"t\":1764000000000,\"kind\":\"failure\",\"message\":\"charlie failed: HTTP 529\","
    "\"from\":\"charlie\",\"to\":\"\",\"reason\":\"\"}],"
    "\"config\":{\"port\":8080,\"bind\":\"127.0.0.1\",\"switch_threshold_ms\":50,"
    "\"graceful_switch_timeout_ms\":30000,\"health_check\":{\"interval_seconds\":120,"
    "\"min_interval_seconds\":30,\"max_interval_seconds\":3600,\"timeout_seconds\":15,"
    "\"dynamic_scaling\":false}}}";

static cJSON *sample(void)
{
    cJSON *o = cJSON_Parse(sample_json);
    assert_non_null(o);
    return o;
}

/* The invariants of every frame. */
static void check_screen(const struct dv_screen *s, bool ascii)
{
    for (int r = 0; r < s->rows; r++) {
        const struct dv_line *l = &s->lines[r];
        assert_true(l->cols >= 0 && l->cols <= s->cols);
        assert_int_equal(strlen(l->text), l->len);
        assert_int_equal(dv_str_width(l->text), l->cols);
        size_t at = 0;
        for (int i = 0; i < l->n_spans; i++) {
            assert_int_equal(l->spans[i].off, at);
            assert_true(l->spans[i].len > 0);
            at += l->spans[i].len;
        }
        assert_int_equal(at, l->len);
        for (size_t i = 0; i < l->len; i++) {
            unsigned char c = (unsigned char)l->text[i];
            assert_true(c >= 0x20 && c != 0x7F);
            if (ascii)
                assert_true(c < 0x80);
        }
    }
}

static bool screen_has(const struct dv_screen *s, const char *needle)
{
    for (int r = 0; r < s->rows; r++)
        if (strstr(s->lines[r].text, needle))
            return true;
    return false;
}

static int row_with(const struct dv_screen *s, const char *needle)
{
    for (int r = 0; r < s->rows; r++)
        if (strstr(s->lines[r].text, needle))
            return r;
    return -1;
}

static void render(struct dv_screen *s, int rows, int cols, const cJSON *st, struct dv_view *v)
{
    dv_screen_init(s, rows, cols);
    dv_view_observe(v, st, 1000);
    dv_render(s, st, v, 1000);
    check_screen(s, !v->utf8);
}

static void test_frame_80x24(void **state)
{
    (void)state;
    cJSON *st = sample();
    struct dv_view v;
    struct dv_screen s;
    dv_view_init(&v, DV_LANG_EN, true);
    render(&s, 24, 80, st, &v);
    assert_int_equal(s.rows, 24);
    assert_true(strstr(s.lines[0].text, "claude-zephyr 0.1.0") != NULL);
    assert_true(strstr(s.lines[0].text, "http://127.0.0.1:8080") != NULL);
    assert_true(strstr(s.lines[0].text, "up 1h02m") != NULL);
    assert_true(strstr(s.lines[1].text, "Mode: auto") != NULL);
    assert_true(strstr(s.lines[1].text, "Group: main") != NULL);
    assert_true(strstr(s.lines[1].text, "Current: alpha") != NULL);
    assert_true(strstr(s.lines[2].text, "Load: idle") != NULL);
    assert_true(strstr(s.lines[2].text, "Next check: 1m35s") != NULL);
    assert_true(strstr(s.lines[2].text, "Interval: 2m00s") != NULL);
    assert_true(strstr(s.lines[2].text, "Check tokens: 8 in / 1 out") != NULL);
    /* The current group's endpoints only; the cursor starts on the current. */
    assert_true(screen_has(&s, ">* ● alpha"));
    assert_true(screen_has(&s, "   ● bravo"));
    assert_true(screen_has(&s, "   ✗ charlie"));
    assert_false(screen_has(&s, "delta"));
    int r = row_with(&s, "● alpha ");
    assert_true(r > 0);
    assert_int_equal(s.lines[r].bg, DV_SEL);
    assert_true(strstr(s.lines[r].text, "812ms") != NULL);
    assert_true(strstr(s.lines[r].text, "100%") != NULL);
    assert_true(strstr(s.lines[r].text, "closed") != NULL);
    assert_true(strstr(s.lines[r].text, "▂x█") != NULL);
    assert_true(strstr(s.lines[row_with(&s, "charlie")].text, "open 12s") != NULL);
    assert_true(strstr(s.lines[row_with(&s, "bravo")].text, "429 30s") != NULL);
    assert_true(strstr(s.lines[row_with(&s, "bravo")].text, "90%") != NULL);
    /* Requests and events. */
    assert_true(screen_has(&s, "ACTIVE REQUESTS (1)"));
    r = row_with(&s, "r3f2a");
    assert_true(r > 0);
    assert_true(strstr(s.lines[r].text, "streaming") != NULL);
    assert_true(strstr(s.lines[r].text, "1.2s") != NULL);
    assert_true(strstr(s.lines[r].text, "in 78.1K") != NULL);
    assert_true(strstr(s.lines[r].text, "out 5.0K") != NULL);
    assert_true(screen_has(&s, "RECENT EVENTS"));
    assert_true(screen_has(&s, "switch   a -> b (faster: 812 ms -> 300 ms)"));
    assert_true(screen_has(&s, "failure  charlie failed"));
    /* The keys, all of them, on the last row. */
    const char *keys = s.lines[23].text;
    assert_int_equal(s.lines[23].bg, DV_KEYS);
    const char *want[] = {"q quit", "r check", "p pause", "m mode", "↑↓ move", "Enter pin",
                          "g/Tab group", "? help"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (!strstr(keys, want[i]))
            fail_msg("keys row lacks \"%s\": %s", want[i], keys);
    }
    dv_screen_release(&s);
    cJSON_Delete(st);
}

static void test_every_size(void **state)
{
    (void)state;
    cJSON *st = sample();
    for (int utf8 = 0; utf8 <= 1; utf8++) {
        for (int lang = 0; lang <= 1; lang++) {
            for (int rows = 1; rows <= 60; rows += 3) {
                for (int cols = 1; cols <= 420; cols += rows < 20 ? 7 : 41) {
                    struct dv_view v;
                    struct dv_screen s;
                    dv_view_init(&v, (enum dv_lang)lang, utf8);
                    v.show_log = rows % 2;
                    v.help = rows % 5 == 0;
                    render(&s, rows, cols, st, &v);
                    if (rows >= 24 && cols >= 80 && !v.help)
                        assert_true(screen_has(&s, "alpha"));
                    if (rows >= 8 && cols >= 80)
                        assert_true(strstr(s.lines[rows - 1].text, "?") != NULL);
                    dv_screen_release(&s);
                }
            }
        }
    }
    cJSON_Delete(st);
}

static void test_ascii_and_chinese(void **state)
{
    (void)state;
    cJSON *st = sample();
    struct dv_view v;
    struct dv_screen s;
    dv_view_init(&v, DV_LANG_EN, false);
    render(&s, 24, 80, st, &v);
    assert_true(screen_has(&s, ">* + alpha"));
    assert_true(screen_has(&s, "   x charlie"));
    assert_true(screen_has(&s, "Up/Dn move"));
    dv_screen_release(&s);

    dv_view_init(&v, DV_LANG_ZH, true);
    render(&s, 24, 80, st, &v);
    assert_true(screen_has(&s, "模式: 自动"));
    assert_true(screen_has(&s, "分组: main"));
    assert_true(screen_has(&s, "端点 (main)"));
    assert_true(screen_has(&s, "健康"));
    assert_true(screen_has(&s, "活动请求"));
    assert_true(screen_has(&s, "最近事件"));
    assert_true(strstr(s.lines[23].text, "q 退出") != NULL);
    assert_true(strstr(s.lines[23].text, "? 帮助") != NULL);
    dv_screen_release(&s);
    cJSON_Delete(st);
}

static void test_manual_pin_pending_checking(void **state)
{
    (void)state;
    cJSON *st = sample();
    cJSON_ReplaceItemInObject(st, "mode", cJSON_CreateString("manual"));
    cJSON_ReplaceItemInObject(st, "pinned_endpoint", cJSON_CreateString("charlie"));
    cJSON_ReplaceItemInObject(st, "pin_overridden", cJSON_CreateTrue());
    cJSON *ps = cJSON_CreateObject();
    cJSON_AddStringToObject(ps, "to", "bravo");
    cJSON_AddStringToObject(ps, "reason", "faster");
    cJSON_AddNumberToObject(ps, "waiting_ms", 3000);
    cJSON_ReplaceItemInObject(st, "pending_switch", ps);
    cJSON *ch = cJSON_GetObjectItem(st, "checks");
    cJSON_ReplaceItemInObject(ch, "running", cJSON_CreateTrue());

    struct dv_view v;
    struct dv_screen s;
    dv_view_init(&v, DV_LANG_EN, true);
    dv_screen_init(&s, 24, 160);
    dv_view_observe(&v, st, 10000);
    assert_int_equal(v.check_started_ms, 10000);
    dv_render(&s, st, &v, 14000);
    check_screen(&s, false);
    assert_true(strstr(s.lines[1].text, "Mode: manual") != NULL);
    assert_true(strstr(s.lines[1].text, "Current: alpha (pinned charlie is unhealthy)") != NULL);
    assert_true(strstr(s.lines[2].text, "Next check: checking (11s left)") != NULL);
    assert_true(strstr(s.lines[1].text, "switching to bravo (faster, 3.0s)") != NULL);
    /* Wide screens get the counters and the last error. */
    assert_true(screen_has(&s, "REQS"));
    assert_true(screen_has(&s, "HTTP 529 overloaded"));
    dv_screen_release(&s);

    /* Pinned and serving: no need to repeat the name. */
    cJSON_ReplaceItemInObject(st, "pinned_endpoint", cJSON_CreateString("alpha"));
    cJSON_ReplaceItemInObject(st, "pin_overridden", cJSON_CreateFalse());
    render(&s, 24, 80, st, &v);
    assert_true(strstr(s.lines[1].text, "Current: alpha (pinned)") != NULL);
    dv_screen_release(&s);

    cJSON_ReplaceItemInObject(ch, "running", cJSON_CreateFalse());
    cJSON_ReplaceItemInObject(ch, "paused", cJSON_CreateTrue());
    dv_view_observe(&v, st, 20000);
    assert_false(v.was_running);
    render(&s, 24, 80, st, &v);
    assert_true(strstr(s.lines[2].text, "Next check: paused") != NULL);
    assert_true(strstr(s.lines[23].text, "p resume") != NULL);
    dv_screen_release(&s);
    cJSON_Delete(st);
}

/* A misconfigured check has a status of its own, and says what to change. */
static void test_check_error_row(void **state)
{
    (void)state;
    cJSON *st = sample();
    cJSON *eps = cJSON_GetObjectItem(st, "endpoints");
    cJSON *b = cJSON_GetArrayItem(eps, 1);
    cJSON_ReplaceItemInObject(b, "status", cJSON_CreateString("check_error"));
    cJSON_DeleteItemFromObject(b, "rate_limited_for_s");
    cJSON_AddStringToObject(b, "check_error", "check answered HTTP 404; set check_model");
    struct dv_view v;
    struct dv_screen s;
    dv_view_init(&v, DV_LANG_EN, true);
    render(&s, 24, 160, st, &v);
    int r = row_with(&s, "bravo");
    assert_true(r >= 0);
    assert_non_null(strstr(s.lines[r].text, "check err"));
    assert_non_null(strstr(s.lines[r].text, "set check_model"));
    dv_screen_release(&s);
    cJSON_Delete(st);
}

static void test_no_document(void **state)
{
    (void)state;
    struct dv_view v;
    struct dv_screen s;
    dv_view_init(&v, DV_LANG_EN, true);
    render(&s, 24, 80, NULL, &v);
    assert_true(screen_has(&s, "waiting for the first /status"));
    assert_true(strstr(s.lines[23].text, "q quit") != NULL);
    dv_screen_release(&s);

    v.remote = "http://127.0.0.1:9";
    v.error = "http://127.0.0.1:9: Failed to connect to 127.0.0.1 port 9 after 0 ms: Couldn't "
              "connect to server";
    render(&s, 24, 80, NULL, &v);
    assert_true(strstr(s.lines[0].text, "remote http://127.0.0.1:9") != NULL);
    assert_true(screen_has(&s, "cannot reach http://127.0.0.1:9: Failed to connect"));
    /* Wrapped, not cut. */
    assert_true(screen_has(&s, "server"));
    dv_screen_release(&s);

    /* Not an object at all. */
    cJSON *arr = cJSON_CreateArray();
    render(&s, 24, 80, arr, &v);
    dv_screen_release(&s);
    cJSON_Delete(arr);
}

static void test_hostile_strings(void **state)
{
    (void)state;
    cJSON *st = sample();
    cJSON *eps = cJSON_GetObjectItem(st, "endpoints");
    cJSON *ep = cJSON_GetArrayItem(eps, 0);
    cJSON_ReplaceItemInObject(ep, "name", cJSON_CreateString("\x1b[31mevil\r\n\t\x7f"));
    cJSON_ReplaceItemInObject(cJSON_GetArrayItem(eps, 1), "name",
                              cJSON_CreateString("b\xe2\x9a\xa1\xe2\x9c\x97"));
    cJSON *ev = cJSON_GetArrayItem(cJSON_GetObjectItem(st, "events"), 0);
    cJSON_ReplaceItemInObject(ev, "message",
                              cJSON_CreateString("bad \xff\xfe utf8 \xe6\xa8 \xf0\x9f\x98\x80 "
                                                 "\xcc\x81 wide 模式模式模式模式模式模式模式模式模式"
                                                 "模式模式模式模式模式模式模式模式模式模式模式模式"
                                                 "模式模式模式模式模式模式模式模式模式模式"));
    struct dv_view v;
    struct dv_screen s;
    dv_view_init(&v, DV_LANG_EN, true);
    render(&s, 24, 80, st, &v);
    assert_true(screen_has(&s, "?[31mevil"));
    assert_true(screen_has(&s, "b?✗ "));
    assert_true(screen_has(&s, "bad ?? utf8"));
    dv_screen_release(&s);
    for (int cols = 60; cols < 140; cols++) {
        render(&s, 24, cols, st, &v);
        dv_screen_release(&s);
    }
    dv_view_init(&v, DV_LANG_EN, false);
    render(&s, 24, 80, st, &v);
    assert_true(screen_has(&s, "bad ?? utf8"));
    dv_screen_release(&s);
    cJSON_Delete(st);
}

/* Finds the n-th node (pre-order, the root excluded) and its parent. */
static cJSON *nth_node(cJSON *root, int *n, cJSON **parent)
{
    cJSON *c;
    cJSON_ArrayForEach(c, root)
    {
        if ((*n)-- == 0) {
            *parent = root;
            return c;
        }
        cJSON *found = nth_node(c, n, parent);
        if (found)
            return found;
    }
    return NULL;
}

static void test_every_node_of_the_wrong_type(void **state)
{
    (void)state;
    cJSON *proto = sample();
    int total = 0;
    for (;; total++) {
        int n = total;
        cJSON *parent = NULL;
        if (!nth_node(proto, &n, &parent))
            break;
    }
    assert_true(total > 100);
    for (int i = 0; i < total; i++) {
        for (int kind = 0; kind < 7; kind++) {
            cJSON *doc = cJSON_Duplicate(proto, 1);
            int n = i;
            cJSON *parent = NULL;
            cJSON *node = nth_node(doc, &n, &parent);
            assert_non_null(node);
            cJSON *rep;
            switch (kind) {
            case 0: rep = cJSON_CreateNull(); break;
            case 1: rep = cJSON_CreateString("x\x01\xff"); break;
            case 2: rep = cJSON_CreateNumber(1e300); break;
            case 3: rep = cJSON_CreateNumber(-5); break;
            case 4: rep = cJSON_CreateArray(); break;
            case 5: rep = cJSON_CreateObject(); break;
            default: rep = cJSON_CreateTrue(); break;
            }
            assert_true(cJSON_ReplaceItemViaPointer(parent, node, rep));
            struct dv_view v;
            struct dv_screen s;
            dv_view_init(&v, (enum dv_lang)(i % 2), kind % 2 == 0);
            v.show_log = kind == 3;
            render(&s, 24, 80, doc, &v);
            dv_screen_release(&s);
            struct dv_action a;
            static const int keys[] = {'m', 'p', '\n', 'g', 'a', DV_KEY_DOWN, 'r', '?'};
            for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
                dv_handle_key(&v, doc, keys[k], &a);
                dv_action_release(&a);
            }
            cJSON_Delete(doc);
        }
    }
    cJSON_Delete(proto);
}

static void test_many_endpoints_scroll(void **state)
{
    (void)state;
    cJSON *st = sample();
    cJSON *eps = cJSON_CreateArray();
    for (int i = 0; i < 50; i++) {
        char name[16];
        snprintf(name, sizeof name, "ep%02d", i);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", name);
        cJSON_AddStringToObject(e, "group", "main");
        cJSON_AddStringToObject(e, "status", "healthy");
        cJSON_AddBoolToObject(e, "current", i == 0);
        cJSON_AddItemToArray(eps, e);
    }
    cJSON_ReplaceItemInObject(st, "endpoints", eps);
    struct dv_view v;
    struct dv_screen s;
    dv_view_init(&v, DV_LANG_EN, true);
    dv_view_observe(&v, st, 0);
    assert_int_equal(v.cursor, 0);
    struct dv_action a;
    for (int i = 0; i < 40; i++) {
        assert_int_equal(dv_handle_key(&v, st, DV_KEY_DOWN, &a), DV_ACT_REDRAW);
        dv_action_release(&a);
    }
    assert_int_equal(v.cursor, 40);
    render(&s, 24, 80, st, &v);
    int r = row_with(&s, "ep40");
    assert_true(r > 0);
    assert_int_equal(s.lines[r].text[0], '>');
    assert_true(screen_has(&s, "/50"));
    assert_false(screen_has(&s, "ep00"));
    /* The other sections keep a header and a row each. */
    assert_true(screen_has(&s, "ACTIVE REQUESTS"));
    assert_true(screen_has(&s, "RECENT EVENTS"));
    dv_screen_release(&s);
    dv_handle_key(&v, st, DV_KEY_END, &a);
    assert_int_equal(v.cursor, 49);
    dv_handle_key(&v, st, DV_KEY_DOWN, &a);
    assert_int_equal(v.cursor, 49);
    dv_handle_key(&v, st, DV_KEY_HOME, &a);
    assert_int_equal(v.cursor, 0);
    dv_handle_key(&v, st, DV_KEY_UP, &a);
    assert_int_equal(v.cursor, 0);
    cJSON_Delete(st);
}

static void test_keys(void **state)
{
    (void)state;
    cJSON *st = sample();
    struct dv_view v;
    struct dv_action a;
    dv_view_init(&v, DV_LANG_EN, true);
    dv_view_observe(&v, st, 0);

    assert_int_equal(dv_handle_key(&v, st, 'q', &a), DV_ACT_QUIT);
    assert_int_equal(dv_handle_key(&v, st, 'Q', &a), DV_ACT_QUIT);
    assert_int_equal(dv_handle_key(&v, st, 3, &a), DV_ACT_QUIT);

    assert_int_equal(dv_handle_key(&v, st, 'r', &a), DV_ACT_ADMIN);
    assert_string_equal(a.op, "check");
    assert_null(a.body);

    assert_int_equal(dv_handle_key(&v, st, 'p', &a), DV_ACT_ADMIN);
    assert_string_equal(a.op, "pause");
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(st, "checks"), "paused", cJSON_CreateTrue());
    assert_int_equal(dv_handle_key(&v, st, 'p', &a), DV_ACT_ADMIN);
    assert_string_equal(a.op, "resume");

    assert_int_equal(dv_handle_key(&v, st, 'm', &a), DV_ACT_ADMIN);
    assert_string_equal(a.op, "mode");
    assert_string_equal(cJSON_GetObjectItem(a.body, "mode")->valuestring, "manual");
    dv_action_release(&a);
    cJSON_ReplaceItemInObject(st, "mode", cJSON_CreateString("manual"));
    dv_handle_key(&v, st, 'm', &a);
    assert_string_equal(cJSON_GetObjectItem(a.body, "mode")->valuestring, "auto");
    dv_action_release(&a);

    /* The cursor over the current group's endpoints, then Enter pins. */
    assert_int_equal(v.cursor, 0);
    dv_handle_key(&v, st, DV_KEY_DOWN, &a);
    dv_handle_key(&v, st, 'j', &a);
    dv_handle_key(&v, st, DV_KEY_DOWN, &a);
    assert_int_equal(v.cursor, 2);
    dv_handle_key(&v, st, 'k', &a);
    assert_int_equal(v.cursor, 1);
    assert_int_equal(dv_handle_key(&v, st, '\r', &a), DV_ACT_ADMIN);
    assert_string_equal(a.op, "pin");
    assert_string_equal(cJSON_GetObjectItem(a.body, "endpoint")->valuestring, "bravo");
    assert_string_equal(a.what, "pinned bravo");
    dv_action_release(&a);
    assert_int_equal(dv_handle_key(&v, st, DV_KEY_ENTER, &a), DV_ACT_ADMIN);
    dv_action_release(&a);

    /* a: every group, the cursor stays on bravo; Enter can pin delta. */
    assert_int_equal(dv_handle_key(&v, st, 'a', &a), DV_ACT_REDRAW);
    assert_true(v.all_groups);
    assert_int_equal(dv_endpoint_count(st, &v), 4);
    assert_string_equal(dv_endpoint_name(st, &v, v.cursor), "bravo");
    dv_handle_key(&v, st, DV_KEY_END, &a);
    dv_handle_key(&v, st, '\n', &a);
    assert_string_equal(cJSON_GetObjectItem(a.body, "endpoint")->valuestring, "delta");
    dv_action_release(&a);
    dv_handle_key(&v, st, 'a', &a);
    assert_false(v.all_groups);
    assert_int_equal(dv_endpoint_count(st, &v), 3);
    assert_int_equal(v.cursor, 0);

    /* g and Tab: the next group, wrapping. */
    assert_int_equal(dv_handle_key(&v, st, 'g', &a), DV_ACT_ADMIN);
    assert_string_equal(a.op, "group");
    assert_string_equal(cJSON_GetObjectItem(a.body, "group")->valuestring, "backup");
    dv_action_release(&a);
    cJSON_ReplaceItemInObject(st, "current_group", cJSON_CreateString("backup"));
    dv_handle_key(&v, st, '\t', &a);
    assert_string_equal(cJSON_GetObjectItem(a.body, "group")->valuestring, "main");
    dv_action_release(&a);
    cJSON_DeleteItemFromArray(cJSON_GetObjectItem(st, "groups"), 1);
    assert_int_equal(dv_handle_key(&v, st, 'g', &a), DV_ACT_REDRAW);
    assert_string_equal(v.msg, "there is only one group");

    /* ? shows help; any key closes it; q still quits from it. */
    assert_int_equal(dv_handle_key(&v, st, '?', &a), DV_ACT_REDRAW);
    assert_true(v.help);
    assert_int_equal(dv_handle_key(&v, st, '?', &a), DV_ACT_REDRAW);
    assert_false(v.help);
    dv_handle_key(&v, st, '?', &a);
    assert_int_equal(dv_handle_key(&v, st, 'r', &a), DV_ACT_ADMIN);
    assert_false(v.help);
    dv_handle_key(&v, st, '?', &a);
    assert_int_equal(dv_handle_key(&v, st, 'q', &a), DV_ACT_QUIT);

    assert_int_equal(dv_handle_key(&v, st, 'l', &a), DV_ACT_REDRAW);
    assert_true(v.show_log);
    assert_int_equal(dv_handle_key(&v, st, 'z', &a), DV_ACT_NONE);

    /* Without a document only r and quitting do something. */
    assert_int_equal(dv_handle_key(&v, NULL, 'r', &a), DV_ACT_ADMIN);
    assert_int_equal(dv_handle_key(&v, NULL, 'm', &a), DV_ACT_REDRAW);
    assert_string_equal(v.msg, "no status yet");
    assert_int_equal(dv_handle_key(&v, NULL, '\n', &a), DV_ACT_REDRAW);
    assert_int_equal(dv_handle_key(&v, NULL, 'q', &a), DV_ACT_QUIT);
    cJSON_Delete(st);
}

static void test_log_panel(void **state)
{
    (void)state;
    cJSON *st = sample();
    const char *lines[30];
    char buf[30][64];
    for (int i = 0; i < 30; i++) {
        snprintf(buf[i], sizeof buf[i], "2025-01-01T00:00:%02dZ INFO  line %d", i, i);
        lines[i] = buf[i];
    }
    struct dv_view v;
    struct dv_screen s;
    dv_view_init(&v, DV_LANG_EN, true);
    v.show_log = true;
    v.log = lines;
    v.n_log = 30;
    render(&s, 24, 80, st, &v);
    assert_true(screen_has(&s, " LOG"));
    assert_true(screen_has(&s, "line 29"));
    assert_false(screen_has(&s, "line 0\0"));
    assert_false(screen_has(&s, "RECENT EVENTS"));
    /* The newest line sits just above the message row. */
    assert_true(strstr(s.lines[21].text, "line 29") != NULL);
    dv_screen_release(&s);
    cJSON_Delete(st);
}

static void test_sparkline(void **state)
{
    (void)state;
    char out[256];
    const double v[] = {0, 50, 100};
    assert_string_equal(dv_sparkline(out, sizeof out, v, 3, 5, true), "  ▁▅█");
    assert_string_equal(dv_sparkline(out, sizeof out, v, 3, 5, false), "  _=#");
    assert_string_equal(dv_sparkline(out, sizeof out, v, 3, 2, false), "=#");
    const double f[] = {100, -1, 100};
    assert_string_equal(dv_sparkline(out, sizeof out, f, 3, 3, true), "█x█");
    const double zero[] = {0, 0};
    assert_string_equal(dv_sparkline(out, sizeof out, zero, 2, 2, false), "__");
    assert_string_equal(dv_sparkline(out, sizeof out, NULL, 0, 3, true), "   ");
    assert_string_equal(dv_sparkline(out, sizeof out, v, 3, 0, true), "");
    /* A buffer too small is cut, never overrun. */
    char tiny[5];
    dv_sparkline(tiny, sizeof tiny, v, 3, 3, true);
    assert_string_equal(tiny, "▁");
    assert_int_equal(dv_str_width(dv_sparkline(out, sizeof out, v, 3, 32, true)), 32);
}

static void test_formats(void **state)
{
    (void)state;
    char b[32];
    assert_string_equal(dv_fmt_duration(b, sizeof b, 0), "0.0s");
    assert_string_equal(dv_fmt_duration(b, sizeof b, -3), "0.0s");
    assert_string_equal(dv_fmt_duration(b, sizeof b, 9.97), "9.9s");
    assert_string_equal(dv_fmt_duration(b, sizeof b, 42.9), "42s");
    assert_string_equal(dv_fmt_duration(b, sizeof b, 95), "1m35s");
    assert_string_equal(dv_fmt_duration(b, sizeof b, 3600), "1h00m");
    assert_string_equal(dv_fmt_duration(b, sizeof b, 3725), "1h02m");
    assert_string_equal(dv_fmt_duration(b, sizeof b, 90000), "1d01h");
    assert_string_equal(dv_fmt_duration(b, sizeof b, 1e300), "long");
    assert_string_equal(dv_fmt_bytes(b, sizeof b, 812), "812B");
    assert_string_equal(dv_fmt_bytes(b, sizeof b, 80000), "78.1K");
    assert_string_equal(dv_fmt_bytes(b, sizeof b, 5 * 1024.0 * 1024), "5.0M");
    assert_string_equal(dv_fmt_bytes(b, sizeof b, 3 * 1024.0 * 1024 * 1024), "3.0G");
    assert_string_equal(dv_fmt_bytes(b, sizeof b, -1), "0B");
    assert_string_equal(dv_fmt_count(b, sizeof b, 999), "999");
    assert_string_equal(dv_fmt_count(b, sizeof b, 12345), "12.3k");
    assert_string_equal(dv_fmt_count(b, sizeof b, 4.5e6), "4.5M");
    assert_string_equal(dv_fmt_count(b, sizeof b, 1e300), "huge");
    assert_int_equal(dv_str_width("abc"), 3);
    assert_int_equal(dv_str_width("模式"), 4);
    assert_int_equal(dv_str_width("▁█●"), 3);
    assert_int_equal(dv_str_width(""), 0);
    assert_int_equal(dv_str_width(NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_80x24),
        cmocka_unit_test(test_every_size),
        cmocka_unit_test(test_ascii_and_chinese),
        cmocka_unit_test(test_manual_pin_pending_checking),
        cmocka_unit_test(test_check_error_row),
        cmocka_unit_test(test_no_document),
        cmocka_unit_test(test_hostile_strings),
        cmocka_unit_test(test_every_node_of_the_wrong_type),
        cmocka_unit_test(test_many_endpoints_scroll),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_log_panel),
        cmocka_unit_test(test_sparkline),
        cmocka_unit_test(test_formats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
