/*
 * hdr: see hdr.h.  Table-free byte checks; the only state is the caller's
 * input, the only allocations are the string hdr_url_join() returns and the
 * caller's buffer hdr_resp_filter() appends to.
 */
#include "hdr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>

#include "util.h"

static bool is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_tchar(unsigned char c)
{
    return is_alpha(c) || is_digit(c) || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Visible ASCII: what a URI may contain once percent-encoded. */
static bool is_vchar(unsigned char c)
{
    return c > 0x20 && c < 0x7f;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static unsigned char ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

/* ASCII case-insensitive equality of n bytes; unlike strncasecmp() it does
 * not stop at a NUL, which a view from the wire may contain. */
static bool mem_ieq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ascii_lower((unsigned char)a[i]) != ascii_lower((unsigned char)b[i]))
            return false;
    return true;
}

bool hdr_name_valid(const char *name, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!is_tchar((unsigned char)name[i]))
            return false;
    return true;
}

bool hdr_value_valid(const char *v, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

bool hdr_is_hop_by_hop(const char *name, size_t len)
{
    static const char *const names[] = {
        "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (len == strlen(names[i]) && mem_ieq(name, names[i], len))
            return true;
    /* proxy-connection, proxy-authenticate, proxy-authorization and any
     * other proxy-* header are meant for this hop only. */
    return len >= 6 && mem_ieq(name, "proxy-", 6);
}

bool hdr_connection_lists(const char *conn_value, size_t conn_len, const char *name, size_t len)
{
    size_t i = 0;
    while (i < conn_len) {
        while (i < conn_len && (is_ows(conn_value[i]) || conn_value[i] == ','))
            i++;
        size_t start = i;
        while (i < conn_len && conn_value[i] != ',')
            i++;
        size_t end = i;
        while (end > start && is_ows(conn_value[end - 1]))
            end--;
        if (end > start && end - start == len && mem_ieq(conn_value + start, name, len))
            return true;
    }
    return false;
}

bool hdr_is_credential(const char *name, size_t len)
{
    return (len == 9 && mem_ieq(name, "x-api-key", 9)) ||
           (len == 13 && mem_ieq(name, "authorization", 13));
}

/* A bracketed IPv6 literal "[...]" that inet_pton() accepts; no zone id. */
static bool ipv6_literal_valid(const char *p, size_t len)
{
    char tmp[INET6_ADDRSTRLEN];
    struct in6_addr addr;
    if (len < 4 || p[0] != '[' || p[len - 1] != ']' || len - 2 >= sizeof tmp)
        return false;
    memcpy(tmp, p + 1, len - 2);
    tmp[len - 2] = '\0';
    return inet_pton(AF_INET6, tmp, &addr) == 1;
}

static bool reg_name_valid(const char *p, size_t len)
{
    if (len == 0 || len > 253)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '.' && c != '_')
            return false;
    }
    return true;
}

int hdr_url_split(const char *url, struct hdr_url *out)
{
    const char *p;
    if (strncasecmp(url, "http://", 7) == 0) {
        out->scheme = HDR_SCHEME_HTTP;
        out->port = 80;
        p = url + 7;
    } else if (strncasecmp(url, "https://", 8) == 0) {
        out->scheme = HDR_SCHEME_HTTPS;
        out->port = 443;
        p = url + 8;
    } else {
        return -1;
    }
    out->port_explicit = false;

    /* The host runs to the port colon or the first slash; an IPv6 literal
     * has colons of its own, so it runs to its closing bracket. */
    const char *host = p;
    if (*p == '[') {
        const char *close = strchr(p, ']');
        if (!close)
            return -1;
        p = close + 1;
        if (!ipv6_literal_valid(host, (size_t)(p - host)))
            return -1;
    } else {
        while (*p && *p != ':' && *p != '/')
            p++;
        if (!reg_name_valid(host, (size_t)(p - host)))
            return -1;
    }
    out->host = host;
    out->host_len = (size_t)(p - host);

    if (*p == ':') {
        p++;
        unsigned port = 0;
        size_t digits = 0;
        while (is_digit((unsigned char)*p)) {
            if (++digits > 5)
                return -1;
            port = port * 10 + (unsigned)(*p - '0');
            p++;
        }
        if (digits == 0 || port == 0 || port > 65535)
            return -1;
        out->port = port;
        out->port_explicit = true;
    }

    if (*p != '\0' && *p != '/')
        return -1;
    const char *prefix = p;
    for (; *p; p++)
        if (!is_vchar((unsigned char)*p) || *p == '?' || *p == '#')
            return -1;
    size_t prefix_len = (size_t)(p - prefix);
    while (prefix_len > 0 && prefix[prefix_len - 1] == '/')
        prefix_len--;
    out->prefix = prefix;
    out->prefix_len = prefix_len;
    return 0;
}

