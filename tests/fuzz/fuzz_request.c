/*
 * libFuzzer target for the client request path: the bytes a client sends,
 * through the same pipeline as conn.c and proxy.c.  The parser of conn.c is
 * static, so this file rebuilds it from the same parts: llhttp configured
 * as a request parser with callbacks that collect the target and the header
 * names and values exactly like conn.c does (the same caps: target 8 KiB,
 * header block 64 KiB, 200 headers; the same trimming and validation with
 * hdr_target_valid, hdr_name_valid, hdr_value_valid; 413 from
 * Content-Length; 417 for an Expect other than 100-continue; pipelined
 * requests dispatched one at a time, an upgrade treated as a plain
 * request), then does to every dispatched request what proxy.c does before
 * anything goes upstream: hdr_url_join of the target onto endpoint URLs and
 * the header filter of build_headers() (hop-by-hop, Connection-listed,
 * Host, Content-Length, Expect, the proxy's own keys, credentials).
 *
 * Input: two bytes (little endian) choose a split offset, the rest is the
 * client's byte stream.  It is fed whole, split in two at that offset, and
 * byte by byte when short; the three runs must dispatch byte-identical
 * requests and end the same way.  Beyond memory safety, every dispatched
 * request must hold what the upstream side relies on: header views inside
 * the live header buffer, names that are tokens, values without CR, LF,
 * NUL or other controls, no hop-by-hop header or proxy key forwarded, a
 * joined URL that is exactly endpoint + target.
 *
 * Keep this in step with conn.c (on_* callbacks, conn_process) and
 * proxy.c (header_dropped, build_headers).  One deliberate difference,
 * a conn.c bug found while writing this target: fields of a chunked body's
 * trailer section are ignored here.  conn.c appends them to the header
 * buffer after the header views were taken, so a realloc leaves the views
 * dangling (heap-use-after-free when the request is dispatched); conn.c
 * must ignore or refuse trailers too.  (The other bug this target found,
 * an empty second dispatch after a request with Upgrade, is fixed in
 * conn.c by clearing parser->upgrade in on_headers_complete, mirrored
 * here; the "dispatch without a target" check guards it.)
 *
 * Seeds: tests/fuzz/corpus/request/ (the first two bytes of each are the
 * split offset).
 */
#include <llhttp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hdr.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* conn.c's limits; the body cap is small so that 413 is reachable. */
#define F_MAX_TARGET 8192
#define F_MAX_HEADER_BYTES (64 * 1024)
#define F_MAX_HEADERS 200
#define F_MAX_BODY 4096
#define F_MAX_PENDING (1024 * 1024)

enum fstate { F_IDLE, F_HEAD, F_BODY, F_BUSY, F_CLOSING };

struct fhdr {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

struct hdr_off {
    size_t name_off, name_len, value_off, value_len;
};

struct fconn {
    llhttp_t parser;
    llhttp_settings_t settings;
    enum fstate state;
    /* the request being read (conn.c: struct http_req) */
    const char *method;
    char *target;
    int http_minor;
    bool keep_alive;
    struct fhdr *hdrs;
    size_t n_hdrs;
    struct buf hbuf;
    struct buf body;
    /* parsing (conn.c: struct conn) */
    struct hdr_off *offs;
    size_t n_offs, cap_offs;
    bool in_value;
    bool headers_done; /* trailers follow: see the top of the file */
    struct buf target_buf;
    struct buf pending;
    int reject_status;
    bool expect_continue;
    /* what happened, compared across the ways of feeding */
    struct buf trace;
    unsigned dispatched;
};

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_request: %s\n", what);
        abort();
    }
}

static struct fconn *fc(llhttp_t *p)
{
    return p->data;
}

static void req_release(struct fconn *c)
{
    free(c->target);
    c->target = NULL;
    free(c->hdrs);
    c->hdrs = NULL;
    c->n_hdrs = 0;
    buf_release(&c->hbuf);
    buf_release(&c->body);
}

