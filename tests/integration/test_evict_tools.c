/* Integration: which retained conversation the engine gives up when its KV
 * cache is full, through the real daemon (tool manager, scheduler, engine
 * on the tiny test model with a 256-cell cache).
 *
 * bob answers, then calls a tool that hangs (a shell that sleeps a day,
 * under the sandbox, one hour's timeout), so his agent is waiting on a
 * tool; alice
 * answers after him and is idle. carol's call needs the cells of one of
 * the two. Least recently used would give up bob's (the older); the
 * engine gives up alice's, the idle agent's: bob's next turn reuses his
 * cells (cached_tokens), alice's recomputes all of hers. No timing: the
 * tool never returns before the kernel stops and kills it. */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "llm/testmodel.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_dir[256], g_model[300];

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/aios-evict-XXXXXX");
    if (!mkdtemp(g_dir)) return -1;
    snprintf(g_model, sizeof g_model, "%s/tiny.gguf", g_dir);
    char err[256], yaml[2048];
    if (testmodel_create(g_model, TESTMODEL_SHAPE_TINY, 0, 1, err, sizeof err)) {
        fprintf(stderr, "testmodel: %s\n", err);
        return -1;
    }
    snprintf(yaml, sizeof yaml,
             "llms:\n"
             "  models:\n"
             "    - name: aios-tiny\n"
             "      backend: llamacpp\n"
             "      path: %s\n"
             "      n_threads: 1\n"
             "      n_ctx: 256\n"
             "      kv_size: 256\n"
             "      n_parallel: 4\n"
             "      prefix_share_min: 1000000\n"
             "tools:\n"
             "  external:\n"
             "    - {name: test/hang, command: [/bin/sh, -c, \"sleep 86400\"], timeout_ms: 3600000}\n",
             g_model);
    g_kf = kf_start_config(yaml);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (g_kf) kf_stop(g_kf);
    unlink(g_model);
    rmdir(g_dir);
    return 0;
}

struct turn {
    long prompt, completion, cached;
    char *text;
};

/* one greedy chat call of agent: user (and, with prev, prev's answer and
 * a second user message); max_tokens generated exactly */
static void chat(const char *agent, const char *user, const struct turn *prev, int max_tokens,
                 struct turn *out)
{
    json_t *msgs = json_array();
    json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", user));
    if (prev) {
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "assistant", "content", prev->text));
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", "go on"));
    }
    json_t *body = json_pack("{s:s,s:s,s:o,s:i,s:f}", "model", "aios-tiny", "user", agent,
                             "messages", msgs, "max_tokens", max_tokens, "temperature", 0.0);
    char *txt = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    json_t *j = NULL;
    long st = kf_call(g_kf, "POST", "/v1/chat/completions", txt, &j);
    free(txt);
    if (st != 200) {
        kf_print_log(g_kf);
        fail_msg("chat of %s: %ld", agent, st);
    }
    json_t *u = json_object_get(j, "usage");
    out->prompt = (long)json_integer_value(json_object_get(u, "prompt_tokens"));
    out->completion = (long)json_integer_value(json_object_get(u, "completion_tokens"));
    out->cached = (long)json_integer_value(
        json_object_get(json_object_get(u, "prompt_tokens_details"), "cached_tokens"));
    const char *c = json_string_value(json_object_get(
        json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message"), "content"));
    out->text = strdup(c ? c : "");
    json_decref(j);
    if (out->completion != max_tokens)
        fail_msg("%s's answer ended after %ld of %d tokens", agent, out->completion, max_tokens);
}

static json_t *engine_status(void)
{
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "GET", "/status", NULL, &j), 200);
    json_t *eng = json_incref(json_object_get(json_array_get(json_object_get(j, "models"), 0), "engine"));
    json_decref(j);
    assert_non_null(eng);
    return eng;
}

static long eng_int(json_t *eng, const char *key)
{
    json_t *v = json_object_get(eng, key);
    if (!json_is_integer(v)) fail_msg("engine status has no %s", key);
    return (long)json_integer_value(v);
}

static void *bob_tool(void *arg)
{
    (void)arg;
    json_t *j = NULL;
    /* answered only when the kernel stops and kills the tool */
    kf_call(g_kf, "POST", "/query",
            "{\"agent_name\":\"bob\",\"query_type\":\"tool\",\"query_data\":{\"tool_calls\":"
            "[{\"name\":\"test/hang\",\"parameters\":{}}]}}",
            &j);
    json_decref(j);
    return NULL;
}

static void test_idle_agent_evicted_before_tool_waiter(void **state)
{
    (void)state;
    const int g_ab = 40;
    struct turn b1, a1, c1, b2, a2;
    chat("bob", "first question from bob", NULL, g_ab, &b1);
    chat("alice", "first question from alice", NULL, g_ab, &a1);
    json_t *eng = engine_status();
    const long kv = eng_int(eng, "kv_size");
    assert_int_equal(eng_int(eng, "retained"), 2);
    assert_int_equal(eng_int(eng, "evictions"), 0);
    json_decref(eng);
    /* bob's tool call starts and hangs */
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, bob_tool, NULL), 0);
    bool running = false;
    for (int i = 0; i < 3000 && !running; i++) {
        json_t *s = NULL;
        assert_int_equal(kf_call(g_kf, "GET", "/agents/bob/stats", NULL, &s), 200);
        running = json_integer_value(json_object_get(s, "running")) == 1;
        json_decref(s);
        if (!running) usleep(10000);
    }
    assert_true(running);
    /* carol: more cells than are free beside both, no more than beside
     * either (her prompt is about alice's; 8 cells of margin) */
    const long cells_a = a1.prompt + g_ab - 1, cells_b = b1.prompt + g_ab - 1;
    const long max_ab = cells_a > cells_b ? cells_a : cells_b;
    const int g_c = (int)(kv - max_ab - 2 - a1.prompt - 8);
    print_message("kv %ld, alice %ld cells, bob %ld, carol asks for %d tokens\n", kv, cells_a,
                  cells_b, g_c);
    assert_true(g_c > 8);
    chat("carol", "first question from carl", NULL, g_c, &c1);
    assert_true(c1.prompt + g_c - 1 > kv - cells_a - cells_b);
    eng = engine_status();
    assert_int_equal(eng_int(eng, "evictions"), 1);
    assert_int_equal(eng_int(eng, "preemptions"), 0);
    json_decref(eng);

    /* bob, still waiting on his tool, kept his cells; alice's went */
    chat("bob", "first question from bob", &b1, 4, &b2);
    print_message("bob's second turn: prompt %ld, cached %ld\n", b2.prompt, b2.cached);
    assert_true(b2.cached >= b1.prompt - 1);
    chat("alice", "first question from alice", &a1, 4, &a2);
    assert_int_equal(a2.cached, 0);

    /* the kernel stops: the tool is killed and bob's call answered */
    kf_stop(g_kf);
    g_kf = NULL;
    pthread_join(th, NULL);
    free(a1.text);
    free(a2.text);
    free(b1.text);
    free(b2.text);
    free(c1.text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_agent_evicted_before_tool_waiter),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
