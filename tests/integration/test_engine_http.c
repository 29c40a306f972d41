/* Integration tests of the engine's KV reuse through the OpenAI API of a
 * real `aios serve`:
 * - the second turn of a conversation reports cached prompt tokens in
 *   usage.prompt_tokens_details.cached_tokens and answers exactly as a
 *   kernel without retention does (same seed);
 * - 4 agents sending one long system prompt at once compute it once;
 * - penalty fields are accepted and validated (400 naming the field);
 * - /status shows the engine's counters. */
#include "harness.h"

#include "util/util.h"

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *body_for(const char *agent, const char *sys, const char *user, const char *assistant,
                      const char *user2, int seed, int max_tokens)
{
    json_t *msgs = json_array();
    json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "system", "content", sys));
    json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", user));
    if (assistant) {
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "assistant", "content", assistant));
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", user2));
    }
    json_t *b = json_pack("{s:s,s:s,s:o,s:i,s:i,s:f}", "model", "aios-tiny", "user", agent,
                          "messages", msgs, "seed", seed, "max_tokens", max_tokens,
                          "temperature", 0.8);
    char *s = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    return s;
}

static int usage_int(json_t *j, const char *key)
{
    json_t *u = json_object_get(j, "usage");
    if (!strcmp(key, "cached_tokens"))
        return (int)json_integer_value(
            json_object_get(json_object_get(u, "prompt_tokens_details"), "cached_tokens"));
    return (int)json_integer_value(json_object_get(u, key));
}

static const char *SYS = "You are a careful assistant. Answer in one short sentence.";

static void test_conversation_reuse(void **state)
{
    (void)state;
    struct kernel_fixture *kf = kf_start(NULL);
    json_t *j = NULL;
    char *b1 = body_for("alice", SYS, "What is a kernel?", NULL, NULL, 3, 12);
    assert_int_equal(kf_call(kf, "POST", "/v1/chat/completions", b1, &j), 200);
    char *reply = strdup(chat_content(j));
    assert_int_equal(usage_int(j, "cached_tokens"), 0);
    int p1 = usage_int(j, "prompt_tokens");
    json_decref(j);

    char *b2 = body_for("alice", SYS, "What is a kernel?", reply, "And a scheduler?", 4, 12);
    assert_int_equal(kf_call(kf, "POST", "/v1/chat/completions", b2, &j), 200);
    int cached = usage_int(j, "cached_tokens");
    print_message("turn 2: %d prompt tokens, %d cached (turn 1 prompt %d)\n",
                  usage_int(j, "prompt_tokens"), cached, p1);
    assert_true(cached >= p1 - 1);
    assert_true(cached < usage_int(j, "prompt_tokens"));
    char *warm = strdup(chat_content(j));
    json_decref(j);

    /* the engine publishes its counters just after the step that answered */
    json_int_t reused = -1;
    for (int i = 0; i < 100 && reused < cached; i++) {
        assert_int_equal(kf_call(kf, "GET", "/status", NULL, &j), 200);
        json_t *models = json_object_get(j, "models");
        json_t *m0 = json_is_array(models) ? json_array_get(models, 0) : NULL;
        json_t *en = m0 ? json_object_get(m0, "engine") : NULL;
        assert_non_null(en);
        reused = json_integer_value(json_object_get(en, "prompt_tokens_reused"));
        json_decref(j);
        if (reused < cached) usleep(20000);
    }
    assert_true(reused >= cached);
    kf_stop(kf);

    /* a kernel that keeps nothing computes everything and answers the same */
    char cfg[300], yaml[1024];
    char *cache = util_cache_dir();
    assert_non_null(cache);
    snprintf(cfg, sizeof cfg, "/tmp/aios-it-engine-%d.yaml", (int)getpid());
    snprintf(yaml, sizeof yaml,
             "llms:\n  models:\n    - name: aios-tiny\n      backend: llamacpp\n"
             "      path: %s/models/aios-test-tiny-seed0.gguf\n      retain: false\n", cache);
    free(cache);
    FILE *f = fopen(cfg, "w");
    assert_non_null(f);
    fputs(yaml, f);
    fclose(f);
    const char *args[] = {"--config", cfg, NULL};
    kf = kf_start(args);
    assert_int_equal(kf_call(kf, "POST", "/v1/chat/completions", b2, &j), 200);
    assert_int_equal(usage_int(j, "cached_tokens"), 0);
    assert_string_equal(chat_content(j), warm);
    json_decref(j);
    kf_stop(kf);
    unlink(cfg);
    free(b1);
    free(b2);
    free(reply);
    free(warm);
}

