/*
 * h1: the built-in HTTP/1.1 client; see h1.h and upstream.h for the
 * contract.
 *
 * What it owns:
 *   struct h1       the client: one 64 KiB read buffer shared by every
 *                   connection, the llhttp settings, a small hash of pools,
 *                   a free list of exchanges, one timer that sweeps idle
 *                   connections, and the header array given to head().
 *   struct h1_pool  one per host:port used: its idle connections (most
 *                   recently used first) and its addresses (parsed once for
 *                   a numeric host, cached H1_DNS_TTL_MS for a name).
 *   struct h1_conn  one TCP connection: the handle, the parser, one connect
 *                   or write request, and the bytes it keeps while its
 *                   exchange is paused.  About 610 bytes.
 *   struct h1_xchg  one exchange, the handle given to the caller.  Exchanges
 *                   are recycled with their timer, request head buffer and
 *                   header storage, so steady state allocates nothing.
 *
 * States of an exchange:
 *   X_FREE          on the free list
 *   X_RESOLVING     waiting for uv_getaddrinfo
 *   X_CONNECTING    waiting for the TCP connect (addresses tried in order)
 *   X_ACTIVE        on a connection: writing the request, reading the reply
 *   X_DONE_PENDING  the result is known; the timer calls done at 0 ms
 *   X_IN_DONE       inside the done callback
 * States of a connection: CONN_CONNECTING, CONN_ACTIVE (an exchange is
 * attached), CONN_IDLE (in its pool, still read so that a close or stray
 * bytes from the upstream are noticed; unref'd, so that idle connections
 * alone do not keep the loop running), CONN_CLOSING.
 *
 * The exchange timer carries the connect timeout, the whole-exchange
 * timeout and the deferred done, one at a time.
 *
 * Pausing: when body() returns UPSTREAM_PAUSE, on_body returns HPE_PAUSED, which
 * stops llhttp right after that span.  The span and every byte after it in
 * the read buffer are copied to conn->pend (they are contiguous) and reading
 * stops.  h1_resume() hands the span to body() again, then resumes llhttp
 * on the rest of pend; when that is used up, pend is freed and reading
 * starts again.
 *
 * Stale reuse: an exchange on a reused connection that sees EOF, a reset or
 * EPIPE before any response byte is sent again once, on a new connection,
 * by the same exchange struct, so the caller's handle stays valid.
 *
 * Every way an exchange ends goes through x_finish(): the response
 * completed (x_complete), connect, DNS, send and receive errors, a parse
 * error, a callback asking to stop, the timeout.  h1_abort() ends it without
 * a callback.  x_finish() calls done directly when it runs from a libuv
 * callback and defers it to the exchange timer when it runs under
 * h1_start() or h1_resume().  Every way a connection ends goes through
 * conn_close(): the end of its exchange when it may not be kept, an error,
 * an idle connection that hears from the upstream, the idle sweep, the pool
 * cap, h1_abort(), h1_free().  Memory of loop objects is freed in close
 * callbacks; the client itself once n_handles reaches zero.
 *
 * TLS (https:, see tls.h): a connection's struct h1_tls holds the SSL and
 * the ciphertext on its way out (io.out, then fly while uv_write has it).
 * After the TCP connect the handshake runs (the exchange stays
 * X_CONNECTING, under the connect timeout); then x_connected() continues as
 * for http:.  Reads go through tls_pump(): SSL_read into the shared pbuf,
 * then x_feed() as usual.  When the exchange pauses, the ciphertext not yet
 * decrypted is kept in cpend (besides the plaintext in pend) and decrypted
 * by h1_resume().  Writes: SSL_write into io.out, flushed by tls_flush().
 *
 * Warm connections: see the section of that name.
 *
 * Limits: response heads up to 64 KiB and 200 header lines (UPSTREAM_ERR_PROTOCOL
 * beyond), 1024 idle connections per pool, idle connections closed after
 * 50 s.  Pools are kept until h1_free(): there is one per host:port the
 * callers name, which come from the configuration.
 */
#include "h1.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "h2.h"
#include "llhttp.h"
#include "log.h"
#include "tls.h"
#include "util.h"

#define H1_READ_SIZE (64 * 1024)
#define H1_MAX_HEAD_BYTES (64 * 1024)
#define H1_MAX_HEADERS 200
#define H1_CONNECT_TIMEOUT_MS 10000
#define H1_DNS_TTL_MS 30000
#define H1_IDLE_TIMEOUT_MS 50000
#define H1_SWEEP_MS 5000
#define H1_MAX_IDLE_PER_POOL 1024
#define H1_MAX_FREE_XCHG 256
#define H1_POOL_BUCKETS 64
#define H1_TCP_KEEPALIVE_S 60
#define H1_KEEP_BUF 8192            /* a recycled exchange keeps buffers up to this size */
#define H1_TLS_PLAIN 16384          /* one TLS record of plaintext, the most SSL_read returns */
#define H1_WARM_MS (30 * 60 * 1000) /* a pool stays warm this long after a user's request */
#define H1_WARM_AHEAD_MS 12000      /* renew the warm connection this long before it expires */
#define H1_WARM_RETRY_MS 30000      /* after a failed warm-up */
#define H2_PING_MS 30000            /* a warm idle HTTP/2 connection is pinged this often */
#define H2_PING_TIMEOUT_MS 10000    /* and closed when the ACK takes longer */

#define container_of(p, type, member) ((type *)(void *)((char *)(p)-offsetof(type, member)))

enum x_state {
    X_FREE = 0,
    X_RESOLVING = 1,
    X_CONNECTING = 2,
    X_ACTIVE = 3,
    X_DONE_PENDING = 4,
    X_IN_DONE = 5,
};

enum conn_state {
    CONN_CONNECTING = 0,
    CONN_ACTIVE = 1,
    CONN_IDLE = 2,
    CONN_CLOSING = 3,
};

struct h1_pool {
    struct h1_pool *next;      /* owns: the rest of the hash chain */
    struct h1_conn *idle_head; /* borrows: most recently used idle connection */
    struct h1_conn *idle_tail; /* borrows: least recently used */
    size_t n_idle;
    struct sockaddr_storage *addrs; /* owns */
    size_t n_addrs;
    uint64_t addrs_expire; /* loop time; unused for numeric hosts */
    bool numeric;
    bool tls;                   /* https: */
    SSL_CTX *ctx;               /* borrows from h1.ctxs; NULL until one could be made */
    SSL_SESSION *sess;          /* owns: the session the next connection offers */
    char *ca_file;              /* owns; NULL: the system store */
    struct h1 *c;               /* borrows */
    struct h1_xchg *warm_x;     /* borrows: the warm-up connecting now, or NULL */
    uint64_t warm_until;        /* loop time: keep a connection ready until then */
    uint64_t warm_retry_at;     /* loop time: no warm-up before then */
    bool standby;               /* h1_warm(): warm while the client is in use */
    struct h1_conn *h2_head;    /* borrows: its HTTP/2 connections (see h2c_*) */
    bool h2_seen;               /* a connection chose h2: logged once */
    bool h1_only;               /* the last handshake that offered h2 got HTTP/1.1:
                                 * new connections are not waited for */
    struct h1_conn *h2_pending; /* borrows: the connection being set up that new
                                 * exchanges wait for (see pool_wake) */
    struct h1_xchg *h2_leader;  /* borrows: the exchange whose connection will be
                                 * h2_pending, while it resolves the host */
    struct h1_xchg *wait_head;  /* borrows: the exchanges waiting for it */
    size_t n_wait;
    unsigned port;
    uint32_t hash;
    size_t host_len;
    char host[]; /* as in the URL (brackets kept), NUL-terminated */
};

/* The TLS side of a connection (see tls.h): OpenSSL reads ciphertext from
 * io.in (the shared read buffer) and appends what it sends to io.out. */
struct h1_tls {
    SSL *ssl;         /* owns */
    struct tls_io io; /* io.out owns */
    char *fly;        /* owns: the ciphertext uv_write is sending */
    char *cpend;      /* owns: ciphertext kept while the exchange is paused */
    size_t cpend_len;
    bool hs_done;    /* the handshake succeeded */
    bool req_queued; /* the exchange's request went through SSL_write */
    bool failed;     /* a TLS error: the session is not kept */
};

struct h1_conn {
    uv_tcp_t tcp;
    union {
        uv_connect_t connect;
        uv_write_t write;
    } req;                       /* never both at once: the write follows the connect */
    llhttp_t parser;             /* .data borrows the exchange */
    struct h1 *c;                /* borrows */
    struct h1_pool *pool;        /* borrows */
    struct h1_xchg *x;           /* borrows; NULL when idle or closing */
    struct h1_conn *prev, *next; /* borrow: the pool's idle list */
    struct h1_tls *tls;          /* owns; NULL for http: */
    struct h2_sess *h2;          /* owns: the peer chose h2 (ALPN); NULL for HTTP/1.1 */
    struct h1_conn *h2_next;     /* borrows: the pool's HTTP/2 list */
    uint64_t ping_at;            /* loop time of the last PING; 0: none */
    char *pend;                  /* owns: bytes kept while the exchange is paused */
    uint32_t pend_len;           /* bytes in pend */
    uint32_t pend_body;          /* the first pend_body bytes go to body() again */
    uint64_t idle_since;         /* loop time */
    enum conn_state state;
    bool reading;
    bool write_pending;
};

struct h1_dns {
    uv_getaddrinfo_t req;
    struct h1 *c;         /* borrows */
    struct h1_pool *pool; /* borrows */
    struct h1_xchg *x;    /* borrows; NULL once the exchange ended */
};

struct h1_xchg {
    struct upstream_xfer base; /* first: the caller's handle */
    enum x_state state;
    struct h1 *c;              /* borrows */
    struct h1_pool *pool;      /* borrows */
    struct h1_conn *conn;      /* borrows; the connection closes or pools itself */
    struct h1_dns *dns;        /* borrows; the request frees itself */
    struct h1_xchg *next_free; /* borrows: the client's free list */
    uv_timer_t timer;
    struct upstream_cbs cbs;
    void *ud;         /* borrows */
    const char *body; /* borrows: the request body */
    size_t body_len;
    char *head; /* owns: the request head */
    size_t head_len, head_size;
    /* Where x_build_head put the pieces an HTTP/2 stream is built from
     * (offsets in head): no HTTP/1.1 head is parsed back for h2. */
    size_t m_len, path_off, path_len, auth_off, auth_len, lines_off, lines_len, cl_off, cl_len;
    char *hb; /* owns: the response head, [u32 len][bytes] records */
    size_t hb_len, hb_size;
    size_t hdr_bytes; /* status lines, names and values seen so far */
    size_t cur_off;   /* offset in hb of the record being appended to */
    uint32_t nhdrs;
    bool in_field;
    uint64_t start_ms; /* loop time */
    long timeout_ms;
    long connect_timeout_ms;
    size_t addr_idx;      /* the address being tried */
    const char *pause_at; /* borrows: the span body() paused on */
    size_t pause_len;
    enum upstream_rc rc;
    const char *msg; /* borrows: a literal or msgbuf */
    bool is_head;
    bool warm_only; /* a warm-up: connect (and handshake), then pool it */
    bool reused;    /* the connection came from the pool */
    bool retried;   /* already sent again once */
    bool got_byte;  /* a response byte arrived on this connection */
    bool write_done;
    uint64_t sent_ms; /* now_mono_ms() when the request was all written; 0 before */
    bool final_seen;  /* the final (non-1xx) head was parsed */
    bool complete;
    bool paused;
    bool busy; /* inside llhttp or a callback: abort defers recycling */
    bool aborted;
    struct h2_stream *h2s;     /* owned by the session: the stream on h2c */
    struct h1_conn *h2c;       /* borrows: the HTTP/2 connection (x->conn stays NULL) */
    struct h1_xchg *wait_next; /* borrows: the pool's waiting list */
    bool waiting;              /* on it */
    char msgbuf[192];
};

