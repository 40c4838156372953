/*
 * Unit tests for state: groups of any size.  The policy's view of a group
 * once lived in fixed 256-entry stack arrays; a larger group was silently
 * never routed, and pinning or switching to it wrote past the array.  These
 * tests drive every path that builds that view (evaluate, route, next
 * endpoint, pin, group switch, take-over) with a group of 300 endpoints and
 * check the answers, not only that nothing crashed.
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
#include "util.h"

#define BIG 300

/* [[groups]] small (default, one endpoint) and big (BIG endpoints). */
static struct config *load_groups(void)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    buf_appendf(&b, "[[groups]]\nname = \"small\"\ndefault = true\n"
                    "endpoints = [{ url = \"http://127.0.0.1:9\", name = \"s0\" }]\n"
                    "[[groups]]\nname = \"big\"\nendpoints = [\n");
    for (int i = 0; i < BIG; i++)
        buf_appendf(&b, "  { url = \"http://127.0.0.1:9/%d\", name = \"e%03d\" },\n", i, i);
    buf_appendf(&b, "]\n");
    struct config *cfg = NULL;
    char *errors = NULL;
    int rc = config_load_string("cfg.toml", b.data, b.len, &cfg, &errors);
    if (rc != 0)
        print_error("%s\n", errors ? errors : "(null)");
    assert_int_equal(rc, 0);
    buf_release(&b);
    return cfg;
}

static const char *ep_name(const struct state *st, int ep)
{
    return ep >= 0 ? state_ep_name(st, ep) : "(none)";
}

/* Endpoint ep as /status sees it at now (its strings borrow from st). */
static struct state_ep_snapshot ep_seen(const struct state *st, int ep, uint64_t now)
{
    struct state_snapshot snap;
    state_snapshot_take(st, now, &snap);
    struct state_ep_snapshot e = snap.eps[ep];
    state_snapshot_release(&snap);
    return e;
}

/* The snapshot's totals at now (its arrays released: read its numbers). */
static struct state_snapshot totals_seen(const struct state *st, uint64_t now)
{
    struct state_snapshot snap;
    state_snapshot_take(st, now, &snap);
    state_snapshot_release(&snap);
    return snap;
}

static void all_healthy(struct state *st, uint64_t now)
{
    for (size_t i = 0; i < state_n_eps(st); i++)
        report_check(st, (int)i, true, false, 100.0 + (double)i, -1, NULL, NULL, now, now);
}

static void test_big_group_routes(void **unused)
{
    (void)unused;
    struct config *cfg = load_groups();
    struct state *st = state_new(cfg, 1000, 1000);
    state_own_config(st, cfg);
    int big = state_find_group(st, "big");
    assert_true(big >= 0);
    char err[128] = "";
    assert_int_equal(state_set_group(st, big, 1000, err, sizeof err), 0);
    assert_int_equal(state_current_group(st), (size_t)big);
    /* Unchecked endpoints are routable: the group answers at once. */
    int r = state_route(st, NULL, 1000);
    assert_true(r >= 0);
    assert_int_equal(state_ep_group(st, r), (size_t)big);

    all_healthy(st, 2000);
    r = state_route(st, NULL, 2000);
    assert_true(r >= 0);
    assert_int_equal(state_ep_group(st, r), (size_t)big);

    /* Retry order reaches past the 256th endpoint: with all but the last
     * tried, the last one is next. */
    bool *tried = xcalloc(BIG, sizeof *tried);
    for (int i = 0; i < BIG - 1; i++)
        tried[i] = true;
    int next = state_next_ep(st, r, tried, 2000);
    assert_string_equal(ep_name(st, next), "e299");
    free(tried);
    state_free(st);
}

/* Next in line: the group's best other endpoint; in a group of one, the
 * best of its fallback groups in order (as a request's failover picks). */
