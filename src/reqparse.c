/*
 * reqparse: see reqparse.h.  The llhttp callbacks below append the target
 * and the header bytes to buffers with hard caps; the header views of
 * struct http_req are taken once, when the header block is complete, so
 * they stay valid: nothing is appended to the header buffer afterwards
 * (trailer fields are ignored for that reason).
 */
#include "reqparse.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hdr.h"

const struct http_hdr *http_req_header(const struct http_req *r, const char *name)
{
    for (size_t i = 0; i < r->n_hdrs; i++)
        if (strn_ieq(r->hdrs[i].name, r->hdrs[i].name_len, name))
            return &r->hdrs[i];
    return NULL;
}

bool http_req_forwardable(const struct http_req *r, size_t i, bool strip_creds)
{
    const struct http_hdr *h = &r->hdrs[i];
    if (hdr_is_hop_by_hop(h->name, h->name_len))
        return false;
    for (size_t k = 0; r->has_connection && k < r->n_hdrs; k++) {
        const struct http_hdr *c = &r->hdrs[k];
        if (strn_ieq(c->name, c->name_len, "connection") &&
            hdr_connection_lists(c->value, c->value_len, h->name, h->name_len))
            return false;
    }
    static const char *own[] = {"host", "content-length", "expect", "x-zephyr-key",
                                "x-zephyr-admin-key"};
    for (size_t k = 0; k < sizeof own / sizeof own[0]; k++)
        if (strn_ieq(h->name, h->name_len, own[k]))
            return false;
    return !(strip_creds && hdr_is_credential(h->name, h->name_len));
}

/* An absolute-form target (RFC 9112 3.2.2): http:// or https://, an
 * authority of visible characters, then an origin-form path or nothing. */
static bool target_absolute_valid(const char *t, size_t len)
{
    size_t i = len >= 7 && strncasecmp(t, "http://", 7) == 0    ? 7
               : len >= 8 && strncasecmp(t, "https://", 8) == 0 ? 8
                                                                : 0;
    size_t start = i;
    if (i == 0)
        return false;
    for (; i < len && t[i] != '/'; i++)
        if ((unsigned char)t[i] <= 0x20 || (unsigned char)t[i] >= 0x7f || t[i] == '#' ||
            t[i] == '?')
            return false;
    return i > start && (i == len || hdr_target_valid(t + i, len - i));
}

static struct reqparse *rp_of(llhttp_t *p)
{
    return p->data;
}

static int rp_fail(struct reqparse *rp, int status, const char *type, const char *message)
{
    rp->status = status;
    rp->type = type;
    rp->message = message;
    return -1;
}

static int bad_request(struct reqparse *rp, const char *message)
{
    return rp_fail(rp, 400, "invalid_request_error", message);
}

static int header_too_big(struct reqparse *rp)
{
    return rp_fail(rp, 431, "invalid_request_error",
                   "request header block larger than 64 KiB or more than 200 headers");
}

