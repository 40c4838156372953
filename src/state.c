/*
 * state: see state.h.
 *
 * Health rules kept here, in one place:
 *   - a passing check makes an endpoint HEALTHY, resets its failure count
 *     and closes its circuit; a failing one makes it FAILED (AUTH_FAILED
 *     when the token was refused);
 *   - a live failure (connect error, timeout, 5xx, 529) marks the endpoint
 *     FAILED at once and asks for a quick re-check; it takes a passing
 *     check to make it usable again;
 *   - STATE_CIRCUIT_FAILURES failures in a row open the circuit for a
 *     back-off that doubles with each successive opening (from 5 s, or
 *     failed_interval_seconds when shorter, to half the check interval
 *     and at most 5 min);
 *     when it runs out the circuit is half-open: one trial (check or
 *     request) may pass, and its success closes the circuit;
 *   - a 429 makes the endpoint rest until its retry-after time;
 *   - a check the endpoint refuses as a request (400/404/422: the model,
 *     the body or the path is not served; a cli binary that cannot run)
 *     says nothing about the endpoint: it becomes CHECK_ERROR, routed like
 *     an endpoint not yet checked, and the problem is logged once;
 *   - panic routing: when no endpoint of the group is usable, requests
 *     still go to the endpoints that live results have not removed (a
 *     circuit opened by live failures, a rate-limit rest), most recent live
 *     success first, so checks alone never refuse a request.
 * Latency: the smoothed figure is an EWMA (alpha 0.3) of check latencies
 * and live time-to-first-byte.
 */
#include "state.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

/* The records below are this module's alone (state.h declares them
 * incomplete): other modules read them through the accessors and
 * state_snapshot_take(). */

struct ep {
    char *name;   /* owns */
    char *url;    /* owns */
    size_t group; /* index into state.groups */
    size_t index; /* index within the group */
    enum ep_status status;
    char error[EP_TEXT]; /* last failure reason, "" when none */
    double latency_ms;   /* last check latency, < 0 unknown */
    double smoothed_ms;  /* EWMA of check latency and live TTFB, < 0 unknown */
    double ttfb_ms;      /* last time to first byte (check or live), < 0 unknown */
    unsigned active;     /* requests in flight */
    uint64_t requests;   /* requests routed here */
    uint64_t failures;   /* failed attempts (live) */
    unsigned checks;     /* checks run */
    unsigned checks_ok;
    struct ep_check history[EP_HISTORY];
    size_t hist_len;           /* entries used */
    size_t hist_next;          /* ring position of the next entry */
    struct usage check_tokens; /* tokens spent by checks */
    struct usage live_tokens;  /* tokens of proxied traffic */
    enum ep_circuit circuit;
    unsigned consecutive_failures;
    unsigned circuit_opens;    /* successive openings, for back-off */
    uint64_t circuit_retry_ms; /* monotonic time of the next trial */
    uint64_t rest_until_ms;    /* 429 or usage cap: not routable before this (monotonic) */
    char rest_reason[96];      /* why it rests: "rate limited", "usage cap: ..." */
    struct {
        char model[64];           /* "" when the slot is free */
        uint64_t until_ms;        /* monotonic */
    } missing[EP_MISSING_MODELS]; /* answered 404 not_found_error for these models */
    bool check_running;
    bool recheck_soon;            /* a live failure asked for a quick check */
    uint64_t next_check_ms;       /* monotonic time of this endpoint's next check */
    enum ep_cause cause;          /* of the last failure, EP_CAUSE_NONE when none */
    char check_error[EP_TEXT];    /* what is wrong with the check itself, "" when nothing */
    char models_warning[EP_TEXT]; /* GET /v1/models does not list the check model, or "" */
    unsigned live_streak;         /* consecutive live failures (checks not counted) */
    uint64_t live_ok_ms;          /* monotonic time of the last live success, 0 never */
};

struct group {
    char *name;                  /* owns */
    const struct cfg_group *cfg; /* borrows from state.cfg */
    size_t first;                /* index of the first endpoint in state.eps */
    size_t n;                    /* number of endpoints */
    struct policy policy;
    struct policy_ep *view;   /* owns, n entries: scratch for state.c's policy calls */
    bool panic;               /* no endpoint passes its checks: live traffic goes on
                                 * to every endpoint live results have not removed */
    uint64_t fallback_served; /* requests it served in place of the current group */
};

struct state {
    const struct config *cfg; /* borrows, or owns when owned_cfg is set */
    struct config *owned_cfg; /* owns; freed with the state */
    unsigned refs;            /* requests started under this state */
    bool retired;             /* replaced by a reload: freed at refs == 0 */
    struct ep *eps;           /* owns, n_eps entries, grouped by group */
    size_t n_eps;
    struct group *groups; /* owns */
    size_t n_groups;
    size_t current_group;
    struct track *tracks; /* borrows the records, owns the list */
    size_t n_tracks;
    uint64_t next_track_id;
    struct event events[STATE_EVENTS];
    size_t n_events, next_event;
    uint64_t start_mono_ms;
    uint64_t start_wall_ms;
    /* The clock events are stamped with (now_wall_ms unless a test sets
     * another): passed in, so that this module reads no clock itself. */
    uint64_t (*wall_clock_ms)(void);
    /* totals for /status and metrics */
    uint64_t requests_total;
    uint64_t retries_total;
    struct usage live_tokens;
    /* check scheduling, kept here so /status can show it */
    bool checks_paused;
    unsigned checks_running;
    double check_interval_s;
    uint64_t next_cycle_ms;    /* monotonic, 0 when unscheduled */
    const char *load_level;    /* borrows a static string */
    struct sessions *sessions; /* owns */
    /* Fallback: the group that last served a request in place of the
     * current one (-1: none since start or since the current group came
     * back), and when. */
    int fallback_group;
    uint64_t fallback_last_ms; /* monotonic, 0 never */
    uint64_t fallback_total;   /* requests served by a fallback group */
    /* Told when live traffic or a check has just marked an endpoint failed,
     * so that requests still waiting for its headers can move on at once.
     * It must not end requests from inside the call. */
    void (*ep_failed_cb)(void *ud, struct state *st, int ep);
    void *ep_failed_ud;
    /* Told of every switch of a group's current endpoint, with its reason
     * word (the metrics count them); NULL: nobody. */
    void (*switch_cb)(void *ud, const char *reason);
    void *switch_ud;
    const struct state_observer *observer; /* borrows; NULL: nobody listens */
};

#define STATE_CIRCUIT_FAILURES 3
#define STATE_CIRCUIT_BASE_MS 5000u
#define STATE_CIRCUIT_MAX_MS 300000u
#define STATE_EWMA_ALPHA 0.3

const char *ep_status_name(enum ep_status s)
{
    switch (s) {
    case EP_UNKNOWN: return "unknown";
    case EP_CHECKING: return "checking";
    case EP_HEALTHY: return "healthy";
    case EP_FAILED: return "failed";
    case EP_AUTH_FAILED: return "auth_failed";
    case EP_CHECK_ERROR: return "check_error";
    }
    return "unknown";
}

const char *ep_cause_name(enum ep_cause c)
{
    switch (c) {
    case EP_CAUSE_NONE: return "none";
    case EP_CAUSE_DOWN: return "down";
    case EP_CAUSE_AUTH: return "auth";
    case EP_CAUSE_TLS: return "tls";
    case EP_CAUSE_RATE_LIMITED: return "rate_limited";
    case EP_CAUSE_OVERLOADED: return "overloaded";
    }
    return "none";
}

