/*
 * policy: see policy.h for the rules.  Everything here works on arrays the
 * caller owns and on the time it passes in; nothing is remembered between
 * calls except struct policy and struct sessions.
 *
 * The session map is a chained hash table over a fixed array of max entries
 * (allocated once, so memory is bounded by max * (entry + SESSIONS_KEY_MAX)),
 * threaded on a doubly linked list in last-used order.  Because every entry
 * has the same time-to-live, the expired entries are always at the old end
 * of that list, so expiry is a purge from the tail and eviction when full
 * takes the tail too.
 */
#include "policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

bool policy_usable(const struct policy_ep *ep)
{
    return ep->health != POLICY_FAILED && !ep->blocked;
}

static bool latency_known(const struct policy_ep *ep)
{
    return ep->latency_ms >= 0;
}

/* Rank for "best": 0 measured, 1 healthy but unmeasured, 2 not yet checked. */
static int rank_tier(const struct policy_ep *ep)
{
    if (latency_known(ep))
        return 0;
    return ep->health == POLICY_HEALTHY ? 1 : 2;
}

/* True when a ranks strictly before b; ties keep the lower index first
 * because callers scan in index order. */
static bool ranks_before(const struct policy_ep *a, const struct policy_ep *b)
{
    int ta = rank_tier(a), tb = rank_tier(b);
    if (ta != tb)
        return ta < tb;
    if (ta == 0)
        return a->latency_ms < b->latency_ms;
    return false;
}

int policy_best(const struct policy_ep *eps, size_t n, const bool *tried)
{
    int best = -1;
    for (size_t i = 0; i < n; i++) {
        if ((tried && tried[i]) || !policy_usable(&eps[i]))
            continue;
        if (best < 0 || ranks_before(&eps[i], &eps[best]))
            best = (int)i;
    }
    return best;
}

/* Panic order: a live success more recent first, then known latency, then
 * config order (callers scan in index order). */
static bool panic_before(const struct policy_ep *a, const struct policy_ep *b)
{
    if (a->live_ok_ms != b->live_ok_ms)
        return a->live_ok_ms > b->live_ok_ms;
    if (latency_known(a) != latency_known(b))
        return latency_known(a);
    return latency_known(a) && a->latency_ms < b->latency_ms;
}

int policy_panic(const struct policy_ep *eps, size_t n, const bool *tried)
{
    int best = -1;
    for (size_t i = 0; i < n; i++) {
        if ((tried && tried[i]) || eps[i].live_blocked)
            continue;
        if (best < 0 || panic_before(&eps[i], &eps[best]))
            best = (int)i;
    }
    return best;
}

/* Best usable endpoint other than skip. */
static int best_except(const struct policy_ep *eps, size_t n, int skip)
{
    int best = -1;
    for (size_t i = 0; i < n; i++) {
        if ((int)i == skip || !policy_usable(&eps[i]))
            continue;
        if (best < 0 || ranks_before(&eps[i], &eps[best]))
            best = (int)i;
    }
    return best;
}

static bool in_range(int i, size_t n)
{
    return i >= 0 && (size_t)i < n;
}

void policy_init(struct policy *p, int threshold_ms, int graceful_timeout_ms)
{
    *p = (struct policy){
        .current = -1,
        .manual = false,
        .pinned = -1,
        .pending = -1,
        .pending_since_ms = 0,
        .threshold_ms = threshold_ms > 0 ? threshold_ms : 0,
        .graceful_timeout_ms = graceful_timeout_ms > 0 ? graceful_timeout_ms : 0,
    };
}

static void cancel_pending(struct policy *p)
{
    p->pending = -1;
    p->pending_since_ms = 0;
}

