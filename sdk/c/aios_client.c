/* libaios: C client for the AIOS /query protocol (see include/aios/client.h).
 *
 * Every call builds the Cerebrum request {agent_name, query_type,
 * query_data}, POSTs it with its own libcurl easy handle (kept in the
 * client and reused, so calls from one client reuse the connection), and
 * maps the answer: a non-200 status to an AIOS_CLIENT_E* code with the
 * kernel's error message; a 200 to the typed result from "response".
 * Memory answers with success:false and storage/tool answers with a
 * non-200 status_code or an error are AIOS_CLIENT_EFAILED.
 *
 * Threads: a client is used by one thread at a time. curl_global_init runs
 * once per process (pthread_once). Ownership: results are malloc'd and
 * freed with the matching *_free function. */
#include "aios/client.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct aios_client {
    char *base;
    char *agent;
    char *token;
    CURL *h;
    int timeout_s;
    long http_status;
    char err[1024];
    double last_wait, last_turnaround;
};

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static void global_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static int set_err(struct aios_client *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int set_err(struct aios_client *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return code;
}

const char *aios_strerror_client(int err)
{
    switch (err) {
    case AIOS_CLIENT_OK: return "ok";
    case AIOS_CLIENT_EINVAL: return "invalid argument";
    case AIOS_CLIENT_ENOMEM: return "out of memory";
    case AIOS_CLIENT_ECONNECT: return "cannot reach the kernel";
    case AIOS_CLIENT_EREQUEST: return "request refused";
    case AIOS_CLIENT_ENOTFOUND: return "not found";
    case AIOS_CLIENT_ENOTIMPL: return "not available in this kernel";
    case AIOS_CLIENT_ESERVER: return "kernel error";
    case AIOS_CLIENT_EPROTOCOL: return "unexpected answer";
    case AIOS_CLIENT_EFAILED: return "operation failed";
    }
    return "unknown error";
}

int aios_client_new(struct aios_client **out, const char *base_url, const char *agent_name)
{
    *out = NULL;
    pthread_once(&g_once, global_init);
    struct aios_client *c = calloc(1, sizeof *c);
    if (!c) return AIOS_CLIENT_ENOMEM;
    if (!base_url) base_url = getenv("AIOS_KERNEL_URL");
    if (!base_url || !*base_url) base_url = getenv("CEREBRUM_KERNEL_URL");
    if (!base_url || !*base_url) base_url = "http://127.0.0.1:8000";
    if (!agent_name) agent_name = getenv("AIOS_AGENT_NAME");
    if (!agent_name || !*agent_name) agent_name = "agent";
    const char *tok = getenv("AIOS_AGENT_TOKEN");
    if (!tok || !*tok) tok = getenv("AIOS_TOKEN"); /* the operator's token */
    c->base = strdup(base_url);
    c->agent = strdup(agent_name);
    c->token = tok && *tok ? strdup(tok) : NULL;
    c->h = curl_easy_init();
    c->timeout_s = 300;
    if (!c->base || !c->agent || !c->h) {
        aios_client_free(c);
        return AIOS_CLIENT_ENOMEM;
    }
    size_t l = strlen(c->base);
    while (l && c->base[l - 1] == '/') c->base[--l] = 0;
    *out = c;
    return 0;
}

void aios_client_free(struct aios_client *c)
{
    if (!c) return;
    if (c->h) curl_easy_cleanup(c->h);
    free(c->base);
    free(c->agent);
    free(c->token);
    free(c);
}

const char *aios_client_error(const struct aios_client *c) { return c ? c->err : "no client"; }
long aios_client_http_status(const struct aios_client *c) { return c ? c->http_status : 0; }
const char *aios_client_agent(const struct aios_client *c) { return c ? c->agent : NULL; }
void aios_client_set_timeout(struct aios_client *c, int s) { c->timeout_s = s > 0 ? s : 300; }

struct buf {
    char *p;
    size_t n, cap;
};

static size_t on_data(char *p, size_t sz, size_t nm, void *ud)
{
    struct buf *b = ud;
    size_t len = sz * nm;
    if (b->n + len + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 4096;
        while (c < b->n + len + 1) c *= 2;
        char *q = realloc(b->p, c);
        if (!q) return 0;
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->n, p, len);
    b->n += len;
    b->p[b->n] = 0;
    return len;
}

/* POST /query; *response = new reference to the "response" object */
static int do_query(struct aios_client *c, const char *type, json_t *qd, json_t **response)
{
    *response = NULL;
    c->err[0] = 0;
    c->http_status = 0;
    if (!qd) return set_err(c, AIOS_CLIENT_ENOMEM, "out of memory (or text that is not UTF-8)");
    json_t *body = json_pack("{s:s,s:s,s:o}", "agent_name", c->agent, "query_type", type,
                             "query_data", qd);
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!s) return set_err(c, AIOS_CLIENT_ENOMEM, "cannot encode the request");
    char url[2048], tokh[128];
    snprintf(url, sizeof url, "%s/query", c->base);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "Expect:");
    if (c->token) {
        snprintf(tokh, sizeof tokh, "X-Aios-Agent-Token: %.64s", c->token);
        hdrs = curl_slist_append(hdrs, tokh);
    }
    struct buf b = {0};
    curl_easy_reset(c->h);
    curl_easy_setopt(c->h, CURLOPT_URL, url);
    curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c->h, CURLOPT_POSTFIELDS, s);
    curl_easy_setopt(c->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(s));
    curl_easy_setopt(c->h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c->h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c->h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->h, CURLOPT_TIMEOUT, (long)c->timeout_s);
    CURLcode cc = curl_easy_perform(c->h);
    curl_slist_free_all(hdrs);
    free(s);
    int rc = 0;
    json_t *j = NULL;
    if (cc != CURLE_OK) {
        rc = set_err(c, AIOS_CLIENT_ECONNECT, "cannot reach the kernel at %s: %s", c->base,
                     curl_easy_strerror(cc));
        goto out;
    }
    curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &c->http_status);
    j = b.p ? json_loadb(b.p, b.n, 0, NULL) : NULL;
    if (c->http_status != 200) {
        const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
        if (!m) m = json_string_value(json_object_get(j, "detail"));
        long st = c->http_status;
        rc = st == 404 ? AIOS_CLIENT_ENOTFOUND : st == 501 ? AIOS_CLIENT_ENOTIMPL
             : st >= 500 ? AIOS_CLIENT_ESERVER : AIOS_CLIENT_EREQUEST;
        set_err(c, rc, "HTTP %ld: %s", st, m ? m : "(no message)");
        goto out;
    }
    json_t *resp = json_object_get(j, "response");
    if (!json_is_object(resp)) {
        rc = set_err(c, AIOS_CLIENT_EPROTOCOL, "the answer has no \"response\" object");
        goto out;
    }
    /* the kernel answers 200 with "finished": false when every call of a
     * tool query or LLM action failed (as the reference kernel does); this
     * client reports it like the error it stands for */
    json_int_t fst = json_integer_value(json_object_get(resp, "status_code"));
    if (json_is_false(json_object_get(resp, "finished")) && fst >= 400) {
        const char *m = json_string_value(json_object_get(resp, "error"));
        rc = fst == 404 ? AIOS_CLIENT_ENOTFOUND : fst == 501 ? AIOS_CLIENT_ENOTIMPL
             : fst >= 500 ? AIOS_CLIENT_ESERVER : AIOS_CLIENT_EREQUEST;
        set_err(c, rc, "HTTP 200, not finished (%lld): %s", (long long)fst, m ? m : "(no message)");
        goto out;
    }
    c->last_wait = json_number_value(json_array_get(json_object_get(j, "waiting_times"), 0));
    c->last_turnaround = json_number_value(json_array_get(json_object_get(j, "turnaround_times"), 0));
    *response = json_incref(resp);