struct h1 {
    uv_loop_t *loop; /* borrows */
    llhttp_settings_t settings;
    struct h1_pool *pools[H1_POOL_BUCKETS]; /* owns */
    struct h1_xchg *free_x;                 /* owns: recycled exchanges */
    size_t n_free;
    uv_timer_t sweep;
    size_t n_open, n_idle;
    size_t n_handles; /* handles and requests whose callbacks are pending */
    bool free_requested;
    bool h2_off;                    /* ALPN offers http/1.1 only */
    unsigned api;                   /* inside h1_start/resume/abort: done must be deferred */
    size_t n_h2;                    /* HTTP/2 connections open */
    struct tls_ctxs *ctxs;          /* owns: one SSL_CTX per CA source */
    uint64_t tls_full, tls_resumed; /* handshakes completed */
    uint64_t used_until;            /* loop time: a user's request in the last H1_WARM_MS */
    bool pbuf_busy;                 /* pbuf holds plaintext being parsed */
    struct upstream_hdr hdrs[H1_MAX_HEADERS];
    char pbuf[H1_TLS_PLAIN]; /* decrypted bytes on their way to llhttp */
    char rbuf[H1_READ_SIZE]; /* the read buffer every connection shares */
};

static void conn_close(struct h1_conn *conn);
static void x_finish(struct h1_xchg *x, enum upstream_rc rc, const char *msg, bool defer);
static void x_connect_start(struct h1_xchg *x, bool defer);
static void x_connect(struct h1_xchg *x, bool defer);
static void on_x_timeout(uv_timer_t *t);
static void x_connected(struct h1_xchg *x, struct h1_conn *conn);
static void tls_on_read(struct h1_conn *conn, ssize_t n, const uv_buf_t *b);
static void tls_start(struct h1_xchg *x, struct h1_conn *conn);
static void tls_send(struct h1_xchg *x, bool defer);
static void tls_pump(struct h1_conn *conn, bool defer);
static int tls_flush(struct h1_conn *conn);
static void h2c_close(struct h1_conn *conn, enum upstream_rc rc, const char *msg);
static void h2c_flush(struct h1_conn *conn);
static void h2c_refresh(struct h1_conn *conn);
static void h2c_pump(struct h1_conn *conn);
static struct h1_conn *h2c_pick(struct h1_pool *p);
static bool h2c_begin(struct h1_xchg *x, struct h1_conn *conn);
static void x_h2_attach(struct h1_xchg *x, struct h1_conn *conn, bool defer);
static void x_attach(struct h1_xchg *x, struct h1_conn *conn);
static void x_send(struct h1_xchg *x, bool defer);
static void pool_wait_unlink(struct h1_xchg *x);
static void pool_wake(struct h1_pool *p);

/* ---- the client ---------------------------------------------------------- */

static void h1_maybe_free(struct h1 *c)
{
    if (!c->free_requested || c->n_handles > 0)
        return;
    for (size_t i = 0; i < H1_POOL_BUCKETS; i++) {
        for (struct h1_pool *p = c->pools[i], *next; p; p = next) {
            next = p->next;
            free(p->addrs);
            if (p->sess)
                SSL_SESSION_free(p->sess);
            free(p->ca_file);
            free(p);
        }
    }
    tls_ctxs_free(c->ctxs);
    free(c);
}

static void on_handle_closed_count(uv_handle_t *h)
{
    struct h1 *c = h->data;
    c->n_handles--;
    h1_maybe_free(c);
}

/* ---- small helpers -------------------------------------------------------- */

static void addr_str(const struct sockaddr_storage *a, char *out, size_t len)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)a;
        uv_ip6_name(a6, ip, sizeof ip);
        snprintf(out, len, "[%s]:%u", ip, (unsigned)ntohs(a6->sin6_port));
    } else {
        const struct sockaddr_in *a4 = (const struct sockaddr_in *)a;
        uv_ip4_name(a4, ip, sizeof ip);
        snprintf(out, len, "%s:%u", ip, (unsigned)ntohs(a4->sin_port));
    }
}

static bool is_tchar(unsigned char ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return true;
    return ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static bool blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* ---- URLs and pools ------------------------------------------------------- */

struct h1_url {
    bool tls;         /* https: */
    const char *host; /* brackets kept */
    size_t host_len;
    unsigned port;
    const char *auth; /* host[:port] as written, for the Host header */
    size_t auth_len;
    const char *path; /* "", "/..." or "?..." up to a fragment */
    size_t path_len;
};

/* http[s]://host[:port][/path][?query][#fragment]; the fragment is dropped. */
static int url_parse(const char *url, struct h1_url *u)
{
    static const char scheme[] = "https://";
    size_t i = 0;
    for (; i < 8; i++) {
        char ch = url[i];
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        if (i == 4 && ch == ':')
            break; /* http: */
        if (ch != scheme[i])
            return -1;
    }
    u->tls = i == 8;
    if (!u->tls && (url[5] != '/' || url[6] != '/'))
        return -1;
    const char *p = url + (u->tls ? 8 : 7);
    u->auth = p;
    u->host = p;
    if (*p == '[') {
        const char *q = strchr(p, ']');
        if (!q)
            return -1;
        p = q + 1;
    } else {
        while (*p && *p != ':' && *p != '/' && *p != '?' && *p != '#')
            p++;
    }
    u->host_len = (size_t)(p - u->host);
    if (u->host_len == 0)
        return -1;
    u->port = u->tls ? 443 : 80;
    if (*p == ':') {
        unsigned port = 0;
        size_t digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++) {
            port = port * 10 + (unsigned)(*p - '0');
            if (port > 65535)
                return -1;
        }
        if (digits == 0 || port == 0)
            return -1;
        u->port = port;
    }
    u->auth_len = (size_t)(p - u->auth);
    if (*p && *p != '/' && *p != '?' && *p != '#')
        return -1;
    u->path = p;
    while (*p && *p != '#') {
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return -1;
        p++;
    }
    u->path_len = (size_t)(p - u->path);
    return 0;
}

static uint32_t pool_hash(const char *host, size_t len, unsigned port)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)host[i]) * 16777619u;
    return (h ^ port) * 16777619u;
}

static bool same_ca(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* The pool for scheme, host:port and CA source, created on first use; NULL
 * when host is neither an address nor a plausible DNS name. */
static struct h1_pool *pool_get(struct h1 *c, const char *host, size_t len, unsigned port, bool tls,
                                const char *ca_file)
{
    if (!tls || (ca_file && !*ca_file))
        ca_file = NULL;
    uint32_t h = pool_hash(host, len, port) ^ (tls ? 0x5bd1e995u : 0);
    struct h1_pool **slot = &c->pools[h % H1_POOL_BUCKETS];
    for (struct h1_pool *p = *slot; p; p = p->next) {
        if (p->hash == h && p->port == port && p->tls == tls && p->host_len == len &&
            memcmp(p->host, host, len) == 0 && same_ca(p->ca_file, ca_file))
            return p;
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    bool numeric = false;
    char name[256];
    if (len >= sizeof name)
        return NULL;
    if (host[0] == '[') {
        if (len < 3 || host[len - 1] != ']')
            return NULL;
        memcpy(name, host + 1, len - 2);
        name[len - 2] = '\0';
        if (uv_ip6_addr(name, (int)port, (struct sockaddr_in6 *)&ss) != 0)
            return NULL;
        numeric = true;
    } else {
        memcpy(name, host, len);
        name[len] = '\0';
        for (size_t i = 0; i < len; i++) {
            unsigned char ch = (unsigned char)name[i];
            if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_'))
                return NULL;
        }
        struct in_addr a4;
        if (inet_pton(AF_INET, name, &a4) == 1) {
            uv_ip4_addr(name, (int)port, (struct sockaddr_in *)&ss);
            numeric = true;
        }
    }
    struct h1_pool *p = xcalloc(1, sizeof *p + len + 1);
    memcpy(p->host, host, len);
    p->host[len] = '\0';
    p->host_len = len;
    p->port = port;
    p->hash = h;
    p->numeric = numeric;
    p->tls = tls;
    p->ca_file = ca_file ? xstrdup(ca_file) : NULL;
    p->c = c;
    if (numeric) {
        p->addrs = xmalloc(sizeof ss);
        p->addrs[0] = ss;
        p->n_addrs = 1;
    }
    p->next = *slot;
    *slot = p;
    return p;
}

static void pool_unlink(struct h1_conn *conn)
{
    struct h1_pool *p = conn->pool;
    if (conn->prev)
        conn->prev->next = conn->next;
    else
        p->idle_head = conn->next;
    if (conn->next)
        conn->next->prev = conn->prev;
    else
        p->idle_tail = conn->prev;
    conn->prev = conn->next = NULL;
    p->n_idle--;
    conn->c->n_idle--;
}

/* ---- warm connections ------------------------------------------------------
 *
 * A pool that served a user's request (upstream_request.keep_warm) in the last
 * H1_WARM_MS keeps one connection ready: the sweep opens one (connect and
 * TLS handshake, no request) when the pool has none idle, or when the
 * youngest idle one is H1_WARM_AHEAD_MS from the idle timeout, so the first
 * request after a pause finds a verified connection.  A pool marked by
 * h1_warm() (the next endpoint in line) is warm the same way, without a
 * request of its own, while the client served any user's request in the
 * last H1_WARM_MS.  A warm-up is an internal exchange (warm_only) that ends
 * by pooling its connection.  pool_warm() is the one rule. */

static bool pool_warm(const struct h1 *c, const struct h1_pool *p, uint64_t now)
{
    return !c->free_requested && (p->warm_until > now || (p->standby && c->used_until > now));
}

static void on_sweep(uv_timer_t *t);

static void warm_sweep_on(struct h1 *c)
{
    if (!uv_is_active((uv_handle_t *)&c->sweep))
        uv_timer_start(&c->sweep, on_sweep, H1_SWEEP_MS, H1_SWEEP_MS);
}

static void on_warm_done(void *ud, enum upstream_rc rc, const char *msg)
{
    struct h1_pool *p = ud;
    (void)msg;
    p->warm_x = NULL;
    if (rc != UPSTREAM_OK)
        p->warm_retry_at = uv_now(p->c->loop) + H1_WARM_RETRY_MS;
}

static struct h1_xchg *x_get(struct h1 *c);

static void warm_start(struct h1 *c, struct h1_pool *p)
{
    struct h1_xchg *x = x_get(c);
    x->pool = p;
    x->conn = NULL;
    x->dns = NULL;
    memset(&x->cbs, 0, sizeof x->cbs);
    x->cbs.done = on_warm_done;
    x->ud = p;
    x->body = NULL;
    x->body_len = x->head_len = 0;
    x->hdr_bytes = x->hb_len = 0;
    x->nhdrs = 0;
    x->in_field = false;
    x->start_ms = uv_now(c->loop);
    x->timeout_ms = x->connect_timeout_ms = 0;
    x->addr_idx = 0;
    x->rc = UPSTREAM_OK;
    x->msg = "";
    x->is_head = false;
    x->warm_only = true;
    x->reused = x->retried = x->got_byte = x->write_done = false;
    x->sent_ms = 0;
    x->final_seen = x->complete = x->paused = x->busy = x->aborted = false;
    p->warm_x = x;
    x_connect_start(x, false);
}

static void on_sweep(uv_timer_t *t)
{
    struct h1 *c = t->data;
    uint64_t now = uv_now(c->loop);
    bool warm = false;
    for (size_t i = 0; i < H1_POOL_BUCKETS; i++) {
        for (struct h1_pool *p = c->pools[i]; p; p = p->next) {
            while (p->idle_tail && now - p->idle_tail->idle_since >= H1_IDLE_TIMEOUT_MS)
                conn_close(p->idle_tail);
            bool pw = pool_warm(c, p, now);
            /* A warm pool keeps one idle h2 connection (the newest: the list
             * is newest first); the others a burst left close after the
             * idle timeout like HTTP/1.1 ones (9,000 streams left 91). */
            bool kept = false;
            for (struct h1_conn *hc = p->h2_head, *next; hc; hc = next) {
                next = hc->h2_next;
                if (h2_sess_streams(hc->h2) > 0)
                    continue;
                if (h2_sess_ping_pending(hc->h2) && now - hc->ping_at >= H2_PING_TIMEOUT_MS)
                    h2c_close(hc, UPSTREAM_ERR_RECV, "HTTP/2 PING unanswered");
                else if ((!pw || kept) && now - hc->idle_since >= H1_IDLE_TIMEOUT_MS)
                    h2c_close(hc, UPSTREAM_ERR_RECV, "idle HTTP/2 connection closed");
                else if (pw && !kept) {
                    kept = true;
                    if (now - (hc->ping_at > hc->idle_since ? hc->ping_at : hc->idle_since) >=
                        H2_PING_MS) {
                        /* Warm: the connection stays, proven alive by PING. */
                        h2_sess_ping(hc->h2);
                        hc->ping_at = now;
                        h2c_flush(hc);
                    }
                }
            }
            if (!pw)
                continue;
            warm = true;
            if (!p->warm_x && now >= p->warm_retry_at && !h2c_pick(p) &&
                (!p->idle_head ||
                 now - p->idle_head->idle_since >= H1_IDLE_TIMEOUT_MS - H1_WARM_AHEAD_MS))
                warm_start(c, p);
        }
    }
    if (c->n_idle == 0 && c->n_h2 == 0 && !warm)
        uv_timer_stop(t);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);
static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);

/* Returns a connection whose exchange ended cleanly to its pool. */
static void pool_put(struct h1_conn *conn)
{
    struct h1 *c = conn->c;
    struct h1_pool *p = conn->pool;
    free(conn->pend);
    conn->pend = NULL;
    conn->pend_len = conn->pend_body = 0;
    if (conn->tls) {
        free(conn->tls->cpend);
        conn->tls->cpend = NULL;
        conn->tls->cpend_len = 0;
    }
    if (!conn->reading) {
        if (uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read) != 0) {
            conn_close(conn);
            return;
        }
        conn->reading = true;
    }
    conn->state = CONN_IDLE;
    conn->idle_since = uv_now(c->loop);
    conn->prev = NULL;
    conn->next = p->idle_head;
    if (p->idle_head)
        p->idle_head->prev = conn;
    else
        p->idle_tail = conn;
    p->idle_head = conn;
    p->n_idle++;
    c->n_idle++;
    uv_unref((uv_handle_t *)&conn->tcp);
    if (p->n_idle > H1_MAX_IDLE_PER_POOL)
        conn_close(p->idle_tail);
    if (!uv_is_active((uv_handle_t *)&c->sweep))
        uv_timer_start(&c->sweep, on_sweep, H1_SWEEP_MS, H1_SWEEP_MS);
}

