/*
 * proxy: see proxy.h for the contract.
 *
 * States of a request (struct track.state):
 *   TRACK_WAITING    an attempt is running and nothing has been sent to the
 *                    client: a failure here may move to another endpoint
 *   TRACK_STREAMING  response headers went to the client; the request is
 *                    committed to its endpoint
 *   TRACK_DONE       finished; the record is unlinked and freed
 *
 * What decides a retry before the client has seen anything (preq_failed):
 * a transfer error (connect refused or reset, TLS, protocol), no response
 * headers within header_timeout_ms (stream_header_timeout_ms for streams),
 * the endpoint marked failed meanwhile by other traffic or a check, a usage
 * cap (read from the small error body), a status of 500, 502, 503, 504 or 529,
 * an event stream that reports `event: error` or ends before any content
 * while its opening events are held back, or a stall while they are held.
 * Each marks the endpoint failed and moves to the next usable endpoint of
 * the group, then of the group's fallback_groups in order (each with its
 * own token), within server.max_attempts and server.retry_budget_ms; a 529
 * may first be retried in place once (overloaded_retry_in_place_ms).  A
 * 429 makes the endpoint rest until its retry-after (or the
 * anthropic-ratelimit-*-reset time) and moves on.  With nowhere left to
 * go, the client gets one Anthropic-shaped error that lists what happened
 * on each attempt, its status naming the cause (preq_nowhere).
 *
 * Hold-back: the opening events of a stream (message_start, ping) are kept
 * until the first other event arrives or stream_holdback_ms passes, so that
 * a stream that fails right after its 200 can still move elsewhere.
 *
 * Every way a request ends goes through preq_finish(): the response
 * completed, the stream broke, a time limit passed, the client left, the
 * proxy shut down.  It writes the single log line for the request, unlinks
 * its track record and frees it.
 */
#include "proxy.h"

#include <cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "config.h"
#include "dheap.h"
#include "guard.h"
#include "hdr.h"
#include "log.h"
#include "metrics.h"
#include "sse.h"
#include "state.h"
#include "upstream.h"
#include "usage.h"
#include "util.h"

#define PROXY_TICK_MS 100
#define PROXY_RESP_HEADERS_CAP (64 * 1024)
#define PROXY_RESP_MAX_HDRS 256          /* both upstream clients stop at 200 */
#define PROXY_HOLD_CAP (256 * 1024)      /* held opening events, at most */
#define PROXY_DEFAULT_REST_S 5           /* a 429 without a reset time */
#define PROXY_INFLATE_CAP (32u << 20)    /* inflated for the usage readers, at most */
#define PROXY_SNIFF_CAP (8 * 1024)       /* a 4xx error body read before deciding, at most */
#define PROXY_SNIFF_INFLATED (64 * 1024) /* that body inflated, at most */
#define PROXY_LOG_FIELD_CAP \
    64 /* the asked model and the upstream's request-id,
                                         * as logged, at most (bytes with the NUL) */

struct proxy {
    uv_loop_t *loop;           /* borrows */
    struct upstream *up;       /* borrows */
    struct state *st;          /* borrows */
    const struct config *cfg;  /* borrows */
    struct metrics *metrics;   /* borrows; NULL: none */
    struct log_writer *reqlog; /* owns; the JSON-lines request log (written off the loop) */
    uv_timer_t tick;
    bool tick_running;
    struct dheap due; /* requests by when they next need looking at */
    void (*idle_cb)(void *ud);
    void *idle_ud;
    void (*end_cb)(void *ud);
    void *end_ud;
    /* What proxy_keep_warm() asked the upstream to keep warm: the current
     * endpoint and the next in line, as url and ca_file (owned copies, since
     * a reload frees the endpoints); NULL url: none. */
    struct proxy_warm {
        char *url, *ca_file;
    } warm[2];
};

struct preq {
    struct track t;           /* linked in state's list while in flight */
    struct dheap_node due;    /* in px->due while a time limit applies */
    struct upstream_xfer *ux; /* the running exchange; NULL between attempts */
    struct proxy *px;         /* borrows */
    struct state *st;         /* holds a reference: the state it started under */
    const struct config *cfg; /* borrows from st */
    struct conn *c;           /* borrows; NULL once the client is gone */
    /* the request, kept for replay */
    const char *method; /* borrows (static) */
    char *target;       /* owns */
    bool is_head;
    struct buf hdrs;        /* owns; the filtered client headers, "Name: value\r\n",
                                 * then the attempt's token line */
    size_t hdrs_client_len; /* where the client's headers end in hdrs */
    struct buf creds;       /* owns; the client's credential lines, sent only to
                                 * endpoints without a token of their own */
    struct buf body;        /* owns */
    char *session_key;      /* owns; NULL when not sticky */
    /* for the log lines, read from the request: there on errors too */
    char asked_model[PROXY_LOG_FIELD_CAP]; /* top-level "model" of the body; "" none */
    /* attempts */
    int ep;
    bool *tried;      /* owns; one per endpoint of the state (all groups) */
    size_t group0;    /* the current group when the request came */
    size_t chain_pos; /* 0: group0, k: group0's fallback_groups[k - 1] */
    unsigned attempts;
    struct buf attempt_log; /* owns; "name: what happened; " per failed attempt */
    unsigned n_failed, n_rate_limited, n_timed_out;
    uint64_t wait_until_ms; /* an in-place retry waits until then; 0 none */
    bool inplace_done;
    bool retry;   /* the attempt was stopped to try again */
    bool give_up; /* the attempt failed and nothing is left to try */
    /* the current attempt */
    uint64_t attempt_start_ms;
    uint64_t last_byte_ms;
    double ttfb_ms;
    int status;
    bool headers_done;
    bool holding; /* a 200 event stream whose opening is held */
    uint64_t hold_start_ms;
    struct buf held;             /* owns; the held bytes */
    bool hold_release;           /* set by the scanner: a content event arrived */
    bool hold_error;             /* set by the scanner: `event: error` while held */
    bool saw_start, saw_stop;    /* message_start / message_stop seen */
    bool saw_error;              /* the upstream sent `event: error` itself */
    bool committed;              /* response headers went to the client */
    bool sniffing;               /* reading a small 4xx error body (into held) to decide */
    bool sniff_done;             /* the error body was read and judged */
    bool is_stream;              /* the body asks for "stream": true */
    char *model;                 /* owns; the model a Messages body asks for, NULL if none */
    size_t model_off, model_len; /* where its JSON string (with quotes) sits in body */
    struct buf abody;            /* owns; the body with the model mapped, for one attempt */
    bool mapped;                 /* the current attempt's model was mapped */
    bool ep_failed;              /* the attempt's endpoint was marked failed meanwhile */
    bool paused;
    bool is_sse;
    bool is_json;
    struct buf resp_hdrs;   /* filtered response headers for the client */
    struct usage_json json; /* reads a JSON reply's usage as it passes; finishing it
                                 * unfed (-1) leaves p->usage alone */
    long long resp_len;
    char fail[160]; /* why the last attempt failed */
    struct sse_scanner sse;
    struct usage_inflate gz; /* owns zlib's state while a compressed reply is read */
    bool coded;              /* the reply is compressed: its usage is read through gz */
    bool unreadable;         /* its usage cannot be read (counted once) */
    struct usage usage;
    uint64_t bytes_to_client;
    char upstream_id[PROXY_LOG_FIELD_CAP]; /* the last answer's `request-id`; "" none */
};

/* The request that embeds *ptr as its member (a track in state's list, a
 * node in the deadline heap): one way back from a member to its request,
 * that does not depend on the member's place in the struct. */
#define preq_of(ptr, member) ((struct preq *)((char *)(ptr)-offsetof(struct preq, member)))

static const struct conn_handler_ops preq_ops;
static void preq_attempt(struct preq *p);
static void preq_next(struct preq *p);
static void preq_schedule(struct preq *p);
static void preq_scan_start(struct preq *p);

/* ---- finishing ---------------------------------------------------------- */

static void proxy_maybe_idle(struct proxy *px)
{
    if (state_n_tracks(px->st) == 0 && px->tick_running) {
        uv_timer_stop(&px->tick);
        px->tick_running = false;
    }
    if (px->end_cb)
        px->end_cb(px->end_ud);
    if (state_n_tracks(px->st) == 0 && px->idle_cb)
        px->idle_cb(px->idle_ud);
}

/* The path as logged: without the `beta=true` query parameter Claude Code
 * and the SDKs add to every request (noise in every line); other query
 * parameters stay.  Returns path itself or out's text. */
static const char *log_path(const char *path, struct buf *out)
{
    const char *q = strchr(path, '?');
    if (!q || !strstr(q, "beta=true"))
        return path;
    buf_append(out, path, (size_t)(q - path));
    char sep = '?';
    for (const char *a = q + 1; *a;) {
        const char *e = strchr(a, '&');
        size_t n = e ? (size_t)(e - a) : strlen(a);
        if (n && !(n == 9 && memcmp(a, "beta=true", 9) == 0)) {
            buf_append(out, &sep, 1);
            buf_append(out, a, n);
            sep = '&';
        }
        a += n + (e ? 1 : 0);
    }
    buf_append(out, "", 0);
    return out->data ? out->data : "";
}

/* Copies a value that came from a peer (the asked model, the upstream's
 * request-id) into a PROXY_LOG_FIELD_CAP buffer for the log lines: cut to
 * fit, and anything but visible ASCII (spaces, control bytes, quotes,
 * backslashes, UTF-8) shown as '?', so it cannot split or forge a line. */
static void log_field_copy(char *out, const char *v, size_t len)
{
    size_t n = len < PROXY_LOG_FIELD_CAP - 1 ? len : PROXY_LOG_FIELD_CAP - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        out[i] = ch > 0x20 && ch < 0x7f && ch != '"' && ch != '\\' ? (char)ch : '?';
    }
    out[n] = '\0';
}