out:
    json_decref(j);
    free(b.p);
    return rc;
}

int aios_query(struct aios_client *c, const char *query_type, const char *query_data_json,
               char **response_json)
{
    *response_json = NULL;
    json_error_t je;
    json_t *qd = json_loads(query_data_json ? query_data_json : "{}", 0, &je);
    if (!json_is_object(qd)) {
        json_decref(qd);
        return set_err(c, AIOS_CLIENT_EINVAL, "query_data must be a JSON object");
    }
    json_t *resp;
    int rc = do_query(c, query_type, qd, &resp);
    if (rc) return rc;
    *response_json = json_dumps(resp, JSON_COMPACT);
    json_decref(resp);
    return *response_json ? 0 : AIOS_CLIENT_ENOMEM;
}

/* ---- LLM ---- */

static json_t *llm_qd(const struct aios_message *msgs, size_t n, const char *action,
                      const struct aios_llm_opts *o)
{
    json_t *m = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_pack("{s:s,s:s}", "role", msgs[i].role ? msgs[i].role : "user", "content",
                              msgs[i].content ? msgs[i].content : "");
        if (!e) {
            json_decref(m);
            return NULL;
        }
        json_array_append_new(m, e);
    }
    json_t *qd = json_pack("{s:s,s:o,s:s,s:s}", "query_class", "llm", "messages", m, "action_type",
                           action, "message_return_type", "text");
    if (!qd) return NULL;
    if (o && o->model)
        json_object_set_new(qd, "llms", json_pack("[{s:s}]", "name", o->model));
    else json_object_set_new(qd, "llms", json_null());
    if (o && o->max_new_tokens > 0)
        json_object_set_new(qd, "max_new_tokens", json_integer(o->max_new_tokens));
    if (o && o->temperature >= 0) json_object_set_new(qd, "temperature", json_real(o->temperature));
    if (o && o->has_seed) json_object_set_new(qd, "seed", json_integer(o->seed));
    return qd;
}

