/*
 * Unit tests for policy.c: endpoint selection with a fake clock, and the
 * sticky-session map.  Every time below is a made-up monotonic millisecond.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "policy.h"
#include "state.h"
#include "state_reports.h"
#include "util.h"

#define THRESHOLD 50
#define GRACE 30000

static struct policy_ep healthy(double ms)
{
    struct policy_ep e = {
        .health = POLICY_HEALTHY, .blocked = false, .latency_ms = ms, .active = 0};
    return e;
}

static struct policy_ep unknown(void)
{
    struct policy_ep e = {
        .health = POLICY_UNKNOWN, .blocked = false, .latency_ms = -1, .active = 0};
    return e;
}

/* A policy already settled on eps[cur]. */
static void settle(struct policy *p, const struct policy_ep *eps, size_t n, int cur)
{
    policy_init(p, THRESHOLD, GRACE);
    struct policy_switch sw;
    assert_true(policy_evaluate(p, eps, n, 0, &sw));
    assert_int_equal(sw.reason, POLICY_REASON_INITIAL);
    assert_int_equal(p->current, cur);
}

static void test_initial_all_unknown_takes_first(void **state)
{
    (void)state;
    struct policy_ep eps[3] = {unknown(), unknown(), unknown()};
    struct policy p;
    policy_init(&p, THRESHOLD, GRACE);
    assert_int_equal(p.current, -1);
    struct policy_switch sw;
    assert_true(policy_evaluate(&p, eps, 3, 0, &sw));
    assert_int_equal(sw.from, -1);
    assert_int_equal(sw.to, 0);
    assert_int_equal(sw.reason, POLICY_REASON_INITIAL);
    assert_string_equal(policy_reason_name(sw.reason), "initial");
    /* Nothing changes on the next evaluation. */
    assert_false(policy_evaluate(&p, eps, 3, 1, &sw));
}

static void test_initial_prefers_measured(void **state)
{
    (void)state;
    struct policy_ep eps[3] = {unknown(), healthy(400), healthy(200)};
    struct policy p;
    settle(&p, eps, 3, 2);
}

static void test_initial_nothing_usable_stays_none(void **state)
{
    (void)state;
    struct policy_ep eps[2] = {healthy(100), healthy(100)};
    eps[0].health = POLICY_FAILED;
    eps[1].blocked = true;
    struct policy p;
    policy_init(&p, THRESHOLD, GRACE);
    struct policy_switch sw = {.reason = POLICY_REASON_NONE};
    assert_false(policy_evaluate(&p, eps, 2, 0, &sw));
    assert_int_equal(p.current, -1);
    assert_int_equal(sw.reason, POLICY_REASON_NONE); /* untouched */
    assert_int_equal(policy_route(&p, eps, 2, -1), -1);
    eps[1].blocked = false;
    assert_true(policy_evaluate(&p, eps, 2, 1, &sw));
    assert_int_equal(sw.to, 1);
    assert_int_equal(sw.reason, POLICY_REASON_INITIAL);
}

static void test_hysteresis_threshold_edges(void **state)
{
    (void)state;
    struct policy_ep eps[2] = {healthy(300), healthy(600)};
    struct policy p;
    settle(&p, eps, 2, 0);
    struct policy_switch sw;

    eps[1].latency_ms = 251; /* 49 ms better: below threshold */
    assert_false(policy_evaluate(&p, eps, 2, 10, &sw));
    assert_int_equal(p.current, 0);
    assert_int_equal(p.pending, -1);

    eps[1].latency_ms = 250; /* exactly the threshold */
    assert_true(policy_evaluate(&p, eps, 2, 20, &sw));
    assert_int_equal(sw.from, 0);
    assert_int_equal(sw.to, 1);
    assert_int_equal(sw.reason, POLICY_REASON_FASTER);
    assert_true(sw.from_latency_ms == 300);
    assert_true(sw.to_latency_ms == 250);
    assert_string_equal(policy_reason_name(sw.reason), "faster");

    /* Going back needs the same margin the other way. */
    eps[0].latency_ms = 201;
    assert_false(policy_evaluate(&p, eps, 2, 30, &sw));
    eps[0].latency_ms = 200;
    assert_true(policy_evaluate(&p, eps, 2, 40, &sw));
    assert_int_equal(sw.to, 0);
}

static void test_no_flap_on_near_equal_latencies(void **state)
{
    (void)state;
    struct policy_ep eps[3] = {healthy(200), healthy(230), healthy(215)};
    struct policy p;
    settle(&p, eps, 3, 0);
    int switches = 0;
    for (int i = 0; i < 1000; i++) {
        /* Each endpoint takes turns being the fastest, by up to 49 ms. */
        eps[0].latency_ms = 200 + (i % 3 == 0 ? 0 : 49);
        eps[1].latency_ms = 200 + (i % 3 == 1 ? 0 : 49);
        eps[2].latency_ms = 200 + (i % 3 == 2 ? 0 : 40);
        struct policy_switch sw;
        if (policy_evaluate(&p, eps, 3, (uint64_t)i * 1000, &sw))
            switches++;
        assert_int_equal(p.pending, -1);
    }
    assert_int_equal(switches, 0);
    assert_int_equal(p.current, 0);
}

static void test_zero_threshold_never_switches_to_equal(void **state)
{
    (void)state;
    struct policy_ep eps[2] = {healthy(300), healthy(200)};
    struct policy p;
    policy_init(&p, 0, GRACE);
    assert_true(policy_evaluate(&p, eps, 2, 0, NULL));
    assert_int_equal(p.current, 1);
    /* Equal, and the other one ranks first on the tie: still no switch. */
    eps[0].latency_ms = 200;
    assert_false(policy_evaluate(&p, eps, 2, 1, NULL));
    assert_int_equal(p.current, 1);
    eps[0].latency_ms = 199.5;
    assert_true(policy_evaluate(&p, eps, 2, 2, NULL));
    assert_int_equal(p.current, 0);
}

static void test_immediate_failover_despite_active(void **state)
{
    (void)state;
    struct policy_ep eps[3] = {healthy(100), healthy(400), healthy(300)};
    struct policy p;
    settle(&p, eps, 3, 0);
    eps[0].active = 7;
    eps[0].health = POLICY_FAILED;
    struct policy_switch sw;
    assert_true(policy_evaluate(&p, eps, 3, 5, &sw));
    assert_int_equal(sw.from, 0);
    assert_int_equal(sw.to, 2);
    assert_int_equal(sw.reason, POLICY_REASON_FAILURE);
    assert_string_equal(policy_reason_name(sw.reason), "failure");
    /* The failed one recovering faster is an ordinary speed decision. */
    eps[0].health = POLICY_HEALTHY;
    eps[0].active = 0;
    eps[2].active = 0;
    assert_true(policy_evaluate(&p, eps, 3, 6, &sw));
    assert_int_equal(sw.to, 0);
    assert_int_equal(sw.reason, POLICY_REASON_FASTER);
}

static void test_blocked_is_failover(void **state)
{
    (void)state;
    struct policy_ep eps[2] = {healthy(100), healthy(900)};
    struct policy p;
    settle(&p, eps, 2, 0);
    eps[0].blocked = true; /* still "healthy", but the circuit is open */
    struct policy_switch sw;
    assert_true(policy_evaluate(&p, eps, 2, 1, &sw));
    assert_int_equal(sw.to, 1);
    assert_int_equal(sw.reason, POLICY_REASON_FAILURE);
    assert_int_equal(policy_route(&p, eps, 2, 0), 1);
}

