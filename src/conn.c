/*
 * conn: see conn.h for the contract.
 *
 * States of a connection:
 *   CONN_IDLE     keep-alive, waiting for the first byte of a request
 *                 (keepalive_timeout_ms)
 *   CONN_HEAD     reading the request line and headers
 *                 (client_header_timeout_ms for the whole head)
 *   CONN_BODY     reading the body (client_header_timeout_ms between bytes)
 *   CONN_BUSY     the request is dispatched; bytes that arrive are held
 *                 in `pending` and read only to notice a hang-up.  At
 *                 CONN_MAX_PENDING held bytes reading pauses; while paused
 *                 a timer polls the socket for the peer's FIN or RST
 *                 (what nginx learns from EPOLLRDHUP), and reading resumes
 *                 as soon as the held bytes are parsed.
 *   CONN_CLOSING  the last response is queued; what the client sends is
 *                 read and discarded; closing once the output is written
 *   CONN_LINGER   lingering close: the response is written and our side
 *                 shut down (FIN); the client's bytes are read and
 *                 discarded until its EOF, CONN_LINGER_IDLE_MS without a
 *                 byte, CONN_LINGER_TOTAL_MS in all, or more than
 *                 max_body + CONN_LINGER_SLACK bytes.  Closing a socket with
 *                 unread input sends RST, and the client's kernel then drops
 *                 the answer it has not read yet: a client still uploading
 *                 would see a reset instead of our 413.
 *
 * Limits, each answered on the wire before the connection is closed (with
 * lingering, so that the answer is readable): what reqparse.c refuses (414,
 * 431, 413, 417, 400, 501, see reqparse.h), a client too slow to send its
 * request (408), more than max_connections connections (503 with
 * retry-after).  A clean end with close lingers only when the client sent
 * more than was read.
 *
 * Every way a connection ends goes through conn_close(): a read error or
 * EOF, a write error, a timeout, a hang-up seen while reading is paused, a
 * protocol error (after the answer and lingering), the end of a response
 * that may not be kept alive, the end of lingering, conn_close_all().  It
 * detaches the handler (telling it the client is gone) and closes the
 * handles; the memory is freed in the close callbacks.
 */
#include "conn.h"

#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "hdr.h"
#include "log.h"

#define CONN_MAX_PENDING (1024 * 1024)
#define CONN_READ_SIZE (64 * 1024)
/* Lingering close, as nginx's lingering_timeout and lingering_time.  The
 * byte bound lets a body somewhat over max_body be drained whole, which is
 * what a client that writes its whole body before reading needs. */
#define CONN_LINGER_IDLE_MS 5000
#define CONN_LINGER_TOTAL_MS 30000
#define CONN_LINGER_SLACK (64ULL * 1024 * 1024)
/* How often a connection whose reading is paused looks for a hang-up. */
#define CONN_HANGUP_POLL_MS 250
/* The listen backlog: connections the kernel completes while the loop is
 * busy (a burst of upstream TLS handshakes).  At 1024 a burst of 3,000 a
 * second overflowed it (1,795 and 1,471 SYNs dropped in two passes of
 * 9,000 SSE streams; nginx at 4096: none), and each dropped SYN cost its
 * client a 1 s (then 3 s) retransmit.  The kernel caps it at
 * net.core.somaxconn (4096 by default since Linux 5.4). */
#define CONN_LISTEN_BACKLOG 4096

#ifndef POLLRDHUP
#define POLLRDHUP 0 /* not Linux: a FIN is then seen only once reading resumes */
#endif

enum conn_state {
    CONN_IDLE = 0,
    CONN_HEAD = 1,
    CONN_BODY = 2,
    CONN_BUSY = 3,
    CONN_CLOSING = 4,
    CONN_LINGER = 5,
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    struct conn_server *srv;  /* borrows */
    struct conn *prev, *next; /* the server's list */
    enum conn_state state;
    struct reqparse rp; /* the request being read, and then served */
    struct buf pending; /* received, not yet parsed */
    bool processing;    /* inside conn_process(): no recursion */
    /* response */
    bool resp_started;
    bool resp_chunked;
    long long resp_expect;        /* body bytes the head promised; -1: framed by chunks or close */
    unsigned long long resp_sent; /* body bytes written of those */
    bool close_after;             /* close once the response is written */
    size_t queued;
    struct buf head;    /* owns; a response head not sent yet: a known-length
                               * response's head goes out with its first body bytes */
    int closed_handles; /* 2 when tcp and timer are closed */
    bool closing;
    bool broken;           /* a write failed: closing on the next loop turn */
    bool reading;          /* uv_read_start is in force */
    bool linger;           /* linger after the last response (see CONN_LINGER) */
    bool peer_eof;         /* the client finished sending: no need to linger */
    uint64_t linger_until; /* monotonic ms: the end of CLOSING + LINGER */
    uint64_t discarded;    /* bytes read and dropped in CLOSING and LINGER */
    uv_shutdown_t shut;
    void *handler; /* borrows */
    const struct conn_handler_ops *hops;
    char peer[64];
    bool loopback;
};

