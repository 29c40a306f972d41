/* The cluster's PostgreSQL store (clu_store_pg; see clu_store.h): one
 * table every kernel of a cluster shares,
 *   clu_affinity(agent, model, kernel, updated, PRIMARY KEY(agent, model))
 * read once per LLM call a kernel receives for a registered agent, written
 * when a call is served by a kernel other than the one the row names (or
 * the row is a minute old). Each call takes a pooled connection
 * (util/pg.h) and is one statement. */
#include "cluster/clu_store.h"

#include "util/err.h"
#include "util/pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct clu_store {
    struct pg_pool *pool;
};

static const char k_schema[] =
    "CREATE TABLE IF NOT EXISTS clu_affinity(agent TEXT NOT NULL, model TEXT NOT NULL,"
    " kernel TEXT NOT NULL, updated DOUBLE PRECISION NOT NULL, PRIMARY KEY(agent, model));";

static int pq_open(struct clu_store **out, const char *url, char *err, size_t errlen)
{
    *out = NULL;
    struct clu_store *s = calloc(1, sizeof *s);
    if (!s) return AIOS_ENOMEM;
    int rc = pg_pool_open(&s->pool, url, "cluster", k_schema, err, errlen);
    if (rc) {
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

static void pq_close(struct clu_store *s)
{
    if (!s) return;
    pg_pool_close(s->pool);
    free(s);
}

static int pq_get(struct clu_store *s, const char *agent, const char *model,
                  struct clu_affinity *out)
{
    PGconn *c = pg_take(s->pool);
    const char *v[2] = {agent, model};
    PGresult *r = c ? pg_q(c, "read the KV affinity",
                           "SELECT kernel, updated FROM clu_affinity WHERE agent=$1 AND model=$2",
                           2, v)
                    : NULL;
    pg_give(s->pool, c);
    if (!r) return AIOS_EIO;
    int rc = AIOS_ENOTFOUND;
    if (PQntuples(r) == 1) {
        snprintf(out->kernel, sizeof out->kernel, "%s", pg_get_s(r, 0, 0));
        out->updated = pg_get_dbl(r, 0, 1);
        rc = 0;
    }
    PQclear(r);
    return rc;
}

static int pq_put(struct clu_store *s, const char *agent, const char *model, const char *kernel,
                  double now)
{
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    char b[32];
    const char *v[4] = {agent, model, kernel, pg_dbl(b, now)};
    int rc = pg_exec(c, "record the KV affinity",
                     "INSERT INTO clu_affinity(agent, model, kernel, updated) VALUES($1,$2,$3,$4)"
                     " ON CONFLICT (agent, model) DO UPDATE SET kernel=EXCLUDED.kernel,"
                     " updated=EXCLUDED.updated",
                     4, v);
    pg_give(s->pool, c);
    return rc;
}

const struct clu_store_ops clu_store_pg = {
    .open = pq_open,
    .close = pq_close,
    .get = pq_get,
    .put = pq_put,
};