static int on_message_begin(llhttp_t *p)
{
    rp_of(p)->phase = REQPARSE_HEAD;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct reqparse *rp = rp_of(p);
    if (buf_append(&rp->target, at, len) != 0)
        return rp_fail(rp, 414, "invalid_request_error", "request target longer than 8192 bytes");
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct reqparse *rp = rp_of(p);
    if (rp->phase == REQPARSE_BODY)
        return 0; /* a trailer field */
    if (rp->in_value || rp->n_offs == 0) {
        if (rp->n_offs == REQPARSE_MAX_HEADERS)
            return header_too_big(rp);
        if (rp->n_offs == rp->cap_offs) {
            rp->cap_offs = rp->cap_offs ? rp->cap_offs * 2 : 16;
            rp->offs = xrealloc(rp->offs, rp->cap_offs * sizeof *rp->offs);
        }
        struct reqparse_off *o = &rp->offs[rp->n_offs++];
        o->name_off = rp->req.hbuf.len;
        o->name_len = o->value_off = o->value_len = 0;
        rp->in_value = false;
    }
    if (buf_append(&rp->req.hbuf, at, len) != 0)
        return header_too_big(rp);
    rp->offs[rp->n_offs - 1].name_len += len;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct reqparse *rp = rp_of(p);
    if (rp->phase == REQPARSE_BODY)
        return 0;
    struct reqparse_off *o = &rp->offs[rp->n_offs - 1];
    if (!rp->in_value) {
        rp->in_value = true;
        o->value_off = rp->req.hbuf.len;
    }
    if (buf_append(&rp->req.hbuf, at, len) != 0)
        return header_too_big(rp);
    o->value_len += len;
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    struct reqparse *rp = rp_of(p);
    if (rp->phase == REQPARSE_BODY)
        return 0;
    /* A header with an empty value never calls on_header_value. */
    if (!rp->in_value) {
        rp->in_value = true;
        rp->offs[rp->n_offs - 1].value_off = rp->req.hbuf.len;
    }
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct reqparse *rp = rp_of(p);
    struct http_req *r = &rp->req;

    /* We never switch protocols: an Upgrade request is served as a plain
     * one (its Upgrade header is hop-by-hop and dropped), and what follows
     * it is parsed as the next request. */
    p->upgrade = 0;
    r->method = llhttp_method_name((llhttp_method_t)p->method);
    r->http_minor = p->http_major == 1 ? p->http_minor : 1;
    r->is_head = p->method == HTTP_HEAD;
    if (p->http_major != 1)
        return bad_request(rp, "only HTTP/1.0 and HTTP/1.1 are supported");
    const char *t = rp->target.data ? rp->target.data : "";
    if (!hdr_target_valid(t, rp->target.len) &&
        !(rp->absolute_ok && target_absolute_valid(t, rp->target.len)))
        return bad_request(rp, "request target must be an origin-form path starting with '/'");
    r->target = xstrndup(rp->target.data, rp->target.len);

    r->hdrs = xcalloc(rp->n_offs ? rp->n_offs : 1, sizeof *r->hdrs);
    r->n_hdrs = rp->n_offs;
    size_t n_host = 0, n_te = 0;
    const struct http_hdr *te = NULL;
    for (size_t i = 0; i < rp->n_offs; i++) {
        struct http_hdr *h = &r->hdrs[i];
        h->name = r->hbuf.data + rp->offs[i].name_off;
        h->name_len = rp->offs[i].name_len;
        h->value = r->hbuf.data + rp->offs[i].value_off;
        h->value_len = rp->offs[i].value_len;
        if (!hdr_name_valid(h->name, h->name_len))
            return bad_request(rp, "malformed header name");
        /* Trim the whitespace llhttp may leave around a value. */
        while (h->value_len &&
               (h->value[h->value_len - 1] == ' ' || h->value[h->value_len - 1] == '\t'))
            h->value_len--;
        while (h->value_len && (h->value[0] == ' ' || h->value[0] == '\t')) {
            h->value++;
            h->value_len--;
        }
        if (!hdr_value_valid(h->value, h->value_len))
            return bad_request(rp, "malformed header value (control character)");
        if (strn_ieq(h->name, h->name_len, "connection"))
            r->has_connection = true;
        else if (strn_ieq(h->name, h->name_len, "host"))
            n_host++;
        else if (strn_ieq(h->name, h->name_len, "transfer-encoding")) {
            n_te++;
            te = h;
        }
    }
    /* RFC 9112 3.2: an HTTP/1.1 request carries exactly one Host; nginx
     * answers a missing or repeated one with 400 too. */
    if (n_host > 1)
        return bad_request(rp, "duplicate Host header");
    if (n_host == 0 && r->http_minor >= 1)
        return bad_request(rp, "missing Host header (required in HTTP/1.1)");
    /* RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing.
     * The only coding we decode is chunked alone: llhttp takes any list
     * that ends in chunked, and a body we cannot decode must not be
     * forwarded as if it were plain (nginx: 501 for an unknown coding,
     * 400 for a repeated header line). */
    if (n_te && r->http_minor == 0)
        return bad_request(rp, "Transfer-Encoding in an HTTP/1.0 request");
    if (n_te > 1)
        return bad_request(rp, "duplicate Transfer-Encoding header");
    if (te && !strn_ieq(te->value, te->value_len, "chunked"))
        return rp_fail(rp, 501, "invalid_request_error",
                       "unsupported Transfer-Encoding (only chunked is implemented)");
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > (uint64_t)rp->max_body)
        return rp_fail(rp, 413, "request_too_large", "request body larger than server.max_body_mb");
    const struct http_hdr *ex = http_req_header(r, "expect");
    if (ex) {
        if (!strn_ieq(ex->value, ex->value_len, "100-continue"))
            return rp_fail(rp, 417, "invalid_request_error", "unsupported Expect header");
        bool body =
            (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
        rp->send_continue = r->http_minor >= 1 && body;
    }
    rp->phase = REQPARSE_BODY;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct reqparse *rp = rp_of(p);
    if (buf_append(&rp->req.body, at, len) != 0)
        return rp_fail(rp, 413, "request_too_large", "request body larger than server.max_body_mb");
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct reqparse *rp = rp_of(p);
    rp->req.keep_alive = llhttp_should_keep_alive(p);
    rp->phase = REQPARSE_DONE;
    return HPE_PAUSED;
}