enum ep_cause state_cause_of(const char *error)
{
    if (!error || !error[0])
        return EP_CAUSE_DOWN;
    if (strcasestr(error, "certificate") || strstr(error, "SSL") || strstr(error, "TLS") ||
        strcasestr(error, "handshake"))
        return EP_CAUSE_TLS;
    if (strstr(error, "529") || strstr(error, "503") || strcasestr(error, "overloaded"))
        return EP_CAUSE_OVERLOADED;
    return EP_CAUSE_DOWN;
}

const char *ep_circuit_name(enum ep_circuit c)
{
    switch (c) {
    case CIRCUIT_CLOSED: return "closed";
    case CIRCUIT_OPEN: return "open";
    case CIRCUIT_HALF_OPEN: return "half_open";
    }
    return "closed";
}

const char *track_state_name(enum track_state s)
{
    switch (s) {
    case TRACK_READING: return "reading_body";
    case TRACK_WAITING: return "waiting_headers";
    case TRACK_STREAMING: return "streaming";
    case TRACK_DONE: return "done";
    }
    return "done";
}

struct state *state_new(const struct config *cfg, uint64_t now_mono, uint64_t now_wall)
{
    struct state *st = xcalloc(1, sizeof *st);
    st->cfg = cfg;
    st->start_mono_ms = now_mono;
    st->start_wall_ms = now_wall;
    st->wall_clock_ms = now_wall_ms;
    st->n_groups = cfg->n_groups;
    st->groups = xcalloc(cfg->n_groups, sizeof *st->groups);
    for (size_t g = 0; g < cfg->n_groups; g++)
        st->n_eps += cfg->groups[g].n_endpoints;
    st->eps = xcalloc(st->n_eps ? st->n_eps : 1, sizeof *st->eps);
    size_t k = 0;
    for (size_t g = 0; g < cfg->n_groups; g++) {
        struct group *gr = &st->groups[g];
        gr->name = xstrdup(cfg->groups[g].name);
        gr->cfg = &cfg->groups[g];
        gr->first = k;
        gr->n = cfg->groups[g].n_endpoints;
        gr->view = xcalloc(gr->n ? gr->n : 1, sizeof *gr->view);
        policy_init(&gr->policy, cfg->switch_threshold_ms, cfg->graceful_switch_timeout_ms);
        policy_set_session_threshold(&gr->policy, cfg->session_switch_threshold_ms);
        for (size_t i = 0; i < gr->n; i++, k++) {
            struct ep *e = &st->eps[k];
            e->name = xstrdup(cfg->groups[g].endpoints[i].name);
            e->url = xstrdup(cfg->groups[g].endpoints[i].url);
            e->group = g;
            e->index = i;
            e->latency_ms = e->smoothed_ms = e->ttfb_ms = -1;
        }
    }
    st->current_group = config_default_group(cfg);
    st->fallback_group = -1;
    st->check_interval_s = cfg->interval_s;
    st->load_level = "idle";
    if (cfg->sticky_sessions)
        st->sessions = sessions_new((uint64_t)cfg->session_ttl_s * 1000u, 0);
    /* random, so that the ids of two runs appended to one log file do not
     * repeat each other; a reload's state carries the count on */
    st->next_track_id = random_u32(now_wall);
    state_evaluate(st, now_mono);
    return st;
}

void state_free(struct state *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->n_eps; i++) {
        free(st->eps[i].name);
        free(st->eps[i].url);
    }
    for (size_t g = 0; g < st->n_groups; g++) {
        free(st->groups[g].name);
        free(st->groups[g].view);
    }
    free(st->eps);
    free(st->groups);
    sessions_free(st->sessions);
    config_free(st->owned_cfg);
    free(st);
}

void state_ref(struct state *st)
{
    st->refs++;
}

void state_unref(struct state *st)
{
    if (--st->refs == 0 && st->retired)
        state_free(st);
}

void state_retire(struct state *st)
{
    st->retired = true;
    if (st->refs == 0)
        state_free(st);
}

static int state_find_in_group(const struct state *st, const char *group, const char *name)
{
    int g = state_find_group(st, group);
    if (g < 0)
        return -1;
    const struct group *gr = &st->groups[g];
    for (size_t i = 0; i < gr->n; i++)
        if (strcmp(st->eps[gr->first + i].name, name) == 0)
            return (int)(gr->first + i);
    return -1;
}

void state_take_over(struct state *st, struct state *old, uint64_t now_ms)
{
    /* A reload is not a restart: uptime and start time go on. */
    st->start_mono_ms = old->start_mono_ms;
    st->start_wall_ms = old->start_wall_ms;
    for (size_t i = 0; i < st->n_eps; i++) {
        struct ep *e = &st->eps[i];
        int o = state_find_in_group(old, st->groups[e->group].name, e->name);
        if (o < 0 || strcmp(old->eps[o].url, e->url) != 0)
            continue;
        const struct ep *oe = &old->eps[o];
        /* Everything measured; not what belongs to this state's layout. */
        char *name = e->name, *url = e->url;
        size_t group = e->group, index = e->index;
        *e = *oe;
        e->name = name;
        e->url = url;
        e->group = group;
        e->index = index;
        e->active = 0;
        e->check_running = false;
        e->models_warning[0] = '\0'; /* the check model may have changed: probed again */
    }
    for (size_t g = 0; g < st->n_groups; g++) {
        struct group *gr = &st->groups[g];
        int og = state_find_group(old, gr->name);
        if (og < 0)
            continue;
        const struct group *ogr = &old->groups[og];
        const struct policy *op = &ogr->policy;
        if (op->current >= 0) {
            int e =
                state_find_in_group(st, gr->name, old->eps[ogr->first + (size_t)op->current].name);
            if (e >= 0)
                gr->policy.current = (int)(e - (int)gr->first);
        }
        if (op->manual && op->pinned >= 0) {
            int e =
                state_find_in_group(st, gr->name, old->eps[ogr->first + (size_t)op->pinned].name);
            if (e >= 0) {
                gr->policy.manual = true;
                gr->policy.pinned = (int)(e - (int)gr->first);
            }
        }
    }
    int cg = state_find_group(st, old->groups[old->current_group].name);
    if (cg >= 0)
        st->current_group = (size_t)cg;
    st->switch_cb = old->switch_cb;
    st->switch_ud = old->switch_ud;
    st->requests_total = old->requests_total;
    st->retries_total = old->retries_total;
    st->live_tokens = old->live_tokens;
    st->next_track_id = old->next_track_id;
    st->checks_paused = old->checks_paused;
    st->ep_failed_cb = old->ep_failed_cb;
    st->ep_failed_ud = old->ep_failed_ud;
    st->fallback_total = old->fallback_total;
    st->fallback_last_ms = old->fallback_last_ms;
    if (old->fallback_group >= 0)
        st->fallback_group = state_find_group(st, old->groups[old->fallback_group].name);
    memcpy(st->events, old->events, sizeof st->events);
    st->n_events = old->n_events;
    st->next_event = old->next_event;
    while (old->tracks) {
        struct track *t = old->tracks;
        const char *epname = t->ep >= 0 ? old->eps[t->ep].name : NULL;
        const char *gname = t->ep >= 0 ? old->groups[old->eps[t->ep].group].name : NULL;
        old->tracks = t->next;
        old->n_tracks--;
        int ne = epname ? state_find_in_group(st, gname, epname) : -1;
        t->owner = st;
        t->ep = ne;
        if (ne >= 0)
            st->eps[ne].active++;
        t->prev = NULL;
        t->next = st->tracks;
        if (st->tracks)
            st->tracks->prev = t;
        st->tracks = t;
        st->n_tracks++;
    }
    state_evaluate(st, now_ms);
}

