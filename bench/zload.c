/*
 * zload: the benchmark's own load client (epoll, one thread, no libraries).
 *
 * It does three jobs that wrk cannot:
 *
 *   zload sse --port P --streams N [--events E] [--gap-ms G] [--ramp-ms R]
 *             [--timeout-s T]
 *       Opens N concurrent SSE streams (POST /v1/messages, "stream": true,
 *       x-fake-events / x-fake-gap-ms headers for the origin), one connection
 *       each, the starts spread evenly over R ms.  Measures per stream the time
 *       from opening the connection to the first complete SSE event (TTFE) and
 *       to the first content_block_delta (TTFT, the first token), and for
 *       every later delta its lateness against the origin's schedule: the
 *       origin writes each delta G ms after the previous one (a chained
 *       timer), so lateness = arrival - previous delta's arrival - G.  The
 *       direct column shows the origin's and the client's own jitter; a
 *       proxy's added per-event delay is its column minus the direct one.
 *
 *   zload short --port P --conns C (--duration-s D | --requests N)
 *               [--kill-pid PID --kill-at-ms K --bad-name NAME]
 *       Closed-loop non-streaming POST /v1/messages on C keep-alive
 *       connections.  Counts failures (status other than 200, connection
 *       dropped before a complete response).  With --kill-pid it sends SIGKILL
 *       to PID K ms after the start (the failover row) and reports how long
 *       after the kill the last failed response, or the last response served
 *       by NAME (the origin's x-fake-name), completed.
 *
 *   zload startup --port P [--timeout-s T] [--log FILE] -- CMD ARGS...
 *       Starts CMD (stdout and stderr to FILE) and sends GET / to the port
 *       every 0.5 ms until an HTTP response comes back: the time from exec to
 *       the first proxied answer.  Leaves CMD running and prints its pid.
 *
 *   zload probe --port P [--timeout-s T]
 *       Waits until the port answers GET / with any HTTP response; exit 0,
 *       or 1 after T seconds.
 *
 * Output is one line of key=value pairs on stdout (times in microseconds),
 * read by bench/run.sh.  Limits: responses are parsed only as far as needed
 * (status, content-length, chunked framing, x-fake-name); header blocks over
 * 16 KiB count as failures.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX (16 * 1024)
#define READ_SIZE (64 * 1024)
#define MAX_CONNECTING 512

enum mode { MODE_SSE = 0, MODE_SHORT = 1, MODE_STARTUP = 2, MODE_PROBE = 3 };

enum cstate {
    C_IDLE = 0,       /* not started */
    C_CONNECTING = 1, /* non-blocking connect in progress */
    C_SENDING = 2,    /* request partly written */
    C_HEAD = 3,       /* reading the status line and headers */
    C_BODY = 4,       /* reading the body */
    C_DONE = 5,       /* finished (closed) */
};

enum chunk_state {
    CH_SIZE = 0,
    CH_EXT = 1,
    CH_DATA = 2,
    CH_DATA_CR = 3,
    CH_DATA_LF = 4,
    CH_TRAILER = 5,
};

struct conn {
    int fd;
    enum cstate state;
    int id;
    const char *req; /* borrows: the shared request text */
    size_t req_len, req_off;
    int64_t t_open, t_sent, t_prev;
    /* response head */
    char *head; /* owns while in C_HEAD */
    size_t head_len, head_cap;
    int status;
    bool chunked, bad_name;
    int64_t clen; /* remaining body bytes when not chunked, -1 when unknown */
    /* chunked decoder */
    enum chunk_state ch;
    uint64_t ch_left;
    int trailer_line_len;
    /* SSE scanner */
    char line[40];
    int line_len;
    char ev[24];
    int ev_len;
    bool got_first, got_delta, got_stop, got_error, open_counted;
};

struct i32v {
    int32_t *v;
    size_t n, cap;
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *m)
{
    perror(m);
    exit(1);
}

static void v_push(struct i32v *a, int32_t x)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 1024;
        a->v = realloc(a->v, a->cap * sizeof *a->v);
        if (!a->v)
            die("realloc");
    }
    a->v[a->n++] = x;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted vector; 0 when empty. */
