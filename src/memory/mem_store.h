/* The durable tier of agent memory behind a small interface.
 *
 * The manager (mem.c) reaches its store only through a table of functions,
 * struct mem_store_ops; struct mem_store is an opaque handle each
 * implementation defines for itself. Two implementations:
 *   mem_store_sqlite  notes in one SQLite database (WAL) with an FTS5 index
 *                     for BM25 retrieval (mem_store.c, whose functions are
 *                     declared below the table: the unit tests and the
 *                     memory benchmark call them directly); the default
 *   mem_store_pg      notes in PostgreSQL with a tsvector column for
 *                     full-text retrieval (mem_store_pg.c; state.backend
 *                     postgres; open's path is then the connection URL)
 * The manager does not know which one it talks to. */
#ifndef AIOS_MEMORY_MEM_STORE_H
#define AIOS_MEMORY_MEM_STORE_H

#include "memory/mem_note.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* returned by mem_store_insert when the agent already has a note with that id */
#define MEM_EEXISTS AIOS_EBUSY
/* returned by insert and update when the agent's notes would take more than
 * the store's quota (set_quota) */
#define MEM_EQUOTA AIOS_ENOSPC

struct mem_store;

struct mem_hit {
    struct mem_note *note; /* owned */
    double score;          /* BM25 relevance, higher is better (-bm25()) */
    /* hybrid retrieval (mem.c): the BM25 part, the cosine, the row */
    double bm25, cosine;
    int64_t nid;
};

struct emb_hit; /* llm/embed.h: a row id (here the note's) and its cosine */

/* What the memory manager needs of a store. Every call but open and close
 * is thread safe and is its own transaction (a store that batches, such as
 * insert_many, touch or vec_set, does so inside one call): the manager
 * never holds a transaction across calls. The calls return 0 or a negative
 * AIOS_E*: AIOS_ENOTFOUND for an absent note, MEM_EEXISTS for a duplicate
 * id, AIOS_EIO for a failure of the store. Each member is documented at
 * the SQLite function of the same name below. */
struct mem_store_ops {
    const char *name;
    int (*open)(struct mem_store **out, const char *path, bool full_sync, char *err,
                size_t errlen);
    void (*close)(struct mem_store *s);
    /* notes of one agent (the namespace), by id */
    int (*insert)(struct mem_store *s, const char *agent, const struct mem_note *n);
    int (*insert_many)(struct mem_store *s, const char *agent, struct mem_note *const *n,
                       size_t count);
    int (*get)(struct mem_store *s, const char *agent, const char *id, struct mem_note **out);
    int (*update)(struct mem_store *s, const char *agent, const struct mem_note *n);
    int (*remove)(struct mem_store *s, const char *agent, const char *id);
    int (*touch)(struct mem_store *s, const char *agent, const char *const *ids, size_t n,
                 const char *ts);
    int (*count)(struct mem_store *s, const char *agent, long long *out);
    /* the per-agent limit on the bytes of stored notes (0 = none), and what
     * an agent's notes take now */
    int (*set_quota)(struct mem_store *s, int64_t bytes);
    int (*used)(struct mem_store *s, const char *agent, int64_t *bytes);
    /* BM25 retrieval */
    int (*search)(struct mem_store *s, const char *agent, const char *text, int k,
                  struct mem_hit **hits, size_t *n_hits);
    int (*search_ids)(struct mem_store *s, const char *agent, const char *text, int k,
                      struct mem_hit *out, size_t *n_out);
    /* search, only when the store can answer from RAM without waiting on a
     * lock held through I/O or walking an index on disk (the caller is an
     * HTTP thread); AIOS_EBUSY otherwise (then search on a pool thread).
     * NULL: never. */
    int (*search_ram)(struct mem_store *s, const char *agent, const char *text, int k,
                      struct mem_hit **hits, size_t *n_hits);
    int (*bm25_of)(struct mem_store *s, const char *text, struct mem_hit *h, size_t n);
    int (*get_nids)(struct mem_store *s, const char *agent, struct mem_hit *h, size_t n);
    /* embedding vectors (hybrid retrieval) */
    int (*vec_model)(struct mem_store *s, const char *fingerprint, bool *reset);
    int (*vec_set)(struct mem_store *s, const char *agent, const char *const *ids,
                   const float *vecs, size_t n, int dim);
    int (*vec_missing)(struct mem_store *s, const char *agent, int limit, json_t **out);
    int (*vec_scan)(struct mem_store *s, const char *agent, const float *q, int dim,
                    struct emb_hit **hits, size_t *n_hits);
};

/* the SQLite implementation (mem_store.c) */
extern const struct mem_store_ops mem_store_sqlite;
/* the PostgreSQL implementation (mem_store_pg.c) */
extern const struct mem_store_ops mem_store_pg;

/* hits of search/get_nids: frees each note and the array (any store) */
void mem_hits_free(struct mem_hit *hits, size_t n);

/* ---- the SQLite store: the functions of mem_store_sqlite ---- */