/* ---- connections ---------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct h1_conn *conn = h->data;
    (void)suggested;
    *b = uv_buf_init(conn->c->rbuf, H1_READ_SIZE);
}

static void on_conn_closed(uv_handle_t *h)
{
    struct h1_conn *conn = h->data;
    struct h1 *c = conn->c;
    h2_sess_free(conn->h2);
    if (conn->tls) {
        struct h1_tls *t = conn->tls;
        tls_ssl_free(t->ssl, t->hs_done && !t->failed);
        free(t->io.out);
        free(t->fly);
        free(t->cpend);
        free(t);
    }
    free(conn->pend);
    free(conn);
    c->n_handles--;
    h1_maybe_free(c);
}

static struct h1_conn *conn_new(struct h1 *c, struct h1_pool *pool)
{
    struct h1_conn *conn = xcalloc(1, sizeof *conn);
    uv_tcp_init(c->loop, &conn->tcp);
    conn->tcp.data = conn;
    conn->c = c;
    conn->pool = pool;
    conn->state = CONN_CONNECTING;
    c->n_open++;
    c->n_handles++;
    return conn;
}

/* The one way a connection ends; see the top of this file for the paths
 * that lead here.  The caller has detached its exchange.  Idempotent. */
static void conn_close(struct h1_conn *conn)
{
    if (conn->state == CONN_CLOSING)
        return;
    if (conn->state == CONN_IDLE)
        pool_unlink(conn);
    conn->state = CONN_CLOSING;
    conn->x = NULL;
    conn->c->n_open--;
    if (conn->h2) {
        struct h1_conn **pp = &conn->pool->h2_head;
        while (*pp && *pp != conn)
            pp = &(*pp)->h2_next;
        if (*pp)
            *pp = conn->h2_next;
        conn->c->n_h2--;
        /* Its streams end (and may be sent again elsewhere); the session
         * itself is freed with the connection, outside its callbacks. */
        h2_sess_fail(conn->h2, UPSTREAM_ERR_RECV, "the HTTP/2 connection closed");
    }
    uv_close((uv_handle_t *)&conn->tcp, on_conn_closed);
    if (conn == conn->pool->h2_pending)
        pool_wake(conn->pool);
}

/* ---- exchanges: allocation ------------------------------------------------ */

static void on_xchg_closed(uv_handle_t *h)
{
    struct h1_xchg *x = h->data;
    struct h1 *c = x->c;
    free(x->head);
    free(x->hb);
    free(x);
    c->n_handles--;
    h1_maybe_free(c);
}

static struct h1_xchg *x_get(struct h1 *c)
{
    struct h1_xchg *x = c->free_x;
    if (x) {
        c->free_x = x->next_free;
        c->n_free--;
        return x;
    }
    x = xcalloc(1, sizeof *x);
    x->base.kind = UPSTREAM_KIND_H1;
    x->c = c;
    uv_timer_init(c->loop, &x->timer);
    x->timer.data = x;
    c->n_handles++;
    return x;
}

/* The exchange is over for the caller; its struct goes back to the free
 * list (or is closed when the list is full). */
static void x_recycle(struct h1_xchg *x)
{
    struct h1 *c = x->c;
    uv_timer_stop(&x->timer);
    x->state = X_FREE;
    x->conn = NULL;
    x->dns = NULL;
    if (x->head_size > H1_KEEP_BUF) {
        free(x->head);
        x->head = NULL;
        x->head_size = 0;
    }
    if (x->hb_size > H1_KEEP_BUF) {
        free(x->hb);
        x->hb = NULL;
        x->hb_size = 0;
    }
    if (c->n_free >= H1_MAX_FREE_XCHG || c->free_requested) {
        uv_close((uv_handle_t *)&x->timer, on_xchg_closed);
        return;
    }
    x->next_free = c->free_x;
    c->free_x = x;
    c->n_free++;
}

static void on_x_deferred(uv_timer_t *t)
{
    struct h1_xchg *x = t->data;
    x->state = X_IN_DONE;
    x->cbs.done(x->ud, x->rc, x->msg);
    x_recycle(x);
}

/* Detaches the exchange's connection and closes it: mid-exchange it
 * cannot be reused (closing also cancels a write that borrows the body). */
static void x_close_conn(struct h1_xchg *x)
{
    if (x->waiting)
        pool_wait_unlink(x);
    if (x->pool->h2_leader == x) {
        /* It ends before it had a connection: the waiters go on alone. */
        x->pool->h2_leader = NULL;
        pool_wake(x->pool);
    }
    if (x->h2s) {
        /* One stream of a shared connection: only it ends. */
        struct h1_conn *hc = x->h2c;
        h2_stream_cancel(x->h2s);
        x->h2s = NULL;
        x->h2c = NULL;
        h2c_flush(hc);
        h2c_refresh(hc);
        return;
    }
    struct h1_conn *conn = x->conn;
    if (!conn)
        return;
    x->conn = NULL;
    conn->x = NULL;
    conn_close(conn);
}

/* The one way an exchange ends with done; see the top of this file.  The
 * caller has dealt with a connection it means to keep. */
static void x_finish(struct h1_xchg *x, enum upstream_rc rc, const char *msg, bool defer)
{
    if (x->dns) {
        /* Let the lookup finish: its answer still fills the cache. */
        x->dns->x = NULL;
        x->dns = NULL;
    }
    x_close_conn(x);
    x->rc = rc;
    x->msg = msg;
    if (defer) {
        x->state = X_DONE_PENDING;
        uv_timer_start(&x->timer, on_x_deferred, 0, 0);
        return;
    }
    uv_timer_stop(&x->timer);
    x->state = X_IN_DONE;
    x->cbs.done(x->ud, rc, msg);
    x_recycle(x);
}

/* The response ended: the connection goes back to its pool when nothing
 * else arrived after it, the request was written and both sides allow it. */
static void x_complete(struct h1_xchg *x, bool may_keep, bool defer)
{
    struct h1_conn *conn = x->conn;
    x->conn = NULL;
    conn->x = NULL;
    if (conn->tls &&
        (conn->tls->io.in_len > 0 || conn->tls->cpend_len > 0 || SSL_has_pending(conn->tls->ssl)))
        may_keep = false; /* more arrived after the response: the TLS stream
                           * cannot be kept without it */
    if (may_keep && x->write_done && !conn->write_pending &&
        llhttp_should_keep_alive(&conn->parser))
        pool_put(conn);
    else
        conn_close(conn);
    x_finish(x, UPSTREAM_OK, "", defer);
}

/* ---- response parsing ----------------------------------------------------- */

static int head_too_big(struct h1_xchg *x)
{
    x->rc = UPSTREAM_ERR_PROTOCOL;
    x->msg = "malformed response from upstream: header block too large (over 64 KiB or 200 "
             "fields)";
    return -1;
}

static void hb_reserve(struct h1_xchg *x, size_t n)
{
    if (x->hb_len + n <= x->hb_size)
        return;
    size_t size = x->hb_size ? x->hb_size : 1024;
    while (size < x->hb_len + n)
        size *= 2;
    x->hb = xrealloc(x->hb, size);
    x->hb_size = size;
}

/* Starts a [u32 len] record. */
static void hb_open(struct h1_xchg *x)
{
    hb_reserve(x, 4);
    x->cur_off = x->hb_len;
    memset(x->hb + x->hb_len, 0, 4);
    x->hb_len += 4;
}

