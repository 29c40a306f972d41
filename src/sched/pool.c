/* Worker pools for the non-LLM resource kinds.
 *
 * The LLM kind is served by each model's engine thread; memory, storage and
 * tool syscalls are served by a fixed pool of threads per kind, started by
 * the manager that executes them. A pool thread blocks in sched_next() for
 * its kind, runs the executor, and hands the syscall back with sched_done().
 * Threads exit when the scheduler shuts down (sched_next returns NULL). */
#include "sched/sched.h"

#include "util/err.h"
#include "util/log.h"

#include <pthread.h>
#include <stdlib.h>

struct sched_pool {
    struct sched *s;
    enum syscall_kind kind;
    sched_exec_fn fn;
    void *ud;
    int n;
    pthread_t *threads;
};

static void *pool_main(void *arg)
{
    struct sched_pool *p = arg;
    struct syscall *sc;
    while ((sc = sched_next(p->s, p->kind, NULL, -1))) {
        p->fn(sc, p->ud);
        pthread_mutex_lock(&sc->mu);
        bool final = syscall_status_final(sc->status);
        pthread_mutex_unlock(&sc->mu);
        if (!final) {
            LOG_ERROR("sched", "%s executor left syscall %llu unfinished",
                      syscall_kind_name(p->kind), (unsigned long long)sc->id);
            syscall_fail(sc, AIOS_EENGINE, 500, "internal error: the %s executor did not answer",
                         syscall_kind_name(p->kind));
        }
        sched_done(p->s, sc);
    }
    return NULL;
}

int sched_pool_start(struct sched_pool **out, struct sched *s, enum syscall_kind kind,
                     int n_threads, sched_exec_fn fn, void *ud)
{
    *out = NULL;
    if (n_threads <= 0 || !fn || (unsigned)kind >= SYSCALL_KIND__COUNT) return AIOS_EINVAL;
    struct sched_pool *p = calloc(1, sizeof *p);
    if (!p) return AIOS_ENOMEM;
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    if (!p->threads) {
        free(p);
        return AIOS_ENOMEM;
    }
    p->s = s;
    p->kind = kind;
    p->fn = fn;
    p->ud = ud;
    for (; p->n < n_threads; p->n++) {
        if (pthread_create(&p->threads[p->n], NULL, pool_main, p) != 0) {
            sched_shutdown(s);
            sched_pool_stop(p);
            return AIOS_ENOMEM;
        }
    }
    *out = p;
    return 0;
}

void sched_pool_stop(struct sched_pool *p)
{
    if (!p) return;
    for (int i = 0; i < p->n; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    free(p);
}