static void req_reset(struct fconn *c)
{
    req_release(c);
    buf_init(&c->hbuf, F_MAX_HEADER_BYTES);
    buf_init(&c->body, F_MAX_BODY);
    buf_reset(&c->target_buf);
    c->n_offs = 0;
    c->in_value = false;
    c->headers_done = false;
    c->reject_status = 0;
    c->expect_continue = false;
    c->method = NULL;
    c->http_minor = 0;
    c->keep_alive = false;
}

/* ---- the callbacks of conn.c ---- */

static int cb_message_begin(llhttp_t *p)
{
    fc(p)->state = F_HEAD;
    return 0;
}

static int cb_url(llhttp_t *p, const char *at, size_t len)
{
    struct fconn *c = fc(p);
    if (buf_append(&c->target_buf, at, len) != 0) {
        c->reject_status = 414;
        return -1;
    }
    return 0;
}

static int too_big(struct fconn *c)
{
    c->reject_status = 431;
    return -1;
}

static int cb_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct fconn *c = fc(p);
    if (c->headers_done)
        return 0; /* a trailer field */
    if (c->in_value || c->n_offs == 0) {
        if (c->n_offs == F_MAX_HEADERS)
            return too_big(c);
        if (c->n_offs == c->cap_offs) {
            c->cap_offs = c->cap_offs ? c->cap_offs * 2 : 16;
            c->offs = xrealloc(c->offs, c->cap_offs * sizeof *c->offs);
        }
        struct hdr_off *o = &c->offs[c->n_offs++];
        o->name_off = c->hbuf.len;
        o->name_len = 0;
        o->value_off = 0;
        o->value_len = 0;
        c->in_value = false;
    }
    if (buf_append(&c->hbuf, at, len) != 0)
        return too_big(c);
    c->offs[c->n_offs - 1].name_len += len;
    return 0;
}

static int cb_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct fconn *c = fc(p);
    if (c->headers_done)
        return 0;
    check(c->n_offs > 0, "a header value before any name");
    struct hdr_off *o = &c->offs[c->n_offs - 1];
    if (!c->in_value) {
        c->in_value = true;
        o->value_off = c->hbuf.len;
    }
    if (buf_append(&c->hbuf, at, len) != 0)
        return too_big(c);
    o->value_len += len;
    return 0;
}

static int cb_header_value_complete(llhttp_t *p)
{
    struct fconn *c = fc(p);
    if (c->headers_done)
        return 0;
    check(c->n_offs > 0, "a header value completed before any name");
    if (!c->in_value) {
        c->in_value = true;
        c->offs[c->n_offs - 1].value_off = c->hbuf.len;
    }
    return 0;
}

static int bad_request(struct fconn *c)
{
    c->reject_status = 400;
    return -1;
}

