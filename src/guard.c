/*
 * guard: see guard.h.
 *
 * A Host value is "name[:port]" or "[IPv6]:port"; the name is classified
 * once as an IPv4 literal, an IPv6 literal (only in brackets) or a DNS name,
 * and compared with each accepted name of the same class: addresses as
 * bytes, names case-insensitively and whole.  A value that is none of these
 * (two colons without brackets, an empty or non-numeric port, odd
 * characters) is refused: browsers never send one.
 */
#include "guard.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <string.h>
#include <strings.h>

enum guard_kind {
    GUARD_NAME = 0,
    GUARD_V4 = 1,
    GUARD_V6 = 2,
};

/* A host name without port, classified.  Names longer than a DNS name can
 * be are refused before they get here. */
struct guard_host {
    enum guard_kind kind;
    unsigned char addr[16];
    char name[256]; /* GUARD_NAME: NUL-terminated */
};

static bool guard_name_chars_ok(const char *s, size_t n)
{
    if (n == 0 || n > 253)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!(isalnum(ch) || ch == '-' || ch == '.' || ch == '_'))
            return false;
    }
    return true;
}

/* Classifies s (n bytes, no port).  bracketed: s came inside [ ], which
 * only an IPv6 literal may.  Returns false for what is no host at all. */
static bool guard_classify(const char *s, size_t n, bool bracketed, struct guard_host *out)
{
    char tmp[256];
    if (n == 0 || n >= sizeof tmp)
        return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    if (bracketed) {
        out->kind = GUARD_V6;
        return inet_pton(AF_INET6, tmp, out->addr) == 1;
    }
    if (inet_pton(AF_INET, tmp, out->addr) == 1) {
        out->kind = GUARD_V4;
        return true;
    }
    if (!guard_name_chars_ok(s, n))
        return false;
    out->kind = GUARD_NAME;
    memcpy(out->name, tmp, n + 1);
    return true;
}

/* A configured or built-in name: "localhost", "127.0.0.1", "::1" or
 * "[::1]". */
static bool guard_classify_entry(const char *s, struct guard_host *out)
{
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']')
        return guard_classify(s + 1, n - 2, true, out);
    if (strchr(s, ':'))
        return guard_classify(s, n, true, out);
    return guard_classify(s, n, false, out);
}

static bool guard_same(const struct guard_host *a, const char *entry)
{
    struct guard_host b;
    if (!guard_classify_entry(entry, &b) || a->kind != b.kind)
        return false;
    if (a->kind == GUARD_NAME)
        return strcasecmp(a->name, b.name) == 0;
    return memcmp(a->addr, b.addr, a->kind == GUARD_V4 ? 4 : 16) == 0;
}

/* Splits a Host value into its name, checking the optional port. */
static bool guard_parse_host(const char *v, size_t len, struct guard_host *out)
{
    const char *end = v + len;
    const char *name = v, *name_end, *port = NULL;
    bool bracketed = false;
    if (len && v[0] == '[') {
        const char *close = memchr(v, ']', len);
        if (!close)
            return false;
        name = v + 1;
        name_end = close;
        bracketed = true;
        if (close + 1 < end) {
            if (close[1] != ':')
                return false;
            port = close + 2;
        }
    } else {
        const char *colon = memchr(v, ':', len);
        name_end = colon ? colon : end;
        if (colon) {
            if (memchr(colon + 1, ':', (size_t)(end - colon - 1)))
                return false;
            port = colon + 1;
        }
    }
    if (port) {
        if (port == end || end - port > 5)
            return false;
        unsigned long p = 0;
        for (const char *q = port; q < end; q++) {
            if (!isdigit((unsigned char)*q))
                return false;
            p = p * 10 + (unsigned long)(*q - '0');
        }
        if (p > 65535)
            return false;
    }
    return guard_classify(name, (size_t)(name_end - name), bracketed, out);
}

bool guard_host_ok(const struct config *cfg, const char *host, size_t len)
{
    if (!host_is_loopback(cfg->bind))
        return true; /* the access key protects every path; see guard.h */
    struct guard_host h;
    if (!guard_parse_host(host, len, &h))
        return false;
    static const char *const builtin[] = {"localhost", "127.0.0.1", "::1"};
    for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++)
        if (guard_same(&h, builtin[i]))
            return true;
    if (guard_same(&h, cfg->bind))
        return true;
    for (size_t i = 0; i < cfg->n_allowed_hosts; i++)
        if (guard_same(&h, cfg->allowed_hosts[i]))
            return true;
    return false;
}

/* Whether origin is scheme "://" host with scheme http or https. */
static bool guard_own_origin(const char *origin, size_t olen, const char *host, size_t hlen)
{
    static const char *const schemes[] = {"http://", "https://"};
    for (size_t i = 0; i < 2; i++) {
        size_t sl = strlen(schemes[i]);
        if (olen == sl + hlen && strncasecmp(origin, schemes[i], sl) == 0 &&
            strncasecmp(origin + sl, host, hlen) == 0)
            return true;
    }
    return false;
}

