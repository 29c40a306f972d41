/* Integration test of privilege checks on what actually runs, and of
 * compat mode's refusals of what a web page could send. Real kernels over
 * real HTTP, access control on.
 *
 * Enforce kernel: models aios-tiny (the default, a tiny local model) and
 * "other" (a remote model at a closed port: never reached when the checks
 * hold); agent alice in group limited {models: [aios-tiny], tools:
 * [aios/calculator]}. One test per way around the groups that worked when
 * the gate checked request fields instead of what runs:
 *   (a) a tool call whose "name" is allowed and "function.name" is not;
 *   (b) action_type "tool_use" (call_tool's older name), never checked;
 *   (c) a call_tool tool entry with an allowed "name" and another
 *       "function.name";
 *   (d) an llm query without llms, checked against the default model but
 *       run on the operator's selection.
 * And the audit rows of those decisions (agent, operation, tool or model,
 * decision, reason), read through GET /access/audit.
 *
 * Compat kernel (access.mode compat): a tokenless request is trusted only
 * with this kernel's Host, no foreign Origin, and a JSON body; requests
 * are written byte for byte on a socket so every header is the test's. */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static struct tiny_kernel g_tk;

static char g_alice[80], g_bob[80];

/* appended to the tiny kernel's llms.models */
static const char *ENFORCE_EXTRA =
    "    - {name: other, backend: vllm, hostname: \"http://127.0.0.1:9/v1\", max_retries: 0}\n"
    "access:\n"
    "  mode: enforce\n"
    "  groups:\n"
    "    limited: {models: [aios-tiny], tools: [aios/calculator]}\n"
    "  agents: {alice: limited}\n";

static long call_as(const char *token, const char *method, const char *path, const char *body,
                    json_t **out)
{
    char url[512], auth[200];
    snprintf(url, sizeof url, "%s%s", g_kf->child.base, path);
    const char *hdrs[2] = {NULL, NULL};
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        hdrs[0] = auth;
    }
    struct hc_resp r;
    assert_int_equal(hc_call_h(method, url, body, body ? strlen(body) : 0, hdrs, &r, 120), 0);
    if (out) *out = json_loadb(r.body, r.len, 0, NULL);
    long st = r.status;
    hc_resp_free(&r);
    return st;
}

static void expect_error(long got, long want, json_t *j, const char *needle)
{
    if (got != want) {
        char *s = j ? json_dumps(j, 0) : NULL;
        fprintf(stderr, "expected %ld, got %ld: %s\n", want, got, s ? s : "(no JSON)");
        free(s);
    }
    assert_int_equal(got, want);
    assert_error_body(j, needle);
    json_decref(j);
}

static void register_agent(const char *name, char *tok, size_t toklen)
{
    char body[128];
    snprintf(body, sizeof body, "{\"name\":\"%s\"}", name);
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "POST", "/access/agents", body, &j), 201);
    snprintf(tok, toklen, "%s", json_string_value(json_object_get(j, "token")));
    assert_true(strlen(tok) >= 32);
    json_decref(j);
}

static int enforce_setup(void **state)
{
    (void)state;
    assert_int_equal(kf_start_tiny(&g_tk, "priv", ENFORCE_EXTRA), 0);
    g_kf = g_tk.kf;
    register_agent("alice", g_alice, sizeof g_alice);
    register_agent("bob", g_bob, sizeof g_bob);
    return 0;
}

static int enforce_teardown(void **state)
{
    (void)state;
    kf_stop_tiny(&g_tk);
    g_kf = NULL;
    return 0;
}

/* audit rows of agent matching resource, action and decision exactly
 * (NULL: any) whose reason contains needle (NULL: any) */
static int audit_rows(const char *agent, const char *resource, const char *action,
                      const char *decision, const char *needle)
{
    char path[256];
    snprintf(path, sizeof path, "/access/audit?agent=%s&limit=1000", agent);
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "GET", path, NULL, &j), 200);
    int n = 0;
    size_t i;
    json_t *row;
    json_array_foreach(json_object_get(j, "audit"), i, row) {
        const char *f[4] = {json_string_value(json_object_get(row, "resource")),
                            json_string_value(json_object_get(row, "action")),
                            json_string_value(json_object_get(row, "decision")),
                            json_string_value(json_object_get(row, "reason"))};
        const char *want[3] = {resource, action, decision};
        bool ok = true;
        for (int k = 0; k < 3; k++)
            if (want[k] && (!f[k] || strcmp(f[k], want[k]))) ok = false;
        if (needle && (!f[3] || !strstr(f[3], needle))) ok = false;
        if (ok) n++;
    }
    json_decref(j);
    return n;
}