/* Open (creating) the database at path. full_sync: PRAGMA synchronous=FULL
 * (each commit survives power loss) instead of NORMAL (survives a crash of
 * the process). 0 or AIOS_EIO / AIOS_ENOMEM with a message. */
int mem_store_open(struct mem_store **out, const char *path, bool full_sync, char *err,
                   size_t errlen);
/* Close every connection. No other call may be running. */
void mem_store_close(struct mem_store *s);

/* All calls below are thread safe: each takes a connection of its own for
 * the duration of the call. They return 0 or negative AIOS_E*. */
int mem_store_insert(struct mem_store *s, const char *agent, const struct mem_note *n);
/* one transaction for all (bulk load; benchmarks). No vectors: with an
 * embedding model they are made by the agent's retrievals once the manager
 * is reopened (a running manager believes an agent it has back-filled
 * complete). */
int mem_store_insert_many(struct mem_store *s, const char *agent, struct mem_note *const *n,
                          size_t count);
/* AIOS_ENOTFOUND when the agent has no such note */
int mem_store_get(struct mem_store *s, const char *agent, const char *id, struct mem_note **out);
/* replace every field of the agent's note n->id; AIOS_ENOTFOUND if absent */
int mem_store_update(struct mem_store *s, const char *agent, const struct mem_note *n);
int mem_store_delete(struct mem_store *s, const char *agent, const char *id);
/* retrieval_count += 1 and last_accessed = ts for each id, one transaction */
int mem_store_touch(struct mem_store *s, const char *agent, const char *const *ids, size_t n,
                    const char *ts);
/* BM25 search of the agent's notes (content, keywords, tags, context) for
 * any word of `text`; best first, at most k. *hits is a new array (free with
 * mem_hits_free); *n_hits may be 0. */
int mem_store_search(struct mem_store *s, const char *agent, const char *text, int k,
                     struct mem_hit **hits, size_t *n_hits);
int mem_store_search_ram(struct mem_store *s, const char *agent, const char *text, int k,
                         struct mem_hit **hits, size_t *n_hits);
int mem_store_count(struct mem_store *s, const char *agent, long long *out);
/* the quota on one agent's stored notes (bytes of their text fields, 0 =
 * none), enforced by triggers in the database; and an agent's bytes now */
int mem_store_set_quota(struct mem_store *s, int64_t bytes);
int mem_store_used(struct mem_store *s, const char *agent, int64_t *bytes);

/* ---- embedding vectors (hybrid retrieval) ----
 * One unit vector (float[dim]) per note in notes_vec; a note's vector is
 * dropped with it and whenever its content changes. */
/* Record the embedding model; when it differs from the one that made the
 * stored vectors, drop them all (*reset true). */
int mem_store_vec_model(struct mem_store *s, const char *fingerprint, bool *reset);
/* vectors for the agent's notes ids[i] (vecs: n * dim floats), one
 * transaction without an fsync (derived data) */
int mem_store_vec_set(struct mem_store *s, const char *agent, const char *const *ids,
                      const float *vecs, size_t n, int dim);
/* up to limit of the agent's notes without a vector: [[id, content], ...] */
int mem_store_vec_missing(struct mem_store *s, const char *agent, int limit, json_t **out);
/* The cosine of q with every vector of the agent (a linear scan), in no
 * particular order. *hits malloc'd (free()). */
int mem_store_vec_scan(struct mem_store *s, const char *agent, const float *q, int dim,
                       struct emb_hit **hits, size_t *n_hits);
/* The agent's best k notes by BM25 for text as (nid, bm25) in out[k]
 * (notes not read), best first. */
int mem_store_search_ids(struct mem_store *s, const char *agent, const char *text, int k,
                         struct mem_hit *out, size_t *n_out);
/* h[i].bm25 = the BM25 of row h[i].nid for text (unchanged when it
 * matches none of the words), in one statement. */
int mem_store_bm25_of(struct mem_store *s, const char *text, struct mem_hit *h, size_t n);
/* h[i].note = the agent's note with row id h[i].nid (NULL when gone). */
int mem_store_get_nids(struct mem_store *s, const char *agent, struct mem_hit *h, size_t n);
/* for tests and benchmarks: the agents' indexes in RAM now (bytes, how
 * many; 0 and 0 when they are off), and whether retrievals use them (they
 * do from open, unless AIOS_MEM_RIX_MB=0; false: FTS5 only) */
void mem_store_rix_stats(struct mem_store *s, size_t *bytes, int *n_index);
void mem_store_rix_use(struct mem_store *s, bool use);
void mem_store_rix_drop(struct mem_store *s); /* every agent's index (built again when used) */
void mem_store_rix_min(struct mem_store *s, int notes); /* agents from this many notes get one */

/* The FTS5 query used for `text`: every word quoted, joined with OR; at most
 * 32 words. Empty string when text has no word. malloc'd. */
char *mem_fts_query(const char *text);

#endif
