/* Unit tests for the scheduling policies (src/sched/sched.c) on controlled
 * workloads: fifo order, rr slices and requeue-at-back with slice records,
 * fair least-attained-service order, per-agent and per-call priorities,
 * the preemption questions the engine asks, configuration, per-agent
 * accounting, and a starvation test: a low-priority agent still finishes
 * under constant high-priority load (and does not without aging, so the
 * test shows that aging is what saves it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernel/config.h"
#include "kernel/syscall.h"
#include "sched/sched.h"
#include "util/err.h"
#include "util/util.h"

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static struct syscall *mk(struct sched *s, const char *agent, int tag)
{
    int *t = malloc(sizeof *t);
    assert_non_null(t);
    *t = tag;
    struct syscall *sc = syscall_new(SYSCALL_KIND_LLM, agent, NULL, t, free);
    assert_non_null(sc);
    assert_int_equal(sched_submit(s, sc), 0);
    return sc;
}

static int tag(struct syscall *sc) { return *(int *)sc->req; }

/* take the next call, return its tag, charge it, finish it */
static int run_one(struct sched *s, int64_t tokens)
{
    struct syscall *sc = sched_next(s, SYSCALL_KIND_LLM, NULL, 0);
    assert_non_null(sc);
    int t = tag(sc);
    if (tokens) sched_charge(s, sc, tokens, 0);
    syscall_finish(sc, NULL, NULL);
    sched_done(s, sc);
    return t;
}

static struct sched *mksched(const struct sched_policy *p, int64_t slice_ms, int64_t aging_ms)
{
    struct sched *s = NULL;
    assert_int_equal(sched_create(&s, p), 0);
    struct sched_tuning t;
    sched_get_tuning(s, &t);
    t.time_slice_us = slice_ms * 1000;
    t.aging_us = aging_ms * 1000;
    t.preempt_margin = 10;
    t.ms_weight = 0; /* tokens only: deterministic */
    sched_set_tuning(s, &t);
    return s;
}

static void test_policy_find(void **state)
{
    (void)state;
    assert_ptr_equal(sched_policy_find("fifo"), &sched_policy_fifo);
    assert_ptr_equal(sched_policy_find("rr"), &sched_policy_rr);
    assert_ptr_equal(sched_policy_find("fair"), &sched_policy_fair);
    assert_ptr_equal(sched_policy_find(NULL), &sched_policy_fair);
    assert_null(sched_policy_find("lottery"));
    assert_null(sched_policy_fifo.should_preempt);
    assert_non_null(sched_policy_rr.slice_expired);
    assert_non_null(sched_policy_fair.should_preempt);
}

/* A1 A2 B1 B2 arrive in that order; A has far more service */
static void test_fifo_ignores_service(void **state)
{
    (void)state;
    struct sched *s = mksched(&sched_policy_fifo, 0, 0);
    struct syscall *warm = mk(s, "A", 0);
    assert_int_equal(run_one(s, 5000), 0);
    struct syscall *c[4] = {mk(s, "A", 1), mk(s, "A", 2), mk(s, "B", 3), mk(s, "B", 4)};
    for (int i = 1; i <= 4; i++) assert_int_equal(run_one(s, 10), i);
    /* fifo never preempts, slices never expire */
    struct syscall *r = mk(s, "A", 5), *w = mk(s, "B", 6);
    struct syscall *x = sched_next(s, SYSCALL_KIND_LLM, NULL, 0);
    assert_ptr_equal(x, r);
    sched_charge(s, x, 100000, 0);
    assert_false(sched_should_preempt(s, x, w));
    assert_false(sched_slice_expired(s, x));
    assert_null(sched_pick_victim(s, &x, 1, w));
    syscall_finish(x, NULL, NULL);
    sched_done(s, x);
    assert_int_equal(run_one(s, 0), 6);
    for (int i = 0; i < 4; i++) syscall_unref(c[i]);
    syscall_unref(warm);
    syscall_unref(r);
    syscall_unref(w);
    sched_destroy(s);
}

/* rr: a call whose slice expired while another waits is requeued at the
 * back, resumes later with a second slice; it ends after everyone queued
 * before its preemption had a turn */