/* (a) the registry ran function.name while the gate checked name */
static void test_tool_call_two_names(void **state)
{
    (void)state;
    json_t *j = NULL;
    long st = call_as(g_alice, "POST", "/query",
                      "{\"agent_name\":\"alice\",\"query_type\":\"tool\",\"query_data\":"
                      "{\"tool_calls\":[{\"name\":\"aios/calculator\",\"function\":"
                      "{\"name\":\"aios/current_time\",\"arguments\":\"{}\"}}]}}", &j);
    expect_error(st, 400, j, "'name' is 'aios/calculator' and 'function.name' is "
                             "'aios/current_time'");
    /* the OpenAI shape alone: the tool that runs is checked */
    st = call_as(g_alice, "POST", "/query",
                 "{\"agent_name\":\"alice\",\"query_type\":\"tool\",\"query_data\":"
                 "{\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":"
                 "{\"name\":\"aios/current_time\",\"arguments\":\"{}\"}}]}}", &j);
    expect_error(st, 403, j, "may not call tool 'aios/current_time'");
    /* one refused call refuses the request: the allowed one did not run */
    st = call_as(g_alice, "POST", "/query",
                 "{\"agent_name\":\"alice\",\"query_type\":\"tool\",\"query_data\":"
                 "{\"tool_calls\":[{\"name\":\"aios/calculator\",\"parameters\":{\"expression\":"
                 "\"1+1\"}},{\"name\":\"aios/current_time\",\"parameters\":{}}]}}", &j);
    expect_error(st, 403, j, "may not call tool 'aios/current_time'");
    /* the allowed tool alone runs */
    assert_int_equal(call_as(g_alice, "POST", "/query",
                             "{\"agent_name\":\"alice\",\"query_type\":\"tool\",\"query_data\":"
                             "{\"tool_calls\":[{\"name\":\"aios/calculator\",\"parameters\":"
                             "{\"expression\":\"6*7\"}}]}}", &j), 200);
    assert_non_null(strstr(json_string_value(json_object_get(json_object_get(j, "response"),
                                                               "response_message")), "42"));
    json_decref(j);
    /* the operator is not bound by alice's group (and its name fields
     * must agree as well) */
    assert_int_equal(kf_call(g_kf, "POST", "/query",
                             "{\"agent_name\":\"alice\",\"query_type\":\"tool\",\"query_data\":"
                             "{\"tool_calls\":[{\"name\":\"aios/current_time\",\"parameters\":{}}]}}",
                             &j), 200);
    json_decref(j);
}

static const char *offer_query(const char *action, const char *tool_entry, char *buf, size_t n)
{
    snprintf(buf, n,
             "{\"agent_name\":\"alice\",\"query_type\":\"llm\",\"query_data\":{\"llms\":"
             "[{\"name\":\"aios-tiny\"}],\"messages\":[{\"role\":\"user\",\"content\":\"time?\"}],"
             "\"max_new_tokens\":300,\"action_type\":\"%s\",\"tools\":[%s]}}", action, tool_entry);
    return buf;
}

/* (b) action_type tool_use was never checked */
static void test_tool_use_checked(void **state)
{
    (void)state;
    char q[1024];
    json_t *j = NULL;
    long st = call_as(g_alice, "POST", "/query",
                      offer_query("tool_use", "{\"type\":\"function\",\"function\":{\"name\":"
                                  "\"aios/current_time\",\"parameters\":{\"type\":\"object\"}}}",
                                  q, sizeof q), &j);
    expect_error(st, 403, j, "may not call tool 'aios/current_time'");
    assert_true(audit_rows("alice", "tool:aios/current_time", "call_tool offer", "denied",
                           "group 'limited'") >= 1);
}

