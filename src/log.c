/*
 * log: see log.h.  One line per call, prefixed with an ISO-8601 UTC time
 * and the level.  Registered secrets are replaced before the line reaches
 * any sink: this is the last guard, not the first (callers never format
 * tokens in the first place).
 *
 * Writers.  log_msg() runs on the event loop, so it must never wait for a
 * disk or a pipe.  Each file sink (stderr, server.log_file, and the request
 * log that proxy.c writes) is a struct log_writer: a bounded buffer of
 * whole lines plus a thread that swaps the buffer out under the lock and
 * write()s it without the lock.  A line that does not fit is dropped and
 * counted (never half a line); after the next successful write the thread
 * adds one notice line with the count.  Lines of one sink keep their order;
 * lines never interleave, because a line enters a buffer whole.
 *
 * States of a writer: running (thread waits for bytes), busy (thread is
 * inside write(), possibly for ever on a pipe nobody reads), stopping
 * (log_writer_close() was called: the thread writes what is left, then
 * unlinks and frees the writer itself, so closing never waits).  The list
 * of live writers exists for log_flush(), which exit (atexit) uses to give
 * the threads up to LOG_FLUSH_MS to write what is buffered.
 *
 * Locks: log_writers_mu (the list, and the condition flushers wait on)
 * may be taken before a writer's mu, never after.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define LOG_LINE_MAX 4096

struct log_writer {
    int fd; /* owns unless it is stderr */
    bool own_fd;
    bool json; /* the drop notice is a JSON line */
    pthread_mutex_t mu;
    pthread_cond_t wake;     /* to the thread: bytes queued, or stop */
    struct buf queued;       /* owns; whole lines waiting, at most LOG_WRITER_BUFFER */
    struct buf out;          /* owns; what the thread is writing (swapped with queued) */
    bool busy;               /* the thread is writing out, without mu */
    bool stop;               /* closed: write what is left, then free */
    uint64_t dropped;        /* lines dropped since the last notice */
    struct log_writer *next; /* borrows; in log_writers, under log_writers_mu */
};

struct log_secret {
    char *s; /* owns */
    size_t len;
    uint64_t retired; /* 0 while current, else the retirement order */
};

static enum log_level log_level = LOG_INFO;
static struct log_writer *log_file;   /* owns; server.log_file */
static struct log_writer *log_stderr; /* owns; created by the first line for stderr */
static int log_quiet_stderr;
static struct log_secret *log_secrets; /* owns */
static size_t log_n_secrets, log_size_secrets;
static uint64_t log_retire_seq;
static void (*log_sink)(void *ud, const char *line);
static void *log_sink_ud;

static pthread_mutex_t log_writers_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t log_writers_cv;  /* a writer became idle or went away */
static struct log_writer *log_writers; /* borrows; every live writer */
static pthread_once_t log_once = PTHREAD_ONCE_INIT;
static atomic_uint_least64_t log_dropped_total;

void log_set_sink(void (*fn)(void *ud, const char *line), void *ud)
{
    log_sink = fn;
    log_sink_ud = ud;
}

int log_level_parse(const char *name)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (strcasecmp(name, names[i]) == 0)
            return i;
    if (strcasecmp(name, "warning") == 0)
        return LOG_WARN;
    return -1;
}

void log_set_level(enum log_level level)
{
    log_level = level;
}

void log_set_quiet_stderr(int quiet)
{
    /* Whoever takes the screen over must not see lines queued before
     * arrive on top of it: write them out first (once, at start-up). */
    if (quiet && !log_quiet_stderr && log_stderr)
        log_flush(LOG_FLUSH_MS);
    log_quiet_stderr = quiet;
}

int log_enabled(enum log_level level)
{
    return level <= log_level;
}

/* "2024-01-02T03:04:05.678Z LEVEL " into dst; returns its length. */
static int log_prefix(char *dst, size_t size, enum log_level level)
{
    static const char *tags[] = {"ERROR", "WARN ", "INFO ", "DEBUG"};
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    return snprintf(dst, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ", tm.tm_year + 1900,
                    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                    ts.tv_nsec / 1000000, tags[level]);
}

/* ---- secrets ------------------------------------------------------------- */

static bool log_token_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

/* Whether s[k] continues a token in direction dir (-1 before, +1 after). */
static bool log_border_joins(const char *s, size_t len, size_t k, int dir)
{
    if (log_token_char(s[k]))
        return true;
    if (s[k] != '.')
        return false;
    if (dir < 0)
        return k > 0 && log_token_char(s[k - 1]);
    return k + 1 < len && log_token_char(s[k + 1]);
}

bool log_secret_at(const char *s, size_t len, size_t i, const char *secret, size_t slen)
{
    if (slen == 0 || i > len || len - i < slen || memcmp(s + i, secret, slen) != 0)
        return false;
    if (slen >= LOG_SECRET_ANYWHERE)
        return true;
    if (i > 0 && log_border_joins(s, len, i - 1, -1))
        return false;
    if (i + slen < len && log_border_joins(s, len, i + slen, +1))
        return false;
    return true;
}

