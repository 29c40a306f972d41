/* Integration: hybrid retrieval and personalisation on a real kernel over
 * real HTTP, with a real embedding model (the `embed` test model: random
 * weights, real tokenizer, mean pooling, run by llama.cpp inside the
 * kernel) and the built-in random chat model:
 *  - memory retrieve_memory and storage retrieve through POST /query return
 *    hybrid scores with their bm25 and cosine parts; a note or file whose
 *    text is the query comes first with cosine 1; a query sharing no word
 *    still finds notes; namespaces hold, and a shared one (share_memory,
 *    params.owner) is ranked the same way;
 *  - memory.auto_inject: a chat through /query and /v1/chat/completions of
 *    an agent with notes gets them as a system message (visible in
 *    memory_injected, prompt_tokens grows by about the estimate, within the
 *    budget); an agent without notes, or an unnamed OpenAI caller, gets none;
 *  - memory.auto_extract on /v1/chat/completions (whole and streamed): the
 *    turn of a named agent becomes a note that retrieve_memory finds;
 *  - a bad embedding.model path stops `aios serve` with a clear message. */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>


static int group_setup(void **state)
{
    (void)state;
    char *model = kf_embed_model(), *yaml = NULL;
    assert_true(asprintf(&yaml,
                         "embedding:\n  model: %s\n  n_ctx: 128\n  weight: 0.5\n"
                         "memory:\n  synchronous: normal\n  auto_extract: true\n"
                         "  auto_inject: {enabled: true, k: 2, max_tokens: 64}\n",
                         model) > 0);
    g_kf = kf_start_config(yaml);
    free(yaml);
    free(model);
    return 0;
}

/* POST /query of type qt; returns the "response" object (owned by *top) */
static json_t *q(const char *agent, const char *qt, const char *op, json_t *params, json_t **top)
{
    json_t *b = json_pack("{s:s,s:s,s:{s:s,s:o}}", "agent_name", agent, "query_type", qt,
                          "query_data", "operation_type", op, "params", params);
    char *body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    long st = kf_call(g_kf, "POST", "/query", body, top);
    if (st != 200) {
        char *d = *top ? json_dumps(*top, 0) : NULL;
        fail_msg("%s %s: HTTP %ld %s", qt, op, st, d ? d : "");
    }
    free(body);
    return json_object_get(*top, "response");
}

static double num(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_number(v)) fail_msg("no number '%s'", k);
    return json_number_value(v);
}

static void check_mix(json_t *l)
{
    double best = 0;
    size_t i;
    json_t *h;
    json_array_foreach(l, i, h) if (num(h, "bm25") > best) best = num(h, "bm25");
    json_array_foreach(l, i, h) {
        double c = num(h, "cosine"), want = 0.5 * (c > 0 ? c : 0) + 0.5 * (best > 0 ? num(h, "bm25") / best : 0);
        assert_true(fabs(num(h, "score") - want) < 1e-6);
        if (i) assert_true(num(json_array_get(l, i - 1), "score") >= num(h, "score"));
    }
}

static void test_memory_hybrid(void **state)
{
    (void)state;
    json_t *t = NULL;
    const char *texts[] = {"Quarterly budget review with finance.", "Plum dumplings recipe from grandmother.",
                           "The scheduler preempts long prefills."};
    for (int i = 0; i < 3; i++) {
        q("ada", "memory", "add_memory", json_pack("{s:s}", "content", texts[i]), &t);
        json_decref(t);
    }
    q("bob", "memory", "add_memory", json_pack("{s:s,s:s}", "memory_id", "bob-1", "content", texts[1]), &t);
    json_decref(t);
    json_t *r = q("ada", "memory", "retrieve_memory", json_pack("{s:s,s:i}", "content", texts[1], "k", 5), &t);
    json_t *l = json_object_get(r, "search_results");
    assert_int_equal(json_array_size(l), 3); /* ada's three, not bob's */
    assert_string_equal(json_string_value(json_object_get(json_array_get(l, 0), "content")), texts[1]);
    assert_true(fabs(num(json_array_get(l, 0), "cosine") - 1.0) < 1e-5);
    size_t i;
    json_t *h;
    json_array_foreach(l, i, h) assert_string_not_equal(json_string_value(json_object_get(h, "memory_id")), "bob-1");
    check_mix(l);
    json_decref(t);
    /* a namespace ada shares with bob: bob's retrieval with owner ranks
     * ada's notes the same way */
    q("ada", "memory", "share_memory", json_pack("{s:s}", "agent", "bob"), &t);
    json_decref(t);
    r = q("bob", "memory", "retrieve_memory",
          json_pack("{s:s,s:i,s:s}", "content", texts[2], "k", 5, "owner", "ada"), &t);
    l = json_object_get(r, "search_results");
    assert_int_equal(json_array_size(l), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(l, 0), "content")), texts[2]);
    assert_true(fabs(num(json_array_get(l, 0), "cosine") - 1.0) < 1e-5);
    check_mix(l);
    json_decref(t);
    /* no word in common: the vector part answers, bm25 0 */
    r = q("ada", "memory", "retrieve_memory", json_pack("{s:s,s:i}", "content", "xylophone quasar", "k", 2), &t);
    l = json_object_get(r, "search_results");
    assert_int_equal(json_array_size(l), 2);
    json_array_foreach(l, i, h) assert_true(num(h, "bm25") == 0.0);
    check_mix(l);
    json_decref(t);
}

