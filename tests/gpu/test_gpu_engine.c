/* GPU tests of the embedded engine (llm/llama.c, llm/gpu.c), built only in
 * a GPU variant (make GPU=vulkan; make gpu-test runs them on the first
 * Vulkan device, Mesa's lavapipe where there is no GPU). They drive real
 * llama.cpp on the tiny random-weight test model through the scheduler, as
 * tests/unit/test_engine.c does on the CPU:
 * - with the default knobs every layer and the KV cache go to the device,
 *   and the placement that GET /status shows says so; n_gpu_layers: 0
 *   keeps everything on the CPU;
 * - a greedy call answers and gives the same tokens in two fresh engines
 *   (and is compared with the CPU build's tokens: printed, not asserted,
 *   as the device's numerics differ);
 * - a call switched out every few tokens (KV state from the device to RAM,
 *   or to disk, and back) gives exactly the tokens of an uninterrupted run;
 * - gpu_mem_bytes bounds the KV budget: kv_size is cut to what fits beside
 *   the weights, and two calls that need more cells than that run to the
 *   end through a switch out and back (whether each gives its lone tokens
 *   is printed: batched with another, a device's attention may sum a
 *   sequence's cells in other groups, so rounding may differ);
 * - the embedding model goes to the device by default, gives the same
 *   vector for the same text, and about the CPU's (cosine printed);
 * - bad offload knobs are refused with the field in the message. */
#include "kernel/config.h"
#include "llm/core.h"
#include "llm/embed.h"
#include "llm/engine.h"
#include "llm/gpu.h"
#include "llm/testmodel.h"
#include "sched/sched.h"
#include "util/err.h"
#include "util/util.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static char g_dir[256], g_model[300];
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;

struct eng {
    struct aios_config cfg;
    struct sched *sched;
    struct llm_core *core;
};

static int eng_try(struct eng *t, int n_ctx, const char *knobs, const char *extra_top, bool start,
                   char *err, size_t errlen)
{
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "llms:\n  models:\n    - name: t\n      backend: llamacpp\n      path: %s\n"
             "      n_ctx: %d\n      n_threads: 1\n%s%s\ndata_dir: %s\n",
             g_model, n_ctx, knobs ? knobs : "", extra_top ? extra_top : "", g_dir);
    assert_int_equal(config_load_string(&t->cfg, yaml, strlen(yaml), err, errlen), 0);
    int rc = llm_llama_create(&t->core, &t->cfg.models[0], &t->cfg, err, errlen);
    if (rc) {
        config_free(&t->cfg);
        return rc;
    }
    assert_int_equal(sched_create(&t->sched, NULL), 0);
    if (start) assert_int_equal(t->core->ops->start(t->core, t->sched), 0);
    return 0;
}

static void eng_create(struct eng *t, int n_ctx, const char *knobs, const char *extra_top, bool start)
{
    char err[512] = "";
    if (eng_try(t, n_ctx, knobs, extra_top, start, err, sizeof err))
        fail_msg("llm_llama_create: %s", err);
}

static void eng_start(struct eng *t) { assert_int_equal(t->core->ops->start(t->core, t->sched), 0); }

static void eng_open(struct eng *t, const char *knobs, const char *extra_top)
{
    eng_create(t, 512, knobs, extra_top, true);
}

static void eng_close(struct eng *t)
{
    sched_shutdown(t->sched);
    t->core->ops->stop(t->core);
    t->core->ops->destroy(t->core);
    sched_destroy(t->sched);
    config_free(&t->cfg);
}

