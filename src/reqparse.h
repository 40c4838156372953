/*
 * reqparse: the client side's HTTP/1.1 request parser.
 *
 * llhttp does the framing; this module collects the request target and
 * the header fields into one buffer, validates what llhttp 8.1 lets
 * through (it accepts a space before the colon and folded header lines:
 * every name must be a token and no value may hold CR, LF, NUL or another
 * control), enforces the limits, and reads the whole body.  It does no
 * I/O: conn.c feeds it bytes and acts on its phase, and the fuzz target
 * feeds it the same way, so what is fuzzed is what serves clients.
 *
 * Phases: IDLE (no byte of a request yet), HEAD (request line and
 * headers), BODY, DONE (a whole request is in rp->req; feeding stops until
 * reqparse_next()), ERROR (rp->status, rp->type and rp->message say how to
 * answer; the connection must then close).  Limits: request target 8 KiB
 * (414), header block 64 KiB or 200 fields (431), body over max_body (413,
 * from Content-Length before any of it is read), Expect other than
 * 100-continue (417), a Transfer-Encoding other than a single "chunked"
 * (501; repeated, or in HTTP/1.0: 400), an HTTP/1.1 request without
 * exactly one Host or any request with two (400, as nginx), anything
 * malformed (400).  Trailer fields of a
 * chunked body are ignored.  An Upgrade request is parsed as a plain one.
 */
#ifndef ZEPHYR_REQPARSE_H
#define ZEPHYR_REQPARSE_H

#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "util.h"

#define REQPARSE_MAX_TARGET 8192
#define REQPARSE_MAX_HEADER_BYTES (64 * 1024)
#define REQPARSE_MAX_HEADERS 200

struct http_hdr {
    const char *name; /* borrows from http_req.hbuf */
    size_t name_len;
    const char *value; /* borrows from http_req.hbuf */
    size_t value_len;
};

struct http_req {
    const char *method; /* borrows a static string from llhttp */
    char *target;       /* owns; origin-form request target */
    int http_minor;     /* 0 or 1 (HTTP/1.x) */
    bool keep_alive;
    bool is_head;
    struct http_hdr *hdrs; /* owns the array */
    size_t n_hdrs;
    bool has_connection; /* a Connection header is among hdrs */
    struct buf hbuf;     /* owns the header bytes the views point into */
    struct buf body;     /* the whole request body */
    uint64_t start_ms;   /* monotonic time the first byte arrived (set by conn) */
    struct sockaddr_storage peer;
};

/* The first header called name (any case), or NULL. */
const struct http_hdr *http_req_header(const struct http_req *r, const char *name);

/* Whether header i may go upstream: not hop-by-hop, not named by any
 * Connection header, not Host, Content-Length or Expect (curl sets those),
 * not the proxy's own keys, and not a credential when strip_creds. */
bool http_req_forwardable(const struct http_req *r, size_t i, bool strip_creds);

enum reqparse_phase {
    REQPARSE_IDLE = 0,
    REQPARSE_HEAD = 1,
    REQPARSE_BODY = 2,
    REQPARSE_DONE = 3,
    REQPARSE_ERROR = 4,
};

struct reqparse_off {
    size_t name_off, name_len, value_off, value_len;
};

struct reqparse {
    llhttp_t parser; /* its settings are one static table for all */
    enum reqparse_phase phase;
    struct http_req req;
    struct reqparse_off *offs; /* owns; header positions while parsing */
    size_t n_offs, cap_offs;
    bool in_value;
    struct buf target; /* owns; the target while it is read */
    size_t max_body;
    bool absolute_ok;    /* also take an absolute-form target (http://host/path), as
                                  a forward proxy gets; false after reqparse_init(), kept by
                                  reqparse_next().  The fake upstream sets it: it stands in
                                  for the proxy of http_proxy in a test. */
    bool send_continue;  /* answer "100 Continue" now (set once per request) */
    int status;          /* ERROR: the status to answer */
    const char *type;    /* ERROR: the Anthropic error type (static) */
    const char *message; /* ERROR: what was wrong (static) */
};

void reqparse_init(struct reqparse *rp, size_t max_body);
void reqparse_release(struct reqparse *rp);
/* Ready for the next request on the same connection; req.peer is kept. */
void reqparse_next(struct reqparse *rp, size_t max_body);
/* Frees the header fields and the parse buffers of a request that was
 * handed over (method, target, version, keep-alive and body stay), so that
 * a long response holds no memory for them. */
void reqparse_drop_headers(struct reqparse *rp);
/* Parses from p and returns how many bytes it consumed; it stops at the
 * end of a request (DONE) or at an error (ERROR). */
size_t reqparse_feed(struct reqparse *rp, const char *p, size_t n);

#endif
