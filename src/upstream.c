/*
 * upstream: see upstream.h.
 *
 * The dispatcher picks the client per exchange; this file is also the
 * libcurl side of the contract.  A curl exchange (struct cx) owns an easy
 * handle from fetch's pool and the header list curl needs, collects the
 * response head line by line (curl hands header lines over one at a time,
 * interim 1xx heads included) and passes it on as one array once the
 * blank line arrives.  Like the built-in client it refuses a 101 (curl
 * would pass the other protocol's bytes on as body) and body bytes before
 * the final head: the caller must never get a body it has no head for.
 * A callback that asks to stop makes the curl
 * callback return an error; curl then ends the transfer and fetch reports
 * it from the loop, never from inside curl, which is where done is called.
 */
#include "upstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "fetch.h"
#include "h1.h"
#include "util.h"

#define UPSTREAM_HEAD_CAP (64 * 1024)
#define UPSTREAM_MAX_HDRS 200

struct upstream {
    uv_loop_t *loop;     /* borrows */
    struct h1 *h1;       /* owns */
    struct fetch *fetch; /* owns; NULL until a transfer needs libcurl */
    bool builtin;
    bool env_proxy;     /* http_proxy or all_proxy is set: http:// goes through curl */
    bool env_proxy_tls; /* https_proxy or all_proxy is set: https:// goes through curl */
};

enum cx_stop {
    CX_RUNNING = 0,
    CX_ABORTED = 1,  /* a callback asked to stop */
    CX_BAD_HEAD = 2, /* the response head was malformed or too large */
};

struct cx {
    struct upstream_xfer base;
    struct fetch_xfer x;            /* x.easy owned */
    struct upstream *u;             /* borrows */
    const struct upstream_cbs *cbs; /* borrows */
    void *ud;                       /* borrows */
    struct curl_slist *hdrs;        /* owns */
    struct buf head;                /* owns; "name\0value\0" pairs of the head so far */
    size_t n_hdrs;
    int status;
    bool head_done;
    uint64_t sent_ms; /* now_mono_ms() when curl had sent the whole body */
    enum cx_stop stop;
    char errbuf[CURL_ERROR_SIZE];
};

const char *upstream_rc_str(enum upstream_rc rc)
{
    switch (rc) {
    case UPSTREAM_OK: return "ok";
    case UPSTREAM_ERR_CONNECT: return "connect failed";
    case UPSTREAM_ERR_TIMEOUT: return "timed out";
    case UPSTREAM_ERR_SEND: return "send failed";
    case UPSTREAM_ERR_RECV: return "receive failed";
    case UPSTREAM_ERR_PROTOCOL: return "protocol error";
    case UPSTREAM_ERR_ABORTED: return "aborted";
    case UPSTREAM_ERR_OTHER: break;
    }
    return "error";
}

/* ---- the libcurl client ----------------------------------------------- */

static struct fetch *upstream_fetch(struct upstream *u)
{
    if (!u->fetch)
        u->fetch = fetch_new(u->loop);
    return u->fetch;
}

static void cx_free(struct cx *x)
{
    if (x->x.easy)
        fetch_easy_put(x->u->fetch, x->x.easy);
    curl_slist_free_all(x->hdrs);
    buf_release(&x->head);
    free(x);
}

static enum upstream_rc cx_rc(CURLcode rc)
{
    switch (rc) {
    case CURLE_OK: return UPSTREAM_OK;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION: return UPSTREAM_ERR_CONNECT;
    case CURLE_OPERATION_TIMEDOUT: return UPSTREAM_ERR_TIMEOUT;
    case CURLE_SEND_ERROR: return UPSTREAM_ERR_SEND;
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE: return UPSTREAM_ERR_RECV;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_BAD_CONTENT_ENCODING: return UPSTREAM_ERR_PROTOCOL;
    default: return UPSTREAM_ERR_OTHER;
    }
}

