/* bench_embed: N inputs embedded one per llama_decode (emb_tokens, what
 * POST /v1/embeddings did before batching and what memory and storage do)
 * against the same inputs packed into batched decodes (emb_tokens_batch,
 * greedily in order up to n_batch tokens and n_seq inputs a decode, as the
 * embedding core's worker packs a list), in one process on one context,
 * alternating, best of --reps a side. Also prints how far the batched
 * vectors are from the one-at-a-time ones (min cosine, max abs diff).
 *
 * Inputs are made of 4 to 40 words drawn from a fixed word list (seeded),
 * tokenized with the model's tokenizer and cut to embedding.n_ctx.
 *
 * Usage: bench_embed [--model M.gguf] [--n 256] [--reps 3] [--threads 1]
 *                    [--n-ctx 512] [--n-batch N] [--n-seq 32] [--pooling mean]
 * Default model: the `embed` test model (made in the user cache); n_batch
 * defaults to n_ctx as in the kernel; --pooling mean runs a chat model
 * (e.g. `aios model create-test M.gguf --shape qwen2.5-0.5b`) as an
 * embedder. */
#include "llm/embed.h"
#include "llm/testmodel.h"
#include "util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *g_words[] = {
    "the",    "kernel", "agent",  "memory",   "storage", "schedules", "a",      "call",
    "of",     "model",  "token",  "sandbox",  "reads",   "writes",    "file",   "note",
    "query",  "vector", "cosine", "ranks",    "and",     "to",        "in",     "quickly",
    "slowly", "every",  "batch",  "decode",   "engine",  "context",   "prompt", "answer",
    "zebra",  "quantum", "marmalade", "river", "mountain", "violet",  "seven",  "42",
};

static double now_s(void) { return (double)util_now_us() / 1e6; }

int main(int argc, char **argv)
{
    const char *model = NULL;
    int n = 256, reps = 3, threads = 1, n_ctx = 512, n_batch = 0, n_seq = 0, pooling = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--model") && v) model = v, i++;
        else if (!strcmp(a, "--n") && v) n = atoi(v), i++;
        else if (!strcmp(a, "--reps") && v) reps = atoi(v), i++;
        else if (!strcmp(a, "--threads") && v) threads = atoi(v), i++;
        else if (!strcmp(a, "--n-ctx") && v) n_ctx = atoi(v), i++;
        else if (!strcmp(a, "--n-batch") && v) n_batch = atoi(v), i++;
        else if (!strcmp(a, "--n-seq") && v) n_seq = atoi(v), i++;
        else if (!strcmp(a, "--pooling") && v && !strcmp(v, "mean")) pooling = 1, i++;
        else {
            fprintf(stderr, "usage: bench_embed [--model M.gguf] [--n 256] [--reps 3] "
                            "[--threads 1] [--n-ctx 512] [--n-batch N] [--n-seq 32] "
                            "[--pooling mean]\n");
            return 2;
        }
    }
    if (n < 1 || reps < 1) return 2;
    char err[512] = "", *path = NULL;
    if (!model) {
        if (testmodel_cached(TESTMODEL_SHAPE_EMBED, &path, err, sizeof err)) {
            fprintf(stderr, "bench_embed: %s\n", err);
            return 1;
        }
        model = path;
    }
    struct emb_opts o = {.model = (char *)model, .pooling = pooling, .threads = threads,
                         .n_ctx = n_ctx, .weight = 0.5, .n_batch = n_batch, .n_seq = n_seq};
    struct emb *e = NULL;
    if (emb_open(&e, &o, err, sizeof err)) {
        fprintf(stderr, "bench_embed: %s\n", err);
        return 1;
    }
    int dim = emb_dim(e), max_tok = emb_batch_tokens(e), max_seq = emb_batch_seqs(e);
    int32_t **tok = calloc((size_t)n, sizeof *tok);
    int *len = calloc((size_t)n, sizeof *len);
    float *a = calloc((size_t)n * (size_t)dim, sizeof *a), *b = calloc((size_t)n * (size_t)dim,
                                                                          sizeof *b);
    if (!tok || !len || !a || !b) return 1;
    unsigned seed = 12345;
    long total = 0;
    for (int i = 0; i < n; i++) {
        char text[1024];
        size_t off = 0;
        seed = seed * 1103515245u + 12345u;
        int words = 4 + (int)((seed >> 16) % 37);
        for (int w = 0; w < words; w++) {
            seed = seed * 1103515245u + 12345u;
            off += (size_t)snprintf(text + off, sizeof text - off, "%s%s", w ? " " : "",
                                    g_words[(seed >> 16) % (sizeof g_words / sizeof *g_words)]);
        }
        if (emb_tokenize(e, text, off, &tok[i], &len[i])) return 1;
        if (len[i] > emb_n_ctx(e)) len[i] = emb_n_ctx(e);
        total += len[i];
    }
    double best_one = 1e30, best_bat = 1e30;
    int decodes = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        for (int i = 0; i < n; i++)
            if (emb_tokens(e, tok[i], len[i], a + (size_t)i * (size_t)dim)) return 1;
        double t1 = now_s();
        decodes = 0;
        for (int i = 0; i < n;) {
            int k = 0, nt = 0;
            while (i + k < n && k < max_seq && nt + len[i + k] <= max_tok) nt += len[i + k++];
            if (emb_tokens_batch(e, k, (const int32_t *const *)tok + i, len + i,
                                 b + (size_t)i * (size_t)dim))
                return 1;
            i += k;
            decodes++;
        }
        double t2 = now_s();
        if (t1 - t0 < best_one) best_one = t1 - t0;
        if (t2 - t1 < best_bat) best_bat = t2 - t1;
    }
    double min_cos = 1, max_diff = 0;
    for (int i = 0; i < n; i++) {
        const float *x = a + (size_t)i * (size_t)dim, *y = b + (size_t)i * (size_t)dim;
        double c = emb_dot(x, y, dim);
        if (c < min_cos) min_cos = c;
        for (int d = 0; d < dim; d++) {
            double df = fabs((double)x[d] - (double)y[d]);
            if (df > max_diff) max_diff = df;
        }
    }
    printf("model %s: dim %d, n_ctx %d, n_batch %d, n_seq %d, threads %d\n", model, dim,
           emb_n_ctx(e), max_tok, max_seq, threads);
    printf("%d inputs, %ld tokens (%.1f per input), best of %d\n", n, total, (double)total / n,
           reps);
    printf("one per decode: %8.1f ms  %4d decodes  %8.0f inputs/s\n", best_one * 1e3, n,
           n / best_one);
    printf("batched:        %8.1f ms  %4d decodes  %8.0f inputs/s\n", best_bat * 1e3, decodes,
           n / best_bat);
    printf("speedup (one per decode / batched): %.2fx\n", best_one / best_bat);
    printf("batched vs alone: min cosine 1 - %.3g, max abs diff %.3g\n", 1 - min_cos, max_diff);
    for (int i = 0; i < n; i++) free(tok[i]);
    free(tok);
    free(len);
    free(a);
    free(b);
    emb_close(e);
    free(path);
    return 0;
}