static int32_t pct(const struct i32v *a, double p)
{
    if (!a->n)
        return 0;
    size_t k = (size_t)(p / 100.0 * (double)a->n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > a->n)
        k = a->n;
    return a->v[k - 1];
}

/* ---- options ---- */

static enum mode g_mode;
static int g_port;
static int g_streams = 1, g_events = 20, g_gap_ms = 100, g_ramp_ms = 0, g_conns = 1;
static double g_timeout_s = 60, g_duration_s = 0;
static long g_requests = 0;
static pid_t g_kill_pid = 0;
static int g_kill_at_ms = -1;
static const char *g_bad_name = NULL;
static const char *g_log = "/dev/null";

/* ---- shared state ---- */

static int g_ep;
static struct sockaddr_in g_addr;
static char *g_req;
static size_t g_req_len;
static struct conn *g_cv;
static int g_nconns;
static char g_rbuf[READ_SIZE];
static int64_t g_t0;

/* results */
static long r_ok, r_failed, r_started, r_issued;
static int r_open, r_open_max, r_connecting;
static struct i32v r_ttfe, r_ttft, r_delay, r_lat;
static long r_fail_conn, r_fail_status, r_fail_cut, r_fail_error_event;
static int64_t r_last_bad_ns = -1; /* failover: last failure or bad-name reply after the kill */
static int64_t r_kill_ns = -1;
static long r_fail_after_kill, r_bad_after_kill;

static void conn_start(struct conn *c);

