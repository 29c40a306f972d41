/* The durable tier of agent memory: the SQLite store (mem_store_sqlite, the
 * one implementation of struct mem_store_ops; see mem_store.h).
 *
 * One SQLite database (memory.db under data_dir by default) in WAL mode:
 *
 *   notes(nid INTEGER PRIMARY KEY, agent, id, content, keywords, tags,
 *         category, context, timestamp, last_accessed, links,
 *         retrieval_count, extra, UNIQUE(agent, id))
 *   notes_fts: FTS5 over (content, keywords, tags, context), external
 *         content = notes, porter stemming, kept in step by triggers
 *   agent_slot(agent, slot): each agent's number; an agent's notes have
 *         the row ids slot x 2^32 + 1, + 2, ... (NID_SPAN), so its rows are
 *         one range of the index and a retrieval reads only that range
 *
 * Beside it, in RAM (mem_rix.c): per agent with many notes, each token's
 * notes and counts, and for the store each token's number of notes; both
 * follow every commit (the group commit's `committed` callback), and a
 * retrieval reads them instead of FTS5 when they can answer it exactly
 * (rix_top).
 *
 * keywords, tags, links and extra are JSON text. Every statement names the
 * agent, so one agent's rows are never read or changed for another: the
 * namespace is (agent, id), and an id of another agent is simply absent.
 * BM25 term statistics are computed over the whole table (all agents); the
 * scores an agent sees are therefore influenced by the size of other agents'
 * corpora, never by their text reaching it. Documented in docs/memory.md.
 *
 * Connections: one writer, and readers. Every write (insert, update,
 * delete, touch, vectors) is a job for the one writer connection, run by
 * group commit (util/sqlgc.c): the writes waiting at one moment share one
 * transaction and one fsync, and each call returns only after the commit
 * that covers it. Retrieval statistics and vectors are derived data,
 * committed without an fsync and not kept waiting for the notes' fsync.
 * Reads use reader connections (PRAGMA query_only): SQLite connections
 * must not be shared between threads that run at the same time, so the
 * store keeps a free list of them. A read takes one (opening a new one when
 * the list is empty), uses it alone, and puts it back; in WAL mode a
 * reader never waits for the writer or its fsync. There are never more
 * readers than threads that ever read at the same time. Each connection
 * has its statements prepared once.
 *
 * Locking: `mu` guards only the free list and is never held during SQL;
 * the group commit's lock is its own leaf lock. Only this store writes the
 * database, so the writer never waits on SQLite's lock; the busy handler
 * (busy_wait: short sleeps, 5 s in all) covers another process. */
#include "memory/mem_store.h"
#include "memory/mem_rix.h"

#include "llm/embed.h"

#include "util/err.h"
#include "util/log.h"
#include "util/sqlgc.h"
#include "util/util.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
    ST_INSERT,
    ST_GET,
    ST_UPDATE,
    ST_DELETE,
    ST_TOUCH,
    ST_SCAN,
    ST_SLOT_GET,
    ST_SLOT_ADD,
    ST_NEXT_NID,
    ST_COUNT,
    ST_VEC_SET,
    ST_VEC_SCAN,
    ST_VEC_MISSING,
    ST_BM25_SOME,
    ST_GET_NID,
    ST_IDF,
    ST_TF,
    ST_RANGE_COUNT,
    ST_RANGE_TEXT,
    ST_OLD_TEXT,
    ST_BEGIN,
    ST_END,
    ST__COUNT
};

#define NOTE_COLS \
    "id, content, keywords, tags, category, context, timestamp, last_accessed, links, " \
    "retrieval_count, extra"

static const char *const k_sql[ST__COUNT] = {
    [ST_INSERT] = "INSERT INTO notes(agent, " NOTE_COLS ", nid) "
                  "VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)",
    [ST_GET] = "SELECT " NOTE_COLS " FROM notes WHERE agent=?1 AND id=?2",
    [ST_UPDATE] = "UPDATE notes SET content=?3, keywords=?4, tags=?5, category=?6, context=?7, "
                  "timestamp=?8, last_accessed=?9, links=?10, retrieval_count=?11, extra=?12 "
                  "WHERE agent=?1 AND id=?2 RETURNING nid",
    [ST_DELETE] = "DELETE FROM notes WHERE agent=?1 AND id=?2 "
                  "RETURNING nid, content, keywords, tags, context",
    [ST_TOUCH] = "UPDATE notes SET retrieval_count=retrieval_count+1, last_accessed=?3 "
                 "WHERE agent=?1 AND id=?2",
    /* every match in the agent's rows (?5..?6, NID_SPAN) with its BM25
     * score, in row id order: scan_top() keeps the best k (see there for
     * why not ORDER BY rank). FTS5 starts each word's list at ?5 (its
     * doclist index skips the pages before) and stops past ?6, so other
     * agents' rows are not read at all. */
    [ST_SCAN] = "SELECT f.rowid, aios_bm25(notes_fts, ?2, ?3) FROM notes_fts f "
                "WHERE notes_fts MATCH ?1 AND f.rowid BETWEEN ?5 AND ?6",
    /* the IDFs of a query's words (scan_pruned); no row: nothing of the
     * agent's matches */
    [ST_IDF] = "SELECT aios_idf(notes_fts, ?2) FROM notes_fts "
               "WHERE notes_fts MATCH ?1 AND rowid BETWEEN ?5 AND ?6 LIMIT 1",
    /* the agent's rows with some of a query's words, each with how often
     * it holds every word of ?2 (scan_pruned) */
    [ST_TF] = "SELECT f.rowid, aios_tf(notes_fts, ?2) FROM notes_fts f "
              "WHERE notes_fts MATCH ?1 AND f.rowid BETWEEN ?5 AND ?6",
    /* an agent's slot, a new one (the next number), and the next row id
     * in a slot's range ?1..?2 (slot_range) */
    [ST_SLOT_GET] = "SELECT slot FROM agent_slot WHERE agent=?1",
    [ST_SLOT_ADD] = "INSERT INTO agent_slot(agent, slot) "
                    "SELECT ?1, coalesce(max(slot), 0) + 1 FROM agent_slot",
    [ST_NEXT_NID] = "SELECT coalesce(max(nid), ?1) + 1 FROM notes WHERE nid BETWEEN ?1 AND ?2",
    [ST_COUNT] = "SELECT count(*) FROM notes WHERE agent=?1",
    [ST_VEC_SET] = "INSERT OR REPLACE INTO notes_vec(nid, agent, vec) "
                   "SELECT nid, agent, ?3 FROM notes WHERE agent=?1 AND id=?2",
    [ST_VEC_SCAN] = "SELECT v.nid, v.vec FROM notes_vec v WHERE v.agent=?1",
    [ST_VEC_MISSING] = "SELECT n.id, n.content FROM notes n WHERE n.agent=?1 AND NOT EXISTS "
                       "(SELECT 1 FROM notes_vec v WHERE v.nid = n.nid) LIMIT ?2",
    /* the BM25 scores of some rows (?2: a JSON list of row ids; vector
     * hits outside the BM25 candidates); rows that match none of the
     * words are absent */
    [ST_BM25_SOME] = "SELECT f.rowid, f.rank FROM notes_fts f WHERE notes_fts MATCH ?1 "
                     "AND f.rank MATCH 'aios_bm25()' AND f.rowid IN (SELECT value FROM json_each(?2))",
    [ST_GET_NID] = "SELECT " NOTE_COLS " FROM notes WHERE agent=?1 AND nid=?2",
    /* a read transaction over several statements (read_begin) */
    /* whether the agent (?1..?2) has enough notes for an index in RAM */
    [ST_RANGE_COUNT] = "SELECT count(*) FROM (SELECT 1 FROM notes WHERE nid BETWEEN ?1 AND ?2 "
                       "LIMIT ?3)",
    /* what the index in RAM is built from: the indexed text of its notes */
    [ST_RANGE_TEXT] = "SELECT nid, content, keywords, tags, context FROM notes "
                      "WHERE nid BETWEEN ?1 AND ?2",
    /* an update's note as it was, for the token counts in RAM */
    [ST_OLD_TEXT] = "SELECT content, keywords, tags, context FROM notes WHERE agent=?1 AND id=?2",
    [ST_BEGIN] = "BEGIN",
    [ST_END] = "COMMIT",
};

/* the bytes a note takes in the quota: its text fields as stored (the
 * id, content, keywords, tags, category, context, timestamp, links and
 * extra; not last_accessed and retrieval_count, which reads change) */
#define NOTE_BYTES(r)                                                                         \
    "(length(CAST(" r ".id AS BLOB)) + length(CAST(" r ".content AS BLOB)) +"                   \
    " length(CAST(" r ".keywords AS BLOB)) + length(CAST(" r ".tags AS BLOB)) +"                \
    " length(CAST(" r ".category AS BLOB)) + length(CAST(" r ".context AS BLOB)) +"             \
    " length(CAST(" r ".timestamp AS BLOB)) + length(CAST(" r ".links AS BLOB)) +"              \
    " length(CAST(" r ".extra AS BLOB)))"
#define NOTE_QUOTA "(SELECT value FROM note_limits WHERE key = 'quota_bytes')"
#define NOTE_USED(a) "coalesce((SELECT n_bytes FROM note_usage WHERE agent = " a "), 0)"
#define NOTE_FIELDS "content, keywords, tags, category, context, timestamp, links, extra"

/* The full-text index of the four text columns. An agent's rows are one
 * range of row ids (NID_SPAN), so a retrieval asks FTS5 for that range
 * and never reads another agent's entries: its cost follows the caller's
 * notes, not the store's (docs/memory.md, "Retrieval"). columnsize=0: no
 * table of each row's token counts, which only document-length
 * normalisation reads, and aios_bm25 has none (b = 0), so an insert
 * writes one B-tree less. */
#define FTS_SCHEMA                                                                              \
    "CREATE VIRTUAL TABLE IF NOT EXISTS notes_fts USING fts5(content, keywords, tags, context,"  \
    " content='notes', content_rowid='nid', columnsize=0, tokenize='porter unicode61');"       \
    "CREATE TRIGGER IF NOT EXISTS notes_ai AFTER INSERT ON notes BEGIN"                         \
    " INSERT INTO notes_fts(rowid, content, keywords, tags, context)"                           \
    " VALUES (new.nid, new.content, new.keywords, new.tags, new.context); END;"                 \
    "CREATE TRIGGER IF NOT EXISTS notes_ad AFTER DELETE ON notes BEGIN"                         \
    " INSERT INTO notes_fts(notes_fts, rowid, content, keywords, tags, context)"                \
    " VALUES ('delete', old.nid, old.content, old.keywords, old.tags, old.context); END;"       \
    "CREATE TRIGGER IF NOT EXISTS notes_au AFTER UPDATE OF content, keywords, tags, context"    \
    " ON notes BEGIN"                                                                           \
    " INSERT INTO notes_fts(notes_fts, rowid, content, keywords, tags, context)"                \
    " VALUES ('delete', old.nid, old.content, old.keywords, old.tags, old.context);"            \
    " INSERT INTO notes_fts(rowid, content, keywords, tags, context)"                           \
    " VALUES (new.nid, new.content, new.keywords, new.tags, new.context); END;"

/* Row ids: agent slot s (agent_slot, numbered from 1 in order of first
 * note) owns (s x NID_SPAN, (s + 1) x NID_SPAN); its notes take the next
 * id above its highest, so within an agent ids still follow the order
 * notes were added (ties in ranking go to the older note). */
#define NID_SPAN_SQL "4294967296" /* 2^32 */
#define NID_SPAN INT64_C(4294967296)
#define SLOT_MAX (INT64_MAX / NID_SPAN - 1)

