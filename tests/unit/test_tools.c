/* Unit tests of the tool manager without a kernel: the calculator's parser
 * (precedence, associativity, functions, errors with positions), the
 * `tools:` config validation messages, argument validation, the runner's
 * timeout and output cap, and limits in the executor. */
#include "tools/tools.h"
#include "util/err.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <math.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "util/util.h"

static double calc_ok(const char *e)
{
    double v = NAN;
    char err[256] = "";
    int rc = tool_calc_eval(e, &v, err, sizeof err);
    if (rc) fail_msg("'%s' failed: %s", e, err);
    return v;
}

static void calc_err(const char *e, const char *needle)
{
    double v;
    char err[256] = "";
    assert_int_equal(tool_calc_eval(e, &v, err, sizeof err), AIOS_EINVAL);
    if (!strstr(err, needle)) fail_msg("'%s': error \"%s\" lacks \"%s\"", e, err, needle);
}

static void test_calc(void **state)
{
    (void)state;
    assert_true(calc_ok("1+2*3") == 7);
    assert_true(calc_ok("(1+2)*3") == 9);
    assert_true(calc_ok("2^3^2") == 512);    /* right-associative */
    assert_true(calc_ok("-2^2") == -4);      /* unary minus binds looser than ^ */
    assert_true(calc_ok("2^-1") == 0.5);
    assert_true(calc_ok("--3") == 3);
    assert_true(calc_ok("10 - 4 - 3") == 3); /* left-associative */
    assert_true(calc_ok("100 / 10 / 5") == 2);
    assert_true(calc_ok("7 % 4") == 3);
    assert_true(calc_ok("-7 % 4") == -3);
    assert_true(calc_ok("sqrt(16) + abs(-2) + floor(2.7) + ceil(2.1) + round(2.5)") == 4 + 2 + 2 + 3 + 3);
    assert_true(calc_ok("min(3, 1, 2) + max(3, 9)") == 10);
    assert_true(fabs(calc_ok("log(exp(2))") - 2) < 1e-12);
    assert_true(fabs(calc_ok("sin(pi/2) + cos(0)") - 2) < 1e-12);
    assert_true(calc_ok("1.5e2 + .5") == 150.5);
    assert_true(calc_ok("  ( ( 1 ) )  ") == 1);
    assert_true(fabs(calc_ok("e") - M_E) < 1e-15);

    calc_err("", "position 1");
    calc_err("1 +", "at position 4: unexpected end");
    calc_err("2*(3+4", "at position 7: expected ')'");
    calc_err("1 2", "at position 3: unexpected '2'");
    calc_err("4/0", "at position 2: division by zero");
    calc_err("4 % (1-1)", "division by zero");
    calc_err("foo(1)", "unknown function 'foo'");
    calc_err("x + 1", "unknown name 'x'");
    calc_err("sqrt(-1)", "sqrt of a negative");
    calc_err("sqrt(1,2)", "takes 1 argument");
    calc_err("log(0)", "log of a non-positive");
    calc_err("10^1000", "not a finite number");
    calc_err("1e", "exponent");
    calc_err("max(1,", "unexpected end");
    calc_err("1 $ 2", "unexpected '$'");
    /* deep nesting is an error, not a stack overflow */
    char deep[1000];
    memset(deep, '(', 500);
    deep[500] = '1';
    memset(deep + 501, ')', 498);
    deep[999] = 0;
    calc_err(deep, "nested too deeply");
    char minus[400];
    memset(minus, '-', 300);
    minus[300] = '1';
    minus[301] = 0;
    calc_err(minus, "nested too deeply");
}

static json_t *yaml_like(const char *json)
{
    json_error_t je;
    json_t *j = json_loads(json, 0, &je);
    if (!j) fail_msg("bad test JSON: %s", je.text);
    return j;
}

static void cfg_err(const char *section, const char *needle)
{
    json_t *s = yaml_like(section);
    struct tool_mgr *m = NULL;
    char err[1024] = "";
    int rc = tool_mgr_create(&m, s, "/tmp", "/tmp", err, sizeof err);
    json_decref(s);
    if (rc == 0) {
        tool_mgr_stop(m);
        fail_msg("config %s was accepted", section);
    }
    assert_null(m);
    if (!strstr(err, needle)) fail_msg("config %s: error \"%s\" lacks \"%s\"", section, err, needle);
}

