/*
 * Unit tests for h2, in memory: an h2 client session (the module under
 * test) and an nghttp2 server session exchange bytes through two buffers;
 * pump() moves them until neither side has anything to say.  The server
 * answers what each test scripts (responses, RST_STREAM, GOAWAY).
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
#include <nghttp2/nghttp2.h>

#include "h2.h"
#include "util.h"

/* ---- the client side: one record per stream ------------------------------ */

struct rec {
    int status;
    char hdrs[2048]; /* "name: value\n" lines as head() got them */
    char body[8192];
    size_t body_len, body_total;
    int pause_left; /* body() answers UPSTREAM_PAUSE this many times */
    bool closed;
    enum upstream_rc rc;
    enum h2_retry retry;
    char msg[200];
    bool sent;
};

static char c2s[1 << 20];
static size_t c2s_len;
static int n_sends;

static bool on_send(void *conn, const uint8_t *data, size_t len)
{
    (void)conn;
    n_sends++;
    assert_true(c2s_len + len <= sizeof c2s);
    memcpy(c2s + c2s_len, data, len);
    c2s_len += len;
    return true;
}

static bool on_head(void *ud, int status, const struct upstream_hdr *h, size_t n)
{
    struct rec *r = ud;
    r->status = status;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(r->hdrs);
        snprintf(r->hdrs + l, sizeof r->hdrs - l, "%.*s: %.*s\n", (int)h[i].name_len, h[i].name,
                 (int)h[i].value_len, h[i].value);
    }
    return true;
}

static size_t on_body(void *ud, const char *data, size_t len)
{
    struct rec *r = ud;
    if (r->pause_left > 0) {
        r->pause_left--;
        return UPSTREAM_PAUSE;
    }
    size_t n = len < sizeof r->body - r->body_len ? len : sizeof r->body - r->body_len;
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body_total += len;
    return len;
}

static void on_sent(void *ud)
{
    ((struct rec *)ud)->sent = true;
}

static void on_close(void *ud, enum upstream_rc rc, const char *msg, enum h2_retry retry)
{
    struct rec *r = ud;
    assert_false(r->closed);
    r->closed = true;
    r->rc = rc;
    r->retry = retry;
    snprintf(r->msg, sizeof r->msg, "%s", msg);
}

static const struct h2_ops ops = {on_send, on_head, on_body, on_sent, on_close};

/* ---- the server side -------------------------------------------------------- */

struct srv {
    nghttp2_session *ng;
    int32_t last_id;
    char req_hdrs[16384]; /* of the last request */
    char req_body[64 * 1024];
    size_t req_body_len;
    int n_requests;
};

static struct srv S;
static char s2c[1 << 20];
static size_t s2c_len;

static int srv_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                      const uint8_t *value, size_t vl, uint8_t flags, void *user)
{
    (void)ng;
    (void)flags;
    (void)user;
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (f->hd.stream_id != S.last_id) {
        S.last_id = f->hd.stream_id;
        S.req_hdrs[0] = '\0';
        S.req_body_len = 0;
        S.n_requests++;
    }
    size_t l = strlen(S.req_hdrs);
    snprintf(S.req_hdrs + l, sizeof S.req_hdrs - l, "%.*s: %.*s\n", (int)nl, name, (int)vl, value);
    return 0;
}

static int srv_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                    void *user)
{
    (void)ng;
    (void)flags;
    (void)id;
    (void)user;
    memcpy(S.req_body + S.req_body_len, data, len);
    S.req_body_len += len;
    return 0;
}

static void srv_start(uint32_t max_streams)
{
    memset(&S, 0, sizeof S);
    c2s_len = s2c_len = 0;
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, srv_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, srv_data);
    assert_int_equal(nghttp2_session_server_new(&S.ng, cb, NULL), 0);
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_streams}};
    nghttp2_submit_settings(S.ng, NGHTTP2_FLAG_NONE, iv, 1);
}

/* Moves bytes both ways until both sides are quiet. */
static void pump(struct h2_sess *s)
{
    for (int round = 0; round < 200; round++) {
        assert_int_equal(h2_sess_flush(s), 0);
        const uint8_t *d;
        ssize_t n;
        while ((n = nghttp2_session_mem_send(S.ng, &d)) > 0) {
            memcpy(s2c + s2c_len, d, (size_t)n);
            s2c_len += (size_t)n;
        }
        if (c2s_len == 0 && s2c_len == 0)
            return;
        if (c2s_len) {
            assert_int_equal(nghttp2_session_mem_recv(S.ng, (uint8_t *)c2s, c2s_len),
                             (ssize_t)c2s_len);
            c2s_len = 0;
        }
        if (s2c_len) {
            size_t len = s2c_len;
            s2c_len = 0;
            char *copy = xmalloc(len);
            memcpy(copy, s2c, len);
            h2_sess_recv(s, copy, len);
            free(copy);
        }
    }
    fail_msg("the sessions never went quiet");
}

