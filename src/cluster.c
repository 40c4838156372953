/*
 * cluster: see cluster.h for what is shared; this is how.
 *
 * Two Redis connections (hiredis's asynchronous API on our libuv loop): "cmd"
 * sends commands, "sub" only
 * listens on the fleet's channel (a subscribed connection can do nothing
 * else).  The link is in one of three states:
 *
 *   LINK_DOWN        no connection; local state only; a reconnect is due at
 *                    next_connect_ms (back-off 250 ms doubling to 8 s);
 *   LINK_CONNECTING  resolving the host (uv_getaddrinfo, so DNS never
 *                    blocks the loop), connecting, AUTH, SELECT, SUBSCRIBE;
 *   LINK_UP          both connections answered.
 *
 * One timer (tick, lease/10 clamped to 50..1000 ms) drives everything: the
 * watchdog (connecting over 2 s, or a command unanswered for 2 s, is "Redis
 * down": hiredis 0.14 has no timeouts of its own), reconnects, the leases,
 * flushing the counters (each second) and reading the fleet totals (every
 * 2 s).
 *
 * Keys (P = key_prefix + fleet + ":"): P"lease:"EPID (value: instance id,
 * SET NX PX lease_ms, renewed by a compare-and-pexpire script at a third of
 * the lease); P"sess:"GROUP":"KEY (endpoint id, PX session_ttl);
 * P"usage:total" and P"usage:"YYYYMMDDHH (hashes, fields EPID|MODEL|what,
 * the hourly ones expire after 8 days); P"last:"EPID (the last check
 * result, 10 min) and P"rest:"EPID (a running rest, until it ends), read by
 * an instance when it connects (catch_up); channel P"events".  EPID is a hash
 * of group, name and URL, so instances whose configurations differ never
 * mix up endpoints: an outcome for an endpoint this instance lacks is
 * ignored.
 *
 * Messages are JSON objects of at most CLUSTER_MSG_MAX bytes: {"i":
 * instance, "e": EPID, "k": kind, ...}.  A rest travels as the time left,
 * not as a clock time, so clocks of different machines need not agree.
 * Applying one goes through state_report() like a local outcome, marked
 * remote so that the observer does not publish it again (a session
 * binding through state_bind_session(), with cl->applying set).
 *
 * Bounds: while the link is down, at most CLUSTER_QUEUE outcomes wait (the
 * oldest are dropped), and those older than CLUSTER_STALE_MS (rests: ended)
 * are dropped at reconnect; counters wait in a table of CLUSTER_COUNTERS
 * (endpoint, model) rows; at most CLUSTER_MAX_PENDING commands may wait for
 * an answer, beyond that publications are dropped and counted.  Secrets:
 * the password is sent in AUTH only; it is never logged or shown.
 */
#include "cluster.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "state.h"
#include "util.h"

#define CLUSTER_MSG_MAX 2048
#define CLUSTER_QUEUE 256
#define CLUSTER_STALE_MS 10000u
#define CLUSTER_COUNTERS 256
#define CLUSTER_SESS_SEEN 1024
#define CLUSTER_MAX_PENDING 4096
#define CLUSTER_CONNECT_MS 2000u
#define CLUSTER_SLOW_MS 2000u
#define CLUSTER_BACKOFF_MIN_MS 250u
#define CLUSTER_BACKOFF_MAX_MS 8000u
#define CLUSTER_HOUR_TTL_S 691200

enum link_state {
    LINK_DOWN = 0,
    LINK_CONNECTING = 1,
    LINK_UP = 2,
};

/* Reply tags: what a command's answer is for, and for which generation of
 * the endpoint table (a reload makes a new one). */
enum tag_kind {
    TAG_NONE = 0,
    TAG_READY = 1,   /* the PING after AUTH and SELECT */
    TAG_ACQUIRE = 2, /* SET NX PX */
    TAG_RENEW = 3,   /* the renew script */
    TAG_TOTALS = 4,  /* HGETALL usage:total */
    TAG_AUTH = 5,
    TAG_LAST = 6, /* GET last:EPID, catching up */
    TAG_REST = 7, /* GET and PTTL of rest:EPID, catching up */
};

/* What a message tells (the "k" of its JSON). */
enum msg_kind {
    MSG_CHECK = 0,        /* a check's result: ok, auth, latency_ms, ttfb_ms, text (the error) */
    MSG_FAILURE = 1,      /* a live failure: status (0: none), auth, text */
    MSG_RATE_LIMITED = 2, /* until_ms */
    MSG_USAGE_CAP = 3,    /* until_ms, text (the reason) */
    MSG_SESSION = 4,      /* text: the session key, now bound to the endpoint */
};

struct out_msg {
    enum msg_kind kind;
    char epid[17];
    char group[64];
    bool ok, auth;
    int status;
    double latency_ms, ttfb_ms;
    uint64_t at_ms;                  /* monotonic, when it happened */
    uint64_t until_ms;               /* monotonic end of a rest */
    char text[SESSIONS_KEY_MAX + 1]; /* error, reason or session key */
};

struct counter {
    bool used;
    char epid[17];
    char model[64];
    unsigned long long requests, input, output, cache_read, cache_creation;
};

struct fleet_total {
    unsigned long long requests, input, output, cache_read, cache_creation;
};

struct lease {
    char epid[17];
    bool held;
    bool inflight;       /* an acquire or renew is waiting for its answer */
    uint64_t sent_ms;    /* when the last acquire or renew left */
    uint64_t held_until; /* monotonic: safe to check before this */
    uint64_t tried_ms;   /* last acquire attempt */
};

struct cluster {
    uv_loop_t *loop;           /* borrows */
    struct state *st;          /* borrows: the current state */
    struct state_observer obs; /* st's observer (state_set_observer) */
    void (*poke)(void *ud);
    void *poke_ud;
    char instance[17]; /* random per process */
    char *host;        /* owns */
    int port, db;
    char *password;   /* owns; secret */
    char prefix[160]; /* key_prefix + fleet + ":" */
    char fleet[80];
    char channel[192];
    unsigned lease_ms;
    unsigned session_ttl_s;
    uv_timer_t tick;
    uv_getaddrinfo_t gai;
    bool resolving;
    bool closing;
    bool tick_closed;
    enum link_state link;
    redisAsyncContext *cmd; /* owns (hiredis frees it on disconnect) */
    redisAsyncContext *sub; /* owns, likewise */
    bool cmd_ready, sub_ready;
    uint64_t connect_start_ms;
    uint64_t next_connect_ms;
    unsigned backoff_ms;
    bool local_ok; /* checks may run locally while down */
    uint64_t start_ms;
    uint64_t down_since_ms; /* 0 while up */
    unsigned outstanding;   /* cmd replies still due */
    uint64_t progress_ms;   /* last send into an idle link, or last reply */
    unsigned gen;           /* endpoint-table generation */
    struct lease *leases;   /* owns, one per endpoint of st */
    size_t n_leases;
    struct fleet_total *totals; /* owns, one per endpoint of st */
    struct fleet_total total;   /* all endpoints of the fleet, known here or not */
    bool have_totals;
    uint64_t flush_ms, totals_ms;
    struct out_msg queue[CLUSTER_QUEUE];
    size_t q_head, q_len;
    struct counter counters[CLUSTER_COUNTERS];
    struct {
        uint64_t h, at;
    } sess_seen[CLUSTER_SESS_SEEN];
    bool applying; /* applying a remote outcome: do not publish it */
    char last_error[160];
    /* counters for /status and /metrics */
    unsigned long long published, applied, dropped, reconnects, lease_gains;
};

