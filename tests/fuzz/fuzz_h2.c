/*
 * libFuzzer target for h2, the HTTP/2 session of the built-in client: the
 * input is what an HTTP/2 upstream sends after the TLS handshake, and the
 * proxy must survive anything it sends.
 *
 * Input: two control bytes, then the server's bytes.
 *   c0 bits 0-5  the server's bytes are fed in pieces of this many bytes + 1
 *   c0 bits 6-7  body() pauses: never, on every other span, on every span;
 *                paused streams are resumed after each piece
 *   c1 bits 0-1  streams opened at the start and again after each piece
 *                while the session takes them (a POST with a body first)
 *   c1 bit 2     the first stream is cancelled after the first piece
 *   c1 bit 3     head() returns false (the stream stops)
 * The seeds (tests/fuzz/corpus/h2) are a server preface with one response,
 * a GOAWAY and a RST_STREAM, made with python3-h2.
 *
 * Invariants, beyond the sanitizers: every stream the session took ends
 * through close() exactly once (at the latest when the session is freed),
 * a cancelled one never; body bytes only after the head; a status in
 * 200-999 and at most 200 headers; UPSTREAM_OK only with a head.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h2.h"

#define MAX_STREAMS 16

struct rec {
    int closes;
    bool head, paused, cancelled, open;
    struct h2_stream *st;
};

static struct rec recs[MAX_STREAMS];
static size_t n_recs;
static int pause_mode, span;
static bool head_false;

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_h2: invariant broken: %s\n", what);
        abort();
    }
}

static bool on_send(void *conn, const uint8_t *data, size_t len)
{
    (void)conn;
    (void)data;
    (void)len;
    return true;
}

static bool on_head(void *ud, int status, const struct upstream_hdr *hdrs, size_t n)
{
    struct rec *r = ud;
    (void)hdrs;
    check(!r->head, "a second head");
    check(status >= 200 && status <= 999, "status out of range");
    check(n <= 200, "more than 200 headers");
    r->head = true;
    return !head_false;
}

static size_t on_body(void *ud, const char *data, size_t len)
{
    struct rec *r = ud;
    (void)data;
    check(r->head, "body before head");
    check(len > 0, "empty body span");
    span++;
    if ((pause_mode == 1 && span % 2 == 0) || pause_mode >= 2) {
        if (!r->paused) {
            r->paused = true;
            return UPSTREAM_PAUSE;
        }
    }
    return len;
}

static void on_sent(void *ud)
{
    (void)ud;
}

static void on_close(void *ud, enum upstream_rc rc, const char *msg, enum h2_retry retry)
{
    struct rec *r = ud;
    (void)retry;
    check(msg != NULL, "close without a message");
    check(!r->cancelled, "close after cancel");
    check(rc != UPSTREAM_OK || r->head, "OK without a head");
    r->closes++;
    r->open = false;
    check(r->closes == 1, "closed twice");
}

static const struct h2_ops ops = {
    .send = on_send, .head = on_head, .body = on_body, .sent = on_sent, .close = on_close};

static const char POST_LINES[] = "X-Api-Key: k\r\n";

static void open_some(struct h2_sess *s, int n)
{
    for (int i = 0; i < n && n_recs < MAX_STREAMS && h2_sess_can_open(s); i++) {
        struct rec *r = &recs[n_recs];
        memset(r, 0, sizeof *r);
        bool post = n_recs == 0;
        struct h2_req q = {.method = post ? "POST" : "GET",
                           .method_len = post ? 4 : 3,
                           .path = post ? "/v1/messages" : "/v1/models",
                           .path_len = post ? 12 : 10,
                           .authority = "api.example",
                           .authority_len = 11,
                           .headers = post ? POST_LINES : NULL,
                           .headers_len = post ? sizeof POST_LINES - 1 : 0,
                           .content_length = post ? "5" : NULL,
                           .content_length_len = post ? 1 : 0,
                           .body = post ? "hello" : NULL,
                           .body_len = post ? 5 : 0};
        char err[128];
        r->st = h2_stream_open(s, &q, r, err, sizeof err);
        if (!r->st)
            return;
        r->open = true;
        n_recs++;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t piece = (size_t)(data[0] & 0x3f) + 1;
    pause_mode = data[0] >> 6;
    int per_round = (data[1] & 3) + 1;
    bool cancel_first = data[1] & 4;
    head_false = data[1] & 8;
    data += 2;
    size -= 2;
    n_recs = 0;
    span = 0;

    struct h2_sess *s = h2_sess_new(&ops, NULL);
    if (!s)
        return 0;
    open_some(s, per_round);
    h2_sess_flush(s);
    for (size_t off = 0; off < size; off += piece) {
        size_t len = size - off < piece ? size - off : piece;
        int rc = h2_sess_recv(s, (const char *)data + off, len);
        if (rc >= 0)
            rc = h2_sess_flush(s);
        if (off == 0 && cancel_first && n_recs > 0 && recs[0].open) {
            recs[0].cancelled = true;
            recs[0].open = false;
            h2_stream_cancel(recs[0].st);
        }
        for (size_t i = 0; i < n_recs; i++) {
            if (recs[i].open && recs[i].paused) {
                recs[i].paused = false;
                h2_stream_resume(recs[i].st);
            }
        }
        if (rc < 0 || h2_sess_over(s))
            break;
        open_some(s, per_round);
        h2_sess_flush(s);
    }
    h2_sess_free(s);
    for (size_t i = 0; i < n_recs; i++)
        check(recs[i].cancelled ? recs[i].closes == 0 : recs[i].closes == 1,
              "a stream did not end exactly once");
    return 0;
}
