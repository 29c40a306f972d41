/* Integration: the OpenAI-compatible remote backend against real upstream
 * servers. Two upstream kernels (real `aios serve` on the built-in tiny
 * model, loopback) and a kernel under test whose models are all remote:
 *
 *   remote-tiny  openai-compatible -> upstream A, upstream_model aios-tiny
 *   aios-tiny    vllm              -> upstream A (the name is the upstream id)
 *   ghost        openai-compatible -> upstream A, which has no such model
 *   down         openai-compatible -> a closed port
 *   pair         two replicas: the closed port and upstream A
 *   duo          two replicas: upstream A and upstream B
 *
 * Checked: plain and streamed chat with answers equal to the upstream's own
 * for the same seed, usage passed through, llama.cpp's repeat penalty
 * passed through (under both field names), the AIOS /query route, a 404
 * for an unknown upstream model, 503 with a clear message when the upstream
 * is down (plain and streamed), failover with the dead replica marked down
 * in /status, and least-outstanding balancing over two live replicas
 * visible in /status counters.
 *
 * Structured output through the remote (the upstream aios constrains its
 * tiny model with a grammar, so its answers are valid): tools with
 * tool_choice "required" and a named tool (with tool-call history) come back
 * as OpenAI tool_calls whose arguments validate against the tool's schema,
 * with "author/name" restored from the "author__name" sent upstream, plain
 * and streamed; response_format json_schema comes back as JSON that
 * validates. logprobs / top_logprobs pass through and come back as the
 * upstream's entries, whole and streamed. */
#include "harness.h"
#include "llm/schema.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct kernel_fixture *g_up_a, *g_up_b, *g_k;
static char g_cfg[64];

/* a loopback port nobody listens on: bound but not listening, and kept
 * bound for the whole test so no other process on this machine can take it
 * (connections to it are refused) */
static int g_dead_fd = -1;
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t l = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    g_dead_fd = fd;
    return ntohs(a.sin_port);
}

static int group_setup(void **state)
{
    (void)state;
    g_up_a = kf_start(NULL);
    g_up_b = kf_start(NULL);
    int dead = closed_port();
    snprintf(g_cfg, sizeof g_cfg, "/tmp/aios-it-remote-XXXXXX");
    int fd = mkstemp(g_cfg);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    const char *a = g_up_a->child.base, *b = g_up_b->child.base;
    const char *ta = g_up_a->child.token, *tb = g_up_b->child.token;
    fprintf(f,
            "llms:\n"
            "  remote:\n"
            "    retry_backoff_ms: 20\n"
            "    replica_down_s: 60\n" /* long enough that a slow machine never sees the dead replica retried */
            "  models:\n"
            "    - {name: remote-tiny, backend: openai-compatible, hostname: \"%s\", upstream_model: aios-tiny, api_key: %s}\n"
            "    - {name: aios-tiny, backend: vllm, hostname: \"%s/v1\", api_key: %s}\n"
            "    - {name: ghost, backend: openai-compatible, hostname: \"%s\", api_key: %s}\n"
            "    - {name: down, backend: openai-compatible, hostname: \"http://127.0.0.1:%d\"}\n"
            "    - {name: pair, backend: openai-compatible, hostname: \"http://127.0.0.1:%d\", upstream_model: aios-tiny}\n"
            "    - {name: pair, backend: openai-compatible, hostname: \"%s\", upstream_model: aios-tiny, api_key: %s}\n"
            "    - {name: duo, backend: openai-compatible, hostname: \"%s\", upstream_model: aios-tiny, api_key: %s}\n"
            "    - {name: duo, backend: openai-compatible, hostname: \"%s/v1/chat/completions\", upstream_model: aios-tiny, api_key: %s}\n",
            /* the upstreams are aios kernels: their admin tokens are the keys */
            a, ta, a, ta, a, ta, dead, dead, a, ta, a, ta, b, tb);
    fclose(f);
    const char *extra[] = {"--config", g_cfg, NULL};
    g_k = kf_start(extra);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    kf_stop(g_k);
    kf_stop(g_up_b);
    kf_stop(g_up_a);
    unlink(g_cfg);
    if (g_dead_fd >= 0) close(g_dead_fd);
    return 0;
}

