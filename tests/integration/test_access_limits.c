/* Integration test of the access manager's limits (src/access/budget.c,
 * approve.c, ns.c) on a real kernel over real HTTP with registered agent
 * tokens: token budgets per group and model (429 with the budget, used and
 * limit; windows; usage in GET /access/budgets; through /query and
 * /v1/chat/completions), approvals of storage deletes and unversioned
 * overwrites (approve, deny, timeout; audit rows; the agent is told which),
 * and memory / storage namespaces named by groups or shared by grants.
 * Every denial: a JSON error and an audit row, and the kernel keeps serving. */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_dave[80], g_wendy[80], g_erin[80], g_gina[80], g_hank[80], g_ivy[80];

#define LIMIT 300

static const char *CONFIG =
    "access:\n"
    "  approval_timeout_s: 2\n"
    "  groups:\n"
    "    budgeted:\n"
    "      models: [aios-tiny]\n"
    "      token_budgets: {aios-tiny: 300}\n"
    "    windowed:\n"
    "      token_budgets: {\"*\": {tokens: 60, window_s: 2}}\n"
    "    team:\n"
    "      memory: [ivy]\n"
    "      storage: [ivy]\n"
    "    readers:\n"
    "      memory: [\"ivy:r\"]\n"
    "      storage: [\"ivy:r\"]\n"
    "  agents: {dave: budgeted, wendy: windowed, gina: team, hank: readers}\n"
    "storage:\n"
    "  max_versions: 1\n";

/* requests with a token and no other header, agents registered by the
 * admin (harness.c), on this group's kernel */
#define call_as(tok, ...) kf_call_as(g_kf, tok, NULL, __VA_ARGS__)
#define register_agent(...) kf_register_agent(g_kf, __VA_ARGS__)
#define audit_count(...) kf_audit_count(g_kf, __VA_ARGS__)

static int group_setup(void **state)
{
    (void)state;
    g_kf = kf_start_config(CONFIG);
    register_agent("dave", g_dave, sizeof g_dave);
    register_agent("wendy", g_wendy, sizeof g_wendy);
    register_agent("erin", g_erin, sizeof g_erin);
    register_agent("gina", g_gina, sizeof g_gina);
    register_agent("hank", g_hank, sizeof g_hank);
    register_agent("ivy", g_ivy, sizeof g_ivy);
    return 0;
}

/* ---- token budgets ---- */

static long llm_query(const char *tok, const char *agent, int max_new, json_t **out)
{
    char body[512];
    snprintf(body, sizeof body,
             "{\"agent_name\":\"%s\",\"query_type\":\"llm\",\"query_data\":{\"messages\":"
             "[{\"role\":\"user\",\"content\":\"Say hello\"}],\"max_new_tokens\":%d}}", agent,
             max_new);
    return call_as(tok, "POST", "/query", body, out);
}

static json_t *budget_row(const char *tok, const char *model)
{
    json_t *j = NULL;
    assert_int_equal(call_as(tok, "GET", "/access/budgets", NULL, &j), 200);
    size_t i;
    json_t *row, *found = NULL;
    json_array_foreach(json_object_get(j, "budgets"), i, row) {
        if (!strcmp(json_string_value(json_object_get(row, "model")), model))
            found = json_incref(row);
    }
    json_decref(j);
    return found;
}

