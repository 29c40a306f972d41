/* Wire formats of the remote backends: OpenAI chat completions and
 * Anthropic Messages, requests and answers, whole and streamed (SSE).
 *
 * Everything here is a pure function of its arguments (no I/O, no globals),
 * so it runs on any thread and is unit-tested against recorded exchanges.
 * remote.c owns the transfers and calls in here.
 *
 * Mapping choices:
 * - OpenAI-compatible: messages go as they are; temperature, top_p, seed and
 *   stop pass through (seed is what makes an upstream aios or vLLM answer
 *   reproducible); top_k/min_p only to servers that accept them; streamed
 *   calls ask for stream_options.include_usage so usage is known at the end.
 * - Anthropic: system messages are joined into the top-level "system"; tool
 *   results become user text (there are no tool-call ids to pair them
 *   with); consecutive messages of one role are merged (the API wants
 *   alternation); temperature is clamped to Anthropic's 0..1; max_tokens is
 *   required, so a default is sent when the client gave none; stop strings
 *   become stop_sequences; seed is not supported by the API and is dropped.
 *   stop_reason maps to finish_reason: end_turn/stop_sequence/pause_turn ->
 *   stop, max_tokens -> length, tool_use -> tool_calls, refusal ->
 *   content_filter. */
#include "llm/remote.h"

#include "util/err.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct remote_backend_info g_backends[] = {
    {"openai", REMOTE_DIALECT_OPENAI, "https://api.openai.com/v1", "openai", "OPENAI_API_KEY", true, false, false},
    {"openai-compatible", REMOTE_DIALECT_OPENAI, NULL, "openai-compatible", NULL, false, true, false},
    {"vllm", REMOTE_DIALECT_OPENAI, "http://127.0.0.1:8000/v1", "vllm", NULL, false, true, true},
    {"sglang", REMOTE_DIALECT_OPENAI, "http://127.0.0.1:30000/v1", "sglang", NULL, false, true, true},
    {"ollama", REMOTE_DIALECT_OPENAI, "http://127.0.0.1:11434/v1", "ollama", NULL, false, false, false},
    {"llamacpp-server", REMOTE_DIALECT_OPENAI, "http://127.0.0.1:8080/v1", "llamacpp-server", NULL, false, true, false},
    {"groq", REMOTE_DIALECT_OPENAI, "https://api.groq.com/openai/v1", "groq", "GROQ_API_KEY", true, false, false},
    {"deepseek", REMOTE_DIALECT_OPENAI, "https://api.deepseek.com/v1", "deepseek", "DEEPSEEK_API_KEY", true, false, false},
    {"gemini", REMOTE_DIALECT_OPENAI, "https://generativelanguage.googleapis.com/v1beta/openai", "gemini", "GEMINI_API_KEY", true, false, false},
    {"anthropic", REMOTE_DIALECT_ANTHROPIC, "https://api.anthropic.com", "anthropic", "ANTHROPIC_API_KEY", true, false, false},
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
    if (p->has_seed) rc |= json_object_set_new(b, "seed", json_integer((json_int_t)p->seed));
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

static json_t *request_openai(const struct llm_req *req, const struct remote_wire_opts *o)
{
    json_t *msgs = json_array();
    for (size_t i = 0; i < req->n_msgs; i++)
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", req->msgs[i].role, "content",
                                              req->msgs[i].content ? req->msgs[i].content : ""));
    json_t *b = json_pack("{s:s,s:o}", "model", o->model, "messages", msgs);
    if (!b || json_array_size(msgs) != req->n_msgs) goto nomem;
    if (set_sampling_openai(b, req, o)) goto nomem;
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

static json_t *request_anthropic(const struct llm_req *req, const struct remote_wire_opts *o,
                                 char *err, size_t errlen)
{
    char *sys = NULL, *cur = NULL;
    size_t n_sys = 0, cap_sys = 0, n_cur = 0, cap_cur = 0;
    const char *cur_role = NULL;
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
        if (cur_role && (!role || strcmp(role, cur_role))) {
            if (json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", cur_role, "content", cur)))
                goto nomem;
            n_cur = 0;
            cur[0] = 0;
        }
        if (!role) break;
        bool tool = !strcmp(req->msgs[i].role, "tool");
        if (tool) {
            size_t need = strlen(text) + 32;
            char *t = malloc(need);
            if (!t) goto nomem;
            snprintf(t, need, "Tool result:\n%s", text);
            int rc = join(&cur, &n_cur, &cap_cur, t);
            free(t);
            if (rc) goto nomem;
        } else if (join(&cur, &n_cur, &cap_cur, text)) {
            goto nomem;
        }
        cur_role = role;
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
        if (!strcmp(json_string_value(json_object_get(last, "role")), "assistant")) {
            const char *t = json_string_value(json_object_get(last, "content"));
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
    if (rc) goto nomem;
    json_decref(msgs);
    free(sys);
    free(cur);
    return b;
nomem:
    snprintf(err, errlen, "out of memory");
fail:
    json_decref(b);
    json_decref(msgs);
    free(sys);
    free(cur);
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
    memset(a, 0, sizeof *a);
}

int remote_answer_append(struct remote_answer *a, const char *s, size_t n)
{
    return util_buf_append(&a->text, &a->len, &a->cap, s, n);
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
        json_t *f = json_object_get(c0, "finish_reason");
        if (json_is_string(f)) a->finish_reason = map_finish_openai(json_string_value(f));
        usage_openai(json_object_get(j, "usage"), a);
    } else {
        json_t *t = json_object_get(j, "type");
        const char *type = json_is_string(t) ? json_string_value(t) : event;
        if (!strcmp(type, "message_start")) {
            usage_anthropic(json_object_get(json_object_get(j, "message"), "usage"), a);
        } else if (!strcmp(type, "content_block_delta")) {
            json_t *dl = json_object_get(j, "delta");
            json_t *tx = json_object_get(dl, "text");
            if (json_is_string(tx)) {
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
