/* Unit tests for hybrid (BM25 + cosine) retrieval in src/memory with a real
 * embedding model: the `embed` test model (random weights, real tokenizer,
 * mean pooling) run by llama.cpp. Random weights make similarity
 * meaningless, so the tests check what can fail: a note whose text equals
 * the query has cosine 1 and ranks first; a query sharing no word with any
 * note still returns notes (the vector part) with BM25 0; every score is
 * in range and equals the documented mix of its parts, best first; an
 * update re-embeds; namespaces hold; notes stored before a model was
 * configured are back-filled; without a model the answer is plain BM25
 * (no bm25/cosine fields). Real SQLite files in a temporary directory. */
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

#include "kernel/config.h"
#include "llm/embed.h"
#include "llm/testmodel.h"
#include "memory/mem.h"
#include "util/err.h"

static char g_dir[64];
static struct emb *g_emb;
#define WEIGHT 0.6

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/aios-memembed-XXXXXX");
    if (!mkdtemp(g_dir)) return -1;
    char err[512] = "", *path = NULL;
    if (testmodel_cached(TESTMODEL_SHAPE_EMBED, &path, err, sizeof err)) {
        fprintf(stderr, "embed test model: %s\n", err);
        return -1;
    }
    struct emb_opts o = {.model = path, .pooling = -1, .threads = 1, .n_ctx = 128, .weight = WEIGHT};
    int rc = emb_open(&g_emb, &o, err, sizeof err);
    free(path);
    if (rc) fprintf(stderr, "emb_open: %s\n", err);
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

static struct mem_manager *open_mgr(const char *db, struct emb *e)
{
    char p[128];
    snprintf(p, sizeof p, "%s/%s", g_dir, db);
    struct mem_opts o = {.quota_bytes = 1 << 20, .max_note_bytes = 4096, .full_sync = false,
                         .agentic_max_tokens = 4, .workers = 1, .db_path = p, .emb = e};
    struct mem_manager *m = NULL;
    char err[256] = "";
    if (mem_manager_open(&m, &o, NULL, err, sizeof err)) fail_msg("open: %s", err);
    return m;
}

static json_t *exec_ok(struct mem_manager *m, const char *agent, const char *op, json_t *p)
{
    json_t *r = NULL;
    int st = 0;
    char err[512] = "";
    int rc = mem_manager_exec_json(m, agent, op, p, &r, &st, err, sizeof err);
    json_decref(p);
    if (rc) fail_msg("%s: %d %s", op, st, err);
    return r;
}

static void add(struct mem_manager *m, const char *agent, const char *id, const char *text)
{
    json_decref(exec_ok(m, agent, "add_memory", json_pack("{s:s,s:s}", "memory_id", id, "content", text)));
}

static json_t *retrieve(struct mem_manager *m, const char *agent, const char *q, int k)
{
    json_t *r = exec_ok(m, agent, "retrieve_memory", json_pack("{s:s,s:i}", "content", q, "k", k));
    json_t *l = json_incref(json_object_get(r, "search_results"));
    json_decref(r);
    return l;
}

static const char *id_at(json_t *l, size_t i)
{
    return json_string_value(json_object_get(json_array_get(l, i), "memory_id"));
}

static double num(json_t *l, size_t i, const char *k)
{
    json_t *v = json_object_get(json_array_get(l, i), k);
    if (!json_is_number(v)) fail_msg("result %zu has no number '%s'", i, k);
    return json_number_value(v);
}

/* every result: parts in range, score = the documented mix, best first */
static void check_scores(json_t *l)
{
    double best = 0;
    for (size_t i = 0; i < json_array_size(l); i++)
        if (num(l, i, "bm25") > best) best = num(l, i, "bm25");
    for (size_t i = 0; i < json_array_size(l); i++) {
        double s = num(l, i, "score"), b = num(l, i, "bm25"), c = num(l, i, "cosine");
        assert_true(c >= -1.000001 && c <= 1.000001);
        assert_true(b >= 0);
        assert_true(s >= 0 && s <= 1.000001);
        double want = WEIGHT * (c > 0 ? c : 0) + (1 - WEIGHT) * (best > 0 ? b / best : 0);
        if (fabs(s - want) > 1e-9) fail_msg("result %zu: score %.12f, mix %.12f", i, s, want);
        if (i) assert_true(num(l, i - 1, "score") >= s);
    }
}

