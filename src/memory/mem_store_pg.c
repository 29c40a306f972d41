/* The durable tier of agent memory on PostgreSQL (mem_store_pg, a second
 * implementation of struct mem_store_ops; see mem_store.h and
 * docs/postgres.md). Selected by state.backend: postgres; `path` of open is
 * then the connection URL.
 *
 * Tables (created if missing, under a cluster-wide advisory lock so that
 * kernels starting together do not race):
 *   mem_notes(nid bigserial PRIMARY KEY, agent, id, content, keywords, tags,
 *             category, context, timestamp, last_accessed, links,
 *             retrieval_count, extra, tsv, UNIQUE(agent, id))
 *     tsv: a stored generated tsvector over content, keywords, tags and
 *     context (english configuration: stemming, stop words), GIN indexed
 *   mem_notes_vec(nid PRIMARY KEY REFERENCES mem_notes ON DELETE CASCADE,
 *             agent, vec bytea)  one unit vector per note; a trigger drops
 *             it when the note's content changes
 *   mem_vec_meta(key PRIMARY KEY, value)  the embedding model's fingerprint
 *   mem_note_usage(agent PRIMARY KEY, n_bytes)  what each agent's notes
 *             take (the same bytes as the SQLite store counts: the text
 *             fields as stored, not last_accessed and retrieval_count)
 * keywords, tags, links and extra are JSON text as in the SQLite store.
 *
 * The per-agent quota (memory.store_quota_bytes, set_quota; this kernel's
 * setting): an insert, update or delete first locks the agent's usage row
 * (SELECT ... FOR UPDATE), then checks and changes the note and the count
 * in the same transaction, so the quota holds over every kernel on the
 * database; a write that would take the agent over it is refused
 * (MEM_EQUOTA) before it is made, one that shrinks is never refused.
 *
 * Ranking: the full-text query is the words of the text OR'ed
 * (to_tsquery, each word quoted), and the score is ts_rank (frequency of
 * the matching lexemes, higher is better, > 0 for every match). It is not
 * BM25: PostgreSQL has no corpus statistics in its ranking. The hybrid
 * retrieval in mem.c normalises by the best score, so only the order
 * matters there.
 *
 * Every statement names the agent, as in the SQLite store. Each call takes
 * a connection of the pool (util/pg.h) for its duration and is one
 * transaction (autocommit, or BEGIN ... COMMIT where it has several
 * statements). Durability: PostgreSQL's own (synchronous_commit on, the
 * server's default): an acknowledged note is in the server's WAL on disk.
 * full_sync changes nothing here. */
#include "memory/mem_store.h"

#include "llm/embed.h"

#include "util/err.h"
#include "util/log.h"
#include "util/pg.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mem_store {
    struct pg_pool *pool;
    int64_t quota; /* memory.store_quota_bytes; 0: none */
};

static const char k_schema[] =
    "CREATE TABLE IF NOT EXISTS mem_notes("
    " nid BIGSERIAL PRIMARY KEY, agent TEXT NOT NULL, id TEXT NOT NULL, content TEXT NOT NULL,"
    " keywords TEXT NOT NULL, tags TEXT NOT NULL, category TEXT NOT NULL, context TEXT NOT NULL,"
    " timestamp TEXT NOT NULL, last_accessed TEXT NOT NULL, links TEXT NOT NULL,"
    " retrieval_count BIGINT NOT NULL DEFAULT 0, extra TEXT NOT NULL,"
    " tsv tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig,"
    "   content || ' ' || keywords || ' ' || tags || ' ' || context)) STORED,"
    " UNIQUE(agent, id));"
    "CREATE INDEX IF NOT EXISTS mem_notes_tsv ON mem_notes USING gin(tsv);"
    "CREATE TABLE IF NOT EXISTS mem_notes_vec(nid BIGINT PRIMARY KEY"
    " REFERENCES mem_notes(nid) ON DELETE CASCADE, agent TEXT NOT NULL, vec BYTEA NOT NULL);"
    "CREATE INDEX IF NOT EXISTS mem_notes_vec_agent ON mem_notes_vec(agent);"
    "CREATE TABLE IF NOT EXISTS mem_vec_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE OR REPLACE FUNCTION mem_notes_vec_drop() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN DELETE FROM mem_notes_vec WHERE nid = OLD.nid; RETURN NEW; END $$;"
    "DROP TRIGGER IF EXISTS mem_notes_vu ON mem_notes;"
    "CREATE TRIGGER mem_notes_vu AFTER UPDATE OF content ON mem_notes FOR EACH ROW"
    " WHEN (OLD.content IS DISTINCT FROM NEW.content) EXECUTE FUNCTION mem_notes_vec_drop();"
    "CREATE TABLE IF NOT EXISTS mem_note_usage(agent TEXT PRIMARY KEY, n_bytes BIGINT NOT NULL);"
    /* a database from before the count: counted once (under the lock) */
    "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM mem_vec_meta WHERE key = 'usage_counted') THEN"
    "  DELETE FROM mem_note_usage;"
    "  INSERT INTO mem_note_usage(agent, n_bytes) SELECT agent, sum(octet_length(id) +"
    "   octet_length(content) + octet_length(keywords) + octet_length(tags) +"
    "   octet_length(category) + octet_length(context) + octet_length(timestamp) +"
    "   octet_length(links) + octet_length(extra)) FROM mem_notes GROUP BY agent;"
    "  INSERT INTO mem_vec_meta(key, value) VALUES('usage_counted', '1');"
    " END IF; END $$;";

