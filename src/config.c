/*
 * config: loads the TOML configuration (through tomlc.h), applies every
 * documented default, resolves secrets from the environment and validates
 * the result.  See config.h for the contract.
 *
 * Loading is one pass over the parsed tree, section by section.  Each
 * section first reports keys it does not know (with a did-you-mean found by
 * edit distance, or the section the key belongs to), then reads the keys it
 * knows with small typed getters that report wrong types and out-of-range
 * values.  Checks that involve several keys (timeout below interval, unique
 * names, a single default group, bind address versus access key) run after
 * the keys they involve were read, and only when those keys were valid, so
 * one mistake yields one message.  Nothing stops at the first problem: every
 * message is appended to one error buffer and the load fails at the end if
 * the buffer is not empty.
 *
 * Secrets (group tokens, access and admin keys) come only from environment
 * variables named in the file.  Their values are never copied into error
 * text, and neither is any config string long or token-like enough to be a
 * pasted secret.  The module does no I/O: it reads the environment (the
 * *_env names) and nothing else; config_load(), which reads the file, is
 * in config_file.c.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "guard.h"
#include "tomlc.h"
#include "util.h"

/* How a file the configuration names is looked at: set by the process
 * (config_file.c's config_file_check), NULL in the unit tests and fuzzers,
 * which then skip the check.  This module does no I/O of its own. */
static int (*config_file_probe)(const char *path, char *why, size_t len);

void config_set_file_probe(int (*probe)(const char *path, char *why, size_t len))
{
    config_file_probe = probe;
}

/* Bound on the error text, whatever the input. */
#define CONFIG_MAX_ERRORS_TEXT (1024 * 1024)
/* Longest dotted key or echoed value put into a message. */
#define CONFIG_SHOW_MAX 64

#define MS_DAY 86400000LL

/* One reported problem; problems are sorted by line before they are returned. */
struct config_problem {
    int line;
    size_t seq; /* report order, to keep the sort stable */
    char *text; /* owns; one line with its newline */
};

struct config_ctx {
    const char *path;                /* borrows; for messages */
    struct config_problem *problems; /* owns, n_errors entries */
    size_t n_errors;
    size_t size;
    size_t text_bytes;  /* sum of the kept texts */
    size_t n_dropped;   /* beyond CONFIG_MAX_ERRORS_TEXT */
    struct config *cfg; /* borrows; being filled */
};

/* Getter outcome: the key was absent, present and valid, or wrong. */
enum config_got {
    CONFIG_ABSENT = 0,
    CONFIG_OK = 1,
    CONFIG_BAD = 2,
};

static const char *const config_top_keys[] = {"server", "groups",  "health_check",
                                              "ui",     "cluster", NULL};
static const char *const config_server_keys[] = {
    "port",
    "bind",
    "switch_threshold_ms",
    "graceful_switch_timeout_ms",
    "max_body_mb",
    "connect_timeout_ms",
    "header_timeout_ms",
    "idle_timeout_ms",
    "client_header_timeout_ms",
    "keepalive_timeout_ms",
    "max_connections",
    "shutdown_grace_ms",
    "access_key_env",
    "admin_key_env",
    "log_level",
    "log_file",
    "sticky_sessions",
    "session_ttl_s",
    "session_switch_threshold_ms",
    "request_log",
    "max_attempts",
    "retry_budget_ms",
    "stream_holdback_ms",
    "overloaded_retry_in_place_ms",
    "http_client",
    "http2",
    "allowed_hosts",
    "allowed_origins",
    "usage_cap_rest_s",
    "stream_header_timeout_ms",
    NULL,
};
static const char *const config_group_keys[] = {
    "name",        "auth_token_env",  "auth_header", "default", "endpoints",
    "check_model", "fallback_groups", "models",      NULL,
};
static const char *const config_endpoint_keys[] = {
    "url",    "name",    "check_model", "auth_token_env", "auth_header",
    "models", "headers", "proxy",       "ca_file",        NULL};
static const char *const config_health_keys[] = {
    "interval_seconds",
    "min_interval_seconds",
    "max_interval_seconds",
    "timeout_seconds",
    "dynamic_scaling",
    "claude_binary_path",
    "method",
    "model",
    "prompt",
    "cli_args",
    "max_concurrent",
    "failed_interval_seconds",
    NULL,
};
static const char *const config_ui_keys[] = {"language", NULL};
static const char *const config_cluster_keys[] = {"redis_url", "redis_password_env", "key_prefix",
                                                  "fleet",     "lease_ms",           NULL};

/* Where each known key lives, to say so when it is written elsewhere. */
static const struct config_section {
    const char *label;
    const char *const *keys;
} config_sections[] = {
    {"the top level", config_top_keys},     {"[server]", config_server_keys},
    {"[[groups]]", config_group_keys},      {"each endpoint { url, name }", config_endpoint_keys},
    {"[health_check]", config_health_keys}, {"[ui]", config_ui_keys},
    {"[cluster]", config_cluster_keys},
};

static const char *const config_auth_names[] = {"x-api-key", "bearer", NULL};
static const char *const config_http_client_names[] = {"builtin", "libcurl", NULL};
static const char *const config_method_names[] = {"messages", "count_tokens", "cli", NULL};
static const char *const config_level_names[] = {"error", "warn", "info", "debug", NULL};
static const char *const config_language_names[] = {"en", "zh", NULL};

static void config_error(struct config_ctx *c, int line, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void config_add_problem(struct config_ctx *c, int line, char *text)
{
    size_t len = strlen(text);
    if (c->text_bytes + len > CONFIG_MAX_ERRORS_TEXT) {
        c->n_dropped++;
        free(text);
        return;
    }
    if (c->n_errors == c->size) {
        c->size = c->size ? c->size * 2 : 16;
        c->problems = xrealloc(c->problems, c->size * sizeof *c->problems);
    }
    c->problems[c->n_errors].line = line;
    c->problems[c->n_errors].seq = c->n_errors;
    c->problems[c->n_errors].text = text;
    c->n_errors++;
    c->text_bytes += len;
}

/*
 * Records one problem.  line 0 means the problem is about the file as a
 * whole (e.g. no groups at all); it is reported at line 1, so that every
 * message has the same file:line: shape for editors and scripts.
 */
static void config_error(struct config_ctx *c, int line, const char *key, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    config_add_problem(c, line,
                       xasprintf("%s:%d: %s: %s\n", c->path, line > 0 ? line : 1, key, msg));
}

static int config_problem_cmp(const void *a, const void *b)
{
    const struct config_problem *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* All problems in file order, one per line; frees them. */
static char *config_problems_text(struct config_ctx *c)
{
    struct buf b;
    buf_init(&b, SIZE_MAX / 2);
    if (c->n_errors)
        qsort(c->problems, c->n_errors, sizeof *c->problems, config_problem_cmp);
    for (size_t k = 0; k < c->n_errors; k++) {
        buf_append(&b, c->problems[k].text, strlen(c->problems[k].text));
        free(c->problems[k].text);
    }
    if (c->n_dropped)
        buf_appendf(&b, "%s: %zu more problems not shown; fix the ones above first\n", c->path,
                    c->n_dropped);
    free(c->problems);
    c->problems = NULL;
    c->n_errors = 0;
    return b.data ? b.data : xstrdup("");
}

/*
 * Copies s into out for display: control characters become '?', double
 * quotes become single ones, and text that does not fit is cut with "...".
 * Keys and values from the file may hold anything, and one problem must
 * stay one line.
 */
static const char *config_show(const char *s, char *out, size_t size)
{
    size_t n = 0;
    for (; *s && n + 4 < size; s++) {
        unsigned char ch = (unsigned char)*s;
        out[n++] = (ch < 0x20 || ch == 0x7f) ? '?' : ch == '"' ? '\'' : (char)ch;
    }
    if (*s) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
    return out;
}

/*
 * Whether a string from the file may be echoed in a message.  Short values
 * (a mistyped "abc", "yes", "0.0.0.0") help the reader; long or token-like
 * ones might be a secret pasted into the wrong place and are not repeated.
 */
static bool config_showable(const char *s)
{
    return strlen(s) <= 24 && strncasecmp(s, "sk-", 3) != 0;
}

/* "integer 5", "string \"abc\"", "a string", "a table"... for type errors. */
static const char *config_describe(const struct tomlc_node *n, char *out, size_t size)
{
    char shown[CONFIG_SHOW_MAX + 8];
    switch (n->type) {
    case TOMLC_STRING:
        if (config_showable(n->str))
            snprintf(out, size, "string \"%s\"", config_show(n->str, shown, sizeof shown));
        else
            snprintf(out, size, "a string");
        break;
    case TOMLC_INT: snprintf(out, size, "integer %lld", n->i); break;
    case TOMLC_FLOAT: snprintf(out, size, "float %g", n->f); break;
    case TOMLC_BOOL: snprintf(out, size, "boolean %s", n->b ? "true" : "false"); break;
    case TOMLC_DATETIME:
        snprintf(out, size, "date-time %s", config_show(n->str, shown, sizeof shown));
        break;
    case TOMLC_ARRAY: snprintf(out, size, "an array"); break;
    case TOMLC_TABLE: snprintf(out, size, "a table"); break;
    }
    return out;
}

static void config_type_error(struct config_ctx *c, const struct tomlc_node *n, const char *key,
                              const char *expected)
{
    char got[CONFIG_SHOW_MAX + 32];
    config_error(c, n->line, key, "expected %s, got %s; change the value to %s", expected,
                 config_describe(n, got, sizeof got), expected);
}

/* "prefix.key", or "key" at the top level, cut to fit. */
static const char *config_key(char *out, size_t size, const char *prefix, const char *key)
{
    char shown[CONFIG_SHOW_MAX + 8];
    config_show(key, shown, sizeof shown);
    if (prefix && *prefix)
        snprintf(out, size, "%s.%s", prefix, shown);
    else
        snprintf(out, size, "%s", shown);
    return out;
}

/* Optimal string alignment distance: Levenshtein plus transpositions. */
static size_t config_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t d[CONFIG_SHOW_MAX + 1][CONFIG_SHOW_MAX + 1];
    if (la > CONFIG_SHOW_MAX || lb > CONFIG_SHOW_MAX)
        return SIZE_MAX;
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            size_t best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < best)
                best = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[la][lb];
}

