/* Integration test of the access manager (src/access/): a real kernel over
 * real HTTP with agent tokens registered through POST /access/agents.
 * Authentication (401), admin-only routes, impersonation (403), another
 * agent's files and memory through the kernel (404), privilege groups
 * (model and tool outside the group: 403), approvals of an irreversible
 * tool (approve, deny, timeout), audit rows for each decision, the admin
 * token file's mode, and that the kernel keeps serving throughout. */
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
#include <sys/stat.h>
#include <unistd.h>

#ifndef AIOS_TOOL_FIXTURES
#error "built by tests/CMakeLists.txt with AIOS_TOOL_FIXTURES"
#endif

static char g_alice[80], g_bob[80], g_carol[80];

static const char *CONFIG =
    "access:\n"
    "  mode: enforce\n"
    "  approval_timeout_s: 2\n"
    "  groups:\n"
    "    limited: {models: [aios-tiny], tools: [aios/calculator, aios/write_file, aios/read_file]}\n"
    "    nomodel: {models: [some-other-model], tools: []}\n"
    "  agents: {alice: limited, carol: nomodel}\n"
    "tools:\n"
    "  external:\n"
    "    - {name: test/danger, command: " AIOS_TOOL_FIXTURES "/echo_args.sh, irreversible: true}\n";

/* requests with exactly these headers, agents registered by the admin
 * (harness.c), on this group's kernel */
#define call_as(...) kf_call_as(g_kf, __VA_ARGS__)
#define register_agent(...) kf_register_agent(g_kf, __VA_ARGS__)
#define audit_count(agent, decision, needle) kf_audit_count(g_kf, agent, decision, NULL, needle)

static void expect_error(long got, long want, json_t **jp, const char *needle)
{
    json_t *j = *jp; /* by pointer: read after the call that filled it */
    expect_status(got, want, j);
    assert_error_body(j, needle);
    json_decref(j);
}

static int group_setup(void **state)
{
    (void)state;
    g_kf = kf_start_config(CONFIG);
    register_agent("alice", g_alice, sizeof g_alice);
    register_agent("bob", g_bob, sizeof g_bob);
    register_agent("carol", g_carol, sizeof g_carol);
    return 0;
}

static void test_admin_token_file(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/admin.token", g_kf->dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_true(strlen(g_kf->child.token) == 64);
}

static void test_authentication(void **state)
{
    (void)state;
    json_t *j = NULL;
    const char *q = "{\"agent_name\":\"alice\",\"query_type\":\"tool\",\"query_data\":"
                    "{\"tool_calls\":[{\"name\":\"aios/calculator\",\"parameters\":"
                    "{\"expression\":\"1+1\"}}]}}";
    expect_error(call_as(NULL, NULL, "POST", "/query", q, &j), 401, &j, "no token");
    expect_error(call_as("0123456789abcdef0123456789abcdef", NULL, "POST", "/query", q, &j), 401,
                 &j, "not valid");
    expect_error(call_as(NULL, "X-Aios-Agent-Token: nope", "POST", "/query", q, &j), 401, &j,
                 "not valid");
    /* open routes */
    assert_int_equal(call_as(NULL, NULL, "GET", "/status", NULL, NULL), 200);
    assert_int_equal(call_as(NULL, NULL, "GET", "/v1/models", NULL, NULL), 200);
    /* the agent's own token works, in either header */
    assert_int_equal(call_as(g_alice, NULL, "POST", "/query", q, &j), 200);
    json_decref(j);
    char h[128];
    snprintf(h, sizeof h, "X-Aios-Agent-Token: %s", g_alice);
    assert_int_equal(call_as(NULL, h, "POST", "/query", q, &j), 200);
    json_decref(j);
    assert_int_equal(call_as(g_alice, NULL, "GET", "/access/whoami", NULL, &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "agent")), "alice");
    assert_false(json_is_true(json_object_get(j, "admin")));
    json_decref(j);
    assert_true(audit_count("-", "denied", "no token") >= 1);
}