/* Makes to current and describes the change in *out (may be NULL). */
static bool do_switch(struct policy *p, const struct policy_ep *eps, size_t n, int to,
                      enum policy_reason reason, struct policy_switch *out)
{
    int from = p->current;
    p->current = to;
    cancel_pending(p);
    if (out) {
        out->from = from;
        out->to = to;
        out->from_latency_ms = in_range(from, n) ? eps[from].latency_ms : -1;
        out->to_latency_ms = in_range(to, n) ? eps[to].latency_ms : -1;
        out->reason = reason;
    }
    return true;
}

/*
 * The endpoint an auto-mode policy would move to for speed, or -1: the best
 * usable endpoint, when both its latency and the current one's are known and
 * it is faster by at least the threshold (and by more than nothing, so a
 * zero threshold does not bounce between equal endpoints).
 */
static int faster_target(const struct policy *p, const struct policy_ep *eps, size_t n)
{
    const struct policy_ep *cur = &eps[p->current];
    if (!latency_known(cur))
        return -1;
    int b = policy_best(eps, n, NULL);
    if (b < 0 || b == p->current || !latency_known(&eps[b]))
        return -1;
    double gain = cur->latency_ms - eps[b].latency_ms;
    if (gain <= 0 || gain < (double)p->threshold_ms)
        return -1;
    return b;
}

bool policy_evaluate(struct policy *p, const struct policy_ep *eps, size_t n, uint64_t now_ms,
                     struct policy_switch *out)
{
    /* An index from an older, longer endpoint list means nothing now. */
    if (!in_range(p->current, n))
        p->current = -1;
    if (!in_range(p->pending, n))
        cancel_pending(p);

    if (p->manual && in_range(p->pinned, n) && policy_usable(&eps[p->pinned])) {
        if (p->current == p->pinned) {
            cancel_pending(p);
            return false;
        }
        return do_switch(p, eps, n, p->pinned,
                         p->current < 0 ? POLICY_REASON_INITIAL : POLICY_REASON_RECOVERED, out);
    }

    if (p->current < 0) {
        int b = policy_best(eps, n, NULL);
        if (b < 0)
            return false;
        return do_switch(p, eps, n, b, POLICY_REASON_INITIAL, out);
    }

    if (!policy_usable(&eps[p->current])) {
        int b = best_except(eps, n, p->current);
        cancel_pending(p);
        if (b < 0)
            return false; /* nowhere to go: stay, policy_route() says -1 */
        return do_switch(p, eps, n, b, POLICY_REASON_FAILURE, out);
    }

    /* Manual mode with the pin down: stay on the usable stand-in. */
    if (p->manual) {
        cancel_pending(p);
        return false;
    }

    int target = faster_target(p, eps, n);
    if (target < 0) {
        cancel_pending(p);
        return false;
    }
    if (eps[p->current].active == 0)
        return do_switch(p, eps, n, target, POLICY_REASON_FASTER, out);
    /* Wait for the current endpoint to drain; a retarget to a new best does
     * not restart the wait. */
    if (p->pending < 0)
        p->pending_since_ms = now_ms;
    p->pending = target;
    if (now_ms >= p->pending_since_ms &&
        now_ms - p->pending_since_ms >= (uint64_t)p->graceful_timeout_ms)
        return do_switch(p, eps, n, target, POLICY_REASON_FASTER, out);
    return false;
}

bool policy_set_manual(struct policy *p, int pinned, const struct policy_ep *eps, size_t n,
                       struct policy_switch *out)
{
    if (!in_range(pinned, n))
        return false;
    p->manual = true;
    p->pinned = pinned;
    cancel_pending(p);
    if (!in_range(p->current, n))
        p->current = -1;
    if (p->current == pinned || !policy_usable(&eps[pinned]))
        return false;
    return do_switch(p, eps, n, pinned,
                     p->current < 0 ? POLICY_REASON_INITIAL : POLICY_REASON_MANUAL, out);
}

void policy_set_auto(struct policy *p)
{
    p->manual = false;
    p->pinned = -1;
}

bool policy_pin_overridden(const struct policy *p)
{
    return p->manual && p->pinned >= 0 && p->current != p->pinned;
}

