/*
 * dotenv: see dotenv.h for the accepted syntax.
 *
 * dotenv_parse() is a single forward scan over the text with a line
 * counter; it never looks back and never allocates more than one value at a
 * time, so it is safe on any byte string (it is fed every prefix of a file
 * by the unit tests and arbitrary bytes by the fuzzer).  After a malformed
 * line it resumes at the next line, so one run reports every problem.
 *
 * dotenv_load() collects all assignments first and touches the environment
 * only when the whole file is valid, so a half-broken file never leaves a
 * half-applied environment behind.
 */
#include "dotenv.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* A .env file holds a handful of secrets; anything bigger is a wrong path. */
#define DOTENV_MAX_FILE (1024 * 1024)
/* Error text is bounded too, whatever the input. */
#define DOTENV_MAX_ERRORS_TEXT (256 * 1024)

struct dotenv_scan {
    const char *p;     /* borrows; next byte to read */
    const char *end;   /* borrows; one past the last byte */
    int line;          /* line of *p, 1-based */
    const char *path;  /* borrows; for messages only */
    struct buf errors; /* owns; collected error lines */
    int n_errors;
};

/* Records "path:line: [key: ]msg"; key is NULL when the line has no valid name. */
static void dotenv_error(struct dotenv_scan *s, int line, const char *key, const char *msg)
{
    if (key)
        buf_appendf(&s->errors, "%s:%d: %s: %s\n", s->path, line, key, msg);
    else
        buf_appendf(&s->errors, "%s:%d: %s\n", s->path, line, msg);
    s->n_errors++;
}

static bool dotenv_is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

