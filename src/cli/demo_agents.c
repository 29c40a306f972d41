/* The agents part of `aios demo`: run the example agents concurrently as
 * processes on a running kernel, show their output live, then print their
 * results and the kernel's per-agent accounting.
 *
 * Runs on the demo's main thread only. Talks to the kernel over HTTP:
 * POST /agents/submit, GET /agents/{id}/logs (byte offsets, polled every
 * 150 ms), GET /agents/{id}/status, GET /agents/accounting. An agent that
 * exits 3 printed SKIP: a manager it needs answered 501 in this kernel. */
#include "cli/demo_agents.h"

#include "cli/client.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/util.h"

struct run {
    const char *agent, *task;
    long long id;
    long long off;
    char line[4096];
    size_t n_line;
    bool done;
    char status[32];
    int exit_code;
    double elapsed;
    json_t *result;
    json_t *usage;
};

static json_t *get_json(const char *base, const char *method, const char *path, const char *body,
                        long *st)
{
    char url[1024];
    snprintf(url, sizeof url, "%s%s", base, path);
    struct hc_resp r;
    int rc = hc_call(method, url, body, body ? strlen(body) : 0, &r, 60);
    *st = rc ? 0 : r.status;
    json_t *j = rc ? NULL : json_loadb(r.body, r.len, 0, NULL);
    hc_resp_free(&r);
    return j;
}

/* print complete lines of new output, prefixed with the agent's name */
static void show_output(struct run *r, const char *text)
{
    for (const char *p = text; *p; p++) {
        if (*p == '\n' || r->n_line + 1 >= sizeof r->line) {
            r->line[r->n_line] = 0;
            if (r->n_line > 150) { /* long observations: keep the table readable */
                size_t cut = 147;
                while (cut > 0 && ((unsigned char)r->line[cut] & 0xC0) == 0x80) cut--;
                strcpy(r->line + cut, "...");
            }
            printf("    %-12s | %s\n", r->agent, r->line);
            r->n_line = 0;
            if (*p == '\n') continue;
        }
        r->line[r->n_line++] = *p;
    }
    fflush(stdout);
}

