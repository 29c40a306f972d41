/* Structured output and tool calls for local models.
 *
 * Three steps, each on the request's own thread with no shared state:
 *  1. llm_structured_parse (HTTP thread, from the OpenAI body): checks
 *     response_format, tools, tool_choice and parallel_tool_calls
 *     completely, so every mistake is a 400 naming the field; schemas must
 *     stay inside the llm/schema.h subset (the message names the keyword and
 *     its path). Tool names are [A-Za-z0-9_-] segments joined by "/" (AIOS
 *     tools are "author/name"); the model sees "/" as "__" and the answer
 *     maps back through the table, never by string replacement, so a name
 *     that already holds "__" is safe; two names that would look alike to
 *     the model are refused.
 *  2. llm_structured_prepare (before the engine's prepare): for tools, the
 *     catalogue goes into the system message the way Qwen2.5 / Hermes
 *     models were trained (<tools> with one JSON signature a line, calls as
 *     <tool_call>{"name": ..., "arguments": ...}</tool_call>); earlier
 *     assistant tool calls and tool results in the conversation are written
 *     in the same format (results as <tool_response> in a user turn,
 *     consecutive ones merged). req->grammar is set from llm/grammar.c:
 *     json_object, the schema, or the tool-call grammar (only the named
 *     tool for a named tool_choice; plain text allowed for "auto").
 *  3. llm_structured_result (after generation): tool calls are read from
 *     the first "<tool_call>" on; the text before it is content. Each
 *     call's arguments are validated against the tool's schema. A finished
 *     output that fails is an engine error (the grammar should make it
 *     impossible); an output cut by max_tokens is returned as text with
 *     finish_reason "length" (the OpenAI convention), never as a half call;
 *     the same for one cut by a stop string of the request (finish "stop").
 *
 * Ownership: struct llm_structured owns its strings and holds references
 * to the body's JSON (functions, schema, messages); freed with the
 * llm_req (llm_req_free). */
#include "llm/structured.h"

#include "llm/schema.h"
#include "util/err.h"
#include "util/util.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOOL_NAME_MAX 64

/* printf into err and return AIOS_EINVAL (util_errf) */
#define bad(err, errlen, ...) util_errf(err, errlen, AIOS_EINVAL, __VA_ARGS__)

void llm_structured_free(struct llm_structured *st)
{
    if (!st) return;
    for (size_t i = 0; i < st->n_tools; i++) {
        free(st->tools[i].name);
        free(st->tools[i].wire);
        json_decref(st->tools[i].function);
    }
    free(st->tools);
    json_decref(st->schema);
    json_decref(st->response_format);
    json_decref(st->messages);
    free(st);
}

/* ---- parsing ---- */

static bool valid_tool_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > TOOL_NAME_MAX || s[0] == '/' || s[n - 1] == '/') return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '/') {
            if (s[i + 1] == '/') return false;
            continue;
        }
        if (!isalnum(c) && c != '_' && c != '-') return false;
    }
    return true;
}

static char *wire_name(const char *name)
{
    size_t n = 0;
    for (const char *p = name; *p; p++) n += *p == '/' ? 2 : 1;
    char *w = malloc(n + 1);
    if (!w) return NULL;
    size_t o = 0;
    for (const char *p = name; *p; p++) {
        if (*p == '/') {
            w[o++] = '_';
            w[o++] = '_';
        } else {
            w[o++] = *p;
        }
    }
    w[o] = 0;
    return w;
}

