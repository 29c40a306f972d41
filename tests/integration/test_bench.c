/* Integration: `aios bench agents` runs its workload against a kernel it
 * starts itself (--kernel) and against a running one (--url, sequential),
 * and reports consistent JSON; bad usage exits 2 with a message. Tiny
 * workloads on the built-in test model: this checks the tool, not speed. */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/util.h"

/* run `aios bench agents ARGS`; stdout parsed as JSON into *out */
static int run_bench(const char *args, json_t **out, char *err, size_t errlen)
{
    char cmd[4096], errpath[64];
    /* this process's own file: tests of other checkouts may run at once */
    snprintf(errpath, sizeof errpath, "/tmp/aios-it-bench-err-%d.txt", (int)getpid());
    snprintf(cmd, sizeof cmd, "'%s' bench agents %s 2>%s", aios_bin(), args, errpath);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char *buf = NULL;
    size_t n = 0, cap = 0;
    char chunk[4096];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, p)) > 0) {
        if (n + got + 1 > cap) {
            cap = (n + got + 1) * 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        memcpy(buf + n, chunk, got);
        n += got;
        buf[n] = 0;
    }
    int st = pclose(p);
    if (out) *out = buf ? json_loads(buf, 0, NULL) : NULL;
    free(buf);
    FILE *e = fopen(errpath, "r");
    if (e && err) {
        size_t l = fread(err, 1, errlen - 1, e);
        err[l] = 0;
    }
    if (e) fclose(e);
    unlink(errpath);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static double num(json_t *j, const char *a, const char *b)
{
    json_t *v = json_object_get(j, a);
    if (b) v = json_object_get(v, b);
    if (!json_is_number(v)) fail_msg("%s.%s missing", a, b ? b : "");
    return json_number_value(v);
}

static void test_bench_kernel(void **state)
{
    (void)state;
    char *cache = util_cache_dir();
    char args[4096], err[8192] = "";
    snprintf(args, sizeof args,
             "--kernel %s/models/aios-test-tiny-seed0.gguf --policy fair --agents 3 --turns 2 "
             "--sys-words 40 --task-words 5 --obs-words 6 --gen 3 --interactive-ms 100 --json",
             cache);
    free(cache);
    json_t *j = NULL;
    int rc = run_bench(args, &j, err, sizeof err);
    if (rc != 0 || !j) fail_msg("bench exited %d: %s", rc, err);
    assert_string_equal(json_string_value(json_object_get(j, "target")), "aios");
    assert_string_equal(json_string_value(json_object_get(j, "policy")), "fair");
    /* the engine's counters came along: it computed the prompt tokens */
    json_t *en = json_object_get(j, "engine");
    assert_true(num(en, "steps", NULL) > 0);
    assert_true(num(en, "prompt_tokens_computed", NULL) >= num(j, "tokens", "prompt_computed"));
    assert_non_null(json_object_get(en, "prompt_tokens_tiled"));
    /* calls carry no seed unless asked (--request-seed, below) */
    assert_true(json_is_false(json_object_get(json_object_get(j, "workload"), "request_seed")));
    assert_int_equal((int)num(j, "calls", NULL), 6);
    assert_int_equal((int)num(j, "errors", NULL), 0);
    assert_true(num(j, "makespan_s", NULL) > 0);
    assert_true(num(j, "latency_s", "p50") <= num(j, "latency_s", "p95"));
    assert_true(num(j, "agent_done_s", "min") <= num(j, "agent_done_s", "max"));
    assert_true(num(j, "agent_done_s", "max") <= num(j, "makespan_s", NULL) + 1e-6);
    double jain = num(j, "jain_fairness", NULL);
    assert_true(jain > 0.33 && jain <= 1.0 + 1e-9);
    double prompt = num(j, "tokens", "prompt");
    assert_true(prompt > 6 * 40);
    assert_true(num(j, "tokens", "prompt_computed") + num(j, "tokens", "prompt_cached") == prompt);
    assert_true(num(j, "tokens", "completion") <= 6 * 3);
    /* the interactive agent ran alongside, at priority 10 */
    json_t *in = json_object_get(j, "interactive");
    assert_true(num(in, "calls", NULL) >= 1);
    assert_int_equal((int)num(in, "priority", NULL), 10);
    assert_int_equal((int)num(in, "errors", NULL), 0);
    assert_true(num(in, "p50_s", NULL) <= num(in, "p95_s", NULL));
    /* the progress bar went to stderr */
    assert_non_null(strstr(err, "6/6 calls"));
    json_decref(j);
}

static void test_bench_url_sequential(void **state)
{
    (void)state;
    struct kernel_fixture *kf = kf_start(NULL);
    char args[1024], err[8192] = "";
    snprintf(args, sizeof args,
             "--url %s/v1 --sequential --agents 2 --turns 2 --sys-words 10 --task-words 3 "
             "--obs-words 3 --gen 2 --tool-ms 20 --request-seed --json",
             kf->child.base);
    json_t *j = NULL;
    int rc = run_bench(args, &j, err, sizeof err);
    if (rc != 0 || !j) fail_msg("bench exited %d: %s", rc, err);
    assert_string_equal(json_string_value(json_object_get(j, "mode")), "sequential");
    assert_true(json_is_true(json_object_get(json_object_get(j, "workload"), "request_seed")));
    assert_int_equal((int)num(j, "calls", NULL), 4);
    json_decref(j);
    /* the kernel saw two agents, two calls each */
    json_t *s = NULL;
    assert_int_equal(kf_call(kf, "GET", "/agents/agent-1/stats", NULL, &s), 200);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(s, "calls"), "done")), 2);
    json_decref(s);
    kf_stop(kf);
}

static void test_bench_usage(void **state)
{
    (void)state;
    char err[4096] = "";
    assert_int_equal(run_bench("--agents 2", NULL, err, sizeof err), 2);
    assert_non_null(strstr(err, "exactly one of"));
    assert_int_equal(run_bench("--url http://x --agents zero", NULL, err, sizeof err), 2);
    assert_non_null(strstr(err, "--agents"));
    assert_int_equal(run_bench("--url http://x --policy lottery", NULL, err, sizeof err), 2);
    assert_non_null(strstr(err, "--policy"));
    /* nothing listening: a clear failure, not a hang */
    assert_int_equal(run_bench("--url http://127.0.0.1:1 --model m --agents 1 --turns 1", NULL,
                               err, sizeof err), 1);
    assert_non_null(strstr(err, "agent 0"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bench_usage),
        cmocka_unit_test(test_bench_kernel),
        cmocka_unit_test(test_bench_url_sequential),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
