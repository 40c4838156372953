/*
 * usage: token counts and model name from Anthropic Messages API replies,
 * either a whole non-streaming JSON reply or the events of a stream as the
 * sse scanner delivers them.  Also recognises the `event: error` an upstream
 * may send after it has already answered 200.
 *
 * Pure: stream events are parsed with cJSON; a whole reply goes through a
 * small incremental scanner (struct usage_json) that accepts exactly the
 * texts cJSON accepts and builds no tree.  The caller owns the struct usage
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
#include <stdint.h>

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
 * object with a usage object, e.g. an error reply.  Same as
 * usage_json_init(), one usage_json_feed() and usage_json_finish().
 */
int usage_from_message_json(const char *json, size_t len, struct usage *u);

/*
 * The same reader, fed a reply in pieces as they arrive, so the reply need
 * not be kept.  It builds no tree: it checks the text as cJSON would
 * (cJSON_ParseWithLengthOpts, then nothing but JSON whitespace after the
 * root, nesting up to 1000 deep) and keeps only the top-level "model"
 * string, the counts of the top-level "usage" object and a bit per open
 * container.  Where a name repeats, the first member counts, as with
 * cJSON_GetObjectItemCaseSensitive().  The fields are private to usage.c;
 * the struct is public only so that it can live inside a request.
 */
#define USAGE_JSON_MAX_DEPTH 1000

struct usage_json {
    long long count[4]; /* usage counts found: input, output, cache_read, cache_creation */
    int32_t scale;      /* number: power of ten that scales the digits kept */
    int32_t exp;        /* number: its exponent part, saturated */
    uint16_t depth;     /* open containers; the root object is depth 1 */
    uint16_t code;      /* string: the \uXXXX being read */
    uint16_t high;      /* string: a high surrogate waiting for its low half */
    uint8_t state;      /* enum uj_state in usage.c */
    uint8_t sub;        /* number, literal or string-decoder state */
    uint8_t n;          /* bytes of the current escape, literal position or digits kept */
    uint8_t flags;      /* UJ_* bits in usage.c */
    uint8_t member;     /* which interesting member the coming value belongs to */
    uint8_t seen;       /* interesting names already met: later ones are ignored */
    uint8_t sink;       /* where the current string's decoded bytes go */
    uint8_t key_len;    /* bytes of the member name kept, 28 meaning too long */
    uint8_t model_len;  /* bytes of the model seen, saturating at 96 */
    char model[95];     /* the first bytes of the model string, decoded */
    union {
        char key[27];    /* the member name being read, decoded */
        char digits[64]; /* the significant digits of a count being read */
    } scratch;
    uint8_t kinds[(USAGE_JSON_MAX_DEPTH + 7) / 8]; /* bit d-1: container at depth d is an object */
};

/* Prepares s for one reply. */
void usage_json_init(struct usage_json *s);

/*
 * Scans the next len bytes of the reply.  Any cut is fine, down to a byte
 * at a time; once the text is known to be invalid the rest is ignored.
 */
void usage_json_feed(struct usage_json *s, const char *data, size_t len);

/*
 * Ends the reply: returns 0 and overwrites *u as usage_from_message_json()
 * would for the whole text fed, or returns -1 and leaves *u alone.  s needs
 * usage_json_init() before it is used again.
 */
int usage_json_finish(struct usage_json *s, struct usage *u);

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

/*
 * A compressed reply inflated for the usage readers only: the bytes the
 * client gets are never touched.  SDKs ask for gzip and real endpoints
 * compress JSON replies and event streams alike.  zlib, streaming: each
 * piece fed is inflated into a 16 KiB stack buffer handed to sink as it
 * fills, so memory is zlib's state (about 40 KiB) while the reply lasts.
 * At most cap inflated bytes are produced, a bound on the work a small
 * input can cause.
 */
enum usage_inflate_rc {
    USAGE_INFLATE_OK = 0,
    USAGE_INFLATE_CORRUPT = 1,   /* not gzip/zlib data, or broken */
    USAGE_INFLATE_TOO_LARGE = 2, /* more than cap bytes inflated */
};

struct usage_inflate {
    void *z;    /* owns: the z_stream; NULL when not inflating */
    size_t out; /* bytes inflated so far */
    size_t cap;
};

typedef void (*usage_sink_cb)(void *ud, const char *data, size_t len);

/* Whether coding (a Content-Encoding value) names no coding: absent,
 * empty or "identity". */
bool usage_coding_identity(const char *coding, size_t len);

/* Prepares s for a reply in coding, which must be "gzip", "x-gzip" or
 * "deflate" (case-insensitive, the zlib or gzip format either way).
 * Returns 0, or -1 for any other coding: then s holds nothing. */
int usage_inflate_init(struct usage_inflate *s, const char *coding, size_t len, size_t cap);

/*
 * Inflates the next len bytes and hands the output to sink.  Concatenated
 * gzip members are read one after another.  Returns USAGE_INFLATE_OK, or
 * why it stopped: then the rest must not be fed (release s).
 */
enum usage_inflate_rc usage_inflate_feed(struct usage_inflate *s, const char *data, size_t len,
                                         usage_sink_cb sink, void *ud);

/* Frees zlib's state; a no-op when there is none. */
void usage_inflate_release(struct usage_inflate *s);

#endif
