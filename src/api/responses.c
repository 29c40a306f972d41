/* OpenAI's Responses API: POST /v1/responses, GET and DELETE
 * /v1/responses/{id} (docs/api.md, "Responses").
 *
 * A request is translated at the edge into the chat-completions request it
 * stands for, and from there it takes the chat route's path unchanged
 * (api_openai_parse_chat, api_llm_prepare, one LLM syscall): `instructions`
 * become the system message, the stored chain of previous_response_id
 * (its ancestors' input and output items, oldest first, from the responses
 * manager, src/resp) and this turn's `input` items become the messages,
 * function tools and function_call / function_call_output items become
 * chat tools, assistant tool_calls and tool results, and `text.format`
 * becomes response_format (so JSON schemas are enforced by the same
 * grammar). Every field is checked here; one aios does not support is a 400
 * naming it.
 *
 * The KV cache: the prompt is rendered from the whole conversation every
 * turn, exactly as the chat route would render the resent history, and the
 * syscall carries the owning agent. The engine finds the agent's retained
 * conversation that the prompt extends and computes only the tokens past
 * the common prefix (src/llm/llama.c, slot_for_new). When that
 * conversation was evicted, or the kernel restarted, the same prompt is
 * computed from the start: the store is the durable copy, the KV cache a
 * cache of it. What the client saves is resending the history.
 *
 * Ownership: a response belongs to the acting agent of the request that
 * made it (the access gate's r->acc_agent: the token's agent, or the agent
 * the operator acts as). Reading, deleting or continuing another agent's
 * response is the same 404 as an unknown id.
 *
 * The answer is the Response object; streamed, the Responses events
 * (response.created, response.in_progress, output item and content part
 * events, response.output_text.delta, function_call_arguments events,
 * response.completed / response.incomplete / response.failed), each with a
 * sequence_number, as `event: TYPE` / `data: JSON` pairs (no [DONE]). With
 * function tools the text is only known to be text or calls at the end, so
 * it is sent then. The response is stored (store, default true) before the
 * final event or the answer, on the HTTP thread (one SQLite row). */
#include "api/responses.h"

#include "llm/structured.h"
#include "resp/resp.h"
#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define BAD(...)                                                                                   \
    do {                                                                                           \
        snprintf(err, errlen, __VA_ARGS__);                                                        \
        return AIOS_EINVAL;                                                                        \
    } while (0)

/* "prefix" + 32 hex digits */
static void new_id(char *out, size_t n, const char *prefix)
{
    static _Atomic unsigned long long counter;
    unsigned char b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
        unsigned long long x = (unsigned long long)util_wall_us() ^ (++counter << 40);
        for (size_t i = 0; i < sizeof b; i++) b[i] = (unsigned char)(x >> ((i % 8) * 8)) ^ (unsigned char)i;
    }
    size_t o = (size_t)snprintf(out, n, "%s", prefix);
    for (size_t i = 0; i < sizeof b && o + 2 < n; i++) o += (size_t)snprintf(out + o, n - o, "%02x", b[i]);
}

/* ---- request state ---- */

struct rs_state {
    char id[64], msg_id[64];
    int64_t created;
    char *model;
    char *agent;  /* the owner */
    char *prev;   /* previous_response_id, or NULL */
    json_t *input; /* this turn's items, normalised */
    json_t *echo;  /* request fields the response object repeats */
    bool store;
    long long seq; /* next sequence_number */
    bool began, msg_open;
};

static void rs_free(void *p)
{
    struct rs_state *rs = p;
    if (!rs) return;
    free(rs->model);
    free(rs->agent);
    free(rs->prev);
    json_decref(rs->input);
    json_decref(rs->echo);
    free(rs);
}

/* the agent the request acts for: the access gate's decision, else what it
 * names itself (a kernel without an access manager) */
static const char *owner_of(struct api_req *r, json_t *body)
{
    if (r->acc_agent[0]) return r->acc_agent;
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Aios-Agent");
    if (h && *h) return h;
    json_t *u = body ? json_object_get(body, "user") : NULL;
    return json_is_string(u) ? json_string_value(u) : "";
}

/* ---- input items ---- */

/* content (a string or text parts) -> a new array of {"type","text"} */
static int norm_parts(json_t *c, const char *where, bool assistant, json_t **out, char *err,
                      size_t errlen)
{
    *out = NULL;
    const char *deft = assistant ? "output_text" : "input_text";
    if (json_is_string(c)) {
        *out = json_pack("[{s:s,s:O}]", "type", deft, "text", c);
        return *out ? 0 : AIOS_ENOMEM;
    }
    if (!json_is_array(c)) BAD("%s.content must be a string or an array of content parts", where);
    json_t *a = json_array();
    size_t i;
    json_t *p;
    json_array_foreach(c, i, p) {
        json_t *t = json_object_get(p, "type"), *tx = json_object_get(p, "text");
        const char *ts = json_string_value(t);
        if (!json_is_object(p) || !ts) {
            json_decref(a);
            BAD("%s.content[%zu] must be an object with a 'type'", where, i);
        }
        if (strcmp(ts, "input_text") && strcmp(ts, "output_text") && strcmp(ts, "text")) {
            json_decref(a);
            BAD("%s.content[%zu]: content type '%s' is not supported (only input_text and "
                "output_text parts)", where, i, ts);
        }
        if (!json_is_string(tx)) {
            json_decref(a);
            BAD("%s.content[%zu].text must be a string", where, i);
        }
        json_array_append_new(a, json_pack("{s:s,s:O}", "type", strcmp(ts, "text") ? ts : deft,
                                           "text", tx));
    }
    *out = a;
    return 0;
}

