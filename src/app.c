/*
 * app: see app.h.
 *
 * Routing: every request first passes the guard (guard.h: Host and
 * Origin), then /health, /status, /metrics, /dashboard and /admin/... are
 * answered here; every other path goes to the proxy.  A CORS preflight
 * that passed the guard is answered here too, never forwarded.  When
 * server.access_key_env is set (required for a bind beyond loopback),
 * every path but /health needs the key: the own paths in x-zephyr-key or
 * Authorization: Bearer, a proxied request in x-zephyr-key, or as its
 * x-api-key / Authorization: Bearer when the group injects its own token;
 * the key never goes upstream.  /dashboard without the key answers 401
 * with a sign-in page that holds no data (web.h).  /admin/ then also
 * answers loopback clients only, unless server.admin_key_env is set, in
 * which case any client that presents that key in x-zephyr-admin-key may
 * use it.
 *
 * Shutdown: the first SIGINT/SIGTERM stops accepting and waits for the
 * requests in flight (streams too) up to server.shutdown_grace_ms; a second
 * signal, or the end of the grace period, aborts what is left.  Then every
 * handle is closed and the loop runs dry, so that nothing leaks.
 */
#include "app.h"

#include <cjson/cJSON.h>
#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cluster.h"
#include "config.h"
#include "conn.h"
#include "curlso.h"
#include "dashboard.h"
#include "fake/demo.h"
#include "dotenv.h"
#include "guard.h"
#include "health.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "proxy.h"
#include "state.h"
#include "status.h"
#include "upstream.h"
#include "util.h"
#include "web.h"

struct app {
    uv_loop_t loop;
    struct config *cfg;             /* borrows from st (st->owned_cfg) */
    struct state *st;               /* owns */
    struct upstream *up;            /* owns */
    struct conn_server *srv;        /* owns */
    struct proxy *px;               /* owns */
    struct health *health;          /* owns */
    struct demo *demo;              /* owns; NULL unless --demo */
    struct dashboard *dash;         /* owns; NULL unless --dashboard */
    struct metrics *metrics;        /* owns */
    struct cluster *cluster;        /* owns; NULL without [cluster] redis_url */
    struct app_reload *reload;      /* owns; the reload whose files are being read, or NULL */
    struct app_waiter *reload_next; /* owns; clients waiting for the reload after it */
    bool reload_again;              /* a reload was asked for while one was reading */
    bool reload_next_sighup;        /* ... and SIGHUP asked for it */
    uv_signal_t sigint, sigterm, sighup;
    uv_timer_t grace;
    uv_timer_t policy_timer; /* fires pending graceful switches, keeps the next endpoint warm */
    uint64_t busy_ms;        /* loop time a request was last seen in flight or ending */
    uint64_t trim_ms;        /* loop time of the last app_trim_heap */
    bool parsed;             /* a configuration was parsed since the last trim */
    char listen[80];
    int shutting_down; /* 0, 1 graceful, 2 closing */
    int exit_code;
    struct app_opts opts;
};

/* ---- own paths ------------------------------------------------------------ */

static void respond_json(struct conn *c, int status, cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    conn_respond(c, status, "application/json", s, strlen(s), "Cache-Control: no-store\r\n");
    free(s);
    cJSON_Delete(o);
}

/* The state's switch callback: switches are counted in the metrics. */
static void app_on_switch(void *ud, const char *reason)
{
    metrics_switch(ud, reason);
}

static cJSON *app_status(struct app *a)
{
    struct status_info info = {
        .version = ZEPHYR_VERSION,
        .listen = a->listen,
        .now_mono_ms = now_mono_ms(),
        .now_wall_ms = now_wall_ms(),
    };
    struct state_snapshot snap;
    state_snapshot_take(a->st, info.now_mono_ms, &snap);
    cJSON *o = status_render(&snap, &info);
    state_snapshot_release(&snap);
    cluster_status(a->cluster, o);
    return o;
}

static bool admin_allowed(struct app *a, struct conn *c, const struct http_req *req)
{
    if (a->cfg->admin_key) {
        const struct http_hdr *h = http_req_header(req, "x-zephyr-admin-key");
        return h && guard_key_eq(h->value, h->value_len, a->cfg->admin_key);
    }
    return conn_peer_is_loopback(c);
}

static const char *json_string(const cJSON *body, const char *key)
{
    const cJSON *v = body ? cJSON_GetObjectItemCaseSensitive(body, key) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void admin_ok(struct app *a, struct conn *c, const char *what)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "ok", 1);
    cJSON_AddStringToObject(o, "done", what);
    cJSON_AddItemToObject(o, "status", app_status(a));
    respond_json(c, 200, o);
}

