/* POST /v1/embeddings: OpenAI's embeddings API on the configured embedding
 * model (embedding.model; src/llm/embed.c, embed_core.c).
 *
 * The body is parsed and every input tokenized on the HTTP thread by
 * api_embeddings_parse, a pure function of the body and the model's
 * description (tests/fuzz/fuzz_embeddings.c runs it): `input`
 * as a string, a list of strings, a list of token ids or a list of lists
 * of token ids (what LangChain's OpenAIEmbeddings sends by default), at
 * most API_EMB_MAX_INPUTS inputs, each non-empty and at most the model's
 * embedding.n_ctx tokens (a longer one is a 400, as with OpenAI: nothing
 * is cut silently). `encoding_format` "float" (default) or "base64" (the
 * little-endian float32 bytes), `dimensions` only when it equals the
 * model's width, `user` names the agent like on chat completions. Every
 * other field is a 400 naming it. The call is then one LLM syscall for the
 * embedding core: the access manager checks the model against the agent's
 * group and its token budget, the scheduler queues and accounts it (prompt
 * tokens), and the answer is OpenAI's list of {"object": "embedding",
 * "index", "embedding"} with usage {prompt_tokens, total_tokens}. */
#include "api/api.h"

#include "llm/core.h"
#include "llm/embed.h"
#include "util/err.h"
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct emb_state {
    bool base64;
    char *model;
};

static void emb_state_free(void *p)
{
    struct emb_state *st = p;
    if (!st) return;
    free(st->model);
    free(st);
}

#define BAD(...)                                         \
    do {                                                 \
        snprintf(err, errlen, __VA_ARGS__);              \
        return AIOS_EINVAL;                              \
    } while (0)

/* append n tokens to req->tokens (growing *cap) as input number req->n_emb */
static int add_input(struct llm_req *req, int *cap, const int32_t *t, int n)
{
    if (req->n_tokens + n > *cap) {
        int c = *cap ? *cap : 256;
        while (c < req->n_tokens + n) c *= 2;
        int32_t *p = realloc(req->tokens, sizeof *p * (size_t)c);
        if (!p) return AIOS_ENOMEM;
        req->tokens = p;
        *cap = c;
    }
    memcpy(req->tokens + req->n_tokens, t, sizeof *t * (size_t)n);
    req->n_tokens += n;
    req->emb_lens[req->n_emb++] = n;
    return 0;
}

static int input_tokens(const struct api_emb_model *m, json_t *v, const char *where,
                        struct llm_req *req, int *cap, char *err, size_t errlen)
{
    int32_t *t = NULL;
    int n = 0, rc;
    if (json_is_string(v)) {
        if (json_string_length(v) == 0) BAD("%s must not be an empty string", where);
        rc = m->tokenize(m->ud, json_string_value(v), json_string_length(v), &t, &n);
        if (rc == AIOS_ENOMEM) return rc;
        if (rc || n < 0) {
            free(t);
            BAD("%s could not be tokenized", where);
        }
    } else if (json_is_array(v)) {
        size_t len = json_array_size(v);
        if (len == 0) BAD("%s must not be an empty list of tokens", where);
        if (len > (size_t)m->n_ctx)
            BAD("%s has %zu tokens; model '%s' takes at most %d per input (embedding.n_ctx)",
                where, len, m->name, m->n_ctx);
        t = malloc(sizeof *t * len);
        if (!t) return AIOS_ENOMEM;
        for (size_t i = 0; i < len; i++) {
            json_t *x = json_array_get(v, i);
            if (!json_is_integer(x) || json_integer_value(x) < 0 ||
                json_integer_value(x) >= m->n_vocab) {
                free(t);
                BAD("%s[%zu] must be a token id from 0 to %d", where, i, m->n_vocab - 1);
            }
            t[i] = (int32_t)json_integer_value(x);
        }
        n = (int)len;
    } else {
        BAD("%s must be a string or a list of token ids", where);
    }
    if (n == 0 || n > m->n_ctx) {
        free(t);
        if (n == 0) BAD("%s has no tokens", where);
        BAD("%s has %d tokens; model '%s' takes at most %d per input (embedding.n_ctx)", where, n,
            m->name, m->n_ctx);
    }
    rc = add_input(req, cap, t, n);
    free(t);
    return rc;
}

