/*
 * libFuzzer target for h1, the built-in HTTP/1.1 client: the input is what
 * an upstream sends, and the proxy must survive anything an upstream sends.
 *
 * One loop, one listener on 127.0.0.1:0 and one h1 client are made on the
 * first input and kept, so a connection the client pools after one input is
 * reused by the next (and found stale when the server closed it meanwhile).
 *
 * Input: four control bytes, then the response.
 *   c0 bits 0-1  method: GET, POST (small body), HEAD, POST with a 128 KiB
 *                body (the server answers once the head is in and discards
 *                the rest)
 *   c0 bit 2     once everything is written and nothing moves, the server
 *                resets the connection instead of closing it
 *   c0 bit 3     after an exchange that ended UPSTREAM_OK the server keeps its
 *                side open, so the client may reuse it on the next input
 *   c0 bits 4-5  body() pauses: never, on every new span, on every other
 *                span, twice on every span; each pause is resumed from a
 *                0 ms timer
 *   c0 bit 6     head() returns false
 *   c0 bit 7     done() calls h1_abort() on its own handle (a no-op)
 *   c1 bits 0-3  0: no abort; 15: h1_abort() right after h1_start(); else
 *                the Nth event (head, body, resume timer) aborts
 *   c1 bit 4     ... by a return value that stops (head false, body short)
 *                instead of h1_abort(); a resume timer event then resumes
 *                first and aborts after h1_resume() has returned
 *   c2           how the response is cut into writes: whole, fixed pieces,
 *                random pieces, one byte each (one loop turn per write)
 *   c3 bit 0     the loop does not run between this input and the next, so
 *                the next input may reuse a connection whose server side is
 *                gone (the client finds it stale)
 *   c3 bit 1     the response is written before h1_start() on the server
 *                side of a connection kept from the last input: the client
 *                reads it as the answer of a reused connection ...
 *   c3 bit 2     ... or, with one loop turn before h1_start(), as stray
 *                bytes on an idle connection
 *   c3 bit 3     h1_resume() is also called when nothing is paused: after
 *                h1_start() and inside head() and body() (a no-op)
 *   c3 bits 5-7  7: timeout_ms = 1 and the server never closes
 * The server answers every request with the response (a request that the
 * client sends again on a new connection gets it again), waits until the
 * client is quiet, then closes or resets, and the loop runs until done()
 * or the abort.  Then the input's leftovers are closed and the loop runs a
 * few turns, so that state stays bounded from one input to the next.
 *
 * Checked, with abort() so that libFuzzer reports it: done is called
 * exactly once unless aborted, never inside h1_start(), h1_resume(),
 * h1_abort() or another callback; no callback after done or an abort;
 * head at most once, before any body, with a final status and trimmed
 * values; body never empty, never while paused, a paused span redelivered
 * with identical bytes; an exchange stopped by a callback ends
 * UPSTREAM_ERR_ABORTED; UPSTREAM_OK means a head came, no pause is pending and (HEAD,
 * 204, 304) no body; no more body bytes than the server wrote; the request
 * is sent at most twice; the loop never goes idle while an exchange is
 * running; afterwards every open client connection is an idle one and few
 * handles are left.  FUZZ_H1_TRACE=1 prints one line per input, to see what
 * a reproducer does.
 */
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "h1.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define N_CTRL 4
#define MAX_PIECES 256
#define BIG_BODY (128 * 1024)
#define SETTLE_MAX 10000 /* loop turns of progress before the server closes anyway */

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_h1: %s\n", what);
        abort();
    }
}

/* ---- the server ------------------------------------------------------------ */

struct sconn {
    uv_tcp_t tcp;
    struct sconn *next; /* borrows: the server's list */
    char in[4096];      /* the request being read */
    size_t in_len;
    size_t discard; /* request body bytes still to skip */
    bool closing;
};

struct swr {
    uv_write_t w;
    char data[];
};

static struct {
    uv_tcp_t lis;
    struct sconn *conns; /* owns */
    size_t n_conns;
    bool active;                /* an input runs: requests get its response */
    struct sconn *cur;          /* borrows: the connection answering this input */
    const char *resp;           /* borrows the input */
    size_t cut[MAX_PIECES + 1]; /* piece i is resp[cut[i]..cut[i+1]) */
    size_t n_pieces;
    size_t next_piece;
    size_t pending_writes;
    bool prewritten; /* cur got the response before the request */
    size_t written;  /* bytes ever written (or tried) */
    size_t carry;    /* of them, written after the last exchange ended */
    int n_reqs;      /* requests seen during this input */
} srv;

