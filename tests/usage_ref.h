/*
 * The reference for the usage reader's differential tests (unit test and
 * fuzz target): usage_from_message_json() as it was before the incremental
 * reader, with cJSON, kept verbatim so both compare against one copy.
 * Header-only (static functions): each test program includes it once.
 */
#ifndef ZEPHYR_TESTS_USAGE_REF_H
#define ZEPHYR_TESTS_USAGE_REF_H

#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "usage.h"
#include "util.h"

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

/* A struct usage neither reader would write, to see that -1 leaves it. */
static void sentinel(struct usage *u)
{
    memset(u, 0, sizeof *u);
    u->input = -1;
    u->output = -2;
    u->cache_read = -3;
    u->cache_creation = -4;
    strcpy(u->model, "sentinel");
}

#endif
