/* Integration: structured output and tool calls through real HTTP on the
 * built-in random-weight model. Its text is noise, but decoding is
 * grammar-constrained, so every answer must be valid:
 *  - response_format json_object parses as an object; json_schema answers
 *    parse and validate (schema_validate) for nested objects, arrays,
 *    enums, integers with ranges, optional members, type arrays, const;
 *  - tools: tool_calls in OpenAI's shape whose arguments parse and
 *    validate against the called tool's schema; a named tool_choice forces
 *    that tool; "author/name" reaches the model as author__name and comes
 *    back restored; parallel_tool_calls false gives exactly one call;
 *    "auto" gives text or valid calls; streaming sends the calls in one
 *    delta at the end;
 *  - max_tokens reached before the structure closes: 200 with
 *    finish_reason "length" and the partial text, no tool_calls;
 *  - AIOS /query chat_with_json_output and chat_with_tool_call_output;
 *  - bad schemas and tools: 400 naming the keyword / field;
 *  - tool history (assistant tool_calls + tool results) is accepted.
 * The kernel runs with small grammar bounds (llms.structured_output) so a
 * random model's strings and arrays end quickly. */
#include "harness.h"

#include "llm/schema.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

KF_TINY_GROUP("structured", KF_TINY_SHORT_OUTPUT)

static json_t *J(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &e);
    if (!j) fprintf(stderr, "bad JSON: %s: %s\n", text, e.text);
    assert_non_null(j);
    return j;
}

/* POST a chat body built from `fields` (JSON members without braces) */
static long chat(const char *fields, json_t **out)
{
    char *b = NULL;
    assert_true(asprintf(&b, "{\"model\":\"aios-tiny\",\"temperature\":1.0,%s}", fields) > 0);
    long st = kf_call(g_kf, "POST", "/v1/chat/completions", b, out);
    if (st != 200 && *out) {
        char *d = json_dumps(*out, 0);
        fprintf(stderr, "HTTP %ld: %s\n", st, d);
        free(d);
    }
    free(b);
    return st;
}

static json_t *message(json_t *j) { return json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message"); }
static const char *finish(json_t *j)
{
    return json_string_value(json_object_get(json_array_get(json_object_get(j, "choices"), 0), "finish_reason"));
}

static void assert_valid(const char *schema, const char *text)
{
    json_t *s = J(schema);
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
    if (!v) fprintf(stderr, "not JSON (%s): %s\n", e.text, text);
    assert_non_null(v);
    char err[256];
    int rc = schema_validate(s, v, err, sizeof err);
    if (rc) fprintf(stderr, "invalid: %s: %s\n", err, text);
    assert_int_equal(rc, 0);
    json_decref(v);
    json_decref(s);
}

#define MSG "\"messages\":[{\"role\":\"user\",\"content\":\"Answer in JSON.\"}]"

static void test_json_object(void **state)
{
    (void)state;
    for (int seed = 1; seed <= 2; seed++) {
        char f[256];
        snprintf(f, sizeof f, "\"seed\":%d,\"max_tokens\":300,%s,\"response_format\":{\"type\":"
                 "\"json_object\"}", seed, MSG);
        json_t *j = NULL;
        assert_int_equal(chat(f, &j), 200);
        assert_string_equal(finish(j), "stop");
        const char *c = json_string_value(json_object_get(message(j), "content"));
        assert_non_null(c);
        json_t *v = json_loads(c, 0, NULL);
        if (!json_is_object(v)) fprintf(stderr, "not an object: %s\n", c);
        assert_true(json_is_object(v));
        json_decref(v);
        json_decref(j);
    }
}

static const char *k_schemas[] = {
    /* nested objects and arrays, optional members */
    "{\"type\":\"object\",\"properties\":{\"trip\":{\"type\":\"object\",\"properties\":{"
    "\"stops\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"name\":{"
    "\"type\":\"string\"},\"nights\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":30}},"
    "\"required\":[\"name\",\"nights\"],\"additionalProperties\":false},\"minItems\":1,"
    "\"maxItems\":2},\"note\":{\"type\":\"string\"}},\"required\":[\"stops\"]}},"
    "\"required\":[\"trip\"]}",
    /* enums, integers, booleans, optional members */
    "{\"type\":\"object\",\"properties\":{\"unit\":{\"enum\":[\"celsius\",\"fahrenheit\"]},"
    "\"days\":{\"type\":\"integer\"},\"ok\":{\"type\":\"boolean\"},\"level\":{\"type\":"
    "\"integer\",\"minimum\":-5,\"maximum\":5}},\"required\":[\"unit\",\"level\"]}",
    /* bounded numbers, type arrays, const, string lengths, arrays of enums */
    "{\"type\":\"object\",\"properties\":{\"score\":{\"type\":\"number\",\"minimum\":0,"
    "\"maximum\":1},\"maybe\":{\"type\":[\"string\",\"null\"],\"maxLength\":3},\"v\":{"
    "\"const\":2},\"code\":{\"type\":\"string\",\"minLength\":2,\"maxLength\":4},\"tags\":{"
    "\"type\":\"array\",\"items\":{\"enum\":[\"a\",\"b\",1]},\"maxItems\":2}},\"required\":"
    "[\"score\",\"maybe\",\"v\",\"code\",\"tags\"],\"additionalProperties\":false}",
};