static int cb_headers_complete(llhttp_t *p)
{
    struct fconn *c = fc(p);
    p->upgrade = 0; /* never switch protocols: served as a plain request */
    c->method = llhttp_method_name((llhttp_method_t)p->method);
    c->http_minor = p->http_major == 1 ? p->http_minor : 1;
    c->headers_done = true;
    if (p->http_major != 1)
        return bad_request(c);
    if (!hdr_target_valid(c->target_buf.data ? c->target_buf.data : "", c->target_buf.len))
        return bad_request(c);
    c->target = xstrndup(c->target_buf.data ? c->target_buf.data : "", c->target_buf.len);
    c->hdrs = xcalloc(c->n_offs ? c->n_offs : 1, sizeof *c->hdrs);
    c->n_hdrs = c->n_offs;
    for (size_t i = 0; i < c->n_offs; i++) {
        struct fhdr *h = &c->hdrs[i];
        h->name = c->hbuf.data + c->offs[i].name_off;
        h->name_len = c->offs[i].name_len;
        h->value = c->hbuf.data + c->offs[i].value_off;
        h->value_len = c->offs[i].value_len;
        if (!hdr_name_valid(h->name, h->name_len))
            return bad_request(c);
        while (h->value_len && (h->value[h->value_len - 1] == ' ' || h->value[h->value_len - 1] == '\t'))
            h->value_len--;
        while (h->value_len && (h->value[0] == ' ' || h->value[0] == '\t')) {
            h->value++;
            h->value_len--;
        }
        if (!hdr_value_valid(h->value, h->value_len))
            return bad_request(c);
    }
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > (uint64_t)F_MAX_BODY) {
        c->reject_status = 413;
        return -1;
    }
    for (size_t i = 0; i < c->n_hdrs; i++) {
        if (!strn_ieq(c->hdrs[i].name, c->hdrs[i].name_len, "expect"))
            continue;
        if (strn_ieq(c->hdrs[i].value, c->hdrs[i].value_len, "100-continue")) {
            c->expect_continue = c->http_minor >= 1;
        } else {
            c->reject_status = 417;
            return -1;
        }
        break; /* conn.c looks at the first Expect only */
    }
    c->state = F_BODY;
    return 0;
}

static int cb_body(llhttp_t *p, const char *at, size_t len)
{
    struct fconn *c = fc(p);
    if (buf_append(&c->body, at, len) != 0) {
        c->reject_status = 413;
        return -1;
    }
    return 0;
}

static int cb_message_complete(llhttp_t *p)
{
    struct fconn *c = fc(p);
    c->keep_alive = llhttp_should_keep_alive(p);
    c->state = F_BUSY;
    return HPE_PAUSED;
}

/* ---- what proxy.c does with a dispatched request ---- */

static const struct fhdr *req_header(const struct fconn *c, const char *name)
{
    for (size_t i = 0; i < c->n_hdrs; i++)
        if (strn_ieq(c->hdrs[i].name, c->hdrs[i].name_len, name))
            return &c->hdrs[i];
    return NULL;
}

/* proxy.c header_dropped() */
static bool dropped(const struct fconn *c, const struct fhdr *h, bool strip_creds)
{
    const struct fhdr *conn = req_header(c, "connection");
    if (hdr_is_hop_by_hop(h->name, h->name_len))
        return true;
    if (conn && hdr_connection_lists(conn->value, conn->value_len, h->name, h->name_len))
        return true;
    if (strn_ieq(h->name, h->name_len, "host") || strn_ieq(h->name, h->name_len, "content-length") ||
        strn_ieq(h->name, h->name_len, "expect") || strn_ieq(h->name, h->name_len, "x-zephyr-key") ||
        strn_ieq(h->name, h->name_len, "x-zephyr-admin-key"))
        return true;
    if (strip_creds && hdr_is_credential(h->name, h->name_len))
        return true;
    return false;
}

static void check_forwarded_line(const char *line, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)line[i];
        check(ch != '\r' && ch != '\n' && ch != '\0', "CR, LF or NUL in a forwarded header line");
        check(ch >= 0x20 || ch == '\t', "a control character in a forwarded header line");
        check(ch != 0x7f, "DEL in a forwarded header line");
    }
    const char *colon = memchr(line, ':', len);
    const char *semi = memchr(line, ';', len);
    const char *end = colon ? colon : semi;
    check(end != NULL, "a forwarded header line without ':' or ';'");
    size_t nl = (size_t)(end - line);
    check(hdr_name_valid(line, nl), "a forwarded header name that is not a token");
    check(!hdr_is_hop_by_hop(line, nl), "a hop-by-hop header forwarded");
    check(!strn_ieq(line, nl, "x-zephyr-key") && !strn_ieq(line, nl, "x-zephyr-admin-key"),
          "the proxy's own key forwarded");
    check(!strn_ieq(line, nl, "host") && !strn_ieq(line, nl, "content-length") &&
              !strn_ieq(line, nl, "transfer-encoding"),
          "a framing header forwarded");
}

