/*
 * libFuzzer target for the .env parser (dotenv_parse, the pure half of
 * dotenv).  Whatever the bytes, it must return 0 or -1 with errors set
 * exactly when it failed, never crash, leak or read out of bounds, and:
 *   - every name it hands out is [A-Za-z_][A-Za-z0-9_]*;
 *   - every error line is "fuzz.env:LINE: ..." with LINE within the input
 *     (error text names lines, never repeats what was on them);
 *   - it is deterministic: a second parse gives the same pairs;
 *   - every value survives a round trip: written back as KEY="..." (with
 *     \\ and \" escaped) it parses to the same bytes.
 * Seeds: tests/fuzz/corpus/dotenv/.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dotenv.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct pairs {
    struct buf all; /* owns; "key=value\0" records, in order */
    size_t n;
};

static bool name_ok(const char *k)
{
    if (!((*k >= 'A' && *k <= 'Z') || (*k >= 'a' && *k <= 'z') || *k == '_'))
        return false;
    for (k++; *k; k++)
        if (!((*k >= 'A' && *k <= 'Z') || (*k >= 'a' && *k <= 'z') || *k == '_' ||
              (*k >= '0' && *k <= '9')))
            return false;
    return true;
}

static void on_pair(void *ud, const char *key, const char *value)
{
    struct pairs *p = ud;
    if (!name_ok(key))
        abort();
    buf_append_str(&p->all, key);
    buf_append(&p->all, "=", 1);
    buf_append_str(&p->all, value);
    buf_append(&p->all, "", 1);
    p->n++;
}

/* The value written back double-quoted and parsed again must be itself. */
static void on_pair_roundtrip(void *ud, const char *key, const char *value)
{
    (void)ud;
    struct buf text;
    buf_init(&text, (size_t)-1 / 2);
    buf_append_str(&text, key);
    buf_append_str(&text, "=\"");
    for (const char *v = value; *v; v++) {
        if (*v == '\\' || *v == '"')
            buf_append(&text, "\\", 1);
        buf_append(&text, v, 1);
    }
    buf_append_str(&text, "\"\n");
    struct pairs again;
    char *errors = NULL;
    buf_init(&again.all, (size_t)-1 / 2);
    again.n = 0;
    if (dotenv_parse(text.data, text.len, on_pair, &again, "fuzz.env", &errors) != 0)
        abort();
    if (again.n != 1 || strcmp(again.all.data + strlen(key) + 1, value) != 0)
        abort();
    buf_release(&again.all);
    buf_release(&text);
}

static void check_errors(const char *errors, const uint8_t *data, size_t size)
{
    size_t lines = 1;
    for (size_t i = 0; i < size; i++)
        lines += data[i] == '\n';
    for (const char *l = errors; *l;) {
        if (strncmp(l, "fuzz.env:", 9) != 0)
            abort();
        char *end;
        unsigned long n = strtoul(l + 9, &end, 10);
        if (end == l + 9 || *end != ':' || n == 0 || n > lines)
            abort();
        const char *nl = strchr(l, '\n');
        if (!nl)
            abort(); /* every problem is a whole line */
        l = nl + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pairs a, b;
    char *errors = NULL, *errors2 = NULL;

    buf_init(&a.all, (size_t)-1 / 2);
    buf_init(&b.all, (size_t)-1 / 2);
    a.n = b.n = 0;
    int rc = dotenv_parse((const char *)data, size, on_pair, &a, "fuzz.env", &errors);
    if ((rc == 0) != (errors == NULL) || (rc != 0 && rc != -1))
        abort();
    if (errors)
        check_errors(errors, data, size);
    int rc2 = dotenv_parse((const char *)data, size, on_pair, &b, "fuzz.env", &errors2);
    if (rc2 != rc || a.n != b.n || a.all.len != b.all.len ||
        (a.all.len && memcmp(a.all.data, b.all.data, a.all.len) != 0) ||
        (errors && strcmp(errors, errors2) != 0))
        abort();
    (void)dotenv_parse((const char *)data, size, on_pair_roundtrip, NULL, "fuzz.env", NULL);
    free(errors);
    free(errors2);
    buf_release(&a.all);
    buf_release(&b.all);
    return 0;
}
