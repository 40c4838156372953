/*
 * health: the health checks that tell the proxy which endpoints are up and
 * how fast they answer.
 *
 * Every endpoint of every group is checked with its own group's token, by
 * one of three methods (health_check.method):
 *
 *   messages      POST {url}/v1/messages, max_tokens 1 (the default);
 *   count_tokens  POST {url}/v1/messages/count_tokens, spends no tokens;
 *   cli           runs `claude [cli_args...] -p PROMPT` with
 *                 ANTHROPIC_BASE_URL pointed at the endpoint and
 *                 ANTHROPIC_AUTH_TOKEN set to the group's token, the way the
 *                 original tool did.  health_check.model is not passed: put
 *                 "--model", NAME in cli_args to choose one.  With
 *                 "--output-format", "json" in cli_args the tokens the CLI
 *                 spent are counted and an is_error result fails the check;
 *                 otherwise success is exit status 0 with some output.
 *
 * Checks run concurrently, at most max_concurrent at once, and each one is
 * bounded by timeout_seconds: an HTTP check that overruns is aborted, a CLI
 * check's whole process group is killed and reaped.  Results go to
 * state_report(), which keeps the history and the health rules, and to the
 * metrics (health_set_metrics).
 *
 * Scheduling: full cycles (every endpoint) run every interval_seconds,
 * measured from scheduled start to scheduled start so they never drift, or,
 * with dynamic_scaling, at the interval interval.h computes from the load.
 * Failed endpoints are re-checked every failed_interval_seconds in between,
 * and an endpoint live traffic saw failing (ep.recheck_soon) within about
 * two seconds.  The module publishes its schedule to the state for /status
 * (state_check_begin, state_publish_*): checks running, paused, interval,
 * load level, next cycle and each endpoint's next check.
 */
#ifndef ZEPHYR_HEALTH_H
#define ZEPHYR_HEALTH_H

#include <stdbool.h>

#include <uv.h>

struct config;
struct metrics;
struct upstream;
struct state;
struct health;

/*
 * A checker for the endpoints of st, with the settings of cfg.  Borrows
 * loop, up, st and cfg, which must outlive it (up and st until the loop has
 * run the close callbacks after health_free()).  Nothing runs before
 * health_start().  With method "cli" on Linux the process becomes a child
 * subreaper, so that whatever a killed CLI left behind is reparented to us
 * and reaped instead of lingering.
 */
struct health *health_new(uv_loop_t *loop, struct upstream *up, struct state *st,
                          const struct config *cfg);

/* Counts every finished check in m (metrics_check); m is borrowed and must
 * outlive h; NULL stops counting. */
void health_set_metrics(struct health *h, struct metrics *m);

/* Starts the first cycle at once (on the next turn of the loop), then
 * keeps checking on schedule. */
void health_start(struct health *h);

/* Queues a check of every endpoint not being checked right now, paused or
 * not.  The periodic schedule is left as it was. */
void health_run_now(struct health *h);

/* Pausing stops every automatic check (cycles, failed and quick re-checks);
 * checks already running finish and report.  Resuming starts a cycle at
 * once if one fell due while paused, else keeps the schedule. */
void health_set_paused(struct health *h, bool paused);

/* A request started: counts toward the request rate and the idle time, and
 * with dynamic scaling may pull the next cycle forward. */
void health_note_request(struct health *h);

/* Something changed (a request ended, live traffic marked an endpoint
 * failed, an operator acted): counts as activity for the idle time,
 * recomputes the interval and schedules any quick re-check now due. */
void health_poke(struct health *h);

/*
 * What can be known about the checks of cfg without sending traffic: with
 * method "cli", whether claude_binary_path is an executable file (in $PATH
 * when it has no slash) and, when run is set, whether `BIN --version`
 * exits 0 within 10 s (run blocks: --check-config only).  NULL when all is
 * well, else a malloc'd warning line ending in a newline.  health_new() and
 * health_set_config() log it (without running the binary).
 */
char *health_validate(const struct config *cfg, bool run);

/*
 * After a configuration reload: drops the results of checks in flight
 * (their processes are killed, their transfers aborted), adopts st and cfg
 * and starts a fresh cycle.  Call it before freeing the old state and
 * config; st may be the same state as before.
 */
void health_set_config(struct health *h, struct state *st, const struct config *cfg);

/*
 * Stops everything: aborts transfers, kills CLI process groups, closes the
 * timers.  Checks in flight report nothing.  The struct is freed from the
 * last close callback, so keep running the loop (uv_run) until it returns;
 * killed children are reaped meanwhile.  Call it before upstream_free().  NULL
 * is a no-op.
 */
void health_free(struct health *h);

/*
 * --test-timing: runs `cycles` check cycles every interval_s seconds (dynamic
 * scaling off) against the endpoints of cfg in a loop of its own, without
 * serving traffic, and prints a report on stdout: per cycle its scheduled and
 * actual start, the error, the interval and the check outcomes, then a
 * summary.  A cycle passes when it starts within its tolerance (5% of the
 * interval, at least 100 ms and at most 1 s) and every endpoint was checked
 * and finished.  Returns the exit code: 0 when every cycle passed, else 1.
 * Endpoints that fail their check do not fail the timing test.
 */
int health_test_timing(const struct config *cfg, int cycles, double interval_s);

#endif