uint64_t policy_deadline_ms(const struct policy *p)
{
    if (p->pending < 0)
        return 0;
    return p->pending_since_ms + (uint64_t)p->graceful_timeout_ms;
}

int policy_activate(struct policy *p, const struct policy_ep *eps, size_t n, uint64_t now_ms)
{
    policy_evaluate(p, eps, n, now_ms, NULL);
    return policy_route(p, eps, n, -1);
}

void policy_set_session_threshold(struct policy *p, int session_threshold_ms)
{
    p->session_threshold_ms = session_threshold_ms > 0 ? session_threshold_ms : 0;
}

static int route_plain(const struct policy *p, const struct policy_ep *eps, size_t n)
{
    if (in_range(p->current, n) && policy_usable(&eps[p->current]))
        return p->current;
    return policy_best(eps, n, NULL);
}

int policy_next_in_line(const struct policy *p, const struct policy_ep *eps, size_t n)
{
    int r = route_plain(p, eps, n);
    return r < 0 ? -1 : best_except(eps, n, r);
}

int policy_route_session(const struct policy *p, const struct policy_ep *eps, size_t n,
                         int session_ep, enum policy_reason *moved)
{
    enum policy_reason why = POLICY_REASON_NONE;
    int to;
    if (!in_range(session_ep, n)) {
        to = route_plain(p, eps, n);
    } else if (!policy_usable(&eps[session_ep])) {
        to = route_plain(p, eps, n);
        why = POLICY_REASON_FAILURE;
    } else if (p->manual && in_range(p->pinned, n) && p->current == p->pinned &&
               session_ep != p->pinned) {
        /* The pin is the user's explicit choice: it beats the cache. */
        to = p->pinned;
        why = POLICY_REASON_MANUAL;
    } else if (!p->manual && p->session_threshold_ms > 0 && in_range(p->current, n) &&
               p->current != session_ep && policy_usable(&eps[p->current]) &&
               latency_known(&eps[p->current]) && latency_known(&eps[session_ep]) &&
               eps[session_ep].latency_ms - eps[p->current].latency_ms >=
                   (double)p->session_threshold_ms) {
        to = p->current;
        why = POLICY_REASON_FASTER;
    } else {
        to = session_ep;
    }
    if (to < 0 || to == session_ep)
        why = POLICY_REASON_NONE;
    if (moved)
        *moved = why;
    return to;
}

int policy_route(const struct policy *p, const struct policy_ep *eps, size_t n, int session_ep)
{
    return policy_route_session(p, eps, n, session_ep, NULL);
}

const char *policy_reason_name(enum policy_reason r)
{
    switch (r) {
    case POLICY_REASON_NONE: return "none";
    case POLICY_REASON_FASTER: return "faster";
    case POLICY_REASON_FAILURE: return "failure";
    case POLICY_REASON_MANUAL: return "manual";
    case POLICY_REASON_GROUP: return "group";
    case POLICY_REASON_RECOVERED: return "recovered";
    case POLICY_REASON_INITIAL: return "initial";
    }
    return "none";
}

const char *policy_health_name(enum policy_health h)
{
    switch (h) {
    case POLICY_UNKNOWN: return "unknown";
    case POLICY_CHECKING: return "checking";
    case POLICY_HEALTHY: return "healthy";
    case POLICY_FAILED: return "failed";
    }
    return "unknown";
}

/* ---- sessions ---------------------------------------------------------- */

struct session_entry {
    char *key; /* owns; NULL when the slot is free */
    uint64_t hash;
    uint64_t used_ms;    /* last lookup hit or bind */
    uint64_t created_ms; /* first bind */
    int ep;
    int hnext;        /* next in the hash chain, or next free slot */
    int newer, older; /* last-used list, -1 at the ends */
};