struct agent_call {
    struct kernel_fixture *kf;
    char *body;
    long status;
    int prompt, cached;
};

static void *agent_worker(void *p)
{
    struct agent_call *a = p;
    char url[512];
    snprintf(url, sizeof url, "%s/v1/chat/completions", a->kf->child.base);
    struct hc_resp r;
    if (hc_call("POST", url, a->body, strlen(a->body), &r, 300) == 0) {
        a->status = r.status;
        json_t *j = json_loadb(r.body, r.len, 0, NULL);
        a->prompt = usage_int(j, "prompt_tokens");
        a->cached = usage_int(j, "cached_tokens");
        json_decref(j);
    }
    hc_resp_free(&r);
    return NULL;
}

static void test_shared_system_prompt(void **state)
{
    (void)state;
    struct kernel_fixture *kf = kf_start(NULL);
    char sys[6000] = "You are one agent of many. The rules follow. ";
    for (int i = 0; i < 60; i++) {
        char r[80];
        snprintf(r, sizeof r, "Rule %d: be exact, be brief, cite sources. ", i);
        strcat(sys, r);
    }
    const char *users[4] = {"plan a trip", "fix my code", "write a poem", "sum 2 and 2"};
    const char *agents[4] = {"agent-1", "agent-2", "agent-3", "agent-4"};
    struct agent_call calls[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        calls[i] = (struct agent_call){.kf = kf};
        calls[i].body = body_for(agents[i], sys, users[i], NULL, NULL, 10 + i, 6);
        pthread_create(&th[i], NULL, agent_worker, &calls[i]);
    }
    int total = 0, computed = 0, min_prompt = 1 << 30;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(calls[i].status, 200);
        total += calls[i].prompt;
        computed += calls[i].prompt - calls[i].cached;
        if (calls[i].prompt < min_prompt) min_prompt = calls[i].prompt;
        free(calls[i].body);
    }
    print_message("4 agents: %d prompt tokens, %d computed\n", total, computed);
    /* the shared part (all but the last ~15 tokens of each prompt) is
     * computed once: at most one full prompt plus four suffixes */
    assert_true(computed <= min_prompt + 4 * 20);
    kf_stop(kf);
}

static void test_penalty_fields(void **state)
{
    (void)state;
    struct kernel_fixture *kf = kf_start(NULL);
    json_t *j = NULL;
    const char *ok = "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                     "\"max_tokens\":8,\"frequency_penalty\":0.5,\"presence_penalty\":-0.5,"
                     "\"repeat_penalty\":1.3,\"seed\":1}";
    assert_int_equal(kf_call(kf, "POST", "/v1/chat/completions", ok, &j), 200);
    json_decref(j);
    const char *bad[] = {"\"frequency_penalty\":3", "\"presence_penalty\":\"x\"",
                         "\"repeat_penalty\":-1"};
    const char *field[] = {"frequency_penalty", "presence_penalty", "repeat_penalty"};
    for (int i = 0; i < 3; i++) {
        char b[512];
        snprintf(b, sizeof b,
                 "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],%s}",
                 bad[i]);
        assert_int_equal(kf_call(kf, "POST", "/v1/chat/completions", b, &j), 400);
        assert_error_body(j, field[i]);
        json_decref(j);
    }
    kf_stop(kf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conversation_reuse),
        cmocka_unit_test(test_shared_system_prompt),
        cmocka_unit_test(test_penalty_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