static void cx_on_done(struct fetch_xfer *fx, CURLcode rc)
{
    struct cx *x = (struct cx *)((char *)fx - offsetof(struct cx, x));
    enum upstream_rc r = cx_rc(rc);
    const char *msg = x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc);
    if (x->stop == CX_ABORTED) {
        r = UPSTREAM_ERR_ABORTED;
        msg = "stopped by the caller";
    } else if (x->stop == CX_BAD_HEAD) {
        r = UPSTREAM_ERR_PROTOCOL;
        msg = "malformed or oversized response head from upstream";
    } else if (r == UPSTREAM_OK) {
        msg = "";
    }
    const struct upstream_cbs *cbs = x->cbs;
    void *ud = x->ud;
    char m[CURL_ERROR_SIZE];
    snprintf(m, sizeof m, "%s", msg);
    cx_free(x);
    cbs->done(ud, r, m);
}

/* A whole head has arrived: hand it over as an array of views. */
static bool cx_head_done(struct cx *x)
{
    struct upstream_hdr hv[UPSTREAM_MAX_HDRS];
    const char *p = x->head.data;
    for (size_t i = 0; i < x->n_hdrs; i++) {
        hv[i].name = p;
        hv[i].name_len = strlen(p);
        p += hv[i].name_len + 1;
        hv[i].value = p;
        hv[i].value_len = strlen(p);
        p += hv[i].value_len + 1;
    }
    x->head_done = true;
    bool ok = x->cbs->head(x->ud, x->status, hv, x->n_hdrs);
    buf_release(&x->head);
    return ok;
}

static size_t cx_on_header(char *data, size_t size, size_t n, void *ud)
{
    struct cx *x = ud;
    size_t len = size * n;
    if (x->head_done)
        return len; /* trailers: not passed on */
    while (len && (data[len - 1] == '\n' || data[len - 1] == '\r'))
        len--;
    if (len == 0) {
        if (x->status == 101) {
            /* Not asked for: curl would pass what follows as body bytes
             * of a head that is never final.  The built-in client refuses
             * it the same way. */
            x->stop = CX_BAD_HEAD;
            return 0;
        }
        if (x->status >= 100 && x->status < 200) {
            /* An interim response: the real one follows. */
            x->status = 0;
            x->n_hdrs = 0;
            buf_reset(&x->head);
            return size * n;
        }
        if (!cx_head_done(x)) {
            x->stop = CX_ABORTED;
            return 0;
        }
        return size * n;
    }
    if (x->status == 0) {
        /* "HTTP/x[.y] DDD[ reason]": exactly three digits. */
        const char *sp = memchr(data, ' ', len);
        size_t rest = sp ? len - (size_t)(sp + 1 - data) : 0;
        x->status = 0;
        if (sp && len >= 5 && strncmp(data, "HTTP/", 5) == 0 && rest >= 3 &&
            (rest == 3 || sp[4] == ' ') && sp[1] >= '1' && sp[1] <= '9' && sp[2] >= '0' &&
            sp[2] <= '9' && sp[3] >= '0' && sp[3] <= '9')
            x->status = (sp[1] - '0') * 100 + (sp[2] - '0') * 10 + (sp[3] - '0');
        if (x->status < 100 || x->status > 999) {
            x->stop = CX_BAD_HEAD;
            return 0;
        }
        return size * n;
    }
    const char *colon = memchr(data, ':', len);
    if (!colon || x->n_hdrs == UPSTREAM_MAX_HDRS) {
        x->stop = CX_BAD_HEAD;
        return 0;
    }
    size_t nl = (size_t)(colon - data);
    const char *v = colon + 1;
    size_t vl = len - nl - 1;
    while (vl && (*v == ' ' || *v == '\t')) {
        v++;
        vl--;
    }
    while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
        vl--;
    if (memchr(data, '\0', len) || buf_append(&x->head, data, nl) != 0 ||
        buf_append(&x->head, "", 1) != 0 || buf_append(&x->head, v, vl) != 0 ||
        buf_append(&x->head, "", 1) != 0) {
        x->stop = CX_BAD_HEAD;
        return 0;
    }
    x->n_hdrs++;
    return size * n;
}

