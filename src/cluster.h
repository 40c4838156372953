/*
 * cluster: what several instances of the proxy (a fleet) share through
 * Redis ([cluster] redis_url).  Every Redis call of the program is in
 * cluster.c; the rest of the proxy sees only the state observer
 * (state.h): outcomes state_report() tells it are published, outcomes
 * another instance published are applied through state_report() with
 * remote set, and state_may_check() says whether this instance is the one
 * that checks an endpoint.  It reads and asks the state through state.h's
 * functions only (scripts/check-walls.py).
 *
 * Shared: endpoint outcomes (check results, live failures, 429 rests and
 * usage caps; circuits follow from the failures), one checker per endpoint
 * (a lease), session bindings, and request and token counters per endpoint
 * and model.  Redis is never waited for: lookups stay local, updates leave
 * asynchronously, and with Redis down or slow every instance runs on its
 * own state, checks its endpoints itself, and reconnects with back-off.
 */
#ifndef ZEPHYR_CLUSTER_H
#define ZEPHYR_CLUSTER_H

#include <cjson/cJSON.h>
#include <stdint.h>
#include <uv.h>

struct cluster;
struct config;
struct state;
struct buf;

/*
 * A cluster member for cfg's [cluster] table, attached to st (its
 * observer), or NULL when the configuration has no redis_url.  It starts
 * connecting at once and never fails: an unreachable Redis is retried.
 * poke(ud) is called when this instance starts or stops being the checker
 * of an endpoint, so that the check scheduler re-plans (health_poke).
 */
struct cluster *cluster_new(uv_loop_t *loop, const struct config *cfg, struct state *st,
                            void (*poke)(void *ud), void *ud);

/* After a reload: st replaces the previous state (the connection and the
 * [cluster] settings of the start are kept). */
void cluster_set_state(struct cluster *cl, struct state *st);

/* Adds the "cluster" object (link state, leases held, fleet totals) to a
 * /status document.  NULL cl adds nothing. */
void cluster_status(const struct cluster *cl, cJSON *doc);

/* Appends the zephyr_cluster_* and zephyr_fleet_* families to /metrics. */
void cluster_metrics(const struct cluster *cl, struct buf *out);

/* Disconnects, closes its handles (the loop runs dry after) and frees the
 * object once they are closed.  NULL is a no-op. */
void cluster_free(struct cluster *cl);

#endif
