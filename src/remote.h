/*
 * remote: the terminal dashboard attached to a proxy already running
 * (--dashboard --connect URL).  See remote.c.
 */
#ifndef ZEPHYR_REMOTE_H
#define ZEPHYR_REMOTE_H

#include <uv.h>

struct remote;

/*
 * Takes over the terminal and starts watching the proxy at url (scheme
 * optional, "/status" optional) on loop.  admin_key (may be NULL, borrowed)
 * is sent with operations, $ZEPHYR_ACCESS_KEY with every request.
 * on_quit(ud) is called when the operator asks to quit (q, Ctrl-C, the
 * terminal hung up); the caller then calls remote_free().  Returns NULL,
 * with a line on stderr, when there is no terminal to take over.  The
 * caller owns the loop and the signals.
 */
struct remote *remote_new(uv_loop_t *loop, const char *url, const char *admin_key,
                          void (*on_quit)(void *ud), void *ud);

/* Restores the terminal, aborts what is running and frees r once its
 * handles have closed (NULL, or a second call: no-op). */
void remote_free(struct remote *r);

#endif
