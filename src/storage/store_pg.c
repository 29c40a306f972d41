/* The storage manager's PostgreSQL store (sto_pg_store, the second
 * implementation of sto_store.h's table; state.backend postgres, see
 * docs/postgres.md). The same data as the SQLite store (store.c), in the
 * same shape, in tables prefixed sto_:
 *   sto_blobs(sha PRIMARY KEY, size, refs, data bytea)
 *                                  content-addressed version contents
 *   sto_owner_blobs(owner, sha, refs)
 *                                  the same count per owner: an owner is
 *                                  charged a content once, however many of
 *                                  its versions name it
 *   sto_files(id bigserial, owner, path, sha, size, ..., next_seq, dirty,
 *             n_index)             n_index = bytes of it in the search index
 *   sto_versions(file_id, seq, sha, size, t_us, kind)
 *   sto_usage(owner, n_bytes, n_files)
 *                                  quota accounting, as in the SQLite store:
 *                                  n_bytes = every distinct content of every
 *                                  kept version of the owner's files + their
 *                                  indexed text
 *   sto_grants(owner, path, grantee, mode, t_created_us, t_expires_us)
 *   sto_fts(id = files.id, owner, body, tsv)  search over current text
 *                                  contents: tsv a stored generated
 *                                  tsvector ('simple': no stemming, as
 *                                  FTS5's unicode61), GIN indexed
 *   sto_fts_vec(id, owner, vec)    embedding vectors, dropped with the
 *                                  fts row (ON DELETE CASCADE)
 * File contents themselves stay files under storage.root_dir (agents'
 * tools see them in their sandboxes); several kernels on one database share
 * that directory (docs/postgres.md).
 *
 * Concurrency across kernels: storage.c holds the owner's advisory lock
 * (lock_owner, on a connection of its own) around every mutation of the
 * owner's tree, from before the version commits to after the rename, as
 * its stripe mutex does within one kernel. Inside, a write or a forget
 * also locks the owner's
 * usage row (SELECT ... FOR UPDATE, the row created if missing), so every
 * change to one owner's files, quota and versions is serialised across all
 * kernels on the database, and the quota check sees every committed write
 * of every kernel. Blob reference counts are changed with single
 * statements (upsert / decrement), which lock the blob's row.
 * Invariant (as the SQLite store's): after every committed transaction
 * sto_usage.n_bytes equals the sum of sto_blobs.size over the owner's
 * sto_owner_blobs plus the sum of its sto_files.n_index; a write is
 * refused inside its transaction, the usage row locked, when the usage it
 * would leave is over the quota and larger than before, so the quota holds
 * over every kernel on the database.
 *
 * Threads: each call takes a pooled connection (util/pg.h) for its
 * duration; a transaction never spans calls. */
#include "storage/sto_store.h"

#include "llm/embed.h"

#include "util/err.h"
#include "util/log.h"
#include "util/pg.h"
#include "util/util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct sto_store {
    struct sto_store_cfg cfg; /* root_dir and url not kept */
    struct pg_pool *pool;
};

static const char k_schema[] =
    "CREATE TABLE IF NOT EXISTS sto_blobs(sha TEXT PRIMARY KEY, size BIGINT NOT NULL,"
    "  refs BIGINT NOT NULL, data BYTEA NOT NULL);"
    "CREATE TABLE IF NOT EXISTS sto_files(id BIGSERIAL PRIMARY KEY, owner TEXT NOT NULL,"
    "  path TEXT NOT NULL, sha TEXT NOT NULL, size BIGINT NOT NULL,"
    "  t_created_us BIGINT NOT NULL, t_modified_us BIGINT NOT NULL,"
    "  next_seq BIGINT NOT NULL, dirty INT NOT NULL DEFAULT 0, UNIQUE(owner, path));"
    "CREATE INDEX IF NOT EXISTS sto_files_dirty ON sto_files(dirty) WHERE dirty = 1;"
    "CREATE TABLE IF NOT EXISTS sto_versions(file_id BIGINT NOT NULL, seq BIGINT NOT NULL,"
    "  sha TEXT NOT NULL, size BIGINT NOT NULL, t_us BIGINT NOT NULL, kind TEXT NOT NULL,"
    "  PRIMARY KEY(file_id, seq));"
    "CREATE TABLE IF NOT EXISTS sto_usage(owner TEXT PRIMARY KEY, n_bytes BIGINT NOT NULL,"
    "  n_files BIGINT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS sto_grants(owner TEXT NOT NULL, path TEXT NOT NULL,"
    "  grantee TEXT NOT NULL, mode INT NOT NULL, t_created_us BIGINT NOT NULL,"
    "  t_expires_us BIGINT NOT NULL, PRIMARY KEY(owner, path, grantee));"
    "CREATE INDEX IF NOT EXISTS sto_grants_grantee ON sto_grants(grantee, owner);"
    "CREATE TABLE IF NOT EXISTS sto_fts(id BIGINT PRIMARY KEY, owner TEXT NOT NULL,"
    "  body TEXT NOT NULL, tsv tsvector GENERATED ALWAYS AS"
    "  (to_tsvector('simple'::regconfig, body)) STORED);"
    "CREATE INDEX IF NOT EXISTS sto_fts_tsv ON sto_fts USING gin(tsv);"
    "CREATE INDEX IF NOT EXISTS sto_fts_owner ON sto_fts(owner);"
    "CREATE TABLE IF NOT EXISTS sto_fts_vec(id BIGINT PRIMARY KEY REFERENCES sto_fts(id)"
    "  ON DELETE CASCADE, owner TEXT NOT NULL, vec BYTEA NOT NULL);"
    "CREATE INDEX IF NOT EXISTS sto_fts_vec_owner ON sto_fts_vec(owner);"
    "CREATE TABLE IF NOT EXISTS sto_vec_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS sto_links(hash TEXT PRIMARY KEY, owner TEXT NOT NULL,"
    " path TEXT NOT NULL, t_created_us BIGINT NOT NULL, t_expires_us BIGINT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS sto_links_owner ON sto_links(owner, path);"
    "CREATE TABLE IF NOT EXISTS sto_owner_blobs(owner TEXT NOT NULL, sha TEXT NOT NULL,"
    "  refs BIGINT NOT NULL, PRIMARY KEY(owner, sha));"
    "ALTER TABLE sto_files ADD COLUMN IF NOT EXISTS n_index BIGINT NOT NULL DEFAULT 0;"
    /* a database whose usage counted current contents only: recounted once
     * (the schema runs under the advisory lock, so one kernel does it) */
    "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM sto_vec_meta WHERE key = 'usage_counts_versions')"
    " THEN"
    "  DELETE FROM sto_owner_blobs;"
    "  INSERT INTO sto_owner_blobs(owner, sha, refs) SELECT f.owner, v.sha, count(*)"
    "   FROM sto_versions v JOIN sto_files f ON f.id = v.file_id GROUP BY f.owner, v.sha;"
    "  UPDATE sto_files f SET n_index = coalesce((SELECT octet_length(x.body) FROM sto_fts x"
    "   WHERE x.id = f.id), 0);"
    "  UPDATE sto_usage u SET n_bytes ="
    "   coalesce((SELECT sum(f.n_index) FROM sto_files f WHERE f.owner = u.owner), 0) +"
    "   coalesce((SELECT sum(b.size) FROM sto_owner_blobs ob JOIN sto_blobs b ON b.sha = ob.sha"
    "   WHERE ob.owner = u.owner), 0);"
    "  INSERT INTO sto_vec_meta(key, value) VALUES('usage_counts_versions', '1');"
    " END IF; END $$;";