int demo_run_agents(const char *base, const char *agents_dir, int timeout_s, int *n_failed)
{
    *n_failed = 0;
    bool py = system("python3 -c 'import json' >/dev/null 2>&1") == 0;
    struct run runs[] = {
        {.agent = "react_agent", .task = "What is 12*(3+4)? Use the calculator."},
        {.agent = "note_agent", .task = "Remember: the design review is on Friday"},
        {.agent = "file_agent", .task = "Write a short status report on the demo"},
        {.agent = "py_agent", .task = "Say hello from Python"},
    };
    size_t n = sizeof runs / sizeof runs[0];
    printf("  agents from %s, launched together as OS processes:\n", agents_dir);
    for (size_t i = 0; i < n; i++) {
        struct run *r = &runs[i];
        if (!strcmp(r->agent, "py_agent") && !py) {
            printf("    %-12s | skipped: python3 is not installed\n", r->agent);
            r->done = true;
            snprintf(r->status, sizeof r->status, "skipped");
            continue;
        }
        json_t *b = json_pack("{s:s,s:{s:s}}", "agent_id", r->agent, "agent_config", "task", r->task);
        char *s = json_dumps(b, JSON_COMPACT);
        json_decref(b);
        long st;
        json_t *j = get_json(base, "POST", "/agents/submit", s, &st);
        free(s);
        if (st != 200) {
            const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
            printf("    %-12s | submit failed: HTTP %ld %s\n", r->agent, st, m ? m : "");
            r->done = true;
            snprintf(r->status, sizeof r->status, "not started");
            (*n_failed)++;
        } else {
            r->id = json_integer_value(json_object_get(j, "execution_id"));
            printf("    %-12s | started as execution %lld: \"%s\"\n", r->agent, r->id, r->task);
        }
        json_decref(j);
    }
    fflush(stdout);
    int64_t deadline = util_now_us() + (int64_t)timeout_s * 1000000;
    for (;;) {
        bool all = true;
        for (size_t i = 0; i < n; i++) {
            struct run *r = &runs[i];
            if (r->done) continue;
            char path[128];
            snprintf(path, sizeof path, "/agents/%lld/logs?stdout_offset=%lld", r->id, r->off);
            long st;
            json_t *j = get_json(base, "GET", path, NULL, &st);
            const char *out = json_string_value(json_object_get(j, "stdout"));
            long long no = json_integer_value(json_object_get(j, "stdout_offset"));
            const char *status = json_string_value(json_object_get(j, "status"));
            if (out && *out) show_output(r, out);
            bool more = no != r->off;
            r->off = no;
            if (st == 200 && status && strcmp(status, "running") != 0 && !more) {
                if (r->n_line) show_output(r, "\n");
                snprintf(path, sizeof path, "/agents/%lld/status", r->id);
                json_t *s = get_json(base, "GET", path, NULL, &st);
                snprintf(r->status, sizeof r->status, "%s", status);
                json_t *ec = json_object_get(s, "exit_code");
                r->exit_code = json_is_integer(ec) ? (int)json_integer_value(ec) : -1;
                r->elapsed = json_number_value(json_object_get(s, "elapsed_s"));
                r->result = json_incref(json_object_get(s, "result"));
                r->usage = json_incref(json_object_get(s, "usage"));
                r->done = true;
                const char *verdict = r->exit_code == 0 ? "done"
                                      : r->exit_code == 3 ? "done, skipped a missing manager (501)"
                                                          : "FAILED";
                if (r->exit_code != 0 && r->exit_code != 3) (*n_failed)++;
                printf("    %-12s | %s: %s, exit %d, %.2fs\n", r->agent, verdict, status,
                       r->exit_code, r->elapsed);
                fflush(stdout);
                json_decref(s);
            }
            json_decref(j);
            all &= r->done;
        }
        if (all) break;
        if (util_now_us() > deadline) {
            for (size_t i = 0; i < n; i++) {
                if (runs[i].done) continue;
                char path[64];
                snprintf(path, sizeof path, "/agents/%lld/kill", runs[i].id);
                long st;
                json_decref(get_json(base, "POST", path, NULL, &st));
                printf("    %-12s | still running after %d s: killed\n", runs[i].agent, timeout_s);
                (*n_failed)++;
            }
            break;
        }
        usleep(150000);
    }

    printf("\n  results and per-agent accounting (from the kernel):\n");
    printf("    %-12s %-10s %4s %8s  %-22s %7s %7s %8s %8s\n", "agent", "status", "exit", "time",
           "syscalls llm/mem/sto/tool", "prompt", "gen", "wait s", "turn s");
    for (size_t i = 0; i < n; i++) {
        struct run *r = &runs[i];
        json_t *bk = json_object_get(r->usage, "by_kind");
        char calls[64];
        snprintf(calls, sizeof calls, "%lld/%lld/%lld/%lld",
                 (long long)json_integer_value(json_object_get(bk, "llm")),
                 (long long)json_integer_value(json_object_get(bk, "memory")),
                 (long long)json_integer_value(json_object_get(bk, "storage")),
                 (long long)json_integer_value(json_object_get(bk, "tool")));
        printf("    %-12s %-10s %4d %7.2fs  %-22s %7lld %7lld %8.3f %8.3f\n", r->agent, r->status,
               r->exit_code, r->elapsed, calls,
               (long long)json_integer_value(json_object_get(r->usage, "prompt_tokens")),
               (long long)json_integer_value(json_object_get(r->usage, "completion_tokens")),
               json_number_value(json_object_get(r->usage, "waiting_time_s")),
               json_number_value(json_object_get(r->usage, "turnaround_time_s")));
    }
    for (size_t i = 0; i < n; i++) {
        struct run *r = &runs[i];
        if (!r->result) continue;
        char *d = json_dumps(r->result, JSON_COMPACT | JSON_ENCODE_ANY);
        if (d && strlen(d) > 110) strcpy(d + 107, "...");
        printf("    result %-12s %s\n", r->agent, d ? d : "");
        free(d);
        json_decref(r->result);
        json_decref(r->usage);
    }
    fflush(stdout);
    return 0;
}
