/*
 * tls: OpenSSL for the built-in client (h1.c), driven through memory on the
 * libuv loop.
 *
 * - No socket BIO: a small custom BIO reads ciphertext from the bytes the
 *   loop just read (struct tls_io .in, consumed in place, never copied) and
 *   appends what OpenSSL writes to .out, which h1 flushes with
 *   uv_try_write/uv_write.  So a TLS connection keeps no buffer of its own
 *   while it waits (SSL_MODE_RELEASE_BUFFERS drops OpenSSL's record buffers
 *   too).
 * - One SSL_CTX per CA source (the system store or one ca_file), created on
 *   first use and kept by the caller's struct tls_ctxs.  Peers are verified
 *   (SSL_VERIFY_PEER) with the host name or IP address checked; SNI is sent
 *   for names, never for IP literals; ALPN offers h2 and http/1.1 (or
 *   http/1.1 alone, per connection); TLS 1.2 at least.
 * - The system store is the hashed certificate directory (looked up lazily,
 *   certificate by certificate) rather than the whole bundle file, which
 *   would parse ~140 certificates into memory up front; SSL_CERT_FILE /
 *   SSL_CERT_DIR are honoured as OpenSSL does.
 * - Session resumption: the caller passes a slot (one per host:port pool)
 *   where every new session the server issues is kept, and which the next
 *   connection offers.
 */
#ifndef ZEPHYR_TLS_H
#define ZEPHYR_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

/* What the custom BIO reads from and writes to. */
struct tls_io {
    const char *in; /* borrows: ciphertext not yet consumed */
    size_t in_len;
    char *out; /* owns: ciphertext to send */
    size_t out_len, out_cap;
};

struct tls_ctxs;

void tls_ctxs_free(struct tls_ctxs *l);
/* The context for ca_file (NULL: the system store), created on first use
 * into *l.  NULL, with a message naming the problem in err, when the
 * ca_file cannot be loaded. */
SSL_CTX *tls_ctx_get(struct tls_ctxs **l, const char *ca_file, char *err, size_t errlen);

/* A client SSL for host (no brackets; an IP literal gets no SNI and an IP
 * check), reading and writing through io.  *sess_slot is offered for
 * resumption and receives each new session; it must outlive the SSL.
 * h2: ALPN offers "h2" before "http/1.1". */
SSL *tls_ssl_new(SSL_CTX *ctx, const char *host, struct tls_io *io, SSL_SESSION **sess_slot,
                 bool h2);
/* Frees ssl; a connection that ended without a TLS error keeps its session
 * resumable. */
void tls_ssl_free(SSL *ssl, bool clean);

/* A message for a failed SSL call (ret, its SSL_get_error code): the
 * verification result when the certificate was refused, else OpenSSL's
 * reason.  Always starts with "TLS". */
void tls_error_msg(SSL *ssl, int err, const char *peer, char *out, size_t len);

#endif
