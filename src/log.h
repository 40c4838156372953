/*
 * log: leveled log lines to stderr and optionally to a file.
 * Callers never pass secrets; log_redact() exists for text that came from
 * an upstream and may echo a token back.
 */
#ifndef ZEPHYR_LOG_H
#define ZEPHYR_LOG_H

enum log_level {
    LOG_ERROR = 0,
    LOG_WARN = 1,
    LOG_INFO = 2,
    LOG_DEBUG = 3,
};

/* Returns -1 if name is not one of error, warn, info, debug. */
int log_level_parse(const char *name);
void log_set_level(enum log_level level);
/* Opens (appends) path as a second sink; NULL closes it. Returns -1 on error. */
int log_set_file(const char *path);
/* When set, nothing goes to stderr (the terminal dashboard owns the screen). */
void log_set_quiet_stderr(int quiet);
int log_enabled(enum log_level level);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A third sink that receives every line (without its newline), e.g. the
 * dashboard's log panel; NULL removes it. */
void log_set_sink(void (*fn)(void *ud, const char *line), void *ud);

/* Registers a secret; every later log line has it replaced by "[redacted]". */
void log_add_secret(const char *secret);
void log_clear_secrets(void);

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
