/* GBNF grammars (llama.cpp's grammar language, root rule "root") generated
 * from JSON schemas of the llm/schema.h subset, for grammar-constrained
 * sampling. See grammar.c for the shapes and bounds. */
#ifndef AIOS_LLM_GRAMMAR_H
#define AIOS_LLM_GRAMMAR_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* Bounds that keep every generation finite where the schema sets none.
 * A value the grammar produces always validates against the schema; these
 * only narrow what it may produce. */
struct grammar_opts {
    int max_string;  /* characters of a string without maxLength */
    int max_items;   /* items of an array without maxItems; members of a free-form object */
    int max_depth;   /* nesting of free-form values ({} schema, json_object) */
    int max_ws;      /* indentation characters after a newline */
};

#define GRAMMAR_DEFAULT_MAX_STRING 512
#define GRAMMAR_DEFAULT_MAX_ITEMS 32
#define GRAMMAR_DEFAULT_MAX_DEPTH 4
#define GRAMMAR_DEFAULT_MAX_WS 16

void grammar_opts_default(struct grammar_opts *o);

/* GBNF whose language is JSON values valid against `schema` (which must
 * pass schema_check_supported). *out is malloc'd. 0, AIOS_EINVAL with a
 * message (e.g. an enum none of whose values fits the type), AIOS_ENOMEM. */
int grammar_from_schema(json_t *schema, const struct grammar_opts *o, char **out, char *err,
                        size_t errlen);

/* GBNF for any JSON object (response_format json_object). */
int grammar_json_object(const struct grammar_opts *o, char **out);

/* One tool the model may call: `name` as the model sees it, `params` its
 * argument schema (NULL: no arguments, {}). */
struct grammar_tool {
    const char *name;
    json_t *params;
};

/* GBNF for tool calls in the Hermes / Qwen2.5 format:
 *   <tool_call>\n{"name": "NAME", "arguments": ARGS}\n</tool_call>
 * repeated 1..max_calls times separated by "\n", where each call's ARGS
 * follow that tool's schema. With allow_text, the output may instead be
 * plain text that does not begin with "<" (tool_choice "auto"). */
int grammar_tool_calls(const struct grammar_tool *tools, size_t n_tools, int max_calls,
                       bool allow_text, const struct grammar_opts *o, char **out, char *err,
                       size_t errlen);

#endif
