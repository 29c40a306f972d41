/* AIOS kernel routes, in the shapes of the reference's runtime/launch.py:
 *
 *   GET  /core/status          {"llms":"active", "memory":..., "storage":...,
 *                               "tool":..., "scheduler":..., "factory":...}
 *   GET  /core/llms/list       {"status":"success","llms":[config entries]}
 *   POST /user/select/llms     [{"name","backend"}...] -> {"status","message"}
 *   GET  /user/selected/llms   {"status","message","llms"}
 *   POST /core/refresh         re-read the --config file, apply what can be
 *                              applied live (models: kernel/models.c;
 *                              agent_factory), report every change
 *   POST /core/config/update   {"provider","api_key"[,"name"]}
 *   POST /core/cleanup         stop running agents, forget finished ones
 *   POST /agents/submit        {"agent_id","agent_config":{"task"}} ->
 *                              {"status":"success","execution_id",...}
 *   GET  /agents/ps            {"status":"success","processes":[...]}
 *   GET  /agents/{id}/status   running / completed / failed / killed
 *   POST /agents/{id}/kill     (aios) SIGTERM, or {"signal":"KILL"}
 *   GET  /agents/{id}/logs     (aios) ?stdout_offset=&stderr_offset=
 *   GET  /agents/accounting    (aios) per-agent syscall accounting
 *   GET  /get/mcp/server       {"status","path"} or a warning
 *
 * Where the reference answers 200 with a "warning" status (nothing
 * selected, no MCP server, no config file to reload) so do we; real errors
 * (bad JSON, unknown agent or id, invalid config file) are 4xx/5xx with the
 * usual {"error":{...}} body. All handlers run on an HTTP thread and return
 * at once: the process table does the work (src/agents/agent.c). */
#include "api/aios_routes.h"

#include "agents/agent.h"
#include "kernel/models.h"
#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *active(bool on) { return on ? "active" : "inactive"; }

enum MHD_Result api_route_core_status(struct api_req *r)
{
    struct kernel *k = r->k;
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "llms", active(k->n_cores > 0), "storage",
                          active(k->pools[SYSCALL_KIND_STORAGE] != NULL), "memory",
                          active(k->pools[SYSCALL_KIND_MEMORY] != NULL), "tool",
                          active(k->pools[SYSCALL_KIND_TOOL] != NULL), "scheduler",
                          active(k->sched != NULL), "factory", active(k->agents != NULL));
    return api_send_json(r, 200, o);
}

enum MHD_Result api_route_llms_list(struct api_req *r)
{
    struct kernel *k = r->k;
    json_t *llms = kernel_models_list(k); /* as now applied (refresh changes it) */
    if (!kernel_default_core(k))
        return api_send_json(r, 200, json_pack("{s:s,s:s,s:o}", "status", "warning", "message",
                                               "LLM core not initialized", "llms", llms));
    return api_send_json(r, 200, json_pack("{s:s,s:o}", "status", "success", "llms", llms));
}

enum MHD_Result api_route_select_llms(struct api_req *r)
{
    json_error_t je;
    json_t *body = r->n_body ? json_loadb(r->body, r->n_body, 0, &je) : NULL;
    if (r->n_body && !body)
        return api_send_error(r, 400, "invalid_request_error",
                              "the request body is not valid JSON: %s (line %d)", je.text, je.line);
    json_t *list = json_is_object(body) ? json_object_get(body, "llms") : body;
    enum MHD_Result ret;
    if (json_is_object(body) && !list) {
        ret = api_send_error(r, 400, "invalid_request_error",
                             "send a list of {\"name\": ..., \"backend\": ...} objects "
                             "(or {\"llms\": [...]})");
        goto out;
    }
    if (!list || json_is_null(list) || (json_is_array(list) && json_array_size(list) == 0)) {
        agent_select_llms(r->k->agents, NULL);
        ret = api_send_json(r, 200, json_pack("{s:s,s:s}", "status", "warning", "message",
                                              "No LLM selected"));
        goto out;
    }
    if (!json_is_array(list)) {
        ret = api_send_error(r, 400, "invalid_request_error",
                             "send a list of {\"name\": ..., \"backend\": ...} objects");
        goto out;
    }
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        json_t *name = json_object_get(e, "name");
        if (!json_is_string(name)) {
            ret = api_send_error(r, 400, "invalid_request_error", "llms[%zu].name must be a string", i);
            goto out;
        }
        if (!kernel_find_core(r->k, json_string_value(name))) {
            ret = api_send_error(r, 404, "not_found_error",
                                 "llms[%zu]: model '%s' is not served by this kernel; "
                                 "GET /core/llms/list shows the configured ones",
                                 i, json_string_value(name));
            goto out;
        }
    }
    agent_select_llms(r->k->agents, list);
    char *s = json_dumps(list, JSON_COMPACT);
    char msg[1024];
    snprintf(msg, sizeof msg, "LLMs %s selected", s ? s : "");
    free(s);
    ret = api_send_json(r, 200, json_pack("{s:s,s:s}", "status", "success", "message", msg));