static char *dup_or_empty(const char *s) { return strdup(s ? s : ""); }

static int llm_fill(struct aios_client *c, json_t *resp, struct aios_llm_result *out)
{
    json_t *msg = json_object_get(resp, "response_message");
    out->text = json_is_string(msg) ? strdup(json_string_value(msg))
                : json_is_null(msg) || !msg ? strdup("")
                                            : json_dumps(msg, JSON_COMPACT | JSON_ENCODE_ANY);
    json_t *tc = json_object_get(resp, "tool_calls"), *t;
    size_t i;
    if (json_is_array(tc) && json_array_size(tc)) {
        out->tool_calls = calloc(json_array_size(tc), sizeof *out->tool_calls);
        if (!out->tool_calls) return set_err(c, AIOS_CLIENT_ENOMEM, "out of memory");
        json_array_foreach(tc, i, t)
        {
            struct aios_tool_call *d = &out->tool_calls[out->n_tool_calls++];
            json_t *p = json_object_get(t, "parameters");
            if (!p) p = json_object_get(t, "arguments");
            d->id = dup_or_empty(json_string_value(json_object_get(t, "id")));
            d->name = dup_or_empty(json_string_value(json_object_get(t, "name")));
            d->parameters_json = json_is_string(p) ? strdup(json_string_value(p))
                                 : p ? json_dumps(p, JSON_COMPACT)
                                     : strdup("{}");
        }
    }
    json_t *u = json_object_get(resp, "usage");
    out->prompt_tokens = (int)json_integer_value(json_object_get(u, "prompt_tokens"));
    out->completion_tokens = (int)json_integer_value(json_object_get(u, "completion_tokens"));
    out->waiting_s = c->last_wait;
    out->turnaround_s = c->last_turnaround;
    json_t *e = json_object_get(resp, "error");
    if (e && !json_is_null(e)) {
        const char *m = json_string_value(e);
        return set_err(c, AIOS_CLIENT_EFAILED, "the LLM call failed: %s", m ? m : "(error)");
    }
    return out->text ? 0 : set_err(c, AIOS_CLIENT_ENOMEM, "out of memory");
}

