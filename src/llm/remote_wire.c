/* Wire formats of the remote backends: OpenAI chat completions and
 * Anthropic Messages, requests and answers, whole and streamed (SSE).
 *
 * Everything here is a pure function of its arguments (no I/O, no globals),
 * so it runs on any thread and is unit-tested against recorded exchanges.
 * remote.c owns the transfers and calls in here.
 *
 * Mapping choices:
 * - OpenAI-compatible: messages go as they are; temperature, top_p, seed,
 *   frequency/presence penalties and stop pass through (seed is what makes an upstream aios or vLLM answer
 *   reproducible); top_k/min_p only to servers that accept them, and
 *   llama.cpp's repeat_penalty (+ repeat_last_n) as repeat_penalty to
 *   llama.cpp-style servers (llamacpp-server, openai-compatible, aios) and
 *   as repetition_penalty to vLLM/SGLang (never to hosted APIs); streamed
 *   calls ask for stream_options.include_usage so usage is known at the end.
 * - Anthropic: system messages are joined into the top-level "system"; tool
 *   results become user text (there are no tool-call ids to pair them
 *   with); consecutive messages of one role are merged (the API wants
 *   alternation); temperature is clamped to Anthropic's 0..1; max_tokens is
 *   required, so a default is sent when the client gave none; stop strings
 *   become stop_sequences; seed is not supported by the API and is dropped.
 *   stop_reason maps to finish_reason: end_turn/stop_sequence/pause_turn ->
 *   stop, max_tokens -> length, tool_use -> tool_calls, refusal ->
 *   content_filter.
 * - Structured output (req->structured, no grammar for remote cores):
 *   OpenAI-compatible gets tools / tool_choice / parallel_tool_calls /
 *   response_format as they are, tool names as the wire name
 *   ("author/name" -> "author__name"), and tool history (assistant
 *   tool_calls, tool_call_id) from the client's JSON messages. Anthropic
 *   gets tools with input_schema, tool_choice auto/any/none/tool, history
 *   as tool_use / tool_result blocks (a message of blocks instead of a
 *   string only when it holds such a block), and a JSON response_format as
 *   the forced tool REMOTE_JSON_TOOL (remote_wire_finish turns its input
 *   into the text). Answers' tool calls (whole or streamed deltas) are
 *   collected in remote_answer.tool_calls as {"id","name","arguments"
 *   text}; llm_structured_result maps names back and validates. */
#include "llm/remote.h"
#include "llm/structured.h"

#include "util/err.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct remote_backend_info g_backends[] = {
    {"openai", REMOTE_DIALECT_OPENAI, "https://api.openai.com/v1", "openai", "OPENAI_API_KEY", true, false, false, NULL},
    {"openai-compatible", REMOTE_DIALECT_OPENAI, NULL, "openai-compatible", NULL, false, true, false, "repeat_penalty"},
    {"vllm", REMOTE_DIALECT_OPENAI, "http://127.0.0.1:8000/v1", "vllm", NULL, false, true, true, "repetition_penalty"},
    {"sglang", REMOTE_DIALECT_OPENAI, "http://127.0.0.1:30000/v1", "sglang", NULL, false, true, true, "repetition_penalty"},
    {"ollama", REMOTE_DIALECT_OPENAI, "http://127.0.0.1:11434/v1", "ollama", NULL, false, false, false, NULL},
    {"llamacpp-server", REMOTE_DIALECT_OPENAI, "http://127.0.0.1:8080/v1", "llamacpp-server", NULL, false, true, false, "repeat_penalty"},
    {"groq", REMOTE_DIALECT_OPENAI, "https://api.groq.com/openai/v1", "groq", "GROQ_API_KEY", true, false, false, NULL},
    {"deepseek", REMOTE_DIALECT_OPENAI, "https://api.deepseek.com/v1", "deepseek", "DEEPSEEK_API_KEY", true, false, false, NULL},
    {"gemini", REMOTE_DIALECT_OPENAI, "https://generativelanguage.googleapis.com/v1beta/openai", "gemini", "GEMINI_API_KEY", true, false, false, NULL},
    {"anthropic", REMOTE_DIALECT_ANTHROPIC, "https://api.anthropic.com", "anthropic", "ANTHROPIC_API_KEY", true, false, false, NULL},
};

const struct remote_backend_info *remote_backend_find(const char *backend)
{
    if (!backend) return NULL;
    for (size_t i = 0; i < sizeof g_backends / sizeof g_backends[0]; i++)
        if (!strcmp(g_backends[i].name, backend)) return &g_backends[i];
    /* spellings people use */
    if (!strcmp(backend, "llama.cpp-server") || !strcmp(backend, "llama-server") ||
        !strcmp(backend, "llamacpp_server"))
        return remote_backend_find("llamacpp-server");
    if (!strcmp(backend, "openai_compatible") || !strcmp(backend, "openai-compat"))
        return remote_backend_find("openai-compatible");
    if (!strcmp(backend, "google")) return remote_backend_find("gemini");
    if (!strcmp(backend, "claude")) return remote_backend_find("anthropic");
    return NULL;
}

bool llm_backend_is_remote(const char *backend) { return remote_backend_find(backend) != NULL; }

/* ---- requests ---- */

