/* bench_memory: latency of the memory manager's add, get and retrieve at
 * 1k, 10k and 100k notes per agent, against plain SQLite on the same disk
 * with the same settings (WAL, same synchronous level) as the baselines:
 *
 *   add       mem add_memory            vs  INSERT of (agent, id, content) into a plain table
 *   get       mem get_memory (RAM hit   vs  SELECT by key from that table
 *             or fault from SQLite)
 *   retrieve  mem retrieve_memory, k=5  vs  a bare FTS5 MATCH ... ORDER BY rank LIMIT 5
 *
 * Notes are 20 words drawn by Zipf's law (s = 1) from a 5,000-word
 * vocabulary whose 60 commonest words are English function words ("the",
 * "of", ...) and the rest synthetic; queries are a function word and 3
 * content words. Both sides search with the same FTS query string
 * (mem_fts_query: stop words dropped). Each size gets fresh database
 * files; the store is prefilled in bulk transactions, then `--ops`
 * operations of each kind are timed one by one with a monotonic clock. The
 * manager calls are mem_manager_exec_json(): the parse a POST /query does
 * at its edge and the typed call its memory executor runs (so HTTP and
 * queueing are not included;
 * with --http the retrieve is also timed end to end through a real kernel
 * on loopback, AIOS_BIN or build/aios).
 *
 * With --embed [MODEL.gguf] (default: the `embed` test model, made in the
 * user cache), the same store is then opened with that embedding model:
 * every prefilled note gets its vector first (not timed), then
 *
 *   embed     one emb_text() of a note's text (20 words; no baseline)
 *   embed q   one emb_text() of a query's text (4 words; no baseline)
 *   eq cpu    its on-CPU time
 *   add+emb   add_memory with the vector  vs  the plain INSERT above
 *   retr hyb  hybrid retrieve_memory, k=5 vs  the BM25 retrieve_memory above
 *   hyb cpu   its on-CPU time               vs  that of the BM25 retrieve
 * (the hybrid retrieve embeds its query: hyb cpu - eq cpu is the ranking)
 *
 * With --shape load the notes and queries are those of bench_load's memory
 * mix instead ("note S from connection C: the meeting about topic T moved
 * to room R", queries "meeting topic T room"): three words in every note,
 * one rare word per query, where the pruned retrieval reads few notes.
 * With --agents N the prefilled notes belong to N agents in turn (note i
 * to agent i mod N) and every timed call is the first agent's, as in a
 * store that agents share; the baseline table holds that agent's notes.
 *
 * Usage: bench_memory [--sizes 1000,10000,100000] [--ops 1000]
 *                     [--sync full|normal] [--dir DIR] [--shape zipf|load]
 *                     [--http] [--embed [MODEL]]
 * Prints one table row per size and kind: p50 and p99 in microseconds and
 * the ratio of the manager to the baseline. "retr cpu" is the retrieve's
 * on-CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID): on a shared
 * machine the wall-clock tail is mostly time spent descheduled. */
#include "cli/client.h"
#include "llm/embed.h"
#include "llm/testmodel.h"
#include "memory/mem.h"
#include "util/err.h"
#include "util/util.h"

#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define VOCAB 5000
#define N_STOP 60
#define WORDS_PER_NOTE 20

/* rank order: the commonest English function words first, then synthetic
 * content words; frequencies follow Zipf's law (s = 1), as in text */
static const char *const k_function_words[N_STOP] = {
    "the", "of", "and", "to", "a", "in", "is", "it", "you", "that", "he", "was", "for", "on",
    "are", "with", "as", "i", "his", "they", "be", "at", "one", "have", "this", "from", "or",
    "had", "by", "not", "word", "but", "what", "some", "we", "can", "out", "other", "were",
    "all", "there", "when", "up", "use", "your", "how", "said", "an", "each", "she", "which",
    "do", "their", "time", "if", "will", "way", "about", "many", "then"};
static char g_vocab[VOCAB][16];
static double g_cdf[VOCAB];
static uint64_t g_rng = 88172645463325252ull;