static int llm_call(struct aios_client *c, json_t *qd, struct aios_llm_result *out)
{
    json_t *resp;
    int rc = do_query(c, "llm", qd, &resp);
    if (rc) return rc;
    rc = llm_fill(c, resp, out);
    json_decref(resp);
    return rc;
}

int aios_llm_chat(struct aios_client *c, const struct aios_message *msgs, size_t n_msgs,
                  const struct aios_llm_opts *opts, struct aios_llm_result *out)
{
    memset(out, 0, sizeof *out);
    if (!msgs || !n_msgs) return set_err(c, AIOS_CLIENT_EINVAL, "at least one message is needed");
    return llm_call(c, llm_qd(msgs, n_msgs, "chat", opts), out);
}

static int llm_tools(struct aios_client *c, const struct aios_message *msgs, size_t n_msgs,
                     const char *tools_json, const char *action, const struct aios_llm_opts *opts,
                     struct aios_llm_result *out)
{
    memset(out, 0, sizeof *out);
    if (!msgs || !n_msgs) return set_err(c, AIOS_CLIENT_EINVAL, "at least one message is needed");
    json_t *tools = tools_json ? json_loads(tools_json, 0, NULL) : NULL;
    if (!json_is_array(tools)) {
        json_decref(tools);
        return set_err(c, AIOS_CLIENT_EINVAL, "tools_json must be a JSON array of tools");
    }
    json_t *qd = llm_qd(msgs, n_msgs, action, opts);
    if (qd) json_object_set(qd, "tools", tools);
    json_decref(tools);
    return llm_call(c, qd, out);
}

/* Cerebrum's llm_call_tool: action call_tool, the kernel runs the calls */
int aios_llm_call_tool(struct aios_client *c, const struct aios_message *msgs, size_t n_msgs,
                       const char *tools_json, const struct aios_llm_opts *opts,
                       struct aios_llm_result *out)
{
    return llm_tools(c, msgs, n_msgs, tools_json, "call_tool", opts, out);
}

int aios_llm_chat_with_tool_call_output(struct aios_client *c, const struct aios_message *msgs,
                                        size_t n_msgs, const char *tools_json,
                                        const struct aios_llm_opts *opts,
                                        struct aios_llm_result *out)
{
    return llm_tools(c, msgs, n_msgs, tools_json, "chat_with_tool_call_output", opts, out);
}

int aios_llm_chat_json(struct aios_client *c, const struct aios_message *msgs, size_t n_msgs,
                       const char *response_format_json, const struct aios_llm_opts *opts,
                       struct aios_llm_result *out)
{
    memset(out, 0, sizeof *out);
    json_t *rf = response_format_json ? json_loads(response_format_json, 0, NULL) : NULL;
    if (!json_is_object(rf)) {
        json_decref(rf);
        return set_err(c, AIOS_CLIENT_EINVAL, "response_format_json must be a JSON object");
    }
    json_t *qd = llm_qd(msgs, n_msgs, "chat_with_json_output", opts);
    if (qd) {
        json_object_set(qd, "response_format", rf);
        json_object_set_new(qd, "message_return_type", json_string("json"));
    }
    json_decref(rf);
    return llm_call(c, qd, out);
}

void aios_llm_result_free(struct aios_llm_result *r)
{
    if (!r) return;
    free(r->text);
    for (size_t i = 0; i < r->n_tool_calls; i++) {
        free(r->tool_calls[i].id);
        free(r->tool_calls[i].name);
        free(r->tool_calls[i].parameters_json);
    }
    free(r->tool_calls);
    memset(r, 0, sizeof *r);
}

/* ---- memory ---- */

static json_t *meta_or_null(const char *metadata_json)
{
    if (!metadata_json) return json_object();
    json_t *m = json_loads(metadata_json, 0, NULL);
    return json_is_object(m) ? m : (json_decref(m), NULL);
}