static int parse_tools(json_t *tools, struct llm_structured *st, char *err, size_t errlen)
{
    if (!json_is_array(tools))
        return bad(err, errlen, "'tools' must be an array of {\"type\":\"function\",\"function\":{...}}");
    size_t n = json_array_size(tools);
    st->tools = calloc(n, sizeof *st->tools);
    if (!st->tools) return AIOS_ENOMEM;
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        json_t *type = json_object_get(t, "type"), *fn = json_object_get(t, "function");
        if (!json_is_object(t) || !json_is_string(type) || strcmp(json_string_value(type), "function"))
            return bad(err, errlen, "tools[%zu] must be {\"type\":\"function\",\"function\":{...}} "
                       "(only function tools are supported)", i);
        if (!json_is_object(fn))
            return bad(err, errlen, "tools[%zu].function must be an object with a 'name'", i);
        json_t *name = json_object_get(fn, "name");
        if (!json_is_string(name))
            return bad(err, errlen, "tools[%zu].function.name must be a string", i);
        const char *ns = json_string_value(name);
        json_t *outer = json_object_get(t, "name"); /* the model only ever sees function.name */
        if (outer && !(json_is_string(outer) && !strcmp(json_string_value(outer), ns)))
            return bad(err, errlen, "tools[%zu] names two tools: 'name' is '%s' and "
                       "'function.name' is '%s'; send one name", i,
                       json_is_string(outer) ? json_string_value(outer) : "(not a string)", ns);
        if (!valid_tool_name(ns))
            return bad(err, errlen, "tools[%zu].function.name '%s' must be 1 to %d letters, digits, "
                       "'_' or '-', optionally in '/'-separated parts like author/name", i, ns,
                       TOOL_NAME_MAX);
        json_t *desc = json_object_get(fn, "description");
        if (desc && !json_is_string(desc) && !json_is_null(desc))
            return bad(err, errlen, "tools[%zu].function.description must be a string", i);
        json_t *params = json_object_get(fn, "parameters");
        if (json_is_null(params)) params = NULL;
        if (params) {
            char serr[400];
            if (schema_check_supported(params, serr, sizeof serr))
                return bad(err, errlen, "tools[%zu].function.parameters: %s", i, serr);
            json_t *pt = json_object_get(params, "type");
            if (pt && !(json_is_string(pt) && !strcmp(json_string_value(pt), "object")))
                return bad(err, errlen, "tools[%zu].function.parameters must be a schema of type "
                           "\"object\"", i);
        }
        struct llm_tool *tl = &st->tools[i];
        tl->name = strdup(ns);
        tl->wire = wire_name(ns);
        tl->function = json_incref(fn);
        tl->params = params;
        st->n_tools = i + 1;
        if (!tl->name || !tl->wire) return AIOS_ENOMEM;
        for (size_t j = 0; j < i; j++) {
            if (!strcmp(st->tools[j].name, ns))
                return bad(err, errlen, "tools[%zu]: the name '%s' is used twice", i, ns);
            if (!strcmp(st->tools[j].wire, tl->wire))
                return bad(err, errlen, "tools[%zu]: names '%s' and '%s' both reach the model as "
                           "'%s'; rename one", i, st->tools[j].name, ns, tl->wire);
        }
    }
    return 0;
}

static int parse_tool_choice(json_t *tc, struct llm_structured *st, char *err, size_t errlen)
{
    st->choice = LLM_TOOL_CHOICE_AUTO;
    if (!tc || json_is_null(tc)) return 0;
    if (json_is_string(tc)) {
        const char *s = json_string_value(tc);
        if (!strcmp(s, "auto")) st->choice = LLM_TOOL_CHOICE_AUTO;
        else if (!strcmp(s, "required")) st->choice = LLM_TOOL_CHOICE_REQUIRED;
        else if (!strcmp(s, "none")) st->choice = LLM_TOOL_CHOICE_NONE;
        else
            return bad(err, errlen, "'tool_choice' must be \"none\", \"auto\", \"required\" or "
                       "{\"type\":\"function\",\"function\":{\"name\":...}} (got \"%s\")", s);
        return 0;
    }
    json_t *type = json_object_get(tc, "type");
    json_t *name = json_object_get(json_object_get(tc, "function"), "name");
    if (!json_is_object(tc) || !json_is_string(type) || strcmp(json_string_value(type), "function") ||
        !json_is_string(name))
        return bad(err, errlen, "'tool_choice' must be \"none\", \"auto\", \"required\" or "
                   "{\"type\":\"function\",\"function\":{\"name\":...}}");
    for (size_t i = 0; i < st->n_tools; i++) {
        if (!strcmp(st->tools[i].name, json_string_value(name))) {
            st->choice = LLM_TOOL_CHOICE_NAMED;
            st->forced = i;
            return 0;
        }
    }
    return bad(err, errlen, "'tool_choice' names function '%s', which is not in 'tools'",
               json_string_value(name));
}

