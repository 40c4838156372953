/*
 * Unit tests for h1, in process: each test starts a scripted HTTP server on
 * 127.0.0.1:0 (struct srv, libuv) and an h1 client on the same loop, and
 * runs the loop until the exchanges are over.  The server answers request
 * number i with resp[i] (or the last one), optionally closing, resetting,
 * answering before the body has arrived, or sending one byte per loop turn.
 *
 * Every done callback checks that it is not running inside h1_start(),
 * h1_resume(), h1_abort() or another callback; every test ends by freeing the
 * client and checking that uv_loop_close() finds no handle left.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "h1.h"
#include "util.h"

/* ---- the scripted server ------------------------------------------------ */

struct resp {
    const char *data; /* NULL: never answer */
    size_t len;       /* 0: strlen(data) */
    bool close;       /* close once written */
    bool reset;       /* close with a reset once written */
    bool dribble;     /* one byte per loop turn */
    bool early;       /* answer when the head arrived, then discard the body */
};

struct srv;

struct sconn {
    uv_tcp_t tcp;
    uv_idle_t idle;
    struct srv *s;
    struct sconn *next;
    int id;
    struct buf in;
    bool closing;
    bool discarding;
    size_t body_left;
    const char *drip; /* borrows the script */
    size_t drip_len, drip_off;
    bool drip_close;
    bool close_after_write;
    int handles;
};

struct srv {
    uv_loop_t *loop;
    uv_tcp_t lis;
    int port;
    int n_conns; /* accepted */
    int n_open;  /* not closed yet */
    int n_reqs;  /* request heads seen */
    struct resp resp[8];
    size_t n_resp;
    struct buf heads; /* every request head seen, in order */
    char *body;       /* owns: the last complete request body */
    size_t body_len;
    size_t bytes_in;
    struct sconn *conns;
};

struct swr {
    uv_write_t w;
    struct sconn *sc;
    char data[];
};

static void sconn_closed(uv_handle_t *h)
{
    struct sconn *sc = h->data;
    if (--sc->handles > 0)
        return;
    struct srv *s = sc->s;
    for (struct sconn **pp = &s->conns; *pp; pp = &(*pp)->next) {
        if (*pp == sc) {
            *pp = sc->next;
            break;
        }
    }
    buf_release(&sc->in);
    free(sc);
}

static void sconn_close(struct sconn *sc, bool reset)
{
    if (sc->closing)
        return;
    sc->closing = true;
    sc->s->n_open--;
    uv_close((uv_handle_t *)&sc->idle, sconn_closed);
    if (reset)
        uv_tcp_close_reset(&sc->tcp, sconn_closed);
    else
        uv_close((uv_handle_t *)&sc->tcp, sconn_closed);
}

static void srv_on_write(uv_write_t *w, int status)
{
    struct swr *wr = (struct swr *)w;
    struct sconn *sc = wr->sc;
    free(wr);
    if (status == 0 && sc->close_after_write && !sc->closing)
        sconn_close(sc, false);
}

static void srv_write(struct sconn *sc, const char *p, size_t n, bool close)
{
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int w = uv_try_write((uv_stream_t *)&sc->tcp, &b, 1);
    if (w < 0)
        w = 0;
    if ((size_t)w < n) {
        struct swr *wr = xmalloc(sizeof *wr + n - (size_t)w);
        wr->sc = sc;
        memcpy(wr->data, p + w, n - (size_t)w);
        b = uv_buf_init(wr->data, (unsigned)(n - (size_t)w));
        assert_int_equal(uv_write(&wr->w, (uv_stream_t *)&sc->tcp, &b, 1, srv_on_write), 0);
        sc->close_after_write = close;
        return;
    }
    if (close)
        sconn_close(sc, false);
}

static void srv_on_idle(uv_idle_t *h)
{
    struct sconn *sc = h->data;
    if (sc->drip_off < sc->drip_len) {
        srv_write(sc, sc->drip + sc->drip_off, 1, false);
        sc->drip_off++;
        return;
    }
    uv_idle_stop(h);
    if (sc->drip_close)
        sconn_close(sc, false);
}

static void srv_respond(struct sconn *sc, const struct resp *r)
{
    if (!r->data)
        return;
    size_t len = r->len ? r->len : strlen(r->data);
    if (r->dribble) {
        sc->drip = r->data;
        sc->drip_len = len;
        sc->drip_off = 0;
        sc->drip_close = r->close;
        uv_idle_start(&sc->idle, srv_on_idle);
        return;
    }
    if (r->reset) {
        if (len)
            srv_write(sc, r->data, len, false);
        sconn_close(sc, true);
        return;
    }
    srv_write(sc, r->data, len, r->close);
}

static size_t content_length(const char *head, size_t len)
{
    const char *p = memmem(head, len, "\r\nContent-Length: ", 18);
    return p ? strtoul(p + 18, NULL, 10) : 0;
}

static void srv_process(struct sconn *sc)
{
    struct srv *s = sc->s;
    while (!sc->closing) {
        if (sc->discarding) {
            size_t n = sc->in.len < sc->body_left ? sc->in.len : sc->body_left;
            buf_consume(&sc->in, n);
            sc->body_left -= n;
            if (sc->body_left > 0)
                return;
            sc->discarding = false;
        }
        const char *end = memmem(sc->in.data, sc->in.len, "\r\n\r\n", 4);
        if (!end)
            return;
        size_t hl = (size_t)(end + 4 - sc->in.data);
        size_t cl = content_length(sc->in.data, hl);
        const struct resp *r =
            &s->resp[(size_t)s->n_reqs < s->n_resp ? (size_t)s->n_reqs : s->n_resp - 1];
        if (!r->early && sc->in.len < hl + cl)
            return;
        buf_append(&s->heads, sc->in.data, hl);
        s->n_reqs++;
        if (r->early) {
            buf_consume(&sc->in, hl);
            sc->discarding = true;
            sc->body_left = cl;
        } else {
            free(s->body);
            s->body = xmalloc(cl + 1);
            memcpy(s->body, sc->in.data + hl, cl);
            s->body_len = cl;
            buf_consume(&sc->in, hl + cl);
        }
        srv_respond(sc, r);
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
    if (n < 0) {
        sconn_close(sc, false);
        return;
    }
    sc->s->bytes_in += (size_t)n;
    assert_int_equal(buf_append(&sc->in, b->base, (size_t)n), 0);
    srv_process(sc);
}

static void srv_on_conn(uv_stream_t *l, int status)
{
    struct srv *s = l->data;
    assert_int_equal(status, 0);
    struct sconn *sc = xcalloc(1, sizeof *sc);
    sc->s = s;
    sc->id = ++s->n_conns;
    s->n_open++;
    buf_init(&sc->in, 64 * 1024 * 1024);
    uv_tcp_init(s->loop, &sc->tcp);
    uv_idle_init(s->loop, &sc->idle);
    sc->tcp.data = sc;
    sc->idle.data = sc;
    sc->handles = 2;
    sc->next = s->conns;
    s->conns = sc;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&sc->tcp), 0);
    uv_read_start((uv_stream_t *)&sc->tcp, srv_alloc, srv_on_read);
}

