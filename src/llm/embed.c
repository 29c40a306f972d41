/* Text embeddings for hybrid retrieval.
 *
 * Purpose: the memory manager (notes) and the storage manager (file
 * contents) rank by BM25 alone, unless config.yaml names an embedding model:
 *
 *   embedding:
 *     model: /path/to/any-embedding-model.gguf
 *     pooling: mean        # mean | cls | last; default: the model's own
 *     threads: 2           # llama.cpp threads (default 1)
 *     n_ctx: 512           # tokens per text; longer texts are cut
 *     weight: 0.5          # cosine's share of the hybrid score
 *     name: my-embedder    # its model id on POST /v1/embeddings; default:
 *                          # the file name without .gguf
 *     n_batch: 512         # tokens per decode of a batch (POST /v1/embeddings);
 *                          # default n_ctx
 *     n_seq: 32            # inputs per decode of a batch
 *
 * Then both add a vector per document and rank by a mix of BM25 and cosine
 * similarity (emb_hybrid). This file loads the model with llama.cpp into a
 * context of its own in embeddings mode (llama_context_params.embeddings,
 * pooling from the model or the config) and turns a text into an
 * L2-normalised vector with llama_get_embeddings_seq().
 *
 * Invariants: emb_text() and emb_tokens() run one text per llama_decode,
 * sequence 0, the context's memory cleared before each, and the whole (cut)
 * text in one micro-batch. So the vector memory and storage keep for a text
 * does not depend on what else was embedded before or at the same time:
 * same text, same bits. emb_tokens_batch() (the embedding core's, for
 * POST /v1/embeddings) puts up to n_seq inputs of up to n_batch tokens in
 * all into one llama_decode, input i as sequence i: one micro-batch
 * (n_batch = n_ubatch, a unified KV cache of n_batch cells), where the
 * attention mask keeps sequences apart and pooling is per sequence; its
 * vectors differ from the one-at-a-time ones only by float rounding (the
 * kernels sum over a longer, masked row; flash attention is off, which
 * keeps that near 1e-6). llama.cpp keeps n_batch x n_vocab floats of
 * logits even in embeddings mode for models with an output head, which is
 * why n_batch defaults to n_ctx (no more memory than one text needs). Vectors have unit length (or are
 * all zero for an empty text), so a dot product is the cosine.
 *
 * Threads: emb_text() may be called from any thread; `mu` serialises use of
 * the one context (llama.cpp contexts are not thread safe). This is not the
 * chat engine's thread or context: an embedding never waits for a batch of
 * generation and the other way round. mu is a leaf lock: nothing else is
 * taken while it is held. Callers (memory and storage workers) embed before
 * they take their own locks where they can.
 *
 * Ownership: struct emb owns the model, the context, the batch. The kernel
 * owns the struct (k->embed), opened before the memory and storage managers
 * and closed after them. */
#include "llm/embed.h"

#include "kernel/config.h"
#include "kernel/kernel.h"
#include "llm/core.h"
#include "llm/gpu.h"
#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <libpq-fe.h>
#include <llama.h>

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct emb {
    struct llama_model *model;
    struct llama_context *ctx;
    const struct llama_vocab *vocab;
    int dim, n_ctx;
    int n_batch, n_seq; /* emb_tokens_batch's limits */
    double weight;
    char fingerprint[512];
    char name[256]; /* the model id of POST /v1/embeddings */
    char *path;
    struct gpu_opts gpu;  /* where the model went (llm/gpu.c) */
    struct gpu_plan plan;
    pthread_mutex_t mu; /* guards ctx, batch, tokens and the counters */
    struct llama_batch batch;
    llama_token *tokens;
    uint64_t n_texts, n_tokens, n_decodes; /* embedded so far */
    int64_t t_us;               /* time in llama_decode so far */
};

static const char *pooling_name(int p)
{
    switch (p) {
    case LLAMA_POOLING_TYPE_MEAN: return "mean";
    case LLAMA_POOLING_TYPE_CLS: return "cls";
    case LLAMA_POOLING_TYPE_LAST: return "last";
    case LLAMA_POOLING_TYPE_NONE: return "none";
    default: return "?";
    }
}

