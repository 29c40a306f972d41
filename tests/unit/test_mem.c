/* Unit tests for src/memory: the SQLite store (round trip of every field,
 * duplicate ids, update/delete/not-found, BM25 search scoped to one agent,
 * retrieval counting, persistence across reopen, the FTS query builder) and
 * the manager (working-set eviction order by LRU-K and fault-back with
 * nothing lost, namespaces, parameter errors, agentic analysis without a
 * model). Real SQLite files in a temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "memory/mem.h"
#include <sqlite3.h>
#include "util/err.h"

static char g_dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/aios-mem-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static char *path_in(const char *name)
{
    static char p[128];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    return p;
}

static struct mem_note *mk(const char *id, const char *content)
{
    struct mem_note *n = mem_note_new();
    n->id = strdup(id);
    n->content = strdup(content);
    mem_ts_now(n->timestamp);
    memcpy(n->last_accessed, n->timestamp, sizeof n->timestamp);
    return n;
}

static void test_fts_query(void **state)
{
    (void)state;
    char *q = mem_fts_query("cat, \"dog\" OR fish* -x NEAR(");
    assert_string_equal(q, "\"cat\" OR \"dog\" OR \"fish\" OR \"x\" OR \"NEAR\"");
    free(q);
    /* stop words go, unless nothing else is left */
    q = mem_fts_query("When is THE launch review?");
    assert_string_equal(q, "\"launch\" OR \"review\"");
    free(q);
    q = mem_fts_query("to be or not to be");
    assert_string_equal(q, "\"to\" OR \"be\" OR \"or\" OR \"not\" OR \"to\" OR \"be\"");
    free(q);
    q = mem_fts_query(" ,.;!? ");
    assert_string_equal(q, "");
    free(q);
    q = mem_fts_query("café über");
    assert_string_equal(q, "\"café\" OR \"über\"");
    free(q);
}

static void test_store_round_trip(void **state)
{
    (void)state;
    char err[256] = "";
    struct mem_store *s = NULL;
    assert_int_equal(mem_store_open(&s, path_in("rt.db"), false, err, sizeof err), 0);
    struct mem_note *n = mk("n1", "Alice likes green tea");
    json_array_append_new(n->keywords, json_string("tea"));
    json_array_append_new(n->tags, json_string("preferences"));
    json_array_append_new(n->links, json_string("n0"));
    free(n->category);
    n->category = strdup("Personal");
    free(n->context);
    n->context = strdup("drinks");
    n->retrieval_count = 3;
    json_object_set_new(n->extra, "priority", json_string("high"));
    assert_int_equal(mem_store_insert(s, "a", n), 0);
    assert_int_equal(mem_store_insert(s, "a", n), MEM_EEXISTS);
    assert_int_equal(mem_store_insert(s, "b", n), 0); /* same id, other namespace */

    struct mem_note *g = NULL;
    assert_int_equal(mem_store_get(s, "a", "n1", &g), 0);
    assert_string_equal(g->content, n->content);
    assert_true(json_equal(g->keywords, n->keywords));
    assert_true(json_equal(g->tags, n->tags));
    assert_true(json_equal(g->links, n->links));
    assert_true(json_equal(g->extra, n->extra));
    assert_string_equal(g->category, "Personal");
    assert_string_equal(g->context, "drinks");
    assert_string_equal(g->timestamp, n->timestamp);
    assert_int_equal(g->retrieval_count, 3);
    mem_note_free(g);
    assert_int_equal(mem_store_get(s, "a", "zz", &g), AIOS_ENOTFOUND);
    assert_int_equal(mem_store_get(s, "c", "n1", &g), AIOS_ENOTFOUND);

    free(n->content);
    n->content = strdup("Alice now prefers black coffee");
    assert_int_equal(mem_store_update(s, "a", n), 0);
    assert_int_equal(mem_store_get(s, "a", "n1", &g), 0);
    assert_string_equal(g->content, "Alice now prefers black coffee");
    mem_note_free(g);
    assert_int_equal(mem_store_get(s, "b", "n1", &g), 0);
    assert_string_equal(g->content, "Alice likes green tea"); /* b's copy untouched */
    mem_note_free(g);

    /* the FTS index follows the update */
    struct mem_hit *h = NULL;
    size_t nh = 0;
    assert_int_equal(mem_store_search(s, "a", "coffee", 5, &h, &nh), 0);
    assert_int_equal(nh, 1);
    assert_true(h[0].score > 0);
    mem_hits_free(h, nh);
    assert_int_equal(mem_store_search(s, "a", "green", 5, &h, &nh), 0);
    assert_int_equal(nh, 0);
    mem_hits_free(h, nh);

    const char *ids[] = {"n1"};
    assert_int_equal(mem_store_touch(s, "a", ids, 1, "209901010000"), 0);
    assert_int_equal(mem_store_get(s, "a", "n1", &g), 0);
    assert_int_equal(g->retrieval_count, 4);
    assert_string_equal(g->last_accessed, "209901010000");
    mem_note_free(g);

    assert_int_equal(mem_store_delete(s, "a", "n1"), 0);
    assert_int_equal(mem_store_delete(s, "a", "n1"), AIOS_ENOTFOUND);
    assert_int_equal(mem_store_search(s, "a", "coffee", 5, &h, &nh), 0);
    assert_int_equal(nh, 0);
    mem_hits_free(h, nh);
    long long c = -1;
    assert_int_equal(mem_store_count(s, "b", &c), 0);
    assert_int_equal(c, 1);
    mem_note_free(n);
    mem_store_close(s);

    /* durable: a new connection on the same file sees b's note */
    assert_int_equal(mem_store_open(&s, path_in("rt.db"), true, err, sizeof err), 0);
    assert_int_equal(mem_store_get(s, "b", "n1", &g), 0);
    mem_note_free(g);
    mem_store_close(s);
}

