/*
 * fakeup: the fake Messages API server (contract in docs/INTERFACES.md,
 * "The fake upstream").  It lives in src/fake/ with the demo, outside
 * libzephyr.a: the product links it for --demo only, build/fake-upstream
 * for the tests and benchmarks (docs/DESIGN.md, "Test fixtures").
 *
 * One struct fakeup is a listening socket plus its connections, all on the
 * caller's libuv loop; several can share a loop (the demo runs a few).  There
 * is no global state.
 *
 * The fake has no connection handling of its own: it is a conn.c server,
 * as the proxy's client side is, with limits of its own (fake_limits: no
 * idle or header timeout, bodies up to BODY_MAX).  conn.c reads and parses
 * requests with reqparse.c (so the fake accepts exactly what the proxy
 * accepts, and answers what it refuses the same way), holds pipelined
 * input while a request is answered, owns the write queue, its
 * backpressure and every way a connection ends.  Here is only what the
 * fake answers: fake_dispatch() gets each request, takes what its answer
 * needs into a struct fake_req, and answers at once through
 * conn_respond(), or, for an answer that takes time (latency_ms, a stream,
 * hang), attaches the fake_req to the connection (conn_attach) and answers
 * from its timer and from conn.c's drained callback.  client_gone is what
 * counts aborted requests and streams.
 *
 * Answers that wait (enum fake_req_state):
 *   LATENCY   the request is read, the latency timer runs
 *   STREAMING an SSE response is being produced; it pauses for gap_ms,
 *             when conn.c's queue is above CONN_HIGH_WATER (until drained)
 *             and every STREAM_BURST events (a fast client does not keep
 *             the loop from other connections)
 *   HANGING   hang: the request is never answered
 *
 * A request body is read whole, as the proxy reads it (up to BODY_MAX),
 * and released as soon as the request is dispatched: what the answer needs
 * (length, CRC-32 by zlib, the top-level "stream" and "model" members read
 * with cJSON) is taken from it then.
 *
 * Limits: those of reqparse.h (target 8 KiB: 414, headers 64 KiB or 200
 * fields: 431, ...), body BODY_MAX (413), /_fake/config body 64 KiB (413),
 * those of conn.c (pipelined input held while busy), model echoed up to
 * 255 bytes, one SSE event EVENT_MAX bytes.
 */
#include "fakeup.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <zlib.h>

#include "config.h"
#include "conn.h"
#include "reqparse.h"
#include "util.h"

/* Bodies are held whole while the request is read; tests send up to the
 * proxy's max_body_mb (64 MiB at most in the suite). */
#define BODY_MAX ((size_t)1 << 30)
/* The last request's header fields, "name\0value\0" each. */
#define LAST_HDRS_MAX (REQPARSE_MAX_HEADER_BYTES + 2 * REQPARSE_MAX_HEADERS)
#define CFG_BODY_MAX (64 * 1024)
#define STREAM_BURST 64 /* events written before a stream yields to the loop */
#define EVENT_MAX 1024  /* the largest event is message_start with a 255-byte model */
#define EXTRA_MAX 512   /* the fake's own response headers */
#define MODEL_MAX 256
#define DEFAULT_MODEL "claude-fake"

/* conn.c's limits for the fake: what a client of the proxy gets, but no
 * idle or header timeout (the proxy's pool keeps connections to the fake
 * as long as it likes), no connection limit and a body up to BODY_MAX. */
static const struct config fake_limits = {
    .max_body_bytes = (long long)BODY_MAX,
    .client_header_timeout_ms = INT_MAX,
    .keepalive_timeout_ms = INT_MAX,
    .max_connections = INT_MAX,
};

enum fake_req_state {
    FAKE_REQ_NOW = 0, /* answered within fake_dispatch() */
    FAKE_REQ_LATENCY = 1,
    FAKE_REQ_STREAMING = 2,
    FAKE_REQ_HANGING = 3,
};

enum route {
    ROUTE_NONE = 0,      /* not known yet */
    ROUTE_MESSAGES = 1,  /* POST /v1/messages */
    ROUTE_COUNT = 2,     /* POST /v1/messages/count_tokens */
    ROUTE_ROOT = 3,      /* GET or HEAD / */
    ROUTE_NOT_FOUND = 4, /* anything else outside /_fake/ */
    ROUTE_STATS = 5,     /* GET /_fake/stats */
    ROUTE_CONFIG_GET = 6,
    ROUTE_CONFIG_SET = 7,
    ROUTE_RESET = 8,
    ROUTE_FAKE_404 = 9, /* anything else under /_fake/ */
};

enum reply {
    REPLY_ERROR = 0,
    REPLY_JSON = 1, /* non-stream message */
    REPLY_STREAM = 2,
    REPLY_COUNT = 3,
    REPLY_ROOT = 4,
    REPLY_CUT = 5,    /* non-stream with close_after: close, no answer */
    REPLY_MODELS = 6, /* GET /v1/models while the models knob is set */
};

enum stream_phase {
    PHASE_PRELUDE = 0, /* message_start sent */
    PHASE_DELTAS = 1,  /* content_block_start and ping sent */
};

/* One request being answered: what it needs of the parsed request is
 * copied here at dispatch, and conn.c moves on to the next one. */
struct fake_req {
    struct fakeup *f; /* borrows */
    struct conn *c;   /* borrows; NULL once answered or the client left */
    enum fake_req_state state;
    bool waits;       /* attached to c, timer open: freed in its close callback */
    uv_timer_t timer; /* latency and gap delays, stream yields (when waits) */

