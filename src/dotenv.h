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
 * environment always wins: a variable that is already set is never
 * overridden; within one file the last assignment of a name wins.  Error
 * text never repeats a value (or anything else from a malformed line),
 * because a malformed line is often a pasted secret.
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
int dotenv_parse(const char *text, size_t len, dotenv_cb cb, void *ud,
                 const char *path, char **errors);

/*
 * Reads the file at path and sets every variable it assigns with
 * setenv(key, value, 0), so variables already in the environment are kept.
 * A missing file is not an error: returns 0 and sets nothing.  If the file
 * cannot be read or any line is malformed, returns -1, sets nothing at all,
 * and sets *errors as dotenv_parse() does (an unreadable file gives
 * "path: cannot read: reason").
 */
int dotenv_load(const char *path, char **errors);

/*
 * Loads the .env beside config_path, then ./.env (unless it is the same
 * file); neither overrides a variable already set.  Returns 0, or -1 with
 * the problems in *errors (caller frees).
 */
int dotenv_load_for_config(const char *config_path, char **errors);

#endif
