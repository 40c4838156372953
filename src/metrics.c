/*
 * metrics: see metrics.h.  The registry is two small tables searched
 * linearly (their sizes are capped and a proxy has a handful of
 * endpoints): one row per endpoint/group pair for what requests do, one row
 * per endpoint for checks and retries.  Histograms keep per-bucket counts
 * and are made cumulative when rendered.  Rendering builds each sample line
 * in a scratch buffer first, so an output buffer that hits its cap ends
 * after a whole line, never inside one.
 */
#include "metrics.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state.h"
#include "version.h"

/* Bucket bounds in milliseconds and the same in seconds as `le` shows them. */
#define N_BUCKETS 13
static const double bucket_ms[N_BUCKETS] = {5,    10,   25,   50,    100,   250,  500,
                                            1000, 2500, 5000, 10000, 30000, 60000};
static const char *const bucket_le[N_BUCKETS] = {
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60"};

enum { TOK_INPUT = 0, TOK_OUTPUT = 1, TOK_CACHE_READ = 2, TOK_CACHE_CREATION = 3, N_TOK = 4 };
static const char *const tok_name[N_TOK] = {"input", "output", "cache_read", "cache_creation"};

/* Status classes: 0 = nothing sent, 1..5 = 1xx..5xx, 6 = anything else. */
#define N_CLASS 7
static const char *const class_name[N_CLASS] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx", "other"};

#define NO_ENDPOINT "(none)"
#define OTHER_ENDPOINT "(other)"
#define OTHER "other"

struct hist {
    uint64_t bucket[N_BUCKETS]; /* observations in (bound[i-1], bound[i]] */
    uint64_t count;             /* all observations, +Inf included */
    double sum_ms;
};

struct model_tokens {
    char *name; /* owns */
    uint64_t tokens[N_TOK];
};

struct named_count {
    char *name; /* owns */
    uint64_t n;
};

/* What requests did, per endpoint/group pair. */
struct rseries {
    char *endpoint; /* owns */
    char *group;    /* owns */
    uint64_t by_class[N_CLASS];
    uint64_t failovers; /* requests that took more than one attempt */
    struct hist ttfb;
    struct hist total;
    struct model_tokens *models; /* owns, n_models entries, at most METRICS_MAX_MODELS + 1 */
    size_t n_models;
};

/* Checks and retries, per endpoint. */
struct eseries {
    char *endpoint; /* owns */
    uint64_t checks_ok;
    uint64_t checks_failed;
    struct hist check;
    struct named_count reasons[METRICS_MAX_REASONS + 1];
    size_t n_reasons;
    struct named_count unreadable[METRICS_MAX_REASONS + 1]; /* replies whose usage was unread */
    size_t n_unreadable;
};

struct metrics {
    struct rseries *r; /* owns, n_r entries */
    size_t n_r, cap_r;
    struct eseries *e; /* owns, n_e entries */
    size_t n_e, cap_e;
    struct named_count switches[METRICS_MAX_REASONS + 1];
    size_t n_switches;
};

/* ---- the registry -------------------------------------------------------- */

struct metrics *metrics_new(void)
{
    return xcalloc(1, sizeof(struct metrics));
}

void metrics_free(struct metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_r; i++) {
        struct rseries *s = &m->r[i];
        for (size_t k = 0; k < s->n_models; k++)
            free(s->models[k].name);
        free(s->models);
        free(s->endpoint);
        free(s->group);
    }
    for (size_t i = 0; i < m->n_e; i++) {
        for (size_t k = 0; k < m->e[i].n_reasons; k++)
            free(m->e[i].reasons[k].name);
        for (size_t k = 0; k < m->e[i].n_unreadable; k++)
            free(m->e[i].unreadable[k].name);
        free(m->e[i].endpoint);
    }
    for (size_t k = 0; k < m->n_switches; k++)
        free(m->switches[k].name);
    free(m->r);
    free(m->e);
    free(m);
}

static void hist_observe(struct hist *h, double ms)
{
    if (!(ms >= 0))
        ms = 0; /* negative or NaN: a clock oddity, not a reason to lose the count */
    for (size_t i = 0; i < N_BUCKETS; i++) {
        if (ms <= bucket_ms[i]) {
            h->bucket[i]++;
            break;
        }
    }
    h->count++;
    h->sum_ms += ms;
}

