/* Unit tests for src/sched/sched.c: FIFO order per kind, target filtering,
 * timeouts, blocking workers woken by submit, RUNNING status and start time,
 * statistics, shutdown (queued calls failed with AIOS_ESHUTDOWN, workers
 * woken, later submits refused), policy lookup, reference counting, and a
 * many-producers / many-workers run where every call runs exactly once,
 * and a pool's reader threads serving reads while every other thread is
 * held by a write, and when each agent is expected to make its next LLM
 * call (queued, waiting on a tool, idle). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernel/syscall.h"
#include "sched/sched.h"
#include "util/err.h"
#include "util/util.h"

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* a request that counts how often it was freed */
static int g_req_freed; /* atomic */

struct req {
    int tag;
};

static void req_free(void *p)
{
    __atomic_add_fetch(&g_req_freed, 1, __ATOMIC_RELAXED);
    free(p);
}

static struct syscall *mk(enum syscall_kind kind, void *target, int tag)
{
    struct req *r = malloc(sizeof *r);
    assert_non_null(r);
    r->tag = tag;
    struct syscall *sc = syscall_new(kind, "agent", target, r, req_free);
    assert_non_null(sc);
    return sc;
}

static int tag_of(struct syscall *sc) { return ((struct req *)sc->req)->tag; }

static int setup(void **state)
{
    struct sched *s = NULL;
    if (sched_create(&s, &sched_policy_fifo)) return -1;
    __atomic_store_n(&g_req_freed, 0, __ATOMIC_RELAXED);
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    sched_destroy(*state);
    return 0;
}

/* ---- policy lookup ---- */

static void test_policy_find(void **state)
{
    (void)state;
    const struct sched_policy *p = sched_policy_find("fifo");
    assert_ptr_equal(p, &sched_policy_fifo);
    assert_string_equal(p->name, "fifo");
    assert_non_null(p->push);
    assert_non_null(p->pick);
    assert_null(sched_policy_find("nope"));
    assert_null(sched_policy_find(""));
    assert_null(sched_policy_find("FIFO"));
    assert_null(sched_policy_find("fifo "));
}

static void test_create_default_policy(void **state)
{
    (void)state;
    struct sched *s = (struct sched *)1;
    assert_int_equal(sched_create(&s, NULL), 0);
    assert_non_null(s);
    struct sched_stats st;
    sched_get_stats(s, &st);
    assert_string_equal(st.policy, "fifo");
    assert_int_equal(st.n_submitted, 0);
    assert_int_equal(st.n_finished, 0);
    assert_false(sched_stopping(s));
    sched_destroy(s);
    sched_destroy(NULL);
}

/* ---- order ---- */

static void test_fifo_per_kind(void **state)
{
    struct sched *s = *state;
    struct syscall *llm[5], *mem[5];
    for (int i = 0; i < 5; i++) {
        llm[i] = mk(SYSCALL_KIND_LLM, NULL, i);
        mem[i] = mk(SYSCALL_KIND_MEMORY, NULL, 100 + i);
        assert_int_equal(sched_submit(s, llm[i]), 0);
        assert_int_equal(sched_submit(s, mem[i]), 0);
        assert_int_equal(llm[i]->status, SYSCALL_STATUS_QUEUED);
        assert_int_equal(llm[i]->refs, 2); /* caller + scheduler */
    }
    /* nothing in the other queues */
    assert_null(sched_next(s, SYSCALL_KIND_TOOL, NULL, 0));
    assert_null(sched_next(s, SYSCALL_KIND_STORAGE, NULL, 0));

    /* memory first, to show the queues are independent */
    for (int i = 0; i < 5; i++) {
        struct syscall *sc = sched_next(s, SYSCALL_KIND_MEMORY, NULL, 0);
        assert_ptr_equal(sc, mem[i]);
        syscall_finish(sc, NULL, NULL);
        sched_done(s, sc);
    }
    assert_null(sched_next(s, SYSCALL_KIND_MEMORY, NULL, 0));
    for (int i = 0; i < 5; i++) {
        struct syscall *sc = sched_next(s, SYSCALL_KIND_LLM, NULL, 0);
        assert_ptr_equal(sc, llm[i]);
        assert_int_equal(tag_of(sc), i);
        syscall_finish(sc, NULL, NULL);
        sched_done(s, sc);
    }
    assert_null(sched_next(s, SYSCALL_KIND_LLM, NULL, 0));
    for (int i = 0; i < 5; i++) {
        syscall_unref(llm[i]);
        syscall_unref(mem[i]);
    }
    assert_int_equal(g_req_freed, 10);
}

static void test_fifo_refill_after_empty(void **state)
{
    /* the tail pointer must be reset when the queue drains */
    struct sched *s = *state;
    struct syscall *a = mk(SYSCALL_KIND_TOOL, NULL, 1);
    struct syscall *b = mk(SYSCALL_KIND_TOOL, NULL, 2);
    struct syscall *c = mk(SYSCALL_KIND_TOOL, NULL, 3);
    assert_int_equal(sched_submit(s, a), 0);
    struct syscall *x = sched_next(s, SYSCALL_KIND_TOOL, NULL, 0);
    assert_ptr_equal(x, a);
    sched_done(s, x);
    assert_int_equal(sched_submit(s, b), 0);
    assert_int_equal(sched_submit(s, c), 0);
    x = sched_next(s, SYSCALL_KIND_TOOL, NULL, 0);
    assert_ptr_equal(x, b);
    sched_done(s, x);
    x = sched_next(s, SYSCALL_KIND_TOOL, NULL, 0);
    assert_ptr_equal(x, c);
    sched_done(s, x);
    assert_null(sched_next(s, SYSCALL_KIND_TOOL, NULL, 0));
    syscall_unref(a);
    syscall_unref(b);
    syscall_unref(c);
    assert_int_equal(g_req_freed, 3);
}

