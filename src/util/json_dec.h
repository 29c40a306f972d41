/* Parsing of JSON request bodies: jansson's json_loadb with a fast path
 * for well-formed input (see json_dec.c). */
#ifndef AIOS_UTIL_JSON_DEC_H
#define AIOS_UTIL_JSON_DEC_H

#include <jansson.h>
#include <stddef.h>

/* What json_loadb(buf, n, flags, err) returns, value for value and, on
 * failure, error for error (a failure is always jansson's own). */
json_t *json_dec_loadb(const char *buf, size_t n, size_t flags, json_error_t *err);

#endif