int emb_opts_from_config(const struct aios_config *cfg, struct emb_opts *o, char *err,
                         size_t errlen)
{
    memset(o, 0, sizeof *o);
    o->pooling = LLAMA_POOLING_TYPE_UNSPECIFIED;
    o->threads = 1;
    o->n_ctx = EMB_DEFAULT_N_CTX;
    o->weight = EMB_DEFAULT_WEIGHT;
    o->n_seq = EMB_DEFAULT_N_SEQ;
    json_t *e = config_lookup(cfg, "embedding");
    if (!e || json_is_null(e)) return 0;
    if (!json_is_object(e)) {
        snprintf(err, errlen, "embedding: expected a mapping such as {model: FILE.gguf}");
        return AIOS_ECONFIG;
    }
    const char *k;
    json_t *v;
    json_object_foreach(e, k, v) {
        if (strcmp(k, "model") && strcmp(k, "pooling") && strcmp(k, "threads") &&
            strcmp(k, "n_ctx") && strcmp(k, "weight") && strcmp(k, "name") &&
            strcmp(k, "n_batch") && strcmp(k, "n_seq") && !gpu_is_key(k)) {
            snprintf(err, errlen, "embedding.%s: unknown key (use model, pooling, threads, n_ctx, "
                     "weight, name, n_batch, n_seq, n_gpu_layers, main_gpu, split_mode, "
                     "tensor_split, offload_kqv, gpu_mem_bytes)", k);
            return AIOS_ECONFIG;
        }
    }
    int rc = gpu_opts_read(e, "embedding", &o->gpu, err, errlen);
    if (rc) return rc;
    v = json_object_get(e, "model");
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v) || json_string_length(v) == 0) {
        snprintf(err, errlen, "embedding.model: expected the path of a GGUF embedding model");
        return AIOS_ECONFIG;
    }
    v = json_object_get(e, "pooling");
    if (v && !json_is_null(v)) {
        const char *s = json_string_value(v);
        if (s && !strcmp(s, "mean")) o->pooling = LLAMA_POOLING_TYPE_MEAN;
        else if (s && !strcmp(s, "cls")) o->pooling = LLAMA_POOLING_TYPE_CLS;
        else if (s && !strcmp(s, "last")) o->pooling = LLAMA_POOLING_TYPE_LAST;
        else if (!s || strcmp(s, "model")) {
            snprintf(err, errlen, "embedding.pooling: expected mean, cls, last or model");
            return AIOS_ECONFIG;
        }
    }
    static const struct {
        const char *key;
        long long lo, hi;
    } ints[] = {{"threads", 1, 256}, {"n_ctx", 8, 131072}, {"n_batch", 8, 131072}, {"n_seq", 1, 256}};
    int *dst[] = {&o->threads, &o->n_ctx, &o->n_batch, &o->n_seq};
    for (int i = 0; i < 4; i++) {
        v = json_object_get(e, ints[i].key);
        if (!v || json_is_null(v)) continue;
        if (!json_is_integer(v) || json_integer_value(v) < ints[i].lo ||
            json_integer_value(v) > ints[i].hi) {
            snprintf(err, errlen, "embedding.%s: expected an integer in %lld..%lld", ints[i].key,
                     ints[i].lo, ints[i].hi);
            return AIOS_ECONFIG;
        }
        *dst[i] = (int)json_integer_value(v);
    }
    if (o->n_batch && o->n_batch < o->n_ctx) {
        snprintf(err, errlen, "embedding.n_batch: %d is less than embedding.n_ctx (%d); a batch "
                 "must hold the longest input", o->n_batch, o->n_ctx);
        return AIOS_ECONFIG;
    }
    v = json_object_get(e, "weight");
    if (v && !json_is_null(v)) {
        if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1) {
            snprintf(err, errlen, "embedding.weight: expected a number from 0 (BM25 only) to 1 "
                     "(cosine only)");
            return AIOS_ECONFIG;
        }
        o->weight = json_number_value(v);
    }
    v = json_object_get(e, "name");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 200) {
            snprintf(err, errlen, "embedding.name: expected a model id (1 to 200 characters)");
            return AIOS_ECONFIG;
        }
        if (!(o->name = strdup(json_string_value(v)))) return AIOS_ENOMEM;
    }
    o->model = strdup(json_string_value(json_object_get(e, "model")));
    return o->model ? 0 : AIOS_ENOMEM;
}

void emb_opts_free(struct emb_opts *o)
{
    free(o->model);
    free(o->name);
    o->model = o->name = NULL;
}