static void test_store_search_ranking_and_scope(void **state)
{
    (void)state;
    char err[256] = "";
    struct mem_store *s = NULL;
    assert_int_equal(mem_store_open(&s, path_in("rank.db"), false, err, sizeof err), 0);
    const char *texts[] = {"the kernel schedules agents", "agents share the kernel memory",
                           "bananas are yellow", "apples and pears", "kernel kernel kernel panic",
                           "rivers flow to the sea", "mountains are tall", "clouds drift slowly"};
    struct mem_note *ns[8];
    char id[8];
    for (int i = 0; i < 8; i++) {
        snprintf(id, sizeof id, "t%d", i);
        ns[i] = mk(id, texts[i]);
    }
    assert_int_equal(mem_store_insert_many(s, "a", ns, 8), 0);
    struct mem_note *other = mk("secret", "kernel kernel kernel kernel secret of agent b");
    assert_int_equal(mem_store_insert(s, "b", other), 0);
    struct mem_hit *h = NULL;
    size_t nh = 0;
    assert_int_equal(mem_store_search(s, "a", "kernel", 10, &h, &nh), 0);
    assert_int_equal(nh, 3);
    assert_string_equal(h[0].note->id, "t4"); /* most occurrences */
    for (size_t i = 0; i < nh; i++) {
        assert_string_not_equal(h[i].note->id, "secret");
        if (i) assert_true(h[i - 1].score >= h[i].score);
    }
    mem_hits_free(h, nh);
    assert_int_equal(mem_store_search(s, "a", "kernel", 1, &h, &nh), 0);
    assert_int_equal(nh, 1);
    assert_string_equal(h[0].note->id, "t4"); /* b's better match takes no slot */
    mem_hits_free(h, nh);
    /* porter stemming: "scheduling" finds "schedules" */
    assert_int_equal(mem_store_search(s, "a", "scheduling", 5, &h, &nh), 0);
    assert_int_equal(nh, 1);
    assert_string_equal(h[0].note->id, "t0");
    mem_hits_free(h, nh);
    /* FTS syntax in the query is just words */
    assert_int_equal(mem_store_search(s, "a", "\"NEAR(* ) OR", 5, &h, &nh), 0);
    mem_hits_free(h, nh);
    for (int i = 0; i < 8; i++) mem_note_free(ns[i]);
    mem_note_free(other);
    mem_store_close(s);
}

/* ---- manager ---- */

static json_t *exec_ok(struct mem_manager *m, const char *agent, const char *op, const char *params)
{
    json_t *p = json_loads(params, 0, NULL), *r = NULL;
    assert_non_null(p);
    int st = 0;
    char err[512] = "";
    int rc = mem_manager_exec_json(m, agent, op, p, &r, &st, err, sizeof err);
    json_decref(p);
    if (rc) fail_msg("%s %s: %d %s", op, params, st, err);
    assert_string_equal(json_string_value(json_object_get(r, "response_class")), "memory");
    assert_true(json_is_true(json_object_get(r, "success")));
    return r;
}

static void exec_err(struct mem_manager *m, const char *agent, const char *op, const char *params,
                     int status, const char *needle)
{
    json_t *p = json_loads(params, 0, NULL), *r = NULL;
    assert_non_null(p);
    int st = 0;
    char err[512] = "";
    int rc = mem_manager_exec_json(m, agent, op, p, &r, &st, err, sizeof err);
    json_decref(p);
    assert_true(rc < 0);
    assert_null(r);
    if (st != status) fail_msg("%s %s: expected %d, got %d (%s)", op, params, status, st, err);
    if (!strstr(err, needle)) fail_msg("message \"%s\" lacks \"%s\"", err, needle);
}

static json_t *stats(struct mem_manager *m, const char *agent)
{
    json_t *r = exec_ok(m, agent, "memory_stats", "{}");
    json_t *md = json_incref(json_object_get(r, "metadata"));
    json_decref(r);
    return md;
}

static void assert_order(json_t *md, const char *const *ids, size_t n)
{
    json_t *o = json_object_get(md, "eviction_order");
    if (json_array_size(o) != n) {
        char *s = json_dumps(o, 0);
        fail_msg("eviction order %s, expected %zu ids", s, n);
    }
    for (size_t i = 0; i < n; i++)
        assert_string_equal(json_string_value(json_array_get(o, i)), ids[i]);
}

static struct mem_manager *open_mgr(const char *db, size_t quota)
{
    struct mem_opts o = {.quota_bytes = quota, .max_note_bytes = 4096, .full_sync = false,
                         .agentic_max_tokens = 4, .workers = 1, .db_path = path_in(db)};
    struct mem_manager *m = NULL;
    char err[256] = "";
    if (mem_manager_open(&m, &o, NULL, err, sizeof err)) fail_msg("open: %s", err);
    return m;
}

static void add(struct mem_manager *m, const char *agent, const char *id)
{
    char p[256];
    snprintf(p, sizeof p, "{\"memory_id\":\"%s\",\"content\":\"note %s about topic%s\"}", id, id, id);
    json_decref(exec_ok(m, agent, "add_memory", p));
}

static void get(struct mem_manager *m, const char *agent, const char *id)
{
    char p[128], want[128];
    snprintf(p, sizeof p, "{\"memory_id\":\"%s\"}", id);
    snprintf(want, sizeof want, "note %s about topic%s", id, id);
    json_t *r = exec_ok(m, agent, "get_memory", p);
    assert_string_equal(json_string_value(json_object_get(r, "content")), want);
    json_decref(r);
}

/* The store's top k (a scan with a bounded heap, pruned by the words'
 * bounds, mem_store.c) against BM25 computed here from the corpus itself:
 * 3 agents' notes interleaved, words repeated (term frequency 1 to 3),
 * queries of 1 to 6 words, k from 1 to more than the matches. Same notes,
 * same order (ties: older note first), same scores. Twice: with skewed
 * words, and with three words in every note besides (IDF near 0, as in a
 * store where every note says "meeting"), which every query holds, so that
 * the pruned scan reads the notes of the rare words only, and must still
 * find the notes that hold only common words when the rare ones are too
 * few. */
#define REF_WORDS 24
#define REF_NOTES 1200 /* over IDF_MIN_ROWS: the IDF cache is used */
static unsigned ref_rand(unsigned *x)
{
    *x = *x * 1103515245u + 12345u;
    return (*x >> 16) & 0x7fff;
}