static uv_loop_t g_loop;
static struct h1 *g_h1;
static uv_timer_t g_resume;
static char g_url[64];
static unsigned long g_events; /* callbacks and server reads, to see progress */
static int g_in_api;           /* inside h1_start, h1_resume or h1_abort */
static int g_in_start;         /* inside h1_start or h1_abort */
static int g_in_cb;            /* inside head or body */
static char g_big[BIG_BODY];
static bool g_trace;             /* FUZZ_H1_TRACE set: one line per input on stderr */
static volatile unsigned g_sink; /* every byte handed over is read (ASan checks it) */

static void srv_on_closed(uv_handle_t *h)
{
    struct sconn *sc = h->data;
    for (struct sconn **pp = &srv.conns; *pp; pp = &(*pp)->next) {
        if (*pp == sc) {
            *pp = sc->next;
            break;
        }
    }
    if (srv.cur == sc)
        srv.cur = NULL;
    srv.n_conns--;
    free(sc);
}

static void srv_close(struct sconn *sc, bool reset)
{
    if (sc->closing)
        return;
    sc->closing = true;
    if (!reset || uv_tcp_close_reset(&sc->tcp, srv_on_closed) != 0)
        uv_close((uv_handle_t *)&sc->tcp, srv_on_closed);
}

static void srv_on_write(uv_write_t *w, int status)
{
    (void)status; /* the client may have gone: that is its business */
    srv.pending_writes--;
    free(w);
}

static void srv_write(struct sconn *sc, const char *p, size_t n)
{
    if (n == 0 || sc->closing)
        return;
    srv.written += n;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int w = 0;
    if (srv.pending_writes == 0) { /* keep the order behind queued writes */
        w = uv_try_write((uv_stream_t *)&sc->tcp, &b, 1);
        if (w < 0 && w != UV_EAGAIN)
            return; /* the client went away */
        if (w < 0)
            w = 0;
    }
    if ((size_t)w == n)
        return;
    struct swr *wr = xmalloc(sizeof *wr + n - (size_t)w);
    memcpy(wr->data, p + w, n - (size_t)w);
    b = uv_buf_init(wr->data, (unsigned)(n - (size_t)w));
    if (uv_write(&wr->w, (uv_stream_t *)&sc->tcp, &b, 1, srv_on_write) != 0) {
        free(wr);
        return;
    }
    srv.pending_writes++;
}

/* A request head (and a small body) came in: answer it with this input's
 * response, or close when no input is running. */
static void srv_request(struct sconn *sc)
{
    g_events++;
    if (!srv.active) {
        srv_close(sc, false);
        return;
    }
    srv.n_reqs++;
    check(srv.n_reqs <= 2, "the request was sent more than twice");
    if (srv.prewritten && sc == srv.cur)
        return; /* answered already */
    srv.cur = sc;
    srv.next_piece = 0;
}

static size_t content_length(const char *head, size_t len)
{
    const char *p = memmem(head, len, "\r\nContent-Length: ", 18);
    return p ? strtoul(p + 18, NULL, 10) : 0;
}

static void srv_process(struct sconn *sc)
{
    while (!sc->closing && sc->in_len > 0) {
        const char *end = memmem(sc->in, sc->in_len, "\r\n\r\n", 4);
        if (!end)
            return;
        size_t hl = (size_t)(end + 4 - sc->in);
        size_t cl = content_length(sc->in, hl);
        if (cl > sizeof sc->in - hl) {
            /* A big body: answer now and skip it. */
            size_t have = sc->in_len - hl;
            sc->discard = cl - have;
            sc->in_len = 0;
            srv_request(sc);
            return;
        }
        if (sc->in_len < hl + cl)
            return;
        memmove(sc->in, sc->in + hl + cl, sc->in_len - hl - cl);
        sc->in_len -= hl + cl;
        srv_request(sc);
    }
}

static void srv_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    static char rb[65536];
    (void)h;
    (void)suggested;
    *b = uv_buf_init(rb, sizeof rb);
}