static void build_request(void)
{
    const char *body_stream = "{\"model\":\"claude-bench\",\"max_tokens\":64,\"stream\":true,"
                              "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    const char *body_short = "{\"model\":\"claude-bench\",\"max_tokens\":64,"
                             "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    char extra[128] = "";
    const char *body = body_short;
    if (g_mode == MODE_SSE) {
        body = body_stream;
        snprintf(extra, sizeof extra, "x-fake-events: %d\r\nx-fake-gap-ms: %d\r\n", g_events,
                 g_gap_ms);
    }
    g_req = malloc(1024);
    if (!g_req)
        die("malloc");
    g_req_len = (size_t)snprintf(g_req, 1024,
                                 "POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                 "content-type: application/json\r\n"
                                 "anthropic-version: 2023-06-01\r\nx-api-key: bench\r\n"
                                 "%scontent-length: %zu\r\n\r\n%s",
                                 extra, strlen(body), body);
}

static void conn_reset_response(struct conn *c)
{
    free(c->head);
    c->head = NULL;
    c->head_len = c->head_cap = 0;
    c->status = 0;
    c->chunked = false;
    c->bad_name = false;
    c->clen = -1;
    c->ch = CH_SIZE;
    c->ch_left = 0;
    c->trailer_line_len = 0;
    c->line_len = 0;
    c->ev_len = 0;
    c->got_first = c->got_delta = c->got_stop = c->got_error = false;
}

static void conn_close_fd(struct conn *c)
{
    if (c->fd >= 0) {
        epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    if (c->state == C_CONNECTING)
        r_connecting--;
    if (c->open_counted) {
        c->open_counted = false;
        r_open--;
    }
}

static bool short_more(void)
{
    int64_t t = now_ns();
    if (g_requests > 0)
        return r_issued < g_requests;
    return (double)(t - g_t0) / 1e9 < g_duration_s;
}

static void note_bad(int64_t t)
{
    if (r_kill_ns >= 0 && t >= r_kill_ns && t > r_last_bad_ns)
        r_last_bad_ns = t;
}

/* A request ended.  ok: complete 200 response.  SSE streams close; short
 * connections send the next request (or reconnect after a failure). */
static void conn_finish(struct conn *c, bool ok, int why)
{
    int64_t t = now_ns();
    if (ok) {
        r_ok++;
        if (g_mode == MODE_SHORT) {
            v_push(&r_lat, (int32_t)((t - c->t_sent) / 1000));
            if (c->bad_name && r_kill_ns >= 0 && t >= r_kill_ns) {
                r_bad_after_kill++;
                note_bad(t);
            }
        }
    } else {
        r_failed++;
        if (why == 1)
            r_fail_conn++;
        else if (why == 2)
            r_fail_status++;
        else if (why == 3)
            r_fail_cut++;
        else
            r_fail_error_event++;
        if (r_kill_ns >= 0 && t >= r_kill_ns)
            r_fail_after_kill++;
        note_bad(t);
    }
    if (c->open_counted) {
        c->open_counted = false;
        r_open--;
    }
    bool keep = ok && g_mode == MODE_SHORT && c->fd >= 0;
    conn_reset_response(c);
    if (g_mode == MODE_SHORT && short_more()) {
        if (keep) {
            c->state = C_SENDING;
            c->req_off = 0;
            c->t_sent = now_ns();
            r_issued++;
            ssize_t w = write(c->fd, c->req, c->req_len);
            if (w == (ssize_t)c->req_len) {
                c->state = C_HEAD;
                return;
            }
            if (w > 0)
                c->req_off = (size_t)w;
            struct epoll_event e = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
            epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &e);
            return;
        }
        conn_close_fd(c);
        c->state = C_IDLE;
        conn_start(c);
        return;
    }
    conn_close_fd(c);
    c->state = C_DONE;
}

static void sse_event(struct conn *c, int64_t t)
{
    if (!c->got_first) {
        c->got_first = true;
        v_push(&r_ttfe, (int32_t)((t - c->t_open) / 1000));
        if (!c->open_counted) {
            c->open_counted = true;
            if (++r_open > r_open_max)
                r_open_max = r_open;
        }
    }
    if (c->ev_len == 19 && memcmp(c->ev, "content_block_delta", 19) == 0) {
        /* The first delta is the first token; later ones are compared with
         * the one before (the origin's chained gap timer). */
        if (!c->got_delta) {
            c->got_delta = true;
            v_push(&r_ttft, (int32_t)((t - c->t_open) / 1000));
        } else {
            v_push(&r_delay, (int32_t)((t - c->t_prev) / 1000 - (int64_t)g_gap_ms * 1000));
        }
        c->t_prev = t;
    } else if (c->ev_len == 12 && memcmp(c->ev, "message_stop", 12) == 0) {
        c->got_stop = true;
    } else if (c->ev_len == 5 && memcmp(c->ev, "error", 5) == 0) {
        c->got_error = true;
    }
    c->ev_len = 0;
}

/* Feeds decoded body bytes to the SSE scanner. */
static void sse_feed(struct conn *c, const char *p, size_t n, int64_t t)
{
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '\r')
            continue;
        if (ch == '\n') {
            if (c->line_len == 0) {
                sse_event(c, t);
            } else {
                int l = c->line_len < (int)sizeof c->line ? c->line_len : (int)sizeof c->line;
                if (l > 7 && memcmp(c->line, "event: ", 7) == 0) {
                    c->ev_len = l - 7 < (int)sizeof c->ev ? l - 7 : (int)sizeof c->ev;
                    memcpy(c->ev, c->line + 7, (size_t)c->ev_len);
                }
                c->line_len = 0;
            }
            continue;
        }
        if (c->line_len < (int)sizeof c->line)
            c->line[c->line_len] = ch;
        c->line_len++;
    }
}

static void body_data(struct conn *c, const char *p, size_t n, int64_t t)
{
    if (g_mode == MODE_SSE)
        sse_feed(c, p, n, t);
}

/* The body is complete. */
static void body_end(struct conn *c)
{
    if (c->status != 200) {
        conn_finish(c, false, 2);
        return;
    }
    if (g_mode == MODE_SSE && (c->got_error || !c->got_stop)) {
        conn_finish(c, false, c->got_error ? 4 : 3);
        return;
    }
    conn_finish(c, true, 0);
}

/* Consumes body bytes; returns how many were used (the rest belongs to a
 * next response, which cannot happen with our one-at-a-time requests). */
