/* The dashboard: GET /ui serves one static page (HTML, CSS and JS embedded
 * in the binary by ui_blob.S: no toolchain, no CDN, works offline), and
 * GET /ui/state one JSON snapshot that the page polls every second and
 * `aios top` reads too.
 *
 * The page is public (it holds no data); the snapshot is behind the access
 * gate like every route: the operator's token sees every agent, an agent's
 * token sees only its own agent (its stats, its processes, its calls on
 * the timeline), and kernel-wide numbers (queues, engine).
 *
 * Energy: each agent's engine time times the machine's power. The power is
 * measured from RAPL (/sys/class/powercap/intel-rapl:0/energy_uj, the
 * package's energy counter) between two snapshots when that file is
 * readable, else it is `accounting.watts` from the config (default 15 W),
 * and the snapshot says which ("rapl" or "config"); either way the per-agent
 * figures are estimates, marked so. */
#include "api/api.h"

#include "agents/agent.h"
#include "memory/mem.h"
#include "storage/storage.h"
#include "util/util.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const char aios_ui_html[];
extern const char aios_ui_html_end[];

#define UI_DEFAULT_WATTS 15.0
#define UI_WINDOW_S_MAX 900

enum MHD_Result api_ui_page(struct api_req *r)
{
    size_t n = (size_t)(aios_ui_html_end - aios_ui_html);
    char *body = malloc(n ? n : 1);
    if (!body) return api_send_error(r, 500, "server_error", "out of memory");
    memcpy(body, aios_ui_html, n);
    return api_send_raw(r, 200, body, n, "text/html; charset=utf-8");
}

/* ---- power ---- */

#define RAPL_PATH "/sys/class/powercap/intel-rapl:0/energy_uj"

static pthread_mutex_t g_rapl_mu = PTHREAD_MUTEX_INITIALIZER;
static int64_t g_rapl_uj, g_rapl_t_us;
static double g_rapl_watts;

/* the package's power from RAPL between two calls (at least 0.5 s apart),
 * or a negative value when RAPL cannot be read */
static double rapl_watts(void)
{
    FILE *f = fopen(RAPL_PATH, "r");
    if (!f) return -1;
    long long uj = -1;
    int ok = fscanf(f, "%lld", &uj) == 1;
    fclose(f);
    if (!ok || uj < 0) return -1;
    int64_t now = util_now_us();
    pthread_mutex_lock(&g_rapl_mu);
    if (g_rapl_t_us && now - g_rapl_t_us >= 500000 && uj >= g_rapl_uj)
        g_rapl_watts = (double)(uj - g_rapl_uj) / (double)(now - g_rapl_t_us);
    if (!g_rapl_t_us || now - g_rapl_t_us >= 500000) {
        g_rapl_uj = uj;
        g_rapl_t_us = now;
    }
    double w = g_rapl_watts > 0 ? g_rapl_watts : -1;
    pthread_mutex_unlock(&g_rapl_mu);
    return w;
}

static double config_watts(struct kernel *k)
{
    json_t *w = config_lookup(&k->cfg, "accounting.watts");
    return json_is_number(w) && json_number_value(w) > 0 ? json_number_value(w) : UI_DEFAULT_WATTS;
}

double api_power_watts(struct kernel *k, const char **source)
{
    double w = rapl_watts();
    *source = "rapl";
    if (w <= 0) {
        w = config_watts(k);
        *source = "config";
    }
    return w;
}

/* ---- the snapshot ---- */

static bool visible(const struct api_req *r, const char *agent)
{
    return r->acc_admin || !r->k->access || !strcmp(agent, r->acc_agent);
}

static double ms_since(int64_t t_us, int64_t t0_us) { return (double)(t_us - t0_us) / 1000.0; }

/* the agent's memory and storage use against their quotas (null where the
 * manager is absent or the agent has nothing there) */
