/*
 * config: the proxy's configuration, loaded from TOML and validated.
 *
 * config_load() reads a TOML file (through the C interface of toml.cpp),
 * fills a struct config with every documented default applied, resolves each
 * group's token from the environment, and checks everything it can before
 * anything starts.  It never prints: every problem becomes one line of the
 * returned error text, in the form
 *
 *     path:line: key: what is wrong; what would be right
 *
 * and all problems found are reported at once, not only the first.
 *
 * The module does no network or event-loop I/O; it reads the config file
 * and the environment only.  Tokens are secrets: they are stored in
 * cfg_group.token and never copied into error text.
 */
#ifndef ZEPHYR_CONFIG_H
#define ZEPHYR_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

/* The cheapest current model: what a check asks for unless told otherwise.
 * (claude-3-5-haiku-latest, the old default, was retired on 2026-02-19.) */
#define CONFIG_DEFAULT_CHECK_MODEL "claude-haiku-4-5"

enum auth_style {
    AUTH_X_API_KEY = 0, /* x-api-key: TOKEN (default) */
    AUTH_BEARER = 1,    /* Authorization: Bearer TOKEN */
};

enum check_method {
    CHECK_MESSAGES = 0,     /* POST /v1/messages, max_tokens 1 (default) */
    CHECK_COUNT_TOKENS = 1, /* POST /v1/messages/count_tokens */
    CHECK_CLI = 2,          /* run `claude -p` against the endpoint */
};

/* One entry of a "models" table: requests for from go out as to; from "*"
 * matches every model without an entry of its own. */
struct cfg_model {
    char *from; /* owns */
    char *to;   /* owns */
};

/* An extra request header of an endpoint; a value written "${NAME}" is
 * read from that environment variable and is then a secret. */
struct cfg_header {
    char *name;  /* owns */
    char *value; /* owns; secret when from_env */
    bool from_env;
};

struct cfg_endpoint {
    char *name;        /* owns */
    char *url;         /* owns; http:// or https://, no trailing slash */
    int line;          /* line in the config file, 0 if unknown */
    char *check_model; /* owns; "check_model", NULL: the group's */
    /* An endpoint may carry its own account: these override the group's. */
    char *auth_token_env;     /* owns; NULL: the group's token */
    char *token;              /* owns; secret, NULL when auth_token_env is NULL */
    enum auth_style auth;     /* meaningful when auth_set */
    bool auth_set;            /* "auth_header" given on the endpoint */
    struct cfg_model *models; /* owns, n_models entries; when given, replaces the group's */
    size_t n_models;
    struct cfg_header *headers; /* owns, n_headers entries: "headers" */
    size_t n_headers;
    char *proxy;   /* owns; http://, https://, socks5:// or socks5h:// proxy, or NULL */
    char *ca_file; /* owns; PEM CA bundle for an https:// endpoint, or NULL */
};

struct cfg_group {
    char *name;           /* owns */
    char *auth_token_env; /* owns; NULL: pass the client's credentials through */
    char *token;          /* owns; secret, NULL when auth_token_env is NULL */
    enum auth_style auth; /* key "auth_header": "x-api-key" | "bearer" */
    bool is_default;
    char *check_model;              /* owns; "check_model", NULL: health_check.model */
    struct cfg_endpoint *endpoints; /* owns, n_endpoints entries */
    size_t n_endpoints;
    /* "fallback_groups": where a request goes, in order, when no endpoint
     * of this group can take it; indices into config.groups, validated
     * (they exist, none is this group, no repeats). */
    size_t *fallback; /* owns, n_fallback entries */
    size_t n_fallback;
    struct cfg_model *models; /* owns, n_models entries: "models" */
    size_t n_models;
};

struct config {
    char *path; /* owns; the file it was loaded from */

    /* [server] */
    char *bind;                     /* owns; default "127.0.0.1" */
    int port;                       /* default 8080 */
    int switch_threshold_ms;        /* default 50 */
    int graceful_switch_timeout_ms; /* default 30000 */
    long long max_body_bytes;       /* "max_body_mb", default 32 MiB */
    int connect_timeout_ms;         /* default 10000 */
    int header_timeout_ms;          /* upstream response headers, default 300000 */
    int stream_header_timeout_ms;   /* the same for streaming requests, default 30000
                                     * (never above header_timeout_ms) */
    int idle_timeout_ms;            /* stream idle (every byte resets), default 300000 */
    int client_header_timeout_ms;   /* client must send headers, default 30000 */
    int keepalive_timeout_ms;       /* idle client keep-alive, default 120000 */
    int max_connections;            /* default 1024 */
    int shutdown_grace_ms;          /* default 30000 */
    char *access_key_env;           /* owns; NULL unless set */
    char *access_key;               /* owns; secret */
    char *admin_key_env;            /* owns; NULL unless set */
    char *admin_key;                /* owns; secret */
    char **allowed_hosts;           /* owns; extra Host names while bound to loopback, lowercase */
    size_t n_allowed_hosts;
    char **allowed_origins; /* owns; Origins besides the proxy's own, lowercase */
    size_t n_allowed_origins;
    char *log_level;          /* owns; "error|warn|info|debug", default "info" */
    char *log_file;           /* owns; NULL: stderr only */
    char *request_log;        /* owns; JSON-lines request log file, NULL: none */
    int max_attempts;         /* attempts per request across endpoints, default 3 */
    int retry_budget_ms;      /* time for all attempts of a request, default 60000 */
    bool http_client_libcurl; /* "http_client": "builtin" (default) sends http:// endpoints
                                     * through h1.c, "libcurl" sends everything through libcurl */
    bool http2;             /* the built-in client offers HTTP/2 to https endpoints, default true */
    int stream_holdback_ms; /* hold message_start/ping at most this long, default 1000; 0 off */
    int overloaded_retry_in_place_ms; /* on 529, retry the same endpoint once after this; 0 off */
    int usage_cap_rest_s; /* an exhausted balance/quota without a reset time, default 3600 */
    bool sticky_sessions; /* default true */
    int session_ttl_s;    /* default 3600 */
    int session_switch_threshold_ms; /* a session leaves its endpoint for one this much
                                     * faster; default 500, 0 never for speed alone */

