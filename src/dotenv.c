/*
 * dotenv: the .env parser; see dotenv.h for the accepted syntax.  Pure: no
 * file, no environment (reading and applying are in dotenv_env.c).
 *
 * dotenv_parse() is a single forward scan over the text with a line
 * counter; it never looks back and never allocates more than one value at a
 * time, so it is safe on any byte string (it is fed every prefix of a file
 * by the unit tests and arbitrary bytes by the fuzzer).  After a malformed
 * line it resumes at the next line, so one run reports every problem.
 *
 */
#include "dotenv.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

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

int dotenv_parse(const char *text, size_t len, dotenv_cb cb, void *ud, const char *path,
                 char **errors)
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
