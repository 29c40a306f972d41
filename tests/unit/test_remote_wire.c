/* Unit: wire formats of the remote backends (remote_wire.c) and the text
 * snapshot (remote.c): request bodies for both dialects, answers, SSE fed
 * one byte at a time, error messages, backend table. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "llm/remote.h"
#include "llm/structured.h"
#include "util/err.h"

#include <stdlib.h>
#include <string.h>

static struct llm_req *mkreq(const char *const *pairs, size_t n)
{
    struct llm_req *r = calloc(1, sizeof *r);
    r->model = strdup("m");
    r->msgs = calloc(n, sizeof *r->msgs);
    for (size_t i = 0; i < n; i++) {
        r->msgs[i].role = strdup(pairs[2 * i]);
        r->msgs[i].content = strdup(pairs[2 * i + 1]);
    }
    r->n_msgs = n;
    r->p.temperature = 0.7f;
    r->p.top_p = 1.0f;
    return r;
}

static void test_openai_request(void **state)
{
    (void)state;
    const char *m[] = {"system", "be brief", "user", "hi"};
    struct llm_req *r = mkreq(m, 2);
    r->p.max_tokens = 12;
    r->p.has_seed = true;
    r->p.seed = 42;
    r->p.top_k = 5;
    r->p.stop[r->p.n_stop++] = strdup("\n\n");
    r->p.frequency_penalty = 0.5f;
    char err[256] = "";
    struct remote_wire_opts o = {.model = "up", .stream = true};
    json_t *b = remote_wire_request(REMOTE_DIALECT_OPENAI, r, &o, err, sizeof err);
    assert_non_null(b);
    assert_string_equal(json_string_value(json_object_get(b, "model")), "up");
    assert_int_equal(json_array_size(json_object_get(b, "messages")), 2);
    assert_int_equal(json_integer_value(json_object_get(b, "max_tokens")), 12);
    assert_int_equal(json_integer_value(json_object_get(b, "seed")), 42);
    assert_null(json_object_get(b, "top_k")); /* not every server accepts it */
    assert_null(json_object_get(b, "top_p")); /* 1 = off: not sent */
    assert_true(json_is_true(json_object_get(b, "stream")));
    assert_true(json_is_true(json_object_get(json_object_get(b, "stream_options"), "include_usage")));
    assert_string_equal(json_string_value(json_array_get(json_object_get(b, "stop"), 0)), "\n\n");
    assert_true(json_number_value(json_object_get(b, "frequency_penalty")) == 0.5);
    assert_null(json_object_get(b, "presence_penalty")); /* 0 = off: not sent */
    assert_null(json_object_get(b, "repeat_penalty"));   /* no repeat_key: not sent */
    json_decref(b);
    r->p.repeat_penalty = 1.3f;
    r->p.penalty_last_n = 32;
    b = remote_wire_request(REMOTE_DIALECT_OPENAI, r, &o, err, sizeof err);
    assert_null(json_object_get(b, "repeat_penalty")); /* hosted APIs have no such field */
    json_decref(b);
    o.repeat_key = remote_backend_find("llamacpp-server")->repeat_key;
    b = remote_wire_request(REMOTE_DIALECT_OPENAI, r, &o, err, sizeof err);
    assert_true(json_number_value(json_object_get(b, "repeat_penalty")) > 1.29);
    assert_int_equal(json_integer_value(json_object_get(b, "repeat_last_n")), 32);
    json_decref(b);
    o.repeat_key = remote_backend_find("vllm")->repeat_key;
    b = remote_wire_request(REMOTE_DIALECT_OPENAI, r, &o, err, sizeof err);
    assert_true(json_number_value(json_object_get(b, "repetition_penalty")) > 1.29);
    assert_null(json_object_get(b, "repeat_penalty"));
    assert_null(json_object_get(b, "repeat_last_n"));
    json_decref(b);
    assert_null(remote_backend_find("openai")->repeat_key);
    assert_null(remote_backend_find("anthropic")->repeat_key);
    o.repeat_key = NULL;

    o.stream = false;
    o.extra_sampling = true;
    o.max_completion_tokens = true;
    b = remote_wire_request(REMOTE_DIALECT_OPENAI, r, &o, err, sizeof err);
    assert_int_equal(json_integer_value(json_object_get(b, "top_k")), 5);
    assert_int_equal(json_integer_value(json_object_get(b, "max_completion_tokens")), 12);
    assert_null(json_object_get(b, "max_tokens"));
    assert_null(json_object_get(b, "stream"));
    json_decref(b);
    llm_req_free(r);
}