static void srv_on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct sconn *sc = st->data;
    if (n == 0 || sc->closing)
        return;
    if (n < 0) {
        srv_close(sc, false);
        return;
    }
    const char *p = b->base;
    size_t len = (size_t)n;
    while (len > 0 && !sc->closing) {
        if (sc->discard > 0) {
            size_t k = len < sc->discard ? len : sc->discard;
            sc->discard -= k;
            p += k;
            len -= k;
            continue;
        }
        size_t room = sizeof sc->in - sc->in_len;
        if (room == 0) {
            srv_close(sc, false); /* not a request this client sends */
            return;
        }
        size_t k = len < room ? len : room;
        memcpy(sc->in + sc->in_len, p, k);
        sc->in_len += k;
        p += k;
        len -= k;
        srv_process(sc);
    }
}

static void srv_on_conn(uv_stream_t *l, int status)
{
    if (status != 0)
        return;
    struct sconn *sc = xcalloc(1, sizeof *sc);
    uv_tcp_init(&g_loop, &sc->tcp);
    sc->tcp.data = sc;
    sc->next = srv.conns;
    srv.conns = sc;
    srv.n_conns++;
    if (uv_accept(l, (uv_stream_t *)&sc->tcp) != 0) {
        srv_close(sc, false);
        return;
    }
    /* Server connections never keep the loop alive: the client's own
     * handles and requests must, while an exchange runs. */
    uv_unref((uv_handle_t *)&sc->tcp);
    if (!srv.active) {
        srv_close(sc, false); /* from an exchange that was aborted */
        return;
    }
    /* Without this, Nagle and delayed ACKs merge the pieces (and stall). */
    uv_tcp_nodelay(&sc->tcp, 1);
    uv_read_start((uv_stream_t *)&sc->tcp, srv_alloc, srv_on_read);
}

/* The cuts: mode 0 one write, 1 pieces of 1..64 bytes, 2 random pieces up to
 * 2^k bytes, 3 one byte each; at most MAX_PIECES (the last takes the rest). */
static void srv_cut(size_t len, uint8_t how)
{
    unsigned mode = how & 3, arg = how >> 2;
    uint32_t rnd = 0x9e3779b9u ^ how;
    size_t off = 0, n = 0;
    srv.cut[n] = 0;
    while (off < len && n < MAX_PIECES - 1) {
        size_t piece;
        if (mode == 0) {
            piece = len;
        } else if (mode == 1) {
            piece = 1 + arg;
        } else if (mode == 2) {
            rnd = rnd * 1103515245u + 12345u;
            piece = 1 + (rnd >> 8) % ((size_t)1 << (1 + (arg & 15) % 12));
        } else {
            piece = 1;
        }
        off = len - off < piece ? len : off + piece;
        srv.cut[++n] = off;
    }
    if (off < len)
        srv.cut[++n] = len;
    srv.n_pieces = n;
}

/* ---- the client ------------------------------------------------------------ */

struct ctx {
    struct upstream_xfer *x;
    /* options */
    bool is_head;
    bool head_false;
    bool abort_in_done;
    bool stop_by_return;
    bool spurious_resume;
    unsigned pause_mode;
    unsigned abort_at;
    /* what happened */
    unsigned n_head, n_body, n_done, n_events;
    unsigned spans; /* new spans seen */
    int status;
    bool aborted;  /* h1_abort() was called */
    bool stopped;  /* a callback asked to stop */
    bool finished; /* done ran or h1_abort() was called */
    enum upstream_rc rc;
    size_t body_bytes;   /* taken */
    size_t written_base; /* srv.written when the bytes this exchange may read began */
    /* pausing */
    bool paused;           /* UPSTREAM_PAUSE returned, h1_resume() not yet called */
    bool expect_redeliver; /* the next body() must repeat pb */
    unsigned span_pauses;
    char *pb; /* owns: the bytes paused on */
    size_t pb_len;
};

static void do_abort(struct ctx *t)
{
    g_in_api++;
    g_in_start++;
    h1_abort(t->x);
    g_in_start--;
    g_in_api--;
    t->aborted = true;
    t->finished = true;
    t->paused = false;
    uv_timer_stop(&g_resume);
}

/* h1_resume() on an exchange that is not paused: nothing may happen. */
static void resume_noop(struct ctx *t)
{
    if (!t->spurious_resume || t->paused || t->finished)
        return;
    unsigned long before = g_events;
    g_in_api++;
    g_in_start++; /* no callback may run */
    h1_resume(t->x);
    g_in_start--;
    g_in_api--;
    check(g_events == before, "h1_resume without a pause did something");
}

static void enter_cb(struct ctx *t, const char *what)
{
    if (t->finished) {
        fprintf(stderr, "fuzz_h1: %s after done or h1_abort\n", what);
        abort();
    }
    check(!g_in_cb, "a callback inside another callback");
    check(!g_in_start, "a callback inside h1_start or h1_abort");
    g_events++;
}

