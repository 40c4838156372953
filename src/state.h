/*
 * state: what the proxy knows at run time, apart from the configuration.
 *
 * Every endpoint of every group has a struct ep with its health, latency
 * figures, check history, counters and circuit; every group has its
 * selection policy (policy.c).  Requests in flight are tracked in a list of
 * struct track records embedded in the proxy's request objects: a record is
 * linked when the request is dispatched and unlinked exactly when it ends,
 * whatever the reason — nothing is ever swept by age.  Recent events
 * (switches, failures, recoveries) are kept in a ring for /status.
 *
 * This module does no I/O and never touches the loop: callers pass the
 * monotonic and wall clocks in.  It logs switches, because a switch must be
 * logged wherever it is decided.
 *
 * One way in: only state.c reads or writes the state's fields.  What happened at an
 * endpoint (a check's or a live request's outcome) arrives through
 * state_report(); what the checker knows about its schedule through the
 * state_check_* and state_publish_* calls; the proxy's counters through
 * state_count_*.  Readers outside use the accessors or a snapshot
 * (state_snapshot_take).  struct state and its per-endpoint and per-group
 * records are defined in state.c only: an incomplete type everywhere else,
 * so the compiler keeps every other module out of their fields.
 */
#ifndef ZEPHYR_STATE_H
#define ZEPHYR_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "policy.h"
#include "usage.h"

enum ep_status {
    EP_UNKNOWN = 0,  /* never checked */
    EP_CHECKING = 1, /* first check running */
    EP_HEALTHY = 2,
    EP_FAILED = 3,
    EP_AUTH_FAILED = 4, /* the group's token was refused */
    EP_CHECK_ERROR = 5, /* the check itself is refused (400/404/422, no cli):
                         * not an endpoint failure; live results decide */
};

/* Why an endpoint last failed, for the error a client gets when no
 * endpoint is usable (state_why_unusable). */
enum ep_cause {
    EP_CAUSE_NONE = 0,
    EP_CAUSE_DOWN = 1,         /* connect, timeout, 5xx other than 503/529, broken stream */
    EP_CAUSE_AUTH = 2,         /* the token was refused (401/403) */
    EP_CAUSE_TLS = 3,          /* a certificate or TLS handshake problem */
    EP_CAUSE_RATE_LIMITED = 4, /* resting after a 429 */
    EP_CAUSE_OVERLOADED = 5,   /* 529 or 503 */
};

enum ep_circuit {
    CIRCUIT_CLOSED = 0,
    CIRCUIT_OPEN = 1,
    CIRCUIT_HALF_OPEN = 2,
};

#define EP_HISTORY 32
#define EP_MISSING_MODELS 8 /* models an endpoint is remembered not to serve */
#define EP_MISSING_MODEL_MS (10 * 60 * 1000u)
#define STATE_EVENTS 64
#define EP_TEXT 160 /* an endpoint's error, check error and models warning are cut to fit */

struct state; /* defined in state.c, with its struct ep and struct group */

/* One check in an endpoint's history. */
struct ep_check {
    uint64_t t_wall_ms;
    bool ok;
    double latency_ms; /* < 0 on failure */
    char error[96];
};

enum track_state {
    TRACK_READING = 0,
    TRACK_WAITING = 1,   /* request sent, waiting for response headers */
    TRACK_STREAMING = 2, /* response headers sent to the client */
    TRACK_DONE = 3,
};

struct track {
    uint64_t id;
    char idstr[12];     /* short distinct id shown to people */
    const char *method; /* borrows (static) */
    char *path;         /* owns */
    int ep;             /* index into state.eps, -1 before routing */
    enum track_state state;
    uint64_t start_ms; /* monotonic */
    uint64_t bytes_in;
    uint64_t bytes_out;
    unsigned attempts;
    struct state *owner; /* borrows: the state whose list holds this record */
    struct track *prev, *next;
};

/* One entry of the recent events /status shows. */
struct event {
    uint64_t t_wall_ms;
    char kind[12]; /* switch | failure | recovery | info */
    char message[200];
    char from[64];
    char to[64];
    char reason[16];
};

