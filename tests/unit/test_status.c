/*
 * Unit tests for status: the /status document that the terminal dashboard,
 * the web page and monitor.sh read.  status_render() is pure, so every test
 * builds a state from a configuration text, moves it with the state's own
 * functions and a fake clock, renders a snapshot of it, and checks the fields people and
 * scripts rely on: names, rounding, clocks, order of history and events,
 * operator state, requests in flight, and that no token is ever in it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "state.h"
#include "state_reports.h"
#include "status_golden.h"
#include "status.h"
#include "util.h"

#define T0 1000000u                               /* the fake monotonic clock at state_new */
#define W0 1764000000000ull                       /* the fake wall clock at state_new */
#define TOKEN "sk-zt-status-3f9a1c7e5b2d4a6f8e0c" /* a group token; never rendered */

static uint64_t fake_wall = W0;

static uint64_t fake_wall_ms(void)
{
    return fake_wall;
}

/* Two groups: main (default, x-api-key token, endpoints a and b) and
 * other (no token, endpoint c). */
static const char config_text[] =
    "[server]\n"
    "port = 8123\n"
    "bind = \"127.0.0.1\"\n"
    "[[groups]]\n"
    "name = \"main\"\n"
    "default = true\n"
    "auth_token_env = \"ZT_STATUS_TOKEN\"\n"
    "endpoints = [\n"
    "  { url = \"http://127.0.0.1:9/a\", name = \"a\" },\n"
    "  { url = \"http://127.0.0.1:9/b\", name = \"b\" },\n"
    "]\n"
    "[[groups]]\n"
    "name = \"other\"\n"
    "endpoints = [{ url = \"http://127.0.0.1:9/c\", name = \"c\" }]\n";

struct fixture {
    struct config *cfg;
    struct state *st;
};

static int setup(void **ctx)
{
    struct fixture *f = xcalloc(1, sizeof *f);
    char *errors = NULL;
    setenv("ZT_STATUS_TOKEN", TOKEN, 1);
    int rc = config_load_string("status.toml", config_text, strlen(config_text), &f->cfg, &errors);
    if (rc != 0)
        print_error("%s\n", errors ? errors : "(null)");
    free(errors);
    assert_int_equal(rc, 0);
    fake_wall = W0;
    f->st = state_new(f->cfg, T0, W0);
    state_set_wall_clock(f->st, fake_wall_ms);
    *ctx = f;
    return 0;
}

static int teardown(void **ctx)
{
    struct fixture *f = *ctx;
    state_free(f->st);
    config_free(f->cfg);
    free(f);
    return 0;
}

static cJSON *render(const struct state *st, uint64_t now_mono)
{
    struct status_info info = {
        .version = "9.8.7",
        .listen = "127.0.0.1:8123",
        .now_mono_ms = now_mono,
        .now_wall_ms = W0 + (now_mono - T0),
    };
    /* As app.c renders /status: from a snapshot taken at the same moment. */
    struct state_snapshot snap;
    state_snapshot_take(st, now_mono, &snap);
    cJSON *doc = status_render(&snap, &info);
    state_snapshot_release(&snap);
    assert_non_null(doc);
    return doc;
}

static const cJSON *get(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v)
        print_error("no key %s\n", key);
    assert_non_null(v);
    return v;
}

static const char *str(const cJSON *o, const char *key)
{
    const cJSON *v = get(o, key);
    assert_true(cJSON_IsString(v));
    return v->valuestring;
}

static double num(const cJSON *o, const char *key)
{
    const cJSON *v = get(o, key);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

static const cJSON *endpoint(const cJSON *doc, const char *name)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, get(doc, "endpoints"))
    {
        if (strcmp(str(e, "name"), name) == 0)
            return e;
    }
    fail_msg("no endpoint %s", name);
    return NULL;
}

