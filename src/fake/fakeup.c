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
 * Requests are read with the proxy's own request parser (reqparse.c), so
 * the fake accepts exactly what the proxy accepts from its clients, with
 * the same limits, and has no HTTP parser of its own.  The parser stops at
 * the end of each request, and the request is then dispatched.  Responses
 * that can be written at once are queued right there and parsing goes on
 * with the next pipelined request, so answers leave in request order.
 * Responses that take time (latency_ms, a stream with gap_ms, hang) put the
 * connection in a busy state: input that arrives meanwhile is kept in
 * `pending` and parsed once the response is fully queued.  Reading
 * continues while busy, so that a client hanging up is noticed at once
 * (this is what streams_aborted counts), until pending holds PENDING_STOP
 * bytes.
 *
 * Connection states (enum fake_conn_state):
 *   READING   parsing; every earlier response is fully queued
 *   LATENCY   request read, the latency timer runs
 *   STREAMING an SSE response is being produced (gap timer or backpressure)
 *   HANGING   hang: the request is never answered
 *   DRAINING  response queued but the output is full (OUT_HIGH bytes or
 *             INFLIGHT_HIGH write requests pending); parsing resumes when it
 *             is back under OUT_LOW / INFLIGHT_LOW
 *   ENDING    last response queued (connection: close, close_after, bad
 *             request); uv_shutdown flushes it, then the handle is closed
 *   CLOSED    uv_close called; freed in the last close callback
 *
 * A request body is read whole, as the proxy reads it (up to BODY_MAX),
 * and released as soon as the request is dispatched: what the answer needs
 * (length, CRC-32 by zlib, the top-level "stream" and "model" members read
 * with cJSON) is taken from it then.
 *
 * Writes use a free list of write requests with an inline buffer and a
 * separate header area, written as at most two iovecs.  Each SSE event is
 * its own uv_write and its own chunk.
 *
 * Limits: those of reqparse.h (target 8 KiB: 414, headers 64 KiB or 200
 * fields: 431, ...), body BODY_MAX (413), /_fake/config body 64 KiB (413),
 * pipelined input kept while busy 256 KiB (then reading stops), model
 * echoed up to 255 bytes.
 */
#include "fakeup.h"

#include <arpa/inet.h>
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

#include "hdr.h"
#include "reqparse.h"
#include "util.h"

#define READ_BUF_SIZE (64 * 1024)
/* Bodies are held whole while the request is read; tests send up to the
 * proxy's max_body_mb (64 MiB at most in the suite). */
#define BODY_MAX ((size_t)1 << 30)
/* The last request's header fields, "name\0value\0" each. */
#define LAST_HDRS_MAX (REQPARSE_MAX_HEADER_BYTES + 2 * REQPARSE_MAX_HEADERS)
#define CFG_BODY_MAX (64 * 1024)
#define PENDING_STOP (256 * 1024)
#define PENDING_MAX (PENDING_STOP + READ_BUF_SIZE)
#define OUT_HIGH (1024 * 1024)
#define OUT_LOW (256 * 1024)
#define INFLIGHT_HIGH 64 /* write requests not yet called back, per connection */
#define INFLIGHT_LOW 16
#define WREQ_HEAD 512
#define WREQ_INLINE 1024
#define WREQ_FREE_MAX 1024
#define MODEL_MAX 256
#define LISTEN_BACKLOG 4096
#define DEFAULT_MODEL "claude-fake"

enum fake_conn_state {
    FAKE_CONN_READING = 0,
    FAKE_CONN_LATENCY = 1,
    FAKE_CONN_STREAMING = 2,
    FAKE_CONN_HANGING = 3,
    FAKE_CONN_DRAINING = 4,
    FAKE_CONN_ENDING = 5,
    FAKE_CONN_CLOSED = 6,
};

enum route {
    ROUTE_NONE = 0,      /* not known yet, or a request that failed to parse */
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

struct fake_conn;

struct wreq {
    uv_write_t req;
    struct fake_conn *c; /* borrows */
    struct wreq *next;   /* free list link */
    size_t head_len;
    char head[WREQ_HEAD];
    char *heap; /* owns; NULL while the body fits inl */
    size_t len, cap;
    char inl[WREQ_INLINE];
};

struct fake_conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* latency and gap delays */
    uv_shutdown_t shutdown;
    struct reqparse rp;            /* owns; the request being read */
    struct fakeup *f;              /* borrows */
    struct fake_conn *prev, *next; /* f->conns */
    enum fake_conn_state state;
    int open_handles;
    bool reading, eof, in_parse;
    int inflight;       /* uv_write requests not yet called back */
    struct buf pending; /* owns; input that arrived while busy */
    size_t pending_off; /* pending bytes before this are parsed */

