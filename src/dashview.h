/*
 * dashview: the terminal dashboard's pure half.  It turns one /status
 * document (the same cJSON object /status serves) and the dashboard's own
 * view state (cursor, toggles, language, the last message) into a screen
 * of styled text lines, and turns a key press into an action (quit, or an
 * admin operation with its JSON body).  It does no I/O, knows nothing of
 * ncurses or of the event loop, and never trusts the document: any field
 * may be missing or of the wrong type, and every string from it is
 * sanitized (control characters and broken UTF-8 become '?') before it is
 * measured, so a line never exceeds the screen width.
 *
 * Widths are display columns: CJK characters count two, everything else
 * one (the sparkline blocks and marks are single-width in every UTF-8
 * terminal we know).  In ASCII mode (a locale that is not UTF-8) nothing
 * outside ASCII is produced.
 */
#ifndef ZEPHYR_DASHVIEW_H
#define ZEPHYR_DASHVIEW_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Styles the drawer maps to terminal attributes. */
enum dv_style {
    DV_PLAIN = 0,
    DV_TITLE = 1, /* the top bar */
    DV_HEAD = 2,  /* section and column headers */
    DV_SEL = 3,   /* the row under the cursor */
    DV_GOOD = 4,
    DV_BAD = 5,
    DV_WARN = 6,
    DV_DIM = 7,
    DV_KEYS = 8, /* the bottom bar */
    DV_STRONG = 9,
};

enum dv_lang {
    DV_LANG_EN = 0,
    DV_LANG_ZH = 1,
};

#define DV_MAX_COLS 400
#define DV_LINE_BYTES (DV_MAX_COLS * 4 + 8)
#define DV_MAX_SPANS 32
/* From this width on, the events and the log are shown side by side. */
#define DV_SIDE_BY_SIDE_COLS 200

struct dv_span {
    size_t off, len; /* bytes of dv_line.text */
    enum dv_style style;
};

/* One screen row: UTF-8 text no wider than the screen, split in spans.
 * bg styles the whole row, the columns past the text included. */
struct dv_line {
    char text[DV_LINE_BYTES];
    size_t len;
    int cols; /* display width of text */
    int max;  /* screen width */
    struct dv_span spans[DV_MAX_SPANS];
    int n_spans;
    enum dv_style bg;
};

struct dv_screen {
    int rows, cols;
    struct dv_line *lines; /* owns; rows of them */
};

/* What the dashboard itself remembers between frames. */
struct dv_view {
    enum dv_lang lang;
    bool utf8;          /* the terminal takes UTF-8 */
    int cursor;         /* index into the endpoint list shown */
    bool all_groups;    /* list every group's endpoints */
    bool help;          /* the help page replaces the body */
    bool show_log;      /* the bottom panel shows log lines, not events */
    bool show_sessions; /* the bottom panel shows the sessions, not events */
    bool quitting;      /* quit was asked for; the proxy is draining */
    const char *remote; /* borrows; the URL in --connect mode, else NULL */
    const char *error;  /* borrows; why there is no document, or NULL */
    char msg[256];      /* the last operation's outcome, or "" */
    bool msg_bad;
    bool was_running;          /* checks.running in the previous frame */
    uint64_t check_started_ms; /* monotonic time checks.running turned true */
    const char *const *log;    /* borrows; log lines, oldest first */
    size_t n_log;
};

/* A fresh view: no cursor yet (the first document puts it on the current
 * endpoint), nothing toggled. */
void dv_view_init(struct dv_view *v, enum dv_lang lang, bool utf8);
/* Notes what changes between frames: when a check cycle started (for the
 * time left), and the cursor's first place. */
void dv_view_observe(struct dv_view *v, const cJSON *status, uint64_t now_ms);

/* A screen of rows x cols (at least 1x1; wider than DV_MAX_COLS is cut),
 * and its release.  Re-initialise after a resize. */
void dv_screen_init(struct dv_screen *s, int rows, int cols);
void dv_screen_release(struct dv_screen *s);

/*
 * Lays out a whole frame of s->rows x s->cols (at least 80x24 is the
 * design size; smaller screens get a truncated or a "too small" frame).
 * status may be NULL (nothing fetched yet, or v->error says why).  now_ms
 * is the monotonic clock, for the time left of a running check.  The last
 * row always lists the keys.
 */
void dv_render(struct dv_screen *s, const cJSON *status, const struct dv_view *v, uint64_t now_ms);

/* Keys that are not plain characters. */
enum dv_key {
    DV_KEY_UP = 0x10001,
    DV_KEY_DOWN = 0x10002,
    DV_KEY_ENTER = 0x10003,
    DV_KEY_PGUP = 0x10004,
    DV_KEY_PGDN = 0x10005,
    DV_KEY_HOME = 0x10006,
    DV_KEY_END = 0x10007,
};

enum dv_act {
    DV_ACT_NONE = 0,   /* the key changed nothing */
    DV_ACT_REDRAW = 1, /* the view changed */
    DV_ACT_QUIT = 2,
    DV_ACT_ADMIN = 3, /* run op with body */
};

struct dv_action {
    enum dv_act kind;
    char op[24];    /* "check", "pause", "resume", "mode", "pin", "group",
                         * "sessions/release" */
    cJSON *body;    /* owns; NULL or a JSON object for the operation */
    char what[160]; /* what the operation does, for the message line */
};

/* Maps a key (a character, 3 for Ctrl-C, or a dv_key) to an action and
 * updates the view (cursor, toggles).  The caller runs an admin action and
 * then calls dv_action_release(). */
enum dv_act dv_handle_key(struct dv_view *v, const cJSON *status, int key, struct dv_action *out);
void dv_action_release(struct dv_action *a);

/* The endpoints the list shows (the current group's, or all) and the name
 * of the idx-th one (borrowed from status), NULL when out of range. */
int dv_endpoint_count(const cJSON *status, const struct dv_view *v);
const char *dv_endpoint_name(const cJSON *status, const struct dv_view *v, int idx);

/* ---- formatting helpers, exposed for the unit test -------------------- */

/* Display width of UTF-8 text (invalid bytes count one column each). */
int dv_str_width(const char *s);
/* Latencies as a sparkline of exactly width columns (right-aligned, blank
 * on the left when there are fewer samples); a sample < 0 is a failure
 * and shows as 'x'.  Returns out. */
char *dv_sparkline(char *out, size_t outsz, const double *ms, size_t n, int width, bool utf8);
/* 42s, 1m35s, 2h05m, 3d04h.  Returns out. */
char *dv_fmt_duration(char *out, size_t outsz, double seconds);
/* 812B, 80.0K, 5.1M, 1.2G.  Returns out. */
char *dv_fmt_bytes(char *out, size_t outsz, double bytes);
/* 812, 12.3k, 4.5M.  Returns out. */
char *dv_fmt_count(char *out, size_t outsz, double n);

#endif