    struct fakeup_opts k; /* knobs, with the x-fake-* overrides */
    enum route route;
    bool models_path; /* GET .../v1/models (a ROUTE_NOT_FOUND unless models is set) */
    bool bad_knob, authed;
    uint64_t body_bytes;
    uint32_t crc;
    bool body_ok;          /* the body is one JSON object (as cJSON reads it) */
    bool stream;           /* its top-level "stream" is true */
    bool model_ok;         /* its top-level "model" is a string: model holds it */
    char model[MODEL_MAX]; /* JSON string content (escaped), cut at MODEL_MAX - 1 */
    size_t model_len;
    char model_raw[MODEL_MAX]; /* the same decoded, for the models knob */
    size_t model_raw_len;
    uint64_t id;
    enum reply reply;
    int status;
    const char *err_type; /* static */
    char err_msg[160];
    bool active;      /* counted in st.active */
    bool stream_open; /* counted in streams_started, not yet ended */
    bool stream_blocked, gap_wait, gap_done;
    enum stream_phase phase;
    int sent; /* deltas sent */
};

struct fakeup {
    uv_loop_t *loop;         /* borrows */
    struct conn_server *srv; /* owns; the listener and the connections */
    uv_timer_t guard;        /* never started: closed last, so that done runs from the loop */
    struct fakeup_opts opts;
    struct fakeup_stats st; /* connections and connections_open are srv's */
    uint64_t accepted_base; /* conn_accepted() at the last reset */
    int port;
    uint64_t next_id;
    int open_handles; /* guard + timers of waiting answers */
    bool closing;
    void (*done)(void *);
    void *done_ud; /* borrows */
    /* The last request outside /_fake/. */
    bool have_last;
    char last_method[24];
    struct buf last_url;  /* owns */
    struct buf last_hdrs; /* owns; "name\0value\0" for each header field */
    uint64_t last_body_bytes;
    uint32_t last_crc;
};

static void stream_step(struct fake_req *q);
static size_t json_escape(char *dst, size_t cap, const char *src, size_t n);

/* ---- knobs ---- */

enum knob_kind {
    KNOB_INT = 0,
    KNOB_BOOL = 1,
    KNOB_STR = 2,
};

enum {
    KF_RUNTIME = 1, /* may change with /_fake/config and fakeup_configure */
    KF_REQUEST = 2, /* may be overridden by an x-fake-* header */
};

struct knob {
    const char *name;
    size_t off;
    long min, max; /* value range, or string length range */
    enum knob_kind kind;
    unsigned flags;
};

#define KOFF(field) offsetof(struct fakeup_opts, field)
static const struct knob knobs[] = {
    {"latency_ms", KOFF(latency_ms), 0, INT_MAX, KNOB_INT, KF_RUNTIME | KF_REQUEST},
    {"status", KOFF(status), 100, 999, KNOB_INT, KF_RUNTIME | KF_REQUEST},
    {"retry_after", KOFF(retry_after), -1, INT_MAX, KNOB_INT, KF_RUNTIME | KF_REQUEST},
    {"token", KOFF(token), 0, FAKEUP_TOKEN_MAX - 1, KNOB_STR, KF_RUNTIME | KF_REQUEST},
    {"events", KOFF(events), 0, 1000000, KNOB_INT, KF_RUNTIME | KF_REQUEST},
    {"gap_ms", KOFF(gap_ms), 0, INT_MAX, KNOB_INT, KF_RUNTIME | KF_REQUEST},
    {"close_after", KOFF(close_after), -1, INT_MAX, KNOB_INT, KF_RUNTIME | KF_REQUEST},
    {"error_after", KOFF(error_after), -1, INT_MAX, KNOB_INT, KF_RUNTIME | KF_REQUEST},
    {"hang", KOFF(hang), 0, 1, KNOB_BOOL, KF_RUNTIME | KF_REQUEST},
    {"body_bytes", KOFF(body_bytes), 0, 1L << 30, KNOB_INT, KF_RUNTIME | KF_REQUEST},
    {"models", KOFF(models), 0, FAKEUP_MODELS_MAX - 1, KNOB_STR, KF_RUNTIME | KF_REQUEST},
    {"name", KOFF(name), 1, FAKEUP_NAME_MAX - 1, KNOB_STR, KF_RUNTIME},
    {"bind", KOFF(bind), 1, FAKEUP_NAME_MAX - 1, KNOB_STR, 0},
    {"port", KOFF(port), 0, 65535, KNOB_INT, 0},
};
#undef KOFF

/* Finds a knob by name, with '-' and '_' equivalent and case ignored. */
static const struct knob *knob_find(const char *name, size_t len)
{
    char norm[32];
    if (len >= sizeof norm)
        return NULL;
    for (size_t i = 0; i < len; i++)
        norm[i] = name[i] == '-' ? '_' : (char)tolower((unsigned char)name[i]);
    norm[len] = '\0';
    for (size_t i = 0; i < sizeof knobs / sizeof knobs[0]; i++)
        if (strcmp(knobs[i].name, norm) == 0)
            return &knobs[i];
    return NULL;
}

static int parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* Names go into headers and JSON unescaped: keep them to a safe alphabet. */
static bool name_char_ok(unsigned char ch)
{
    return isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == ':';
}

static int knob_set(struct fakeup_opts *o, const struct knob *kn, const char *value)
{
    char *field = (char *)o + kn->off;
    switch (kn->kind) {
    case KNOB_INT: {
        if (!*value || isspace((unsigned char)*value))
            return -1;
        errno = 0;
        char *end;
        long v = strtol(value, &end, 10);
        if (errno || *end || v < kn->min || v > kn->max)
            return -1;
        int iv = (int)v;
        memcpy(field, &iv, sizeof iv);
        return 0;
    }
    case KNOB_BOOL: {
        bool b;
        if (parse_bool(value, &b) < 0)
            return -1;
        memcpy(field, &b, sizeof b);
        return 0;
    }
    case KNOB_STR: {
        size_t n = strlen(value);
        if ((long)n < kn->min || (long)n > kn->max)
            return -1;
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)value[i];
            if (strcmp(kn->name, "name") == 0 ? !name_char_ok(ch) : (ch < 0x21 || ch > 0x7e))
                return -1;
        }
        memcpy(field, value, n + 1);
        return 0;
    }
    }
    return -1;
}

