/* Integration: chat completions against the real `aios serve` with the
 * built-in tiny model: response shape, determinism with a seed, streaming
 * (SSE) equal to the non-streamed answer, stop strings, max_tokens,
 * concurrent clients, a client that disconnects mid-stream, /status and
 * /v1/models. */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


static char *chat_body(int seed, int max_tokens, const char *extra)
{
    char *b = NULL;
    int n = asprintf(&b,
                     "{\"model\":\"aios-tiny\",\"seed\":%d,\"max_tokens\":%d,\"temperature\":0.9,"
                     "\"messages\":[{\"role\":\"system\",\"content\":\"You are terse.\"},"
                     "{\"role\":\"user\",\"content\":\"Name three colours.\"}]%s%s}",
                     seed, max_tokens, extra ? "," : "", extra ? extra : "");
    assert_true(n > 0);
    return b;
}

static void test_status_and_models(void **state)
{
    (void)state;
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "GET", "/status", NULL, &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "ok");
    json_t *m = json_array_get(json_object_get(j, "models"), 0);
    assert_string_equal(json_string_value(json_object_get(m, "name")), "aios-tiny");
    assert_true(json_is_true(json_object_get(m, "random_weights")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "scheduler"), "policy")), "fair");
    /* the devices ggml enumerates (the CPU at least), and where the model's
     * layers and KV cache live: all on a GPU when the build and host have
     * one, else none (docs/gpu.md) */
    json_t *devs = json_object_get(j, "devices"), *dv;
    size_t i;
    int n_cpu = 0, n_gpu = 0;
    assert_true(json_array_size(devs) >= 1);
    json_array_foreach(devs, i, dv) {
        const char *ty = json_string_value(json_object_get(dv, "type"));
        assert_non_null(ty);
        assert_non_null(json_string_value(json_object_get(dv, "name")));
        assert_true(json_integer_value(json_object_get(dv, "memory_total")) > 0);
        n_cpu += !strcmp(ty, "cpu");
        n_gpu += !strcmp(ty, "gpu") || !strcmp(ty, "igpu");
    }
    assert_int_equal(n_cpu, 1);
    json_t *pl = json_object_get(m, "placement");
    json_int_t n_layer = json_integer_value(json_object_get(pl, "n_layer"));
    assert_true(n_layer > 0);
    assert_int_equal(json_integer_value(json_object_get(pl, "layers_offloaded")), n_gpu ? n_layer : 0);
    assert_true(json_integer_value(json_object_get(pl, "model_bytes")) > 0);
    assert_true(json_integer_value(json_object_get(pl, "kv_bytes")) > 0);
    assert_int_equal(json_is_true(json_object_get(pl, "kv_on_device")), n_gpu > 0);
    json_decref(j);

    assert_int_equal(kf_call(g_kf, "GET", "/v1/models", NULL, &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "object")), "list");
    json_t *d = json_object_get(j, "data");
    assert_int_equal(json_array_size(d), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(d, 0), "id")), "aios-tiny");
    assert_string_equal(json_string_value(json_object_get(json_array_get(d, 0), "object")), "model");
    json_decref(j);

    /* one model, as OpenAI's client.models.retrieve() asks for it */
    assert_int_equal(kf_call(g_kf, "GET", "/v1/models/aios-tiny", NULL, &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "id")), "aios-tiny");
    assert_string_equal(json_string_value(json_object_get(j, "object")), "model");
    assert_true(json_is_integer(json_object_get(j, "created")));
    assert_string_equal(json_string_value(json_object_get(j, "owned_by")), "aios");
    json_decref(j);
    /* unknown ids, with '/' raw or encoded as Node's SDK sends it: 404 */
    const char *unknown[] = {"/v1/models/nope", "/v1/models/org/nope", "/v1/models/org%2Fnope"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(kf_call(g_kf, "GET", unknown[i], NULL, &j), 404);
        assert_error_body(j, "does not exist");
        assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                            "model_not_found");
        json_decref(j);
    }
}

