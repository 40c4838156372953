/*
 * dotenv_env: the I/O half of dotenv (the parser, dotenv.c, is pure).
 * Reads .env files without blocking on anything that is not a regular
 * file, and makes the process environment follow them.
 *
 * dotenv_apply() collects all assignments first and touches the environment
 * only when every file is valid, so a half-broken file never leaves a
 * half-applied environment behind.  Reading (dotenv_read_for_config) and
 * applying are apart so that a reload reads on a worker thread and changes
 * the environment on the loop, where config_load_string() then resolves
 * the *_env names with getenv() as at start.
 */
#include "dotenv.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

/* A .env file holds a handful of secrets; anything bigger is a wrong path. */
#define DOTENV_MAX_FILE (1024 * 1024)
/* Error text is bounded too, whatever the input. */
#define DOTENV_MAX_ERRORS_TEXT (256 * 1024)

/* Assignments collected before any is applied; a later one of the same
 * name replaces an earlier one, so the list holds each name once. */
struct dotenv_list {
    char **keys;   /* owns */
    char **values; /* owns */
    size_t n;
    size_t size;
};

static void dotenv_collect(void *ud, const char *key, const char *value)
{
    struct dotenv_list *l = ud;
    for (size_t k = 0; k < l->n; k++) {
        if (strcmp(l->keys[k], key) == 0) {
            explicit_bzero(l->values[k], strlen(l->values[k]));
            free(l->values[k]);
            l->values[k] = xstrdup(value);
            return;
        }
    }
    if (l->n == l->size) {
        l->size = l->size ? l->size * 2 : 16;
        l->keys = xrealloc(l->keys, l->size * sizeof *l->keys);
        l->values = xrealloc(l->values, l->size * sizeof *l->values);
    }
    l->keys[l->n] = xstrdup(key);
    l->values[l->n] = xstrdup(value);
    l->n++;
}

static void dotenv_list_release(struct dotenv_list *l)
{
    for (size_t k = 0; k < l->n; k++) {
        free(l->keys[k]);
        /* Values are secrets: do not leave them lying around in freed memory. */
        explicit_bzero(l->values[k], strlen(l->values[k]));
        free(l->values[k]);
    }
    free(l->keys);
    free(l->values);
}

int dotenv_read_file(const char *path, size_t cap, const char *hint, char **text, size_t *len,
                     char **errors)
{
    struct buf b;
    struct stat sb;
    int rc = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);

    *text = NULL;
    *len = 0;
    buf_init(&b, cap);
    if (fd < 0) {
        if (errno == ENOENT)
            return 1;
        *errors = xasprintf("%s: cannot read: %s; %s\n", path, strerror(errno), hint);
        return -1;
    }
    if (fstat(fd, &sb) != 0) {
        *errors = xasprintf("%s: cannot read: %s; %s\n", path, strerror(errno), hint);
        goto out;
    }
    if (!S_ISREG(sb.st_mode)) {
        *errors = xasprintf("%s: cannot read: it is %s, not a regular file; %s\n", path,
                            S_ISDIR(sb.st_mode)    ? "a directory"
                            : S_ISFIFO(sb.st_mode) ? "a FIFO (named pipe)"
                            : S_ISSOCK(sb.st_mode) ? "a socket"
                                                   : "a device",
                            hint);
        goto out;
    }
    for (;;) {
        char chunk[8192];
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            *errors = xasprintf("%s: cannot read: %s; %s\n", path, strerror(errno), hint);
            goto out;
        }
        if (n == 0)
            break;
        if (buf_append(&b, chunk, (size_t)n) < 0) {
            *errors = xasprintf("%s: file is larger than %zu bytes; %s\n", path, cap, hint);
            if (b.data)
                explicit_bzero(b.data, b.len);
            goto out;
        }
    }
    if (!b.data)
        buf_append(&b, "", 0); /* an empty file is an empty string, not NULL */
    *len = b.len;
    *text = b.data;
    b.data = NULL;
    rc = 0;
out:
    close(fd);
    buf_release(&b);
    return rc;
}

/* Names this process put into its environment from .env files.  The
 * environment is process-global, so this record of where its variables
 * came from is too; only the event-loop thread (or main before it) uses
 * it. */
static char **dotenv_owned; /* owns */
static size_t dotenv_n_owned;

static bool dotenv_is_owned(const char *name, size_t *at)
{
    for (size_t k = 0; k < dotenv_n_owned; k++) {
        if (strcmp(dotenv_owned[k], name) == 0) {
            if (at)
                *at = k;
            return true;
        }
    }
    return false;
}

static void dotenv_own(const char *name, bool own)
{
    size_t at;
    if (own == dotenv_is_owned(name, &at))
        return;
    if (own) {
        dotenv_owned = xrealloc(dotenv_owned, (dotenv_n_owned + 1) * sizeof *dotenv_owned);
        dotenv_owned[dotenv_n_owned++] = xstrdup(name);
    } else {
        free(dotenv_owned[at]);
        dotenv_owned[at] = dotenv_owned[--dotenv_n_owned];
    }
}

/* One change dotenv_apply() made: the name, its value before (NULL: it was
 * unset) and whether it was owned before. */
struct dotenv_change {
    char *name; /* owns */
    char *old;  /* owns; NULL when it was unset */
    bool owned;
};

struct dotenv_undo {
    struct dotenv_change *c; /* owns */
    size_t n;
};

static void dotenv_record(struct dotenv_undo *u, const char *name)
{
    const char *old = getenv(name);
    u->c = xrealloc(u->c, (u->n + 1) * sizeof *u->c);
    u->c[u->n].name = xstrdup(name);
    u->c[u->n].old = old ? xstrdup(old) : NULL;
    u->c[u->n].owned = dotenv_is_owned(name, NULL);
    u->n++;
}

