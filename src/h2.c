/*
 * h2: HTTP/2 sessions over nghttp2; see h2.h for the contract.
 *
 * What it owns:
 *   struct h2_sess    the nghttp2 session (no I/O of its own: mem_recv and
 *                     mem_send), the list of our streams, the response head
 *                     being collected ([name NUL value NUL] records: one
 *                     header block at a time per connection), GOAWAY and
 *                     PING state, and the cache of nghttp2's small blocks.
 *   struct h2_stream  one exchange on the session: its status and the DATA
 *                     kept while it is paused.
 *
 * Streams are found by id (find()): through nghttp2's stream user data
 * once their HEADERS went out, which stream_free() clears, else in the
 * session's list.  A cancelled stream is freed at once, and whatever
 * nghttp2 still says about its id finds nothing and is dropped (its bytes
 * consumed on the connection window).
 *
 * Results: the nghttp2 callbacks only record how a stream ended (closed,
 * rc, msg, retry); reap() hands them to the close callback once nghttp2 has
 * returned (busy == 0), so a callback may open, resume or cancel streams,
 * on this session too.  A paused stream that nghttp2 has closed keeps its
 * result until h2_stream_resume() has delivered the kept bytes.
 *
 * Limits: response heads up to 64 KiB and 200 fields (a stream error
 * beyond), request heads as the caller gives them (the proxy caps them).
 */
#include "h2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "util.h"

#define H2_MAX_HEAD_BYTES (64 * 1024)
#define H2_MAX_HEADERS 200
#define H2_MAX_REQ_HEADERS 256
#define H2_HEAD_STACK 4096            /* lower-cased request names on the stack, not the heap */
#define H2_FLUSH_COALESCE (16 * 1024) /* a full TLS record (see h2_sess_flush) */

struct h2_stream {
    struct h2_sess *s;             /* borrows */
    struct h2_stream *prev, *next; /* borrow: the session's list */
    void *ud;                      /* borrows: the exchange */
    int32_t id;
    const char *body; /* borrows */
    size_t body_len, body_off;
    uint32_t nhdrs;
    int status;
    char *pend; /* owns: DATA kept while paused, not yet consumed */
    size_t pend_len;
    enum upstream_rc rc;
    enum h2_retry retry;
    bool head_done, got_byte, paused, closed;
    bool in_cb; /* a callback of this stream runs: cancel defers the free */
    char msg[160];
};

/* nghttp2's memory (see mem_*): blocks of 64 << class bytes, a few of
 * each kept for the next stream, so the dozen small allocations nghttp2
 * makes per request (stream, frames, header copies) do not each go to
 * malloc.  Under AddressSanitizer a kept block is poisoned, so a use
 * after nghttp2 freed it is still reported. */
#if defined(__SANITIZE_ADDRESS__)
#define H2_MEM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define H2_MEM_ASAN 1
#endif
#endif
#ifdef H2_MEM_ASAN
#include <sanitizer/asan_interface.h>
#define H2_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define H2_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define H2_POISON(p, n) ((void)(p), (void)(n))
#define H2_UNPOISON(p, n) ((void)(p), (void)(n))
#endif
#define H2_MEM_CLASSES 6 /* 64 .. 2048 bytes */
#define H2_MEM_KEEP 16   /* per class: at most 64 KiB per session */

struct h2_blk {
    union {
        struct h2_blk *next; /* on a free list */
        size_t size;         /* in use: what a block of no class holds */
    } u;
    uint32_t cls; /* H2_MEM_CLASSES: malloc'd to size */
    uint32_t pad;
};

struct h2_mem {
    struct h2_blk *free[H2_MEM_CLASSES];
    unsigned n_free[H2_MEM_CLASSES];
};