static int set_sampling_openai(json_t *b, const struct llm_req *req, const struct remote_wire_opts *o)
{
    const struct llm_params *p = &req->p;
    int rc = 0;
    if (p->max_tokens > 0)
        rc |= json_object_set_new(b, o->max_completion_tokens ? "max_completion_tokens" : "max_tokens",
                                  json_integer(p->max_tokens));
    rc |= json_object_set_new(b, "temperature", json_real(p->temperature));
    if (p->top_p < 1.0f) rc |= json_object_set_new(b, "top_p", json_real(p->top_p));
    if (o->extra_sampling && p->top_k > 0) rc |= json_object_set_new(b, "top_k", json_integer(p->top_k));
    if (o->extra_sampling && p->min_p > 0) rc |= json_object_set_new(b, "min_p", json_real(p->min_p));
    if (o->repeat_key && p->repeat_penalty > 0 && p->repeat_penalty != 1.0f) {
        rc |= json_object_set_new(b, o->repeat_key, json_real(p->repeat_penalty));
        if (!strcmp(o->repeat_key, "repeat_penalty") && p->penalty_last_n > 0)
            rc |= json_object_set_new(b, "repeat_last_n", json_integer(p->penalty_last_n));
    }
    if (p->has_seed) rc |= json_object_set_new(b, "seed", json_integer((json_int_t)p->seed));
    if (p->frequency_penalty != 0.0f)
        rc |= json_object_set_new(b, "frequency_penalty", json_real(p->frequency_penalty));
    if (p->presence_penalty != 0.0f)
        rc |= json_object_set_new(b, "presence_penalty", json_real(p->presence_penalty));
    if (p->logprobs) {
        rc |= json_object_set_new(b, "logprobs", json_true());
        if (p->top_logprobs > 0)
            rc |= json_object_set_new(b, "top_logprobs", json_integer(p->top_logprobs));
    }
    if (p->n_stop) {
        json_t *st = json_array();
        for (int i = 0; i < p->n_stop; i++) json_array_append_new(st, json_string(p->stop[i]));
        rc |= json_object_set_new(b, "stop", st);
    }
    if (o->stream) {
        rc |= json_object_set_new(b, "stream", json_true());
        rc |= json_object_set_new(b, "stream_options", json_pack("{s:b}", "include_usage", 1));
    }
    return rc ? AIOS_ENOMEM : 0;
}

/* The client's JSON message i when it is the one req->msgs[i] came from
 * (tool history: assistant tool_calls, tool_call_id), else NULL. */
static json_t *history_msg(const struct llm_req *req, size_t i)
{
    const struct llm_structured *st = req->structured;
    if (!st || !st->messages || i >= json_array_size(st->messages)) return NULL;
    json_t *jm = json_array_get(st->messages, i);
    const char *r = json_string_value(json_object_get(jm, "role"));
    if (!r) return NULL;
    if (!strcmp(r, "developer")) r = "system";
    return strcmp(r, req->msgs[i].role) ? NULL : jm;
}

/* arguments of a history call as JSON text (OpenAI) or object (Anthropic) */
static json_t *call_args(json_t *fn, bool as_object)
{
    json_t *args = json_object_get(fn, "arguments");
    if (as_object) {
        json_t *a = json_is_string(args) ? json_loads(json_string_value(args), 0, NULL)
                                         : json_incref(args);
        if (!json_is_object(a)) {
            json_decref(a);
            a = json_object();
        }
        return a;
    }
    if (json_is_string(args)) return json_incref(args);
    if (!args) return json_string("{}");
    char *t = json_dumps(args, JSON_COMPACT);
    json_t *r = json_string(t ? t : "{}");
    free(t);
    return r;
}

static int wire_name_of(const struct llm_req *req, json_t *fn, json_t **out)
{
    const char *n = json_string_value(json_object_get(fn, "name"));
    char *w = llm_structured_wire_name(req->structured, n ? n : "");
    *out = w ? json_string(w) : NULL;
    free(w);
    return *out ? 0 : AIOS_ENOMEM;
}

static json_t *message_openai(const struct llm_req *req, size_t i)
{
    const struct llm_message *m = &req->msgs[i];
    json_t *jm = history_msg(req, i);
    json_t *calls = json_object_get(jm, "tool_calls");
    json_t *id = json_object_get(jm, "tool_call_id");
    json_t *o = json_pack("{s:s,s:s}", "role", m->role, "content", m->content ? m->content : "");
    if (!o) return NULL;
    if (!strcmp(m->role, "tool") && json_is_string(id)) json_object_set(o, "tool_call_id", id);
    if (!strcmp(m->role, "assistant") && json_is_array(calls) && json_array_size(calls)) {
        json_t *tcs = json_array();
        size_t k;
        json_t *c;
        json_array_foreach(calls, k, c) {
            json_t *fn = json_object_get(c, "function"), *name = NULL;
            json_t *cid = json_object_get(c, "id");
            if (wire_name_of(req, fn, &name)) break;
            json_t *tc = json_pack("{s:s,s:{s:o,s:o}}", "type", "function", "function", "name", name,
                                   "arguments", call_args(fn, false));
            if (tc && json_is_string(cid)) json_object_set(tc, "id", cid);
            if (!tc || json_array_append_new(tcs, tc)) break;
        }
        if (json_array_size(tcs) != json_array_size(calls)) {
            json_decref(tcs);
            json_decref(o);
            return NULL;
        }
        json_object_set_new(o, "tool_calls", tcs);
        if (!m->content || !*m->content) json_object_set_new(o, "content", json_null());
    }
    return o;
}

