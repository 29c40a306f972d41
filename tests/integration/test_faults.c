/* Integration: faults the kernel cannot avoid, on a real kernel (the tiny
 * test model in the real llama.cpp engine, real HTTP on loopback). Each
 * one must give the caller a clear error with the right status, keep the
 * kernel serving, and lose nothing that was acknowledged.
 *
 *  - A full KV cache: eight conversations at once on a model whose KV
 *    cache holds about two of them (n_ctx = kv_size = 512). Every call is
 *    answered 200 with its whole answer (every token asked for: the engine
 *    switches calls out and back in instead of failing them), and the
 *    engine's counters show that calls really were switched out. A prompt
 *    over n_ctx is a 400 that says so, before anything runs.
 *  - An upstream that hangs: a remote model whose server (a TCP listener in
 *    this test) accepts connections and never answers. Calls to it end
 *    with 504 naming llms.remote.timeout_s (through /v1/chat/completions
 *    and /query), while the local model, /status and memory calls are
 *    served during the hang.
 *  - Out of memory: the running kernel's address space is capped
 *    (prlimit(RLIMIT_AS) on the child: a real allocation failure, no
 *    mock), then POST /core/refresh adds a model whose KV cache cannot be
 *    allocated under the cap. The refresh reports the model as not applied
 *    with the reason, the old model keeps answering, and the same refresh
 *    succeeds once the cap is lifted. */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- a server that accepts and never answers ---- */

static int g_hang_fd = -1, g_hang_port;
static int g_held[64];
static atomic_int g_n_held;
static atomic_bool g_hang_stop;
static pthread_t g_hang_th;

static void *hang_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_hang_stop)) {
        int c = accept(g_hang_fd, NULL, NULL);
        if (c < 0) continue;
        int i = atomic_fetch_add(&g_n_held, 1);
        if (i < 64) g_held[i] = c; /* held open, never read, never answered */
        else close(c);
    }
    return NULL;
}

static void hang_start(void)
{
    g_hang_fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(g_hang_fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(g_hang_fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(g_hang_fd, 64), 0);
    socklen_t l = sizeof a;
    assert_int_equal(getsockname(g_hang_fd, (struct sockaddr *)&a, &l), 0);
    g_hang_port = ntohs(a.sin_port);
    /* accept() wakes up now and then to see the stop flag */
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    setsockopt(g_hang_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    assert_int_equal(pthread_create(&g_hang_th, NULL, hang_main, NULL), 0);
}

static void hang_stop(void)
{
    atomic_store(&g_hang_stop, true);
    pthread_join(g_hang_th, NULL);
    int n = atomic_load(&g_n_held);
    for (int i = 0; i < n && i < 64; i++) close(g_held[i]);
    close(g_hang_fd);
}

/* ---- the kernel: the tiny model with a small KV cache, and the hung remote ---- */

static struct tiny_kernel g_tk;

static int group_setup(void **state)
{
    (void)state;
    hang_start();
    char extra[1024];
    snprintf(extra, sizeof extra,
             "      n_ctx: 512\n"
             "      kv_size: 512\n"
             "      n_parallel: 8\n"
             "      retain: false\n"
             "      prefix_share_min: 100000\n"
             "    - {name: hung, backend: openai-compatible, hostname: \"http://127.0.0.1:%d\", "
             "api_key: sk-test, timeout_s: 2, max_retries: 0}\n",
             g_hang_port);
    if (kf_start_tiny(&g_tk, "faults", extra)) return -1;
    g_kf = g_tk.kf;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    kf_stop_tiny(&g_tk);
    g_kf = NULL;
    hang_stop();
    return 0;
}

static json_t *engine_of(const char *model)
{
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "GET", "/status", NULL, &j), 200);
    json_t *found = NULL;
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(j, "models"), i, m) {
        if (!strcmp(json_string_value(json_object_get(m, "name")) ?: "", model))
            found = json_deep_copy(json_object_get(m, "engine"));
    }
    json_decref(j);
    assert_non_null(found);
    return found;
}