struct h2_sess {
    nghttp2_session *ng; /* owns */
    struct h2_mem mem;   /* owns: nghttp2's cached blocks */
    struct h2_ops ops;
    void *conn; /* borrows */
    struct h2_stream *head;
    size_t n_streams;
    size_t n_closed; /* of them, closed: reap() has something to look at */
    /* The response head being received, name NUL value NUL: one header
     * block at a time on a connection (CONTINUATION frames follow their
     * HEADERS at once), so one buffer for the session, kept between
     * streams. */
    char *hb; /* owns */
    size_t hb_len, hb_size;
    unsigned busy; /* inside nghttp2 */
    bool want_flush;
    bool dead;
    bool goaway;
    bool settings_seen; /* the server's first SETTINGS arrived */
    bool ping_pending;
    char err[160];
};

static struct h2_stream *find_slow(const struct h2_sess *s, int32_t id)
{
    for (struct h2_stream *st = s->head; st; st = st->next)
        if (st->id == id)
            return st;
    return NULL;
}

/* A stream of ours by id: through nghttp2's stream user data, set once
 * its HEADERS went out (on_frame_send) and cleared when the stream is
 * freed, so a lookup per DATA frame costs no walk of a list of up to
 * H2_MAX_STREAMS; the list for streams not yet sent, or closed in
 * nghttp2 (whose user data it no longer gives out). */
static struct h2_stream *find(const struct h2_sess *s, int32_t id)
{
    struct h2_stream *st = nghttp2_session_get_stream_user_data(s->ng, id);
    return st ? st : find_slow(s, id);
}

static void unlink_stream(struct h2_stream *st)
{
    struct h2_sess *s = st->s;
    if (st->prev)
        st->prev->next = st->next;
    else
        s->head = st->next;
    if (st->next)
        st->next->prev = st->prev;
    st->prev = st->next = NULL;
    s->n_streams--;
    if (st->closed)
        s->n_closed--;
}

static void stream_free(struct h2_stream *st)
{
    if (st->id > 0)
        nghttp2_session_set_stream_user_data(st->s->ng, st->id, NULL); /* fails once closed */
    free(st->pend);
    free(st);
}

/* msg into st->msg, cut to fit: no snprintf per request for "". */
static void set_msg(struct h2_stream *st, const char *msg)
{
    size_t n = strnlen(msg, sizeof st->msg - 1);
    memcpy(st->msg, msg, n);
    st->msg[n] = '\0';
}

/* Records how the stream ended; the first result counts. */
static void stream_end(struct h2_stream *st, enum upstream_rc rc, const char *msg,
                       enum h2_retry retry)
{
    if (st->closed)
        return;
    st->closed = true;
    st->s->n_closed++;
    st->rc = rc;
    st->retry = retry;
    set_msg(st, msg);
}

/* A stream error of ours: the server hears RST_STREAM, the caller rc. */
static void stream_reset(struct h2_stream *st, uint32_t code, enum upstream_rc rc, const char *msg)
{
    stream_end(st, rc, msg, H2_RETRY_NO);
    nghttp2_submit_rst_stream(st->s->ng, NGHTTP2_FLAG_NONE, st->id, code);
}

/* Hands out the results of ended streams; see the top of this file. */
static void reap(struct h2_sess *s)
{
    if (s->busy || s->n_closed == 0)
        return; /* no walk of the list after every read for nothing */
    for (;;) {
        struct h2_stream *st = s->head;
        while (st && !(st->closed && !st->in_cb && !(st->ud && st->paused && st->pend_len > 0)))
            st = st->next;
        if (!st)
            return;
        unlink_stream(st);
        void *ud = st->ud;
        if (ud) {
            char msg[sizeof st->msg];
            memcpy(msg, st->msg, sizeof msg);
            enum upstream_rc rc = st->rc;
            enum h2_retry retry = st->retry;
            stream_free(st);
            s->ops.close(ud, rc, msg, retry);
        } else {
            stream_free(st);
        }
    }
}

