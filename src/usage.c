/*
 * usage: see usage.h.  Stream events: each call parses one JSON text with
 * cJSON and frees it before returning; only message_start, message_delta and
 * error events are parsed at all, so content deltas cost a name comparison.
 *
 * Compressed replies: usage_inflate_* run zlib's inflate over a copy of
 * each piece and hand the output to the same readers; the caller decides
 * which.
 *
 * Whole replies: struct usage_json is a state machine fed any cut of the
 * text.  Its states (enum uj_state) are the places between tokens plus one
 * each for being inside a string, a number and a literal; a bit per open
 * container says object or array.  It owns nothing and allocates nothing.
 * It must accept exactly what usage_from_message_json() accepted when it
 * parsed with cJSON 1.7.15 (as patched by Debian: numbers of any length),
 * so it copies cJSON's quirks rather than RFC 8259:
 *  - between tokens any byte <= 0x20 is whitespace, NUL included; after the
 *    root only space, tab, CR and LF; a UTF-8 BOM may open the text;
 *  - a number is the longest run of [0-9.eE+-] after a '-' or a digit, and
 *    must be wholly what strtod() reads: "-.5", "1." and "007" are numbers,
 *    "1e", "1.2.3" and "--1" are not; its length is unlimited;
 *  - a string ends at the first '"' that does not follow an unpaired
 *    backslash, and is then decoded on its own: a \u whose four digits are
 *    not all hex decodes to U+0000 yet still spans six bytes, so the decoder
 *    can fall out of step with the end finder, and a backslash the decoder
 *    sees last takes the closing quote as its second byte.  Both are run
 *    side by side here.  Lone surrogates fail; raw control bytes are kept;
 *  - names compare, and the model copies, as C strings: a NUL ends them;
 *  - at most 1000 containers deep.
 * The differential tests and the fuzz target hold it to cJSON.
 */
#include "usage.h"

#include "util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <strings.h>
#include <zlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A token count: a finite, non-negative number that fits a long long. */
static bool get_count(const cJSON *obj, const char *key, long long *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(it))
        return false;
    double d = it->valuedouble;
    if (!isfinite(d) || d < 0 || d >= 9.0e18)
        return false;
    *out = (long long)d;
    return true;
}

/* Copies n bytes of a string from a reply into dst (size > 0): truncated
 * at a UTF-8 boundary, control characters replaced, always NUL-terminated.
 * Only the first size - 1 bytes of src are read, so n may stand for a
 * longer string than src holds. */
static void copy_text_n(char *dst, size_t size, const char *src, size_t n)
{
    if (n >= size)
        n = utf8_cut(src, size - 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    dst[n] = '\0';
}

static void copy_text(char *dst, size_t size, const char *src)
{
    copy_text_n(dst, size, src, strlen(src));
}

/* Latest non-zero wins: a present, non-zero count replaces the old one. */
static bool merge_count(const cJSON *usage, const char *key, long long *field)
{
    long long v;
    if (!get_count(usage, key, &v) || v == 0 || v == *field)
        return false;
    *field = v;
    return true;
}

static bool merge_model(const cJSON *obj, struct usage *u)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, "model");
    if (!cJSON_IsString(m) || m->valuestring[0] == '\0')
        return false;
    char tmp[sizeof u->model];
    copy_text(tmp, sizeof tmp, m->valuestring);
    if (strcmp(tmp, u->model) == 0)
        return false;
    memcpy(u->model, tmp, sizeof tmp);
    return true;
}

static bool merge_usage(const cJSON *usage, struct usage *u)
{
    bool changed = false;
    if (!cJSON_IsObject(usage))
        return false;
    changed |= merge_count(usage, "input_tokens", &u->input);
    changed |= merge_count(usage, "output_tokens", &u->output);
    changed |= merge_count(usage, "cache_read_input_tokens", &u->cache_read);
    changed |= merge_count(usage, "cache_creation_input_tokens", &u->cache_creation);
    return changed;
}

/* Parses exactly len bytes as one JSON text; trailing bytes other than
 * whitespace make it fail, which cJSON_ParseWithLength() would allow. */
static cJSON *parse_exact(const char *p, size_t len)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(p, len, &end, false);
    if (!root)
        return NULL;
    for (size_t i = (size_t)(end - p); i < len; i++) {
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n') {
            cJSON_Delete(root);
            return NULL;
        }
    }
    return root;
}

static bool name_is(const struct sse_event *ev, const char *name)
{
    size_t n = strlen(name);
    return ev->name_len == n && memcmp(ev->name, name, n) == 0;
}

