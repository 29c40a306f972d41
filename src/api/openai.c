/* OpenAI-compatible routes: GET /v1/models, POST /v1/chat/completions.
 *
 * The request is parsed and checked completely on the HTTP thread (types,
 * ranges, model, prompt length) so that every client mistake is a 4xx with a
 * message naming the field, before anything is queued. A valid request
 * becomes an LLM syscall; the answer is built when the syscall is final
 * (chat_finish) or streamed as Server-Sent Events (chat_stream_fmt):
 * a first chunk with the role, content deltas, a last chunk with
 * finish_reason (and usage when stream_options.include_usage), then
 * `data: [DONE]`. An error after the stream started is sent as an SSE event
 * with an `error` object, then [DONE]. */
#include "api/api.h"

#include "llm/remote.h"
#include "llm/structured.h"
#include "memory/mem.h"
#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static json_t *model_json(const struct llm_core *c)
{
    return json_pack("{s:s,s:s,s:I,s:s,s:s}", "id", c->name, "object", "model", "created",
                     (json_int_t)c->created, "owned_by", "aios", "backend", c->backend);
}

enum MHD_Result api_openai_models(struct api_req *r)
{
    json_t *data = json_array();
    for (size_t i = 0; i < r->k->n_cores; i++) {
        struct llm_core *c = r->k->cores[i];
        if (c->retired) continue; /* removed by POST /core/refresh */
        json_array_append_new(data, model_json(c));
    }
    if (r->k->embed_core) json_array_append_new(data, model_json(r->k->embed_core));
    return api_send_json(r, 200, json_pack("{s:s,s:o}", "object", "list", "data", data));
}

/* GET /v1/models/{id}: one model in OpenAI's shape; ids may hold '/' */
enum MHD_Result api_openai_model(struct api_req *r)
{
    const char *id = r->params[0];
    for (size_t i = 0; i < r->k->n_cores; i++) {
        struct llm_core *c = r->k->cores[i];
        if (c->retired || strcmp(c->name, id)) continue;
        return api_send_json(r, 200, model_json(c));
    }
    if (r->k->embed_core && !strcmp(r->k->embed_core->name, id))
        return api_send_json(r, 200, model_json(r->k->embed_core));
    json_t *e = json_pack("{s:{s:s++,s:s,s:s,s:s}}", "error", "message", "The model '", id,
                          "' does not exist; GET /v1/models lists the models served here",
                          "type", "invalid_request_error", "param", "model", "code",
                          "model_not_found");
    return api_send_json(r, 404, e);
}

/* ---- request parsing ---- */

#define BAD(...)                                         \
    do {                                                 \
        snprintf(err, errlen, __VA_ARGS__);              \
        return AIOS_EINVAL;                              \
    } while (0)

static int get_number(json_t *body, const char *key, double lo, double hi, double *out, char *err,
                      size_t errlen)
{
    json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v)) return 1;
    if (!json_is_number(v)) BAD("'%s' must be a number", key);
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi) BAD("'%s' must be between %g and %g", key, lo, hi);
    *out = d;
    return 0;
}

static int get_int(json_t *body, const char *key, json_int_t lo, json_int_t hi, json_int_t *out,
                   char *err, size_t errlen)
{
    json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v)) return 1;
    if (!json_is_integer(v)) BAD("'%s' must be an integer", key);
    json_int_t i = json_integer_value(v);
    if (i < lo || i > hi) BAD("'%s' must be between %lld and %lld", key, (long long)lo, (long long)hi);
    *out = i;
    return 0;
}