static void test_anthropic_request_roles(void **state)
{
    (void)state;
    const char *m[] = {"system", "rule one", "user", "a", "system", "rule two", "user", "b",
                       "assistant", "c", "tool", "42", "user", "d"};
    struct llm_req *r = mkreq(m, 7);
    r->p.temperature = 2.0f;
    char err[256] = "";
    struct remote_wire_opts o = {.model = "claude", .default_max_tokens = 1000};
    json_t *b = remote_wire_request(REMOTE_DIALECT_ANTHROPIC, r, &o, err, sizeof err);
    assert_non_null(b);
    assert_string_equal(json_string_value(json_object_get(b, "system")), "rule one\n\nrule two");
    json_t *msgs = json_object_get(b, "messages");
    assert_int_equal(json_array_size(msgs), 3); /* user(a+b), assistant(c), user(tool+d) */
    assert_string_equal(json_string_value(json_object_get(json_array_get(msgs, 0), "content")), "a\n\nb");
    assert_string_equal(json_string_value(json_object_get(json_array_get(msgs, 1), "role")), "assistant");
    assert_string_equal(json_string_value(json_object_get(json_array_get(msgs, 2), "content")),
                        "Tool result:\n42\n\nd");
    assert_int_equal(json_integer_value(json_object_get(b, "max_tokens")), 1000);
    assert_true(json_number_value(json_object_get(b, "temperature")) == 1.0);
    json_decref(b);
    llm_req_free(r);

    const char *only_sys[] = {"system", "x"};
    r = mkreq(only_sys, 1);
    assert_null(remote_wire_request(REMOTE_DIALECT_ANTHROPIC, r, &o, err, sizeof err));
    assert_non_null(strstr(err, "at least one user or assistant"));
    llm_req_free(r);
}

static void test_text_snapshot_resume(void **state)
{
    (void)state;
    const char *m[] = {"user", "count to five"};
    struct llm_req *r = mkreq(m, 1);
    r->p.max_tokens = 20;
    assert_int_equal(llm_text_snapshot_resume(r, "one, two, ", 10, 4), 0);
    assert_int_equal(r->n_msgs, 2);
    assert_string_equal(r->msgs[1].role, "assistant");
    assert_string_equal(r->msgs[1].content, "one, two, ");
    assert_int_equal(r->p.max_tokens, 16);
    /* a second switch extends the same prefix */
    assert_int_equal(llm_text_snapshot_resume(r, "three", 5, 1), 0);
    assert_int_equal(r->n_msgs, 2);
    assert_string_equal(r->msgs[1].content, "one, two, three");

    char err[256];
    struct remote_wire_opts o = {.model = "claude"};
    json_t *b = remote_wire_request(REMOTE_DIALECT_ANTHROPIC, r, &o, err, sizeof err);
    json_t *last = json_array_get(json_object_get(b, "messages"), 1);
    assert_string_equal(json_string_value(json_object_get(last, "role")), "assistant");
    assert_string_equal(json_string_value(json_object_get(last, "content")), "one, two, three");
    json_decref(b);
    o.continue_final = true; /* vLLM / SGLang */
    b = remote_wire_request(REMOTE_DIALECT_OPENAI, r, &o, err, sizeof err);
    assert_true(json_is_true(json_object_get(b, "continue_final_message")));
    assert_true(json_is_false(json_object_get(b, "add_generation_prompt")));
    json_decref(b);
    llm_req_free(r);
}

/* logprobs: asked for upstream, the answer's entries collected (whole and
 * from chunks, in order) */
