/*
 * Unit tests for dotenv: quoting, export, comments, escapes, multi-line
 * values, errors with path:line and never the value, the environment
 * winning over the file, and every prefix of a valid file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "assert_text.h"
#include "dotenv.h"

/* Assignments seen by the callback, "KEY=VALUE" each. */
struct seen {
    char *pairs[32];
    size_t n;
};

static void on_pair(void *ud, const char *key, const char *value)
{
    struct seen *s = ud;
    assert_true(s->n < 32);
    size_t len = strlen(key) + strlen(value) + 2;
    s->pairs[s->n] = malloc(len);
    snprintf(s->pairs[s->n], len, "%s=%s", key, value);
    s->n++;
}

static void seen_release(struct seen *s)
{
    for (size_t k = 0; k < s->n; k++)
        free(s->pairs[k]);
    s->n = 0;
}

static int parse(const char *text, struct seen *s, char **errors)
{
    memset(s, 0, sizeof *s);
    return dotenv_parse(text, strlen(text), on_pair, s, "t.env", errors);
}

static void test_syntax(void **state)
{
    (void)state;
    struct seen s;
    char *errors = (char *)1;
    const char *text = "# a comment\n"
                       "\n"
                       "   \n"
                       "PLAIN=value\n"
                       "export EXPORTED=yes\n"
                       "  SPACED  =  padded value  \n"
                       "SINGLE='it''s'\n"
                       "SQ='a \\n # not a comment'\n"
                       "DQ=\"line1\\nline2\\t\\\"q\\\" \\\\ \\$HOME\"\n"
                       "INLINE=abc # comment\n"
                       "HASH=abc#def\n"
                       "HASHSTART=#x\n"
                       "ONLYCOMMENT= # nothing\n"
                       "EMPTY=\n"
                       "EMPTYQ=\"\"\n"
                       "CRLF=crlf\r\n"
                       "QC=\"quoted\" # trailing comment\n"
                       "exportX=1\n"
                       "export=2\n"
                       "_under_9=3\n"
                       "LAST=end";
    assert_int_equal(parse(text, &s, &errors), -1);
    /* SINGLE='it''s' has text after the closing quote. */
    assert_has(errors, "t.env:7: SINGLE: unexpected text after the closing quote");
    free(errors);
    const char *want[] = {
        "PLAIN=value",
        "EXPORTED=yes",
        "SPACED=padded value",
        "SQ=a \\n # not a comment",
        "DQ=line1\nline2\t\"q\" \\ $HOME",
        "INLINE=abc",
        "HASH=abc#def",
        "HASHSTART=#x",
        "ONLYCOMMENT=",
        "EMPTY=",
        "EMPTYQ=",
        "CRLF=crlf",
        "QC=quoted",
        "exportX=1",
        "export=2",
        "_under_9=3",
        "LAST=end",
    };
    assert_int_equal(s.n, sizeof want / sizeof want[0]);
    for (size_t k = 0; k < s.n; k++)
        assert_string_equal(s.pairs[k], want[k]);
    seen_release(&s);

    errors = (char *)1;
    assert_int_equal(parse("A=1\n", &s, &errors), 0);
    assert_null(errors);
    assert_int_equal(s.n, 1);
    seen_release(&s);

    /* Empty input, only comments: fine. */
    assert_int_equal(parse("", &s, &errors), 0);
    assert_int_equal(parse("# x\n\n#y", &s, &errors), 0);
    assert_int_equal(s.n, 0);
}

static void test_multiline_and_lines(void **state)
{
    (void)state;
    struct seen s;
    char *errors = NULL;
    const char *text = "KEY=\"first\nsecond\"\n"
                       "OTHER='a\nb\nc'\n"
                       "bad line\n";
    assert_int_equal(parse(text, &s, &errors), -1);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.pairs[0], "KEY=first\nsecond");
    assert_string_equal(s.pairs[1], "OTHER=a\nb\nc");
    /* Line numbers count the lines inside quoted values. */
    assert_has(errors, "t.env:6: not a KEY=VALUE line");
    free(errors);
    seen_release(&s);
}

