/* Integration: OpenAI's Responses API (POST /v1/responses, GET and DELETE
 * /v1/responses/{id}) on a real kernel with the tiny test model, with the
 * JSON the OpenAI SDKs and the OpenAI Agents SDK send: a text input with
 * instructions (client.responses.create(model, input, instructions)), input
 * items (easy messages and typed messages with input_text parts), function
 * tools with a function_call answer continued by a function_call_output
 * (through previous_response_id, and the Agents SDK's way of resending the
 * items), text.format json_schema, the streamed event order with
 * sequence numbers, a chain continued across a kernel restart (rebuilt from
 * the store: SQLite, or PostgreSQL in the integration/pg/ variant; the
 * same prompt, nothing reused), another agent's id as
 * a 404, delete, and bad input as 400s. The random-weight model's text is
 * noise; what is asserted is shape, grammar-held structure and token
 * accounting. */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

KF_TINY_GROUP("responses", KF_TINY_SHORT_OUTPUT)

/* POST /v1/responses as the operator; asserts the status; the body */
static json_t *create(const char *body, long want)
{
    json_t *j = NULL;
    long st = kf_call(g_kf, "POST", "/v1/responses", body, &j);
    expect_status(st, want, j);
    return j;
}

static const char *rid(json_t *j)
{
    const char *id = json_string_value(json_object_get(j, "id"));
    assert_non_null(id);
    assert_int_equal(strncmp(id, "resp_", 5), 0);
    return id;
}

static json_int_t usage_of(json_t *j, const char *key)
{
    json_t *u = json_object_get(j, "usage");
    if (!strcmp(key, "cached_tokens"))
        u = json_object_get(u, "input_tokens_details");
    json_t *v = json_object_get(u, key);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

/* the Response object's invariant shape */
static void check_response(json_t *j)
{
    assert_string_equal(json_string_value(json_object_get(j, "object")), "response");
    rid(j);
    const char *st = json_string_value(json_object_get(j, "status"));
    assert_non_null(st);
    assert_true(!strcmp(st, "completed") || !strcmp(st, "incomplete"));
    assert_string_equal(json_string_value(json_object_get(j, "model")), "aios-tiny");
    assert_true(json_is_array(json_object_get(j, "output")));
    assert_true(json_array_size(json_object_get(j, "output")) >= 1);
    assert_true(usage_of(j, "input_tokens") > 0);
    assert_true(usage_of(j, "output_tokens") > 0);
    assert_int_equal(usage_of(j, "total_tokens"),
                     usage_of(j, "input_tokens") + usage_of(j, "output_tokens"));
    assert_true(json_is_integer(json_object_get(j, "created_at")));
}

/* output[0] is a message with one output_text part; its text */
static const char *message_text(json_t *j)
{
    json_t *m = json_array_get(json_object_get(j, "output"), 0);
    assert_string_equal(json_string_value(json_object_get(m, "type")), "message");
    assert_string_equal(json_string_value(json_object_get(m, "role")), "assistant");
    assert_int_equal(strncmp(json_string_value(json_object_get(m, "id")), "msg_", 4), 0);
    json_t *p = json_array_get(json_object_get(m, "content"), 0);
    assert_string_equal(json_string_value(json_object_get(p, "type")), "output_text");
    assert_true(json_is_array(json_object_get(p, "annotations")));
    const char *t = json_string_value(json_object_get(p, "text"));
    assert_non_null(t);
    return t;
}

/* client.responses.create(model=..., instructions=..., input="...") */
static void test_text(void **state)
{
    (void)state;
    json_t *j = create("{\"model\":\"aios-tiny\",\"instructions\":\"You are a coding assistant "
                       "that talks like a pirate.\",\"input\":\"Are semicolons optional in "
                       "JavaScript?\",\"max_output_tokens\":12,\"temperature\":0}",
                       200);
    check_response(j);
    const char *text = message_text(j);
    assert_string_equal(json_string_value(json_object_get(j, "instructions")),
                        "You are a coding assistant that talks like a pirate.");
    assert_true(json_is_true(json_object_get(j, "store")));
    assert_true(json_is_null(json_object_get(j, "previous_response_id")));
    assert_int_equal(usage_of(j, "output_tokens"), 12);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "incomplete");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "incomplete_details"),
                                                          "reason")),
                        "max_output_tokens");
    /* GET returns the stored response */
    char path[128];
    snprintf(path, sizeof path, "/v1/responses/%s", rid(j));
    json_t *g = NULL;
    expect_status(kf_call(g_kf, "GET", path, NULL, &g), 200, g);
    assert_string_equal(rid(g), rid(j));
    assert_string_equal(message_text(g), text);
    json_decref(g);
    json_decref(j);
}

