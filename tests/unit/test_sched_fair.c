/* Unit test for the fair policy's lanes (src/sched/sched.c): over many
 * random operations (seeded PRNG) on one queue with several agents,
 * default and per-call priorities, aging, two targets and a per-agent cap,
 * every call the scheduler picks or peeks is the one a scan of the whole
 * queue picks, and its preemption answers are the scan's. The scan is the
 * fair order as the scheduler computed it before it had lanes, written
 * out here from the test's own record of the queue (priority, entry time
 * and arrival order as the test saw them), so it shares no code with the
 * scheduler. The scheduler's clock is the test's, so aging is exercised
 * without sleeping. Operations interleaved: submit, pick (any target or
 * one), peek, preempt (requeue), charge service, finish, change the cap,
 * advance the clock; at the end a shutdown fails what is left queued. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel/syscall.h"
#include "sched/sched.h"
#include "util/err.h"
#include "util/util.h"

#define N_AGENTS 7
#define MAX_CALLS 8192

static int64_t g_now;
static int64_t test_clock(void *ud)
{
    (void)ud;
    return g_now;
}

static uint64_t g_rng;
static uint32_t rnd(uint32_t n) { return (uint32_t)(util_xorshift64(&g_rng) % n); }

static int g_targets[2];
static const char *const AGENTS[N_AGENTS] = {"a0", "a1", "a2", "a3", "a4", "a5", "a6"};
static const int AGENT_PRIO[N_AGENTS] = {2, -1, 0, 0, 0, 1, 0};

/* the test's own record of a call */
struct call {
    struct syscall *sc;
    int agent;
    void *target;
    int priority;
    int64_t t_enq;
    uint64_t order; /* the test's arrival counter */
};

struct world {
    struct sched *s;
    int64_t aging_us;
    double margin;
    int cap;
    uint64_t order;
    struct call *queued[MAX_CALLS];
    size_t n_queued;
    struct call *running[MAX_CALLS];
    size_t n_running;
    struct call calls[MAX_CALLS];
    size_t n_calls;
};

static double service(struct world *w, int agent)
{
    struct sched_agent_stats st;
    assert_int_equal(sched_agent_stats(w->s, AGENTS[agent], &st), 0);
    return st.service;
}

static int running_of(struct world *w, int agent)
{
    int n = 0;
    for (size_t i = 0; i < w->n_running; i++) n += w->running[i]->agent == agent;
    return n;
}

/* ---- the reference: a scan of every queued call ---- */

static int ref_top(struct world *w, void *target)
{
    int top = SYSCALL_PRIORITY_MIN;
    for (size_t i = 0; i < w->n_queued; i++) {
        const struct call *c = w->queued[i];
        if ((!target || c->target == target) && c->priority > top) top = c->priority;
    }
    return top;
}

static int ref_eff(struct world *w, const struct call *c, int top)
{
    if (w->aging_us <= 0 || c->priority >= top) return c->priority;
    int64_t e = (int64_t)c->priority + (g_now - c->t_enq) / w->aging_us;
    return e > top ? top : (int)e;
}

static struct call *ref_pick(struct world *w, void *target)
{
    int top = ref_top(w, target);
    struct call *best = NULL;
    int best_p = 0;
    double best_s = 0;
    for (size_t i = 0; i < w->n_queued; i++) {
        struct call *c = w->queued[i];
        if (target && c->target != target) continue;
        if (w->cap > 0 && running_of(w, c->agent) >= w->cap) continue;
        int p = ref_eff(w, c, top);
        double sv = service(w, c->agent);
        bool before = !best || p > best_p ||
                      (p == best_p && (sv < best_s || (sv == best_s && c->order < best->order)));
        if (before) {
            best = c;
            best_p = p;
            best_s = sv;
        }
    }
    return best;
}

static bool ref_should_preempt(struct world *w, const struct call *r, const struct call *c)
{
    if (r->agent == c->agent) return false;
    int top = ref_top(w, c->target);
    if (r->priority > top) top = r->priority;
    int pw = ref_eff(w, c, top);
    if (pw != r->priority) return pw > r->priority;
    return service(w, c->agent) + w->margin < service(w, r->agent);
}

/* ---- operations ---- */

static void enqueue(struct world *w, struct call *c)
{
    c->t_enq = g_now;
    c->order = ++w->order;
    assert_true(w->n_queued < MAX_CALLS);
    w->queued[w->n_queued++] = c;
}

