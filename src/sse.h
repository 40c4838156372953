/*
 * sse: an incremental scanner for text/event-stream bodies.  The proxy
 * forwards stream bytes as they arrive; the scanner only watches them, so
 * that the proxy can account usage (message_start, message_delta), hold back
 * the opening events (message_start, ping) until the first content event,
 * and notice an `event: error` sent after a 200.
 *
 * It follows the WHATWG event-stream rules: lines end in LF, CRLF or a lone
 * CR; a line starting with ':' is a comment; "name: value" strips one space
 * after the colon; a line without a colon is a field with an empty value;
 * "data" lines are joined with '\n'; "event" sets the event name; a blank
 * line dispatches the event if it had at least one data line.  "id",
 * "retry" and unknown fields are ignored.  Input may be split at any byte.
 *
 * States: where the scanner is inside a line (line start, field name, just
 * after the colon, value, ignored rest of line), plus whether the last byte
 * was a CR.  A blank line ended by CR is dispatched only when the next byte
 * shows whether an LF belongs to it, so that end_offset does not depend on
 * how the input was split; sse_finish() settles that at end of stream.
 *
 * Memory: the scanner owns two buffers, the current event's name and data.
 * Together they never exceed max_event_bytes; a larger event is skipped and
 * counted in oversized.  Field lines that are not kept (comments, id, retry,
 * unknown fields, the rest of an oversized event) are not buffered at all.
 * A leading byte-order mark is not stripped.
 */
#ifndef ZEPHYR_SSE_H
#define ZEPHYR_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* One dispatched event.  The views are valid only during the callback. */
struct sse_event {
    const char *name; /* borrows; the event field, or "message" when absent or empty */
    size_t name_len;
    const char *data; /* borrows; data lines joined with '\n', NUL-terminated */
    size_t data_len;
    uint64_t end_offset; /* stream offset just after the blank line that ended the event */
};

/* Returns 0 to go on, non-zero to stop sse_feed(), which returns that value. */
typedef int (*sse_event_cb)(void *ud, const struct sse_event *ev);

enum sse_state {
    SSE_LINE_START = 0,  /* at the first byte of a line */
    SSE_FIELD = 1,       /* inside a field name */
    SSE_VALUE_START = 2, /* just after the colon: one space is dropped */
    SSE_VALUE = 3,       /* inside a kept value (data or event) */
    SSE_SKIP = 4,        /* inside a line whose content is not kept */
};

enum sse_field {
    SSE_F_OTHER = 0,
    SSE_F_DATA = 1,
    SSE_F_EVENT = 2,
};

/* Embedded in the caller's stream state; fields are read-only outside sse.c. */
struct sse_scanner {
    uint64_t offset;        /* stream bytes consumed so far */
    uint64_t events;        /* events dispatched */
    uint64_t oversized;     /* events skipped for exceeding max_event_bytes */
    size_t max_event_bytes; /* cap on event name + data */
    enum sse_state state;
    enum sse_field field; /* field of the current line */
    char fname[8];        /* field name so far; longer names are unknown fields */
    size_t fname_len;
    bool cr;               /* last byte was a CR: an LF now ends nothing */
    bool dispatch_pending; /* a blank line ended by CR awaits the next byte */
    bool has_data;         /* the current event has had a data line */
    bool too_big;          /* the current event passed max_event_bytes */
    struct buf name;       /* owns; the current event name */
    struct buf data;       /* owns; the current event data */
};

/*
 * Prepares s for a new stream at offset 0.  Events whose name plus data
 * exceed max_event_bytes will be skipped.  Allocates nothing; pair with
 * sse_release().
 */
void sse_init(struct sse_scanner *s, size_t max_event_bytes);

/* Frees the buffers s owns.  s may be initialised again afterwards. */
void sse_release(struct sse_scanner *s);

/*
 * Scans the next n bytes of the stream and calls cb(ud, ev) for each
 * complete event, in order.  Returns 0 when all n bytes were consumed.  When
 * cb returns non-zero, scanning stops right after that event and sse_feed()
 * returns the value; the bytes up to ev->end_offset (s->offset) have been
 * consumed and the rest of p has not, so a caller that wants to go on feeds
 * p + (s->offset - offset before the call).  The scanner never fails on
 * malformed input: anything is a valid event stream.
 */
int sse_feed(struct sse_scanner *s, const char *p, size_t n, sse_event_cb cb, void *ud);

/*
 * Signals the end of the stream: dispatches an event whose blank line was a
 * lone CR at the very end (the only case sse_feed() leaves pending).  An
 * event without its blank line is discarded, as the WHATWG rules say.
 * Returns 0 or the callback's non-zero value.
 */
int sse_finish(struct sse_scanner *s, sse_event_cb cb, void *ud);

#endif