static void on_resume(uv_timer_t *tm);

static bool blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

static bool cb_head(void *ud, int status, const struct upstream_hdr *h, size_t n)
{
    struct ctx *t = ud;
    enter_cb(t, "head");
    check(t->n_head == 0, "head called twice");
    check(t->n_body == 0, "head after body");
    check(status >= 200 && status <= 999, "head with an interim or impossible status");
    check(n <= 200, "more than 200 headers");
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < h[i].name_len; k++)
            g_sink += (unsigned char)h[i].name[k];
        for (size_t k = 0; k < h[i].value_len; k++)
            g_sink += (unsigned char)h[i].value[k];
        if (h[i].value_len > 0)
            check(!blank(h[i].value[0]) && !blank(h[i].value[h[i].value_len - 1]),
                  "header value not trimmed");
    }
    t->n_head++;
    t->status = status;
    resume_noop(t);
    if (++t->n_events == t->abort_at) {
        if (t->stop_by_return) {
            t->stopped = true;
            return false;
        }
        g_in_cb++;
        do_abort(t);
        g_in_cb--;
        return true;
    }
    if (t->head_false)
        t->stopped = true;
    return !t->head_false;
}

static size_t cb_body(void *ud, const char *p, size_t n)
{
    struct ctx *t = ud;
    enter_cb(t, "body");
    check(t->n_head == 1, "body before head");
    check(n > 0, "empty body call");
    check(n != UPSTREAM_PAUSE, "absurd body length");
    check(!t->paused, "body while paused");
    for (size_t k = 0; k < n; k++)
        g_sink += (unsigned char)p[k];
    t->n_body++;
    resume_noop(t);
    bool redelivery = t->expect_redeliver;
    if (redelivery) {
        check(n == t->pb_len && memcmp(p, t->pb, n) == 0,
              "a paused span was redelivered with other bytes");
    } else {
        t->spans++;
        t->span_pauses = 0;
    }
    if (++t->n_events == t->abort_at) {
        if (t->stop_by_return) {
            t->stopped = true;
            return n - 1; /* neither n nor UPSTREAM_PAUSE */
        }
        g_in_cb++;
        do_abort(t);
        g_in_cb--;
        return n;
    }
    bool pause;
    switch (t->pause_mode) {
    case 1: pause = !redelivery; break;
    case 2: pause = !redelivery && (t->spans & 1); break;
    case 3: pause = t->span_pauses < 2; break;
    default: pause = false; break;
    }
    if (pause) {
        t->span_pauses++;
        if (!redelivery) {
            t->pb = xrealloc(t->pb, n);
            memcpy(t->pb, p, n);
            t->pb_len = n;
        }
        t->paused = true;
        t->expect_redeliver = true;
        g_resume.data = t;
        uv_timer_start(&g_resume, on_resume, 0, 0);
        return UPSTREAM_PAUSE;
    }
    t->expect_redeliver = false;
    t->body_bytes += n;
    /* The bound counts what the server wrote after the last exchange had
     * ended: a kept connection may carry it into this one. */
    check(t->body_bytes <= srv.written - t->written_base, "more body bytes than the upstream sent");
    return n;
}

static void cb_done(void *ud, enum upstream_rc rc, const char *msg)
{
    struct ctx *t = ud;
    if (t->finished) {
        fprintf(stderr, "fuzz_h1: done after done or h1_abort\n");
        abort();
    }
    check(!g_in_api, "done inside h1_start, h1_resume or h1_abort");
    check(!g_in_cb, "done inside a callback");
    check(msg != NULL, "done without a message");
    check(rc >= UPSTREAM_OK && rc <= UPSTREAM_ERR_OTHER, "done with an unknown result");
    g_sink += (unsigned)strlen(msg);
    g_events++;
    t->n_done++;
    t->rc = rc;
    if (t->stopped)
        check(rc == UPSTREAM_ERR_ABORTED,
              "a callback stopped the exchange: not UPSTREAM_ERR_ABORTED");
    if (rc == UPSTREAM_OK) {
        check(msg[0] == '\0', "UPSTREAM_OK with a message");
        check(t->n_head == 1, "UPSTREAM_OK without a head");
        check(!t->paused && !t->expect_redeliver,
              "UPSTREAM_OK with a paused span never redelivered");
        if (t->is_head || t->status == 204 || t->status == 304)
            check(t->n_body == 0, "a body for HEAD, 204 or 304");
    } else {
        check(msg[0] != '\0', "an error without a message");
    }
    uv_timer_stop(&g_resume);
    t->paused = false;
    if (t->abort_in_done) {
        g_in_api++;
        g_in_start++;
        h1_abort(t->x); /* a no-op: the handle is valid until done returns */
        g_in_start--;
        g_in_api--;
    }
    t->finished = true;
}