static void op_submit(struct world *w)
{
    if (w->n_calls >= MAX_CALLS) return;
    struct call *c = &w->calls[w->n_calls++];
    c->agent = (int)rnd(N_AGENTS);
    c->target = &g_targets[rnd(2)];
    c->sc = syscall_new(SYSCALL_KIND_LLM, AGENTS[c->agent], c->target, NULL, NULL);
    assert_non_null(c->sc);
    c->priority = AGENT_PRIO[c->agent];
    if (rnd(3) == 0) {
        c->priority = (int)rnd(7) - 3;
        syscall_set_priority(c->sc, c->priority);
    }
    assert_int_equal(sched_submit(w->s, c->sc), 0);
    assert_int_equal(c->sc->priority, c->priority);
    enqueue(w, c);
    assert_true(c->sc->sched_t_enq_us == c->t_enq);
}

static void remove_at(struct call **arr, size_t *n, size_t i)
{
    memmove(&arr[i], &arr[i + 1], (*n - i - 1) * sizeof *arr);
    (*n)--;
}

static size_t index_of(struct call **arr, size_t n, const struct syscall *sc)
{
    for (size_t i = 0; i < n; i++)
        if (arr[i]->sc == sc) return i;
    fail_msg("call %p is not where the scheduler says", (const void *)sc);
    return 0;
}

static void op_pick(struct world *w)
{
    unsigned t = rnd(3);
    void *target = t == 2 ? NULL : &g_targets[t];
    struct call *want = ref_pick(w, target);
    struct syscall *p = sched_peek(w->s, SYSCALL_KIND_LLM, target);
    assert_ptr_equal(p, want ? want->sc : NULL);
    if (p) syscall_unref(p);
    struct syscall *sc = sched_next(w->s, SYSCALL_KIND_LLM, target, 0);
    assert_ptr_equal(sc, want ? want->sc : NULL);
    if (!sc) return;
    remove_at(w->queued, &w->n_queued, index_of(w->queued, w->n_queued, sc));
    w->running[w->n_running++] = want;
}

static void op_preempt(struct world *w)
{
    if (!w->n_running) return;
    size_t i = rnd((uint32_t)w->n_running);
    struct call *c = w->running[i];
    remove_at(w->running, &w->n_running, i);
    assert_int_equal(sched_preempt(w->s, c->sc), 0);
    enqueue(w, c);
    assert_true(c->sc->sched_t_enq_us == c->t_enq);
}

static void op_finish(struct world *w)
{
    if (!w->n_running) return;
    size_t i = rnd((uint32_t)w->n_running);
    struct call *c = w->running[i];
    remove_at(w->running, &w->n_running, i);
    syscall_finish(c->sc, NULL, NULL);
    sched_done(w->s, c->sc);
}

static void op_charge(struct world *w)
{
    if (!w->n_running) return;
    struct call *c = w->running[rnd((uint32_t)w->n_running)];
    /* ties in service are common at 0 and after a lift: keep some */
    sched_charge(w->s, c->sc, rnd(4) ? (int64_t)rnd(3) * 500 : 0, 0);
}

static void op_preempt_question(struct world *w)
{
    if (!w->n_running || !w->n_queued) return;
    struct call *r = w->running[rnd((uint32_t)w->n_running)];
    struct call *c = w->queued[rnd((uint32_t)w->n_queued)];
    assert_int_equal(sched_should_preempt(w->s, r->sc, c->sc), ref_should_preempt(w, r, c));
}

