/* Unit tests for llm/embed.c with the real llama.cpp and the `embed` test
 * model (random weights, real Qwen2 tokenizer, mean pooling in its GGUF
 * metadata; cached in ~/.cache/aios/models). Random weights make the
 * vectors meaningless as semantics, so the tests check what can fail:
 * unit length, determinism (same text, same bits, whatever was embedded in
 * between), different texts differ, long texts are cut not refused, the
 * config is validated with clear messages, a bad path and a model without
 * pooling are refused at open. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel/config.h"
#include "llm/embed.h"
#include "llm/testmodel.h"
#include "util/err.h"

static char *g_model;

static int group_setup(void **state)
{
    (void)state;
    char err[512] = "";
    if (testmodel_cached(TESTMODEL_SHAPE_EMBED, &g_model, err, sizeof err)) {
        fprintf(stderr, "cannot make the embed test model: %s\n", err);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(g_model);
    return 0;
}

static struct emb *open_model(void)
{
    struct emb_opts o = {.model = g_model, .pooling = -1, .threads = 1, .n_ctx = 64, .weight = 0.5};
    char err[512] = "";
    struct emb *e = NULL;
    int rc = emb_open(&e, &o, err, sizeof err);
    if (rc) fprintf(stderr, "emb_open: %s\n", err);
    assert_int_equal(rc, 0);
    return e;
}

static void test_vectors(void **state)
{
    (void)state;
    struct emb *e = open_model();
    int d = emb_dim(e);
    assert_int_equal(d, 64);
    float *a = calloc((size_t)d, sizeof *a), *b = calloc((size_t)d, sizeof *b),
          *c = calloc((size_t)d, sizeof *c);
    const char *t1 = "The scheduler preempts long prefills.";
    assert_int_equal(emb_text(e, t1, strlen(t1), a), 0);
    assert_true(fabs(emb_dot(a, a, d) - 1.0) < 1e-5);
    /* something else in between, then the same text: the same bits */
    const char *t2 = "zebra quantum marmalade";
    assert_int_equal(emb_text(e, t2, strlen(t2), c), 0);
    assert_int_equal(emb_text(e, t1, strlen(t1), b), 0);
    assert_memory_equal(a, b, (size_t)d * sizeof *a);
    /* a different text gives a different direction */
    double cos = emb_dot(a, c, d);
    assert_true(cos < 0.9999);
    assert_true(cos >= -1.0 && cos <= 1.0);
    /* empty text: the zero vector, not an error */
    assert_int_equal(emb_text(e, "", 0, c), 0);
    assert_true(emb_dot(c, c, d) == 0.0);
    /* longer than n_ctx (64) tokens: cut, still a unit vector */
    char big[4000];
    size_t o = 0;
    while (o + 20 < sizeof big) o += (size_t)snprintf(big + o, sizeof big - o, "word%zu ", o);
    assert_int_equal(emb_text(e, big, o, c), 0);
    assert_true(fabs(emb_dot(c, c, d) - 1.0) < 1e-5);
    assert_non_null(strstr(emb_fingerprint(e), "mean"));
    free(a);
    free(b);
    free(c);
    emb_close(e);
}

static void test_hybrid_formula(void **state)
{
    (void)state;
    assert_true(fabs(emb_hybrid(0.5, 0.8, 1.0) - 0.9) < 1e-12);
    assert_true(fabs(emb_hybrid(0.25, -0.3, 0.5) - 0.375) < 1e-12); /* negative cosine is 0 */
    assert_true(fabs(emb_hybrid(1.0, 0.7, 1.0) - 0.7) < 1e-12);
    assert_true(fabs(emb_hybrid(0.0, 0.7, 0.2) - 0.2) < 1e-12);
}

static int cfg_err(const char *yaml, char *err, size_t errlen, struct emb_opts *o)
{
    struct aios_config cfg;
    char e2[256];
    memset(&cfg, 0, sizeof cfg);
    assert_int_equal(config_load_string(&cfg, yaml, strlen(yaml), e2, sizeof e2), 0);
    err[0] = 0;
    int rc = emb_opts_from_config(&cfg, o, err, errlen);
    config_free(&cfg);
    return rc;
}

static void test_config(void **state)
{
    (void)state;
    char err[256];
    struct emb_opts o;
    assert_int_equal(cfg_err("llms: {}\n", err, sizeof err, &o), 0);
    assert_null(o.model); /* none configured: BM25 only */
    assert_int_equal(cfg_err("embedding: {model: /m.gguf, pooling: cls, threads: 3, weight: 0.25}\n",
                             err, sizeof err, &o), 0);
    assert_string_equal(o.model, "/m.gguf");
    assert_int_equal(o.threads, 3);
    assert_true(o.weight == 0.25);
    emb_opts_free(&o);
    assert_int_equal(cfg_err("embedding: {model: /m.gguf, pooling: max}\n", err, sizeof err, &o),
                     AIOS_ECONFIG);
    assert_non_null(strstr(err, "embedding.pooling"));
    assert_int_equal(cfg_err("embedding: {model: /m.gguf, weight: 1.5}\n", err, sizeof err, &o),
                     AIOS_ECONFIG);
    assert_non_null(strstr(err, "embedding.weight"));
    assert_int_equal(cfg_err("embedding: {modle: /m.gguf}\n", err, sizeof err, &o), AIOS_ECONFIG);
    assert_non_null(strstr(err, "embedding.modle: unknown key"));
    assert_int_equal(cfg_err("embedding: {model: 7}\n", err, sizeof err, &o), AIOS_ECONFIG);
    assert_non_null(strstr(err, "embedding.model"));
    assert_int_equal(cfg_err("embedding: {model: /m.gguf, threads: 0}\n", err, sizeof err, &o),
                     AIOS_ECONFIG);
    assert_non_null(strstr(err, "embedding.threads"));
}

static void test_open_errors(void **state)
{
    (void)state;
    char err[512] = "";
    struct emb *e = NULL;
    struct emb_opts o = {.model = "/nonexistent/embed.gguf", .pooling = -1, .threads = 1,
                         .n_ctx = 64, .weight = 0.5};
    assert_int_equal(emb_open(&e, &o, err, sizeof err), AIOS_ECONFIG);
    assert_null(e);
    assert_non_null(strstr(err, "embedding.model: cannot read '/nonexistent/embed.gguf'"));
    /* not a GGUF */
    o.model = "/etc/hostname";
    assert_int_equal(emb_open(&e, &o, err, sizeof err), AIOS_ECONFIG);
    assert_non_null(strstr(err, "cannot load"));
    /* a chat model without a pooling type: refused unless pooling is set */
    char *tiny = NULL;
    assert_int_equal(testmodel_cached(TESTMODEL_SHAPE_TINY, &tiny, err, sizeof err), 0);
    o.model = tiny;
    assert_int_equal(emb_open(&e, &o, err, sizeof err), AIOS_ECONFIG);
    assert_non_null(strstr(err, "embedding.pooling"));
    o.pooling = 1; /* mean */
    assert_int_equal(emb_open(&e, &o, err, sizeof err), 0);
    emb_close(e);
    free(tiny);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_hybrid_formula),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_open_errors),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