    /* The request being answered: what it needs of the parsed request is
     * copied here at dispatch, and the parser moves on to the next one. */
    struct fakeup_opts k; /* knobs, with the x-fake-* overrides */
    enum route route;
    bool models_path; /* GET .../v1/models (a ROUTE_NOT_FOUND unless models is set) */
    bool keep_alive, http10, is_head, bad_knob, authed;
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
    bool stream_blocked, gap_done;
    enum stream_phase phase;
    int sent; /* deltas sent */
};

struct fakeup {
    uv_loop_t *loop; /* borrows */
    uv_tcp_t listener;
    struct fakeup_opts opts;
    struct fakeup_stats st;
    int port;
    uint64_t next_id;
    struct fake_conn *conns; /* owns every connection not yet freed */
    struct wreq *free_wreqs; /* owns */
    size_t n_free;
    int open_handles; /* listener + connections not yet freed */
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
    char rbuf[READ_BUF_SIZE]; /* shared read buffer */
};

static void fake_conn_close(struct fake_conn *c);
static void fake_conn_end(struct fake_conn *c);
static void fake_conn_resume(struct fake_conn *c);
static void stream_step(struct fake_conn *c);
static size_t json_escape(char *dst, size_t cap, const char *src, size_t n);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

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

/* ---- write requests ---- */

static struct wreq *wreq_get(struct fake_conn *c)
{
    struct fakeup *f = c->f;
    struct wreq *w = f->free_wreqs;
    if (w) {
        f->free_wreqs = w->next;
        f->n_free--;
    } else {
        w = xmalloc(sizeof *w);
    }
    w->c = c;
    w->next = NULL;
    w->head_len = 0;
    w->heap = NULL;
    w->len = 0;
    w->cap = sizeof w->inl;
    return w;
}

static void wreq_put(struct fakeup *f, struct wreq *w)
{
    free(w->heap);
    w->heap = NULL;
    if (f->n_free >= WREQ_FREE_MAX) {
        free(w);
        return;
    }
    w->next = f->free_wreqs;
    f->free_wreqs = w;
    f->n_free++;
}

static char *wreq_data(struct wreq *w)
{
    return w->heap ? w->heap : w->inl;
}

static void wreq_reserve(struct wreq *w, size_t extra)
{
    size_t need = w->len + extra;
    if (need <= w->cap)
        return;
    size_t cap = w->cap * 2 > need ? w->cap * 2 : need;
    if (w->heap) {
        w->heap = xrealloc(w->heap, cap);
    } else {
        w->heap = xmalloc(cap);
        memcpy(w->heap, w->inl, w->len);
    }
    w->cap = cap;
}

static void wreq_append(struct wreq *w, const void *p, size_t n)
{
    wreq_reserve(w, n);
    memcpy(wreq_data(w) + w->len, p, n);
    w->len += n;
}

static void wreq_vprintf(struct wreq *w, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void wreq_vprintf(struct wreq *w, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    size_t room = w->cap - w->len;
    int n = vsnprintf(wreq_data(w) + w->len, room, fmt, ap);
    if (n >= 0 && (size_t)n >= room) {
        wreq_reserve(w, (size_t)n + 1);
        n = vsnprintf(wreq_data(w) + w->len, w->cap - w->len, fmt, ap2);
    }
    va_end(ap2);
    if (n > 0)
        w->len += (size_t)n;
}

static void wreq_printf(struct wreq *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void wreq_printf(struct wreq *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    wreq_vprintf(w, fmt, ap);
    va_end(ap);
}

static size_t write_queue(struct fake_conn *c)
{
    return uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp);
}

/*
 * True when the connection holds enough unsent output: stop producing.  Both
 * bytes not yet taken by the kernel and write requests not yet called back
 * count (a write the kernel took at once is called back only on the next
 * loop iteration, so a fast producer would otherwise pile them up).
 */
static bool output_full(struct fake_conn *c)
{
    return c->inflight >= INFLIGHT_HIGH || write_queue(c) > OUT_HIGH;
}

static void on_write(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct fake_conn *c = w->c;
    c->inflight--;
    wreq_put(c->f, w);
    if (c->state == FAKE_CONN_CLOSED)
        return;
    if (status < 0) {
        fake_conn_close(c);
        return;
    }
    if (c->inflight > INFLIGHT_LOW || write_queue(c) > OUT_LOW)
        return;
    if (c->state == FAKE_CONN_DRAINING) {
        c->state = FAKE_CONN_READING;
        fake_conn_resume(c);
    } else if (c->state == FAKE_CONN_STREAMING && c->stream_blocked) {
        stream_step(c);
    }
}

/* Queues w (head, then body) on the connection; w is consumed. */
static void wreq_send(struct fake_conn *c, struct wreq *w)
{
    uv_buf_t bufs[2];
    unsigned n = 0;
    if (c->state == FAKE_CONN_CLOSED) {
        wreq_put(c->f, w);
        return;
    }
    if (w->head_len)
        bufs[n++] = uv_buf_init(w->head, (unsigned)w->head_len);
    if (w->len)
        bufs[n++] = uv_buf_init(wreq_data(w), (unsigned)w->len);
    if (n == 0) {
        wreq_put(c->f, w);
        return;
    }
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, n, on_write) < 0) {
        wreq_put(c->f, w);
        fake_conn_close(c);
        return;
    }
    c->inflight++;
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