out:
    json_decref(body);
    return ret;
}

enum MHD_Result api_route_selected_llms(struct api_req *r)
{
    json_t *sel = agent_selected_llms(r->k->agents);
    if (json_array_size(sel) == 0)
        return api_send_json(r, 200, json_pack("{s:s,s:s,s:o}", "status", "warning", "message",
                                               "No LLM selected", "llms", sel));
    char *s = json_dumps(sel, JSON_COMPACT);
    char msg[1024];
    snprintf(msg, sizeof msg, "LLM %s selected", s ? s : "");
    free(s);
    return api_send_json(r, 200, json_pack("{s:s,s:s,s:o}", "status", "success", "message", msg,
                                           "llms", sel));
}

/* ---- /core/refresh ---- */

enum MHD_Result api_route_core_refresh(struct api_req *r)
{
    struct kernel *k = r->k;
    if (!k->config_path)
        return api_send_json(r, 200, json_pack("{s:s,s:s,s:[]}", "status", "warning", "message",
                                               "the kernel was started without --config: there is "
                                               "no configuration file to reload",
                                               "changes"));
    struct aios_config nc;
    char err[1024] = "";
    int rc = config_load_file(&nc, k->config_path, err, sizeof err);
    if (rc) {
        config_free(&nc);
        return api_send_error(r, 400, "invalid_request_error",
                              "configuration not reloaded (the running one is unchanged): %s", err);
    }
    json_t *changes = json_array();
    json_t *oldraw = k->cfg.raw, *newraw = nc.raw;
    /* models, one by one (kernel/models.c): new ones loaded, changed ones
     * rebuilt, removed ones retired; unchanged ones are not reloaded. The
     * keys /core/config/update stored count as part of the file. Paths
     * resolve against the running data_dir. */
    free(nc.data_dir);
    nc.data_dir = strdup(k->cfg.data_dir);
    if (!nc.data_dir) {
        config_free(&nc);
        json_decref(changes);
        return api_send_error(r, 500, "server_error", "out of memory");
    }
    kernel_models_merge_keys(&nc);
    json_t *unchanged_models = json_array();
    if (kernel_models_refresh(k, &nc, changes, unchanged_models) == AIOS_EBUSY) {
        config_free(&nc);
        json_decref(changes);
        json_decref(unchanged_models);
        return api_send_error(r, 409, "conflict", "another /core/refresh is loading models right "
                              "now; try again when it has answered");
    }

    /* llms keys other than models */
    json_t *ol = json_object_get(oldraw, "llms"), *nl = json_object_get(newraw, "llms");
    const char *key;
    json_t *v;
    size_t i;
    json_object_foreach(nl, key, v)
    {
        if (!strcmp(key, "models") || !strcmp(key, "remote")) continue; /* models.c */
        json_t *o = json_object_get(ol, key);
        if (!o || !json_equal(o, v)) {
            char kk[300];
            snprintf(kk, sizeof kk, "llms.%s", key);
            kernel_models_add_change(changes, kk, json_incref(o), json_incref(v), false,
                                     "takes effect at the next restart");
        }
    }
    /* every other top-level section, agent_factory applied live */
    json_t *keys = json_object();
    json_object_foreach(oldraw, key, v) json_object_set_new(keys, key, json_true());
    json_object_foreach(newraw, key, v) json_object_set_new(keys, key, json_true());
    json_object_foreach(keys, key, v)
    {
        if (!strcmp(key, "llms") || !strcmp(key, "agent_factory") || !strcmp(key, "api_keys"))
            continue; /* models.c reports api_keys */
        json_t *o = json_object_get(oldraw, key), *n = json_object_get(newraw, key);
        if (o && n && json_equal(o, n)) continue;
        if (!o && !n) continue;
        kernel_models_add_change(changes, key, json_incref(o), json_incref(n), false,
                                 "takes effect at the next restart");
    }
    json_decref(keys);
    /* agent_factory: live. Its paths resolve against the running data_dir. */
    json_t *applied = json_array();
    agent_factory_reconfigure(k->agents, &nc, applied);
    json_array_foreach(applied, i, v)
    {
        json_object_set_new(v, "applied", json_true());
        json_array_append(changes, v);
    }
    json_decref(applied);
    json_t *ps = agent_ps_json(k->agents);
    int running = 0;
    json_array_foreach(ps, i, v) running += !strcmp(json_string_value(json_object_get(v, "status")), "running");
    json_decref(ps);
    size_t n_applied = 0, n_restart = 0;
    json_array_foreach(changes, i, v)
    {
        if (json_is_true(json_object_get(v, "applied"))) n_applied++;
        else n_restart++;
    }
    char msg[512];
    snprintf(msg, sizeof msg, "configuration reloaded from %s: %zu change(s) applied, %zu take effect "
             "at the next restart; %d running agent(s) kept, %zu model(s) unchanged and not reloaded",
             k->config_path, n_applied, n_restart, running, json_array_size(unchanged_models));
    LOG_INFO("kernel", "%s", msg);
    config_free(&nc);
    return api_send_json(r, 200, json_pack("{s:s,s:s,s:o,s:o,s:i}", "status", "success", "message",
                                           msg, "changes", changes, "models_unchanged",
                                           unchanged_models, "running_agents", running));
}