/* ---- a full KV cache ---- */

#define N_CONV 8
#define GEN_TOKENS 64

struct conv {
    int i;
    long status;
    char *text;
    int n_prompt, n_gen;
    const char *finish;
    char finish_buf[32];
};

static char *conv_body(int i)
{
    /* a prompt of its own per conversation (no shared prefix to save cells) */
    char words[4096];
    size_t o = 0;
    for (int w = 0; w < 25 && o < sizeof words - 32; w++)
        o += (size_t)snprintf(words + o, sizeof words - o, "w%d_%d ", i * 7 + w * 13, w);
    json_t *b = json_pack("{s:s,s:[{s:s,s:s}],s:i,s:i,s:f}", "model", "aios-tiny", "messages",
                          "role", "user", "content", words, "max_tokens", GEN_TOKENS, "seed", 100 + i,
                          "temperature", 0.8);
    char *s = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    return s;
}

static void *conv_main(void *arg)
{
    struct conv *c = arg;
    char *body = conv_body(c->i);
    json_t *j = NULL;
    c->status = kf_call(g_kf, "POST", "/v1/chat/completions", body, &j);
    free(body);
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
    const char *t = json_string_value(json_object_get(json_object_get(ch, "message"), "content"));
    c->text = strdup(t ? t : "");
    snprintf(c->finish_buf, sizeof c->finish_buf, "%s",
             json_string_value(json_object_get(ch, "finish_reason")) ?: "");
    c->finish = c->finish_buf;
    json_t *u = json_object_get(j, "usage");
    c->n_prompt = (int)json_integer_value(json_object_get(u, "prompt_tokens"));
    c->n_gen = (int)json_integer_value(json_object_get(u, "completion_tokens"));
    if (c->status != 200) {
        char *d = j ? json_dumps(j, 0) : NULL;
        fprintf(stderr, "conversation %d: %ld %s\n", c->i, c->status, d ? d : "");
        free(d);
    }
    json_decref(j);
    return NULL;
}

static void test_kv_cache_full(void **state)
{
    (void)state;
    json_t *e0 = engine_of("aios-tiny");
    int kv = (int)json_integer_value(json_object_get(e0, "kv_size"));
    json_int_t pre0 = json_integer_value(json_object_get(e0, "preemptions"));
    json_decref(e0);
    struct conv c[N_CONV];
    pthread_t th[N_CONV];
    for (int i = 0; i < N_CONV; i++) {
        c[i] = (struct conv){.i = i};
        assert_int_equal(pthread_create(&th[i], NULL, conv_main, &c[i]), 0);
    }
    for (int i = 0; i < N_CONV; i++) pthread_join(th[i], NULL);
    int need = 0;
    for (int i = 0; i < N_CONV; i++) {
        assert_int_equal(c[i].status, 200);
        /* the whole answer: every token asked for */
        assert_int_equal(c[i].n_gen, GEN_TOKENS);
        assert_string_equal(c[i].finish, "length");
        need += c[i].n_prompt + c[i].n_gen;
    }
    json_t *e1 = engine_of("aios-tiny");
    json_int_t pre1 = json_integer_value(json_object_get(e1, "preemptions"));
    json_decref(e1);
    print_message("%d conversations needed %d KV cells at once, the cache has %d; "
                  "%lld calls switched out\n", N_CONV, need, kv, (long long)(pre1 - pre0));
    assert_true(need > 2 * kv);    /* the fault was real */
    assert_true(pre1 - pre0 >= 1); /* and the engine made room by switching out */
    /* nothing lost: every answer is whole text (not asserted: that each
     * equals its solo run; under KV pressure cells are reused out of order
     * and a seeded answer may drift, docs/architecture.md "Determinism") */
    for (int i = 0; i < N_CONV; i++) {
        assert_true(strlen(c[i].text) > 0);
        free(c[i].text);
    }
    /* a prompt that can never fit: a 400 that says so */
    char *big = malloc(64 * 1024);
    size_t o = 0;
    for (int w = 0; w < 2000; w++) o += (size_t)snprintf(big + o, 64 * 1024 - o, "x%d ", w);
    json_t *b = json_pack("{s:s,s:[{s:s,s:s}]}", "model", "aios-tiny", "messages", "role", "user",
                          "content", big);
    free(big);
    char *s = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    json_t *j = NULL;
    long st = kf_call(g_kf, "POST", "/v1/chat/completions", s, &j);
    free(s);
    expect_status(st, 400, j);
    assert_error_body(j, "context of 512 tokens");
    json_decref(j);
    assert_int_equal(kf_call(g_kf, "GET", "/status", NULL, NULL), 200);
}