static void topk_reference(const char *db, bool common)
{
    char err[256] = "";
    struct mem_store *s = NULL;
    assert_int_equal(mem_store_open(&s, path_in(db), false, err, sizeof err), 0);
    static int tf[REF_NOTES][REF_WORDS]; /* occurrences of word w in note i */
    memset(tf, 0, sizeof tf);
    int df[REF_WORDS] = {0};
    unsigned seed = common ? 11 : 7;
    char text[512], id[16];
    for (int i = 0; i < REF_NOTES; i++) {
        size_t o = 0;
        if (common) {
            for (int w = 0; w < 3; w++) {
                o += (size_t)snprintf(text + o, sizeof text - o, "w%dx ", w);
                df[w]++;
                tf[i][w]++;
            }
        }
        int words = (common ? 0 : 1) + (int)(ref_rand(&seed) % 6);
        for (int j = 0; j < words; j++) {
            /* skewed: low word numbers are common */
            int w = (int)(ref_rand(&seed) % REF_WORDS);
            w = (int)(ref_rand(&seed) % (unsigned)(w + 1));
            int rep = 1 + (int)(ref_rand(&seed) % 3);
            for (int r = 0; r < rep; r++) o += (size_t)snprintf(text + o, sizeof text - o, "w%dx ", w);
            if (!tf[i][w]) df[w]++;
            tf[i][w] += rep;
        }
        snprintf(id, sizeof id, "n%d", i);
        struct mem_note *n = mk(id, text);
        assert_int_equal(mem_store_insert(s, (const char *[]){"a", "b", "c"}[i % 3], n), 0);
        mem_note_free(n);
    }
    double idf[REF_WORDS];
    for (int w = 0; w < REF_WORDS; w++) {
        double v = log((REF_NOTES - df[w] + 0.5) / (df[w] + 0.5));
        idf[w] = v > 1e-6 ? v : 1e-6;
    }
    for (int qi = 0; qi < 120; qi++) {
        int qw[6], nq = 1 + qi % 6;
        size_t o = 0;
        for (int j = 0; j < nq; j++) {
            qw[j] = common && j < 2 ? j : (int)(ref_rand(&seed) % REF_WORDS);
            for (int t = 0; t < j; t++)
                if (qw[t] == qw[j]) qw[j] = (qw[j] + 1) % REF_WORDS, t = -1;
            o += (size_t)snprintf(text + o, sizeof text - o, "w%dx ", qw[j]);
        }
        const char *agent = (const char *[]){"a", "b", "c"}[qi % 3];
        int k = (int[]){1, 5, 20, 400, 3}[qi % 5];
        /* the reference: every note of the agent that matches, by score,
         * then by insertion order */
        int ref[REF_NOTES / 3 + 1], nref = 0;
        double score[REF_NOTES] = {0};
        for (int i = qi % 3; i < REF_NOTES; i += 3) {
            for (int j = 0; j < nq; j++) {
                int f = tf[i][qw[j]];
                if (f) score[i] += idf[qw[j]] * (f * 2.2) / (f + 1.2);
            }
            if (score[i] <= 0) continue;
            int at = nref++;
            while (at > 0 && score[ref[at - 1]] < score[i] - 1e-9) {
                ref[at] = ref[at - 1];
                at--;
            }
            ref[at] = i;
        }
        struct mem_hit *h = NULL;
        size_t nh = 0;
        assert_int_equal(mem_store_search(s, agent, text, k, &h, &nh), 0);
        assert_int_equal(nh, nref < k ? nref : k);
        for (size_t i = 0; i < nh; i++) {
            snprintf(id, sizeof id, "n%d", ref[i]);
            /* equal scores in the reference may differ in the last bits */
            if (strcmp(h[i].note->id, id) != 0)
                assert_true(fabs(score[atoi(h[i].note->id + 1)] - score[ref[i]]) < 1e-9);
            assert_true(fabs(h[i].score - score[ref[i]]) < 1e-9);
        }
        mem_hits_free(h, nh);
    }
    mem_store_close(s);
}


/* The index in RAM (mem_rix.c) against FTS5, in one store: every
 * retrieval answered from it must be the FTS5 scan's answer (same notes,
 * same order, the same scores to the bit), after inserts, updates and
 * deletes, and after an index built while another thread kept writing
 * (the writes committed during the build are replayed onto it). A word of
 * two tokens (a no-break space inside it: FTS5 matches a phrase) goes to
 * FTS5. The words repeat within notes (term frequency 1 to 3). */
#define RIX_WORDS 40
struct rix_writer {
    struct mem_store *s;
    atomic_bool stop;
    atomic_int n;
};

static void rix_text(unsigned *seed, char *text, size_t cap)
{
    size_t o = 0;
    int words = 2 + (int)(ref_rand(seed) % 8);
    for (int j = 0; j < words && o + 40 < cap; j++) {
        int w = (int)(ref_rand(seed) % RIX_WORDS);
        w = (int)(ref_rand(seed) % (unsigned)(w + 1)); /* skewed */
        int rep = 1 + (int)(ref_rand(seed) % 3);
        for (int r = 0; r < rep; r++) {
            if (w == 7) o += (size_t)snprintf(text + o, cap - o, "tw\xc2\xa0o ");
            else o += (size_t)snprintf(text + o, cap - o, "Word%d ", w);
        }
    }
}

static void *rix_write(void *arg)
{
    struct rix_writer *w = arg;
    unsigned seed = 99;
    char text[400], id[32];
    while (!atomic_load(&w->stop)) {
        rix_text(&seed, text, sizeof text);
        int op = (int)(ref_rand(&seed) % 4);
        int nw = atomic_load(&w->n);
        snprintf(id, sizeof id, "w%d", op == 0 ? nw : (int)(ref_rand(&seed) % (unsigned)(nw + 1)));
        if (op == 0) atomic_store(&w->n, nw + 1);
        struct mem_note *n = mk(id, text);
        int rc = op == 3 ? mem_store_delete(w->s, "a", id)
                 : op == 0 ? mem_store_insert(w->s, "a", n) : mem_store_update(w->s, "a", n);
        assert_true(rc == 0 || rc == AIOS_ENOTFOUND || rc == MEM_EEXISTS);
        mem_note_free(n);
    }
    return NULL;
}

static void rix_compare(struct mem_store *s, unsigned *seed, int rounds)
{
    static struct mem_hit a[500], b[500];
    char q[200];
    for (int i = 0; i < rounds; i++) {
        rix_text(seed, q, sizeof q);
        int k = (int[]){1, 5, 500}[i % 3];
        size_t na = 0, nb = 0;
        mem_store_rix_use(s, true);
        assert_int_equal(mem_store_search_ids(s, "a", q, k, a, &na), 0);
        mem_store_rix_use(s, false);
        assert_int_equal(mem_store_search_ids(s, "a", q, k, b, &nb), 0);
        assert_int_equal(na, nb);
        for (size_t j = 0; j < na; j++) {
            assert_int_equal(a[j].nid, b[j].nid);
            assert_true(a[j].score == b[j].score);
        }
    }
    mem_store_rix_use(s, true);
}