static void test_top_level_and_clocks(void **ctx)
{
    struct fixture *f = *ctx;
    cJSON *doc = render(f->st, T0 + 2999);
    assert_string_equal(str(doc, "version"), "9.8.7");
    assert_string_equal(str(doc, "listen"), "127.0.0.1:8123");
    /* Whole seconds since start, on the monotonic clock passed in. */
    assert_true(num(doc, "uptime_s") == 2.0);
    assert_string_equal(str(doc, "mode"), "auto");
    assert_string_equal(str(doc, "current_group"), "main");
    assert_true(cJSON_IsNull(get(doc, "pinned_endpoint")));
    assert_true(cJSON_IsNull(get(doc, "pending_switch")));
    assert_true(num(doc, "active_connections") == 0);
    assert_int_equal(cJSON_GetArraySize(get(doc, "endpoints")), 3);
    const cJSON *cfg = get(doc, "config");
    assert_true(num(cfg, "port") == 8123);
    assert_string_equal(str(cfg, "bind"), "127.0.0.1");
    /* Unscheduled checks: no countdown. */
    assert_true(cJSON_IsNull(get(get(doc, "checks"), "next_check_in_s")));
    cJSON_Delete(doc);
}

static void test_groups_and_auth(void **ctx)
{
    struct fixture *f = *ctx;
    cJSON *doc = render(f->st, T0);
    const cJSON *groups = get(doc, "groups");
    assert_int_equal(cJSON_GetArraySize(groups), 2);
    const cJSON *g0 = cJSON_GetArrayItem(groups, 0), *g1 = cJSON_GetArrayItem(groups, 1);
    assert_string_equal(str(g0, "name"), "main");
    assert_true(cJSON_IsTrue(get(g0, "current")));
    assert_string_equal(str(g0, "auth"), "x-api-key");
    assert_true(num(g0, "endpoints") == 2);
    assert_string_equal(str(g1, "name"), "other");
    assert_true(cJSON_IsFalse(get(g1, "current")));
    assert_string_equal(str(g1, "auth"), "passthrough");
    cJSON_Delete(doc);
}

static void test_never_holds_the_token(void **ctx)
{
    struct fixture *f = *ctx;
    uint64_t now = T0 + 10;
    report_check(f->st, 0, true, false, 80.0, -1, NULL, NULL, now, W0 + 10);
    report_live_failure(f->st, 1, "connect failed", now);
    cJSON *doc = render(f->st, now);
    char *text = cJSON_PrintUnformatted(doc);
    assert_non_null(text);
    assert_null(strstr(text, TOKEN));
    assert_null(strstr(text, "ZT_STATUS_TOKEN"));
    free(text);
    cJSON_Delete(doc);
}

static void test_check_result_latency_and_history(void **ctx)
{
    struct fixture *f = *ctx;
    int a = state_find_ep(f->st, "a");
    assert_true(a >= 0);
    report_check(f->st, a, true, false, 123.456, -1, NULL, NULL, T0 + 100, W0 + 100);
    report_check(f->st, a, false, false, -1, -1, "timed out", NULL, T0 + 200, W0 + 200);
    report_check(f->st, a, true, false, 99.94, -1, NULL, NULL, T0 + 300, W0 + 300);
    cJSON *doc = render(f->st, T0 + 300);
    const cJSON *e = endpoint(doc, "a");
    assert_string_equal(str(e, "url"), "http://127.0.0.1:9/a");
    assert_string_equal(str(e, "group"), "main");
    /* One decimal. */
    assert_true(num(e, "latency_ms") == 99.9);
    assert_true(num(e, "checks") == 3);
    assert_true(num(e, "success_rate") > 0.66 && num(e, "success_rate") < 0.67);
    /* History: oldest first, each with the wall time it was taken at. */
    const cJSON *hist = get(e, "history");
    assert_int_equal(cJSON_GetArraySize(hist), 3);
    assert_true(num(cJSON_GetArrayItem(hist, 0), "t") == (double)(W0 + 100));
    assert_true(num(cJSON_GetArrayItem(hist, 0), "latency_ms") == 123.5);
    assert_true(cJSON_IsFalse(get(cJSON_GetArrayItem(hist, 1), "ok")));
    assert_string_equal(str(cJSON_GetArrayItem(hist, 1), "error"), "timed out");
    assert_true(cJSON_IsNull(get(cJSON_GetArrayItem(hist, 2), "error")));
    /* An endpoint never checked says so with nulls, not zeros. */
    const cJSON *b = endpoint(doc, "b");
    assert_true(cJSON_IsNull(get(b, "latency_ms")));
    assert_true(cJSON_IsNull(get(b, "success_rate")));
    assert_int_equal(cJSON_GetArraySize(get(b, "history")), 0);
    cJSON_Delete(doc);
}