/* Appends to the open record. */
static int hb_add(struct h1_xchg *x, const char *at, size_t len)
{
    x->hdr_bytes += len;
    if (x->hdr_bytes > H1_MAX_HEAD_BYTES)
        return head_too_big(x);
    hb_reserve(x, len);
    memcpy(x->hb + x->hb_len, at, len);
    x->hb_len += len;
    uint32_t n;
    memcpy(&n, x->hb + x->cur_off, 4);
    n += (uint32_t)len;
    memcpy(x->hb + x->cur_off, &n, 4);
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    struct h1_xchg *x = p->data;
    x->hb_len = 0;
    x->nhdrs = 0;
    x->in_field = false;
    return 0;
}

static int on_status(llhttp_t *p, const char *at, size_t len)
{
    struct h1_xchg *x = p->data;
    (void)at;
    x->hdr_bytes += len;
    return x->hdr_bytes > H1_MAX_HEAD_BYTES ? head_too_big(x) : 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct h1_xchg *x = p->data;
    if (!x->in_field) {
        if (++x->nhdrs > H1_MAX_HEADERS)
            return head_too_big(x);
        x->in_field = true;
        hb_open(x);
    }
    return hb_add(x, at, len);
}

static int on_header_field_complete(llhttp_t *p)
{
    struct h1_xchg *x = p->data;
    x->in_field = false;
    hb_open(x); /* the value, possibly empty */
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    return hb_add(p->data, at, len);
}

static int on_headers_complete(llhttp_t *p)
{
    struct h1_xchg *x = p->data;
    struct h1 *c = x->c;
    int status = p->status_code;
    if (status < 200) {
        if (status == 101) {
            x->rc = UPSTREAM_ERR_PROTOCOL;
            x->msg = "malformed response from upstream: unexpected 101 Switching Protocols";
            return -1;
        }
        return 1; /* an interim head: no body, the next head follows */
    }
    x->final_seen = true;
    size_t n = 0;
    const char *q = x->hb, *end = x->hb + x->hb_len;
    while (q + 8 <= end && n < H1_MAX_HEADERS) {
        uint32_t nl, vl;
        memcpy(&nl, q, 4);
        struct upstream_hdr *h = &c->hdrs[n++];
        h->name = q + 4;
        h->name_len = nl;
        q += 4 + nl;
        memcpy(&vl, q, 4);
        const char *v = q + 4;
        q += 4 + vl;
        while (vl > 0 && blank(*v)) {
            v++;
            vl--;
        }
        while (vl > 0 && blank(v[vl - 1]))
            vl--;
        h->value = v;
        h->value_len = vl;
    }
    bool ok = x->cbs.head(x->ud, status, c->hdrs, n);
    if (x->aborted)
        return -1;
    if (!ok) {
        x->rc = UPSTREAM_ERR_ABORTED;
        x->msg = "stopped by the head callback";
        return -1;
    }
    /* llhttp leaves these to the caller: no body whatever the head says. */
    return x->is_head || status == 204 || status == 304 ? 1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct h1_xchg *x = p->data;
    if (len == 0)
        return 0;
    size_t r = x->cbs.body(x->ud, at, len);
    if (x->aborted)
        return -1;
    if (r == len)
        return 0;
    if (r == UPSTREAM_PAUSE) {
        x->paused = true;
        x->pause_at = at;
        x->pause_len = len;
        return HPE_PAUSED;
    }
    x->rc = UPSTREAM_ERR_ABORTED;
    x->msg = "stopped by the body callback";
    return -1;
}

static int on_message_complete(llhttp_t *p)
{
    struct h1_xchg *x = p->data;
    if (!x->final_seen)
        return 0; /* the end of an interim head */
    x->complete = true;
    return HPE_PAUSED; /* stop right here: what follows is not ours */
}

/* Feeds response bytes to the parser.  data is the shared read buffer (or
 * the plaintext buffer), or (from_pend) the connection's kept bytes.  defer:
 * called under h1_resume(), done must wait for the loop. */
static void x_feed(struct h1_xchg *x, const char *data, size_t len, bool from_pend, bool defer)
{
    struct h1_conn *conn = x->conn;
    x->busy = true;
    llhttp_errno_t err = llhttp_execute(&conn->parser, data, len);
    x->busy = false;
    if (x->aborted) {
        x_recycle(x); /* h1_abort() ran inside a callback */
        return;
    }
    if (err == HPE_OK)
        return;
    if (err == HPE_PAUSED) {
        const char *pos = llhttp_get_error_pos(&conn->parser);
        if (x->complete) {
            x_complete(x, pos == data + len, defer);
            return;
        }
        /* body() paused: keep the span and everything after it. */
        size_t keep = (size_t)(data + len - x->pause_at);
        if (from_pend) {
            memmove(conn->pend, x->pause_at, keep);
        } else {
            conn->pend = xrealloc(conn->pend, keep);
            memcpy(conn->pend, x->pause_at, keep);
        }
        conn->pend_len = (uint32_t)keep;
        conn->pend_body = (uint32_t)x->pause_len;
        if (conn->reading) {
            uv_read_stop((uv_stream_t *)&conn->tcp);
            conn->reading = false;
        }
        return;
    }
    if (x->rc != UPSTREAM_OK) {
        x_finish(x, x->rc, x->msg, defer);
        return;
    }
    const char *reason = llhttp_get_error_reason(&conn->parser);
    snprintf(x->msgbuf, sizeof x->msgbuf, "malformed response from upstream: %s",
             reason && *reason ? reason : llhttp_errno_name(err));
    x_finish(x, UPSTREAM_ERR_PROTOCOL, x->msgbuf, defer);
}

/* ---- sending and receiving ------------------------------------------------ */

static bool stale_error(int err)
{
    return err == UV_EOF || err == UV_ECONNRESET || err == UV_EPIPE || err == UV_ECONNABORTED;
}

static bool may_resend(const struct h1_xchg *x, int err)
{
    return x->reused && !x->retried && !x->got_byte && stale_error(err);
}

/* The reused connection was dead: send again once on a new one. */
static void x_resend(struct h1_xchg *x, bool defer)
{
    x_close_conn(x);
    x->retried = true;
    x->reused = false;
    x->write_done = false;
    x->sent_ms = 0;
    x->got_byte = false;
    x_connect_start(x, defer);
}

static void x_send_failed(struct h1_xchg *x, int err, bool defer)
{
    if (x->got_byte)
        return; /* a response is under way; the connection will not be kept */
    if (may_resend(x, err)) {
        x_resend(x, defer);
        return;
    }
    snprintf(x->msgbuf, sizeof x->msgbuf, "could not send the request: %s", uv_strerror(err));
    x_finish(x, UPSTREAM_ERR_SEND, x->msgbuf, defer);
}

static void on_write(uv_write_t *w, int status)
{
    struct h1_conn *conn = container_of(w, struct h1_conn, req.write);
    conn->write_pending = false;
    if (conn->state == CONN_CLOSING || !conn->x)
        return;
    if (status < 0) {
        x_send_failed(conn->x, status, false);
    } else {
        conn->x->write_done = true;
        conn->x->sent_ms = now_mono_ms();
    }
}

/* One write for head and body: directly when the socket takes it all,
 * the rest queued (borrowing the body) otherwise. */
static void x_send(struct h1_xchg *x, bool defer)
{
    struct h1_conn *conn = x->conn;
    if (conn->tls) {
        tls_send(x, defer);
        return;
    }
    uv_buf_t b[2] = {
        uv_buf_init(x->head, (unsigned)x->head_len),
        uv_buf_init((char *)x->body, (unsigned)x->body_len),
    };
    unsigned nb = x->body_len ? 2 : 1;
    int n = uv_try_write((uv_stream_t *)&conn->tcp, b, nb);
    if (n >= 0 && (size_t)n == x->head_len + x->body_len) {
        x->write_done = true;
        x->sent_ms = now_mono_ms();
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        x_send_failed(x, n, defer);
        return;
    }
    size_t skip = n > 0 ? (size_t)n : 0;
    unsigned i = 0;
    while (skip >= b[i].len) {
        skip -= b[i].len;
        i++;
    }
    b[i].base += skip;
    b[i].len -= (unsigned)skip;
    int rc = uv_write(&conn->req.write, (uv_stream_t *)&conn->tcp, b + i, nb - i, on_write);
    if (rc < 0) {
        x_send_failed(x, rc, defer);
        return;
    }
    conn->write_pending = true;
}

static void x_read_failed(struct h1_xchg *x, int err, bool defer)
{
    struct h1_conn *conn = x->conn;
    if (err == UV_EOF && x->got_byte) {
        /* A body that runs to the close ends here. */
        x->busy = true;
        llhttp_finish(&conn->parser);
        x->busy = false;
        if (x->aborted) {
            x_recycle(x);
            return;
        }
        if (x->complete) {
            x_complete(x, false, defer);
            return;
        }
    }
    if (may_resend(x, err)) {
        x_resend(x, defer);
        return;
    }
    const char *msg;
    if (err == UV_EOF) {
        msg = "upstream closed the connection before the response ended";
    } else if (err == UV_ECONNRESET) {
        msg = "connection reset by upstream";
    } else {
        snprintf(x->msgbuf, sizeof x->msgbuf, "receive failed: %s", uv_strerror(err));
        msg = x->msgbuf;
    }
    x_finish(x, UPSTREAM_ERR_RECV, msg, defer);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct h1_conn *conn = s->data;
    if (n == 0 || conn->state == CONN_CLOSING)
        return;
    if (conn->tls) {
        tls_on_read(conn, n, b);
        return;
    }
    struct h1_xchg *x = conn->x;
    if (!x) {
        conn_close(conn); /* idle: the upstream closed it or sent something */
        return;
    }
    if (n < 0) {
        x_read_failed(x, (int)n, false);
        return;
    }
    x->got_byte = true;
    x_feed(x, b->base, (size_t)n, false, false);
}

/* ---- TLS ------------------------------------------------------------------ */

static void tls_peer(const struct h1_pool *p, char *out, size_t len)
{
    snprintf(out, len, "%s:%u", p->host, p->port);
}

static void tls_free_out(struct h1_tls *t)
{
    free(t->io.out);
    t->io.out = NULL;
    t->io.out_len = t->io.out_cap = 0;
}

static void on_tls_write(uv_write_t *w, int status);

/* Sends what OpenSSL wrote: directly when the socket takes it all, else
 * the buffer moves to uv_write (t->fly) and new output collects in a
 * fresh one.  0 or a libuv error. */
static int tls_flush(struct h1_conn *conn)
{
    struct h1_tls *t = conn->tls;
    if (conn->write_pending || t->io.out_len == 0)
        return 0;
    uv_buf_t b = uv_buf_init(t->io.out, (unsigned)t->io.out_len);
    int n = uv_try_write((uv_stream_t *)&conn->tcp, &b, 1);
    if (n >= 0 && (size_t)n == t->io.out_len) {
        tls_free_out(t); /* a waiting connection keeps no buffer */
        return 0;
    }
    if (n < 0 && n != UV_EAGAIN)
        return n;
    size_t skip = n > 0 ? (size_t)n : 0;
    t->fly = t->io.out;
    b = uv_buf_init(t->fly + skip, (unsigned)(t->io.out_len - skip));
    t->io.out = NULL;
    t->io.out_len = t->io.out_cap = 0;
    int rc = uv_write(&conn->req.write, (uv_stream_t *)&conn->tcp, &b, 1, on_tls_write);
    if (rc < 0) {
        free(t->fly);
        t->fly = NULL;
        return rc;
    }
    conn->write_pending = true;
    return 0;
}