static void test_budget_query_and_chat(void **state)
{
    (void)state;
    json_t *j = NULL;
    long st = llm_query(g_dave, "dave", 6, &j);
    expect_status(st, 200, j);
    json_t *usage = json_object_get(json_object_get(j, "response"), "usage");
    json_int_t spent = json_integer_value(json_object_get(usage, "prompt_tokens")) +
                       json_integer_value(json_object_get(usage, "completion_tokens"));
    assert_true(spent > 0);
    json_decref(j);

    /* the usage is the call's, visible to the agent at once */
    json_t *row = budget_row(g_dave, "aios-tiny");
    assert_non_null(row);
    assert_int_equal(json_integer_value(json_object_get(row, "used")), spent);
    assert_int_equal(json_integer_value(json_object_get(row, "limit")), LIMIT);
    assert_int_equal(json_integer_value(json_object_get(row, "reserved")), 0);
    assert_int_equal(json_integer_value(json_object_get(row, "remaining")), LIMIT - spent);
    json_decref(row);

    /* a call that would pass the limit is refused before it runs */
    st = llm_query(g_dave, "dave", LIMIT, &j);
    expect_status(st, 429, j);
    assert_error_body(j, "token budget exceeded");
    json_t *e = json_object_get(j, "error");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "token_budget_exceeded");
    json_t *b = json_object_get(e, "budget");
    assert_string_equal(json_string_value(json_object_get(b, "model")), "aios-tiny");
    assert_string_equal(json_string_value(json_object_get(b, "group")), "budgeted");
    assert_int_equal(json_integer_value(json_object_get(b, "limit")), LIMIT);
    assert_int_equal(json_integer_value(json_object_get(b, "used")), spent);
    assert_true(json_integer_value(json_object_get(b, "requested")) > LIMIT - spent);
    json_decref(j);

    /* the OpenAI route counts against the same budget */
    st = call_as(g_dave, "POST", "/v1/chat/completions",
                 "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":4}", &j);
    expect_status(st, 200, j);
    json_int_t spent2 = json_integer_value(
        json_object_get(json_object_get(j, "usage"), "total_tokens"));
    assert_true(spent2 > 0);
    json_decref(j);
    row = budget_row(g_dave, "aios-tiny");
    assert_int_equal(json_integer_value(json_object_get(row, "used")), spent + spent2);
    json_decref(row);
    st = call_as(g_dave, "POST", "/v1/chat/completions",
                 "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":290}", &j);
    expect_status(st, 429, j);
    assert_error_body(j, "aios-tiny");
    json_decref(j);
    st = call_as(g_dave, "POST", "/v1/chat/completions",
                 "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":290,"
                 "\"stream\":true}", &j);
    expect_status(st, 429, j);
    json_decref(j);

    /* audit rows for the denials; the kernel keeps serving (the operator,
     * and dave within his budget) */
    assert_true(audit_count("dave", "denied", "budget:aios-tiny", "token budget exceeded") >= 3);
    assert_int_equal(kf_call(g_kf, "GET", "/status", NULL, &j), 200);
    json_decref(j);
    st = llm_query(g_dave, "dave", 2, &j);
    expect_status(st, 200, j);
    json_decref(j);
    /* the operator sees every agent's rows; erin has no budget: no limit */
    st = llm_query(g_erin, "erin", 2, &j);
    expect_status(st, 200, j);
    json_decref(j);
    assert_int_equal(kf_call(g_kf, "GET", "/access/budgets?agent=erin", NULL, &j), 200);
    json_t *er = json_array_get(json_object_get(j, "budgets"), 0);
    assert_true(json_integer_value(json_object_get(er, "used")) > 0);
    assert_true(json_is_null(json_object_get(er, "limit")));
    json_decref(j);
    /* the CLI: aios budgets */
    char cmd[1024], buf[4096];
    snprintf(cmd, sizeof cmd, "'%s' budgets --agent dave --url %s 2>&1", aios_bin(),
             g_kf->child.base);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = 0;
    assert_int_equal(pclose(p), 0);
    if (!strstr(buf, "dave") || !strstr(buf, "of 300")) fail_msg("aios budgets: %s", buf);
}

static void test_budget_window(void **state)
{
    (void)state;
    json_t *j = NULL;
    /* no max_tokens: the call may generate what is left, never more */
    long st = llm_query(g_wendy, "wendy", 0, &j);
    if (st == 200) json_decref(j);
    else {
        /* max_new_tokens 0 may be refused as invalid: then a plain call */
        json_decref(j);
        st = call_as(g_wendy, "POST", "/v1/chat/completions",
                     "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", &j);
        expect_status(st, 200, j);
        json_decref(j);
    }
    json_t *row = budget_row(g_wendy, "aios-tiny");
    json_int_t used = json_integer_value(json_object_get(row, "used"));
    assert_true(used > 0);
    assert_true(used <= 60);
    assert_int_equal(json_integer_value(json_object_get(row, "window_s")), 2);
    json_decref(row);
    /* spend the rest, then be refused until the window ends */
    for (int i = 0; i < 10 && st != 429; i++) {
        st = llm_query(g_wendy, "wendy", 20, &j);
        json_decref(j);
    }
    assert_int_equal(st, 429);
    sleep(2);
    st = llm_query(g_wendy, "wendy", 4, &j);
    expect_status(st, 200, j);
    json_decref(j);
    assert_true(audit_count("wendy", "denied", "budget:aios-tiny", "per 2 s") >= 1);
}