static char *chat_body(const char *model, int seed, const char *extra)
{
    char *s = NULL;
    int n = asprintf(&s,
                     "{\"model\":\"%s\",\"seed\":%d,\"max_tokens\":6,\"temperature\":0.9,"
                     "\"messages\":[{\"role\":\"system\",\"content\":\"You are terse.\"},"
                     "{\"role\":\"user\",\"content\":\"Name three colours.\"}]%s%s}",
                     model, seed, extra ? "," : "", extra ? extra : "");
    assert_true(n > 0);
    return s;
}

/* the model's entry in /status */
static json_t *status_model(const char *name)
{
    json_t *j = NULL;
    assert_int_equal(kf_call(g_k, "GET", "/status", NULL, &j), 200);
    json_t *models = json_object_get(j, "models"), *m, *found = NULL;
    size_t i;
    json_array_foreach(models, i, m) {
        if (!strcmp(json_string_value(json_object_get(m, "name")), name)) found = json_incref(m);
    }
    json_decref(j);
    assert_non_null(found);
    return found;
}

static json_int_t rep_int(json_t *m, size_t i, const char *key)
{
    json_t *r = json_array_get(json_object_get(m, "replicas"), i);
    assert_non_null(r);
    return json_integer_value(json_object_get(r, key));
}

static bool rep_up(json_t *m, size_t i)
{
    return json_is_true(json_object_get(json_array_get(json_object_get(m, "replicas"), i), "up"));
}

static void test_plain_chat_matches_upstream(void **state)
{
    (void)state;
    char *direct = chat_body("aios-tiny", 7, NULL), *via = chat_body("remote-tiny", 7, NULL),
         *same = chat_body("aios-tiny", 7, NULL);
    json_t *u = NULL, *r = NULL, *s = NULL;
    assert_int_equal(kf_call(g_up_a, "POST", "/v1/chat/completions", direct, &u), 200);
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions", via, &r), 200);
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions", same, &s), 200);
    /* same seed, same tokens: the seed passes through */
    assert_non_null(chat_content(r));
    assert_true(strlen(chat_content(u)) > 0);
    assert_string_equal(chat_content(r), chat_content(u));
    assert_string_equal(chat_content(s), chat_content(u));
    /* the answer names the model the client asked for */
    assert_string_equal(json_string_value(json_object_get(r, "model")), "remote-tiny");
    json_t *c0 = json_array_get(json_object_get(r, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(c0, "finish_reason")), "length");
    /* usage is the upstream's */
    json_t *uu = json_object_get(u, "usage"), *ru = json_object_get(r, "usage");
    assert_int_equal(json_integer_value(json_object_get(ru, "prompt_tokens")),
                     json_integer_value(json_object_get(uu, "prompt_tokens")));
    assert_int_equal(json_integer_value(json_object_get(ru, "completion_tokens")), 6);
    json_decref(u);
    json_decref(r);
    json_decref(s);

    /* a different seed gives a different answer through the remote too */
    char *other = chat_body("remote-tiny", 8, NULL);
    json_t *o = NULL;
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions", other, &o), 200);
    char *again = chat_body("remote-tiny", 7, NULL);
    json_t *g = NULL;
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions", again, &g), 200);
    assert_string_not_equal(chat_content(o), chat_content(g));
    json_decref(o);
    json_decref(g);
    free(other);
    free(again);
    free(direct);
    free(via);
    free(same);
}

/* llama.cpp's repeat penalty reaches the upstream: openai-compatible sends
 * repeat_penalty (+ repeat_last_n), vllm sends repetition_penalty (aios
 * accepts both). Greedy answers: the penalty changes the upstream's own
 * answer, and both remotes give exactly the penalised one. */
static char *greedy_body(const char *model, const char *extra)
{
    char *s = NULL;
    int n = asprintf(&s,
                     "{\"model\":\"%s\",\"max_tokens\":24,\"temperature\":0,"
                     "\"messages\":[{\"role\":\"user\",\"content\":\"Say it again and again.\"}]%s%s}",
                     model, extra ? "," : "", extra ? extra : "");
    assert_true(n > 0);
    return s;
}

