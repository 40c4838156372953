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
    /* Lower-priority items give way whole at 80 columns; never a cut number. */
    assert_true(strstr(s.lines[0].text, "requests 40") != NULL);
    assert_true(strstr(s.lines[2].text, "retries 2") != NULL);
    /* The current group's endpoints only; the cursor starts on the current. */
    assert_true(screen_has(&s, ">* ● alpha"));
    assert_true(screen_has(&s, "   ● bravo"));
    assert_true(screen_has(&s, "   ✗ charlie"));
    assert_false(screen_has(&s, "delta"));
    int r = row_with(&s, "● alpha ");
    assert_true(r > 0);
    assert_int_equal(s.lines[r].bg, DV_SEL);
    /* The smoothed latency (what switching compares) and the last check's. */
    assert_true(strstr(s.lines[r].text, "790ms 812ms") != NULL);
    assert_true(strstr(s.lines[r].text, "100%") != NULL);
    assert_true(strstr(s.lines[r].text, "closed") != NULL);
    /* REQS and FAIL, exact. */
    assert_true(strstr(s.lines[r].text, " 40    0 ") != NULL);
    assert_true(screen_has(&s, "SMOOTHED"));
    assert_true(screen_has(&s, "LAST ERROR"));
    assert_true(strstr(s.lines[row_with(&s, "charlie")].text, "HTTP 529 ") != NULL);
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
    const char *want[] = {"q quit",  "r check",   "p pause",     "m mode",
                          "↑↓ move", "Enter pin", "g/Tab group", "? help"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (!strstr(keys, want[i]))
            fail_msg("keys row lacks \"%s\": %s", want[i], keys);
    }
    dv_screen_release(&s);
    cJSON_Delete(st);
}

/* With [cluster], the load line says whether state is shared, and warns
 * when Redis is down; without it, nothing about a fleet. */