static json_t *usage_json(struct kernel *k, const char *agent)
{
    json_t *u = json_object();
    if (k->storage && agent[0] && strlen(agent) <= STO_AGENT_MAX) {
        struct sto_reply rep = {0};
        if (sto_usage(k->storage, agent, &rep) == 0 && rep.out)
            json_object_set_new(u, "storage",
                                json_pack("{s:O,s:O,s:O,s:O}", "bytes",
                                          json_object_get(rep.out, "bytes"), "files",
                                          json_object_get(rep.out, "files"), "quota_bytes",
                                          json_object_get(rep.out, "quota_bytes"), "quota_files",
                                          json_object_get(rep.out, "quota_files")));
        json_decref(rep.out);
    }
    struct mem_stats ms;
    if (k->memory && mem_stats(k->memory, agent, &ms) == 0) {
        json_object_set_new(u, "memory", json_pack("{s:I,s:I,s:I}", "notes", (json_int_t)ms.n_notes,
                                                   "resident_bytes", (json_int_t)ms.resident_bytes,
                                                   "quota_bytes", (json_int_t)ms.quota_bytes));
        mem_stats_free(&ms);
    }
    return u;
}

static json_t *agents_json(struct api_req *r, double watts)
{
    json_t *arr = json_array();
    struct sched_agent_stats *st = NULL;
    size_t n = 0;
    if (sched_all_agent_stats(r->k->sched, &st, &n) != 0) return arr;
    for (size_t i = 0; i < n; i++) {
        const struct sched_agent_stats *a = &st[i];
        if (!visible(r, a->name)) continue;
        json_t *kinds = json_object();
        for (int k = 0; k < SYSCALL_KIND__COUNT; k++)
            json_object_set_new(kinds, syscall_kind_name(k), json_integer(a->n_calls_kind[k]));
        double engine_s = (double)a->t_engine_us / 1e6;
        json_t *o = json_pack("{s:s,s:i,s:I,s:I,s:I,s:I,s:o,s:{s:I,s:I,s:I},s:I,s:I,s:f,s:f,s:f,"
                              "s:I,s:I,s:f,s:f}",
                              "name", a->name, "priority", a->priority, "calls", a->n_calls,
                              "done", a->n_done, "errors", a->n_error, "cancelled",
                              a->n_cancelled, "calls_by_kind", kinds, "tokens", "computed",
                              a->n_prompt_computed, "reused", a->n_prompt_reused, "generated",
                              a->n_gen, "kv_bytes", a->kv_bytes, "context_switches",
                              a->n_ctx_switches, "engine_s", engine_s, "queue_s",
                              (double)a->t_queue_us / 1e6, "tool_s", (double)a->t_tool_us / 1e6,
                              "queued", a->n_queued, "running", a->n_running, "energy_j",
                              engine_s * watts, "cost", a->cost);
        if (o) json_object_set_new(o, "usage", usage_json(r->k, a->name));
        if (o) json_array_append_new(arr, o);
    }
    free(st);
    return arr;
}

static json_t *processes_json(struct api_req *r)
{
    if (!r->k->agents) return json_array();
    json_t *all = agent_ps_json(r->k->agents);
    if (!all || r->acc_admin || !r->k->access) return all ? all : json_array();
    json_t *mine = json_array();
    size_t i;
    json_t *p;
    json_array_foreach(all, i, p) {
        const char *name = json_string_value(json_object_get(p, "agent_name"));
        if (!name) name = json_string_value(json_object_get(p, "name"));
        if (name && !strcmp(name, r->acc_agent)) json_array_append(mine, p);
    }
    json_decref(all);
    return mine;
}

static const char *const rec_state[] = {"queued", "running", "final"};