static const char k_schema[] =
    "CREATE TABLE IF NOT EXISTS notes("
    " nid INTEGER PRIMARY KEY, agent TEXT NOT NULL, id TEXT NOT NULL, content TEXT NOT NULL,"
    " keywords TEXT NOT NULL, tags TEXT NOT NULL, category TEXT NOT NULL, context TEXT NOT NULL,"
    " timestamp TEXT NOT NULL, last_accessed TEXT NOT NULL, links TEXT NOT NULL,"
    " retrieval_count INTEGER NOT NULL DEFAULT 0, extra TEXT NOT NULL, UNIQUE(agent, id));"
    "CREATE TABLE IF NOT EXISTS agent_slot(agent TEXT PRIMARY KEY, slot INTEGER NOT NULL UNIQUE);"
    FTS_SCHEMA
    /* embedding vectors (hybrid retrieval, when embedding.model is set):
     * one per note, dropped with the note and when its content changes, so
     * a vector never describes other text; vec_meta.model names the model
     * that made them */
    "CREATE TABLE IF NOT EXISTS notes_vec(nid INTEGER PRIMARY KEY, agent TEXT NOT NULL,"
    " vec BLOB NOT NULL);"
    "CREATE INDEX IF NOT EXISTS notes_vec_agent ON notes_vec(agent);"
    "CREATE TABLE IF NOT EXISTS vec_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TRIGGER IF NOT EXISTS notes_vd AFTER DELETE ON notes BEGIN"
    " DELETE FROM notes_vec WHERE nid = old.nid; END;"
    "CREATE TRIGGER IF NOT EXISTS notes_vu AFTER UPDATE OF content ON notes"
    " WHEN old.content IS NOT new.content BEGIN"
    " DELETE FROM notes_vec WHERE nid = old.nid; END;"
    /* the per-agent quota (memory.store_quota_bytes, 0 = none): what each
     * agent's notes take, kept by triggers in the transaction that changes
     * them, and a write that would take the agent over it aborted before
     * it is made (RAISE: SQLITE_CONSTRAINT_TRIGGER, MEM_EQUOTA) */
    "CREATE TABLE IF NOT EXISTS note_usage(agent TEXT PRIMARY KEY, n_bytes INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS note_limits(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    "CREATE TRIGGER IF NOT EXISTS notes_qi BEFORE INSERT ON notes"
    " WHEN " NOTE_QUOTA " > 0 AND " NOTE_USED("new.agent") " + " NOTE_BYTES("new") " > " NOTE_QUOTA
    " BEGIN SELECT RAISE(ABORT, 'memory store quota'); END;"
    "CREATE TRIGGER IF NOT EXISTS notes_qu BEFORE UPDATE OF " NOTE_FIELDS " ON notes"
    " WHEN " NOTE_QUOTA " > 0 AND " NOTE_BYTES("new") " > " NOTE_BYTES("old") " AND "
    NOTE_USED("new.agent") " + " NOTE_BYTES("new") " - " NOTE_BYTES("old") " > " NOTE_QUOTA
    " BEGIN SELECT RAISE(ABORT, 'memory store quota'); END;"
    "CREATE TRIGGER IF NOT EXISTS notes_ui AFTER INSERT ON notes BEGIN"
    " INSERT INTO note_usage(agent, n_bytes) VALUES(new.agent, " NOTE_BYTES("new") ")"
    " ON CONFLICT(agent) DO UPDATE SET n_bytes = n_bytes + excluded.n_bytes; END;"
    "CREATE TRIGGER IF NOT EXISTS notes_ud AFTER DELETE ON notes BEGIN"
    " UPDATE note_usage SET n_bytes = n_bytes - " NOTE_BYTES("old") " WHERE agent = old.agent; END;"
    "CREATE TRIGGER IF NOT EXISTS notes_uu AFTER UPDATE OF " NOTE_FIELDS " ON notes BEGIN"
    " UPDATE note_usage SET n_bytes = n_bytes + " NOTE_BYTES("new") " - " NOTE_BYTES("old")
    " WHERE agent = new.agent; END;";

/* IDF of each word of a query, kept across queries (the store's
 * idf_cache, a leaf lock), by word: a word common to many queries
 * ("meeting") is counted once for all of them. Counting the rows that hold
 * a word walks its whole doclist: for a query whose words are in most
 * notes that was over half of a retrieval's instructions and grew with
 * every agent's notes (docs/performance.md). A kept entry is used while at
 * most 1/IDF_DRIFT as many notes as the index had when it was counted have
 * been added, changed or removed since (n_changes), so a word's IDF is off
 * by at most that share of the corpus; below IDF_MIN_ROWS rows it is
 * always counted exactly. */
#define IDF_SLOTS 1024
#define IDF_DRIFT 32
#define IDF_MIN_ROWS 1024
#define IDF_MAX_PHRASES 32
#define IDF_WORD_MAX 48

struct idf_ent {
    char word[IDF_WORD_MAX]; /* the quoted word as in the FTS query; "": empty slot */
    sqlite3_int64 n_row;
    long long changes; /* n_changes when it was counted */
    double idf, df; /* df: the rows that hold it */
};

struct idf_cache {
    struct mem_rix *rix;    /* its token counts come first (mem_rix_idf); NULL: none */
    atomic_llong n_changes; /* notes added, changed or removed so far */
    pthread_mutex_t mu;
    struct idf_ent e[IDF_SLOTS];
};

struct mem_conn {
    sqlite3 *db;
    sqlite3_stmt *st[ST__COUNT];
    struct mem_conn *next;
};

struct mem_store {
    char *path;
    bool full_sync;
    struct mem_conn *writer; /* used only by the group commit's leader */
    struct sqlgc *gc;
    pthread_mutex_t mu; /* guards `free_list` only */
    struct mem_conn *free_list; /* readers */
    atomic_uint n_deletes; /* every MEM_MERGE_EVERY-th delete merges the index */
    struct idf_cache idf;  /* see aios_bm25 */
    struct mem_rix *rix;   /* the index in RAM (mem_rix.h); NULL: off */
    atomic_bool rix_off;   /* retrievals do not use it (mem_store_rix_use) */
    atomic_int rix_min;    /* an agent's notes for an index (MEM_RIX_MIN_NOTES) */
};

/* the bound on the indexes in RAM of one store (the environment's
 * AIOS_MEM_RIX_MB overrides it, 0 turns them off: for side-by-side
 * benchmarks) */
#define MEM_RIX_MAX_BYTES ((size_t)64 << 20)

/* Deleting a note leaves a tombstone in the FTS5 index until its segments
 * are merged; every this many deletes the index is merged (bounded work:
 * about 50 ms for 300 notes of 8 KB), so deleted notes leave the index. */
#define MEM_MERGE_EVERY 32

/* ---- ranking ----
 * aios_bm25(): Okapi BM25 over all columns with k1 = 1.2 and b = 0, i.e.
 * the IDF and term-frequency saturation of FTS5's built-in bm25() (same
 * IDF formula) without document-length normalisation, negated so that
 * ORDER BY rank puts the best first. Why b = 0: the length of a row comes
 * from FTS5's docsize table, one lookup per matching row, and at 100k
 * notes that lookup was 60% of the CPU time and most of the wall time of a
 * retrieval (bench_memory: p50 3.5 ms CPU / 15 ms wall with it, 1.4 / 1.8
 * without). Notes are short and of similar length, where normalisation
 * matters least. Per-query data (IDF of each phrase) is computed once and
 * kept as aux data. */


struct rank_data {
    int n_phrase;
    double idf[];
};

/* e holds word (len bytes, shorter than IDF_WORD_MAX) */
static bool idf_ent_is(const struct idf_ent *e, const char *word, size_t len)
{
    return len < IDF_WORD_MAX && !memcmp(e->word, word, len) && !e->word[len];
}

/* e's count may still be used at `now` changes (at most 1/IDF_DRIFT old) */
static bool idf_ent_fresh(const struct idf_ent *e, long long now)
{
    return (now - e->changes) * IDF_DRIFT <= e->n_row;
}

/* word: len bytes, shorter than IDF_WORD_MAX */
static bool idf_lookup(struct idf_cache *c, const char *word, size_t len, double *idf, double *df)
{
    struct idf_ent *e = &c->e[util_fnv1a32_n(word, len) % IDF_SLOTS];
    bool hit = false;
    long long now = atomic_load(&c->n_changes);
    pthread_mutex_lock(&c->mu);
    if (idf_ent_is(e, word, len) && idf_ent_fresh(e, now)) {
        *idf = e->idf;
        *df = e->df;
        hit = true;
    }
    pthread_mutex_unlock(&c->mu);
    return hit;
}

/* A slot still valid for another word is kept: the word counted now is
 * counted again next time. Replacing it would make the other word's next
 * retrieval count it afresh, and two retrievals with no write between them
 * could then score with different IDFs (the kept one may be up to
 * 1/IDF_DRIFT old); kept this way, they score alike to the bit. */
static void idf_store(struct idf_cache *c, const char *word, size_t len, sqlite3_int64 n_row,
                      double idf, double df)
{
    struct idf_ent *e = &c->e[util_fnv1a32_n(word, len) % IDF_SLOTS];
    long long now = atomic_load(&c->n_changes);
    pthread_mutex_lock(&c->mu);
    if (e->word[0] && !idf_ent_is(e, word, len) && idf_ent_fresh(e, now)) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    memcpy(e->word, word, len);
    e->word[len] = 0;
    e->n_row = n_row;
    e->changes = now;
    e->idf = idf;
    e->df = df;
    pthread_mutex_unlock(&c->mu);
}

/* a quoted word's IDF and rows: from the store's token counts in RAM,
 * else from the cache (false: neither has it) */
static bool known_idf(struct idf_cache *c, const char *word, size_t len, double *idf, double *df)
{
    if (c->rix && len >= 2 && mem_rix_idf(c->rix, word + 1, len - 2, idf, df)) return true;
    return idf_lookup(c, word, len, idf, df);
}

/* The quoted words of a query of mem_fts_query ("a" OR "b" ...): the
 * first `max` of them into word[] (at the opening quote) and len[] (with
 * both quotes); returns how many there are in all. */
static int quoted_words(const char *q, const char **word, size_t *len, int max)
{
    int n = 0;
    for (const char *p = q; p && (p = strchr(p, '"'));) {
        const char *e = strchr(p + 1, '"');
        if (!e) break;
        if (n < max) {
            word[n] = p;
            len[n] = (size_t)(e + 1 - p);
        }
        n++;
        p = e + 1;
    }
    return n;
}

static int rank_count_cb(const Fts5ExtensionApi *api, Fts5Context *fts, void *ud)
{
    (void)api;
    (void)fts;
    (*(sqlite3_int64 *)ud)++;
    return SQLITE_OK;
}

/* The IDFs of the n phrases of the current query into idf,
 * and into df (when not NULL) the number of rows that hold each.
 * KEY, the text query (mem_fts_query: quoted words joined by OR), names
 * the phrases for the store's cache: a word counted lately is taken from
 * it, the others are counted (xQueryPhrase walks the phrase's doclist).
 * Without KEY, or when its words are not the n phrases, all are counted. */
static int rank_idf(const Fts5ExtensionApi *api, Fts5Context *fts, const char *key, int n,
                    double *idf, double *df)
{
    sqlite3_int64 n_row = 0;
    double df_dummy;
    int rc = api->xRowCount(fts, &n_row);
    struct idf_cache *cache = api->xUserData(fts);
    const char *word[IDF_MAX_PHRASES];
    size_t len[IDF_MAX_PHRASES];
    bool named = rc == SQLITE_OK && cache && key && n <= IDF_MAX_PHRASES &&
                 quoted_words(key, word, len, IDF_MAX_PHRASES) == n;
    bool cacheable = named && n_row >= IDF_MIN_ROWS;
    for (int i = 0; i < n && rc == SQLITE_OK; i++) {
        bool keep = cacheable && len[i] < IDF_WORD_MAX;
        double *dfi = df ? &df[i] : &df_dummy;
        if (named && cache->rix && mem_rix_idf(cache->rix, word[i] + 1, len[i] - 2, &idf[i], dfi))
            continue;
        if (keep && idf_lookup(cache, word[i], len[i], &idf[i], dfi)) continue;
        sqlite3_int64 hits = 0;
        rc = api->xQueryPhrase(fts, i, &hits, rank_count_cb);
        idf[i] = mem_idf((double)n_row, (double)hits);
        *dfi = (double)hits;
        if (rc == SQLITE_OK && keep) idf_store(cache, word[i], len[i], n_row, idf[i], *dfi);
    }
    return rc;
}