static void test_failover_nowhere_to_go_keeps_current(void **state)
{
    (void)state;
    struct policy_ep eps[2] = {healthy(100), healthy(200)};
    struct policy p;
    settle(&p, eps, 2, 0);
    eps[0].health = POLICY_FAILED;
    eps[1].health = POLICY_FAILED;
    assert_false(policy_evaluate(&p, eps, 2, 1, NULL));
    assert_int_equal(p.current, 0);
    assert_int_equal(policy_route(&p, eps, 2, -1), -1);
    assert_int_equal(policy_route(&p, eps, 2, 1), -1);
    /* The other one comes back first: fail over to it. */
    eps[1].health = POLICY_HEALTHY;
    struct policy_switch sw;
    assert_true(policy_evaluate(&p, eps, 2, 2, &sw));
    assert_int_equal(sw.to, 1);
    assert_int_equal(sw.reason, POLICY_REASON_FAILURE);
}

static void test_failover_to_unchecked_endpoint(void **state)
{
    (void)state;
    /* An unchecked endpoint is not a failed one: it is a valid refuge, but
     * only after every measured endpoint. */
    struct policy_ep eps[3] = {healthy(100), unknown(), healthy(900)};
    struct policy p;
    settle(&p, eps, 3, 0);
    eps[0].health = POLICY_FAILED;
    struct policy_switch sw;
    assert_true(policy_evaluate(&p, eps, 3, 1, &sw));
    assert_int_equal(sw.to, 2);
    eps[2].health = POLICY_FAILED;
    assert_true(policy_evaluate(&p, eps, 3, 2, &sw));
    assert_int_equal(sw.to, 1);
    assert_true(sw.to_latency_ms < 0);
}

static void test_checking_current_stays(void **state)
{
    (void)state;
    struct policy_ep eps[2] = {unknown(), unknown()};
    struct policy p;
    settle(&p, eps, 2, 0);
    eps[0].health = POLICY_CHECKING;
    eps[1] = healthy(50); /* answered first, and fast */
    for (uint64_t t = 1; t < 100; t++)
        assert_false(policy_evaluate(&p, eps, 2, t, NULL));
    assert_int_equal(p.current, 0);
    assert_int_equal(policy_route(&p, eps, 2, -1), 0);
    /* Its check ends: now a real comparison happens. */
    eps[0] = healthy(500);
    struct policy_switch sw;
    assert_true(policy_evaluate(&p, eps, 2, 100, &sw));
    assert_int_equal(sw.to, 1);
    assert_int_equal(sw.reason, POLICY_REASON_FASTER);
}

static void test_unknown_latency_never_faster(void **state)
{
    (void)state;
    struct policy_ep eps[3] = {healthy(5000), unknown(), healthy(-1)};
    struct policy p;
    settle(&p, eps, 3, 0);
    eps[1].health = POLICY_CHECKING;
    assert_false(policy_evaluate(&p, eps, 3, 1, NULL));
    assert_int_equal(p.current, 0);
    assert_int_equal(p.pending, -1);
}

static void test_best_ranking_and_tried(void **state)
{
    (void)state;
    struct policy_ep eps[5] = {unknown(), healthy(-1), healthy(300), healthy(100), healthy(100)};
    eps[4].health = POLICY_CHECKING;                /* re-check running, last latency known */
    assert_int_equal(policy_best(eps, 5, NULL), 3); /* tie: lower index */
    bool tried[5] = {false, false, false, true, false};
    assert_int_equal(policy_best(eps, 5, tried), 4);
    tried[4] = true;
    assert_int_equal(policy_best(eps, 5, tried), 2);
    tried[2] = true;
    assert_int_equal(policy_best(eps, 5, tried), 1); /* healthy, unmeasured */
    tried[1] = true;
    assert_int_equal(policy_best(eps, 5, tried), 0); /* never checked */
    tried[0] = true;
    assert_int_equal(policy_best(eps, 5, tried), -1);
    assert_int_equal(policy_best(eps, 0, NULL), -1);
}

/* The next in line is where failover goes: the best usable endpoint other
 * than the one requests go to now (current, or the best while current is
 * unusable), whatever the pin. */
static void test_next_in_line(void **state)
{
    (void)state;
    struct policy_ep eps[4] = {healthy(300), healthy(100), healthy(200), healthy(50)};
    eps[3].health = POLICY_FAILED;
    struct policy p;
    settle(&p, eps, 4, 1);
    assert_int_equal(policy_next_in_line(&p, eps, 4), 2);
    /* Latency ranks, not config order: the faster one is next. */
    eps[0].latency_ms = 150;
    assert_int_equal(policy_next_in_line(&p, eps, 4), 0);
    /* Current unusable, not yet re-evaluated: requests go to the best (0),
     * so the next after it is 2. */
    eps[1].blocked = true;
    assert_int_equal(policy_next_in_line(&p, eps, 4), 2);
    eps[1].blocked = false;
    /* Pinned to the slowest: next is the fastest other. */
    assert_true(policy_set_manual(&p, 2, eps, 4, NULL));
    assert_int_equal(policy_next_in_line(&p, eps, 4), 1);
    /* Nothing else usable, nothing at all, no endpoints. */
    eps[0].health = eps[1].health = POLICY_FAILED;
    assert_int_equal(policy_next_in_line(&p, eps, 4), -1);
    eps[2].health = POLICY_FAILED;
    assert_int_equal(policy_next_in_line(&p, eps, 4), -1);
    assert_int_equal(policy_next_in_line(&p, eps, 0), -1);
}

static void test_graceful_fires_when_idle(void **state)
{
    (void)state;
    struct policy_ep eps[2] = {healthy(400), healthy(900)};
    struct policy p;
    settle(&p, eps, 2, 0);
    eps[0].active = 2;
    eps[1].latency_ms = 100;
    struct policy_switch sw;
    assert_false(policy_evaluate(&p, eps, 2, 1000, &sw));
    assert_int_equal(p.current, 0);
    assert_int_equal(p.pending, 1);
    assert_int_equal(policy_deadline_ms(&p), 1000 + GRACE);
    /* Requests still running: new requests still go to the current one. */
    assert_int_equal(policy_route(&p, eps, 2, -1), 0);
    eps[0].active = 1;
    assert_false(policy_evaluate(&p, eps, 2, 2000, &sw));
    eps[0].active = 0;
    assert_true(policy_evaluate(&p, eps, 2, 3000, &sw));
    assert_int_equal(sw.from, 0);
    assert_int_equal(sw.to, 1);
    assert_int_equal(sw.reason, POLICY_REASON_FASTER);
    assert_int_equal(p.pending, -1);
    assert_int_equal(policy_deadline_ms(&p), 0);
}

static void test_graceful_fires_on_timeout(void **state)
{
    (void)state;
    struct policy_ep eps[2] = {healthy(400), healthy(100)};
    eps[0].active = 3;
    struct policy p;
    policy_init(&p, THRESHOLD, GRACE);
    p.current = 0; /* was settled on 0 before 1 got fast */
    assert_false(policy_evaluate(&p, eps, 2, 5000, NULL));
    assert_int_equal(p.pending, 1);
    assert_false(policy_evaluate(&p, eps, 2, 5000 + GRACE - 1, NULL));
    assert_int_equal(p.current, 0);
    struct policy_switch sw;
    assert_true(policy_evaluate(&p, eps, 2, 5000 + GRACE, &sw));
    assert_int_equal(sw.to, 1);
    assert_int_equal(sw.reason, POLICY_REASON_FASTER);
}

static void test_graceful_zero_timeout_does_not_wait(void **state)
{
    (void)state;
    struct policy_ep eps[2] = {healthy(400), healthy(100)};
    eps[0].active = 1;
    struct policy p;
    policy_init(&p, THRESHOLD, 0);
    p.current = 0;
    assert_true(policy_evaluate(&p, eps, 2, 10, NULL));
    assert_int_equal(p.current, 1);
    assert_int_equal(p.pending, -1);
}

