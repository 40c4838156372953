/*
 * main: the command line.  main() parses the arguments (main_parse_args),
 * loads the configuration with its .env files (main_load_config), and runs
 * one mode: the remote dashboard (main_run_remote), --check-config
 * (main_run_check), --test-timing (main_run_timing) or the proxy
 * (main_run_proxy, which hands over to app_run()).  Exit codes: 0 success,
 * 1 a configuration or start-up error, 2 a usage error.  Every error says
 * what to do next.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app.h"
#include "config.h"
#include "curlso.h"
#include "dotenv.h"
#include "health.h"
#include "log.h"
#include "remote.h"
#include "upstream.h"
#include "util.h"

static const char usage_text[] =
    "usage: claude-zephyr [options]\n"
    "\n"
    "A local proxy for the Anthropic (Claude) API that routes every request to the\n"
    "fastest healthy endpoint. Point clients at it: ANTHROPIC_BASE_URL=http://127.0.0.1:8080\n"
    "\n"
    "options:\n"
    "  --config PATH      configuration file (default ./config.toml, then\n"
    "                     $XDG_CONFIG_HOME/claude-zephyr/config.toml; without one the\n"
    "                     built-in demo runs)\n"
    "  --port N           listen on port N (overrides server.port; 0 picks a free port)\n"
    "  --bind ADDR        listen address (overrides server.bind)\n"
    "  --log-level LEVEL  error, warn, info or debug (overrides server.log_level)\n"
    "  --check-config     validate the configuration, print a summary, exit 0 or 1\n"
    "  --dashboard        full-screen terminal dashboard while the proxy runs\n"
    "  --connect URL      with --dashboard: watch a proxy already running at URL\n"
    "  --test-timing      run health-check cycles without serving and report their timing\n"
    "  --cycles N         with --test-timing: number of cycles (default 3)\n"
    "  --interval S       with --test-timing: seconds between cycles (default\n"
    "                     health_check.min_interval_seconds)\n"
    "  --demo             run the built-in demo even when a config file exists\n"
    "  --version          print the version and exit\n"
    "  --help             print this help and exit\n"
    "\n"
    "Tokens come from the environment variables the groups name (auth_token_env),\n"
    "or from a .env file beside the config file or in the current directory.\n"
    "Signals: SIGINT/SIGTERM finish in-flight requests (server.shutdown_grace_ms),\n"
    "a second one exits at once.\n";

static bool file_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* The config file to use: the given one, ./config.toml, or the XDG one;
 * NULL when none exists (demo). */
static char *find_config(const char *given)
{
    if (given)
        return xstrdup(given);
    if (file_exists("config.toml"))
        return xstrdup("config.toml");
    const char *xdg = getenv("XDG_CONFIG_HOME");
    const char *home = getenv("HOME");
    char *p = NULL;
    if (xdg && *xdg)
        p = xasprintf("%s/claude-zephyr/config.toml", xdg);
    else if (home && *home)
        p = xasprintf("%s/.config/claude-zephyr/config.toml", home);
    if (p && file_exists(p))
        return p;
    free(p);
    return NULL;
}

/* For --check-config: NULL when every endpoint that needs libcurl (the
 * same rule as start: https://, a proxy variable, http_client = "libcurl")
 * can have it loaded, else a malloc'd line naming the endpoint. */
static char *check_config_libcurl(const struct config *cfg)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct upstream *up = upstream_new(&loop, !cfg->http_client_libcurl);
    char *why = NULL;
    for (size_t g = 0; g < cfg->n_groups && !why; g++) {
        for (size_t i = 0; i < cfg->groups[g].n_endpoints && !why; i++) {
            const struct cfg_endpoint *e = &cfg->groups[g].endpoints[i];
            if (upstream_uses_libcurl(up, e->url, !cfg->http_client_libcurl) && curlso_load() != 0)
                why = xasprintf("endpoint %s needs libcurl (a proxy variable or "
                                "http_client = \"libcurl\"), which cannot be loaded; install "
                                "libcurl4\n",
                                e->name);
        }
    }
    upstream_free(up);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return why;
}

static int parse_int(const char *flag, const char *v, int lo, int hi, int *out)
{
    char *end;
    long n = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0' || n < lo || n > hi) {
        fprintf(stderr, "claude-zephyr: %s: \"%s\" is not a number from %d to %d\n", flag, v, lo,
                hi);
        return -1;
    }
    *out = (int)n;
    return 0;
}

