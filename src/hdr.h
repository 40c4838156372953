/*
 * hdr: the HTTP header and URL rules the proxy applies on its own, because
 * llhttp 8.1 is lenient (it accepts a space before the colon and folded
 * header lines) and because endpoint URLs come from a config file.
 *
 * Everything here is pure: no I/O, no state, no allocation except
 * hdr_url_join() and the caller's buffer hdr_resp_filter() appends to.  Names and values are views (pointer + length) into the
 * parser's buffer and need not be NUL-terminated; URLs and request targets
 * are C strings.
 *
 * Limits: endpoint URLs are deliberately narrow (http or https, a host, an
 * optional port, an optional path prefix; no userinfo, query, fragment or
 * IPv6 zone id), and request targets must be origin-form.  Anything wider is
 * refused rather than half-understood.
 */
#ifndef ZEPHYR_HDR_H
#define ZEPHYR_HDR_H

#include <stdbool.h>
#include <stddef.h>

/*
 * True when name is a non-empty RFC 9110 token (ALPHA, DIGIT and
 * "!#$%&'*+-.^_`|~").  A name with a space before the colon, which llhttp
 * lets through, fails here.
 */
bool hdr_name_valid(const char *name, size_t len);

/*
 * True when v may be forwarded as a field value: no CR, LF or NUL, no other
 * control character (0x00-0x1F, 0x7F) except HTAB; obs-text (0x80-0xFF) is
 * allowed.  An empty value is valid.  Leading and trailing whitespace is not
 * judged here: the parser has already trimmed it.
 */
bool hdr_value_valid(const char *v, size_t len);

/*
 * True when name (case-insensitive) is a hop-by-hop header that a proxy
 * must not forward: connection, keep-alive, te, trailer, transfer-encoding,
 * upgrade, and every name starting with "proxy-" (proxy-connection,
 * proxy-authenticate, proxy-authorization, ...).  Names listed in the
 * request's Connection header are hop-by-hop too; see
 * hdr_connection_lists().
 */
bool hdr_is_hop_by_hop(const char *name, size_t len);

/*
 * True when the Connection header value conn_value (a comma-separated list,
 * optional whitespace around items, empty items allowed) names name,
 * compared case-insensitively.  Call once per Connection header line when a
 * request has several.
 */
bool hdr_connection_lists(const char *conn_value, size_t conn_len, const char *name, size_t len);

/*
 * True when name (case-insensitive) carries a client credential that the
 * proxy replaces with the endpoint's own: x-api-key and authorization.
 */
bool hdr_is_credential(const char *name, size_t len);

enum hdr_scheme {
    HDR_SCHEME_HTTP = 0,
    HDR_SCHEME_HTTPS = 1,
};

/* An endpoint URL taken apart; every view borrows the string given to hdr_url_split(). */
struct hdr_url {
    enum hdr_scheme scheme;
    const char *host; /* borrows the url; IPv6 literals keep their brackets */
    size_t host_len;
    unsigned port;      /* the explicit port, else 80 or 443 */
    bool port_explicit; /* whether the url spelled out a port */
    const char *prefix; /* borrows the url; "" or "/a/b", never a trailing slash */
    size_t prefix_len;
};

/*
 * Splits an endpoint URL of the form http(s)://host[:port][/prefix] into out.
 * The scheme is matched case-insensitively; host is a DNS name or IPv4
 * address (letters, digits, '-', '.', '_') or a bracketed IPv6 literal that
 * inet_pton() accepts; port is 1-65535; the prefix keeps its bytes as
 * written (percent-encoding, dot segments) except that trailing slashes are
 * dropped.  Returns 0 on success and -1 for anything else (other schemes,
 * userinfo, empty host or port, a query or fragment, spaces, controls or
 * non-ASCII bytes), leaving out unspecified.
 */
int hdr_url_split(const char *url, struct hdr_url *out);

/*
 * Returns a malloc'd URL made of endpoint_url up to the end of its path
 * prefix (trailing slashes dropped, scheme, host and port as written)
 * followed by path_and_query, so that "https://x.com/api/" and
 * "/v1/messages?beta=true" give "https://x.com/api/v1/messages?beta=true".
 * Nothing else is normalised.  Returns NULL when endpoint_url does not pass
 * hdr_url_split() or path_and_query does not pass hdr_target_valid() (in
 * particular when it does not start with '/').  The caller frees the result.
 */
char *hdr_url_join(const char *endpoint_url, const char *path_and_query);

/*
 * True when target is an origin-form request target: it starts with '/',
 * and every byte is visible ASCII (0x21-0x7E) other than '#'.  Absolute-form
 * ("http://..."), authority-form and "*" are refused, as are spaces,
 * control characters and raw non-ASCII bytes, which are not valid in a URI.
 */
bool hdr_target_valid(const char *target, size_t len);

/* A header field as an upstream client hands it over: views that need not
 * be NUL-terminated (the built-in client packs them back to back, so the
 * byte after a value is the next record, or stale bytes of an earlier
 * head). */
struct hdr_field {
    const char *name;
    size_t name_len;
    const char *value; /* leading and trailing blanks removed */
    size_t value_len;
};

/*
 * Parses a Content-Length value of exactly len bytes: 1 to 18 ASCII digits,
 * nothing else (no sign, no blanks, no comma list).  Returns 0 and sets *out,
 * or -1.  Never reads v[len].
 */
int hdr_content_length_parse(const char *v, size_t len, long long *out);

/* What hdr_resp_filter() learned about a response head. */
struct hdr_resp {
    long long content_length; /* the upstream's Content-Length; -1: none */
    bool chunked;             /* the upstream sent Transfer-Encoding: chunked, which
                                * its client has already decoded */
    bool is_sse;              /* Content-Type: text/event-stream */
    bool is_json;             /* Content-Type: application/json */
    const char *why;          /* static; why the head was refused, else NULL */
};

struct buf;

/*
 * The proxy's rules for a final response head from an upstream, whichever
 * client read it: the one place that decides what framing the client will
 * get.  status must be 200-999 (an interim 1xx, or 101 Switching
 * Protocols, is refused: its bytes are not a response the client asked
 * for).  Every name must pass hdr_name_valid() and every value
 * hdr_value_valid().  Content-Length must pass hdr_content_length_parse()
 * and appear at most once; Transfer-Encoding, at most once, must be exactly
 * "chunked" (a client that forwarded gzip-coded bytes without the coding
 * would corrupt the body) and must not come with a Content-Length (RFC 9112
 * 6.3: a smuggling or splitting attempt).  What passes is appended to out as
 * "Name: value\r\n" lines, minus the framing and hop-by-hop headers
 * (hdr_is_hop_by_hop(), Content-Length, the names listed in any Connection
 * field) and the proxy's own x-zephyr-* names: the client's framing is
 * written by the connection from r->content_length alone.
 *
 * Returns 0, or -1 with r->why set (out then holds a partial list the
 * caller discards); a head larger than out's cap is refused the same way.
 */
int hdr_resp_filter(int status, const struct hdr_field *f, size_t n, struct buf *out,
                    struct hdr_resp *r);

/* The reason phrase for a status line ("OK", "Bad Gateway"); "Status" for
 * a code it does not know. */
const char *hdr_status_text(int status);

#endif