/* Listens on ip:0; false when the address cannot be bound (no IPv6). */
static bool srv_start(struct srv *s, uv_loop_t *loop, const char *ip)
{
    struct sockaddr_storage a;
    if (strchr(ip, ':'))
        uv_ip6_addr(ip, 0, (struct sockaddr_in6 *)&a);
    else
        uv_ip4_addr(ip, 0, (struct sockaddr_in *)&a);
    s->loop = loop;
    buf_init(&s->heads, 1 << 20);
    uv_tcp_init(loop, &s->lis);
    s->lis.data = s;
    if (uv_tcp_bind(&s->lis, (struct sockaddr *)&a, 0) != 0 ||
        uv_listen((uv_stream_t *)&s->lis, 128, srv_on_conn) != 0)
        return false;
    struct sockaddr_storage got;
    int len = sizeof got;
    uv_tcp_getsockname(&s->lis, (struct sockaddr *)&got, &len);
    s->port = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
                                              : ((struct sockaddr_in *)&got)->sin_port);
    return true;
}

static void srv_stop(struct srv *s)
{
    for (struct sconn *sc = s->conns; sc; sc = sc->next)
        sconn_close(sc, false);
    uv_close((uv_handle_t *)&s->lis, NULL);
}

static void srv_release(struct srv *s)
{
    buf_release(&s->heads);
    free(s->body);
}

/* ---- the client side ---------------------------------------------------- */

static bool g_in_api; /* inside h1_start, h1_resume or h1_abort */
static bool g_in_cb;  /* inside a head or body callback */

struct env;

struct rec {
    struct env *e;
    struct upstream_xfer *x;
    int n_head, n_done, status;
    struct buf hdrs; /* "name=value\n" */
    struct buf body;
    enum upstream_rc rc;
    char msg[256];
    bool head_false;    /* head returns false */
    bool abort_in_head; /* head calls h1_abort() */
    bool pause;         /* body pauses twice on every span */
    int span_calls;     /* calls for the current span */
    char *paused;       /* owns: the bytes of the last pause */
    size_t paused_len;
    int pauses;
    size_t abort_at; /* abort from inside body once this many bytes came */
    bool aborted;
    void (*then)(struct rec *r); /* runs from done */
};

struct env {
    uv_loop_t loop;
    uv_timer_t watchdog;
    uv_timer_t resumer;
    struct srv srv;
    struct h1 *h;
    char base[96]; /* http://127.0.0.1:port */
};

static void on_watchdog(uv_timer_t *t)
{
    (void)t;
    fail_msg("the test did not finish in time");
}

static void env_init_ip(struct env *e, const char *ip, bool *ok)
{
    memset(e, 0, sizeof *e);
    assert_int_equal(uv_loop_init(&e->loop), 0);
    uv_timer_init(&e->loop, &e->watchdog);
    uv_timer_init(&e->loop, &e->resumer);
    uv_timer_start(&e->watchdog, on_watchdog, 4000, 0);
    uv_unref((uv_handle_t *)&e->watchdog);
    *ok = srv_start(&e->srv, &e->loop, ip);
    if (strchr(ip, ':'))
        snprintf(e->base, sizeof e->base, "http://[%s]:%d", ip, e->srv.port);
    else
        snprintf(e->base, sizeof e->base, "http://%s:%d", ip, e->srv.port);
    e->h = h1_new(&e->loop);
}

static void env_init(struct env *e)
{
    bool ok;
    env_init_ip(e, "127.0.0.1", &ok);
    assert_true(ok);
}

