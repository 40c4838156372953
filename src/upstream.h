/*
 * upstream: one HTTP exchange with an endpoint.
 *
 * Two clients sit behind this interface, both driven by the same libuv
 * loop:
 *   - the built-in client (h1.c) for http:// and https:// URLs, HTTP/1.1,
 *     or HTTP/2 (h2.c) with https endpoints that choose it by ALPN,
 *     when no proxy variable for the scheme is set: keep-alive pools per
 *     scheme, host and port, TLS through OpenSSL on the loop (tls.h),
 *     llhttp for the responses, no per-request work beyond writing the
 *     request head;
 *   - libcurl's multi interface (fetch.c) for URLs behind a proxy
 *     variable (http_proxy / https_proxy / all_proxy), and for every URL
 *     when [server] http_client = "libcurl".
 * Callers (the proxy and the health checks) see one set of callbacks and
 * one set of result codes.  libcurl is only loaded (curlso.c) and
 * initialised when an exchange first needs it.
 *
 * Lifetime: upstream_start() returns a handle that stays valid until the done
 * callback has returned or upstream_abort() has been called, whichever comes
 * first.  done is called exactly once unless upstream_abort() came first, and
 * never from inside upstream_start(), upstream_resume(), upstream_abort() or another of the
 * exchange's callbacks.  The request's strings and body are borrowed until
 * then too.
 */
#ifndef ZEPHYR_UPSTREAM_H
#define ZEPHYR_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

enum upstream_rc {
    UPSTREAM_OK = 0,
    UPSTREAM_ERR_CONNECT,  /* no connection: DNS, refused, unreachable, connect timeout */
    UPSTREAM_ERR_TIMEOUT,  /* upstream_request.timeout_ms passed */
    UPSTREAM_ERR_SEND,     /* the request could not be written */
    UPSTREAM_ERR_RECV,     /* the connection broke or closed before the response ended */
    UPSTREAM_ERR_PROTOCOL, /* the response is not valid HTTP */
    UPSTREAM_ERR_ABORTED,  /* a callback asked to stop */
    UPSTREAM_ERR_OTHER,
};

struct upstream_hdr {
    const char *name;
    size_t name_len;
    const char *value; /* leading and trailing blanks removed */
    size_t value_len;
};

struct upstream_request {
    const char *method;  /* "POST", "GET", "HEAD", ... */
    const char *url;     /* absolute: http://host[:port]/path?query or https://... */
    const char *headers; /* "Name: value\r\n" lines, or NULL; never Host,
                                * Content-Length, Transfer-Encoding, Connection */
    size_t headers_len;
    const char *body; /* may be NULL when body_len is 0 */
    size_t body_len;
    bool send_length;        /* send Content-Length (also when body_len is 0) */
    long connect_timeout_ms; /* 0: 10 s */
    long timeout_ms;         /* the whole exchange; 0: no limit */
    long recv_buffer;        /* receive buffer size hint in bytes; 0: default */
    const char *proxy;       /* the endpoint's own proxy URL, or NULL; sends the
                                * exchange through libcurl */
    const char *ca_file;     /* https: CA certificates to trust instead of the
                                * system store; NULL or "": the system store.
                                * Certificates are always verified. */
    bool keep_warm;          /* a user's request: the built-in client keeps a
                                * connection to this host ready for a while */
};

/* Returned by the body callback: deliver the same bytes again after
 * upstream_resume(); the client stops reading from the upstream meanwhile. */
#define UPSTREAM_PAUSE ((size_t)-1)

struct upstream_cbs {
    /* The final response head.  Interim 100-199 responses are skipped;
     * a 101 (a protocol switch nobody asked for) ends the exchange with
     * UPSTREAM_ERR_PROTOCOL and never reaches this callback.  The caller still
     * checks the head with hdr_resp_filter.  The
     * array and its strings live only during the call.  Return false to
     * stop: the exchange then ends with UPSTREAM_ERR_ABORTED. */
    bool (*head)(void *ud, int status, const struct upstream_hdr *hdrs, size_t n);
    /* Decoded response body bytes (no chunk framing), len > 0.  Return
     * len to take them, UPSTREAM_PAUSE to pause, anything else to stop
     * (UPSTREAM_ERR_ABORTED). */
    size_t (*body)(void *ud, const char *data, size_t len);
    /* The exchange is over.  msg says what went wrong in a few words
     * ("" for UPSTREAM_OK); it lives only during the call. */
    void (*done)(void *ud, enum upstream_rc rc, const char *msg);
};

/* Which client an exchange runs on; the first member of every handle. */
enum upstream_kind { UPSTREAM_KIND_H1 = 1, UPSTREAM_KIND_CURL = 2 };
struct upstream_xfer {
    enum upstream_kind kind;
};

struct upstream;

/* use_builtin: false sends every URL through libcurl. */
struct upstream *upstream_new(uv_loop_t *loop, bool use_builtin);
void upstream_set_builtin(struct upstream *u, bool use_builtin);
/* Aborts nothing: abort every exchange first.  Closes idle connections;
 * the memory is released once the loop has closed the handles. */
void upstream_free(struct upstream *u);

/* Whether exchanges with url go through libcurl (a proxy variable for its
 * scheme, or use_builtin false: http_client = "libcurl").  An exchange
 * whose request names a proxy always does. */
bool upstream_uses_libcurl(const struct upstream *u, const char *url, bool use_builtin);

/* NULL when the exchange cannot start (bad URL, libcurl refused it or
 * cannot be loaded); done is then not called. */
struct upstream_xfer *upstream_start(struct upstream *u, const struct upstream_request *req,
                                     const struct upstream_cbs *cbs, void *ud);
/* Continues after the body callback returned UPSTREAM_PAUSE.  May call body
 * before it returns (never done).  A no-op when not paused. */
void upstream_resume(struct upstream_xfer *x);
/* Ends the exchange at once; no further callbacks. */
void upstream_abort(struct upstream_xfer *x);
/* When the request's last byte was handed to the connection, on the
 * now_mono_ms() clock, or 0 when it has not been yet.  Read in the head
 * callback, the time since is the endpoint's own time to answer, without
 * the upload of a large body. */
uint64_t upstream_sent_ms(const struct upstream_xfer *x);

/* Keep a verified connection to url ready (on) or stop (off), without a
 * request: for the endpoint next in line, which has served no request yet.
 * The built-in client keeps it like the pool of a keep_warm request, for as
 * long as it has served any keep_warm request in the last 30 minutes; off
 * also ends the warmth a request gave the pool.  A no-op for exchanges that
 * go through libcurl (proxy set, a proxy variable, http_client = "libcurl"):
 * libcurl keeps no connection ready. */
void upstream_warm(struct upstream *u, const char *url, const char *proxy, const char *ca_file,
                   bool on);

/* Connections of the built-in client: open, and idle among them. */
void upstream_counts(const struct upstream *u, size_t *open, size_t *idle);
/* TLS handshakes the built-in client completed: full and resumed. */
void upstream_tls_counts(const struct upstream *u, uint64_t *full, uint64_t *resumed);
/* HTTP/2 connections of the built-in client and the streams on them. */
void upstream_h2_counts(const struct upstream *u, size_t *conns, size_t *streams);
/* Whether the built-in client offers HTTP/2 to https endpoints (default
 * on); applies to connections made from now on. */
void upstream_set_http2(struct upstream *u, bool on);

/* Short name of the result, for logs: "connect failed", "timed out", ... */
const char *upstream_rc_str(enum upstream_rc rc);

#endif