static int parse_response_format(json_t *rf, struct llm_structured *st, char *err, size_t errlen)
{
    json_t *t = json_object_get(rf, "type");
    if (!json_is_object(rf) || !json_is_string(t))
        return bad(err, errlen, "'response_format' must be an object with a 'type'");
    const char *ts = json_string_value(t);
    if (!strcmp(ts, "text")) return 0;
    if (!strcmp(ts, "json_object")) {
        st->kind = LLM_OUTPUT_JSON_OBJECT;
        st->response_format = json_incref(rf);
        return 0;
    }
    if (strcmp(ts, "json_schema"))
        return bad(err, errlen, "'response_format.type' must be text, json_object or json_schema "
                   "(got '%s')", ts);
    json_t *js = json_object_get(rf, "json_schema");
    if (!json_is_object(js))
        return bad(err, errlen, "'response_format.json_schema' must be an object "
                   "{\"name\", \"schema\", \"strict\"}");
    json_t *name = json_object_get(js, "name");
    if (name && !json_is_string(name))
        return bad(err, errlen, "'response_format.json_schema.name' must be a string");
    json_t *strict = json_object_get(js, "strict");
    if (strict && !json_is_boolean(strict) && !json_is_null(strict))
        return bad(err, errlen, "'response_format.json_schema.strict' must be a boolean");
    json_t *schema = json_object_get(js, "schema");
    if (!schema) return bad(err, errlen, "'response_format.json_schema.schema' is required");
    char serr[400];
    if (schema_check_supported(schema, serr, sizeof serr))
        return bad(err, errlen, "response_format.json_schema.schema: %s", serr);
    st->kind = LLM_OUTPUT_JSON_SCHEMA;
    st->schema = json_incref(schema);
    st->response_format = json_incref(rf);
    return 0;
}

/* do the messages carry tool history (assistant tool_calls, tool results)? */
static bool has_tool_history(json_t *msgs)
{
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        json_t *role = json_object_get(m, "role");
        if (json_is_string(role) && !strcmp(json_string_value(role), "tool")) return true;
        json_t *tc = json_object_get(m, "tool_calls");
        if (json_is_array(tc) && json_array_size(tc)) return true;
    }
    return false;
}

static int check_history(json_t *msgs, char *err, size_t errlen)
{
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        json_t *tc = json_object_get(m, "tool_calls");
        if (!tc || json_is_null(tc)) continue;
        if (!json_is_array(tc)) return bad(err, errlen, "messages[%zu].tool_calls must be an array", i);
        size_t j;
        json_t *c;
        json_array_foreach(tc, j, c) {
            json_t *fn = json_object_get(c, "function");
            json_t *name = json_object_get(fn, "name"), *args = json_object_get(fn, "arguments");
            if (!json_is_string(name))
                return bad(err, errlen, "messages[%zu].tool_calls[%zu].function.name must be a "
                           "string", i, j);
            if (args && !json_is_string(args) && !json_is_object(args))
                return bad(err, errlen, "messages[%zu].tool_calls[%zu].function.arguments must be "
                           "a JSON string", i, j);
        }
    }
    return 0;
}

int llm_structured_parse(json_t *body, struct llm_structured **out, char *err, size_t errlen)
{
    struct llm_structured_in in = {json_object_get(body, "response_format"),
                                   json_object_get(body, "tools"),
                                   json_object_get(body, "tool_choice"),
                                   json_object_get(body, "parallel_tool_calls"),
                                   json_object_get(body, "messages")};
    return llm_structured_parse_in(&in, out, err, errlen);
}