static void test_next_in_line(void **unused)
{
    (void)unused;
    static const char text[] =
        "[[groups]]\nname = \"main\"\ndefault = true\nfallback_groups = [\"f1\", \"f2\"]\n"
        "endpoints = [{ url = \"http://127.0.0.1:9/a\", name = \"a\" },\n"
        "             { url = \"http://127.0.0.1:9/b\", name = \"b\" }]\n"
        "[[groups]]\nname = \"f1\"\n"
        "endpoints = [{ url = \"http://127.0.0.1:9/c\", name = \"c\" }]\n"
        "[[groups]]\nname = \"f2\"\n"
        "endpoints = [{ url = \"http://127.0.0.1:9/d\", name = \"d\" },\n"
        "             { url = \"http://127.0.0.1:9/e\", name = \"e\" }]\n";
    struct config *cfg = NULL;
    char *errors = NULL;
    assert_int_equal(config_load_string("cfg.toml", text, sizeof text - 1, &cfg, &errors), 0);
    struct state *st = state_new(cfg, 1000, 1000);
    state_own_config(st, cfg);
    all_healthy(st, 2000);
    assert_string_equal(ep_name(st, state_current_ep(st)), "a");
    assert_string_equal(ep_name(st, state_next_in_line(st, 2000)), "b");
    /* b fails: the fallback group's endpoint is next. */
    report_check(st, state_find_ep(st, "b"), false, false, -1, -1, "down", NULL, 3000, 3000);
    assert_string_equal(ep_name(st, state_next_in_line(st, 3000)), "c");
    /* c fails too: the best of the next fallback group (e is faster). */
    report_check(st, state_find_ep(st, "c"), false, false, -1, -1, "down", NULL, 3000, 3000);
    report_check(st, state_find_ep(st, "d"), true, false, 900, -1, NULL, NULL, 3000, 3000);
    assert_string_equal(ep_name(st, state_next_in_line(st, 3000)), "e");
    report_check(st, state_find_ep(st, "d"), false, false, -1, -1, "down", NULL, 3000, 3000);
    report_check(st, state_find_ep(st, "e"), false, false, -1, -1, "down", NULL, 3000, 3000);
    assert_int_equal(state_next_in_line(st, 3000), -1);
    state_free(st);
}

static void test_pin_beyond_256(void **unused)
{
    (void)unused;
    struct config *cfg = load_groups();
    struct state *st = state_new(cfg, 1000, 1000);
    state_own_config(st, cfg);
    all_healthy(st, 1500);
    char err[128] = "";
    int e = state_find_ep(st, "e299");
    assert_true(e >= 0);
    /* From the small group: the pin switches group too. */
    assert_int_equal(state_pin(st, e, 2000, err, sizeof err), 0);
    assert_string_equal(state_group_name(st, state_current_group(st)), "big");
    assert_string_equal(ep_name(st, state_current_ep(st)), "e299");
    assert_string_equal(ep_name(st, state_route(st, NULL, 2000)), "e299");
    /* A check result re-evaluates every group; the pin holds. */
    report_check(st, e, true, false, 500, -1, NULL, NULL, 3000, 3000);
    assert_string_equal(ep_name(st, state_route(st, NULL, 3000)), "e299");

    /* Pinned state survives a reload into another state of the same size. */
    struct config *cfg2 = load_groups();
    struct state *st2 = state_new(cfg2, 4000, 4000);
    state_own_config(st2, cfg2);
    state_take_over(st2, st, 4000);
    state_evaluate(st2, 4000);
    assert_string_equal(ep_name(st2, state_route(st2, NULL, 4000)), "e299");
    state_free(st);
    state_free(st2);
}

/* Automatic mode over a big group picks the fastest endpoint even when it
 * is the last one. */
static void test_auto_picks_last_when_fastest(void **unused)
{
    (void)unused;
    struct config *cfg = load_groups();
    struct state *st = state_new(cfg, 1000, 1000);
    state_own_config(st, cfg);
    char err[128] = "";
    assert_int_equal(state_set_group(st, state_find_group(st, "big"), 1000, err, sizeof err), 0);
    int last = state_find_ep(st, "e299");
    for (size_t i = 0; i < state_n_eps(st); i++)
        report_check(st, (int)i, true, false, (int)i == last ? 5.0 : 900.0, -1, NULL, NULL, 2000,
                     2000);
    assert_string_equal(ep_name(st, state_current_ep(st)), "e299");
    assert_string_equal(ep_name(st, state_route(st, NULL, 2000)), "e299");
    state_free(st);
}