static void test_store_ram_index_matches_fts(void **state)
{
    (void)state;
    char err[256] = "", id[32], text[400];
    struct mem_store *s = NULL;
    assert_int_equal(mem_store_open(&s, path_in("rix.db"), false, err, sizeof err), 0);
    unsigned seed = 5;
    for (int i = 0; i < 600; i++) { /* over MEM_RIX_MIN_NOTES, and an agent with few */
        rix_text(&seed, text, sizeof text);
        snprintf(id, sizeof id, "n%d", i);
        struct mem_note *n = mk(id, text);
        assert_int_equal(mem_store_insert(s, i % 50 ? "a" : "small", n), 0);
        mem_note_free(n);
    }
    size_t bytes;
    int n_index;
    mem_store_rix_stats(s, &bytes, &n_index);
    assert_int_equal(n_index, 0);
    rix_compare(s, &seed, 60); /* the first retrieval builds it */
    mem_store_rix_stats(s, &bytes, &n_index);
    assert_int_equal(n_index, 1); /* "a" only: "small" has 12 notes */
    assert_true(bytes > 0);
    /* changes followed after the commit */
    for (int i = 0; i < 300; i++) {
        rix_text(&seed, text, sizeof text);
        snprintf(id, sizeof id, "n%d", (int)(ref_rand(&seed) % 700));
        struct mem_note *n = mk(id, text);
        int op = i % 3, rc = op == 0 ? mem_store_insert(s, "a", n)
                             : op == 1 ? mem_store_update(s, "a", n) : mem_store_delete(s, "a", id);
        assert_true(rc == 0 || rc == AIOS_ENOTFOUND || rc == MEM_EEXISTS);
        mem_note_free(n);
        if (i % 10 == 0) rix_compare(s, &seed, 3);
    }
    mem_store_rix_stats(s, &bytes, &n_index);
    assert_int_equal(n_index, 1);
    /* a write that fails itself (a duplicate id in a bulk insert) is undone
     * whole: nothing for the index to drop */
    struct mem_note *dup[2] = {mk("fresh-1", "Word1 Word5"), mk("n1", "Word1 Word6")};
    assert_int_equal(mem_store_insert_many(s, "a", dup, 2), MEM_EEXISTS);
    mem_note_free(dup[0]);
    mem_note_free(dup[1]);
    mem_store_rix_stats(s, &bytes, &n_index);
    assert_int_equal(n_index, 1);
    rix_compare(s, &seed, 6);
    /* a bulk insert is followed too; the index dropped and rebuilt while
     * another thread writes */
    struct mem_note *bulk[3];
    for (int j = 0; j < 3; j++) {
        snprintf(id, sizeof id, "bulk%d", j);
        bulk[j] = mk(id, "Word1 Word2 Word2 Word39");
    }
    assert_int_equal(mem_store_insert_many(s, "a", bulk, 3), 0);
    for (int j = 0; j < 3; j++) mem_note_free(bulk[j]);
    rix_compare(s, &seed, 6);
    struct rix_writer w = {.s = s};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, rix_write, &w), 0);
    /* six rounds at least, and until the writer has inserted 40 notes */
    for (int round = 0; round < 6 || (atomic_load(&w.n) < 40 && round < 5000); round++) {
        struct mem_note *many[2];
        for (int j = 0; j < 2; j++) {
            snprintf(id, sizeof id, "m%d-%d", round, j);
            many[j] = mk(id, "Word1 Word2 Word2");
        }
        assert_int_equal(mem_store_insert_many(s, "a", many, 2), 0);
        for (int j = 0; j < 2; j++) mem_note_free(many[j]);
        mem_store_rix_drop(s);
        mem_store_rix_stats(s, &bytes, &n_index);
        assert_int_equal(n_index, 0);
        size_t nh;
        struct mem_hit h[5];
        for (int j = 0; j < 20; j++) /* builds, and reads while the writer writes */
            assert_int_equal(mem_store_search_ids(s, "a", "Word3 Word1", 5, h, &nh), 0);
    }
    atomic_store(&w.stop, true);
    pthread_join(t, NULL);
    assert_true(atomic_load(&w.n) >= 40);
    mem_store_rix_stats(s, &bytes, &n_index);
    assert_int_equal(n_index, 1);
    rix_compare(s, &seed, 90);
    /* the token counts followed every change: the same answers, to the
     * bit, from a store opened again (its counts read afresh from FTS5) */
    enum { NQ = 40 };
    static struct mem_hit before[NQ][20], after[20];
    size_t n_before[NQ];
    unsigned qseed = seed;
    char q[200];
    for (int i = 0; i < NQ; i++) {
        rix_text(&qseed, q, sizeof q);
        assert_int_equal(mem_store_search_ids(s, "a", q, 20, before[i], &n_before[i]), 0);
    }
    mem_store_close(s);
    assert_int_equal(mem_store_open(&s, path_in("rix.db"), false, err, sizeof err), 0);
    qseed = seed;
    for (int i = 0; i < NQ; i++) {
        size_t n = 0;
        rix_text(&qseed, q, sizeof q);
        assert_int_equal(mem_store_search_ids(s, "a", q, 20, after, &n), 0);
        assert_int_equal(n, n_before[i]);
        for (size_t j = 0; j < n; j++) {
            assert_int_equal(after[j].nid, before[i][j].nid);
            assert_true(after[j].score == before[i][j].score);
        }
    }
    mem_store_close(s);
}

static void test_store_topk_matches_reference(void **state)
{
    (void)state;
    topk_reference("topk.db", false);
    topk_reference("topk_common.db", true);
}

/* The pruned scan counts the words it did not search for by tokenizing
 * the notes it read (aios_tf): stems, folded accents, words of several
 * tokens ("foo\xe2\x80\x94" "bar": an em dash splits it), repeats across the
 * four text columns, words it cannot count (a token over 64 bytes, more
 * than 8 tokens: the plain scan), and notes too long to tokenize within the budget (the
 * plain scan then), among many notes that hold only the common word. Its
 * top k must be the plain scan's first k: same notes,
 * same order, same scores to the bit (k = 1000 makes every round fall
 * short, so that answer is the plain scan's). */