/* A write failed; what it means depends on where the connection is. */
static void tls_write_failed(struct h1_conn *conn, int err, bool defer)
{
    struct h1_xchg *x = conn->x;
    if (!x) {
        conn_close(conn);
        return;
    }
    if (!conn->tls->hs_done) {
        conn->tls->failed = true;
        snprintf(x->msgbuf, sizeof x->msgbuf, "TLS handshake with %s:%u failed: %s",
                 conn->pool->host, conn->pool->port, uv_strerror(err));
        x_finish(x, UPSTREAM_ERR_CONNECT, x->msgbuf, defer);
        return;
    }
    x_send_failed(x, err, defer);
}

static void tls_maybe_sent(struct h1_conn *conn)
{
    struct h1_xchg *x = conn->x;
    if (x && x->state == X_ACTIVE && conn->tls->req_queued && !x->write_done &&
        !conn->write_pending && conn->tls->io.out_len == 0) {
        x->write_done = true;
        x->sent_ms = now_mono_ms();
    }
}

static void on_tls_write(uv_write_t *w, int status)
{
    struct h1_conn *conn = container_of(w, struct h1_conn, req.write);
    struct h1_tls *t = conn->tls;
    free(t->fly);
    t->fly = NULL;
    conn->write_pending = false;
    if (conn->state == CONN_CLOSING)
        return;
    if (conn->h2 && status >= 0) {
        h2c_flush(conn); /* what waited in the session (see h2c_flush) */
        return;
    }
    int rc = status < 0 ? status : tls_flush(conn);
    if (rc < 0) {
        tls_write_failed(conn, rc, false);
        return;
    }
    tls_maybe_sent(conn);
}

/* The request goes through SSL_write into one buffer, then out. */
static void tls_send(struct h1_xchg *x, bool defer)
{
    struct h1_conn *conn = x->conn;
    struct h1_tls *t = conn->tls;
    size_t off = 0;
    if (x->body_len > 0 && x->head_len + x->body_len <= H1_TLS_PLAIN) {
        /* One record for head and body: each record costs a cipher setup
         * and a tag, far more than copying a small body once. */
        if (x->head_len + x->body_len > x->head_size) {
            x->head = xrealloc(x->head, x->head_len + x->body_len);
            x->head_size = x->head_len + x->body_len;
        }
        memcpy(x->head + x->head_len, x->body, x->body_len);
        off = x->body_len;
    }
    bool ok = SSL_write(t->ssl, x->head, (int)(x->head_len + off)) > 0;
    for (; ok && off < x->body_len;) {
        size_t n = x->body_len - off;
        if (n > (1u << 30))
            n = 1u << 30;
        ok = SSL_write(t->ssl, x->body + off, (int)n) > 0;
        off += n;
    }
    if (!ok) {
        /* The session is over (the peer ended it while the connection was
         * idle): for a reused connection that is the stale case. */
        ERR_clear_error();
        t->failed = true;
        x_send_failed(x, UV_EPIPE, defer);
        return;
    }
    t->req_queued = true;
    int rc = tls_flush(conn);
    if (rc < 0) {
        x_send_failed(x, rc, defer);
        return;
    }
    tls_maybe_sent(conn);
}

static void tls_handshake_failed(struct h1_conn *conn, int err)
{
    struct h1_xchg *x = conn->x;
    char peer[300];
    tls_peer(conn->pool, peer, sizeof peer);
    conn->tls->failed = true;
    tls_error_msg(conn->tls->ssl, err, peer, x->msgbuf, sizeof x->msgbuf);
    x_finish(x, UPSTREAM_ERR_CONNECT, x->msgbuf, false);
}

/* One step of the handshake, after the connect and after each read. */
static void tls_handshake(struct h1_conn *conn)
{
    struct h1_tls *t = conn->tls;
    struct h1 *c = conn->c;
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    if (r != 1) {
        int e = SSL_get_error(t->ssl, r);
        if (e != SSL_ERROR_WANT_READ) {
            tls_handshake_failed(conn, e);
            return;
        }
        int rc = tls_flush(conn);
        if (rc < 0)
            tls_write_failed(conn, rc, false);
        return;
    }
    t->hs_done = true;
    if (SSL_session_reused(t->ssl))
        c->tls_resumed++;
    else
        c->tls_full++;
    /* The client's Finished goes out with the request, in one write. */
    x_connected(conn->x, conn);
}

static void tls_start(struct h1_xchg *x, struct h1_conn *conn)
{
    struct h1_pool *pool = conn->pool;
    if (!pool->ctx)
        pool->ctx = tls_ctx_get(&x->c->ctxs, pool->ca_file, x->msgbuf, sizeof x->msgbuf);
    if (!pool->ctx) {
        x_finish(x, UPSTREAM_ERR_CONNECT, x->msgbuf, false);
        return;
    }
    char name[256];
    const char *h = pool->host;
    size_t n = pool->host_len;
    if (h[0] == '[') {
        h++;
        n -= 2;
    }
    snprintf(name, sizeof name, "%.*s", (int)n, h);
    struct h1_tls *t = xcalloc(1, sizeof *t);
    conn->tls = t;
    t->ssl = tls_ssl_new(pool->ctx, name, &t->io, &pool->sess, !x->c->h2_off);
    if (!t->ssl) {
        snprintf(x->msgbuf, sizeof x->msgbuf, "TLS: cannot set up a connection to %s:%u",
                 pool->host, pool->port);
        x_finish(x, UPSTREAM_ERR_CONNECT, x->msgbuf, false);
        return;
    }
    tls_handshake(conn);
}

/* Decrypts t->io.in and feeds the plaintext to the exchange; on an idle
 * connection, anything but a session ticket closes it.  Ciphertext left
 * when the exchange pauses is kept in t->cpend. */
static void tls_pump(struct h1_conn *conn, bool defer)
{
    struct h1 *c = conn->c;
    struct h1_tls *t = conn->tls;
    if (conn->h2) {
        h2c_pump(conn);
        return;
    }
    char *buf = c->pbuf, *own = NULL;
    if (c->pbuf_busy)
        buf = own = xmalloc(H1_TLS_PLAIN); /* a callback resumed another exchange */
    else
        c->pbuf_busy = true;
    /* OpenSSL's error queue is emptied after every failure (tls_error_msg,
     * the paths below), so it is empty before each call without clearing
     * it first, which costs a thread-local lookup per call. */
    for (;;) {
        struct h1_xchg *x = conn->x;
        /* Not called without input: SSL_read would set up its 16 KB record
         * buffer to wait for the next header, and a waiting stream would
         * keep it (SSL_MODE_RELEASE_BUFFERS frees it once a record is
         * consumed). */
        if (t->io.in_len == 0 && !SSL_has_pending(t->ssl))
            break;
        int r = SSL_read(t->ssl, buf, H1_TLS_PLAIN);
        if (r > 0) {
            if (!x) {
                conn_close(conn); /* idle: the upstream sent something */
                break;
            }
            x->got_byte = true;
            x_feed(x, buf, (size_t)r, false, defer);
            if (conn->state == CONN_CLOSING || conn->x != x || x->paused)
                break;
            continue;
        }
        int e = SSL_get_error(t->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (!x) {
            conn_close(conn);
            break;
        }
        if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)) {
            ERR_clear_error();
            x_read_failed(x, UV_EOF, defer);
            break;
        }
        char peer[300];
        tls_peer(conn->pool, peer, sizeof peer);
        t->failed = true;
        tls_error_msg(t->ssl, e, peer, x->msgbuf, sizeof x->msgbuf);
        x_finish(x, UPSTREAM_ERR_RECV, x->msgbuf, defer);
        break;
    }
    if (own)
        free(own);
    else
        c->pbuf_busy = false;
    if (conn->state == CONN_CLOSING) {
        t->io.in_len = 0;
        return;
    }
    if (t->io.out_len > 0) {
        int rc = tls_flush(conn); /* OpenSSL answered something (a key update) */
        if (rc < 0) {
            t->io.in_len = 0;
            tls_write_failed(conn, rc, defer);
            return;
        }
    }
    if (conn->x && conn->x->paused && t->io.in_len > 0) {
        size_t keep = t->io.in_len;
        free(t->cpend);
        t->cpend = xmalloc(keep);
        memcpy(t->cpend, t->io.in, keep);
        t->cpend_len = keep;
    }
    t->io.in_len = 0;
}

static void tls_on_read(struct h1_conn *conn, ssize_t n, const uv_buf_t *b)
{
    struct h1_tls *t = conn->tls;
    struct h1_xchg *x = conn->x;
    if (n < 0 && conn->h2) {
        h2c_close(conn, UPSTREAM_ERR_RECV,
                  n == UV_EOF ? "upstream closed the connection before the response ended"
                              : "connection reset by upstream");
        return;
    }
    if (n < 0) {
        if (!x) {
            conn_close(conn);
        } else if (!t->hs_done) {
            t->failed = true;
            snprintf(x->msgbuf, sizeof x->msgbuf, "TLS handshake with %s:%u failed: %s",
                     conn->pool->host, conn->pool->port,
                     n == UV_EOF ? "connection closed by the peer" : uv_strerror((int)n));
            x_finish(x, UPSTREAM_ERR_CONNECT, x->msgbuf, false);
        } else {
            x_read_failed(x, (int)n, false);
        }
        return;
    }
    t->io.in = b->base;
    t->io.in_len = (size_t)n;
    if (!t->hs_done) {
        tls_handshake(conn);
        if (conn->state == CONN_CLOSING || !t->hs_done || (conn->x != x && !conn->h2) ||
            t->io.in_len == 0) {
            t->io.in_len = 0;
            return;
        }
    }
    tls_pump(conn, false);
}

/* ---- HTTP/2 connections ---------------------------------------------------
 *
 * A TLS connection whose peer chose "h2" by ALPN carries many exchanges
 * (h2.h does the framing): it stays CONN_ACTIVE with conn->x NULL, in its
 * pool's h2 list rather than the idle list, ref'd while it has streams.  An
 * exchange on it has x->h2s and x->h2c; x->conn stays NULL, so nothing that
 * ends one exchange closes the shared connection (x_close_conn cancels the
 * stream instead).  Bytes go through the same TLS paths as HTTP/1.1:
 * tls_pump() hands decrypted ones to h2c_pump(), and h2c_send() writes what
 * the session queues through SSL_write, flushed by tls_flush().  Results
 * reach the exchange through h2x_close(), which sends an unprocessed
 * request again once on another connection, as for a stale HTTP/1.1 one.
 * An exchange may also wait, X_CONNECTING without a connection, on its
 * pool's list for the connection being set up (pool->h2_pending) until
 * pool_wake(). */

static bool h2c_send(void *ud, const uint8_t *data, size_t len)
{
    struct h1_conn *conn = ud;
    if (conn->state == CONN_CLOSING)
        return false;
    while (len > 0) {
        int n = len > (1u << 30) ? 1 << 30 : (int)len;
        if (SSL_write(conn->tls->ssl, data, n) <= 0) {
            ERR_clear_error();
            conn->tls->failed = true;
            return false;
        }
        data += n;
        len -= (size_t)n;
    }
    return true;
}