/* Every secret cfg holds goes to the log redactor: group and endpoint
 * tokens, header values read from the environment, a proxy URL with a
 * password, the access, admin and Redis keys.  One list for start and reload. */
static void app_register_secrets(const struct config *cfg)
{
    for (size_t g = 0; g < cfg->n_groups; g++) {
        log_add_secret(cfg->groups[g].token);
        for (size_t e = 0; e < cfg->groups[g].n_endpoints; e++) {
            const struct cfg_endpoint *ce = &cfg->groups[g].endpoints[e];
            log_add_secret(ce->token);
            for (size_t h = 0; h < ce->n_headers; h++)
                if (ce->headers[h].from_env)
                    log_add_secret(ce->headers[h].value);
            if (ce->proxy && strchr(ce->proxy, '@'))
                log_add_secret(ce->proxy); /* it carries a password */
        }
    }
    log_add_secret(cfg->access_key);
    log_add_secret(cfg->admin_key);
    log_add_secret(cfg->cluster_password);
}

/* 0 when cfg can run: libcurl is loaded if an endpoint needs it.  Else
 * -1 and *why names the endpoint (curlso has logged why it failed). */
static int app_libcurl_ready(const struct app *a, const struct config *cfg, char **why)
{
    for (size_t g = 0; g < cfg->n_groups; g++) {
        for (size_t i = 0; i < cfg->groups[g].n_endpoints; i++) {
            const struct cfg_endpoint *e = &cfg->groups[g].endpoints[i];
            if (!e->proxy && !upstream_uses_libcurl(a->up, e->url, !cfg->http_client_libcurl))
                continue;
            if (curlso_load() == 0)
                return 0;
            *why = xasprintf("endpoint %s needs libcurl (its own proxy, a proxy variable or "
                             "http_client = \"libcurl\"), which cannot be loaded; install "
                             "libcurl4\n",
                             e->name);
            return -1;
        }
    }
    return 0;
}

/* ---- live reload: the contract is above app_reload_start() ---- */

/* The cap config_load() (config_file.c) puts on a config file it reads. */
#define APP_CONFIG_MAX_FILE (4 * 1024 * 1024)

/* A client of POST /admin/reload waiting for the outcome. */
struct app_waiter {
    struct conn *c;          /* borrows; NULL once the client has gone */
    struct app_waiter *next; /* owns */
};

struct app_reload {
    uv_work_t work;
    struct app *a;  /* borrows */
    char *path;     /* owns; the config file */
    char *cfg_text; /* owns; what the worker read, NULL on error */
    size_t cfg_len;
    struct dotenv_files env;    /* owns; likewise */
    char *errors;               /* owns; what went wrong reading, or NULL */
    struct app_waiter *waiters; /* owns; answered when this reload ends */
    bool sighup;                /* SIGHUP asked for it: its log line says so */
};

static void on_waiter_gone(void *h)
{
    struct app_waiter *w = h;
    w->c = NULL;
}

static const struct conn_handler_ops app_waiter_ops = {
    .client_gone = on_waiter_gone,
    .drained = NULL,
};

/* On the worker thread: only reads files into the job. */
static void on_reload_work(uv_work_t *req)
{
    struct app_reload *r = req->data;
    size_t len = 0;
    int rc = dotenv_read_file(r->path, APP_CONFIG_MAX_FILE, "check the path given with --config",
                              &r->cfg_text, &len, &r->errors);
    if (rc == 1)
        r->errors = xasprintf("%s: cannot read: %s; check the path given with --config\n", r->path,
                              strerror(ENOENT));
    if (rc != 0)
        return;
    r->cfg_len = len;
    dotenv_read_for_config(r->path, &r->env, &r->errors);
}