static void cluster_down(struct cluster *cl, const char *why);
static void link_up(struct cluster *cl);

/* ---- small helpers -------------------------------------------------------- */

static uint64_t fnv1a(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* The fleet-wide name of an endpoint: its group, name and URL hashed. */
static void ep_id(const struct state *st, int ep, char out[17])
{
    const char *g = state_group_name(st, state_ep_group(st, ep));
    const char *name = state_ep_name(st, ep), *url = state_ep_url(st, ep);
    uint64_t h = 1469598103934665603ull;
    h = fnv1a(h, g, strlen(g) + 1);
    h = fnv1a(h, name, strlen(name) + 1);
    h = fnv1a(h, url, strlen(url));
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

static int ep_by_id(const struct cluster *cl, const char *id)
{
    for (size_t i = 0; i < cl->n_leases; i++)
        if (strcmp(cl->leases[i].epid, id) == 0)
            return (int)i;
    return -1;
}

static void *tag(struct cluster *cl, enum tag_kind k, size_t i)
{
    return (void *)(((uintptr_t)(cl->gen & 0xffff) << 32) | ((uintptr_t)k << 24) |
                    (uintptr_t)(i & 0xffffff));
}

static enum tag_kind tag_read(const struct cluster *cl, void *t, size_t *i)
{
    uintptr_t v = (uintptr_t)t;
    *i = v & 0xffffff;
    if (((v >> 32) & 0xffff) != (cl->gen & 0xffff))
        return TAG_NONE; /* from before a reload */
    return (enum tag_kind)((v >> 24) & 0xff);
}

/* A model name as a hash field part: no '|', no control bytes, <= 63 bytes. */
static void field_clean(char *dst, size_t size, const char *src)
{
    size_t n = 0;
    for (; src && *src && n + 1 < size; src++)
        dst[n++] = ((unsigned char)*src < 0x20 || *src == '|' || *src == 0x7f) ? '_' : *src;
    dst[n] = '\0';
    if (n == 0)
        snprintf(dst, size, "-");
}

/* ---- sending ------------------------------------------------------------- */

static void on_reply(redisAsyncContext *ac, void *r, void *privdata);

/* Sends one command on cmd; false when it is not sent (no link, or too
 * much waiting already). */
static bool cmd_send(struct cluster *cl, void *t, int argc, const char **argv)
{
    if (!cl->cmd || cl->outstanding >= CLUSTER_MAX_PENDING)
        return false;
    if (redisAsyncCommandArgv(cl->cmd, on_reply, t, argc, argv, NULL) != REDIS_OK)
        return false;
    if (cl->outstanding++ == 0)
        cl->progress_ms = now_mono_ms();
    return true;
}

static void render_and_publish(struct cluster *cl, const struct out_msg *m, uint64_t now)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "i", cl->instance);
    cJSON_AddStringToObject(o, "e", m->epid);
    switch (m->kind) {
    case MSG_CHECK:
        cJSON_AddStringToObject(o, "k", "check");
        cJSON_AddBoolToObject(o, "ok", m->ok);
        cJSON_AddBoolToObject(o, "auth", m->auth);
        cJSON_AddNumberToObject(o, "lat", m->latency_ms);
        cJSON_AddNumberToObject(o, "ttfb", m->ttfb_ms);
        cJSON_AddStringToObject(o, "err", m->text);
        break;
    case MSG_FAILURE:
        cJSON_AddStringToObject(o, "k", "fail");
        cJSON_AddNumberToObject(o, "st", m->status);
        cJSON_AddBoolToObject(o, "auth", m->auth);
        cJSON_AddStringToObject(o, "err", m->text);
        break;
    case MSG_RATE_LIMITED:
    case MSG_USAGE_CAP:
        cJSON_AddStringToObject(o, "k", m->kind == MSG_RATE_LIMITED ? "rate" : "cap");
        cJSON_AddNumberToObject(o, "ms", (double)(m->until_ms - now));
        cJSON_AddStringToObject(o, "why", m->text);
        break;
    case MSG_SESSION:
        cJSON_AddStringToObject(o, "k", "sess");
        cJSON_AddStringToObject(o, "s", m->text);
        break;
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    const char *argv[] = {"PUBLISH", cl->channel, s};
    if (strlen(s) < CLUSTER_MSG_MAX && cmd_send(cl, tag(cl, TAG_NONE, 0), 3, argv))
        cl->published++;
    else
        cl->dropped++;
    /* What an instance that connects later reads (catch_up): the last check
     * result for 10 minutes, a rest for as long as it lasts. */
    bool rest = m->kind == MSG_RATE_LIMITED || m->kind == MSG_USAGE_CAP;
    if ((m->kind == MSG_CHECK || rest) && strlen(s) < CLUSTER_MSG_MAX) {
        char key[256], px[24];
        snprintf(key, sizeof key, "%s%s:%s", cl->prefix, rest ? "rest" : "last", m->epid);
        snprintf(px, sizeof px, "%llu", rest ? (unsigned long long)(m->until_ms - now) : 600000ull);
        const char *sv[] = {"SET", key, s, "PX", px};
        cmd_send(cl, tag(cl, TAG_NONE, 0), 5, sv);
    }
    free(s);
    if (m->kind == MSG_SESSION) {
        /* The binding is also kept with its TTL, for whoever looks it up. */
        char key[sizeof cl->prefix + sizeof m->group + sizeof m->text + 8], px[24];
        snprintf(key, sizeof key, "%ssess:%s:%s", cl->prefix, m->group, m->text);
        snprintf(px, sizeof px, "%u", cl->session_ttl_s * 1000u);
        const char *sv[] = {"SET", key, m->epid, "PX", px};
        cmd_send(cl, tag(cl, TAG_NONE, 0), 5, sv);
    }
}

/* Publishes now, or queues while the link is down (dropping the oldest). */
static void publish(struct cluster *cl, const struct out_msg *m)
{
    uint64_t now = now_mono_ms();
    if (cl->link == LINK_UP) {
        render_and_publish(cl, m, now);
        return;
    }
    if (cl->q_len == CLUSTER_QUEUE) {
        cl->q_head = (cl->q_head + 1) % CLUSTER_QUEUE;
        cl->q_len--;
        cl->dropped++;
    }
    cl->queue[(cl->q_head + cl->q_len) % CLUSTER_QUEUE] = *m;
    cl->q_len++;
}

/* Back on line: what happened while down, unless it is stale by now. */
static void queue_flush(struct cluster *cl)
{
    uint64_t now = now_mono_ms();
    while (cl->q_len) {
        const struct out_msg *m = &cl->queue[cl->q_head];
        bool rest = m->kind == MSG_RATE_LIMITED || m->kind == MSG_USAGE_CAP;
        bool fresh = rest ? m->until_ms > now + 100
                          : m->kind == MSG_SESSION || now - m->at_ms < CLUSTER_STALE_MS;
        if (fresh)
            render_and_publish(cl, m, now);
        cl->q_head = (cl->q_head + 1) % CLUSTER_QUEUE;
        cl->q_len--;
    }
}

static void count_served(struct cluster *cl, const char *epid, const char *model_raw,
                         const struct usage *u)
{
    char model[64];
    field_clean(model, sizeof model, model_raw);
    struct counter *free_row = NULL, *other = NULL;
    for (size_t k = 0; k < CLUSTER_COUNTERS; k++) {
        struct counter *c = &cl->counters[k];
        if (!c->used) {
            if (!free_row)
                free_row = c;
            continue;
        }
        if (strcmp(c->epid, epid) == 0) {
            if (strcmp(c->model, model) == 0) {
                free_row = c;
                goto add;
            }
            if (strcmp(c->model, "(other)") == 0)
                other = c;
        }
    }
    if (!free_row)
        free_row = other;
    if (!free_row) {
        cl->dropped++;
        return;
    }
    if (!free_row->used) {
        free_row->used = true;
        memcpy(free_row->epid, epid, sizeof free_row->epid);
        snprintf(free_row->model, sizeof free_row->model, "%s", model);
    }
add:
    free_row->requests++;
    if (u) {
        free_row->input += u->input > 0 ? (unsigned long long)u->input : 0;
        free_row->output += u->output > 0 ? (unsigned long long)u->output : 0;
        free_row->cache_read += u->cache_read > 0 ? (unsigned long long)u->cache_read : 0;
        free_row->cache_creation +=
            u->cache_creation > 0 ? (unsigned long long)u->cache_creation : 0;
    }
}

static void hincr(struct cluster *cl, const char *key, const struct counter *c, const char *what,
                  unsigned long long v)
{
    if (!v)
        return;
    char field[128], num[24];
    snprintf(field, sizeof field, "%s|%s|%s", c->epid, c->model, what);
    snprintf(num, sizeof num, "%llu", v);
    const char *argv[] = {"HINCRBY", key, field, num};
    cmd_send(cl, tag(cl, TAG_NONE, 0), 4, argv);
}

static void counters_flush(struct cluster *cl)
{
    char total[200], hour[200], hh[16];
    time_t t = (time_t)(now_wall_ms() / 1000);
    struct tm tmv;
    gmtime_r(&t, &tmv);
    strftime(hh, sizeof hh, "%Y%m%d%H", &tmv);
    snprintf(total, sizeof total, "%susage:total", cl->prefix);
    snprintf(hour, sizeof hour, "%susage:%s", cl->prefix, hh);
    bool any = false;
    for (size_t k = 0; k < CLUSTER_COUNTERS; k++) {
        struct counter *c = &cl->counters[k];
        if (!c->used)
            continue;
        if (cl->outstanding + 12 > CLUSTER_MAX_PENDING)
            return; /* the rest waits for the next flush */
        const char *keys[] = {total, hour};
        for (int j = 0; j < 2; j++) {
            hincr(cl, keys[j], c, "requests", c->requests);
            hincr(cl, keys[j], c, "input", c->input);
            hincr(cl, keys[j], c, "output", c->output);
            hincr(cl, keys[j], c, "cache_read", c->cache_read);
            hincr(cl, keys[j], c, "cache_creation", c->cache_creation);
        }
        memset(c, 0, sizeof *c);
        any = true;
    }
    if (any) {
        char ttl[16];
        snprintf(ttl, sizeof ttl, "%d", CLUSTER_HOUR_TTL_S);
        const char *argv[] = {"EXPIRE", hour, ttl};
        cmd_send(cl, tag(cl, TAG_NONE, 0), 3, argv);
    }
}

/* ---- the observer ---------------------------------------------------------- */

/* What this instance saw at an endpoint, for the fleet: check results,
 * live failures, rests.  A live success, a missing model and a
 * misconfigured check stay local (each instance finds those itself). */
static void obs_outcome(void *ud, struct state *st, int ep, const struct state_outcome *o)
{
    struct cluster *cl = ud;
    if (cl->applying || cl->closing || o->remote)
        return;
    struct out_msg m;
    memset(&m, 0, sizeof m);
    bool check = o->source == STATE_FROM_CHECK;
    bool auth = o->kind == STATE_AUTH_FAILED;
    switch (o->kind) {
    case STATE_OK:
        if (!check)
            return;
        m.kind = MSG_CHECK;
        m.ok = true;
        m.latency_ms = o->latency_ms;
        m.ttfb_ms = o->ttfb_ms;
        break;
    case STATE_DOWN:
    case STATE_AUTH_FAILED:
        m.kind = check ? MSG_CHECK : MSG_FAILURE;
        m.auth = auth;
        m.status = o->status;
        m.latency_ms = m.ttfb_ms = -1;
        snprintf(m.text, sizeof m.text, "%s", o->error ? o->error : check ? "check failed" : "");
        break;
    case STATE_RATE_LIMITED:
        m.kind = MSG_RATE_LIMITED;
        m.until_ms = o->rest_until_ms;
        snprintf(m.text, sizeof m.text, "rate limited");
        break;
    case STATE_USAGE_CAPPED:
        m.kind = MSG_USAGE_CAP;
        m.until_ms = o->rest_until_ms;
        snprintf(m.text, sizeof m.text, "%s", o->error ? o->error : "");
        break;
    case STATE_MODEL_MISSING:
    case STATE_CHECK_MISCONFIGURED: return;
    }
    ep_id(st, ep, m.epid);
    m.at_ms = now_mono_ms();
    publish(cl, &m);
}

/* A session bound here: shared, but a session that keeps its endpoint is
 * told again only after a quarter of its TTL. */
static void obs_session(void *ud, struct state *st, int ep, const char *session_key)
{
    struct cluster *cl = ud;
    if (cl->applying || cl->closing)
        return;
    struct out_msg m;
    memset(&m, 0, sizeof m);
    if (!session_key || strlen(session_key) >= sizeof m.text)
        return; /* a key this long is not shared */
    uint64_t now = now_mono_ms();
    ep_id(st, ep, m.epid);
    m.kind = MSG_SESSION;
    m.at_ms = now;
    snprintf(m.text, sizeof m.text, "%s", session_key);
    snprintf(m.group, sizeof m.group, "%s", state_group_name(st, state_ep_group(st, ep)));
    uint64_t h = fnv1a(fnv1a(1469598103934665603ull, m.epid, 16), session_key, strlen(session_key));
    size_t slot = (size_t)(h % CLUSTER_SESS_SEEN);
    uint64_t quarter = (uint64_t)cl->session_ttl_s * 250u;
    if (cl->sess_seen[slot].h == h && now - cl->sess_seen[slot].at < quarter)
        return;
    cl->sess_seen[slot].h = h;
    cl->sess_seen[slot].at = now;
    publish(cl, &m);
}

/* A request ended here: counted for the fleet's counters. */
static void obs_served(void *ud, struct state *st, int ep, const char *model,
                       const struct usage *tokens)
{
    struct cluster *cl = ud;
    if (cl->closing)
        return;
    char epid[17];
    ep_id(st, ep, epid);
    count_served(cl, epid, model, tokens);
}

static bool obs_may_check(void *ud, const struct state *st, int ep)
{
    const struct cluster *cl = ud;
    if (cl->link != LINK_UP)
        return cl->local_ok;
    if (st != cl->st || ep < 0 || (size_t)ep >= cl->n_leases)
        return false;
    const struct lease *l = &cl->leases[ep];
    return l->held && now_mono_ms() < l->held_until;
}

/* ---- applying what others published ----------------------------------------- */

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static double jnum(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static bool jbool(const cJSON *o, const char *k)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, k));
}