static void test_json_schema(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof k_schemas / sizeof k_schemas[0]; i++) {
        char *f = NULL;
        assert_true(asprintf(&f, "\"seed\":%zu,\"max_tokens\":400,%s,\"response_format\":{"
                             "\"type\":\"json_schema\",\"json_schema\":{\"name\":\"s%zu\","
                             "\"strict\":true,\"schema\":%s}}", i + 11, MSG, i, k_schemas[i]) > 0);
        json_t *j = NULL;
        assert_int_equal(chat(f, &j), 200);
        assert_string_equal(finish(j), "stop");
        assert_valid(k_schemas[i], json_string_value(json_object_get(message(j), "content")));
        json_decref(j);
        free(f);
    }
}

#define WEATHER_PARAMS                                                                      \
    "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},\"days\":{\"type\":"  \
    "\"integer\",\"minimum\":1,\"maximum\":7},\"unit\":{\"enum\":[\"c\",\"f\"]}},\"required\":" \
    "[\"city\",\"days\"]}"
#define SEARCH_PARAMS                                                                       \
    "{\"type\":\"object\",\"properties\":{\"query\":{\"type\":\"string\",\"minLength\":1},"   \
    "\"top\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":5}},\"required\":[\"query\"],"   \
    "\"additionalProperties\":false}"
#define TOOLS                                                                                   \
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":"  \
    "\"Weather for a city\",\"parameters\":" WEATHER_PARAMS "}},{\"type\":\"function\","         \
    "\"function\":{\"name\":\"demo_author/web_search\",\"description\":\"Search the web\","      \
    "\"parameters\":" SEARCH_PARAMS "}},{\"type\":\"function\",\"function\":{\"name\":\"now\"}}]"
#define TMSG "\"messages\":[{\"role\":\"user\",\"content\":\"What is the weather in Paris?\"}]"