static void test_logprobs_wire(void **state)
{
    (void)state;
    const char *m[] = {"user", "hi"};
    struct llm_req *r = mkreq(m, 1);
    r->p.logprobs = true;
    r->p.top_logprobs = 2;
    char err[256] = "";
    struct remote_wire_opts o = {.model = "up"};
    json_t *b = remote_wire_request(REMOTE_DIALECT_OPENAI, r, &o, err, sizeof err);
    assert_true(json_is_true(json_object_get(b, "logprobs")));
    assert_int_equal(json_integer_value(json_object_get(b, "top_logprobs")), 2);
    json_decref(b);
    r->p.top_logprobs = 0;
    b = remote_wire_request(REMOTE_DIALECT_OPENAI, r, &o, err, sizeof err);
    assert_true(json_is_true(json_object_get(b, "logprobs")));
    assert_null(json_object_get(b, "top_logprobs"));
    json_decref(b);
    r->p.logprobs = false;
    b = remote_wire_request(REMOTE_DIALECT_OPENAI, r, &o, err, sizeof err);
    assert_null(json_object_get(b, "logprobs"));
    json_decref(b);
    llm_req_free(r);

    struct remote_answer a = {0};
    const char *whole = "{\"choices\":[{\"message\":{\"content\":\"ab\"},\"logprobs\":{\"content\":["
                        "{\"token\":\"a\",\"logprob\":-0.5,\"bytes\":[97],\"top_logprobs\":[]},"
                        "{\"token\":\"b\",\"logprob\":-1.5,\"bytes\":[98],\"top_logprobs\":[]}]},"
                        "\"finish_reason\":\"stop\"}]}";
    assert_int_equal(remote_wire_parse_response(REMOTE_DIALECT_OPENAI, whole, strlen(whole), &a, err,
                                                sizeof err), 0);
    assert_int_equal(json_array_size(a.logprobs), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(a.logprobs, 1), "token")), "b");
    remote_answer_free(&a);
    /* none asked or none sent: NULL */
    const char *plain = "{\"choices\":[{\"message\":{\"content\":\"ab\"},\"logprobs\":null}]}";
    assert_int_equal(remote_wire_parse_response(REMOTE_DIALECT_OPENAI, plain, strlen(plain), &a, err,
                                                sizeof err), 0);
    assert_null(a.logprobs);
    remote_answer_free(&a);

    const char *ev[] = {
        "{\"choices\":[{\"delta\":{\"content\":\"x\"},\"logprobs\":{\"content\":[{\"token\":\"x\","
        "\"logprob\":-1,\"bytes\":[120],\"top_logprobs\":[]}]}}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"yz\"},\"logprobs\":{\"content\":[{\"token\":\"y\","
        "\"logprob\":-2,\"bytes\":[121],\"top_logprobs\":[]},{\"token\":\"z\",\"logprob\":-3,"
        "\"bytes\":[122],\"top_logprobs\":[]}]}}]}",
    };
    for (size_t i = 0; i < 2; i++) {
        size_t off, nd;
        assert_int_equal(remote_wire_stream_event(REMOTE_DIALECT_OPENAI, "", ev[i], strlen(ev[i]), &a,
                                                  &off, &nd), 0);
    }
    assert_string_equal(a.text, "xyz");
    assert_int_equal(json_array_size(a.logprobs), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(a.logprobs, 2), "token")), "z");
    remote_answer_free(&a);
}

static void test_parse_responses(void **state)
{
    (void)state;
    char err[256];
    struct remote_answer a = {0};
    const char *oa = "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"hey\"},"
                     "\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,"
                     "\"prompt_tokens_details\":{\"cached_tokens\":4}}}";
    assert_int_equal(remote_wire_parse_response(REMOTE_DIALECT_OPENAI, oa, strlen(oa), &a, err, sizeof err), 0);
    assert_string_equal(a.text, "hey");
    assert_string_equal(a.finish_reason, "length");
    assert_int_equal(a.n_prompt, 7);
    assert_int_equal(a.n_cached, 4);
    assert_int_equal(a.n_gen, 3);
    remote_answer_free(&a);

    const char *an = "{\"type\":\"message\",\"content\":[{\"type\":\"text\",\"text\":\"A\"},"
                     "{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\",\"input\":{}},{\"type\":\"text\",\"text\":\"B\"}],"
                     "\"stop_reason\":\"tool_use\",\"usage\":{\"input_tokens\":5,\"cache_read_input_tokens\":10,"
                     "\"output_tokens\":2}}";
    assert_int_equal(remote_wire_parse_response(REMOTE_DIALECT_ANTHROPIC, an, strlen(an), &a, err, sizeof err), 0);
    assert_string_equal(a.text, "AB");
    assert_string_equal(a.finish_reason, "tool_calls");
    assert_int_equal(a.n_prompt, 15);
    assert_int_equal(a.n_cached, 10);
    assert_int_equal(a.n_gen, 2);
    remote_answer_free(&a);

    assert_int_equal(remote_wire_parse_response(REMOTE_DIALECT_OPENAI, "<html>", 6, &a, err, sizeof err),
                     AIOS_EINVAL);
    assert_non_null(strstr(err, "not a JSON object"));
    assert_int_equal(remote_wire_parse_response(REMOTE_DIALECT_OPENAI, "{}", 2, &a, err, sizeof err),
                     AIOS_EINVAL);
    remote_answer_free(&a);
}