static void test_graceful_cancelled_when_target_slower(void **state)
{
    (void)state;
    struct policy_ep eps[2] = {healthy(400), healthy(100)};
    eps[0].active = 1;
    struct policy p;
    policy_init(&p, THRESHOLD, GRACE);
    p.current = 0;
    assert_false(policy_evaluate(&p, eps, 2, 0, NULL));
    assert_int_equal(p.pending, 1);
    eps[1].latency_ms = 380; /* no longer better by the threshold */
    assert_false(policy_evaluate(&p, eps, 2, 100, NULL));
    assert_int_equal(p.pending, -1);
    assert_int_equal(policy_deadline_ms(&p), 0);
    /* Even past the old deadline, nothing fires. */
    eps[0].active = 0;
    assert_false(policy_evaluate(&p, eps, 2, GRACE + 1, NULL));
    assert_int_equal(p.current, 0);
}

static void test_graceful_cancelled_when_target_fails(void **state)
{
    (void)state;
    struct policy_ep eps[2] = {healthy(400), healthy(100)};
    eps[0].active = 1;
    struct policy p;
    policy_init(&p, THRESHOLD, GRACE);
    p.current = 0;
    assert_false(policy_evaluate(&p, eps, 2, 0, NULL));
    assert_int_equal(p.pending, 1);
    eps[1].health = POLICY_FAILED;
    assert_false(policy_evaluate(&p, eps, 2, GRACE, NULL));
    assert_int_equal(p.pending, -1);
    assert_int_equal(p.current, 0);
}

static void test_graceful_retarget_keeps_deadline(void **state)
{
    (void)state;
    struct policy_ep eps[3] = {healthy(400), healthy(300), healthy(900)};
    eps[0].active = 1;
    struct policy p;
    policy_init(&p, THRESHOLD, GRACE);
    p.current = 0;
    assert_false(policy_evaluate(&p, eps, 3, 1000, NULL));
    assert_int_equal(p.pending, 1);
    eps[2].latency_ms = 100;
    assert_false(policy_evaluate(&p, eps, 3, 2000, NULL));
    assert_int_equal(p.pending, 2);
    assert_int_equal(policy_deadline_ms(&p), 1000 + GRACE);
    struct policy_switch sw;
    assert_true(policy_evaluate(&p, eps, 3, 1000 + GRACE, &sw));
    assert_int_equal(sw.to, 2);
}

static void test_failover_while_pending(void **state)
{
    (void)state;
    struct policy_ep eps[3] = {healthy(400), healthy(200), healthy(250)};
    eps[0].active = 4;
    struct policy p;
    policy_init(&p, THRESHOLD, GRACE);
    p.current = 0;
    assert_false(policy_evaluate(&p, eps, 3, 0, NULL));
    assert_int_equal(p.pending, 1);
    eps[0].health = POLICY_FAILED;
    eps[1].health = POLICY_FAILED;
    struct policy_switch sw;
    assert_true(policy_evaluate(&p, eps, 3, 10, &sw));
    assert_int_equal(sw.from, 0);
    assert_int_equal(sw.to, 2);
    assert_int_equal(sw.reason, POLICY_REASON_FAILURE);
    assert_int_equal(p.pending, -1);
    assert_int_equal(policy_deadline_ms(&p), 0);

    /* A pending switch also ends when the current endpoint fails and there
     * is nowhere to go: no timer is left armed for it. */
    eps[0].health = POLICY_HEALTHY;
    eps[1].health = POLICY_HEALTHY;
    eps[2].active = 1;
    eps[2].latency_ms = 900;
    assert_false(policy_evaluate(&p, eps, 3, 20, NULL));
    assert_int_equal(p.pending, 1);
    eps[0].health = POLICY_FAILED;
    eps[1].health = POLICY_FAILED;
    eps[2].health = POLICY_FAILED;
    assert_false(policy_evaluate(&p, eps, 3, 30, NULL));
    assert_int_equal(p.current, 2);
    assert_int_equal(p.pending, -1);
    assert_int_equal(policy_deadline_ms(&p), 0);
}

static void test_manual_pin_stays_despite_faster(void **state)
{
    (void)state;
    struct policy_ep eps[3] = {healthy(100), healthy(800), healthy(300)};
    struct policy p;
    settle(&p, eps, 3, 0);
    eps[0].active = 3; /* manual switches do not wait */
    struct policy_switch sw;
    assert_true(policy_set_manual(&p, 1, eps, 3, &sw));
    assert_int_equal(sw.from, 0);
    assert_int_equal(sw.to, 1);
    assert_int_equal(sw.reason, POLICY_REASON_MANUAL);
    assert_string_equal(policy_reason_name(sw.reason), "manual");
    assert_true(p.manual);
    assert_false(policy_pin_overridden(&p));
    eps[0].active = 0;
    for (uint64_t t = 1; t < 50; t++)
        assert_false(policy_evaluate(&p, eps, 3, t * 1000, NULL));
    assert_int_equal(p.current, 1);
    assert_int_equal(p.pending, -1);
    /* Pinning the current endpoint again is no switch. */
    assert_false(policy_set_manual(&p, 1, eps, 3, &sw));
    /* Back to auto: the next evaluation moves to the fastest. */
    policy_set_auto(&p);
    assert_false(p.manual);
    assert_false(policy_pin_overridden(&p));
    assert_true(policy_evaluate(&p, eps, 3, 60000, &sw));
    assert_int_equal(sw.to, 0);
    assert_int_equal(sw.reason, POLICY_REASON_FASTER);
}

static void test_manual_pin_fails_then_recovers(void **state)
{
    (void)state;
    struct policy_ep eps[3] = {healthy(100), healthy(800), healthy(300)};
    struct policy p;
    settle(&p, eps, 3, 0);
    assert_true(policy_set_manual(&p, 1, eps, 3, NULL));

    eps[1].health = POLICY_FAILED;
    struct policy_switch sw;
    assert_true(policy_evaluate(&p, eps, 3, 10, &sw));
    assert_int_equal(sw.from, 1);
    assert_int_equal(sw.to, 0);
    assert_int_equal(sw.reason, POLICY_REASON_FAILURE);
    assert_true(policy_pin_overridden(&p));
    assert_int_equal(policy_route(&p, eps, 3, -1), 0);

    /* While overridden, the stand-in is not swapped for speed... */
    eps[2].latency_ms = 10;
    assert_false(policy_evaluate(&p, eps, 3, 20, NULL));
    assert_int_equal(p.current, 0);
    /* ...but a failing stand-in is replaced. */
    eps[0].health = POLICY_FAILED;
    assert_true(policy_evaluate(&p, eps, 3, 30, &sw));
    assert_int_equal(sw.to, 2);
    assert_int_equal(sw.reason, POLICY_REASON_FAILURE);
    assert_true(policy_pin_overridden(&p));

    /* "checking" is not recovered yet, but no longer failed either. */
    eps[1].health = POLICY_CHECKING;
    assert_true(policy_evaluate(&p, eps, 3, 40, &sw));
    assert_int_equal(sw.from, 2);
    assert_int_equal(sw.to, 1);
    assert_int_equal(sw.reason, POLICY_REASON_RECOVERED);
    assert_string_equal(policy_reason_name(sw.reason), "recovered");
    assert_false(policy_pin_overridden(&p));
}

static void test_manual_pin_already_failed(void **state)
{
    (void)state;
    struct policy_ep eps[2] = {healthy(100), healthy(800)};
    eps[1].blocked = true;
    struct policy p;
    settle(&p, eps, 2, 0);
    struct policy_switch sw;
    assert_false(policy_set_manual(&p, 1, eps, 2, &sw));
    assert_int_equal(p.current, 0);
    assert_true(policy_pin_overridden(&p));
    assert_false(policy_evaluate(&p, eps, 2, 1, NULL));
    eps[1].blocked = false;
    assert_true(policy_evaluate(&p, eps, 2, 2, &sw));
    assert_int_equal(sw.to, 1);
    assert_int_equal(sw.reason, POLICY_REASON_RECOVERED);
}