/* On the loop, with the files read: applies them or reports why not. */
static int app_reload_apply(struct app *a, struct app_reload *r, char **errors)
{
    const char *path = r->path;
    struct dotenv_undo *undo = NULL;
    *errors = NULL;
    if (r->errors) {
        *errors = r->errors;
        r->errors = NULL;
        return -1;
    }
    if (dotenv_apply(&r->env, &undo, errors) != 0)
        return -1;
    struct config *cfg = NULL;
    if (config_load_string(path, r->cfg_text, r->cfg_len, &cfg, errors) != 0 ||
        app_libcurl_ready(a, cfg, errors) != 0) {
        /* The environment goes back to what the running configuration
         * was resolved with (proxy variables are read from it, too). */
        config_free(cfg);
        dotenv_undo(undo);
        return -1;
    }
    dotenv_undo_free(undo);
    if (a->opts.port >= 0)
        cfg->port = a->opts.port;
    if (a->opts.bind) {
        free(cfg->bind);
        cfg->bind = xstrdup(a->opts.bind);
    }
    if (cfg->port != a->cfg->port || strcmp(cfg->bind, a->cfg->bind) != 0) {
        log_warn("reload: server.bind/server.port changed; the proxy keeps listening on %s "
                 "until it is restarted",
                 a->listen);
        cfg->port = a->cfg->port;
        free(cfg->bind);
        cfg->bind = xstrdup(a->cfg->bind);
    }
    /* Old tokens stay redacted (retired) while requests that use them may
     * still run; the new configuration's are current. */
    log_retire_secrets();
    app_register_secrets(cfg);
    if (!a->opts.log_level)
        log_set_level((enum log_level)log_level_parse(cfg->log_level));

    uint64_t now = now_mono_ms();
    struct state *old = a->st;
    struct state *st = state_new(cfg, now, now_wall_ms());
    state_own_config(st, cfg);
    state_take_over(st, old, now);
    a->st = st;
    a->cfg = cfg;
    conn_server_set_config(a->srv, cfg);
    upstream_set_builtin(a->up, !cfg->http_client_libcurl);
    upstream_set_http2(a->up, cfg->http2);
    proxy_set_config(a->px, st, cfg);
    health_set_config(a->health, st, cfg);
    if (a->cluster)
        cluster_set_state(a->cluster, st);
    state_retire(old);
    log_info("configuration reloaded from %s (%zu group(s), %zu endpoint(s))", path, cfg->n_groups,
             state_n_eps(st));
    state_event(st, "info", "", "", "reload", "configuration reloaded");
    health_poke(a->health);
    return 0;
}

static void app_reload_begin(struct app *a, struct app_waiter *waiters, bool sighup);

static void on_reload_done(uv_work_t *req, int status)
{
    struct app_reload *r = req->data;
    struct app *a = r->a;
    char *errors = NULL;
    int rc = -1;

    a->reload = NULL;
    a->parsed = true;
    if (status != 0 || a->shutting_down)
        errors = xstrdup("the proxy is shutting down\n");
    else
        rc = app_reload_apply(a, r, &errors);
    if (rc != 0)
        log_error("%sreload failed, the running configuration stays:\n%s",
                  r->sighup ? "SIGHUP: " : "", errors ? errors : "unknown error");
    else if (a->dash)
        dashboard_notify(a->dash);
    for (struct app_waiter *w = r->waiters, *next; w; w = next) {
        next = w->next;
        if (w->c) {
            struct conn *c = w->c;
            conn_detach(c);
            if (rc == 0) {
                admin_ok(a, c, "reload");
            } else {
                char err[1024];
                snprintf(err, sizeof err, "reload failed, the running configuration stays: %s",
                         errors ? errors : "unknown error");
                size_t el = strlen(err);
                while (el && err[el - 1] == '\n')
                    err[--el] = '\0';
                conn_respond_error(c, 400, "invalid_request_error", err, NULL);
            }
        }
        free(w);
    }
    free(errors);
    free(r->path);
    if (r->cfg_text) {
        explicit_bzero(r->cfg_text, r->cfg_len);
        free(r->cfg_text);
    }
    dotenv_files_release(&r->env);
    free(r->errors);
    free(r);

    if (a->reload_again) {
        struct app_waiter *next = a->reload_next;
        bool sighup = a->reload_next_sighup;
        a->reload_again = false;
        a->reload_next_sighup = false;
        a->reload_next = NULL;
        app_reload_begin(a, next, sighup);
    }
}

static void app_reload_begin(struct app *a, struct app_waiter *waiters, bool sighup)
{
    struct app_reload *r = xcalloc(1, sizeof *r);
    r->sighup = sighup;
    r->a = a;
    r->path = xstrdup(a->opts.config_path);
    r->waiters = waiters;
    r->work.data = r;
    a->reload = r;
    int rc = uv_queue_work(&a->loop, &r->work, on_reload_work, on_reload_done);
    if (rc != 0) {
        /* Only when the loop refuses work; answered as a failed read. */
        r->errors = xasprintf("cannot start reading the files: %s\n", uv_strerror(rc));
        on_reload_done(&r->work, 0);
    }
}