static size_t body_feed(struct conn *c, const char *p, size_t n, int64_t t)
{
    size_t i = 0;
    if (!c->chunked) {
        if (c->clen < 0) { /* until EOF */
            body_data(c, p, n, t);
            return n;
        }
        size_t take = (uint64_t)c->clen < n ? (size_t)c->clen : n;
        body_data(c, p, take, t);
        c->clen -= (int64_t)take;
        if (c->clen == 0)
            body_end(c);
        return take;
    }
    while (i < n) {
        char ch = p[i];
        switch (c->ch) {
        case CH_SIZE:
            if (ch >= '0' && ch <= '9')
                c->ch_left = c->ch_left * 16 + (uint64_t)(ch - '0');
            else if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f')
                c->ch_left = c->ch_left * 16 + (uint64_t)((ch | 0x20) - 'a' + 10);
            else if (ch == '\n')
                goto size_done;
            else
                c->ch = CH_EXT;
            i++;
            break;
        case CH_EXT:
            if (ch == '\n')
                goto size_done;
            i++;
            break;
        size_done:
            i++;
            if (c->ch_left == 0) {
                c->ch = CH_TRAILER;
                c->trailer_line_len = 0;
            } else {
                c->ch = CH_DATA;
            }
            break;
        case CH_DATA: {
            size_t take = c->ch_left < n - i ? (size_t)c->ch_left : n - i;
            body_data(c, p + i, take, t);
            i += take;
            c->ch_left -= take;
            if (c->ch_left == 0)
                c->ch = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
        case CH_DATA_LF:
            i++;
            if (ch == '\n') {
                c->ch = CH_SIZE;
                c->ch_left = 0;
            }
            break;
        case CH_TRAILER:
            i++;
            if (ch == '\r')
                break;
            if (ch == '\n') {
                if (c->trailer_line_len == 0) {
                    body_end(c);
                    return i;
                }
                c->trailer_line_len = 0;
            } else {
                c->trailer_line_len++;
            }
            break;
        }
    }
    return i;
}

/* Parses the head once it is complete; returns its length or 0 if more is
 * needed, -1 on error. */
static long head_parse(struct conn *c)
{
    char *end = memmem(c->head, c->head_len, "\r\n\r\n", 4);
    if (!end)
        return c->head_len > HEAD_MAX ? -1 : 0;
    *end = '\0';
    if (strncmp(c->head, "HTTP/1.", 7) != 0 || strlen(c->head) < 12)
        return -1;
    c->status = atoi(c->head + 9);
    c->clen = -1;
    for (char *l = strstr(c->head, "\r\n"); l; l = strstr(l, "\r\n")) {
        l += 2;
        if (strncasecmp(l, "content-length:", 15) == 0)
            c->clen = strtoll(l + 15, NULL, 10);
        else if (strncasecmp(l, "transfer-encoding:", 18) == 0 && strcasestr(l, "chunked"))
            c->chunked = true;
        else if (g_bad_name && strncasecmp(l, "x-fake-name:", 12) == 0) {
            const char *v = l + 12;
            while (*v == ' ')
                v++;
            size_t bl = strlen(g_bad_name);
            if (strncmp(v, g_bad_name, bl) == 0 && (v[bl] == '\r' || v[bl] == '\0'))
                c->bad_name = true;
        }
    }
    return (end - c->head) + 4;
}

static void on_readable(struct conn *c)
{
    for (;;) {
        ssize_t n = read(c->fd, g_rbuf, sizeof g_rbuf);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            conn_finish(c, false, 1);
            return;
        }
        int64_t t = now_ns();
        if (n == 0) {
            if (c->state == C_BODY && !c->chunked && c->clen < 0) {
                body_end(c);
                return;
            }
            conn_finish(c, false, c->state == C_HEAD && c->head_len == 0 ? 1 : 3);
            return;
        }
        size_t off = 0;
        while (off < (size_t)n) {
            if (c->state == C_HEAD) {
                size_t old = c->head_len;
                size_t take = (size_t)n - off;
                if (c->head_len + take + 1 > c->head_cap) {
                    c->head_cap = c->head_len + take + 1 < 2048 ? 2048 : c->head_len + take + 1;
                    c->head = realloc(c->head, c->head_cap);
                    if (!c->head)
                        die("realloc");
                }
                memcpy(c->head + c->head_len, g_rbuf + off, take);
                c->head_len += take;
                c->head[c->head_len] = '\0';
                long hl = head_parse(c);
                if (hl < 0) {
                    conn_finish(c, false, 3);
                    return;
                }
                if (hl == 0)
                    return;
                off += (size_t)hl - old;
                free(c->head);
                c->head = NULL;
                c->head_len = c->head_cap = 0;
                c->state = C_BODY;
                if (!c->chunked && c->clen == 0) {
                    body_end(c);
                    return;
                }
                continue;
            }
            if (c->state != C_BODY)
                return;
            size_t used = body_feed(c, g_rbuf + off, (size_t)n - off, t);
            off += used;
            if (c->state != C_BODY)
                return; /* finished; a short conn moved on to its next request */
        }
        if (n < (ssize_t)sizeof g_rbuf)
            return;
    }
}