/*
 * A fleet's member (cluster.c) listening to this state: told what happens
 * here, asked whether this instance checks an endpoint.  The calls are made
 * inside the state function that caused them; they must not call back into
 * state functions that report (state_report, state_bind_session).
 *
 *   outcome    at the end of state_report(), for an outcome that happened
 *              here (o->remote false); o and its strings are borrowed for
 *              the call;
 *   session    state_bind_session() bound session_key (the client's key,
 *              without its group) to ep;
 *   served     a request ended on ep (state_note_served): model is the one
 *              the reply named, else the one asked for; tokens may be NULL;
 *   may_check  false: another instance of the fleet checks ep, this one
 *              must not.
 *
 * Any member may be NULL.
 */
struct state_outcome;
struct state_observer {
    void (*outcome)(void *ud, struct state *st, int ep, const struct state_outcome *o);
    void (*session)(void *ud, struct state *st, int ep, const char *session_key);
    void (*served)(void *ud, struct state *st, int ep, const char *model,
                   const struct usage *tokens);
    bool (*may_check)(void *ud, const struct state *st, int ep);
    void *ud;
};

struct state *state_new(const struct config *cfg, uint64_t now_mono, uint64_t now_wall);
/* Frees the state (and the config it owns).  NULL is a no-op. */
void state_free(struct state *st);

/* A request keeps the state it started under alive: after a reload the
 * retired state is freed when its last request ends. */
void state_ref(struct state *st);
void state_unref(struct state *st);
void state_retire(struct state *st);

/*
 * After a reload: st (new) takes over from old what stays true.  For every
 * endpoint with the same group, name and URL in both, its health, latency,
 * history, counters, circuit and rate-limit rest are copied; each group's
 * mode, pin and current endpoint are carried over by name, and so is the
 * current group; the totals carry over; old's in-flight track records move
 * to st, their endpoint looked up by name (-1 when it is gone).
 */
void state_take_over(struct state *st, struct state *old, uint64_t now_ms);

/* Endpoint by name (first match), or -1. */
int state_find_ep(const struct state *st, const char *name);
int state_find_group(const struct state *st, const char *name);

/* The current endpoint of the current group, or -1. */
int state_current_ep(const struct state *st);

/* Re-runs the current group's policy (and every other group's, so their
 * current endpoints stay meaningful); logs and records any switch. */
void state_evaluate(struct state *st, uint64_t now_ms);

/* Picks the endpoint for a new request of the current group: the
 * session's endpoint while usable, else the current one, else the best
 * usable one.  session_key may be NULL.  Returns -1 when none is usable. */
int state_route(struct state *st, const char *session_key, uint64_t now_ms);
/* Records that session_key was served by ep. */
void state_bind_session(struct state *st, const char *session_key, int ep, uint64_t now_ms);
/* Drops the session bindings to endpoint ep (-1: every binding) and logs
 * how many; returns that count.  Those sessions are routed afresh. */
size_t state_release_sessions(struct state *st, int ep);
/* The live session bindings, most recently used first, at most max: the
 * endpoint (index into state.eps), the short id (sessions_short_id, never
 * the session id itself), and when it was bound and last used (monotonic). */
struct state_session {
    int ep;
    char id[SESSIONS_SHORT_ID];
    uint64_t created_ms;
    uint64_t used_ms;
};
size_t state_sessions_list(const struct state *st, uint64_t now_ms, struct state_session *out,
                           size_t max);
/* Bindings held (0 when sticky sessions are off); expired ones may count. */
size_t state_sessions_count(const struct state *st);
/* The next endpoint of ep's group to try after the ones in tried[] (one
 * bool per endpoint of the group), or -1. */
int state_next_ep(struct state *st, int ep, const bool *tried, uint64_t now_ms);

/* The endpoint next in line for the current group's traffic: the one a
 * request goes to when the current endpoint fails (policy_next_in_line),
 * else, when the group has no other usable endpoint, the best usable one of
 * its fallback_groups in order, as a request's failover would pick it.
 * -1 when none.  The proxy keeps a connection to it warm. */
int state_next_in_line(const struct state *st, uint64_t now_ms);

/* Whether an endpoint may receive traffic now by its checks and live
 * results.  (In panic routing an endpoint that is not may still get
 * traffic: see state_ep_live_blocked.) */
bool state_ep_usable(const struct state *st, int ep, uint64_t now_ms);

/* Whether live results alone keep the endpoint from traffic: resting after
 * a 429, or its circuit opened by STATE_CIRCUIT_FAILURES live failures in a
 * row.  Checks alone never block an endpoint this way. */
bool state_ep_live_blocked(const struct state *st, int ep, uint64_t now_ms);