static void run(uint64_t seed, int64_t aging_us, int steps)
{
    struct world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    g_rng = seed;
    g_now = 1000000;
    w->aging_us = aging_us;
    w->margin = 500;
    assert_int_equal(sched_create(&w->s, &sched_policy_fair), 0);
    sched_set_clock(w->s, test_clock, NULL);
    struct sched_tuning t;
    sched_get_tuning(w->s, &t);
    t.time_slice_us = 0;
    t.aging_us = aging_us;
    t.preempt_margin = w->margin;
    t.ms_weight = 0; /* tokens only: service moves only where the test charges */
    sched_set_tuning(w->s, &t);
    for (int a = 0; a < N_AGENTS; a++)
        assert_int_equal(sched_set_agent_priority(w->s, AGENTS[a], AGENT_PRIO[a]), 0);

    int n_picked = 0, n_aged = 0;
    for (int step = 0; step < steps && w->n_calls < MAX_CALLS; step++) {
        /* keep the queue between a few and a few hundred calls deep, and
         * the running set small, with phases that drain and refill it */
        bool fill = (step / 500) % 2 == 0;
        unsigned r = rnd(100);
        if (r < (fill ? 40u : 15u)) {
            op_submit(w);
        } else if (r < 65) {
            size_t before = w->n_queued;
            op_pick(w);
            n_picked += w->n_queued < before;
        } else if (r < 72) {
            g_now += rnd(4) ? (int64_t)rnd(aging_us > 0 ? (uint32_t)aging_us * 3 : 1000) : 0;
        } else if (r < 80) {
            op_charge(w);
        } else if (r < 88 || w->n_running > 24) {
            op_finish(w);
        } else if (r < 94) {
            op_preempt(w);
        } else if (r < 98) {
            op_preempt_question(w);
        } else {
            w->cap = (int)rnd(3);
            sched_set_agent_cap(w->s, SYSCALL_KIND_LLM, w->cap);
        }
        /* count picks where aging mattered: some call's effective
         * priority is above its own */
        if (aging_us > 0 && w->n_queued) {
            int top = ref_top(w, NULL);
            for (size_t i = 0; i < w->n_queued; i++)
                if (ref_eff(w, w->queued[i], top) > w->queued[i]->priority) {
                    n_aged++;
                    break;
                }
        }
        struct sched_stats st;
        sched_get_stats(w->s, &st);
        assert_int_equal(st.n_queued[SYSCALL_KIND_LLM], w->n_queued);
    }
    /* the run did what it is meant to test */
    assert_true(n_picked > steps / 10);
    if (aging_us > 0) assert_true(n_aged > steps / 20);

    /* what is left queued is failed at shutdown; running calls end */
    size_t left = w->n_queued;
    while (w->n_running) op_finish(w);
    sched_shutdown(w->s);
    struct sched_stats st;
    sched_get_stats(w->s, &st);
    assert_int_equal(st.n_queued[SYSCALL_KIND_LLM], 0);
    for (size_t i = 0; i < left; i++) {
        assert_int_equal(w->queued[i]->sc->status, SYSCALL_STATUS_ERROR);
        assert_int_equal(w->queued[i]->sc->err, AIOS_ESHUTDOWN);
    }
    sched_destroy(w->s);
    for (size_t i = 0; i < w->n_calls; i++) syscall_unref(w->calls[i].sc);
    free(w);
}

static void test_fair_matches_scan_no_aging(void **state)
{
    (void)state;
    run(0x9e3779b97f4a7c15ull, 0, 6000);
    run(12345, 0, 6000);
}

static void test_fair_matches_scan_aging(void **state)
{
    (void)state;
    run(0x2545f4914f6cdd1dull, 1000, 6000);
    run(777, 50, 6000);
    run(4242, 20000, 6000);
}

/* entry times never go backwards, even when the clock does: the lanes
 * rely on them following arrival order */
static void test_entry_time_monotonic(void **state)
{
    (void)state;
    struct sched *s = NULL;
    assert_int_equal(sched_create(&s, &sched_policy_fair), 0);
    sched_set_clock(s, test_clock, NULL);
    g_now = 5000;
    struct syscall *a = syscall_new(SYSCALL_KIND_LLM, "x", NULL, NULL, NULL);
    struct syscall *b = syscall_new(SYSCALL_KIND_LLM, "x", NULL, NULL, NULL);
    assert_int_equal(sched_submit(s, a), 0);
    g_now = 4000;
    assert_int_equal(sched_submit(s, b), 0);
    assert_true(a->sched_t_enq_us == 5000);
    assert_true(b->sched_t_enq_us == 5000);
    assert_ptr_equal(sched_next(s, SYSCALL_KIND_LLM, NULL, 0), a);
    assert_ptr_equal(sched_next(s, SYSCALL_KIND_LLM, NULL, 0), b);
    for (int i = 0; i < 2; i++) {
        struct syscall *x = i ? b : a;
        syscall_finish(x, NULL, NULL);
        sched_done(s, x);
        syscall_unref(x);
    }
    sched_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fair_matches_scan_no_aging),
        cmocka_unit_test(test_fair_matches_scan_aging),
        cmocka_unit_test(test_entry_time_monotonic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
