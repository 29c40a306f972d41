/* The storage manager's SQLite store (sto_sqlite_store, the one
 * implementation of sto_store.h's table): the only code that touches SQLite.
 *
 * One database, root_dir/.lsfs/lsfs.db, in WAL mode with synchronous=FULL,
 * so a commit is on disk when sqlite3_step returns. Tables:
 *   blobs(sha, size, refs, data)    content-addressed version contents; one
 *                                   row per distinct content (dedup), refs =
 *                                   versions pointing at it, deleted at 0
 *   owner_blobs(owner, sha, refs)   the same count per owner: an owner is
 *                                   charged a content once, however many of
 *                                   its versions name it
 *   files(owner, path, sha, size, ..., next_seq, dirty, n_index)
 *                                   the current version of each file; n_index
 *                                   = bytes of it in the search index
 *   versions(file_id, seq, sha, size, t_us, kind)
 *                                   the history, newest max_versions kept
 *   usage(owner, n_bytes, n_files)  quota accounting: n_bytes = every
 *                                   distinct content of every kept version
 *                                   of the owner's files + their indexed text
 *   grants(owner, path, grantee, mode, t_created_us, t_expires_us)
 *   links(hash, owner, path, t_created_us, t_expires_us)
 *                                   read-only share links (GET /s/TOKEN):
 *                                   hash = SHA-256 of the token, which is
 *                                   never stored; a revoked link is deleted
 *   fts (FTS5: body, owner, path)   search over current text contents,
 *                                   rowid = files.id
 * Invariant: after every committed transaction usage.n_bytes equals the
 * sum of blobs.size over the owner's owner_blobs plus the sum of its
 * files.n_index, usage.n_files its number of files, and blobs.refs
 * (owner_blobs.refs) the number of versions (of that owner) naming each sha.
 * A write is refused inside its transaction when the usage it would leave
 * is over the quota and larger than before.
 * Space: the database uses incremental auto-vacuum; pages freed by pruned
 * versions are reused by later writes, and after a delete the free pages
 * are given back to the filesystem (incremental_vacuum, then a truncating
 * WAL checkpoint), so deleting data shrinks the data directory.
 * files.dirty = 1 means "this version committed, the rename on disk may not
 * have happened yet"; sto_open rewrites such files from their blob.
 *
 * Threads: writes of versions (put, clean, forget) and of vectors are jobs
 * for one writer connection, run by group commit (util/sqlgc.c): the writes
 * waiting at one moment share one transaction and one fsync, and each call
 * returns only after the commit that covers it (clean and vectors are
 * derived data: committed without an fsync, not kept waiting for one).
 * Reads, and the rare grant, revoke and vec_model, use the calling thread's
 * own connection through a pthread key (opened on first use, closed when
 * the thread exits or at close); in WAL mode a reader never waits for the
 * writer or its fsync, and the rare writers queue on SQLite's write lock
 * (busy_wait: short sleeps). conns_mu only guards the list of connections
 * and is never held with another lock; the group commit's lock is a leaf. */
#include "storage/sto_store.h"

#include "llm/embed.h"

#include "util/err.h"
#include "util/log.h"
#include "util/sqlgc.h"
#include "util/stmtcache.h"
#include "util/util.h"

#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct sto_conn {
    sqlite3 *db;
    struct sto_store *s;
    struct sto_conn *prev, *next;
};

struct sto_store {
    struct sto_store_cfg cfg;  /* root_dir not kept */
    char *db_path;             /* root_dir/.lsfs/lsfs.db */
    pthread_key_t key;         /* this thread's struct sto_conn */
    bool key_made;
    pthread_mutex_t conns_mu;  /* guards conns (leaf lock) */
    struct sto_conn *conns;    /* every open connection, for close */
    sqlite3 *writer;           /* the group commit's connection (its leader only) */
    struct sqlgc *gc;
    atomic_uint n_forgets;     /* every STO_MERGE_EVERY-th delete merges the index */
};

/* a delete leaves tombstones in the FTS5 index until its segments merge:
 * every this many deletes, merge (bounded work) */
#define STO_MERGE_EVERY 32

/* what a dry put job answers when the write fits: not 0, so that the group
 * commit undoes what it did */
#define STO_DRY_FITS 1

static const char *SCHEMA =
    "CREATE TABLE IF NOT EXISTS blobs(id INTEGER PRIMARY KEY, sha TEXT NOT NULL UNIQUE,"
    "  size INTEGER NOT NULL, refs INTEGER NOT NULL, data BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS files(id INTEGER PRIMARY KEY, owner TEXT NOT NULL,"
    "  path TEXT NOT NULL, sha TEXT NOT NULL, size INTEGER NOT NULL,"
    "  t_created_us INTEGER NOT NULL, t_modified_us INTEGER NOT NULL,"
    "  next_seq INTEGER NOT NULL, dirty INTEGER NOT NULL DEFAULT 0,"
    "  n_index INTEGER NOT NULL DEFAULT 0, UNIQUE(owner, path));"
    "CREATE TABLE IF NOT EXISTS owner_blobs(owner TEXT NOT NULL, sha TEXT NOT NULL,"
    "  refs INTEGER NOT NULL, PRIMARY KEY(owner, sha));"
    "CREATE INDEX IF NOT EXISTS files_dirty ON files(dirty) WHERE dirty = 1;"
    "CREATE TABLE IF NOT EXISTS versions(file_id INTEGER NOT NULL, seq INTEGER NOT NULL,"
    "  sha TEXT NOT NULL, size INTEGER NOT NULL, t_us INTEGER NOT NULL, kind TEXT NOT NULL,"
    "  PRIMARY KEY(file_id, seq));"
    "CREATE TABLE IF NOT EXISTS usage(owner TEXT PRIMARY KEY, n_bytes INTEGER NOT NULL,"
    "  n_files INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS grants(owner TEXT NOT NULL, path TEXT NOT NULL,"
    "  grantee TEXT NOT NULL, mode INTEGER NOT NULL, t_created_us INTEGER NOT NULL,"
    "  t_expires_us INTEGER NOT NULL, PRIMARY KEY(owner, path, grantee));"
    "CREATE INDEX IF NOT EXISTS grants_grantee ON grants(grantee, owner);"
    "CREATE TABLE IF NOT EXISTS links(hash TEXT PRIMARY KEY, owner TEXT NOT NULL,"
    "  path TEXT NOT NULL, t_created_us INTEGER NOT NULL, t_expires_us INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS links_owner ON links(owner, path);"
    "CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(body, owner UNINDEXED, path UNINDEXED,"
    "  tokenize = 'unicode61');"
    /* embedding vectors of indexed contents (hybrid search, when
     * embedding.model is set): rowid = files.id, dropped whenever the fts
     * row is (a new version, a delete); vec_meta.model names the model */
    "CREATE TABLE IF NOT EXISTS fts_vec(rowid INTEGER PRIMARY KEY, owner TEXT NOT NULL,"
    "  vec BLOB NOT NULL);"
    "CREATE INDEX IF NOT EXISTS fts_vec_owner ON fts_vec(owner);"
    "CREATE TABLE IF NOT EXISTS vec_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);";

static int sql_err(sqlite3 *db, const char *what, char *err, size_t errlen)
{
    if (err) snprintf(err, errlen, "storage database: %s: %s", what, db ? sqlite3_errmsg(db) : "no connection");
    return AIOS_EIO;
}

