/*
 * main: the command line.  Finds the configuration file, loads the .env
 * files, validates, and hands over to app_run() (the proxy), to the timing
 * test, or to the dashboard client.  Exit codes: 0 success, 1 a
 * configuration or start-up error, 2 a usage error.
 */
#include <curl/curl.h>
#include <getopt.h>
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
#include "dashboard.h"
#include "dotenv.h"
#include "health.h"
#include "log.h"
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
            if (upstream_uses_libcurl(up, e->url, !cfg->http_client_libcurl) &&
                curlso_load() != 0)
                why = xasprintf("endpoint %s needs libcurl (a proxy variable or "
                                "http_client = \"libcurl\"), which cannot be loaded; install "
                                "libcurl4\n", e->name);
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

int main(int argc, char **argv)
{
    main_no_core_dumps();
    enum {
        OPT_CONFIG = 256, OPT_PORT, OPT_BIND, OPT_LOG_LEVEL, OPT_CHECK, OPT_DASH, OPT_CONNECT,
        OPT_TIMING, OPT_CYCLES, OPT_INTERVAL, OPT_DEMO, OPT_VERSION, OPT_HELP,
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
    const char *config_arg = NULL, *port_arg = NULL, *bind_arg = NULL, *level_arg = NULL;
    const char *connect_arg = NULL;
    bool check = false, dash = false, timing = false, demo = false;
    int cycles = 3, interval = 0, port = -1;

    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case OPT_CONFIG: config_arg = optarg; break;
        case OPT_PORT: port_arg = optarg; break;
        case OPT_BIND: bind_arg = optarg; break;
        case OPT_LOG_LEVEL: level_arg = optarg; break;
        case OPT_CHECK: check = true; break;
        case OPT_DASH: dash = true; break;
        case OPT_CONNECT: connect_arg = optarg; break;
        case OPT_TIMING: timing = true; break;
        case OPT_CYCLES:
            if (parse_int("--cycles", optarg, 1, 1000, &cycles) != 0)
                return 2;
            break;
        case OPT_INTERVAL:
            if (parse_int("--interval", optarg, 1, 86400, &interval) != 0)
                return 2;
            break;
        case OPT_DEMO: demo = true; break;
        case OPT_VERSION:
            printf("claude-zephyr %s (%s)\n", ZEPHYR_VERSION, curl_version());
            return 0;
        case OPT_HELP:
            fputs(usage_text, stdout);
            return 0;
        default:
            if (optopt)
                fprintf(stderr, "claude-zephyr: option needs a value or is unknown: %s\n\n",
                        argv[optind - 1]);
            else
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
    if (port_arg && parse_int("--port", port_arg, 0, 65535, &port) != 0)
        return 2;
    if (level_arg && log_level_parse(level_arg) < 0) {
        fprintf(stderr, "claude-zephyr: --log-level: \"%s\" is not one of error, warn, info, "
                        "debug\n", level_arg);
        return 2;
    }
    if (connect_arg && !dash) {
        fprintf(stderr, "claude-zephyr: --connect goes with --dashboard\n");
        return 2;
    }
    /* libcurl is loaded and initialised by its first use (curlso.c), so a
     * configuration that never needs it never maps it; only the paths that
     * may have used it clean it up (app_run does its own). */

    if (dash && connect_arg) {
        const char *admin_key = getenv("ZEPHYR_ADMIN_KEY");
        if (admin_key && !config_secret_ok(admin_key)) {
            fprintf(stderr, "claude-zephyr: --connect: environment variable ZEPHYR_ADMIN_KEY "
                            "holds a control character (CR, LF, tab or another byte below "
                            "0x20, or DEL), which would break the header it is sent in; set "
                            "it to the admin key alone, on one line\n");
            return 1;
        }
        int rc = dashboard_run_remote(connect_arg, admin_key);
        curlso_cleanup();
        return rc;
    }

    char *path = demo ? NULL : find_config(config_arg);
    if (!path && (check || timing)) {
        fprintf(stderr, "claude-zephyr: no configuration file: looked for ./config.toml and "
                        "$XDG_CONFIG_HOME/claude-zephyr/config.toml; pass --config PATH "
                        "(config.example.toml is a start)\n");
        return 1;
    }
    if (!path && bind_arg && !host_is_loopback(bind_arg)) {
        /* The demo has no configuration file, so no access key: the same
         * rule as any configuration keeps it on loopback. */
        fprintf(stderr, "claude-zephyr: --bind %s: binding beyond loopback requires an access "
                        "key, and the demo has none; run the demo on 127.0.0.1, or use a "
                        "configuration file that sets server.access_key_env\n", bind_arg);
        return 1;
    }
    struct config *cfg = NULL;
    if (path) {
        if (config_arg && !file_exists(path)) {
            fprintf(stderr, "%s: cannot read the configuration file (no such file)\n", path);
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
        if (port >= 0)
            cfg->port = port;
        if (bind_arg) {
            free(cfg->bind);
            cfg->bind = xstrdup(bind_arg);
            if (!host_is_loopback(bind_arg) && !cfg->access_key) {
                fprintf(stderr, "claude-zephyr: --bind %s: binding beyond loopback requires an "
                                "access key; set server.access_key_env in %s\n", bind_arg, path);
                config_free(cfg);
                free(path);
                return 1;
            }
        }
    }

    if (check) {
        /* What start would refuse (libcurl that cannot be loaded) is an
         * error here too; what only degrades the checks is a warning. */
        char *curl_err = check_config_libcurl(cfg);
        char *warn = health_validate(cfg, true);
        if (warn)
            fprintf(stderr, "%s: warning: %s", path, warn);
        free(warn);
        if (curl_err) {
            fprintf(stderr, "%s: %s", path, curl_err);
            fprintf(stderr, "claude-zephyr: %s cannot start as it is\n", path);
            free(curl_err);
            config_free(cfg);
            free(path);
            curlso_cleanup();
            return 1;
        }
        char *sum = config_summary(cfg);
        printf("%s: OK\n%s", path, sum);
        free(sum);
        config_free(cfg);
        free(path);
        curlso_cleanup();
        return 0;
    }
    if (timing) {
        int rc = health_test_timing(cfg, cycles, interval > 0 ? interval : cfg->min_interval_s);
        config_free(cfg);
        free(path);
        curlso_cleanup();
        return rc;
    }

    if (cfg) {
        log_set_level((enum log_level)log_level_parse(level_arg ? level_arg : cfg->log_level));
        if (cfg->log_file && log_set_file(cfg->log_file) != 0) {
            fprintf(stderr, "claude-zephyr: server.log_file: cannot open %s for appending\n",
                    cfg->log_file);
            config_free(cfg);
            free(path);
            return 1;
        }
    } else if (level_arg) {
        log_set_level((enum log_level)log_level_parse(level_arg));
    }
    struct app_opts opts = {
        .port = port,
        .bind = bind_arg,
        .log_level = level_arg,
        .dashboard = dash,
        .demo = cfg == NULL,
        .config_path = path,
    };
    int rc = app_run(cfg, &opts);
    log_set_file(NULL);
    free(path);
    return rc;
}