static void test_rr_slices(void **state)
{
    (void)state;
    struct sched *s = mksched(&sched_policy_rr, 0, 0);
    struct sched_tuning t;
    sched_get_tuning(s, &t);
    t.slice_tokens = 4;
    sched_set_tuning(s, &t);

    struct syscall *a = mk(s, "A", 1);
    struct syscall *x = sched_next(s, SYSCALL_KIND_LLM, NULL, 0);
    assert_ptr_equal(x, a);
    assert_int_equal(a->status, SYSCALL_STATUS_RUNNING);
    sched_charge(s, a, 10, 0);
    /* nobody waits: the slice never "expires" */
    assert_false(sched_slice_expired(s, a));
    struct syscall *b = mk(s, "B", 2), *c = mk(s, "C", 3);
    assert_true(sched_slice_expired(s, a));
    assert_true(sched_should_preempt(s, a, b));
    assert_int_equal(sched_preempt(s, a), 0);
    assert_int_equal(a->status, SYSCALL_STATUS_SUSPENDED);
    assert_int_equal(a->usage.n_ctx_switches, 1);
    assert_int_equal(a->n_slices, 1);
    assert_true(a->t_slice_end_us[0] >= a->t_slice_start_us[0]);
    struct sched_stats st;
    sched_get_stats(s, &st);
    assert_int_equal(st.n_preempted, 1);
    assert_int_equal(st.n_queued[SYSCALL_KIND_LLM], 3);
    assert_int_equal(st.n_running[SYSCALL_KIND_LLM], 0);

    /* B, C, then A again */
    x = sched_next(s, SYSCALL_KIND_LLM, NULL, 0);
    assert_ptr_equal(x, b);
    /* a fresh slice: 3 tokens are under the limit */
    sched_charge(s, b, 3, 0);
    assert_false(sched_slice_expired(s, b));
    syscall_finish(b, NULL, NULL);
    sched_done(s, b);
    assert_int_equal(run_one(s, 0), 3);
    x = sched_next(s, SYSCALL_KIND_LLM, NULL, 0);
    assert_ptr_equal(x, a);
    assert_int_equal(a->status, SYSCALL_STATUS_RUNNING);
    assert_int_equal(a->n_slices, 2);
    assert_true(a->t_slice_start_us[1] >= a->t_slice_end_us[0]);
    syscall_finish(a, NULL, NULL);
    sched_done(s, a);
    assert_true(a->t_slice_end_us[1] >= a->t_slice_start_us[1]);
    assert_true(a->t_wait_us >= 0);

    struct sched_agent_stats as;
    assert_int_equal(sched_agent_stats(s, "A", &as), 0);
    assert_int_equal(as.n_ctx_switches, 1);
    assert_int_equal(as.n_done, 1);
    syscall_unref(a);
    syscall_unref(b);
    syscall_unref(c);
    sched_destroy(s);
}

static void test_rr_time_slice(void **state)
{
    (void)state;
    struct sched *s = mksched(&sched_policy_rr, 20, 0);
    struct syscall *a = mk(s, "A", 1), *b = mk(s, "B", 2);
    struct syscall *x = sched_next(s, SYSCALL_KIND_LLM, NULL, 0);
    assert_ptr_equal(x, a);
    assert_false(sched_slice_expired(s, a));
    sleep_ms(30);
    assert_true(sched_slice_expired(s, a));
    assert_int_equal(sched_preempt(s, a), 0);
    assert_int_equal(run_one(s, 0), 2);
    assert_int_equal(run_one(s, 0), 1);
    syscall_unref(a);
    syscall_unref(b);
    sched_destroy(s);
}