static void test_chat_shape(void **state)
{
    (void)state;
    char *b = chat_body(7, 16, NULL);
    json_t *j = NULL;
    char ctype[128];
    assert_int_equal(kf_call_n(g_kf, "POST", "/v1/chat/completions", b, strlen(b), &j, ctype, sizeof ctype), 200);
    assert_non_null(strstr(ctype, "application/json"));
    assert_string_equal(json_string_value(json_object_get(j, "object")), "chat.completion");
    assert_non_null(strstr(json_string_value(json_object_get(j, "id")), "chatcmpl-"));
    assert_string_equal(json_string_value(json_object_get(j, "model")), "aios-tiny");
    assert_true(json_integer_value(json_object_get(j, "created")) > 1600000000);
    json_t *c = json_array_get(json_object_get(j, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(c, "message"), "role")), "assistant");
    assert_non_null(chat_content(j));
    json_t *u = json_object_get(j, "usage");
    json_int_t pt = json_integer_value(json_object_get(u, "prompt_tokens"));
    json_int_t ct = json_integer_value(json_object_get(u, "completion_tokens"));
    assert_true(pt > 10);
    assert_true(ct >= 1 && ct <= 16);
    assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")), pt + ct);
    const char *fr = json_string_value(json_object_get(c, "finish_reason"));
    assert_non_null(fr);
    /* a random model almost never emits end-of-turn: 16 tokens means length */
    if (ct == 16) assert_string_equal(fr, "length");
    else assert_string_equal(fr, "stop");
    json_t *a = json_object_get(j, "aios");
    assert_true(json_number_value(json_object_get(a, "turnaround_time")) > 0);
    /* llama-server's timings: the same token counts as usage */
    json_t *tm = json_object_get(j, "timings");
    assert_true(json_is_object(tm));
    json_int_t pn = json_integer_value(json_object_get(tm, "prompt_n"));
    assert_true(pn >= 1);
    assert_int_equal(pn + json_integer_value(json_object_get(tm, "cache_n")), pt);
    assert_int_equal(json_integer_value(json_object_get(tm, "predicted_n")), ct);
    assert_true(json_number_value(json_object_get(tm, "prompt_ms")) > 0);
    assert_true(json_number_value(json_object_get(tm, "predicted_ms")) >= 0);
    assert_true(json_number_value(json_object_get(tm, "prompt_ms")) <=
                1000.0 * json_number_value(json_object_get(a, "turnaround_time")));
    json_decref(j);
    free(b);
}

static void test_determinism(void **state)
{
    (void)state;
    char *b1 = chat_body(1234, 32, NULL), *b2 = chat_body(99, 32, NULL);
    json_t *a = NULL, *b = NULL, *c = NULL;
    assert_int_equal(kf_call(g_kf, "POST", "/v1/chat/completions", b1, &a), 200);
    assert_int_equal(kf_call(g_kf, "POST", "/v1/chat/completions", b1, &b), 200);
    assert_int_equal(kf_call(g_kf, "POST", "/v1/chat/completions", b2, &c), 200);
    assert_true(strlen(chat_content(a)) > 0);
    assert_string_equal(chat_content(a), chat_content(b));
    /* another seed samples other tokens (32 tokens from a 150k vocabulary) */
    assert_string_not_equal(chat_content(a), chat_content(c));
    json_decref(a);
    json_decref(b);
    json_decref(c);
    free(b1);
    free(b2);
}

static void test_greedy_ignores_seed(void **state)
{
    (void)state;
    const char *g1 = "{\"model\":\"aios-tiny\",\"seed\":1,\"max_tokens\":12,\"temperature\":0,"
                     "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    const char *g2 = "{\"model\":\"aios-tiny\",\"seed\":2,\"max_tokens\":12,\"temperature\":0,"
                     "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    json_t *a = NULL, *b = NULL;
    assert_int_equal(kf_call(g_kf, "POST", "/v1/chat/completions", g1, &a), 200);
    assert_int_equal(kf_call(g_kf, "POST", "/v1/chat/completions", g2, &b), 200);
    assert_string_equal(chat_content(a), chat_content(b));
    json_decref(a);
    json_decref(b);
}

static void test_stream_matches(void **state)
{
    (void)state;
    char *plain = chat_body(4242, 40, NULL);
    char *streamed = chat_body(4242, 40, "\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "POST", "/v1/chat/completions", plain, &j), 200);
    struct sse_result r;
    assert_int_equal(kf_stream(g_kf, streamed, &r, 0), 0);
    assert_int_equal(r.status, 200);
    assert_false(r.bad_event);
    assert_true(r.done);
    assert_true(r.first_has_role);
    assert_true(r.n_content >= 2); /* really incremental */
    assert_string_equal(r.text, chat_content(j));
    assert_string_equal(r.finish,
                        json_string_value(json_object_get(json_array_get(json_object_get(j, "choices"), 0), "finish_reason")));
    assert_non_null(r.usage);
    assert_int_equal(json_integer_value(json_object_get(r.usage, "completion_tokens")),
                     json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens")));
    assert_null(r.error);
    sse_result_free(&r);
    json_decref(j);
    free(plain);
    free(streamed);
}

static void test_stop_string(void **state)
{
    (void)state;
    /* learn what the model says, then stop on a piece from its middle */
    char *b = chat_body(777, 40, NULL);
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "POST", "/v1/chat/completions", b, &j), 200);
    const char *full = chat_content(j);
    size_t n = strlen(full);
    assert_true(n > 20);
    /* pick 3 ASCII-safe bytes near the middle whose first occurrence is there */
    size_t at = 0;
    for (size_t i = n / 3; i + 3 < n; i++) {
        unsigned char c0 = (unsigned char)full[i], c1 = (unsigned char)full[i + 1], c2 = (unsigned char)full[i + 2];
        if (c0 < 0x80 && c1 < 0x80 && c2 < 0x80 && c0 > 0x20 && c1 > 0x20 && c2 > 0x20 &&
            c0 != '"' && c1 != '"' && c2 != '"' && c0 != '\\' && c1 != '\\' && c2 != '\\') {
            char pat[4] = {full[i], full[i + 1], full[i + 2], 0};
            if ((size_t)(strstr(full, pat) - full) == i) {
                at = i;
                break;
            }
        }
    }
    if (at == 0) {
        json_decref(j);
        free(b);
        skip();
    }
    char stop[4] = {full[at], full[at + 1], full[at + 2], 0};
    char extra[64];
    snprintf(extra, sizeof extra, "\"stop\":[\"%s\"]", stop);
    char *bs = chat_body(777, 40, extra);
    json_t *k = NULL;
    assert_int_equal(kf_call(g_kf, "POST", "/v1/chat/completions", bs, &k), 200);
    const char *cut = chat_content(k);
    assert_int_equal(strlen(cut), at);
    assert_memory_equal(cut, full, at);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(k, "choices"), 0), "finish_reason")), "stop");

    /* the streamed form stops at the same place and never leaks the stop text */
    char extra2[96];
    snprintf(extra2, sizeof extra2, "\"stop\":\"%s\",\"stream\":true", stop);
    char *bss = chat_body(777, 40, extra2);
    struct sse_result r;
    assert_int_equal(kf_stream(g_kf, bss, &r, 0), 0);
    assert_string_equal(r.text, cut);
    assert_string_equal(r.finish, "stop");
    sse_result_free(&r);
    json_decref(j);
    json_decref(k);
    free(b);
    free(bs);
    free(bss);
}