/* ---- /core/config/update ---- */

static const char *const PROVIDERS[] = {"openai", "gemini", "anthropic", "groq", "huggingface",
                                        "novita", "deepseek", "together", "mistral", "ollama",
                                        "vllm", "sglang", "openrouter"};

enum MHD_Result api_route_config_update(struct api_req *r)
{
    enum MHD_Result sent;
    json_t *body = api_parse_body(r, &sent);
    if (!body) return sent;
    enum MHD_Result ret;
    json_t *prov = json_object_get(body, "provider"), *key = json_object_get(body, "api_key");
    char *path = NULL;
    json_t *keys = NULL;
    if (!json_is_string(prov) || !json_string_length(prov) || !json_is_string(key) ||
        !json_string_length(key)) {
        ret = api_send_error(r, 400, "invalid_request_error",
                             "Missing required fields: provider, api_key (both non-empty strings)");
        goto out;
    }
    const char *p = json_string_value(prov);
    bool known = json_object_get(config_lookup(&r->k->cfg, "api_keys"), p) != NULL;
    for (size_t i = 0; i < sizeof PROVIDERS / sizeof PROVIDERS[0]; i++)
        known |= !strcmp(PROVIDERS[i], p);
    if (!known) {
        ret = api_send_error(r, 400, "invalid_request_error", "Provider %s is not supported", p);
        goto out;
    }
    path = config_resolve_path(&r->k->cfg, "api_keys.json");
    keys = path ? json_load_file(path, 0, NULL) : NULL;
    if (!json_is_object(keys)) {
        json_decref(keys);
        keys = json_object();
    }
    json_object_set(keys, p, key);
    char tmp[PATH_MAX + 16];
    snprintf(tmp, sizeof tmp, "%s.tmp", path ? path : "");
    int fd = path ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
    char *s = json_dumps(keys, JSON_INDENT(2));
    bool ok = fd >= 0 && s && write(fd, s, strlen(s)) == (ssize_t)strlen(s);
    if (fd >= 0) ok = (close(fd) == 0) && ok;
    ok = ok && rename(tmp, path) == 0;
    free(s);
    if (!ok) {
        ret = api_send_error(r, 500, "server_error", "cannot write %s: %s", path ? path : "api_keys.json",
                             strerror(errno));
        goto out;
    }
    char msg[PATH_MAX + 256];
    snprintf(msg, sizeof msg, "API key for %s stored in %s (mode 0600); POST /core/refresh applies "
             "it to the remote models that use it (so does a restart)", p, path);
    ret = api_send_json(r, 200, json_pack("{s:s,s:s}", "status", "success", "message", msg));
out:
    free(path);
    json_decref(keys);
    json_decref(body);
    return ret;
}

enum MHD_Result api_route_core_cleanup(struct api_req *r)
{
    int killed, removed;
    agent_cleanup(r->k->agents, &killed, &removed);
    char msg[256];
    snprintf(msg, sizeof msg, "cleaned up: %d running agent(s) terminated, %d finished record(s) "
             "removed; the kernel keeps serving", killed, removed);
    return api_send_json(r, 200, json_pack("{s:s,s:s,s:i,s:i}", "status", "success", "message", msg,
                                           "killed", killed, "removed", removed));
}

/* ---- agents ---- */

