/*
 * Unit tests for dheap: the earliest deadline after any mix of inserts,
 * moves (earlier and later) and removals, checked against a brute-force
 * scan, with the heap property and every node's slot verified after each
 * step.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "dheap.h"

#define N 300

static void check_invariants(const struct dheap *h)
{
    for (size_t i = 0; i < h->n; i++) {
        assert_int_equal(h->v[i]->slot, i + 1);
        if (i > 0)
            assert_true(h->v[(i - 1) / 2]->at <= h->v[i]->at);
    }
}

static const struct dheap_node *brute_min(const struct dheap_node *nodes, size_t n)
{
    const struct dheap_node *best = NULL;
    for (size_t i = 0; i < n; i++)
        if (dheap_queued(&nodes[i]) && (!best || nodes[i].at < best->at))
            best = &nodes[i];
    return best;
}

static void test_empty(void **state)
{
    (void)state;
    struct dheap h;
    dheap_init(&h);
    assert_null(dheap_first(&h));
    struct dheap_node n = {0};
    dheap_remove(&h, &n); /* not queued: nothing happens */
    assert_false(dheap_queued(&n));
    dheap_release(&h);
}

static void test_order_and_moves(void **state)
{
    (void)state;
    struct dheap h;
    dheap_init(&h);
    struct dheap_node a = {0}, b = {0}, c = {0};
    dheap_set(&h, &a, 30);
    dheap_set(&h, &b, 10);
    dheap_set(&h, &c, 20);
    assert_ptr_equal(dheap_first(&h), &b);
    dheap_set(&h, &a, 5); /* earlier */
    assert_ptr_equal(dheap_first(&h), &a);
    dheap_set(&h, &a, 50); /* later */
    assert_ptr_equal(dheap_first(&h), &b);
    dheap_remove(&h, &b);
    assert_false(dheap_queued(&b));
    assert_ptr_equal(dheap_first(&h), &c);
    dheap_remove(&h, &c);
    assert_ptr_equal(dheap_first(&h), &a);
    assert_int_equal(h.n, 1);
    dheap_release(&h);
    assert_false(dheap_queued(&a)); /* release unqueues what is left */
}

static void test_random_against_brute_force(void **state)
{
    (void)state;
    static struct dheap_node nodes[N];
    for (unsigned seed = 1; seed <= 20; seed++) {
        srand(seed);
        struct dheap h;
        dheap_init(&h);
        for (size_t i = 0; i < N; i++)
            nodes[i] = (struct dheap_node){0};
        for (int step = 0; step < 5000; step++) {
            struct dheap_node *n = &nodes[(size_t)rand() % N];
            int op = rand() % 4;
            if (op < 2)
                dheap_set(&h, n, (uint64_t)(rand() % 1000)); /* ties are common */
            else if (op == 2)
                dheap_remove(&h, n);
            else if (dheap_first(&h))
                dheap_remove(&h, dheap_first(&h)); /* pop */
            check_invariants(&h);
            const struct dheap_node *want = brute_min(nodes, N);
            const struct dheap_node *got = dheap_first(&h);
            if (!want) {
                assert_null(got);
            } else {
                assert_non_null(got);
                assert_true(got->at == want->at);
            }
        }
        size_t queued = 0;
        for (size_t i = 0; i < N; i++)
            queued += dheap_queued(&nodes[i]);
        assert_int_equal(queued, h.n);
        dheap_release(&h);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_order_and_moves),
        cmocka_unit_test(test_random_against_brute_force),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
