/*
 * libFuzzer target for the incremental reply reader in usage (struct
 * usage_json): a differential check against the cJSON reader it replaced.
 * The first byte seeds how the reply is cut; the rest is the reply.  The
 * reader, fed whole, in pieces of 1..64 bytes and (when short) one byte at a
 * time, must give the same return value and the same struct usage, field for
 * field, as the cJSON version below (a copy of what usage.c did before), and
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The reference: usage_from_message_json() as it was, with cJSON. */
static bool ref_get_count(const cJSON *obj, const char *key, long long *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(it))
        return false;
    double d = it->valuedouble;
    if (!isfinite(d) || d < 0 || d >= 9.0e18)
        return false;
    *out = (long long)d;
    return true;
}

static void ref_copy_text(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);
    if (n >= size)
        n = utf8_cut(src, size - 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    dst[n] = '\0';
}

static void ref_merge_model(const cJSON *obj, struct usage *u)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, "model");
    if (!cJSON_IsString(m) || m->valuestring[0] == '\0')
        return;
    char tmp[sizeof u->model];
    ref_copy_text(tmp, sizeof tmp, m->valuestring);
    if (strcmp(tmp, u->model) == 0)
        return;
    memcpy(u->model, tmp, sizeof tmp);
}

static cJSON *ref_parse_exact(const char *p, size_t len)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(p, len, &end, false);
    if (!root)
        return NULL;
    for (size_t i = (size_t)(end - p); i < len; i++) {
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n') {
            cJSON_Delete(root);
            return NULL;
        }
    }
    return root;
}

static int ref_from_message_json(const char *json, size_t len, struct usage *u)
{
    int rc = -1;
    struct usage fresh = {0};
    cJSON *root = ref_parse_exact(json, len);
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
    if (!cJSON_IsObject(root) || !cJSON_IsObject(usage))
        goto out;
    ref_get_count(usage, "input_tokens", &fresh.input);
    ref_get_count(usage, "output_tokens", &fresh.output);
    ref_get_count(usage, "cache_read_input_tokens", &fresh.cache_read);
    ref_get_count(usage, "cache_creation_input_tokens", &fresh.cache_creation);
    ref_merge_model(root, &fresh);
    *u = fresh;
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}

/* A struct usage that is not what either reader would write. */
static void sentinel(struct usage *u)
{
    memset(u, 0, sizeof *u);
    u->input = -1;
    u->output = -2;
    u->cache_read = -3;
    u->cache_creation = -4;
    strcpy(u->model, "sentinel");
}

/* Field by field: the cJSON version leaves stack garbage after the model's
 * terminator (it copies the whole temporary), so the bytes there differ. */
static void same(int rc_ref, const struct usage *ref, int rc, const struct usage *u, const char *how)
{
    struct usage untouched;
    sentinel(&untouched);
    if (rc == rc_ref && ref->input == u->input && ref->output == u->output && ref->cache_read == u->cache_read &&
        ref->cache_creation == u->cache_creation && strcmp(ref->model, u->model) == 0 &&
        (rc == 0 || memcmp(u, &untouched, sizeof *u) == 0))
        return;
    fprintf(stderr, "fuzz_usage: %s: cJSON %d in=%lld out=%lld cr=%lld cc=%lld model=\"%s\"\n", how, rc_ref,
            ref->input, ref->output, ref->cache_read, ref->cache_creation, ref->model);
    fprintf(stderr, "fuzz_usage: %s: scan  %d in=%lld out=%lld cr=%lld cc=%lld model=\"%s\"\n", how, rc,
            u->input, u->output, u->cache_read, u->cache_creation, u->model);
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
