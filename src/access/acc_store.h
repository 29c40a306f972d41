/* The access manager's durable state behind a small interface.
 *
 * The access manager keeps its decisions' inputs in memory (registered
 * agents' token digests, memory share grants, token budget counters) and
 * reads and writes them, and the audit log, only through a table of
 * functions, struct acc_store_ops; struct acc_store is an opaque handle
 * each implementation defines for itself:
 *   acc_store_sqlite    data_dir/audit.db (acc_store.c), the default
 *   acc_store_pg        a PostgreSQL database (acc_store_pg.c; state.backend
 *                       postgres, docs/postgres.md)
 * Every call is thread safe and is its own transaction; the calls return 0
 * or a negative AIOS_E* (AIOS_EIO for a failure of the store, with err
 * filled where there is one). Not for other modules. */
#ifndef AIOS_ACCESS_ACC_STORE_H
#define AIOS_ACCESS_ACC_STORE_H

#include "access/access.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct acc_store;

/* a registered agent: its name and the SHA-256 (hex) of its token */
struct acc_agent_row {
    char name[ACC_NAME_MAX];
    char sha[65];
    double created;
};

/* the token budget counter of one (agent, model) pair (budget.c) */
struct acc_budget_row {
    char agent[ACC_NAME_MAX], model[ACC_NAME_MAX];
    int64_t used, used_total;
    double window_start;
    int64_t n_calls, n_denied;
    int64_t reserved; /* running calls' reservations (shared stores only) */
};

/* One admission against a budget row, in one transaction (shared stores):
 * the window rolled if over, then `need` reserved when it fits the limit
 * (need = prompt + gen; with gen <= 0, all that is left, at least
 * prompt + 1). */
struct acc_budget_ask {
    const char *agent, *model;
    const char *kernel; /* this kernel's id: its reservation is held under it */
    int64_t limit, window_s, prompt, gen;
    double now;
};
struct acc_budget_answer {
    bool ok;
    int64_t need, used, reserved;
    double window_start;
    int64_t resv_id; /* the reservation's row, when ok */
};
/* A call's end, applied to its row (shared stores): its reservation
 * (resv_id; 0: none) released, n tokens charged (the window rolled first
 * if over), calls changed by calls_delta. */
struct acc_budget_settle {
    char agent[ACC_NAME_MAX], model[ACC_NAME_MAX];
    int64_t window_s, resv_id, n, calls_delta;
    double now;
};

/* a pending approval as several kernels share it (shared stores) */
struct acc_appr_row {
    int64_t id;
    uint64_t sc_id;
    const char *kernel, *agent, *tool, *args, *what, *kind; /* kind: storage, tool */
    double created, deadline;
};
/* a decision another kernel (or this one) wrote for one of ours */
struct acc_appr_decided {
    int64_t id;
    bool approved;
    char reason[256];
};

/* a memory share grant (ns.c) */
struct acc_grant_row {
    char owner[ACC_NAME_MAX], grantee[ACC_NAME_MAX];
    bool write;
    double created, expires; /* unix seconds; expires 0: never */
};

/* one audit row (audit.c) */
struct acc_audit_rec {
    double t;
    uint64_t syscall_id; /* 0: none */
    const char *agent, *resource, *action, *decision, *reason;
    const char *request_id; /* the x-request-id of the HTTP request; NULL: none */
};

struct acc_store_ops {
    const char *name;
    /* where: the SQLite file's path, or the PostgreSQL connection URL */
    int (*open)(struct acc_store **out, const char *where, char *err, size_t errlen);
    void (*close)(struct acc_store *s);
    /* what to name in messages (a path; a URL without its password) */
    const char *(*describe)(struct acc_store *s);

    /* every registered agent; *rows malloc'd (free()) */
    int (*agents)(struct acc_store *s, struct acc_agent_row **rows, size_t *n, char *err,
                  size_t errlen);
    /* insert or replace the agent's token digest */
    int (*agent_put)(struct acc_store *s, const struct acc_agent_row *r, char *err, size_t errlen);

    int (*budgets)(struct acc_store *s, struct acc_budget_row **rows, size_t *n, char *err,
                   size_t errlen);
    /* insert or replace these counters, one transaction */
    int (*budgets_put)(struct acc_store *s, const struct acc_budget_row *rows, size_t n,
                       char *err, size_t errlen);

    int (*grants)(struct acc_store *s, struct acc_grant_row **rows, size_t *n, char *err,
                  size_t errlen);
    int (*grant_put)(struct acc_store *s, const struct acc_grant_row *r, char *err, size_t errlen);
    int (*grant_delete)(struct acc_store *s, const char *owner, const char *grantee, char *err,
                        size_t errlen);

    /* Shared stores only (NULL for SQLite, whose counters are the access
     * manager's in memory): budgets enforced in the database, so several
     * kernels hold one limit */
    int (*budget_reserve)(struct acc_store *s, const struct acc_budget_ask *q,
                          struct acc_budget_answer *a, char *err, size_t errlen);
    int (*budget_settle)(struct acc_store *s, const struct acc_budget_settle *x, size_t n,
                         char *err, size_t errlen);
    /* Shared stores only: this kernel (id) is alive for lease_s more
     * seconds (the database's clock); kernels past their lease are
     * forgotten with their reservations and approvals (*n_gone: how many
     * reservations went, *tokens_gone their tokens); lease_s 0: this
     * kernel leaves (at a clean stop) */
    int (*kernel_beat)(struct acc_store *s, const char *kernel, int lease_s, int64_t *n_gone,
                       int64_t *tokens_gone, char *err, size_t errlen);

    /* Shared stores only: approvals every kernel sees and decides. put:
     * *id the new approval's id; list: the pending ones of live kernels
     * (acc_approvals_json's shape); decide: 0, AIOS_ENOTFOUND (none
     * pending or its kernel gone), AIOS_EINVAL (already decided); decided:
     * kernel's approvals decided and not yet ended (*rows malloc'd);
     * drop: the approval ended */
    int (*appr_put)(struct acc_store *s, const struct acc_appr_row *a, int64_t *id, char *err,
                    size_t errlen);
    int (*appr_list)(struct acc_store *s, json_t **out, char *err, size_t errlen);
    int (*appr_decide)(struct acc_store *s, int64_t id, bool approve, const char *reason,
                       char *err, size_t errlen);
    int (*appr_decided)(struct acc_store *s, const char *kernel, struct acc_appr_decided **rows,
                        size_t *n, char *err, size_t errlen);
    int (*appr_drop)(struct acc_store *s, int64_t id, char *err, size_t errlen);

    /* append rows to the audit log, one transaction */
    int (*audit_append)(struct acc_store *s, const struct acc_audit_rec *rows, size_t n,
                        char *err, size_t errlen);
    /* the newest `limit` rows (of agent, unless NULL; t >= since_s), oldest
     * first: [{"id","time","agent","syscall_id","resource","action",
     * "decision","reason","request_id"}] */
    int (*audit_query)(struct acc_store *s, const char *agent, double since_s, int limit,
                       json_t **out, char *err, size_t errlen);
};

extern const struct acc_store_ops acc_store_sqlite;
extern const struct acc_store_ops acc_store_pg;

#endif