int state_find_ep(const struct state *st, const char *name)
{
    for (size_t i = 0; i < st->n_eps; i++)
        if (strcmp(st->eps[i].name, name) == 0)
            return (int)i;
    return -1;
}

int state_find_group(const struct state *st, const char *name)
{
    for (size_t g = 0; g < st->n_groups; g++)
        if (strcmp(st->groups[g].name, name) == 0)
            return (int)g;
    return -1;
}

int state_current_ep(const struct state *st)
{
    const struct group *g = &st->groups[st->current_group];
    return g->policy.current < 0 ? -1 : (int)g->first + g->policy.current;
}

static bool ep_usable(const struct ep *e, uint64_t now_ms)
{
    if (e->status == EP_FAILED || e->status == EP_AUTH_FAILED)
        return false;
    if (e->circuit == CIRCUIT_OPEN && now_ms < e->circuit_retry_ms)
        return false;
    if (e->rest_until_ms && now_ms < e->rest_until_ms)
        return false;
    return true;
}

static bool ep_live_blocked(const struct ep *e, uint64_t now_ms)
{
    if (e->rest_until_ms && now_ms < e->rest_until_ms)
        return true;
    return e->circuit == CIRCUIT_OPEN && now_ms < e->circuit_retry_ms &&
           e->live_streak >= STATE_CIRCUIT_FAILURES;
}

bool state_ep_usable(const struct state *st, int ep, uint64_t now_ms)
{
    return ep_usable(&st->eps[ep], now_ms);
}

bool state_ep_live_blocked(const struct state *st, int ep, uint64_t now_ms)
{
    return ep_live_blocked(&st->eps[ep], now_ms);
}

/*
 * The policy's view of one group, rebuilt in the group's own array (sized
 * to its endpoint count when the state was made, so a group of any size
 * fits) and returned.  The array is scratch space: it is valid until the
 * next call for the same group, which is enough because every caller hands
 * it to one policy function and is done with it.
 */
static const struct policy_ep *state_policy_view(const struct state *st, const struct group *g,
                                                 uint64_t now_ms)
{
    for (size_t i = 0; i < g->n; i++) {
        const struct ep *e = &st->eps[g->first + i];
        struct policy_ep *p = &g->view[i];
        switch (e->status) {
        case EP_UNKNOWN:
        case EP_CHECK_ERROR: p->health = POLICY_UNKNOWN; break;
        case EP_CHECKING: p->health = POLICY_CHECKING; break;
        case EP_HEALTHY: p->health = POLICY_HEALTHY; break;
        case EP_FAILED:
        case EP_AUTH_FAILED: p->health = POLICY_FAILED; break;
        }
        p->blocked = (e->circuit == CIRCUIT_OPEN && now_ms < e->circuit_retry_ms) ||
                     (e->rest_until_ms && now_ms < e->rest_until_ms);
        p->latency_ms = e->smoothed_ms;
        p->active = e->active;
        p->live_blocked = ep_live_blocked(e, now_ms);
        p->live_ok_ms = e->live_ok_ms;
    }
    return g->view;
}

static void state_log_switch(struct state *st, const struct group *g,
                             const struct policy_switch *sw)
{
    const char *from = sw->from >= 0 ? st->eps[g->first + (size_t)sw->from].name : "none";
    const char *to = sw->to >= 0 ? st->eps[g->first + (size_t)sw->to].name : "none";
    const char *reason = policy_reason_name(sw->reason);
    char fl[32] = "?", tl[32] = "?";
    if (sw->from_latency_ms >= 0)
        snprintf(fl, sizeof fl, "%.0f ms", sw->from_latency_ms);
    if (sw->to_latency_ms >= 0)
        snprintf(tl, sizeof tl, "%.0f ms", sw->to_latency_ms);
    /* A group's first choice (from none) is made while the state is built:
     * before the proxy listens, also when start-up then fails, under
     * --test-timing, and for a reload's new state that takes over the old
     * choice anyway.  It is not a switch; app.c reports the starting
     * endpoint once the proxy listens. */
    if (sw->from >= 0 || sw->reason != POLICY_REASON_INITIAL)
        log_info("switch [%s] %s (%s) -> %s (%s): %s", g->name, from, fl, to, tl, reason);
    if (st->switch_cb)
        st->switch_cb(st->switch_ud, reason);
    state_event(st, "switch", from, to, reason, "[%s] %s (%s) -> %s (%s): %s", g->name, from, fl,
                to, tl, reason);
}

void state_evaluate(struct state *st, uint64_t now_ms)
{
    for (size_t gi = 0; gi < st->n_groups; gi++) {
        struct group *g = &st->groups[gi];
        if (g->n == 0)
            continue;
        struct policy_switch sw;
        if (policy_evaluate(&g->policy, state_policy_view(st, g, now_ms), g->n, now_ms, &sw))
            state_log_switch(st, g, &sw);
    }
}

int state_route(struct state *st, const char *session_key, uint64_t now_ms)
{
    struct group *g = &st->groups[st->current_group];
    if (g->n == 0)
        return -1;
    const struct policy_ep *view = state_policy_view(st, g, now_ms);
    int sess = -1;
    if (session_key && st->sessions) {
        char key[SESSIONS_KEY_MAX + 1];
        snprintf(key, sizeof key, "%s" SESSIONS_KEY_SEP "%s", g->name, session_key);
        sess = sessions_lookup(st->sessions, key, now_ms);
        if (sess >= (int)g->n)
            sess = -1;
    }
    /* A session leaves its endpoint by policy_route_session()'s rules; the
     * move is logged when the request that made it binds the session. */
    int i = policy_route(&g->policy, view, g->n, sess);
    bool panic = i < 0;
    if (panic)
        i = policy_panic(view, g->n, NULL);
    if (panic != g->panic) {
        g->panic = panic;
        if (panic) {
            log_warn("group %s: no endpoint passes its checks; panic routing: requests go to "
                     "the endpoints in order of their live results",
                     g->name);
            state_event(st, "info", "", "", "panic",
                        "[%s] panic routing: no endpoint passes "
                        "its checks",
                        g->name);
        } else {
            log_info("group %s: an endpoint passes its checks again; panic routing over", g->name);
        }
    }
    return i < 0 ? -1 : (int)g->first + i;
}

