/* The audit log: every access decision as one row of data_dir/audit.db.
 *
 * Table audit(id INTEGER PRIMARY KEY, t REAL (unix seconds), agent,
 * syscall_id, resource, action, decision, reason, request_id). SQLite in
 * WAL mode. request_id is the x-request-id of the HTTP request the
 * decision was made for (log_request_id() of the deciding thread), NULL
 * when none; an older file gets the column added when opened.
 *
 * Threads: callers (HTTP threads, tool pool threads) only copy the row into
 * an in-memory queue under `mu` and signal; one audit thread owns the
 * writer connection and writes whatever is queued in one transaction.
 * Readers (GET /access/audit) open their own connection per query. A full
 * queue (AUDIT_MAX_QUEUE rows) makes the caller wait: no decision is
 * dropped. acc_audit_flush waits until the queue is empty and written.
 * Ownership: rows are malloc'd copies freed by the writer. */
#include "access/access.h"

#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define AUDIT_MAX_QUEUE 4096

struct arow {
    struct arow *next;
    double t;
    uint64_t syscall_id;
    char *agent, *resource, *action, *decision, *reason;
    char *request_id; /* NULL: none */
};

struct acc_audit {
    char *path;
    sqlite3 *db; /* the writer's connection (audit thread only) */
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv, done_cv;
    struct arow *head, *tail;
    int n_queued;
    bool writing;
    bool stop;
};

static double wall_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void arow_free(struct arow *r)
{
    free(r->agent);
    free(r->resource);
    free(r->action);
    free(r->decision);
    free(r->reason);
    free(r->request_id);
    free(r);
}

static int open_db(const char *path, sqlite3 **out, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                            SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open the audit log %s: %s", path,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return AIOS_EIO;
    }
    sqlite3_busy_timeout(db, 30000);
    *out = db;
    return 0;
}

