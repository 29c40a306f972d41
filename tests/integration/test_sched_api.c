/* Integration: the scheduler through real HTTP. Per-call priorities (the
 * X-Aios-Priority header and the body field, on OpenAI chat and /query)
 * change the order in which the real engine serves queued calls; bad
 * priorities are 400s naming the field; GET /agents/{id}/stats accounts
 * calls, tokens and times; GET /metrics is valid Prometheus text (HELP and
 * TYPE before every family, label values escaped). */
#include "harness.h"

#include "util/util.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char g_cfg[64];

/* A config on the built-in model with one sequence slot, so calls queue in
 * the scheduler rather than all joining the batch; `slice_ms` is the fair
 * policy's minimum run before it preempts. Returns the fixture. */
static struct kernel_fixture *start_kernel(char *cfg_path, size_t n, int slice_ms)
{
    char *cache = util_cache_dir();
    snprintf(cfg_path, n, "/tmp/aios-it-sched-XXXXXX");
    int fd = mkstemp(cfg_path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f,
            "llms:\n  models:\n    - name: aios-tiny\n      backend: llamacpp\n"
            "      path: \"%s/models/aios-test-tiny-seed0.gguf\"\n      n_parallel: 1\n"
            "scheduler:\n  policy: fair\n  time_slice_ms: %d\n"
            "  priorities: {vip: 5, \"batch\": -2}\n",
            cache, slice_ms);
    fclose(f);
    free(cache);
    const char *extra[] = {"--config", cfg_path, NULL};
    return kf_start(extra);
}

static int group_setup(void **state)
{
    (void)state;
    /* make sure the built-in model exists (the first start creates it) */
    struct kernel_fixture *warm = kf_start(NULL);
    kf_stop(warm);
    /* no preemption here: a one-hour minimum slice */
    g_kf = start_kernel(g_cfg, sizeof g_cfg, 3600000);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    kf_stop(g_kf);
    unlink(g_cfg);
    return 0;
}

static int on_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void)a, (void)b, (void)c, (void)d;
    return ud && __atomic_load_n((int *)ud, __ATOMIC_ACQUIRE) ? 1 : 0;
}

/* POST with one extra header (may be NULL); gives up (status 0) once
 * *abort becomes non-zero */
static long post_hdr_abort(const char *path, const char *body, const char *hdr, json_t **out,
                           int *abort)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", g_kf->child.base, path);
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (hdr) h = curl_slist_append(h, hdr);
    char auth[300]; /* the access manager wants the kernel's admin token */
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", g_kf->child.token);
    h = curl_slist_append(h, auth);
    struct util_buf b = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, util_buf_sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 300L);
    if (abort) {
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, abort);
    }
    long st = 0;
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (out) *out = b.s ? json_loads(b.s, 0, NULL) : NULL;
    free(b.s);
    return st;
}

static long post_hdr(const char *path, const char *body, const char *hdr, json_t **out)
{
    return post_hdr_abort(path, body, hdr, out, NULL);
}

static json_t *stats(const char *agent, long want)
{
    char path[256];
    snprintf(path, sizeof path, "/agents/%s/stats", agent);
    json_t *j = NULL;
    long st = kf_call(g_kf, "GET", path, NULL, &j);
    if (st != want) fail_msg("GET %s: %ld, wanted %ld", path, st, want);
    return j;
}

static json_int_t jint(json_t *o, const char *a, const char *b)
{
    json_t *v = json_object_get(o, a);
    if (b) v = json_object_get(v, b);
    if (!json_is_integer(v)) fail_msg("%s.%s is not an integer", a, b ? b : "");
    return json_integer_value(v);
}

