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
 * What decides a retry before the client has seen anything: a transfer
 * error (connect refused or reset, TLS, no headers within
 * header_timeout_ms) or a status of 500, 502, 503, 504 or 529 marks the
 * endpoint failed and moves to the next usable endpoint; a 429 makes the
 * endpoint rest for its retry-after and moves on.  With nowhere left to go
 * the client gets the upstream's own answer, or 502/504 when there was none.
 *
 * Every way a request ends goes through preq_finish(): the response
 * completed, the stream broke, a time limit passed, the client left, the
 * proxy shut down.  It writes the single log line for the request, unlinks
 * its track record and frees it.
 */
#include "proxy.h"

#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "fetch.h"
#include "hdr.h"
#include "log.h"
#include "sse.h"
#include "state.h"
#include "usage.h"
#include "util.h"

#define PROXY_TICK_MS 100
#define PROXY_MAX_ATTEMPTS 3
#define PROXY_RESP_HEADERS_CAP (64 * 1024)

struct proxy {
    uv_loop_t *loop;            /* borrows */
    struct fetch *fetch;        /* borrows */
    struct state *st;           /* borrows */
    const struct config *cfg;   /* borrows */
    uv_timer_t tick;
    bool tick_running;
    void (*idle_cb)(void *ud);
    void *idle_ud;
    void (*end_cb)(void *ud);
    void *end_ud;
};

struct preq {
    struct track t;             /* linked in state's list while in flight */
    struct fetch_xfer x;        /* x.easy owned */
    struct proxy *px;           /* borrows */
    struct conn *c;             /* borrows; NULL once the client is gone */
    /* the request, kept for replay */
    const char *method;         /* borrows (static) */
    char *target;               /* owns */
    bool is_head;
    struct curl_slist *hdrs;    /* owns; the filtered client headers */
    struct curl_slist *attempt_hdrs; /* owns; hdrs + the token, for the attempt running */
    struct buf body;            /* owns */
    char *session_key;          /* owns; NULL when not sticky */
    /* the current attempt */
    int ep;
    bool *tried;                /* owns; one per endpoint of the group */
    unsigned attempts;
    uint64_t attempt_start_ms;
    uint64_t last_byte_ms;
    double ttfb_ms;
    int status;
    bool headers_done;
    bool committed;
    bool retry;                 /* the attempt was stopped to try elsewhere */
    bool paused;
    bool timed_out;
    bool is_sse;
    struct buf resp_hdrs;       /* filtered response headers for the client */
    long long resp_len;
    char fail[160];             /* why the last attempt failed */
    struct sse_scanner sse;
    struct usage usage;
    uint64_t bytes_to_client;
};

static const struct conn_handler_ops preq_ops;
static void preq_attempt(struct preq *p);

/* ---- finishing ---------------------------------------------------------- */

static void proxy_maybe_idle(struct proxy *px)
{
    if (px->st->n_tracks == 0 && px->tick_running) {
        uv_timer_stop(&px->tick);
        px->tick_running = false;
    }
    if (px->end_cb)
        px->end_cb(px->end_ud);
    if (px->st->n_tracks == 0 && px->idle_cb)
        px->idle_cb(px->idle_ud);
}

/* The one way a request ends; see the top of this file.  outcome is what
 * the log line says; status is what the client got (0: nothing). */
