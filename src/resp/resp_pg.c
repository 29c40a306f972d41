/* The PostgreSQL store of the responses manager (resp_store_pg; see
 * resp.h; state.backend postgres, docs/postgres.md). One table, the same
 * shape as the SQLite store's:
 *
 *   resp_responses(id TEXT PRIMARY KEY, agent TEXT NOT NULL, prev_id TEXT,
 *                  model TEXT NOT NULL, created_at BIGINT NOT NULL,
 *                  input TEXT NOT NULL, response TEXT NOT NULL)
 *
 * input and response are JSON text (text, not jsonb: they are stored and
 * returned as answered, never queried inside). Every read and delete names
 * the agent in its WHERE clause, so another agent's row is absent, like
 * an unknown id. Several kernels on one database see every stored
 * response, so a chain made on one kernel is continued on any other.
 *
 * Each call takes a pooled connection (util/pg.h) for its duration and is
 * one statement (autocommit): a response is acknowledged only after its
 * row committed. No lock of its own. */
#include "resp/resp.h"

#include "util/err.h"
#include "util/log.h"
#include "util/pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct resp_store {
    struct pg_pool *pool;
};

static const char k_schema[] =
    "CREATE TABLE IF NOT EXISTS resp_responses(id TEXT PRIMARY KEY, agent TEXT NOT NULL,"
    " prev_id TEXT, model TEXT NOT NULL, created_at BIGINT NOT NULL, input TEXT NOT NULL,"
    " response TEXT NOT NULL);";

static int pq_open(struct resp_store **out, const char *url, char *err, size_t errlen)
{
    *out = NULL;
    struct resp_store *s = calloc(1, sizeof *s);
    if (!s) return AIOS_ENOMEM;
    int rc = pg_pool_open(&s->pool, url, "responses", k_schema, err, errlen);
    if (rc) {
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

static void pq_close(struct resp_store *s)
{
    if (!s) return;
    pg_pool_close(s->pool);
    free(s);
}

/* one statement on a pooled connection; NULL after logging */
static PGresult *run(struct resp_store *s, const char *what, const char *sql, int n,
                     const char *const *v)
{
    PGconn *c = pg_take(s->pool);
    PGresult *r = c ? pg_q(c, what, sql, n, v) : NULL;
    pg_give(s->pool, c);
    return r;
}

static int pq_put(struct resp_store *s, const struct resp_rec *r)
{
    char b[32];
    const char *v[7] = {r->id,    r->agent, r->prev_id, r->model, pg_i64(b, r->created_at),
                        r->input, r->response};
    PGresult *res = run(s, "store a response",
                        "INSERT INTO resp_responses(id, agent, prev_id, model, created_at, input,"
                        " response) VALUES($1, $2, $3, $4, $5, $6, $7)", 7, v);
    if (!res) return !strcmp(pg_last_state(), "53100") ? AIOS_ENOSPC : AIOS_EIO;
    PQclear(res);
    return 0;
}

static char *dup_col(const PGresult *r, int col)
{
    return PQgetisnull(r, 0, col) ? NULL : strdup(PQgetvalue(r, 0, col));
}

static int pq_get(struct resp_store *s, const char *agent, const char *id, struct resp_rec **out)
{
    *out = NULL;
    const char *v[2] = {id, agent};
    PGresult *res = run(s, "read a response",
                        "SELECT id, agent, prev_id, model, created_at, input, response"
                        " FROM resp_responses WHERE id = $1 AND agent = $2", 2, v);
    if (!res) return AIOS_EIO;
    int rc = 0;
    if (PQntuples(res) != 1) {
        rc = AIOS_ENOTFOUND;
    } else {
        struct resp_rec *r = calloc(1, sizeof *r);
        if (r) {
            r->id = dup_col(res, 0);
            r->agent = dup_col(res, 1);
            r->prev_id = dup_col(res, 2);
            r->model = dup_col(res, 3);
            r->created_at = pg_get_i64(res, 0, 4);
            r->input = dup_col(res, 5);
            r->response = dup_col(res, 6);
        }
        if (!r || !r->id || !r->agent || !r->model || !r->input || !r->response ||
            (!PQgetisnull(res, 0, 2) && !r->prev_id)) {
            resp_rec_free(r);
            rc = AIOS_ENOMEM;
        } else {
            *out = r;
        }
    }
    PQclear(res);
    return rc;
}

static int pq_remove(struct resp_store *s, const char *agent, const char *id)
{
    const char *v[2] = {id, agent};
    PGresult *res = run(s, "delete a response",
                        "DELETE FROM resp_responses WHERE id = $1 AND agent = $2", 2, v);
    if (!res) return AIOS_EIO;
    int rc = pg_changes(res) > 0 ? 0 : AIOS_ENOTFOUND;
    PQclear(res);
    return rc;
}

const struct resp_store_ops resp_store_pg = {
    .name = "postgres",
    .open = pq_open,
    .close = pq_close,
    .put = pq_put,
    .get = pq_get,
    .remove = pq_remove,
};