/* One JSON line per request: no bodies, no headers, no secrets. */
static void preq_log_json(struct preq *p, int status, const char *outcome, uint64_t total_ms,
                          const char *path)
{
    struct proxy *px = p->px;
    struct state *st = p->st;
    struct buf b;
    buf_init(&b, SIZE_MAX);
    buf_appendf(&b, "{\"t\":%llu,\"id\":\"%s\",\"method\":", (unsigned long long)now_wall_ms(),
                p->t.idstr);
    buf_append_json_str(&b, p->method);
    buf_append(&b, ",\"path\":", 8);
    buf_append_json_str(&b, path);
    buf_append(&b, ",\"requested_model\":", 19);
    if (p->asked_model[0])
        buf_append_json_str(&b, p->asked_model);
    else
        buf_append(&b, "null", 4);
    buf_append_str(&b, p->is_stream ? ",\"stream\":true" : ",\"stream\":false");
    buf_append(&b, ",\"upstream_request_id\":", 23);
    if (p->upstream_id[0])
        buf_append_json_str(&b, p->upstream_id);
    else
        buf_append(&b, "null", 4);
    buf_append(&b, ",\"endpoint\":", 12);
    if (p->ep >= 0)
        buf_append_json_str(&b, state_ep_name(st, p->ep));
    else
        buf_append(&b, "null", 4);
    buf_appendf(&b, ",\"status\":%d,\"outcome\":", status);
    buf_append_json_str(&b, outcome);
    buf_appendf(&b, ",\"attempts\":%u,\"bytes_in\":%llu,\"bytes_out\":%llu,\"total_ms\":%llu,",
                p->attempts, (unsigned long long)p->t.bytes_in,
                (unsigned long long)p->bytes_to_client, (unsigned long long)total_ms);
    if (p->ttfb_ms >= 0)
        buf_appendf(&b, "\"ttfb_ms\":%.1f,", p->ttfb_ms);
    else
        buf_append(&b, "\"ttfb_ms\":null,", 15);
    buf_append(&b, "\"model\":", 8);
    buf_append_json_str(&b, p->usage.model);
    buf_appendf(&b,
                ",\"usage\":{\"input\":%lld,\"output\":%lld,\"cache_read\":%lld,"
                "\"cache_creation\":%lld}}\n",
                p->usage.input, p->usage.output, p->usage.cache_read, p->usage.cache_creation);
    log_writer_write(px->reqlog, b.data, b.len);
    buf_release(&b);
}

/* The one way a request ends; see the top of this file.  outcome is what
 * the log line says; status is what the client got (0: nothing). */
static void preq_finish(struct preq *p, int status, const char *outcome)
{
    struct proxy *px = p->px;
    struct state *st = p->st;
    uint64_t now = now_mono_ms();
    uint64_t total = now - p->t.start_ms;
    if (p->ux) {
        upstream_abort(p->ux);
        p->ux = NULL;
    }
    if (p->c) {
        conn_detach(p->c);
        p->c = NULL;
    }
    if (!p->is_sse)
        usage_json_finish(&p->json, &p->usage);
    if (p->mapped) /* usage is counted under the model the client asked for */
        snprintf(p->usage.model, sizeof p->usage.model, "%s", p->model);
    struct buf pathbuf;
    buf_init(&pathbuf, SIZE_MAX);
    const char *path = log_path(p->t.path, &pathbuf);
    if (log_enabled(LOG_INFO)) {
        const char *epname = p->ep >= 0 ? state_ep_name(st, p->ep) : "-";
        char ttfb[32] = "-";
        if (p->ttfb_ms >= 0)
            snprintf(ttfb, sizeof ttfb, "%.0fms", p->ttfb_ms);
        /* The model asked for; the reply's too when it names another
         * (a relay that maps models). */
        const char *asked = p->asked_model[0] ? p->asked_model : "-";
        char replied[PROXY_LOG_FIELD_CAP];
        log_field_copy(replied, p->usage.model, strlen(p->usage.model));
        bool other = replied[0] && strcmp(replied, asked) != 0;
        log_info("%s %s %s model=%s%s%s stream=%s %s -> %d %s %llu B ttfb=%s total=%llums "
                 "attempts=%u tokens=%lld/%lld cache_read=%lld cache_write=%lld request-id=%s",
                 p->t.idstr, p->method, path, asked, other ? "->" : "", other ? replied : "",
                 p->is_stream ? "yes" : "no", epname, status, outcome,
                 (unsigned long long)p->bytes_to_client, ttfb, (unsigned long long)total,
                 p->attempts, p->usage.input, p->usage.output, p->usage.cache_read,
                 p->usage.cache_creation, p->upstream_id[0] ? p->upstream_id : "-");
    }
    if (px->reqlog)
        preq_log_json(p, status, outcome, total, path);
    buf_release(&pathbuf);
    state_count_tokens(px->st, st, p->ep, &p->usage);
    state_note_served(st, p->ep, p->usage.model[0] ? p->usage.model : p->asked_model, &p->usage);
    if (px->metrics)
        metrics_request(
            px->metrics, p->ep >= 0 ? state_ep_name(st, p->ep) : NULL,
            state_group_name(st, p->ep >= 0 ? state_ep_group(st, p->ep) : state_current_group(st)),
            status, p->ttfb_ms, (double)total, p->attempts, &p->usage);
    state_track_remove(&p->t);
    dheap_remove(&px->due, &p->due);
    buf_release(&p->hdrs);
    buf_release(&p->creds);
    buf_release(&p->abody);
    free(p->model);
    free(p->target);
    free(p->session_key);
    free(p->tried);
    buf_release(&p->body);
    buf_release(&p->resp_hdrs);
    buf_release(&p->held);
    buf_release(&p->attempt_log);
    sse_release(&p->sse);
    usage_inflate_release(&p->gz);
    free(p);
    state_unref(st);
    /* A graceful switch may have been waiting for this request. */
    state_evaluate(px->st, now);
    proxy_maybe_idle(px);
}

/* ---- answering the client ----------------------------------------------- */

static void preq_error(struct preq *p, int status, const char *type, const char *msg,
                       const char *extra)
{
    if (p->c) {
        struct conn *c = p->c;
        conn_detach(c);
        p->c = NULL;
        conn_respond_error(c, status, type, msg, extra);
    }
    preq_finish(p, status, msg);
}

/* The stream broke after the client saw bytes: end it so that the client
 * knows.  An event stream gets an error event and a proper end; anything
 * else is cut without its terminating chunk. */
static void preq_break(struct preq *p, const char *why)
{
    if (p->c) {
        struct conn *c = p->c;
        conn_detach(c);
        p->c = NULL;
        if (p->is_sse) {
            char ev[512];
            int n = snprintf(ev, sizeof ev,
                             "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":"
                             "\"api_error\",\"message\":\"upstream stream interrupted: %s\"}}\n\n",
                             why);
            conn_write_body(c, ev, (size_t)n);
            conn_end_response(c);
        } else {
            conn_abort_response(c);
        }
    }
    preq_finish(p, p->status, why);
}

/*
 * The one rule for how long an endpoint rests after a 429: secs seconds,
 * or PROXY_DEFAULT_REST_S when the answer said nothing usable (secs < 0).
 * rest_end_ms() puts the end on the clock now_ms reads: the monotonic one
 * for the endpoint's rest (the 429 handler), the wall clock for what the
 * client is told (preq_nowhere).
 */
static long long rest_s(long long secs)
{
    return secs >= 0 ? secs : PROXY_DEFAULT_REST_S;
}

static uint64_t rest_end_ms(uint64_t now_ms, long long secs)
{
    return now_ms + (uint64_t)rest_s(secs) * 1000u;
}

/* The UTC time secs seconds from now, as 2026-11-26T03:10:00Z. */
static const char *utc_after(unsigned secs, char *out, size_t size)
{
    time_t when = (time_t)(rest_end_ms(now_wall_ms(), secs) / 1000u);
    struct tm tm;
    gmtime_r(&when, &tm);
    strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return out;
}

/*
 * A request has nowhere (left) to go: its attempts all failed, or nothing
 * was usable to begin with.  The one place that chooses the answer, from
 * the cause the group's endpoints last reported (state_why_unusable), so
 * that every request gets the same answer while the cause holds (the first
 * one, whose attempts met it, and those after it, which find nothing
 * usable).  Never "overloaded" for a wrong key or a TLS problem.
 *   every endpoint out of use rests after a 429   429 rate_limit_error,
 *                                                 Retry-After the earliest rest end
 *   each rests or last answered 529 or 503        529 overloaded_error, Retry-After
 *   every token refused                           401 authentication_error
 *   a certificate or TLS problem                  502 api_error naming the endpoint
 *   otherwise, when no attempt was made           503 api_error, Retry-After
 *   otherwise, every attempt timed out            504 timeout_error
 *   otherwise                                     502 api_error
 * The message lists what happened on each attempt, or why each endpoint is
 * out of use.
 */
