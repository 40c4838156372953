/*
 * Unit tests for config: defaults, every kind of error with its file:line
 * and key, all errors at once, secrets never echoed, did-you-mean, both
 * endpoint forms, the summary, and every prefix of a valid file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "assert_text.h"
#include "config.h"

#define PATH "cfg.toml"
/* A token that looks real: accepted, and must never show up in any message. */
#define REAL_TOKEN "sk-ant-api03-Zq7RkT2vW9mB4nH8sL1pX6cJ3dF0gY5u-QwErTy_uIoP"

/* Minimal valid groups section, appended to tests that are about something else. */
#define GROUP_OK \
    "[[groups]]\nname = \"g\"\nendpoints = [{ url = \"https://e.example\", name = \"e\" }]\n"

/* Loads text that must be valid. */
static struct config *load_ok(const char *text)
{
    struct config *cfg = NULL;
    char *errors = NULL;
    int rc = config_load_string(PATH, text, strlen(text), &cfg, &errors);
    if (rc != 0)
        print_error("unexpected errors:\n%s\n", errors ? errors : "(null)");
    assert_int_equal(rc, 0);
    assert_non_null(cfg);
    assert_null(errors);
    return cfg;
}

/* Loads text that must fail; returns the error text (caller frees). */
static char *load_err(const char *text)
{
    struct config *cfg = (struct config *)1;
    char *errors = NULL;
    int rc = config_load_string(PATH, text, strlen(text), &cfg, &errors);
    assert_int_equal(rc, -1);
    assert_null(cfg);
    assert_non_null(errors);
    return errors;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static int setup_env(void **state)
{
    (void)state;
    setenv("ZT_MAIN", REAL_TOKEN, 1);
    setenv("ZT_RELAY", "cr_0f3a9b27c4d845e6a1b2c3d4e5f60718", 1);
    unsetenv("ZT_UNSET");
    setenv("ZT_EMPTY", "", 1);
    return 0;
}

/* check_model per group and per endpoint; the most specific one wins. */
static void test_check_model_keys(void **state)
{
    (void)state;
    struct config *cfg = load_ok(
        "[health_check]\nmodel = \"claude-sonnet-4-6\"\n"
        "[[groups]]\nname = \"a\"\ncheck_model = \"relay-haiku\"\n"
        "endpoints = [{ url = \"https://a.example\", name = \"a1\" },\n"
        "             { url = \"https://b.example\", name = \"a2\", check_model = \"glm-4\" }]\n"
        "[[groups]]\nname = \"b\"\nendpoints = [{ url = \"https://c.example\", name = \"b1\" }]\n");
    const struct cfg_group *a = &cfg->groups[0], *b = &cfg->groups[1];
    assert_string_equal(config_check_model_for(cfg, a, &a->endpoints[0]), "relay-haiku");
    assert_string_equal(config_check_model_for(cfg, a, &a->endpoints[1]), "glm-4");
    assert_string_equal(config_check_model_for(cfg, b, &b->endpoints[0]), "claude-sonnet-4-6");
    config_free(cfg);

    char *e =
        load_err("[[groups]]\nname = \"g\"\ncheck_model = \"\"\n"
                 "endpoints = [{ url = \"https://e.example\", name = \"e\", check_model = 3 }]\n");
    assert_has(e, "cfg.toml:3: groups[0].check_model: is empty");
    assert_has(e, "groups[0].endpoints[0].check_model: ");
    free(e);
}

static void test_defaults_minimal(void **state)
{
    (void)state;
    struct config *cfg = load_ok(GROUP_OK);
    assert_string_equal(cfg->path, PATH);
    assert_string_equal(cfg->bind, "127.0.0.1");
    assert_int_equal(cfg->port, 8080);
    assert_int_equal(cfg->switch_threshold_ms, 50);
    assert_int_equal(cfg->graceful_switch_timeout_ms, 30000);
    assert_true(cfg->max_body_bytes == 32LL * 1024 * 1024);
    assert_int_equal(cfg->connect_timeout_ms, 10000);
    assert_int_equal(cfg->header_timeout_ms, 300000);
    assert_int_equal(cfg->idle_timeout_ms, 300000);
    assert_int_equal(cfg->client_header_timeout_ms, 30000);
    assert_int_equal(cfg->keepalive_timeout_ms, 120000);
    assert_int_equal(cfg->max_connections, 1024);
    assert_int_equal(cfg->shutdown_grace_ms, 30000);
    assert_null(cfg->access_key_env);
    assert_null(cfg->access_key);
    assert_null(cfg->admin_key_env);
    assert_null(cfg->admin_key);
    assert_string_equal(cfg->log_level, "info");
    assert_null(cfg->log_file);
    assert_true(cfg->sticky_sessions);
    assert_true(cfg->http2);
    assert_int_equal(cfg->session_ttl_s, 3600);
    assert_int_equal(cfg->interval_s, 120);
    assert_int_equal(cfg->min_interval_s, 30);
    assert_int_equal(cfg->max_interval_s, 3600);
    assert_int_equal(cfg->timeout_s, 15);
    assert_false(cfg->dynamic_scaling);
    assert_string_equal(cfg->claude_binary_path, "claude");
    assert_int_equal(cfg->method, CHECK_MESSAGES);
    /* claude-3-5-haiku-latest was retired on 2026-02-19: a default that the
     * real API answers with 404 would fail every check of every user. */
    assert_string_equal(cfg->check_model, "claude-haiku-4-5");
    assert_string_equal(cfg->check_prompt, "hi");
    assert_int_equal(cfg->n_cli_args, 0);
    assert_int_equal(cfg->max_concurrent_checks, 4);
    assert_int_equal(cfg->failed_interval_s, 15);
    assert_string_equal(cfg->language, "en");

    assert_int_equal(cfg->n_groups, 1);
    const struct cfg_group *g = &cfg->groups[0];
    assert_string_equal(g->name, "g");
    assert_null(g->auth_token_env); /* pass-through */
    assert_null(g->token);
    assert_int_equal(g->auth, AUTH_X_API_KEY);
    assert_false(g->is_default);
    assert_int_equal(g->n_endpoints, 1);
    assert_string_equal(g->endpoints[0].name, "e");
    assert_string_equal(g->endpoints[0].url, "https://e.example");
    assert_int_equal(g->endpoints[0].line, 3);
    assert_int_equal(config_default_group(cfg), 0);
    config_free(cfg);
}

static void test_every_key_set(void **state)
{
    (void)state;
    const char *text = "[server]\n"
                       "port = 0\n"
                       "bind = \"::1\"\n"
                       "switch_threshold_ms = 0\n"
                       "graceful_switch_timeout_ms = 1000\n"
                       "max_body_mb = 2\n"
                       "connect_timeout_ms = 11\n"
                       "header_timeout_ms = 12\n"
                       "idle_timeout_ms = 13\n"
                       "client_header_timeout_ms = 14\n"
                       "keepalive_timeout_ms = 15\n"
                       "max_connections = 16\n"
                       "shutdown_grace_ms = 0\n"
                       "access_key_env = \"ZT_MAIN\"\n"
                       "admin_key_env = \"ZT_RELAY\"\n"
                       "log_level = \"DEBUG\"\n"
                       "log_file = \"/tmp/z.log\"\n"
                       "sticky_sessions = false\n"
                       "http2 = false\n"
                       "session_ttl_s = 60\n"
                       "[[groups]]\n"
                       "name = \"main\"\n"
                       "auth_token_env = \"ZT_MAIN\"\n"
                       "auth_header = \"bearer\"\n"
                       "endpoints = [{ url = \"http://127.0.0.1:9000///\", name = \"local\" }]\n"
                       "[[groups]]\n"
                       "name = \"relay\"\n"
                       "default = true\n"
                       "auth_token_env = \"ZT_RELAY\"\n"
                       "endpoints = [{ url = \"https://relay.example/api/\", name = \"r\" }]\n"
                       "[health_check]\n"
                       "interval_seconds = 60\n"
                       "min_interval_seconds = 20\n"
                       "max_interval_seconds = 600\n"
                       "timeout_seconds = 10\n"
                       "dynamic_scaling = true\n"
                       "claude_binary_path = \"/opt/claude\"\n"
                       "method = \"cli\"\n"
                       "model = \"m\"\n"
                       "prompt = \"p\"\n"
                       "cli_args = [\"--verbose\", \"-x\"]\n"
                       "max_concurrent = 2\n"
                       "failed_interval_seconds = 5\n"
                       "[ui]\n"
                       "language = \"zh\"\n";
    struct config *cfg = load_ok(text);
    assert_int_equal(cfg->port, 0);
    assert_string_equal(cfg->bind, "::1");
    assert_int_equal(cfg->switch_threshold_ms, 0);
    assert_int_equal(cfg->graceful_switch_timeout_ms, 1000);
    assert_true(cfg->max_body_bytes == 2LL * 1024 * 1024);
    assert_int_equal(cfg->connect_timeout_ms, 11);
    assert_int_equal(cfg->header_timeout_ms, 12);
    assert_int_equal(cfg->idle_timeout_ms, 13);
    assert_int_equal(cfg->client_header_timeout_ms, 14);
    assert_int_equal(cfg->keepalive_timeout_ms, 15);
    assert_int_equal(cfg->max_connections, 16);
    assert_int_equal(cfg->shutdown_grace_ms, 0);
    assert_string_equal(cfg->access_key_env, "ZT_MAIN");
    assert_string_equal(cfg->access_key, REAL_TOKEN);
    assert_string_equal(cfg->admin_key_env, "ZT_RELAY");
    assert_string_equal(cfg->log_level, "debug");
    assert_string_equal(cfg->log_file, "/tmp/z.log");
    assert_false(cfg->sticky_sessions);
    assert_false(cfg->http2);
    assert_int_equal(cfg->session_ttl_s, 60);
    assert_int_equal(cfg->n_groups, 2);
    assert_string_equal(cfg->groups[0].token, REAL_TOKEN);
    assert_int_equal(cfg->groups[0].auth, AUTH_BEARER);
    assert_string_equal(cfg->groups[0].endpoints[0].url, "http://127.0.0.1:9000");
    assert_string_equal(cfg->groups[1].endpoints[0].url, "https://relay.example/api");
    assert_int_equal(cfg->groups[1].auth, AUTH_X_API_KEY);
    assert_true(cfg->groups[1].is_default);
    assert_int_equal(config_default_group(cfg), 1);
    assert_int_equal(cfg->interval_s, 60);
    assert_int_equal(cfg->min_interval_s, 20);
    assert_int_equal(cfg->max_interval_s, 600);
    assert_int_equal(cfg->timeout_s, 10);
    assert_true(cfg->dynamic_scaling);
    assert_string_equal(cfg->claude_binary_path, "/opt/claude");
    assert_int_equal(cfg->method, CHECK_CLI);
    assert_string_equal(cfg->check_model, "m");
    assert_string_equal(cfg->check_prompt, "p");
    assert_int_equal(cfg->n_cli_args, 2);
    assert_string_equal(cfg->cli_args[0], "--verbose");
    assert_string_equal(cfg->cli_args[1], "-x");
    assert_int_equal(cfg->max_concurrent_checks, 2);
    assert_int_equal(cfg->failed_interval_s, 5);
    assert_string_equal(cfg->language, "zh");
    config_free(cfg);
}

static void test_syntax_error(void **state)
{
    (void)state;
    char *e = load_err("# comment\n[server\nport = 1\n");
    assert_has(e, "cfg.toml:2:8: toml: ");
    assert_has(e, "expected ']'");
    assert_int_equal(count_lines(e), 1);
    free(e);

    e = load_err(GROUP_OK "[server]\nport = 1\nport = 2\n");
    assert_has(e, "cfg.toml:6:");
    free(e);

    /* Table headers that trip toml++ 3.3's own assertions (upstream #294, #301). */
    static const char *const headers[] = {"[&\n", "[[=\n", "[[[1]]]\n", "[[[a]]\n",
                                          "[[ = [{ url = \"https://a\", name = \"a\" }]\n"};
    for (size_t k = 0; k < sizeof headers / sizeof headers[0]; k++) {
        char text[256];
        snprintf(text, sizeof text, GROUP_OK "%s", headers[k]);
        e = load_err(text);
        assert_has(e, "cfg.toml:4");
        assert_has(e, ": toml: ");
        assert_int_equal(count_lines(e), 1);
        free(e);
    }

    /* Code points that toml++ 3.3's Unicode classifiers mishandle: still a clean error. */
    e = load_err(GROUP_OK "t = 1999-12-31T23:59:5\xcd\xa5\n");
    assert_has(e, "cfg.toml:4:");
    free(e);
    e = load_err(GROUP_OK "x = 1\xc3\xa9\ny = 2 \xe2\xb4\x80\n");
    assert_has(e, "cfg.toml:4:");
    free(e);
    /* Non-ASCII text where TOML allows it is fine. */
    struct config *cfg =
        load_ok("# caf\xc3\xa9 \xcd\xa5\n[[groups]]\nname = \"caf\xc3\xa9\"\n"
                "endpoints = [{ url = \"https://e.example\", name = \"\xcd\xa5\" }]\n");
    assert_string_equal(cfg->groups[0].name, "caf\xc3\xa9");
    config_free(cfg);

    e = load_err("a = \"x\\u0000y\"\n");
    assert_has(e, "cfg.toml:1:");
    assert_has(e, "NUL");
    free(e);
}

static void test_type_errors(void **state)
{
    (void)state;
    char *e = load_err("[server]\nport = \"abc\"\nsticky_sessions = \"yes\"\nbind = 5\n"
                       "max_body_mb = 1.5\n" GROUP_OK "[health_check]\ncli_args = \"-x\"\n"
                       "model = []\n[ui]\nlanguage = true\n");
    assert_has(e, "cfg.toml:2: server.port: expected an integer, got string \"abc\"");
    assert_has(e, "cfg.toml:3: server.sticky_sessions: expected true or false, got string \"yes\"");
    assert_has(e, "cfg.toml:4: server.bind: expected a string, got integer 5");
    assert_has(e, "cfg.toml:5: server.max_body_mb: expected an integer, got float 1.5");
    assert_has(e, "cfg.toml:10: health_check.cli_args: expected an array of strings, got string");
    assert_has(e, "cfg.toml:11: health_check.model: expected a string, got an array");
    assert_has(e, "cfg.toml:13: ui.language: expected a string, got boolean true");
    assert_int_equal(count_lines(e), 7);
    free(e);

    e = load_err("[server]\nhttp2 = \"no\"\n" GROUP_OK);
    assert_has(e, "cfg.toml:2: server.http2: expected true or false, got string \"no\"");
    free(e);

    e = load_err("server = 1\n" GROUP_OK);
    assert_has(e, "cfg.toml:1: server: expected a table ([server]), got integer 1");
    free(e);

    e = load_err(GROUP_OK "[health_check]\ncli_args = [\n  \"ok\",\n  7,\n]\n");
    assert_has(e, "cfg.toml:7: health_check.cli_args[1]: expected a string, got integer 7");
    free(e);
}

static void test_range_errors(void **state)
{
    (void)state;
    char *e = load_err("[server]\nport = 70000\nconnect_timeout_ms = -5\nidle_timeout_ms = 0\n"
                       "max_body_mb = 0\nmax_connections = -1\n" GROUP_OK
                       "[health_check]\ninterval_seconds = -1\ntimeout_seconds = 0\n"
                       "max_concurrent = 0\n");
    assert_has(e, "cfg.toml:2: server.port: 70000 is out of range; use a whole number from 0 to "
                  "65535 (0 picks a free port)");
    assert_has(e, "cfg.toml:3: server.connect_timeout_ms: -5 is out of range");
    assert_has(e, "cfg.toml:4: server.idle_timeout_ms: 0 is out of range");
    assert_has(e, "cfg.toml:5: server.max_body_mb: 0 is out of range");
    assert_has(e, "cfg.toml:6: server.max_connections: -1 is out of range");
    assert_has(e, "cfg.toml:11: health_check.interval_seconds: -1 is out of range");
    assert_has(e, "cfg.toml:12: health_check.timeout_seconds: 0 is out of range");
    assert_has(e, "cfg.toml:13: health_check.max_concurrent: 0 is out of range");
    /* A bad interval does not also produce a timeout-vs-interval message. */
    assert_lacks(e, "is not below");
    assert_int_equal(count_lines(e), 8);
    free(e);

    struct config *cfg = load_ok("[server]\nport = 0\n" GROUP_OK);
    assert_int_equal(cfg->port, 0);
    config_free(cfg);
}

static void test_enum_errors(void **state)
{
    (void)state;
    char *e = load_err("[server]\nlog_level = \"verbose\"\n" GROUP_OK
                       "auth_header = \"basic\"\n[health_check]\nmethod = \"ping\"\n"
                       "[ui]\nlanguage = \"fr\"\n");
    assert_has(e, "cfg.toml:2: server.log_level: \"verbose\" is not valid; use one of \"error\", "
                  "\"warn\", \"info\", \"debug\"");
    assert_has(e, "cfg.toml:6: groups[0].auth_header: \"basic\" is not valid; use one of "
                  "\"x-api-key\", \"bearer\"");
    assert_has(e, "cfg.toml:8: health_check.method: \"ping\" is not valid; use one of "
                  "\"messages\", \"count_tokens\", \"cli\"");
    assert_has(e, "cfg.toml:10: ui.language: \"fr\" is not valid; use one of \"en\", \"zh\"");
    free(e);
}

static void test_unknown_keys(void **state)
{
    (void)state;
    char *e = load_err("[server]\nprot = 8080\nbnid = \"x\"\n"
                       "[[groups]]\nname = \"g\"\nauth_tokn_env = \"X\"\n"
                       "endpoints = [{ url = \"https://a.example\", nmae = \"a\" }]\n"
                       "[health_check]\ntimeout = 5\nport = 1\nsomething_else = 1\n"
                       "[sever]\nx = 1\n");
    assert_has(e, "cfg.toml:2: server.prot: unknown key; did you mean \"port\"?");
    assert_has(e, "cfg.toml:3: server.bnid: unknown key; did you mean \"bind\"?");
    assert_has(e, "cfg.toml:6: groups[0].auth_tokn_env: unknown key; did you mean "
                  "\"auth_token_env\"?");
    assert_has(e, "cfg.toml:7: groups[0].endpoints[0].nmae: unknown key; did you mean \"name\"?");
    assert_has(e, "cfg.toml:9: health_check.timeout: unknown key; did you mean "
                  "\"timeout_seconds\"?");
    assert_has(e, "cfg.toml:10: health_check.port: unknown key here; \"port\" belongs in "
                  "[server]");
    assert_has(e, "cfg.toml:11: health_check.something_else: unknown key; valid keys here are: "
                  "interval_seconds, ");
    assert_has(e, "cfg.toml:12: sever: unknown key; did you mean \"server\"?");
    /* The endpoint without a valid name is reported as well. */
    assert_has(e, "cfg.toml:7: groups[0].endpoints[0].name: missing");
    free(e);
}

static void test_legacy_auth_token(void **state)
{
    (void)state;
    char *e = load_err(GROUP_OK "[health_check]\ninterval_seconds = 120\n"
                                "auth_token = \"" REAL_TOKEN "\"\n");
    assert_has(e, "cfg.toml:6: health_check.auth_token: tokens are not read from the config "
                  "file; put the token in the environment or in .env");
    assert_has(e, "auth_token_env");
    assert_lacks(e, REAL_TOKEN);
    assert_lacks(e, "Zq7RkT2v");
    free(e);

    e = load_err(GROUP_OK "auth_token = \"your-anthropic-auth-token-here\"\n");
    assert_has(e, "cfg.toml:4: groups[0].auth_token: tokens are not read from the config file");
    assert_lacks(e, "your-anthropic");
    free(e);
}

static void test_no_groups(void **state)
{
    (void)state;
    char *e = load_err("");
    assert_has(e, "cfg.toml:1: groups: no [[groups]] defined; add at least one [[groups]]");
    free(e);

    e = load_err("[server]\nport = 1\n");
    assert_has(e, "cfg.toml:1: groups: no [[groups]] defined");
    free(e);

    e = load_err("groups = []\n");
    assert_has(e, "cfg.toml:1: groups: no [[groups]] defined");
    free(e);

    e = load_err("[groups]\nname = \"g\"\n");
    assert_has(e, "cfg.toml:1: groups: expected an array of tables; write [[groups]] (double "
                  "brackets)");
    free(e);

    e = load_err("groups = [1]\n");
    assert_has(e, "cfg.toml:1: groups[0]: expected a table ([[groups]]), got integer 1");
    free(e);
}

static void test_group_errors(void **state)
{
    (void)state;
    char *e = load_err("[[groups]]\nname = \"a\"\n"
                       "[[groups]]\nname = \"b\"\nendpoints = []\n"
                       "[[groups]]\nendpoints = [{ url = \"https://x.example\", name = \"x\" }]\n"
                       "[[groups]]\nname = \"\"\nendpoints = \"https://y.example\"\n");
    assert_has(e, "cfg.toml:1: groups[0].endpoints: group \"a\" has no endpoints; add endpoints "
                  "= [{ url = ");
    assert_has(e, "cfg.toml:5: groups[1].endpoints: group \"b\" has no endpoints");
    assert_has(e, "cfg.toml:6: groups[2].name: missing; give the group a name");
    assert_has(e, "cfg.toml:9: groups[3].name: is empty");
    assert_has(e, "cfg.toml:10: groups[3].endpoints: expected an array of tables");
    assert_int_equal(count_lines(e), 5);
    free(e);

    e = load_err("[[groups]]\nname = \"g\"\n"
                 "endpoints = [\n  \"https://a.example\",\n]\n");
    assert_has(e, "cfg.toml:4: groups[0].endpoints[0]: expected a table like { url = ");
    free(e);
}

static void test_duplicates(void **state)
{
    (void)state;
    char *e = load_err("[[groups]]\nname = \"main\"\n"
                       "endpoints = [\n"
                       "  { url = \"https://a.example\", name = \"a\" },\n"
                       "  { url = \"https://b.example\", name = \"a\" },\n"
                       "]\n"
                       "[[groups]]\nname = \"main\"\n"
                       "[[groups.endpoints]]\nurl = \"https://c.example\"\nname = \"a\"\n");
    assert_has(e, "cfg.toml:5: groups[0].endpoints[1].name: duplicate endpoint name \"a\" (first "
                  "used at line 4); endpoint names must be unique across all groups");
    assert_has(e, "cfg.toml:8: groups[1].name: duplicate group name \"main\" (also groups[0])");
    assert_has(e, "cfg.toml:11: groups[1].endpoints[0].name: duplicate endpoint name \"a\" "
                  "(first used at line 4)");
    assert_int_equal(count_lines(e), 3);
    free(e);
}

static void test_endpoint_errors(void **state)
{
    (void)state;
    char *e = load_err("[[groups]]\nname = \"g\"\nendpoints = [\n"
                       "  { url = \"ftp://a.example\", name = \"a\" },\n"
                       "  { url = \"https://\", name = \"b\" },\n"
                       "  { url = \"api.example.com\", name = \"c\" },\n"
                       "  { url = \"https://u:hunter2pass@d.example\", name = \"d\" },\n"
                       "  { url = \"https://e.example?x=1\", name = \"e\" },\n"
                       "  { url = \"http://f.example:0\", name = \"f\" },\n"
                       "  { url = \"http://g.example:abc\", name = \"g\" },\n"
                       "  { url = \"https://h.example\" },\n"
                       "  { url = \"https://i.example\", name = \"\" },\n"
                       "  { name = \"j\" },\n"
                       "  { url = \"https://:443\", name = \"k\" },\n"
                       "]\n");
    assert_has(e, "cfg.toml:4: groups[0].endpoints[0].url: \"ftp://a.example\" is not an http:// "
                  "or https:// URL; write e.g. \"https://api.anthropic.com\"");
    assert_has(e, "cfg.toml:5: groups[0].endpoints[1].url: \"https://\" has no host");
    assert_has(e, "cfg.toml:6: groups[0].endpoints[2].url: \"api.example.com\" is not an http://");
    assert_has(e, "cfg.toml:7: groups[0].endpoints[3].url: the URL must not carry credentials");
    assert_lacks(e, "hunter2pass");
    assert_has(e, "cfg.toml:8: groups[0].endpoints[4].url: \"https://e.example?x=1\" must not "
                  "have a query");
    assert_has(e, "cfg.toml:9: groups[0].endpoints[5].url: \"http://f.example:0\" has a port "
                  "outside 1..65535");
    assert_has(e, "cfg.toml:10: groups[0].endpoints[6].url: \"http://g.example:abc\" has a port "
                  "that is not a number");
    assert_has(e, "cfg.toml:11: groups[0].endpoints[7].name: missing; every endpoint needs a "
                  "unique name");
    assert_has(e, "cfg.toml:12: groups[0].endpoints[8].name: is empty");
    assert_has(e, "cfg.toml:13: groups[0].endpoints[9].url: missing; every endpoint needs url = ");
    assert_has(e, "cfg.toml:14: groups[0].endpoints[10].url: \"https://:443\" has no host");
    assert_int_equal(count_lines(e), 11);
    free(e);

    struct config *cfg = load_ok("[[groups]]\nname = \"g\"\nendpoints = [\n"
                                 "  { url = \"HTTPS://A.example/\", name = \"a\" },\n"
                                 "  { url = \"http://[::1]:8080/v//\", name = \"b\" },\n"
                                 "]\n");
    assert_string_equal(cfg->groups[0].endpoints[0].url, "HTTPS://A.example");
    assert_string_equal(cfg->groups[0].endpoints[1].url, "http://[::1]:8080/v");
    config_free(cfg);
}

static void test_two_defaults(void **state)
{
    (void)state;
    char *e = load_err("[[groups]]\nname = \"a\"\ndefault = true\n"
                       "endpoints = [{ url = \"https://a.example\", name = \"a\" }]\n"
                       "[[groups]]\nname = \"b\"\ndefault = true\n"
                       "endpoints = [{ url = \"https://b.example\", name = \"b\" }]\n");
    assert_has(e, "cfg.toml:7: groups[1].default: groups[0] is already the default (line 3); set "
                  "default = true on one group only");
    assert_int_equal(count_lines(e), 1);
    free(e);

    struct config *cfg = load_ok("[[groups]]\nname = \"a\"\ndefault = false\n"
                                 "endpoints = [{ url = \"https://a.example\", name = \"a\" }]\n"
                                 "[[groups]]\nname = \"b\"\ndefault = true\n"
                                 "endpoints = [{ url = \"https://b.example\", name = \"b\" }]\n");
    assert_int_equal(config_default_group(cfg), 1);
    config_free(cfg);
    assert_int_equal(config_default_group(NULL), 0);
}

static void test_token_missing(void **state)
{
    (void)state;
    char *e = load_err(GROUP_OK "auth_token_env = \"ZT_UNSET\"\n"
                                "[[groups]]\nname = \"h\"\nauth_token_env = \"ZT_EMPTY\"\n"
                                "endpoints = [{ url = \"https://h.example\", name = \"h\" }]\n");
    assert_has(e, "cfg.toml:4: groups[0].auth_token_env: environment variable ZT_UNSET is not set "
                  "or is empty; set it to the token in the environment or in .env beside the "
                  "config file");
    assert_has(e, "cfg.toml:7: groups[1].auth_token_env: environment variable ZT_EMPTY is not set");
    free(e);

    /* The token itself pasted where the variable's name belongs: never echoed. */
    e = load_err(GROUP_OK "auth_token_env = \"" REAL_TOKEN "\"\n");
    assert_has(e, "cfg.toml:4: groups[0].auth_token_env: not a valid environment variable name");
    assert_lacks(e, "Zq7RkT2v");
    free(e);

    e = load_err(GROUP_OK "auth_token_env = 5\n");
    assert_has(e, "cfg.toml:4: groups[0].auth_token_env: expected a string");
    free(e);
}

static void test_placeholder_tokens(void **state)
{
    (void)state;
    static const char *const placeholders[] = {
        "your-anthropic-auth-token-here",
        "your_token",
        "paste-token-here",
        "changeme",
        "CHANGEME",
        "xxx",
        "xxxxxxxxxxxxxxxx",
        "sk-ant-xxxx",
        "sk-ant-api03-xxxxxxxxxxxxxxxxxxxx",
        "sk-ant-api03-...",
        "<your token>",
        "<token>",
        "TODO",
        "todo: fill in",
        "placeholder",
        "my-placeholder-value",
        "...",
        "sk-...",
        "${ANTHROPIC_TOKEN}",
        "replace-me",
        "****",
    };
    for (size_t k = 0; k < sizeof placeholders / sizeof placeholders[0]; k++) {
        setenv("ZT_PH", placeholders[k], 1);
        char *e = load_err(GROUP_OK "auth_token_env = \"ZT_PH\"\n");
        assert_has(e, "cfg.toml:4: groups[0].auth_token_env: environment variable ZT_PH holds a "
                      "placeholder, not a real token; put the real token in the environment or in "
                      ".env");
        /* "placeholder" is a word of the message itself. */
        if (strlen(placeholders[k]) > 3 && strcmp(placeholders[k], "placeholder") != 0)
            assert_lacks(e, placeholders[k]);
        assert_int_equal(count_lines(e), 1);
        free(e);
    }

    static const char *const real[] = {
        REAL_TOKEN,
        "cr_0f3a9b27c4d845e6a1b2c3d4e5f60718",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl",
        "test-token-1",
        "sk-proj-4f9aXy",
    };
    for (size_t k = 0; k < sizeof real / sizeof real[0]; k++) {
        setenv("ZT_PH", real[k], 1);
        struct config *cfg = load_ok(GROUP_OK "auth_token_env = \"ZT_PH\"\n");
        assert_string_equal(cfg->groups[0].token, real[k]);
        config_free(cfg);
    }
    unsetenv("ZT_PH");
}

/* A secret with a control character would add header lines of its own to
 * every upstream request (CR LF) or break the one it is in: each secret is
 * refused at its file:line, by variable name, and the value is never shown. */
static void test_control_characters_in_secrets(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "tok-Q9zr\r\nx-evil: 1", "tok-Q9zr\nx-evil: 1", "tok-Q9zr\rx-evil", "tok-Q9zr\tmore",
        "tok-Q9zr\x01",          "tok-Q9zr\x7f",        "\r\nx-evil: 1",
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        setenv("ZT_CTL", bad[k], 1);
        char *e = load_err(GROUP_OK "auth_token_env = \"ZT_CTL\"\n");
        assert_has(e, "cfg.toml:4: groups[0].auth_token_env: environment variable ZT_CTL holds a "
                      "control character");
        assert_lacks(e, "tok-Q9zr");
        assert_lacks(e, "x-evil");
        assert_int_equal(count_lines(e), 1);
        free(e);

        e = load_err(
            "[server]\naccess_key_env = \"ZT_CTL\"\nadmin_key_env = \"ZT_CTL\"\n" GROUP_OK);
        assert_has(e, "cfg.toml:2: server.access_key_env: environment variable ZT_CTL holds a "
                      "control character");
        assert_has(e, "cfg.toml:3: server.admin_key_env: environment variable ZT_CTL holds a "
                      "control character");
        assert_lacks(e, "tok-Q9zr");
        assert_lacks(e, "x-evil");
        assert_int_equal(count_lines(e), 2);
        free(e);
    }
    unsetenv("ZT_CTL");

    assert_true(config_secret_ok(REAL_TOKEN));
    assert_true(config_secret_ok("with space and ~ and \x80 bytes"));
    assert_false(config_secret_ok("a\rb"));
    assert_false(config_secret_ok("a\nb"));
    assert_false(config_secret_ok("\x7f"));
}

