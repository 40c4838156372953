/*
 * status: see status.h.  Field names and meanings are documented in the
 * README ("/status"); a change here is a change of a public interface.
 */
#include "status.h"

#include "config.h"
#include "state.h"

/* /status lists this many sessions at most, most recently used first (the
 * counts cover them all). */
#define STATUS_SESSIONS_LISTED 50

static void add_ms_or_null(cJSON *o, const char *key, double v)
{
    if (v < 0)
        cJSON_AddNullToObject(o, key);
    else
        cJSON_AddNumberToObject(o, key, (double)(long long)(v * 10 + 0.5) / 10.0);
}

static cJSON *usage_json(const struct usage *u)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "input", (double)u->input);
    cJSON_AddNumberToObject(o, "output", (double)u->output);
    cJSON_AddNumberToObject(o, "cache_read", (double)u->cache_read);
    cJSON_AddNumberToObject(o, "cache_creation", (double)u->cache_creation);
    return o;
}

static cJSON *endpoint_ref(const struct state_snapshot *snap, int ep)
{
    if (ep < 0)
        return cJSON_CreateNull();
    const struct state_ep_snapshot *e = &snap->eps[ep];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", e->name);
    cJSON_AddStringToObject(o, "url", e->url);
    cJSON_AddStringToObject(o, "group", e->group);
    return o;
}

static cJSON *endpoint_json(const struct state_ep_snapshot *e, uint64_t now)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", e->name);
    cJSON_AddStringToObject(o, "url", e->url);
    cJSON_AddStringToObject(o, "group", e->group);
    cJSON_AddBoolToObject(o, "current", e->current);
    cJSON_AddBoolToObject(o, "available", e->usable);
    cJSON_AddStringToObject(o, "status", ep_status_name(e->status));
    /* What is wrong with the check itself (its model, body or path is not
     * served, the cli cannot run): null when nothing. */
    if (e->check_error[0])
        cJSON_AddStringToObject(o, "check_error", e->check_error);
    else
        cJSON_AddNullToObject(o, "check_error");
    if (e->models_warning[0])
        cJSON_AddStringToObject(o, "models_warning", e->models_warning);
    else
        cJSON_AddNullToObject(o, "models_warning");
    add_ms_or_null(o, "latency_ms", e->latency_ms);
    add_ms_or_null(o, "smoothed_latency_ms", e->smoothed_ms);
    add_ms_or_null(o, "ttfb_ms", e->ttfb_ms);
    if (e->checks)
        cJSON_AddNumberToObject(o, "success_rate", (double)e->checks_ok / e->checks);
    else
        cJSON_AddNullToObject(o, "success_rate");
    cJSON_AddNumberToObject(o, "checks", e->checks);
    if (e->error[0])
        cJSON_AddStringToObject(o, "error", e->error);
    else
        cJSON_AddNullToObject(o, "error");
    cJSON_AddNumberToObject(o, "active_connections", e->active);
    cJSON_AddNumberToObject(o, "sessions", (double)e->sessions);
    cJSON_AddNumberToObject(o, "requests", (double)e->requests);
    cJSON_AddNumberToObject(o, "failures", (double)e->failures);
    cJSON_AddStringToObject(o, "circuit", ep_circuit_name(e->circuit));
    if (e->circuit == CIRCUIT_OPEN && e->circuit_retry_ms > now)
        cJSON_AddNumberToObject(o, "circuit_retry_in_s",
                                (double)(e->circuit_retry_ms - now) / 1000.0);
    else
        cJSON_AddNullToObject(o, "circuit_retry_in_s");
    if (e->rest_until_ms > now)
        cJSON_AddNumberToObject(o, "rate_limited_for_s", (double)(e->rest_until_ms - now) / 1000.0);
    if (e->rest_until_ms > now) {
        cJSON *r = cJSON_AddObjectToObject(o, "rested");
        cJSON_AddStringToObject(r, "reason", e->rest_reason[0] ? e->rest_reason : "rate limited");
        cJSON_AddNumberToObject(r, "seconds_left", (double)(e->rest_until_ms - now) / 1000.0);
    } else {
        cJSON_AddNullToObject(o, "rested");
    }
    cJSON_AddItemToObject(o, "tokens_used", usage_json(&e->check_tokens));
    cJSON_AddItemToObject(o, "traffic_tokens", usage_json(&e->live_tokens));
    cJSON *hist = cJSON_AddArrayToObject(o, "history");
    /* Oldest first, so a sparkline reads left to right. */
    for (size_t k = 0; k < e->n_history; k++) {
        const struct ep_check *h = e->history[k];
        cJSON *ho = cJSON_CreateObject();
        cJSON_AddNumberToObject(ho, "t", (double)h->t_wall_ms);
        cJSON_AddBoolToObject(ho, "ok", h->ok);
        add_ms_or_null(ho, "latency_ms", h->latency_ms);
        if (h->error[0])
            cJSON_AddStringToObject(ho, "error", h->error);
        else
            cJSON_AddNullToObject(ho, "error");
        cJSON_AddItemToArray(hist, ho);
    }
    return o;
}