static void preq_nowhere(struct preq *p)
{
    struct state *st = p->st;
    size_t gi = p->ep >= 0 ? state_ep_group(st, p->ep) : state_current_group(st);
    const char *gname = state_group_name(st, gi);
    struct state_unusable why;
    state_why_unusable(st, gi, now_mono_ms(), &why);
    if (why.cause == EP_CAUSE_DOWN && p->n_failed && p->n_rate_limited == p->n_failed)
        why.cause = EP_CAUSE_RATE_LIMITED; /* every attempt met a 429, none rests yet */
    const char *detail = p->attempts && p->attempt_log.data ? p->attempt_log.data : why.detail;
    unsigned secs = (unsigned)rest_s(why.retry_after_s ? (long long)why.retry_after_s : -1);
    char extra[64] = "", ts[32], what[96];
    int status;
    const char *type = "api_error";
    switch (why.cause) {
    case EP_CAUSE_RATE_LIMITED:
        status = 429;
        type = "rate_limit_error";
        snprintf(what, sizeof what, "every endpoint is rate-limited until %s",
                 utc_after(secs, ts, sizeof ts));
        break;
    case EP_CAUSE_OVERLOADED:
        /* An overloaded endpoint may take traffic again any moment: do not
         * send the client away for longer than a rest elsewhere lasts. */
        if (secs > PROXY_DEFAULT_REST_S)
            secs = PROXY_DEFAULT_REST_S;
        status = 529;
        type = "overloaded_error";
        snprintf(what, sizeof what, "every endpoint is overloaded");
        break;
    case EP_CAUSE_AUTH:
        status = 401;
        type = "authentication_error";
        snprintf(what, sizeof what, "every endpoint refused the token");
        break;
    case EP_CAUSE_TLS:
        status = 502;
        detail = why.detail;
        snprintf(what, sizeof what, "no endpoint can be reached over TLS");
        break;
    default:
        status = !p->attempts ? 503 : p->n_timed_out == p->n_failed ? 504 : 502;
        if (status == 504)
            type = "timeout_error";
        snprintf(what, sizeof what, "%s", p->attempts ? "" : "no usable endpoint");
        break;
    }
    char *msg;
    if (p->attempts)
        msg = xasprintf("all %u attempt(s) failed in group %s%s%s: %s", p->attempts, gname,
                        what[0] ? "; " : "", what, detail);
    else
        msg = xasprintf("%s in group %s: %s", what, gname, detail);
    if (status == 429 || status == 529 || status == 503)
        snprintf(extra, sizeof extra, "Retry-After: %u\r\n", secs);
    /* Drop the trailing "; " of the attempt log. */
    size_t ml = strlen(msg);
    if (ml > 2 && strcmp(msg + ml - 2, "; ") == 0)
        msg[ml - 2] = '\0';
    else if (ml > 3 && strcmp(msg + ml - 3, "; )") == 0)
        memmove(msg + ml - 3, ")", 2);
    preq_error(p, status, type, msg, extra[0] ? extra : NULL);
    free(msg);
}

/* Sends the response head (and what was held back) to the client. */
static void preq_commit(struct preq *p)
{
    struct state *st = p->st;
    uint64_t now = now_mono_ms();
    p->committed = true;
    p->holding = false;
    p->t.state = TRACK_STREAMING;
    if (p->status >= 200 && p->status < 300) {
        state_report(st, p->ep,
                     &(struct state_outcome){
                         .source = STATE_FROM_LIVE, .kind = STATE_OK, .ttfb_ms = p->ttfb_ms},
                     now, 0);
        state_bind_session(st, p->session_key, p->ep, now);
        state_served(st, p->ep, now);
    }
    const char *gname = state_group_name(st, state_ep_group(st, p->ep));
    if (state_ep_group(st, p->ep) != p->group0)
        log_info("%s served by fallback group %s (%s) for group %s", p->t.idstr, gname,
                 state_ep_name(st, p->ep), state_group_name(st, p->group0));
    if (!p->c)
        return;
    buf_append(&p->resp_hdrs, "x-zephyr-group: ", 16);
    buf_append_str(&p->resp_hdrs, gname);
    buf_append(&p->resp_hdrs, "\r\n", 2);
    buf_append(&p->resp_hdrs, "x-zephyr-endpoint: ", 19);
    buf_append_str(&p->resp_hdrs, state_ep_name(st, p->ep));
    buf_append(&p->resp_hdrs, "\r\nx-zephyr-attempts: ", 21);
    buf_append_ull(&p->resp_hdrs, p->attempts);
    buf_append(&p->resp_hdrs, "\r\n", 2);
    conn_start_response(p->c, p->status, p->resp_hdrs.data ? p->resp_hdrs.data : "",
                        p->resp_hdrs.len, p->resp_len);
    buf_release(&p->resp_hdrs); /* sent: a long stream keeps nothing of it */
    if (p->held.len) {
        conn_write_body(p->c, p->held.data, p->held.len);
        p->bytes_to_client += p->held.len;
        p->t.bytes_out += p->held.len;
    }
    buf_release(&p->held);
}

/* ---- building the upstream request -------------------------------------- */

/* Whether a credential header carries the proxy's access key (x-api-key:
 * KEY or Authorization: Bearer KEY).  Such a credential was meant for this
 * proxy, not for an upstream. */
static bool cred_is_access_key(const struct http_hdr *h, const char *key)
{
    if (!key)
        return false;
    if (h->name_len == 13 && h->value_len > 7 && strncasecmp(h->value, "Bearer ", 7) == 0)
        return guard_key_eq(h->value + 7, h->value_len - 7, key);
    return guard_key_eq(h->value, h->value_len, key);
}

/* The filtered client headers; the token is added per attempt, since the
 * endpoint (and so the group and account) is chosen per attempt.  The
 * client's own credentials go to creds, for endpoints without a token,
 * except one that is the access key: that one goes nowhere, or a fallback
 * group without a token would hand the key to its endpoint. */
static void build_headers(struct buf *out, struct buf *creds, const struct http_req *r,
                          const char *access_key)
{
    for (size_t i = 0; i < r->n_hdrs; i++) {
        const struct http_hdr *h = &r->hdrs[i];
        if (!http_req_forwardable(r, i, false))
            continue;
        bool cred = !http_req_forwardable(r, i, true);
        if (cred && cred_is_access_key(h, access_key))
            continue;
        struct buf *to = cred ? creds : out;
        buf_append(to, h->name, h->name_len);
        buf_append(to, ": ", 2);
        buf_append(to, h->value, h->value_len);
        buf_append(to, "\r\n", 2);
    }
}

/* ---- deciding about a failed attempt ------------------------------------ */

static bool status_retryable(int status)
{
    return status == 500 || status == 502 || status == 503 || status == 504 || status == 529;
}

/*
 * The next endpoint to try: the best untried usable one of the group at
 * chain position p->chain_pos, else of the next group in group0's
 * fallback_groups, and so on; each group is tried once per request.  *pos
 * gets the chain position of the endpoint found.  Returns -1 when none.
 */
static int preq_pick(const struct preq *p, uint64_t now, size_t *pos)
{
    struct state *st = p->st;
    const struct cfg_group *g0 = state_group_cfg(st, p->group0);
    for (size_t k = p->chain_pos; k <= g0->n_fallback; k++) {
        size_t gi = k == 0 ? p->group0 : g0->fallback[k - 1];
        size_t first, n = state_group_eps(st, gi, &first);
        if (n == 0)
            continue;
        /* Endpoints known not to serve the request's model count as tried. */
        const bool *tried = p->tried + first;
        bool *skip = NULL;
        for (size_t i = 0; p->model && i < n; i++) {
            if (tried[i] || state_ep_serves(st, (int)(first + i), p->model, now))
                continue;
            if (!skip) {
                skip = xmalloc(n * sizeof *skip);
                memcpy(skip, tried, n * sizeof *skip);
            }
            skip[i] = true;
        }
        int e = state_next_ep(st, (int)first, skip ? skip : tried, now);
        free(skip);
        if (e >= 0) {
            *pos = k;
            return e;
        }
    }
    return -1;
}

/* Whether another attempt is allowed and has somewhere to go. */
static bool preq_can_retry(struct preq *p)
{
    const struct config *cfg = p->cfg;
    uint64_t now = now_mono_ms();
    if (p->committed || !p->c || p->attempts >= (unsigned)cfg->max_attempts ||
        now - p->t.start_ms >= (uint64_t)cfg->retry_budget_ms)
        return false;
    size_t pos;
    p->tried[p->ep] = true;
    return preq_pick(p, now, &pos) >= 0;
}

enum fail_kind {
    FAIL_ERROR = 0,      /* transfer or protocol error, bad status */
    FAIL_TIMEOUT = 1,    /* no headers in time, or a stall */
    FAIL_RATE_LIMIT = 2, /* 429: the endpoint rests, it is not failed */
    FAIL_USAGE_CAP = 3,  /* balance, quota or usage limit exhausted: it rests */
    FAIL_MODEL = 4,      /* 404: the endpoint does not serve the model; not a failure */
};

/* Records a failed attempt (nothing reached the client) and sets either
 * p->retry or p->give_up.  The caller stops the transfer. */
static void preq_failed(struct preq *p, enum fail_kind kind, int status, const char *why)
{
    struct state *st = p->st;
    uint64_t now = now_mono_ms();
    snprintf(p->fail, sizeof p->fail, "%s", why);
    buf_appendf(&p->attempt_log, "%s: %s; ", state_ep_name(st, p->ep), why);
    p->n_failed++;
    if (kind == FAIL_RATE_LIMIT || kind == FAIL_USAGE_CAP)
        p->n_rate_limited++;
    else if (kind == FAIL_TIMEOUT)
        p->n_timed_out++;
    /* A 529 may get one more try on the same endpoint first. */
    if (status == 529 && !p->inplace_done && p->cfg->overloaded_retry_in_place_ms > 0 && p->c &&
        p->attempts < (unsigned)p->cfg->max_attempts) {
        p->inplace_done = true;
        p->wait_until_ms = now + (uint64_t)p->cfg->overloaded_retry_in_place_ms;
        p->retry = true;
        return;
    }
    if (kind != FAIL_RATE_LIMIT && kind != FAIL_USAGE_CAP && kind != FAIL_MODEL)
        state_report(
            st, p->ep,
            &(struct state_outcome){
                .source = STATE_FROM_LIVE, .kind = STATE_DOWN, .status = status, .error = why},
            now, 0);
    if (!preq_can_retry(p)) {
        p->give_up = true;
        return;
    }
    p->retry = true;
    if (p->px->metrics) {
        /* A short reason word: the free text would make a poor label. */
        const char *reason = kind == FAIL_TIMEOUT      ? "timeout"
                             : kind == FAIL_RATE_LIMIT ? "429"
                             : kind == FAIL_USAGE_CAP  ? "usage_cap"
                             : kind == FAIL_MODEL      ? "model"
                             : status == 529           ? "529"
                             : status >= 500           ? "5xx"
                             : status == 0             ? "transfer"
                                                       : "stream";
        metrics_retry(p->px->metrics, state_ep_name(st, p->ep), reason);
    }
}