static void test_budget_agent_sees_only_own(void **state)
{
    (void)state;
    json_t *j = NULL;
    assert_int_equal(call_as(g_wendy, "GET", "/access/budgets?agent=dave", NULL, &j), 200);
    size_t i;
    json_t *row;
    json_array_foreach(json_object_get(j, "budgets"), i, row)
        assert_string_equal(json_string_value(json_object_get(row, "agent")), "wendy");
    json_decref(j);
}

/* ---- storage approvals ---- */

static long storage_as(const char *tok, const char *agent, const char *op, const char *params,
                       json_t **out)
{
    char body[1024];
    snprintf(body, sizeof body,
             "{\"agent_name\":\"%s\",\"query_type\":\"storage\",\"query_data\":{"
             "\"operation_type\":\"%s\",\"params\":%s}}", agent, op, params);
    return call_as(tok, "POST", "/query", body, out);
}

struct bg_call {
    pthread_t th;
    const char *tok, *agent, *op;
    char params[512];
    long status;
    json_t *out;
};

static void *bg_main(void *ud)
{
    struct bg_call *c = ud;
    c->status = storage_as(c->tok, c->agent, c->op, c->params, &c->out);
    return NULL;
}

static void bg_start(struct bg_call *c, const char *tok, const char *agent, const char *op,
                     const char *params)
{
    c->tok = tok;
    c->agent = agent;
    c->op = op;
    snprintf(c->params, sizeof c->params, "%s", params);
    c->out = NULL;
    assert_int_equal(pthread_create(&c->th, NULL, bg_main, c), 0);
}

/* wait for a pending storage approval whose `what` contains needle; its id */
static long wait_approval(const char *needle)
{
    for (int i = 0; i < 100; i++) {
        json_t *j = NULL;
        assert_int_equal(kf_call(g_kf, "GET", "/access/approvals", NULL, &j), 200);
        size_t k;
        json_t *a;
        long id = 0;
        json_array_foreach(json_object_get(j, "approvals"), k, a) {
            const char *w = json_string_value(json_object_get(a, "what"));
            const char *kind = json_string_value(json_object_get(a, "kind"));
            if (w && strstr(w, needle) && kind && !strcmp(kind, "storage"))
                id = (long)json_integer_value(json_object_get(a, "id"));
        }
        json_decref(j);
        if (id) return id;
        usleep(50000);
    }
    fail_msg("no pending approval for %s", needle);
    return 0;
}

static void write_file(const char *tok, const char *agent, const char *path, const char *content)
{
    char p[512];
    snprintf(p, sizeof p, "{\"file_path\":\"%s\",\"content\":\"%s\"}", path, content);
    json_t *j = NULL;
    long st = storage_as(tok, agent, "write", p, &j);
    expect_status(st, 200, j);
    json_decref(j);
}

