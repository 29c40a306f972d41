/* The AIOS wire protocol: POST /query, as Cerebrum agents send it.
 *
 *   {"agent_name": "...", "query_type": "llm"|"memory"|"storage"|"tool",
 *    "query_data": {...}}
 *
 * Each query becomes one syscall of the matching kind, except the LLM
 * actions call_tool and operate_file, which chain an LLM syscall with
 * tool / storage syscalls (see "LLM actions" below). LLM queries are
 * parsed once into the typed request the chat-completions route builds
 * (struct llm_req), with the same field parsers (messages, temperature,
 * top_p, seed, stop, max_new_tokens as the maximum length, response_format,
 * tools; `llms[0].name` picks the model, else the first one). Memory and
 * storage queries carry {operation_type, params}; tool queries carry
 * {tool_calls}. They go to the executor the matching manager registered
 * (kernel_register_executor); without one the answer is 501.
 *
 * The answer has the reference's shape:
 *   {"response": {...}, "start_times": [s], "end_times": [s],
 *    "waiting_times": [s], "turnaround_times": [s]}
 * with wall-clock seconds, filled for every call. Failures are a real HTTP
 * status with {"error": {...}}, except where the reference kernel answers
 * 200 and Cerebrum agents go on because of it (they call
 * raise_for_status()): a tool query or call_tool whose calls were well
 * formed and allowed but all failed, operate_file whose operations all
 * failed (not refused), and call_tool whose model made no complete call.
 * Those are a 200 whose response has "finished": false, "error" and the
 * status the failure would have had in "status_code". Malformed and
 * unauthorized requests keep their 4xx. */
#include "api/api.h"

#include "access/access.h"
#include "agents/agent.h"
#include "hub/hub.h"
#include "kernel/query.h"
#include "llm/structured.h"
#include "memory/mem.h"
#include "storage/storage.h"
#include "tools/tools.h"
#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double mono_to_wall_s(int64_t t_mono_us)
{
    int64_t now_mono = util_now_us(), now_wall = util_wall_us();
    return (double)(now_wall - (now_mono - t_mono_us)) / 1e6;
}

/* one entry per run slice (a preempted call runs in several); the call is
 * final, so the slice fields no longer change */
static json_t *with_times(struct syscall *sc, json_t *response)
{
    double created = mono_to_wall_s(sc->t_created_us);
    double start = mono_to_wall_s(sc->t_start_us), end = mono_to_wall_s(sc->t_end_us);
    int n = sc->n_slices < SYSCALL_MAX_SLICES ? sc->n_slices : SYSCALL_MAX_SLICES;
    if (!response) return NULL; /* as json_pack's "o" would */
    json_t *st = json_array(), *et = json_array(), *wt = json_array(), *tt = json_array();
    /* built by hand, not json_pack: its format parse cost more than the rest */
    json_t *o = json_object();
    json_object_set_new(o, "response", response);
    json_object_set_new(o, "start_times", st);
    json_object_set_new(o, "end_times", et);
    json_object_set_new(o, "waiting_times", wt);
    json_object_set_new(o, "turnaround_times", tt);
    if (n == 0) {
        json_array_append_new(st, json_real(start));
        json_array_append_new(et, json_real(end));
        json_array_append_new(wt, json_real(start - created));
        json_array_append_new(tt, json_real(end - created));
        return o;
    }
    double prev_end = created;
    for (int i = 0; i < n; i++) {
        double s0 = mono_to_wall_s(sc->t_slice_start_us[i]);
        double e0 = sc->t_slice_end_us[i] ? mono_to_wall_s(sc->t_slice_end_us[i]) : end;
        json_array_append_new(st, json_real(s0));
        json_array_append_new(et, json_real(e0));
        json_array_append_new(wt, json_real(s0 - prev_end));
        json_array_append_new(tt, json_real(e0 - created));
        prev_end = e0;
    }
    return o;
}

/* Per-agent accounting (src/agents/): to the agent name, and to the
 * process whose channel it came on or whose token came in X-Aios-Agent-Token. */
static void account(struct api_req *r, struct syscall *sc, bool ok, int n_prompt, int n_gen)
{
    if (!r->k->agents) return;
    const char *tok = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Aios-Agent-Token");
    double wait = sc->t_start_us ? (double)(sc->t_start_us - sc->t_created_us) / 1e6 : 0;
    double turn = sc->t_end_us ? (double)(sc->t_end_us - sc->t_created_us) / 1e6 : 0;
    agent_account(r->k->agents, r->acc_run, tok, sc->agent, sc->kind, ok, wait, turn, n_prompt,
                  n_gen);
}

static enum MHD_Result query_error(struct api_req *r)
{
    struct syscall *sc = r->sc;
    account(r, sc, false, 0, 0);
    const char *type;
    unsigned st = api_status_for(sc->err, &type);
    if (sc->http_status) st = (unsigned)sc->http_status;
    return api_send_error(r, st, type, "%s", sc->errmsg);
}