/* ---- nghttp2 callbacks ----------------------------------------------------- */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
    (void)ng;
    struct h2_sess *s = user;
    struct h2_stream *st = find(s, f->hd.stream_id);
    if (st && !st->head_done) {
        s->hb_len = 0;
        st->nhdrs = 0;
        st->status = 0;
    }
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    (void)ng;
    (void)flags;
    struct h2_sess *s = user;
    struct h2_stream *st = find(s, f->hd.stream_id);
    if (!st || st->head_done || st->closed)
        return 0; /* trailers, or a stream we no longer care about */
    st->got_byte = true;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        /* Three digits, 100-999; anything else is refused in deliver_head
         * (nghttp2 lets "003" through, which would pass as interim). */
        int v = valuelen == 3 ? 0 : -1;
        for (size_t i = 0; v >= 0 && i < 3; i++)
            v = value[i] >= '0' && value[i] <= '9' ? v * 10 + (value[i] - '0') : -1;
        st->status = v;
        return 0;
    }
    if (namelen > 0 && name[0] == ':')
        return 0;
    size_t need = namelen + valuelen + 2;
    if (++st->nhdrs > H2_MAX_HEADERS || s->hb_len + need > H2_MAX_HEAD_BYTES) {
        stream_reset(st, NGHTTP2_INTERNAL_ERROR, UPSTREAM_ERR_PROTOCOL,
                     "malformed response from upstream: header block too large (over 64 KiB "
                     "or 200 fields)");
        return 0;
    }
    if (s->hb_len + need > s->hb_size) {
        size_t size = s->hb_size ? s->hb_size : 1024;
        while (size < s->hb_len + need)
            size *= 2;
        s->hb = xrealloc(s->hb, size);
        s->hb_size = size;
    }
    char *p = s->hb + s->hb_len;
    memcpy(p, name, namelen);
    p[namelen] = '\0';
    memcpy(p + namelen + 1, value, valuelen);
    p[namelen + 1 + valuelen] = '\0';
    s->hb_len += need;
    return 0;
}