static void test_delete_approve_deny_timeout(void **state)
{
    (void)state;
    json_t *j = NULL;
    write_file(g_erin, "erin", "keep/a.txt", "one");
    write_file(g_erin, "erin", "keep/b.txt", "two");

    /* denied: the file stays, erin is told */
    struct bg_call c;
    bg_start(&c, g_erin, "erin", "delete_file", "{\"file_path\":\"keep/a.txt\"}");
    long id = wait_approval("keep/a.txt");
    char path[128];
    snprintf(path, sizeof path, "/access/approvals/%ld/deny", id);
    assert_int_equal(kf_call(g_kf, "POST", path, "{\"reason\":\"no\"}", &j), 200);
    json_decref(j);
    pthread_join(c.th, NULL);
    expect_status(c.status, 403, c.out);
    assert_error_body(c.out, "operator denied");
    json_decref(c.out);
    assert_int_equal(storage_as(g_erin, "erin", "read", "{\"file_path\":\"keep/a.txt\"}", &j),
                     200);
    json_decref(j);

    /* approved (through /core/approvals/{id}): deleted */
    bg_start(&c, g_erin, "erin", "delete_file", "{\"file_path\":\"keep/a.txt\"}");
    id = wait_approval("keep/a.txt");
    snprintf(path, sizeof path, "/core/approvals/%ld", id);
    assert_int_equal(kf_call(g_kf, "POST", path, "{\"decision\":\"approve\"}", &j), 200);
    json_decref(j);
    pthread_join(c.th, NULL);
    expect_status(c.status, 200, c.out);
    json_decref(c.out);
    assert_int_equal(storage_as(g_erin, "erin", "read", "{\"file_path\":\"keep/a.txt\"}", &j),
                     404);
    json_decref(j);

    /* nobody answers: denied after access.approval_timeout_s */
    bg_start(&c, g_erin, "erin", "delete_dir", "{\"dir_path\":\"keep\",\"recursive\":true}");
    id = wait_approval("keep");
    pthread_join(c.th, NULL);
    expect_status(c.status, 403, c.out);
    assert_error_body(c.out, "within 2 s");
    json_decref(c.out);
    assert_int_equal(storage_as(g_erin, "erin", "read", "{\"file_path\":\"keep/b.txt\"}", &j),
                     200);
    json_decref(j);

    /* nothing to delete: answered at once, no approval */
    assert_int_equal(storage_as(g_erin, "erin", "delete_file", "{\"file_path\":\"nope.txt\"}", &j),
                     404);
    json_decref(j);
    /* the operator's own deletes are not held */
    assert_int_equal(kf_call(g_kf, "POST", "/query",
                             "{\"agent_name\":\"erin\",\"query_type\":\"storage\",\"query_data\":"
                             "{\"operation_type\":\"delete_file\",\"params\":{\"file_path\":"
                             "\"keep/b.txt\"}}}", &j), 200);
    json_decref(j);

    assert_true(audit_count("erin", "awaiting_approval", "storage:delete_file", NULL) >= 2);
    assert_true(audit_count("erin", "approved", "storage:delete_file", NULL) >= 1);
    assert_true(audit_count("erin", "denied", "storage:delete_file", "operator denied") >= 1);
    assert_true(audit_count("erin", "denied_timeout", "storage:delete_dir", NULL) >= 1);
    /* the status shows while it waits: covered by the approvals list; the
     * kernel keeps serving */
    assert_int_equal(kf_call(g_kf, "GET", "/status", NULL, &j), 200);
    json_decref(j);
}

static void test_overwrite_without_version(void **state)
{
    (void)state;
    json_t *j = NULL;
    /* storage.max_versions is 1: a new file is fine, replacing one asks */
    write_file(g_erin, "erin", "once.txt", "first");
    struct bg_call c;
    bg_start(&c, g_erin, "erin", "write", "{\"file_path\":\"once.txt\",\"content\":\"second\"}");
    long id = wait_approval("overwrite the file 'once.txt'");
    char path[128];
    snprintf(path, sizeof path, "/access/approvals/%ld/approve", id);
    assert_int_equal(kf_call(g_kf, "POST", path, NULL, &j), 200);
    json_decref(j);
    pthread_join(c.th, NULL);
    expect_status(c.status, 200, c.out);
    json_decref(c.out);
    assert_int_equal(storage_as(g_erin, "erin", "read", "{\"file_path\":\"once.txt\"}", &j), 200);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(j, "response"), "content")), "second");
    json_decref(j);
    assert_true(audit_count("erin", "approved", "storage:write", NULL) >= 1);
}

/* the file tool goes through the same approval */
struct bg_tool {
    pthread_t th;
    char body[512];
    long status;
    json_t *out;
};

static void *bg_tool_main(void *ud)
{
    struct bg_tool *c = ud;
    c->status = call_as(g_erin, "POST", "/query", c->body, &c->out);
    return NULL;
}

