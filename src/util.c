/*
 * util: see util.h.  Everything here is small and has no state.
 */
#include "util.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static void oom(size_t n)
{
    fprintf(stderr, "claude-zephyr: out of memory allocating %zu bytes\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *xasprintf(const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        oom(0);
    if ((size_t)n < sizeof small)
        return xstrndup(small, (size_t)n);
    char *p = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

uint64_t now_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t now_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

double util_exp(double x)
{
    if (x != x)
        return x;
    if (x > 709.0)
        return 1e308 * 10.0; /* +inf */
    if (x < -708.0)
        return 0.0;
    /* x = k ln2 + r with |r| <= ln2 / 2 (ln2 in two parts, as fdlibm does,
     * so that r keeps its precision), e^r by its Taylor series (the 15th
     * term is below 1e-17), then 2^k put into the exponent bits. */
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    double kd = x * 1.44269504088896338700e+00;
    int k = (int)(kd < 0 ? kd - 0.5 : kd + 0.5);
    double r = (x - k * ln2_hi) - k * ln2_lo;
    double sum = 1.0, term = 1.0;
    for (int i = 1; i <= 15; i++) {
        term *= r / i;
        sum += term;
    }
    uint64_t bits = (uint64_t)(k + 1023) << 52; /* k is within [-1021, 1023] */
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return sum * scale;
}

long long util_llround(double x)
{
    if (x != x)
        return 0;
    if (x >= 9.2e18)
        return INT64_MAX;
    if (x <= -9.2e18)
        return INT64_MIN;
    long long t = (long long)x; /* toward zero */
    double f = x - (double)t;   /* exact: |x| < 2^63 */
    if (f >= 0.5)
        t++;
    else if (f <= -0.5)
        t--;
    return t;
}

void buf_init(struct buf *b, size_t cap)
{
    b->data = NULL;
    b->len = 0;
    b->size = 0;
    b->cap = cap;
}

void buf_release(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->size = 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    if (n > b->cap || b->len > b->cap - n)
        return -1;
    if (b->len + n + 1 > b->size) {
        size_t want = b->size ? b->size : 256;
        while (want < b->len + n + 1)
            want *= 2;
        b->data = xrealloc(b->data, want);
        b->size = want;
    }
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int buf_appendf(struct buf *b, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    if ((size_t)n < sizeof small)
        return buf_append(b, small, (size_t)n);
    char *big = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = buf_append(b, big, (size_t)n);
    free(big);
    return rc;
}

int buf_append_str(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_append_ull(struct buf *b, unsigned long long v)
{
    char d[24];
    size_t i = sizeof d;
    do {
        d[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return buf_append(b, d + i, sizeof d - i);
}

void buf_reset(struct buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void buf_consume(struct buf *b, size_t n)
{
    if (n >= b->len) {
        buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

int strn_ieq(const char *a, size_t alen, const char *b)
{
    return strlen(b) == alen && strncasecmp(a, b, alen) == 0;
}

int host_is_loopback(const char *host)
{
    unsigned char a[16];
    if (strcasecmp(host, "localhost") == 0)
        return 1;
    if (inet_pton(AF_INET, host, a) == 1)
        return a[0] == 127;
    if (inet_pton(AF_INET6, host, a) == 1) {
        static const unsigned char one[16] = {[15] = 1};
        static const unsigned char v4mapped[12] = {[10] = 0xff, [11] = 0xff};
        return memcmp(a, one, 16) == 0 || (memcmp(a, v4mapped, 12) == 0 && a[12] == 127);
    }
    return 0;
}

void buf_append_json_str(struct buf *b, const char *s)
{
    buf_append(b, "\"", 1);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            buf_appendf(b, "\\%c", ch);
        else if (ch < 0x20)
            buf_appendf(b, "\\u%04x", ch);
        else
            buf_append(b, s, 1);
    }
    buf_append(b, "\"", 1);
}

int buf_read_file(struct buf *b, const char *path)
{
    FILE *f = fopen(path, "rbe"); /* "e": close-on-exec, never inherited by a child */
    if (!f)
        return -1;
    char chunk[8192];
    int rc = 0;
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (buf_append(b, chunk, n) < 0) {
            rc = -2;
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        errno = EIO;
        rc = -1;
    }
    int saved = errno;
    fclose(f);
    errno = saved;
    if (rc == 0 && !b->data)
        buf_append(b, "", 0); /* an empty file is an empty string, not NULL */
    return rc;
}

size_t utf8_cut(const char *s, size_t n)
{
    size_t k = n;
    while (k > 0 && ((unsigned char)s[k - 1] & 0xC0) == 0x80)
        k--;
    if (k > 0 && ((unsigned char)s[k - 1] & 0xC0) == 0xC0) {
        unsigned char lead = (unsigned char)s[k - 1];
        size_t want = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
        if (n - (k - 1) < want)
            return k - 1;
    }
    return n;
}

void fd_cloexec_all(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return;
    int self = dirfd(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char *end;
        long fd = strtol(de->d_name, &end, 10);
        if (*end || end == de->d_name || fd <= 2 || fd == self)
            continue;
        int flags = fcntl((int)fd, F_GETFD);
        if (flags >= 0 && !(flags & FD_CLOEXEC))
            (void)fcntl((int)fd, F_SETFD, flags | FD_CLOEXEC);
    }
    closedir(d);
}

bool env_proxy_set(unsigned which)
{
    static const struct {
        const char *name;
        unsigned for_;
    } vars[] = {
        {"http_proxy", ENV_PROXY_HTTP},
        {"HTTP_PROXY", ENV_PROXY_HTTP},
        {"https_proxy", ENV_PROXY_HTTPS},
        {"HTTPS_PROXY", ENV_PROXY_HTTPS},
        {"all_proxy", ENV_PROXY_HTTP | ENV_PROXY_HTTPS},
        {"ALL_PROXY", ENV_PROXY_HTTP | ENV_PROXY_HTTPS},
    };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        if (!(vars[i].for_ & which))
            continue;
        const char *v = getenv(vars[i].name);
        if (v && *v)
            return true;
    }
    return false;
}

uint32_t random_u32(uint64_t now_wall)
{
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
        r = 0;
    /* time and pid when the kernel has no randomness to give yet */
    return r ^ (uint32_t)now_wall * 2654435761u ^ (uint32_t)getpid() * 40503u;
}