static void preq_finish(struct preq *p, int status, const char *outcome)
{
    struct proxy *px = p->px;
    struct state *st = px->st;
    uint64_t now = now_mono_ms();
    if (p->x.added)
        fetch_remove(px->fetch, &p->x);
    if (p->c) {
        conn_detach(p->c);
        p->c = NULL;
    }
    const char *epname = p->ep >= 0 ? st->eps[p->ep].name : "-";
    char ttfb[32] = "-";
    if (p->ttfb_ms >= 0)
        snprintf(ttfb, sizeof ttfb, "%.0fms", p->ttfb_ms);
    log_info("%s %s %s %s -> %d %s %llu B ttfb=%s total=%llums attempts=%u", p->t.idstr,
             p->method, p->t.path, epname, status, outcome,
             (unsigned long long)p->bytes_to_client, ttfb,
             (unsigned long long)(now - p->t.start_ms), p->attempts);
    if (p->usage.input || p->usage.output) {
        st->live_tokens.input += p->usage.input;
        st->live_tokens.output += p->usage.output;
        st->live_tokens.cache_read += p->usage.cache_read;
        st->live_tokens.cache_creation += p->usage.cache_creation;
        if (p->ep >= 0) {
            struct ep *e = &st->eps[p->ep];
            e->live_tokens.input += p->usage.input;
            e->live_tokens.output += p->usage.output;
            e->live_tokens.cache_read += p->usage.cache_read;
            e->live_tokens.cache_creation += p->usage.cache_creation;
        }
    }
    state_track_remove(st, &p->t);
    if (p->x.easy)
        curl_easy_cleanup(p->x.easy);
    curl_slist_free_all(p->hdrs);
    curl_slist_free_all(p->attempt_hdrs);
    free(p->target);
    free(p->session_key);
    free(p->tried);
    buf_release(&p->body);
    buf_release(&p->resp_hdrs);
    sse_release(&p->sse);
    free(p);
    /* A graceful switch may have been waiting for this request. */
    state_evaluate(st, now);
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

/* ---- building the upstream request -------------------------------------- */

static bool header_dropped(const struct http_req *r, const struct http_hdr *h, bool strip_creds)
{
    const struct http_hdr *conn = http_req_header(r, "connection");
    if (hdr_is_hop_by_hop(h->name, h->name_len))
        return true;
    if (conn && hdr_connection_lists(conn->value, conn->value_len, h->name, h->name_len))
        return true;
    if (strn_ieq(h->name, h->name_len, "host") || strn_ieq(h->name, h->name_len, "content-length") ||
        strn_ieq(h->name, h->name_len, "expect") ||
        strn_ieq(h->name, h->name_len, "x-zephyr-key") ||
        strn_ieq(h->name, h->name_len, "x-zephyr-admin-key"))
        return true;
    if (strip_creds && hdr_is_credential(h->name, h->name_len))
        return true;
    return false;
}

/* The filtered client headers; the token is added per attempt, since the
 * endpoint (and so the group) is chosen per attempt. */
static struct curl_slist *build_headers(const struct http_req *r, bool strip_creds)
{
    struct curl_slist *l = NULL;
    struct buf line;
    buf_init(&line, SIZE_MAX);
    bool has_accept = false, has_ctype = false;
    for (size_t i = 0; i < r->n_hdrs; i++) {
        const struct http_hdr *h = &r->hdrs[i];
        if (header_dropped(r, h, strip_creds))
            continue;
        if (strn_ieq(h->name, h->name_len, "accept"))
            has_accept = true;
        if (strn_ieq(h->name, h->name_len, "content-type"))
            has_ctype = true;
        buf_reset(&line);
        buf_append(&line, h->name, h->name_len);
        if (h->value_len) {
            buf_append(&line, ": ", 2);
            buf_append(&line, h->value, h->value_len);
        } else {
            buf_append(&line, ";", 1); /* curl's syntax for an empty value */
        }
        l = curl_slist_append(l, line.data);
    }
    /* Keep curl from adding headers the client did not send. */
    l = curl_slist_append(l, "Expect:");
    if (!has_accept)
        l = curl_slist_append(l, "Accept:");
    if (!has_ctype)
        l = curl_slist_append(l, "Content-Type:");
    buf_release(&line);
    return l;
}

/* ---- curl callbacks ----------------------------------------------------- */

static bool status_retryable(int status)
{
    return status == 500 || status == 502 || status == 503 || status == 504 || status == 529;
}

static bool preq_can_retry(struct preq *p)
{
    if (p->committed || !p->c || p->attempts >= PROXY_MAX_ATTEMPTS)
        return false;
    struct state *st = p->px->st;
    p->tried[st->eps[p->ep].index] = true;
    return state_next_ep(st, p->ep, p->tried, now_mono_ms()) >= 0;
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

/* Response headers have all arrived: retry elsewhere or commit. Returns
 * false to stop the transfer. */
static bool preq_headers_done(struct preq *p)
{
    struct proxy *px = p->px;
    struct state *st = px->st;
    uint64_t now = now_mono_ms();
    p->headers_done = true;
    p->ttfb_ms = (double)(now - p->attempt_start_ms);
    p->last_byte_ms = now;

    if (p->status == 429) {
        const char *v = resp_header(p, "retry-after");
        long long ra = v ? parse_retry_after(v) : -1;
        state_rate_limited(st, p->ep, now + (uint64_t)(ra >= 0 ? ra : 5) * 1000u, now);
        if (preq_can_retry(p)) {
            snprintf(p->fail, sizeof p->fail, "429 rate limited");
            p->retry = true;
            return false;
        }
    } else if (status_retryable(p->status)) {
        snprintf(p->fail, sizeof p->fail, "upstream answered %d", p->status);
        state_live_failure(st, p->ep, p->fail, now);
        if (preq_can_retry(p)) {
            p->retry = true;
            return false;
        }
    } else if (p->status == 401 || p->status == 403) {
        const struct group *g = &st->groups[st->eps[p->ep].group];
        if (g->cfg->token)
            state_live_auth_failure(st, p->ep, p->status == 401 ? "token refused (401)"
                                                                : "token refused (403)", now);
    } else if (p->status < 500) {
        state_live_success(st, p->ep, p->ttfb_ms, now);
        state_bind_session(st, p->session_key, p->ep, now);
    }

    if (!p->c)
        return false;
    buf_appendf(&p->resp_hdrs, "x-zephyr-endpoint: %s\r\nx-zephyr-attempts: %u\r\n",
                st->eps[p->ep].name, p->attempts);
    p->committed = true;
    p->t.state = TRACK_STREAMING;
    conn_start_response(p->c, p->status, p->resp_hdrs.data ? p->resp_hdrs.data : "",
                        p->resp_hdrs.len, p->resp_len);
    return true;
}

static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    struct preq *p = ud;
    size_t len = size * n;
    if (p->headers_done)
        return len; /* trailers: not forwarded */
    while (len && (data[len - 1] == '\n' || data[len - 1] == '\r'))
        len--;
    if (len == 0) {
        if (p->status >= 100 && p->status < 200) {
            /* An interim response: the real one follows. */
            p->status = 0;
            buf_reset(&p->resp_hdrs);
            p->resp_len = -1;
            p->is_sse = false;
            return size * n;
        }
        return preq_headers_done(p) ? size * n : 0;
    }
    if (p->status == 0) {
        const char *sp = memchr(data, ' ', len);
        if (len < 5 || strncmp(data, "HTTP/", 5) != 0 || !sp)
            return 0;
        p->status = atoi(sp + 1);
        if (p->status < 100 || p->status > 999)
            return 0;
        return size * n;
    }
    const char *colon = memchr(data, ':', len);
    if (!colon)
        return size * n;
    size_t nl = (size_t)(colon - data);
    const char *v = colon + 1;
    size_t vl = len - nl - 1;
    while (vl && (*v == ' ' || *v == '\t')) {
        v++;
        vl--;
    }
    if (!hdr_name_valid(data, nl) || !hdr_value_valid(v, vl))
        return 0; /* a malformed upstream header is a protocol error */
    if (strn_ieq(data, nl, "content-length")) {
        p->resp_len = strtoll(v, NULL, 10);
        return size * n;
    }
    if (hdr_is_hop_by_hop(data, nl))
        return size * n;
    if (strn_ieq(data, nl, "content-type") && vl >= 17 &&
        strncasecmp(v, "text/event-stream", 17) == 0)
        p->is_sse = true;
    if (buf_append(&p->resp_hdrs, data, nl) != 0 || buf_append(&p->resp_hdrs, ": ", 2) != 0 ||
        buf_append(&p->resp_hdrs, v, vl) != 0 || buf_append(&p->resp_hdrs, "\r\n", 2) != 0)
        return 0; /* over PROXY_RESP_HEADERS_CAP */
    return size * n;
}

static int on_sse_event(void *ud, const struct sse_event *ev)
{
    struct preq *p = ud;
    usage_from_sse_event(ev, &p->usage);
    return 0;
}

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    struct preq *p = ud;
    size_t len = size * n;
    if (!p->c)
        return 0;
    if (conn_queued(p->c) > CONN_HIGH_WATER) {
        /* The client is slow: curl keeps this data and stops reading the
         * upstream until conn tells us the queue drained. */
        p->paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    p->last_byte_ms = now_mono_ms();
    p->t.bytes_out += len;
    p->bytes_to_client += len;
    if (p->is_sse)
        sse_feed(&p->sse, data, len, on_sse_event, p);
    conn_write_body(p->c, data, len);
    return len;
}

/* ---- attempts ----------------------------------------------------------- */

static void on_done(struct fetch_xfer *x, CURLcode rc)
{
    struct preq *p = (struct preq *)((char *)x - offsetof(struct preq, x));
    struct state *st = p->px->st;
    uint64_t now = now_mono_ms();

    if (p->retry) {
        p->retry = false;
        st->retries_total++;
        log_info("%s attempt %u on %s failed (%s); retrying elsewhere", p->t.idstr, p->attempts,
                 st->eps[p->ep].name, p->fail);
        int next = state_next_ep(st, p->ep, p->tried, now);
        if (next < 0 || !p->c) {
            preq_error(p, 502, "api_error", "no endpoint left to retry on", NULL);
            return;
        }
        state_track_route(st, &p->t, next);
        p->ep = next;
        preq_attempt(p);
        return;
    }
    if (rc == CURLE_OK && p->committed) {
        if (p->usage.input == 0 && p->usage.output == 0 && !p->is_sse)
            (void)0; /* non-streaming usage is read by the metrics work */
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
        snprintf(p->fail, sizeof p->fail, "%s", curl_easy_strerror(rc));
        state_live_failure(st, p->ep, p->fail, now);
        preq_break(p, p->fail);
        return;
    }
    /* Nothing reached the client: a connection-level failure. */
    if (!p->fail[0] || rc != CURLE_WRITE_ERROR)
        snprintf(p->fail, sizeof p->fail, "%s", curl_easy_strerror(rc));
    if (!p->c) {
        preq_finish(p, 0, "client gone");
        return;
    }
    state_live_failure(st, p->ep, p->fail, now);
    if (preq_can_retry(p)) {
        p->retry = true;
        on_done(x, rc);
        return;
    }
    char msg[256];
    snprintf(msg, sizeof msg, "upstream %s: %s", st->eps[p->ep].name, p->fail);
    preq_error(p, 502, "api_error", msg, NULL);
}

static void preq_attempt(struct preq *p)
{
    struct proxy *px = p->px;
    struct state *st = px->st;
    const struct config *cfg = px->cfg;
    const struct ep *e = &st->eps[p->ep];
    const struct cfg_group *g = st->groups[e->group].cfg;

    if (p->x.easy)
        curl_easy_cleanup(p->x.easy);
    p->x.easy = fetch_easy_new(px->fetch);
    p->x.done = on_done;
    p->attempts++;
    p->t.attempts = p->attempts;
    p->attempt_start_ms = now_mono_ms();
    p->status = 0;
    p->headers_done = false;
    p->ttfb_ms = -1;
    p->resp_len = -1;
    p->is_sse = false;
    p->fail[0] = '\0';
    p->timed_out = false;
    buf_reset(&p->resp_hdrs);
    p->t.state = TRACK_WAITING;

    CURL *h = p->x.easy;
    char *url = hdr_url_join(e->url, p->target);
    curl_easy_setopt(h, CURLOPT_URL, url);
    free(url);

    /* The token of the endpoint's group goes on a copy of the list: the client's
     * list stays as it is for the next attempt.  curl copies nothing from
     * the list, so it lives until the attempt is over. */
    struct curl_slist *hl = NULL;
    for (struct curl_slist *it = p->hdrs; it; it = it->next)
        hl = curl_slist_append(hl, it->data);
    if (g->token) {
        char *th = g->auth == AUTH_BEARER ? xasprintf("Authorization: Bearer %s", g->token)
                                          : xasprintf("x-api-key: %s", g->token);
        hl = curl_slist_append(hl, th);
        free(th);
    }
    curl_slist_free_all(p->attempt_hdrs);
    p->attempt_hdrs = hl;
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);

    if (p->is_head) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (strcmp(p->method, "GET") == 0 && p->body.len == 0) {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else {
        if (strcmp(p->method, "POST") != 0)
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, p->method);
        if (p->body.len || strcmp(p->method, "POST") == 0) {
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, p->body.data ? p->body.data : "");
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)p->body.len);
        }
    }
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, p);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, p);
    curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 64L * 1024);
    if (fetch_add(px->fetch, &p->x) != 0)
        preq_error(p, 502, "api_error", "could not start the upstream request", NULL);
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
    if (p->paused && p->x.added) {
        p->paused = false;
        p->last_byte_ms = now_mono_ms();
        curl_easy_pause(p->x.easy, CURLPAUSE_CONT);
    }
}