/* message content: a string, null, or an array of {type:"text", text} parts */
static int content_text(json_t *c, size_t idx, char **out, char *err, size_t errlen)
{
    if (!c || json_is_null(c)) {
        *out = strdup("");
        return *out ? 0 : AIOS_ENOMEM;
    }
    if (json_is_string(c)) {
        *out = strndup(json_string_value(c), json_string_length(c));
        if (*out && strlen(*out) != json_string_length(c))
            BAD("messages[%zu].content contains a NUL character", idx);
        return *out ? 0 : AIOS_ENOMEM;
    }
    if (!json_is_array(c)) BAD("messages[%zu].content must be a string or an array of parts", idx);
    size_t len = 0, i;
    json_t *part;
    json_array_foreach(c, i, part) {
        json_t *t = json_object_get(part, "type"), *tx = json_object_get(part, "text");
        if (!json_is_object(part) || !json_is_string(t) || strcmp(json_string_value(t), "text") ||
            !json_is_string(tx))
            BAD("messages[%zu].content[%zu] must be {\"type\":\"text\",\"text\":\"...\"} "
                "(only text parts are supported)", idx, i);
        len += json_string_length(tx);
    }
    char *s = malloc(len + 1);
    if (!s) return AIOS_ENOMEM;
    size_t off = 0;
    json_array_foreach(c, i, part) {
        json_t *tx = json_object_get(part, "text");
        memcpy(s + off, json_string_value(tx), json_string_length(tx));
        off += json_string_length(tx);
    }
    s[off] = 0;
    if (strlen(s) != off) {
        free(s);
        BAD("messages[%zu].content contains a NUL character", idx);
    }
    *out = s;
    return 0;
}

/* The chat request's fields beside the ones the parsers read (docs/api.md,
 * "OpenAI fields"). Accepted and ignored: what OpenAI documents as
 * bookkeeping or hints that change nothing in the answer. Refused unless
 * empty or null: what would change the answer and is not done here. */
static const char *const chat_fields_used[] = {
    "model", "messages", "temperature", "top_p", "min_p", "top_k", "frequency_penalty",
    "presence_penalty", "repeat_penalty", "repetition_penalty", "repeat_last_n",
    "max_tokens", "max_completion_tokens", "seed", "n", "stop", "stream", "stream_options",
    "logprobs", "top_logprobs", "response_format", "tools", "tool_choice",
    "parallel_tool_calls", "user", "priority", NULL};
static const char *const chat_fields_ignored[] = {
    "metadata", "store", "service_tier", "prompt_cache_key", "prompt_cache_retention",
    "safety_identifier", NULL};

static bool in_list(const char *const *l, const char *k)
{
    for (; *l; l++)
        if (!strcmp(*l, k)) return true;
    return false;
}

int api_openai_check_chat_fields(json_t *body, char *err, size_t errlen)
{
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v) {
        if (in_list(chat_fields_used, k) || in_list(chat_fields_ignored, k)) continue;
        /* empty means "not used" */
        if (json_is_null(v) || (json_is_object(v) && json_object_size(v) == 0) ||
            (json_is_array(v) && json_array_size(v) == 0))
            continue;
        if (!strcmp(k, "modalities") && json_is_array(v) && json_array_size(v) == 1 &&
            json_is_string(json_array_get(v, 0)) &&
            !strcmp(json_string_value(json_array_get(v, 0)), "text"))
            continue;
        BAD("'%s' is not supported by this server (docs/api.md lists the chat completion "
            "fields it takes)", k);
    }
    return 0;
}