static void test_target_filter(void **state)
{
    struct sched *s = *state;
    int ta, tb;
    struct syscall *sc[8];
    for (int i = 0; i < 8; i++) {
        sc[i] = mk(SYSCALL_KIND_LLM, (i % 2) ? (void *)&tb : (void *)&ta, i);
        assert_int_equal(sched_submit(s, sc[i]), 0);
    }
    /* B's worker first: skips the A at the head each time */
    for (int i = 1; i < 8; i += 2) {
        struct syscall *x = sched_next(s, SYSCALL_KIND_LLM, &tb, 0);
        assert_non_null(x);
        assert_ptr_equal(x, sc[i]);
        assert_ptr_equal(x->target, &tb);
        sched_done(s, x);
    }
    assert_null(sched_next(s, SYSCALL_KIND_LLM, &tb, 0));
    /* A's calls are untouched and still in order; take the last one with
     * the any-target worker after the first two */
    struct syscall *x = sched_next(s, SYSCALL_KIND_LLM, &ta, 0);
    assert_ptr_equal(x, sc[0]);
    sched_done(s, x);
    x = sched_next(s, SYSCALL_KIND_LLM, &ta, 0);
    assert_ptr_equal(x, sc[2]);
    sched_done(s, x);
    x = sched_next(s, SYSCALL_KIND_LLM, NULL, 0);
    assert_ptr_equal(x, sc[4]);
    sched_done(s, x);
    x = sched_next(s, SYSCALL_KIND_LLM, &ta, 0);
    assert_ptr_equal(x, sc[6]);
    sched_done(s, x);
    assert_null(sched_next(s, SYSCALL_KIND_LLM, NULL, 0));

    /* removing the tail through the filter keeps later pushes reachable */
    struct syscall *y = mk(SYSCALL_KIND_LLM, &ta, 100);
    struct syscall *z = mk(SYSCALL_KIND_LLM, &tb, 101);
    struct syscall *w = mk(SYSCALL_KIND_LLM, &tb, 102);
    assert_int_equal(sched_submit(s, y), 0);
    assert_int_equal(sched_submit(s, z), 0);
    x = sched_next(s, SYSCALL_KIND_LLM, &tb, 0); /* z is the tail */
    assert_ptr_equal(x, z);
    sched_done(s, x);
    assert_int_equal(sched_submit(s, w), 0);
    x = sched_next(s, SYSCALL_KIND_LLM, NULL, 0);
    assert_ptr_equal(x, y);
    sched_done(s, x);
    x = sched_next(s, SYSCALL_KIND_LLM, NULL, 0);
    assert_ptr_equal(x, w);
    sched_done(s, x);
    assert_null(sched_next(s, SYSCALL_KIND_LLM, NULL, 0));

    for (int i = 0; i < 8; i++) syscall_unref(sc[i]);
    syscall_unref(y);
    syscall_unref(z);
    syscall_unref(w);
    assert_int_equal(g_req_freed, 11);
}

#define TGT_N 200

struct tgt_worker {
    struct sched *s;
    void *target;
    int tags[TGT_N];
    int n;
    int wrong_target;
};

static void *tgt_worker_main(void *arg)
{
    struct tgt_worker *w = arg;
    struct syscall *sc;
    while ((sc = sched_next(w->s, SYSCALL_KIND_LLM, w->target, -1))) {
        if (sc->target != w->target) w->wrong_target++;
        if (w->n < TGT_N) w->tags[w->n] = tag_of(sc);
        w->n++;
        syscall_finish(sc, NULL, NULL);
        sched_done(w->s, sc);
    }
    return NULL;
}

static void test_target_filter_threads(void **state)
{
    struct sched *s = *state;
    int ta, tb;
    struct tgt_worker wa = {.s = s, .target = &ta}, wb = {.s = s, .target = &tb};
    pthread_t tha, thb;
    assert_int_equal(pthread_create(&tha, NULL, tgt_worker_main, &wa), 0);
    assert_int_equal(pthread_create(&thb, NULL, tgt_worker_main, &wb), 0);
    for (int i = 0; i < 2 * TGT_N; i++) {
        struct syscall *sc = mk(SYSCALL_KIND_LLM, (i % 2) ? (void *)&tb : (void *)&ta, i);
        assert_int_equal(sched_submit(s, sc), 0);
        syscall_unref(sc); /* the scheduler's reference keeps it alive */
    }
    /* wait until both workers drained their share */
    int64_t deadline = now_ms() + 10000;
    struct sched_stats st;
    for (;;) {
        sched_get_stats(s, &st);
        if (st.n_finished == 2 * TGT_N || now_ms() > deadline) break;
        sleep_ms(1);
    }
    assert_int_equal(st.n_finished, 2 * TGT_N);
    sched_shutdown(s);
    pthread_join(tha, NULL);
    pthread_join(thb, NULL);
    assert_int_equal(wa.n, TGT_N);
    assert_int_equal(wb.n, TGT_N);
    assert_int_equal(wa.wrong_target, 0);
    assert_int_equal(wb.wrong_target, 0);
    for (int i = 0; i < TGT_N; i++) {
        assert_int_equal(wa.tags[i], 2 * i);
        assert_int_equal(wb.tags[i], 2 * i + 1);
    }
    assert_int_equal(g_req_freed, 2 * TGT_N);
}

/* ---- timeouts and waking ---- */

