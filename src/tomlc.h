/*
 * tomlc: a small C interface over toml++ (toml.cpp is the project's only
 * C++).  tomlc_parse() turns TOML text into a plain tree of struct
 * tomlc_node that C code walks directly: tables keep their keys in the order
 * they appear in the file, and every value and key carries the line it was
 * written on, so the config loader can point at the offending line.
 *
 * The tree owns all of its memory and is freed with tomlc_free().  Strings
 * are NUL-terminated; a TOML string or key containing U+0000 is rejected as
 * a parse error because C strings cannot carry it.  Dates and times are kept
 * as their TOML text.  Exceptions never cross into C: toml++ parse errors
 * come back as message, line and column.
 */
#ifndef ZEPHYR_TOMLC_H
#define ZEPHYR_TOMLC_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum tomlc_type {
    TOMLC_TABLE = 0,
    TOMLC_ARRAY = 1,
    TOMLC_STRING = 2,
    TOMLC_INT = 3,
    TOMLC_FLOAT = 4,
    TOMLC_BOOL = 5,
    TOMLC_DATETIME = 6, /* date, time or date-time; its TOML text in str */
};

struct tomlc_node {
    enum tomlc_type type;
    int line;                 /* 1-based line where the value starts, 0 if unknown */
    int column;               /* 1-based, 0 if unknown */
    char *str;                /* owns; TOMLC_STRING and TOMLC_DATETIME */
    long long i;              /* TOMLC_INT */
    double f;                 /* TOMLC_FLOAT */
    bool b;                   /* TOMLC_BOOL */
    struct tomlc_node *items; /* owns; array elements or table values, n entries */
    char **keys;              /* owns; TOMLC_TABLE only: keys[k] names items[k] */
    int *key_lines;           /* owns; TOMLC_TABLE only: line of each key */
    size_t n;
};

struct tomlc_error {
    char *message; /* owns; what the parser found wrong */
    int line;      /* 1-based, 0 if unknown */
    int column;    /* 1-based, 0 if unknown */
};

/*
 * Parses len bytes of text (no NUL terminator needed).  On success returns 0
 * and sets *out to the root table (free with tomlc_free).  On a syntax error
 * returns -1, sets *out to NULL and fills *err (free err->message with
 * free()).  Never throws and never prints.
 */
int tomlc_parse(const char *text, size_t len, struct tomlc_node **out, struct tomlc_error *err);

/* Frees a tree returned by tomlc_parse(); NULL is a no-op. */
void tomlc_free(struct tomlc_node *root);

/* The value under key in a table, or NULL (also when t is not a table). */
const struct tomlc_node *tomlc_get(const struct tomlc_node *t, const char *key);

/* Index of key in a table, or -1. */
long tomlc_index(const struct tomlc_node *t, const char *key);

/* "table", "array", "string", "integer", "float", "boolean", "date-time". */
const char *tomlc_type_name(enum tomlc_type type);

#ifdef __cplusplus
}
#endif

#endif
