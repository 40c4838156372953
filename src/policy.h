/*
 * policy: which endpoint of a group is current, and where a request goes.
 *
 * The module is pure: it does no I/O, keeps no clock, and never touches the
 * event loop.  The caller describes the endpoints of ONE group as an array of
 * struct policy_ep (health, routability, smoothed latency, requests in
 * flight), passes the monotonic time in, and gets decisions back.  It keeps
 * one struct policy per group; switching groups is the caller's business
 * (policy_activate() tells it which endpoint the new group starts on).
 *
 * Selection rules (policy_evaluate):
 *
 *   - An endpoint is usable unless its health is POLICY_FAILED or it is
 *     blocked (circuit open, auth failed, resting after a rate limit).
 *     UNKNOWN and CHECKING endpoints are usable: "not yet measured" is not
 *     "failed", and at start every endpoint is UNKNOWN.
 *   - "Best" is the usable endpoint with the lowest known latency; endpoints
 *     with unknown latency (< 0) rank after every measured one, HEALTHY before
 *     UNKNOWN/CHECKING, and ties go to the lower index (config order is the
 *     operator's preference).
 *   - No current endpoint yet: the best usable one becomes current (INITIAL).
 *   - Current unusable: switch at once to the best other usable endpoint
 *     (FAILURE) and drop any pending graceful switch.  If nothing else is
 *     usable the current endpoint stays as it is; policy_route() then answers
 *     -1 and the caller falls back to policy_panic().  A policy that never had a current
 *     endpoint keeps current == -1 until something is usable.
 *   - Auto mode, current usable: another endpoint is "faster" only when both
 *     latencies are known and it beats the current one by at least
 *     threshold_ms (and by more than 0).  Near-equal endpoints never flap, and
 *     a current endpoint whose latency is unknown (first check still running)
 *     is never switched away from for speed.  A faster switch happens at once
 *     when the current endpoint has no requests in flight; otherwise it is
 *     pending until the count reaches 0 or graceful_timeout_ms has passed.  It
 *     is re-validated on every evaluation: if the target stops being usable or
 *     stops being faster by the threshold, the pending switch is cancelled; if
 *     another endpoint becomes the best, the pending switch retargets without
 *     restarting the timeout.  Requests already running are never cut: a
 *     switch only changes where NEW requests go.
 *   - Manual mode: the pinned endpoint is current whenever it is usable, even
 *     when another one is faster.  When it is not, the usual failure rule
 *     applies (FAILURE) and the pin is "overridden"; when the pin is usable
 *     again, current returns to it (RECOVERED).  Manual switches are immediate.
 *
 * Sessions: struct sessions maps a session key (X-Claude-Code-Session-Id or
 * metadata.user_id, prefixed by the caller with the group name, see
 * SESSIONS_KEY_SEP) to the endpoint index that served it, with a time-to-live
 * and a hard cap on entries.  The off switch is the caller's: it simply
 * passes session_ep = -1 to policy_route().  When a session leaves its
 * endpoint (failure, the pin, a faster endpoint by session_threshold_ms) is
 * policy_route_session()'s rule.
 */
#ifndef ZEPHYR_POLICY_H
#define ZEPHYR_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum policy_health {
    POLICY_UNKNOWN = 0,  /* never checked */
    POLICY_CHECKING = 1, /* first check running */
    POLICY_HEALTHY = 2,
    POLICY_FAILED = 3,
};

struct policy_ep {
    enum policy_health health;
    bool blocked;        /* circuit open, auth failed, rate-limit rest: not routable */
    double latency_ms;   /* smoothed check latency; < 0 when unknown */
    unsigned active;     /* requests in flight on this endpoint */
    bool live_blocked;   /* live results (circuit opened by live failures, a rate-limit
                          * rest) keep it from traffic even in panic routing */
    uint64_t live_ok_ms; /* last live success (caller's clock), 0 never */
};

enum policy_reason {
    POLICY_REASON_NONE = 0,
    POLICY_REASON_FASTER = 1,    /* another endpoint beat the threshold */
    POLICY_REASON_FAILURE = 2,   /* current endpoint became unusable */
    POLICY_REASON_MANUAL = 3,    /* operator pinned an endpoint */
    POLICY_REASON_GROUP = 4,     /* operator switched groups */
    POLICY_REASON_RECOVERED = 5, /* back to the pinned endpoint */
    POLICY_REASON_INITIAL = 6,   /* first endpoint chosen */
};

