/* The memory store's index in RAM on its own (src/memory/mem_rix.c), with
 * the FTS5 tokenizer of a real SQLite connection: scores against BM25
 * counted here, the bound on its bytes (the least recently searched agent
 * dropped first, and not built again at once), the changes queued while a
 * build runs and replayed onto it, and the store's token counts. The
 * comparison with FTS5 itself is in test_mem.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "memory/mem_rix.h"
#include "util/err.h"

#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

static sqlite3 *g_db;

static fts5_api *api_of(sqlite3 *db)
{
    fts5_api *api = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT fts5(?1)", -1, &st, NULL), SQLITE_OK);
    sqlite3_bind_pointer(st, 1, (void *)&api, "fts5_api_ptr", NULL);
    sqlite3_step(st);
    sqlite3_finalize(st);
    assert_non_null(api);
    return api;
}

static int setup(void **state)
{
    (void)state;
    return sqlite3_open(":memory:", &g_db) == SQLITE_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    sqlite3_close(g_db);
    return 0;
}

/* a build's notes: texts[i] as note base + i */
struct rows {
    const char *const *texts;
    int n, at;
    int64_t base;
    void (*midway)(void *); /* called once, after the first note */
    void *arg;
};

static int next_row(void *ud, int64_t *nid, struct mem_rix_text *t)
{
    struct rows *r = ud;
    if (r->at == 1 && r->midway) r->midway(r->arg);
    if (r->at >= r->n) return 0;
    *nid = r->base + r->at;
    *t = (struct mem_rix_text){{r->texts[r->at], "", "", ""}};
    r->at++;
    return 1;
}

struct got {
    int64_t nid[128];
    double score[128];
    int n;
};

static void on_hit(void *ud, int64_t nid, double score)
{
    struct got *g = ud;
    assert_true(g->n < 128);
    g->nid[g->n] = nid;
    g->score[g->n++] = score;
}

static double score_of(const struct got *g, int64_t nid)
{
    for (int i = 0; i < g->n; i++)
        if (g->nid[i] == nid) return g->score[i];
    return 0;
}

static void score(struct mem_rix *r, int64_t slot, const char *words, double idf0, double idf1,
                  struct got *g, int want)
{
    const char *w[2];
    size_t l[2];
    char buf[64];
    snprintf(buf, sizeof buf, "%s", words);
    char *sp = strchr(buf, ' ');
    int n = 1;
    w[0] = buf;
    if (sp) {
        *sp = 0;
        w[1] = sp + 1;
        n = 2;
    }
    for (int i = 0; i < n; i++) l[i] = strlen(w[i]);
    double idf[2] = {idf0, idf1};
    memset(g, 0, sizeof *g);
    struct mem_rix_query q;
    int rc = mem_rix_query(r, w, l, n, &q);
    if (!rc) rc = mem_rix_score(r, slot, &q, idf, on_hit, g);
    assert_int_equal(rc, want);
}