struct collect {
    enum remote_dialect d;
    struct remote_answer a;
    int n_events;
    char events[512];
};

static int on_event(void *ud, const char *event, const char *data, size_t n)
{
    struct collect *c = ud;
    c->n_events++;
    strncat(c->events, event[0] ? event : "-", sizeof c->events - strlen(c->events) - 2);
    strcat(c->events, ",");
    size_t off, nd;
    return remote_wire_stream_event(c->d, event, data, n, &c->a, &off, &nd) == AIOS_ENOMEM;
}

static void feed_bytewise(struct collect *c, const char *s)
{
    struct sse_parser p = {0};
    for (size_t i = 0; s[i]; i++) assert_int_equal(sse_feed(&p, s + i, 1, on_event, c), 0);
    sse_parser_free(&p);
}

static void test_sse_openai_bytewise(void **state)
{
    (void)state;
    struct collect c = {.d = REMOTE_DIALECT_OPENAI};
    feed_bytewise(&c, ": keep-alive comment\r\n\r\n"
                      "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\r\n\r\n"
                      "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n"
                      "data: {\"choices\":[{\"delta\":{\"content\":\"lo \\u00e9\"},\"finish_reason\":null}]}\n\n"
                      "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
                      "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n"
                      "data: [DONE]\n\n");
    assert_int_equal(c.n_events, 6);
    assert_string_equal(c.a.text, "Hello \xc3\xa9");
    assert_string_equal(c.a.finish_reason, "stop");
    assert_int_equal(c.a.n_prompt, 3);
    assert_int_equal(c.a.n_gen, 2);
    assert_true(c.a.done);
    remote_answer_free(&c.a);

    /* an error object in the stream (as aios and vLLM send it) */
    struct collect e = {.d = REMOTE_DIALECT_OPENAI};
    feed_bytewise(&e, "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n");
    assert_string_equal(e.a.error, "boom");
    remote_answer_free(&e.a);
}

