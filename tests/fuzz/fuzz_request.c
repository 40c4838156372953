/*
 * libFuzzer target for the client request path: the bytes a client sends,
 * through reqparse.c exactly as conn.c uses it (pipelined requests handled
 * one at a time, reqparse_next() between them), then what proxy.c does to
 * each request before anything goes upstream: the header filter
 * (http_req_forwardable) and hdr_url_join of the target onto endpoint URLs.
 *
 * Input: two bytes (little endian) choose a split offset, the rest is the
 * client's byte stream.  It is fed whole, split in two at that offset, and
 * one byte at a time when short; the three runs must produce the same
 * requests and end the same way (see same()).  Beyond memory safety, every request must
 * hold what the upstream side relies on: header views inside the header
 * buffer, one Host in HTTP/1.1, Transfer-Encoding only as one "chunked",
 * names that are tokens, values without CR, LF, NUL or other controls, a
 * target that starts with '/', no hop-by-hop header or proxy key
 * forwarded, and a joined URL that is exactly endpoint + target.
 *
 * Seeds: tests/fuzz/corpus/request/ (the first two bytes of each are the
 * split offset).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hdr.h"
#include "reqparse.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define F_MAX_BODY 4096 /* small, so that 413 is reachable */

/* What a run produced: a digest of every request, and how it ended. */
struct outcome {
    struct buf log;
    int final_status; /* 0: still reading, else the error status */
};

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_request: invariant broken: %s\n", what);
        abort();
    }
}

static void inspect(const struct http_req *r, struct outcome *out)
{
    check(r->target != NULL && r->target[0] == '/', "dispatched request has a target");
    check(hdr_target_valid(r->target, strlen(r->target)), "target valid");
    buf_appendf(&out->log, "%s %s %d %d %zu|", r->method, r->target, r->keep_alive, r->http_minor,
                r->body.len);
    size_t n_host = 0, n_te = 0;
    for (size_t i = 0; i < r->n_hdrs; i++) {
        const struct http_hdr *h = &r->hdrs[i];
        n_host += strn_ieq(h->name, h->name_len, "host") != 0;
        if (strn_ieq(h->name, h->name_len, "transfer-encoding")) {
            n_te++;
            check(strn_ieq(h->value, h->value_len, "chunked"),
                  "Transfer-Encoding other than chunked");
        }
        check(h->name >= r->hbuf.data && h->name + h->name_len <= r->hbuf.data + r->hbuf.len,
              "name view inside the header buffer");
        check(h->value >= r->hbuf.data && h->value + h->value_len <= r->hbuf.data + r->hbuf.len,
              "value view inside the header buffer");
        check(hdr_name_valid(h->name, h->name_len), "header name is a token");
        check(hdr_value_valid(h->value, h->value_len), "header value has no controls");
        for (int strip = 0; strip < 2; strip++) {
            if (!http_req_forwardable(r, i, strip))
                continue;
            check(!hdr_is_hop_by_hop(h->name, h->name_len), "hop-by-hop header forwarded");
            check(!strn_ieq(h->name, h->name_len, "x-zephyr-key") &&
                      !strn_ieq(h->name, h->name_len, "host"),
                  "proxy key or Host forwarded");
            check(!(strip && hdr_is_credential(h->name, h->name_len)), "credential forwarded");
        }
        buf_append(&out->log, h->name, h->name_len);
        buf_append(&out->log, ":", 1);
        buf_append(&out->log, h->value, h->value_len);
        buf_append(&out->log, "|", 1);
    }
    check(n_host <= 1 && (r->http_minor == 0 || n_host == 1), "HTTP/1.1 without one Host");
    check(n_te <= 1 && (n_te == 0 || r->http_minor == 1), "Transfer-Encoding repeated or in 1.0");
    static const char *bases[] = {"http://127.0.0.1:8080", "https://relay.example/api/",
                                  "http://[::1]:9/p"};
    for (size_t k = 0; k < sizeof bases / sizeof bases[0]; k++) {
        char *url = hdr_url_join(bases[k], r->target);
        check(url != NULL, "a valid target joins");
        size_t bl = strlen(bases[k]);
        while (bl && bases[k][bl - 1] == '/')
            bl--;
        check(strncmp(url, bases[k], bl) == 0 && strcmp(url + bl, r->target) == 0,
              "joined URL is endpoint + target");
        free(url);
    }
}

/* Feeds pieces the way conn.c does: parse, handle a whole request, go on. */
struct runner {
    struct reqparse rp;
    struct buf pending;
    struct outcome out;
};

static void run_init(struct runner *r)
{
    reqparse_init(&r->rp, F_MAX_BODY);
    buf_init(&r->pending, SIZE_MAX);
    buf_init(&r->out.log, SIZE_MAX);
    r->out.final_status = 0;
}

static void run_release(struct runner *r)
{
    reqparse_release(&r->rp);
    buf_release(&r->pending);
    buf_release(&r->out.log);
}

static void run_feed(struct runner *r, const char *p, size_t n)
{
    if (r->out.final_status)
        return;
    buf_append(&r->pending, p, n);
    while (r->pending.len && !r->out.final_status) {
        size_t used = reqparse_feed(&r->rp, r->pending.data, r->pending.len);
        check(used <= r->pending.len, "consumed no more than given");
        buf_consume(&r->pending, used);
        if (r->rp.phase == REQPARSE_DONE) {
            inspect(&r->rp.req, &r->out);
            if (!r->rp.req.keep_alive) {
                r->out.final_status = -1; /* conn.c closes after this response */
                break;
            }
            reqparse_next(&r->rp, F_MAX_BODY);
        } else if (r->rp.phase == REQPARSE_ERROR) {
            check((r->rp.status >= 400 && r->rp.status < 500) || r->rp.status == 501,
                  "an error has a 4xx status (or 501, an unknown transfer coding)");
            check(r->rp.type && r->rp.message, "an error has a type and a message");
            r->out.final_status = r->rp.status;
        } else {
            check(r->pending.len == 0, "a parser that is not done takes everything");
            break;
        }
    }
}

/* The runs must dispatch the same requests and end the same way.  Which
 * error a rejected stream gets may differ: llhttp reports its own errors as
 * soon as it sees them, but hands over a header span only when the span
 * ends or the input does, so a cap (431) and a malformed byte after it can
 * be noticed in either order. */
static int ending(int final_status)
{
    return final_status > 0 ? 1 : final_status;
}

static void same(const struct runner *a, const struct runner *b, const char *what)
{
    check(ending(a->out.final_status) == ending(b->out.final_status), what);
    check(
        a->out.log.len == b->out.log.len &&
            (a->out.log.len == 0 || memcmp(a->out.log.data, b->out.log.data, a->out.log.len) == 0),
        what);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t split = (size_t)(data[0] | (data[1] << 8));
    const char *p = (const char *)data + 2;
    size_t n = size - 2;
    if (split > n)
        split = n;

    struct runner whole, halves, bytes;
    run_init(&whole);
    run_feed(&whole, p, n);

    run_init(&halves);
    run_feed(&halves, p, split);
    run_feed(&halves, p + split, n - split);
    same(&whole, &halves, "split at an offset changes nothing");

    if (n <= 4096) {
        run_init(&bytes);
        for (size_t i = 0; i < n; i++)
            run_feed(&bytes, p + i, 1);
        same(&whole, &bytes, "byte-at-a-time feeding changes nothing");
        run_release(&bytes);
    }
    run_release(&whole);
    run_release(&halves);
    return 0;
}