void fakeup_opts_init(struct fakeup_opts *o)
{
    memset(o, 0, sizeof *o);
    o->latency_ms = 0;
    o->status = 200;
    o->retry_after = -1;
    o->events = 3;
    o->gap_ms = 0;
    o->close_after = -1;
    o->error_after = -1;
    o->body_bytes = 0;
    o->hang = false;
    o->token[0] = '\0';
    snprintf(o->name, sizeof o->name, "%s", "fake");
    snprintf(o->bind, sizeof o->bind, "%s", "127.0.0.1");
    o->port = 0;
}

int fakeup_opts_set(struct fakeup_opts *o, const char *knob, const char *value)
{
    const struct knob *kn = knob_find(knob, strlen(knob));
    if (!kn || !value)
        return -1;
    return knob_set(o, kn, value);
}

/* ---- response pieces ---- */

static const char *error_type(int status)
{
    switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 500: return "api_error";
    case 503:
    case 529: return "overloaded_error";
    default: return status < 500 ? "invalid_request_error" : "api_error";
    }
}

static bool route_is_api(enum route r)
{
    return r >= ROUTE_MESSAGES && r <= ROUTE_NOT_FOUND;
}

static bool route_is_v1(enum route r)
{
    return r == ROUTE_MESSAGES || r == ROUTE_COUNT;
}

/* The fake's own response headers, for conn_respond() and
 * conn_start_response(): conn.c writes the status line and the framing. */
static void fake_headers(const struct fake_req *q, char *out, size_t cap)
{
    int n = snprintf(out, cap, "x-fake-name: %s\r\n", q->f->opts.name);
    if (route_is_api(q->route) && n > 0 && (size_t)n < cap)
        n += snprintf(out + n, cap - (size_t)n, "request-id: req_fake_%llu\r\n",
                      (unsigned long long)q->id);
    if (route_is_v1(q->route) && q->k.retry_after >= 0 && n > 0 && (size_t)n < cap)
        snprintf(out + n, cap - (size_t)n, "retry-after: %d\r\n", q->k.retry_after);
}

/* A complete response with a Content-Length. */
static void send_body(struct fake_req *q, int status, const char *ctype, const char *body,
                      size_t len)
{
    char extra[EXTRA_MAX];
    fake_headers(q, extra, sizeof extra);
    conn_respond(q->c, status, ctype, body, len, extra);
}

static void send_error(struct fake_req *q, int status, const char *type, const char *msg)
{
    char extra[EXTRA_MAX];
    fake_headers(q, extra, sizeof extra);
    q->f->st.errors++;
    conn_respond_error(q->c, status, type, msg, extra);
}

/* Sends a complete response whose body is a cJSON document (freed here). */
static void send_json_doc(struct fake_req *q, int status, cJSON *doc)
{
    char *text = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    if (!text) {
        fprintf(stderr, "fake-upstream: out of memory rendering JSON\n");
        abort();
    }
    send_body(q, status, "application/json", text, strlen(text));
    free(text);
}

/* The model to echo: the request's (raw JSON string content) or a default. */
static const char *req_model(const struct fake_req *q, int *len)
{
    if (q->model_ok) {
        *len = (int)q->model_len;
        return q->model;
    }
    *len = (int)strlen(DEFAULT_MODEL);
    return DEFAULT_MODEL;
}

/* A stand-in for a token count: a quarter of the body bytes, at least 1. */
static unsigned long long input_tokens(const struct fake_req *q)
{
    return q->body_bytes / 4 ? (unsigned long long)(q->body_bytes / 4) : 1;
}

static void send_message(struct fake_req *q)
{
    char pad_x[4096];
    memset(pad_x, 'x', sizeof pad_x);
    struct buf b;
    buf_init(&b, SIZE_MAX);
    int events = q->k.events;
    int mlen;
    const char *model = req_model(q, &mlen);
    buf_appendf(&b,
                "{\"id\":\"msg_fake_%llu\",\"type\":\"message\",\"role\":\"assistant\","
                "\"model\":\"%.*s\",\"content\":[{\"type\":\"text\",\"text\":\"",
                (unsigned long long)q->id, mlen, model);
    size_t text_start = b.len;
    for (int i = 0; i < events; i++)
        buf_appendf(&b, "w%d ", i);
    size_t text_len = b.len - text_start;
    for (size_t pad = (size_t)q->k.body_bytes > text_len ? (size_t)q->k.body_bytes - text_len : 0;
         pad > 0;) {
        size_t n = pad < sizeof pad_x ? pad : sizeof pad_x;
        buf_append(&b, pad_x, n);
        pad -= n;
    }
    buf_appendf(&b,
                "\"}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,"
                "\"usage\":{\"input_tokens\":%llu,\"output_tokens\":%d}}",
                input_tokens(q), events);
    send_body(q, q->status, "application/json", b.data, b.len);
    buf_release(&b);
}

/* Starts the SSE response: conn.c frames it (chunked, or close-delimited
 * for HTTP/1.0). */
static void send_stream_head(struct fake_req *q)
{
    char h[EXTRA_MAX + 64];
    int n = snprintf(h, sizeof h, "content-type: text/event-stream\r\ncache-control: no-cache\r\n");
    fake_headers(q, h + n, sizeof h - (size_t)n);
    conn_start_response(q->c, q->status, h, strlen(h), -1);
}