/* ---- the health rules, as a table of outcome sequences ------------------ */

/* One report: source, kind, HTTP status, text, rest length (ms after the
 * report) and when it happens (ms after the start; 0: one ms after the
 * previous step). */
struct rule_step {
    enum state_source src;
    enum state_kind kind;
    int status;
    const char *text;
    uint64_t rest_ms;
    uint64_t at;
};

/* What the endpoint looks like `after` ms past the last step. */
struct rule_case {
    const char *name;
    struct rule_step steps[8];
    uint64_t after;
    enum ep_status status;
    enum ep_circuit circuit;
    bool resting;
    enum ep_cause cause;
    bool usable;
    bool live_blocked;
    bool check_error;       /* check_error text is set */
    uint64_t retry_in_ms;   /* circuit back-off left; 0: not checked */
    const char *not_served; /* a model the endpoint is remembered not to serve */
};

#define CHECK_OK                                    \
    {                                               \
        STATE_FROM_CHECK, STATE_OK, 200, NULL, 0, 0 \
    }
#define CHECK_DOWN                                              \
    {                                                           \
        STATE_FROM_CHECK, STATE_DOWN, 0, "connect failed", 0, 0 \
    }
#define CHECK_AUTH                                                 \
    {                                                              \
        STATE_FROM_CHECK, STATE_AUTH_FAILED, 401, "HTTP 401", 0, 0 \
    }
#define CHECK_MISCONF                                                     \
    {                                                                     \
        STATE_FROM_CHECK, STATE_CHECK_MISCONFIGURED, 404, "model m", 0, 0 \
    }
#define LIVE_OK                                    \
    {                                              \
        STATE_FROM_LIVE, STATE_OK, 200, NULL, 0, 0 \
    }
#define LIVE_502                                                        \
    {                                                                   \
        STATE_FROM_LIVE, STATE_DOWN, 502, "upstream answered 502", 0, 0 \
    }
#define LIVE_AUTH                                                            \
    {                                                                        \
        STATE_FROM_LIVE, STATE_AUTH_FAILED, 401, "token refused (401)", 0, 0 \
    }