static void conn_destroy(void *p)
{
    struct sto_conn *c = p;
    if (!c) return;
    struct sto_store *s = c->s;
    pthread_mutex_lock(&s->conns_mu);
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    pthread_mutex_unlock(&s->conns_mu);
    stc_forget(c->db);
    sqlite3_close_v2(c->db);
    free(c);
}

/* SQLite's own busy handler sleeps 1, 2, 5 ... 100 ms between tries; the
 * writes that meet here are a commit or a checkpoint of well under a
 * millisecond plus an fsync. Retry every 50 us for the first 5 ms, then
 * every millisecond, for about 30 s in all. */
static int busy_wait(void *ud, int n)
{
    (void)ud;
    if (n >= 30100) return 0;
    struct timespec ts = {0, n < 100 ? 50000L : 1000000L};
    nanosleep(&ts, NULL);
    return 1;
}

static sqlite3 *conn_open(struct sto_store *s, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(s->db_path, &db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        if (err) snprintf(err, errlen, "cannot open %s: %s", s->db_path, db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close_v2(db);
        return NULL;
    }
    sqlite3_busy_handler(db, busy_wait, NULL);
    char *msg = NULL;
    /* auto_vacuum first: on a new database it only takes before WAL mode
     * and the first table (an older database is converted in sq_schema) */
    if (sqlite3_exec(db, "PRAGMA auto_vacuum=INCREMENTAL; PRAGMA journal_mode=WAL;"
                     " PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF;"
                     " PRAGMA journal_size_limit=67108864;",
                     NULL, NULL, &msg) != SQLITE_OK) {
        if (err) snprintf(err, errlen, "cannot configure %s: %s", s->db_path, msg ? msg : "?");
        sqlite3_free(msg);
        sqlite3_close_v2(db);
        return NULL;
    }
    return db;
}

static sqlite3 *sq_db(struct sto_store *s)
{
    struct sto_conn *c = pthread_getspecific(s->key);
    if (c) return c->db;
    char err[512] = "";
    sqlite3 *db = conn_open(s, err, sizeof err);
    if (!db) {
        LOG_ERROR("storage", "%s", err);
        return NULL;
    }
    c = calloc(1, sizeof *c);
    if (!c) {
        sqlite3_close_v2(db);
        return NULL;
    }
    c->db = db;
    c->s = s;
    pthread_mutex_lock(&s->conns_mu);
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    pthread_mutex_unlock(&s->conns_mu);
    pthread_setspecific(s->key, c);
    return db;
}

static void sq_close(struct sto_store *s)
{
    if (!s) return;
    if (s->key_made) pthread_key_delete(s->key);
    sqlgc_close(s->gc);
    stc_forget(s->writer);
    sqlite3_close_v2(s->writer);
    struct sto_conn *c = s->conns;
    while (c) {
        struct sto_conn *n = c->next;
        stc_forget(c->db);
        sqlite3_close_v2(c->db);
        free(c);
        c = n;
    }
    pthread_mutex_destroy(&s->conns_mu);
    free(s->db_path);
    free(s);
}

static void rollback(sqlite3 *db);

static int one_int(sqlite3 *db, const char *sql, int64_t *v)
{
    sqlite3_stmt *st = NULL;
    *v = 0;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return AIOS_EIO;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : AIOS_EIO;
}

/* Create the tables, or bring a database of an earlier layout (user_version
 * 0: usage counted current contents only, no auto-vacuum) to this one:
 * per-owner content counts and indexed bytes rebuilt from the versions and
 * the index, usage recomputed, the file rewritten once with incremental
 * auto-vacuum. */
static int sq_schema(sqlite3 *db, char *err, size_t errlen)
{
    int64_t ver = 0, has_files = 0;
    char *msg = NULL;
    if (one_int(db, "PRAGMA user_version", &ver) ||
        one_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 'files'", &has_files))
        return sql_err(db, "read the layout", err, errlen);
    if (has_files && ver < 1) /* may fail: the column exists already */
        sqlite3_exec(db, "ALTER TABLE files ADD COLUMN n_index INTEGER NOT NULL DEFAULT 0", NULL,
                     NULL, NULL);
    if (sqlite3_exec(db, SCHEMA, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "storage database: %s (is FTS5 available?)", msg ? msg : "?");
        sqlite3_free(msg);
        return AIOS_EIO;
    }
    if (ver >= 1) return 0;
    if (has_files) {
        static const char *MIGRATE =
            "BEGIN IMMEDIATE;"
            "DELETE FROM owner_blobs;"
            "INSERT INTO owner_blobs(owner, sha, refs) SELECT f.owner, v.sha, count(*)"
            "  FROM versions v JOIN files f ON f.id = v.file_id GROUP BY f.owner, v.sha;"
            "UPDATE files SET n_index = coalesce((SELECT length(CAST(body AS BLOB)) FROM fts"
            "  WHERE fts.rowid = files.id), 0);"
            "DELETE FROM usage;"
            "INSERT INTO usage(owner, n_bytes, n_files) SELECT f.owner, sum(f.n_index) +"
            "  (SELECT coalesce(sum(b.size), 0) FROM owner_blobs ob JOIN blobs b ON b.sha = ob.sha"
            "   WHERE ob.owner = f.owner), count(*) FROM files f GROUP BY f.owner;"
            "COMMIT;";
        if (sqlite3_exec(db, MIGRATE, NULL, NULL, &msg) != SQLITE_OK) {
            snprintf(err, errlen, "storage database: recounting usage: %s", msg ? msg : "?");
            sqlite3_free(msg);
            rollback(db);
            return AIOS_EIO;
        }
        LOG_INFO("storage", "storage database upgraded: quotas now count every kept version; "
                 "rewriting it once with incremental auto-vacuum");
    }
    int64_t av = 0;
    if (one_int(db, "PRAGMA auto_vacuum", &av) == 0 && av != 2) {
        if (sqlite3_exec(db, "PRAGMA auto_vacuum=INCREMENTAL; VACUUM", NULL, NULL, &msg) != SQLITE_OK) {
            LOG_WARN("storage", "VACUUM failed (%s); space of deleted data is reused but not "
                     "given back until it succeeds at a later start", msg ? msg : "?");
            sqlite3_free(msg);
            return 0; /* user_version stays 0: tried again at the next start */
        }
    }
    if (sqlite3_exec(db, "PRAGMA user_version = 1", NULL, NULL, NULL) != SQLITE_OK)
        return sql_err(db, "set the layout version", err, errlen);
    return 0;
}

static int sq_open(struct sto_store **out, const struct sto_store_cfg *c, char *err, size_t errlen)
{
    *out = NULL;
    struct sto_store *s = calloc(1, sizeof *s);
    if (!s) return AIOS_ENOMEM;
    s->cfg = *c;
    s->cfg.root_dir = NULL;
    pthread_mutex_init(&s->conns_mu, NULL);
    if (asprintf(&s->db_path, "%s/.lsfs/lsfs.db", c->root_dir) < 0) {
        s->db_path = NULL;
        sq_close(s);
        return AIOS_ENOMEM;
    }
    if (pthread_key_create(&s->key, conn_destroy) != 0) {
        snprintf(err, errlen, "out of thread keys");
        sq_close(s);
        return AIOS_ENOMEM;
    }
    s->key_made = true;
    int rc = 0;
    sqlite3 *db = sq_db(s);
    if (!db) {
        snprintf(err, errlen, "cannot open the storage database %s", s->db_path);
        rc = AIOS_EIO;
    } else {
        rc = sq_schema(db, err, errlen);
    }
    if (!rc && !(s->writer = conn_open(s, err, errlen))) rc = AIOS_EIO;
    if (!rc && sqlgc_open(&s->gc, s->writer, s->writer, true)) {
        snprintf(err, errlen, "storage database %s: cannot prepare the group commit", s->db_path);
        rc = AIOS_EIO;
    }
    if (rc) {
        sq_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* ---- small helpers: prepare + bind from a type string ----
 * t: const char * (text), i: int64_t, b: const void *, size_t (blob).
 * Statements come from the connection's cache (util/stmtcache.h) and go
 * back with stc_put, never sqlite3_finalize. */
static sqlite3_stmt *vprep(sqlite3 *db, const char *sql, const char *types, va_list ap)
{
    sqlite3_stmt *st = stc_get(db, sql); /* prepared once per connection */
    if (!st) {
        LOG_ERROR("storage", "prepare failed: %s: %s", sqlite3_errmsg(db), sql);
        return NULL;
    }
    for (int i = 0; types[i]; i++) {
        switch (types[i]) {
        case 't': sqlite3_bind_text(st, i + 1, va_arg(ap, const char *), -1, SQLITE_TRANSIENT); break;
        case 'i': sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t)); break;
        case 'b': {
            const void *p = va_arg(ap, const void *);
            size_t n = va_arg(ap, size_t);
            sqlite3_bind_blob64(st, i + 1, n ? p : "", n, SQLITE_STATIC);
            break;
        }
        }
    }
    return st;
}

static sqlite3_stmt *prep(sqlite3 *db, const char *sql, const char *types, ...)
{
    va_list ap;
    va_start(ap, types);
    sqlite3_stmt *st = vprep(db, sql, types, ap);
    va_end(ap);
    return st;
}

/* run a statement with no result rows; 0 or AIOS_EIO */
static int EXEC(sqlite3 *db, const char *sql, const char *types, ...)
{
    va_list ap;
    va_start(ap, types);
    sqlite3_stmt *st = vprep(db, sql, types, ap);
    va_end(ap);
    int rc = st && sqlite3_step(st) == SQLITE_DONE ? 0 : AIOS_EIO;
    if (rc) LOG_ERROR("storage", "%s: %s", sql, sqlite3_errmsg(db));
    stc_put(st);
    return rc;
}

static int begin(sqlite3 *db) { return sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK ? 0 : AIOS_EIO; }
static int commit(sqlite3 *db) { return sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK ? 0 : AIOS_EIO; }
static void rollback(sqlite3 *db) { sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL); }

static int blob_unref(sqlite3 *db, const char *sha)
{
    if (EXEC(db, "UPDATE blobs SET refs = refs - 1 WHERE sha = ?", "t", sha)) return AIOS_EIO;
    return EXEC(db, "DELETE FROM blobs WHERE sha = ? AND refs <= 0", "t", sha);
}

/* One more version of owner names sha (size bytes): *delta grows by size
 * when it is the owner's first. */
static int owner_ref(sqlite3 *db, const char *owner, const char *sha, int64_t size, int64_t *delta)
{
    if (EXEC(db, "UPDATE owner_blobs SET refs = refs + 1 WHERE owner = ? AND sha = ?", "tt", owner,
             sha))
        return AIOS_EIO;
    if (sqlite3_changes(db) > 0) return 0;
    *delta += size;
    return EXEC(db, "INSERT INTO owner_blobs(owner, sha, refs) VALUES(?, ?, 1)", "tt", owner, sha);
}

/* One version fewer: *delta shrinks by size when it was the owner's last. */
static int owner_unref(sqlite3 *db, const char *owner, const char *sha, int64_t size,
                       int64_t *delta)
{
    if (EXEC(db, "UPDATE owner_blobs SET refs = refs - 1 WHERE owner = ? AND sha = ?", "tt", owner,
             sha))
        return AIOS_EIO;
    if (EXEC(db, "DELETE FROM owner_blobs WHERE owner = ? AND sha = ? AND refs <= 0", "tt", owner,
             sha))
        return AIOS_EIO;
    if (sqlite3_changes(db) > 0) *delta -= size;
    return 0;
}

/* a version (owner, sha, size) goes: both counts */
static int version_unref(sqlite3 *db, const char *owner, const char *sha, int64_t size,
                         int64_t *delta)
{
    return blob_unref(db, sha) || owner_unref(db, owner, sha, size, delta) ? AIOS_EIO : 0;
}

/* Give the free pages of the database back to the filesystem and empty
 * the write-ahead log (after a delete; not under a transaction). Failing
 * here only leaves the space for reuse by later writes. */
static void reclaim(struct sto_store *s, sqlite3 *db)
{
    if ((atomic_fetch_add(&s->n_forgets, 1) + 1) % STO_MERGE_EVERY == 0 &&
        sqlite3_exec(db, "INSERT INTO fts(fts, rank) VALUES('merge', -16)", NULL, NULL, NULL) !=
            SQLITE_OK)
        LOG_WARN("storage", "merging the search index: %s", sqlite3_errmsg(db));
    if (sqlite3_exec(db, "PRAGMA incremental_vacuum", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL) != SQLITE_OK)
        LOG_WARN("storage", "giving freed space back: %s (it is reused by later writes)",
                 sqlite3_errmsg(db));
}

static int sq_file(struct sto_store *s, const char *owner, const char *path, struct sto_file_info *fi)
{
    memset(fi, 0, sizeof *fi);
    sqlite3 *db = sq_db(s);
    if (!db) return AIOS_EIO;
    sqlite3_stmt *st = prep(db,
                            "SELECT f.id, f.sha, f.size, f.t_created_us, f.t_modified_us, f.dirty,"
                            " (SELECT count(*) FROM versions v WHERE v.file_id = f.id), f.next_seq"
                            " FROM files f WHERE owner = ? AND path = ?",
                            "tt", owner, path);
    if (!st) return AIOS_EIO;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        fi->id = sqlite3_column_int64(st, 0);
        snprintf(fi->sha, sizeof fi->sha, "%s", (const char *)sqlite3_column_text(st, 1));
        fi->size = sqlite3_column_int64(st, 2);
        fi->t_created_us = sqlite3_column_int64(st, 3);
        fi->t_modified_us = sqlite3_column_int64(st, 4);
        fi->dirty = sqlite3_column_int(st, 5) != 0;
        fi->n_versions = sqlite3_column_int(st, 6);
        fi->next_seq = sqlite3_column_int64(st, 7);
        rc = 0;
    } else {
        rc = rc == SQLITE_DONE ? AIOS_ENOTFOUND : AIOS_EIO;
    }
    stc_put(st);
    return rc;
}