/*
 * The valid key closest to an unknown one, or NULL if none is close:
 * within an edit distance that grows with the length of the key, or a
 * valid key that starts with the unknown one ("timeout" for
 * "timeout_seconds").
 */
static const char *config_suggest(const char *key, const char *const *valid)
{
    const char *best = NULL;
    size_t best_d = SIZE_MAX;
    size_t klen = strlen(key);
    for (size_t k = 0; valid[k]; k++) {
        size_t d = config_distance(key, valid[k]);
        size_t len = strlen(valid[k]);
        size_t limit = len <= 4 ? 1 : len <= 10 ? 2 : 3;
        if (d <= limit && d < best_d) {
            best = valid[k];
            best_d = d;
        }
    }
    if (best || klen < 4)
        return best;
    for (size_t k = 0; valid[k]; k++)
        if (strncasecmp(valid[k], key, klen) == 0)
            return valid[k];
    return NULL;
}

/* The label of another section that knows key, or NULL. */
static const char *config_home_of(const char *key, const char *const *here)
{
    for (size_t s = 0; s < sizeof config_sections / sizeof config_sections[0]; s++) {
        if (config_sections[s].keys == here)
            continue;
        for (size_t k = 0; config_sections[s].keys[k]; k++)
            if (strcasecmp(config_sections[s].keys[k], key) == 0)
                return config_sections[s].label;
    }
    return NULL;
}

/*
 * Reports every key of table t that is not in valid.  The legacy
 * auth_token key gets its own message: tokens are read from the
 * environment so that no secret sits in the config file.
 */
static void config_unknown_keys(struct config_ctx *c, const struct tomlc_node *t,
                                const char *prefix, const char *const *valid)
{
    char key[256];
    for (size_t k = 0; k < t->n; k++) {
        const char *name = t->keys[k];
        bool known = false;
        for (size_t v = 0; valid[v] && !known; v++)
            known = strcmp(valid[v], name) == 0;
        if (known)
            continue;
        config_key(key, sizeof key, prefix, name);
        int line = t->key_lines[k];
        if (strcmp(name, "auth_token") == 0) {
            config_error(c, line, key,
                         "tokens are not read from the config file; put the token in the "
                         "environment or in .env beside the config file and name that "
                         "variable with auth_token_env in each [[groups]]");
            continue;
        }
        const char *hint = config_suggest(name, valid);
        if (hint) {
            config_error(c, line, key, "unknown key; did you mean \"%s\"?", hint);
            continue;
        }
        const char *home = config_home_of(name, valid);
        if (home) {
            config_error(c, line, key, "unknown key here; \"%s\" belongs in %s", name, home);
            continue;
        }
        char list[1024];
        size_t used = 0;
        list[0] = '\0';
        for (size_t v = 0; valid[v]; v++) {
            int w = snprintf(list + used, sizeof list - used, "%s%s", v ? ", " : "", valid[v]);
            if (w < 0 || (size_t)w >= sizeof list - used)
                break;
            used += (size_t)w;
        }
        config_error(c, line, key, "unknown key; valid keys here are: %s", list);
    }
}

/* Reads an integer key within [min, max]; hint (may be "") follows the range. */
static enum config_got config_int(struct config_ctx *c, const struct tomlc_node *t,
                                  const char *prefix, const char *name, long long min,
                                  long long max, const char *hint, long long *out,
                                  const struct tomlc_node **node)
{
    char key[256];
    const struct tomlc_node *n = tomlc_get(t, name);
    if (node)
        *node = n;
    if (!n)
        return CONFIG_ABSENT;
    config_key(key, sizeof key, prefix, name);
    if (n->type != TOMLC_INT) {
        config_type_error(c, n, key, "an integer");
        return CONFIG_BAD;
    }
    if (n->i < min || n->i > max) {
        config_error(c, n->line, key,
                     "%lld is out of range; use a whole number from %lld to %lld%s", n->i, min, max,
                     hint);
        return CONFIG_BAD;
    }
    *out = n->i;
    return CONFIG_OK;
}

/* config_int() into an int field, leaving the default when absent or bad. */
static enum config_got config_int_field(struct config_ctx *c, const struct tomlc_node *t,
                                        const char *prefix, const char *name, long long min,
                                        long long max, const char *hint, int *field,
                                        const struct tomlc_node **node)
{
    long long v = 0;
    enum config_got got = config_int(c, t, prefix, name, min, max, hint, &v, node);
    if (got == CONFIG_OK)
        *field = (int)v;
    return got;
}

static enum config_got config_bool(struct config_ctx *c, const struct tomlc_node *t,
                                   const char *prefix, const char *name, bool *field,
                                   const struct tomlc_node **node)
{
    char key[256];
    const struct tomlc_node *n = tomlc_get(t, name);
    if (node)
        *node = n;
    if (!n)
        return CONFIG_ABSENT;
    if (n->type != TOMLC_BOOL) {
        config_type_error(c, n, config_key(key, sizeof key, prefix, name), "true or false");
        return CONFIG_BAD;
    }
    *field = n->b;
    return CONFIG_OK;
}

static bool config_has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/*
 * Reads a string key into *field (replacing the default).  Empty strings
 * and control characters are rejected: no key of this schema wants them.
 */
static enum config_got config_str(struct config_ctx *c, const struct tomlc_node *t,
                                  const char *prefix, const char *name, char **field,
                                  const struct tomlc_node **node)
{
    char key[256];
    const struct tomlc_node *n = tomlc_get(t, name);
    if (node)
        *node = n;
    if (!n)
        return CONFIG_ABSENT;
    config_key(key, sizeof key, prefix, name);
    if (n->type != TOMLC_STRING) {
        config_type_error(c, n, key, "a string");
        return CONFIG_BAD;
    }
    if (n->str[strspn(n->str, " \t")] == '\0') {
        config_error(c, n->line, key,
                     "is empty; give a value or remove the key to use the default");
        return CONFIG_BAD;
    }
    if (config_has_control(n->str)) {
        config_error(c, n->line, key, "contains control characters; remove them");
        return CONFIG_BAD;
    }
    free(*field);
    *field = xstrdup(n->str);
    return CONFIG_OK;
}

/* Reads a string that must be one of names (any case); *index gets its position. */
static enum config_got config_enum(struct config_ctx *c, const struct tomlc_node *t,
                                   const char *prefix, const char *name, const char *const *names,
                                   int *index)
{
    char key[256], shown[CONFIG_SHOW_MAX + 8], list[256];
    const struct tomlc_node *n = tomlc_get(t, name);
    if (!n)
        return CONFIG_ABSENT;
    config_key(key, sizeof key, prefix, name);
    if (n->type != TOMLC_STRING) {
        config_type_error(c, n, key, "a string");
        return CONFIG_BAD;
    }
    size_t used = 0;
    list[0] = '\0';
    for (int k = 0; names[k]; k++) {
        if (strcasecmp(n->str, names[k]) == 0) {
            *index = k;
            return CONFIG_OK;
        }
        int w = snprintf(list + used, sizeof list - used, "%s\"%s\"", k ? ", " : "", names[k]);
        if (w > 0 && (size_t)w < sizeof list - used)
            used += (size_t)w;
    }
    if (config_showable(n->str))
        config_error(c, n->line, key, "\"%s\" is not valid; use one of %s",
                     config_show(n->str, shown, sizeof shown), list);
    else
        config_error(c, n->line, key, "not a valid value; use one of %s", list);
    return CONFIG_BAD;
}

/* Fetches a sub-table; reports anything else that sits under that key. */
static const struct tomlc_node *config_table(struct config_ctx *c, const struct tomlc_node *t,
                                             const char *name, const char *how)
{
    const struct tomlc_node *n = tomlc_get(t, name);
    if (!n)
        return NULL;
    if (n->type != TOMLC_TABLE) {
        config_type_error(c, n, name, how);
        return NULL;
    }
    return n;
}

static bool config_env_name_ok(const char *s)
{
    if (!(isalpha((unsigned char)*s) || *s == '_'))
        return false;
    size_t n = 0;
    for (; *s; s++, n++)
        if (!(isalnum((unsigned char)*s) || *s == '_'))
            return false;
    return n <= 128;
}

static bool config_starts_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

static bool config_ends_ci(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcasecmp(s + a - b, suffix) == 0;
}

static bool config_contains_ci(const char *s, const char *needle)
{
    return strcasestr(s, needle) != NULL;
}