static const struct conn_handler_ops preq_ops = {
    .client_gone = preq_client_gone,
    .drained = preq_drained,
};

/* ---- time limits ---------------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    struct proxy *px = t->data;
    uint64_t now = now_mono_ms();
    struct track *tr = px->st->tracks;
    while (tr) {
        struct track *next = tr->next;
        struct preq *p = (struct preq *)tr;
        if (tr->state == TRACK_WAITING && !p->headers_done &&
            now - p->attempt_start_ms >= (uint64_t)px->cfg->header_timeout_ms) {
            fetch_remove(px->fetch, &p->x);
            snprintf(p->fail, sizeof p->fail, "no response headers within %d ms",
                     px->cfg->header_timeout_ms);
            state_live_failure(px->st, p->ep, p->fail, now);
            if (preq_can_retry(p)) {
                p->retry = true;
                on_done(&p->x, CURLE_OPERATION_TIMEDOUT);
            } else {
                char msg[256];
                snprintf(msg, sizeof msg, "upstream %s: %s", px->st->eps[p->ep].name, p->fail);
                preq_error(p, 504, "timeout_error", msg, NULL);
            }
        } else if (p->headers_done && !p->paused &&
                   now - p->last_byte_ms >= (uint64_t)px->cfg->idle_timeout_ms) {
            fetch_remove(px->fetch, &p->x);
            snprintf(p->fail, sizeof p->fail, "stream idle for %d ms", px->cfg->idle_timeout_ms);
            state_live_failure(px->st, p->ep, p->fail, now);
            preq_break(p, p->fail);
        }
        tr = next;
    }
}

/* ---- public -------------------------------------------------------------- */