static int usage_of(sqlite3 *db, const char *owner, int64_t *bytes, int64_t *files)
{
    *bytes = *files = 0;
    sqlite3_stmt *st = prep(db, "SELECT n_bytes, n_files FROM usage WHERE owner = ?", "t", owner);
    if (!st) return AIOS_EIO;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *bytes = sqlite3_column_int64(st, 0);
        *files = sqlite3_column_int64(st, 1);
    }
    stc_put(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : AIOS_EIO;
}

static int sq_usage(struct sto_store *s, const char *owner, int64_t *bytes, int64_t *files)
{
    *bytes = *files = 0;
    sqlite3 *db = sq_db(s);
    return db ? usage_of(db, owner, bytes, files) : AIOS_EIO;
}

/* a write: fn(writer db, arg) in the next group commit (see the top) */
static int write_job(struct sto_store *s, int (*fn)(void *db, void *arg), void *arg, bool durable)
{
    struct sqlgc_job j = {.fn = fn, .arg = arg, .durable = durable};
    return sqlgc_run(s->gc, &j);
}

struct put_args {
    struct sto_store *s;
    const char *owner, *path, *data, *sha, *kind;
    size_t n, n_index;
    bool dry; /* only check that it fits: the job answers STO_DRY_FITS */
    int64_t *seq;
    int *http;
    char *err;
    size_t errlen;
};