static void test_manual_cancels_pending_and_rejects_bad_index(void **state)
{
    (void)state;
    struct policy_ep eps[2] = {healthy(400), healthy(100)};
    eps[0].active = 1;
    struct policy p;
    policy_init(&p, THRESHOLD, GRACE);
    p.current = 0;
    assert_false(policy_evaluate(&p, eps, 2, 0, NULL));
    assert_int_equal(p.pending, 1);
    assert_false(policy_set_manual(&p, 2, eps, 2, NULL));
    assert_false(policy_set_manual(&p, -1, eps, 2, NULL));
    assert_false(p.manual);
    assert_int_equal(p.pending, 1);
    assert_false(policy_set_manual(&p, 0, eps, 2, NULL)); /* already current */
    assert_true(p.manual);
    assert_int_equal(p.pending, -1);
    assert_false(policy_evaluate(&p, eps, 2, GRACE * 2, NULL));
    assert_int_equal(p.current, 0);
}

static void test_manual_before_any_current(void **state)
{
    (void)state;
    struct policy_ep eps[2] = {unknown(), unknown()};
    struct policy p;
    policy_init(&p, THRESHOLD, GRACE);
    struct policy_switch sw;
    assert_true(policy_set_manual(&p, 1, eps, 2, &sw));
    assert_int_equal(sw.from, -1);
    assert_int_equal(sw.reason, POLICY_REASON_INITIAL);
    assert_int_equal(p.current, 1);
}

static void test_manual_pin_before_anything_usable(void **state)
{
    (void)state;
    struct policy_ep eps[2] = {healthy(100), healthy(100)};
    eps[0].health = POLICY_FAILED;
    eps[1].health = POLICY_FAILED;
    struct policy p;
    policy_init(&p, THRESHOLD, GRACE);
    assert_false(policy_set_manual(&p, 1, eps, 2, NULL));
    assert_false(policy_evaluate(&p, eps, 2, 1, NULL));
    assert_int_equal(p.current, -1);
    assert_true(policy_pin_overridden(&p));
    eps[1].health = POLICY_HEALTHY;
    struct policy_switch sw;
    assert_true(policy_evaluate(&p, eps, 2, 2, &sw));
    assert_int_equal(sw.from, -1);
    assert_int_equal(sw.to, 1);
    assert_int_equal(sw.reason, POLICY_REASON_INITIAL);
    assert_false(policy_pin_overridden(&p));
}

static void test_route_session_stickiness(void **state)
{
    (void)state;
    struct policy_ep eps[3] = {healthy(100), healthy(300), healthy(500)};
    struct policy p;
    settle(&p, eps, 3, 0);
    assert_int_equal(policy_route(&p, eps, 3, -1), 0);
    assert_int_equal(policy_route(&p, eps, 3, 2), 2); /* sticky, though slower */
    assert_int_equal(policy_route(&p, eps, 3, 7), 0); /* stale index */
    eps[2].health = POLICY_CHECKING;
    assert_int_equal(policy_route(&p, eps, 3, 2), 2);
    eps[2].health = POLICY_FAILED;
    assert_int_equal(policy_route(&p, eps, 3, 2), 0);
    eps[2].health = POLICY_HEALTHY;
    eps[2].blocked = true;
    assert_int_equal(policy_route(&p, eps, 3, 2), 0);
    /* Current down and not yet re-evaluated: best of the rest. */
    eps[0].health = POLICY_FAILED;
    assert_int_equal(policy_route(&p, eps, 3, 2), 1);
    eps[1].health = POLICY_FAILED;
    assert_int_equal(policy_route(&p, eps, 3, 2), -1);
}

/* The caller's request path: look the session up, route, bind the result. */
static int route_request(struct policy *p, const struct policy_ep *eps, size_t n,
                         struct sessions *s, const char *key, uint64_t now)
{
    int sep = key ? sessions_lookup(s, key, now) : -1;
    int ep = policy_route(p, eps, n, sep);
    if (key && ep >= 0)
        sessions_bind(s, key, ep, now);
    return ep;
}

static void test_session_follows_until_failure(void **state)
{
    (void)state;
    struct policy_ep eps[2] = {healthy(300), healthy(900)};
    struct policy p;
    settle(&p, eps, 2, 0);
    struct sessions *s = sessions_new(3600 * 1000, 16);
    assert_int_equal(route_request(&p, eps, 2, s, "g" SESSIONS_KEY_SEP "sess-a", 0), 0);
    /* Endpoint 1 becomes much faster: new sessions go there, sess-a stays. */
    eps[1].latency_ms = 100;
    assert_true(policy_evaluate(&p, eps, 2, 10, NULL));
    assert_int_equal(route_request(&p, eps, 2, s, "g" SESSIONS_KEY_SEP "sess-b", 20), 1);
    assert_int_equal(route_request(&p, eps, 2, s, "g" SESSIONS_KEY_SEP "sess-a", 30), 0);
    assert_int_equal(route_request(&p, eps, 2, s, NULL, 40), 1);
    /* Its endpoint fails: the session moves, and stays moved on recovery. */
    eps[0].health = POLICY_FAILED;
    assert_int_equal(route_request(&p, eps, 2, s, "g" SESSIONS_KEY_SEP "sess-a", 50), 1);
    eps[0].health = POLICY_HEALTHY;
    assert_int_equal(route_request(&p, eps, 2, s, "g" SESSIONS_KEY_SEP "sess-a", 60), 1);
    sessions_free(s);
}

/* Issue 14: the pin beats the session; a session leaves for a faster
 * endpoint only by session_threshold_ms (0: never for speed); a failed or
 * resting endpoint always lets it go. */