/* one input item -> its normalised form (a new reference in *out) */
static int norm_item(json_t *it, size_t i, json_t **out, char *err, size_t errlen)
{
    *out = NULL;
    char where[32];
    snprintf(where, sizeof where, "input[%zu]", i);
    if (!json_is_object(it)) BAD("%s must be an object", where);
    json_t *type = json_object_get(it, "type");
    const char *ts = json_string_value(type);
    if (type && !ts) BAD("%s.type must be a string", where);
    if (!ts && json_object_get(it, "role")) ts = "message";
    if (!ts) BAD("%s needs a 'type' (message, function_call, function_call_output) or a 'role'",
                 where);
    if (!strcmp(ts, "message")) {
        const char *role = json_string_value(json_object_get(it, "role"));
        if (!role || (strcmp(role, "user") && strcmp(role, "system") && strcmp(role, "developer") &&
                      strcmp(role, "assistant")))
            BAD("%s.role must be one of user, system, developer, assistant", where);
        json_t *c = json_object_get(it, "content");
        if (!c) BAD("%s.content is required", where);
        json_t *parts;
        int rc = norm_parts(c, where, !strcmp(role, "assistant"), &parts, err, errlen);
        if (rc) return rc;
        *out = json_pack("{s:s,s:s,s:o}", "type", "message", "role", role, "content", parts);
    } else if (!strcmp(ts, "function_call")) {
        json_t *cid = json_object_get(it, "call_id"), *name = json_object_get(it, "name"),
               *args = json_object_get(it, "arguments");
        if (!json_is_string(cid) || !json_string_length(cid))
            BAD("%s.call_id must be a non-empty string", where);
        if (!json_is_string(name) || !json_string_length(name))
            BAD("%s.name must be a non-empty string", where);
        if (!json_is_string(args)) BAD("%s.arguments must be a string (JSON text)", where);
        *out = json_pack("{s:s,s:O,s:O,s:O}", "type", "function_call", "call_id", cid, "name", name,
                         "arguments", args);
    } else if (!strcmp(ts, "function_call_output")) {
        json_t *cid = json_object_get(it, "call_id"), *o = json_object_get(it, "output");
        if (!json_is_string(cid) || !json_string_length(cid))
            BAD("%s.call_id must be a non-empty string", where);
        json_t *text = NULL;
        if (json_is_string(o)) {
            text = json_incref(o);
        } else if (json_is_array(o)) { /* text parts: joined */
            json_t *parts;
            int rc = norm_parts(o, where, false, &parts, err, errlen);
            if (rc) return rc;
            size_t k;
            json_t *p;
            char *s = NULL;
            size_t n = 0, cap = 0;
            json_array_foreach(parts, k, p) {
                json_t *tx = json_object_get(p, "text");
                if (util_buf_append(&s, &n, &cap, json_string_value(tx), json_string_length(tx))) {
                    free(s);
                    json_decref(parts);
                    return AIOS_ENOMEM;
                }
            }
            json_decref(parts);
            text = json_stringn(s ? s : "", n);
            free(s);
            if (!text) BAD("%s.output contains a NUL character or invalid UTF-8", where);
        } else {
            BAD("%s.output must be a string", where);
        }
        *out = json_pack("{s:s,s:O,s:o}", "type", "function_call_output", "call_id", cid, "output",
                         text);
    } else {
        BAD("%s: item type '%s' is not supported (message, function_call and "
            "function_call_output are)", where, ts);
    }
    return *out ? 0 : AIOS_ENOMEM;
}

/* items (normalised input items or stored output items) appended to chat
 * messages */
static int items_to_msgs(json_t *items, json_t *msgs)
{
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
        const char *ts = json_string_value(json_object_get(it, "type"));
        if (!ts) continue;
        if (!strcmp(ts, "message")) {
            char *s = NULL;
            size_t n = 0, cap = 0, k;
            json_t *p;
            json_array_foreach(json_object_get(it, "content"), k, p) {
                json_t *tx = json_object_get(p, "text");
                if (json_is_string(tx) &&
                    util_buf_append(&s, &n, &cap, json_string_value(tx), json_string_length(tx))) {
                    free(s);
                    return AIOS_ENOMEM;
                }
            }
            json_t *m = json_pack("{s:O,s:s%}", "role", json_object_get(it, "role"), "content",
                                  s ? s : "", n);
            free(s);
            if (!m || json_array_append_new(msgs, m)) return AIOS_ENOMEM;
        } else if (!strcmp(ts, "function_call")) {
            /* calls of one turn join the assistant message before them */
            json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
            const char *lr = json_string_value(json_object_get(last, "role"));
            if (!last || !lr || strcmp(lr, "assistant")) {
                last = json_pack("{s:s,s:s}", "role", "assistant", "content", "");
                if (!last || json_array_append_new(msgs, last)) return AIOS_ENOMEM;
            }
            json_t *tcs = json_object_get(last, "tool_calls");
            if (!tcs) {
                tcs = json_array();
                if (json_object_set_new(last, "tool_calls", tcs)) return AIOS_ENOMEM;
            }
            json_t *tc = json_pack("{s:O,s:s,s:{s:O,s:O}}", "id", json_object_get(it, "call_id"),
                                   "type", "function", "function", "name",
                                   json_object_get(it, "name"), "arguments",
                                   json_object_get(it, "arguments"));
            if (!tc || json_array_append_new(tcs, tc)) return AIOS_ENOMEM;
        } else if (!strcmp(ts, "function_call_output")) {
            json_t *m = json_pack("{s:s,s:O,s:O}", "role", "tool", "tool_call_id",
                                  json_object_get(it, "call_id"), "content",
                                  json_object_get(it, "output"));
            if (!m || json_array_append_new(msgs, m)) return AIOS_ENOMEM;
        }
    }
    return 0;
}

/* ---- the request ---- */