/* sq_put's transaction (a group commit job on the writer) */
static int put_job(void *conn, void *arg)
{
    sqlite3 *db = conn;
    struct put_args *a = arg;
    struct sto_store *s = a->s;
    const char *owner = a->owner, *path = a->path, *data = a->data, *sha = a->sha;
    const char *kind = a->kind;
    size_t n = a->n, n_index = a->n_index;
    bool dry = a->dry;
    char *err = a->err;
    size_t errlen = a->errlen;
    int *http = a->http;
    int64_t now = util_wall_us(), id = 0, old_index = 0, next_seq = 1;
    bool exists = false;
    sqlite3_stmt *st = prep(db, "SELECT id, n_index, next_seq FROM files WHERE owner = ? AND path = ?",
                            "tt", owner, path);
    if (!st) goto sqlfail;
    if (sqlite3_step(st) == SQLITE_ROW) {
        exists = true;
        id = sqlite3_column_int64(st, 0);
        old_index = sqlite3_column_int64(st, 1);
        next_seq = sqlite3_column_int64(st, 2);
    }
    stc_put(st);

    int64_t ub, uf;
    if (usage_of(db, owner, &ub, &uf)) goto sqlfail;
    int64_t nf = uf + (exists ? 0 : 1);
    if (s->cfg.quota_files > 0 && nf > s->cfg.quota_files && !exists) {
        snprintf(err, errlen, "file quota exceeded: the agent already has %lld files, the limit "
                 "is %lld (storage.quota_files); delete files first",
                 (long long)uf, (long long)s->cfg.quota_files);
        *http = 507;
        return AIOS_ETOOBIG;
    }
    /* what the agent holds changes by: the content if it is new to the
     * agent, the indexed text, minus contents only pruned versions held */
    int64_t delta = (int64_t)n_index - old_index;
    if (owner_ref(db, owner, sha, (int64_t)n, &delta)) goto sqlfail;

    if (exists) {
        if (EXEC(db, "UPDATE files SET sha = ?, size = ?, t_modified_us = ?, next_seq = ?,"
                 " dirty = 1, n_index = ? WHERE id = ?", "tiiiii", sha, (int64_t)n, now,
                 next_seq + 1, (int64_t)n_index, id))
            goto sqlfail;
    } else {
        if (EXEC(db, "INSERT INTO files(owner, path, sha, size, t_created_us, t_modified_us,"
                 " next_seq, dirty, n_index) VALUES(?, ?, ?, ?, ?, ?, 2, 1, ?)", "tttiiii", owner,
                 path, sha, (int64_t)n, now, now, (int64_t)n_index))
            goto sqlfail;
        id = sqlite3_last_insert_rowid(db);
    }
    if (EXEC(db, "INSERT INTO versions(file_id, seq, sha, size, t_us, kind) VALUES(?, ?, ?, ?, ?, ?)",
             "iitiit", id, next_seq, sha, (int64_t)n, now, kind))
        goto sqlfail;
    /* prune: keep the newest max_versions */
    st = prep(db, "SELECT seq, sha, size FROM versions WHERE file_id = ? ORDER BY seq DESC"
              " LIMIT -1 OFFSET ?", "ii", id, (int64_t)s->cfg.max_versions);
    if (!st) goto sqlfail;
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t old = sqlite3_column_int64(st, 0), osize = sqlite3_column_int64(st, 2);
        char osha[65];
        snprintf(osha, sizeof osha, "%s", (const char *)sqlite3_column_text(st, 1));
        if (EXEC(db, "DELETE FROM versions WHERE file_id = ? AND seq = ?", "ii", id, old) ||
            version_unref(db, owner, osha, osize, &delta)) {
            stc_put(st);
            goto sqlfail;
        }
    }
    stc_put(st);
    int64_t nb = ub + delta;
    if (s->cfg.quota_bytes > 0 && nb > s->cfg.quota_bytes && delta > 0) {
        snprintf(err, errlen, "storage quota exceeded: the agent holds %lld bytes (every kept "
                 "version and its indexed text) and this write would make %lld, over its limit "
                 "of %lld (storage.quota_bytes); delete files or old versions, or write less",
                 (long long)ub, (long long)nb, (long long)s->cfg.quota_bytes);
        *http = 507;
        return AIOS_ETOOBIG;
    }
    if (dry) { /* would it fit: yes (the group commit undoes the job) */
        *http = 200;
        return STO_DRY_FITS;
    }
    /* the content itself, last: a refused write never copies it (a pruned
     * version of the same content may have just dropped the row) */
    if (EXEC(db, "UPDATE blobs SET refs = refs + 1 WHERE sha = ?", "t", sha)) goto sqlfail;
    if (sqlite3_changes(db) == 0 &&
        EXEC(db, "INSERT INTO blobs(sha, size, refs, data) VALUES(?, ?, 1, ?)", "tib", sha,
             (int64_t)n, data, n))
        goto sqlfail;
    if (EXEC(db, "DELETE FROM fts WHERE rowid = ?", "i", id)) goto sqlfail;
    if (EXEC(db, "DELETE FROM fts_vec WHERE rowid = ?", "i", id)) goto sqlfail;
    if (n_index > 0) {
        st = prep(db, "INSERT INTO fts(rowid, body, owner, path) VALUES(?, ?, ?, ?)", "i", id);
        if (!st) goto sqlfail;
        sqlite3_bind_text64(st, 2, data, n_index, SQLITE_STATIC, SQLITE_UTF8);
        sqlite3_bind_text(st, 3, owner, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, path, -1, SQLITE_STATIC);
        int src = sqlite3_step(st);
        stc_put(st);
        if (src != SQLITE_DONE) goto sqlfail;
    }
    if (EXEC(db, "INSERT INTO usage(owner, n_bytes, n_files) VALUES(?, ?, ?) ON CONFLICT(owner)"
             " DO UPDATE SET n_bytes = excluded.n_bytes, n_files = excluded.n_files",
             "tii", owner, nb, nf))
        goto sqlfail;
    *a->seq = next_seq;
    *http = 200;
    return 0;
sqlfail:
    sql_err(db, "write", err, errlen);
    if (sqlite3_errcode(db) == SQLITE_FULL) {
        *http = 507;
        return AIOS_ENOSPC;
    }
    *http = 500;
    return AIOS_EIO;
}

