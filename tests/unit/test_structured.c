/* Unit tests for src/llm/structured.c, through the OpenAI parser as the API
 * uses it: what each request shape becomes (kind, choice, tools with wire
 * names), the prompt rewriting (catalogue in the system message with wire
 * names, inserted when there is none; assistant tool calls and merged tool
 * results in the Hermes format), the grammar being set, and reading answers
 * back (names restored, text before calls, arguments as object or string,
 * "auto" text that only mentions the tag, cut-off outputs, outputs that
 * fail validation), plus the config bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "llm/structured.h"
#include "util/err.h"

#define TOOLS                                                                                  \
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"author/search\",\"description\":" \
    "\"Search\",\"parameters\":{\"type\":\"object\",\"properties\":{\"q\":{\"type\":\"string\"},"  \
    "\"n\":{\"type\":\"integer\",\"minimum\":1}},\"required\":[\"q\"]}}},{\"type\":\"function\","  \
    "\"function\":{\"name\":\"now\"}}]"

static struct llm_req *parse(const char *fields, int want_rc, char *err, size_t errlen)
{
    char *b = NULL;
    assert_true(asprintf(&b, "{\"model\":\"m\",%s}", fields) > 0);
    json_error_t je;
    json_t *body = json_loads(b, 0, &je);
    if (!body) fprintf(stderr, "bad JSON %s: %s\n", b, je.text);
    assert_non_null(body);
    struct llm_req *req = calloc(1, sizeof *req);
    bool stream;
    int rc = api_openai_parse_chat(body, req, &stream, err, errlen);
    if (rc != want_rc) fprintf(stderr, "rc %d (%s) for %s\n", rc, err, b);
    assert_int_equal(rc, want_rc);
    json_decref(body);
    free(b);
    if (rc) {
        llm_req_free(req);
        return NULL;
    }
    return req;
}

#define USER "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"

static void test_parse_kinds(void **state)
{
    (void)state;
    char err[512];
    struct llm_req *r = parse(USER, 0, err, sizeof err);
    assert_null(r->structured);
    llm_req_free(r);
    r = parse(USER ",\"response_format\":{\"type\":\"text\"},\"tool_choice\":\"auto\"", 0, err, sizeof err);
    assert_null(r->structured);
    llm_req_free(r);
    r = parse(USER ",\"response_format\":{\"type\":\"json_object\"}", 0, err, sizeof err);
    assert_int_equal(r->structured->kind, LLM_OUTPUT_JSON_OBJECT);
    llm_req_free(r);
    r = parse(USER ",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"a\","
              "\"schema\":{\"type\":\"string\"}}}", 0, err, sizeof err);
    assert_int_equal(r->structured->kind, LLM_OUTPUT_JSON_SCHEMA);
    assert_non_null(r->structured->schema);
    llm_req_free(r);

    r = parse(USER "," TOOLS, 0, err, sizeof err);
    struct llm_structured *st = r->structured;
    assert_int_equal(st->kind, LLM_OUTPUT_TOOLS);
    assert_int_equal(st->choice, LLM_TOOL_CHOICE_AUTO);
    assert_int_equal(st->n_tools, 2);
    assert_string_equal(st->tools[0].name, "author/search");
    assert_string_equal(st->tools[0].wire, "author__search");
    assert_null(st->tools[1].params);
    assert_int_equal(st->max_calls, LLM_MAX_TOOL_CALLS);
    llm_req_free(r);
    r = parse(USER "," TOOLS ",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"now\"}},"
              "\"parallel_tool_calls\":false", 0, err, sizeof err);
    assert_int_equal(r->structured->choice, LLM_TOOL_CHOICE_NAMED);
    assert_int_equal(r->structured->forced, 1);
    assert_int_equal(r->structured->max_calls, 1);
    llm_req_free(r);
    r = parse(USER "," TOOLS ",\"tool_choice\":\"none\"", 0, err, sizeof err);
    assert_null(r->structured); /* nothing to offer, nothing to render */
    llm_req_free(r);

    assert_null(parse(USER ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a//b\"}}]",
                      AIOS_EINVAL, err, sizeof err));
    assert_non_null(strstr(err, "tools[0].function.name 'a//b'"));
    assert_null(parse(USER ",\"tools\":{}", AIOS_EINVAL, err, sizeof err));
    assert_non_null(strstr(err, "'tools' must be an array"));
    assert_null(parse(USER "," TOOLS ",\"tool_choice\":{\"type\":\"function\"}", AIOS_EINVAL, err, sizeof err));
    assert_non_null(strstr(err, "'tool_choice' must be"));
    assert_null(parse(USER ",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"schema\":"
                      "{\"type\":\"object\",\"properties\":{\"a\":{\"format\":\"date\"}}}}}",
                      AIOS_EINVAL, err, sizeof err));
    assert_non_null(strstr(err, "response_format.json_schema.schema: schema $.properties.a: keyword 'format'"));
    assert_null(parse("\"messages\":[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{"
                      "\"function\":{\"name\":3}}]}]", AIOS_EINVAL, err, sizeof err));
    assert_non_null(strstr(err, "messages[0].tool_calls[0].function.name"));
}