static void head_add(struct wreq *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void head_add(struct wreq *w, const char *fmt, ...)
{
    size_t room = sizeof w->head - w->head_len;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(w->head + w->head_len, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        w->head_len += (size_t)n < room ? (size_t)n : room - 1;
}

/* Formats the response head into w->head; clen < 0 means a chunked body. */
static void put_head(struct fake_conn *c, struct wreq *w, int status, const char *ctype,
                     long long clen)
{
    bool api = route_is_api(c->route);
    w->head_len = 0;
    head_add(w, "HTTP/1.1 %d %s\r\ncontent-type: %s\r\n", status, hdr_status_text(status), ctype);
    if (clen >= 0) {
        head_add(w, "content-length: %lld\r\n", clen);
    } else {
        if (!c->http10)
            head_add(w, "transfer-encoding: chunked\r\n");
        head_add(w, "cache-control: no-cache\r\n");
    }
    if (api)
        head_add(w, "request-id: req_fake_%llu\r\n", (unsigned long long)c->id);
    head_add(w, "x-fake-name: %s\r\n", c->f->opts.name);
    if (route_is_v1(c->route) && c->k.retry_after >= 0)
        head_add(w, "retry-after: %d\r\n", c->k.retry_after);
    if (!c->keep_alive)
        head_add(w, "connection: close\r\n");
    else if (c->http10)
        head_add(w, "connection: keep-alive\r\n");
    head_add(w, "\r\n");
}

static void send_error(struct fake_conn *c, int status, const char *type, const char *msg)
{
    struct wreq *w = wreq_get(c);
    wreq_printf(w, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"%s\"}}", type,
                msg);
    put_head(c, w, status, "application/json", (long long)w->len);
    c->f->st.errors++;
    wreq_send(c, w);
}

/* Sends a complete response whose body is a cJSON document (freed here). */
static void send_json_doc(struct fake_conn *c, int status, cJSON *doc)
{
    char *text = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    if (!text) {
        fprintf(stderr, "fake-upstream: out of memory rendering JSON\n");
        abort();
    }
    struct wreq *w = wreq_get(c);
    size_t n = strlen(text);
    wreq_append(w, text, n);
    free(text);
    put_head(c, w, status, "application/json", (long long)w->len);
    wreq_send(c, w);
}

/* The model to echo: the request's (raw JSON string content) or a default. */
static const char *req_model(const struct fake_conn *c, int *len)
{
    if (c->model_ok) {
        *len = (int)c->model_len;
        return c->model;
    }
    *len = (int)strlen(DEFAULT_MODEL);
    return DEFAULT_MODEL;
}

/* A stand-in for a token count: a quarter of the body bytes, at least 1. */
static unsigned long long input_tokens(const struct fake_conn *c)
{
    return c->body_bytes / 4 ? (unsigned long long)(c->body_bytes / 4) : 1;
}

static void send_message(struct fake_conn *c)
{
    struct wreq *w = wreq_get(c);
    int events = c->k.events;
    int mlen;
    const char *model = req_model(c, &mlen);
    wreq_reserve(w, (size_t)events * 10 + (size_t)c->k.body_bytes + 512 + MODEL_MAX);
    wreq_printf(w,
                "{\"id\":\"msg_fake_%llu\",\"type\":\"message\",\"role\":\"assistant\","
                "\"model\":\"%.*s\",\"content\":[{\"type\":\"text\",\"text\":\"",
                (unsigned long long)c->id, mlen, model);
    size_t text_start = w->len;
    for (int i = 0; i < events; i++)
        wreq_printf(w, "w%d ", i);
    size_t text_len = w->len - text_start;
    if ((size_t)c->k.body_bytes > text_len) {
        size_t pad = (size_t)c->k.body_bytes - text_len;
        wreq_reserve(w, pad);
        memset(wreq_data(w) + w->len, 'x', pad);
        w->len += pad;
    }
    wreq_printf(w,
                "\"}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,"
                "\"usage\":{\"input_tokens\":%llu,\"output_tokens\":%d}}",
                input_tokens(c), events);
    put_head(c, w, c->status, "application/json", (long long)w->len);
    wreq_send(c, w);
}

/*
 * Sends one SSE event as one chunk; with head, the response head goes in the
 * same write.  last appends the terminating chunk.
 */
static void send_event(struct fake_conn *c, bool head, bool last, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void send_event(struct fake_conn *c, bool head, bool last, const char *fmt, ...)
{
    struct wreq *w = wreq_get(c);
    if (head)
        put_head(c, w, c->status, "text/event-stream", -1);
    /* Leave room for the chunk size line, fill it in afterwards. */
    const size_t size_room = 10;
    wreq_reserve(w, size_room);
    w->len = size_room;
    va_list ap;
    va_start(ap, fmt);
    wreq_vprintf(w, fmt, ap);
    va_end(ap);
    size_t n = w->len - size_room;
    char *d = wreq_data(w);
    if (c->http10) {
        memmove(d, d + size_room, n);
        w->len = n;
    } else {
        char line[16];
        int ln = snprintf(line, sizeof line, "%zx\r\n", n);
        size_t start = size_room - (size_t)ln;
        memcpy(d + start, line, (size_t)ln);
        memmove(d, d + start, n + (size_t)ln);
        w->len = n + (size_t)ln;
        wreq_append(w, last ? "\r\n0\r\n\r\n" : "\r\n", last ? 7 : 2);
    }
    wreq_send(c, w);
}

/* ---- requests ---- */

/* Counts the end of a request that got (or will never get) its answer. */
static void request_finished(struct fake_conn *c)
{
    if (c->active) {
        c->active = false;
        c->f->st.active--;
    }
}

/*
 * The current response is fully queued: go back to parsing, unless the
 * connection must end or the client is slow to read.
 */
static void response_done(struct fake_conn *c)
{
    request_finished(c);
    if (c->state == FAKE_CONN_CLOSED || c->state == FAKE_CONN_ENDING)
        return;
    if (!c->keep_alive) {
        fake_conn_end(c);
        return;
    }
    if (output_full(c)) {
        c->state = FAKE_CONN_DRAINING;
        return;
    }
    c->state = FAKE_CONN_READING;
    if (!c->in_parse)
        fake_conn_resume(c);
}

static void stream_cut(struct fake_conn *c)
{
    if (c->stream_open) {
        c->stream_open = false;
        c->f->st.streams_cut++;
    }
    request_finished(c);
    fake_conn_end(c);
}

static void stream_error_end(struct fake_conn *c)
{
    send_event(c, false, true,
               "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
               "\"message\":\"Overloaded\"}}\n\n");
    c->stream_open = false;
    c->f->st.streams_errored++;
    response_done(c);
}

static void on_timer(uv_timer_t *t);

/*
 * Produces stream events until the stream ends, a gap must pass, or the
 * client's output queue is too full (on_write calls back here).
 */
static void stream_step(struct fake_conn *c)
{
    const struct fakeup_opts *k = &c->k;
    for (;;) {
        if (c->state != FAKE_CONN_STREAMING)
            return;
        if (output_full(c)) {
            c->stream_blocked = true;
            return;
        }
        c->stream_blocked = false;
        if (c->phase == PHASE_PRELUDE) {
            if (k->close_after == 0) {
                stream_cut(c);
                return;
            }
            if (k->error_after == 0) {
                stream_error_end(c);
                return;
            }
            send_event(c, false, false,
                       "event: content_block_start\ndata: {\"type\":\"content_block_start\","
                       "\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
            send_event(c, false, false, "event: ping\ndata: {\"type\": \"ping\"}\n\n");
            c->phase = PHASE_DELTAS;
            continue;
        }
        if (c->sent < k->events) {
            if (k->gap_ms > 0 && !c->gap_done) {
                uv_timer_start(&c->timer, on_timer, (uint64_t)k->gap_ms, 0);
                return;
            }
            c->gap_done = false;
            send_event(c, false, false,
                       "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                       "\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"w%d \"}}\n\n",
                       c->sent);
            c->sent++;
            if (k->close_after == c->sent) {
                stream_cut(c);
                return;
            }
            if (k->error_after == c->sent) {
                stream_error_end(c);
                return;
            }
            continue;
        }
        send_event(c, false, false,
                   "event: content_block_stop\ndata: {\"type\":\"content_block_stop\","
                   "\"index\":0}\n\n");
        send_event(c, false, false,
                   "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":"
                   "{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},"
                   "\"usage\":{\"output_tokens\":%d}}\n\n",
                   k->events);
        send_event(c, false, true, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        if (c->stream_open) {
            c->stream_open = false;
            c->f->st.streams_completed++;
        }
        response_done(c);
        return;
    }
}

static void stream_begin(struct fake_conn *c)
{
    c->state = FAKE_CONN_STREAMING;
    if (c->http10)
        c->keep_alive = false; /* no chunked encoding: the close ends the body */
    c->phase = PHASE_PRELUDE;
    c->sent = 0;
    c->gap_done = false;
    c->stream_blocked = false;
    int mlen;
    const char *model = req_model(c, &mlen);
    send_event(c, true, false,
               "event: message_start\ndata: {\"type\":\"message_start\",\"message\":"
               "{\"id\":\"msg_fake_%llu\",\"type\":\"message\",\"role\":\"assistant\","
               "\"model\":\"%.*s\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,"
               "\"usage\":{\"input_tokens\":%llu,\"output_tokens\":1}}}\n\n",
               (unsigned long long)c->id, mlen, model, input_tokens(c));
    stream_step(c);
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
static cJSON *models_json(const struct fake_conn *c)
{
    cJSON *j = cJSON_CreateObject();
    cJSON *data = cJSON_AddArrayToObject(j, "data");
    const char *l = models_list(&c->k);
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
static void respond(struct fake_conn *c)
{
    struct fakeup *f = c->f;
    c->state = FAKE_CONN_READING;
    switch (c->reply) {
    case REPLY_ERROR: send_error(c, c->status, c->err_type, c->err_msg); break;
    case REPLY_JSON: send_message(c); break;
    case REPLY_COUNT: {
        struct wreq *w = wreq_get(c);
        wreq_printf(w, "{\"input_tokens\":%llu}", input_tokens(c));
        put_head(c, w, c->status, "application/json", (long long)w->len);
        wreq_send(c, w);
        break;
    }
    case REPLY_ROOT: {
        struct wreq *w = wreq_get(c);
        wreq_printf(w, "fake-upstream %s ok\n", f->opts.name);
        put_head(c, w, 200, "text/plain", (long long)w->len);
        if (c->is_head)
            w->len = 0;
        wreq_send(c, w);
        break;
    }
    case REPLY_MODELS: send_json_doc(c, 200, models_json(c)); break;
    case REPLY_CUT:
        request_finished(c);
        fake_conn_end(c);
        return;
    case REPLY_STREAM: stream_begin(c); return;
    }
    response_done(c);
}

static bool view_eq(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    return alen == blen && memcmp(a, b, alen) == 0;
}

static void set_error(struct fake_conn *c, int status, const char *msg)
{
    c->reply = REPLY_ERROR;
    c->status = status;
    c->err_type = error_type(status);
    snprintf(c->err_msg, sizeof c->err_msg, "%s", msg);
}

/* Decides the answer to a request outside /_fake/ (sent now or later). */
static void decide(struct fake_conn *c)
{
    struct fakeup *f = c->f;
    c->status = 200;
    if (c->route == ROUTE_MESSAGES)
        f->st.messages++;
    if (c->bad_knob) {
        set_error(c, 400, "fake-upstream: bad x-fake-* header value");
        return;
    }
    if (c->route == ROUTE_NOT_FOUND && c->models_path && c->k.models[0]) {
        if (!c->authed)
            set_error(c, 401, "invalid x-api-key");
        else
            c->reply = REPLY_MODELS;
        return;
    }
    if (c->route == ROUTE_NOT_FOUND) {
        set_error(c, 404, "fake-upstream: no such path");
        return;
    }
    if (c->route == ROUTE_ROOT) {
        c->reply = REPLY_ROOT;
        return;
    }
    if (c->k.models[0] && route_is_v1(c->route) && c->authed && c->body_ok) {
        if (!c->model_ok) {
            set_error(c, 400, "model: Field required");
            return;
        }
        if (!model_served(&c->k, c->model_raw, c->model_raw_len)) {
            /* The real API's answer to a retired or unknown model; the
             * message goes into JSON as it is, so the escaped form, cut
             * where no escape is split. */
            char name[141];
            json_escape(name, sizeof name, c->model_raw, c->model_raw_len);
            char msg[160];
            snprintf(msg, sizeof msg, "model: %s", name);
            set_error(c, 404, msg);
            return;
        }
    }
    bool stream = c->route == ROUTE_MESSAGES && c->body_ok && c->stream;
    if (stream && c->k.status < 400 && c->authed) {
        /* Counted from now on, so that a hung or delayed stream the client
           abandons shows up in streams_aborted. */
        f->st.streams_started++;
        c->stream_open = true;
    }
    if (!c->authed) {
        set_error(c, 401, "invalid x-api-key");
        return;
    }
    if (!c->body_ok) {
        set_error(c, 400, "request body is not a JSON object");
        return;
    }
    if (c->k.status >= 400) {
        char msg[128];
        snprintf(msg, sizeof msg, "fake-upstream %s: status %d", f->opts.name, c->k.status);
        set_error(c, c->k.status, msg);
        return;
    }
    c->status = c->k.status;
    if (c->route == ROUTE_COUNT)
        c->reply = REPLY_COUNT;
    else if (stream)
        c->reply = REPLY_STREAM;
    else if (c->k.close_after >= 0)
        c->reply = REPLY_CUT;
    else
        c->reply = REPLY_JSON;
}

/* Makes the request just read the "last request" of /_fake/stats. */
static void record_last(struct fake_conn *c, const struct http_req *r)
{
    struct fakeup *f = c->f;
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
    f->last_body_bytes = c->body_bytes;
    f->last_crc = c->crc;
    f->have_last = true;
    f->st.bytes_in += c->body_bytes;
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
    const struct fakeup_stats *s = &f->st;
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
    uint64_t active = f->st.active, open = f->st.connections_open;
    memset(&f->st, 0, sizeof f->st);
    f->st.active = active;
    f->st.connections_open = open;
    f->have_last = false;
    buf_reset(&f->last_hdrs);
    buf_reset(&f->last_url);
}

static void fake_error(struct fake_conn *c, int status, const char *msg)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "type", "error");
    cJSON *e = cJSON_AddObjectToObject(j, "error");
    cJSON_AddStringToObject(e, "type", error_type(status));
    cJSON_AddStringToObject(e, "message", msg);
    c->f->st.errors++;
    send_json_doc(c, status, j);
}

/* Applies a POST /_fake/config body: all knobs or none. */
static void fake_config(struct fake_conn *c, const struct buf *body)
{
    struct fakeup *f = c->f;
    if (body->len > CFG_BODY_MAX) {
        fake_error(c, 413, "config body too large");
        return;
    }
    cJSON *doc = cJSON_ParseWithLength(body->data ? body->data : "", body->len);
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        fake_error(c, 400, "config body must be a JSON object");
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
            fake_error(c, 400, msg);
            return;
        }
    }
    cJSON_Delete(doc);
    f->opts = o;
    send_json_doc(c, 200, knobs_json(&f->opts));
}

static void fake_route(struct fake_conn *c, const struct http_req *r)
{
    switch (c->route) {
    case ROUTE_STATS: send_json_doc(c, 200, stats_json(c->f)); break;
    case ROUTE_CONFIG_GET: send_json_doc(c, 200, knobs_json(&c->f->opts)); break;
    case ROUTE_CONFIG_SET: fake_config(c, &r->body); break;
    case ROUTE_RESET:
        reset_stats(c->f);
        send_json_doc(c, 200, stats_json(c->f));
        break;
    default: fake_error(c, 404, "no such /_fake/ path"); break;
    }
    response_done(c);
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
static void body_scan(struct fake_conn *c, const struct buf *body)
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
    c->body_ok = true;
    c->stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, "stream"));
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(doc, "model");
    if (cJSON_IsString(m) && m->valuestring) {
        size_t n = strlen(m->valuestring);
        c->model_ok = true;
        c->model_raw_len = n < MODEL_MAX - 1 ? n : MODEL_MAX - 1;
        memcpy(c->model_raw, m->valuestring, c->model_raw_len);
        c->model_raw[c->model_raw_len] = '\0';
        c->model_len = json_escape(c->model, sizeof c->model, m->valuestring, n);
    }
    cJSON_Delete(doc);
}

/*
 * Takes from the parsed request what its answer needs: route, framing,
 * the x-fake-* knobs (in order), whether a credential matches the token,
 * and the body's length, CRC-32 and JSON members.
 */
static void request_take(struct fake_conn *c, const struct http_req *r)
{
    int method = c->rp.parser.method;
    size_t tlen = strlen(r->target);
    c->k = c->f->opts;
    c->route = route_of(method, r->target, tlen);
    c->models_path =
        method == HTTP_GET && suffix_eq(r->target, path_len(r->target, tlen), "/v1/models");
    c->keep_alive = r->keep_alive;
    c->http10 = r->http_minor == 0;
    c->is_head = r->is_head;
    c->bad_knob = false;
    c->stream_open = false;
    c->reply = REPLY_ERROR;

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
                    c->bad_knob = true;
                } else {
                    memcpy(v, h->value, h->value_len);
                    v[h->value_len] = '\0';
                    if (knob_set(&c->k, kn, v) < 0)
                        c->bad_knob = true;
                }
            }
        }
    }
    const char *tok = c->k.token;
    c->authed = !tok[0] || (key && view_eq(key, key_len, tok)) ||
                (bearer && view_eq(bearer, bearer_len, tok));

    c->body_bytes = 0;
    c->crc = 0;
    c->body_ok = c->stream = c->model_ok = false;
    c->model_len = c->model_raw_len = 0;
    if (route_is_api(c->route)) {
        c->body_bytes = r->body.len;
        if (r->body.len)
            c->crc = (uint32_t)crc32_z(0, (const unsigned char *)r->body.data, r->body.len);
    }
    if (route_is_v1(c->route))
        body_scan(c, &r->body);
}