/* proxy.c build_headers(), checked line by line instead of handed to curl */
static void forward_headers(const struct fconn *c, bool strip_creds)
{
    struct buf line;
    buf_init(&line, SIZE_MAX);
    for (size_t i = 0; i < c->n_hdrs; i++) {
        const struct fhdr *h = &c->hdrs[i];
        if (dropped(c, h, strip_creds))
            continue;
        if (strip_creds)
            check(!hdr_is_credential(h->name, h->name_len), "a client credential forwarded");
        buf_reset(&line);
        buf_append(&line, h->name, h->name_len);
        if (h->value_len) {
            buf_append(&line, ": ", 2);
            buf_append(&line, h->value, h->value_len);
        } else {
            buf_append(&line, ";", 1);
        }
        check_forwarded_line(line.data, line.len);
    }
    buf_release(&line);
}

static void join_onto(const char *endpoint, size_t base_len, const char *target)
{
    char *u = hdr_url_join(endpoint, target);
    check(u != NULL, "a valid target that does not join onto an endpoint URL");
    check(strlen(u) == base_len + strlen(target), "joined URL length");
    check(memcmp(u, endpoint, base_len) == 0, "joined URL does not start with the endpoint");
    check(strcmp(u + base_len, target) == 0, "joined URL does not end with the target");
    free(u);
}

static void dispatch(struct fconn *c)
{
    check(c->target != NULL && c->method != NULL, "dispatch without a target or method");
    size_t tl = strlen(c->target);
    check(tl == c->target_buf.len, "target with a NUL inside");
    check(hdr_target_valid(c->target, tl), "dispatched target not valid");
    check(c->target[0] == '/', "dispatched target not origin-form");
    for (size_t i = 0; i < c->n_hdrs; i++) {
        const struct fhdr *h = &c->hdrs[i];
        const char *lo = c->hbuf.data, *hi = c->hbuf.data + c->hbuf.len;
        check(h->name >= lo && h->name + h->name_len <= hi, "header name outside the header buffer");
        check(h->value >= lo && h->value + h->value_len <= hi, "header value outside the header buffer");
        check(hdr_name_valid(h->name, h->name_len), "dispatched header name not a token");
        check(hdr_value_valid(h->value, h->value_len), "dispatched header value not valid");
    }
    join_onto("http://127.0.0.1:9", 18, c->target);
    join_onto("https://relay.example/api/v2/", 28, c->target);
    join_onto("http://[::1]:8443/p", 19, c->target);
    forward_headers(c, false);
    forward_headers(c, true);

    buf_appendf(&c->trace, "REQ %s %s 1.%d ka=%d ec=%d n=%zu\n", c->method, c->target, c->http_minor,
                c->keep_alive, c->expect_continue, c->n_hdrs);
    for (size_t i = 0; i < c->n_hdrs; i++) {
        buf_appendf(&c->trace, "H %zu:", c->hdrs[i].name_len);
        buf_append(&c->trace, c->hdrs[i].name, c->hdrs[i].name_len);
        buf_appendf(&c->trace, " %zu:", c->hdrs[i].value_len);
        buf_append(&c->trace, c->hdrs[i].value, c->hdrs[i].value_len);
        buf_append(&c->trace, "\n", 1);
    }
    buf_appendf(&c->trace, "B %zu:", c->body.len);
    buf_append(&c->trace, c->body.data ? c->body.data : "", c->body.len);
    buf_append(&c->trace, "\n", 1);
    c->dispatched++;

    /* The response ends at once: conn_end_response(). */
    if (!c->keep_alive) {
        c->state = F_CLOSING;
        return;
    }
    req_reset(c);
    c->state = F_IDLE;
    llhttp_resume(&c->parser);
}