static void on_notify(struct syscall *sc, void *ud)
{
    (void)sc;
    (void)ud;
    pthread_mutex_lock(&g_mu);
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

static struct syscall *submit(struct eng *t, const char *user, int max_tokens)
{
    struct llm_req *req = calloc(1, sizeof *req);
    assert_non_null(req);
    req->model = strdup("t");
    req->msgs = calloc(1, sizeof *req->msgs);
    req->msgs[0].role = strdup("user");
    req->msgs[0].content = strdup(user);
    req->n_msgs = 1;
    req->p.max_tokens = max_tokens;
    req->p.temperature = 0.0f; /* greedy */
    req->p.top_p = 1.0f;
    req->p.has_seed = true;
    req->p.seed = 1;
    char err[256];
    assert_int_equal(t->core->ops->prepare(t->core, req, err, sizeof err), 0);
    struct syscall *sc = syscall_new(SYSCALL_KIND_LLM, "a", t->core, req, llm_req_free);
    assert_non_null(sc);
    sc->notify = on_notify;
    assert_int_equal(sched_submit(t->sched, sc), 0);
    return sc;
}

static struct llm_res *run(struct syscall *sc)
{
    pthread_mutex_lock(&g_mu);
    for (;;) {
        pthread_mutex_lock(&sc->mu);
        enum syscall_status st = sc->status;
        pthread_mutex_unlock(&sc->mu);
        if (syscall_status_final(st)) break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&g_cv, &g_mu, &ts);
    }
    pthread_mutex_unlock(&g_mu);
    if (sc->status != SYSCALL_STATUS_DONE) fail_msg("call failed: %s", sc->errmsg);
    return sc->res;
}

static char *run_text(struct eng *t, const char *user, int max_tokens, int *n_gen)
{
    struct syscall *sc = submit(t, user, max_tokens);
    struct llm_res *r = run(sc);
    char *s = strdup(r->text);
    if (n_gen) *n_gen = r->n_gen;
    syscall_unref(sc);
    return s;
}

static void stats_after(struct eng *t, uint64_t n_calls, struct llm_engine_stats *st)
{
    for (int i = 0; i < 4000; i++) {
        llm_engine_get_stats(t->core, st);
        if (st->n_calls >= n_calls && st->n_running == 0) return;
        usleep(1000);
    }
    fail_msg("the engine did not publish call %llu", (unsigned long long)n_calls);
}

/* the engine's "placement" object (what GET /status shows under models[]) */
static json_t *placement(struct eng *t)
{
    json_t *o = json_object();
    t->core->ops->describe(t->core, o);
    json_t *p = json_incref(json_object_get(o, "placement"));
    json_decref(o);
    assert_non_null(p);
    return p;
}

static long long pnum(json_t *p, const char *k)
{
    json_t *v = json_object_get(p, k);
    if (!json_is_integer(v)) fail_msg("placement.%s missing", k);
    return json_integer_value(v);
}

static const char *PROMPT = "count from one to one hundred, slowly";

/* ---- tests ---- */

static void test_devices_and_offload(void **state)
{
    (void)state;
    assert_true(gpu_device_count() >= 1);
    json_t *devs = gpu_devices_json();
    size_t i;
    json_t *d;
    int n_gpu = 0;
    json_array_foreach(devs, i, d) {
        const char *ty = json_string_value(json_object_get(d, "type"));
        print_message("device %s (%s): %s, %lld of %lld bytes free\n",
                      json_string_value(json_object_get(d, "name")), ty,
                      json_string_value(json_object_get(d, "description")),
                      (long long)json_integer_value(json_object_get(d, "memory_free")),
                      (long long)json_integer_value(json_object_get(d, "memory_total")));
        if (!strcmp(ty, "gpu") || !strcmp(ty, "igpu")) {
            n_gpu++;
            assert_true(json_integer_value(json_object_get(d, "memory_total")) > 0);
        }
    }
    assert_true(n_gpu >= 1);
    json_decref(devs);

    struct eng t;
    eng_open(&t, NULL, NULL);
    json_t *p = placement(&t);
    assert_int_equal(pnum(p, "layers_offloaded"), pnum(p, "n_layer"));
    assert_true(json_is_true(json_object_get(p, "output_offloaded")));
    assert_int_equal(json_array_size(json_object_get(p, "devices")), 1);
    assert_string_equal(json_string_value(json_array_get(json_object_get(p, "devices"), 0)),
                        ggml_backend_dev_name(gpu_device(0)));
    assert_true(json_is_true(json_object_get(p, "kv_on_device")));
    assert_int_equal(pnum(p, "model_bytes_on_device"), pnum(p, "model_bytes"));
    assert_true(pnum(p, "kv_bytes") > 0);
    assert_int_equal(pnum(p, "kv_bytes_on_device"), pnum(p, "kv_bytes"));
    json_decref(p);
    int n_gen = 0;
    char *s = run_text(&t, PROMPT, 16, &n_gen);
    assert_int_equal(n_gen, 16);
    free(s);
    eng_close(&t);

    /* n_gpu_layers: 0 keeps everything on the CPU; 1 offloads one layer */
    eng_open(&t, "      n_gpu_layers: 0\n", NULL);
    p = placement(&t);
    assert_int_equal(pnum(p, "layers_offloaded"), 0);
    assert_int_equal(json_array_size(json_object_get(p, "devices")), 0);
    assert_false(json_is_true(json_object_get(p, "kv_on_device")));
    assert_int_equal(pnum(p, "model_bytes_on_device"), 0);
    json_decref(p);
    eng_close(&t);
    eng_open(&t, "      n_gpu_layers: 1\n      offload_kqv: false\n", NULL);
    p = placement(&t);
    assert_int_equal(pnum(p, "layers_offloaded"), 1);
    assert_false(json_is_true(json_object_get(p, "output_offloaded")));
    assert_false(json_is_true(json_object_get(p, "kv_on_device")));
    json_decref(p);
    s = run_text(&t, PROMPT, 8, &n_gen);
    assert_int_equal(n_gen, 8);
    free(s);
    eng_close(&t);
}