/* every call is well formed; returns how many; names[] gets the names */
static size_t check_calls(json_t *j, const char *names[], size_t max)
{
    json_t *m = message(j);
    assert_string_equal(finish(j), "tool_calls");
    assert_true(json_is_null(json_object_get(m, "content")));
    json_t *calls = json_object_get(m, "tool_calls");
    assert_true(json_is_array(calls));
    assert_true(json_array_size(calls) >= 1);
    size_t i;
    json_t *c;
    json_array_foreach(calls, i, c) {
        assert_non_null(strstr(json_string_value(json_object_get(c, "id")), "call_"));
        assert_string_equal(json_string_value(json_object_get(c, "type")), "function");
        json_t *fn = json_object_get(c, "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        const char *args = json_string_value(json_object_get(fn, "arguments"));
        assert_non_null(name);
        assert_non_null(args);
        if (!strcmp(name, "get_weather")) assert_valid(WEATHER_PARAMS, args);
        else if (!strcmp(name, "demo_author/web_search")) assert_valid(SEARCH_PARAMS, args);
        else if (!strcmp(name, "now")) assert_valid("{\"type\":\"object\",\"additionalProperties\":false}", args);
        else fail_msg("unknown tool name %s", name);
        if (i < max) names[i] = name;
    }
    return json_array_size(calls);
}

static void test_tools_required(void **state)
{
    (void)state;
    for (int seed = 1; seed <= 1; seed++) {
        char f[2048];
        snprintf(f, sizeof f, "\"seed\":%d,\"max_tokens\":400,%s,%s,\"tool_choice\":\"required\"",
                 seed, TMSG, TOOLS);
        json_t *j = NULL;
        assert_int_equal(chat(f, &j), 200);
        const char *names[8];
        check_calls(j, names, 8);
        json_decref(j);
    }
}

static void test_tools_named_and_author_name(void **state)
{
    (void)state;
    const char *forced[] = {"demo_author/web_search", "get_weather", "now"};
    for (int k = 0; k < 3; k++) {
        char f[2048];
        snprintf(f, sizeof f, "\"seed\":%d,\"max_tokens\":400,%s,%s,\"tool_choice\":{\"type\":"
                 "\"function\",\"function\":{\"name\":\"%s\"}}", 5 + k, TMSG, TOOLS, forced[k]);
        json_t *j = NULL;
        assert_int_equal(chat(f, &j), 200);
        const char *names[8];
        size_t n = check_calls(j, names, 8);
        for (size_t i = 0; i < n && i < 8; i++) assert_string_equal(names[i], forced[k]);
        json_decref(j);
    }
}

static void test_tools_single_and_auto(void **state)
{
    (void)state;
    char f[2048];
    snprintf(f, sizeof f, "\"seed\":21,\"max_tokens\":400,%s,%s,\"tool_choice\":\"required\","
             "\"parallel_tool_calls\":false", TMSG, TOOLS);
    json_t *j = NULL;
    assert_int_equal(chat(f, &j), 200);
    assert_int_equal(check_calls(j, NULL, 0), 1);
    json_decref(j);

    /* auto: text, or calls that validate */
    for (int seed = 1; seed <= 1; seed++) {
        snprintf(f, sizeof f, "\"seed\":%d,\"max_tokens\":24,%s,%s", seed, TMSG, TOOLS);
        assert_int_equal(chat(f, &j), 200);
        json_t *m = message(j);
        if (json_object_get(m, "tool_calls")) {
            check_calls(j, NULL, 0);
        } else {
            assert_true(json_is_string(json_object_get(m, "content")));
            assert_true(!strcmp(finish(j), "stop") || !strcmp(finish(j), "length"));
        }
        json_decref(j);
    }
    /* tool_choice none: plain text even with tools */
    snprintf(f, sizeof f, "\"seed\":3,\"max_tokens\":8,%s,%s,\"tool_choice\":\"none\"", TMSG, TOOLS);
    assert_int_equal(chat(f, &j), 200);
    assert_null(json_object_get(message(j), "tool_calls"));
    assert_true(json_is_string(json_object_get(message(j), "content")));
    json_decref(j);
}

static void test_length_cut(void **state)
{
    (void)state;
    char f[2048];
    snprintf(f, sizeof f, "\"seed\":1,\"max_tokens\":3,%s,%s,\"tool_choice\":\"required\"", TMSG, TOOLS);
    json_t *j = NULL;
    assert_int_equal(chat(f, &j), 200);
    assert_string_equal(finish(j), "length");
    assert_null(json_object_get(message(j), "tool_calls"));
    const char *c = json_string_value(json_object_get(message(j), "content"));
    assert_non_null(c);
    /* the start of a call, cut */
    size_t cl = strlen(c);
    assert_true(cl > 0 && strncmp(c, "<tool_call>", cl < 11 ? cl : 11) == 0);
    json_decref(j);
    snprintf(f, sizeof f, "\"seed\":1,\"max_tokens\":2,%s,\"response_format\":{\"type\":"
             "\"json_schema\",\"json_schema\":{\"name\":\"x\",\"schema\":%s}}", MSG, k_schemas[0]);
    assert_int_equal(chat(f, &j), 200);
    assert_string_equal(finish(j), "length");
    json_decref(j);
}

/* raw SSE collection */
struct sse_buf {
    char *s;
    size_t n;
};

static int on_sse(const char *data, size_t n, void *ud)
{
    struct sse_buf *b = ud;
    b->s = realloc(b->s, b->n + n + 1);
    assert_non_null(b->s);
    memcpy(b->s + b->n, data, n);
    b->n += n;
    b->s[b->n] = 0;
    return 0;
}

static void test_tools_stream(void **state)
{
    (void)state;
    char *b = NULL;
    assert_true(asprintf(&b, "{\"model\":\"aios-tiny\",\"seed\":2,\"max_tokens\":400,\"stream\":"
                         "true,%s,%s,\"tool_choice\":{\"type\":\"function\",\"function\":{"
                         "\"name\":\"demo_author/web_search\"}}}", TMSG, TOOLS) > 0);
    char url[256];
    snprintf(url, sizeof url, "%s/v1/chat/completions", g_kf->child.base);
    struct sse_buf sb = {0};
    long status = 0;
    assert_int_equal(hc_stream(url, b, on_sse, &sb, &status, 300), 0);
    assert_int_equal(status, 200);
    int n_calls_events = 0, n_content = 0;
    char fin[32] = "";
    bool done = false;
    for (char *line = strtok(sb.s, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "data: ", 6)) continue;
        if (!strcmp(line + 6, "[DONE]")) {
            done = true;
            continue;
        }
        json_t *ev = J(line + 6);
        json_t *ch = json_array_get(json_object_get(ev, "choices"), 0);
        json_t *d = json_object_get(ch, "delta");
        const char *c = json_string_value(json_object_get(d, "content"));
        if (c && *c) n_content++;
        json_t *tc = json_object_get(d, "tool_calls");
        if (tc) {
            n_calls_events++;
            size_t i;
            json_t *call;
            json_array_foreach(tc, i, call) {
                assert_int_equal(json_integer_value(json_object_get(call, "index")), (json_int_t)i);
                json_t *fn = json_object_get(call, "function");
                assert_string_equal(json_string_value(json_object_get(fn, "name")),
                                    "demo_author/web_search");
                assert_valid(SEARCH_PARAMS, json_string_value(json_object_get(fn, "arguments")));
            }
        }
        if (json_is_string(json_object_get(ch, "finish_reason")))
            snprintf(fin, sizeof fin, "%s", json_string_value(json_object_get(ch, "finish_reason")));
        json_decref(ev);
    }
    assert_true(done);
    assert_int_equal(n_calls_events, 1);
    assert_int_equal(n_content, 0);
    assert_string_equal(fin, "tool_calls");
    free(sb.s);
    free(b);
}

