/* Compact JSON text of a jansson value, the same bytes as jansson's
 * json_dumps(v, JSON_COMPACT | JSON_REAL_PRECISION(p)) at a fraction of
 * its instructions (see json_enc.c). */
#ifndef AIOS_UTIL_JSON_ENC_H
#define AIOS_UTIL_JSON_ENC_H

#include <jansson.h>
#include <stddef.h>

/* The text of v (an object or an array), malloc'd and NUL-terminated, with
 * room for `extra` more bytes after the NUL; its length (without the NUL)
 * in *len. real_precision: significant digits of reals, 1 to 31, 0 for
 * jansson's default (17). NULL where json_dumps gives NULL: v is not an
 * object or array, a string in it is not valid UTF-8, it holds itself (a
 * cycle), or memory ran out. */
char *json_enc_compact(const json_t *v, int real_precision, size_t extra, size_t *len);

/* The text jansson gives a real (finite) v: "%.*g" with that precision,
 * ".0" appended when it has neither '.' nor 'e', the exponent without '+'
 * and leading zeros. out holds at least JSON_ENC_REAL_MAX bytes; returns
 * the length written (NUL-terminated), or -1 (v not finite). */
#define JSON_ENC_REAL_MAX 64
int json_enc_real(char *out, double v, int precision);

#endif
