/*
 * health: see health.h for what it does; this is how.
 *
 * Scheduler.  One timer (h->timer) drives everything: health_tick() starts a
 * cycle when one is due, queues endpoints whose failed or quick re-check is
 * due, starts queued checks while fewer than max_concurrent run, and arms
 * the timer for the earliest next due time.  Anything that may change the
 * plan (a check ending, a request, an operator action) "kicks" the timer to
 * zero instead of calling health_tick() itself, so the tick never runs
 * inside one of its own callees.  A cycle's scheduled start is the previous
 * scheduled start plus the interval; when a cycle starts more than a second
 * late (after a pause, or a dynamic interval pulled into the past) it counts
 * as starting now instead.
 *
 * Checks.  Each check is a struct check on h->checks, an explicit state
 * machine:
 *
 *   CHECK_RUNNING   the transfer is in flight, or the CLI process is alive;
 *   CHECK_DRAINING  (cli) the process exited; reading what its pipes still
 *                   hold, for at most HEALTH_DRAIN_MS;
 *   CHECK_REAPING   (cli) the result is reported; the process group is
 *                   being killed and its leftovers reaped;
 *   CHECK_CLOSING   its libuv handles are closing; the last close callback
 *                   frees it.
 *
 * The result is reported exactly once, by check_report(), which is where a
 * check's concurrency slot is given back.  The HTTP methods use the
 * check's timer for the timeout and the exchange's own timeout a second later as
 * a backstop.  A CLI child is spawned detached (a new session and process
 * group, pgid = pid) with a minimal environment; on timeout the whole group
 * gets SIGKILL, and libuv's exit callback reaps the child.  Grandchildren
 * are reparented to this process (it is a child subreaper in cli mode) and
 * are reaped with waitpid(-pgid): only after libuv has reaped the leader,
 * so that libuv never misses its own child, and only while the group still
 * exists, so that the pgid cannot have been reused.  After a normal exit
 * the group is killed too, so a check never leaves anything running.
 *
 * Limits: a check reply over 64 KiB fails the check; of the CLI's output
 * the first 4 KiB of stdout and 2 KiB of stderr are kept and the rest is
 * read and dropped.  A process that leaves the CLI's group (a setsid
 * daemon) escapes the kill; once it dies it would linger as a zombie of
 * ours, since only the check groups are reaped here.
 *
 * A check the endpoint refuses as a request (HTTP 400, 404, 422: the model,
 * the body or the path is not served) or a cli binary that cannot run is
 * not an endpoint failure: check_report_misconfigured() tells the state,
 * which shows it as check_error and logs once what to change.
 *
 * At start and after a reload, each endpoint of an HTTP method is asked
 * once for GET {url}/v1/models (struct probe, asynchronous, never blocking
 * anything): when it answers with a list that lacks the check model, a
 * warning goes to the log and to the endpoint's models_warning in /status.
 * Relays may not implement the path; any other answer is only logged at
 * debug level.
 *
 * Credentials: the group's token goes in the request header or in the
 * child's ANTHROPIC_AUTH_TOKEN and nowhere else; every reason text taken
 * from a reply or from the CLI's output has the token replaced by
 * "[redacted]".  A group without a token passes clients' own credentials
 * through, so a check cannot authenticate: for such a group a 401 or 403
 * answer proves the endpoint is up and counts as a pass.
 */
#include "health.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "config.h"
#include "hdr.h"
#include "interval.h"
#include "log.h"
#include "metrics.h"
#include "state.h"
#include "upstream.h"
#include "usage.h"
#include "util.h"

#define HEALTH_REPLY_CAP (64 * 1024) /* a check reply larger than this fails */
#define HEALTH_OUT_KEEP 4096         /* CLI stdout kept; the rest is read and dropped */
#define HEALTH_ERR_KEEP 2048         /* CLI stderr kept */
#define HEALTH_RECHECK_GAP_MS 2000   /* quick re-checks: at most one per endpoint per this */
#define HEALTH_DRAIN_MS 300          /* after the CLI exits, wait this long for pipe EOF */
#define HEALTH_REAP_STEP_MS 50
#define HEALTH_REAP_TRIES 40 /* so at most 2 s reaping a killed group */
#define HEALTH_LATE_MS 1000  /* a cycle later than this restarts the schedule */
#define HEALTH_REASON_MAX 150
#define HEALTH_DETAIL_MAX 100 /* text quoted from a reply or the cli's output */

enum check_state {
    CHECK_RUNNING = 0,
    CHECK_DRAINING = 1,
    CHECK_REAPING = 2,
    CHECK_CLOSING = 3,
};

struct health;

struct check {
    struct health *h;          /* borrows */
    struct check *prev, *next; /* in h->checks */
    int ep;                    /* index into state.eps */
    unsigned cycle;            /* --test-timing: the cycle it belongs to, 0 if none */
    enum check_method method;
    enum check_state state;
    bool reported;     /* the result went to the state (or was dropped) */
    bool abandoned;    /* health_free / set_config: touch nothing outside */
    uint64_t start_ns; /* uv_hrtime() at start */
    int timeout_s;
    char *token;          /* owns; the endpoint's token, for redaction; NULL if none */
    enum auth_style auth; /* how the token is sent */
    char ep_name[64];     /* for the log line */
    uv_timer_t timer;     /* timeout, then drain grace, then reap retries */
    int handles;          /* libuv handles not yet closed */

    /* messages / count_tokens */
    struct upstream_xfer *ux; /* the running exchange; NULL when none */
    struct buf hdrs;          /* owns; "Name: value\r\n" lines */
    char *body;               /* owns */
    struct buf reply;         /* capped at HEALTH_REPLY_CAP */
    bool reply_too_big;
    int status;     /* of the response */
    double ttfb_ms; /* to the response head; -1 before */

    /* cli */
    uv_process_t proc;
    uv_pipe_t out, err;
    bool spawned, exited, killed, out_eof, err_eof;
    int pgid;
    int64_t exit_status;
    int term_signal;
    double exit_ms;     /* process lifetime */
    struct buf out_buf; /* capped at HEALTH_OUT_KEEP, excess dropped */
    struct buf err_buf; /* capped at HEALTH_ERR_KEEP, excess dropped */
    unsigned reap_tries;
    char rbuf[8192]; /* read buffer shared by both pipes */
};

struct health_ep {
    bool queued;
    unsigned cycle;         /* cycle that queued it (0: not a cycle) */
    uint64_t last_start_ms; /* monotonic; 0 never */
};

struct timing;

/* One GET /v1/models at start or reload; freed when it ends or is dropped. */
struct probe {
    struct health *h;         /* borrows */
    struct probe *next;       /* in h->probes */
    int ep;                   /* index into state.eps */
    struct upstream_xfer *ux; /* the running exchange; NULL once done */
    struct buf hdrs;          /* owns; holds the token: wiped when freed */
    struct buf reply;         /* capped at HEALTH_REPLY_CAP */
    int status;
    char model[128]; /* the check model it looks for */
};

struct health {
    uv_loop_t *loop;          /* borrows */
    struct upstream *up;      /* borrows */
    struct state *st;         /* borrows */
    const struct config *cfg; /* borrows */
    uv_timer_t timer;         /* the scheduler */
    struct health_ep *eps;    /* owns, st->n_eps entries */
    size_t n_eps;
    struct check *checks; /* owns the list: running, reaping and closing checks */
    unsigned running;     /* checks holding a concurrency slot */
    bool started, paused, closing, timer_closed;
    uint64_t next_cycle_ms;    /* scheduled start of the next cycle; 0 none */
    uint64_t cycle_start_ms;   /* (scheduled) start of the last cycle; 0 none yet */
    uint64_t last_activity_ms; /* last request or poke, for the idle figure */
    struct interval_rate rate;
    unsigned cycle_no;
    struct timing *timing;   /* borrows; only under --test-timing */
    struct probe *probes;    /* owns the list: /v1/models probes in flight */
    struct metrics *metrics; /* borrows; NULL: checks are not counted */
};