/* the Agents SDK's first turn: instructions, a list of input items (an
 * easy message without a type, a typed message with input_text parts),
 * include [], tools [], store, stream false; then the next turn with
 * previous_response_id and only the new item */
static void test_items_and_chain(void **state)
{
    (void)state;
    json_t *a = create("{\"include\":[],\"input\":[{\"content\":\"My name is Ada.\",\"role\":"
                       "\"user\"},{\"type\":\"message\",\"role\":\"user\",\"content\":[{\"type\":"
                       "\"input_text\",\"text\":\"Remember it.\"}]}],\"instructions\":\"You are a "
                       "helpful agent.\",\"model\":\"aios-tiny\",\"tools\":[],\"stream\":false,"
                       "\"store\":true,\"max_output_tokens\":6,\"temperature\":0}",
                       200);
    check_response(a);
    json_int_t in_a = usage_of(a, "input_tokens");
    char body[512];
    snprintf(body, sizeof body,
             "{\"include\":[],\"input\":[{\"content\":\"What is my name?\",\"role\":\"user\"}],"
             "\"instructions\":\"You are a helpful agent.\",\"model\":\"aios-tiny\","
             "\"previous_response_id\":\"%s\",\"tools\":[],\"stream\":false,"
             "\"max_output_tokens\":6,\"temperature\":0}",
             rid(a));
    json_t *b = create(body, 200);
    check_response(b);
    assert_string_equal(json_string_value(json_object_get(b, "previous_response_id")), rid(a));
    /* the second turn's prompt holds the first turn, its answer and the new item */
    assert_true(usage_of(b, "input_tokens") > in_a + usage_of(a, "output_tokens"));
    /* and the engine still held the agent's conversation: the first turn's
     * prompt was not computed again */
    /* (all but the last token or two: how the answer's first bytes join the
     * template's newline before them is up to the tokenizer) */
    if (usage_of(b, "cached_tokens") < in_a - 2)
        fail_msg("cached %lld of %lld (first prompt %lld)", (long long)usage_of(b, "cached_tokens"),
                 (long long)usage_of(b, "input_tokens"), (long long)in_a);
    /* the same conversation resent as items (the Agents SDK without server
     * state: the answer's message item as it came, ids, status,
     * annotations and all): the same prompt as the stored chain */
    json_t *items = json_pack("[{s:s,s:s},{s:s,s:s,s:[{s:s,s:s}]}]", "content", "My name is Ada.",
                              "role", "user", "type", "message", "role", "user", "content", "type",
                              "input_text", "text", "Remember it.");
    json_array_extend(items, json_object_get(a, "output"));
    json_array_append_new(items, json_pack("{s:s,s:s}", "content", "What is my name?", "role",
                                           "user"));
    json_t *req = json_pack("{s:[],s:o,s:s,s:s,s:[],s:b,s:b,s:i,s:i}", "include", "input", items,
                            "instructions", "You are a helpful agent.", "model", "aios-tiny",
                            "tools", "stream", 0, "store", 0, "max_output_tokens", 6,
                            "temperature", 0);
    char *rb = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    json_t *c = create(rb, 200);
    free(rb);
    assert_int_equal(usage_of(c, "input_tokens"), usage_of(b, "input_tokens"));
    json_decref(a);
    json_decref(b);
    json_decref(c);
}