/* Applies one message: live from the channel (stored_ms < 0), or read back
 * at catch-up, where a check result only fills in an endpoint never checked
 * here and a rest lasts what its key has left (stored_ms). */
static void apply_message(struct cluster *cl, const char *text, size_t len, long long stored_ms)
{
    if (len >= CLUSTER_MSG_MAX || !cl->st)
        return;
    cJSON *o = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsObject(o))
        goto out;
    if (strcmp(jstr(o, "i"), cl->instance) == 0)
        goto out; /* our own */
    int ep = ep_by_id(cl, jstr(o, "e"));
    if (ep < 0)
        goto out; /* an endpoint this instance does not have */
    struct state *st = cl->st;
    const char *k = jstr(o, "k");
    uint64_t now = now_mono_ms();
    char why[200];
    enum ep_status status_now = state_ep_status(st, ep);
    if (stored_ms >= 0 && strcmp(k, "check") == 0 && status_now != EP_UNKNOWN &&
        status_now != EP_CHECKING)
        goto out; /* what this instance knows is newer */
    if (stored_ms >= 0 && cJSON_GetObjectItemCaseSensitive(o, "ms"))
        cJSON_SetNumberValue(cJSON_GetObjectItemCaseSensitive(o, "ms"), (double)stored_ms);
    /* Through the one entry point, marked remote: applied like a local
     * outcome, not published again, and not counted in this instance's
     * check metrics (those are fed by health.c only). */
    struct state_outcome so = {.remote = true, .latency_ms = -1, .ttfb_ms = -1};
    bool apply = true;
    if (strcmp(k, "check") == 0) {
        bool ok = jbool(o, "ok");
        snprintf(why, sizeof why, "%s", jstr(o, "err"));
        so.source = STATE_FROM_CHECK;
        so.kind = ok ? STATE_OK : jbool(o, "auth") ? STATE_AUTH_FAILED : STATE_DOWN;
        if (ok) {
            so.latency_ms = jnum(o, "lat");
            so.ttfb_ms = jnum(o, "ttfb");
        } else {
            so.error = why[0] ? why : "check failed (fleet)";
        }
    } else if (strcmp(k, "fail") == 0) {
        snprintf(why, sizeof why, "fleet: %s", jstr(o, "err"));
        so.source = STATE_FROM_LIVE;
        so.kind = jbool(o, "auth") ? STATE_AUTH_FAILED : STATE_DOWN;
        double status = jnum(o, "st");
        so.status = status >= 100 && status <= 599 ? (int)status : 0;
        so.error = why;
    } else if (strcmp(k, "rate") == 0 || strcmp(k, "cap") == 0) {
        double ms = jnum(o, "ms");
        apply = ms > 0 && ms < 7 * 86400e3;
        so.source = STATE_FROM_LIVE;
        so.kind = k[0] == 'r' ? STATE_RATE_LIMITED : STATE_USAGE_CAPPED;
        so.rest_until_ms = apply ? now + (uint64_t)ms : 0;
        snprintf(why, sizeof why, "%s", jstr(o, "why"));
        so.error = why;
    } else {
        apply = false;
    }
    cl->applying = true;
    if (apply)
        state_report(st, ep, &so, now, now_wall_ms());
    if (strcmp(k, "sess") == 0) {
        const char *key = jstr(o, "s");
        if (key[0])
            state_bind_session(st, key, ep, now);
    }
    cl->applying = false;
    cl->applied++;