static void health_tick(struct health *h);
static void check_teardown(struct check *c);
static void timing_cycle(struct health *h, uint64_t sched_ms, double interval_s, unsigned queued);
static void timing_result(struct health *h, struct check *c, bool ok, double latency_ms,
                          const char *reason);
static double timing_interval_s(const struct timing *t);

/* ---- small helpers ------------------------------------------------------ */

static double hr_ms_since(uint64_t start_ns)
{
    return (double)(uv_hrtime() - start_ns) / 1e6;
}

static double secs_until(uint64_t t_ms, uint64_t now_ms)
{
    return t_ms > now_ms ? (double)(t_ms - now_ms) / 1000.0 : 0.0;
}

/*
 * Copies len bytes of src into dst (size > 0) as one line fit for /status
 * and the log: every whole-token occurrence of token (log_secret_at)
 * becomes "[redacted]", control
 * characters become spaces, runs of spaces shrink to one, the ends are
 * trimmed, and a cut never splits a UTF-8 sequence.
 */
static void health_clean_text(char *dst, size_t size, const char *src, size_t len,
                              const char *token)
{
    size_t tlen = token ? strlen(token) : 0;
    size_t n = 0;
    bool truncated = false;
    for (size_t i = 0; i < len;) {
        const char *piece;
        size_t plen;
        char one;
        if (tlen && log_secret_at(src, len, i, token, tlen)) {
            piece = "[redacted]";
            plen = 10;
            i += tlen;
        } else {
            unsigned char ch = (unsigned char)src[i++];
            one = (ch < 0x20 || ch == 0x7f) ? ' ' : (char)ch;
            if (one == ' ' && (n == 0 || dst[n - 1] == ' '))
                continue;
            piece = &one;
            plen = 1;
        }
        if (n + plen >= size) {
            truncated = true;
            break;
        }
        memcpy(dst + n, piece, plen);
        n += plen;
    }
    if (truncated)
        n = utf8_cut(dst, n);
    while (n > 0 && dst[n - 1] == ' ')
        n--;
    dst[n] = '\0';
}

/* The first line of text that is not blank, as a view. */
static const char *first_line(const char *text, size_t len, size_t *out_len)
{
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && text[j] != '\n')
            j++;
        for (size_t k = i; k < j; k++) {
            if (text[k] != ' ' && text[k] != '\t' && text[k] != '\r') {
                *out_len = j - i;
                return text + i;
            }
        }
        i = j + 1;
    }
    *out_len = 0;
    return text;
}

static bool blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return false;
    return true;
}

static unsigned health_max_concurrent(const struct health *h)
{
    return h->cfg->max_concurrent_checks >= 1 ? (unsigned)h->cfg->max_concurrent_checks : 1u;
}

static void on_health_timer(uv_timer_t *t)
{
    health_tick(t->data);
}

/* Runs the scheduler on the next turn of the loop. */
static void health_kick(struct health *h)
{
    if (h->closing || !h->started)
        return;
    uv_timer_start(&h->timer, on_health_timer, 0, 0);
}

/* ---- load and interval -------------------------------------------------- */

static struct interval_load health_load(const struct health *h, uint64_t now)
{
    struct interval_load l;
    l.active = (unsigned)state_n_tracks(h->st);
    l.rate_per_min = interval_rate_value(&h->rate, now);
    l.idle_s = now > h->last_activity_ms ? (double)(now - h->last_activity_ms) / 1000.0 : 0;
    return l;
}

/* The interval to use now; also refreshes the figures /status shows. */
static double health_interval_s(struct health *h, uint64_t now)
{
    struct interval_load l = health_load(h, now);
    double s;
    if (h->timing) {
        s = timing_interval_s(h->timing);
    } else {
        struct interval_cfg c = {
            .interval_s = h->cfg->interval_s,
            .min_s = h->cfg->min_interval_s,
            .max_s = h->cfg->max_interval_s,
            .dynamic = h->cfg->dynamic_scaling,
        };
        s = interval_next_s(&c, &l);
    }
    state_publish_interval(h->st, s, interval_load_level(&l));
    return s;
}

static uint64_t interval_ms(double s)
{
    long long ms = util_llround(s * 1000.0);
    return ms >= 1 ? (uint64_t)ms : 1u;
}

/*
 * With dynamic scaling the interval may have shrunk since the cycle
 * started: the next cycle is then due at last start + new interval, if that
 * is earlier than planned (it never moves later here).
 */
static void health_reschedule(struct health *h, uint64_t now)
{
    double s = health_interval_s(h, now);
    if (h->timing || !h->cfg->dynamic_scaling || !h->next_cycle_ms || !h->cycle_start_ms)
        return;
    uint64_t cand = h->cycle_start_ms + interval_ms(s);
    if (cand < h->next_cycle_ms) {
        log_debug("health: load changed; next cycle in %.1f s instead of %.1f s",
                  secs_until(cand, now), secs_until(h->next_cycle_ms, now));
        h->next_cycle_ms = cand;
        health_kick(h);
    }
}

/* ---- check objects ------------------------------------------------------ */

static void health_maybe_free(struct health *h)
{
    if (h->closing && h->timer_closed && !h->checks) {
        free(h->eps);
        free(h);
    }
}

static void check_free(struct check *c)
{
    struct health *h = c->h;
    if (c->prev)
        c->prev->next = c->next;
    else
        h->checks = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->hdrs.data)
        memset(c->hdrs.data, 0, c->hdrs.len); /* holds the token */
    buf_release(&c->hdrs);
    free(c->body);
    buf_release(&c->reply);
    buf_release(&c->out_buf);
    buf_release(&c->err_buf);
    if (c->token) {
        memset(c->token, 0, strlen(c->token));
        free(c->token);
    }
    free(c);
    health_maybe_free(h);
}

static void on_check_handle_closed(uv_handle_t *hd)
{
    struct check *c = hd->data;
    if (--c->handles == 0)
        check_free(c);
}

/* Closes every handle of c; the last close callback frees it. */
static void check_close(struct check *c)
{
    if (c->state == CHECK_CLOSING)
        return;
    c->state = CHECK_CLOSING;
    /* The exchange goes now, not in check_free(): upstream_free() (often
     * called right after health_free()) wants every exchange ended. */
    if (c->ux) {
        upstream_abort(c->ux);
        c->ux = NULL;
    }
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_check_handle_closed);
    if (c->method == CHECK_CLI) {
        uv_close((uv_handle_t *)&c->out, on_check_handle_closed);
        uv_close((uv_handle_t *)&c->err, on_check_handle_closed);
        uv_close((uv_handle_t *)&c->proc, on_check_handle_closed);
    }
}

/*
 * The one place a check's outcome goes.  Reached from: the HTTP done
 * callback (reply or transport error), the CLI evaluation after exit, the
 * timeout timer of either, and a start that failed at once.  Idempotent;
 * gives the concurrency slot back, feeds state_report() and the metrics
 * (unless the check was abandoned), writes the summary log line and kicks the
 * scheduler.  reason is NULL or empty on success.
 */
static void check_report(struct check *c, bool ok, bool auth_failed, double latency_ms,
                         double ttfb_ms, const char *reason, const struct usage *tokens)
{
    if (c->reported)
        return;
    c->reported = true;
    struct health *h = c->h;
    struct state *st = h->st;
    h->running--;
    if (!ok && (!reason || !reason[0]))
        reason = "check failed";
    if (h->metrics)
        metrics_check(h->metrics, state_ep_name(st, c->ep), ok, ok ? latency_ms : -1);
    struct state_outcome o = {
        .source = STATE_FROM_CHECK,
        .kind = ok            ? STATE_OK
                : auth_failed ? STATE_AUTH_FAILED
                              : STATE_DOWN,
        .latency_ms = ok ? latency_ms : -1,
        .ttfb_ms = ok ? ttfb_ms : -1,
        .error = ok ? NULL : reason,
        .tokens = tokens,
    };
    state_report(st, c->ep, &o, now_mono_ms(), now_wall_ms());
    if (ok)
        log_debug("check %s: ok in %.0f ms", c->ep_name, latency_ms);
    else
        log_debug("check %s: %s: %s", c->ep_name, auth_failed ? "auth failed" : "failed", reason);
    if (h->timing)
        timing_result(h, c, ok, latency_ms, reason);
    health_kick(h);
}

