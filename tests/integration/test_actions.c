/* AIOS /query LLM actions that run what the model asked for, on the real
 * kernel with a random-weight tiny model (grammar-constrained decoding
 * makes its tool calls valid; the tools given narrow the arguments with
 * `enum` so the outcome is known):
 *  - call_tool: the model calls aios/calculator, the tool manager runs it,
 *    the answer is the tool response with the result and the model's
 *    tool_calls (name restored from aios__calculator);
 *  - call_tool without tools: 400; with an unknown tool: a 200 that is not
 *    finished, carrying the tool manager's 404 (as the reference answers);
 *  - operate_file: the model's storage calls really ran for the calling
 *    agent (read back with a storage query); per-operation results;
 *  - operate_file with a tool that is not a storage operation: 400;
 *  - operate_file with the full storage tool set: an answer, no crash;
 *  - the kernel keeps serving afterwards. */
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
#include <unistd.h>

KF_TINY_GROUP("actions", KF_TINY_SHORT_OUTPUT)

static long query(const char *agent, const char *type, const char *qd, json_t **out)
{
    char *b = NULL;
    assert_true(asprintf(&b, "{\"agent_name\":\"%s\",\"query_type\":\"%s\",\"query_data\":%s}", agent,
                         type, qd) > 0);
    json_t *j = NULL;
    long st = kf_call(g_kf, "POST", "/query", b, &j);
    free(b);
    if (st != 200 && j) {
        char *d = json_dumps(j, 0);
        fprintf(stderr, "HTTP %ld: %s\n", st, d);
        free(d);
    }
    if (out) *out = j;
    else json_decref(j);
    return st;
}

#define CALC_TOOL                                                                               \
    "[{\"type\":\"function\",\"function\":{\"name\":\"aios/calculator\",\"description\":"       \
    "\"Evaluate arithmetic\",\"parameters\":{\"type\":\"object\",\"properties\":{\"expression\":"  \
    "{\"type\":\"string\",\"enum\":[\"6*7\"]}},\"required\":[\"expression\"],"                   \
    "\"additionalProperties\":false}}}]"

static void test_call_tool_calculator(void **state)
{
    (void)state;
    json_t *j = NULL;
    long st = query("demo/calc_agent", "llm",
                    "{\"query_class\":\"llm\",\"action_type\":\"call_tool\",\"messages\":[{\"role\":"
                    "\"user\",\"content\":\"what is 6 times 7?\"}],\"max_new_tokens\":200,"
                    "\"parallel_tool_calls\":false,\"tools\":" CALC_TOOL "}", &j);
    assert_int_equal(st, 200);
    json_t *r = json_object_get(j, "response");
    assert_string_equal(json_string_value(json_object_get(r, "response_class")), "tool");
    assert_int_equal(json_integer_value(json_object_get(r, "status_code")), 200);
    assert_true(json_is_true(json_object_get(r, "finished")));
    assert_true(json_is_null(json_object_get(r, "error")));
    /* the tool ran: its result carries the value */
    json_t *res = json_object_get(json_array_get(json_object_get(r, "tool_results"), 0), "result");
    assert_true(json_is_true(json_object_get(json_array_get(json_object_get(r, "tool_results"), 0), "ok")));
    assert_true(json_number_value(json_object_get(res, "value")) == 42.0);
    const char *msg = json_string_value(json_object_get(r, "response_message"));
    assert_non_null(msg);
    assert_non_null(strstr(msg, "42"));
    /* the model's call, with the name restored */
    json_t *c = json_array_get(json_object_get(r, "tool_calls"), 0);
    assert_string_equal(json_string_value(json_object_get(c, "name")), "aios/calculator");
    assert_string_equal(json_string_value(json_object_get(json_object_get(c, "parameters"), "expression")), "6*7");
    assert_true(json_is_string(json_object_get(c, "id")));
    /* timings of both syscalls: the LLM call and the tool call */
    assert_int_equal(json_array_size(json_object_get(j, "start_times")), 2);
    assert_int_equal(json_array_size(json_object_get(j, "turnaround_times")), 2);
    json_decref(j);
}