out:
    cJSON_Delete(o);
}

static void on_message(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)privdata;
    struct cluster *cl = ac->data;
    redisReply *rep = r;
    if (!cl || !rep || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3)
        return;
    redisReply *kind = rep->element[0], *payload = rep->element[2];
    if (kind->type != REDIS_REPLY_STRING)
        return;
    if (strcmp(kind->str, "subscribe") == 0) {
        cl->sub_ready = true;
        if (cl->cmd_ready && cl->link == LINK_CONNECTING)
            link_up(cl);
        return;
    }
    if (strcmp(kind->str, "message") == 0 && payload->type == REDIS_REPLY_STRING)
        apply_message(cl, payload->str, payload->len, -1);
}

/* ---- leases ------------------------------------------------------------------ */

static const char renew_script[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";

/* The lease key lives 4/5 of lease_ms and is renewed every quarter, so a
 * dead checker's endpoints are taken over (by an instance trying every
 * tenth) within lease_ms of its last renewal. */
static unsigned cluster_key_ttl(const struct cluster *cl)
{
    return cl->lease_ms / 5 * 4;
}

static void leases_round(struct cluster *cl, uint64_t now)
{
    unsigned tick = cl->lease_ms / 10;
    char key[256], ms[16];
    snprintf(ms, sizeof ms, "%u", cluster_key_ttl(cl));
    for (size_t i = 0; i < cl->n_leases; i++) {
        struct lease *l = &cl->leases[i];
        if (l->inflight)
            continue;
        snprintf(key, sizeof key, "%slease:%s", cl->prefix, l->epid);
        if (l->held && now - l->sent_ms >= cl->lease_ms / 4) {
            const char *argv[] = {"EVAL", renew_script, "1", key, cl->instance, ms};
            if (cmd_send(cl, tag(cl, TAG_RENEW, i), 6, argv)) {
                l->inflight = true;
                l->sent_ms = now;
            }
        } else if (!l->held && now - l->tried_ms >= tick) {
            const char *argv[] = {"SET", key, cl->instance, "NX", "PX", ms};
            if (cmd_send(cl, tag(cl, TAG_ACQUIRE, i), 6, argv)) {
                l->inflight = true;
                l->sent_ms = l->tried_ms = now;
            }
        }
    }
}

static void lease_answer(struct cluster *cl, size_t i, bool acquire, const redisReply *rep)
{
    if (i >= cl->n_leases)
        return;
    struct lease *l = &cl->leases[i];
    l->inflight = false;
    if (!rep || cl->link != LINK_UP)
        return;
    bool ok = acquire ? rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "OK") == 0
                      : rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
    bool was = l->held;
    l->held = ok;
    if (ok) /* a margin for the trip: the lease ran from before we sent */
        l->held_until = l->sent_ms + cluster_key_ttl(cl) - cl->lease_ms / 10;
    if (ok && !was && cl->st && i < state_n_eps(cl->st)) {
        /* The new checker looks at once: the one before may be long gone. */
        cl->lease_gains++;
        state_ep_ask_recheck(cl->st, (int)i);
        log_info("cluster: this instance now checks endpoint %s", state_ep_name(cl->st, (int)i));
        if (cl->poke)
            cl->poke(cl->poke_ud);
    } else if (!ok && was && cl->st && i < state_n_eps(cl->st)) {
        log_info("cluster: endpoint %s is checked by another instance now",
                 state_ep_name(cl->st, (int)i));
    }
}