static void test_storage_hybrid(void **state)
{
    (void)state;
    json_t *t = NULL;
    q("ada", "storage", "write", json_pack("{s:s,s:s}", "file_path", "notes/a.txt", "content",
                                           "Copper kettles whistle loudly."), &t);
    json_decref(t);
    q("ada", "storage", "write", json_pack("{s:s,s:s}", "file_path", "b.txt", "content",
                                           "Satellites orbit above the clouds."), &t);
    json_decref(t);
    json_t *r = q("ada", "storage", "retrieve",
                  json_pack("{s:s,s:i}", "query_text", "Satellites orbit above the clouds.", "k", 5), &t);
    json_t *l = json_object_get(r, "results");
    assert_int_equal(json_array_size(l), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(l, 0), "file_path")), "b.txt");
    assert_true(fabs(num(json_array_get(l, 0), "cosine") - 1.0) < 1e-5);
    check_mix(l);
    json_decref(t);
    r = q("ada", "storage", "retrieve", json_pack("{s:s,s:i}", "query_text", "xylophone", "k", 5), &t);
    assert_int_equal(json_array_size(json_object_get(r, "results")), 2);
    json_decref(t);
}

/* an LLM /query chat of agent; returns the response object (owned by *top) */
static json_t *chat(const char *agent, const char *msg, json_t **top)
{
    json_t *b = json_pack("{s:s,s:s,s:{s:[{s:s,s:s},{s:s,s:s}],s:i,s:s}}", "agent_name", agent,
                          "query_type", "llm", "query_data", "messages", "role", "system", "content",
                          "be brief", "role", "user", "content", msg, "max_new_tokens", 2,
                          "action_type", "chat");
    char *body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    assert_int_equal(kf_call(g_kf, "POST", "/query", body, top), 200);
    free(body);
    return json_object_get(*top, "response");
}

static void test_auto_inject_query(void **state)
{
    (void)state;
    const char *msg = "What is my favourite colour?";
    json_t *t0 = NULL, *t1 = NULL, *t = NULL;
    /* an agent without notes: nothing injected */
    json_t *r0 = chat("nobody", msg, &t0);
    assert_null(json_object_get(r0, "memory_injected"));
    int p0 = (int)num(json_object_get(r0, "usage"), "prompt_tokens");
    json_t *a = q("ivy", "memory", "add_memory", json_pack("{s:s}", "content", "My favourite colour is teal."), &t);
    char id[64];
    snprintf(id, sizeof id, "%s", json_string_value(json_object_get(a, "memory_id")));
    json_decref(t);
    json_t *r1 = chat("ivy", msg, &t1);
    json_t *mi = json_object_get(r1, "memory_injected");
    assert_non_null(mi);
    assert_int_equal(num(mi, "n_notes"), 1);
    assert_string_equal(json_string_value(json_array_get(json_object_get(mi, "memory_ids"), 0)), id);
    assert_non_null(strstr(json_string_value(json_object_get(mi, "text")), "- My favourite colour is teal."));
    int p1 = (int)num(json_object_get(r1, "usage"), "prompt_tokens");
    int est = (int)num(mi, "est_tokens");
    /* the same chat, longer by the injected text: more tokens, within the
     * budget plus the "\n\n" joining it to the system message */
    assert_true(p1 > p0);
    assert_true(p1 - p0 <= est + 2);
    assert_true(est <= 64);
    json_decref(t0);
    json_decref(t1);
}

static json_t *oa_chat(const char *user, const char *msg, json_t **top)
{
    json_t *b = json_pack("{s:s,s:[{s:s,s:s}],s:i}", "model", "aios-tiny", "messages", "role", "user",
                          "content", msg, "max_tokens", 2);
    if (user) json_object_set_new(b, "user", json_string(user));
    char *body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    long st = kf_call(g_kf, "POST", "/v1/chat/completions", body, top);
    free(body);
    if (st != 200) fail_msg("chat: HTTP %ld", st);
    return *top;
}