static void env_free(struct env *e)
{
    h1_free(e->h);
    srv_stop(&e->srv);
    uv_close((uv_handle_t *)&e->watchdog, NULL);
    uv_close((uv_handle_t *)&e->resumer, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    srv_release(&e->srv);
}

static void env_run_until(struct env *e, const int *counter, int target)
{
    while (*counter < target)
        uv_run(&e->loop, UV_RUN_ONCE);
}

static void rec_init(struct rec *r, struct env *e)
{
    memset(r, 0, sizeof *r);
    r->e = e;
    r->rc = (enum upstream_rc) - 1;
    buf_init(&r->hdrs, 1 << 20);
    buf_init(&r->body, 64 << 20);
}

static void rec_release(struct rec *r)
{
    buf_release(&r->hdrs);
    buf_release(&r->body);
    free(r->paused);
}

static bool cb_head(void *ud, int status, const struct upstream_hdr *h, size_t n)
{
    struct rec *r = ud;
    assert_false(g_in_cb);
    r->n_head++;
    r->status = status;
    for (size_t i = 0; i < n; i++) {
        buf_append(&r->hdrs, h[i].name, h[i].name_len);
        buf_append(&r->hdrs, "=", 1);
        buf_append(&r->hdrs, h[i].value, h[i].value_len);
        buf_append(&r->hdrs, "\n", 1);
    }
    if (r->abort_in_head) {
        g_in_cb = true;
        g_in_api = true;
        h1_abort(r->x);
        g_in_api = false;
        g_in_cb = false;
        r->aborted = true;
        return true;
    }
    return !r->head_false;
}

static void on_resume_timer(uv_timer_t *t);

static size_t cb_body(void *ud, const char *p, size_t n)
{
    struct rec *r = ud;
    assert_false(g_in_cb);
    assert_false(r->aborted);
    assert_true(n > 0);
    if (r->pause) {
        if (r->span_calls > 0) {
            /* A redelivery: exactly the bytes paused on. */
            assert_int_equal(n, r->paused_len);
            assert_memory_equal(p, r->paused, n);
        }
        if (r->span_calls < 2) {
            r->span_calls++;
            r->pauses++;
            free(r->paused);
            r->paused = xmalloc(n);
            memcpy(r->paused, p, n);
            r->paused_len = n;
            r->e->resumer.data = r;
            uv_timer_start(&r->e->resumer, on_resume_timer, 0, 0);
            return UPSTREAM_PAUSE;
        }
        r->span_calls = 0;
    }
    buf_append(&r->body, p, n);
    if (r->abort_at && r->body.len >= r->abort_at) {
        g_in_cb = true;
        g_in_api = true;
        h1_abort(r->x);
        g_in_api = false;
        g_in_cb = false;
        r->aborted = true;
        return n;
    }
    return n;
}

static void cb_done(void *ud, enum upstream_rc rc, const char *msg)
{
    struct rec *r = ud;
    assert_false(g_in_api);
    assert_false(g_in_cb);
    assert_false(r->aborted);
    assert_int_equal(r->n_done, 0);
    r->n_done++;
    r->rc = rc;
    snprintf(r->msg, sizeof r->msg, "%s", msg);
    if (r->then)
        r->then(r);
}

static const struct upstream_cbs CBS = {cb_head, cb_body, cb_done};

static struct upstream_xfer *start_req(struct rec *r, const char *method, const char *url,
                                       const char *headers, const char *body, size_t body_len,
                                       bool send_length, long timeout_ms)
{
    struct upstream_request req = {
        .method = method,
        .url = url,
        .headers = headers,
        .headers_len = headers ? strlen(headers) : 0,
        .body = body,
        .body_len = body_len,
        .send_length = send_length,
        .timeout_ms = timeout_ms,
    };
    g_in_api = true;
    r->x = h1_start(r->e->h, &req, &CBS, r);
    g_in_api = false;
    assert_int_equal(r->n_done, 0); /* never from inside h1_start */
    return r->x;
}

static struct upstream_xfer *get(struct rec *r, const char *path)
{
    char url[256];
    snprintf(url, sizeof url, "%s%s", r->e->base, path);
    return start_req(r, "GET", url, NULL, NULL, 0, false, 0);
}

static void on_resume_timer(uv_timer_t *t)
{
    struct rec *r = t->data;
    int before = r->n_done;
    g_in_api = true;
    h1_resume(r->x);
    g_in_api = false;
    assert_int_equal(r->n_done, before); /* never from inside h1_resume */
}

static void counts(struct env *e, size_t *open, size_t *idle)
{
    h1_counts(e->h, open, idle);
}

static void assert_counts(struct env *e, size_t open, size_t idle)
{
    size_t o, i;
    counts(e, &o, &i);
    assert_int_equal(o, open);
    assert_int_equal(i, idle);
}

static unsigned char pat(size_t i)
{
    return (unsigned char)(i * 31 + (i >> 9) * 7 + 3);
}

/* ---- tests -------------------------------------------------------------- */

static void test_content_length(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] = (struct resp){.data = "HTTP/1.1 201 Created\r\nContent-Length: 5\r\n"
                                          "X-Spaced:  \t v a l \t \r\nX-Empty:\r\nX-Last: z\r\n"
                                          "\r\nhello"};
    e.srv.n_resp = 1;
    struct rec r;
    rec_init(&r, &e);
    char url[128];
    snprintf(url, sizeof url, "%s/v1/messages?beta=true", e.base);
    assert_non_null(start_req(&r, "POST", url, "X-A: 1\r\nX-B: two\r\n", "world", 5, true, 0));
    env_run_until(&e, &r.n_done, 1);
    assert_int_equal(r.rc, UPSTREAM_OK);
    assert_string_equal(r.msg, "");
    assert_int_equal(r.n_head, 1);
    assert_int_equal(r.status, 201);
    assert_string_equal(r.hdrs.data, "Content-Length=5\nX-Spaced=v a l\nX-Empty=\nX-Last=z\n");
    assert_string_equal(r.body.data, "hello");
    char want[256];
    snprintf(want, sizeof want,
             "POST /v1/messages?beta=true HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-A: 1\r\n"
             "X-B: two\r\nContent-Length: 5\r\n\r\n",
             e.srv.port);
    assert_string_equal(e.srv.heads.data, want);
    assert_int_equal(e.srv.body_len, 5);
    assert_memory_equal(e.srv.body, "world", 5);
    assert_counts(&e, 1, 1);
    rec_release(&r);
    env_free(&e);
}

/* The request line and Host for URL shapes without a path, with only a
 * query, and an empty body with send_length. */
static void test_request_shapes(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] = (struct resp){.data = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"};
    e.srv.n_resp = 1;
    struct rec r1, r2, r3;
    rec_init(&r1, &e);
    rec_init(&r2, &e);
    rec_init(&r3, &e);
    char url[128];
    snprintf(url, sizeof url, "%s", e.base);
    start_req(&r1, "GET", url, NULL, NULL, 0, false, 0);
    env_run_until(&e, &r1.n_done, 1);
    snprintf(url, sizeof url, "%s?x=1#frag", e.base);
    start_req(&r2, "GET", url, NULL, NULL, 0, false, 0);
    env_run_until(&e, &r2.n_done, 1);
    snprintf(url, sizeof url, "HTTP://localhost:%d/a", e.srv.port);
    start_req(&r3, "DELETE", url, NULL, NULL, 0, true, 0);
    env_run_until(&e, &r3.n_done, 1);
    assert_int_equal(r1.rc, UPSTREAM_OK);
    assert_int_equal(r2.rc, UPSTREAM_OK);
    assert_int_equal(r3.rc, UPSTREAM_OK);
    assert_int_equal(r1.status, 200);
    assert_int_equal(r1.body.len, 0);
    char want[512];
    snprintf(want, sizeof want,
             "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n"
             "GET /?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n"
             "DELETE /a HTTP/1.1\r\nHost: localhost:%d\r\nContent-Length: 0\r\n\r\n",
             e.srv.port, e.srv.port, e.srv.port);
    assert_string_equal(e.srv.heads.data, want);
    rec_release(&r1);
    rec_release(&r2);
    rec_release(&r3);
    env_free(&e);
}