static void test_next_timeout(void **state)
{
    struct sched *s = *state;
    int64_t t0 = now_ms();
    assert_null(sched_next(s, SYSCALL_KIND_LLM, NULL, 0));
    assert_true(now_ms() - t0 < 100);

    t0 = now_ms();
    assert_null(sched_next(s, SYSCALL_KIND_LLM, NULL, 150));
    int64_t dt = now_ms() - t0;
    assert_true(dt >= 140);
    assert_true(dt < 2000);

    /* more than a second: the seconds part of the deadline counts */
    t0 = now_ms();
    assert_null(sched_next(s, SYSCALL_KIND_STORAGE, NULL, 1100));
    dt = now_ms() - t0;
    assert_true(dt >= 1090);
    assert_true(dt < 3000);

    /* work for another target does not end the wait early */
    int ta, tb;
    struct syscall *sc = mk(SYSCALL_KIND_LLM, &tb, 1);
    assert_int_equal(sched_submit(s, sc), 0);
    t0 = now_ms();
    assert_null(sched_next(s, SYSCALL_KIND_LLM, &ta, 120));
    dt = now_ms() - t0;
    assert_true(dt >= 110);
    /* and it is still there for its own target */
    struct syscall *x = sched_next(s, SYSCALL_KIND_LLM, &tb, 0);
    assert_ptr_equal(x, sc);
    sched_done(s, x);
    syscall_unref(sc);
}

struct waiter {
    struct sched *s;
    enum syscall_kind kind;
    void *target;
    int timeout_ms;
    struct syscall *got;
    int64_t t_return_ms;
    int started; /* atomic */
};

static void *waiter_main(void *arg)
{
    struct waiter *w = arg;
    __atomic_store_n(&w->started, 1, __ATOMIC_RELEASE);
    w->got = sched_next(w->s, w->kind, w->target, w->timeout_ms);
    w->t_return_ms = now_ms();
    return NULL;
}

static void wait_started(struct waiter *w)
{
    while (!__atomic_load_n(&w->started, __ATOMIC_ACQUIRE)) sleep_ms(1);
    sleep_ms(50); /* let it block in the condvar */
}

static void test_blocked_worker_wakes_on_submit(void **state)
{
    struct sched *s = *state;
    struct waiter w = {.s = s, .kind = SYSCALL_KIND_TOOL, .timeout_ms = -1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, waiter_main, &w), 0);
    wait_started(&w);
    struct syscall *sc = mk(SYSCALL_KIND_TOOL, NULL, 1);
    int64_t t_submit = now_ms();
    assert_int_equal(sched_submit(s, sc), 0);
    pthread_join(th, NULL);
    assert_ptr_equal(w.got, sc);
    assert_true(w.t_return_ms - t_submit < 2000);
    assert_int_equal(sc->status, SYSCALL_STATUS_RUNNING);
    sched_done(s, w.got);
    syscall_unref(sc);

    /* a timed waiter is woken too, well before its timeout */
    struct waiter w2 = {.s = s, .kind = SYSCALL_KIND_MEMORY, .timeout_ms = 5000};
    assert_int_equal(pthread_create(&th, NULL, waiter_main, &w2), 0);
    wait_started(&w2);
    sc = mk(SYSCALL_KIND_MEMORY, NULL, 2);
    t_submit = now_ms();
    assert_int_equal(sched_submit(s, sc), 0);
    pthread_join(th, NULL);
    assert_ptr_equal(w2.got, sc);
    assert_true(w2.t_return_ms - t_submit < 2000);
    sched_done(s, w2.got);
    syscall_unref(sc);
    assert_int_equal(g_req_freed, 2);
}

/* ---- status, start time, stats ---- */

static void test_running_status_and_start(void **state)
{
    struct sched *s = *state;
    struct syscall *sc = mk(SYSCALL_KIND_LLM, NULL, 1);
    assert_int_equal(sc->status, SYSCALL_STATUS_NEW);
    assert_int_equal(sched_submit(s, sc), 0);
    assert_int_equal(sc->status, SYSCALL_STATUS_QUEUED);
    assert_int_equal(sc->t_start_us, 0);
    sleep_ms(2);
    struct syscall *x = sched_next(s, SYSCALL_KIND_LLM, NULL, 0);
    assert_ptr_equal(x, sc);
    assert_int_equal(x->status, SYSCALL_STATUS_RUNNING);
    assert_true(x->t_start_us > 0);
    assert_true(x->t_start_us >= x->t_created_us + 1000);
    int64_t t_start = x->t_start_us;
    syscall_finish(x, NULL, NULL);
    assert_int_equal(x->status, SYSCALL_STATUS_DONE);
    assert_int_equal(x->t_start_us, t_start); /* kept by finish */
    assert_true(x->t_end_us >= x->t_start_us);
    sched_done(s, x);
    assert_int_equal(sc->refs, 1);
    syscall_unref(sc);
    assert_int_equal(g_req_freed, 1);
}

