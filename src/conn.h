/*
 * conn: the client side.  A listening socket and the HTTP/1.1 connections
 * it accepts, parsed with llhttp, with every limit a peer could abuse
 * enforced here and answered on the wire.
 *
 * A connection reads one request (line, headers, whole body) with
 * reqparse.c into a struct http_req, then hands it to the dispatch callback and keeps
 * reading, so that a client hanging up is noticed at once; bytes of a
 * pipelined next request are held until the current response ends (up to
 * 1 MiB; then reading pauses until they are parsed).  An error answer that
 * ends the connection is followed by a lingering close (see conn.c), so
 * that a client still sending can read it.
 * The handler answers with conn_respond() (a whole response) or with
 * conn_start_response() / conn_write_body() / conn_end_response() for a
 * streamed one.  A handler that must know when the client leaves, or when
 * the output queue drains, attaches itself with conn_attach(); those
 * callbacks only ever run from libuv callbacks, never from inside a conn_*
 * call the handler made.
 */
#ifndef ZEPHYR_CONN_H
#define ZEPHYR_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "reqparse.h"
#include "util.h"

struct conn;
struct conn_server;
struct config;

typedef void (*conn_dispatch_cb)(void *ud, struct conn *c, struct http_req *req);

struct conn_handler_ops {
    void (*client_gone)(void *h); /* the connection is closing; stop using it */
    void (*drained)(void *h);     /* the output queue fell below the low mark */
};

struct conn_server *conn_server_new(uv_loop_t *loop, const struct config *cfg,
                                    conn_dispatch_cb dispatch, void *ud);
/* Binds and listens; returns 0 or a libuv error code (message in err). */
int conn_listen(struct conn_server *s, const char *bind, int port, char *err, size_t errlen);
int conn_port(const struct conn_server *s);
/* Stops accepting and closes idle keep-alive connections. */
void conn_stop_accepting(struct conn_server *s);
size_t conn_count(const struct conn_server *s);
/* Closes every connection at once (second signal, end of grace). */
void conn_close_all(struct conn_server *s);
/* Frees the server once its listener and connections are closed. */
void conn_server_free(struct conn_server *s);
/* The configuration limits in force (swapped on reload). */
void conn_server_set_config(struct conn_server *s, const struct config *cfg);
/* For a server that is not the proxy's client side (the fake upstream,
 * which stands in for an HTTP proxy in a test): also take absolute-form
 * request targets (http://host/path).  Set before conn_listen(). */
void conn_server_accept_absolute(struct conn_server *s);
/* Connections accepted since the server was made. */
uint64_t conn_accepted(const struct conn_server *s);

void conn_attach(struct conn *c, void *handler, const struct conn_handler_ops *ops);
void conn_detach(struct conn *c);

/* A whole response with a Content-Length.  extra is "Name: value\r\n"... or
 * NULL.  For HEAD the body is not sent. */
void conn_respond(struct conn *c, int status, const char *content_type, const char *body,
                  size_t len, const char *extra);
/* An Anthropic-shaped error: {"type":"error","error":{"type":...,"message":...}}. */
void conn_respond_error(struct conn *c, int status, const char *type, const char *message,
                        const char *extra);

/* Starts a streamed response.  headers is "Name: value\r\n"... without
 * framing headers; content_length < 0 means unknown (chunked for HTTP/1.1,
 * close-delimited for 1.0).  With a known length above 0 the head waits
 * for the first body bytes (one write for both); conn_end_response()
 * sends it if none came, conn_abort_response() drops it. */
void conn_start_response(struct conn *c, int status, const char *headers, size_t headers_len,
                         long long content_length);
void conn_write_body(struct conn *c, const char *p, size_t n);
/* Ends the response properly (terminating chunk) and goes on with the next
 * request or closes, as keep-alive says. */
void conn_end_response(struct conn *c);
/* Ends the response so that the client sees it is incomplete: the
 * connection is closed without a terminating chunk. */
void conn_abort_response(struct conn *c);
/* Bytes queued for the client and not yet written. */
size_t conn_queued(const struct conn *c);
bool conn_response_started(const struct conn *c);
/* A short text form of the peer address, for logs. */
const char *conn_peer(const struct conn *c);
bool conn_peer_is_loopback(const struct conn *c);

#define CONN_HIGH_WATER (256 * 1024)
#define CONN_LOW_WATER (64 * 1024)

#endif
