/* Unit tests for hybrid (FTS5 BM25 + cosine) search in src/storage with a
 * real embedding model (the `embed` test model: random weights, real
 * tokenizer, mean pooling) run by llama.cpp. As for memory, the tests
 * check what can fail: a file whose text is the query has cosine 1 and
 * comes first; a query sharing no word with any file still finds files
 * (vector part, bm25 0); scores are in range and equal the mix of their
 * parts, best first; a new version re-embeds; another agent's files never
 * appear; files written before the model was configured are back-filled;
 * without a model the answer is plain BM25. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "llm/embed.h"
#include "llm/testmodel.h"
#include "storage/storage.h"
#include "util/err.h"

static struct emb *g_emb;
static char g_dir[64], g_root[128];
#define WEIGHT 0.5

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/aios-stoembed-XXXXXX");
    if (!mkdtemp(g_dir)) return -1;
    snprintf(g_root, sizeof g_root, "%s/root", g_dir);
    char err[512] = "", *path = NULL;
    if (testmodel_cached(TESTMODEL_SHAPE_EMBED, &path, err, sizeof err)) return -1;
    struct emb_opts o = {.model = path, .pooling = -1, .threads = 1, .n_ctx = 128, .weight = WEIGHT};
    int rc = emb_open(&g_emb, &o, err, sizeof err);
    free(path);
    return rc ? -1 : 0;
}

static int group_teardown(void **state)
{
    (void)state;
    emb_close(g_emb);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static struct sto *open_sto(struct emb *e)
{
    struct sto_config c = {.root_dir = g_root, .max_versions = 5, .max_file_bytes = 1 << 20,
                           .n_threads = 1, .emb = e};
    struct sto *s = NULL;
    char err[512] = "";
    if (sto_open(&s, &c, err, sizeof err)) fail_msg("sto_open: %s", err);
    return s;
}

static json_t *run_ok(struct sto *s, const char *agent, const char *op, json_t *p)
{
    json_t *o = NULL;
    int http = 0;
    char e[1536] = "";
    int rc = sto_exec(s, agent, op, p, &o, &http, e, sizeof e);
    json_decref(p);
    if (rc) fail_msg("%s: %d %s", op, http, e);
    return o;
}

static void put(struct sto *s, const char *agent, const char *path, const char *text)
{
    json_decref(run_ok(s, agent, "write", json_pack("{s:s,s:s}", "file_path", path, "content", text)));
}

static json_t *search(struct sto *s, const char *agent, const char *q, int k)
{
    json_t *o = run_ok(s, agent, "retrieve", json_pack("{s:s,s:i}", "query_text", q, "k", k));
    json_t *r = json_incref(json_object_get(o, "results"));
    json_decref(o);
    return r;
}

static const char *path_at(json_t *l, size_t i)
{
    return json_string_value(json_object_get(json_array_get(l, i), "file_path"));
}

static double num(json_t *l, size_t i, const char *k)
{
    json_t *v = json_object_get(json_array_get(l, i), k);
    if (!json_is_number(v)) fail_msg("result %zu has no number '%s'", i, k);
    return json_number_value(v);
}

static void check_scores(json_t *l)
{
    double best = 0;
    for (size_t i = 0; i < json_array_size(l); i++)
        if (num(l, i, "bm25") > best) best = num(l, i, "bm25");
    for (size_t i = 0; i < json_array_size(l); i++) {
        double s = num(l, i, "score"), b = num(l, i, "bm25"), c = num(l, i, "cosine");
        assert_true(c >= -1.000001 && c <= 1.000001);
        assert_true(b >= 0 && s >= 0 && s <= 1.000001);
        double want = WEIGHT * (c > 0 ? c : 0) + (1 - WEIGHT) * (best > 0 ? b / best : 0);
        if (fabs(s - want) > 1e-9) fail_msg("result %zu: score %.12f, mix %.12f", i, s, want);
        if (i) assert_true(num(l, i - 1, "score") >= s);
    }
}

static void test_plain_then_hybrid(void **state)
{
    (void)state;
    /* written without a model: plain BM25, as before */
    struct sto *s = open_sto(NULL);
    put(s, "ann", "a.txt", "Copper kettles whistle loudly in the morning.");
    put(s, "ann", "b.txt", "Satellites orbit above the clouds at night.");
    json_t *l = search(s, "ann", "kettles", 5);
    assert_int_equal(json_array_size(l), 1);
    assert_null(json_object_get(json_array_get(l, 0), "cosine"));
    json_decref(l);
    sto_close(s);

    /* with the model: the old files are back-filled, new ones embedded */
    s = open_sto(g_emb);
    put(s, "ann", "c.txt", "Quarterly budget review with finance.");
    put(s, "ann", "d/e.txt", "Budget spreadsheet for the finance team.");
    put(s, "ben", "x.txt", "Satellites orbit above the clouds at night.");
    l = search(s, "ann", "Satellites orbit above the clouds at night.", 10);
    assert_int_equal(json_array_size(l), 4); /* all of ann's, none of ben's */
    assert_string_equal(path_at(l, 0), "b.txt");
    assert_true(fabs(num(l, 0, "cosine") - 1.0) < 1e-5);
    for (size_t i = 0; i < 4; i++) assert_string_not_equal(path_at(l, i), "x.txt");
    check_scores(l);
    json_decref(l);

    /* no word in common with any file: the vector part still answers */
    l = search(s, "ann", "xylophone quasar", 2);
    assert_int_equal(json_array_size(l), 2);
    for (size_t i = 0; i < 2; i++) assert_true(num(l, i, "bm25") == 0.0);
    check_scores(l);
    json_decref(l);

    l = search(s, "ann", "budget finance", 4);
    check_scores(l);
    int with_bm25 = 0;
    for (size_t i = 0; i < json_array_size(l); i++) with_bm25 += num(l, i, "bm25") > 0;
    assert_int_equal(with_bm25, 2);
    json_decref(l);

    /* a new version re-embeds */
    put(s, "ann", "a.txt", "Violet tulips bloom in April.");
    l = search(s, "ann", "Violet tulips bloom in April.", 1);
    assert_string_equal(path_at(l, 0), "a.txt");
    assert_true(fabs(num(l, 0, "cosine") - 1.0) < 1e-5);
    json_decref(l);
    l = search(s, "ann", "Copper kettles whistle loudly in the morning.", 4);
    for (size_t i = 0; i < json_array_size(l); i++) assert_true(num(l, i, "cosine") < 0.9999);
    json_decref(l);

    /* a deleted file is gone from both parts */
    json_decref(run_ok(s, "ann", "delete_file", json_pack("{s:s}", "file_path", "b.txt")));
    l = search(s, "ann", "Satellites orbit above the clouds at night.", 10);
    assert_int_equal(json_array_size(l), 3);
    for (size_t i = 0; i < 3; i++) assert_string_not_equal(path_at(l, i), "b.txt");
    json_decref(l);
    sto_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_then_hybrid),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