static void test_bad_urls(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    static const char *bad[] = {
        "https:/h",    "http://",      "http:///x",     "http://h:0/",       "http://h:65536/",
        "http://h:/",  "http://[::1/", "http://[zz]/",  "http://a b/",       "http://h/a b",
        "http://u@h/", "ftp://h/",     "http://h:80x/", "http://h/\r\nX: y", "",
        "http:/h",     "https://",     "httpx://h/",    "https://h:0/",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct rec r;
        rec_init(&r, &e);
        if (start_req(&r, "GET", bad[i], NULL, NULL, 0, false, 0) != NULL)
            fail_msg("accepted %s", bad[i]);
        rec_release(&r);
    }
    struct rec r;
    rec_init(&r, &e);
    char url[128];
    snprintf(url, sizeof url, "%s/", e.base);
    assert_null(start_req(&r, "G T", url, NULL, NULL, 0, false, 0));
    assert_null(start_req(&r, "", url, NULL, NULL, 0, false, 0));
    uv_run(&e.loop, UV_RUN_NOWAIT);
    assert_int_equal(r.n_done, 0);
    assert_counts(&e, 0, 0);
    rec_release(&r);
    env_free(&e);
}

static void test_chunked(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] = (struct resp){.data = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                          "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n"
                                          "X-Trailer: t\r\n\r\n"};
    e.srv.n_resp = 1;
    struct rec r;
    rec_init(&r, &e);
    get(&r, "/");
    env_run_until(&e, &r.n_done, 1);
    assert_int_equal(r.rc, UPSTREAM_OK);
    assert_string_equal(r.body.data, "hello world");
    assert_string_equal(r.hdrs.data, "Transfer-Encoding=chunked\n");
    assert_counts(&e, 1, 1);
    rec_release(&r);
    env_free(&e);
}

/* The whole response one byte per read: every span split. */
static void test_dribbled(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] = (struct resp){.data = "HTTP/1.1 200 OK\r\nX-Long-Name: some value \r\n"
                                          "Transfer-Encoding: chunked\r\n\r\n"
                                          "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
                                  .dribble = true};
    e.srv.n_resp = 1;
    struct rec r;
    rec_init(&r, &e);
    get(&r, "/");
    env_run_until(&e, &r.n_done, 1);
    assert_int_equal(r.rc, UPSTREAM_OK);
    assert_string_equal(r.hdrs.data, "X-Long-Name=some value\nTransfer-Encoding=chunked\n");
    assert_string_equal(r.body.data, "abcde");
    assert_counts(&e, 1, 1);
    rec_release(&r);
    env_free(&e);
}

static void test_close_delimited(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] =
        (struct resp){.data = "HTTP/1.1 200 OK\r\nX: y\r\n\r\nall of it", .close = true};
    e.srv.n_resp = 1;
    struct rec r;
    rec_init(&r, &e);
    get(&r, "/");
    env_run_until(&e, &r.n_done, 1);
    assert_int_equal(r.rc, UPSTREAM_OK);
    assert_string_equal(r.body.data, "all of it");
    assert_counts(&e, 0, 0);
    rec_release(&r);
    env_free(&e);
}

/* HEAD: a Content-Length without a body; the connection is reused by a GET
 * whose answer parses right, so no body was expected. */
static void test_head(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] = (struct resp){.data = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"};
    e.srv.resp[1] = (struct resp){.data = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"};
    e.srv.n_resp = 2;
    struct rec r1, r2;
    rec_init(&r1, &e);
    rec_init(&r2, &e);
    char url[128];
    snprintf(url, sizeof url, "%s/", e.base);
    start_req(&r1, "HEAD", url, NULL, NULL, 0, false, 0);
    env_run_until(&e, &r1.n_done, 1);
    assert_int_equal(r1.rc, UPSTREAM_OK);
    assert_int_equal(r1.status, 200);
    assert_int_equal(r1.body.len, 0);
    assert_counts(&e, 1, 1);
    get(&r2, "/");
    env_run_until(&e, &r2.n_done, 1);
    assert_int_equal(r2.rc, UPSTREAM_OK);
    assert_string_equal(r2.body.data, "ok");
    assert_int_equal(e.srv.n_conns, 1);
    rec_release(&r1);
    rec_release(&r2);
    env_free(&e);
}

static void test_no_body_statuses(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] = (struct resp){.data = "HTTP/1.1 204 No Content\r\n\r\n"};
    e.srv.resp[1] = (struct resp){.data = "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n"};
    e.srv.n_resp = 2;
    struct rec r1, r2;
    rec_init(&r1, &e);
    rec_init(&r2, &e);
    get(&r1, "/");
    env_run_until(&e, &r1.n_done, 1);
    get(&r2, "/");
    env_run_until(&e, &r2.n_done, 1);
    assert_int_equal(r1.rc, UPSTREAM_OK);
    assert_int_equal(r1.status, 204);
    assert_int_equal(r2.rc, UPSTREAM_OK);
    assert_int_equal(r2.status, 304);
    assert_int_equal(r2.body.len, 0);
    assert_int_equal(e.srv.n_conns, 1);
    assert_counts(&e, 1, 1);
    rec_release(&r1);
    rec_release(&r2);
    env_free(&e);
}

static void test_interim_skipped(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] = (struct resp){.data = "HTTP/1.1 100 Continue\r\n\r\n"
                                          "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                                          "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"};
    e.srv.n_resp = 1;
    struct rec r;
    rec_init(&r, &e);
    get(&r, "/");
    env_run_until(&e, &r.n_done, 1);
    assert_int_equal(r.rc, UPSTREAM_OK);
    assert_int_equal(r.n_head, 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.hdrs.data, "Content-Length=2\n");
    assert_string_equal(r.body.data, "ok");
    assert_counts(&e, 1, 1);
    rec_release(&r);
    env_free(&e);
}

/* Sequential requests share one connection; three at once open three, and
 * the next one takes the most recently released. */