    /* [[groups]] */
    struct cfg_group *groups; /* owns, n_groups entries */
    size_t n_groups;

    /* [health_check] */
    int interval_s;           /* default 120 */
    int min_interval_s;       /* default 30 */
    int max_interval_s;       /* default 3600 */
    int timeout_s;            /* default 15 */
    bool dynamic_scaling;     /* default false */
    char *claude_binary_path; /* owns; default "claude" */
    enum check_method method; /* default CHECK_MESSAGES */
    char *check_model;        /* owns; "model", default CONFIG_DEFAULT_CHECK_MODEL */
    char *check_prompt;       /* owns; "prompt", default "hi" */
    char **cli_args;          /* owns; "cli_args", extra CLI arguments */
    size_t n_cli_args;
    int max_concurrent_checks; /* "max_concurrent", default 4 */
    int failed_interval_s;     /* re-check cadence of failed endpoints, default 15 */

    /* [ui] */
    char *language; /* owns; "en" (default) or "zh" */

    /* [cluster]: state shared with other instances through Redis
     * (cluster.c); no cluster unless redis_url is set.  Read at start only. */
    char *cluster_url;          /* owns; "redis_url" as written, NULL: no cluster */
    char *cluster_host;         /* owns; host of the URL (no brackets) */
    int cluster_port;           /* of the URL, default 6379 */
    int cluster_db;             /* the URL's /N, default 0 */
    char *cluster_password_env; /* owns; "redis_password_env", NULL: no AUTH */
    char *cluster_password;     /* owns; secret */
    char *cluster_key_prefix;   /* owns; "key_prefix", default "zephyr:" */
    char *cluster_fleet;        /* owns; "fleet", default "default" */
    int cluster_lease_ms;       /* checker lease, "lease_ms", default 10000 */
};

/*
 * Loads and validates the file at path.  On success returns 0 and sets *out
 * (free it with config_free).  On failure returns -1, sets *out to NULL and
 * *errors to a malloc'd, newline-separated list of problems (caller frees).
 * Tokens are looked up with getenv(); load .env files first (dotenv.h).
 */
int config_load(const char *path, struct config **out, char **errors);

/* Same, from text already in memory; path is used only in messages. */
int config_load_string(const char *path, const char *text, size_t len, struct config **out,
                       char **errors);

/*
 * The files a configuration names (each endpoint's ca_file) are checked by
 * probe while the configuration is loaded, so that their problems are
 * reported with all the others: probe returns 0, or -1 with the reason in
 * why.  config.c does no I/O itself; the process sets config_file_check
 * (config_file.c) once at start; unset, files are not checked.
 */
void config_set_file_probe(int (*probe)(const char *path, char *why, size_t len));

/* A regular file that can be read: stat() and access() only, never an
 * open(), so a FIFO named in the configuration cannot hold up the loop
 * that runs a reload. */
int config_file_check(const char *path, char *why, size_t len);

/* Frees everything the config owns; NULL is a no-op. */
void config_free(struct config *cfg);

/* Index of the group that is current at start: default = true, else 0. */
size_t config_default_group(const struct config *cfg);

/*
 * Whether a secret (token, access or admin key) can go into a header line:
 * false when it holds a control character (a byte below 0x20, or DEL).  CR
 * or LF would end the line and start another header of the secret's
 * making.  config_load() applies it to every secret it reads; main.c to
 * ZEPHYR_ADMIN_KEY for --connect.
 */
bool config_secret_ok(const char *v);

/* The model endpoint e of group g is checked with: the endpoint's
 * check_model, else the group's, else health_check.model. */
const char *config_check_model_for(const struct config *cfg, const struct cfg_group *g,
                                   const struct cfg_endpoint *e);
/* The token and auth header an endpoint's requests carry: its own when it
 * names auth_token_env / auth_header, else its group's.  NULL: pass the
 * client's credentials through. */
const char *config_ep_token(const struct cfg_group *g, const struct cfg_endpoint *e);
enum auth_style config_ep_auth(const struct cfg_group *g, const struct cfg_endpoint *e);

/* The model a request for model goes out as on endpoint e of group g (the
 * endpoint's "models" when it has one, else the group's; an exact entry
 * before "*"), or NULL when it passes unchanged. */
const char *config_model_for(const struct cfg_group *g, const struct cfg_endpoint *e,
                             const char *model);

/* Prints a human summary (no secrets) for --check-config. */
char *config_summary(const struct config *cfg);

#endif