/* ---- replies -------------------------------------------------------------------- */

static void totals_answer(struct cluster *cl, const redisReply *rep)
{
    if (!rep || rep->type != REDIS_REPLY_ARRAY)
        return;
    memset(cl->totals, 0, cl->n_leases * sizeof *cl->totals);
    memset(&cl->total, 0, sizeof cl->total);
    for (size_t k = 0; k + 1 < rep->elements; k += 2) {
        const redisReply *f = rep->element[k], *v = rep->element[k + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING || f->len > 200)
            continue;
        char field[208], epid[17];
        memcpy(field, f->str, f->len);
        field[f->len] = '\0';
        const char *bar = strchr(field, '|'), *what = strrchr(field, '|');
        if (!bar || bar - field != 16 || what == bar)
            continue;
        memcpy(epid, field, 16);
        epid[16] = '\0';
        unsigned long long n = strtoull(v->str, NULL, 10);
        what++;
        int ep = ep_by_id(cl, epid);
        struct fleet_total *ts[2] = {&cl->total, ep >= 0 ? &cl->totals[ep] : NULL};
        for (int j = 0; j < 2; j++) {
            struct fleet_total *t = ts[j];
            if (!t)
                continue;
            if (strcmp(what, "requests") == 0)
                t->requests += n;
            else if (strcmp(what, "input") == 0)
                t->input += n;
            else if (strcmp(what, "output") == 0)
                t->output += n;
            else if (strcmp(what, "cache_read") == 0)
                t->cache_read += n;
            else if (strcmp(what, "cache_creation") == 0)
                t->cache_creation += n;
        }
    }
    cl->have_totals = true;
}

static const char rest_script[] =
    "return {redis.call('get', KEYS[1]), redis.call('pttl', KEYS[1])}";

/* Just connected: what the fleet learnt before (or while we were away). */
static void catch_up(struct cluster *cl)
{
    char key[256];
    for (size_t i = 0; i < cl->n_leases; i++) {
        snprintf(key, sizeof key, "%slast:%s", cl->prefix, cl->leases[i].epid);
        const char *gv[] = {"GET", key};
        cmd_send(cl, tag(cl, TAG_LAST, i), 2, gv);
        snprintf(key, sizeof key, "%srest:%s", cl->prefix, cl->leases[i].epid);
        const char *ev[] = {"EVAL", rest_script, "1", key};
        cmd_send(cl, tag(cl, TAG_REST, i), 4, ev);
    }
}

static void link_up(struct cluster *cl)
{
    bool first = cl->down_since_ms == 0 && cl->reconnects == 0;
    cl->link = LINK_UP;
    cl->backoff_ms = CLUSTER_BACKOFF_MIN_MS;
    cl->last_error[0] = '\0';
    if (first)
        log_info("cluster: connected to Redis %s:%d, fleet %s, instance %s", cl->host, cl->port,
                 cl->fleet, cl->instance);
    else
        log_info("cluster: Redis %s:%d is back; sharing state again", cl->host, cl->port);
    cl->down_since_ms = 0;
    catch_up(cl);
    queue_flush(cl);
    leases_round(cl, now_mono_ms());
    counters_flush(cl);
    if (cl->poke)
        cl->poke(cl->poke_ud);
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct cluster *cl = ac->data;
    redisReply *rep = r;
    if (!cl)
        return;
    if (cl->outstanding)
        cl->outstanding--;
    cl->progress_ms = now_mono_ms();
    size_t i;
    enum tag_kind k = tag_read(cl, privdata, &i);
    if (rep && rep->type == REDIS_REPLY_ERROR) {
        char err[160];
        snprintf(err, sizeof err, "%.150s", rep->str);
        if (k == TAG_AUTH || k == TAG_READY) {
            if (strcmp(cl->last_error, err) != 0) /* once, not at every retry */
                log_warn("cluster: Redis refused us: %s; check redis_password_env", err);
            cluster_down(cl, err);
            return;
        }
        snprintf(cl->last_error, sizeof cl->last_error, "%s", err);
    }
    switch (k) {
    case TAG_READY:
        if (rep && rep->type != REDIS_REPLY_ERROR) {
            cl->cmd_ready = true;
            if (cl->sub_ready && cl->link == LINK_CONNECTING)
                link_up(cl);
        }
        break;
    case TAG_ACQUIRE:
    case TAG_RENEW: lease_answer(cl, i, k == TAG_ACQUIRE, rep); break;
    case TAG_TOTALS: totals_answer(cl, rep); break;
    case TAG_LAST:
        if (rep && rep->type == REDIS_REPLY_STRING)
            apply_message(cl, rep->str, rep->len, 0);
        break;
    case TAG_REST:
        if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
            rep->element[0]->type == REDIS_REPLY_STRING &&
            rep->element[1]->type == REDIS_REPLY_INTEGER && rep->element[1]->integer > 0)
            apply_message(cl, rep->element[0]->str, rep->element[0]->len, rep->element[1]->integer);
        break;
    default: break;
    }
}

/* ---- hiredis on libuv -------------------------------------------------------------- */

/*
 * The glue between hiredis and the loop: one uv_poll_t per connection.  It
 * replaces Debian's adapters/libuv.h (hiredis 0.14), which drops every poll
 * event that comes with an error status: a refused connect then hung until
 * our watchdog gave up, 2 s later.  Here an error status lets hiredis try the
 * socket itself, which is how it learns of the failure at once.
 */
struct rpoll {
    uv_poll_t handle;
    redisAsyncContext *ac; /* borrows; NULL once hiredis has let go */
    int events;
};

static void on_rpoll(uv_poll_t *h, int status, int events)
{
    struct rpoll *p = h->data;
    if (!p->ac)
        return;
    if (status < 0)
        events = p->events; /* let hiredis meet the error on its own syscall */
    if (events & UV_WRITABLE)
        redisAsyncHandleWrite(p->ac);
    if (p->ac && (events & (UV_READABLE | UV_DISCONNECT)))
        redisAsyncHandleRead(p->ac);
}