static void test_admin_routes(void **state)
{
    (void)state;
    json_t *j = NULL;
    expect_error(call_as(NULL, NULL, "GET", "/core/status", NULL, &j), 401, &j, "no token");
    expect_error(call_as(g_alice, NULL, "GET", "/core/status", NULL, &j), 403, &j, "admin token");
    expect_error(call_as(g_alice, NULL, "POST", "/access/agents", "{\"name\":\"mallory\"}", &j),
                 403, &j, "admin token");
    expect_error(call_as(g_alice, NULL, "GET", "/access/audit", NULL, &j), 403, &j, "admin token");
    expect_error(call_as(g_bob, NULL, "POST", "/core/cleanup", "{}", &j), 403, &j, "admin token");
    assert_int_equal(kf_call(g_kf, "GET", "/core/status", NULL, &j), 200);
    json_decref(j);
    assert_true(audit_count("alice", "denied", "admin token") >= 3);
}

static void test_impersonation(void **state)
{
    (void)state;
    json_t *j = NULL;
    const char *q = "{\"agent_name\":\"bob\",\"query_type\":\"tool\",\"query_data\":"
                    "{\"tool_calls\":[{\"name\":\"aios/calculator\",\"parameters\":"
                    "{\"expression\":\"2*3\"}}]}}";
    expect_error(call_as(g_alice, NULL, "POST", "/query", q, &j), 403, &j,
                 "may not act as 'bob'");
    expect_error(call_as(g_alice, NULL, "POST", "/v1/chat/completions",
                         "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":2,"
                         "\"user\":\"bob\"}", &j), 403, &j, "may not act as 'bob'");
    expect_error(call_as(g_alice, "X-Aios-Agent: bob", "POST", "/v1/chat/completions",
                         "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":2}",
                         &j), 403, &j, "may not act as 'bob'");
    /* the operator may act as anyone */
    assert_int_equal(kf_call(g_kf, "POST", "/query", q, &j), 200);
    json_decref(j);
    /* bob as bob */
    assert_int_equal(call_as(g_bob, NULL, "POST", "/query", q, &j), 200);
    json_decref(j);
    assert_true(audit_count("alice", "denied", "may not act as 'bob'") >= 3);
}

static long storage_as(const char *tok, const char *agent, const char *op, const char *params,
                       json_t **out)
{
    char body[1024];
    snprintf(body, sizeof body,
             "{\"agent_name\":\"%s\",\"query_type\":\"storage\",\"query_data\":{\"query_class\":"
             "\"storage\",\"operation_type\":\"%s\",\"params\":%s}}", agent, op, params);
    return call_as(tok, NULL, "POST", "/query", body, out);
}

static long memory_as(const char *tok, const char *agent, const char *op, const char *params,
                      json_t **out)
{
    char body[1024];
    snprintf(body, sizeof body,
             "{\"agent_name\":\"%s\",\"query_type\":\"memory\",\"query_data\":{\"query_class\":"
             "\"memory\",\"operation_type\":\"%s\",\"params\":%s}}", agent, op, params);
    return call_as(tok, NULL, "POST", "/query", body, out);
}

static void test_other_agents_data(void **state)
{
    (void)state;
    json_t *j = NULL;
    /* alice's file is not bob's: bob gets 404 in his own namespace, and
     * cannot name alice */
    assert_int_equal(storage_as(g_alice, "alice", "write",
                                "{\"file_path\":\"secret.txt\",\"content\":\"alice only\"}", &j),
                     200);
    json_decref(j);
    assert_int_equal(storage_as(g_alice, "alice", "read", "{\"file_path\":\"secret.txt\"}", &j),
                     200);
    json_decref(j);
    long st = storage_as(g_bob, "bob", "read", "{\"file_path\":\"secret.txt\"}", &j);
    assert_int_equal(st, 404);
    json_decref(j);
    expect_error(storage_as(g_bob, "alice", "read", "{\"file_path\":\"secret.txt\"}", &j), 403, &j,
                 "may not act as 'alice'");

    /* memory the same way */
    assert_int_equal(memory_as(g_alice, "alice", "add_memory",
                               "{\"content\":\"alice's diary entry\"}", &j), 200);
    const char *mid = json_string_value(
        json_object_get(json_object_get(j, "response"), "memory_id"));
    assert_non_null(mid);
    char p[256];
    snprintf(p, sizeof p, "{\"memory_id\":\"%s\"}", mid);
    json_decref(j);
    assert_int_equal(memory_as(g_bob, "bob", "get_memory", p, &j), 404);
    json_decref(j);
    expect_error(memory_as(g_bob, "alice", "get_memory", p, &j), 403, &j, "may not act as");
    assert_int_equal(memory_as(g_alice, "alice", "get_memory", p, &j), 200);
    json_decref(j);
}

