/* Integration: the memory manager through real HTTP `POST /query`
 * (query_type "memory") on a real kernel with a small working-set quota:
 * every operation in the AIOS shapes, per-agent isolation (another agent's
 * ids are 404 and never in its search results), LRU-K eviction and
 * transparent fault-back with nothing lost, add_agentic_memory making a real
 * LLM syscall, memory.auto_extract storing chat turns, bad params -> 400
 * with a message, and notes surviving a kernel restart and a SIGKILL. */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_tmp[64], g_cfg[128];

static struct kernel_fixture *start(void)
{
    const char *args[] = {"--config", g_cfg, NULL};
    return kf_start(args);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_tmp, sizeof g_tmp, "/tmp/aios-it-mem-XXXXXX");
    if (!mkdtemp(g_tmp)) return -1;
    snprintf(g_cfg, sizeof g_cfg, "%s/config.yaml", g_tmp);
    FILE *f = fopen(g_cfg, "w");
    if (!f) return -1;
    /* the database outside the fixture's data dir, so a restart finds it */
    fprintf(f, "memory:\n  quota_bytes: 2048\n  agentic_max_tokens: 4\n  synchronous: normal\n"
               "  auto_extract: true\n"
               "  db_path: %s/memory.db\n", g_tmp);
    fclose(f);
    g_kf = start();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    kf_stop(g_kf);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    return system(cmd) == 0 ? 0 : -1;
}

/* POST /query {agent, memory, op, params}; returns the status, *resp the
 * "response" object (owned by *top) */
static long mq(const char *agent, const char *op, const char *params, json_t **top)
{
    size_t n = strlen(params) + strlen(agent) + strlen(op) + 160;
    char *body = malloc(n);
    snprintf(body, n,
             "{\"agent_name\":\"%s\",\"query_type\":\"memory\",\"query_data\":{\"query_class\":"
             "\"memory\",\"operation_type\":\"%s\",\"params\":%s}}", agent, op, params);
    json_t *j = NULL;
    long st = kf_call(g_kf, "POST", "/query", body, &j);
    free(body);
    *top = j;
    return st;
}

static json_t *ok(const char *agent, const char *op, const char *params, json_t **top)
{
    long st = mq(agent, op, params, top);
    if (st != 200) {
        char *s = json_dumps(*top, 0);
        fail_msg("%s %s %s -> %ld %s", agent, op, params, st, s ? s : "");
    }
    json_t *r = json_object_get(*top, "response");
    assert_string_equal(json_string_value(json_object_get(r, "response_class")), "memory");
    assert_true(json_is_true(json_object_get(r, "success")));
    assert_true(json_is_null(json_object_get(r, "error")));
    /* every field of the reference's MemoryResponse is present */
    const char *keys[] = {"memory_id", "content", "metadata", "search_results"};
    for (int i = 0; i < 4; i++) assert_non_null(json_object_get(r, keys[i]));
    assert_int_equal(json_array_size(json_object_get(*top, "turnaround_times")), 1);
    return r;
}

static void err(const char *agent, const char *op, const char *params, long status, const char *needle)
{
    json_t *top = NULL;
    long st = mq(agent, op, params, &top);
    if (st != status) fail_msg("%s %s %s: expected %ld got %ld", agent, op, params, status, st);
    assert_error_body(top, needle);
    json_decref(top);
}

