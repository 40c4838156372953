/*
 * Test shorthand for state_report(): one call per kind of outcome, with the
 * arguments the old per-kind calls took, so that tests read as the events
 * they replay.  Static inline: each test file that includes it uses some.
 */
#ifndef ZEPHYR_TEST_STATE_REPORTS_H
#define ZEPHYR_TEST_STATE_REPORTS_H

#include "state.h"

static inline void report_check(struct state *st, int ep, bool ok, bool auth_failed,
                                double latency_ms, double ttfb_ms, const char *error,
                                const struct usage *tokens, uint64_t now, uint64_t wall)
{
    struct state_outcome o = {
        .source = STATE_FROM_CHECK,
        .kind = ok ? STATE_OK : auth_failed ? STATE_AUTH_FAILED : STATE_DOWN,
        .latency_ms = ok ? latency_ms : -1,
        .ttfb_ms = ok ? ttfb_ms : -1,
        .error = ok ? NULL : error,
        .tokens = tokens,
    };
    state_report(st, ep, &o, now, wall);
}

static inline void report_check_error(struct state *st, int ep, const char *what,
                                      const char *fix, uint64_t now, uint64_t wall)
{
    struct state_outcome o = {.source = STATE_FROM_CHECK, .kind = STATE_CHECK_MISCONFIGURED,
                              .latency_ms = -1, .ttfb_ms = -1, .error = what, .fix = fix};
    state_report(st, ep, &o, now, wall);
}

static inline void report_live_failure_status(struct state *st, int ep, int status,
                                              const char *error, uint64_t now)
{
    struct state_outcome o = {.source = STATE_FROM_LIVE, .kind = STATE_DOWN, .status = status,
                              .error = error};
    state_report(st, ep, &o, now, 0);
}

static inline void report_live_failure(struct state *st, int ep, const char *error,
                                       uint64_t now)
{
    report_live_failure_status(st, ep, 0, error, now);
}

static inline void report_live_auth_failure(struct state *st, int ep, const char *error,
                                            uint64_t now)
{
    struct state_outcome o = {.source = STATE_FROM_LIVE, .kind = STATE_AUTH_FAILED,
                              .error = error};
    state_report(st, ep, &o, now, 0);
}

static inline void report_live_success(struct state *st, int ep, double ttfb_ms, uint64_t now)
{
    struct state_outcome o = {.source = STATE_FROM_LIVE, .kind = STATE_OK, .ttfb_ms = ttfb_ms};
    state_report(st, ep, &o, now, 0);
}

static inline void report_rate_limited(struct state *st, int ep, uint64_t until, uint64_t now)
{
    struct state_outcome o = {.source = STATE_FROM_LIVE, .kind = STATE_RATE_LIMITED,
                              .status = 429, .rest_until_ms = until};
    state_report(st, ep, &o, now, 0);
}

static inline void report_usage_capped(struct state *st, int ep, uint64_t until,
                                       const char *reason, uint64_t now)
{
    struct state_outcome o = {.source = STATE_FROM_LIVE, .kind = STATE_USAGE_CAPPED,
                              .rest_until_ms = until, .error = reason};
    state_report(st, ep, &o, now, 0);
}

static inline void report_model_missing(struct state *st, int ep, const char *model,
                                        uint64_t now)
{
    struct state_outcome o = {.source = STATE_FROM_LIVE, .kind = STATE_MODEL_MISSING,
                              .status = 404, .model = model};
    state_report(st, ep, &o, now, 0);
}

#endif