/* fair: the least-served agent goes first, whatever the arrival order */
static void test_fair_least_served(void **state)
{
    (void)state;
    struct sched *s = mksched(&sched_policy_fair, 0, 0);
    struct syscall *w[3] = {mk(s, "A", 0), mk(s, "B", 0), mk(s, "C", 0)};
    /* the warm-up calls run together and give A 3000, B 1000, C 2000 units */
    struct syscall *x[3];
    int64_t cost[3] = {3000, 1000, 2000};
    for (int i = 0; i < 3; i++) {
        x[i] = sched_next(s, SYSCALL_KIND_LLM, NULL, 0);
        assert_ptr_equal(x[i], w[i]);
        sched_charge(s, x[i], cost[i], 0);
    }
    /* submitted while the agents are active, so nobody is lifted */
    struct syscall *c[6] = {mk(s, "A", 1), mk(s, "A", 2), mk(s, "C", 3),
                            mk(s, "B", 4), mk(s, "B", 5), mk(s, "C", 6)};
    for (int i = 0; i < 3; i++) {
        syscall_finish(x[i], NULL, NULL);
        sched_done(s, x[i]);
    }
    /* B (1000) runs and is charged 1500 -> 2500; then C (2000) -> 3500;
     * then B (2500) -> 4000; then A (3000) ... */
    assert_int_equal(run_one(s, 1500), 4);
    assert_int_equal(run_one(s, 1500), 3);
    assert_int_equal(run_one(s, 1500), 5);
    assert_int_equal(run_one(s, 1500), 1);
    assert_int_equal(run_one(s, 1500), 6);
    assert_int_equal(run_one(s, 1500), 2);
    for (int i = 0; i < 6; i++) syscall_unref(c[i]);
    for (int i = 0; i < 3; i++) syscall_unref(w[i]);
    sched_destroy(s);
}

/* fair: priority first (per agent from config, per call overriding) */
static void test_fair_priorities(void **state)
{
    (void)state;
    struct sched *s = mksched(&sched_policy_fair, 0, 0);
    assert_int_equal(sched_set_agent_priority(s, "vip", 3), 0);
    assert_int_equal(sched_set_agent_priority(s, "x", 1000), AIOS_EINVAL);
    struct syscall *a = mk(s, "plain", 1);
    struct syscall *v = mk(s, "vip", 2);
    int *t = malloc(sizeof *t);
    *t = 3;
    struct syscall *u = syscall_new(SYSCALL_KIND_LLM, "plain", NULL, t, free);
    syscall_set_priority(u, 7); /* per call beats the vip agent */
    assert_int_equal(sched_submit(s, u), 0);
    struct syscall *low = syscall_new(SYSCALL_KIND_LLM, "vip", NULL, malloc(sizeof(int)), free);
    *(int *)low->req = 4;
    syscall_set_priority(low, -2000); /* clamped to the minimum */
    assert_int_equal(low->priority, SYSCALL_PRIORITY_MIN);
    assert_int_equal(sched_submit(s, low), 0);
    assert_int_equal(v->priority, 3);
    assert_int_equal(a->priority, 0);
    assert_int_equal(run_one(s, 0), 3);
    assert_int_equal(run_one(s, 0), 2);
    assert_int_equal(run_one(s, 0), 1);
    assert_int_equal(run_one(s, 0), 4);
    struct sched_agent_stats st;
    assert_int_equal(sched_agent_stats(s, "vip", &st), 0);
    assert_int_equal(st.priority, 3);
    assert_int_equal(st.n_calls, 2);
    assert_int_equal(sched_agent_stats(s, "nobody", &st), AIOS_ENOTFOUND);
    syscall_unref(a);
    syscall_unref(v);
    syscall_unref(u);
    syscall_unref(low);
    sched_destroy(s);
}