/*
 * A complete request was parsed: answer it now or start what answers it
 * later.  The parser is then made ready for the next request, which frees
 * the body and the header fields while a long answer runs.
 */
static void dispatch(struct fake_conn *c)
{
    struct fakeup *f = c->f;
    const struct http_req *r = &c->rp.req;
    request_take(c, r);
    if (!route_is_api(c->route)) {
        fake_route(c, r);
        reqparse_next(&c->rp, BODY_MAX);
        return;
    }
    f->st.requests++;
    c->id = ++f->next_id;
    c->active = true;
    f->st.active++;
    decide(c);
    record_last(c, r);
    reqparse_next(&c->rp, BODY_MAX);
    if (route_is_v1(c->route) && c->k.hang) {
        c->state = FAKE_CONN_HANGING;
        return;
    }
    if (route_is_v1(c->route) && c->k.latency_ms > 0) {
        c->state = FAKE_CONN_LATENCY;
        uv_timer_start(&c->timer, on_timer, (uint64_t)c->k.latency_ms, 0);
        return;
    }
    respond(c);
}

static void on_timer(uv_timer_t *t)
{
    struct fake_conn *c = t->data;
    if (c->state == FAKE_CONN_LATENCY) {
        respond(c);
    } else if (c->state == FAKE_CONN_STREAMING) {
        c->gap_done = true;
        stream_step(c);
    }
}