static void test_overwrite_through_file_tool(void **state)
{
    (void)state;
    json_t *j = NULL;
    write_file(g_erin, "erin", "tool.txt", "v1");
    for (int approve = 1; approve >= 0; approve--) {
        struct bg_tool c = {.out = NULL};
        snprintf(c.body, sizeof c.body,
                 "{\"agent_name\":\"erin\",\"query_type\":\"tool\",\"query_data\":{\"tool_calls\":"
                 "[{\"name\":\"aios/write_file\",\"parameters\":{\"path\":\"tool.txt\","
                 "\"content\":\"%s\"}}]}}", approve ? "v2" : "v3");
        assert_int_equal(pthread_create(&c.th, NULL, bg_tool_main, &c), 0);
        long id = wait_approval("overwrite the file 'tool.txt'");
        char path[128];
        snprintf(path, sizeof path, "/access/approvals/%ld/%s", id, approve ? "approve" : "deny");
        assert_int_equal(kf_call(g_kf, "POST", path, "{\"reason\":\"test\"}", &j), 200);
        json_decref(j);
        pthread_join(c.th, NULL);
        if (approve) {
            expect_status(c.status, 200, c.out);
        } else {
            char *d = json_dumps(c.out, 0);
            assert_non_null(d);
            assert_non_null(strstr(d, "operator denied"));
            free(d);
        }
        json_decref(c.out);
    }
    assert_int_equal(storage_as(g_erin, "erin", "read", "{\"file_path\":\"tool.txt\"}", &j), 200);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(j, "response"), "content")), "v2");
    json_decref(j);
}

/* ---- namespaces ---- */

static long memory_as(const char *tok, const char *agent, const char *op, const char *params,
                      json_t **out)
{
    char body[1024];
    snprintf(body, sizeof body,
             "{\"agent_name\":\"%s\",\"query_type\":\"memory\",\"query_data\":{"
             "\"operation_type\":\"%s\",\"params\":%s}}", agent, op, params);
    return call_as(tok, "POST", "/query", body, out);
}

static void test_namespaces_by_group(void **state)
{
    (void)state;
    json_t *j = NULL;
    /* ivy's note and file */
    assert_int_equal(memory_as(g_ivy, "ivy", "add_memory", "{\"content\":\"ivy knows the launch "
                               "codes are 1234\"}", &j), 200);
    char get[256];
    snprintf(get, sizeof get, "{\"memory_id\":\"%s\",\"owner\":\"ivy\"}",
             json_string_value(json_object_get(json_object_get(j, "response"), "memory_id")));
    json_decref(j);
    write_file(g_ivy, "ivy", "kb/facts.txt", "ivy facts");

    /* gina's group names ivy (read-write) */
    long st = memory_as(g_gina, "gina", "get_memory", get, &j);
    expect_status(st, 200, j);
    assert_non_null(strstr(json_string_value(json_object_get(json_object_get(j, "response"),
                                                             "content")), "launch codes"));
    json_decref(j);
    st = memory_as(g_gina, "gina", "add_memory", "{\"content\":\"from gina\",\"owner\":\"ivy\"}", &j);
    expect_status(st, 200, j);
    json_decref(j);
    st = memory_as(g_gina, "gina", "retrieve_memory",
                   "{\"content\":\"launch codes\",\"k\":3,\"namespace\":\"ivy\"}", &j);
    expect_status(st, 200, j);
    json_decref(j);
    st = storage_as(g_gina, "gina", "read", "{\"file_path\":\"kb/facts.txt\",\"owner\":\"ivy\"}", &j);
    expect_status(st, 200, j);
    json_decref(j);
    st = storage_as(g_gina, "gina", "write",
                    "{\"file_path\":\"kb/gina.txt\",\"owner\":\"ivy\",\"content\":\"g\"}", &j);
    expect_status(st, 200, j);
    json_decref(j);

    /* hank's group names ivy read-only */
    st = memory_as(g_hank, "hank", "get_memory", get, &j);
    expect_status(st, 200, j);
    json_decref(j);
    st = memory_as(g_hank, "hank", "add_memory", "{\"content\":\"x\",\"owner\":\"ivy\"}", &j);
    expect_status(st, 403, j);
    assert_error_body(j, "only read");
    json_decref(j);
    st = storage_as(g_hank, "hank", "read", "{\"file_path\":\"kb/facts.txt\",\"owner\":\"ivy\"}", &j);
    expect_status(st, 200, j);
    json_decref(j);
    st = storage_as(g_hank, "hank", "write",
                    "{\"file_path\":\"kb/h.txt\",\"owner\":\"ivy\",\"content\":\"h\"}", &j);
    expect_status(st, 403, j);
    json_decref(j);

    /* erin is in no group that names ivy: not found, nothing leaks */
    st = memory_as(g_erin, "erin", "get_memory", get, &j);
    expect_status(st, 404, j);
    assert_error_body(j, "no memory namespace 'ivy'");
    json_decref(j);
    st = memory_as(g_erin, "erin", "retrieve_memory",
                   "{\"content\":\"launch codes\",\"owner\":\"ivy\"}", &j);
    expect_status(st, 404, j);
    json_decref(j);
    st = storage_as(g_erin, "erin", "read", "{\"file_path\":\"kb/facts.txt\",\"owner\":\"ivy\"}", &j);
    expect_status(st, 404, j);
    assert_error_body(j, "no such file");
    json_decref(j);
    assert_true(audit_count("erin", "denied", "memory:ivy", "not open") >= 2);
    assert_true(audit_count("erin", "denied", "storage:ivy/kb/facts.txt", "not open") >= 1);
    assert_true(audit_count("hank", "denied", "memory:ivy", "only read") >= 1);
    assert_true(audit_count("gina", "allowed", "memory:ivy", "group 'team'") >= 1);
    assert_int_equal(kf_call(g_kf, "GET", "/status", NULL, &j), 200);
    json_decref(j);
}