void state_bind_session(struct state *st, const char *session_key, int ep, uint64_t now_ms)
{
    if (!session_key || !st->sessions || ep < 0)
        return;
    const struct ep *e = &st->eps[ep];
    const struct group *g = &st->groups[e->group];
    char key[SESSIONS_KEY_MAX + 1];
    snprintf(key, sizeof key, "%s" SESSIONS_KEY_SEP "%s", g->name, session_key);
    int old = sessions_lookup(st->sessions, key, now_ms);
    if (old >= 0 && (size_t)old < g->n && old != (int)e->index) {
        /* Said once per move: why the session left (the rule that moved it,
         * or "retry" when its request failed over on the way). */
        enum policy_reason why = POLICY_REASON_NONE;
        policy_route_session(&g->policy, state_policy_view(st, g, now_ms), g->n, old, &why);
        const struct ep *fe = &st->eps[g->first + (size_t)old];
        char sid[SESSIONS_SHORT_ID], fl[32] = "?", tl[32] = "?";
        if (fe->smoothed_ms >= 0)
            snprintf(fl, sizeof fl, "%.0f", fe->smoothed_ms);
        if (e->smoothed_ms >= 0)
            snprintf(tl, sizeof tl, "%.0f", e->smoothed_ms);
        log_info("session %s [%s] moves %s (%s ms) -> %s (%s ms): %s",
                 sessions_short_id(session_key, sid), g->name, fe->name, fl, e->name, tl,
                 why == POLICY_REASON_NONE ? "retry" : policy_reason_name(why));
    }
    sessions_bind(st->sessions, key, (int)e->index, now_ms);
    if (st->observer && st->observer->session)
        st->observer->session(st->observer->ud, st, ep, session_key);
}

/* "group" SESSIONS_KEY_SEP: the scope of a group's session keys (whole,
 * however long the name: a cut prefix would match other groups). */
static char *state_session_prefix(const struct group *g)
{
    return xasprintf("%s" SESSIONS_KEY_SEP, g->name);
}

size_t state_release_sessions(struct state *st, int ep)
{
    if (!st->sessions)
        return 0;
    size_t n;
    if (ep < 0) {
        n = sessions_release(st->sessions, NULL, -1);
        log_info("sessions released: %zu (all endpoints)", n);
    } else {
        char *prefix = state_session_prefix(&st->groups[st->eps[ep].group]);
        n = sessions_release(st->sessions, prefix, (int)st->eps[ep].index);
        free(prefix);
        log_info("sessions released: %zu (endpoint %s)", n, st->eps[ep].name);
    }
    return n;
}

size_t state_sessions_list(const struct state *st, uint64_t now_ms, struct state_session *out,
                           size_t max)
{
    if (!st->sessions || max == 0)
        return 0;
    struct session_info *info = xmalloc(max * sizeof *info);
    size_t n = sessions_list(st->sessions, now_ms, info, max), k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *sep = strstr(info[i].key, SESSIONS_KEY_SEP);
        if (!sep)
            continue;
        int g = -1;
        for (size_t j = 0; j < st->n_groups; j++)
            if (strlen(st->groups[j].name) == (size_t)(sep - info[i].key) &&
                strncmp(st->groups[j].name, info[i].key, (size_t)(sep - info[i].key)) == 0)
                g = (int)j;
        if (g < 0 || info[i].ep < 0 || (size_t)info[i].ep >= st->groups[g].n)
            continue;
        out[k].ep = (int)(st->groups[g].first + (size_t)info[i].ep);
        sessions_short_id(info[i].key, out[k].id);
        out[k].created_ms = info[i].created_ms;
        out[k].used_ms = info[i].used_ms;
        k++;
    }
    free(info);
    return k;
}

size_t state_sessions_count(const struct state *st)
{
    return st->sessions ? sessions_count(st->sessions) : 0;
}

int state_next_ep(struct state *st, int ep, const bool *tried, uint64_t now_ms)
{
    const struct group *g = &st->groups[st->eps[ep].group];
    const struct policy_ep *view = state_policy_view(st, g, now_ms);
    int i = policy_best(view, g->n, tried);
    if (i < 0) /* checks alone never refuse a retry either */
        i = policy_panic(view, g->n, tried);
    return i < 0 ? -1 : (int)g->first + i;
}

int state_next_in_line(const struct state *st, uint64_t now_ms)
{
    const struct group *g = &st->groups[st->current_group];
    if (g->n > 0) {
        int i = policy_next_in_line(&g->policy, state_policy_view(st, g, now_ms), g->n);
        if (i >= 0)
            return (int)g->first + i;
    }
    for (size_t k = 0; k < g->cfg->n_fallback; k++) {
        const struct group *fg = &st->groups[g->cfg->fallback[k]];
        int i = fg->n ? policy_best(state_policy_view(st, fg, now_ms), fg->n, NULL) : -1;
        if (i >= 0)
            return (int)fg->first + i;
    }
    return -1;
}

static void ep_history_add(struct ep *e, bool ok, double latency_ms, const char *error,
                           uint64_t now_wall)
{
    struct ep_check *h = &e->history[e->hist_next];
    h->t_wall_ms = now_wall;
    h->ok = ok;
    h->latency_ms = ok ? latency_ms : -1;
    snprintf(h->error, sizeof h->error, "%s", ok || !error ? "" : error);
    e->hist_next = (e->hist_next + 1) % EP_HISTORY;
    if (e->hist_len < EP_HISTORY)
        e->hist_len++;
}

static void ep_smooth(struct ep *e, double sample)
{
    if (sample < 0)
        return;
    if (e->smoothed_ms < 0)
        e->smoothed_ms = sample;
    else
        e->smoothed_ms = STATE_EWMA_ALPHA * sample + (1 - STATE_EWMA_ALPHA) * e->smoothed_ms;
}

/* The back-off starts at 5 s (or failed_interval_seconds when that is
 * shorter) and doubles with each opening, but stays below half the healthy
 * check interval, so that a failed endpoint is still re-checked more often
 * than a healthy one. */
static void ep_open_circuit_maybe(const struct state *st, struct ep *e, uint64_t now_ms)
{
    uint64_t base = STATE_CIRCUIT_BASE_MS;
    if ((uint64_t)st->cfg->failed_interval_s * 1000u < base)
        base = (uint64_t)st->cfg->failed_interval_s * 1000u;
    if (base < 1000)
        base = 1000;
    uint64_t max_ms = (uint64_t)st->cfg->interval_s * 500u;
    if (max_ms > STATE_CIRCUIT_MAX_MS)
        max_ms = STATE_CIRCUIT_MAX_MS;
    if (max_ms < base)
        max_ms = base;
    if (e->circuit == CIRCUIT_HALF_OPEN ||
        (e->circuit == CIRCUIT_CLOSED && e->consecutive_failures >= STATE_CIRCUIT_FAILURES)) {
        unsigned shift = e->circuit_opens < 16 ? e->circuit_opens : 16;
        uint64_t backoff = base << shift;
        if (backoff > max_ms)
            backoff = max_ms;
        e->circuit = CIRCUIT_OPEN;
        e->circuit_opens++;
        e->circuit_retry_ms = now_ms + backoff;
    }
}

/* Called before routing or checking: an open circuit whose back-off ran out
 * becomes half-open. */
static void ep_circuit_tick(struct ep *e, uint64_t now_ms)
{
    if (e->circuit == CIRCUIT_OPEN && now_ms >= e->circuit_retry_ms)
        e->circuit = CIRCUIT_HALF_OPEN;
}