static void deliver_head(struct h2_stream *st)
{
    struct h2_sess *s = st->s;
    if (st->status < 100) {
        stream_reset(st, NGHTTP2_PROTOCOL_ERROR, UPSTREAM_ERR_PROTOCOL,
                     "malformed response from upstream: bad :status");
        return;
    }
    if (st->status < 200) {
        s->hb_len = 0; /* an interim head: the final one follows */
        st->nhdrs = 0;
        return;
    }
    st->head_done = true;
    struct upstream_hdr hdrs[H2_MAX_HEADERS];
    size_t n = 0;
    /* hb is NULL for a head of :status alone. */
    for (const char *p = s->hb, *end = p ? p + s->hb_len : p; p < end && n < H2_MAX_HEADERS;) {
        struct upstream_hdr *h = &hdrs[n++];
        h->name = p;
        h->name_len = strlen(p);
        p += h->name_len + 1;
        h->value = p;
        h->value_len = strlen(p);
        p += h->value_len + 1;
    }
    st->in_cb = true;
    bool ok = s->ops.head(st->ud, st->status, hdrs, n);
    st->in_cb = false;
    s->hb_len = 0;
    if (s->hb_size > 4096) { /* kept for the next head, unless a big one grew it */
        free(s->hb);
        s->hb = NULL;
        s->hb_size = 0;
    }
    if (!st->ud)
        return; /* cancelled inside head() */
    if (!ok)
        stream_reset(st, NGHTTP2_CANCEL, UPSTREAM_ERR_ABORTED, "stopped by the head callback");
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
    (void)ng;
    struct h2_sess *s = user;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS: {
        struct h2_stream *st = find(s, f->hd.stream_id);
        if (st && st->ud && !st->head_done && !st->closed)
            deliver_head(st);
        break;
    }
    case NGHTTP2_GOAWAY: s->goaway = true; break;
    case NGHTTP2_SETTINGS:
        if (!(f->hd.flags & NGHTTP2_FLAG_ACK))
            s->settings_seen = true;
        break;
    case NGHTTP2_PING:
        if (f->hd.flags & NGHTTP2_FLAG_ACK)
            s->ping_pending = false;
        break;
    default: break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *user)
{
    (void)flags;
    struct h2_sess *s = user;
    struct h2_stream *st = find(s, id);
    if (!st || !st->ud || st->closed) {
        nghttp2_session_consume_connection(ng, len);
        return 0;
    }
    st->got_byte = true;
    if (st->paused) {
        /* The server may send up to the window: kept, not consumed. */
        st->pend = xrealloc(st->pend, st->pend_len + len);
        memcpy(st->pend + st->pend_len, data, len);
        st->pend_len += len;
        return 0;
    }
    st->in_cb = true;
    size_t r = s->ops.body(st->ud, (const char *)data, len);
    st->in_cb = false;
    if (!st->ud) {
        nghttp2_session_consume_connection(ng, len); /* cancelled inside body() */
        return 0;
    }
    if (r == len) {
        nghttp2_session_consume(ng, id, len);
    } else if (r == UPSTREAM_PAUSE) {
        st->paused = true;
        st->pend = xmalloc(len);
        memcpy(st->pend, data, len);
        st->pend_len = len;
    } else {
        nghttp2_session_consume_connection(ng, len);
        stream_reset(st, NGHTTP2_CANCEL, UPSTREAM_ERR_ABORTED, "stopped by the body callback");
    }
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *user)
{
    (void)ng;
    struct h2_stream *st = find(user, id);
    if (!st || st->closed)
        return 0;
    char msg[160];
    if (code == NGHTTP2_NO_ERROR) {
        if (st->head_done)
            stream_end(st, UPSTREAM_OK, "", H2_RETRY_NO);
        else
            stream_end(st, UPSTREAM_ERR_PROTOCOL,
                       "malformed response from upstream: HTTP/2 stream ended without a response",
                       H2_RETRY_NO);
    } else if (code == NGHTTP2_REFUSED_STREAM && !st->got_byte) {
        stream_end(st, UPSTREAM_ERR_RECV, "upstream refused the HTTP/2 stream", H2_RETRY_SAFE);
    } else if (code == NGHTTP2_PROTOCOL_ERROR) {
        stream_end(st, UPSTREAM_ERR_PROTOCOL,
                   "malformed response from upstream: HTTP/2 stream error PROTOCOL_ERROR",
                   H2_RETRY_NO);
    } else {
        snprintf(msg, sizeof msg, "upstream reset the HTTP/2 stream (%s)",
                 nghttp2_http2_strerror(code));
        stream_end(st, UPSTREAM_ERR_RECV, msg, H2_RETRY_NO);
    }
    return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
    struct h2_stream *st = NULL;
    if (f->hd.type == NGHTTP2_HEADERS) {
        /* The stream is open in nghttp2 now: find() takes the short way
         * from here on (stream_free clears it). */
        st = find_slow(user, f->hd.stream_id);
        if (st)
            nghttp2_session_set_stream_user_data(ng, st->id, st);
    }
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        if (!st)
            st = find(user, f->hd.stream_id);
        if (st && st->ud)
            st->s->ops.sent(st->ud);
    }
    return 0;
}

static int on_frame_not_send(nghttp2_session *ng, const nghttp2_frame *f, int err, void *user)
{
    (void)ng;
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct h2_stream *st = find(user, f->hd.stream_id);
    if (st) {
        /* Never sent (GOAWAY came first, or the stream bound): safe to send
         * elsewhere. */
        char msg[160];
        snprintf(msg, sizeof msg, "HTTP/2 request not sent: %s", nghttp2_strerror(err));
        stream_end(st, UPSTREAM_ERR_SEND, msg, H2_RETRY_SAFE);
    }
    return 0;
}