static void test_sse_anthropic_multiline(void **state)
{
    (void)state;
    struct collect c = {.d = REMOTE_DIALECT_ANTHROPIC};
    /* a data field split over two data: lines is joined with \n (valid JSON) */
    feed_bytewise(&c, "event: message_start\n"
                      "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n"
                      "event: ping\ndata: {\"type\": \"ping\"}\n\n"
                      "event: content_block_delta\n"
                      "data: {\"type\":\"content_block_delta\",\n"
                      "data: \"delta\":{\"type\":\"text_delta\",\"text\":\"ok\"}}\n\n"
                      "event: message_delta\n"
                      "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"stop_sequence\"},\"usage\":{\"output_tokens\":4}}\n\n"
                      "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    assert_string_equal(c.events, "message_start,ping,content_block_delta,message_delta,message_stop,");
    assert_string_equal(c.a.text, "ok");
    assert_string_equal(c.a.finish_reason, "stop");
    assert_int_equal(c.a.n_prompt, 9);
    assert_int_equal(c.a.n_gen, 4);
    assert_true(c.a.done);
    remote_answer_free(&c.a);
}

static void test_error_messages_and_backends(void **state)
{
    (void)state;
    char m[128];
    const char *an = "{\"type\":\"error\",\"error\":{\"type\":\"not_found_error\",\"message\":\"model: x\"}}";
    remote_wire_error_message(an, strlen(an), m, sizeof m);
    assert_string_equal(m, "model: x");
    const char *oll = "{\"error\":\"model 'llama9' not found\"}";
    remote_wire_error_message(oll, strlen(oll), m, sizeof m);
    assert_string_equal(m, "model 'llama9' not found");
    remote_wire_error_message("<html>\nBad Gateway</html>", 25, m, sizeof m);
    assert_string_equal(m, "<html>");
    remote_wire_error_message(NULL, 0, m, sizeof m);
    assert_string_equal(m, "(empty body)");

    assert_true(llm_backend_is_remote("openai"));
    assert_true(llm_backend_is_remote("llama-server"));
    assert_true(llm_backend_is_remote("gemini"));
    assert_false(llm_backend_is_remote("llamacpp"));
    assert_int_equal(remote_backend_find("anthropic")->dialect, REMOTE_DIALECT_ANTHROPIC);
    assert_string_equal(remote_backend_find("groq")->key_env, "GROQ_API_KEY");
    assert_null(remote_backend_find("openai-compatible")->default_base);

    struct { const char *base; enum remote_dialect d; const char *want; } u[] = {
        {"http://10.0.0.5:8000", REMOTE_DIALECT_OPENAI, "http://10.0.0.5:8000/v1/chat/completions"},
        {"http://10.0.0.5:8000/", REMOTE_DIALECT_OPENAI, "http://10.0.0.5:8000/v1/chat/completions"},
        {"http://h:11434/v1", REMOTE_DIALECT_OPENAI, "http://h:11434/v1/chat/completions"},
        {"https://generativelanguage.googleapis.com/v1beta/openai/", REMOTE_DIALECT_OPENAI,
         "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions"},
        {"http://h/v1/chat/completions", REMOTE_DIALECT_OPENAI, "http://h/v1/chat/completions"},
        {"https://api.anthropic.com", REMOTE_DIALECT_ANTHROPIC, "https://api.anthropic.com/v1/messages"},
        {"https://proxy/anthropic/v1", REMOTE_DIALECT_ANTHROPIC, "https://proxy/anthropic/v1/messages"},
    };
    for (size_t i = 0; i < sizeof u / sizeof u[0]; i++) {
        char *got = remote_endpoint_url(u[i].base, u[i].d);
        assert_string_equal(got, u[i].want);
        free(got);
    }
}

/* Robustness: truncated and byte-flipped answers and streams, cut at every
 * position, never crash or leak (run under ASan by make asan-test) and
 * never produce text that was not in the input. */
/* A stream that broke while tool-call deltas were arriving, resumed from
 * its text snapshot: the next attempt's calls replace the broken ones
 * (OpenAI deltas by index would otherwise be appended to them, Anthropic's
 * blocks added beside them); the text is kept. */
static void feed(enum remote_dialect d, struct remote_answer *a, const char *const *ev, size_t n)
{
    size_t off, nd;
    for (size_t i = 0; i < n; i++)
        assert_int_equal(remote_wire_stream_event(d, "", ev[i], strlen(ev[i]), a, &off, &nd), 0);
}

static void test_resumed_stream_tool_calls(void **state)
{
    (void)state;
    struct remote_answer a = {0};
    const char *broken[] = {
        "{\"choices\":[{\"delta\":{\"content\":\"Let me see. \"}}]}",
        "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"function\":{\"name\":\"calc\",\"arguments\":\"\"}}]}}]}",
        "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"expr\"}}]}}]}",
    };
    const char *resumed[] = {
        "{\"choices\":[{\"delta\":{\"content\":\"Computing.\"}}]}",
        "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_b\",\"function\":{\"name\":\"calc\",\"arguments\":\"\"}}]}}]}",
        "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"expression\\\":\\\"6*7\\\"}\"}}]}}]}",
        "{\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}",
    };
    feed(REMOTE_DIALECT_OPENAI, &a, broken, 3);
    assert_int_equal(json_array_size(a.tool_calls), 1);
    remote_answer_keep_text(&a);
    assert_null(a.tool_calls);
    assert_null(a.finish_reason);
    assert_string_equal(a.text, "Let me see. ");
    feed(REMOTE_DIALECT_OPENAI, &a, resumed, 4);
    assert_string_equal(a.text, "Let me see. Computing.");
    assert_int_equal(json_array_size(a.tool_calls), 1);
    json_t *c = json_array_get(a.tool_calls, 0);
    assert_string_equal(json_string_value(json_object_get(c, "id")), "call_b");
    assert_string_equal(json_string_value(json_object_get(c, "name")), "calc"); /* not "calccalc" */
    assert_string_equal(json_string_value(json_object_get(c, "arguments")), "{\"expression\":\"6*7\"}");
    assert_string_equal(a.finish_reason, "tool_calls");
    remote_answer_free(&a);

    /* Anthropic: broken inside a tool_use block */
    memset(&a, 0, sizeof a);
    const char *abroken[] = {
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me see. \"}}",
        "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_a\",\"name\":\"calc\",\"input\":{}}}",
        "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"expr\"}}",
    };
    const char *aresumed[] = {
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Computing.\"}}",
        "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_b\",\"name\":\"calc\",\"input\":{}}}",
        "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"expression\\\": \\\"6*7\\\"}\"}}",
        "{\"type\":\"content_block_stop\",\"index\":1}",
        "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":9}}",
    };
    feed(REMOTE_DIALECT_ANTHROPIC, &a, abroken, 3);
    assert_true(a.in_tool_block);
    remote_answer_keep_text(&a);
    assert_false(a.in_tool_block);
    feed(REMOTE_DIALECT_ANTHROPIC, &a, aresumed, 5);
    assert_string_equal(a.text, "Let me see. Computing.");
    assert_int_equal(json_array_size(a.tool_calls), 1); /* not the broken one beside it */
    c = json_array_get(a.tool_calls, 0);
    assert_string_equal(json_string_value(json_object_get(c, "id")), "toolu_b");
    assert_string_equal(json_string_value(json_object_get(c, "arguments")), "{\"expression\": \"6*7\"}");
    assert_string_equal(a.finish_reason, "tool_calls");
    remote_answer_free(&a);
}