static void test_operations(void **state)
{
    (void)state;
    json_t *t1, *t2;
    json_t *r = ok("ops", "add_memory",
                   "{\"content\":\"The launch review is on Friday at noon\",\"metadata\":"
                   "{\"keywords\":[\"launch\",\"review\"],\"tags\":[\"calendar\"],\"category\":\"Work\","
                   "\"priority\":\"high\"}}", &t1);
    const char *id = json_string_value(json_object_get(r, "memory_id"));
    assert_non_null(id);
    char p[256];
    snprintf(p, sizeof p, "{\"memory_id\":\"%s\"}", id);
    r = ok("ops", "get_memory", p, &t2);
    assert_string_equal(json_string_value(json_object_get(r, "content")), "The launch review is on Friday at noon");
    json_t *md = json_object_get(r, "metadata");
    assert_string_equal(json_string_value(json_object_get(md, "category")), "Work");
    assert_string_equal(json_string_value(json_object_get(md, "priority")), "high");
    assert_string_equal(json_string_value(json_array_get(json_object_get(md, "tags"), 0)), "calendar");
    assert_int_equal(json_string_length(json_object_get(md, "timestamp")), 12);
    json_decref(t2);

    snprintf(p, sizeof p, "{\"memory_id\":\"%s\",\"content\":\"The launch review moved to Monday\",\"metadata\":{\"tags\":[\"moved\"]}}", id);
    r = ok("ops", "update_memory", p, &t2);
    assert_string_equal(json_string_value(json_object_get(r, "memory_id")), id);
    json_decref(t2);

    r = ok("ops", "retrieve_memory", "{\"content\":\"when is the launch review\",\"k\":3}", &t2);
    json_t *hit = json_array_get(json_object_get(r, "search_results"), 0);
    assert_string_equal(json_string_value(json_object_get(hit, "memory_id")), id);
    assert_string_equal(json_string_value(json_object_get(hit, "content")), "The launch review moved to Monday");
    assert_true(json_number_value(json_object_get(hit, "score")) > 0);
    assert_string_equal(json_string_value(json_array_get(json_object_get(hit, "tags"), 0)), "moved");
    json_decref(t2);

    r = ok("ops", "retrieve_memory_raw", "{\"content\":\"monday\"}", &t2);
    hit = json_array_get(json_object_get(r, "search_results"), 0);
    assert_string_equal(json_string_value(json_object_get(hit, "id")), id);
    assert_int_equal(json_integer_value(json_object_get(hit, "retrieval_count")), 1);
    assert_true(json_is_array(json_object_get(hit, "evolution_history")));
    json_decref(t2);

    snprintf(p, sizeof p, "{\"memory_id\":\"%s\"}", id);
    ok("ops", "remove_memory", p, &t2);
    json_decref(t2);
    err("ops", "get_memory", p, 404, "no memory");
    json_decref(t1);
}

static void test_agentic_uses_the_model(void **state)
{
    (void)state;
    json_t *st = NULL, *t = NULL;
    assert_int_equal(kf_call(g_kf, "GET", "/status", NULL, &st), 200);
    json_int_t before = json_integer_value(json_object_get(json_object_get(st, "scheduler"), "submitted"));
    json_decref(st);
    json_t *r = ok("ag", "add_agentic_memory",
                   "{\"content\":\"Grandma's apple pie recipe: apples, butter, flour. Bake the pie for an hour.\"}", &t);
    json_t *md = json_object_get(r, "metadata");
    const char *src = json_string_value(json_object_get(md, "analysis"));
    assert_non_null(src); /* "keywords" with the random-weight model */
    assert_true(json_array_size(json_object_get(md, "keywords")) > 0);
    assert_true(json_array_size(json_object_get(md, "tags")) > 0);
    assert_true(json_string_length(json_object_get(md, "context")) > 0);
    char p[128];
    snprintf(p, sizeof p, "{\"memory_id\":\"%s\"}", json_string_value(json_object_get(r, "memory_id")));
    json_decref(t);
    r = ok("ag", "get_memory", p, &t);
    assert_true(json_array_size(json_object_get(json_object_get(r, "metadata"), "keywords")) > 0);
    json_decref(t);
    assert_int_equal(kf_call(g_kf, "GET", "/status", NULL, &st), 200);
    json_int_t after = json_integer_value(json_object_get(json_object_get(st, "scheduler"), "submitted"));
    json_decref(st);
    /* the memory syscall, the LLM syscall it made, and the get */
    assert_true(after - before >= 3);
}

