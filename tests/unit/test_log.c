/*
 * Unit tests for log: whole-token redaction (no limit on the number of
 * secrets, retired secrets kept but bounded) and the buffered writer, which
 * never blocks its caller and counts what it drops when its output stalls.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "assert_text.h"
#include "log.h"

static char out[8192];

static const char *redact(const char *s)
{
    log_redact(out, sizeof out, s);
    return out;
}

static void test_whole_tokens(void **state)
{
    (void)state;
    log_clear_secrets();
    log_add_secret("test");
    /* Inside a longer word: not the secret. */
    assert_string_equal(redact("latest not_found_error testing attest_x"),
                        "latest not_found_error testing attest_x");
    assert_string_equal(redact("a.test.b test-x x-test test_ 9test"),
                        "a.test.b test-x x-test test_ 9test");
    /* Whole tokens, wherever they stand. */
    assert_string_equal(redact("test"), "[redacted]");
    assert_lacks(redact("the key test, again: test"), "test");
    assert_string_equal(redact("key test."), "key [redacted].");
    assert_string_equal(redact("x=test&y=\"test\" (test), test:test"),
                        "x=[redacted]&y=\"[redacted]\" ([redacted]), [redacted]:[redacted]");
    assert_string_equal(redact(".test"), ".[redacted]");
    /* A long secret is redacted even when glued to other text. */
    log_add_secret("sk-ant-0123456789abcdef");
    assert_string_equal(redact("Bearersk-ant-0123456789abcdefXYZ"), "Bearer[redacted]XYZ");
    /* Shorter than 4 bytes: never registered. */
    log_add_secret("ab");
    assert_string_equal(redact("ab cd"), "ab cd");

    /* The rule health.c uses is the same. */
    assert_true(log_secret_at("a test", 6, 2, "test", 4));
    assert_false(log_secret_at("a tests", 7, 2, "test", 4));
    assert_false(log_secret_at("a tes", 5, 2, "test", 4));
    log_clear_secrets();
}

static void test_many_secrets(void **state)
{
    (void)state;
    log_clear_secrets();
    char s[32];
    for (int i = 0; i < 200; i++) {
        snprintf(s, sizeof s, "secret%03d", i);
        log_add_secret(s);
    }
    for (int i = 0; i < 200; i++) {
        char line[64];
        snprintf(line, sizeof line, "tok secret%03d end", i);
        assert_string_equal(redact(line), "tok [redacted] end");
    }
    log_clear_secrets();
}

static void test_retired_secrets(void **state)
{
    (void)state;
    log_clear_secrets();
    char s[32];
    /* Reload 0 registers old0; every later reload registers a new token. */
    for (int i = 0; i <= LOG_MAX_RETIRED_SECRETS + 10; i++) {
        log_retire_secrets();
        snprintf(s, sizeof s, "token%03d", i);
        log_add_secret(s);
        log_add_secret("always-there");
    }
    /* The current ones and the most recently retired are redacted. */
    snprintf(s, sizeof s, "token%03d", LOG_MAX_RETIRED_SECRETS + 10);
    assert_string_equal(redact(s), "[redacted]");
    snprintf(s, sizeof s, "token%03d", LOG_MAX_RETIRED_SECRETS + 9);
    assert_string_equal(redact(s), "[redacted]");
    assert_string_equal(redact("always-there"), "[redacted]");
    /* The oldest retired ones are forgotten: the set is bounded. */
    assert_string_equal(redact("token000"), "token000");
    log_clear_secrets();
}