static void test_config(void **state)
{
    (void)state;
    cfg_err("[]", "tools: expected a mapping");
    cfg_err("{\"workerz\": 3}", "unknown key 'workerz'");
    cfg_err("{\"workers\": 0}", "tools.workers: expected an integer in 1..256");
    cfg_err("{\"external\": {}}", "tools.external: expected a list");
    cfg_err("{\"external\": [{\"name\": \"x\", \"command\": \"/bin/true\"}]}", "'author/name'");
    cfg_err("{\"external\": [{\"name\": \"a/b\"}]}", "tools.external[0].command");
    cfg_err("{\"external\": [{\"name\": \"a/b\", \"command\": \"/nonexistent/x\"}]}", "not an executable");
    cfg_err("{\"external\": [{\"name\": \"a/b\", \"command\": \"no-such-program-zz\"}]}", "not found in PATH");
    cfg_err("{\"external\": [{\"name\": \"a/b\", \"command\": \"/bin/true\", \"timeout_ms\": \"5\"}]}",
            "tools.external[0].timeout_ms: expected an integer");
    cfg_err("{\"external\": [{\"name\": \"a/b\", \"command\": \"/bin/true\", \"network\": 1}]}",
            "network: expected true or false");
    cfg_err("{\"external\": [{\"name\": \"a/b\", \"command\": \"/bin/true\", \"conflicts\": [1]}]}",
            "conflicts[0]");
    cfg_err("{\"external\": [{\"name\": \"a/b\", \"command\": \"/bin/true\", \"parameters\": "
            "{\"type\": \"object\", \"properties\": {\"x\": {\"type\": \"string\", \"pattern\": \"a\"}}}}]}",
            "pattern");
    cfg_err("{\"external\": [{\"name\": \"a/b\", \"command\": \"/bin/true\"}, "
            "{\"name\": \"a/b\", \"command\": \"/bin/true\"}]}", "registered twice");
    cfg_err("{\"external\": [{\"name\": \"aios/calculator\", \"command\": \"/bin/true\"}]}", "registered twice");
    cfg_err("{\"folders\": [\"/nonexistent-folder\"]}", "cannot read /nonexistent-folder/config.json");
    cfg_err("{\"mcp_servers\": [{\"name\": \"a/b\", \"command\": \"/bin/true\"}]}", "no '/'");
    cfg_err("{\"mcp_servers\": [{\"name\": \"dead\", \"command\": \"/bin/true\"}]}", "did not start");
}

static void test_registry_and_validation(void **state)
{
    (void)state;
    json_t *s = yaml_like("{\"workers\": 2, \"external\": [{\"name\": \"a/b\", \"command\": \"/bin/cat\","
                          "\"description\": \"cat\", \"max_concurrency\": 2, \"conflicts\": \"g\","
                          "\"parameters\": {\"type\": \"object\", \"properties\": {\"n\": {\"type\": \"integer\", \"minimum\": 1}},"
                          "\"required\": [\"n\"]}}]}");
    struct tool_mgr *m = NULL;
    char err[1024] = "";
    assert_int_equal(tool_mgr_create(&m, s, NULL, NULL, err, sizeof err), 0);
    json_decref(s);
    struct tool *t = tool_find(m, "a/b");
    assert_non_null(t);
    assert_int_equal(t->kind, TOOL_KIND_EXEC);
    assert_int_equal(t->max_concurrency, 2);
    assert_int_equal(t->n_conflicts, 1);
    assert_false(t->network);
    assert_false(t->irreversible);
    assert_int_equal(t->timeout_ms, TOOL_DEFAULT_TIMEOUT_MS);
    json_t *a = yaml_like("{\"n\": 0}");
    assert_int_equal(tool_validate_args(t, a, err, sizeof err), AIOS_EINVAL);
    assert_non_null(strstr(err, "$.n"));
    json_decref(a);
    a = yaml_like("{\"n\": 3}");
    assert_int_equal(tool_validate_args(t, a, err, sizeof err), 0);
    json_decref(a);
    a = json_array();
    assert_int_equal(tool_validate_args(t, a, err, sizeof err), AIOS_EINVAL);
    json_decref(a);
    json_t *list = tool_list_json(m);
    assert_true(json_array_size(list) >= 6);
    json_decref(list);

    /* a request without a kernel: builtins run, results by id */
    json_t *calls = yaml_like("[{\"id\": \"q\", \"name\": \"aios/calculator\", \"parameters\": {\"expression\": \"6*7\"}},"
                              "{\"name\": \"aios/calculator\", \"arguments\": \"{\\\"expression\\\": \\\"1/\\\"}\"},"
                              "{\"name\": \"aios/calculator\", \"arguments\": \"{not json\"}]");
    json_t *out = NULL;
    assert_int_equal(tool_run_calls(m, NULL, "ag/one", calls, &out, err, sizeof err), 0);
    json_t *res = json_object_get(out, "tool_results");
    assert_string_equal(json_string_value(json_object_get(json_array_get(res, 0), "id")), "q");
    assert_true(json_number_value(json_object_get(json_object_get(json_array_get(res, 0), "result"), "value")) == 42);
    assert_string_equal(json_string_value(json_object_get(json_array_get(res, 1), "id")), "call_1");
    assert_false(json_is_true(json_object_get(json_array_get(res, 1), "ok")));
    assert_non_null(strstr(json_string_value(json_object_get(json_object_get(json_array_get(res, 2), "error"), "message")),
                           "not valid JSON"));
    json_decref(out);
    json_decref(calls);
    calls = json_array();
    assert_int_equal(tool_run_calls(m, NULL, "ag/one", calls, &out, err, sizeof err), AIOS_EINVAL);
    json_decref(calls);
    tool_mgr_stop(m);
}