static void test_secrets_never_in_errors(void **state)
{
    (void)state;
    /* Tokens are set, other things are wrong: no message carries a secret. */
    setenv("ZT_ACCESS", "access-Secret-9f8e7d6c5b4a", 1);
    char *e = load_err("[server]\nport = \"" REAL_TOKEN "\"\naccess_key_env = \"ZT_ACCESS\"\n"
                       "admin_key_env = \"ZT_ACCESS\"\nbind = \"0.0.0.0\"\nprot = 1\n"
                       "[[groups]]\nname = \"g\"\nauth_token_env = \"ZT_MAIN\"\n"
                       "endpoints = [{ url = \"ftp://x\", name = \"x\" }]\n");
    assert_has(e, "cfg.toml:2: server.port: expected an integer, got a string");
    assert_lacks(e, REAL_TOKEN);
    assert_lacks(e, "sk-ant-api03");
    assert_lacks(e, "access-Secret");
    free(e);

    struct config *cfg = load_ok("[server]\nbind = \"0.0.0.0\"\naccess_key_env = \"ZT_ACCESS\"\n"
                                 "[[groups]]\nname = \"g\"\nauth_token_env = \"ZT_MAIN\"\n"
                                 "endpoints = [{ url = \"https://x.example\", name = \"x\" }]\n");
    assert_string_equal(cfg->access_key, "access-Secret-9f8e7d6c5b4a");
    char *s = config_summary(cfg);
    assert_lacks(s, REAL_TOKEN);
    assert_lacks(s, "Zq7RkT2v");
    assert_lacks(s, "access-Secret");
    assert_has(s, "$ZT_MAIN (set)");
    assert_has(s, "$ZT_ACCESS (set)");
    free(s);
    config_free(cfg);
    unsetenv("ZT_ACCESS");
}