static void kernel_url(struct kernel *k, char *out, size_t outlen)
{
    const char *h = k->cfg.host;
    if (!h || !*h || !strcmp(h, "0.0.0.0") || !strcmp(h, "::") || !strcmp(h, "localhost"))
        h = "127.0.0.1";
    if (strchr(h, ':')) snprintf(out, outlen, "http://[%s]:%d", h, kernel_port(k));
    else snprintf(out, outlen, "http://%s:%d", h, kernel_port(k));
}

enum MHD_Result api_route_agents_submit(struct api_req *r)
{
    enum MHD_Result sent;
    json_t *body = api_parse_body(r, &sent);
    if (!body) return sent;
    enum MHD_Result ret;
    json_t *id = json_object_get(body, "agent_id");
    json_t *cfg = json_object_get(body, "agent_config");
    json_t *task = json_object_get(cfg, "task");
    if (!json_is_string(id) || !json_string_length(id)) {
        ret = api_send_error(r, 400, "invalid_request_error",
                             "'agent_id' must name an agent package (a folder under the agents "
                             "directory, or an absolute path)");
        goto out;
    }
    if (!json_is_object(cfg) || !json_is_string(task)) {
        ret = api_send_error(r, 400, "invalid_request_error",
                             "'agent_config' must be an object with a string 'task'");
        goto out;
    }
    char url[300], err[1024] = "";
    kernel_url(r->k, url, sizeof url);
    uint64_t xid = 0;
    int rc = agent_submit(r->k->agents, json_string_value(id), json_string_value(task), url, &xid,
                          err, sizeof err);
    if (rc) {
        unsigned st = rc == AIOS_ENOTFOUND ? 404 : rc == AIOS_EINVAL ? 400 : 500;
        ret = api_send_error(r, st, st == 404 ? "not_found_error" : st == 400 ? "invalid_request_error"
                                                                                : "server_error",
                             "%s", err);
        goto out;
    }
    char msg[512];
    snprintf(msg, sizeof msg, "Agent %s submitted for execution", json_string_value(id));
    ret = api_send_json(r, 200, json_pack("{s:s,s:I,s:s}", "status", "success", "execution_id",
                                          (json_int_t)xid, "message", msg));
out:
    json_decref(body);
    return ret;
}

enum MHD_Result api_route_agents_ps(struct api_req *r)
{
    return api_send_json(r, 200, json_pack("{s:s,s:o}", "status", "success", "processes",
                                           agent_ps_json(r->k->agents)));
}

enum MHD_Result api_route_agents_accounting(struct api_req *r)
{
    return api_send_json(r, 200, json_pack("{s:s,s:o}", "status", "success", "agents",
                                           agent_accounting_json(r->k->agents)));
}

static int parse_id(const char *s, uint64_t *out)
{
    if (!s || !*s) return AIOS_EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || s[0] == '-' || s[0] == '+' || v == 0) return AIOS_EINVAL;
    *out = v;
    return 0;
}

#define WITH_ID(r, id)                                                                         \
    uint64_t id = 0;                                                                           \
    if (parse_id((r)->n_params ? (r)->params[0] : NULL, &id))                                  \
        return api_send_error(r, 400, "invalid_request_error",                                 \
                              "execution id must be a positive integer, got '%s'",             \
                              (r)->n_params ? (r)->params[0] : "");

enum MHD_Result api_route_agent_status(struct api_req *r)
{
    WITH_ID(r, id);
    json_t *o = agent_proc_json(r->k->agents, id);
    if (!o)
        return api_send_error(r, 404, "not_found_error",
                              "no agent execution %llu (GET /agents/ps lists them)",
                              (unsigned long long)id);
    const char *st = json_string_value(json_object_get(o, "status"));
    json_object_set_new(o, "message", json_string(!strcmp(st, "running") ? "Execution in progress"
                                                  : !strcmp(st, "completed") ? "Execution completed"
                                                  : !strcmp(st, "killed") ? "Execution killed by a signal"
                                                                           : "Execution failed"));
    return api_send_json(r, 200, o);
}