static void test_hybrid(void **state)
{
    (void)state;
    struct mem_manager *m = open_mgr("h.db", g_emb);
    add(m, "alice", "n1", "The scheduler preempts long prefills of big prompts.");
    add(m, "alice", "n2", "Quarterly budget review with finance on Tuesday.");
    add(m, "alice", "n3", "Grandmother's recipe for plum dumplings.");
    add(m, "alice", "n4", "Budget spreadsheet template for the finance team.");

    /* the query is n3's text: cosine exactly 1 (same text, same vector) */
    json_t *l = retrieve(m, "alice", "Grandmother's recipe for plum dumplings.", 4);
    assert_int_equal(json_array_size(l), 4);
    assert_string_equal(id_at(l, 0), "n3");
    assert_true(fabs(num(l, 0, "cosine") - 1.0) < 1e-5);
    check_scores(l);
    json_decref(l);

    /* no word of the query is in any note: BM25 finds nothing, the vector
     * part still returns notes, each with bm25 0 */
    l = retrieve(m, "alice", "xylophone quasar", 2);
    assert_int_equal(json_array_size(l), 2);
    for (size_t i = 0; i < 2; i++) assert_true(num(l, i, "bm25") == 0.0);
    check_scores(l);
    json_decref(l);

    /* a keyword query: BM25 parts present and the order is the mix */
    l = retrieve(m, "alice", "budget finance", 4);
    assert_int_equal(json_array_size(l), 4);
    check_scores(l);
    int with_bm25 = 0;
    for (size_t i = 0; i < 4; i++) with_bm25 += num(l, i, "bm25") > 0;
    assert_int_equal(with_bm25, 2); /* n2 and n4 */
    json_decref(l);

    /* update re-embeds: the new text is now the identical one */
    json_decref(exec_ok(m, "alice", "update_memory",
                        json_pack("{s:s,s:s}", "memory_id", "n1", "content", "Violet tulips bloom in April.")));
    l = retrieve(m, "alice", "Violet tulips bloom in April.", 1);
    assert_string_equal(id_at(l, 0), "n1");
    assert_true(fabs(num(l, 0, "cosine") - 1.0) < 1e-5);
    json_decref(l);
    l = retrieve(m, "alice", "The scheduler preempts long prefills of big prompts.", 4);
    for (size_t i = 0; i < json_array_size(l); i++) assert_true(num(l, i, "cosine") < 0.9999);
    json_decref(l);

    /* namespaces: bob's identical note is never in alice's results */
    add(m, "bob", "b1", "Grandmother's recipe for plum dumplings.");
    l = retrieve(m, "alice", "Grandmother's recipe for plum dumplings.", 10);
    assert_int_equal(json_array_size(l), 4);
    for (size_t i = 0; i < 4; i++) assert_int_equal(id_at(l, i)[0], 'n');
    json_decref(l);
    l = retrieve(m, "bob", "Budget spreadsheet", 10);
    assert_int_equal(json_array_size(l), 1);
    assert_string_equal(id_at(l, 0), "b1");
    json_decref(l);
    mem_manager_close(m);
}

static void test_backfill_and_plain(void **state)
{
    (void)state;
    /* notes stored while no model is configured: plain BM25 answers */
    struct mem_manager *m = open_mgr("b.db", NULL);
    add(m, "carol", "c1", "Copper kettles whistle loudly.");
    add(m, "carol", "c2", "Satellites orbit above the clouds.");
    json_t *l = retrieve(m, "carol", "kettles", 5);
    assert_int_equal(json_array_size(l), 1);
    assert_null(json_object_get(json_array_get(l, 0), "cosine"));
    assert_null(json_object_get(json_array_get(l, 0), "bm25"));
    json_decref(l);
    l = retrieve(m, "carol", "xylophone", 5); /* no shared word: nothing, as before */
    assert_int_equal(json_array_size(l), 0);
    json_decref(l);
    mem_manager_close(m);

    /* the same database with the model: the old notes get vectors */
    m = open_mgr("b.db", g_emb);
    l = retrieve(m, "carol", "Satellites orbit above the clouds.", 5);
    assert_int_equal(json_array_size(l), 2);
    assert_string_equal(id_at(l, 0), "c2");
    assert_true(fabs(num(l, 0, "cosine") - 1.0) < 1e-5);
    assert_true(num(l, 1, "cosine") < 0.9999);
    check_scores(l);
    json_decref(l);
    mem_manager_close(m);
}