static void on_writable(struct conn *c)
{
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        r_connecting--;
        if (err) {
            c->state = C_SENDING; /* so that close does not decrement again */
            conn_finish(c, false, 1);
            return;
        }
        c->state = C_SENDING;
        c->t_sent = now_ns();
    }
    if (c->state != C_SENDING)
        return;
    ssize_t w = write(c->fd, c->req + c->req_off, c->req_len - c->req_off);
    if (w < 0) {
        if (errno == EAGAIN)
            return;
        conn_finish(c, false, 1);
        return;
    }
    c->req_off += (size_t)w;
    if (c->req_off == c->req_len) {
        c->state = C_HEAD;
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &e);
    }
}

static void conn_start(struct conn *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->req = g_req;
    c->req_len = g_req_len;
    c->req_off = 0;
    c->t_open = now_ns();
    c->t_prev = 0;
    conn_reset_response(c);
    r_started++;
    if (g_mode == MODE_SHORT)
        r_issued++;
    int rc = connect(c->fd, (struct sockaddr *)&g_addr, sizeof g_addr);
    if (rc < 0 && errno != EINPROGRESS) {
        close(c->fd);
        c->fd = -1;
        c->state = C_SENDING;
        conn_finish(c, false, 1);
        return;
    }
    c->state = C_CONNECTING;
    r_connecting++;
    struct epoll_event e = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, c->fd, &e) < 0)
        die("epoll_ctl");
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int run_load(void)
{
    raise_nofile();
    g_ep = epoll_create1(EPOLL_CLOEXEC);
    if (g_ep < 0)
        die("epoll_create1");
    build_request();
    g_nconns = g_mode == MODE_SSE ? g_streams : g_conns;
    g_cv = calloc((size_t)g_nconns, sizeof *g_cv);
    if (!g_cv)
        die("calloc");
    for (int i = 0; i < g_nconns; i++) {
        g_cv[i].fd = -1;
        g_cv[i].id = i;
        g_cv[i].clen = -1;
    }
    struct epoll_event evs[1024];
    g_t0 = now_ns();
    int64_t deadline = g_t0 + (int64_t)(g_timeout_s * 1e9);
    if (g_mode == MODE_SHORT && g_duration_s > 0) {
        int64_t d = g_t0 + (int64_t)((g_duration_s + 10) * 1e9);
        if (d < deadline)
            deadline = d;
    }
    int next = 0; /* next connection to start */
    long done_target = g_nconns;
    for (;;) {
        int64_t t = now_ns();
        if (r_kill_ns < 0 && g_kill_pid > 0 && g_kill_at_ms >= 0 &&
            t - g_t0 >= (int64_t)g_kill_at_ms * 1000000) {
            kill(g_kill_pid, SIGKILL);
            r_kill_ns = now_ns();
        }
        /* start connections on schedule */
        while (next < g_nconns && r_connecting < MAX_CONNECTING) {
            int64_t due = g_t0;
            if (g_ramp_ms > 0 && g_nconns > 1)
                due += (int64_t)g_ramp_ms * 1000000 * next / (g_nconns - 1);
            if (due > t)
                break;
            conn_start(&g_cv[next++]);
        }
        long finished = 0;
        if (g_mode == MODE_SSE) {
            finished = r_ok + r_failed;
            if (finished >= done_target)
                break;
        } else {
            int active = 0;
            for (int i = 0; i < g_nconns; i++)
                if (g_cv[i].state != C_DONE)
                    active++;
            if (next >= g_nconns && active == 0)
                break;
        }
        if (t >= deadline)
            break;
        int timeout = 50;
        if (next < g_nconns && g_ramp_ms > 0)
            timeout = 1;
        if (g_kill_pid > 0 && r_kill_ns < 0)
            timeout = 1;
        int n = epoll_wait(g_ep, evs, 1024, timeout);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->fd < 0)
                continue;
            uint32_t ev = evs[i].events;
            if (c->state == C_CONNECTING || c->state == C_SENDING) {
                if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                    on_writable(c);
                else if (ev & EPOLLIN)
                    on_readable(c);
                continue;
            }
            if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
                on_readable(c);
        }
    }
    int64_t t_end = now_ns();
    long incomplete = 0;
    for (int i = 0; i < g_nconns; i++)
        if (g_cv[i].state != C_DONE && g_cv[i].state != C_IDLE &&
            g_mode == MODE_SSE)
            incomplete++;
    if (g_mode == MODE_SSE)
        incomplete += g_nconns - next;
    double el = (double)(t_end - g_t0) / 1e9;
    qsort(r_ttfe.v, r_ttfe.n, sizeof *r_ttfe.v, cmp_i32);
    qsort(r_ttft.v, r_ttft.n, sizeof *r_ttft.v, cmp_i32);
    qsort(r_delay.v, r_delay.n, sizeof *r_delay.v, cmp_i32);
    qsort(r_lat.v, r_lat.n, sizeof *r_lat.v, cmp_i32);
    if (g_mode == MODE_SSE) {
        printf("streams=%d ok=%ld failed=%ld incomplete=%ld open_max=%d elapsed_s=%.2f "
               "ttfe_p50_us=%d ttfe_p99_us=%d ttft_p50_us=%d ttft_p99_us=%d ev_n=%zu ev_p50_us=%d ev_p99_us=%d "
               "ev_max_us=%d fail_conn=%ld fail_status=%ld fail_cut=%ld fail_error=%ld\n",
               g_streams, r_ok, r_failed, incomplete, r_open_max, el, pct(&r_ttfe, 50),
               pct(&r_ttfe, 99), pct(&r_ttft, 50), pct(&r_ttft, 99), r_delay.n, pct(&r_delay, 50), pct(&r_delay, 99),
               r_delay.n ? r_delay.v[r_delay.n - 1] : 0, r_fail_conn, r_fail_status,
               r_fail_cut, r_fail_error_event);
    } else {
        double until = -1;
        if (r_kill_ns >= 0)
            until = r_last_bad_ns >= 0 ? (double)(r_last_bad_ns - r_kill_ns) / 1000.0 : 0;
        printf("conns=%d ok=%ld failed=%ld elapsed_s=%.2f rps=%.1f lat_p50_us=%d "
               "lat_p99_us=%d fail_conn=%ld fail_status=%ld fail_cut=%ld "
               "killed=%d fail_after_kill=%ld bad_after_kill=%ld recover_us=%.0f\n",
               g_conns, r_ok, r_failed, el, (double)r_ok / el, pct(&r_lat, 50),
               pct(&r_lat, 99), r_fail_conn, r_fail_status, r_fail_cut, r_kill_ns >= 0,
               r_fail_after_kill, r_bad_after_kill, until);
    }
    return 0;
}