void log_add_secret(const char *secret)
{
    if (!secret || strlen(secret) < 4)
        return;
    for (size_t i = 0; i < log_n_secrets; i++) {
        if (strcmp(log_secrets[i].s, secret) == 0) {
            log_secrets[i].retired = 0;
            return;
        }
    }
    if (log_n_secrets == log_size_secrets) {
        log_size_secrets = log_size_secrets ? log_size_secrets * 2 : 8;
        log_secrets = xrealloc(log_secrets, log_size_secrets * sizeof *log_secrets);
    }
    log_secrets[log_n_secrets].s = xstrdup(secret);
    log_secrets[log_n_secrets].len = strlen(secret);
    log_secrets[log_n_secrets].retired = 0;
    log_n_secrets++;
}

static void log_secret_free(struct log_secret *s)
{
    explicit_bzero(s->s, s->len);
    free(s->s);
}

void log_retire_secrets(void)
{
    /* Secrets retired earlier and not registered again since: keep the
     * LOG_MAX_RETIRED_SECRETS most recent, free the rest. */
    size_t n_retired = 0;
    for (size_t i = 0; i < log_n_secrets; i++)
        n_retired += log_secrets[i].retired != 0;
    while (n_retired > LOG_MAX_RETIRED_SECRETS) {
        size_t oldest = log_n_secrets;
        for (size_t i = 0; i < log_n_secrets; i++)
            if (log_secrets[i].retired &&
                (oldest == log_n_secrets || log_secrets[i].retired < log_secrets[oldest].retired))
                oldest = i;
        log_secret_free(&log_secrets[oldest]);
        log_secrets[oldest] = log_secrets[--log_n_secrets];
        n_retired--;
    }
    for (size_t i = 0; i < log_n_secrets; i++)
        if (!log_secrets[i].retired)
            log_secrets[i].retired = ++log_retire_seq;
}

void log_clear_secrets(void)
{
    for (size_t i = 0; i < log_n_secrets; i++)
        log_secret_free(&log_secrets[i]);
    free(log_secrets);
    log_secrets = NULL;
    log_n_secrets = log_size_secrets = 0;
}

size_t log_redact(char *dst, size_t size, const char *src)
{
    static const char mark[] = "[redacted]";
    size_t len = strlen(src);
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < size;) {
        size_t hit = 0;
        for (size_t k = 0; k < log_n_secrets && !hit; k++)
            if (src[i] == log_secrets[k].s[0] &&
                log_secret_at(src, len, i, log_secrets[k].s, log_secrets[k].len))
                hit = log_secrets[k].len;
        if (hit) {
            /* A mark that does not fit ends the line: never half a mark
             * followed by what it hides. */
            if (n + sizeof mark - 1 >= size)
                break;
            memcpy(dst + n, mark, sizeof mark - 1);
            n += sizeof mark - 1;
            i += hit;
        } else {
            dst[n++] = src[i++];
        }
    }
    dst[n] = '\0';
    return n;
}

/* ---- writers ------------------------------------------------------------- */

static void log_flush_at_exit(void)
{
    log_flush(LOG_FLUSH_MS);
}

static void log_init_once(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&log_writers_cv, &ca);
    pthread_condattr_destroy(&ca);
    atexit(log_flush_at_exit);
}

static size_t log_count_lines(const char *p, size_t len)
{
    size_t n = 0;
    for (const char *e = p + len; (p = memchr(p, '\n', (size_t)(e - p))); p++)
        n++;
    return n ? n : 1;
}

/* Writes all of p; gives up on an error other than EINTR.  Returns 0 or -1
 * with *done set to the bytes written. */
static int log_write_all(int fd, const char *p, size_t len, size_t *done)
{
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, p + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            *done = off;
            return -1;
        }
        off += (size_t)w;
    }
    *done = off;
    return 0;
}

