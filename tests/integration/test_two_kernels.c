/* Two kernels, one state: two `aios serve` processes on one PostgreSQL
 * database (started by the harness: initdb/pg_ctl as an unprivileged user)
 * and one storage root directory (docs/postgres.md). What one writes the
 * other reads (notes, files); a registered agent's token works on both and,
 * once replaced on one, is refused by the other; the storage quota holds
 * across both under concurrent writes (the owner's row lock, not per-kernel
 * counters), counting every kept version as the SQLite store does, and
 * so does the memory store's quota (memory.store_quota_bytes); a
 * response made on one is continued (previous_response_id) on the other;
 * a storage approval parked on one is listed and decided on the other; a
 * third kernel SIGKILLed in the middle of a budgeted LLM call gives its
 * token reservation back once its lease (state.lease_s) runs out; and when
 * one is SIGKILLed in the middle of writes, every write it acknowledged is
 * there on the other. Skipped (77) without the PostgreSQL binaries. */
#include "harness.h"

#include "storage/sha256.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#define QUOTA_BYTES 4096
#define TOKEN_BUDGET 300
#define CRASH_BUDGET 3000
#define CRASH_MAX_TOKENS 2000
#define LEASE_S 5
#define MEM_QUOTA 131072
#define NOTE_BYTES 30000

static struct kernel_fixture *g_a, *g_b;
static char g_tmp[64];
static char g_yaml[1024];

static int group_setup(void **state)
{
    (void)state;
    const char *url = kf_pg_new_db();
    if (!url) return -1;
    snprintf(g_tmp, sizeof g_tmp, "/tmp/aios-2k-XXXXXX");
    if (!mkdtemp(g_tmp)) return -1;
    /* every other agent (the crash test's) is in group crashy */
    snprintf(g_yaml, sizeof g_yaml,
             "storage:\n  root_dir: %s/root\n  quota_bytes: %d\n  quota_files: 1000\n"
             "memory:\n  store_quota_bytes: %d\n"
             "access:\n  groups:\n    budgeted: {token_budgets: {aios-tiny: %d}}\n"
             "    crashy: {token_budgets: {aios-tiny: %d}}\n"
             "  agents: {spender: budgeted}\n  default_group: crashy\n"
             "state:\n  backend: postgres\n  url: %s\n  lease_s: %d\n",
             g_tmp, QUOTA_BYTES, MEM_QUOTA, TOKEN_BUDGET, CRASH_BUDGET, url, LEASE_S);
    g_a = kf_start_config(g_yaml);
    g_b = kf_start_config(g_yaml);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (g_a) kf_stop(g_a);
    kf_stop(g_b);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    return system(cmd) == 0 ? 0 : -1;
}

/* POST /query of kind ("memory" / "storage") on kf; params stolen; *out
 * the "response" object (or the body on an error) */
static long query(struct kernel_fixture *kf, const char *agent, const char *kind, const char *op,
                  json_t *params, json_t **out)
{
    json_t *q = json_pack("{s:s,s:s,s:{s:s,s:s,s:o}}", "agent_name", agent, "query_type", kind,
                          "query_data", "query_class", kind, "operation_type", op, "params",
                          params);
    char *body = json_dumps(q, JSON_COMPACT);
    json_decref(q);
    /* not kf_call: a kernel killed under a writer thread is not a failure
     * of the test (0: no answer) */
    char url[160];
    snprintf(url, sizeof url, "%s/query", kf->child.base);
    char auth[300];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", kf->child.token);
    const char *hdrs[] = {auth, NULL};
    struct hc_resp resp;
    memset(&resp, 0, sizeof resp);
    long st = hc_call_h("POST", url, body, strlen(body), hdrs, &resp, 60) == 0 ? resp.status : 0;
    free(body);
    json_t *j = st ? json_loadb(resp.body, resp.len, 0, NULL) : NULL;
    hc_resp_free(&resp);
    if (out) *out = st == 200 ? json_incref(json_object_get(j, "response")) : json_incref(j);
    json_decref(j);
    return st;
}

static char *read_file(struct kernel_fixture *kf, const char *agent, const char *path)
{
    json_t *r = NULL;
    long st = query(kf, agent, "storage", "read", json_pack("{s:s}", "file_path", path), &r);
    char *s = st == 200 ? strdup(json_string_value(json_object_get(r, "content"))) : NULL;
    json_decref(r);
    return s;
}