int llm_structured_parse_in(const struct llm_structured_in *in, struct llm_structured **out,
                            char *err, size_t errlen)
{
    *out = NULL;
    json_t *rf = in->response_format, *tools = in->tools, *tc = in->tool_choice;
    json_t *ptc = in->parallel_tool_calls, *msgs = in->messages;
    if (json_is_null(rf)) rf = NULL;
    if (json_is_null(tools) || (json_is_array(tools) && json_array_size(tools) == 0)) tools = NULL;
    if (json_is_null(tc)) tc = NULL;
    if (ptc && !json_is_null(ptc) && !json_is_boolean(ptc))
        return bad(err, errlen, "'parallel_tool_calls' must be a boolean");
    bool history = json_is_array(msgs) && has_tool_history(msgs);
    if (!rf && !tools && !history) {
        if (tc && !(json_is_string(tc) && !strcmp(json_string_value(tc), "none")) &&
            !(json_is_string(tc) && !strcmp(json_string_value(tc), "auto")))
            return bad(err, errlen, "'tool_choice' needs 'tools'");
        return 0;
    }
    struct llm_structured *st = calloc(1, sizeof *st);
    if (!st) return AIOS_ENOMEM;
    int rc = 0;
    st->kind = LLM_OUTPUT_TEXT;
    st->max_calls = json_is_false(ptc) ? 1 : LLM_MAX_TOOL_CALLS;
    if (history) {
        if ((rc = check_history(msgs, err, errlen))) goto fail;
        st->messages = json_incref(msgs);
    }
    if (rf && (rc = parse_response_format(rf, st, err, errlen))) goto fail;
    if (tools) {
        if ((rc = parse_tools(tools, st, err, errlen))) goto fail;
        if ((rc = parse_tool_choice(tc, st, err, errlen))) goto fail;
        if (st->choice != LLM_TOOL_CHOICE_NONE) {
            if (st->kind != LLM_OUTPUT_TEXT) {
                rc = bad(err, errlen, "'tools' together with a JSON 'response_format' is not "
                         "supported; send one or the other (or tool_choice \"none\")");
                goto fail;
            }
            st->kind = LLM_OUTPUT_TOOLS;
        }
    } else if (tc && !(json_is_string(tc) && (!strcmp(json_string_value(tc), "none") ||
                                              !strcmp(json_string_value(tc), "auto")))) {
        rc = bad(err, errlen, "'tool_choice' needs 'tools'");
        goto fail;
    }
    if (st->kind == LLM_OUTPUT_TEXT && !st->messages) {
        /* valid, and nothing to render or constrain */
        llm_structured_free(st);
        return 0;
    }
    *out = st;
    return 0;
fail:
    llm_structured_free(st);
    return rc;
}

/* ---- options ---- */

static int opt_int(const struct aios_config *cfg, const char *key, int lo, int hi, int *v,
                   char *err, size_t errlen)
{
    char path[128];
    snprintf(path, sizeof path, "llms.structured_output.%s", key);
    json_t *j = config_lookup(cfg, path);
    if (!j || json_is_null(j)) return 0;
    if (!json_is_integer(j) || json_integer_value(j) < lo || json_integer_value(j) > hi) {
        snprintf(err, errlen, "%s must be an integer between %d and %d", path, lo, hi);
        return AIOS_ECONFIG;
    }
    *v = (int)json_integer_value(j);
    return 0;
}

int llm_structured_opts(const struct aios_config *cfg, struct grammar_opts *o, char *err,
                        size_t errlen)
{
    grammar_opts_default(o);
    if (!cfg) return 0;
    int rc;
    if ((rc = opt_int(cfg, "max_string_length", 0, 2000, &o->max_string, err, errlen))) return rc;
    if ((rc = opt_int(cfg, "max_items", 0, 2000, &o->max_items, err, errlen))) return rc;
    if ((rc = opt_int(cfg, "max_depth", 0, 16, &o->max_depth, err, errlen))) return rc;
    if ((rc = opt_int(cfg, "max_whitespace", 0, 64, &o->max_ws, err, errlen))) return rc;
    return 0;
}

/* ---- prompt rendering ---- */

struct buf {
    char *s;
    size_t n, cap;
    bool oom;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (util_buf_append(&b->s, &b->n, &b->cap, s, n)) b->oom = true;
}

static void buf_puts(struct buf *b, const char *s) { buf_add(b, s, strlen(s)); }

static void buf_json(struct buf *b, json_t *j)
{
    char *s = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!s) {
        b->oom = true;
        return;
    }
    /* the Hermes format writes ", " and ": " */
    char *t = json_dumps(j, JSON_ENCODE_ANY);
    if (t) {
        free(s);
        s = t;
    }
    buf_puts(b, s);
    free(s);
}

/* the catalogue the model reads; tools with their wire names */
static void render_catalogue(const struct llm_structured *st, struct buf *b)
{
    buf_puts(b, "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                "You are provided with function signatures within <tools></tools> XML tags:\n"
                "<tools>");
    for (size_t i = 0; i < st->n_tools; i++) {
        json_t *fn = json_deep_copy(st->tools[i].function);
        if (!fn) {
            b->oom = true;
            return;
        }
        json_object_set_new(fn, "name", json_string(st->tools[i].wire));
        json_t *t = json_pack("{s:s,s:o}", "type", "function", "function", fn);
        buf_puts(b, "\n");
        buf_json(b, t);
        json_decref(t);
    }
    buf_puts(b, "\n</tools>\n\nFor each function call, return a json object with function name "
                "and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
                "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>");
}