int api_chat_parse_messages(json_t *msgs, struct llm_req *req, char *err, size_t errlen)
{
    if (!msgs) BAD("missing required field 'messages'");
    if (!json_is_array(msgs)) BAD("'messages' must be an array");
    if (json_array_size(msgs) == 0) BAD("'messages' must contain at least one message");
    req->msgs = calloc(json_array_size(msgs), sizeof *req->msgs);
    if (!req->msgs) return AIOS_ENOMEM;
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        if (!json_is_object(m)) BAD("messages[%zu] must be an object", i);
        json_t *role = json_object_get(m, "role");
        if (!json_is_string(role)) BAD("messages[%zu].role must be a string", i);
        const char *rs = json_string_value(role);
        if (!strcmp(rs, "developer")) rs = "system";
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant") &&
            strcmp(rs, "tool"))
            BAD("messages[%zu].role must be one of system, developer, user, assistant, tool", i);
        json_t *c = json_object_get(m, "content");
        if (!c && strcmp(rs, "assistant")) BAD("messages[%zu].content is required", i);
        req->msgs[i].role = strdup(rs);
        req->n_msgs = i + 1;
        int rc = content_text(c, i, &req->msgs[i].content, err, errlen);
        if (rc) return rc;
        if (!req->msgs[i].role) return AIOS_ENOMEM;
    }
    return 0;
}

int api_chat_parse_sampling(json_t *obj, const char *max_tokens_key, struct llm_params *p,
                            char *err, size_t errlen)
{
    p->temperature = 1.0f;
    p->top_p = 1.0f;
    double d;
    json_int_t n;
    int rc;
    if ((rc = get_number(obj, "temperature", 0, 2, &d, err, errlen)) < 0) return rc;
    if (rc == 0) p->temperature = (float)d;
    if ((rc = get_number(obj, "top_p", 0, 1, &d, err, errlen)) < 0) return rc;
    if (rc == 0) p->top_p = (float)d;
    if ((rc = get_int(obj, max_tokens_key, 1, 1 << 24, &n, err, errlen)) < 0) return rc;
    if (rc == 0) p->max_tokens = (int)n;
    if ((rc = get_int(obj, "seed", INT64_MIN, INT64_MAX, &n, err, errlen)) < 0) return rc;
    if (rc == 0) {
        p->has_seed = true;
        p->seed = (uint32_t)((uint64_t)n ^ ((uint64_t)n >> 32));
    }
    json_t *v = json_object_get(obj, "stop");
    if (v && !json_is_null(v)) {
        size_t i;
        if (json_is_string(v)) {
            if (json_string_length(v) == 0) BAD("'stop' strings must not be empty");
            p->stop[p->n_stop++] = strdup(json_string_value(v));
        } else if (json_is_array(v)) {
            if (json_array_size(v) > LLM_MAX_STOP) BAD("'stop' may hold at most %d strings", LLM_MAX_STOP);
            json_t *s;
            json_array_foreach(v, i, s) {
                if (!json_is_string(s) || json_string_length(s) == 0)
                    BAD("'stop'[%zu] must be a non-empty string", i);
                p->stop[p->n_stop++] = strdup(json_string_value(s));
            }
        } else {
            BAD("'stop' must be a string or an array of strings");
        }
        for (int k = 0; k < p->n_stop; k++)
            if (!p->stop[k]) return AIOS_ENOMEM;
    }
    return 0;
}

