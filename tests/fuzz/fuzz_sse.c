/*
 * libFuzzer target for sse (and the usage readers it feeds): the input is a
 * stream.  The first byte picks the event cap and the second seeds how the
 * stream is cut; the rest is scanned whole, in pieces, byte at a time (when
 * short), and with a callback that stops and resumes.  Every run must give
 * the same byte-exact trace, and every event must respect the cap.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sse.h"
#include "usage.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct trace {
    struct buf b;
    size_t cap;
    uint64_t last_end;
    size_t n;
    size_t stop_at; /* 1-based event number to stop at; 0 = never */
    struct usage u;
};

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_sse: %s\n", what);
        abort();
    }
}

static int on_event(void *ud, const struct sse_event *ev)
{
    struct trace *t = ud;
    char type[24];
    check(ev->data[ev->data_len] == '\0', "data not NUL-terminated");
    check(ev->data_len <= t->cap, "event over the cap");
    check(ev->name_len > 0, "empty event name");
    check(ev->end_offset > t->last_end || (t->n == 0 && ev->end_offset > 0),
          "end offsets not increasing");
    t->last_end = ev->end_offset;
    buf_appendf(&t->b, "%zu:", ev->name_len);
    buf_append(&t->b, ev->name, ev->name_len);
    buf_appendf(&t->b, "|%zu:", ev->data_len);
    buf_append(&t->b, ev->data, ev->data_len);
    buf_appendf(&t->b, "|%llu\n", (unsigned long long)ev->end_offset);
    usage_from_sse_event(ev, &t->u);
    if (usage_is_error_event(ev, type, sizeof type))
        check(strlen(type) < sizeof type, "error type not terminated");
    t->n++;
    return t->stop_at && t->n == t->stop_at ? 1 : 0;
}

static void trace_init(struct trace *t, size_t cap)
{
    memset(t, 0, sizeof *t);
    buf_init(&t->b, (size_t)1 << 26);
    t->cap = cap;
}

static void same(const struct trace *a, const struct trace *b, const char *what)
{
    check(a->b.len == b->b.len && (a->b.len == 0 || memcmp(a->b.data, b->b.data, a->b.len) == 0),
          what);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t cap = data[0] == 0xff ? ((size_t)1 << 20) : (size_t)data[0] * 4;
    unsigned seed = data[1];
    const char *p = (const char *)data + 2;
    size_t n = size - 2;
    struct sse_scanner s;
    struct trace whole, t;

    trace_init(&whole, cap);
    sse_init(&s, cap);
    check(sse_feed(&s, p, n, on_event, &whole) == 0, "whole feed stopped");
    check(s.offset == n, "whole feed did not consume everything");
    check(sse_finish(&s, on_event, &whole) == 0, "finish stopped");
    check(s.events == whole.n, "event count");
    check(s.name.len + s.data.len <= cap, "buffers over the cap");
    uint64_t oversized = s.oversized;
    sse_release(&s);

    /* Pieces of 1..64 bytes chosen by a small generator. */
    trace_init(&t, cap);
    sse_init(&s, cap);
    for (size_t at = 0; at < n;) {
        seed = seed * 1103515245u + 12345u;
        size_t len = 1 + (seed >> 16) % 64;
        if (len > n - at)
            len = n - at;
        check(sse_feed(&s, p + at, len, on_event, &t) == 0, "piecewise feed stopped");
        at += len;
    }
    sse_finish(&s, on_event, &t);
    check(s.oversized == oversized, "oversized count depends on cuts");
    sse_release(&s);
    same(&whole, &t, "piecewise trace differs");
    buf_release(&t.b);

    if (n <= 4096) {
        trace_init(&t, cap);
        sse_init(&s, cap);
        for (size_t i = 0; i < n; i++)
            sse_feed(&s, p + i, 1, on_event, &t);
        sse_finish(&s, on_event, &t);
        sse_release(&s);
        same(&whole, &t, "byte-at-a-time trace differs");
        buf_release(&t.b);
    }

    /* Stop at every event (up to a few) and resume where the scan stopped. */
    for (size_t stop = 1; stop <= whole.n && stop <= 8; stop++) {
        trace_init(&t, cap);
        t.stop_at = stop;
        sse_init(&s, cap);
        size_t at = 0;
        while (sse_feed(&s, p + at, n - at, on_event, &t) != 0) {
            check(s.offset == t.last_end, "stopped away from the event end");
            at = (size_t)s.offset;
            t.stop_at = 0;
        }
        sse_finish(&s, on_event, &t);
        sse_release(&s);
        same(&whole, &t, "stop-and-resume trace differs");
        buf_release(&t.b);
    }

    buf_release(&whole.b);
    return 0;
}