/*
 * Whether an environment value is a stand-in left from an example file
 * rather than a real secret: "your-token-here", "changeme", "xxxx",
 * "sk-ant-xxxx", "<token>", "TODO", "placeholder", "...".  The patterns are
 * ones a random token practically never contains.
 */
static bool config_is_placeholder(const char *v)
{
    static const char *const words[] = {"placeholder",  "changeme",   "change-me", "change_me",
                                        "replace-me",   "replace_me", "replaceme", "...",
                                        "\xe2\x80\xa6", "xxxxxxxx",   NULL};
    static const char *const exact[] = {"token", "secret", "key", "api-key", "apikey", "none",
                                        "null",  "todo",   "tbd", "fixme",   "-",      NULL};
    for (size_t k = 0; words[k]; k++)
        if (config_contains_ci(v, words[k]))
            return true;
    for (size_t k = 0; exact[k]; k++)
        if (strcasecmp(v, exact[k]) == 0)
            return true;
    if (config_starts_ci(v, "your-") || config_starts_ci(v, "your_") ||
        config_starts_ci(v, "your ") || config_ends_ci(v, "-here") || config_ends_ci(v, "_here"))
        return true;
    if (config_starts_ci(v, "todo") && !isalnum((unsigned char)v[4]))
        return true;
    if (v[0] == '<' || v[strlen(v) - 1] == '>' || config_starts_ci(v, "${"))
        return true;
    /* What is left after a known key prefix is only filler: "sk-ant-xxxx", "xxx", "****". */
    const char *rest = v;
    static const char *const prefixes[] = {"sk-ant-api03-", "sk-ant-", "sk-", NULL};
    for (size_t k = 0; prefixes[k]; k++) {
        if (config_starts_ci(v, prefixes[k])) {
            rest = v + strlen(prefixes[k]);
            break;
        }
    }
    if (*rest && rest[strspn(rest, "xX*.-_")] == '\0')
        return true;
    return false;
}

bool config_secret_ok(const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

/*
 * Resolves a secret named by an *_env key.  Returns a copy of its value, or
 * NULL after reporting why not.  The value is never put in a message.
 */
static char *config_secret(struct config_ctx *c, const struct tomlc_node *n, const char *key,
                           const char *var, const char *what)
{
    const char *v = getenv(var);
    if (!v || !*v) {
        config_error(c, n->line, key,
                     "environment variable %s is not set or is empty; set it to the %s in "
                     "the environment or in .env beside the config file",
                     var, what);
        return NULL;
    }
    if (config_is_placeholder(v)) {
        config_error(c, n->line, key,
                     "environment variable %s holds a placeholder, not a real %s; put the "
                     "real %s in the environment or in .env beside the config file",
                     var, what, what);
        return NULL;
    }
    if (!config_secret_ok(v)) {
        config_error(c, n->line, key,
                     "environment variable %s holds a control character (CR, LF, tab or "
                     "another byte below 0x20, or DEL), which would break the header it is "
                     "sent in; set it to the %s alone, on one line",
                     var, what);
        return NULL;
    }
    return xstrdup(v);
}

/*
 * Reads an *_env key naming the variable that holds a secret, and the
 * secret itself.  The name is not echoed when invalid: a common mistake is
 * to paste the secret itself where its variable's name belongs.
 */
static void config_env_secret(struct config_ctx *c, const struct tomlc_node *t, const char *prefix,
                              const char *name, const char *what, const char *example,
                              char **var_field, char **secret_field)
{
    char key[256];
    const struct tomlc_node *n = tomlc_get(t, name);
    if (!n)
        return;
    config_key(key, sizeof key, prefix, name);
    if (n->type != TOMLC_STRING) {
        config_type_error(c, n, key, "a string (the name of an environment variable)");
        return;
    }
    if (!config_env_name_ok(n->str)) {
        config_error(c, n->line, key,
                     "not a valid environment variable name; give the name of the variable "
                     "that holds the %s (letters, digits and _), e.g. %s = \"%s\", and put "
                     "the %s itself in .env",
                     what, name, example, what);
        return;
    }
    free(*var_field);
    *var_field = xstrdup(n->str);
    *secret_field = config_secret(c, n, key, n->str, what);
}

static bool config_bind_ok(const char *bind)
{
    unsigned char a[16];
    if (inet_pton(AF_INET, bind, a) == 1 || inet_pton(AF_INET6, bind, a) == 1)
        return true;
    for (const char *p = bind; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '.' || *p == '-'))
            return false;
    return strlen(bind) <= 253;
}

/* An array of strings (server.allowed_hosts, server.allowed_origins), each
 * checked by problem() and stored lowercase. */