static void test_greedy_deterministic(void **state)
{
    (void)state;
    struct eng t;
    char *a[2];
    for (int k = 0; k < 2; k++) {
        eng_open(&t, "      retain: false\n", NULL);
        int n_gen = 0;
        a[k] = run_text(&t, PROMPT, 48, &n_gen);
        assert_int_equal(n_gen, 48);
        eng_close(&t);
    }
    assert_string_equal(a[0], a[1]);
    eng_open(&t, "      retain: false\n      n_gpu_layers: 0\n", NULL);
    char *cpu = run_text(&t, PROMPT, 48, NULL);
    eng_close(&t);
    size_t same = 0;
    while (cpu[same] && cpu[same] == a[0][same]) same++;
    print_message("device and CPU agree on the first %zu of %zu bytes of the answer\n", same,
                  strlen(cpu));
    free(cpu);
    free(a[0]);
    free(a[1]);
}

static void test_switch_token_exact(void **state)
{
    (void)state;
    struct eng t;
    eng_open(&t, "      retain: false\n", NULL);
    char *ref = run_text(&t, PROMPT, 60, NULL);
    eng_close(&t);

    /* switched out every 7 tokens: the device's KV state to RAM and back */
    eng_open(&t, "      retain: false\n      debug_preempt_every_tokens: 7\n", NULL);
    char *got = run_text(&t, PROMPT, 60, NULL);
    struct llm_engine_stats st;
    stats_after(&t, 1, &st);
    assert_string_equal(got, ref);
    assert_true(st.n_preemptions >= 5);
    assert_int_equal(st.n_resumes, st.n_preemptions);
    assert_true(st.snaps.n_saved >= 5);
    assert_int_equal(st.snaps.n_spilled, 0);
    free(got);
    eng_close(&t);

    /* with no RAM for snapshots: through files and back */
    eng_open(&t, "      retain: false\n      debug_preempt_every_tokens: 5\n",
             "context:\n  snapshot_ram_bytes: 0\n  spill_dir: spill\n");
    got = run_text(&t, PROMPT, 60, NULL);
    stats_after(&t, 1, &st);
    assert_string_equal(got, ref);
    assert_true(st.snaps.n_spilled >= 5);
    assert_int_equal(st.snaps.bytes_disk, 0);
    free(got);
    eng_close(&t);
    free(ref);
}

