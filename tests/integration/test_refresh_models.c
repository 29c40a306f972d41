/* Integration: POST /core/refresh applies llms.models live (kernel/models.c).
 *
 * Two tiny test GGUFs with different weights (A: seed 0, B: seed 1), an
 * upstream `aios serve` on loopback for a remote model R, and a kernel under
 * test started with --config naming only A. Checked, in order:
 *  - adding B (local) and R (remote, no key yet) while a seeded stream on A
 *    runs: B answers (with its own weights), R is listed and answers 401
 *    without a key, A was not reloaded, and A's stream ends intact (the
 *    exact text of the same request before the refresh);
 *  - POST /core/config/update with the upstream's key, then refresh: R is
 *    rebuilt with the key and answers what the upstream itself answers; the
 *    key is never echoed;
 *  - removing B while a stream on B runs: the stream ends intact, new calls
 *    for B get 404 naming B, /status shows the old core as retired (and,
 *    once drained, its KV cache released) and /v1/models no longer lists B;
 *  - changing A's path to B's file while a stream on A runs: the old A
 *    finishes the stream, new A calls are answered by B's weights; a path
 *    that does not load is reported as not applied and the running A keeps
 *    serving. */
#include "harness.h"
#include "llm/testmodel.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* tokens of a stream that must still run when a refresh that loads a
 * model returns (a few seconds here) */
#define LONG_STREAM 700

static struct kernel_fixture *g_up, *g_k;
static char g_dir[64], g_cfg[128], g_a[128], g_b[128];