static size_t cx_on_body(char *data, size_t size, size_t n, void *ud)
{
    struct cx *x = ud;
    size_t len = size * n;
    if (len == 0)
        return 0;
    if (!x->head_done) {
        /* A body byte must never precede the head it belongs to. */
        x->stop = CX_BAD_HEAD;
        return 0;
    }
    size_t r = x->cbs->body(x->ud, data, len);
    if (r == UPSTREAM_PAUSE)
        return CURL_WRITEFUNC_PAUSE;
    if (r != len) {
        x->stop = CX_ABORTED;
        return 0;
    }
    return len;
}

/* curl reports progress after each step of a transfer: the first report
 * with the whole body uploaded marks the end of the request.  (curl 7.88
 * has no CURLINFO for it; PRETRANSFER..STARTTRANSFER includes the upload.) */
static int cx_on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                          curl_off_t ulnow)
{
    struct cx *x = ud;
    (void)dltotal;
    (void)dlnow;
    if (!x->sent_ms && ultotal > 0 && ulnow >= ultotal)
        x->sent_ms = now_mono_ms();
    return 0;
}

/* curl's custom header list from "Name: value\r\n" lines.  An empty value
 * is written "Name;" (curl's syntax), and curl is kept from adding headers
 * the caller did not ask for. */
static struct curl_slist *cx_headers(const char *h, size_t hl)
{
    struct curl_slist *l = NULL;
    bool has_accept = false, has_ctype = false;
    struct buf line;
    buf_init(&line, SIZE_MAX);
    const char *end = h ? h + hl : NULL;
    while (h && h < end) {
        const char *eol = memchr(h, '\n', (size_t)(end - h));
        size_t n = eol ? (size_t)(eol - h) : (size_t)(end - h);
        size_t k = n;
        if (k && h[k - 1] == '\r')
            k--;
        const char *colon = memchr(h, ':', k);
        if (colon) {
            size_t nl = (size_t)(colon - h);
            const char *v = colon + 1;
            while (v < h + k && (*v == ' ' || *v == '\t'))
                v++;
            has_accept |= strn_ieq(h, nl, "accept") != 0;
            has_ctype |= strn_ieq(h, nl, "content-type") != 0;
            buf_reset(&line);
            buf_append(&line, h, nl);
            if (v < h + k) {
                buf_append(&line, ": ", 2);
                buf_append(&line, v, (size_t)(h + k - v));
            } else {
                buf_append(&line, ";", 1);
            }
            l = curl_slist_append(l, line.data);
        }
        h += eol ? n + 1 : n;
    }
    l = curl_slist_append(l, "Expect:");
    if (!has_accept)
        l = curl_slist_append(l, "Accept:");
    if (!has_ctype)
        l = curl_slist_append(l, "Content-Type:");
    buf_release(&line);
    return l;
}

static struct upstream_xfer *cx_start(struct upstream *u, const struct upstream_request *req,
                                      const struct upstream_cbs *cbs, void *ud)
{
    struct fetch *f = upstream_fetch(u);
    CURL *easy = f ? fetch_easy_new(f) : NULL;
    if (!easy)
        return NULL;
    struct cx *x = xcalloc(1, sizeof *x);
    x->base.kind = UPSTREAM_KIND_CURL;
    x->u = u;
    x->cbs = cbs;
    x->ud = ud;
    buf_init(&x->head, UPSTREAM_HEAD_CAP);
    x->x.easy = easy;
    x->x.done = cx_on_done;
    x->hdrs = cx_headers(req->headers, req->headers_len);

    CURL *h = x->x.easy;
    curl_easy_setopt(h, CURLOPT_URL, req->url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, x->hdrs);
    if (strcmp(req->method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (strcmp(req->method, "GET") == 0 && req->body_len == 0 && !req->send_length) {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else {
        if (strcmp(req->method, "POST") != 0)
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);
        if (req->body_len || req->send_length) {
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body ? req->body : "");
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        }
    }
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     req->connect_timeout_ms > 0 ? req->connect_timeout_ms : 10000L);
    if (req->timeout_ms > 0)
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, req->timeout_ms);
    if (req->recv_buffer > 0)
        curl_easy_setopt(h, CURLOPT_BUFFERSIZE, req->recv_buffer);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, req->body_len ? 0L : 1L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, cx_on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, x);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, cx_on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, cx_on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
    /* Per endpoint; fetch_easy_put() resets pooled handles, so neither
     * leaks into the next exchange.  Verification stays on either way. */
    curl_easy_setopt(h, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L); /* CONNECT's reply: no head */
    if (req->proxy)
        curl_easy_setopt(h, CURLOPT_PROXY, req->proxy);
    if (req->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, req->ca_file);
    if (fetch_add(f, &x->x) != 0) {
        cx_free(x);
        return NULL;
    }
    return &x->base;
}