/* Parse an OpenAI chat request into req (fields other than the prompt). */
int api_openai_parse_chat(json_t *body, struct llm_req *req, bool *stream, char *err, size_t errlen)
{
    json_t *v = json_object_get(body, "model");
    if (!v) BAD("missing required field 'model'");
    if (!json_is_string(v)) BAD("'model' must be a string");
    req->model = strdup(json_string_value(v));
    if (!req->model) return AIOS_ENOMEM;

    int rc = api_chat_parse_messages(json_object_get(body, "messages"), req, err, errlen);
    if (rc) return rc;

    /* the sampling fields only the OpenAI front end reads; then the ones
     * every front end reads (max_tokens last: it wins over
     * max_completion_tokens) */
    struct llm_params *p = &req->p;
    double d;
    json_int_t n;
    if ((rc = get_number(body, "min_p", 0, 1, &d, err, errlen)) < 0) return rc;
    if (rc == 0) p->min_p = (float)d;
    if ((rc = get_number(body, "frequency_penalty", -2, 2, &d, err, errlen)) < 0) return rc;
    if (rc == 0) p->frequency_penalty = (float)d;
    if ((rc = get_number(body, "presence_penalty", -2, 2, &d, err, errlen)) < 0) return rc;
    if (rc == 0) p->presence_penalty = (float)d;
    if ((rc = get_number(body, "repeat_penalty", 0, 10, &d, err, errlen)) < 0) return rc;
    if (rc == 0) p->repeat_penalty = (float)d;
    if ((rc = get_number(body, "repetition_penalty", 0, 10, &d, err, errlen)) < 0) return rc;
    if (rc == 0) p->repeat_penalty = (float)d; /* vLLM's name for it */
    if ((rc = get_int(body, "repeat_last_n", 0, 1 << 20, &n, err, errlen)) < 0) return rc;
    if (rc == 0) p->penalty_last_n = (int)n;
    if ((rc = get_int(body, "top_k", 0, 1000000, &n, err, errlen)) < 0) return rc;
    if (rc == 0) p->top_k = (int)n;
    if ((rc = get_int(body, "max_completion_tokens", 1, 1 << 24, &n, err, errlen)) < 0) return rc;
    if (rc == 0) p->max_tokens = (int)n;
    if ((rc = get_int(body, "n", 1, 1, &n, err, errlen)) < 0) BAD("only 'n': 1 is supported");
    if ((rc = api_chat_parse_sampling(body, "max_tokens", p, err, errlen))) return rc;

    v = json_object_get(body, "logprobs");
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v)) BAD("'logprobs' must be a boolean");
        p->logprobs = json_is_true(v);
    }
    if ((rc = get_int(body, "top_logprobs", 0, LLM_MAX_TOP_LOGPROBS, &n, err, errlen)) < 0) return rc;
    if (rc == 0) {
        if (!p->logprobs) BAD("'top_logprobs' needs 'logprobs': true");
        p->top_logprobs = (int)n;
    }

    v = json_object_get(body, "stream");
    *stream = false;
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v)) BAD("'stream' must be a boolean");
        *stream = json_is_true(v);
    }
    v = json_object_get(body, "stream_options");
    if (v && !json_is_null(v)) {
        if (!json_is_object(v)) BAD("'stream_options' must be an object");
        json_t *u = json_object_get(v, "include_usage");
        if (u && !json_is_null(u) && !json_is_boolean(u))
            BAD("'stream_options.include_usage' must be a boolean");
        req->include_usage = json_is_true(u);
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) {
            /* include_obfuscation pads OpenAI's chunks against side
             * channels: nothing to pad here */
            if (strcmp(k, "include_usage") && strcmp(k, "include_obfuscation"))
                BAD("'stream_options.%s' is not supported", k);
        }
    }
    /* response_format, tools, tool_choice (llm/structured.c) */
    return llm_structured_parse(body, &req->structured, err, errlen);
}

int api_llm_prepare(struct kernel *k, struct llm_core *core, struct llm_req *req, char *err,
                    size_t errlen)
{
    struct grammar_opts go;
    int rc = llm_structured_opts(&k->cfg, &go, err, errlen);
    if (rc) return rc == AIOS_ECONFIG ? AIOS_EINVAL : rc;
    const struct remote_backend_info *bi = remote_backend_find(core->backend);
    if (req->p.logprobs && bi && bi->dialect == REMOTE_DIALECT_ANTHROPIC)
        BAD("'logprobs' is not supported by model '%s': Anthropic's API has no token "
            "probabilities", core->name);
    if (bi) {
        /* remote: tools / response_format go upstream natively (remote_wire.c) */
        if (req->structured) req->structured->has_stop = req->p.n_stop > 0;
    } else if ((rc = llm_structured_prepare(req, &go, err, errlen))) {
        return rc;
    }
    return core->ops->prepare(core, req, err, errlen);
}