struct src {
    const char *p;
    size_t left;
};
static struct src srcs[8];
static int n_srcs;

static ssize_t srv_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len, uint32_t *fl,
                        nghttp2_data_source *source, void *user)
{
    (void)ng;
    (void)id;
    (void)user;
    struct src *b = source->ptr;
    size_t n = b->left < len ? b->left : len;
    memcpy(buf, b->p, n);
    b->p += n;
    b->left -= n;
    if (b->left == 0)
        *fl |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

#define NV(n, v)                                                        \
    {                                                                   \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, 0 \
    }

static struct src *respond(int32_t id, const char *body, size_t len)
{
    nghttp2_nv nva[] = {NV(":status", "200"), NV("content-type", "text/plain")};
    struct src *b = &srcs[n_srcs++ % 8];
    b->p = body;
    b->left = len;
    nghttp2_data_provider dp = {.source.ptr = b, .read_callback = srv_read};
    assert_int_equal(nghttp2_submit_response(S.ng, id, nva, 2, &dp), 0);
    return b;
}

/* The pieces of an HTTP/1.1-style head, as h1.c hands them over: the
 * method and target of the request line, its other lines as the caller's
 * header lines (a Host line among them becomes :authority). */
static struct h2_req req_of(const char *head, size_t len)
{
    const char *sp1 = memchr(head, ' ', len);
    const char *sp2 = memchr(sp1 + 1, ' ', len - (size_t)(sp1 + 1 - head));
    const char *eol = strstr(head, "\r\n");
    struct h2_req q = {.method = head,
                       .method_len = (size_t)(sp1 - head),
                       .path = sp1 + 1,
                       .path_len = (size_t)(sp2 - sp1 - 1),
                       .headers = eol + 2,
                       .headers_len = len - (size_t)(eol + 2 - head)};
    return q;
}

static struct h2_stream *open_get(struct h2_sess *s, struct rec *r, const char *head)
{
    char err[100];
    struct h2_req q = req_of(head, strlen(head));
    struct h2_stream *st = h2_stream_open(s, &q, r, err, sizeof err);
    assert_non_null(st);
    return st;
}

static const char GET[] = "GET /v1/models?x=1 HTTP/1.1\r\nHost: api.example:8443\r\n"
                          "X-Api-Key: k\r\nConnection: keep-alive\r\nTE: trailers\r\n\r\n";

/* ---- tests ------------------------------------------------------------------ */

static void test_request_and_response(void **state)
{
    (void)state;
    srv_start(100);
    struct h2_sess *s = h2_sess_new(&ops, NULL);
    struct rec r = {0};
    open_get(s, &r, GET);
    pump(s);
    assert_int_equal(S.n_requests, 1);
    assert_string_equal(S.req_hdrs, ":method: GET\n:scheme: https\n:authority: api.example:8443\n"
                                    ":path: /v1/models?x=1\nx-api-key: k\nte: trailers\n");
    assert_true(r.sent);
    respond(S.last_id, "hello", 5);
    pump(s);
    assert_true(r.closed);
    assert_int_equal(r.rc, UPSTREAM_OK);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.hdrs, "content-type: text/plain\n");
    assert_int_equal(r.body_len, 5);
    assert_memory_equal(r.body, "hello", 5);
    assert_int_equal(h2_sess_streams(s), 0);

    /* A body with Content-Length goes out as DATA. */
    static const char post[] = "POST /v1/messages HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\n";
    struct rec r2 = {0};
    char err[100];
    struct h2_req q = req_of(post, strlen(post));
    q.body = "abcd";
    q.body_len = 4;
    assert_non_null(h2_stream_open(s, &q, &r2, err, sizeof err));
    pump(s);
    assert_int_equal(S.req_body_len, 4);
    assert_memory_equal(S.req_body, "abcd", 4);
    assert_non_null(strstr(S.req_hdrs, "content-length: 4\n"));
    respond(S.last_id, "", 0);
    pump(s);
    assert_true(r2.closed);
    assert_int_equal(r2.rc, UPSTREAM_OK);
    h2_sess_free(s);
    nghttp2_session_del(S.ng);
}

