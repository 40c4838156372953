/*
 * guard: the checks every request passes before routing and before any
 * token is added to it (docs/SECURITY.md has the threat model).
 *
 * The proxy adds the operator's token to what it forwards, so whoever can
 * make it send a request spends that token.  A browser is the stranger that
 * can: a page on a rebinding domain reaches 127.0.0.1 under its own name,
 * and any page can send a "simple" cross-site POST.  The guard refuses
 *
 *   - a Host that is not ours while the proxy is bound to loopback:
 *     localhost, 127.0.0.1, [::1], the bind address and the names in
 *     server.allowed_hosts, each with an optional port.  IP literals are
 *     parsed and compared as addresses; nothing is matched by prefix.
 *     Bound beyond loopback, the access key (mandatory there) protects every
 *     path, so any Host passes;
 *   - an Origin that is neither the proxy's own (http:// or https:// plus the
 *     Host the request was sent to) nor listed in server.allowed_origins.
 *     Claude Code and the SDKs in Node send no Origin and are not affected.
 *
 * guard_key_eq compares a presented key with the secret in time that
 * depends only on the presented length, so neither the secret's bytes nor
 * its length leak through timing.
 *
 * Pure: no I/O, no state; the views passed in are not kept.
 */
#ifndef ZEPHYR_GUARD_H
#define ZEPHYR_GUARD_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "util.h"

enum guard_verdict {
    GUARD_PASS = 0,
    GUARD_BAD_HOST = 1,   /* DNS rebinding, or a name the operator did not allow */
    GUARD_BAD_ORIGIN = 2, /* a cross-site request from a page that is not ours */
};

/*
 * The verdict for a request with these Host and Origin values (NULL when
 * the header is absent).  A request without Host (HTTP/1.0 allows that)
 * is refused while bound to loopback, like a Host that is not ours: a
 * page's request smuggled through some other client must not pass for
 * lack of the header.  The caller exempts GET /health.
 */
enum guard_verdict guard_check(const struct config *cfg, const char *host, size_t host_len,
                               const char *origin, size_t origin_len);

/* Whether the Host value names this proxy under the rules above; exposed
 * for the unit tests. */
bool guard_host_ok(const struct config *cfg, const char *host, size_t len);

/* Whether a presented key (given, len bytes) equals secret (a C string),
 * in time that depends on len only. */
bool guard_key_eq(const char *given, size_t len, const char *secret);

/* Validation of the configuration entries: NULL when s can be used, else
 * the "what is wrong; what would be right" text. */
const char *guard_host_entry_problem(const char *s);
const char *guard_origin_entry_problem(const char *s);

/*
 * Appends the header lines (CRLF-terminated) that answer a CORS preflight
 * from an origin the guard let through: the origin itself, the methods, the
 * requested headers when they are a plain list of header names (capped),
 * a max-age, and Vary.
 */
void guard_preflight_headers(struct buf *out, const char *origin, size_t origin_len,
                             const char *req_headers, size_t req_headers_len);

#endif