static void test_fleet_state(void **state)
{
    (void)state;
    cJSON *st = sample();
    struct dv_view v;
    struct dv_screen s;
    dv_view_init(&v, DV_LANG_EN, true);
    render(&s, 24, 120, st, &v);
    assert_false(screen_has(&s, "fleet:"));
    dv_screen_release(&s);
    cJSON *cl = cJSON_AddObjectToObject(st, "cluster");
    cJSON_AddBoolToObject(cl, "shared", false);
    render(&s, 24, 120, st, &v);
    assert_true(strstr(s.lines[2].text, "fleet: Redis down, local state") != NULL);
    dv_screen_release(&s);
    cJSON_ReplaceItemInObject(cl, "shared", cJSON_CreateTrue());
    render(&s, 24, 120, st, &v);
    assert_true(strstr(s.lines[2].text, "fleet: Redis") != NULL);
    assert_false(screen_has(&s, "Redis down"));
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
    assert_true(screen_has(&s, "     端点 "));
    /* The load level and the check method are translated too. */
    assert_true(screen_has(&s, "负载: 空闲"));
    assert_true(screen_has(&s, "检查方式: 消息请求"));
    assert_false(screen_has(&s, "idle"));
    assert_false(screen_has(&s, ": messages"));
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
    assert_true(strstr(s.lines[2].text, " checking: 11 s until timeout") != NULL);
    assert_true(strstr(s.lines[1].text, "switching to bravo (faster, 3.0s)") != NULL);
    /* Wide screens get every column, the history and the whole last error. */
    assert_true(screen_has(&s, "REQS"));
    assert_true(screen_has(&s, "HISTORY"));
    assert_true(screen_has(&s, "▂x█"));
    assert_true(screen_has(&s, "HTTP 529 overloaded"));
    assert_true(strstr(s.lines[2].text, "Check tokens: 8 in / 1 out") != NULL);
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
    cJSON_ReplaceItemInObject(
        ev, "message",
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

/* Replaces (or adds) key in o. */
static void set_item(cJSON *o, const char *key, cJSON *val)
{
    if (cJSON_GetObjectItem(o, key))
        cJSON_ReplaceItemInObject(o, key, val);
    else
        cJSON_AddItemToObject(o, key, val);
}

/* A document made to be hard to lay out: long names that differ only at
 * the end, numbers of many digits, a long error, a full history. */
static cJSON *crowded(void)
{
    cJSON *st = sample();
    set_item(st, "requests_total", cJSON_CreateNumber(1234567));
    set_item(st, "active_connections", cJSON_CreateNumber(345));
    cJSON *eps = cJSON_GetObjectItem(st, "endpoints");
    static const char *names[] = {"relay-frankfurt-primary-1", "relay-frankfurt-primary-2",
                                  "relay-frankfurt-primary-3"};
    static const double reqs[] = {987654, 55, 3210};
    static const double fails[] = {4321, 0, 76543};
    for (int i = 0; i < 3; i++) {
        cJSON *e = cJSON_GetArrayItem(eps, i);
        set_item(e, "name", cJSON_CreateString(names[i]));
        set_item(e, "requests", cJSON_CreateNumber(reqs[i]));
        set_item(e, "failures", cJSON_CreateNumber(fails[i]));
        set_item(e, "status", cJSON_CreateString("healthy"));
        set_item(e, "smoothed_latency_ms", cJSON_CreateNumber(1000 + i * 111));
        cJSON *h = cJSON_CreateArray();
        for (int k = 0; k < 32; k++) {
            cJSON *one = cJSON_CreateObject();
            cJSON_AddBoolToObject(one, "ok", 1);
            cJSON_AddNumberToObject(one, "latency_ms", 100 + k * 10);
            cJSON_AddItemToArray(h, one);
        }
        set_item(e, "history", h);
    }
    set_item(cJSON_GetArrayItem(eps, 1), "error",
             cJSON_CreateString("HTTP 529 overloaded: the upstream is busy, retry later"));
    set_item(cJSON_GetObjectItem(st, "current_endpoint"), "name",
             cJSON_CreateString("relay-frankfurt-primary-1"));
    return st;
}

/* The name cell of an endpoint row: after the 5 lead columns, up to the
 * status label. */
static void name_cell(const char *line, const char *label, char *out, size_t outsz)
{
    const char *p = line;
    for (int col = 0; col < 5 && *p; col++) {
        p++;
        while ((*p & 0xC0) == 0x80)
            p++;
    }
    const char *end = strstr(p, label);
    size_t n = end ? (size_t)(end - p) : strlen(p);
    while (n > 0 && p[n - 1] == ' ')
        n--;
    snprintf(out, outsz, "%.*s", (int)n, p);
}

/* A number shown whole, or not at all: never a prefix of it alone. */
static void assert_whole_or_absent(const char *line, double n, bool must, int cols)
{
    char whole[32], cut[32];
    snprintf(whole, sizeof whole, " %.0f ", n);
    snprintf(cut, sizeof cut, " %.0f", n);
    cut[strlen(cut) - 1] = '\0'; /* drop the last digit */
    if (must && !strstr(line, whole))
        fail_msg("%d cols: %s missing from \"%s\"", cols, whole, line);
    if (strstr(line, cut) && !strstr(line, whole))
        fail_msg("%d cols: %s cut in \"%s\"", cols, whole, line);
}

/* Issue 14: at every width the layout drops whole columns (the history
 * first) rather than cut a number; names are cut last, in the middle, and
 * stay apart; headers are never cut. */
static void test_layout_priority(void **state)
{
    (void)state;
    cJSON *st = crowded();
    static const double reqs[] = {987654, 55, 3210};
    static const double fails[] = {4321, 0, 76543};
    for (int lang = 0; lang <= 1; lang++) {
        for (int utf8 = 0; utf8 <= 1; utf8++) {
            if (lang == DV_LANG_ZH && !utf8)
                continue;
            for (int cols = 60; cols <= 300; cols++) {
                struct dv_view v;
                struct dv_screen s;
                dv_view_init(&v, (enum dv_lang)lang, utf8);
                render(&s, 24, cols, st, &v);
                const char *reqs_h = lang ? "请求" : "REQS", *fail_h = lang ? "失败" : "FAIL";
                const char *err_h = lang ? "最近错误" : "LAST ERROR";
                const char *hist_h = lang ? "历史" : "HISTORY";
                const char *ok_label = lang ? "健康" : "healthy";
                /* The title's numbers: whole, or the item is gone. */
                const char *t = s.lines[0].text;
                const char *req_word = lang ? "请求" : "requests";
                if (strstr(t, req_word)) {
                    char want[64];
                    snprintf(want, sizeof want, "%s 1234567", req_word);
                    assert_non_null(strstr(t, want));
                }
                if (cols >= 80)
                    assert_non_null(strstr(t, req_word));
                /* The table header: whole words, no ellipsis. */
                int h = row_with(&s, lang ? "端点" : "ENDPOINT");
                assert_true(h > 0);
                const char *head = s.lines[h].text;
                if (strstr(head, "…") || strstr(head, "~"))
                    fail_msg("%d cols: a cut header: \"%s\"", cols, head);
                bool has_reqs = strstr(head, reqs_h) != NULL;
                bool has_fail = strstr(head, fail_h) != NULL;
                bool has_err = strstr(head, err_h) != NULL;
                bool has_hist = strstr(head, hist_h) != NULL;
                /* At 80 columns REQS, FAIL and LAST ERROR are there. */
                if (cols >= 80 && !(has_reqs && has_fail && has_err))
                    fail_msg("%d cols: REQS/FAIL/LAST ERROR missing: \"%s\"", cols, head);
                /* The history is the first to go. */
                if (has_hist && !(has_reqs && has_fail && has_err))
                    fail_msg("%d cols: history kept before a counter: \"%s\"", cols, head);
                char names[3][256];
                for (int i = 0; i < 3; i++) {
                    char key[32];
                    snprintf(key, sizeof key, "-%d", i + 1);
                    int r = -1;
                    for (int k = h + 1; k < h + 4; k++)
                        if (strstr(s.lines[k].text, key))
                            r = k;
                    if (r < 0)
                        fail_msg("%d cols: endpoint %d not told apart", cols, i + 1);
                    const char *line = s.lines[r].text;
                    assert_whole_or_absent(line, reqs[i], has_reqs, cols);
                    assert_whole_or_absent(line, fails[i], has_fail, cols);
                    name_cell(line, ok_label, names[i], sizeof names[i]);
                    /* Cut names say so. */
                    if (!strstr(names[i], "relay-frankfurt-primary-"))
                        assert_non_null(strstr(names[i], utf8 ? "…" : "~"));
                }
                assert_string_not_equal(names[0], names[1]);
                assert_string_not_equal(names[1], names[2]);
                /* Names are cut only when nothing else is left to drop. */
                if (cols >= 100 && !strstr(names[0], "relay-frankfurt-primary-1"))
                    fail_msg("%d cols: a name cut while a column could go: \"%s\"", cols, names[0]);
                dv_screen_release(&s);
            }
        }
    }
    cJSON_Delete(st);
}

/* A big terminal: a longer history, and events and the log side by side. */
static void test_big_screen_side_by_side(void **state)
{
    (void)state;
    cJSON *st = crowded();
    const char *lines[40];
    char buf[40][64];
    for (int i = 0; i < 40; i++) {
        snprintf(buf[i], sizeof buf[i], "2025-01-01T00:00:%02dZ INFO  line %d", i, i);
        lines[i] = buf[i];
    }
    struct dv_view v;
    struct dv_screen s;
    dv_view_init(&v, DV_LANG_EN, true);
    v.log = lines;
    v.n_log = 40;
    render(&s, 70, 250, st, &v);
    int r = row_with(&s, " RECENT EVENTS");
    assert_true(r > 0);
    assert_non_null(strstr(s.lines[r].text, " LOG"));
    assert_true(strstr(s.lines[r].text, " LOG") - s.lines[r].text >= 120);
    assert_non_null(strstr(s.lines[r + 1].text, "faster"));
    assert_non_null(strstr(s.lines[r + 1].text, "INFO  line"));
    /* All forty log lines fit beside the events. */
    assert_non_null(strstr(s.lines[r + 1].text, "line 0"));
    assert_non_null(strstr(s.lines[r + 40].text, "line 39"));
    /* The whole history (32 checks) fits. */
    assert_true(screen_has(&s, "▃▃▃▃▃▄▄▄▄▄▄▅▅▅▅▅▅▆▆▆▆▆▆▇▇▇▇▇▇███ "));
    dv_screen_release(&s);

    /* 160 columns: one panel at a time, l switches. */
    render(&s, 45, 160, st, &v);
    assert_true(screen_has(&s, " RECENT EVENTS"));
    assert_false(screen_has(&s, " LOG"));
    assert_true(screen_has(&s, "HISTORY"));
    dv_screen_release(&s);
    v.show_log = true;
    render(&s, 45, 160, st, &v);
    assert_false(screen_has(&s, " RECENT EVENTS"));
    assert_true(screen_has(&s, "line 39"));
    dv_screen_release(&s);

    /* --connect has no log: l says so, and a wide screen keeps one panel. */
    v.remote = "http://127.0.0.1:8080";
    render(&s, 45, 160, st, &v);
    assert_true(screen_has(&s, "the log is not available with --connect"));
    assert_false(screen_has(&s, "line 39"));
    assert_false(screen_has(&s, "no log lines"));
    dv_screen_release(&s);
    v.show_log = false;
    render(&s, 70, 250, st, &v);
    assert_true(screen_has(&s, " RECENT EVENTS"));
    assert_false(screen_has(&s, " LOG"));
    dv_screen_release(&s);
    cJSON_Delete(st);
}

/* ui.language = "zh": event texts, the load level, the check method, a
 * running check, check_error and panic routing. */
static void test_chinese_everywhere(void **state)
{
    (void)state;
    cJSON *st = sample();
    cJSON *evs = cJSON_CreateArray();
    static const char *ev[][2] = {
        {"switch", "[main] alpha (812 ms) -> bravo (300 ms): faster"},
        {"failure", "charlie failed: HTTP 529"},
        {"recovery", "charlie recovered (200 ms)"},
        {"info", "[main] panic routing: no endpoint passes its checks"},
        {"info", "mode: manual, pinned to bravo"},
        {"switch", "group main -> backup (alpha -> delta)"},
    };
    for (size_t i = 0; i < sizeof ev / sizeof ev[0]; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "t", 1764000000000.0);
        cJSON_AddStringToObject(e, "kind", ev[i][0]);
        cJSON_AddStringToObject(e, "message", ev[i][1]);
        cJSON_AddItemToArray(evs, e);
    }
    cJSON_ReplaceItemInObject(st, "events", evs);
    cJSON_ReplaceItemInObject(cJSON_GetArrayItem(cJSON_GetObjectItem(st, "endpoints"), 1), "status",
                              cJSON_CreateString("check_error"));
    cJSON_AddTrueToObject(cJSON_GetArrayItem(cJSON_GetObjectItem(st, "groups"), 0), "panic");
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(st, "checks"), "running", cJSON_CreateTrue());
    struct dv_view v;
    struct dv_screen s;
    dv_view_init(&v, DV_LANG_ZH, true);
    dv_screen_init(&s, 30, 100);
    dv_view_observe(&v, st, 10000);
    dv_render(&s, st, &v, 14000);
    check_screen(&s, false);
    assert_true(screen_has(&s, "[main] alpha (812 ms) -> bravo (300 ms)：更快"));
    assert_true(screen_has(&s, "charlie 检查失败：HTTP 529"));
    assert_true(screen_has(&s, "charlie 已恢复 (200 ms)"));
    assert_true(screen_has(&s, "[main] 应急路由：没有端点通过检查"));
    assert_true(screen_has(&s, "模式：手动，固定到 bravo"));
    assert_true(screen_has(&s, "分组 main -> backup"));
    assert_true(strstr(s.lines[2].text, "检查中：11 秒后超时") != NULL ||
                strstr(s.lines[2].text, "检查中：11 s后超时") != NULL);
    assert_true(strstr(s.lines[1].text, "应急路由") != NULL);
    assert_true(screen_has(&s, "检查配置错"));
    /* Every header whole, measured in display columns. */
    int h = row_with(&s, "     端点");
    assert_true(h > 0);
    static const char *heads[] = {"状态", "平滑延迟", "成功", "熔断", "并发", "请求", "失败"};
    for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++)
        if (!strstr(s.lines[h].text, heads[i]))
            fail_msg("header %s cut or missing: \"%s\"", heads[i], s.lines[h].text);
    assert_null(strstr(s.lines[h].text, "…"));
    dv_screen_release(&s);

    /* English: the same statuses, and the events as they came. */
    dv_view_init(&v, DV_LANG_EN, true);
    dv_screen_init(&s, 30, 100);
    dv_view_observe(&v, st, 10000);
    dv_render(&s, st, &v, 14000);
    assert_true(strstr(s.lines[1].text, "panic routing: no endpoint passes its checks") != NULL);
    assert_true(strstr(s.lines[2].text, "checking: 11 s until timeout") != NULL);
    assert_true(screen_has(&s, "charlie failed: HTTP 529"));
    assert_true(screen_has(&s, "check err"));
    dv_screen_release(&s);
    cJSON_Delete(st);
}

