/* Fuzz target: an OpenAI Responses request (POST /v1/responses) all the
 * way to the prompt the engine gets, as api_responses_create runs it: the
 * body parsed as api_parse_body does (a JSON object, duplicates refused),
 * api_responses_parse (options, input items, instructions, tools,
 * text.format, into the chat completions body it stands for; the fuzz
 * kernel has no response store, so a previous_response_id is a 404), then
 * what every chat request goes through: api_openai_parse_chat and
 * api_llm_prepare (the structured-output rewrite, the tiny test model's
 * chat template and tokenizer). A grammar the rewrite made must load in
 * llama.cpp. */
#include "fuzz.h"
#include "fuzz_kernel.h"

#include "api/api.h"
#include "api/responses.h"
#include "llm/structured.h"
#include "util/err.h"

#include <jansson.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
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
    json_t *chat = NULL;
    bool stream = false, dummy;
    unsigned status = 0;
    char err[1024];
    int rc = api_responses_parse(&g_k, body, &chat, &stream, &status, err, sizeof err);
    if (rc) {
        /* a refusal names its reason and is a 4xx */
        if (rc != AIOS_ENOMEM && (status < 400 || status > 499 || !err[0])) abort();
    } else {
        if (!json_is_object(chat)) abort();
        struct llm_req *req = calloc(1, sizeof *req);
        if (!req) abort();
        if (api_openai_parse_chat(chat, req, &dummy, err, sizeof err) == 0) {
            struct llm_core *core = kernel_find_core(&g_k, req->model);
            if (!core) core = g_core;
            if (api_llm_prepare(&g_k, core, req, err, sizeof err) == 0) {
                if (!req->prompt || req->n_tokens <= 0) abort();
                fuzz_grammar_must_load(req->grammar);
            }
        }
        llm_req_free(req);
    }
    json_decref(chat);
    json_decref(body);
    return 0;
}