/*
 * Live reload (SIGHUP, POST /admin/reload, the dashboard).  Nothing is
 * read on the loop: a worker (uv_queue_work) reads the config file and the
 * .env files into memory (regular files only, with size caps, so a FIFO or
 * a huge file is an error, not a freeze).  Back on the loop the .env values
 * are applied to the environment (dotenv_apply: setenv is not thread-safe,
 * and config resolves *_env names with getenv), then the config text is
 * parsed and validated completely; on any error the environment is put
 * back, the running configuration stays and the errors are reported.  On
 * success a new state is built and takes over what stays true from the old
 * one (see state_take_over); requests in flight finish on what they
 * started with, and the old state and configuration are freed when the
 * last of them ends.  The listen address cannot change without a restart.
 *
 * One reload reads at a time.  A reload asked for meanwhile is queued: it
 * starts when the running one ends (the files may have changed since that
 * one read them), and every request that asked for it gets its result.
 * Clients of POST /admin/reload are answered when their reload ends; a
 * client that leaves before is forgotten (client_gone).
 *
 * app_reload_start() asks for a reload.  c (may be NULL: SIGHUP, dashboard)
 * is answered when it ends.  Returns 0, or -1 with err set when there is
 * nothing to reload (then c has not been answered).
 */
static int app_reload_start(struct app *a, struct conn *c, bool sighup, char *err, size_t errlen)
{
    if (!a->opts.config_path) {
        snprintf(err, errlen,
                 "reload failed, the running configuration stays: the demo has "
                 "no configuration file to reload");
        return -1;
    }
    if (a->shutting_down) {
        snprintf(err, errlen, "reload refused: the proxy is shutting down");
        return -1;
    }
    struct app_waiter *w = NULL;
    if (c) {
        w = xcalloc(1, sizeof *w);
        w->c = c;
        conn_attach(c, w, &app_waiter_ops);
    }
    if (a->reload) {
        if (w) {
            w->next = a->reload_next;
            a->reload_next = w;
        }
        a->reload_again = true;
        a->reload_next_sighup |= sighup;
        return 0;
    }
    app_reload_begin(a, w, sighup);
    return 0;
}

/* Runs one admin operation for the HTTP API and the dashboard alike.
 * Returns 0, -1 for a bad body (message in err) or -2 for an unknown op. */
static int app_admin_op(struct app *a, const char *op, const cJSON *body, char *err, size_t errlen)
{
    uint64_t now = now_mono_ms();
    int rc = 0;
    if (strcmp(op, "check") == 0) {
        health_run_now(a->health);
    } else if (strcmp(op, "pause") == 0) {
        health_set_paused(a->health, true);
    } else if (strcmp(op, "resume") == 0) {
        health_set_paused(a->health, false);
    } else if (strcmp(op, "mode") == 0) {
        const char *m = json_string(body, "mode");
        if (!m || (strcmp(m, "auto") != 0 && strcmp(m, "manual") != 0)) {
            snprintf(err, errlen,
                     "admin mode: body must be {\"mode\": \"auto\"} or "
                     "{\"mode\": \"manual\"}");
            return -1;
        }
        rc = state_set_mode(a->st, strcmp(m, "manual") == 0, now, err, errlen);
    } else if (strcmp(op, "pin") == 0) {
        const char *name = json_string(body, "endpoint");
        int ep = name ? state_find_ep(a->st, name) : -1;
        if (ep < 0) {
            snprintf(err, errlen,
                     "admin pin: body must be {\"endpoint\": NAME} naming a "
                     "configured endpoint");
            return -1;
        }
        rc = state_pin(a->st, ep, now, err, errlen);
    } else if (strcmp(op, "sessions/release") == 0) {
        /* {} releases every session, {"endpoint": NAME} those of one endpoint. */
        const cJSON *name = body ? cJSON_GetObjectItemCaseSensitive(body, "endpoint") : NULL;
        int ep = -1;
        if (name) {
            ep = cJSON_IsString(name) ? state_find_ep(a->st, name->valuestring) : -1;
            if (ep < 0) {
                snprintf(err, errlen,
                         "admin sessions/release: body must be {} or "
                         "{\"endpoint\": NAME} naming a configured endpoint");
                return -1;
            }
        }
        state_release_sessions(a->st, ep);
    } else if (strcmp(op, "reload") == 0) {
        /* Only the dashboard comes here: the outcome goes to the log. */
        if (app_reload_start(a, NULL, false, err, errlen) != 0)
            return -1;
    } else if (strcmp(op, "group") == 0) {
        const char *name = json_string(body, "group");
        int g = name ? state_find_group(a->st, name) : -1;
        if (g < 0) {
            snprintf(err, errlen,
                     "admin group: body must be {\"group\": NAME} naming a "
                     "configured group");
            return -1;
        }
        rc = state_set_group(a->st, g, now, err, errlen);
    } else {
        snprintf(err, errlen,
                 "unknown admin operation (check, pause, resume, mode, pin, group, reload, "
                 "sessions/release)");
        return -2;
    }
    if (rc != 0)
        return -1;
    health_poke(a->health);
    if (a->dash)
        dashboard_notify(a->dash);
    return 0;
}