char *hdr_url_join(const char *endpoint_url, const char *path_and_query)
{
    struct hdr_url u;
    if (hdr_url_split(endpoint_url, &u) < 0)
        return NULL;
    size_t tlen = strlen(path_and_query);
    if (!hdr_target_valid(path_and_query, tlen))
        return NULL;
    /* The prefix view ends inside endpoint_url, so everything before its
     * end is scheme, host and port exactly as configured. */
    size_t base_len = (size_t)(u.prefix - endpoint_url) + u.prefix_len;
    char *s = xmalloc(base_len + tlen + 1);
    memcpy(s, endpoint_url, base_len);
    memcpy(s + base_len, path_and_query, tlen + 1);
    return s;
}

bool hdr_target_valid(const char *target, size_t len)
{
    if (len == 0 || target[0] != '/')
        return false;
    for (size_t i = 0; i < len; i++)
        if (!is_vchar((unsigned char)target[i]) || target[i] == '#')
            return false;
    return true;
}

int hdr_content_length_parse(const char *v, size_t len, long long *out)
{
    /* 18 digits cannot overflow a long long; no reply is that large. */
    if (len == 0 || len > 18)
        return -1;
    long long n = 0;
    for (size_t i = 0; i < len; i++) {
        if (!is_digit((unsigned char)v[i]))
            return -1;
        n = n * 10 + (v[i] - '0');
    }
    *out = n;
    return 0;
}

/* Whether name is listed by any Connection field of the head. */
static bool listed_by_connection(const struct hdr_field *f, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (f[i].name_len == 10 && mem_ieq(f[i].name, "connection", 10) &&
            hdr_connection_lists(f[i].value, f[i].value_len, name, len))
            return true;
    return false;
}

static int resp_refuse(struct hdr_resp *r, const char *why)
{
    r->why = why;
    return -1;
}

int hdr_resp_filter(int status, const struct hdr_field *f, size_t n, struct buf *out,
                    struct hdr_resp *r)
{
    r->content_length = -1;
    r->chunked = false;
    r->is_sse = r->is_json = false;
    r->why = NULL;
    if (status == 101)
        return resp_refuse(r, "unexpected 101 Switching Protocols");
    if (status < 200 || status > 999)
        return resp_refuse(r, "not a final status");
    /* First the framing, from every field, so that the order of the
     * fields cannot change the decision. */
    bool has_te = false, has_conn = false;
    for (size_t i = 0; i < n; i++) {
        const struct hdr_field *h = &f[i];
        has_conn |= h->name_len == 10 && mem_ieq(h->name, "connection", 10);
        if (!hdr_name_valid(h->name, h->name_len) || !hdr_value_valid(h->value, h->value_len))
            return resp_refuse(r, "malformed header");
        if (h->name_len == 14 && mem_ieq(h->name, "content-length", 14)) {
            if (r->content_length >= 0)
                return resp_refuse(r, "more than one Content-Length");
            if (hdr_content_length_parse(h->value, h->value_len, &r->content_length) != 0) {
                r->content_length = -1;
                return resp_refuse(r, "malformed Content-Length");
            }
        } else if (h->name_len == 17 && mem_ieq(h->name, "transfer-encoding", 17)) {
            if (has_te)
                return resp_refuse(r, "more than one Transfer-Encoding");
            has_te = true;
            if (h->value_len != 7 || !mem_ieq(h->value, "chunked", 7))
                return resp_refuse(r, "a Transfer-Encoding other than chunked");
        }
    }
    if (has_te && r->content_length >= 0)
        return resp_refuse(r, "both Content-Length and Transfer-Encoding");
    r->chunked = has_te;

    for (size_t i = 0; i < n; i++) {
        const struct hdr_field *h = &f[i];
        if ((h->name_len == 14 && mem_ieq(h->name, "content-length", 14)) ||
            hdr_is_hop_by_hop(h->name, h->name_len) ||
            (h->name_len >= 9 && mem_ieq(h->name, "x-zephyr-", 9)) ||
            (has_conn && listed_by_connection(f, n, h->name, h->name_len)))
            continue;
        if (h->name_len == 12 && mem_ieq(h->name, "content-type", 12)) {
            if (h->value_len >= 17 && mem_ieq(h->value, "text/event-stream", 17))
                r->is_sse = true;
            else if (h->value_len >= 16 && mem_ieq(h->value, "application/json", 16))
                r->is_json = true;
        }
        if (buf_append(out, h->name, h->name_len) != 0 || buf_append(out, ": ", 2) != 0 ||
            buf_append(out, h->value, h->value_len) != 0 || buf_append(out, "\r\n", 2) != 0)
            return resp_refuse(r, "response headers too large");
    }
    return 0;
}

const char *hdr_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 529: return "Site Overloaded";
    default: return "Status";
    }
}