/*
 * Why no endpoint of group g is usable, for the client's error.  cause is
 * the one cause every endpoint out of use shares (EP_CAUSE_RATE_LIMITED when
 * each is resting; rests and overload mixed count as EP_CAUSE_OVERLOADED),
 * or EP_CAUSE_DOWN when they differ or none is known; detail lists
 * "name: reason" for each endpoint (cut to fit, never a secret: the reasons
 * are the redacted texts of checks and live failures); retry_after_s is
 * when the earliest rest or circuit ends (0 when unknown).
 */
struct state_unusable {
    enum ep_cause cause;
    char detail[1024];
    unsigned retry_after_s;
};
void state_why_unusable(const struct state *st, size_t g, uint64_t now_ms,
                        struct state_unusable *out);

/* The cause a failure text tells of: "TLS"/"SSL"/"certificate" is a TLS
 * problem, "529"/"503"/"overloaded" an overload, anything else DOWN. */
enum ep_cause state_cause_of(const char *error);
const char *ep_cause_name(enum ep_cause c);

/*
 * What happened at an endpoint: the outcome of a health check (source
 * STATE_FROM_CHECK) or of a live request (STATE_FROM_LIVE).
 *
 *   STATE_OK             the check passed (latency_ms, ttfb_ms, tokens), or
 *                        a live request got its first byte (ttfb_ms);
 *   STATE_DOWN           connect error, timeout, 5xx, broken stream, failed
 *                        check; status is the HTTP status when the failure
 *                        was an answer (a 529 or 503 makes the cause
 *                        EP_CAUSE_OVERLOADED whatever error says), else 0;
 *   STATE_AUTH_FAILED    the token was refused (401/403);
 *   STATE_RATE_LIMITED   a 429: rest until rest_until_ms;
 *   STATE_USAGE_CAPPED   an exhausted balance, quota or usage limit: rest
 *                        until rest_until_ms like a 429, without counting
 *                        as a failure; error is the reason shown;
 *   STATE_MODEL_MISSING  the endpoint does not serve model: remembered for
 *                        EP_MISSING_MODEL_MS (models longer than 63 bytes
 *                        are not remembered);
 *   STATE_CHECK_MISCONFIGURED  the check itself is refused (the model, the
 *                        body or the path is not served; the cli binary is
 *                        missing): error says what, fix what to change.  The
 *                        endpoint becomes CHECK_ERROR, routed like "not
 *                        checked" (live results and latency decide), and
 *                        the problem is logged once.
 *
 * error is a redacted text (never a secret); the strings are copied.
 */
enum state_source {
    STATE_FROM_CHECK = 0,
    STATE_FROM_LIVE = 1,
};

enum state_kind {
    STATE_OK = 0,
    STATE_DOWN = 1,
    STATE_AUTH_FAILED = 2,
    STATE_RATE_LIMITED = 3,
    STATE_USAGE_CAPPED = 4,
    STATE_MODEL_MISSING = 5,
    STATE_CHECK_MISCONFIGURED = 6,
};

struct state_outcome {
    enum state_source source;
    enum state_kind kind;
    int status;                 /* HTTP status of the answer, 0 when none */
    double latency_ms;          /* check latency, < 0 unknown */
    double ttfb_ms;             /* time to first byte, < 0 unknown */
    uint64_t rest_until_ms;     /* RATE_LIMITED, USAGE_CAPPED: monotonic */
    const char *error;          /* borrows; NULL: "check failed" for a failed check */
    const char *fix;            /* borrows; CHECK_MISCONFIGURED, may be NULL */
    const char *model;          /* borrows; MODEL_MISSING */
    const struct usage *tokens; /* borrows; tokens a check spent, may be NULL */
    bool remote;                /* another instance of the fleet saw it (cluster.c):
                                 * applied, not told to the observer again, and a
                                 * check's does not end a check running here */
};

/* The one entry point for what happened at endpoint ep.  A check's report
 * also ends the check state_check_begin() started.  The health rules it
 * applies are listed at the top of state.c. */
void state_report(struct state *st, int ep, const struct state_outcome *o, uint64_t now_ms,
                  uint64_t now_wall);

/*
 * What the checker (health.c) publishes about its schedule, for /status
 * and the metrics: a check of ep begins (an unchecked endpoint shows
 * "checking") or is abandoned without a result; the interval in effect and
 * the load level it follows (a static string); the next cycle (monotonic,
 * 0 when unscheduled); whether checks are paused; each endpoint's next
 * check (0 while one runs); the warning that GET /v1/models does not list
 * the check model ("" or NULL: none).
 */