static const struct rule_case rule_cases[] = {
    {"a passing check makes it healthy",
     {CHECK_OK},
     0,
     EP_HEALTHY,
     CIRCUIT_CLOSED,
     false,
     EP_CAUSE_NONE,
     true,
     false,
     false,
     0,
     NULL},
    {"a failing check makes it failed",
     {CHECK_DOWN},
     0,
     EP_FAILED,
     CIRCUIT_CLOSED,
     false,
     EP_CAUSE_DOWN,
     false,
     false,
     false,
     0,
     NULL},
    {"three failing checks open the circuit for 5 s",
     {CHECK_DOWN, CHECK_DOWN, CHECK_DOWN},
     0,
     EP_FAILED,
     CIRCUIT_OPEN,
     false,
     EP_CAUSE_DOWN,
     false,
     false,
     false,
     5000,
     NULL},
    {"checks alone never block live traffic",
     {CHECK_DOWN, CHECK_DOWN, CHECK_DOWN},
     0,
     EP_FAILED,
     CIRCUIT_OPEN,
     false,
     EP_CAUSE_DOWN,
     false,
     false,
     false,
     0,
     NULL},
    {"a passing check recovers it and closes the circuit",
     {CHECK_DOWN, CHECK_DOWN, CHECK_DOWN, CHECK_OK},
     0,
     EP_HEALTHY,
     CIRCUIT_CLOSED,
     false,
     EP_CAUSE_NONE,
     true,
     false,
     false,
     0,
     NULL},
    {"a failed trial after the back-off reopens the circuit for twice as long",
     {LIVE_502, LIVE_502, LIVE_502, {STATE_FROM_CHECK, STATE_DOWN, 0, "connect failed", 0, 7000}},
     0,
     EP_FAILED,
     CIRCUIT_OPEN,
     false,
     EP_CAUSE_DOWN,
     false,
     true,
     false,
     10000,
     NULL},
    {"a live failure marks it failed at once",
     {CHECK_OK, LIVE_502},
     0,
     EP_FAILED,
     CIRCUIT_CLOSED,
     false,
     EP_CAUSE_DOWN,
     false,
     false,
     false,
     0,
     NULL},
    {"three live failures block live traffic",
     {LIVE_502, LIVE_502, LIVE_502},
     0,
     EP_FAILED,
     CIRCUIT_OPEN,
     false,
     EP_CAUSE_DOWN,
     false,
     true,
     false,
     5000,
     NULL},
    {"a live success does not undo a live failure",
     {LIVE_502, LIVE_OK},
     0,
     EP_FAILED,
     CIRCUIT_CLOSED,
     false,
     EP_CAUSE_DOWN,
     false,
     false,
     false,
     0,
     NULL},
    {"a passing check after a live failure recovers it",
     {LIVE_502, CHECK_OK},
     0,
     EP_HEALTHY,
     CIRCUIT_CLOSED,
     false,
     EP_CAUSE_NONE,
     true,
     false,
     false,
     0,
     NULL},
    {"a 529 answer is overload whatever its text",
     {{STATE_FROM_LIVE, STATE_DOWN, 529, "upstream said no", 0, 0}},
     0,
     EP_FAILED,
     CIRCUIT_CLOSED,
     false,
     EP_CAUSE_OVERLOADED,
     false,
     false,
     false,
     0,
     NULL},
    {"a 503 answer is overload too",
     {{STATE_FROM_LIVE, STATE_DOWN, 503, "upstream said no", 0, 0}},
     0,
     EP_FAILED,
     CIRCUIT_CLOSED,
     false,
     EP_CAUSE_OVERLOADED,
     false,
     false,
     false,
     0,
     NULL},
    {"a certificate problem is a TLS cause",
     {{STATE_FROM_LIVE, STATE_DOWN, 0, "SSL certificate problem: self-signed", 0, 0}},
     0,
     EP_FAILED,
     CIRCUIT_CLOSED,
     false,
     EP_CAUSE_TLS,
     false,
     false,
     false,
     0,
     NULL},
    {"a refused token (live) is auth-failed",
     {CHECK_OK, LIVE_AUTH},
     0,
     EP_AUTH_FAILED,
     CIRCUIT_CLOSED,
     false,
     EP_CAUSE_AUTH,
     false,
     false,
     false,
     0,
     NULL},
    {"a refused token (check) is auth-failed",
     {CHECK_AUTH},
     0,
     EP_AUTH_FAILED,
     CIRCUIT_CLOSED,
     false,
     EP_CAUSE_AUTH,
     false,
     false,
     false,
     0,
     NULL},
    {"a 429 rests it until its retry time",
     {CHECK_OK, {STATE_FROM_LIVE, STATE_RATE_LIMITED, 429, NULL, 30000, 0}},
     29000,
     EP_HEALTHY,
     CIRCUIT_CLOSED,
     true,
     EP_CAUSE_RATE_LIMITED,
     false,
     true,
     false,
     0,
     NULL},
    {"after the rest it is usable again",
     {CHECK_OK, {STATE_FROM_LIVE, STATE_RATE_LIMITED, 429, NULL, 30000, 0}},
     30000,
     EP_HEALTHY,
     CIRCUIT_CLOSED,
     false,
     EP_CAUSE_RATE_LIMITED,
     true,
     false,
     false,
     0,
     NULL},
    {"a usage cap rests it without a failure",
     {CHECK_OK, {STATE_FROM_LIVE, STATE_USAGE_CAPPED, 402, "balance exhausted", 60000, 0}},
     0,
     EP_HEALTHY,
     CIRCUIT_CLOSED,
     true,
     EP_CAUSE_NONE,
     false,
     true,
     false,
     0,
     NULL},
    {"a misconfigured check is no failure, however often",
     {CHECK_MISCONF, CHECK_MISCONF, CHECK_MISCONF, CHECK_MISCONF},
     0,
     EP_CHECK_ERROR,
     CIRCUIT_CLOSED,
     false,
     EP_CAUSE_NONE,
     true,
     false,
     true,
     0,
     NULL},
    {"a misconfigured check closes a circuit that checks opened",
     {CHECK_DOWN, CHECK_DOWN, CHECK_DOWN, CHECK_MISCONF},
     0,
     EP_CHECK_ERROR,
     CIRCUIT_CLOSED,
     false,
     EP_CAUSE_NONE,
     true,
     false,
     true,
     0,
     NULL},
    {"a misconfigured check leaves a circuit live failures opened",
     {LIVE_502, LIVE_502, LIVE_502, CHECK_MISCONF},
     0,
     EP_CHECK_ERROR,
     CIRCUIT_OPEN,
     false,
     EP_CAUSE_NONE,
     false,
     true,
     true,
     0,
     NULL},
    {"a passing check clears the check error",
     {CHECK_MISCONF, CHECK_OK},
     0,
     EP_HEALTHY,
     CIRCUIT_CLOSED,
     false,
     EP_CAUSE_NONE,
     true,
     false,
     false,
     0,
     NULL},
    {"a missing model is remembered, the endpoint stays healthy",
     {CHECK_OK, {STATE_FROM_LIVE, STATE_MODEL_MISSING, 404, NULL, 0, 0}},
     0,
     EP_HEALTHY,
     CIRCUIT_CLOSED,
     false,
     EP_CAUSE_NONE,
     true,
     false,
     false,
     0,
     "claude-x"},
};

