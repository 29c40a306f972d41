/* Worker pools for the non-LLM resource kinds.
 *
 * The LLM kind is served by each model's engine thread; memory, storage and
 * tool syscalls are served by a fixed pool of threads per kind, started by
 * the manager that executes them. A pool thread blocks in sched_next() for
 * its kind, runs the executor, and hands the syscall back with sched_done().
 * The first n_any threads take any call of the kind; the n_readers after
 * them take only calls on the read lane (SCHED_READ_LANE: memory and
 * storage reads), which therefore never wait behind writes (sched.h). The
 * executor of a pool with readers also runs the cheap reads that the
 * thread submitting them takes (sched_submit_here).
 * Threads exit when the scheduler shuts down (sched_next returns NULL). */
#include "sched/sched.h"

#include "util/err.h"
#include "util/log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

struct sched_pool {
    struct sched *s;
    enum syscall_kind kind;
    sched_exec_fn fn;
    void *ud;
    int n;
    pthread_t *threads;
};

char sched_read_lane;

static void run_lane(struct sched_pool *p, void *lane)
{
    struct syscall *sc;
    while ((sc = sched_next(p->s, p->kind, lane, -1))) sched_exec(p->s, sc, p->fn, p->ud);
}

/* "memory-w", "storage-r": the pool and lane in `top -H` and perf */
static void name_thread(const struct sched_pool *p, const char *lane)
{
    char name[16];
    snprintf(name, sizeof name, "%.7s-%s", syscall_kind_name(p->kind), lane);
    pthread_setname_np(pthread_self(), name);
}

static void *pool_main(void *arg)
{
    name_thread(arg, "w");
    run_lane(arg, NULL);
    return NULL;
}

static void *pool_main_reads(void *arg)
{
    name_thread(arg, "r");
    run_lane(arg, SCHED_READ_LANE);
    return NULL;
}

int sched_pool_start(struct sched_pool **out, struct sched *s, enum syscall_kind kind,
                     int n_threads, int n_readers, sched_exec_fn fn, void *ud)
{
    *out = NULL;
    if (n_threads <= 0 || n_readers < 0 || !fn || (unsigned)kind >= SYSCALL_KIND__COUNT)
        return AIOS_EINVAL;
    struct sched_pool *p = calloc(1, sizeof *p);
    if (!p) return AIOS_ENOMEM;
    p->threads = calloc((size_t)n_threads + (size_t)n_readers, sizeof *p->threads);
    if (!p->threads) {
        free(p);
        return AIOS_ENOMEM;
    }
    p->s = s;
    p->kind = kind;
    p->fn = fn;
    p->ud = ud;
    for (; p->n < n_threads + n_readers; p->n++) {
        if (pthread_create(&p->threads[p->n], NULL, p->n < n_threads ? pool_main : pool_main_reads,
                           p) != 0) {
            sched_shutdown(s);
            sched_pool_stop(p);
            return AIOS_ENOMEM;
        }
    }
    if (n_readers > 0) sched_set_here(s, kind, fn, ud);
    *out = p;
    return 0;
}

void sched_pool_stop(struct sched_pool *p)
{
    if (!p) return;
    sched_clear_here(p->s, p->kind);
    for (int i = 0; i < p->n; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    free(p);
}
