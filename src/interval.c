/*
 * interval: see interval.h for the rule.  The only state is the decaying
 * request counter in struct interval_rate, advanced by the caller's clock.
 */
#include "interval.h"

#include "util.h"

/* Negative and NaN figures count as 0. */
static double sane(double x)
{
    return x > 0 ? x : 0;
}

double interval_next_s(const struct interval_cfg *c, const struct interval_load *l)
{
    if (!c->dynamic)
        return c->interval_s >= 1 ? (double)c->interval_s : 1.0;

    double lo = c->min_s >= 1 ? (double)c->min_s : 1.0;
    double hi = (double)c->max_s > lo ? (double)c->max_s : lo;
    if (l->active > 0)
        return lo;

    double idle = l->idle_s > 0 ? l->idle_s : 0; /* +inf stays +inf: g = 1 */
    double g = 1.0 - util_exp(-idle / INTERVAL_TAU_S);
    double h = 1.0 - sane(l->rate_per_min) / INTERVAL_BUSY_RATE;
    if (h < 0)
        h = 0;
    double v = lo + (hi - lo) * g * h;
    if (!(v >= lo)) /* also catches NaN */
        v = lo;
    if (v > hi)
        v = hi;
    return v;
}

uint64_t interval_next_check_ms(const struct interval_cfg *c, const struct interval_load *l,
                                uint64_t last_check_ms)
{
    return last_check_ms + (uint64_t)util_llround(interval_next_s(c, l) * 1000.0);
}

const char *interval_load_level(const struct interval_load *l)
{
    double r = sane(l->rate_per_min);
    if (l->active > 0 || r >= INTERVAL_BUSY_RATE)
        return "busy";
    if (r >= INTERVAL_LIGHT_RATE)
        return "light";
    return "idle";
}

void interval_rate_init(struct interval_rate *r)
{
    r->weight = 0;
    r->at_ms = 0;
}

/* The counter's weight decayed to now_ms; a clock that went back decays
 * nothing. */
static double decayed(const struct interval_rate *r, uint64_t now_ms)
{
    if (r->weight <= 0 || now_ms <= r->at_ms)
        return r->weight;
    double dt_s = (double)(now_ms - r->at_ms) / 1000.0;
    return r->weight * util_exp(-dt_s / INTERVAL_RATE_WINDOW_S);
}

void interval_rate_hit(struct interval_rate *r, uint64_t now_ms)
{
    r->weight = decayed(r, now_ms) + 1.0;
    if (now_ms > r->at_ms)
        r->at_ms = now_ms;
}

/* A steady rate of x a minute holds the weight at x * window minutes, so
 * dividing by the window in minutes gives requests a minute. */
double interval_rate_value(const struct interval_rate *r, uint64_t now_ms)
{
    return decayed(r, now_ms) / (INTERVAL_RATE_WINDOW_S / 60.0);
}

/* fmod(s, unit) == 0 for s in [unit, 1e15), without libm. */
static bool whole_units(double s, double unit)
{
    return s >= unit && s < 1e15 && s == (double)(long long)(s / unit) * unit;
}

static void append_duration(struct buf *out, double s)
{
    if (whole_units(s, 3600))
        buf_appendf(out, "%.0f h", s / 3600);
    else if (whole_units(s, 60))
        buf_appendf(out, "%.0f min", s / 60);
    else
        buf_appendf(out, "%.0f s", s);
}

void interval_table(const struct interval_cfg *c, const double *idle_s, size_t n, struct buf *out)
{
    struct interval_cfg dyn = *c;
    dyn.dynamic = true;
    buf_appendf(out, "| time since last request | idle | light (0.5 req/min) | busy |\n");
    buf_appendf(out, "|---|---|---|---|\n");
    for (size_t i = 0; i < n; i++) {
        struct interval_load idle = {.active = 0, .rate_per_min = 0, .idle_s = idle_s[i]};
        struct interval_load light = {.active = 0, .rate_per_min = 0.5, .idle_s = idle_s[i]};
        struct interval_load busy = {.active = 1, .rate_per_min = 0, .idle_s = idle_s[i]};
        buf_appendf(out, "| ");
        append_duration(out, idle_s[i]);
        buf_appendf(out, " | %.0f s | %.0f s | %.0f s |\n", interval_next_s(&dyn, &idle),
                    interval_next_s(&dyn, &light), interval_next_s(&dyn, &busy));
    }
}