static void test_scores_and_changes(void **state)
{
    (void)state;
    struct mem_rix *r = NULL;
    assert_int_equal(mem_rix_open(&r, api_of(g_db), 1 << 20), 0);
    /* porter stemming: "Meetings" and "meeting" are one token */
    const char *texts[] = {"Meetings about the budget", "budget budget review", "lunch"};
    struct rows rows = {.texts = texts, .n = 3, .base = 100};
    struct got g;
    score(r, 1, "meeting", 1.0, 0, &g, AIOS_ENOTFOUND); /* no index yet */
    assert_true(mem_rix_wanted(r, 1));
    assert_int_equal(mem_rix_build(r, 1, next_row, &rows), 0);
    assert_false(mem_rix_wanted(r, 1));
    score(r, 1, "meeting budget", 2.0, 0.5, &g, 0);
    assert_int_equal(g.n, 2);
    assert_true(score_of(&g, 100) == mem_rank_term(2.0, 1) + mem_rank_term(0.5, 1));
    assert_true(score_of(&g, 101) == mem_rank_term(0.5, 2));
    /* a word of two tokens is FTS5's (a phrase) */
    score(r, 1, "e\xc2\xa0mail", 1.0, 0, &g, AIOS_EINVAL);
    /* so is one whose second token is too long to be kept: still two
     * tokens (fuzz retrieve found it matching "meetings" alone) */
    char w[128] = "meetings\xc2\xa0";
    memset(w + strlen(w), 'x', 80);
    const char *wp[1] = {w};
    size_t wl[1] = {strlen(w)};
    struct mem_rix_query q;
    assert_int_equal(mem_rix_query(r, wp, wl, 1, &q), AIOS_EINVAL);
    /* changed, removed and added notes */
    struct mem_rix_text lunch = {{"lunch", "", "", ""}}, talk = {{"budget talk", "", "", ""}};
    mem_rix_set(r, 1, 102, &lunch, &talk);
    mem_rix_set(r, 1, 100, NULL, NULL);
    mem_rix_set(r, 1, 103, NULL, &talk);
    score(r, 1, "budget lunch", 1.0, 1.0, &g, 0);
    assert_int_equal(g.n, 3); /* 101, 102 and 103; 100 gone, nothing holds "lunch" */
    assert_true(score_of(&g, 100) == 0 && score_of(&g, 102) == mem_rank_term(1.0, 1) &&
                score_of(&g, 103) == mem_rank_term(1.0, 1));
    /* another agent's notes are another index */
    score(r, 2, "budget", 1.0, 0, &g, AIOS_ENOTFOUND);
    mem_rix_close(r);
}

/* changes committed while a build reads its snapshot are replayed onto it */
struct mid {
    struct mem_rix *r;
};

static void change_midway(void *arg)
{
    struct mid *m = arg;
    struct mem_rix_text t = {{"zebra", "", "", ""}};
    mem_rix_set(m->r, 1, 200, NULL, &t);  /* committed after the snapshot: added */
    mem_rix_set(m->r, 1, 10, NULL, NULL); /* the snapshot's note 10 removed */
}

static void test_build_replays_changes(void **state)
{
    (void)state;
    struct mem_rix *r = NULL;
    assert_int_equal(mem_rix_open(&r, api_of(g_db), 1 << 20), 0);
    const char *texts[] = {"zebra one", "zebra two", "zebra three"};
    struct mid m = {r};
    struct rows rows = {.texts = texts, .n = 3, .base = 10, .midway = change_midway, .arg = &m};
    assert_int_equal(mem_rix_build(r, 1, next_row, &rows), 0);
    struct got g;
    score(r, 1, "zebra", 1.0, 0, &g, 0);
    assert_int_equal(g.n, 3);
    assert_true(score_of(&g, 10) == 0 && score_of(&g, 11) > 0 && score_of(&g, 12) > 0 &&
                score_of(&g, 200) > 0);
    /* a change that cannot be followed during a build: the build is not kept */
    struct rows again = {.texts = texts, .n = 3, .base = 10};
    mem_rix_lost(r, 1); /* drops the index */
    score(r, 1, "zebra", 1.0, 0, &g, AIOS_ENOTFOUND);
    assert_int_equal(mem_rix_build(r, 1, next_row, &again), 0);
    score(r, 1, "zebra", 1.0, 0, &g, 0);
    assert_int_equal(g.n, 3);
    mem_rix_close(r);
}