static void config_str_list(struct config_ctx *c, const struct tomlc_node *t, const char *name,
                            const char *(*problem)(const char *), char ***out, size_t *n_out)
{
    char key[64];
    const struct tomlc_node *a = tomlc_get(t, name);
    snprintf(key, sizeof key, "server.%s", name);
    if (!a)
        return;
    if (a->type != TOMLC_ARRAY) {
        config_type_error(c, a, key, "an array of strings");
        return;
    }
    *out = xcalloc(a->n, sizeof **out);
    for (size_t k = 0; k < a->n; k++) {
        const struct tomlc_node *v = &a->items[k];
        snprintf(key, sizeof key, "server.%s[%zu]", name, k);
        if (v->type != TOMLC_STRING) {
            config_type_error(c, v, key, "a string");
            continue;
        }
        const char *why = problem(v->str);
        if (why) {
            char shown[CONFIG_SHOW_MAX + 8];
            config_show(v->str, shown, sizeof shown);
            config_error(c, v->line ? v->line : a->line, key, "\"%s\" %s", shown, why);
            continue;
        }
        char *low = xstrdup(v->str);
        for (char *p = low; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        (*out)[(*n_out)++] = low;
    }
}

/*
 * Streaming requests wait for response headers at most
 * stream_header_timeout_ms (default 30 s, but never longer than
 * header_timeout_ms), and that wait must leave part of retry_budget_ms for
 * another endpoint: otherwise a hung endpoint would hold every stream until
 * the budget is spent and failover could never happen.
 */
static void config_timeouts(struct config_ctx *c, enum config_got hdr_got,
                            enum config_got stream_got, enum config_got budget_got,
                            enum config_got att_got, const struct tomlc_node *hdr_n,
                            const struct tomlc_node *stream_n, const struct tomlc_node *budget_n)
{
    struct config *cfg = c->cfg;
    if (hdr_got == CONFIG_BAD || stream_got == CONFIG_BAD || budget_got == CONFIG_BAD ||
        att_got == CONFIG_BAD)
        return;
    if (stream_got == CONFIG_ABSENT && cfg->stream_header_timeout_ms > cfg->header_timeout_ms)
        cfg->stream_header_timeout_ms = cfg->header_timeout_ms;
    if (stream_got == CONFIG_OK && cfg->stream_header_timeout_ms > cfg->header_timeout_ms) {
        config_error(c, stream_n->line, "server.stream_header_timeout_ms",
                     "%d is longer than server.header_timeout_ms (%d); streams get their headers "
                     "sooner than other requests, so make it at most %d",
                     cfg->stream_header_timeout_ms, cfg->header_timeout_ms, cfg->header_timeout_ms);
        return;
    }
    (void)hdr_n;
    if (cfg->max_attempts > 1 && cfg->stream_header_timeout_ms >= cfg->retry_budget_ms) {
        const struct tomlc_node *n = stream_got == CONFIG_OK ? stream_n : budget_n;
        config_error(c, n ? n->line : 0,
                     stream_got == CONFIG_OK ? "server.stream_header_timeout_ms"
                                             : "server.retry_budget_ms",
                     "a stream may wait %d ms for headers but all attempts may take only "
                     "server.retry_budget_ms = %d ms, so a hung endpoint leaves no time to try "
                     "another; make stream_header_timeout_ms smaller than retry_budget_ms "
                     "(e.g. half of it)",
                     cfg->stream_header_timeout_ms, cfg->retry_budget_ms);
    }
}

static void config_server(struct config_ctx *c, const struct tomlc_node *root)
{
    struct config *cfg = c->cfg;
    const struct tomlc_node *t = config_table(c, root, "server", "a table ([server])");
    const struct tomlc_node *bind_node = NULL;
    const char *p = "server";
    long long mb = 0;
    int level = 2;

    if (!t)
        return;
    config_unknown_keys(c, t, p, config_server_keys);
    config_int_field(c, t, p, "port", 0, 65535, " (0 picks a free port)", &cfg->port, NULL);
    enum config_got bind_got = config_str(c, t, p, "bind", &cfg->bind, &bind_node);
    config_int_field(c, t, p, "switch_threshold_ms", 0, 3600000, "", &cfg->switch_threshold_ms,
                     NULL);
    config_int_field(c, t, p, "graceful_switch_timeout_ms", 0, MS_DAY, "",
                     &cfg->graceful_switch_timeout_ms, NULL);
    if (config_int(c, t, p, "max_body_mb", 1, 4096, "", &mb, NULL) == CONFIG_OK)
        cfg->max_body_bytes = mb * 1024 * 1024;
    config_int_field(c, t, p, "connect_timeout_ms", 1, MS_DAY, "", &cfg->connect_timeout_ms, NULL);
    const struct tomlc_node *hdr_n = NULL, *stream_n = NULL, *budget_n = NULL, *att_n = NULL;
    enum config_got hdr_got = config_int_field(c, t, p, "header_timeout_ms", 1, MS_DAY, "",
                                               &cfg->header_timeout_ms, &hdr_n);
    enum config_got stream_got = config_int_field(c, t, p, "stream_header_timeout_ms", 1, MS_DAY,
                                                  "", &cfg->stream_header_timeout_ms, &stream_n);
    config_int_field(c, t, p, "idle_timeout_ms", 1, MS_DAY, "", &cfg->idle_timeout_ms, NULL);
    config_int_field(c, t, p, "client_header_timeout_ms", 1, MS_DAY, "",
                     &cfg->client_header_timeout_ms, NULL);
    config_int_field(c, t, p, "keepalive_timeout_ms", 1, MS_DAY, "", &cfg->keepalive_timeout_ms,
                     NULL);
    config_int_field(c, t, p, "max_connections", 1, 1000000, "", &cfg->max_connections, NULL);
    config_int_field(c, t, p, "shutdown_grace_ms", 0, MS_DAY, "", &cfg->shutdown_grace_ms, NULL);
    config_env_secret(c, t, p, "access_key_env", "access key", "ZEPHYR_ACCESS_KEY",
                      &cfg->access_key_env, &cfg->access_key);
    config_env_secret(c, t, p, "admin_key_env", "admin key", "ZEPHYR_ADMIN_KEY",
                      &cfg->admin_key_env, &cfg->admin_key);
    config_str_list(c, t, "allowed_hosts", guard_host_entry_problem, &cfg->allowed_hosts,
                    &cfg->n_allowed_hosts);
    config_str_list(c, t, "allowed_origins", guard_origin_entry_problem, &cfg->allowed_origins,
                    &cfg->n_allowed_origins);
    if (config_enum(c, t, p, "log_level", config_level_names, &level) == CONFIG_OK) {
        free(cfg->log_level);
        cfg->log_level = xstrdup(config_level_names[level]);
    }
    config_str(c, t, p, "log_file", &cfg->log_file, NULL);
    config_str(c, t, p, "request_log", &cfg->request_log, NULL);
    enum config_got att_got =
        config_int_field(c, t, p, "max_attempts", 1, 16, "", &cfg->max_attempts, &att_n);
    enum config_got budget_got = config_int_field(c, t, p, "retry_budget_ms", 1, MS_DAY, "",
                                                  &cfg->retry_budget_ms, &budget_n);
    config_timeouts(c, hdr_got, stream_got, budget_got, att_got, hdr_n, stream_n, budget_n);
    config_int_field(c, t, p, "stream_holdback_ms", 0, 60000, " (0 turns the hold-back off)",
                     &cfg->stream_holdback_ms, NULL);
    config_int_field(c, t, p, "overloaded_retry_in_place_ms", 0, 60000, " (0 turns it off)",
                     &cfg->overloaded_retry_in_place_ms, NULL);
    config_int_field(c, t, p, "usage_cap_rest_s", 1, 30 * 86400, "", &cfg->usage_cap_rest_s, NULL);
    int client = 0;
    if (config_enum(c, t, p, "http_client", config_http_client_names, &client) == CONFIG_OK)
        cfg->http_client_libcurl = client == 1;
    config_bool(c, t, p, "http2", &cfg->http2, NULL);
    config_bool(c, t, p, "sticky_sessions", &cfg->sticky_sessions, NULL);
    config_int_field(c, t, p, "session_ttl_s", 1, 30 * 86400, "", &cfg->session_ttl_s, NULL);
    config_int_field(c, t, p, "session_switch_threshold_ms", 0, 3600000, " (0: never for speed)",
                     &cfg->session_switch_threshold_ms, NULL);

    if (bind_got != CONFIG_OK)
        return;
    char shown[CONFIG_SHOW_MAX + 8];
    config_show(cfg->bind, shown, sizeof shown);
    if (!config_bind_ok(cfg->bind)) {
        config_error(c, bind_node->line, "server.bind",
                     "\"%s\" is not an IP address or host name; use e.g. \"127.0.0.1\" or \"::1\"",
                     shown);
        return;
    }
    if (!host_is_loopback(cfg->bind) && !tomlc_get(t, "access_key_env"))
        config_error(c, bind_node->line, "server.bind",
                     "binding to \"%s\" reaches beyond loopback, which requires "
                     "server.access_key_env; set access_key_env = \"ZEPHYR_ACCESS_KEY\" "
                     "(and the variable in .env) or bind to \"127.0.0.1\"",
                     shown);
}

/*
 * Checks an endpoint URL.  Returns NULL if it is usable, else the "what is
 * wrong; what would be right" text.  *echo says whether the URL may be
 * repeated in the message (not when it carries credentials).
 */
static const char *config_url_problem(const char *url, bool *echo)
{
    *echo = true;
    const char *rest;
    if (config_starts_ci(url, "http://"))
        rest = url + 7;
    else if (config_starts_ci(url, "https://"))
        rest = url + 8;
    else
        return "is not an http:// or https:// URL; write e.g. \"https://api.anthropic.com\"";
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return "contains spaces or control characters; remove them";
    size_t alen = strcspn(rest, "/?#");
    if (memchr(rest, '@', alen)) {
        *echo = false;
        return "must not carry credentials (user:password@); put the token in the environment "
               "and name its variable with auth_token_env";
    }
    if (strpbrk(rest, "?#"))
        return "must not have a query or fragment; give the base URL only, e.g. "
               "\"https://relay.example.com/api\"";
    if (alen == 0)
        return "has no host; write e.g. \"https://api.anthropic.com\"";
    const char *host_end = rest + alen;
    const char *port = NULL;
    if (rest[0] == '[') {
        const char *close = memchr(rest, ']', alen);
        if (!close || close == rest + 1)
            return "has a malformed [IPv6] host; write e.g. \"http://[::1]:8080\"";
        if (close + 1 < host_end) {
            if (close[1] != ':')
                return "has text after the [IPv6] host; write e.g. \"http://[::1]:8080\"";
            port = close + 2;
        }
    } else {
        const char *colon = memchr(rest, ':', alen);
        if (colon == rest)
            return "has no host; write e.g. \"https://api.anthropic.com\"";
        if (colon)
            port = colon + 1;
    }
    if (port) {
        long v = 0;
        if (port == host_end)
            return "has an empty port; write e.g. \"http://127.0.0.1:8080\"";
        for (const char *q = port; q < host_end; q++) {
            if (!isdigit((unsigned char)*q))
                return "has a port that is not a number; write e.g. \"http://127.0.0.1:8080\"";
            v = v * 10 + (*q - '0');
            if (v > 65535)
                break;
        }
        if (v < 1 || v > 65535)
            return "has a port outside 1..65535; write e.g. \"http://127.0.0.1:8080\"";
    }
    return NULL;
}

/* A group's or endpoint's check_model (relays name and offer models
 * differently, so the check model can differ per endpoint).  config_str
 * already refuses an empty string. */
static void config_check_model(struct config_ctx *c, const struct tomlc_node *t, const char *prefix,
                               char **out)
{
    config_str(c, t, prefix, "check_model", out, NULL);
}

/*
 * Reads a "models" table: { "client model" = "upstream model", "*" = ... }.
 * Names go into JSON bodies and logs, so control characters are refused
 * (quotes and backslashes are escaped when the body is written).
 */
static void config_models(struct config_ctx *c, const struct tomlc_node *t, const char *prefix,
                          struct cfg_model **out, size_t *n_out)
{
    char key[256];
    const struct tomlc_node *n = tomlc_get(t, "models");
    if (!n)
        return;
    config_key(key, sizeof key, prefix, "models");
    if (n->type != TOMLC_TABLE) {
        config_type_error(c, n, key,
                          "a table like { \"claude-opus-4-8\" = \"vendor/claude-opus-4.8\", "
                          "\"*\" = \"claude-sonnet-4-6\" }");
        return;
    }
    *out = xcalloc(n->n ? n->n : 1, sizeof **out);
    for (size_t k = 0; k < n->n; k++) {
        const struct tomlc_node *v = &n->items[k];
        if (v->type != TOMLC_STRING) {
            config_type_error(c, v, key, "a model name (a string) for each model");
            continue;
        }
        if (!n->keys[k][0] || !v->str[0] || config_has_control(n->keys[k]) ||
            config_has_control(v->str) || strlen(n->keys[k]) > 200 || strlen(v->str) > 200) {
            config_error(c, v->line, key,
                         "model names must be 1 to 200 characters without control characters; "
                         "write e.g. \"claude-opus-4-8\" = \"vendor/claude-opus-4.8\"");
            continue;
        }
        (*out)[*n_out].from = xstrdup(n->keys[k]);
        (*out)[*n_out].to = xstrdup(v->str);
        (*n_out)++;
    }
}

/* Headers the proxy or the client's connection owns, and the credentials,
 * which have their own keys (auth_token_env, auth_header). */
static bool config_header_reserved(const char *name)
{
    static const char *const names[] = {
        "host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
        "te",   "trailer",        "proxy-connection",  "expect",     "x-api-key",  "authorization",
        NULL};
    for (size_t k = 0; names[k]; k++)
        if (strcasecmp(name, names[k]) == 0)
            return true;
    return false;
}

static bool config_header_name_ok(const char *s)
{
    if (!*s || strlen(s) > 128)
        return false;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || strchr("!#$%&'*+-.^_`|~", *s)))
            return false;
    return true;
}

