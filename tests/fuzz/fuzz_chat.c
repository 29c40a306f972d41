/* Fuzz target: the OpenAI chat request (POST /v1/chat/completions) all the
 * way to the prompt the engine gets, as api_openai_chat runs it: the body
 * parsed as api_parse_body does (a JSON object, duplicates refused),
 * api_openai_parse_chat (fields, messages, sampling, stop, response_format,
 * tools), then api_llm_prepare: the structured-output rewrite
 * (llm_structured_prepare: tool catalogue, tool history, grammar) and the
 * engine's prepare (the tiny test model's chat template, tokenization,
 * context checks). A grammar the rewrite made must load in llama.cpp. */
#include "fuzz.h"
#include "fuzz_kernel.h"

#include "api/api.h"
#include "llm/structured.h"

#include <jansson.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_kernel_init();
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
    bool stream;
    char err[1024];
    if (api_openai_parse_chat(body, req, &stream, err, sizeof err) == 0) {
        struct llm_core *core = kernel_find_core(&g_k, req->model);
        if (!core) core = g_core; /* any model name: the prompt is what matters */
        if (api_llm_prepare(&g_k, core, req, err, sizeof err) == 0) {
            if (!req->prompt || req->n_tokens <= 0) abort();
            fuzz_grammar_must_load(req->grammar);
        }
    }
    llm_req_free(req);
    json_decref(body);
    return 0;
}
