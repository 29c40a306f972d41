/* Test-model creator: GGUF files with the real Qwen2 tokenizer and random
 * weights, made with llama.cpp's public API. See testmodel.c. */
#ifndef AIOS_LLM_TESTMODEL_H
#define AIOS_LLM_TESTMODEL_H

#include <stddef.h>
#include <stdint.h>

enum testmodel_shape {
    TESTMODEL_SHAPE_TINY,    /* 64 wide, 2 layers, F32; made in well under a second */
    TESTMODEL_SHAPE_QWEN05B, /* Qwen2.5-0.5B geometry, Q8_0 */
    TESTMODEL_SHAPE_EMBED,   /* tiny, with qwen2.pooling_type = mean: an embedding model */
    TESTMODEL_SHAPE_TINY_Q8, /* the tiny geometry, Q8_0 (the engine's one-row tests) */
};

/* "tiny" | "qwen2.5-0.5b" | "embed" | "tiny-q8" -> *out; AIOS_EINVAL for anything else */
int testmodel_shape_parse(const char *s, enum testmodel_shape *out);
/* the name testmodel_shape_parse accepts, "?" for an unknown value */
const char *testmodel_shape_name(enum testmodel_shape shape);

/* Writes a GGUF model with random weights and the real Qwen2 tokenizer to
 * out_path, atomically (a temp file in the same directory, then rename). The
 * same shape and seed give a byte-identical file on any machine and with any
 * thread count. n_threads <= 0 means one per online CPU. The file is loaded
 * back and checked before it is renamed into place. Returns 0 or a negative
 * AIOS_E*; on error writes a human message to err (when err is not NULL). */
int testmodel_create(const char *out_path, enum testmodel_shape shape, uint64_t seed,
                     int n_threads, char *err, size_t errlen);

/* The path of shape's seed-0 model in the user cache
 * (~/.cache/aios/models/aios-test-<shape>-seed0.gguf), created there first
 * when absent (atomically, so concurrent callers are safe). *out malloc'd.
 * For tests and benchmarks that need e.g. the embedding model. */
int testmodel_cached(enum testmodel_shape shape, char **out, char *err, size_t errlen);

#endif