static bool quiet_progress(float progress, void *ud)
{
    (void)progress;
    (void)ud;
    return true;
}

int emb_open(struct emb **out, const struct emb_opts *o, char *err, size_t errlen)
{
    *out = NULL;
    if (!o->model) {
        snprintf(err, errlen, "embedding.model: no model given");
        return AIOS_ECONFIG;
    }
    struct stat st;
    errno = 0;
    if (stat(o->model, &st) != 0 || !S_ISREG(st.st_mode) || access(o->model, R_OK) != 0) {
        snprintf(err, errlen, "embedding.model: cannot read '%s': %s", o->model,
                 errno ? strerror(errno) : "not a regular file");
        return AIOS_ECONFIG;
    }
    struct emb *e = calloc(1, sizeof *e);
    if (!e) return AIOS_ENOMEM;
    pthread_mutex_init(&e->mu, NULL);
    int rc = 0;
    llm_llama_global_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.progress_callback = quiet_progress;
    e->gpu = o->gpu;
    rc = gpu_resolve(&e->gpu, "embedding", &e->plan, &mp, err, errlen);
    if (rc) goto fail;
    e->model = llama_model_load_from_file(o->model, mp);
    if (!e->model) {
        snprintf(err, errlen, "embedding.model: llama.cpp cannot load '%s' (is it a GGUF model?)",
                 o->model);
        rc = AIOS_ECONFIG;
        goto fail;
    }
    if (llama_model_has_encoder(e->model) && llama_model_has_decoder(e->model)) {
        snprintf(err, errlen, "embedding.model: '%s' is an encoder-decoder model; llama.cpp "
                 "computes no embeddings for those", o->model);
        rc = AIOS_ECONFIG;
        goto fail;
    }
    e->vocab = llama_model_get_vocab(e->model);
    int n_train = llama_model_n_ctx_train(e->model);
    e->n_ctx = o->n_ctx > 0 ? o->n_ctx : EMB_DEFAULT_N_CTX;
    if (n_train > 0 && e->n_ctx > n_train) e->n_ctx = n_train;
    struct llama_context_params cp = llama_context_default_params();
    cp.embeddings = true;
    cp.pooling_type = (enum llama_pooling_type)o->pooling;
    e->n_batch = o->n_batch > 0 ? o->n_batch : e->n_ctx;
    if (e->n_batch < e->n_ctx) e->n_batch = e->n_ctx; /* n_ctx was cut to n_train */
    e->n_seq = o->n_seq > 0 ? o->n_seq : EMB_DEFAULT_N_SEQ;
    /* one micro-batch per decode: all of a batch's inputs in it (pooling
     * and non-causal attention need a whole sequence in one micro-batch),
     * one KV cell per token of it, shared by the sequences */
    cp.n_ctx = (uint32_t)e->n_batch;
    cp.n_batch = cp.n_ubatch = (uint32_t)e->n_batch;
    cp.n_seq_max = (uint32_t)e->n_seq;
    cp.kv_unified = true;
    /* plain attention: with llama.cpp's CPU flash attention a batched
     * input's vector moves by up to 1e-4 per component from the same input
     * alone, with plain attention by about 1e-6 (bench_embed) */
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.offload_kqv = e->gpu.offload_kqv;
    cp.n_threads = cp.n_threads_batch = o->threads > 0 ? o->threads : 1;
    e->ctx = llama_init_from_model(e->model, cp);
    if (!e->ctx) {
        snprintf(err, errlen, "embedding.model: llama.cpp cannot make an embeddings context for "
                 "'%s'", o->model);
        rc = AIOS_EENGINE;
        goto fail;
    }
    int pool = llama_pooling_type(e->ctx);
    if (pool != LLAMA_POOLING_TYPE_MEAN && pool != LLAMA_POOLING_TYPE_CLS &&
        pool != LLAMA_POOLING_TYPE_LAST) {
        snprintf(err, errlen, "embedding.model: '%s' has pooling type %s, not an embedding model's; "
                 "set embedding.pooling to mean, cls or last to pool its outputs", o->model,
                 pooling_name(pool));
        rc = AIOS_ECONFIG;
        goto fail;
    }
    /* the pooled vector's width: n_embd, or the model's output projection's */
    e->path = strdup(o->model);
    e->dim = llama_model_n_embd_out(e->model);
    if (e->dim <= 0) e->dim = llama_model_n_embd(e->model);
    e->weight = o->weight;
    e->batch = llama_batch_init(e->n_batch, 0, 1);
    e->tokens = malloc((size_t)e->n_ctx * sizeof *e->tokens);
    if (!e->tokens || !e->batch.token || !e->path) {
        rc = AIOS_ENOMEM;
        goto fail;
    }
    char desc[128] = "";
    llama_model_desc(e->model, desc, sizeof desc);
    const char *base = strrchr(o->model, '/');
    if (o->name) {
        snprintf(e->name, sizeof e->name, "%s", o->name);
    } else {
        snprintf(e->name, sizeof e->name, "%s", base ? base + 1 : o->model);
        size_t nl = strlen(e->name);
        if (nl > 5 && !strcmp(e->name + nl - 5, ".gguf")) e->name[nl - 5] = 0;
    }
    snprintf(e->fingerprint, sizeof e->fingerprint, "%s|%lld bytes|%s|%s|dim %d|n_ctx %d|no fa",
             base ? base + 1 : o->model, (long long)st.st_size, desc, pooling_name(pool), e->dim,
             e->n_ctx);
    LOG_INFO("embed", "embedding model %s: %d dimensions, %s pooling, %d tokens per text, "
             "batches of %d tokens / %d inputs, cosine weight %.2f", o->model, e->dim,
             pooling_name(pool), e->n_ctx, e->n_batch, e->n_seq, e->weight);
    *out = e;
    return 0;
fail:
    emb_close(e);
    return rc;
}