/* One change of the current endpoint, for the log line and /status. */
struct policy_switch {
    int from;               /* -1: there was none */
    int to;                 /* -1: there is none */
    double from_latency_ms; /* < 0 when unknown or from == -1 */
    double to_latency_ms;   /* < 0 when unknown or to == -1 */
    enum policy_reason reason;
};

/* Embedded in the caller's per-group state; no heap, no policy_release(). */
struct policy {
    int current; /* index of the current endpoint, -1 none */
    bool manual;
    int pinned;                /* manual mode: the operator's pin, else -1 */
    int pending;               /* deferred graceful switch target, -1 none */
    uint64_t pending_since_ms; /* when pending was set */
    int threshold_ms;          /* switch_threshold_ms */
    int graceful_timeout_ms;   /* graceful_switch_timeout_ms */
    int session_threshold_ms;  /* session_switch_threshold_ms; 0: never for speed */
};

/* Auto mode, no current endpoint, nothing pending.  Negative settings are
 * taken as 0. */
void policy_init(struct policy *p, int threshold_ms, int graceful_timeout_ms);

/*
 * Applies the selection rules above to eps[0..n).  Call it after every
 * health or latency change, when a request on the current endpoint finishes
 * (a pending switch may now fire), and when policy_deadline_ms() passes.
 * Returns true and fills *out when current changed; returns false and leaves
 * *out untouched otherwise.  out may be NULL.
 */
bool policy_evaluate(struct policy *p, const struct policy_ep *eps, size_t n, uint64_t now_ms,
                     struct policy_switch *out);

/*
 * Manual mode pinned to eps[pinned].  Cancels a pending switch.  If the pin
 * is usable it becomes current at once (MANUAL, or INITIAL when there was no
 * current endpoint) and true is returned with *out filled; if it is not, the
 * current endpoint stays (pin overridden) until the pin recovers.  An index
 * outside [0, n) changes nothing and returns false: validate it first.
 */
bool policy_set_manual(struct policy *p, int pinned, const struct policy_ep *eps, size_t n,
                       struct policy_switch *out);

/* Back to auto mode.  Changes nothing else; the next policy_evaluate() may
 * switch to a faster endpoint. */
void policy_set_auto(struct policy *p);

/* True in manual mode while traffic goes somewhere other than the pin. */
bool policy_pin_overridden(const struct policy *p);

/* When a pending graceful switch must fire at the latest; 0 when none is
 * pending.  Arm a timer for it and call policy_evaluate() then. */
uint64_t policy_deadline_ms(const struct policy *p);

/*
 * Called when this group becomes the active group: evaluates (an idle group
 * has no requests in flight, so a faster endpoint takes over at once) and
 * returns the endpoint new requests now go to, policy_route(p, eps, n, -1):
 * -1 when nothing is usable.  The caller logs the change with reason GROUP, its
 * "from" being the current endpoint of the group it left.  The policy's state
 * (mode, pin, current) survives while the group is inactive.
 */
int policy_activate(struct policy *p, const struct policy_ep *eps, size_t n, uint64_t now_ms);

/* The endpoint is routable: not FAILED and not blocked. */
bool policy_usable(const struct policy_ep *ep);

/*
 * Where a new request goes: eps[session_ep] if session_ep >= 0 and the
 * session stays there (policy_route_session), else the current endpoint if
 * usable, else the best usable one, else -1 (answer 503).  Never changes the
 * policy.
 */
int policy_route(const struct policy *p, const struct policy_ep *eps, size_t n, int session_ep);

/*
 * policy_route() for a request whose session is bound to session_ep (-1:
 * none), saying in *moved (may be NULL) why the session leaves its endpoint,
 * POLICY_REASON_NONE when it stays or has none.  Stickiness keeps the
 * upstream's prompt cache, so a session stays on its endpoint unless:
 *   - the endpoint is unusable (failed, circuit open, resting): FAILURE,
 *     to where a request without a session goes;
 *   - manual mode and the pin is current (usable): MANUAL, to the pin.
 *     While the pin is overridden sessions keep their usable endpoints;
 *   - auto mode, session_threshold_ms > 0, and the current endpoint beats
 *     the session's by at least session_threshold_ms, both latencies known:
 *     FASTER, to the current endpoint.
 */