/* share grants through the kernel with agent tokens: granted, revoked,
 * expired; only the owner can share */
static void test_share_grants(void **state)
{
    (void)state;
    json_t *j = NULL;
    const char *rd = "{\"file_path\":\"shared/notes.md\",\"owner\":\"alice\"}";
    assert_int_equal(storage_as(g_alice, "alice", "write",
                                "{\"file_path\":\"shared/notes.md\",\"content\":\"for bob\"}",
                                &j), 200);
    json_decref(j);
    assert_int_equal(storage_as(g_bob, "bob", "read", rd, &j), 404); /* no grant yet */
    json_decref(j);
    assert_int_equal(storage_as(g_alice, "alice", "share",
                                "{\"file_path\":\"shared\",\"agent\":\"bob\"}", &j), 200);
    json_decref(j);
    assert_int_equal(storage_as(g_bob, "bob", "read", rd, &j), 200);
    json_decref(j);
    /* bob cannot pass alice's file on, nor share it as alice */
    assert_int_equal(storage_as(g_bob, "bob", "share",
                                "{\"file_path\":\"shared\",\"owner\":\"alice\",\"agent\":\"carol\"}",
                                &j), 403);
    json_decref(j);
    expect_error(storage_as(g_bob, "alice", "share",
                            "{\"file_path\":\"shared\",\"agent\":\"carol\"}", &j), 403, &j,
                 "may not act as 'alice'");
    /* revoked */
    assert_int_equal(storage_as(g_alice, "alice", "unshare",
                                "{\"file_path\":\"shared\",\"agent\":\"bob\"}", &j), 200);
    json_decref(j);
    assert_int_equal(storage_as(g_bob, "bob", "read", rd, &j), 404);
    json_decref(j);
    /* expired */
    assert_int_equal(storage_as(g_alice, "alice", "share",
                                "{\"file_path\":\"shared\",\"agent\":\"bob\",\"expires_in\":1}",
                                &j), 200);
    json_decref(j);
    assert_int_equal(storage_as(g_bob, "bob", "read", rd, &j), 200);
    json_decref(j);
    usleep(1100000);
    assert_int_equal(storage_as(g_bob, "bob", "read", rd, &j), 404);
    json_decref(j);
    assert_true(audit_count("bob", "denied", "may not act as 'alice'") >= 1);
}

static void test_groups(void **state)
{
    (void)state;
    json_t *j = NULL;
    /* a tool outside alice's group */
    const char *q = "{\"agent_name\":\"alice\",\"query_type\":\"tool\",\"query_data\":"
                    "{\"tool_calls\":[{\"name\":\"aios/current_time\",\"parameters\":{}}]}}";
    expect_error(call_as(g_alice, NULL, "POST", "/query", q, &j), 403, &j,
                 "may not call tool 'aios/current_time'");
    /* nor can the model call it for her (call_tool runs what the model picks) */
    expect_error(call_as(g_alice, NULL, "POST", "/query",
                         "{\"agent_name\":\"alice\",\"query_type\":\"llm\",\"query_data\":"
                         "{\"messages\":[{\"role\":\"user\",\"content\":\"time?\"}],"
                         "\"action_type\":\"call_tool\",\"tools\":[{\"type\":\"function\","
                         "\"function\":{\"name\":\"aios/current_time\",\"parameters\":"
                         "{\"type\":\"object\"}}}]}}", &j), 403, &j,
                 "may not call tool 'aios/current_time'");
    /* bob has no group: unrestricted */
    const char *qb = "{\"agent_name\":\"bob\",\"query_type\":\"tool\",\"query_data\":"
                     "{\"tool_calls\":[{\"name\":\"aios/current_time\",\"parameters\":{}}]}}";
    assert_int_equal(call_as(g_bob, NULL, "POST", "/query", qb, &j), 200);
    json_decref(j);
    /* a model outside carol's group: OpenAI route and /query */
    expect_error(call_as(g_carol, NULL, "POST", "/v1/chat/completions",
                         "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":"
                         "\"hi\"}],\"max_tokens\":2}", &j), 403, &j,
                 "may not use model 'aios-tiny'");
    expect_error(call_as(g_carol, NULL, "POST", "/query",
                         "{\"agent_name\":\"carol\",\"query_type\":\"llm\",\"query_data\":"
                         "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                         "\"max_new_tokens\":2}}", &j), 403, &j, "may not use model");
    /* alice may use it */
    assert_int_equal(call_as(g_alice, NULL, "POST", "/v1/chat/completions",
                             "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\","
                             "\"content\":\"hi\"}],\"max_tokens\":2}", &j), 200);
    /* accounted to the token's agent though the request names none */
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "aios"), "agent")),
                        "alice");
    json_decref(j);
    assert_true(audit_count("alice", "denied", "may not call tool") >= 1);
    assert_true(audit_count("carol", "denied", "may not use model") >= 2);
}

