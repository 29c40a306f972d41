/* Scheduler-facing API: per-call priorities, per-agent statistics and the
 * kernel-wide Prometheus metrics.
 *
 *   X-Aios-Priority: N  or body field "priority": N   (integer -100..100,
 *                       higher runs first; overrides scheduler.priorities)
 *   GET /agents/{id}/stats   JSON accounting of one agent (404 if unseen)
 *   GET /metrics             Prometheus text exposition format 0.0.4
 *
 * Everything here runs on HTTP threads and only reads the scheduler through
 * its locked snapshot functions (sched_get_stats, sched_*agent_stats). */
#include "api/api.h"

#include "util/err.h"
#include "util/util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int api_parse_priority(struct api_req *r, json_t *body, int *prio, bool *set, char *err,
                       size_t errlen)
{
    *prio = 0;
    *set = false;
    json_t *v = body ? json_object_get(body, "priority") : NULL;
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < SYSCALL_PRIORITY_MIN ||
            json_integer_value(v) > SYSCALL_PRIORITY_MAX) {
            snprintf(err, errlen, "'priority' must be an integer between %d and %d (higher runs "
                     "first)", SYSCALL_PRIORITY_MIN, SYSCALL_PRIORITY_MAX);
            return AIOS_EINVAL;
        }
        *prio = (int)json_integer_value(v);
        *set = true;
    }
    const char *h = r && r->conn ? MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                               "X-Aios-Priority")
                                 : NULL;
    if (h) {
        int rc = api_priority_header(h, prio, err, errlen);
        if (rc) return rc;
        *set = true; /* the header wins over the body */
    }
    return 0;
}

int api_priority_header(const char *h, int *prio, char *err, size_t errlen)
{
    char *end;
    errno = 0;
    long l = strtol(h, &end, 10);
    if (!*h || *end || errno || l < SYSCALL_PRIORITY_MIN || l > SYSCALL_PRIORITY_MAX) {
        snprintf(err, errlen, "header X-Aios-Priority must be an integer between %d and %d "
                 "(got '%.40s')", SYSCALL_PRIORITY_MIN, SYSCALL_PRIORITY_MAX, h);
        return AIOS_EINVAL;
    }
    *prio = (int)l;
    return 0;
}

/* ---- GET /agents/{id}/stats ---- */

static json_t *stats_json(const struct sched_agent_stats *st, double watts, const char *source)
{
    json_t *kinds = json_object();
    for (int k = 0; k < SYSCALL_KIND__COUNT; k++)
        json_object_set_new(kinds, syscall_kind_name(k), json_integer(st->n_calls_kind[k]));
    return json_pack(
        "{s:s,s:i,s:{s:I,s:I,s:I,s:I,s:o},s:{s:I,s:I,s:I},s:{s:f,s:f,s:f},s:I,s:I,s:I,s:I,s:f,"
        "s:{s:f,s:f,s:s,s:b},s:f}",
        "agent", st->name, "priority", st->priority,
        "calls", "total", (json_int_t)st->n_calls, "done", (json_int_t)st->n_done, "error",
        (json_int_t)st->n_error, "cancelled", (json_int_t)st->n_cancelled, "by_kind", kinds,
        "tokens", "prompt_computed", (json_int_t)st->n_prompt_computed, "prompt_reused",
        (json_int_t)st->n_prompt_reused, "generated", (json_int_t)st->n_gen,
        "time_s", "engine", st->t_engine_us / 1e6, "queue_wait", st->t_queue_us / 1e6, "tool",
        st->t_tool_us / 1e6,
        "kv_bytes", (json_int_t)st->kv_bytes, "context_switches", (json_int_t)st->n_ctx_switches,
        "queued", (json_int_t)st->n_queued, "running", (json_int_t)st->n_running, "service",
        st->service, "energy", "joules", st->t_engine_us / 1e6 * watts, "watts", watts, "source",
        source, "estimated", true, "cost", st->cost);
}

enum MHD_Result api_agent_stats(struct api_req *r)
{
    const char *id = r->n_params > 0 ? r->params[0] : "";
    struct sched_agent_stats st;
    if (sched_agent_stats(r->k->sched, id, &st) != 0)
        return api_send_error(r, 404, "not_found_error",
                              "agent '%s' has made no calls to this kernel since it started", id);
    const char *source;
    double watts = api_power_watts(r->k, &source);
    return api_send_json(r, 200, stats_json(&st, watts, source));
}

/* ---- GET /metrics ---- */

struct text {
    char *s;
    size_t n, cap;
    bool oom;
};