static void test_isolation(void **state)
{
    (void)state;
    json_t *t1, *t2;
    json_t *r = ok("alice", "add_memory", "{\"content\":\"alice secret: the vault code is zebra\"}", &t1);
    const char *id = json_string_value(json_object_get(r, "memory_id"));
    char p[256];
    snprintf(p, sizeof p, "{\"memory_id\":\"%s\"}", id);
    err("bob", "get_memory", p, 404, "no memory");
    err("bob", "remove_memory", p, 404, "no memory");
    snprintf(p, sizeof p, "{\"memory_id\":\"%s\",\"content\":\"overwritten by bob\"}", id);
    err("bob", "update_memory", p, 404, "no memory");
    /* the same 404 as for an id that exists nowhere */
    err("bob", "get_memory", "{\"memory_id\":\"no-such-id\"}", 404, "no memory");
    r = ok("bob", "retrieve_memory", "{\"content\":\"vault code zebra secret\",\"k\":10}", &t2);
    assert_int_equal(json_array_size(json_object_get(r, "search_results")), 0);
    json_decref(t2);
    r = ok("bob", "retrieve_memory_raw", "{\"content\":\"vault zebra\"}", &t2);
    assert_int_equal(json_array_size(json_object_get(r, "search_results")), 0);
    json_decref(t2);
    /* alice's note is untouched */
    snprintf(p, sizeof p, "{\"memory_id\":\"%s\"}", id);
    r = ok("alice", "get_memory", p, &t2);
    assert_string_equal(json_string_value(json_object_get(r, "content")), "alice secret: the vault code is zebra");
    json_decref(t2);
    json_decref(t1);
}


/* how many notes a retrieve_memory (k = 5) of agent's finds for text */
static size_t n_found(const char *agent, const char *text)
{
    char p[128];
    json_t *t;
    snprintf(p, sizeof p, "{\"content\":\"%s\",\"k\":5}", text);
    size_t n = json_array_size(json_object_get(ok(agent, "retrieve_memory", p, &t), "search_results"));
    json_decref(t);
    return n;
}

/* An agent with more notes than the index in RAM needs (docs/memory.md,
 * "The index in RAM"): its retrievals are answered from RAM (the first
 * builds the index on a pool thread, later ones run on the HTTP thread),
 * follow updates and removals at once, count as accesses, and never see
 * another agent's notes. */
static void test_many_notes_from_ram(void **state)
{
    (void)state;
    json_t *t, *t2;
    char p[256], zebra[64] = "";
    for (int i = 0; i < 300; i++) {
        snprintf(p, sizeof p, "{\"content\":\"entry %d about topic t%d in room r%d%s\"}", i, i % 7,
                 i % 5, i == 150 ? " for the zebra migration" : "");
        json_t *r = ok("many", "add_memory", p, &t);
        if (i == 150) snprintf(zebra, sizeof zebra, "%s", json_string_value(json_object_get(r, "memory_id")));
        json_decref(t);
    }
    ok("other", "add_memory", "{\"content\":\"the zebra migration of another agent\"}", &t);
    json_decref(t);
    for (int round = 0; round < 3; round++) { /* builds, then from RAM */
        json_t *r = ok("many", "retrieve_memory", "{\"content\":\"zebra migration\",\"k\":5}", &t);
        json_t *res = json_object_get(r, "search_results");
        assert_int_equal(json_array_size(res), 1);
        assert_string_equal(json_string_value(json_object_get(json_array_get(res, 0), "memory_id")), zebra);
        json_decref(t);
    }
    /* common words: five, best first, the same five each time */
    json_t *r = ok("many", "retrieve_memory", "{\"content\":\"entry topic t3 room\",\"k\":5}", &t);
    json_t *a = json_object_get(r, "search_results");
    assert_int_equal(json_array_size(a), 5);
    for (size_t i = 1; i < 5; i++)
        assert_true(json_number_value(json_object_get(json_array_get(a, i - 1), "score")) >=
                    json_number_value(json_object_get(json_array_get(a, i), "score")));
    r = ok("many", "retrieve_memory_raw", "{\"content\":\"entry topic t3 room\",\"k\":5}", &t2);
    json_t *b = json_object_get(r, "search_results");
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(json_string_value(json_object_get(json_array_get(a, i), "memory_id")),
                            json_string_value(json_object_get(json_array_get(b, i), "id")));
        /* the retrieval before counted */
        assert_true(json_integer_value(json_object_get(json_array_get(b, i), "retrieval_count")) >= 1);
    }
    json_decref(t);
    json_decref(t2);
    /* an update and a removal are seen by the next retrieval */
    snprintf(p, sizeof p, "{\"memory_id\":\"%s\",\"content\":\"the yak migration\"}", zebra);
    ok("many", "update_memory", p, &t);
    json_decref(t);
    assert_int_equal(n_found("many", "zebra"), 0);
    assert_int_equal(n_found("many", "yak"), 1);
    snprintf(p, sizeof p, "{\"memory_id\":\"%s\"}", zebra);
    ok("many", "remove_memory", p, &t);
    json_decref(t);
    assert_int_equal(n_found("many", "yak migration"), 0);
    assert_int_equal(n_found("other", "zebra migration"), 1);
}