/* ---- approvals ---- */

struct bg_call {
    pthread_t th;
    char agent[32];
    long status;
    json_t *resp;
};

static void *bg_main(void *ud)
{
    struct bg_call *b = ud;
    char body[512], url[512];
    snprintf(body, sizeof body,
             "{\"agent_name\":\"%s\",\"query_type\":\"tool\",\"query_data\":{\"tool_calls\":"
             "[{\"name\":\"test/danger\",\"parameters\":{\"drop\":\"everything\"}}]}}", b->agent);
    snprintf(url, sizeof url, "%s/query", g_kf->child.base);
    struct hc_resp r;
    if (hc_call("POST", url, body, strlen(body), &r, 60) == 0) {
        b->status = r.status;
        b->resp = json_loadb(r.body, r.len, 0, NULL);
    }
    hc_resp_free(&r);
    return NULL;
}

/* wait for a pending approval of agent; its id */
static long long wait_pending(const char *agent)
{
    for (int i = 0; i < 200; i++) {
        json_t *j = NULL;
        assert_int_equal(kf_call(g_kf, "GET", "/access/approvals", NULL, &j), 200);
        size_t k;
        json_t *a;
        long long id = 0;
        json_array_foreach(json_object_get(j, "approvals"), k, a) {
            if (!strcmp(json_string_value(json_object_get(a, "agent")), agent)) {
                assert_string_equal(json_string_value(json_object_get(a, "tool")), "test/danger");
                id = json_integer_value(json_object_get(a, "id"));
            }
        }
        json_decref(j);
        if (id) return id;
        usleep(20000);
    }
    fail_msg("no pending approval for %s", agent);
    return 0;
}

static json_t *tool_result0(json_t *resp)
{
    return json_array_get(json_object_get(json_object_get(resp, "response"), "tool_results"), 0);
}

static void test_approval_approve_and_deny(void **state)
{
    (void)state;
    struct bg_call a = {.agent = "ops1"};
    assert_int_equal(pthread_create(&a.th, NULL, bg_main, &a), 0);
    long long id = wait_pending("ops1");
    char path[128];
    snprintf(path, sizeof path, "/access/approvals/%lld/approve", id);
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "POST", path, "{}", &j), 200);
    json_decref(j);
    pthread_join(a.th, NULL);
    assert_int_equal(a.status, 200);
    json_t *res = tool_result0(a.resp);
    assert_true(json_is_true(json_object_get(res, "ok")));
    json_decref(a.resp);
    /* deciding again: 404 (no longer pending) */
    assert_int_equal(kf_call(g_kf, "POST", path, "{}", &j), 404);
    assert_error_body(j, "no pending approval");
    json_decref(j);

    struct bg_call d = {.agent = "ops2"};
    assert_int_equal(pthread_create(&d.th, NULL, bg_main, &d), 0);
    id = wait_pending("ops2");
    snprintf(path, sizeof path, "/core/approvals/%lld", id);
    assert_int_equal(kf_call(g_kf, "POST", path, "{\"decision\":\"deny\",\"reason\":\"no way\"}",
                             &j), 200);
    json_decref(j);
    pthread_join(d.th, NULL);
    /* every call of the request failed: a real 403 telling the agent why */
    assert_int_equal(d.status, 403);
    assert_error_body(d.resp, "the operator denied test/danger: no way");
    json_decref(d.resp);

    assert_int_equal(audit_count("ops1", "awaiting_approval", NULL), 1);
    assert_int_equal(audit_count("ops1", "approved", NULL), 1);
    assert_int_equal(audit_count("ops2", "denied", "no way"), 1);
    /* bad ids */
    assert_int_equal(kf_call(g_kf, "POST", "/access/approvals/abc/deny", "{}", &j), 400);
    json_decref(j);
    assert_int_equal(kf_call(g_kf, "POST", "/core/approvals/1", "{\"decision\":\"maybe\"}", &j),
                     400);
    json_decref(j);
}