/* tools, tool_choice, parallel_tool_calls, response_format */
static int structured_openai(json_t *b, const struct llm_req *req)
{
    const struct llm_structured *st = req->structured;
    if (!st) return 0;
    int rc = 0;
    if (st->response_format) rc |= json_object_set(b, "response_format", st->response_format);
    if (!st->n_tools) return rc ? AIOS_ENOMEM : 0;
    json_t *tools = json_array();
    for (size_t i = 0; i < st->n_tools; i++) {
        json_t *fn = json_deep_copy(st->tools[i].function);
        if (!fn || json_object_set_new(fn, "name", json_string(st->tools[i].wire)) ||
            json_array_append_new(tools, json_pack("{s:s,s:o}", "type", "function", "function", fn)))
            rc = -1;
    }
    rc |= json_object_set_new(b, "tools", tools);
    json_t *tc = NULL;
    switch (st->choice) {
    case LLM_TOOL_CHOICE_AUTO: tc = json_string("auto"); break;
    case LLM_TOOL_CHOICE_REQUIRED: tc = json_string("required"); break;
    case LLM_TOOL_CHOICE_NONE: tc = json_string("none"); break;
    case LLM_TOOL_CHOICE_NAMED:
        tc = json_pack("{s:s,s:{s:s}}", "type", "function", "function", "name",
                       st->tools[st->forced].wire);
        break;
    }
    rc |= json_object_set_new(b, "tool_choice", tc);
    if (st->max_calls == 1) rc |= json_object_set_new(b, "parallel_tool_calls", json_false());
    return rc ? AIOS_ENOMEM : 0;
}

static json_t *request_openai(const struct llm_req *req, const struct remote_wire_opts *o)
{
    json_t *msgs = json_array();
    for (size_t i = 0; i < req->n_msgs; i++)
        json_array_append_new(msgs, message_openai(req, i));
    json_t *b = json_pack("{s:s,s:o}", "model", o->model, "messages", msgs);
    if (!b || json_array_size(msgs) != req->n_msgs) goto nomem;
    if (set_sampling_openai(b, req, o)) goto nomem;
    if (structured_openai(b, req)) goto nomem;
    if (o->continue_final && req->n_msgs && !strcmp(req->msgs[req->n_msgs - 1].role, "assistant")) {
        json_object_set_new(b, "continue_final_message", json_true());
        json_object_set_new(b, "add_generation_prompt", json_false());
    }
    return b;
nomem:
    json_decref(b);
    return NULL;
}

/* append "\n\n" + text to a growable string */
static int join(char **dst, size_t *n, size_t *cap, const char *text)
{
    if (*n && util_buf_append(dst, n, cap, "\n\n", 2)) return AIOS_ENOMEM;
    return util_buf_append(dst, n, cap, text, strlen(text));
}

/* Is the schema's root an object (Anthropic input_schema must be one)? */
static bool schema_root_object(json_t *schema)
{
    json_t *t = json_object_get(schema, "type");
    return json_is_string(t) && !strcmp(json_string_value(t), "object");
}

/* tools / tool_choice for Anthropic; a JSON response_format becomes the
 * forced REMOTE_JSON_TOOL */
static int structured_anthropic(json_t *b, const struct llm_req *req)
{
    const struct llm_structured *st = req->structured;
    if (!st) return 0;
    int rc = 0;
    json_t *tools = json_array(), *tc = NULL;
    if (!tools) return AIOS_ENOMEM;
    if (st->kind == LLM_OUTPUT_JSON_OBJECT || st->kind == LLM_OUTPUT_JSON_SCHEMA) {
        json_t *schema;
        if (st->kind == LLM_OUTPUT_JSON_OBJECT)
            schema = json_pack("{s:s}", "type", "object");
        else if (schema_root_object(st->schema))
            schema = json_incref(st->schema);
        else
            schema = json_pack("{s:s,s:{s:O},s:[s]}", "type", "object", "properties", "value",
                               st->schema, "required", "value");
        rc |= json_array_append_new(tools, json_pack("{s:s,s:s,s:o}", "name", REMOTE_JSON_TOOL,
                                                     "description", "Give the answer as this tool's input.",
                                                     "input_schema", schema));
        tc = json_pack("{s:s,s:s}", "type", "tool", "name", REMOTE_JSON_TOOL);
    } else if (st->n_tools) {
        for (size_t i = 0; i < st->n_tools; i++) {
            const struct llm_tool *t = &st->tools[i];
            json_t *d = json_object_get(t->function, "description");
            json_t *o = json_pack("{s:s,s:o}", "name", t->wire, "input_schema",
                                  t->params ? json_incref(t->params) : json_pack("{s:s}", "type", "object"));
            if (o && json_is_string(d)) json_object_set(o, "description", d);
            rc |= json_array_append_new(tools, o);
        }
        switch (st->choice) {
        case LLM_TOOL_CHOICE_AUTO: tc = json_pack("{s:s}", "type", "auto"); break;
        case LLM_TOOL_CHOICE_REQUIRED: tc = json_pack("{s:s}", "type", "any"); break;
        case LLM_TOOL_CHOICE_NONE: tc = json_pack("{s:s}", "type", "none"); break;
        case LLM_TOOL_CHOICE_NAMED:
            tc = json_pack("{s:s,s:s}", "type", "tool", "name", st->tools[st->forced].wire);
            break;
        }
        if (tc && st->max_calls == 1 && st->choice != LLM_TOOL_CHOICE_NONE)
            json_object_set_new(tc, "disable_parallel_tool_use", json_true());
    }
    if (json_array_size(tools)) {
        rc |= json_object_set(b, "tools", tools);
        rc |= tc ? json_object_set_new(b, "tool_choice", tc) : -1;
    } else {
        json_decref(tc);
    }
    json_decref(tools);
    return rc ? AIOS_ENOMEM : 0;
}