static void test_stats_accounting(void **state)
{
    (void)state;
    int64_t prompt = 0, gen = 0;
    for (int i = 0; i < 2; i++) {
        json_t *j = NULL;
        const char *body = "{\"model\":\"aios-tiny\",\"user\":\"alice\",\"max_tokens\":5,"
                           "\"temperature\":0,\"messages\":[{\"role\":\"user\",\"content\":"
                           "\"count the agents\"}]}";
        long st = post_hdr("/v1/chat/completions", body, i ? "X-Aios-Priority: 3" : NULL, &j);
        assert_int_equal(st, 200);
        json_t *u = json_object_get(j, "usage");
        prompt += jint(u, "prompt_tokens", NULL);
        gen += jint(u, "completion_tokens", NULL);
        json_decref(j);
    }
    json_t *s = stats("alice", 200);
    assert_string_equal(json_string_value(json_object_get(s, "agent")), "alice");
    assert_int_equal(jint(s, "calls", "total"), 2);
    assert_int_equal(jint(s, "calls", "done"), 2);
    assert_int_equal(jint(json_object_get(s, "calls"), "by_kind", "llm"), 2);
    /* the one-sequence engine prefills every prompt token */
    assert_int_equal(jint(s, "tokens", "prompt_computed") + jint(s, "tokens", "prompt_reused"),
                     prompt);
    assert_int_equal(jint(s, "tokens", "generated"), gen);
    json_t *t = json_object_get(s, "time_s");
    assert_true(json_real_value(json_object_get(t, "engine")) > 0);
    assert_true(json_real_value(json_object_get(t, "queue_wait")) >= 0);
    assert_int_equal(jint(s, "queued", NULL), 0);
    assert_int_equal(jint(s, "running", NULL), 0);
    assert_true(json_real_value(json_object_get(s, "service")) > 0);
    json_decref(s);
    /* alice's conversation stays in the KV cache after her calls: the
     * engine reports the bytes it holds (asynchronously, so poll) */
    json_int_t kvb = 0;
    for (int i = 0; i < 50 && kvb <= 0; i++) {
        s = stats("alice", 200);
        kvb = jint(s, "kv_bytes", NULL);
        json_decref(s);
        if (kvb <= 0) usleep(100000);
    }
    assert_true(kvb > 0);
    assert_true(kvb < (prompt + gen) * (1 << 20));

    /* agents named in scheduler.priorities exist with their priority */
    s = stats("vip", 200);
    assert_int_equal(jint(s, "priority", NULL), 5);
    assert_int_equal(jint(s, "calls", "total"), 0);
    json_decref(s);
    s = stats("nobody-at-all", 404);
    assert_error_body(s, "nobody-at-all");
    json_decref(s);
}

static void test_bad_priority(void **state)
{
    (void)state;
    const char *chat = "{\"model\":\"aios-tiny\",\"max_tokens\":2,\"priority\":%s,"
                       "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    const char *bad[] = {"\"high\"", "101", "1.5"};
    for (int i = 0; i < 3; i++) {
        char body[256];
        snprintf(body, sizeof body, chat, bad[i]);
        json_t *j = NULL;
        assert_int_equal(post_hdr("/v1/chat/completions", body, NULL, &j), 400);
        assert_error_body(j, "'priority'");
        json_decref(j);
    }
    json_t *j = NULL;
    const char *ok = "{\"model\":\"aios-tiny\",\"max_tokens\":2,"
                     "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    assert_int_equal(post_hdr("/v1/chat/completions", ok, "X-Aios-Priority: soon", &j), 400);
    assert_error_body(j, "X-Aios-Priority");
    json_decref(j);
    const char *q = "{\"agent_name\":\"q\",\"query_type\":\"llm\",\"priority\":\"x\","
                    "\"query_data\":{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}}";
    assert_int_equal(post_hdr("/query", q, NULL, &j), 400);
    assert_error_body(j, "'priority'");
    json_decref(j);
    /* the kernel keeps serving */
    assert_int_equal(post_hdr("/v1/chat/completions", ok, "X-Aios-Priority: -7", &j), 200);
    json_decref(j);
}

/* A long call occupies the engine; then a normal, a low-priority (from
 * the config) and a high-priority call queue behind it, in that order.
 * When the long call's client goes away (so its end does not depend on the
 * machine's speed), the engine must take them by priority. */
struct qcall {
    const char *agent;
    int max_tokens;
    const char *prio; /* top-level field value, or NULL */
    const char *hdr;
    int *abort;
    long status;
    double start, end;
};

