/*
 * log: leveled log lines to stderr and optionally to a file.
 * Callers never pass secrets; log_redact() exists for text that came from
 * an upstream and may echo a token back.
 *
 * No sink is ever written on the caller's thread: each line is copied into
 * a bounded buffer that a writer thread drains (struct log_writer), so a
 * slow disk or a stderr nobody reads never stalls the event loop.  When a
 * buffer is full the line is dropped and counted; once the writer catches
 * up it writes one line saying how many were dropped.
 */
#ifndef ZEPHYR_LOG_H
#define ZEPHYR_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level {
    LOG_ERROR = 0,
    LOG_WARN = 1,
    LOG_INFO = 2,
    LOG_DEBUG = 3,
};

/* Returns -1 if name is not one of error, warn, info, debug. */
int log_level_parse(const char *name);
void log_set_level(enum log_level level);
/* Opens (appends, close-on-exec) path as a second sink; NULL closes it
 * after flushing what is buffered for it (bounded in time, see
 * log_flush()).  Returns -1 on error. */
int log_set_file(const char *path);
/* When set, nothing goes to stderr (the terminal dashboard owns the screen);
 * setting it first waits (log_flush) for the lines already queued there. */
void log_set_quiet_stderr(int quiet);
int log_enabled(enum log_level level);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A third sink that receives every line (without its newline), e.g. the
 * dashboard's log panel; NULL removes it.  Called on the logging thread. */
void log_set_sink(void (*fn)(void *ud, const char *line), void *ud);

/* Registers a secret (4 bytes or longer); every later log line has it
 * replaced by "[redacted]".  There is no limit on how many. */
void log_add_secret(const char *secret);
/* Marks every registered secret as retired, before a reload registers the
 * secrets of the new configuration again (which makes them current).
 * Retired secrets are still redacted, because requests that started with
 * an old token may still be running; only the LOG_MAX_RETIRED_SECRETS most
 * recently retired are kept. */
void log_retire_secrets(void);
void log_clear_secrets(void);
#define LOG_MAX_RETIRED_SECRETS 64

/*
 * Whether secret (slen bytes) occurs at s[i] as a whole token: the bytes
 * match and the occurrence is not part of a longer token, i.e. not
 * bordered by [A-Za-z0-9_-], nor by a '.' that itself continues into such
 * a character (so "word.secret" is inside a token, "secret." at the end of
 * a sentence is not).  A secret of LOG_SECRET_ANYWHERE bytes or more
 * matches anywhere: no word contains it by chance, and text glued to it
 * must not let it through.  Shared with health.c's text cleaner.
 */
#define LOG_SECRET_ANYWHERE 16
bool log_secret_at(const char *s, size_t len, size_t i, const char *secret, size_t slen);

/*
 * Copies src into dst (size > 0, always NUL-terminated, cut at size - 1)
 * with every whole-token occurrence of a registered secret replaced by
 * "[redacted]".  Returns the length written.
 */
size_t log_redact(char *dst, size_t size, const char *src);

/* ---- buffered writers ---------------------------------------------------- */

struct log_writer;

/* How many bytes a writer holds before it drops lines. */
#define LOG_WRITER_BUFFER (256 * 1024)

/*
 * Opens path for appending (O_APPEND | O_CLOEXEC) and starts its writer
 * thread.  json: the file holds JSON lines, so the "lines dropped" notice
 * is written as {"t":MS,"dropped_lines":N} instead of a text line.
 * Returns NULL (errno set) when the file cannot be opened.
 */
struct log_writer *log_writer_open(const char *path, bool json);
/*
 * Queues len bytes (whole lines) without blocking; when they do not fit in
 * the buffer they are dropped and counted.  Returns 0 or -1 (dropped).
 */
int log_writer_write(struct log_writer *w, const char *p, size_t len);
/*
 * Flushes what is buffered (waiting at most LOG_FLUSH_MS) and frees the
 * writer; NULL is a no-op.  A writer still stuck in write() after that is
 * abandoned, not freed: its thread ends with the process.
 */
void log_writer_close(struct log_writer *w);
#define LOG_FLUSH_MS 2000

/* Waits until every writer has written what it holds, at most timeout_ms
 * in all.  Returns 0, or -1 if something is still buffered. */
int log_flush(int timeout_ms);

/* Lines dropped by all writers since the start (stderr, log file, request
 * log), for zephyr_log_lines_dropped_total. */
uint64_t log_lines_dropped(void);

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                       \
    do {                                     \
        if (log_enabled(LOG_DEBUG))          \
            log_msg(LOG_DEBUG, __VA_ARGS__); \
    } while (0)

#endif
