/*
 * dashboard: see dashboard.h.  This file is the terminal and loop half;
 * what a frame says and what a key does live in dashview.c, which is pure.
 *
 * Handles on the loop (all closed by dashboard_free, the struct is freed
 * in the last close callback):
 *   input   uv_poll on stdin; each wake-up drains getch() (nodelay mode)
 *   tick    redraws every DASH_TICK_MS, for the countdowns
 *   soon    a one-shot timer that coalesces dashboard_notify() calls into
 *           one redraw a few milliseconds later
 *   winch   SIGWINCH: read the new size, resizeterm(), redraw
 * Every redraw asks the source for a fresh /status document, keeps it
 * (keys act on what the operator sees) and hands it to dv_render().
 *
 * The terminal is restored on every way out: dashboard_free() (the app's
 * shutdown, whatever started it: q, Ctrl-C, SIGINT, SIGTERM), an atexit()
 * handler for an exit() from elsewhere, and a handler for the fatal
 * signals (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGQUIT).  That
 * handler is the one exception to "handlers only set a flag": the process
 * is dying, so it writes the terminal's reset sequence (captured at start)
 * and restores the saved termios with async-signal-safe calls only, then
 * hands the signal to whoever handled it before (AddressSanitizer, or the
 * default action).  Only one dashboard exists at a time: ncurses is global.
 *
 * Remote mode (--dashboard --connect URL) is remote.c: a source that
 * fetches the document over the network on the same loop, and reports the
 * outcome of an operation later (dashboard_admin_done).
 */
#include "dashboard.h"

#include <curses.h>
#include <errno.h>
#include <fcntl.h>
#include <langinfo.h>
#include <locale.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "dashview.h"
#include "util.h"

#define DASH_TICK_MS 250
#define DASH_SOON_MS 20
#define DASH_MSG_MS 10000
#define DASH_LOG_LINES 200

struct dashboard {
    uv_loop_t *loop;        /* borrows */
    struct dash_source src; /* copy; its ud is borrowed */
    SCREEN *scr;            /* owns; NULL once the terminal is restored */
    uv_poll_t input;
    uv_timer_t tick;
    uv_timer_t soon;
    uv_signal_t winch;
    int open_handles; /* handles not yet closed */
    bool closing;
    bool input_inited; /* input was initialised (needs closing) */
    bool input_dead;   /* stdin went away; no more polling */
    int idle_wakeups;  /* readable wake-ups that gave no key */
    struct dv_view view;
    struct dv_screen screen;
    cJSON *status;             /* owns; the document on screen */
    uint64_t msg_ms;           /* when view.msg was set */
    char pending_what[160];    /* what an operation still running will do, or "" */
    char *log[DASH_LOG_LINES]; /* owns; a ring of log lines */
    size_t log_first, n_log;
    const char *log_view[DASH_LOG_LINES]; /* borrows log[], oldest first */
};

/* ---- the terminal, process-wide ---------------------------------------- */

static volatile sig_atomic_t term_active;
static struct termios term_saved;
static bool term_saved_ok;
static int term_fl_saved = -1; /* stdin's file status flags at start */
static char term_reset[256];   /* written by the fatal-signal handler */
static size_t term_reset_len;
static bool term_atexit_done;

static const int fatal_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGQUIT};
#define N_FATAL (sizeof fatal_signals / sizeof fatal_signals[0])
static struct sigaction fatal_old[N_FATAL];
static bool fatal_installed;

static void term_reset_add(const char *cap, const char *fallback)
{
    char *s = tigetstr((char *)cap);
    const char *use = (s && s != (char *)-1) ? s : fallback;
    size_t n = strlen(use);
    if (term_reset_len + n < sizeof term_reset) {
        memcpy(term_reset + term_reset_len, use, n);
        term_reset_len += n;
    }
}

/* Restores the terminal; idempotent, and safe to call from atexit(). */
static void term_restore(void)
{
    if (!term_active)
        return;
    term_active = 0;
    endwin();
    fflush(stdout);
    if (term_fl_saved >= 0)
        (void)fcntl(STDIN_FILENO, F_SETFL, term_fl_saved);
}

static void term_atexit(void)
{
    term_restore();
}

static void on_fatal_signal(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    if (term_active) {
        term_active = 0;
        ssize_t w = write(STDOUT_FILENO, term_reset, term_reset_len);
        (void)w;
        if (term_saved_ok)
            (void)tcsetattr(STDIN_FILENO, TCSANOW, &term_saved);
    }
    for (size_t i = 0; i < N_FATAL; i++)
        if (fatal_signals[i] == sig)
            sigaction(sig, &fatal_old[i], NULL);
    /* A fault repeats when the handler returns and then reaches the previous
     * handler; a signal somebody sent is sent again. */
    if (si == NULL || si->si_code <= 0 || sig == SIGABRT || sig == SIGQUIT)
        raise(sig);
}