static void test_store_topk_counted_words(void **state)
{
    (void)state;
    char err[256] = "";
    struct mem_store *s = NULL;
    assert_int_equal(mem_store_open(&s, path_in("counted.db"), false, err, sizeof err), 0);
    static const char *const texts[] = {
        "common running late, runs daily", "common ran a naive test", "common na\xc3\xafve running",
        "common foo\xe2\x80\x94" "bar and bar foo", "common foo bar foo bar", "common bar",
        "common", "common common common running runs run", "common foo\xe2\x80\x94" "bar foo\xe2\x80\x94" "bar",
        "common rareword once", "other words only",
        /* words the pruned scan cannot count: one token longer than its
         * 64-byte buffer, and a word of more than 8 tokens */
        "common xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "common p1\xe2\x80\x94" "p2\xe2\x80\x94" "p3\xe2\x80\x94" "p4\xe2\x80\x94" "p5\xe2\x80\x94" "p6\xe2\x80\x94" "p7\xe2\x80\x94" "p8\xe2\x80\x94" "p9",
    };
    char id[32];
    int n_id = 0;
    for (int rep = 0; rep < 4; rep++)
        for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
            snprintf(id, sizeof id, "n%d", n_id++);
            struct mem_note *n = mk(id, texts[i]);
            json_decref(n->keywords);
            n->keywords = json_pack("[s]", rep % 2 ? "running" : "bar");
            free(n->context);
            n->context = strdup(rep == 3 ? "foo bar context" : "");
            assert_int_equal(mem_store_insert(s, rep == 2 ? "b" : "a", n), 0);
            mem_note_free(n);
        }
    /* many notes with the common word only, so that the other words are
     * rare enough for the pruned scan to read them first */
    struct mem_note *filler[300];
    for (int rep = 0; rep < 2; rep++) {
        for (int i = 0; i < 300; i++) {
            snprintf(id, sizeof id, "f%d", n_id++);
            filler[i] = mk(id, "common filler");
        }
        assert_int_equal(mem_store_insert_many(s, rep ? "a" : "b", filler, 300), 0);
        for (int i = 0; i < 300; i++) mem_note_free(filler[i]);
    }
    /* three notes of 120 KB with the rare word: past the tokenizing budget */
    size_t big = 120 * 1024;
    char *text = malloc(big + 1);
    assert_non_null(text);
    for (size_t o = 0; o < big; o++) text[o] = "common filler "[o % 14];
    memcpy(text + big / 2, " rareword ", 10);
    text[big] = 0;
    for (int i = 0; i < 3; i++) {
        snprintf(id, sizeof id, "big%d", i);
        struct mem_note *n = mk(id, text);
        assert_int_equal(mem_store_insert(s, "a", n), 0);
        mem_note_free(n);
    }
    free(text);
    static const char *const queries[] = {
        "common running", "common foo\xe2\x80\x94" "bar", "common na\xc3\xafve run", "foo\xe2\x80\x94" "bar bar",
        "bar foo common runs", "common rareword", "rareword filler", "context foo", "nothing here",
        "common xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "common p1\xe2\x80\x94" "p2\xe2\x80\x94" "p3\xe2\x80\x94" "p4\xe2\x80\x94" "p5\xe2\x80\x94" "p6\xe2\x80\x94" "p7\xe2\x80\x94" "p8\xe2\x80\x94" "p9",
    };
    for (size_t qi = 0; qi < sizeof queries / sizeof *queries; qi++) {
        struct mem_hit all[1000], top[5];
        size_t n_all = 0;
        assert_int_equal(mem_store_search_ids(s, "a", queries[qi], 1000, all, &n_all), 0);
        for (int k = 1; k <= 5; k++) {
            size_t n_top = 0;
            assert_int_equal(mem_store_search_ids(s, "a", queries[qi], k, top, &n_top), 0);
            assert_int_equal(n_top, n_all < (size_t)k ? n_all : (size_t)k);
            for (size_t i = 0; i < n_top; i++) {
                assert_int_equal(top[i].nid, all[i].nid);
                assert_true(top[i].score == all[i].score);
            }
        }
        if (!strcmp(queries[qi], "nothing here")) assert_int_equal(n_all, 0);
        if (!strcmp(queries[qi], "common running")) assert_true(n_all > 30);
        if (qi >= 9) assert_true(n_all >= 4 && all[0].score > all[n_all - 1].score);
    }
    mem_store_close(s);
}