static void test_rules_table(void **unused)
{
    (void)unused;
    for (size_t k = 0; k < sizeof rule_cases / sizeof rule_cases[0]; k++) {
        const struct rule_case *rc = &rule_cases[k];
        struct config *cfg = load_groups();
        struct state *st = state_new(cfg, 1000, 1000);
        state_own_config(st, cfg);
        int ep = state_find_ep(st, "s0");
        assert_true(ep >= 0);
        uint64_t t = 1000;
        for (size_t i = 0; i < 8 && (rc->steps[i].kind || rc->steps[i].src || rc->steps[i].status);
             i++) {
            const struct rule_step *sp = &rc->steps[i];
            t = sp->at ? 1000 + sp->at : t + 1;
            struct state_outcome o = {
                .source = sp->src,
                .kind = sp->kind,
                .status = sp->status,
                .latency_ms = sp->kind == STATE_OK ? 100 : -1,
                .ttfb_ms = sp->kind == STATE_OK ? 80 : -1,
                .rest_until_ms = sp->rest_ms ? t + sp->rest_ms : 0,
                .error = sp->text,
                .fix = sp->kind == STATE_CHECK_MISCONFIGURED ? "set check_model" : NULL,
                .model = sp->kind == STATE_MODEL_MISSING ? "claude-x" : NULL,
            };
            state_report(st, ep, &o, t, t);
        }
        uint64_t now = t + rc->after;
        struct state_ep_snapshot e = ep_seen(st, ep, now);
        print_message("rule: %s\n", rc->name);
        assert_string_equal(ep_status_name(e.status), ep_status_name(rc->status));
        assert_string_equal(ep_circuit_name(e.circuit), ep_circuit_name(rc->circuit));
        assert_int_equal(e.rest_until_ms > now, rc->resting);
        assert_string_equal(ep_cause_name(e.cause), ep_cause_name(rc->cause));
        assert_int_equal(state_ep_usable(st, ep, now), rc->usable);
        assert_int_equal(e.usable, rc->usable);
        assert_int_equal(state_ep_live_blocked(st, ep, now), rc->live_blocked);
        assert_int_equal(e.check_error[0] != '\0', rc->check_error);
        if (rc->retry_in_ms)
            assert_int_equal(e.circuit_retry_ms - now, rc->retry_in_ms);
        if (rc->not_served) {
            assert_false(state_ep_serves(st, ep, rc->not_served, now));
            assert_true(state_ep_serves(st, ep, "claude-other", now));
        }
        state_free(st);
    }
}

/* The checker's half of the interface: a check begins (an unchecked
 * endpoint shows "checking"), its report ends it, an abandoned one ends
 * without a result; the counts never go below zero. */