/* (c) a call_tool tool entry with an allowed name and another function.name */
static void test_offered_tool_two_names(void **state)
{
    (void)state;
    char q[1024];
    json_t *j = NULL;
    long st = call_as(g_alice, "POST", "/query",
                      offer_query("call_tool", "{\"type\":\"function\",\"name\":\"aios/calculator\","
                                  "\"function\":{\"name\":\"aios/current_time\",\"parameters\":"
                                  "{\"type\":\"object\"}}}", q, sizeof q), &j);
    expect_error(st, 400, j, "'name' is 'aios/calculator' and 'function.name' is "
                             "'aios/current_time'");
    /* the same entry on the OpenAI route is refused the same way */
    st = call_as(g_alice, "POST", "/v1/chat/completions",
                 "{\"model\":\"aios-tiny\",\"max_tokens\":2,\"messages\":[{\"role\":\"user\","
                 "\"content\":\"hi\"}],\"tools\":[{\"type\":\"function\",\"name\":\"a/b\","
                 "\"function\":{\"name\":\"c/d\"}}]}", &j);
    expect_error(st, 400, j, "'name' is 'a/b' and 'function.name' is 'c/d'");
}

/* (d) no llms: the operator's selection runs, so it is what is checked */
static void test_selected_model_checked(void **state)
{
    (void)state;
    json_t *j = NULL;
    const char *q = "{\"agent_name\":\"alice\",\"query_type\":\"llm\",\"query_data\":"
                    "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_new_tokens\":2}}";
    /* the default model is hers */
    assert_int_equal(call_as(g_alice, "POST", "/query", q, &j), 200);
    json_decref(j);
    assert_int_equal(kf_call(g_kf, "POST", "/user/select/llms",
                             "[{\"name\":\"other\",\"backend\":\"vllm\"}]", &j), 200);
    json_decref(j);
    long st = call_as(g_alice, "POST", "/query", q, &j);
    expect_error(st, 403, j, "may not use model 'other'");
    /* also when llms is null, and on the OpenAI route by name */
    st = call_as(g_alice, "POST", "/query",
                 "{\"agent_name\":\"alice\",\"query_type\":\"llm\",\"query_data\":{\"llms\":null,"
                 "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_new_tokens\":2}}", &j);
    expect_error(st, 403, j, "may not use model 'other'");
    st = call_as(g_alice, "POST", "/v1/chat/completions",
                 "{\"model\":\"other\",\"max_tokens\":2,\"messages\":[{\"role\":\"user\","
                 "\"content\":\"hi\"}]}", &j);
    expect_error(st, 403, j, "may not use model 'other'");
    assert_int_equal(kf_call(g_kf, "POST", "/user/select/llms", "[]", &j), 200);
    json_decref(j);
    assert_int_equal(call_as(g_alice, "POST", "/query", q, &j), 200);
    json_decref(j);
}

/* audit rows name the agent, the operation, the tool or model, the
 * decision and the reason */
static void test_audit_rows(void **state)
{
    (void)state;
    json_t *j = NULL;
    /* bob has no group; his tool call is allowed and says why */
    assert_int_equal(call_as(g_bob, "POST", "/query",
                             "{\"agent_name\":\"bob\",\"query_type\":\"tool\",\"query_data\":"
                             "{\"tool_calls\":[{\"name\":\"aios/current_time\",\"parameters\":{}}]}}",
                             &j), 200);
    json_decref(j);
    assert_int_equal(audit_rows("bob", "tool:aios/current_time", "tool_call", "allowed",
                                "no privilege group"), 1);
    /* alice's (from the tests above) */
    assert_true(audit_rows("alice", "tool:aios/calculator", "tool_call", "allowed",
                           "group 'limited' of agent 'alice' allows tool 'aios/calculator'") >= 1);
    assert_true(audit_rows("alice", "tool:aios/current_time", "tool_call", "denied",
                           "agent 'alice' (group 'limited') may not call tool "
                           "'aios/current_time'") >= 2);
    assert_true(audit_rows("alice", "model:aios-tiny", "llm", "allowed", "group 'limited'") >= 2);
    assert_true(audit_rows("alice", "model:other", "llm", "denied",
                           "may not use model 'other'") >= 3);
    /* the operator's call as alice: allowed, and the row says why */
    assert_true(audit_rows("alice", "tool:aios/current_time", "tool_call", "allowed",
                           "operator") >= 1);
    /* each row also names the syscall it decided */
    assert_int_equal(kf_call(g_kf, "GET", "/access/audit?agent=alice&limit=1000", NULL, &j), 200);
    size_t i;
    json_t *row;
    int n_sc = 0;
    json_array_foreach(json_object_get(j, "audit"), i, row) {
        const char *a = json_string_value(json_object_get(row, "action"));
        if (a && (!strcmp(a, "llm") || !strcmp(a, "tool_call")))
            if (json_integer_value(json_object_get(row, "syscall_id")) > 0) n_sc++;
    }
    json_decref(j);
    assert_true(n_sc >= 5);
}