/* ---- connections and small helpers ---- */

static int pq_open(struct sto_store **out, const struct sto_store_cfg *c, char *err, size_t errlen)
{
    *out = NULL;
    if (!c->url || !c->url[0]) {
        snprintf(err, errlen, "the PostgreSQL storage store needs state.url");
        return AIOS_ECONFIG;
    }
    struct sto_store *s = calloc(1, sizeof *s);
    if (!s) return AIOS_ENOMEM;
    s->cfg = *c;
    s->cfg.root_dir = NULL;
    s->cfg.url = NULL;
    int rc = pg_pool_open(&s->pool, c->url, "storage", k_schema, err, errlen);
    if (rc) {
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

static void pq_close(struct sto_store *s)
{
    if (!s) return;
    pg_pool_close(s->pool);
    free(s);
}

#define I64(buf, v) pg_i64((buf), (v))

static int begin(PGconn *c) { return pg_exec(c, "storage: begin", "BEGIN", 0, NULL); }
static int commit(PGconn *c) { return pg_exec(c, "storage: commit", "COMMIT", 0, NULL); }
static void rollback(PGconn *c) { PQclear(PQexec(c, "ROLLBACK")); }

static int blob_unref(PGconn *c, const char *sha)
{
    const char *v[1] = {sha};
    if (pg_exec(c, "storage: unref a blob", "UPDATE sto_blobs SET refs = refs - 1 WHERE sha = $1",
                1, v))
        return AIOS_EIO;
    return pg_exec(c, "storage: drop a blob", "DELETE FROM sto_blobs WHERE sha = $1 AND refs <= 0",
                   1, v);
}

/* One more version of owner names sha (size bytes): *delta grows by size
 * when it is the owner's first. */
static int owner_ref(PGconn *c, const char *owner, const char *sha, int64_t size, int64_t *delta)
{
    const char *v[2] = {owner, sha};
    PGresult *r = pg_q(c, "storage: owner's contents",
                       "INSERT INTO sto_owner_blobs(owner, sha, refs) VALUES($1, $2, 1)"
                       " ON CONFLICT (owner, sha) DO UPDATE SET refs = sto_owner_blobs.refs + 1"
                       " RETURNING refs", 2, v);
    if (!r || PQntuples(r) != 1) {
        PQclear(r);
        return AIOS_EIO;
    }
    if (pg_get_i64(r, 0, 0) == 1) *delta += size;
    PQclear(r);
    return 0;
}

/* One version fewer, its blob's count too: *delta shrinks by size when it
 * was the owner's last. */
static int version_unref(PGconn *c, const char *owner, const char *sha, int64_t size,
                         int64_t *delta)
{
    if (blob_unref(c, sha)) return AIOS_EIO;
    const char *v[2] = {owner, sha};
    if (pg_exec(c, "storage: owner's contents",
                "UPDATE sto_owner_blobs SET refs = refs - 1 WHERE owner = $1 AND sha = $2", 2, v))
        return AIOS_EIO;
    PGresult *r = pg_q(c, "storage: owner's contents",
                       "DELETE FROM sto_owner_blobs WHERE owner = $1 AND sha = $2 AND refs <= 0",
                       2, v);
    if (!r) return AIOS_EIO;
    if (pg_changes(r) > 0) *delta -= size;
    PQclear(r);
    return 0;
}

static json_t *iso_time(int64_t t_us)
{
    char buf[40];
    return json_string(util_iso_time(buf, sizeof buf, t_us));
}

/* ---- files and versions ---- */

static int pq_file(struct sto_store *s, const char *owner, const char *path,
                   struct sto_file_info *fi)
{
    memset(fi, 0, sizeof *fi);
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    const char *v[2] = {owner, path};
    PGresult *r = pg_q(c, "storage: read a file",
                       "SELECT f.id, f.sha, f.size, f.t_created_us, f.t_modified_us, f.dirty,"
                       " (SELECT count(*) FROM sto_versions v WHERE v.file_id = f.id), f.next_seq"
                       " FROM sto_files f WHERE owner = $1 AND path = $2", 2, v);
    int rc = !r ? AIOS_EIO : PQntuples(r) == 0 ? AIOS_ENOTFOUND : 0;
    if (!rc) {
        fi->id = pg_get_i64(r, 0, 0);
        snprintf(fi->sha, sizeof fi->sha, "%s", pg_get_s(r, 0, 1));
        fi->size = pg_get_i64(r, 0, 2);
        fi->t_created_us = pg_get_i64(r, 0, 3);
        fi->t_modified_us = pg_get_i64(r, 0, 4);
        fi->dirty = pg_get_i64(r, 0, 5) != 0;
        fi->n_versions = (int)pg_get_i64(r, 0, 6);
        fi->next_seq = pg_get_i64(r, 0, 7);
    }
    PQclear(r);
    pg_give(s->pool, c);
    return rc;
}

static int usage_q(PGconn *c, const char *owner, bool lock, int64_t *bytes, int64_t *files)
{
    *bytes = *files = 0;
    const char *v[1] = {owner};
    PGresult *r = pg_q(c, "storage: read usage",
                       lock ? "SELECT n_bytes, n_files FROM sto_usage WHERE owner = $1 FOR UPDATE"
                            : "SELECT n_bytes, n_files FROM sto_usage WHERE owner = $1",
                       1, v);
    if (!r) return AIOS_EIO;
    if (PQntuples(r) == 1) {
        *bytes = pg_get_i64(r, 0, 0);
        *files = pg_get_i64(r, 0, 1);
    }
    PQclear(r);
    return 0;
}

static int pq_usage(struct sto_store *s, const char *owner, int64_t *bytes, int64_t *files)
{
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    int rc = usage_q(c, owner, false, bytes, files);
    pg_give(s->pool, c);
    return rc;
}

/* Inside a transaction: lock owner's usage row (creating it), which
 * serialises every change to owner's files across kernels. */
static int lock_owner(PGconn *c, const char *owner, int64_t *bytes, int64_t *files)
{
    const char *v[1] = {owner};
    if (pg_exec(c, "storage: usage row",
                "INSERT INTO sto_usage(owner, n_bytes, n_files) VALUES($1, 0, 0)"
                " ON CONFLICT (owner) DO NOTHING", 1, v))
        return AIOS_EIO;
    return usage_q(c, owner, true, bytes, files);
}

static bool has_nul(const char *p, size_t n) { return memchr(p, 0, n) != NULL; }

static int pq_put(struct sto_store *s, const char *owner, const char *path, const char *data,
                  size_t n, const char *sha, const char *kind, size_t n_index, bool dry,
                  int64_t *seq, int *http, char *err, size_t errlen,
                  const struct sto_put_hook *hook)
{
    (void)hook; /* committed before it returns, under the caller's owner lock */
    *http = 500;
    PGconn *c = pg_take(s->pool);
    if (!c) {
        snprintf(err, errlen, "storage database unavailable");
        return AIOS_EIO;
    }
    char b1[32], b2[32], b3[32], b4[32], b5[32];
    int64_t now = util_wall_us(), id = 0, old_index = 0, next_seq = 1, ub = 0, uf = 0;
    bool exists = false;
    /* PostgreSQL text holds no NUL byte: such a file is stored, not indexed */
    if (n_index > 0 && has_nul(data, n_index)) n_index = 0;
    PGresult *r = NULL;
    int rc = begin(c);
    if (rc || (rc = lock_owner(c, owner, &ub, &uf))) goto fail;
    {
        const char *v[2] = {owner, path};
        r = pg_q(c, "storage: read a file",
                 "SELECT id, n_index, next_seq FROM sto_files WHERE owner = $1 AND path = $2", 2,
                 v);
        if (!r) goto fail;
        if (PQntuples(r) == 1) {
            exists = true;
            id = pg_get_i64(r, 0, 0);
            old_index = pg_get_i64(r, 0, 1);
            next_seq = pg_get_i64(r, 0, 2);
        }
        PQclear(r);
        r = NULL;
    }
    int64_t nf = uf + (exists ? 0 : 1);
    if (s->cfg.quota_files > 0 && nf > s->cfg.quota_files && !exists) {
        snprintf(err, errlen, "file quota exceeded: the agent already has %lld files, the limit "
                 "is %lld (storage.quota_files); delete files first",
                 (long long)uf, (long long)s->cfg.quota_files);
        rollback(c);
        pg_give(s->pool, c);
        *http = 507;
        return AIOS_ETOOBIG;
    }
    /* what the agent holds changes by: the content if it is new to the
     * agent, the indexed text, minus contents only pruned versions held */
    int64_t delta = (int64_t)n_index - old_index;
    if (owner_ref(c, owner, sha, (int64_t)n, &delta)) goto fail;
    if (exists) {
        const char *v[6] = {sha, I64(b1, (int64_t)n), I64(b2, now), I64(b3, next_seq + 1),
                            I64(b4, id), I64(b5, (int64_t)n_index)};
        if (pg_exec(c, "storage: update a file",
                    "UPDATE sto_files SET sha = $1, size = $2, t_modified_us = $3, next_seq = $4,"
                    " dirty = 1, n_index = $6 WHERE id = $5", 6, v))
            goto fail;
    } else {
        const char *v[6] = {owner, path, sha, I64(b1, (int64_t)n), I64(b2, now),
                            I64(b3, (int64_t)n_index)};
        r = pg_q(c, "storage: add a file",
                 "INSERT INTO sto_files(owner, path, sha, size, t_created_us, t_modified_us,"
                 " next_seq, dirty, n_index) VALUES($1, $2, $3, $4, $5, $5, 2, 1, $6) RETURNING id",
                 6, v);
        if (!r || PQntuples(r) != 1) goto fail;
        id = pg_get_i64(r, 0, 0);
        PQclear(r);
        r = NULL;
    }
    {
        const char *v[6] = {I64(b1, id), I64(b2, next_seq), sha, I64(b3, (int64_t)n),
                            I64(b4, now), kind};
        if (pg_exec(c, "storage: add a version",
                    "INSERT INTO sto_versions(file_id, seq, sha, size, t_us, kind)"
                    " VALUES($1, $2, $3, $4, $5, $6)", 6, v))
            goto fail;
    }
    {
        /* prune: keep the newest max_versions */
        const char *v[2] = {I64(b1, id), I64(b2, (int64_t)s->cfg.max_versions)};
        r = pg_q(c, "storage: prune versions",
                 "DELETE FROM sto_versions WHERE file_id = $1 AND seq IN (SELECT seq FROM"
                 " sto_versions WHERE file_id = $1 ORDER BY seq DESC OFFSET $2)"
                 " RETURNING sha, size", 2, v);
        if (!r) goto fail;
        for (int i = 0; i < PQntuples(r); i++)
            if (version_unref(c, owner, pg_get_s(r, i, 0), pg_get_i64(r, i, 1), &delta))
                goto fail;
        PQclear(r);
        r = NULL;
    }
    int64_t nb = ub + delta;
    if (s->cfg.quota_bytes > 0 && nb > s->cfg.quota_bytes && delta > 0) {
        snprintf(err, errlen, "storage quota exceeded: the agent holds %lld bytes (every kept "
                 "version and its indexed text) and this write would make %lld, over its limit "
                 "of %lld (storage.quota_bytes); delete files or old versions, or write less",
                 (long long)ub, (long long)nb, (long long)s->cfg.quota_bytes);
        rollback(c);
        pg_give(s->pool, c);
        *http = 507;
        return AIOS_ETOOBIG;
    }
    if (dry) { /* it fits */
        rollback(c);
        pg_give(s->pool, c);
        *http = 200;
        return 0;
    }
    {
        /* the content itself, after the check: a refused write never sends
         * it (a pruned version of the same content may have just dropped
         * the row; the upsert puts it back) */
        const char *v[3] = {sha, I64(b1, (int64_t)n), n ? data : ""};
        int lens[3] = {-1, -1, (int)n};
        r = pg_qb(c, "storage: store a blob",
                  "INSERT INTO sto_blobs(sha, size, refs, data) VALUES($1, $2, 1, $3)"
                  " ON CONFLICT (sha) DO UPDATE SET refs = sto_blobs.refs + 1", 3, v, lens, false);
        if (!r) goto fail;
        PQclear(r);
        r = NULL;
    }
    {
        const char *v[1] = {I64(b1, id)};
        if (pg_exec(c, "storage: drop the index row", "DELETE FROM sto_fts WHERE id = $1", 1, v))
            goto fail;
    }
    if (n_index > 0) {
        char *body = strndup(data, n_index);
        if (!body) goto fail;
        const char *v[3] = {I64(b1, id), owner, body};
        int e = pg_exec(c, "storage: index a file",
                        "INSERT INTO sto_fts(id, owner, body) VALUES($1, $2, $3)", 3, v);
        free(body);
        if (e) goto fail;
    }
    {
        const char *v[3] = {owner, I64(b1, nb), I64(b2, nf)};
        if (pg_exec(c, "storage: usage",
                    "UPDATE sto_usage SET n_bytes = $2, n_files = $3 WHERE owner = $1", 3, v))
            goto fail;
    }
    if (commit(c)) goto fail;
    pg_give(s->pool, c);
    *seq = next_seq;
    *http = 200;
    return 0;
fail:
    PQclear(r);
    /* 53100 disk_full, 53200 out_of_memory: the server has no room */
    bool full = !strcmp(pg_last_state(), "53100");
    snprintf(err, errlen, "storage database: write failed%s", full ? ": the database's disk is full" : "");
    rollback(c);
    pg_give(s->pool, c);
    if (full) {
        *http = 507;
        return AIOS_ENOSPC;
    }
    return AIOS_EIO;
}

static int pq_clean(struct sto_store *s, int64_t file_id, const char *sha)
{
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    char b[32];
    const char *v[2] = {I64(b, file_id), sha};
    int rc = pg_exec(c, "storage: clean", "UPDATE sto_files SET dirty = 0 WHERE id = $1 AND sha = $2",
                     2, v);
    pg_give(s->pool, c);
    return rc;
}

static int pq_each_dirty(struct sto_store *s, sto_dirty_fn fn, void *ud)
{
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    PGresult *r = pg_q(c, "storage: dirty files",
                       "SELECT owner, path, id, sha FROM sto_files WHERE dirty = 1", 0, NULL);
    pg_give(s->pool, c); /* fn uses the store itself */
    if (!r) return AIOS_EIO;
    int rc = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        int e = fn(ud, pg_get_s(r, i, 0), pg_get_s(r, i, 1), pg_get_i64(r, i, 2), pg_get_s(r, i, 3));
        if (e) rc = e;
    }
    PQclear(r);
    return rc;
}

static int pq_blob(struct sto_store *s, const char *sha, char **data, size_t *n)
{
    *data = NULL;
    *n = 0;
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    const char *v[1] = {sha};
    int lens[1] = {-1};
    PGresult *r = pg_qb(c, "storage: read a blob", "SELECT data FROM sto_blobs WHERE sha = $1", 1,
                        v, lens, true);
    int rc = !r ? AIOS_EIO : PQntuples(r) == 0 ? AIOS_ENOTFOUND : 0;
    if (!rc) {
        size_t len = (size_t)PQgetlength(r, 0, 0);
        char *buf = malloc(len + 1);
        if (!buf) rc = AIOS_ENOMEM;
        else {
            if (len) memcpy(buf, PQgetvalue(r, 0, 0), len);
            buf[len] = 0;
            *data = buf;
            *n = len;
        }
    }
    PQclear(r);
    pg_give(s->pool, c);
    return rc;
}

static int pq_history(struct sto_store *s, int64_t file_id, json_t **out)
{
    *out = NULL;
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    char b[32];
    const char *v[1] = {I64(b, file_id)};
    PGresult *r = pg_q(c, "storage: history",
                       "SELECT seq, sha, size, t_us, kind FROM sto_versions WHERE file_id = $1"
                       " ORDER BY seq DESC", 1, v);
    pg_give(s->pool, c);
    if (!r) return AIOS_EIO;
    json_t *arr = json_array();
    for (int i = 0; arr && i < PQntuples(r); i++) {
        int64_t t = pg_get_i64(r, i, 3);
        json_array_append_new(arr, json_pack("{s:I,s:s,s:I,s:o,s:f,s:I,s:s}", "version",
                                             (json_int_t)pg_get_i64(r, i, 0), "sha256",
                                             pg_get_s(r, i, 1), "size",
                                             (json_int_t)pg_get_i64(r, i, 2), "time", iso_time(t),
                                             "timestamp", (double)t / 1e6, "t_us", (json_int_t)t,
                                             "kind", pg_get_s(r, i, 4)));
    }
    PQclear(r);
    *out = arr;
    return arr ? 0 : AIOS_ENOMEM;
}

static int pq_pick(struct sto_store *s, int64_t file_id, int n, int64_t t_us, char *sha,
                   int64_t *seq, char *err, size_t errlen)
{
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    char b1[32], b2[32];
    const char *v[2] = {I64(b1, file_id), t_us > 0 ? I64(b2, t_us) : I64(b2, n)};
    PGresult *r = pg_q(c, "storage: pick a version",
                       t_us > 0 ? "SELECT sha, seq FROM sto_versions WHERE file_id = $1 AND t_us <= $2"
                                  " ORDER BY seq DESC LIMIT 1"
                                : "SELECT sha, seq FROM sto_versions WHERE file_id = $1 ORDER BY seq"
                                  " DESC LIMIT 1 OFFSET $2",
                       2, v);
    pg_give(s->pool, c);
    if (!r) return AIOS_EIO;
    int rc = AIOS_ENOTFOUND;
    if (PQntuples(r) == 1) {
        snprintf(sha, 65, "%s", pg_get_s(r, 0, 0));
        *seq = pg_get_i64(r, 0, 1);
        rc = 0;
    }
    PQclear(r);
    if (rc == AIOS_ENOTFOUND) {
        if (t_us > 0) snprintf(err, errlen, "the file has no version at or before that time");
        else snprintf(err, errlen, "cannot go back %d version(s): the history holds fewer "
                      "(see the history operation; storage.max_versions limits it)", n);
    }
    return rc;
}

static int pq_forget(struct sto_store *s, const char *owner, const char *path, bool prefix,
                     int *n_files)
{
    *n_files = 0;
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    char pfx[STO_PATH_MAX + 2], b1[32], b2[32];
    snprintf(pfx, sizeof pfx, "%s/", path);
    int64_t ub, uf, delta = 0; /* what the owner holds changes by */
    PGresult *r = NULL, *sh = NULL;
    if (begin(c) || lock_owner(c, owner, &ub, &uf)) goto fail;
    {
        const char *v[2] = {owner, prefix ? pfx : path};
        r = pg_q(c, "storage: forget",
                 prefix ? "SELECT id, n_index FROM sto_files WHERE owner = $1 AND"
                          " starts_with(path, $2)"
                        : "SELECT id, n_index FROM sto_files WHERE owner = $1 AND path = $2",
                 2, v);
        if (!r) goto fail;
    }
    int nf = PQntuples(r);
    for (int i = 0; i < nf; i++) {
        delta -= pg_get_i64(r, i, 1);
        const char *v[1] = {pg_get_s(r, i, 0)};
        sh = pg_q(c, "storage: forget versions",
                  "DELETE FROM sto_versions WHERE file_id = $1 RETURNING sha, size", 1, v);
        if (!sh) goto fail;
        for (int j = 0; j < PQntuples(sh); j++)
            if (version_unref(c, owner, pg_get_s(sh, j, 0), pg_get_i64(sh, j, 1), &delta))
                goto fail;
        PQclear(sh);
        sh = NULL;
        if (pg_exec(c, "storage: forget", "DELETE FROM sto_fts WHERE id = $1", 1, v) ||
            pg_exec(c, "storage: forget", "DELETE FROM sto_files WHERE id = $1", 1, v))
            goto fail;
    }
    if (nf) {
        const char *v[3] = {owner, I64(b1, delta), I64(b2, nf)};
        if (pg_exec(c, "storage: usage",
                    "UPDATE sto_usage SET n_bytes = n_bytes + $2, n_files = n_files - $3"
                    " WHERE owner = $1", 3, v))
            goto fail;
    }
    if (commit(c)) goto fail;
    PQclear(r);
    pg_give(s->pool, c);
    *n_files = nf;
    return 0;
fail:
    PQclear(r);
    PQclear(sh);
    rollback(c);
    pg_give(s->pool, c);
    return AIOS_EIO;
}

/* ---- search ---- */

/* a to_tsquery text: any of t->any (|), and each of t->all (&) */
static void ts_match(const struct sto_terms *t, char match[STO_MATCH_MAX])
{
    sto_terms_expr(t, '\'', " | ", " & ", match);
}

#define HEADLINE "'StartSel=[, StopSel=], MaxWords=16, MinWords=8, ShortWord=0'"

static json_t *result_row(const char *path, int64_t size, int64_t t_mod, double score,
                          const char *snippet, const char *body)
{
    const char *base = strrchr(path, '/');
    return json_pack("{s:s,s:s,s:I,s:o,s:f,s:s,s:s,s:{s:s,s:s,s:o}}", "file_path", path,
                     "file_name", base ? base + 1 : path, "size", (json_int_t)size,
                     "last_modified", iso_time(t_mod), "score", score, "snippet", snippet,
                     "document_summary", body, "metadata", "file_path", path, "file_name",
                     base ? base + 1 : path, "last_modified", iso_time(t_mod));
}

static int pq_search(struct sto_store *s, const char *owner, const struct sto_terms *t, int k,
                     bool with_id, json_t **out, char *err, size_t errlen)
{
    *out = NULL;
    char match[STO_MATCH_MAX], kb[32];
    ts_match(t, match);
    json_t *arr = json_array();
    if (!arr) return AIOS_ENOMEM;
    if (!match[0] || k <= 0) {
        *out = arr;
        return 0;
    }
    PGconn *c = pg_take(s->pool);
    if (!c) {
        json_decref(arr);
        return AIOS_EIO;
    }
    /* the best k by rank first, then the headline (which parses the
     * document) of those k only */
    const char *v[3] = {owner, match, I64(kb, k)};
    PGresult *r = pg_q(c, "storage: search",
                       "SELECT f.path, f.size, f.t_modified_us, b.score,"
                       " ts_headline('simple', b.body, to_tsquery('simple', $2), " HEADLINE "),"
                       " left(b.body, 2000), f.id"
                       " FROM (SELECT x.id, x.body, ts_rank(x.tsv, q) AS score"
                       "  FROM sto_fts x, to_tsquery('simple', $2) q"
                       "  WHERE x.owner = $1 AND x.tsv @@ q ORDER BY score DESC, x.id"
                       "  LIMIT $3::int) b JOIN sto_files f ON f.id = b.id"
                       " ORDER BY b.score DESC, b.id", 3, v);
    pg_give(s->pool, c);
    if (!r) {
        snprintf(err, errlen, "storage database: search failed");
        json_decref(arr);
        return AIOS_EIO;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        json_t *o = result_row(pg_get_s(r, i, 0), pg_get_i64(r, i, 1), pg_get_i64(r, i, 2),
                               pg_get_dbl(r, i, 3), pg_get_s(r, i, 4), pg_get_s(r, i, 5));
        if (o && with_id) json_object_set_new(o, "_id", json_integer(pg_get_i64(r, i, 6)));
        json_array_append_new(arr, o);
    }
    PQclear(r);
    *out = arr;
    return 0;
}

static int pq_score_of(struct sto_store *s, const struct sto_terms *t, const int64_t *ids,
                       size_t n, double *bm25)
{
    for (size_t i = 0; i < n; i++) bm25[i] = 0;
    char match[STO_MATCH_MAX];
    ts_match(t, match);
    if (n == 0 || !match[0]) return 0;
    json_t *arr = json_array();
    for (size_t i = 0; i < n && arr; i++) json_array_append_new(arr, json_integer(ids[i]));
    char *list = arr ? json_dumps(arr, JSON_COMPACT) : NULL;
    json_decref(arr);
    if (!list) return AIOS_ENOMEM;
    list[0] = '{';
    list[strlen(list) - 1] = '}';
    PGconn *c = pg_take(s->pool);
    if (!c) {
        free(list);
        return AIOS_EIO;
    }
    const char *v[2] = {match, list};
    PGresult *r = pg_q(c, "storage: score",
                       "SELECT x.id, ts_rank(x.tsv, q) FROM sto_fts x, to_tsquery('simple', $1) q"
                       " WHERE x.id = ANY($2::bigint[]) AND x.tsv @@ q", 2, v);
    pg_give(s->pool, c);
    free(list);
    if (!r) return AIOS_EIO;
    for (int row = 0; row < PQntuples(r); row++) {
        int64_t id = pg_get_i64(r, row, 0);
        for (size_t i = 0; i < n; i++)
            if (ids[i] == id) bm25[i] = pg_get_dbl(r, row, 1);
    }
    PQclear(r);
    return 0;
}

static int pq_search_row(struct sto_store *s, const char *owner, int64_t file_id,
                         const struct sto_terms *t, json_t **out)
{
    *out = NULL;
    char match[STO_MATCH_MAX], b[32];
    ts_match(t, match);
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    const char *v[2] = {I64(b, file_id), owner};
    PGresult *r = pg_q(c, "storage: search row",
                       "SELECT f.path, f.size, f.t_modified_us, left(x.body, 2000) FROM sto_files f"
                       " JOIN sto_fts x ON x.id = f.id WHERE f.id = $1 AND f.owner = $2", 2, v);
    PGresult *m = NULL;
    if (r && PQntuples(r) == 1 && match[0]) {
        const char *mv[2] = {match, I64(b, file_id)};
        m = pg_q(c, "storage: search row",
                 "SELECT ts_rank(x.tsv, q), ts_headline('simple', x.body, q, " HEADLINE ")"
                 " FROM sto_fts x, to_tsquery('simple', $1) q WHERE x.id = $2 AND x.tsv @@ q",
                 2, mv);
    }
    pg_give(s->pool, c);
    if (!r || PQntuples(r) != 1) {
        int rc = r ? AIOS_ENOTFOUND : AIOS_EIO;
        PQclear(r);
        PQclear(m);
        return rc;
    }
    const char *body = pg_get_s(r, 0, 3);
    /* a snippet without a match: the first words */
    char snip[200];
    size_t len = strlen(body), sn = len < 120 ? len : 120;
    while (sn > 0 && sn < len && ((unsigned char)body[sn] & 0xc0) == 0x80) sn--;
    snprintf(snip, sizeof snip, "%.*s%s", (int)sn, body, sn < len ? "..." : "");
    double score = 0;
    if (m && PQntuples(m) == 1) {
        score = pg_get_dbl(m, 0, 0);
        snprintf(snip, sizeof snip, "%s", pg_get_s(m, 0, 1));
    }
    *out = result_row(pg_get_s(r, 0, 0), pg_get_i64(r, 0, 1), pg_get_i64(r, 0, 2), score, snip,
                      body);
    PQclear(r);
    PQclear(m);
    return *out ? 0 : AIOS_ENOMEM;
}

/* ---- embedding vectors (derived data, as in the SQLite store) ---- */

static int pq_vec_model(struct sto_store *s, const char *fingerprint, bool *reset)
{
    *reset = false;
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    PGresult *r = pg_q(c, "storage: vector model",
                       "SELECT value FROM sto_vec_meta WHERE key = 'model'", 0, NULL);
    int rc = r ? 0 : AIOS_EIO;
    bool same = r && PQntuples(r) == 1 && !strcmp(pg_get_s(r, 0, 0), fingerprint);
    PQclear(r);
    if (!rc && !same) {
        const char *v[1] = {fingerprint};
        if (begin(c) || pg_exec(c, "storage: reset vectors", "DELETE FROM sto_fts_vec", 0, NULL) ||
            pg_exec(c, "storage: vector model",
                    "INSERT INTO sto_vec_meta(key, value) VALUES('model', $1)"
                    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", 1, v) ||
            commit(c)) {
            rollback(c);
            rc = AIOS_EIO;
        } else {
            *reset = true;
        }
    }
    pg_give(s->pool, c);
    return rc;
}

static int pq_vec_set(struct sto_store *s, int64_t file_id, const char *owner, const float *v,
                      int dim, const char *text, size_t n)
{
    char *t = strndup(text, n), b[32];
    if (!t) return AIOS_ENOMEM;
    PGconn *c = pg_take(s->pool);
    if (!c) {
        free(t);
        return AIOS_EIO;
    }
    /* only while the file's indexed text still starts with what was
     * embedded (see the SQLite store) */
    const char *vals[4] = {owner, (const char *)v, I64(b, file_id), t};
    int lens[4] = {-1, dim * (int)sizeof *v, -1, -1};
    PGresult *r = pg_qb(c, "storage: store a vector",
                        "INSERT INTO sto_fts_vec(id, owner, vec) SELECT id, $1, $2 FROM sto_fts"
                         " WHERE id = $3 AND starts_with(body, $4)"
                        " ON CONFLICT (id) DO UPDATE SET vec = EXCLUDED.vec", 4, vals, lens, false);
    pg_give(s->pool, c);
    free(t);
    int rc = r ? 0 : AIOS_EIO;
    PQclear(r);
    return rc;
}

static int pq_vec_missing(struct sto_store *s, const char *owner, int limit, size_t max_bytes,
                          json_t **out)
{
    *out = NULL;
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    char b1[32], b2[32];
    /* left() counts characters; the SQLite store's substr() on text does too */
    const char *v[3] = {I64(b1, (int64_t)max_bytes), owner, I64(b2, limit)};
    PGresult *r = pg_q(c, "storage: files without vectors",
                       "SELECT f.id, left(f.body, $1::int) FROM sto_fts f WHERE f.owner = $2"
                       " AND NOT EXISTS (SELECT 1 FROM sto_fts_vec v WHERE v.id = f.id)"
                       " LIMIT $3::int", 3, v);
    pg_give(s->pool, c);
    if (!r) return AIOS_EIO;
    json_t *arr = json_array();
    for (int i = 0; arr && i < PQntuples(r); i++)
        json_array_append_new(arr, json_pack("[I,s]", (json_int_t)pg_get_i64(r, i, 0),
                                             pg_get_s(r, i, 1)));
    PQclear(r);
    *out = arr;
    return arr ? 0 : AIOS_ENOMEM;
}

static int pq_vec_scan(struct sto_store *s, const char *owner, const float *q, int dim,
                       struct emb_hit **out, size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    const char *v[1] = {owner};
    int lens[1] = {-1};
    PGresult *r = pg_qb(c, "storage: scan vectors",
                        "SELECT id, vec FROM sto_fts_vec WHERE owner = $1", 1, v, lens, true);
    pg_give(s->pool, c);
    int rc = r ? emb_scan_pg(r, q, dim, out, n_out) : AIOS_EIO;
    PQclear(r);
    return rc;
}

/* ---- the owner's lock across kernels ----
 * A session-level advisory lock on a connection of its own, held from
 * before the version commits until after the file is renamed (storage.c's
 * owner_lock); a kernel that dies releases it with its connection. */

static int pq_lock_owner(struct sto_store *s, const char *owner, void **held)
{
    *held = NULL;
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    const char *v[1] = {owner};
    if (pg_exec(c, "storage: lock the owner", "SELECT pg_advisory_lock(hashtext('sto:' || $1))",
                1, v)) {
        pg_give(s->pool, c);
        return AIOS_EIO;
    }
    *held = c;
    return 0;
}

static void pq_unlock_owner(struct sto_store *s, void *held)
{
    PGconn *c = held;
    /* one session lock at a time on this connection: unlock them all */
    pg_exec(c, "storage: unlock the owner", "SELECT pg_advisory_unlock_all()", 0, NULL);
    pg_give(s->pool, c);
}

/* ---- share grants ---- */

static int pq_grant(struct sto_store *s, const char *owner, const char *path, const char *grantee,
                    enum sto_mode mode, int64_t t_expires_us, char *err, size_t errlen)
{
    PGconn *c = pg_take(s->pool);
    if (!c) {
        snprintf(err, errlen, "storage database unavailable");
        return AIOS_EIO;
    }
    char b1[32], b2[32], b3[32];
    const char *v[6] = {owner, path, grantee, I64(b1, (int64_t)mode), I64(b2, util_wall_us()),
                        I64(b3, t_expires_us)};
    int rc = pg_exec(c, "storage: grant",
                     "INSERT INTO sto_grants(owner, path, grantee, mode, t_created_us, t_expires_us)"
                     " VALUES($1, $2, $3, $4, $5, $6) ON CONFLICT (owner, path, grantee) DO UPDATE"
                     " SET mode = EXCLUDED.mode, t_created_us = EXCLUDED.t_created_us,"
                     " t_expires_us = EXCLUDED.t_expires_us", 6, v);
    pg_give(s->pool, c);
    if (rc) snprintf(err, errlen, "storage database: grant failed");
    return rc;
}

static int pq_revoke(struct sto_store *s, const char *owner, const char *path,
                     const char *grantee, char *err, size_t errlen)
{
    PGconn *c = pg_take(s->pool);
    if (!c) {
        snprintf(err, errlen, "storage database unavailable");
        return AIOS_EIO;
    }
    const char *v[3] = {owner, path, grantee};
    PGresult *r = pg_q(c, "storage: revoke",
                       "DELETE FROM sto_grants WHERE owner = $1 AND path = $2 AND grantee = $3", 3,
                       v);
    pg_give(s->pool, c);
    if (!r) {
        snprintf(err, errlen, "storage database: revoke failed");
        return AIOS_EIO;
    }
    int64_t changed = pg_changes(r);
    PQclear(r);
    if (changed == 0) {
        snprintf(err, errlen, "there is no share of '%s' with agent '%s'", path, grantee);
        return AIOS_ENOTFOUND;
    }
    return 0;
}

static int pq_check(struct sto_store *s, const char *owner, const char *path, const char *agent,
                    enum sto_mode mode)
{
    if (!strcmp(owner, agent)) return 0;
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    char b[32];
    const char *v[4] = {owner, agent, I64(b, util_wall_us()), path};
    PGresult *r = pg_q(c, "storage: check a grant",
                       "SELECT max(mode) FROM sto_grants WHERE owner = $1 AND grantee = $2"
                       " AND (t_expires_us = 0 OR t_expires_us > $3)"
                        " AND (path = '' OR path = $4 OR starts_with($4, path || '/'))",
                       4, v);
    pg_give(s->pool, c);
    if (!r) return AIOS_EIO;
    int rc = AIOS_ENOTFOUND;
    if (PQntuples(r) == 1 && !PQgetisnull(r, 0, 0)) {
        int m = (int)pg_get_i64(r, 0, 0);
        rc = (m & (int)mode) == (int)mode ? 0 : AIOS_EPERM;
    }
    PQclear(r);
    return rc;
}

static json_t *grants_query(PGconn *c, const char *sql, const char *agent)
{
    json_t *arr = json_array();
    char b[32];
    const char *v[2] = {agent, I64(b, util_wall_us())};
    PGresult *r = pg_q(c, "storage: grants", sql, 2, v);
    for (int i = 0; r && arr && i < PQntuples(r); i++) {
        int64_t exp = pg_get_i64(r, i, 5);
        json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:s,s:o,s:o}", "owner",
                                             pg_get_s(r, i, 0), "path", pg_get_s(r, i, 1),
                                             "grantee", pg_get_s(r, i, 2), "mode",
                                             pg_get_i64(r, i, 3) == STO_MODE_RW ? "rw" : "r",
                                             "created", iso_time(pg_get_i64(r, i, 4)), "expires",
                                             exp ? iso_time(exp) : json_null()));
    }
    PQclear(r);
    return arr;
}

