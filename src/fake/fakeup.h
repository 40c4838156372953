/*
 * fakeup: a scriptable fake of the Anthropic Messages API, served over
 * HTTP/1.1 on a libuv loop.  Used by the tests (build/fake-upstream), by the
 * proxy's demo mode (several instances in the proxy's own loop) and as the
 * origin of the benchmarks.  The wire contract, the knobs and the /_fake/
 * paths are specified in docs/INTERFACES.md, "The fake upstream".
 *
 * The embedding program must ignore SIGPIPE (writes to a peer that went away
 * must fail with EPIPE, not kill the process).
 */
#ifndef ZEPHYR_FAKEUP_H
#define ZEPHYR_FAKEUP_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#define FAKEUP_TOKEN_MAX 256  /* token knob, including the NUL */
#define FAKEUP_NAME_MAX 64    /* name and bind, including the NUL */
#define FAKEUP_MODELS_MAX 256 /* models knob, including the NUL */

struct fakeup;

/*
 * Settings of one fake upstream.  A plain value: copy it freely.  The knob
 * fields are the ones documented in INTERFACES.md; name, bind and port only
 * matter to fakeup_new() (name may also be changed at run time).
 */
struct fakeup_opts {
    int latency_ms;               /* delay before the response headers */
    int status;                   /* status answered on /v1/messages */
    int retry_after;              /* -1: no retry-after header */
    int events;                   /* content_block_delta events / words */
    int gap_ms;                   /* delay before each delta event */
    int close_after;              /* -1: never; else cut the connection after N deltas */
    int error_after;              /* -1: never; else event: error after N deltas */
    int body_bytes;               /* pad non-stream reply text to at least this */
    bool hang;                    /* accept requests, never answer */
    char token[FAKEUP_TOKEN_MAX]; /* "" = no authentication */
    /* Models served: "" any (the default, which older tests rely on);
     * "real" the current Anthropic models (claude-haiku-4-5,
     * claude-sonnet-4-6, claude-opus-4-8); else a comma-separated list.
     * A dated variant (NAME-YYYYMMDD) of a listed name is served too.  Any
     * other model, a retired one included, gets the real API's 404
     * not_found_error "model: NAME"; GET /v1/models lists the names. */
    char models[FAKEUP_MODELS_MAX];
    char name[FAKEUP_NAME_MAX]; /* x-fake-name, default "fake" */
    char bind[FAKEUP_NAME_MAX]; /* default "127.0.0.1" */
    int port;                   /* 0 = pick a free port */
};

/* Counters, as served by GET /_fake/stats (the last_* fields are not here). */
struct fakeup_stats {
    uint64_t requests; /* every request outside /_fake/ */
    uint64_t messages; /* POST /v1/messages */
    uint64_t streams_started;
    uint64_t streams_completed; /* message_stop and the last chunk sent */
    uint64_t streams_aborted;   /* client went away before the end */
    uint64_t streams_cut;       /* ended by close_after */
    uint64_t streams_errored;   /* ended by error_after */
    uint64_t aborted;           /* any request whose client went away first */
    uint64_t errors;            /* responses with status >= 400 */
    uint64_t active;            /* requests read and not yet fully answered */
    uint64_t connections;       /* accepted since start / reset */
    uint64_t connections_open;
    uint64_t bytes_in; /* request body bytes */
};

/* Fills o with the documented defaults (port 0, bind 127.0.0.1, name "fake"). */
void fakeup_opts_init(struct fakeup_opts *o);

/*
 * Sets one setting from text, as given on a command line: knob may use
 * dashes or underscores ("latency-ms", "latency_ms"); "name", "bind" and
 * "port" are accepted too.  Integers must be plain decimal and in range,
 * booleans are true/false/1/0/yes/no/on/off.  Returns 0, or -1 when the knob
 * is unknown or the value is bad (o is then unchanged).
 */
int fakeup_opts_set(struct fakeup_opts *o, const char *knob, const char *value);

/*
 * Starts listening on o->bind:o->port with the loop.  Returns NULL when the
 * address is bad or cannot be bound (the error is logged nowhere; the caller
 * reports it).  The opts are copied.
 */
struct fakeup *fakeup_new(uv_loop_t *loop, const struct fakeup_opts *o);

/* Same as fakeup_new(), and stores the libuv error code in *err on failure. */
struct fakeup *fakeup_new_err(uv_loop_t *loop, const struct fakeup_opts *o, int *err);

/* The port actually bound (useful with port 0). */
int fakeup_port(const struct fakeup *f);

/*
 * Changes one knob at run time, like POST /_fake/config does (bind and port
 * are refused).  Affects requests that are read from now on; a request in
 * progress keeps the knobs it started with.  Returns 0 or -1 (unknown knob,
 * bad value: nothing changed).
 */
int fakeup_configure(struct fakeup *f, const char *knob, const char *value);

/* The current knob set. */
const struct fakeup_opts *fakeup_opts(const struct fakeup *f);

/* A copy of the counters. */
void fakeup_stats(const struct fakeup *f, struct fakeup_stats *out);

/*
 * Stops listening and closes every connection at once (responses in
 * progress are cut).  f is freed once the last libuv close callback ran;
 * done(ud) is called just before that, from the loop.  done may be NULL.
 * f must not be used after this call.  NULL is a no-op.
 */
void fakeup_close(struct fakeup *f, void (*done)(void *), void *ud);

#endif
