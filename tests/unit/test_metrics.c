/*
 * Unit tests for metrics.c: counters add up by endpoint, group and status
 * class; histogram buckets are cumulative and in seconds; label values are
 * escaped and invalid UTF-8 replaced; models and retry reasons are capped;
 * the gauges come from a real struct state; every line of the output is
 * well formed (HELP and TYPE before samples, one TYPE per family); a capped
 * output buffer ends on a whole line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "metrics.h"
#include "state.h"
#include "util.h"

static const char config_text[] =
    "[health_check]\n"
    "interval_seconds = 90\n"
    "\n"
    "[[groups]]\n"
    "name = \"main\"\n"
    "endpoints = [\n"
    "  { url = \"http://127.0.0.1:1\", name = \"alpha\" },\n"
    "  { url = \"http://127.0.0.1:2\", name = \"bravo\" },\n"
    "]\n"
    "\n"
    "[[groups]]\n"
    "name = \"backup\"\n"
    "endpoints = [ { url = \"http://127.0.0.1:3\", name = \"charlie\" } ]\n";

struct fixture {
    struct config *cfg;
    struct state *st;
    struct metrics *m;
    struct buf out;
};

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof *f);
    char *errors = NULL;
    int rc = config_load_string("test.toml", config_text, strlen(config_text), &f->cfg, &errors);
    if (rc != 0)
        fprintf(stderr, "config errors: %s\n", errors ? errors : "(null)");
    assert_int_equal(rc, 0);
    f->st = state_new(f->cfg, 1000, 1764000000000ull);
    assert_non_null(f->st);
    f->m = metrics_new();
    buf_init(&f->out, (size_t)16 << 20);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    buf_release(&f->out);
    metrics_free(f->m);
    state_free(f->st);
    config_free(f->cfg);
    free(f);
    return 0;
}

/* metrics_render() over a snapshot of st, as app.c renders /metrics. */
static void render_state(struct fixture *f, const struct metrics_upstream *up, struct buf *out)
{
    struct state_snapshot snap;
    state_snapshot_take(f->st, 1000, &snap);
    metrics_render(f->m, &snap, up, out);
    state_snapshot_release(&snap);
}

/* A passing check's report, as health.c sends it. */
static void check_passed(struct state *st, int ep, double latency_ms, double ttfb_ms,
                         const struct usage *tokens, uint64_t now, uint64_t wall)
{
    struct state_outcome o = {.source = STATE_FROM_CHECK,
                              .kind = STATE_OK,
                              .latency_ms = latency_ms,
                              .ttfb_ms = ttfb_ms,
                              .tokens = tokens};
    state_report(st, ep, &o, now, wall);
}

static const char *render(struct fixture *f)
{
    buf_reset(&f->out);
    render_state(f, NULL, &f->out);
    assert_non_null(f->out.data);
    return f->out.data;
}

/* The value of the sample whose line starts with series + " ", or -1. */
static double value_of(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return -1;
}

static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
            return true;
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return false;
}

static unsigned count_prefix(const char *text, const char *prefix)
{
    unsigned c = 0;
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, prefix, n) == 0)
            c++;
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return c;
}

/*
 * Every line is a comment or `name{labels} value`; every sample's family
 * was declared with HELP and TYPE before it, and each family is declared
 * once.  Sample names of a histogram family carry _bucket/_sum/_count.
 */