static char *get_note(struct kernel_fixture *kf, const char *agent, const char *id)
{
    json_t *r = NULL;
    long st = query(kf, agent, "memory", "get_memory", json_pack("{s:s}", "memory_id", id), &r);
    char *s = st == 200 ? strdup(json_string_value(json_object_get(r, "content"))) : NULL;
    json_decref(r);
    return s;
}

static void test_write_on_one_read_on_other(void **state)
{
    (void)state;
    json_t *r = NULL;
    assert_int_equal(query(g_a, "alice", "memory", "add_memory",
                           json_pack("{s:s,s:s}", "content", "the ferry leaves at seven",
                                     "memory_id", "ferry"), &r), 200);
    json_decref(r);
    char *n = get_note(g_b, "alice", "ferry");
    assert_non_null(n);
    assert_string_equal(n, "the ferry leaves at seven");
    free(n);
    /* full-text retrieval on the other kernel */
    assert_int_equal(query(g_b, "alice", "memory", "retrieve_memory",
                           json_pack("{s:s}", "content", "ferry"), &r), 200);
    json_t *hits = json_object_get(r, "search_results");
    assert_int_equal(json_array_size(hits), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(hits, 0), "memory_id")),
                        "ferry");
    json_decref(r);
    /* a change on B is what A reads */
    assert_int_equal(query(g_b, "alice", "memory", "update_memory",
                           json_pack("{s:s,s:s}", "memory_id", "ferry", "content",
                                     "the ferry leaves at eight"), &r), 200);
    json_decref(r);
    n = get_note(g_a, "alice", "ferry");
    assert_string_equal(n, "the ferry leaves at eight");
    free(n);

    assert_int_equal(query(g_a, "alice", "storage", "write",
                           json_pack("{s:s,s:s}", "file_path", "plans/trip.txt", "content",
                                     "north by the coast road"), &r), 200);
    json_decref(r);
    char *f = read_file(g_b, "alice", "plans/trip.txt");
    assert_non_null(f);
    assert_string_equal(f, "north by the coast road");
    free(f);
    assert_int_equal(query(g_b, "alice", "storage", "write",
                           json_pack("{s:s,s:s}", "file_path", "plans/trip.txt", "content",
                                     "south by the inland road"), &r), 200);
    json_decref(r);
    /* one history, both versions, whichever kernel asks */
    assert_int_equal(query(g_a, "alice", "storage", "history",
                           json_pack("{s:s}", "file_path", "plans/trip.txt"), &r), 200);
    assert_int_equal(json_array_size(json_object_get(r, "versions")), 2);
    json_decref(r);
    assert_int_equal(query(g_a, "alice", "storage", "retrieve",
                           json_pack("{s:s}", "query", "inland"), &r), 200);
    json_decref(r);
    /* a share granted on A opens the file to bob on B */
    assert_int_equal(query(g_a, "alice", "storage", "share",
                           json_pack("{s:s,s:s,s:s}", "file_path", "plans/trip.txt", "agent",
                                     "bob", "mode", "r"), &r), 200);
    json_decref(r);
    assert_int_equal(query(g_b, "bob", "storage", "read",
                           json_pack("{s:s,s:s}", "file_path", "plans/trip.txt", "owner",
                                     "alice"), &r), 200);
    json_decref(r);
}

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

/* poll GET /access/whoami on kf with tok until it answers want (at most
 * 60 s: no timing is asserted); the seconds it took */
static double until_status(struct kernel_fixture *kf, const char *tok, long want)
{
    double t0 = now_s();
    long st = 0;
    for (int i = 0; i < 6000; i++) {
        st = kf_call_as(kf, tok, NULL, "GET", "/access/whoami", NULL, NULL);
        if (st == want) return now_s() - t0;
        usleep(10000);
    }
    fail_msg("GET /access/whoami answered %ld, not %ld, for a minute", st, want);
    return -1;
}

static void test_token_replaced_on_one_refused_by_other(void **state)
{
    (void)state;
    char old[128], fresh[128];
    kf_register_agent(g_a, "courier", old, sizeof old);
    double t_known = until_status(g_b, old, 200);
    kf_register_agent(g_a, "courier", fresh, sizeof fresh); /* the old token dies */
    assert_int_equal(kf_call_as(g_a, old, NULL, "GET", "/access/whoami", NULL, NULL), 401);
    double t_refused = until_status(g_b, old, 401);
    assert_int_equal(until_status(g_b, fresh, 200) >= 0, 1);
    fprintf(stderr, "[ measured ] a token registered on A worked on B after %.3f s; replaced on "
            "A, B refused the old one after %.3f s\n", t_known, t_refused);
}