int policy_route_session(const struct policy *p, const struct policy_ep *eps, size_t n,
                         int session_ep, enum policy_reason *moved);

/* Sets session_switch_threshold_ms (policy_init leaves 0: sessions never
 * move for speed); negative is taken as 0. */
void policy_set_session_threshold(struct policy *p, int session_threshold_ms);

/*
 * The best usable endpoint, skipping every i with tried[i] true (tried may
 * be NULL).  For request-path failover: mark the endpoints already tried and
 * ask again.  Returns -1 when none is left.
 */
int policy_best(const struct policy_ep *eps, size_t n, const bool *tried);

/*
 * The endpoint next in line: where policy_route(p, eps, n, -1) would send a
 * request if the endpoint it sends one to now became unusable, which is also
 * where request-path failover (policy_best with that endpoint tried) and the
 * FAILURE switch go.  -1 when nothing else is usable.  The caller keeps a
 * connection to it warm.
 */
int policy_next_in_line(const struct policy *p, const struct policy_ep *eps, size_t n);

/*
 * Panic routing (Envoy's panic threshold): when policy_route() and
 * policy_best() find nothing usable, checks alone must not refuse traffic
 * that might succeed.  Among the endpoints not live_blocked and not
 * tried[i], the one with the most recent live success comes first, then the
 * lowest known latency, then config order.  -1 when every endpoint is
 * live_blocked or tried.
 */
int policy_panic(const struct policy_ep *eps, size_t n, const bool *tried);

/* "faster", "failure", "manual", "group", "recovered", "initial"; "none". */
const char *policy_reason_name(enum policy_reason r);

/* "unknown", "checking", "healthy", "failed". */
const char *policy_health_name(enum policy_health h);

/*
 * Sticky sessions.  At most max entries are kept; binding a new key when full
 * evicts the least recently used one.  An entry unused for ttl_ms expires
 * (ttl_ms == 0: never by time, only by eviction).  Keys longer than
 * SESSIONS_KEY_MAX bytes are not stored and never found, so a hostile header
 * cannot grow memory; such requests simply are not sticky.
 */
#define SESSIONS_KEY_MAX 512
/* Separator between group name and session id in a scoped key. */
#define SESSIONS_KEY_SEP "\x1f"
#define SESSIONS_DEFAULT_MAX 4096

struct sessions;

/* max == 0 is taken as SESSIONS_DEFAULT_MAX. */
struct sessions *sessions_new(uint64_t ttl_ms, size_t max);
/* NULL is a no-op. */
void sessions_free(struct sessions *s);

/* The endpoint bound to key, or -1 when absent or expired.  A hit refreshes
 * the entry's last-used time. */
int sessions_lookup(struct sessions *s, const char *key, uint64_t now_ms);

/* Binds key to ep (replacing an earlier binding) and marks it used now. */
void sessions_bind(struct sessions *s, const char *key, int ep, uint64_t now_ms);

/* Drops every binding to ep (endpoint removed or renumbered). */
void sessions_forget_endpoint(struct sessions *s, int ep);

/* Entries held, expired ones not yet purged included. */
size_t sessions_count(const struct sessions *s);

/* Binds every live key that starts with prefix (NULL: every key) to ep;
 * returns how many changed endpoint.  Keeps their creation times. */
size_t sessions_rebind(struct sessions *s, const char *prefix, int ep, uint64_t now_ms);

/* Drops the keys that start with prefix (NULL: any) bound to ep (-1: any);
 * returns how many. */
size_t sessions_release(struct sessions *s, const char *prefix, int ep);

/* The live entries, most recently used first, at most max of them.  key
 * borrows from s until it next changes. */
struct session_info {
    const char *key;
    int ep;
    uint64_t created_ms;
    uint64_t used_ms;
};
size_t sessions_list(const struct sessions *s, uint64_t now_ms, struct session_info *out,
                     size_t max);

/* What people see of a session: 8 hex digits of a hash of its id (the part
 * of a scoped key after SESSIONS_KEY_SEP), never the id itself. */
#define SESSIONS_SHORT_ID 9
char *sessions_short_id(const char *id, char out[SESSIONS_SHORT_ID]);

#endif
