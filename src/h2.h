/*
 * h2: the HTTP/2 side of the built-in client, one session per connection.
 *
 * What it owns: the nghttp2 session of one TLS connection whose peer chose
 * "h2" by ALPN, and the streams on it.  It does no I/O: h1.c owns the
 * socket, TLS, the pools and the exchanges (the caller's handles); it feeds
 * decrypted bytes to h2_sess_recv() and takes the bytes to send through
 * the send callback when it calls h2_sess_flush().
 *
 * - Streams: HEADERS (:method, :scheme https, :authority, :path, the
 *   caller's headers lower-cased without connection-specific ones,
 *   content-length), built from the request's pieces (struct h2_req), the
 *   body through a data provider.  The response head
 *   (1xx skipped, trailers ignored) and the DATA go to the stream callbacks.
 * - Flow control is the application's: received DATA is consumed (its
 *   window returned to the server) only once body() took it.  A paused
 *   stream keeps what arrived (bounded by its window, H2_STREAM_WINDOW) and
 *   stops the server on that stream only; the connection window is sized
 *   for every stream to be paused at once.
 * - A stream ends through the close callback exactly once, never from
 *   inside nghttp2: the results collect while nghttp2 runs and are handed
 *   out when it has returned.  h2_stream_cancel() ends it without one
 *   (RST_STREAM CANCEL).
 * - At most min(the server's SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_STREAMS)
 *   streams at once, one until the server's SETTINGS arrived;
 *   h2_sess_can_open() says whether one more fits.
 * - GOAWAY: no new streams; the streams the server did not process (above
 *   its last stream id, or refused) end with H2_RETRY_SAFE.
 */
#ifndef ZEPHYR_H2_H
#define ZEPHYR_H2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upstream.h"

#define H2_MAX_STREAMS 100                           /* our own cap per connection */
#define H2_STREAM_WINDOW (256 * 1024)                /* per stream receive window */
#define H2_CONN_WINDOW (H2_MAX_STREAMS * 256 * 1024) /* every stream paused at once */

struct h2_sess;
struct h2_stream;

/* How a stream that ended with an error may be sent again. */
enum h2_retry {
    H2_RETRY_NO = 0,   /* it was (or may have been) processed */
    H2_RETRY_SAFE = 1, /* refused or above GOAWAY's last stream id: not processed */
    H2_RETRY_LOST = 2, /* the connection was lost before any response byte */
};

struct h2_ops {
    /* Plaintext for the connection, in order.  false: it cannot be sent;
     * the session is then over. */
    bool (*send)(void *conn, const uint8_t *data, size_t len);
    /* As in upstream_cbs; ud is the stream's. */
    bool (*head)(void *ud, int status, const struct upstream_hdr *hdrs, size_t n);
    size_t (*body)(void *ud, const char *data, size_t len);
    /* The request's last byte was handed to send. */
    void (*sent)(void *ud);
    /* The stream is over; msg lives only during the call. */
    void (*close)(void *ud, enum upstream_rc rc, const char *msg, enum h2_retry retry);
};

struct h2_req {
    /* The request in the pieces h1.c keeps (none need outlive
     * h2_stream_open(), which copies them into HEADERS): no HTTP/1.1 head
     * is parsed on the way. */
    const char *method; /* :method */
    size_t method_len;
    const char *path; /* :path, origin form */
    size_t path_len;
    const char *authority; /* :authority; a "host" line in headers replaces it */
    size_t authority_len;
    const char *headers; /* "Name: value\r\n" lines as upstream_request's: names
                          * lower-cased, connection-specific ones dropped */
    size_t headers_len;
    const char *content_length; /* its digits, or NULL: none sent */
    size_t content_length_len;
    const char *body; /* borrowed until the stream ends */
    size_t body_len;
};

/* A client session; queues the preface and SETTINGS.  NULL when nghttp2
 * cannot set one up. */
struct h2_sess *h2_sess_new(const struct h2_ops *ops, void *conn);
/* Ends every stream still open with rc and msg first (see h2_sess_fail). */
void h2_sess_free(struct h2_sess *s);
/* Decrypted bytes from the connection.  -1: the session is over (a
 * connection error); the message is h2_sess_error(). */
int h2_sess_recv(struct h2_sess *s, const char *data, size_t len);
/* Hands what is queued to the send callback (a no-op while the session is
 * inside nghttp2; it is flushed afterwards by the caller's next flush).
 * -1: the session is over. */
int h2_sess_flush(struct h2_sess *s);
/* The connection is gone: every stream ends with rc and msg (H2_RETRY_LOST
 * for those without a response byte). */
void h2_sess_fail(struct h2_sess *s, enum upstream_rc rc, const char *msg);
const char *h2_sess_error(const struct h2_sess *s);
/* One more stream fits: no GOAWAY, no error, under the stream bound. */
bool h2_sess_can_open(const struct h2_sess *s);
/* The server's SETTINGS arrived (its stream bound is known), or the
 * session will take no streams anyway. */
bool h2_sess_ready(const struct h2_sess *s);
/* Neither side wants anything more (GOAWAY exchanged, or an error). */
bool h2_sess_over(const struct h2_sess *s);
size_t h2_sess_streams(const struct h2_sess *s);
/* Queues a PING; h2_sess_ping_pending() stays true until its ACK. */
void h2_sess_ping(struct h2_sess *s);
bool h2_sess_ping_pending(const struct h2_sess *s);

/* A new stream for ud; NULL (err filled) when the session refuses it. */
struct h2_stream *h2_stream_open(struct h2_sess *s, const struct h2_req *r, void *ud, char *err,
                                 size_t errlen);
/* After body() returned UPSTREAM_PAUSE: delivers the kept bytes again and
 * reopens the stream's window.  May end the stream (close callback). */
void h2_stream_resume(struct h2_stream *st);
/* Ends the stream without a callback (RST_STREAM CANCEL when it is open). */
void h2_stream_cancel(struct h2_stream *st);

#endif