/* Where the scanner is (usage_json.state). */
enum uj_state {
    UJ_BOM0 = 0,  /* nothing read: a byte order mark may come */
    UJ_BOM1,      /* read EF */
    UJ_BOM2,      /* read EF BB */
    UJ_START,     /* before the root, which must be an object */
    UJ_OBJ_FIRST, /* after '{': a name or '}' */
    UJ_OBJ_NAME,  /* after ',' in an object: a name */
    UJ_COLON,     /* after a name */
    UJ_VALUE,     /* after ':', or after ',' in an array */
    UJ_ARR_FIRST, /* after '[': a value or ']' */
    UJ_AFTER,     /* after a value in a container: ',' or its closer */
    UJ_STRING,    /* inside a name or a string value */
    UJ_NUMBER,    /* inside a number */
    UJ_LITERAL,   /* inside null, true or false */
    UJ_TRAIL,     /* after the root: only JSON whitespace */
    UJ_ERROR,     /* not what cJSON accepts: the rest is ignored */
};

/* usage_json.flags */
enum {
    UJ_USAGE_FOUND = 0x01, /* the first top-level "usage" is an object */
    UJ_IN_USAGE = 0x02,    /* ... and it is open, at depth 2 */
    UJ_IS_NAME = 0x04,     /* the string being read is a member name */
    UJ_ESC = 0x08,         /* string end finder: last byte was an unpaired backslash */
    UJ_BAD_HEX = 0x10,     /* string: the \u being read has a non-hex digit */
    UJ_NEG = 0x20,         /* count: a leading '-' */
    UJ_EXP_NEG = 0x40,     /* count: a '-' after the e */
    UJ_STICKY = 0x80,      /* count: a non-zero digit beyond those kept */
};

/* Members whose value matters (usage_json.member); bit 1 << m of .seen. */
enum uj_member {
    UJ_M_NONE = 0,
    UJ_M_USAGE,
    UJ_M_MODEL,
    UJ_M_COUNT, /* UJ_M_COUNT + i is usage_json.count[i] */
};

/* Where the decoded bytes of a string go (usage_json.sink). */
enum uj_sink {
    UJ_SINK_NONE = 0,
    UJ_SINK_NAME,
    UJ_SINK_MODEL,
};

/* The string decoder (usage_json.sub inside a string). */
enum uj_dec {
    UJ_D_PLAIN = 0, /* between escapes */
    UJ_D_ESC,       /* after a backslash */
    UJ_D_U,         /* in \uXXXX, n digits read */
    UJ_D_U2,        /* in the \uXXXX after a high surrogate, n bytes read */
};

/* Number grammar (usage_json.sub inside a number): what strtod() reads
 * wholly, given a first byte that is '-' or a digit. */
enum uj_num {
    UJ_N_SIGN = 0, /* "-" */
    UJ_N_INT,      /* "-1" */
    UJ_N_DOT,      /* "-." */
    UJ_N_FRAC,     /* "1." "1.5" "-.5" */
    UJ_N_E,        /* "1e" */
    UJ_N_ESIGN,    /* "1e-" */
    UJ_N_EXP,      /* "1e5" */
    UJ_N_BAD,
};
enum { UJ_C_DIGIT = 0, UJ_C_DOT, UJ_C_E, UJ_C_PLUS, UJ_C_MINUS, UJ_C_END };

static const uint8_t num_next[UJ_N_BAD][UJ_C_END] = {
    /*             digit      .          e          +            -  */
    [UJ_N_SIGN] = {UJ_N_INT, UJ_N_DOT, UJ_N_BAD, UJ_N_BAD, UJ_N_BAD},
    [UJ_N_INT] = {UJ_N_INT, UJ_N_FRAC, UJ_N_E, UJ_N_BAD, UJ_N_BAD},
    [UJ_N_DOT] = {UJ_N_FRAC, UJ_N_BAD, UJ_N_BAD, UJ_N_BAD, UJ_N_BAD},
    [UJ_N_FRAC] = {UJ_N_FRAC, UJ_N_BAD, UJ_N_E, UJ_N_BAD, UJ_N_BAD},
    [UJ_N_E] = {UJ_N_EXP, UJ_N_BAD, UJ_N_BAD, UJ_N_ESIGN, UJ_N_ESIGN},
    [UJ_N_ESIGN] = {UJ_N_EXP, UJ_N_BAD, UJ_N_BAD, UJ_N_BAD, UJ_N_BAD},
    [UJ_N_EXP] = {UJ_N_EXP, UJ_N_BAD, UJ_N_BAD, UJ_N_BAD, UJ_N_BAD},
};