static void check_well_formed(const char *text)
{
    char families[128][96];
    size_t nf = 0;
    const char *p = text;
    assert_true(strlen(text) > 0);
    assert_int_equal(text[strlen(text) - 1], '\n');
    while (*p) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        size_t len = (size_t)(nl - p);
        char line[4096];
        assert_true(len < sizeof line);
        memcpy(line, p, len);
        line[len] = '\0';
        if (strncmp(line, "# HELP ", 7) == 0) {
            p = nl + 1;
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[96], type[16];
            assert_int_equal(sscanf(line + 7, "%95s %15s", name, type), 2);
            for (size_t i = 0; i < nf; i++)
                assert_string_not_equal(families[i], name);
            assert_true(nf < 128);
            snprintf(families[nf++], sizeof families[0], "%s", name);
            assert_true(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                        strcmp(type, "histogram") == 0);
            p = nl + 1;
            continue;
        }
        assert_true(line[0] != '#');
        size_t nlen = strspn(line, "abcdefghijklmnopqrstuvwxyz_0123456789");
        assert_true(nlen > 7);
        assert_memory_equal(line, "zephyr_", 7);
        assert_true(line[nlen] == '{' || line[nlen] == ' ');
        char name[96];
        assert_true(nlen < sizeof name);
        memcpy(name, line, nlen);
        name[nlen] = '\0';
        /* The last declared family owns this sample. */
        assert_true(nf > 0);
        const char *fam = families[nf - 1];
        size_t fl = strlen(fam);
        assert_memory_equal(name, fam, fl);
        const char *suffix = name + fl;
        assert_true(*suffix == '\0' || strcmp(suffix, "_bucket") == 0 ||
                    strcmp(suffix, "_sum") == 0 || strcmp(suffix, "_count") == 0);
        /* The value parses as a number. */
        const char *sp = strrchr(line, ' ');
        assert_non_null(sp);
        char *end = NULL;
        strtod(sp + 1, &end);
        assert_true(end && *end == '\0' && end > sp + 1);
        p = nl + 1;
    }
}

static void test_empty_registry(void **state)
{
    struct fixture *f = *state;
    const char *t = render(f);
    check_well_formed(t);
    assert_true(has_line(t, "zephyr_build_info{version=\"0.1.0\"} 1"));
    /* Configured endpoints are there from the start, at zero. */
    assert_true(has_line(t, "zephyr_requests_total{endpoint=\"alpha\",group=\"main\","
                            "status_class=\"2xx\"} 0"));
    assert_true(has_line(t, "zephyr_requests_total{endpoint=\"charlie\",group=\"backup\","
                            "status_class=\"5xx\"} 0"));
    assert_true(has_line(t, "zephyr_checks_total{endpoint=\"bravo\",result=\"ok\"} 0"));
    assert_true(has_line(t, "zephyr_check_duration_seconds_count{endpoint=\"bravo\"} 0"));
    assert_true(has_line(t, "zephyr_request_duration_seconds_bucket{endpoint=\"alpha\","
                            "group=\"main\",le=\"+Inf\"} 0"));
    /* No switch was counted: the family is absent rather than empty. */
    assert_null(strstr(t, "zephyr_switches_total"));
    /* Gauges from the state. */
    assert_true(has_line(t, "zephyr_endpoint_up{endpoint=\"alpha\",group=\"main\"} 0"));
    assert_true(has_line(t, "zephyr_endpoint_status{endpoint=\"alpha\",group=\"main\","
                            "status=\"unknown\"} 1"));
    assert_true(has_line(t, "zephyr_endpoint_circuit_state{endpoint=\"alpha\",group=\"main\","
                            "state=\"closed\"} 1"));
    assert_true(has_line(t, "zephyr_group_current{group=\"main\"} 1"));
    assert_true(has_line(t, "zephyr_group_current{group=\"backup\"} 0"));
    assert_true(has_line(t, "zephyr_config_check_interval_seconds 90"));
    assert_true(has_line(t, "zephyr_start_time_seconds 1764000000"));
    assert_true(has_line(t, "zephyr_active_connections 0"));
    assert_true(has_line(t, "zephyr_manual_mode 0"));
    /* Unknown latency is absent, not zero. */
    assert_null(strstr(t, "zephyr_endpoint_check_latency_seconds{"));
    /* Rendering without a state leaves the gauges out. */
    buf_reset(&f->out);
    metrics_render(f->m, NULL, NULL, &f->out);
    check_well_formed(f->out.data);
    assert_null(strstr(f->out.data, "zephyr_endpoint_up"));
    assert_null(strstr(f->out.data, "alpha"));
}