static const char *WEATHER_TOOL =
    "{\"type\":\"function\",\"name\":\"get_weather\",\"description\":\"Get the weather in a "
    "city\",\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},"
    "\"required\":[\"city\"],\"additionalProperties\":false},\"strict\":true}";

/* output function_call item: name get_weather, arguments {"city": string} */
static json_t *function_call(json_t *j)
{
    json_t *out = json_object_get(j, "output"), *fc = NULL, *it;
    size_t i;
    json_array_foreach(out, i, it)
        if (!strcmp(json_string_value(json_object_get(it, "type")), "function_call")) fc = it;
    assert_non_null(fc);
    assert_string_equal(json_string_value(json_object_get(fc, "name")), "get_weather");
    assert_string_equal(json_string_value(json_object_get(fc, "status")), "completed");
    assert_int_equal(strncmp(json_string_value(json_object_get(fc, "id")), "fc_", 3), 0);
    assert_int_equal(strncmp(json_string_value(json_object_get(fc, "call_id")), "call_", 5), 0);
    json_t *args = json_loads(json_string_value(json_object_get(fc, "arguments")), 0, NULL);
    assert_non_null(args);
    assert_true(json_is_string(json_object_get(args, "city")));
    json_decref(args);
    return fc;
}

static void test_tools_and_outputs(void **state)
{
    (void)state;
    char body[8192];
    snprintf(body, sizeof body,
             "{\"model\":\"aios-tiny\",\"input\":\"What is the weather in Paris?\",\"tools\":[%s],"
             "\"tool_choice\":\"required\",\"parallel_tool_calls\":false,\"max_output_tokens\":200}",
             WEATHER_TOOL);
    json_t *a = create(body, 200);
    check_response(a);
    assert_string_equal(json_string_value(json_object_get(a, "status")), "completed");
    json_t *fc = function_call(a);
    const char *call_id = json_string_value(json_object_get(fc, "call_id"));

    /* continue with the tool's result, as the SDK does */
    snprintf(body, sizeof body,
             "{\"model\":\"aios-tiny\",\"previous_response_id\":\"%s\",\"input\":[{\"type\":"
             "\"function_call_output\",\"call_id\":\"%s\",\"output\":\"{\\\"temperature\\\": "
             "21}\"}],\"tools\":[%s],\"parallel_tool_calls\":false,\"max_output_tokens\":200}",
             rid(a), call_id, WEATHER_TOOL);
    json_t *b = create(body, 200);
    check_response(b);
    assert_true(usage_of(b, "input_tokens") > usage_of(a, "input_tokens"));

    /* the Agents SDK without server state: the items resent (the call as
     * the output gave it, then its result): the same prompt */
    json_t *items = json_pack("[{s:s,s:s}]", "role", "user", "content",
                              "What is the weather in Paris?");
    json_array_extend(items, json_object_get(a, "output"));
    json_array_append_new(items, json_pack("{s:s,s:s,s:s}", "type", "function_call_output",
                                           "call_id", call_id, "output", "{\"temperature\": 21}"));
    char *its = json_dumps(items, JSON_COMPACT);
    json_decref(items);
    snprintf(body, sizeof body,
             "{\"model\":\"aios-tiny\",\"store\":false,\"input\":%s,\"tools\":[%s],\"parallel_tool_calls\":false,"
             "\"max_output_tokens\":200}",
             its, WEATHER_TOOL);
    free(its);
    json_t *c = create(body, 200);
    check_response(c);
    assert_int_equal(usage_of(c, "input_tokens"), usage_of(b, "input_tokens"));
    /* not stored */
    char path[128];
    snprintf(path, sizeof path, "/v1/responses/%s", rid(c));
    json_t *g = NULL;
    expect_status(kf_call(g_kf, "GET", path, NULL, &g), 404, g);
    json_decref(g);
    json_decref(a);
    json_decref(b);
    json_decref(c);
}