/* The counter named name in a capped list; past the cap, the "other" one. */
static uint64_t *named_counter(struct named_count *list, size_t *n, const char *name)
{
    if (!name || !*name)
        name = OTHER;
    for (size_t i = 0; i < *n; i++)
        if (strcmp(list[i].name, name) == 0)
            return &list[i].n;
    if (*n >= METRICS_MAX_REASONS) {
        name = OTHER;
        for (size_t i = 0; i < *n; i++)
            if (strcmp(list[i].name, name) == 0)
                return &list[i].n;
    }
    list[*n].name = xstrdup(name);
    list[*n].n = 0;
    return &list[(*n)++].n;
}

static struct rseries *rseries_find(const struct metrics *m, const char *endpoint,
                                    const char *group)
{
    for (size_t i = 0; i < m->n_r; i++)
        if (strcmp(m->r[i].endpoint, endpoint) == 0 && strcmp(m->r[i].group, group) == 0)
            return &m->r[i];
    return NULL;
}

static struct rseries *rseries_get(struct metrics *m, const char *endpoint, const char *group)
{
    struct rseries *s = rseries_find(m, endpoint, group);
    if (s)
        return s;
    if (m->n_r >= METRICS_MAX_SERIES) {
        endpoint = OTHER_ENDPOINT;
        group = "";
        if ((s = rseries_find(m, endpoint, group)))
            return s;
    }
    if (m->n_r == m->cap_r) {
        m->cap_r = m->cap_r ? m->cap_r * 2 : 8;
        m->r = xrealloc(m->r, m->cap_r * sizeof *m->r);
    }
    s = &m->r[m->n_r++];
    memset(s, 0, sizeof *s);
    s->endpoint = xstrdup(endpoint);
    s->group = xstrdup(group);
    return s;
}

static const struct eseries *eseries_find(const struct metrics *m, const char *endpoint)
{
    for (size_t i = 0; i < m->n_e; i++)
        if (strcmp(m->e[i].endpoint, endpoint) == 0)
            return &m->e[i];
    return NULL;
}

static struct eseries *eseries_get(struct metrics *m, const char *endpoint)
{
    if (!endpoint || !*endpoint)
        endpoint = NO_ENDPOINT;
    const struct eseries *found = eseries_find(m, endpoint);
    if (!found && m->n_e >= METRICS_MAX_SERIES) {
        endpoint = OTHER_ENDPOINT;
        found = eseries_find(m, endpoint);
    }
    if (found)
        return &m->e[found - m->e];
    if (m->n_e == m->cap_e) {
        m->cap_e = m->cap_e ? m->cap_e * 2 : 8;
        m->e = xrealloc(m->e, m->cap_e * sizeof *m->e);
    }
    struct eseries *s = &m->e[m->n_e++];
    memset(s, 0, sizeof *s);
    s->endpoint = xstrdup(endpoint);
    return s;
}

static struct model_tokens *model_get(struct rseries *s, const char *model)
{
    if (!model || !*model)
        model = "unknown";
    for (size_t i = 0; i < s->n_models; i++)
        if (strcmp(s->models[i].name, model) == 0)
            return &s->models[i];
    if (s->n_models >= METRICS_MAX_MODELS) {
        model = OTHER;
        for (size_t i = 0; i < s->n_models; i++)
            if (strcmp(s->models[i].name, model) == 0)
                return &s->models[i];
    }
    if (!s->models)
        s->models = xcalloc(METRICS_MAX_MODELS + 1, sizeof *s->models);
    struct model_tokens *t = &s->models[s->n_models++];
    t->name = xstrdup(model);
    return t;
}

static uint64_t count_of(long long v)
{
    return v > 0 ? (uint64_t)v : 0;
}

void metrics_request(struct metrics *m, const char *endpoint, const char *group, int status,
                     double ttfb_ms, double total_ms, unsigned attempts, const struct usage *u)
{
    if (!endpoint || !*endpoint)
        endpoint = NO_ENDPOINT;
    struct rseries *s = rseries_get(m, endpoint, group ? group : "");
    int cls = status == 0 ? 0 : (status >= 100 && status <= 599) ? status / 100 : 6;
    s->by_class[cls]++;
    if (attempts > 1)
        s->failovers++;
    if (ttfb_ms >= 0)
        hist_observe(&s->ttfb, ttfb_ms);
    hist_observe(&s->total, total_ms);
    if (!u || (u->input <= 0 && u->output <= 0 && u->cache_read <= 0 && u->cache_creation <= 0))
        return;
    struct model_tokens *t = model_get(s, u->model);
    t->tokens[TOK_INPUT] += count_of(u->input);
    t->tokens[TOK_OUTPUT] += count_of(u->output);
    t->tokens[TOK_CACHE_READ] += count_of(u->cache_read);
    t->tokens[TOK_CACHE_CREATION] += count_of(u->cache_creation);
}