static void test_request_counters(void **state)
{
    struct fixture *f = *state;
    struct usage u = {
        .input = 10, .output = 3, .cache_read = 100, .cache_creation = 7, .model = "claude-x"};
    metrics_request(f->m, "alpha", "main", 200, 12.0, 40.0, 1, &u);
    metrics_request(f->m, "alpha", "main", 201, 30.0, 80.0, 1, &u);
    metrics_request(f->m, "alpha", "main", 529, -1, 5.0, 3, NULL);
    metrics_request(f->m, "bravo", "main", 200, 100.0, 2000.0, 2, &u);
    metrics_request(f->m, "alpha", "main", 0, -1, 1.0, 1, NULL);
    metrics_request(f->m, NULL, "main", 503, -1, 0.5, 1, NULL);
    metrics_request(f->m, "alpha", "main", 999, -1, 0.5, 1, NULL);
    const char *t = render(f);
    check_well_formed(t);

    assert_true(value_of(t, "zephyr_requests_total{endpoint=\"alpha\",group=\"main\","
                            "status_class=\"2xx\"}") == 2);
    assert_true(value_of(t, "zephyr_requests_total{endpoint=\"alpha\",group=\"main\","
                            "status_class=\"5xx\"}") == 1);
    assert_true(value_of(t, "zephyr_requests_total{endpoint=\"alpha\",group=\"main\","
                            "status_class=\"none\"}") == 1);
    assert_true(value_of(t, "zephyr_requests_total{endpoint=\"alpha\",group=\"main\","
                            "status_class=\"other\"}") == 1);
    assert_true(value_of(t, "zephyr_requests_total{endpoint=\"bravo\",group=\"main\","
                            "status_class=\"2xx\"}") == 1);
    assert_true(value_of(t, "zephyr_requests_total{endpoint=\"(none)\",group=\"main\","
                            "status_class=\"5xx\"}") == 1);
    /* Classes nothing fell into are left out, except 2xx/4xx/5xx. */
    assert_true(value_of(t, "zephyr_requests_total{endpoint=\"bravo\",group=\"main\","
                            "status_class=\"none\"}") == -1);
    assert_true(value_of(t, "zephyr_requests_total{endpoint=\"bravo\",group=\"main\","
                            "status_class=\"4xx\"}") == 0);

    assert_true(value_of(t, "zephyr_failovers_total{endpoint=\"alpha\",group=\"main\"}") == 1);
    assert_true(value_of(t, "zephyr_failovers_total{endpoint=\"bravo\",group=\"main\"}") == 1);

    /* Tokens add up per model and type. */
    assert_true(value_of(t, "zephyr_tokens_total{endpoint=\"alpha\",group=\"main\","
                            "model=\"claude-x\",type=\"input\"}") == 20);
    assert_true(value_of(t, "zephyr_tokens_total{endpoint=\"alpha\",group=\"main\","
                            "model=\"claude-x\",type=\"output\"}") == 6);
    assert_true(value_of(t, "zephyr_tokens_total{endpoint=\"alpha\",group=\"main\","
                            "model=\"claude-x\",type=\"cache_read\"}") == 200);
    assert_true(value_of(t, "zephyr_tokens_total{endpoint=\"alpha\",group=\"main\","
                            "model=\"claude-x\",type=\"cache_creation\"}") == 14);
    assert_true(value_of(t, "zephyr_tokens_total{endpoint=\"bravo\",group=\"main\","
                            "model=\"claude-x\",type=\"input\"}") == 10);

    /* An empty model name counts as "unknown"; all-zero usage adds nothing. */
    struct usage anon = {.output = 4};
    struct usage zero = {.model = "never-seen"};
    metrics_request(f->m, "bravo", "main", 200, 1, 2, 1, &anon);
    metrics_request(f->m, "bravo", "main", 200, 1, 2, 1, &zero);
    t = render(f);
    assert_true(value_of(t, "zephyr_tokens_total{endpoint=\"bravo\",group=\"main\","
                            "model=\"unknown\",type=\"output\"}") == 4);
    assert_null(strstr(t, "never-seen"));

    /* Histogram counts: total time saw every request, TTFB only the known. */
    assert_true(value_of(t, "zephyr_request_duration_seconds_count{endpoint=\"alpha\","
                            "group=\"main\"}") == 5);
    assert_true(value_of(t, "zephyr_request_ttfb_seconds_count{endpoint=\"alpha\","
                            "group=\"main\"}") == 2);
    double sum = value_of(t, "zephyr_request_ttfb_seconds_sum{endpoint=\"alpha\","
                             "group=\"main\"}");
    assert_true(sum > 0.0419 && sum < 0.0421);
}

