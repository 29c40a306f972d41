/* The kernel's own functions for the layers above it: finding a model's
 * core, the default core, and registering a manager's worker pool. The
 * lifecycle that builds and wires everything is boot.c. */
#include "kernel/kernel.h"

#include "llm/core.h"
#include "sched/sched.h"
#include "util/err.h"

#include <string.h>

struct llm_core *kernel_find_core(struct kernel *k, const char *name)
{
    size_t n = k->n_cores;
    for (size_t i = 0; i < n; i++)
        if (!k->cores[i]->retired && !strcmp(k->cores[i]->name, name)) return k->cores[i];
    return NULL;
}

struct llm_core *kernel_default_core(struct kernel *k)
{
    size_t n = k->n_cores;
    for (size_t i = 0; i < n; i++)
        if (!k->cores[i]->retired) return k->cores[i];
    return NULL;
}

int kernel_port(struct kernel *k) { return k->port; }

int kernel_register_executor(struct kernel *k, enum syscall_kind kind, int n_threads,
                             int n_readers, sched_exec_fn fn, void *ud)
{
    if ((unsigned)kind >= SYSCALL_KIND__COUNT || kind == SYSCALL_KIND_LLM) return AIOS_EINVAL;
    if (k->pools[kind]) return AIOS_EBUSY;
    return sched_pool_start(&k->pools[kind], k->sched, kind, n_threads, n_readers, fn,
                            ud);
}