/* ---- compat mode ---- */

static struct kernel_fixture *g_ck;
static char g_ccfg[256];
static int g_cport;

static int compat_setup(void **state)
{
    (void)state;
    snprintf(g_ccfg, sizeof g_ccfg, "/tmp/aios-priv-compat-XXXXXX");
    assert_non_null(mkdtemp(g_ccfg));
    char path[300];
    snprintf(path, sizeof path, "%s/config.yaml", g_ccfg);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("access:\n  mode: compat\n", f);
    fclose(f);
    const char *extra[] = {"--config", path, NULL};
    g_ck = kf_start(extra);
    g_kf = g_ck;
    const char *p = strrchr(g_ck->child.base, ':');
    assert_non_null(p);
    g_cport = atoi(p + 1);
    assert_true(g_cport > 0);
    return 0;
}

static int compat_teardown(void **state)
{
    (void)state;
    kf_stop(g_ck);
    g_kf = NULL;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_ccfg);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_ccfg);
    return 0;
}

/* one HTTP/1.1 request with exactly these header lines ("Name: value\r\n"
 * each); returns the status, the body (up to n - 1 bytes) in body */
static int raw_request(const char *method, const char *path, const char *headers,
                       const char *payload, char *body, size_t n)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {60, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_cport)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    char req[4096];
    int len = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\n%sContent-Length: %zu\r\n"
                       "Connection: close\r\n\r\n%s", method, path, headers,
                       payload ? strlen(payload) : 0, payload ? payload : "");
    assert_true(len > 0 && (size_t)len < sizeof req);
    assert_int_equal(write(fd, req, (size_t)len), len);
    char resp[16384];
    size_t got = 0;
    ssize_t k;
    while (got < sizeof resp - 1 && (k = read(fd, resp + got, sizeof resp - 1 - got)) > 0)
        got += (size_t)k;
    close(fd);
    resp[got] = 0;
    int status = 0;
    assert_int_equal(sscanf(resp, "HTTP/1.%*d %d", &status), 1);
    const char *b = strstr(resp, "\r\n\r\n");
    snprintf(body, n, "%s", b ? b + 4 : "");
    return status;
}

static int compat_get(const char *host_line, const char *extra, char *body, size_t n)
{
    char h[1024];
    snprintf(h, sizeof h, "%s%s", host_line, extra ? extra : "");
    return raw_request("GET", "/access/whoami", h, NULL, body, n);
}

static void test_compat_host(void **state)
{
    (void)state;
    char body[8192], host[128];
    /* this kernel, by address or name, with its port: trusted as the operator */
    snprintf(host, sizeof host, "Host: 127.0.0.1:%d\r\n", g_cport);
    assert_int_equal(compat_get(host, NULL, body, sizeof body), 200);
    json_t *j = json_loads(body, 0, NULL);
    assert_true(json_is_true(json_object_get(j, "compat")));
    assert_true(json_is_true(json_object_get(j, "admin")));
    json_decref(j);
    snprintf(host, sizeof host, "Host: localhost:%d\r\n", g_cport);
    assert_int_equal(compat_get(host, NULL, body, sizeof body), 200);
    snprintf(host, sizeof host, "Host: [::1]:%d\r\n", g_cport);
    assert_int_equal(compat_get(host, NULL, body, sizeof body), 200);
    /* DNS rebinding: a name of the attacker's that resolves to loopback */
    snprintf(host, sizeof host, "Host: evil.example:%d\r\n", g_cport);
    assert_int_equal(compat_get(host, NULL, body, sizeof body), 403);
    assert_non_null(strstr(body, "Host 'evil.example:"));
    /* no port, another port */
    assert_int_equal(compat_get("Host: 127.0.0.1\r\n", NULL, body, sizeof body), 403);
    assert_int_equal(compat_get("Host: localhost:1\r\n", NULL, body, sizeof body), 403);
    /* two Host headers */
    snprintf(host, sizeof host, "Host: 127.0.0.1:%d\r\nHost: evil.example:%d\r\n", g_cport,
             g_cport);
    assert_int_equal(compat_get(host, NULL, body, sizeof body), 400);
    /* a token is checked by the gate whatever the Host: the admin token works */
    char auth[320];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", g_ck->child.token);
    snprintf(host, sizeof host, "Host: evil.example:%d\r\n", g_cport);
    assert_int_equal(compat_get(host, auth, body, sizeof body), 200);
    assert_true(audit_rows("-", NULL, "GET /access/whoami", "denied", "is not this kernel") >= 3);
}

