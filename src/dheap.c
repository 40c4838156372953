/*
 * dheap: see dheap.h.  A binary heap in an array; v[i]->slot == i + 1.
 */
#include "dheap.h"

#include <stdlib.h>

#include "util.h"

void dheap_init(struct dheap *h)
{
    h->v = NULL;
    h->n = h->cap = 0;
}

void dheap_release(struct dheap *h)
{
    for (size_t i = 0; i < h->n; i++)
        h->v[i]->slot = 0;
    free(h->v);
    dheap_init(h);
}

static void place(struct dheap *h, size_t i, struct dheap_node *n)
{
    h->v[i] = n;
    n->slot = i + 1;
}

static void sift_up(struct dheap *h, size_t i)
{
    struct dheap_node *n = h->v[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h->v[parent]->at <= n->at)
            break;
        place(h, i, h->v[parent]);
        i = parent;
    }
    place(h, i, n);
}

static void sift_down(struct dheap *h, size_t i)
{
    struct dheap_node *n = h->v[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && h->v[c + 1]->at < h->v[c]->at)
            c++;
        if (n->at <= h->v[c]->at)
            break;
        place(h, i, h->v[c]);
        i = c;
    }
    place(h, i, n);
}

void dheap_set(struct dheap *h, struct dheap_node *n, uint64_t at)
{
    if (n->slot) {
        uint64_t was = n->at;
        n->at = at;
        if (at < was)
            sift_up(h, n->slot - 1);
        else if (at > was)
            sift_down(h, n->slot - 1);
        return;
    }
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 64;
        /* An array of node pointers: the element is a pointer on purpose. */
        // NOLINTNEXTLINE(bugprone-sizeof-expression)
        h->v = xrealloc(h->v, h->cap * sizeof *h->v);
    }
    n->at = at;
    h->v[h->n] = n;
    n->slot = ++h->n;
    sift_up(h, h->n - 1);
}

void dheap_remove(struct dheap *h, struct dheap_node *n)
{
    if (!n->slot)
        return;
    size_t i = n->slot - 1;
    n->slot = 0;
    struct dheap_node *last = h->v[--h->n];
    if (i == h->n)
        return;
    place(h, i, last);
    if (i > 0 && h->v[(i - 1) / 2]->at > last->at)
        sift_up(h, i);
    else
        sift_down(h, i);
}

struct dheap_node *dheap_first(const struct dheap *h)
{
    return h->n ? h->v[0] : NULL;
}