static void rpoll_set(struct rpoll *p, int events)
{
    p->events = events;
    if (events)
        uv_poll_start(&p->handle, events, on_rpoll);
    else
        uv_poll_stop(&p->handle);
}

static void rpoll_add_read(void *d)
{
    struct rpoll *p = d;
    rpoll_set(p, p->events | UV_READABLE);
}

static void rpoll_del_read(void *d)
{
    struct rpoll *p = d;
    rpoll_set(p, p->events & ~UV_READABLE);
}

static void rpoll_add_write(void *d)
{
    struct rpoll *p = d;
    rpoll_set(p, p->events | UV_WRITABLE);
}

static void rpoll_del_write(void *d)
{
    struct rpoll *p = d;
    rpoll_set(p, p->events & ~UV_WRITABLE);
}

static void on_rpoll_closed(uv_handle_t *h)
{
    free(h->data);
}

/* hiredis is freeing the context: the poll handle goes, freed when closed. */
static void rpoll_cleanup(void *d)
{
    struct rpoll *p = d;
    p->ac = NULL;
    uv_close((uv_handle_t *)&p->handle, on_rpoll_closed);
}

static int rpoll_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    struct rpoll *p = xcalloc(1, sizeof *p);
    if (uv_poll_init(loop, &p->handle, ac->c.fd) != 0) {
        free(p);
        return -1;
    }
    p->handle.data = p;
    p->ac = ac;
    ac->ev.data = p;
    ac->ev.addRead = rpoll_add_read;
    ac->ev.delRead = rpoll_del_read;
    ac->ev.addWrite = rpoll_add_write;
    ac->ev.delWrite = rpoll_del_write;
    ac->ev.cleanup = rpoll_cleanup;
    return 0;
}

/* ---- the link ----------------------------------------------------------------------- */

static void ctx_release(struct cluster *cl, redisAsyncContext **pp)
{
    redisAsyncContext *ac = *pp;
    if (!ac)
        return;
    *pp = NULL;
    ac->data = NULL; /* callbacks still run by the free see no cluster */
    redisAsyncFree(ac);
    (void)cl;
}

static void cluster_down(struct cluster *cl, const char *why)
{
    bool was_up = cl->link == LINK_UP;
    if (cl->link == LINK_DOWN && !cl->cmd && !cl->sub)
        return;
    uint64_t now = now_mono_ms();
    cl->link = LINK_DOWN;
    cl->cmd_ready = cl->sub_ready = false;
    ctx_release(cl, &cl->cmd);
    ctx_release(cl, &cl->sub);
    cl->outstanding = 0;
    for (size_t i = 0; i < cl->n_leases; i++)
        cl->leases[i].held = cl->leases[i].inflight = false;
    if (!cl->down_since_ms)
        cl->down_since_ms = now;
    snprintf(cl->last_error, sizeof cl->last_error, "%s", why);
    cl->next_connect_ms = now + cl->backoff_ms;
    cl->backoff_ms =
        cl->backoff_ms * 2 > CLUSTER_BACKOFF_MAX_MS ? CLUSTER_BACKOFF_MAX_MS : cl->backoff_ms * 2;
    bool was_local = cl->local_ok;
    cl->local_ok = true;
    if (was_up)
        log_warn("cluster: lost Redis %s:%d (%s); running on local state, reconnecting", cl->host,
                 cl->port, why);
    else
        log_debug("cluster: Redis %s:%d unavailable (%s); retry in %u ms", cl->host, cl->port, why,
                  (unsigned)(cl->next_connect_ms - now));
    if ((was_up || !was_local) && cl->poke) {
        /* Every endpoint is this instance's to check now; those never
         * checked here are due at once. */
        for (size_t i = 0; cl->st && i < state_n_eps(cl->st); i++) {
            enum ep_status s = state_ep_status(cl->st, (int)i);
            if (s == EP_UNKNOWN || s == EP_CHECKING)
                state_ep_ask_recheck(cl->st, (int)i);
        }
        cl->poke(cl->poke_ud);
    }
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct cluster *cl = ac->data;
    if (!cl || status == REDIS_OK)
        return;
    /* hiredis frees the context after this callback. */
    if (ac == cl->cmd)
        cl->cmd = NULL;
    else if (ac == cl->sub)
        cl->sub = NULL;
    ((redisAsyncContext *)ac)->data = NULL;
    char why[160];
    snprintf(why, sizeof why, "connect: %.120s", ac->errstr[0] ? ac->errstr : "failed");
    cluster_down(cl, why);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct cluster *cl = ac->data;
    if (!cl)
        return;
    if (ac == cl->cmd)
        cl->cmd = NULL;
    else if (ac == cl->sub)
        cl->sub = NULL;
    ((redisAsyncContext *)ac)->data = NULL;
    cluster_down(cl, ac->errstr[0] ? ac->errstr : "connection closed");
}