void emb_close(struct emb *e)
{
    if (!e) return;
    if (e->batch.token) llama_batch_free(e->batch);
    free(e->tokens);
    if (e->ctx) llama_free(e->ctx);
    if (e->model) llama_model_free(e->model);
    free(e->path);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

int emb_dim(const struct emb *e) { return e->dim; }
const char *emb_fingerprint(const struct emb *e) { return e->fingerprint; }
double emb_weight(const struct emb *e) { return e->weight; }

double emb_dot(const float *a, const float *b, int dim)
{
    double s = 0;
    for (int i = 0; i < dim; i++) s += (double)a[i] * (double)b[i];
    return s;
}

int emb_scan(sqlite3_stmt *st, const float *q, int dim, struct emb_hit **out, size_t *n_out)
{
    struct emb_hit *h = NULL;
    size_t n = 0, cap = 0;
    int r, rc = 0;
    *out = NULL;
    *n_out = 0;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 1) != dim * (int)sizeof(float)) continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 256;
            struct emb_hit *nh = realloc(h, nc * sizeof *nh);
            if (!nh) {
                rc = AIOS_ENOMEM;
                break;
            }
            h = nh;
            cap = nc;
        }
        h[n++] = (struct emb_hit){sqlite3_column_int64(st, 0),
                                  emb_dot(sqlite3_column_blob(st, 1), q, dim)};
    }
    if (!rc && r != SQLITE_DONE) rc = AIOS_EIO;
    if (rc) {
        free(h);
        return rc;
    }
    *out = h;
    *n_out = n;
    return 0;
}

int emb_scan_pg(const struct pg_result *res, const float *q, int dim, struct emb_hit **out,
                size_t *n_out)
{
    const PGresult *r = (const PGresult *)res;
    *out = NULL;
    *n_out = 0;
    int rows = PQntuples(r);
    if (rows == 0) return 0;
    struct emb_hit *h = malloc((size_t)rows * sizeof *h);
    float *v = malloc((size_t)dim * sizeof *v);
    if (!h || !v) {
        free(h);
        free(v);
        return AIOS_ENOMEM;
    }
    size_t n = 0;
    for (int i = 0; i < rows; i++) {
        if (PQgetlength(r, i, 0) != 8 || PQgetlength(r, i, 1) != dim * (int)sizeof(float))
            continue;
        uint32_t w[2];
        memcpy(w, PQgetvalue(r, i, 0), 8); /* network order */
        int64_t id = (int64_t)(((uint64_t)ntohl(w[0]) << 32) | ntohl(w[1]));
        memcpy(v, PQgetvalue(r, i, 1), (size_t)dim * sizeof *v); /* alignment */
        h[n++] = (struct emb_hit){id, emb_dot(v, q, dim)};
    }
    free(v);
    *out = h;
    *n_out = n;
    return 0;
}

