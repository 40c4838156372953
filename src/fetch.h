/*
 * fetch: libcurl's multi_socket interface driven by the libuv loop.
 *
 * One struct fetch owns a CURLM handle, a CURLSH handle that shares DNS
 * results and TLS sessions between transfers, the loop timer curl asks
 * for, and one uv_poll_t per socket curl wants watched.  Every upstream
 * request and every health check is an easy handle added here; curl keeps
 * its own keep-alive pool and HTTP/2 multiplexing per multi handle.
 *
 * Callers embed a struct fetch_xfer in their own object and pass it to
 * fetch_add(); fetch stores it as CURLOPT_PRIVATE.  When curl reports the
 * transfer finished, fetch removes the easy handle from the multi handle
 * and then calls xfer->done: the callback owns the easy handle again and
 * may free it, or reuse it with fetch_add().  fetch_remove() aborts a
 * transfer without calling done.  Neither may be called from inside a
 * curl callback (write, header, read): return an error from the callback
 * instead.
 */
#ifndef ZEPHYR_FETCH_H
#define ZEPHYR_FETCH_H

#include <curl/curl.h>
#include <uv.h>

struct fetch;
struct fetch_xfer;

typedef void (*fetch_done_cb)(struct fetch_xfer *x, CURLcode rc);

struct fetch_xfer {
    CURL *easy; /* borrows while added; the owner frees it */
    fetch_done_cb done;
    int added; /* set while the easy handle is in the multi */
};

/* NULL when libcurl cannot be loaded (see curlso.h). */
struct fetch *fetch_new(uv_loop_t *loop);
/* Closes the multi handle and the loop timer; the struct is freed once the
 * timer is closed.  Remove every transfer first. NULL is a no-op. */
void fetch_free(struct fetch *f);

/* An easy handle with the options every transfer shares: the share
 * handle, no signals, TCP_NODELAY, keep-alive probes.  Reuses one given
 * back with fetch_easy_put() when there is one. */
CURL *fetch_easy_new(struct fetch *f); /* NULL: out of libcurl's reach */

/* Gives an easy handle back for reuse (it is reset; its connections stay
 * in the multi handle's pool either way).  The handle must not be added. */
void fetch_easy_put(struct fetch *f, CURL *easy);

/* Starts x->easy; returns 0, or -1 if curl refused it. */
int fetch_add(struct fetch *f, struct fetch_xfer *x);
/* Stops x->easy if it is running; safe to call when it is not. */
void fetch_remove(struct fetch *f, struct fetch_xfer *x);

#endif