/*
 * Reads an endpoint's "headers" table: extra request headers some relays
 * need.  A value "${NAME}" comes from that environment variable (a secret,
 * never echoed).  Names must be HTTP tokens, values must not hold control
 * characters (no CR, LF or NUL can split the request).
 */
static void config_headers(struct config_ctx *c, const struct tomlc_node *t, const char *prefix,
                           struct cfg_endpoint *ep)
{
    char key[256], shown[CONFIG_SHOW_MAX + 8];
    const struct tomlc_node *n = tomlc_get(t, "headers");
    if (!n)
        return;
    config_key(key, sizeof key, prefix, "headers");
    if (n->type != TOMLC_TABLE) {
        config_type_error(c, n, key,
                          "a table like { \"X-Relay-Account\" = \"acme\", \"X-Relay-Key\" = "
                          "\"${RELAY_KEY}\" }");
        return;
    }
    ep->headers = xcalloc(n->n ? n->n : 1, sizeof *ep->headers);
    for (size_t k = 0; k < n->n; k++) {
        const struct tomlc_node *v = &n->items[k];
        const char *name = n->keys[k];
        if (!config_header_name_ok(name)) {
            config_error(c, v->line, key,
                         "\"%s\" is not a valid header name; use letters, digits and - only",
                         config_show(name, shown, sizeof shown));
            continue;
        }
        if (config_header_reserved(name)) {
            config_error(c, v->line, key,
                         "%s cannot be set here; the proxy sets it (credentials: use "
                         "auth_token_env and auth_header)",
                         config_show(name, shown, sizeof shown));
            continue;
        }
        if (v->type != TOMLC_STRING) {
            config_type_error(c, v, key, "a string value for each header");
            continue;
        }
        if (config_has_control(v->str) || strlen(v->str) > 4096) {
            config_error(c, v->line, key,
                         "the value of %s holds control characters (CR, LF, ...) or is longer "
                         "than 4096 bytes; give one line of text",
                         config_show(name, shown, sizeof shown));
            continue;
        }
        struct cfg_header *h = &ep->headers[ep->n_headers];
        size_t vl = strlen(v->str);
        if (vl > 3 && strncmp(v->str, "${", 2) == 0 && v->str[vl - 1] == '}') {
            char var[160];
            snprintf(var, sizeof var, "%.*s", (int)(vl - 3), v->str + 2);
            if (!config_env_name_ok(var)) {
                config_error(c, v->line, key,
                             "the value of %s names no valid environment variable; write "
                             "\"${RELAY_KEY}\" with letters, digits and _",
                             config_show(name, shown, sizeof shown));
                continue;
            }
            /* config_secret refuses a value with control characters. */
            h->value = config_secret(c, v, key, var, "header value");
            if (!h->value)
                continue;
            h->from_env = true;
        } else {
            h->value = xstrdup(v->str);
        }
        h->name = xstrdup(name);
        ep->n_headers++;
    }
}

/* Reads an endpoint's "proxy" and "ca_file". */
static void config_ep_proxy(struct config_ctx *c, const struct tomlc_node *t, const char *prefix,
                            struct cfg_endpoint *ep)
{
    char key[256];
    const struct tomlc_node *n = NULL;
    if (config_str(c, t, prefix, "proxy", &ep->proxy, &n) == CONFIG_OK) {
        static const char *const schemes[] = {"http://", "https://", "socks5://", "socks5h://",
                                              NULL};
        bool ok = false;
        for (size_t k = 0; schemes[k]; k++)
            ok |= config_starts_ci(ep->proxy, schemes[k]) && ep->proxy[strlen(schemes[k])] != '\0';
        for (const char *q = ep->proxy; ok && *q; q++)
            ok = *q != ' ';
        if (!ok) {
            /* Not echoed: a proxy URL may carry a password. */
            config_error(c, n->line, config_key(key, sizeof key, prefix, "proxy"),
                         "not a proxy URL; write e.g. \"http://proxy.example:3128\" or "
                         "\"socks5://127.0.0.1:1080\"");
            free(ep->proxy);
            ep->proxy = NULL;
        }
    }
    if (config_str(c, t, prefix, "ca_file", &ep->ca_file, &n) == CONFIG_OK) {
        config_key(key, sizeof key, prefix, "ca_file");
        char why[128];
        if (config_file_probe && config_file_probe(ep->ca_file, why, sizeof why) != 0)
            config_error(c, n->line, key,
                         "cannot read %s: %s; give the path of a PEM file with the CA "
                         "certificates that sign the endpoint's certificate",
                         ep->ca_file, why);
        if (ep->url && !config_starts_ci(ep->url, "https://"))
            config_error(c, n->line, key,
                         "applies to https:// endpoints only; remove it or use an https:// URL");
    }
}

/* Endpoint names seen so far, to keep them unique across all groups. */
struct config_seen {
    const char *name; /* borrows; from struct cfg_endpoint */
    int line;
};

static void config_endpoint(struct config_ctx *c, const struct tomlc_node *t, const char *prefix,
                            struct cfg_endpoint *ep, struct config_seen *seen, size_t *n_seen)
{
    char key[256], shown[CONFIG_SHOW_MAX + 8];
    const struct tomlc_node *url_node = NULL, *name_node = NULL;

    ep->line = t->line;
    config_unknown_keys(c, t, prefix, config_endpoint_keys);
    if (config_str(c, t, prefix, "url", &ep->url, &url_node) == CONFIG_OK) {
        bool echo;
        const char *problem = config_url_problem(ep->url, &echo);
        config_key(key, sizeof key, prefix, "url");
        if (problem && echo)
            config_error(c, url_node->line, key, "\"%s\" %s",
                         config_show(ep->url, shown, sizeof shown), problem);
        else if (problem)
            config_error(c, url_node->line, key, "the URL %s", problem);
        size_t len = strlen(ep->url);
        while (!problem && len > 0 && ep->url[len - 1] == '/')
            ep->url[--len] = '\0';
    } else if (!url_node) {
        config_error(c, t->line, config_key(key, sizeof key, prefix, "url"),
                     "missing; every endpoint needs url = \"https://...\"");
    }
    if (config_str(c, t, prefix, "name", &ep->name, &name_node) == CONFIG_OK) {
        for (size_t k = 0; k < *n_seen; k++) {
            if (strcmp(seen[k].name, ep->name) == 0) {
                config_error(c, name_node->line, config_key(key, sizeof key, prefix, "name"),
                             "duplicate endpoint name \"%s\" (first used at line %d); endpoint "
                             "names must be unique across all groups",
                             config_show(ep->name, shown, sizeof shown), seen[k].line);
                return;
            }
        }
        seen[*n_seen].name = ep->name;
        seen[*n_seen].line = name_node->line;
        (*n_seen)++;
    } else if (!name_node) {
        config_error(c, t->line, config_key(key, sizeof key, prefix, "name"),
                     "missing; every endpoint needs a unique name = \"...\" (shown in "
                     "/status and used by the admin API)");
    }
    config_check_model(c, t, prefix, &ep->check_model);
    /* An endpoint with its own account: same rules as the group's keys. */
    config_env_secret(c, t, prefix, "auth_token_env", "token", "ANTHROPIC_TOKEN_RELAY",
                      &ep->auth_token_env, &ep->token);
    int auth = AUTH_X_API_KEY;
    if (config_enum(c, t, prefix, "auth_header", config_auth_names, &auth) == CONFIG_OK) {
        ep->auth = auth == 1 ? AUTH_BEARER : AUTH_X_API_KEY;
        ep->auth_set = true;
    }
    config_models(c, t, prefix, &ep->models, &ep->n_models);
    config_headers(c, t, prefix, ep);
    config_ep_proxy(c, t, prefix, ep);
}

static void config_group(struct config_ctx *c, const struct tomlc_node *t, size_t index,
                         struct config_seen *seen, size_t *n_seen,
                         const struct tomlc_node **default_node, size_t *default_index)
{
    struct cfg_group *g = &c->cfg->groups[index];
    char p[64], key[256], shown[CONFIG_SHOW_MAX + 8];
    const struct tomlc_node *n = NULL;
    int auth = AUTH_X_API_KEY;

    snprintf(p, sizeof p, "groups[%zu]", index);
    config_unknown_keys(c, t, p, config_group_keys);

    if (config_str(c, t, p, "name", &g->name, &n) == CONFIG_OK) {
        for (size_t k = 0; k < index; k++) {
            if (c->cfg->groups[k].name && strcmp(c->cfg->groups[k].name, g->name) == 0) {
                config_error(c, n->line, config_key(key, sizeof key, p, "name"),
                             "duplicate group name \"%s\" (also groups[%zu]); give each group "
                             "a unique name",
                             config_show(g->name, shown, sizeof shown), k);
                break;
            }
        }
    } else if (!n) {
        config_error(c, t->line, config_key(key, sizeof key, p, "name"),
                     "missing; give the group a name, e.g. name = \"main\"");
    }

    config_env_secret(c, t, p, "auth_token_env", "token", "ANTHROPIC_TOKEN_MAIN",
                      &g->auth_token_env, &g->token);
    if (config_enum(c, t, p, "auth_header", config_auth_names, &auth) == CONFIG_OK)
        g->auth = auth == 1 ? AUTH_BEARER : AUTH_X_API_KEY;
    config_check_model(c, t, p, &g->check_model);
    config_models(c, t, p, &g->models, &g->n_models);

    if (config_bool(c, t, p, "default", &g->is_default, &n) == CONFIG_OK && g->is_default) {
        if (*default_node)
            config_error(c, n->line, config_key(key, sizeof key, p, "default"),
                         "groups[%zu] is already the default (line %d); set default = true on "
                         "one group only",
                         *default_index, (*default_node)->line);
        else {
            *default_node = n;
            *default_index = index;
        }
    }

    const char *label = g->name ? config_show(g->name, shown, sizeof shown) : p;
    const struct tomlc_node *eps = tomlc_get(t, "endpoints");
    config_key(key, sizeof key, p, "endpoints");
    if (!eps || (eps->type == TOMLC_ARRAY && eps->n == 0)) {
        config_error(c, eps ? eps->line : t->line, key,
                     "group \"%s\" has no endpoints; add endpoints = [{ url = "
                     "\"https://api.anthropic.com\", name = \"anthropic\" }]",
                     label);
        return;
    }
    if (eps->type != TOMLC_ARRAY) {
        config_type_error(c, eps, key,
                          "an array of tables, e.g. endpoints = [{ url = \"https://...\", "
                          "name = \"...\" }]");
        return;
    }
    g->endpoints = xcalloc(eps->n, sizeof *g->endpoints);
    g->n_endpoints = eps->n;
    for (size_t k = 0; k < eps->n; k++) {
        char ep_prefix[96];
        snprintf(ep_prefix, sizeof ep_prefix, "%s.endpoints[%zu]", p, k);
        if (eps->items[k].type != TOMLC_TABLE) {
            config_type_error(c, &eps->items[k], ep_prefix,
                              "a table like { url = \"https://...\", name = \"...\" }");
            continue;
        }
        config_endpoint(c, &eps->items[k], ep_prefix, &g->endpoints[k], seen, n_seen);
    }
}