static bool dotenv_name_start(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static bool dotenv_name_char(char c)
{
    return dotenv_name_start(c) || (c >= '0' && c <= '9');
}

static void dotenv_skip_blanks(struct dotenv_scan *s)
{
    while (s->p < s->end && dotenv_is_blank(*s->p))
        s->p++;
}

/* Moves to the start of the next line (past the newline, if any). */
static void dotenv_skip_line(struct dotenv_scan *s)
{
    const char *nl = memchr(s->p, '\n', (size_t)(s->end - s->p));
    if (!nl) {
        s->p = s->end;
        return;
    }
    s->p = nl + 1;
    s->line++;
}

/*
 * Reads a quoted value starting at the opening quote into out.  Returns 0,
 * or -1 if the closing quote never comes (then nothing is consumed).  Line
 * breaks inside the quotes are part of the value and are counted.
 */
static int dotenv_quoted(struct dotenv_scan *s, struct buf *out)
{
    char q = *s->p;
    const char *p = s->p + 1;
    int lines = 0;
    for (; p < s->end; p++) {
        char c = *p;
        if (c == q) {
            s->p = p + 1;
            s->line += lines;
            return 0;
        }
        if (c == '\n')
            lines++;
        if (c == '\\' && q == '"' && p + 1 < s->end) {
            char e = p[1];
            char r;
            switch (e) {
            case 'n': r = '\n'; break;
            case 'r': r = '\r'; break;
            case 't': r = '\t'; break;
            case '"': r = '"'; break;
            case '\\': r = '\\'; break;
            case '$': r = '$'; break;
            default: r = 0; break;
            }
            if (r) {
                buf_append(out, &r, 1);
                p++;
                continue;
            }
        }
        buf_append(out, &c, 1);
    }
    return -1;
}

/*
 * Reads an unquoted value up to the end of the line or a comment, which is
 * a # after a blank: "KEY=a#b" is "a#b", "KEY=a #b" and "KEY= #b" are "a"
 * and "".  s->p is past the '=', so p[-1] always exists.
 */
static void dotenv_unquoted(struct dotenv_scan *s, struct buf *out)
{
    const char *start = s->p;
    const char *p = s->p;
    while (p < s->end && *p != '\n') {
        if (*p == '#' && dotenv_is_blank(p[-1]))
            break;
        p++;
    }
    const char *stop = p;
    while (stop > start && dotenv_is_blank(stop[-1]))
        stop--;
    buf_append(out, start, (size_t)(stop - start));
    s->p = p;
}

/*
 * Parses one logical line at s->p (which is at a name, after blanks and
 * comments were skipped).  Calls cb for a valid assignment; reports and
 * skips the rest of the line otherwise.
 */
static void dotenv_assignment(struct dotenv_scan *s, dotenv_cb cb, void *ud)
{
    int line = s->line;
    struct buf value;
    char *key = NULL;

    buf_init(&value, SIZE_MAX / 2);
    if (s->end - s->p > 6 && memcmp(s->p, "export", 6) == 0 && dotenv_is_blank(s->p[6])) {
        s->p += 6;
        dotenv_skip_blanks(s);
    }
    const char *name = s->p;
    if (s->p < s->end && dotenv_name_start(*s->p)) {
        while (s->p < s->end && dotenv_name_char(*s->p))
            s->p++;
    }
    size_t name_len = (size_t)(s->p - name);
    dotenv_skip_blanks(s);
    if (name_len == 0 || s->p >= s->end || *s->p != '=') {
        dotenv_error(s, line, NULL,
                     "not a KEY=VALUE line; write NAME=value, where NAME uses letters, "
                     "digits and _ and does not start with a digit");
        dotenv_skip_line(s);
        goto out;
    }
    key = xstrndup(name, name_len);
    s->p++;
    dotenv_skip_blanks(s);

    if (s->p < s->end && (*s->p == '"' || *s->p == '\'')) {
        char q = *s->p;
        if (dotenv_quoted(s, &value) < 0) {
            dotenv_error(s, line, key,
                         q == '"' ? "double-quoted value is never closed; add the closing \""
                                  : "single-quoted value is never closed; add the closing '");
            dotenv_skip_line(s);
            goto out;
        }
        dotenv_skip_blanks(s);
        if (s->p < s->end && *s->p != '\n' && *s->p != '#') {
            dotenv_error(s, s->line, key,
                         "unexpected text after the closing quote; put the whole value "
                         "inside the quotes and start comments with #");
            dotenv_skip_line(s);
            goto out;
        }
    } else {
        dotenv_unquoted(s, &value);
    }
    dotenv_skip_line(s);

    if (value.len && memchr(value.data, '\0', value.len)) {
        dotenv_error(s, line, key, "value contains a NUL byte; remove it");
        goto out;
    }
    if (cb)
        cb(ud, key, value.data ? value.data : "");
out:
    free(key);
    buf_release(&value);
}

int dotenv_parse(const char *text, size_t len, dotenv_cb cb, void *ud,
                 const char *path, char **errors)
{
    struct dotenv_scan s;
    int rc = 0;

    s.p = text ? text : "";
    s.end = s.p + (text ? len : 0);
    s.line = 1;
    s.path = path ? path : ".env";
    s.n_errors = 0;
    buf_init(&s.errors, DOTENV_MAX_ERRORS_TEXT);

    while (s.p < s.end) {
        dotenv_skip_blanks(&s);
        if (s.p >= s.end)
            break;
        if (*s.p == '\n') {
            s.p++;
            s.line++;
            continue;
        }
        if (*s.p == '#') {
            dotenv_skip_line(&s);
            continue;
        }
        dotenv_assignment(&s, cb, ud);
    }

    if (s.n_errors) {
        rc = -1;
        if (errors)
            *errors = s.errors.data ? xstrdup(s.errors.data) : xstrdup("");
    } else if (errors) {
        *errors = NULL;
    }
    buf_release(&s.errors);
    return rc;
}

/* Assignments collected by dotenv_load() before any is applied. */
struct dotenv_list {
    char **keys;   /* owns */
    char **values; /* owns */
    size_t n;
    size_t size;
};

static void dotenv_collect(void *ud, const char *key, const char *value)
{
    struct dotenv_list *l = ud;
    if (l->n == l->size) {
        l->size = l->size ? l->size * 2 : 16;
        l->keys = xrealloc(l->keys, l->size * sizeof *l->keys);
        l->values = xrealloc(l->values, l->size * sizeof *l->values);
    }
    l->keys[l->n] = xstrdup(key);
    l->values[l->n] = xstrdup(value);
    l->n++;
}

/*
 * Reads the whole file into *out (NUL-terminated, *len bytes).  Returns 0,
 * 1 when the file does not exist, or -1 with *errors set.
 */
static int dotenv_read(const char *path, char **out, size_t *len, char **errors)
{
    struct buf b;
    int rc = -1;

    buf_init(&b, DOTENV_MAX_FILE);
    switch (buf_read_file(&b, path)) {
    case 0:
        *len = b.len;
        *out = b.data;
        b.data = NULL;
        rc = 0;
        break;
    case -2:
        *errors = xasprintf("%s: file is larger than %d bytes; a .env file holds only "
                            "KEY=VALUE lines\n",
                            path, DOTENV_MAX_FILE);
        break;
    default:
        if (errno == ENOENT)
            rc = 1;
        else
            *errors = xasprintf("%s: cannot read: %s; check the path and its permissions\n",
                                path, strerror(errno));
        break;
    }
    buf_release(&b);
    return rc;
}

int dotenv_load(const char *path, char **errors)
{
    struct dotenv_list l = { NULL, NULL, 0, 0 };
    char *text = NULL;
    char *err = NULL;
    size_t len = 0;
    int rc = 0;

    if (!path)
        goto out;
    rc = dotenv_read(path, &text, &len, &err);
    if (rc == 1) {
        rc = 0;
        goto out;
    }
    if (rc < 0)
        goto out;
    rc = dotenv_parse(text, len, dotenv_collect, &l, path, &err);
    if (rc < 0)
        goto out;
    /* Backwards with overwrite=0: the environment wins, then the last line. */
    for (size_t k = l.n; k-- > 0;)
        setenv(l.keys[k], l.values[k], 0);
out:
    for (size_t k = 0; k < l.n; k++) {
        free(l.keys[k]);
        /* Values are secrets: do not leave them lying around in freed memory. */
        explicit_bzero(l.values[k], strlen(l.values[k]));
        free(l.values[k]);
    }
    free(l.keys);
    free(l.values);
    if (text) {
        explicit_bzero(text, len);
        free(text);
    }
    if (errors)
        *errors = err;
    else
        free(err);
    return rc;
}

int dotenv_load_for_config(const char *config_path, char **errors)
{
    char *copy = xstrdup(config_path);
    char *slash = strrchr(copy, '/');
    char *beside;
    if (slash) {
        slash[1] = '\0';
        beside = xasprintf("%s.env", copy);
    } else {
        beside = xstrdup(".env");
    }
    int rc = dotenv_load(beside, errors);
    if (rc == 0 && strcmp(beside, ".env") != 0) {
        char real1[PATH_MAX], real2[PATH_MAX];
        bool same = realpath(beside, real1) && realpath(".env", real2) &&
                    strcmp(real1, real2) == 0;
        if (!same)
            rc = dotenv_load(".env", errors);
    }
    free(beside);
    free(copy);
    return rc;
}