static const char *const g_known[] = {
    "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text",
    "temperature", "top_p", "max_output_tokens", "previous_response_id", "store", "stream",
    "metadata", "user", "include", "truncation", "reasoning", "service_tier", "stream_options",
    "background", "top_logprobs", "max_tool_calls", "prompt_cache_key", "safety_identifier",
    "prompt_cache_retention", NULL,
};

static bool is_null(json_t *v)
{
    return !v || json_is_null(v);
}

/* the fields aios accepts only in their default (or documented optional)
 * form */
static int check_options(json_t *body, char *err, size_t errlen)
{
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v) {
        if ((!strcmp(key, "conversation") || !strcmp(key, "prompt")) && !is_null(v))
            BAD("'%s' is not supported: continue a conversation with previous_response_id", key);
        if (!strcmp(key, "conversation") || !strcmp(key, "prompt")) continue;
        bool known = false;
        for (int i = 0; g_known[i] && !known; i++) known = !strcmp(key, g_known[i]);
        if (!known) BAD("unknown field '%s' (see docs/api.md, \"Responses\", for the fields aios "
                        "supports)", key);
    }
    v = json_object_get(body, "include");
    if (!is_null(v) && !(json_is_array(v) && json_array_size(v) == 0))
        BAD("'include' is not supported (send [] or leave it out)");
    v = json_object_get(body, "truncation");
    if (!is_null(v) && !(json_is_string(v) && !strcmp(json_string_value(v), "disabled")))
        BAD("'truncation' must be \"disabled\": aios answers a conversation longer than the "
            "context with a 400");
    v = json_object_get(body, "reasoning");
    if (!is_null(v)) {
        if (!json_is_object(v)) BAD("'reasoning' must be an object");
        const char *k2;
        json_t *x;
        json_object_foreach(v, k2, x) if (!json_is_null(x))
            BAD("'reasoning.%s' is not supported (the models aios runs have no reasoning "
                "settings)", k2);
    }
    v = json_object_get(body, "service_tier");
    if (!is_null(v) && !(json_is_string(v) && (!strcmp(json_string_value(v), "auto") ||
                                              !strcmp(json_string_value(v), "default"))))
        BAD("'service_tier' must be \"auto\" or \"default\"");
    v = json_object_get(body, "background");
    if (!is_null(v) && !json_is_false(v)) BAD("'background' is not supported");
    v = json_object_get(body, "top_logprobs");
    if (!is_null(v) && !(json_is_integer(v) && json_integer_value(v) == 0))
        BAD("'top_logprobs' is not supported on /v1/responses");
    v = json_object_get(body, "max_tool_calls");
    if (!is_null(v)) BAD("'max_tool_calls' is not supported");
    v = json_object_get(body, "stream_options");
    if (!is_null(v) && !json_is_object(v)) BAD("'stream_options' must be an object");
    const char *strs[] = {"prompt_cache_key", "safety_identifier", "user", "instructions",
                          "previous_response_id", "model", "prompt_cache_retention"};
    for (size_t i = 0; i < sizeof strs / sizeof *strs; i++) {
        v = json_object_get(body, strs[i]);
        if (!is_null(v) && !json_is_string(v)) BAD("'%s' must be a string", strs[i]);
    }
    v = json_object_get(body, "metadata");
    if (!is_null(v)) {
        if (!json_is_object(v) || json_object_size(v) > 16)
            BAD("'metadata' must be an object of at most 16 string values");
        const char *k2;
        json_t *x;
        json_object_foreach(v, k2, x) if (!json_is_string(x) || strlen(k2) > 64 ||
                                           json_string_length(x) > 512)
            BAD("'metadata.%s' must be a string of at most 512 characters (keys at most 64)", k2);
    }
    const char *bools[] = {"store", "stream", "parallel_tool_calls"};
    for (size_t i = 0; i < sizeof bools / sizeof *bools; i++) {
        v = json_object_get(body, bools[i]);
        if (!is_null(v) && !json_is_boolean(v)) BAD("'%s' must be a boolean", bools[i]);
    }
    v = json_object_get(body, "max_output_tokens");
    if (!is_null(v) && (!json_is_integer(v) || json_integer_value(v) < 1 ||
                        json_integer_value(v) > (1 << 24)))
        BAD("'max_output_tokens' must be an integer between 1 and %d", 1 << 24);
    return 0;
}

/* tools, tool_choice, text.format -> the chat body's tools, tool_choice,
 * response_format */