/* ---- startup mode ---- */

static bool probe_once(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    bool ok = false;
    if (connect(fd, (struct sockaddr *)&g_addr, sizeof g_addr) == 0) {
        const char *r = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        char b[16];
        if (write(fd, r, strlen(r)) == (ssize_t)strlen(r)) {
            ssize_t n = read(fd, b, sizeof b);
            ok = n >= 12 && memcmp(b, "HTTP/1.", 7) == 0;
        }
    }
    close(fd);
    return ok;
}

static int run_startup(char **argv)
{
    int64_t t0 = now_ns();
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        int fd = open(g_log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        setpgid(0, 0);
        execvp(argv[0], argv);
        _exit(127);
    }
    int64_t deadline = t0 + (int64_t)(g_timeout_s * 1e9);
    for (;;) {
        if (probe_once()) {
            printf("startup_us=%lld pid=%d\n", (long long)((now_ns() - t0) / 1000), pid);
            return 0;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            printf("startup_us=-1 pid=0 exited=1\n");
            return 1;
        }
        if (now_ns() > deadline) {
            printf("startup_us=-1 pid=%d\n", pid);
            return 1;
        }
        struct timespec ts = {0, 500000};
        nanosleep(&ts, NULL);
    }
}

static int run_probe(void)
{
    int64_t deadline = now_ns() + (int64_t)(g_timeout_s * 1e9);
    while (!probe_once()) {
        if (now_ns() > deadline)
            return 1;
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static void usage(void)
{
    fputs("usage: zload sse --port P --streams N [--events E] [--gap-ms G] [--ramp-ms R] "
          "[--timeout-s T]\n"
          "       zload short --port P --conns C (--duration-s D | --requests N) "
          "[--kill-pid PID --kill-at-ms K --bad-name NAME] [--timeout-s T]\n"
          "       zload startup --port P [--timeout-s T] [--log FILE] -- CMD ARGS...\n"
          "       zload probe --port P [--timeout-s T]\n",
          stderr);
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    if (strcmp(argv[1], "sse") == 0)
        g_mode = MODE_SSE;
    else if (strcmp(argv[1], "short") == 0)
        g_mode = MODE_SHORT;
    else if (strcmp(argv[1], "startup") == 0)
        g_mode = MODE_STARTUP;
    else if (strcmp(argv[1], "probe") == 0)
        g_mode = MODE_PROBE;
    else
        usage();
    int i = 2;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (strcmp(a, "--port") == 0)
            g_port = atoi(v);
        else if (strcmp(a, "--streams") == 0)
            g_streams = atoi(v);
        else if (strcmp(a, "--events") == 0)
            g_events = atoi(v);
        else if (strcmp(a, "--gap-ms") == 0)
            g_gap_ms = atoi(v);
        else if (strcmp(a, "--ramp-ms") == 0)
            g_ramp_ms = atoi(v);
        else if (strcmp(a, "--timeout-s") == 0)
            g_timeout_s = atof(v);
        else if (strcmp(a, "--conns") == 0)
            g_conns = atoi(v);
        else if (strcmp(a, "--duration-s") == 0)
            g_duration_s = atof(v);
        else if (strcmp(a, "--requests") == 0)
            g_requests = atol(v);
        else if (strcmp(a, "--kill-pid") == 0)
            g_kill_pid = (pid_t)atoi(v);
        else if (strcmp(a, "--kill-at-ms") == 0)
            g_kill_at_ms = atoi(v);
        else if (strcmp(a, "--bad-name") == 0)
            g_bad_name = v;
        else if (strcmp(a, "--log") == 0)
            g_log = v;
        else
            usage();
    }
    if (g_port <= 0)
        usage();
    signal(SIGPIPE, SIG_IGN);
    memset(&g_addr, 0, sizeof g_addr);
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((uint16_t)g_port);
    g_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (g_mode == MODE_PROBE)
        return run_probe();
    if (g_mode == MODE_STARTUP) {
        if (i >= argc)
            usage();
        return run_startup(argv + i);
    }
    if (g_mode == MODE_SHORT && g_duration_s <= 0 && g_requests <= 0)
        usage();
    return run_load();
}
