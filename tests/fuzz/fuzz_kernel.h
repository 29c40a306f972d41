/* For the fuzz targets that go all the way to the prompt (chat, query): a
 * struct kernel with a config and one core, the embedded engine on the tiny
 * test model (loaded once, n_ctx 1024, no engine thread: only its prepare
 * runs, on the calling thread as on an HTTP thread), and the model's
 * vocabulary for checking grammars in llama.cpp's parser. */
#ifndef AIOS_TESTS_FUZZ_KERNEL_H
#define AIOS_TESTS_FUZZ_KERNEL_H

#include "kernel/kernel.h"
#include "llm/core.h"
#include "llm/testmodel.h"

#include <llama.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct kernel g_k;
static struct llm_core *g_core;
static const struct llama_vocab *g_vocab;

static void fuzz_quiet_log(enum ggml_log_level level, const char *text, void *ud) {}

static void fuzz_kernel_init(void)
{
    char err[512] = "", *path = NULL, yaml[2048];
    llm_llama_global_init();
    llama_log_set(fuzz_quiet_log, NULL);
    if (testmodel_cached(TESTMODEL_SHAPE_TINY, &path, err, sizeof err)) {
        fprintf(stderr, "fuzz: %s\n", err);
        abort();
    }
    snprintf(yaml, sizeof yaml,
             "llms:\n  models:\n    - name: tiny\n      backend: llamacpp\n      path: %s\n"
             "      n_ctx: 1024\n      n_threads: 1\n"
             "  structured_output:\n    max_string_length: 64\n    max_items: 8\n",
             path);
    if (config_load_string(&g_k.cfg, yaml, strlen(yaml), err, sizeof err) ||
        llm_llama_create(&g_core, &g_k.cfg.models[0], &g_k.cfg, err, sizeof err)) {
        fprintf(stderr, "fuzz: %s\n", err);
        abort();
    }
    g_k.cores = calloc(1, sizeof *g_k.cores);
    if (!g_k.cores) abort();
    g_k.cores[0] = g_core;
    g_k.n_cores = 1;
    struct llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    struct llama_model *m = llama_model_load_from_file(path, mp);
    free(path);
    if (!m) abort();
    g_vocab = llama_model_get_vocab(m);
    llama_log_set(fuzz_quiet_log, NULL);
}

/* a grammar the kernel made must load in llama.cpp (the engine would
 * fail the call at generation time otherwise) */
static void fuzz_grammar_must_load(const char *gbnf)
{
    if (!gbnf) return;
    struct llama_sampler *s = llama_sampler_init_grammar(g_vocab, gbnf, "root");
    if (!s) {
        fprintf(stderr, "llama.cpp refused a grammar the kernel made:\n%s\n", gbnf);
        abort();
    }
    llama_sampler_free(s);
}

#endif