/* one Anthropic message being assembled: text runs are joined with "\n\n"
 * (consecutive messages of one role merge); tool_use / tool_result blocks
 * turn the content into a block array */
struct amsg {
    const char *role;
    char *text;
    size_t n, cap;
    json_t *blocks; /* NULL while text only */
};

static int amsg_flush_text(struct amsg *m)
{
    if (!m->blocks || !m->n) return 0;
    int rc = json_array_append_new(m->blocks, json_pack("{s:s,s:s%}", "type", "text", "text", m->text, m->n));
    m->n = 0;
    return rc ? AIOS_ENOMEM : 0;
}

static int amsg_block(struct amsg *m, json_t *blk)
{
    if (!blk) return AIOS_ENOMEM;
    if (!m->blocks && !(m->blocks = json_array())) {
        json_decref(blk);
        return AIOS_ENOMEM;
    }
    if (amsg_flush_text(m)) {
        json_decref(blk);
        return AIOS_ENOMEM;
    }
    return json_array_append_new(m->blocks, blk) ? AIOS_ENOMEM : 0;
}

/* append the finished message to msgs and reset m */
static int amsg_emit(struct amsg *m, json_t *msgs)
{
    json_t *content;
    if (m->blocks) {
        if (amsg_flush_text(m)) return AIOS_ENOMEM;
        content = m->blocks;
        m->blocks = NULL;
    } else {
        content = json_stringn(m->text ? m->text : "", m->n);
    }
    m->n = 0;
    if (!content) return AIOS_ENOMEM;
    return json_array_append_new(msgs, json_pack("{s:s,s:o}", "role", m->role, "content", content))
               ? AIOS_ENOMEM : 0;
}

/* the assistant's tool calls of history message jm as tool_use blocks */
static int amsg_tool_uses(struct amsg *m, const struct llm_req *req, json_t *calls, size_t i)
{
    size_t k;
    json_t *c;
    json_array_foreach(calls, k, c) {
        json_t *fn = json_object_get(c, "function"), *name = NULL, *id = json_object_get(c, "id");
        if (wire_name_of(req, fn, &name)) return AIOS_ENOMEM;
        char gen[48];
        snprintf(gen, sizeof gen, "toolu_aios_%zu_%zu", i, k);
        int rc = amsg_block(m, json_pack("{s:s,s:s,s:o,s:o}", "type", "tool_use", "id",
                                         json_is_string(id) ? json_string_value(id) : gen, "name",
                                         name, "input", call_args(fn, true)));
        if (rc) return rc;
    }
    return 0;
}