static void test_keepalive_reuse(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] = (struct resp){.data = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"};
    e.srv.n_resp = 1;
    struct rec r[6];
    for (int i = 0; i < 6; i++)
        rec_init(&r[i], &e);
    get(&r[0], "/");
    env_run_until(&e, &r[0].n_done, 1);
    assert_counts(&e, 1, 1);
    get(&r[1], "/");
    assert_counts(&e, 1, 0);
    env_run_until(&e, &r[1].n_done, 1);
    assert_int_equal(r[1].rc, UPSTREAM_OK);
    assert_int_equal(e.srv.n_conns, 1);
    assert_counts(&e, 1, 1);
    /* Three at once: the idle one and two new ones. */
    get(&r[2], "/");
    get(&r[3], "/");
    get(&r[4], "/");
    assert_counts(&e, 3, 0);
    int total = 0;
    while (total < 3) {
        uv_run(&e.loop, UV_RUN_ONCE);
        total = r[2].n_done + r[3].n_done + r[4].n_done;
    }
    assert_int_equal(e.srv.n_conns, 3);
    assert_counts(&e, 3, 3);
    get(&r[5], "/");
    assert_counts(&e, 3, 2);
    env_run_until(&e, &r[5].n_done, 1);
    assert_int_equal(r[5].rc, UPSTREAM_OK);
    assert_int_equal(e.srv.n_conns, 3);
    assert_int_equal(e.srv.n_reqs, 6);
    for (int i = 0; i < 6; i++)
        rec_release(&r[i]);
    env_free(&e);
}

/* A response that says Connection: close, and one with bytes after its end,
 * leave no idle connection. */
static void test_not_kept(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] = (struct resp){.data = "HTTP/1.1 200 OK\r\nConnection: close\r\n"
                                          "Content-Length: 1\r\n\r\na"};
    e.srv.resp[1] = (struct resp){.data = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nbEXTRA"};
    e.srv.resp[2] = (struct resp){.data = "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nc"};
    e.srv.n_resp = 3;
    for (int i = 0; i < 3; i++) {
        struct rec r;
        rec_init(&r, &e);
        get(&r, "/");
        env_run_until(&e, &r.n_done, 1);
        assert_int_equal(r.rc, UPSTREAM_OK);
        assert_int_equal(r.body.len, 1);
        assert_counts(&e, 0, 0);
        rec_release(&r);
    }
    assert_int_equal(e.srv.n_conns, 3);
    env_free(&e);
}

static struct rec *g_next;

static void start_next(struct rec *r)
{
    (void)r;
    get(g_next, "/");
}

/* The server closes its end right after the first response.  The second
 * request, started from done before the client has read that close, goes
 * out on the pooled (dead) connection (checked: one open, none idle right
 * after h1_start) and is sent again, transparently, on a new one. */
static void check_reused(struct rec *r)
{
    size_t open, idle;
    start_next(r);
    counts(r->e, &open, &idle);
    assert_int_equal(open, 1);
    assert_int_equal(idle, 0);
}

static void test_stale_resend(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] =
        (struct resp){.data = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na", .close = true};
    e.srv.resp[1] = (struct resp){.data = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"};
    e.srv.n_resp = 2;
    struct rec r1, r2;
    rec_init(&r1, &e);
    rec_init(&r2, &e);
    g_next = &r2;
    r1.then = check_reused;
    get(&r1, "/");
    env_run_until(&e, &r1.n_done, 1);
    env_run_until(&e, &r2.n_done, 1);
    assert_int_equal(r2.rc, UPSTREAM_OK);
    assert_string_equal(r2.body.data, "b");
    assert_int_equal(e.srv.n_conns, 2);
    rec_release(&r1);
    rec_release(&r2);
    env_free(&e);
}

/* An idle connection the upstream closes is noticed and dropped. */
static void test_idle_closed_by_server(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] =
        (struct resp){.data = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na", .close = true};
    e.srv.n_resp = 1;
    struct rec r1, r2;
    rec_init(&r1, &e);
    rec_init(&r2, &e);
    get(&r1, "/");
    env_run_until(&e, &r1.n_done, 1);
    size_t open = 1, idle = 1;
    while (open || idle) {
        uv_run(&e.loop, UV_RUN_ONCE);
        counts(&e, &open, &idle);
    }
    get(&r2, "/");
    env_run_until(&e, &r2.n_done, 1);
    assert_int_equal(r2.rc, UPSTREAM_OK);
    assert_int_equal(e.srv.n_conns, 2);
    rec_release(&r1);
    rec_release(&r2);
    env_free(&e);
}

/* Bytes of the response arrived, then the close: no resend, even on a
 * reused connection. */
static void test_closed_mid_response(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] = (struct resp){.data = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"};
    e.srv.resp[1] =
        (struct resp){.data = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", .close = true};
    e.srv.n_resp = 2;
    struct rec r1, r2;
    rec_init(&r1, &e);
    rec_init(&r2, &e);
    get(&r1, "/");
    env_run_until(&e, &r1.n_done, 1);
    get(&r2, "/");
    env_run_until(&e, &r2.n_done, 1);
    assert_int_equal(r2.rc, UPSTREAM_ERR_RECV);
    assert_string_equal(r2.msg, "upstream closed the connection before the response ended");
    assert_int_equal(r2.n_head, 1);
    assert_string_equal(r2.body.data, "abc");
    assert_int_equal(e.srv.n_conns, 1);
    assert_counts(&e, 0, 0);
    rec_release(&r1);
    rec_release(&r2);
    env_free(&e);
}

/* A reset before any byte of the response (on a new connection, so not
 * sent again). */
static void test_reset(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] = (struct resp){.data = "", .reset = true};
    e.srv.n_resp = 1;
    struct rec r;
    rec_init(&r, &e);
    get(&r, "/");
    env_run_until(&e, &r.n_done, 1);
    assert_int_equal(r.rc, UPSTREAM_ERR_RECV);
    assert_string_equal(r.msg, "connection reset by upstream");
    assert_counts(&e, 0, 0);
    rec_release(&r);
    env_free(&e);
}

static void test_connect_refused(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    /* A port nobody listens on: bound, never listened, closed. */
    uv_tcp_t t;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(&e.loop, &t);
    assert_int_equal(uv_tcp_bind(&t, (struct sockaddr *)&a, 0), 0);
    struct sockaddr_in got;
    int len = sizeof got;
    uv_tcp_getsockname(&t, (struct sockaddr *)&got, &len);
    int port = ntohs(got.sin_port);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&e.loop, UV_RUN_NOWAIT);
    struct rec r;
    rec_init(&r, &e);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/x", port);
    assert_non_null(start_req(&r, "GET", url, NULL, NULL, 0, false, 0));
    env_run_until(&e, &r.n_done, 1);
    assert_int_equal(r.rc, UPSTREAM_ERR_CONNECT);
    char want[96];
    snprintf(want, sizeof want, "connection refused (127.0.0.1:%d)", port);
    assert_string_equal(r.msg, want);
    assert_int_equal(r.n_head, 0);
    assert_counts(&e, 0, 0);
    rec_release(&r);
    env_free(&e);
}

