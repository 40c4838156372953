/*
 * demo: see demo.h.  The demo's timeline, one step every DEMO_STEP_MS:
 * the latencies of the three endpoints rotate (so the fastest one changes
 * and the proxy switches once the gain passes the threshold), and every
 * third step the endpoint that is currently fastest answers 529 overloaded
 * for one step (so the proxy fails over and later sees it recover).
 */
#include "demo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fakeup.h"
#include "log.h"
#include "util.h"

#define DEMO_N 3
#define DEMO_STEP_MS 40000

static const char *demo_names[DEMO_N] = {"relay-tokyo", "relay-frankfurt", "relay-virginia"};
static const int demo_latency[DEMO_N] = {80, 250, 500};

struct demo {
    struct fakeup *ups[DEMO_N]; /* owns */
    uv_timer_t timer;
    unsigned step;
    int overloaded; /* index answering 529, or -1 */
    int pending_close;
};

static void demo_set_latency(struct demo *d, int i, int ms)
{
    char v[16];
    snprintf(v, sizeof v, "%d", ms);
    fakeup_configure(d->ups[i], "latency_ms", v);
}

static void on_step(uv_timer_t *t)
{
    struct demo *d = t->data;
    d->step++;
    if (d->overloaded >= 0) {
        fakeup_configure(d->ups[d->overloaded], "status", "200");
        log_info("demo: %s is back to normal", demo_names[d->overloaded]);
        d->overloaded = -1;
    }
    int fastest = 0;
    for (int i = 0; i < DEMO_N; i++) {
        int lat = demo_latency[(i + (int)d->step) % DEMO_N];
        demo_set_latency(d, i, lat);
        if (lat == demo_latency[0])
            fastest = i;
    }
    log_info("demo: latencies rotated; %s is now the fastest", demo_names[fastest]);
    if (d->step % 3 == 0) {
        fakeup_configure(d->ups[fastest], "status", "529");
        d->overloaded = fastest;
        log_info("demo: %s is now overloaded (answers 529)", demo_names[fastest]);
    }
}

/* The demo has no configuration file to hold ui.language: like a --connect
 * dashboard it takes $ZEPHYR_UI_LANGUAGE, else the locale. */
static const char *demo_language(void)
{
    const char *vars[] = {"ZEPHYR_UI_LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return strncmp(v, "zh", 2) == 0 ? "zh" : "en";
    }
    return "en";
}

struct demo *demo_start(uv_loop_t *loop, struct config **cfg)
{
    struct demo *d = xcalloc(1, sizeof *d);
    d->overloaded = -1;
    struct buf toml;
    buf_init(&toml, SIZE_MAX);
    buf_appendf(&toml,
                "[server]\nport = 8080\nswitch_threshold_ms = 50\n"
                "graceful_switch_timeout_ms = 10000\n\n"
                "[health_check]\ninterval_seconds = 10\ntimeout_seconds = 5\n"
                "method = \"messages\"\n\n[ui]\nlanguage = \"%s\"\n\n"
                "[[groups]]\nname = \"demo\"\ndefault = true\nendpoints = [\n",
                demo_language());
    for (int i = 0; i < DEMO_N; i++) {
        struct fakeup_opts o;
        fakeup_opts_init(&o);
        snprintf(o.name, sizeof o.name, "%s", demo_names[i]);
        char v[16];
        snprintf(v, sizeof v, "%d", demo_latency[i]);
        fakeup_opts_set(&o, "latency_ms", v);
        fakeup_opts_set(&o, "gap_ms", "60");
        fakeup_opts_set(&o, "events", "12");
        d->ups[i] = fakeup_new(loop, &o);
        if (!d->ups[i]) {
            buf_release(&toml);
            demo_free(d);
            return NULL;
        }
        buf_appendf(&toml, "  { name = \"%s\", url = \"http://127.0.0.1:%d\" },\n", demo_names[i],
                    fakeup_port(d->ups[i]));
    }
    buf_appendf(&toml, "]\n");
    char *errors = NULL;
    if (config_load_string("(demo)", toml.data, toml.len, cfg, &errors) != 0) {
        fprintf(stderr, "claude-zephyr: demo configuration rejected:\n%s\n", errors);
        free(errors);
        buf_release(&toml);
        demo_free(d);
        return NULL;
    }
    buf_release(&toml);
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;
    uv_timer_start(&d->timer, on_step, DEMO_STEP_MS, DEMO_STEP_MS);
    return d;
}

void demo_announce(struct demo *d, const char *listen)
{
    (void)d;
    log_info("demo mode: three simulated endpoints run inside the "
             "proxy (%s %d ms, %s %d ms, %s %d ms); their speeds rotate every %d s",
             demo_names[0], demo_latency[0], demo_names[1], demo_latency[1], demo_names[2],
             demo_latency[2], DEMO_STEP_MS / 1000);
    log_info("try: curl -N http://%s/v1/messages -H 'content-type: application/json' "
             "-d '{\"model\":\"demo\",\"max_tokens\":50,\"stream\":true,\"messages\":"
             "[{\"role\":\"user\",\"content\":\"hi\"}]}'   and   curl http://%s/status",
             listen, listen);
    log_info("to use real endpoints: cp config.example.toml config.toml, edit it, and put "
             "your keys in .env (see .env.example)");
}

static void on_demo_closed(void *ud)
{
    struct demo *d = ud;
    if (--d->pending_close == 0)
        free(d);
}

static void on_timer_closed(uv_handle_t *h)
{
    on_demo_closed(h->data);
}

void demo_free(struct demo *d)
{
    if (!d)
        return;
    d->pending_close = 1;
    for (int i = 0; i < DEMO_N; i++) {
        if (d->ups[i]) {
            d->pending_close++;
            fakeup_close(d->ups[i], on_demo_closed, d);
        }
    }
    if (d->timer.loop) {
        d->pending_close++;
        uv_close((uv_handle_t *)&d->timer, on_timer_closed);
    }
    on_demo_closed(d);
}