static int sq_put(struct sto_store *s, const char *owner, const char *path, const char *data, size_t n,
               const char *sha, const char *kind, size_t n_index, bool dry, int64_t *seq,
               int *http, char *err, size_t errlen, const struct sto_put_hook *hook)
{
    *http = 0;
    struct put_args a = {s, owner, path, data, sha, kind, n, n_index, dry, seq, http, err, errlen};
    /* a dry run changes nothing: no fsync to wait for */
    int rc;
    if (hook && !dry) {
        struct sqlgc_job j = {.fn = put_job, .arg = &a, .durable = true};
        rc = sqlgc_run_queued(s->gc, &j, hook->queued, hook->arg);
    } else {
        rc = write_job(s, put_job, &a, !dry);
    }
    if (dry && rc == STO_DRY_FITS) return 0;
    if (rc && (*http == 0 || *http == 200)) { /* the commit failed, not the job */
        *http = rc == AIOS_ENOSPC ? 507 : 500;
        snprintf(err, errlen, "storage database: write: %s",
                 rc == AIOS_ENOSPC ? "the disk is full" : "the commit failed (see the kernel log)");
    }
    return rc;
}

struct clean_args {
    int64_t file_id;
    const char *sha;
};

static int clean_job(void *conn, void *arg)
{
    struct clean_args *a = arg;
    return EXEC(conn, "UPDATE files SET dirty = 0 WHERE id = ? AND sha = ?", "it", a->file_id, a->sha);
}

static int sq_clean(struct sto_store *s, int64_t file_id, const char *sha)
{
    /* Not durable on purpose: losing this update only makes the start-up
     * repair rewrite the same content, so it waits for no fsync. */
    struct clean_args a = {file_id, sha};
    return write_job(s, clean_job, &a, false);
}

static int sq_each_dirty(struct sto_store *s, sto_dirty_fn fn, void *ud)
{
    sqlite3 *db = sq_db(s);
    if (!db) return AIOS_EIO;
    sqlite3_stmt *st = prep(db, "SELECT owner, path, id, sha FROM files WHERE dirty = 1", "");
    if (!st) return AIOS_EIO;
    /* collect first: fn writes to the same tables */
    json_t *rows = json_array();
    while (sqlite3_step(st) == SQLITE_ROW)
        json_array_append_new(rows, json_pack("[s,s,I,s]", sqlite3_column_text(st, 0),
                                              sqlite3_column_text(st, 1),
                                              (json_int_t)sqlite3_column_int64(st, 2),
                                              sqlite3_column_text(st, 3)));
    stc_put(st);
    size_t i;
    json_t *r;
    int rc = 0;
    json_array_foreach(rows, i, r) {
        int e = fn(ud, json_string_value(json_array_get(r, 0)), json_string_value(json_array_get(r, 1)),
                   json_integer_value(json_array_get(r, 2)), json_string_value(json_array_get(r, 3)));
        if (e) rc = e;
    }
    json_decref(rows);
    return rc;
}

static int sq_blob(struct sto_store *s, const char *sha, char **data, size_t *n)
{
    *data = NULL;
    *n = 0;
    sqlite3 *db = sq_db(s);
    if (!db) return AIOS_EIO;
    sqlite3_stmt *st = prep(db, "SELECT data FROM blobs WHERE sha = ?", "t", sha);
    if (!st) return AIOS_EIO;
    int rc = AIOS_ENOTFOUND;
    if (sqlite3_step(st) == SQLITE_ROW) {
        size_t len = (size_t)sqlite3_column_bytes(st, 0);
        const void *p = sqlite3_column_blob(st, 0);
        char *buf = malloc(len + 1);
        if (!buf) {
            rc = AIOS_ENOMEM;
        } else {
            if (len) memcpy(buf, p, len);
            buf[len] = 0;
            *data = buf;
            *n = len;
            rc = 0;
        }
    }
    stc_put(st);
    return rc;
}

static json_t *iso_time(int64_t t_us)
{
    char buf[40];
    return json_string(util_iso_time(buf, sizeof buf, t_us));
}

static int sq_history(struct sto_store *s, int64_t file_id, json_t **out)
{
    *out = NULL;
    sqlite3 *db = sq_db(s);
    if (!db) return AIOS_EIO;
    sqlite3_stmt *st = prep(db, "SELECT seq, sha, size, t_us, kind FROM versions WHERE file_id = ?"
                            " ORDER BY seq DESC", "i", file_id);
    if (!st) return AIOS_EIO;
    json_t *arr = json_array();
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t t = sqlite3_column_int64(st, 3);
        json_array_append_new(arr, json_pack("{s:I,s:s,s:I,s:o,s:f,s:I,s:s}", "version",
                                             (json_int_t)sqlite3_column_int64(st, 0), "sha256",
                                             sqlite3_column_text(st, 1), "size",
                                             (json_int_t)sqlite3_column_int64(st, 2), "time",
                                             iso_time(t), "timestamp", (double)t / 1e6, "t_us",
                                             (json_int_t)t, "kind",
                                             sqlite3_column_text(st, 4)));
    }
    stc_put(st);
    *out = arr;
    return 0;
}

static int sq_pick(struct sto_store *s, int64_t file_id, int n, int64_t t_us, char *sha, int64_t *seq,
                char *err, size_t errlen)
{
    sqlite3 *db = sq_db(s);
    if (!db) return AIOS_EIO;
    sqlite3_stmt *st;
    if (t_us > 0)
        st = prep(db, "SELECT sha, seq FROM versions WHERE file_id = ? AND t_us <= ?"
                  " ORDER BY seq DESC LIMIT 1", "ii", file_id, t_us);
    else
        st = prep(db, "SELECT sha, seq FROM versions WHERE file_id = ? ORDER BY seq DESC"
                  " LIMIT 1 OFFSET ?", "ii", file_id, (int64_t)n);
    if (!st) return AIOS_EIO;
    int rc = AIOS_ENOTFOUND;
    if (sqlite3_step(st) == SQLITE_ROW) {
        snprintf(sha, 65, "%s", (const char *)sqlite3_column_text(st, 0));
        *seq = sqlite3_column_int64(st, 1);
        rc = 0;
    }
    stc_put(st);
    if (rc == AIOS_ENOTFOUND) {
        if (t_us > 0) snprintf(err, errlen, "the file has no version at or before that time");
        else snprintf(err, errlen, "cannot go back %d version(s): the history holds fewer "
                      "(see the history operation; storage.max_versions limits it)", n);
    }
    return rc;
}

struct forget_args {
    const char *owner, *path;
    bool prefix;
    int *n_files;
};