static void test_check_begin_and_end(void **unused)
{
    (void)unused;
    struct config *cfg = load_groups();
    struct state *st = state_new(cfg, 1000, 1000);
    state_own_config(st, cfg);
    int a = state_find_ep(st, "s0"), b = state_find_ep(st, "e000");
    state_check_begin(st, a, 1000);
    state_check_begin(st, b, 1000);
    assert_int_equal(totals_seen(st, 1000).checks_running, 2);
    assert_true(state_ep_check_running(st, a));
    assert_int_equal(state_ep_status(st, a), EP_CHECKING);
    struct state_outcome ok = {
        .source = STATE_FROM_CHECK, .kind = STATE_OK, .latency_ms = 50, .ttfb_ms = 40};
    state_report(st, a, &ok, 1100, 1100);
    assert_false(state_ep_check_running(st, a));
    assert_int_equal(totals_seen(st, 1100).checks_running, 1);
    /* A live report does not end a check. */
    struct state_outcome live = {.source = STATE_FROM_LIVE, .kind = STATE_OK, .ttfb_ms = 30};
    state_report(st, b, &live, 1100, 1100);
    assert_int_equal(totals_seen(st, 1100).checks_running, 1);
    state_check_abandon(st, b);
    state_check_abandon(st, b);
    assert_int_equal(totals_seen(st, 1100).checks_running, 0);
    assert_int_equal(state_ep_status(st, b), EP_CHECKING); /* no result: still not checked */
    state_report(st, a, &ok, 1200, 1200);                  /* a report without a begin */
    assert_int_equal(totals_seen(st, 1200).checks_running, 0);
    state_publish_interval(st, 45, "busy");
    state_publish_cycle(st, 5000);
    state_publish_paused(st, true);
    state_publish_ep_next(st, a, 4000);
    struct state_snapshot seen = totals_seen(st, 1200);
    assert_true(seen.check_interval_s == 45);
    assert_string_equal(seen.load_level, "busy");
    assert_int_equal(seen.next_cycle_ms, 5000);
    assert_true(seen.checks_paused);
    assert_int_equal(ep_seen(st, a, 1200).next_check_ms, 4000);
    char longw[400];
    memset(longw, 'w', sizeof longw - 1);
    longw[sizeof longw - 1] = '\0';
    state_publish_models_warning(st, a, longw);
    assert_int_equal(strlen(state_ep_models_warning(st, a)), EP_TEXT - 1);
    state_publish_models_warning(st, a, NULL);
    assert_string_equal(state_ep_models_warning(st, a), "");
    state_free(st);
}

/* A switch is told to the switch callback (the metrics count it there). */
static void on_switch(void *ud, const char *reason)
{
    char *last = ud;
    snprintf(last, 32, "%s", reason);
}

static void test_switch_callback(void **unused)
{
    (void)unused;
    struct config *cfg = load_groups();
    struct state *st = state_new(cfg, 1000, 1000);
    state_own_config(st, cfg);
    char last[32] = "";
    state_set_switch_cb(st, on_switch, last);
    char err[128] = "";
    int e = state_find_ep(st, "e005");
    assert_int_equal(state_pin(st, e, 1000, err, sizeof err), 0);
    assert_string_equal(last, "manual");
    state_free(st);
}

/* The fleet's observer (cluster.c): fed from the one entry point.  A
 * local outcome is told once, after it was applied; a remote one (another
 * instance saw it) is applied but not told again, and a remote check
 * result does not end the check running here; session bindings and served
 * requests have their own calls; may_check gates the checker. */
struct seen {
    int outcomes, sessions, served;
    enum state_kind last_kind;
    enum ep_status status_when_told;
    char last_session[32], last_model[32];
    bool allow_check;
};

static void seen_outcome(void *ud, struct state *st, int ep, const struct state_outcome *o)
{
    struct seen *s = ud;
    s->outcomes++;
    s->last_kind = o->kind;
    s->status_when_told = state_ep_status(st, ep);
}

static void seen_session(void *ud, struct state *st, int ep, const char *key)
{
    (void)st;
    (void)ep;
    struct seen *s = ud;
    s->sessions++;
    snprintf(s->last_session, sizeof s->last_session, "%s", key);
}