static bool h2x_head(void *ud, int status, const struct upstream_hdr *hdrs, size_t n)
{
    struct h1_xchg *x = ud;
    x->got_byte = true;
    x->final_seen = true;
    x->busy = true;
    bool ok = x->cbs.head(x->ud, status, hdrs, n);
    x->busy = false;
    if (x->aborted) {
        x_recycle(x);
        return true; /* the stream was cancelled by h1_abort() */
    }
    return ok;
}

static size_t h2x_body(void *ud, const char *data, size_t len)
{
    struct h1_xchg *x = ud;
    x->busy = true;
    size_t r = x->cbs.body(x->ud, data, len);
    x->busy = false;
    if (x->aborted) {
        x_recycle(x);
        return len;
    }
    x->paused = r == UPSTREAM_PAUSE;
    return r;
}

static void h2x_sent(void *ud)
{
    struct h1_xchg *x = ud;
    x->write_done = true;
    x->sent_ms = now_mono_ms();
}

static void x_dispatch(struct h1_xchg *x, bool defer);

static void h2x_close(void *ud, enum upstream_rc rc, const char *msg, enum h2_retry retry)
{
    struct h1_xchg *x = ud;
    struct h1_conn *conn = x->h2c;
    bool defer = x->c->api > 0;
    x->h2s = NULL;
    x->h2c = NULL;
    x->paused = false;
    if (rc != UPSTREAM_OK && !x->retried &&
        (retry == H2_RETRY_SAFE || (retry == H2_RETRY_LOST && x->reused))) {
        x->retried = true;
        x->reused = x->write_done = x->got_byte = x->final_seen = false;
        x->sent_ms = 0;
        x_dispatch(x, defer);
    } else {
        if (rc == UPSTREAM_OK) {
            x_finish(x, rc, "", defer);
        } else {
            snprintf(x->msgbuf, sizeof x->msgbuf, "%s", msg);
            x_finish(x, rc, x->msgbuf, defer);
        }
    }
    if (conn)
        h2c_refresh(conn);
}

static const struct h2_ops h2c_ops = {
    .send = h2c_send,
    .head = h2x_head,
    .body = h2x_body,
    .sent = h2x_sent,
    .close = h2x_close,
};

/* The connection is over: every stream on it ends (see conn_close). */
static void h2c_close(struct h1_conn *conn, enum upstream_rc rc, const char *msg)
{
    if (conn->state == CONN_CLOSING)
        return;
    if (conn->h2)
        h2_sess_fail(conn->h2, rc, msg);
    conn_close(conn);
}

/* Sends what the session queued.  Not while a write is in flight: what
 * the server's frames ask for (PING and SETTINGS ACKs) then waits in the
 * session, where nghttp2 bounds it (a server that sends and never reads
 * is cut off), rather than piling up in io.out; on_tls_write flushes. */
static void h2c_flush(struct h1_conn *conn)
{
    if (conn->state == CONN_CLOSING || conn->write_pending)
        return;
    if (h2_sess_flush(conn->h2) < 0) {
        h2c_close(conn, UPSTREAM_ERR_SEND, h2_sess_error(conn->h2));
        return;
    }
    int rc = tls_flush(conn);
    if (rc < 0)
        h2c_close(conn, UPSTREAM_ERR_SEND, "could not send on the HTTP/2 connection");
}

/* After its streams changed: an idle connection does not keep the loop
 * running, and one that takes no more streams closes when the last ends. */
static void h2c_refresh(struct h1_conn *conn)
{
    if (conn->state == CONN_CLOSING)
        return;
    if (conn == conn->pool->h2_pending && h2_sess_ready(conn->h2)) {
        pool_wake(conn->pool);
        if (conn->state == CONN_CLOSING)
            return;
    }
    if (h2_sess_streams(conn->h2) > 0 && h2_sess_over(conn->h2)) {
        /* nghttp2 ended the session over a connection error of the server
         * (its GOAWAY is out, nothing more is read): the streams on it
         * would wait for nothing. */
        h2c_close(conn, UPSTREAM_ERR_PROTOCOL,
                  "malformed response from upstream: HTTP/2 connection error");
        return;
    }
    if (h2_sess_streams(conn->h2) > 0) {
        uv_ref((uv_handle_t *)&conn->tcp);
        return;
    }
    if (h2_sess_over(conn->h2) || !h2_sess_can_open(conn->h2)) {
        h2c_close(conn, UPSTREAM_ERR_RECV, "HTTP/2 connection ended");
        return;
    }
    conn->idle_since = uv_now(conn->c->loop);
    uv_unref((uv_handle_t *)&conn->tcp);
}

/* Decrypts what arrived and feeds the session; see tls_pump. */
static void h2c_pump(struct h1_conn *conn)
{
    struct h1 *c = conn->c;
    struct h1_tls *t = conn->tls;
    char *buf = c->pbuf, *own = NULL;
    if (c->pbuf_busy)
        buf = own = xmalloc(H1_TLS_PLAIN);
    else
        c->pbuf_busy = true;
    while (conn->state != CONN_CLOSING) {
        /* The records read back to back go to the session in one piece (a
         * response's HEADERS and DATA often come as two): one pass through
         * nghttp2 for both.  A failure is judged (and its message taken
         * from OpenSSL's queue) at once, and acted on after what came
         * before it was fed. */
        size_t fill = 0;
        int e = SSL_ERROR_NONE;
        char msg[192] = "";
        while (fill < H1_TLS_PLAIN && (t->io.in_len > 0 || SSL_has_pending(t->ssl))) {
            int r = SSL_read(t->ssl, buf + fill, (int)(H1_TLS_PLAIN - fill));
            if (r > 0) {
                fill += (size_t)r;
                continue;
            }
            e = SSL_get_error(t->ssl, r);
            if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)) {
                ERR_clear_error();
                e = SSL_ERROR_ZERO_RETURN;
            } else if (e != SSL_ERROR_WANT_READ) {
                char peer[300];
                tls_peer(conn->pool, peer, sizeof peer);
                t->failed = true;
                tls_error_msg(t->ssl, e, peer, msg, sizeof msg);
            }
            break;
        }
        if (fill > 0 && h2_sess_recv(conn->h2, buf, fill) < 0) {
            h2c_close(conn, UPSTREAM_ERR_PROTOCOL, h2_sess_error(conn->h2));
            break;
        }
        if (e == SSL_ERROR_NONE && fill > 0)
            continue; /* the buffer was full, or the input is used up: the test above tells */
        if (e == SSL_ERROR_ZERO_RETURN)
            h2c_close(conn, UPSTREAM_ERR_RECV,
                      "upstream closed the connection before the response ended");
        else if (e != SSL_ERROR_NONE && e != SSL_ERROR_WANT_READ)
            h2c_close(conn, UPSTREAM_ERR_RECV, msg);
        break;
    }
    if (own)
        free(own);
    else
        c->pbuf_busy = false;
    t->io.in_len = 0;
    h2c_flush(conn);
    h2c_refresh(conn);
}

/* A connection of the pool with room for one more stream. */
static struct h1_conn *h2c_pick(struct h1_pool *p)
{
    for (struct h1_conn *hc = p->h2_head; hc; hc = hc->h2_next)
        if (hc->state != CONN_CLOSING && h2_sess_can_open(hc->h2))
            return hc;
    return NULL;
}

/* After the handshake: the peer chose h2, so the connection becomes a
 * session and the exchange its first stream.  false: HTTP/1.1 as before. */
static bool h2c_begin(struct h1_xchg *x, struct h1_conn *conn)
{
    const unsigned char *proto = NULL;
    unsigned plen = 0;
    SSL_get0_alpn_selected(conn->tls->ssl, &proto, &plen);
    if (plen != 2 || memcmp(proto, "h2", 2) != 0)
        return false;
    struct h1 *c = conn->c;
    struct h1_pool *p = conn->pool;
    conn->h2 = h2_sess_new(&h2c_ops, conn);
    if (!conn->h2) {
        snprintf(x->msgbuf, sizeof x->msgbuf, "HTTP/2: cannot set up a session with %s:%u", p->host,
                 p->port);
        x_finish(x, UPSTREAM_ERR_CONNECT, x->msgbuf, false);
        return true;
    }
    p->h1_only = false;
    if (!p->h2_seen) {
        p->h2_seen = true;
        log_msg(LOG_DEBUG, "upstream %s:%u speaks HTTP/2", p->host, p->port);
    }
    /* h2c_pump reads every record there is (pauses are per stream, in the
     * session): one BIO read for all of them rather than two per record
     * (header, then body).  What is read ahead shows in SSL_has_pending. */
    SSL_set_read_ahead(conn->tls->ssl, 1);
    conn->state = CONN_ACTIVE;
    conn->x = NULL;
    x->conn = NULL;
    conn->h2_next = p->h2_head;
    p->h2_head = conn;
    c->n_h2++;
    conn->idle_since = uv_now(c->loop);
    if (!uv_is_active((uv_handle_t *)&c->sweep))
        uv_timer_start(&c->sweep, on_sweep, H1_SWEEP_MS, H1_SWEEP_MS);
    if (x->warm_only) {
        h2c_flush(conn);
        h2c_refresh(conn);
        x_finish(x, conn->state == CONN_CLOSING ? UPSTREAM_ERR_SEND : UPSTREAM_OK,
                 conn->state == CONN_CLOSING ? "warm-up: could not start HTTP/2" : "", false);
        return true;
    }
    x_h2_attach(x, conn, false);
    return true;
}

/* The exchange becomes a stream on conn. */
/* An exchange that has its connection: the timer keeps the overall
 * deadline (timeout_ms from the start), or none. */
static void x_arm_timeout(struct h1_xchg *x)
{
    if (x->timeout_ms > 0) {
        uint64_t used = uv_now(x->c->loop) - x->start_ms;
        uint64_t t = (uint64_t)x->timeout_ms;
        uv_timer_start(&x->timer, on_x_timeout, used < t ? t - used : 0, 0);
    } else {
        uv_timer_stop(&x->timer);
    }
}

static void x_h2_attach(struct h1_xchg *x, struct h1_conn *conn, bool defer)
{
    x->state = X_ACTIVE;
    x->conn = NULL;
    x->h2c = conn;
    x_arm_timeout(x);
    const char *h = x->head;
    struct h2_req r = {.method = h,
                       .method_len = x->m_len,
                       .path = h + x->path_off,
                       .path_len = x->path_len,
                       .authority = h + x->auth_off,
                       .authority_len = x->auth_len,
                       .headers = h + x->lines_off,
                       .headers_len = x->lines_len,
                       .content_length = x->cl_len ? h + x->cl_off : NULL,
                       .content_length_len = x->cl_len,
                       .body = x->body,
                       .body_len = x->body_len};
    x->h2s = h2_stream_open(conn->h2, &r, x, x->msgbuf, sizeof x->msgbuf);
    if (!x->h2s) {
        x->h2c = NULL;
        x_finish(x, UPSTREAM_ERR_SEND, x->msgbuf, defer);
        return;
    }
    uv_ref((uv_handle_t *)&conn->tcp);
    h2c_flush(conn);
}

/* Where an exchange goes: a stream on an HTTP/2 connection with room, an
 * idle HTTP/1.1 connection, or a new connection. */