static void test_kv_budget_device_memory(void **state)
{
    (void)state;
    enum { N_CTX = 512, GEN = 420 };
    struct eng t;
    /* what the model takes on the device without a cap */
    eng_open(&t, "      retain: false\n      n_batch: 64\n", NULL);
    json_t *p = placement(&t);
    long long fixed = pnum(p, "model_bytes_on_device") + pnum(p, "compute_reserve_bytes");
    long long cell = pnum(p, "cell_bytes");
    long long kv_default = pnum(p, "kv_bytes") / cell;
    assert_false(json_is_true(json_object_get(p, "kv_size_limited_by_device")));
    json_decref(p);
    /* the same answers alone, for the comparison below */
    char *alone[2];
    const char *users[2] = {PROMPT, "list every prime number you know"};
    for (int i = 0; i < 2; i++) alone[i] = run_text(&t, users[i], GEN, NULL);
    eng_close(&t);
    assert_true(kv_default >= 4 * N_CTX);

    /* room for 768 cells (and a little): kv_size is cut to them */
    char knobs[256];
    snprintf(knobs, sizeof knobs,
             "      retain: false\n      n_batch: 64\n      n_parallel: 2\n      gpu_mem_bytes: %lld\n",
             fixed + 800 * cell);
    eng_create(&t, N_CTX, knobs, NULL, false);
    p = placement(&t);
    assert_true(json_is_true(json_object_get(p, "kv_size_limited_by_device")));
    assert_int_equal(pnum(p, "kv_cells_device_max"), 768);
    assert_int_equal(pnum(p, "kv_bytes"), 768 * cell);
    json_decref(p);
    struct llm_engine_stats st;
    llm_engine_get_stats(t.core, &st);
    assert_int_equal(st.kv_size, 768);

    /* two calls of ~450 cells each: one is switched out, resumed later */
    struct syscall *sc[2];
    for (int i = 0; i < 2; i++) sc[i] = submit(&t, users[i], GEN);
    eng_start(&t);
    int n_same = 0;
    for (int i = 0; i < 2; i++) {
        struct llm_res *r = run(sc[i]);
        assert_int_equal(r->n_gen, GEN);
        n_same += !strcmp(r->text, alone[i]);
        syscall_unref(sc[i]);
    }
    stats_after(&t, 2, &st);
    print_message("kv_size 768: %llu preemptions, %llu resumes, %llu snapshots; %d of 2 answers "
                  "equal to the lone runs\n", (unsigned long long)st.n_preemptions,
                  (unsigned long long)st.n_resumes, (unsigned long long)st.snaps.n_saved, n_same);
    assert_true(st.n_preemptions >= 1);
    assert_int_equal(st.n_resumes, st.n_preemptions);
    eng_close(&t);
    for (int i = 0; i < 2; i++) free(alone[i]);

    /* a cap under one sequence's KV cache is refused, naming the model */
    snprintf(knobs, sizeof knobs, "      gpu_mem_bytes: %lld\n", fixed + 100 * cell);
    char err[512] = "";
    assert_int_equal(eng_try(&t, N_CTX, knobs, NULL, false, err, sizeof err), AIOS_ECONFIG);
    print_message("%s\n", err);
    assert_non_null(strstr(err, "llms.models[0]"));
    assert_non_null(strstr(err, "device memory"));
}