/* one writer thread of the quota tests: its kernel, its number, and how
 * its writes were answered */
struct qwriter {
    struct kernel_fixture *kf;
    int t, n_ok, n_507, n_other;
};

static void tally(struct qwriter *w, long st)
{
    if (st == 200) w->n_ok++;
    else if (st == 507) w->n_507++;
    else w->n_other++;
}

/* 4 writers, 2 per kernel, each running fn; *ok and *full: their 200s
 * and 507s (any other answer fails the test) */
static void run_writers(void *(*fn)(void *), int *ok, int *full)
{
    struct qwriter w[4];
    pthread_t th[4];
    for (int t = 0; t < 4; t++) {
        w[t] = (struct qwriter){.kf = t % 2 ? g_b : g_a, .t = t};
        assert_int_equal(pthread_create(&th[t], NULL, fn, &w[t]), 0);
    }
    *ok = *full = 0;
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        *ok += w[t].n_ok;
        *full += w[t].n_507;
        assert_int_equal(w[t].n_other, 0);
    }
}

static void *quota_writer(void *ud)
{
    struct qwriter *w = ud;
    char content[1001], path[32];
    memset(content, 'a' + w->t, 1000);
    content[1000] = 0;
    for (int i = 0; i < 5; i++) {
        snprintf(path, sizeof path, "q%d_%d.txt", w->t, i);
        content[0] = (char)('0' + i); /* a distinct content per file */
        long st = query(w->kf, "quota", "storage", "write",
                        json_pack("{s:s,s:s}", "file_path", path, "content", content), NULL);
        tally(w, st);
    }
    return NULL;
}

static void test_quota_holds_across_kernels(void **state)
{
    (void)state;
    /* 4 writers (2 per kernel) of 5 text files of 1000 distinct bytes
     * each against a quota of 4096 bytes: each costs its content and its
     * indexed text, 2000 bytes, so exactly 2 may be acknowledged */
    int ok, full;
    run_writers(quota_writer, &ok, &full);
    assert_int_equal(ok, 2);
    assert_int_equal(full, 18);
    json_t *r = NULL;
    assert_int_equal(query(g_b, "quota", "storage", "usage", json_object(), &r), 200);
    char *s = json_dumps(r, JSON_COMPACT);
    assert_non_null(strstr(s, "4000"));
    free(s);
    json_decref(r);
    /* every kept version counts: a new version of an acknowledged file
     * does not fit (its old content stays in the history) on either
     * kernel, and a delete gives its bytes back for both */
    char path[32] = "";
    for (int t = 0; t < 4 && !path[0]; t++)
        for (int i = 0; i < 5 && !path[0]; i++) {
            char p[32];
            snprintf(p, sizeof p, "q%d_%d.txt", t, i);
            char *c = read_file(g_a, "quota", p);
            if (c) snprintf(path, sizeof path, "%s", p);
            free(c);
        }
    assert_true(path[0] != 0);
    char other[1001];
    memset(other, 'z', 1000);
    other[1000] = 0;
    /* 4000 + 1000 (the new content) + 1000 - 1000 (its indexed text
     * replaces the old one's): 5000. Counting current contents only
     * would have made it 4000, and let it through */
    assert_int_equal(query(g_b, "quota", "storage", "write",
                           json_pack("{s:s,s:s}", "file_path", path, "content", other), NULL),
                     507);
    assert_int_equal(query(g_a, "quota", "storage", "delete_file",
                           json_pack("{s:s}", "file_path", path), NULL), 200);
    assert_int_equal(query(g_b, "quota", "storage", "usage", json_object(), &r), 200);
    assert_int_equal(json_integer_value(json_object_get(r, "bytes")), 2000);
    json_decref(r);
}

static void *note_writer(void *ud)
{
    struct qwriter *w = ud;
    char *content = malloc(NOTE_BYTES + 1), id[32];
    assert_non_null(content);
    memset(content, 'm', NOTE_BYTES);
    content[NOTE_BYTES] = 0;
    for (int i = 0; i < 3; i++) {
        snprintf(id, sizeof id, "big%d_%d", w->t, i);
        long st = query(w->kf, "memq", "memory", "add_memory",
                        json_pack("{s:s,s:s}", "content", content, "memory_id", id), NULL);
        tally(w, st);
    }
    free(content);
    return NULL;
}