static void tx_printf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tx_printf(struct text *t, const char *fmt, ...)
{
    if (t->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->s ? t->s + t->n : NULL, t->s ? t->cap - t->n : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->oom = true;
            return;
        }
        if (t->s && t->n + (size_t)n < t->cap) {
            t->n += (size_t)n;
            return;
        }
        size_t c = t->cap ? t->cap : 4096;
        while (c <= t->n + (size_t)n) c *= 2;
        char *p = realloc(t->s, c);
        if (!p) {
            t->oom = true;
            return;
        }
        t->s = p;
        t->cap = c;
    }
}

/* label value with \\, \" and \n escaped (Prometheus text format) */
static void tx_label(struct text *t, const char *v)
{
    size_t n = strlen(v);
    char *e = malloc(n * 2 + 1);
    if (!e) {
        t->oom = true;
        return;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (c == '\\' || c == '"') {
            e[o++] = '\\';
            e[o++] = c;
        } else if (c == '\n') {
            e[o++] = '\\';
            e[o++] = 'n';
        } else {
            e[o++] = c;
        }
    }
    e[o] = 0;
    tx_printf(t, "%s", e);
    free(e);
}

static void tx_head(struct text *t, const char *name, const char *type, const char *help)
{
    tx_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* one per-agent family: value taken from each record by `get` */
typedef double (*stat_get_fn)(const struct sched_agent_stats *st);
static void tx_agent_family(struct text *t, const char *name, const char *type, const char *help,
                            const struct sched_agent_stats *a, size_t n, stat_get_fn get)
{
    tx_head(t, name, type, help);
    for (size_t i = 0; i < n; i++) {
        tx_printf(t, "%s{agent=\"", name);
        tx_label(t, a[i].name);
        tx_printf(t, "\"} %.17g\n", get(&a[i]));
    }
}

static double g_gen(const struct sched_agent_stats *s) { return (double)s->n_gen; }
static double g_engine(const struct sched_agent_stats *s) { return s->t_engine_us / 1e6; }
static double g_queue(const struct sched_agent_stats *s) { return s->t_queue_us / 1e6; }
static double g_tool(const struct sched_agent_stats *s) { return s->t_tool_us / 1e6; }
static double g_kv(const struct sched_agent_stats *s) { return (double)s->kv_bytes; }
static double g_cs(const struct sched_agent_stats *s) { return (double)s->n_ctx_switches; }
static double g_service(const struct sched_agent_stats *s) { return s->service; }
static double g_queued(const struct sched_agent_stats *s) { return (double)s->n_queued; }
static double g_running(const struct sched_agent_stats *s) { return (double)s->n_running; }
static double g_prio(const struct sched_agent_stats *s) { return (double)s->priority; }

enum MHD_Result api_metrics(struct api_req *r)
{
    struct kernel *k = r->k;
    struct sched_stats ss;
    sched_get_stats(k->sched, &ss);
    struct sched_agent_stats *a = NULL;
    size_t n = 0;
    if (sched_all_agent_stats(k->sched, &a, &n))
        return api_send_error(r, 500, "server_error", "out of memory");
    struct text t = {0};

    tx_head(&t, "aios_uptime_seconds", "gauge", "Seconds since the kernel started.");
    tx_printf(&t, "aios_uptime_seconds %.3f\n", (double)(util_now_us() - k->t_start_us) / 1e6);
    tx_head(&t, "aios_scheduler_info", "gauge", "The scheduling policy in use (always 1).");
    tx_printf(&t, "aios_scheduler_info{policy=\"");
    tx_label(&t, ss.policy);
    tx_printf(&t, "\"} 1\n");
    tx_head(&t, "aios_syscalls_queued", "gauge", "Syscalls waiting in each resource queue.");
    for (int i = 0; i < SYSCALL_KIND__COUNT; i++)
        tx_printf(&t, "aios_syscalls_queued{kind=\"%s\"} %zu\n", syscall_kind_name(i), ss.n_queued[i]);
    tx_head(&t, "aios_syscalls_running", "gauge", "Syscalls running on each resource.");
    for (int i = 0; i < SYSCALL_KIND__COUNT; i++)
        tx_printf(&t, "aios_syscalls_running{kind=\"%s\"} %zu\n", syscall_kind_name(i), ss.n_running[i]);
    tx_head(&t, "aios_syscalls_submitted_total", "counter", "Syscalls accepted by the scheduler.");
    tx_printf(&t, "aios_syscalls_submitted_total %llu\n", (unsigned long long)ss.n_submitted);
    tx_head(&t, "aios_syscalls_finished_total", "counter", "Syscalls that reached a final state on a worker.");
    tx_printf(&t, "aios_syscalls_finished_total %llu\n", (unsigned long long)ss.n_finished);
    tx_head(&t, "aios_preemptions_total", "counter", "Running calls preempted and requeued.");
    tx_printf(&t, "aios_preemptions_total %llu\n", (unsigned long long)ss.n_preempted);

    tx_head(&t, "aios_agent_calls_total", "counter", "Syscalls per agent by final status.");
    for (size_t i = 0; i < n; i++) {
        const char *st[] = {"done", "error", "cancelled"};
        int64_t v[] = {a[i].n_done, a[i].n_error, a[i].n_cancelled};
        for (int j = 0; j < 3; j++) {
            tx_printf(&t, "aios_agent_calls_total{agent=\"");
            tx_label(&t, a[i].name);
            tx_printf(&t, "\",status=\"%s\"} %lld\n", st[j], (long long)v[j]);
        }
    }
    tx_head(&t, "aios_agent_prompt_tokens_total", "counter",
            "Prompt tokens per agent: computed (prefilled) or reused from retained KV state.");
    for (size_t i = 0; i < n; i++) {
        tx_printf(&t, "aios_agent_prompt_tokens_total{agent=\"");
        tx_label(&t, a[i].name);
        tx_printf(&t, "\",source=\"computed\"} %lld\n", (long long)a[i].n_prompt_computed);
        tx_printf(&t, "aios_agent_prompt_tokens_total{agent=\"");
        tx_label(&t, a[i].name);
        tx_printf(&t, "\",source=\"reused\"} %lld\n", (long long)a[i].n_prompt_reused);
    }
    tx_agent_family(&t, "aios_agent_generated_tokens_total", "counter",
                    "Tokens generated per agent.", a, n, g_gen);
    tx_agent_family(&t, "aios_agent_engine_seconds_total", "counter",
                    "LLM engine time spent on each agent's calls.", a, n, g_engine);
    tx_agent_family(&t, "aios_agent_queue_wait_seconds_total", "counter",
                    "Time each agent's calls spent waiting in queues.", a, n, g_queue);
    tx_agent_family(&t, "aios_agent_tool_seconds_total", "counter",
                    "Time spent running each agent's tool calls.", a, n, g_tool);
    tx_agent_family(&t, "aios_agent_context_switches_total", "counter",
                    "Times each agent's calls were preempted and later resumed.", a, n, g_cs);
    const char *source;
    double watts = api_power_watts(k, &source);
    tx_head(&t, "aios_agent_energy_joules_estimated", "counter",
            "Estimated energy of each agent's engine time (engine seconds x aios_power_watts).");
    for (size_t i = 0; i < n; i++) {
        tx_printf(&t, "aios_agent_energy_joules_estimated{agent=\"");
        tx_label(&t, a[i].name);
        tx_printf(&t, "\"} %.3f\n", a[i].t_engine_us / 1e6 * watts);
    }
    tx_head(&t, "aios_agent_cost_total", "counter",
            "Each agent's tokens at their model's configured price (llms.models[].price).");
    for (size_t i = 0; i < n; i++) {
        tx_printf(&t, "aios_agent_cost_total{agent=\"");
        tx_label(&t, a[i].name);
        tx_printf(&t, "\"} %.6f\n", a[i].cost);
    }
    tx_head(&t, "aios_power_watts", "gauge",
            "Power used for energy estimates: measured by RAPL, or accounting.watts.");
    tx_printf(&t, "aios_power_watts{source=\"%s\"} %.3f\n", source, watts);
    tx_agent_family(&t, "aios_agent_kv_bytes", "gauge",
                    "KV cache bytes each agent holds now.", a, n, g_kv);
    tx_agent_family(&t, "aios_agent_service", "gauge",
                    "Attained service (tokens + weighted engine ms) the fair policy orders by.", a,
                    n, g_service);
    tx_agent_family(&t, "aios_agent_priority", "gauge", "Default priority of each agent.", a, n,
                    g_prio);
    tx_agent_family(&t, "aios_agent_queued", "gauge", "Calls of each agent waiting now.", a, n,
                    g_queued);
    tx_agent_family(&t, "aios_agent_running", "gauge", "Calls of each agent running now.", a, n,
                    g_running);
    free(a);
    if (t.oom) {
        free(t.s);
        return api_send_error(r, 500, "server_error", "out of memory");
    }
    return api_send_raw(r, 200, t.s, t.n, "text/plain; version=0.0.4; charset=utf-8");
}