static json_t *timeline_json(struct api_req *r, int64_t now, int window_s)
{
    json_t *arr = json_array();
    struct sched_call_rec *rec = NULL;
    size_t n = 0;
    if (sched_timeline(r->k->sched, now - (int64_t)window_s * 1000000, &rec, &n) != 0) return arr;
    for (size_t i = 0; i < n; i++) {
        const struct sched_call_rec *c = &rec[i];
        if (!visible(r, c->agent)) continue;
        json_t *sl = json_array();
        for (int s = 0; s < c->n_kept; s++)
            json_array_append_new(sl, json_pack("[f,f]", ms_since(c->slice_start_us[s], now),
                                                ms_since(c->slice_end_us[s], now)));
        if (c->state == SCHED_REC_RUNNING)
            json_array_append_new(sl, json_pack("[f,f]", ms_since(c->t_since_us, now), 0.0));
        json_t *o = json_pack("{s:I,s:s,s:s,s:s,s:f,s:o,s:i,s:I}", "id", (json_int_t)c->id,
                              "agent", c->agent, "kind", syscall_kind_name(c->kind), "state",
                              rec_state[c->state], "submitted_ms",
                              ms_since(c->t_created_us, now), "slices", sl, "n_slices",
                              c->n_slices, "generated", c->n_gen);
        if (!o) continue;
        if (c->state == SCHED_REC_FINAL) {
            json_object_set_new(o, "end_ms", json_real(ms_since(c->t_end_us, now)));
            json_object_set_new(o, "status", json_string(syscall_status_name(c->final_status)));
        }
        json_array_append_new(arr, o);
    }
    free(rec);
    return arr;
}

static json_t *engines_json(struct kernel *k)
{
    json_t *models = json_array();
    for (size_t i = 0; i < k->n_cores; i++) {
        struct llm_core *c = k->cores[i];
        if (c->retired) continue;
        json_t *o = json_pack("{s:s,s:s,s:s}", "name", c->name, "backend", c->backend, "device",
                              "cpu");
        if (c->ops->describe) c->ops->describe(c, o);
        json_array_append_new(models, o);
    }
    return models;
}

enum MHD_Result api_ui_state(struct api_req *r)
{
    struct kernel *k = r->k;
    int window_s = 120;
    const char *w = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "window_s");
    if (w && *w) {
        char *end = NULL;
        long v = strtol(w, &end, 10);
        if (*end || v < 1 || v > UI_WINDOW_S_MAX)
            return api_send_error(r, 400, "invalid_request_error",
                                  "'window_s' must be an integer from 1 to %d", UI_WINDOW_S_MAX);
        window_s = (int)v;
    }
    int64_t now = util_now_us();
    struct sched_stats st;
    sched_get_stats(k->sched, &st);
    json_t *queued = json_object(), *running = json_object();
    for (int i = 0; i < SYSCALL_KIND__COUNT; i++) {
        json_object_set_new(queued, syscall_kind_name(i), json_integer((json_int_t)st.n_queued[i]));
        json_object_set_new(running, syscall_kind_name(i), json_integer((json_int_t)st.n_running[i]));
    }
    const char *source;
    double watts = api_power_watts(k, &source);
    json_t *body = json_pack(
        "{s:s,s:f,s:{s:s,s:b},s:{s:s,s:o,s:o,s:I,s:I,s:I},s:{s:f,s:s,s:b},s:o,s:o,s:o,s:o,s:i}",
        "version", k->version, "uptime_s", (double)(now - k->t_start_us) / 1e6, "viewer", "agent",
        r->acc_agent[0] ? r->acc_agent : "admin", "admin", r->acc_admin || !k->access,
        "scheduler", "policy", st.policy, "queued", queued, "running", running, "submitted",
        (json_int_t)st.n_submitted, "finished", (json_int_t)st.n_finished, "preempted",
        (json_int_t)st.n_preempted, "energy", "watts", watts, "source", source, "estimated", true,
        "models", engines_json(k), "agents", agents_json(r, watts), "processes", processes_json(r),
        "timeline", timeline_json(r, now, window_s), "window_s", window_s);
    return api_send_json(r, 200, body);
}