static void test_route_session_pin_failure_threshold(void **state)
{
    (void)state;
    struct policy_ep eps[3] = {healthy(100), healthy(300), healthy(450)};
    struct policy p;
    settle(&p, eps, 3, 0);
    enum policy_reason why = POLICY_REASON_GROUP;
    /* No session: where new traffic goes, nothing moved. */
    assert_int_equal(policy_route_session(&p, eps, 3, -1, &why), 0);
    assert_int_equal(why, POLICY_REASON_NONE);
    /* Threshold 0 (policy_init's): never for speed, however large the gap. */
    assert_int_equal(policy_route_session(&p, eps, 3, 2, &why), 2);
    assert_int_equal(why, POLICY_REASON_NONE);
    /* 300 ms: a 200 ms gap keeps the session, a 350 ms gap moves it. */
    policy_set_session_threshold(&p, 300);
    assert_int_equal(policy_route_session(&p, eps, 3, 1, &why), 1);
    assert_int_equal(why, POLICY_REASON_NONE);
    assert_int_equal(policy_route_session(&p, eps, 3, 2, &why), 0);
    assert_int_equal(why, POLICY_REASON_FASTER);
    assert_int_equal(policy_route(&p, eps, 3, 2), 0);
    /* Exactly the threshold moves; an unknown latency never does. */
    eps[1].latency_ms = 400;
    assert_int_equal(policy_route_session(&p, eps, 3, 1, &why), 0);
    assert_int_equal(why, POLICY_REASON_FASTER);
    eps[1].latency_ms = -1;
    assert_int_equal(policy_route_session(&p, eps, 3, 1, &why), 1);
    assert_int_equal(why, POLICY_REASON_NONE);
    eps[1].latency_ms = 300;
    policy_set_session_threshold(&p, -5);
    assert_int_equal(p.session_threshold_ms, 0);
    assert_int_equal(policy_route_session(&p, eps, 3, 2, &why), 2);
    /* The session's endpoint fails or rests: it moves, reason failure. */
    eps[2].health = POLICY_FAILED;
    assert_int_equal(policy_route_session(&p, eps, 3, 2, &why), 0);
    assert_int_equal(why, POLICY_REASON_FAILURE);
    eps[2].health = POLICY_HEALTHY;
    eps[2].blocked = true;
    assert_int_equal(policy_route_session(&p, eps, 3, 2, &why), 0);
    assert_int_equal(why, POLICY_REASON_FAILURE);
    eps[2].blocked = false;
    /* Pinned to 1 (slower than 0): every session goes to the pin. */
    assert_true(policy_set_manual(&p, 1, eps, 3, NULL));
    assert_int_equal(policy_route_session(&p, eps, 3, 0, &why), 1);
    assert_int_equal(why, POLICY_REASON_MANUAL);
    assert_int_equal(policy_route_session(&p, eps, 3, 2, &why), 1);
    assert_int_equal(why, POLICY_REASON_MANUAL);
    assert_int_equal(policy_route_session(&p, eps, 3, 1, &why), 1);
    assert_int_equal(why, POLICY_REASON_NONE);
    /* The pin fails (overridden): sessions keep their usable endpoints,
     * and the threshold does not apply in manual mode. */
    policy_set_session_threshold(&p, 1);
    eps[1].health = POLICY_FAILED;
    assert_true(policy_evaluate(&p, eps, 3, 10, NULL));
    assert_true(policy_pin_overridden(&p));
    assert_int_equal(policy_route_session(&p, eps, 3, 2, &why), 2);
    assert_int_equal(why, POLICY_REASON_NONE);
    assert_int_equal(policy_route_session(&p, eps, 3, 1, &why), 0);
    assert_int_equal(why, POLICY_REASON_FAILURE);
    /* Nothing usable: -1, and no move is reported. */
    eps[0].health = eps[2].health = POLICY_FAILED;
    assert_int_equal(policy_route_session(&p, eps, 3, 2, &why), -1);
    assert_int_equal(why, POLICY_REASON_NONE);
}

/* Rebinding (the pin), release, the list /status shows and short ids. */
static void test_sessions_rebind_release_list(void **state)
{
    (void)state;
    struct sessions *s = sessions_new(1000, 8);
    sessions_bind(s, "g" SESSIONS_KEY_SEP "one", 0, 100);
    sessions_bind(s, "g" SESSIONS_KEY_SEP "two", 1, 200);
    sessions_bind(s, "h" SESSIONS_KEY_SEP "one", 0, 300);
    sessions_bind(s, "g" SESSIONS_KEY_SEP "one", 0, 400); /* used again; created stays */
    struct session_info li[8];
    assert_int_equal(sessions_list(s, 500, li, 8), 3);
    assert_string_equal(li[0].key, "g" SESSIONS_KEY_SEP "one"); /* most recent first */
    assert_int_equal(li[0].created_ms, 100);
    assert_int_equal(li[0].used_ms, 400);
    assert_string_equal(li[2].key, "g" SESSIONS_KEY_SEP "two");
    assert_int_equal(sessions_list(s, 500, li, 2), 2);
    /* Expired entries are not listed (two was used at 200, ttl 1000). */
    assert_int_equal(sessions_list(s, 1250, li, 8), 2);
    /* Rebind group g to 2: two entries there, h untouched. */
    assert_int_equal(sessions_rebind(s, "g" SESSIONS_KEY_SEP, 2, 500), 2);
    assert_int_equal(sessions_lookup(s, "g" SESSIONS_KEY_SEP "one", 510), 2);
    assert_int_equal(sessions_lookup(s, "g" SESSIONS_KEY_SEP "two", 510), 2);
    assert_int_equal(sessions_lookup(s, "h" SESSIONS_KEY_SEP "one", 510), 0);
    assert_int_equal(sessions_rebind(s, "g" SESSIONS_KEY_SEP, 2, 520), 0);
    /* Release h's endpoint 2: none; g's endpoint 2: both; then all. */
    assert_int_equal(sessions_release(s, "h" SESSIONS_KEY_SEP, 2), 0);
    assert_int_equal(sessions_release(s, "g" SESSIONS_KEY_SEP, 2), 2);
    assert_int_equal(sessions_lookup(s, "g" SESSIONS_KEY_SEP "one", 530), -1);
    assert_int_equal(sessions_count(s), 1);
    sessions_bind(s, "g" SESSIONS_KEY_SEP "three", 1, 540);
    assert_int_equal(sessions_release(s, NULL, -1), 2);
    assert_int_equal(sessions_count(s), 0);
    assert_int_equal(sessions_list(s, 550, li, 8), 0);
    /* Freed slots are reused. */
    for (int i = 0; i < 8; i++) {
        char k[16];
        snprintf(k, sizeof k, "g" SESSIONS_KEY_SEP "%d", i);
        sessions_bind(s, k, i, 600);
    }
    assert_int_equal(sessions_count(s), 8);
    sessions_free(s);
    /* Short ids: 8 hex digits of the id part, never a piece of it. */
    char a[SESSIONS_SHORT_ID], b[SESSIONS_SHORT_ID], c[SESSIONS_SHORT_ID];
    sessions_short_id("g" SESSIONS_KEY_SEP "5f0c3a9e-1d2b", a);
    sessions_short_id("5f0c3a9e-1d2b", b);
    sessions_short_id("5f0c3a9e-1d2c", c);
    assert_int_equal(strlen(a), 8);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_null(strstr("5f0c3a9e-1d2b", a));
}

static void test_groups_are_independent(void **state)
{
    (void)state;
    /* Group A is the default and current at start; B is checked later. */
    struct policy_ep a[2] = {healthy(300), healthy(100)};
    struct policy_ep b[3] = {unknown(), unknown(), unknown()};
    struct policy pa, pb;
    policy_init(&pa, THRESHOLD, GRACE);
    policy_init(&pb, THRESHOLD, GRACE);
    assert_int_equal(policy_activate(&pa, a, 2, 0), 1);
    assert_true(policy_set_manual(&pa, 0, a, 2, NULL));

    /* Operator switches to B: it starts on its first endpoint, then on its
     * fastest once measured. */
    assert_int_equal(policy_activate(&pb, b, 3, 100), 0);
    b[0] = healthy(700);
    b[1] = healthy(200);
    b[2].health = POLICY_FAILED;
    struct policy_switch sw;
    assert_true(policy_evaluate(&pb, b, 3, 200, &sw));
    assert_int_equal(sw.to, 1);

    /* Sessions scoped by group name never cross groups. */
    struct sessions *s = sessions_new(60000, 16);
    sessions_bind(s, "A" SESSIONS_KEY_SEP "x", 0, 300);
    sessions_bind(s, "B" SESSIONS_KEY_SEP "x", 1, 300);
    assert_int_equal(sessions_lookup(s, "A" SESSIONS_KEY_SEP "x", 301), 0);
    assert_int_equal(sessions_lookup(s, "B" SESSIONS_KEY_SEP "x", 301), 1);
    sessions_free(s);

    /* Back to A: its pin survived the time away. */
    assert_int_equal(policy_activate(&pa, a, 2, 400), 0);
    assert_true(pa.manual);
    assert_false(policy_pin_overridden(&pa));
    /* An activated group whose endpoint died meanwhile fails over. */
    a[0].health = POLICY_FAILED;
    assert_int_equal(policy_activate(&pa, a, 2, 500), 1);
    assert_true(policy_pin_overridden(&pa));
    /* Nothing usable: activate says so. */
    b[0].health = POLICY_FAILED;
    b[1].health = POLICY_FAILED;
    assert_int_equal(policy_activate(&pb, b, 3, 600), -1);
    assert_int_equal(pb.current, 1); /* kept, for /status */
    assert_int_equal(policy_route(&pb, b, 3, -1), -1);
    assert_string_equal(policy_reason_name(POLICY_REASON_GROUP), "group");
}