static void test_prepare_prompt(void **state)
{
    (void)state;
    char err[512];
    struct grammar_opts o;
    grammar_opts_default(&o);
    /* no system message: one is inserted with the catalogue */
    struct llm_req *r = parse(USER "," TOOLS, 0, err, sizeof err);
    assert_int_equal(llm_structured_prepare(r, &o, err, sizeof err), 0);
    assert_int_equal(r->n_msgs, 2);
    assert_string_equal(r->msgs[0].role, "system");
    assert_non_null(strstr(r->msgs[0].content, "<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"author__search\""));
    assert_null(strstr(r->msgs[0].content, "author/search"));
    assert_non_null(strstr(r->msgs[0].content, "<tool_call>"));
    assert_string_equal(r->msgs[1].content, "hi");
    assert_non_null(r->grammar);
    assert_non_null(strstr(r->grammar, "author__search"));
    assert_non_null(strstr(r->grammar, "calls | text")); /* auto */
    llm_req_free(r);

    /* an existing system message is extended; history is rendered */
    r = parse("\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
              "{\"role\":\"user\",\"content\":\"find x\"},"
              "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"
              "\"function\",\"function\":{\"name\":\"author/search\",\"arguments\":\"{\\\"q\\\":"
              "\\\"x\\\"}\"}},{\"id\":\"c2\",\"type\":\"function\",\"function\":{\"name\":\"now\","
              "\"arguments\":\"{}\"}}]},"
              "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"r1\"},"
              "{\"role\":\"tool\",\"tool_call_id\":\"c2\",\"content\":\"r2\"},"
              "{\"role\":\"user\",\"content\":\"thanks\"}],"
              TOOLS ",\"tool_choice\":\"required\"", 0, err, sizeof err);
    assert_int_equal(llm_structured_prepare(r, &o, err, sizeof err), 0);
    assert_int_equal(r->n_msgs, 5);
    assert_string_equal(r->msgs[0].role, "system");
    assert_true(strncmp(r->msgs[0].content, "Be brief.\n\n# Tools", 18) == 0);
    assert_string_equal(r->msgs[2].role, "assistant");
    assert_string_equal(r->msgs[2].content,
                        "<tool_call>\n{\"name\": \"author__search\", \"arguments\": {\"q\": \"x\"}}\n"
                        "</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>");
    assert_string_equal(r->msgs[3].role, "user");
    assert_string_equal(r->msgs[3].content,
                        "<tool_response>\nr1\n</tool_response>\n<tool_response>\nr2\n</tool_response>");
    assert_string_equal(r->msgs[4].content, "thanks");
    assert_null(strstr(r->grammar, "calls | text")); /* required */
    llm_req_free(r);

    /* tool_choice none: no catalogue, no grammar */
    r = parse(USER "," TOOLS ",\"tool_choice\":\"none\"", 0, err, sizeof err);
    assert_int_equal(llm_structured_prepare(r, &o, err, sizeof err), 0);
    assert_int_equal(r->n_msgs, 1);
    assert_null(r->grammar);
    llm_req_free(r);
}

static int result(const char *fields, const char *text, const char *finish,
                  struct llm_structured_result *out, char *err, size_t errlen)
{
    struct llm_req *r = parse(fields, 0, err, errlen);
    struct grammar_opts o;
    grammar_opts_default(&o);
    assert_int_equal(llm_structured_prepare(r, &o, err, errlen), 0);
    struct llm_res res = {.text = (char *)text, .len = strlen(text), .finish_reason = finish};
    int rc = llm_structured_result(r->structured, &res, out, err, errlen);
    llm_req_free(r);
    return rc;
}

