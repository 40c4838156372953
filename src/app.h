/*
 * app: the running proxy.  Owns the loop's long-lived objects (the state,
 * the libcurl driver, the listener, the proxy, the health checker, the
 * signal watchers, the optional demo upstreams and dashboard), routes each
 * request to the proxy's own paths or to the proxy, and runs the graceful
 * shutdown.
 */
#ifndef ZEPHYR_APP_H
#define ZEPHYR_APP_H

#include <stdbool.h>

#include "version.h" /* ZEPHYR_VERSION, for main.c and app.c */

struct config;

struct app_opts {
    int port;                /* --port, or -1 */
    const char *bind;        /* --bind, or NULL */
    const char *log_level;   /* --log-level, or NULL */
    bool dashboard;          /* --dashboard: full-screen terminal UI */
    bool demo;               /* run the built-in demo upstreams */
    const char *config_path; /* for reload; NULL in demo mode */
};

/* Runs until shut down; takes ownership of cfg.  Returns the exit code. */
int app_run(struct config *cfg, const struct app_opts *opts);

#endif
