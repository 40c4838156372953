/*
 * fetch: see fetch.h.
 *
 * curl tells us which sockets to watch (on_socket) and when to call it back
 * (on_timer).  Each watched socket gets a struct fetch_sock with a
 * uv_poll_t, attached to the socket with curl_multi_assign(); when curl
 * says CURL_POLL_REMOVE the poll handle is stopped at once and freed in its
 * close callback, so a socket number curl reuses right away gets a fresh
 * handle.  A libuv poll error is not passed on as CURL_CSELECT_ERR: curl is
 * told the socket is readable and writable and finds the error itself when
 * it reads, which gives it the real errno for its message.
 */
#include "fetch.h"

#include <stdbool.h>
#include <fcntl.h>
#include <stdlib.h>

#include "util.h"

#define FETCH_POOL_MAX 1024

struct fetch {
    uv_loop_t *loop; /* borrows */
    CURL **pool;     /* owns the easy handles kept for reuse */
    size_t n_pool;
    bool env_proxy;   /* a *_proxy variable is set: let curl read them */
    CURLM *multi;     /* owns */
    CURLSH *share;    /* owns */
    uv_timer_t timer; /* owned by the loop until closed */
    int closing;
};

struct fetch_sock {
    uv_poll_t poll;
    struct fetch *f; /* borrows */
    curl_socket_t fd;
};

static void fetch_check_done(struct fetch *f)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(f->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result;
        struct fetch_xfer *x = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
        curl_multi_remove_handle(f->multi, easy);
        if (x) {
            x->added = 0;
            if (x->done)
                x->done(x, rc);
        }
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct fetch_sock *s = h->data;
    struct fetch *f = s->f;
    int flags = 0;
    int running;
    if (status < 0)
        flags = CURL_CSELECT_IN | CURL_CSELECT_OUT;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(f->multi, s->fd, flags, &running);
    fetch_check_done(f);
}

static void on_uv_timer(uv_timer_t *t)
{
    struct fetch *f = t->data;
    int running;
    curl_multi_socket_action(f->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    fetch_check_done(f);
}

static void on_sock_closed(uv_handle_t *h)
{
    free(h->data);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct fetch *f = userp;
    struct fetch_sock *s = socketp;
    (void)easy;

    if (what == CURL_POLL_REMOVE) {
        if (s) {
            uv_poll_stop(&s->poll);
            uv_close((uv_handle_t *)&s->poll, on_sock_closed);
            curl_multi_assign(f->multi, fd, NULL);
        }
        return 0;
    }
    if (!s) {
        s = xcalloc(1, sizeof *s);
        s->f = f;
        s->fd = fd;
        if (uv_poll_init_socket(f->loop, &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        s->poll.data = s;
        curl_multi_assign(f->multi, fd, s);
    }
    int events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        events |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        events |= UV_WRITABLE;
    uv_poll_start(&s->poll, events, on_poll);
    return 0;
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct fetch *f = userp;
    (void)multi;
    if (timeout_ms < 0)
        uv_timer_stop(&f->timer);
    else
        uv_timer_start(&f->timer, on_uv_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

struct fetch *fetch_new(uv_loop_t *loop)
{
    CURLM *multi = curl_multi_init();
    CURLSH *share = curl_share_init();
    if (!multi || !share) {
        /* libcurl could not be loaded (curlso.c said why) */
        curl_multi_cleanup(multi);
        curl_share_cleanup(share);
        return NULL;
    }
    /* The multi handle's wake-up socketpair is opened without close-on-exec. */
    fd_cloexec_all();
    struct fetch *f = xcalloc(1, sizeof *f);
    f->loop = loop;
    f->multi = multi;
    f->share = share;
    curl_share_setopt(f->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(f->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETDATA, f);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERDATA, f);
    curl_multi_setopt(f->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    /* The pool must hold every connection in use, or curl walks it to
     * evict the oldest on every transfer (measured: 16% of the CPU at
     * thousands of streams). */
    curl_multi_setopt(f->multi, CURLMOPT_MAXCONNECTS, 20000L);
    f->env_proxy = env_proxy_set(ENV_PROXY_HTTP | ENV_PROXY_HTTPS);
    f->pool = xcalloc(FETCH_POOL_MAX, sizeof *f->pool);
    uv_timer_init(loop, &f->timer);
    f->timer.data = f;
    return f;
}

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void fetch_free(struct fetch *f)
{
    if (!f || f->closing)
        return;
    f->closing = 1;
    for (size_t i = 0; i < f->n_pool; i++)
        curl_easy_cleanup(f->pool[i]);
    free(f->pool);
    curl_multi_cleanup(f->multi);
    curl_share_cleanup(f->share);
    uv_timer_stop(&f->timer);
    uv_close((uv_handle_t *)&f->timer, on_timer_closed);
}

/* libcurl opens its sockets without close-on-exec: a `claude` child of the
 * cli check would inherit every upstream connection. */
static int fetch_on_sockopt(void *ud, curl_socket_t fd, curlsocktype purpose)
{
    (void)ud;
    (void)purpose;
    int flags = fcntl(fd, F_GETFD);
    if (flags >= 0)
        (void)fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    return CURL_SOCKOPT_OK;
}

CURL *fetch_easy_new(struct fetch *f)
{
    CURL *e = f->n_pool ? f->pool[--f->n_pool] : curl_easy_init();
    if (!e)
        return NULL;
    curl_easy_setopt(e, CURLOPT_SHARE, f->share);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 30L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 15L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_SOCKOPTFUNCTION, fetch_on_sockopt);
    /* Without proxy variables at start-up, tell curl so: it would look them
     * up in the environment on every request otherwise. */
    if (!f->env_proxy)
        curl_easy_setopt(e, CURLOPT_PROXY, "");
    return e;
}

void fetch_easy_put(struct fetch *f, CURL *easy)
{
    if (f->closing || f->n_pool == FETCH_POOL_MAX) {
        curl_easy_cleanup(easy);
        return;
    }
    curl_easy_reset(easy);
    f->pool[f->n_pool++] = easy;
}

int fetch_add(struct fetch *f, struct fetch_xfer *x)
{
    curl_easy_setopt(x->easy, CURLOPT_PRIVATE, (char *)x);
    if (curl_multi_add_handle(f->multi, x->easy) != CURLM_OK)
        return -1;
    x->added = 1;
    return 0;
}

void fetch_remove(struct fetch *f, struct fetch_xfer *x)
{
    if (!x->added)
        return;
    curl_multi_remove_handle(f->multi, x->easy);
    x->added = 0;
}