static void test_result(void **state)
{
    (void)state;
    char err[512];
    struct llm_structured_result sr;
    const char *one = "<tool_call>\n{\"name\": \"author__search\", \"arguments\": {\"q\": \"x\", \"n\": 2}}\n</tool_call>";
    assert_int_equal(result(USER "," TOOLS ",\"tool_choice\":\"required\"", one, "stop", &sr, err, sizeof err), 0);
    assert_string_equal(sr.finish, "tool_calls");
    assert_int_equal(sr.content_len, 0);
    assert_int_equal(json_array_size(sr.calls), 1);
    json_t *c = json_array_get(sr.calls, 0);
    assert_string_equal(json_string_value(json_object_get(c, "name")), "author/search");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(c, "arguments"), "n")), 2);
    json_decref(sr.calls);

    /* text before calls, arguments as a JSON string, two calls */
    const char *two = "Let me look.\n<tool_call>\n{\"name\": \"now\", \"arguments\": \"{}\"}\n</tool_call>\n"
                      "<tool_call>{\"name\":\"author__search\",\"arguments\":{\"q\":\"\"}}</tool_call>\n";
    assert_int_equal(result(USER "," TOOLS, two, "stop", &sr, err, sizeof err), 0);
    assert_int_equal(sr.content_len, strlen("Let me look."));
    assert_int_equal(json_array_size(sr.calls), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(sr.calls, 0), "name")), "now");
    json_decref(sr.calls);

    /* auto: plain text, or text that only mentions the tag */
    assert_int_equal(result(USER "," TOOLS, "hello", "stop", &sr, err, sizeof err), 0);
    assert_null(sr.calls);
    assert_string_equal(sr.finish, "stop");
    assert_int_equal(sr.content_len, 5);
    assert_int_equal(result(USER "," TOOLS, "use <tool_call> tags", "stop", &sr, err, sizeof err), 0);
    assert_null(sr.calls);

    /* cut by max_tokens: text with finish length */
    assert_int_equal(result(USER "," TOOLS ",\"tool_choice\":\"required\"",
                            "<tool_call>\n{\"name\": \"au", "length", &sr, err, sizeof err), 0);
    assert_null(sr.calls);
    assert_string_equal(sr.finish, "length");

    /* finished but broken: an engine error naming the problem */
    assert_int_equal(result(USER "," TOOLS ",\"tool_choice\":\"required\"", "hello", "stop", &sr,
                            err, sizeof err), AIOS_EENGINE);
    assert_non_null(strstr(err, "no tool call"));
    assert_int_equal(result(USER "," TOOLS ",\"tool_choice\":\"required\"",
                            "<tool_call>\n{\"name\": \"author__search\", \"arguments\": {\"n\": 2}}\n</tool_call>",
                            "stop", &sr, err, sizeof err), AIOS_EENGINE);
    assert_non_null(strstr(err, "missing required property 'q'"));
    assert_int_equal(result(USER "," TOOLS ",\"tool_choice\":\"required\"",
                            "<tool_call>\n{\"name\": \"author/search\", \"arguments\": {}}\n</tool_call>",
                            "stop", &sr, err, sizeof err), AIOS_EENGINE);
    assert_non_null(strstr(err, "names no offered tool"));

    /* ended by the request's own stop string: text, not an error */
    assert_int_equal(result(USER "," TOOLS ",\"tool_choice\":\"required\",\"stop\":[\"\\n\"]",
                            "<tool_call>", "stop", &sr, err, sizeof err), 0);
    assert_null(sr.calls);
    assert_string_equal(sr.finish, "stop");

    /* JSON modes */
    const char *js = USER ",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"schema\":"
                     "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},\"required\":[\"a\"]}}}";
    assert_int_equal(result(js, "{\"a\": 1}", "stop", &sr, err, sizeof err), 0);
    assert_null(sr.calls);
    assert_int_equal(result(js, "{\"a\": \"x\"}", "stop", &sr, err, sizeof err), AIOS_EENGINE);
    assert_non_null(strstr(err, "$.a: expected integer"));
    assert_int_equal(result(js, "{\"a\": ", "length", &sr, err, sizeof err), 0);
    char *jss = NULL;
    assert_true(asprintf(&jss, "%s,\"stop\":\"}\"", js) > 0);
    assert_int_equal(result(jss, "{\"a\": 1", "stop", &sr, err, sizeof err), 0);
    free(jss);
    assert_int_equal(result(USER ",\"response_format\":{\"type\":\"json_object\"}", "[1]", "stop", &sr,
                            err, sizeof err), AIOS_EENGINE);
    assert_non_null(strstr(err, "not a JSON object"));
}

static void test_opts(void **state)
{
    (void)state;
    struct aios_config cfg;
    char err[256];
    struct grammar_opts o;
    const char *y = "llms:\n  structured_output:\n    max_string_length: 7\n    max_depth: 1\n";
    assert_int_equal(config_load_string(&cfg, y, strlen(y), err, sizeof err), 0);
    assert_int_equal(llm_structured_opts(&cfg, &o, err, sizeof err), 0);
    assert_int_equal(o.max_string, 7);
    assert_int_equal(o.max_depth, 1);
    assert_int_equal(o.max_items, GRAMMAR_DEFAULT_MAX_ITEMS);
    config_free(&cfg);
    y = "llms:\n  structured_output:\n    max_items: -1\n";
    assert_int_equal(config_load_string(&cfg, y, strlen(y), err, sizeof err), 0);
    assert_int_equal(llm_structured_opts(&cfg, &o, err, sizeof err), AIOS_ECONFIG);
    assert_non_null(strstr(err, "llms.structured_output.max_items must be an integer between 0 and 2000"));
    config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_kinds),
        cmocka_unit_test(test_prepare_prompt),
        cmocka_unit_test(test_result),
        cmocka_unit_test(test_opts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
