/* The SQLite store of the responses manager (resp_store_sqlite; see
 * resp.h). One database, responses.db under data_dir, in WAL mode with
 * synchronous=NORMAL (a committed response survives a crash of the
 * process):
 *
 *   responses(id TEXT PRIMARY KEY, agent TEXT NOT NULL, prev_id TEXT,
 *             model TEXT NOT NULL, created_at INTEGER NOT NULL,
 *             input TEXT NOT NULL, response TEXT NOT NULL)
 *
 * input and response are JSON text. Every read and delete names the agent
 * in its WHERE clause, so another agent's row is never returned or removed:
 * it is absent, like an unknown id.
 *
 * Connections and locking: one connection, its statements prepared once,
 * used under `mu`. `mu` is a leaf lock (nothing else is taken while it is
 * held); the statements are single-row primary-key operations, so a call
 * holds it for well under a millisecond besides the WAL commit. */
#include "resp/resp.h"

#include "util/err.h"
#include "util/log.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ST_PUT, ST_GET, ST_DEL, ST__N };

static const char *const g_sql[ST__N] = {
    "INSERT INTO responses(id, agent, prev_id, model, created_at, input, response) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    "SELECT id, agent, prev_id, model, created_at, input, response FROM responses "
    "WHERE id = ?1 AND agent = ?2",
    "DELETE FROM responses WHERE id = ?1 AND agent = ?2",
};

struct resp_store {
    pthread_mutex_t mu;
    sqlite3 *db;
    sqlite3_stmt *st[ST__N];
};

static void sq_close(struct resp_store *s)
{
    if (!s) return;
    for (int i = 0; i < ST__N; i++) sqlite3_finalize(s->st[i]);
    sqlite3_close(s->db);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static int sq_open(struct resp_store **out, const char *path, char *err, size_t errlen)
{
    *out = NULL;
    struct resp_store *s = calloc(1, sizeof *s);
    if (!s) return AIOS_ENOMEM;
    pthread_mutex_init(&s->mu, NULL);
    int rc = sqlite3_open_v2(path, &s->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) goto fail;
    sqlite3_busy_timeout(s->db, 5000);
    rc = sqlite3_exec(s->db,
                      "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                      "CREATE TABLE IF NOT EXISTS responses(id TEXT PRIMARY KEY, agent TEXT NOT "
                      "NULL, prev_id TEXT, model TEXT NOT NULL, created_at INTEGER NOT NULL, "
                      "input TEXT NOT NULL, response TEXT NOT NULL)",
                      NULL, NULL, NULL);
    if (rc != SQLITE_OK) goto fail;
    for (int i = 0; i < ST__N; i++)
        if ((rc = sqlite3_prepare_v2(s->db, g_sql[i], -1, &s->st[i], NULL)) != SQLITE_OK) goto fail;
    *out = s;
    return 0;
fail:
    snprintf(err, errlen, "responses database %s: %s", path,
             s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
    sq_close(s);
    return rc == SQLITE_NOMEM ? AIOS_ENOMEM : AIOS_EIO;
}

static int sq_put(struct resp_store *s, const struct resp_rec *r)
{
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st = s->st[ST_PUT];
    sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->agent, -1, SQLITE_STATIC);
    if (r->prev_id) sqlite3_bind_text(st, 3, r->prev_id, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, 3);
    sqlite3_bind_text(st, 4, r->model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, r->created_at);
    sqlite3_bind_text(st, 6, r->input, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, r->response, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) LOG_WARN("responses", "store %s: %s", r->id, sqlite3_errmsg(s->db));
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    pthread_mutex_unlock(&s->mu);
    return rc == SQLITE_DONE ? 0 : rc == SQLITE_FULL ? AIOS_ENOSPC : AIOS_EIO;
}

static char *col_dup(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? strdup((const char *)t) : NULL;
}

static int sq_get(struct resp_store *s, const char *agent, const char *id, struct resp_rec **out)
{
    *out = NULL;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st = s->st[ST_GET];
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, agent, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int ret = 0;
    if (rc == SQLITE_ROW) {
        struct resp_rec *r = calloc(1, sizeof *r);
        if (r) {
            r->id = col_dup(st, 0);
            r->agent = col_dup(st, 1);
            r->prev_id = col_dup(st, 2);
            r->model = col_dup(st, 3);
            r->created_at = sqlite3_column_int64(st, 4);
            r->input = col_dup(st, 5);
            r->response = col_dup(st, 6);
        }
        if (!r || !r->id || !r->agent || !r->model || !r->input || !r->response) {
            resp_rec_free(r);
            ret = AIOS_ENOMEM;
        } else {
            *out = r;
        }
    } else if (rc == SQLITE_DONE) {
        ret = AIOS_ENOTFOUND;
    } else {
        LOG_WARN("responses", "read %s: %s", id, sqlite3_errmsg(s->db));
        ret = AIOS_EIO;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    pthread_mutex_unlock(&s->mu);
    return ret;
}

static int sq_remove(struct resp_store *s, const char *agent, const char *id)
{
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st = s->st[ST_DEL];
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, agent, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int ret = rc != SQLITE_DONE ? AIOS_EIO : sqlite3_changes(s->db) ? 0 : AIOS_ENOTFOUND;
    if (rc != SQLITE_DONE) LOG_WARN("responses", "delete %s: %s", id, sqlite3_errmsg(s->db));
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    pthread_mutex_unlock(&s->mu);
    return ret;
}

const struct resp_store_ops resp_store_sqlite = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .put = sq_put,
    .get = sq_get,
    .remove = sq_remove,
};