/* ---- connections ---- */

/* What reqparse refused: its status and reason, then the connection ends. */
static void fake_bad_request(struct fake_conn *c)
{
    int status = c->rp.status ? c->rp.status : 400;
    char msg[160];
    snprintf(msg, sizeof msg, "fake-upstream: %s",
             c->rp.message ? c->rp.message : "malformed HTTP request");
    c->route = ROUTE_NONE;
    c->keep_alive = false;
    c->http10 = false;
    send_error(c, status, c->rp.type ? c->rp.type : error_type(status), msg);
    fake_conn_end(c);
}

static const char continue_100[] = "HTTP/1.1 100 Continue\r\n\r\n";

static bool fake_conn_busy(const struct fake_conn *c)
{
    return c->state == FAKE_CONN_LATENCY || c->state == FAKE_CONN_STREAMING ||
           c->state == FAKE_CONN_HANGING || c->state == FAKE_CONN_DRAINING;
}

/*
 * Parses input, dispatching each complete request.  from_pending says data
 * is c->pending's content: what is left unparsed stays there.  Otherwise
 * what is left when the connection gets busy is copied to pending.
 */
static void fake_conn_parse(struct fake_conn *c, const char *data, size_t len, bool from_pending)
{
    c->in_parse = true;
    while (len > 0) {
        size_t used = reqparse_feed(&c->rp, data, len);
        data += used;
        len -= used;
        if (c->rp.send_continue) {
            c->rp.send_continue = false;
            struct wreq *w = wreq_get(c);
            wreq_append(w, continue_100, sizeof continue_100 - 1);
            wreq_send(c, w);
        }
        if (c->rp.phase == REQPARSE_ERROR) {
            fake_bad_request(c);
            len = 0;
            break;
        }
        if (c->rp.phase != REQPARSE_DONE)
            break; /* all of it taken: the request goes on in the next read */
        dispatch(c);
        if (c->state != FAKE_CONN_READING)
            break;
    }
    if (from_pending) {
        if (len == 0 || !fake_conn_busy(c)) {
            buf_reset(&c->pending);
            c->pending_off = 0;
        } else {
            c->pending_off = (size_t)(data - c->pending.data);
        }
    } else if (len > 0 && fake_conn_busy(c)) {
        buf_append(&c->pending, data, len); /* pending is empty here: it fits */
    }
    c->in_parse = false;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct fake_conn *c = h->data;
    (void)suggested;
    *buf = uv_buf_init(c->f->rbuf, sizeof c->f->rbuf);
}