static ssize_t on_read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *user)
{
    (void)ng;
    (void)src;
    struct h2_stream *st = find(user, id);
    if (!st)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    size_t n = st->body_len - st->body_off;
    if (n > len)
        n = len;
    if (n)
        memcpy(buf, st->body + st->body_off, n);
    st->body_off += n;
    if (st->body_off == st->body_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* ---- nghttp2's memory (struct h2_mem) ---------------------------------------- */

static size_t blk_usable(const struct h2_blk *b)
{
    return b->cls < H2_MEM_CLASSES ? ((size_t)64 << b->cls) - sizeof *b : b->u.size;
}

static void *mem_malloc(size_t size, void *user)
{
    struct h2_mem *m = &((struct h2_sess *)user)->mem;
    uint32_t cls = 0;
    while (cls < H2_MEM_CLASSES && ((size_t)64 << cls) - sizeof(struct h2_blk) < size)
        cls++;
    struct h2_blk *b;
    if (cls < H2_MEM_CLASSES && m->free[cls]) {
        b = m->free[cls];
        m->free[cls] = b->u.next;
        m->n_free[cls]--;
        H2_UNPOISON(b + 1, ((size_t)64 << cls) - sizeof *b);
    } else if (cls < H2_MEM_CLASSES) {
        b = malloc((size_t)64 << cls);
    } else {
        b = size <= SIZE_MAX - sizeof *b ? malloc(sizeof *b + size) : NULL;
        if (b)
            b->u.size = size;
    }
    if (!b)
        return NULL; /* nghttp2 answers NGHTTP2_ERR_NOMEM */
    b->cls = cls;
    return b + 1;
}

static void mem_free(void *p, void *user)
{
    if (!p)
        return;
    struct h2_blk *b = (struct h2_blk *)p - 1;
    struct h2_mem *m = &((struct h2_sess *)user)->mem;
    if (b->cls < H2_MEM_CLASSES && m->n_free[b->cls] < H2_MEM_KEEP) {
        b->u.next = m->free[b->cls];
        m->free[b->cls] = b;
        m->n_free[b->cls]++;
        H2_POISON(b + 1, ((size_t)64 << b->cls) - sizeof *b);
        return;
    }
    free(b);
}

static void *mem_calloc(size_t n, size_t size, void *user)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    void *p = mem_malloc(n * size, user);
    if (p)
        memset(p, 0, n * size);
    return p;
}

static void *mem_realloc(void *p, size_t size, void *user)
{
    if (!p)
        return mem_malloc(size, user);
    if (size == 0) {
        mem_free(p, user);
        return NULL;
    }
    struct h2_blk *b = (struct h2_blk *)p - 1;
    size_t have = blk_usable(b);
    if (b->cls < H2_MEM_CLASSES && size <= have)
        return p;
    void *q = mem_malloc(size, user);
    if (!q)
        return NULL;
    memcpy(q, p, have < size ? have : size);
    mem_free(p, user);
    return q;
}

static void mem_release(struct h2_mem *m)
{
    for (int i = 0; i < H2_MEM_CLASSES; i++) {
        while (m->free[i]) {
            struct h2_blk *b = m->free[i];
            m->free[i] = b->u.next;
            H2_UNPOISON(b + 1, ((size_t)64 << i) - sizeof *b);
            free(b);
        }
        m->n_free[i] = 0;
    }
}

/* ---- sessions ------------------------------------------------------------------ */

struct h2_sess *h2_sess_new(const struct h2_ops *ops, void *conn)
{
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return NULL;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cb, on_frame_not_send);
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cb);
        return NULL;
    }
    /* Windows open only as body() takes the bytes (see the top of h2.h). */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_peer_max_concurrent_streams(opt, H2_MAX_STREAMS);
    nghttp2_option_set_max_send_header_block_length(opt, 256 * 1024);
    struct h2_sess *s = xcalloc(1, sizeof *s);
    s->ops = *ops;
    s->conn = conn;
    nghttp2_mem mem = {.mem_user_data = s,
                       .malloc = mem_malloc,
                       .free = mem_free,
                       .calloc = mem_calloc,
                       .realloc = mem_realloc};
    int rc = nghttp2_session_client_new3(&s->ng, cb, s, opt, &mem);
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    if (rc != 0) {
        mem_release(&s->mem);
        free(s);
        return NULL;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2_MAX_HEAD_BYTES},
    };
    nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
    nghttp2_session_set_local_window_size(s->ng, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW);
    return s;
}