struct conn_server {
    uv_loop_t *loop; /* borrows */
    uv_tcp_t listener;
    bool listening;
    bool stopping;
    bool free_requested;
    const struct config *cfg; /* borrows */
    conn_dispatch_cb dispatch;
    void *ud;
    bool absolute_ok;   /* see conn_server_accept_absolute() */
    struct conn *conns; /* owns the list */
    size_t n_conns;
    uint64_t accepted;
    int port;
    char rbuf[CONN_READ_SIZE]; /* the read buffer all connections share */
};

struct wreq {
    uv_write_t w;
    struct conn *c;
    size_t len;
    char data[];
};

static void conn_close(struct conn *c);
static void conn_process(struct conn *c);
static void conn_arm_timer(struct conn *c);
static void conn_reject(struct conn *c, int status, const char *type, const char *msg);
static void conn_finish(struct conn *c);
static void conn_read_start(struct conn *c);

/* ---- small helpers ---------------------------------------------------- */

static void conn_reset_request(struct conn *c)
{
    reqparse_next(&c->rp, (size_t)c->srv->cfg->max_body_bytes);
    c->resp_started = false;
    c->resp_chunked = false;
    c->resp_expect = -1;
    c->resp_sent = 0;
}

/* ---- writing ------------------------------------------------------------ */

static void on_write(uv_write_t *w, int status)
{
    struct wreq *wr = (struct wreq *)w;
    struct conn *c = wr->c;
    c->queued -= wr->len;
    free(wr);
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->closing)
        return;
    if (c->state == CONN_CLOSING && c->queued == 0) {
        conn_finish(c);
        return;
    }
    if (c->queued < CONN_LOW_WATER && c->hops && c->hops->drained)
        c->hops->drained(c->handler);
}

static void on_broken(uv_timer_t *t)
{
    conn_close(t->data);
}

/* A write failed inside a call the handler made (often from a libcurl
 * callback): the connection closes on the next loop turn, so that the
 * handler is told the client is gone from a libuv callback, never from
 * under its own feet.  Writes until then are dropped. */
static void conn_fail_later(struct conn *c)
{
    if (c->broken || c->closing)
        return;
    c->broken = true;
    uv_timer_start(&c->timer, on_broken, 0, 0);
}

/* Queues n bytes from up to three pieces; tries a direct write first when
 * nothing is queued, so the common case copies nothing. */
static void conn_send3(struct conn *c, const char *a, size_t al, const char *b, size_t bl,
                       const char *d, size_t dl)
{
    if (c->closing || c->broken)
        return;
    uv_buf_t bufs[3] = {
        uv_buf_init((char *)a, (unsigned)al),
        uv_buf_init((char *)b, (unsigned)bl),
        uv_buf_init((char *)d, (unsigned)dl),
    };
    size_t total = al + bl + dl;
    size_t skip = 0;
    if (c->queued == 0) {
        int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, 3);
        if (n > 0)
            skip = (size_t)n;
        else if (n < 0 && n != UV_EAGAIN) {
            conn_fail_later(c);
            return;
        }
        if (skip == total)
            return;
    }
    struct wreq *wr = xmalloc(sizeof *wr + total - skip);
    size_t off = 0;
    const uv_buf_t *src = bufs;
    for (int i = 0; i < 3; i++) {
        size_t len = src[i].len;
        const char *p = src[i].base;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        p += skip;
        len -= skip;
        skip = 0;
        memcpy(wr->data + off, p, len);
        off += len;
    }
    wr->c = c;
    wr->len = off;
    uv_buf_t one = uv_buf_init(wr->data, (unsigned)off);
    c->queued += off;
    if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, &one, 1, on_write) != 0) {
        c->queued -= off;
        free(wr);
        conn_fail_later(c);
    }
}

