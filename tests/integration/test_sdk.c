/* Integration: libaios (include/aios/client.h) against a real kernel:
 * typed LLM results (max_new_tokens honoured, timings), typed errors
 * (unreachable kernel, unknown model, bad arguments, a manager that is not
 * in this kernel answers ENOTIMPL), the raw aios_query, and the two tool
 * flavours: aios_llm_call_tool (Cerebrum's llm_call_tool, action call_tool:
 * the kernel runs the model's calls) and aios_llm_chat_with_tool_call_output
 * (the calls come back unrun). */
#include "harness.h"

#include <aios/client.h>

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>


static void test_llm_chat(void **state)
{
    (void)state;
    struct aios_client *c;
    assert_int_equal(aios_client_new(&c, g_kf->child.base, "sdk_test"), 0);
    assert_string_equal(aios_client_agent(c), "sdk_test");
    struct aios_message m[] = {{"user", "Say something"}};
    struct aios_llm_opts o = AIOS_LLM_OPTS_INIT;
    o.max_new_tokens = 5;
    o.has_seed = true;
    o.seed = 1;
    struct aios_llm_result r, r2;
    assert_int_equal(aios_llm_chat(c, m, 1, &o, &r), 0);
    assert_non_null(r.text);
    assert_int_equal(r.completion_tokens, 5);
    assert_true(r.prompt_tokens > 0);
    assert_true(r.turnaround_s >= r.waiting_s && r.waiting_s >= 0);
    assert_int_equal(r.n_tool_calls, 0);
    /* same seed, same text */
    assert_int_equal(aios_llm_chat(c, m, 1, &o, &r2), 0);
    assert_string_equal(r.text, r2.text);
    aios_llm_result_free(&r);
    aios_llm_result_free(&r2);

    /* typed errors */
    o.model = "no-such-model";
    assert_int_equal(aios_llm_chat(c, m, 1, &o, &r), AIOS_CLIENT_ENOTFOUND);
    assert_int_equal(aios_client_http_status(c), 404);
    assert_non_null(strstr(aios_client_error(c), "no-such-model"));
    aios_llm_result_free(&r);
    assert_int_equal(aios_llm_chat(c, m, 0, NULL, &r), AIOS_CLIENT_EINVAL);
    assert_int_equal(aios_llm_call_tool(c, m, 1, "{not json", NULL, &r), AIOS_CLIENT_EINVAL);
    assert_int_equal(aios_llm_chat_json(c, m, 1, "[]", NULL, &r), AIOS_CLIENT_EINVAL);

    /* raw query */
    char *resp = NULL;
    assert_int_equal(aios_query(c, "llm", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                          "\"max_new_tokens\":2}", &resp), 0);
    json_t *j = json_loads(resp, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "response_class")), "llm");
    json_decref(j);
    free(resp);
    assert_int_equal(aios_query(c, "llm", "[]", &resp), AIOS_CLIENT_EINVAL);
    assert_int_equal(aios_query(c, "dance", "{}", &resp), AIOS_CLIENT_EREQUEST);
    assert_int_equal(aios_client_http_status(c), 400);
    aios_client_free(c);
}

/* each manager either works or answers 501 -> ENOTIMPL, never anything else */
static void test_managers_typed(void **state)
{
    (void)state;
    struct aios_client *c;
    assert_int_equal(aios_client_new(&c, g_kf->child.base, "sdk_mgr"), 0);
    char *id = NULL;
    int rc = aios_memory_add(c, "a note about llamas", "{\"k\":1}", &id);
    if (rc == AIOS_CLIENT_ENOTIMPL) {
        printf("SKIP memory: %s\n", aios_client_error(c));
        assert_int_equal(aios_client_http_status(c), 501);
    } else {
        assert_int_equal(rc, 0);
        assert_non_null(id);
        struct aios_memory_note n;
        assert_int_equal(aios_memory_get(c, id, &n), 0);
        assert_string_equal(n.content, "a note about llamas");
        aios_memory_note_free(&n);
        struct aios_memory_note *hits;
        size_t nh;
        assert_int_equal(aios_memory_search(c, "llamas", 3, &hits, &nh), 0);
        assert_true(nh >= 1);
        aios_memory_notes_free(hits, nh);
        assert_int_equal(aios_memory_remove(c, id), 0);
    }
    free(id);
    char *msg = NULL;
    rc = aios_storage_write(c, "sdk/a.txt", "hello", &msg);
    if (rc == AIOS_CLIENT_ENOTIMPL) printf("SKIP storage: %s\n", aios_client_error(c));
    else assert_int_equal(rc, 0);
    free(msg);
    rc = aios_tool_call(c, "aios/calculator", "{\"expression\":\"6*7\"}", &msg);
    if (rc == AIOS_CLIENT_ENOTIMPL) printf("SKIP tools: %s\n", aios_client_error(c));
    else {
        assert_int_equal(rc, 0);
        assert_non_null(strstr(msg, "42"));
    }
    free(msg);
    assert_int_equal(aios_tool_call(c, "x", "[]", &msg), AIOS_CLIENT_EINVAL);
    aios_client_free(c);
}