/*
 * Reads groups[index].fallback_groups once every group's name is known:
 * each name must be another group's, and each may appear once.  Cycles
 * between groups are fine: a request tries every group at most once.
 */
static void config_fallbacks(struct config_ctx *c, const struct tomlc_node *t, size_t index)
{
    struct cfg_group *g = &c->cfg->groups[index];
    char key[96], shown[CONFIG_SHOW_MAX + 8];
    const struct tomlc_node *n = tomlc_get(t, "fallback_groups");
    if (!n)
        return;
    snprintf(key, sizeof key, "groups[%zu].fallback_groups", index);
    if (n->type != TOMLC_ARRAY) {
        config_type_error(c, n, key, "an array of group names, e.g. [\"relay-b\", \"anthropic\"]");
        return;
    }
    g->fallback = xcalloc(n->n ? n->n : 1, sizeof *g->fallback);
    for (size_t k = 0; k < n->n; k++) {
        const struct tomlc_node *it = &n->items[k];
        if (it->type != TOMLC_STRING) {
            config_type_error(c, it, key, "a group name (a string)");
            continue;
        }
        size_t found = c->cfg->n_groups;
        for (size_t j = 0; j < c->cfg->n_groups; j++)
            if (c->cfg->groups[j].name && strcmp(c->cfg->groups[j].name, it->str) == 0)
                found = j;
        config_show(it->str, shown, sizeof shown);
        if (found == c->cfg->n_groups) {
            config_error(c, it->line, key,
                         "no group is named \"%s\"; list the names of other [[groups]]", shown);
            continue;
        }
        if (found == index) {
            config_error(c, it->line, key,
                         "\"%s\" is this group itself; list only other groups to fall back to",
                         shown);
            continue;
        }
        bool dup = false;
        for (size_t j = 0; j < g->n_fallback; j++)
            dup |= g->fallback[j] == found;
        if (dup) {
            config_error(c, it->line, key, "\"%s\" is listed twice; list each group once", shown);
            continue;
        }
        g->fallback[g->n_fallback++] = found;
    }
}

static size_t config_count_endpoints(const struct tomlc_node *groups)
{
    size_t total = 0;
    for (size_t k = 0; k < groups->n; k++) {
        const struct tomlc_node *eps = tomlc_get(&groups->items[k], "endpoints");
        if (eps && eps->type == TOMLC_ARRAY)
            total += eps->n;
    }
    return total;
}

static void config_groups(struct config_ctx *c, const struct tomlc_node *root)
{
    const struct tomlc_node *t = tomlc_get(root, "groups");
    const struct tomlc_node *default_node = NULL;
    size_t default_index = 0, n_seen = 0;
    static const char no_groups[] =
        "no [[groups]] defined; add at least one [[groups]] with a name and endpoints";

    if (!t) {
        config_error(c, 0, "groups", no_groups);
        return;
    }
    if (t->type != TOMLC_ARRAY) {
        config_type_error(c, t, "groups",
                          "an array of tables; write [[groups]] (double brackets) before each "
                          "group");
        return;
    }
    if (t->n == 0) {
        config_error(c, t->line, "groups", no_groups);
        return;
    }
    struct config_seen *seen = xcalloc(config_count_endpoints(t), sizeof *seen);
    c->cfg->groups = xcalloc(t->n, sizeof *c->cfg->groups);
    c->cfg->n_groups = t->n;
    for (size_t k = 0; k < t->n; k++) {
        if (t->items[k].type != TOMLC_TABLE) {
            char key[64];
            snprintf(key, sizeof key, "groups[%zu]", k);
            config_type_error(c, &t->items[k], key, "a table ([[groups]])");
            continue;
        }
        config_group(c, &t->items[k], k, seen, &n_seen, &default_node, &default_index);
    }
    free(seen);
    for (size_t k = 0; k < t->n; k++)
        if (t->items[k].type == TOMLC_TABLE)
            config_fallbacks(c, &t->items[k], k);
}

static void config_health(struct config_ctx *c, const struct tomlc_node *root)
{
    struct config *cfg = c->cfg;
    const struct tomlc_node *t = config_table(c, root, "health_check", "a table ([health_check])");
    const struct tomlc_node *interval_n, *min_n, *max_n, *timeout_n, *args;
    const char *p = "health_check";
    int method = CHECK_MESSAGES;

    if (!t)
        return;
    config_unknown_keys(c, t, p, config_health_keys);
    enum config_got interval =
        config_int_field(c, t, p, "interval_seconds", 1, 86400, "", &cfg->interval_s, &interval_n);
    enum config_got min = config_int_field(c, t, p, "min_interval_seconds", 1, 86400, "",
                                           &cfg->min_interval_s, &min_n);
    enum config_got max = config_int_field(c, t, p, "max_interval_seconds", 1, 86400, "",
                                           &cfg->max_interval_s, &max_n);
    enum config_got timeout =
        config_int_field(c, t, p, "timeout_seconds", 1, 3600, "", &cfg->timeout_s, &timeout_n);
    config_bool(c, t, p, "dynamic_scaling", &cfg->dynamic_scaling, NULL);
    config_str(c, t, p, "claude_binary_path", &cfg->claude_binary_path, NULL);
    if (config_enum(c, t, p, "method", config_method_names, &method) == CONFIG_OK)
        cfg->method = method == 2 ? CHECK_CLI : method == 1 ? CHECK_COUNT_TOKENS : CHECK_MESSAGES;
    config_str(c, t, p, "model", &cfg->check_model, NULL);
    config_str(c, t, p, "prompt", &cfg->check_prompt, NULL);
    config_int_field(c, t, p, "max_concurrent", 1, 256, "", &cfg->max_concurrent_checks, NULL);
    config_int_field(c, t, p, "failed_interval_seconds", 1, 86400, "", &cfg->failed_interval_s,
                     NULL);

    args = tomlc_get(t, "cli_args");
    if (args && args->type != TOMLC_ARRAY) {
        config_type_error(c, args, "health_check.cli_args", "an array of strings");
    } else if (args) {
        bool ok = true;
        for (size_t k = 0; k < args->n; k++) {
            if (args->items[k].type != TOMLC_STRING) {
                char key[64];
                snprintf(key, sizeof key, "health_check.cli_args[%zu]", k);
                config_type_error(c, &args->items[k], key, "a string");
                ok = false;
            }
        }
        if (ok && args->n) {
            cfg->cli_args = xcalloc(args->n, sizeof *cfg->cli_args);
            cfg->n_cli_args = args->n;
            for (size_t k = 0; k < args->n; k++)
                cfg->cli_args[k] = xstrdup(args->items[k].str);
        }
    }

    /* Cross-checks use the lines of the keys actually written, if any. */
    if (interval != CONFIG_BAD && timeout != CONFIG_BAD && cfg->timeout_s >= cfg->interval_s) {
        const struct tomlc_node *at = timeout_n ? timeout_n : interval_n;
        config_error(c, at ? at->line : t->line, "health_check.timeout_seconds",
                     "%d is not below interval_seconds (%d); a check must end before the next "
                     "one starts, so lower timeout_seconds or raise interval_seconds",
                     cfg->timeout_s, cfg->interval_s);
    }
    if (min != CONFIG_BAD && max != CONFIG_BAD && cfg->min_interval_s > cfg->max_interval_s) {
        const struct tomlc_node *at = min_n ? min_n : max_n;
        config_error(c, at ? at->line : t->line, "health_check.min_interval_seconds",
                     "%d is above max_interval_seconds (%d); make min_interval_seconds <= "
                     "max_interval_seconds",
                     cfg->min_interval_s, cfg->max_interval_s);
    } else if (cfg->dynamic_scaling && min != CONFIG_BAD && timeout != CONFIG_BAD &&
               cfg->timeout_s >= cfg->min_interval_s) {
        const struct tomlc_node *at = timeout_n ? timeout_n : min_n;
        config_error(c, at ? at->line : t->line, "health_check.timeout_seconds",
                     "%d is not below min_interval_seconds (%d), the shortest interval "
                     "dynamic_scaling uses; lower timeout_seconds or raise min_interval_seconds",
                     cfg->timeout_s, cfg->min_interval_s);
    }
}