static void conn_send(struct conn *c, const char *p, size_t n)
{
    conn_send3(c, p, n, NULL, 0, NULL, 0);
}

size_t conn_queued(const struct conn *c)
{
    return c->queued;
}

bool conn_response_started(const struct conn *c)
{
    return c->resp_started;
}

const char *conn_peer(const struct conn *c)
{
    return c->peer;
}

bool conn_peer_is_loopback(const struct conn *c)
{
    return c->loopback;
}

/* ---- responses ---------------------------------------------------------- */

void conn_start_response(struct conn *c, int status, const char *headers, size_t headers_len,
                         long long content_length)
{
    struct buf h;
    buf_init(&h, SIZE_MAX);
    bool no_body = c->rp.req.is_head || status == 204 || status == 304 || status < 200;
    buf_append(&h, c->rp.req.http_minor ? "HTTP/1.1 " : "HTTP/1.0 ", 9);
    buf_append_ull(&h, (unsigned long long)status);
    buf_append(&h, " ", 1);
    buf_append_str(&h, hdr_status_text(status));
    buf_append(&h, "\r\n", 2);
    if (headers_len)
        buf_append(&h, headers, headers_len);
    if (content_length >= 0) {
        if (status != 204 && status != 304) {
            buf_append(&h, "Content-Length: ", 16);
            buf_append_ull(&h, (unsigned long long)content_length);
            buf_append(&h, "\r\n", 2);
        }
    } else if (!no_body) {
        if (c->rp.req.http_minor >= 1)
            c->resp_chunked = true;
        else
            c->close_after = true;
    }
    if (c->resp_chunked)
        buf_append(&h, "Transfer-Encoding: chunked\r\n", 28);
    if (!c->rp.req.keep_alive || c->close_after || c->srv->stopping) {
        c->close_after = true;
        buf_append(&h, "Connection: close\r\n", 19);
    } else if (c->rp.req.http_minor == 0) {
        buf_append(&h, "Connection: keep-alive\r\n", 24);
    }
    buf_append(&h, "\r\n", 2);
    c->resp_started = true;
    /* What the head lets the client expect; conn_write_body() and
     * conn_end_response() hold the body to it. */
    c->resp_expect = no_body ? 0 : content_length >= 0 ? content_length : -1;
    c->resp_sent = 0;
    if (content_length > 0 && !no_body) {
        /* The body follows at once: one write for both. */
        buf_release(&c->head);
        c->head = h;
        return;
    }
    conn_send(c, h.data, h.len);
    buf_release(&h);
}

static void conn_flush_head(struct conn *c)
{
    if (c->head.len)
        conn_send(c, c->head.data, c->head.len);
    buf_release(&c->head);
}

void conn_write_body(struct conn *c, const char *p, size_t n)
{
    if (n == 0 || c->rp.req.is_head)
        return;
    if (c->resp_expect >= 0) {
        /* Bytes beyond the promised length would be read by the client as
         * the start of the next response: drop them and close after this
         * one. */
        unsigned long long room = (unsigned long long)c->resp_expect - c->resp_sent;
        if (n > room) {
            log_info("client %s: response body longer than the %lld bytes its head "
                     "announced; closing the connection after it",
                     c->peer, c->resp_expect);
            n = (size_t)room;
            c->close_after = true;
        }
        c->resp_sent += n;
        if (n == 0)
            return;
    }
    if (c->resp_chunked) {
        /* The size in hex by hand: snprintf cost more than the rest of
         * an SSE event's write. */
        char head[24], *e = head + sizeof head;
        *--e = '\n';
        *--e = '\r';
        size_t v = n;
        do {
            *--e = "0123456789abcdef"[v & 15];
            v >>= 4;
        } while (v);
        conn_send3(c, e, (size_t)(head + sizeof head - e), p, n, "\r\n", 2);
    } else if (c->head.len) {
        conn_send3(c, c->head.data, c->head.len, p, n, NULL, 0);
        buf_release(&c->head);
    } else {
        conn_send(c, p, n);
    }
}