static int mem_call(struct aios_client *c, const char *op, json_t *params, json_t **resp)
{
    *resp = NULL;
    if (!params) return set_err(c, AIOS_CLIENT_EINVAL, "bad argument (metadata must be a JSON object)");
    json_t *qd = json_pack("{s:s,s:s,s:o}", "query_class", "memory", "operation_type", op, "params",
                           params);
    int rc = do_query(c, "memory", qd, resp);
    if (rc) return rc;
    json_t *ok = json_object_get(*resp, "success");
    if (json_is_false(ok)) {
        const char *e = json_string_value(json_object_get(*resp, "error"));
        rc = set_err(c, AIOS_CLIENT_EFAILED, "%s failed: %s", op, e ? e : "(no message)");
        json_decref(*resp);
        *resp = NULL;
    }
    return rc;
}

int aios_memory_add(struct aios_client *c, const char *content, const char *metadata_json,
                    char **memory_id)
{
    if (memory_id) *memory_id = NULL;
    json_t *m = meta_or_null(metadata_json);
    json_t *p = m && content ? json_pack("{s:s,s:o}", "content", content, "metadata", m) : (json_decref(m), NULL);
    json_t *r;
    int rc = mem_call(c, "add_memory", p, &r);
    if (rc) return rc;
    if (memory_id) *memory_id = dup_or_empty(json_string_value(json_object_get(r, "memory_id")));
    json_decref(r);
    return 0;
}

