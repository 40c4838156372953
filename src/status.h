/*
 * status: renders the proxy's state as the /status JSON document (see the
 * README for the schema).  The terminal dashboard, the web page and
 * monitor.sh all read this same document; nothing else reaches into the
 * proxy's internals to show it to a person.  Pure: the clocks and the
 * listen address are passed in.  Tokens are never part of it.
 */
#ifndef ZEPHYR_STATUS_H
#define ZEPHYR_STATUS_H

#include <cjson/cJSON.h>
#include <stdint.h>

struct state_snapshot;

struct status_info {
    const char *version;
    const char *listen; /* "127.0.0.1:8080" */
    uint64_t now_mono_ms;
    uint64_t now_wall_ms;
};

/* A new cJSON object; the caller deletes it.  st is a snapshot taken at
 * info->now_mono_ms (state_snapshot_take), as metrics_render() reads one. */
cJSON *status_render(const struct state_snapshot *st, const struct status_info *info);

#endif