/* Tool calls of a finished call in OpenAI's shape, ids "call_..." */
json_t *api_openai_tool_calls(struct syscall *sc, json_t *calls)
{
    json_t *out = json_array();
    size_t i;
    json_t *c;
    json_array_foreach(calls, i, c) {
        char id[128];
        snprintf(id, sizeof id, "call_%013llx%06llx%02zx", (unsigned long long)util_wall_us(),
                 (unsigned long long)sc->id & 0xffffffULL, i & 0xff);
        json_t *uid = json_object_get(c, "id"); /* the upstream's id (remote cores) */
        if (json_is_string(uid)) snprintf(id, sizeof id, "%s", json_string_value(uid));
        char *args = json_dumps(json_object_get(c, "arguments"), JSON_COMPACT);
        json_array_append_new(out, json_pack("{s:s,s:s,s:{s:O,s:s}}", "id", id, "type", "function",
                                             "function", "name", json_object_get(c, "name"),
                                             "arguments", args ? args : "{}"));
        free(args);
    }
    return out;
}

/* ---- responses ---- */

struct chat_state {
    char id[40];
    int64_t created;
    char *model;
    bool include_usage;
    bool logprobs;
    bool sent_role;
    bool named_agent; /* `user` or X-Aios-Agent named the agent (memory.auto_* apply) */
};

static void chat_state_free(void *p)
{
    struct chat_state *cs = p;
    if (!cs) return;
    free(cs->model);
    free(cs);
}

static json_t *usage_json(const struct llm_res *res)
{
    return json_pack("{s:i,s:i,s:i,s:{s:i}}", "prompt_tokens", res->n_prompt, "completion_tokens",
                     res->n_gen, "total_tokens", res->n_prompt + res->n_gen,
                     "prompt_tokens_details", "cached_tokens",
                     res->n_prompt - res->n_prompt_computed);
}

/* llama-server's "timings" object, for a call of the embedded engine (a
 * remote model's answer has none: NULL): the prompt tokens this call
 * computed (prompt_n; cache_n were reused) and the time until its first
 * token (prompt_ms), the tokens it generated (predicted_n) and the time
 * from the first to the last (predicted_ms). Wall times of a batch the
 * call shared with others. */
static json_t *timings_json(const struct llm_res *res)
{
    if (res->upstream) return NULL;
    double pms = (double)res->t_prefill_us / 1000.0, dms = (double)res->t_decode_us / 1000.0;
    int pn = res->n_prompt_computed, dn = res->n_gen;
    return json_pack("{s:i,s:i,s:f,s:f,s:f,s:i,s:f,s:f,s:f}", "cache_n", res->n_prompt - pn,
                     "prompt_n", pn, "prompt_ms", pms, "prompt_per_token_ms", pn ? pms / pn : 0.0,
                     "prompt_per_second", pms > 0 ? pn * 1000.0 / pms : 0.0, "predicted_n", dn,
                     "predicted_ms", dms, "predicted_per_token_ms", dn ? dms / dn : 0.0,
                     "predicted_per_second", dms > 0 ? dn * 1000.0 / dms : 0.0);
}

/* choices[].logprobs: {"content": entries, "refusal": null}; entries NULL:
 * what a remote upstream gave (null when it gave none) */
static json_t *logprobs_json(json_t *entries, bool upstream)
{
    if (!entries && upstream) return json_null();
    return json_pack("{s:o,s:n}", "content", entries ? json_incref(entries) : json_array(),
                     "refusal");
}

static json_t *timing_json(struct syscall *sc)
{
    double wait = (double)(sc->t_start_us - sc->t_created_us) / 1e6;
    double turn = (double)(sc->t_end_us - sc->t_created_us) / 1e6;
    return json_pack("{s:I,s:s,s:f,s:f}", "syscall_id", (json_int_t)sc->id, "agent", sc->agent,
                     "waiting_time", wait, "turnaround_time", turn);
}

