/*
 * remote: the dashboard's source when it watches a proxy elsewhere
 * (--dashboard --connect URL).
 *
 * It lives on the loop main() runs for this mode (main also owns the
 * signals, as everywhere): the dashboard (terminal, keys, redraws), a poll
 * timer, and the exchanges, which go through the upstream layer like any
 * other (the built-in client for http://, libcurl for https:// or behind a
 * proxy variable), so nothing here blocks.  A proxy that is slow to answer
 * never freezes the screen: keys, resizing and quitting go on while an
 * exchange waits for its time limit.
 *
 *   poll     every REMOTE_POLL_MS: GET URL/status, unless one is still
 *            running (at most one at a time, so a slow proxy is not
 *            piled up on)
 *   admin    an operation (a key) POSTs URL/admin/<op> at once; admin()
 *            returns 1 and the outcome reaches the screen when the reply
 *            is in (dashboard_admin_done).  One at a time: a key pressed
 *            while one runs says so.
 *
 * The document on screen is the last /status that parsed, shown only
 * while the last fetch succeeded; when the proxy cannot be reached the
 * screen says why and polling goes on.  Replies are capped at
 * REMOTE_REPLY_CAP bytes.  Lifetime: remote_free() aborts what is running,
 * frees the upstream layer and the dashboard and closes the timer, whose
 * close callback frees the rest.
 */
#include "remote.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "dashboard.h"
#include "dashview.h"
#include "upstream.h"
#include "util.h"

#define REMOTE_POLL_MS 500
#define REMOTE_REPLY_CAP (16u << 20)
#define REMOTE_CONNECT_MS 1000
#define REMOTE_STATUS_MS 1500
#define REMOTE_ADMIN_MS 3000

struct remote;

/* One exchange with the proxy: a GET of /status or a POST of an operation. */
struct rx {
    struct remote *r;         /* borrows */
    struct upstream_xfer *ux; /* the running exchange; NULL once done */
    char *url;                /* owns */
    char *headers;            /* owns; "Name: value\r\n" lines */
    char *json;               /* owns; the operation's body, NULL for /status */
    char op[16];              /* the operation, "" for /status */
    int status;               /* the reply's status; 0 before the head */
    bool too_big;             /* the reply went over REMOTE_REPLY_CAP */
    struct buf body;          /* owns; the reply */
};

struct remote {
    uv_loop_t *loop;        /* borrows */
    struct upstream *up;    /* owns */
    char *base;             /* owns; scheme://host:port, no trailing '/' */
    const char *admin_key;  /* borrows */
    const char *access_key; /* borrows; $ZEPHYR_ACCESS_KEY, sent on every request */
    struct dashboard *d;    /* owns */
    uv_timer_t poll;
    void (*on_quit)(void *); /* the operator asked to quit */
    void *quit_ud;           /* borrows */
    struct rx *fetching;     /* owns; the /status exchange running, or NULL */
    struct rx *acting;       /* owns; the operation running, or NULL */
    cJSON *doc;              /* owns; the last /status that parsed */
    char error[320];         /* why there is no fresh document, or "" */
    bool stopping;
};

static void rx_free(struct rx *x)
{
    if (!x)
        return;
    if (x->ux)
        upstream_abort(x->ux);
    free(x->url);
    if (x->headers) {
        explicit_bzero(x->headers, strlen(x->headers)); /* it holds the keys */
        free(x->headers);
    }
    free(x->json);
    buf_release(&x->body);
    free(x);
}

static bool on_rx_head(void *ud, int status, const struct upstream_hdr *hdrs, size_t n)
{
    struct rx *x = ud;
    (void)hdrs;
    (void)n;
    x->status = status;
    return true;
}

static size_t on_rx_body(void *ud, const char *data, size_t len)
{
    struct rx *x = ud;
    if (buf_append(&x->body, data, len) != 0) {
        x->too_big = true;
        return 0; /* over the cap: the exchange ends */
    }
    return len;
}

/* Why an exchange gave no answer, in a few words. */
static const char *rx_failure(const struct rx *x, enum upstream_rc rc, const char *msg)
{
    if (x->too_big)
        return "the reply is too large";
    return msg && *msg ? msg : upstream_rc_str(rc);
}

static void remote_show_error(struct remote *r)
{
    dashboard_set_error(r->d, r->error[0] ? r->error : NULL);
}

