/* Internals shared by the access manager's files (not for other modules). */
#ifndef AIOS_ACCESS_ACC_INT_H
#define AIOS_ACCESS_ACC_INT_H

#include "access/acc_store.h"
#include "access/access.h"

#include <pthread.h>

struct syscall;

struct reg_agent {
    char name[ACC_NAME_MAX];
    char sha[65];
};

enum appr_state { APPR_PENDING, APPR_APPROVED, APPR_DENIED };

/* A pending approval. Tool calls wait for it on their tool thread; a
 * storage call is parked (parked_sc set, never queued) and the approval
 * thread queues or fails it once it is decided (budget.c has none of it:
 * see approve.c). */
struct approval {
    struct approval *next;
    uint64_t id, sc_id;
    char agent[ACC_NAME_MAX];
    char tool[ACC_NAME_MAX]; /* tool name, or "storage:OP" */
    char *args;              /* compact JSON */
    char what[384];          /* what is asked, for people */
    double created, deadline;
    enum appr_state state;
    char reason[256];
    struct syscall *parked_sc; /* a reference; NULL for tool approvals */
};

struct acc_budget_use; /* budget.c */

struct acc_mgr {
    struct agent_factory *agents; /* from acc_deps (each may be NULL) */
    struct sched *sched;
    struct sto *storage;
    bool compat;
    char admin_token[65];
    struct acc_audit *audit;
    const struct acc_store_ops *sops; /* the durable state (acc_store.h) */
    struct acc_store *store;
    bool shared; /* the store is shared with other kernels (PostgreSQL) */
    /* shared store: this process's id among the kernels (random, new at
     * every start) and its lease (state.lease_s) */
    char kernel_id[33];
    int lease_s;
    json_t *groups; /* access.groups (copy) or NULL */
    json_t *agent_groups; /* access.agents (copy) or NULL */
    char *default_group;
    int approval_timeout_s;
    bool approve_delete, approve_overwrite; /* access.approvals.storage_* */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* approvals decided (CLOCK_MONOTONIC) */
    struct reg_agent *reg;
    size_t n_reg, cap_reg;
    /* counts this kernel's own changes to reg (acc_register_agent): a
     * reload whose read began before one of them keeps reg as it is, or
     * it would undo a registration (or bring a replaced token back) until
     * the next reload */
    uint64_t reg_gen;
    struct approval *approvals;
    uint64_t next_approval;
    bool stopping;
    /* approve.c: the thread that ends parked storage approvals */
    pthread_t appr_th;
    bool appr_th_started;
    /* budget.c: leaf lock of its own (never held with mu) */
    pthread_mutex_t bmu;
    struct acc_budget_use *uses;
    struct acc_budget_resv *resv;
    /* shared store: calls' ends not yet applied to the database */
    struct acc_budget_settle *settles;
    size_t n_settles, cap_settles;
    /* namespace grants of memory (ns.c), guarded by mu */
    struct acc_mem_grant *mem_grants;
};

/* how often a kernel sharing its store reloads agents and grants, renews
 * its lease and reads decisions of its approvals */
#define SHARED_REFRESH_MS 250

double acc_wall_s(void);
/* (re)load the registered agents from the store */
int acc_reg_load(struct acc_mgr *m, char *err, size_t errlen);
/* queue one audit row */
void acc_audit_row(struct acc_mgr *m, const char *agent, uint64_t sc_id, const char *resource,
                   const char *action, const char *decision, const char *reason);
/* refuse: fill d (status, type, message; its audit row: agent, target,
 * operation, "denied", message) and queue the row */
void acc_refuse(struct acc_mgr *m, struct acc_decision *d, unsigned status, const char *type,
                const char *agent, uint64_t sc_id, const char *target, const char *operation,
                const char *fmt, ...) __attribute__((format(printf, 9, 10)));
/* refuse without an audit row (the server's own failures) */
void acc_refuse_plain(struct acc_decision *d, unsigned status, const char *type,
                      const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* the agent's group object (NULL: unrestricted) and its name */
json_t *acc_group_of(struct acc_mgr *m, const char *agent, const char **gname);

/* budget.c */
int acc_budget_config(json_t *group, const char *gname, char *err, size_t errlen);
void acc_budget_free(struct acc_mgr *m);
/* counters from / to the store (save: what changed) */
int acc_budget_load(struct acc_mgr *m, char *err, size_t errlen);
void acc_budget_save(struct acc_mgr *m);
/* shared store: apply the queued ends of calls to the database */
void acc_budget_flush(struct acc_mgr *m);
/* LLM calls of an agent token: reserve the call's tokens, or refuse
 * (-1 with d: 429, or 500 out of memory); 0 to queue it */
int acc_budget_admit(struct acc_mgr *m, struct syscall *sc, struct acc_decision *d);

/* shared store: renew this kernel's lease, forget dead kernels (logged) */
void acc_kernel_beat(struct acc_mgr *m);

/* approve.c */
int acc_approvals_start(struct acc_mgr *m, char *err, size_t errlen);
/* shared store: a new approval's row (its id into a->id); AIOS_EIO (logged) */
int acc_appr_share(struct acc_mgr *m, struct approval *a, const char *kind);
/* shared store: the approval ended (its row goes) */
void acc_appr_unshare(struct acc_mgr *m, uint64_t id);
/* deny every parked approval and join the thread */
void acc_approvals_stop(struct acc_mgr *m);

/* ns.c */
int acc_ns_config(json_t *group, const char *gname, char *err, size_t errlen);
/* (re)load the memory grants from the store */
int acc_ns_load(struct acc_mgr *m, char *err, size_t errlen);
void acc_ns_free(struct acc_mgr *m);

#endif