struct sessions {
    struct session_entry *e; /* owns, max entries */
    int *buckets;            /* owns, nbuckets chain heads, -1 empty */
    size_t nbuckets;         /* power of two */
    size_t max;
    size_t used; /* slots [used, max) were never taken: their pages untouched */
    size_t count;
    int free_head;      /* released slots chained through hnext */
    int newest, oldest; /* ends of the last-used list */
    uint64_t ttl_ms;
};

/* FNV-1a.  Chains are bounded by max entries, so a crafted key set can at
 * worst make one lookup walk max entries, never grow memory. */
static uint64_t key_hash(const char *key, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 1099511628211ULL;
    }
    return h;
}

struct sessions *sessions_new(uint64_t ttl_ms, size_t max)
{
    if (max == 0)
        max = SESSIONS_DEFAULT_MAX;
    if (max > (size_t)INT32_MAX / 2)
        max = (size_t)INT32_MAX / 2;
    struct sessions *s = xcalloc(1, sizeof(*s));
    s->max = max;
    s->ttl_ms = ttl_ms;
    s->e = xcalloc(max, sizeof(*s->e));
    s->nbuckets = 1;
    while (s->nbuckets < max * 2)
        s->nbuckets <<= 1;
    s->buckets = xmalloc(s->nbuckets * sizeof(*s->buckets));
    for (size_t i = 0; i < s->nbuckets; i++)
        s->buckets[i] = -1;
    /* No free list up front: chaining every slot would write the whole
     * table (192 KB at the default max) although most proxies never hold
     * more than a few sessions; fresh slots come from s->used. */
    s->free_head = -1;
    s->newest = s->oldest = -1;
    return s;
}

void sessions_free(struct sessions *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->used; i++)
        free(s->e[i].key);
    free(s->e);
    free(s->buckets);
    free(s);
}

static void lru_unlink(struct sessions *s, int i)
{
    struct session_entry *x = &s->e[i];
    if (x->newer >= 0)
        s->e[x->newer].older = x->older;
    else
        s->newest = x->older;
    if (x->older >= 0)
        s->e[x->older].newer = x->newer;
    else
        s->oldest = x->newer;
    x->newer = x->older = -1;
}

static void lru_push_newest(struct sessions *s, int i)
{
    struct session_entry *x = &s->e[i];
    x->newer = -1;
    x->older = s->newest;
    if (s->newest >= 0)
        s->e[s->newest].newer = i;
    s->newest = i;
    if (s->oldest < 0)
        s->oldest = i;
}

static void entry_remove(struct sessions *s, int i)
{
    struct session_entry *x = &s->e[i];
    int *link = &s->buckets[x->hash & (s->nbuckets - 1)];
    while (*link != i)
        link = &s->e[*link].hnext;
    *link = x->hnext;
    lru_unlink(s, i);
    free(x->key);
    x->key = NULL;
    x->hnext = s->free_head;
    s->free_head = i;
    s->count--;
}

static bool expired(const struct sessions *s, const struct session_entry *x, uint64_t now_ms)
{
    return s->ttl_ms > 0 && now_ms > x->used_ms && now_ms - x->used_ms >= s->ttl_ms;
}

static void purge_expired(struct sessions *s, uint64_t now_ms)
{
    while (s->oldest >= 0 && expired(s, &s->e[s->oldest], now_ms))
        entry_remove(s, s->oldest);
}

static int find(const struct sessions *s, const char *key, size_t len, uint64_t h)
{
    for (int i = s->buckets[h & (s->nbuckets - 1)]; i >= 0; i = s->e[i].hnext) {
        const struct session_entry *x = &s->e[i];
        if (x->hash == h && strlen(x->key) == len && memcmp(x->key, key, len) == 0)
            return i;
    }
    return -1;
}

int sessions_lookup(struct sessions *s, const char *key, uint64_t now_ms)
{
    size_t len = strlen(key);
    if (len > SESSIONS_KEY_MAX)
        return -1;
    purge_expired(s, now_ms);
    int i = find(s, key, len, key_hash(key, len));
    if (i < 0)
        return -1;
    if (now_ms > s->e[i].used_ms)
        s->e[i].used_ms = now_ms;
    lru_unlink(s, i);
    lru_push_newest(s, i);
    return s->e[i].ep;
}