static int forget_job(void *conn, void *arg)
{
    sqlite3 *db = conn;
    struct forget_args *a = arg;
    const char *owner = a->owner, *path = a->path;
    bool prefix = a->prefix;
    char pfx[STO_PATH_MAX + 2];
    snprintf(pfx, sizeof pfx, "%s/", path);
    sqlite3_stmt *st = prefix
        ? prep(db, "SELECT id, n_index FROM files WHERE owner = ? AND substr(path, 1, ?) = ?", "tit",
               owner, (int64_t)strlen(pfx), pfx)
        : prep(db, "SELECT id, n_index FROM files WHERE owner = ? AND path = ?", "tt", owner, path);
    if (!st) goto fail;
    int64_t delta = 0; /* what the owner holds changes by */
    json_t *ids = json_array();
    while (sqlite3_step(st) == SQLITE_ROW) {
        json_array_append_new(ids, json_integer(sqlite3_column_int64(st, 0)));
        delta -= sqlite3_column_int64(st, 1);
    }
    stc_put(st);
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v) {
        int64_t id = json_integer_value(v);
        st = prep(db, "SELECT sha, size FROM versions WHERE file_id = ?", "i", id);
        json_t *shas = json_array();
        while (st && sqlite3_step(st) == SQLITE_ROW)
            json_array_append_new(shas, json_pack("[s,I]", sqlite3_column_text(st, 0),
                                                  (json_int_t)sqlite3_column_int64(st, 1)));
        stc_put(st);
        size_t j;
        json_t *h;
        int bad = !st;
        json_array_foreach(shas, j, h)
            bad |= version_unref(db, owner, json_string_value(json_array_get(h, 0)),
                                 json_integer_value(json_array_get(h, 1)), &delta);
        json_decref(shas);
        if (bad || EXEC(db, "DELETE FROM versions WHERE file_id = ?", "i", id) ||
            EXEC(db, "DELETE FROM fts WHERE rowid = ?", "i", id) ||
            EXEC(db, "DELETE FROM fts_vec WHERE rowid = ?", "i", id) ||
            EXEC(db, "DELETE FROM files WHERE id = ?", "i", id)) {
            json_decref(ids);
            goto fail;
        }
    }
    int nf = (int)json_array_size(ids);
    json_decref(ids);
    if (nf && EXEC(db, "UPDATE usage SET n_bytes = n_bytes + ?, n_files = n_files - ? WHERE owner = ?",
                   "iit", delta, (int64_t)nf, owner))
        goto fail;
    *a->n_files = nf;
    return 0;
fail:
    return AIOS_EIO;
}

static int sq_forget(struct sto_store *s, const char *owner, const char *path, bool prefix, int *n_files)
{
    *n_files = 0;
    struct forget_args a = {owner, path, prefix, n_files};
    int rc = write_job(s, forget_job, &a, true);
    if (rc) *n_files = 0;
    /* after the commit, on this thread's own connection (outside the
     * writer's transactions): give the freed pages back */
    sqlite3 *db = rc || !*n_files ? NULL : sq_db(s);
    if (db) reclaim(s, db);
    return rc;
}

/* ---- search terms -> an FTS5 expression ---- */

/* any of t->any (OR), and each of t->all (AND); "" when t has no words */
static void fts_match(const struct sto_terms *t, char match[STO_MATCH_MAX])
{
    sto_terms_expr(t, '"', " OR ", " AND ", match);
}

static int sq_search(struct sto_store *s, const char *owner, const struct sto_terms *t, int k,
                     bool with_id, json_t **out, char *err, size_t errlen)
{
    *out = NULL;
    char match[STO_MATCH_MAX];
    fts_match(t, match);
    sqlite3 *db = sq_db(s);
    if (!db) return AIOS_EIO;
    sqlite3_stmt *st = NULL;
    /* two passes: the best k row ids by score alone, then the columns of
     * just those (a snippet tokenises the document: computed for every
     * match, it made the search linear in the matches, 24 ms p50 at 10k
     * files, docs/performance.md) */
    if (sqlite3_prepare_v2(db,
                           "SELECT f.path, f.size, f.t_modified_us, bm25(fts),"
                           " snippet(fts, 0, '[', ']', '...', 16), substr(fts.body, 1, 2000), f.id"
                           " FROM fts JOIN files f ON f.id = fts.rowid"
                           " WHERE fts MATCH ?1 AND fts.rowid IN (SELECT t.rowid FROM fts t"
                           "  JOIN files o ON o.id = t.rowid WHERE fts MATCH ?1 AND o.owner = ?2"
                           "  ORDER BY bm25(fts) LIMIT ?3)"
                           " ORDER BY bm25(fts)",
                           -1, &st, NULL) != SQLITE_OK)
        return sql_err(db, "search", err, errlen);
    sqlite3_bind_text(st, 1, match, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, owner, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 3, k);
    json_t *arr = json_array();
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *path = (const char *)sqlite3_column_text(st, 0);
        const char *base = strrchr(path, '/');
        json_array_append_new(
            arr, json_pack("{s:s,s:s,s:I,s:o,s:f,s:s,s:s,s:{s:s,s:s,s:o}}", "file_path", path,
                           "file_name", base ? base + 1 : path, "size",
                           (json_int_t)sqlite3_column_int64(st, 1), "last_modified",
                           iso_time(sqlite3_column_int64(st, 2)), "score",
                           -sqlite3_column_double(st, 3), "snippet",
                           (const char *)sqlite3_column_text(st, 4), "document_summary",
                           (const char *)sqlite3_column_text(st, 5), "metadata", "file_path",
                           path, "file_name", base ? base + 1 : path, "last_modified",
                           iso_time(sqlite3_column_int64(st, 2))));
        if (with_id)
            json_object_set_new(json_array_get(arr, json_array_size(arr) - 1), "_id",
                                json_integer(sqlite3_column_int64(st, 6)));
    }
    if (rc != SQLITE_DONE) {
        sql_err(db, "search", err, errlen);
        sqlite3_finalize(st);
        json_decref(arr);
        return AIOS_EIO;
    }
    sqlite3_finalize(st);
    *out = arr;
    return 0;
}

/* ---- embedding vectors (hybrid search) ----
 * Derived data: written after the version commits, without an fsync of
 * their own; an indexed file without one gets it at the next search. */

static int sq_vec_model(struct sto_store *s, const char *fingerprint, bool *reset)
{
    *reset = false;
    sqlite3 *db = sq_db(s);
    if (!db) return AIOS_EIO;
    sqlite3_stmt *st = prep(db, "SELECT value FROM vec_meta WHERE key = 'model'", "");
    if (!st) return AIOS_EIO;
    bool same = sqlite3_step(st) == SQLITE_ROW &&
                !strcmp((const char *)sqlite3_column_text(st, 0), fingerprint);
    stc_put(st);
    if (same) return 0;
    if (begin(db)) return AIOS_EIO;
    if (EXEC(db, "DELETE FROM fts_vec", "") ||
        EXEC(db, "INSERT OR REPLACE INTO vec_meta(key, value) VALUES('model', ?)", "t", fingerprint) ||
        commit(db)) {
        rollback(db);
        return AIOS_EIO;
    }
    *reset = true;
    return 0;
}

struct vec_args {
    int64_t file_id;
    const char *owner;
    const float *v;
    int dim;
    const char *text;
    size_t n;
};