static void test_json_schema(void **state)
{
    (void)state;
    json_t *j = create("{\"model\":\"aios-tiny\",\"input\":\"Jane, 54 years old\",\"text\":{"
                       "\"format\":{\"type\":\"json_schema\",\"name\":\"person\",\"strict\":true,"
                       "\"schema\":{\"type\":\"object\",\"properties\":{\"name\":{\"type\":"
                       "\"string\"},\"age\":{\"type\":\"integer\"}},\"required\":[\"name\","
                       "\"age\"],\"additionalProperties\":false}}},\"max_output_tokens\":200}",
                       200);
    check_response(j);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "completed");
    json_t *v = json_loads(message_text(j), 0, NULL);
    assert_non_null(v);
    assert_true(json_is_string(json_object_get(v, "name")));
    assert_true(json_is_integer(json_object_get(v, "age")));
    assert_int_equal(json_object_size(v), 2);
    json_decref(v);
    /* the format is echoed */
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(j, "text"), "format"), "type")),
                        "json_schema");
    json_decref(j);
}

/* the raw SSE body of a streamed request */
static char *stream_body(const char *body, long *status)
{
    char url[512], auth[300];
    snprintf(url, sizeof url, "%s/v1/responses", g_kf->child.base);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", g_kf->child.token);
    const char *hdrs[] = {auth, NULL};
    struct hc_resp r;
    assert_int_equal(hc_call_h("POST", url, body, strlen(body), hdrs, &r, 300), 0);
    *status = r.status;
    char *s = strndup(r.body ? r.body : "", r.len);
    hc_resp_free(&r);
    return s;
}

/* parse "event: T\ndata: J\n\n" pairs; each data's type must equal T and
 * sequence numbers run 0, 1, 2, ... */
static json_t *events_of(char *s)
{
    json_t *evs = json_array();
    char *save = NULL;
    for (char *blk = strtok_r(s, "\n", &save); blk; blk = strtok_r(NULL, "\n", &save)) {
        assert_int_equal(strncmp(blk, "event: ", 7), 0);
        char type[128];
        snprintf(type, sizeof type, "%s", blk + 7);
        char *data = strtok_r(NULL, "\n", &save);
        assert_non_null(data);
        assert_int_equal(strncmp(data, "data: ", 6), 0);
        json_t *e = json_loads(data + 6, 0, NULL);
        assert_non_null(e);
        assert_string_equal(json_string_value(json_object_get(e, "type")), type);
        assert_int_equal(json_integer_value(json_object_get(e, "sequence_number")),
                         (json_int_t)json_array_size(evs));
        json_array_append_new(evs, e);
    }
    return evs;
}

static const char *etype(json_t *evs, size_t i)
{
    return json_string_value(json_object_get(json_array_get(evs, i), "type"));
}

static void test_stream_text(void **state)
{
    (void)state;
    long st;
    char *s = stream_body("{\"model\":\"aios-tiny\",\"input\":\"Say hello\",\"stream\":true,"
                          "\"max_output_tokens\":10}",
                          &st);
    assert_int_equal(st, 200);
    json_t *evs = events_of(s);
    free(s);
    size_t n = json_array_size(evs);
    assert_true(n >= 10);
    assert_string_equal(etype(evs, 0), "response.created");
    assert_string_equal(etype(evs, 1), "response.in_progress");
    assert_string_equal(etype(evs, 2), "response.output_item.added");
    assert_string_equal(etype(evs, 3), "response.content_part.added");
    size_t i = 4;
    char text[4096] = "";
    for (; i < n && !strcmp(etype(evs, i), "response.output_text.delta"); i++)
        strncat(text, json_string_value(json_object_get(json_array_get(evs, i), "delta")),
                sizeof text - strlen(text) - 1);
    assert_true(i > 4);
    assert_string_equal(etype(evs, i), "response.output_text.done");
    assert_string_equal(json_string_value(json_object_get(json_array_get(evs, i), "text")), text);
    assert_string_equal(etype(evs, i + 1), "response.content_part.done");
    assert_string_equal(etype(evs, i + 2), "response.output_item.done");
    assert_int_equal(i + 4, n);
    const char *last = etype(evs, i + 3);
    assert_true(!strcmp(last, "response.completed") || !strcmp(last, "response.incomplete"));
    json_t *created = json_object_get(json_array_get(evs, 0), "response");
    json_t *final = json_object_get(json_array_get(evs, i + 3), "response");
    assert_string_equal(json_string_value(json_object_get(created, "status")), "in_progress");
    check_response(final);
    assert_string_equal(rid(created), rid(final));
    assert_string_equal(message_text(final), text);
    /* stored: GET gives the same */
    char path[128];
    snprintf(path, sizeof path, "/v1/responses/%s", rid(final));
    json_t *g = NULL;
    expect_status(kf_call(g_kf, "GET", path, NULL, &g), 200, g);
    assert_string_equal(message_text(g), text);
    json_decref(g);
    json_decref(evs);
}