static void test_shrunken_endpoint_list(void **state)
{
    (void)state;
    struct policy_ep eps[3] = {healthy(900), healthy(900), healthy(100)};
    struct policy p;
    settle(&p, eps, 3, 2);
    struct policy_switch sw;
    assert_true(policy_evaluate(&p, eps, 2, 1, &sw)); /* index 2 is gone */
    assert_int_equal(sw.from, -1);
    assert_int_equal(sw.reason, POLICY_REASON_INITIAL);
    assert_int_equal(p.current, 0);
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(policy_reason_name(POLICY_REASON_NONE), "none");
    assert_string_equal(policy_reason_name(POLICY_REASON_INITIAL), "initial");
    assert_string_equal(policy_reason_name((enum policy_reason)99), "none");
    assert_string_equal(policy_health_name(POLICY_UNKNOWN), "unknown");
    assert_string_equal(policy_health_name(POLICY_CHECKING), "checking");
    assert_string_equal(policy_health_name(POLICY_HEALTHY), "healthy");
    assert_string_equal(policy_health_name(POLICY_FAILED), "failed");
}

/* ---- sessions ---------------------------------------------------------- */

static void test_sessions_ttl(void **state)
{
    (void)state;
    struct sessions *s = sessions_new(1000, 8);
    sessions_bind(s, "a", 2, 10000);
    assert_int_equal(sessions_lookup(s, "a", 10999), 2); /* refreshes */
    assert_int_equal(sessions_lookup(s, "a", 11998), 2);
    assert_int_equal(sessions_lookup(s, "a", 12997), 2);
    assert_int_equal(sessions_count(s), 1);
    assert_int_equal(sessions_lookup(s, "a", 13997), -1); /* 1000 ms unused */
    assert_int_equal(sessions_count(s), 0);
    assert_int_equal(sessions_lookup(s, "missing", 14000), -1);
    sessions_bind(s, "b", 1, 20000);
    sessions_bind(s, "b", 0, 20500); /* rebind refreshes and replaces */
    assert_int_equal(sessions_lookup(s, "b", 21400), 0);
    assert_int_equal(sessions_count(s), 1);
    sessions_free(s);

    /* ttl 0: only eviction removes entries. */
    s = sessions_new(0, 8);
    sessions_bind(s, "a", 1, 0);
    assert_int_equal(sessions_lookup(s, "a", UINT64_C(1) << 50), 1);
    sessions_free(s);
    sessions_free(NULL);
}

static void test_sessions_eviction_bound(void **state)
{
    (void)state;
    struct sessions *s = sessions_new(1000000, 4);
    char key[32];
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        sessions_bind(s, key, i, (uint64_t)i);
    }
    /* Touch k0 so k1 is the least recently used. */
    assert_int_equal(sessions_lookup(s, "k0", 10), 0);
    sessions_bind(s, "k4", 4, 11);
    assert_int_equal(sessions_count(s), 4);
    assert_int_equal(sessions_lookup(s, "k1", 12), -1);
    assert_int_equal(sessions_lookup(s, "k0", 13), 0);
    assert_int_equal(sessions_lookup(s, "k4", 14), 4);
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof(key), "flood-%d", i);
        sessions_bind(s, key, i % 3, 100 + (uint64_t)i);
        assert_true(sessions_count(s) <= 4);
    }
    assert_int_equal(sessions_lookup(s, "flood-9999", 20000), 0);
    assert_int_equal(sessions_lookup(s, "flood-9995", 20000), -1);
    sessions_free(s);

    s = sessions_new(1000, 0); /* default cap */
    for (int i = 0; i < SESSIONS_DEFAULT_MAX + 100; i++) {
        snprintf(key, sizeof(key), "s%d", i);
        sessions_bind(s, key, 0, 5);
    }
    assert_int_equal(sessions_count(s), SESSIONS_DEFAULT_MAX);
    sessions_free(s);
}

static void test_sessions_forget_and_long_keys(void **state)
{
    (void)state;
    struct sessions *s = sessions_new(60000, 16);
    sessions_bind(s, "a", 1, 0);
    sessions_bind(s, "b", 2, 0);
    sessions_bind(s, "c", 1, 0);
    sessions_forget_endpoint(s, 1);
    assert_int_equal(sessions_count(s), 1);
    assert_int_equal(sessions_lookup(s, "a", 1), -1);
    assert_int_equal(sessions_lookup(s, "b", 1), 2);
    assert_int_equal(sessions_lookup(s, "c", 1), -1);

    char *longkey = xmalloc(SESSIONS_KEY_MAX + 2);
    memset(longkey, 'x', SESSIONS_KEY_MAX + 1);
    longkey[SESSIONS_KEY_MAX + 1] = '\0';
    sessions_bind(s, longkey, 0, 2);
    assert_int_equal(sessions_count(s), 1);
    assert_int_equal(sessions_lookup(s, longkey, 3), -1);
    longkey[SESSIONS_KEY_MAX] = '\0'; /* exactly the cap: stored */
    sessions_bind(s, longkey, 0, 4);
    assert_int_equal(sessions_lookup(s, longkey, 5), 0);
    free(longkey);
    /* Keys that differ only past a prefix are different sessions. */
    sessions_bind(s, "user_1", 0, 6);
    sessions_bind(s, "user_10", 1, 6);
    assert_int_equal(sessions_lookup(s, "user_1", 7), 0);
    assert_int_equal(sessions_lookup(s, "user_10", 7), 1);
    assert_int_equal(sessions_lookup(s, "", 7), -1);
    sessions_free(s);
}

/* Random operations against a naive model (a list scanned in full, with a
 * touch counter for least-recently-used order): same answers, same count. */
struct model_entry {
    char key[16];
    int ep;
    uint64_t used; /* time of the last touch */
    unsigned seq;  /* order of the last touch */
    bool live;
};

static void test_sessions_against_model(void **state)
{
    (void)state;
    enum { MAX = 8, KEYS = 20, TTL = 50 };
    struct model_entry m[KEYS];
    memset(m, 0, sizeof(m));
    for (int k = 0; k < KEYS; k++)
        snprintf(m[k].key, sizeof(m[k].key), "key%d", k);
    struct sessions *s = sessions_new(TTL, MAX);
    uint32_t rnd = 12345;
    uint64_t now = 0;
    unsigned seq = 0;
    int hits = 0, evictions = 0, expiries = 0;
    for (int step = 0; step < 20000; step++) {
        rnd = rnd * 1103515245u + 12345u;
        int k = (int)((rnd >> 8) % KEYS);
        int op = (int)((rnd >> 20) % 3);
        now += (rnd >> 24) % 7;
        for (int i = 0; i < KEYS; i++) {
            if (m[i].live && now - m[i].used >= TTL) {
                m[i].live = false;
                expiries++;
            }
        }
        bool exact = true;
        if (op == 0) {
            int want = m[k].live ? m[k].ep : -1;
            if (m[k].live) {
                m[k].used = now;
                m[k].seq = ++seq;
                hits++;
            }
            assert_int_equal(sessions_lookup(s, m[k].key, now), want);
        } else if (op == 1) {
            int live = 0, lru = -1;
            for (int i = 0; i < KEYS; i++) {
                if (!m[i].live)
                    continue;
                live++;
                if (lru < 0 || m[i].seq < m[lru].seq)
                    lru = i;
            }
            if (!m[k].live && live == MAX) {
                m[lru].live = false;
                evictions++;
            }
            int ep = (int)(rnd % 5);
            sessions_bind(s, m[k].key, ep, now);
            m[k].live = true;
            m[k].ep = ep;
            m[k].used = now;
            m[k].seq = ++seq;
        } else {
            /* Forgetting does not purge expired entries: count may exceed. */
            exact = false;
            if (step % 7 == 0) {
                int ep = (int)(rnd % 5);
                sessions_forget_endpoint(s, ep);
                for (int i = 0; i < KEYS; i++)
                    if (m[i].live && m[i].ep == ep)
                        m[i].live = false;
            }
        }
        size_t live = 0;
        for (int i = 0; i < KEYS; i++)
            live += m[i].live;
        if (exact)
            assert_int_equal(sessions_count(s), live);
        else
            assert_true(sessions_count(s) >= live);
        assert_true(sessions_count(s) <= MAX);
    }
    /* The walk exercised every path. */
    assert_true(hits > 100);
    assert_true(evictions > 100);
    assert_true(expiries > 100);
    sessions_free(s);
}

