/*
 * Unit tests for interval.c: the check-interval rule as a table, its shape
 * (bounds, monotonicity), the load levels, and the request-rate average on a
 * fake clock.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "interval.h"
#include "util.h"

#define MIN 30
#define MAX 3600
#define NEVER 1e9

static const struct interval_cfg dyn = {
    .interval_s = 120, .min_s = MIN, .max_s = MAX, .dynamic = true};

static double next(const struct interval_cfg *c, unsigned active, double rate, double idle)
{
    struct interval_load l = {.active = active, .rate_per_min = rate, .idle_s = idle};
    return interval_next_s(c, &l);
}

static void assert_near(double got, double want)
{
    if (fabs(got - want) > 0.5) {
        fprintf(stderr, "got %.3f, want %.3f\n", got, want);
        fail();
    }
}

/* The README's table, row for row (idle column: no requests in flight, rate
 * 0).  Values are min + (max - min) * (1 - exp(-idle / 1800)). */
static void test_table_idle(void **state)
{
    (void)state;
    static const struct {
        double idle_s;
        double want_s;
    } rows[] = {
        {0, 30},         {60, 147.0}, /* 30 + 3570 * 0.032784 */
        {300, 578.1},                 /* 0.153518 */
        {900, 1434.7},                /* 0.393469 */
        {1800, 2286.7},               /* 0.632121 */
        {3600, 3116.9},               /* 0.864665 */
        {7200, 3534.6},               /* 0.981684 */
        {28800, 3600.0},              /* 0.9999999 */
        {NEVER, 3600},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        assert_near(next(&dyn, 0, 0, rows[i].idle_s), rows[i].want_s);
}

static void test_dynamic_off_is_constant(void **state)
{
    (void)state;
    struct interval_cfg c = {.interval_s = 120, .min_s = MIN, .max_s = MAX, .dynamic = false};
    static const double idles[] = {0, 1, 60, 3600, 86400, NEVER};
    for (size_t i = 0; i < sizeof(idles) / sizeof(idles[0]); i++) {
        assert_true(next(&c, 0, 0, idles[i]) == 120);
        assert_true(next(&c, 5, 10, idles[i]) == 120);
        assert_true(next(&c, 0, 0.3, idles[i]) == 120);
    }
    c.interval_s = 0; /* nonsense setting: still a usable interval */
    assert_true(next(&c, 0, 0, 0) == 1);
}

static void test_busy_is_min(void **state)
{
    (void)state;
    static const double idles[] = {0, 60, 3600, NEVER};
    for (size_t i = 0; i < sizeof(idles) / sizeof(idles[0]); i++) {
        assert_true(next(&dyn, 1, 0, idles[i]) == MIN); /* in flight */
        assert_true(next(&dyn, 100, 0, idles[i]) == MIN);
        assert_true(next(&dyn, 0, 1.0, idles[i]) == MIN); /* recent rate */
        assert_true(next(&dyn, 0, 50, idles[i]) == MIN);
    }
}

static void test_monotonic_in_idle_time_and_bounded(void **state)
{
    (void)state;
    static const double rates[] = {0, 0.01, 0.05, 0.2, 0.5, 0.99, 1, 3};
    for (size_t r = 0; r < sizeof(rates) / sizeof(rates[0]); r++) {
        double prev = 0;
        for (double idle = 0; idle <= 12 * 3600; idle += 10) {
            double v = next(&dyn, 0, rates[r], idle);
            assert_true(v >= MIN);
            assert_true(v <= MAX);
            assert_true(v >= prev);
            /* Smooth: ten more idle seconds never add more than 20 s. */
            if (idle > 0)
                assert_true(v - prev <= 20);
            prev = v;
        }
    }
    /* It gets there: overnight idle is within a second of max. */
    assert_true(next(&dyn, 0, 0, 8 * 3600) > MAX - 1);
}

static void test_light_never_longer_than_idle(void **state)
{
    (void)state;
    static const double idles[] = {0, 30, 60, 300, 900, 1800, 3600, 7200, 28800, NEVER};
    for (size_t i = 0; i < sizeof(idles) / sizeof(idles[0]); i++) {
        double prev = next(&dyn, 0, 0, idles[i]);
        /* More load (higher rate) never lengthens the interval. */
        for (double rate = 0.01; rate <= 2.0; rate += 0.01) {
            double v = next(&dyn, 0, rate, idles[i]);
            assert_true(v <= prev);
            prev = v;
        }
        assert_true(next(&dyn, 1, 0, idles[i]) <= next(&dyn, 0, 0.5, idles[i]));
    }
    /* Light load at 1 h idle is strictly between busy and idle. */
    double light = next(&dyn, 0, 0.5, 3600);
    assert_true(light > MIN);
    assert_true(light < next(&dyn, 0, 0, 3600));
    assert_near(light, 30 + 3570 * 0.864665 * 0.5);
}

static void test_odd_settings_and_inputs(void **state)
{
    (void)state;
    struct interval_cfg c = {.interval_s = 120, .min_s = 300, .max_s = 60, .dynamic = true};
    assert_true(next(&c, 0, 0, NEVER) == 300); /* max below min: min */
    c.min_s = 0;
    c.max_s = 0;
    assert_true(next(&c, 0, 0, NEVER) == 1);
    assert_true(next(&dyn, 0, -5, -10) == MIN);
    assert_true(next(&dyn, 0, NAN, NEVER) == MAX);
    assert_true(next(&dyn, 0, 0, INFINITY) == MAX);
    assert_true(next(&dyn, 0, 0, NAN) == MIN);
    assert_true(next(&dyn, 0, INFINITY, NEVER) == MIN);
}

static void test_next_check_time(void **state)
{
    (void)state;
    struct interval_load l = {.active = 0, .rate_per_min = 0, .idle_s = 0};
    assert_int_equal(interval_next_check_ms(&dyn, &l, 1000), 1000 + MIN * 1000);
    l.idle_s = NEVER;
    assert_int_equal(interval_next_check_ms(&dyn, &l, 1000), 1000 + MAX * 1000);
}

static void test_load_levels(void **state)
{
    (void)state;
    struct interval_load l = {.active = 0, .rate_per_min = 0, .idle_s = NEVER};
    assert_string_equal(interval_load_level(&l), "idle");
    l.rate_per_min = 0.049;
    assert_string_equal(interval_load_level(&l), "idle");
    l.rate_per_min = 0.05;
    assert_string_equal(interval_load_level(&l), "light");
    l.rate_per_min = 0.99;
    assert_string_equal(interval_load_level(&l), "light");
    l.rate_per_min = 1.0;
    assert_string_equal(interval_load_level(&l), "busy");
    l.rate_per_min = 0;
    l.active = 1;
    assert_string_equal(interval_load_level(&l), "busy");
}

static void test_rate_average(void **state)
{
    (void)state;
    struct interval_rate r;
    interval_rate_init(&r);
    assert_true(interval_rate_value(&r, 0) == 0);
    assert_true(interval_rate_value(&r, 123456) == 0);

    /* A steady 2 requests a minute for an hour settles near 2/min. */
    uint64_t t = 1000;
    for (int i = 0; i < 120; i++, t += 30000)
        interval_rate_hit(&r, t);
    double v = interval_rate_value(&r, t);
    assert_true(v > 1.8 && v < 2.2);

    /* Then silence: it halves every window * ln 2 (about 3.5 min). */
    double later = interval_rate_value(&r, t + 208000);
    assert_true(later > v * 0.45 && later < v * 0.55);
    assert_true(interval_rate_value(&r, t + 3600000) < 0.001);
    /* A query does not change the state. */
    assert_true(interval_rate_value(&r, t) == v);

    /* One request: light for a few minutes, then idle. */
    interval_rate_init(&r);
    interval_rate_hit(&r, 5000);
    struct interval_load l = {.active = 0, .idle_s = 0};
    l.rate_per_min = interval_rate_value(&r, 5000);
    assert_near(l.rate_per_min * 100, 20);
    assert_string_equal(interval_load_level(&l), "light");
    l.rate_per_min = interval_rate_value(&r, 5000 + 10 * 60000);
    assert_string_equal(interval_load_level(&l), "idle");

    /* A clock that steps back decays nothing and breaks nothing. */
    interval_rate_hit(&r, 1000);
    assert_true(interval_rate_value(&r, 0) == 2.0 / 5.0);
}

/* The libm-free exp and llround (util.h) the interval formula uses agree
 * with libm's where it matters. */
static void test_exp_and_llround_without_libm(void **state)
{
    (void)state;
    for (double x = -700; x <= 700; x += 0.37) {
        double want = exp(x), got = util_exp(x);
        if (fabs(got - want) > 1e-15 * want) {
            fprintf(stderr, "util_exp(%.17g) = %.17g, exp = %.17g\n", x, got, want);
            fail();
        }
    }
    assert_true(util_exp(0) == 1.0);
    assert_true(util_exp(-INFINITY) == 0.0);
    assert_true(util_exp(-1000) == 0.0);
    assert_true(isinf(util_exp(INFINITY)) && util_exp(INFINITY) > 0);
    assert_true(isnan(util_exp(NAN)));
    const double xs[] = {0, 0.49999, 0.5, 1.5, 2.5, -0.5, -1.5, -2.4999, 1e6 + 0.5, 123456.789};
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++)
        assert_int_equal(util_llround(xs[i]), llround(xs[i]));
    assert_int_equal(util_llround(NAN), 0);
    assert_true(util_llround(1e300) == INT64_MAX);
    assert_true(util_llround(-1e300) == INT64_MIN);
}