/* the model's calls [{"name","arguments"}] -> AIOS [{"name","parameters","id"}] */
static json_t *aios_calls(struct syscall *sc, json_t *model_calls)
{
    json_t *oc = api_openai_tool_calls(sc, model_calls), *calls = json_array();
    size_t i;
    json_t *c;
    json_array_foreach(model_calls, i, c) {
        json_array_append_new(calls, json_pack("{s:O,s:O,s:O}", "name", json_object_get(c, "name"),
                                               "parameters", json_object_get(c, "arguments"),
                                               "id", json_object_get(json_array_get(oc, i), "id")));
    }
    json_decref(oc);
    return calls;
}

static enum MHD_Result llm_finish(struct api_req *r)
{
    struct syscall *sc = r->sc;
    if (sc->status != SYSCALL_STATUS_DONE) return query_error(r);
    struct llm_res *res = sc->res;
    account(r, sc, true, res->n_prompt, res->n_gen);
    json_t *resp = json_pack("{s:s,s:s%,s:n,s:b,s:n,s:i,s:{s:i,s:i,s:i}}", "response_class", "llm",
                             "response_message", res->text, res->len, "tool_calls", "finished", 1,
                             "error", "status_code", 200, "usage", "prompt_tokens", res->n_prompt,
                             "completion_tokens", res->n_gen, "cached_tokens",
                             res->n_prompt - res->n_prompt_computed);
    /* tool calls in the AIOS shape [{"name","parameters","id"}]; the
     * message is null when the answer is only calls */
    struct llm_structured_result sr;
    char err[512];
    int rc = llm_structured_result(((struct llm_req *)sc->req)->structured, res, &sr, err, sizeof err);
    if (rc) {
        json_decref(resp);
        return api_send_error(r, rc == AIOS_EIO ? 502 : 500, rc == AIOS_EIO ? "upstream_error" : "server_error",
                              "%s", rc == AIOS_ENOMEM ? "out of memory" : err);
    }
    if (sr.calls) {
        json_t *calls = aios_calls(sc, sr.calls);
        json_decref(sr.calls);
        json_object_set_new(resp, "tool_calls", calls);
        if (sr.content_len == 0) json_object_set_new(resp, "response_message", json_null());
        else json_object_set_new(resp, "response_message", json_stringn(res->text, sr.content_len));
    }
    json_object_set_new(resp, "finish_reason", json_string(sr.finish));
    if (((struct llm_req *)sc->req)->memory) /* what memory.auto_inject added */
        json_object_set(resp, "memory_injected", ((struct llm_req *)sc->req)->memory);
    mem_auto_extract(r->k, sc); /* memory.auto_extract: store the turn as a note */
    return api_send_json(r, 200, with_times(sc, resp));
}

static enum MHD_Result kq_finish(struct api_req *r)
{
    struct syscall *sc = r->sc;
    if (sc->status != SYSCALL_STATUS_DONE) return query_error(r);
    struct kq_res *res = sc->res;
    /* a tool query whose calls all failed is a 200 with finished: false */
    account(r, sc, !json_is_false(json_object_get(res->response, "finished")), 0, 0);
    api_share_link_fill(r, res->response); /* a share link: on the address the caller used */
    return api_send_json(r, 200, with_times(sc, json_incref(res->response)));
}

/* The model an llm query names: query_data.llms[0].name, else the ones
 * chosen with POST /user/select/llms, else the default core's name.
 * *model malloc'd; NULL with a message (a 400) or, out of memory, "". */
static char *llm_model_name(struct kernel *k, json_t *qd, char *err, size_t errlen)
{
    struct llm_core *dc = kernel_default_core(k);
    const char *model = dc ? dc->name : "";
    json_t *llms = json_object_get(qd, "llms");
    json_t *selected = k->agents ? agent_selected_llms(k->agents) : NULL;
    char *out = NULL;
    if ((!llms || json_is_null(llms)) && json_array_size(selected)) llms = selected;
    if (llms && !json_is_null(llms)) {
        if (!json_is_array(llms)) {
            snprintf(err, errlen, "query_data.llms must be a list of {\"name\", \"backend\"} or null");
            goto done;
        }
        json_t *first = json_array_get(llms, 0);
        json_t *name = json_object_get(first, "name");
        if (first && !json_is_string(name)) {
            snprintf(err, errlen, "query_data.llms[0].name must be a string");
            goto done;
        }
        if (name) model = json_string_value(name);
    }
    out = strdup(model);
    if (!out) snprintf(err, errlen, "out of memory");
done:
    json_decref(selected); /* model may point into it: copied above */
    return out;
}

/* ---- LLM actions that run what the model asked for ----
 *
 * call_tool: the model answers with tool calls (forced, grammar
 * constrained), then one TOOL syscall runs them; the answer is the tool
 * executor's response ({"response_class":"tool",...}) plus the model's
 * tool_calls, as the reference's call_tool returns the tool response.
 *
 * operate_file: the model gets the storage operations as tools and a
 * system prompt, answers with calls, and each call becomes one STORAGE
 * syscall for the calling agent, run in the model's order. The answer is
 * {"response_class":"llm","response_message": summary, "tool_calls",
 * "operations": [per-call result]}; the summary is written by the kernel
 * (the reference asks the model a second time; a kernel-written one is
 * exact and costs no tokens).
 *
 * Nothing blocks an HTTP thread: each step is a syscall submitted with
 * api_submit_and_wait whose resume function submits the next one. The
 * request owns one syscall at a time in r->sc; finished ones are kept in
 * the action state (timings, released in action_free). The answer's
 * start/end/waiting/turnaround times list every syscall of the chain. */