void h2_sess_fail(struct h2_sess *s, enum upstream_rc rc, const char *msg)
{
    s->dead = true;
    for (struct h2_stream *st = s->head; st; st = st->next) {
        if (st->closed && st->ud && st->paused && st->pend_len > 0) {
            /* Its end arrived, but what it keeps cannot be delivered once
             * the session is gone: the exchange ends now, as lost, rather
             * than with the session (silently, its handle left dangling). */
            st->rc = rc;
            st->retry = H2_RETRY_NO;
            set_msg(st, msg);
            st->paused = false;
            continue;
        }
        if (st->closed)
            continue;
        stream_end(st, rc, msg, st->got_byte ? H2_RETRY_NO : H2_RETRY_LOST);
        st->paused = false; /* nothing more can come: what is kept is lost */
    }
    reap(s);
}

void h2_sess_free(struct h2_sess *s)
{
    if (!s)
        return;
    h2_sess_fail(s, UPSTREAM_ERR_RECV, "the HTTP/2 connection closed");
    while (s->head) {
        struct h2_stream *st = s->head;
        unlink_stream(st);
        stream_free(st);
    }
    nghttp2_session_del(s->ng);
    mem_release(&s->mem);
    free(s->hb);
    free(s);
}

int h2_sess_recv(struct h2_sess *s, const char *data, size_t len)
{
    if (s->dead)
        return -1;
    s->busy++;
    ssize_t r = nghttp2_session_mem_recv(s->ng, (const uint8_t *)data, len);
    s->busy--;
    if (r < 0) {
        snprintf(s->err, sizeof s->err, "HTTP/2 connection error: %s", nghttp2_strerror((int)r));
        s->dead = true;
    }
    reap(s);
    return s->dead ? -1 : 0;
}

static bool send_out(struct h2_sess *s, const uint8_t *d, size_t len)
{
    if (s->ops.send(s->conn, d, len))
        return true;
    snprintf(s->err, sizeof s->err, "could not send on the HTTP/2 connection");
    s->dead = true;
    return false;
}

int h2_sess_flush(struct h2_sess *s)
{
    if (s->dead)
        return -1;
    if (s->busy) {
        s->want_flush = true;
        return 0;
    }
    /* nghttp2 hands out one frame per call: they are gathered here and
     * sent in one piece (one TLS record, not one per frame: a request's
     * HEADERS and DATA cost one SSL_write).  Frames the buffer does not
     * hold go out as they come, after what it holds. */
    uint8_t out[H2_FLUSH_COALESCE];
    size_t out_len = 0;
    do {
        s->want_flush = false;
        s->busy++;
        for (;;) {
            const uint8_t *d;
            ssize_t n = nghttp2_session_mem_send(s->ng, &d);
            if (n < 0) {
                snprintf(s->err, sizeof s->err, "HTTP/2 connection error: %s",
                         nghttp2_strerror((int)n));
                s->dead = true;
                break;
            }
            size_t len = (size_t)n;
            if (len > 0 && out_len + len <= sizeof out) {
                memcpy(out + out_len, d, len); /* d is valid only until the next call */
                out_len += len;
                continue;
            }
            if (out_len > 0 && !send_out(s, out, out_len))
                break;
            out_len = 0;
            if (len == 0)
                break;
            if (len < sizeof out) {
                memcpy(out, d, len);
                out_len = len;
            } else if (!send_out(s, d, len)) {
                break;
            }
        }
        s->busy--;
        reap(s);
    } while (s->want_flush && !s->dead);
    return s->dead ? -1 : 0;
}