/* The same callbacks for every parser: one table, not one per connection. */
static const llhttp_settings_t reqparse_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void reqparse_init(struct reqparse *rp, size_t max_body)
{
    memset(rp, 0, sizeof *rp);
    llhttp_init(&rp->parser, HTTP_REQUEST, &reqparse_settings);
    rp->parser.data = rp;
    buf_init(&rp->target, REQPARSE_MAX_TARGET);
    buf_init(&rp->req.hbuf, REQPARSE_MAX_HEADER_BYTES);
    rp->max_body = max_body;
    buf_init(&rp->req.body, max_body);
}

static void http_req_release(struct http_req *r)
{
    free(r->target);
    free(r->hdrs);
    buf_release(&r->hbuf);
    buf_release(&r->body);
}

void reqparse_release(struct reqparse *rp)
{
    http_req_release(&rp->req);
    buf_release(&rp->target);
    free(rp->offs);
    rp->offs = NULL;
}

void reqparse_next(struct reqparse *rp, size_t max_body)
{
    struct sockaddr_storage peer = rp->req.peer;
    http_req_release(&rp->req);
    memset(&rp->req, 0, sizeof rp->req);
    rp->req.peer = peer;
    buf_init(&rp->req.hbuf, REQPARSE_MAX_HEADER_BYTES);
    rp->max_body = max_body;
    buf_init(&rp->req.body, max_body);
    buf_reset(&rp->target);
    rp->n_offs = 0;
    rp->in_value = false;
    rp->send_continue = false;
    rp->status = 0;
    rp->phase = REQPARSE_IDLE;
    llhttp_resume(&rp->parser);
}

void reqparse_drop_headers(struct reqparse *rp)
{
    free(rp->req.hdrs);
    rp->req.hdrs = NULL;
    rp->req.n_hdrs = 0;
    rp->req.has_connection = false;
    buf_release(&rp->req.hbuf);
    buf_release(&rp->target);
    free(rp->offs);
    rp->offs = NULL;
    rp->n_offs = rp->cap_offs = 0;
}

size_t reqparse_feed(struct reqparse *rp, const char *p, size_t n)
{
    if (rp->phase == REQPARSE_DONE || rp->phase == REQPARSE_ERROR || n == 0)
        return 0;
    llhttp_errno_t err = llhttp_execute(&rp->parser, p, n);
    if (err == HPE_OK)
        return n;
    size_t used = n;
    const char *pos = llhttp_get_error_pos(&rp->parser);
    if (pos && pos >= p && pos <= p + n)
        used = (size_t)(pos - p);
    if (err == HPE_PAUSED && rp->phase == REQPARSE_DONE)
        return used;
    if (!rp->status)
        rp_fail(rp, 400, "invalid_request_error", "malformed HTTP request");
    rp->phase = REQPARSE_ERROR;
    return used;
}