static void fatal_install(void)
{
    if (fatal_installed)
        return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fatal_signal;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < N_FATAL; i++)
        sigaction(fatal_signals[i], &sa, &fatal_old[i]);
    fatal_installed = true;
}

static void fatal_uninstall(void)
{
    if (!fatal_installed)
        return;
    for (size_t i = 0; i < N_FATAL; i++)
        sigaction(fatal_signals[i], &fatal_old[i], NULL);
    fatal_installed = false;
}

static bool locale_is_utf8(void)
{
    const char *cs = nl_langinfo(CODESET);
    return cs && (strcasecmp(cs, "UTF-8") == 0 || strcasecmp(cs, "utf8") == 0);
}

enum {
    PAIR_GOOD = 1,
    PAIR_BAD = 2,
    PAIR_WARN = 3,
    PAIR_TITLE = 4,
};

static attr_t style_attr(enum dv_style st)
{
    bool color = has_colors();
    switch (st) {
    case DV_PLAIN: return A_NORMAL;
    case DV_TITLE: return color ? (attr_t)(COLOR_PAIR(PAIR_TITLE) | A_BOLD) : A_REVERSE | A_BOLD;
    case DV_HEAD: return A_BOLD;
    case DV_SEL: return A_REVERSE;
    case DV_GOOD: return color ? (attr_t)COLOR_PAIR(PAIR_GOOD) : A_NORMAL;
    case DV_BAD: return color ? (attr_t)(COLOR_PAIR(PAIR_BAD) | A_BOLD) : A_BOLD;
    case DV_WARN: return color ? (attr_t)COLOR_PAIR(PAIR_WARN) : A_NORMAL;
    case DV_DIM: return A_DIM;
    case DV_KEYS: return A_REVERSE;
    case DV_STRONG: return A_BOLD;
    }
    return A_NORMAL;
}

/* ---- drawing ---------------------------------------------------------------- */

static void dash_draw(struct dashboard *d)
{
    if (d->closing || !term_active)
        return;
    uint64_t now = now_mono_ms();
    cJSON *st = d->src.status ? d->src.status(d->src.ud) : NULL;
    if (d->closing || !term_active) {
        cJSON_Delete(st);
        return;
    }
    cJSON_Delete(d->status);
    d->status = st;
    dv_view_observe(&d->view, st, now);
    if (d->view.msg[0] && now - d->msg_ms > DASH_MSG_MS)
        d->view.msg[0] = '\0';
    for (size_t i = 0; i < d->n_log; i++)
        d->log_view[i] = d->log[(d->log_first + i) % DASH_LOG_LINES];
    d->view.log = d->log_view;
    d->view.n_log = d->n_log;

    int rows, cols;
    getmaxyx(stdscr, rows, cols);
    if (rows < 1 || cols < 1)
        return;
    if (rows != d->screen.rows || (cols > DV_MAX_COLS ? DV_MAX_COLS : cols) != d->screen.cols) {
        dv_screen_release(&d->screen);
        dv_screen_init(&d->screen, rows, cols);
    }
    dv_render(&d->screen, d->status, &d->view, now);

    werase(stdscr);
    for (int r = 0; r < d->screen.rows && r < rows; r++) {
        const struct dv_line *l = &d->screen.lines[r];
        attr_t bg = l->bg == DV_PLAIN ? A_NORMAL : style_attr(l->bg);
        if (l->bg == DV_SEL || l->bg == DV_KEYS || (l->bg == DV_TITLE && !has_colors()))
            bg = A_REVERSE;
        wmove(stdscr, r, 0);
        for (int i = 0; i < l->n_spans; i++) {
            const struct dv_span *sp = &l->spans[i];
            attr_t a = style_attr(sp->style);
            if (l->bg != DV_PLAIN)
                a |= bg;
            wattrset(stdscr, (int)a);
            waddnstr(stdscr, l->text + sp->off, (int)sp->len);
        }
        /* Clears what a row above may have spilled here, should the C
         * library measure a character wider than dashview did. */
        if (l->bg == DV_PLAIN)
            wclrtoeol(stdscr);
        if (l->bg != DV_PLAIN && l->cols < cols) {
            wattrset(stdscr, (int)bg);
            /* Leave the bottom-right cell alone: writing it may scroll. */
            int fill = cols - l->cols - (r == rows - 1 ? 1 : 0);
            for (int k = 0; k < fill; k++)
                waddch(stdscr, ' ');
        }
    }
    wattrset(stdscr, A_NORMAL);
    wnoutrefresh(stdscr);
    doupdate();
}