enum guard_verdict guard_check(const struct config *cfg, const char *host, size_t host_len,
                               const char *origin, size_t origin_len)
{
    if (host ? !guard_host_ok(cfg, host, host_len) : host_is_loopback(cfg->bind))
        return GUARD_BAD_HOST;
    if (!origin)
        return GUARD_PASS;
    if (host && host_len && guard_own_origin(origin, origin_len, host, host_len))
        return GUARD_PASS;
    for (size_t i = 0; i < cfg->n_allowed_origins; i++)
        if (strn_ieq(origin, origin_len, cfg->allowed_origins[i]))
            return GUARD_PASS;
    return GUARD_BAD_ORIGIN;
}

bool guard_key_eq(const char *given, size_t len, const char *secret)
{
    /* j walks the secret but stops on its NUL, so the loop runs len times
     * whatever the secret's length, and never reads past it.  A header
     * value holds no NUL, so a secret shorter than given differs at its
     * NUL; one longer is caught by secret[j] != 0 at the end. */
    size_t j = 0;
    unsigned diff = len == 0;
    for (size_t i = 0; i < len; i++) {
        unsigned s = (unsigned char)secret[j];
        unsigned g = (unsigned char)given[i];
        diff |= g ^ s;
        diff |= (g + 0xffu) >> 8 ^ 1u; /* 1 when g is NUL */
        j += (s + 0xffu) >> 8;         /* 1 while s is not NUL */
    }
    diff |= (unsigned char)secret[j];
    return diff == 0;
}

const char *guard_host_entry_problem(const char *s)
{
    static const char *const form =
        "must be a host name or IP address without scheme, port or path, e.g. \"zephyr.lan\" "
        "or \"192.168.1.20\" (requests may add any port)";
    struct guard_host h;
    if (strcmp(s, "*") == 0)
        return "\"*\" is not supported; list the names this proxy is reached by, e.g. "
               "\"zephyr.lan\"";
    if (strchr(s, '/'))
        return form;
    size_t n = strlen(s);
    if (s[0] == '[' && (n < 2 || s[n - 1] != ']'))
        return form;
    if (s[0] != '[' && strchr(s, ':') && !guard_classify(s, n, true, &h))
        return form;
    if (!guard_classify_entry(s, &h))
        return "is not a host name (letters, digits, '-', '.', '_') or an IP address; write "
               "e.g. \"zephyr.lan\" or \"192.168.1.20\"";
    return NULL;
}

const char *guard_origin_entry_problem(const char *s)
{
    if (strcmp(s, "*") == 0 || strcasecmp(s, "null") == 0)
        return "wildcards and \"null\" are not supported; list each origin, e.g. "
               "\"http://localhost:3000\"";
    const char *sep = strstr(s, "://");
    if (!sep || sep == s)
        return "must be scheme://host[:port], e.g. \"http://localhost:3000\"";
    for (const char *p = s; p < sep; p++)
        if (!(isalnum((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.'))
            return "must be scheme://host[:port], e.g. \"http://localhost:3000\"";
    const char *rest = sep + 3;
    if (*rest == '\0')
        return "has no host; write e.g. \"http://localhost:3000\"";
    for (const char *p = rest; *p; p++) {
        if (*p == '/')
            return "must not have a path or trailing slash; an origin is scheme://host[:port], "
                   "e.g. \"http://localhost:3000\"";
        if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '?' || *p == '#' || *p == '@')
            return "must be scheme://host[:port] without spaces, query, fragment or "
                   "credentials, e.g. \"http://localhost:3000\"";
    }
    return NULL;
}

static bool guard_token_list_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!(isalnum(ch) || ch == '-' || ch == '_' || ch == ',' || ch == ' '))
            return false;
    }
    return true;
}

void guard_preflight_headers(struct buf *out, const char *origin, size_t origin_len,
                             const char *req_headers, size_t req_headers_len)
{
    buf_append_str(out, "Access-Control-Allow-Origin: ");
    buf_append(out, origin, origin_len);
    buf_append_str(out, "\r\nAccess-Control-Allow-Methods: GET, POST, PUT, PATCH, DELETE\r\n");
    if (req_headers && req_headers_len && req_headers_len <= 1024 &&
        guard_token_list_ok(req_headers, req_headers_len)) {
        buf_append_str(out, "Access-Control-Allow-Headers: ");
        buf_append(out, req_headers, req_headers_len);
        buf_append_str(out, "\r\n");
    }
    buf_append_str(out, "Access-Control-Max-Age: 600\r\nVary: Origin\r\n");
}