/* Sends one SSE event: one chunk, one write (or queued piece). */
static void send_event(struct fake_req *q, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void send_event(struct fake_req *q, const char *fmt, ...)
{
    char ev[EVENT_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(ev, sizeof ev, fmt, ap);
    va_end(ap);
    if (n > 0)
        conn_write_body(q->c, ev, (size_t)n < sizeof ev ? (size_t)n : sizeof ev - 1);
}

/* ---- requests ---- */

/* Counts the end of a request that got (or will never get) its answer. */
static void request_finished(struct fake_req *q)
{
    if (q->active) {
        q->active = false;
        q->f->st.active--;
    }
}

static void fakeup_handle_gone(struct fakeup *f);

static void on_req_timer_closed(uv_handle_t *h)
{
    struct fake_req *q = h->data;
    struct fakeup *f = q->f;
    free(q);
    fakeup_handle_gone(f);
}

/* The answer is over (conn.c has detached q, or the client left): q goes,
 * with its timer when it waited. */
static void fake_req_end(struct fake_req *q)
{
    request_finished(q);
    q->c = NULL;
    if (!q->waits) {
        free(q);
        return;
    }
    uv_close((uv_handle_t *)&q->timer, on_req_timer_closed);
}

/* conn.c: the client left before the answer ended. */
static void fake_req_client_gone(void *h)
{
    struct fake_req *q = h;
    struct fakeup *f = q->f;
    if (q->stream_open) {
        q->stream_open = false;
        f->st.streams_aborted++;
    }
    if (q->active) {
        q->active = false;
        f->st.active--;
        f->st.aborted++;
    }
    fake_req_end(q);
}

/* conn.c: the output queue fell below CONN_LOW_WATER. */
static void fake_req_drained(void *h)
{
    struct fake_req *q = h;
    if (q->state == FAKE_REQ_STREAMING && q->stream_blocked)
        stream_step(q);
}

static const struct conn_handler_ops fake_req_ops = {
    .client_gone = fake_req_client_gone,
    .drained = fake_req_drained,
};

/* The answer takes time: q gets a timer and hears from conn.c. */
static void fake_req_wait(struct fake_req *q, enum fake_req_state state)
{
    q->state = state;
    if (q->waits)
        return;
    q->waits = true;
    uv_timer_init(q->f->loop, &q->timer);
    q->timer.data = q;
    q->f->open_handles++;
    conn_attach(q->c, q, &fake_req_ops);
}

static void stream_cut(struct fake_req *q)
{
    if (q->stream_open) {
        q->stream_open = false;
        q->f->st.streams_cut++;
    }
    conn_abort_response(q->c);
    fake_req_end(q);
}

static void stream_error_end(struct fake_req *q)
{
    send_event(q,
               "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
               "\"message\":\"Overloaded\"}}\n\n");
    q->stream_open = false;
    q->f->st.streams_errored++;
    conn_end_response(q->c);
    fake_req_end(q);
}

static void on_timer(uv_timer_t *t);

/*
 * Produces stream events until the stream ends, a gap must pass, the
 * client's output queue is too full (conn.c's drained calls back here), or
 * STREAM_BURST events went out in this turn of the loop.
 */
static void stream_step(struct fake_req *q)
{
    const struct fakeup_opts *k = &q->k;
    for (int burst = 0;; burst++) {
        if (conn_queued(q->c) >= CONN_HIGH_WATER) {
            q->stream_blocked = true;
            return;
        }
        q->stream_blocked = false;
        if (burst == STREAM_BURST) {
            uv_timer_start(&q->timer, on_timer, 0, 0);
            return;
        }
        if (q->phase == PHASE_PRELUDE) {
            if (k->close_after == 0) {
                stream_cut(q);
                return;
            }
            if (k->error_after == 0) {
                stream_error_end(q);
                return;
            }
            send_event(q, "event: content_block_start\ndata: {\"type\":\"content_block_start\","
                          "\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
            send_event(q, "event: ping\ndata: {\"type\": \"ping\"}\n\n");
            q->phase = PHASE_DELTAS;
            continue;
        }
        if (q->sent < k->events) {
            if (k->gap_ms > 0 && !q->gap_done) {
                q->gap_wait = true;
                uv_timer_start(&q->timer, on_timer, (uint64_t)k->gap_ms, 0);
                return;
            }
            q->gap_done = false;
            send_event(q,
                       "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                       "\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"w%d \"}}\n\n",
                       q->sent);
            q->sent++;
            if (k->close_after == q->sent) {
                stream_cut(q);
                return;
            }
            if (k->error_after == q->sent) {
                stream_error_end(q);
                return;
            }
            continue;
        }
        send_event(q, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\","
                      "\"index\":0}\n\n");
        send_event(q,
                   "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":"
                   "{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},"
                   "\"usage\":{\"output_tokens\":%d}}\n\n",
                   k->events);
        send_event(q, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        if (q->stream_open) {
            q->stream_open = false;
            q->f->st.streams_completed++;
        }
        conn_end_response(q->c);
        fake_req_end(q);
        return;
    }
}

static void stream_begin(struct fake_req *q)
{
    fake_req_wait(q, FAKE_REQ_STREAMING);
    q->phase = PHASE_PRELUDE;
    q->sent = 0;
    q->gap_done = q->gap_wait = false;
    q->stream_blocked = false;
    send_stream_head(q);
    int mlen;
    const char *model = req_model(q, &mlen);
    send_event(q,
               "event: message_start\ndata: {\"type\":\"message_start\",\"message\":"
               "{\"id\":\"msg_fake_%llu\",\"type\":\"message\",\"role\":\"assistant\","
               "\"model\":\"%.*s\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,"
               "\"usage\":{\"input_tokens\":%llu,\"output_tokens\":1}}}\n\n",
               (unsigned long long)q->id, mlen, model, input_tokens(q));
    stream_step(q);
}

/* The models knob as a list: "real" is the current Anthropic line-up. */
static const char *models_list(const struct fakeup_opts *k)
{
    return strcmp(k->models, "real") == 0 ? "claude-haiku-4-5,claude-sonnet-4-6,claude-opus-4-8"
                                          : k->models;
}

/* Whether the models knob serves model[0..len): a listed name, or a dated
 * variant of one (NAME-YYYYMMDD), as the real API accepts both. */
static bool model_served(const struct fakeup_opts *k, const char *model, size_t len)
{
    const char *l = models_list(k);
    while (*l) {
        const char *end = strchr(l, ',');
        size_t n = end ? (size_t)(end - l) : strlen(l);
        if (n && len >= n && memcmp(model, l, n) == 0) {
            if (len == n)
                return true;
            if (len == n + 9 && model[n] == '-') {
                size_t d = n + 1;
                while (d < len && isdigit((unsigned char)model[d]))
                    d++;
                if (d == len)
                    return true;
            }
        }
        l += n;
        if (*l == ',')
            l++;
    }
    return false;
}

/* GET /v1/models: {"data":[{"type":"model","id":NAME,...}],"has_more":false} */
static cJSON *models_json(const struct fake_req *q)
{
    cJSON *j = cJSON_CreateObject();
    cJSON *data = cJSON_AddArrayToObject(j, "data");
    const char *l = models_list(&q->k);
    while (*l) {
        const char *end = strchr(l, ',');
        size_t n = end ? (size_t)(end - l) : strlen(l);
        if (n) {
            char id[FAKEUP_MODELS_MAX];
            memcpy(id, l, n);
            id[n] = '\0';
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "type", "model");
            cJSON_AddStringToObject(m, "id", id);
            cJSON_AddStringToObject(m, "display_name", id);
            cJSON_AddItemToArray(data, m);
        }
        l += n;
        if (*l == ',')
            l++;
    }
    cJSON_AddBoolToObject(j, "has_more", false);
    return j;
}

/* Sends the answer decided by decide(), after latency_ms. */
static void respond(struct fake_req *q)
{
    struct fakeup *f = q->f;
    char text[FAKEUP_NAME_MAX + 64];
    switch (q->reply) {
    case REPLY_ERROR: send_error(q, q->status, q->err_type, q->err_msg); break;
    case REPLY_JSON: send_message(q); break;
    case REPLY_COUNT:
        snprintf(text, sizeof text, "{\"input_tokens\":%llu}", input_tokens(q));
        send_body(q, q->status, "application/json", text, strlen(text));
        break;
    case REPLY_ROOT:
        snprintf(text, sizeof text, "fake-upstream %s ok\n", f->opts.name);
        send_body(q, 200, "text/plain", text, strlen(text));
        break;
    case REPLY_MODELS: send_json_doc(q, 200, models_json(q)); break;
    case REPLY_CUT: conn_abort_response(q->c); break;
    case REPLY_STREAM: stream_begin(q); return;
    }
    fake_req_end(q);
}

static bool view_eq(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    return alen == blen && memcmp(a, b, alen) == 0;
}

static void set_error(struct fake_req *q, int status, const char *msg)
{
    q->reply = REPLY_ERROR;
    q->status = status;
    q->err_type = error_type(status);
    snprintf(q->err_msg, sizeof q->err_msg, "%s", msg);
}

/* Decides the answer to a request outside /_fake/ (sent now or later). */
static void decide(struct fake_req *q)
{
    struct fakeup *f = q->f;
    q->status = 200;
    if (q->route == ROUTE_MESSAGES)
        f->st.messages++;
    if (q->bad_knob) {
        set_error(q, 400, "fake-upstream: bad x-fake-* header value");
        return;
    }
    if (q->route == ROUTE_NOT_FOUND && q->models_path && q->k.models[0]) {
        if (!q->authed)
            set_error(q, 401, "invalid x-api-key");
        else
            q->reply = REPLY_MODELS;
        return;
    }
    if (q->route == ROUTE_NOT_FOUND) {
        set_error(q, 404, "fake-upstream: no such path");
        return;
    }
    if (q->route == ROUTE_ROOT) {
        q->reply = REPLY_ROOT;
        return;
    }
    if (q->k.models[0] && route_is_v1(q->route) && q->authed && q->body_ok) {
        if (!q->model_ok) {
            set_error(q, 400, "model: Field required");
            return;
        }
        if (!model_served(&q->k, q->model_raw, q->model_raw_len)) {
            /* The real API's answer to a retired or unknown model, the
             * name cut where no UTF-8 sequence is split (conn.c escapes
             * the message into the JSON). */
            char msg[160];
            snprintf(msg, sizeof msg, "model: %.*s",
                     (int)utf8_cut(q->model_raw, q->model_raw_len < 140 ? q->model_raw_len : 140),
                     q->model_raw);
            set_error(q, 404, msg);
            return;
        }
    }
    bool stream = q->route == ROUTE_MESSAGES && q->body_ok && q->stream;
    if (stream && q->k.status < 400 && q->authed) {
        /* Counted from now on, so that a hung or delayed stream the client
           abandons shows up in streams_aborted. */
        f->st.streams_started++;
        q->stream_open = true;
    }
    if (!q->authed) {
        set_error(q, 401, "invalid x-api-key");
        return;
    }
    if (!q->body_ok) {
        set_error(q, 400, "request body is not a JSON object");
        return;
    }
    if (q->k.status >= 400) {
        char msg[128];
        snprintf(msg, sizeof msg, "fake-upstream %s: status %d", f->opts.name, q->k.status);
        set_error(q, q->k.status, msg);
        return;
    }
    q->status = q->k.status;
    if (q->route == ROUTE_COUNT)
        q->reply = REPLY_COUNT;
    else if (stream)
        q->reply = REPLY_STREAM;
    else if (q->k.close_after >= 0)
        q->reply = REPLY_CUT;
    else
        q->reply = REPLY_JSON;
}

/* Makes the request just read the "last request" of /_fake/stats. */
static void record_last(struct fake_req *q, const struct http_req *r)
{
    struct fakeup *f = q->f;
    buf_reset(&f->last_hdrs);
    for (size_t i = 0; i < r->n_hdrs; i++) {
        const struct http_hdr *h = &r->hdrs[i];
        buf_append(&f->last_hdrs, h->name, h->name_len);
        buf_append(&f->last_hdrs, "", 1);
        buf_append(&f->last_hdrs, h->value, h->value_len);
        buf_append(&f->last_hdrs, "", 1);
    }
    buf_reset(&f->last_url);
    buf_append_str(&f->last_url, r->target);
    snprintf(f->last_method, sizeof f->last_method, "%s", r->method);
    f->last_body_bytes = q->body_bytes;
    f->last_crc = q->crc;
    f->have_last = true;
    f->st.bytes_in += q->body_bytes;
}

/* ---- /_fake/ ---- */

static cJSON *knobs_json(const struct fakeup_opts *o)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "latency_ms", o->latency_ms);
    cJSON_AddNumberToObject(j, "status", o->status);
    cJSON_AddNumberToObject(j, "retry_after", o->retry_after);
    cJSON_AddStringToObject(j, "token", o->token);
    cJSON_AddNumberToObject(j, "events", o->events);
    cJSON_AddNumberToObject(j, "gap_ms", o->gap_ms);
    cJSON_AddNumberToObject(j, "close_after", o->close_after);
    cJSON_AddNumberToObject(j, "error_after", o->error_after);
    cJSON_AddBoolToObject(j, "hang", o->hang);
    cJSON_AddNumberToObject(j, "body_bytes", o->body_bytes);
    cJSON_AddStringToObject(j, "models", o->models);
    cJSON_AddStringToObject(j, "name", o->name);
    return j;
}

static cJSON *stats_json(struct fakeup *f)
{
    struct fakeup_stats now;
    fakeup_stats(f, &now);
    const struct fakeup_stats *s = &now;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "name", f->opts.name);
    cJSON_AddNumberToObject(j, "port", f->port);
    cJSON_AddNumberToObject(j, "requests", (double)s->requests);
    cJSON_AddNumberToObject(j, "messages", (double)s->messages);
    cJSON_AddNumberToObject(j, "streams_started", (double)s->streams_started);
    cJSON_AddNumberToObject(j, "streams_completed", (double)s->streams_completed);
    cJSON_AddNumberToObject(j, "streams_aborted", (double)s->streams_aborted);
    cJSON_AddNumberToObject(j, "streams_cut", (double)s->streams_cut);
    cJSON_AddNumberToObject(j, "streams_errored", (double)s->streams_errored);
    cJSON_AddNumberToObject(j, "aborted", (double)s->aborted);
    cJSON_AddNumberToObject(j, "errors", (double)s->errors);
    cJSON_AddNumberToObject(j, "active", (double)s->active);
    cJSON_AddNumberToObject(j, "connections", (double)s->connections);
    cJSON_AddNumberToObject(j, "connections_open", (double)s->connections_open);
    cJSON_AddNumberToObject(j, "bytes_in", (double)s->bytes_in);
    cJSON_AddStringToObject(j, "last_method", f->have_last ? f->last_method : "");
    cJSON_AddStringToObject(j, "last_path",
                            f->have_last && f->last_url.data ? f->last_url.data : "");
    cJSON *hs = cJSON_AddArrayToObject(j, "last_headers");
    if (f->have_last && f->last_hdrs.data) {
        const char *p = f->last_hdrs.data, *end = p + f->last_hdrs.len;
        while (p < end) {
            const char *name = p;
            p += strlen(p) + 1;
            if (p >= end)
                break;
            const char *value = p;
            p += strlen(p) + 1;
            cJSON *pair = cJSON_CreateArray();
            cJSON_AddItemToArray(pair, cJSON_CreateString(name));
            cJSON_AddItemToArray(pair, cJSON_CreateString(value));
            cJSON_AddItemToArray(hs, pair);
        }
    }
    cJSON_AddNumberToObject(j, "last_body_bytes", (double)(f->have_last ? f->last_body_bytes : 0));
    cJSON_AddNumberToObject(j, "last_body_crc32", (double)(f->have_last ? f->last_crc : 0));
    cJSON_AddItemToObject(j, "knobs", knobs_json(&f->opts));
    return j;
}

