/*
 * libFuzzer target for hdr: the input is split at LF into a header name, a
 * header value, an endpoint URL, a request target and a Connection value
 * (missing pieces are empty), and every function is called on them.  Beyond
 * memory safety it checks the invariants the proxy relies on: a split URL
 * has a host, a port in range and a prefix without a trailing slash; a join
 * succeeds exactly when both halves are valid, and re-splits to the same
 * host and port.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hdr.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_hdr: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *piece[5] = {"", "", "", "", ""};
    size_t plen[5] = {0, 0, 0, 0, 0};
    const char *p = (const char *)data;
    const char *end = p + size;
    for (int i = 0; i < 5 && p <= end; i++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        piece[i] = p;
        plen[i] = len;
        p += len + 1;
        if (!nl)
            break;
    }
    /* Each piece gets its own exact-size heap copy so ASan sees overreads. */
    char *name = xstrndup(piece[0], plen[0]);
    char *value = xstrndup(piece[1], plen[1]);
    char *url = xstrndup(piece[2], plen[2]);
    char *target = xstrndup(piece[3], plen[3]);
    char *conn = xmalloc(plen[4] ? plen[4] : 1);
    memcpy(conn, piece[4], plen[4]);

    bool name_ok = hdr_name_valid(name, plen[0]);
    hdr_value_valid(value, plen[1]);
    bool hop = hdr_is_hop_by_hop(name, plen[0]);
    bool cred = hdr_is_credential(name, plen[0]);
    check(!(hop && cred), "a name both hop-by-hop and credential");
    if (cred)
        check(name_ok, "a credential name that is not a token");
    hdr_connection_lists(conn, plen[4], name, plen[0]);
    hdr_connection_lists(value, plen[1], name, plen[0]);
    if (name_ok)
        check(hdr_connection_lists(name, plen[0], name, plen[0]), "a name does not list itself");

    /* Views may contain NUL; the C-string functions see up to the first. */
    bool target_ok = hdr_target_valid(target, strlen(target));
    hdr_target_valid(piece[3], plen[3]);
    struct hdr_url u;
    int rc = hdr_url_split(url, &u);
    if (rc == 0) {
        check(u.host_len > 0, "empty host");
        check(u.port >= 1 && u.port <= 65535, "port out of range");
        check(u.prefix_len == 0 || (u.prefix[0] == '/' && u.prefix[u.prefix_len - 1] != '/'),
              "prefix shape");
        check(u.host >= url && u.prefix + u.prefix_len <= url + strlen(url),
              "views outside the url");
    }
    char *joined = hdr_url_join(url, target);
    check((joined != NULL) == (rc == 0 && target_ok),
          "join accepted what it should not, or refused what it should take");
    if (joined) {
        check(strlen(joined) == (size_t)(u.prefix - url) + u.prefix_len + strlen(target),
              "joined length");
        /* Without its query the joined URL is an endpoint URL of its own. */
        char *q = strchr(joined, '?');
        if (q)
            *q = '\0';
        struct hdr_url v;
        check(hdr_url_split(joined, &v) == 0, "joined URL does not split");
        check(v.scheme == u.scheme && v.port == u.port && v.host_len == u.host_len &&
                  memcmp(v.host, u.host, u.host_len) == 0,
              "joined URL has another origin");
        free(joined);
    }

    free(name);
    free(value);
    free(url);
    free(target);
    free(conn);
    return 0;
}