static long long mem_stored(struct kernel_fixture *kf)
{
    json_t *r = NULL;
    assert_int_equal(query(kf, "memq", "memory", "memory_stats", json_object(), &r), 200);
    long long b = (long long)json_integer_value(
        json_object_get(json_object_get(r, "metadata"), "stored_bytes"));
    json_decref(r);
    return b;
}

static void test_memory_quota_holds_across_kernels(void **state)
{
    (void)state;
    /* 4 writers (2 per kernel) of 3 notes of 30000 bytes against a
     * memory.store_quota_bytes of 131072: exactly 4 fit */
    int ok, full;
    run_writers(note_writer, &ok, &full);
    assert_int_equal(ok, 4);
    assert_int_equal(full, 8);
    long long used = mem_stored(g_a);
    assert_true(used > 4 * NOTE_BYTES && used <= MEM_QUOTA);
    assert_int_equal(mem_stored(g_b), used);
    /* which notes made it: found on B, grown on A (refused), removed on A,
     * and the room it left is used on B */
    char id[32] = "";
    for (int t = 0; t < 4 && !id[0]; t++)
        for (int i = 0; i < 3 && !id[0]; i++) {
            char c[32];
            snprintf(c, sizeof c, "big%d_%d", t, i);
            char *n = get_note(g_b, "memq", c);
            if (n) snprintf(id, sizeof id, "%s", c);
            free(n);
        }
    assert_true(id[0] != 0);
    char *content = malloc(NOTE_BYTES + 20001);
    assert_non_null(content);
    memset(content, 'g', NOTE_BYTES + 20000);
    content[NOTE_BYTES + 20000] = 0;
    json_t *r = NULL;
    assert_int_equal(query(g_a, "memq", "memory", "update_memory",
                           json_pack("{s:s,s:s}", "memory_id", id, "content", content), &r),
                     507);
    json_decref(r);
    assert_int_equal(query(g_a, "memq", "memory", "remove_memory",
                           json_pack("{s:s}", "memory_id", id), &r), 200);
    json_decref(r);
    assert_true(mem_stored(g_b) < used - NOTE_BYTES + 1);
    content[NOTE_BYTES] = 0;
    assert_int_equal(query(g_b, "memq", "memory", "add_memory",
                           json_pack("{s:s,s:s}", "content", content, "memory_id", "again"), &r),
                     200);
    json_decref(r);
    free(content);
}

struct samefile {
    struct kernel_fixture *kf;
    int t, n_ok;
};

static void *same_writer(void *ud)
{
    struct samefile *w = ud;
    char content[64];
    for (int i = 0; i < 10; i++) {
        snprintf(content, sizeof content, "writer %d, write %d", w->t, i);
        if (query(w->kf, "racer", "storage", "write",
                  json_pack("{s:s,s:s}", "file_path", "shared.txt", "content", content),
                  NULL) == 200)
            w->n_ok++;
    }
    return NULL;
}

static void test_same_file_from_both_kernels(void **state)
{
    (void)state;
    /* four writers (two per kernel) replace one file: afterwards the file
     * on disk is the newest version of its history, and the history has a
     * version for every acknowledged write (versions commit in the order
     * the files are renamed, across kernels too) */
    struct samefile w[4];
    pthread_t th[4];
    for (int t = 0; t < 4; t++) {
        w[t] = (struct samefile){.kf = t % 2 ? g_b : g_a, .t = t};
        assert_int_equal(pthread_create(&th[t], NULL, same_writer, &w[t]), 0);
    }
    int ok = 0;
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        ok += w[t].n_ok;
    }
    assert_int_equal(ok, 40);
    char *got = read_file(g_a, "racer", "shared.txt");
    assert_non_null(got);
    char hex[65];
    sto_sha256_hex(got, strlen(got), hex);
    json_t *r = NULL;
    assert_int_equal(query(g_b, "racer", "storage", "history",
                           json_pack("{s:s}", "file_path", "shared.txt"), &r), 200);
    json_t *newest = json_array_get(json_object_get(r, "versions"), 0);
    assert_string_equal(json_string_value(json_object_get(newest, "sha256")), hex);
    assert_int_equal(json_integer_value(json_object_get(newest, "version")), 40);
    json_decref(r);
    free(got);
}

struct spender {
    struct kernel_fixture *kf;
    const char *tok;
    int n_ok, n_429, n_other;
    long long spent;
};