static void x_dispatch(struct h1_xchg *x, bool defer)
{
    struct h1_pool *pool = x->pool;
    struct h1_conn *hc = h2c_pick(pool);
    if (hc) {
        x->reused = true;
        x_h2_attach(x, hc, defer);
        return;
    }
    struct h1_conn *conn = pool->idle_head;
    if (conn) {
        pool_unlink(conn);
        uv_ref((uv_handle_t *)&conn->tcp);
        x_attach(x, conn);
        x->reused = true;
        x_arm_timeout(x);
        x_send(x, defer);
        return;
    }
    if ((pool->h2_pending || pool->h2_leader) && pool->n_wait < H2_MAX_STREAMS) {
        /* A connection that is or may be HTTP/2 is being set up: a stream
         * on it, rather than a handshake of its own (see x_connect_start). */
        x->state = X_CONNECTING;
        x->waiting = true;
        x->wait_next = pool->wait_head;
        pool->wait_head = x;
        pool->n_wait++;
        uint64_t t =
            x->connect_timeout_ms > 0 ? (uint64_t)x->connect_timeout_ms : H1_CONNECT_TIMEOUT_MS;
        if (x->timeout_ms > 0) {
            uint64_t used = uv_now(x->c->loop) - x->start_ms, total = (uint64_t)x->timeout_ms;
            uint64_t left = used < total ? total - used : 0;
            if (left < t)
                t = left;
        }
        uv_timer_start(&x->timer, on_x_timeout, t, 0);
        return;
    }
    x_connect_start(x, defer);
}

static void pool_wait_unlink(struct h1_xchg *x)
{
    struct h1_pool *p = x->pool;
    for (struct h1_xchg **pp = &p->wait_head; *pp; pp = &(*pp)->wait_next) {
        if (*pp == x) {
            *pp = x->wait_next;
            p->n_wait--;
            break;
        }
    }
    x->wait_next = NULL;
    x->waiting = false;
}

/* The connection the pool's exchanges waited for is settled (its server's
 * SETTINGS arrived, it chose HTTP/1.1, or it failed): each waiter takes a
 * stream where one fits, or connects on its own. */
static void pool_wake(struct h1_pool *p)
{
    p->h2_pending = NULL;
    while (p->wait_head) {
        struct h1_xchg *x = p->wait_head;
        pool_wait_unlink(x);
        struct h1_conn *hc = h2c_pick(p);
        if (hc) {
            x->reused = true;
            x_h2_attach(x, hc, true);
        } else {
            x_connect_start(x, true);
        }
    }
}

/* ---- connecting ----------------------------------------------------------- */

static void x_attach(struct h1_xchg *x, struct h1_conn *conn)
{
    x->conn = conn;
    x->state = X_ACTIVE;
    conn->x = x;
    conn->state = CONN_ACTIVE;
    llhttp_init(&conn->parser, HTTP_RESPONSE, &x->c->settings);
    conn->parser.data = x;
    if (conn->tls)
        conn->tls->req_queued = false;
}

/* The connection is ready for the request (after the TLS handshake for
 * https:): the connect timeout gives way to the whole-exchange one. */
static void x_connected(struct h1_xchg *x, struct h1_conn *conn)
{
    if (conn->tls && h2c_begin(x, conn))
        return;
    if (conn->tls && !x->c->h2_off)
        conn->pool->h1_only = true; /* remembered: later bursts do not wait */
    if (conn == conn->pool->h2_pending)
        pool_wake(conn->pool); /* HTTP/1.1 after all: the waiters connect */
    if (x->warm_only) {
        /* The client's Finished still has to go; then the connection waits
         * in the pool for the next request. */
        conn->x = NULL;
        x->conn = NULL;
        if (conn->tls && tls_flush(conn) < 0) {
            conn_close(conn);
            x_finish(x, UPSTREAM_ERR_SEND, "warm-up: could not finish the TLS handshake", false);
            return;
        }
        pool_put(conn);
        x_finish(x, UPSTREAM_OK, "", false);
        return;
    }
    x_attach(x, conn);
    x_arm_timeout(x);
    x_send(x, false);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct h1_conn *conn = container_of(req, struct h1_conn, req.connect);
    if (conn->state == CONN_CLOSING)
        return;
    struct h1_xchg *x = conn->x;
    struct h1_pool *pool = conn->pool;
    if (status < 0) {
        char a[80] = "?";
        if (x->addr_idx < pool->n_addrs)
            addr_str(&pool->addrs[x->addr_idx], a, sizeof a);
        if (status == UV_ECONNREFUSED)
            snprintf(x->msgbuf, sizeof x->msgbuf, "connection refused (%s)", a);
        else
            snprintf(x->msgbuf, sizeof x->msgbuf, "connect to %s failed: %s", a,
                     uv_strerror(status));
        x->conn = NULL;
        conn_close(conn);
        x->addr_idx++;
        x_connect(x, false);
        return;
    }
    if (uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read) != 0) {
        snprintf(x->msgbuf, sizeof x->msgbuf, "connect to %s:%u failed: cannot read", pool->host,
                 pool->port);
        x_finish(x, UPSTREAM_ERR_CONNECT, x->msgbuf, false);
        return;
    }
    conn->reading = true;
    if (pool->tls) {
        tls_start(x, conn);
        return;
    }
    x_connected(x, conn);
}

/* Whether a new connection of the pool may turn out HTTP/2, so that others
 * wait for it rather than open their own (see x_connect_start). */
static bool pool_may_h2(const struct h1_pool *p)
{
    return p->tls && !p->c->h2_off && !p->h1_only;
}

/* Tries the pool's addresses from x->addr_idx on; the last failure is in
 * x->msgbuf when none is left. */
static void x_connect(struct h1_xchg *x, bool defer)
{
    struct h1 *c = x->c;
    struct h1_pool *pool = x->pool;
    x->state = X_CONNECTING;
    while (x->addr_idx < pool->n_addrs) {
        struct h1_conn *conn = conn_new(c, pool);
        uv_tcp_nodelay(&conn->tcp, 1);
        uv_tcp_keepalive(&conn->tcp, 1, H1_TCP_KEEPALIVE_S);
        int rc = uv_tcp_connect(&conn->req.connect, &conn->tcp,
                                (const struct sockaddr *)&pool->addrs[x->addr_idx], on_connect);
        if (rc == 0) {
            conn->x = x;
            x->conn = conn;
            if (pool->h2_leader == x || (pool_may_h2(pool) && !pool->h2_pending)) {
                pool->h2_leader = NULL;
                pool->h2_pending = conn; /* others wait for it: see x_dispatch */
            }
            return;
        }
        char a[80];
        addr_str(&pool->addrs[x->addr_idx], a, sizeof a);
        snprintf(x->msgbuf, sizeof x->msgbuf, "connect to %s failed: %s", a, uv_strerror(rc));
        conn_close(conn);
        x->addr_idx++;
    }
    if (x->addr_idx == 0)
        snprintf(x->msgbuf, sizeof x->msgbuf, "no address for %s", pool->host);
    x_finish(x, UPSTREAM_ERR_CONNECT, x->msgbuf, defer);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct h1_dns *d = container_of(req, struct h1_dns, req);
    struct h1 *c = d->c;
    struct h1_pool *pool = d->pool;
    struct h1_xchg *x = d->x;
    if (status == 0) {
        size_t n = 0;
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
            if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6)
                n++;
        if (n > 0) {
            struct sockaddr_storage *addrs = xcalloc(n, sizeof *addrs);
            size_t i = 0;
            for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
                if (ai->ai_family == AF_INET) {
                    memcpy(&addrs[i], ai->ai_addr, sizeof(struct sockaddr_in));
                    ((struct sockaddr_in *)&addrs[i++])->sin_port = htons((uint16_t)pool->port);
                } else if (ai->ai_family == AF_INET6) {
                    memcpy(&addrs[i], ai->ai_addr, sizeof(struct sockaddr_in6));
                    ((struct sockaddr_in6 *)&addrs[i++])->sin6_port = htons((uint16_t)pool->port);
                }
            }
            free(pool->addrs);
            pool->addrs = addrs;
            pool->n_addrs = n;
            pool->addrs_expire = uv_now(c->loop) + H1_DNS_TTL_MS;
        } else {
            status = UV_EAI_NONAME;
        }
    }
    uv_freeaddrinfo(res);
    free(d);
    c->n_handles--;
    if (x) {
        x->dns = NULL;
        if (status == 0) {
            x->addr_idx = 0;
            x_connect(x, false);
        } else {
            snprintf(x->msgbuf, sizeof x->msgbuf, "could not resolve host %s", pool->host);
            x_finish(x, UPSTREAM_ERR_CONNECT, x->msgbuf, false);
        }
    }
    h1_maybe_free(c);
}

static void x_resolve(struct h1_xchg *x, bool defer)
{
    struct h1 *c = x->c;
    struct h1_dns *d = xmalloc(sizeof *d);
    d->c = c;
    d->pool = x->pool;
    d->x = x;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    x->state = X_RESOLVING;
    int rc = uv_getaddrinfo(c->loop, &d->req, on_resolved, x->pool->host, NULL, &hints);
    if (rc != 0) {
        free(d);
        snprintf(x->msgbuf, sizeof x->msgbuf, "could not resolve host %s", x->pool->host);
        x_finish(x, UPSTREAM_ERR_CONNECT, x->msgbuf, defer);
        return;
    }
    c->n_handles++;
    x->dns = d;
}

/* A new connection: the connect timeout runs from here (capped by what is
 * left of the whole-exchange timeout), through the lookup if one is needed.
 * While the pool's protocol may be h2 (an https: pool that has not answered
 * HTTP/1.1 to an offer of h2: on first contact, or once it chose h2) the
 * first exchange to connect leads: the exchanges after it wait (x_dispatch)
 * for its connection's ALPN answer, then share it or connect on their own
 * (pool_wake).  The lookup is inside that wait, so a host name's first
 * burst also costs one handshake. */
static void x_connect_start(struct h1_xchg *x, bool defer)
{
    struct h1 *c = x->c;
    struct h1_pool *pool = x->pool;
    uint64_t now = uv_now(c->loop);
    if (pool_may_h2(pool) && !pool->h2_pending && !pool->h2_leader)
        pool->h2_leader = x;
    uint64_t t =
        x->connect_timeout_ms > 0 ? (uint64_t)x->connect_timeout_ms : H1_CONNECT_TIMEOUT_MS;
    if (x->timeout_ms > 0) {
        uint64_t used = now - x->start_ms, total = (uint64_t)x->timeout_ms;
        uint64_t left = used < total ? total - used : 0;
        if (left < t)
            t = left;
    }
    uv_timer_start(&x->timer, on_x_timeout, t, 0);
    x->addr_idx = 0;
    if (pool->numeric || (pool->n_addrs > 0 && now < pool->addrs_expire))
        x_connect(x, defer);
    else
        x_resolve(x, defer);
}

static void on_x_timeout(uv_timer_t *t)
{
    struct h1_xchg *x = t->data;
    uint64_t used = uv_now(x->c->loop) - x->start_ms;
    bool overall = x->timeout_ms > 0 && used >= (uint64_t)x->timeout_ms;
    if (!overall && (x->state == X_CONNECTING || x->state == X_RESOLVING)) {
        long ct = x->connect_timeout_ms > 0 ? x->connect_timeout_ms : H1_CONNECT_TIMEOUT_MS;
        char a[80];
        if (x->state == X_CONNECTING && x->conn && x->conn->tls) {
            snprintf(x->msgbuf, sizeof x->msgbuf, "TLS handshake with %s:%u timed out after %ld ms",
                     x->pool->host, x->pool->port, ct);
            x_finish(x, UPSTREAM_ERR_CONNECT, x->msgbuf, false);
            return;
        }
        if (x->state == X_CONNECTING && x->addr_idx < x->pool->n_addrs)
            addr_str(&x->pool->addrs[x->addr_idx], a, sizeof a);
        else
            snprintf(a, sizeof a, "%s:%u", x->pool->host, x->pool->port);
        snprintf(x->msgbuf, sizeof x->msgbuf, "connect to %s timed out after %ld ms", a, ct);
        x_finish(x, UPSTREAM_ERR_CONNECT, x->msgbuf, false);
        return;
    }
    snprintf(x->msgbuf, sizeof x->msgbuf, "timed out after %ld ms", x->timeout_ms);
    x_finish(x, UPSTREAM_ERR_TIMEOUT, x->msgbuf, false);
}

