/* Unit tests for llm/testmodel.c: the tiny shape is byte-reproducible, a
 * different seed changes it, no temp files are left, and the result is a
 * working Qwen2 model (loads, ChatML template, tokenizes, decodes to finite
 * logits). The qwen2.5-0.5b shape is too slow for a unit test. */
#include "llm/testmodel.h"
#include "util/err.h"

#include <llama.h>

#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static char g_dir[256];
static char g_a[300], g_b[300], g_c[300];

static void quiet_log(enum ggml_log_level level, const char *text, void *ud)
{
    (void)level;
    (void)text;
    (void)ud;
}

static bool quiet_progress(float p, void *ud)
{
    (void)p;
    (void)ud;
    return true;
}

static int group_setup(void **state)
{
    (void)state;
    const char *t = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/aios-testmodel-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(g_dir)) return -1;
    snprintf(g_a, sizeof g_a, "%s/a.gguf", g_dir);
    snprintf(g_b, sizeof g_b, "%s/b.gguf", g_dir);
    snprintf(g_c, sizeof g_c, "%s/c.gguf", g_dir);
    llama_backend_init();
    llama_log_set(quiet_log, NULL);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    DIR *d = opendir(g_dir);
    if (d) {
        struct dirent *e;
        char p[600];
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(g_dir);
    return 0;
}

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(len > 0 ? (size_t)len : 1);
    if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *n = (size_t)len;
    return buf;
}

static int count_dir_entries(void)
{
    DIR *d = opendir(g_dir);
    int n = 0;
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void test_shape_parse(void **state)
{
    (void)state;
    enum testmodel_shape s = TESTMODEL_SHAPE_QWEN05B;
    assert_int_equal(testmodel_shape_parse("tiny", &s), 0);
    assert_int_equal(s, TESTMODEL_SHAPE_TINY);
    assert_int_equal(testmodel_shape_parse("qwen2.5-0.5b", &s), 0);
    assert_int_equal(s, TESTMODEL_SHAPE_QWEN05B);
    assert_int_equal(testmodel_shape_parse("huge", &s), AIOS_EINVAL);
    assert_int_equal(testmodel_shape_parse("", &s), AIOS_EINVAL);
    assert_int_equal(testmodel_shape_parse(NULL, &s), AIOS_EINVAL);
    assert_string_equal(testmodel_shape_name(TESTMODEL_SHAPE_QWEN05B), "qwen2.5-0.5b");
}

static void test_reproducible(void **state)
{
    (void)state;
    char err[256];
    /* different thread counts must not change the bytes */
    assert_int_equal(testmodel_create(g_a, TESTMODEL_SHAPE_TINY, 42, 1, err, sizeof err), 0);
    assert_int_equal(testmodel_create(g_b, TESTMODEL_SHAPE_TINY, 42, 4, err, sizeof err), 0);
    assert_int_equal(testmodel_create(g_c, TESTMODEL_SHAPE_TINY, 43, 0, err, sizeof err), 0);
    assert_int_equal(count_dir_entries(), 3); /* no temp files left behind */

    size_t na = 0, nb = 0, nc = 0;
    unsigned char *a = slurp(g_a, &na), *b = slurp(g_b, &nb), *c = slurp(g_c, &nc);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_true(na > 1000000);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);
    assert_int_equal(na, nc); /* same shape, same layout */
    assert_true(memcmp(a, c, na) != 0);
    free(a);
    free(b);
    free(c);
}

static void test_model_works(void **state)
{
    (void)state;
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.progress_callback = quiet_progress;
    struct llama_model *model = llama_model_load_from_file(g_a, mp);
    assert_non_null(model);
    assert_int_equal(llama_model_n_layer(model), 2);
    assert_int_equal(llama_model_n_embd(model), 64);

    char arch[32];
    assert_true(llama_model_meta_val_str(model, "general.architecture", arch, sizeof arch) > 0);
    assert_string_equal(arch, "qwen2");

    const char *tmpl = llama_model_chat_template(model, NULL);
    assert_non_null(tmpl);
    assert_non_null(strstr(tmpl, "<|im_start|>"));
    struct llama_chat_message msg = {"user", "Hi"};
    char out[256];
    int32_t n = llama_chat_apply_template(tmpl, &msg, 1, true, out, (int32_t)sizeof out);
    assert_true(n > 0 && n < (int32_t)sizeof out);
    out[n] = 0;
    assert_string_equal(out, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");

    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    int32_t n_vocab = llama_vocab_n_tokens(vocab);
    assert_true(n_vocab > 150000);
    llama_token toks[32];
    int32_t nt = llama_tokenize(vocab, "Hello world", 11, toks, 32, true, false);
    assert_true(nt > 0);

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 256;
    cp.n_batch = 64;
    cp.n_ubatch = 64;
    cp.n_threads = 2;
    cp.n_threads_batch = 2;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    assert_non_null(ctx);
    assert_int_equal(llama_decode(ctx, llama_batch_get_one(toks, nt)), 0);
    const float *logits = llama_get_logits_ith(ctx, -1);
    assert_non_null(logits);
    float lo = logits[0], hi = logits[0];
    for (int32_t i = 0; i < n_vocab; i++) {
        assert_true(isfinite(logits[i]));
        if (logits[i] < lo) lo = logits[i];
        if (logits[i] > hi) hi = logits[i];
    }
    assert_true(hi > lo); /* real compute, not a constant */
    llama_free(ctx);
    llama_model_free(model);
}

static void test_bad_path(void **state)
{
    (void)state;
    char err[256] = "";
    char p[400];
    snprintf(p, sizeof p, "%s/no/such/dir/m.gguf", g_dir);
    assert_int_equal(testmodel_create(p, TESTMODEL_SHAPE_TINY, 1, 1, err, sizeof err), AIOS_EIO);
    assert_true(strlen(err) > 0);
    assert_int_equal(testmodel_create("", TESTMODEL_SHAPE_TINY, 1, 1, err, sizeof err),
                     AIOS_EINVAL);
    assert_int_equal(testmodel_create(p, (enum testmodel_shape)99, 1, 1, NULL, 0), AIOS_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shape_parse),
        cmocka_unit_test(test_reproducible),
        cmocka_unit_test(test_model_works),
        cmocka_unit_test(test_bad_path),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
