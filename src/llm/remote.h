/* Remote LLM backends: an LLM core that forwards calls to OpenAI-compatible
 * servers or Anthropic's Messages API over HTTP (remote.c), and the wire
 * formats of both (remote_wire.c). See remote.c for threads and routing. */
#ifndef AIOS_LLM_REMOTE_H
#define AIOS_LLM_REMOTE_H

#include "llm/core.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

enum remote_dialect {
    REMOTE_DIALECT_OPENAI,    /* POST .../v1/chat/completions, Bearer key */
    REMOTE_DIALECT_ANTHROPIC, /* POST .../v1/messages, x-api-key */
};

/* Known remote backend names (lowercase, as in llms.models[].backend) and
 * their defaults. NULL for a backend that is not remote. */
struct remote_backend_info {
    const char *name;
    enum remote_dialect dialect;
    const char *default_base;  /* base URL when hostname is absent (NULL: required) */
    const char *key_name;      /* api_keys.<key_name> in the config */
    const char *key_env;       /* environment variable, or NULL */
    bool key_required;         /* hosted APIs refuse calls without a key */
    bool extra_sampling;       /* accepts top_k / min_p */
    bool continue_final;       /* accepts continue_final_message (vLLM, SGLang) */
    /* the field that carries llama.cpp's repeat penalty: "repeat_penalty"
     * (llama.cpp's server, aios; with repeat_last_n), "repetition_penalty"
     * (vLLM, SGLang), NULL: the server has none (OpenAI, Anthropic, ...) */
    const char *repeat_key;
};
const struct remote_backend_info *remote_backend_find(const char *backend);
bool llm_backend_is_remote(const char *backend);

/* Create one remote core serving `n` config entries that share one model
 * name (n > 1: replicas, load-balanced). cfg gives api_keys and the
 * llms.remote settings. 0 or AIOS_ECONFIG / AIOS_ENOMEM with a message. */
int llm_remote_create(struct llm_core **out, const struct aios_config *cfg,
                      const struct cfg_model *const *models, size_t n, char *err, size_t errlen);

/* Endpoint URL for a configured base (malloc'd; NULL on OOM): a bare host
 * gets /v1/chat/completions (/v1/messages for Anthropic), a base with a
 * path such as .../v1 or .../openai gets /chat/completions (/messages), a
 * full endpoint is kept. */
char *remote_endpoint_url(const char *base, enum remote_dialect d);

/* For kernel_start: the core for llms.models[idx] and every later entry
 * with the same name (its replicas). *out is NULL (and 0 returned) when an
 * earlier entry has that name: its core already serves this one. */
int llm_remote_create_entry(struct llm_core **out, const struct aios_config *cfg, size_t idx,
                            char *err, size_t errlen);

/* Text snapshot for remote context switching: turn req into the request
 * that continues an answer of which `partial` (n bytes) was already
 * produced. The partial text becomes a final assistant message (merged with
 * one already there), which Anthropic continues natively and vLLM/SGLang
 * continue with continue_final_message; the answer then holds only the
 * continuation. Reduces max_tokens by n_partial_tokens (when known, >0).
 * 0 or AIOS_ENOMEM. */
int llm_text_snapshot_resume(struct llm_req *req, const char *partial, size_t n,
                             int n_partial_tokens);

/* ---- wire formats (remote_wire.c); pure functions, unit-tested ---- */

struct remote_wire_opts {
    const char *model;      /* upstream model id */
    bool stream;
    int default_max_tokens; /* used when req has none (Anthropic requires one) */
    bool extra_sampling;    /* send top_k / min_p when set */
    bool max_completion_tokens; /* OpenAI proper: max_completion_tokens */
    bool continue_final;    /* last assistant message is a prefix to continue */
    const char *repeat_key; /* remote_backend_info.repeat_key (NULL: not sent) */
};

/* The upstream request body for req. NULL with a message in err when req
 * cannot be expressed (e.g. Anthropic with only system messages). */
json_t *remote_wire_request(enum remote_dialect d, const struct llm_req *req,
                            const struct remote_wire_opts *o, char *err, size_t errlen);

/* What an answer has told us so far (streamed or whole). */
struct remote_answer {
    char *text;
    size_t len, cap;
    const char *finish_reason; /* static string or NULL while unknown */
    int n_prompt, n_cached, n_gen;
    bool done;                 /* end of message seen */
    /* tool calls the upstream made: [{"id","name","arguments" (JSON text)}],
     * or NULL; streamed ones are assembled here from their deltas */
    json_t *tool_calls;
    /* OpenAI dialect, when asked for: choices[0].logprobs.content entries
     * of the answer (or of every chunk, in order), as the upstream sent
     * them; NULL when it sent none */
    json_t *logprobs;
    bool in_tool_block;        /* Anthropic stream: inside a tool_use block */
    char error[512];           /* error event in a stream ("" if none) */
    char error_type[64];
};
void remote_answer_free(struct remote_answer *a);
/* Before a broken stream is resumed from its text snapshot: keep the text
 * (it becomes the assistant prefix the next attempt continues) and forget
 * everything else the broken attempt said, its tool calls above all: the
 * next attempt sends its calls whole again, and OpenAI-style deltas (by
 * index) would otherwise be appended to the broken ones, Anthropic's
 * blocks added beside them. */
void remote_answer_keep_text(struct remote_answer *a);
int remote_answer_append(struct remote_answer *a, const char *s, size_t n);

/* Parse a complete (non-streamed) 2xx body into a. 0 or AIOS_EINVAL with a
 * message in err. */
int remote_wire_parse_response(enum remote_dialect d, const char *body, size_t len,
                               struct remote_answer *a, char *err, size_t errlen);

/* Apply one SSE event to a. The new text, if any, is a->text at
 * delta_off, n_delta bytes (0 when the event carried none). 0, or AIOS_EINVAL for an event that is not
 * valid JSON. An upstream error event sets a->error and returns 0. */
int remote_wire_stream_event(enum remote_dialect d, const char *event, const char *data,
                             size_t n, struct remote_answer *a, size_t *delta_off,
                             size_t *n_delta);

/* Name of the tool through which a JSON response_format is asked of
 * Anthropic (which has no response_format): forced with tool_choice; its
 * input is the answer. */
#define REMOTE_JSON_TOOL "json_response"

/* After a complete answer: for Anthropic with a JSON response_format, the
 * forced REMOTE_JSON_TOOL call becomes the answer's text (unwrapped from
 * {"value": ...} when the schema's root is not an object). 0 or
 * AIOS_ENOMEM. */
int remote_wire_finish(enum remote_dialect d, const struct llm_req *req, struct remote_answer *a);

/* A person-readable message from an upstream error body (JSON error object
 * of either dialect, or the first bytes of whatever it is). */
void remote_wire_error_message(const char *body, size_t len, char *out, size_t outlen);

/* Server-Sent Events parser: feed bytes as they arrive; on_event is called
 * for every complete event (event name "" when none was given). A non-zero
 * return from on_event stops parsing and is returned. */
typedef int (*sse_event_fn)(void *ud, const char *event, const char *data, size_t n);
struct sse_parser {
    char *line;
    size_t n_line, cap_line;
    char event[64];
    char *data;
    size_t n_data, cap_data;
    bool has_data;
};
int sse_feed(struct sse_parser *p, const char *bytes, size_t n, sse_event_fn fn, void *ud);
void sse_parser_free(struct sse_parser *p);

#endif