void sessions_bind(struct sessions *s, const char *key, int ep, uint64_t now_ms)
{
    size_t len = strlen(key);
    if (len > SESSIONS_KEY_MAX)
        return;
    purge_expired(s, now_ms);
    uint64_t h = key_hash(key, len);
    int i = find(s, key, len, h);
    if (i < 0) {
        if (s->free_head < 0 && s->used < s->max) {
            i = (int)s->used++;
        } else {
            if (s->free_head < 0)
                entry_remove(s, s->oldest);
            i = s->free_head;
            s->free_head = s->e[i].hnext;
        }
        struct session_entry *x = &s->e[i];
        x->key = xstrndup(key, len);
        x->hash = h;
        x->used_ms = now_ms;
        x->created_ms = now_ms;
        size_t b = h & (s->nbuckets - 1);
        x->hnext = s->buckets[b];
        s->buckets[b] = i;
        s->count++;
    } else {
        lru_unlink(s, i);
    }
    s->e[i].ep = ep;
    if (now_ms > s->e[i].used_ms)
        s->e[i].used_ms = now_ms;
    lru_push_newest(s, i);
}

void sessions_forget_endpoint(struct sessions *s, int ep)
{
    for (size_t i = 0; i < s->used; i++)
        if (s->e[i].key && s->e[i].ep == ep)
            entry_remove(s, (int)i);
}

size_t sessions_count(const struct sessions *s)
{
    return s->count;
}

/* Whether key belongs to the scope prefix ("group" SESSIONS_KEY_SEP); NULL: any. */
static bool in_scope(const char *key, const char *prefix)
{
    return !prefix || strncmp(key, prefix, strlen(prefix)) == 0;
}

size_t sessions_rebind(struct sessions *s, const char *prefix, int ep, uint64_t now_ms)
{
    purge_expired(s, now_ms);
    size_t moved = 0;
    for (size_t i = 0; i < s->used; i++) {
        struct session_entry *x = &s->e[i];
        if (x->key && x->ep != ep && in_scope(x->key, prefix)) {
            x->ep = ep;
            moved++;
        }
    }
    return moved;
}

size_t sessions_release(struct sessions *s, const char *prefix, int ep)
{
    size_t gone = 0;
    for (size_t i = 0; i < s->used; i++) {
        struct session_entry *x = &s->e[i];
        if (x->key && (ep < 0 || x->ep == ep) && in_scope(x->key, prefix)) {
            entry_remove(s, (int)i);
            gone++;
        }
    }
    return gone;
}

size_t sessions_list(const struct sessions *s, uint64_t now_ms, struct session_info *out,
                     size_t max)
{
    size_t k = 0;
    for (int i = s->newest; i >= 0 && k < max; i = s->e[i].older) {
        const struct session_entry *x = &s->e[i];
        if (expired(s, x, now_ms))
            break; /* older ones are expired too */
        out[k].key = x->key;
        out[k].ep = x->ep;
        out[k].created_ms = x->created_ms;
        out[k].used_ms = x->used_ms;
        k++;
    }
    return k;
}

char *sessions_short_id(const char *id, char out[SESSIONS_SHORT_ID])
{
    /* A hash, not a prefix: the id (or metadata.user_id, which starts the
     * same for every session of one account) is never shown, and two
     * sessions still read apart.  FNV-1a folded to 32 bits. */
    const char *sep = strstr(id, SESSIONS_KEY_SEP);
    if (sep)
        id = sep + 1;
    uint64_t h = key_hash(id, strlen(id));
    snprintf(out, SESSIONS_SHORT_ID, "%08x", (unsigned)(h ^ (h >> 32)));
    return out;
}