/* ---- panic routing and "why is nothing usable" (policy.c + state.c) ----- */

static void test_panic_order(void **state)
{
    (void)state;
    struct policy_ep eps[4] = {unknown(), healthy(300), healthy(100), unknown()};
    for (int i = 0; i < 4; i++)
        eps[i].health = POLICY_FAILED;
    /* Nothing usable by checks; panic still picks: latency first when no
     * live success is known, config order among the unmeasured. */
    assert_int_equal(policy_best(eps, 4, NULL), -1);
    assert_int_equal(policy_panic(eps, 4, NULL), 2);
    /* The most recent live success beats latency. */
    eps[3].live_ok_ms = 500;
    eps[0].live_ok_ms = 900;
    assert_int_equal(policy_panic(eps, 4, NULL), 0);
    /* Live results remove an endpoint; so does having been tried. */
    eps[0].live_blocked = true;
    assert_int_equal(policy_panic(eps, 4, NULL), 3);
    bool tried[4] = {false, false, false, true};
    assert_int_equal(policy_panic(eps, 4, tried), 2);
    for (int i = 0; i < 4; i++)
        eps[i].live_blocked = true;
    assert_int_equal(policy_panic(eps, 4, NULL), -1);
}

#define TWO_EPS                                                                                \
    "[[groups]]\nname = \"g\"\nendpoints = [{ url = \"http://127.0.0.1:1\", name = \"a\" },\n" \
    "  { url = \"http://127.0.0.1:2\", name = \"b\" }]\n"

static struct config *load_cfg(const char *text)
{
    struct config *cfg = NULL;
    char *errors = NULL;
    assert_int_equal(config_load_string("t.toml", text, strlen(text), &cfg, &errors), 0);
    free(errors);
    return cfg;
}

/* Group g and endpoint ep as /status sees them at now (strings borrow
 * from st). */
static struct state_group_snapshot group_seen(const struct state *st, size_t g, uint64_t now)
{
    struct state_snapshot snap;
    state_snapshot_take(st, now, &snap);
    struct state_group_snapshot gs = snap.groups[g];
    state_snapshot_release(&snap);
    return gs;
}

static struct state_ep_snapshot ep_seen(const struct state *st, int ep, uint64_t now)
{
    struct state_snapshot snap;
    state_snapshot_take(st, now, &snap);
    struct state_ep_snapshot e = snap.eps[ep];
    state_snapshot_release(&snap);
    return e;
}

/* Failed checks alone never refuse a request: with every endpoint failed by
 * its checks (circuits open), requests still go out, in live order; only
 * live failures remove an endpoint. */
static void test_state_panic_routing(void **state)
{
    (void)state;
    struct config *cfg = load_cfg(TWO_EPS);
    struct state *st = state_new(cfg, 1000, 1764000000000ull);
    uint64_t t = 1000;
    for (int k = 0; k < 5; k++) {
        report_check(st, 0, false, false, -1, -1, "HTTP 503", NULL, t, 0);
        report_check(st, 1, false, false, -1, -1, "connect failed", NULL, t, 0);
    }
    assert_int_equal(ep_seen(st, 0, t).circuit, CIRCUIT_OPEN);
    assert_false(state_ep_usable(st, 0, t));
    assert_false(state_ep_usable(st, 1, t));
    int ep = state_route(st, NULL, t);
    assert_int_equal(ep, 0);
    assert_true(group_seen(st, 0, t).panic);
    /* A live success on b puts it first. */
    report_live_success(st, 1, 120, t + 1);
    assert_int_equal(state_route(st, NULL, t + 2), 1);
    bool tried[2] = {false, true};
    assert_int_equal(state_next_ep(st, 1, tried, t + 2), 0);
    /* Three live failures in a row on b: its circuit keeps live traffic off. */
    for (int k = 0; k < 3; k++)
        report_live_failure(st, 1, "upstream answered 502", t + 3);
    assert_true(state_ep_live_blocked(st, 1, t + 3));
    assert_int_equal(state_route(st, NULL, t + 3), 0);
    for (int k = 0; k < 3; k++)
        report_live_failure(st, 0, "upstream answered 502", t + 4);
    assert_int_equal(state_route(st, NULL, t + 4), -1);
    /* A passing check ends the panic. */
    report_check(st, 0, true, false, 80, 70, NULL, NULL, t + 60000000, 0);
    assert_int_equal(state_route(st, NULL, t + 60000000), 0);
    assert_false(group_seen(st, 0, t + 60000000).panic);
    state_free(st);
    config_free(cfg);
}

/* The state's side of issue 14: server.session_switch_threshold_ms reaches
 * the policy (default 500), a pin rebinds every session of its group, and
 * release and the list go by endpoint. */
static void test_state_sessions(void **state)
{
    (void)state;
    struct config *cfg = load_cfg(TWO_EPS);
    assert_int_equal(cfg->session_switch_threshold_ms, 500);
    struct state *st = state_new(cfg, 1000, 1764000000000ull);
    uint64_t t = 1000;
    assert_int_equal(group_seen(st, 0, t).policy.session_threshold_ms, 500);
    report_check(st, 0, true, false, 100, 100, NULL, NULL, t, 0);
    report_check(st, 1, true, false, 300, 300, NULL, NULL, t, 0);
    assert_int_equal(state_route(st, "s1", t), 0);
    state_bind_session(st, "s1", 0, t);
    state_bind_session(st, "s2", 0, t);
    struct state_session ss[4];
    assert_int_equal(state_sessions_list(st, t, ss, 4), 2);
    assert_int_equal(ss[0].ep, 0);
    assert_int_equal(strlen(ss[0].id), 8);
    /* The pin moves both at once; routing keeps them there. */
    char err[128];
    assert_int_equal(state_pin(st, 1, t + 1, err, sizeof err), 0);
    assert_int_equal(state_sessions_list(st, t + 1, ss, 4), 2);
    assert_int_equal(ss[0].ep, 1);
    assert_int_equal(ss[1].ep, 1);
    assert_int_equal(state_route(st, "s1", t + 2), 1);
    /* Release b's: s1 and s2 are gone and routed afresh. */
    assert_int_equal(state_set_mode(st, false, t + 3, err, sizeof err), 0);
    assert_int_equal(state_release_sessions(st, 1), 2);
    assert_int_equal(state_sessions_list(st, t + 3, ss, 4), 0);
    assert_int_equal(state_route(st, "s1", t + 3), 0);
    state_bind_session(st, "s1", 0, t + 3);
    assert_int_equal(state_release_sessions(st, 1), 0);
    assert_int_equal(state_release_sessions(st, -1), 1);
    assert_int_equal(state_sessions_count(st), 0);
    state_free(st);
    config_free(cfg);
    /* Sticky sessions off: nothing held, nothing to release. */
    cfg = load_cfg("[server]\nsticky_sessions = false\nsession_switch_threshold_ms = 0\n" TWO_EPS);
    assert_int_equal(cfg->session_switch_threshold_ms, 0);
    st = state_new(cfg, 1000, 1764000000000ull);
    state_bind_session(st, "s1", 0, t);
    assert_int_equal(state_sessions_count(st), 0);
    assert_int_equal(state_sessions_list(st, t, ss, 4), 0);
    assert_int_equal(state_release_sessions(st, -1), 0);
    state_free(st);
    config_free(cfg);
}