/* aios_bm25(notes_fts [, KEY [, IDFS]]): KEY, the text query, lets the
 * IDFs come from the store's cache (struct idf_cache, the function's user
 * data); IDFS, a blob of one double per phrase (from aios_idf), gives the
 * IDFs to use, so that several queries of one retrieval score alike
 * (scan_pruned). */
static void aios_bm25(const Fts5ExtensionApi *api, Fts5Context *fts, sqlite3_context *ctx,
                      int n_val, sqlite3_value **vals)
{
    struct rank_data *d = api->xGetAuxdata(fts, 0);
    if (!d) {
        int n = api->xPhraseCount(fts);
        d = sqlite3_malloc64(sizeof *d + (size_t)n * sizeof(double));
        if (!d) {
            sqlite3_result_error_nomem(ctx);
            return;
        }
        d->n_phrase = n;
        int rc = SQLITE_OK;
        if (n_val > 1 && sqlite3_value_type(vals[1]) == SQLITE_BLOB &&
            sqlite3_value_bytes(vals[1]) == (int)((size_t)n * sizeof(double)))
            memcpy(d->idf, sqlite3_value_blob(vals[1]), (size_t)n * sizeof(double));
        else
            rc = rank_idf(api, fts, n_val > 0 ? (const char *)sqlite3_value_text(vals[0]) : NULL,
                          n, d->idf, NULL);
        if (rc == SQLITE_OK) rc = api->xSetAuxdata(fts, d, sqlite3_free);
        else sqlite3_free(d);
        if (rc != SQLITE_OK) {
            sqlite3_result_error_code(ctx, rc);
            return;
        }
    }
    double score = 0;
    for (int i = 0; i < d->n_phrase; i++) {
        Fts5PhraseIter it;
        int col = -1, off = 0, tf = 0;
        if (api->xPhraseFirst(fts, i, &it, &col, &off) != SQLITE_OK) continue;
        for (; col >= 0; api->xPhraseNext(fts, &it, &col, &off)) tf++;
        if (tf) score += mem_rank_term(d->idf[i], tf);
    }
    sqlite3_result_double(ctx, -score);
}

/* aios_idf(notes_fts, KEY): the IDFs aios_bm25 would use, one double per
 * phrase, then as many of the rows that hold each: a blob of 2 x n
 * doubles */
static void aios_idf(const Fts5ExtensionApi *api, Fts5Context *fts, sqlite3_context *ctx, int n_val,
                     sqlite3_value **vals)
{
    int n = api->xPhraseCount(fts);
    double *idf = sqlite3_malloc64((size_t)(n > 0 ? 2 * n : 1) * sizeof *idf);
    if (!idf) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    int rc = rank_idf(api, fts, n_val > 0 ? (const char *)sqlite3_value_text(vals[0]) : NULL, n,
                      idf, idf + n);
    if (rc != SQLITE_OK) {
        sqlite3_free(idf);
        sqlite3_result_error_code(ctx, rc);
        return;
    }
    sqlite3_result_blob(ctx, idf, (int)((size_t)(2 * n) * sizeof *idf), sqlite3_free);
}

/* aios_tf(notes_fts, Q): how often each word of Q (mem_fts_query's quoted
 * words) occurs in the row's four text columns, counted by tokenizing the
 * row's text with the table's own tokenizer (so the same tokens as the
 * index, and a word of several tokens counts where they follow each other,
 * as a phrase does): a blob of struct tf_row. It scores a row for words
 * that are not in the query that found it (scan_pruned), where reading them
 * from the index would mean seeking through their whole doclists. */
#define TF_MAX_TOKENS 8 /* tokens of one word; more, or a token over TF_TOKEN_MAX: the plain scan */
#define TF_TOKEN_MAX 64

struct tf_word {
    int n_tok;
    bool uncountable; /* more than TF_MAX_TOKENS tokens, or one too long */
    char *tok[TF_MAX_TOKENS];
    int len[TF_MAX_TOKENS];
};

struct tf_query {
    int n_word;
    struct tf_word w[IDF_MAX_PHRASES];
};

struct tf_row {
    int64_t bytes; /* of text tokenized, for the caller's budget */
    int32_t n_word; /* -1: a word that cannot be counted (tf_word) */
    int32_t tf[IDF_MAX_PHRASES];
};

/* the last tokens of the column being read, newest at (n - 1) % ring */
struct tf_scan {
    struct tf_query *q;
    struct tf_row *row;
    char buf[TF_MAX_TOKENS][TF_TOKEN_MAX];
    int len[TF_MAX_TOKENS]; /* -1: longer than the buffer (equal to no word's token) */
    int n;
    struct tf_word *fill; /* tokenizing a query word */
};

static void tf_query_free(void *p)
{
    struct tf_query *q = p;
    for (int i = 0; q && i < q->n_word; i++)
        for (int t = 0; t < q->w[i].n_tok; t++) sqlite3_free(q->w[i].tok[t]);
    sqlite3_free(q);
}

static int tf_word_token(void *ctx, int flags, const char *tok, int n, int start, int end)
{
    (void)flags;
    (void)start;
    (void)end;
    struct tf_word *w = ((struct tf_scan *)ctx)->fill;
    if (w->n_tok == TF_MAX_TOKENS || n > TF_TOKEN_MAX) {
        w->uncountable = true;
        return SQLITE_DONE;
    }
    if (!(w->tok[w->n_tok] = sqlite3_malloc(n > 0 ? n : 1))) return SQLITE_NOMEM;
    memcpy(w->tok[w->n_tok], tok, (size_t)n);
    w->len[w->n_tok++] = n;
    return SQLITE_OK;
}

static int tf_row_token(void *ctx, int flags, const char *tok, int n, int start, int end)
{
    (void)flags;
    (void)start;
    (void)end;
    struct tf_scan *sc = ctx;
    int at = sc->n++ % TF_MAX_TOKENS;
    sc->len[at] = n <= TF_TOKEN_MAX ? n : -1;
    if (sc->len[at] > 0) memcpy(sc->buf[at], tok, (size_t)n);
    for (int i = 0; i < sc->q->n_word; i++) {
        const struct tf_word *w = &sc->q->w[i];
        if (w->n_tok == 0 || w->n_tok > sc->n) continue;
        bool eq = true;
        for (int t = 0; t < w->n_tok && eq; t++) {
            int r = (sc->n - w->n_tok + t) % TF_MAX_TOKENS;
            eq = sc->len[r] == w->len[t] && !memcmp(sc->buf[r], w->tok[t], (size_t)w->len[t]);
        }
        if (eq) sc->row->tf[i]++;
    }
    return SQLITE_OK;
}

static void aios_tf(const Fts5ExtensionApi *api, Fts5Context *fts, sqlite3_context *ctx, int n_val,
                    sqlite3_value **vals)
{
    struct tf_row row = {0};
    struct tf_scan sc = {0};
    struct tf_query *q = api->xGetAuxdata(fts, 0);
    int rc = SQLITE_OK;
    if (!q) {
        const char *text = n_val > 0 ? (const char *)sqlite3_value_text(vals[0]) : NULL;
        if (!(q = sqlite3_malloc(sizeof *q))) {
            sqlite3_result_error_nomem(ctx);
            return;
        }
        memset(q, 0, sizeof *q);
        const char *word[IDF_MAX_PHRASES];
        size_t len[IDF_MAX_PHRASES];
        int n = quoted_words(text, word, len, IDF_MAX_PHRASES);
        for (; q->n_word < n && q->n_word < IDF_MAX_PHRASES && rc == SQLITE_OK; q->n_word++) {
            sc.fill = &q->w[q->n_word];
            rc = api->xTokenize(fts, word[q->n_word] + 1, (int)len[q->n_word] - 2, &sc, tf_word_token);
            if (rc == SQLITE_DONE) rc = SQLITE_OK;
        }
        if (rc == SQLITE_OK) rc = api->xSetAuxdata(fts, q, tf_query_free);
        else tf_query_free(q);
        if (rc != SQLITE_OK) {
            sqlite3_result_error_code(ctx, rc);
            return;
        }
    }
    row.n_word = q->n_word;
    for (int i = 0; i < q->n_word; i++)
        if (q->w[i].uncountable) row.n_word = -1;
    sc.q = q;
    sc.row = &row;
    for (int col = 0; col < 4 && row.n_word > 0 && rc == SQLITE_OK; col++) {
        const char *z = NULL;
        int n = 0;
        if ((rc = api->xColumnText(fts, col, &z, &n)) != SQLITE_OK || !z) break;
        row.bytes += n;
        sc.n = 0; /* a word does not run across columns */
        rc = api->xTokenize(fts, z, n, &sc, tf_row_token);
    }
    if (rc != SQLITE_OK) {
        sqlite3_result_error_code(ctx, rc);
        return;
    }
    sqlite3_result_blob(ctx, &row, sizeof row, SQLITE_TRANSIENT);
}

/* the connection's FTS5 API (NULL: none) */
static fts5_api *fts_api(sqlite3 *db)
{
    fts5_api *api = NULL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT fts5(?1)", -1, &st, NULL) != SQLITE_OK) return NULL;
    sqlite3_bind_pointer(st, 1, (void *)&api, "fts5_api_ptr", NULL);
    sqlite3_step(st);
    sqlite3_finalize(st);
    return api;
}

static int rank_register(sqlite3 *db, struct idf_cache *cache)
{
    fts5_api *api = fts_api(db);
    if (!api || api->iVersion < 2) return AIOS_EIO;
    if (api->xCreateFunction(api, "aios_bm25", cache, aios_bm25, NULL) != SQLITE_OK ||
        api->xCreateFunction(api, "aios_idf", cache, aios_idf, NULL) != SQLITE_OK ||
        api->xCreateFunction(api, "aios_tf", cache, aios_tf, NULL) != SQLITE_OK)
        return AIOS_EIO;
    return 0;
}

/* SQLite has one writer at a time; another connection that wants to write
 * is told "busy" and retries. The stock handler sleeps 1, 2, 5, 10 ... 100
 * ms between tries, which for our short write transactions (well under a
 * millisecond without fsync) turned two concurrent writers into tens of
 * milliseconds of sleeping. Retry every 50 us for the first 5 ms, then
 * every millisecond, and give up after about 5 s. */
static int busy_wait(void *ud, int n)
{
    (void)ud;
    if (n >= 5100) return 0;
    struct timespec ts = {0, n < 100 ? 50000L : 1000000L};
    nanosleep(&ts, NULL);
    return 1;
}

static void conn_close(struct mem_conn *c)
{
    if (!c) return;
    for (int i = 0; i < ST__COUNT; i++) sqlite3_finalize(c->st[i]);
    sqlite3_close(c->db);
    free(c);
}