static void reset_stats(struct fakeup *f)
{
    uint64_t active = f->st.active;
    memset(&f->st, 0, sizeof f->st);
    f->st.active = active;
    f->accepted_base = conn_accepted(f->srv);
    f->have_last = false;
    buf_reset(&f->last_hdrs);
    buf_reset(&f->last_url);
}

static void fake_error(struct fake_req *q, int status, const char *msg)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "type", "error");
    cJSON *e = cJSON_AddObjectToObject(j, "error");
    cJSON_AddStringToObject(e, "type", error_type(status));
    cJSON_AddStringToObject(e, "message", msg);
    q->f->st.errors++;
    send_json_doc(q, status, j);
}

/* Applies a POST /_fake/config body: all knobs or none. */
static void fake_config(struct fake_req *q, const struct buf *body)
{
    struct fakeup *f = q->f;
    if (body->len > CFG_BODY_MAX) {
        fake_error(q, 413, "config body too large");
        return;
    }
    cJSON *doc = cJSON_ParseWithLength(body->data ? body->data : "", body->len);
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        fake_error(q, 400, "config body must be a JSON object");
        return;
    }
    struct fakeup_opts o = f->opts;
    const cJSON *it;
    cJSON_ArrayForEach(it, doc)
    {
        char val[64];
        const char *v = NULL;
        const struct knob *kn = it->string ? knob_find(it->string, strlen(it->string)) : NULL;
        if (kn && (kn->flags & KF_RUNTIME)) {
            if (cJSON_IsBool(it)) {
                v = cJSON_IsTrue(it) ? "true" : "false";
            } else if (cJSON_IsNumber(it)) {
                double d = it->valuedouble;
                if (d >= -2147483648.0 && d <= 2147483647.0 && d == (double)(long long)d) {
                    snprintf(val, sizeof val, "%lld", (long long)d);
                    v = val;
                }
            } else if (cJSON_IsString(it)) {
                v = it->valuestring;
            } else if (cJSON_IsNull(it) && kn->kind == KNOB_STR) {
                v = "";
            }
        }
        if (!v || knob_set(&o, kn, v) < 0) {
            char msg[96];
            snprintf(msg, sizeof msg, "bad or unknown knob: %.40s", it->string ? it->string : "");
            cJSON_Delete(doc);
            fake_error(q, 400, msg);
            return;
        }
    }
    cJSON_Delete(doc);
    f->opts = o;
    send_json_doc(q, 200, knobs_json(&f->opts));
}