static void test_repeat_penalty_passes_through(void **state)
{
    (void)state;
    const char *pen = "\"repeat_penalty\":5.0,\"repeat_last_n\":64";
    char *b_plain = greedy_body("aios-tiny", NULL), *b_pen = greedy_body("aios-tiny", pen);
    char *b_vllm_name = greedy_body("aios-tiny", "\"repetition_penalty\":5.0");
    char *b_via = greedy_body("remote-tiny", pen), *b_vllm = greedy_body("aios-tiny", pen);
    json_t *plain = NULL, *penal = NULL, *alias = NULL, *via = NULL, *vllm = NULL;
    assert_int_equal(kf_call(g_up_a, "POST", "/v1/chat/completions", b_plain, &plain), 200);
    assert_int_equal(kf_call(g_up_a, "POST", "/v1/chat/completions", b_pen, &penal), 200);
    assert_int_equal(kf_call(g_up_a, "POST", "/v1/chat/completions", b_vllm_name, &alias), 200);
    /* the penalty has an effect on the upstream's own answer */
    assert_string_not_equal(chat_content(plain), chat_content(penal));
    assert_string_equal(chat_content(alias), chat_content(penal));
    /* through the remotes: exactly the penalised answer */
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions", b_via, &via), 200);
    assert_string_equal(chat_content(via), chat_content(penal));
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions", b_vllm, &vllm), 200);
    assert_string_equal(chat_content(vllm), chat_content(penal));
    json_decref(plain);
    json_decref(penal);
    json_decref(alias);
    json_decref(via);
    json_decref(vllm);
    free(b_plain);
    free(b_pen);
    free(b_vllm_name);
    free(b_via);
    free(b_vllm);
}

static void test_streamed_chat(void **state)
{
    (void)state;
    char *plain = chat_body("remote-tiny", 11, NULL);
    char *streamed = chat_body("remote-tiny", 11,
                               "\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    json_t *p = NULL;
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions", plain, &p), 200);
    struct sse_result s;
    assert_int_equal(kf_stream(g_k, streamed, &s, 0), 0);
    assert_int_equal(s.status, 200);
    assert_true(s.done);
    assert_false(s.bad_event);
    assert_null(s.error);
    assert_true(s.first_has_role);
    assert_true(s.n_content >= 2); /* streamed in pieces, not in one go */
    assert_string_equal(s.text, chat_content(p));
    assert_string_equal(s.finish, "length");
    assert_non_null(s.usage);
    assert_int_equal(json_integer_value(json_object_get(s.usage, "completion_tokens")), 6);
    assert_true(json_integer_value(json_object_get(s.usage, "prompt_tokens")) > 0);
    sse_result_free(&s);
    json_decref(p);
    free(plain);
    free(streamed);
}

static void assert_same_entries(json_t *a, json_t *b)
{
    assert_int_equal(json_array_size(a), json_array_size(b));
    size_t i;
    json_t *x;
    json_array_foreach(a, i, x) {
        json_t *y = json_array_get(b, i);
        assert_string_equal(json_string_value(json_object_get(x, "token")),
                            json_string_value(json_object_get(y, "token")));
        assert_true(json_equal(json_object_get(x, "bytes"), json_object_get(y, "bytes")));
        double d = json_number_value(json_object_get(x, "logprob")) -
                   json_number_value(json_object_get(y, "logprob"));
        assert_true(d < 1e-9 && d > -1e-9);
        assert_int_equal(json_array_size(json_object_get(x, "top_logprobs")),
                         json_array_size(json_object_get(y, "top_logprobs")));
    }
}

/* logprobs / top_logprobs go upstream and come back in OpenAI's shape,
 * whole and streamed: the upstream's own entries for the same seed */
static void test_logprobs_pass_through(void **state)
{
    (void)state;
    const char *lp = "\"logprobs\":true,\"top_logprobs\":3";
    char *direct = chat_body("aios-tiny", 9, lp), *via = chat_body("remote-tiny", 9, lp);
    json_t *u = NULL, *r = NULL;
    assert_int_equal(kf_call(g_up_a, "POST", "/v1/chat/completions", direct, &u), 200);
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions", via, &r), 200);
    assert_int_equal(json_array_size(chat_logprobs(u)), 6);
    assert_same_entries(chat_logprobs(r), chat_logprobs(u));
    assert_int_equal(json_array_size(json_object_get(json_array_get(chat_logprobs(r), 0),
                                                     "top_logprobs")), 3);
    char *streamed = chat_body("remote-tiny", 9, "\"logprobs\":true,\"top_logprobs\":3,"
                                                 "\"stream\":true");
    struct sse_result ev;
    assert_int_equal(kf_stream(g_k, streamed, &ev, 0), 0);
    assert_int_equal(ev.status, 200);
    json_t *entries = json_array(), *chunk;
    size_t i;
    json_array_foreach(ev.events, i, chunk) {
        json_t *c = chat_logprobs(chunk);
        if (json_is_array(c)) json_array_extend(entries, c);
    }
    assert_same_entries(entries, chat_logprobs(u));
    json_decref(entries);
    sse_result_free(&ev);
    free(streamed);
    json_decref(u);
    json_decref(r);
    free(direct);
    free(via);
}

static void test_aios_query_routes_by_llms(void **state)
{
    (void)state;
    const char *q = "{\"agent_name\":\"demo/agent\",\"query_type\":\"llm\",\"query_data\":{"
                    "\"llms\":[{\"name\":\"remote-tiny\",\"backend\":\"openai\"}],"
                    "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                    "\"max_new_tokens\":6,\"seed\":3}}";
    json_t *j = NULL;
    assert_int_equal(kf_call(g_k, "POST", "/query", q, &j), 200);
    json_t *resp = json_object_get(j, "response");
    assert_true(json_is_string(json_object_get(resp, "response_message")));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(resp, "usage"), "completion_tokens")), 6);
    json_decref(j);
}