static void *spend(void *ud)
{
    struct spender *s = ud;
    for (int i = 0; i < 40 && s->n_429 < 3; i++) {
        json_t *j = NULL;
        long st = kf_call_as(s->kf, s->tok, NULL, "POST", "/v1/chat/completions",
                             "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\","
                             "\"content\":\"count the boats\"}],\"max_tokens\":12}", &j);
        if (st == 200) {
            s->n_ok++;
            s->spent += json_integer_value(
                json_object_get(json_object_get(j, "usage"), "total_tokens"));
        } else if (st == 429) {
            s->n_429++;
        } else {
            s->n_other++;
        }
        json_decref(j);
    }
    return NULL;
}

static void test_token_budget_holds_across_kernels(void **state)
{
    (void)state;
    /* one agent spends its budget through both kernels at once: the
     * tokens its answered calls used stay within the one limit (two
     * per-kernel counters would let it spend about twice) */
    char tok[128];
    kf_register_agent(g_a, "spender", tok, sizeof tok);
    until_status(g_b, tok, 200);
    struct spender s[4];
    pthread_t th[4];
    for (int t = 0; t < 4; t++) {
        s[t] = (struct spender){.kf = t % 2 ? g_b : g_a, .tok = tok};
        assert_int_equal(pthread_create(&th[t], NULL, spend, &s[t]), 0);
    }
    long long spent = 0;
    int ok = 0, refused = 0;
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(s[t].n_other, 0);
        spent += s[t].spent;
        ok += s[t].n_ok;
        refused += s[t].n_429;
    }
    fprintf(stderr, "[ measured ] %d calls answered (%lld tokens), %d refused, budget %d\n", ok,
            spent, refused, TOKEN_BUDGET);
    assert_true(ok > 0);
    assert_true(refused > 0);
    assert_true(spent <= TOKEN_BUDGET);
    /* both kernels report the one row */
    json_t *j = NULL;
    assert_int_equal(kf_call(g_b, "GET", "/access/budgets?agent=spender", NULL, &j), 200);
    json_t *row = json_array_get(json_object_get(j, "budgets"), 0);
    assert_int_equal(json_integer_value(json_object_get(row, "used")), spent);
    json_decref(j);
}

/* a Responses API chain made on A is continued on B: the stored response
 * is the database's, not A's */
static void test_response_continued_on_other(void **state)
{
    (void)state;
    json_t *a = NULL;
    long st = kf_call(g_a, "POST", "/v1/responses",
                      "{\"model\":\"aios-tiny\",\"instructions\":\"Be brief.\",\"input\":"
                      "\"Where is the ferry?\",\"max_output_tokens\":6,\"temperature\":0}",
                      &a);
    expect_status(st, 200, a);
    const char *id = json_string_value(json_object_get(a, "id"));
    assert_non_null(id);
    char body[512], path[160];
    snprintf(body, sizeof body,
             "{\"model\":\"aios-tiny\",\"previous_response_id\":\"%s\",\"input\":"
             "\"And when does it leave?\",\"max_output_tokens\":6,\"temperature\":0}", id);
    json_t *b = NULL;
    st = kf_call(g_b, "POST", "/v1/responses", body, &b);
    expect_status(st, 200, b);
    assert_string_equal(json_string_value(json_object_get(b, "previous_response_id")), id);
    /* B rebuilt the conversation from A's stored items: its prompt holds
     * the first turn too */
    json_int_t in_a = json_integer_value(json_object_get(json_object_get(a, "usage"),
                                                         "input_tokens"));
    json_int_t in_b = json_integer_value(json_object_get(json_object_get(b, "usage"),
                                                         "input_tokens"));
    assert_true(in_b > in_a);
    /* B's response is read on A, A's deleted on B */
    snprintf(path, sizeof path, "/v1/responses/%s",
             json_string_value(json_object_get(b, "id")));
    json_t *g = NULL;
    expect_status(kf_call(g_a, "GET", path, NULL, &g), 200, g);
    json_decref(g);
    snprintf(path, sizeof path, "/v1/responses/%s", id);
    expect_status(kf_call(g_b, "DELETE", path, NULL, &g), 200, g);
    json_decref(g);
    expect_status(kf_call(g_a, "GET", path, NULL, &g), 404, g);
    json_decref(g);
    json_decref(a);
    json_decref(b);
}

/* one request with an agent token; 0 when no answer came (the kernel was
 * killed under it); *out the body */