static void test_stats(void **state)
{
    struct sched *s = *state;
    struct sched_stats st;
    sched_get_stats(s, &st);
    for (int k = 0; k < SYSCALL_KIND__COUNT; k++) {
        assert_int_equal(st.n_queued[k], 0);
        assert_int_equal(st.n_running[k], 0);
    }
    assert_string_equal(st.policy, "fifo");

    struct syscall *sc[5];
    for (int i = 0; i < 3; i++) sc[i] = mk(SYSCALL_KIND_LLM, NULL, i);
    for (int i = 3; i < 5; i++) sc[i] = mk(SYSCALL_KIND_TOOL, NULL, i);
    for (int i = 0; i < 5; i++) assert_int_equal(sched_submit(s, sc[i]), 0);

    sched_get_stats(s, &st);
    assert_int_equal(st.n_queued[SYSCALL_KIND_LLM], 3);
    assert_int_equal(st.n_queued[SYSCALL_KIND_TOOL], 2);
    assert_int_equal(st.n_queued[SYSCALL_KIND_MEMORY], 0);
    assert_int_equal(st.n_queued[SYSCALL_KIND_STORAGE], 0);
    assert_int_equal(st.n_running[SYSCALL_KIND_LLM], 0);
    assert_int_equal(st.n_submitted, 5);
    assert_int_equal(st.n_finished, 0);

    struct syscall *a = sched_next(s, SYSCALL_KIND_LLM, NULL, 0);
    struct syscall *b = sched_next(s, SYSCALL_KIND_LLM, NULL, 0);
    struct syscall *c = sched_next(s, SYSCALL_KIND_TOOL, NULL, 0);
    sched_get_stats(s, &st);
    assert_int_equal(st.n_queued[SYSCALL_KIND_LLM], 1);
    assert_int_equal(st.n_running[SYSCALL_KIND_LLM], 2);
    assert_int_equal(st.n_queued[SYSCALL_KIND_TOOL], 1);
    assert_int_equal(st.n_running[SYSCALL_KIND_TOOL], 1);
    assert_int_equal(st.n_finished, 0);

    syscall_finish(a, NULL, NULL);
    sched_done(s, a);
    syscall_fail(c, AIOS_EENGINE, 500, "x");
    sched_done(s, c);
    sched_get_stats(s, &st);
    assert_int_equal(st.n_running[SYSCALL_KIND_LLM], 1);
    assert_int_equal(st.n_running[SYSCALL_KIND_TOOL], 0);
    assert_int_equal(st.n_finished, 2);
    assert_int_equal(st.n_submitted, 5);

    syscall_finish(b, NULL, NULL);
    sched_done(s, b);
    sched_get_stats(s, &st);
    assert_int_equal(st.n_running[SYSCALL_KIND_LLM], 0);
    assert_int_equal(st.n_finished, 3);
    assert_int_equal(st.n_queued[SYSCALL_KIND_LLM], 1);

    /* the two still queued are failed and released by teardown's destroy */
    for (int i = 0; i < 5; i++) syscall_unref(sc[i]);
    assert_int_equal(g_req_freed, 3);
}

/* ---- shutdown ---- */

struct notify_count {
    int n;
    enum syscall_status seen;
};

static void count_notify(struct syscall *sc, void *ud)
{
    struct notify_count *nc = ud;
    nc->n++;
    pthread_mutex_lock(&sc->mu);
    nc->seen = sc->status;
    pthread_mutex_unlock(&sc->mu);
}

static void test_shutdown_fails_queued(void **state)
{
    struct sched *s = *state;
    struct syscall *sc[4];
    struct notify_count nc[4];
    memset(nc, 0, sizeof nc);
    for (int i = 0; i < 4; i++) {
        sc[i] = mk(i < 3 ? SYSCALL_KIND_LLM : SYSCALL_KIND_STORAGE, NULL, i);
        sc[i]->notify = count_notify;
        sc[i]->notify_ud = &nc[i];
        assert_int_equal(sched_submit(s, sc[i]), 0);
    }
    struct syscall *running = sched_next(s, SYSCALL_KIND_LLM, NULL, 0);
    assert_ptr_equal(running, sc[0]);

    assert_false(sched_stopping(s));
    sched_shutdown(s);
    assert_true(sched_stopping(s));

    /* the running call is left alone */
    assert_int_equal(sc[0]->status, SYSCALL_STATUS_RUNNING);
    assert_int_equal(nc[0].n, 0);
    assert_int_equal(sc[0]->refs, 2);
    /* the queued ones failed with ESHUTDOWN / 503, notified once, and the
     * scheduler's reference dropped */
    for (int i = 1; i < 4; i++) {
        assert_int_equal(sc[i]->status, SYSCALL_STATUS_ERROR);
        assert_int_equal(sc[i]->err, AIOS_ESHUTDOWN);
        assert_int_equal(sc[i]->http_status, 503);
        assert_true(strlen(sc[i]->errmsg) > 0);
        assert_int_equal(nc[i].n, 1);
        assert_int_equal(nc[i].seen, SYSCALL_STATUS_ERROR);
        assert_int_equal(sc[i]->refs, 1);
    }
    struct sched_stats st;
    sched_get_stats(s, &st);
    for (int k = 0; k < SYSCALL_KIND__COUNT; k++) assert_int_equal(st.n_queued[k], 0);
    assert_int_equal(st.n_running[SYSCALL_KIND_LLM], 1);

    /* workers get nothing more, without waiting */
    int64_t t0 = now_ms();
    assert_null(sched_next(s, SYSCALL_KIND_LLM, NULL, 1000));
    assert_null(sched_next(s, SYSCALL_KIND_LLM, NULL, -1));
    assert_true(now_ms() - t0 < 500);

    /* the running call ends normally */
    syscall_finish(running, NULL, NULL);
    assert_int_equal(running->status, SYSCALL_STATUS_DONE);
    sched_done(s, running);
    sched_get_stats(s, &st);
    assert_int_equal(st.n_running[SYSCALL_KIND_LLM], 0);

    /* second shutdown is harmless */
    sched_shutdown(s);
    for (int i = 1; i < 4; i++) assert_int_equal(nc[i].n, 1);

    for (int i = 0; i < 4; i++) syscall_unref(sc[i]);
    assert_int_equal(g_req_freed, 4);
}