/* ---- an upstream that hangs ---- */

struct hung_call {
    const char *path, *body;
    long status;
    json_t *j;
};

static void *hung_main(void *arg)
{
    struct hung_call *h = arg;
    h->status = kf_call(g_kf, "POST", h->path, h->body, &h->j);
    return NULL;
}

static void test_upstream_hangs(void **state)
{
    (void)state;
    struct hung_call h[2] = {
        {"/v1/chat/completions", "{\"model\":\"hung\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 0, NULL},
        {"/query", "{\"agent_name\":\"waiter\",\"query_type\":\"llm\",\"query_data\":{\"llms\":"
                   "[{\"name\":\"hung\"}],\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}}", 0, NULL},
    };
    pthread_t th[2];
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&th[i], NULL, hung_main, &h[i]), 0);
    /* while they hang: the server accepted them, and the kernel serves others */
    for (int i = 0; i < 100 && atomic_load(&g_n_held) < 2; i++) usleep(20000);
    int held = atomic_load(&g_n_held);
    json_t *j = NULL;
    long s_status = kf_call(g_kf, "GET", "/status", NULL, NULL);
    long s_mem = kf_call(g_kf, "POST", "/query",
                         "{\"agent_name\":\"other\",\"query_type\":\"memory\",\"query_data\":"
                         "{\"operation_type\":\"add_memory\",\"params\":{\"content\":\"served during a hang\"}}}",
                         &j);
    json_decref(j);
    long s_chat = kf_call(g_kf, "POST", "/v1/chat/completions",
                          "{\"model\":\"aios-tiny\",\"max_tokens\":4,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                          &j);
    json_decref(j);
    /* were the hung calls still waiting while those were served? */
    bool during = h[0].status == 0 && h[1].status == 0;
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    assert_true(held >= 2);
    assert_true(during);
    assert_int_equal(s_status, 200);
    assert_int_equal(s_mem, 200);
    assert_int_equal(s_chat, 200);
    for (int i = 0; i < 2; i++) {
        expect_status(h[i].status, 504, h[i].j);
        assert_error_body(h[i].j, "timeout_s");
        json_decref(h[i].j);
    }
    /* and after */
    assert_int_equal(kf_call(g_kf, "POST", "/v1/chat/completions",
                             "{\"model\":\"aios-tiny\",\"max_tokens\":4,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                             &j), 200);
    json_decref(j);
}

/* ---- out of memory ---- */

static void write_config(const char *extra_model)
{
    FILE *f = fopen(g_tk.cfg, "w");
    assert_non_null(f);
    fprintf(f, "llms:\n"
               "  models:\n"
               "    - name: aios-tiny\n"
               "      backend: llamacpp\n"
               "      path: %s\n"
               "      n_threads: 1\n"
               "      n_ctx: 512\n"
               "      kv_size: 512\n"
               "      n_parallel: 8\n"
               "      retain: false\n"
               "      prefix_share_min: 100000\n"
               "    - {name: hung, backend: openai-compatible, hostname: \"http://127.0.0.1:%d\", "
               "api_key: sk-test, timeout_s: 2, max_retries: 0}\n%s",
            g_tk.model, g_hang_port, extra_model ? extra_model : "");
    fclose(f);
}

static long vm_kib(pid_t pid)
{
    char p[64], line[256];
    snprintf(p, sizeof p, "/proc/%d/status", (int)pid);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmSize:", 7)) v = strtol(line + 7, NULL, 10);
    fclose(f);
    return v;
}

static json_t *change_of(json_t *j, const char *name)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(j, "changes"), i, c) {
        char *d = json_dumps(c, JSON_COMPACT);
        bool hit = d && strstr(d, name);
        free(d);
        if (hit) return c;
    }
    return NULL;
}

