/*
 * sse: see sse.h for the rules and states.  The scanner walks the input
 * once; values are handled a run at a time (up to the next CR or LF), so a
 * long data line costs one append, not one per byte.
 */
#include "sse.h"

#include <string.h>

void sse_init(struct sse_scanner *s, size_t max_event_bytes)
{
    memset(s, 0, sizeof *s);
    s->max_event_bytes = max_event_bytes;
    s->state = SSE_LINE_START;
    s->field = SSE_F_OTHER;
    buf_init(&s->name, max_event_bytes);
    buf_init(&s->data, max_event_bytes);
}

void sse_release(struct sse_scanner *s)
{
    buf_release(&s->name);
    buf_release(&s->data);
}

static void reset_event(struct sse_scanner *s)
{
    buf_reset(&s->name);
    buf_reset(&s->data);
    s->has_data = false;
    s->too_big = false;
}

/* Adds n bytes to the event name or data unless that would take the event
 * past its cap, in which case the rest of the event is only skipped. */
static void keep(struct sse_scanner *s, struct buf *b, const char *p, size_t n)
{
    if (s->too_big || n == 0)
        return;
    size_t used = s->name.len + s->data.len;
    if (n > s->max_event_bytes - used || buf_append(b, p, n) < 0) {
        s->too_big = true;
        return;
    }
}

static int dispatch(struct sse_scanner *s, sse_event_cb cb, void *ud)
{
    int rc = 0;
    if (s->too_big) {
        s->oversized++;
    } else if (s->has_data) {
        struct sse_event ev = {
            .name = s->name.len ? s->name.data : "message",
            .name_len = s->name.len ? s->name.len : strlen("message"),
            .data = s->data.data ? s->data.data : "",
            .data_len = s->data.len,
            .end_offset = s->offset,
        };
        s->events++;
        rc = cb(ud, &ev);
    }
    reset_event(s);
    return rc;
}

/* The field name is complete (at its colon or at the end of its line). */
static void start_field(struct sse_scanner *s)
{
    s->field = SSE_F_OTHER;
    if (s->fname_len == 4 && memcmp(s->fname, "data", 4) == 0) {
        s->field = SSE_F_DATA;
        if (s->has_data)
            keep(s, &s->data, "\n", 1);
        s->has_data = true;
    } else if (s->fname_len == 5 && memcmp(s->fname, "event", 5) == 0) {
        s->field = SSE_F_EVENT;
        buf_reset(&s->name);
    }
}

/* Length of the run before the next CR or LF. */
static size_t run_len(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && p[i] != '\r' && p[i] != '\n')
        i++;
    return i;
}

int sse_feed(struct sse_scanner *s, const char *p, size_t n, sse_event_cb cb, void *ud)
{
    size_t i = 0;
    int rc;
    while (i < n) {
        char c = p[i];
        if (s->cr) {
            /* The byte after a CR decides whether an LF belongs to it; a
             * blank line waited for that to fix its end_offset. */
            s->cr = false;
            if (c == '\n') {
                i++;
                s->offset++;
            }
            if (s->dispatch_pending) {
                s->dispatch_pending = false;
                if ((rc = dispatch(s, cb, ud)) != 0)
                    return rc;
            }
            continue;
        }
        if (c == '\r' || c == '\n') {
            i++;
            s->offset++;
            if (s->state == SSE_LINE_START) {
                if (c == '\r') {
                    s->dispatch_pending = true;
                } else if ((rc = dispatch(s, cb, ud)) != 0) {
                    s->cr = false;
                    return rc;
                }
            } else if (s->state == SSE_FIELD) {
                start_field(s);
            }
            s->state = SSE_LINE_START;
            s->cr = (c == '\r');
            continue;
        }
        switch (s->state) {
        case SSE_LINE_START:
            if (c == ':') {
                s->state = SSE_SKIP;
                i++;
                s->offset++;
            } else {
                s->fname_len = 0;
                s->state = SSE_FIELD;
            }
            break;
        case SSE_FIELD:
            if (c == ':') {
                start_field(s);
                s->state = SSE_VALUE_START;
            } else if (s->fname_len < sizeof s->fname) {
                s->fname[s->fname_len++] = c;
            } else {
                /* Longer than any field we keep: an unknown field. */
                s->state = SSE_SKIP;
            }
            i++;
            s->offset++;
            break;
        case SSE_VALUE_START:
            if (c == ' ') {
                i++;
                s->offset++;
            }
            s->state = s->field == SSE_F_OTHER ? SSE_SKIP : SSE_VALUE;
            break;
        case SSE_VALUE:
        case SSE_SKIP: {
            size_t len = run_len(p + i, n - i);
            if (s->state == SSE_VALUE)
                keep(s, s->field == SSE_F_DATA ? &s->data : &s->name, p + i, len);
            i += len;
            s->offset += len;
            break;
        }
        }
    }
    return 0;
}

int sse_finish(struct sse_scanner *s, sse_event_cb cb, void *ud)
{
    int rc = 0;
    if (s->dispatch_pending) {
        s->dispatch_pending = false;
        rc = dispatch(s, cb, ud);
    }
    reset_event(s);
    s->cr = false;
    s->state = SSE_LINE_START;
    return rc;
}
