/*
 * usage: token counts and model name from Anthropic Messages API replies,
 * either a whole non-streaming JSON reply or the events of a stream as the
 * sse scanner delivers them.  Also recognises the `event: error` an upstream
 * may send after it has already answered 200.
 *
 * Pure: parses with cJSON, keeps no state; the caller owns the struct usage
 * and zeroes it before a request.  Counts that are missing, negative, not
 * numbers or beyond long long are ignored rather than trusted.  Strings
 * copied out of a reply (model, error type) are cut at a UTF-8 boundary and
 * have control characters replaced by '?', because they end up on a
 * terminal and in /status.
 */
#ifndef ZEPHYR_USAGE_H
#define ZEPHYR_USAGE_H

#include <stdbool.h>
#include <stddef.h>

#include "sse.h"

struct usage {
    long long input;          /* usage.input_tokens */
    long long output;         /* usage.output_tokens */
    long long cache_read;     /* usage.cache_read_input_tokens */
    long long cache_creation; /* usage.cache_creation_input_tokens */
    char model[96];           /* the reply's model, truncated; "" if unknown */
};

/*
 * Reads a non-streaming message reply (json, len bytes, need not be
 * NUL-terminated).  When it has a "usage" object, overwrites *u with its
 * counts (absent ones become 0) and the top-level "model" (or ""), and
 * returns 0.  Returns -1 and leaves *u alone when the text is not a JSON
 * object with a usage object, e.g. an error reply.
 */
int usage_from_message_json(const char *json, size_t len, struct usage *u);

/*
 * Folds one stream event into *u.  message_start contributes
 * message.usage and message.model; message_delta contributes usage
 * (output_tokens there is cumulative, and newer replies repeat the input and
 * cache counts).  For every count the latest non-zero
 * value wins, so a zero in a later event never erases a real count.  Other
 * events and unparsable data are ignored.  Returns 1 if *u changed, else 0.
 */
int usage_from_sse_event(const struct sse_event *ev, struct usage *u);

/*
 * True when ev is an `event: error`.  Then, if typelen > 0, copies the
 * data's error.type (e.g. "overloaded_error") into type, truncated and
 * NUL-terminated, or "" when the data does not say.  Returns false for any
 * other event and leaves type alone.
 */
bool usage_is_error_event(const struct sse_event *ev, char *type, size_t typelen);

#endif