static int pq_grants(struct sto_store *s, const char *agent, json_t **out)
{
    *out = NULL;
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
#define GCOLS "SELECT owner, path, grantee, mode, t_created_us, t_expires_us FROM sto_grants"
    json_t *given = grants_query(c, GCOLS " WHERE owner = $1 AND (t_expires_us = 0 OR"
                                 " t_expires_us > $2) ORDER BY path, grantee", agent);
    json_t *received = grants_query(c, GCOLS " WHERE grantee = $1 AND (t_expires_us = 0 OR"
                                    " t_expires_us > $2) ORDER BY owner, path", agent);
#undef GCOLS
    pg_give(s->pool, c);
    *out = json_pack("{s:o,s:o}", "given", given, "received", received);
    return *out ? 0 : AIOS_ENOMEM;
}

/* ---- share links (sto_links: as the SQLite store's links table) ---- */

static int pq_link_add(struct sto_store *s, const char *owner, const char *path, const char *hash,
                       int64_t t_expires_us, char *err, size_t errlen)
{
    PGconn *c = pg_take(s->pool);
    if (!c) {
        snprintf(err, errlen, "storage database unavailable");
        return AIOS_EIO;
    }
    char b1[32], b2[32];
    const char *v[5] = {hash, owner, path, I64(b1, util_wall_us()), I64(b2, t_expires_us)};
    /* expired links of this owner go as new ones come */
    const char *vd[2] = {owner, v[3]};
    PGresult *r = pg_q(c, "storage: link", "DELETE FROM sto_links WHERE owner = $1 AND"
                       " t_expires_us <= $2", 2, vd);
    PQclear(r);
    r = r ? pg_q(c, "storage: link", "INSERT INTO sto_links(hash, owner, path, t_created_us,"
                 " t_expires_us) VALUES($1, $2, $3, $4, $5)", 5, v)
          : NULL;
    pg_give(s->pool, c);
    if (!r) {
        snprintf(err, errlen, "storage database: cannot make the link");
        return AIOS_EIO;
    }
    PQclear(r);
    return 0;
}