static void test_unknown_upstream_model_is_404(void **state)
{
    (void)state;
    char *b = chat_body("ghost", 1, NULL);
    json_t *j = NULL;
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions", b, &j), 404);
    assert_error_body(j, "no model 'ghost'");
    json_decref(j);
    free(b);
    /* the replica answered, so it is not marked down */
    json_t *m = status_model("ghost");
    assert_true(rep_up(m, 0));
    json_decref(m);
}

static void test_upstream_down_is_503(void **state)
{
    (void)state;
    char *b = chat_body("down", 1, NULL);
    json_t *j = NULL;
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions", b, &j), 503);
    assert_error_body(j, "cannot reach upstream http://127.0.0.1:");
    assert_error_body(j, "gave up after 3 attempts");
    json_decref(j);
    free(b);

    json_t *m = status_model("down");
    assert_false(rep_up(m, 0));
    assert_int_equal(rep_int(m, 0, "failed"), 3); /* max_retries 2: three tries */
    assert_int_equal(rep_int(m, 0, "outstanding"), 0);
    json_decref(m);

    /* streamed: the error arrives as an SSE error event */
    char *sb = chat_body("down", 1, "\"stream\":true");
    struct sse_result s;
    assert_int_equal(kf_stream(g_k, sb, &s, 0), 0);
    assert_non_null(s.error);
    assert_non_null(strstr(json_string_value(json_object_get(s.error, "message")), "cannot reach"));
    assert_true(s.done);
    sse_result_free(&s);
    free(sb);

    /* the kernel still serves */
    b = chat_body("remote-tiny", 1, NULL);
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions", b, &j), 200);
    json_decref(j);
    free(b);
}

static void test_failover_to_live_replica(void **state)
{
    (void)state;
    for (int i = 0; i < 4; i++) {
        char *b = chat_body("pair", 20 + i, NULL);
        json_t *j = NULL;
        assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions", b, &j), 200);
        assert_non_null(chat_content(j));
        json_decref(j);
        free(b);
    }
    json_t *m = status_model("pair");
    assert_false(rep_up(m, 0)); /* the closed port is out */
    assert_int_equal(rep_int(m, 0, "failed"), 1); /* tried once, then left alone */
    assert_int_equal(rep_int(m, 0, "ok"), 0);
    assert_true(rep_up(m, 1));
    assert_int_equal(rep_int(m, 1, "ok"), 4);
    json_t *calls = json_object_get(m, "calls");
    assert_int_equal(json_integer_value(json_object_get(calls, "ok")), 4);
    assert_int_equal(json_integer_value(json_object_get(calls, "failed")), 0);
    json_t *le = json_object_get(json_array_get(json_object_get(m, "replicas"), 0), "last_error");
    assert_non_null(strstr(json_string_value(le), "cannot reach"));
    json_decref(m);
}

struct worker {
    struct kernel_fixture *kf;
    char *body;
    long status;
    char *content;
};

/* ---- structured output through the remote ---- */

#define R_WEATHER                                                                           \
    "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":8},\"days\":{\"type\":"  \
    "\"integer\",\"minimum\":1,\"maximum\":7}},\"required\":[\"city\",\"days\"]}"
#define R_SEARCH                                                                            \
    "{\"type\":\"object\",\"properties\":{\"query\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":8}},"  \
    "\"required\":[\"query\"],\"additionalProperties\":false}"
