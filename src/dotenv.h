/*
 * dotenv: reads a .env file of KEY=VALUE lines into the environment, so
 * that tokens live beside the config file instead of inside it.
 *
 * Accepted syntax, one assignment per line:
 *
 *     # comment                 blank lines are ignored too
 *     KEY=value                 unquoted: trimmed, " #..." starts a comment
 *     export KEY=value          the shell's "export " prefix is allowed
 *     KEY='literal value'       single quotes: taken verbatim, no escapes
 *     KEY="a\nb"                double quotes: \n \r \t \" \\ \$ escapes
 *
 * Quoted values may span lines.  Names are [A-Za-z_][A-Za-z0-9_]*.  The
 * environment always wins: a variable the user set is never overridden;
 * within one file the last assignment of a name wins.  Variables that came
 * from .env follow .env when it is applied again (reload): replaced,
 * or unset when .env no longer assigns them.  Error
 * text never repeats a value (or anything else from a malformed line),
 * because a malformed line is often a pasted secret.
 *
 * Two halves: dotenv_parse() (dotenv.c) is pure; reading files and
 * changing the environment (everything from dotenv_read_file() on) is
 * dotenv_env.c.
 */
#ifndef ZEPHYR_DOTENV_H
#define ZEPHYR_DOTENV_H

#include <stddef.h>

/*
 * Callback for dotenv_parse(): one call per assignment, in file order.
 * key and value are borrowed and valid only during the call.
 */
typedef void (*dotenv_cb)(void *ud, const char *key, const char *value);

/*
 * Parses len bytes of .env text, calling cb (may be NULL) for every valid
 * assignment, including those on lines after a malformed one.  Returns 0 if
 * every line was valid.  Otherwise returns -1 and, when errors is not NULL,
 * sets *errors to malloc'd text with one line per problem, each
 * "path:line: what is wrong; what would be right\n".  On success *errors is
 * set to NULL.  Pure: no I/O, no environment access.
 */
int dotenv_parse(const char *text, size_t len, dotenv_cb cb, void *ud, const char *path,
                 char **errors);

/*
 * Reads the whole file at path into *text (malloc'd, NUL-terminated, *len
 * bytes) without ever blocking on something that is not a file: it opens
 * with O_NONBLOCK | O_CLOEXEC and refuses anything but a regular file (a
 * FIFO would wait for a writer for ever).  Touches no shared state, so a
 * worker thread may call it (reload reads the config file with it too).
 * Returns 0; 1 when the file does not exist (nothing set); -1 with
 * *errors = "path: what is wrong; hint\n" (hint says what to check).
 */
int dotenv_read_file(const char *path, size_t cap, const char *hint, char **text, size_t *len,
                     char **errors);

/*
 * Reads the file at path and applies it as dotenv_apply() does.  A missing
 * file is not an error: returns 0 and sets nothing.  If the file cannot be
 * read or any line is malformed, returns -1, sets nothing at all, and sets
 * *errors as dotenv_parse() does (an unreadable file gives "path: cannot
 * read: reason").
 */
int dotenv_load(const char *path, char **errors);

/*
 * The .env files of a configuration, in memory: the one beside the config
 * file, then ./.env unless it is the same file.  The first one wins where
 * both assign a name.  text[i] is NULL when that file does not exist.
 */
struct dotenv_files {
    char *path[2]; /* owns; NULL when unused */
    char *text[2]; /* owns; NULL when the file does not exist */
    size_t len[2];
};

/* Reads both files (dotenv_read_file: safe on a worker thread).  Returns 0,
 * or -1 with *errors; f is filled either way and must be released. */
int dotenv_read_for_config(const char *config_path, struct dotenv_files *f, char **errors);
/* Frees f's contents, wiping the texts (they hold secrets). */
void dotenv_files_release(struct dotenv_files *f);

/*
 * Makes the environment follow the files (event-loop thread only: setenv
 * is not thread-safe).  A name the environment already had when .env first
 * assigned it belongs to the user and is never touched.  Every other name
 * a .env assigns is remembered as coming from .env: it is set, replaced
 * when its value changes, and unset when no .env assigns it any more.
 * Nothing changes unless every line of every file is valid; then returns
 * -1 with *errors.  With undo not NULL, *undo receives what is needed to
 * put the environment back (dotenv_undo) or is NULL if nothing changed.
 */
struct dotenv_undo;
int dotenv_apply(const struct dotenv_files *f, struct dotenv_undo **undo, char **errors);
/* Puts back what dotenv_apply() changed and frees u (NULL: no-op). */
void dotenv_undo(struct dotenv_undo *u);
/* Keeps the changes and frees u (NULL: no-op). */
void dotenv_undo_free(struct dotenv_undo *u);

/*
 * Reads and applies the .env files of config_path (dotenv_read_for_config
 * then dotenv_apply).  Returns 0, or -1 with the problems in *errors
 * (caller frees).
 */
int dotenv_load_for_config(const char *config_path, char **errors);

#endif