static void test_embedding_on_device(void **state)
{
    (void)state;
    char path[400], yaml[1024], err[512] = "";
    snprintf(path, sizeof path, "%s/embed.gguf", g_dir);
    assert_int_equal(testmodel_create(path, TESTMODEL_SHAPE_EMBED, 0, 2, err, sizeof err), 0);
    float *v[3];
    for (int k = 0; k < 2; k++) {
        /* k 0: the defaults (all layers on the device); k 1: n_gpu_layers 0 */
        snprintf(yaml, sizeof yaml, "embedding:\n  model: %s\n%s", path,
                 k ? "  n_gpu_layers: 0\n" : "");
        struct aios_config cfg;
        assert_int_equal(config_load_string(&cfg, yaml, strlen(yaml), err, sizeof err), 0);
        struct emb_opts o;
        assert_int_equal(emb_opts_from_config(&cfg, &o, err, sizeof err), 0);
        struct emb *e;
        if (emb_open(&e, &o, err, sizeof err)) fail_msg("emb_open: %s", err);
        json_t *d = emb_describe(e);
        json_t *p = json_object_get(d, "placement");
        assert_non_null(p);
        assert_int_equal(pnum(p, "layers_offloaded"), k ? 0 : pnum(p, "n_layer"));
        assert_int_equal(json_array_size(json_object_get(p, "devices")), k ? 0 : 1);
        json_decref(d);
        int dim = emb_dim(e);
        const char *text = "the quick brown fox jumps over the lazy dog";
        v[k] = calloc((size_t)dim, sizeof(float));
        assert_int_equal(emb_text(e, text, strlen(text), v[k]), 0);
        if (k == 0) {
            v[2] = calloc((size_t)dim, sizeof(float));
            assert_int_equal(emb_text(e, text, strlen(text), v[2]), 0);
            assert_memory_equal(v[0], v[2], (size_t)dim * sizeof(float));
        }
        double dot = 0;
        for (int i = 0; i < dim && k == 1; i++) dot += (double)v[0][i] * v[1][i];
        if (k == 1) print_message("embedding: device vs CPU cosine %.6f\n", dot);
        emb_close(e);
        emb_opts_free(&o);
        config_free(&cfg);
    }
    for (int k = 0; k < 3; k++) free(v[k]);
}

static void test_bad_knobs(void **state)
{
    (void)state;
    static const struct {
        const char *knobs, *want;
    } cases[] = {
        {"      n_gpu_layers: many\n", "llms.models[0].n_gpu_layers"},
        {"      n_gpu_layers: -2\n", "llms.models[0].n_gpu_layers"},
        {"      main_gpu: 99\n", "llms.models[0].main_gpu"},
        {"      main_gpu: 15\n", "llms.models[0].main_gpu"},
        {"      split_mode: tensor\n", "llms.models[0].split_mode"},
        {"      tensor_split: [0, 0]\n", "llms.models[0].tensor_split"},
        {"      tensor_split: 3\n", "llms.models[0].tensor_split"},
        {"      tensor_split: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n",
         "llms.models[0].tensor_split"},
        {"      offload_kqv: 1\n", "llms.models[0].offload_kqv"},
        {"      gpu_mem_bytes: 10\n", "llms.models[0].gpu_mem_bytes"},
    };
    /* the embedding model's knobs too */
    char yaml[512], err[512] = "";
    snprintf(yaml, sizeof yaml, "embedding:\n  model: %s\n  split_mode: rows\n", g_model);
    struct aios_config cfg;
    assert_int_equal(config_load_string(&cfg, yaml, strlen(yaml), err, sizeof err), 0);
    struct emb_opts eo;
    assert_int_equal(emb_opts_from_config(&cfg, &eo, err, sizeof err), AIOS_ECONFIG);
    assert_non_null(strstr(err, "embedding.split_mode"));
    emb_opts_free(&eo);
    config_free(&cfg);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct eng t;
        char err[512] = "";
        assert_int_equal(eng_try(&t, 512, cases[i].knobs, NULL, true, err, sizeof err), AIOS_ECONFIG);
        if (!strstr(err, cases[i].want)) fail_msg("%s: got '%s'", cases[i].knobs, err);
    }
}

static int group_setup(void **state)
{
    (void)state;
    /* Mesa's lavapipe is a CPU device, which ggml's Vulkan backend lists
     * only when asked for: the first device, unless the caller chose */
    setenv("GGML_VK_VISIBLE_DEVICES", "0", 0);
    const char *t = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/aios-gpu-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(g_dir)) return -1;
    snprintf(g_model, sizeof g_model, "%s/tiny.gguf", g_dir);
    char err[256];
    llm_llama_global_init();
    return testmodel_create(g_model, TESTMODEL_SHAPE_TINY, 0, 2, err, sizeof err) ? -1 : 0;
}

static int group_teardown(void **state)
{
    (void)state;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_knobs),
        cmocka_unit_test(test_devices_and_offload),
        cmocka_unit_test(test_greedy_deterministic),
        cmocka_unit_test(test_switch_token_exact),
        cmocka_unit_test(test_kv_budget_device_memory),
        cmocka_unit_test(test_embedding_on_device),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