static long long parse_retry_after(const char *v)
{
    while (*v == ' ')
        v++;
    if (!isdigit((unsigned char)*v))
        return -1;
    long long s = strtoll(v, NULL, 10);
    return s < 0 ? -1 : s;
}

/* Seconds from now until an RFC 3339 time such as 2026-11-26T03:10:00Z,
 * or -1 when it does not parse. */
static long long seconds_until_rfc3339(const char *v)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(v, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end)
        return -1;
    time_t t = timegm(&tm);
    long long d = (long long)t - (long long)(now_wall_ms() / 1000u);
    return d < 0 ? 0 : d + 1;
}

/* The value of a response header kept for the client, or NULL. */
static const char *resp_header(const struct preq *p, const char *name)
{
    size_t nl = strlen(name);
    for (const char *l = p->resp_hdrs.data; l && *l;) {
        if (strncasecmp(l, name, nl) == 0 && l[nl] == ':')
            return l + nl + 2;
        l = strstr(l, "\r\n");
        if (l)
            l += 2;
    }
    return NULL;
}

/* How long a 429 asks the endpoint to rest, in seconds. */
static long long rate_limit_rest_s(const struct preq *p)
{
    const char *v = resp_header(p, "retry-after");
    long long ra = v ? parse_retry_after(v) : -1;
    if (ra >= 0)
        return ra;
    static const char *resets[] = {
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-input-tokens-reset",
        "anthropic-ratelimit-output-tokens-reset",
    };
    for (size_t i = 0; i < sizeof resets / sizeof resets[0]; i++) {
        v = resp_header(p, resets[i]);
        long long s = v ? seconds_until_rfc3339(v) : -1;
        if (s > ra)
            ra = s;
    }
    return rest_s(ra);
}

/* ---- small error bodies ------------------------------------------------- */

/* Whether a status may carry an error body that changes the decision: a
 * usage cap (402; 400, 403 or 429 by their text) or a missing model (404). */
static bool status_sniffed(int status)
{
    return status == 400 || status == 402 || status == 403 || status == 404 || status == 429;
}

/* Phrases with which the official API and relays say that a balance,
 * quota or usage limit is exhausted (matched without regard to case).
 * Whole phrases only, never a bare "quota" or "billing": an error may
 * repeat the client's own words, and one request must not rest every
 * endpoint (see body_usage_cap). */
static const char *const usage_cap_phrases[] = {
    "credit balance is too low",
    "insufficient_quota",
    "insufficient quota",
    "insufficient balance",
    "usage limit",
    "quota exceeded",
    "exceeded your current quota",
    "quota exhausted",
    "out of credit",
    "\xe4\xbd\x99\xe9\xa2\x9d\xe4\xb8\x8d\xe8\xb6\xb3" /* 余额不足 */,
    "\xe9\xa2\x9d\xe5\xba\xa6\xe5\xb7\xb2\xe7\x94\xa8\xe5\xae\x8c" /* 额度已用完 */,
    "\xe9\xa2\x9d\xe5\xba\xa6\xe4\xb8\x8d\xe8\xb6\xb3" /* 额度不足 */,
    NULL,
};

/* A copy of an error message without its quoted parts (`...`, "...",
 * '...' opened at a word start, and the typographic double quotes): that
 * is where an API repeats what the client sent (a header value, a model
 * name), and the client's words must not decide.  An unclosed quote drops
 * the rest.  The caller frees. */
static char *message_unquoted(const char *m)
{
    size_t n = strlen(m), o = 0;
    char *out = xmalloc(n + 1);
    for (size_t i = 0; i < n;) {
        const char *close = NULL;
        size_t skip = 1;
        if (m[i] == '`' || m[i] == '"')
            close = m[i] == '`' ? "`" : "\"";
        else if (m[i] == '\'' && (i == 0 || !isalnum((unsigned char)m[i - 1])))
            close = "'";
        else if (strncmp(m + i, "\xe2\x80\x9c", 3) == 0) /* “ ... ” */
            close = "\xe2\x80\x9d", skip = 3;
        if (!close) {
            out[o++] = m[i++];
            continue;
        }
        const char *end = strstr(m + i + skip, close);
        if (!end)
            break;
        out[o++] = ' ';
        i = (size_t)(end - m) + strlen(close);
    }
    out[o] = '\0';
    return out;
}

/*
 * Reads an Anthropic-shaped error body {"type":"error","error":{"type",
 * "message"}}.  Returns true when it says that a usage cap is reached:
 * always for 402 and billing_error (or a relay's insufficient_quota type);
 * never for 404; for a 400 invalid_request_error only with Anthropic's own
 * "credit balance is too low"; else when the message, without its quoted
 * parts, has one of usage_cap_phrases.  why gets a short, printable reason.
 */
static bool body_usage_cap(int status, const char *body, size_t len, char *why, size_t wlen)
{
    if (status == 404)
        return false;
    cJSON *j = body && len ? cJSON_ParseWithLength(body, len) : NULL;
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(err, "type");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
    const char *t = cJSON_IsString(type) ? type->valuestring : "";
    const char *m = cJSON_IsString(msg) ? msg->valuestring : "";
    bool cap =
        status == 402 || strcmp(t, "billing_error") == 0 || strcmp(t, "insufficient_quota") == 0;
    if (!cap) {
        char *own = message_unquoted(m);
        if (status == 400 && strcmp(t, "invalid_request_error") == 0)
            cap = strcasestr(own, "credit balance is too low") != NULL;
        else
            for (size_t k = 0; !cap && usage_cap_phrases[k]; k++)
                cap = strcasestr(own, usage_cap_phrases[k]) != NULL;
        free(own);
    }
    if (cap) {
        /* The message is the upstream's text: keep it short and printable. */
        char clean[64];
        size_t n = 0;
        for (const char *q = m; *q && n + 1 < sizeof clean; q++)
            clean[n++] = (unsigned char)*q < 0x20 || *q == '"' || *q == '\\' ? ' ' : *q;
        clean[utf8_cut(clean, n)] = '\0';
        snprintf(why, wlen, "%d %s%s%s", status, t[0] ? t : "error", clean[0] ? ": " : "", clean);
    }
    cJSON_Delete(j);
    return cap;
}

/* Whether a 404 body says that the model is not found (not some path). */
static bool body_model_missing(const char *body, size_t len)
{
    cJSON *j = body && len ? cJSON_ParseWithLength(body, len) : NULL;
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(err, "type");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
    bool missing = cJSON_IsString(type) && strcmp(type->valuestring, "not_found_error") == 0 &&
                   cJSON_IsString(msg) && strcasestr(msg->valuestring, "model");
    cJSON_Delete(j);
    return missing;
}

/* How long a usage cap rests the endpoint: until the reset the response
 * names (retry-after, anthropic-ratelimit-*-reset), else usage_cap_rest_s. */
static long long usage_cap_rest_s(const struct preq *p)
{
    const char *v = resp_header(p, "retry-after");
    long long s = v ? parse_retry_after(v) : -1;
    static const char *resets[] = {
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-input-tokens-reset",
        "anthropic-ratelimit-output-tokens-reset",
    };
    for (size_t i = 0; s < 0 && i < sizeof resets / sizeof resets[0]; i++) {
        v = resp_header(p, resets[i]);
        long long r = v ? seconds_until_rfc3339(v) : -1;
        if (r > s)
            s = r;
    }
    return s > 0 ? s : p->cfg->usage_cap_rest_s;
}

static void sniff_sink(void *ud, const char *data, size_t len)
{
    buf_append(ud, data, len); /* capped: what does not fit is not judged */
}

/* The held error body as text: a compressed one (SDKs ask for gzip, and
 * relays compress errors too) is inflated into plain, up to
 * PROXY_SNIFF_INFLATED bytes.  Returns the bytes to judge; held itself is
 * untouched, since it may still go to the client as it came. */
static const struct buf *preq_sniffed_text(const struct preq *p, struct buf *plain)
{
    const char *ce = resp_header(p, "content-encoding");
    size_t cl = ce ? strcspn(ce, "\r") : 0;
    if (!ce || usage_coding_identity(ce, cl))
        return &p->held;
    struct usage_inflate gz = {0};
    if (usage_inflate_init(&gz, ce, cl, PROXY_SNIFF_INFLATED) == 0 &&
        usage_inflate_feed(&gz, p->held.data, p->held.len, sniff_sink, plain) != USAGE_INFLATE_OK)
        buf_reset(plain);
    usage_inflate_release(&gz);
    return plain;
}

/* Judges the error body (text: held, inflated when compressed); see
 * preq_judge_error_body. */
static bool preq_judge_error_text(struct preq *p, const struct buf *body)
{
    char why[160];
    uint64_t now = now_mono_ms();
    p->sniffing = false;
    p->sniff_done = true;
    if (p->status == 404 && p->model && body_model_missing(body->data, body->len)) {
        /* Not a failure of the endpoint: try one that may serve the model;
         * when none is left, the client gets this 404 as it is. */
        state_report(p->st, p->ep,
                     &(struct state_outcome){.source = STATE_FROM_LIVE,
                                             .kind = STATE_MODEL_MISSING,
                                             .status = 404,
                                             .model = p->model},
                     now, 0);
        if (!preq_can_retry(p))
            return false;
        snprintf(why, sizeof why, "404 model %s not served", p->model);
        buf_reset(&p->held);
        preq_failed(p, FAIL_MODEL, 404, why);
        return true;
    }
    if (!body_usage_cap(p->status, body->data, body->len, why, sizeof why))
        return false;
    long long rest = usage_cap_rest_s(p);
    state_report(p->st, p->ep,
                 &(struct state_outcome){.source = STATE_FROM_LIVE,
                                         .kind = STATE_USAGE_CAPPED,
                                         .status = p->status,
                                         .error = why,
                                         .rest_until_ms = now + (uint64_t)rest * 1000u},
                 now, 0);
    buf_reset(&p->held);
    preq_failed(p, FAIL_USAGE_CAP, p->status, why);
    return true;
}

