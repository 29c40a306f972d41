/* Fuzz target: the kernel's own JSON codec (src/util/json_dec.c, which
 * parses every request body, and src/util/json_enc.c, which encodes every
 * answer) against jansson, which it must match. For any bytes:
 * json_dec_loadb gives NULL exactly when json_loadb does (same flags, the
 * access gate's JSON_REJECT_DUPLICATES), and otherwise an equal tree; when
 * both fail, the same error text and position. json_enc_compact of the
 * tree gives the same bytes as json_dumps(JSON_COMPACT |
 * JSON_REAL_PRECISION(15)), or NULL where it does. Any difference aborts. */
#include "fuzz.h"

#include "util/json_dec.h"
#include "util/json_enc.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv) { return 0; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t ej, ed;
    json_t *want = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &ej);
    json_t *got = json_dec_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &ed);
    if (!want != !got) abort();
    if (!want) {
        if (strcmp(ej.text, ed.text) || ej.position != ed.position) abort();
        return 0;
    }
    if (!json_equal(want, got)) abort();
    char *a = json_dumps(want, JSON_COMPACT | JSON_REAL_PRECISION(15));
    size_t n = 0;
    char *b = json_enc_compact(got, 15, 0, &n);
    if (!a != !b || (a && (strlen(a) != n || memcmp(a, b, n)))) abort();
    free(a);
    free(b);
    json_decref(want);
    json_decref(got);
    return 0;
}