static int vec_job(void *conn, void *arg)
{
    sqlite3 *db = conn;
    struct vec_args *a = arg;
    /* only while the file's indexed text still starts with the text that
     * was embedded: a search's back-fill runs without the owner's stripe,
     * and a write may have replaced (or a delete dropped) the file since
     * it read the text */
    sqlite3_stmt *st = prep(db, "INSERT OR REPLACE INTO fts_vec(rowid, owner, vec) SELECT rowid, ?, ?"
                            " FROM fts WHERE rowid = ? AND substr(body, 1, length(?4)) = ?4",
                            "tbi", a->owner, (const void *)a->v, (size_t)a->dim * sizeof *a->v,
                            a->file_id);
    int rc = AIOS_EIO;
    if (st) {
        sqlite3_bind_text64(st, 4, a->text, a->n, SQLITE_STATIC, SQLITE_UTF8);
        rc = sqlite3_step(st) == SQLITE_DONE ? 0 : AIOS_EIO;
        if (rc) LOG_ERROR("storage", "store a vector: %s", sqlite3_errmsg(db));
        stc_put(st);
    }
    return rc;
}

static int sq_vec_set(struct sto_store *s, int64_t file_id, const char *owner, const float *v, int dim,
                   const char *text, size_t n)
{
    struct vec_args a = {file_id, owner, v, dim, text, n};
    return write_job(s, vec_job, &a, false);
}

static int sq_vec_missing(struct sto_store *s, const char *owner, int limit, size_t max_bytes, json_t **out)
{
    *out = NULL;
    sqlite3 *db = sq_db(s);
    if (!db) return AIOS_EIO;
    sqlite3_stmt *st = prep(db, "SELECT f.rowid, substr(f.body, 1, ?) FROM fts f WHERE f.owner = ?"
                            " AND NOT EXISTS (SELECT 1 FROM fts_vec v WHERE v.rowid = f.rowid) LIMIT ?",
                            "iti", (int64_t)max_bytes, owner, (int64_t)limit);
    if (!st) return AIOS_EIO;
    json_t *arr = json_array();
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(arr, json_pack("[I,s]", (json_int_t)sqlite3_column_int64(st, 0),
                                             (const char *)sqlite3_column_text(st, 1)));
    stc_put(st);
    if (r != SQLITE_DONE) {
        json_decref(arr);
        return AIOS_EIO;
    }
    *out = arr;
    return 0;
}

static int sq_vec_scan(struct sto_store *s, const char *owner, const float *q, int dim,
                    struct emb_hit **out, size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    sqlite3 *db = sq_db(s);
    if (!db) return AIOS_EIO;
    sqlite3_stmt *st = prep(db, "SELECT rowid, vec FROM fts_vec WHERE owner = ?", "t", owner);
    if (!st) return AIOS_EIO;
    int rc = emb_scan(st, q, dim, out, n_out);
    stc_put(st);
    return rc;
}

static int sq_score_of(struct sto_store *s, const struct sto_terms *t, const int64_t *ids, size_t n,
                       double *bm25)
{
    for (size_t i = 0; i < n; i++) bm25[i] = 0;
    char match[STO_MATCH_MAX];
    fts_match(t, match);
    if (n == 0 || !match[0]) return 0;
    sqlite3 *db = sq_db(s);
    if (!db) return AIOS_EIO;
    json_t *arr = json_array();
    for (size_t i = 0; i < n && arr; i++) json_array_append_new(arr, json_integer(ids[i]));
    char *list = arr ? json_dumps(arr, JSON_COMPACT) : NULL;
    json_decref(arr);
    if (!list) return AIOS_ENOMEM;
    sqlite3_stmt *st = prep(db, "SELECT rowid, bm25(fts) FROM fts WHERE fts MATCH ?"
                            " AND rowid IN (SELECT value FROM json_each(?))", "tt", match, list);
    free(list);
    if (!st) return AIOS_EIO;
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        for (size_t i = 0; i < n; i++)
            if (ids[i] == id) bm25[i] = -sqlite3_column_double(st, 1);
    }
    stc_put(st);
    return r == SQLITE_DONE ? 0 : AIOS_EIO;
}

static int sq_search_row(struct sto_store *s, const char *owner, int64_t file_id,
                         const struct sto_terms *t, json_t **out)
{
    *out = NULL;
    char match[STO_MATCH_MAX];
    fts_match(t, match);
    sqlite3 *db = sq_db(s);
    if (!db) return AIOS_EIO;
    sqlite3_stmt *st = prep(db, "SELECT f.path, f.size, f.t_modified_us, substr(fts.body, 1, 2000)"
                            " FROM files f JOIN fts ON fts.rowid = f.id WHERE f.id = ? AND f.owner = ?",
                            "it", file_id, owner);
    if (!st) return AIOS_EIO;
    if (sqlite3_step(st) != SQLITE_ROW) {
        stc_put(st);
        return AIOS_ENOTFOUND;
    }
    const char *path = (const char *)sqlite3_column_text(st, 0);
    const char *base = strrchr(path, '/');
    const char *body = (const char *)sqlite3_column_text(st, 3);
    /* a snippet as FTS5's would look without a match: the first words */
    char snip[200];
    size_t sn = strlen(body) < 120 ? strlen(body) : 120;
    while (sn > 0 && sn < strlen(body) && ((unsigned char)body[sn] & 0xc0) == 0x80) sn--;
    snprintf(snip, sizeof snip, "%.*s%s", (int)sn, body, sn < strlen(body) ? "..." : "");
    double bm = 0;
    sqlite3_stmt *b = match[0]
                          ? prep(db, "SELECT bm25(fts), snippet(fts, 0, '[', ']', '...', 16) FROM fts"
                                 " WHERE fts MATCH ? AND rowid = ?", "ti", match, file_id)
                          : NULL;
    if (b && sqlite3_step(b) == SQLITE_ROW) {
        bm = -sqlite3_column_double(b, 0);
        snprintf(snip, sizeof snip, "%s", (const char *)sqlite3_column_text(b, 1));
    }
    stc_put(b);
    *out = json_pack("{s:s,s:s,s:I,s:o,s:f,s:s,s:s,s:{s:s,s:s,s:o}}", "file_path", path,
                     "file_name", base ? base + 1 : path, "size",
                     (json_int_t)sqlite3_column_int64(st, 1), "last_modified",
                     iso_time(sqlite3_column_int64(st, 2)), "score", bm, "snippet", snip,
                     "document_summary", body, "metadata", "file_path", path, "file_name",
                     base ? base + 1 : path, "last_modified", iso_time(sqlite3_column_int64(st, 2)));
    stc_put(st);
    return *out ? 0 : AIOS_ENOMEM;
}

/* ---- share grants ---- */

static int sq_grant(struct sto_store *s, const char *owner, const char *path, const char *grantee,
                    enum sto_mode mode, int64_t t_expires_us, char *err, size_t errlen)
{
    sqlite3 *db = sq_db(s);
    if (!db) return sql_err(NULL, "grant", err, errlen);
    if (EXEC(db, "INSERT INTO grants(owner, path, grantee, mode, t_created_us, t_expires_us)"
             " VALUES(?, ?, ?, ?, ?, ?) ON CONFLICT(owner, path, grantee) DO UPDATE SET"
             " mode = excluded.mode, t_created_us = excluded.t_created_us,"
             " t_expires_us = excluded.t_expires_us",
             "tttiii", owner, path, grantee, (int64_t)mode, util_wall_us(), t_expires_us))
        return sql_err(db, "grant", err, errlen);
    return 0;
}