static void remote_status_done(struct remote *r, struct rx *x, enum upstream_rc rc, const char *msg)
{
    if (rc != UPSTREAM_OK) {
        snprintf(r->error, sizeof r->error, "%s: %s", r->base, rx_failure(x, rc, msg));
    } else if (x->status != 200) {
        snprintf(r->error, sizeof r->error, "%s: HTTP %d from /status", r->base, x->status);
    } else {
        cJSON *doc = cJSON_ParseWithLength(x->body.data ? x->body.data : "", x->body.len);
        if (!cJSON_IsObject(doc)) {
            cJSON_Delete(doc);
            snprintf(r->error, sizeof r->error, "%s: the reply to /status is not a JSON object",
                     r->base);
        } else {
            cJSON_Delete(r->doc);
            r->doc = doc;
            r->error[0] = '\0';
        }
    }
    remote_show_error(r);
}

static void remote_admin_done(struct remote *r, struct rx *x, enum upstream_rc rc, const char *msg)
{
    char err[256];
    if (rc != UPSTREAM_OK) {
        snprintf(err, sizeof err, "%s: %s", x->op, rx_failure(x, rc, msg));
        dashboard_admin_done(r->d, err);
        return;
    }
    cJSON *reply = cJSON_ParseWithLength(x->body.data ? x->body.data : "", x->body.len);
    if (x->status == 200) {
        /* The reply carries the document as it is after the operation. */
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(reply, "status");
        if (cJSON_IsObject(st)) {
            cJSON_Delete(r->doc);
            r->doc = cJSON_Duplicate(st, 1);
            r->error[0] = '\0';
            remote_show_error(r);
        }
        dashboard_admin_done(r->d, NULL);
    } else {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(reply, "error");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
        snprintf(err, sizeof err, "%s: HTTP %d%s%s", x->op, x->status,
                 cJSON_IsString(m) ? ": " : "", cJSON_IsString(m) ? m->valuestring : "");
        dashboard_admin_done(r->d, err);
    }
    cJSON_Delete(reply);
}

static void on_rx_done(void *ud, enum upstream_rc rc, const char *msg)
{
    struct rx *x = ud;
    struct remote *r = x->r;
    x->ux = NULL;
    if (x == r->fetching) {
        r->fetching = NULL;
        remote_status_done(r, x, rc, msg);
    } else {
        r->acting = NULL;
        remote_admin_done(r, x, rc, msg);
    }
    rx_free(x);
}

/* Starts an exchange: GET path, or POST json to it when json is not NULL
 * (taken over).  NULL when it cannot start (err says why). */
static struct rx *remote_start(struct remote *r, const char *path, char *json, const char *op,
                               char *err, size_t errlen)
{
    static const struct upstream_cbs cbs = {on_rx_head, on_rx_body, on_rx_done};
    struct rx *x = xcalloc(1, sizeof *x);
    struct buf h;
    x->r = r;
    x->url = xasprintf("%s%s", r->base, path);
    x->json = json;
    snprintf(x->op, sizeof x->op, "%s", op ? op : "");
    buf_init(&x->body, REMOTE_REPLY_CAP);
    buf_init(&h, 4096 + (r->access_key ? strlen(r->access_key) : 0) +
                     (r->admin_key ? strlen(r->admin_key) : 0));
    buf_append_str(&h, "User-Agent: claude-zephyr-dashboard\r\nAccept: */*\r\n");
    if (json)
        buf_append_str(&h, "Content-Type: application/json\r\n");
    if (r->access_key)
        buf_appendf(&h, "x-zephyr-key: %s\r\n", r->access_key);
    if (r->admin_key && json)
        buf_appendf(&h, "x-zephyr-admin-key: %s\r\n", r->admin_key);
    x->headers = h.data ? h.data : xstrdup("");
    struct upstream_request req = {
        .method = json ? "POST" : "GET",
        .url = x->url,
        .headers = x->headers,
        .headers_len = strlen(x->headers),
        .body = json,
        .body_len = json ? strlen(json) : 0,
        .send_length = json != NULL,
        .connect_timeout_ms = REMOTE_CONNECT_MS,
        .timeout_ms = json ? REMOTE_ADMIN_MS : REMOTE_STATUS_MS,
    };
    x->ux = upstream_start(r->up, &req, &cbs, x);
    if (!x->ux) {
        snprintf(err, errlen,
                 "%s: the request cannot start (a malformed URL, or libcurl "
                 "cannot be loaded)",
                 x->url);
        rx_free(x);
        return NULL;
    }
    return x;
}

