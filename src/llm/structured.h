/* Structured output and tool calls for a chat request: response_format
 * (json_object, json_schema) and OpenAI tools / tool_choice, parsed from
 * the request body, rendered for a local model (tool catalogue in the
 * system prompt, grammar), and the generated text read back into tool
 * calls. See structured.c. */
#ifndef AIOS_LLM_STRUCTURED_H
#define AIOS_LLM_STRUCTURED_H

#include "kernel/config.h"
#include "llm/core.h"
#include "llm/grammar.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

enum llm_output_kind {
    LLM_OUTPUT_TEXT,        /* free text (maybe with tool history to render) */
    LLM_OUTPUT_JSON_OBJECT, /* any JSON object */
    LLM_OUTPUT_JSON_SCHEMA, /* a value valid against schema */
    LLM_OUTPUT_TOOLS,       /* tool calls (and text, for tool_choice auto) */
};

enum llm_tool_choice {
    LLM_TOOL_CHOICE_AUTO,     /* text or tool calls */
    LLM_TOOL_CHOICE_REQUIRED, /* one or more tool calls */
    LLM_TOOL_CHOICE_NAMED,    /* calls of tools[forced] only */
    LLM_TOOL_CHOICE_NONE,     /* text; tools not offered */
};

struct llm_tool {
    char *name;        /* as the client wrote it, e.g. "author/name" */
    char *wire;        /* as the model sees it, e.g. "author__name" */
    json_t *function;  /* the client's {"name","description","parameters"} */
    json_t *params;    /* parameters schema (borrowed from function), or NULL */
};

struct llm_structured {
    enum llm_output_kind kind;
    json_t *schema;        /* LLM_OUTPUT_JSON_SCHEMA */
    json_t *response_format; /* the client's response_format (JSON kinds), for remote cores */
    struct llm_tool *tools;
    size_t n_tools;
    enum llm_tool_choice choice;
    size_t forced;         /* LLM_TOOL_CHOICE_NAMED: index into tools */
    int max_calls;         /* 1 when parallel_tool_calls is false */
    json_t *messages;      /* the request's messages (for tool history) */
    bool has_stop;         /* the request has stop strings (set by prepare) */
};

#define LLM_MAX_TOOL_CALLS 8

/* From an OpenAI chat body: response_format, tools, tool_choice,
 * parallel_tool_calls, and tool history in messages. *out is NULL for a
 * plain text request. 0, AIOS_EINVAL with a message naming the field (and
 * for schemas the keyword and path), AIOS_ENOMEM. */
int llm_structured_parse(json_t *body, struct llm_structured **out, char *err, size_t errlen);
/* The same fields given one by one (each borrowed, NULL when absent), for
 * front ends whose requests name or derive them differently (AIOS /query). */
struct llm_structured_in {
    json_t *response_format, *tools, *tool_choice, *parallel_tool_calls, *messages;
};
int llm_structured_parse_in(const struct llm_structured_in *in, struct llm_structured **out,
                            char *err, size_t errlen);
void llm_structured_free(struct llm_structured *st);

/* Grammar bounds from the config (llms.structured_output.max_string_length,
 * max_items, max_depth, max_whitespace), defaults where absent. AIOS_ECONFIG
 * with a message for a bad value. */
int llm_structured_opts(const struct aios_config *cfg, struct grammar_opts *o, char *err,
                        size_t errlen);

/* For a local (grammar-constrained) model, before core->ops->prepare:
 * rewrite req->msgs (tool catalogue in the system message, assistant tool
 * calls and tool results in the Hermes format) and set req->grammar. No-op
 * when req->structured is NULL. */
int llm_structured_prepare(struct llm_req *req, const struct grammar_opts *o, char *err,
                           size_t errlen);

/* The name a tool reaches a model under ("author/name" -> "author__name",
 * or the table's wire name for an offered tool); st may be NULL. malloc'd,
 * NULL on OOM. */
char *llm_structured_wire_name(const struct llm_structured *st, const char *name);

/* The generated text read back. */
struct llm_structured_result {
    json_t *calls;      /* [{"name": client name, "arguments": object, "id"?: upstream id}], or NULL */
    size_t content_len; /* text before the first call (all text when no calls) */
    const char *finish; /* "stop", "length" or "tool_calls" */
};

/* Interpret res->text. With finish "length" an unfinished structure is
 * returned as plain text with finish "length"; so is one ended by one of
 * the request's stop strings (finish "stop"). A finished output that does
 * not parse or validate (a kernel bug: the grammar should make it
 * impossible) is AIOS_EENGINE with a message. For a remote core's answer
 * (res->upstream) the upstream's native tool_calls are mapped back to the
 * client's names and their arguments validated, and JSON answers are
 * validated against response_format; a mismatch is AIOS_EIO (the upstream
 * model's fault: 502) with a message. */
int llm_structured_result(const struct llm_structured *st, const struct llm_res *res,
                          struct llm_structured_result *out, char *err, size_t errlen);

#endif