static void fake_route(struct fake_req *q, const struct http_req *r)
{
    switch (q->route) {
    case ROUTE_STATS: send_json_doc(q, 200, stats_json(q->f)); break;
    case ROUTE_CONFIG_GET: send_json_doc(q, 200, knobs_json(&q->f->opts)); break;
    case ROUTE_CONFIG_SET: fake_config(q, &r->body); break;
    case ROUTE_RESET:
        reset_stats(q->f);
        send_json_doc(q, 200, stats_json(q->f));
        break;
    default: fake_error(q, 404, "no such /_fake/ path"); break;
    }
}

/* The request target's path: what comes before '?' or '#'. */
static size_t path_len(const char *url, size_t len)
{
    size_t plen = 0;
    while (plen < len && url[plen] != '?' && url[plen] != '#')
        plen++;
    return plen;
}

static bool prefix_ieq(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && strncasecmp(s, prefix, n) == 0;
}

static bool suffix_eq(const char *v, size_t len, const char *suffix)
{
    size_t sl = strlen(suffix);
    return len >= sl && memcmp(v + len - sl, suffix, sl) == 0;
}

/* The llhttp method of the name reqparse.c stores (the few routed ones). */
static int method_of(const char *m)
{
    return strcmp(m, "GET") == 0    ? HTTP_GET
           : strcmp(m, "POST") == 0 ? HTTP_POST
           : strcmp(m, "HEAD") == 0 ? HTTP_HEAD
                                    : -1;
}