static int conn_open(struct mem_store *s, bool writer, struct mem_conn **out, char *err,
                     size_t errlen)
{
    *out = NULL;
    struct mem_conn *c = calloc(1, sizeof *c);
    if (!c) return AIOS_ENOMEM;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(s->path, &c->db, flags, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open the memory database %s: %s", s->path,
                 c->db ? sqlite3_errmsg(c->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_handler(c->db, busy_wait, NULL);
    if (rank_register(c->db, &s->idf)) {
        snprintf(err, errlen, "memory database %s: this SQLite has no FTS5 (it is needed for retrieval)",
                 s->path);
        goto fail;
    }
    /* No memory map: SQLite empties a reader's page cache at the start of
     * every read transaction that follows a commit, and with a map it also
     * unmaps the whole file then, so each page is faulted in again (TLB
     * shootdowns on every core). Under a steady stream of writes that made
     * retrieval 2 to 3 times dearer than pread through the page cache, and
     * one retrieval at a time at 100k notes is faster without it too
     * (docs/performance.md, "Reads under writes"). A reader's cache is
     * 8 MiB: one per reading thread; the writer's 32 MiB. */
    char pragmas[256];
    /* auto_vacuum first: it only takes before the first table is made */
    snprintf(pragmas, sizeof pragmas, "PRAGMA auto_vacuum=INCREMENTAL; "
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; "
             "PRAGMA mmap_size=0; PRAGMA cache_size=%s;",
             s->full_sync ? "FULL" : "NORMAL", writer ? "-32768" : "-8192; PRAGMA query_only=1");
    char *msg = NULL;
    if (sqlite3_exec(c->db, pragmas, NULL, NULL, &msg) != SQLITE_OK ||
        (writer && sqlite3_exec(c->db, k_schema, NULL, NULL, &msg) != SQLITE_OK)) {
        snprintf(err, errlen, "memory database %s: %s%s", s->path, msg ? msg : "error",
                 msg && strstr(msg, "fts5") ? " (this SQLite lacks FTS5; install a build with it)" : "");
        sqlite3_free(msg);
        goto fail;
    }
    for (int i = 0; i < ST__COUNT; i++) {
        if (sqlite3_prepare_v3(c->db, k_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &c->st[i], NULL) !=
            SQLITE_OK) {
            snprintf(err, errlen, "memory database %s: %s", s->path, sqlite3_errmsg(c->db));
            goto fail;
        }
    }
    *out = c;
    return 0;
fail:
    conn_close(c);
    return AIOS_EIO;
}

static struct mem_conn *conn_take(struct mem_store *s)
{
    pthread_mutex_lock(&s->mu);
    struct mem_conn *c = s->free_list;
    if (c) s->free_list = c->next;
    pthread_mutex_unlock(&s->mu);
    if (c) return c;
    char err[512] = "";
    if (conn_open(s, false, &c, err, sizeof err)) {
        LOG_ERROR("memory", "%s", err[0] ? err : "cannot open a database connection");
        return NULL;
    }
    return c;
}

static void conn_give(struct mem_store *s, struct mem_conn *c)
{
    pthread_mutex_lock(&s->mu);
    c->next = s->free_list;
    s->free_list = c;
    pthread_mutex_unlock(&s->mu);
}

static int sql_fail(struct mem_conn *c, const char *what);

/* One read transaction for the statements until read_end: they see one
 * snapshot, and the connection's page cache is emptied at most once (at
 * the first of them, when a write committed since its last read) rather
 * than at each. */
static int read_begin(struct mem_conn *c)
{
    int r = sqlite3_step(c->st[ST_BEGIN]);
    sqlite3_reset(c->st[ST_BEGIN]);
    return r == SQLITE_DONE ? 0 : sql_fail(c, "begin a read");
}

static void read_end(struct mem_conn *c)
{
    int r = sqlite3_step(c->st[ST_END]);
    sqlite3_reset(c->st[ST_END]);
    if (r == SQLITE_DONE && sqlite3_get_autocommit(c->db)) return;
    /* never back on the free list inside a transaction (its next BEGIN
     * would fail, and it would keep an old snapshot): reset what may still
     * run, and roll back */
    for (sqlite3_stmt *p = sqlite3_next_stmt(c->db, NULL); p; p = sqlite3_next_stmt(c->db, p))
        sqlite3_reset(p);
    sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
}

static int64_t one_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* A database of the earlier layout (user_version 0): count what each
 * agent's notes take, and rewrite the file once with incremental
 * auto-vacuum so that deletes can give space back. */
static int upgrade_v1(struct mem_conn *c, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(c->db,
                     "BEGIN IMMEDIATE; DELETE FROM note_usage;"
                     " INSERT INTO note_usage(agent, n_bytes) SELECT agent, sum(" NOTE_BYTES("notes")
                     ") FROM notes GROUP BY agent; COMMIT;",
                     NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "memory database: counting the notes' bytes: %s", msg ? msg : "?");
        sqlite3_free(msg);
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
        return AIOS_EIO;
    }
    if (one_int(c->db, "PRAGMA auto_vacuum") != 2 &&
        sqlite3_exec(c->db, "PRAGMA auto_vacuum=INCREMENTAL; VACUUM", NULL, NULL, &msg) != SQLITE_OK) {
        LOG_WARN("memory", "VACUUM failed (%s); space of deleted notes is reused but not given "
                 "back until it succeeds at a later start", msg ? msg : "?");
        sqlite3_free(msg);
        return 0;
    }
    if (sqlite3_exec(c->db, "PRAGMA user_version = 1", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "memory database: %s", sqlite3_errmsg(c->db));
        return AIOS_EIO;
    }
    return 0;
}

/* user_version 1 or 2 -> 3: each agent gets its slot (in order of its
 * first note), its notes the row ids of that slot's range in the order
 * they were added (NID_SPAN), and the full-text index is made again from
 * the notes without the agent column of version 2 (once, at the first
 * start of this version; one transaction, so a crash leaves version 2). */
static int upgrade_v3(struct mem_conn *c, char *err, size_t errlen)
{
    char *msg = NULL;
    int64_t n = one_int(c->db, "SELECT count(*) FROM notes");
    if (n > 0)
        LOG_INFO("memory", "numbering %lld notes by agent and rebuilding their index (once, for "
                 "this version's layout)", (long long)n);
    if (sqlite3_exec(c->db,
                     "BEGIN IMMEDIATE; DROP TRIGGER IF EXISTS notes_ai; DROP TRIGGER IF EXISTS "
                     "notes_ad; DROP TRIGGER IF EXISTS notes_au; DROP TABLE IF EXISTS notes_fts;"
                     " DELETE FROM agent_slot;"
                     " INSERT INTO agent_slot(agent, slot) SELECT agent, row_number() OVER"
                     " (ORDER BY min(nid)) FROM notes GROUP BY agent;"
                     " CREATE TEMP TABLE renum(old INTEGER PRIMARY KEY, new INTEGER NOT NULL);"
                     " INSERT INTO renum(old, new) SELECT n.nid, s.slot * " NID_SPAN_SQL " + row_number()"
                     " OVER (PARTITION BY n.agent ORDER BY n.nid) FROM notes n"
                     " JOIN agent_slot s ON s.agent = n.agent;"
                     " DELETE FROM notes_vec WHERE nid NOT IN (SELECT old FROM renum);"
                     " UPDATE notes_vec SET nid = -(SELECT new FROM renum WHERE old = notes_vec.nid);"
                     " UPDATE notes_vec SET nid = -nid;"
                     " UPDATE notes SET nid = -(SELECT new FROM renum WHERE old = notes.nid);"
                     " UPDATE notes SET nid = -nid;"
                     " DROP TABLE renum;" FTS_SCHEMA
                     " INSERT INTO notes_fts(notes_fts) VALUES('rebuild');"
                     " PRAGMA user_version = 3; COMMIT;",
                     NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "memory database: numbering the notes by agent: %s",
                 msg ? msg : "?");
        sqlite3_free(msg);
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
        return AIOS_EIO;
    }
    return 0;
}

static int upgrade(struct mem_conn *c, char *err, size_t errlen)
{
    int64_t v = one_int(c->db, "PRAGMA user_version");
    int rc = v < 1 ? upgrade_v1(c, err, errlen) : 0;
    if (!rc && v < 3) rc = upgrade_v3(c, err, errlen);
    return rc;
}

int mem_store_open(struct mem_store **out, const char *path, bool full_sync, char *err,
                   size_t errlen)
{
    *out = NULL;
    struct mem_store *s = calloc(1, sizeof *s);
    if (!s) return AIOS_ENOMEM;
    s->path = strdup(path);
    if (!s->path) {
        free(s);
        return AIOS_ENOMEM;
    }
    s->full_sync = full_sync;
    atomic_store(&s->rix_min, MEM_RIX_MIN_NOTES);
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->idf.mu, NULL);
    int rc = conn_open(s, true, &s->writer, err, errlen); /* creates the schema */
    if (!rc) rc = upgrade(s->writer, err, errlen);
    if (!rc && (rc = sqlgc_open(&s->gc, s->writer->db, s->writer, full_sync)))
        snprintf(err, errlen, "memory database %s: cannot prepare the group commit", path);
    const char *mb = getenv("AIOS_MEM_RIX_MB");
    size_t rix_bytes = mb && *mb ? (size_t)strtoull(mb, NULL, 10) << 20 : MEM_RIX_MAX_BYTES;
    if (!rc && rix_bytes && mem_rix_open(&s->rix, fts_api(s->writer->db), rix_bytes))
        LOG_WARN("memory", "no index in RAM: retrievals read FTS5 only");
    if (!rc && s->rix && mem_rix_load_counts(s->rix, s->writer->db))
        LOG_WARN("memory", "cannot read the index's token counts: IDFs are counted by FTS5");
    s->idf.rix = s->rix;
    struct mem_conn *c = NULL;
    if (!rc) rc = conn_open(s, false, &c, err, errlen); /* a reader; proves it works */
    if (rc) {
        conn_close(c);
        mem_store_close(s);
        return rc;
    }
    conn_give(s, c);
    *out = s;
    return 0;
}

void mem_store_close(struct mem_store *s)
{
    if (!s) return;
    struct mem_conn *c = s->free_list;
    while (c) {
        struct mem_conn *n = c->next;
        conn_close(c);
        c = n;
    }
    sqlgc_close(s->gc);
    mem_rix_close(s->rix);
    conn_close(s->writer);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->idf.mu);
    free(s->path);
    free(s);
}

/* ---- rows <-> notes ---- */

