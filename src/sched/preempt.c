/* The preemption driver: the rr and fair policies acting on the embedded
 * engines.
 *
 * The engine (llm/llama.c) admits calls with sched_next() while it has a
 * free sequence slot, so the policy's order already decides who gets in.
 * What it cannot decide alone is to take a slot away: that is this thread.
 * Every tick (a quarter of scheduler.time_slice_ms, between 5 and 50 ms) it
 * looks at each local engine:
 *   - it charges every running call its share of the engine time since the
 *     last tick (sched_charge), so the fair order sees service while long
 *     calls run, not only when they end;
 *   - when a call waits for the engine (sched_peek) and the engine's batch
 *     is full (n_running == n_parallel), it picks victims: under rr every
 *     running call whose slice expired (at most as many as wait), under fair
 *     the one sched_pick_victim() names (at most one per tick);
 *   - it asks the engine to switch each victim out (llm_engine_preempt with
 *     a hold of one step): the engine snapshots its KV cells, frees the
 *     slot, admits the next call from the scheduler, and later restores the
 *     victim where it stopped, ahead of newer admissions;
 *   - sched_note_switch() counts the context switch and restarts the
 *     victim's slice, so it is not chosen again before it ran a slice.
 *
 * Threads: one thread of its own, started by sched_preemptor_start() after
 * the engines run and joined by sched_shutdown() before the engines stop.
 * It holds no lock while calling the engine or the scheduler; both calls it
 * makes are safe from any thread. */
#include "sched/sched.h"

#include "llm/core.h"
#include "llm/engine.h"
#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_RUNNING 256

struct sched_preemptor {
    struct sched *s;
    struct llm_core **cores;
    _Atomic size_t *n_cores; /* the kernel's; grows on refresh */
    int64_t tick_us;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
};

static bool is_suspended(struct syscall *sc)
{
    pthread_mutex_lock(&sc->mu);
    bool r = sc->status == SYSCALL_STATUS_SUSPENDED;
    pthread_mutex_unlock(&sc->mu);
    return r;
}

static void switch_out(struct sched_preemptor *p, struct llm_core *c, struct syscall *victim,
                       const char *why)
{
    if (llm_engine_preempt(c, victim->id, 1) != 0) return;
    sched_note_switch(p->s, victim);
    LOG_DEBUG("sched", "%s: preempting call %llu of %s (%s)", c->name,
              (unsigned long long)victim->id, victim->agent, why);
}

static void drive_core(struct sched_preemptor *p, struct llm_core *c, int64_t dt_us)
{
    struct sched *s = p->s;
    const struct sched_policy *pol = sched_get_policy(s);
    struct syscall *run[MAX_RUNNING];
    size_t n = sched_running_calls(s, SYSCALL_KIND_LLM, c, run, MAX_RUNNING);
    /* who actually holds a slot now */
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (is_suspended(run[i])) syscall_unref(run[i]);
        else run[m++] = run[i];
    }
    for (size_t i = 0; i < m; i++) sched_charge(s, run[i], 0, dt_us / (int64_t)m);

    struct syscall *w = sched_peek(s, SYSCALL_KIND_LLM, c);
    struct llm_engine_stats st;
    if (!w || llm_engine_get_stats(c, &st) != 0 || st.n_running < st.n_parallel) goto out;
    if (pol->slice_expired) {
        struct sched_stats ss;
        sched_get_stats(s, &ss);
        size_t budget = ss.n_queued[SYSCALL_KIND_LLM];
        for (size_t i = 0; i < m && budget > 0; i++) {
            if (!sched_slice_expired(s, run[i])) continue;
            switch_out(p, c, run[i], "slice expired");
            budget--;
        }
    } else if (pol->should_preempt) {
        struct syscall *v = sched_pick_victim(s, run, m, w);
        if (v) switch_out(p, c, v, "a less-served or higher-priority call waits");
    }
out:
    if (w) syscall_unref(w);
    for (size_t i = 0; i < m; i++) syscall_unref(run[i]);
}

static void *preemptor_main(void *arg)
{
    struct sched_preemptor *p = arg;
    int64_t last = util_now_us();
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = (int64_t)ts.tv_nsec + p->tick_us * 1000;
        ts.tv_sec += (time_t)(ns / 1000000000);
        ts.tv_nsec = (long)(ns % 1000000000);
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        if (p->stop) break;
        pthread_mutex_unlock(&p->mu);
        int64_t now = util_now_us();
        size_t n_cores = *p->n_cores;
        for (size_t i = 0; i < n_cores; i++)
            if (llm_engine_is_local(p->cores[i])) drive_core(p, p->cores[i], now - last);
        last = now;
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int sched_preemptor_start(struct sched *s, struct llm_core **cores, _Atomic size_t *n_cores)
{
    const struct sched_policy *pol = sched_get_policy(s);
    if (!pol->should_preempt) return 0; /* fifo: nothing to drive */
    struct sched_preemptor *p = calloc(1, sizeof *p);
    if (!p) return AIOS_ENOMEM;
    p->s = s;
    p->cores = cores;
    p->n_cores = n_cores;
    struct sched_tuning t;
    sched_get_tuning(s, &t);
    p->tick_us = t.time_slice_us / 4;
    if (p->tick_us < 5000) p->tick_us = 5000;
    if (p->tick_us > 50000) p->tick_us = 50000;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&p->thread, NULL, preemptor_main, p) != 0) {
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->mu);
        free(p);
        return AIOS_ENOMEM;
    }
    sched_attach_preemptor(s, p);
    return 0;
}

void sched_preemptor_stop(struct sched_preemptor *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