static int sq_revoke(struct sto_store *s, const char *owner, const char *path, const char *grantee,
                     char *err, size_t errlen)
{
    sqlite3 *db = sq_db(s);
    if (!db) return sql_err(NULL, "revoke", err, errlen);
    if (EXEC(db, "DELETE FROM grants WHERE owner = ? AND path = ? AND grantee = ?", "ttt", owner,
             path, grantee))
        return sql_err(db, "revoke", err, errlen);
    if (sqlite3_changes(db) == 0) {
        snprintf(err, errlen, "there is no share of '%s' with agent '%s'", path, grantee);
        return AIOS_ENOTFOUND;
    }
    return 0;
}

static int sq_check(struct sto_store *s, const char *owner, const char *path, const char *agent,
                    enum sto_mode mode)
{
    if (!strcmp(owner, agent)) return 0;
    sqlite3 *db = sq_db(s);
    if (!db) return AIOS_EIO;
    sqlite3_stmt *st = prep(db,
                            "SELECT max(mode) FROM grants WHERE owner = ? AND grantee = ?"
                            " AND (t_expires_us = 0 OR t_expires_us > ?)"
                            " AND (path = '' OR path = ?4 OR substr(?4, 1, length(path) + 1) = path || '/')",
                            "ttit", owner, agent, util_wall_us(), path);
    if (!st) return AIOS_EIO;
    int rc = AIOS_ENOTFOUND;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
        int m = sqlite3_column_int(st, 0);
        rc = (m & (int)mode) == (int)mode ? 0 : AIOS_EPERM;
    }
    stc_put(st);
    return rc;
}

static json_t *grants_query(sqlite3 *db, const char *sql, const char *agent)
{
    json_t *arr = json_array();
    sqlite3_stmt *st = prep(db, sql, "ti", agent, util_wall_us());
    while (st && sqlite3_step(st) == SQLITE_ROW) {
        int64_t exp = sqlite3_column_int64(st, 5);
        json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:s,s:o,s:o}", "owner",
                                             sqlite3_column_text(st, 0), "path",
                                             sqlite3_column_text(st, 1), "grantee",
                                             sqlite3_column_text(st, 2), "mode",
                                             sqlite3_column_int(st, 3) == STO_MODE_RW ? "rw" : "r",
                                             "created", iso_time(sqlite3_column_int64(st, 4)),
                                             "expires", exp ? iso_time(exp) : json_null()));
    }
    stc_put(st);
    return arr;
}

static int sq_grants(struct sto_store *s, const char *agent, json_t **out)
{
    *out = NULL;
    sqlite3 *db = sq_db(s);
    if (!db) return AIOS_EIO;
    const char *cols = "SELECT owner, path, grantee, mode, t_created_us, t_expires_us FROM grants";
    char q1[512], q2[512];
    snprintf(q1, sizeof q1, "%s WHERE owner = ? AND (t_expires_us = 0 OR t_expires_us > ?)"
             " ORDER BY path, grantee", cols);
    snprintf(q2, sizeof q2, "%s WHERE grantee = ? AND (t_expires_us = 0 OR t_expires_us > ?)"
             " ORDER BY owner, path", cols);
    *out = json_pack("{s:o,s:o}", "given", grants_query(db, q1, agent), "received",
                     grants_query(db, q2, agent));
    return *out ? 0 : AIOS_ENOMEM;
}

/* ---- share links ---- */

static int sq_link_add(struct sto_store *s, const char *owner, const char *path, const char *hash,
                       int64_t t_expires_us, char *err, size_t errlen)
{
    sqlite3 *db = sq_db(s);
    if (!db) return sql_err(NULL, "link", err, errlen);
    int64_t now = util_wall_us();
    /* expired links of this owner go as new ones come */
    if (EXEC(db, "DELETE FROM links WHERE owner = ? AND t_expires_us <= ?", "ti", owner, now) ||
        EXEC(db, "INSERT INTO links(hash, owner, path, t_created_us, t_expires_us)"
                 " VALUES(?, ?, ?, ?, ?)", "tttii", hash, owner, path, now, t_expires_us))
        return sql_err(db, "link", err, errlen);
    return 0;
}

static int sq_link_find(struct sto_store *s, const char *hash, char *owner, size_t ownerlen,
                        char *path, size_t pathlen)
{
    sqlite3 *db = sq_db(s);
    if (!db) return AIOS_EIO;
    sqlite3_stmt *st = prep(db, "SELECT owner, path FROM links WHERE hash = ? AND t_expires_us > ?",
                            "ti", hash, util_wall_us());
    if (!st) return AIOS_EIO;
    int rc = AIOS_ENOTFOUND;
    if (sqlite3_step(st) == SQLITE_ROW) {
        snprintf(owner, ownerlen, "%s", (const char *)sqlite3_column_text(st, 0));
        snprintf(path, pathlen, "%s", (const char *)sqlite3_column_text(st, 1));
        rc = 0;
    }
    stc_put(st);
    return rc;
}

static int sq_link_revoke(struct sto_store *s, const char *owner, const char *path,
                          const char *id, int *n_revoked, char *err, size_t errlen)
{
    *n_revoked = 0;
    sqlite3 *db = sq_db(s);
    if (!db) return sql_err(NULL, "unlink", err, errlen);
    int rc = id ? EXEC(db, "DELETE FROM links WHERE owner = ? AND substr(hash, 1, 16) = ?", "tt",
                       owner, id)
                : EXEC(db, "DELETE FROM links WHERE owner = ? AND path = ?", "tt", owner, path);
    if (rc) return sql_err(db, "unlink", err, errlen);
    *n_revoked = sqlite3_changes(db);
    return 0;
}

static int sq_links(struct sto_store *s, const char *owner, json_t **out)
{
    *out = NULL;
    sqlite3 *db = sq_db(s);
    if (!db) return AIOS_EIO;
    sqlite3_stmt *st = prep(db, "SELECT substr(hash, 1, 16), path, t_created_us, t_expires_us"
                                " FROM links WHERE owner = ? AND t_expires_us > ? ORDER BY path,"
                                " t_created_us", "ti", owner, util_wall_us());
    if (!st) return AIOS_EIO;
    json_t *arr = json_array();
    while (arr && sqlite3_step(st) == SQLITE_ROW)
        json_array_append_new(arr, json_pack("{s:s,s:s,s:o,s:o}", "link_id",
                                             sqlite3_column_text(st, 0), "path",
                                             sqlite3_column_text(st, 1), "created",
                                             iso_time(sqlite3_column_int64(st, 2)), "expires",
                                             iso_time(sqlite3_column_int64(st, 3))));
    stc_put(st);
    *out = arr;
    return arr ? 0 : AIOS_ENOMEM;
}

const struct sto_store_ops sto_sqlite_store = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .file = sq_file,
    .put = sq_put,
    .clean = sq_clean,
    .each_dirty = sq_each_dirty,
    .blob = sq_blob,
    .history = sq_history,
    .pick = sq_pick,
    .forget = sq_forget,
    .usage = sq_usage,
    .search = sq_search,
    .score_of = sq_score_of,
    .search_row = sq_search_row,
    .vec_model = sq_vec_model,
    .vec_set = sq_vec_set,
    .vec_missing = sq_vec_missing,
    .vec_scan = sq_vec_scan,
    .grant = sq_grant,
    .revoke = sq_revoke,
    .check = sq_check,
    .grants = sq_grants,
    .link_add = sq_link_add,
    .link_find = sq_link_find,
    .link_revoke = sq_link_revoke,
    .links = sq_links,
};