enum MHD_Result api_route_agent_kill(struct api_req *r)
{
    WITH_ID(r, id);
    int sig = SIGTERM;
    if (r->n_body) {
        json_t *b = json_loadb(r->body, r->n_body, 0, NULL);
        json_t *s = json_object_get(b, "signal");
        if (!b || (s && !json_is_string(s))) {
            json_decref(b);
            return api_send_error(r, 400, "invalid_request_error",
                                  "body must be {\"signal\": \"TERM\"|\"KILL\"|\"INT\"} or empty");
        }
        const char *v = json_string_value(s);
        if (!v || !strcmp(v, "TERM") || !strcmp(v, "SIGTERM")) sig = SIGTERM;
        else if (!strcmp(v, "KILL") || !strcmp(v, "SIGKILL")) sig = SIGKILL;
        else if (!strcmp(v, "INT") || !strcmp(v, "SIGINT")) sig = SIGINT;
        else {
            enum MHD_Result ret = api_send_error(r, 400, "invalid_request_error",
                                                 "signal must be TERM, KILL or INT, got '%s'", v);
            json_decref(b);
            return ret;
        }
        json_decref(b);
    }
    int rc = agent_kill(r->k->agents, id, sig);
    if (rc == AIOS_ENOTFOUND)
        return api_send_error(r, 404, "not_found_error", "no agent execution %llu",
                              (unsigned long long)id);
    if (rc)
        return api_send_error(r, 409, "conflict", "agent execution %llu is not running",
                              (unsigned long long)id);
    char msg[128];
    snprintf(msg, sizeof msg, "sent SIG%s to agent execution %llu", sig == SIGKILL ? "KILL" : sig == SIGINT ? "INT" : "TERM",
             (unsigned long long)id);
    return api_send_json(r, 200, json_pack("{s:s,s:s,s:I}", "status", "success", "message", msg,
                                           "execution_id", (json_int_t)id));
}

static int64_t query_i64(struct api_req *r, const char *name)
{
    const char *v = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
    if (!v) return 0;
    char *end;
    long long x = strtoll(v, &end, 10);
    return (*end || x < 0) ? -1 : x;
}

/* text that may not be valid UTF-8 -> JSON string (bad bytes become U+FFFD) */
static json_t *text_json(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    if (j) return j;
    char *o = malloc(n * 3 + 1);
    size_t w = 0;
    if (!o) return json_string("");
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++) ok = ((unsigned char)s[i + k] & 0xC0) == 0x80;
        if (ok && len > 1) ok = json_stringn(s + i, len) != NULL; /* overlong, surrogates */
        if (ok && c != 0) {
            memcpy(o + w, s + i, len);
            w += len;
            i += len;
        } else {
            memcpy(o + w, "\xEF\xBF\xBD", 3);
            w += 3;
            i++;
        }
    }
    j = json_stringn(o, w);
    free(o);
    return j ? j : json_string("");
}

enum MHD_Result api_route_agent_logs(struct api_req *r)
{
    WITH_ID(r, id);
    int64_t oo = query_i64(r, "stdout_offset"), eo = query_i64(r, "stderr_offset");
    if (oo < 0 || eo < 0)
        return api_send_error(r, 400, "invalid_request_error",
                              "stdout_offset and stderr_offset must be non-negative integers");
    /* the status first: if it is final, everything below is the whole log */
    json_t *o = agent_proc_json(r->k->agents, id);
    if (!o)
        return api_send_error(r, 404, "not_found_error", "no agent execution %llu",
                              (unsigned long long)id);
    char *out = NULL, *err = NULL;
    size_t n_out = 0, n_err = 0;
    int64_t no = oo, ne = eo;
    agent_log_read(r->k->agents, id, "stdout", oo, 256 * 1024, &out, &n_out, &no);
    agent_log_read(r->k->agents, id, "stderr", eo, 256 * 1024, &err, &n_err, &ne);
    json_t *b = json_pack("{s:I,s:O,s:o,s:o,s:I,s:I,s:O}", "execution_id", (json_int_t)id, "status",
                          json_object_get(o, "status"), "stdout", text_json(out ? out : "", n_out),
                          "stderr", text_json(err ? err : "", n_err), "stdout_offset",
                          (json_int_t)no, "stderr_offset", (json_int_t)ne, "result",
                          json_object_get(o, "result"));
    json_object_set(b, "exit_code", json_object_get(o, "exit_code"));
    free(out);
    free(err);
    json_decref(o);
    return api_send_json(r, 200, b);
}

enum MHD_Result api_route_mcp_server(struct api_req *r)
{
    const char *keys[] = {"mcp_server_script_path", "mcp.server_script_path",
                          "mcp.mcp_server_script_path", "tools.mcp_server_script_path"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = config_lookup(&r->k->cfg, keys[i]);
        if (!json_is_string(v)) continue;
        char *p = config_resolve_path(&r->k->cfg, json_string_value(v));
        if (p && access(p, R_OK) == 0) {
            json_t *o = json_pack("{s:s,s:s}", "status", "success", "path", p);
            free(p);
            return api_send_json(r, 200, o);
        }
        free(p);
    }
    return api_send_json(r, 200, json_pack("{s:s,s:s}", "status", "warning", "message",
                                           "MCP server not found"));
}