int emb_hit_cmp_id(const void *x, const void *y)
{
    const struct emb_hit *a = x, *b = y;
    return a->id < b->id ? -1 : a->id > b->id;
}

int emb_hit_cmp_cosine(const void *x, const void *y)
{
    const struct emb_hit *a = x, *b = y;
    if (a->cosine != b->cosine) return a->cosine > b->cosine ? -1 : 1;
    return emb_hit_cmp_id(x, y);
}

double emb_hybrid(double weight, double cosine, double bm25_norm)
{
    return weight * (cosine > 0 ? cosine : 0) + (1.0 - weight) * bm25_norm;
}

const char *emb_name(const struct emb *e) { return e->name; }
int emb_n_ctx(const struct emb *e) { return e->n_ctx; }
int emb_n_vocab(const struct emb *e) { return llama_vocab_n_tokens(e->vocab); }

int emb_tokenize(const struct emb *e, const char *text, size_t len, int32_t **out, int *n_out)
{
    return emb_vocab_tokenize(e->vocab, text, len, out, n_out);
}

int emb_vocab_tokenize(const struct llama_vocab *vocab, const char *text, size_t len,
                       int32_t **out, int *n_out)
{
    *out = NULL;
    *n_out = 0;
    if (len > (size_t)INT32_MAX / 2) return AIOS_ETOOBIG;
    int32_t cap = (int32_t)len + 8;
    int32_t *t = malloc((size_t)cap * sizeof *t);
    if (!t) return AIOS_ENOMEM;
    int32_t n = llama_tokenize(vocab, text, (int32_t)len, t, cap, true, false);
    if (n < 0) { /* more tokens than bytes (added special tokens) */
        int32_t *u = realloc(t, (size_t)(-n) * sizeof *t);
        if (!u) {
            free(t);
            return AIOS_ENOMEM;
        }
        t = u;
        n = llama_tokenize(vocab, text, (int32_t)len, t, -n, true, false);
    }
    if (n < 0) {
        free(t);
        return AIOS_EENGINE;
    }
    *out = t;
    *n_out = n;
    return 0;
}

/* the L2-normalised v[0..dim) into out */
static void normalise(const float *v, int dim, float *out)
{
    double norm = 0;
    for (int i = 0; i < dim; i++) norm += (double)v[i] * (double)v[i];
    norm = sqrt(norm);
    for (int i = 0; i < dim; i++) out[i] = norm > 0 ? (float)(v[i] / norm) : 0.0f;
}

/* inputs i of n as sequence i in one decode (e->mu held; the limits were
 * checked); their vectors into out */
static int embed_locked_n(struct emb *e, int n, const int32_t *const *tokens, const int *lens,
                          float *out)
{
    llama_memory_t mem = llama_get_memory(e->ctx);
    if (mem) llama_memory_clear(mem, true);
    int32_t k = 0;
    for (int s = 0; s < n; s++) {
        for (int32_t i = 0; i < lens[s]; i++, k++) {
            e->batch.token[k] = tokens[s][i];
            e->batch.pos[k] = i;
            e->batch.n_seq_id[k] = 1;
            e->batch.seq_id[k][0] = s;
            e->batch.logits[k] = 1;
        }
    }
    e->batch.n_tokens = k;
    int64_t t0 = util_now_us();
    int dr = llama_decode(e->ctx, e->batch);
    e->t_us += util_now_us() - t0;
    e->n_texts += (uint64_t)n;
    e->n_tokens += (uint64_t)k;
    e->n_decodes++;
    if (dr != 0) {
        LOG_ERROR("embed", "llama_decode failed for %d texts of %d tokens", n, (int)k);
        return AIOS_EENGINE;
    }
    for (int s = 0; s < n; s++) {
        const float *v = llama_get_embeddings_seq(e->ctx, s);
        if (!v) return AIOS_EENGINE;
        normalise(v, e->dim, out + (size_t)s * (size_t)e->dim);
    }
    return 0;
}

/* the vector of tokens[0..n) (n <= n_ctx) into out; e->mu held */
static int embed_locked(struct emb *e, const int32_t *tokens, int32_t n, float *out)
{
    memset(out, 0, (size_t)e->dim * sizeof *out);
    if (n == 0) return 0;
    int len = n;
    return embed_locked_n(e, 1, &tokens, &len, out);
}