static int convert_tools(json_t *body, json_t *chat, char *err, size_t errlen)
{
    json_t *tools = json_object_get(body, "tools");
    if (!is_null(tools)) {
        if (!json_is_array(tools)) BAD("'tools' must be an array of function tools");
        json_t *ct = json_array();
        json_object_set_new(chat, "tools", ct);
        size_t i;
        json_t *t;
        json_array_foreach(tools, i, t) {
            const char *ty = json_string_value(json_object_get(t, "type"));
            if (!json_is_object(t) || !ty)
                BAD("tools[%zu] must be {\"type\":\"function\",\"name\":...}", i);
            if (strcmp(ty, "function"))
                BAD("tools[%zu]: tool type '%s' is not supported (only function tools)", i, ty);
            json_t *name = json_object_get(t, "name");
            if (!json_is_string(name)) BAD("tools[%zu].name must be a string", i);
            json_t *strict = json_object_get(t, "strict");
            if (!is_null(strict) && !json_is_boolean(strict))
                BAD("tools[%zu].strict must be a boolean", i);
            /* strict or not, the grammar holds the arguments to the schema */
            json_t *fn = json_pack("{s:O}", "name", name);
            json_t *d = json_object_get(t, "description"), *p = json_object_get(t, "parameters");
            if (d) json_object_set(fn, "description", d);
            if (p) json_object_set(fn, "parameters", p);
            json_array_append_new(ct, json_pack("{s:s,s:o}", "type", "function", "function", fn));
        }
    }
    json_t *tc = json_object_get(body, "tool_choice");
    if (!is_null(tc)) {
        const char *tcs = json_string_value(tc);
        if (tcs && strcmp(tcs, "auto") && strcmp(tcs, "none") && strcmp(tcs, "required"))
            BAD("'tool_choice' must be \"none\", \"auto\", \"required\" or "
                "{\"type\":\"function\",\"name\":...} (got \"%s\")", tcs);
        if (tcs) {
            json_object_set(chat, "tool_choice", tc);
        } else {
            const char *ty = json_string_value(json_object_get(tc, "type"));
            json_t *name = json_object_get(tc, "name");
            if (!ty || strcmp(ty, "function") || !json_is_string(name))
                BAD("'tool_choice' must be \"none\", \"auto\", \"required\" or "
                    "{\"type\":\"function\",\"name\":...}");
            json_object_set_new(chat, "tool_choice",
                                json_pack("{s:s,s:{s:O}}", "type", "function", "function", "name",
                                          name));
        }
    }
    json_t *ptc = json_object_get(body, "parallel_tool_calls");
    if (json_is_boolean(ptc)) json_object_set(chat, "parallel_tool_calls", ptc);
    json_t *text = json_object_get(body, "text");
    if (is_null(text)) return 0;
    if (!json_is_object(text)) BAD("'text' must be an object");
    const char *k;
    json_t *x;
    json_object_foreach(text, k, x) {
        if (!strcmp(k, "format")) continue;
        if (!strcmp(k, "verbosity") && (is_null(x) || (json_is_string(x) &&
                                                       !strcmp(json_string_value(x), "medium"))))
            continue;
        BAD("'text.%s' is not supported", k);
    }
    json_t *f = json_object_get(text, "format");
    if (is_null(f)) return 0;
    const char *ft = json_string_value(json_object_get(f, "type"));
    if (!json_is_object(f) || !ft) BAD("'text.format' must be an object with a 'type'");
    if (!strcmp(ft, "text")) return 0;
    if (!strcmp(ft, "json_object")) {
        json_object_set_new(chat, "response_format", json_pack("{s:s}", "type", "json_object"));
        return 0;
    }
    if (strcmp(ft, "json_schema"))
        BAD("'text.format.type' must be text, json_object or json_schema (got '%s')", ft);
    json_t *name = json_object_get(f, "name"), *schema = json_object_get(f, "schema"),
           *strict = json_object_get(f, "strict");
    if (!json_is_string(name)) BAD("'text.format.name' must be a string");
    if (!json_is_object(schema)) BAD("'text.format.schema' must be an object (a JSON schema)");
    if (!is_null(strict) && !json_is_boolean(strict)) BAD("'text.format.strict' must be a boolean");
    json_t *js = json_pack("{s:O,s:O}", "name", name, "schema", schema);
    if (json_is_boolean(strict)) json_object_set(js, "strict", strict);
    json_object_set_new(chat, "response_format",
                        json_pack("{s:s,s:o}", "type", "json_schema", "json_schema", js));
    return 0;
}

/* echo[key] = v (borrowed) when given, else def (stolen; NULL: JSON null) */
static void echo(json_t *e, const char *key, json_t *v, json_t *def)
{
    if (v) {
        json_decref(def);
        json_object_set(e, key, v);
    } else {
        json_object_set_new(e, key, def ? def : json_null());
    }
}

/* The chat-completions body this request stands for; rs gets what the
 * answer needs. *status: 400 or 404 with a message. */