void conn_end_response(struct conn *c)
{
    if (c->resp_expect >= 0 && !c->rp.req.is_head &&
        c->resp_sent != (unsigned long long)c->resp_expect) {
        /* Shorter than announced: the client would wait for the rest, or
         * read the next response as its end.  Cut the connection so that
         * it sees the reply is incomplete. */
        log_info("client %s: response body of %llu bytes, its head announced %lld; "
                 "closing the connection",
                 c->peer, c->resp_sent, c->resp_expect);
        conn_abort_response(c);
        return;
    }
    conn_flush_head(c);
    if (c->resp_chunked && !c->rp.req.is_head)
        conn_send(c, "0\r\n\r\n", 5);
    c->hops = NULL;
    c->handler = NULL;
    if (c->closing || c->broken)
        return;
    if (c->close_after) {
        /* Bytes beyond this request mean the client may still be sending:
         * linger so that it reads this answer rather than a reset. */
        if (c->pending.len > 0 || !c->reading)
            c->linger = true;
        c->state = CONN_CLOSING;
        conn_finish(c);
        return;
    }
    conn_reset_request(c);
    c->state = CONN_IDLE;
    conn_process(c);
}

void conn_abort_response(struct conn *c)
{
    buf_release(&c->head); /* the body never came: cut without a head */
    c->hops = NULL;
    c->handler = NULL;
    c->close_after = true;
    c->linger = false; /* the cut is the message */
    c->state = CONN_CLOSING;
    conn_finish(c);
}

void conn_respond(struct conn *c, int status, const char *content_type, const char *body,
                  size_t len, const char *extra)
{
    struct buf h;
    buf_init(&h, SIZE_MAX);
    if (content_type)
        buf_appendf(&h, "Content-Type: %s\r\n", content_type);
    if (extra)
        buf_append(&h, extra, strlen(extra));
    conn_start_response(c, status, h.data ? h.data : "", h.len, (long long)len);
    buf_release(&h);
    conn_write_body(c, body, len);
    conn_end_response(c);
}

void conn_respond_error(struct conn *c, int status, const char *type, const char *message,
                        const char *extra)
{
    struct buf b;
    buf_init(&b, SIZE_MAX);
    buf_append(&b, "{\"type\":\"error\",\"error\":{\"type\":", 32);
    buf_append_json_str(&b, type);
    buf_append(&b, ",\"message\":", 11);
    buf_append_json_str(&b, message);
    buf_append(&b, "}}", 2);
    conn_respond(c, status, "application/json", b.data, b.len, extra);
    buf_release(&b);
}

/* Answers a request the parser rejected, then closes: after a protocol
 * error the rest of the byte stream cannot be trusted. */
static void conn_reject(struct conn *c, int status, const char *type, const char *msg)
{
    if (c->closing || c->state == CONN_CLOSING)
        return;
    log_info("client %s: %d %s", c->peer, status, msg);
    c->close_after = true;
    c->linger = true;
    c->rp.req.keep_alive = false;
    if (c->rp.req.http_minor == 0 && c->rp.parser.http_major == 1)
        c->rp.req.http_minor = c->rp.parser.http_minor;
    c->rp.req.is_head = false;
    conn_respond_error(c, status, type, msg, NULL);
}

/* ---- parsing ------------------------------------------------------------ */

static void on_timeout(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->state == CONN_HEAD || c->state == CONN_BODY) {
        conn_reject(c, 408, "invalid_request_error",
                    "the client took too long to send the request");
        return;
    }
    conn_close(c);
}

/* Reading is paused on held bytes (CONN_BUSY): nothing reads the socket,
 * so a hang-up is looked for with a poll that does not consume input.  A
 * FIN shows as POLLRDHUP even behind unread bytes, a RST as POLLERR or
 * POLLHUP.  A FIN the client's kernel still queues behind bytes our full
 * receive window refuses cannot be seen by anyone before reading resumes. */
static void on_hangup_poll(uv_timer_t *t)
{
    struct conn *c = t->data;
    uv_os_fd_t fd;
    if (c->closing || c->reading || uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0)
        return;
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
        log_info("client %s: gone while its pipelined request was held", c->peer);
        conn_close(c);
    }
}

/* IDLE waits keepalive_timeout_ms for a request; HEAD keeps the deadline
 * set when the request began; BODY allows client_header_timeout_ms between
 * reads; BUSY leaves time limits to the handler (and polls for a hang-up
 * while reading is paused); CLOSING and LINGER, when lingering, end at
 * linger_until, LINGER also after CONN_LINGER_IDLE_MS without a byte. */
