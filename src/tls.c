/*
 * tls: see tls.h.
 *
 * The custom BIO is the whole transport: reads take from io->in (the loop's
 * read buffer, consumed in place) and say "retry" when it is empty; writes
 * append to io->out.  OpenSSL never touches the socket, so the loop never
 * blocks and no thread is involved.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "util.h"

struct tls_ctxs {
    struct tls_ctxs *next; /* owns */
    SSL_CTX *ctx;          /* owns */
    char ca_file[];        /* "" for the system store */
};

/* ---- the memory BIO -------------------------------------------------------- */

static int on_bio_write(BIO *b, const char *data, int len)
{
    struct tls_io *io = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    size_t need = io->out_len + (size_t)len;
    if (need > io->out_cap) {
        size_t cap = io->out_cap ? io->out_cap : 4096;
        while (cap < need)
            cap *= 2;
        io->out = xrealloc(io->out, cap);
        io->out_cap = cap;
    }
    memcpy(io->out + io->out_len, data, (size_t)len);
    io->out_len = need;
    return len;
}

static int on_bio_read(BIO *b, char *buf, int len)
{
    struct tls_io *io = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    if (io->in_len == 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    size_t n = io->in_len < (size_t)len ? io->in_len : (size_t)len;
    memcpy(buf, io->in, n);
    io->in += n;
    io->in_len -= n;
    return (int)n;
}

static long on_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int on_bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static BIO_METHOD *bio_method(void)
{
    /* One method table for the process; OpenSSL keeps its own global state
     * the same way. */
    static BIO_METHOD *m;
    if (!m) {
        m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "zephyr-mem");
        if (!m)
            return NULL;
        BIO_meth_set_write(m, on_bio_write);
        BIO_meth_set_read(m, on_bio_read);
        BIO_meth_set_ctrl(m, on_bio_ctrl);
        BIO_meth_set_create(m, on_bio_create);
    }
    return m;
}

/* ---- contexts -------------------------------------------------------------- */

/* Keeps each new session in the connection's slot: the next connection to
 * the same host:port offers it (TLS 1.3 tickets arrive after the handshake,
 * TLS 1.2 sessions during it). */
static int on_new_session(SSL *ssl, SSL_SESSION *s)
{
    SSL_SESSION **slot = SSL_get_app_data(ssl);
    if (!slot)
        return 0;
    if (*slot)
        SSL_SESSION_free(*slot);
    *slot = s;
    return 1; /* the reference is ours now */
}

static void ssl_reason(char *out, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(out, len, "%s", r ? r : "unknown error");
    ERR_clear_error();
}

static SSL_CTX *ctx_new(const char *ca_file, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        char r[128];
        ssl_reason(r, sizeof r);
        snprintf(err, errlen, "TLS: cannot set up OpenSSL: %s", r);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* Idle and waiting connections keep no record buffers (~34 KB each). */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* A close without close_notify reads as an ordinary EOF: HTTP's own
     * framing tells a cut-off response, as it does over plain TCP. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);
    int ok = 1;
    const char *what = ca_file;
    if (ca_file && *ca_file) {
        ok = SSL_CTX_load_verify_file(ctx, ca_file);
    } else {
        /* As SSL_CTX_set_default_verify_paths, but the default bundle file
         * only when there is no hashed directory to look certificates up
         * in one at a time. */
        const char *f = getenv(X509_get_default_cert_file_env());
        const char *d = getenv(X509_get_default_cert_dir_env());
        if (!d || !*d)
            d = X509_get_default_cert_dir();
        struct stat st;
        bool have_dir = stat(d, &st) == 0 && S_ISDIR(st.st_mode);
        if ((!f || !*f) && !have_dir)
            f = X509_get_default_cert_file();
        if (f && *f) {
            what = f;
            ok = SSL_CTX_load_verify_file(ctx, f);
        }
        if (ok && have_dir) {
            what = d;
            ok = SSL_CTX_load_verify_dir(ctx, d);
        }
    }
    if (!ok) {
        char r[128];
        ssl_reason(r, sizeof r);
        snprintf(err, errlen, "TLS: cannot load CA certificates from %s: %s", what ? what : "?", r);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

SSL_CTX *tls_ctx_get(struct tls_ctxs **l, const char *ca_file, char *err, size_t errlen)
{
    const char *key = ca_file ? ca_file : "";
    for (struct tls_ctxs *e = *l; e; e = e->next)
        if (strcmp(e->ca_file, key) == 0)
            return e->ctx;
    if (!bio_method()) {
        snprintf(err, errlen, "TLS: cannot set up OpenSSL's I/O");
        return NULL;
    }
    SSL_CTX *ctx = ctx_new(ca_file, err, errlen);
    if (!ctx)
        return NULL; /* not cached: a fixed ca_file is picked up next time */
    size_t n = strlen(key);
    struct tls_ctxs *e = xmalloc(sizeof *e + n + 1);
    memcpy(e->ca_file, key, n + 1);
    e->ctx = ctx;
    e->next = *l;
    *l = e;
    return ctx;
}

void tls_ctxs_free(struct tls_ctxs *l)
{
    while (l) {
        struct tls_ctxs *next = l->next;
        SSL_CTX_free(l->ctx);
        free(l);
        l = next;
    }
}

/* ---- connections ----------------------------------------------------------- */

SSL *tls_ssl_new(SSL_CTX *ctx, const char *host, struct tls_io *io, SSL_SESSION **sess_slot,
                 bool h2)
{
    SSL *ssl = SSL_new(ctx);
    BIO *b = ssl ? BIO_new(bio_method()) : NULL;
    if (!b) {
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    BIO_set_data(b, io);
    SSL_set_bio(ssl, b, b);
    SSL_set_connect_state(ssl);
    SSL_set_app_data(ssl, sess_slot);
    unsigned char a[16];
    bool ip = inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
    int ok;
    if (ip) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
    } else {
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        ok = SSL_set_tlsext_host_name(ssl, host) && SSL_set1_host(ssl, host);
    }
    if (!ok) {
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    if (h2) {
        static const unsigned char alpn[] = "\x02h2\x08http/1.1";
        SSL_set_alpn_protos(ssl, alpn, sizeof alpn - 1);
    }
    if (*sess_slot)
        SSL_set_session(ssl, *sess_slot);
    return ssl;
}

void tls_ssl_free(SSL *ssl, bool clean)
{
    if (!ssl)
        return;
    /* Without this OpenSSL marks the session not resumable when the SSL
     * is freed: an HTTP connection is closed without the close_notify
     * exchange, which is not a sign that the session is bad. */
    if (clean)
        SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(ssl);
}

void tls_error_msg(SSL *ssl, int err, const char *peer, char *out, size_t len)
{
    long vr = SSL_get_verify_result(ssl);
    unsigned long e = ERR_peek_last_error();
    if (vr != X509_V_OK) {
        snprintf(out, len, "TLS: certificate verify failed for %s: %s", peer,
                 X509_verify_cert_error_string(vr));
    } else if (e) {
        const char *r = ERR_reason_error_string(e);
        snprintf(out, len, "TLS with %s failed: %s", peer, r ? r : "unknown error");
    } else if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN) {
        snprintf(out, len, "TLS handshake with %s failed: connection closed by the peer", peer);
    } else {
        snprintf(out, len, "TLS with %s failed (OpenSSL error %d)", peer, err);
    }
    ERR_clear_error();
}