static json_t *request_anthropic(const struct llm_req *req, const struct remote_wire_opts *o,
                                 char *err, size_t errlen)
{
    char *sys = NULL;
    size_t n_sys = 0, cap_sys = 0;
    struct amsg cur = {0};
    json_t *msgs = json_array(), *b = NULL;
    if (!msgs) goto nomem;
    for (size_t i = 0; i <= req->n_msgs; i++) {
        const char *role = NULL, *text = "";
        if (i < req->n_msgs) {
            role = req->msgs[i].role;
            text = req->msgs[i].content ? req->msgs[i].content : "";
            if (!strcmp(role, "system")) {
                if (join(&sys, &n_sys, &cap_sys, text)) goto nomem;
                continue;
            }
            if (strcmp(role, "assistant")) role = "user"; /* user, tool */
        }
        if (cur.role && (!role || strcmp(role, cur.role)) && amsg_emit(&cur, msgs)) goto nomem;
        if (!role) break;
        cur.role = role;
        json_t *jm = history_msg(req, i);
        json_t *id = json_object_get(jm, "tool_call_id");
        json_t *calls = json_object_get(jm, "tool_calls");
        bool tool = !strcmp(req->msgs[i].role, "tool");
        if (tool && json_is_string(id)) {
            if (amsg_block(&cur, json_pack("{s:s,s:O,s:s}", "type", "tool_result", "tool_use_id", id,
                                           "content", text)))
                goto nomem;
        } else if (tool) {
            /* no id to pair it with: plain text */
            size_t need = strlen(text) + 32;
            char *t = malloc(need);
            if (!t) goto nomem;
            snprintf(t, need, "Tool result:\n%s", text);
            int rc = join(&cur.text, &cur.n, &cur.cap, t);
            free(t);
            if (rc) goto nomem;
        } else {
            if ((*text || !json_array_size(calls)) && join(&cur.text, &cur.n, &cur.cap, text)) goto nomem;
            if (json_array_size(calls) && amsg_tool_uses(&cur, req, calls, i)) goto nomem;
        }
    }
    if (json_array_size(msgs) == 0) {
        snprintf(err, errlen, "Anthropic needs at least one user or assistant message besides the "
                 "system prompt");
        goto fail;
    }
    {
        /* Anthropic refuses a final assistant message that ends in
         * whitespace; a prefix is continued from its last visible byte */
        json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
        json_t *lc = json_object_get(last, "content");
        if (!strcmp(json_string_value(json_object_get(last, "role")), "assistant") && json_is_string(lc)) {
            const char *t = json_string_value(lc);
            size_t n = strlen(t);
            while (n && (t[n - 1] == ' ' || t[n - 1] == '\n' || t[n - 1] == '\t' || t[n - 1] == '\r')) n--;
            json_object_set_new(last, "content", json_stringn(t, n));
        }
    }
    const struct llm_params *p = &req->p;
    int max_tokens = p->max_tokens > 0 ? p->max_tokens : (o->default_max_tokens > 0 ? o->default_max_tokens : 4096);
    b = json_pack("{s:s,s:i,s:O}", "model", o->model, "max_tokens", max_tokens, "messages", msgs);
    if (!b) goto nomem;
    int rc = 0;
    if (sys) rc |= json_object_set_new(b, "system", json_string(sys));
    rc |= json_object_set_new(b, "temperature", json_real(p->temperature > 1.0f ? 1.0 : p->temperature));
    if (p->top_p < 1.0f) rc |= json_object_set_new(b, "top_p", json_real(p->top_p));
    if (p->top_k > 0) rc |= json_object_set_new(b, "top_k", json_integer(p->top_k));
    if (p->n_stop) {
        json_t *st = json_array();
        for (int i = 0; i < p->n_stop; i++) json_array_append_new(st, json_string(p->stop[i]));
        rc |= json_object_set_new(b, "stop_sequences", st);
    }
    if (o->stream) rc |= json_object_set_new(b, "stream", json_true());
    if (rc || structured_anthropic(b, req)) goto nomem;
    json_decref(msgs);
    free(sys);
    free(cur.text);
    json_decref(cur.blocks);
    return b;
nomem:
    snprintf(err, errlen, "out of memory");
fail:
    json_decref(b);
    json_decref(msgs);
    free(sys);
    free(cur.text);
    json_decref(cur.blocks);
    return NULL;
}

json_t *remote_wire_request(enum remote_dialect d, const struct llm_req *req,
                            const struct remote_wire_opts *o, char *err, size_t errlen)
{
    if (d == REMOTE_DIALECT_ANTHROPIC) return request_anthropic(req, o, err, errlen);
    json_t *b = request_openai(req, o);
    if (!b) snprintf(err, errlen, "out of memory");
    return b;
}

/* ---- answers ---- */

void remote_answer_free(struct remote_answer *a)
{
    free(a->text);
    json_decref(a->tool_calls);
    json_decref(a->logprobs);
    memset(a, 0, sizeof *a);
}

int remote_answer_append(struct remote_answer *a, const char *s, size_t n)
{
    return util_buf_append(&a->text, &a->len, &a->cap, s, n);
}

void remote_answer_keep_text(struct remote_answer *a)
{
    json_decref(a->tool_calls);
    a->tool_calls = NULL;
    a->in_tool_block = false;
    a->finish_reason = NULL;
    a->done = false;
    a->error[0] = a->error_type[0] = 0;
    a->n_prompt = a->n_cached = a->n_gen = 0;
}

/* add a call {"id","name","arguments"} to a->tool_calls */
static json_t *add_call(struct remote_answer *a, const char *id, const char *name, const char *args)
{
    if (!a->tool_calls && !(a->tool_calls = json_array())) return NULL;
    json_t *c = json_pack("{s:s,s:s,s:s}", "id", id ? id : "", "name", name ? name : "", "arguments",
                          args ? args : "");
    if (!c || json_array_append_new(a->tool_calls, c)) return NULL;
    return c;
}

/* append text to the string member k of o */
static int append_member(json_t *o, const char *k, const char *t, size_t n)
{
    json_t *v = json_object_get(o, k);
    size_t m = json_string_length(v);
    char *s = malloc(m + n + 1);
    if (!s) return AIOS_ENOMEM;
    memcpy(s, json_string_value(v) ? json_string_value(v) : "", m);
    memcpy(s + m, t, n);
    s[m + n] = 0;
    int rc = json_object_set_new(o, k, json_stringn(s, m + n));
    free(s);
    return rc ? AIOS_ENOMEM : 0;
}

/* OpenAI tool_calls (whole message) -> a->tool_calls */
static int calls_openai(json_t *tcs, struct remote_answer *a)
{
    size_t i;
    json_t *tc;
    json_array_foreach(tcs, i, tc) {
        json_t *fn = json_object_get(tc, "function"), *args = json_object_get(fn, "arguments");
        char *dumped = NULL;
        if (args && !json_is_string(args)) dumped = json_dumps(args, JSON_COMPACT);
        json_t *c = add_call(a, json_string_value(json_object_get(tc, "id")),
                             json_string_value(json_object_get(fn, "name")),
                             dumped ? dumped : json_string_value(args));
        free(dumped);
        if (!c) return AIOS_ENOMEM;
    }
    return 0;
}