static void test_stream_tool_call(void **state)
{
    (void)state;
    char body[1024];
    snprintf(body, sizeof body,
             "{\"model\":\"aios-tiny\",\"input\":\"Weather in Oslo?\",\"stream\":true,"
             "\"tools\":[%s],\"tool_choice\":{\"type\":\"function\",\"name\":\"get_weather\"},\"parallel_tool_calls\":false,"
             "\"max_output_tokens\":200}",
             WEATHER_TOOL);
    long st;
    char *s = stream_body(body, &st);
    assert_int_equal(st, 200);
    json_t *evs = events_of(s);
    free(s);
    size_t n = json_array_size(evs);
    assert_int_equal(n, 7);
    assert_string_equal(etype(evs, 0), "response.created");
    assert_string_equal(etype(evs, 1), "response.in_progress");
    assert_string_equal(etype(evs, 2), "response.output_item.added");
    assert_string_equal(etype(evs, 3), "response.function_call_arguments.delta");
    assert_string_equal(etype(evs, 4), "response.function_call_arguments.done");
    assert_string_equal(etype(evs, 5), "response.output_item.done");
    assert_string_equal(etype(evs, 6), "response.completed");
    json_t *added = json_object_get(json_array_get(evs, 2), "item");
    assert_string_equal(json_string_value(json_object_get(added, "type")), "function_call");
    assert_string_equal(json_string_value(json_object_get(added, "status")), "in_progress");
    json_t *done = json_array_get(evs, 4);
    json_t *fc = function_call(json_object_get(json_array_get(evs, 6), "response"));
    assert_string_equal(json_string_value(json_object_get(done, "arguments")),
                        json_string_value(json_object_get(fc, "arguments")));
    assert_string_equal(json_string_value(json_object_get(done, "item_id")),
                        json_string_value(json_object_get(fc, "id")));
    json_decref(evs);
}

/* a chain continued after the kernel restarted on the same data_dir: the
 * conversation comes back from the store, the same prompt as before the
 * restart, now computed from the start */
static void test_restart(void **state)
{
    (void)state;
    json_t *a = create("{\"model\":\"aios-tiny\",\"instructions\":\"Be brief.\",\"input\":"
                       "\"First question\",\"max_output_tokens\":6,\"temperature\":0}",
                       200);
    char body[512];
    snprintf(body, sizeof body,
             "{\"model\":\"aios-tiny\",\"instructions\":\"Be brief.\",\"previous_response_id\":"
             "\"%s\",\"input\":\"Second question\",\"max_output_tokens\":6,\"temperature\":0}",
             rid(a));
    json_t *before = create(body, 200);
    assert_true(usage_of(before, "cached_tokens") > 0); /* retained: reused */

    assert_int_equal(child_stop(&g_kf->child, 60), 0);
    const char *extra[] = {"--config", g_tk.cfg, NULL};
    if (child_start(&g_kf->child, aios_bin(), g_kf->dir, extra, 300) != 0) {
        kf_print_log(g_kf);
        fail_msg("the kernel did not restart");
    }
    json_t *after = create(body, 200);
    check_response(after);
    assert_int_equal(usage_of(after, "input_tokens"), usage_of(before, "input_tokens"));
    assert_int_equal(usage_of(after, "cached_tokens"), 0);
    message_text(after);
    /* and the old responses are still there */
    char path[128];
    snprintf(path, sizeof path, "/v1/responses/%s", rid(before));
    json_t *g = NULL;
    expect_status(kf_call(g_kf, "GET", path, NULL, &g), 200, g);
    json_decref(g);
    json_decref(a);
    json_decref(before);
    json_decref(after);
}