#define R_TOOLS                                                                              \
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":" \
    R_WEATHER "}},{\"type\":\"function\",\"function\":{\"name\":\"demo_author/web_search\","   \
    "\"parameters\":" R_SEARCH "}}]"

static void assert_valid_args(const char *schema_text, const char *args)
{
    json_t *schema = json_loads(schema_text, 0, NULL), *a = json_loads(args, 0, NULL);
    assert_non_null(schema);
    assert_true(json_is_object(a));
    char err[300] = "";
    if (schema_validate(schema, a, err, sizeof err)) fail_msg("arguments %s: %s", args, err);
    json_decref(schema);
    json_decref(a);
}

/* every call names an offered tool (client spelling) with valid arguments */
static size_t check_remote_calls(json_t *calls, const char *only)
{
    assert_true(json_is_array(calls));
    assert_true(json_array_size(calls) >= 1);
    size_t i;
    json_t *c;
    json_array_foreach(calls, i, c) {
        assert_true(json_string_length(json_object_get(c, "id")) > 0);
        json_t *fn = json_object_get(c, "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        const char *args = json_string_value(json_object_get(fn, "arguments"));
        assert_non_null(name);
        assert_non_null(args);
        if (only) assert_string_equal(name, only);
        if (!strcmp(name, "get_weather")) assert_valid_args(R_WEATHER, args);
        else if (!strcmp(name, "demo_author/web_search")) assert_valid_args(R_SEARCH, args);
        else fail_msg("unexpected tool name '%s' (author__name not mapped back?)", name);
    }
    return json_array_size(calls);
}

static void test_remote_tools_required(void **state)
{
    (void)state;
    for (int seed = 1; seed <= 1; seed++) {
        char *b = NULL;
        assert_true(asprintf(&b, "{\"model\":\"remote-tiny\",\"seed\":%d,\"max_tokens\":150,"
                                 "\"parallel_tool_calls\":false,"
                                 "\"messages\":[{\"role\":\"user\",\"content\":\"Weather in Paris?\"}],"
                                 R_TOOLS ",\"tool_choice\":\"required\"}", seed) > 0);
        json_t *j = NULL;
        assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions", b, &j), 200);
        json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
        json_t *m = json_object_get(c0, "message");
        const char *fin = json_string_value(json_object_get(c0, "finish_reason"));
        if (!strcmp(fin, "length")) { /* the tiny model ran out of tokens: text, no calls */
            assert_null(json_object_get(m, "tool_calls"));
        } else {
            assert_string_equal(fin, "tool_calls");
            check_remote_calls(json_object_get(m, "tool_calls"), NULL);
        }
        json_decref(j);
        free(b);
    }
}

static void test_remote_named_tool_with_history(void **state)
{
    (void)state;
    const char *b =
        "{\"model\":\"remote-tiny\",\"seed\":5,\"max_tokens\":150,\"parallel_tool_calls\":false,"
        "\"messages\":[{\"role\":\"user\",\"content\":\"Search for cats\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_prev1\",\"type\":"
        "\"function\",\"function\":{\"name\":\"demo_author/web_search\",\"arguments\":"
        "\"{\\\"query\\\":\\\"cats\\\"}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_prev1\",\"content\":\"cats are mammals\"},"
        "{\"role\":\"user\",\"content\":\"Now search for dogs\"}]," R_TOOLS ","
        "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"demo_author/web_search\"}}}";
    json_t *j = NULL;
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions", b, &j), 200);
    json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(c0, "finish_reason")), "tool_calls");
    json_t *m = json_object_get(c0, "message");
    assert_true(json_is_null(json_object_get(m, "content")));
    assert_int_equal(check_remote_calls(json_object_get(m, "tool_calls"), "demo_author/web_search"), 1);
    json_decref(j);

    /* streamed: the calls arrive at the end, same shape */
    const char *sb =
        "{\"model\":\"remote-tiny\",\"seed\":5,\"max_tokens\":150,\"stream\":true,\"parallel_tool_calls\":false,"
        "\"messages\":[{\"role\":\"user\",\"content\":\"Weather?\"}]," R_TOOLS ","
        "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}}";
    struct sse_result s;
    assert_int_equal(kf_stream(g_k, sb, &s, 0), 0);
    assert_int_equal(s.status, 200);
    assert_true(s.done);
    assert_null(s.error);
    assert_string_equal(s.finish, "tool_calls");
    sse_result_free(&s);
}