/*
 * The process holds the upstream tokens and the access and admin keys in
 * memory, so a core dump would write them to disk where the dump goes.
 * No core file (RLIMIT_CORE 0, soft and hard, so it cannot be raised
 * again), and not dumpable: that also refuses ptrace attach and /proc/PID/mem
 * to other processes of the same user.  A child the proxy spawns (the
 * Claude CLI for checks) becomes dumpable again at exec, as usual.
 */
static void main_no_core_dumps(void)
{
    struct rlimit none = {0, 0};
    (void)setrlimit(RLIMIT_CORE, &none);
    (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

/* What the command line asked for. */
struct main_opts {
    const char *config;   /* borrows argv; --config, or NULL */
    const char *port_arg; /* borrows argv; --port, or NULL */
    const char *bind;     /* borrows argv; --bind, or NULL */
    const char *level;    /* borrows argv; --log-level, or NULL */
    const char *connect;  /* borrows argv; --connect, or NULL */
    bool check, dash, timing, demo;
    int cycles, interval, port;
};

/* Fills o from argv.  Returns -1 to go on, or the exit code when there is
 * nothing more to do (--help, --version, a usage error: 2). */
static int main_parse_args(int argc, char **argv, struct main_opts *o)
{
    enum {
        OPT_CONFIG = 256,
        OPT_PORT,
        OPT_BIND,
        OPT_LOG_LEVEL,
        OPT_CHECK,
        OPT_DASH,
        OPT_CONNECT,
        OPT_TIMING,
        OPT_CYCLES,
        OPT_INTERVAL,
        OPT_DEMO,
        OPT_VERSION,
        OPT_HELP,
    };
    static const struct option longopts[] = {
        {"config", required_argument, NULL, OPT_CONFIG},
        {"port", required_argument, NULL, OPT_PORT},
        {"bind", required_argument, NULL, OPT_BIND},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"check-config", no_argument, NULL, OPT_CHECK},
        {"dashboard", no_argument, NULL, OPT_DASH},
        {"connect", required_argument, NULL, OPT_CONNECT},
        {"test-timing", no_argument, NULL, OPT_TIMING},
        {"cycles", required_argument, NULL, OPT_CYCLES},
        {"interval", required_argument, NULL, OPT_INTERVAL},
        {"demo", no_argument, NULL, OPT_DEMO},
        {"version", no_argument, NULL, OPT_VERSION},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };

    memset(o, 0, sizeof *o);
    o->cycles = 3;
    o->port = -1;
    opterr = 0;
    int ch;
    /* The leading ':' makes a missing value ':' rather than '?'. */
    while ((ch = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        switch (ch) {
        case OPT_CONFIG: o->config = optarg; break;
        case OPT_PORT: o->port_arg = optarg; break;
        case OPT_BIND: o->bind = optarg; break;
        case OPT_LOG_LEVEL: o->level = optarg; break;
        case OPT_CHECK: o->check = true; break;
        case OPT_DASH: o->dash = true; break;
        case OPT_CONNECT: o->connect = optarg; break;
        case OPT_TIMING: o->timing = true; break;
        case OPT_CYCLES:
            if (parse_int("--cycles", optarg, 1, 1000, &o->cycles) != 0)
                return 2;
            break;
        case OPT_INTERVAL:
            if (parse_int("--interval", optarg, 1, 86400, &o->interval) != 0)
                return 2;
            break;
        case OPT_DEMO: o->demo = true; break;
        case OPT_VERSION: {
            /* libcurl is not loaded for this: it is loaded on demand. */
            const char *cv = curlso_version();
            printf("claude-zephyr %s (%s)\n", ZEPHYR_VERSION,
                   cv ? cv : "libcurl: loaded on demand");
            return 0;
        }
        case OPT_HELP: fputs(usage_text, stdout); return 0;
        case ':':
            /* One line: the whole help would bury what is wrong. */
            fprintf(stderr,
                    "claude-zephyr: %s needs a value (usage: %s VALUE; --help lists "
                    "every option)\n",
                    argv[optind - 1], argv[optind - 1]);
            return 2;
        default:
            fprintf(stderr, "claude-zephyr: unknown option: %s\n\n", argv[optind - 1]);
            fputs(usage_text, stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "claude-zephyr: unexpected argument: %s\n\n", argv[optind]);
        fputs(usage_text, stderr);
        return 2;
    }
    if (o->port_arg && parse_int("--port", o->port_arg, 0, 65535, &o->port) != 0)
        return 2;
    if (o->level && log_level_parse(o->level) < 0) {
        fprintf(stderr,
                "claude-zephyr: --log-level: \"%s\" is not one of error, warn, info, "
                "debug\n",
                o->level);
        return 2;
    }
    if (o->connect && !o->dash) {
        fprintf(stderr, "claude-zephyr: --connect goes with --dashboard\n");
        return 2;
    }
    return -1;
}

/* The --connect mode's process: its loop, its signals, the remote view. */
struct main_remote {
    uv_signal_t sigint, sigterm, sighup;
    struct remote *r; /* owns */
    bool ending;
};

static void main_remote_end(void *ud)
{
    struct main_remote *m = ud;
    if (m->ending)
        return;
    m->ending = true;
    remote_free(m->r);
    m->r = NULL;
    uv_close((uv_handle_t *)&m->sigint, NULL);
    uv_close((uv_handle_t *)&m->sigterm, NULL);
    uv_close((uv_handle_t *)&m->sighup, NULL);
}

static void on_remote_signal(uv_signal_t *s, int signum)
{
    (void)signum;
    main_remote_end(s->data);
}

/* --dashboard --connect URL: watch a proxy that runs elsewhere. */
static int main_run_remote(const struct main_opts *o)
{
    /* Both keys go into request headers: CR LF in one would add lines. */
    static const char *const keys[] = {"ZEPHYR_ADMIN_KEY", "ZEPHYR_ACCESS_KEY"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *v = getenv(keys[i]);
        if (v && !config_secret_ok(v)) {
            fprintf(stderr,
                    "claude-zephyr: --connect: environment variable %s holds a "
                    "control character (CR, LF, tab or another byte below 0x20, or "
                    "DEL), which would break the header it is sent in; set it to the "
                    "key alone, on one line\n",
                    keys[i]);
            return 1;
        }
    }
    const char *admin_key = getenv("ZEPHYR_ADMIN_KEY");
    uv_loop_t loop;
    struct main_remote m;
    int rc = 0;
    memset(&m, 0, sizeof m);
    uv_loop_init(&loop);
    /* Signals first, so that ncurses does not install its own handlers. */
    uv_signal_init(&loop, &m.sigint);
    uv_signal_init(&loop, &m.sigterm);
    uv_signal_init(&loop, &m.sighup);
    m.sigint.data = m.sigterm.data = m.sighup.data = &m;
    uv_signal_start(&m.sigint, on_remote_signal, SIGINT);
    uv_signal_start(&m.sigterm, on_remote_signal, SIGTERM);
    uv_signal_start(&m.sighup, on_remote_signal, SIGHUP);
    m.r = remote_new(&loop, o->connect, admin_key, main_remote_end, &m);
    if (!m.r) {
        rc = 1;
        main_remote_end(&m);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    curlso_cleanup();
    return rc;
}

/*
 * Finds and loads the configuration: *path and *cfg stay NULL for the
 * demo.  Applies the .env files first (the configuration names variables
 * they may set), then --port and --bind.  Returns -1 to go on, or the exit
 * code (1) after saying what is wrong and what to do.
 */
static int main_load_config(const struct main_opts *o, char **path_out, struct config **cfg_out)
{
    char *path = o->demo ? NULL : find_config(o->config);
    struct config *cfg = NULL;

    *path_out = NULL;
    *cfg_out = NULL;
    if (!path && (o->check || o->timing)) {
        fprintf(stderr, "claude-zephyr: no configuration file: looked for ./config.toml and "
                        "$XDG_CONFIG_HOME/claude-zephyr/config.toml; pass --config PATH "
                        "(config.example.toml is a start; --demo runs without one)\n");
        return 1;
    }
    if (!path && o->bind && !host_is_loopback(o->bind)) {
        /* The demo has no configuration file, so no access key: the same
         * rule as any configuration keeps it on loopback. */
        fprintf(stderr,
                "claude-zephyr: --bind %s: binding beyond loopback requires an access "
                "key, and the demo has none; run the demo on 127.0.0.1, or use a "
                "configuration file that sets server.access_key_env\n",
                o->bind);
        return 1;
    }
    if (!path)
        return -1;
    if (o->config && !file_exists(path)) {
        fprintf(stderr,
                "%s: cannot read the configuration file (no such file); copy "
                "config.example.toml there to start one, or run with --demo to try "
                "the proxy without one\n",
                path);
        free(path);
        return 1;
    }
    char *env_errors = NULL;
    if (dotenv_load_for_config(path, &env_errors) != 0) {
        fputs(env_errors ? env_errors : ".env: cannot be read\n", stderr);
        free(env_errors);
        free(path);
        return 1;
    }
    char *errors = NULL;
    if (config_load(path, &cfg, &errors) != 0) {
        fprintf(stderr, "%s", errors ? errors : "configuration error\n");
        if (errors && errors[0] && errors[strlen(errors) - 1] != '\n')
            fputc('\n', stderr);
        fprintf(stderr, "claude-zephyr: %s has errors; nothing started\n", path);
        free(errors);
        free(path);
        return 1;
    }
    if (o->port >= 0)
        cfg->port = o->port;
    if (o->bind) {
        free(cfg->bind);
        cfg->bind = xstrdup(o->bind);
        if (!host_is_loopback(o->bind) && !cfg->access_key) {
            fprintf(stderr,
                    "claude-zephyr: --bind %s: binding beyond loopback requires an "
                    "access key; set server.access_key_env in %s\n",
                    o->bind, path);
            config_free(cfg);
            free(path);
            return 1;
        }
    }
    *path_out = path;
    *cfg_out = cfg;
    return -1;
}

/* --check-config: what start would refuse (libcurl that cannot be loaded)
 * is an error here too; what only degrades the checks is a warning. */
static int main_run_check(const char *path, const struct config *cfg)
{
    char *curl_err = check_config_libcurl(cfg);
    char *warn = health_validate(cfg, true);
    if (warn)
        fprintf(stderr, "%s: warning: %s", path, warn);
    free(warn);
    if (curl_err) {
        fprintf(stderr, "%s: %s", path, curl_err);
        fprintf(stderr, "claude-zephyr: %s cannot start as it is\n", path);
        free(curl_err);
        curlso_cleanup();
        return 1;
    }
    char *sum = config_summary(cfg);
    printf("%s: OK\n%s", path, sum);
    free(sum);
    curlso_cleanup();
    return 0;
}

/* --test-timing: check cycles without serving. */
static int main_run_timing(const struct main_opts *o, const struct config *cfg)
{
    int rc =
        health_test_timing(cfg, o->cycles, o->interval > 0 ? o->interval : cfg->min_interval_s);
    curlso_cleanup();
    return rc;
}

/* The proxy (cfg NULL: the built-in demo); takes over cfg. */
static int main_run_proxy(const struct main_opts *o, const char *path, struct config *cfg)
{
    if (cfg) {
        log_set_level((enum log_level)log_level_parse(o->level ? o->level : cfg->log_level));
        if (cfg->log_file && log_set_file(cfg->log_file) != 0) {
            fprintf(stderr,
                    "claude-zephyr: server.log_file: cannot open %s for appending; "
                    "check that its directory exists and is writable\n",
                    cfg->log_file);
            config_free(cfg);
            return 1;
        }
    } else if (o->level) {
        log_set_level((enum log_level)log_level_parse(o->level));
    }
    struct app_opts opts = {
        .port = o->port,
        .bind = o->bind,
        .log_level = o->level,
        .dashboard = o->dash,
        .demo = cfg == NULL,
        .config_path = path,
    };
    int rc = app_run(cfg, &opts);
    log_set_file(NULL);
    return rc;
}

int main(int argc, char **argv)
{
    struct main_opts o;
    char *path = NULL;
    struct config *cfg = NULL;
    int rc;

    main_no_core_dumps();
    config_set_file_probe(config_file_check);
    rc = main_parse_args(argc, argv, &o);
    if (rc >= 0)
        return rc;
    /* libcurl is loaded and initialised by its first use (curlso.c), so a
     * configuration that never needs it never maps it; only the modes that
     * may have used it clean it up (app_run does its own). */
    if (o.dash && o.connect)
        return main_run_remote(&o);
    rc = main_load_config(&o, &path, &cfg);
    if (rc >= 0)
        return rc;
    if (o.check) {
        rc = main_run_check(path, cfg);
        config_free(cfg);
    } else if (o.timing) {
        rc = main_run_timing(&o, cfg);
        config_free(cfg);
    } else {
        rc = main_run_proxy(&o, path, cfg);
    }
    free(path);
    return rc;
}