static void test_bind_and_keys(void **state)
{
    (void)state;
    char *e = load_err("[server]\nbind = \"0.0.0.0\"\n" GROUP_OK);
    assert_has(e, "cfg.toml:2: server.bind: binding to \"0.0.0.0\" reaches beyond loopback, which "
                  "requires server.access_key_env");
    free(e);

    e = load_err("[server]\nbind = \"not a host\"\n" GROUP_OK);
    assert_has(e, "cfg.toml:2: server.bind: \"not a host\" is not an IP address or host name");
    free(e);

    static const char *const loopback[] = {"127.0.0.1", "127.1.2.3", "::1",
                                           "localhost", "LOCALHOST", "::ffff:127.0.0.1"};
    for (size_t k = 0; k < sizeof loopback / sizeof loopback[0]; k++) {
        char text[512];
        snprintf(text, sizeof text, "[server]\nbind = \"%s\"\n" GROUP_OK, loopback[k]);
        struct config *cfg = load_ok(text);
        assert_string_equal(cfg->bind, loopback[k]);
        config_free(cfg);
    }

    e = load_err("[server]\nbind = \"::\"\naccess_key_env = \"ZT_UNSET\"\n"
                 "admin_key_env = \"ZT_EMPTY\"\n" GROUP_OK);
    assert_has(e, "cfg.toml:3: server.access_key_env: environment variable ZT_UNSET is not set or "
                  "is empty; set it to the access key in the environment or in .env");
    assert_has(e, "cfg.toml:4: server.admin_key_env: environment variable ZT_EMPTY is not set");
    /* The access key is configured (only its variable is missing): one message, not two. */
    assert_lacks(e, "server.bind");
    assert_int_equal(count_lines(e), 2);
    free(e);

    setenv("ZT_PH", "changeme", 1);
    e = load_err("[server]\naccess_key_env = \"ZT_PH\"\n" GROUP_OK);
    assert_has(e, "cfg.toml:2: server.access_key_env: environment variable ZT_PH holds a "
                  "placeholder, not a real access key");
    free(e);
    unsetenv("ZT_PH");
}