static void test_histogram_buckets(void **state)
{
    struct fixture *f = *state;
    /* One observation per interesting spot: on a bound, between bounds,
     * beyond the last bound. */
    const double ms[] = {0, 5, 5.001, 10, 99, 100, 1000, 59999, 60000, 60001, 1e9};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
        metrics_request(f->m, "alpha", "main", 200, ms[i], ms[i], 1, NULL);
    const char *t = render(f);
    check_well_formed(t);
    static const struct {
        const char *le;
        double want;
    } b[] = {{"0.005", 2}, {"0.01", 4}, {"0.025", 4}, {"0.05", 4}, {"0.1", 6},
             {"0.25", 6},  {"0.5", 6},  {"1", 7},     {"2.5", 7},  {"5", 7},
             {"10", 7},    {"30", 7},   {"60", 9},    {"+Inf", 11}};
    double prev = 0;
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) {
        char series[200];
        snprintf(series, sizeof series,
                 "zephyr_request_ttfb_seconds_bucket{endpoint=\"alpha\",group=\"main\",le=\"%s\"}",
                 b[i].le);
        double v = value_of(t, series);
        if (v != b[i].want)
            fprintf(stderr, "%s = %g, want %g\n", series, v, b[i].want);
        assert_true(v == b[i].want);
        assert_true(v >= prev); /* cumulative */
        prev = v;
    }
    assert_true(value_of(t, "zephyr_request_ttfb_seconds_count{endpoint=\"alpha\","
                            "group=\"main\"}") == 11);
    double sum = value_of(t, "zephyr_request_ttfb_seconds_sum{endpoint=\"alpha\","
                             "group=\"main\"}");
    double want = 0;
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
        want += ms[i] / 1000.0;
    assert_true(sum > want - 0.01 && sum < want + 0.01);
    /* Exactly 14 buckets per histogram series. */
    assert_int_equal(count_prefix(t, "zephyr_request_ttfb_seconds_bucket{endpoint=\"alpha\","), 14);
}

static void test_escaping(void **state)
{
    struct fixture *f = *state;
    struct usage u = {.input = 1, .model = "we\"ird\\mo\ndel"};
    metrics_request(f->m, "q\"uo\\te\nd", "g\"1", 200, 1, 1, 1, &u);
    /* Invalid UTF-8 (a lone continuation byte, a truncated sequence, an
     * overlong encoding, a surrogate) becomes '?'; valid UTF-8 stays. */
    struct usage bad = {.input = 1};
    snprintf(bad.model, sizeof bad.model,
             "a\x80"
             "b\xE6\x97"
             "c\xC0\xAF"
             "d\xED\xA0\x80"
             "e模型");
    metrics_request(f->m, "alpha", "main", 200, 1, 1, 1, &bad);
    metrics_retry(f->m, "alpha", "re\"ason");
    const char *t = render(f);
    check_well_formed(t);
    assert_true(has_line(t, "zephyr_requests_total{endpoint=\"q\\\"uo\\\\te\\nd\",group=\"g\\\"1\","
                            "status_class=\"2xx\"} 1"));
    assert_true(has_line(t, "zephyr_tokens_total{endpoint=\"q\\\"uo\\\\te\\nd\",group=\"g\\\"1\","
                            "model=\"we\\\"ird\\\\mo\\ndel\",type=\"input\"} 1"));
    assert_true(value_of(t, "zephyr_tokens_total{endpoint=\"alpha\",group=\"main\","
                            "model=\"a?b??c??d???e模型\",type=\"input\"}") == 1);
    assert_true(has_line(t, "zephyr_retries_total{endpoint=\"alpha\",reason=\"re\\\"ason\"} 1"));
}

