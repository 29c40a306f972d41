/* The scheduler: one queue per resource kind, a policy that orders each
 * queue. See sched.c. */
#ifndef AIOS_SCHED_SCHED_H
#define AIOS_SCHED_SCHED_H

#include "kernel/syscall.h"

#include <stddef.h>
#include <stdint.h>

struct sched_queue;

/* A policy decides order. push() links a syscall in; pick() unlinks and
 * returns the next one for `target` (any target when NULL), or NULL. Both
 * are called with the queue lock held and must not block. */
struct sched_policy {
    const char *name;
    void (*push)(struct sched_queue *q, struct syscall *sc);
    struct syscall *(*pick)(struct sched_queue *q, void *target);
};

struct sched_queue {
    struct syscall *head, *tail;
    size_t n;
};

struct sched_stats {
    size_t n_queued[SYSCALL_KIND__COUNT];
    size_t n_running[SYSCALL_KIND__COUNT];
    uint64_t n_submitted, n_finished;
    const char *policy;
};

struct sched;

extern const struct sched_policy sched_policy_fifo;
/* "fifo" (the only policy so far); NULL for an unknown name */
const struct sched_policy *sched_policy_find(const char *name);

int sched_create(struct sched **out, const struct sched_policy *policy);
void sched_destroy(struct sched *s);

/* Queue a syscall. The scheduler takes its own reference. Returns
 * AIOS_ESHUTDOWN once sched_shutdown() was called. */
int sched_submit(struct sched *s, struct syscall *sc);

/* Worker side: wait up to timeout_ms (-1: forever) for the next syscall of
 * `kind` for `target` (NULL: any). Returns it marked RUNNING; the worker owns
 * the scheduler's reference and must call sched_done() when it is final.
 * NULL on timeout or shutdown. */
struct syscall *sched_next(struct sched *s, enum syscall_kind kind, void *target, int timeout_ms);
void sched_done(struct sched *s, struct syscall *sc);

/* Stop accepting work, fail everything still queued with AIOS_ESHUTDOWN,
 * and wake every waiting worker. Running calls finish on their own. */
void sched_shutdown(struct sched *s);
bool sched_stopping(struct sched *s);

void sched_get_stats(struct sched *s, struct sched_stats *out);

/* A small pool of worker threads for one resource kind (memory, storage,
 * tool). Each thread takes the next syscall of that kind and calls fn, which
 * must end it with syscall_finish() or syscall_fail() (the pool fails it
 * with a 500 if fn forgot). fn may block (disk, subprocess), which is why
 * these kinds get threads of their own and never run on HTTP threads. */
typedef void (*sched_exec_fn)(struct syscall *sc, void *ud);
struct sched_pool;
int sched_pool_start(struct sched_pool **out, struct sched *s, enum syscall_kind kind,
                     int n_threads, sched_exec_fn fn, void *ud);
/* join the threads; call after sched_shutdown() */
void sched_pool_stop(struct sched_pool *p);

#endif