/* the questions the engine asks under fair */
static void test_fair_preemption(void **state)
{
    (void)state;
    struct sched *s = mksched(&sched_policy_fair, 0, 0);
    struct syscall *ra = mk(s, "A", 1), *rc = mk(s, "C", 2);
    struct syscall *xa = sched_next(s, SYSCALL_KIND_LLM, NULL, 0);
    struct syscall *xc = sched_next(s, SYSCALL_KIND_LLM, NULL, 0);
    assert_ptr_equal(xa, ra);
    assert_ptr_equal(xc, rc);
    sched_charge(s, ra, 900, 0);
    sched_charge(s, rc, 400, 0);
    struct syscall *wb = mk(s, "B", 3); /* new agent: lifted to min active = 400 */
    struct sched_agent_stats st;
    assert_int_equal(sched_agent_stats(s, "B", &st), 0);
    assert_true(st.service >= 399.0 && st.service <= 401.0);
    /* B (400) vs A (900): less served by more than the margin */
    assert_true(sched_should_preempt(s, ra, wb));
    /* B (400) vs C (400): within the margin */
    assert_false(sched_should_preempt(s, rc, wb));
    struct syscall *run[2] = {ra, rc};
    assert_ptr_equal(sched_pick_victim(s, run, 2, wb), ra);
    /* same agent never preempts itself */
    struct syscall *wa = mk(s, "A", 4);
    assert_false(sched_should_preempt(s, ra, wa));
    /* higher priority preempts even the least served */
    int *t = malloc(sizeof *t);
    *t = 5;
    struct syscall *hp = syscall_new(SYSCALL_KIND_LLM, "D", NULL, t, free);
    syscall_set_priority(hp, 2);
    assert_int_equal(sched_submit(s, hp), 0);
    assert_true(sched_should_preempt(s, rc, hp));
    /* and peek shows it is next, without taking it */
    struct syscall *p = sched_peek(s, SYSCALL_KIND_LLM, NULL);
    assert_ptr_equal(p, hp);
    syscall_unref(p);

    /* a minimum slice protects a call that just started */
    struct sched_tuning tun;
    sched_get_tuning(s, &tun);
    tun.time_slice_us = 60 * 1000 * 1000;
    sched_set_tuning(s, &tun);
    assert_false(sched_should_preempt(s, ra, wb));
    tun.time_slice_us = 0;
    sched_set_tuning(s, &tun);

    /* preempt A for D; D runs; A comes back */
    assert_int_equal(sched_preempt(s, ra), 0);
    assert_int_equal(run_one(s, 10), 5);
    syscall_finish(rc, NULL, NULL);
    sched_done(s, rc);
    /* queued: B(3, 400), A(4, 900), A(1, 900, requeued last) -> B, then
     * A's two in queue order: the preempted one went to the back */
    assert_int_equal(run_one(s, 0), 3);
    assert_int_equal(run_one(s, 0), 4);
    assert_int_equal(run_one(s, 0), 1);
    assert_int_equal(ra->n_slices, 2);
    assert_int_equal(sched_agent_stats(s, "A", &st), 0);
    assert_int_equal(st.n_ctx_switches, 1);
    assert_int_equal(st.n_done, 2);
    syscall_unref(ra);
    syscall_unref(rc);
    syscall_unref(wb);
    syscall_unref(wa);
    syscall_unref(hp);
    sched_destroy(s);
}

/* A low-priority agent under constant high-priority load: three busy
 * agents at priority 5 always have a call queued. Returns how many high
 * calls ran before the low one (or -1 if it never ran within max). */
static int starvation_run(int64_t aging_ms, int max)
{
    struct sched *s = mksched(&sched_policy_fair, 0, aging_ms);
    const char *hi[3] = {"hi0", "hi1", "hi2"};
    for (int i = 0; i < 3; i++) assert_int_equal(sched_set_agent_priority(s, hi[i], 5), 0);
    assert_int_equal(sched_set_agent_priority(s, "low", -5), 0);
    for (int i = 0; i < 3; i++) syscall_unref(mk(s, hi[i], 1));
    syscall_unref(mk(s, "low", 0));
    int ran = -1;
    for (int n = 0; n < max; n++) {
        struct syscall *x = sched_next(s, SYSCALL_KIND_LLM, NULL, 0);
        assert_non_null(x);
        int t = tag(x);
        char agent[16];
        snprintf(agent, sizeof agent, "%s", x->agent);
        sleep_ms(2); /* the call "runs" */
        sched_charge(s, x, 50, 0);
        syscall_finish(x, NULL, NULL);
        sched_done(s, x);
        if (t == 0) {
            ran = n;
            break;
        }
        syscall_unref(mk(s, agent, 1)); /* the busy agent comes straight back */
    }
    struct sched_agent_stats st;
    assert_int_equal(sched_agent_stats(s, "low", &st), 0);
    assert_int_equal(st.n_done, ran >= 0 ? 1 : 0);
    sched_destroy(s);
    return ran;
}