static void on_tick(uv_timer_t *t)
{
    dash_draw(t->data);
}

static void on_soon(uv_timer_t *t)
{
    dash_draw(t->data);
}

void dashboard_notify(struct dashboard *d)
{
    if (!d || d->closing)
        return;
    if (!uv_is_active((uv_handle_t *)&d->soon))
        uv_timer_start(&d->soon, on_soon, DASH_SOON_MS, 0);
}

static void dash_say(struct dashboard *d, bool bad, const char *msg)
{
    snprintf(d->view.msg, sizeof d->view.msg, "%s", msg);
    d->view.msg_bad = bad;
    d->msg_ms = now_mono_ms();
}

/* ---- keys ----------------------------------------------------------------- */

static int map_key(int ch)
{
    switch (ch) {
    case KEY_UP: return DV_KEY_UP;
    case KEY_DOWN: return DV_KEY_DOWN;
    case KEY_ENTER: return DV_KEY_ENTER;
    case KEY_PPAGE: return DV_KEY_PGUP;
    case KEY_NPAGE: return DV_KEY_PGDN;
    case KEY_HOME: return DV_KEY_HOME;
    case KEY_END: return DV_KEY_END;
    default: return ch;
    }
}

/* One key.  Returns false once the dashboard is closing (the source may
 * free it from inside quit or admin). */
static bool dash_key(struct dashboard *d, int ch)
{
    struct dv_action a;
    char before[sizeof d->view.msg];
    if (ch == KEY_RESIZE)
        return true;
    memcpy(before, d->view.msg, sizeof before);
    switch (dv_handle_key(&d->view, d->status, map_key(ch), &a)) {
    case DV_ACT_QUIT:
        d->view.quitting = true;
        if (d->src.quit)
            d->src.quit(d->src.ud);
        break;
    case DV_ACT_ADMIN: {
        char err[256] = "";
        int rc = d->src.admin ? d->src.admin(d->src.ud, a.op, a.body, err, sizeof err) : -1;
        if (d->closing) {
            dv_action_release(&a);
            return false;
        }
        if (rc == 1)
            snprintf(d->pending_what, sizeof d->pending_what, "%s", a.what);
        else if (rc == 0)
            dash_say(d, false, a.what);
        else
            dash_say(d, true, err[0] ? err : "the operation failed");
        break;
    }
    case DV_ACT_REDRAW:
    case DV_ACT_NONE:
        if (strcmp(before, d->view.msg) != 0)
            d->msg_ms = now_mono_ms();
        break;
    }
    dv_action_release(&a);
    return !d->closing;
}

static void on_input(uv_poll_t *p, int status, int events)
{
    struct dashboard *d = p->data;
    if (d->closing || !term_active)
        return;
    int keys = 0;
    if (status == 0 && (events & UV_READABLE)) {
        int ch;
        while ((ch = wgetch(stdscr)) != ERR) {
            keys++;
            if (!dash_key(d, ch))
                return;
        }
    }
    if (keys > 0) {
        d->idle_wakeups = 0;
        dash_draw(d);
        return;
    }
    /* Readable without a key, again and again, or an error: the terminal is
     * gone (hangup).  Stop polling rather than spin, and ask to quit. */
    if (status < 0 || (events & UV_DISCONNECT) || ++d->idle_wakeups > 50) {
        d->input_dead = true;
        uv_poll_stop(&d->input);
        d->view.quitting = true;
        if (d->src.quit)
            d->src.quit(d->src.ud);
    }
}

static void on_winch(uv_signal_t *s, int signum)
{
    struct dashboard *d = s->data;
    (void)signum;
    if (d->closing || !term_active)
        return;
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0)
        resizeterm(ws.ws_row, ws.ws_col);
    wclear(stdscr);
    dash_draw(d);
}

/* ---- lifetime --------------------------------------------------------------- */

