/*
 * dashboard: the full-screen terminal dashboard (ncurses).
 *
 * It shows what the /status document says and acts through the admin
 * operations, nothing else: in the proxy's own process it reads the
 * document through dash_source.status() and acts through
 * dash_source.admin(); attached to a proxy already running
 * (--dashboard --connect URL, remote.c) the document comes from the
 * network.
 * In-process it runs on the proxy's loop (a redraw timer and a poll on
 * stdin), so the proxy keeps serving while it draws.
 */
#ifndef ZEPHYR_DASHBOARD_H
#define ZEPHYR_DASHBOARD_H

#include <cjson/cJSON.h>
#include <uv.h>

struct dashboard;

struct dash_source {
    void *ud;
    /* A new /status document; the dashboard deletes it. */
    cJSON *(*status)(void *ud);
    /* Runs an admin operation ("check", "pause", "resume", "mode", "pin",
     * "group") with a JSON body (may be NULL); returns 0 or -1 with a
     * message in err, or 1 when the outcome comes later through
     * dashboard_admin_done() (a proxy elsewhere answers over the network,
     * and the screen must not wait for it). */
    int (*admin)(void *ud, const char *op, const cJSON *body, char *err, size_t errlen);
    /* The operator asked to quit (q, Q, Ctrl-C, or the terminal hung up).
     * Called again on a second Ctrl-C while requests drain: quit now. */
    void (*quit)(void *ud);
};

/* Takes over the terminal; returns NULL (and leaves the terminal alone) if
 * stdin/stdout is not a terminal.  lang is "en" or "zh". */
struct dashboard *dashboard_new(uv_loop_t *loop, const struct dash_source *src, const char *lang);
/* Something changed: redraw soon (coalesced). */
void dashboard_notify(struct dashboard *d);
/* Restores the terminal and frees the dashboard once its handles close. */
void dashboard_free(struct dashboard *d);
/* Optional: one log line for the dashboard's log panel (key l); the last
 * 200 are kept.  Meant for a log hook while stderr is quiet; d may be NULL. */
void dashboard_log(struct dashboard *d, const char *line);

/* The outcome of an operation whose admin() returned 1: err NULL when it
 * was done (the message line says what), else what went wrong. */
void dashboard_admin_done(struct dashboard *d, const char *err);
/* For a source that fetches the document from a proxy elsewhere (remote.c):
 * the proxy's URL, and why there is no fresh document (NULL: there is one).
 * Both strings are borrowed until they are set again or d is freed. */
void dashboard_set_remote(struct dashboard *d, const char *url);
void dashboard_set_error(struct dashboard *d, const char *error);

#endif