static void conn_arm_timer(struct conn *c)
{
    const struct config *cfg = c->srv->cfg;
    if (c->broken)
        return; /* the timer is closing it */
    switch (c->state) {
    case CONN_IDLE:
        uv_timer_start(&c->timer, on_timeout, (uint64_t)cfg->keepalive_timeout_ms, 0);
        break;
    case CONN_BODY:
        uv_timer_start(&c->timer, on_timeout, (uint64_t)cfg->client_header_timeout_ms, 0);
        break;
    case CONN_HEAD: break;
    case CONN_BUSY:
        if (c->reading)
            uv_timer_stop(&c->timer);
        else
            uv_timer_start(&c->timer, on_hangup_poll, CONN_HANGUP_POLL_MS, CONN_HANGUP_POLL_MS);
        break;
    case CONN_CLOSING:
    case CONN_LINGER: {
        if (!c->linger) {
            uv_timer_stop(&c->timer);
            break;
        }
        uint64_t now = now_mono_ms();
        uint64_t left = c->linger_until > now ? c->linger_until - now : 0;
        if (c->state == CONN_LINGER && left > CONN_LINGER_IDLE_MS)
            left = CONN_LINGER_IDLE_MS;
        uv_timer_start(&c->timer, on_timeout, left, 0);
        break;
    }
    }
}

/* Parses what is pending; dispatches at most one request at a time. */
static void conn_process(struct conn *c)
{
    if (c->processing)
        return;
    c->processing = true;
    while (!c->closing && c->state != CONN_BUSY && c->state != CONN_CLOSING && c->pending.len > 0) {
        enum reqparse_phase before = c->rp.phase;
        buf_consume(&c->pending, reqparse_feed(&c->rp, c->pending.data, c->pending.len));
        if (before == REQPARSE_IDLE && c->rp.phase != REQPARSE_IDLE) {
            /* The first byte of a request: the whole head has a deadline. */
            c->state = CONN_HEAD;
            c->rp.req.start_ms = now_mono_ms();
            uv_timer_start(&c->timer, on_timeout, (uint64_t)c->srv->cfg->client_header_timeout_ms,
                           0);
        }
        if (c->rp.send_continue) {
            c->rp.send_continue = false;
            conn_send(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        }
        if (c->rp.phase == REQPARSE_BODY) {
            c->state = CONN_BODY;
        } else if (c->rp.phase == REQPARSE_DONE) {
            c->state = CONN_BUSY;
            uv_timer_stop(&c->timer);
            c->srv->dispatch(c->srv->ud, c, &c->rp.req);
            /* The handler took what it needs from the headers. */
            if (c->state == CONN_BUSY)
                reqparse_drop_headers(&c->rp);
        } else if (c->rp.phase == REQPARSE_ERROR) {
            conn_reject(c, c->rp.status, c->rp.type, c->rp.message);
            break;
        }
    }
    c->processing = false;
    if (c->pending.len == 0)
        buf_release(&c->pending);
    if (c->closing)
        return;
    /* Reading paused on held bytes resumes once they are parsed: nothing
     * else would start it again, and the next request would wait for the
     * header timeout. */
    if (!c->reading && c->state != CONN_CLOSING && c->state != CONN_LINGER &&
        !(c->state == CONN_BUSY && c->pending.len >= CONN_MAX_PENDING))
        conn_read_start(c);
    conn_arm_timer(c);
}

/* ---- reading ------------------------------------------------------------ */

/* Every connection reads into the server's one read buffer (reads happen
 * one at a time on the loop); only bytes not parsed yet are kept per
 * connection, so an idle or streaming connection holds no read buffer. */
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct conn *c = h->data;
    (void)suggested;
    *b = uv_buf_init(c->srv->rbuf, CONN_READ_SIZE);
}