static void test_memory_grant_and_revoke(void **state)
{
    (void)state;
    json_t *j = NULL;
    assert_int_equal(memory_as(g_ivy, "ivy", "add_memory", "{\"content\":\"shared diary\"}", &j),
                     200);
    char get[256];
    snprintf(get, sizeof get, "{\"memory_id\":\"%s\",\"owner\":\"ivy\"}",
             json_string_value(json_object_get(json_object_get(j, "response"), "memory_id")));
    json_decref(j);
    assert_int_equal(memory_as(g_erin, "erin", "get_memory", get, &j), 404);
    json_decref(j);
    /* granted (read-only by default) */
    long st = memory_as(g_ivy, "ivy", "share_memory", "{\"agent\":\"erin\"}", &j);
    expect_status(st, 200, j);
    json_decref(j);
    st = memory_as(g_erin, "erin", "get_memory", get, &j);
    expect_status(st, 200, j);
    json_decref(j);
    st = memory_as(g_erin, "erin", "add_memory", "{\"content\":\"x\",\"owner\":\"ivy\"}", &j);
    expect_status(st, 403, j);
    json_decref(j);
    /* erin cannot pass it on or share as ivy */
    st = memory_as(g_erin, "erin", "share_memory", "{\"agent\":\"hank\",\"owner\":\"ivy\"}", &j);
    expect_status(st, 403, j);
    json_decref(j);
    st = memory_as(g_ivy, "ivy", "memory_shares", "{}", &j);
    expect_status(st, 200, j);
    json_t *given = json_object_get(json_object_get(json_object_get(j, "response"), "shares"),
                                    "given");
    assert_int_equal(json_array_size(given), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(given, 0), "grantee")),
                        "erin");
    json_decref(j);
    /* read-write grant, then revoked */
    st = memory_as(g_ivy, "ivy", "share_memory", "{\"agent\":\"erin\",\"mode\":\"rw\"}", &j);
    expect_status(st, 200, j);
    json_decref(j);
    st = memory_as(g_erin, "erin", "add_memory", "{\"content\":\"erin was here\",\"owner\":\"ivy\"}",
                   &j);
    expect_status(st, 200, j);
    json_decref(j);
    st = memory_as(g_ivy, "ivy", "unshare_memory", "{\"agent\":\"erin\"}", &j);
    expect_status(st, 200, j);
    json_decref(j);
    st = memory_as(g_erin, "erin", "get_memory", get, &j);
    expect_status(st, 404, j);
    json_decref(j);
    st = memory_as(g_ivy, "ivy", "unshare_memory", "{\"agent\":\"erin\"}", &j);
    expect_status(st, 404, j);
    json_decref(j);
    /* an expiring grant */
    st = memory_as(g_ivy, "ivy", "share_memory", "{\"agent\":\"erin\",\"expires_in\":1}", &j);
    expect_status(st, 200, j);
    json_decref(j);
    assert_int_equal(memory_as(g_erin, "erin", "get_memory", get, &j), 200);
    json_decref(j);
    usleep(1100000);
    assert_int_equal(memory_as(g_erin, "erin", "get_memory", get, &j), 404);
    json_decref(j);
    assert_true(audit_count("ivy", "allowed", "memory:ivy", "shared with agent 'erin'") >= 2);
}