static int pq_link_find(struct sto_store *s, const char *hash, char *owner, size_t ownerlen,
                        char *path, size_t pathlen)
{
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    char b[32];
    const char *v[2] = {hash, I64(b, util_wall_us())};
    PGresult *r = pg_q(c, "storage: find a link", "SELECT owner, path FROM sto_links"
                       " WHERE hash = $1 AND t_expires_us > $2", 2, v);
    pg_give(s->pool, c);
    if (!r) return AIOS_EIO;
    int rc = AIOS_ENOTFOUND;
    if (PQntuples(r) == 1) {
        snprintf(owner, ownerlen, "%s", pg_get_s(r, 0, 0));
        snprintf(path, pathlen, "%s", pg_get_s(r, 0, 1));
        rc = 0;
    }
    PQclear(r);
    return rc;
}

static int pq_link_revoke(struct sto_store *s, const char *owner, const char *path,
                          const char *id, int *n_revoked, char *err, size_t errlen)
{
    *n_revoked = 0;
    PGconn *c = pg_take(s->pool);
    if (!c) {
        snprintf(err, errlen, "storage database unavailable");
        return AIOS_EIO;
    }
    const char *v[2] = {owner, id ? id : path};
    PGresult *r = pg_q(c, "storage: unlink",
                       id ? "DELETE FROM sto_links WHERE owner = $1 AND substr(hash, 1, 16) = $2"
                          : "DELETE FROM sto_links WHERE owner = $1 AND path = $2",
                       2, v);
    pg_give(s->pool, c);
    if (!r) {
        snprintf(err, errlen, "storage database: unlink failed");
        return AIOS_EIO;
    }
    *n_revoked = (int)pg_changes(r);
    PQclear(r);
    return 0;
}