static void test_aios_query(void **state)
{
    (void)state;
    json_t *j = NULL;
    const char *q1 =
        "{\"agent_name\":\"demo/agent\",\"query_type\":\"llm\",\"query_data\":{\"action_type\":"
        "\"chat_with_tool_call_output\",\"messages\":[{\"role\":\"user\",\"content\":\"search\"}],"
        "\"max_new_tokens\":400,\"seed\":4," TOOLS "}}";
    assert_int_equal(kf_call(g_kf, "POST", "/query", q1, &j), 200);
    json_t *r = json_object_get(j, "response");
    assert_true(json_is_null(json_object_get(r, "response_message")));
    assert_string_equal(json_string_value(json_object_get(r, "finish_reason")), "tool_calls");
    json_t *calls = json_object_get(r, "tool_calls");
    assert_true(json_array_size(calls) >= 1);
    size_t i;
    json_t *c;
    json_array_foreach(calls, i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        assert_non_null(strstr(json_string_value(json_object_get(c, "id")), "call_"));
        json_t *p = json_object_get(c, "parameters");
        assert_true(json_is_object(p));
        char *ps = json_dumps(p, 0);
        if (!strcmp(name, "get_weather")) assert_valid(WEATHER_PARAMS, ps);
        else if (!strcmp(name, "demo_author/web_search")) assert_valid(SEARCH_PARAMS, ps);
        else assert_string_equal(name, "now");
        free(ps);
    }
    json_decref(j);

    const char *q2 =
        "{\"agent_name\":\"demo/agent\",\"query_type\":\"llm\",\"query_data\":{\"action_type\":"
        "\"chat_with_json_output\",\"messages\":[{\"role\":\"user\",\"content\":\"json\"}],"
        "\"max_new_tokens\":300,\"seed\":6}}";
    assert_int_equal(kf_call(g_kf, "POST", "/query", q2, &j), 200);
    const char *m = json_string_value(json_object_get(json_object_get(j, "response"), "response_message"));
    assert_non_null(m);
    json_t *v = json_loads(m, 0, NULL);
    assert_true(json_is_object(v));
    json_decref(v);
    json_decref(j);

    /* tool call output without tools */
    assert_int_equal(kf_call(g_kf, "POST", "/query",
                             "{\"agent_name\":\"a\",\"query_type\":\"llm\",\"query_data\":{"
                             "\"action_type\":\"chat_with_tool_call_output\",\"messages\":[{"
                             "\"role\":\"user\",\"content\":\"x\"}]}}", &j), 400);
    assert_error_body(j, "tools");
    json_decref(j);
}

static void bad(const char *fields, const char *needle)
{
    json_t *j = NULL;
    char *b = NULL;
    assert_true(asprintf(&b, "{\"model\":\"aios-tiny\",%s}", fields) > 0);
    long st = kf_call(g_kf, "POST", "/v1/chat/completions", b, &j);
    if (st != 400) fprintf(stderr, "expected 400 for %s, got %ld\n", b, st);
    assert_int_equal(st, 400);
    assert_error_body(j, needle);
    json_decref(j);
    free(b);
}