static void test_submit_after_shutdown(void **state)
{
    struct sched *s = *state;
    sched_shutdown(s);
    struct syscall *sc = mk(SYSCALL_KIND_LLM, NULL, 1);
    assert_int_equal(sched_submit(s, sc), AIOS_ESHUTDOWN);
    assert_int_equal(sc->refs, 1); /* no reference kept */
    /* it was never queued, and nobody will fail it: it must not claim to be */
    assert_int_not_equal(sc->status, SYSCALL_STATUS_QUEUED);
    assert_int_equal(sc->status, SYSCALL_STATUS_NEW);
    struct sched_stats st;
    sched_get_stats(s, &st);
    assert_int_equal(st.n_submitted, 0);
    assert_int_equal(st.n_queued[SYSCALL_KIND_LLM], 0);
    assert_null(sched_next(s, SYSCALL_KIND_LLM, NULL, 0));
    syscall_unref(sc);
    assert_int_equal(g_req_freed, 1);
}

static void test_shutdown_wakes_blocked_workers(void **state)
{
    struct sched *s = *state;
    int ta;
    struct waiter w[5] = {
        {.s = s, .kind = SYSCALL_KIND_LLM, .timeout_ms = -1},
        {.s = s, .kind = SYSCALL_KIND_LLM, .target = &ta, .timeout_ms = -1},
        {.s = s, .kind = SYSCALL_KIND_MEMORY, .timeout_ms = -1},
        {.s = s, .kind = SYSCALL_KIND_TOOL, .timeout_ms = 30000},
        {.s = s, .kind = SYSCALL_KIND_STORAGE, .timeout_ms = -1},
    };
    pthread_t th[5];
    for (int i = 0; i < 5; i++) {
        w[i].got = (struct syscall *)1;
        assert_int_equal(pthread_create(&th[i], NULL, waiter_main, &w[i]), 0);
    }
    for (int i = 0; i < 5; i++) wait_started(&w[i]);
    int64_t t0 = now_ms();
    sched_shutdown(s);
    for (int i = 0; i < 5; i++) {
        pthread_join(th[i], NULL);
        assert_null(w[i].got);
        assert_true(w[i].t_return_ms - t0 < 2000);
    }
}

static void test_destroy_releases_queued(void **state)
{
    (void)state;
    struct sched *s;
    assert_int_equal(sched_create(&s, NULL), 0);
    struct syscall *a = mk(SYSCALL_KIND_LLM, NULL, 1);
    struct syscall *b = mk(SYSCALL_KIND_TOOL, NULL, 2);
    assert_int_equal(sched_submit(s, a), 0);
    assert_int_equal(sched_submit(s, b), 0);
    syscall_unref(b); /* only the scheduler holds b now */
    sched_destroy(s);
    assert_int_equal(a->status, SYSCALL_STATUS_ERROR);
    assert_int_equal(a->err, AIOS_ESHUTDOWN);
    assert_int_equal(a->refs, 1);
    assert_int_equal(g_req_freed, 1); /* b freed by destroy */
    syscall_unref(a);
    assert_int_equal(g_req_freed, 2);
}

static void test_submit_invalid_kind(void **state)
{
    struct sched *s = *state;
    struct syscall *sc = mk(SYSCALL_KIND_LLM, NULL, 1);
    sc->kind = SYSCALL_KIND__COUNT;
    assert_int_equal(sched_submit(s, sc), AIOS_EINVAL);
    assert_int_equal(sc->refs, 1);
    assert_int_equal(sc->status, SYSCALL_STATUS_NEW);
    struct sched_stats st;
    sched_get_stats(s, &st);
    assert_int_equal(st.n_submitted, 0);
    syscall_unref(sc);
    assert_int_equal(g_req_freed, 1);
}

/* ---- reference counting through the whole path ---- */

static void test_refcount_lifecycle(void **state)
{
    struct sched *s = *state;
    /* caller drops last */
    struct syscall *sc = mk(SYSCALL_KIND_LLM, NULL, 1);
    assert_int_equal(sched_submit(s, sc), 0);
    struct syscall *x = sched_next(s, SYSCALL_KIND_LLM, NULL, 0);
    assert_ptr_equal(x, sc);
    assert_int_equal(sc->refs, 2);
    syscall_finish(x, NULL, NULL);
    sched_done(s, x);
    assert_int_equal(sc->refs, 1);
    assert_int_equal(g_req_freed, 0);
    syscall_unref(sc);
    assert_int_equal(g_req_freed, 1);

    /* caller goes away first: the worker's sched_done frees it */
    sc = mk(SYSCALL_KIND_LLM, NULL, 2);
    assert_int_equal(sched_submit(s, sc), 0);
    syscall_unref(sc);
    assert_int_equal(g_req_freed, 1);
    x = sched_next(s, SYSCALL_KIND_LLM, NULL, 0);
    assert_non_null(x);
    assert_int_equal(tag_of(x), 2);
    assert_int_equal(x->refs, 1);
    syscall_finish(x, NULL, NULL);
    sched_done(s, x);
    assert_int_equal(g_req_freed, 2);
}

/* ---- many producers, many workers ---- */

#define MT_PRODUCERS 4
#define MT_WORKERS 3
#define MT_PER_PRODUCER 1000

struct mt {
    struct sched *s;
    int runs[MT_PRODUCERS * MT_PER_PRODUCER]; /* atomic */
    int next_tag; /* atomic */
    int submit_errors; /* atomic */
};