enum action_kind { ACT_CALL_TOOL, ACT_OPERATE_FILE };

#define ACT_MAX_STEPS (1 + LLM_MAX_TOOL_CALLS)

struct action_state {
    enum action_kind kind;
    const char *agent; /* borrowed from the first syscall (kept alive in done[0]) */
    struct syscall *done[ACT_MAX_STEPS];
    int n_done;
    json_t *calls; /* AIOS-shaped model calls */
    json_t *ops;   /* operate_file: results so far */
    size_t next;   /* operate_file: next call to run */
    size_t n_fail;
    char first_err[512];
    int first_status;
};

static void action_free(void *p)
{
    struct action_state *st = p;
    if (!st) return;
    for (int i = 0; i < st->n_done; i++) syscall_unref(st->done[i]);
    json_decref(st->calls);
    json_decref(st->ops);
    free(st);
}

/* move the finished r->sc into the state */
static void action_keep(struct api_req *r, struct action_state *st)
{
    if (st->n_done < ACT_MAX_STEPS) st->done[st->n_done++] = r->sc;
    else syscall_unref(r->sc);
    r->sc = NULL;
}

static json_t *action_times(struct action_state *st, json_t *response)
{
    json_t *s = json_array(), *e = json_array(), *w = json_array(), *t = json_array();
    for (int i = 0; i < st->n_done; i++) {
        struct syscall *sc = st->done[i];
        double created = mono_to_wall_s(sc->t_created_us);
        double start = mono_to_wall_s(sc->t_start_us), end = mono_to_wall_s(sc->t_end_us);
        json_array_append_new(s, json_real(start));
        json_array_append_new(e, json_real(end));
        json_array_append_new(w, json_real(start - created));
        json_array_append_new(t, json_real(end - created));
    }
    return json_pack("{s:o,s:o,s:o,s:o,s:o}", "response", response, "start_times", s, "end_times",
                     e, "waiting_times", w, "turnaround_times", t);
}

static enum MHD_Result action_tool_done(struct api_req *r)
{
    struct action_state *st = r->state;
    struct syscall *sc = r->sc;
    if (sc->status != SYSCALL_STATUS_DONE) return query_error(r);
    json_t *resp = json_deep_copy(((struct kq_res *)sc->res)->response);
    account(r, sc, !json_is_false(json_object_get(resp, "finished")), 0, 0);
    action_keep(r, st);
    if (!resp) return api_send_error(r, 500, "server_error", "out of memory");
    json_object_set(resp, "tool_calls", st->calls);
    return api_send_json(r, 200, action_times(st, resp));
}

static enum MHD_Result action_sto_done(struct api_req *r);

/* A storage syscall for op and params (borrowed), the request parsed here,
 * once (sto_req_parse). One that does not parse is a syscall that failed
 * before it ran, answered as one that failed in the manager. */
static struct syscall *storage_syscall(const char *agent, const char *op, json_t *params)
{
    struct sto_req *q = NULL;
    int http = 400;
    char err[1024];
    int rc = sto_req_parse(op, params, &q, &http, err, sizeof err);
    if (rc == AIOS_ENOMEM) return NULL;
    void *lane = q && sto_req_reads_only(q) ? SCHED_READ_LANE : NULL;
    struct syscall *sc = syscall_new(SYSCALL_KIND_STORAGE, agent, lane, q, sto_req_free);
    if (sc && rc) syscall_fail(sc, rc, http, "%s", err);
    return sc;
}

