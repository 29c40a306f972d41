/* The cluster manager's durable state behind a small interface: which
 * kernel retains each agent's conversation with each model (KV affinity).
 *
 * As for the other managers (mem_store.h, sto_store.h, acc_store.h), the
 * manager reaches its rows only through struct clu_store_ops; struct
 * clu_store is each implementation's own handle:
 *   clu_store_pg   a PostgreSQL table (clu_store_pg.c), the one every
 *                  kernel of a cluster shares
 * A single kernel (SQLite state) has no peers and keeps no affinity: the
 * cluster needs state.backend postgres (config.c), so there is no SQLite
 * implementation. Every call is thread safe and its own transaction; 0 or
 * a negative AIOS_E* (AIOS_EIO: the store failed; logged). Not for other
 * modules. */
#ifndef AIOS_CLUSTER_CLU_STORE_H
#define AIOS_CLUSTER_CLU_STORE_H

#include <stddef.h>

struct clu_store;

#define CLU_NAME_MAX 128

struct clu_affinity {
    char kernel[CLU_NAME_MAX]; /* the kernel that retains the conversation */
    double updated;            /* unix seconds it last served a call of it */
};

struct clu_store_ops {
    int (*open)(struct clu_store **out, const char *url, char *err, size_t errlen);
    void (*close)(struct clu_store *s);
    /* the row of (agent, model): 0, AIOS_ENOTFOUND (none), AIOS_EIO */
    int (*get)(struct clu_store *s, const char *agent, const char *model, struct clu_affinity *out);
    /* set (agent, model) -> kernel at time `now` (insert or replace) */
    int (*put)(struct clu_store *s, const char *agent, const char *model, const char *kernel,
               double now);
};

extern const struct clu_store_ops clu_store_pg;

#endif