static const char uj_literal[3][6] = {"null", "true", "false"};

/* Significant digits kept of a count.  A decimal string rounds to the same
 * double as its first 64 significant digits followed by a 1 (when anything
 * non-zero follows them): every rounding boundary that matters for a count
 * (the midpoints between doubles below 2^63, and 1 - 2^-54) has at most 54
 * significant digits, so it cannot fall between the two. */
#define UJ_DIGITS ((int)sizeof(((struct usage_json *)0)->scratch.digits))
#define UJ_NAME_MAX ((uint8_t)sizeof(((struct usage_json *)0)->scratch.key))
#define UJ_MODEL_MAX ((uint8_t)sizeof(((struct usage_json *)0)->model))

void usage_json_init(struct usage_json *s)
{
    /* The buffers after the counters are read only as far as written. */
    memset(s, 0, offsetof(struct usage_json, model));
}

static int top_is_object(const struct usage_json *s)
{
    unsigned d = s->depth - 1u;
    return (s->kinds[d >> 3] >> (d & 7)) & 1;
}

static int open_container(struct usage_json *s, int object)
{
    if (s->depth >= USAGE_JSON_MAX_DEPTH)
        return -1;
    unsigned d = s->depth++;
    if (object)
        s->kinds[d >> 3] |= (uint8_t)(1u << (d & 7));
    else
        s->kinds[d >> 3] &= (uint8_t) ~(1u << (d & 7));
    return 0;
}

/* Names are kept only where one can matter: the root's members and those
 * of the usage object. */
static int names_matter(const struct usage_json *s)
{
    return s->depth == 1 || (s->depth == 2 && (s->flags & UJ_IN_USAGE));
}

static uint8_t name_member(const char *k, size_t n, unsigned depth)
{
    if (depth == 1) {
        if (n == 5 && memcmp(k, "usage", 5) == 0)
            return UJ_M_USAGE;
        if (n == 5 && memcmp(k, "model", 5) == 0)
            return UJ_M_MODEL;
        return UJ_M_NONE;
    }
    if (n == 12 && memcmp(k, "input_tokens", 12) == 0)
        return UJ_M_COUNT + 0;
    if (n == 13 && memcmp(k, "output_tokens", 13) == 0)
        return UJ_M_COUNT + 1;
    if (n == 23 && memcmp(k, "cache_read_input_tokens", 23) == 0)
        return UJ_M_COUNT + 2;
    if (n == 27 && memcmp(k, "cache_creation_input_tokens", 27) == 0)
        return UJ_M_COUNT + 3;
    return UJ_M_NONE;
}

/* A name that matters was read (decoded, n bytes, up to any NUL). */
static void note_name(struct usage_json *s, const char *k, size_t n)
{
    /* The first member of a name is the one cJSON_GetObjectItem finds. */
    uint8_t m = name_member(k, n, s->depth);
    if (m != UJ_M_NONE && !(s->seen & (1u << m))) {
        s->seen |= (uint8_t)(1u << m);
        s->member = m;
    }
}

/* A string ended (after its closing quote).  For a name, notes whether the
 * coming value is one that matters. */
static void end_string(struct usage_json *s)
{
    s->sink = UJ_SINK_NONE;
    s->sub = UJ_D_PLAIN;
    if (!(s->flags & UJ_IS_NAME))
        return;
    s->flags &= (uint8_t)~UJ_IS_NAME;
    s->member = UJ_M_NONE;
    if (names_matter(s) && s->key_len <= UJ_NAME_MAX)
        note_name(s, s->scratch.key, s->key_len);
}

/* One decoded byte of a string whose bytes are kept.  cJSON's strings are C
 * strings, so a NUL ends what strcmp() and strlen() see. */
static void sink_byte(struct usage_json *s, unsigned char c)
{
    if (c == 0) {
        s->sink = UJ_SINK_NONE;
    } else if (s->sink == UJ_SINK_NAME) {
        if (s->key_len < UJ_NAME_MAX)
            s->scratch.key[s->key_len] = (char)c;
        if (s->key_len <= UJ_NAME_MAX)
            s->key_len++;
    } else if (s->sink == UJ_SINK_MODEL) {
        if (s->model_len < UJ_MODEL_MAX)
            s->model[s->model_len] = (char)c;
        if (s->model_len <= UJ_MODEL_MAX)
            s->model_len++;
    }
}