void state_check_begin(struct state *st, int ep, uint64_t now_ms);
void state_check_abandon(struct state *st, int ep);
void state_publish_interval(struct state *st, double interval_s, const char *load_level);
void state_publish_cycle(struct state *st, uint64_t next_cycle_ms);
void state_publish_paused(struct state *st, bool paused);
void state_publish_ep_next(struct state *st, int ep, uint64_t next_check_ms);
void state_publish_models_warning(struct state *st, int ep, const char *warning);

/* The checker's questions: whether a check of ep runs now; whether live
 * traffic asked for a quick re-check; whether ep failed (FAILED or
 * AUTH_FAILED); when an open circuit lets its trial through (monotonic, 0
 * when the circuit is not open). */
bool state_ep_check_running(const struct state *st, int ep);
bool state_ep_recheck_soon(const struct state *st, int ep);
bool state_ep_failed(const struct state *st, int ep);
uint64_t state_ep_circuit_retry_ms(const struct state *st, int ep);

/* The proxy's counters: a finished request's tokens (to the totals of st
 * and to endpoint ep of st_ep, which may be an older state; ep < 0: totals
 * only), and a failed attempt that moved elsewhere. */
void state_count_tokens(struct state *st, struct state *st_ep, int ep, const struct usage *u);
void state_count_retry(struct state *st);

/* Wiring: st takes ownership of cfg (freed with the state); the callbacks
 * described at struct state in state.c (NULL: none).  state_take_over()
 * carries them. */
void state_own_config(struct state *st, struct config *cfg);
void state_set_failed_cb(struct state *st, void (*cb)(void *ud, struct state *st, int ep),
                         void *ud);
void state_set_switch_cb(struct state *st, void (*cb)(void *ud, const char *reason), void *ud);
/* The clock events are stamped with (now_wall_ms unless set: a test sets
 * its own), so that this module reads no clock itself. */
void state_set_wall_clock(struct state *st, uint64_t (*wall_clock_ms)(void));

/* The fleet (cluster.c, see struct state_observer): attaches obs (NULL:
 * none; borrowed, not carried by state_take_over); whether this instance
 * may check ep (true without an observer); a request ended on ep (ep < 0:
 * nothing is told); a live failure elsewhere or a new checker asks for a
 * quick check of ep, as a local live failure does. */
void state_set_observer(struct state *st, const struct state_observer *obs);
const struct state_observer *state_observer_of(const struct state *st);
bool state_may_check(const struct state *st, int ep);
void state_note_served(struct state *st, int ep, const char *model, const struct usage *tokens);
void state_ep_ask_recheck(struct state *st, int ep);

/* Read-only accessors. */
size_t state_n_eps(const struct state *st);
size_t state_n_tracks(const struct state *st);
const char *state_ep_name(const struct state *st, int ep);
const char *state_ep_url(const struct state *st, int ep);
enum ep_status state_ep_status(const struct state *st, int ep);
/* The models warning state_publish_models_warning() kept (cut to fit), "" when none. */
const char *state_ep_models_warning(const struct state *st, int ep);
/* Endpoint ep's group; the current group; a group's name and configuration;
 * the endpoints of group g are first .. first + n - 1 (returns n). */
size_t state_ep_group(const struct state *st, int ep);
size_t state_current_group(const struct state *st);
const char *state_group_name(const struct state *st, size_t g);
const struct cfg_group *state_group_cfg(const struct state *st, size_t g);
size_t state_group_eps(const struct state *st, size_t g, size_t *first);
/* The first of the requests in flight (follow track.next), or NULL. */
struct track *state_tracks(const struct state *st);
/* The configuration of endpoint ep and of its group. */
const struct cfg_endpoint *state_ep_cfg(const struct state *st, int ep,
                                        const struct cfg_group **group);

/*
 * What /status and /metrics show, taken at one moment (monotonic now_ms):
 * the renderers (status.c, metrics.c) read this, never the state.  Numbers
 * are copied; strings, history and event entries and track records borrow
 * from the state and stay valid while it is not changed or freed, so render
 * the snapshot at once.  state_snapshot_release() frees the arrays.
 */