static void test_approval_timeout(void **state)
{
    (void)state;
    struct bg_call t = {.agent = "ops3"};
    assert_int_equal(pthread_create(&t.th, NULL, bg_main, &t), 0);
    wait_pending("ops3");
    pthread_join(t.th, NULL); /* access.approval_timeout_s: 2 */
    assert_int_equal(t.status, 403);
    assert_error_body(t.resp, "no operator approved it within 2 s");
    json_decref(t.resp);
    assert_int_equal(audit_count("ops3", "denied_timeout", NULL), 1);
    /* the kernel keeps serving */
    assert_int_equal(call_as(NULL, NULL, "GET", "/status", NULL, NULL), 200);
}

static void test_audit_filters(void **state)
{
    (void)state;
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "GET", "/access/audit?since=99999999999", NULL, &j), 200);
    assert_int_equal(json_array_size(json_object_get(j, "audit")), 0);
    json_decref(j);
    assert_int_equal(kf_call(g_kf, "GET", "/access/audit?since=yesterday", NULL, &j), 400);
    assert_error_body(j, "since");
    json_decref(j);
    assert_int_equal(kf_call(g_kf, "GET", "/access/audit?agent=alice&limit=2", NULL, &j), 200);
    json_t *rows = json_object_get(j, "audit");
    assert_int_equal(json_array_size(rows), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(rows, 0), "agent")),
                        "alice");
    json_decref(j);
    /* the CLI: aios audit */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' audit --agent carol --url %s 2>&1", aios_bin(),
             g_kf->child.base);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = 0;
    assert_int_equal(pclose(p), 0);
    assert_non_null(strstr(buf, "carol"));
    assert_non_null(strstr(buf, "denied"));
}

static void test_register_validation(void **state)
{
    (void)state;
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "POST", "/access/agents", "{\"name\":\"bad name!\"}", &j),
                     400);
    assert_error_body(j, "'name'");
    json_decref(j);
    assert_int_equal(kf_call(g_kf, "POST", "/access/agents", "{}", &j), 400);
    json_decref(j);
    /* registering again rotates the token: the old one stops working */
    char old[80];
    snprintf(old, sizeof old, "%s", g_bob);
    register_agent("bob", g_bob, sizeof g_bob);
    assert_string_not_equal(old, g_bob);
    expect_error(call_as(old, NULL, "GET", "/access/whoami", NULL, &j), 401, &j, "not valid");
    assert_int_equal(call_as(g_bob, NULL, "GET", "/access/whoami", NULL, &j), 200);
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admin_token_file),
        cmocka_unit_test(test_authentication),
        cmocka_unit_test(test_admin_routes),
        cmocka_unit_test(test_impersonation),
        cmocka_unit_test(test_other_agents_data),
        cmocka_unit_test(test_share_grants),
        cmocka_unit_test(test_groups),
        cmocka_unit_test(test_approval_approve_and_deny),
        cmocka_unit_test(test_approval_timeout),
        cmocka_unit_test(test_audit_filters),
        cmocka_unit_test(test_register_validation),
    };
    return cmocka_run_group_tests(tests, group_setup, kf_group_teardown);
}