static int build_chat(struct kernel *k, json_t *body, struct rs_state *rs, json_t **out,
                      bool *stream, unsigned *status, char *err, size_t errlen)
{
    *out = NULL;
    *status = 400;
    int rc = check_options(body, err, errlen);
    if (rc) return rc;
    json_t *chat = json_object();
    json_t *msgs = json_array();
    struct resp_rec **chain = NULL;
    size_t n_chain = 0;
    if (!chat || !msgs || json_object_set_new(chat, "messages", msgs)) {
        json_decref(chat);
        return AIOS_ENOMEM;
    }
    /* this turn's input */
    json_t *in = json_object_get(body, "input");
    rs->input = json_array();
    if (!rs->input) goto oom;
    if (json_is_string(in)) {
        json_t *it = json_pack("{s:s,s:s,s:[{s:s,s:O}]}", "type", "message", "role", "user",
                               "content", "type", "input_text", "text", in);
        if (!it || json_array_append_new(rs->input, it)) goto oom;
    } else if (json_is_array(in)) {
        size_t i;
        json_t *it;
        json_array_foreach(in, i, it) {
            json_t *n = NULL;
            if ((rc = norm_item(it, i, &n, err, errlen))) goto fail;
            if (json_array_append_new(rs->input, n)) goto oom;
        }
    } else if (!is_null(in)) {
        rc = AIOS_EINVAL;
        snprintf(err, errlen, "'input' must be a string or an array of input items");
        goto fail;
    }
    if (json_array_size(rs->input) == 0) {
        rc = AIOS_EINVAL;
        snprintf(err, errlen, "'input' is required: a string or a non-empty array of input items");
        goto fail;
    }
    /* the stored conversation */
    json_t *prev = json_object_get(body, "previous_response_id");
    if (json_is_string(prev)) {
        char missing[160] = "";
        if (k->responses) {
            rc = resp_chain(k->responses, rs->agent, json_string_value(prev), &chain, &n_chain,
                            missing, sizeof missing);
        } else { /* no store: nothing to continue */
            rc = AIOS_ENOTFOUND;
            snprintf(missing, sizeof missing, "%s", json_string_value(prev));
        }
        if (rc == AIOS_ENOTFOUND) {
            *status = 404;
            snprintf(err, errlen, "Previous response with id '%s' not found.", missing);
            goto fail;
        }
        if (rc == AIOS_ETOOBIG) {
            snprintf(err, errlen, "the conversation of '%s' is longer than %d responses",
                     json_string_value(prev), RESP_MAX_CHAIN);
            rc = AIOS_EINVAL;
            goto fail;
        }
        if (rc == AIOS_EIO) {
            *status = 500;
            snprintf(err, errlen, "the responses store failed; see the kernel log");
            goto fail;
        }
        if (rc) goto fail;
        rs->prev = strdup(json_string_value(prev));
        if (!rs->prev) goto oom;
    }
    json_t *instr = json_object_get(body, "instructions");
    if (json_is_string(instr) &&
        json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "system", "content", instr)))
        goto oom;
    for (size_t i = 0; i < n_chain; i++) {
        json_t *items = json_loads(chain[i]->input, 0, NULL);
        json_t *resp = json_loads(chain[i]->response, 0, NULL);
        rc = items && resp ? items_to_msgs(items, msgs) : AIOS_EIO;
        if (!rc) rc = items_to_msgs(json_object_get(resp, "output"), msgs);
        json_decref(items);
        json_decref(resp);
        if (rc == AIOS_EIO) {
            *status = 500;
            snprintf(err, errlen, "stored response '%s' is damaged", chain[i]->id);
        }
        if (rc) goto fail;
    }
    if ((rc = items_to_msgs(rs->input, msgs))) goto fail;
    /* the model: named, else the one the conversation used, else the default */
    json_t *model = json_object_get(body, "model");
    const char *mn = json_string_value(model);
    if (!mn && n_chain) mn = chain[n_chain - 1]->model;
    if (!mn) {
        struct llm_core *dc = kernel_default_core(k);
        mn = dc ? dc->name : "";
    }
    json_object_set_new(chat, "model", json_string(mn));
    if ((rc = convert_tools(body, chat, err, errlen))) goto fail;
    const char *num[] = {"temperature", "top_p"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(body, num[i]);
        if (!is_null(v)) json_object_set(chat, num[i], v);
    }
    json_t *mot = json_object_get(body, "max_output_tokens");
    if (json_is_integer(mot)) json_object_set(chat, "max_tokens", mot);
    *stream = json_is_true(json_object_get(body, "stream"));
    rs->store = !json_is_false(json_object_get(body, "store"));
    /* what the Response object repeats */
    json_t *tools = json_object_get(body, "tools"), *tc = json_object_get(body, "tool_choice"),
           *text = json_object_get(body, "text"), *meta = json_object_get(body, "metadata"),
           *temp = json_object_get(body, "temperature"), *top_p = json_object_get(body, "top_p"),
           *ptc = json_object_get(body, "parallel_tool_calls"), *user = json_object_get(body, "user");
    bool has_fmt = json_is_object(text) && json_object_get(text, "format");
    rs->echo = json_object();
    if (!rs->echo) goto oom;
    echo(rs->echo, "instructions", json_is_string(instr) ? instr : NULL, NULL);
    echo(rs->echo, "max_output_tokens", json_is_integer(mot) ? mot : NULL, NULL);
    echo(rs->echo, "metadata", json_is_object(meta) ? meta : NULL, json_object());
    echo(rs->echo, "parallel_tool_calls", NULL, json_boolean(!json_is_false(ptc)));
    echo(rs->echo, "temperature", json_is_number(temp) ? temp : NULL, json_real(1.0));
    echo(rs->echo, "text", has_fmt ? text : NULL, json_pack("{s:{s:s}}", "format", "type", "text"));
    echo(rs->echo, "tool_choice", is_null(tc) ? NULL : tc, json_string("auto"));
    echo(rs->echo, "tools", json_is_array(tools) ? tools : NULL, json_array());
    echo(rs->echo, "top_p", json_is_number(top_p) ? top_p : NULL, json_real(1.0));
    echo(rs->echo, "user", json_is_string(user) ? user : NULL, NULL);
    resp_chain_free(chain, n_chain);
    *out = chat;
    return 0;
oom:
    rc = AIOS_ENOMEM;
fail:
    resp_chain_free(chain, n_chain);
    json_decref(chat);
    if (rc == AIOS_ENOMEM) {
        *status = 500;
        snprintf(err, errlen, "out of memory");
    }
    return rc;
}

/* ---- the answer ---- */

int api_responses_parse(struct kernel *k, json_t *body, json_t **chat, bool *stream,
                        unsigned *status, char *err, size_t errlen)
{
    *chat = NULL;
    struct rs_state *rs = calloc(1, sizeof *rs);
    if (!rs || !(rs->agent = strdup("fuzz"))) {
        free(rs);
        return AIOS_ENOMEM;
    }
    int rc = build_chat(k, body, rs, chat, stream, status, err, errlen);
    rs_free(rs);
    return rc;
}

static json_t *response_json(struct rs_state *rs, const char *status, json_t *output,
                             json_t *usage, json_t *error, json_t *incomplete)
{
    json_t *b = json_pack("{s:s,s:s,s:I,s:s,s:o,s:o,s:s,s:o}", "id", rs->id, "object",
                          "response", "created_at", (json_int_t)rs->created, "status", status,
                          "error", error ? error : json_null(), "incomplete_details",
                          incomplete ? incomplete : json_null(), "model", rs->model, "output",
                          output ? output : json_array());
    if (!b) {
        json_decref(usage);
        return NULL;
    }
    json_object_set_new(b, "previous_response_id", rs->prev ? json_string(rs->prev) : json_null());
    json_object_update(b, rs->echo);
    json_object_set_new(b, "reasoning", json_pack("{s:n,s:n}", "effort", "summary"));
    json_object_set_new(b, "store", json_boolean(rs->store));
    json_object_set_new(b, "truncation", json_string("disabled"));
    json_object_set_new(b, "usage", usage ? usage : json_null());
    return b;
}