static void on_resume(uv_timer_t *tm)
{
    struct ctx *t = tm->data;
    check(!t->finished, "resume timer after the end");
    check(t->paused, "resume timer while not paused");
    g_events++;
    bool abort_now = ++t->n_events == t->abort_at;
    if (abort_now && !t->stop_by_return) {
        do_abort(t);
        return;
    }
    t->paused = false;
    g_in_api++;
    h1_resume(t->x);
    g_in_api--;
    if (abort_now && !t->finished)
        do_abort(t); /* the done that h1_resume may have deferred never comes */
}

static const struct upstream_cbs CBS = {cb_head, cb_body, cb_done};

/* ---- one input --------------------------------------------------------------- */

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    check(uv_loop_init(&g_loop) == 0, "uv_loop_init");
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(&g_loop, &srv.lis);
    check(uv_tcp_bind(&srv.lis, (const struct sockaddr *)&a, 0) == 0, "bind");
    check(uv_listen((uv_stream_t *)&srv.lis, 128, srv_on_conn) == 0, "listen");
    uv_unref((uv_handle_t *)&srv.lis);
    struct sockaddr_in got;
    int len = sizeof got;
    uv_tcp_getsockname(&srv.lis, (struct sockaddr *)&got, &len);
    snprintf(g_url, sizeof g_url, "http://127.0.0.1:%u/v1/messages?beta=true",
             (unsigned)ntohs(got.sin_port));
    uv_timer_init(&g_loop, &g_resume);
    g_h1 = h1_new(&g_loop);
    memset(g_big, 'x', sizeof g_big);
    g_trace = getenv("FUZZ_H1_TRACE") != NULL;
}

static void count_handle(uv_handle_t *h, void *arg)
{
    (void)h;
    (*(size_t *)arg)++;
}

/* Runs the loop until the exchange is over, writing the response to
 * whichever server connection got the request. */
