/* The access manager's SQLite store (acc_store_sqlite; see acc_store.h).
 *
 * One database, data_dir/audit.db, in WAL mode:
 *   audit(id, t, agent, syscall_id, resource, action, decision, reason,
 *         request_id)
 *   agents(name PRIMARY KEY, token_sha256, created)
 *   budget_use(agent, model, used, used_total, window_start, calls, denied)
 *   mem_grants(owner, grantee, write, created, expires)
 *
 * Connections: the audit writer (one thread, audit.c) keeps one connection,
 * guarded by `wmu` (a leaf lock held only around its statements). Every
 * other call opens a connection of its own for its duration (they are rare:
 * start, registering an agent, a grant, the budget saver every few seconds,
 * an audit query), with a 30 s busy timeout so writers queue. */
#include "access/acc_store.h"

#include "util/err.h"
#include "util/log.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct acc_store {
    char *path;
    pthread_mutex_t wmu; /* guards wdb */
    sqlite3 *wdb;        /* the audit writer's connection */
    /* its statements for audit_append, prepared on first use and kept
     * (parsing them again for every batch was most of an append's cost) */
    sqlite3_stmt *a_begin, *a_insert, *a_commit;
};

static const char k_schema[] =
    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS audit(id INTEGER PRIMARY KEY, t REAL NOT NULL,"
    " agent TEXT, syscall_id INTEGER, resource TEXT, action TEXT,"
    " decision TEXT NOT NULL, reason TEXT, request_id TEXT);"
    "CREATE INDEX IF NOT EXISTS audit_agent_t ON audit(agent, t);"
    "CREATE TABLE IF NOT EXISTS agents(name TEXT PRIMARY KEY,"
    " token_sha256 TEXT NOT NULL, created REAL NOT NULL);"
    "CREATE TABLE IF NOT EXISTS budget_use(agent TEXT NOT NULL, model TEXT NOT NULL,"
    " used INTEGER NOT NULL, used_total INTEGER NOT NULL, window_start REAL NOT NULL,"
    " calls INTEGER NOT NULL, denied INTEGER NOT NULL, PRIMARY KEY(agent, model));"
    "CREATE TABLE IF NOT EXISTS mem_grants(owner TEXT NOT NULL, grantee TEXT NOT NULL,"
    " write INTEGER NOT NULL, created REAL NOT NULL, expires REAL NOT NULL,"
    " PRIMARY KEY(owner, grantee));";

static int db_open(const char *path, sqlite3 **out, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                            SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", path,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        *out = NULL;
        return AIOS_EIO;
    }
    sqlite3_busy_timeout(db, 30000);
    *out = db;
    return 0;
}

static int db_fail(sqlite3 *db, const char *what, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s: %s", what, db ? sqlite3_errmsg(db) : "no database");
    return AIOS_EIO;
}

static const char *col(sqlite3_stmt *st, int i)
{
    const char *s = (const char *)sqlite3_column_text(st, i);
    return s ? s : "";
}

static void sq_close(struct acc_store *s)
{
    if (!s) return;
    sqlite3_finalize(s->a_begin);
    sqlite3_finalize(s->a_insert);
    sqlite3_finalize(s->a_commit);
    sqlite3_close(s->wdb);
    pthread_mutex_destroy(&s->wmu);
    free(s->path);
    free(s);
}

