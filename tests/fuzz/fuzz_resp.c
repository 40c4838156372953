/*
 * libFuzzer target for the proxy's response-head path: hdr_resp_filter(),
 * which proxy.c's on_head runs on every final head either upstream client
 * hands over, and which alone decides the framing the client gets.
 *
 * Input: the first line is the status in decimal (at most 4 digits; 200
 * otherwise), every further line a field "name:value" split at the first
 * colon (no colon: the whole line is the name), with the value's leading
 * and trailing blanks removed as the upstream clients do.  Each name and
 * value gets its own exact-size heap copy, so reading one byte past a view
 * (the strtoll bug this target was written for) is an ASan report.
 *
 * Invariants beyond memory safety:
 *   - the decision matches a reference: refused for 1xx/101 and out-of-range
 *     statuses, an invalid name or value, more than one Content-Length or one
 *     that is not 1-18 digits, a Transfer-Encoding other than exactly one
 *     "chunked", or both framings; content_length and chunked as given;
 *   - the forwarded lines name no framing, hop-by-hop, Connection-listed or
 *     x-zephyr-* field;
 *   - the head the client would get (status line, the forwarded lines, the
 *     framing line conn.c adds) parses with llhttp as a response with
 *     exactly the decided framing and the same fields, one for one: nothing
 *     a value holds can add a field or end the head early.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hdr.h"
#include "llhttp.h"
#include "util.h"

#define MAX_FIELDS 256

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_resp: %s\n", what);
        abort();
    }
}

static bool ieq(const char *a, size_t alen, const char *b)
{
    return alen == strlen(b) && strncasecmp(a, b, alen) == 0;
}

static bool all_digits(const char *v, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (v[i] < '0' || v[i] > '9')
            return false;
    return true;
}

/* What llhttp reads back from the head the client would get. */
struct readback {
    size_t n; /* fields */
    bool done;
};

static int rb_field_complete(llhttp_t *p)
{
    struct readback *rb = p->data;
    rb->n++;
    return 0;
}