static void run_exchange(struct ctx *t, bool reset, bool timeout_mode)
{
    unsigned quiet = 0, settle = 0;
    while (!t->finished) {
        struct sconn *sc = srv.cur;
        if (sc && !sc->closing && srv.next_piece < srv.n_pieces) {
            size_t i = srv.next_piece++;
            srv_write(sc, srv.resp + srv.cut[i], srv.cut[i + 1] - srv.cut[i]);
            uv_run(&g_loop, UV_RUN_NOWAIT);
            quiet = 0;
            continue;
        }
        if (sc && !sc->closing && !timeout_mode) {
            /* All written: once the client is quiet, end the connection. */
            unsigned long before = g_events;
            uv_run(&g_loop, UV_RUN_NOWAIT);
            bool busy = g_events != before || srv.pending_writes > 0 ||
                        uv_is_active((uv_handle_t *)&g_resume);
            quiet = busy ? 0 : quiet + 1;
            if ((quiet >= 2 || ++settle > SETTLE_MAX) && srv.cur == sc && !t->finished)
                srv_close(sc, reset);
            continue;
        }
        if (uv_run(&g_loop, UV_RUN_ONCE) == 0 && !t->finished) {
            /* Closing handles may still be due; then nothing may be. */
            for (int k = 0; k < 4 && !t->finished; k++)
                uv_run(&g_loop, UV_RUN_NOWAIT);
            /* (An open server connection is written to or ended next, except
             * in timeout mode, where the exchange's timer must be running.) */
            check(t->finished || (srv.cur && !srv.cur->closing && !timeout_mode),
                  "the loop went idle while an exchange was running: done never comes");
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < N_CTRL)
        return 0;
    if (!g_h1)
        setup();
    uint8_t c0 = data[0], c1 = data[1], c2 = data[2], c3 = data[3];
    const char *resp = (const char *)data + N_CTRL;
    size_t resp_len = size - N_CTRL;

    struct ctx *t = xcalloc(1, sizeof *t);
    t->head_false = c0 & 0x40;
    t->abort_in_done = c0 & 0x80;
    t->pause_mode = (c0 >> 4) & 3;
    t->abort_at = c1 & 15;
    t->stop_by_return = c1 & 16;
    t->spurious_resume = c3 & 8;
    t->written_base = srv.written - srv.carry;
    srv.carry = 0;
    t->rc = (enum upstream_rc) - 1;
    bool reset = c0 & 4, keep = c0 & 8;
    bool no_drain = c3 & 1, prewrite = c3 & 2, stray = c3 & 4;
    bool timeout_mode = (c3 >> 5) == 7;

    struct upstream_request req = {
        .url = g_url,
        .headers = "Accept: */*\r\n",
        .headers_len = 13,
        .timeout_ms = timeout_mode ? 1 : 0,
    };
    switch (c0 & 3) {
    case 0: req.method = "GET"; break;
    case 1:
        req.method = "POST";
        req.body = "{\"a\":1}";
        req.body_len = 7;
        req.send_length = true;
        break;
    case 2:
        req.method = "HEAD";
        t->is_head = true;
        break;
    default:
        req.method = "POST";
        req.body = g_big;
        req.body_len = sizeof g_big;
        req.send_length = true;
        break;
    }

    srv.active = true;
    srv.cur = NULL;
    srv.resp = resp;
    srv.n_reqs = 0;
    srv.prewritten = false;
    srv_cut(resp_len, c2);
    srv.next_piece = srv.n_pieces; /* nothing to write until a request comes */
    if (prewrite && srv.conns && !srv.conns->closing) {
        srv.cur = srv.conns;
        srv.prewritten = true;
        srv_write(srv.cur, resp, resp_len);
        if (stray)
            uv_run(&g_loop, UV_RUN_NOWAIT);
    }

    g_in_api++;
    g_in_start++;
    t->x = h1_start(g_h1, &req, &CBS, t);
    g_in_start--;
    g_in_api--;
    check(t->x != NULL, "h1_start refused a good request");
    check(t->x->kind == UPSTREAM_KIND_H1, "h1_start: wrong kind");
    check(t->n_done == 0, "done inside h1_start");
    resume_noop(t);
    if (t->abort_at == 15)
        do_abort(t);

    run_exchange(t, reset, timeout_mode);

    check(t->aborted ? t->n_done == 0 : t->n_done == 1, "done not called exactly once");
    check(!uv_is_active((uv_handle_t *)&g_resume), "resume timer left running");

    /* Leftovers: the server keeps only the connection of a successful
     * exchange (when asked to), after sending it what was left of the
     * response; everything else is closed. */
    srv.active = false;
    struct sconn *kept = keep && t->rc == UPSTREAM_OK ? srv.cur : NULL;
    if (kept && !kept->closing && srv.next_piece < srv.n_pieces) {
        srv.carry = resp_len - srv.cut[srv.next_piece];
        srv_write(kept, srv.resp + srv.cut[srv.next_piece], srv.carry);
        srv.next_piece = srv.n_pieces;
    }
    for (struct sconn *sc = srv.conns; sc; sc = sc->next)
        if (sc != kept)
            srv_close(sc, false);
    srv.cur = NULL;
    srv.resp = NULL;
    srv.prewritten = false;
    size_t open, idle, handles = 0;
    h1_counts(g_h1, &open, &idle);
    check(open == idle, "a client connection is still busy after the exchange");
    if (!no_drain) {
        /* Until the server's connections but the kept one are gone. */
        for (int k = 0; k < 50; k++) {
            uv_run(&g_loop, UV_RUN_NOWAIT);
            if (k >= 2 && srv.n_conns <= (kept ? 1u : 0u))
                break;
        }
        h1_counts(g_h1, &open, &idle);
        check(open == idle && idle <= 2, "idle client connections pile up");
        check(srv.n_conns <= 2, "server connections pile up");
        uv_walk(&g_loop, count_handle, &handles);
        if (handles > 16)
            uv_print_all_handles(&g_loop, stderr);
        check(handles <= 16, "loop handles pile up");
    }
    if (g_trace)
        fprintf(stderr,
                "fuzz_h1: %s rc=%d status=%d heads=%u bodies=%u taken=%zu spans=%u aborted=%d "
                "requests=%d pieces=%zu open=%zu idle=%zu server=%zu handles=%zu\n",
                req.method, (int)t->rc, t->status, t->n_head, t->n_body, t->body_bytes, t->spans,
                t->aborted, srv.n_reqs, srv.n_pieces, open, idle, srv.n_conns, handles);
    free(t->pb);
    free(t);
    return 0;
}