static long raw_as(struct kernel_fixture *kf, const char *tok, const char *method,
                   const char *path, const char *body, json_t **out)
{
    char url[200], auth[300];
    snprintf(url, sizeof url, "%s%s", kf->child.base, path);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", tok);
    const char *hdrs[] = {auth, NULL};
    struct hc_resp resp;
    memset(&resp, 0, sizeof resp);
    long st = hc_call_h(method, url, body, body ? strlen(body) : 0, hdrs, &resp, 120) == 0
                  ? resp.status
                  : 0;
    if (out) *out = st ? json_loadb(resp.body, resp.len, 0, NULL) : NULL;
    hc_resp_free(&resp);
    return st;
}

struct bgcall {
    pthread_t th;
    struct kernel_fixture *kf;
    const char *tok, *path;
    char body[512];
    long status;
    json_t *out;
};

static void *bg_main(void *ud)
{
    struct bgcall *c = ud;
    c->status = raw_as(c->kf, c->tok, "POST", c->path, c->body, &c->out);
    return NULL;
}

static void bg_start(struct bgcall *c, struct kernel_fixture *kf, const char *tok,
                     const char *path, const char *body)
{
    c->kf = kf;
    c->tok = tok;
    c->path = path;
    snprintf(c->body, sizeof c->body, "%s", body);
    c->status = 0;
    c->out = NULL;
    assert_int_equal(pthread_create(&c->th, NULL, bg_main, c), 0);
}

/* on kf, the pending approval whose `what` names needle (polled up to a
 * minute); its id and (kernel the approvals are listed on) */
static long wait_approval(struct kernel_fixture *kf, const char *needle)
{
    for (int i = 0; i < 1200; i++) {
        json_t *j = NULL;
        assert_int_equal(kf_call(kf, "GET", "/access/approvals", NULL, &j), 200);
        size_t k;
        json_t *a;
        long id = 0;
        json_array_foreach(json_object_get(j, "approvals"), k, a) {
            const char *w = json_string_value(json_object_get(a, "what"));
            if (w && strstr(w, needle)) id = (long)json_integer_value(json_object_get(a, "id"));
        }
        json_decref(j);
        if (id) return id;
        usleep(50000);
    }
    fail_msg("no pending approval for %s", needle);
    return 0;
}

static void test_approval_decided_on_other(void **state)
{
    (void)state;
    char tok[128];
    kf_register_agent(g_a, "cleaner", tok, sizeof tok);
    until_status(g_b, tok, 200);
    const char *wr = "{\"agent_name\":\"cleaner\",\"query_type\":\"storage\",\"query_data\":"
                     "{\"operation_type\":\"write\",\"params\":{\"file_path\":\"old/%s\","
                     "\"content\":\"stale\"}}}";
    char body[512];
    json_t *j = NULL;
    snprintf(body, sizeof body, wr, "a.txt");
    expect_status(raw_as(g_a, tok, "POST", "/query", body, &j), 200, j);
    json_decref(j);
    const char *del = "{\"agent_name\":\"cleaner\",\"query_type\":\"storage\",\"query_data\":"
                      "{\"operation_type\":\"delete_file\",\"params\":{\"file_path\":"
                      "\"old/a.txt\"}}}";

    /* parked on A, denied on B: A answers 403 with B's reason, the file stays */
    struct bgcall c;
    bg_start(&c, g_a, tok, "/query", del);
    long id = wait_approval(g_b, "old/a.txt");
    char path[128];
    snprintf(path, sizeof path, "/access/approvals/%ld/deny", id);
    expect_status(kf_call(g_b, "POST", path, "{\"reason\":\"keep it\"}", &j), 200, j);
    json_decref(j);
    pthread_join(c.th, NULL);
    expect_status(c.status, 403, c.out);
    assert_error_body(c.out, "keep it");
    json_decref(c.out);
    char *got = read_file(g_b, "cleaner", "old/a.txt");
    assert_non_null(got);
    free(got);
    /* decided, ended: gone from the list of both, a second decision 404 */
    expect_status(kf_call(g_a, "POST", path, NULL, &j), 404, j);
    json_decref(j);

    /* parked on A, listed on A too, approved on B: deleted */
    bg_start(&c, g_a, tok, "/query", del);
    id = wait_approval(g_b, "old/a.txt");
    assert_int_equal(wait_approval(g_a, "old/a.txt"), id);
    snprintf(path, sizeof path, "/core/approvals/%ld", id);
    expect_status(kf_call(g_b, "POST", path, "{\"decision\":\"approve\"}", &j), 200, j);
    json_decref(j);
    /* the same approval decided again, on A: already decided (409) or
     * already ended (404), never a second decision */
    long again = kf_call(g_a, "POST", path, "{\"decision\":\"deny\"}", &j);
    assert_true(again == 409 || again == 404);
    json_decref(j);
    pthread_join(c.th, NULL);
    expect_status(c.status, 200, c.out);
    json_decref(c.out);
    json_t *r = NULL;
    assert_int_equal(query(g_b, "cleaner", "storage", "read",
                           json_pack("{s:s}", "file_path", "old/a.txt"), &r), 404);
    json_decref(r);
    /* an id no kernel holds */
    expect_status(kf_call(g_b, "POST", "/access/approvals/999999/approve", NULL, &j), 404, j);
    json_decref(j);
}