static enum MHD_Result send_syscall_error(struct api_req *r)
{
    struct syscall *sc = r->sc;
    const char *type;
    unsigned st = api_status_for(sc->err, &type);
    if (sc->http_status) st = (unsigned)sc->http_status;
    return api_send_error(r, st, type, "%s", sc->errmsg);
}

/* memory personalisation of a finished chat of a named agent: report what
 * auto_inject added (in the "aios" object) and let auto_extract store the
 * turn */
static void chat_memory(struct api_req *r, json_t *aios)
{
    struct chat_state *cs = r->state;
    struct llm_req *req = r->sc->req;
    if (req->memory && aios) json_object_set(aios, "memory_injected", req->memory);
    if (cs->named_agent) mem_auto_extract(r->k, r->sc);
}

static enum MHD_Result chat_finish(struct api_req *r)
{
    struct chat_state *cs = r->state;
    struct syscall *sc = r->sc;
    pthread_mutex_lock(&sc->mu);
    enum syscall_status st = sc->status;
    pthread_mutex_unlock(&sc->mu);
    if (st != SYSCALL_STATUS_DONE) return send_syscall_error(r);
    struct llm_res *res = sc->res;
    struct llm_structured_result sr;
    char err[512];
    int rc = llm_structured_result(((struct llm_req *)sc->req)->structured, res, &sr, err, sizeof err);
    if (rc == AIOS_ENOMEM) return api_send_error(r, 500, "server_error", "out of memory");
    if (rc == AIOS_EIO) return api_send_error(r, 502, "upstream_error", "%s", err);
    if (rc) return api_send_error(r, 500, "server_error", "%s", err);
    json_t *choice = json_pack("{s:i,s:{s:s,s:s%},s:o,s:s}", "index", 0, "message", "role",
                               "assistant", "content", res->text, sr.content_len, "logprobs",
                               cs->logprobs ? logprobs_json(res->logprobs, res->upstream)
                                            : json_null(),
                               "finish_reason", sr.finish);
    if (sr.calls) {
        json_t *msg = json_object_get(choice, "message");
        if (sr.content_len == 0) json_object_set_new(msg, "content", json_null());
        json_object_set_new(msg, "tool_calls", api_openai_tool_calls(sc, sr.calls));
        json_decref(sr.calls);
    }
    json_t *body = json_pack("{s:s,s:s,s:I,s:s,s:[o],s:o,s:o}", "id", cs->id, "object",
                             "chat.completion", "created", (json_int_t)cs->created, "model",
                             cs->model, "choices", choice, "usage", usage_json(res), "aios",
                             timing_json(sc));
    json_t *tm = timings_json(res);
    if (body && tm) json_object_set_new(body, "timings", tm);
    else json_decref(tm);
    chat_memory(r, json_object_get(body, "aios"));
    return api_send_json(r, 200, body);
}


static int append_event(char **out, size_t *n, size_t *cap, json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(j);
    if (!s) return AIOS_ENOMEM;
    int rc = util_buf_append(out, n, cap, "data: ", 6);
    if (!rc) rc = util_buf_append(out, n, cap, s, strlen(s));
    if (!rc) rc = util_buf_append(out, n, cap, "\n\n", 2);
    free(s);
    return rc;
}

static json_t *chunk(struct chat_state *cs, json_t *delta, const char *finish)
{
    return json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:o,s:s?}]}", "id", cs->id, "object",
                     "chat.completion.chunk", "created", (json_int_t)cs->created, "model",
                     cs->model, "choices", "index", 0, "delta", delta, "finish_reason", finish);
}