struct proxy *proxy_new(uv_loop_t *loop, struct fetch *f, struct state *st,
                        const struct config *cfg)
{
    struct proxy *px = xcalloc(1, sizeof *px);
    px->loop = loop;
    px->fetch = f;
    px->st = st;
    px->cfg = cfg;
    uv_timer_init(loop, &px->tick);
    px->tick.data = px;
    return px;
}

void proxy_set_config(struct proxy *px, const struct config *cfg)
{
    px->cfg = cfg;
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
    while (px->st->tracks) {
        struct preq *p = (struct preq *)px->st->tracks;
        if (p->committed)
            preq_break(p, "proxy shutting down");
        else
            preq_error(p, 503, "api_error", "proxy shutting down", NULL);
    }
    uv_timer_stop(&px->tick);
    uv_close((uv_handle_t *)&px->tick, on_tick_closed);
}

size_t proxy_active(const struct proxy *px)
{
    return px->st->n_tracks;
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

void proxy_handle(struct proxy *px, struct conn *c, struct http_req *req)
{
    struct state *st = px->st;
    uint64_t now = now_mono_ms();
    struct preq *p = xcalloc(1, sizeof *p);
    p->px = px;
    p->c = c;
    p->ep = -1;
    p->ttfb_ms = -1;
    p->resp_len = -1;
    p->method = req->method;
    p->is_head = req->is_head;
    p->target = xstrdup(req->target);
    /* The body moves to the request; conn starts a fresh one. */
    p->body = req->body;
    buf_init(&req->body, (size_t)px->cfg->max_body_bytes);
    buf_init(&p->resp_hdrs, PROXY_RESP_HEADERS_CAP);
    sse_init(&p->sse, 256 * 1024);
    state_track_add(st, &p->t, p->method, p->target, now);
    p->t.bytes_in = p->body.len;
    conn_attach(c, p, &preq_ops);
    if (!px->tick_running) {
        uv_timer_start(&px->tick, on_tick, PROXY_TICK_MS, PROXY_TICK_MS);
        px->tick_running = true;
    }

    const struct http_hdr *sid = http_req_header(req, "x-claude-code-session-id");
    if (sid && sid->value_len)
        p->session_key = xstrndup(sid->value, sid->value_len);

    int ep = state_route(st, p->session_key, now);
    if (ep < 0) {
        preq_error(p, 503, "overloaded_error",
                   "no usable endpoint: every endpoint of the current group is failing", NULL);
        return;
    }
    const struct group *g = &st->groups[st->eps[ep].group];
    p->tried = xcalloc(g->n, sizeof *p->tried);
    p->hdrs = build_headers(req, g->cfg->token != NULL);
    state_track_route(st, &p->t, ep);
    p->ep = ep;
    preq_attempt(p);
}