static void test_openai_extract_and_inject(void **state)
{
    (void)state;
    json_t *t = NULL, *c = NULL;
    const char *msg = "Remember that the launch code word is pelican";
    oa_chat("oscar", msg, &c);
    assert_null(json_object_get(json_object_get(c, "aios"), "memory_injected")); /* no notes yet */
    const char *answer = chat_content(c);
    assert_non_null(answer);
    char want[512];
    snprintf(want, sizeof want, "User: %s\nAssistant: %s", msg, answer);
    json_decref(c);
    /* auto_extract: stored by a memory syscall of its own, soon */
    json_t *l = NULL;
    for (int i = 0; i < 100; i++) {
        json_t *r = q("oscar", "memory", "retrieve_memory", json_pack("{s:s}", "content", "pelican"), &t);
        l = json_object_get(r, "search_results");
        if (json_array_size(l) > 0) break;
        json_decref(t);
        t = NULL;
        usleep(50000);
    }
    assert_non_null(t);
    assert_string_equal(json_string_value(json_object_get(json_array_get(l, 0), "content")), want);
    json_decref(t);
    /* auto_inject on the OpenAI route: the stored turn comes back */
    oa_chat("oscar", "What was the code word?", &c);
    json_t *mi = json_object_get(json_object_get(c, "aios"), "memory_injected");
    assert_non_null(mi);
    assert_non_null(strstr(json_string_value(json_object_get(mi, "text")), "pelican"));
    json_decref(c);
    /* a streamed chat of a named agent is extracted too */
    struct sse_result sr;
    memset(&sr, 0, sizeof sr);
    const char *sb = "{\"model\":\"aios-tiny\",\"user\":\"sue\",\"stream\":true,\"max_tokens\":2,"
                     "\"messages\":[{\"role\":\"user\",\"content\":\"Note the streamed word heron\"}]}";
    assert_int_equal(kf_stream(g_kf, sb, &sr, 0), 0);
    assert_int_equal(sr.status, 200);
    assert_true(sr.done);
    snprintf(want, sizeof want, "User: Note the streamed word heron\nAssistant: %s", sr.text ? sr.text : "");
    sse_result_free(&sr);
    l = NULL;
    for (int i = 0; i < 100; i++) {
        json_t *r = q("sue", "memory", "retrieve_memory", json_pack("{s:s}", "content", "heron"), &t);
        l = json_object_get(r, "search_results");
        if (json_array_size(l) > 0) break;
        json_decref(t);
        t = NULL;
        usleep(50000);
    }
    assert_non_null(t);
    assert_string_equal(json_string_value(json_object_get(json_array_get(l, 0), "content")), want);
    json_decref(t);
    /* an unnamed caller: neither injected nor extracted */
    oa_chat(NULL, "Remember that the anonymous word is walrus", &c);
    assert_null(json_object_get(json_object_get(c, "aios"), "memory_injected"));
    json_decref(c);
    usleep(200000);
    json_t *r = q("anonymous", "memory", "retrieve_memory", json_pack("{s:s}", "content", "walrus"), &t);
    assert_int_equal(json_array_size(json_object_get(r, "search_results")), 0);
    json_decref(t);
}

/* GET /status shows the embedding model and how much it has done */
static void test_status(void **state)
{
    (void)state;
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "GET", "/status", NULL, &j), 200);
    json_t *e = json_object_get(j, "embedding");
    assert_non_null(e);
    assert_int_equal(num(e, "dim"), 64);
    assert_true(num(e, "n_texts") > 10); /* the notes, files and queries above */
    assert_non_null(strstr(json_string_value(json_object_get(e, "model")), "aios-test-embed"));
    json_decref(j);
}

static void test_bad_model_path(void **state)
{
    (void)state;
    char dir[64], cfg[128], cmd[1024], log[128];
    snprintf(dir, sizeof dir, "/tmp/aios-it-badembed-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(cfg, sizeof cfg, "%s/c.yaml", dir);
    snprintf(log, sizeof log, "%s/err.log", dir);
    FILE *f = fopen(cfg, "w");
    assert_non_null(f);
    fprintf(f, "embedding:\n  model: %s/missing.gguf\n", dir);
    fclose(f);
    snprintf(cmd, sizeof cmd, "timeout 60 '%s' serve --config '%s' --port 0 --data-dir '%s/d' 2>'%s'",
             aios_bin(), cfg, dir, log);
    int st = system(cmd);
    assert_true(WIFEXITED(st));
    assert_int_not_equal(WEXITSTATUS(st), 0);
    assert_int_not_equal(WEXITSTATUS(st), 124); /* it did not start serving */
    char buf[4096] = "";
    f = fopen(log, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    if (!strstr(buf, "embedding.model: cannot read") || !strstr(buf, "missing.gguf"))
        fail_msg("unclear startup error: %s", buf);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memory_hybrid),
        cmocka_unit_test(test_storage_hybrid),
        cmocka_unit_test(test_auto_inject_query),
        cmocka_unit_test(test_openai_extract_and_inject),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_bad_model_path),
    };
    return cmocka_run_group_tests(tests, group_setup, kf_group_teardown);
}