static void note_fill(struct aios_memory_note *n, json_t *o)
{
    n->memory_id = dup_or_empty(json_string_value(json_object_get(o, "memory_id")));
    n->content = dup_or_empty(json_string_value(json_object_get(o, "content")));
    json_t *m = json_object_get(o, "metadata");
    n->metadata_json = m && !json_is_null(m) ? json_dumps(m, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    n->score = json_number_value(json_object_get(o, "score"));
}

int aios_memory_get(struct aios_client *c, const char *memory_id, struct aios_memory_note *out)
{
    memset(out, 0, sizeof *out);
    json_t *r;
    int rc = mem_call(c, "get_memory", memory_id ? json_pack("{s:s}", "memory_id", memory_id) : NULL, &r);
    if (rc) return rc;
    note_fill(out, r);
    json_decref(r);
    return 0;
}

int aios_memory_update(struct aios_client *c, const char *memory_id, const char *content,
                       const char *metadata_json)
{
    json_t *m = meta_or_null(metadata_json);
    json_t *p = m && memory_id && content
                    ? json_pack("{s:s,s:s,s:o}", "memory_id", memory_id, "content", content, "metadata", m)
                    : (json_decref(m), NULL);
    json_t *r;
    int rc = mem_call(c, "update_memory", p, &r);
    json_decref(r);
    return rc;
}

int aios_memory_remove(struct aios_client *c, const char *memory_id)
{
    json_t *r;
    int rc = mem_call(c, "remove_memory", memory_id ? json_pack("{s:s}", "memory_id", memory_id) : NULL, &r);
    json_decref(r);
    return rc;
}

int aios_memory_search(struct aios_client *c, const char *query, int k,
                       struct aios_memory_note **notes, size_t *n_notes)
{
    *notes = NULL;
    *n_notes = 0;
    json_t *r;
    int rc = mem_call(c, "retrieve_memory",
                      query ? json_pack("{s:s,s:i}", "content", query, "k", k > 0 ? k : 5) : NULL,
                      &r);
    if (rc) return rc;
    json_t *list = json_object_get(r, "search_results"), *e;
    size_t i;
    if (json_array_size(list)) {
        *notes = calloc(json_array_size(list), sizeof **notes);
        if (!*notes) {
            json_decref(r);
            return set_err(c, AIOS_CLIENT_ENOMEM, "out of memory");
        }
        json_array_foreach(list, i, e) note_fill(&(*notes)[(*n_notes)++], e);
    }
    json_decref(r);
    return 0;
}

void aios_memory_note_free(struct aios_memory_note *n)
{
    if (!n) return;
    free(n->memory_id);
    free(n->content);
    free(n->metadata_json);
    memset(n, 0, sizeof *n);
}

void aios_memory_notes_free(struct aios_memory_note *notes, size_t n)
{
    for (size_t i = 0; i < n; i++) aios_memory_note_free(&notes[i]);
    free(notes);
}

/* ---- storage and tools: answers with response_message ---- */

static int msg_call(struct aios_client *c, const char *type, json_t *qd, char **message)
{
    if (message) *message = NULL;
    json_t *r;
    int rc = do_query(c, type, qd, &r);
    if (rc) return rc;
    json_t *m = json_object_get(r, "response_message");
    if (message)
        *message = json_is_string(m) ? strdup(json_string_value(m))
                   : m && !json_is_null(m) ? json_dumps(m, JSON_COMPACT | JSON_ENCODE_ANY)
                                           : NULL;
    json_t *sc = json_object_get(r, "status_code"), *e = json_object_get(r, "error");
    if ((json_is_integer(sc) && json_integer_value(sc) != 200) || (e && !json_is_null(e))) {
        const char *em = json_string_value(e);
        rc = set_err(c, AIOS_CLIENT_EFAILED, "%s call failed (status_code %lld): %s", type,
                     (long long)json_integer_value(sc), em ? em : "(no message)");
    }
    json_decref(r);
    return rc;
}

static int sto(struct aios_client *c, const char *op, json_t *params, char **message)
{
    if (message) *message = NULL;
    if (!params) return set_err(c, AIOS_CLIENT_EINVAL, "missing argument for storage %s", op);
    json_t *qd = json_pack("{s:s,s:s,s:o}", "query_class", "storage", "operation_type", op,
                           "params", params);
    return msg_call(c, "storage", qd, message);
}

int aios_storage_mount(struct aios_client *c, const char *root, char **message)
{
    return sto(c, "mount", root ? json_pack("{s:s}", "root", root) : NULL, message);
}

int aios_storage_create_file(struct aios_client *c, const char *path, char **message)
{
    return sto(c, "create_file", path ? json_pack("{s:s}", "file_path", path) : NULL, message);
}

int aios_storage_create_dir(struct aios_client *c, const char *path, char **message)
{
    return sto(c, "create_dir", path ? json_pack("{s:s}", "dir_path", path) : NULL, message);
}

int aios_storage_write(struct aios_client *c, const char *path, const char *content, char **message)
{
    return sto(c, "write",
               path && content ? json_pack("{s:s,s:s}", "file_path", path, "content", content) : NULL,
               message);
}

int aios_storage_retrieve(struct aios_client *c, const char *query, int k, char **message)
{
    int kk = k > 0 ? k : 3;
    return sto(c, "retrieve",
               query ? json_pack("{s:s,s:i}", "query_text", query, "k", kk) : NULL, message);
}

int aios_storage_rollback(struct aios_client *c, const char *path, int n, char **message)
{
    return sto(c, "rollback", path ? json_pack("{s:s,s:i}", "file_path", path, "n", n > 0 ? n : 1) : NULL,
               message);
}

int aios_storage_share(struct aios_client *c, const char *path, const char *with_agent,
                       char **message)
{
    json_t *p = path ? json_pack("{s:s}", "file_path", path) : NULL;
    if (p && with_agent) json_object_set_new(p, "agent", json_string(with_agent));
    return sto(c, "share", p, message);
}

int aios_tool_call(struct aios_client *c, const char *name, const char *parameters_json,
                   char **result)
{
    if (result) *result = NULL;
    json_t *p = json_loads(parameters_json ? parameters_json : "{}", 0, NULL);
    if (!name || !json_is_object(p)) {
        json_decref(p);
        return set_err(c, AIOS_CLIENT_EINVAL, "a tool name and a JSON object of parameters are needed");
    }
    json_t *qd = json_pack("{s:s,s:[{s:s,s:o}]}", "query_class", "tool", "tool_calls", "name", name,
                           "parameters", p);
    return msg_call(c, "tool", qd, result);
}