/* Like check_report(), for a check the endpoint refused as a request or
 * that could not run: the state shows check_error and logs what to
 * change (fix), once. */
static void check_report_misconfigured(struct check *c, const char *what, const char *fix)
{
    if (c->reported)
        return;
    c->reported = true;
    struct health *h = c->h;
    h->running--;
    struct state_outcome o = {
        .source = STATE_FROM_CHECK,
        .kind = STATE_CHECK_MISCONFIGURED,
        .latency_ms = -1,
        .ttfb_ms = -1,
        .error = what,
        .fix = fix,
    };
    state_report(h->st, c->ep, &o, now_mono_ms(), now_wall_ms());
    log_debug("check %s: misconfigured: %s", c->ep_name, what);
    if (h->timing)
        timing_result(h, c, false, -1, what);
    health_kick(h);
}

/* The model endpoint ep is checked with. */
static const char *health_model(const struct health *h, int ep)
{
    const struct cfg_group *g;
    const struct cfg_endpoint *ce = state_ep_cfg(h->st, ep, &g);
    return config_check_model_for(h->cfg, g, ce);
}

/* A check whose result nobody wants any more: its slot is given back now,
 * while the state it belongs to is certainly alive, and then it is stopped
 * and cleaned up without touching the state again. */
static void check_abandon(struct check *c)
{
    c->abandoned = true;
    if (!c->reported) {
        c->reported = true;
        c->h->running--;
        state_check_abandon(c->h->st, c->ep);
    }
    check_teardown(c);
}

static void on_check_timer(uv_timer_t *t);

static struct check *check_new(struct health *h, int ep)
{
    struct check *c = xcalloc(1, sizeof *c);
    const struct cfg_group *g;
    const struct cfg_endpoint *ce = state_ep_cfg(h->st, ep, &g);
    c->h = h;
    c->ep = ep;
    c->method = h->cfg->method;
    c->timeout_s = h->cfg->timeout_s >= 1 ? h->cfg->timeout_s : 1;
    const char *tok = config_ep_token(g, ce);
    c->token = tok && tok[0] ? xstrdup(tok) : NULL;
    c->auth = config_ep_auth(g, ce);
    snprintf(c->ep_name, sizeof c->ep_name, "%s", state_ep_name(h->st, ep));
    buf_init(&c->reply, HEALTH_REPLY_CAP);
    buf_init(&c->out_buf, HEALTH_OUT_KEEP);
    buf_init(&c->err_buf, HEALTH_ERR_KEEP);
    uv_timer_init(h->loop, &c->timer);
    c->timer.data = c;
    c->handles = 1;
    c->next = h->checks;
    if (h->checks)
        h->checks->prev = c;
    h->checks = c;
    return c;
}

/* ---- the HTTP methods --------------------------------------------------- */

static bool on_http_head(void *ud, int status, const struct upstream_hdr *hdrs, size_t n)
{
    struct check *c = ud;
    (void)hdrs;
    (void)n;
    c->status = status;
    c->ttfb_ms = (double)(uv_hrtime() - c->start_ns) / 1e6;
    return true;
}

static size_t on_http_body(void *ud, const char *p, size_t len)
{
    struct check *c = ud;
    if (buf_append(&c->reply, p, len) != 0) {
        c->reply_too_big = true;
        return 0; /* ends the exchange with UPSTREAM_ERR_ABORTED */
    }
    return len;
}

/* "type: message" from an Anthropic error body, or "" when it is not one. */
static void http_error_text(const struct check *c, char *out, size_t size)
{
    out[0] = '\0';
    cJSON *j = cJSON_ParseWithLength(c->reply.data ? c->reply.data : "", c->reply.len);
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(err, "type");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
    if (cJSON_IsString(type) || cJSON_IsString(msg)) {
        char *t = xasprintf("%s%s%s", cJSON_IsString(type) ? type->valuestring : "",
                            cJSON_IsString(type) && cJSON_IsString(msg) ? ": " : "",
                            cJSON_IsString(msg) ? msg->valuestring : "");
        health_clean_text(out, size, t, strlen(t), c->token);
        free(t);
    } else if (c->reply.len && !j) {
        size_t l;
        const char *line = first_line(c->reply.data, c->reply.len, &l);
        health_clean_text(out, size, line, l > 80 ? 80 : l, c->token);
    }
    cJSON_Delete(j);
}

/* Whether a 2xx body is what the method promises. */
static bool http_reply_valid(const struct check *c)
{
    cJSON *j = cJSON_ParseWithLength(c->reply.data ? c->reply.data : "", c->reply.len);
    bool ok = false;
    if (cJSON_IsObject(j)) {
        if (c->method == CHECK_COUNT_TOKENS) {
            ok = cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "input_tokens"));
        } else {
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
            ok = (cJSON_IsString(type) && strcmp(type->valuestring, "message") == 0) ||
                 cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "content"));
        }
    }
    cJSON_Delete(j);
    return ok;
}

static void on_http_done(void *ud, enum upstream_rc rc, const char *msg)
{
    struct check *c = ud;
    char reason[HEALTH_REASON_MAX + 1];
    char detail[HEALTH_DETAIL_MAX];
    c->ux = NULL;
    if (c->state != CHECK_RUNNING)
        return;
    uv_timer_stop(&c->timer);
    double latency = (double)(uv_hrtime() - c->start_ns) / 1e6;
    double ttfb = c->ttfb_ms;

    if (rc != UPSTREAM_OK) {
        if (c->reply_too_big)
            snprintf(reason, sizeof reason, "reply larger than %d KiB", HEALTH_REPLY_CAP / 1024);
        else if (rc == UPSTREAM_ERR_TIMEOUT)
            snprintf(reason, sizeof reason, "timed out after %d s", c->timeout_s);
        else
            health_clean_text(reason, sizeof reason, msg, strlen(msg), c->token);
        check_report(c, false, false, -1, -1, reason, NULL);
        check_teardown(c);
        return;
    }
    long status = c->status;
    if (status >= 200 && status < 300) {
        if (!http_reply_valid(c)) {
            snprintf(reason, sizeof reason, "HTTP %ld but the reply is not a %s", status,
                     c->method == CHECK_COUNT_TOKENS ? "token count" : "message");
            check_report(c, false, false, -1, -1, reason, NULL);
        } else {
            struct usage u;
            memset(&u, 0, sizeof u);
            bool have = c->method == CHECK_MESSAGES &&
                        usage_from_message_json(c->reply.data, c->reply.len, &u) == 0;
            check_report(c, true, false, latency, ttfb, NULL, have ? &u : NULL);
        }
    } else if ((status == 401 || status == 403) && !c->token) {
        /* No token of ours: clients bring their own, so this proves the
         * endpoint answers, which is all a check can learn. */
        check_report(c, true, false, latency, ttfb, NULL, NULL);
    } else if (status == 400 || status == 404 || status == 422) {
        /* The endpoint refuses the check as a request: nothing is known
         * about whether it would serve real traffic. */
        http_error_text(c, detail, sizeof detail);
        snprintf(reason, sizeof reason, "check answered HTTP %ld%s%s", status,
                 detail[0] ? ": " : "", detail);
        const char *model = health_model(c->h, c->ep);
        char fix[200];
        if (strcasestr(detail, "model"))
            snprintf(fix, sizeof fix, "set check_model: this endpoint does not serve %s", model);
        else if (status == 404 && c->method == CHECK_COUNT_TOKENS)
            snprintf(fix, sizeof fix,
                     "set health_check.method = \"messages\": this endpoint "
                     "does not serve /v1/messages/count_tokens");
        else if (status == 404)
            snprintf(fix, sizeof fix,
                     "this endpoint does not serve POST /v1/messages: check "
                     "its url, or set check_model if it does not serve %s",
                     model);
        else
            snprintf(fix, sizeof fix,
                     "the endpoint refuses the check request: set check_model "
                     "(now %s) or health_check.method",
                     model);
        check_report_misconfigured(c, reason, fix);
    } else {
        http_error_text(c, detail, sizeof detail);
        snprintf(reason, sizeof reason, "HTTP %ld%s%s", status, detail[0] ? ": " : "", detail);
        check_report(c, false, status == 401 || status == 403, -1, -1, reason, NULL);
    }
    check_teardown(c);
}