/* [cluster]: the URL parsed, its defaults, and no password in the file. */
static void test_cluster(void **state)
{
    (void)state;
    struct config *cfg = load_ok(GROUP_OK);
    assert_null(cfg->cluster_url);
    assert_string_equal(cfg->cluster_key_prefix, "zephyr:");
    config_free(cfg);

    cfg = load_ok(GROUP_OK "[cluster]\nredis_url = \"redis://10.0.0.5\"\n");
    assert_string_equal(cfg->cluster_host, "10.0.0.5");
    assert_int_equal(cfg->cluster_port, 6379);
    assert_int_equal(cfg->cluster_db, 0);
    assert_string_equal(cfg->cluster_fleet, "default");
    assert_int_equal(cfg->cluster_lease_ms, 10000);
    assert_null(cfg->cluster_password);
    config_free(cfg);

    cfg = load_ok(GROUP_OK
                  "[cluster]\nredis_url = \"redis://[::1]:7000/3\"\n"
                  "redis_password_env = \"ZT_RELAY\"\nkey_prefix = \"zz:\"\nfleet = \"team\"\n"
                  "lease_ms = 1500\n");
    assert_string_equal(cfg->cluster_host, "::1");
    assert_int_equal(cfg->cluster_port, 7000);
    assert_int_equal(cfg->cluster_db, 3);
    assert_string_equal(cfg->cluster_password, "cr_0f3a9b27c4d845e6a1b2c3d4e5f60718");
    assert_string_equal(cfg->cluster_key_prefix, "zz:");
    assert_string_equal(cfg->cluster_fleet, "team");
    assert_int_equal(cfg->cluster_lease_ms, 1500);
    config_free(cfg);

    char *e = load_err(GROUP_OK "[cluster]\nredis_url = \"redis://u:s3cretpass@h:1/0\"\n");
    assert_has(e, "cfg.toml:5: cluster.redis_url: holds credentials; remove them and name the "
                  "variable that holds the password in redis_password_env");
    free(e);
    e = load_err(GROUP_OK "[cluster]\nredis_url = \"rediss://h\"\n");
    assert_has(e, "cluster.redis_url: rediss:// (TLS) is not supported");
    free(e);
    e = load_err(GROUP_OK "[cluster]\nredis_url = \"http://h\"\nlease_ms = 10\n"
                          "fleet = \"a b\"\nredis_password_env = \"ZT_UNSET\"\nport = 1\n");
    assert_has(e, "cfg.toml:5: cluster.redis_url: must start with redis://");
    assert_has(e, "cfg.toml:6: cluster.lease_ms: 10 is out of range");
    assert_has(e, "cfg.toml:7: cluster.fleet: must be at most 64 characters");
    assert_has(e,
               "cfg.toml:8: cluster.redis_password_env: environment variable ZT_UNSET is not set");
    assert_has(e, "cfg.toml:9: cluster.port: unknown key");
    free(e);
    e = load_err(GROUP_OK "[cluster]\nredis_url = \"redis://h:99999\"\n");
    assert_has(e, "the port must be a number from 1 to 65535");
    free(e);
}