/* a call whose calls all failed: as the reference kernel answers, a 200
 * whose response is not finished, with the error and the status it would
 * have had (Cerebrum's client stops the agent on a 4xx) */
static void assert_not_finished(json_t *j, long status, const char *needle)
{
    json_t *r = json_object_get(j, "response");
    assert_true(json_is_false(json_object_get(r, "finished")));
    assert_int_equal(json_integer_value(json_object_get(r, "status_code")), status);
    assert_true(json_is_string(json_object_get(r, "response_message")));
    const char *e = json_string_value(json_object_get(r, "error"));
    assert_non_null(e);
    if (!strstr(e, needle)) fail_msg("'%s' is not in the error: %s", needle, e);
    assert_true(json_array_size(json_object_get(j, "start_times")) >= 1);
}

static void test_call_tool_bad(void **state)
{
    (void)state;
    json_t *j = NULL;
    /* no tools */
    assert_int_equal(query("demo/calc_agent", "llm",
                           "{\"action_type\":\"call_tool\",\"messages\":[{\"role\":\"user\","
                           "\"content\":\"x\"}],\"tools\":null}", &j), 400);
    assert_error_body(j, "tools");
    json_decref(j);
    /* the older Cerebrum name, same rules */
    assert_int_equal(query("demo/calc_agent", "llm",
                           "{\"action_type\":\"tool_use\",\"messages\":[{\"role\":\"user\","
                           "\"content\":\"x\"}]}", &j), 400);
    assert_error_body(j, "one tool for tool_use");
    json_decref(j);
    /* a tool the kernel does not have: the tool manager's 404 */
    assert_int_equal(query("demo/calc_agent", "llm",
                           "{\"action_type\":\"call_tool\",\"messages\":[{\"role\":\"user\","
                           "\"content\":\"x\"}],\"max_new_tokens\":300,\"seed\":1,\"parallel_tool_calls\":false,\"tools\":[{\"type\":"
                           "\"function\",\"function\":{\"name\":\"nobody/missing\",\"parameters\":"
                           "{\"type\":\"object\",\"properties\":{},\"additionalProperties\":false}}}]}", &j), 200);
    assert_not_finished(j, 404, "nobody/missing");
    json_decref(j);
    /* output cut before the call is complete: the same, with the 400 that
     * says what to raise */
    assert_int_equal(query("demo/calc_agent", "llm",
                           "{\"action_type\":\"call_tool\",\"messages\":[{\"role\":\"user\","
                           "\"content\":\"x\"}],\"max_new_tokens\":2,\"tools\":" CALC_TOOL "}", &j), 200);
    assert_not_finished(j, 400, "max_new_tokens");
    json_decref(j);
}

#define WRITE_TOOL                                                                              \
    "[{\"type\":\"function\",\"function\":{\"name\":\"write\",\"parameters\":{\"type\":"         \
    "\"object\",\"properties\":{\"file_path\":{\"type\":\"string\",\"enum\":[\"todo.txt\"]},"    \
    "\"content\":{\"type\":\"string\",\"enum\":[\"buy milk\"]}},\"required\":[\"file_path\","    \
    "\"content\"],\"additionalProperties\":false}}}]"