static char *http_body(const struct health *h, const char *model)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", model);
    if (h->cfg->method == CHECK_MESSAGES)
        cJSON_AddNumberToObject(o, "max_tokens", 1);
    cJSON *msgs = cJSON_AddArrayToObject(o, "messages");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "user");
    cJSON_AddStringToObject(m, "content", h->cfg->check_prompt);
    cJSON_AddItemToArray(msgs, m);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        abort(); /* cJSON only fails to print when out of memory */
    return s;
}

/* Returns 0, or -1 with the reason in reason. */
static int check_http_start(struct check *c, char *reason, size_t rlen)
{
    struct health *h = c->h;
    const char *path =
        c->method == CHECK_COUNT_TOKENS ? "/v1/messages/count_tokens" : "/v1/messages";
    char *url = hdr_url_join(state_ep_url(h->st, c->ep), path);
    if (!url) {
        snprintf(reason, rlen, "endpoint url is not usable");
        return -1;
    }
    c->body = http_body(h, health_model(h, c->ep));
    buf_init(&c->hdrs, SIZE_MAX);
    static const char fixed[] = "anthropic-version: 2023-06-01\r\n"
                                "content-type: application/json\r\n"
                                "accept: application/json\r\n"
                                "user-agent: claude-zephyr-health\r\n";
    buf_append(&c->hdrs, fixed, sizeof fixed - 1);
    if (c->token) {
        buf_appendf(&c->hdrs, "%s%s\r\n",
                    c->auth == AUTH_BEARER ? "authorization: Bearer " : "x-api-key: ", c->token);
    }
    const struct cfg_endpoint *ce = state_ep_cfg(h->st, c->ep, NULL);
    for (size_t i = 0; i < ce->n_headers; i++)
        buf_appendf(&c->hdrs, "%s: %s\r\n", ce->headers[i].name, ce->headers[i].value);
    c->ttfb_ms = -1;
    static const struct upstream_cbs cbs = {
        .head = on_http_head,
        .body = on_http_body,
        .done = on_http_done,
    };
    struct upstream_request req = {
        .method = "POST",
        .url = url,
        .headers = c->hdrs.data,
        .headers_len = c->hdrs.len,
        .body = c->body,
        .body_len = strlen(c->body),
        .send_length = true,
        .connect_timeout_ms = (long)c->timeout_s * 1000L,
        /* Our timer fires first; this only guards against a stalled loop. */
        .timeout_ms = (long)c->timeout_s * 1000L + 1000L,
        .proxy = ce->proxy,
        .ca_file = ce->ca_file,
    };
    c->ux = upstream_start(h->up, &req, &cbs, c);
    free(url);
    if (!c->ux) {
        snprintf(reason, rlen, "the upstream request could not start");
        return -1;
    }
    return 0;
}

/* ---- the CLI method ----------------------------------------------------- */

/* What the child may inherit from our environment; anything else, other
 * groups' tokens included, stays here. */
static const char *const health_env_keep[] = {
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
    "TMPDIR",
    "SHELL",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "CLAUDE_CONFIG_DIR",
    NULL,
};

/* True when value holds the token of any group. */
static bool holds_a_token(const struct config *cfg, const char *value)
{
    for (size_t g = 0; g < cfg->n_groups; g++) {
        const char *t = cfg->groups[g].token;
        if (t && strlen(t) >= 4 && strstr(value, t))
            return true;
        for (size_t e = 0; e < cfg->groups[g].n_endpoints; e++) {
            t = cfg->groups[g].endpoints[e].token;
            if (t && strlen(t) >= 4 && strstr(value, t))
                return true;
        }
    }
    return false;
}

/* A NULL-terminated, malloc'd environment for the child of check c. */
static char **cli_env(const struct check *c)
{
    const struct health *h = c->h;
    size_t n = sizeof health_env_keep / sizeof health_env_keep[0] + 4;
    char **env = xcalloc(n, sizeof *env);
    size_t k = 0;
    bool have_path = false;
    for (size_t i = 0; health_env_keep[i]; i++) {
        const char *v = getenv(health_env_keep[i]);
        if (!v || holds_a_token(h->cfg, v))
            continue;
        if (strcmp(health_env_keep[i], "PATH") == 0)
            have_path = true;
        env[k++] = xasprintf("%s=%s", health_env_keep[i], v);
    }
    if (!have_path)
        env[k++] = xstrdup("PATH=/usr/local/bin:/usr/bin:/bin");
    env[k++] = xasprintf("ANTHROPIC_BASE_URL=%s", state_ep_url(h->st, c->ep));
    if (c->token)
        env[k++] = xasprintf("ANTHROPIC_AUTH_TOKEN=%s", c->token);
    env[k++] = xstrdup("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1");
    env[k] = NULL;
    return env;
}

static void free_strv(char **v)
{
    if (!v)
        return;
    for (size_t i = 0; v[i]; i++) {
        memset(v[i], 0, strlen(v[i]));
        free(v[i]);
    }
    free(v);
}

/* True when the CLI's output (stderr or stdout) holds one of marks. */
static bool cli_says(const struct check *c, const char *const *marks)
{
    const struct buf *bufs[2] = {&c->err_buf, &c->out_buf};
    for (int b = 0; b < 2; b++) {
        if (!bufs[b]->data)
            continue;
        for (size_t i = 0; marks[i]; i++)
            if (strcasestr(bufs[b]->data, marks[i]))
                return true;
    }
    return false;
}

/* True when the CLI's output says the credentials were refused. */
static bool cli_says_auth(const struct check *c)
{
    static const char *const marks[] = {
        "authentication_error", "permission_error",  "API Error: 401",       "API Error: 403",
        "Invalid API key",      "invalid x-api-key", "Invalid bearer token", NULL,
    };
    return cli_says(c, marks);
}

/* True when the CLI's output says the request itself was refused (unknown
 * model, invalid request), which says nothing about the endpoint. */
static bool cli_says_refused(const struct check *c)
{
    static const char *const marks[] = {
        "not_found_error", "invalid_request_error", "API Error: 404",
        "API Error: 400",  "API Error: 422",        NULL,
    };
    return cli_says(c, marks);
}

/* The CLI has exited and its pipes are drained (or the grace ran out). */
static void cli_evaluate(struct check *c)
{
    char reason[HEALTH_REASON_MAX + 1];
    char line[HEALTH_DETAIL_MAX] = "";
    const char *out = c->out_buf.data ? c->out_buf.data : "";
    const char *err = c->err_buf.data ? c->err_buf.data : "";
    if (c->term_signal == 0 && c->exit_status == 0 && !blank(out, c->out_buf.len)) {
        /* With --output-format json the CLI reports what it spent, and
         * whether the answer was an error after all. */
        cJSON *j = cJSON_ParseWithLength(out, c->out_buf.len);
        const cJSON *is_error = cJSON_GetObjectItemCaseSensitive(j, "is_error");
        if (cJSON_IsTrue(is_error)) {
            const cJSON *res = cJSON_GetObjectItemCaseSensitive(j, "result");
            const cJSON *api = cJSON_GetObjectItemCaseSensitive(j, "api_error_status");
            const char *text = cJSON_IsString(res) ? res->valuestring : "";
            health_clean_text(line, sizeof line, text, strlen(text), c->token);
            snprintf(reason, sizeof reason, "cli reported an error%s%s", line[0] ? ": " : "", line);
            bool auth = cJSON_IsNumber(api) && (api->valueint == 401 || api->valueint == 403);
            bool refused = cJSON_IsNumber(api) &&
                           (api->valueint == 400 || api->valueint == 404 || api->valueint == 422);
            cJSON_Delete(j);
            if (refused) {
                check_report_misconfigured(c, reason,
                                           "the endpoint refuses the cli's request: "
                                           "choose a model it serves with \"--model\", NAME "
                                           "in health_check.cli_args");
                check_teardown(c);
                return;
            }
            check_report(c, false, auth || cli_says_auth(c), -1, -1, reason, NULL);
            check_teardown(c);
            return;
        }
        cJSON_Delete(j);
        struct usage u;
        memset(&u, 0, sizeof u);
        bool have = usage_from_message_json(out, c->out_buf.len, &u) == 0;
        check_report(c, true, false, c->exit_ms, -1, NULL, have ? &u : NULL);
        check_teardown(c);
        return;
    }
    size_t l;
    const char *p = first_line(err, c->err_buf.len, &l);
    if (!l)
        p = first_line(out, c->out_buf.len, &l);
    health_clean_text(line, sizeof line, p, l, c->token);
    if (c->term_signal)
        snprintf(reason, sizeof reason, "cli killed by signal %d%s%s", c->term_signal,
                 line[0] ? ": " : "", line);
    else if (c->exit_status == 0)
        snprintf(reason, sizeof reason, "cli exited 0 with no output%s%s", line[0] ? ": " : "",
                 line);
    else
        snprintf(reason, sizeof reason, "cli exit %lld%s%s", (long long)c->exit_status,
                 line[0] ? ": " : "", line);
    if (!cli_says_auth(c) && cli_says_refused(c)) {
        check_report_misconfigured(c, reason,
                                   "the endpoint refuses the cli's request: choose "
                                   "a model it serves with \"--model\", NAME in "
                                   "health_check.cli_args");
        check_teardown(c);
        return;
    }
    check_report(c, false, cli_says_auth(c), -1, -1, reason, NULL);
    check_teardown(c);
}