const char *h2_sess_error(const struct h2_sess *s)
{
    return s->err[0] ? s->err : "HTTP/2 connection error";
}

bool h2_sess_can_open(const struct h2_sess *s)
{
    if (s->dead || s->goaway || !nghttp2_session_check_request_allowed(s->ng))
        return false;
    uint32_t max =
        nghttp2_session_get_remote_settings(s->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    if (max > H2_MAX_STREAMS)
        max = H2_MAX_STREAMS;
    if (!s->settings_seen)
        max = 1; /* its bound is not known yet: one stream, the one that opened it */
    return s->n_streams < max;
}

bool h2_sess_ready(const struct h2_sess *s)
{
    return s->settings_seen || s->dead || s->goaway;
}

bool h2_sess_over(const struct h2_sess *s)
{
    return s->dead || (!nghttp2_session_want_read(s->ng) && !nghttp2_session_want_write(s->ng));
}

size_t h2_sess_streams(const struct h2_sess *s)
{
    return s->n_streams;
}

void h2_sess_ping(struct h2_sess *s)
{
    if (s->dead || s->ping_pending)
        return;
    if (nghttp2_submit_ping(s->ng, NGHTTP2_FLAG_NONE, NULL) == 0)
        s->ping_pending = true;
}

bool h2_sess_ping_pending(const struct h2_sess *s)
{
    return s->ping_pending;
}

/* ---- streams ------------------------------------------------------------------- */

/* Connection-specific fields (RFC 9113 8.2.2) and Host, which :authority
 * replaces. */
static bool dropped_header(const char *n, size_t len)
{
    /* Lengths known here, not strlen per name per header. */
    static const struct {
        const char *s;
        size_t len;
    } names[] = {{"connection", 10},        {"keep-alive", 10}, {"proxy-connection", 16},
                 {"transfer-encoding", 17}, {"upgrade", 7},     {"host", 4}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].len == len && memcmp(names[i].s, n, len) == 0)
            return true;
    return false;
}

static nghttp2_nv nv(const char *n, size_t nl, const char *v, size_t vl)
{
    nghttp2_nv x = {(uint8_t *)n, (uint8_t *)v, nl, vl, NGHTTP2_NV_FLAG_NONE};
    return x;
}

/* Lower-cases name into *lo (advanced past it) when it has an upper-case
 * letter; else name itself, as most are. */
static const char *lower_name(const char *name, size_t len, char **lo)
{
    size_t i = 0;
    while (i < len && (unsigned char)(name[i] - 'A') >= 26u)
        i++;
    if (i == len)
        return name;
    char *out = *lo;
    memcpy(out, name, i);
    for (; i < len; i++)
        out[i] = (unsigned char)(name[i] - 'A') < 26u ? (char)(name[i] + ('a' - 'A')) : name[i];
    *lo += len;
    return out;
}