static void fake_conn_read_start(struct fake_conn *c)
{
    if (c->reading || c->eof || c->state == FAKE_CONN_CLOSED)
        return;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->reading = true;
}

static void fake_conn_read_stop(struct fake_conn *c)
{
    if (!c->reading)
        return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
}

/* After a response: parse what was pipelined meanwhile, read again. */
static void fake_conn_resume(struct fake_conn *c)
{
    if (c->pending.len > c->pending_off)
        fake_conn_parse(c, c->pending.data + c->pending_off, c->pending.len - c->pending_off, true);
    if ((c->state == FAKE_CONN_READING || fake_conn_busy(c)) &&
        c->pending.len - c->pending_off < PENDING_STOP)
        fake_conn_read_start(c);
    if (c->eof && c->state == FAKE_CONN_READING)
        fake_conn_end(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct fake_conn *c = s->data;
    if (nread == 0 || c->state == FAKE_CONN_CLOSED)
        return;
    if (nread < 0) {
        fake_conn_read_stop(c);
        c->eof = true;
        if (nread != UV_EOF) {
            fake_conn_close(c);
            return;
        }
        /* The client is gone (or half-closed: treated the same).  A response
           still being produced is aborted; queued ones are flushed. */
        if (c->state == FAKE_CONN_READING || c->state == FAKE_CONN_DRAINING)
            fake_conn_end(c);
        else if (c->state != FAKE_CONN_ENDING)
            fake_conn_close(c);
        return;
    }
    if (c->state == FAKE_CONN_ENDING)
        return;
    if (c->state == FAKE_CONN_READING && c->pending.len == 0) {
        fake_conn_parse(c, buf->base, (size_t)nread, false);
    } else {
        if (c->pending_off) {
            buf_consume(&c->pending, c->pending_off);
            c->pending_off = 0;
        }
        buf_append(&c->pending, buf->base, (size_t)nread);
        if (c->state == FAKE_CONN_READING)
            fake_conn_parse(c, c->pending.data, c->pending.len, true);
    }
    if (fake_conn_busy(c) && c->pending.len - c->pending_off >= PENDING_STOP)
        fake_conn_read_stop(c);
}

static void on_handle_closed(uv_handle_t *h);

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct fake_conn *c = req->data;
    (void)status;
    fake_conn_close(c);
}