static int chat_stream_fmt(struct api_req *r, const char *delta, size_t n, bool final, char **out,
                           size_t *n_out, size_t *cap_out)
{
    struct chat_state *cs = r->state;
    struct syscall *sc = r->sc;
    int rc = 0;
    /* with tools the text is only known to be text or calls at the end:
     * it goes out in one delta then */
    const struct llm_structured *sst = ((struct llm_req *)sc->req)->structured;
    bool hold = sst && sst->kind == LLM_OUTPUT_TOOLS;
    if (hold) n = 0;
    if (!cs->sent_role) {
        cs->sent_role = true;
        rc = append_event(out, n_out, cap_out,
                          chunk(cs, json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL));
        if (rc) return rc;
    }
    size_t n_aux = 0;
    const char *aux = hold ? NULL : api_stream_aux(r, &n_aux);
    if (n || (cs->logprobs && n_aux)) {
        json_t *c = chunk(cs, json_pack("{s:s%}", "content", delta, n), NULL);
        if (c && cs->logprobs) {
            /* the engine's entries for this text: "{...},{...}," */
            json_t *lp = NULL;
            if (n_aux) {
                char *arr = malloc(n_aux + 2);
                if (arr) {
                    arr[0] = '[';
                    memcpy(arr + 1, aux, n_aux);
                    arr[n_aux] = ']'; /* over the trailing comma */
                    arr[n_aux + 1] = 0;
                    lp = json_loads(arr, 0, NULL);
                    free(arr);
                }
            }
            if (!lp) lp = json_array();
            json_object_set_new(json_array_get(json_object_get(c, "choices"), 0), "logprobs",
                                logprobs_json(lp, false));
            json_decref(lp);
        }
        rc = append_event(out, n_out, cap_out, c);
        if (rc) return rc;
    }
    if (!final) return 0;
    /* final: the status was read under sc->mu by the caller; the fields
     * below are immutable once final */
    if (sc->status == SYSCALL_STATUS_DONE) {
        struct llm_res *res = sc->res;
        struct llm_structured_result sr = {.finish = res->finish_reason};
        char err[512];
        int src = llm_structured_result(sst, res, &sr, err, sizeof err);
        if (src) {
            json_t *e = json_pack("{s:{s:s,s:s,s:n}}", "error", "message",
                                  src == AIOS_ENOMEM ? "out of memory" : err, "type",
                                  src == AIOS_EIO ? "upstream_error" : "server_error", "code");
            rc = append_event(out, n_out, cap_out, e);
            if (!rc) rc = util_buf_append(out, n_out, cap_out, "data: [DONE]\n\n", 14);
            return rc;
        }
        if (hold && (sr.content_len || !sr.calls)) {
            json_t *c = chunk(cs, json_pack("{s:s%}", "content", res->text, sr.content_len), NULL);
            if (c && cs->logprobs)
                json_object_set_new(json_array_get(json_object_get(c, "choices"), 0), "logprobs",
                                    logprobs_json(res->logprobs, res->upstream));
            rc = append_event(out, n_out, cap_out, c);
            if (rc) {
                json_decref(sr.calls);
                return rc;
            }
        }
        if (sr.calls) {
            json_t *tcs = api_openai_tool_calls(sc, sr.calls);
            json_decref(sr.calls);
            size_t i;
            json_t *tc;
            json_array_foreach(tcs, i, tc) json_object_set_new(tc, "index", json_integer((json_int_t)i));
            rc = append_event(out, n_out, cap_out, chunk(cs, json_pack("{s:o}", "tool_calls", tcs), NULL));
            if (rc) return rc;
        }
        json_t *c = chunk(cs, json_object(), sr.finish);
        if (c) json_object_set_new(c, "aios", timing_json(sc));
        json_t *tm = timings_json(res);
        if (c && tm) json_object_set_new(c, "timings", tm);
        else json_decref(tm);
        if (c) chat_memory(r, json_object_get(c, "aios"));
        rc = append_event(out, n_out, cap_out, c);
        if (!rc && cs->include_usage) {
            json_t *u = json_pack("{s:s,s:s,s:I,s:s,s:[],s:o}", "id", cs->id, "object",
                                  "chat.completion.chunk", "created", (json_int_t)cs->created,
                                  "model", cs->model, "choices", "usage", usage_json(res));
            rc = append_event(out, n_out, cap_out, u);
        }
    } else {
        const char *type;
        api_status_for(sc->err, &type);
        json_t *e = json_pack("{s:{s:s,s:s,s:n}}", "error", "message", sc->errmsg, "type", type, "code");
        rc = append_event(out, n_out, cap_out, e);
    }
    if (!rc) rc = util_buf_append(out, n_out, cap_out, "data: [DONE]\n\n", 14);
    return rc;
}