static void test_bound_drops_least_recent(void **state)
{
    (void)state;
    char text[64][48];
    const char *texts[64];
    for (int i = 0; i < 64; i++) {
        snprintf(text[i], sizeof text[i], "word%d common thing%d", i, i * 7);
        texts[i] = text[i];
    }
    struct mem_rix *r = NULL;
    size_t bytes;
    int n_index;
    /* room for about two agents' indexes */
    struct rows probe = {.texts = texts, .n = 64, .base = 1};
    assert_int_equal(mem_rix_open(&r, api_of(g_db), 64 << 20), 0);
    assert_int_equal(mem_rix_build(r, 1, next_row, &probe), 0);
    mem_rix_stats(r, &bytes, &n_index);
    assert_int_equal(n_index, 1);
    size_t one = bytes;
    mem_rix_close(r);
    assert_int_equal(mem_rix_open(&r, api_of(g_db), one * 2 + one / 2), 0);
    struct got g;
    for (int64_t slot = 1; slot <= 2; slot++) {
        struct rows rows = {.texts = texts, .n = 64, .base = slot * 1000};
        assert_int_equal(mem_rix_build(r, slot, next_row, &rows), 0);
    }
    score(r, 1, "common", 1.0, 0, &g, 0); /* agent 1 searched last */
    struct rows rows3 = {.texts = texts, .n = 64, .base = 3000};
    assert_int_equal(mem_rix_build(r, 3, next_row, &rows3), 0);
    mem_rix_stats(r, &bytes, &n_index);
    assert_int_equal(n_index, 2);
    assert_true(bytes <= one * 2 + one / 2);
    score(r, 2, "common", 1.0, 0, &g, AIOS_ENOTFOUND); /* agent 2 was dropped */
    score(r, 1, "common", 1.0, 0, &g, 0);
    assert_false(mem_rix_wanted(r, 2)); /* and is not built again at once */
    /* an index over half of the bound is not built, nor tried again at once */
    mem_rix_close(r);
    assert_int_equal(mem_rix_open(&r, api_of(g_db), one), 0);
    struct rows big = {.texts = texts, .n = 64, .base = 1};
    assert_int_equal(mem_rix_build(r, 1, next_row, &big), AIOS_EBUSY);
    assert_false(mem_rix_wanted(r, 1));
    mem_rix_stats(r, &bytes, &n_index);
    assert_int_equal(n_index, 0);
    assert_int_equal(bytes, 0);
    mem_rix_close(r);
}

/* the store's token counts: read from FTS5's vocabulary, then changed by
 * every note set; IDFs from them */
static void test_counts(void **state)
{
    (void)state;
    assert_int_equal(sqlite3_exec(g_db,
                                  "CREATE TABLE notes(nid INTEGER PRIMARY KEY, content TEXT);"
                                  "CREATE VIRTUAL TABLE notes_fts USING fts5(content,"
                                  " tokenize='porter unicode61');"
                                  "INSERT INTO notes VALUES(1, 'apple pie'), (2, 'apple apple tart'),"
                                  " (3, 'tart');"
                                  "INSERT INTO notes_fts(rowid, content) SELECT nid, content FROM notes;",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    struct mem_rix *r = NULL;
    assert_int_equal(mem_rix_open(&r, api_of(g_db), 1 << 20), 0);
    double idf, df;
    assert_false(mem_rix_idf(r, "apple", 5, &idf, &df)); /* not loaded */
    assert_int_equal(mem_rix_load_counts(r, g_db), 0);
    assert_true(mem_rix_idf(r, "Apples", 6, &idf, &df));
    assert_true(df == 2 && idf == mem_idf(3, 2));
    assert_true(mem_rix_idf(r, "kiwi", 4, &idf, &df) && df == 0 && idf == mem_idf(3, 0));
    /* a note's distinct tokens in and out */
    struct mem_rix_text pie = {{"apple pie", "", "", ""}}, kiwi = {{"kiwi kiwi apple", "", "", ""}};
    mem_rix_set(r, 9, 1, &pie, &kiwi);
    assert_true(mem_rix_idf(r, "kiwi", 4, &idf, &df) && df == 1 && idf == mem_idf(3, 1));
    assert_true(mem_rix_idf(r, "pie", 3, &idf, &df) && df == 0);
    assert_true(mem_rix_idf(r, "apple", 5, &idf, &df) && df == 2);
    mem_rix_set(r, 9, 4, NULL, &pie); /* a fourth note */
    assert_true(mem_rix_idf(r, "pie", 3, &idf, &df) && df == 1 && idf == mem_idf(4, 1));
    /* several tokens: not answered here */
    assert_false(mem_rix_idf(r, "a\xc2\xa0" "b", 4, &idf, &df));
    /* a lost change: the counts are no longer used */
    mem_rix_lost(r, 9);
    assert_false(mem_rix_idf(r, "pie", 3, &idf, &df));
    mem_rix_close(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scores_and_changes),
        cmocka_unit_test(test_build_replays_changes),
        cmocka_unit_test(test_bound_drops_least_recent),
        cmocka_unit_test(test_counts),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