static void app_admin(struct app *a, struct conn *c, struct http_req *req, const char *op)
{
    char err[1024] = "";
    if (!admin_allowed(a, c, req)) {
        conn_respond_error(c, 403, "permission_error",
                           a->cfg->admin_key ? "admin API: wrong or missing x-zephyr-admin-key"
                                             : "admin API answers loopback clients only",
                           NULL);
        return;
    }
    if (strcmp(req->method, "POST") != 0) {
        conn_respond_error(c, 405, "invalid_request_error", "admin API: use POST",
                           "Allow: POST\r\n");
        return;
    }
    cJSON *body = NULL;
    if (req->body.len) {
        body = cJSON_ParseWithLength(req->body.data, req->body.len);
        if (!body || !cJSON_IsObject(body)) {
            cJSON_Delete(body);
            conn_respond_error(c, 400, "invalid_request_error",
                               "admin API: the body must be a JSON object", NULL);
            return;
        }
    }
    if (strcmp(op, "reload") == 0) {
        /* Answered when the reload ends (on_reload_done). */
        cJSON_Delete(body);
        if (app_reload_start(a, c, false, err, sizeof err) != 0)
            conn_respond_error(c, 400, "invalid_request_error", err, NULL);
        return;
    }
    int rc = app_admin_op(a, op, body, err, sizeof err);
    cJSON_Delete(body);
    if (rc == -2)
        conn_respond_error(c, 404, "not_found_error", err, NULL);
    else if (rc != 0)
        conn_respond_error(c, 400, "invalid_request_error", err, NULL);
    else
        admin_ok(a, c, op);
}

/* Whether the client presented the access key; see the top of the file.
 * own: the path is answered here, so no credential of the client's can be
 * meant for the upstream. */
static bool access_allowed(struct app *a, const struct http_req *req, bool own)
{
    const char *key = a->cfg->access_key;
    if (!key)
        return true;
    const struct http_hdr *h = http_req_header(req, "x-zephyr-key");
    if (h)
        return guard_key_eq(h->value, h->value_len, key);
    const struct cfg_group *g = state_group_cfg(a->st, state_current_group(a->st));
    if (!own && !g->token)
        return false; /* the client's credentials belong to the upstream */
    h = http_req_header(req, "x-api-key");
    if (!own && h && guard_key_eq(h->value, h->value_len, key))
        return true;
    h = http_req_header(req, "authorization");
    return h && h->value_len > 7 && strncasecmp(h->value, "Bearer ", 7) == 0 &&
           guard_key_eq(h->value + 7, h->value_len - 7, key);
}

static const char csp_page[] =
    "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
    "Referrer-Policy: no-referrer\r\nX-Frame-Options: DENY\r\n"
    "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'\r\n";

/* Refuses what the guard refuses (403 in Anthropic's error shape, nothing
 * sent upstream) and answers the preflights it lets through.  Returns
 * whether the request was answered. */
static bool app_guard(struct app *a, struct conn *c, const struct http_req *req)
{
    const struct http_hdr *host = http_req_header(req, "host");
    const struct http_hdr *origin = http_req_header(req, "origin");
    switch (guard_check(a->cfg, host ? host->value : NULL, host ? host->value_len : 0,
                        origin ? origin->value : NULL, origin ? origin->value_len : 0)) {
    case GUARD_BAD_HOST:
        if (!host && strcspn(req->target, "?") == 7 && strncmp(req->target, "/health", 7) == 0 &&
            (strcmp(req->method, "GET") == 0 || req->is_head))
            break; /* liveness probes (HTTP/1.0 ones too) need no Host */
        /* The name is logged (capped) so that an operator behind a reverse
         * proxy sees what to add to server.allowed_hosts. */
        if (!host)
            log_info("refused %s without Host while bound to loopback", req->method);
        else
            log_info("refused %s with Host %.*s: not one of this proxy's names", req->method,
                     (int)(host->value_len < 64 ? host->value_len : 64), host->value);
        conn_respond_error(c, 403, "permission_error",
                           "Host refused: while bound to loopback this proxy answers only "
                           "localhost, 127.0.0.1, [::1], its bind address and the names in "
                           "server.allowed_hosts (a page on another name may be a DNS "
                           "rebinding attack)",
                           NULL);
        return true;
    case GUARD_BAD_ORIGIN:
        log_info("refused %s with Origin %.*s: not this proxy's page nor in "
                 "server.allowed_origins",
                 req->method, (int)(origin->value_len < 64 ? origin->value_len : 64),
                 origin->value);
        conn_respond_error(c, 403, "permission_error",
                           "cross-site request refused: the Origin is neither this proxy's "
                           "own nor listed in server.allowed_origins",
                           NULL);
        return true;
    case GUARD_PASS: break;
    }
    if (origin && strcmp(req->method, "OPTIONS") == 0) {
        const struct http_hdr *rh = http_req_header(req, "access-control-request-headers");
        struct buf h;
        buf_init(&h, 4096);
        guard_preflight_headers(&h, origin->value, origin->value_len, rh ? rh->value : NULL,
                                rh ? rh->value_len : 0);
        conn_respond(c, 204, NULL, "", 0, h.data);
        buf_release(&h);
        return true;
    }
    return false;
}