static void on_cli_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *b)
{
    struct check *c = hd->data;
    (void)suggested;
    b->base = c->rbuf;
    b->len = sizeof c->rbuf;
}

static void on_cli_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct check *c = s->data;
    bool is_out = s == (uv_stream_t *)&c->out;
    struct buf *keep = is_out ? &c->out_buf : &c->err_buf;
    if (nread > 0) {
        size_t room = keep->cap - keep->len;
        buf_append(keep, b->base, (size_t)nread < room ? (size_t)nread : room);
        return;
    }
    if (nread == 0)
        return;
    /* EOF or a read error: this pipe is done either way. */
    uv_read_stop(s);
    if (is_out)
        c->out_eof = true;
    else
        c->err_eof = true;
    if (c->state == CHECK_DRAINING && c->out_eof && c->err_eof) {
        uv_timer_stop(&c->timer);
        cli_evaluate(c);
    }
}

static void on_cli_exit(uv_process_t *p, int64_t status, int sig)
{
    struct check *c = p->data;
    c->exited = true;
    c->exit_status = status;
    c->term_signal = sig;
    c->exit_ms = hr_ms_since(c->start_ns);
    if (c->state == CHECK_RUNNING) {
        c->state = CHECK_DRAINING;
        uv_timer_stop(&c->timer);
        if (c->out_eof && c->err_eof)
            cli_evaluate(c);
        else
            uv_timer_start(&c->timer, on_check_timer, HEALTH_DRAIN_MS, 0);
    } else if (c->state == CHECK_REAPING) {
        check_teardown(c);
    }
}

/* Returns 0, or -1 with the reason in reason; -2 when the binary is missing
 * or not executable (the check is misconfigured, the endpoint unknown). */
static int check_cli_start(struct check *c, char *reason, size_t rlen)
{
    struct health *h = c->h;
    const struct config *cfg = h->cfg;
    uv_pipe_init(h->loop, &c->out, 0);
    uv_pipe_init(h->loop, &c->err, 0);
    c->out.data = c->err.data = c;
    c->handles += 2;

    size_t argc = 0;
    char **argv = xcalloc(cfg->n_cli_args + 4, sizeof *argv);
    argv[argc++] = xstrdup(cfg->claude_binary_path);
    for (size_t i = 0; i < cfg->n_cli_args; i++)
        argv[argc++] = xstrdup(cfg->cli_args[i]);
    argv[argc++] = xstrdup("-p");
    argv[argc++] = xstrdup(cfg->check_prompt);
    argv[argc] = NULL;
    char **env = cli_env(c);

    uv_stdio_container_t io[3];
    io[0].flags = UV_IGNORE;
    io[1].flags = (uv_stdio_flags)(UV_CREATE_PIPE | UV_WRITABLE_PIPE);
    io[1].data.stream = (uv_stream_t *)&c->out;
    io[2].flags = (uv_stdio_flags)(UV_CREATE_PIPE | UV_WRITABLE_PIPE);
    io[2].data.stream = (uv_stream_t *)&c->err;
    uv_process_options_t o;
    memset(&o, 0, sizeof o);
    o.exit_cb = on_cli_exit;
    o.file = argv[0];
    o.args = argv;
    o.env = env;
    o.stdio = io;
    o.stdio_count = 3;
    /* A new session, hence a process group of its own that a timeout can
     * kill as a whole. */
    o.flags = UV_PROCESS_DETACHED;
    fd_cloexec_all(); /* the child inherits nothing of ours */
    int rc = uv_spawn(h->loop, &c->proc, &o);
    c->proc.data = c;
    c->handles++;
    free_strv(argv);
    free_strv(env);
    if (rc != 0) {
        /* uv_spawn initialised the handle all the same; it is closed with
         * the others.  There is no process to wait for. */
        c->exited = true;
        c->out_eof = c->err_eof = true;
        snprintf(reason, rlen, "cannot run %s: %s", cfg->claude_binary_path, uv_strerror(rc));
        return rc == UV_ENOENT || rc == UV_EACCES || rc == UV_ENOTDIR ? -2 : -1;
    }
    c->spawned = true;
    c->pgid = c->proc.pid;
    uv_read_start((uv_stream_t *)&c->out, on_cli_alloc, on_cli_read);
    uv_read_start((uv_stream_t *)&c->err, on_cli_alloc, on_cli_read);
    return 0;
}

/* Reaps what is left of the CLI's process group; true when it is gone. */
static bool cli_reap_group(struct check *c)
{
    if (!c->spawned)
        return true;
    /* Stragglers that outlived the leader die too: a check leaves nothing. */
    if (kill(-c->pgid, SIGKILL) != 0 && errno == ESRCH)
        return true;
    int status;
    while (waitpid(-c->pgid, &status, WNOHANG) > 0)
        ;
    return kill(-c->pgid, 0) != 0;
}

/*
 * After the result is reported: stops the transfer or the process and
 * closes the check once nothing of it is left.  Reached from check_report's
 * callers, from the exit callback while reaping, from the reap retry timer
 * and from check_abandon().
 */
static void check_teardown(struct check *c)
{
    if (c->state == CHECK_CLOSING)
        return;
    if (c->method != CHECK_CLI) {
        check_close(c);
        return;
    }
    c->state = CHECK_REAPING;
    uv_timer_stop(&c->timer);
    if (!c->exited) {
        if (!c->killed) {
            c->killed = true;
            kill(-c->pgid, SIGKILL);
        }
        return; /* on_cli_exit() comes back here once libuv has reaped it */
    }
    if (cli_reap_group(c) || ++c->reap_tries >= HEALTH_REAP_TRIES) {
        if (c->reap_tries >= HEALTH_REAP_TRIES)
            log_warn("check %s: processes of the cli (group %d) outlived SIGKILL", c->ep_name,
                     c->pgid);
        check_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_check_timer, HEALTH_REAP_STEP_MS, 0);
}

static void on_check_timer(uv_timer_t *t)
{
    struct check *c = t->data;
    char reason[64];
    switch (c->state) {
    case CHECK_RUNNING:
        snprintf(reason, sizeof reason, "timed out after %d s", c->timeout_s);
        if (c->ux) {
            upstream_abort(c->ux);
            c->ux = NULL;
        }
        check_report(c, false, false, -1, -1, reason, NULL);
        check_teardown(c);
        break;
    case CHECK_DRAINING: cli_evaluate(c); break;
    case CHECK_REAPING: check_teardown(c); break;
    case CHECK_CLOSING: break;
    }
}