int api_embeddings_parse(json_t *body, const struct api_emb_model *m, struct llm_req *req,
                         bool *base64, char *err, size_t errlen)
{
    const char *key;
    json_t *v;
    *base64 = false;
    if (!json_is_object(body)) BAD("the body must be a JSON object");
    json_object_foreach(body, key, v) {
        if (strcmp(key, "model") && strcmp(key, "input") && strcmp(key, "encoding_format") &&
            strcmp(key, "dimensions") && strcmp(key, "user") && strcmp(key, "priority") &&
            !json_is_null(v))
            BAD("'%s' is not supported by this server (POST /v1/embeddings takes model, input, "
                "encoding_format, dimensions and user)", key);
    }
    v = json_object_get(body, "model");
    if (!v) BAD("missing required field 'model'");
    if (!json_is_string(v)) BAD("'model' must be a string");
    if (!m || strcmp(json_string_value(v), m->name)) {
        if (m)
            snprintf(err, errlen, "model '%s' is not an embedding model here; the embedding "
                     "model is '%s'", json_string_value(v), m->name);
        else
            snprintf(err, errlen, "model '%s': this kernel has no embedding model (configure "
                     "embedding.model)", json_string_value(v));
        return AIOS_ENOTFOUND;
    }
    free(req->model);
    if (!(req->model = strdup(m->name))) return AIOS_ENOMEM;

    v = json_object_get(body, "encoding_format");
    if (v && !json_is_null(v)) {
        const char *f = json_string_value(v);
        if (!f || (strcmp(f, "float") && strcmp(f, "base64")))
            BAD("'encoding_format' must be \"float\" or \"base64\"");
        *base64 = !strcmp(f, "base64");
    }
    v = json_object_get(body, "dimensions");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v)) BAD("'dimensions' must be an integer");
        if (json_integer_value(v) != m->dim)
            BAD("'dimensions': model '%s' makes vectors of %d dimensions and cannot shorten them",
                m->name, m->dim);
    }
    v = json_object_get(body, "user");
    if (v && !json_is_null(v) && !json_is_string(v)) BAD("'user' must be a string");

    json_t *in = json_object_get(body, "input");
    if (!in || json_is_null(in)) BAD("missing required field 'input'");
    /* one input (a string or a list of ids), or a list of them */
    bool many = json_is_array(in) && json_array_size(in) > 0 &&
                (json_is_string(json_array_get(in, 0)) || json_is_array(json_array_get(in, 0)));
    size_t n_in = many ? json_array_size(in) : 1;
    if (json_is_array(in) && json_array_size(in) == 0) BAD("'input' must not be an empty list");
    if (n_in > API_EMB_MAX_INPUTS) BAD("'input' may hold at most %d inputs", API_EMB_MAX_INPUTS);
    free(req->emb_lens);
    free(req->tokens);
    req->tokens = NULL;
    req->n_tokens = req->n_emb = 0;
    req->emb_lens = calloc(n_in, sizeof *req->emb_lens);
    if (!req->emb_lens) return AIOS_ENOMEM;
    int cap = 0, rc;
    if (!many) return input_tokens(m, in, "'input'", req, &cap, err, errlen);
    for (size_t i = 0; i < n_in; i++) {
        char where[48];
        snprintf(where, sizeof where, "'input'[%zu]", i);
        json_t *x = json_array_get(in, i);
        if (!json_is_string(x) && !json_is_array(x))
            BAD("'input'[%zu] must be a string or a list of token ids (all inputs of one kind)", i);
        if ((rc = input_tokens(m, x, where, req, &cap, err, errlen))) return rc;
    }
    return 0;
}

static char *b64(const unsigned char *p, size_t n)
{
    static const char tb[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o = malloc(4 * ((n + 2) / 3) + 1), *q = o;
    if (!o) return NULL;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        *q++ = tb[v >> 18 & 63];
        *q++ = tb[v >> 12 & 63];
        *q++ = i + 1 < n ? tb[v >> 6 & 63] : '=';
        *q++ = i + 2 < n ? tb[v & 63] : '=';
    }
    *q = 0;
    return o;
}