/* A listener whose accept queue is full drops further SYNs, so a connect
 * to it hangs: the connect timeout ends it with UPSTREAM_ERR_CONNECT naming the
 * address, from the timer, never from inside h1_start(). */
static void test_connect_timeout(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(lfd >= 0);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(lfd, 0), 0);
    socklen_t alen = sizeof a;
    getsockname(lfd, (struct sockaddr *)&a, &alen);
    int fill[4];
    for (int i = 0; i < 4; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fill[i], (struct sockaddr *)&a, sizeof a);
    }
    struct rec r;
    rec_init(&r, &e);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", ntohs(a.sin_port));
    struct upstream_request req = {.method = "GET", .url = url, .connect_timeout_ms = 100};
    g_in_api = true;
    r.x = h1_start(e.h, &req, &CBS, &r);
    g_in_api = false;
    assert_non_null(r.x);
    assert_int_equal(r.n_done, 0);
    uint64_t t0 = now_mono_ms();
    env_run_until(&e, &r.n_done, 1);
    assert_true(now_mono_ms() - t0 >= 90);
    assert_int_equal(r.rc, UPSTREAM_ERR_CONNECT);
    char want[96];
    snprintf(want, sizeof want, "connect to 127.0.0.1:%d timed out after 100 ms",
             ntohs(a.sin_port));
    assert_string_equal(r.msg, want);
    assert_counts(&e, 0, 0);
    for (int i = 0; i < 4; i++)
        close(fill[i]);
    close(lfd);
    rec_release(&r);
    env_free(&e);
}

static void test_localhost(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] = (struct resp){.data = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"};
    e.srv.n_resp = 1;
    struct rec r1, r2;
    rec_init(&r1, &e);
    rec_init(&r2, &e);
    char url[128];
    snprintf(url, sizeof url, "http://localhost:%d/", e.srv.port);
    start_req(&r1, "GET", url, NULL, NULL, 0, false, 0);
    env_run_until(&e, &r1.n_done, 1);
    assert_int_equal(r1.rc, UPSTREAM_OK);
    assert_string_equal(r1.body.data, "hi");
    start_req(&r2, "GET", url, NULL, NULL, 0, false, 0);
    env_run_until(&e, &r2.n_done, 1);
    assert_int_equal(r2.rc, UPSTREAM_OK);
    assert_int_equal(e.srv.n_conns, 1);
    rec_release(&r1);
    rec_release(&r2);
    env_free(&e);
}

static void test_ipv6_literal(void **state)
{
    (void)state;
    struct env e;
    bool ok;
    env_init_ip(&e, "::1", &ok);
    if (!ok) {
        fprintf(stderr, "SKIPPED test_ipv6_literal: cannot listen on [::1] here\n");
        env_free(&e);
        skip();
    }
    e.srv.resp[0] = (struct resp){.data = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nv6"};
    e.srv.n_resp = 1;
    struct rec r;
    rec_init(&r, &e);
    get(&r, "/six");
    env_run_until(&e, &r.n_done, 1);
    assert_int_equal(r.rc, UPSTREAM_OK);
    assert_string_equal(r.body.data, "v6");
    char want[128];
    snprintf(want, sizeof want, "GET /six HTTP/1.1\r\nHost: [::1]:%d\r\n\r\n", e.srv.port);
    assert_string_equal(e.srv.heads.data, want);
    rec_release(&r);
    env_free(&e);
}

static void test_malformed(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] = (struct resp){.data = "HTTP/1.1 2x0 OK\r\n\r\n"};
    e.srv.resp[1] = (struct resp){.data = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab"};
    e.srv.resp[2] = (struct resp){.data = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                          "zz\r\n"};
    e.srv.n_resp = 3;
    struct rec r;
    rec_init(&r, &e);
    get(&r, "/");
    env_run_until(&e, &r.n_done, 1);
    assert_int_equal(r.rc, UPSTREAM_ERR_PROTOCOL);
    assert_true(strncmp(r.msg, "malformed response from upstream: ", 34) == 0);
    assert_true(strlen(r.msg) > 34);
    assert_int_equal(r.n_head, 0);
    assert_counts(&e, 0, 0);
    rec_release(&r);
    /* Extra bytes after a complete response: fine for that response, the
     * connection is dropped. */
    rec_init(&r, &e);
    get(&r, "/");
    env_run_until(&e, &r.n_done, 1);
    assert_int_equal(r.rc, UPSTREAM_OK);
    assert_counts(&e, 0, 0);
    rec_release(&r);
    rec_init(&r, &e);
    get(&r, "/");
    env_run_until(&e, &r.n_done, 1);
    assert_int_equal(r.rc, UPSTREAM_ERR_PROTOCOL);
    assert_int_equal(r.n_head, 1);
    rec_release(&r);
    env_free(&e);
}

static void test_header_limits(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    struct buf many, big;
    buf_init(&many, 1 << 20);
    buf_init(&big, 1 << 20);
    buf_append(&many, "HTTP/1.1 200 OK\r\n", 17);
    for (int i = 0; i < 201; i++)
        buf_appendf(&many, "X-%d: v\r\n", i);
    buf_append(&many, "Content-Length: 0\r\n\r\n", 21);
    buf_append(&big, "HTTP/1.1 200 OK\r\nX-Big: ", 24);
    for (int i = 0; i < 70000; i++)
        buf_append(&big, "a", 1);
    buf_append(&big, "\r\nContent-Length: 0\r\n\r\n", 23);
    e.srv.resp[0] = (struct resp){.data = many.data, .len = many.len};
    e.srv.resp[1] = (struct resp){.data = big.data, .len = big.len};
    e.srv.n_resp = 2;
    for (int i = 0; i < 2; i++) {
        struct rec r;
        rec_init(&r, &e);
        get(&r, "/");
        env_run_until(&e, &r.n_done, 1);
        assert_int_equal(r.rc, UPSTREAM_ERR_PROTOCOL);
        assert_int_equal(r.n_head, 0);
        rec_release(&r);
    }
    /* 200 fields are fine. */
    buf_reset(&many);
    buf_append(&many, "HTTP/1.1 200 OK\r\n", 17);
    for (int i = 0; i < 199; i++)
        buf_appendf(&many, "X-%d: v\r\n", i);
    buf_append(&many, "Content-Length: 0\r\n\r\n", 21);
    e.srv.resp[2] = (struct resp){.data = many.data, .len = many.len};
    e.srv.n_resp = 3;
    struct rec r;
    rec_init(&r, &e);
    get(&r, "/");
    env_run_until(&e, &r.n_done, 1);
    assert_int_equal(r.rc, UPSTREAM_OK);
    rec_release(&r);
    env_free(&e);
    buf_release(&many);
    buf_release(&big);
}

static void check_pattern(const struct buf *b, size_t n)
{
    assert_int_equal(b->len, n);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)b->data[i] != pat(i))
            fail_msg("byte %zu differs", i);
}