int emb_tokens_batch(struct emb *e, int n, const int32_t *const *tokens, const int *lens,
                     float *out)
{
    if (n < 1 || n > e->n_seq) return AIOS_ETOOBIG;
    int64_t sum = 0;
    for (int i = 0; i < n; i++) {
        if (lens[i] < 1 || lens[i] > e->n_ctx) return AIOS_ETOOBIG;
        sum += lens[i];
    }
    if (sum > e->n_batch) return AIOS_ETOOBIG;
    pthread_mutex_lock(&e->mu);
    int rc = embed_locked_n(e, n, tokens, lens, out);
    pthread_mutex_unlock(&e->mu);
    return rc;
}

int emb_batch_tokens(const struct emb *e) { return e->n_batch; }
int emb_batch_seqs(const struct emb *e) { return e->n_seq; }

int emb_tokens(struct emb *e, const int32_t *tokens, int n, float *out)
{
    if (n < 0 || n > e->n_ctx) return AIOS_ETOOBIG;
    pthread_mutex_lock(&e->mu);
    int rc = embed_locked(e, tokens, n, out);
    pthread_mutex_unlock(&e->mu);
    return rc;
}

int emb_text(struct emb *e, const char *text, size_t len, float *out)
{
    memset(out, 0, (size_t)e->dim * sizeof *out);
    if (len > (size_t)INT32_MAX / 2) len = (size_t)INT32_MAX / 2;
    int rc = 0;
    pthread_mutex_lock(&e->mu);
    int32_t n = llama_tokenize(e->vocab, text, (int32_t)len, e->tokens, e->n_ctx, true, false);
    if (n < 0) {
        /* longer than n_ctx tokens: tokenize all of it, keep the first n_ctx */
        llama_token *all = malloc((size_t)(-n) * sizeof *all);
        if (!all) {
            rc = AIOS_ENOMEM;
            goto out;
        }
        n = llama_tokenize(e->vocab, text, (int32_t)len, all, -n, true, false);
        if (n > 0) memcpy(e->tokens, all, (size_t)e->n_ctx * sizeof *all);
        free(all);
        if (n < 0) {
            rc = AIOS_EENGINE;
            goto out;
        }
        n = e->n_ctx;
    }
    rc = embed_locked(e, e->tokens, n, out);
out:
    pthread_mutex_unlock(&e->mu);
    return rc;
}

json_t *emb_describe(struct emb *e)
{
    pthread_mutex_lock(&e->mu);
    json_t *o = json_pack("{s:s,s:s,s:i,s:i,s:i,s:i,s:f,s:I,s:I,s:I,s:f}", "model", e->path,
                          "fingerprint", e->fingerprint, "dim", e->dim, "n_ctx", e->n_ctx,
                          "n_batch", e->n_batch, "n_seq", e->n_seq, "weight", e->weight,
                          "n_texts", (json_int_t)e->n_texts, "n_tokens", (json_int_t)e->n_tokens,
                          "n_decodes", (json_int_t)e->n_decodes, "decode_s",
                          (double)e->t_us / 1e6);
    pthread_mutex_unlock(&e->mu);
    json_object_set_new(o, "placement", gpu_placement_json(&e->gpu, &e->plan, e->model));
    return o;
}

int emb_kernel_start(struct kernel *k, char *err, size_t errlen)
{
    struct emb_opts o;
    int rc = emb_opts_from_config(&k->cfg, &o, err, errlen);
    if (rc || !o.model) {
        emb_opts_free(&o);
        return rc;
    }
    rc = emb_open(&k->embed, &o, err, errlen);
    emb_opts_free(&o);
    if (rc) return rc;
    rc = emb_core_create(&k->embed_core, k->embed);
    if (!rc && (rc = k->embed_core->ops->start(k->embed_core, k->sched)))
        snprintf(err, errlen, "cannot start the embedding model's worker");
    return rc;
}

void emb_kernel_stop(struct kernel *k)
{
    /* after sched_shutdown: its worker has ended or ends now */
    if (k->embed_core) k->embed_core->ops->destroy(k->embed_core);
    k->embed_core = NULL;
    emb_close(k->embed);
    k->embed = NULL;
}