static enum MHD_Result emb_finish(struct api_req *r)
{
    struct emb_state *st = r->state;
    struct syscall *sc = r->sc;
    pthread_mutex_lock(&sc->mu);
    enum syscall_status status = sc->status;
    pthread_mutex_unlock(&sc->mu);
    if (status != SYSCALL_STATUS_DONE) {
        const char *type;
        unsigned code = api_status_for(sc->err, &type);
        if (sc->http_status) code = (unsigned)sc->http_status;
        return api_send_error(r, code, type, "%s", sc->errmsg);
    }
    const struct llm_req *req = sc->req;
    const struct llm_res *res = sc->res;
    json_t *data = json_array();
    for (int i = 0; data && i < req->n_emb; i++) {
        const float *vec = res->emb + (size_t)i * (size_t)res->emb_dim;
        json_t *ev;
        if (st->base64) {
            /* little-endian float32, as OpenAI sends them */
            unsigned char *raw = malloc(4 * (size_t)res->emb_dim);
            char *s = NULL;
            if (raw) {
                for (int d = 0; d < res->emb_dim; d++) {
                    uint32_t u;
                    memcpy(&u, &vec[d], 4);
                    for (int b = 0; b < 4; b++) raw[4 * d + b] = (unsigned char)(u >> (8 * b));
                }
                s = b64(raw, 4 * (size_t)res->emb_dim);
            }
            free(raw);
            ev = s ? json_string(s) : NULL;
            free(s);
        } else {
            ev = json_array();
            for (int d = 0; ev && d < res->emb_dim; d++)
                json_array_append_new(ev, json_real((double)vec[d]));
        }
        if (!ev) {
            json_decref(data);
            return api_send_error(r, 500, "server_error", "out of memory");
        }
        json_array_append_new(data, json_pack("{s:s,s:i,s:o}", "object", "embedding", "index", i,
                                              "embedding", ev));
    }
    json_t *body = json_pack("{s:s,s:o,s:s,s:{s:i,s:i}}", "object", "list", "data", data,
                             "model", st->model, "usage", "prompt_tokens", req->n_tokens,
                             "total_tokens", req->n_tokens);
    return api_send_json(r, 200, body);
}

static int tokenize_cb(const void *ud, const char *text, size_t len, int32_t **out, int *n)
{
    return emb_tokenize(ud, text, len, out, n);
}

enum MHD_Result api_openai_embeddings(struct api_req *r)
{
    char err[512] = "";
    enum MHD_Result sent;
    json_t *body = api_parse_body(r, &sent);
    if (!body) return sent;
    struct llm_req *req = calloc(1, sizeof *req);
    struct emb_state *st = calloc(1, sizeof *st);
    int rc = AIOS_ENOMEM;
    if (req && st) {
        struct emb *e = r->k->embed;
        struct api_emb_model m = {0};
        if (e)
            m = (struct api_emb_model){emb_name(e), emb_dim(e), emb_n_ctx(e), emb_n_vocab(e),
                                       tokenize_cb, e};
        rc = api_embeddings_parse(body, e ? &m : NULL, req, &st->base64, err, sizeof err);
        if (!rc && !(st->model = strdup(req->model))) rc = AIOS_ENOMEM;
    }
    const char *agent = NULL;
    int prio = 0;
    bool prio_set = false;
    if (!rc) {
        json_t *u = json_object_get(body, "user");
        if (json_is_string(u)) agent = json_string_value(u);
        const char *hdr = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Aios-Agent");
        if (hdr && *hdr) agent = hdr;
        rc = api_parse_priority(r, body, &prio, &prio_set, err, sizeof err);
    }
    if (rc) {
        json_decref(body);
        llm_req_free(req);
        emb_state_free(st);
        if (rc == AIOS_ENOMEM) return api_send_error(r, 500, "server_error", "out of memory");
        if (rc == AIOS_ENOTFOUND) return api_send_error(r, 404, "not_found_error", "%s", err);
        return api_send_error(r, 400, "invalid_request_error", "%s", err);
    }
    /* the token budget reserves prompt + max_tokens: nothing is generated */
    req->p.max_tokens = 1;
    struct syscall *sc = syscall_new(SYSCALL_KIND_LLM, agent, r->k->embed_core, req, llm_req_free);
    json_decref(body);
    if (!sc) {
        emb_state_free(st);
        return api_send_error(r, 500, "server_error", "out of memory");
    }
    if (prio_set) syscall_set_priority(sc, prio);
    r->state = st;
    r->state_free = emb_state_free;
    return api_submit_and_wait(r, sc, emb_finish);
}