static void test_health_cross_checks(void **state)
{
    (void)state;
    char *e = load_err(GROUP_OK "[health_check]\ninterval_seconds = 10\ntimeout_seconds = 10\n"
                                "min_interval_seconds = 100\nmax_interval_seconds = 50\n");
    assert_has(e, "cfg.toml:6: health_check.timeout_seconds: 10 is not below interval_seconds "
                  "(10); a check must end before the next one starts");
    assert_has(e, "cfg.toml:7: health_check.min_interval_seconds: 100 is above "
                  "max_interval_seconds (50)");
    assert_int_equal(count_lines(e), 2);
    free(e);

    /* Only interval written: the default timeout (15) is not below it. */
    e = load_err(GROUP_OK "[health_check]\ninterval_seconds = 15\n");
    assert_has(e,
               "cfg.toml:5: health_check.timeout_seconds: 15 is not below interval_seconds (15)");
    free(e);

    e = load_err(GROUP_OK "[health_check]\ndynamic_scaling = true\nmin_interval_seconds = 10\n");
    assert_has(e, "cfg.toml:6: health_check.timeout_seconds: 15 is not below "
                  "min_interval_seconds (10)");
    free(e);

    e = load_err(GROUP_OK "[health_check]\nmax_interval_seconds = 20\n");
    assert_has(e, "cfg.toml:5: health_check.min_interval_seconds: 30 is above "
                  "max_interval_seconds (20)");
    free(e);
}