/* OpenAI streamed delta.tool_calls: entries by index, pieces appended */
static int calls_openai_delta(json_t *tcs, struct remote_answer *a)
{
    size_t i;
    json_t *tc;
    json_array_foreach(tcs, i, tc) {
        json_t *ix = json_object_get(tc, "index");
        size_t k = json_is_integer(ix) ? (size_t)json_integer_value(ix) : i;
        if (k > 64) return AIOS_EINVAL;
        while (json_array_size(a->tool_calls) <= k)
            if (!add_call(a, NULL, NULL, NULL)) return AIOS_ENOMEM;
        json_t *c = json_array_get(a->tool_calls, k);
        json_t *id = json_object_get(tc, "id"), *fn = json_object_get(tc, "function");
        json_t *name = json_object_get(fn, "name"), *args = json_object_get(fn, "arguments");
        if (json_is_string(id)) json_object_set(c, "id", id);
        if (json_is_string(name) && append_member(c, "name", json_string_value(name), json_string_length(name)))
            return AIOS_ENOMEM;
        if (json_is_string(args) && append_member(c, "arguments", json_string_value(args), json_string_length(args)))
            return AIOS_ENOMEM;
    }
    return 0;
}

int remote_wire_finish(enum remote_dialect d, const struct llm_req *req, struct remote_answer *a)
{
    const struct llm_structured *st = req->structured;
    if (d != REMOTE_DIALECT_ANTHROPIC || !st ||
        (st->kind != LLM_OUTPUT_JSON_OBJECT && st->kind != LLM_OUTPUT_JSON_SCHEMA))
        return 0;
    json_t *c = json_array_get(a->tool_calls, 0);
    if (!c || strcmp(json_string_value(json_object_get(c, "name")), REMOTE_JSON_TOOL)) return 0;
    const char *args = json_string_value(json_object_get(c, "arguments"));
    json_t *v = json_loads(args ? args : "", JSON_DECODE_ANY, NULL);
    if (v && st->kind == LLM_OUTPUT_JSON_SCHEMA && !schema_root_object(st->schema)) {
        json_t *inner = json_incref(json_object_get(v, "value"));
        json_decref(v);
        v = inner;
    }
    char *t = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(v);
    /* an input that does not parse goes on as text: validation reports it */
    int rc = remote_answer_append(a, t ? t : (args ? args : ""), strlen(t ? t : (args ? args : "")));
    free(t);
    json_decref(a->tool_calls);
    a->tool_calls = NULL;
    if (a->finish_reason && !strcmp(a->finish_reason, "tool_calls")) a->finish_reason = "stop";
    return rc;
}

/* choices[0].logprobs.content of an OpenAI answer or chunk: its entries
 * appended to a->logprobs, kept in OpenAI's shape */
static int logprobs_openai(json_t *c0, struct remote_answer *a)
{
    json_t *content = json_object_get(json_object_get(c0, "logprobs"), "content");
    if (!json_is_array(content)) return 0;
    if (!a->logprobs && !(a->logprobs = json_array())) return AIOS_ENOMEM;
    return json_array_extend(a->logprobs, content) ? AIOS_ENOMEM : 0;
}

static const char *map_finish_openai(const char *f)
{
    if (!f) return NULL;
    if (!strcmp(f, "length")) return "length";
    if (!strcmp(f, "tool_calls") || !strcmp(f, "function_call")) return "tool_calls";
    if (!strcmp(f, "content_filter")) return "content_filter";
    return "stop";
}

static const char *map_stop_reason(const char *f)
{
    if (!f) return NULL;
    if (!strcmp(f, "max_tokens")) return "length";
    if (!strcmp(f, "tool_use")) return "tool_calls";
    if (!strcmp(f, "refusal")) return "content_filter";
    return "stop"; /* end_turn, stop_sequence, pause_turn */
}

static int int_field(json_t *o, const char *k, int *out)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v)) return 0;
    *out = (int)json_integer_value(v);
    return 1;
}

static void usage_openai(json_t *u, struct remote_answer *a)
{
    if (!json_is_object(u)) return;
    int_field(u, "prompt_tokens", &a->n_prompt);
    int_field(u, "completion_tokens", &a->n_gen);
    int_field(json_object_get(u, "prompt_tokens_details"), "cached_tokens", &a->n_cached);
}

static void usage_anthropic(json_t *u, struct remote_answer *a)
{
    if (!json_is_object(u)) return;
    int in = 0, cr = 0, cc = 0;
    bool have_in = int_field(u, "input_tokens", &in);
    int_field(u, "cache_read_input_tokens", &cr);
    int_field(u, "cache_creation_input_tokens", &cc);
    /* Anthropic counts cached and cache-written tokens apart from
     * input_tokens; OpenAI's prompt_tokens includes them */
    if (have_in) {
        a->n_prompt = in + cr + cc;
        a->n_cached = cr;
    }
    int_field(u, "output_tokens", &a->n_gen);
}