/* the wire name for a client name in the history (unknown names: as is,
 * with "/" written as "__") */
static char *history_wire(const struct llm_structured *st, const char *name)
{
    for (size_t i = 0; i < st->n_tools; i++)
        if (!strcmp(st->tools[i].name, name)) return strdup(st->tools[i].wire);
    return wire_name(name);
}

char *llm_structured_wire_name(const struct llm_structured *st, const char *name)
{
    if (!st) return wire_name(name);
    return history_wire(st, name);
}

static int render_calls(const struct llm_structured *st, json_t *calls, const char *content,
                        char **out)
{
    struct buf b = {0};
    buf_puts(&b, content ? content : "");
    size_t i;
    json_t *c;
    json_array_foreach(calls, i, c) {
        json_t *fn = json_object_get(c, "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        json_t *args = json_object_get(fn, "arguments");
        json_t *a = NULL;
        if (json_is_string(args)) a = json_loads(json_string_value(args), JSON_DECODE_ANY, NULL);
        else if (args) a = json_incref(args);
        if (!a) a = json_object();
        char *w = history_wire(st, name ? name : "");
        if (b.n) buf_puts(&b, "\n");
        buf_puts(&b, "<tool_call>\n{\"name\": ");
        json_t *wn = json_string(w ? w : "");
        buf_json(&b, wn);
        json_decref(wn);
        buf_puts(&b, ", \"arguments\": ");
        buf_json(&b, a);
        buf_puts(&b, "}\n</tool_call>");
        json_decref(a);
        if (!w) b.oom = true;
        free(w);
    }
    if (b.oom || !b.s) {
        free(b.s);
        return AIOS_ENOMEM;
    }
    *out = b.s;
    return 0;
}

/* assistant tool calls and tool results -> Hermes text; the catalogue into
 * the system message */
static int rewrite_messages(const struct llm_structured *st, struct llm_req *req)
{
    size_t n = req->n_msgs;
    /* room for an inserted system message */
    struct llm_message *m = calloc(n + 1, sizeof *m);
    if (!m) return AIOS_ENOMEM;
    size_t o = 0;
    int rc = 0;
    bool offer = st->kind == LLM_OUTPUT_TOOLS && st->n_tools > 0;
    if (offer && (n == 0 || strcmp(req->msgs[0].role, "system"))) {
        m[o].role = strdup("system");
        m[o].content = strdup("");
        if (!m[o].role || !m[o].content) rc = AIOS_ENOMEM;
        o++;
    }
    bool prev_tool = false;
    for (size_t i = 0; i < n && !rc; i++) {
        struct llm_message *src = &req->msgs[i];
        json_t *jm = json_array_get(st->messages, i);
        json_t *calls = json_object_get(jm, "tool_calls");
        if (!strcmp(src->role, "tool")) {
            struct buf b = {0};
            /* a run of tool results becomes one user turn; the message before
             * was moved out of req->msgs (its role is NULL) unless it was a
             * tool result too, so remember the previous role here */
            bool merge = o > 0 && prev_tool;
            prev_tool = true;
            if (merge) {
                buf_puts(&b, m[o - 1].content);
                buf_puts(&b, "\n");
            }
            buf_puts(&b, "<tool_response>\n");
            buf_puts(&b, src->content);
            buf_puts(&b, "\n</tool_response>");
            if (b.oom || !b.s) {
                free(b.s);
                rc = AIOS_ENOMEM;
                break;
            }
            if (merge) {
                free(m[o - 1].content);
                m[o - 1].content = b.s;
                continue;
            }
            m[o].role = strdup("user");
            m[o].content = b.s;
            if (!m[o].role) rc = AIOS_ENOMEM;
            o++;
            continue;
        }
        prev_tool = false;
        m[o].role = src->role;
        m[o].content = src->content;
        src->role = src->content = NULL;
        if (!strcmp(m[o].role, "assistant") && json_is_array(calls) && json_array_size(calls)) {
            char *t = NULL;
            rc = render_calls(st, calls, m[o].content, &t);
            if (!rc) {
                free(m[o].content);
                m[o].content = t;
            }
        }
        o++;
    }
    if (!rc && offer) {
        struct buf b = {0};
        buf_puts(&b, m[0].content);
        if (b.n) buf_puts(&b, "\n\n");
        render_catalogue(st, &b);
        if (b.oom || !b.s) {
            free(b.s);
            rc = AIOS_ENOMEM;
        } else {
            free(m[0].content);
            m[0].content = b.s;
        }
    }
    /* swap in the new list; the old one keeps what was not moved */
    for (size_t i = 0; i < n; i++) {
        free(req->msgs[i].role);
        free(req->msgs[i].content);
    }
    free(req->msgs);
    req->msgs = m;
    req->n_msgs = o;
    if (rc) return rc;
    for (size_t i = 0; i < o; i++)
        if (!m[i].role || !m[i].content) return AIOS_ENOMEM;
    return 0;
}

int llm_structured_prepare(struct llm_req *req, const struct grammar_opts *o, char *err,
                           size_t errlen)
{
    struct llm_structured *st = req->structured;
    if (!st) return 0;
    st->has_stop = req->p.n_stop > 0;
    int rc = rewrite_messages(st, req);
    if (rc) return rc;
    char *g = NULL;
    switch (st->kind) {
    case LLM_OUTPUT_TEXT:
        return 0;
    case LLM_OUTPUT_JSON_OBJECT:
        rc = grammar_json_object(o, &g);
        break;
    case LLM_OUTPUT_JSON_SCHEMA: {
        char gerr[300];
        rc = grammar_from_schema(st->schema, o, &g, gerr, sizeof gerr);
        if (rc == AIOS_EINVAL) return bad(err, errlen, "response_format.json_schema.schema: %s", gerr);
        break;
    }
    case LLM_OUTPUT_TOOLS: {
        size_t n = st->choice == LLM_TOOL_CHOICE_NAMED ? 1 : st->n_tools;
        struct grammar_tool *gt = calloc(n, sizeof *gt);
        if (!gt) return AIOS_ENOMEM;
        for (size_t i = 0; i < n; i++) {
            const struct llm_tool *t = &st->tools[st->choice == LLM_TOOL_CHOICE_NAMED ? st->forced : i];
            gt[i].name = t->wire;
            gt[i].params = t->params;
        }
        char gerr[300];
        rc = grammar_tool_calls(gt, n, st->max_calls, st->choice == LLM_TOOL_CHOICE_AUTO, o, &g,
                                gerr, sizeof gerr);
        free(gt);
        if (rc == AIOS_EINVAL) return bad(err, errlen, "tools: %s", gerr);
        break;
    }
    }
    if (rc) return rc;
    free(req->grammar);
    req->grammar = g;
    return 0;
}

/* ---- reading the answer ---- */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')) p++;
    return p;
}