static void test_all_errors_at_once(void **state)
{
    (void)state;
    char *e = load_err("[server]\n"                                          /* 1 */
                       "port = -1\n"                                         /* 2 */
                       "prot = 1\n"                                          /* 3 */
                       "[[groups]]\n"                                        /* 4 */
                       "name = \"g\"\n"                                      /* 5 */
                       "auth_token_env = \"ZT_UNSET\"\n"                     /* 6 */
                       "endpoints = [{ url = \"ftp://x\", name = \"e\" }]\n" /* 7 */
                       "[health_check]\n"                                    /* 8 */
                       "timeout_seconds = 500\n"                             /* 9 */
                       "[ui]\n"                                              /* 10 */
                       "language = \"fr\"\n");                               /* 11 */
    assert_int_equal(count_lines(e), 6);
    /* In file order. */
    const char *order[] = {"cfg.toml:2: server.port",
                           "cfg.toml:3: server.prot",
                           "cfg.toml:6: groups[0].auth_token_env",
                           "cfg.toml:7: groups[0].endpoints[0].url",
                           "cfg.toml:9: health_check.timeout_seconds",
                           "cfg.toml:11: ui.language"};
    const char *at = e;
    for (size_t k = 0; k < sizeof order / sizeof order[0]; k++) {
        const char *p = strstr(at, order[k]);
        if (!p)
            print_error("[%s] missing or out of order in:\n%s\n", order[k], e);
        assert_non_null(p);
        at = p;
    }
    free(e);
}

static void test_endpoint_forms(void **state)
{
    (void)state;
    struct config *a = load_ok("[[groups]]\nname = \"g\"\nendpoints = [\n"
                               "  { url = \"https://a.example\", name = \"a\" },\n"
                               "  { url = \"https://b.example\", name = \"b\" },\n"
                               "]\n");
    struct config *b = load_ok("[[groups]]\nname = \"g\"\n"
                               "[[groups.endpoints]]\nurl = \"https://a.example\"\nname = \"a\"\n"
                               "[[groups.endpoints]]\nname = \"b\"\nurl = \"https://b.example\"\n");
    assert_int_equal(a->groups[0].n_endpoints, 2);
    assert_int_equal(b->groups[0].n_endpoints, 2);
    for (size_t k = 0; k < 2; k++) {
        assert_string_equal(a->groups[0].endpoints[k].name, b->groups[0].endpoints[k].name);
        assert_string_equal(a->groups[0].endpoints[k].url, b->groups[0].endpoints[k].url);
    }
    assert_int_equal(a->groups[0].endpoints[0].line, 4);
    assert_int_equal(a->groups[0].endpoints[1].line, 5);
    assert_int_equal(b->groups[0].endpoints[0].line, 3);
    assert_int_equal(b->groups[0].endpoints[1].line, 6);
    config_free(a);
    config_free(b);
}

static void test_summary(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[server]\nport = 9090\n"
                                 "[[groups]]\nname = \"main\"\nauth_token_env = \"ZT_MAIN\"\n"
                                 "endpoints = [{ url = \"https://a.example\", name = \"a\" }]\n"
                                 "[[groups]]\nname = \"open\"\ndefault = true\n"
                                 "endpoints = [{ url = \"https://b.example\", name = \"b\" }]\n"
                                 "[health_check]\ninterval_seconds = 77\n");
    char *s = config_summary(cfg);
    assert_has(s, "listen: http://127.0.0.1:9090");
    assert_has(s, "main");
    assert_has(s, "open (default)");
    assert_has(s, "$ZT_MAIN (set)");
    assert_has(s, "passed through");
    assert_has(s, "https://a.example");
    assert_has(s, "every 77 s");
    assert_lacks(s, REAL_TOKEN);
    free(s);
    config_free(cfg);
}