static json_t *usage_json(const struct llm_res *res)
{
    return json_pack("{s:i,s:{s:i},s:i,s:{s:i},s:i}", "input_tokens", res->n_prompt,
                     "input_tokens_details", "cached_tokens", res->n_prompt - res->n_prompt_computed,
                     "output_tokens", res->n_gen, "output_tokens_details", "reasoning_tokens", 0,
                     "total_tokens", res->n_prompt + res->n_gen);
}

static json_t *message_item(struct rs_state *rs, const char *status, const char *text, size_t n)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:[{s:s,s:s%,s:[]}]}", "id", rs->msg_id, "type", "message",
                     "status", status, "role", "assistant", "content", "type", "output_text",
                     "text", text, n, "annotations");
}

/* The output items and status of a DONE syscall. 0, or an AIOS_E* with a
 * message (the HTTP status in *http). */
static int make_output(struct api_req *r, json_t **output, const char **status,
                       json_t **incomplete, unsigned *http, char *err, size_t errlen)
{
    struct rs_state *rs = r->state;
    struct syscall *sc = r->sc;
    struct llm_res *res = sc->res;
    struct llm_structured_result sr = {.finish = res->finish_reason};
    *output = NULL;
    *incomplete = NULL;
    int rc = llm_structured_result(((struct llm_req *)sc->req)->structured, res, &sr, err, errlen);
    if (rc) {
        *http = rc == AIOS_EIO ? 502 : 500;
        if (rc == AIOS_ENOMEM) snprintf(err, errlen, "out of memory");
        return rc;
    }
    bool cut = !strcmp(sr.finish, "length");
    json_t *out = json_array();
    if (sr.content_len || !sr.calls)
        json_array_append_new(out, message_item(rs, cut ? "incomplete" : "completed", res->text,
                                                sr.content_len));
    if (sr.calls) {
        json_t *tcs = api_openai_tool_calls(sc, sr.calls);
        json_decref(sr.calls);
        size_t i;
        json_t *tc;
        json_array_foreach(tcs, i, tc) {
            const char *cid = json_string_value(json_object_get(tc, "id"));
            json_t *fn = json_object_get(tc, "function");
            char fid[160];
            snprintf(fid, sizeof fid, "fc_%s", cid && !strncmp(cid, "call_", 5) ? cid + 5 : cid);
            json_array_append_new(out, json_pack("{s:s,s:s,s:s,s:s,s:O,s:O}", "id", fid, "type",
                                                 "function_call", "status", "completed", "call_id",
                                                 cid, "name", json_object_get(fn, "name"),
                                                 "arguments", json_object_get(fn, "arguments")));
        }
        json_decref(tcs);
    }
    *output = out;
    *status = cut ? "incomplete" : "completed";
    if (cut) *incomplete = json_pack("{s:s}", "reason", "max_output_tokens");
    return 0;
}

/* store the finished response (when `store`) */
static int store_response(struct api_req *r, json_t *body)
{
    struct rs_state *rs = r->state;
    if (!rs->store) return 0;
    char *input = json_dumps(rs->input, JSON_COMPACT);
    char *resp = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(15));
    struct resp_rec rec = {
        .id = rs->id, .agent = rs->agent, .prev_id = rs->prev, .model = rs->model,
        .created_at = rs->created, .input = input, .response = resp,
    };
    int rc = input && resp ? resp_put(r->k->responses, &rec) : AIOS_ENOMEM;
    free(input);
    free(resp);
    return rc;
}

static json_t *error_obj(int rc, const char *msg)
{
    const char *type;
    api_status_for(rc, &type);
    return json_pack("{s:s,s:s}", "code", type, "message", msg);
}

/* the final Response of a finished syscall (stored); NULL with *http and a
 * message when it failed */