static bool starts(const char *p, const char *end, const char *lit)
{
    size_t n = strlen(lit);
    return (size_t)(end - p) >= n && !memcmp(p, lit, n);
}

/* Parse "<tool_call> {json} </tool_call>" blocks from p to end (all of it,
 * whitespace between). 0 and *calls, or AIOS_EINVAL with a reason. */
static int parse_calls(const struct llm_structured *st, const char *p, const char *end,
                       json_t **calls, char *err, size_t errlen)
{
    json_t *arr = json_array();
    if (!arr) return AIOS_ENOMEM;
    int rc = 0;
    size_t k = 0;
    for (p = skip_ws(p, end); p < end; p = skip_ws(p, end), k++) {
        if (!starts(p, end, "<tool_call>")) {
            rc = bad(err, errlen, "text after tool call %zu", k);
            break;
        }
        p = skip_ws(p + strlen("<tool_call>"), end);
        json_error_t je;
        json_t *obj = json_loadb(p, (size_t)(end - p), JSON_DISABLE_EOF_CHECK, &je);
        if (!json_is_object(obj)) {
            json_decref(obj);
            rc = bad(err, errlen, "tool call %zu is not a JSON object (%s)", k, je.text);
            break;
        }
        p += je.position;
        p = skip_ws(p, end);
        if (!starts(p, end, "</tool_call>")) {
            json_decref(obj);
            rc = bad(err, errlen, "tool call %zu is not closed by </tool_call>", k);
            break;
        }
        p += strlen("</tool_call>");
        json_t *name = json_object_get(obj, "name"), *args = json_object_get(obj, "arguments");
        const struct llm_tool *tool = NULL;
        for (size_t i = 0; json_is_string(name) && i < st->n_tools; i++)
            if (!strcmp(st->tools[i].wire, json_string_value(name))) tool = &st->tools[i];
        if (!tool) {
            json_decref(obj);
            rc = bad(err, errlen, "tool call %zu names no offered tool", k);
            break;
        }
        json_t *a = NULL;
        if (json_is_string(args)) a = json_loads(json_string_value(args), 0, NULL);
        else if (json_is_object(args)) a = json_incref(args);
        else if (!args) a = json_object();
        if (!json_is_object(a)) {
            json_decref(a);
            json_decref(obj);
            rc = bad(err, errlen, "tool call %zu: arguments are not a JSON object", k);
            break;
        }
        char verr[300];
        if (tool->params && schema_validate(tool->params, a, verr, sizeof verr)) {
            json_decref(a);
            json_decref(obj);
            rc = bad(err, errlen, "tool call %zu (%s): arguments %s", k, tool->name, verr);
            break;
        }
        json_array_append_new(arr, json_pack("{s:s,s:o}", "name", tool->name, "arguments", a));
        json_decref(obj);
    }
    if (!rc && json_array_size(arr) == 0) rc = bad(err, errlen, "no tool call");
    if (rc) {
        json_decref(arr);
        return rc;
    }
    *calls = arr;
    return 0;
}

