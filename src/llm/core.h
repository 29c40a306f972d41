/* The LLM core interface: what the kernel knows about a model, whatever
 * runs it. The embedded llama.cpp engine (llama.c) is the first backend;
 * remote HTTP backends implement the same operations. */
#ifndef AIOS_LLM_CORE_H
#define AIOS_LLM_CORE_H

#include "kernel/config.h"
#include "sched/sched.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define LLM_MAX_STOP 4
#define LLM_MAX_TOP_LOGPROBS 20

struct llm_message {
    char *role;
    char *content;
};

struct llm_params {
    int max_tokens;    /* <= 0: until the context is full */
    float temperature; /* <= 0: greedy */
    float top_p;       /* 1: off */
    int top_k;         /* 0: off */
    float min_p;       /* 0: off */
    bool has_seed;
    uint32_t seed;
    float repeat_penalty;    /* <= 0 or 1: off (llama.cpp's repeat penalty) */
    float frequency_penalty; /* 0: off (OpenAI semantics, -2..2) */
    float presence_penalty;  /* 0: off (OpenAI semantics, -2..2) */
    int penalty_last_n;      /* tokens the penalties look back; <= 0: 64 */
    char *stop[LLM_MAX_STOP];
    int n_stop;
    /* logprobs of the generated tokens (and the top_logprobs most likely
     * alternatives, 0..LLM_MAX_TOP_LOGPROBS at each position) */
    bool logprobs;
    int top_logprobs;
};

struct llm_req {
    char *model;
    struct llm_message *msgs;
    size_t n_msgs;
    struct llm_params p;
    bool include_usage;
    /* GBNF grammar constraining the output (root rule "root"), or NULL */
    char *grammar;
    /* response_format / tools of the request (llm/structured.h), or NULL */
    struct llm_structured *structured;
    /* notes memory.auto_inject added to the messages (memory/mem_inject.c),
     * reported with the answer; NULL when none */
    json_t *memory;
    /* filled by prepare() */
    char *prompt;
    int32_t *tokens;
    int n_tokens;
    /* an embeddings call (embed_core.c): n_emb inputs whose tokens lie one
     * after the other in tokens[], input i emb_lens[i] of them */
    int *emb_lens;
    int n_emb;
};

struct llm_res {
    char *text;             /* valid UTF-8, exactly what was streamed */
    size_t len;
    const char *finish_reason; /* "stop" or "length" */
    int n_prompt;           /* prompt tokens */
    int n_prompt_computed;  /* of which were prefilled by this call */
    int n_gen;              /* generated tokens */
    int64_t t_prefill_us, t_decode_us;
    /* local engine: util_now_us() when the first token was sampled and
     * when the call finished (benchmarks line calls up on one clock) */
    int64_t t_first_tok_at_us, t_end_at_us;
    /* remote cores: tool calls the upstream model made natively, as
     * [{"id", "name" (as sent upstream), "arguments" (JSON text)}], or
     * NULL; llm_structured_result maps and validates them */
    json_t *tool_calls;
    bool upstream; /* produced by a remote core (not grammar-constrained) */
    /* with llm_params.logprobs: one entry per token of `text`, in OpenAI's
     * shape {"token","logprob","bytes","top_logprobs":[{"token","logprob",
     * "bytes"}]}; NULL otherwise. While streaming, the same entries go out
     * with their text as syscall aux (comma-separated JSON objects). */
    json_t *logprobs;
    /* an embeddings call: n_emb vectors of emb_dim floats, one after the
     * other (L2-normalised) */
    float *emb;
    int emb_dim;
};

void llm_req_free(void *req);
void llm_res_free(void *res);

struct llm_core;

struct llm_core_ops {
    /* HTTP thread, before queueing: format and tokenize the prompt and check
     * it fits. 0 or AIOS_EINVAL / AIOS_ETOOBIG with a message in err. */
    int (*prepare)(struct llm_core *c, struct llm_req *req, char *err, size_t errlen);
    /* start the engine thread(s), taking work from sched */
    int (*start)(struct llm_core *c, struct sched *s);
    /* join threads (after sched_shutdown) */
    void (*stop)(struct llm_core *c);
    void (*destroy)(struct llm_core *c);
    /* add backend details to a JSON object (for /status) */
    void (*describe)(struct llm_core *c, json_t *obj);
};

struct llm_core {
    char *name;
    char *backend;
    int64_t created; /* unix seconds */
    /* per token, from the entry's price (0: free); the scheduler charges
     * each agent's calls with it */
    double price_prompt, price_completion;
    const struct llm_core_ops *ops;
    void *impl;
    /* set once by POST /core/refresh when the model was removed or replaced
     * (kernel/models.c): no new calls are routed here; queued and running
     * ones finish */
    atomic_bool retired;
};

/* Embedded llama.cpp engine for a local GGUF file. cfg (may be NULL: all
 * defaults) gives the engine knobs of the model's llms.models[] entry and
 * the context.* settings; see llama.c and docs/configuration.md. */
int llm_llama_create(struct llm_core **out, const struct cfg_model *m,
                     const struct aios_config *cfg, char *err, size_t errlen);
/* llama.cpp process-wide init (logging, backends); idempotent. */
void llm_llama_global_init(void);
void llm_llama_global_free(void);

#endif
