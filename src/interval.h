/*
 * interval: how long to wait before the next round of health checks.
 *
 * Pure arithmetic on numbers the caller passes in: no clock is read here.
 *
 * With dynamic scaling off the interval is interval_s, always.  With it on,
 * the interval follows load (lo = min_s, hi = max_s):
 *
 *     interval = lo                                   if active > 0
 *     interval = lo + (hi - lo) * g(idle_s) * h(rate) otherwise
 *     g(t) = 1 - exp(-t / INTERVAL_TAU_S)             grows 0 -> 1 with idle time
 *     h(r) = max(0, 1 - r / INTERVAL_BUSY_RATE)       1 at no traffic, 0 when busy
 *
 * so under load (requests in flight, or a recent rate of at least one request
 * a minute) checks run every min_s; once the proxy goes quiet the interval
 * climbs smoothly, reaching about 86% of the way to max_s after an hour idle
 * and max_s overnight.  The value never increases with load (more requests in
 * flight, higher rate, less idle time all give a shorter or equal interval),
 * so light load never checks less often than idle, and it is always within
 * [min_s, max_s].
 *
 * interval_rate is the recent request rate: an exponentially decaying count
 * of requests with a INTERVAL_RATE_WINDOW_S time constant, in requests per
 * minute.
 */
#ifndef ZEPHYR_INTERVAL_H
#define ZEPHYR_INTERVAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* Idle time constant of the growth toward max_s: 30 minutes. */
#define INTERVAL_TAU_S 1800.0
/* Requests a minute at and above which the proxy counts as busy. */
#define INTERVAL_BUSY_RATE 1.0
/* Requests a minute at and above which (and below busy) it counts as light. */
#define INTERVAL_LIGHT_RATE 0.05
/* Time constant of the request-rate average: 5 minutes. */
#define INTERVAL_RATE_WINDOW_S 300.0

struct interval_cfg {
    int interval_s; /* fixed interval when dynamic is off */
    int min_s;      /* dynamic: under load */
    int max_s;      /* dynamic: long idle */
    bool dynamic;
};

struct interval_load {
    unsigned active;     /* requests in flight, all endpoints */
    double rate_per_min; /* recent request rate (interval_rate_value) */
    double idle_s;       /* seconds since the last request started or ended;
                            large (e.g. 1e9) if there never was one */
};

/*
 * Seconds until the next check round, per the rule above.  Settings below
 * 1 s are taken as 1 s, and max_s below min_s as min_s, so the result is
 * always >= 1.  Negative or NaN load figures are taken as 0.
 */
double interval_next_s(const struct interval_cfg *c, const struct interval_load *l);

/* The monotonic time of the next check: last_check_ms + interval.  Recompute
 * it whenever the load changes, so a request arriving during a long idle wait
 * brings the next check forward. */
uint64_t interval_next_check_ms(const struct interval_cfg *c, const struct interval_load *l,
                                uint64_t last_check_ms);

/* "busy" (requests in flight or rate >= INTERVAL_BUSY_RATE), "light" (rate
 * >= INTERVAL_LIGHT_RATE), else "idle". */
const char *interval_load_level(const struct interval_load *l);

struct interval_rate {
    double weight; /* decayed request count as of at_ms */
    uint64_t at_ms;
};

void interval_rate_init(struct interval_rate *r);
/* Counts one request at now_ms. */
void interval_rate_hit(struct interval_rate *r, uint64_t now_ms);
/* Requests per minute, averaged over roughly the last INTERVAL_RATE_WINDOW_S. */
double interval_rate_value(const struct interval_rate *r, uint64_t now_ms);

/*
 * Appends the README's table of example intervals for c (dynamic scaling on)
 * to out: one row per idle time in idle_s[0..n), columns idle, light
 * (0.5 requests a minute) and busy.
 */
void interval_table(const struct interval_cfg *c, const double *idle_s, size_t n, struct buf *out);

#endif