static enum route route_of(int method, const char *url, size_t len)
{
    size_t plen = path_len(url, len);
    if (prefix_ieq(url, plen, "/_fake/")) {
        const char *rest = url + 7;
        size_t rlen = plen - 7;
        if (view_eq(rest, rlen, "stats") && method == HTTP_GET)
            return ROUTE_STATS;
        if (view_eq(rest, rlen, "config") && method == HTTP_GET)
            return ROUTE_CONFIG_GET;
        if (view_eq(rest, rlen, "config") && method == HTTP_POST)
            return ROUTE_CONFIG_SET;
        if (view_eq(rest, rlen, "reset") && method == HTTP_POST)
            return ROUTE_RESET;
        return ROUTE_FAKE_404;
    }
    /* An endpoint may sit under a path prefix (a relay's /api/...): the
     * API routes match by suffix. */
    if (method == HTTP_POST && suffix_eq(url, plen, "/v1/messages"))
        return ROUTE_MESSAGES;
    if (method == HTTP_POST && suffix_eq(url, plen, "/v1/messages/count_tokens"))
        return ROUTE_COUNT;
    if ((method == HTTP_GET || method == HTTP_HEAD) && view_eq(url, plen, "/"))
        return ROUTE_ROOT;
    return ROUTE_NOT_FOUND;
}

/*
 * Writes src[0..n) into dst as the content of a JSON string, escaped, and
 * NUL-terminates it: cut where neither an escape nor a UTF-8 sequence is
 * split when it does not fit in cap bytes.  Returns the length.
 */
static size_t json_escape(char *dst, size_t cap, const char *src, size_t n)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)src[i];
        char esc[8];
        size_t el;
        if (ch == '"' || ch == '\\')
            el = (size_t)snprintf(esc, sizeof esc, "\\%c", ch);
        else if (ch < 0x20)
            el = (size_t)snprintf(esc, sizeof esc, "\\u%04x", ch);
        else {
            esc[0] = (char)ch;
            el = 1;
        }
        if (len + el >= cap)
            break;
        memcpy(dst + len, esc, el);
        len += el;
    }
    len = utf8_cut(dst, len);
    dst[len] = '\0';
    return len;
}

/*
 * Reads a /v1/ body with cJSON, the parser the project reads JSON with
 * (no scanner of the fake's own): one object, nothing after it, and its
 * top-level "stream" and "model" (the first of each, as
 * cJSON_GetObjectItemCaseSensitive finds them).
 */
static void body_scan(struct fake_req *q, const struct buf *body)
{
    const char *end = NULL;
    const char *data = body->data ? body->data : "";
    cJSON *doc = cJSON_ParseWithLengthOpts(data, body->len, &end, false);
    /* cJSON stops after the root and the whitespace behind it: anything
     * left is a second value or garbage. */
    if (!cJSON_IsObject(doc) || end != data + body->len) {
        cJSON_Delete(doc);
        return;
    }
    q->body_ok = true;
    q->stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, "stream"));
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(doc, "model");
    if (cJSON_IsString(m) && m->valuestring) {
        size_t n = strlen(m->valuestring);
        q->model_ok = true;
        q->model_raw_len = n < MODEL_MAX - 1 ? n : MODEL_MAX - 1;
        memcpy(q->model_raw, m->valuestring, q->model_raw_len);
        q->model_raw[q->model_raw_len] = '\0';
        q->model_len = json_escape(q->model, sizeof q->model, m->valuestring, n);
    }
    cJSON_Delete(doc);
}

/*
 * Takes from the parsed request what its answer needs: route,
 * the x-fake-* knobs (in order), whether a credential matches the token,
 * and the body's length, CRC-32 and JSON members.
 */