void metrics_retry(struct metrics *m, const char *from_endpoint, const char *reason)
{
    struct eseries *s = eseries_get(m, from_endpoint);
    (*named_counter(s->reasons, &s->n_reasons, reason))++;
}

void metrics_usage_unreadable(struct metrics *m, const char *endpoint, const char *reason)
{
    struct eseries *s = eseries_get(m, endpoint);
    (*named_counter(s->unreadable, &s->n_unreadable, reason))++;
}

void metrics_check(struct metrics *m, const char *endpoint, bool ok, double latency_ms)
{
    struct eseries *s = eseries_get(m, endpoint);
    if (ok)
        s->checks_ok++;
    else
        s->checks_failed++;
    if (latency_ms >= 0)
        hist_observe(&s->check, latency_ms);
}

void metrics_switch(struct metrics *m, const char *reason)
{
    (*named_counter(m->switches, &m->n_switches, reason))++;
}

/* ---- rendering ----------------------------------------------------------- */

struct out {
    struct buf *b;   /* borrows; the caller's output */
    struct buf line; /* owns; one sample line at a time */
    bool full;       /* b hit its cap: nothing more is written */
};

struct lbl {
    const char *k;
    const char *v;
};

/* The length of a valid UTF-8 sequence at s (n bytes left), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return len;
}

/* Appends v as a label value: \ " and newline escaped, invalid UTF-8 as '?'. */
static void put_escaped(struct buf *b, const char *v)
{
    const unsigned char *p = (const unsigned char *)v;
    size_t n = strlen(v);
    size_t i = 0;
    while (i < n) {
        if (p[i] == '\\') {
            buf_append(b, "\\\\", 2);
        } else if (p[i] == '"') {
            buf_append(b, "\\\"", 2);
        } else if (p[i] == '\n') {
            buf_append(b, "\\n", 2);
        } else {
            size_t k = utf8_len(p + i, n - i);
            if (k == 0) {
                buf_append(b, "?", 1);
                i++;
                continue;
            }
            buf_append(b, p + i, k);
            i += k;
            continue;
        }
        i++;
    }
}

static void out_commit(struct out *o)
{
    if (!o->full && buf_append(o->b, o->line.data, o->line.len) != 0)
        o->full = true;
    buf_reset(&o->line);
}