static char *dump(json_t *j)
{
    return json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* bind ?1 agent, ?2..?12 the note's fields (as in NOTE_COLS order) */
static int bind_note(sqlite3_stmt *st, const char *agent, const struct mem_note *n, char **bufs)
{
    bufs[0] = dump(n->keywords);
    bufs[1] = dump(n->tags);
    bufs[2] = dump(n->links);
    bufs[3] = dump(n->extra);
    if (!bufs[0] || !bufs[1] || !bufs[2] || !bufs[3]) return AIOS_ENOMEM;
    sqlite3_bind_text(st, 1, agent, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, n->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, n->content, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, bufs[0], -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, bufs[1], -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, n->category, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, n->context, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, n->timestamp, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 9, n->last_accessed, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 10, bufs[2], -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 11, n->retrieval_count);
    sqlite3_bind_text(st, 12, bufs[3], -1, SQLITE_STATIC);
    return 0;
}

static void free_bufs(char **bufs)
{
    for (int i = 0; i < 4; i++) free(bufs[i]);
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? (const char *)t : "";
}

static json_t *col_json(sqlite3_stmt *st, int i, json_t *(*make)(void))
{
    json_t *j = json_loads(col_text(st, i), JSON_DECODE_ANY, NULL);
    if (!j) j = make();
    return j;
}

/* the row's columns 0..10 as NOTE_COLS */
static struct mem_note *row_note(sqlite3_stmt *st)
{
    struct mem_note *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    n->id = strdup(col_text(st, 0));
    n->content = strdup(col_text(st, 1));
    n->keywords = col_json(st, 2, json_array);
    n->tags = col_json(st, 3, json_array);
    n->category = strdup(col_text(st, 4));
    n->context = strdup(col_text(st, 5));
    snprintf(n->timestamp, sizeof n->timestamp, "%s", col_text(st, 6));
    snprintf(n->last_accessed, sizeof n->last_accessed, "%s", col_text(st, 7));
    n->links = col_json(st, 8, json_array);
    n->retrieval_count = sqlite3_column_int64(st, 9);
    n->extra = col_json(st, 10, json_object);
    if (!n->id || !n->content || !n->keywords || !n->tags || !n->category || !n->context ||
        !n->links || !n->extra) {
        mem_note_free(n);
        return NULL;
    }
    return n;
}

static int sql_fail(struct mem_conn *c, const char *what)
{
    LOG_ERROR("memory", "%s: %s", what, sqlite3_errmsg(c->db));
    return AIOS_EIO;
}

/* a write: fn(writer, arg) in the next group commit (see the top);
 * committed(arg), when given, once it is committed (sqlgc.h) */
static int write_job_then(struct mem_store *s, int (*fn)(void *conn, void *arg), void *arg,
                          bool durable, void (*committed)(void *arg))
{
    struct sqlgc_job j = {.fn = fn, .arg = arg, .durable = durable, .committed = committed};
    return sqlgc_run(s->gc, &j);
}

static int write_job(struct mem_store *s, int (*fn)(void *conn, void *arg), void *arg,
                     bool durable)
{
    return write_job_then(s, fn, arg, durable, NULL);
}

/* what a write job is given */
struct wargs {
    const char *agent;
    const struct mem_note *note;
    struct mem_note *const *notes;
    const char *id;
    const char *const *ids;
    size_t n;
    const char *ts;
    const float *vecs;
    int dim;
    const char *fingerprint;
    bool *reset;
    bool merge; /* delete: merge the search index too */
    /* for the index in RAM (mem_rix.h), set by the job: the note's row id,
     * whether its last run succeeded (`wrote`: its changes stand unless the
     * commit fails; a job that fails is undone, which changes nothing), and
     * the note's indexed text before and after (owned copies; insert_many:
     * each note's row id and text) */
    struct mem_store *s;
    int64_t nid;
    bool wrote;
    struct note_text *old, *cur;
    int64_t *many_nid;
    struct note_text *many;
};

/* ---- the index in RAM: following the notes' changes ----
 * After its commit, in commit order, each insert, update or delete tells
 * the index in RAM its note's text before and after; a write whose
 * outcome is unknown (a failed commit) makes it drop what it cannot know
 * (mem_rix_lost). */

/* a note's indexed columns (content, keywords, tags, context), owned */
struct note_text {
    char *col[4];
};

static void note_text_free(struct note_text *t)
{
    for (int i = 0; t && i < 4; i++) {
        free(t->col[i]);
        t->col[i] = NULL;
    }
}

/* t := the four strings; AIOS_ENOMEM */
static int note_text_set(struct note_text *t, const char *c0, const char *c1, const char *c2,
                         const char *c3)
{
    note_text_free(t);
    const char *c[4] = {c0, c1, c2, c3};
    for (int i = 0; i < 4; i++)
        if (!(t->col[i] = strdup(c[i] ? c[i] : ""))) return AIOS_ENOMEM;
    return 0;
}

/* from a statement's columns at..at+3 */
static int note_text_of(struct note_text *t, sqlite3_stmt *st, int at)
{
    return note_text_set(t, col_text(st, at), col_text(st, at + 1), col_text(st, at + 2),
                         col_text(st, at + 3));
}

static struct mem_rix_text rix_text(const struct note_text *t)
{
    return (struct mem_rix_text){{t->col[0], t->col[1], t->col[2], t->col[3]}};
}

/* insert and update: the note's text before (none for an insert) and now */
static void rix_note_set(void *arg)
{
    struct wargs *a = arg;
    if (!a->s->rix) return;
    struct mem_rix_text o = a->old && a->old->col[0] ? rix_text(a->old) : (struct mem_rix_text){0};
    struct mem_rix_text t = rix_text(a->cur);
    mem_rix_set(a->s->rix, a->nid / NID_SPAN, a->nid, o.col[0] ? &o : NULL, &t);
}

static void rix_note_gone(void *arg)
{
    struct wargs *a = arg;
    if (!a->s->rix) return;
    struct mem_rix_text o = rix_text(a->old);
    mem_rix_set(a->s->rix, a->nid / NID_SPAN, a->nid, &o, NULL);
}

static void rix_notes_new(void *arg)
{
    struct wargs *a = arg;
    for (size_t i = 0; a->s->rix && i < a->n; i++) {
        struct mem_rix_text t = rix_text(&a->many[i]);
        mem_rix_set(a->s->rix, a->many_nid[i] / NID_SPAN, a->many_nid[i], NULL, &t);
    }
}

/* after write_job: a write whose job succeeded but whose commit then
 * failed may or may not have stayed; the index cannot know which. (A job
 * that failed itself, a duplicate id say, was undone: nothing to drop.) */
static int rix_after(struct wargs *a, int rc)
{
    if (rc && a->wrote && a->s->rix) mem_rix_lost(a->s->rix, a->nid / NID_SPAN);
    note_text_free(a->old);
    note_text_free(a->cur);
    for (size_t i = 0; a->many && i < a->n; i++) note_text_free(&a->many[i]);
    free(a->many);
    free(a->many_nid);
    return rc;
}

/* ---- operations ---- */

static int step_int(struct mem_conn *c, sqlite3_stmt *st, int64_t *v, const char *what);

/* the row ids of an agent's notes: [lo, hi] (NID_SPAN) */
struct nid_range {
    int64_t lo, hi;
};

static struct nid_range slot_range(int64_t slot)
{
    return (struct nid_range){slot * NID_SPAN, (slot + 1) * NID_SPAN - 1};
}

/* the range as parameters 5 and 6 of a search statement */
static void bind_range(sqlite3_stmt *st, struct nid_range r)
{
    sqlite3_bind_int64(st, 5, r.lo);
    sqlite3_bind_int64(st, 6, r.hi);
}

/* the agent's slot (agent_slot; 0: none, unless `add`) */
static int agent_slot(struct mem_conn *c, const char *agent, bool add, int64_t *slot)
{
    *slot = 0;
    sqlite3_stmt *st = c->st[ST_SLOT_GET];
    sqlite3_bind_text(st, 1, agent, -1, SQLITE_STATIC);
    int rc = step_int(c, st, slot, "read an agent's slot");
    if (!rc && !*slot && add) {
        sqlite3_stmt *ad = c->st[ST_SLOT_ADD];
        sqlite3_bind_text(ad, 1, agent, -1, SQLITE_STATIC);
        int r = sqlite3_step(ad);
        sqlite3_reset(ad);
        sqlite3_clear_bindings(ad);
        rc = r == SQLITE_DONE ? step_int(c, st, slot, "read an agent's slot")
                              : sql_fail(c, "give an agent a slot");
        if (!rc && (*slot < 1 || *slot > SLOT_MAX)) {
            LOG_ERROR("memory", "no agent slot is left (%lld)", (long long)*slot);
            rc = AIOS_ENOSPC;
        }
    }
    sqlite3_clear_bindings(st);
    return rc;
}

/* one integer from st (stepped and reset); no row: *v = 0 */
static int step_int(struct mem_conn *c, sqlite3_stmt *st, int64_t *v, const char *what)
{
    int r = sqlite3_step(st);
    *v = r == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    return r == SQLITE_ROW || r == SQLITE_DONE ? 0 : sql_fail(c, what);
}

/* the row id of the agent's next note: above its highest (NID_SPAN) */
static int next_nid(struct mem_conn *c, const char *agent, int64_t *nid)
{
    int64_t slot;
    int rc = agent_slot(c, agent, true, &slot);
    if (rc) return rc;
    struct nid_range own = slot_range(slot);
    sqlite3_stmt *st = c->st[ST_NEXT_NID];
    sqlite3_bind_int64(st, 1, own.lo);
    sqlite3_bind_int64(st, 2, own.hi);
    rc = step_int(c, st, nid, "number a note");
    if (!rc && *nid > own.hi) rc = AIOS_ENOSPC; /* 2^32 - 1 notes */
    return rc;
}

static int insert_one(struct mem_conn *c, const char *agent, const struct mem_note *n,
                      struct wargs *a, size_t i)
{
    sqlite3_stmt *st = c->st[ST_INSERT];
    char *bufs[4] = {0};
    int64_t nid = 0;
    int rc = next_nid(c, agent, &nid);
    if (!rc) rc = bind_note(st, agent, n, bufs);
    if (rc) goto out;
    sqlite3_bind_int64(st, 13, nid);
    int r = sqlite3_step(st);
    if (r == SQLITE_CONSTRAINT)
        rc = sqlite3_extended_errcode(c->db) == SQLITE_CONSTRAINT_TRIGGER ? MEM_EQUOTA : MEM_EEXISTS;
    else if (r != SQLITE_DONE) rc = sql_fail(c, "insert a note");
    else {
        a->nid = nid;
        rc = note_text_set(a->notes ? &a->many[i] : a->cur, n->content, bufs[0], bufs[1],
                           n->context);
        if (a->notes) a->many_nid[i] = nid;
    }
out:
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    free_bufs(bufs);
    return rc;
}

static int job_insert(void *conn, void *arg)
{
    struct wargs *a = arg;
    int rc = insert_one(conn, a->agent, a->note, a, 0);
    a->wrote = !rc; /* this run's (a batch may run twice) */
    return rc;
}

int mem_store_insert(struct mem_store *s, const char *agent, const struct mem_note *n)
{
    struct note_text cur = {0};
    struct wargs a = {.agent = agent, .note = n, .s = s, .cur = &cur};
    atomic_fetch_add(&s->idf.n_changes, 1);
    return rix_after(&a, write_job_then(s, job_insert, &a, true, rix_note_set));
}

static int job_insert_many(void *conn, void *arg)
{
    struct wargs *a = arg;
    int rc = 0;
    for (size_t i = 0; i < a->n && !rc; i++) rc = insert_one(conn, a->agent, a->notes[i], a, i);
    a->wrote = !rc;
    return rc;
}

int mem_store_insert_many(struct mem_store *s, const char *agent, struct mem_note *const *n,
                          size_t count)
{
    struct wargs a = {.agent = agent, .notes = n, .n = count, .s = s,
                      .many = calloc(count ? count : 1, sizeof *a.many),
                      .many_nid = calloc(count ? count : 1, sizeof *a.many_nid)};
    if (!a.many || !a.many_nid) return rix_after(&a, AIOS_ENOMEM);
    atomic_fetch_add(&s->idf.n_changes, (long long)count);
    return rix_after(&a, write_job_then(s, job_insert_many, &a, true, rix_notes_new));
}

int mem_store_get(struct mem_store *s, const char *agent, const char *id, struct mem_note **out)
{
    *out = NULL;
    struct mem_conn *c = conn_take(s);
    if (!c) return AIOS_EIO;
    sqlite3_stmt *st = c->st[ST_GET];
    sqlite3_bind_text(st, 1, agent, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    int rc = 0, r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        *out = row_note(st);
        if (!*out) rc = AIOS_ENOMEM;
    } else if (r == SQLITE_DONE) {
        rc = AIOS_ENOTFOUND;
    } else {
        rc = sql_fail(c, "read a note");
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    conn_give(s, c);
    return rc;
}

static int job_update(void *conn, void *arg)
{
    struct mem_conn *c = conn;
    struct wargs *a = arg;
    sqlite3_stmt *st = c->st[ST_UPDATE], *ot = c->st[ST_OLD_TEXT];
    char *bufs[4] = {0};
    /* the text before, for the token counts */
    sqlite3_bind_text(ot, 1, a->agent, -1, SQLITE_STATIC);
    sqlite3_bind_text(ot, 2, a->note->id, -1, SQLITE_STATIC);
    int rc = 0, r = sqlite3_step(ot);
    if (r == SQLITE_ROW) rc = note_text_of(a->old, ot, 0);
    else if (r == SQLITE_DONE) rc = AIOS_ENOTFOUND;
    else rc = sql_fail(c, "read a note");
    sqlite3_reset(ot);
    sqlite3_clear_bindings(ot);
    if (!rc) rc = bind_note(st, a->agent, a->note, bufs);
    if (!rc) {
        int64_t nid = 0;
        int r = sqlite3_step(st);
        if (r == SQLITE_ROW) { /* RETURNING nid: the change is made at the first step */
            nid = sqlite3_column_int64(st, 0);
            r = sqlite3_step(st);
        }
        if (r == SQLITE_CONSTRAINT &&
            sqlite3_extended_errcode(c->db) == SQLITE_CONSTRAINT_TRIGGER)
            rc = MEM_EQUOTA;
        else if (r != SQLITE_DONE) rc = sql_fail(c, "update a note");
        else if (!nid) rc = AIOS_ENOTFOUND;
        a->nid = nid;
        if (!rc) rc = note_text_set(a->cur, a->note->content, bufs[0], bufs[1], a->note->context);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    free_bufs(bufs);
    a->wrote = !rc;
    return rc;
}

int mem_store_update(struct mem_store *s, const char *agent, const struct mem_note *n)
{
    struct note_text old = {0}, cur = {0};
    struct wargs a = {.agent = agent, .note = n, .s = s, .old = &old, .cur = &cur};
    atomic_fetch_add(&s->idf.n_changes, 1);
    return rix_after(&a, write_job_then(s, job_update, &a, true, rix_note_set));
}

static int job_delete(void *conn, void *arg)
{
    struct mem_conn *c = conn;
    struct wargs *a = arg;
    sqlite3_stmt *st = c->st[ST_DELETE];
    sqlite3_bind_text(st, 1, a->agent, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, a->id, -1, SQLITE_STATIC);
    int rc = 0, r = sqlite3_step(st);
    bool found = r == SQLITE_ROW;
    if (found) { /* RETURNING nid and the text, for the index in RAM */
        a->nid = sqlite3_column_int64(st, 0);
        rc = note_text_of(a->old, st, 1);
        r = sqlite3_step(st);
    }
    if (!rc && r != SQLITE_DONE) rc = sql_fail(c, "delete a note");
    else if (!rc && !found) rc = AIOS_ENOTFOUND;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    /* now and then drop the tombstones from the index, and give the freed
     * pages back (the file shrinks at the next checkpoint). A failure only
     * leaves them for reuse by later notes. */
    if (!rc && a->merge &&
        sqlite3_exec(c->db, "INSERT INTO notes_fts(notes_fts, rank) VALUES('merge', -16)", NULL,
                     NULL, NULL) != SQLITE_OK)
        LOG_WARN("memory", "merging the search index: %s", sqlite3_errmsg(c->db));
    if (!rc && sqlite3_exec(c->db, "PRAGMA incremental_vacuum", NULL, NULL, NULL) != SQLITE_OK)
        LOG_WARN("memory", "giving freed space back: %s", sqlite3_errmsg(c->db));
    a->wrote = !rc;
    return rc;
}

int mem_store_delete(struct mem_store *s, const char *agent, const char *id)
{
    struct note_text old = {0};
    struct wargs a = {.agent = agent, .id = id,
                      .merge = (atomic_fetch_add(&s->n_deletes, 1) + 1) % MEM_MERGE_EVERY == 0,
                      .s = s, .old = &old};
    atomic_fetch_add(&s->idf.n_changes, 1);
    int rc = rix_after(&a, write_job_then(s, job_delete, &a, true, rix_note_gone));
    /* after the commit: apply the log to the file (which shrinks by the
     * vacuumed pages) and empty it; from a reader, outside the writer's
     * transactions; busy or failed, it is left to the automatic checkpoints */
    struct mem_conn *c = rc ? NULL : conn_take(s);
    if (c) {
        int ck = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
        if (ck != SQLITE_OK && ck != SQLITE_BUSY)
            LOG_WARN("memory", "checkpoint after a delete: %s", sqlite3_errmsg(c->db));
        conn_give(s, c);
    }
    return rc;
}

/* a retrieval's statistics, posted to the group commit (copies) */
struct touch_job {
    struct sqlgc_job j;
    char *agent;
    char ts[MEM_TS_LEN];
    size_t n;
    char *ids[];
};

static void touch_free(struct sqlgc_job *j)
{
    struct touch_job *t = (struct touch_job *)j;
    for (size_t i = 0; i < t->n; i++) free(t->ids[i]);
    free(t->agent);
    free(t);
}

static int job_touch(void *conn, void *arg)
{
    struct mem_conn *c = conn;
    struct touch_job *t = arg;
    sqlite3_stmt *st = c->st[ST_TOUCH];
    int rc = 0;
    for (size_t i = 0; i < t->n && !rc; i++) {
        sqlite3_bind_text(st, 1, t->agent, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, t->ids[i], -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, t->ts, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE) rc = sql_fail(c, "record a retrieval");
        sqlite3_reset(st);
    }
    sqlite3_clear_bindings(st);
    return rc;
}

int mem_store_touch(struct mem_store *s, const char *agent, const char *const *ids, size_t n,
                    const char *ts)
{
    if (n == 0) return 0;
    /* Retrieval statistics are not worth an fsync per search, nor a wait
     * for the notes' fsync: posted to the group commit, which commits them
     * without one (in WAL mode they survive a crash of the kernel once
     * committed; the next synchronous commit makes them power-safe too).
     * The caller does not wait: a kernel killed within that commit loses
     * those counts. The writer's queue keeps their order with the later
     * writes of the same agent. */
    struct touch_job *t = calloc(1, sizeof *t + n * sizeof *t->ids);
    if (!t) return AIOS_ENOMEM;
    t->j.fn = job_touch;
    t->j.arg = t;
    t->j.free = touch_free;
    t->agent = strdup(agent);
    snprintf(t->ts, sizeof t->ts, "%s", ts);
    bool ok = t->agent != NULL;
    for (size_t i = 0; i < n && ok; i++, t->n++) ok = (t->ids[i] = strdup(ids[i])) != NULL;
    if (!ok) {
        touch_free(&t->j);
        return AIOS_ENOMEM;
    }
    sqlgc_post(s->gc, &t->j);
    return 0;
}

void mem_hits_free(struct mem_hit *hits, size_t n)
{
    if (!hits) return;
    for (size_t i = 0; i < n; i++) mem_note_free(hits[i].note);
    free(hits);
}

static int is_word_byte(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           ch >= 0x80;
}

static const unsigned char *next_word(const unsigned char *p, size_t *len)
{
    while (*p && !is_word_byte(*p)) p++;
    const unsigned char *b = p;
    while (*p && is_word_byte(*p)) p++;
    *len = (size_t)(p - b);
    return b;
}

char *mem_fts_query(const char *text)
{
    /* stop words carry no meaning and match nearly every note: leave them
     * out, unless the query has nothing else */
    bool content_word = false;
    size_t len;
    for (const unsigned char *p = (const unsigned char *)text; *(p = next_word(p, &len)); p += len)
        if (!mem_is_stop_word((const char *)p, len)) content_word = true;
    /* each word grows by at most 2 quotes and " OR " */
    char *q = malloc(strlen(text) * 7 + 1);
    if (!q) return NULL;
    size_t o = 0;
    int words = 0;
    for (const unsigned char *p = (const unsigned char *)text; words < 32 && *(p = next_word(p, &len));
         p += len) {
        if (content_word && mem_is_stop_word((const char *)p, len)) continue;
        if (words++) {
            memcpy(q + o, " OR ", 4);
            o += 4;
        }
        q[o++] = '"';
        memcpy(q + o, p, len);
        o += len;
        q[o++] = '"';
    }
    q[o] = 0;
    return q;
}

/* ---- top k ----
 * The best k of an agent's notes for an FTS query, exactly as ORDER BY
 * rank would give them, but without FTS5's sort: for ORDER BY rank FTS5
 * scores and sorts every match (no LIMIT reaches its sorter), and a query
 * of common words matches ~10k of 100k notes, so the sort was most of a
 * retrieval's tail (docs/performance.md, issue 6). Instead every match is
 * scored in row id order and a min-heap keeps the best k. Only the
 * caller's range of row ids is read (NID_SPAN), so every match is the
 * caller's. Ties go to the lower row id, the older note. */

/* a before b in the result: higher score, then the older row */
static bool hit_better(const struct mem_hit *a, const struct mem_hit *b)
{
    return a->score > b->score || (a->score == b->score && a->nid < b->nid);
}

/* h[0..n) is a heap with the worst hit at the root */
static void heap_sift_down(struct mem_hit *h, size_t n, size_t i)
{
    for (;;) {
        size_t w = i, l = 2 * i + 1, r = l + 1;
        if (l < n && hit_better(&h[w], &h[l])) w = l;
        if (r < n && hit_better(&h[w], &h[r])) w = r;
        if (w == i) return;
        struct mem_hit t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static void heap_sift_up(struct mem_hit *h, size_t i)
{
    while (i > 0 && hit_better(&h[(i - 1) / 2], &h[i])) {
        struct mem_hit t = h[i];
        h[i] = h[(i - 1) / 2];
        h[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

static int hit_cmp_best_first(const void *a, const void *b)
{
    return hit_better(a, b) ? -1 : hit_better(b, a) ? 1 : 0;
}

/* cand (its score also as bm25) into the best k of h[0..*n), a heap with
 * the worst at the root */
static void heap_push_top(struct mem_hit *h, size_t k, size_t *n, struct mem_hit cand)
{
    if (*n == k && !hit_better(&cand, &h[0])) return;
    cand.bm25 = cand.score;
    if (*n < k) {
        h[*n] = cand;
        heap_sift_up(h, (*n)++);
    } else {
        h[0] = cand;
        heap_sift_down(h, *n, 0);
    }
}

/* out[0..k): the best hits in the agent's rows `own`, best first (nid,
 * score and bm25 set).
 * Plainly (tf NULL): st = ST_SCAN, every row scored by aios_bm25 with the
 * IDFs idf[0..n_idf) (none: its own). Counted (tf set): st = ST_TF, every
 * row's score summed here from aios_tf's counts and the IDFs, and *tf the
 * bytes tokenized; past TF_BUDGET bytes, or if a word cannot be counted,
 * AIOS_ETOOBIG (the caller scans plainly). */
#define TF_BUDGET (256 * 1024)

static int scan_top(struct mem_conn *c, struct nid_range own, const char *match, const char *q,
                    const double *idf, int n_idf, int64_t *tf, size_t k, struct mem_hit *out,
                    size_t *n_out)
{
    sqlite3_stmt *st = c->st[tf ? ST_TF : ST_SCAN];
    sqlite3_bind_text(st, 1, match, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, q, -1, SQLITE_STATIC);
    if (!tf) sqlite3_bind_blob(st, 3, idf, (int)((size_t)n_idf * sizeof *idf), SQLITE_STATIC);
    bind_range(st, own);
    size_t n = 0;
    int rc = 0, r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        struct mem_hit cand = {.nid = sqlite3_column_int64(st, 0)};
        if (tf) {
            struct tf_row row;
            if (sqlite3_column_bytes(st, 1) != (int)sizeof row) break; /* r: SQLITE_ROW, an error */
            memcpy(&row, sqlite3_column_blob(st, 1), sizeof row);
            *tf += row.bytes;
            if (row.n_word != n_idf || *tf > TF_BUDGET) {
                rc = AIOS_ETOOBIG;
                break;
            }
            for (int i = 0; i < n_idf; i++)
                if (row.tf[i]) cand.score += mem_rank_term(idf[i], row.tf[i]);
        } else {
            cand.score = -sqlite3_column_double(st, 1);
        }
        heap_push_top(out, k, &n, cand);
    }
    if (!rc && r != SQLITE_DONE) rc = sql_fail(c, "search notes");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    qsort(out, n, sizeof *out, hit_cmp_best_first);
    *n_out = rc ? 0 : n;
    return rc;
}

static int scan_pruned(struct mem_conn *c, struct idf_cache *cache, struct nid_range own,
                       const char *q, size_t k, struct mem_hit *out, size_t *n_out);
static int get_nids_on(struct mem_conn *c, const char *agent, struct mem_hit *h, size_t n);
static int query_idf(struct mem_conn *c, struct nid_range own, const char *q, double *idf,
                     double *df, int *n_idf);

/* ---- retrieval from the index in RAM (mem_rix.h) ---- */

struct top {
    struct mem_hit *out;
    size_t k, n;
};

/* one scored note into the best k */
static void top_hit(void *ud, int64_t nid, double score)
{
    struct top *t = ud;
    heap_push_top(t->out, t->k, &t->n, (struct mem_hit){.nid = nid, .score = score});
}

/* The best k of the agent's notes for q from its index in RAM, scored
 * with the IDFs a scan of FTS5 would use (the store's cache, or aios_idf
 * in the caller's read transaction), so the same notes and scores to the
 * bit. AIOS_ENOTFOUND: no index; AIOS_EINVAL: a word that FTS5 matches
 * as a phrase of several tokens (the caller scans FTS5). */
static int rix_top(struct mem_store *s, struct mem_conn *c, int64_t slot, const char *q, size_t k,
                   bool ram_only, struct mem_hit *out, size_t *n_out)
{
    const char *wp[IDF_MAX_PHRASES], *bare[IDF_MAX_PHRASES];
    size_t wl[IDF_MAX_PHRASES], bare_len[IDF_MAX_PHRASES];
    double idf[IDF_MAX_PHRASES], df[IDF_MAX_PHRASES];
    int n_w = quoted_words(q, wp, wl, IDF_MAX_PHRASES), rc;
    if (n_w < 1 || n_w > IDF_MAX_PHRASES) return AIOS_EINVAL;
    for (int i = 0; i < n_w; i++) { /* without the quotes */
        bare[i] = wp[i] + 1;
        bare_len[i] = wl[i] - 2;
    }
    struct mem_rix_query rq; /* tokenized once, for the IDFs and the scores */
    if ((rc = mem_rix_query(s->rix, bare, bare_len, n_w, &rq))) return rc;
    if (!mem_rix_query_idf(s->rix, &rq, idf, df)) { /* no counts: the cache, or FTS5 */
        int n_idf = n_w;
        for (int i = 0; i < n_w && n_idf; i++)
            if (!idf_lookup(&s->idf, wp[i], wl[i], &idf[i], &df[i])) n_idf = 0;
        if (!n_idf && ram_only) return AIOS_EBUSY; /* counting walks doclists */
        if (!n_idf && (rc = query_idf(c, slot_range(slot), q, idf, df, &n_idf))) return rc;
        if (n_idf == 0) return 0; /* nothing of the agent matches */
        if (n_idf != n_w) return AIOS_EINVAL;
    }
    struct top t = {.out = out, .k = k};
    if ((rc = mem_rix_score(s->rix, slot, &rq, idf, top_hit, &t))) return rc;
    qsort(out, t.n, sizeof *out, hit_cmp_best_first);
    *n_out = t.n;
    return 0;
}

/* the next note of a build (mem_rix_build's next): rows of ST_RANGE_TEXT */
struct rix_rows {
    struct mem_conn *c;
    struct nid_range own;
    bool begun;
};

static int rix_next(void *ud, int64_t *nid, struct mem_rix_text *t)
{
    struct rix_rows *w = ud;
    sqlite3_stmt *st = w->c->st[ST_RANGE_TEXT];
    if (!w->begun) { /* the snapshot starts here, after the build began */
        int rc = read_begin(w->c);
        if (rc) return rc;
        w->begun = true;
        sqlite3_bind_int64(st, 1, w->own.lo);
        sqlite3_bind_int64(st, 2, w->own.hi);
    }
    int r = sqlite3_step(st);
    if (r == SQLITE_DONE) return 0;
    if (r != SQLITE_ROW) return sql_fail(w->c, "read notes for the index in RAM");
    *nid = sqlite3_column_int64(st, 0);
    for (int i = 0; i < 4; i++) t->col[i] = col_text(st, 1 + i);
    return 1;
}

/* In a read transaction of c: when the agent has no index in RAM and
 * enough notes for one, build it. c's transaction is ended for the build
 * (whose snapshot must start after it began) and begun again. */
static int rix_maybe_build(struct mem_store *s, struct mem_conn *c, int64_t slot)
{
    if (!mem_rix_wanted(s->rix, slot)) return 0;
    struct nid_range own = slot_range(slot);
    sqlite3_stmt *st = c->st[ST_RANGE_COUNT];
    int min = atomic_load(&s->rix_min);
    sqlite3_bind_int64(st, 1, own.lo);
    sqlite3_bind_int64(st, 2, own.hi);
    sqlite3_bind_int(st, 3, min);
    int64_t n = 0;
    int rc = step_int(c, st, &n, "count an agent's notes");
    if (rc || n < min) return rc;
    read_end(c);
    struct rix_rows w = {.c = c, .own = own};
    rc = mem_rix_build(s->rix, slot, rix_next, &w);
    sqlite3_reset(c->st[ST_RANGE_TEXT]);
    sqlite3_clear_bindings(c->st[ST_RANGE_TEXT]);
    if (w.begun) read_end(c);
    if (rc && rc != AIOS_EBUSY)
        LOG_WARN("memory", "building an index in RAM: %s", aios_strerror(rc));
    return read_begin(c);
}

/* The best k of agent's notes for text into out (at most k), with their
 * notes when `notes` (`ram_only`: ranked from the index in RAM or not at
 * all, AIOS_EBUSY): one read transaction for all its statements (the
 * IDFs, the pruned rounds, the notes), so one snapshot, and SQLite
 * empties a reader's page cache at the first read after a commit only
 * once, not at each statement: under a steady stream of writes that was
 * most of a retrieval's cost (docs/performance.md, "Reads under
 * writes"). */
static int search_read(struct mem_store *s, const char *agent, const char *text, int k,
                       struct mem_hit *out, size_t *n_out, bool notes, bool ram_only)
{
    *n_out = 0;
    char *q = mem_fts_query(text);
    if (!q) return AIOS_ENOMEM;
    if (!q[0] || k <= 0) {
        free(q);
        return 0;
    }
    struct mem_conn *c = conn_take(s);
    int rc = c ? read_begin(c) : AIOS_EIO;
    if (!rc) {
        int64_t slot;
        rc = agent_slot(c, agent, false, &slot); /* none: no notes */
        int r = AIOS_ENOTFOUND; /* from the index in RAM: 0 */
        if (!rc && slot && s->rix && !atomic_load(&s->rix_off)) {
            r = rix_top(s, c, slot, q, (size_t)k, ram_only, out, n_out);
            if (r == AIOS_ENOTFOUND && !ram_only && !(rc = rix_maybe_build(s, c, slot)))
                r = rix_top(s, c, slot, q, (size_t)k, false, out, n_out);
        }
        if (!rc && slot && r && ram_only) rc = AIOS_EBUSY;
        if (!rc && slot && r) rc = scan_pruned(c, &s->idf, slot_range(slot), q, (size_t)k, out, n_out);
        if (!rc && notes) rc = get_nids_on(c, agent, out, *n_out);
        read_end(c);
    }
    if (c) conn_give(s, c);
    free(q);
    return rc;
}

static int search_notes(struct mem_store *s, const char *agent, const char *text, int k,
                        bool ram_only, struct mem_hit **hits, size_t *n_hits)
{
    *hits = NULL;
    *n_hits = 0;
    struct mem_hit *h = k > 0 ? calloc((size_t)k, sizeof *h) : NULL;
    if (k > 0 && !h) return AIOS_ENOMEM;
    size_t n = 0;
    int rc = search_read(s, agent, text, k, h, &n, true, ram_only);
    if (rc) {
        mem_hits_free(h, n);
        return rc;
    }
    /* the notes are read in the scan's snapshot; one not found there all
     * the same (a damaged store) is left out rather than answered empty */
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (h[i].note) h[kept++] = h[i];
    *hits = h;
    *n_hits = kept;
    return 0;
}

int mem_store_search(struct mem_store *s, const char *agent, const char *text, int k,
                     struct mem_hit **hits, size_t *n_hits)
{
    return search_notes(s, agent, text, k, false, hits, n_hits);
}

/* from the agent's index in RAM and the token counts only: no build, no
 * FTS5 (the caller is an HTTP thread that must not wait long); the notes
 * are read from a reader connection, which never waits for the writer */
int mem_store_search_ram(struct mem_store *s, const char *agent, const char *text, int k,
                         struct mem_hit **hits, size_t *n_hits)
{
    *hits = NULL;
    *n_hits = 0;
    if (!s->rix || atomic_load(&s->rix_off)) return AIOS_EBUSY;
    return search_notes(s, agent, text, k, true, hits, n_hits);
}

static int job_set_quota(void *conn, void *arg)
{
    struct mem_conn *c = conn;
    sqlite3_stmt *st = NULL;
    int rc = AIOS_EIO;
    if (sqlite3_prepare_v2(c->db, "INSERT INTO note_limits(key, value) VALUES('quota_bytes', ?)"
                           " ON CONFLICT(key) DO UPDATE SET value = excluded.value", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, *(const int64_t *)arg);
        rc = sqlite3_step(st) == SQLITE_DONE ? 0 : sql_fail(c, "set the quota");
    }
    sqlite3_finalize(st);
    return rc;
}

int mem_store_set_quota(struct mem_store *s, int64_t bytes)
{
    return write_job(s, job_set_quota, &bytes, true);
}

int mem_store_used(struct mem_store *s, const char *agent, int64_t *bytes)
{
    *bytes = 0;
    struct mem_conn *c = conn_take(s);
    if (!c) return AIOS_EIO;
    sqlite3_stmt *st = NULL;
    int rc = AIOS_EIO;
    if (sqlite3_prepare_v2(c->db, "SELECT n_bytes FROM note_usage WHERE agent = ?", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, agent, -1, SQLITE_STATIC);
        int r = sqlite3_step(st);
        if (r == SQLITE_ROW) *bytes = sqlite3_column_int64(st, 0);
        rc = r == SQLITE_ROW || r == SQLITE_DONE ? 0 : sql_fail(c, "read the usage");
    }
    sqlite3_finalize(st);
    conn_give(s, c);
    return rc;
}

int mem_store_count(struct mem_store *s, const char *agent, long long *out)
{
    *out = 0;
    struct mem_conn *c = conn_take(s);
    if (!c) return AIOS_EIO;
    sqlite3_stmt *st = c->st[ST_COUNT];
    sqlite3_bind_text(st, 1, agent, -1, SQLITE_STATIC);
    int rc = 0;
    if (sqlite3_step(st) == SQLITE_ROW) *out = sqlite3_column_int64(st, 0);
    else rc = sql_fail(c, "count notes");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    conn_give(s, c);
    return rc;
}

/* ---- embedding vectors ----
 * Vectors are derived data: they are written after the note (without an
 * fsync of their own) and a note without one gets it at the next
 * retrieval (mem_store_vec_missing), so losing one costs only time. */

static int job_vec_model(void *conn, void *arg)
{
    struct mem_conn *c = conn;
    struct wargs *a = arg;
    sqlite3_stmt *st = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(c->db, "SELECT value FROM vec_meta WHERE key='model'", -1, &st, NULL) !=
        SQLITE_OK) {
        rc = sql_fail(c, "read vec_meta");
        goto out;
    }
    bool same = sqlite3_step(st) == SQLITE_ROW && !strcmp(col_text(st, 0), a->fingerprint);
    sqlite3_finalize(st);
    st = NULL;
    if (same) goto out;
    if (sqlite3_exec(c->db, "DELETE FROM notes_vec", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(c->db, "INSERT OR REPLACE INTO vec_meta(key, value) VALUES('model', ?1)",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = sql_fail(c, "reset vectors");
        goto out;
    }
    sqlite3_bind_text(st, 1, a->fingerprint, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = sql_fail(c, "record the embedding model");
        goto out;
    }
    *a->reset = true;
out:
    sqlite3_finalize(st);
    return rc;
}

int mem_store_vec_model(struct mem_store *s, const char *fingerprint, bool *reset)
{
    *reset = false;
    struct wargs a = {.fingerprint = fingerprint, .reset = reset};
    int rc = write_job(s, job_vec_model, &a, true);
    if (rc) *reset = false;
    return rc;
}

static int vec_set(struct mem_conn *c, const char *agent, const char *id, const float *v, int dim)
{
    sqlite3_stmt *st = c->st[ST_VEC_SET];
    sqlite3_bind_text(st, 1, agent, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, v, dim * (int)sizeof *v, SQLITE_STATIC);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : sql_fail(c, "store a vector");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

static int job_vec_set(void *conn, void *arg)
{
    struct wargs *a = arg;
    int rc = 0;
    for (size_t i = 0; i < a->n && !rc; i++)
        rc = vec_set(conn, a->agent, a->ids[i], a->vecs + i * (size_t)a->dim, a->dim);
    return rc;
}

int mem_store_vec_set(struct mem_store *s, const char *agent, const char *const *ids,
                      const float *vecs, size_t n, int dim)
{
    if (n == 0) return 0;
    struct wargs a = {.agent = agent, .ids = ids, .n = n, .vecs = vecs, .dim = dim};
    return write_job(s, job_vec_set, &a, false);
}

int mem_store_vec_missing(struct mem_store *s, const char *agent, int limit, json_t **out)
{
    *out = NULL;
    struct mem_conn *c = conn_take(s);
    if (!c) return AIOS_EIO;
    json_t *arr = json_array();
    sqlite3_stmt *st = c->st[ST_VEC_MISSING];
    sqlite3_bind_text(st, 1, agent, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, limit);
    int rc = arr ? 0 : AIOS_ENOMEM, r;
    while (!rc && (r = sqlite3_step(st)) == SQLITE_ROW)
        if (json_array_append_new(arr, json_pack("[s,s]", col_text(st, 0), col_text(st, 1))))
            rc = AIOS_ENOMEM;
    if (!rc && r != SQLITE_DONE) rc = sql_fail(c, "find notes without vectors");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    conn_give(s, c);
    if (rc) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

int mem_store_vec_scan(struct mem_store *s, const char *agent, const float *q, int dim,
                       struct emb_hit **hits, size_t *n_hits)
{
    *hits = NULL;
    *n_hits = 0;
    struct mem_conn *c = conn_take(s);
    if (!c) return AIOS_EIO;
    sqlite3_stmt *st = c->st[ST_VEC_SCAN];
    sqlite3_bind_text(st, 1, agent, -1, SQLITE_STATIC);
    int rc = emb_scan(st, q, dim, hits, n_hits);
    if (rc == AIOS_EIO) rc = sql_fail(c, "scan vectors");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    conn_give(s, c);
    return rc;
}

/* ---- pruned top k (MaxScore) ----
 * A word's part of a note's score is below its IDF x (k1 + 1), whatever
 * the note, so a note that holds none of a set of words scores below the
 * sum of their bounds. A retrieval therefore first reads only the notes
 * that hold one of its rarest words (highest IDF), and counts every word
 * of the query in each of them by tokenizing its text (aios_tf): if the
 * k-th best of them already scores at least the bound of the other words,
 * no other note can enter the top k, and the answer is exact, ties
 * included. Else the set of words read doubles, up to all of them (the
 * plain scan). A query of common and rare words ("meeting topic 42 room"
 * over notes that all hold "meeting", "topic" and "room") then reads the
 * notes with "42", not every note of the agent, and the doclists of the
 * common words are not walked either. Tokenizing costs in proportion to
 * the text read: past TF_BUDGET bytes (many or long notes) the plain scan
 * takes over. Every query of one retrieval scores with the same IDFs
 * (aios_idf's), so the scores are those of the plain scan, bit for bit
 * (mem_rank_term). docs/memory.md ("Retrieval"). */

struct word {
    const char *p; /* into the query text q: a quoted word */
    size_t len;
    double bound, df;
};

/* Counting a word by tokenizing a note costs about this many times what
 * reading one entry of a word's list in the index costs: a round reads
 * only words held by at most 1/TF_COST of the rows the plain scan walks
 * (the sum of every word's rows), else the plain scan is cheaper. */
#define TF_COST 16

static int word_cmp_bound(const void *a, const void *b)
{
    const struct word *x = a, *y = b;
    return x->bound > y->bound ? -1 : x->bound < y->bound ? 1 : x->p < y->p ? -1 : x->p > y->p;
}

/* the IDFs of q's phrases for the agent's retrieval, and the rows that
 * hold each: *n_idf of them, into idf and df[IDF_MAX_PHRASES]; 0 when
 * nothing of the agent matches, -1 when FTS5's phrases are not q's words */
static int query_idf(struct mem_conn *c, struct nid_range own, const char *q, double *idf,
                     double *df, int *n_idf)
{
    sqlite3_stmt *st = c->st[ST_IDF];
    sqlite3_bind_text(st, 1, q, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, q, -1, SQLITE_STATIC);
    bind_range(st, own);
    int rc = 0, r = sqlite3_step(st);
    *n_idf = 0;
    if (r == SQLITE_ROW) {
        int bytes = sqlite3_column_bytes(st, 0);
        if (bytes <= 0 || (size_t)bytes > 2 * IDF_MAX_PHRASES * sizeof *idf ||
            bytes % (2 * sizeof *idf)) {
            *n_idf = -1;
        } else {
            const double *v = sqlite3_column_blob(st, 0);
            *n_idf = bytes / (int)(2 * sizeof *idf);
            memcpy(idf, v, (size_t)*n_idf * sizeof *idf);
            memcpy(df, v + *n_idf, (size_t)*n_idf * sizeof *df);
        }
    } else if (r != SQLITE_DONE) {
        rc = sql_fail(c, "weigh the query's words");
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

static int scan_pruned(struct mem_conn *c, struct idf_cache *cache, struct nid_range own,
                       const char *q, size_t k, struct mem_hit *out, size_t *n_out)
{
    *n_out = 0;
    int n_idf = 0, rc;
    double idf[IDF_MAX_PHRASES], df[IDF_MAX_PHRASES];
    struct word w[IDF_MAX_PHRASES];
    const char *wp[IDF_MAX_PHRASES];
    size_t wl[IDF_MAX_PHRASES];
    int n_w = quoted_words(q, wp, wl, IDF_MAX_PHRASES);
    if (n_w > IDF_MAX_PHRASES) n_w = IDF_MAX_PHRASES; /* mem_fts_query keeps 32 */
    for (int i = 0; i < n_w; i++) w[i] = (struct word){.p = wp[i], .len = wl[i]};
    char *need = malloc(strlen(q) + 1);
    if (!need) {
        rc = AIOS_ENOMEM;
        goto out;
    }
    /* the IDFs: from the cache when it has every word (no query), else
     * from aios_idf, which also says when nothing matches; a query of one
     * word is scanned plainly, and aios_bm25 counts its IDF */
    n_idf = n_w;
    for (int i = 0; i < n_w && n_idf; i++)
        if (!known_idf(cache, w[i].p, w[i].len, &idf[i], &df[i])) n_idf = 0;
    if (!n_idf && n_w > 1 &&
        ((rc = query_idf(c, own, q, idf, df, &n_idf)) || n_idf == 0))
        goto out;
    if (n_idf == n_w && n_w > 1) {
        double all = 0, read = 0;
        for (int i = 0; i < n_w; i++) {
            w[i].bound = idf[i] * (MEM_RANK_K1 + 1.0);
            w[i].df = df[i];
            all += df[i];
        }
        qsort(w, (size_t)n_w, sizeof *w, word_cmp_bound);
        int64_t tf = 0; /* bytes tokenized in all rounds */
        for (int n_read = 1; n_read < n_w; n_read *= 2) {
            size_t o = 0;
            double rest = 0; /* the bound of the words not read */
            read = 0;
            for (int i = 0; i < n_read; i++) read += w[i].df;
            if (read * TF_COST > all) break;
            for (int i = 0; i < n_w; i++) {
                if (i >= n_read) {
                    rest += w[i].bound;
                    continue;
                }
                if (i) o += (size_t)sprintf(need + o, " OR ");
                memcpy(need + o, w[i].p, w[i].len);
                o += w[i].len;
            }
            need[o] = 0;
            rc = scan_top(c, own, need, q, idf, n_idf, &tf, k, out, n_out);
            if (rc == AIOS_ETOOBIG) break; /* the plain scan */
            /* a note outside what was read scores below `rest`; the
             * margin covers the rounding of the sums */
            if (rc || (*n_out == k && out[k - 1].score >= rest * (1 + 1e-9) + 1e-12)) goto out;
        }
    }
    rc = scan_top(c, own, q, q, idf, n_idf > 0 ? n_idf : 0, NULL, k, out, n_out);
out:
    free(need);
    return rc;
}

int mem_store_search_ids(struct mem_store *s, const char *agent, const char *text, int k,
                         struct mem_hit *out, size_t *n_out)
{
    return search_read(s, agent, text, k, out, n_out, false, false);
}

int mem_store_bm25_of(struct mem_store *s, const char *text, struct mem_hit *h, size_t n)
{
    if (n == 0) return 0;
    char *q = mem_fts_query(text);
    json_t *ids = json_array();
    for (size_t i = 0; i < n && ids; i++) json_array_append_new(ids, json_integer(h[i].nid));
    char *list = ids ? json_dumps(ids, JSON_COMPACT) : NULL;
    json_decref(ids);
    int rc = q && list ? 0 : AIOS_ENOMEM;
    struct mem_conn *c = !rc && q[0] ? conn_take(s) : NULL;
    if (c) {
        sqlite3_stmt *b = c->st[ST_BM25_SOME];
        sqlite3_bind_text(b, 1, q, -1, SQLITE_STATIC);
        sqlite3_bind_text(b, 2, list, -1, SQLITE_STATIC);
        int r;
        while ((r = sqlite3_step(b)) == SQLITE_ROW) {
            int64_t nid = sqlite3_column_int64(b, 0);
            for (size_t i = 0; i < n; i++)
                if (h[i].nid == nid) h[i].bm25 = -sqlite3_column_double(b, 1);
        }
        if (r != SQLITE_DONE) rc = sql_fail(c, "score notes");
        sqlite3_reset(b);
        sqlite3_clear_bindings(b);
        conn_give(s, c);
    } else if (!rc && q[0]) {
        rc = AIOS_EIO;
    }
    free(q);
    free(list);
    return rc;
}

static int get_nids_on(struct mem_conn *c, const char *agent, struct mem_hit *h, size_t n)
{
    int rc = 0;
    sqlite3_stmt *st = c->st[ST_GET_NID];
    for (size_t i = 0; i < n && !rc; i++) {
        sqlite3_bind_text(st, 1, agent, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, h[i].nid);
        int r = sqlite3_step(st);
        if (r == SQLITE_ROW && !(h[i].note = row_note(st))) rc = AIOS_ENOMEM;
        else if (r != SQLITE_ROW && r != SQLITE_DONE) rc = sql_fail(c, "read a note");
        sqlite3_reset(st);
    }
    sqlite3_clear_bindings(st);
    return rc;
}

int mem_store_get_nids(struct mem_store *s, const char *agent, struct mem_hit *h, size_t n)
{
    struct mem_conn *c = conn_take(s);
    if (!c) return AIOS_EIO;
    int rc = read_begin(c);
    if (!rc) {
        rc = get_nids_on(c, agent, h, n);
        read_end(c);
    }
    conn_give(s, c);
    return rc;
}

void mem_store_rix_stats(struct mem_store *s, size_t *bytes, int *n_index)
{
    *bytes = 0;
    *n_index = 0;
    if (s->rix) mem_rix_stats(s->rix, bytes, n_index);
}

void mem_store_rix_use(struct mem_store *s, bool use)
{
    atomic_store(&s->rix_off, !use);
}

void mem_store_rix_min(struct mem_store *s, int notes)
{
    atomic_store(&s->rix_min, notes > 0 ? notes : 1);
}

void mem_store_rix_drop(struct mem_store *s)
{
    if (s->rix) mem_rix_drop_all(s->rix);
}

const struct mem_store_ops mem_store_sqlite = {
    .name = "sqlite",
    .open = mem_store_open,
    .close = mem_store_close,
    .insert = mem_store_insert,
    .insert_many = mem_store_insert_many,
    .get = mem_store_get,
    .update = mem_store_update,
    .remove = mem_store_delete,
    .touch = mem_store_touch,
    .count = mem_store_count,
    .set_quota = mem_store_set_quota,
    .used = mem_store_used,
    .search = mem_store_search,
    .search_ids = mem_store_search_ids,
    .search_ram = mem_store_search_ram,
    .bm25_of = mem_store_bm25_of,
    .get_nids = mem_store_get_nids,
    .vec_model = mem_store_vec_model,
    .vec_set = mem_store_vec_set,
    .vec_missing = mem_store_vec_missing,
    .vec_scan = mem_store_vec_scan,
};
