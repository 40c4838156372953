/*
 * usage: see usage.h.  Each call parses one JSON text with cJSON and frees
 * it before returning; only message_start, message_delta and error events
 * are parsed at all, so content deltas cost a name comparison.
 */
#include "usage.h"

#include "util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

/* A token count: a finite, non-negative number that fits a long long. */
static bool get_count(const cJSON *obj, const char *key, long long *out)
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

/* Copies a string from a reply into dst (size > 0): truncated at a UTF-8
 * boundary, control characters replaced, always NUL-terminated. */
static void copy_text(char *dst, size_t size, const char *src)
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

/* Latest non-zero wins: a present, non-zero count replaces the old one. */
static bool merge_count(const cJSON *usage, const char *key, long long *field)
{
    long long v;
    if (!get_count(usage, key, &v) || v == 0 || v == *field)
        return false;
    *field = v;
    return true;
}

static bool merge_model(const cJSON *obj, struct usage *u)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, "model");
    if (!cJSON_IsString(m) || m->valuestring[0] == '\0')
        return false;
    char tmp[sizeof u->model];
    copy_text(tmp, sizeof tmp, m->valuestring);
    if (strcmp(tmp, u->model) == 0)
        return false;
    memcpy(u->model, tmp, sizeof tmp);
    return true;
}

static bool merge_usage(const cJSON *usage, struct usage *u)
{
    bool changed = false;
    if (!cJSON_IsObject(usage))
        return false;
    changed |= merge_count(usage, "input_tokens", &u->input);
    changed |= merge_count(usage, "output_tokens", &u->output);
    changed |= merge_count(usage, "cache_read_input_tokens", &u->cache_read);
    changed |= merge_count(usage, "cache_creation_input_tokens", &u->cache_creation);
    return changed;
}

/* Parses exactly len bytes as one JSON text; trailing bytes other than
 * whitespace make it fail, which cJSON_ParseWithLength() would allow. */
static cJSON *parse_exact(const char *p, size_t len)
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

static bool name_is(const struct sse_event *ev, const char *name)
{
    size_t n = strlen(name);
    return ev->name_len == n && memcmp(ev->name, name, n) == 0;
}

int usage_from_message_json(const char *json, size_t len, struct usage *u)
{
    int rc = -1;
    struct usage fresh = {0};
    cJSON *root = parse_exact(json, len);
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
    if (!cJSON_IsObject(root) || !cJSON_IsObject(usage))
        goto out;
    get_count(usage, "input_tokens", &fresh.input);
    get_count(usage, "output_tokens", &fresh.output);
    get_count(usage, "cache_read_input_tokens", &fresh.cache_read);
    get_count(usage, "cache_creation_input_tokens", &fresh.cache_creation);
    merge_model(root, &fresh);
    *u = fresh;
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}

int usage_from_sse_event(const struct sse_event *ev, struct usage *u)
{
    bool start = name_is(ev, "message_start");
    if (!start && !name_is(ev, "message_delta"))
        return 0;
    cJSON *root = parse_exact(ev->data, ev->data_len);
    if (!root)
        return 0;
    bool changed = false;
    if (start) {
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(root, "message");
        if (cJSON_IsObject(msg)) {
            changed |= merge_usage(cJSON_GetObjectItemCaseSensitive(msg, "usage"), u);
            changed |= merge_model(msg, u);
        }
    } else {
        changed |= merge_usage(cJSON_GetObjectItemCaseSensitive(root, "usage"), u);
    }
    cJSON_Delete(root);
    return changed ? 1 : 0;
}

bool usage_is_error_event(const struct sse_event *ev, char *type, size_t typelen)
{
    if (!name_is(ev, "error"))
        return false;
    if (typelen == 0)
        return true;
    type[0] = '\0';
    cJSON *root = parse_exact(ev->data, ev->data_len);
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(err, "type");
    if (cJSON_IsString(t))
        copy_text(type, typelen, t->valuestring);
    cJSON_Delete(root);
    return true;
}