struct state_ep_snapshot {
    const char *name;  /* borrows */
    const char *url;   /* borrows */
    const char *group; /* borrows: the group's name */
    enum ep_status status;
    enum ep_circuit circuit;
    enum ep_cause cause; /* of the last failure, EP_CAUSE_NONE when none */
    bool current;        /* the endpoint new requests go to */
    bool usable;         /* state_ep_usable() at now_ms */
    unsigned active;     /* requests in flight */
    double latency_ms;   /* last check, < 0 unknown */
    double smoothed_ms;  /* < 0 unknown */
    double ttfb_ms;      /* < 0 unknown */
    unsigned checks, checks_ok;
    uint64_t requests, failures;
    const char *error;          /* borrows: last failure, "" when none */
    const char *check_error;    /* borrows: what is wrong with the check, "" when nothing */
    const char *models_warning; /* borrows, "" when none */
    uint64_t circuit_retry_ms;  /* monotonic: an open circuit's next trial */
    uint64_t rest_until_ms;     /* monotonic: resting while later than now */
    const char *rest_reason;    /* borrows: why it rests, "" when not said */
    uint64_t next_check_ms;     /* monotonic, 0 while a check runs or unscheduled */
    size_t sessions;            /* live session bindings to it */
    struct usage check_tokens;
    struct usage live_tokens;
    const struct ep_check *history[EP_HISTORY]; /* borrows, oldest first */
    size_t n_history;
};
struct state_group_snapshot {
    const char *name;            /* borrows */
    const struct cfg_group *cfg; /* borrows */
    struct policy policy;        /* a copy: mode, pin, current, pending (indices in the group) */
    size_t first, n;             /* its endpoints are eps[first .. first + n - 1] */
    bool panic;
    uint64_t fallback_served;
};
struct state_snapshot {
    const struct config *cfg;      /* borrows; NULL when the state has none */
    struct state_ep_snapshot *eps; /* owns, n_eps entries */
    size_t n_eps;
    struct state_group_snapshot *groups; /* owns, n_groups entries */
    size_t n_groups;
    size_t current_group;
    int current_ep;              /* state_current_ep(), -1 none */
    int next_ep;                 /* state_next_in_line(), -1 none */
    bool manual;                 /* the current group is pinned */
    size_t active;               /* requests in flight */
    const struct track **tracks; /* owns the array (active entries), borrows the records,
                                  * newest first */
    uint64_t requests_total, retries_total;
    struct usage live_tokens;
    bool checks_paused;
    unsigned checks_running;
    double check_interval_s;
    uint64_t next_cycle_ms;    /* monotonic, 0 when unscheduled */
    const char *load_level;    /* borrows a static string, NULL before the checker says */
    int fallback_group;        /* the group serving in fallback, -1 none */
    uint64_t fallback_last_ms; /* monotonic, 0 never */
    uint64_t fallback_total;
    struct state_session *sessions; /* owns, n_sessions, most recently used first */
    size_t n_sessions;
    const struct event *events[STATE_EVENTS]; /* borrows, newest first */
    size_t n_events;
    bool has_config;
    int config_interval_s; /* health_check.interval_seconds */
    uint64_t start_mono_ms;
    uint64_t start_wall_ms;
};
void state_snapshot_take(const struct state *st, uint64_t now_ms, struct state_snapshot *out);
void state_snapshot_release(struct state_snapshot *s);
/* False while ep is remembered not to serve model. */
bool state_ep_serves(const struct state *st, int ep, const char *model, uint64_t now_ms);

/* A request was served by endpoint ep: when ep is not in the current group
 * it ran in fallback.  Records and logs the moves into and out of fallback. */
void state_served(struct state *st, int ep, uint64_t now_ms);

/* Operator actions; return 0 or -1 with a message in err. */
int state_set_mode(struct state *st, bool manual, uint64_t now_ms, char *err, size_t errlen);
int state_pin(struct state *st, int ep, uint64_t now_ms, char *err, size_t errlen);
int state_set_group(struct state *st, int group, uint64_t now_ms, char *err, size_t errlen);

/* Request tracking. */
void state_track_add(struct state *st, struct track *t, const char *method, const char *path,
                     uint64_t now_ms);
void state_track_remove(struct track *t);
/* Routes t to endpoint ep of state from (the request's own state, which
 * may be older than the one holding the record after a reload). */
void state_track_route(struct track *t, const struct state *from, int ep);

void state_event(struct state *st, const char *kind, const char *from, const char *to,
                 const char *reason, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

const char *ep_status_name(enum ep_status s);
const char *ep_circuit_name(enum ep_circuit c);
const char *track_state_name(enum track_state s);

#endif