/* body() pauses twice on every span (the second time on the redelivery);
 * resumes come from a timer.  Every byte arrives once, in order, for a
 * chunked body of many small chunks (the kept remainder holds framing and
 * the end of the message) and for a large Content-Length body. */
static void test_pause_resume(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    struct buf chunked, plain;
    buf_init(&chunked, 1 << 24);
    buf_init(&plain, 1 << 24);
    buf_appendf(&chunked, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    size_t off = 0;
    for (size_t i = 1; i <= 200; i++) {
        size_t n = (i * 37) % 300 + 1;
        buf_appendf(&chunked, "%zx\r\n", n);
        for (size_t k = 0; k < n; k++)
            buf_append(&chunked, &(char){(char)pat(off + k)}, 1);
        buf_append(&chunked, "\r\n", 2);
        off += n;
    }
    buf_append(&chunked, "0\r\n\r\n", 5);
    size_t plain_len = 300000;
    buf_appendf(&plain, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", plain_len);
    for (size_t k = 0; k < plain_len; k++)
        buf_append(&plain, &(char){(char)pat(k)}, 1);
    e.srv.resp[0] = (struct resp){.data = chunked.data, .len = chunked.len};
    e.srv.resp[1] = (struct resp){.data = plain.data, .len = plain.len};
    e.srv.n_resp = 2;

    struct rec r;
    rec_init(&r, &e);
    r.pause = true;
    get(&r, "/");
    env_run_until(&e, &r.n_done, 1);
    assert_int_equal(r.rc, UPSTREAM_OK);
    check_pattern(&r.body, off);
    assert_true(r.pauses >= 400);
    assert_counts(&e, 1, 1);
    rec_release(&r);

    rec_init(&r, &e);
    r.pause = true;
    get(&r, "/");
    env_run_until(&e, &r.n_done, 1);
    assert_int_equal(r.rc, UPSTREAM_OK);
    check_pattern(&r.body, plain_len);
    assert_true(r.pauses >= 2);
    assert_int_equal(e.srv.n_conns, 1);
    assert_counts(&e, 1, 1);
    rec_release(&r);
    env_free(&e);
    buf_release(&chunked);
    buf_release(&plain);
}

/* h1_resume() finishes the message (done deferred), then h1_abort() comes
 * before the deferred done: no done at all.  h1_resume() when not paused
 * does nothing. */
static size_t cb_body_pause_once(void *ud, const char *p, size_t n)
{
    struct rec *r = ud;
    (void)p;
    if (r->pauses++ == 0)
        return UPSTREAM_PAUSE;
    buf_append(&r->body, p, n);
    return n;
}

static void test_abort_after_resume(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] = (struct resp){.data = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"};
    e.srv.n_resp = 1;
    struct rec r;
    rec_init(&r, &e);
    static const struct upstream_cbs cbs = {cb_head, cb_body_pause_once, cb_done};
    struct upstream_request req = {.method = "GET", .url = NULL};
    char url[128];
    snprintf(url, sizeof url, "%s/", e.base);
    req.url = url;
    r.x = h1_start(e.h, &req, &cbs, &r);
    assert_non_null(r.x);
    while (r.pauses == 0)
        uv_run(&e.loop, UV_RUN_ONCE);
    for (int i = 0; i < 3; i++)
        uv_run(&e.loop, UV_RUN_NOWAIT);
    assert_int_equal(r.pauses, 1);
    g_in_api = true;
    h1_resume(r.x);
    g_in_api = false;
    assert_string_equal(r.body.data, "abc");
    assert_int_equal(r.n_done, 0);
    h1_resume(r.x); /* not paused: nothing */
    h1_abort(r.x);
    for (int i = 0; i < 5; i++)
        uv_run(&e.loop, UV_RUN_NOWAIT);
    assert_int_equal(r.n_done, 0);
    rec_release(&r);
    env_free(&e);
}

/* h1_abort() from inside body(): no callback after it; the connection is
 * closed (the server sees it go). */
static void test_abort_mid_body(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] = (struct resp){.data = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
                                          "0123456789",
                                  .dribble = true};
    e.srv.n_resp = 1;
    struct rec r;
    rec_init(&r, &e);
    r.abort_at = 3;
    get(&r, "/");
    while (!r.aborted)
        uv_run(&e.loop, UV_RUN_ONCE);
    assert_int_equal(r.body.len, 3);
    assert_counts(&e, 0, 0);
    while (e.srv.n_open > 0)
        uv_run(&e.loop, UV_RUN_ONCE);
    assert_int_equal(r.n_done, 0);
    assert_int_equal(r.body.len, 3);
    rec_release(&r);
    env_free(&e);
}

/* h1_abort() from inside head(), with body bytes in the same read: no
 * body callback, no done, the connection is not kept. */
static void test_abort_in_head(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] = (struct resp){.data = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"};
    e.srv.n_resp = 1;
    struct rec r;
    rec_init(&r, &e);
    r.abort_in_head = true;
    get(&r, "/");
    while (!r.aborted)
        uv_run(&e.loop, UV_RUN_ONCE);
    for (int i = 0; i < 5; i++)
        uv_run(&e.loop, UV_RUN_NOWAIT);
    assert_int_equal(r.n_head, 1);
    assert_int_equal(r.body.len, 0);
    assert_int_equal(r.n_done, 0);
    assert_counts(&e, 0, 0);
    rec_release(&r);
    env_free(&e);
}

/* h1_abort() from outside while paused, and while connecting. */
static void test_abort_outside(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] = (struct resp){.data = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"};
    e.srv.n_resp = 1;
    struct rec r1, r2;
    rec_init(&r1, &e);
    rec_init(&r2, &e);
    static const struct upstream_cbs cbs = {cb_head, cb_body_pause_once, cb_done};
    char url[128];
    snprintf(url, sizeof url, "%s/", e.base);
    struct upstream_request req = {.method = "GET", .url = url};
    r1.x = h1_start(e.h, &req, &cbs, &r1);
    while (r1.pauses == 0)
        uv_run(&e.loop, UV_RUN_ONCE);
    g_in_api = true;
    h1_abort(r1.x);
    g_in_api = false;
    r1.aborted = true;
    get(&r2, "/");
    g_in_api = true;
    h1_abort(r2.x);
    g_in_api = false;
    r2.aborted = true;
    assert_counts(&e, 0, 0);
    for (int i = 0; i < 5; i++)
        uv_run(&e.loop, UV_RUN_NOWAIT);
    assert_int_equal(r1.n_done + r2.n_done, 0);
    rec_release(&r1);
    rec_release(&r2);
    env_free(&e);
}

static void test_head_false(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] = (struct resp){.data = "HTTP/1.1 500 Oops\r\nContent-Length: 3\r\n\r\nabc"};
    e.srv.n_resp = 1;
    struct rec r;
    rec_init(&r, &e);
    r.head_false = true;
    get(&r, "/");
    env_run_until(&e, &r.n_done, 1);
    assert_int_equal(r.rc, UPSTREAM_ERR_ABORTED);
    assert_int_equal(r.n_head, 1);
    assert_int_equal(r.status, 500);
    assert_int_equal(r.body.len, 0);
    assert_counts(&e, 0, 0);
    rec_release(&r);
    env_free(&e);
}

