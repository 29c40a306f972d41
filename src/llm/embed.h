/* Text embeddings with a GGUF embedding model run by llama.cpp, for the
 * hybrid (BM25 + cosine) retrieval of memory and storage. See embed.c. */
#ifndef AIOS_LLM_EMBED_H
#define AIOS_LLM_EMBED_H

#include "llm/gpu.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct aios_config;
struct kernel;
struct emb;

struct emb_opts {
    char *model;   /* GGUF path (owned); NULL: no embedding model configured */
    int pooling;   /* llama_pooling_type; -1 (unspecified): the model's own */
    int threads;   /* llama.cpp threads; default 1 */
    int n_ctx;     /* tokens per text (longer texts are cut); default 512 */
    double weight; /* cosine's share of the hybrid score, 0..1; default 0.5 */
    char *name;    /* model id on POST /v1/embeddings (owned); NULL: the file's */
    int n_batch;   /* tokens per llama_decode of emb_tokens_batch (>= n_ctx);
                    * 0: n_ctx */
    int n_seq;     /* sequences per llama_decode of emb_tokens_batch; default 32 */
    struct gpu_opts gpu; /* device offload (llm/gpu.h): n_gpu_layers etc. */
};

#define EMB_DEFAULT_N_CTX 512
#define EMB_DEFAULT_WEIGHT 0.5
#define EMB_DEFAULT_N_SEQ 32

/* Read and validate embedding.* ({model, pooling, threads, n_ctx, weight,
 * name, n_batch, n_seq} and the offload knobs of llm/gpu.h).
 * No `embedding` key (or no model): 0 with o->model NULL. Otherwise 0 or
 * AIOS_ECONFIG with "embedding.key: what is wrong" in err. */
int emb_opts_from_config(const struct aios_config *cfg, struct emb_opts *o, char *err,
                         size_t errlen);
void emb_opts_free(struct emb_opts *o);

/* Load the model and make an embeddings context. 0, or AIOS_ECONFIG /
 * AIOS_EENGINE / AIOS_ENOMEM with a message naming the file. */
int emb_open(struct emb **out, const struct emb_opts *o, char *err, size_t errlen);
void emb_close(struct emb *e);

/* Vector width. */
int emb_dim(const struct emb *e);
/* Identifies model + pooling + width (stores drop vectors made by another). */
const char *emb_fingerprint(const struct emb *e);
double emb_weight(const struct emb *e);

/* The L2-normalised embedding of text[0..len) into out[emb_dim()]. Texts
 * longer than n_ctx tokens are cut. The same text always gives the same
 * vector (one sequence per decode, nothing batched with it). Thread safe
 * (one mutex around the context). An empty text gives the zero vector.
 * 0 or AIOS_EENGINE / AIOS_ENOMEM. */
int emb_text(struct emb *e, const char *text, size_t len, float *out);

/* The model id POST /v1/embeddings answers to (embedding.name, else the
 * file name without .gguf); tokens per text; the vocabulary's size. */
const char *emb_name(const struct emb *e);
int emb_n_ctx(const struct emb *e);
int emb_n_vocab(const struct emb *e);
/* Tokenize text as emb_text() does, without cutting, into *out (malloc'd,
 * *n tokens). Any thread, no lock (the vocabulary is read-only). 0,
 * AIOS_ENOMEM, AIOS_ETOOBIG or AIOS_EENGINE. */
int emb_tokenize(const struct emb *e, const char *text, size_t len, int32_t **out, int *n);
/* The same with a vocabulary (emb_tokenize's own; the fuzz target uses it
 * with a vocabulary-only model). */
struct llama_vocab;
int emb_vocab_tokenize(const struct llama_vocab *vocab, const char *text, size_t len,
                       int32_t **out, int *n);
/* The L2-normalised embedding of tokens[0..n) (ids below emb_n_vocab(), n
 * at most emb_n_ctx(), else AIOS_ETOOBIG), like emb_text(). */
int emb_tokens(struct emb *e, const int32_t *tokens, int n, float *out);

/* Several inputs in one llama_decode, each its own sequence (pooled on
 * its own): input i is tokens[i][0..lens[i]), its L2-normalised vector goes
 * to out + i * emb_dim(). n at most emb_batch_seqs(), the lengths (each 1
 * to emb_n_ctx()) add up to at most emb_batch_tokens(); else
 * AIOS_ETOOBIG. The vectors agree with emb_tokens() of each input alone up
 * to float rounding (docs/api.md, "Embeddings"), not bit for bit. 0 or
 * AIOS_EENGINE. */
int emb_tokens_batch(struct emb *e, int n, const int32_t *const *tokens, const int *lens,
                     float *out);
int emb_batch_tokens(const struct emb *e);
int emb_batch_seqs(const struct emb *e);

/* Dot product (cosine of normalised vectors), in double. */
double emb_dot(const float *a, const float *b, int dim);

/* A vector search hit: a row id and its cosine with the query. */
struct emb_hit {
    int64_t id;
    double cosine;
};
struct sqlite3_stmt;
/* Step st, whose rows are (row id, vector BLOB of dim floats), and give the
 * cosine of q with each vector (rows of another width are skipped), in row
 * order: the vector scan of the memory and storage stores. 0, AIOS_ENOMEM,
 * or AIOS_EIO when a step fails; the caller resets or finalizes st. */
int emb_scan(struct sqlite3_stmt *st, const float *q, int dim, struct emb_hit **out,
             size_t *n_out);
struct pg_result;
/* The same over a PostgreSQL result in binary format whose rows are (row
 * id bigint, vector bytea) (the PostgreSQL stores). */
int emb_scan_pg(const struct pg_result *r, const float *q, int dim, struct emb_hit **out,
                size_t *n_out);
/* qsort/bsearch comparators of struct emb_hit: best cosine first (ties by
 * id); by id */
int emb_hit_cmp_cosine(const void *a, const void *b);
int emb_hit_cmp_id(const void *a, const void *b);

/* The hybrid score: weight * max(cosine, 0) + (1 - weight) * bm25_norm,
 * where bm25_norm is the BM25 score divided by the best BM25 among the
 * candidates (0 when the text did not match the query's words). */
double emb_hybrid(double weight, double cosine, double bm25_norm);

/* For GET /status: {model, fingerprint, dim, n_ctx, n_batch, n_seq,
 * weight, n_texts, n_tokens, n_decodes, decode_s (time in llama_decode)}.
 * New object. */
json_t *emb_describe(struct emb *e);

/* The embedding model as a core served by the scheduler (embed_core.c):
 * LLM syscalls whose target it is embed req->tokens / req->emb_lens into
 * llm_res.emb. Not a chat model (its prepare refuses). */
struct llm_core;
int emb_core_create(struct llm_core **out, struct emb *emb);
/* the embedder of an embedding core; NULL for any other core */
struct emb *emb_core_embedder(struct llm_core *c);

/* Kernel glue: open the model of embedding.model into k->embed (NULL when
 * none is configured) before the memory and storage managers start, and
 * start its core k->embed_core (k->sched must exist). */
int emb_kernel_start(struct kernel *k, char *err, size_t errlen);
void emb_kernel_stop(struct kernel *k);

#endif