static void conn_read_stop(struct conn *c)
{
    if (!c->reading)
        return;
    c->reading = false;
    uv_read_stop((uv_stream_t *)&c->tcp);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct conn *c = s->data;
    if (n == UV_EOF && c->state == CONN_CLOSING) {
        /* The client has sent everything: the answer still goes out, then
         * the connection closes without lingering. */
        c->peer_eof = true;
        conn_read_stop(c);
        return;
    }
    if (n < 0) {
        conn_close(c);
        return;
    }
    if (n == 0)
        return;
    if (c->state == CONN_CLOSING || c->state == CONN_LINGER) {
        /* Nothing more will be served: drop it, within bounds. */
        c->discarded += (uint64_t)n;
        if (c->discarded > (uint64_t)c->srv->cfg->max_body_bytes + CONN_LINGER_SLACK) {
            conn_close(c);
            return;
        }
        if (c->state == CONN_LINGER)
            conn_arm_timer(c);
        return;
    }
    buf_append(&c->pending, b->base, (size_t)n);
    if (c->state == CONN_BUSY) {
        /* A pipelined request waits; a flood does not grow memory. */
        if (c->pending.len >= CONN_MAX_PENDING) {
            conn_read_stop(c);
            conn_arm_timer(c);
        }
        return;
    }
    if (c->state == CONN_IDLE)
        uv_timer_stop(&c->timer);
    conn_process(c);
}

static void conn_read_start(struct conn *c)
{
    if (c->reading || c->closing)
        return;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        conn_close(c);
        return;
    }
    c->reading = true;
}

/* ---- closing ------------------------------------------------------------ */

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    if (status < 0 && !c->closing)
        conn_close(c);
}

/* The last response is queued (CONN_CLOSING).  Once it is written the
 * connection closes, or lingers when the client may still be sending:
 * uv_shutdown sends our FIN after the queued bytes, and input is read and
 * dropped until the client's EOF or a bound.  Called again by on_write
 * until the queue is empty. */
static void conn_finish(struct conn *c)
{
    if (c->closing)
        return;
    buf_release(&c->pending);
    if (c->linger && c->linger_until == 0)
        c->linger_until = now_mono_ms() + CONN_LINGER_TOTAL_MS;
    if (c->queued > 0) {
        /* Keep reading meanwhile, so the client is not stuck sending. */
        if (!c->peer_eof)
            conn_read_start(c);
        conn_arm_timer(c);
        return;
    }
    if (!c->linger || c->peer_eof || c->broken) {
        conn_close(c);
        return;
    }
    c->state = CONN_LINGER;
    c->shut.data = c;
    if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        conn_close(c);
        return;
    }
    conn_read_start(c);
    if (!c->closing)
        conn_arm_timer(c);
}

static void conn_free(struct conn *c)
{
    struct conn_server *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->n_conns--;
    reqparse_release(&c->rp);
    buf_release(&c->pending);
    buf_release(&c->head);
    free(c);
    if (s->free_requested && s->n_conns == 0 && !s->listening)
        free(s);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (++c->closed_handles == 2)
        conn_free(c);
}

/* The one way a connection ends; see the top of this file for the paths
 * that lead here.  Idempotent. */
static void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    c->state = CONN_CLOSING;
    uv_timer_stop(&c->timer);
    conn_read_stop(c);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    /* Tell the handler after the handles are on their way out, so that it
     * cannot write to this connection again. */
    const struct conn_handler_ops *ops = c->hops;
    void *h = c->handler;
    c->hops = NULL;
    c->handler = NULL;
    if (ops && ops->client_gone)
        ops->client_gone(h);
}

void conn_attach(struct conn *c, void *handler, const struct conn_handler_ops *ops)
{
    c->handler = handler;
    c->hops = ops;
}

void conn_detach(struct conn *c)
{
    c->handler = NULL;
    c->hops = NULL;
}

/* ---- the server --------------------------------------------------------- */