static size_t cb_body_stop(void *ud, const char *p, size_t n)
{
    (void)ud;
    (void)p;
    return n - 1;
}

static void test_body_stop(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] = (struct resp){.data = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"};
    e.srv.n_resp = 1;
    struct rec r;
    rec_init(&r, &e);
    static const struct upstream_cbs cbs = {cb_head, cb_body_stop, cb_done};
    char url[128];
    snprintf(url, sizeof url, "%s/", e.base);
    struct upstream_request req = {.method = "GET", .url = url};
    r.x = h1_start(e.h, &req, &cbs, &r);
    env_run_until(&e, &r.n_done, 1);
    assert_int_equal(r.rc, UPSTREAM_ERR_ABORTED);
    assert_counts(&e, 0, 0);
    rec_release(&r);
    env_free(&e);
}

static void test_timeout(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] = (struct resp){.data = NULL};
    e.srv.n_resp = 1;
    struct rec r;
    rec_init(&r, &e);
    char url[128];
    snprintf(url, sizeof url, "%s/", e.base);
    uint64_t t0 = now_mono_ms();
    start_req(&r, "GET", url, NULL, NULL, 0, false, 150);
    env_run_until(&e, &r.n_done, 1);
    uint64_t took = now_mono_ms() - t0;
    assert_int_equal(r.rc, UPSTREAM_ERR_TIMEOUT);
    assert_string_equal(r.msg, "timed out after 150 ms");
    assert_true(took >= 140 && took < 1000);
    assert_int_equal(e.srv.n_reqs, 1);
    assert_counts(&e, 0, 0);
    rec_release(&r);
    env_free(&e);
}

static void test_big_request_body(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] = (struct resp){.data = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"};
    e.srv.n_resp = 1;
    size_t n = 1 << 20;
    char *body = xmalloc(n);
    for (size_t i = 0; i < n; i++)
        body[i] = (char)pat(i);
    struct rec r;
    rec_init(&r, &e);
    char url[128];
    snprintf(url, sizeof url, "%s/up", e.base);
    start_req(&r, "PUT", url, "Content-Type: application/octet-stream\r\n", body, n, true, 0);
    env_run_until(&e, &r.n_done, 1);
    assert_int_equal(r.rc, UPSTREAM_OK);
    assert_string_equal(r.body.data, "ok");
    assert_int_equal(e.srv.body_len, n);
    assert_memory_equal(e.srv.body, body, n);
    assert_counts(&e, 1, 1);
    rec_release(&r);
    free(body);
    env_free(&e);
}

/* The upstream answers 413 while the (32 MiB) body is still being written:
 * the response is delivered, and the connection is not reused. */
static void test_early_response(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    e.srv.resp[0] = (struct resp){.data = "HTTP/1.1 413 Payload Too Large\r\n"
                                          "Content-Length: 4\r\n\r\nbig!",
                                  .early = true};
    e.srv.n_resp = 1;
    size_t n = 32u << 20;
    char *body = xcalloc(1, n);
    struct rec r;
    rec_init(&r, &e);
    char url[128];
    snprintf(url, sizeof url, "%s/up", e.base);
    start_req(&r, "POST", url, NULL, body, n, true, 0);
    env_run_until(&e, &r.n_done, 1);
    assert_int_equal(r.rc, UPSTREAM_OK);
    assert_int_equal(r.status, 413);
    assert_string_equal(r.body.data, "big!");
    assert_true(e.srv.bytes_in < n);
    assert_counts(&e, 0, 0);
    free(body); /* the client must not touch it any more */
    for (int i = 0; i < 5; i++)
        uv_run(&e.loop, UV_RUN_NOWAIT);
    rec_release(&r);
    env_free(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_request_shapes),
        cmocka_unit_test(test_bad_urls),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_dribbled),
        cmocka_unit_test(test_close_delimited),
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_no_body_statuses),
        cmocka_unit_test(test_interim_skipped),
        cmocka_unit_test(test_keepalive_reuse),
        cmocka_unit_test(test_not_kept),
        cmocka_unit_test(test_stale_resend),
        cmocka_unit_test(test_idle_closed_by_server),
        cmocka_unit_test(test_closed_mid_response),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_connect_timeout),
        cmocka_unit_test(test_localhost),
        cmocka_unit_test(test_ipv6_literal),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_header_limits),
        cmocka_unit_test(test_pause_resume),
        cmocka_unit_test(test_abort_after_resume),
        cmocka_unit_test(test_abort_mid_body),
        cmocka_unit_test(test_abort_in_head),
        cmocka_unit_test(test_abort_outside),
        cmocka_unit_test(test_head_false),
        cmocka_unit_test(test_body_stop),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_big_request_body),
        cmocka_unit_test(test_early_response),
    };
    return cmocka_run_group_tests_name("h1", tests, NULL, NULL);
}