static void *qcall_main(void *p)
{
    struct qcall *c = p;
    char body[1024];
    snprintf(body, sizeof body,
             "{\"agent_name\":\"%s\",\"query_type\":\"llm\"%s%s,\"query_data\":{\"messages\":"
             "[{\"role\":\"user\",\"content\":\"plan the next step\"}],\"max_new_tokens\":%d,"
             "\"temperature\":0}}",
             c->agent, c->prio ? ",\"priority\":" : "", c->prio ? c->prio : "", c->max_tokens);
    json_t *j = NULL;
    c->status = post_hdr_abort("/query", body, c->hdr, &j, c->abort);
    c->start = json_real_value(json_array_get(json_object_get(j, "start_times"), 0));
    c->end = json_real_value(json_array_get(json_object_get(j, "end_times"), 0));
    json_decref(j);
    return NULL;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* wait until /status shows `queued` llm calls waiting and one running */
static bool wait_queued(int queued, int timeout_ms)
{
    for (int t = 0; t < timeout_ms; t += 20) {
        json_t *j = NULL;
        assert_int_equal(kf_call(g_kf, "GET", "/status", NULL, &j), 200);
        json_t *sch = json_object_get(j, "scheduler");
        json_int_t q = json_integer_value(json_object_get(json_object_get(sch, "queued"), "llm"));
        json_int_t r = json_integer_value(json_object_get(json_object_get(sch, "running"), "llm"));
        json_decref(j);
        if (q == queued && r == 1) return true;
        sleep_ms(20);
    }
    return false;
}

/* the hog streams, so its client going away cancels it at the next token */
static void *hog_main(void *p)
{
    int *abort = p;
    const char *body = "{\"model\":\"aios-tiny\",\"user\":\"hog\",\"stream\":true,"
                       "\"max_tokens\":3000,\"temperature\":0,\"messages\":[{\"role\":"
                       "\"user\",\"content\":\"write a long essay\"}]}";
    post_hdr_abort("/v1/chat/completions", body, NULL, NULL, abort);
    return NULL;
}

static void test_priority_order(void **state)
{
    (void)state;
    int abort_hog = 0;
    struct qcall calls[4] = {
        {"hog", 0, NULL, NULL, NULL, 0, 0, 0},
        {"plain", 2, NULL, NULL, NULL, 0, 0, 0},
        {"batch", 2, NULL, NULL, NULL, 0, 0, 0},             /* -2 from config */
        {"urgent", 2, "9", "X-Aios-Priority: 9", NULL, 0, 0, 0}, /* header and body agree */
    };
    pthread_t th[4];
    pthread_create(&th[0], NULL, hog_main, &abort_hog);
    assert_true(wait_queued(0, 60000));
    for (int i = 1; i < 4; i++) {
        pthread_create(&th[i], NULL, qcall_main, &calls[i]);
        assert_true(wait_queued(i, 60000)); /* arrival order is known */
    }
    __atomic_store_n(&abort_hog, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    for (int i = 1; i < 4; i++) assert_int_equal(calls[i].status, 200);
    /* arrival order plain, batch, urgent; service order urgent, plain, batch */
    if (!(calls[3].end <= calls[1].start && calls[1].end <= calls[2].start))
        fail_msg("order: urgent %.3f-%.3f plain %.3f-%.3f batch %.3f-%.3f", calls[3].start,
                 calls[3].end, calls[1].start, calls[1].end, calls[2].start, calls[2].end);
    json_t *s = stats("hog", 200);
    assert_int_equal(jint(s, "calls", "cancelled"), 1);
    json_decref(s);
}

/* fair with a 100 ms slice on a one-slot engine: a high-priority call
 * arriving while a long call runs gets the slot (the long call is switched
 * out through a KV snapshot and resumes afterwards) */
static void test_preemption(void **state)
{
    (void)state;
    struct kernel_fixture *saved = g_kf;
    char cfg[64];
    g_kf = start_kernel(cfg, sizeof cfg, 100);
    int abort_hog = 0;
    pthread_t hog;
    pthread_create(&hog, NULL, hog_main, &abort_hog);
    assert_true(wait_queued(0, 60000));
    struct qcall urgent = {"urgent", 2, "9", NULL, NULL, 0, 0, 0};
    qcall_main(&urgent);
    assert_int_equal(urgent.status, 200);
    /* the hog is still there (running again, or switched out) */
    /* (the urgent call leaves the running count just after its answer) */
    assert_true(wait_queued(0, 5000));
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "GET", "/status", NULL, &j), 200);
    json_t *sch = json_object_get(j, "scheduler");
    assert_true(json_integer_value(json_object_get(sch, "preempted")) >= 1);
    json_decref(j);
    json_t *s = stats("hog", 200);
    assert_int_equal(jint(s, "calls", "done") + jint(s, "calls", "cancelled"), 0);
    assert_int_equal(jint(s, "running", NULL), 1);
    json_decref(s);
    __atomic_store_n(&abort_hog, 1, __ATOMIC_RELEASE);
    pthread_join(hog, NULL);
    /* the switch is accounted once the hog ends */
    for (int i = 0; i < 200; i++) {
        s = stats("hog", 200);
        json_int_t c = jint(s, "calls", "cancelled");
        json_int_t cs = jint(s, "context_switches", NULL);
        json_decref(s);
        if (c == 1) {
            assert_true(cs >= 1);
            break;
        }
        assert_true(i < 199);
        sleep_ms(50);
    }
    kf_stop(g_kf);
    unlink(cfg);
    g_kf = saved;
}