static void log_writer_free(struct log_writer *w)
{
    if (w->own_fd)
        close(w->fd);
    buf_release(&w->queued);
    buf_release(&w->out);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

static void *log_writer_main(void *arg)
{
    struct log_writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->queued.len && !w->stop)
            pthread_cond_wait(&w->wake, &w->mu);
        if (!w->queued.len)
            break; /* stopped, and everything is written */
        struct buf t = w->out;
        w->out = w->queued;
        w->queued = t;
        w->queued.len = 0;
        uint64_t dropped = w->dropped;
        w->dropped = 0;
        w->busy = true;
        pthread_mutex_unlock(&w->mu);

        size_t done;
        if (log_write_all(w->fd, w->out.data, w->out.len, &done) != 0) {
            atomic_fetch_add(&log_dropped_total,
                             log_count_lines(w->out.data + done, w->out.len - done));
        } else if (dropped) {
            char note[160];
            int n;
            if (w->json) {
                n = snprintf(note, sizeof note, "{\"t\":%llu,\"dropped_lines\":%llu}\n",
                             (unsigned long long)now_wall_ms(), (unsigned long long)dropped);
            } else {
                n = log_prefix(note, sizeof note, LOG_WARN);
                n += snprintf(note + n, sizeof note - (size_t)n,
                              "log: %llu line(s) dropped: this output could not keep up\n",
                              (unsigned long long)dropped);
            }
            log_write_all(w->fd, note, (size_t)n, &done);
        }
        /* A burst may have grown the buffer; do not keep it resident. */
        if (w->out.size > 64 * 1024)
            buf_release(&w->out);

        pthread_mutex_lock(&w->mu);
        w->out.len = 0;
        w->busy = false;
        pthread_mutex_unlock(&w->mu);
        pthread_mutex_lock(&log_writers_mu);
        pthread_cond_broadcast(&log_writers_cv);
        pthread_mutex_unlock(&log_writers_mu);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);

    pthread_mutex_lock(&log_writers_mu);
    for (struct log_writer **pp = &log_writers; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    }
    pthread_cond_broadcast(&log_writers_cv);
    pthread_mutex_unlock(&log_writers_mu);
    log_writer_free(w);
    return NULL;
}

static struct log_writer *log_writer_start(int fd, bool own_fd, bool json)
{
    pthread_once(&log_once, log_init_once);
    struct log_writer *w = xcalloc(1, sizeof *w);
    w->fd = fd;
    w->own_fd = own_fd;
    w->json = json;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->wake, NULL);
    buf_init(&w->queued, LOG_WRITER_BUFFER);
    buf_init(&w->out, LOG_WRITER_BUFFER);

    /* The thread takes no signals: they stay with the loop's thread. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_t th;
    pthread_mutex_lock(&log_writers_mu);
    int rc = pthread_create(&th, &attr, log_writer_main, w);
    if (rc == 0) {
        w->next = log_writers;
        log_writers = w;
    }
    pthread_mutex_unlock(&log_writers_mu);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        fprintf(stderr, "claude-zephyr: cannot start a log writer thread: %s\n", strerror(rc));
        abort();
    }
    return w;
}

struct log_writer *log_writer_open(const char *path, bool json)
{
    /* O_NONBLOCK: this runs on the loop (a reload), and opening a FIFO for
     * writing would wait for a reader; with it, a FIFO nobody reads fails
     * at once (ENXIO).  Writes are the writer thread's, so blocking ones
     * are fine there: the flag is cleared again. */
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0644);
    if (fd < 0)
        return NULL;
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return log_writer_start(fd, true, json);
}

int log_writer_write(struct log_writer *w, const char *p, size_t len)
{
    int rc = 0;
    pthread_mutex_lock(&w->mu);
    if (buf_append(&w->queued, p, len) != 0) {
        w->dropped += log_count_lines(p, len);
        atomic_fetch_add(&log_dropped_total, log_count_lines(p, len));
        rc = -1;
    } else {
        pthread_cond_signal(&w->wake);
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

void log_writer_close(struct log_writer *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->mu);
}

int log_flush(int timeout_ms)
{
    pthread_once(&log_once, log_init_once);
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    int rc = 0;
    pthread_mutex_lock(&log_writers_mu);
    for (;;) {
        bool pending = false;
        for (struct log_writer *w = log_writers; w && !pending; w = w->next) {
            pthread_mutex_lock(&w->mu);
            pending = w->queued.len || w->busy || w->stop;
            pthread_mutex_unlock(&w->mu);
        }
        if (!pending)
            break;
        if (pthread_cond_timedwait(&log_writers_cv, &log_writers_mu, &deadline) == ETIMEDOUT) {
            rc = -1;
            break;
        }
    }
    pthread_mutex_unlock(&log_writers_mu);
    return rc;
}

uint64_t log_lines_dropped(void)
{
    return atomic_load(&log_dropped_total);
}

int log_set_file(const char *path)
{
    log_writer_close(log_file);
    log_file = NULL;
    if (!path)
        return 0;
    log_file = log_writer_open(path, false);
    return log_file ? 0 : -1;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char raw[LOG_LINE_MAX];
    char line[LOG_LINE_MAX + 1];
    int n = log_prefix(raw, sizeof raw, level);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw + n, sizeof raw - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = log_redact(line, sizeof line - 1, raw);
    if (log_sink)
        log_sink(log_sink_ud, line);
    line[len++] = '\n';
    if (!log_quiet_stderr) {
        if (!log_stderr)
            log_stderr = log_writer_start(STDERR_FILENO, false, false);
        log_writer_write(log_stderr, line, len);
    }
    if (log_file)
        log_writer_write(log_file, line, len);
}