static void state_check_result(struct state *st, int ep, bool ok, bool auth_failed,
                               double latency_ms, double ttfb_ms, const char *error,
                               const struct usage *tokens, uint64_t now_ms, uint64_t now_wall)
{
    struct ep *e = &st->eps[ep];
    enum ep_status before = e->status;
    e->checks++;
    e->recheck_soon = false;
    if (tokens) {
        e->check_tokens.input += tokens->input;
        e->check_tokens.output += tokens->output;
        e->check_tokens.cache_read += tokens->cache_read;
        e->check_tokens.cache_creation += tokens->cache_creation;
    }
    ep_history_add(e, ok, latency_ms, error, now_wall);
    ep_circuit_tick(e, now_ms);
    e->check_error[0] = '\0'; /* the check works again, whatever it found */
    if (ok) {
        e->cause = EP_CAUSE_NONE;
        e->checks_ok++;
        e->status = EP_HEALTHY;
        e->error[0] = '\0';
        e->latency_ms = latency_ms;
        if (ttfb_ms >= 0)
            e->ttfb_ms = ttfb_ms;
        ep_smooth(e, latency_ms);
        e->consecutive_failures = 0;
        e->circuit = CIRCUIT_CLOSED;
        e->circuit_opens = 0;
        if (before == EP_FAILED || before == EP_AUTH_FAILED) {
            log_info("endpoint %s recovered (%.0f ms)", e->name, latency_ms);
            state_event(st, "recovery", e->name, "", "", "%s recovered (%.0f ms)", e->name,
                        latency_ms);
        }
    } else {
        e->status = auth_failed ? EP_AUTH_FAILED : EP_FAILED;
        snprintf(e->error, sizeof e->error, "%s", error ? error : "check failed");
        e->cause = auth_failed ? EP_CAUSE_AUTH : state_cause_of(e->error);
        e->consecutive_failures++;
        ep_open_circuit_maybe(st, e, now_ms);
        if (before != e->status) {
            log_warn("endpoint %s failed its check: %s", e->name, e->error);
            state_event(st, "failure", e->name, "", "", "%s failed: %s", e->name, e->error);
            if (st->ep_failed_cb)
                st->ep_failed_cb(st->ep_failed_ud, st, ep);
        }
    }
    state_evaluate(st, now_ms);
}

static void state_mark_failed(struct state *st, int ep, enum ep_status status, int http_status,
                              const char *error, uint64_t now_ms)
{
    struct ep *e = &st->eps[ep];
    enum ep_status before = e->status;
    e->failures++;
    e->consecutive_failures++;
    e->live_streak++;
    e->status = status;
    e->cause = status == EP_AUTH_FAILED                   ? EP_CAUSE_AUTH
               : http_status == 529 || http_status == 503 ? EP_CAUSE_OVERLOADED
                                                          : state_cause_of(error);
    e->recheck_soon = true;
    snprintf(e->error, sizeof e->error, "%s", error);
    ep_circuit_tick(e, now_ms);
    ep_open_circuit_maybe(st, e, now_ms);
    if (before != status) {
        log_warn("endpoint %s marked %s by live traffic: %s", e->name, ep_status_name(status),
                 error);
        state_event(st, "failure", e->name, "", "", "%s: %s", e->name, error);
        if (st->ep_failed_cb)
            st->ep_failed_cb(st->ep_failed_ud, st, ep);
    }
    state_evaluate(st, now_ms);
}

static void state_check_error(struct state *st, int ep, const char *what, const char *fix,
                              uint64_t now_ms, uint64_t now_wall)
{
    struct ep *e = &st->eps[ep];
    char text[sizeof e->check_error];
    snprintf(text, sizeof text, "%s%s%s", what, fix && fix[0] ? "; " : "", fix ? fix : "");
    e->checks++;
    e->recheck_soon = false;
    ep_history_add(e, false, -1, what, now_wall);
    ep_circuit_tick(e, now_ms);
    /* The endpoint answered (or was never asked): only live failures may
     * keep its circuit open. */
    e->consecutive_failures = e->live_streak;
    if (e->circuit != CIRCUIT_CLOSED && e->live_streak < STATE_CIRCUIT_FAILURES) {
        e->circuit = CIRCUIT_CLOSED;
        e->circuit_opens = 0;
    }
    e->status = EP_CHECK_ERROR;
    e->error[0] = '\0';
    e->cause = EP_CAUSE_NONE;
    if (strcmp(e->check_error, text) != 0) {
        snprintf(e->check_error, sizeof e->check_error, "%s", text);
        log_warn("check of endpoint %s is misconfigured, not counted as a failure: %s", e->name,
                 text);
        state_event(st, "info", e->name, "", "check_error", "%s: check misconfigured: %s", e->name,
                    text);
    }
    state_evaluate(st, now_ms);
}

void state_why_unusable(const struct state *st, size_t g, uint64_t now_ms,
                        struct state_unusable *out)
{
    memset(out, 0, sizeof *out);
    const struct group *gr = &st->groups[g];
    uint64_t until = 0;
    size_t len = 0;
    bool full = false, seen = false;
    for (size_t i = 0; i < gr->n; i++) {
        const struct ep *e = &st->eps[gr->first + i];
        bool resting = e->rest_until_ms && now_ms < e->rest_until_ms;
        enum ep_cause c = resting                             ? EP_CAUSE_RATE_LIMITED
                          : e->status == EP_AUTH_FAILED       ? EP_CAUSE_AUTH
                          : e->cause == EP_CAUSE_NONE         ? EP_CAUSE_DOWN
                          : e->cause == EP_CAUSE_RATE_LIMITED ? EP_CAUSE_DOWN
                                                              : e->cause;
        /* An endpoint still usable (left untried by max_attempts or the
         * retry budget) is no cause.  Rests and overload together are
         * still overload: the client should come back later either way. */
        if (!ep_usable(e, now_ms)) {
            if (!seen || out->cause == c)
                out->cause = c;
            else if ((out->cause == EP_CAUSE_RATE_LIMITED || out->cause == EP_CAUSE_OVERLOADED) &&
                     (c == EP_CAUSE_RATE_LIMITED || c == EP_CAUSE_OVERLOADED))
                out->cause = EP_CAUSE_OVERLOADED;
            else
                out->cause = EP_CAUSE_DOWN;
            seen = true;
        }
        uint64_t end = resting ? e->rest_until_ms
                       : e->circuit == CIRCUIT_OPEN && now_ms < e->circuit_retry_ms
                           ? e->circuit_retry_ms
                           : 0;
        if (end && (!until || end < until))
            until = end;
        char reason[200];
        if (resting)
            snprintf(reason, sizeof reason, "rate-limited for %.0f s",
                     (double)(e->rest_until_ms - now_ms) / 1000.0);
        else
            snprintf(reason, sizeof reason, "%s%s%s", c == EP_CAUSE_TLS ? "TLS problem: " : "",
                     e->error[0] ? e->error : ep_status_name(e->status),
                     e->circuit == CIRCUIT_OPEN ? " (circuit open)" : "");
        if (full)
            continue;
        int w = snprintf(out->detail + len, sizeof out->detail - len, "%s%s: %s", i ? "; " : "",
                         e->name, reason);
        if (w < 0 || (size_t)w >= sizeof out->detail - len) {
            len = utf8_cut(out->detail, strlen(out->detail));
            out->detail[len] = '\0';
            full = true;
            continue;
        }
        len += (size_t)w;
    }
    if (!seen)
        out->cause = EP_CAUSE_DOWN;
    out->retry_after_s = until ? (unsigned)((until - now_ms + 999) / 1000) : 0;
}