enum MHD_Result api_openai_chat(struct api_req *r)
{
    char err[1024] = "";
    enum MHD_Result sent;
    json_t *body = api_parse_body(r, &sent);
    if (!body) return sent;

    struct llm_req *req = calloc(1, sizeof *req);
    struct chat_state *cs = calloc(1, sizeof *cs);
    bool stream = false;
    int rc;
    if (!req || !cs) {
        rc = AIOS_ENOMEM;
        goto fail;
    }
    rc = api_openai_check_chat_fields(body, err, sizeof err);
    if (!rc) rc = api_openai_parse_chat(body, req, &stream, err, sizeof err);
    if (rc) goto fail;
    struct llm_core *core = kernel_find_core(r->k, req->model);
    if (!core && r->k->embed_core && !strcmp(r->k->embed_core->name, req->model)) {
        snprintf(err, sizeof err, "model '%s' is an embedding model: use POST /v1/embeddings",
                 req->model);
        rc = AIOS_EINVAL;
        goto fail;
    }
    if (!core) {
        json_decref(body);
        body = NULL;
        enum MHD_Result ret = api_send_error(r, 404, "not_found_error",
                                             "model '%s' does not exist; GET /v1/models lists the "
                                             "models this kernel serves", req->model);
        llm_req_free(req);
        free(cs);
        return ret;
    }
    /* KV affinity: the kernel that retains this agent's conversation */
    if (api_affinity_forward(r, core, api_openai_chat, &sent)) {
        json_decref(body);
        llm_req_free(req);
        free(cs);
        return sent;
    }
    const char *agent = NULL;
    json_t *u = json_object_get(body, "user");
    if (json_is_string(u)) agent = json_string_value(u);
    const char *hdr = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Aios-Agent");
    if (hdr && *hdr) agent = hdr;
    cs->named_agent = agent != NULL;
    mem_auto_inject(r->k, agent, req); /* memory.auto_inject: the named agent's notes */
    rc = api_llm_prepare(r->k, core, req, err, sizeof err);
    if (rc) goto fail;
    int prio;
    bool prio_set;
    rc = api_parse_priority(r, body, &prio, &prio_set, err, sizeof err);
    if (rc) goto fail;

    struct syscall *sc = syscall_new(SYSCALL_KIND_LLM, agent, core, req, llm_req_free);
    req = NULL;
    if (!sc) {
        rc = AIOS_ENOMEM;
        goto fail;
    }
    if (prio_set) syscall_set_priority(sc, prio);
    snprintf(cs->id, sizeof cs->id, "chatcmpl-%llu", (unsigned long long)sc->id);
    cs->created = (int64_t)time(NULL);
    cs->model = strdup(core->name);
    cs->include_usage = ((struct llm_req *)sc->req)->include_usage;
    cs->logprobs = ((struct llm_req *)sc->req)->p.logprobs;
    r->state = cs;
    r->state_free = chat_state_free;
    json_decref(body);
    if (stream) return api_submit_and_stream(r, sc, "text/event-stream", chat_stream_fmt);
    return api_submit_and_wait(r, sc, chat_finish);

fail:
    json_decref(body);
    llm_req_free(req);
    free(cs);
    if (rc == AIOS_ENOMEM) return api_send_error(r, 500, "server_error", "out of memory");
    return api_send_error(r, 400, "invalid_request_error", "%s", err);
}