static void write_models(const char *models)
{
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp", g_cfg);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    fprintf(f, "llms:\n  models:\n%s", models);
    fclose(f);
    assert_int_equal(rename(tmp, g_cfg), 0);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/aios-it-refresh-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    snprintf(g_a, sizeof g_a, "%s/a.gguf", g_dir);
    snprintf(g_b, sizeof g_b, "%s/b.gguf", g_dir);
    snprintf(g_cfg, sizeof g_cfg, "%s/config.yaml", g_dir);
    char err[512];
    assert_int_equal(testmodel_create(g_a, TESTMODEL_SHAPE_TINY, 0, 0, err, sizeof err), 0);
    assert_int_equal(testmodel_create(g_b, TESTMODEL_SHAPE_TINY, 1, 0, err, sizeof err), 0);
    g_up = kf_start(NULL);
    char m[512];
    snprintf(m, sizeof m, "    - {name: A, backend: llamacpp, path: \"%s\"}\n", g_a);
    write_models(m);
    const char *extra[] = {"--config", g_cfg, NULL};
    g_k = kf_start(extra);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    kf_stop(g_k);
    kf_stop(g_up);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static char *body(const char *model, int max_tokens, bool stream)
{
    char *s = NULL;
    assert_true(asprintf(&s, "{\"model\":\"%s\",\"seed\":5,\"temperature\":0.9,\"max_tokens\":%d,"
                             "\"messages\":[{\"role\":\"user\",\"content\":\"Tell a long story.\"}]%s}",
                         model, max_tokens, stream ? ",\"stream\":true" : "") > 0);
    return s;
}

/* a seeded answer of model (NULL on a non-200, *status set) */
static char *answer(struct kernel_fixture *kf, const char *model, int max_tokens, long *status)
{
    char *b = body(model, max_tokens, false);
    json_t *j = NULL;
    *status = kf_call(kf, "POST", "/v1/chat/completions", b, &j);
    free(b);
    char *t = *status == 200 && chat_content(j) ? strdup(chat_content(j)) : NULL;
    if (*status == 200) assert_string_equal(json_string_value(json_object_get(j, "model")), model);
    json_decref(j);
    return t;
}

struct streamer {
    pthread_t th;
    char *body;
    struct sse_result res;
    atomic_int seen; /* content events received so far */
    atomic_bool done;
};

static void *stream_main(void *arg)
{
    struct streamer *s = arg;
    kf_stream_watch(g_k, s->body, &s->res, 0, &s->seen);
    s->done = true;
    return NULL;
}

/* the model's /status entry (serving or retired, as asked) */
static json_t *status_entry(const char *name, bool retired)
{
    json_t *j = NULL, *m, *found = NULL;
    assert_int_equal(kf_call(g_k, "GET", "/status", NULL, &j), 200);
    size_t i;
    json_array_foreach(json_object_get(j, "models"), i, m)
    {
        if (strcmp(json_string_value(json_object_get(m, "name")), name)) continue;
        if (json_is_true(json_object_get(m, "retired")) == retired) found = json_incref(m);
    }
    json_decref(j);
    return found;
}

/* start a stream on model and return once it is served: its first token
 * has arrived, so its call runs on the core that served model when the
 * request came in. (An engine-wide sign such as `running` in /status is
 * not enough: it may still count the call before, and a stream request
 * that reaches the kernel only after the refresh is a new call, which the
 * new core serves, rightly; that was the "differs at byte 7" flake: the
 * new weights, sampled with the same seed, give the same first token.) */
static void stream_start(struct streamer *s, const char *model, int max_tokens)
{
    memset(s, 0, sizeof *s);
    atomic_init(&s->seen, 0);
    atomic_init(&s->done, false);
    s->body = body(model, max_tokens, true);
    assert_int_equal(pthread_create(&s->th, NULL, stream_main, s), 0);
    for (int i = 0; i < 12000 && !atomic_load(&s->done); i++) {
        if (atomic_load(&s->seen) >= 1) return;
        usleep(5000);
    }
    fail_msg("the stream on %s never produced a token", model);
}

/* expect_text: the answer to the same seeded request; a stream with more
 * max_tokens than it had starts with the same text (up to the last few
 * bytes, where the shorter answer may have cut a UTF-8 sequence) */
static void stream_join(struct streamer *s, const char *expect_text, bool longer)
{
    pthread_join(s->th, NULL);
    assert_int_equal(s->res.status, 200);
    assert_true(s->res.done);
    assert_null(s->res.error);
    if (!longer) assert_string_equal(s->res.text, expect_text);
    size_t n = strlen(expect_text);
    n = n > 8 ? n - 8 : 0;
    assert_true(strlen(s->res.text) >= n);
    assert_memory_equal(s->res.text, expect_text, n);
    sse_result_free(&s->res);
    free(s->body);
}

static json_t *refresh(void)
{
    json_t *j = NULL;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(kf_call(g_k, "POST", "/core/refresh", NULL, &j), 200);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("refresh: %.3f s\n", (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "success");
    return j;
}

/* the change record for key, or NULL */
static json_t *change(json_t *j, const char *key)
{
    json_t *c;
    size_t i;
    json_array_foreach(json_object_get(j, "changes"), i, c)
        if (!strcmp(json_string_value(json_object_get(c, "key")), key)) return c;
    return NULL;
}

static bool listed(const char *name)
{
    json_t *j = NULL, *m;
    assert_int_equal(kf_call(g_k, "GET", "/v1/models", NULL, &j), 200);
    bool found = false;
    size_t i;
    json_array_foreach(json_object_get(j, "data"), i, m)
        found |= !strcmp(json_string_value(json_object_get(m, "id")), name);
    json_decref(j);
    return found;
}

static char g_models_abr[2048];
static char *g_ref_a, *g_ref_b; /* seeded answers of A and B (300 tokens) */

static void test_add_models_while_streaming(void **state)
{
    (void)state;
    long st;
    g_ref_a = answer(g_k, "A", 300, &st);
    assert_int_equal(st, 200);
    assert_false(listed("B"));
    assert_null(answer(g_k, "B", 4, &st));
    assert_int_equal(st, 404);

    struct streamer s;
    stream_start(&s, "A", LONG_STREAM); /* outlasts loading B (about 1 s: the tokenizer) */
    snprintf(g_models_abr, sizeof g_models_abr,
             "    - {name: A, backend: llamacpp, path: \"%s\"}\n"
             "    - {name: B, backend: llamacpp, path: \"%s\", n_ctx: 2048}\n"
             "    - {name: R, backend: vllm, hostname: \"%s/v1\", upstream_model: aios-tiny}\n",
             g_a, g_b, g_up->child.base);
    write_models(g_models_abr);
    json_t *j = refresh();
    assert_false(s.done); /* the refresh happened while A's stream ran */
    json_t *cb = change(j, "llms.models[B]"), *cr = change(j, "llms.models[R]");
    assert_non_null(cb);
    assert_true(json_is_true(json_object_get(cb, "applied")));
    assert_non_null(cr);
    assert_true(json_is_true(json_object_get(cr, "applied")));
    assert_null(change(j, "llms.models[A]"));
    json_t *un = json_object_get(j, "models_unchanged");
    assert_int_equal(json_array_size(un), 1);
    assert_string_equal(json_string_value(json_array_get(un, 0)), "A");
    json_decref(j);

    /* B serves with its own weights */
    assert_true(listed("B") && listed("R") && listed("A"));
    g_ref_b = answer(g_k, "B", 300, &st);
    assert_int_equal(st, 200);
    assert_string_not_equal(g_ref_b, g_ref_a);
    /* R is there; the upstream refuses it without a key */
    json_t *e = NULL;
    char *br = body("R", 4, false);
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions", br, &e), 401);
    free(br);
    json_decref(e);
    /* the model list as now applied */
    assert_int_equal(kf_call(g_k, "GET", "/core/llms/list", NULL, &j), 200);
    assert_int_equal(json_array_size(json_object_get(j, "llms")), 3);
    json_t *l1 = json_array_get(json_object_get(j, "llms"), 1);
    assert_string_equal(json_string_value(json_object_get(l1, "name")), "B");
    assert_true(json_is_true(json_object_get(l1, "served")));
    assert_int_equal(json_integer_value(json_object_get(l1, "n_ctx")), 2048);
    json_decref(j);

    /* A's stream: untouched */
    stream_join(&s, g_ref_a, true);
    /* and refreshing the same file again changes nothing */
    j = refresh();
    assert_int_equal(json_array_size(json_object_get(j, "changes")), 0);
    assert_int_equal(json_array_size(json_object_get(j, "models_unchanged")), 3);
    json_decref(j);
}

static void test_config_update_then_refresh(void **state)
{
    (void)state;
    char b[512];
    snprintf(b, sizeof b, "{\"provider\":\"vllm\",\"api_key\":\"%s\"}", g_up->child.token);
    json_t *j = NULL;
    assert_int_equal(kf_call(g_k, "POST", "/core/config/update", b, &j), 200);
    json_decref(j);
    j = refresh();
    char *d = json_dumps(j, 0);
    assert_null(strstr(d, g_up->child.token)); /* never echoed */
    free(d);
    json_t *cr = change(j, "llms.models[R]"), *ck = change(j, "api_keys");
    assert_non_null(cr);
    assert_true(json_is_true(json_object_get(cr, "applied")));
    assert_non_null(ck);
    assert_true(json_is_true(json_object_get(ck, "applied")));
    assert_null(change(j, "llms.models[A]"));
    assert_null(change(j, "llms.models[B]"));
    json_decref(j);
    /* R now answers exactly what the upstream answers for the same seed */
    long st;
    char *direct = answer(g_up, "aios-tiny", 8, &st);
    assert_int_equal(st, 200);
    char *via = answer(g_k, "R", 8, &st);
    assert_int_equal(st, 200);
    assert_string_equal(via, direct);
    free(direct);
    free(via);
}

static void test_remove_model_while_streaming(void **state)
{
    (void)state;
    struct streamer s;
    stream_start(&s, "B", 300);
    char m[1024];
    snprintf(m, sizeof m,
             "    - {name: A, backend: llamacpp, path: \"%s\"}\n"
             "    - {name: R, backend: vllm, hostname: \"%s/v1\", upstream_model: aios-tiny}\n",
             g_a, g_up->child.base);
    write_models(m);
    json_t *j = refresh();
    assert_false(s.done);
    json_t *cb = change(j, "llms.models[B]");
    assert_non_null(cb);
    assert_true(json_is_true(json_object_get(cb, "applied")));
    assert_true(json_is_null(json_object_get(cb, "new")) || !json_object_get(cb, "new"));
    assert_non_null(strstr(json_string_value(json_object_get(cb, "note")), "retired"));
    json_decref(j);
    /* new calls: a clear 404 naming B */
    char *bb = body("B", 4, false), *bb2 = body("B", 4, false);
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions", bb, &j), 404);
    assert_error_body(j, "'B'");
    json_decref(j);
    free(bb);
    assert_int_equal(kf_call(g_k, "POST", "/query",
                             "{\"agent_name\":\"t\",\"query_type\":\"llm\",\"query_data\":{"
                             "\"llms\":[{\"name\":\"B\"}],\"messages\":[{\"role\":\"user\","
                             "\"content\":\"x\"}]}}", &j), 404);
    assert_error_body(j, "B");
    json_decref(j);
    assert_false(listed("B"));
    json_t *old = status_entry("B", true);
    assert_non_null(old); /* retired, still finishing its call */
    json_decref(old);
    /* the call that was running on B ends exactly as it would have */
    stream_join(&s, g_ref_b, false);
    /* then the retired engine gives its KV cache back */
    bool released = false;
    for (int i = 0; i < 400 && !released; i++) {
        json_t *r = status_entry("B", true);
        released = json_is_true(json_object_get(json_object_get(r, "engine"), "released"));
        json_decref(r);
        if (!released) usleep(25000);
    }
    assert_true(released);
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions", bb2, &j), 404);
    json_decref(j);
    free(bb2);
    long st;
    char *a = answer(g_k, "A", 300, &st);
    assert_int_equal(st, 200);
    assert_string_equal(a, g_ref_a);
    free(a);
}

static void test_change_model_while_streaming(void **state)
{
    (void)state;
    struct streamer s;
    stream_start(&s, "A", LONG_STREAM);
    char m[1024];
    snprintf(m, sizeof m, "    - {name: A, backend: llamacpp, path: \"%s\"}\n", g_b);
    write_models(m);
    json_t *j = refresh();
    assert_false(s.done);
    json_t *ca = change(j, "llms.models[A]"), *cr = change(j, "llms.models[R]");
    assert_non_null(ca);
    assert_true(json_is_true(json_object_get(ca, "applied")));
    assert_non_null(cr); /* R removed */
    json_decref(j);
    /* new calls of A: B's weights now (B's answer to the same request) */
    long st;
    char *a = answer(g_k, "A", 300, &st);
    assert_int_equal(st, 200);
    assert_string_equal(a, g_ref_b);
    free(a);
    /* the old A finished its stream with the old weights */
    stream_join(&s, g_ref_a, true);
    json_t *old = status_entry("A", true);
    assert_non_null(old);
    json_decref(old);

    /* a path that does not load: not applied, the running A keeps serving */
    write_models("    - {name: A, backend: llamacpp, path: /nonexistent/model.gguf}\n");
    j = refresh();
    ca = change(j, "llms.models[A]");
    assert_non_null(ca);
    assert_false(json_is_true(json_object_get(ca, "applied")));
    assert_non_null(strstr(json_string_value(json_object_get(ca, "note")), "keeps serving"));
    json_decref(j);
    a = answer(g_k, "A", 300, &st);
    assert_int_equal(st, 200);
    assert_string_equal(a, g_ref_b);
    free(a);
    free(g_ref_a);
    free(g_ref_b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_models_while_streaming),
        cmocka_unit_test(test_config_update_then_refresh),
        cmocka_unit_test(test_remove_model_while_streaming),
        cmocka_unit_test(test_change_model_while_streaming),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