/* run the next storage call of operate_file, or answer */
static enum MHD_Result action_sto_next(struct api_req *r)
{
    struct action_state *st = r->state;
    size_t n = json_array_size(st->calls);
    if (st->next < n) {
        json_t *c = json_array_get(st->calls, st->next);
        json_t *p = json_object_get(c, "parameters");
        json_t *params = json_is_object(p) ? json_deep_copy(p) : json_object();
        struct syscall *sc = params ? storage_syscall(st->agent, json_string_value(json_object_get(c, "name")), params) : NULL;
        json_decref(params);
        if (!sc) return api_send_error(r, 500, "server_error", "out of memory");
        if (syscall_status_final(sc->status)) { /* did not parse */
            r->sc = sc;
            return action_sto_done(r);
        }
        return api_submit_and_wait(r, sc, action_sto_done);
    }
    /* the summary: one line per operation */
    char *sum = NULL;
    size_t ns = 0, cap = 0;
    char line[1024];
    int w = snprintf(line, sizeof line, "Ran %zu file operation%s for agent %s (%zu succeeded).", n,
                     n == 1 ? "" : "s", st->agent, n - st->n_fail);
    util_buf_append(&sum, &ns, &cap, line, (size_t)w < sizeof line ? (size_t)w : sizeof line - 1);
    size_t i;
    json_t *o;
    json_array_foreach(st->ops, i, o) {
        json_t *res = json_object_get(o, "response");
        const char *msg = json_is_true(json_object_get(o, "ok"))
                              ? json_string_value(json_object_get(res, "response_message"))
                              : json_string_value(json_object_get(o, "error"));
        char *args = json_dumps(json_object_get(o, "parameters"), JSON_COMPACT);
        w = snprintf(line, sizeof line, "\n%zu. %s %.200s: %s%.300s", i + 1,
                     json_string_value(json_object_get(o, "name")), args ? args : "{}",
                     json_is_true(json_object_get(o, "ok")) ? "" : "failed: ", msg ? msg : "done");
        free(args);
        util_buf_append(&sum, &ns, &cap, line, (size_t)w < sizeof line ? (size_t)w : sizeof line - 1);
    }
    /* every operation failed: refused ones (403) stay an error; otherwise
     * the reference's answer, a 200 with finished: false (Cerebrum's client
     * stops the agent on any 4xx/5xx) and the first failure's status */
    bool all_failed = n > 0 && st->n_fail == n;
    if (all_failed && st->first_status == 403) {
        enum MHD_Result ret = api_send_error(r, 403, "permission_error",
                                             "every file operation the model produced failed; "
                                             "first: %s. %.600s", st->first_err, sum ? sum : "");
        free(sum);
        return ret;
    }
    json_t *err = json_null();
    if (st->n_fail) {
        snprintf(line, sizeof line, "%zu of %zu file operations failed; first: %s", st->n_fail, n,
                 st->first_err);
        err = json_string(line);
    }
    json_t *resp = json_pack("{s:s,s:s%,s:O,s:O,s:b,s:o,s:i}", "response_class", "llm",
                             "response_message", sum ? sum : "", ns, "tool_calls", st->calls,
                             "operations", st->ops, "finished", !all_failed, "error",
                             err ? err : json_null(), "status_code",
                             all_failed ? (st->first_status ? st->first_status : 400) : 200);
    free(sum);
    if (!resp) return api_send_error(r, 500, "server_error", "out of memory");
    return api_send_json(r, 200, action_times(st, resp));
}

static enum MHD_Result action_sto_done(struct api_req *r)
{
    struct action_state *st = r->state;
    struct syscall *sc = r->sc;
    json_t *c = json_array_get(st->calls, st->next++);
    json_t *o = json_pack("{s:O,s:O,s:O}", "id", json_object_get(c, "id"), "name",
                          json_object_get(c, "name"), "parameters", json_object_get(c, "parameters"));
    bool ok = sc->status == SYSCALL_STATUS_DONE;
    if (o && ok) {
        json_object_set_new(o, "ok", json_true());
        json_object_set_new(o, "status_code", json_integer(200));
        json_object_set(o, "response", ((struct kq_res *)sc->res)->response);
    } else if (o) {
        unsigned hs = api_status_for(sc->err, NULL);
        if (sc->http_status) hs = (unsigned)sc->http_status;
        json_object_set_new(o, "ok", json_false());
        json_object_set_new(o, "status_code", json_integer(hs));
        json_object_set_new(o, "error", json_string(sc->errmsg));
        if (!st->n_fail++) {
            st->first_status = (int)hs;
            snprintf(st->first_err, sizeof st->first_err, "%.64s: %.400s",
                     json_string_value(json_object_get(c, "name")), sc->errmsg);
        }
    }
    account(r, sc, ok, 0, 0);
    action_keep(r, st);
    if (!o) return api_send_error(r, 500, "server_error", "out of memory");
    json_array_append_new(st->ops, o);
    return action_sto_next(r);
}

/* the model's calls are in: run them */
static enum MHD_Result action_llm_done(struct api_req *r)
{
    struct action_state *st = r->state;
    struct syscall *sc = r->sc;
    if (sc->status != SYSCALL_STATUS_DONE) return query_error(r);
    struct llm_res *res = sc->res;
    account(r, sc, true, res->n_prompt, res->n_gen);
    struct llm_structured_result sr;
    char err[512];
    int rc = llm_structured_result(((struct llm_req *)sc->req)->structured, res, &sr, err, sizeof err);
    if (rc) return api_send_error(r, 500, "server_error", "%s", rc == AIOS_ENOMEM ? "out of memory" : err);
    if (!sr.calls || json_array_size(sr.calls) == 0) {
        json_decref(sr.calls);
        /* with tool_choice "required" this happens only when the output
         * was cut (max_new_tokens) or stopped by a stop string: as the
         * reference, a 200 whose response is not finished */
        char why[256];
        snprintf(why, sizeof why, "the model produced no complete tool call (finish_reason '%s' "
                 "after %d tokens); raise query_data.max_new_tokens", sr.finish, res->n_gen);
        json_t *resp = json_pack("{s:s,s:s,s:n,s:b,s:s,s:i}", "response_class", "tool",
                                 "response_message", "No tool was called by the LLM", "tool_calls",
                                 "finished", 0, "error", why, "status_code", 400);
        action_keep(r, st);
        if (!resp) return api_send_error(r, 500, "server_error", "out of memory");
        return api_send_json(r, 200, action_times(st, resp));
    }
    st->calls = aios_calls(sc, sr.calls);
    json_decref(sr.calls);
    st->agent = sc->agent;
    action_keep(r, st);
    if (!st->calls) return api_send_error(r, 500, "server_error", "out of memory");
    if (st->kind == ACT_OPERATE_FILE) {
        st->ops = json_array();
        if (!st->ops) return api_send_error(r, 500, "server_error", "out of memory");
        return action_sto_next(r);
    }
    json_t *tc = json_array();
    size_t i;
    json_t *c;
    json_array_foreach(st->calls, i, c) {
        json_array_append_new(tc, json_pack("{s:O,s:O}", "name", json_object_get(c, "name"),
                                            "parameters", json_object_get(c, "parameters")));
    }
    struct kq_req *req = kq_req_new("call", json_pack("{s:o}", "tool_calls", tc));
    struct syscall *tsc = req ? syscall_new(SYSCALL_KIND_TOOL, st->agent, NULL, req, kq_req_free) : NULL;
    if (!tsc) return api_send_error(r, 500, "server_error", "out of memory");
    return api_submit_and_wait(r, tsc, action_tool_done);
}