static void test_load_file(void **state)
{
    (void)state;
    char path[] = "/tmp/zephyr-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = GROUP_OK "[server]\nprot = 1\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);

    struct config *cfg = NULL;
    char *errors = NULL;
    assert_int_equal(config_load(path, &cfg, &errors), -1);
    assert_null(cfg);
    char want[128];
    snprintf(want, sizeof want, "%s:5: server.prot: unknown key", path);
    assert_has(errors, want);
    free(errors);
    unlink(path);

    assert_int_equal(config_load(path, &cfg, &errors), -1);
    assert_null(cfg);
    assert_has(errors, "cannot read");
    assert_has(errors, path);
    free(errors);

    /* NULL errors is allowed. */
    assert_int_equal(config_load_string(PATH, "x", 1, &cfg, NULL), -1);
    config_free(NULL);
}

static void test_every_prefix(void **state)
{
    (void)state;
    const char *text =
        "[server]\nport = 8080\nbind = \"127.0.0.1\"\n"
        "[[groups]]\nname = \"main\"\nauth_token_env = \"ZT_MAIN\"\ndefault = true\n"
        "endpoints = [\n  { url = \"https://a.example/\", name = \"a\" },\n"
        "  { url = \"https://b.example\", name = \"b\" },\n]\n"
        "[[groups]]\nname = \"relay\"\n[[groups.endpoints]]\nurl = \"http://r.example\"\n"
        "name = \"r\"\n[health_check]\ninterval_seconds = 60\ncli_args = [\"a\", \"b\"]\n"
        "[ui]\nlanguage = \"zh\"\n";
    size_t len = strlen(text);
    int ok = 0;
    for (size_t n = 0; n <= len; n++) {
        struct config *cfg = NULL;
        char *errors = NULL;
        int rc = config_load_string(PATH, text, n, &cfg, &errors);
        assert_true(rc == 0 || rc == -1);
        assert_true((rc == 0) == (cfg != NULL));
        assert_true((rc == 0) == (errors == NULL));
        if (rc == 0) {
            ok++;
            char *s = config_summary(cfg);
            free(s);
        } else {
            assert_true(strncmp(errors, PATH ":", strlen(PATH) + 1) == 0);
        }
        config_free(cfg);
        free(errors);
    }
    assert_true(ok > 0);
}

static void test_fallback_and_endpoint_tokens(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[server]\nusage_cap_rest_s = 600\n"
                                 "[[groups]]\nname = \"a\"\nauth_token_env = \"ZT_MAIN\"\n"
                                 "fallback_groups = [\"c\", \"b\"]\n"
                                 "endpoints = [{ url = \"https://a.example\", name = \"a1\", "
                                 "auth_token_env = \"ZT_RELAY\", auth_header = \"bearer\" },\n"
                                 "  { url = \"https://a2.example\", name = \"a2\" }]\n"
                                 "[[groups]]\nname = \"b\"\nfallback_groups = [\"a\"]\n"
                                 "endpoints = [{ url = \"https://b.example\", name = \"b1\" }]\n"
                                 "[[groups]]\nname = \"c\"\n"
                                 "endpoints = [{ url = \"https://c.example\", name = \"c1\" }]\n");
    assert_int_equal(cfg->usage_cap_rest_s, 600);
    const struct cfg_group *a = &cfg->groups[0];
    assert_int_equal(a->n_fallback, 2);
    assert_int_equal(a->fallback[0], 2);
    assert_int_equal(a->fallback[1], 1);
    assert_int_equal(cfg->groups[1].n_fallback, 1); /* a cycle is fine */
    assert_string_equal(config_ep_token(a, &a->endpoints[0]),
                        "cr_0f3a9b27c4d845e6a1b2c3d4e5f60718");
    assert_int_equal(config_ep_auth(a, &a->endpoints[0]), AUTH_BEARER);
    assert_string_equal(config_ep_token(a, &a->endpoints[1]), REAL_TOKEN);
    assert_int_equal(config_ep_auth(a, &a->endpoints[1]), AUTH_X_API_KEY);
    assert_null(config_ep_token(&cfg->groups[1], &cfg->groups[1].endpoints[0]));
    char *sum = config_summary(cfg);
    assert_lacks(sum, "cr_0f3a9b27c4d845e6a1b2c3d4e5f60718");
    free(sum);
    config_free(cfg);

    char *e =
        load_err("[[groups]]\nname = \"a\"\nfallback_groups = [\"a\", \"zz\", \"b\", \"b\", 3]\n"
                 "endpoints = [{ url = \"https://a.example\", name = \"a1\", "
                 "auth_token_env = \"ZT_UNSET\" }]\n"
                 "[[groups]]\nname = \"b\"\nfallback_groups = \"a\"\n"
                 "endpoints = [{ url = \"https://b.example\", name = \"b1\" }]\n");
    assert_has(e, "cfg.toml:3: groups[0].fallback_groups: \"a\" is this group itself");
    assert_has(e, "cfg.toml:3: groups[0].fallback_groups: no group is named \"zz\"");
    assert_has(e, "cfg.toml:3: groups[0].fallback_groups: \"b\" is listed twice");
    assert_has(e, "cfg.toml:3: groups[0].fallback_groups: expected a group name");
    assert_has(e, "cfg.toml:4: groups[0].endpoints[0].auth_token_env: environment variable "
                  "ZT_UNSET is not set");
    assert_has(e, "cfg.toml:7: groups[1].fallback_groups: expected an array of group names");
    free(e);
}

static void test_stream_header_timeout(void **state)
{
    (void)state;
    struct config *cfg = load_ok(GROUP_OK);
    assert_int_equal(cfg->stream_header_timeout_ms, 30000);
    assert_int_equal(cfg->retry_budget_ms, 60000);
    config_free(cfg);
    /* Never above header_timeout_ms when not given. */
    cfg = load_ok("[server]\nheader_timeout_ms = 1000\nretry_budget_ms = 1200\n" GROUP_OK);
    assert_int_equal(cfg->stream_header_timeout_ms, 1000);
    config_free(cfg);
    cfg = load_ok("[server]\nstream_header_timeout_ms = 5000\nretry_budget_ms = 20000\n" GROUP_OK);
    assert_int_equal(cfg->stream_header_timeout_ms, 5000);
    config_free(cfg);
    /* One attempt: there is nothing to fail over to, so no conflict. */
    cfg = load_ok("[server]\nmax_attempts = 1\nretry_budget_ms = 1000\n" GROUP_OK);
    config_free(cfg);

    char *e =
        load_err("[server]\nstream_header_timeout_ms = 30000\nretry_budget_ms = 30000\n" GROUP_OK);
    assert_has(e, "cfg.toml:2: server.stream_header_timeout_ms: a stream may wait 30000 ms for "
                  "headers but all attempts may take only server.retry_budget_ms = 30000 ms");
    free(e);
    e = load_err("[server]\nretry_budget_ms = 20000\n" GROUP_OK);
    assert_has(e, "cfg.toml:2: server.retry_budget_ms: a stream may wait 30000 ms");
    free(e);
    e = load_err("[server]\nheader_timeout_ms = 5000\nstream_header_timeout_ms = 6000\n" GROUP_OK);
    assert_has(e, "cfg.toml:3: server.stream_header_timeout_ms: 6000 is longer than "
                  "server.header_timeout_ms (5000)");
    free(e);
}