static void seen_served(void *ud, struct state *st, int ep, const char *model,
                        const struct usage *tokens)
{
    (void)st;
    (void)ep;
    (void)tokens;
    struct seen *s = ud;
    s->served++;
    snprintf(s->last_model, sizeof s->last_model, "%s", model);
}

static bool seen_may_check(void *ud, const struct state *st, int ep)
{
    (void)st;
    (void)ep;
    return ((const struct seen *)ud)->allow_check;
}

static void test_observer(void **unused)
{
    (void)unused;
    struct config *cfg = load_groups();
    struct state *st = state_new(cfg, 1000, 1000);
    state_own_config(st, cfg);
    int a = state_find_ep(st, "e001");
    assert_true(state_may_check(st, a)); /* no observer: this instance checks */
    struct seen seen = {.allow_check = false};
    struct state_observer obs = {.outcome = seen_outcome,
                                 .session = seen_session,
                                 .served = seen_served,
                                 .may_check = seen_may_check,
                                 .ud = &seen};
    state_set_observer(st, &obs);
    assert_ptr_equal(state_observer_of(st), &obs);
    assert_false(state_may_check(st, a));
    seen.allow_check = true;
    assert_true(state_may_check(st, a));

    /* local live failure: applied first, then told */
    report_live_failure_status(st, a, 529, "overloaded", 1100);
    assert_int_equal(seen.outcomes, 1);
    assert_int_equal(seen.last_kind, STATE_DOWN);
    assert_int_equal(seen.status_when_told, EP_FAILED);

    /* remote check while a local one runs: applied, not told, check still running */
    state_check_begin(st, a, 1200);
    struct state_outcome ok = {.source = STATE_FROM_CHECK,
                               .kind = STATE_OK,
                               .latency_ms = 50,
                               .ttfb_ms = 40,
                               .remote = true};
    state_report(st, a, &ok, 1200, 1200);
    assert_int_equal(seen.outcomes, 1);
    assert_int_equal(state_ep_status(st, a), EP_HEALTHY);
    assert_true(state_ep_check_running(st, a));
    assert_int_equal(totals_seen(st, 1200).checks_running, 1);
    ok.remote = false; /* the local check's own result ends it and is told */
    state_report(st, a, &ok, 1300, 1300);
    assert_false(state_ep_check_running(st, a));
    assert_int_equal(seen.outcomes, 2);
    assert_int_equal(seen.last_kind, STATE_OK);

    /* remote rest: applied (not routable), not told */
    struct state_outcome rest = {.source = STATE_FROM_LIVE,
                                 .kind = STATE_RATE_LIMITED,
                                 .rest_until_ms = 9000,
                                 .remote = true};
    state_report(st, a, &rest, 1400, 1400);
    assert_int_equal(seen.outcomes, 2);
    assert_true(state_ep_live_blocked(st, a, 1500));

    state_bind_session(st, "sess-1", a, 1500);
    assert_int_equal(seen.sessions, 1);
    assert_string_equal(seen.last_session, "sess-1"); /* the client's key, without the group */

    struct usage u = {.input = 3, .output = 4};
    state_note_served(st, a, "claude-x", &u);
    state_note_served(st, -1, "claude-x", &u); /* no endpoint: nothing told */
    assert_int_equal(seen.served, 1);
    assert_string_equal(seen.last_model, "claude-x");

    assert_false(state_ep_recheck_soon(st, a));
    state_ep_ask_recheck(st, a);
    assert_true(state_ep_recheck_soon(st, a));

    state_set_observer(st, NULL);
    report_live_failure(st, a, "down", 1600);
    assert_int_equal(seen.outcomes, 2);
    state_free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules_table),
        cmocka_unit_test(test_check_begin_and_end),
        cmocka_unit_test(test_switch_callback),
        cmocka_unit_test(test_observer),
        cmocka_unit_test(test_big_group_routes),
        cmocka_unit_test(test_pin_beyond_256),
        cmocka_unit_test(test_next_in_line),
        cmocka_unit_test(test_auto_picks_last_when_fastest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