/* auto_inject's text: best notes first, within the estimated budget */
static void test_inject_text(void **state)
{
    (void)state;
    const char *notes[] = {"My favourite colour is teal.", "The cat is called Miso.",
                           "A third note that is rather long and will not fit the budget at all."};
    size_t used = 0;
    char *t = mem_inject_text(notes, 3, 40, &used); /* 120 bytes */
    assert_non_null(t);
    assert_int_equal(used, 2);
    assert_string_equal(t, "Notes from your memory that may be relevant:\n- My favourite colour is "
                           "teal.\n- The cat is called Miso.");
    assert_true(mem_inject_est_tokens(strlen(t)) <= 40);
    free(t);
    /* a first note alone too long: its head, cut at a character boundary */
    const char *big[] = {"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                         "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"};
    t = mem_inject_text(big, 1, 17, &used); /* 51 bytes: header 44 + "\n- " + 4 bytes */
    assert_non_null(t);
    assert_int_equal(used, 1);
    assert_true(strlen(t) <= 51);
    assert_int_equal(strlen(t) % 2, 1); /* 47 + whole 2-byte characters */
    free(t);
    assert_null(mem_inject_text(notes, 0, 100, &used));
    assert_null(mem_inject_text(notes, 3, 15, &used)); /* no room after the header */
    assert_int_equal(used, 0);
}

static int mem_cfg(const char *yaml, struct mem_opts *o, char *err)
{
    struct aios_config cfg;
    char e2[256];
    memset(&cfg, 0, sizeof cfg);
    assert_int_equal(config_load_string(&cfg, yaml, strlen(yaml), e2, sizeof e2), 0);
    err[0] = 0;
    int rc = mem_opts_from_config(&cfg, o, err, 256);
    config_free(&cfg);
    mem_opts_free(o);
    return rc;
}

static void test_inject_config(void **state)
{
    (void)state;
    struct mem_opts o;
    char err[256];
    assert_int_equal(mem_cfg("memory: {auto_inject: true}\n", &o, err), 0);
    assert_true(o.auto_inject);
    assert_int_equal(o.inject_k, MEM_DEFAULT_INJECT_K);
    assert_int_equal(o.inject_max_tokens, MEM_DEFAULT_INJECT_TOKENS);
    assert_int_equal(mem_cfg("memory: {auto_inject: {k: 5, max_tokens: 100}}\n", &o, err), 0);
    assert_true(o.auto_inject);
    assert_int_equal(o.inject_k, 5);
    assert_int_equal(o.inject_max_tokens, 100);
    assert_int_equal(mem_cfg("memory: {auto_inject: {enabled: false}}\n", &o, err), 0);
    assert_false(o.auto_inject);
    assert_int_equal(mem_cfg("memory: {auto_inject: {k: 0}}\n", &o, err), AIOS_ECONFIG);
    assert_non_null(strstr(err, "memory.auto_inject.k"));
    assert_int_equal(mem_cfg("memory: {auto_inject: {budget: 9}}\n", &o, err), AIOS_ECONFIG);
    assert_non_null(strstr(err, "memory.auto_inject.budget: unknown key"));
    assert_int_equal(mem_cfg("memory: {auto_inject: yes please}\n", &o, err), AIOS_ECONFIG);
    assert_non_null(strstr(err, "memory.auto_inject"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inject_text),
        cmocka_unit_test(test_inject_config),
        cmocka_unit_test(test_hybrid),
        cmocka_unit_test(test_backfill_and_plain),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