/* the storage operations operate_file offers the model; names are
 * operation types sto_req_parse knows */
static const char STORAGE_TOOLS[] =
    "[{\"type\":\"function\",\"function\":{\"name\":\"create_file\",\"description\":"
    "\"Create a file (optionally with content) in the agent's storage.\",\"parameters\":"
    "{\"type\":\"object\",\"properties\":{\"file_path\":{\"type\":\"string\",\"minLength\":1},"
    "\"content\":{\"type\":\"string\"}},\"required\":[\"file_path\"],\"additionalProperties\":false}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"create_dir\",\"description\":"
    "\"Create a directory.\",\"parameters\":{\"type\":\"object\",\"properties\":{\"dir_path\":"
    "{\"type\":\"string\",\"minLength\":1}},\"required\":[\"dir_path\"],\"additionalProperties\":false}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"write\",\"description\":"
    "\"Write content to a file (a new version; old versions are kept).\",\"parameters\":"
    "{\"type\":\"object\",\"properties\":{\"file_path\":{\"type\":\"string\",\"minLength\":1},"
    "\"content\":{\"type\":\"string\"}},\"required\":[\"file_path\",\"content\"],"
    "\"additionalProperties\":false}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"read\",\"description\":\"Read a file.\","
    "\"parameters\":{\"type\":\"object\",\"properties\":{\"file_path\":{\"type\":\"string\","
    "\"minLength\":1}},\"required\":[\"file_path\"],\"additionalProperties\":false}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"list\",\"description\":"
    "\"List a directory ('' is the agent's root).\",\"parameters\":{\"type\":\"object\","
    "\"properties\":{\"dir_path\":{\"type\":\"string\"}},\"additionalProperties\":false}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"delete_file\",\"description\":\"Delete a file.\","
    "\"parameters\":{\"type\":\"object\",\"properties\":{\"file_path\":{\"type\":\"string\","
    "\"minLength\":1}},\"required\":[\"file_path\"],\"additionalProperties\":false}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"rollback\",\"description\":"
    "\"Roll a file back n versions.\",\"parameters\":{\"type\":\"object\",\"properties\":"
    "{\"file_path\":{\"type\":\"string\",\"minLength\":1},\"n\":{\"type\":\"integer\",\"minimum\":1,"
    "\"maximum\":100}},\"required\":[\"file_path\"],\"additionalProperties\":false}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"retrieve\",\"description\":"
    "\"Search the agent's files by content.\",\"parameters\":{\"type\":\"object\",\"properties\":"
    "{\"query_text\":{\"type\":\"string\",\"minLength\":1},\"k\":{\"type\":\"integer\",\"minimum\":1,"
    "\"maximum\":20}},\"required\":[\"query_text\"],\"additionalProperties\":false}}}]";

static const char *tool_def_name(json_t *t)
{
    json_t *fn = json_object_get(t, "function");
    return json_string_value(json_object_get(fn ? fn : t, "name"));
}

/* operate_file's tools: the storage operations, or the subset (possibly
 * with narrower parameters) the query sent; new reference or NULL + err */
static json_t *operate_file_tools(json_t *given, char *err, size_t errlen)
{
    json_t *all = json_loads(STORAGE_TOOLS, 0, NULL);
    if (!all) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!json_is_array(given) || json_array_size(given) == 0) return all;
    size_t i, j;
    json_t *t, *d;
    json_array_foreach(given, i, t) {
        const char *name = tool_def_name(t);
        bool known = false;
        json_array_foreach(all, j, d) if (name && !strcmp(name, tool_def_name(d))) known = true;
        if (!known) {
            snprintf(err, errlen, "query_data.tools[%zu] ('%s') is not a storage operation; "
                     "operate_file offers create_file, create_dir, write, read, list, "
                     "delete_file, rollback, retrieve (send no tools to offer them all)",
                     i, name ? name : "?");
            json_decref(all);
            return NULL;
        }
    }
    json_decref(all);
    return json_incref(given);
}