static void *mt_producer(void *arg)
{
    struct mt *m = arg;
    for (int i = 0; i < MT_PER_PRODUCER; i++) {
        int tag = __atomic_fetch_add(&m->next_tag, 1, __ATOMIC_RELAXED);
        struct req *r = malloc(sizeof *r);
        if (!r) abort();
        r->tag = tag;
        struct syscall *sc = syscall_new(SYSCALL_KIND_LLM, "p", NULL, r, req_free);
        if (!sc) abort();
        if (sched_submit(m->s, sc)) __atomic_add_fetch(&m->submit_errors, 1, __ATOMIC_RELAXED);
        syscall_unref(sc);
    }
    return NULL;
}

static void *mt_worker(void *arg)
{
    struct mt *m = arg;
    struct syscall *sc;
    while ((sc = sched_next(m->s, SYSCALL_KIND_LLM, NULL, -1))) {
        __atomic_add_fetch(&m->runs[tag_of(sc)], 1, __ATOMIC_RELAXED);
        syscall_finish(sc, NULL, NULL);
        sched_done(m->s, sc);
    }
    return NULL;
}

static void test_many_producers_workers(void **state)
{
    struct sched *s = *state;
    struct mt *m = calloc(1, sizeof *m);
    assert_non_null(m);
    m->s = s;
    pthread_t pw[MT_WORKERS], pp[MT_PRODUCERS];
    for (int i = 0; i < MT_WORKERS; i++)
        assert_int_equal(pthread_create(&pw[i], NULL, mt_worker, m), 0);
    for (int i = 0; i < MT_PRODUCERS; i++)
        assert_int_equal(pthread_create(&pp[i], NULL, mt_producer, m), 0);
    for (int i = 0; i < MT_PRODUCERS; i++) pthread_join(pp[i], NULL);
    const int total = MT_PRODUCERS * MT_PER_PRODUCER;
    int64_t deadline = now_ms() + 20000;
    struct sched_stats st;
    for (;;) {
        sched_get_stats(s, &st);
        if (st.n_finished == (uint64_t)total || now_ms() > deadline) break;
        sleep_ms(1);
    }
    sched_shutdown(s);
    for (int i = 0; i < MT_WORKERS; i++) pthread_join(pw[i], NULL);
    assert_int_equal(m->submit_errors, 0);
    assert_int_equal(st.n_submitted, total);
    assert_int_equal(st.n_finished, total);
    for (int i = 0; i < total; i++) assert_int_equal(m->runs[i], 1);
    assert_int_equal(__atomic_load_n(&g_req_freed, __ATOMIC_RELAXED), total);
    free(m);
}

/* the per-agent cap: an agent at its cap waits, other agents' calls pass
 * it, and its next call starts when one of its running calls is done */
static struct syscall *mk_agent(const char *agent, int tag)
{
    struct req *r = malloc(sizeof *r);
    assert_non_null(r);
    r->tag = tag;
    struct syscall *sc = syscall_new(SYSCALL_KIND_TOOL, agent, NULL, r, req_free);
    assert_non_null(sc);
    return sc;
}

static void test_agent_cap(void **state)
{
    struct sched *s = *state;
    sched_set_agent_cap(s, SYSCALL_KIND_TOOL, 2);
    struct syscall *a1 = mk_agent("a", 1), *a2 = mk_agent("a", 2), *a3 = mk_agent("a", 3);
    struct syscall *b1 = mk_agent("b", 4);
    struct syscall *all[] = {a1, a2, a3, b1};
    for (int i = 0; i < 4; i++) assert_int_equal(sched_submit(s, all[i]), 0);
    struct syscall *x = sched_next(s, SYSCALL_KIND_TOOL, NULL, 0);
    assert_ptr_equal(x, a1);
    struct syscall *y = sched_next(s, SYSCALL_KIND_TOOL, NULL, 0);
    assert_ptr_equal(y, a2);
    /* a holds 2: its third call waits, b's goes first */
    struct syscall *z = sched_next(s, SYSCALL_KIND_TOOL, NULL, 0);
    assert_ptr_equal(z, b1);
    assert_null(sched_next(s, SYSCALL_KIND_TOOL, NULL, 0));
    sched_done(s, x);
    struct syscall *w = sched_next(s, SYSCALL_KIND_TOOL, NULL, 0);
    assert_ptr_equal(w, a3);
    sched_done(s, y);
    sched_done(s, z);
    sched_done(s, w);
    /* other kinds are not capped */
    struct syscall *m1 = mk(SYSCALL_KIND_MEMORY, NULL, 5), *m2 = mk(SYSCALL_KIND_MEMORY, NULL, 6),
                   *m3 = mk(SYSCALL_KIND_MEMORY, NULL, 7);
    struct syscall *mem[] = {m1, m2, m3};
    for (int i = 0; i < 3; i++) assert_int_equal(sched_submit(s, mem[i]), 0);
    for (int i = 0; i < 3; i++) {
        struct syscall *m = sched_next(s, SYSCALL_KIND_MEMORY, NULL, 0);
        assert_ptr_equal(m, mem[i]);
        sched_done(s, m);
        syscall_unref(mem[i]);
    }
    for (int i = 0; i < 4; i++) syscall_unref(all[i]);
    assert_int_equal(g_req_freed, 7);
}

/* ---- when an agent is expected back (the engine's eviction hint) ---- */

