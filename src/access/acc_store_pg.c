/* The access manager's PostgreSQL store (acc_store_pg; see acc_store.h and
 * docs/postgres.md). The same tables as the SQLite store, prefixed acc_:
 *   acc_audit(id bigserial, t, agent, syscall_id, resource, action,
 *             decision, reason)
 *   acc_agents(name PRIMARY KEY, token_sha256, created)
 *   acc_budget_use(agent, model, used, used_total, window_start, calls,
 *             denied, PRIMARY KEY(agent, model))
 *   acc_mem_grants(owner, grantee, write, created, expires)
 * and what only several kernels need:
 *   acc_kernels(id PRIMARY KEY, seen, lease_s, started)
 *             the kernels alive: each renews its row (kernel_beat) every
 *             quarter second; one not seen for lease_s seconds (the
 *             database's clock, so the kernels' clocks do not matter) is
 *             dead, and the next beat of any kernel deletes its row
 *   acc_budget_resv(id bigserial, agent, model, kernel, amount)
 *             the token reservations of running LLM calls, each held by
 *             the kernel that admitted it; a budget's "reserved" is the
 *             sum over live kernels, and a dead kernel's rows are deleted
 *             with it, so a crash gives its reservations back after the
 *             lease
 *   acc_approvals(id bigserial, kernel, syscall_id, agent, tool, args,
 *             what, kind, created, deadline, state, reason)
 *             pending approvals: the kernel holding the parked call writes
 *             the row, any kernel lists and decides it (state pending ->
 *             approved / denied), the holder reads decisions of its rows
 *             and deletes a row when its approval ends
 * Every call takes a pooled connection (util/pg.h) for its duration and is
 * one transaction. Several kernels on one database share these rows; how
 * each kernel's in-memory copies follow the others is the access manager's
 * business (access.c, "Several kernels"). */
#include "access/acc_store.h"

#include "util/err.h"
#include "util/log.h"
#include "util/pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct acc_store {
    struct pg_pool *pool;
};

static const char k_schema[] =
    "CREATE TABLE IF NOT EXISTS acc_audit(id BIGSERIAL PRIMARY KEY, t DOUBLE PRECISION NOT NULL,"
    " agent TEXT, syscall_id BIGINT, resource TEXT, action TEXT, decision TEXT NOT NULL,"
    " reason TEXT, request_id TEXT);"
    "ALTER TABLE acc_audit ADD COLUMN IF NOT EXISTS request_id TEXT;"
    "CREATE INDEX IF NOT EXISTS acc_audit_agent_t ON acc_audit(agent, t);"
    "CREATE TABLE IF NOT EXISTS acc_agents(name TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL,"
    " created DOUBLE PRECISION NOT NULL);"
    "CREATE TABLE IF NOT EXISTS acc_budget_use(agent TEXT NOT NULL, model TEXT NOT NULL,"
    " used BIGINT NOT NULL, used_total BIGINT NOT NULL, window_start DOUBLE PRECISION NOT NULL,"
    " calls BIGINT NOT NULL, denied BIGINT NOT NULL, PRIMARY KEY(agent, model));"
    /* reservations are rows of acc_budget_resv (a count here could not be
     * given back when its kernel dies) */
    "ALTER TABLE acc_budget_use DROP COLUMN IF EXISTS reserved;"
    "CREATE TABLE IF NOT EXISTS acc_mem_grants(owner TEXT NOT NULL, grantee TEXT NOT NULL,"
    " write BOOLEAN NOT NULL, created DOUBLE PRECISION NOT NULL,"
    " expires DOUBLE PRECISION NOT NULL, PRIMARY KEY(owner, grantee));"
    "CREATE TABLE IF NOT EXISTS acc_kernels(id TEXT PRIMARY KEY, seen DOUBLE PRECISION NOT NULL,"
    " lease_s DOUBLE PRECISION NOT NULL, started DOUBLE PRECISION NOT NULL);"
    "CREATE TABLE IF NOT EXISTS acc_budget_resv(id BIGSERIAL PRIMARY KEY, agent TEXT NOT NULL,"
    " model TEXT NOT NULL, kernel TEXT NOT NULL, amount BIGINT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS acc_budget_resv_am ON acc_budget_resv(agent, model);"
    "CREATE INDEX IF NOT EXISTS acc_budget_resv_k ON acc_budget_resv(kernel);"
    "CREATE TABLE IF NOT EXISTS acc_approvals(id BIGSERIAL PRIMARY KEY, kernel TEXT NOT NULL,"
    " syscall_id BIGINT NOT NULL, agent TEXT NOT NULL, tool TEXT NOT NULL, args TEXT,"
    " what TEXT NOT NULL, kind TEXT NOT NULL, created DOUBLE PRECISION NOT NULL,"
    " deadline DOUBLE PRECISION NOT NULL, state TEXT NOT NULL DEFAULT 'pending',"
    " reason TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX IF NOT EXISTS acc_approvals_k ON acc_approvals(kernel);";