static void test_errors(void **state)
{
    (void)state;
    struct seen s;
    char *errors = NULL;
    const char *text = "GOOD=1\n"
                       "sk-ant-api03-SECRETVALUE123\n"
                       "1BAD=SECRETVALUE456\n"
                       "NOEQ SECRETVALUE789\n"
                       "OPEN=\"SECRETVALUEabc\n"
                       "AFTER=2\n"
                       "TAIL='x' SECRETVALUEdef\n"
                       "BAD-NAME=SECRETVALUEghi\n"
                       "=SECRETVALUEjkl\n"
                       "OK2=3\n";
    assert_int_equal(parse(text, &s, &errors), -1);
    assert_has(errors, "t.env:2: not a KEY=VALUE line; write NAME=value");
    assert_has(errors, "t.env:3: not a KEY=VALUE line");
    assert_has(errors, "t.env:4: not a KEY=VALUE line");
    assert_has(errors, "t.env:5: OPEN: double-quoted value is never closed; add the closing \"");
    assert_has(errors, "t.env:7: TAIL: unexpected text after the closing quote");
    assert_has(errors, "t.env:8: not a KEY=VALUE line");
    assert_has(errors, "t.env:9: not a KEY=VALUE line");
    assert_lacks(errors, "SECRETVALUE");
    assert_lacks(errors, "sk-ant");
    /* Valid lines around the broken ones are still delivered. */
    assert_int_equal(s.n, 3);
    assert_string_equal(s.pairs[0], "GOOD=1");
    assert_string_equal(s.pairs[1], "AFTER=2");
    assert_string_equal(s.pairs[2], "OK2=3");
    free(errors);
    seen_release(&s);

    assert_int_equal(parse("S='never closed\nX=1\n", &s, &errors), -1);
    assert_has(errors, "t.env:1: S: single-quoted value is never closed; add the closing '");
    free(errors);
    seen_release(&s);

    /* A NUL byte inside a value. */
    memset(&s, 0, sizeof s);
    static const char nul[] = "A=x\0y\nB=2\n";
    assert_int_equal(dotenv_parse(nul, sizeof nul - 1, on_pair, &s, "t.env", &errors), -1);
    assert_has(errors, "t.env:1: A: value contains a NUL byte");
    assert_int_equal(s.n, 1);
    free(errors);
    seen_release(&s);

    /* NULL errors, NULL callback and NULL path are allowed. */
    assert_int_equal(dotenv_parse("bad\n", 4, NULL, NULL, NULL, NULL), -1);
    assert_int_equal(dotenv_parse("A=1\n", 4, NULL, NULL, NULL, NULL), 0);
    assert_int_equal(dotenv_parse("bad", 3, NULL, NULL, NULL, &errors), -1);
    assert_has(errors, ".env:1: ");
    free(errors);
}