static void test_agents_next_llm(void **state)
{
    struct sched *s = *state;
    struct syscall *t1 = syscall_new(SYSCALL_KIND_TOOL, "tooly", NULL, NULL, NULL);
    struct syscall *t2 = syscall_new(SYSCALL_KIND_TOOL, "tooly", NULL, NULL, NULL);
    struct syscall *t3 = syscall_new(SYSCALL_KIND_TOOL, "vague", NULL, NULL, NULL);
    struct syscall *l1 = syscall_new(SYSCALL_KIND_LLM, "asking", NULL, NULL, NULL);
    struct syscall *all[] = {t1, t2, t3, l1};
    for (int i = 0; i < 4; i++) assert_int_equal(sched_submit(s, all[i]), 0);
    const char *who[] = {"tooly", "vague", "asking", "idle", NULL};
    int64_t back[5];
    /* tool calls still queued: nobody is waiting on a tool yet */
    int64_t t0 = util_now_us();
    sched_agents_next_llm(s, who, 5, back);
    assert_int_equal(back[0], -1);
    assert_int_equal(back[1], -1);
    assert_true(back[2] >= t0 && back[2] <= util_now_us()); /* an LLM call queued: now */
    assert_int_equal(back[3], -1);
    assert_int_equal(back[4], -1);
    for (int i = 0; i < 3; i++) assert_ptr_equal(sched_next(s, SYSCALL_KIND_TOOL, NULL, 0), all[i]);
    int64_t now = util_now_us();
    sched_set_expected_end(s, t1, now + 7200 * 1000000LL);
    sched_set_expected_end(s, t2, now + 3600 * 1000000LL);
    sched_agents_next_llm(s, who, 5, back);
    assert_int_equal(back[0], now + 3600 * 1000000LL); /* the soonest of its tools */
    assert_int_equal(back[1], SCHED_ETA_UNKNOWN); /* running, no estimate */
    /* an overdue tool is due now, not in the past */
    sched_set_expected_end(s, t2, now - 1000000);
    sched_agents_next_llm(s, who, 1, back);
    assert_true(back[0] >= now);
    /* the LLM call taken: that agent is no longer waiting to run */
    assert_ptr_equal(sched_next(s, SYSCALL_KIND_LLM, NULL, 0), l1);
    sched_agents_next_llm(s, who, 5, back);
    assert_int_equal(back[2], -1);
    for (int i = 0; i < 4; i++) {
        syscall_finish(all[i], NULL, NULL);
        sched_done(s, all[i]);
    }
    sched_agents_next_llm(s, who, 5, back);
    for (int i = 0; i < 5; i++) assert_int_equal(back[i], -1);
    for (int i = 0; i < 4; i++) syscall_unref(all[i]);
}

/* ---- pools: the read lane ---- */

static pthread_mutex_t g_gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_gate_cv = PTHREAD_COND_INITIALIZER;
static bool g_gate_open;
static int g_writes_running;

/* a write (target NULL) waits at the gate, as a write waits for its
 * fsync; a read (the read lane) finishes at once */
static void lane_exec(struct syscall *sc, void *ud)
{
    (void)ud;
    if (sc->target != SCHED_READ_LANE) {
        pthread_mutex_lock(&g_gate_mu);
        g_writes_running++;
        pthread_cond_broadcast(&g_gate_cv);
        while (!g_gate_open) pthread_cond_wait(&g_gate_cv, &g_gate_mu);
        pthread_mutex_unlock(&g_gate_mu);
    }
    syscall_finish(sc, NULL, NULL);
}

static bool is_final(struct syscall *sc)
{
    pthread_mutex_lock(&sc->mu);
    bool f = syscall_status_final(sc->status);
    pthread_mutex_unlock(&sc->mu);
    return f;
}

/* Every thread that takes any call is held by a write; reads still run,
 * on the reader threads, and a write queued behind waits for a free
 * thread of its own. Then the writes finish. */