/* upstream tool calls: OpenAI deltas assembled by index, then mapped back
 * and validated by llm_structured_result */
static void test_upstream_tool_calls(void **state)
{
    (void)state;
    struct remote_answer a = {0};
    size_t off, nd;
    const char *ev[] = {
        "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"function\":{\"name\":\"a__b\",\"arguments\":\"\"}}]}}]}",
        "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"q\\\":\"}}]}}]}",
        "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"x\\\"}\"}}]}}]}",
        "{\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}",
    };
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(remote_wire_stream_event(REMOTE_DIALECT_OPENAI, "", ev[i], strlen(ev[i]), &a, &off, &nd), 0);
    assert_int_equal(json_array_size(a.tool_calls), 1);
    json_t *c = json_array_get(a.tool_calls, 0);
    assert_string_equal(json_string_value(json_object_get(c, "name")), "a__b");
    assert_string_equal(json_string_value(json_object_get(c, "arguments")), "{\"q\":\"x\"}");

    json_t *body = json_loads("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
                              "\"function\",\"function\":{\"name\":\"a/b\",\"parameters\":{\"type\":\"object\","
                              "\"properties\":{\"q\":{\"type\":\"string\"}},\"required\":[\"q\"]}}}],"
                              "\"tool_choice\":\"required\"}", 0, NULL);
    struct llm_structured *st = NULL;
    char err[400] = "";
    assert_int_equal(llm_structured_parse(body, &st, err, sizeof err), 0);
    assert_non_null(st);
    struct llm_res res = {.text = "", .len = 0, .finish_reason = "tool_calls", .upstream = true,
                          .tool_calls = a.tool_calls};
    struct llm_structured_result sr;
    assert_int_equal(llm_structured_result(st, &res, &sr, err, sizeof err), 0);
    assert_string_equal(sr.finish, "tool_calls");
    json_t *k = json_array_get(sr.calls, 0);
    assert_string_equal(json_string_value(json_object_get(k, "name")), "a/b");
    assert_string_equal(json_string_value(json_object_get(k, "id")), "call_1");
    assert_string_equal(json_string_value(json_object_get(json_object_get(k, "arguments"), "q")), "x");
    json_decref(sr.calls);

    /* arguments that break the schema: AIOS_EIO naming the tool and the problem */
    json_object_set_new(c, "arguments", json_string("{\"q\":1}"));
    assert_int_equal(llm_structured_result(st, &res, &sr, err, sizeof err), AIOS_EIO);
    assert_non_null(strstr(err, "a/b"));
    json_object_set_new(c, "arguments", json_string("{\"q\":"));
    assert_int_equal(llm_structured_result(st, &res, &sr, err, sizeof err), AIOS_EIO);
    assert_non_null(strstr(err, "not JSON"));
    /* a tool that was not offered */
    json_object_set_new(c, "name", json_string("rm_rf"));
    assert_int_equal(llm_structured_result(st, &res, &sr, err, sizeof err), AIOS_EIO);
    assert_non_null(strstr(err, "rm_rf"));
    /* required, and no call */
    res.tool_calls = NULL;
    res.finish_reason = "stop";
    assert_int_equal(llm_structured_result(st, &res, &sr, err, sizeof err), AIOS_EIO);
    llm_structured_free(st);
    json_decref(body);
    remote_answer_free(&a);
}