static void app_dispatch(void *ud, struct conn *c, struct http_req *req)
{
    struct app *a = ud;
    const char *t = req->target;
    size_t plen = strcspn(t, "?");
    bool get = strcmp(req->method, "GET") == 0 || req->is_head;
    bool dashboard = get && ((plen == 10 && strncmp(t, "/dashboard", 10) == 0) ||
                             (plen == 11 && strncmp(t, "/dashboard/", 11) == 0));
    bool own = dashboard || (plen > 7 && strncmp(t, "/admin/", 7) == 0) ||
               (get && plen == 7 && strncmp(t, "/status", 7) == 0) ||
               (get && plen == 8 && strncmp(t, "/metrics", 8) == 0);

    if (app_guard(a, c, req))
        return;
    if (plen == 7 && strncmp(t, "/health", 7) == 0 && get) {
        conn_respond(c, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
        return;
    }
    if (!access_allowed(a, req, own)) {
        if (dashboard) {
            size_t len;
            const char *page = web_login_page(&len);
            conn_respond(c, 401, WEB_CONTENT_TYPE, page, len, csp_page);
            return;
        }
        conn_respond_error(c, 401, "authentication_error",
                           own ? "this proxy requires its access key (header x-zephyr-key or "
                                 "Authorization: Bearer)"
                               : "this proxy requires its access key (header x-zephyr-key)",
                           NULL);
        return;
    }
    if (plen == 7 && strncmp(t, "/status", 7) == 0 && get) {
        respond_json(c, 200, app_status(a));
        return;
    }
    if (plen == 8 && strncmp(t, "/metrics", 8) == 0 && get) {
        struct buf out;
        buf_init(&out, SIZE_MAX);
        struct metrics_upstream up;
        upstream_counts(a->up, &up.open, &up.idle);
        upstream_tls_counts(a->up, &up.tls_full, &up.tls_resumed);
        upstream_h2_counts(a->up, &up.h2_conns, &up.h2_streams);
        up.log_lines_dropped = log_lines_dropped();
        struct state_snapshot snap;
        state_snapshot_take(a->st, now_mono_ms(), &snap);
        metrics_render(a->metrics, &snap, &up, &out);
        state_snapshot_release(&snap);
        cluster_metrics(a->cluster, &out);
        conn_respond(c, 200, METRICS_CONTENT_TYPE, out.data ? out.data : "", out.len, NULL);
        buf_release(&out);
        return;
    }
    if (dashboard) {
        size_t len;
        const char *page = web_dashboard_page(&len);
        conn_respond(c, 200, WEB_CONTENT_TYPE, page, len, csp_page);
        return;
    }
    if (plen > 7 && strncmp(t, "/admin/", 7) == 0) {
        char op[32];
        snprintf(op, sizeof op, "%.*s", (int)(plen - 7 < 31 ? plen - 7 : 31), t + 7);
        app_admin(a, c, req, op);
        return;
    }
    health_note_request(a->health);
    proxy_handle(a->px, c, req);
}

/* ---- the terminal dashboard ---------------------------------------------- */

static cJSON *dash_status(void *ud)
{
    return app_status(ud);
}

static int dash_admin(void *ud, const char *op, const cJSON *body, char *err, size_t errlen)
{
    return app_admin_op(ud, op, body, err, errlen) == 0 ? 0 : -1;
}

static void app_begin_shutdown(struct app *a, const char *why);

static void dash_quit(void *ud)
{
    app_begin_shutdown(ud, "dashboard quit");
}

/* ---- timers and signals -------------------------------------------------- */

/*
 * Gives the heap's free pages back once the proxy is quiet: 1 s after the
 * last request ended (or after start; at most every 10 s), then at most once
 * a minute while nothing is in flight (pooled connections closing free memory too).
 * glibc returns only the top of the heap by itself; after a burst of
 * streams the free memory between live blocks stayed resident (2.3 MB
 * after 500 TLS streams; 80 KB after the start-up checks).
 */
static void app_trim_heap(struct app *a)
{
#ifdef __GLIBC__
    uint64_t now = uv_now(&a->loop);
    if (proxy_active(a->px) > 0) {
        a->busy_ms = now;
        return;
    }
    if (now - a->busy_ms < 1000)
        return;
    if (a->trim_ms > a->busy_ms && now - a->trim_ms < 60000)
        return;
    /* Requests every few seconds end a quiet second each time: trim at
     * most every 10 s then, so the walk over the heap stays off the loop's
     * busy path. */
    if (a->trim_ms && now - a->trim_ms < 10000)
        return;
    malloc_trim(0);
    a->trim_ms = now;
    /* The loader's tables: once after start, again after a dlopen; the
     * code only a parse runs: after each parse (src/mem.h). */
    size_t loader = mem_release_loader_pages();
    size_t code = 0;
    if (a->parsed)
        code = mem_release_offpath_code();
    a->parsed = false;
    if (loader || code)
        log_debug("gave back %zu KB of loader tables, %zu KB of parser code", loader / 1024,
                  code / 1024);
#else
    (void)a;
#endif
}

static void on_policy_timer(uv_timer_t *t)
{
    struct app *a = t->data;
    uint64_t now = now_mono_ms();
    state_evaluate(a->st, now);
    proxy_keep_warm(a->px, now);
    app_trim_heap(a);
}

static void app_close_all(struct app *a);

static void on_request_end(void *ud)
{
    struct app *a = ud;
    a->busy_ms = uv_now(&a->loop);
    health_poke(a->health);
    if (a->dash)
        dashboard_notify(a->dash);
}

static void dash_log_line(void *ud, const char *line)
{
    struct app *a = ud;
    dashboard_log(a->dash, line);
}

static void on_proxy_idle(void *ud)
{
    struct app *a = ud;
    if (a->shutting_down == 1) {
        log_info("all requests finished; exiting");
        app_close_all(a);
    }
}

static void on_grace(uv_timer_t *t)
{
    struct app *a = t->data;
    log_warn("grace period over; aborting %zu request(s)", proxy_active(a->px));
    app_close_all(a);
}

static void app_begin_shutdown(struct app *a, const char *why)
{
    if (a->shutting_down) {
        log_warn("%s again: exiting now", why);
        a->exit_code = 1;
        app_close_all(a);
        return;
    }
    a->shutting_down = 1;
    log_info("%s: no new connections; waiting up to %d ms for %zu request(s)", why,
             a->cfg->shutdown_grace_ms, proxy_active(a->px));
    conn_stop_accepting(a->srv);
    health_set_paused(a->health, true);
    if (proxy_active(a->px) == 0) {
        app_close_all(a);
        return;
    }
    uv_timer_start(&a->grace, on_grace, (uint64_t)a->cfg->shutdown_grace_ms, 0);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct app *a = s->data;
    if (signum == SIGHUP) {
        char err[256];
        if (app_reload_start(a, NULL, true, err, sizeof err) != 0)
            log_error("SIGHUP: %s", err);
        return;
    }
    app_begin_shutdown(a, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

/* Closes everything so that the loop runs dry. */
static void app_close_all(struct app *a)
{
    if (a->shutting_down == 2)
        return;
    a->shutting_down = 2;
    proxy_on_idle(a->px, NULL, NULL);
    proxy_on_request_end(a->px, NULL, NULL);
    proxy_free(a->px); /* aborts what is left: clients see the failure */
    health_free(a->health);
    cluster_free(a->cluster);
    a->cluster = NULL;
    conn_server_free(a->srv);
    upstream_free(a->up);
    if (a->demo)
        demo_free(a->demo);
    if (a->dash) {
        log_set_sink(NULL, NULL);
        dashboard_free(a->dash);
        a->dash = NULL;
        log_set_quiet_stderr(0);
    }
    uv_close((uv_handle_t *)&a->sigint, NULL);
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    uv_close((uv_handle_t *)&a->sighup, NULL);
    uv_close((uv_handle_t *)&a->grace, NULL);
    uv_close((uv_handle_t *)&a->policy_timer, NULL);
}

/* ---- run ------------------------------------------------------------------- */

/* The fleet's checker of an endpoint changed: the check plan changes too. */
static void app_cluster_poke(void *ud)
{
    struct app *a = ud;
    if (a->health && !a->shutting_down)
        health_poke(a->health);
}

int app_run(struct config *cfg, const struct app_opts *opts)
{
    struct app *a = xcalloc(1, sizeof *a);
    a->opts = *opts;
    a->parsed = true; /* main.c parsed the configuration this app starts with */
    uv_loop_init(&a->loop);
    signal(SIGPIPE, SIG_IGN);

    if (opts->demo) {
        config_free(cfg);
        cfg = NULL;
        a->demo = demo_start(&a->loop, &cfg);
        if (!a->demo) {
            fprintf(stderr, "claude-zephyr: could not start the demo upstreams\n");
            uv_loop_close(&a->loop);
            free(a);
            return 1;
        }
    }
    if (opts->port >= 0)
        cfg->port = opts->port;
    if (opts->bind) {
        free(cfg->bind);
        cfg->bind = xstrdup(opts->bind);
    }
    a->cfg = cfg;
    app_register_secrets(cfg);

    a->st = state_new(cfg, now_mono_ms(), now_wall_ms());
    state_own_config(a->st, cfg); /* the state owns its configuration from here on */
    a->metrics = metrics_new();
    state_set_switch_cb(a->st, app_on_switch, a->metrics);
    a->up = upstream_new(&a->loop, !cfg->http_client_libcurl);
    upstream_set_http2(a->up, cfg->http2);
    a->srv = conn_server_new(&a->loop, cfg, app_dispatch, a);
    a->px = proxy_new(&a->loop, a->up, a->st, cfg);
    proxy_set_metrics(a->px, a->metrics);
    proxy_on_idle(a->px, on_proxy_idle, a);
    proxy_on_request_end(a->px, on_request_end, a);
    a->health = health_new(&a->loop, a->up, a->st, cfg);
    health_set_metrics(a->health, a->metrics);
    a->cluster = cluster_new(&a->loop, cfg, a->st, app_cluster_poke, a);
    uv_signal_init(&a->loop, &a->sigint);
    uv_signal_init(&a->loop, &a->sigterm);
    uv_signal_init(&a->loop, &a->sighup);
    a->sigint.data = a->sigterm.data = a->sighup.data = a;
    uv_timer_init(&a->loop, &a->grace);
    a->grace.data = a;
    uv_timer_init(&a->loop, &a->policy_timer);
    a->policy_timer.data = a;

    char err[256];
    char *why = NULL;
    if (app_libcurl_ready(a, cfg, &why) != 0) {
        /* An endpoint that cannot be reached is not a configuration to
         * start with (nor to reload to). */
        fprintf(stderr, "claude-zephyr: %s", why);
        free(why);
        a->exit_code = 1;
        app_close_all(a);
        goto out;
    }
    if (conn_listen(a->srv, cfg->bind, cfg->port, err, sizeof err) != 0) {
        fprintf(stderr, "claude-zephyr: %s\n", err);
        a->exit_code = 1;
        app_close_all(a);
        goto out;
    }
    const char *host = cfg->bind;
    snprintf(a->listen, sizeof a->listen, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host,
             conn_port(a->srv));
    uv_signal_start(&a->sigint, on_signal, SIGINT);
    uv_signal_start(&a->sigterm, on_signal, SIGTERM);
    uv_signal_start(&a->sighup, on_signal, SIGHUP);
    /* Pending graceful switches have deadlines; a coarse timer is enough. */
    a->busy_ms = uv_now(&a->loop);
    uv_timer_start(&a->policy_timer, on_policy_timer, 250, 250);

    if (opts->dashboard) {
        /* The dashboard owns the screen: nothing may reach stderr from now
         * on; lines go to server.log_file and to the dashboard's panel. */
        static const struct dash_source src_ops = {0};
        struct dash_source src = src_ops;
        src.ud = a;
        src.status = dash_status;
        src.admin = dash_admin;
        src.quit = dash_quit;
        log_set_quiet_stderr(1);
        a->dash = dashboard_new(&a->loop, &src, cfg->language);
        if (a->dash) {
            log_set_sink(dash_log_line, a);
        } else {
            log_set_quiet_stderr(0);
            log_warn("--dashboard needs a terminal on stdin and stdout; running without it");
        }
    }
    log_info("claude-zephyr %s listening on http://%s", ZEPHYR_VERSION, a->listen);
    int cur = state_current_ep(a->st);
    log_info("group %s, endpoint %s", state_group_name(a->st, state_current_group(a->st)),
             cur >= 0 ? state_ep_name(a->st, cur) : "none");
    if (a->demo)
        demo_announce(a->demo, a->listen);
    health_start(a->health);

out:
    uv_run(&a->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&a->loop);
    if (rc != 0)
        log_debug("loop closed with handles left: %s", uv_strerror(rc));
    int code = a->exit_code;
    state_free(a->st);
    metrics_free(a->metrics);
    log_clear_secrets();
    free(a);
    curlso_cleanup();
    return code;
}