/*
 * Ends the connection after what is queued: shutdown (flush, FIN), then
 * close.  Input is read and discarded meanwhile, so that closing does not
 * turn into a reset that could destroy unread response bytes.
 */
static void fake_conn_end(struct fake_conn *c)
{
    if (c->state == FAKE_CONN_ENDING || c->state == FAKE_CONN_CLOSED)
        return;
    c->state = FAKE_CONN_ENDING;
    uv_timer_stop(&c->timer);
    fake_conn_read_start(c);
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
        fake_conn_close(c);
}

/*
 * The one way a connection ends.  Reached from: read error or EOF during a
 * response (client gone), write error, shutdown done (connection: close,
 * close_after, bad request, EOF when idle) and fakeup_close().  Counts
 * aborted requests and streams.  Idempotent.
 */
static void fake_conn_close(struct fake_conn *c)
{
    struct fakeup *f = c->f;
    if (c->state == FAKE_CONN_CLOSED)
        return;
    if (c->stream_open) {
        c->stream_open = false;
        f->st.streams_aborted++;
    }
    if (c->active) {
        c->active = false;
        f->st.active--;
        f->st.aborted++;
    }
    f->st.connections_open--;
    c->state = FAKE_CONN_CLOSED;
    c->reading = false;
    if (c->prev)
        c->prev->next = c->next;
    else
        f->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

static void fakeup_handle_gone(struct fakeup *f)
{
    if (--f->open_handles > 0 || !f->closing)
        return;
    if (f->done)
        f->done(f->done_ud);
    while (f->free_wreqs) {
        struct wreq *w = f->free_wreqs;
        f->free_wreqs = w->next;
        free(w);
    }
    buf_release(&f->last_url);
    buf_release(&f->last_hdrs);
    free(f);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct fake_conn *c = h->data;
    if (--c->open_handles > 0)
        return;
    struct fakeup *f = c->f;
    buf_release(&c->pending);
    reqparse_release(&c->rp);
    free(c);
    fakeup_handle_gone(f);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct fakeup *f = server->data;
    if (status < 0 || f->closing)
        return;
    struct fake_conn *c = xcalloc(1, sizeof *c);
    c->f = f;
    buf_init(&c->pending, PENDING_MAX);
    reqparse_init(&c->rp, BODY_MAX);
    /* A test has the fake stand in for an HTTP proxy (libcurl then sends
     * http://host/path): the API routes match by suffix either way. */
    c->rp.absolute_ok = true;
    uv_tcp_init(f->loop, &c->tcp);
    uv_timer_init(f->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    f->open_handles++;
    c->state = FAKE_CONN_READING;
    c->next = f->conns;
    if (f->conns)
        f->conns->prev = c;
    f->conns = c;
    f->st.connections++;
    f->st.connections_open++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        fake_conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    fake_conn_read_start(c);
}

/* ---- public API ---- */

static void on_listener_closed(uv_handle_t *h)
{
    fakeup_handle_gone(h->data);
}

struct fakeup *fakeup_new_err(uv_loop_t *loop, const struct fakeup_opts *o, int *err)
{
    struct fakeup *f = xcalloc(1, sizeof *f);
    f->loop = loop;
    f->opts = *o;
    buf_init(&f->last_url, REQPARSE_MAX_TARGET);
    buf_init(&f->last_hdrs, LAST_HDRS_MAX);
    uv_tcp_init(loop, &f->listener);
    f->listener.data = f;
    f->open_handles = 1;

    struct sockaddr_storage ss;
    int rc;
    if (strchr(o->bind, ':'))
        rc = uv_ip6_addr(o->bind, o->port, (struct sockaddr_in6 *)&ss);
    else
        rc = uv_ip4_addr(o->bind, o->port, (struct sockaddr_in *)&ss);
    if (rc == 0)
        rc = uv_tcp_bind(&f->listener, (const struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&f->listener, LISTEN_BACKLOG, on_connection);
    int len = sizeof ss;
    if (rc == 0)
        rc = uv_tcp_getsockname(&f->listener, (struct sockaddr *)&ss, &len);
    if (rc < 0) {
        if (err)
            *err = rc;
        f->closing = true;
        uv_close((uv_handle_t *)&f->listener, on_listener_closed);
        return NULL;
    }
    if (ss.ss_family == AF_INET6)
        f->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    else
        f->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    f->opts.port = f->port;
    if (err)
        *err = 0;
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
}

void fakeup_close(struct fakeup *f, void (*done)(void *), void *ud)
{
    if (!f || f->closing)
        return;
    f->closing = true;
    f->done = done;
    f->done_ud = ud;
    while (f->conns)
        fake_conn_close(f->conns);
    uv_close((uv_handle_t *)&f->listener, on_listener_closed);
}