static void test_out_of_memory(void **state)
{
    (void)state;
#if defined(__SANITIZE_ADDRESS__)
    /* AddressSanitizer's allocator aborts the process on a failed
     * allocation instead of returning NULL (allocator_may_return_null=0),
     * and its shadow memory makes an address-space cap meaningless */
    print_message("sanitizer build: out-of-memory test skipped\n");
    skip();
#endif
    pid_t pid = g_kf->child.pid;
    /* 2,000,000 KV cells of the tiny model (2 layers x K,V x 32 x f16 =
     * 256 bytes a cell): 488 MiB, where the cap leaves 256 MiB */
    const char *big = "    - {name: big, backend: llamacpp, path: %s, n_threads: 1, n_ctx: 512, "
                      "kv_size: 2000000, n_parallel: 1}\n";
    char model[1024];
    snprintf(model, sizeof model, big, g_tk.model);
    write_config(model);
    long vm = vm_kib(pid);
    struct rlimit cap = {.rlim_cur = (rlim_t)(vm + 256 * 1024) * 1024, .rlim_max = RLIM_INFINITY};
    struct rlimit old;
    assert_int_equal(prlimit(pid, RLIMIT_AS, &cap, &old), 0);
    json_t *j = NULL;
    long st = kf_call(g_kf, "POST", "/core/refresh", "{}", &j);
    /* lift the cap before asserting anything */
    assert_int_equal(prlimit(pid, RLIMIT_AS, &old, NULL), 0);
    char *d = j ? json_dumps(j, JSON_COMPACT) : NULL;
    print_message("refresh under a %ld MiB address-space cap: %ld %s\n", (vm >> 10) + 256, st, d ? d : "");
    free(d);
    assert_true(st == 200 || (st >= 400 && st < 600));
    assert_true(j != NULL);
    json_t *c = change_of(j, "big");
    assert_non_null(c);
    assert_true(json_is_false(json_object_get(c, "applied")));
    assert_non_null(strstr(json_string_value(json_object_get(c, "note")), "out of memory?"));
    json_decref(j);
    /* the kernel keeps serving, with its old model, and has no "big" */
    assert_int_equal(kf_call(g_kf, "POST", "/v1/chat/completions",
                             "{\"model\":\"aios-tiny\",\"max_tokens\":4,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                             &j), 200);
    json_decref(j);
    assert_int_equal(kf_call(g_kf, "POST", "/v1/chat/completions",
                             "{\"model\":\"big\",\"max_tokens\":4,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                             &j), 404);
    json_decref(j);
    /* the same refresh without the cap: the model loads (the failure was memory) */
    assert_int_equal(kf_call(g_kf, "POST", "/core/refresh", "{}", &j), 200);
    c = change_of(j, "big");
    assert_non_null(c);
    assert_true(json_is_true(json_object_get(c, "applied")));
    json_decref(j);
    assert_int_equal(kf_call(g_kf, "POST", "/v1/chat/completions",
                             "{\"model\":\"big\",\"max_tokens\":4,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                             &j), 200);
    json_decref(j);
    write_config(NULL);
    assert_int_equal(kf_call(g_kf, "POST", "/core/refresh", "{}", &j), 200);
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv_cache_full),
        cmocka_unit_test(test_upstream_hangs),
        cmocka_unit_test(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
