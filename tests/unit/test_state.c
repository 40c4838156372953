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
    return ep >= 0 ? st->eps[ep].name : "(none)";
}

static void all_healthy(struct state *st, uint64_t now)
{
    for (size_t i = 0; i < st->n_eps; i++)
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
    assert_int_equal(st->current_group, (size_t)big);
    /* Unchecked endpoints are routable: the group answers at once. */
    int r = state_route(st, NULL, 1000);
    assert_true(r >= 0);
    assert_int_equal(st->eps[r].group, (size_t)big);

    all_healthy(st, 2000);
    r = state_route(st, NULL, 2000);
    assert_true(r >= 0);
    assert_int_equal(st->eps[r].group, (size_t)big);

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
    assert_string_equal(st->groups[st->current_group].name, "big");
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
    for (size_t i = 0; i < st->n_eps; i++)
        report_check(st, (int)i, true, false, (int)i == last ? 5.0 : 900.0, -1, NULL, NULL,
                           2000, 2000);
    assert_string_equal(ep_name(st, state_current_ep(st)), "e299");
    assert_string_equal(ep_name(st, state_route(st, NULL, 2000)), "e299");
    state_free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_big_group_routes),
        cmocka_unit_test(test_pin_beyond_256),
        cmocka_unit_test(test_auto_picks_last_when_fastest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