static void test_pool_reads_pass_blocked_writes(void **state)
{
    struct sched *s = *state;
    struct sched_pool *p = NULL;
    g_gate_open = false;
    g_writes_running = 0;
    assert_int_equal(sched_pool_start(&p, s, SYSCALL_KIND_STORAGE, 2, 1, lane_exec, NULL), 0);
    struct syscall *w[3];
    for (int i = 0; i < 3; i++) {
        w[i] = mk(SYSCALL_KIND_STORAGE, NULL, i);
        assert_int_equal(sched_submit(s, w[i]), 0);
    }
    pthread_mutex_lock(&g_gate_mu);
    while (g_writes_running < 2) pthread_cond_wait(&g_gate_cv, &g_gate_mu);
    pthread_mutex_unlock(&g_gate_mu);
    struct syscall *r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = mk(SYSCALL_KIND_STORAGE, SCHED_READ_LANE, 10 + i);
        assert_int_equal(sched_submit(s, r[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        while (!is_final(r[i])) sleep_ms(1); /* served while both writers are held */
    assert_false(is_final(w[2]));            /* the reader never took a write */
    pthread_mutex_lock(&g_gate_mu);
    assert_int_equal(g_writes_running, 2);
    g_gate_open = true;
    pthread_cond_broadcast(&g_gate_cv);
    pthread_mutex_unlock(&g_gate_mu);
    for (int i = 0; i < 3; i++)
        while (!is_final(w[i])) sleep_ms(1);
    sched_shutdown(s);
    sched_pool_stop(p);
    for (int i = 0; i < 3; i++) syscall_unref(w[i]);
    for (int i = 0; i < 4; i++) syscall_unref(r[i]);
    assert_int_equal(g_req_freed, 7);
}

static void done_exec(struct syscall *sc, void *ud)
{
    (void)ud;
    syscall_finish(sc, NULL, NULL);
}

/* on the submitting thread it would have to wait: left to a pool thread */
static void pool_only_exec(struct syscall *sc, void *ud)
{
    (void)ud;
    if (!sc->running_here) syscall_finish(sc, NULL, NULL);
}

/* A cheap read runs on the thread that submits it when the kind's readers
 * would take it next; otherwise it is queued like any call: when a read
 * is already waiting (it would pass it), when it is a write, when it is
 * not marked cheap, when no executor is set, and after the pool's
 * executor is cleared. */
static void test_submit_here(void **state)
{
    struct sched *s = *state;
    bool taken = true;
    struct syscall *a = mk(SYSCALL_KIND_MEMORY, SCHED_READ_LANE, 1);
    a->run_here = true;
    assert_int_equal(sched_submit_here(s, a, &taken), 0); /* no executor yet */
    assert_false(taken);
    sched_set_here(s, SYSCALL_KIND_MEMORY, done_exec, NULL);
    struct syscall *b = mk(SYSCALL_KIND_MEMORY, SCHED_READ_LANE, 2);
    b->run_here = true;
    assert_int_equal(sched_submit_here(s, b, &taken), 0); /* would pass a */
    assert_false(taken);
    assert_ptr_equal(sched_next(s, SYSCALL_KIND_MEMORY, SCHED_READ_LANE, 0), a);
    sched_exec(s, a, done_exec, NULL);
    assert_ptr_equal(sched_next(s, SYSCALL_KIND_MEMORY, SCHED_READ_LANE, 0), b);
    sched_exec(s, b, done_exec, NULL);
    struct sched_stats st0;
    sched_get_stats(s, &st0);

    struct syscall *c = mk(SYSCALL_KIND_MEMORY, SCHED_READ_LANE, 3);
    c->run_here = true;
    assert_int_equal(sched_submit_here(s, c, &taken), 0);
    assert_true(taken);
    pthread_mutex_lock(&c->mu);
    assert_int_equal(c->status, SYSCALL_STATUS_RUNNING);
    pthread_mutex_unlock(&c->mu);
    assert_null(sched_next(s, SYSCALL_KIND_MEMORY, SCHED_READ_LANE, 0)); /* not queued */
    sched_run_here(s, c);
    assert_true(is_final(c));
    struct sched_stats st1;
    sched_get_stats(s, &st1);
    assert_int_equal(st1.n_submitted, st0.n_submitted + 1);
    assert_int_equal(st1.n_finished, st0.n_finished + 1);

    struct syscall *w = mk(SYSCALL_KIND_MEMORY, NULL, 4); /* a write */
    w->run_here = true;
    struct syscall *d = mk(SYSCALL_KIND_MEMORY, SCHED_READ_LANE, 5); /* not cheap */
    assert_int_equal(sched_submit_here(s, w, &taken), 0);
    assert_false(taken);
    assert_int_equal(sched_submit_here(s, d, &taken), 0);
    assert_false(taken);
    assert_ptr_equal(sched_next(s, SYSCALL_KIND_MEMORY, NULL, 0), w);
    sched_exec(s, w, done_exec, NULL);
    assert_ptr_equal(sched_next(s, SYSCALL_KIND_MEMORY, NULL, 0), d);
    sched_exec(s, d, done_exec, NULL);

    /* an executor that cannot serve it there hands it to the pool: queued
     * again, a reader takes it, and it counts as one call */
    sched_set_here(s, SYSCALL_KIND_MEMORY, pool_only_exec, NULL);
    struct syscall *f = mk(SYSCALL_KIND_MEMORY, SCHED_READ_LANE, 7);
    f->run_here = true;
    assert_int_equal(sched_submit_here(s, f, &taken), 0);
    assert_true(taken);
    sched_run_here(s, f);
    assert_false(is_final(f));
    pthread_mutex_lock(&f->mu);
    assert_int_equal(f->status, SYSCALL_STATUS_QUEUED);
    pthread_mutex_unlock(&f->mu);
    assert_ptr_equal(sched_next(s, SYSCALL_KIND_MEMORY, SCHED_READ_LANE, 0), f);
    sched_exec(s, f, pool_only_exec, NULL);
    assert_true(is_final(f));
    assert_int_equal(f->n_slices, 1); /* one run in its times, not two */
    struct sched_stats st2;
    sched_get_stats(s, &st2);
    assert_int_equal(st2.n_submitted, st1.n_submitted + 3);
    assert_int_equal(st2.n_finished, st1.n_finished + 3);

    sched_clear_here(s, SYSCALL_KIND_MEMORY);
    struct syscall *e = mk(SYSCALL_KIND_MEMORY, SCHED_READ_LANE, 6);
    e->run_here = true;
    assert_int_equal(sched_submit_here(s, e, &taken), 0);
    assert_false(taken);
    assert_ptr_equal(sched_next(s, SYSCALL_KIND_MEMORY, SCHED_READ_LANE, 0), e);
    sched_exec(s, e, done_exec, NULL);
    struct syscall *all[] = {a, b, c, w, d, f, e};
    for (int i = 0; i < 7; i++) {
        assert_true(is_final(all[i]));
        syscall_unref(all[i]);
    }
    assert_int_equal(g_req_freed, 7);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_find),
        cmocka_unit_test(test_create_default_policy),
        T(test_fifo_per_kind),
        T(test_fifo_refill_after_empty),
        T(test_agent_cap),
        T(test_agents_next_llm),
        T(test_target_filter),
        T(test_target_filter_threads),
        T(test_next_timeout),
        T(test_blocked_worker_wakes_on_submit),
        T(test_running_status_and_start),
        T(test_stats),
        T(test_shutdown_fails_queued),
        T(test_submit_after_shutdown),
        T(test_shutdown_wakes_blocked_workers),
        T(test_destroy_releases_queued),
        T(test_submit_invalid_kind),
        T(test_refcount_lifecycle),
        T(test_many_producers_workers),
        T(test_submit_here),
        T(test_pool_reads_pass_blocked_writes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