static void test_operate_file(void **state)
{
    (void)state;
    json_t *j = NULL;
    long st = query("demo/file_agent", "llm",
                    "{\"query_class\":\"llm\",\"action_type\":\"operate_file\",\"messages\":[{\"role\":"
                    "\"user\",\"content\":\"write 'buy milk' to todo.txt\"}],\"max_new_tokens\":300,"
                    "\"seed\":2,\"parallel_tool_calls\":false,\"tools\":" WRITE_TOOL "}", &j);
    assert_int_equal(st, 200);
    json_t *r = json_object_get(j, "response");
    assert_string_equal(json_string_value(json_object_get(r, "response_class")), "llm");
    const char *sum = json_string_value(json_object_get(r, "response_message"));
    assert_non_null(sum);
    assert_non_null(strstr(sum, "todo.txt"));
    json_t *ops = json_object_get(r, "operations");
    assert_true(json_array_size(ops) >= 1);
    json_t *op0 = json_array_get(ops, 0);
    assert_string_equal(json_string_value(json_object_get(op0, "name")), "write");
    assert_true(json_is_true(json_object_get(op0, "ok")));
    assert_int_equal(json_array_size(json_object_get(j, "start_times")), 1 + json_array_size(ops));
    json_decref(j);

    /* it really ran, for this agent: read it back */
    assert_int_equal(query("demo/file_agent", "storage",
                           "{\"operation_type\":\"read\",\"params\":{\"file_path\":\"todo.txt\"}}", &j), 200);
    char *d = json_dumps(j, 0);
    assert_non_null(strstr(d, "buy milk"));
    free(d);
    json_decref(j);
    /* and not for another agent */
    assert_int_equal(query("demo/other_agent", "storage",
                           "{\"operation_type\":\"read\",\"params\":{\"file_path\":\"todo.txt\"}}", &j), 404);
    json_decref(j);
}

static void test_operate_file_bad(void **state)
{
    (void)state;
    json_t *j = NULL;
    assert_int_equal(query("demo/file_agent", "llm",
                           "{\"action_type\":\"operate_file\",\"messages\":[{\"role\":\"user\","
                           "\"content\":\"x\"}],\"tools\":" CALC_TOOL "}", &j), 400);
    assert_error_body(j, "not a storage operation");
    json_decref(j);
    /* every storage operation offered, arbitrary arguments: an answer
     * (200 with per-operation results, not finished when every one
     * failed), never a server error */
    long st = query("demo/file_agent", "llm",
                    "{\"action_type\":\"operate_file\",\"messages\":[{\"role\":\"user\",\"content\":"
                    "\"make a folder called docs\"}],\"max_new_tokens\":300,\"seed\":3}", &j);
    assert_true(st == 200 || (st >= 400 && st < 500));
    if (st == 200) assert_true(json_array_size(json_object_get(json_object_get(j, "response"), "operations")) >= 1);
    else assert_error_body(j, NULL);
    json_decref(j);
    /* the kernel keeps serving */
    assert_int_equal(kf_call(g_kf, "GET", "/status", NULL, NULL), 200);
}

/* several chains at once (each parks its HTTP request between steps):
 * all answer, and the kernel serves other requests meanwhile */
static void *calc_thread(void *p)
{
    json_t *j = NULL;
    long st = query("demo/calc_agent", "llm",
                    "{\"action_type\":\"call_tool\",\"messages\":[{\"role\":\"user\",\"content\":"
                    "\"6*7?\"}],\"max_new_tokens\":200,\"parallel_tool_calls\":false,\"tools\":"
                    CALC_TOOL "}", &j);
    json_t *r = json_object_get(j, "response");
    json_t *res = json_object_get(json_array_get(json_object_get(r, "tool_results"), 0), "result");
    *(int *)p = st == 200 && json_number_value(json_object_get(res, "value")) == 42.0;
    json_decref(j);
    return NULL;
}

static void test_concurrent_chains(void **state)
{
    (void)state;
    enum { N = 3 };
    pthread_t th[N];
    int ok[N] = {0};
    for (int i = 0; i < N; i++) assert_int_equal(pthread_create(&th[i], NULL, calc_thread, &ok[i]), 0);
    assert_int_equal(kf_call(g_kf, "GET", "/status", NULL, NULL), 200);
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_true(ok[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_call_tool_calculator),
        cmocka_unit_test(test_call_tool_bad),
        cmocka_unit_test(test_operate_file),
        cmocka_unit_test(test_operate_file_bad),
        cmocka_unit_test(test_concurrent_chains),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