static json_t *stats(const char *agent, json_t **top)
{
    json_t *r = ok(agent, "memory_stats", "{}", top);
    return json_object_get(r, "metadata");
}

static bool in_order(json_t *md, const char *id)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(md, "eviction_order"), i, v)
        if (!strcmp(json_string_value(v), id)) return true;
    return false;
}

static void test_eviction_and_fault_back(void **state)
{
    (void)state;
    json_t *t;
    char p[256], id[32];
    /* n0 is read twice (hot); then notes are added until the 2 KiB working
     * set overflows */
    snprintf(p, sizeof p, "{\"memory_id\":\"n0\",\"content\":\"note number 0 about the ocean\"}");
    ok("ev", "add_memory", p, &t);
    json_decref(t);
    ok("ev", "get_memory", "{\"memory_id\":\"n0\"}", &t);
    json_decref(t);
    int n = 1;
    for (;; n++) {
        assert_true(n < 50);
        snprintf(p, sizeof p, "{\"memory_id\":\"n%d\",\"content\":\"note number %d about the ocean\"}", n, n);
        ok("ev", "add_memory", p, &t);
        json_decref(t);
        json_t *md = stats("ev", &t);
        json_int_t ev = json_integer_value(json_object_get(md, "n_evictions"));
        if (ev > 0) {
            assert_int_equal(ev, 1);
            /* the victim is n1: once-touched and oldest, not the hot n0 */
            assert_false(in_order(md, "n1"));
            assert_true(in_order(md, "n0"));
            assert_true(json_integer_value(json_object_get(md, "resident_bytes")) <= 2048);
            assert_int_equal(json_integer_value(json_object_get(md, "n_notes")), n + 1);
            json_decref(t);
            break;
        }
        json_decref(t);
    }
    /* faulting n1 back: transparent to the agent */
    json_t *r = ok("ev", "get_memory", "{\"memory_id\":\"n1\"}", &t);
    assert_string_equal(json_string_value(json_object_get(r, "content")), "note number 1 about the ocean");
    json_decref(t);
    json_t *md = stats("ev", &t);
    assert_int_equal(json_integer_value(json_object_get(md, "n_faults")), 1);
    assert_true(in_order(md, "n1"));
    json_decref(t);
    /* nothing lost: every note reads back, and search sees all of them */
    for (int i = 0; i <= n; i++) {
        snprintf(p, sizeof p, "{\"memory_id\":\"n%d\"}", i);
        r = ok("ev", "get_memory", p, &t);
        snprintf(id, sizeof id, "number %d ", i);
        assert_non_null(strstr(json_string_value(json_object_get(r, "content")), id));
        json_decref(t);
    }
    r = ok("ev", "retrieve_memory", "{\"content\":\"ocean\",\"k\":100}", &t);
    assert_int_equal(json_array_size(json_object_get(r, "search_results")), n + 1);
    json_decref(t);
}

static void test_bad_params(void **state)
{
    (void)state;
    err("a", "add_memory", "{}", 400, "params.content");
    err("a", "add_memory", "{\"content\":42}", 400, "params.content");
    err("a", "add_memory", "{\"content\":\"x\",\"metadata\":\"tags\"}", 400, "params.metadata");
    err("a", "get_memory", "{}", 400, "params.memory_id");
    err("a", "update_memory", "{\"content\":\"x\"}", 400, "params.memory_id");
    err("a", "remove_memory", "{\"memory_id\":[1]}", 400, "params.memory_id");
    err("a", "retrieve_memory", "{\"k\":3}", 400, "params.content");
    err("a", "retrieve_memory", "{\"content\":\"x\",\"k\":-1}", 400, "params.k");
    err("a", "add_agentic_memory", "{\"content\":\"\"}", 400, "params.content");
    err("a", "teleport", "{}", 400, "unknown memory operation_type 'teleport'");
    json_t *t;
    ok("a", "add_memory", "{\"content\":\"first\",\"memory_id\":\"same\"}", &t);
    json_decref(t);
    err("a", "add_memory", "{\"content\":\"second\",\"memory_id\":\"same\"}", 409, "already has");
    /* the kernel keeps serving */
    ok("a", "get_memory", "{\"memory_id\":\"same\"}", &t);
    json_decref(t);
}