static void config_ui(struct config_ctx *c, const struct tomlc_node *root)
{
    const struct tomlc_node *t = config_table(c, root, "ui", "a table ([ui])");
    int lang = 0;
    if (!t)
        return;
    config_unknown_keys(c, t, "ui", config_ui_keys);
    if (config_enum(c, t, "ui", "language", config_language_names, &lang) == CONFIG_OK) {
        free(c->cfg->language);
        c->cfg->language = xstrdup(config_language_names[lang]);
    }
}

/*
 * [cluster].  redis_url is redis://HOST[:PORT][/DB]: no user or password in
 * it (the password comes from the variable redis_password_env names, so the
 * file never holds it) and no rediss:// (hiredis 0.14 has no TLS; the link
 * is secured with stunnel or a tunnel, see docs/FLEET.md).  key_prefix and
 * fleet become part of every Redis key, so they take no spaces or control
 * characters.
 */
static bool config_redis_url(struct config *cfg, const char *url, char *why, size_t wlen)
{
    static const char scheme[] = "redis://";
    if (strncmp(url, "rediss://", 9) == 0) {
        snprintf(why, wlen,
                 "rediss:// (TLS) is not supported by this hiredis; use redis:// to a "
                 "local stunnel or Redis TLS proxy (see docs/FLEET.md)");
        return false;
    }
    if (strncmp(url, scheme, sizeof scheme - 1) != 0) {
        snprintf(why, wlen, "must start with redis://, e.g. \"redis://127.0.0.1:6379/0\"");
        return false;
    }
    const char *h = url + sizeof scheme - 1;
    const char *end = h + strcspn(h, "/");
    if (memchr(h, '@', (size_t)(end - h))) {
        snprintf(why, wlen,
                 "holds credentials; remove them and name the variable that holds "
                 "the password in redis_password_env");
        return false;
    }
    const char *host = h, *hend, *port = NULL;
    if (*h == '[') {
        host = h + 1;
        hend = memchr(host, ']', (size_t)(end - host));
        if (!hend) {
            snprintf(why, wlen, "an IPv6 address needs its closing ]");
            return false;
        }
        if (hend + 1 < end && hend[1] == ':')
            port = hend + 2;
        else if (hend + 1 != end) {
            snprintf(why, wlen, "expected :PORT or /DB after ]");
            return false;
        }
    } else {
        hend = memchr(h, ':', (size_t)(end - h));
        if (hend)
            port = hend + 1;
        else
            hend = end;
    }
    if (hend == host || hend - host > 253) {
        snprintf(why, wlen, "has no host; e.g. \"redis://127.0.0.1:6379/0\"");
        return false;
    }
    long pv = 6379, dv = 0;
    if (port) {
        char *pe;
        pv = strtol(port, &pe, 10);
        if (pe != end || port == end || pv < 1 || pv > 65535) {
            snprintf(why, wlen, "the port must be a number from 1 to 65535");
            return false;
        }
    }
    if (*end == '/' && end[1]) {
        char *de;
        dv = strtol(end + 1, &de, 10);
        if (*de || dv < 0 || dv > 1000000) {
            snprintf(why, wlen, "the database after / must be a number, e.g. /0");
            return false;
        }
    }
    free(cfg->cluster_host);
    cfg->cluster_host = xstrndup(host, (size_t)(hend - host));
    for (const char *p = cfg->cluster_host; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '.' || *p == '-' || *p == ':' || *p == '_')) {
            snprintf(why, wlen, "the host is not a name or an address");
            return false;
        }
    cfg->cluster_port = (int)pv;
    cfg->cluster_db = (int)dv;
    return true;
}

static void config_cluster(struct config_ctx *c, const struct tomlc_node *root)
{
    struct config *cfg = c->cfg;
    const struct tomlc_node *t = config_table(c, root, "cluster", "a table ([cluster])");
    const struct tomlc_node *n = NULL;
    if (!t)
        return;
    config_unknown_keys(c, t, "cluster", config_cluster_keys);
    if (config_str(c, t, "cluster", "redis_url", &cfg->cluster_url, &n) == CONFIG_OK) {
        char why[200];
        if (!config_redis_url(cfg, cfg->cluster_url, why, sizeof why)) {
            config_error(c, n->line, "cluster.redis_url", "%s", why);
            free(cfg->cluster_url);
            cfg->cluster_url = NULL;
        }
    }
    config_env_secret(c, t, "cluster", "redis_password_env", "Redis password", "REDIS_PASSWORD",
                      &cfg->cluster_password_env, &cfg->cluster_password);
    static const char *const names[] = {"key_prefix", "fleet"};
    char **fields[] = {&cfg->cluster_key_prefix, &cfg->cluster_fleet};
    for (size_t k = 0; k < 2; k++) {
        if (config_str(c, t, "cluster", names[k], fields[k], &n) != CONFIG_OK)
            continue;
        const char *v = *fields[k];
        if (strlen(v) > 64 || strpbrk(v, " \t\"*?[]{}")) {
            char key[64];
            snprintf(key, sizeof key, "cluster.%s", names[k]);
            config_error(c, n->line, key,
                         "must be at most 64 characters without spaces, quotes "
                         "or glob characters (*?[]{}); e.g. \"%s\"",
                         k ? "team-a" : "zephyr:");
        }
    }
    config_int_field(c, t, "cluster", "lease_ms", 500, 600000, " (the checker lease)",
                     &cfg->cluster_lease_ms, NULL);
}

/* A config with every default of config.h applied and no groups. */
static struct config *config_defaults(const char *path)
{
    struct config *cfg = xcalloc(1, sizeof *cfg);
    cfg->path = xstrdup(path);
    cfg->bind = xstrdup("127.0.0.1");
    cfg->port = 8080;
    cfg->switch_threshold_ms = 50;
    cfg->graceful_switch_timeout_ms = 30000;
    cfg->max_body_bytes = 32LL * 1024 * 1024;
    cfg->connect_timeout_ms = 10000;
    cfg->header_timeout_ms = 300000;
    cfg->stream_header_timeout_ms = 30000;
    cfg->idle_timeout_ms = 300000;
    cfg->client_header_timeout_ms = 30000;
    cfg->keepalive_timeout_ms = 120000;
    cfg->max_connections = 1024;
    cfg->shutdown_grace_ms = 30000;
    cfg->log_level = xstrdup("info");
    cfg->sticky_sessions = true;
    cfg->session_ttl_s = 3600;
    cfg->session_switch_threshold_ms = 500;
    cfg->max_attempts = 3;
    cfg->retry_budget_ms = 60000;
    cfg->stream_holdback_ms = 1000;
    cfg->http2 = true;
    cfg->overloaded_retry_in_place_ms = 0;
    cfg->usage_cap_rest_s = 3600;
    cfg->interval_s = 120;
    cfg->min_interval_s = 30;
    cfg->max_interval_s = 3600;
    cfg->timeout_s = 15;
    cfg->dynamic_scaling = false;
    cfg->claude_binary_path = xstrdup("claude");
    cfg->method = CHECK_MESSAGES;
    cfg->check_model = xstrdup(CONFIG_DEFAULT_CHECK_MODEL);
    cfg->check_prompt = xstrdup("hi");
    cfg->max_concurrent_checks = 4;
    cfg->failed_interval_s = 15;
    cfg->language = xstrdup("en");
    cfg->cluster_key_prefix = xstrdup("zephyr:");
    cfg->cluster_fleet = xstrdup("default");
    cfg->cluster_port = 6379;
    cfg->cluster_lease_ms = 10000;
    return cfg;
}

int config_load_string(const char *path, const char *text, size_t len, struct config **out,
                       char **errors)
{
    struct config_ctx c;
    struct tomlc_node *root = NULL;
    struct tomlc_error terr = {NULL, 0, 0};
    int rc = -1;

    memset(&c, 0, sizeof c);
    c.path = path ? path : "<config>";
    c.cfg = config_defaults(c.path);
    *out = NULL;
    if (errors)
        *errors = NULL;

    if (tomlc_parse(text, len, &root, &terr) < 0) {
        /* Syntax errors carry a column too: "path:line:column: toml: ...". */
        char shown[512], where[64] = "";
        if (terr.line > 0 && terr.column > 0)
            snprintf(where, sizeof where, ":%d:%d", terr.line, terr.column);
        else if (terr.line > 0)
            snprintf(where, sizeof where, ":%d", terr.line);
        config_add_problem(&c, terr.line,
                           xasprintf("%s%s: toml: %s; the file must be valid TOML (see "
                                     "config.example.toml)\n",
                                     c.path, where,
                                     config_show(terr.message ? terr.message : "syntax error",
                                                 shown, sizeof shown)));
        goto out;
    }
    config_unknown_keys(&c, root, "", config_top_keys);
    config_server(&c, root);
    config_groups(&c, root);
    config_health(&c, root);
    config_ui(&c, root);
    config_cluster(&c, root);
out:
    if (c.n_errors == 0 && c.n_dropped == 0) {
        *out = c.cfg;
        rc = 0;
    } else {
        char *msgs = config_problems_text(&c);
        config_free(c.cfg);
        if (errors)
            *errors = msgs;
        else
            free(msgs);
    }
    free(terr.message);
    tomlc_free(root);
    return rc;
}