static void request_take(struct fake_req *q, const struct http_req *r)
{
    int method = method_of(r->method);
    size_t tlen = strlen(r->target);
    q->k = q->f->opts;
    q->route = route_of(method, r->target, tlen);
    q->models_path =
        method == HTTP_GET && suffix_eq(r->target, path_len(r->target, tlen), "/v1/models");
    q->bad_knob = false;
    q->stream_open = false;
    q->reply = REPLY_ERROR;

    /* The last x-api-key and the last Bearer credential count. */
    const char *key = NULL, *bearer = NULL;
    size_t key_len = 0, bearer_len = 0;
    for (size_t i = 0; i < r->n_hdrs; i++) {
        const struct http_hdr *h = &r->hdrs[i];
        if (strn_ieq(h->name, h->name_len, "x-api-key")) {
            key = h->value;
            key_len = h->value_len;
        } else if (strn_ieq(h->name, h->name_len, "authorization")) {
            if (prefix_ieq(h->value, h->value_len, "bearer ")) {
                size_t skip = 7;
                while (skip < h->value_len && h->value[skip] == ' ')
                    skip++;
                bearer = h->value + skip;
                bearer_len = h->value_len - skip;
            }
        } else if (prefix_ieq(h->name, h->name_len, "x-fake-")) {
            const struct knob *kn = knob_find(h->name + 7, h->name_len - 7);
            if (kn && (kn->flags & KF_REQUEST)) {
                /* No knob takes a value this long: it is bad anyway. */
                char v[512];
                if (h->value_len >= sizeof v) {
                    q->bad_knob = true;
                } else {
                    memcpy(v, h->value, h->value_len);
                    v[h->value_len] = '\0';
                    if (knob_set(&q->k, kn, v) < 0)
                        q->bad_knob = true;
                }
            }
        }
    }
    const char *tok = q->k.token;
    q->authed = !tok[0] || (key && view_eq(key, key_len, tok)) ||
                (bearer && view_eq(bearer, bearer_len, tok));

    q->body_bytes = 0;
    q->crc = 0;
    q->body_ok = q->stream = q->model_ok = false;
    q->model_len = q->model_raw_len = 0;
    if (route_is_api(q->route)) {
        q->body_bytes = r->body.len;
        if (r->body.len)
            q->crc = (uint32_t)crc32_z(0, (const unsigned char *)r->body.data, r->body.len);
    }
    if (route_is_v1(q->route))
        body_scan(q, &r->body);
}

/*
 * conn.c's dispatch: a whole request was read.  Answers it now or starts
 * what answers it later; conn.c drops the body and the header fields once
 * this returns, so everything the answer needs is taken into q first.
 */
static void fake_dispatch(void *ud, struct conn *c, struct http_req *r)
{
    struct fakeup *f = ud;
    struct fake_req *q = xcalloc(1, sizeof *q);
    q->f = f;
    q->c = c;
    request_take(q, r);
    if (!route_is_api(q->route)) {
        fake_route(q, r);
        fake_req_end(q);
        return;
    }
    f->st.requests++;
    q->id = ++f->next_id;
    q->active = true;
    f->st.active++;
    decide(q);
    record_last(q, r);
    if (route_is_v1(q->route) && q->k.hang) {
        fake_req_wait(q, FAKE_REQ_HANGING);
        return;
    }
    if (route_is_v1(q->route) && q->k.latency_ms > 0) {
        fake_req_wait(q, FAKE_REQ_LATENCY);
        uv_timer_start(&q->timer, on_timer, (uint64_t)q->k.latency_ms, 0);
        return;
    }
    respond(q);
}

static void on_timer(uv_timer_t *t)
{
    struct fake_req *q = t->data;
    if (q->state == FAKE_REQ_LATENCY) {
        respond(q);
    } else if (q->state == FAKE_REQ_STREAMING) {
        if (q->gap_wait) {
            q->gap_wait = false;
            q->gap_done = true;
        }
        stream_step(q);
    }
}

/* ---- public API ---- */

/* The guard or the timer of an answer closed: the last one frees f. */
static void fakeup_handle_gone(struct fakeup *f)
{
    if (--f->open_handles > 0 || !f->closing)
        return;
    if (f->done)
        f->done(f->done_ud);
    buf_release(&f->last_url);
    buf_release(&f->last_hdrs);
    free(f);
}

static void on_guard_closed(uv_handle_t *h)
{
    fakeup_handle_gone(h->data);
}

struct fakeup *fakeup_new_err(uv_loop_t *loop, const struct fakeup_opts *o, int *err)
{
    struct fakeup *f = xcalloc(1, sizeof *f);
    f->loop = loop;
    f->opts = *o;
    f->srv = conn_server_new(loop, &fake_limits, fake_dispatch, f);
    /* A test has the fake stand in for an HTTP proxy (libcurl then sends
     * http://host/path): the API routes match by suffix either way. */
    conn_server_accept_absolute(f->srv);
    char msg[256];
    int rc = conn_listen(f->srv, o->bind, o->port, msg, sizeof msg);
    if (err)
        *err = rc;
    if (rc != 0) {
        conn_server_free(f->srv); /* it frees itself once its listener is closed */
        free(f);
        return NULL;
    }
    buf_init(&f->last_url, REQPARSE_MAX_TARGET);
    buf_init(&f->last_hdrs, LAST_HDRS_MAX);
    uv_timer_init(loop, &f->guard);
    f->guard.data = f;
    f->open_handles = 1;
    f->port = conn_port(f->srv);
    f->opts.port = f->port;
    return f;
}

struct fakeup *fakeup_new(uv_loop_t *loop, const struct fakeup_opts *o)
{
    return fakeup_new_err(loop, o, NULL);
}

int fakeup_port(const struct fakeup *f)
{
    return f->port;
}

int fakeup_configure(struct fakeup *f, const char *knob, const char *value)
{
    const struct knob *kn = knob_find(knob, strlen(knob));
    if (!kn || !(kn->flags & KF_RUNTIME) || !value)
        return -1;
    return knob_set(&f->opts, kn, value);
}

const struct fakeup_opts *fakeup_opts(const struct fakeup *f)
{
    return &f->opts;
}

void fakeup_stats(const struct fakeup *f, struct fakeup_stats *out)
{
    *out = f->st;
    out->connections = conn_accepted(f->srv) - f->accepted_base;
    out->connections_open = conn_count(f->srv);
}

void fakeup_close(struct fakeup *f, void (*done)(void *), void *ud)
{
    if (!f || f->closing)
        return;
    f->closing = true;
    f->done = done;
    f->done_ud = ud;
    /* Closes every connection now: the answers still attached hear
     * client_gone and close their timers. */
    conn_server_free(f->srv);
    f->srv = NULL;
    uv_close((uv_handle_t *)&f->guard, on_guard_closed);
}