static void test_restart_keeps_notes(void **state)
{
    (void)state;
    json_t *t;
    ok("durable", "add_memory", "{\"content\":\"survives restarts\",\"memory_id\":\"keep\"}", &t);
    json_decref(t);
    kf_stop(g_kf);
    g_kf = start();
    json_t *r = ok("durable", "get_memory", "{\"memory_id\":\"keep\"}", &t);
    assert_string_equal(json_string_value(json_object_get(r, "content")), "survives restarts");
    json_decref(t);
    r = ok("durable", "retrieve_memory", "{\"content\":\"survives\"}", &t);
    assert_int_equal(json_array_size(json_object_get(r, "search_results")), 1);
    json_decref(t);
}

static void test_sigkill_keeps_acknowledged_notes(void **state)
{
    (void)state;
    json_t *t;
    char p[160];
    for (int i = 0; i < 20; i++) {
        snprintf(p, sizeof p, "{\"content\":\"acknowledged note %d before the crash\",\"memory_id\":\"k%d\"}", i, i);
        ok("crash", "add_memory", p, &t);
        json_decref(t);
    }
    /* no clean shutdown: the kernel dies at once */
    assert_int_equal(kill(g_kf->child.pid, SIGKILL), 0);
    int st = 0;
    assert_int_equal(waitpid(g_kf->child.pid, &st, 0), g_kf->child.pid);
    assert_true(WIFSIGNALED(st));
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_kf->dir);
    assert_int_equal(system(cmd), 0);
    free(g_kf);
    g_kf = start();
    for (int i = 0; i < 20; i++) {
        snprintf(p, sizeof p, "{\"memory_id\":\"k%d\"}", i);
        json_t *r = ok("crash", "get_memory", p, &t);
        snprintf(p, sizeof p, "acknowledged note %d before the crash", i);
        assert_string_equal(json_string_value(json_object_get(r, "content")), p);
        json_decref(t);
    }
    json_t *r = ok("crash", "retrieve_memory", "{\"content\":\"crash\",\"k\":50}", &t);
    assert_int_equal(json_array_size(json_object_get(r, "search_results")), 20);
    json_decref(t);
}

static void test_auto_extract(void **state)
{
    (void)state;
    const char *q = "{\"agent_name\":\"chatty\",\"query_type\":\"llm\",\"query_data\":{\"messages\":"
                    "[{\"role\":\"system\",\"content\":\"be brief\"},"
                    "{\"role\":\"user\",\"content\":\"Remember that my cat is called Miso\"}],"
                    "\"max_new_tokens\":3,\"action_type\":\"chat\"}}";
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "POST", "/query", q, &j), 200);
    const char *answer = json_string_value(json_object_get(json_object_get(j, "response"), "response_message"));
    assert_non_null(answer);
    char want[512];
    snprintf(want, sizeof want, "User: Remember that my cat is called Miso\nAssistant: %s", answer);
    json_decref(j);
    /* stored asynchronously, by a memory syscall of its own */
    json_t *t = NULL, *r = NULL;
    for (int i = 0; i < 100; i++) {
        r = ok("chatty", "retrieve_memory", "{\"content\":\"cat Miso\"}", &t);
        if (json_array_size(json_object_get(r, "search_results")) > 0) break;
        json_decref(t);
        t = NULL;
        usleep(50000);
    }
    assert_non_null(t);
    json_t *hit = json_array_get(json_object_get(r, "search_results"), 0);
    assert_string_equal(json_string_value(json_object_get(hit, "content")), want);
    assert_string_equal(json_string_value(json_object_get(hit, "category")), "conversation");
    json_decref(t);
    /* only in the caller's namespace */
    r = ok("someone-else", "retrieve_memory", "{\"content\":\"cat Miso\"}", &t);
    assert_int_equal(json_array_size(json_object_get(r, "search_results")), 0);
    json_decref(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_operations),
        cmocka_unit_test(test_isolation),
        cmocka_unit_test(test_many_notes_from_ram),
        cmocka_unit_test(test_eviction_and_fault_back),
        cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_agentic_uses_the_model),
        cmocka_unit_test(test_auto_extract),
        cmocka_unit_test(test_restart_keeps_notes),
        cmocka_unit_test(test_sigkill_keeps_acknowledged_notes),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