/* A check the endpoint refuses as a request (wrong model) is not a failure:
 * the endpoint stays routable however often it happens, its circuit stays
 * closed, and the problem is kept for /status. */
static void test_state_check_error(void **state)
{
    (void)state;
    struct config *cfg = load_cfg(TWO_EPS);
    struct state *st = state_new(cfg, 1000, 1764000000000ull);
    for (int k = 0; k < 6; k++)
        report_check_error(st, 0, "check answered HTTP 404: not_found_error: model: m",
                           "set check_model: this endpoint does not serve m", 1000 + (uint64_t)k,
                           0);
    struct state_ep_snapshot e = ep_seen(st, 0, 2000);
    assert_int_equal(e.status, EP_CHECK_ERROR);
    assert_string_equal(ep_status_name(e.status), "check_error");
    assert_int_equal(e.circuit, CIRCUIT_CLOSED);
    assert_true(state_ep_usable(st, 0, 2000));
    assert_non_null(strstr(e.check_error, "set check_model"));
    assert_int_equal(state_route(st, NULL, 2000), 0);
    assert_false(group_seen(st, 0, 2000).panic);
    /* A live failure takes it off until the next check result... */
    report_live_failure(st, 0, "upstream answered 500", 2001);
    assert_int_equal(state_route(st, NULL, 2002), 1);
    /* ...and a refused check (the endpoint answered) brings it back. */
    report_check_error(st, 0, "check answered HTTP 404: not_found_error: model: m",
                       "set check_model: this endpoint does not serve m", 2003, 0);
    assert_true(state_ep_usable(st, 0, 2004));
    /* A real check result clears the check error. */
    report_check(st, 0, true, false, 50, 40, NULL, NULL, 2005, 0);
    assert_string_equal(ep_seen(st, 0, 2005).check_error, "");
    state_free(st);
    config_free(cfg);
}

/* The client's error names the real cause. */
static void test_state_why_unusable(void **state)
{
    (void)state;
    struct config *cfg = load_cfg(TWO_EPS);
    struct state *st = state_new(cfg, 1000, 1764000000000ull);
    struct state_unusable why;

    report_live_auth_failure(st, 0, "token refused (401)", 1000);
    report_check(st, 1, false, true, -1, -1, "HTTP 401: authentication_error: invalid x-api-key",
                 NULL, 1000, 0);
    state_why_unusable(st, 0, 1001, &why);
    assert_int_equal(why.cause, EP_CAUSE_AUTH);
    assert_non_null(strstr(why.detail, "a: token refused (401)"));
    assert_non_null(strstr(why.detail, "b: HTTP 401"));

    report_live_failure(st, 0, "SSL certificate problem: self-signed certificate", 1002);
    report_check(st, 1, false, false, -1, -1, "SSL certificate problem: self-signed certificate",
                 NULL, 1002, 0);
    state_why_unusable(st, 0, 1003, &why);
    assert_int_equal(why.cause, EP_CAUSE_TLS);
    assert_non_null(strstr(why.detail, "a: TLS problem: SSL certificate problem"));

    report_live_failure(st, 0, "upstream answered 529", 1004);
    report_live_failure(st, 1, "upstream answered 529", 1004);
    state_why_unusable(st, 0, 1005, &why);
    assert_int_equal(why.cause, EP_CAUSE_OVERLOADED);

    report_live_failure(st, 1, "connect failed", 1006);
    state_why_unusable(st, 0, 1007, &why);
    assert_int_equal(why.cause, EP_CAUSE_DOWN);

    report_rate_limited(st, 0, 31000, 1008);
    report_rate_limited(st, 1, 11000, 1008);
    state_why_unusable(st, 0, 1008, &why);
    assert_int_equal(why.cause, EP_CAUSE_RATE_LIMITED);
    assert_int_equal(why.retry_after_s, 10);
    assert_non_null(strstr(why.detail, "a: rate-limited for 30 s"));
    assert_string_equal(ep_cause_name(why.cause), "rate_limited");
    state_free(st);
    config_free(cfg);

    assert_int_equal(state_cause_of("SSL certificate problem: unable to get local issuer"),
                     EP_CAUSE_TLS);
    assert_int_equal(state_cause_of("HTTP 529: overloaded_error: Overloaded"), EP_CAUSE_OVERLOADED);
    assert_int_equal(state_cause_of("upstream answered 503"), EP_CAUSE_OVERLOADED);
    assert_int_equal(state_cause_of("connect failed"), EP_CAUSE_DOWN);
    assert_int_equal(state_cause_of(NULL), EP_CAUSE_DOWN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_initial_all_unknown_takes_first),
        cmocka_unit_test(test_next_in_line),
        cmocka_unit_test(test_initial_prefers_measured),
        cmocka_unit_test(test_initial_nothing_usable_stays_none),
        cmocka_unit_test(test_hysteresis_threshold_edges),
        cmocka_unit_test(test_no_flap_on_near_equal_latencies),
        cmocka_unit_test(test_zero_threshold_never_switches_to_equal),
        cmocka_unit_test(test_immediate_failover_despite_active),
        cmocka_unit_test(test_blocked_is_failover),
        cmocka_unit_test(test_failover_nowhere_to_go_keeps_current),
        cmocka_unit_test(test_failover_to_unchecked_endpoint),
        cmocka_unit_test(test_checking_current_stays),
        cmocka_unit_test(test_unknown_latency_never_faster),
        cmocka_unit_test(test_best_ranking_and_tried),
        cmocka_unit_test(test_graceful_fires_when_idle),
        cmocka_unit_test(test_graceful_fires_on_timeout),
        cmocka_unit_test(test_graceful_zero_timeout_does_not_wait),
        cmocka_unit_test(test_graceful_cancelled_when_target_slower),
        cmocka_unit_test(test_graceful_cancelled_when_target_fails),
        cmocka_unit_test(test_graceful_retarget_keeps_deadline),
        cmocka_unit_test(test_failover_while_pending),
        cmocka_unit_test(test_manual_pin_stays_despite_faster),
        cmocka_unit_test(test_manual_pin_fails_then_recovers),
        cmocka_unit_test(test_manual_pin_already_failed),
        cmocka_unit_test(test_manual_cancels_pending_and_rejects_bad_index),
        cmocka_unit_test(test_manual_before_any_current),
        cmocka_unit_test(test_manual_pin_before_anything_usable),
        cmocka_unit_test(test_route_session_stickiness),
        cmocka_unit_test(test_session_follows_until_failure),
        cmocka_unit_test(test_groups_are_independent),
        cmocka_unit_test(test_shrunken_endpoint_list),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_sessions_ttl),
        cmocka_unit_test(test_sessions_eviction_bound),
        cmocka_unit_test(test_sessions_forget_and_long_keys),
        cmocka_unit_test(test_sessions_against_model),
        cmocka_unit_test(test_route_session_pin_failure_threshold),
        cmocka_unit_test(test_sessions_rebind_release_list),
        cmocka_unit_test(test_panic_order),
        cmocka_unit_test(test_state_panic_routing),
        cmocka_unit_test(test_state_check_error),
        cmocka_unit_test(test_state_why_unusable),
        cmocka_unit_test(test_state_sessions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