static void test_rate_limit_countdown(void **ctx)
{
    struct fixture *f = *ctx;
    int b = state_find_ep(f->st, "b");
    report_rate_limited(f->st, b, T0 + 30000, T0);
    cJSON *doc = render(f->st, T0 + 12500);
    assert_true(num(endpoint(doc, "b"), "rate_limited_for_s") == 17.5);
    /* Not there at all once the rest is over. */
    cJSON_Delete(doc);
    doc = render(f->st, T0 + 30000);
    assert_null(cJSON_GetObjectItemCaseSensitive(endpoint(doc, "b"), "rate_limited_for_s"));
    cJSON_Delete(doc);
}

static void test_events_newest_first_on_the_clock_passed_in(void **ctx)
{
    struct fixture *f = *ctx;
    fake_wall = W0 + 5000;
    state_event(f->st, "info", "", "", "manual", "first %d", 1);
    fake_wall = W0 + 6000;
    state_event(f->st, "info", "", "", "manual", "second %d", 2);
    cJSON *doc = render(f->st, T0 + 6000);
    const cJSON *evs = get(doc, "events");
    assert_true(cJSON_GetArraySize(evs) >= 2);
    const cJSON *e0 = cJSON_GetArrayItem(evs, 0), *e1 = cJSON_GetArrayItem(evs, 1);
    assert_string_equal(str(e0, "message"), "second 2");
    assert_true(num(e0, "t") == (double)(W0 + 6000));
    assert_string_equal(str(e1, "message"), "first 1");
    assert_true(num(e1, "t") == (double)(W0 + 5000));
    assert_string_equal(str(e0, "reason"), "manual");
    cJSON_Delete(doc);
}

static void test_pin_and_manual_mode(void **ctx)
{
    struct fixture *f = *ctx;
    char err[128] = "";
    uint64_t now = T0 + 50;
    report_check(f->st, 0, true, false, 50, -1, NULL, NULL, now, W0);
    report_check(f->st, 1, true, false, 60, -1, NULL, NULL, now, W0);
    assert_int_equal(state_pin(f->st, state_find_ep(f->st, "b"), now, err, sizeof err), 0);
    cJSON *doc = render(f->st, now);
    assert_string_equal(str(doc, "mode"), "manual");
    assert_string_equal(str(doc, "pinned_endpoint"), "b");
    assert_string_equal(str(get(doc, "current_endpoint"), "name"), "b");
    assert_true(cJSON_IsTrue(get(endpoint(doc, "b"), "current")));
    assert_true(cJSON_IsFalse(get(endpoint(doc, "a"), "current")));
    cJSON_Delete(doc);
}