static uint64_t rnd(void) { return util_xorshift64(&g_rng); }

/* a rank >= lo drawn by Zipf's law */
static int word_index(int lo)
{
    double base = lo ? g_cdf[lo - 1] : 0;
    double u = base + (double)(rnd() % 1000000007ull) / 1000000007.0 * (1.0 - base);
    int a = lo, b = VOCAB - 1;
    while (a < b) {
        int m = (a + b) / 2;
        if (g_cdf[m] < u) a = m + 1;
        else b = m;
    }
    return a;
}

static void make_vocab(void)
{
    static const char *syl[] = {"ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "ve", "da",
                                "gri", "zo", "fen", "bar", "qui", "mon"};
    double h = 0;
    for (int i = 0; i < VOCAB; i++) {
        char *w = g_vocab[i];
        if (i < N_STOP) {
            snprintf(w, sizeof g_vocab[i], "%s", k_function_words[i]);
        } else {
            int x = i;
            w[0] = 0;
            for (int s = 0; s < 3; s++) {
                strcat(w, syl[x % 16]);
                x /= 16;
            }
            if (x) snprintf(w + strlen(w), 3, "%d", x % 10);
        }
        h += 1.0 / (i + 1);
        g_cdf[i] = h;
    }
    for (int i = 0; i < VOCAB; i++) g_cdf[i] /= h;
}

/* note text: any word; query text (lo = N_STOP): content words, and a
 * function word in front as people type them */
static void make_text(char *buf, size_t cap, int words, int lo)
{
    size_t o = 0;
    buf[0] = 0;
    if (lo) o += (size_t)snprintf(buf, cap, "%s", g_vocab[word_index(0) % N_STOP]);
    for (int i = 0; i < words && o + 20 < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, o ? " %s" : "%s", g_vocab[word_index(lo)]);
}

/* --shape load: the notes and queries of bench_load's memory mix, where
 * three words are in every note and one word of each query is rare (a
 * retrieval's words are mostly common; docs/memory.md, "Retrieval") */
static bool g_shape_load;
static int g_agents = 1; /* --agents: the notes spread over this many agents */

static void note_text(char *buf, size_t cap, long i)
{
    if (g_shape_load)
        snprintf(buf, cap, "note %ld from connection %ld: the meeting about topic %ld moved to room %ld",
                 i, i % 1000, i % 97, i % 13);
    else
        make_text(buf, cap, WORDS_PER_NOTE, 0);
}

static void query_text(char *buf, size_t cap)
{
    if (g_shape_load) snprintf(buf, cap, "meeting topic %d room", (int)(rnd() % 97));
    else make_text(buf, cap, 3, N_STOP);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

struct pct {
    double p50, p99;
};

static struct pct pcts(int64_t *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_i64);
    struct pct p = {(double)v[n / 2], (double)v[(int)((n - 1) * 0.99)]};
    return p;
}

static int64_t cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_memory: %s\n", what);
    exit(1);
}

static void sql(sqlite3 *db, const char *s)
{
    char *msg = NULL;
    if (sqlite3_exec(db, s, NULL, NULL, &msg) != SQLITE_OK) {
        fprintf(stderr, "%s: %s\n", s, msg ? msg : "?");
        exit(1);
    }
}

static void row(const char *kind, long n, struct pct m, struct pct b)
{
    printf("| %-8s | %7ld | %9.1f | %9.1f | %9.1f | %9.1f | %5.2f | %5.2f |\n", kind, n, m.p50, m.p99,
           b.p50, b.p99, m.p50 / b.p50, m.p99 / b.p99);
    fflush(stdout);
}

static json_t *exec(struct mem_manager *m, const char *op, json_t *p)
{
    json_t *r = NULL;
    int st;
    char err[256];
    if (mem_manager_exec_json(m, "bench", op, p, &r, &st, err, sizeof err)) {
        fprintf(stderr, "%s: %d %s\n", op, st, err);
        exit(1);
    }
    return r;
}