static void family(struct out *o, const char *name, const char *type, const char *help)
{
    buf_appendf(&o->line, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    out_commit(o);
}

/* One sample: name{labels} value.  value is already formatted. */
static void sample(struct out *o, const char *name, const struct lbl *l, size_t n,
                   const char *value)
{
    buf_append(&o->line, name, strlen(name));
    for (size_t i = 0; i < n; i++) {
        buf_appendf(&o->line, "%s%s=\"", i ? "," : "{", l[i].k);
        put_escaped(&o->line, l[i].v);
        buf_append(&o->line, "\"", 1);
    }
    if (n)
        buf_append(&o->line, "}", 1);
    buf_appendf(&o->line, " %s\n", value);
    out_commit(o);
}

static void sample_u64(struct out *o, const char *name, const struct lbl *l, size_t n, uint64_t v)
{
    char num[24];
    snprintf(num, sizeof num, "%llu", (unsigned long long)v);
    sample(o, name, l, n, num);
}

/* A double as the exposition format wants it: at most six decimals,
 * trailing zeros dropped, NaN and infinities by name. */
static void fmt_double(char *dst, size_t size, double v)
{
    if (isnan(v)) {
        snprintf(dst, size, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(dst, size, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (fabs(v) >= 1e15) {
        snprintf(dst, size, "%.17g", v);
        return;
    }
    snprintf(dst, size, "%.6f", v);
    char *dot = strchr(dst, '.');
    if (!dot)
        return;
    char *end = dst + strlen(dst);
    while (end > dot + 1 && end[-1] == '0')
        *--end = '\0';
    if (end == dot + 1)
        *dot = '\0';
    if (strcmp(dst, "-0") == 0)
        snprintf(dst, size, "0");
}

static void sample_double(struct out *o, const char *name, const struct lbl *l, size_t n, double v)
{
    char num[48];
    fmt_double(num, sizeof num, v);
    sample(o, name, l, n, num);
}

/* The _bucket, _sum and _count lines of one histogram; l has room for one
 * more label (le) after its n labels. */
static void histogram(struct out *o, const char *name, struct lbl *l, size_t n,
                      const struct hist *h)
{
    char metric[96];
    uint64_t cum = 0;
    snprintf(metric, sizeof metric, "%s_bucket", name);
    for (size_t i = 0; i < N_BUCKETS; i++) {
        cum += h->bucket[i];
        l[n] = (struct lbl){"le", bucket_le[i]};
        sample_u64(o, metric, l, n + 1, cum);
    }
    l[n] = (struct lbl){"le", "+Inf"};
    sample_u64(o, metric, l, n + 1, h->count);
    snprintf(metric, sizeof metric, "%s_sum", name);
    sample_double(o, metric, l, n, h->sum_ms / 1000.0);
    snprintf(metric, sizeof metric, "%s_count", name);
    sample_u64(o, metric, l, n, h->count);
}

/* The rows to render for the per-request families: every registry row,
 * then every configured endpoint that has none yet (as an empty row). */
struct rrow {
    const struct rseries *s; /* borrows */
    const char *endpoint;    /* borrows */
    const char *group;       /* borrows */
};

static const struct rseries empty_rseries;
static const struct eseries empty_eseries;

static struct rrow *rrows(const struct metrics *m, const struct state_snapshot *st, size_t *n)
{
    size_t cap = m->n_r + (st ? st->n_eps : 0);
    struct rrow *rows = xcalloc(cap ? cap : 1, sizeof *rows);
    size_t k = 0;
    for (size_t i = 0; i < m->n_r; i++)
        rows[k++] = (struct rrow){&m->r[i], m->r[i].endpoint, m->r[i].group};
    for (size_t i = 0; st && i < st->n_eps; i++) {
        const char *g = st->eps[i].group;
        if (!rseries_find(m, st->eps[i].name, g))
            rows[k++] = (struct rrow){&empty_rseries, st->eps[i].name, g};
    }
    *n = k;
    return rows;
}

struct erow {
    const struct eseries *s; /* borrows */
    const char *endpoint;    /* borrows */
};

static struct erow *erows(const struct metrics *m, const struct state_snapshot *st, size_t *n)
{
    size_t cap = m->n_e + (st ? st->n_eps : 0);
    struct erow *rows = xcalloc(cap ? cap : 1, sizeof *rows);
    size_t k = 0;
    for (size_t i = 0; i < m->n_e; i++)
        rows[k++] = (struct erow){&m->e[i], m->e[i].endpoint};
    for (size_t i = 0; st && i < st->n_eps; i++) {
        bool seen = eseries_find(m, st->eps[i].name) != NULL;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(st->eps[j].name, st->eps[i].name) == 0;
        if (!seen)
            rows[k++] = (struct erow){&empty_eseries, st->eps[i].name};
    }
    *n = k;
    return rows;
}

static void render_requests(struct out *o, const struct rrow *rows, size_t n)
{
    struct lbl l[5];

    family(o, "zephyr_requests_total", "counter",
           "Finished client requests by the endpoint they ended on, its group and the status "
           "class the client got (none: the client got no response).");
    for (size_t i = 0; i < n; i++) {
        l[0] = (struct lbl){"endpoint", rows[i].endpoint};
        l[1] = (struct lbl){"group", rows[i].group};
        for (int c = 0; c < N_CLASS; c++) {
            /* 2xx, 4xx and 5xx always exist, so rate() sees the first one. */
            if (!rows[i].s->by_class[c] && c != 2 && c != 4 && c != 5)
                continue;
            l[2] = (struct lbl){"status_class", class_name[c]};
            sample_u64(o, "zephyr_requests_total", l, 3, rows[i].s->by_class[c]);
        }
    }

    family(o, "zephyr_failovers_total", "counter",
           "Requests that needed more than one attempt, by the endpoint they ended on.");
    for (size_t i = 0; i < n; i++) {
        l[0] = (struct lbl){"endpoint", rows[i].endpoint};
        l[1] = (struct lbl){"group", rows[i].group};
        sample_u64(o, "zephyr_failovers_total", l, 2, rows[i].s->failovers);
    }

    family(o, "zephyr_request_ttfb_seconds", "histogram",
           "Time from the client's request to the first response byte from the endpoint.");
    for (size_t i = 0; i < n; i++) {
        l[0] = (struct lbl){"endpoint", rows[i].endpoint};
        l[1] = (struct lbl){"group", rows[i].group};
        histogram(o, "zephyr_request_ttfb_seconds", l, 2, &rows[i].s->ttfb);
    }

    family(o, "zephyr_request_duration_seconds", "histogram",
           "Total time of finished client requests, streams included.");
    for (size_t i = 0; i < n; i++) {
        l[0] = (struct lbl){"endpoint", rows[i].endpoint};
        l[1] = (struct lbl){"group", rows[i].group};
        histogram(o, "zephyr_request_duration_seconds", l, 2, &rows[i].s->total);
    }

    family(o, "zephyr_tokens_total", "counter",
           "Tokens of proxied traffic as the endpoint reported them, by model and type "
           "(input, output, cache_read, cache_creation).");
    for (size_t i = 0; i < n; i++) {
        const struct rseries *s = rows[i].s;
        l[0] = (struct lbl){"endpoint", rows[i].endpoint};
        l[1] = (struct lbl){"group", rows[i].group};
        for (size_t k = 0; k < s->n_models; k++) {
            l[2] = (struct lbl){"model", s->models[k].name};
            for (int t = 0; t < N_TOK; t++) {
                l[3] = (struct lbl){"type", tok_name[t]};
                sample_u64(o, "zephyr_tokens_total", l, 4, s->models[k].tokens[t]);
            }
        }
    }
}

static void render_checks(struct out *o, const struct metrics *m, const struct erow *rows, size_t n)
{
    struct lbl l[3];

    family(o, "zephyr_retries_total", "counter",
           "Failed attempts that were retried on another endpoint, by the endpoint that failed "
           "and why.");
    for (size_t i = 0; i < n; i++) {
        l[0] = (struct lbl){"endpoint", rows[i].endpoint};
        for (size_t k = 0; k < rows[i].s->n_reasons; k++) {
            l[1] = (struct lbl){"reason", rows[i].s->reasons[k].name};
            sample_u64(o, "zephyr_retries_total", l, 2, rows[i].s->reasons[k].n);
        }
    }

    family(o, "zephyr_usage_unreadable_total", "counter",
           "Replies whose token usage could not be read, by endpoint and why (encoding: a "
           "content coding other than gzip or deflate; corrupt: it does not inflate; too_large: "
           "more than the inflate cap).");
    for (size_t i = 0; i < n; i++) {
        l[0] = (struct lbl){"endpoint", rows[i].endpoint};
        for (size_t k = 0; k < rows[i].s->n_unreadable; k++) {
            l[1] = (struct lbl){"reason", rows[i].s->unreadable[k].name};
            sample_u64(o, "zephyr_usage_unreadable_total", l, 2, rows[i].s->unreadable[k].n);
        }
    }

    if (m->n_switches) {
        family(o, "zephyr_switches_total", "counter",
               "Switches of the current endpoint, by reason.");
        for (size_t k = 0; k < m->n_switches; k++) {
            l[0] = (struct lbl){"reason", m->switches[k].name};
            sample_u64(o, "zephyr_switches_total", l, 1, m->switches[k].n);
        }
    }

    family(o, "zephyr_checks_total", "counter", "Health checks run, by endpoint and result.");
    for (size_t i = 0; i < n; i++) {
        l[0] = (struct lbl){"endpoint", rows[i].endpoint};
        l[1] = (struct lbl){"result", "ok"};
        sample_u64(o, "zephyr_checks_total", l, 2, rows[i].s->checks_ok);
        l[1] = (struct lbl){"result", "failed"};
        sample_u64(o, "zephyr_checks_total", l, 2, rows[i].s->checks_failed);
    }

    family(o, "zephyr_check_duration_seconds", "histogram",
           "Latency of health checks that got an answer, by endpoint.");
    for (size_t i = 0; i < n; i++) {
        l[0] = (struct lbl){"endpoint", rows[i].endpoint};
        histogram(o, "zephyr_check_duration_seconds", l, 1, &rows[i].s->check);
    }
}

/* The families read from the state's snapshot at render time. */
static void render_state(struct out *o, const struct state_snapshot *st)
{
    static const enum ep_status statuses[] = {EP_UNKNOWN, EP_CHECKING,    EP_HEALTHY,
                                              EP_FAILED,  EP_AUTH_FAILED, EP_CHECK_ERROR};
    static const enum ep_circuit circuits[] = {CIRCUIT_CLOSED, CIRCUIT_OPEN, CIRCUIT_HALF_OPEN};
    struct lbl l[4];

#define EP_LABELS(i)                                      \
    do {                                                  \
        l[0] = (struct lbl){"endpoint", st->eps[i].name}; \
        l[1] = (struct lbl){"group", st->eps[i].group};   \
    } while (0)

    family(o, "zephyr_check_tokens_total", "counter",
           "Tokens spent on health checks, by endpoint and type.");
    for (size_t i = 0; i < st->n_eps; i++) {
        const struct usage *u = &st->eps[i].check_tokens;
        const long long v[N_TOK] = {u->input, u->output, u->cache_read, u->cache_creation};
        EP_LABELS(i);
        for (int t = 0; t < N_TOK; t++) {
            l[2] = (struct lbl){"type", tok_name[t]};
            sample_u64(o, "zephyr_check_tokens_total", l, 3, count_of(v[t]));
        }
    }

    family(o, "zephyr_endpoint_up", "gauge",
           "1 when the endpoint's last check passed (status healthy), else 0.");
    for (size_t i = 0; i < st->n_eps; i++) {
        EP_LABELS(i);
        sample_u64(o, "zephyr_endpoint_up", l, 2, st->eps[i].status == EP_HEALTHY);
    }

    family(o, "zephyr_endpoint_status", "gauge",
           "The endpoint's status as a set: 1 for the status it has, 0 for the others.");
    for (size_t i = 0; i < st->n_eps; i++) {
        EP_LABELS(i);
        for (size_t k = 0; k < sizeof statuses / sizeof statuses[0]; k++) {
            l[2] = (struct lbl){"status", ep_status_name(statuses[k])};
            sample_u64(o, "zephyr_endpoint_status", l, 3, st->eps[i].status == statuses[k]);
        }
    }

    family(o, "zephyr_endpoint_circuit_state", "gauge",
           "The endpoint's circuit breaker as a set: 1 for its state (closed, open, half_open).");
    for (size_t i = 0; i < st->n_eps; i++) {
        EP_LABELS(i);
        for (size_t k = 0; k < sizeof circuits / sizeof circuits[0]; k++) {
            l[2] = (struct lbl){"state", ep_circuit_name(circuits[k])};
            sample_u64(o, "zephyr_endpoint_circuit_state", l, 3, st->eps[i].circuit == circuits[k]);
        }
    }

    family(o, "zephyr_endpoint_active_connections", "gauge", "Requests in flight on the endpoint.");
    for (size_t i = 0; i < st->n_eps; i++) {
        EP_LABELS(i);
        sample_u64(o, "zephyr_endpoint_active_connections", l, 2, st->eps[i].active);
    }

    family(o, "zephyr_endpoint_check_latency_seconds", "gauge",
           "Latency of the endpoint's last passing check (absent while unknown).");
    for (size_t i = 0; i < st->n_eps; i++) {
        if (st->eps[i].latency_ms < 0)
            continue;
        EP_LABELS(i);
        sample_double(o, "zephyr_endpoint_check_latency_seconds", l, 2,
                      st->eps[i].latency_ms / 1000.0);
    }

    family(o, "zephyr_endpoint_smoothed_latency_seconds", "gauge",
           "Smoothed latency (checks and live time to first byte) that selection compares "
           "(absent while unknown).");
    for (size_t i = 0; i < st->n_eps; i++) {
        if (st->eps[i].smoothed_ms < 0)
            continue;
        EP_LABELS(i);
        sample_double(o, "zephyr_endpoint_smoothed_latency_seconds", l, 2,
                      st->eps[i].smoothed_ms / 1000.0);
    }

    family(o, "zephyr_endpoint_current", "gauge",
           "1 for the endpoint new requests go to, 0 for the others.");
    for (size_t i = 0; i < st->n_eps; i++) {
        EP_LABELS(i);
        sample_u64(o, "zephyr_endpoint_current", l, 2, st->eps[i].current);
    }
#undef EP_LABELS

    family(o, "zephyr_group_current", "gauge", "1 for the group in use, 0 for the others.");
    for (size_t g = 0; g < st->n_groups; g++) {
        l[0] = (struct lbl){"group", st->groups[g].name};
        sample_u64(o, "zephyr_group_current", l, 1, g == st->current_group);
    }

    family(o, "zephyr_manual_mode", "gauge",
           "1 when the current group is in manual mode (pinned), 0 in auto mode.");
    sample_u64(o, "zephyr_manual_mode", NULL, 0, st->manual ? 1 : 0);

    family(o, "zephyr_active_connections", "gauge", "Proxied requests in flight.");
    sample_u64(o, "zephyr_active_connections", NULL, 0, st->active);

    family(o, "zephyr_checks_paused", "gauge", "1 while periodic health checks are paused.");
    sample_u64(o, "zephyr_checks_paused", NULL, 0, st->checks_paused ? 1 : 0);

    family(o, "zephyr_check_interval_seconds", "gauge",
           "The check interval in effect (follows load with dynamic scaling).");
    sample_double(o, "zephyr_check_interval_seconds", NULL, 0, st->check_interval_s);

    if (st->has_config) {
        family(o, "zephyr_config_check_interval_seconds", "gauge",
               "health_check.interval_seconds from the configuration.");
        sample_u64(o, "zephyr_config_check_interval_seconds", NULL, 0,
                   (uint64_t)(st->config_interval_s > 0 ? st->config_interval_s : 0));
    }

    family(o, "zephyr_start_time_seconds", "gauge",
           "Start time of the proxy in seconds since the Unix epoch.");
    sample_double(o, "zephyr_start_time_seconds", NULL, 0, (double)st->start_wall_ms / 1000.0);
}

void metrics_render(const struct metrics *m, const struct state_snapshot *st,
                    const struct metrics_upstream *up, struct buf *out)
{
    struct out o = {.b = out, .full = false};
    buf_init(&o.line, (size_t)1 << 20);

    family(&o, "zephyr_build_info", "gauge", "Always 1; the version is a label.");
    const struct lbl v = {"version", ZEPHYR_VERSION};
    sample_u64(&o, "zephyr_build_info", &v, 1, 1);

    size_t nr, ne;
    struct rrow *rr = rrows(m, st, &nr);
    struct erow *er = erows(m, st, &ne);
    render_requests(&o, rr, nr);
    render_checks(&o, m, er, ne);
    free(rr);
    free(er);
    if (st)
        render_state(&o, st);
    if (up) {
        family(&o, "zephyr_upstream_connections", "gauge",
               "Connections of the built-in HTTP/1.1 client to http:// and https:// endpoints, "
               "by state (libcurl's are not counted).");
        struct lbl l[2] = {{"client", "builtin"}, {"state", "busy"}};
        sample_u64(&o, "zephyr_upstream_connections", l, 2,
                   up->open >= up->idle ? up->open - up->idle : 0);
        l[1].v = "idle";
        sample_u64(&o, "zephyr_upstream_connections", l, 2, up->idle);
        family(&o, "zephyr_upstream_tls_handshakes_total", "counter",
               "TLS handshakes of the built-in client, by whether the session was resumed.");
        const struct lbl r = {"resumed", "false"};
        sample_u64(&o, "zephyr_upstream_tls_handshakes_total", &r, 1, up->tls_full);
        const struct lbl rt = {"resumed", "true"};
        sample_u64(&o, "zephyr_upstream_tls_handshakes_total", &rt, 1, up->tls_resumed);
        family(&o, "zephyr_upstream_h2_connections", "gauge",
               "HTTP/2 connections of the built-in client (counted in "
               "zephyr_upstream_connections too).");
        sample_u64(&o, "zephyr_upstream_h2_connections", NULL, 0, up->h2_conns);
        family(&o, "zephyr_upstream_h2_streams", "gauge",
               "Requests in flight as streams of the built-in client's HTTP/2 connections.");
        sample_u64(&o, "zephyr_upstream_h2_streams", NULL, 0, up->h2_streams);
        family(&o, "zephyr_log_lines_dropped_total", "counter",
               "Log and request-log lines dropped because their output could not keep up.");
        sample_u64(&o, "zephyr_log_lines_dropped_total", NULL, 0, up->log_lines_dropped);
    }
    buf_release(&o.line);
}