static void sink_code_point(struct usage_json *s, unsigned long cp)
{
    if (s->sink == UJ_SINK_NONE)
        return;
    if (cp < 0x80) {
        sink_byte(s, (unsigned char)cp);
    } else if (cp < 0x800) {
        sink_byte(s, (unsigned char)(0xC0 | (cp >> 6)));
        sink_byte(s, (unsigned char)(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        sink_byte(s, (unsigned char)(0xE0 | (cp >> 12)));
        sink_byte(s, (unsigned char)(0x80 | ((cp >> 6) & 0x3F)));
        sink_byte(s, (unsigned char)(0x80 | (cp & 0x3F)));
    } else {
        sink_byte(s, (unsigned char)(0xF0 | (cp >> 18)));
        sink_byte(s, (unsigned char)(0x80 | ((cp >> 12) & 0x3F)));
        sink_byte(s, (unsigned char)(0x80 | ((cp >> 6) & 0x3F)));
        sink_byte(s, (unsigned char)(0x80 | (cp & 0x3F)));
    }
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Feeds one byte before the closing quote to the decoder, as cJSON's
 * parse_string() and utf16_literal_to_utf8() would read it.  -1 when cJSON
 * would fail. */
static int decode_byte(struct usage_json *s, unsigned char c)
{
    int h;
    switch (s->sub) {
    case UJ_D_PLAIN:
        if (c == '\\')
            s->sub = UJ_D_ESC;
        else if (s->sink != UJ_SINK_NONE)
            sink_byte(s, c);
        return 0;
    case UJ_D_ESC:
        switch (c) {
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        case '"':
        case '\\':
        case '/': break;
        case 'u':
            s->sub = UJ_D_U;
            s->n = 0;
            s->code = 0;
            s->flags &= (uint8_t)~UJ_BAD_HEX;
            return 0;
        default: return -1;
        }
        s->sub = UJ_D_PLAIN;
        if (s->sink != UJ_SINK_NONE)
            sink_byte(s, c);
        return 0;
    case UJ_D_U:
        h = hex_value(c);
        if (h < 0)
            s->flags |= UJ_BAD_HEX; /* parse_hex4() then yields 0 */
        s->code = (uint16_t)(s->code << 4 | (unsigned)(h & 0xF));
        if (++s->n < 4)
            return 0;
        if (s->flags & UJ_BAD_HEX)
            s->code = 0;
        if (s->code >= 0xDC00 && s->code <= 0xDFFF)
            return -1;
        if (s->code >= 0xD800 && s->code <= 0xDBFF) {
            s->high = s->code;
            s->sub = UJ_D_U2;
            s->n = 0;
            s->code = 0;
            return 0;
        }
        s->sub = UJ_D_PLAIN;
        sink_code_point(s, s->code);
        return 0;
    default: /* UJ_D_U2: "\uXXXX" with XXXX a low surrogate, or failure */
        if (s->n == 0 || s->n == 1) {
            if (c != (s->n == 0 ? '\\' : 'u'))
                return -1;
        } else {
            h = hex_value(c);
            if (h < 0)
                return -1;
            s->code = (uint16_t)(s->code << 4 | (unsigned)h);
        }
        if (++s->n < 6)
            return 0;
        if (s->code < 0xDC00 || s->code > 0xDFFF)
            return -1;
        s->sub = UJ_D_PLAIN;
        sink_code_point(s,
                        0x10000 + ((((unsigned long)s->high & 0x3FF) << 10) | (s->code & 0x3FF)));
        return 0;
    }
}

/*
 * The next '"' or '\\' (or, with nul, NUL) at or after p, or end.  Eight
 * bytes at a time where it can: a byte of w ^ pattern is zero where w
 * matches, and the lowest byte the zero test flags is always a true match.
 */
static inline const unsigned char *find_special(const unsigned char *p, const unsigned char *end,
                                                int nul)
{
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (end - p >= 8) {
        uint64_t w, q, b;
        memcpy(&w, p, sizeof w);
        q = w ^ (ones * '"');
        b = w ^ (ones * '\\');
        uint64_t hit = ((q - ones) & ~q) | ((b - ones) & ~b);
        if (nul)
            hit |= (w - ones) & ~w;
        hit &= highs;
        if (hit)
            return p + (__builtin_ctzll(hit) >> 3);
        p += 8;
    }
#endif
    while (p < end && *p != '"' && *p != '\\' && (!nul || *p != 0))
        p++;
    return p;
}

/* Keeps len bytes, none of them NUL, of a string being kept. */
static void sink_run(struct usage_json *s, const unsigned char *p, size_t len)
{
    uint8_t *n = s->sink == UJ_SINK_NAME ? &s->key_len : &s->model_len;
    char *dst = s->sink == UJ_SINK_NAME ? s->scratch.key : s->model;
    size_t max = s->sink == UJ_SINK_NAME ? UJ_NAME_MAX : UJ_MODEL_MAX;
    if (*n < max)
        memcpy(dst + *n, p, len < max - *n ? len : max - *n);
    /* Saturate one past the field: "longer than kept". */
    *n = (uint8_t)(len < max + 1 - *n ? *n + len : max + 1);
}

/* What a scan_*() function ended with. */
enum uj_scan { UJ_MORE = 0, UJ_DONE, UJ_BAD };

/* Scans string bytes from p; returns where it stopped: at end (UJ_MORE), or
 * after the closing quote (UJ_DONE) in *res. */
static const unsigned char *scan_string(struct usage_json *s, const unsigned char *p,
                                        const unsigned char *end, int *res)
{
    for (;;) {
        if (s->sub == UJ_D_PLAIN && !(s->flags & UJ_ESC)) {
            /* In step and between escapes: only '"' and '\\' mean anything. */
            if (s->sink == UJ_SINK_NONE) {
                p = find_special(p, end, 0);
            } else {
                const unsigned char *q = find_special(p, end, 1);
                sink_run(s, p, (size_t)(q - p));
                p = q;
                if (p < end && *p == 0) {
                    s->sink = UJ_SINK_NONE; /* see sink_byte() */
                    continue;
                }
            }
            if (p == end)
                break;
            if (*p++ == '"') {
                end_string(s);
                *res = UJ_DONE;
                return p;
            }
            s->flags |= UJ_ESC;
            s->sub = UJ_D_ESC;
        }
        if (p == end)
            break;
        unsigned char c = *p++;
        if (s->flags & UJ_ESC) {
            s->flags &= (uint8_t)~UJ_ESC;
        } else if (c == '"') {
            /* The end finder's closing quote.  A decoder left after a
             * backslash reads this quote as the escaped byte. */
            if (s->sub == UJ_D_ESC) {
                if (s->sink != UJ_SINK_NONE)
                    sink_byte(s, '"');
            } else if (s->sub != UJ_D_PLAIN) {
                *res = UJ_BAD;
                return p;
            }
            end_string(s);
            *res = UJ_DONE;
            return p;
        } else if (c == '\\') {
            s->flags |= UJ_ESC;
        }
        if (decode_byte(s, c) < 0) {
            *res = UJ_BAD;
            return p;
        }
    }
    *res = UJ_MORE;
    return p;
}

static void begin_count(struct usage_json *s, unsigned char c)
{
    s->n = 0;
    s->scale = 0;
    s->exp = 0;
    s->flags &= (uint8_t) ~(UJ_NEG | UJ_EXP_NEG | UJ_STICKY);
    if (c == '-')
        s->flags |= UJ_NEG;
}

/* Keeps what a count's value needs from byte c, which moved the number to
 * state st. */
static void count_byte(struct usage_json *s, unsigned char c, unsigned st)
{
    if (c == '-') {
        if (st == UJ_N_ESIGN)
            s->flags |= UJ_EXP_NEG;
        return;
    }
    if (c < '0' || c > '9')
        return;
    if (st == UJ_N_EXP) {
        if (s->exp < 100000000)
            s->exp = s->exp * 10 + (c - '0');
        return;
    }
    int frac = st == UJ_N_FRAC;
    if (s->n == 0 && c == '0') {
        if (frac && s->scale > -1000000000)
            s->scale--;
    } else if (s->n < UJ_DIGITS) {
        s->scratch.digits[s->n++] = (char)c;
        if (frac && s->scale > -1000000000)
            s->scale--;
    } else {
        if (c != '0')
            s->flags |= UJ_STICKY;
        if (!frac && s->scale < 1000000000)
            s->scale++;
    }
}

/* A count ended in state st: its value as get_count() would take it. */
static void end_count(struct usage_json *s, unsigned st, long long *out)
{
    if ((s->flags & UJ_NEG) || s->n == 0)
        return; /* negative or zero: 0 either way */
    if (st == UJ_N_INT && s->n <= 15) {
        long long v = 0; /* below 2^53: the double would be exact */
        for (unsigned i = 0; i < s->n; i++)
            v = v * 10 + (s->scratch.digits[i] - '0');
        *out = v;
        return;
    }
    char text[UJ_DIGITS + 16];
    long long e = (long long)s->scale + ((s->flags & UJ_EXP_NEG) ? -(long long)s->exp : s->exp);
    size_t k = s->n;
    memcpy(text, s->scratch.digits, k);
    if (s->flags & UJ_STICKY) {
        text[k++] = '1';
        e--;
    }
    if (e > 99999)
        e = 99999; /* inf (or over 9e18) and 0 either way */
    if (e < -99999)
        e = -99999;
    snprintf(text + k, sizeof text - k, "e%lld", e);
    double d = strtod(text, NULL);
    if (!isfinite(d) || d < 0 || d >= 9.0e18)
        return;
    *out = (long long)d;
}

/* Scans number bytes from p, in grammar state s->sub; returns where it
 * stopped: at end (UJ_MORE), or at the first byte after the number
 * (UJ_DONE) in *res. */
static const unsigned char *scan_number(struct usage_json *s, const unsigned char *p,
                                        const unsigned char *end, int *res)
{
    unsigned st = s->sub;
    int count = s->member >= UJ_M_COUNT;
    for (; p < end; p++) {
        unsigned char c = *p;
        unsigned cls;
        if ((unsigned)(c - '0') < 10)
            cls = UJ_C_DIGIT;
        else if (c == '.')
            cls = UJ_C_DOT;
        else if (c == 'e' || c == 'E')
            cls = UJ_C_E;
        else if (c == '+')
            cls = UJ_C_PLUS;
        else if (c == '-')
            cls = UJ_C_MINUS;
        else
            break;
        st = num_next[st][cls];
        if (st == UJ_N_BAD) {
            *res = UJ_BAD;
            return p;
        }
        if (count)
            count_byte(s, c, st);
    }
    if (p == end) {
        s->sub = (uint8_t)st;
        *res = UJ_MORE;
        return p;
    }
    /* The run ended: strtod() must have read all of it. */
    if (st != UJ_N_INT && st != UJ_N_FRAC && st != UJ_N_EXP) {
        *res = UJ_BAD;
        return p;
    }
    if (count)
        end_count(s, st, &s->count[s->member - UJ_M_COUNT]);
    s->member = UJ_M_NONE;
    *res = UJ_DONE;
    return p;
}

/* Skips whitespace as cJSON's buffer_skip_whitespace() does, any byte up to
 * 0x20; when the piece runs out, remembers where the scan was and returns. */
#define UJ_SKIP_SPACE(where)          \
    do {                              \
        while (p < end && *p <= 0x20) \
            p++;                      \
        if (p == end) {               \
            s->state = (where);       \
            return;                   \
        }                             \
    } while (0)

/*
 * The scanner proper.  Each label is a state of enum uj_state; moving on
 * from one token to the next is a jump, and the state is written back only
 * when the piece runs out (or the text is refused).
 */
void usage_json_feed(struct usage_json *s, const char *data, size_t len)
{
    const unsigned char *p = (const unsigned char *)data;
    const unsigned char *end = p + len;
    unsigned char c;
    uint8_t m;
    int res, is_name;

    if (p == end)
        return;
    switch (s->state) {
    case UJ_BOM0: goto bom0;
    case UJ_BOM1: goto bom1;
    case UJ_BOM2: goto bom2;
    case UJ_START: goto start;
    case UJ_OBJ_FIRST: goto obj_first;
    case UJ_OBJ_NAME: goto obj_name;
    case UJ_COLON: goto colon;
    case UJ_VALUE: goto value;
    case UJ_ARR_FIRST: goto arr_first;
    case UJ_AFTER: goto after;
    case UJ_STRING: goto string;
    case UJ_NUMBER: goto number;
    case UJ_LITERAL: goto literal;
    case UJ_TRAIL: goto trail;
    default: return; /* UJ_ERROR */
    }

bom0:
    /* cJSON skips a BOM only at the very start, before any whitespace. */
    if (*p != 0xEF)
        goto start;
    p++;
bom1:
    if (p == end) {
        s->state = UJ_BOM1;
        return;
    }
    if (*p++ != 0xBB)
        goto bad;
bom2:
    if (p == end) {
        s->state = UJ_BOM2;
        return;
    }
    if (*p++ != 0xBF)
        goto bad;
start:
    UJ_SKIP_SPACE(UJ_START);
    if (*p++ != '{')
        goto bad; /* not an object: no usage either way */
    open_container(s, 1);
obj_first:
    UJ_SKIP_SPACE(UJ_OBJ_FIRST);
    c = *p++;
    if (c == '}')
        goto close;
    if (c != '"')
        goto bad;
    goto name;
obj_name:
    UJ_SKIP_SPACE(UJ_OBJ_NAME);
    if (*p++ != '"')
        goto bad;
name:
    /* Usually the whole name is here, without escapes: then it is looked
     * at where it lies.  Otherwise its decoded bytes are kept as they come. */
    if (names_matter(s)) {
        const unsigned char *q = find_special(p, end, 1);
        if (q < end && *q == '"') {
            note_name(s, (const char *)p, (size_t)(q - p));
            p = q + 1;
            goto colon;
        }
        s->sink = UJ_SINK_NAME;
    } else {
        const unsigned char *q = find_special(p, end, 0);
        if (q < end && *q == '"') {
            p = q + 1;
            goto colon;
        }
        s->sink = UJ_SINK_NONE;
    }
    s->flags |= UJ_IS_NAME;
    s->sub = UJ_D_PLAIN;
    s->key_len = 0;
string:
    is_name = s->flags & UJ_IS_NAME; /* end_string() clears it */
    p = scan_string(s, p, end, &res);
    if (res != UJ_DONE) {
        if (res == UJ_BAD)
            goto bad;
        s->state = UJ_STRING;
        return;
    }
    if (!is_name)
        goto after;
colon:
    UJ_SKIP_SPACE(UJ_COLON);
    if (*p++ != ':')
        goto bad;
value:
    UJ_SKIP_SPACE(UJ_VALUE);
    c = *p++;
value_byte:
    m = s->member;
    s->member = UJ_M_NONE;
    switch (c) {
    case '"':
        if (m != UJ_M_MODEL) {
            const unsigned char *q = find_special(p, end, 0);
            if (q < end && *q == '"') {
                p = q + 1; /* the usual string, whole and plain */
                goto after;
            }
        }
        s->sub = UJ_D_PLAIN;
        s->sink = m == UJ_M_MODEL ? UJ_SINK_MODEL : UJ_SINK_NONE;
        goto string;
    case '{':
        if (open_container(s, 1) < 0)
            goto bad;
        if (m == UJ_M_USAGE)
            s->flags |= UJ_USAGE_FOUND | UJ_IN_USAGE;
        goto obj_first;
    case '[':
        if (open_container(s, 0) < 0)
            goto bad;
        goto arr_first;
    case 'n':
    case 't':
    case 'f':
        s->sub = c == 'n' ? 0 : c == 't' ? 1 : 2;
        s->n = 1;
        goto literal;
    default:
        if (c != '-' && (c < '0' || c > '9'))
            goto bad;
        s->sub = c == '-' ? UJ_N_SIGN : UJ_N_INT;
        if (m >= UJ_M_COUNT) {
            s->member = m;
            begin_count(s, c);
            count_byte(s, c, s->sub);
        }
        goto number;
    }
arr_first:
    UJ_SKIP_SPACE(UJ_ARR_FIRST);
    c = *p++;
    if (c == ']')
        goto close;
    goto value_byte;
number:
    p = scan_number(s, p, end, &res);
    if (res != UJ_DONE) {
        if (res == UJ_BAD)
            goto bad;
        s->state = UJ_NUMBER;
        return;
    }
    goto after;
literal : {
    const char *lit = uj_literal[s->sub];
    while (lit[s->n] != '\0') {
        if (p == end) {
            s->state = UJ_LITERAL;
            return;
        }
        if (*p++ != (unsigned char)lit[s->n])
            goto bad;
        s->n++;
    }
}
after:
    UJ_SKIP_SPACE(UJ_AFTER);
    c = *p++;
    if (c == ',') {
        if (top_is_object(s))
            goto obj_name;
        goto value;
    }
    if (c != (top_is_object(s) ? '}' : ']'))
        goto bad;
close:
    if (s->depth == 2)
        s->flags &= (uint8_t)~UJ_IN_USAGE;
    if (--s->depth)
        goto after;
trail:
    /* parse_exact(): only JSON whitespace after the root. */
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    if (p < end)
        goto bad;
    s->state = UJ_TRAIL;
    return;
bad:
    s->state = UJ_ERROR;
}

int usage_json_finish(struct usage_json *s, struct usage *u)
{
    if (s->state != UJ_TRAIL || !(s->flags & UJ_USAGE_FOUND))
        return -1;
    struct usage fresh = {
        .input = s->count[0],
        .output = s->count[1],
        .cache_read = s->count[2],
        .cache_creation = s->count[3],
    };
    /* model_len saturates above the field, which is what copy_text_n()
     * needs to cut as it would cut the whole string. */
    copy_text_n(fresh.model, sizeof fresh.model, s->model, s->model_len);
    *u = fresh;
    return 0;
}

int usage_from_message_json(const char *json, size_t len, struct usage *u)
{
    struct usage_json s;
    usage_json_init(&s);
    usage_json_feed(&s, json, len);
    return usage_json_finish(&s, u);
}

int usage_from_sse_event(const struct sse_event *ev, struct usage *u)
{
    bool start = name_is(ev, "message_start");
    if (!start && !name_is(ev, "message_delta"))
        return 0;
    cJSON *root = parse_exact(ev->data, ev->data_len);
    if (!root)
        return 0;
    bool changed = false;
    if (start) {
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(root, "message");
        if (cJSON_IsObject(msg)) {
            changed |= merge_usage(cJSON_GetObjectItemCaseSensitive(msg, "usage"), u);
            changed |= merge_model(msg, u);
        }
    } else {
        changed |= merge_usage(cJSON_GetObjectItemCaseSensitive(root, "usage"), u);
    }
    cJSON_Delete(root);
    return changed ? 1 : 0;
}

bool usage_is_error_event(const struct sse_event *ev, char *type, size_t typelen)
{
    if (!name_is(ev, "error"))
        return false;
    if (typelen == 0)
        return true;
    type[0] = '\0';
    cJSON *root = parse_exact(ev->data, ev->data_len);
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(err, "type");
    if (cJSON_IsString(t))
        copy_text(type, typelen, t->valuestring);
    cJSON_Delete(root);
    return true;
}

/* ---- compressed replies --------------------------------------------------- */

#define USAGE_INFLATE_CHUNK (16 * 1024)

static void trim_blanks(const char **p, size_t *len)
{
    while (*len && (**p == ' ' || **p == '\t')) {
        (*p)++;
        (*len)--;
    }
    while (*len && ((*p)[*len - 1] == ' ' || (*p)[*len - 1] == '\t'))
        (*len)--;
}

bool usage_coding_identity(const char *coding, size_t len)
{
    if (!coding)
        return true;
    trim_blanks(&coding, &len);
    return len == 0 || (len == 8 && strncasecmp(coding, "identity", 8) == 0);
}

int usage_inflate_init(struct usage_inflate *s, const char *coding, size_t len, size_t cap)
{
    memset(s, 0, sizeof *s);
    if (!coding)
        return -1;
    trim_blanks(&coding, &len);
    if (!((len == 4 && strncasecmp(coding, "gzip", 4) == 0) ||
          (len == 6 && strncasecmp(coding, "x-gzip", 6) == 0) ||
          (len == 7 && strncasecmp(coding, "deflate", 7) == 0)))
        return -1;
    z_stream *z = xcalloc(1, sizeof *z);
    /* 15 + 32: a 32 KiB window, and the gzip or zlib header detected. */
    if (inflateInit2(z, 15 + 32) != Z_OK) {
        free(z);
        return -1;
    }
    s->z = z;
    s->cap = cap;
    return 0;
}

enum usage_inflate_rc usage_inflate_feed(struct usage_inflate *s, const char *data, size_t len,
                                         usage_sink_cb sink, void *ud)
{
    z_stream *z = s->z;
    char out[USAGE_INFLATE_CHUNK];
    if (!z)
        return USAGE_INFLATE_CORRUPT;
    z->next_in = (Bytef *)(uintptr_t)data;
    z->avail_in = 0;
    for (;;) {
        if (!z->avail_in && len) {
            /* avail_in is 32 bits: hand the input over in slices. */
            uInt n = len > (1u << 30) ? (1u << 30) : (uInt)len;
            z->avail_in = n;
            len -= n;
        }
        size_t room = s->cap - s->out;
        if (room == 0)
            return USAGE_INFLATE_TOO_LARGE;
        z->next_out = (Bytef *)out;
        z->avail_out = (uInt)(room < sizeof out ? room : sizeof out);
        uInt before = z->avail_out;
        int rc = inflate(z, Z_NO_FLUSH);
        size_t got = before - z->avail_out;
        s->out += got;
        if (got)
            sink(ud, out, got);
        if (rc == Z_STREAM_END) {
            if (!z->avail_in && !len)
                break;
            /* Another gzip member follows. */
            if (inflateReset(z) != Z_OK)
                return USAGE_INFLATE_CORRUPT;
            continue;
        }
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            return USAGE_INFLATE_CORRUPT;
        if (z->avail_out == 0)
            continue; /* the buffer is full: more output may be waiting */
        if (!z->avail_in && !len)
            break; /* all input used */
        if (rc == Z_BUF_ERROR)
            return USAGE_INFLATE_CORRUPT; /* no progress with input and room left */
    }
    return USAGE_INFLATE_OK;
}

void usage_inflate_release(struct usage_inflate *s)
{
    if (!s->z)
        return;
    inflateEnd(s->z);
    free(s->z);
    s->z = NULL;
}