static void test_model_cap(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < METRICS_MAX_MODELS + 10; i++) {
        struct usage u = {.input = 1, .output = 2};
        snprintf(u.model, sizeof u.model, "model-%02d", i);
        metrics_request(f->m, "alpha", "main", 200, 1, 1, 1, &u);
    }
    /* A model seen before the cap keeps its own series afterwards. */
    struct usage again = {.input = 5, .model = "model-00"};
    metrics_request(f->m, "alpha", "main", 200, 1, 1, 1, &again);
    /* The cap is per endpoint: bravo still gets its own model names. */
    struct usage b = {.input = 1, .model = "model-40"};
    metrics_request(f->m, "bravo", "main", 200, 1, 1, 1, &b);
    const char *t = render(f);
    check_well_formed(t);
    /* 32 named models + "other", four types each. */
    assert_int_equal(count_prefix(t, "zephyr_tokens_total{endpoint=\"alpha\","),
                     (METRICS_MAX_MODELS + 1) * 4);
    assert_true(value_of(t, "zephyr_tokens_total{endpoint=\"alpha\",group=\"main\","
                            "model=\"other\",type=\"input\"}") == 10);
    assert_true(value_of(t, "zephyr_tokens_total{endpoint=\"alpha\",group=\"main\","
                            "model=\"other\",type=\"output\"}") == 20);
    assert_true(value_of(t, "zephyr_tokens_total{endpoint=\"alpha\",group=\"main\","
                            "model=\"model-00\",type=\"input\"}") == 6);
    assert_true(value_of(t, "zephyr_tokens_total{endpoint=\"alpha\",group=\"main\","
                            "model=\"model-31\",type=\"input\"}") == 1);
    assert_true(value_of(t, "zephyr_tokens_total{endpoint=\"alpha\",group=\"main\","
                            "model=\"model-32\",type=\"input\"}") == -1);
    assert_true(value_of(t, "zephyr_tokens_total{endpoint=\"bravo\",group=\"main\","
                            "model=\"model-40\",type=\"input\"}") == 1);
}

static void test_series_and_reason_caps(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < METRICS_MAX_REASONS + 5; i++) {
        char reason[32];
        snprintf(reason, sizeof reason, "r%d", i);
        metrics_retry(f->m, "alpha", reason);
    }
    metrics_retry(f->m, "alpha", NULL);
    for (int i = 0; i < METRICS_MAX_SERIES + 19; i++) {
        char name[32];
        snprintf(name, sizeof name, "ep%03d", i);
        metrics_request(f->m, name, "g", 200, 1, 1, 1, NULL);
        metrics_check(f->m, name, true, 1);
    }
    const char *t = render(f);
    check_well_formed(t);
    /* The first 256 pairs are named; the rest share "(other)".  Checks and
     * retries have their own table, where alpha took one of the 256. */
    assert_true(value_of(t, "zephyr_requests_total{endpoint=\"ep255\",group=\"g\","
                            "status_class=\"2xx\"}") == 1);
    assert_true(value_of(t, "zephyr_requests_total{endpoint=\"ep256\",group=\"g\","
                            "status_class=\"2xx\"}") == -1);
    assert_true(value_of(t, "zephyr_requests_total{endpoint=\"(other)\",group=\"\","
                            "status_class=\"2xx\"}") == 19);
    assert_true(value_of(t, "zephyr_checks_total{endpoint=\"(other)\",result=\"ok\"}") == 20);
    /* Reasons: 16 named, then "other" (which also takes a missing reason). */
    assert_int_equal(count_prefix(t, "zephyr_retries_total{endpoint=\"alpha\","),
                     METRICS_MAX_REASONS + 1);
    assert_true(value_of(t, "zephyr_retries_total{endpoint=\"alpha\",reason=\"r15\"}") == 1);
    assert_true(value_of(t, "zephyr_retries_total{endpoint=\"alpha\",reason=\"other\"}") == 6);
}