#define NOTE_COLS \
    "id, content, keywords, tags, category, context, timestamp, last_accessed, links, " \
    "retrieval_count, extra"

static int pg_open(struct mem_store **out, const char *url, bool full_sync, char *err,
                   size_t errlen)
{
    (void)full_sync;
    *out = NULL;
    struct mem_store *s = calloc(1, sizeof *s);
    if (!s) return AIOS_ENOMEM;
    int rc = pg_pool_open(&s->pool, url, "memory", k_schema, err, errlen);
    if (rc) {
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

static void pg_close(struct mem_store *s)
{
    if (!s) return;
    pg_pool_close(s->pool);
    free(s);
}

/* ---- rows <-> notes ---- */

static char *dump(json_t *j)
{
    return json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* v[0] agent, v[1..11] the note's fields in NOTE_COLS order; bufs freed by
 * free_bufs */
static int note_params(const char *agent, const struct mem_note *n, const char **v, char **bufs,
                       char *cnt)
{
    bufs[0] = dump(n->keywords);
    bufs[1] = dump(n->tags);
    bufs[2] = dump(n->links);
    bufs[3] = dump(n->extra);
    if (!bufs[0] || !bufs[1] || !bufs[2] || !bufs[3]) return AIOS_ENOMEM;
    v[0] = agent;
    v[1] = n->id;
    v[2] = n->content;
    v[3] = bufs[0];
    v[4] = bufs[1];
    v[5] = n->category;
    v[6] = n->context;
    v[7] = n->timestamp;
    v[8] = n->last_accessed;
    v[9] = bufs[2];
    v[10] = pg_i64(cnt, n->retrieval_count);
    v[11] = bufs[3];
    return 0;
}

static void free_bufs(char **bufs)
{
    for (int i = 0; i < 4; i++) free(bufs[i]);
}

static json_t *col_json(const PGresult *r, int row, int col, json_t *(*make)(void))
{
    json_t *j = json_loads(pg_get_s(r, row, col), JSON_DECODE_ANY, NULL);
    return j ? j : make();
}

/* columns c0 .. c0+10 of row as NOTE_COLS */
static struct mem_note *row_note(const PGresult *r, int row, int c0)
{
    struct mem_note *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    n->id = strdup(pg_get_s(r, row, c0));
    n->content = strdup(pg_get_s(r, row, c0 + 1));
    n->keywords = col_json(r, row, c0 + 2, json_array);
    n->tags = col_json(r, row, c0 + 3, json_array);
    n->category = strdup(pg_get_s(r, row, c0 + 4));
    n->context = strdup(pg_get_s(r, row, c0 + 5));
    snprintf(n->timestamp, sizeof n->timestamp, "%s", pg_get_s(r, row, c0 + 6));
    snprintf(n->last_accessed, sizeof n->last_accessed, "%s", pg_get_s(r, row, c0 + 7));
    n->links = col_json(r, row, c0 + 8, json_array);
    n->retrieval_count = pg_get_i64(r, row, c0 + 9);
    n->extra = col_json(r, row, c0 + 10, json_object);
    if (!n->id || !n->content || !n->keywords || !n->tags || !n->category || !n->context ||
        !n->links || !n->extra) {
        mem_note_free(n);
        return NULL;
    }
    return n;
}

/* ---- operations ---- */

static const char k_insert[] =
    "INSERT INTO mem_notes(agent, " NOTE_COLS ") VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)"
    " ON CONFLICT (agent, id) DO NOTHING";

/* the bytes a note's parameters (note_params) take in the quota */
static int64_t param_bytes(const char *const *v)
{
    static const int cols[] = {1, 2, 3, 4, 5, 6, 7, 9, 11};
    int64_t b = 0;
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++) b += (int64_t)strlen(v[cols[i]]);
    return b;
}

/* Inside a transaction: lock the agent's usage row (created if missing);
 * *used what its notes take. */
static int lock_usage(PGconn *c, const char *agent, int64_t *used)
{
    *used = 0;
    const char *v[1] = {agent};
    /* one round trip: the upsert locks the row (new or not) until the end
     * of the transaction and answers its count */
    PGresult *r = pg_q(c, "note usage",
                       "INSERT INTO mem_note_usage(agent, n_bytes) VALUES($1, 0)"
                       " ON CONFLICT (agent) DO UPDATE SET n_bytes = mem_note_usage.n_bytes"
                       " RETURNING n_bytes", 1, v);
    if (!r || PQntuples(r) != 1) {
        PQclear(r);
        return AIOS_EIO;
    }
    *used = pg_get_i64(r, 0, 0);
    PQclear(r);
    return 0;
}

static int add_usage(PGconn *c, const char *agent, int64_t delta)
{
    char b[32];
    const char *v[2] = {agent, pg_i64(b, delta)};
    return pg_exec(c, "note usage",
                   "UPDATE mem_note_usage SET n_bytes = n_bytes + $2 WHERE agent = $1", 2, v);
}

static int begin(PGconn *c) { return pg_exec(c, "begin", "BEGIN", 0, NULL); }

/* end the transaction: COMMIT when rc is 0, else ROLLBACK; rc or the
 * commit's failure */
static int finish(PGconn *c, int rc)
{
    if (rc) {
        PQclear(PQexec(c, "ROLLBACK"));
        return rc;
    }
    return pg_exec(c, "commit", "COMMIT", 0, NULL);
}

/* inside a transaction holding the agent's usage row (*used: its count,
 * kept up to date) */
static int insert_one(struct mem_store *s, PGconn *c, const char *agent,
                      const struct mem_note *n, int64_t *used)
{
    const char *v[12];
    char *bufs[4] = {0}, cnt[32];
    int rc = note_params(agent, n, v, bufs, cnt);
    int64_t b = rc ? 0 : param_bytes(v);
    if (!rc && s->quota > 0 && *used + b > s->quota) rc = MEM_EQUOTA;
    if (!rc) {
        PGresult *r = pg_q(c, "insert a note", k_insert, 12, v);
        rc = !r ? AIOS_EIO : pg_changes(r) == 0 ? MEM_EEXISTS : 0;
        PQclear(r);
    }
    if (!rc && !(rc = add_usage(c, agent, b))) *used += b;
    free_bufs(bufs);
    return rc;
}

static int pg_insert(struct mem_store *s, const char *agent, const struct mem_note *n)
{
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    int64_t used;
    int rc = begin(c);
    if (!rc) {
        int e = lock_usage(c, agent, &used);
        if (!e) e = insert_one(s, c, agent, n, &used);
        rc = finish(c, e);
    }
    pg_give(s->pool, c);
    return rc;
}

static int pg_insert_many(struct mem_store *s, const char *agent, struct mem_note *const *n,
                          size_t count)
{
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    int64_t used;
    int rc = begin(c);
    if (!rc) {
        int e = lock_usage(c, agent, &used);
        for (size_t i = 0; i < count && !e; i++) e = insert_one(s, c, agent, n[i], &used);
        rc = finish(c, e);
    }
    pg_give(s->pool, c);
    return rc;
}

static int pg_set_quota(struct mem_store *s, int64_t bytes)
{
    s->quota = bytes;
    return 0;
}

static int pg_used(struct mem_store *s, const char *agent, int64_t *bytes)
{
    *bytes = 0;
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    const char *v[1] = {agent};
    PGresult *r = pg_q(c, "note usage", "SELECT n_bytes FROM mem_note_usage WHERE agent = $1", 1,
                       v);
    if (r && PQntuples(r) == 1) *bytes = pg_get_i64(r, 0, 0);
    int rc = r ? 0 : AIOS_EIO;
    PQclear(r);
    pg_give(s->pool, c);
    return rc;
}

/* the bytes of the agent's note id as stored (in the quota) */
#define ROW_BYTES                                                                              \
    "octet_length(id) + octet_length(content) + octet_length(keywords) + octet_length(tags) +" \
    " octet_length(category) + octet_length(context) + octet_length(timestamp) +"              \
    " octet_length(links) + octet_length(extra)"

static int pg_get(struct mem_store *s, const char *agent, const char *id, struct mem_note **out)
{
    *out = NULL;
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    const char *v[2] = {agent, id};
    PGresult *r = pg_q(c, "read a note",
                       "SELECT " NOTE_COLS " FROM mem_notes WHERE agent=$1 AND id=$2", 2, v);
    int rc = !r ? AIOS_EIO : PQntuples(r) == 0 ? AIOS_ENOTFOUND : 0;
    if (!rc && !(*out = row_note(r, 0, 0))) rc = AIOS_ENOMEM;
    PQclear(r);
    pg_give(s->pool, c);
    return rc;
}

static int pg_update(struct mem_store *s, const char *agent, const struct mem_note *n)
{
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    const char *v[12];
    char *bufs[4] = {0}, cnt[32];
    int64_t used = 0, oldb = 0;
    int rc = note_params(agent, n, v, bufs, cnt);
    int64_t newb = rc ? 0 : param_bytes(v);
    if (!rc) rc = begin(c);
    if (!rc) {
        int e = lock_usage(c, agent, &used);
        if (!e) {
            PGresult *r = pg_q(c, "update a note",
                               "SELECT " ROW_BYTES " FROM mem_notes WHERE agent=$1 AND id=$2"
                               " FOR UPDATE", 2, v);
            e = !r ? AIOS_EIO : PQntuples(r) == 0 ? AIOS_ENOTFOUND : 0;
            if (!e) oldb = pg_get_i64(r, 0, 0);
            PQclear(r);
        }
        if (!e && s->quota > 0 && newb > oldb && used + newb - oldb > s->quota) e = MEM_EQUOTA;
        if (!e) {
            PGresult *r = pg_q(c, "update a note",
                               "UPDATE mem_notes SET content=$3, keywords=$4, tags=$5, category=$6,"
                               " context=$7, timestamp=$8, last_accessed=$9, links=$10,"
                               " retrieval_count=$11, extra=$12 WHERE agent=$1 AND id=$2",
                               12, v);
            e = !r ? AIOS_EIO : pg_changes(r) == 0 ? AIOS_ENOTFOUND : 0;
            PQclear(r);
        }
        if (!e && newb != oldb) e = add_usage(c, agent, newb - oldb);
        rc = finish(c, e);
    }
    free_bufs(bufs);
    pg_give(s->pool, c);
    return rc;
}

static int pg_delete(struct mem_store *s, const char *agent, const char *id)
{
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    const char *v[2] = {agent, id};
    int64_t used;
    int rc = begin(c);
    if (!rc) {
        int e = lock_usage(c, agent, &used);
        if (!e) {
            PGresult *r = pg_q(c, "delete a note",
                               "DELETE FROM mem_notes WHERE agent=$1 AND id=$2 RETURNING " ROW_BYTES,
                               2, v);
            e = !r ? AIOS_EIO : PQntuples(r) == 0 ? AIOS_ENOTFOUND : 0;
            if (!e) e = add_usage(c, agent, -pg_get_i64(r, 0, 0));
            PQclear(r);
        }
        rc = finish(c, e);
    }
    pg_give(s->pool, c);
    return rc;
}

/* ids as a PostgreSQL array literal {"a","b"} (each quoted, " and \ escaped) */
static char *text_array(const char *const *ids, size_t n)
{
    size_t len = 3;
    for (size_t i = 0; i < n; i++) len += 2 * strlen(ids[i]) + 3;
    char *a = malloc(len), *p = a;
    if (!a) return NULL;
    *p++ = '{';
    for (size_t i = 0; i < n; i++) {
        if (i) *p++ = ',';
        *p++ = '"';
        for (const char *q = ids[i]; *q; q++) {
            if (*q == '"' || *q == '\\') *p++ = '\\';
            *p++ = *q;
        }
        *p++ = '"';
    }
    *p++ = '}';
    *p = 0;
    return a;
}

static int pg_touch(struct mem_store *s, const char *agent, const char *const *ids, size_t n,
                    const char *ts)
{
    if (n == 0) return 0;
    char *arr = text_array(ids, n);
    if (!arr) return AIOS_ENOMEM;
    PGconn *c = pg_take(s->pool);
    if (!c) {
        free(arr);
        return AIOS_EIO;
    }
    /* retrieval statistics are not worth waiting for the WAL flush */
    const char *v[3] = {agent, arr, ts};
    int rc = pg_exec(c, "record a retrieval",
                     "UPDATE mem_notes SET retrieval_count=retrieval_count+1, last_accessed=$3"
                     " WHERE agent=$1 AND id = ANY($2::text[])", 3, v);
    pg_give(s->pool, c);
    free(arr);
    return rc;
}

static int pg_count(struct mem_store *s, const char *agent, long long *out)
{
    *out = 0;
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    const char *v[1] = {agent};
    PGresult *r = pg_q(c, "count notes", "SELECT count(*) FROM mem_notes WHERE agent=$1", 1, v);
    if (r) *out = pg_get_i64(r, 0, 0);
    int rc = r ? 0 : AIOS_EIO;
    PQclear(r);
    pg_give(s->pool, c);
    return rc;
}

/* ---- full-text search ---- */

/* to_tsquery text for `text`: the words of mem_fts_query (stop words left
 * out unless there is nothing else, at most 32), each quoted, joined by |.
 * Words are letters, digits and non-ASCII bytes, so they hold no quote.
 * Empty when there is no word. malloc'd. */
static char *ts_query(const char *text)
{
    char *fq = mem_fts_query(text);
    if (!fq) return NULL;
    char *q = malloc(strlen(fq) + 1), *o = q;
    if (!q) {
        free(fq);
        return NULL;
    }
    /* fq is "w1" OR "w2" ...: turn it into 'w1' | 'w2' */
    for (const char *p = fq; *p; p++) {
        if (*p == '"') *o++ = '\'';
        else if (!strncmp(p, " OR ", 4)) {
            memcpy(o, " | ", 3);
            o += 3;
            p += 3;
        } else *o++ = *p;
    }
    *o = 0;
    free(fq);
    return q;
}

static int pg_search_ids(struct mem_store *s, const char *agent, const char *text, int k,
                         struct mem_hit *out, size_t *n_out)
{
    *n_out = 0;
    char *q = ts_query(text);
    if (!q) return AIOS_ENOMEM;
    if (!q[0] || k <= 0) {
        free(q);
        return 0;
    }
    PGconn *c = pg_take(s->pool);
    if (!c) {
        free(q);
        return AIOS_EIO;
    }
    char kb[32];
    const char *v[3] = {agent, q, pg_i64(kb, k)};
    PGresult *r = pg_q(c, "search notes",
                       "SELECT nid, ts_rank(tsv, q) AS score FROM mem_notes,"
                       " to_tsquery('english', $2) q WHERE agent=$1 AND tsv @@ q"
                       " ORDER BY score DESC, nid LIMIT $3::int", 3, v);
    int rc = r ? 0 : AIOS_EIO;
    for (int i = 0; r && i < PQntuples(r) && i < k; i++) {
        out[i] = (struct mem_hit){.nid = pg_get_i64(r, i, 0), .score = pg_get_dbl(r, i, 1)};
        out[i].bm25 = out[i].score;
        *n_out = (size_t)i + 1;
    }
    PQclear(r);
    pg_give(s->pool, c);
    free(q);
    return rc;
}

static int pg_get_nids(struct mem_store *s, const char *agent, struct mem_hit *h, size_t n)
{
    if (n == 0) return 0;
    json_t *ids = json_array();
    for (size_t i = 0; i < n && ids; i++) json_array_append_new(ids, json_integer(h[i].nid));
    char *list = ids ? json_dumps(ids, JSON_COMPACT) : NULL;
    json_decref(ids);
    if (!list) return AIOS_ENOMEM;
    list[0] = '{';
    list[strlen(list) - 1] = '}';
    PGconn *c = pg_take(s->pool);
    if (!c) {
        free(list);
        return AIOS_EIO;
    }
    const char *v[2] = {agent, list};
    PGresult *r = pg_q(c, "read notes",
                       "SELECT nid, " NOTE_COLS " FROM mem_notes WHERE agent=$1"
                       " AND nid = ANY($2::bigint[])", 2, v);
    int rc = r ? 0 : AIOS_EIO;
    for (int row = 0; r && !rc && row < PQntuples(r); row++) {
        int64_t nid = pg_get_i64(r, row, 0);
        for (size_t i = 0; i < n && !rc; i++)
            if (h[i].nid == nid && !h[i].note && !(h[i].note = row_note(r, row, 1)))
                rc = AIOS_ENOMEM;
    }
    PQclear(r);
    pg_give(s->pool, c);
    free(list);
    return rc;
}

static int pg_search(struct mem_store *s, const char *agent, const char *text, int k,
                     struct mem_hit **hits, size_t *n_hits)
{
    *hits = NULL;
    *n_hits = 0;
    struct mem_hit *h = k > 0 ? calloc((size_t)k, sizeof *h) : NULL;
    if (k > 0 && !h) return AIOS_ENOMEM;
    size_t n = 0;
    int rc = pg_search_ids(s, agent, text, k, h, &n);
    if (!rc) rc = pg_get_nids(s, agent, h, n);
    if (rc) {
        mem_hits_free(h, n);
        return rc;
    }
    size_t kept = 0; /* a note removed between the two reads is left out */
    for (size_t i = 0; i < n; i++)
        if (h[i].note) h[kept++] = h[i];
    *hits = h;
    *n_hits = kept;
    return 0;
}

static int pg_bm25_of(struct mem_store *s, const char *text, struct mem_hit *h, size_t n)
{
    if (n == 0) return 0;
    char *q = ts_query(text);
    json_t *ids = json_array();
    for (size_t i = 0; i < n && ids; i++) json_array_append_new(ids, json_integer(h[i].nid));
    char *list = ids ? json_dumps(ids, JSON_COMPACT) : NULL;
    json_decref(ids);
    int rc = q && list ? 0 : AIOS_ENOMEM;
    if (!rc && q[0]) {
        list[0] = '{';
        list[strlen(list) - 1] = '}';
        PGconn *c = pg_take(s->pool);
        PGresult *r = NULL;
        if (!c) rc = AIOS_EIO;
        else {
            const char *v[2] = {q, list};
            r = pg_q(c, "score notes",
                     "SELECT nid, ts_rank(tsv, q) FROM mem_notes, to_tsquery('english', $1) q"
                     " WHERE nid = ANY($2::bigint[]) AND tsv @@ q", 2, v);
            if (!r) rc = AIOS_EIO;
        }
        for (int row = 0; r && row < PQntuples(r); row++) {
            int64_t nid = pg_get_i64(r, row, 0);
            for (size_t i = 0; i < n; i++)
                if (h[i].nid == nid) h[i].bm25 = pg_get_dbl(r, row, 1);
        }
        PQclear(r);
        pg_give(s->pool, c);
    }
    free(q);
    free(list);
    return rc;
}

/* ---- embedding vectors (derived data; see the SQLite store) ---- */

static int pg_vec_model(struct mem_store *s, const char *fingerprint, bool *reset)
{
    *reset = false;
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    const char *v[1] = {fingerprint};
    PGresult *r = pg_q(c, "read the embedding model",
                       "SELECT value FROM mem_vec_meta WHERE key='model'", 0, NULL);
    int rc = r ? 0 : AIOS_EIO;
    bool same = r && PQntuples(r) == 1 && !strcmp(pg_get_s(r, 0, 0), fingerprint);
    PQclear(r);
    if (!rc && !same) {
        rc = pg_exec(c, "reset vectors", "BEGIN", 0, NULL);
        if (!rc) rc = pg_exec(c, "reset vectors", "DELETE FROM mem_notes_vec", 0, NULL);
        if (!rc)
            rc = pg_exec(c, "record the embedding model",
                         "INSERT INTO mem_vec_meta(key, value) VALUES('model', $1)"
                         " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", 1, v);
        if (rc) pg_exec(c, "rollback", "ROLLBACK", 0, NULL);
        else rc = pg_exec(c, "commit", "COMMIT", 0, NULL);
        if (!rc) *reset = true;
    }
    pg_give(s->pool, c);
    return rc;
}

static int pg_vec_set(struct mem_store *s, const char *agent, const char *const *ids,
                      const float *vecs, size_t n, int dim)
{
    if (n == 0) return 0;
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    int rc = pg_exec(c, "begin", "BEGIN", 0, NULL);
    for (size_t i = 0; i < n && !rc; i++) {
        const char *v[3] = {agent, ids[i], (const char *)(vecs + i * (size_t)dim)};
        int lens[3] = {-1, -1, dim * (int)sizeof(float)};
        PGresult *r = pg_qb(c, "store a vector",
                            "INSERT INTO mem_notes_vec(nid, agent, vec) SELECT nid, agent, $3"
                            " FROM mem_notes WHERE agent=$1 AND id=$2"
                            " ON CONFLICT (nid) DO UPDATE SET vec = EXCLUDED.vec",
                            3, v, lens, false);
        if (!r) rc = AIOS_EIO;
        PQclear(r);
    }
    if (rc) pg_exec(c, "rollback", "ROLLBACK", 0, NULL);
    else rc = pg_exec(c, "commit", "COMMIT", 0, NULL);
    pg_give(s->pool, c);
    return rc;
}

static int pg_vec_missing(struct mem_store *s, const char *agent, int limit, json_t **out)
{
    *out = NULL;
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    char lb[32];
    const char *v[2] = {agent, pg_i64(lb, limit)};
    PGresult *r = pg_q(c, "find notes without vectors",
                       "SELECT n.id, n.content FROM mem_notes n WHERE n.agent=$1 AND NOT EXISTS"
                       " (SELECT 1 FROM mem_notes_vec v WHERE v.nid = n.nid) LIMIT $2::int", 2, v);
    json_t *arr = r ? json_array() : NULL;
    int rc = !r ? AIOS_EIO : arr ? 0 : AIOS_ENOMEM;
    for (int i = 0; !rc && i < PQntuples(r); i++)
        if (json_array_append_new(arr, json_pack("[s,s]", pg_get_s(r, i, 0), pg_get_s(r, i, 1))))
            rc = AIOS_ENOMEM;
    PQclear(r);
    pg_give(s->pool, c);
    if (rc) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

static int pg_vec_scan(struct mem_store *s, const char *agent, const float *q, int dim,
                       struct emb_hit **hits, size_t *n_hits)
{
    *hits = NULL;
    *n_hits = 0;
    PGconn *c = pg_take(s->pool);
    if (!c) return AIOS_EIO;
    const char *v[1] = {agent};
    int lens[1] = {-1};
    /* binary result: nid as 8 bytes, the vector's bytes as stored */
    PGresult *r = pg_qb(c, "scan vectors",
                        "SELECT nid, vec FROM mem_notes_vec WHERE agent=$1", 1, v, lens, true);
    int rc = r ? emb_scan_pg(r, q, dim, hits, n_hits) : AIOS_EIO;
    PQclear(r);
    pg_give(s->pool, c);
    return rc;
}

const struct mem_store_ops mem_store_pg = {
    .name = "postgres",
    .open = pg_open,
    .close = pg_close,
    .insert = pg_insert,
    .insert_many = pg_insert_many,
    .get = pg_get,
    .update = pg_update,
    .remove = pg_delete,
    .touch = pg_touch,
    .count = pg_count,
    .set_quota = pg_set_quota,
    .used = pg_used,
    .search = pg_search,
    .search_ids = pg_search_ids,
    .bm25_of = pg_bm25_of,
    .get_nids = pg_get_nids,
    .vec_model = pg_vec_model,
    .vec_set = pg_vec_set,
    .vec_missing = pg_vec_missing,
    .vec_scan = pg_vec_scan,
};
