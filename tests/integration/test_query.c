/* Integration: the AIOS /query protocol as Cerebrum sends it. LLM queries
 * answer in the reference's shape with timing lists; malformed queries get
 * a 4xx (never a 200 carrying an error); kinds whose manager is not in this
 * build answer 501. */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>


static void test_llm_query(void **state)
{
    (void)state;
    const char *q =
        "{\"agent_name\":\"example/academic_agent\",\"query_type\":\"llm\",\"query_data\":"
        "{\"query_class\":\"llm\",\"llms\":[{\"name\":\"aios-tiny\",\"backend\":\"llamacpp\"}],"
        "\"messages\":[{\"role\":\"user\",\"content\":\"Summarise AIOS.\"}],\"tools\":null,"
        "\"action_type\":\"chat\",\"temperature\":0.7,\"max_new_tokens\":7,"
        "\"message_return_type\":\"text\",\"response_format\":null}}";
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "POST", "/query", q, &j), 200);
    json_t *resp = json_object_get(j, "response");
    assert_string_equal(json_string_value(json_object_get(resp, "response_class")), "llm");
    assert_true(json_is_string(json_object_get(resp, "response_message")));
    assert_true(json_is_true(json_object_get(resp, "finished")));
    assert_int_equal(json_integer_value(json_object_get(resp, "status_code")), 200);
    /* max_new_tokens is honoured (the reference drops it) */
    assert_int_equal(json_integer_value(json_object_get(json_object_get(resp, "usage"), "completion_tokens")), 7);
    const char *lists[] = {"start_times", "end_times", "waiting_times", "turnaround_times"};
    for (int i = 0; i < 4; i++) {
        json_t *l = json_object_get(j, lists[i]);
        assert_int_equal(json_array_size(l), 1);
        assert_true(json_is_number(json_array_get(l, 0)));
    }
    double start = json_number_value(json_array_get(json_object_get(j, "start_times"), 0));
    double end = json_number_value(json_array_get(json_object_get(j, "end_times"), 0));
    assert_true(end >= start);
    assert_true(start > (double)time(NULL) - 600 && start < (double)time(NULL) + 600);
    json_decref(j);

    /* llms null: the first model serves it */
    const char *q2 = "{\"agent_name\":\"a\",\"query_type\":\"llm\",\"query_data\":{\"llms\":null,"
                     "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_new_tokens\":3}}";
    assert_int_equal(kf_call(g_kf, "POST", "/query", q2, &j), 200);
    json_decref(j);
}

static void expect(const char *body, long status, const char *needle)
{
    json_t *j = NULL;
    long st = kf_call(g_kf, "POST", "/query", body, &j);
    if (st != status) fail_msg("%s: expected %ld got %ld", body, status, st);
    assert_error_body(j, needle);
    json_decref(j);
}

static void test_bad_queries(void **state)
{
    (void)state;
    expect("{\"query_type\":\"llm\",\"query_data\":{}}", 400, "agent_name");
    expect("{\"agent_name\":\"\",\"query_type\":\"llm\",\"query_data\":{}}", 400, "agent_name");
    expect("{\"agent_name\":\"a\",\"query_type\":\"dance\",\"query_data\":{}}", 400, "query_type");
    expect("{\"agent_name\":\"a\",\"query_type\":\"llm\"}", 400, "query_data");
    expect("{\"agent_name\":\"a\",\"query_type\":\"llm\",\"query_data\":{\"messages\":\"hi\"}}", 400, "messages");
    expect("{\"agent_name\":\"a\",\"query_type\":\"llm\",\"query_data\":{\"llms\":[{\"name\":\"nope\"}],"
           "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}}", 404, "nope");
    expect("{\"agent_name\":\"a\",\"query_type\":\"llm\",\"query_data\":{\"messages\":[{\"role\":\"user\","
           "\"content\":\"hi\"}],\"max_new_tokens\":-4}}", 400, "max_new_tokens");
    expect("{\"agent_name\":\"a\",\"query_type\":\"memory\",\"query_data\":{\"params\":{}}}", 400, "operation_type");
    expect("{\"agent_name\":\"a\",\"query_type\":\"tool\",\"query_data\":{\"tool_calls\":{}}}", 400, "tool_calls");
    expect("{\"agent_name\":\"a\",\"query_type\":\"storage\",\"query_data\":{\"operation_type\":\"write\",\"params\":[1]}}", 400, "params");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llm_query),
        cmocka_unit_test(test_bad_queries),
    };
    return cmocka_run_group_tests(tests, kf_group_setup, kf_group_teardown);
}