static int rb_headers_complete(llhttp_t *p)
{
    struct readback *rb = p->data;
    rb->done = true;
    return HPE_PAUSED;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    const char *nl = memchr(p, '\n', size);
    size_t sl = nl ? (size_t)(nl - p) : size;
    int status = 200;
    if (sl >= 1 && sl <= 4 && all_digits(p, sl)) {
        status = 0;
        for (size_t i = 0; i < sl; i++)
            status = status * 10 + (p[i] - '0');
    }
    p = nl ? nl + 1 : end;

    struct hdr_field f[MAX_FIELDS];
    size_t n = 0;
    while (p < end && n < MAX_FIELDS) {
        nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        const char *ne = colon ? colon : le;
        const char *v = colon ? colon + 1 : le;
        const char *ve = le;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        char *name = xmalloc((size_t)(ne - p) + 1);
        memcpy(name, p, (size_t)(ne - p));
        char *value = xmalloc((size_t)(ve - v) + 1);
        memcpy(value, v, (size_t)(ve - v));
        /* The byte after each view is a digit, as stale bytes of an earlier
         * head may be; the copies are one byte longer for it, and ASan's
         * redzone starts right after. */
        name[ne - p] = '7';
        value[ve - v] = '7';
        f[n++] = (struct hdr_field){name, (size_t)(ne - p), value, (size_t)(ve - v)};
        p = nl ? nl + 1 : end;
    }

    /* The reference decision. */
    bool want_ok = status >= 200 && status <= 999;
    size_t n_cl = 0, n_te = 0;
    long long want_len = -1;
    bool te_ok = true;
    for (size_t i = 0; i < n; i++) {
        if (!hdr_name_valid(f[i].name, f[i].name_len) ||
            !hdr_value_valid(f[i].value, f[i].value_len))
            want_ok = false;
        if (ieq(f[i].name, f[i].name_len, "content-length")) {
            n_cl++;
            if (f[i].value_len < 1 || f[i].value_len > 18 ||
                !all_digits(f[i].value, f[i].value_len))
                want_ok = false;
            else {
                want_len = 0;
                for (size_t k = 0; k < f[i].value_len; k++)
                    want_len = want_len * 10 + (f[i].value[k] - '0');
            }
        }
        if (ieq(f[i].name, f[i].name_len, "transfer-encoding")) {
            n_te++;
            te_ok &= ieq(f[i].value, f[i].value_len, "chunked");
        }
    }
    if (n_cl > 1 || n_te > 1 || !te_ok || (n_cl && n_te))
        want_ok = false;

    struct buf out;
    buf_init(&out, 64 * 1024);
    struct hdr_resp r;
    int rc = hdr_resp_filter(status, f, n, &out, &r);
    if (rc != 0) {
        check(r.why != NULL, "refused without a reason");
        /* Only a full buffer may refuse what the reference takes. */
        check(!want_ok || strstr(r.why, "too large") != NULL, "refused a valid head");
        goto out;
    }
    check(want_ok, "accepted an invalid head");
    check(r.why == NULL, "accepted with a reason");
    check(r.content_length == (n_cl ? want_len : -1), "content_length differs from the reference");
    check(r.chunked == (n_te == 1), "chunked differs from the reference");
    check(!(r.chunked && r.content_length >= 0), "both framings");

    /* Every forwarded line is a field the client may get. */
    size_t fwd = 0;
    for (const char *l = out.data; l && *l;) {
        const char *eol = strstr(l, "\r\n");
        check(eol != NULL, "a forwarded line without CRLF");
        const char *c = memchr(l, ':', (size_t)(eol - l));
        check(c != NULL && c[1] == ' ', "a forwarded line without \": \"");
        size_t ln = (size_t)(c - l);
        check(hdr_name_valid(l, ln) && hdr_value_valid(c + 2, (size_t)(eol - c - 2)),
              "a forwarded line that is not a valid field");
        check(!ieq(l, ln, "content-length") && !hdr_is_hop_by_hop(l, ln) &&
                  !(ln >= 9 && strncasecmp(l, "x-zephyr-", 9) == 0),
              "a framing, hop-by-hop or proxy field forwarded");
        for (size_t i = 0; i < n; i++)
            if (ieq(f[i].name, f[i].name_len, "connection"))
                check(!hdr_connection_lists(f[i].value, f[i].value_len, l, ln),
                      "a field listed by Connection forwarded");
        fwd++;
        l = eol + 2;
    }

    /* The head the client gets, framed the way conn.c frames it. */
    struct buf head;
    buf_init(&head, SIZE_MAX);
    buf_appendf(&head, "HTTP/1.1 %d X\r\n", status);
    buf_append(&head, out.data ? out.data : "", out.len);
    bool no_body = status == 204 || status == 304;
    if (r.content_length >= 0 && !no_body)
        buf_appendf(&head, "Content-Length: %lld\r\n", r.content_length);
    else if (!no_body)
        buf_append(&head, "Transfer-Encoding: chunked\r\n", 28);
    buf_append(&head, "\r\n", 2);

    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_header_field_complete = rb_field_complete;
    s.on_headers_complete = rb_headers_complete;
    llhttp_t parser;
    llhttp_init(&parser, HTTP_RESPONSE, &s);
    struct readback rb = {0};
    parser.data = &rb;
    llhttp_errno_t err = llhttp_execute(&parser, head.data, head.len);
    check(err == HPE_PAUSED && rb.done, "llhttp does not read the client's head");
    check(llhttp_get_error_pos(&parser) == head.data + head.len, "the head ends early");
    check(rb.n == fwd + (no_body ? 0 : 1), "llhttp reads another number of fields");
    if (!no_body) {
        if (r.content_length >= 0)
            check((parser.flags & F_CONTENT_LENGTH) && !(parser.flags & F_CHUNKED) &&
                      parser.content_length == (uint64_t)r.content_length,
                  "llhttp reads another Content-Length");
        else
            check((parser.flags & F_CHUNKED) && !(parser.flags & F_CONTENT_LENGTH),
                  "llhttp does not read a chunked head");
    }
    buf_release(&head);
out:
    buf_release(&out);
    for (size_t i = 0; i < n; i++) {
        free((void *)f[i].name);
        free((void *)f[i].value);
    }
    return 0;
}