#define QFAIL(code, ...)                         \
    do {                                         \
        snprintf(err, errlen, __VA_ARGS__);      \
        *status = (code);                        \
        goto fail;                               \
    } while (0)

/* Parsed once, straight into the typed request: query_data's fields are
 * read where they are (max_new_tokens is the maximum length), and what the
 * action adds (a JSON response_format, operate_file's tools and system
 * prompt, a forced tool choice) is handed to the same field parsers the
 * chat-completions route uses, with no OpenAI body in between. */
int api_query_llm_req(struct kernel *k, const char *agent, json_t *qd, struct llm_req **out,
                      struct llm_core **core_out, enum api_query_action *action_out,
                      unsigned *status, char *err, size_t errlen)
{
    *out = NULL;
    *core_out = NULL;
    *action_out = API_QUERY_CHAT;
    *status = 400;
    struct llm_req *req = NULL;
    json_t *own_rf = NULL, *own_tools = NULL, *own_msgs = NULL, *own_tc = NULL;
    char why[1024] = "";
    int rc;
    json_t *action = json_object_get(qd, "action_type");
    if (action && !json_is_null(action)) {
        if (!json_is_string(action)) QFAIL(400, "query_data.action_type must be a string");
        const char *a = json_string_value(action);
        if (strcmp(a, "chat") && strcmp(a, "chat_with_json_output") &&
            strcmp(a, "chat_with_tool_call_output") && strcmp(a, "call_tool") &&
            strcmp(a, "tool_use") && strcmp(a, "operate_file"))
            QFAIL(400, "action_type '%s' is not known; one of chat, chat_with_json_output, "
                       "chat_with_tool_call_output, call_tool, operate_file", a);
    }
    req = calloc(1, sizeof *req);
    if (!req) QFAIL(500, "out of memory");
    req->model = llm_model_name(k, qd, why, sizeof why);
    if (!req->model) QFAIL(strcmp(why, "out of memory") ? 400 : 500, "%s", why);

    /* the structured-output fields as the query gives them (null = absent) */
    struct llm_structured_in sin = {0};
    json_t **fields[] = {&sin.response_format, &sin.tools, &sin.tool_choice,
                         &sin.parallel_tool_calls};
    static const char *names[] = {"response_format", "tools", "tool_choice",
                                  "parallel_tool_calls"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        json_t *v = json_object_get(qd, names[i]);
        *fields[i] = v && !json_is_null(v) ? v : NULL;
    }
    sin.messages = json_object_get(qd, "messages");

    /* JSON output: the given response_format, else any JSON object;
     * tool call output: tools are required and a call is forced unless
     * tool_choice says otherwise */
    const char *act = json_string_value(action);
    json_t *mrt = json_object_get(qd, "message_return_type");
    bool want_json = (act && !strcmp(act, "chat_with_json_output")) ||
                     (json_is_string(mrt) && !strcmp(json_string_value(mrt), "json"));
    if (want_json && !sin.response_format)
        sin.response_format = own_rf = json_pack("{s:s}", "type", "json_object");
    /* "tool_use": the older Cerebrum name of call_tool */
    bool call_tool = act && (!strcmp(act, "call_tool") || !strcmp(act, "tool_use"));
    bool operate_file = act && !strcmp(act, "operate_file");
    if (call_tool || operate_file) {
        enum syscall_kind need = call_tool ? SYSCALL_KIND_TOOL : SYSCALL_KIND_STORAGE;
        if (!k->pools[need])
            QFAIL(501, "action_type '%s' needs the %s manager, which is not available in this "
                       "kernel", act, syscall_kind_name(need));
        if (want_json) sin.response_format = NULL; /* the output is tool calls */
    }
    if (operate_file) {
        /* the storage operations as tools, and a system prompt first */
        own_tools = operate_file_tools(sin.tools, why, sizeof why);
        if (!own_tools) QFAIL(400, "%s", why);
        if (!json_is_array(sin.messages))
            QFAIL(400, "query_data.messages must be a list of {\"role\", \"content\"}");
        sin.tools = own_tools;
        own_msgs = json_array();
        json_array_append_new(own_msgs,
                              json_pack("{s:s,s:s}", "role", "system", "content",
                                        "You turn the user's file request into calls of the "
                                        "storage operations given as tools. Paths are "
                                        "relative to the agent's own storage root."));
        json_array_extend(own_msgs, sin.messages);
        sin.messages = own_msgs;
    }
    if (act && (!strcmp(act, "chat_with_tool_call_output") || call_tool || operate_file)) {
        if (!json_is_array(sin.tools) || json_array_size(sin.tools) == 0)
            QFAIL(400, "query_data.tools must list at least one tool for %s", act);
        if (!sin.tool_choice || call_tool || operate_file)
            sin.tool_choice = own_tc = json_string("required");
    }

    rc = api_chat_parse_messages(sin.messages, req, why, sizeof why);
    if (!rc) rc = api_chat_parse_sampling(qd, "max_new_tokens", &req->p, why, sizeof why);
    if (!rc) rc = llm_structured_parse_in(&sin, &req->structured, why, sizeof why);
    if (rc == AIOS_ENOMEM) QFAIL(500, "out of memory");
    if (rc) QFAIL(400, "query_data: %s", why);
    struct llm_core *core = kernel_find_core(k, req->model);
    if (!core)
        QFAIL(404, "model '%s' is not served by this kernel; GET /v1/models lists them",
              req->model);
    mem_auto_inject(k, agent, req); /* memory.auto_inject: the agent's relevant notes */
    rc = api_llm_prepare(k, core, req, why, sizeof why);
    if (rc == AIOS_ENOMEM) QFAIL(500, "out of memory");
    if (rc) QFAIL(400, "%s", why);
    json_decref(own_rf);
    json_decref(own_tools);
    json_decref(own_msgs);
    json_decref(own_tc);
    *out = req;
    *core_out = core;
    *action_out = call_tool ? API_QUERY_CALL_TOOL
                            : operate_file ? API_QUERY_OPERATE_FILE : API_QUERY_CHAT;
    *status = 200;
    return 0;
fail:
    json_decref(own_rf);
    json_decref(own_tools);
    json_decref(own_msgs);
    json_decref(own_tc);
    llm_req_free(req);
    return AIOS_EINVAL;
}