static void state_live_success(struct state *st, int ep, double ttfb_ms, uint64_t now_ms)
{
    struct ep *e = &st->eps[ep];
    e->consecutive_failures = 0;
    e->live_streak = 0;
    e->live_ok_ms = now_ms ? now_ms : 1;
    if (e->circuit == CIRCUIT_HALF_OPEN) {
        e->circuit = CIRCUIT_CLOSED;
        e->circuit_opens = 0;
    }
    if (ttfb_ms >= 0) {
        e->ttfb_ms = ttfb_ms;
        ep_smooth(e, ttfb_ms);
    }
}

static void state_rate_limited(struct state *st, int ep, uint64_t until_ms, uint64_t now_ms)
{
    struct ep *e = &st->eps[ep];
    e->rest_until_ms = until_ms;
    e->cause = EP_CAUSE_RATE_LIMITED;
    snprintf(e->rest_reason, sizeof e->rest_reason, "rate limited");
    log_warn("endpoint %s rate-limited for %.1f s", e->name,
             (double)(until_ms > now_ms ? until_ms - now_ms : 0) / 1000.0);
    state_event(st, "failure", e->name, "", "", "%s rate-limited for %.0f s", e->name,
                (double)(until_ms > now_ms ? until_ms - now_ms : 0) / 1000.0);
    state_evaluate(st, now_ms);
}

static void state_usage_capped(struct state *st, int ep, uint64_t until_ms, const char *reason,
                               uint64_t now_ms)
{
    struct ep *e = &st->eps[ep];
    double secs = (double)(until_ms > now_ms ? until_ms - now_ms : 0) / 1000.0;
    e->rest_until_ms = until_ms;
    snprintf(e->rest_reason, sizeof e->rest_reason, "usage cap: %s", reason);
    log_warn("endpoint %s rests for %.0f s: %s", e->name, secs, e->rest_reason);
    state_event(st, "failure", e->name, "", "usage_cap", "%s rests for %.0f s: %s", e->name, secs,
                e->rest_reason);
    state_evaluate(st, now_ms);
}

static void state_model_missing(struct state *st, int ep, const char *model, uint64_t now_ms)
{
    struct ep *e = &st->eps[ep];
    size_t len = strlen(model), slot = 0;
    if (len == 0 || len >= sizeof e->missing[0].model)
        return;
    for (size_t k = 0; k < EP_MISSING_MODELS; k++) {
        if (strcmp(e->missing[k].model, model) == 0) {
            slot = k;
            break;
        }
        if (e->missing[k].until_ms < e->missing[slot].until_ms)
            slot = k; /* the free or the oldest slot */
    }
    memcpy(e->missing[slot].model, model, len + 1);
    e->missing[slot].until_ms = now_ms + EP_MISSING_MODEL_MS;
    log_info("endpoint %s does not serve model %s; other endpoints get its requests for %u s",
             e->name, model, EP_MISSING_MODEL_MS / 1000u);
}

void state_report(struct state *st, int ep, const struct state_outcome *o, uint64_t now_ms,
                  uint64_t now_wall)
{
    struct ep *e = &st->eps[ep];
    bool check = o->source == STATE_FROM_CHECK;
    if (check && !o->remote &&
        e->check_running) { /* the check state_check_begin() started is over */
        e->check_running = false;
        if (st->checks_running)
            st->checks_running--;
    }
    const char *error = o->error ? o->error : "";
    switch (o->kind) {
    case STATE_OK:
        if (check)
            state_check_result(st, ep, true, false, o->latency_ms, o->ttfb_ms, NULL, o->tokens,
                               now_ms, now_wall);
        else
            state_live_success(st, ep, o->ttfb_ms, now_ms);
        break;
    case STATE_DOWN:
    case STATE_AUTH_FAILED:
        if (check)
            state_check_result(st, ep, false, o->kind == STATE_AUTH_FAILED, -1, -1,
                               o->error ? o->error : "check failed", o->tokens, now_ms, now_wall);
        else
            state_mark_failed(st, ep, o->kind == STATE_AUTH_FAILED ? EP_AUTH_FAILED : EP_FAILED,
                              o->status, error, now_ms);
        break;
    case STATE_RATE_LIMITED: state_rate_limited(st, ep, o->rest_until_ms, now_ms); break;
    case STATE_USAGE_CAPPED: state_usage_capped(st, ep, o->rest_until_ms, error, now_ms); break;
    case STATE_MODEL_MISSING:
        if (o->model)
            state_model_missing(st, ep, o->model, now_ms);
        break;
    case STATE_CHECK_MISCONFIGURED:
        state_check_error(st, ep, error, o->fix, now_ms, now_wall);
        break;
    }
    if (!o->remote && st->observer && st->observer->outcome)
        st->observer->outcome(st->observer->ud, st, ep, o);
}

void state_check_begin(struct state *st, int ep, uint64_t now_ms)
{
    (void)now_ms;
    struct ep *e = &st->eps[ep];
    if (!e->check_running) {
        e->check_running = true;
        st->checks_running++;
    }
    if (e->status == EP_UNKNOWN)
        e->status = EP_CHECKING;
}

void state_check_abandon(struct state *st, int ep)
{
    struct ep *e = &st->eps[ep];
    if (!e->check_running)
        return;
    e->check_running = false;
    if (st->checks_running)
        st->checks_running--;
}

void state_publish_interval(struct state *st, double interval_s, const char *load_level)
{
    st->check_interval_s = interval_s;
    st->load_level = load_level;
}

void state_publish_cycle(struct state *st, uint64_t next_cycle_ms)
{
    st->next_cycle_ms = next_cycle_ms;
}

void state_publish_paused(struct state *st, bool paused)
{
    st->checks_paused = paused;
}

void state_publish_ep_next(struct state *st, int ep, uint64_t next_check_ms)
{
    st->eps[ep].next_check_ms = next_check_ms;
}

void state_publish_models_warning(struct state *st, int ep, const char *warning)
{
    struct ep *e = &st->eps[ep];
    size_t len = warning ? strlen(warning) : 0;
    if (len >= sizeof e->models_warning)
        len = utf8_cut(warning, sizeof e->models_warning - 1);
    if (len)
        memcpy(e->models_warning, warning, len);
    e->models_warning[len] = '\0';
}

bool state_ep_check_running(const struct state *st, int ep)
{
    return st->eps[ep].check_running;
}

bool state_ep_recheck_soon(const struct state *st, int ep)
{
    return st->eps[ep].recheck_soon;
}

bool state_ep_failed(const struct state *st, int ep)
{
    return st->eps[ep].status == EP_FAILED || st->eps[ep].status == EP_AUTH_FAILED;
}

uint64_t state_ep_circuit_retry_ms(const struct state *st, int ep)
{
    return st->eps[ep].circuit == CIRCUIT_OPEN ? st->eps[ep].circuit_retry_ms : 0;
}

static void state_usage_add(struct usage *to, const struct usage *u)
{
    to->input += u->input;
    to->output += u->output;
    to->cache_read += u->cache_read;
    to->cache_creation += u->cache_creation;
}

void state_count_tokens(struct state *st, struct state *st_ep, int ep, const struct usage *u)
{
    state_usage_add(&st->live_tokens, u);
    if (st_ep && ep >= 0)
        state_usage_add(&st_ep->eps[ep].live_tokens, u);
}

void state_count_retry(struct state *st)
{
    st->retries_total++;
}

void state_own_config(struct state *st, struct config *cfg)
{
    st->owned_cfg = cfg;
}