static void test_requests_in_flight(void **ctx)
{
    struct fixture *f = *ctx;
    struct track t;
    state_track_add(f->st, &t, "POST", "/v1/messages", T0 + 1000);
    state_track_route(&t, f->st, state_find_ep(f->st, "a"));
    t.bytes_in = 512;
    t.attempts = 2;
    cJSON *doc = render(f->st, T0 + 1750);
    assert_true(num(doc, "active_connections") == 1);
    const cJSON *reqs = get(doc, "requests");
    assert_int_equal(cJSON_GetArraySize(reqs), 1);
    const cJSON *r = cJSON_GetArrayItem(reqs, 0);
    assert_string_equal(str(r, "id"), t.idstr);
    assert_string_equal(str(r, "method"), "POST");
    assert_string_equal(str(r, "path"), "/v1/messages");
    assert_string_equal(str(r, "endpoint"), "a");
    assert_string_equal(str(r, "group"), "main");
    assert_true(num(r, "age_ms") == 750);
    assert_true(num(r, "bytes_in") == 512);
    assert_true(num(r, "attempts") == 2);
    cJSON_Delete(doc);
    state_track_remove(&t);
    doc = render(f->st, T0 + 1800);
    assert_int_equal(cJSON_GetArraySize(get(doc, "requests")), 0);
    cJSON_Delete(doc);
}

/* Three groups, every kind of endpoint state /status shows: latency and
 * history, check error and models warning, an open circuit, a 429 rest and
 * a usage-cap rest, a refused token, a pending graceful switch, fallback,
 * sessions, requests in flight, events, totals.  Rendered whole and compared
 * byte for byte with the document as it was when status.c read the state's
 * fields directly (status_golden.h), then again after a pin. */
static const char rich_config[] =
    "[server]\n"
    "port = 8124\n"
    "bind = \"127.0.0.1\"\n"
    "[health_check]\n"
    "interval_seconds = 60\n"
    "[[groups]]\n"
    "name = \"main\"\n"
    "default = true\n"
    "auth_token_env = \"ZT_STATUS_TOKEN\"\n"
    "fallback_groups = [\"relay\"]\n"
    "endpoints = [\n"
    "  { url = \"http://127.0.0.1:9/a\", name = \"a\" },\n"
    "  { url = \"http://127.0.0.1:9/b\", name = \"b\" },\n"
    "  { url = \"http://127.0.0.1:9/c\", name = \"c\" },\n"
    "]\n"
    "[[groups]]\n"
    "name = \"relay\"\n"
    "auth_token_env = \"ZT_STATUS_TOKEN\"\n"
    "auth_header = \"bearer\"\n"
    "endpoints = [\n"
    "  { url = \"http://127.0.0.1:9/r1\", name = \"r1\" },\n"
    "  { url = \"http://127.0.0.1:9/r2\", name = \"r2\" },\n"
    "]\n"
    "[[groups]]\n"
    "name = \"open\"\n"
    "endpoints = [{ url = \"http://127.0.0.1:9/o1\", name = \"o1\" }]\n";

/* The document as text, with what differs from run to run fixed: the
 * requests' ids (random per state) and the time of the events state_new()
 * logs before the test sets its clock. */
static char *rich_text(const struct state *st, uint64_t now)
{
    cJSON *doc = render(st, now);
    cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(doc, "requests"))
    {
        cJSON_ReplaceItemInObjectCaseSensitive(r, "id", cJSON_CreateString("r-fixed"));
    }
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(doc, "events"))
    {
        if (num(r, "t") > (double)(W0 + 3600000))
            cJSON_ReplaceItemInObjectCaseSensitive(r, "t", cJSON_CreateNumber(0));
    }
    char *text = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    assert_non_null(text);
    return text;
}

static void expect_text(const char *got, const char *want)
{
    if (strcmp(got, want) != 0) {
        size_t k = 0;
        while (got[k] && got[k] == want[k])
            k++;
        /* In pieces: cmocka cuts a long message. */
        print_error("differs at byte %zu; got:\n", k);
        for (size_t i = 0; got[i]; i += 200)
            print_error("%.200s\n", got + i);
        fail();
    }
}