static redisAsyncContext *ctx_open(struct cluster *cl, const char *ip)
{
    redisAsyncContext *ac = redisAsyncConnect(ip, cl->port);
    if (!ac)
        return NULL;
    if (ac->err) {
        snprintf(cl->last_error, sizeof cl->last_error, "connect: %.120s", ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    if (rpoll_attach(ac, cl->loop) != 0) {
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = cl;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    return ac;
}

static void on_sub_auth(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)privdata;
    struct cluster *cl = ac->data;
    redisReply *rep = r;
    if (cl && rep && rep->type == REDIS_REPLY_ERROR) {
        char err[160];
        snprintf(err, sizeof err, "%.150s", rep->str);
        cluster_down(cl, err);
    }
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct cluster *cl = req->data;
    cl->resolving = false;
    if (cl->closing) {
        uv_freeaddrinfo(res);
        if (cl->tick_closed)
            free(cl);
        return;
    }
    char ip[64] = "";
    if (status == 0 && res) {
        if (res->ai_family == AF_INET6)
            uv_ip6_name((const struct sockaddr_in6 *)res->ai_addr, ip, sizeof ip);
        else
            uv_ip4_name((const struct sockaddr_in *)res->ai_addr, ip, sizeof ip);
    }
    uv_freeaddrinfo(res);
    if (!ip[0]) {
        char why[160];
        snprintf(why, sizeof why, "cannot resolve %.100s: %s", cl->host,
                 status ? uv_strerror(status) : "no address");
        cl->link = LINK_CONNECTING; /* so that cluster_down counts it */
        cluster_down(cl, why);
        return;
    }
    /* AUTH on both, SELECT and a PING on cmd, SUBSCRIBE on sub: the
     * link is up when the PING and the subscription are answered. */
    cl->cmd = ctx_open(cl, ip);
    cl->sub = cl->cmd ? ctx_open(cl, ip) : NULL;
    if (!cl->cmd || !cl->sub) {
        char err[160];
        snprintf(err, sizeof err, "%s", cl->last_error[0] ? cl->last_error : "cannot connect");
        cluster_down(cl, err);
        return;
    }
    if (cl->password) {
        const char *auth[] = {"AUTH", cl->password};
        cmd_send(cl, tag(cl, TAG_AUTH, 0), 2, auth);
        redisAsyncCommandArgv(cl->sub, on_sub_auth, NULL, 2, auth, NULL);
    }
    char db[16];
    snprintf(db, sizeof db, "%d", cl->db);
    const char *sel[] = {"SELECT", db};
    cmd_send(cl, tag(cl, TAG_AUTH, 0), 2, sel);
    const char *ping[] = {"PING"};
    cmd_send(cl, tag(cl, TAG_READY, 0), 1, ping);
    const char *subv[] = {"SUBSCRIBE", cl->channel};
    redisAsyncCommandArgv(cl->sub, on_message, NULL, 2, subv, NULL);
}

static void cluster_connect(struct cluster *cl, uint64_t now)
{
    cl->link = LINK_CONNECTING;
    cl->connect_start_ms = now;
    cl->cmd_ready = cl->sub_ready = false;
    if (cl->down_since_ms || cl->last_error[0])
        cl->reconnects++;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    char port[8];
    snprintf(port, sizeof port, "%d", cl->port);
    cl->gai.data = cl;
    if (uv_getaddrinfo(cl->loop, &cl->gai, on_resolved, cl->host, port, &hints) == 0) {
        cl->resolving = true;
    } else {
        cluster_down(cl, "cannot start resolving the host");
    }
}

static void on_tick(uv_timer_t *t)
{
    struct cluster *cl = t->data;
    uint64_t now = now_mono_ms();
    if (!cl->local_ok && now - cl->start_ms > 3000)
        cl->local_ok = true; /* no answer yet at start: check locally meanwhile */
    switch (cl->link) {
    case LINK_DOWN:
        if (now >= cl->next_connect_ms)
            cluster_connect(cl, now);
        return;
    case LINK_CONNECTING:
        if (!cl->resolving && now - cl->connect_start_ms > CLUSTER_CONNECT_MS)
            cluster_down(cl, "connect timed out");
        return;
    case LINK_UP: break;
    }
    if (cl->outstanding && now - cl->progress_ms > CLUSTER_SLOW_MS) {
        cluster_down(cl, "Redis did not answer within 2 s");
        return;
    }
    leases_round(cl, now);
    if (now - cl->flush_ms >= 1000) {
        cl->flush_ms = now;
        counters_flush(cl);
    }
    if (now - cl->totals_ms >= 2000) {
        char key[200];
        snprintf(key, sizeof key, "%susage:total", cl->prefix);
        const char *argv[] = {"HGETALL", key};
        if (cmd_send(cl, tag(cl, TAG_TOTALS, 0), 2, argv))
            cl->totals_ms = now;
    }
}

/* ---- public ---------------------------------------------------------------------------- */

void cluster_set_state(struct cluster *cl, struct state *st)
{
    size_t n_eps = state_n_eps(st);
    if (st != cl->st || cl->n_leases != n_eps) {
        /* A new endpoint table: leases are taken afresh (the old ones run
         * out by themselves), replies for the old table are ignored. */
        cl->gen++;
        struct lease *old = cl->leases;
        size_t n_old = cl->n_leases;
        free(cl->totals);
        cl->n_leases = n_eps;
        cl->leases = xcalloc(n_eps ? n_eps : 1, sizeof *cl->leases);
        cl->totals = xcalloc(n_eps ? n_eps : 1, sizeof *cl->totals);
        for (size_t i = 0; i < n_eps; i++) {
            struct lease *l = &cl->leases[i];
            ep_id(st, (int)i, l->epid);
            /* An endpoint kept by a reload keeps its lease: the key in
             * Redis still names this instance, and SET NX would not. */
            for (size_t k = 0; k < n_old; k++)
                if (strcmp(old[k].epid, l->epid) == 0) {
                    l->held = old[k].held;
                    l->held_until = old[k].held_until;
                    l->sent_ms = old[k].sent_ms;
                }
        }
        free(old);
        cl->st = st;
        state_set_observer(st, &cl->obs);
    }
    if (cl->link == LINK_CONNECTING && cl->cmd_ready && cl->sub_ready)
        link_up(cl);
}

struct cluster *cluster_new(uv_loop_t *loop, const struct config *cfg, struct state *st,
                            void (*poke)(void *ud), void *ud)
{
    if (!cfg->cluster_url || !cfg->cluster_host)
        return NULL;
    struct cluster *cl = xcalloc(1, sizeof *cl);
    cl->loop = loop;
    cl->poke = poke;
    cl->poke_ud = ud;
    cl->obs.outcome = obs_outcome;
    cl->obs.session = obs_session;
    cl->obs.served = obs_served;
    cl->obs.may_check = obs_may_check;
    cl->obs.ud = cl;
    unsigned char rnd[8];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        uint64_t v = uv_hrtime() ^ ((uint64_t)getpid() << 32);
        memcpy(rnd, &v, sizeof rnd);
    }
    for (int k = 0; k < 8; k++)
        snprintf(cl->instance + 2 * k, 3, "%02x", rnd[k]);
    cl->host = xstrdup(cfg->cluster_host);
    cl->port = cfg->cluster_port;
    cl->db = cfg->cluster_db;
    cl->password = cfg->cluster_password ? xstrdup(cfg->cluster_password) : NULL;
    snprintf(cl->fleet, sizeof cl->fleet, "%s", cfg->cluster_fleet);
    snprintf(cl->prefix, sizeof cl->prefix, "%s%s:", cfg->cluster_key_prefix, cfg->cluster_fleet);
    snprintf(cl->channel, sizeof cl->channel, "%sevents", cl->prefix);
    cl->lease_ms = (unsigned)cfg->cluster_lease_ms;
    cl->session_ttl_s = cfg->session_ttl_s > 0 ? (unsigned)cfg->session_ttl_s : 3600;
    cl->backoff_ms = CLUSTER_BACKOFF_MIN_MS;
    cl->start_ms = now_mono_ms();
    cluster_set_state(cl, st);
    uv_timer_init(loop, &cl->tick);
    cl->tick.data = cl;
    unsigned tick = cl->lease_ms / 10;
    tick = tick < 50 ? 50 : tick > 1000 ? 1000 : tick;
    uv_timer_start(&cl->tick, on_tick, 0, tick);
    return cl;
}

static void on_tick_closed(uv_handle_t *h)
{
    struct cluster *cl = h->data;
    cl->tick_closed = true;
    if (!cl->resolving)
        free(cl);
}

void cluster_free(struct cluster *cl)
{
    if (!cl)
        return;
    cl->closing = true;
    if (cl->st && state_observer_of(cl->st) == &cl->obs)
        state_set_observer(cl->st, NULL);
    /* Counters of the last second are not flushed: waiting for Redis
     * could hold the shutdown. */
    cl->link = LINK_DOWN;
    ctx_release(cl, &cl->cmd);
    ctx_release(cl, &cl->sub);
    free(cl->leases);
    free(cl->totals);
    cl->leases = NULL;
    cl->totals = NULL;
    cl->n_leases = 0;
    free(cl->host);
    cl->host = NULL;
    if (cl->password) {
        explicit_bzero(cl->password, strlen(cl->password));
        free(cl->password);
        cl->password = NULL;
    }
    if (cl->resolving)
        uv_cancel((uv_req_t *)&cl->gai);
    uv_close((uv_handle_t *)&cl->tick, on_tick_closed);
}

/* ---- /status and /metrics ------------------------------------------------------------------ */

static const char *link_name(enum link_state l)
{
    return l == LINK_UP ? "connected" : l == LINK_CONNECTING ? "connecting" : "down";
}

static cJSON *total_json(const struct fleet_total *t)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "requests", (double)t->requests);
    cJSON *tk = cJSON_AddObjectToObject(o, "tokens");
    cJSON_AddNumberToObject(tk, "input", (double)t->input);
    cJSON_AddNumberToObject(tk, "output", (double)t->output);
    cJSON_AddNumberToObject(tk, "cache_read", (double)t->cache_read);
    cJSON_AddNumberToObject(tk, "cache_creation", (double)t->cache_creation);
    return o;
}

