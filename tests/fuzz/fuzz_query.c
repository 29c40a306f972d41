/* Fuzz target: the body of POST /query (src/api/aios_query.c) for every
 * query_type and action_type up to the syscall it would submit: the body
 * parsed as api_parse_body does, the envelope (api_query_envelope), the
 * priority (api_parse_priority, no header), then for llm queries
 * api_query_llm_req (chat, chat_with_json_output,
 * chat_with_tool_call_output, call_tool / tool_use, operate_file: the
 * OpenAI body it is turned into, parse, structured rewrite, the tiny test
 * model's template and tokenizer) and for memory / storage / tool queries
 * api_query_kq_req (the executor's request), and for memory and storage
 * the managers' typed parsers (mem_req_parse, sto_req_parse: every params
 * shape). The executors themselves are not run.
 *
 * The tool and storage pools are marked present (a dummy pointer that
 * the parse path only compares with NULL) so that call_tool and
 * operate_file get past their 501. */
#include "fuzz.h"
#include "fuzz_kernel.h"

#include "api/api.h"
#include "kernel/query.h"
#include "memory/mem_req.h"
#include "storage/storage.h"
#include "util/err.h"

#include <jansson.h>

static char g_pool_mark;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_kernel_init();
    g_k.pools[SYSCALL_KIND_TOOL] = (struct sched_pool *)(void *)&g_pool_mark;
    g_k.pools[SYSCALL_KIND_STORAGE] = (struct sched_pool *)(void *)&g_pool_mark;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(body)) {
        json_decref(body);
        return 0;
    }
    const char *agent;
    enum syscall_kind kind;
    json_t *qd;
    char err[1024];
    int prio;
    bool ps;
    if (api_query_envelope(body, &agent, &kind, &qd, err, sizeof err) == 0 &&
        api_parse_priority(NULL, json_object_get(body, "priority") ? body : qd, &prio, &ps, err,
                           sizeof err) == 0) {
        if (kind == SYSCALL_KIND_LLM) {
            struct llm_req *req;
            struct llm_core *core;
            enum api_query_action act;
            unsigned status;
            if (api_query_llm_req(&g_k, agent, qd, &req, &core, &act, &status, err, sizeof err) == 0) {
                if (!req->prompt || req->n_tokens <= 0) abort();
                if (act != API_QUERY_CHAT && !req->grammar) abort(); /* tool calls are forced */
                fuzz_grammar_must_load(req->grammar);
                llm_req_free(req);
            } else if (status < 400 || status > 501) {
                abort();
            }
        } else {
            struct kq_req *kq;
            if (api_query_kq_req(kind, qd, &kq, err, sizeof err) == 0) {
                if (!kq->op || !json_is_object(kq->params)) abort();
                /* storage and memory: every params shape through the
                 * managers' own pure parsers, as query_kq does */
                if (kind == SYSCALL_KIND_STORAGE) {
                    struct sto_req *q = NULL;
                    int http = 0;
                    int rc = sto_req_parse(kq->op, kq->params, &q, &http, err, sizeof err);
                    if (rc && rc != AIOS_ENOMEM && (http < 400 || http > 499)) abort();
                    if (!rc && !q) abort();
                    sto_req_free(q);
                } else if (kind == SYSCALL_KIND_MEMORY) {
                    struct mem_req *q = NULL;
                    int rc = mem_req_parse(kq->op, kq->params, &q, err, sizeof err);
                    if (!rc && !q) abort();
                    mem_req_free(q);
                }
                kq_req_free(kq);
            }
        }
    }
    json_decref(body);
    return 0;
}
