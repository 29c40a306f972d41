/* Benchmarks of the tool manager (the machine may be shared: compare the
 * numbers of one run with each other, not across runs).
 *
 *   bench_tools spawn [--n N]
 *     the sandbox's cost per process: N runs of /bin/cat through the tool
 *     runner (tool_proc_run) directly, then under bubblewrap (the full
 *     sandbox: namespaces, staging mounts and uid drop under root, pids
 *     cgroup, rlimits). Median and p90 per run, and the ratio.
 *   bench_tools calls [--n N] [--bin build/aios] [--mcp PATH] [--fixtures DIR]
 *     through a real `aios serve` over HTTP: median kernel turnaround
 *     (turnaround_times of the /query answer) and client round trip of a
 *     built-in call, an MCP call and a sandboxed executable call; then one
 *     request of 8 calls that each hold 300 ms, with max_concurrency
 *     unlimited against max_concurrency 1 (the parallel speed-up).
 *
 * Defaults assume the repository root as working directory after `make`. */
#include "cli/client.h"
#include "tools/tools.h"
#include "util/err.h"
#include "util/util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    int i = (int)(p * (n - 1) + 0.5);
    return v[i];
}

static int bench_spawn(int n)
{
    double *t = calloc((size_t)n, sizeof *t);
    char *const argv[] = {"/bin/cat", NULL};
    double med[2] = {0, 0};
    for (int mode = 0; mode < 2; mode++) {
        struct tool_spawn_opts o = {.argv = argv, .sandbox = mode == 1,
                                    .limits = {.cpu_s = 10, .mem_bytes = (size_t)1 << 30, .max_procs = 64}};
        if (mode == 1 && !tool_sandbox_available(NULL, 0)) {
            fprintf(stderr, "bwrap unavailable here\n");
            free(t);
            return 1;
        }
        for (int i = 0; i < n; i++) {
            char *out = NULL, *err_out = NULL, err[256];
            size_t n_out;
            bool trunc;
            int st;
            int64_t t0 = util_now_us();
            int rc = tool_proc_run(&o, "{\"x\":1}", 7, 4096, util_now_us() + 10000000, &out, &n_out,
                                   &trunc, &err_out, &st, err, sizeof err);
            t[i] = (double)(util_now_us() - t0) / 1000.0;
            if (rc || n_out != 7) {
                fprintf(stderr, "run failed: %s %s\n", err, err_out ? err_out : "");
                free(t);
                return 1;
            }
            free(out);
            free(err_out);
        }
        med[mode] = pct(t, n, 0.5);
        printf("spawn %-10s n=%d  median %.2f ms  p90 %.2f ms\n", mode ? "sandboxed" : "direct", n,
               med[mode], pct(t, n, 0.9));
    }
    printf("sandbox cost per process: %.2f ms (%.1fx the direct spawn)\n", med[1] - med[0],
           med[1] / med[0]);
    free(t);
    return 0;
}

static struct aios_child g_child;

static int query(const char *calls, double *turnaround_ms, double *rtt_ms)
{
    char url[128], *body = NULL;
    snprintf(url, sizeof url, "%s/query", g_child.base);
    if (asprintf(&body, "{\"agent_name\":\"bench/a\",\"query_type\":\"tool\",\"query_data\":{\"tool_calls\":%s}}",
                 calls) < 0)
        return -1;
    struct hc_resp r;
    int64_t t0 = util_now_us();
    int rc = hc_call("POST", url, body, strlen(body), &r, 60);
    *rtt_ms = (double)(util_now_us() - t0) / 1000.0;
    free(body);
    if (rc || r.status != 200) {
        fprintf(stderr, "query failed: %ld %.*s\n", r.status, (int)r.len, r.body ? r.body : "");
        hc_resp_free(&r);
        return -1;
    }
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    *turnaround_ms = json_number_value(json_array_get(json_object_get(j, "turnaround_times"), 0)) * 1000.0;
    json_decref(j);
    hc_resp_free(&r);
    return 0;
}

