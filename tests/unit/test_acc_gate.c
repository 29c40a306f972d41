/* Unit tests of the access manager's gate without HTTP: acc_gate takes a
 * request as the API read it (struct acc_req) and returns a decision
 * (struct acc_decision: allowed or not, status, error type, message, and
 * the audit row it wrote). Covers the open routes, missing and unknown
 * tokens (401), the admin token, agent tokens on operator routes (403),
 * impersonation, privilege groups through acc_check_model/acc_check_tool
 * (the gate itself lets any model or tool name through: groups are checked
 * on what runs), the chat call that names no agent, and that the audit log
 * holds the row the decision carries. */
#include "access/access.h"
#include "kernel/config.h"
#include "util/err.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char g_dir[] = "/tmp/aios-accgate-XXXXXX";
static struct aios_config g_cfg;
static struct acc_mgr *g_m;
static char g_admin[80], g_bob[80];

static int setup(void **state)
{
    (void)state;
    if (!mkdtemp(g_dir)) return -1;
    char yaml[1024], err[256] = "";
    snprintf(yaml, sizeof yaml,
             "data_dir: \"%s\"\n"
             "access:\n"
             "  groups:\n"
             "    small: {models: [tiny], tools: [calculator]}\n"
             "  agents: {bob: small}\n", g_dir);
    if (config_load_string(&g_cfg, yaml, strlen(yaml), err, sizeof err)) {
        fprintf(stderr, "config: %s\n", err);
        return -1;
    }
    struct acc_deps deps = {.cfg = &g_cfg};
    if (acc_start(&g_m, &deps, err, sizeof err)) {
        fprintf(stderr, "acc_start: %s\n", err);
        return -1;
    }
    char path[512];
    snprintf(path, sizeof path, "%s/admin.token", g_dir);
    FILE *f = fopen(path, "r");
    if (!f || !fgets(g_admin, sizeof g_admin, f)) return -1;
    fclose(f);
    g_admin[strcspn(g_admin, "\n")] = 0;
    if (acc_register_agent(g_m, "bob", g_bob, sizeof g_bob, err, sizeof err)) return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    acc_quiesce(g_m);
    acc_stop(g_m);
    config_free(&g_cfg);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* a request; token NULL: none, else as `Authorization: Bearer` */
static struct acc_req req(const char *method, const char *url, const char *token, const char *body)
{
    static char auth[128];
    struct acc_req r = {.method = method, .url = url, .body = body,
                        .n_body = body ? strlen(body) : 0, .default_model = "tiny"};
    if (token) {
        snprintf(auth, sizeof auth, "Bearer %s", token);
        r.authorization = auth;
    }
    return r;
}

static void test_open_and_unknown(void **state)
{
    (void)state;
    struct acc_decision d;
    struct acc_req r = req("GET", "/status", NULL, NULL);
    assert_true(acc_gate(g_m, &r, &d));
    assert_true(d.allowed);
    assert_string_equal(d.agent, ""); /* open: no audit row */

    r = req("POST", "/query", NULL, "{}");
    assert_false(acc_gate(g_m, &r, &d));
    assert_false(d.allowed);
    assert_int_equal(d.status, 401);
    assert_string_equal(d.type, "authentication_error");
    assert_non_null(strstr(d.message, "no token"));
    assert_string_equal(d.agent, "-");
    assert_string_equal(d.operation, "POST /query");
    assert_string_equal(d.target, "/query");
    assert_string_equal(d.decision, "denied");
    assert_string_equal(d.reason, d.message);
    acc_decision_clear(&d);

    r = req("GET", "/core/status", "not-a-token", NULL);
    assert_false(acc_gate(g_m, &r, &d));
    assert_int_equal(d.status, 401);
    assert_non_null(strstr(d.message, "not valid"));

    /* the token header works as well as Authorization */
    r = req("GET", "/core/status", NULL, NULL);
    r.token_header = g_admin;
    assert_true(acc_gate(g_m, &r, &d));
    assert_true(r.acc_admin);
}

static void test_admin(void **state)
{
    (void)state;
    struct acc_decision d;
    struct acc_req r = req("POST", "/core/cleanup", g_admin, "{}");
    assert_true(acc_gate(g_m, &r, &d));
    assert_true(d.allowed);
    assert_true(r.acc_admin);
    assert_false(r.acc_compat);
    assert_string_equal(r.acc_agent, "admin");
    assert_string_equal(d.decision, "allowed");
    assert_string_equal(d.reason, "admin token");
    /* the operator acting as an agent, and never refused by a group */
    r = req("POST", "/v1/chat/completions", g_admin, "{\"model\":\"big\",\"user\":\"bob\"}");
    assert_true(acc_gate(g_m, &r, &d));
    assert_string_equal(r.acc_agent, "bob");
    assert_true(r.acc_admin);
    assert_false(r.name_agent);
}

static void test_agent(void **state)
{
    (void)state;
    struct acc_decision d;
    struct acc_req r = req("GET", "/core/status", g_bob, NULL);
    assert_false(acc_gate(g_m, &r, &d));
    assert_int_equal(d.status, 403);
    assert_string_equal(d.type, "permission_error");
    assert_string_equal(d.agent, "bob");
    assert_non_null(strstr(d.message, "admin token"));

    r = req("POST", "/query", g_bob, "{\"agent_name\":\"eve\"}");
    assert_false(acc_gate(g_m, &r, &d));
    assert_int_equal(d.status, 403);
    assert_non_null(strstr(d.message, "may not act as 'eve'"));
    r = req("POST", "/query", g_bob, "{}");
    r.agent_header = "eve";
    assert_false(acc_gate(g_m, &r, &d));
    assert_int_equal(d.status, 403);

    /* groups are not the gate's: it lets a call naming any model or tool
     * through, and the check happens on what runs (acc_check_model on the
     * LLM call's core, acc_check_tool on the tool a call resolved to) */
    r = req("POST", "/v1/chat/completions", g_bob, "{\"model\":\"big\"}");
    assert_true(acc_gate(g_m, &r, &d));
    r = req("POST", "/query", g_bob,
            "{\"query_type\":\"tool\",\"query_data\":{\"tool_calls\":[{\"name\":\"rm\"}]}}");
    assert_true(acc_gate(g_m, &r, &d));
    char why[512];
    assert_int_equal(acc_check_model(g_m, "bob", true, 7, "big", why, sizeof why), AIOS_EPERM);
    assert_non_null(strstr(why, "may not use model 'big'"));
    assert_int_equal(acc_check_model(g_m, "bob", true, 7, "tiny", why, sizeof why), 0);
    /* the operator acting as bob is not bound by bob's group */
    assert_int_equal(acc_check_model(g_m, "bob", false, 7, "big", why, sizeof why), 0);
    assert_int_equal(acc_check_tool(g_m, "bob", true, 8, "rm", "tool_call", why, sizeof why),
                     AIOS_EPERM);
    assert_non_null(strstr(why, "may not call tool 'rm'"));
    assert_int_equal(acc_check_tool(g_m, "bob", true, 8, "calculator", "tool_call", why, sizeof why),
                     0);

    /* an agent's chat call that names no agent: the API names it */
    r = req("POST", "/v1/chat/completions", g_bob, "{\"model\":\"tiny\"}");
    assert_true(acc_gate(g_m, &r, &d));
    assert_true(r.name_agent);
    r = req("POST", "/v1/chat/completions", g_bob, "{\"model\":\"tiny\",\"user\":\"bob\"}");
    assert_true(acc_gate(g_m, &r, &d));
    assert_false(r.name_agent);
}

/* the decision's audit row is the one in the log; a group refusal on
 * what runs writes its own row naming the model */
static void test_audit_row(void **state)
{
    (void)state;
    struct acc_decision d;
    struct acc_req r = req("POST", "/query", g_bob, "{\"agent_name\":\"eve\"}");
    assert_false(acc_gate(g_m, &r, &d));
    acc_audit_flush(acc_mgr_audit(g_m));
    char err[256] = "";
    json_t *rows = acc_audit_query(acc_mgr_audit(g_m), "bob", 0, 1, err, sizeof err);
    assert_non_null(rows);
    assert_int_equal(json_array_size(rows), 1);
    json_t *row = json_array_get(rows, 0);
    assert_string_equal(json_string_value(json_object_get(row, "agent")), d.agent);
    assert_string_equal(json_string_value(json_object_get(row, "resource")), d.target);
    assert_string_equal(json_string_value(json_object_get(row, "action")), d.operation);
    assert_string_equal(json_string_value(json_object_get(row, "decision")), "denied");
    assert_string_equal(json_string_value(json_object_get(row, "reason")), d.message);
    json_decref(rows);

    char why[512];
    assert_int_equal(acc_check_model(g_m, "bob", true, 42, "huge", why, sizeof why), AIOS_EPERM);
    acc_audit_flush(acc_mgr_audit(g_m));
    rows = acc_audit_query(acc_mgr_audit(g_m), "bob", 0, 1, err, sizeof err);
    assert_int_equal(json_array_size(rows), 1);
    row = json_array_get(rows, 0);
    assert_string_equal(json_string_value(json_object_get(row, "resource")), "model:huge");
    assert_string_equal(json_string_value(json_object_get(row, "decision")), "denied");
    assert_int_equal(json_integer_value(json_object_get(row, "syscall_id")), 42);
    json_decref(rows);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_and_unknown),
        cmocka_unit_test(test_admin),
        cmocka_unit_test(test_agent),
        cmocka_unit_test(test_audit_row),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