/* Starts a check of endpoint i now. */
static void check_start(struct health *h, size_t i, uint64_t now)
{
    struct health_ep *he = &h->eps[i];
    struct check *c = check_new(h, (int)i);
    c->cycle = he->cycle;
    he->queued = false;
    he->cycle = 0;
    he->last_start_ms = now;
    h->running++;
    state_check_begin(h->st, (int)i, now);
    c->start_ns = uv_hrtime();
    char reason[HEALTH_REASON_MAX + 1] = "";
    int rc = c->method == CHECK_CLI ? check_cli_start(c, reason, sizeof reason)
                                    : check_http_start(c, reason, sizeof reason);
    if (rc == -2) {
        /* No binary to run: the check cannot say anything about the
         * endpoint, and live traffic must not suffer for it. */
        check_report_misconfigured(c, reason,
                                   "set health_check.claude_binary_path to the "
                                   "claude binary, or use method = \"messages\"");
        check_teardown(c);
        return;
    }
    if (rc != 0) {
        check_report(c, false, false, -1, -1, reason, NULL);
        check_teardown(c);
        return;
    }
    uv_timer_start(&c->timer, on_check_timer, (uint64_t)c->timeout_s * 1000u, 0);
}

/* ---- the scheduler ------------------------------------------------------ */

/* When endpoint i needs a check outside the cycles (failed, or a quick
 * re-check asked for), or 0. */
static uint64_t health_ep_due(const struct health *h, size_t i)
{
    const struct state *st = h->st;
    const struct health_ep *he = &h->eps[i];
    if (h->paused || h->timing || he->queued || state_ep_check_running(st, (int)i) ||
        !state_may_check(st, (int)i)) /* another instance of the fleet checks it */
        return 0;
    uint64_t due = 0;
    if (state_ep_recheck_soon(st, (int)i))
        due = he->last_start_ms + HEALTH_RECHECK_GAP_MS;
    bool failed = state_ep_failed(st, (int)i);
    if (failed) {
        int fi = h->cfg->failed_interval_s >= 1 ? h->cfg->failed_interval_s : 1;
        uint64_t d = he->last_start_ms + (uint64_t)fi * 1000u;
        if (!due || d < due)
            due = d;
    }
    /* An open circuit lets nothing through, checks included, until its
     * back-off is over; then one check is the trial. */
    uint64_t retry = state_ep_circuit_retry_ms(st, (int)i);
    if (retry && (failed || due))
        due = retry;
    return due;
}

static bool health_circuit_blocks(const struct health *h, size_t i, uint64_t now)
{
    uint64_t retry = state_ep_circuit_retry_ms(h->st, (int)i);
    return retry && now < retry;
}

static void health_queue(struct health *h, size_t i, unsigned cycle)
{
    if (h->eps[i].queued || state_ep_check_running(h->st, (int)i))
        return;
    h->eps[i].queued = true;
    h->eps[i].cycle = cycle;
}

static void health_cycle(struct health *h, uint64_t now)
{
    uint64_t sched = h->next_cycle_ms;
    uint64_t start = now > sched + HEALTH_LATE_MS ? now : sched;
    h->cycle_no++;
    h->cycle_start_ms = start;
    unsigned queued = 0;
    for (size_t i = 0; i < h->n_eps; i++) {
        if (!h->eps[i].queued && !state_ep_check_running(h->st, (int)i) &&
            !health_circuit_blocks(h, i, now) && state_may_check(h->st, (int)i)) {
            health_queue(h, i, h->cycle_no);
            queued++;
        }
    }
    double s = health_interval_s(h, now);
    uint64_t step = interval_ms(s);
    uint64_t next = start + step;
    while (next <= now)
        next += step;
    h->next_cycle_ms = next;
    log_debug("health: cycle %u, %u endpoint(s) queued, next in %.1f s", h->cycle_no, queued,
              secs_until(next, now));
    if (h->timing)
        timing_cycle(h, sched, s, queued);
}

static void health_tick(struct health *h)
{
    if (h->closing)
        return;
    struct state *st = h->st;
    uint64_t now = now_mono_ms();
    if (!h->paused && h->next_cycle_ms && now >= h->next_cycle_ms)
        health_cycle(h, now);
    for (size_t i = 0; i < h->n_eps; i++) {
        uint64_t due = health_ep_due(h, i);
        if (due && due <= now)
            health_queue(h, i, 0);
    }
    unsigned max = health_max_concurrent(h);
    for (size_t i = 0; i < h->n_eps && h->running < max; i++)
        if (h->eps[i].queued)
            check_start(h, i, now);

    /* Plan the next wake-up and publish the schedule. */
    uint64_t cycle = h->paused ? 0 : h->next_cycle_ms;
    uint64_t wake = cycle;
    for (size_t i = 0; i < h->n_eps; i++) {
        uint64_t due = health_ep_due(h, i);
        uint64_t next = cycle;
        if (due && (!next || due < next))
            next = due;
        if (h->eps[i].queued)
            next = now;
        state_publish_ep_next(st, (int)i, state_ep_check_running(st, (int)i) ? 0 : next);
        if (due && (!wake || due < wake))
            wake = due;
    }
    state_publish_cycle(st, cycle);
    state_publish_paused(st, h->paused);
    if (!wake) {
        uv_timer_stop(&h->timer);
        return;
    }
    uv_update_time(h->loop);
    uint64_t at = now_mono_ms();
    uv_timer_start(&h->timer, on_health_timer, wake > at ? wake - at : 0, 0);
}

/* ---- the /v1/models probe ------------------------------------------------ */

static void probe_free(struct probe *p)
{
    struct health *h = p->h;
    for (struct probe **pp = &h->probes; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    if (p->ux)
        upstream_abort(p->ux);
    if (p->hdrs.data)
        memset(p->hdrs.data, 0, p->hdrs.len); /* holds the token */
    buf_release(&p->hdrs);
    buf_release(&p->reply);
    free(p);
}

/* Drops every probe in flight (reload, shutdown): no callback follows. */
static void probes_drop(struct health *h)
{
    while (h->probes)
        probe_free(h->probes);
}

static bool on_probe_head(void *ud, int status, const struct upstream_hdr *hdrs, size_t n)
{
    struct probe *p = ud;
    (void)hdrs;
    (void)n;
    p->status = status;
    return status == 200; /* anything else: not implemented here, nothing to read */
}

static size_t on_probe_body(void *ud, const char *data, size_t len)
{
    struct probe *p = ud;
    return buf_append(&p->reply, data, len) == 0 ? len : 0;
}

/* Whether a listed model id is the check model: the same name, or a dated
 * variant of it (the list names claude-haiku-4-5-20251001 for the alias
 * claude-haiku-4-5). */
static bool probe_id_matches(const char *id, const char *model)
{
    size_t ml = strlen(model);
    if (strcmp(id, model) == 0)
        return true;
    return strncmp(id, model, ml) == 0 && id[ml] == '-' && id[ml + 1] >= '0' && id[ml + 1] <= '9';
}

static void on_probe_done(void *ud, enum upstream_rc rc, const char *msg)
{
    struct probe *p = ud;
    struct health *h = p->h;
    const char *name = state_ep_name(h->st, p->ep);
    p->ux = NULL;
    cJSON *j = rc == UPSTREAM_OK && p->status == 200
                   ? cJSON_ParseWithLength(p->reply.data ? p->reply.data : "", p->reply.len)
                   : NULL;
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data");
    if (!cJSON_IsArray(data)) {
        log_debug("health: %s: GET /v1/models gave no model list (%s, HTTP %d); not checked", name,
                  rc == UPSTREAM_OK ? "ok" : msg, p->status);
    } else {
        bool found = false;
        const char *first = NULL;
        const cJSON *m;
        cJSON_ArrayForEach(m, data)
        {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "id");
            if (!cJSON_IsString(id))
                continue;
            if (!first)
                first = id->valuestring;
            if (probe_id_matches(id->valuestring, p->model))
                found = true;
        }
        if (!found) {
            char shown[64] = "";
            if (first)
                health_clean_text(shown, sizeof shown, first, strlen(first), NULL);
            char *w = xasprintf("GET /v1/models does not list %s%s%s", p->model,
                                shown[0] ? "; set check_model to one it lists, e.g. " : "", shown);
            state_publish_models_warning(h->st, p->ep, w);
            free(w);
            log_warn("endpoint %s: %s", name, state_ep_models_warning(h->st, p->ep));
        } else {
            state_publish_models_warning(h->st, p->ep, NULL);
        }
    }
    cJSON_Delete(j);
    probe_free(p);
}