cJSON *status_render(const struct state_snapshot *snap, const struct status_info *info)
{
    const struct config *cfg = snap->cfg;
    uint64_t now = info->now_mono_ms;
    const struct state_group_snapshot *cg = &snap->groups[snap->current_group];
    int current = snap->current_ep;
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "version", info->version);
    cJSON_AddStringToObject(o, "listen", info->listen);
    /* Whole seconds, on purpose. */
    // NOLINTNEXTLINE(bugprone-integer-division)
    cJSON_AddNumberToObject(o, "uptime_s", (double)((now - snap->start_mono_ms) / 1000));
    /* When this process started (wall ms): a client that sees it change knows
     * the proxy restarted, which a reload (same process) does not do. */
    cJSON_AddNumberToObject(o, "started_at", (double)snap->start_wall_ms);
    cJSON_AddStringToObject(o, "mode", cg->policy.manual ? "manual" : "auto");
    cJSON_AddStringToObject(o, "current_group", cg->name);
    cJSON_AddItemToObject(o, "current_endpoint", endpoint_ref(snap, current));
    /* Where traffic goes if the current endpoint fails; kept warm. */
    cJSON_AddItemToObject(o, "next_endpoint", endpoint_ref(snap, snap->next_ep));
    if (cg->policy.manual && cg->policy.pinned >= 0)
        cJSON_AddStringToObject(o, "pinned_endpoint",
                                snap->eps[cg->first + (size_t)cg->policy.pinned].name);
    else
        cJSON_AddNullToObject(o, "pinned_endpoint");
    cJSON_AddBoolToObject(o, "pin_overridden", policy_pin_overridden(&cg->policy));
    if (cg->policy.pending >= 0) {
        cJSON *ps = cJSON_AddObjectToObject(o, "pending_switch");
        cJSON_AddStringToObject(ps, "to", snap->eps[cg->first + (size_t)cg->policy.pending].name);
        cJSON_AddStringToObject(ps, "reason", "faster");
        cJSON_AddNumberToObject(ps, "waiting_ms", (double)(now - cg->policy.pending_since_ms));
    } else {
        cJSON_AddNullToObject(o, "pending_switch");
    }
    cJSON_AddNumberToObject(o, "active_connections", (double)snap->active);
    cJSON_AddNumberToObject(o, "requests_total", (double)snap->requests_total);
    cJSON_AddNumberToObject(o, "retries_total", (double)snap->retries_total);
    cJSON_AddItemToObject(o, "traffic_tokens", usage_json(&snap->live_tokens));

    cJSON *ch = cJSON_AddObjectToObject(o, "checks");
    static const char *methods[] = {"messages", "count_tokens", "cli"};
    cJSON_AddStringToObject(ch, "method", methods[cfg->method]);
    cJSON_AddBoolToObject(ch, "paused", snap->checks_paused);
    cJSON_AddBoolToObject(ch, "running", snap->checks_running > 0);
    cJSON_AddNumberToObject(ch, "interval_s", snap->check_interval_s);
    if (snap->next_cycle_ms && !snap->checks_paused)
        cJSON_AddNumberToObject(
            ch, "next_check_in_s",
            snap->next_cycle_ms > now ? (double)(snap->next_cycle_ms - now) / 1000.0 : 0.0);
    else
        cJSON_AddNullToObject(ch, "next_check_in_s");
    cJSON_AddStringToObject(ch, "load_level", snap->load_level ? snap->load_level : "idle");
    cJSON_AddBoolToObject(ch, "dynamic_scaling", cfg->dynamic_scaling);
    struct usage spent = {0};
    for (size_t i = 0; i < snap->n_eps; i++) {
        spent.input += snap->eps[i].check_tokens.input;
        spent.output += snap->eps[i].check_tokens.output;
        spent.cache_read += snap->eps[i].check_tokens.cache_read;
        spent.cache_creation += snap->eps[i].check_tokens.cache_creation;
    }
    cJSON_AddItemToObject(ch, "tokens_used", usage_json(&spent));

    cJSON *groups = cJSON_AddArrayToObject(o, "groups");
    for (size_t g = 0; g < snap->n_groups; g++) {
        const struct state_group_snapshot *gr = &snap->groups[g];
        cJSON *go = cJSON_CreateObject();
        cJSON_AddStringToObject(go, "name", gr->name);
        cJSON_AddBoolToObject(go, "current", g == snap->current_group);
        cJSON_AddStringToObject(go, "auth",
                                !gr->cfg->token                ? "passthrough"
                                : gr->cfg->auth == AUTH_BEARER ? "bearer"
                                                               : "x-api-key");
        cJSON_AddStringToObject(go, "mode", gr->policy.manual ? "manual" : "auto");
        cJSON_AddItemToObject(
            go, "current_endpoint",
            endpoint_ref(
                snap, gr->policy.current < 0 ? -1 : (int)(gr->first + (size_t)gr->policy.current)));
        cJSON_AddNumberToObject(go, "endpoints", (double)gr->n);
        cJSON_AddBoolToObject(go, "panic", gr->panic);
        cJSON *fb = cJSON_AddArrayToObject(go, "fallback_groups");
        for (size_t k = 0; k < gr->cfg->n_fallback; k++)
            cJSON_AddItemToArray(fb, cJSON_CreateString(snap->groups[gr->cfg->fallback[k]].name));
        cJSON_AddNumberToObject(go, "fallback_served", (double)gr->fallback_served);
        cJSON_AddItemToArray(groups, go);
    }
    /* Whether traffic runs in fallback: the group that last served in
     * place of the current one, until the current group serves again. */
    cJSON *fo = cJSON_AddObjectToObject(o, "fallback");
    cJSON_AddBoolToObject(fo, "active", snap->fallback_group >= 0);
    if (snap->fallback_group >= 0)
        cJSON_AddStringToObject(fo, "group", snap->groups[snap->fallback_group].name);
    else
        cJSON_AddNullToObject(fo, "group");
    if (snap->fallback_last_ms)
        cJSON_AddNumberToObject(fo, "last_s_ago", (double)(now - snap->fallback_last_ms) / 1000.0);
    else
        cJSON_AddNullToObject(fo, "last_s_ago");
    cJSON_AddNumberToObject(fo, "requests", (double)snap->fallback_total);

    /* Sessions bound to each endpoint, and the most recently used of them
     * (short ids only: a hash, never the session id). */
    const struct state_session *ss = snap->sessions;
    size_t n_sess = snap->n_sessions;
    cJSON *so = cJSON_AddObjectToObject(o, "sessions");
    cJSON_AddBoolToObject(so, "enabled", cfg->sticky_sessions);
    cJSON_AddNumberToObject(so, "total", (double)n_sess);
    cJSON_AddNumberToObject(so, "switch_threshold_ms", cfg->session_switch_threshold_ms);
    cJSON *sl = cJSON_AddArrayToObject(so, "list");
    for (size_t k = 0; k < n_sess && k < STATUS_SESSIONS_LISTED; k++) {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "id", ss[k].id);
        cJSON_AddStringToObject(x, "endpoint", snap->eps[ss[k].ep].name);
        cJSON_AddStringToObject(x, "group", snap->eps[ss[k].ep].group);
        /* whole seconds */
        uint64_t age_s = now > ss[k].created_ms ? (now - ss[k].created_ms) / 1000u : 0;
        uint64_t idle_s = now > ss[k].used_ms ? (now - ss[k].used_ms) / 1000u : 0;
        cJSON_AddNumberToObject(x, "age_s", (double)age_s);
        cJSON_AddNumberToObject(x, "idle_s", (double)idle_s);
        cJSON_AddItemToArray(sl, x);
    }

    cJSON *eps = cJSON_AddArrayToObject(o, "endpoints");
    for (size_t i = 0; i < snap->n_eps; i++)
        cJSON_AddItemToArray(eps, endpoint_json(&snap->eps[i], now));

    cJSON *reqs = cJSON_AddArrayToObject(o, "requests");
    for (size_t k = 0; k < snap->active; k++) {
        const struct track *t = snap->tracks[k];
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "id", t->idstr);
        cJSON_AddStringToObject(r, "method", t->method);
        cJSON_AddStringToObject(r, "path", t->path);
        if (t->ep >= 0) {
            cJSON_AddStringToObject(r, "endpoint", snap->eps[t->ep].name);
            cJSON_AddStringToObject(r, "group", snap->eps[t->ep].group);
        } else {
            cJSON_AddNullToObject(r, "endpoint");
            cJSON_AddNullToObject(r, "group");
        }
        cJSON_AddStringToObject(r, "state", track_state_name(t->state));
        cJSON_AddNumberToObject(r, "age_ms", (double)(now - t->start_ms));
        cJSON_AddNumberToObject(r, "bytes_in", (double)t->bytes_in);
        cJSON_AddNumberToObject(r, "bytes_out", (double)t->bytes_out);
        cJSON_AddNumberToObject(r, "attempts", t->attempts);
        cJSON_AddItemToArray(reqs, r);
    }

    cJSON *evs = cJSON_AddArrayToObject(o, "events");
    /* Newest first. */
    for (size_t k = 0; k < snap->n_events; k++) {
        const struct event *ev = snap->events[k];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "t", (double)ev->t_wall_ms);
        cJSON_AddStringToObject(e, "kind", ev->kind);
        cJSON_AddStringToObject(e, "message", ev->message);
        cJSON_AddStringToObject(e, "from", ev->from);
        cJSON_AddStringToObject(e, "to", ev->to);
        cJSON_AddStringToObject(e, "reason", ev->reason);
        cJSON_AddItemToArray(evs, e);
    }

    cJSON *c = cJSON_AddObjectToObject(o, "config");
    cJSON_AddNumberToObject(c, "port", cfg->port);
    cJSON_AddStringToObject(c, "bind", cfg->bind);
    cJSON_AddNumberToObject(c, "switch_threshold_ms", cfg->switch_threshold_ms);
    cJSON_AddNumberToObject(c, "graceful_switch_timeout_ms", cfg->graceful_switch_timeout_ms);
    cJSON_AddNumberToObject(c, "session_switch_threshold_ms", cfg->session_switch_threshold_ms);
    cJSON_AddNumberToObject(c, "max_body_bytes", (double)cfg->max_body_bytes);
    cJSON_AddStringToObject(c, "ui_language", cfg->language ? cfg->language : "en");
    cJSON *hc = cJSON_AddObjectToObject(c, "health_check");
    cJSON_AddNumberToObject(hc, "interval_seconds", cfg->interval_s);
    cJSON_AddNumberToObject(hc, "min_interval_seconds", cfg->min_interval_s);
    cJSON_AddNumberToObject(hc, "max_interval_seconds", cfg->max_interval_s);
    cJSON_AddNumberToObject(hc, "timeout_seconds", cfg->timeout_s);
    cJSON_AddBoolToObject(hc, "dynamic_scaling", cfg->dynamic_scaling);
    cJSON_AddStringToObject(hc, "method", methods[cfg->method]);
    return o;
}