static void dotenv_change_free(struct dotenv_change *c)
{
    free(c->name);
    if (c->old) {
        explicit_bzero(c->old, strlen(c->old));
        free(c->old);
    }
}

void dotenv_undo_free(struct dotenv_undo *u)
{
    if (!u)
        return;
    for (size_t k = 0; k < u->n; k++)
        dotenv_change_free(&u->c[k]);
    free(u->c);
    free(u);
}

void dotenv_undo(struct dotenv_undo *u)
{
    if (!u)
        return;
    for (size_t k = u->n; k-- > 0;) {
        struct dotenv_change *c = &u->c[k];
        if (c->old)
            setenv(c->name, c->old, 1);
        else
            unsetenv(c->name);
        dotenv_own(c->name, c->owned);
    }
    dotenv_undo_free(u);
}

int dotenv_apply(const struct dotenv_files *f, struct dotenv_undo **undo, char **errors)
{
    struct dotenv_list l = {NULL, NULL, 0, 0};
    struct dotenv_undo *u = xcalloc(1, sizeof *u);
    struct buf errs;
    int rc = 0;

    if (undo)
        *undo = NULL;
    *errors = NULL;
    /* The file read last wins in l, and the first file must win: parse
     * them backwards. */
    buf_init(&errs, DOTENV_MAX_ERRORS_TEXT);
    for (size_t i = 2; i-- > 0;) {
        char *e = NULL;
        if (!f->text[i])
            continue;
        if (dotenv_parse(f->text[i], f->len[i], dotenv_collect, &l, f->path[i], &e) != 0) {
            buf_append(&errs, e, strlen(e));
            rc = -1;
        }
        free(e);
    }
    if (rc != 0) {
        *errors = errs.data ? xstrdup(errs.data) : xstrdup(".env: invalid\n");
        goto out;
    }
    for (size_t k = 0; k < l.n; k++) {
        const char *cur = getenv(l.keys[k]);
        if (dotenv_is_owned(l.keys[k], NULL)) {
            if (cur && strcmp(cur, l.values[k]) == 0)
                continue;
        } else if (cur) {
            continue; /* the user's: the environment wins */
        }
        dotenv_record(u, l.keys[k]);
        setenv(l.keys[k], l.values[k], 1);
        dotenv_own(l.keys[k], true);
    }
    /* Names that came from .env and that no .env assigns any more. */
    for (size_t k = dotenv_n_owned; k-- > 0;) {
        bool still = false;
        for (size_t j = 0; j < l.n && !still; j++)
            still = strcmp(l.keys[j], dotenv_owned[k]) == 0;
        if (still)
            continue;
        char *name = xstrdup(dotenv_owned[k]);
        dotenv_record(u, name);
        unsetenv(name);
        dotenv_own(name, false);
        free(name);
    }
out:
    buf_release(&errs);
    dotenv_list_release(&l);
    if (undo && u->n)
        *undo = u;
    else
        dotenv_undo_free(u);
    return rc;
}

static const char dotenv_hint[] = "a .env file must be a regular file of KEY=VALUE lines; "
                                  "check the path and its permissions";

int dotenv_load(const char *path, char **errors)
{
    struct dotenv_files f;
    char *err = NULL;
    int rc = 0;

    memset(&f, 0, sizeof f);
    if (!path)
        goto out;
    f.path[0] = xstrdup(path);
    rc = dotenv_read_file(path, DOTENV_MAX_FILE, dotenv_hint, &f.text[0], &f.len[0], &err);
    if (rc == 1) {
        rc = 0;
        goto out;
    }
    if (rc == 0)
        rc = dotenv_apply(&f, NULL, &err);
out:
    dotenv_files_release(&f);
    if (errors)
        *errors = err;
    else
        free(err);
    return rc;
}

int dotenv_read_for_config(const char *config_path, struct dotenv_files *f, char **errors)
{
    char *copy = xstrdup(config_path);
    char *slash = strrchr(copy, '/');
    int rc = 0;

    memset(f, 0, sizeof *f);
    *errors = NULL;
    if (slash) {
        slash[1] = '\0';
        f->path[0] = xasprintf("%s.env", copy);
    } else {
        f->path[0] = xstrdup(".env");
    }
    free(copy);
    if (strcmp(f->path[0], ".env") != 0) {
        char real1[PATH_MAX], real2[PATH_MAX];
        bool same =
            realpath(f->path[0], real1) && realpath(".env", real2) && strcmp(real1, real2) == 0;
        if (!same)
            f->path[1] = xstrdup(".env");
    }
    for (size_t i = 0; i < 2 && f->path[i]; i++) {
        if (dotenv_read_file(f->path[i], DOTENV_MAX_FILE, dotenv_hint, &f->text[i], &f->len[i],
                             errors) < 0) {
            rc = -1;
            break;
        }
    }
    return rc;
}

void dotenv_files_release(struct dotenv_files *f)
{
    for (size_t i = 0; i < 2; i++) {
        free(f->path[i]);
        if (f->text[i]) {
            explicit_bzero(f->text[i], f->len[i]);
            free(f->text[i]);
        }
    }
    memset(f, 0, sizeof *f);
}

int dotenv_load_for_config(const char *config_path, char **errors)
{
    struct dotenv_files f;
    int rc = dotenv_read_for_config(config_path, &f, errors);
    if (rc == 0)
        rc = dotenv_apply(&f, NULL, errors);
    dotenv_files_release(&f);
    return rc;
}