static void test_truncated_and_mangled_input(void **state)
{
    (void)state;
    const char *bodies[] = {
        "{\"choices\":[{\"message\":{\"content\":\"h\\u00e9y\"},\"finish_reason\":\"stop\"}],"
        "\"usage\":{\"prompt_tokens\":1}}",
        "{\"content\":[{\"type\":\"text\",\"text\":\"ok\"}],\"stop_reason\":\"end_turn\"}",
    };
    const char *streams[] = {
        "data: {\"choices\":[{\"delta\":{\"content\":\"ab\"}}]}\n\ndata: [DONE]\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"ab\"}}\n\n"
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    };
    unsigned seed = 12345;
    for (int d = 0; d < 2; d++) {
        size_t n = strlen(bodies[d]);
        char *buf = malloc(n + 1);
        for (size_t cut = 0; cut <= n; cut++) {
            for (int flip = 0; flip < 3; flip++) {
                memcpy(buf, bodies[d], n + 1);
                if (flip && cut < n) {
                    seed = seed * 1103515245u + 12345u;
                    buf[cut] = (char)(seed >> 16);
                }
                struct remote_answer a = {0};
                char err[256];
                size_t len = flip ? n : cut;
                int rc = remote_wire_parse_response((enum remote_dialect)d, buf, len, &a, err, sizeof err);
                if (rc == 0) assert_non_null(a.text);
                remote_answer_free(&a);
            }
        }
        free(buf);

        n = strlen(streams[d]);
        for (size_t cut = 0; cut <= n; cut++) {
            struct collect c = {.d = (enum remote_dialect)d};
            struct sse_parser p = {0};
            assert_int_equal(sse_feed(&p, streams[d], cut, on_event, &c), 0);
            assert_int_equal(sse_feed(&p, streams[d] + cut, n - cut, on_event, &c), 0);
            sse_parser_free(&p);
            assert_string_equal(c.a.text, "ab"); /* any split, same answer */
            assert_true(c.a.done);
            remote_answer_free(&c.a);
            /* only the first cut bytes: no crash, a prefix of the text at most */
            struct collect t = {.d = (enum remote_dialect)d};
            struct sse_parser q = {0};
            assert_int_equal(sse_feed(&q, streams[d], cut, on_event, &t), 0);
            sse_parser_free(&q);
            assert_true(t.a.len == 0 || !strcmp(t.a.text, "ab"));
            remote_answer_free(&t.a);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openai_request),
        cmocka_unit_test(test_anthropic_request_roles),
        cmocka_unit_test(test_text_snapshot_resume),
        cmocka_unit_test(test_resumed_stream_tool_calls),
        cmocka_unit_test(test_parse_responses),
        cmocka_unit_test(test_logprobs_wire),
        cmocka_unit_test(test_sse_openai_bytewise),
        cmocka_unit_test(test_sse_anthropic_multiline),
        cmocka_unit_test(test_error_messages_and_backends),
        cmocka_unit_test(test_truncated_and_mangled_input),
        cmocka_unit_test(test_upstream_tool_calls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