void state_set_failed_cb(struct state *st, void (*cb)(void *ud, struct state *st, int ep), void *ud)
{
    st->ep_failed_cb = cb;
    st->ep_failed_ud = ud;
}

void state_set_wall_clock(struct state *st, uint64_t (*wall_clock_ms)(void))
{
    st->wall_clock_ms = wall_clock_ms;
}

void state_set_switch_cb(struct state *st, void (*cb)(void *ud, const char *reason), void *ud)
{
    st->switch_cb = cb;
    st->switch_ud = ud;
}

void state_set_observer(struct state *st, const struct state_observer *obs)
{
    st->observer = obs;
}

const struct state_observer *state_observer_of(const struct state *st)
{
    return st->observer;
}

bool state_may_check(const struct state *st, int ep)
{
    return !st->observer || !st->observer->may_check ||
           st->observer->may_check(st->observer->ud, st, ep);
}

void state_note_served(struct state *st, int ep, const char *model, const struct usage *tokens)
{
    if (ep >= 0 && st->observer && st->observer->served)
        st->observer->served(st->observer->ud, st, ep, model, tokens);
}

void state_ep_ask_recheck(struct state *st, int ep)
{
    st->eps[ep].recheck_soon = true;
}

enum ep_status state_ep_status(const struct state *st, int ep)
{
    return st->eps[ep].status;
}

size_t state_n_eps(const struct state *st)
{
    return st->n_eps;
}

size_t state_n_tracks(const struct state *st)
{
    return st->n_tracks;
}

const char *state_ep_name(const struct state *st, int ep)
{
    return st->eps[ep].name;
}

const char *state_ep_url(const struct state *st, int ep)
{
    return st->eps[ep].url;
}

size_t state_ep_group(const struct state *st, int ep)
{
    return st->eps[ep].group;
}

size_t state_current_group(const struct state *st)
{
    return st->current_group;
}

const char *state_group_name(const struct state *st, size_t g)
{
    return st->groups[g].name;
}

const struct cfg_group *state_group_cfg(const struct state *st, size_t g)
{
    return st->groups[g].cfg;
}

size_t state_group_eps(const struct state *st, size_t g, size_t *first)
{
    *first = st->groups[g].first;
    return st->groups[g].n;
}

struct track *state_tracks(const struct state *st)
{
    return st->tracks;
}

const char *state_ep_models_warning(const struct state *st, int ep)
{
    return st->eps[ep].models_warning;
}

const struct cfg_endpoint *state_ep_cfg(const struct state *st, int ep,
                                        const struct cfg_group **group)
{
    const struct ep *e = &st->eps[ep];
    const struct cfg_group *g = st->groups[e->group].cfg;
    if (group)
        *group = g;
    return e->index < g->n_endpoints ? &g->endpoints[e->index] : NULL;
}

void state_snapshot_take(const struct state *st, uint64_t now_ms, struct state_snapshot *out)
{
    memset(out, 0, sizeof *out);
    int current = state_current_ep(st);
    out->n_eps = st->n_eps;
    out->eps = xcalloc(st->n_eps ? st->n_eps : 1, sizeof *out->eps);
    for (size_t i = 0; i < st->n_eps; i++) {
        const struct ep *e = &st->eps[i];
        struct state_ep_snapshot *s = &out->eps[i];
        *s = (struct state_ep_snapshot){
            .name = e->name,
            .url = e->url,
            .group = st->groups[e->group].name,
            .status = e->status,
            .circuit = e->circuit,
            .cause = e->cause,
            .current = (int)i == current,
            .usable = ep_usable(e, now_ms),
            .active = e->active,
            .latency_ms = e->latency_ms,
            .smoothed_ms = e->smoothed_ms,
            .ttfb_ms = e->ttfb_ms,
            .checks = e->checks,
            .checks_ok = e->checks_ok,
            .requests = e->requests,
            .failures = e->failures,
            .error = e->error,
            .check_error = e->check_error,
            .models_warning = e->models_warning,
            .circuit_retry_ms = e->circuit_retry_ms,
            .rest_until_ms = e->rest_until_ms,
            .rest_reason = e->rest_reason,
            .next_check_ms = e->next_check_ms,
            .check_tokens = e->check_tokens,
            .live_tokens = e->live_tokens,
            .n_history = e->hist_len,
        };
        /* Oldest first, so a sparkline reads left to right. */
        for (size_t k = 0; k < e->hist_len; k++)
            s->history[k] = &e->history[(e->hist_next + EP_HISTORY - e->hist_len + k) % EP_HISTORY];
    }
    out->n_groups = st->n_groups;
    out->groups = xcalloc(st->n_groups ? st->n_groups : 1, sizeof *out->groups);
    for (size_t g = 0; g < st->n_groups; g++) {
        const struct group *gr = &st->groups[g];
        out->groups[g] = (struct state_group_snapshot){
            .name = gr->name,
            .cfg = gr->cfg,
            .policy = gr->policy,
            .first = gr->first,
            .n = gr->n,
            .panic = gr->panic,
            .fallback_served = gr->fallback_served,
        };
    }
    out->cfg = st->cfg;
    out->current_group = st->current_group;
    out->current_ep = current;
    out->next_ep = state_next_in_line(st, now_ms);
    out->manual = st->n_groups && st->groups[st->current_group].policy.manual;
    out->tracks = xcalloc(st->n_tracks ? st->n_tracks : 1, sizeof(const struct track *));
    size_t n = 0;
    for (const struct track *t = st->tracks; t && n < st->n_tracks; t = t->next)
        out->tracks[n++] = t;
    out->active = n;
    out->requests_total = st->requests_total;
    out->retries_total = st->retries_total;
    out->live_tokens = st->live_tokens;
    out->checks_paused = st->checks_paused;
    out->checks_running = st->checks_running;
    out->check_interval_s = st->check_interval_s;
    out->next_cycle_ms = st->next_cycle_ms;
    out->load_level = st->load_level;
    out->fallback_group = st->fallback_group;
    out->fallback_last_ms = st->fallback_last_ms;
    out->fallback_total = st->fallback_total;
    /* Every live binding, counted per endpoint (expired ones the table
     * still holds are left out by state_sessions_list). */
    size_t held = state_sessions_count(st);
    out->sessions = xmalloc((held ? held : 1) * sizeof *out->sessions);
    out->n_sessions = state_sessions_list(st, now_ms, out->sessions, held);
    for (size_t k = 0; k < out->n_sessions; k++)
        out->eps[out->sessions[k].ep].sessions++;
    /* Newest first. */
    for (size_t k = 0; k < st->n_events; k++)
        out->events[k] = &st->events[(st->next_event + STATE_EVENTS - 1 - k) % STATE_EVENTS];
    out->n_events = st->n_events;
    out->has_config = st->cfg != NULL;
    out->config_interval_s = st->cfg ? st->cfg->interval_s : 0;
    out->start_mono_ms = st->start_mono_ms;
    out->start_wall_ms = st->start_wall_ms;
}

void state_snapshot_release(struct state_snapshot *s)
{
    free(s->eps);
    free(s->groups);
    free(s->tracks);
    free(s->sessions);
    s->eps = NULL;
    s->groups = NULL;
    s->tracks = NULL;
    s->sessions = NULL;
}

