/* The scheduler.
 *
 * Four resource queues (llm, memory, storage, tool), each an intrusive list
 * of syscalls ordered by the configured policy. HTTP threads submit; worker
 * threads (an LLM engine per model, later small pools for the other kinds)
 * block in sched_next() until their queue has work for them.
 *
 * Locking: one mutex for the whole scheduler plus one condvar per kind. The
 * mutex is never held while calling out (notify callbacks, workers); a
 * syscall's own mutex is taken only after releasing ours, so no two locks
 * are held at once.
 *
 * Status: sched_submit sets QUEUED; sched_next sets RUNNING and the first
 * start time before returning. Final states are set by the worker through
 * syscall_finish/syscall_fail; sched_shutdown fails what is still queued. */
#include "sched/sched.h"

#include "util/err.h"
#include "util/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct sched {
    const struct sched_policy *policy;
    pthread_mutex_t mu;
    pthread_cond_t cv[SYSCALL_KIND__COUNT];
    struct sched_queue q[SYSCALL_KIND__COUNT];
    size_t n_running[SYSCALL_KIND__COUNT];
    uint64_t n_submitted, n_finished;
    bool stopping;
};

/* ---- FIFO: arrival order, no preemption (AIOS's default) ---- */

static void fifo_push(struct sched_queue *q, struct syscall *sc)
{
    sc->next = NULL;
    if (q->tail) q->tail->next = sc;
    else q->head = sc;
    q->tail = sc;
    q->n++;
}

static struct syscall *fifo_pick(struct sched_queue *q, void *target)
{
    struct syscall *prev = NULL;
    for (struct syscall *sc = q->head; sc; prev = sc, sc = sc->next) {
        if (target && sc->target != target) continue;
        if (prev) prev->next = sc->next;
        else q->head = sc->next;
        if (q->tail == sc) q->tail = prev;
        sc->next = NULL;
        q->n--;
        return sc;
    }
    return NULL;
}

const struct sched_policy sched_policy_fifo = {"fifo", fifo_push, fifo_pick};

const struct sched_policy *sched_policy_find(const char *name)
{
    if (!name || !strcmp(name, "fifo")) return &sched_policy_fifo;
    return NULL;
}

int sched_create(struct sched **out, const struct sched_policy *policy)
{
    *out = NULL;
    struct sched *s = calloc(1, sizeof *s);
    if (!s) return AIOS_ENOMEM;
    s->policy = policy ? policy : &sched_policy_fifo;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    for (int k = 0; k < SYSCALL_KIND__COUNT; k++) pthread_cond_init(&s->cv[k], &ca);
    pthread_condattr_destroy(&ca);
    *out = s;
    return 0;
}

void sched_destroy(struct sched *s)
{
    if (!s) return;
    sched_shutdown(s);
    for (int k = 0; k < SYSCALL_KIND__COUNT; k++) pthread_cond_destroy(&s->cv[k]);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int sched_submit(struct sched *s, struct syscall *sc)
{
    if ((unsigned)sc->kind >= SYSCALL_KIND__COUNT) return AIOS_EINVAL;
    syscall_ref(sc);
    /* QUEUED must be set before a worker can see the call (it sets RUNNING
     * after picking it), and sc->mu is never held with ours, so set it
     * first and undo it if the call is refused: a refused call is in no
     * queue, and nobody would ever move it out of QUEUED. */
    pthread_mutex_lock(&sc->mu);
    enum syscall_status prev = sc->status;
    sc->status = SYSCALL_STATUS_QUEUED;
    pthread_mutex_unlock(&sc->mu);

    pthread_mutex_lock(&s->mu);
    if (s->stopping) {
        pthread_mutex_unlock(&s->mu);
        pthread_mutex_lock(&sc->mu);
        if (sc->status == SYSCALL_STATUS_QUEUED) sc->status = prev;
        pthread_mutex_unlock(&sc->mu);
        syscall_unref(sc);
        return AIOS_ESHUTDOWN;
    }
    s->policy->push(&s->q[sc->kind], sc);
    s->n_submitted++;
    pthread_cond_broadcast(&s->cv[sc->kind]);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

struct syscall *sched_next(struct sched *s, enum syscall_kind kind, void *target, int timeout_ms)
{
    struct timespec deadline;
    if (timeout_ms >= 0) {
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    struct syscall *sc = NULL;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->stopping) break;
        sc = s->policy->pick(&s->q[kind], target);
        if (sc) {
            s->n_running[kind]++;
            break;
        }
        if (timeout_ms < 0) {
            pthread_cond_wait(&s->cv[kind], &s->mu);
        } else if (pthread_cond_timedwait(&s->cv[kind], &s->mu, &deadline) == ETIMEDOUT) {
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (!sc) return NULL;

    pthread_mutex_lock(&sc->mu);
    if (!syscall_status_final(sc->status)) sc->status = SYSCALL_STATUS_RUNNING;
    if (!sc->t_start_us) sc->t_start_us = util_now_us();
    pthread_mutex_unlock(&sc->mu);
    return sc;
}

void sched_done(struct sched *s, struct syscall *sc)
{
    pthread_mutex_lock(&s->mu);
    if (s->n_running[sc->kind]) s->n_running[sc->kind]--;
    s->n_finished++;
    pthread_mutex_unlock(&s->mu);
    syscall_unref(sc);
}

void sched_shutdown(struct sched *s)
{
    struct syscall *drained = NULL;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    for (int k = 0; k < SYSCALL_KIND__COUNT; k++) {
        struct syscall *sc;
        while ((sc = s->policy->pick(&s->q[k], NULL))) {
            sc->next = drained;
            drained = sc;
        }
        pthread_cond_broadcast(&s->cv[k]);
    }
    pthread_mutex_unlock(&s->mu);
    while (drained) {
        struct syscall *sc = drained;
        drained = sc->next;
        sc->next = NULL;
        syscall_fail(sc, AIOS_ESHUTDOWN, 503, "the kernel is shutting down");
        syscall_unref(sc);
    }
}

bool sched_stopping(struct sched *s)
{
    pthread_mutex_lock(&s->mu);
    bool r = s->stopping;
    pthread_mutex_unlock(&s->mu);
    return r;
}

void sched_get_stats(struct sched *s, struct sched_stats *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&s->mu);
    for (int k = 0; k < SYSCALL_KIND__COUNT; k++) {
        out->n_queued[k] = s->q[k].n;
        out->n_running[k] = s->n_running[k];
    }
    out->n_submitted = s->n_submitted;
    out->n_finished = s->n_finished;
    out->policy = s->policy->name;
    pthread_mutex_unlock(&s->mu);
}