static char *write_temp(const char *text)
{
    char *path = strdup("/tmp/zephyr-test-dotenv-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_load(void **state)
{
    (void)state;
    char *errors = (char *)1;
    setenv("ZD_PRESET", "from-environment", 1);
    unsetenv("ZD_NEW");
    unsetenv("ZD_TWICE");
    unsetenv("ZD_QUOTED");
    char *path = write_temp("ZD_PRESET=from-file\n"
                            "export ZD_NEW=new-value\n"
                            "ZD_TWICE=first\n"
                            "ZD_TWICE=second\n"
                            "ZD_QUOTED=\"a b\"\n");
    assert_int_equal(dotenv_load(path, &errors), 0);
    assert_null(errors);
    assert_string_equal(getenv("ZD_PRESET"), "from-environment");
    assert_string_equal(getenv("ZD_NEW"), "new-value");
    assert_string_equal(getenv("ZD_TWICE"), "second");
    assert_string_equal(getenv("ZD_QUOTED"), "a b");
    unlink(path);
    free(path);

    /* A malformed file sets nothing at all. */
    unsetenv("ZD_PARTIAL");
    path = write_temp("ZD_PARTIAL=1\nnot valid\n");
    assert_int_equal(dotenv_load(path, &errors), -1);
    assert_non_null(errors);
    char want[128];
    snprintf(want, sizeof want, "%s:2: not a KEY=VALUE line", path);
    assert_has(errors, want);
    assert_null(getenv("ZD_PARTIAL"));
    free(errors);
    unlink(path);

    /* A missing file is not an error. */
    errors = (char *)1;
    assert_int_equal(dotenv_load(path, &errors), 0);
    assert_null(errors);
    free(path);
    assert_int_equal(dotenv_load(NULL, &errors), 0);

    /* A directory cannot be read. */
    assert_int_equal(dotenv_load("/tmp", &errors), -1);
    assert_has(errors, "/tmp: cannot read");
    free(errors);

    unsetenv("ZD_PRESET");
    unsetenv("ZD_NEW");
    unsetenv("ZD_TWICE");
    unsetenv("ZD_QUOTED");
}

static void test_every_prefix(void **state)
{
    (void)state;
    const char *text = "# tokens\n"
                       "export A=1\n"
                       "B='two words'\n"
                       "C=\"esc\\n\\\"x\\\"\"\n"
                       "D=plain # c\n"
                       "E=\"multi\nline\"\n"
                       "\n"
                       "F=\r\n";
    size_t len = strlen(text);
    for (size_t n = 0; n <= len; n++) {
        /* An exact-size heap copy, so reading past the prefix is caught. */
        char *copy = malloc(n ? n : 1);
        memcpy(copy, text, n);
        struct seen s;
        char *errors = NULL;
        memset(&s, 0, sizeof s);
        int rc = dotenv_parse(copy, n, on_pair, &s, "p.env", &errors);
        assert_true(rc == 0 || rc == -1);
        assert_true((rc == 0) == (errors == NULL));
        free(errors);
        seen_release(&s);
        free(copy);
    }
    struct seen s;
    char *errors = NULL;
    assert_int_equal(parse(text, &s, &errors), 0);
    assert_int_equal(s.n, 6);
    seen_release(&s);
}

/* Files in memory, as the reload's worker would have read them. */
static struct dotenv_files files(const char *beside, const char *cwd)
{
    struct dotenv_files f;
    memset(&f, 0, sizeof f);
    f.path[0] = strdup("beside/.env");
    f.text[0] = beside ? strdup(beside) : NULL;
    f.len[0] = beside ? strlen(beside) : 0;
    f.path[1] = strdup(".env");
    f.text[1] = cwd ? strdup(cwd) : NULL;
    f.len[1] = cwd ? strlen(cwd) : 0;
    return f;
}

static int apply(const char *beside, const char *cwd, struct dotenv_undo **undo, char **errors)
{
    struct dotenv_files f = files(beside, cwd);
    int rc = dotenv_apply(&f, undo, errors);
    dotenv_files_release(&f);
    return rc;
}

static void test_apply_follows_the_file(void **state)
{
    (void)state;
    char *errors = NULL;
    struct dotenv_undo *undo = NULL;
    setenv("ZR_USER", "from-user", 1);
    unsetenv("ZR_A");
    unsetenv("ZR_B");
    unsetenv("ZR_C");

    /* First load: .env fills what the user did not set. */
    assert_int_equal(apply("ZR_A=one\nZR_B=two\nZR_USER=file\n", NULL, NULL, &errors), 0);
    assert_null(errors);
    assert_string_equal(getenv("ZR_A"), "one");
    assert_string_equal(getenv("ZR_B"), "two");
    assert_string_equal(getenv("ZR_USER"), "from-user");

    /* Reload: a changed value is replaced, a dropped one is unset, the
     * user's variable still wins. */
    assert_int_equal(apply("ZR_A=uno\nZR_USER=file2\n", NULL, &undo, &errors), 0);
    assert_non_null(undo);
    assert_string_equal(getenv("ZR_A"), "uno");
    assert_null(getenv("ZR_B"));
    assert_string_equal(getenv("ZR_USER"), "from-user");

    /* Undo puts everything back, ownership included. */
    dotenv_undo(undo);
    assert_string_equal(getenv("ZR_A"), "one");
    assert_string_equal(getenv("ZR_B"), "two");
    assert_int_equal(apply("ZR_A=one\nZR_B=zwei\n", NULL, NULL, &errors), 0);
    assert_string_equal(getenv("ZR_B"), "zwei");

    /* The file beside the config wins over ./.env. */
    assert_int_equal(apply("ZR_A=beside\n", "ZR_A=cwd\nZR_C=c\n", NULL, &errors), 0);
    assert_string_equal(getenv("ZR_A"), "beside");
    assert_string_equal(getenv("ZR_C"), "c");
    assert_null(getenv("ZR_B"));

    /* A malformed file changes nothing and names its line, not values. */
    assert_int_equal(apply("ZR_A=new\n", "oops secret-ish\n", &undo, &errors), -1);
    assert_null(undo);
    assert_has(errors, ".env:1: not a KEY=VALUE line");
    assert_lacks(errors, "secret-ish");
    free(errors);
    errors = NULL;
    assert_string_equal(getenv("ZR_A"), "beside");

    /* Nothing changed: no undo. */
    assert_int_equal(apply("ZR_A=beside\n", "ZR_A=cwd\nZR_C=c\n", &undo, &errors), 0);
    assert_null(undo);

    assert_int_equal(apply(NULL, NULL, NULL, &errors), 0);
    assert_null(getenv("ZR_A"));
    assert_null(getenv("ZR_C"));
    assert_string_equal(getenv("ZR_USER"), "from-user");
    unsetenv("ZR_USER");
}

static void test_read_refuses_what_is_not_a_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/zt-envXXXXXX";
    assert_non_null(mkdtemp(dir));
    char fifo[64], cfg[64];
    snprintf(fifo, sizeof fifo, "%s/.env", dir);
    snprintf(cfg, sizeof cfg, "%s/config.toml", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);

    /* No writer ever comes: this returns at once instead of waiting. */
    char *text = NULL, *errors = NULL;
    size_t len = 0;
    assert_int_equal(dotenv_read_file(fifo, 1024, "hint", &text, &len, &errors), -1);
    assert_null(text);
    assert_has(errors, fifo);
    assert_has(errors, "FIFO");
    free(errors);

    struct dotenv_files f;
    assert_int_equal(dotenv_read_for_config(cfg, &f, &errors), -1);
    assert_has(errors, fifo);
    free(errors);
    dotenv_files_release(&f);
    unlink(fifo);

    /* Missing is fine; too big is an error. */
    assert_int_equal(dotenv_read_file(fifo, 1024, "hint", &text, &len, &errors), 1);
    FILE *fp = fopen(fifo, "w");
    for (int i = 0; i < 200; i++)
        fputs("KEY=value\n", fp);
    fclose(fp);
    assert_int_equal(dotenv_read_file(fifo, 1024, "hint", &text, &len, &errors), -1);
    assert_has(errors, "larger than 1024 bytes");
    free(errors);
    assert_int_equal(dotenv_read_file(fifo, 4096, "hint", &text, &len, &errors), 0);
    assert_int_equal(len, 2000);
    free(text);
    unlink(fifo);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_syntax),
        cmocka_unit_test(test_multiline_and_lines),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_load),
        cmocka_unit_test(test_every_prefix),
        cmocka_unit_test(test_apply_follows_the_file),
        cmocka_unit_test(test_read_refuses_what_is_not_a_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