/* responses belong to the agent that made them */
static void test_other_agent(void **state)
{
    (void)state;
    char alice[256], bob[256];
    kf_register_agent(g_kf, "resp-alice", alice, sizeof alice);
    kf_register_agent(g_kf, "resp-bob", bob, sizeof bob);
    json_t *a = NULL;
    long st = kf_call_as(g_kf, alice, NULL, "POST", "/v1/responses",
                         "{\"model\":\"aios-tiny\",\"input\":\"secret\",\"max_output_tokens\":4}",
                         &a);
    expect_status(st, 200, a);
    char path[128], body[512];
    snprintf(path, sizeof path, "/v1/responses/%s", rid(a));
    json_t *j = NULL;
    expect_status(kf_call_as(g_kf, alice, NULL, "GET", path, NULL, &j), 200, j);
    json_decref(j);
    /* bob: GET, continue and DELETE are the 404 of an unknown id */
    expect_status(kf_call_as(g_kf, bob, NULL, "GET", path, NULL, &j), 404, j);
    assert_error_body(j, "not found");
    json_decref(j);
    expect_status(kf_call_as(g_kf, bob, NULL, "GET", "/v1/responses/resp_0000", NULL, &j), 404, j);
    assert_error_body(j, "not found");
    json_decref(j);
    snprintf(body, sizeof body,
             "{\"model\":\"aios-tiny\",\"previous_response_id\":\"%s\",\"input\":\"tell me\","
             "\"max_output_tokens\":4}",
             rid(a));
    expect_status(kf_call_as(g_kf, bob, NULL, "POST", "/v1/responses", body, &j), 404, j);
    assert_error_body(j, "not found");
    json_decref(j);
    expect_status(kf_call_as(g_kf, bob, NULL, "DELETE", path, NULL, &j), 404, j);
    json_decref(j);
    /* bob may not name himself alice */
    expect_status(kf_call_as(g_kf, bob, "X-Aios-Agent: resp-alice", "GET", path, NULL, &j), 403, j);
    json_decref(j);
    /* the operator sees it when acting as alice only */
    expect_status(kf_call(g_kf, "GET", path, NULL, &j), 404, j);
    json_decref(j);
    expect_status(kf_call_as(g_kf, g_kf->child.token, "X-Aios-Agent: resp-alice", "GET", path,
                             NULL, &j),
                  200, j);
    json_decref(j);
    /* alice's still there, and continues */
    expect_status(kf_call_as(g_kf, alice, NULL, "POST", "/v1/responses", body, &j), 200, j);
    json_decref(j);
    json_decref(a);
}