static void config_free_secret(char *s)
{
    if (!s)
        return;
    explicit_bzero(s, strlen(s));
    free(s);
}

static void config_free_models(struct cfg_model *m, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        free(m[k].from);
        free(m[k].to);
    }
    free(m);
}

void config_free(struct config *cfg)
{
    if (!cfg)
        return;
    for (size_t k = 0; k < cfg->n_groups; k++) {
        struct cfg_group *g = &cfg->groups[k];
        for (size_t e = 0; e < g->n_endpoints; e++) {
            free(g->endpoints[e].name);
            free(g->endpoints[e].url);
            free(g->endpoints[e].check_model);
            free(g->endpoints[e].auth_token_env);
            config_free_secret(g->endpoints[e].token);
            config_free_models(g->endpoints[e].models, g->endpoints[e].n_models);
            for (size_t h = 0; h < g->endpoints[e].n_headers; h++) {
                free(g->endpoints[e].headers[h].name);
                if (g->endpoints[e].headers[h].from_env)
                    config_free_secret(g->endpoints[e].headers[h].value);
                else
                    free(g->endpoints[e].headers[h].value);
            }
            free(g->endpoints[e].headers);
            config_free_secret(g->endpoints[e].proxy);
            free(g->endpoints[e].ca_file);
        }
        free(g->fallback);
        config_free_models(g->models, g->n_models);
        free(g->endpoints);
        free(g->check_model);
        free(g->name);
        free(g->auth_token_env);
        config_free_secret(g->token);
    }
    free(cfg->groups);
    for (size_t k = 0; k < cfg->n_cli_args; k++)
        free(cfg->cli_args[k]);
    free(cfg->cli_args);
    free(cfg->path);
    free(cfg->bind);
    free(cfg->access_key_env);
    config_free_secret(cfg->access_key);
    free(cfg->admin_key_env);
    config_free_secret(cfg->admin_key);
    for (size_t k = 0; k < cfg->n_allowed_hosts; k++)
        free(cfg->allowed_hosts[k]);
    free(cfg->allowed_hosts);
    for (size_t k = 0; k < cfg->n_allowed_origins; k++)
        free(cfg->allowed_origins[k]);
    free(cfg->allowed_origins);
    free(cfg->log_level);
    free(cfg->log_file);
    free(cfg->request_log);
    free(cfg->claude_binary_path);
    free(cfg->check_model);
    free(cfg->check_prompt);
    free(cfg->language);
    free(cfg->cluster_url);
    free(cfg->cluster_host);
    free(cfg->cluster_password_env);
    free(cfg->cluster_password);
    free(cfg->cluster_key_prefix);
    free(cfg->cluster_fleet);
    free(cfg);
}

const char *config_check_model_for(const struct config *cfg, const struct cfg_group *g,
                                   const struct cfg_endpoint *e)
{
    if (e && e->check_model)
        return e->check_model;
    if (g && g->check_model)
        return g->check_model;
    return cfg->check_model;
}

size_t config_default_group(const struct config *cfg)
{
    if (!cfg)
        return 0;
    for (size_t k = 0; k < cfg->n_groups; k++)
        if (cfg->groups[k].is_default)
            return k;
    return 0;
}

const char *config_ep_token(const struct cfg_group *g, const struct cfg_endpoint *e)
{
    return e && e->token ? e->token : g->token;
}

enum auth_style config_ep_auth(const struct cfg_group *g, const struct cfg_endpoint *e)
{
    return e && e->auth_set ? e->auth : g->auth;
}

const char *config_model_for(const struct cfg_group *g, const struct cfg_endpoint *e,
                             const char *model)
{
    const struct cfg_model *m = e && e->models ? e->models : g->models;
    size_t n = e && e->models ? e->n_models : g->n_models;
    const char *star = NULL;
    for (size_t k = 0; k < n; k++) {
        if (strcmp(m[k].from, model) == 0)
            return m[k].to;
        if (strcmp(m[k].from, "*") == 0)
            star = m[k].to;
    }
    return star;
}

static const char *config_method_name(enum check_method m)
{
    switch (m) {
    case CHECK_MESSAGES: return "messages";
    case CHECK_COUNT_TOKENS: return "count_tokens";
    case CHECK_CLI: return "cli";
    }
    return "?";
}

/* "NAME (set)" or "NAME (not set)": says whether, never what. */
static void config_summary_var(struct buf *b, const char *var, const char *secret)
{
    buf_appendf(b, "$%s (%s)", var, secret && *secret ? "set" : "not set");
}

char *config_summary(const struct config *cfg)
{
    struct buf b;
    size_t def = config_default_group(cfg);

    buf_init(&b, SIZE_MAX / 2);
    buf_appendf(&b, "config: %s\n", cfg->path ? cfg->path : "-");
    buf_appendf(&b, "listen: http://%s%s%s:%d%s\n", strchr(cfg->bind, ':') ? "[" : "", cfg->bind,
                strchr(cfg->bind, ':') ? "]" : "", cfg->port,
                cfg->port == 0 ? " (a free port is picked at start)" : "");
    buf_appendf(&b, "access key: ");
    if (cfg->access_key_env)
        config_summary_var(&b, cfg->access_key_env, cfg->access_key);
    else
        buf_appendf(&b, "none (clients are not checked)");
    buf_appendf(&b, "\nadmin key: ");
    if (cfg->admin_key_env)
        config_summary_var(&b, cfg->admin_key_env, cfg->admin_key);
    else
        buf_appendf(&b, "none");
    buf_appendf(&b, "\ngroups: %zu\n", cfg->n_groups);
    for (size_t k = 0; k < cfg->n_groups; k++) {
        const struct cfg_group *g = &cfg->groups[k];
        buf_appendf(&b, "  %s %s%s: ", k == def ? "*" : "-", g->name, k == def ? " (default)" : "");
        if (g->auth_token_env) {
            buf_appendf(&b, "token from ");
            config_summary_var(&b, g->auth_token_env, g->token);
            buf_appendf(&b, ", sent as %s\n",
                        g->auth == AUTH_BEARER ? "Authorization: Bearer" : "x-api-key");
        } else {
            buf_appendf(&b, "no token, client credentials passed through\n");
        }
        if (g->n_fallback) {
            buf_appendf(&b, "    falls back to:");
            for (size_t j = 0; j < g->n_fallback; j++)
                buf_appendf(&b, "%s %s", j ? "," : "", cfg->groups[g->fallback[j]].name);
            buf_appendf(&b, "\n");
        }
        for (size_t e = 0; e < g->n_endpoints; e++) {
            const struct cfg_endpoint *ep = &g->endpoints[e];
            const char *m = config_check_model_for(cfg, g, ep);
            buf_appendf(&b, "      %-20s %s", ep->name, ep->url);
            if (m != cfg->check_model)
                buf_appendf(&b, " (check model %s)", m);
            if (ep->auth_token_env) {
                buf_appendf(&b, " (own token ");
                config_summary_var(&b, ep->auth_token_env, ep->token);
                buf_appendf(&b, ")");
            }
            buf_appendf(&b, "\n");
        }
    }
    buf_appendf(&b, "health check: method %s", config_method_name(cfg->method));
    if (cfg->method == CHECK_CLI)
        buf_appendf(&b, " (%s, %zu extra argument%s)", cfg->claude_binary_path, cfg->n_cli_args,
                    cfg->n_cli_args == 1 ? "" : "s");
    buf_appendf(&b,
                ", model %s, every %d s, timeout %d s, failed endpoints every %d s, "
                "at most %d at once\n",
                cfg->check_model, cfg->interval_s, cfg->timeout_s, cfg->failed_interval_s,
                cfg->max_concurrent_checks);
    buf_appendf(&b, "dynamic scaling: %s (%d..%d s)\n", cfg->dynamic_scaling ? "on" : "off",
                cfg->min_interval_s, cfg->max_interval_s);
    buf_appendf(&b,
                "switching: threshold %d ms, graceful switch timeout %d ms, sticky sessions "
                "%s (ttl %d s, switch threshold %d ms)\n",
                cfg->switch_threshold_ms, cfg->graceful_switch_timeout_ms,
                cfg->sticky_sessions ? "on" : "off", cfg->session_ttl_s,
                cfg->session_switch_threshold_ms);
    buf_appendf(&b,
                "limits: body %lld MiB, %d connections; timeouts (ms): connect %d, "
                "headers %d (streams %d), idle %d, client headers %d, keep-alive %d, shutdown "
                "grace %d\n",
                cfg->max_body_bytes / (1024 * 1024), cfg->max_connections, cfg->connect_timeout_ms,
                cfg->header_timeout_ms, cfg->stream_header_timeout_ms, cfg->idle_timeout_ms,
                cfg->client_header_timeout_ms, cfg->keepalive_timeout_ms, cfg->shutdown_grace_ms);
    buf_appendf(&b, "log: level %s, %s%s\n", cfg->log_level,
                cfg->log_file ? "file " : "stderr only", cfg->log_file ? cfg->log_file : "");
    buf_appendf(&b, "ui language: %s\n", cfg->language);
    return b.data ? b.data : xstrdup("");
}