/* the database's clock, unix seconds */
#define DB_NOW "extract(epoch from clock_timestamp())"
/* row r's kernel (r.kernel) is alive */
#define LIVE(r)                                                                                    \
    "EXISTS (SELECT 1 FROM acc_kernels k WHERE k.id = " r ".kernel AND k.seen + k.lease_s >= " \
    DB_NOW ")"
/* the running calls' reservations of u's (agent, model) on live kernels */
#define RESERVED(u)                                                                                \
    "(SELECT coalesce(sum(r.amount), 0) FROM acc_budget_resv r WHERE r.agent = " u ".agent"     \
    " AND r.model = " u ".model AND " LIVE("r") ")"

static int pq_open(struct acc_store **out, const char *url, char *err, size_t errlen)
{
    *out = NULL;
    struct acc_store *s = calloc(1, sizeof *s);
    if (!s) return AIOS_ENOMEM;
    int rc = pg_pool_open(&s->pool, url, "access", k_schema, err, errlen);
    if (rc) {
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

static void pq_close(struct acc_store *s)
{
    if (!s) return;
    pg_pool_close(s->pool);
    free(s);
}

static const char *pq_describe(struct acc_store *s) { return pg_pool_describe(s->pool); }

/* run sql; *res the result (PQclear it) */
static int query(struct acc_store *s, const char *what, const char *sql, int n,
                 const char *const *v, PGresult **res, char *err, size_t errlen)
{
    *res = NULL;
    PGconn *c = pg_take(s->pool);
    PGresult *r = c ? pg_q(c, what, sql, n, v) : NULL;
    pg_give(s->pool, c);
    if (!r) {
        snprintf(err, errlen, "%s: the access database (%s) failed", what, pg_pool_describe(s->pool));
        return AIOS_EIO;
    }
    *res = r;
    return 0;
}

static int pq_agents(struct acc_store *s, struct acc_agent_row **rows, size_t *n, char *err,
                     size_t errlen)
{
    *rows = NULL;
    *n = 0;
    PGresult *r;
    int rc = query(s, "read registered agents", "SELECT name, token_sha256, created FROM acc_agents",
                   0, NULL, &r, err, errlen);
    if (rc) return rc;
    int cnt = PQntuples(r);
    struct acc_agent_row *a = cnt ? calloc((size_t)cnt, sizeof *a) : NULL;
    if (cnt && !a) rc = AIOS_ENOMEM;
    for (int i = 0; !rc && i < cnt; i++) {
        snprintf(a[i].name, sizeof a[i].name, "%s", pg_get_s(r, i, 0));
        snprintf(a[i].sha, sizeof a[i].sha, "%s", pg_get_s(r, i, 1));
        a[i].created = pg_get_dbl(r, i, 2);
    }
    PQclear(r);
    if (rc) return rc;
    *rows = a;
    *n = (size_t)cnt;
    return 0;
}

static int pq_agent_put(struct acc_store *s, const struct acc_agent_row *a, char *err,
                        size_t errlen)
{
    char b[32];
    const char *v[3] = {a->name, a->sha, pg_dbl(b, a->created)};
    PGresult *r;
    int rc = query(s, "store the agent",
                   "INSERT INTO acc_agents(name, token_sha256, created) VALUES($1, $2, $3)"
                   " ON CONFLICT (name) DO UPDATE SET token_sha256 = EXCLUDED.token_sha256,"
                   " created = EXCLUDED.created", 3, v, &r, err, errlen);
    PQclear(r);
    return rc;
}

static int pq_budgets(struct acc_store *s, struct acc_budget_row **rows, size_t *n, char *err,
                      size_t errlen)
{
    *rows = NULL;
    *n = 0;
    PGresult *r;
    int rc = query(s, "read the token budgets",
                   "SELECT agent, model, used, used_total, window_start, calls, denied, "
                   RESERVED("u") " FROM acc_budget_use u", 0, NULL, &r, err, errlen);
    if (rc) return rc;
    int cnt = PQntuples(r);
    struct acc_budget_row *u = cnt ? calloc((size_t)cnt, sizeof *u) : NULL;
    if (cnt && !u) rc = AIOS_ENOMEM;
    for (int i = 0; !rc && i < cnt; i++) {
        snprintf(u[i].agent, sizeof u[i].agent, "%s", pg_get_s(r, i, 0));
        snprintf(u[i].model, sizeof u[i].model, "%s", pg_get_s(r, i, 1));
        u[i].used = pg_get_i64(r, i, 2);
        u[i].used_total = pg_get_i64(r, i, 3);
        u[i].window_start = pg_get_dbl(r, i, 4);
        u[i].n_calls = pg_get_i64(r, i, 5);
        u[i].n_denied = pg_get_i64(r, i, 6);
        u[i].reserved = pg_get_i64(r, i, 7);
    }
    PQclear(r);
    if (rc) return rc;
    *rows = u;
    *n = (size_t)cnt;
    return 0;
}

static int pq_budgets_put(struct acc_store *s, const struct acc_budget_row *rows, size_t n,
                          char *err, size_t errlen)
{
    PGconn *c = pg_take(s->pool);
    if (!c) {
        snprintf(err, errlen, "cannot save the token budgets: no connection to the database");
        return AIOS_EIO;
    }
    int rc = pg_exec(c, "save the token budgets", "BEGIN", 0, NULL);
    for (size_t i = 0; !rc && i < n; i++) {
        char b[5][32];
        const char *v[7] = {rows[i].agent, rows[i].model, pg_i64(b[0], rows[i].used),
                            pg_i64(b[1], rows[i].used_total), pg_dbl(b[2], rows[i].window_start),
                            pg_i64(b[3], rows[i].n_calls), pg_i64(b[4], rows[i].n_denied)};
        rc = pg_exec(c, "save the token budgets",
                     "INSERT INTO acc_budget_use(agent, model, used, used_total, window_start,"
                     " calls, denied) VALUES($1, $2, $3, $4, $5, $6, $7)"
                     " ON CONFLICT (agent, model) DO UPDATE SET used = EXCLUDED.used,"
                     " used_total = EXCLUDED.used_total, window_start = EXCLUDED.window_start,"
                     " calls = EXCLUDED.calls, denied = EXCLUDED.denied", 7, v);
    }
    if (!rc) rc = pg_exec(c, "save the token budgets", "COMMIT", 0, NULL);
    else PQclear(PQexec(c, "ROLLBACK"));
    pg_give(s->pool, c);
    if (rc) snprintf(err, errlen, "cannot save the token budgets to %s", pg_pool_describe(s->pool));
    return rc;
}

/* the row locked: roll the window, reserve what fits as a row of
 * acc_budget_resv held by this kernel (acc_store.h) */
static int pq_budget_reserve(struct acc_store *s, const struct acc_budget_ask *q,
                             struct acc_budget_answer *a, char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    PGconn *c = pg_take(s->pool);
    if (!c) {
        snprintf(err, errlen, "token budget: no connection to the database");
        return AIOS_EIO;
    }
    char b[4][32];
    const char *v[3] = {q->agent, q->model, pg_dbl(b[0], q->now)};
    PGresult *r = NULL;
    int rc = pg_exec(c, "token budget", "BEGIN", 0, NULL);
    if (!rc) { /* this kernel is alive (a reservation is never left unowned) */
        const char *k[1] = {q->kernel};
        rc = pg_exec(c, "token budget",
                     "UPDATE acc_kernels SET seen = " DB_NOW " WHERE id = $1", 1, k);
    }
    if (!rc)
        rc = pg_exec(c, "token budget",
                     "INSERT INTO acc_budget_use(agent, model, used, used_total, window_start,"
                     " calls, denied) VALUES($1, $2, 0, 0, $3, 0, 0)"
                     " ON CONFLICT (agent, model) DO NOTHING", 3, v);
    if (!rc && !(r = pg_q(c, "token budget",
                          "SELECT used, window_start FROM acc_budget_use"
                          " WHERE agent = $1 AND model = $2 FOR UPDATE", 2, v)))
        rc = AIOS_EIO;
    if (!rc && PQntuples(r) != 1) rc = AIOS_EIO;
    int64_t used = 0, reserved = 0;
    double ws = 0;
    if (!rc) {
        used = pg_get_i64(r, 0, 0);
        ws = pg_get_dbl(r, 0, 1);
        PQclear(r);
        r = pg_q(c, "token budget",
                 "SELECT " RESERVED("u") " FROM (SELECT $1::text AS agent, $2::text AS model) u",
                 2, v);
        if (!r || PQntuples(r) != 1) rc = AIOS_EIO;
        else reserved = pg_get_i64(r, 0, 0);
    }
    PQclear(r);
    r = NULL;
    if (!rc) {
        if (q->window_s > 0 && q->now >= ws + (double)q->window_s) {
            ws = q->now;
            used = 0;
        }
        int64_t left = q->limit - used - reserved;
        int64_t need = q->gen > 0 ? q->prompt + q->gen : q->prompt + 1;
        a->ok = need <= left;
        if (a->ok && q->gen <= 0) need = left;
        a->need = need;
        a->used = used;
        a->reserved = reserved + (a->ok ? need : 0);
        a->window_start = ws;
        const char *u[5] = {q->agent, q->model, pg_i64(b[1], used), pg_dbl(b[2], ws),
                            a->ok ? "1" : "0"};
        rc = pg_exec(c, "token budget",
                     "UPDATE acc_budget_use SET used = $3, window_start = $4,"
                     " calls = calls + $5, denied = denied + 1 - $5"
                     " WHERE agent = $1 AND model = $2", 5, u);
        if (!rc && a->ok) {
            const char *w[4] = {q->agent, q->model, q->kernel, pg_i64(b[3], need)};
            r = pg_q(c, "token budget",
                     "INSERT INTO acc_budget_resv(agent, model, kernel, amount)"
                     " VALUES($1, $2, $3, $4) RETURNING id", 4, w);
            if (!r || PQntuples(r) != 1) rc = AIOS_EIO;
            else a->resv_id = pg_get_i64(r, 0, 0);
            PQclear(r);
        }
    }
    if (!rc) rc = pg_exec(c, "token budget", "COMMIT", 0, NULL);
    else PQclear(PQexec(c, "ROLLBACK"));
    pg_give(s->pool, c);
    if (rc) {
        a->ok = false;
        a->resv_id = 0;
        snprintf(err, errlen, "token budget: the database (%s) failed",
                 pg_pool_describe(s->pool));
    }
    return rc;
}

static int pq_budget_settle(struct acc_store *s, const struct acc_budget_settle *x, size_t n,
                            char *err, size_t errlen)
{
    PGconn *c = pg_take(s->pool);
    if (!c) {
        snprintf(err, errlen, "token budget: no connection to the database");
        return AIOS_EIO;
    }
    int rc = pg_exec(c, "token budget", "BEGIN", 0, NULL);
    for (size_t i = 0; !rc && i < n; i++) {
        char b[5][32];
        if (x[i].resv_id > 0) { /* gone already when its kernel was taken for dead */
            const char *r[1] = {pg_i64(b[0], x[i].resv_id)};
            rc = pg_exec(c, "token budget", "DELETE FROM acc_budget_resv WHERE id = $1", 1, r);
            if (rc) break;
        }
        const char *v[6] = {x[i].agent, x[i].model, pg_dbl(b[0], x[i].now),
                            pg_i64(b[1], x[i].window_s), pg_i64(b[3], x[i].n),
                            pg_i64(b[4], x[i].calls_delta)};
        /* the window rolls when over, as at admission */
        rc = pg_exec(c, "token budget",
                     "INSERT INTO acc_budget_use AS u(agent, model, used, used_total,"
                     " window_start, calls, denied)"
                     " VALUES($1, $2, $5, $5, $3, greatest($6::bigint, 0), 0)"
                     " ON CONFLICT (agent, model) DO UPDATE SET"
                     " used = CASE WHEN $4::bigint > 0 AND $3::float8 >= u.window_start + $4::bigint"
                     "   THEN 0 ELSE u.used END + $5,"
                     " window_start = CASE WHEN $4::bigint > 0 AND"
                     "   $3::float8 >= u.window_start + $4::bigint THEN $3 ELSE u.window_start END,"
                     " used_total = u.used_total + $5,"
                     " calls = u.calls + $6", 6, v);
    }
    if (!rc) rc = pg_exec(c, "token budget", "COMMIT", 0, NULL);
    else PQclear(PQexec(c, "ROLLBACK"));
    pg_give(s->pool, c);
    if (rc) snprintf(err, errlen, "token budget: cannot settle %zu calls in %s", n,
                     pg_pool_describe(s->pool));
    return rc;
}

static int pq_kernel_beat(struct acc_store *s, const char *kernel, int lease_s, int64_t *n_gone,
                          int64_t *tokens_gone, char *err, size_t errlen)
{
    *n_gone = *tokens_gone = 0;
    PGconn *c = pg_take(s->pool);
    if (!c) {
        snprintf(err, errlen, "kernel lease: no connection to the database");
        return AIOS_EIO;
    }
    char b[32];
    const char *v[2] = {kernel, pg_i64(b, lease_s)};
    PGresult *r = NULL;
    int rc = pg_exec(c, "kernel lease", "BEGIN", 0, NULL);
    if (!rc)
        rc = pg_exec(c, "kernel lease",
                     "INSERT INTO acc_kernels(id, seen, lease_s, started)"
                     " VALUES($1, " DB_NOW ", $2, " DB_NOW ") ON CONFLICT (id) DO UPDATE SET"
                     " seen = EXCLUDED.seen, lease_s = EXCLUDED.lease_s", 2, v);
    if (!rc)
        rc = pg_exec(c, "kernel lease",
                     "DELETE FROM acc_kernels WHERE lease_s <= 0 OR seen + lease_s < " DB_NOW,
                     0, NULL);
    if (!rc && !(r = pg_q(c, "kernel lease",
                          "WITH gone AS (DELETE FROM acc_budget_resv r WHERE NOT EXISTS"
                          " (SELECT 1 FROM acc_kernels k WHERE k.id = r.kernel) RETURNING amount)"
                          " SELECT count(*), coalesce(sum(amount), 0) FROM gone", 0, NULL)))
        rc = AIOS_EIO;
    if (!rc && PQntuples(r) == 1) {
        *n_gone = pg_get_i64(r, 0, 0);
        *tokens_gone = pg_get_i64(r, 0, 1);
    }
    PQclear(r);
    if (!rc)
        rc = pg_exec(c, "kernel lease",
                     "DELETE FROM acc_approvals a WHERE NOT EXISTS"
                     " (SELECT 1 FROM acc_kernels k WHERE k.id = a.kernel)", 0, NULL);
    if (!rc) rc = pg_exec(c, "kernel lease", "COMMIT", 0, NULL);
    else PQclear(PQexec(c, "ROLLBACK"));
    pg_give(s->pool, c);
    if (rc) {
        *n_gone = *tokens_gone = 0;
        snprintf(err, errlen, "kernel lease: the database (%s) failed", pg_pool_describe(s->pool));
    }
    return rc;
}

static int pq_appr_put(struct acc_store *s, const struct acc_appr_row *a, int64_t *id, char *err,
                       size_t errlen)
{
    *id = 0;
    char b[3][32];
    const char *v[9] = {a->kernel, pg_i64(b[0], (int64_t)a->sc_id), a->agent, a->tool, a->args,
                        a->what ? a->what : "", a->kind, pg_dbl(b[1], a->created),
                        pg_dbl(b[2], a->deadline)};
    PGresult *r;
    int rc = query(s, "store an approval",
                   "INSERT INTO acc_approvals(kernel, syscall_id, agent, tool, args, what, kind,"
                   " created, deadline) VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                   9, v, &r, err, errlen);
    if (rc) return rc;
    if (PQntuples(r) == 1) *id = pg_get_i64(r, 0, 0);
    else rc = AIOS_EIO;
    PQclear(r);
    return rc;
}

static int pq_appr_list(struct acc_store *s, json_t **out, char *err, size_t errlen)
{
    *out = NULL;
    PGresult *r;
    int rc = query(s, "list the approvals",
                   "SELECT id, syscall_id, agent, tool, args, what, kind, created, deadline"
                   " FROM acc_approvals a WHERE state = 'pending' AND " LIVE("a")
                   " ORDER BY id DESC", 0, NULL, &r, err, errlen);
    if (rc) return rc;
    json_t *arr = json_array();
    for (int i = 0; arr && i < PQntuples(r); i++) {
        json_t *args = PQgetisnull(r, i, 4) ? NULL : json_loads(pg_get_s(r, i, 4), 0, NULL);
        json_t *o = json_pack("{s:I,s:I,s:s,s:s,s:o,s:f,s:f,s:s,s:s}", "id",
                              (json_int_t)pg_get_i64(r, i, 0), "syscall_id",
                              (json_int_t)pg_get_i64(r, i, 1), "agent", pg_get_s(r, i, 2), "tool",
                              pg_get_s(r, i, 3), "arguments", args ? args : json_null(), "created",
                              pg_get_dbl(r, i, 7), "deadline", pg_get_dbl(r, i, 8), "status",
                              "awaiting_approval", "kind", pg_get_s(r, i, 6));
        if (o && pg_get_s(r, i, 5)[0]) json_object_set_new(o, "what", json_string(pg_get_s(r, i, 5)));
        json_array_append_new(arr, o);
    }
    PQclear(r);
    if (!arr) return AIOS_ENOMEM;
    *out = arr;
    return 0;
}

static int pq_appr_decide(struct acc_store *s, int64_t id, bool approve, const char *reason,
                          char *err, size_t errlen)
{
    char b[32];
    const char *v[3] = {pg_i64(b, id), approve ? "approved" : "denied", reason ? reason : ""};
    PGresult *r;
    int rc = query(s, "decide an approval",
                   "UPDATE acc_approvals a SET state = $2, reason = $3 WHERE id = $1"
                   " AND state = 'pending' AND " LIVE("a"), 3, v, &r, err, errlen);
    if (rc) return rc;
    int64_t changed = pg_changes(r);
    PQclear(r);
    if (changed > 0) return 0;
    rc = query(s, "decide an approval",
               "SELECT state FROM acc_approvals a WHERE id = $1 AND " LIVE("a"), 1, v, &r, err,
               errlen);
    if (rc) return rc;
    rc = PQntuples(r) == 1 ? AIOS_EINVAL : AIOS_ENOTFOUND;
    PQclear(r);
    return rc;
}

static int pq_appr_decided(struct acc_store *s, const char *kernel,
                           struct acc_appr_decided **rows, size_t *n, char *err, size_t errlen)
{
    *rows = NULL;
    *n = 0;
    const char *v[1] = {kernel};
    PGresult *r;
    int rc = query(s, "read approval decisions",
                   "SELECT id, state, reason FROM acc_approvals WHERE kernel = $1"
                   " AND state <> 'pending'", 1, v, &r, err, errlen);
    if (rc) return rc;
    int cnt = PQntuples(r);
    struct acc_appr_decided *d = cnt ? calloc((size_t)cnt, sizeof *d) : NULL;
    if (cnt && !d) rc = AIOS_ENOMEM;
    for (int i = 0; !rc && i < cnt; i++) {
        d[i].id = pg_get_i64(r, i, 0);
        d[i].approved = !strcmp(pg_get_s(r, i, 1), "approved");
        snprintf(d[i].reason, sizeof d[i].reason, "%s", pg_get_s(r, i, 2));
    }
    PQclear(r);
    if (rc) return rc;
    *rows = d;
    *n = (size_t)cnt;
    return 0;
}

static int pq_appr_drop(struct acc_store *s, int64_t id, char *err, size_t errlen)
{
    char b[32];
    const char *v[1] = {pg_i64(b, id)};
    PGresult *r;
    int rc = query(s, "end an approval", "DELETE FROM acc_approvals WHERE id = $1", 1, v, &r, err,
                   errlen);
    PQclear(r);
    return rc;
}

static int pq_grants(struct acc_store *s, struct acc_grant_row **rows, size_t *n, char *err,
                     size_t errlen)
{
    *rows = NULL;
    *n = 0;
    PGresult *r;
    int rc = query(s, "read the memory grants",
                   "SELECT owner, grantee, write, created, expires FROM acc_mem_grants", 0, NULL,
                   &r, err, errlen);
    if (rc) return rc;
    int cnt = PQntuples(r);
    struct acc_grant_row *g = cnt ? calloc((size_t)cnt, sizeof *g) : NULL;
    if (cnt && !g) rc = AIOS_ENOMEM;
    for (int i = 0; !rc && i < cnt; i++) {
        snprintf(g[i].owner, sizeof g[i].owner, "%s", pg_get_s(r, i, 0));
        snprintf(g[i].grantee, sizeof g[i].grantee, "%s", pg_get_s(r, i, 1));
        g[i].write = pg_get_s(r, i, 2)[0] == 't';
        g[i].created = pg_get_dbl(r, i, 3);
        g[i].expires = pg_get_dbl(r, i, 4);
    }
    PQclear(r);
    if (rc) return rc;
    *rows = g;
    *n = (size_t)cnt;
    return 0;
}

static int pq_grant_put(struct acc_store *s, const struct acc_grant_row *g, char *err,
                        size_t errlen)
{
    char b1[32], b2[32];
    const char *v[5] = {g->owner, g->grantee, g->write ? "true" : "false", pg_dbl(b1, g->created),
                        pg_dbl(b2, g->expires)};
    PGresult *r;
    int rc = query(s, "store the grant",
                   "INSERT INTO acc_mem_grants(owner, grantee, write, created, expires)"
                   " VALUES($1, $2, $3, $4, $5) ON CONFLICT (owner, grantee) DO UPDATE SET"
                   " write = EXCLUDED.write, created = EXCLUDED.created,"
                   " expires = EXCLUDED.expires", 5, v, &r, err, errlen);
    PQclear(r);
    return rc;
}

static int pq_grant_delete(struct acc_store *s, const char *owner, const char *grantee, char *err,
                           size_t errlen)
{
    const char *v[2] = {owner, grantee};
    PGresult *r;
    int rc = query(s, "delete a memory grant",
                   "DELETE FROM acc_mem_grants WHERE owner = $1 AND grantee = $2", 2, v, &r, err,
                   errlen);
    PQclear(r);
    return rc;
}

static int pq_audit_append(struct acc_store *s, const struct acc_audit_rec *rows, size_t n,
                           char *err, size_t errlen)
{
    PGconn *c = pg_take(s->pool);
    if (!c) {
        snprintf(err, errlen, "audit log: no connection to the database");
        return AIOS_EIO;
    }
    int rc = pg_exec(c, "audit log", "BEGIN", 0, NULL);
    for (size_t i = 0; !rc && i < n; i++) {
        char b1[32], b2[32];
        const struct acc_audit_rec *a = &rows[i];
        const char *v[8] = {pg_dbl(b1, a->t), a->agent,
                            a->syscall_id ? pg_i64(b2, (int64_t)a->syscall_id) : NULL,
                            a->resource, a->action, a->decision, a->reason, a->request_id};
        rc = pg_exec(c, "audit log",
                     "INSERT INTO acc_audit(t, agent, syscall_id, resource, action, decision,"
                     " reason, request_id) VALUES($1, $2, $3, $4, $5, $6, $7, $8)", 8, v);
    }
    if (!rc) rc = pg_exec(c, "audit log", "COMMIT", 0, NULL);
    else PQclear(PQexec(c, "ROLLBACK"));
    pg_give(s->pool, c);
    if (rc) snprintf(err, errlen, "audit log: cannot write %zu rows to %s", n,
                     pg_pool_describe(s->pool));
    return rc;
}

static int pq_audit_query(struct acc_store *s, const char *agent, double since_s, int limit,
                          json_t **out, char *err, size_t errlen)
{
    *out = NULL;
    char b1[32], b2[32];
    const char *v[3] = {agent, pg_dbl(b1, since_s), pg_i64(b2, limit)};
    PGresult *r;
    /* the newest `limit` rows, returned oldest first */
    int rc = query(s, "audit log query",
                   "SELECT * FROM (SELECT id, t, agent, syscall_id, resource, action, decision,"
                   " reason, request_id FROM acc_audit WHERE ($1::text IS NULL OR agent = $1) AND t >= $2"
                   " ORDER BY id DESC LIMIT $3::int) x ORDER BY id", 3, v, &r, err, errlen);
    if (rc) return rc;
    json_t *rows = json_array();
    for (int i = 0; rows && i < PQntuples(r); i++) {
        json_t *o = json_object();
        json_object_set_new(o, "id", json_integer(pg_get_i64(r, i, 0)));
        json_object_set_new(o, "time", json_real(pg_get_dbl(r, i, 1)));
        json_object_set_new(o, "agent", json_string(pg_get_s(r, i, 2)));
        json_object_set_new(o, "syscall_id", PQgetisnull(r, i, 3)
                                                 ? json_null()
                                                 : json_integer(pg_get_i64(r, i, 3)));
        json_object_set_new(o, "resource", json_string(pg_get_s(r, i, 4)));
        json_object_set_new(o, "action", json_string(pg_get_s(r, i, 5)));
        json_object_set_new(o, "decision", json_string(pg_get_s(r, i, 6)));
        json_object_set_new(o, "reason", json_string(pg_get_s(r, i, 7)));
        json_object_set_new(o, "request_id", PQgetisnull(r, i, 8) ? json_null()
                                                                 : json_string(pg_get_s(r, i, 8)));
        json_array_append_new(rows, o);
    }
    PQclear(r);
    if (!rows) return AIOS_ENOMEM;
    *out = rows;
    return 0;
}

const struct acc_store_ops acc_store_pg = {
    .name = "postgres",
    .open = pq_open,
    .close = pq_close,
    .describe = pq_describe,
    .agents = pq_agents,
    .agent_put = pq_agent_put,
    .budgets = pq_budgets,
    .budgets_put = pq_budgets_put,
    .grants = pq_grants,
    .grant_put = pq_grant_put,
    .grant_delete = pq_grant_delete,
    .budget_reserve = pq_budget_reserve,
    .budget_settle = pq_budget_settle,
    .kernel_beat = pq_kernel_beat,
    .appr_put = pq_appr_put,
    .appr_list = pq_appr_list,
    .appr_decide = pq_appr_decide,
    .appr_decided = pq_appr_decided,
    .appr_drop = pq_appr_drop,
    .audit_append = pq_audit_append,
    .audit_query = pq_audit_query,
};
