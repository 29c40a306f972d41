/* Two kernels, one state: two `aios serve` processes on one PostgreSQL
 * database (started by the harness: initdb/pg_ctl as an unprivileged user)
 * and one storage root directory (docs/postgres.md). What one writes the
 * other reads (notes, files); a registered agent's token works on both and,
 * once replaced on one, is refused by the other; the storage quota holds
 * across both under concurrent writes (the owner's row lock, not per-kernel
 * counters); and when one is SIGKILLed in the middle of writes, every write
 * it acknowledged is there on the other. Skipped (77) without the
 * PostgreSQL binaries. */
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

static struct kernel_fixture *g_a, *g_b;
static char g_tmp[64];

static int group_setup(void **state)
{
    (void)state;
    const char *url = kf_pg_new_db();
    if (!url) return -1;
    snprintf(g_tmp, sizeof g_tmp, "/tmp/aios-2k-XXXXXX");
    if (!mkdtemp(g_tmp)) return -1;
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "storage:\n  root_dir: %s/root\n  quota_bytes: %d\n  quota_files: 1000\n"
             "access:\n  groups:\n    budgeted: {token_budgets: {aios-tiny: %d}}\n"
             "  agents: {spender: budgeted}\n"
             "state:\n  backend: postgres\n  url: %s\n",
             g_tmp, QUOTA_BYTES, TOKEN_BUDGET, url);
    g_a = kf_start_config(yaml);
    g_b = kf_start_config(yaml);
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

struct qwriter {
    struct kernel_fixture *kf;
    int t, n_ok, n_507, n_other;
};

static void *quota_writer(void *ud)
{
    struct qwriter *w = ud;
    char content[1001], path[32];
    memset(content, 'a' + w->t, 1000);
    content[1000] = 0;
    for (int i = 0; i < 5; i++) {
        snprintf(path, sizeof path, "q%d_%d.txt", w->t, i);
        long st = query(w->kf, "quota", "storage", "write",
                        json_pack("{s:s,s:s}", "file_path", path, "content", content), NULL);
        if (st == 200) w->n_ok++;
        else if (st == 507) w->n_507++;
        else w->n_other++;
    }
    return NULL;
}

static void test_quota_holds_across_kernels(void **state)
{
    (void)state;
    /* 4 writers (2 per kernel) of 5 files of 1000 bytes each against a
     * quota of 4096 bytes: exactly 4 may be acknowledged */
    struct qwriter w[4];
    pthread_t th[4];
    for (int t = 0; t < 4; t++) {
        w[t] = (struct qwriter){.kf = t % 2 ? g_b : g_a, .t = t};
        assert_int_equal(pthread_create(&th[t], NULL, quota_writer, &w[t]), 0);
    }
    int ok = 0, full = 0;
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        ok += w[t].n_ok;
        full += w[t].n_507;
        assert_int_equal(w[t].n_other, 0);
    }
    assert_int_equal(ok, 4);
    assert_int_equal(full, 16);
    json_t *r = NULL;
    assert_int_equal(query(g_b, "quota", "storage", "usage", json_object(), &r), 200);
    char *s = json_dumps(r, JSON_COMPACT);
    assert_non_null(strstr(s, "4000"));
    free(s);
    json_decref(r);
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
    /* A's data directory stays for its log; the fixture is gone */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_a->dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_a->dir);
    if (g_a->cfgdir[0]) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_a->cfgdir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_a->cfgdir);
    }
    free(g_a);
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
        cmocka_unit_test(test_same_file_from_both_kernels),
        cmocka_unit_test(test_token_budget_holds_across_kernels),
        cmocka_unit_test(test_kill_one_mid_write),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