/* The small error body of a 4xx (held in p->held) is complete: a usage cap
 * rests the endpoint and fails over.  Returns true when it decided so (the
 * caller stops the transfer); false: decide as for any response. */
static bool preq_judge_error_body(struct preq *p)
{
    struct buf plain;
    buf_init(&plain, PROXY_SNIFF_INFLATED);
    bool decided = preq_judge_error_text(p, preq_sniffed_text(p, &plain));
    buf_release(&plain);
    return decided;
}

/* ---- upstream callbacks ------------------------------------------------- */

/* The endpoint's time to answer: from the end of the upload when the
 * upstream client knows it, else from the start of the attempt.  Sending a
 * large body can take long, and that time says nothing of the endpoint's
 * speed; counted in, it made the selection switch back and forth. */
static double preq_ttfb_ms(const struct preq *p, uint64_t now)
{
    uint64_t sent = p->ux ? upstream_sent_ms(p->ux) : 0;
    uint64_t from = sent >= p->attempt_start_ms && sent <= now ? sent : p->attempt_start_ms;
    return (double)(now - from);
}

/* Response headers have all arrived: fail over, hold back or commit.
 * Returns false to stop the transfer. */
static bool preq_headers_done(struct preq *p)
{
    struct state *st = p->st;
    uint64_t now = now_mono_ms();
    p->headers_done = true;
    if (!p->sniff_done)
        p->ttfb_ms = preq_ttfb_ms(p, now);
    p->last_byte_ms = now;
    preq_scan_start(p);

    if (!p->sniff_done && p->c && status_sniffed(p->status)) {
        /* Read the small error body first (into held, up to
         * PROXY_SNIFF_CAP): what it says decides whether this is a usage
         * cap to fail over from.  This runs again once it was judged. */
        p->sniffing = true;
        return true;
    }
    if (p->status == 429) {
        long long rest = rate_limit_rest_s(p);
        state_report(st, p->ep,
                     &(struct state_outcome){.source = STATE_FROM_LIVE,
                                             .kind = STATE_RATE_LIMITED,
                                             .status = 429,
                                             .rest_until_ms = rest_end_ms(now, rest)},
                     now, 0);
        char why[64];
        snprintf(why, sizeof why, "429 rate limited for %llds", rest);
        preq_failed(p, FAIL_RATE_LIMIT, 429, why);
        return false;
    }
    if (status_retryable(p->status)) {
        char why[64];
        snprintf(why, sizeof why, "upstream answered %d", p->status);
        preq_failed(p, FAIL_ERROR, p->status, why);
        return false;
    }
    const struct cfg_group *cg;
    const struct cfg_endpoint *ce = state_ep_cfg(st, p->ep, &cg);
    if ((p->status == 401 || p->status == 403) && config_ep_token(cg, ce))
        state_report(st, p->ep,
                     &(struct state_outcome){.source = STATE_FROM_LIVE,
                                             .kind = STATE_AUTH_FAILED,
                                             .status = p->status,
                                             .error = p->status == 401 ? "token refused (401)"
                                                                       : "token refused (403)"},
                     now, 0);
    if (!p->c)
        return false;
    if (p->status == 200 && p->is_sse && p->cfg->stream_holdback_ms > 0) {
        p->holding = true;
        p->hold_start_ms = now;
        return true;
    }
    preq_commit(p);
    return true;
}

/* The upstream's id for the attempt, for the log lines: Anthropic's
 * `request-id`, else the `x-request-id` many relays send.  The last
 * attempt that got an answer names it (an attempt that failed to connect
 * has none to give). */
static void preq_note_request_id(struct preq *p, const struct upstream_hdr *hdrs, size_t n)
{
    p->upstream_id[0] = '\0';
    for (size_t i = 0; i < n; i++)
        if (strn_ieq(hdrs[i].name, hdrs[i].name_len, "request-id") ||
            (!p->upstream_id[0] && strn_ieq(hdrs[i].name, hdrs[i].name_len, "x-request-id")))
            log_field_copy(p->upstream_id, hdrs[i].value, hdrs[i].value_len);
}

static bool on_head(void *ud, int status, const struct upstream_hdr *hdrs, size_t n)
{
    struct preq *p = ud;
    /* hdr_resp_filter() decides the client's framing for both upstream
     * clients; the views are copied so that it needs nothing of upstream.h. */
    struct hdr_field f[PROXY_RESP_MAX_HDRS];
    if (n > PROXY_RESP_MAX_HDRS) {
        snprintf(p->fail, sizeof p->fail, "more than %d response headers from upstream",
                 PROXY_RESP_MAX_HDRS);
        return false;
    }
    f[0] = (struct hdr_field){0}; /* GCC 12 cannot tell only n entries are read */
    for (size_t i = 0; i < n; i++)
        f[i] = (struct hdr_field){hdrs[i].name, hdrs[i].name_len, hdrs[i].value, hdrs[i].value_len};
    struct hdr_resp r;
    if (hdr_resp_filter(status, f, n, &p->resp_hdrs, &r) != 0) {
        buf_reset(&p->resp_hdrs);
        snprintf(p->fail, sizeof p->fail, "malformed response head from upstream: %s", r.why);
        return false;
    }
    p->status = status;
    preq_note_request_id(p, hdrs, n);
    p->resp_len = r.content_length;
    p->is_sse = r.is_sse;
    p->is_json = r.is_json;
    bool go_on = preq_headers_done(p);
    preq_schedule(p); /* the hold-back may end before the header deadline */
    return go_on;
}

static int on_sse_event(void *ud, const struct sse_event *ev)
{
    struct preq *p = ud;
    usage_from_sse_event(ev, &p->usage);
    if (strn_ieq(ev->name, ev->name_len, "message_start"))
        p->saw_start = true;
    else if (strn_ieq(ev->name, ev->name_len, "message_stop"))
        p->saw_stop = true;
    else if (strn_ieq(ev->name, ev->name_len, "error"))
        p->saw_error = true;
    if (p->holding) {
        if (strn_ieq(ev->name, ev->name_len, "error")) {
            p->hold_error = true;
            return 1;
        }
        if (!strn_ieq(ev->name, ev->name_len, "message_start") &&
            !strn_ieq(ev->name, ev->name_len, "ping"))
            p->hold_release = true;
    }
    return 0;
}

/* Whether the reply's usage is read at all: event streams, and JSON
 * replies that succeeded. */
static bool preq_reads_usage(const struct preq *p)
{
    return p->is_sse || (p->is_json && p->status < 300);
}

/* The reply's usage cannot be read: counted, never silently dropped. */
static void preq_unreadable(struct preq *p, const char *reason)
{
    usage_inflate_release(&p->gz);
    p->unreadable = true;
    log_info("%s usage of the reply from %s not counted: %s", p->t.idstr,
             state_ep_name(p->st, p->ep), reason);
    if (p->px->metrics)
        metrics_usage_unreadable(p->px->metrics, state_ep_name(p->st, p->ep), reason);
}

/* Called once the response head is in: a compressed reply gets an inflater
 * for the usage readers; a coding zlib cannot read is counted. */
static void preq_scan_start(struct preq *p)
{
    const char *ce = resp_header(p, "content-encoding");
    if (!preq_reads_usage(p) || !ce)
        return;
    size_t cl = strcspn(ce, "\r");
    if (usage_coding_identity(ce, cl))
        return;
    p->coded = true;
    if (usage_inflate_init(&p->gz, ce, cl, PROXY_INFLATE_CAP) != 0)
        preq_unreadable(p, "encoding");
}

/* Plain reply bytes to the usage readers (and the hold-back's scanner). */
static void preq_scan_plain(void *ud, const char *data, size_t len)
{
    struct preq *p = ud;
    if (p->is_sse)
        sse_feed(&p->sse, data, len, on_sse_event, p);
    else
        usage_json_feed(&p->json, data, len);
}

/* Reply bytes as the upstream sent them: a compressed reply is inflated
 * into a copy for the readers; what goes to the client is untouched.  An
 * event stream is inflated until its message_stop, which ends its usage. */
static void preq_scan(struct preq *p, const char *data, size_t len)
{
    if (!preq_reads_usage(p))
        return;
    if (!p->coded) {
        preq_scan_plain(p, data, len);
        return;
    }
    if (p->unreadable || (p->is_sse && p->saw_stop))
        return;
    enum usage_inflate_rc rc = usage_inflate_feed(&p->gz, data, len, preq_scan_plain, p);
    if (rc != USAGE_INFLATE_OK)
        preq_unreadable(p, rc == USAGE_INFLATE_TOO_LARGE ? "too_large" : "corrupt");
}