/* Asks every endpoint of an HTTP check method once for its model list. */
static void probes_start(struct health *h)
{
    static const struct upstream_cbs cbs = {
        .head = on_probe_head,
        .body = on_probe_body,
        .done = on_probe_done,
    };
    if (h->cfg->method == CHECK_CLI || h->timing)
        return;
    for (size_t i = 0; i < h->n_eps; i++) {
        const struct cfg_group *g;
        state_ep_cfg(h->st, (int)i, &g);
        char *url = hdr_url_join(state_ep_url(h->st, (int)i), "/v1/models");
        if (!url)
            continue;
        struct probe *p = xcalloc(1, sizeof *p);
        p->h = h;
        p->ep = (int)i;
        snprintf(p->model, sizeof p->model, "%s", health_model(h, (int)i));
        buf_init(&p->reply, HEALTH_REPLY_CAP);
        buf_init(&p->hdrs, SIZE_MAX);
        buf_appendf(&p->hdrs, "anthropic-version: 2023-06-01\r\naccept: application/json\r\n"
                              "user-agent: claude-zephyr-health\r\n");
        if (g->token && g->token[0])
            buf_appendf(
                &p->hdrs, "%s%s\r\n",
                g->auth == AUTH_BEARER ? "authorization: Bearer " : "x-api-key: ", g->token);
        struct upstream_request req = {
            .method = "GET",
            .url = url,
            .headers = p->hdrs.data,
            .headers_len = p->hdrs.len,
            .connect_timeout_ms = (long)h->cfg->timeout_s * 1000L,
            .timeout_ms = (long)h->cfg->timeout_s * 1000L,
        };
        p->next = h->probes;
        h->probes = p;
        p->ux = upstream_start(h->up, &req, &cbs, p);
        free(url);
        if (!p->ux)
            probe_free(p);
    }
}

/* ---- validation without traffic ----------------------------------------- */

/* Whether name (a path, or a command looked up in $PATH) is an executable
 * file; the full path goes to out. */
static bool health_find_binary(const char *name, char *out, size_t size)
{
    if (strchr(name, '/')) {
        snprintf(out, size, "%s", name);
        return access(name, X_OK) == 0;
    }
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        size_t n = strcspn(path, ":");
        snprintf(out, size, "%.*s/%s", (int)(n ? n : 1), n ? path : ".", name);
        if (access(out, X_OK) == 0)
            return true;
        path += n;
        if (*path == ':')
            path++;
    }
    snprintf(out, size, "%s", name);
    return false;
}

/* Runs `bin --version` with its output dropped, for at most 10 s; the exit
 * status, or -1 when it could not run or did not finish. */
static int health_run_version(const char *bin)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        execl(bin, bin, "--version", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 1000; i++) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        if (r < 0)
            return -1;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

char *health_validate(const struct config *cfg, bool run)
{
    if (cfg->method != CHECK_CLI)
        return NULL;
    char bin[1024];
    const char *fix = "set health_check.claude_binary_path to the claude binary, or use "
                      "method = \"messages\"; checks cannot run (they are shown as check_error, "
                      "and traffic is routed on live results)";
    if (!health_find_binary(cfg->claude_binary_path, bin, sizeof bin))
        return xasprintf("health_check.claude_binary_path: \"%s\" is not an executable file "
                         "(looked in $PATH); %s\n",
                         cfg->claude_binary_path, fix);
    if (run) {
        int rc = health_run_version(bin);
        if (rc != 0)
            return xasprintf("health_check.claude_binary_path: \"%s --version\" %s; %s\n", bin,
                             rc < 0 ? "did not run to completion" : "failed", fix);
    }
    return NULL;
}

/* ---- public API --------------------------------------------------------- */

static void health_adopt(struct health *h, struct state *st, const struct config *cfg)
{
    h->st = st;
    h->cfg = cfg;
    free(h->eps);
    h->n_eps = state_n_eps(st);
    h->eps = xcalloc(h->n_eps ? h->n_eps : 1, sizeof *h->eps);
    /* No check of st runs now: a new state starts with none, and the old
     * one's were abandoned (state_check_abandon) before a reload adopts it. */
    state_publish_paused(st, h->paused);
    char *warn = h->timing ? NULL : health_validate(cfg, false);
    if (warn) {
        warn[strcspn(warn, "\n")] = '\0';
        log_warn("%s", warn);
        free(warn);
    }
#ifdef __linux__
    /* Orphans of a killed CLI come to us, to be reaped (see the top). */
    if (cfg->method == CHECK_CLI && prctl(PR_SET_CHILD_SUBREAPER, 1L, 0L, 0L, 0L) != 0)
        log_warn("health: cannot become a child subreaper: %s", strerror(errno));
#endif
}

struct health *health_new(uv_loop_t *loop, struct upstream *up, struct state *st,
                          const struct config *cfg)
{
    struct health *h = xcalloc(1, sizeof *h);
    h->loop = loop;
    h->up = up;
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    interval_rate_init(&h->rate);
    h->last_activity_ms = now_mono_ms();
    health_adopt(h, st, cfg);
    health_interval_s(h, h->last_activity_ms);
    return h;
}

void health_start(struct health *h)
{
    if (h->started)
        return;
    h->started = true;
    h->next_cycle_ms = now_mono_ms();
    if (!h->next_cycle_ms)
        h->next_cycle_ms = 1;
    probes_start(h);
    health_kick(h);
}

void health_run_now(struct health *h)
{
    for (size_t i = 0; i < h->n_eps; i++)
        health_queue(h, i, 0);
    log_info("health: checking every endpoint now");
    health_kick(h);
}

void health_set_metrics(struct health *h, struct metrics *m)
{
    h->metrics = m;
}

void health_set_paused(struct health *h, bool paused)
{
    if (h->paused == paused)
        return;
    h->paused = paused;
    state_publish_paused(h->st, paused);
    if (paused) {
        for (size_t i = 0; i < h->n_eps; i++)
            h->eps[i].queued = false;
        state_publish_cycle(h->st, 0);
    }
    if (!h->closing)
        log_info("health: checks %s", paused ? "paused" : "resumed");
    health_kick(h);
}

void health_note_request(struct health *h)
{
    uint64_t now = now_mono_ms();
    interval_rate_hit(&h->rate, now);
    h->last_activity_ms = now;
    health_reschedule(h, now);
}

void health_poke(struct health *h)
{
    uint64_t now = now_mono_ms();
    h->last_activity_ms = now;
    health_reschedule(h, now);
    health_kick(h);
}

void health_set_config(struct health *h, struct state *st, const struct config *cfg)
{
    for (struct check *c = h->checks, *next; c; c = next) {
        next = c->next;
        check_abandon(c);
    }
    h->running = 0;
    probes_drop(h);
    health_adopt(h, st, cfg);
    if (h->started) {
        h->next_cycle_ms = now_mono_ms();
        h->cycle_start_ms = 0;
        probes_start(h);
        health_kick(h);
    }
}

static void on_health_timer_closed(uv_handle_t *hd)
{
    struct health *h = hd->data;
    h->timer_closed = true;
    health_maybe_free(h);
}

void health_free(struct health *h)
{
    if (!h || h->closing)
        return;
    h->closing = true;
    probes_drop(h);
    for (struct check *c = h->checks, *next; c; c = next) {
        next = c->next;
        check_abandon(c);
    }
    state_publish_cycle(h->st, 0);
    uv_timer_stop(&h->timer);
    uv_close((uv_handle_t *)&h->timer, on_health_timer_closed);
}

/* ---- --test-timing ------------------------------------------------------ */

struct timing_cycle {
    uint64_t sched_ms; /* monotonic */
    double actual_ms;  /* monotonic, sub-millisecond */
    double interval_s;
    unsigned queued, done, ok;
    bool printed;
    struct buf detail; /* "name ok 3 ms; name failed (reason)" */
};

