/* JSON Schema, the subset the kernel understands: checking that a schema
 * stays inside it, and validating values against it. Shared by structured
 * output (grammar.c), tool-call arguments (tools/) and the API. See
 * schema.c for the exact subset. */
#ifndef AIOS_LLM_SCHEMA_H
#define AIOS_LLM_SCHEMA_H

#include <jansson.h>
#include <stddef.h>

/* 0 if `schema` uses only the supported subset; else AIOS_EINVAL and a
 * message naming the keyword and its path, e.g.
 * "schema $.properties.city: keyword 'pattern' is not supported". */
int schema_check_supported(json_t *schema, char *err, size_t errlen);

/* 0 if `value` validates against `schema`; else AIOS_EINVAL and a message
 * with the JSON path of the offending value, e.g. "$.city: expected string".
 * The schema should have passed schema_check_supported; keywords outside
 * the subset are not enforced here. */
int schema_validate(json_t *schema, json_t *value, char *err, size_t errlen);

#endif
