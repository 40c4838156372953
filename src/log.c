/*
 * log: see log.h.  One line per call, prefixed with an ISO-8601 UTC time
 * and the level, written with a single write() per sink so lines from a
 * long stream never interleave.  Registered secrets are replaced before the
 * line reaches any sink: this is the last guard, not the first (callers
 * never format tokens in the first place).
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define LOG_MAX_SECRETS 32

static enum log_level log_level = LOG_INFO;
static FILE *log_file;
static int log_quiet_stderr;
static char *log_secrets[LOG_MAX_SECRETS];
static void (*log_sink)(void *ud, const char *line);
static void *log_sink_ud;

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

int log_set_file(const char *path)
{
    if (log_file) {
        fclose(log_file);
        log_file = NULL;
    }
    if (!path)
        return 0;
    log_file = fopen(path, "a");
    if (!log_file)
        return -1;
    setvbuf(log_file, NULL, _IOLBF, 0);
    return 0;
}

void log_set_quiet_stderr(int quiet)
{
    log_quiet_stderr = quiet;
}

int log_enabled(enum log_level level)
{
    return level <= log_level;
}

void log_add_secret(const char *secret)
{
    if (!secret || strlen(secret) < 4)
        return;
    for (int i = 0; i < LOG_MAX_SECRETS; i++) {
        if (log_secrets[i] && strcmp(log_secrets[i], secret) == 0)
            return;
        if (!log_secrets[i]) {
            log_secrets[i] = xstrdup(secret);
            return;
        }
    }
}

void log_clear_secrets(void)
{
    for (int i = 0; i < LOG_MAX_SECRETS; i++) {
        free(log_secrets[i]);
        log_secrets[i] = NULL;
    }
}

static void log_redact(char *line)
{
    static const char mark[] = "[redacted]";
    for (int i = 0; i < LOG_MAX_SECRETS && log_secrets[i]; i++) {
        size_t sl = strlen(log_secrets[i]);
        char *p;
        /* The mark is never longer than a secret we accept plus a few
         * bytes, so replace in place when it fits and truncate otherwise. */
        while ((p = strstr(line, log_secrets[i]))) {
            size_t ml = sizeof mark - 1;
            if (ml <= sl) {
                memcpy(p, mark, ml);
                memmove(p + ml, p + sl, strlen(p + sl) + 1);
            } else {
                memset(p, '*', sl);
            }
        }
    }
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    static const char *tags[] = {"ERROR", "WARN ", "INFO ", "DEBUG"};
    if (!log_enabled(level))
        return;
    char line[4096];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, tags[level]);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    log_redact(line);
    if (log_sink)
        log_sink(log_sink_ud, line);
    size_t len = strlen(line);
    line[len++] = '\n';
    if (!log_quiet_stderr) {
        ssize_t w = write(STDERR_FILENO, line, len);
        (void)w;
    }
    if (log_file)
        fwrite(line, 1, len, log_file);
}