static const char *status_type(unsigned status)
{
    switch (status) {
    case 404: return "not_found_error";
    case 500: return "server_error";
    case 501: return "not_implemented";
    default: return "invalid_request_error";
    }
}

static enum MHD_Result query_llm(struct api_req *r, const char *agent, json_t *qd, int prio,
                                 bool prio_set)
{
    char err[1024] = "";
    struct llm_req *req;
    struct llm_core *core;
    enum api_query_action act;
    unsigned status;
    if (api_query_llm_req(r->k, agent, qd, &req, &core, &act, &status, err, sizeof err))
        return api_send_error(r, status, status_type(status), "%s", err);
    /* KV affinity: the kernel that retains this agent's conversation */
    enum MHD_Result fsent;
    if (api_affinity_forward(r, core, api_aios_query, &fsent)) {
        llm_req_free(req);
        return fsent;
    }
    /* call_tool runs what the model picks among the tools it is offered:
     * each one the agent may not call is refused now, before tokens are
     * spent (the tool manager checks the tool that runs again) */
    for (size_t i = 0; act == API_QUERY_CALL_TOOL && req->structured && i < req->structured->n_tools;
         i++) {
        /* a hub tool is checked by the author/name it runs as (a bare
         * name as Cerebrum's tools call themselves) */
        const char *name = req->structured->tools[i].name;
        char canon[2 * HUB_NAME_MAX + 2];
        if (r->k->hub && r->k->tools && !tool_find(r->k->tools, name) &&
            hub_tool_canonical(r->k->hub, name, canon, sizeof canon) == 0)
            name = canon;
        if (acc_check_tool(r->k->access, agent, !r->acc_admin, 0, name, "call_tool offer", err,
                           sizeof err)) {
            llm_req_free(req);
            return api_send_error(r, 403, "permission_error", "%s", err);
        }
    }
    if (act != API_QUERY_CHAT) {
        struct action_state *st = calloc(1, sizeof *st);
        if (!st) {
            llm_req_free(req);
            return api_send_error(r, 500, "server_error", "out of memory");
        }
        st->kind = act == API_QUERY_CALL_TOOL ? ACT_CALL_TOOL : ACT_OPERATE_FILE;
        r->state = st;
        r->state_free = action_free;
    }
    struct syscall *sc = syscall_new(SYSCALL_KIND_LLM, agent, core, req, llm_req_free);
    if (!sc) return api_send_error(r, 500, "server_error", "out of memory");
    if (prio_set) syscall_set_priority(sc, prio);
    return api_submit_and_wait(r, sc, act != API_QUERY_CHAT ? action_llm_done : llm_finish);
}

int api_query_kq_req(enum syscall_kind kind, json_t *qd, struct kq_req **out, char *err,
                     size_t errlen)
{
    *out = NULL;
    const char *op;
    json_t *params;
    if (kind == SYSCALL_KIND_TOOL) {
        json_t *calls = json_object_get(qd, "tool_calls");
        if (!json_is_array(calls)) {
            snprintf(err, errlen, "query_data.tool_calls must be a list of {\"name\", \"parameters\"}");
            return AIOS_EINVAL;
        }
        op = "call";
        params = json_pack("{s:O}", "tool_calls", calls);
    } else {
        json_t *o = json_object_get(qd, "operation_type");
        if (!json_is_string(o)) {
            snprintf(err, errlen, "query_data.operation_type must be a string");
            return AIOS_EINVAL;
        }
        json_t *p = json_object_get(qd, "params");
        if (p && !json_is_null(p) && !json_is_object(p)) {
            snprintf(err, errlen, "query_data.params must be an object");
            return AIOS_EINVAL;
        }
        op = json_string_value(o);
        params = json_is_object(p) ? json_deep_copy(p) : json_object();
    }
    *out = kq_req_new(op, params);
    if (!*out) {
        snprintf(err, errlen, "out of memory");
        return AIOS_ENOMEM;
    }
    return 0;
}