static const char *find_lit(const char *s, size_t n, const char *lit)
{
    size_t m = strlen(lit);
    for (size_t i = 0; i + m <= n; i++)
        if (!memcmp(s + i, lit, m)) return s + i;
    return NULL;
}

/* Check a finished JSON answer against response_format (json_object or
 * json_schema). true, with a message in err, when it does not fit; the
 * wording says whether an upstream model or our constrained decoding made it. */
static bool json_output_mismatch(const struct llm_structured *st, const char *text, size_t len,
                                 bool upstream, char *err, size_t errlen)
{
    json_error_t je;
    json_t *v = json_loadb(text, len, JSON_DECODE_ANY, &je);
    char verr[300] = "";
    int rc = 0;
    if (!v)
        rc = upstream ? bad(err, errlen, "the upstream model's answer to response_format is not JSON (%s)", je.text)
                      : bad(err, errlen, "the constrained output is not JSON (%s)", je.text);
    else if (st->kind == LLM_OUTPUT_JSON_OBJECT && !json_is_object(v))
        rc = upstream ? bad(err, errlen, "the upstream model's answer to response_format json_object is not a JSON object")
                      : bad(err, errlen, "the constrained output is not a JSON object");
    else if (st->kind == LLM_OUTPUT_JSON_SCHEMA && schema_validate(st->schema, v, verr, sizeof verr))
        rc = upstream ? bad(err, errlen, "the upstream model's answer does not match response_format's schema: %s", verr)
                      : bad(err, errlen, "the constrained output does not match the schema: %s", verr);
    json_decref(v);
    return rc != 0;
}

/* A remote core's answer: the upstream model was asked natively (tools,
 * response_format) and nothing constrained it, so what it returned is
 * checked here; a mismatch is the upstream's fault (AIOS_EIO -> 502). */