static void test_redact_cut(void **state)
{
    (void)state;
    log_clear_secrets();
    log_add_secret("abcd");
    char small[8];
    /* A mark that does not fit ends the text; the secret never shows. */
    log_redact(small, sizeof small, "xy abcd zz");
    assert_string_equal(small, "xy ");
    log_redact(small, sizeof small, "1234567890");
    assert_string_equal(small, "1234567");
    log_clear_secrets();
}

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_writer_stalled_output(void **state)
{
    (void)state;
    char path[] = "/tmp/zt-logXXXXXX";
    assert_non_null(mkdtemp(path));
    char fifo[64];
    snprintf(fifo, sizeof fifo, "%s/out", path);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    /* A reader that never reads (until the end). */
    int rfd = open(fifo, O_RDONLY | O_NONBLOCK);
    assert_true(rfd >= 0);
    struct log_writer *w = log_writer_open(fifo, false);
    assert_non_null(w);
    uint64_t before = log_lines_dropped();

    char line[1024];
    memset(line, 'x', sizeof line);
    line[sizeof line - 1] = '\n';
    int dropped = 0;
    double t0 = mono();
    for (int i = 0; i < 1000; i++)
        dropped += log_writer_write(w, line, sizeof line) != 0;
    /* 1 MB into a stalled pipe: the caller never waited for it. */
    assert_true(mono() - t0 < 1.0);
    assert_true(dropped > 0);
    assert_int_equal(log_lines_dropped() - before, (uint64_t)dropped);
    /* Still stalled: flushing gives up after its bound. */
    assert_int_equal(log_flush(100), -1);

    /* The reader catches up: everything kept arrives, then the notice. */
    int fl = fcntl(rfd, F_GETFL);
    fcntl(rfd, F_SETFL, fl & ~O_NONBLOCK);
    log_writer_close(w);
    size_t total = 0, cap = 2 << 20;
    char *all = malloc(cap + 1);
    ssize_t n;
    while ((n = read(rfd, all + total, cap - total)) > 0)
        total += (size_t)n;
    all[total] = '\0';
    close(rfd);
    /* Every kept line arrives whole, wherever it stands: lines accepted
     * after the thread took a queue with drops in it come after that
     * queue's notice (the strict "lines, then one notice" order failed
     * under ASan, where the thread started late). */
    size_t kept = 0;
    for (const char *q = all; *q;) {
        const char *nl = strchr(q, '\n');
        size_t ll = nl ? (size_t)(nl - q) + 1 : strlen(q);
        if (ll == sizeof line && strspn(q, "x") == sizeof line - 1)
            kept++;
        q += ll;
    }
    assert_int_equal(kept, (size_t)(1000 - dropped));
    /* The notices add up to what was dropped: when the thread took the
     * queue while the loop still ran (a late thread start under ASan), the
     * drops are told in two notices, each after the lines kept before it. */
    long noticed = 0;
    for (const char *q = strstr(all, "log: "); q; q = strstr(q + 1, "log: ")) {
        long cnt = 0;
        if (sscanf(q, "log: %ld line(s) dropped", &cnt) == 1)
            noticed += cnt;
    }
    assert_has(all, "line(s) dropped: this output could not keep up");
    assert_int_equal(noticed, dropped);
    free(all);
    assert_int_equal(log_flush(2000), 0);
    unlink(fifo);
    rmdir(path);
}

static void test_writer_file_cloexec(void **state)
{
    (void)state;
    char path[] = "/tmp/zt-logXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    struct log_writer *w = log_writer_open(path, true);
    assert_non_null(w);
    /* Opened close-on-exec: a child (the cli check's claude) never gets it. */
    int found = 0;
    for (int k = 0; k < 1024; k++) {
        char link[64], target[256];
        snprintf(link, sizeof link, "/proc/self/fd/%d", k);
        ssize_t tl = readlink(link, target, sizeof target - 1);
        if (tl <= 0)
            continue;
        target[tl] = '\0';
        if (strcmp(target, path) == 0) {
            found++;
            assert_true(fcntl(k, F_GETFD) & FD_CLOEXEC);
        }
    }
    assert_int_equal(found, 1);
    assert_int_equal(log_writer_write(w, "{\"a\":1}\n", 8), 0);
    log_writer_close(w);
    assert_int_equal(log_flush(2000), 0);
    FILE *f = fopen(path, "r");
    char buf[64] = "";
    assert_non_null(fgets(buf, sizeof buf, f));
    fclose(f);
    assert_string_equal(buf, "{\"a\":1}\n");
    unlink(path);
    assert_null(log_writer_open("/nonexistent-dir/x.log", false));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_tokens),          cmocka_unit_test(test_many_secrets),
        cmocka_unit_test(test_retired_secrets),       cmocka_unit_test(test_redact_cut),
        cmocka_unit_test(test_writer_stalled_output), cmocka_unit_test(test_writer_file_cloexec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