static int series(const char *label, const char *calls, int n)
{
    double *ta = calloc((size_t)n, sizeof *ta), *rt = calloc((size_t)n, sizeof *rt);
    for (int i = 0; i < n; i++)
        if (query(calls, &ta[i], &rt[i])) {
            free(ta);
            free(rt);
            return 1;
        }
    printf("%-34s n=%-4d kernel turnaround median %.3f ms p90 %.3f ms; round trip median %.3f ms\n",
           label, n, pct(ta, n, 0.5), pct(ta, n, 0.9), pct(rt, n, 0.5));
    free(ta);
    free(rt);
    return 0;
}

static int bench_calls(int n, const char *bin, const char *mcp, const char *fix)
{
    char dir[] = "/tmp/aios-bench-tools-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char cfg[300];
    snprintf(cfg, sizeof cfg, "%s/config.yaml", dir);
    FILE *f = fopen(cfg, "w");
    if (!f) return 1;
    fprintf(f,
            "tools:\n  external:\n"
            "    - {name: b/echo, command: %s/echo_args.sh}\n"
            "    - {name: b/hold, command: %s/conc.sh}\n"
            "    - {name: b/hold1, command: %s/conc.sh, max_concurrency: 1}\n"
            "  mcp_servers:\n    - {name: m, command: %s}\n",
            fix, fix, fix, mcp);
    fclose(f);
    char data[300];
    snprintf(data, sizeof data, "%s/data", dir);
    const char *extra[] = {"--config", cfg, NULL};
    if (child_start(&g_child, bin, data, extra, 120)) {
        fprintf(stderr, "aios serve did not start; see %s\n", g_child.log_path);
        return 1;
    }
    int rc = series("built-in aios/calculator", "[{\"name\":\"aios/calculator\",\"parameters\":{\"expression\":\"2*(3+4)\"}}]", n);
    if (!rc) rc = series("MCP m/add", "[{\"name\":\"m/add\",\"parameters\":{\"a\":1,\"b\":2}}]", n);
    if (!rc) rc = series("sandboxed executable b/echo", "[{\"name\":\"b/echo\",\"parameters\":{\"x\":1}}]", n / 4 > 5 ? n / 4 : 5);
    if (!rc) {
        char calls[2][1024];
        for (int k = 0; k < 2; k++) {
            size_t o = 0;
            o += (size_t)snprintf(calls[k] + o, sizeof calls[k] - o, "[");
            for (int i = 0; i < 8; i++)
                o += (size_t)snprintf(calls[k] + o, sizeof calls[k] - o,
                                      "%s{\"name\":\"%s\",\"parameters\":{\"hold_ms\":300}}", i ? "," : "",
                                      k ? "b/hold1" : "b/hold");
            snprintf(calls[k] + o, sizeof calls[k] - o, "]");
        }
        double ta[2], rt;
        rc = query(calls[0], &ta[0], &rt) || query(calls[1], &ta[1], &rt);
        if (!rc)
            printf("8 calls x 300 ms in one request: unlimited %.0f ms, max_concurrency 1 %.0f ms "
                   "(%.1fx faster in parallel)\n", ta[0], ta[1], ta[1] / ta[0]);
    }
    child_stop(&g_child, 30);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return rc;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    int n = 100;
    const char *bin = "build/aios", *mcp = NULL, *fix = "tests/fixtures/tools";
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--n") && i + 1 < argc) n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bin") && i + 1 < argc) bin = argv[++i];
        else if (!strcmp(argv[i], "--mcp") && i + 1 < argc) mcp = argv[++i];
        else if (!strcmp(argv[i], "--fixtures") && i + 1 < argc) fix = argv[++i];
    }
    if (n < 5) n = 5;
    char absfix[4096], absmcp[4096];
    if (!realpath(fix, absfix)) {
        fprintf(stderr, "fixtures %s not found (run from the repository root)\n", fix);
        return 2;
    }
    if (!strcmp(mode, "spawn")) return bench_spawn(n);
    if (!strcmp(mode, "calls")) {
        if (!realpath(mcp ? mcp : "build/tests/aios_mcp_test_server", absmcp)) {
            fprintf(stderr, "MCP test server not found (make first, or --mcp PATH)\n");
            return 2;
        }
        return bench_calls(n, bin, absmcp, absfix);
    }
    fprintf(stderr, "usage: bench_tools spawn|calls [--n N] [--bin B] [--mcp PATH] [--fixtures DIR]\n");
    return 2;
}