static int upstream_result(const struct llm_structured *st, const struct llm_res *res,
                           struct llm_structured_result *out, char *err, size_t errlen)
{
    bool finished = res->finish_reason && strcmp(res->finish_reason, "length") && !st->has_stop;
    const char *text = res->text ? res->text : "";
    if (st->kind == LLM_OUTPUT_JSON_OBJECT || st->kind == LLM_OUTPUT_JSON_SCHEMA) {
        if (!finished) return 0;
        return json_output_mismatch(st, text, res->len, true, err, errlen) ? AIOS_EIO : 0;
    }
    if (st->kind != LLM_OUTPUT_TOOLS) return 0;
    bool must_call = st->choice == LLM_TOOL_CHOICE_REQUIRED || st->choice == LLM_TOOL_CHOICE_NAMED;
    size_t n = json_array_size(res->tool_calls);
    if (n == 0) {
        if (must_call && finished) {
            bad(err, errlen, "the upstream model answered without a tool call although tool_choice "
                "requires one");
            return AIOS_EIO;
        }
        return 0;
    }
    json_t *arr = json_array();
    if (!arr) return AIOS_ENOMEM;
    for (size_t k = 0; k < n; k++) {
        json_t *c = json_array_get(res->tool_calls, k);
        const char *name = json_string_value(json_object_get(c, "name"));
        json_t *args = json_object_get(c, "arguments");
        const struct llm_tool *tool = NULL;
        for (size_t i = 0; name && i < st->n_tools; i++)
            if (!strcmp(st->tools[i].wire, name) || !strcmp(st->tools[i].name, name)) tool = &st->tools[i];
        if (!tool || (st->choice == LLM_TOOL_CHOICE_NAMED && tool != &st->tools[st->forced])) {
            json_decref(arr);
            bad(err, errlen, "the upstream model called tool '%s', which %s", name ? name : "(no name)",
                tool ? "tool_choice did not allow" : "is not in 'tools'");
            return AIOS_EIO;
        }
        json_t *a = NULL;
        json_error_t je = {.text = "not a string"};
        if (json_is_string(args)) {
            const char *as = json_string_value(args);
            a = *as ? json_loads(as, JSON_DECODE_ANY, &je) : json_object();
        } else if (json_is_object(args)) {
            a = json_incref(args);
        }
        char verr[300] = "";
        if (!json_is_object(a) || (tool->params && schema_validate(tool->params, a, verr, sizeof verr))) {
            bad(err, errlen, "the upstream model's call %zu of tool '%s' has arguments that %s%s", k,
                tool->name, json_is_object(a) ? "do not match its parameters schema: " :
                (a ? "are not a JSON object" : "are not JSON: "), json_is_object(a) ? verr : (a ? "" : je.text));
            json_decref(a);
            json_decref(arr);
            return AIOS_EIO;
        }
        json_t *id = json_object_get(c, "id");
        json_t *o = json_pack("{s:s,s:o}", "name", tool->name, "arguments", a);
        if (o && json_is_string(id) && json_string_length(id)) json_object_set(o, "id", id);
        if (!o || json_array_append_new(arr, o)) {
            json_decref(arr);
            return AIOS_ENOMEM;
        }
    }
    out->calls = arr;
    out->content_len = res->len;
    while (out->content_len > 0 && isspace((unsigned char)text[out->content_len - 1]))
        out->content_len--;
    out->finish = "tool_calls";
    return 0;
}

int llm_structured_result(const struct llm_structured *st, const struct llm_res *res,
                          struct llm_structured_result *out, char *err, size_t errlen)
{
    out->calls = NULL;
    out->content_len = res->len;
    out->finish = res->finish_reason;
    if (!st) return 0;
    if (res->upstream) return upstream_result(st, res, out, err, errlen);
    /* a stop string may end the text anywhere: then it is only text */
    bool finished = res->finish_reason && !strcmp(res->finish_reason, "stop") && !st->has_stop;
    const char *text = res->text ? res->text : "";
    if (st->kind == LLM_OUTPUT_JSON_OBJECT || st->kind == LLM_OUTPUT_JSON_SCHEMA) {
        if (!finished) return 0;
        return json_output_mismatch(st, text, res->len, false, err, errlen) ? AIOS_EENGINE : 0;
    }
    if (st->kind != LLM_OUTPUT_TOOLS) return 0;
    const char *first = find_lit(text, res->len, "<tool_call>");
    bool must_call = st->choice == LLM_TOOL_CHOICE_REQUIRED || st->choice == LLM_TOOL_CHOICE_NAMED;
    if (!first) {
        if (must_call && finished) {
            bad(err, errlen, "the constrained output holds no tool call");
            return AIOS_EENGINE;
        }
        return 0;
    }
    json_t *calls = NULL;
    char perr[400];
    int rc = parse_calls(st, first, text + res->len, &calls, perr, sizeof perr);
    if (rc == AIOS_ENOMEM) return rc;
    if (rc) {
        /* "auto" text that merely mentions the tag, or a cut-off output */
        if (must_call && finished) {
            bad(err, errlen, "the constrained tool call output does not parse: %s", perr);
            return AIOS_EENGINE;
        }
        return 0;
    }
    out->calls = calls;
    out->content_len = (size_t)(first - text);
    while (out->content_len > 0 && isspace((unsigned char)text[out->content_len - 1]))
        out->content_len--;
    out->finish = "tool_calls";
    return 0;
}