static void error_from(json_t *e, struct remote_answer *a)
{
    json_t *m = json_object_get(e, "message"), *t = json_object_get(e, "type");
    snprintf(a->error, sizeof a->error, "%s",
             json_is_string(m) ? json_string_value(m) : "upstream reported an error");
    snprintf(a->error_type, sizeof a->error_type, "%s", json_is_string(t) ? json_string_value(t) : "");
}

int remote_wire_parse_response(enum remote_dialect d, const char *body, size_t len,
                               struct remote_answer *a, char *err, size_t errlen)
{
    json_error_t je;
    json_t *j = json_loadb(body, len, 0, &je);
    int rc = AIOS_EINVAL;
    if (!json_is_object(j)) {
        snprintf(err, errlen, "upstream answered with something that is not a JSON object (%s)",
                 j ? "wrong type" : je.text);
        goto out;
    }
    if (d == REMOTE_DIALECT_OPENAI) {
        json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
        json_t *msg = json_object_get(c0, "message");
        if (!json_is_object(msg)) {
            snprintf(err, errlen, "upstream answer has no choices[0].message");
            goto out;
        }
        json_t *content = json_object_get(msg, "content");
        if (json_is_string(content) &&
            remote_answer_append(a, json_string_value(content), json_string_length(content))) {
            rc = AIOS_ENOMEM;
            goto out;
        }
        json_t *tcs = json_object_get(msg, "tool_calls");
        if (json_is_array(tcs) && calls_openai(tcs, a)) {
            rc = AIOS_ENOMEM;
            goto out;
        }
        if (logprobs_openai(c0, a)) {
            rc = AIOS_ENOMEM;
            goto out;
        }
        json_t *f = json_object_get(c0, "finish_reason");
        a->finish_reason = map_finish_openai(json_is_string(f) ? json_string_value(f) : "stop");
        usage_openai(json_object_get(j, "usage"), a);
    } else {
        json_t *content = json_object_get(j, "content");
        if (!json_is_array(content)) {
            snprintf(err, errlen, "upstream answer has no content array");
            goto out;
        }
        size_t i;
        json_t *blk;
        json_array_foreach(content, i, blk) {
            json_t *t = json_object_get(blk, "type"), *tx = json_object_get(blk, "text");
            if (json_is_string(t) && !strcmp(json_string_value(t), "text") && json_is_string(tx) &&
                remote_answer_append(a, json_string_value(tx), json_string_length(tx))) {
                rc = AIOS_ENOMEM;
                goto out;
            }
            if (json_is_string(t) && !strcmp(json_string_value(t), "tool_use")) {
                char *in = json_dumps(json_object_get(blk, "input"), JSON_COMPACT);
                json_t *c = add_call(a, json_string_value(json_object_get(blk, "id")),
                                     json_string_value(json_object_get(blk, "name")), in ? in : "{}");
                free(in);
                if (!c) {
                    rc = AIOS_ENOMEM;
                    goto out;
                }
            }
        }
        json_t *f = json_object_get(j, "stop_reason");
        a->finish_reason = map_stop_reason(json_is_string(f) ? json_string_value(f) : "end_turn");
        usage_anthropic(json_object_get(j, "usage"), a);
    }
    if (!a->text && remote_answer_append(a, "", 0)) {
        rc = AIOS_ENOMEM;
        goto out;
    }
    a->done = true;
    rc = 0;
out:
    json_decref(j);
    return rc;
}