static void test_remote_json_schema(void **state)
{
    (void)state;
    const char *schema = "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":8},"
                         "\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":120}},"
                         "\"required\":[\"name\",\"age\"],\"additionalProperties\":false}";
    char *b = NULL;
    assert_true(asprintf(&b, "{\"model\":\"remote-tiny\",\"seed\":3,\"max_tokens\":150,"
                             "\"messages\":[{\"role\":\"user\",\"content\":\"A person as JSON\"}],"
                             "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":"
                             "{\"name\":\"person\",\"strict\":true,\"schema\":%s}}}", schema) > 0);
    json_t *j = NULL;
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions", b, &j), 200);
    json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
    const char *fin = json_string_value(json_object_get(c0, "finish_reason"));
    if (strcmp(fin, "length")) {
        assert_string_equal(fin, "stop");
        assert_valid_args(schema, chat_content(j));
    }
    json_decref(j);
    free(b);
    /* json_object too */
    json_t *o = NULL;
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions",
                             "{\"model\":\"remote-tiny\",\"seed\":4,\"max_tokens\":40,"
                             "\"messages\":[{\"role\":\"user\",\"content\":\"JSON please\"}],"
                             "\"response_format\":{\"type\":\"json_object\"}}", &o), 200);
    c0 = json_array_get(json_object_get(o, "choices"), 0);
    if (strcmp(json_string_value(json_object_get(c0, "finish_reason")), "length")) {
        json_t *v = json_loads(chat_content(o), 0, NULL);
        assert_true(json_is_object(v));
        json_decref(v);
    }
    json_decref(o);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char url[256];
    snprintf(url, sizeof url, "%s/v1/chat/completions", w->kf->child.base);
    struct hc_resp r;
    if (hc_call("POST", url, w->body, strlen(w->body), &r, 120) == 0) {
        w->status = r.status;
        json_t *j = json_loadb(r.body, r.len, 0, NULL);
        const char *c = chat_content(j);
        if (c) w->content = strdup(c);
        json_decref(j);
    }
    hc_resp_free(&r);
    return NULL;
}

static void test_least_outstanding_balancing(void **state)
{
    (void)state;
    enum { N = 6 };
    struct worker w[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        w[i] = (struct worker){.kf = g_k, .body = chat_body("duo", 5, NULL)};
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        assert_int_equal(w[i].status, 200);
        assert_non_null(w[i].content);
        /* both upstreams run the same model: the seed decides the text,
         * whichever replica answered */
        assert_string_equal(w[i].content, w[0].content);
    }
    for (int i = 0; i < N; i++) {
        free(w[i].content);
        free(w[i].body);
    }
    json_t *m = status_model("duo");
    json_int_t s0 = rep_int(m, 0, "sent"), s1 = rep_int(m, 1, "sent");
    print_message("duo: replica 0 sent %lld (max outstanding %lld), replica 1 sent %lld (max "
                  "outstanding %lld)\n", (long long)s0, (long long)rep_int(m, 0, "max_outstanding"),
                  (long long)s1, (long long)rep_int(m, 1, "max_outstanding"));
    assert_int_equal(s0 + s1, N);
    assert_int_equal(rep_int(m, 0, "ok") + rep_int(m, 1, "ok"), N);
    /* each upstream runs one call at a time, so calls pile up in flight and
     * the least-loaded replica takes the next: neither gets most of them */
    assert_true(s0 >= N / 3 && s1 >= N / 3);
    assert_true(rep_int(m, 0, "max_outstanding") + rep_int(m, 1, "max_outstanding") >= 3);
    assert_int_equal(rep_int(m, 0, "outstanding"), 0);
    assert_int_equal(rep_int(m, 1, "outstanding"), 0);
    json_decref(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_chat_matches_upstream),
        cmocka_unit_test(test_streamed_chat),
        cmocka_unit_test(test_logprobs_pass_through),
        cmocka_unit_test(test_repeat_penalty_passes_through),
        cmocka_unit_test(test_aios_query_routes_by_llms),
        cmocka_unit_test(test_remote_tools_required),
        cmocka_unit_test(test_remote_named_tool_with_history),
        cmocka_unit_test(test_remote_json_schema),
        cmocka_unit_test(test_unknown_upstream_model_is_404),
        cmocka_unit_test(test_upstream_down_is_503),
        cmocka_unit_test(test_failover_to_live_replica),
        cmocka_unit_test(test_least_outstanding_balancing),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