static void test_compat_origin(void **state)
{
    (void)state;
    char body[8192], host[256], origin[160];
    snprintf(host, sizeof host, "Host: 127.0.0.1:%d\r\n", g_cport);
    assert_int_equal(compat_get(host, "Origin: http://evil.example\r\n", body, sizeof body), 403);
    assert_non_null(strstr(body, "origin 'http://evil.example'"));
    assert_int_equal(compat_get(host, "Origin: null\r\n", body, sizeof body), 403);
    /* a page served by the kernel's own origin */
    snprintf(origin, sizeof origin, "Origin: http://127.0.0.1:%d\r\n", g_cport);
    assert_int_equal(compat_get(host, origin, body, sizeof body), 200);
    /* same host, other port: another origin */
    assert_int_equal(compat_get(host, "Origin: http://127.0.0.1:1\r\n", body, sizeof body), 403);
    /* a cross-origin POST to an operator route, even with a JSON body */
    char h[400];
    snprintf(h, sizeof h, "%sOrigin: http://evil.example\r\nContent-Type: application/json\r\n",
             host);
    assert_int_equal(raw_request("POST", "/access/agents", h, "{\"name\":\"web1\"}", body,
                                 sizeof body), 403);
    assert_true(audit_rows("-", NULL, NULL, "denied", "origin 'http://evil.example'") >= 2);
}

static void test_compat_content_type(void **state)
{
    (void)state;
    char body[8192], h[600];
    /* what a page can POST without a preflight: text/plain, forms */
    const char *types[] = {"text/plain", "application/x-www-form-urlencoded",
                           "multipart/form-data; boundary=x", "application/jsonx"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        snprintf(h, sizeof h, "Host: 127.0.0.1:%d\r\nContent-Type: %s\r\n", g_cport, types[i]);
        assert_int_equal(raw_request("POST", "/access/agents", h, "{\"name\":\"web2\"}", body,
                                     sizeof body), 415);
        assert_non_null(strstr(body, "application/json"));
    }
    /* a body without Content-Type */
    snprintf(h, sizeof h, "Host: 127.0.0.1:%d\r\n", g_cport);
    assert_int_equal(raw_request("POST", "/access/agents", h, "{\"name\":\"web3\"}", body,
                                 sizeof body), 415);
    /* the agent was not registered by any of them; JSON is accepted */
    snprintf(h, sizeof h, "Host: 127.0.0.1:%d\r\nContent-Type: application/json; charset=utf-8\r\n",
             g_cport);
    assert_int_equal(raw_request("POST", "/access/agents", h, "{\"name\":\"web4\"}", body,
                                 sizeof body), 201);
    assert_true(audit_rows("-", NULL, "POST /access/agents", "denied",
                           "needs Content-Type: application/json") >= 5);
    /* the kernel keeps serving (and the ordinary client, which sends JSON
     * and no token, is trusted) */
    json_t *j = NULL;
    assert_int_equal(call_as(NULL, "GET", "/access/whoami", NULL, &j), 200);
    assert_true(json_is_true(json_object_get(j, "compat")));
    json_decref(j);
    assert_int_equal(call_as(NULL, "POST", "/access/agents", "{\"name\":\"web5\"}", &j), 201);
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest enforce[] = {
        cmocka_unit_test(test_tool_call_two_names),
        cmocka_unit_test(test_tool_use_checked),
        cmocka_unit_test(test_offered_tool_two_names),
        cmocka_unit_test(test_selected_model_checked),
        cmocka_unit_test(test_audit_rows),
    };
    const struct CMUnitTest compat[] = {
        cmocka_unit_test(test_compat_host),
        cmocka_unit_test(test_compat_origin),
        cmocka_unit_test(test_compat_content_type),
    };
    int fails = cmocka_run_group_tests_name("privileges", enforce, enforce_setup, enforce_teardown);
    fails += cmocka_run_group_tests_name("compat", compat, compat_setup, compat_teardown);
    return fails;
}