void cluster_status(const struct cluster *cl, cJSON *doc)
{
    if (!cl)
        return;
    uint64_t now = now_mono_ms();
    cJSON *o = cJSON_AddObjectToObject(doc, "cluster");
    cJSON_AddBoolToObject(o, "enabled", true);
    cJSON_AddStringToObject(o, "redis", link_name(cl->link));
    cJSON_AddBoolToObject(o, "shared", cl->link == LINK_UP);
    char addr[300];
    snprintf(addr, sizeof addr, strchr(cl->host ? cl->host : "", ':') ? "[%s]:%d/%d" : "%s:%d/%d",
             cl->host ? cl->host : "", cl->port, cl->db);
    cJSON_AddStringToObject(o, "address", addr);
    cJSON_AddStringToObject(o, "fleet", cl->fleet);
    cJSON_AddStringToObject(o, "instance", cl->instance);
    if (cl->down_since_ms)
        cJSON_AddNumberToObject(o, "down_for_s", (double)(now - cl->down_since_ms) / 1000.0);
    else
        cJSON_AddNullToObject(o, "down_for_s");
    cJSON_AddStringToObject(o, "last_error", cl->last_error);
    cJSON_AddNumberToObject(o, "lease_ms", cl->lease_ms);
    cJSON *held = cJSON_AddArrayToObject(o, "checking");
    for (size_t i = 0; cl->st && i < cl->n_leases && i < state_n_eps(cl->st); i++)
        if (cl->link == LINK_UP && cl->leases[i].held && now < cl->leases[i].held_until)
            cJSON_AddItemToArray(held, cJSON_CreateString(state_ep_name(cl->st, (int)i)));
    cJSON_AddNumberToObject(o, "published", (double)cl->published);
    cJSON_AddNumberToObject(o, "applied", (double)cl->applied);
    cJSON_AddNumberToObject(o, "dropped", (double)cl->dropped);
    cJSON_AddNumberToObject(o, "reconnects", (double)cl->reconnects);
    cJSON_AddNumberToObject(o, "queued", (double)cl->q_len);
    if (cl->have_totals) {
        cJSON *ft = total_json(&cl->total);
        cJSON *eps = cJSON_AddArrayToObject(ft, "endpoints");
        for (size_t i = 0; cl->st && i < cl->n_leases && i < state_n_eps(cl->st); i++) {
            cJSON *e = total_json(&cl->totals[i]);
            cJSON_AddStringToObject(e, "name", state_ep_name(cl->st, (int)i));
            cJSON_AddItemToArray(eps, e);
        }
        cJSON_AddItemToObject(o, "fleet_totals", ft);
    } else {
        cJSON_AddNullToObject(o, "fleet_totals");
    }
}

static void put_label(struct buf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            buf_appendf(b, "\\%c", *v);
        else if (*v == '\n')
            buf_append_str(b, "\\n");
        else
            buf_append(b, v, 1);
    }
}

void cluster_metrics(const struct cluster *cl, struct buf *out)
{
    if (!cl)
        return;
    uint64_t now = now_mono_ms();
    unsigned held = 0;
    for (size_t i = 0; i < cl->n_leases; i++)
        held += cl->link == LINK_UP && cl->leases[i].held && now < cl->leases[i].held_until;
    buf_appendf(out,
                "# HELP zephyr_cluster_redis_up 1 while the Redis link is up and state is "
                "shared; 0: running on local state.\n# TYPE zephyr_cluster_redis_up gauge\n"
                "zephyr_cluster_redis_up %d\n"
                "# HELP zephyr_cluster_checker_leases Endpoints this instance checks for the "
                "fleet.\n# TYPE zephyr_cluster_checker_leases gauge\n"
                "zephyr_cluster_checker_leases %u\n"
                "# HELP zephyr_cluster_messages_total Outcomes published to and applied from "
                "the fleet, and dropped.\n# TYPE zephyr_cluster_messages_total counter\n"
                "zephyr_cluster_messages_total{direction=\"published\"} %llu\n"
                "zephyr_cluster_messages_total{direction=\"applied\"} %llu\n"
                "zephyr_cluster_messages_total{direction=\"dropped\"} %llu\n"
                "# HELP zephyr_cluster_reconnects_total Connection attempts to Redis after "
                "the first.\n# TYPE zephyr_cluster_reconnects_total counter\n"
                "zephyr_cluster_reconnects_total %llu\n",
                cl->link == LINK_UP, held, cl->published, cl->applied, cl->dropped, cl->reconnects);
    if (!cl->have_totals || !cl->st)
        return;
    buf_append_str(out, "# HELP zephyr_fleet_requests Requests of the whole fleet per endpoint "
                        "(Redis counters; the instance's own are zephyr_requests_total).\n"
                        "# TYPE zephyr_fleet_requests gauge\n");
    for (size_t i = 0; i < cl->n_leases && i < state_n_eps(cl->st); i++) {
        buf_append_str(out, "zephyr_fleet_requests{endpoint=\"");
        put_label(out, state_ep_name(cl->st, (int)i));
        buf_appendf(out, "\"} %llu\n", cl->totals[i].requests);
    }
    buf_append_str(out, "# HELP zephyr_fleet_tokens Tokens of the whole fleet per endpoint "
                        "and kind (Redis counters).\n# TYPE zephyr_fleet_tokens gauge\n");
    for (size_t i = 0; i < cl->n_leases && i < state_n_eps(cl->st); i++) {
        const struct fleet_total *t = &cl->totals[i];
        static const char *const kinds[] = {"input", "output", "cache_read", "cache_creation"};
        unsigned long long v[] = {t->input, t->output, t->cache_read, t->cache_creation};
        for (int k = 0; k < 4; k++) {
            buf_append_str(out, "zephyr_fleet_tokens{endpoint=\"");
            put_label(out, state_ep_name(cl->st, (int)i));
            buf_appendf(out, "\",kind=\"%s\"} %llu\n", kinds[k], v[k]);
        }
    }
}