static size_t on_body(void *ud, const char *data, size_t len)
{
    struct preq *p = ud;
    if (!p->c)
        return 0;
    if (!p->committed && !p->holding && !p->sniffing) {
        /* Body bytes with no head sent or held for them (an upstream client that
         * let a 101's raw bytes through): writing them would put bytes on
         * the client's connection that no head frames. */
        snprintf(p->fail, sizeof p->fail, "response body before a final response head");
        return 0;
    }
    p->last_byte_ms = now_mono_ms();
    if (p->sniffing) {
        if (p->held.len + len <= PROXY_SNIFF_CAP && buf_append(&p->held, data, len) == 0)
            return len;
        /* Too large for an error body of interest: judge what came, then
         * decide as for any response (held goes out with the head). */
        if (preq_judge_error_body(p) || !preq_headers_done(p))
            return 0;
        if (!p->committed)
            return 0;
    }
    if (p->holding && buf_append(&p->held, data, len) == 0) {
        preq_scan(p, data, len);
        if (p->hold_error) {
            /* The scanner stopped on the error event; nothing went out. */
            preq_failed(p, FAIL_ERROR, 529, "event: error right after the stream opened");
            return 0;
        }
        if (p->hold_release)
            preq_commit(p);
        return len;
    }
    if (p->holding)
        preq_commit(p); /* more than PROXY_HOLD_CAP to hold: let it all through */
    if (conn_queued(p->c) > CONN_HIGH_WATER) {
        /* The client is slow: the upstream client keeps this data and
         * stops reading until conn tells us the queue drained. */
        p->paused = true;
        return UPSTREAM_PAUSE;
    }
    p->t.bytes_out += len;
    p->bytes_to_client += len;
    preq_scan(p, data, len);
    conn_write_body(p->c, data, len);
    return len;
}

/* ---- attempts ----------------------------------------------------------- */

/* The attempt's exchange is over (or was stopped for a time limit). */
static void preq_attempt_done(struct preq *p, enum upstream_rc rc, const char *msg)
{
    p->ux = NULL;
    if (!p->retry && !p->give_up && rc == UPSTREAM_OK && p->sniffing) {
        /* The whole error body is here: a usage cap fails over; anything
         * else is decided (and, when it goes to the client, committed with
         * the body in held) as it would have been at the head. */
        if (preq_judge_error_body(p) || !preq_headers_done(p)) {
            if (!p->retry && !p->give_up && p->c)
                preq_failed(p, FAIL_ERROR, p->status, p->fail[0] ? p->fail : "upstream error");
            goto decided;
        }
    }
    if (!p->retry && !p->give_up) {
        if (rc == UPSTREAM_OK && (p->committed || p->holding)) {
            if (p->holding && !(p->saw_start && !p->saw_stop)) {
                preq_commit(p); /* a short stream ended inside the hold-back */
            } else if (p->holding) {
                preq_failed(p, FAIL_ERROR, 502, "stream ended before any content");
                goto decided;
            }
            if (p->is_sse && p->saw_start && !p->saw_stop && !p->saw_error) {
                /* A clean close without message_stop is not a success.  (An
                 * upstream error event already told the client so.) */
                state_report(p->st, p->ep,
                             &(struct state_outcome){.source = STATE_FROM_LIVE,
                                                     .kind = STATE_DOWN,
                                                     .error = "stream ended without message_stop"},
                             now_mono_ms(), 0);
                preq_break(p, "stream ended without message_stop");
                return;
            }
            struct conn *c = p->c;
            p->c = NULL;
            if (c) {
                conn_detach(c);
                conn_end_response(c);
            }
            preq_finish(p, p->status, "ok");
            return;
        }
        if (p->committed) {
            snprintf(p->fail, sizeof p->fail, "%s", msg);
            state_report(p->st, p->ep,
                         &(struct state_outcome){
                             .source = STATE_FROM_LIVE, .kind = STATE_DOWN, .error = p->fail},
                         now_mono_ms(), 0);
            preq_break(p, p->fail);
            return;
        }
        if (!p->c) {
            preq_finish(p, 0, "client gone");
            return;
        }
        /* Nothing reached the client: a connection or protocol failure. */
        char why[sizeof p->fail];
        snprintf(why, sizeof why, "%s", rc == UPSTREAM_ERR_ABORTED && p->fail[0] ? p->fail : msg);
        preq_failed(p, rc == UPSTREAM_ERR_TIMEOUT ? FAIL_TIMEOUT : FAIL_ERROR, 0, why);
    }
decided:
    if (p->give_up || !p->c) {
        if (!p->c)
            preq_finish(p, 0, "client gone");
        else
            preq_nowhere(p);
        return;
    }
    preq_next(p);
}

static void on_done(void *ud, enum upstream_rc rc, const char *msg)
{
    preq_attempt_done(ud, rc, msg);
}

/* Starts the next attempt after p->retry was set. */
static void preq_next(struct preq *p)
{
    struct state *st = p->st;
    uint64_t now = now_mono_ms();
    p->retry = false;
    state_count_retry(p->px->st); /* the totals live in the newest state */
    if (p->wait_until_ms) {
        /* In place, once its wait is over: the tick starts it. */
        log_info("%s attempt %u on %s failed (%s); retrying it in %d ms", p->t.idstr, p->attempts,
                 state_ep_name(st, p->ep), p->fail, p->cfg->overloaded_retry_in_place_ms);
        p->t.state = TRACK_WAITING;
        preq_schedule(p);
        return;
    }
    p->tried[p->ep] = true;
    int next = preq_pick(p, now, &p->chain_pos);
    if (next < 0) {
        preq_nowhere(p);
        return;
    }
    log_info("%s attempt %u on %s failed (%s); retrying on %s", p->t.idstr, p->attempts,
             state_ep_name(st, p->ep), p->fail, state_ep_name(st, next));
    state_track_route(&p->t, p->st, next);
    p->ep = next;
    preq_attempt(p);
}

static const struct upstream_cbs preq_up_cbs = {
    .head = on_head,
    .body = on_body,
    .done = on_done,
};

static void preq_attempt(struct preq *p)
{
    struct state *st = p->st;
    const struct config *cfg = p->cfg;
    const struct cfg_group *g;
    const struct cfg_endpoint *ce = state_ep_cfg(st, p->ep, &g);
    const char *token = config_ep_token(g, ce);

    p->attempts++;
    p->t.attempts = p->attempts;
    p->attempt_start_ms = now_mono_ms();
    p->status = 0;
    p->headers_done = false;
    p->holding = p->hold_release = p->hold_error = false;
    p->saw_start = p->saw_stop = p->saw_error = false;
    p->give_up = false;
    p->sniffing = p->sniff_done = false;
    p->ep_failed = false;
    p->paused = false;
    p->ttfb_ms = -1;
    p->resp_len = -1;
    p->is_sse = p->is_json = false;
    p->fail[0] = '\0';
    memset(&p->usage, 0, sizeof p->usage);
    buf_reset(&p->resp_hdrs);
    buf_reset(&p->held);
    usage_json_init(&p->json);
    usage_inflate_release(&p->gz);
    p->coded = p->unreadable = false;
    sse_release(&p->sse);
    sse_init(&p->sse, 256 * 1024);
    p->t.state = TRACK_WAITING;

    /* The token of the attempt's endpoint (its own, else its group's)
     * follows the client's headers for this attempt only: the next attempt
     * may be in another group or account.  Without one, the client's own
     * credentials go. */
    p->hdrs.len = p->hdrs_client_len;
    if (p->hdrs.data)
        p->hdrs.data[p->hdrs.len] = '\0';
    if (token) {
        if (config_ep_auth(g, ce) == AUTH_BEARER)
            buf_append(&p->hdrs, "Authorization: Bearer ", 22);
        else
            buf_append(&p->hdrs, "x-api-key: ", 11);
        buf_append(&p->hdrs, token, strlen(token));
        buf_append(&p->hdrs, "\r\n", 2);
    } else if (p->creds.len) {
        buf_append(&p->hdrs, p->creds.data, p->creds.len);
    }
    for (size_t i = 0; i < ce->n_headers; i++) {
        buf_append_str(&p->hdrs, ce->headers[i].name);
        buf_append(&p->hdrs, ": ", 2);
        buf_append_str(&p->hdrs, ce->headers[i].value);
        buf_append(&p->hdrs, "\r\n", 2);
    }
    /* The model the endpoint knows the client's model by, spliced into a
     * copy of the body for this attempt. */
    const char *mapped = p->model ? config_model_for(g, ce, p->model) : NULL;
    p->mapped = mapped && strcmp(mapped, p->model) != 0;
    buf_reset(&p->abody);
    if (p->mapped) {
        buf_append(&p->abody, p->body.data, p->model_off);
        buf_append_json_str(&p->abody, mapped);
        buf_append(&p->abody, p->body.data + p->model_off + p->model_len,
                   p->body.len - p->model_off - p->model_len);
    }
    const struct buf *body = p->mapped ? &p->abody : &p->body;
    char *url = hdr_url_join(state_ep_url(st, p->ep), p->target);
    bool bodyless = p->is_head || (strcmp(p->method, "GET") == 0 && p->body.len == 0);
    struct upstream_request req = {
        .method = p->method,
        .url = url,
        .headers = p->hdrs.data,
        .headers_len = p->hdrs.len,
        .body = body->data,
        .body_len = body->len,
        .send_length = !bodyless && (body->len || strcmp(p->method, "POST") == 0),
        .connect_timeout_ms = cfg->connect_timeout_ms,
        /* Event streams come in small pieces: a small receive buffer keeps
         * the memory of thousands of idle streams low. */
        .recv_buffer = 2048,
        .proxy = ce->proxy,
        .ca_file = ce->ca_file,
        .keep_warm = true,
    };
    p->ux = upstream_start(p->px->up, &req, &preq_up_cbs, p);
    free(url);
    if (!p->ux) {
        preq_error(p, 502, "api_error", "could not start the upstream request", NULL);
        return;
    }
    preq_schedule(p);
}

/* ---- connection events -------------------------------------------------- */

static void preq_client_gone(void *h)
{
    struct preq *p = h;
    p->c = NULL;
    preq_finish(p, p->committed ? p->status : 499, "client closed the connection");
}