#define RF(schema) "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\",\"schema\":" schema "}}"
#define TOOL1(name, params) "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"" name "\",\"parameters\":" params "}}]"

static void test_bad_requests(void **state)
{
    (void)state;
    bad(TMSG "," RF("{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"pattern\":\"^a\"}}}"),
        "$.properties.city: keyword 'pattern' is not supported");
    bad(TMSG "," RF("{\"anyOf\":[]}"), "keyword 'anyOf' is not supported");
    bad(TMSG "," TOOL1("f", "{\"type\":\"object\",\"properties\":{\"x\":{\"$ref\":\"#/a\"}}}"),
        "tools[0].function.parameters: schema $.properties.x: keyword '$ref' is not supported");
    bad(TMSG "," TOOL1("f", "{\"type\":\"string\"}"), "must be a schema of type \"object\"");
    bad(TMSG "," TOOL1("bad name!", "{}"), "tools[0].function.name 'bad name!'");
    bad(TMSG ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a/b\"}},{\"type\":"
        "\"function\",\"function\":{\"name\":\"a__b\"}}]", "both reach the model as 'a__b'");
    bad(TMSG ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}},{\"type\":"
        "\"function\",\"function\":{\"name\":\"f\"}}]", "used twice");
    bad(TMSG ",\"tools\":[{\"type\":\"retrieval\"}]", "only function tools");
    bad(TMSG "," TOOLS ",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"nope\"}}",
        "'nope', which is not in 'tools'");
    bad(TMSG "," TOOLS ",\"tool_choice\":\"sometimes\"", "'tool_choice' must be");
    bad(TMSG ",\"tool_choice\":\"required\"", "'tool_choice' needs 'tools'");
    bad(TMSG ",\"response_format\":{\"type\":\"yaml\"}", "'response_format.type' must be");
    bad(TMSG ",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\"}}",
        "'response_format.json_schema.schema' is required");
    bad(TMSG "," TOOLS ",\"response_format\":{\"type\":\"json_object\"}",
        "'tools' together with a JSON 'response_format'");
    bad(TMSG "," RF("{\"type\":\"integer\",\"minimum\":0.2,\"maximum\":0.8}"), "no integer");
    bad(TMSG "," RF("{\"enum\":[1],\"type\":\"string\"}"), "no 'enum' value");
    bad(TMSG "," TOOLS ",\"parallel_tool_calls\":1", "'parallel_tool_calls' must be a boolean");
    /* the kernel still serves */
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "GET", "/status", NULL, &j), 200);
    json_decref(j);
}

static void test_tool_history(void **state)
{
    (void)state;
    char f[4096];
    snprintf(f, sizeof f,
             "\"seed\":1,\"max_tokens\":4,\"tool_choice\":\"none\",%s,\"messages\":["
             "{\"role\":\"user\",\"content\":\"Weather in Paris?\"},"
             "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\",\"type\":"
             "\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":"
             "\\\"Paris\\\",\\\"days\\\":1}\"}},{\"id\":\"call_2\",\"type\":\"function\",\"function\":"
             "{\"name\":\"demo_author/web_search\",\"arguments\":\"{\\\"query\\\":\\\"x\\\"}\"}}]},"
             "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"sunny\"},"
             "{\"role\":\"tool\",\"tool_call_id\":\"call_2\",\"content\":\"found\"}]", TOOLS);
    json_t *j = NULL;
    assert_int_equal(chat(f, &j), 200);
    json_int_t with_history = json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens"));
    json_decref(j);
    /* the calls and results reached the prompt: it is longer than the
     * question alone */
    snprintf(f, sizeof f, "\"seed\":1,\"max_tokens\":4,\"tool_choice\":\"none\",%s,\"messages\":["
             "{\"role\":\"user\",\"content\":\"Weather in Paris?\"}]", TOOLS);
    assert_int_equal(chat(f, &j), 200);
    json_int_t without = json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens"));
    json_decref(j);
    assert_true(with_history > without + 30);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_json_object),
        cmocka_unit_test(test_json_schema),
        cmocka_unit_test(test_tools_required),
        cmocka_unit_test(test_tools_named_and_author_name),
        cmocka_unit_test(test_tools_single_and_auto),
        cmocka_unit_test(test_length_cut),
        cmocka_unit_test(test_tools_stream),
        cmocka_unit_test(test_aios_query),
        cmocka_unit_test(test_tool_history),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