static void test_models(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[[groups]]\nname = \"g\"\n"
                                 "models = { \"claude-opus-4-8\" = \"vendor/claude-opus-4.8\", "
                                 "\"*\" = \"claude-sonnet-4-6\" }\n"
                                 "endpoints = [{ url = \"https://a.example\", name = \"a\" },\n"
                                 "  { url = \"https://b.example\", name = \"b\", "
                                 "models = { \"claude-opus-4-8\" = \"b-opus\" } }]\n"
                                 "[[groups]]\nname = \"h\"\n"
                                 "endpoints = [{ url = \"https://c.example\", name = \"c\" }]\n");
    const struct cfg_group *g = &cfg->groups[0];
    assert_string_equal(config_model_for(g, &g->endpoints[0], "claude-opus-4-8"),
                        "vendor/claude-opus-4.8");
    assert_string_equal(config_model_for(g, &g->endpoints[0], "claude-haiku"), "claude-sonnet-4-6");
    /* An endpoint's table replaces its group's: no "*" there. */
    assert_string_equal(config_model_for(g, &g->endpoints[1], "claude-opus-4-8"), "b-opus");
    assert_null(config_model_for(g, &g->endpoints[1], "claude-haiku"));
    assert_null(config_model_for(&cfg->groups[1], &cfg->groups[1].endpoints[0], "claude-haiku"));
    config_free(cfg);

    char *e = load_err("[[groups]]\nname = \"g\"\nmodels = \"x\"\n"
                       "endpoints = [{ url = \"https://a.example\", name = \"a\", "
                       "models = { \"m\" = 3, \"n\" = \"\" } }]\n");
    assert_has(e, "cfg.toml:3: groups[0].models: expected a table like");
    assert_has(e, "cfg.toml:4: groups[0].endpoints[0].models: expected a model name");
    assert_has(e, "cfg.toml:4: groups[0].endpoints[0].models: model names must be 1 to 200");
    free(e);
}

static void test_endpoint_connection(void **state)
{
    (void)state;
    setenv("ZT_HDR", "hdr-secret-91ab3c", 1);
    struct config *cfg =
        load_ok("[[groups]]\nname = \"g\"\n"
                "endpoints = [{ url = \"https://a.example\", name = \"a\", "
                "headers = { \"X-A\" = \"plain\", \"X-B\" = \"${ZT_HDR}\" }, "
                "proxy = \"socks5h://127.0.0.1:1080\", ca_file = \"/etc/passwd\" }]\n");
    const struct cfg_endpoint *e = &cfg->groups[0].endpoints[0];
    assert_int_equal(e->n_headers, 2);
    assert_string_equal(e->headers[0].name, "X-A");
    assert_string_equal(e->headers[0].value, "plain");
    assert_false(e->headers[0].from_env);
    assert_string_equal(e->headers[1].value, "hdr-secret-91ab3c");
    assert_true(e->headers[1].from_env);
    assert_string_equal(e->proxy, "socks5h://127.0.0.1:1080");
    assert_string_equal(e->ca_file, "/etc/passwd"); /* any regular file passes the check */
    config_free(cfg);

    /* Whether the file is a regular, readable one is the file probe's part:
     * test_ca_file_checked_without_opening. */

    setenv("ZT_HDR_NL", "a\r\nX-Injected: 1", 1);
    char *err =
        load_err("[[groups]]\nname = \"g\"\n"
                 "endpoints = [{ url = \"http://a.example\", name = \"a\", "
                 "headers = { \"Content-Length\" = \"1\", \"X-C\" = \"a\\nb\", "
                 "\"X-D\" = \"${ZT_HDR_NL}\", \"X-E\" = \"${ZT_UNSET}\", \"X:F\" = \"v\" }, "
                 "proxy = \"user:pw@host\", ca_file = \"/nonexistent.pem\" }]\n");
    assert_has(err,
               "cfg.toml:3: groups[0].endpoints[0].headers: Content-Length cannot be set here");
    assert_has(err, "headers: the value of X-C holds control characters");
    assert_has(err, "headers: environment variable ZT_HDR_NL holds a control character");
    assert_has(err, "headers: environment variable ZT_UNSET is not set");
    assert_has(err, "headers: \"X:F\" is not a valid header name");
    assert_has(err, "proxy: not a proxy URL");
    assert_lacks(err, "user:pw");
    assert_has(err, "ca_file: applies to https:// endpoints only");
    assert_lacks(err, "X-Injected");
    free(err);
    unsetenv("ZT_HDR");
    unsetenv("ZT_HDR_NL");
}

/* ca_file is checked on disk apart from the pure loader, with stat() and
 * access() only: a FIFO named there must not be opened (it would block the
 * loop that runs a reload). */
static void test_ca_file_checked_without_opening(void **state)
{
    (void)state;
    char dir[] = "/tmp/zt-cafile-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char fifo[64], pem[64];
    snprintf(fifo, sizeof fifo, "%s/fifo.pem", dir);
    snprintf(pem, sizeof pem, "%s/ca.pem", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    FILE *f = fopen(pem, "w");
    assert_non_null(f);
    fputs("-----BEGIN CERTIFICATE-----\n", f);
    fclose(f);
    const char *paths[] = {"/nonexistent.pem", fifo, "/dev/null", pem};
    const char *want[] = {"cannot read /nonexistent.pem: No such file or directory",
                          "not a regular file", "not a regular file", NULL};
    for (size_t i = 0; i < 4; i++) {
        char text[512];
        snprintf(text, sizeof text,
                 "[[groups]]\nname = \"g\"\nendpoints = [{ url = \"https://a.example\", "
                 "name = \"a\", ca_file = \"%s\" }]\n",
                 paths[i]);
        config_set_file_probe(config_file_check);
        char *err = NULL;
        struct config *cfg = NULL;
        int rc = config_load_string("cfg.toml", text, strlen(text), &cfg, &err);
        config_set_file_probe(NULL);
        if (want[i]) {
            assert_int_equal(rc, -1);
            assert_has(err, "cfg.toml:3: groups[0].endpoints[0].ca_file: cannot read");
            assert_has(err, want[i]);
        } else {
            assert_int_equal(rc, 0);
            assert_null(err);
        }
        free(err);
        config_free(cfg);
    }
    unlink(fifo);
    unlink(pem);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_minimal),
        cmocka_unit_test(test_check_model_keys),
        cmocka_unit_test(test_every_key_set),
        cmocka_unit_test(test_syntax_error),
        cmocka_unit_test(test_type_errors),
        cmocka_unit_test(test_range_errors),
        cmocka_unit_test(test_enum_errors),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_legacy_auth_token),
        cmocka_unit_test(test_no_groups),
        cmocka_unit_test(test_group_errors),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_endpoint_errors),
        cmocka_unit_test(test_two_defaults),
        cmocka_unit_test(test_token_missing),
        cmocka_unit_test(test_placeholder_tokens),
        cmocka_unit_test(test_secrets_never_in_errors),
        cmocka_unit_test(test_bind_and_keys),
        cmocka_unit_test(test_health_cross_checks),
        cmocka_unit_test(test_all_errors_at_once),
        cmocka_unit_test(test_endpoint_forms),
        cmocka_unit_test(test_summary),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_every_prefix),
        cmocka_unit_test(test_control_characters_in_secrets),
        cmocka_unit_test(test_fallback_and_endpoint_tokens),
        cmocka_unit_test(test_stream_header_timeout),
        cmocka_unit_test(test_models),
        cmocka_unit_test(test_endpoint_connection),
        cmocka_unit_test(test_ca_file_checked_without_opening),
        cmocka_unit_test(test_cluster),
    };
    return cmocka_run_group_tests(tests, setup_env, NULL);
}
