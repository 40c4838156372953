/*
 * proxy: forwards a client request to an upstream endpoint (upstream.h)
 * and streams the response back as it arrives.
 *
 * Each request becomes a struct preq that owns a copy of what is needed to
 * replay it (method, target, filtered headers, the whole body), so that an
 * attempt that fails before the client has seen a byte can be retried on
 * the next best endpoint of the group.  Once response headers have gone to
 * the client the request is committed to its endpoint; a stream that
 * breaks after that is ended with an SSE error event and a proper end of
 * the chunked body, never a silent clean close.
 *
 * The proxy owns one 100 ms tick that enforces the time limits of every
 * request in flight: time to response headers (header_timeout_ms) and the
 * stream idle time (idle_timeout_ms, reset by every byte received and not
 * counted while the client is the one holding the stream back).
 */
#ifndef ZEPHYR_PROXY_H
#define ZEPHYR_PROXY_H

#include <stdint.h>
#include <uv.h>

#include "conn.h"

struct proxy;
struct state;
struct upstream;
struct config;
struct metrics;

struct proxy *proxy_new(uv_loop_t *loop, struct upstream *up, struct state *st,
                        const struct config *cfg);
/* Aborts every request in flight (their clients see the failure) and frees
 * the proxy once its timer is closed. */
void proxy_free(struct proxy *px);
/* After a reload: the new state and configuration (requests in flight keep
 * the endpoint records they started with until they end). */
void proxy_set_config(struct proxy *px, struct state *st, const struct config *cfg);
/* Where request outcomes are counted; NULL: nowhere. */
void proxy_set_metrics(struct proxy *px, struct metrics *m);

/* Keeps a connection to the current endpoint and to the next in line
 * (state_next_in_line) warm, and stops keeping one to an endpoint that is
 * neither any more (upstream_warm).  Cheap when nothing changed: call it
 * on a timer (app.c's policy timer). */
void proxy_keep_warm(struct proxy *px, uint64_t now_ms);

/* Takes over the request on c: routes it and answers it. */
void proxy_handle(struct proxy *px, struct conn *c, struct http_req *req);

/* Requests in flight. */
size_t proxy_active(const struct proxy *px);

/* Called (once) whenever the number of requests in flight drops to 0. */
void proxy_on_idle(struct proxy *px, void (*cb)(void *ud), void *ud);

/* Called after every request ends, for checks that react to traffic. */
void proxy_on_request_end(struct proxy *px, void (*cb)(void *ud), void *ud);

#endif