/* ---- config errors stop the kernel with the key named ---- */

static void test_config_errors(void **state)
{
    (void)state;
    static const struct {
        const char *yaml, *needle;
    } cases[] = {
        {"access:\n  groups:\n    g: {token_budgets: {aios-tiny: -5}}\n",
         "access.groups.g.token_budgets.aios-tiny"},
        {"access:\n  groups:\n    g: {token_budgets: {\"*\": {tokens: 5, window_s: 0}}}\n",
         "access.groups.g.token_budgets.*"},
        {"access:\n  groups:\n    g: {memory: [\"ivy:x\"]}\n", "access.groups.g.memory"},
        {"access:\n  approvals: {storage_delete: maybe}\n", "access.approvals"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[400], cmd[1200], out[4096];
        snprintf(path, sizeof path, "%s/bad%zu.yaml", g_kf->cfgdir, i);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(cases[i].yaml, f);
        fclose(f);
        snprintf(cmd, sizeof cmd, "'%s' serve --host 127.0.0.1 --port 0 --data-dir '%s/d%zu' "
                 "--config '%s' 2>&1", aios_bin(), g_kf->cfgdir, i, path);
        FILE *p = popen(cmd, "r");
        assert_non_null(p);
        size_t n = fread(out, 1, sizeof out - 1, p);
        out[n] = 0;
        int st = pclose(p);
        assert_true(st != 0);
        if (!strstr(out, cases[i].needle)) fail_msg("no '%s' in: %s", cases[i].needle, out);
    }
}

/* budgets are saved in audit.db: a restart keeps what was used */
static void test_budget_survives_restart(void **state)
{
    (void)state;
    json_t *row = budget_row(g_dave, "aios-tiny");
    assert_non_null(row);
    json_int_t used = json_integer_value(json_object_get(row, "used"));
    json_int_t denied = json_integer_value(json_object_get(row, "denied"));
    assert_true(used > 0);
    json_decref(row);
    int st = child_stop(&g_kf->child, 60);
    assert_true(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char path[300];
    snprintf(path, sizeof path, "%s/config.yaml", g_kf->cfgdir);
    const char *extra[] = {"--config", path, NULL};
    assert_int_equal(child_start(&g_kf->child, aios_bin(), g_kf->dir, extra, 300), 0);
    row = budget_row(g_dave, "aios-tiny"); /* dave's registered token survives too */
    assert_non_null(row);
    assert_int_equal(json_integer_value(json_object_get(row, "used")), used);
    assert_int_equal(json_integer_value(json_object_get(row, "denied")), denied);
    assert_int_equal(json_integer_value(json_object_get(row, "limit")), LIMIT);
    json_decref(row);
    json_t *j = NULL;
    long s2 = llm_query(g_dave, "dave", LIMIT, &j);
    expect_status(s2, 429, j);
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget_query_and_chat),
        cmocka_unit_test(test_budget_window),
        cmocka_unit_test(test_budget_agent_sees_only_own),
        cmocka_unit_test(test_delete_approve_deny_timeout),
        cmocka_unit_test(test_overwrite_without_version),
        cmocka_unit_test(test_overwrite_through_file_tool),
        cmocka_unit_test(test_namespaces_by_group),
        cmocka_unit_test(test_memory_grant_and_revoke),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_budget_survives_restart),
    };
    return cmocka_run_group_tests(tests, group_setup, kf_group_teardown);
}