static int64_t sql_int(const char *db, const char *sql)
{
    sqlite3 *d;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open(path_in(db), &d), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(d, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(d);
    return v;
}

/* the ids of agent's hits for text, joined by spaces */
static void search_ids(struct mem_store *s, const char *agent, const char *text, char *out,
                       size_t len)
{
    struct mem_hit *h = NULL;
    size_t nh = 0;
    assert_int_equal(mem_store_search(s, agent, text, 10, &h, &nh), 0);
    size_t o = 0;
    out[0] = 0;
    for (size_t i = 0; i < nh; i++)
        o += (size_t)snprintf(out + o, len - o, "%s%s", i ? " " : "", h[i].note->id);
    mem_hits_free(h, nh);
}

/* An agent's notes are one range of row ids (slot x 2^32 + 1, + 2, ...),
 * so that a retrieval reads only the caller's part of the index. A
 * database of version 2 (row ids in the order notes came, agents
 * interleaved, the agent a column of the full-text index) is numbered
 * again at open: slots in order of each agent's first note, each agent's
 * notes in the order they were added, their vectors with them (a vector
 * of no note dropped), the index made again; and it answers as before. */
static void test_store_nids_by_agent(void **state)
{
    (void)state;
    char err[256] = "", ids[128];
    struct mem_store *s = NULL;
    assert_int_equal(mem_store_open(&s, path_in("slots.db"), false, err, sizeof err), 0);
    const char *agents[] = {"b", "a", "c"};
    for (int i = 0; i < 9; i++) {
        char id[8];
        snprintf(id, sizeof id, "%s%d", agents[i % 3], i / 3);
        struct mem_note *n = mk(id, i / 3 == 1 ? "apple apple pear" : "apple pear");
        assert_int_equal(mem_store_insert(s, agents[i % 3], n), 0);
        mem_note_free(n);
    }
    mem_store_close(s);
    /* new layout: b's notes are slot 1, a's slot 2; ids in order */
    assert_int_equal(sql_int("slots.db", "PRAGMA user_version"), 3);
    assert_int_equal(sql_int("slots.db", "SELECT count(*) FROM notes n JOIN agent_slot s USING"
                                         " (agent) WHERE n.nid > s.slot * 4294967296 AND n.nid <="
                                         " s.slot * 4294967296 + 3"), 9);
    assert_int_equal(sql_int("slots.db", "SELECT slot FROM agent_slot WHERE agent = 'a'"), 2);

    /* back to version 2: row ids 1..9 in the order of the notes' ids'
     * numbers (as added), the agent column in the index, one vector of
     * a1 and one of no note */
    sqlite3 *d;
    assert_int_equal(sqlite3_open(path_in("slots.db"), &d), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(d,
                     "DROP TRIGGER notes_ai; DROP TRIGGER notes_ad; DROP TRIGGER notes_au;"
                     " DROP TABLE notes_fts; DROP TABLE agent_slot;"
                     " UPDATE notes SET nid = -(1 + 3 * CAST(substr(id, 2) AS INTEGER) +"
                     " (CASE agent WHEN 'b' THEN 0 WHEN 'a' THEN 1 ELSE 2 END));"
                     " UPDATE notes SET nid = -nid;"
                     " INSERT INTO notes_vec(nid, agent, vec) VALUES (5, 'a', x'01'), (77, 'a', x'02');"
                     " CREATE VIRTUAL TABLE notes_fts USING fts5(content, keywords, tags, context,"
                     " agent, content='notes', content_rowid='nid', tokenize='porter unicode61');"
                     " INSERT INTO notes_fts(notes_fts) VALUES('rebuild');"
                     " PRAGMA user_version = 2;",
                     NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(d);
    assert_int_equal(sql_int("slots.db", "SELECT nid FROM notes WHERE id = 'a1'"), 5);

    assert_int_equal(mem_store_open(&s, path_in("slots.db"), false, err, sizeof err), 0);
    /* the same answers: a's notes only, a1 (apple twice) first, then by age */
    search_ids(s, "a", "apple", ids, sizeof ids);
    assert_string_equal(ids, "a1 a0 a2");
    search_ids(s, "c", "pear", ids, sizeof ids);
    assert_string_equal(ids, "c0 c1 c2"); /* pear once in each: by age */
    search_ids(s, "nobody", "apple", ids, sizeof ids);
    assert_string_equal(ids, "");
    /* a new note of a takes the next id of a's range; a new agent a new slot */
    struct mem_note *n = mk("a3", "apple apple apple");
    assert_int_equal(mem_store_insert(s, "a", n), 0);
    mem_note_free(n);
    n = mk("d0", "apple");
    assert_int_equal(mem_store_insert(s, "d", n), 0);
    mem_note_free(n);
    search_ids(s, "a", "apple", ids, sizeof ids);
    assert_string_equal(ids, "a3 a1 a0 a2");
    search_ids(s, "d", "apple", ids, sizeof ids);
    assert_string_equal(ids, "d0");
    mem_store_close(s);
    assert_int_equal(sql_int("slots.db", "PRAGMA user_version"), 3);
    assert_int_equal(sql_int("slots.db", "SELECT nid FROM notes WHERE id = 'a3'"),
                     2 * 4294967296LL + 4);
    assert_int_equal(sql_int("slots.db", "SELECT nid FROM notes WHERE id = 'd0'"),
                     4 * 4294967296LL + 1);
    assert_int_equal(sql_int("slots.db", "SELECT count(*) FROM notes_vec"), 1);
    assert_int_equal(sql_int("slots.db", "SELECT count(*) FROM notes_vec v JOIN notes n"
                                         " USING (nid) WHERE n.id = 'a1' AND v.vec = x'01'"), 1);
    assert_int_equal(sql_int("slots.db", "SELECT count(*) FROM pragma_table_info('notes_fts')"), 4);
    assert_int_equal(sql_int("slots.db", "SELECT count(*) FROM sqlite_master"
                                         " WHERE name = 'notes_fts_docsize'"), 0); /* columnsize=0 */
    /* the index holds each note once, under its new id */
    assert_int_equal(sql_int("slots.db", "SELECT count(*) FROM notes_fts WHERE notes_fts MATCH"
                                         " 'apple' AND rowid > 4294967296"), 11);
}

static void test_eviction_order_and_fault_back(void **state)
{
    (void)state;
    /* measure one note's size, then allow three and a half */
    struct mem_manager *m = open_mgr("size.db", 1 << 20);
    add(m, "a", "n1");
    json_t *md = stats(m, "a");
    size_t one = (size_t)json_integer_value(json_object_get(md, "resident_bytes"));
    json_decref(md);
    mem_manager_close(m);
    assert_true(one > 100);

    m = open_mgr("evict.db", one * 3 + one / 2);
    add(m, "a", "n1");
    add(m, "a", "n2");
    add(m, "a", "n3");
    get(m, "a", "n1"); /* n1 now has two accesses */
    md = stats(m, "a");
    assert_order(md, (const char *[]){"n2", "n3", "n1"}, 3);
    assert_int_equal(json_integer_value(json_object_get(md, "n_evictions")), 0);
    json_decref(md);

    add(m, "a", "n4"); /* over quota: n2 (once, oldest) leaves RAM */
    md = stats(m, "a");
    assert_order(md, (const char *[]){"n3", "n4", "n1"}, 3);
    assert_int_equal(json_integer_value(json_object_get(md, "n_evictions")), 1);
    assert_int_equal(json_integer_value(json_object_get(md, "n_notes")), 4);
    assert_true((size_t)json_integer_value(json_object_get(md, "resident_bytes")) <= one * 3 + one / 2);
    json_decref(md);

    get(m, "a", "n2"); /* fault back from SQLite, intact; n3 goes */
    md = stats(m, "a");
    assert_int_equal(json_integer_value(json_object_get(md, "n_faults")), 1);
    assert_int_equal(json_integer_value(json_object_get(md, "n_evictions")), 2);
    assert_order(md, (const char *[]){"n4", "n2", "n1"}, 3);
    json_decref(md);

    /* a scan of once-read notes cannot push out the twice-read n1 */
    for (int i = 5; i < 12; i++) {
        char id[8];
        snprintf(id, sizeof id, "n%d", i);
        add(m, "a", id);
    }
    md = stats(m, "a");
    json_t *o = json_object_get(md, "eviction_order");
    assert_string_equal(json_string_value(json_array_get(o, json_array_size(o) - 1)), "n1");
    assert_int_equal(json_integer_value(json_object_get(md, "n_notes")), 11);
    json_decref(md);

    /* nothing lost: every note reads back, update and remove work on evicted ones */
    const char *all[] = {"n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9", "n10", "n11"};
    for (int i = 0; i < 11; i++) get(m, "a", all[i]);
    json_decref(exec_ok(m, "a", "update_memory", "{\"memory_id\":\"n3\",\"content\":null,"
                                                 "\"metadata\":{\"tags\":[\"x\"]}}"));
    json_t *r = exec_ok(m, "a", "get_memory", "{\"memory_id\":\"n3\"}");
    assert_string_equal(json_string_value(json_object_get(r, "content")), "note n3 about topicn3");
    assert_string_equal(json_string_value(json_array_get(json_object_get(json_object_get(r, "metadata"), "tags"), 0)), "x");
    json_decref(r);
    json_decref(exec_ok(m, "a", "remove_memory", "{\"memory_id\":\"n5\"}"));
    exec_err(m, "a", "get_memory", "{\"memory_id\":\"n5\"}", 404, "n5");
    mem_manager_close(m);

    /* and after a restart (the working set is empty) */
    m = open_mgr("evict.db", one * 3 + one / 2);
    for (int i = 0; i < 11; i++)
        if (strcmp(all[i], "n5")) get(m, "a", all[i]);
    mem_manager_close(m);
}

static void test_namespaces_and_retrieval(void **state)
{
    (void)state;
    struct mem_manager *m = open_mgr("ns.db", 1 << 20);
    json_t *r = exec_ok(m, "alice", "add_memory",
                        "{\"content\":\"Alice's bank PIN hint is the river\",\"metadata\":{\"priority\":\"high\"}}");
    const char *id = json_string_value(json_object_get(r, "memory_id"));
    assert_int_equal(strlen(id), 36);
    char p[128];
    snprintf(p, sizeof p, "{\"memory_id\":\"%s\"}", id);
    exec_err(m, "bob", "get_memory", p, 404, "no memory");
    exec_err(m, "bob", "remove_memory", p, 404, "no memory");
    snprintf(p, sizeof p, "{\"memory_id\":\"%s\",\"content\":\"pwned\"}", id);
    exec_err(m, "bob", "update_memory", p, 404, "no memory");
    json_t *s = exec_ok(m, "bob", "retrieve_memory", "{\"content\":\"bank PIN river\",\"k\":5}");
    assert_int_equal(json_array_size(json_object_get(s, "search_results")), 0);
    json_decref(s);
    s = exec_ok(m, "alice", "retrieve_memory", "{\"query\":\"river\",\"n\":5}");
    json_t *hit = json_array_get(json_object_get(s, "search_results"), 0);
    assert_string_equal(json_string_value(json_object_get(hit, "memory_id")), id);
    assert_true(json_is_real(json_object_get(hit, "score")));
    json_decref(s);
    /* retrieval is counted; the raw form shows the whole note */
    s = exec_ok(m, "alice", "retrieve_memory_raw", "{\"content\":\"river\"}");
    hit = json_array_get(json_object_get(s, "search_results"), 0);
    assert_int_equal(json_integer_value(json_object_get(hit, "retrieval_count")), 1);
    assert_true(json_is_array(json_object_get(hit, "links")));
    json_decref(s);
    snprintf(p, sizeof p, "{\"memory_id\":\"%s\"}", id);
    s = exec_ok(m, "alice", "get_memory", p);
    json_t *md = json_object_get(s, "metadata");
    assert_string_equal(json_string_value(json_object_get(md, "priority")), "high");
    assert_int_equal(json_integer_value(json_object_get(md, "retrieval_count")), 1);
    json_decref(s);
    json_decref(r);
    mem_manager_close(m);
}

static void test_bad_params(void **state)
{
    (void)state;
    struct mem_manager *m = open_mgr("bad.db", 1 << 20);
    exec_err(m, "a", "add_memory", "{}", 400, "params.content");
    exec_err(m, "a", "add_memory", "{\"content\":\"\"}", 400, "empty");
    exec_err(m, "a", "add_memory", "{\"content\":5}", 400, "params.content");
    exec_err(m, "a", "add_memory", "{\"content\":\"x\",\"metadata\":[]}", 400, "metadata");
    exec_err(m, "a", "add_memory", "{\"content\":\"x\",\"tags\":[1]}", 400, "tags");
    exec_err(m, "a", "add_memory", "{\"content\":\"x\",\"links\":\"n1\"}", 400, "links");
    exec_err(m, "a", "add_memory", "{\"content\":\"x\",\"memory_id\":\"\"}", 400, "memory_id");
    exec_err(m, "a", "get_memory", "{}", 400, "memory_id");
    exec_err(m, "a", "get_memory", "{\"memory_id\":7}", 400, "memory_id");
    exec_err(m, "a", "remove_memory", "{}", 400, "memory_id");
    exec_err(m, "a", "update_memory", "{\"content\":\"x\"}", 400, "memory_id");
    exec_err(m, "a", "retrieve_memory", "{}", 400, "params.content");
    exec_err(m, "a", "retrieve_memory", "{\"content\":\"x\",\"k\":0}", 400, "params.k");
    exec_err(m, "a", "retrieve_memory", "{\"content\":\"x\",\"k\":\"5\"}", 400, "params.k");
    exec_err(m, "a", "forget_everything", "{}", 400, "unknown memory operation_type");
    char big[5000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    char *p = malloc(sizeof big + 32);
    snprintf(p, sizeof big + 32, "{\"content\":\"%s\"}", big);
    exec_err(m, "a", "add_memory", p, 413, "max_note_bytes");
    free(p);
    json_decref(exec_ok(m, "a", "add_memory", "{\"content\":\"x\",\"memory_id\":\"dup\"}"));
    exec_err(m, "a", "add_memory", "{\"content\":\"y\",\"memory_id\":\"dup\"}", 409, "already");
    /* tags as a comma string are accepted */
    json_decref(exec_ok(m, "a", "add_memory", "{\"content\":\"x\",\"tags\":\"a, b,,c\"}"));
    mem_manager_close(m);
}

static void test_agentic_without_model(void **state)
{
    (void)state;
    struct mem_manager *m = open_mgr("ag.db", 1 << 20);
    json_t *r = exec_ok(m, "a", "add_agentic_memory",
                        "{\"content\":\"Budget meeting: the budget for the robot project grows. "
                        "Robot parts arrive Monday.\"}");
    json_t *md = json_object_get(r, "metadata");
    assert_string_equal(json_string_value(json_object_get(md, "analysis")), "keywords");
    json_t *kw = json_object_get(md, "keywords");
    assert_string_equal(json_string_value(json_array_get(kw, 0)), "budget");
    assert_string_equal(json_string_value(json_array_get(kw, 1)), "robot");
    assert_int_equal(json_array_size(json_object_get(md, "tags")), 3);
    assert_string_equal(json_string_value(json_object_get(md, "context")),
                        "Budget meeting: the budget for the robot project grows.");
    /* stored with them: retrievable by a keyword */
    json_t *s = exec_ok(m, "a", "retrieve_memory", "{\"content\":\"robot\"}");
    assert_int_equal(json_array_size(json_object_get(s, "search_results")), 1);
    json_decref(s);
    json_decref(r);
    mem_manager_close(m);
}


static void test_note_larger_than_quota(void **state)
{
    (void)state;
    struct mem_manager *m = open_mgr("big.db", 1500);
    add(m, "a", "s1");
    add(m, "a", "s2");
    char *p = malloc(3000), big[2100];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = 0;
    snprintf(p, 3000, "{\"memory_id\":\"big\",\"content\":\"%s\"}", big);
    json_decref(exec_ok(m, "a", "add_memory", p));
    free(p);
    /* stored, served from SQLite, and the small notes stay resident */
    json_t *r = exec_ok(m, "a", "get_memory", "{\"memory_id\":\"big\"}");
    assert_int_equal(json_string_length(json_object_get(r, "content")), sizeof big - 1);
    json_decref(r);
    json_t *md = stats(m, "a");
    assert_order(md, (const char *[]){"s1", "s2"}, 2);
    assert_int_equal(json_integer_value(json_object_get(md, "n_notes")), 3);
    assert_int_equal(json_integer_value(json_object_get(md, "n_evictions")), 0);
    json_decref(md);
    mem_manager_close(m);
}

/* ---- concurrency: threads on their own agents and on a shared one ---- */

#define N_OPS 60

struct worker {
    struct mem_manager *m;
    const char *agent;
    int tag, n_added, n_removed, failures;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    char p[256];
    for (int i = 0; i < N_OPS; i++) {
        json_t *params, *r = NULL;
        int st;
        char err[256];
        snprintf(p, sizeof p, "{\"memory_id\":\"w%d-%d\",\"content\":\"worker %d writes note %d about apples\"}",
                 w->tag, i, w->tag, i);
        params = json_loads(p, 0, NULL);
        if (mem_manager_exec_json(w->m, w->agent, "add_memory", params, &r, &st, err, sizeof err)) w->failures++;
        else w->n_added++;
        json_decref(params);
        json_decref(r);
        r = NULL;
        snprintf(p, sizeof p, "{\"memory_id\":\"w%d-%d\"}", w->tag, i);
        params = json_loads(p, 0, NULL);
        if (mem_manager_exec_json(w->m, w->agent, "get_memory", params, &r, &st, err, sizeof err)) w->failures++;
        json_decref(r);
        r = NULL;
        json_decref(params);
        /* remove an older note of this worker: ids i/2 for i = 4, 9, 14, ... */
        snprintf(p, sizeof p, "{\"memory_id\":\"w%d-%d\"}", w->tag, i / 2);
        params = json_loads(p, 0, NULL);
        if (i % 5 == 4) {
            if (mem_manager_exec_json(w->m, w->agent, "remove_memory", params, &r, &st, err, sizeof err)) w->failures++;
            else w->n_removed++;
            json_decref(r);
            r = NULL;
        }
        json_decref(params);
        params = json_pack("{s:s,s:i}", "content", "apples note", "k", 3);
        if (mem_manager_exec_json(w->m, w->agent, "retrieve_memory", params, &r, &st, err, sizeof err)) w->failures++;
        json_decref(r);
        json_decref(params);
    }
    return NULL;
}

static void test_concurrent_agents(void **state)
{
    (void)state;
    struct mem_manager *m = open_mgr("conc.db", 4096); /* a few notes per agent: evictions */
    struct worker w[6] = {
        {m, "solo-0", 0, 0, 0, 0}, {m, "solo-1", 1, 0, 0, 0}, {m, "solo-2", 2, 0, 0, 0},
        {m, "shared", 3, 0, 0, 0}, {m, "shared", 4, 0, 0, 0}, {m, "shared", 5, 0, 0, 0},
    };
    pthread_t t[6];
    for (int i = 0; i < 6; i++) assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
    for (int i = 0; i < 6; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(w[i].failures, 0);
        assert_int_equal(w[i].n_added, N_OPS);
    }
    /* every count adds up, in the store and through get */
    const char *agents[] = {"solo-0", "solo-1", "solo-2", "shared"};
    int expect[] = {N_OPS - N_OPS / 5, N_OPS - N_OPS / 5, N_OPS - N_OPS / 5, 3 * (N_OPS - N_OPS / 5)};
    for (int a = 0; a < 4; a++) {
        json_t *md = stats(m, agents[a]);
        assert_int_equal(json_integer_value(json_object_get(md, "n_notes")), expect[a]);
        assert_true(json_integer_value(json_object_get(md, "resident_bytes")) <= 4096);
        assert_true(json_integer_value(json_object_get(md, "n_evictions")) > 0);
        json_decref(md);
    }
    char p[64];
    for (int i = 0; i < N_OPS; i++) {
        snprintf(p, sizeof p, "{\"memory_id\":\"w4-%d\"}", i);
        json_t *params = json_loads(p, 0, NULL), *r = NULL;
        int st;
        char err[256];
        int rc = mem_manager_exec_json(m, "shared", "get_memory", params, &r, &st, err, sizeof err);
        /* removed: ids i/2 for i % 5 == 4, i.e. 2, 4, 7, 9, ... */
        bool removed = false;
        for (int j = 4; j < N_OPS; j += 5)
            if (j / 2 == i) removed = true;
        assert_int_equal(rc == 0, !removed);
        json_decref(r);
        json_decref(params);
    }
    mem_manager_close(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fts_query),
        cmocka_unit_test(test_store_round_trip),
        cmocka_unit_test(test_store_search_ranking_and_scope),
        cmocka_unit_test(test_store_topk_matches_reference),
        cmocka_unit_test(test_store_topk_counted_words),
        cmocka_unit_test(test_store_ram_index_matches_fts),
        cmocka_unit_test(test_store_nids_by_agent),
        cmocka_unit_test(test_eviction_order_and_fault_back),
        cmocka_unit_test(test_note_larger_than_quota),
        cmocka_unit_test(test_namespaces_and_retrieval),
        cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_agentic_without_model),
        cmocka_unit_test(test_concurrent_agents),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