/* conn.c conn_process() */
static void process(struct fconn *c)
{
    while (c->state != F_BUSY && c->state != F_CLOSING && c->pending.len > 0) {
        llhttp_errno_t err = llhttp_execute(&c->parser, c->pending.data, c->pending.len);
        size_t used = c->pending.len;
        if (err != HPE_OK) {
            const char *pos = llhttp_get_error_pos(&c->parser);
            if (pos && pos >= c->pending.data && pos <= c->pending.data + c->pending.len)
                used = (size_t)(pos - c->pending.data);
        }
        buf_consume(&c->pending, used);
        if (err == HPE_PAUSED && c->state == F_BUSY) {
            c->n_offs = 0;
            dispatch(c);
            continue;
        }
        if (err != HPE_OK) {
            int st = c->reject_status ? c->reject_status : 400;
            check(st == 400 || st == 413 || st == 414 || st == 417 || st == 431, "unexpected reject status");
            buf_appendf(&c->trace, "REJECT %d\n", st);
            c->state = F_CLOSING;
            break;
        }
    }
}

static void fconn_init(struct fconn *c)
{
    memset(c, 0, sizeof *c);
    llhttp_settings_init(&c->settings);
    c->settings.on_message_begin = cb_message_begin;
    c->settings.on_url = cb_url;
    c->settings.on_header_field = cb_header_field;
    c->settings.on_header_value = cb_header_value;
    c->settings.on_header_value_complete = cb_header_value_complete;
    c->settings.on_headers_complete = cb_headers_complete;
    c->settings.on_body = cb_body;
    c->settings.on_message_complete = cb_message_complete;
    llhttp_init(&c->parser, HTTP_REQUEST, &c->settings);
    c->parser.data = c;
    buf_init(&c->target_buf, F_MAX_TARGET);
    buf_init(&c->pending, SIZE_MAX);
    buf_init(&c->trace, (size_t)1 << 24);
    req_reset(c);
}

static void fconn_release(struct fconn *c)
{
    req_release(c);
    buf_release(&c->target_buf);
    buf_release(&c->pending);
    buf_release(&c->trace);
    free(c->offs);
}

/* conn.c on_read(): bytes are held while a request is being answered; here
 * answers are immediate, so only a closed connection drops them. */
static void feed(struct fconn *c, const char *p, size_t n)
{
    if (c->state == F_CLOSING || n == 0)
        return;
    if (c->pending.len + n > F_MAX_PENDING)
        n = F_MAX_PENDING - c->pending.len;
    buf_append(&c->pending, p, n);
    process(c);
}

static void finish(struct fconn *c)
{
    buf_appendf(&c->trace, "END state=%d pending=%zu\n", (int)c->state,
                c->state == F_CLOSING ? (size_t)0 : c->pending.len);
}

static void same(const struct fconn *a, const struct fconn *b, const char *what)
{
    check(a->trace.len == b->trace.len &&
              (a->trace.len == 0 || memcmp(a->trace.data, b->trace.data, a->trace.len) == 0),
          what);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t n = size - 2;
    size_t split = ((size_t)data[0] | (size_t)data[1] << 8) % (n + 1);
    /* An exact-size heap copy, so that ASan sees any read past the end. */
    char *in = xmalloc(n ? n : 1);
    memcpy(in, data + 2, n);

    struct fconn whole, two, bytes;
    fconn_init(&whole);
    feed(&whole, in, n);
    finish(&whole);

    fconn_init(&two);
    feed(&two, in, split);
    feed(&two, in + split, n - split);
    finish(&two);
    same(&whole, &two, "a split at the chosen offset changes what is dispatched");

    if (n <= 1024) {
        fconn_init(&bytes);
        for (size_t i = 0; i < n; i++)
            feed(&bytes, in + i, 1);
        finish(&bytes);
        same(&whole, &bytes, "byte-at-a-time input changes what is dispatched");
        fconn_release(&bytes);
    }

    fconn_release(&whole);
    fconn_release(&two);
    free(in);
    return 0;
}