/* ---- dispatch ----------------------------------------------------------- */

struct upstream *upstream_new(uv_loop_t *loop, bool use_builtin)
{
    struct upstream *u = xcalloc(1, sizeof *u);
    u->loop = loop;
    u->builtin = use_builtin;
    u->h1 = h1_new(loop);
    /* For http:// URLs curl honours these (and no_proxy); the built-in
     * client does not speak to proxies, so they send http:// to curl. */
    u->env_proxy = env_proxy_set(ENV_PROXY_HTTP);
    u->env_proxy_tls = env_proxy_set(ENV_PROXY_HTTPS);
    return u;
}

void upstream_set_builtin(struct upstream *u, bool use_builtin)
{
    u->builtin = use_builtin;
}

void upstream_counts(const struct upstream *u, size_t *open, size_t *idle)
{
    h1_counts(u->h1, open, idle);
}

void upstream_tls_counts(const struct upstream *u, uint64_t *full, uint64_t *resumed)
{
    h1_tls_counts(u->h1, full, resumed);
}

void upstream_h2_counts(const struct upstream *u, size_t *conns, size_t *streams)
{
    h1_h2_counts(u->h1, conns, streams);
}

void upstream_set_http2(struct upstream *u, bool on)
{
    h1_set_http2(u->h1, on);
}

void upstream_free(struct upstream *u)
{
    if (!u)
        return;
    h1_free(u->h1);
    fetch_free(u->fetch);
    free(u);
}

bool upstream_uses_libcurl(const struct upstream *u, const char *url, bool use_builtin)
{
    if (!use_builtin)
        return true;
    if (strncasecmp(url, "http://", 7) == 0)
        return u->env_proxy;
    if (strncasecmp(url, "https://", 8) == 0)
        return u->env_proxy_tls;
    return true;
}

struct upstream_xfer *upstream_start(struct upstream *u, const struct upstream_request *req,
                                     const struct upstream_cbs *cbs, void *ud)
{
    if (!req->proxy && !upstream_uses_libcurl(u, req->url, u->builtin))
        return h1_start(u->h1, req, cbs, ud);
    return cx_start(u, req, cbs, ud);
}

void upstream_warm(struct upstream *u, const char *url, const char *proxy, const char *ca_file,
                   bool on)
{
    /* Off always reaches h1: the URL may have moved to libcurl (a reload
     * set http_client) since it was turned on. */
    if (on && (proxy || upstream_uses_libcurl(u, url, u->builtin)))
        return;
    h1_warm(u->h1, url, ca_file, on);
}

void upstream_resume(struct upstream_xfer *x)
{
    if (x->kind == UPSTREAM_KIND_H1) {
        h1_resume(x);
        return;
    }
    struct cx *c = (struct cx *)x;
    if (c->x.added)
        curl_easy_pause(c->x.easy, CURLPAUSE_CONT);
}

uint64_t upstream_sent_ms(const struct upstream_xfer *x)
{
    if (x->kind == UPSTREAM_KIND_H1)
        return h1_sent_ms(x);
    return ((const struct cx *)x)->sent_ms;
}

void upstream_abort(struct upstream_xfer *x)
{
    if (x->kind == UPSTREAM_KIND_H1) {
        h1_abort(x);
        return;
    }
    struct cx *c = (struct cx *)x;
    fetch_remove(c->u->fetch, &c->x);
    cx_free(c);
}