static void preq_drained(void *h)
{
    struct preq *p = h;
    if (p->paused && p->ux) {
        p->paused = false;
        p->last_byte_ms = now_mono_ms();
        upstream_resume(p->ux);
    }
}

static const struct conn_handler_ops preq_ops = {
    .client_gone = preq_client_gone,
    .drained = preq_drained,
};

/* ---- time limits ---------------------------------------------------------- */

/* Stops the running attempt for a time limit; fails over when the client
 * has seen nothing yet. */
static void preq_timeout(struct preq *p, const char *why)
{
    upstream_abort(p->ux);
    p->ux = NULL;
    if (p->committed) {
        state_report(
            p->st, p->ep,
            &(struct state_outcome){.source = STATE_FROM_LIVE, .kind = STATE_DOWN, .error = why},
            now_mono_ms(), 0);
        preq_break(p, why);
        return;
    }
    preq_failed(p, FAIL_TIMEOUT, 0, why);
    preq_attempt_done(p, UPSTREAM_ERR_TIMEOUT, why);
}

/* Streams get their headers within seconds from a working endpoint; other
 * requests may legitimately think for minutes first. */
static int preq_header_timeout(const struct preq *p)
{
    return p->is_stream ? p->cfg->stream_header_timeout_ms : p->cfg->header_timeout_ms;
}

/* When p next needs looking at, or 0 when no time limit applies (between
 * attempts, finishing).  The stream deadline counts from the last byte as
 * of now; on_tick() moves it when bytes came since, so a byte costs no
 * heap work. */
static uint64_t preq_deadline(const struct preq *p)
{
    const struct config *cfg = p->cfg;
    if (!p->ux)
        return p->wait_until_ms;
    if (!p->headers_done && p->ep_failed)
        return p->attempt_start_ms; /* now: move on */
    if (!p->headers_done)
        return p->attempt_start_ms + (uint64_t)preq_header_timeout(p);
    uint64_t stall = p->last_byte_ms + (uint64_t)cfg->idle_timeout_ms;
    uint64_t hold_end = p->hold_start_ms + (uint64_t)cfg->stream_holdback_ms;
    return p->holding && hold_end < stall ? hold_end : stall;
}

/* Called where a deadline may come earlier than the one queued: a new
 * attempt, an in-place wait, the start of a hold-back.  A deadline queued
 * too early is harmless (on_tick() moves it); one queued too late is not. */
static void preq_schedule(struct preq *p)
{
    uint64_t at = preq_deadline(p);
    if (at)
        dheap_set(&p->px->due, &p->due, at);
    else
        dheap_remove(&p->px->due, &p->due);
}

/* Looks only at the requests whose deadline has come: with thousands of
 * streams open, a tick costs what is due, not what is open. */
static void on_tick(uv_timer_t *t)
{
    struct proxy *px = t->data;
    uint64_t now = now_mono_ms();
    char why[96];
    struct dheap_node *n;
    while ((n = dheap_first(&px->due)) && n->at <= now) {
        struct preq *p = preq_of(n, due);
        const struct config *cfg = p->cfg;
        uint64_t at = preq_deadline(p);
        if (at > now) { /* bytes came since it was queued */
            dheap_set(&px->due, n, at);
            continue;
        }
        dheap_remove(&px->due, n);
        if (!p->ux) {
            if (p->wait_until_ms) {
                p->wait_until_ms = 0;
                preq_attempt(p);
            }
        } else if (!p->headers_done && p->ep_failed) {
            snprintf(why, sizeof why, "endpoint marked failed while waiting for headers");
            preq_timeout(p, why);
        } else if (!p->headers_done) {
            snprintf(why, sizeof why, "no response headers within %d ms", preq_header_timeout(p));
            preq_timeout(p, why);
        } else if (p->holding && now - p->hold_start_ms >= (uint64_t)cfg->stream_holdback_ms) {
            preq_commit(p);
            preq_schedule(p);
        } else if (p->paused) {
            /* The client holds the stream back: no stall; look again later. */
            dheap_set(&px->due, n, now + (uint64_t)cfg->idle_timeout_ms);
        } else {
            snprintf(why, sizeof why, "stream stalled: no bytes for %d ms", cfg->idle_timeout_ms);
            preq_timeout(p, why);
        }
    }
}

/* ---- public -------------------------------------------------------------- */

/* State hook: endpoint ep of st was just marked failed.  Requests waiting
 * for its headers are made due now; the tick moves them on (never from
 * inside the state call that marked it). */
static void proxy_ep_failed(void *ud, struct state *st, int ep)
{
    struct proxy *px = ud;
    uint64_t now = now_mono_ms();
    if (st != px->st)
        return;
    for (struct track *t = state_tracks(st); t; t = t->next) {
        struct preq *p = (struct preq *)t;
        if (t->ep != ep || p->st != st || !p->ux || p->headers_done || p->committed)
            continue;
        p->ep_failed = true;
        dheap_set(&px->due, &p->due, now);
    }
}

static void proxy_open_reqlog(struct proxy *px)
{
    log_writer_close(px->reqlog);
    px->reqlog = NULL;
    if (px->cfg->request_log) {
        px->reqlog = log_writer_open(px->cfg->request_log, true);
        if (!px->reqlog)
            log_error("server.request_log: cannot open %s for appending: %s; requests are "
                      "not logged there",
                      px->cfg->request_log,
                      errno == ENXIO ? "a FIFO or socket with no reader" : strerror(errno));
    }
}

struct proxy *proxy_new(uv_loop_t *loop, struct upstream *up, struct state *st,
                        const struct config *cfg)
{
    struct proxy *px = xcalloc(1, sizeof *px);
    px->loop = loop;
    px->up = up;
    px->st = st;
    px->cfg = cfg;
    uv_timer_init(loop, &px->tick);
    px->tick.data = px;
    dheap_init(&px->due);
    proxy_open_reqlog(px);
    state_set_failed_cb(st, proxy_ep_failed, px);
    return px;
}

void proxy_set_config(struct proxy *px, struct state *st, const struct config *cfg)
{
    px->st = st;
    px->cfg = cfg;
    state_set_failed_cb(st, proxy_ep_failed, px);
    proxy_open_reqlog(px);
}

static bool str_eq(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}


void proxy_keep_warm(struct proxy *px, uint64_t now_ms)
{
    struct state *st = px->st;
    int eps[2] = {state_current_ep(st), state_next_in_line(st, now_ms)};
    const char *url[2] = {NULL, NULL}, *ca[2] = {NULL, NULL};
    for (size_t i = 0; i < 2; i++) {
        const struct cfg_endpoint *ce = eps[i] >= 0 ? state_ep_cfg(st, eps[i], NULL) : NULL;
        if (ce && !ce->proxy) { /* through an endpoint's proxy: libcurl, nothing to keep */
            url[i] = state_ep_url(st, eps[i]);
            ca[i] = ce->ca_file;
        }
    }
    bool same = true;
    for (size_t i = 0; i < 2; i++)
        same = same && str_eq(url[i], px->warm[i].url) && str_eq(ca[i], px->warm[i].ca_file);
    if (same)
        return;
    /* Off first, then on: two endpoints may share a pool (same origin). */
    for (size_t i = 0; i < 2; i++) {
        struct proxy_warm *w = &px->warm[i];
        bool kept = false;
        for (size_t j = 0; j < 2; j++)
            kept = kept || (url[j] && str_eq(w->url, url[j]) && str_eq(w->ca_file, ca[j]));
        if (w->url && !kept)
            upstream_warm(px->up, w->url, NULL, w->ca_file, false);
    }
    for (size_t i = 0; i < 2; i++) {
        struct proxy_warm *w = &px->warm[i];
        free(w->url);
        free(w->ca_file);
        w->url = url[i] ? xstrdup(url[i]) : NULL;
        w->ca_file = ca[i] ? xstrdup(ca[i]) : NULL;
        if (url[i])
            upstream_warm(px->up, url[i], NULL, ca[i], true);
    }
}

void proxy_set_metrics(struct proxy *px, struct metrics *m)
{
    px->metrics = m;
}

static void on_tick_closed(uv_handle_t *h)
{
    free(h->data);
}

void proxy_free(struct proxy *px)
{
    if (!px)
        return;
    px->idle_cb = NULL;
    px->end_cb = NULL;
    while (state_tracks(px->st)) {
        struct preq *p = preq_of(state_tracks(px->st), t);
        if (p->committed)
            preq_break(p, "proxy shutting down");
        else
            preq_error(p, 503, "api_error", "proxy shutting down", NULL);
    }
    dheap_release(&px->due);
    log_writer_close(px->reqlog);
    px->reqlog = NULL;
    for (size_t i = 0; i < 2; i++) {
        free(px->warm[i].url);
        free(px->warm[i].ca_file);
    }
    uv_timer_stop(&px->tick);
    uv_close((uv_handle_t *)&px->tick, on_tick_closed);
}

size_t proxy_active(const struct proxy *px)
{
    return state_n_tracks(px->st);
}

void proxy_on_idle(struct proxy *px, void (*cb)(void *ud), void *ud)
{
    px->idle_cb = cb;
    px->idle_ud = ud;
}

void proxy_on_request_end(struct proxy *px, void (*cb)(void *ud), void *ud)
{
    px->end_cb = cb;
    px->end_ud = ud;
}

/* Finds `"key"` as a JSON key (not inside a string: a quote inside a
 * string is escaped) at or after p; returns the position after it. */
static const char *json_key(const char *p, const char *end, const char *key)
{
    size_t kl = strlen(key);
    while (p < end) {
        const char *q = memmem(p, (size_t)(end - p), key, kl);
        if (!q)
            return NULL;
        if (q > p && q[-1] != '\\') {
            const char *r = q + kl;
            while (r < end && (*r == ' ' || *r == '\t' || *r == '\n' || *r == '\r'))
                r++;
            if (r < end && *r == ':')
                return r + 1;
        }
        p = q + kl;
    }
    return NULL;
}

