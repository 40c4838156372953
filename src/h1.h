/*
 * h1: the built-in HTTP/1.1 client for http:// and https:// upstreams.
 *
 * Used through upstream.h (read its contract: callbacks, lifetime, result
 * codes); this header is what upstream.c calls.
 *
 * - One libuv TCP connection carries one exchange at a time.  Finished
 *   connections that may be kept alive go back to an idle pool per
 *   host:port (most recently used first); an idle connection that the
 *   upstream closes or sends anything on is closed and dropped.
 * - A request on a reused connection that fails before any response byte
 *   arrived (the upstream closed an idle connection as we reused it) is
 *   sent again once on a new connection, transparently.
 * - Host names are resolved with uv_getaddrinfo; numeric addresses are not
 *   looked up.
 * - The request head and the body go out in one write; the response is
 *   parsed with llhttp (chunked and close-delimited bodies, HEAD).
 * - Reading uses one buffer shared by all connections: a connection keeps
 *   bytes of its own only while its exchange is paused.
 * - https: TLS through OpenSSL on the same loop (tls.h): the handshake runs
 *   once per pooled connection, under the connect timeout; the peer is
 *   verified against the system store or the request's ca_file, its name
 *   or address checked; sessions are resumed per pool.  A failed handshake
 *   ends the exchange with UPSTREAM_ERR_CONNECT and a message starting "TLS".
 *   Pools are per scheme, host:port and CA source.
 * - HTTP/2: when the TLS peer chooses "h2" by ALPN, the connection carries
 *   many exchanges at once, as streams of one session (h2.h): a new
 *   exchange takes a stream on a connection of its pool with room before
 *   an idle HTTP/1.1 connection or a new one, and waits for a connection
 *   being set up when the pool has spoken h2 before.  Plain http: stays
 *   HTTP/1.1.
 * - A pool that served a request with keep_warm in the last 30 minutes
 *   keeps one verified idle connection ready (re-opened when the upstream
 *   closes it, renewed before the idle timeout), so the first request after
 *   a pause pays no connect or handshake.  h1_warm() marks a pool the same
 *   way without a request (the next endpoint in line), while the client
 *   served any request with keep_warm in the last 30 minutes.
 */
#ifndef ZEPHYR_H1_H
#define ZEPHYR_H1_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "upstream.h"

struct h1;

struct h1 *h1_new(uv_loop_t *loop);
/* Closes the idle connections and frees the client once their handles are
 * closed.  Every exchange must have ended or been aborted. NULL: no-op. */
void h1_free(struct h1 *c);

/* Starts an exchange on req->url, which must be http:// or https://.  Returns NULL
 * (and calls nothing) for a URL it cannot use. The returned handle's
 * kind is UPSTREAM_KIND_H1. */
struct upstream_xfer *h1_start(struct h1 *c, const struct upstream_request *req,
                               const struct upstream_cbs *cbs, void *ud);
/* See upstream_warm(); url must be http:// or https:// (else a no-op). */
void h1_warm(struct h1 *c, const char *url, const char *ca_file, bool on);
void h1_resume(struct upstream_xfer *x);
void h1_abort(struct upstream_xfer *x);
/* See upstream_sent_ms(). */
uint64_t h1_sent_ms(const struct upstream_xfer *x);

/* TLS handshakes completed: full ones and resumed ones (/metrics). */
void h1_tls_counts(const struct h1 *c, uint64_t *full, uint64_t *resumed);

/* Connections open now, idle ones among them (for tests and /status); an
 * HTTP/2 connection without a stream counts as idle. */
void h1_counts(const struct h1 *c, size_t *open, size_t *idle);
/* HTTP/2 connections open and the streams on them (/metrics). */
void h1_h2_counts(const struct h1 *c, size_t *conns, size_t *streams);
/* Whether https ALPN offers h2 (default true); for new connections. */
void h1_set_http2(struct h1 *c, bool on);

#endif