static void test_fair_no_starvation(void **state)
{
    (void)state;
    /* aging 10 ms per level: 10 levels in ~100 ms, i.e. ~50 high calls */
    int ran = starvation_run(10, 2000);
    assert_true(ran >= 0);
    assert_true(ran > 3); /* it did wait behind the high-priority load */
    /* without aging it never runs */
    assert_int_equal(starvation_run(0, 300), -1);
}

static void test_configure(void **state)
{
    (void)state;
    struct {
        const char *yaml;
        int rc;
        const char *needle;
    } cases[] = {
        {"scheduler: {policy: rr, time_slice_ms: 50, slice_tokens: 16, aging_ms: 1000, "
         "priorities: {ui: 10, batch: -3}}\n", 0, NULL},
        {"scheduler: {time_slice_ms: -1}\n", AIOS_ECONFIG, "scheduler.time_slice_ms"},
        {"scheduler: {aging_ms: soon}\n", AIOS_ECONFIG, "scheduler.aging_ms"},
        {"scheduler: {priorities: [a, b]}\n", AIOS_ECONFIG, "scheduler.priorities"},
        {"scheduler: {priorities: {ui: 1.5}}\n", AIOS_ECONFIG, "scheduler.priorities.ui"},
        {"scheduler: {priorities: {ui: 500}}\n", AIOS_ECONFIG, "between -100 and 100"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct aios_config cfg;
        char err[512] = "";
        assert_int_equal(config_load_string(&cfg, cases[i].yaml, strlen(cases[i].yaml), err,
                                            sizeof err), 0);
        struct sched *s = NULL;
        assert_int_equal(sched_create(&s, sched_policy_find(cfg.sched_policy)), 0);
        int rc = sched_configure(s, &cfg, err, sizeof err);
        assert_int_equal(rc, cases[i].rc);
        if (cases[i].needle) {
            if (!strstr(err, cases[i].needle)) fail_msg("'%s' lacks '%s'", err, cases[i].needle);
        } else {
            struct sched_tuning t;
            sched_get_tuning(s, &t);
            assert_int_equal(t.time_slice_us, 50000);
            assert_int_equal(t.slice_tokens, 16);
            assert_int_equal(t.aging_us, 1000000);
            struct sched_agent_stats st;
            assert_int_equal(sched_agent_stats(s, "ui", &st), 0);
            assert_int_equal(st.priority, 10);
            assert_int_equal(sched_agent_stats(s, "batch", &st), 0);
            assert_int_equal(st.priority, -3);
            struct sched_stats ss;
            sched_get_stats(s, &ss);
            assert_string_equal(ss.policy, "rr");
        }
        sched_destroy(s);
        config_free(&cfg);
    }
}

/* accounting from a finished call's usage and its slices */
static void test_accounting(void **state)
{
    (void)state;
    struct sched *s = mksched(&sched_policy_fair, 0, 0);
    struct syscall *a = mk(s, "acct", 1);
    sleep_ms(5);
    struct syscall *x = sched_next(s, SYSCALL_KIND_LLM, NULL, 0);
    assert_ptr_equal(x, a);
    pthread_mutex_lock(&a->mu);
    a->usage.filled = true;
    a->usage.n_prompt_computed = 100;
    a->usage.n_prompt_reused = 900;
    a->usage.n_gen = 24;
    a->usage.t_engine_us = 12345;
    pthread_mutex_unlock(&a->mu);
    sched_set_agent_kv(s, "acct", 4096);
    syscall_finish(a, NULL, NULL);
    sched_done(s, a);
    struct sched_agent_stats st;
    assert_int_equal(sched_agent_stats(s, "acct", &st), 0);
    assert_int_equal(st.n_calls, 1);
    assert_int_equal(st.n_calls_kind[SYSCALL_KIND_LLM], 1);
    assert_int_equal(st.n_prompt_computed, 100);
    assert_int_equal(st.n_prompt_reused, 900);
    assert_int_equal(st.n_gen, 24);
    assert_int_equal(st.t_engine_us, 12345);
    assert_true(st.t_queue_us >= 5000);
    assert_int_equal(st.kv_bytes, 4096);
    assert_int_equal(st.n_queued, 0);
    assert_int_equal(st.n_running, 0);
    /* not charged by the worker: service from usage, computed tokens only
     * (reused ones cost nothing; ms_weight is 0 here) */
    assert_true(st.service >= 123.9 && st.service <= 124.1);
    struct sched_agent_stats *all = NULL;
    size_t n = 0;
    assert_int_equal(sched_all_agent_stats(s, &all, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(all[0].name, "acct");
    free(all);
    syscall_unref(a);
    sched_destroy(s);
}

/* the list of running calls the preemption driver reads */
static void test_running_list(void **state)
{
    (void)state;
    struct sched *s = mksched(&sched_policy_fair, 0, 0);
    int ta, tb;
    int *t1 = malloc(sizeof *t1), *t2 = malloc(sizeof *t2), *t3 = malloc(sizeof *t3);
    *t1 = 1, *t2 = 2, *t3 = 3;
    struct syscall *a = syscall_new(SYSCALL_KIND_LLM, "A", &ta, t1, free);
    struct syscall *b = syscall_new(SYSCALL_KIND_LLM, "B", &ta, t2, free);
    struct syscall *c = syscall_new(SYSCALL_KIND_LLM, "C", &tb, t3, free);
    assert_int_equal(sched_submit(s, a), 0);
    assert_int_equal(sched_submit(s, b), 0);
    assert_int_equal(sched_submit(s, c), 0);
    struct syscall *out[8];
    assert_int_equal(sched_running_calls(s, SYSCALL_KIND_LLM, NULL, out, 8), 0);
    for (int i = 0; i < 3; i++) assert_non_null(sched_next(s, SYSCALL_KIND_LLM, NULL, 0));
    size_t n = sched_running_calls(s, SYSCALL_KIND_LLM, &ta, out, 8);
    assert_int_equal(n, 2);
    assert_ptr_equal(out[0], a); /* oldest first */
    assert_ptr_equal(out[1], b);
    for (size_t i = 0; i < n; i++) syscall_unref(out[i]);
    assert_int_equal(sched_running_calls(s, SYSCALL_KIND_LLM, NULL, out, 1), 1);
    syscall_unref(out[0]);
    /* an engine-side switch: counted, slice restarted */
    sched_note_switch(s, a);
    assert_int_equal(a->usage.n_ctx_switches, 1);
    struct sched_stats st;
    sched_get_stats(s, &st);
    assert_int_equal(st.n_preempted, 1);
    syscall_finish(a, NULL, NULL);
    sched_done(s, a);
    n = sched_running_calls(s, SYSCALL_KIND_LLM, NULL, out, 8);
    assert_int_equal(n, 2);
    assert_ptr_equal(out[0], b);
    assert_ptr_equal(out[1], c);
    for (size_t i = 0; i < n; i++) syscall_unref(out[i]);
    struct sched_agent_stats as;
    assert_int_equal(sched_agent_stats(s, "A", &as), 0);
    assert_int_equal(as.n_ctx_switches, 1);
    syscall_finish(b, NULL, NULL);
    sched_done(s, b);
    syscall_finish(c, NULL, NULL);
    sched_done(s, c);
    assert_int_equal(sched_running_calls(s, SYSCALL_KIND_LLM, NULL, out, 8), 0);
    syscall_unref(a);
    syscall_unref(b);
    syscall_unref(c);
    sched_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_find),
        cmocka_unit_test(test_fifo_ignores_service),
        cmocka_unit_test(test_rr_slices),
        cmocka_unit_test(test_rr_time_slice),
        cmocka_unit_test(test_fair_least_served),
        cmocka_unit_test(test_fair_priorities),
        cmocka_unit_test(test_fair_preemption),
        cmocka_unit_test(test_fair_no_starvation),
        cmocka_unit_test(test_configure),
        cmocka_unit_test(test_accounting),
        cmocka_unit_test(test_running_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