static json_t *final_response(struct api_req *r, unsigned *http, const char **etype, char *err,
                              size_t errlen)
{
    struct rs_state *rs = r->state;
    struct syscall *sc = r->sc;
    *etype = "server_error";
    pthread_mutex_lock(&sc->mu);
    enum syscall_status st = sc->status; /* final: the fields read below no longer change */
    pthread_mutex_unlock(&sc->mu);
    if (st != SYSCALL_STATUS_DONE) {
        *http = api_status_for(sc->err, etype);
        if (sc->http_status) *http = (unsigned)sc->http_status;
        snprintf(err, errlen, "%s", sc->errmsg[0] ? sc->errmsg : "the call failed");
        return NULL;
    }
    json_t *output, *incomplete;
    const char *status;
    int rc = make_output(r, &output, &status, &incomplete, http, err, errlen);
    if (rc) {
        if (rc == AIOS_EIO) *etype = "upstream_error";
        return NULL;
    }
    json_t *body = response_json(rs, status, output, usage_json(sc->res), NULL, incomplete);
    if (!body) {
        *http = 500;
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    rc = store_response(r, body);
    if (rc) {
        json_decref(body);
        *http = rc == AIOS_ENOSPC ? 507 : 500;
        snprintf(err, errlen, "the response could not be stored (%s); see the kernel log",
                 aios_strerror(rc));
        return NULL;
    }
    return body;
}

static enum MHD_Result rs_finish(struct api_req *r)
{
    char err[1024];
    unsigned http = 500;
    const char *etype;
    json_t *body = final_response(r, &http, &etype, err, sizeof err);
    if (!body) return api_send_error(r, http, etype, "%s", err);
    return api_send_json(r, 200, body);
}

/* ---- streaming ---- */

static int ev(struct rs_state *rs, char **out, size_t *n, size_t *cap, const char *type, json_t *j)
{
    json_t *e = json_pack("{s:s,s:I}", "type", type, "sequence_number", (json_int_t)rs->seq++);
    if (!e || !j || json_object_update(e, j)) {
        json_decref(e);
        json_decref(j);
        return AIOS_ENOMEM;
    }
    json_decref(j);
    char *s = json_dumps(e, JSON_COMPACT | JSON_REAL_PRECISION(15));
    json_decref(e);
    if (!s) return AIOS_ENOMEM;
    int rc = util_buf_append(out, n, cap, "event: ", 7);
    if (!rc) rc = util_buf_append(out, n, cap, type, strlen(type));
    if (!rc) rc = util_buf_append(out, n, cap, "\ndata: ", 7);
    if (!rc) rc = util_buf_append(out, n, cap, s, strlen(s));
    if (!rc) rc = util_buf_append(out, n, cap, "\n\n", 2);
    free(s);
    return rc;
}

#define EV(type, j)                                                                                \
    do {                                                                                           \
        if ((rc = ev(rs, out, n_out, cap_out, type, j))) return rc;                                \
    } while (0)

static int open_message(struct rs_state *rs, int idx, char **out, size_t *n_out, size_t *cap_out)
{
    int rc;
    rs->msg_open = true;
    EV("response.output_item.added",
       json_pack("{s:i,s:o}", "output_index", idx, "item",
                 json_pack("{s:s,s:s,s:s,s:s,s:[]}", "id", rs->msg_id, "type", "message", "status",
                           "in_progress", "role", "assistant", "content")));
    EV("response.content_part.added",
       json_pack("{s:s,s:i,s:i,s:{s:s,s:s,s:[]}}", "item_id", rs->msg_id, "output_index", idx,
                 "content_index", 0, "part", "type", "output_text", "text", "", "annotations"));
    return 0;
}

static int text_delta(struct rs_state *rs, int idx, const char *d, size_t n, char **out,
                      size_t *n_out, size_t *cap_out)
{
    int rc;
    EV("response.output_text.delta",
       json_pack("{s:s,s:i,s:i,s:s%,s:[]}", "item_id", rs->msg_id, "output_index", idx,
                 "content_index", 0, "delta", d, n, "logprobs"));
    return 0;
}

static int rs_stream_fmt(struct api_req *r, const char *delta, size_t n, bool final, char **out,
                         size_t *n_out, size_t *cap_out)
{
    struct rs_state *rs = r->state;
    struct syscall *sc = r->sc;
    int rc;
    const struct llm_structured *sst = ((struct llm_req *)sc->req)->structured;
    bool hold = sst && sst->kind == LLM_OUTPUT_TOOLS; /* text or calls: known at the end */
    if (!rs->began) {
        rs->began = true;
        EV("response.created",
           json_pack("{s:o}", "response", response_json(rs, "in_progress", NULL, NULL, NULL, NULL)));
        EV("response.in_progress",
           json_pack("{s:o}", "response", response_json(rs, "in_progress", NULL, NULL, NULL, NULL)));
    }
    if (!hold && n) {
        if (!rs->msg_open && (rc = open_message(rs, 0, out, n_out, cap_out))) return rc;
        if ((rc = text_delta(rs, 0, delta, n, out, n_out, cap_out))) return rc;
    }
    if (!final) return 0;
    char err[1024];
    unsigned http = 500;
    const char *etype;
    json_t *body = final_response(r, &http, &etype, err, sizeof err);
    if (!body) {
        int code = sc->status == SYSCALL_STATUS_DONE ? AIOS_EENGINE : sc->err;
        EV("response.failed",
           json_pack("{s:o}", "response",
                     response_json(rs, "failed", NULL, NULL, error_obj(code, err), NULL)));
        return 0;
    }
    json_t *output = json_object_get(body, "output");
    size_t i;
    json_t *it;
    json_array_foreach(output, i, it) {
        int idx = (int)i;
        const char *ty = json_string_value(json_object_get(it, "type"));
        if (!strcmp(ty, "message")) {
            json_t *tx = json_object_get(json_array_get(json_object_get(it, "content"), 0), "text");
            if (!rs->msg_open && (rc = open_message(rs, idx, out, n_out, cap_out))) goto done;
            if (hold && json_string_length(tx) &&
                (rc = text_delta(rs, idx, json_string_value(tx), json_string_length(tx), out, n_out,
                                 cap_out)))
                goto done;
            if ((rc = ev(rs, out, n_out, cap_out, "response.output_text.done",
                         json_pack("{s:s,s:i,s:i,s:O,s:[]}", "item_id", rs->msg_id, "output_index",
                                   idx, "content_index", 0, "text", tx, "logprobs"))))
                goto done;
            if ((rc = ev(rs, out, n_out, cap_out, "response.content_part.done",
                         json_pack("{s:s,s:i,s:i,s:{s:s,s:O,s:[]}}", "item_id", rs->msg_id,
                                   "output_index", idx, "content_index", 0, "part", "type",
                                   "output_text", "text", tx, "annotations"))))
                goto done;
        } else {
            json_t *added = json_deep_copy(it);
            if (added) {
                json_object_set_new(added, "arguments", json_string(""));
                json_object_set_new(added, "status", json_string("in_progress"));
            }
            json_t *id = json_object_get(it, "id"), *args = json_object_get(it, "arguments");
            if ((rc = ev(rs, out, n_out, cap_out, "response.output_item.added",
                         json_pack("{s:i,s:o}", "output_index", idx, "item", added))) ||
                (rc = ev(rs, out, n_out, cap_out, "response.function_call_arguments.delta",
                         json_pack("{s:O,s:i,s:O}", "item_id", id, "output_index", idx, "delta",
                                   args))) ||
                (rc = ev(rs, out, n_out, cap_out, "response.function_call_arguments.done",
                         json_pack("{s:O,s:i,s:O,s:O}", "item_id", id, "output_index", idx, "name",
                                   json_object_get(it, "name"), "arguments", args))))
                goto done;
        }
        if ((rc = ev(rs, out, n_out, cap_out, "response.output_item.done",
                     json_pack("{s:i,s:O}", "output_index", idx, "item", it))))
            goto done;
    }
    const char *st = json_string_value(json_object_get(body, "status"));
    rc = ev(rs, out, n_out, cap_out,
            !strcmp(st, "incomplete") ? "response.incomplete" : "response.completed",
            json_pack("{s:O}", "response", body));
done:
    json_decref(body);
    return rc;
}

/* ---- routes ---- */

enum MHD_Result api_responses_create(struct api_req *r)
{
    char err[1024] = "";
    enum MHD_Result sent;
    json_t *body = api_parse_body(r, &sent);
    if (!body) return sent;
    /* KV affinity: the kernel that retains this agent's conversation (and,
     * having served it, holds its stored chain) */
    const char *fmodel = json_string_value(json_object_get(body, "model"));
    struct llm_core *fcore = fmodel ? kernel_find_core(r->k, fmodel) : NULL;
    if (fcore && api_affinity_forward(r, fcore, api_responses_create, &sent)) {
        json_decref(body);
        return sent;
    }
    struct rs_state *rs = calloc(1, sizeof *rs);
    struct llm_req *req = calloc(1, sizeof *req);
    json_t *chat = NULL;
    unsigned status = 400;
    bool stream = false, dummy;
    int rc = AIOS_ENOMEM;
    if (!rs || !req || !(rs->agent = strdup(owner_of(r, body)))) {
        status = 500;
        snprintf(err, sizeof err, "out of memory");
        goto fail;
    }
    if (!r->k->responses) {
        status = 503;
        snprintf(err, sizeof err, "the responses store is not running");
        goto fail;
    }
    rc = build_chat(r->k, body, rs, &chat, &stream, &status, err, sizeof err);
    if (rc) goto fail;
    status = 400;
    rc = api_openai_parse_chat(chat, req, &dummy, err, sizeof err);
    if (rc) goto fail;
    struct llm_core *core = kernel_find_core(r->k, req->model);
    if (!core) {
        status = 404;
        snprintf(err, sizeof err, "model '%s' does not exist; GET /v1/models lists the models "
                 "this kernel serves", req->model);
        goto fail;
    }
    if ((rc = api_llm_prepare(r->k, core, req, err, sizeof err))) goto fail;
    int prio;
    bool prio_set;
    if ((rc = api_parse_priority(r, NULL, &prio, &prio_set, err, sizeof err))) goto fail;
    struct syscall *sc = syscall_new(SYSCALL_KIND_LLM, rs->agent[0] ? rs->agent : NULL, core, req,
                                     llm_req_free);
    req = NULL;
    if (!sc) {
        rc = AIOS_ENOMEM;
        goto fail;
    }
    if (prio_set) syscall_set_priority(sc, prio);
    new_id(rs->id, sizeof rs->id, "resp_");
    new_id(rs->msg_id, sizeof rs->msg_id, "msg_");
    rs->created = (int64_t)time(NULL);
    rs->model = strdup(core->name);
    if (!rs->model) {
        syscall_unref(sc);
        rc = AIOS_ENOMEM;
        goto fail;
    }
    r->state = rs;
    r->state_free = rs_free;
    json_decref(chat);
    json_decref(body);
    if (stream) return api_submit_and_stream(r, sc, "text/event-stream", rs_stream_fmt);
    return api_submit_and_wait(r, sc, rs_finish);
fail:
    json_decref(chat);
    json_decref(body);
    llm_req_free(req);
    rs_free(rs);
    if (rc == AIOS_ENOMEM) return api_send_error(r, 500, "server_error", "out of memory");
    return api_send_error(r, status,
                          status == 404   ? "not_found_error"
                          : status >= 500 ? "server_error"
                                          : "invalid_request_error",
                          "%s", err);
}

static enum MHD_Result not_found(struct api_req *r)
{
    return api_send_error(r, 404, "not_found_error", "Response with id '%s' not found.",
                          r->params[0]);
}

enum MHD_Result api_responses_get(struct api_req *r)
{
    if (!r->k->responses) return not_found(r);
    struct resp_rec *rec = NULL;
    int rc = resp_get(r->k->responses, owner_of(r, NULL), r->params[0], &rec);
    if (rc == AIOS_ENOTFOUND) return not_found(r);
    if (rc) return api_send_error(r, 500, "server_error", "the responses store failed: %s",
                                  aios_strerror(rc));
    json_t *body = json_loads(rec->response, 0, NULL);
    resp_rec_free(rec);
    if (!body) return api_send_error(r, 500, "server_error", "the stored response is damaged");
    return api_send_json(r, 200, body);
}

enum MHD_Result api_responses_delete(struct api_req *r)
{
    if (!r->k->responses) return not_found(r);
    int rc = resp_delete(r->k->responses, owner_of(r, NULL), r->params[0]);
    if (rc == AIOS_ENOTFOUND) return not_found(r);
    if (rc) return api_send_error(r, 500, "server_error", "the responses store failed: %s",
                                  aios_strerror(rc));
    return api_send_json(r, 200, json_pack("{s:s,s:s,s:b}", "id", r->params[0], "object",
                                           "response", "deleted", 1));
}