/* Issue 13: traffic served by a fallback group (another account) is said
 * on the mode line, and nothing is said while the current group serves. */
static void test_fallback_on_mode_line(void **state)
{
    (void)state;
    cJSON *st = sample();
    struct dv_view v;
    struct dv_screen s;
    dv_view_init(&v, DV_LANG_EN, true);
    render(&s, 24, 120, st, &v);
    assert_null(strstr(s.lines[1].text, "fallback"));
    dv_screen_release(&s);
    cJSON *fb = cJSON_AddObjectToObject(st, "fallback");
    cJSON_AddTrueToObject(fb, "active");
    cJSON_AddStringToObject(fb, "group", "relay-b");
    render(&s, 24, 120, st, &v);
    assert_non_null(strstr(s.lines[1].text, "fallback: served by group relay-b"));
    dv_screen_release(&s);
    cJSON_Delete(st);
}

/* Issue 14: the session count in each endpoint row (when any endpoint
 * holds one), the sessions view ('s') and the release keys ('x' for the
 * endpoint under the cursor, 'X' for all). */
static void test_sessions_column_view_and_release(void **state)
{
    (void)state;
    cJSON *st = sample();
    cJSON *eps = cJSON_GetObjectItem(st, "endpoints");
    cJSON_AddNumberToObject(cJSON_GetArrayItem(eps, 0), "sessions", 0);
    cJSON_AddNumberToObject(cJSON_GetArrayItem(eps, 1), "sessions", 7);
    cJSON *so = cJSON_AddObjectToObject(st, "sessions");
    cJSON_AddBoolToObject(so, "enabled", 1);
    cJSON_AddNumberToObject(so, "total", 7);
    cJSON_AddNumberToObject(so, "switch_threshold_ms", 500);
    cJSON *list = cJSON_AddArrayToObject(so, "list");
    cJSON *x = cJSON_CreateObject();
    cJSON_AddStringToObject(x, "id", "1dd16ba1");
    cJSON_AddStringToObject(x, "endpoint", "bravo");
    cJSON_AddStringToObject(x, "group", "main");
    cJSON_AddNumberToObject(x, "age_s", 95);
    cJSON_AddNumberToObject(x, "idle_s", 3);
    cJSON_AddItemToArray(list, x);
    struct dv_view v;
    struct dv_screen s;
    dv_view_init(&v, DV_LANG_EN, true);
    render(&s, 24, 100, st, &v);
    int h = row_with(&s, "ENDPOINT");
    assert_true(h > 0);
    assert_non_null(strstr(s.lines[h].text, "SESS"));
    int r = row_with(&s, "● bravo ");
    assert_true(r > 0);
    assert_non_null(strstr(s.lines[r].text, "   7 "));
    assert_true(screen_has(&s, "RECENT EVENTS"));
    assert_false(screen_has(&s, "1dd16ba1"));
    dv_screen_release(&s);
    /* 's' shows the sessions in place of the events. */
    struct dv_action a;
    assert_int_equal(dv_handle_key(&v, st, 's', &a), DV_ACT_REDRAW);
    assert_true(v.show_sessions);
    render(&s, 24, 100, st, &v);
    assert_true(screen_has(&s, "SESSIONS (7)"));
    assert_false(screen_has(&s, "RECENT EVENTS"));
    r = row_with(&s, "1dd16ba1");
    assert_true(r > 0);
    assert_non_null(strstr(s.lines[r].text, "bravo"));
    assert_non_null(strstr(s.lines[r].text, "1m35s"));
    dv_screen_release(&s);
    /* 'l' and 's' take turns. */
    dv_handle_key(&v, st, 'l', &a);
    assert_false(v.show_sessions);
    dv_handle_key(&v, st, 's', &a);
    assert_false(v.show_log);
    /* 'x' releases the cursor's endpoint's sessions, 'X' all. */
    dv_handle_key(&v, st, DV_KEY_DOWN, &a);
    assert_int_equal(dv_handle_key(&v, st, 'x', &a), DV_ACT_ADMIN);
    assert_string_equal(a.op, "sessions/release");
    assert_string_equal(cJSON_GetObjectItem(a.body, "endpoint")->valuestring, "bravo");
    dv_action_release(&a);
    assert_int_equal(dv_handle_key(&v, st, 'X', &a), DV_ACT_ADMIN);
    assert_string_equal(a.op, "sessions/release");
    assert_non_null(a.body);
    assert_null(cJSON_GetObjectItem(a.body, "endpoint"));
    dv_action_release(&a);
    /* No endpoint holds a session: no column. */
    cJSON_ReplaceItemInObject(cJSON_GetArrayItem(eps, 1), "sessions", cJSON_CreateNumber(0));
    v.show_sessions = false;
    render(&s, 24, 100, st, &v);
    assert_null(strstr(s.lines[row_with(&s, "ENDPOINT")].text, "SESS"));
    dv_screen_release(&s);
    cJSON_Delete(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_80x24),
        cmocka_unit_test(test_fleet_state),
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
        cmocka_unit_test(test_layout_priority),
        cmocka_unit_test(test_big_screen_side_by_side),
        cmocka_unit_test(test_chinese_everywhere),
        cmocka_unit_test(test_sessions_column_view_and_release),
        cmocka_unit_test(test_fallback_on_mode_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