/* ---- the request head ----------------------------------------------------- */

static char *put(char *p, const void *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

/* "METHOD target HTTP/1.1", Host, the caller's lines, Content-Length. */
static void x_build_head(struct h1_xchg *x, const struct upstream_request *req,
                         const struct h1_url *u, size_t mlen)
{
    char num[24];
    size_t nlen = 0;
    if (req->send_length) {
        unsigned long long v = req->body_len;
        char *e = num + sizeof num;
        do {
            *--e = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        nlen = (size_t)(num + sizeof num - e);
        memmove(num, e, nlen);
    }
    bool slash = u->path_len == 0 || u->path[0] != '/';
    size_t hlen = req->headers ? req->headers_len : 0;
    size_t need = mlen + 1 + (slash ? 1 : 0) + u->path_len + 11 + 6 + u->auth_len + 2 + hlen +
                  (req->send_length ? 16 + nlen + 2 : 0) + 2;
    if (need > x->head_size) {
        size_t size = x->head_size ? x->head_size : 512;
        while (size < need)
            size *= 2;
        free(x->head);
        x->head = xmalloc(size);
        x->head_size = size;
    }
    char *p = x->head;
    p = put(p, req->method, mlen);
    *p++ = ' ';
    x->m_len = mlen;
    x->path_off = (size_t)(p - x->head);
    if (slash)
        *p++ = '/';
    p = put(p, u->path, u->path_len);
    x->path_len = (size_t)(p - x->head) - x->path_off;
    p = put(p, " HTTP/1.1\r\nHost: ", 17);
    x->auth_off = (size_t)(p - x->head);
    x->auth_len = u->auth_len;
    p = put(p, u->auth, u->auth_len);
    p = put(p, "\r\n", 2);
    x->lines_off = (size_t)(p - x->head);
    x->lines_len = hlen;
    if (hlen)
        p = put(p, req->headers, hlen);
    x->cl_off = x->cl_len = 0;
    if (req->send_length) {
        p = put(p, "Content-Length: ", 16);
        x->cl_off = (size_t)(p - x->head);
        x->cl_len = nlen;
        p = put(p, num, nlen);
        p = put(p, "\r\n", 2);
    }
    p = put(p, "\r\n", 2);
    x->head_len = (size_t)(p - x->head);
}

/* ---- the interface -------------------------------------------------------- */

struct h1 *h1_new(uv_loop_t *loop)
{
    struct h1 *c = xcalloc(1, sizeof *c);
    c->loop = loop;
    llhttp_settings_init(&c->settings);
    c->settings.on_message_begin = on_message_begin;
    c->settings.on_status = on_status;
    c->settings.on_header_field = on_header_field;
    c->settings.on_header_field_complete = on_header_field_complete;
    c->settings.on_header_value = on_header_value;
    c->settings.on_headers_complete = on_headers_complete;
    c->settings.on_body = on_body;
    c->settings.on_message_complete = on_message_complete;
    uv_timer_init(loop, &c->sweep);
    c->sweep.data = c;
    uv_unref((uv_handle_t *)&c->sweep);
    c->n_handles = 1;
    return c;
}

void h1_free(struct h1 *c)
{
    if (!c)
        return;
    c->free_requested = true;
    for (size_t i = 0; i < H1_POOL_BUCKETS; i++) {
        for (struct h1_pool *p = c->pools[i]; p; p = p->next) {
            if (p->warm_x) {
                h1_abort(&p->warm_x->base);
                p->warm_x = NULL;
            }
            while (p->idle_head)
                conn_close(p->idle_head);
            while (p->h2_head)
                conn_close(p->h2_head);
        }
    }
    while (c->free_x) {
        struct h1_xchg *x = c->free_x;
        c->free_x = x->next_free;
        uv_close((uv_handle_t *)&x->timer, on_xchg_closed);
    }
    c->n_free = 0;
    uv_close((uv_handle_t *)&c->sweep, on_handle_closed_count);
}

struct upstream_xfer *h1_start(struct h1 *c, const struct upstream_request *req,
                               const struct upstream_cbs *cbs, void *ud)
{
    struct h1_url u;
    if (!req->method || !req->url || url_parse(req->url, &u) != 0)
        return NULL;
    size_t mlen = 0;
    while (req->method[mlen]) {
        if (!is_tchar((unsigned char)req->method[mlen]))
            return NULL;
        mlen++;
    }
    if (mlen == 0)
        return NULL;
    struct h1_pool *pool = pool_get(c, u.host, u.host_len, u.port, u.tls, req->ca_file);
    if (!pool)
        return NULL;
    struct h1_xchg *x = x_get(c);
    x->pool = pool;
    x->conn = NULL;
    x->dns = NULL;
    x->cbs = *cbs;
    x->ud = ud;
    x->body = req->body;
    x->body_len = req->body ? req->body_len : 0;
    x->hdr_bytes = 0;
    x->hb_len = 0;
    x->nhdrs = 0;
    x->in_field = false;
    x->start_ms = uv_now(c->loop);
    x->timeout_ms = req->timeout_ms > 0 ? req->timeout_ms : 0;
    x->connect_timeout_ms = req->connect_timeout_ms;
    x->addr_idx = 0;
    x->rc = UPSTREAM_OK;
    x->msg = "";
    x->is_head = mlen == 4 && memcmp(req->method, "HEAD", 4) == 0;
    x->warm_only = false;
    if (req->keep_warm) {
        c->used_until = pool->warm_until = x->start_ms + H1_WARM_MS;
        warm_sweep_on(c);
    }
    x->reused = x->retried = x->got_byte = x->write_done = false;
    x->sent_ms = 0;
    x->final_seen = x->complete = x->paused = x->busy = x->aborted = false;
    x_build_head(x, req, &u, mlen);
    x->h2s = NULL;
    x->h2c = NULL;
    x->waiting = false;
    x->wait_next = NULL;
    c->api++;
    x_dispatch(x, true);
    c->api--;
    return &x->base;
}

void h1_warm(struct h1 *c, const char *url, const char *ca_file, bool on)
{
    struct h1_url u;
    if (!url || url_parse(url, &u) != 0)
        return;
    struct h1_pool *p = pool_get(c, u.host, u.host_len, u.port, u.tls, ca_file);
    if (!p)
        return;
    p->standby = on;
    if (!on) {
        p->warm_until = 0; /* neither current nor next: no more warm-ups */
        return;
    }
    if (pool_warm(c, p, uv_now(c->loop)))
        warm_sweep_on(c);
}

void h1_resume(struct upstream_xfer *xf)
{
    struct h1_xchg *x = (struct h1_xchg *)xf;
    if (!x || x->state != X_ACTIVE || !x->paused || x->busy)
        return;
    if (x->h2s) {
        struct h1_conn *hc = x->h2c;
        hc->c->api++;
        x->paused = false;
        h2_stream_resume(x->h2s); /* may end the exchange, deferred */
        h2c_flush(hc);            /* the window update */
        hc->c->api--;
        return;
    }
    struct h1_conn *conn = x->conn;
    size_t blen = conn->pend_body;
    x->paused = false;
    x->busy = true;
    size_t r = x->cbs.body(x->ud, conn->pend, blen);
    x->busy = false;
    if (x->aborted) {
        x_recycle(x);
        return;
    }
    if (r == UPSTREAM_PAUSE) {
        x->paused = true;
        return;
    }
    if (r != blen) {
        x_finish(x, UPSTREAM_ERR_ABORTED, "stopped by the body callback", true);
        return;
    }
    llhttp_resume(&conn->parser);
    conn->pend_body = 0;
    x_feed(x, conn->pend + blen, conn->pend_len - blen, true, true);
    if (x->state != X_ACTIVE || x->paused || x->conn != conn)
        return;
    free(conn->pend);
    conn->pend = NULL;
    conn->pend_len = 0;
    if (conn->tls && conn->tls->cpend_len > 0) {
        /* Ciphertext that came after the paused record. */
        struct h1_tls *t = conn->tls;
        char *cp = t->cpend; /* taken: tls_pump keeps what a new pause leaves */
        t->io.in = cp;
        t->io.in_len = t->cpend_len;
        t->cpend = NULL;
        t->cpend_len = 0;
        tls_pump(conn, true);
        free(cp);
        if (x->state != X_ACTIVE || x->paused || x->conn != conn)
            return;
    }
    if (uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read) != 0) {
        x_finish(x, UPSTREAM_ERR_RECV, "receive failed: cannot read", true);
        return;
    }
    conn->reading = true;
}

void h1_abort(struct upstream_xfer *xf)
{
    struct h1_xchg *x = (struct h1_xchg *)xf;
    if (!x || x->state == X_FREE || x->state == X_IN_DONE || x->aborted)
        return;
    if (x->state == X_DONE_PENDING) {
        x_recycle(x);
        return;
    }
    if (x->dns) {
        x->dns->x = NULL;
        uv_cancel((uv_req_t *)&x->dns->req);
        x->dns = NULL;
    }
    x->c->api++;
    x_close_conn(x);
    x->c->api--;
    if (x->busy) {
        x->aborted = true; /* recycled once the callback has returned */
        uv_timer_stop(&x->timer);
        return;
    }
    x_recycle(x);
}

void h1_tls_counts(const struct h1 *c, uint64_t *full, uint64_t *resumed)
{
    *full = c->tls_full;
    *resumed = c->tls_resumed;
}

void h1_counts(const struct h1 *c, size_t *open, size_t *idle)
{
    if (open)
        *open = c->n_open;
    if (idle) {
        size_t n = c->n_idle; /* and the HTTP/2 connections without a stream */
        for (size_t i = 0; i < H1_POOL_BUCKETS; i++)
            for (const struct h1_pool *p = c->pools[i]; p; p = p->next)
                for (const struct h1_conn *hc = p->h2_head; hc; hc = hc->h2_next)
                    n += h2_sess_streams(hc->h2) == 0;
        *idle = n;
    }
}

void h1_h2_counts(const struct h1 *c, size_t *conns, size_t *streams)
{
    size_t n = 0;
    for (size_t i = 0; i < H1_POOL_BUCKETS; i++)
        for (const struct h1_pool *p = c->pools[i]; p; p = p->next)
            for (const struct h1_conn *hc = p->h2_head; hc; hc = hc->h2_next)
                n += h2_sess_streams(hc->h2);
    *conns = c->n_h2;
    *streams = n;
}

void h1_set_http2(struct h1 *c, bool on)
{
    c->h2_off = !on;
}

uint64_t h1_sent_ms(const struct upstream_xfer *ux)
{
    const struct h1_xchg *x = (const struct h1_xchg *)ux;
    return x->sent_ms;
}