#define CALC_TOOL                                                                           \
    "[{\"type\":\"function\",\"function\":{\"name\":\"aios/calculator\",\"description\":"     \
    "\"Evaluate arithmetic\",\"parameters\":{\"type\":\"object\",\"properties\":{\"expression\":" \
    "{\"type\":\"string\",\"enum\":[\"6*7\"]}},\"required\":[\"expression\"],"                 \
    "\"additionalProperties\":false}}}]"

/* call_tool runs the tool (the answer is its result); the other flavour
 * only returns the model's call */
static void test_llm_tools(void **state)
{
    (void)state;
    struct aios_client *c;
    assert_int_equal(aios_client_new(&c, g_kf->child.base, "sdk_tools"), 0);
    struct aios_message m[] = {{"user", "what is 6 times 7?"}};
    struct aios_llm_opts o = AIOS_LLM_OPTS_INIT;
    o.max_new_tokens = 300; /* seeded: the random model's calls are fixed */
    o.has_seed = true;
    o.seed = 1;
    struct aios_llm_result r;
    int rc = aios_llm_call_tool(c, m, 1, CALC_TOOL, &o, &r);
    if (rc) printf("call_tool: %s\n", aios_client_error(c));
    if (rc == AIOS_CLIENT_ENOTIMPL) {
        printf("SKIP call_tool: %s\n", aios_client_error(c));
        aios_llm_result_free(&r);
        aios_client_free(c);
        return;
    }
    assert_int_equal(rc, 0);
    assert_non_null(strstr(r.text, "42")); /* the calculator ran */
    assert_true(r.n_tool_calls >= 1);
    assert_string_equal(r.tool_calls[0].name, "aios/calculator");
    assert_non_null(strstr(r.tool_calls[0].parameters_json, "6*7"));
    aios_llm_result_free(&r);

    assert_int_equal(aios_llm_chat_with_tool_call_output(c, m, 1, CALC_TOOL, &o, &r), 0);
    assert_true(r.n_tool_calls >= 1);
    assert_string_equal(r.tool_calls[0].name, "aios/calculator");
    assert_null(strstr(r.text, "42")); /* returned, not run */
    aios_llm_result_free(&r);

    /* an unknown tool: the tool manager's 404 reaches the agent typed */
    const char *bad = "[{\"type\":\"function\",\"function\":{\"name\":\"nobody/none\","
                      "\"parameters\":{\"type\":\"object\",\"properties\":{},"
                      "\"additionalProperties\":false}}}]";
    rc = aios_llm_call_tool(c, m, 1, bad, &o, &r);
    if (rc != AIOS_CLIENT_ENOTFOUND) printf("unexpected: %s\n", aios_client_error(c));
    assert_int_equal(rc, AIOS_CLIENT_ENOTFOUND);
    assert_non_null(strstr(aios_client_error(c), "nobody/none"));
    aios_llm_result_free(&r);
    assert_int_equal(aios_llm_call_tool(c, m, 0, CALC_TOOL, &o, &r), AIOS_CLIENT_EINVAL);
    aios_client_free(c);
}

static void test_unreachable(void **state)
{
    (void)state;
    struct aios_client *c;
    assert_int_equal(aios_client_new(&c, "http://127.0.0.1:1", NULL), 0);
    struct aios_message m[] = {{"user", "x"}};
    struct aios_llm_result r;
    assert_int_equal(aios_llm_chat(c, m, 1, NULL, &r), AIOS_CLIENT_ECONNECT);
    assert_non_null(strstr(aios_client_error(c), "cannot reach"));
    aios_llm_result_free(&r);
    aios_client_free(c);
    assert_string_equal(aios_strerror_client(AIOS_CLIENT_ENOTIMPL), "not available in this kernel");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llm_chat),
        cmocka_unit_test(test_managers_typed),
        cmocka_unit_test(test_llm_tools),
        cmocka_unit_test(test_unreachable),
    };
    return cmocka_run_group_tests(tests, kf_group_setup, kf_group_teardown);
}
