/*
 * demo: the built-in demo.  Starts three simulated endpoints (the fake
 * upstream of fakeup.c) of different speeds on 127.0.0.1, in the proxy's
 * own loop, and builds a configuration that points at them.  Every 40
 * seconds the speeds rotate, and now and then one endpoint is overloaded
 * for a while, so a newcomer watches the proxy measure, switch and fail
 * over without an API key.
 */
#ifndef ZEPHYR_DEMO_H
#define ZEPHYR_DEMO_H

#include <uv.h>

struct demo;
struct config;

/* Returns NULL if the upstreams cannot listen; sets *cfg on success. */
struct demo *demo_start(uv_loop_t *loop, struct config **cfg);
/* Logs how to try the demo once the proxy listens. */
void demo_announce(struct demo *d, const char *listen);
void demo_free(struct demo *d);

#endif