struct timing {
    double interval_s;
    int n; /* cycles wanted */
    int started;
    struct timing_cycle *cycles; /* owns, n entries */
    uint64_t t0_ms;
    double tol_ms;
    size_t n_eps;
    uv_timer_t stop; /* ends the run from outside the check callbacks */
    bool stopping;
    struct health *h;    /* borrows */
    struct upstream *up; /* owns */
};

static double timing_interval_s(const struct timing *t)
{
    return t->interval_s;
}

static bool timing_cycle_passes(const struct timing *t, const struct timing_cycle *c)
{
    double err = c->actual_ms - (double)c->sched_ms;
    return fabs(err) <= t->tol_ms && c->queued == t->n_eps && c->done == c->queued;
}

static void timing_print(struct timing *t, int k)
{
    struct timing_cycle *c = &t->cycles[k];
    double err = c->actual_ms - (double)c->sched_ms;
    double since = k > 0 ? (c->actual_ms - t->cycles[k - 1].actual_ms) / 1000.0 : 0;
    char sincebuf[32] = "-";
    if (k > 0)
        snprintf(sincebuf, sizeof sincebuf, "%.3f", since);
    const char *why = "";
    if (fabs(err) > t->tol_ms)
        why = " (late)";
    else if (c->queued < t->n_eps)
        why = " (an earlier check was still running)";
    else if (c->done < c->queued)
        why = " (checks unfinished)";
    printf("%5d  %11.3f  %9.3f  %+9.1f  %10.3f  %9s  %3u/%-3u %3u  %s%s\n", k + 1,
           (double)(c->sched_ms - t->t0_ms) / 1000.0, (c->actual_ms - (double)t->t0_ms) / 1000.0,
           err, c->interval_s, sincebuf, c->done, c->queued, c->ok,
           timing_cycle_passes(t, c) ? "pass" : "FAIL", why);
    if (c->detail.len)
        printf("       %s\n", c->detail.data);
    fflush(stdout);
    c->printed = true;
}

/* Prints the finished cycles at the front that are not printed yet. */
static void timing_flush(struct timing *t, bool all)
{
    for (int k = 0; k < t->started; k++) {
        struct timing_cycle *c = &t->cycles[k];
        if (c->printed)
            continue;
        if (!all && c->done < c->queued)
            return;
        timing_print(t, k);
    }
}

static void on_timing_stop_closed(uv_handle_t *hd)
{
    (void)hd;
}

static void on_timing_stop(uv_timer_t *tm)
{
    struct timing *t = tm->data;
    health_free(t->h);
    upstream_free(t->up);
    uv_close((uv_handle_t *)&t->stop, on_timing_stop_closed);
}

static void timing_maybe_stop(struct timing *t)
{
    if (t->stopping || t->started < t->n)
        return;
    for (int k = 0; k < t->started; k++)
        if (t->cycles[k].done < t->cycles[k].queued)
            return;
    t->stopping = true;
    uv_timer_start(&t->stop, on_timing_stop, 0, 0);
}

static void timing_cycle(struct health *h, uint64_t sched_ms, double interval_s, unsigned queued)
{
    struct timing *t = h->timing;
    if (t->started >= t->n)
        return;
    struct timing_cycle *c = &t->cycles[t->started++];
    c->sched_ms = sched_ms;
    c->actual_ms = (double)uv_hrtime() / 1e6;
    c->interval_s = interval_s;
    c->queued = queued;
    /* The checks of this cycle were queued with h->cycle_no, which equals
     * t->started here: no cycle runs after the last one. */
    if (t->started >= t->n)
        h->next_cycle_ms = 0; /* that was the last one */
    timing_flush(t, false);
    timing_maybe_stop(t);
}

static void timing_result(struct health *h, struct check *c, bool ok, double latency_ms,
                          const char *reason)
{
    struct timing *t = h->timing;
    if (!c->cycle || (int)c->cycle > t->started)
        return;
    struct timing_cycle *tc = &t->cycles[c->cycle - 1];
    tc->done++;
    if (ok)
        tc->ok++;
    if (tc->detail.len)
        buf_appendf(&tc->detail, "; ");
    if (ok)
        buf_appendf(&tc->detail, "%s ok %.0f ms", c->ep_name, latency_ms);
    else
        buf_appendf(&tc->detail, "%s failed (%s)", c->ep_name, reason ? reason : "?");
    timing_flush(t, false);
    timing_maybe_stop(t);
}

static const char *method_name(enum check_method m)
{
    switch (m) {
    case CHECK_MESSAGES: return "messages";
    case CHECK_COUNT_TOKENS: return "count_tokens";
    case CHECK_CLI: return "cli";
    }
    return "?";
}

int health_test_timing(const struct config *cfg, int cycles, double interval_s)
{
    if (cycles < 1)
        cycles = 1;
    if (!(interval_s > 0))
        interval_s = cfg->min_interval_s >= 1 ? cfg->min_interval_s : 1;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct state *st = state_new(cfg, now_mono_ms(), now_wall_ms());
    struct upstream *up = upstream_new(&loop, !cfg->http_client_libcurl);
    struct timing t;
    memset(&t, 0, sizeof t);
    t.interval_s = interval_s;
    t.n = cycles;
    t.cycles = xcalloc((size_t)cycles, sizeof *t.cycles);
    for (int k = 0; k < cycles; k++)
        buf_init(&t.cycles[k].detail, 4096);
    t.n_eps = state_n_eps(st);
    t.tol_ms = 0.05 * interval_s * 1000.0;
    if (t.tol_ms < 100)
        t.tol_ms = 100;
    if (t.tol_ms > 1000)
        t.tol_ms = 1000;
    t.up = up;
    uv_timer_init(&loop, &t.stop);
    t.stop.data = &t;

    struct health *h = health_new(&loop, up, st, cfg);
    h->timing = &t;
    t.h = h;
    health_interval_s(h, now_mono_ms());

    printf("claude-zephyr timing test: %d cycle%s every %.3f s, %zu endpoint%s, method %s, "
           "timeout %d s, tolerance %.0f ms\n",
           cycles, cycles == 1 ? "" : "s", interval_s, state_n_eps(st),
           state_n_eps(st) == 1 ? "" : "s", method_name(cfg->method), cfg->timeout_s, t.tol_ms);
    if ((double)cfg->timeout_s >= interval_s)
        printf("note: timeout_seconds (%d) is not below the interval; a check that hangs "
               "overlaps the next cycle\n",
               cfg->timeout_s);
    printf("\n%5s  %11s  %9s  %9s  %10s  %9s  %7s %3s  %s\n", "cycle", "scheduled_s", "actual_s",
           "error_ms", "interval_s", "since_s", "checks", "ok", "verdict");
    fflush(stdout);

    t.t0_ms = now_mono_ms();
    health_start(h);
    h->next_cycle_ms = t.t0_ms;
    uv_run(&loop, UV_RUN_DEFAULT);

    timing_flush(&t, true);
    int passed = 0;
    double worst = 0;
    for (int k = 0; k < t.started; k++) {
        const struct timing_cycle *c = &t.cycles[k];
        double err = c->actual_ms - (double)c->sched_ms;
        if (fabs(err) > fabs(worst))
            worst = err;
        if (timing_cycle_passes(&t, c))
            passed++;
    }
    bool pass = passed == cycles && state_n_eps(st) > 0;
    printf("\nsummary: %s: %d of %d cycle%s on time and complete (worst start error %+.1f ms, "
           "tolerance %.0f ms)%s\n",
           pass ? "PASS" : "FAIL", passed, cycles, cycles == 1 ? "" : "s", worst, t.tol_ms,
           state_n_eps(st) ? "" : "; no endpoints configured");
    fflush(stdout);

    for (int k = 0; k < cycles; k++)
        buf_release(&t.cycles[k].detail);
    free(t.cycles);
    int rc = uv_loop_close(&loop);
    if (rc != 0)
        log_debug("timing test: loop closed with handles left: %s", uv_strerror(rc));
    state_free(st);
    return pass ? 0 : 1;
}
