/*
 * fake-upstream: the command-line wrapper around src/fake/fakeup.c used by the
 * tests and the benchmarks.  Parses the flags, starts one fake server, prints
 * "PORT <n>" once it listens and runs until SIGINT or SIGTERM, which close
 * everything and exit 0.  Contract: docs/INTERFACES.md, "The fake upstream".
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "fake/fakeup.h"

struct app {
    uv_signal_t sigint, sigterm;
    struct fakeup *f; /* owns until the first signal */
    int signals_closed;
};

static void usage(FILE *out)
{
    fputs("usage: fake-upstream [--port N] [--bind ADDR] [--name NAME] [knobs...]\n"
          "knobs (each takes a value):\n"
          "  --latency-ms N    delay before the response headers (0)\n"
          "  --status N        status for /v1/messages (200)\n"
          "  --retry-after N   send retry-after: N when >= 0 (-1)\n"
          "  --token T         require x-api-key: T or authorization: Bearer T (\"\")\n"
          "  --events N        content_block_delta events / words (3)\n"
          "  --gap-ms N        delay before each delta event (0)\n"
          "  --close-after N   cut the connection after N deltas when >= 0 (-1)\n"
          "  --error-after N   send event: error after N deltas when >= 0 (-1)\n"
          "  --hang [BOOL]     accept requests and never answer (false)\n"
          "  --body-bytes N    pad the non-stream reply text to N bytes (0)\n"
          "  --models LIST     models served: \"\" any, real, or a comma-separated list (\"\")\n"
          "Prints \"PORT <n>\" on stdout once listening; exits 0 on SIGINT/SIGTERM.\n"
          "See docs/INTERFACES.md for the /_fake/ paths and x-fake-* headers.\n",
          out);
}

static void on_signal_closed(uv_handle_t *h)
{
    (void)h;
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct app *app = s->data;
    (void)signum;
    fakeup_close(app->f, NULL, NULL);
    app->f = NULL;
    uv_close((uv_handle_t *)&app->sigint, on_signal_closed);
    uv_close((uv_handle_t *)&app->sigterm, on_signal_closed);
}

int main(int argc, char **argv)
{
    struct fakeup_opts o;
    fakeup_opts_init(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strncmp(a, "--", 2) != 0 || !a[2]) {
            fprintf(stderr, "fake-upstream: unexpected argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
        /* Accept both "--knob value" and "--knob=value". */
        char name[64];
        const char *value;
        const char *eq = strchr(a + 2, '=');
        if (eq) {
            snprintf(name, sizeof name, "%.*s", (int)(eq - (a + 2)), a + 2);
            value = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a + 2);
            /* --hang alone means --hang true. */
            if (strcmp(name, "hang") == 0 &&
                (i + 1 >= argc ||
                 fakeup_opts_set(&(struct fakeup_opts){0}, "hang", argv[i + 1]) < 0)) {
                o.hang = true;
                continue;
            }
            if (i + 1 >= argc) {
                fprintf(stderr, "fake-upstream: %s needs a value\n", a);
                usage(stderr);
                return 2;
            }
            value = argv[++i];
        }
        if (fakeup_opts_set(&o, name, value) < 0) {
            fprintf(stderr, "fake-upstream: unknown flag or bad value: --%s %s\n", name, value);
            usage(stderr);
            return 2;
        }
    }

    signal(SIGPIPE, SIG_IGN);
    uv_loop_t *loop = uv_default_loop();
    int err = 0;
    struct app app = {0};
    app.f = fakeup_new_err(loop, &o, &err);
    if (!app.f) {
        fprintf(stderr, "fake-upstream: cannot listen on %s:%d: %s\n", o.bind, o.port,
                uv_strerror(err));
        uv_run(loop, UV_RUN_DEFAULT);
        uv_loop_close(loop);
        return 1;
    }
    uv_signal_init(loop, &app.sigint);
    uv_signal_init(loop, &app.sigterm);
    app.sigint.data = app.sigterm.data = &app;
    uv_signal_start(&app.sigint, on_signal, SIGINT);
    uv_signal_start(&app.sigterm, on_signal, SIGTERM);

    printf("PORT %d\n", fakeup_port(app.f));
    fflush(stdout);

    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    return 0;
}
