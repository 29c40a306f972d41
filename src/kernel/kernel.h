/* The kernel: the one global object tying config, scheduler, LLM cores and
 * the API server together. kernel.c has its functions, boot.c builds it. */
#ifndef AIOS_KERNEL_KERNEL_H
#define AIOS_KERNEL_KERNEL_H

#include "kernel/config.h"
#include "llm/core.h"
#include "sched/sched.h"

#include <stdint.h>

struct api_server;
struct mem_manager;
struct sto;
struct tool_mgr;
struct acc_mgr;
struct clu_mgr;
struct emb;
struct resp_mgr;
struct hub;

struct kernel {
    struct aios_config cfg;
    struct sched *sched;
    /* room for KERNEL_MAX_CORES; only appended to (kernel/models.c): any
     * thread may walk cores[0..n_cores) without a lock; retired cores stay
     * valid until kernel_stop */
    struct llm_core **cores;
    _Atomic size_t n_cores;
    struct api_server *api;
    int port; /* the port the API listens on, once it does (boot.c) */
    /* worker pools for memory, storage, tool syscalls (NULL where no
     * manager registered one); see kernel_register_executor() */
    struct sched_pool *pools[SYSCALL_KIND__COUNT];
    struct mem_manager *memory; /* memory manager (src/memory), NULL until started */
    struct sto *storage; /* storage manager (src/storage), NULL until started */
    struct tool_mgr *tools; /* tool manager (src/tools), NULL until started */
    struct acc_mgr *access; /* access manager (src/access), NULL until started */
    struct clu_mgr *cluster; /* KV affinity with peer kernels (src/cluster), NULL without cluster: */
    struct hub *hub; /* the local tool and agent hub (src/hub), NULL until started */
    struct emb *embed; /* embedding model (src/llm/embed.c), NULL when none is configured */
    struct resp_mgr *responses; /* stored responses of /v1/responses (src/resp), NULL until started */
    struct llm_core *embed_core; /* its core for POST /v1/embeddings (embed_core.c), or NULL */
    int64_t t_start_us;
    const char *version;
    /* agents as processes (src/agents/): process table, accounting */
    struct agent_factory *agents;
    /* the config file given with --config, or NULL (POST /core/refresh) */
    const char *config_path;
    /* the live model table's state (kernel/models.c) */
    struct kernel_models *models;
};

/* models served at once over the kernel's life, retired ones included */
#define KERNEL_MAX_CORES 256

/* Build everything from k->cfg (already loaded) and start serving.
 * 0 or negative AIOS_E* with a message in err. */
int kernel_start(struct kernel *k, char *err, size_t errlen);
/* Stop accepting, finish or fail in-flight calls, join threads, free. */
void kernel_stop(struct kernel *k);
/* the serving (not retired) core named name, or NULL */
struct llm_core *kernel_find_core(struct kernel *k, const char *name);
/* the first serving core (the default model), or NULL */
struct llm_core *kernel_default_core(struct kernel *k);
/* For managers, during kernel_start: serve syscalls of `kind` with
 * n_threads workers calling fn(sc, ud), and n_readers more that take only
 * reads (calls whose target is SCHED_READ_LANE). One executor per kind. */
int kernel_register_executor(struct kernel *k, enum syscall_kind kind, int n_threads,
                             int n_readers, sched_exec_fn fn, void *ud);
/* bound port (useful with port 0) */
int kernel_port(struct kernel *k);

#define AIOS_VERSION "0.1.0"

#endif
