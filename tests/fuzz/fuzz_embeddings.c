/* Fuzz target: an OpenAI embeddings request (POST /v1/embeddings) up to
 * what the embedding core gets, as api_openai_embeddings runs it: the body
 * parsed as api_parse_body does (a JSON object, duplicates refused), then
 * api_embeddings_parse against the embedding test model's description
 * (its id, width, a small embedding.n_ctx, its vocabulary size) with its
 * real tokenizer (emb_vocab_tokenize on a vocabulary-only load; no
 * context, no decode).
 *
 * Checked: a refusal is a 400 or 404 with a message; an accepted request
 * names the model, holds 1..API_EMB_MAX_INPUTS inputs, each of 1..n_ctx
 * tokens, all ids inside the vocabulary, and the lengths add up to
 * n_tokens. */
#include "fuzz.h"

#include "api/api.h"
#include "llm/core.h"
#include "llm/embed.h"
#include "llm/testmodel.h"
#include "util/err.h"

#include <jansson.h>
#include <llama.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct llama_vocab *g_vocab;
static struct api_emb_model g_m;

static void quiet_log(enum ggml_log_level level, const char *text, void *ud)
{
    (void)level;
    (void)text;
    (void)ud;
}

static int tok(const void *ud, const char *text, size_t len, int32_t **out, int *n)
{
    return emb_vocab_tokenize(ud, text, len, out, n);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[512] = "", *path = NULL;
    llm_llama_global_init();
    llama_log_set(quiet_log, NULL);
    if (testmodel_cached(TESTMODEL_SHAPE_EMBED, &path, err, sizeof err)) {
        fprintf(stderr, "fuzz: %s\n", err);
        abort();
    }
    struct llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    struct llama_model *m = llama_model_load_from_file(path, mp);
    free(path);
    if (!m) abort();
    g_vocab = llama_model_get_vocab(m);
    g_m = (struct api_emb_model){"fz-embed", llama_model_n_embd(m), 48, llama_vocab_n_tokens(g_vocab), tok, g_vocab};
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(body)) {
        json_decref(body);
        return 0;
    }
    struct llm_req *req = calloc(1, sizeof *req);
    if (!req) abort();
    bool b64 = true;
    char err[512] = "";
    /* a body that ends in a newline meets a kernel without an embedding model */
    const struct api_emb_model *m = size > 0 && data[size - 1] == '\n' ? NULL : &g_m;
    int rc = api_embeddings_parse(body, m, req, &b64, err, sizeof err);
    if (rc) {
        if (rc != AIOS_ENOMEM && rc != AIOS_EINVAL && rc != AIOS_ENOTFOUND) abort();
        if (rc != AIOS_ENOMEM && !err[0]) abort();
    } else {
        if (!m || !req->model || strcmp(req->model, m->name)) abort();
        if (req->n_emb < 1 || req->n_emb > API_EMB_MAX_INPUTS) abort();
        int sum = 0;
        for (int i = 0; i < req->n_emb; i++) {
            if (req->emb_lens[i] < 1 || req->emb_lens[i] > m->n_ctx) abort();
            sum += req->emb_lens[i];
        }
        if (sum != req->n_tokens) abort();
        for (int i = 0; i < req->n_tokens; i++)
            if (req->tokens[i] < 0 || req->tokens[i] >= m->n_vocab) abort();
    }
    llm_req_free(req);
    json_decref(body);
    return 0;
}