static void test_metrics(void **state)
{
    (void)state;
    /* an agent name that needs escaping */
    json_t *j = NULL;
    const char *body = "{\"model\":\"aios-tiny\",\"user\":\"we\\\"ird\\\\name\",\"max_tokens\":3,"
                       "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    assert_int_equal(post_hdr("/v1/chat/completions", body, NULL, &j), 200);
    json_decref(j);

    char url[512];
    snprintf(url, sizeof url, "%s/metrics", g_kf->child.base);
    struct hc_resp r;
    assert_int_equal(hc_call("GET", url, NULL, 0, &r, 30), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.ctype, "text/plain"));
    assert_non_null(strstr(r.ctype, "version=0.0.4"));

    /* every sample's family was declared with HELP then TYPE before it */
    char declared[64][96];
    int n_decl = 0, n_samples = 0;
    char *save = NULL;
    char *text = strdup(r.body);
    char last_help[96] = "";
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char name[96];
        if (!strncmp(line, "# HELP ", 7)) {
            assert_int_equal(sscanf(line + 7, "%95s", last_help), 1);
            continue;
        }
        if (!strncmp(line, "# TYPE ", 7)) {
            char type[32];
            assert_int_equal(sscanf(line + 7, "%95s %31s", name, type), 2);
            assert_string_equal(name, last_help);
            assert_true(!strcmp(type, "counter") || !strcmp(type, "gauge"));
            assert_true(n_decl < 64);
            snprintf(declared[n_decl++], sizeof declared[0], "%s", name);
            continue;
        }
        size_t l = strcspn(line, "{ ");
        assert_true(l > 0 && l < sizeof name);
        memcpy(name, line, l);
        name[l] = 0;
        bool ok = false;
        for (int i = 0; i < n_decl; i++) ok = ok || !strcmp(declared[i], name);
        if (!ok) fail_msg("sample '%s' has no TYPE line before it", line);
        /* value parses */
        const char *sp = strrchr(line, ' ');
        assert_non_null(sp);
        char *end;
        strtod(sp + 1, &end);
        assert_true(*end == 0);
        n_samples++;
    }
    free(text);
    assert_true(n_samples > 20);
    assert_non_null(strstr(r.body, "aios_scheduler_info{policy=\"fair\"} 1\n"));
    assert_non_null(strstr(r.body, "aios_agent_calls_total{agent=\"alice\",status=\"done\"} 2\n"));
    assert_non_null(strstr(r.body, "aios_agent_calls_total{agent=\"we\\\"ird\\\\name\",status=\"done\"} 1\n"));
    assert_non_null(strstr(r.body, "aios_syscalls_queued{kind=\"llm\"} 0\n"));
    assert_non_null(strstr(r.body, "aios_agent_priority{agent=\"vip\"} 5\n"));
    hc_resp_free(&r);

    /* wrong method: 405 */
    assert_int_equal(kf_call(g_kf, "POST", "/metrics", "{}", &j), 405);
    json_decref(j);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stats_accounting),
        cmocka_unit_test(test_bad_priority),
        cmocka_unit_test(test_priority_order),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_preemption), /* last: it swaps g_kf */
    };
    int rc = cmocka_run_group_tests(tests, group_setup, group_teardown);
    curl_global_cleanup();
    return rc;
}