static void test_whole_document_unchanged(void **ctx)
{
    (void)ctx;
    struct config *cfg = NULL;
    char *errors = NULL;
    setenv("ZT_STATUS_TOKEN", TOKEN, 1);
    int rc = config_load_string("rich.toml", rich_config, strlen(rich_config), &cfg, &errors);
    if (rc != 0)
        print_error("%s\n", errors ? errors : "(null)");
    free(errors);
    assert_int_equal(rc, 0);
    fake_wall = W0;
    struct state *st = state_new(cfg, T0, W0);
    state_set_wall_clock(st, fake_wall_ms);
    int a = state_find_ep(st, "a"), b = state_find_ep(st, "b"), c = state_find_ep(st, "c");
    int r1 = state_find_ep(st, "r1"), r2 = state_find_ep(st, "r2"), o1 = state_find_ep(st, "o1");
    struct usage spent = {.input = 12, .output = 3, .cache_read = 2, .cache_creation = 1};
    fake_wall = W0 + 100;
    report_check(st, a, true, false, 120.26, 100.04, NULL, &spent, T0 + 100, W0 + 100);
    report_check(st, b, true, false, 300, 250, NULL, &spent, T0 + 100, W0 + 100);
    report_check(st, b, false, false, -1, -1, "timed out", NULL, T0 + 200, W0 + 200);
    report_check_error(st, c, "check answered HTTP 404: not_found_error",
                       "set check_model: this endpoint does not serve m", T0 + 300, W0 + 300);
    state_publish_models_warning(st, a, "GET /v1/models does not list claude-x");
    for (int k = 0; k < 3; k++)
        report_live_failure(st, c, "upstream answered 502", T0 + 400);
    report_rate_limited(st, r1, T0 + 60000, T0 + 500);
    report_usage_capped(st, r2, T0 + 90000, "usage cap: weekly limit", T0 + 500);
    report_check(st, o1, false, true, -1, -1, "HTTP 401", NULL, T0 + 600, W0 + 600);
    state_bind_session(st, "sess-A", a, T0 + 700);
    state_bind_session(st, "sess-B", a, T0 + 800);
    state_bind_session(st, "sess-C", b, T0 + 900);
    struct track t1, t2;
    state_track_add(st, &t1, "POST", "/v1/messages", T0 + 1000);
    state_track_route(&t1, st, a);
    t1.bytes_in = 2048;
    t1.bytes_out = 77;
    t1.attempts = 1;
    t1.state = TRACK_STREAMING;
    state_track_add(st, &t2, "GET", "/v1/models", T0 + 1100);
    /* b becomes much faster while a serves: a graceful switch waits. */
    fake_wall = W0 + 1200;
    for (int k = 0; k < 8; k++)
        report_check(st, b, true, false, 20, 15, NULL, NULL, T0 + 1200, W0 + 1200);
    state_served(st, r1, T0 + 1300);
    state_count_retry(st);
    struct usage traffic = {.input = 1000, .output = 200, .cache_read = 50, .cache_creation = 5};
    state_count_tokens(st, st, a, &traffic);
    state_publish_interval(st, 45, "busy");
    state_publish_cycle(st, T0 + 30000);
    fake_wall = W0 + 1400;
    state_event(st, "info", "a", "b", "manual", "note %d", 7);

    char *text = rich_text(st, T0 + 2500);
    expect_text(text, status_golden_auto);
    free(text);

    char err[128] = "";
    assert_int_equal(state_pin(st, c, T0 + 2600, err, sizeof err), 0);
    text = rich_text(st, T0 + 2700);
    expect_text(text, status_golden_pinned);
    free(text);

    state_track_remove(&t1);
    state_track_remove(&t2);
    state_free(st);
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_top_level_and_clocks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_groups_and_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_never_holds_the_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_result_latency_and_history, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rate_limit_countdown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_newest_first_on_the_clock_passed_in, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pin_and_manual_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_requests_in_flight, setup, teardown),
        cmocka_unit_test(test_whole_document_unchanged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