/* More request headers than a stream takes is an error, never a header
 * silently left out (the token is the last one the proxy adds). */
static void test_too_many_request_headers(void **state)
{
    (void)state;
    srv_start(100);
    struct h2_sess *s = h2_sess_new(&ops, NULL);
    size_t cap = 64 * 300 + 200;
    char *head = malloc(cap);
    size_t len = (size_t)snprintf(head, cap, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (int i = 0; i < 256; i++)
        len += (size_t)snprintf(head + len, cap - len, "X-H%d: v\r\n", i);
    size_t at_cap = len;
    len += (size_t)snprintf(head + len, cap - len, "Authorization: Bearer t\r\n\r\n");
    char err[100] = "";
    struct rec r = {0};
    struct h2_req q = req_of(head, len);
    assert_null(h2_stream_open(s, &q, &r, err, sizeof err));
    assert_string_equal(err, "HTTP/2: more than 256 request headers");
    /* 256 headers exactly still go. */
    memcpy(head + at_cap, "\r\n", 2);
    q = req_of(head, at_cap + 2);
    assert_non_null(h2_stream_open(s, &q, &r, err, sizeof err));
    pump(s);
    assert_int_equal(S.n_requests, 1);
    free(head);
    h2_sess_free(s);
    nghttp2_session_del(S.ng);
}

/* A paused stream keeps its window shut; another stream still flows. */
static void test_pause_holds_only_its_stream(void **state)
{
    (void)state;
    srv_start(100);
    struct h2_sess *s = h2_sess_new(&ops, NULL);
    static char big[300 * 1024];
    memset(big, 'b', sizeof big);
    struct rec a = {.pause_left = 1000000}, b = {0};
    struct h2_stream *sa = open_get(s, &a, GET);
    pump(s);
    int32_t ida = S.last_id;
    struct src *sb = respond(ida, big, sizeof big);
    pump(s);
    /* The server could send no more than the stream window. */
    assert_int_equal(nghttp2_session_get_stream_remote_window_size(S.ng, ida), 0);
    assert_true(sb->left > 0);
    assert_int_equal(a.body_total, 0);
    assert_false(a.closed);
    open_get(s, &b, GET);
    pump(s);
    respond(S.last_id, "other", 5);
    pump(s);
    assert_true(b.closed);
    assert_int_equal(b.rc, UPSTREAM_OK);
    assert_int_equal(b.body_len, 5);
    /* Resumed: what was kept is delivered, the window opens, the rest comes. */
    a.pause_left = 0;
    h2_stream_resume(sa);
    assert_int_equal(a.body_total, H2_STREAM_WINDOW);
    pump(s);
    assert_true(a.closed);
    assert_int_equal(a.rc, UPSTREAM_OK);
    assert_int_equal(a.body_total, sizeof big);
    h2_sess_free(s);
    nghttp2_session_del(S.ng);
}

/* A :status that is not three digits from 100 up ("003" passes nghttp2's
 * own check) ends the stream as a protocol error: never read as an interim
 * head with the DATA that follows going out before any head (fuzz_h2). */
static void test_bad_status_is_a_protocol_error(void **state)
{
    (void)state;
    static const char *const bad[] = {"003", "099", "2x0"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        srv_start(100);
        struct h2_sess *s = h2_sess_new(&ops, NULL);
        struct rec r = {0};
        open_get(s, &r, GET);
        pump(s);
        nghttp2_nv nva[] = {{(uint8_t *)":status", (uint8_t *)bad[i], 7, 3, 0}};
        struct src *b = &srcs[n_srcs++ % 8];
        b->p = "data";
        b->left = 4;
        nghttp2_data_provider dp = {.source.ptr = b, .read_callback = srv_read};
        assert_int_equal(nghttp2_submit_response(S.ng, S.last_id, nva, 1, &dp), 0);
        pump(s);
        assert_true(r.closed);
        assert_int_equal(r.rc, UPSTREAM_ERR_PROTOCOL);
        assert_int_equal(r.status, 0);
        assert_int_equal(r.body_total, 0);
        h2_sess_free(s);
        nghttp2_session_del(S.ng);
    }
}

/* A paused stream whose END_STREAM arrived keeps its bytes; when the
 * connection is then lost it still ends, once, as an error (what it kept
 * is lost), not silently with the session. */
static void test_paused_ended_stream_ends_when_connection_lost(void **state)
{
    (void)state;
    srv_start(100);
    struct h2_sess *s = h2_sess_new(&ops, NULL);
    struct rec a = {.pause_left = 1000000};
    open_get(s, &a, GET);
    pump(s);
    respond(S.last_id, "kept", 4);
    pump(s);
    assert_false(a.closed); /* ended upstream, but paused with its bytes */
    h2_sess_fail(s, UPSTREAM_ERR_RECV, "the connection closed");
    assert_true(a.closed);
    assert_int_equal(a.rc, UPSTREAM_ERR_RECV);
    assert_int_equal(a.body_total, 0);
    h2_sess_free(s);
    nghttp2_session_del(S.ng);
}

static void test_rst_stream_ends_one_stream(void **state)
{
    (void)state;
    srv_start(100);
    struct h2_sess *s = h2_sess_new(&ops, NULL);
    struct rec a = {0}, b = {0}, c = {0};
    open_get(s, &a, GET);
    pump(s);
    int32_t ida = S.last_id;
    open_get(s, &b, GET);
    open_get(s, &c, GET);
    pump(s);
    nghttp2_submit_rst_stream(S.ng, NGHTTP2_FLAG_NONE, ida, NGHTTP2_INTERNAL_ERROR);
    nghttp2_submit_rst_stream(S.ng, NGHTTP2_FLAG_NONE, ida + 2, NGHTTP2_PROTOCOL_ERROR);
    pump(s);
    assert_true(a.closed);
    assert_int_equal(a.rc, UPSTREAM_ERR_RECV);
    assert_int_equal(a.retry, H2_RETRY_NO);
    assert_non_null(strstr(a.msg, "INTERNAL_ERROR"));
    assert_true(b.closed);
    assert_int_equal(b.rc, UPSTREAM_ERR_PROTOCOL);
    assert_false(c.closed);
    respond(ida + 4, "ok", 2);
    pump(s);
    assert_true(c.closed);
    assert_int_equal(c.rc, UPSTREAM_OK);
    h2_sess_free(s);
    nghttp2_session_del(S.ng);
}

static void test_goaway_refuses_later_streams(void **state)
{
    (void)state;
    srv_start(100);
    struct h2_sess *s = h2_sess_new(&ops, NULL);
    struct rec a = {0}, b = {0};
    open_get(s, &a, GET);
    pump(s);
    int32_t ida = S.last_id;
    open_get(s, &b, GET);
    pump(s);
    nghttp2_submit_goaway(S.ng, NGHTTP2_FLAG_NONE, ida, NGHTTP2_NO_ERROR, NULL, 0);
    pump(s);
    assert_true(b.closed);
    assert_int_equal(b.retry, H2_RETRY_SAFE);
    assert_false(a.closed);
    assert_false(h2_sess_can_open(s));
    respond(ida, "ok", 2);
    pump(s);
    assert_true(a.closed);
    assert_int_equal(a.rc, UPSTREAM_OK);
    h2_sess_free(s);
    nghttp2_session_del(S.ng);
}

/* The server's bound, and one stream before its SETTINGS arrived. */
static void test_stream_bound(void **state)
{
    (void)state;
    srv_start(2);
    struct h2_sess *s = h2_sess_new(&ops, NULL);
    struct rec r[3] = {{0}};
    open_get(s, &r[0], GET);
    assert_false(h2_sess_can_open(s));
    pump(s);
    assert_true(h2_sess_can_open(s));
    open_get(s, &r[1], GET);
    assert_false(h2_sess_can_open(s));
    char err[100];
    struct h2_req q = req_of(GET, strlen(GET));
    assert_null(h2_stream_open(s, &q, &r[2], err, sizeof err));
    h2_sess_fail(s, UPSTREAM_ERR_RECV, "gone");
    assert_true(r[0].closed && r[1].closed);
    assert_int_equal(r[0].retry, H2_RETRY_LOST);
    h2_sess_free(s);
    nghttp2_session_del(S.ng);
}

/* The keep-warm PING: pending until the server's ACK. */
static void test_ping(void **state)
{
    (void)state;
    srv_start(100);
    struct h2_sess *s = h2_sess_new(&ops, NULL);
    pump(s);
    assert_false(h2_sess_ping_pending(s));
    h2_sess_ping(s);
    assert_true(h2_sess_ping_pending(s));
    pump(s);
    assert_false(h2_sess_ping_pending(s));
    assert_false(h2_sess_over(s));
    /* A GOAWAY without streams: the session takes nothing more. */
    nghttp2_submit_goaway(S.ng, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
    pump(s);
    assert_false(h2_sess_can_open(s));
    h2_sess_free(s);
    nghttp2_session_del(S.ng);
}

/* One flush hands a request's HEADERS and DATA to send in one piece (one
 * TLS record, one SSL_write over a real connection); a body larger than
 * the gathering buffer and a head larger than its stack copy still go out
 * whole and in order. */
static void test_flush_sends_frames_together(void **state)
{
    (void)state;
    srv_start(100);
    struct h2_sess *s = h2_sess_new(&ops, NULL);
    struct rec r = {0};
    open_get(s, &r, GET);
    pump(s);
    respond(S.last_id, "", 0);
    pump(s);
    assert_true(r.closed);

    static const char post[] = "POST /v1/messages HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\n";
    struct rec r2 = {0};
    char err[100];
    struct h2_req q = req_of(post, strlen(post));
    q.body = "abcd";
    q.body_len = 4;
    assert_non_null(h2_stream_open(s, &q, &r2, err, sizeof err));
    n_sends = 0;
    assert_int_equal(h2_sess_flush(s), 0);
    assert_int_equal(n_sends, 1);
    pump(s);
    assert_int_equal(S.req_body_len, 4);
    assert_memory_equal(S.req_body, "abcd", 4);

    /* 40 KB of body and a 6 KB header value. */
    size_t blen = 40 * 1024, vlen = 6 * 1024;
    char *body = malloc(blen);
    for (size_t i = 0; i < blen; i++)
        body[i] = (char)('a' + i % 26);
    char *head = malloc(vlen + 200);
    int hl = snprintf(head, vlen + 200, "POST /big HTTP/1.1\r\nHost: h\r\nX-Big: ");
    memset(head + hl, 'v', vlen);
    hl += (int)vlen;
    hl += snprintf(head + hl, 200, "\r\nContent-Length: %zu\r\n\r\n", blen);
    struct rec r3 = {0};
    struct h2_req q3 = req_of(head, (size_t)hl);
    q3.body = body;
    q3.body_len = blen;
    assert_non_null(h2_stream_open(s, &q3, &r3, err, sizeof err));
    S.req_body_len = 0;
    pump(s);
    assert_int_equal(S.req_body_len, blen);
    assert_memory_equal(S.req_body, body, blen);
    assert_non_null(strstr(S.req_hdrs, ":path: /big\n"));
    assert_int_equal(strspn(strstr(S.req_hdrs, "x-big: ") + 7, "v"), vlen);
    respond(S.last_id, "ok", 2);
    pump(s);
    assert_true(r3.closed);
    assert_int_equal(r3.rc, UPSTREAM_OK);
    free(head);
    free(body);
    h2_sess_free(s);
    nghttp2_session_del(S.ng);
}

/* HEADERS straight from the request's pieces (no HTTP/1.1 head parsed
 * back): names lower-cased whatever their case, values trimmed, repeated
 * fields (cookies too) kept apart and in order, connection-specific ones
 * and a TE other than "trailers" dropped, a Host line replacing the
 * authority, content-length last, after the caller's lines (the token is
 * the last of those). */
static void test_headers_from_pieces(void **state)
{
    (void)state;
    srv_start(100);
    struct h2_sess *s = h2_sess_new(&ops, NULL);
    static const char lines[] = "Content-Type: application/json\r\n"
                                "ANTHROPIC-Version:2023-06-01 \t\r\n"
                                "X-Odd_Name.1:  a  b\r\n"
                                "Cookie: a=1\r\n"
                                "cookie: b=2\r\n"
                                "Accept: x\r\n"
                                "accept: y\r\n"
                                "Connection: close\r\nKeep-Alive: 5\r\nProxy-Connection: x\r\n"
                                "Upgrade: h2c\r\nTransfer-Encoding: chunked\r\nTE: gzip\r\n"
                                "X-LF: 1\n"
                                "no colon here\r\n"
                                "HoSt: other.example:444\r\n"
                                "x-api-key: secret\r\n";
    struct h2_req q = {.method = "POSTX",
                       .method_len = 4,
                       .path = "/v1/messages?beta=true",
                       .path_len = 22,
                       .authority = "api.example",
                       .authority_len = 11,
                       .headers = lines,
                       .headers_len = sizeof lines - 1,
                       .content_length = "12",
                       .content_length_len = 2,
                       .body = "{\"a\":\"bcd\"} ",
                       .body_len = 12};
    struct rec r = {0};
    char err[100];
    assert_non_null(h2_stream_open(s, &q, &r, err, sizeof err));
    pump(s);
    assert_int_equal(S.n_requests, 1);
    assert_string_equal(S.req_hdrs, ":method: POST\n:scheme: https\n:authority: other.example:444\n"
                                    ":path: /v1/messages?beta=true\n"
                                    "content-type: application/json\n"
                                    "anthropic-version: 2023-06-01\n"
                                    "x-odd_name.1: a  b\n"
                                    "cookie: a=1\ncookie: b=2\n"
                                    "accept: x\naccept: y\n"
                                    "x-lf: 1\n"
                                    "x-api-key: secret\n"
                                    "content-length: 12\n");
    assert_int_equal(S.req_body_len, 12);
    respond(S.last_id, "ok", 2);
    pump(s);
    assert_true(r.closed);
    assert_int_equal(r.rc, UPSTREAM_OK);

    /* No lines, no length: the pseudo-headers alone. */
    struct h2_req g = {.method = "GET",
                       .method_len = 3,
                       .path = "/",
                       .path_len = 1,
                       .authority = "h",
                       .authority_len = 1};
    struct rec r2 = {0};
    assert_non_null(h2_stream_open(s, &g, &r2, err, sizeof err));
    pump(s);
    assert_string_equal(S.req_hdrs, ":method: GET\n:scheme: https\n:authority: h\n:path: /\n");
    respond(S.last_id, "", 0);
    pump(s);
    assert_true(r2.closed);
    h2_sess_free(s);
    nghttp2_session_del(S.ng);
}

/* A stream cancelled after its HEADERS went out, while the server's answer
 * is already on the way (it arrives before our RST_STREAM leaves): its
 * frames find nothing (the stream's nghttp2 user data was cleared when it
 * was freed; ASan would see a use after free otherwise), its DATA is given
 * back on the connection window, and the other stream is untouched. */
static void test_cancelled_stream_answer_dropped(void **state)
{
    (void)state;
    srv_start(100);
    struct h2_sess *s = h2_sess_new(&ops, NULL);
    struct rec a = {0}, b = {0};
    struct h2_stream *sa = open_get(s, &a, GET);
    pump(s);
    int32_t ida = S.last_id;
    open_get(s, &b, GET);
    pump(s);
    int32_t idb = S.last_id;
    assert_int_equal(S.n_requests, 2);
    respond(ida, "for a", 5);
    respond(idb, "for b", 5);
    const uint8_t *d;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(S.ng, &d)) > 0) {
        memcpy(s2c + s2c_len, d, (size_t)n);
        s2c_len += (size_t)n;
    }
    h2_stream_cancel(sa); /* freed now: nothing of nghttp2's runs */
    assert_int_equal(h2_sess_streams(s), 1);
    size_t len = s2c_len;
    s2c_len = 0;
    char *copy = xmalloc(len);
    memcpy(copy, s2c, len);
    assert_int_equal(h2_sess_recv(s, copy, len), 0); /* before the RST is flushed */
    free(copy);
    pump(s);
    assert_false(a.closed);
    assert_int_equal(a.status, 0);
    assert_int_equal(a.body_len, 0);
    assert_true(b.closed);
    assert_int_equal(b.rc, UPSTREAM_OK);
    assert_int_equal(b.body_len, 5);
    assert_memory_equal(b.body, "for b", 5);
    assert_int_equal(h2_sess_streams(s), 0);
    h2_sess_free(s);
    nghttp2_session_del(S.ng);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_and_response),
        cmocka_unit_test(test_flush_sends_frames_together),
        cmocka_unit_test(test_bad_status_is_a_protocol_error),
        cmocka_unit_test(test_too_many_request_headers),
        cmocka_unit_test(test_headers_from_pieces),
        cmocka_unit_test(test_cancelled_stream_answer_dropped),
        cmocka_unit_test(test_pause_holds_only_its_stream),
        cmocka_unit_test(test_paused_ended_stream_ends_when_connection_lost),
        cmocka_unit_test(test_rst_stream_ends_one_stream),
        cmocka_unit_test(test_goaway_refuses_later_streams),
        cmocka_unit_test(test_stream_bound),
        cmocka_unit_test(test_ping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