struct conc_arg {
    int seed;
    long status;
    char *text;
};

static void *conc_worker(void *p)
{
    struct conc_arg *a = p;
    char *b = chat_body(a->seed, 20, NULL);
    json_t *j = NULL;
    char url[512];
    snprintf(url, sizeof url, "%s/v1/chat/completions", g_kf->child.base);
    struct hc_resp r;
    if (hc_call("POST", url, b, strlen(b), &r, 300) == 0) {
        a->status = r.status;
        j = json_loadb(r.body, r.len, 0, NULL);
        const char *t = chat_content(j);
        a->text = t ? strdup(t) : NULL;
    }
    hc_resp_free(&r);
    json_decref(j);
    free(b);
    return NULL;
}

static void test_concurrent_clients(void **state)
{
    (void)state;
    enum { N = 6 };
    pthread_t th[N];
    struct conc_arg args[N];
    for (int i = 0; i < N; i++) {
        args[i] = (struct conc_arg){.seed = 500 + (i % 3)};
        pthread_create(&th[i], NULL, conc_worker, &args[i]);
    }
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        assert_int_equal(args[i].status, 200);
        assert_non_null(args[i].text);
    }
    /* same seed, same answer, whatever the interleaving */
    for (int i = 0; i < 3; i++) assert_string_equal(args[i].text, args[i + 3].text);
    for (int i = 0; i < N; i++) free(args[i].text);
}

static void test_disconnect_mid_stream(void **state)
{
    (void)state;
    /* a long generation; hang up after the first events */
    char *b = chat_body(3, 3000, "\"stream\":true");
    struct sse_result r;
    kf_stream(g_kf, b, &r, 3);
    assert_true(r.n_events >= 3);
    assert_false(r.done);
    sse_result_free(&r);
    /* the engine notices and frees itself: the next call is answered
     * promptly (well before 3000 tokens would have been generated) */
    char *q = chat_body(5, 8, NULL);
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "POST", "/v1/chat/completions", q, &j), 200);
    json_decref(j);
    /* every call, the abandoned one included, is accounted finished (the
     * engine does its bookkeeping just after the answer is sent: poll) */
    json_int_t sub = -1, fin = -2;
    for (int i = 0; i < 200 && sub != fin; i++) {
        assert_int_equal(kf_call(g_kf, "GET", "/status", NULL, &j), 200);
        json_t *sch = json_object_get(j, "scheduler");
        sub = json_integer_value(json_object_get(sch, "submitted"));
        fin = json_integer_value(json_object_get(sch, "finished"));
        json_decref(j);
        if (sub != fin) usleep(10000);
    }
    assert_int_equal(sub, fin);
    free(b);
    free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_and_models),
        cmocka_unit_test(test_chat_shape),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_greedy_ignores_seed),
        cmocka_unit_test(test_stream_matches),
        cmocka_unit_test(test_stop_string),
        cmocka_unit_test(test_concurrent_clients),
        cmocka_unit_test(test_disconnect_mid_stream),
    };
    return cmocka_run_group_tests(tests, kf_group_setup, kf_group_teardown);
}