static void test_runner(void **state)
{
    (void)state;
    /* without the sandbox: the runner's own mechanics */
    char *const argv_cat[] = {"/bin/cat", NULL};
    struct tool_spawn_opts o = {.argv = argv_cat, .sandbox = false};
    char *out = NULL, *errout = NULL, err[256];
    size_t n = 0;
    bool trunc = false;
    int st = 0;
    /* 1 MiB through stdin and back, capped at 1000 */
    size_t big = 1 << 20;
    char *in = malloc(big);
    memset(in, 'a', big);
    assert_int_equal(tool_proc_run(&o, in, big, 1000, util_now_us() + 10000000, &out, &n, &trunc,
                                   &errout, &st, err, sizeof err), 0);
    assert_int_equal(n, 1000);
    assert_true(trunc);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    free(out);
    free(errout);
    free(in);
    /* a hung child is killed at the deadline, with its children */
    char *const argv_sleep[] = {"/bin/sh", "-c", "sleep 30 & sleep 30; echo never", NULL};
    o.argv = argv_sleep;
    int64_t t0 = util_now_us();
    assert_int_equal(tool_proc_run(&o, NULL, 0, 1000, util_now_us() + 300000, &out, &n, &trunc,
                                   &errout, &st, err, sizeof err), AIOS_EBUSY);
    assert_true(util_now_us() - t0 < 5000000);
    assert_non_null(strstr(err, "timed out"));
    free(out);
    free(errout);

    /* descriptors of the kernel do not leak into a tool */
    int fd = open("/dev/null", O_RDONLY); /* no O_CLOEXEC on purpose */
    assert_true(fd >= 0);
    assert_int_equal(dup2(fd, 200), 200);
    char *const argv_ls[] = {"/bin/ls", "/proc/self/fd", NULL};
    o.argv = argv_ls;
    assert_int_equal(tool_proc_run(&o, NULL, 0, 4096, util_now_us() + 5000000, &out, &n, &trunc,
                                   &errout, &st, err, sizeof err), 0);
    assert_non_null(out);
    assert_null(strstr(out, "200"));
    assert_non_null(strstr(out, "0\n1\n2\n"));
    free(out);
    free(errout);
    close(200);
    close(fd);
}

static void test_agent_dirname(void **state)
{
    (void)state;
    char dn[64];
    assert_int_equal(tool_agent_dirname("author/name", dn, sizeof dn), 0);
    assert_string_equal(dn, "author%2Fname");
    assert_int_equal(tool_agent_dirname("..", dn, sizeof dn), 0);
    assert_string_equal(dn, "%2E.");
    assert_int_equal(tool_agent_dirname(".hidden", dn, sizeof dn), 0);
    assert_string_equal(dn, "%2Ehidden");
    assert_int_equal(tool_agent_dirname("a b\n", dn, sizeof dn), 0);
    assert_string_equal(dn, "a%20b%0A");
    assert_int_equal(tool_agent_dirname("", dn, sizeof dn), AIOS_EINVAL);
    char long_name[200];
    memset(long_name, 'x', 199);
    long_name[199] = 0;
    char big[1024];
    assert_int_equal(tool_agent_dirname(long_name, big, sizeof big), AIOS_EINVAL);
    assert_int_equal(tool_agent_dirname("abcdefghijklmnopqrstuvwxyz", dn, 8), AIOS_EINVAL);
}