struct dashboard *dashboard_new(uv_loop_t *loop, const struct dash_source *src, const char *lang)
{
    if (term_active || !isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO))
        return NULL;
    /* Only the character type: numbers keep their C format everywhere else
     * in the process (JSON, the configuration). */
    setlocale(LC_CTYPE, "");
    bool utf8 = locale_is_utf8();
    bool want_zh = lang && strcmp(lang, "zh") == 0;

    term_saved_ok = tcgetattr(STDIN_FILENO, &term_saved) == 0;
    fflush(stdout);
    SCREEN *scr = newterm(NULL, stdout, stdin);
    if (!scr)
        return NULL;
    set_term(scr);
    term_active = 1;
    if (!term_atexit_done) {
        atexit(term_atexit);
        term_atexit_done = true;
    }
    term_reset_len = 0;
    term_reset_add("sgr0", "\033[0m");
    term_reset_add("cnorm", "\033[?25h");
    term_reset_add("rmcup", "\033[?1049l");
    fatal_install();

    raw();
    noecho();
    keypad(stdscr, TRUE);
    nodelay(stdscr, TRUE);
    set_escdelay(25);
    curs_set(0);
    if (has_colors()) {
        start_color();
        use_default_colors();
        init_pair(PAIR_GOOD, COLOR_GREEN, -1);
        init_pair(PAIR_BAD, COLOR_RED, -1);
        init_pair(PAIR_WARN, COLOR_YELLOW, -1);
        init_pair(PAIR_TITLE, COLOR_WHITE, COLOR_BLUE);
    }

    struct dashboard *d = xcalloc(1, sizeof *d);
    d->loop = loop;
    d->src = *src;
    d->scr = scr;
    dv_view_init(&d->view, want_zh && utf8 ? DV_LANG_ZH : DV_LANG_EN, utf8);
    if (want_zh && !utf8)
        dash_say(d, true, "the Chinese UI needs a UTF-8 locale (LANG=zh_CN.UTF-8 or C.UTF-8)");
    dv_screen_init(&d->screen, LINES, COLS);

    /* uv_poll_init makes stdin non-blocking, which on a terminal is shared
     * with stdout: put the flags back so that ncurses' writes never see
     * EAGAIN.  Readiness does not need it, and getch() is in nodelay mode. */
    term_fl_saved = fcntl(STDIN_FILENO, F_GETFL);
    if (uv_poll_init(loop, &d->input, STDIN_FILENO) == 0) {
        d->open_handles++;
        d->input_inited = true;
        d->input.data = d;
        if (term_fl_saved >= 0)
            (void)fcntl(STDIN_FILENO, F_SETFL, term_fl_saved);
        uv_poll_start(&d->input, UV_READABLE | UV_DISCONNECT, on_input);
    } else {
        d->input_dead = true;
    }
    uv_timer_init(loop, &d->tick);
    uv_timer_init(loop, &d->soon);
    uv_signal_init(loop, &d->winch);
    d->open_handles += 3;
    d->tick.data = d->soon.data = d->winch.data = d;
    uv_timer_start(&d->tick, on_tick, DASH_TICK_MS, DASH_TICK_MS);
    uv_signal_start(&d->winch, on_winch, SIGWINCH);
    dash_draw(d);
    return d;
}

static void dash_destroy(struct dashboard *d)
{
    cJSON_Delete(d->status);
    dv_screen_release(&d->screen);
    for (size_t i = 0; i < d->n_log; i++)
        free(d->log[(d->log_first + i) % DASH_LOG_LINES]);
    free(d);
}

static void on_closed(uv_handle_t *h)
{
    struct dashboard *d = h->data;
    if (--d->open_handles == 0)
        dash_destroy(d);
}

void dashboard_free(struct dashboard *d)
{
    if (!d || d->closing)
        return;
    d->closing = true;
    term_restore();
    if (d->scr) {
        delscreen(d->scr);
        d->scr = NULL;
    }
    fatal_uninstall();
    if (d->input_inited)
        uv_close((uv_handle_t *)&d->input, on_closed);
    uv_close((uv_handle_t *)&d->tick, on_closed);
    uv_close((uv_handle_t *)&d->soon, on_closed);
    uv_close((uv_handle_t *)&d->winch, on_closed);
}

void dashboard_log(struct dashboard *d, const char *line)
{
    if (!d || d->closing || !line)
        return;
    size_t n = strcspn(line, "\r\n"); /* the first line only */
    while (n > 0 && line[n - 1] == ' ')
        n--;
    char *copy = xstrndup(line, n);
    if (d->n_log == DASH_LOG_LINES) {
        free(d->log[d->log_first]);
        d->log[d->log_first] = copy;
        d->log_first = (d->log_first + 1) % DASH_LOG_LINES;
    } else {
        d->log[(d->log_first + d->n_log) % DASH_LOG_LINES] = copy;
        d->n_log++;
    }
    dashboard_notify(d);
}

void dashboard_admin_done(struct dashboard *d, const char *err)
{
    if (!d || d->closing)
        return;
    if (err)
        dash_say(d, true, err[0] ? err : "the operation failed");
    else
        dash_say(d, false, d->pending_what);
    d->pending_what[0] = '\0';
    dashboard_notify(d);
}

void dashboard_set_remote(struct dashboard *d, const char *url)
{
    if (d)
        d->view.remote = url;
}

void dashboard_set_error(struct dashboard *d, const char *error)
{
    if (!d || d->closing)
        return;
    d->view.error = error;
    dashboard_notify(d);
}