static void test_table_markdown(void **state)
{
    (void)state;
    static const double idles[] = {0, 60, 300, 900, 1800, 3600, 7200, 28800};
    struct buf b;
    buf_init(&b, 1 << 16);
    interval_table(&dyn, idles, sizeof(idles) / sizeof(idles[0]), &b);
    assert_non_null(strstr(b.data, "| 0 s | 30 s | 30 s | 30 s |\n"));
    assert_non_null(strstr(b.data, "| 1 h | 3117 s | 1573 s | 30 s |\n"));
    assert_non_null(strstr(b.data, "| 8 h | 3600 s | 1815 s | 30 s |\n"));
    if (getenv("INTERVAL_TABLE"))
        fputs(b.data, stdout);
    buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_idle),
        cmocka_unit_test(test_dynamic_off_is_constant),
        cmocka_unit_test(test_busy_is_min),
        cmocka_unit_test(test_monotonic_in_idle_time_and_bounded),
        cmocka_unit_test(test_light_never_longer_than_idle),
        cmocka_unit_test(test_odd_settings_and_inputs),
        cmocka_unit_test(test_next_check_time),
        cmocka_unit_test(test_load_levels),
        cmocka_unit_test(test_exp_and_llround_without_libm),
        cmocka_unit_test(test_rate_average),
        cmocka_unit_test(test_table_markdown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