static void on_connection(uv_stream_t *l, int status)
{
    struct conn_server *s = l->data;
    if (status < 0) {
        log_warn("accept failed: %s", uv_strerror(status));
        return;
    }
    struct conn *c = xcalloc(1, sizeof *c);
    c->srv = s;
    c->resp_expect = -1;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    buf_init(&c->pending, SIZE_MAX);
    reqparse_init(&c->rp, (size_t)s->cfg->max_body_bytes);
    c->rp.absolute_ok = s->absolute_ok;
    s->accepted++;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    int len = sizeof c->rp.req.peer;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->rp.req.peer, &len) == 0) {
        char ip[INET6_ADDRSTRLEN] = "?";
        int port = 0;
        if (c->rp.req.peer.ss_family == AF_INET) {
            const struct sockaddr_in *a = (const struct sockaddr_in *)&c->rp.req.peer;
            uv_ip4_name(a, ip, sizeof ip);
            port = ntohs(a->sin_port);
            c->loopback = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
        } else if (c->rp.req.peer.ss_family == AF_INET6) {
            const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&c->rp.req.peer;
            uv_ip6_name(a, ip, sizeof ip);
            port = ntohs(a->sin6_port);
            c->loopback = IN6_IS_ADDR_LOOPBACK(&a->sin6_addr) ||
                          (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) && a->sin6_addr.s6_addr[12] == 127);
        }
        snprintf(c->peer, sizeof c->peer, "%s:%d", ip, port);
    }
    if (s->n_conns > (size_t)s->cfg->max_connections) {
        c->rp.req.http_minor = 1;
        c->close_after = true;
        c->linger = true; /* its request may be on the way: let it read the 503 */
        conn_respond_error(c, 503, "overloaded_error",
                           "too many client connections (server.max_connections)",
                           "Retry-After: 1\r\n");
        return;
    }
    conn_read_start(c);
    if (!c->closing)
        conn_arm_timer(c);
}

struct conn_server *conn_server_new(uv_loop_t *loop, const struct config *cfg,
                                    conn_dispatch_cb dispatch, void *ud)
{
    struct conn_server *s = xcalloc(1, sizeof *s);
    s->loop = loop;
    s->cfg = cfg;
    s->dispatch = dispatch;
    s->ud = ud;
    return s;
}

void conn_server_set_config(struct conn_server *s, const struct config *cfg)
{
    s->cfg = cfg;
}

void conn_server_accept_absolute(struct conn_server *s)
{
    s->absolute_ok = true;
}

uint64_t conn_accepted(const struct conn_server *s)
{
    return s->accepted;
}

int conn_listen(struct conn_server *s, const char *bind, int port, char *err, size_t errlen)
{
    struct sockaddr_storage addr;
    int rc;
    if (strchr(bind, ':'))
        rc = uv_ip6_addr(bind, port, (struct sockaddr_in6 *)&addr);
    else if (strcmp(bind, "localhost") == 0)
        rc = uv_ip4_addr("127.0.0.1", port, (struct sockaddr_in *)&addr);
    else
        rc = uv_ip4_addr(bind, port, (struct sockaddr_in *)&addr);
    if (rc != 0) {
        snprintf(err, errlen, "server.bind: \"%s\" is not an IP address", bind);
        return rc;
    }
    uv_tcp_init(s->loop, &s->listener);
    s->listener.data = s;
    s->listening = true;
    rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->listener, CONN_LISTEN_BACKLOG, on_connection);
    if (rc != 0) {
        /* Say what to do next: a port in use is most often this proxy
         * already running. */
        snprintf(err, errlen, "cannot listen on %s:%d: %s%s", bind, port, uv_strerror(rc),
                 rc == UV_EADDRINUSE ? "; another program holds the port (perhaps another "
                                       "claude-zephyr is running): stop it, or choose another "
                                       "port with --port or server.port"
                 : rc == UV_EACCES   ? "; ports below 1024 need privileges: choose another "
                                       "port with --port or server.port"
                                     : "");
        return rc;
    }
    struct sockaddr_storage got;
    int len = sizeof got;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&got, &len);
    s->port = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
                                              : ((struct sockaddr_in *)&got)->sin_port);
    return 0;
}

int conn_port(const struct conn_server *s)
{
    return s->port;
}

static void on_listener_closed(uv_handle_t *h)
{
    struct conn_server *s = h->data;
    s->listening = false;
    if (s->free_requested && s->n_conns == 0)
        free(s);
}

void conn_stop_accepting(struct conn_server *s)
{
    if (s->stopping)
        return;
    s->stopping = true;
    if (s->listening && !uv_is_closing((uv_handle_t *)&s->listener))
        uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    for (struct conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if ((c->state == CONN_IDLE && c->pending.len == 0) || c->state == CONN_LINGER)
            conn_close(c);
        else
            c->close_after = true; /* finish the request under way, then close */
    }
}

size_t conn_count(const struct conn_server *s)
{
    return s->n_conns;
}

void conn_close_all(struct conn_server *s)
{
    for (struct conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        conn_close(c);
    }
}

void conn_server_free(struct conn_server *s)
{
    if (!s)
        return;
    conn_stop_accepting(s);
    conn_close_all(s);
    s->free_requested = true;
    if (s->n_conns == 0 && !s->listening)
        free(s);
}