struct h2_stream *h2_stream_open(struct h2_sess *s, const struct h2_req *r, void *ud, char *err,
                                 size_t errlen)
{
    if (!h2_sess_can_open(s)) {
        snprintf(err, errlen, "HTTP/2 connection takes no more streams");
        return NULL;
    }
    /* Names with upper-case letters are lower-cased into this (nghttp2
     * copies the fields before h2_stream_open returns); on the stack when
     * the lines are small (most are), else on the heap. */
    char lbuf[H2_HEAD_STACK];
    char *low = r->headers_len <= sizeof lbuf ? lbuf : xmalloc(r->headers_len);
    char *lo = low;
    nghttp2_nv nva[H2_MAX_REQ_HEADERS + 5];
    size_t n = 4;
    nva[0] = nv(":method", 7, r->method, r->method_len);
    nva[1] = nv(":scheme", 7, "https", 5);
    nva[2] = nv(":authority", 10, r->authority ? r->authority : "", r->authority_len);
    nva[3] = nv(":path", 5, r->path, r->path_len);
    const char *end = r->headers ? r->headers + r->headers_len : NULL;
    for (const char *p = r->headers; p && p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *next = nl ? nl + 1 : end;
        if (le > p && le[-1] == '\r')
            le--;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon && colon > p) {
            size_t nlen = (size_t)(colon - p);
            const char *name = lower_name(p, nlen, &lo);
            const char *v = colon + 1, *ve = le;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            size_t vlen = (size_t)(ve - v);
            bool te = nlen == 2 && memcmp(name, "te", 2) == 0;
            if (nlen == 4 && memcmp(name, "host", 4) == 0) {
                nva[2] = nv(":authority", 10, v, vlen);
            } else if (!dropped_header(name, nlen) &&
                       (!te || (vlen == 8 && !strncasecmp(v, "trailers", 8)))) {
                /* Never drop one silently: the token comes last. */
                if (n == H2_MAX_REQ_HEADERS + 4) {
                    if (low != lbuf)
                        free(low);
                    snprintf(err, errlen, "HTTP/2: more than %d request headers",
                             H2_MAX_REQ_HEADERS);
                    return NULL;
                }
                nva[n++] = nv(name, nlen, v, vlen);
            }
        }
        p = next;
    }
    if (r->content_length)
        nva[n++] = nv("content-length", 14, r->content_length, r->content_length_len);
    struct h2_stream *st = xcalloc(1, sizeof *st);
    st->s = s;
    st->ud = ud;
    st->body = r->body;
    st->body_len = r->body ? r->body_len : 0;
    nghttp2_data_provider dp = {.source.ptr = NULL, .read_callback = on_read_body};
    int32_t id = nghttp2_submit_request(s->ng, NULL, nva, n, st->body_len > 0 ? &dp : NULL, NULL);
    if (low != lbuf)
        free(low);
    if (id < 0) {
        snprintf(err, errlen, "HTTP/2 request refused: %s", nghttp2_strerror(id));
        free(st);
        return NULL;
    }
    st->id = id;
    st->next = s->head;
    if (s->head)
        s->head->prev = st;
    s->head = st;
    s->n_streams++;
    return st;
}

void h2_stream_resume(struct h2_stream *st)
{
    struct h2_sess *s = st->s;
    if (!st->paused || !st->ud)
        return;
    st->paused = false;
    size_t len = st->pend_len;
    st->in_cb = true;
    size_t r = s->ops.body(st->ud, st->pend, len);
    st->in_cb = false;
    if (!st->ud) {
        reap(s); /* cancelled inside body(): the cancel gave the window back */
        return;
    }
    if (r == UPSTREAM_PAUSE) {
        st->paused = true;
        return;
    }
    free(st->pend);
    st->pend = NULL;
    st->pend_len = 0;
    if (st->closed || s->dead)
        nghttp2_session_consume_connection(s->ng, len);
    else
        nghttp2_session_consume(s->ng, st->id, len);
    if (r != len && !st->closed)
        stream_reset(st, NGHTTP2_CANCEL, UPSTREAM_ERR_ABORTED, "stopped by the body callback");
    else if (r != len)
        stream_end(st, UPSTREAM_ERR_ABORTED, "stopped by the body callback", H2_RETRY_NO);
    reap(s);
}

void h2_stream_cancel(struct h2_stream *st)
{
    struct h2_sess *s = st->s;
    st->ud = NULL;
    if (st->pend_len > 0 && !s->dead)
        nghttp2_session_consume_connection(s->ng, st->pend_len);
    st->pend_len = 0;
    if (!st->closed && !s->dead)
        nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
    if (!st->closed)
        s->n_closed++;
    st->closed = true;
    if (st->in_cb || s->busy)
        return; /* freed by reap() once the callback has returned */
    unlink_stream(st);
    stream_free(st);
}