int remote_wire_stream_event(enum remote_dialect d, const char *event, const char *data,
                             size_t n, struct remote_answer *a, size_t *delta_off, size_t *n_delta)
{
    *delta_off = a->len;
    *n_delta = 0;
    if (d == REMOTE_DIALECT_OPENAI && n == 6 && !memcmp(data, "[DONE]", 6)) {
        a->done = true;
        return 0;
    }
    if (d == REMOTE_DIALECT_ANTHROPIC && !strcmp(event, "ping")) return 0;
    json_t *j = json_loadb(data, n, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return AIOS_EINVAL;
    }
    int rc = 0;
    json_t *e = json_object_get(j, "error");
    if (json_is_object(e)) {
        error_from(e, a);
        goto out;
    }
    const char *text = NULL;
    size_t tn = 0;
    if (d == REMOTE_DIALECT_OPENAI) {
        json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
        json_t *c = json_object_get(json_object_get(c0, "delta"), "content");
        if (json_is_string(c)) {
            text = json_string_value(c);
            tn = json_string_length(c);
        }
        json_t *tcs = json_object_get(json_object_get(c0, "delta"), "tool_calls");
        if (json_is_array(tcs) && (rc = calls_openai_delta(tcs, a))) goto out;
        if ((rc = logprobs_openai(c0, a))) goto out;
        json_t *f = json_object_get(c0, "finish_reason");
        if (json_is_string(f)) a->finish_reason = map_finish_openai(json_string_value(f));
        usage_openai(json_object_get(j, "usage"), a);
    } else {
        json_t *t = json_object_get(j, "type");
        const char *type = json_is_string(t) ? json_string_value(t) : event;
        if (!strcmp(type, "message_start")) {
            usage_anthropic(json_object_get(json_object_get(j, "message"), "usage"), a);
        } else if (!strcmp(type, "content_block_start")) {
            json_t *cb = json_object_get(j, "content_block");
            json_t *ct = json_object_get(cb, "type");
            if (json_is_string(ct) && !strcmp(json_string_value(ct), "tool_use")) {
                /* input arrives as input_json_delta pieces */
                if (!add_call(a, json_string_value(json_object_get(cb, "id")),
                              json_string_value(json_object_get(cb, "name")), "")) {
                    rc = AIOS_ENOMEM;
                    goto out;
                }
                a->in_tool_block = true;
            } else {
                a->in_tool_block = false;
            }
        } else if (!strcmp(type, "content_block_delta")) {
            json_t *dl = json_object_get(j, "delta");
            json_t *tx = json_object_get(dl, "text");
            json_t *pj = json_object_get(dl, "partial_json");
            if (json_is_string(pj) && a->in_tool_block) {
                json_t *c = json_array_get(a->tool_calls, json_array_size(a->tool_calls) - 1);
                if (append_member(c, "arguments", json_string_value(pj), json_string_length(pj))) {
                    rc = AIOS_ENOMEM;
                    goto out;
                }
            } else if (json_is_string(tx)) {
                text = json_string_value(tx);
                tn = json_string_length(tx);
            }
        } else if (!strcmp(type, "message_delta")) {
            json_t *sr = json_object_get(json_object_get(j, "delta"), "stop_reason");
            if (json_is_string(sr)) a->finish_reason = map_stop_reason(json_string_value(sr));
            int out_tokens;
            if (int_field(json_object_get(j, "usage"), "output_tokens", &out_tokens))
                a->n_gen = out_tokens;
        } else if (!strcmp(type, "message_stop")) {
            a->done = true;
        }
    }
    if (tn) {
        if (remote_answer_append(a, text, tn)) {
            rc = AIOS_ENOMEM;
            goto out;
        }
        *n_delta = tn;
    }
out:
    json_decref(j);
    return rc;
}

void remote_wire_error_message(const char *body, size_t len, char *out, size_t outlen)
{
    json_t *j = body && len ? json_loadb(body, len, 0, NULL) : NULL;
    json_t *e = json_object_get(j, "error");
    json_t *m = json_is_object(e) ? json_object_get(e, "message") : e;
    if (!json_is_string(m)) m = json_object_get(j, "message");
    if (!json_is_string(m)) m = json_object_get(j, "detail");
    if (json_is_string(m)) {
        snprintf(out, outlen, "%s", json_string_value(m));
    } else if (body && len) {
        /* not JSON: the first line of it, printable bytes only */
        size_t k = 0;
        for (size_t i = 0; i < len && k + 1 < outlen && k < 200; i++) {
            char c = body[i];
            if (c == '\n' || c == '\r') {
                if (k) break;
                continue;
            }
            out[k++] = (c >= 32 && c < 127) ? c : '?';
        }
        out[k] = 0;
    } else {
        snprintf(out, outlen, "(empty body)");
    }
    json_decref(j);
}

/* ---- SSE ---- */

void sse_parser_free(struct sse_parser *p)
{
    free(p->line);
    free(p->data);
    memset(p, 0, sizeof *p);
}

static int sse_line(struct sse_parser *p, const char *l, size_t n, sse_event_fn fn, void *ud)
{
    if (n == 0) { /* blank line: dispatch */
        int rc = 0;
        if (p->has_data) rc = fn(ud, p->event, p->data ? p->data : "", p->n_data);
        p->has_data = false;
        p->n_data = 0;
        p->event[0] = 0;
        return rc;
    }
    if (l[0] == ':') return 0; /* comment */
    const char *colon = memchr(l, ':', n);
    size_t fl = colon ? (size_t)(colon - l) : n;
    const char *v = colon ? colon + 1 : l + n;
    size_t vl = colon ? n - fl - 1 : 0;
    if (vl && v[0] == ' ') {
        v++;
        vl--;
    }
    if (fl == 4 && !memcmp(l, "data", 4)) {
        if (p->has_data && util_buf_append(&p->data, &p->n_data, &p->cap_data, "\n", 1))
            return AIOS_ENOMEM;
        if (util_buf_append(&p->data, &p->n_data, &p->cap_data, v, vl)) return AIOS_ENOMEM;
        p->has_data = true;
    } else if (fl == 5 && !memcmp(l, "event", 5)) {
        size_t k = vl < sizeof p->event - 1 ? vl : sizeof p->event - 1;
        memcpy(p->event, v, k);
        p->event[k] = 0;
    }
    return 0;
}

int sse_feed(struct sse_parser *p, const char *bytes, size_t n, sse_event_fn fn, void *ud)
{
    while (n) {
        const char *nl = memchr(bytes, '\n', n);
        size_t take = nl ? (size_t)(nl - bytes) : n;
        if (util_buf_append(&p->line, &p->n_line, &p->cap_line, bytes, take)) return AIOS_ENOMEM;
        if (!nl) break;
        bytes += take + 1;
        n -= take + 1;
        size_t ln = p->n_line;
        if (ln && p->line[ln - 1] == '\r') ln--;
        p->n_line = 0;
        int rc = sse_line(p, p->line, ln, fn, ud);
        if (rc) return rc;
    }
    return 0;
}