bool state_ep_serves(const struct state *st, int ep, const char *model, uint64_t now_ms)
{
    const struct ep *e = &st->eps[ep];
    for (size_t k = 0; k < EP_MISSING_MODELS; k++)
        if (e->missing[k].until_ms > now_ms && strcmp(e->missing[k].model, model) == 0)
            return false;
    return true;
}

void state_served(struct state *st, int ep, uint64_t now_ms)
{
    size_t g = st->eps[ep].group;
    if (g == st->current_group) {
        if (st->fallback_group >= 0) {
            const char *from = st->groups[st->fallback_group].name;
            log_info("group %s serves again (fallback to %s over)", st->groups[g].name, from);
            state_event(st, "recovery", from, st->groups[g].name, "fallback",
                        "group %s serves again; fallback to %s over", st->groups[g].name, from);
            st->fallback_group = -1;
        }
        return;
    }
    st->groups[g].fallback_served++;
    st->fallback_total++;
    st->fallback_last_ms = now_ms;
    if (st->fallback_group != (int)g) {
        const char *cur = st->groups[st->current_group].name;
        log_warn("group %s has no usable endpoint: traffic falls back to group %s", cur,
                 st->groups[g].name);
        state_event(st, "switch", cur, st->groups[g].name, "fallback",
                    "fallback: group %s -> %s (%s)", cur, st->groups[g].name, st->eps[ep].name);
        st->fallback_group = (int)g;
    }
}

int state_set_mode(struct state *st, bool manual, uint64_t now_ms, char *err, size_t errlen)
{
    struct group *g = &st->groups[st->current_group];
    if (!manual) {
        policy_set_auto(&g->policy);
        state_event(st, "info", "", "", "manual", "mode: auto");
        log_info("mode: auto");
        state_evaluate(st, now_ms);
        return 0;
    }
    int cur = g->policy.current;
    if (cur < 0) {
        snprintf(err, errlen, "no current endpoint to pin");
        return -1;
    }
    return state_pin(st, (int)g->first + cur, now_ms, err, errlen);
}

int state_pin(struct state *st, int ep, uint64_t now_ms, char *err, size_t errlen)
{
    if (ep < 0 || (size_t)ep >= st->n_eps) {
        snprintf(err, errlen, "no such endpoint");
        return -1;
    }
    struct ep *e = &st->eps[ep];
    if (e->group != st->current_group &&
        state_set_group(st, (int)e->group, now_ms, err, errlen) != 0)
        return -1;
    struct group *g = &st->groups[e->group];
    struct policy_switch sw;
    if (policy_set_manual(&g->policy, (int)e->index, state_policy_view(st, g, now_ms), g->n, &sw))
        state_log_switch(st, g, &sw);
    log_info("mode: manual, pinned to %s", e->name);
    if (st->sessions && g->policy.current == (int)e->index) {
        /* The pin is the user's explicit choice: every session of the group
         * moves (routing keeps them there, policy_route_session), said once. */
        char *prefix = state_session_prefix(g);
        size_t moved = sessions_rebind(st->sessions, prefix, (int)e->index, now_ms);
        free(prefix);
        if (moved)
            log_info("pin: %zu session%s of group %s move%s to %s", moved, moved == 1 ? "" : "s",
                     g->name, moved == 1 ? "s" : "", e->name);
    }
    state_event(st, "info", "", e->name, "manual", "mode: manual, pinned to %s", e->name);
    state_evaluate(st, now_ms);
    return 0;
}

int state_set_group(struct state *st, int group, uint64_t now_ms, char *err, size_t errlen)
{
    if (group < 0 || (size_t)group >= st->n_groups) {
        snprintf(err, errlen, "no such group");
        return -1;
    }
    if ((size_t)group == st->current_group)
        return 0;
    struct group *from = &st->groups[st->current_group];
    struct group *to = &st->groups[group];
    const char *fname = from->policy.current >= 0
                            ? st->eps[from->first + (size_t)from->policy.current].name
                            : "none";
    st->current_group = (size_t)group;
    policy_activate(&to->policy, state_policy_view(st, to, now_ms), to->n, now_ms);
    const char *tname =
        to->policy.current >= 0 ? st->eps[to->first + (size_t)to->policy.current].name : "none";
    log_info("group %s -> %s (endpoint %s -> %s)", from->name, to->name, fname, tname);
    state_event(st, "switch", fname, tname, "group", "group %s -> %s (%s -> %s)", from->name,
                to->name, fname, tname);
    return 0;
}

void state_track_add(struct state *st, struct track *t, const char *method, const char *path,
                     uint64_t now_ms)
{
    memset(t, 0, sizeof *t);
    t->id = ++st->next_track_id;
    /* A short id people can tell apart: the counter (which starts at a
     * random place, random_u32) mixed so that neighbouring requests
     * do not look alike.  An odd multiplier modulo 2^30 is one-to-one, so
     * ids repeat only after 2^30 requests; two runs of 10,000 requests
     * share an id with a chance of about 1 in 50,000.  Six letters of
     * Crockford's base 32 (no i, l, o, u): "r" and 6 characters. */
    uint32_t h = (uint32_t)(t->id * 2654435761u) & 0x3fffffffu;
    static const char b32[] = "0123456789abcdefghjkmnpqrstvwxyz";
    t->idstr[0] = 'r';
    for (int i = 0; i < 6; i++)
        t->idstr[1 + i] = b32[(h >> (25 - 5 * i)) & 31];
    t->idstr[7] = '\0';
    t->method = method;
    t->path = xstrdup(path);
    t->ep = -1;
    t->state = TRACK_READING;
    t->start_ms = now_ms;
    t->owner = st;
    t->next = st->tracks;
    if (st->tracks)
        st->tracks->prev = t;
    st->tracks = t;
    st->n_tracks++;
    st->requests_total++;
}

void state_track_route(struct track *t, const struct state *from, int ep)
{
    struct state *st = t->owner;
    if (from != st && ep >= 0) /* the record moved to a newer state: same endpoint by name */
        ep = state_find_in_group(st, from->groups[from->eps[ep].group].name, from->eps[ep].name);
    if (t->ep >= 0)
        st->eps[t->ep].active--;
    t->ep = ep;
    if (ep >= 0) {
        st->eps[ep].active++;
        st->eps[ep].requests++;
    }
}

void state_track_remove(struct track *t)
{
    struct state *st = t->owner;
    if (t->state == TRACK_DONE)
        return;
    t->state = TRACK_DONE;
    if (t->ep >= 0)
        st->eps[t->ep].active--;
    if (t->prev)
        t->prev->next = t->next;
    else
        st->tracks = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->prev = t->next = NULL;
    st->n_tracks--;
    free(t->path);
    t->path = NULL;
}

void state_event(struct state *st, const char *kind, const char *from, const char *to,
                 const char *reason, const char *fmt, ...)
{
    struct event *ev = &st->events[st->next_event];
    memset(ev, 0, sizeof *ev);
    ev->t_wall_ms = st->wall_clock_ms();
    snprintf(ev->kind, sizeof ev->kind, "%s", kind);
    snprintf(ev->from, sizeof ev->from, "%s", from);
    snprintf(ev->to, sizeof ev->to, "%s", to);
    snprintf(ev->reason, sizeof ev->reason, "%s", reason);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ev->message, sizeof ev->message, fmt, ap);
    va_end(ap);
    st->next_event = (st->next_event + 1) % STATE_EVENTS;
    if (st->n_events < STATE_EVENTS)
        st->n_events++;
}