static void write_batch(struct acc_audit *a, struct arow *list)
{
    sqlite3_stmt *st = NULL;
    sqlite3_exec(a->db, "BEGIN", NULL, NULL, NULL);
    if (sqlite3_prepare_v2(a->db,
                           "INSERT INTO audit(t,agent,syscall_id,resource,action,decision,reason,"
                           "request_id) VALUES(?,?,?,?,?,?,?,?)",
                           -1, &st, NULL) != SQLITE_OK) {
        LOG_ERROR("access", "audit log: %s", sqlite3_errmsg(a->db));
        sqlite3_exec(a->db, "ROLLBACK", NULL, NULL, NULL);
        return;
    }
    for (struct arow *r = list; r; r = r->next) {
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
        if (sqlite3_step(st) != SQLITE_DONE)
            LOG_ERROR("access", "audit log: cannot write a row: %s", sqlite3_errmsg(a->db));
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    if (sqlite3_exec(a->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        LOG_ERROR("access", "audit log: commit failed: %s", sqlite3_errmsg(a->db));
}

static void *audit_main(void *ud)
{
    struct acc_audit *a = ud;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->head && !a->stop) pthread_cond_wait(&a->cv, &a->mu);
        if (!a->head && a->stop) break;
        struct arow *list = a->head;
        a->head = a->tail = NULL;
        a->n_queued = 0;
        a->writing = true;
        pthread_cond_broadcast(&a->done_cv); /* room in the queue */
        pthread_mutex_unlock(&a->mu);
        write_batch(a, list);
        while (list) {
            struct arow *n = list->next;
            arow_free(list);
            list = n;
        }
        pthread_mutex_lock(&a->mu);
        a->writing = false;
        pthread_cond_broadcast(&a->done_cv);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

int acc_audit_open(struct acc_audit **out, const char *path, char *err, size_t errlen)
{
    *out = NULL;
    struct acc_audit *a = calloc(1, sizeof *a);
    if (!a) return AIOS_ENOMEM;
    a->path = strdup(path);
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    pthread_cond_init(&a->done_cv, NULL);
    int rc = a->path ? open_db(path, &a->db, err, errlen) : AIOS_ENOMEM;
    if (rc) goto fail;
    char *emsg = NULL;
    if (sqlite3_exec(a->db,
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                     "CREATE TABLE IF NOT EXISTS audit(id INTEGER PRIMARY KEY, t REAL NOT NULL,"
                     " agent TEXT, syscall_id INTEGER, resource TEXT, action TEXT,"
                     " decision TEXT NOT NULL, reason TEXT);"
                     "CREATE INDEX IF NOT EXISTS audit_agent_t ON audit(agent, t);"
                     "CREATE TABLE IF NOT EXISTS agents(name TEXT PRIMARY KEY,"
                     " token_sha256 TEXT NOT NULL, created REAL NOT NULL);",
                     NULL, NULL, &emsg) != SQLITE_OK) {
        snprintf(err, errlen, "cannot set up the audit log %s: %s", path, emsg ? emsg : "?");
        sqlite3_free(emsg);
        rc = AIOS_EIO;
        goto fail;
    }
    /* files from before request ids: add the column (fails harmlessly when
     * it is there) */
    sqlite3_exec(a->db, "ALTER TABLE audit ADD COLUMN request_id TEXT", NULL, NULL, NULL);
    if (pthread_create(&a->th, NULL, audit_main, a)) {
        snprintf(err, errlen, "cannot start the audit thread");
        rc = AIOS_ENOMEM;
        goto fail;
    }
    *out = a;
    return 0;
fail:
    if (a->db) sqlite3_close(a->db);
    free(a->path);
    free(a);
    return rc;
}

const char *acc_audit_path(struct acc_audit *a) { return a ? a->path : NULL; }

static char *dupz(const char *s) { return strdup(s ? s : ""); }

void acc_audit_add(struct acc_audit *a, const struct acc_audit_row *row)
{
    if (!a) return;
    struct arow *r = calloc(1, sizeof *r);
    if (!r) return;
    r->t = wall_s();
    r->syscall_id = row->syscall_id;
    r->agent = dupz(row->agent);
    r->resource = dupz(row->resource);
    r->action = dupz(row->action);
    r->decision = dupz(row->decision);
    r->reason = dupz(row->reason);
    const char *rid = log_request_id();
    if (rid && !(r->request_id = strdup(rid))) {
        arow_free(r);
        return;
    }
    if (!r->agent || !r->resource || !r->action || !r->decision || !r->reason) {
        LOG_ERROR("access", "audit log: out of memory; a %s decision is not recorded",
                  row->decision);
        arow_free(r);
        return;
    }
    LOG_DEBUG("access", "audit: %s %s %s %s: %s", r->agent, r->action, r->resource, r->decision,
              r->reason);
    pthread_mutex_lock(&a->mu);
    while (a->n_queued >= AUDIT_MAX_QUEUE && !a->stop) pthread_cond_wait(&a->done_cv, &a->mu);
    if (a->tail) a->tail->next = r;
    else a->head = r;
    a->tail = r;
    a->n_queued++;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

void acc_audit_flush(struct acc_audit *a)
{
    if (!a) return;
    pthread_mutex_lock(&a->mu);
    while (a->head || a->writing) pthread_cond_wait(&a->done_cv, &a->mu);
    pthread_mutex_unlock(&a->mu);
}

json_t *acc_audit_query(struct acc_audit *a, const char *agent, double since_s, int limit,
                        char *err, size_t errlen)
{
    acc_audit_flush(a);
    sqlite3 *db = NULL;
    if (open_db(a->path, &db, err, errlen)) return NULL;
    sqlite3_stmt *st = NULL;
    json_t *rows = NULL;
    /* the newest `limit` rows, returned oldest first */
    if (sqlite3_prepare_v2(db,
                           "SELECT * FROM (SELECT id,t,agent,syscall_id,resource,action,decision,"
                           "reason,request_id FROM audit WHERE (?1 IS NULL OR agent=?1) AND t>=?2 "
                           "ORDER BY id DESC LIMIT ?3) ORDER BY id",
                           -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "audit log query failed: %s", sqlite3_errmsg(db));
        goto out;
    }
    if (agent) sqlite3_bind_text(st, 1, agent, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, 1);
    sqlite3_bind_double(st, 2, since_s);
    sqlite3_bind_int(st, 3, limit);
    rows = json_array();
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *o = json_object();
        json_object_set_new(o, "id", json_integer(sqlite3_column_int64(st, 0)));
        json_object_set_new(o, "time", json_real(sqlite3_column_double(st, 1)));
        json_object_set_new(o, "agent", json_string((const char *)sqlite3_column_text(st, 2)));
        json_object_set_new(o, "syscall_id", sqlite3_column_type(st, 3) == SQLITE_NULL
                                                 ? json_null()
                                                 : json_integer(sqlite3_column_int64(st, 3)));
        json_object_set_new(o, "resource", json_string((const char *)sqlite3_column_text(st, 4)));
        json_object_set_new(o, "action", json_string((const char *)sqlite3_column_text(st, 5)));
        json_object_set_new(o, "decision", json_string((const char *)sqlite3_column_text(st, 6)));
        json_object_set_new(o, "reason", json_string((const char *)sqlite3_column_text(st, 7)));
        json_object_set_new(o, "request_id", sqlite3_column_type(st, 8) == SQLITE_NULL
                                                 ? json_null()
                                                 : json_string((const char *)sqlite3_column_text(st, 8)));
        json_array_append_new(rows, o);
    }
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "audit log query failed: %s", sqlite3_errmsg(db));
        json_decref(rows);
        rows = NULL;
    }
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rows;
}

void acc_audit_close(struct acc_audit *a)
{
    if (!a) return;
    pthread_mutex_lock(&a->mu);
    a->stop = true;
    pthread_cond_broadcast(&a->cv);
    pthread_cond_broadcast(&a->done_cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->th, NULL);
    sqlite3_close(a->db);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    pthread_cond_destroy(&a->done_cv);
    free(a->path);
    free(a);
}