static int sq_open(struct acc_store **out, const char *path, char *err, size_t errlen)
{
    *out = NULL;
    struct acc_store *s = calloc(1, sizeof *s);
    if (!s) return AIOS_ENOMEM;
    pthread_mutex_init(&s->wmu, NULL);
    s->path = strdup(path);
    int rc = s->path ? db_open(path, &s->wdb, err, errlen) : AIOS_ENOMEM;
    char *emsg = NULL;
    if (!rc && sqlite3_exec(s->wdb, k_schema, NULL, NULL, &emsg) != SQLITE_OK) {
        snprintf(err, errlen, "cannot set up %s: %s", path, emsg ? emsg : "?");
        sqlite3_free(emsg);
        rc = AIOS_EIO;
    }
    /* files from before request ids: add the column (fails harmlessly when
     * it is there) */
    if (!rc) sqlite3_exec(s->wdb, "ALTER TABLE audit ADD COLUMN request_id TEXT", NULL, NULL, NULL);
    if (rc) {
        sq_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

static const char *sq_describe(struct acc_store *s) { return s->path; }

/* run a SELECT and hand each row to fn; rows of `size` bytes collected in
 * *rows (malloc'd) */
typedef void (*row_fn)(sqlite3_stmt *st, void *row);

static int select_rows(struct acc_store *s, const char *sql, row_fn fn, size_t size, void **rows,
                       size_t *n, const char *what, char *err, size_t errlen)
{
    *rows = NULL;
    *n = 0;
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    char *buf = NULL;
    size_t cnt = 0, cap = 0;
    int rc = db_open(s->path, &db, err, errlen), r = SQLITE_DONE;
    if (!rc && sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        rc = db_fail(db, what, err, errlen);
    while (!rc && (r = sqlite3_step(st)) == SQLITE_ROW) {
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 16;
            char *x = realloc(buf, nc * size);
            if (!x) {
                rc = AIOS_ENOMEM;
                break;
            }
            buf = x;
            cap = nc;
        }
        memset(buf + cnt * size, 0, size);
        fn(st, buf + cnt * size);
        cnt++;
    }
    if (!rc && r != SQLITE_DONE) rc = db_fail(db, what, err, errlen);
    sqlite3_finalize(st);
    sqlite3_close(db);
    if (rc) {
        free(buf);
        return rc;
    }
    *rows = buf;
    *n = cnt;
    return 0;
}

static void agent_row(sqlite3_stmt *st, void *p)
{
    struct acc_agent_row *r = p;
    snprintf(r->name, sizeof r->name, "%s", col(st, 0));
    snprintf(r->sha, sizeof r->sha, "%s", col(st, 1));
    r->created = sqlite3_column_double(st, 2);
}

static int sq_agents(struct acc_store *s, struct acc_agent_row **rows, size_t *n, char *err,
                     size_t errlen)
{
    return select_rows(s, "SELECT name, token_sha256, created FROM agents", agent_row,
                       sizeof **rows, (void **)rows, n, "cannot read registered agents", err,
                       errlen);
}

static int sq_agent_put(struct acc_store *s, const struct acc_agent_row *r, char *err,
                        size_t errlen)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc = db_open(s->path, &db, err, errlen);
    if (!rc && sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO agents(name, token_sha256, created) "
                                  "VALUES(?,?,?)", -1, &st, NULL) != SQLITE_OK)
        rc = db_fail(db, "cannot store the agent", err, errlen);
    if (!rc) {
        sqlite3_bind_text(st, 1, r->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, r->sha, -1, SQLITE_STATIC);
        sqlite3_bind_double(st, 3, r->created);
        if (sqlite3_step(st) != SQLITE_DONE) rc = db_fail(db, "cannot store the agent", err, errlen);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

static void budget_row(sqlite3_stmt *st, void *p)
{
    struct acc_budget_row *u = p;
    snprintf(u->agent, sizeof u->agent, "%s", col(st, 0));
    snprintf(u->model, sizeof u->model, "%s", col(st, 1));
    u->used = sqlite3_column_int64(st, 2);
    u->used_total = sqlite3_column_int64(st, 3);
    u->window_start = sqlite3_column_double(st, 4);
    u->n_calls = sqlite3_column_int64(st, 5);
    u->n_denied = sqlite3_column_int64(st, 6);
}

static int sq_budgets(struct acc_store *s, struct acc_budget_row **rows, size_t *n, char *err,
                      size_t errlen)
{
    return select_rows(s, "SELECT agent, model, used, used_total, window_start, calls, denied "
                          "FROM budget_use", budget_row, sizeof **rows, (void **)rows, n,
                       "cannot read the token budgets", err, errlen);
}

static int sq_budgets_put(struct acc_store *s, const struct acc_budget_row *rows, size_t n,
                          char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc = db_open(s->path, &db, err, errlen);
    if (!rc && (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
                sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO budget_use(agent, model, used, "
                                   "used_total, window_start, calls, denied) VALUES(?,?,?,?,?,?,?)",
                                   -1, &st, NULL) != SQLITE_OK))
        rc = db_fail(db, "cannot save the token budgets", err, errlen);
    for (size_t i = 0; !rc && i < n; i++) {
        sqlite3_bind_text(st, 1, rows[i].agent, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, rows[i].model, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, rows[i].used);
        sqlite3_bind_int64(st, 4, rows[i].used_total);
        sqlite3_bind_double(st, 5, rows[i].window_start);
        sqlite3_bind_int64(st, 6, rows[i].n_calls);
        sqlite3_bind_int64(st, 7, rows[i].n_denied);
        if (sqlite3_step(st) != SQLITE_DONE) rc = db_fail(db, "cannot save the token budgets", err, errlen);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    if (!rc && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        rc = db_fail(db, "cannot save the token budgets", err, errlen);
    if (rc && db) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

static void grant_row(sqlite3_stmt *st, void *p)
{
    struct acc_grant_row *g = p;
    snprintf(g->owner, sizeof g->owner, "%s", col(st, 0));
    snprintf(g->grantee, sizeof g->grantee, "%s", col(st, 1));
    g->write = sqlite3_column_int(st, 2) != 0;
    g->created = sqlite3_column_double(st, 3);
    g->expires = sqlite3_column_double(st, 4);
}

static int sq_grants(struct acc_store *s, struct acc_grant_row **rows, size_t *n, char *err,
                     size_t errlen)
{
    return select_rows(s, "SELECT owner, grantee, write, created, expires FROM mem_grants",
                       grant_row, sizeof **rows, (void **)rows, n,
                       "cannot read the memory grants", err, errlen);
}

static int sq_grant_put(struct acc_store *s, const struct acc_grant_row *g, char *err,
                        size_t errlen)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc = db_open(s->path, &db, err, errlen);
    if (!rc && sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO mem_grants(owner, grantee, write, "
                                  "created, expires) VALUES(?,?,?,?,?)", -1, &st, NULL) != SQLITE_OK)
        rc = db_fail(db, "cannot store the grant", err, errlen);
    if (!rc) {
        sqlite3_bind_text(st, 1, g->owner, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, g->grantee, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, g->write);
        sqlite3_bind_double(st, 4, g->created);
        sqlite3_bind_double(st, 5, g->expires);
        if (sqlite3_step(st) != SQLITE_DONE) rc = db_fail(db, "cannot store the grant", err, errlen);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

static int sq_grant_delete(struct acc_store *s, const char *owner, const char *grantee, char *err,
                           size_t errlen)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc = db_open(s->path, &db, err, errlen);
    if (!rc && sqlite3_prepare_v2(db, "DELETE FROM mem_grants WHERE owner=? AND grantee=?", -1,
                                  &st, NULL) != SQLITE_OK)
        rc = db_fail(db, "cannot delete a memory grant", err, errlen);
    if (!rc) {
        sqlite3_bind_text(st, 1, owner, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, grantee, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = db_fail(db, "cannot delete a memory grant", err, errlen);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

static int sq_audit_append(struct acc_store *s, const struct acc_audit_rec *rows, size_t n,
                           char *err, size_t errlen)
{
    pthread_mutex_lock(&s->wmu);
    sqlite3 *db = s->wdb;
    int rc = 0;
    const unsigned keep = SQLITE_PREPARE_PERSISTENT;
    if ((!s->a_begin && sqlite3_prepare_v3(db, "BEGIN", -1, keep, &s->a_begin, NULL) != SQLITE_OK) ||
        (!s->a_commit &&
         sqlite3_prepare_v3(db, "COMMIT", -1, keep, &s->a_commit, NULL) != SQLITE_OK) ||
        (!s->a_insert &&
         sqlite3_prepare_v3(db, "INSERT INTO audit(t,agent,syscall_id,resource,action,decision,"
                            "reason,request_id) VALUES(?,?,?,?,?,?,?,?)", -1, keep, &s->a_insert,
                            NULL) != SQLITE_OK)) {
        rc = db_fail(db, "audit log", err, errlen);
        goto out;
    }
    sqlite3_stmt *st = s->a_insert;
    int r = sqlite3_step(s->a_begin);
    sqlite3_reset(s->a_begin);
    if (r != SQLITE_DONE) {
        rc = db_fail(db, "audit log", err, errlen);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const struct acc_audit_rec *r = &rows[i];
        sqlite3_bind_double(st, 1, r->t);
        sqlite3_bind_text(st, 2, r->agent, -1, SQLITE_STATIC);
        if (r->syscall_id) sqlite3_bind_int64(st, 3, (sqlite3_int64)r->syscall_id);
        else sqlite3_bind_null(st, 3);
        sqlite3_bind_text(st, 4, r->resource, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, r->action, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, r->decision, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 7, r->reason, -1, SQLITE_STATIC);
        if (r->request_id) sqlite3_bind_text(st, 8, r->request_id, -1, SQLITE_STATIC);
        else sqlite3_bind_null(st, 8);
        /* one bad row does not lose the others */
        if (sqlite3_step(st) != SQLITE_DONE)
            LOG_ERROR("access", "audit log: cannot write a row: %s", sqlite3_errmsg(db));
        sqlite3_reset(st);
    }
    sqlite3_clear_bindings(st);
    r = sqlite3_step(s->a_commit);
    sqlite3_reset(s->a_commit);
    if (r != SQLITE_DONE) rc = db_fail(db, "audit log: commit failed", err, errlen);
out:
    if (rc && !sqlite3_get_autocommit(db)) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&s->wmu);
    return rc;
}

static int sq_audit_query(struct acc_store *s, const char *agent, double since_s, int limit,
                          json_t **out, char *err, size_t errlen)
{
    *out = NULL;
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    json_t *rows = NULL;
    int rc = db_open(s->path, &db, err, errlen), r = SQLITE_DONE;
    /* the newest `limit` rows, returned oldest first */
    if (!rc && sqlite3_prepare_v2(db,
                                  "SELECT * FROM (SELECT id,t,agent,syscall_id,resource,action,"
                                  "decision,reason,request_id FROM audit WHERE (?1 IS NULL OR agent=?1) AND "
                                  "t>=?2 ORDER BY id DESC LIMIT ?3) ORDER BY id",
                                  -1, &st, NULL) != SQLITE_OK)
        rc = db_fail(db, "audit log query failed", err, errlen);
    if (!rc) {
        if (agent) sqlite3_bind_text(st, 1, agent, -1, SQLITE_STATIC);
        else sqlite3_bind_null(st, 1);
        sqlite3_bind_double(st, 2, since_s);
        sqlite3_bind_int(st, 3, limit);
        if (!(rows = json_array())) rc = AIOS_ENOMEM;
    }
    while (!rc && (r = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *o = json_object();
        json_object_set_new(o, "id", json_integer(sqlite3_column_int64(st, 0)));
        json_object_set_new(o, "time", json_real(sqlite3_column_double(st, 1)));
        json_object_set_new(o, "agent", json_string(col(st, 2)));
        json_object_set_new(o, "syscall_id", sqlite3_column_type(st, 3) == SQLITE_NULL
                                                 ? json_null()
                                                 : json_integer(sqlite3_column_int64(st, 3)));
        json_object_set_new(o, "resource", json_string(col(st, 4)));
        json_object_set_new(o, "action", json_string(col(st, 5)));
        json_object_set_new(o, "decision", json_string(col(st, 6)));
        json_object_set_new(o, "reason", json_string(col(st, 7)));
        json_object_set_new(o, "request_id", sqlite3_column_type(st, 8) == SQLITE_NULL
                                                 ? json_null()
                                                 : json_string(col(st, 8)));
        json_array_append_new(rows, o);
    }
    if (!rc && r != SQLITE_DONE) rc = db_fail(db, "audit log query failed", err, errlen);
    sqlite3_finalize(st);
    sqlite3_close(db);
    if (rc) {
        json_decref(rows);
        return rc;
    }
    *out = rows;
    return 0;
}

const struct acc_store_ops acc_store_sqlite = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .describe = sq_describe,
    .agents = sq_agents,
    .agent_put = sq_agent_put,
    .budgets = sq_budgets,
    .budgets_put = sq_budgets_put,
    .grants = sq_grants,
    .grant_put = sq_grant_put,
    .grant_delete = sq_grant_delete,
    .audit_append = sq_audit_append,
    .audit_query = sq_audit_query,
};