/* reserved tokens of agent on kf's view of the database (-1: no row) */
static long long reserved_of(struct kernel_fixture *kf, const char *agent, long long *used)
{
    char path[128];
    snprintf(path, sizeof path, "/access/budgets?agent=%s", agent);
    json_t *j = NULL;
    assert_int_equal(kf_call(kf, "GET", path, NULL, &j), 200);
    json_t *row = json_array_get(json_object_get(j, "budgets"), 0);
    long long r = row ? (long long)json_integer_value(json_object_get(row, "reserved")) : -1;
    if (used) *used = row ? (long long)json_integer_value(json_object_get(row, "used")) : 0;
    json_decref(j);
    return r;
}

/* a killed kernel's fixture: its directories removed, the struct freed */
static void drop_killed(struct kernel_fixture *kf)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", kf->dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", kf->dir);
    if (kf->cfgdir[0]) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", kf->cfgdir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", kf->cfgdir);
    }
    free(kf);
}

static void test_reservation_back_after_crash(void **state)
{
    (void)state;
    /* a third kernel admits a budgeted call (its reservation: prompt +
     * CRASH_MAX_TOKENS of CRASH_BUDGET) and is SIGKILLed while the call
     * runs: nothing on it will ever release the reservation. Once its
     * lease runs out, B counts it no more, and the whole budget is there
     * for a call of the same size. (When the call ended before the kill,
     * the attempt proves nothing and is made again with a fresh agent.) */
    char body[256];
    snprintf(body, sizeof body,
             "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"tell a "
             "long story\"}],\"max_tokens\":%d}", CRASH_MAX_TOKENS);
    for (int attempt = 0; attempt < 5; attempt++) {
        char agent[32], tok[128];
        snprintf(agent, sizeof agent, "crash%d", attempt);
        struct kernel_fixture *c = kf_start_config(g_yaml);
        kf_register_agent(c, agent, tok, sizeof tok);
        struct bgcall call;
        bg_start(&call, c, tok, "/v1/chat/completions", body);
        long long seen = 0;
        for (int i = 0; i < 6000 && seen <= 0; i++) {
            seen = reserved_of(g_b, agent, NULL);
            if (seen <= 0) usleep(2000);
        }
        assert_int_equal(kill(c->child.pid, SIGKILL), 0);
        int status = 0;
        waitpid(c->child.pid, &status, 0);
        pthread_join(call.th, NULL);
        json_decref(call.out);
        drop_killed(c);
        long long used = 0, held = reserved_of(g_b, agent, &used);
        if (held <= 0) {
            fprintf(stderr, "attempt %d: the call ended before the kill (status %ld); again\n",
                    attempt, call.status);
            continue;
        }
        assert_true(held > CRASH_BUDGET - CRASH_MAX_TOKENS); /* a second one does not fit now */
        double t0 = now_s();
        long long left = held;
        for (int i = 0; i < 6000 && left > 0; i++) {
            left = reserved_of(g_b, agent, NULL);
            if (left > 0) usleep(10000);
        }
        if (left > 0) fail_msg("%lld tokens stay reserved by the killed kernel", left);
        fprintf(stderr, "[ measured ] a kernel killed mid-call held %lld tokens; B counted them "
                "no more %.2f s after the kill (state.lease_s %d)\n", held, now_s() - t0,
                LEASE_S);
        /* the budget is whole: a call of the same size is admitted on B */
        json_t *j = NULL;
        long st = raw_as(g_b, tok, "POST", "/v1/chat/completions", body, &j);
        expect_status(st, 200, j);
        json_decref(j);
        (void)used;
        return;
    }
    fail_msg("the budgeted call always ended before the kill");
}

#define KW_THREADS 4