static enum MHD_Result query_kq(struct api_req *r, const char *agent, enum syscall_kind kind,
                                json_t *qd, int prio, bool prio_set)
{
    char err[256];
    struct kq_req *req;
    int rc = api_query_kq_req(kind, qd, &req, err, sizeof err);
    if (rc == AIOS_ENOMEM) return api_send_error(r, 500, "server_error", "out of memory");
    if (rc) return api_send_error(r, 400, "invalid_request_error", "%s", err);
    if (!r->k->pools[kind]) {
        kq_req_free(req);
        return api_send_error(r, 501, "not_implemented",
                              "the %s manager is not available in this kernel yet",
                              syscall_kind_name(kind));
    }
    struct syscall *sc;
    if (kind == SYSCALL_KIND_STORAGE) {
        sc = storage_syscall(agent, req->op, req->params);
        kq_req_free(req);
    } else if (kind == SYSCALL_KIND_MEMORY) {
        /* parsed once here; the memory manager sees the typed request */
        struct mem_req *mr = NULL;
        char merr[512];
        rc = mem_req_parse(req->op, req->params, &mr, merr, sizeof merr);
        kq_req_free(req);
        if (rc == AIOS_ENOMEM) return api_send_error(r, 500, "server_error", "out of memory");
        if (rc) return api_send_error(r, 400, "invalid_request_error", "%s", merr);
        /* one own note by id, or a retrieval of one's own notes: cheaper on
         * this thread than a hand-off when the manager can answer from RAM
         * without waiting (mem_manager_exec_nowait; else a pool thread) */
        bool here = (mr->op == MEM_OP_GET || mr->op == MEM_OP_RETRIEVE ||
                     mr->op == MEM_OP_RETRIEVE_RAW) && !mr->owner;
        sc = syscall_new(kind, agent, mem_req_reads_only(mr) ? SCHED_READ_LANE : NULL, mr,
                         mem_req_free);
        if (sc) sc->run_here = here;
    } else {
        sc = syscall_new(kind, agent, NULL, req, kq_req_free);
    }
    if (!sc) return api_send_error(r, 500, "server_error", "out of memory");
    if (syscall_status_final(sc->status)) { /* a storage call that did not parse */
        r->sc = sc;
        return kq_finish(r);
    }
    if (prio_set) syscall_set_priority(sc, prio);
    return api_submit_and_wait(r, sc, kq_finish);
}

int api_query_envelope(json_t *body, const char **agent, enum syscall_kind *kind, json_t **qd,
                       char *err, size_t errlen)
{
    json_t *an = json_object_get(body, "agent_name");
    json_t *qt = json_object_get(body, "query_type");
    *qd = json_object_get(body, "query_data");
    if (!json_is_string(an) || json_string_length(an) == 0) {
        snprintf(err, errlen, "'agent_name' must be a non-empty string");
        return AIOS_EINVAL;
    }
    if (!json_is_string(qt)) {
        snprintf(err, errlen, "'query_type' must be one of llm, memory, storage, tool");
        return AIOS_EINVAL;
    }
    if (!json_is_object(*qd)) {
        snprintf(err, errlen, "'query_data' must be an object");
        return AIOS_EINVAL;
    }
    *agent = json_string_value(an);
    const char *t = json_string_value(qt);
    if (!strcmp(t, "llm")) *kind = SYSCALL_KIND_LLM;
    else if (!strcmp(t, "memory")) *kind = SYSCALL_KIND_MEMORY;
    else if (!strcmp(t, "storage")) *kind = SYSCALL_KIND_STORAGE;
    else if (!strcmp(t, "tool")) *kind = SYSCALL_KIND_TOOL;
    else {
        snprintf(err, errlen, "'query_type' must be one of llm, memory, storage, tool (got '%.200s')", t);
        return AIOS_EINVAL;
    }
    return 0;
}

enum MHD_Result api_aios_query(struct api_req *r)
{
    enum MHD_Result sent;
    json_t *body = api_parse_body(r, &sent);
    if (!body) return sent;
    enum MHD_Result ret;
    const char *agent;
    enum syscall_kind kind;
    json_t *qd;
    char perr[512];
    int prio;
    bool ps;
    if (api_query_envelope(body, &agent, &kind, &qd, perr, sizeof perr)) {
        ret = api_send_error(r, 400, "invalid_request_error", "%s", perr);
        goto out;
    }
    /* priority: header, or top-level "priority", or query_data.priority */
    if (api_parse_priority(r, json_object_get(body, "priority") ? body : qd, &prio, &ps, perr,
                           sizeof perr)) {
        ret = api_send_error(r, 400, "invalid_request_error", "%s", perr);
        goto out;
    }
    if (kind == SYSCALL_KIND_LLM) ret = query_llm(r, agent, qd, prio, ps);
    else ret = query_kq(r, agent, kind, qd, prio, ps);
out:
    json_decref(body);
    return ret;
}