static void test_checks_retries_switches(void **state)
{
    struct fixture *f = *state;
    metrics_check(f->m, "alpha", true, 120);
    metrics_check(f->m, "alpha", true, 300);
    metrics_check(f->m, "alpha", false, -1);
    metrics_check(f->m, "bravo", false, 15000);
    metrics_retry(f->m, "bravo", "5xx");
    metrics_retry(f->m, "bravo", "5xx");
    metrics_retry(f->m, "bravo", "connect");
    metrics_switch(f->m, "faster");
    metrics_switch(f->m, "failed");
    metrics_switch(f->m, "faster");
    const char *t = render(f);
    check_well_formed(t);
    assert_true(has_line(t, "zephyr_checks_total{endpoint=\"alpha\",result=\"ok\"} 2"));
    assert_true(has_line(t, "zephyr_checks_total{endpoint=\"alpha\",result=\"failed\"} 1"));
    assert_true(has_line(t, "zephyr_checks_total{endpoint=\"bravo\",result=\"failed\"} 1"));
    assert_true(has_line(t, "zephyr_checks_total{endpoint=\"charlie\",result=\"ok\"} 0"));
    assert_true(has_line(t, "zephyr_check_duration_seconds_count{endpoint=\"alpha\"} 2"));
    assert_true(has_line(t, "zephyr_check_duration_seconds_sum{endpoint=\"alpha\"} 0.42"));
    assert_true(has_line(t, "zephyr_check_duration_seconds_bucket{endpoint=\"alpha\","
                            "le=\"0.25\"} 1"));
    assert_true(has_line(t, "zephyr_check_duration_seconds_bucket{endpoint=\"bravo\","
                            "le=\"10\"} 0"));
    assert_true(has_line(t, "zephyr_check_duration_seconds_bucket{endpoint=\"bravo\","
                            "le=\"30\"} 1"));
    assert_true(has_line(t, "zephyr_retries_total{endpoint=\"bravo\",reason=\"5xx\"} 2"));
    assert_true(has_line(t, "zephyr_retries_total{endpoint=\"bravo\",reason=\"connect\"} 1"));
    assert_true(has_line(t, "zephyr_switches_total{reason=\"faster\"} 2"));
    assert_true(has_line(t, "zephyr_switches_total{reason=\"failed\"} 1"));
    assert_non_null(strstr(t, "# TYPE zephyr_usage_unreadable_total counter\n"));
    assert_int_equal(count_prefix(t, "zephyr_usage_unreadable_total{"), 0);
    metrics_usage_unreadable(f->m, "bravo", "corrupt");
    metrics_usage_unreadable(f->m, "bravo", "corrupt");
    metrics_usage_unreadable(f->m, "alpha", "encoding");
    t = render(f);
    check_well_formed(t);
    assert_true(
        has_line(t, "zephyr_usage_unreadable_total{endpoint=\"bravo\",reason=\"corrupt\"} 2"));
    assert_true(
        has_line(t, "zephyr_usage_unreadable_total{endpoint=\"alpha\",reason=\"encoding\"} 1"));
    /* One checks_total pair per endpoint: the registry row and the
     * configured endpoint are the same series. */
    assert_int_equal(count_prefix(t, "zephyr_checks_total{endpoint=\"alpha\","), 2);
}

