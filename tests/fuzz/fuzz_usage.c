/*
 * libFuzzer target for the incremental reply reader in usage (struct
 * usage_json): a differential check against the cJSON reader it replaced.
 * The first byte seeds how the reply is cut; the rest is the reply.  The
 * reader, fed whole, in pieces of 1..64 bytes and (when short) one byte at a
 * time, must give the same return value and the same struct usage, field for
 * field, as the cJSON version in tests/usage_ref.h (what usage.c did before), and
 * must leave a struct usage alone when it returns -1.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "usage.h"
#include "util.h"

#include "../usage_ref.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Field by field: the cJSON version leaves stack garbage after the model's
 * terminator (it copies the whole temporary), so the bytes there differ. */
static void same(int rc_ref, const struct usage *ref, int rc, const struct usage *u,
                 const char *how)
{
    struct usage untouched;
    sentinel(&untouched);
    if (rc == rc_ref && ref->input == u->input && ref->output == u->output &&
        ref->cache_read == u->cache_read && ref->cache_creation == u->cache_creation &&
        strcmp(ref->model, u->model) == 0 && (rc == 0 || memcmp(u, &untouched, sizeof *u) == 0))
        return;
    fprintf(stderr, "fuzz_usage: %s: cJSON %d in=%lld out=%lld cr=%lld cc=%lld model=\"%s\"\n", how,
            rc_ref, ref->input, ref->output, ref->cache_read, ref->cache_creation, ref->model);
    fprintf(stderr, "fuzz_usage: %s: scan  %d in=%lld out=%lld cr=%lld cc=%lld model=\"%s\"\n", how,
            rc, u->input, u->output, u->cache_read, u->cache_creation, u->model);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned seed = data[0];
    /* A copy of exactly the reply, so that reading past it is caught. */
    size_t n = size - 1;
    char *p = xmalloc(n ? n : 1);
    memcpy(p, data + 1, n);

    struct usage ref, u;
    struct usage_json s;
    sentinel(&ref);
    int rc_ref = ref_from_message_json(p, n, &ref);

    sentinel(&u);
    same(rc_ref, &ref, usage_from_message_json(p, n, &u), &u, "whole");

    sentinel(&u);
    usage_json_init(&s);
    for (size_t at = 0; at < n;) {
        seed = seed * 1103515245u + 12345u;
        size_t len = (seed >> 16) % 65; /* empty pieces too */
        if (len > n - at)
            len = n - at;
        usage_json_feed(&s, p + at, len);
        at += len;
    }
    same(rc_ref, &ref, usage_json_finish(&s, &u), &u, "pieces");

    if (n <= 4096) {
        sentinel(&u);
        usage_json_init(&s);
        for (size_t i = 0; i < n; i++)
            usage_json_feed(&s, p + i, 1);
        same(rc_ref, &ref, usage_json_finish(&s, &u), &u, "bytes");
    }
    free(p);
    return 0;
}