static int g_hook_calls;
static int deny_hook(void *ud, struct syscall *sc, const struct tool *t, json_t *args, char *err,
                     size_t errlen)
{
    (void)sc;
    g_hook_calls++;
    if (ud) return 0; /* approve */
    snprintf(err, errlen, "operator denied %s with %s", t->name,
             json_string_value(json_object_get(args, "msg")));
    return AIOS_EPERM;
}

static void test_approval_hook(void **state)
{
    (void)state;
    if (!tool_sandbox_available(NULL, 0)) skip();
    json_t *s = yaml_like("{\"builtins\": false, \"external\": [{\"name\": \"a/rm\", \"command\": \"/bin/cat\","
                          "\"irreversible\": true}, {\"name\": \"a/safe\", \"command\": \"/bin/cat\"}]}");
    struct tool_mgr *m = NULL;
    char err[1024] = "";
    assert_int_equal(tool_mgr_create(&m, s, NULL, NULL, err, sizeof err), 0);
    json_decref(s);
    assert_true(tool_find(m, "a/rm")->irreversible);
    assert_null(tool_find(m, "aios/calculator"));
    tool_mgr_set_approval(m, deny_hook, NULL);
    json_t *calls = yaml_like("[{\"name\": \"a/rm\", \"parameters\": {\"msg\": \"x\"}},"
                              "{\"name\": \"a/safe\", \"parameters\": {\"msg\": \"y\"}}]");
    json_t *out = NULL;
    g_hook_calls = 0;
    assert_int_equal(tool_run_calls(m, NULL, "ag/one", calls, &out, err, sizeof err), 0);
    json_t *res = json_object_get(out, "tool_results");
    json_t *e = json_object_get(json_array_get(res, 0), "error");
    assert_string_equal(json_string_value(json_object_get(e, "type")), "permission_denied");
    assert_string_equal(json_string_value(json_object_get(e, "message")), "operator denied a/rm with x");
    /* the reversible tool never asks */
    assert_true(json_is_true(json_object_get(json_array_get(res, 1), "ok")));
    assert_int_equal(g_hook_calls, 1);
    json_decref(out);
    tool_mgr_set_approval(m, deny_hook, (void *)1);
    assert_int_equal(tool_run_calls(m, NULL, "ag/one", calls, &out, err, sizeof err), 0);
    res = json_object_get(out, "tool_results");
    assert_string_equal(json_string_value(json_object_get(json_object_get(json_array_get(res, 0), "result"), "msg")), "x");
    assert_int_equal(g_hook_calls, 2);
    json_decref(out);
    json_decref(calls);
    tool_mgr_stop(m);
}

static void test_calc_fuzz(void **state)
{
    (void)state;
    /* random expressions over the grammar's alphabet: an answer or an
     * error with a position, never a crash (run under ASan in asan-test) */
    const char alpha[] = "0123456789+-*/%^().,e pisqrtminaxlogfl";
    unsigned seed = 12345;
    for (int i = 0; i < 20000; i++) {
        char e[64];
        int len = (int)((seed = seed * 1103515245 + 12345) >> 16) % 40;
        for (int k = 0; k < len; k++) {
            seed = seed * 1103515245 + 12345;
            e[k] = alpha[(seed >> 16) % (sizeof alpha - 1)];
        }
        e[len] = 0;
        double v;
        char err[256] = "";
        int rc = tool_calc_eval(e, &v, err, sizeof err);
        if (rc) {
            assert_int_equal(rc, AIOS_EINVAL);
            assert_non_null(strstr(err, "at position "));
        } else {
            assert_true(isfinite(v));
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calc),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_registry_and_validation),
        cmocka_unit_test(test_runner),
        cmocka_unit_test(test_calc_fuzz),
        cmocka_unit_test(test_agent_dirname),
        cmocka_unit_test(test_approval_hook),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