/* metadata.user_id of a Messages request body, for sticky sessions when the
 * client sends no X-Claude-Code-Session-Id; NULL when there is none.  A
 * scan, not a parse: bodies are large and only this one field is needed. */
static char *body_user_id(const char *body, size_t len)
{
    if (!body || len == 0)
        return NULL;
    const char *end = body + len;
    const char *m = json_key(body, end, "\"metadata\"");
    if (!m)
        return NULL;
    const char *lim = end - m > 1024 ? m + 1024 : end;
    const char *u = json_key(m, lim, "\"user_id\"");
    if (!u)
        return NULL;
    while (u < lim && (*u == ' ' || *u == '\t'))
        u++;
    if (u >= lim || *u != '"')
        return NULL;
    const char *v = ++u;
    while (u < lim && *u != '"' && *u != '\\')
        u++;
    if (u >= lim || *u != '"' || u == v || u - v > 256)
        return NULL;
    return xstrndup(v, (size_t)(u - v));
}

/* Skips a JSON string starting at b[i] == '"'; returns the index after its
 * closing quote, or len when it does not end. */
static size_t json_skip_string(const char *b, size_t len, size_t i)
{
    for (i++; i < len; i++) {
        if (b[i] == '\\')
            i++;
        else if (b[i] == '"')
            return i + 1;
    }
    return len;
}

static size_t json_skip_ws(const char *b, size_t len, size_t i)
{
    while (i < len && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r'))
        i++;
    return i;
}

/* Whether the JSON string text s (without its quotes, escapes undone
 * here) spells the ASCII name key: a member name may be written with
 * escapes ("mod\u0065l"), and the upstream's parser reads it as "model". */
static bool json_name_is(const char *s, size_t n, const char *key)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++, k++) {
        unsigned c = (unsigned char)s[i];
        if (c == '\\') {
            if (++i >= n)
                return false;
            static const char esc[] = "\"\"\\\\//b\bf\fn\nr\rt\t";
            const char *m = s[i] == 'u' || s[i] == '\0' ? NULL : strchr(esc, s[i]);
            if (s[i] == 'u') {
                c = 0;
                for (size_t h = 1; h <= 4; h++) {
                    if (i + h >= n || !isxdigit((unsigned char)s[i + h]))
                        return false;
                    char d = s[i + h];
                    c = c * 16 +
                        (unsigned)(isdigit((unsigned char)d) ? d - '0' : (d | 0x20) - 'a' + 10);
                }
                i += 4;
            } else if (m && (m - esc) % 2 == 0) {
                c = (unsigned char)m[1];
            } else {
                return false;
            }
        }
        if (key[k] == '\0' || c != (unsigned char)key[k])
            return false;
    }
    return key[k] == '\0';
}

/*
 * The value of key in the top-level object of body, when it is a string or
 * a scalar: *v and *vlen get its text (a string with its quotes).  A scan
 * that follows strings and nesting only, so that a "model" or "stream" key
 * inside messages or tool schemas is never taken for the request's own.
 * A name spelled with escapes counts as the name.  Where the name repeats,
 * the last one counts, as with the parsers upstreams use; *count (when not
 * NULL) gets how many there are.  Returns false when body is not an object
 * or has no such scalar key.
 */
static bool json_top_value_n(const char *b, size_t len, const char *key, const char **v,
                             size_t *vlen, size_t *count)
{
    size_t klen = strlen(key);
    size_t found = 0;
    if (count)
        *count = 0;
    size_t i = b ? json_skip_ws(b, len, 0) : 0;
    if (!b || i >= len || b[i] != '{')
        return false;
    int depth = 0;
    bool want_key = true;
    while (i < len) {
        char ch = b[i];
        if (ch == '"') {
            size_t s = i + 1;
            i = json_skip_string(b, len, i);
            if (i >= len)
                break;
            if (depth != 1 || !want_key)
                continue;
            size_t e = i - 1;
            size_t j = json_skip_ws(b, len, i);
            if (j >= len || b[j] != ':')
                break;
            want_key = false;
            i = j + 1;
            if (memchr(b + s, '\\', e - s) ? !json_name_is(b + s, e - s, key)
                                           : e - s != klen || memcmp(b + s, key, klen) != 0)
                continue;
            found++;
            j = json_skip_ws(b, len, i);
            if (j >= len || b[j] == '{' || b[j] == '[') {
                *vlen = 0; /* not a scalar: this one counts as none */
                continue;
            }
            size_t vs = j;
            if (b[j] == '"') {
                j = json_skip_string(b, len, j);
                if (j >= len && b[len - 1] != '"')
                    break;
            } else {
                while (j < len && !strchr(",}] \t\r\n", b[j]))
                    j++;
            }
            *v = b + vs;
            *vlen = j - vs;
            continue;
        }
        if (ch == '{' || ch == '[')
            depth++;
        else if (ch == '}' || ch == ']')
            depth--;
        else if (ch == ',' && depth == 1)
            want_key = true;
        if (depth <= 0 && ch != '{')
            break;
        i++;
    }
    if (count)
        *count = found;
    return found > 0 && *vlen > 0;
}

static bool json_top_value(const char *b, size_t len, const char *key, const char **v, size_t *vlen)
{
    *vlen = 0;
    return json_top_value_n(b, len, key, v, vlen, NULL);
}

void proxy_handle(struct proxy *px, struct conn *c, struct http_req *req)
{
    const char *mv;
    size_t mvl, n_model;
    mvl = 0;
    json_top_value_n(req->body.data, req->body.len, "model", &mv, &mvl, &n_model);
    if (n_model > 1 && strcmp(req->method, "POST") == 0) {
        /* Which one counts depends on the upstream's parser; mapping or
         * routing by one while the upstream reads another would be wrong,
         * so such a body is refused. */
        conn_respond_error(c, 400, "invalid_request_error",
                           "the request body has more than one top-level \"model\" member; "
                           "send exactly one",
                           NULL);
        return;
    }
    struct state *st = px->st;
    uint64_t now = now_mono_ms();
    struct preq *p = xcalloc(1, sizeof *p);
    p->px = px;
    p->st = st;
    p->cfg = px->cfg;
    state_ref(st);
    p->c = c;
    p->ep = -1;
    p->ttfb_ms = -1;
    p->resp_len = -1;
    p->method = req->method;
    p->is_head = req->is_head;
    p->target = xstrdup(req->target);
    /* The body moves to the request; conn starts a fresh one. */
    p->body = req->body;
    buf_init(&req->body, (size_t)p->cfg->max_body_bytes);
    buf_init(&p->resp_hdrs, PROXY_RESP_HEADERS_CAP);
    buf_init(&p->held, PROXY_HOLD_CAP);
    buf_init(&p->attempt_log, 4096);
    sse_init(&p->sse, 256 * 1024);
    state_track_add(st, &p->t, p->method, p->target, now);
    p->t.bytes_in = p->body.len;
    const char *sv;
    size_t svl;
    p->is_stream = json_top_value(p->body.data, p->body.len, "stream", &sv, &svl) && svl == 4 &&
                   memcmp(sv, "true", 4) == 0;
    buf_init(&p->abody, SIZE_MAX);
    size_t plen = strcspn(p->target, "?");
    if (strcmp(p->method, "POST") == 0 &&
        ((plen == 12 && strncmp(p->target, "/v1/messages", 12) == 0) ||
         (plen == 25 && strncmp(p->target, "/v1/messages/count_tokens", 25) == 0)) &&
        json_top_value(p->body.data, p->body.len, "model", &sv, &svl) && svl >= 3 && sv[0] == '"' &&
        sv[svl - 1] == '"') {
        /* Only plain printable names: they are compared, logged and mapped. */
        bool plain = svl - 2 < 200;
        for (size_t i = 1; plain && i + 1 < svl; i++)
            plain = sv[i] > 0x20 && sv[i] < 0x7f && sv[i] != '\\' && sv[i] != '"';
        if (plain) {
            p->model = xstrndup(sv + 1, svl - 2);
            p->model_off = (size_t)(sv - p->body.data);
            p->model_len = svl;
        }
    }
    if (json_top_value(p->body.data, p->body.len, "model", &sv, &svl) && svl >= 2 && sv[0] == '"')
        log_field_copy(p->asked_model, sv + 1, svl - 2);
    conn_attach(c, p, &preq_ops);
    if (!px->tick_running) {
        uv_timer_start(&px->tick, on_tick, PROXY_TICK_MS, PROXY_TICK_MS);
        px->tick_running = true;
    }

    const struct http_hdr *sid = http_req_header(req, "x-claude-code-session-id");
    if (sid && sid->value_len)
        p->session_key = xstrndup(sid->value, sid->value_len);
    else
        p->session_key = body_user_id(p->body.data, p->body.len);

    p->group0 = state_current_group(st);
    p->tried = xcalloc(state_n_eps(st) ? state_n_eps(st) : 1, sizeof *p->tried);
    buf_init(&p->hdrs, SIZE_MAX);
    buf_init(&p->creds, SIZE_MAX);
    build_headers(&p->hdrs, &p->creds, req, p->cfg->access_key);
    p->hdrs_client_len = p->hdrs.len;
    int ep = state_route(st, p->session_key, now);
    if (ep >= 0 && p->model && !state_ep_serves(st, ep, p->model, now)) {
        /* Another endpoint may serve the model; if none, ask this one anyway. */
        int other = preq_pick(p, now, &p->chain_pos);
        if (other >= 0)
            ep = other;
    }
    if (ep < 0) /* nothing in the current group: its fallback groups, in order */
        ep = preq_pick(p, now, &p->chain_pos);
    if (ep < 0) {
        preq_nowhere(p);
        return;
    }
    state_track_route(&p->t, p->st, ep);
    p->ep = ep;
    preq_attempt(p);
}