struct kwriter {
    struct kernel_fixture *kf;
    int t;
    int acked; /* the highest i acknowledged (notes and files), atomic */
};

static void *kill_writer(void *ud)
{
    struct kwriter *w = ud;
    char agent[32], id[32], content[96];
    snprintf(agent, sizeof agent, "killed%d", w->t);
    for (int i = 0; i < 100000; i++) {
        snprintf(id, sizeof id, "n%d", i);
        snprintf(content, sizeof content, "note %d of writer %d", i, w->t);
        long st = query(w->kf, agent, "memory", "add_memory",
                        json_pack("{s:s,s:s}", "content", content, "memory_id", id), NULL);
        if (st != 200) break;
        snprintf(id, sizeof id, "f%d.txt", i);
        snprintf(content, sizeof content, "file %d of writer %d", i, w->t);
        st = query(w->kf, agent, "storage", "write",
                   json_pack("{s:s,s:s}", "file_path", id, "content", content), NULL);
        if (st != 200) break;
        __atomic_store_n(&w->acked, i, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

static void test_kill_one_mid_write(void **state)
{
    (void)state;
    struct kwriter w[KW_THREADS];
    pthread_t th[KW_THREADS];
    for (int t = 0; t < KW_THREADS; t++) {
        w[t] = (struct kwriter){.kf = g_a, .t = t, .acked = -1};
        assert_int_equal(pthread_create(&th[t], NULL, kill_writer, &w[t]), 0);
    }
    for (int i = 0; i < 6000; i++) {
        bool ready = true;
        for (int t = 0; t < KW_THREADS; t++)
            if (__atomic_load_n(&w[t].acked, __ATOMIC_SEQ_CST) < 10) ready = false;
        if (ready) break;
        usleep(10000);
    }
    usleep((useconds_t)(rand() % 20000));
    assert_int_equal(kill(g_a->child.pid, SIGKILL), 0);
    for (int t = 0; t < KW_THREADS; t++) pthread_join(th[t], NULL);
    int status = 0;
    waitpid(g_a->child.pid, &status, 0);
    assert_true(WIFSIGNALED(status));
    int total = 0;
    /* the other kernel has every acknowledged write */
    for (int t = 0; t < KW_THREADS; t++) {
        char agent[32], id[32], want[96];
        snprintf(agent, sizeof agent, "killed%d", t);
        assert_true(w[t].acked >= 10); /* the kill came mid-stream */
        for (int i = 0; i <= w[t].acked; i++) {
            snprintf(id, sizeof id, "n%d", i);
            snprintf(want, sizeof want, "note %d of writer %d", i, t);
            char *got = get_note(g_b, agent, id);
            if (!got || strcmp(got, want))
                fail_msg("%s note %s: acknowledged by the killed kernel, read on the other: %s",
                         agent, id, got ? got : "(absent)");
            free(got);
            snprintf(id, sizeof id, "f%d.txt", i);
            snprintf(want, sizeof want, "file %d of writer %d", i, t);
            got = read_file(g_b, agent, id);
            if (!got || strcmp(got, want))
                fail_msg("%s file %s: acknowledged by the killed kernel, read on the other: %s",
                         agent, id, got ? got : "(absent)");
            free(got);
            total += 2;
        }
    }
    fprintf(stderr, "[ measured ] killed kernel A after %d acknowledged writes; all on B\n", total);
    drop_killed(g_a);
    g_a = NULL;
}

int main(void)
{
    /* this test names its own database: no AIOS_STATE_URL of a variant */
    unsetenv("AIOS_TEST_STATE");
    unsetenv("AIOS_STATE_URL");
    if (!kf_pg_available()) {
        fprintf(stderr, "SKIPPED: the PostgreSQL binaries (initdb, pg_ctl) are not installed\n");
        return 77;
    }
    srand((unsigned)time(NULL));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_on_one_read_on_other),
        cmocka_unit_test(test_token_replaced_on_one_refused_by_other),
        cmocka_unit_test(test_quota_holds_across_kernels),
        cmocka_unit_test(test_memory_quota_holds_across_kernels),
        cmocka_unit_test(test_same_file_from_both_kernels),
        cmocka_unit_test(test_token_budget_holds_across_kernels),
        cmocka_unit_test(test_response_continued_on_other),
        cmocka_unit_test(test_approval_decided_on_other),
        cmocka_unit_test(test_reservation_back_after_crash),
        cmocka_unit_test(test_kill_one_mid_write),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
