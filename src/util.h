/*
 * util: allocation wrappers that abort on failure, a growable byte buffer
 * with a hard cap, and clocks.  Allocation failure is not an error path in
 * this program: xmalloc() and friends print one line and abort, so every
 * real error path is about input, never about memory.
 */
#ifndef ZEPHYR_UTIL_H
#define ZEPHYR_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Monotonic milliseconds, for every timeout and age. */
uint64_t now_mono_ms(void);
/* Wall-clock milliseconds since the epoch, for what is shown to people. */
uint64_t now_wall_ms(void);

/*
 * exp() and llround() without libm: these were the program's only libm
 * functions, and mapping libm.so costs every process ~0.4 MB of resident
 * memory (see docs/DESIGN.md, idle memory).  util_exp is within a few
 * ulp of exp() (relative error < 1e-15); it returns 0 below -708 (where
 * exp() gives subnormals) and +inf above 709.  util_llround rounds half away from zero; NaN gives 0 and
 * values beyond long long saturate.
 */
double util_exp(double x);
long long util_llround(double x);

/*
 * A byte buffer that grows up to cap bytes.  buf_append() returns -1 and
 * appends nothing when the result would exceed cap: the caller answers that
 * on the wire (413, 431, 502).
 */
struct buf {
    char *data; /* owns; NUL-terminated after every append */
    size_t len;
    size_t size;
    size_t cap;
};
void buf_init(struct buf *b, size_t cap);
void buf_release(struct buf *b);
int buf_append(struct buf *b, const void *p, size_t n);
int buf_appendf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends a C string / an unsigned number in decimal (no printf). */
int buf_append_str(struct buf *b, const char *s);
int buf_append_ull(struct buf *b, unsigned long long v);
void buf_reset(struct buf *b);
/* Removes the first n bytes. */
void buf_consume(struct buf *b, size_t n);

/* Appends s as a JSON string literal (quotes and escapes included). */
void buf_append_json_str(struct buf *b, const char *s);

/*
 * Reads the whole file at path into b (which must be empty; its cap bounds
 * the size).  Returns 0, -1 with errno set when the file cannot be read,
 * or -2 when it is larger than b's cap.
 */
int buf_read_file(struct buf *b, const char *path);

/* The length at most n that does not end inside a UTF-8 sequence of s. */
size_t utf8_cut(const char *s, size_t n);

/* ASCII case-insensitive comparison of a view against a C string. */
int strn_ieq(const char *a, size_t alen, const char *b);

/*
 * Whether an address to bind to (or a host name without a port) stays on
 * this machine: "localhost", an IPv4 literal in 127.0.0.0/8, "::1", or
 * ::ffff:127.x.y.z.  Literals are parsed as literals (inet_pton), never
 * matched by prefix: "127.evil.example" is a name, not loopback.
 */
int host_is_loopback(const char *host);

/* Marks every open descriptor above 2 close-on-exec, whoever opened it
 * (libcurl's multi handle opens a socketpair without the flag).  Called
 * before a child is spawned; procfs only, so it never blocks. */
void fd_cloexec_all(void);
/*
 * Whether a proxy variable libcurl honours is set for the schemes in which:
 * ENV_PROXY_HTTP looks at http_proxy, HTTP_PROXY, all_proxy and ALL_PROXY;
 * ENV_PROXY_HTTPS at https_proxy, HTTPS_PROXY and the all_proxy pair.  The
 * one rule for "a proxy variable is set", so that the choice of client
 * (upstream.c) and what libcurl is told (fetch.c) cannot drift apart.  Reads
 * the environment: call it at start-up, not per request.
 */
enum { ENV_PROXY_HTTP = 1, ENV_PROXY_HTTPS = 2 };
bool env_proxy_set(unsigned which);

/* A random number for seeds (request ids), never blocking: getrandom's,
 * mixed with now_wall and the pid when the kernel has none yet. */
uint32_t random_u32(uint64_t now_wall);

#endif