static void remote_fetch(struct remote *r)
{
    char err[sizeof r->error];
    if (r->stopping || r->fetching)
        return;
    r->fetching = remote_start(r, "/status", NULL, NULL, err, sizeof err);
    if (!r->fetching) {
        snprintf(r->error, sizeof r->error, "%s", err);
        remote_show_error(r);
    }
}

static cJSON *remote_status(void *ud)
{
    struct remote *r = ud;
    /* Only the last good document is shown, and only while it is fresh. */
    return r->doc && !r->error[0] ? cJSON_Duplicate(r->doc, 1) : NULL;
}

static int remote_admin(void *ud, const char *op, const cJSON *body, char *err, size_t errlen)
{
    struct remote *r = ud;
    if (r->acting) {
        snprintf(err, errlen, "%s: the operation before it (%s) is still running", op,
                 r->acting->op);
        return -1;
    }
    char *path = xasprintf("/admin/%s", op);
    char *json = body ? cJSON_PrintUnformatted(body) : NULL;
    r->acting = remote_start(r, path, json ? json : xstrdup(""), op, err, errlen);
    free(path);
    return r->acting ? 1 : -1;
}

static void on_poll_closed(uv_handle_t *h)
{
    struct remote *r = h->data;
    cJSON_Delete(r->doc);
    free(r->base);
    free(r);
}

void remote_free(struct remote *r)
{
    if (!r || r->stopping)
        return;
    r->stopping = true;
    rx_free(r->fetching);
    r->fetching = NULL;
    rx_free(r->acting);
    r->acting = NULL;
    upstream_free(r->up);
    r->up = NULL;
    dashboard_free(r->d);
    r->d = NULL;
    uv_close((uv_handle_t *)&r->poll, on_poll_closed);
}

static void remote_quit(void *ud)
{
    struct remote *r = ud;
    if (r->on_quit)
        r->on_quit(r->quit_ud);
}

static void on_remote_poll(uv_timer_t *t)
{
    remote_fetch(t->data);
}

static enum dv_lang remote_lang(void)
{
    const char *vars[] = {"ZEPHYR_UI_LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return strncmp(v, "zh", 2) == 0 ? DV_LANG_ZH : DV_LANG_EN;
    }
    return DV_LANG_EN;
}

static char *remote_base(const char *url)
{
    char *base = strstr(url, "://") ? xstrdup(url) : xasprintf("http://%s", url);
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        base[--n] = '\0';
    if (n >= 7 && strcmp(base + n - 7, "/status") == 0)
        base[n - 7] = '\0';
    return base;
}

struct remote *remote_new(uv_loop_t *loop, const char *url, const char *admin_key,
                          void (*on_quit)(void *ud), void *ud)
{
    if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
        fprintf(stderr, "claude-zephyr: --dashboard needs a terminal (stdin and stdout)\n");
        return NULL;
    }
    struct remote *r = xcalloc(1, sizeof *r);
    r->loop = loop;
    r->on_quit = on_quit;
    r->quit_ud = ud;
    r->base = remote_base(url);
    r->admin_key = admin_key && *admin_key ? admin_key : NULL;
    r->access_key = getenv("ZEPHYR_ACCESS_KEY");
    if (r->access_key && !*r->access_key)
        r->access_key = NULL;
    r->up = upstream_new(loop, true);
    uv_timer_init(loop, &r->poll);
    r->poll.data = r;

    struct dash_source src = {
        .ud = r,
        .status = remote_status,
        .admin = remote_admin,
        .quit = remote_quit,
    };
    enum dv_lang lang = remote_lang();
    r->d = dashboard_new(loop, &src, lang == DV_LANG_ZH ? "zh" : "en");
    if (!r->d) {
        fprintf(stderr, "claude-zephyr: cannot take over the terminal (TERM=%s)\n",
                getenv("TERM") ? getenv("TERM") : "");
        remote_free(r);
        return NULL;
    }
    dashboard_set_remote(r->d, r->base);
    uv_timer_start(&r->poll, on_remote_poll, 0, REMOTE_POLL_MS);
    return r;
}
