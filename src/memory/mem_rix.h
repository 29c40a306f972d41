/* The memory store's index in RAM (mem_rix.c): for each agent with many
 * notes, which notes hold each token and how often, so that a retrieval
 * scores the agent's notes from RAM instead of walking FTS5's doclists;
 * and for the whole store, how many notes hold each token (BM25's IDF),
 * which FTS5 can only count by walking the token's whole doclist.
 *
 * It is derived from the SQLite store and only ever used in its place
 * when it holds exactly the store's committed notes: it is built from a
 * read snapshot, changed by the group commit's leader after each commit in
 * commit order (the writes committed while a build ran are replayed onto
 * it before it is used), and dropped when a change cannot be followed.
 * Tokens are the FTS5 table's own (its tokenizer, porter over unicode61),
 * so a word matches the notes FTS5 would match and counts the same
 * occurrences. Bounded in bytes: the least recently searched agents' indexes
 * are dropped first. docs/memory.md, "Retrieval". */
#ifndef AIOS_MEMORY_MEM_RIX_H
#define AIOS_MEMORY_MEM_RIX_H

#include <math.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* an agent has an index only from this many notes on (below, FTS5 is as
 * fast and the index would only cost memory) */
#define MEM_RIX_MIN_NOTES 256

struct mem_rix;

/* one word's part of a note's score: IDF x BM25's saturated term
 * frequency with k1 = 1.2 (the one formula of every ranking path, so that
 * they give the same bits) */
#define MEM_RANK_K1 1.2
static inline double mem_rank_term(double idf, int tf)
{
    return idf * ((double)tf * (MEM_RANK_K1 + 1.0)) / ((double)tf + MEM_RANK_K1);
}

/* BM25's IDF of a word held by `hits` of `n_row` notes (FTS5's bm25()
 * formula), kept above 0 */
static inline double mem_idf(double n_row, double hits)
{
    double v = log((n_row - hits + 0.5) / (hits + 0.5));
    return v > 1e-6 ? v : 1e-6;
}

/* the text of a note that the full-text index holds: content, keywords,
 * tags, context, as stored */
struct mem_rix_text {
    const char *col[4];
};

/* api: the FTS5 API of a connection that outlives the index (its
 * tokenizers are used); max_bytes: the bound on all indexes together */
int mem_rix_open(struct mem_rix **out, fts5_api *api, size_t max_bytes);
void mem_rix_close(struct mem_rix *r);

/* Read the store's token counts from FTS5 (db: a connection no other
 * thread uses, before any write). 0, or an error: then IDFs are not
 * answered here (mem_rix_idf). */
int mem_rix_load_counts(struct mem_rix *r, sqlite3 *db);

/* After a commit, in commit order (the group commit's leader): note nid
 * of agent slot had text old (NULL: it is new) and now has text t (NULL:
 * it is gone). */
void mem_rix_set(struct mem_rix *r, int64_t slot, int64_t nid, const struct mem_rix_text *old,
                 const struct mem_rix_text *t);
/* the agent's notes changed in a way not described: its index is dropped,
 * and the store's token counts are no longer used */
void mem_rix_lost(struct mem_rix *r, int64_t slot);

/* A query's words as tokens, tokenized once for the calls below */
#define MEM_RIX_WORDS 32
#define MEM_RIX_TOKEN_MAX 64 /* longer tokens are not kept */
struct mem_rix_query {
    int n;
    size_t len[MEM_RIX_WORDS];
    unsigned char tok[MEM_RIX_WORDS][MEM_RIX_TOKEN_MAX];
};

/* The words word[0..n) (each the text of one FTS5 phrase, without
 * quotes) as tokens into q. 0; AIOS_EINVAL: more than MEM_RIX_WORDS, or
 * a word that is not exactly one kept token (FTS5 matches it as a phrase;
 * the caller asks FTS5); AIOS_ENOMEM. */
int mem_rix_query(struct mem_rix *r, const char *const *word, const size_t *len, int n,
                  struct mem_rix_query *q);

/* The IDFs of q's words over the whole store, from the counts kept here:
 * true, with idf[i] and df[i] (the notes that hold it); false when the
 * counts are not kept (the caller counts with FTS5). mem_rix_idf: the same
 * for one word (false too when it is not exactly one token). */
bool mem_rix_query_idf(struct mem_rix *r, const struct mem_rix_query *q, double *idf, double *df);
bool mem_rix_idf(struct mem_rix *r, const char *word, size_t len, double *idf, double *df);

/* Score the agent's notes for q's words with the IDFs idf[0..q->n):
 * hit(ud, nid, score) for every note that holds one of them, score summed
 * word by word in order (as aios_bm25 sums). 0; AIOS_ENOTFOUND: the agent
 * has no index. */
int mem_rix_score(struct mem_rix *r, int64_t slot, const struct mem_rix_query *q,
                  const double *idf, void (*hit)(void *ud, int64_t nid, double score), void *ud);

/* Whether a build for the agent should start now (none has an index or is
 * building, and its index was not dropped for room lately). */
bool mem_rix_wanted(struct mem_rix *r, int64_t slot);
/* Build the agent's index: next(ud, &nid, &t) gives its notes one by one
 * (1; 0 at the end; negative: an error, nothing is kept), all from one
 * read snapshot whose first read must come after this call began (the
 * writes committed from then on are replayed onto the index). 0, or
 * AIOS_EBUSY (another build runs, or the index would not fit), or next's
 * error, or AIOS_ENOMEM. */
int mem_rix_build(struct mem_rix *r, int64_t slot,
                  int (*next)(void *ud, int64_t *nid, struct mem_rix_text *t), void *ud);

/* for tests: bytes held now, and the agents with an index; every agent's
 * index dropped (they are built again at their next retrieval) */
void mem_rix_stats(struct mem_rix *r, size_t *bytes, int *n_index);
void mem_rix_drop_all(struct mem_rix *r);

#endif
