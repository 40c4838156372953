/*
 * dheap: a min-heap of deadlines, for many objects that each wait for at
 * most one point in time (the proxy's requests and their time limits).
 *
 * The node is embedded in its owner; the heap holds pointers to nodes and
 * each node knows its slot, so setting, moving and removing a deadline are
 * O(log n) and finding the earliest is O(1).  Nothing is ever scanned:
 * with thousands of long streams open, a timer tick looks only at what is
 * due.
 *
 * Pure: no clock, no loop; times are whatever the caller uses (monotonic
 * milliseconds in the proxy).
 */
#ifndef ZEPHYR_DHEAP_H
#define ZEPHYR_DHEAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dheap_node {
    uint64_t at; /* the deadline while queued */
    size_t slot; /* index in the heap + 1; 0 when not queued */
};

struct dheap {
    struct dheap_node **v; /* owns the array, borrows the nodes */
    size_t n;
    size_t cap;
};

void dheap_init(struct dheap *h);
void dheap_release(struct dheap *h);

/* Queues n at `at`, or moves it there if it is queued already. */
void dheap_set(struct dheap *h, struct dheap_node *n, uint64_t at);
/* Takes n out; a no-op when it is not queued. */
void dheap_remove(struct dheap *h, struct dheap_node *n);
/* The earliest node, or NULL when the heap is empty. */
struct dheap_node *dheap_first(const struct dheap *h);

static inline bool dheap_queued(const struct dheap_node *n)
{
    return n->slot != 0;
}

#endif