int main(int argc, char **argv)
{
    long sizes[8] = {1000, 10000, 100000};
    int n_sizes = 3, ops = 1000;
    bool full = true, http = false;
    char dir[256] = "", *embed_model = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--sizes") && i + 1 < argc) {
            n_sizes = 0;
            for (char *t = strtok(argv[++i], ","); t && n_sizes < 8; t = strtok(NULL, ","))
                sizes[n_sizes++] = atol(t);
        } else if (!strcmp(argv[i], "--ops") && i + 1 < argc) {
            ops = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--sync") && i + 1 < argc) {
            full = !strcmp(argv[++i], "full");
        } else if (!strcmp(argv[i], "--dir") && i + 1 < argc) {
            snprintf(dir, sizeof dir, "%s", argv[++i]);
        } else if (!strcmp(argv[i], "--agents") && i + 1 < argc) { /* see the top */
            g_agents = atoi(argv[++i]);
            if (g_agents < 1) g_agents = 1;
        } else if (!strcmp(argv[i], "--shape") && i + 1 < argc) {
            g_shape_load = !strcmp(argv[++i], "load");
        } else if (!strcmp(argv[i], "--http")) {
            http = true;
        } else if (!strcmp(argv[i], "--embed")) {
            char e[512] = "";
            if (i + 1 < argc && argv[i + 1][0] != '-') embed_model = strdup(argv[++i]);
            else if (testmodel_cached(TESTMODEL_SHAPE_EMBED, &embed_model, e, sizeof e)) die(e);
        } else {
            fprintf(stderr, "usage: %s [--sizes 1000,10000,100000] [--ops N] [--sync full|normal] "
                            "[--dir DIR] [--shape zipf|load] [--agents N] [--http] [--embed [MODEL.gguf]]\n", argv[0]);
            return 2;
        }
    }
    if (ops < 10) ops = 10;
    bool own_dir = !dir[0];
    if (own_dir) {
        snprintf(dir, sizeof dir, "/tmp/aios-bench-mem-XXXXXX");
        if (!mkdtemp(dir)) die("mkdtemp");
    }
    make_vocab();
    struct emb *emb = NULL;
    if (embed_model) {
        struct emb_opts eo = {.model = embed_model, .pooling = -1, .threads = 1,
                              .n_ctx = EMB_DEFAULT_N_CTX, .weight = EMB_DEFAULT_WEIGHT};
        char e[512] = "";
        if (emb_open(&emb, &eo, e, sizeof e)) die(e);
        printf("embedding model %s, %d dimensions\n", embed_model, emb_dim(emb));
    }
    int64_t *tm = malloc(sizeof *tm * (size_t)ops), *tb = malloc(sizeof *tb * (size_t)ops);
    int64_t *cm = malloc(sizeof *cm * (size_t)ops), *cb = malloc(sizeof *cb * (size_t)ops);
    char text[512], path[512], id[64];
    printf("synchronous=%s, %d timed operations per kind and size, latencies in microseconds\n\n",
           full ? "FULL" : "NORMAL", ops);
    printf("| op        | notes   | mem p50   | mem p99   | base p50  | base p99  | x p50 | x p99 |\n");
    printf("|----------|---------|-----------|-----------|-----------|-----------|-------|-------|\n");
    for (int si = 0; si < n_sizes; si++) {
        long N = sizes[si];
        /* ---- the memory manager ---- */
        snprintf(path, sizeof path, "%s/mem-%ld.db", dir, N);
        struct mem_opts o = {.quota_bytes = MEM_DEFAULT_QUOTA, .max_note_bytes = MEM_DEFAULT_MAX_NOTE,
                             .full_sync = full, .agentic_max_tokens = 4, .workers = 1, .db_path = path};
        struct mem_manager *m = NULL;
        char err[512] = "";
        if (mem_manager_open(&m, &o, NULL, err, sizeof err)) die(err);
        enum { BATCH = 5000 };
        struct mem_note **batch = calloc(BATCH, sizeof *batch);
        for (long done = 0; done < N;) {
            int b = 0;
            for (; b < BATCH && done < N; b++, done++) {
                struct mem_note *n = mem_note_new();
                snprintf(id, sizeof id, "pre-%ld", done);
                note_text(text, sizeof text, done);
                n->id = strdup(id);
                n->content = strdup(text);
                mem_ts_now(n->timestamp);
                memcpy(n->last_accessed, n->timestamp, sizeof n->timestamp);
                batch[b] = n;
            }
            /* note i belongs to agent i % g_agents: "bench", "bench1", ... */
            for (int a = 0; a < g_agents; a++) {
                struct mem_note *sub[BATCH];
                size_t n_sub = 0;
                for (int i = 0; i < b; i++)
                    if ((done - b + i) % g_agents == a) sub[n_sub++] = batch[i];
                char name[32] = "bench";
                if (a) snprintf(name, sizeof name, "bench%d", a);
                if (n_sub && mem_store_insert_many(mem_manager_store(m), name, sub, n_sub)) die("prefill");
            }
            for (int i = 0; i < b; i++) mem_note_free(batch[i]);
        }
        free(batch);
        /* ---- the baseline: plain SQLite, same disk, same pragmas ---- */
        snprintf(path, sizeof path, "%s/plain-%ld.db", dir, N);
        sqlite3 *db;
        if (sqlite3_open(path, &db) != SQLITE_OK) die("open plain");
        sql(db, full ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                     : "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;");
        sql(db, "CREATE TABLE t(nid INTEGER PRIMARY KEY, agent TEXT, id TEXT, content TEXT, UNIQUE(agent,id));"
                "CREATE VIRTUAL TABLE f USING fts5(content);");
        sqlite3_stmt *ins, *sel, *fts, *fins;
        sqlite3_prepare_v2(db, "INSERT INTO t(agent,id,content) VALUES('bench',?1,?2)", -1, &ins, NULL);
        sqlite3_prepare_v2(db, "INSERT INTO f(content) VALUES(?1)", -1, &fins, NULL);
        sqlite3_prepare_v2(db, "SELECT content FROM t WHERE agent='bench' AND id=?1", -1, &sel, NULL);
        sqlite3_prepare_v2(db, "SELECT rowid, bm25(f) FROM f WHERE f MATCH ?1 ORDER BY rank LIMIT 5", -1,
                           &fts, NULL);
        sql(db, "BEGIN");
        for (long i = 0; i < N; i += g_agents) { /* the notes of "bench" */
            snprintf(id, sizeof id, "pre-%ld", i);
            note_text(text, sizeof text, i);
            sqlite3_bind_text(ins, 1, id, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(ins, 2, text, -1, SQLITE_TRANSIENT);
            sqlite3_step(ins);
            sqlite3_reset(ins);
            sqlite3_bind_text(fins, 1, text, -1, SQLITE_TRANSIENT);
            sqlite3_step(fins);
            sqlite3_reset(fins);
        }
        sql(db, "COMMIT");

        /* add */
        for (int i = 0; i < ops; i++) {
            note_text(text, sizeof text, N + i);
            json_t *p = json_pack("{s:s}", "content", text);
            int64_t t0 = util_now_us();
            json_decref(exec(m, "add_memory", p));
            tm[i] = util_now_us() - t0;
            json_decref(p);
            snprintf(id, sizeof id, "new-%d", i);
            t0 = util_now_us();
            sqlite3_bind_text(ins, 1, id, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(ins, 2, text, -1, SQLITE_TRANSIENT);
            if (sqlite3_step(ins) != SQLITE_DONE) die("plain insert");
            sqlite3_reset(ins);
            tb[i] = util_now_us() - t0;
        }
        struct pct am = pcts(tm, ops), ab = pcts(tb, ops);
        /* get: random prefilled ids (mostly faults from SQLite at 10k+) */
        for (int i = 0; i < ops; i++) {
            snprintf(id, sizeof id, "pre-%ld",
                     (long)(rnd() % (uint64_t)((N + g_agents - 1) / g_agents)) * g_agents);
            json_t *p = json_pack("{s:s}", "memory_id", id);
            int64_t t0 = util_now_us();
            json_decref(exec(m, "get_memory", p));
            tm[i] = util_now_us() - t0;
            json_decref(p);
            t0 = util_now_us();
            sqlite3_bind_text(sel, 1, id, -1, SQLITE_TRANSIENT);
            if (sqlite3_step(sel) != SQLITE_ROW) die("plain select");
            sqlite3_reset(sel);
            tb[i] = util_now_us() - t0;
        }
        struct pct gm = pcts(tm, ops), gb = pcts(tb, ops);
        /* retrieve */
        long hits = 0;
        for (int i = 0; i < ops; i++) {
            query_text(text, sizeof text);
            json_t *p = json_pack("{s:s,s:i}", "content", text, "k", 5);
            int64_t c0 = cpu_us(), t0 = util_now_us();
            json_t *r = exec(m, "retrieve_memory", p);
            tm[i] = util_now_us() - t0;
            cm[i] = cpu_us() - c0;
            hits += (long)json_array_size(json_object_get(r, "search_results"));
            json_decref(r);
            json_decref(p);
            char *q = mem_fts_query(text);
            c0 = cpu_us();
            t0 = util_now_us();
            sqlite3_bind_text(fts, 1, q, -1, SQLITE_TRANSIENT);
            while (sqlite3_step(fts) == SQLITE_ROW) {}
            sqlite3_reset(fts);
            tb[i] = util_now_us() - t0;
            cb[i] = cpu_us() - c0;
            free(q);
        }
        struct pct rm = pcts(tm, ops), rb = pcts(tb, ops);
        struct pct rcm = pcts(cm, ops), rcb = pcts(cb, ops);
        row("add", N, am, ab);
        row("get", N, gm, gb);
        row("retrieve", N, rm, rb);
        row("retr cpu", N, rcm, rcb);
        if (hits < ops) fprintf(stderr, "note: only %ld hits in %d retrievals\n", hits, ops);
        sqlite3_finalize(ins);
        sqlite3_finalize(fins);
        sqlite3_finalize(sel);
        sqlite3_finalize(fts);
        sqlite3_close(db);
        mem_manager_close(m);

        if (emb) {
            /* the same store with the embedding model: vectors for every
             * prefilled note (untimed), then embed / add / hybrid retrieve */
            snprintf(path, sizeof path, "%s/mem-%ld.db", dir, N);
            o.emb = emb;
            if (mem_manager_open(&m, &o, NULL, err, sizeof err)) die(err);
            int dim = emb_dim(emb);
            float *v = malloc(sizeof *v * (size_t)dim * 256);
            int64_t t_fill = util_now_us();
            for (;;) {
                json_t *miss = NULL;
                if (mem_store_vec_missing(mem_manager_store(m), "bench", 256, &miss)) die("missing");
                size_t nm = json_array_size(miss);
                const char *ids[256];
                for (size_t i = 0; i < nm; i++) {
                    const char *t = json_string_value(json_array_get(json_array_get(miss, i), 1));
                    ids[i] = json_string_value(json_array_get(json_array_get(miss, i), 0));
                    if (emb_text(emb, t, strlen(t), v + i * (size_t)dim)) die("embed");
                }
                if (nm && mem_store_vec_set(mem_manager_store(m), "bench", ids, v, nm, dim)) die("vec set");
                json_decref(miss);
                if (nm == 0) break;
            }
            fprintf(stderr, "embedded %ld + %d notes in %.1f s\n", N, ops,
                    (double)(util_now_us() - t_fill) / 1e6);
            for (int i = 0; i < ops; i++) {
                make_text(text, sizeof text, WORDS_PER_NOTE, 0);
                int64_t t0 = util_now_us();
                if (emb_text(emb, text, strlen(text), v)) die("embed");
                tm[i] = util_now_us() - t0;
            }
            struct pct em = pcts(tm, ops);
            for (int i = 0; i < ops; i++) {
                make_text(text, sizeof text, 3, N_STOP);
                int64_t c0 = cpu_us(), t0 = util_now_us();
                if (emb_text(emb, text, strlen(text), v)) die("embed");
                tm[i] = util_now_us() - t0;
                cm[i] = cpu_us() - c0;
            }
            struct pct eq = pcts(tm, ops), eqc = pcts(cm, ops);
            for (int i = 0; i < ops; i++) {
                make_text(text, sizeof text, WORDS_PER_NOTE, 0);
                json_t *p = json_pack("{s:s}", "content", text);
                int64_t t0 = util_now_us();
                json_decref(exec(m, "add_memory", p));
                tm[i] = util_now_us() - t0;
                json_decref(p);
            }
            struct pct aem = pcts(tm, ops);
            for (int i = 0; i < ops; i++) {
                make_text(text, sizeof text, 3, N_STOP);
                json_t *p = json_pack("{s:s,s:i}", "content", text, "k", 5);
                int64_t c0 = cpu_us(), t0 = util_now_us();
                json_decref(exec(m, "retrieve_memory", p));
                tm[i] = util_now_us() - t0;
                cm[i] = cpu_us() - c0;
                json_decref(p);
            }
            struct pct hm = pcts(tm, ops), hcm = pcts(cm, ops);
            printf("| embed    | %7ld | %9.1f | %9.1f |           |           |       |       |\n", N,
                   em.p50, em.p99);
            printf("| embed q  | %7ld | %9.1f | %9.1f |           |           |       |       |\n", N,
                   eq.p50, eq.p99);
            printf("| eq cpu   | %7ld | %9.1f | %9.1f |           |           |       |       |\n", N,
                   eqc.p50, eqc.p99);
            row("add+emb", N, aem, ab);
            row("retr hyb", N, hm, rm);
            row("hyb cpu", N, hcm, rcm);
            free(v);
            mem_manager_close(m);
            o.emb = NULL;
        }

        if (http) {
            /* the same retrieve end to end through a kernel */
            char cfg[600], kdir[600];
            snprintf(cfg, sizeof cfg, "%s/config-%ld.yaml", dir, N);
            snprintf(kdir, sizeof kdir, "%s/kernel-%ld", dir, N);
            util_mkdirs(kdir);
            FILE *f = fopen(cfg, "w");
            if (!f) die("config");
            fprintf(f, "memory:\n  db_path: %s/mem-%ld.db\n  synchronous: %s\n", dir, N,
                    full ? "full" : "normal");
            fclose(f);
            const char *bin = getenv("AIOS_BIN") ? getenv("AIOS_BIN") : "build/aios";
            const char *extra[] = {"--config", cfg, NULL};
            struct aios_child c;
            if (child_start(&c, bin, kdir, extra, 120)) die("cannot start the kernel (set AIOS_BIN)");
            char url[128], body[700];
            snprintf(url, sizeof url, "%s/query", c.base);
            for (int i = 0; i < ops; i++) {
                make_text(text, sizeof text, 3, N_STOP);
                int len = snprintf(body, sizeof body,
                                   "{\"agent_name\":\"bench\",\"query_type\":\"memory\",\"query_data\":"
                                   "{\"operation_type\":\"retrieve_memory\",\"params\":"
                                   "{\"content\":\"%s\",\"k\":5}}}", text);
                struct hc_resp r;
                int64_t t0 = util_now_us();
                if (hc_call("POST", url, body, (size_t)len, &r, 30) || r.status != 200) die("http retrieve");
                tm[i] = util_now_us() - t0;
                hc_resp_free(&r);
            }
            child_stop(&c, 30);
            struct pct hm = pcts(tm, ops);
            printf("| retr HTTP | %7ld | %9.1f | %9.1f |           |           |       |       |\n", N,
                   hm.p50, hm.p99);
        }
    }
    emb_close(emb);
    free(embed_model);
    free(tm);
    free(tb);
    free(cm);
    free(cb);
    if (own_dir) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    }
    return 0;
}