static void test_gauges_follow_state(void **state)
{
    struct fixture *f = *state;
    struct state *st = f->st;
    int a = state_find_ep(st, "alpha");
    int b = state_find_ep(st, "bravo");
    int c = state_find_ep(st, "charlie");
    assert_true(a >= 0 && b >= 0 && c >= 0);
    struct usage spent = {.input = 8, .output = 1};
    check_passed(st, a, 250.0, 200.0, &spent, 2000, 1764000001000ull);
    check_passed(st, b, 900.0, 800.0, &spent, 2000, 1764000001000ull);
    check_passed(st, b, 900.0, 800.0, &spent, 2001, 1764000001001ull);
    /* Three requests in flight on bravo; charlie's checks fail until its
     * circuit opens; the checker publishes its interval and a pause. */
    struct track tr[3];
    for (int k = 0; k < 3; k++) {
        state_track_add(st, &tr[k], "POST", "/v1/messages", 2001);
        state_track_route(&tr[k], st, b);
    }
    struct state_outcome down = {
        .source = STATE_FROM_CHECK, .kind = STATE_DOWN, .latency_ms = -1, .ttfb_ms = -1};
    for (int k = 0; k < 3; k++)
        state_report(st, c, &down, 2001, 1764000001001ull);
    state_publish_interval(st, 45, "normal");
    state_publish_paused(st, true);
    state_evaluate(st, 2002);
    int cur = state_current_ep(st);
    assert_int_equal(cur, a);

    const char *t = render(f);
    check_well_formed(t);
    assert_true(has_line(t, "zephyr_endpoint_up{endpoint=\"alpha\",group=\"main\"} 1"));
    assert_true(has_line(t, "zephyr_endpoint_up{endpoint=\"charlie\",group=\"backup\"} 0"));
    assert_true(has_line(t, "zephyr_endpoint_status{endpoint=\"charlie\",group=\"backup\","
                            "status=\"failed\"} 1"));
    assert_true(has_line(t, "zephyr_endpoint_status{endpoint=\"charlie\",group=\"backup\","
                            "status=\"healthy\"} 0"));
    assert_true(has_line(t, "zephyr_endpoint_circuit_state{endpoint=\"charlie\","
                            "group=\"backup\",state=\"open\"} 1"));
    assert_true(has_line(t, "zephyr_endpoint_circuit_state{endpoint=\"charlie\","
                            "group=\"backup\",state=\"closed\"} 0"));
    assert_true(has_line(t, "zephyr_endpoint_active_connections{endpoint=\"bravo\","
                            "group=\"main\"} 3"));
    assert_true(has_line(t, "zephyr_endpoint_check_latency_seconds{endpoint=\"alpha\","
                            "group=\"main\"} 0.25"));
    assert_true(has_line(t, "zephyr_endpoint_check_latency_seconds{endpoint=\"bravo\","
                            "group=\"main\"} 0.9"));
    assert_true(has_line(t, "zephyr_endpoint_current{endpoint=\"alpha\",group=\"main\"} 1"));
    assert_true(has_line(t, "zephyr_endpoint_current{endpoint=\"bravo\",group=\"main\"} 0"));
    assert_true(has_line(t, "zephyr_check_tokens_total{endpoint=\"bravo\",group=\"main\","
                            "type=\"input\"} 16"));
    assert_true(has_line(t, "zephyr_check_tokens_total{endpoint=\"alpha\",group=\"main\","
                            "type=\"output\"} 1"));
    assert_true(has_line(t, "zephyr_check_interval_seconds 45"));
    assert_true(has_line(t, "zephyr_checks_paused 1"));

    /* Manual mode shows. */
    char err[200];
    assert_int_equal(state_pin(st, b, 2003, err, sizeof err), 0);
    t = render(f);
    assert_true(has_line(t, "zephyr_manual_mode 1"));
    assert_true(has_line(t, "zephyr_endpoint_current{endpoint=\"bravo\",group=\"main\"} 1"));
    for (int k = 0; k < 3; k++)
        state_track_remove(&tr[k]);
}

static void test_upstream_connection_gauges(void **state)
{
    struct fixture *f = *state;
    struct metrics_upstream up = {.open = 5, .idle = 2};
    buf_reset(&f->out);
    render_state(f, &up, &f->out);
    const char *t = f->out.data;
    check_well_formed(t);
    assert_true(has_line(t, "zephyr_upstream_connections{client=\"builtin\",state=\"busy\"} 3"));
    assert_true(has_line(t, "zephyr_upstream_connections{client=\"builtin\",state=\"idle\"} 2"));
    /* Without the counts the family is left out. */
    assert_null(strstr(render(f), "zephyr_upstream_connections"));
}

static void test_capped_output_ends_on_a_line(void **state)
{
    struct fixture *f = *state;
    metrics_request(f->m, "alpha", "main", 200, 1, 1, 1, NULL);
    const char *full = render(f);
    size_t whole = strlen(full);
    for (size_t cap = 0; cap < whole; cap += 97) {
        struct buf small;
        buf_init(&small, cap);
        render_state(f, NULL, &small);
        if (small.len) {
            assert_int_equal(small.data[small.len - 1], '\n');
            assert_memory_equal(small.data, full, small.len);
        }
        assert_true(small.len <= cap);
        buf_release(&small);
    }
    metrics_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_empty_registry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_counters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_histogram_buckets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escaping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_model_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_series_and_reason_caps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checks_retries_switches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gauges_follow_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_connection_gauges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_capped_output_ends_on_a_line, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
