/*
 * metrics: counters and histograms for GET /metrics, rendered in the
 * Prometheus text exposition format (version 0.0.4).
 *
 * The registry counts what happens: finished requests (by endpoint, group
 * and status class, with time to first byte and total time as histograms,
 * and tokens by model), failed attempts that moved elsewhere, health checks
 * and their latency.  What the proxy *is* at a moment (endpoint health,
 * circuit, requests in flight, current endpoint, check interval, tokens
 * spent on checks) is not copied here: metrics_render() reads it from a
 * snapshot of the state (state_snapshot_take), taken from the same state
 * that /status renders, so the two never disagree.  The registry is fed by
 * the callers: the proxy (requests, retries), the checker (checks) and the
 * state's switch callback (switches); state.c does not know this module.
 *
 * Cardinality is bounded: at most METRICS_MAX_SERIES endpoint/group pairs
 * (more become endpoint "(other)"), METRICS_MAX_MODELS models per pair
 * (more become model "other") and METRICS_MAX_REASONS retry reasons per
 * endpoint (more become "other").  Endpoint names come from the
 * configuration; model names come from upstream replies and are the only
 * label a peer controls, hence the cap.
 *
 * Pure: no I/O, no clock, no globals.  Latencies are passed in
 * milliseconds and exposed in seconds, as Prometheus names them.  Label
 * values are escaped (backslash, double quote, newline) and bytes that are
 * not valid UTF-8 become '?'.
 */
#ifndef ZEPHYR_METRICS_H
#define ZEPHYR_METRICS_H

#include <stdbool.h>

#include "usage.h"
#include "util.h"

struct metrics;
struct state_snapshot;

/* The Content-Type to answer GET /metrics with. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#define METRICS_MAX_SERIES 256
#define METRICS_MAX_MODELS 32
#define METRICS_MAX_REASONS 16

/* A new, empty registry; metrics_free(NULL) is a no-op. */
struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);

/*
 * Counts one finished request, once, from the single place a request ends.
 * endpoint is where it ended (NULL or "" when it was never routed: counted
 * as endpoint "(none)"); group is that endpoint's group (NULL: "").
 * status is what the client got: 0 when it got nothing (class "none"),
 * otherwise its class "1xx".."5xx".  ttfb_ms < 0 means no first byte was
 * seen and leaves the TTFB histogram alone; total_ms is always observed.
 * attempts > 1 counts a failover (the request was served, or failed, after
 * moving).  u (may be NULL) holds the request's tokens, model in u->model
 * ("" counts as "unknown"); zero counts add nothing.
 */
void metrics_request(struct metrics *m, const char *endpoint, const char *group, int status,
                     double ttfb_ms, double total_ms, unsigned attempts, const struct usage *u);

/*
 * Counts a failed attempt on from_endpoint that was retried elsewhere.
 * reason is a short fixed word ("connect", "timeout", "5xx", "429", ...);
 * NULL or "" counts as "other".
 */
void metrics_retry(struct metrics *m, const char *from_endpoint, const char *reason);

/*
 * Counts a reply from endpoint whose token usage could not be read
 * although it had some to read; reason is a fixed word ("encoding",
 * "corrupt", "too_large").
 */
void metrics_usage_unreadable(struct metrics *m, const char *endpoint, const char *reason);

/*
 * Counts one finished health check of endpoint; latency_ms >= 0 is
 * observed in the check-latency histogram (a failed check without a
 * latency passes a negative value).
 */
void metrics_check(struct metrics *m, const char *endpoint, bool ok, double latency_ms);

/*
 * Counts a switch of the current endpoint (optional: /metrics works
 * without it, zephyr_switches_total then stays absent).  reason is the
 * switch's reason word ("faster", "failed", "pin", ...).
 */
void metrics_switch(struct metrics *m, const char *reason);

/*
 * Appends the whole exposition text to out: the registry's counters and
 * histograms, then the gauges read from the snapshot st and from up (either may be NULL in
 * tests: its gauges are left out).  Every family has HELP and TYPE lines; every
 * configured endpoint appears in the per-endpoint families even before
 * anything happened to it.  Stops quietly when out reaches its cap.
 */
struct metrics_upstream {
    size_t open;                    /* connections of the built-in HTTP/1.1 client */
    size_t idle;                    /* of which idle in its keep-alive pools */
    uint64_t tls_full, tls_resumed; /* its TLS handshakes: full, resumed */
    size_t h2_conns, h2_streams;    /* its HTTP/2 connections and the streams on them */
    uint64_t log_lines_dropped;     /* not the upstream's: log lines dropped (log.h) */
};
void metrics_render(const struct metrics *m, const struct state_snapshot *st,
                    const struct metrics_upstream *up, struct buf *out);

#endif
