/* Fuzz target: JSON Schema (response_format.json_schema.schema and tool
 * parameters) to GBNF (src/llm/schema.c, grammar.c). A schema either is
 * refused with a message, or its grammar must load in llama.cpp's grammar
 * parser (llama_sampler_init_grammar with the tiny test model's Qwen2
 * vocabulary, loaded once, vocab only): a grammar llama.cpp refuses would be
 * a 500 at generation time instead of a 400. The same schema also goes
 * through the validator (the schema document as an instance of itself) and
 * the tool-call grammar (as one tool's parameters). */
#include "fuzz.h"

#include "llm/grammar.h"
#include "llm/schema.h"
#include "llm/testmodel.h"

#include <jansson.h>
#include <llama.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

static const struct llama_vocab *g_vocab;

static void quiet(enum ggml_log_level level, const char *text, void *ud) {}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    llama_backend_init();
    llama_log_set(quiet, NULL);
    char err[512], *path = NULL;
    if (testmodel_cached(TESTMODEL_SHAPE_TINY, &path, err, sizeof err)) {
        fprintf(stderr, "fuzz_schema: %s\n", err);
        abort();
    }
    struct llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    struct llama_model *m = llama_model_load_from_file(path, mp);
    free(path);
    if (!m) abort();
    g_vocab = llama_model_get_vocab(m);
    return 0;
}

static void must_load(const char *gbnf)
{
    struct llama_sampler *s = llama_sampler_init_grammar(g_vocab, gbnf, "root");
    if (!s) {
        fprintf(stderr, "llama.cpp refused a grammar the kernel made:\n%s\n", gbnf);
        abort();
    }
    llama_sampler_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *schema = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY,
                                NULL);
    if (!schema) return 0;
    struct grammar_opts o;
    grammar_opts_default(&o);
    /* small bounds keep the grammars (and llama.cpp's parse) quick */
    o.max_string = 16;
    o.max_items = 4;
    o.max_depth = 2;
    o.max_ws = 2;
    char err[512];
    char *g = NULL;
    /* the kernel makes grammars only of schemas schema_check_supported
     * accepted (llm/structured.c, tools/registry.c) */
    bool ok = schema_check_supported(schema, err, sizeof err) == 0;
    if (ok && grammar_from_schema(schema, &o, &g, err, sizeof err) == 0) must_load(g);
    free(g);
    g = NULL;
    schema_validate(schema, schema, err, sizeof err);
    if (ok && json_is_object(schema)) {
        struct grammar_tool t = {.name = "fz", .params = schema};
        if (grammar_tool_calls(&t, 1, 2, true, &o, &g, err, sizeof err) == 0) must_load(g);
        free(g);
    }
    json_decref(schema);
    return 0;
}