static int pq_links(struct sto_store *s, const char *owner, json_t **out)
{
    *out = NULL;
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    char b[32];
    const char *v[2] = {owner, I64(b, util_wall_us())};
    PGresult *r = pg_q(c, "storage: links", "SELECT substr(hash, 1, 16), path, t_created_us,"
                       " t_expires_us FROM sto_links WHERE owner = $1 AND t_expires_us > $2"
                       " ORDER BY path, t_created_us", 2, v);
    pg_give(s->pool, c);
    if (!r) return AIOS_EIO;
    json_t *arr = json_array();
    for (int i = 0; arr && i < PQntuples(r); i++)
        json_array_append_new(arr, json_pack("{s:s,s:s,s:o,s:o}", "link_id", pg_get_s(r, i, 0),
                                             "path", pg_get_s(r, i, 1), "created",
                                             iso_time(pg_get_i64(r, i, 2)), "expires",
                                             iso_time(pg_get_i64(r, i, 3))));
    PQclear(r);
    *out = arr;
    return arr ? 0 : AIOS_ENOMEM;
}

const struct sto_store_ops sto_pg_store = {
    .name = "postgres",
    .open = pq_open,
    .close = pq_close,
    .file = pq_file,
    .put = pq_put,
    .clean = pq_clean,
    .each_dirty = pq_each_dirty,
    .blob = pq_blob,
    .history = pq_history,
    .pick = pq_pick,
    .forget = pq_forget,
    .usage = pq_usage,
    .search = pq_search,
    .score_of = pq_score_of,
    .search_row = pq_search_row,
    .vec_model = pq_vec_model,
    .vec_set = pq_vec_set,
    .vec_missing = pq_vec_missing,
    .vec_scan = pq_vec_scan,
    .lock_owner = pq_lock_owner,
    .unlock_owner = pq_unlock_owner,
    .grant = pq_grant,
    .revoke = pq_revoke,
    .check = pq_check,
    .link_add = pq_link_add,
    .link_find = pq_link_find,
    .link_revoke = pq_link_revoke,
    .links = pq_links,
    .grants = pq_grants,
};