static void test_delete(void **state)
{
    (void)state;
    json_t *a = create("{\"model\":\"aios-tiny\",\"input\":\"to delete\",\"max_output_tokens\":4}",
                       200);
    char path[128], body[256];
    snprintf(path, sizeof path, "/v1/responses/%s", rid(a));
    json_t *j = NULL;
    expect_status(kf_call(g_kf, "DELETE", path, NULL, &j), 200, j);
    assert_string_equal(json_string_value(json_object_get(j, "id")), rid(a));
    assert_string_equal(json_string_value(json_object_get(j, "object")), "response");
    assert_true(json_is_true(json_object_get(j, "deleted")));
    json_decref(j);
    expect_status(kf_call(g_kf, "GET", path, NULL, &j), 404, j);
    json_decref(j);
    expect_status(kf_call(g_kf, "DELETE", path, NULL, &j), 404, j);
    json_decref(j);
    snprintf(body, sizeof body,
             "{\"model\":\"aios-tiny\",\"previous_response_id\":\"%s\",\"input\":\"x\"}", rid(a));
    expect_status(kf_call(g_kf, "POST", "/v1/responses", body, &j), 404, j);
    assert_error_body(j, rid(a));
    json_decref(j);
    json_decref(a);
}

static void bad(const char *body, const char *needle)
{
    json_t *j = NULL;
    long st = kf_call(g_kf, "POST", "/v1/responses", body, &j);
    expect_status(st, 400, j);
    assert_error_body(j, needle);
    json_decref(j);
}

static void test_bad_input(void **state)
{
    (void)state;
    bad("{\"model\":\"aios-tiny\"}", "'input' is required");
    bad("{\"model\":\"aios-tiny\",\"input\":[]}", "'input' is required");
    bad("{\"model\":\"aios-tiny\",\"input\":\"x\",\"frobnicate\":1}", "'frobnicate'");
    bad("{\"model\":\"aios-tiny\",\"input\":[{\"type\":\"input_image\"}]}", "input_image");
    bad("{\"model\":\"aios-tiny\",\"input\":[{\"role\":\"user\",\"content\":[{\"type\":"
        "\"input_image\",\"image_url\":\"x\"}]}]}",
        "input[0].content[0]");
    bad("{\"model\":\"aios-tiny\",\"input\":[{\"type\":\"function_call_output\",\"output\":"
        "\"x\"}]}",
        "input[0].call_id");
    bad("{\"model\":\"aios-tiny\",\"input\":\"x\",\"tools\":[{\"type\":\"web_search_preview\"}]}",
        "web_search_preview");
    bad("{\"model\":\"aios-tiny\",\"input\":\"x\",\"text\":{\"format\":{\"type\":\"json_schema\","
        "\"name\":\"n\"}}}",
        "text.format.schema");
    bad("{\"model\":\"aios-tiny\",\"input\":\"x\",\"store\":\"yes\"}", "'store'");
    bad("{\"model\":\"aios-tiny\",\"input\":\"x\",\"background\":true}", "'background'");
    bad("{\"model\":\"aios-tiny\",\"input\":\"x\",\"max_output_tokens\":0}", "max_output_tokens");
    bad("{\"model\":\"aios-tiny\",\"input\":\"x\",\"tool_choice\":\"always\"}", "always");
    bad("{\"model\":\"aios-tiny\",\"input\":\"x\",\"tool_choice\":{\"type\":\"file_search\"}}",
        "tool_choice");
    bad("{\"model\":\"aios-tiny\",\"input\":\"x\",\"conversation\":\"conv_1\"}", "previous_response_id");
    json_t *j = NULL;
    expect_status(kf_call(g_kf, "POST", "/v1/responses",
                          "{\"model\":\"nope\",\"input\":\"x\"}", &j),
                  404, j);
    json_decref(j);
    expect_status(kf_call(g_kf, "POST", "/v1/responses",
                          "{\"model\":\"aios-tiny\",\"input\":\"x\",\"previous_response_id\":"
                          "\"resp_nope\"}",
                          &j),
                  404, j);
    assert_error_body(j, "resp_nope");
    json_decref(j);
    /* the kernel still serves */
    json_decref(create("{\"input\":\"still here\",\"max_output_tokens\":2}", 200));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_items_and_chain),
        cmocka_unit_test(test_tools_and_outputs),
        cmocka_unit_test(test_json_schema),
        cmocka_unit_test(test_stream_text),
        cmocka_unit_test(test_stream_tool_call),
        cmocka_unit_test(test_other_agent),
        cmocka_unit_test(test_delete),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_restart),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
