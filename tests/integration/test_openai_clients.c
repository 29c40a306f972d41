/* Integration: what real OpenAI clients send, on a real kernel over real
 * HTTP (the built-in random chat model "aios-tiny" and the `embed` test
 * model as embedding.model, both run by llama.cpp in the kernel):
 *  - the exact bodies of the official Python / Node SDKs and LangChain's
 *    ChatOpenAI (defaults such as n: 1, temperature, stream_options) are
 *    answered; fields aios does not do are a 400 naming the field, the
 *    documented bookkeeping ones are accepted;
 *  - GET /v1/models/{id} in OpenAI's shape, 404 JSON for unknown ids;
 *  - logprobs / top_logprobs: one entry per generated token, whose bytes
 *    make up the content exactly, alternatives best first, the chosen one
 *    the best under greedy; under a JSON grammar every alternative of the
 *    first position can start a JSON object (probabilities after the
 *    grammar); with a penalty the second position's numbers move as the
 *    penalty says (after the penalties); streamed chunks carry the
 *    entries of their own text, the same as the whole answer's;
 *  - POST /v1/embeddings with a string, a list of strings, token-id lists
 *    (LangChain's OpenAIEmbeddings body, base64 as the Python SDK asks),
 *    float and base64 the same vectors, dimensions, usage; the agent's
 *    privilege group binds the embedding model like a chat model, and the
 *    call is accounted to the agent;
 *  - x-request-id: made per request, a sane client one echoed, and found in
 *    the audit rows and the kernel's log lines of that call. */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


static int group_setup(void **state)
{
    (void)state;
    char *model = kf_embed_model(), *yaml = NULL;
    assert_true(asprintf(&yaml,
                         "embedding:\n  model: %s\n  n_ctx: 64\n  name: test-embed\n"
                         "  n_batch: 1024\n  n_seq: 32\n"
                         "access:\n  groups:\n    chatonly: {models: [aios-tiny], tools: []}\n"
                         "  agents: {nora: chatonly}\n",
                         model) > 0);
    /* debug: the kernel's per-request log lines (request ids) */
    setenv("AIOS_LOG", "debug", 1);
    g_kf = kf_start_config(yaml);
    unsetenv("AIOS_LOG");
    free(yaml);
    free(model);
    return 0;
}

static long post(const char *path, const char *body, json_t **out)
{
    return kf_call(g_kf, "POST", path, body, out);
}

/* ---- chat: real client bodies, unknown fields ---- */

static void test_client_bodies(void **state)
{
    (void)state;
    /* openai-python / openai-node: client.chat.completions.create(model=,
     * messages=) sends only what was given */
    static const char *ok[] = {
        "{\"messages\":[{\"role\":\"user\",\"content\":\"Say hi\"}],\"model\":\"aios-tiny\","
        "\"max_tokens\":4}",
        /* LangChain ChatOpenAI.invoke (langchain-openai): model, stream,
         * n, temperature, and max_tokens when set */
        "{\"messages\":[{\"content\":\"Say hi\",\"role\":\"user\"}],\"model\":\"aios-tiny\","
        "\"stream\":false,\"n\":1,\"temperature\":0.7,\"max_tokens\":4}",
        /* ... with the bookkeeping fields OpenAI documents as optional */
        "{\"messages\":[{\"role\":\"developer\",\"content\":\"Be brief\"},{\"role\":\"user\","
        "\"content\":[{\"type\":\"text\",\"text\":\"Say hi\"}]}],\"model\":\"aios-tiny\","
        "\"max_completion_tokens\":4,\"user\":\"oai-user\",\"metadata\":{\"run\":\"7\"},"
        "\"store\":false,\"service_tier\":\"auto\",\"parallel_tool_calls\":true,"
        "\"prompt_cache_key\":\"k1\",\"safety_identifier\":\"u-1\",\"modalities\":[\"text\"],"
        "\"presence_penalty\":0,\"frequency_penalty\":0,\"logit_bias\":{},\"logprobs\":false,"
        "\"top_p\":1,\"seed\":3,\"stop\":null,\"tools\":[]}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        json_t *j = NULL;
        long st = post("/v1/chat/completions", ok[i], &j);
        expect_status(st, 200, j);
        assert_non_null(chat_content(j));
        json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
        assert_true(json_is_null(json_object_get(c0, "logprobs")));
        json_decref(j);
    }
    /* streamed, as the SDKs send it with stream_options */
    struct sse_result r;
    assert_int_equal(kf_stream(g_kf,
                               "{\"messages\":[{\"role\":\"user\",\"content\":\"Say hi\"}],"
                               "\"model\":\"aios-tiny\",\"stream\":true,\"max_tokens\":4,"
                               "\"stream_options\":{\"include_usage\":true,"
                               "\"include_obfuscation\":false}}",
                               &r, 0), 0);
    assert_int_equal(r.status, 200);
    assert_true(r.done);
    assert_non_null(r.usage);
    sse_result_free(&r);

    /* what aios does not do: a 400 naming the field */
    static const struct {
        const char *extra, *field;
    } bad[] = {
        {"\"logit_bias\":{\"15\":-100}", "logit_bias"},
        {"\"audio\":{\"voice\":\"alloy\",\"format\":\"wav\"}", "audio"},
        {"\"modalities\":[\"text\",\"audio\"]", "modalities"},
        {"\"prediction\":{\"type\":\"content\",\"content\":\"x\"}", "prediction"},
        {"\"reasoning_effort\":\"low\"", "reasoning_effort"},
        {"\"web_search_options\":{\"search_context_size\":\"low\"}", "web_search_options"},
        {"\"functions\":[{\"name\":\"f\",\"parameters\":{}}]", "functions"},
        {"\"temprature\":0.5", "temprature"},
        {"\"stream_options\":{\"include_usage\":true,\"chunk_size\":3}", "stream_options.chunk_size"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char body[512];
        snprintf(body, sizeof body,
                 "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                 "\"max_tokens\":2,%s}", bad[i].extra);
        json_t *j = NULL;
        long st = post("/v1/chat/completions", body, &j);
        expect_status(st, 400, j);
        char needle[64];
        snprintf(needle, sizeof needle, "'%s'", bad[i].field);
        assert_error_body(j, needle);
        json_decref(j);
    }
}

static void test_model_retrieve(void **state)
{
    (void)state;
    json_t *j = NULL;
    long st = kf_call(g_kf, "GET", "/v1/models/aios-tiny", NULL, &j);
    expect_status(st, 200, j);
    assert_string_equal(json_string_value(json_object_get(j, "id")), "aios-tiny");
    assert_string_equal(json_string_value(json_object_get(j, "object")), "model");
    assert_true(json_is_integer(json_object_get(j, "created")));
    assert_true(json_is_string(json_object_get(j, "owned_by")));
    json_decref(j);
    /* the embedding model is a model too */
    st = kf_call(g_kf, "GET", "/v1/models/test-embed", NULL, &j);
    expect_status(st, 200, j);
    assert_string_equal(json_string_value(json_object_get(j, "id")), "test-embed");
    json_decref(j);
    st = kf_call(g_kf, "GET", "/v1/models", NULL, &j);
    expect_status(st, 200, j);
    int found = 0;
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(j, "data"), i, m) {
        const char *id = json_string_value(json_object_get(m, "id"));
        found += !strcmp(id, "aios-tiny") + !strcmp(id, "test-embed");
    }
    assert_int_equal(found, 2);
    json_decref(j);
    /* chatting with the embedding model says where to go */
    st = post("/v1/chat/completions", "{\"model\":\"test-embed\",\"messages\":[{\"role\":"
                                      "\"user\",\"content\":\"hi\"}]}", &j);
    expect_status(st, 400, j);
    assert_error_body(j, "/v1/embeddings");
    json_decref(j);
    st = kf_call(g_kf, "GET", "/v1/models/no-such-model", NULL, &j);
    expect_status(st, 404, j);
    assert_error_body(j, "no-such-model");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                        "model_not_found");
    json_decref(j);
}

/* ---- logprobs ---- */

/* the entry's bytes appended to buf */
static void entry_bytes(json_t *e, char *buf, size_t *n, size_t cap)
{
    json_t *b = json_object_get(e, "bytes");
    assert_true(json_is_array(b));
    size_t i;
    json_t *x;
    json_array_foreach(b, i, x) {
        assert_true(json_is_integer(x));
        assert_true(json_integer_value(x) >= 0 && json_integer_value(x) <= 255);
        assert_true(*n + 1 < cap);
        buf[(*n)++] = (char)json_integer_value(x);
    }
    buf[*n] = 0;
}

/* shape of one content entry with k alternatives, best first */
static void check_entry(json_t *e, int k)
{
    assert_true(json_is_string(json_object_get(e, "token")));
    double lp = json_number_value(json_object_get(e, "logprob"));
    assert_true(json_is_number(json_object_get(e, "logprob")));
    assert_true(lp <= 1e-6);
    json_t *top = json_object_get(e, "top_logprobs");
    assert_true(json_is_array(top));
    assert_int_equal(json_array_size(top), k);
    double prev = 1, mass = 0;
    size_t i;
    json_t *a;
    json_array_foreach(top, i, a) {
        assert_true(json_is_string(json_object_get(a, "token")));
        assert_true(json_is_array(json_object_get(a, "bytes")));
        double l = json_number_value(json_object_get(a, "logprob"));
        assert_true(l <= prev + 1e-9);
        prev = l;
        mass += exp(l);
    }
    assert_true(mass <= 1.0 + 1e-4);
    /* the chosen token is at most as likely as the best alternative */
    if (k) assert_true(lp <= json_number_value(json_object_get(json_array_get(top, 0), "logprob")) + 1e-6);
}

static void test_logprobs_whole(void **state)
{
    (void)state;
    /* greedy: the chosen token is the best alternative, with its logprob */
    const char *body = "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":"
                       "\"Count to five\"}],\"max_tokens\":12,\"temperature\":0,\"logprobs\":true,"
                       "\"top_logprobs\":5}";
    json_t *j = NULL;
    long st = post("/v1/chat/completions", body, &j);
    expect_status(st, 200, j);
    json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
    json_t *lp = json_object_get(c0, "logprobs");
    assert_true(json_is_object(lp));
    assert_true(json_is_null(json_object_get(lp, "refusal")));
    json_t *content = json_object_get(lp, "content");
    assert_true(json_is_array(content));
    int n_gen = (int)json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens"));
    assert_true(n_gen > 0);
    /* one entry per generated token (an end-of-generation token is none) */
    assert_int_equal(json_array_size(content), n_gen);
    char all[4096];
    size_t n = 0;
    size_t i;
    json_t *e;
    json_array_foreach(content, i, e) {
        check_entry(e, 5);
        json_t *best = json_array_get(json_object_get(e, "top_logprobs"), 0);
        assert_string_equal(json_string_value(json_object_get(e, "token")),
                            json_string_value(json_object_get(best, "token")));
        assert_true(fabs(json_number_value(json_object_get(e, "logprob")) -
                         json_number_value(json_object_get(best, "logprob"))) < 1e-6);
        entry_bytes(e, all, &n, sizeof all);
    }
    /* the tokens' bytes make up the content (valid UTF-8 here: sanitising
     * changed nothing) */
    const char *text = chat_content(j);
    if (strlen(text) == n) assert_memory_equal(all, text, n);
    json_decref(j);

    /* sampled with a seed: the same request gives the same entries, and
     * the chosen token can be any allowed one */
    const char *seeded = "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":"
                         "\"Tell a story\"}],\"max_tokens\":10,\"temperature\":1.2,\"seed\":11,"
                         "\"logprobs\":true,\"top_logprobs\":0}";
    json_t *a = NULL, *b = NULL;
    expect_status(post("/v1/chat/completions", seeded, &a), 200, a);
    expect_status(post("/v1/chat/completions", seeded, &b), 200, b);
    json_t *ca = chat_logprobs(a);
    json_t *cb = chat_logprobs(b);
    assert_true(json_array_size(ca) > 0);
    assert_true(json_equal(ca, cb));
    json_array_foreach(ca, i, e) check_entry(e, 0);
    /* asking for logprobs does not change what is drawn */
    json_t *c = NULL;
    const char *nolp = "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":"
                       "\"Tell a story\"}],\"max_tokens\":10,\"temperature\":1.2,\"seed\":11}";
    expect_status(post("/v1/chat/completions", nolp, &c), 200, c);
    assert_string_equal(chat_content(c), chat_content(a));
    json_decref(c);
    json_decref(a);
    json_decref(b);

    /* bounds */
    static const struct {
        const char *extra, *needle;
    } bad[] = {
        {"\"logprobs\":true,\"top_logprobs\":21", "'top_logprobs'"},
        {"\"logprobs\":true,\"top_logprobs\":-1", "'top_logprobs'"},
        {"\"top_logprobs\":2", "'top_logprobs' needs 'logprobs'"},
        {"\"logprobs\":\"yes\"", "'logprobs'"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        char bb[512];
        snprintf(bb, sizeof bb,
                 "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                 "\"max_tokens\":2,%s}", bad[k].extra);
        json_t *x = NULL;
        expect_status(post("/v1/chat/completions", bb, &x), 400, x);
        assert_error_body(x, bad[k].needle);
        json_decref(x);
    }
}

/* Under response_format json_object the grammar allows only what can start
 * a JSON object: every alternative the kernel reports at the first
 * position must be one (a random-weight model left alone would rank
 * arbitrary tokens first), and their probabilities are renormalised over
 * the allowed tokens only. */
static void test_logprobs_grammar(void **state)
{
    (void)state;
    const char *body = "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":"
                       "\"json please\"}],\"max_tokens\":16,\"temperature\":0,\"logprobs\":true,"
                       "\"top_logprobs\":20,\"response_format\":{\"type\":\"json_object\"}}";
    json_t *j = NULL;
    expect_status(post("/v1/chat/completions", body, &j), 200, j);
    json_t *content = chat_logprobs(j);
    assert_true(json_array_size(content) > 0);
    json_t *first = json_array_get(content, 0);
    json_t *top = json_object_get(first, "top_logprobs");
    assert_true(json_array_size(top) >= 1);
    double mass = 0;
    size_t i;
    json_t *a;
    json_array_foreach(top, i, a) {
        const char *t = json_string_value(json_object_get(a, "token"));
        size_t k = strspn(t, " \t\n\r");
        /* whitespace, then '{' (or only whitespace) */
        assert_true(t[k] == 0 || t[k] == '{');
        mass += exp(json_number_value(json_object_get(a, "logprob")));
    }
    assert_true(mass <= 1.0 + 1e-4);
    /* fewer than 20 tokens can start an object: then the listed ones hold
     * all the probability */
    if (json_array_size(top) < 20) assert_true(fabs(mass - 1.0) < 1e-3);
    json_decref(j);
}

/* The numbers are after the penalties: with frequency_penalty -2 the token
 * drawn first gets +2 at the second position. Greedy, both requests draw
 * the same first token (no penalty applies before it); at the second, the
 * penalised request's alternatives are the unpenalised ones shifted by one
 * constant (the log of the new normaliser), the boosted token by that
 * constant + 2, and greedy then draws it. */
static void test_logprobs_penalties(void **state)
{
    (void)state;
    const char *plain = "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":"
                        "\"Repeat after me\"}],\"max_tokens\":2,\"temperature\":0,\"logprobs\":true,"
                        "\"top_logprobs\":20}";
    const char *pen = "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":"
                      "\"Repeat after me\"}],\"max_tokens\":2,\"temperature\":0,\"logprobs\":true,"
                      "\"top_logprobs\":20,\"frequency_penalty\":-2}";
    json_t *a = NULL, *b = NULL;
    expect_status(post("/v1/chat/completions", plain, &a), 200, a);
    expect_status(post("/v1/chat/completions", pen, &b), 200, b);
    json_t *ca = chat_logprobs(a);
    json_t *cb = chat_logprobs(b);
    assert_int_equal(json_array_size(ca), 2);
    assert_int_equal(json_array_size(cb), 2);
    /* first position: the same numbers */
    assert_true(json_equal(json_array_get(ca, 0), json_array_get(cb, 0)));
    const char *t0 = json_string_value(json_object_get(json_array_get(ca, 0), "token"));
    /* second position: the boosted first token is drawn */
    json_t *a1 = json_array_get(ca, 1), *b1 = json_array_get(cb, 1);
    assert_string_equal(json_string_value(json_object_get(b1, "token")), t0);
    double shift = 0;
    int n_common = 0;
    size_t i, k;
    json_t *x, *y;
    json_array_foreach(json_object_get(b1, "top_logprobs"), i, x) {
        const char *tx = json_string_value(json_object_get(x, "token"));
        if (!strcmp(tx, t0)) continue;
        json_array_foreach(json_object_get(a1, "top_logprobs"), k, y) {
            if (strcmp(tx, json_string_value(json_object_get(y, "token")))) continue;
            double d = json_number_value(json_object_get(x, "logprob")) -
                       json_number_value(json_object_get(y, "logprob"));
            if (n_common++ == 0) shift = d;
            assert_true(fabs(d - shift) < 1e-3);
        }
    }
    assert_true(n_common >= 3);
    assert_true(shift < 0); /* the boost took probability from the others */
    json_array_foreach(json_object_get(a1, "top_logprobs"), k, y) {
        if (strcmp(t0, json_string_value(json_object_get(y, "token")))) continue;
        assert_true(fabs(json_number_value(json_object_get(b1, "logprob")) -
                         json_number_value(json_object_get(y, "logprob")) - (shift + 2)) < 1e-3);
    }
    json_decref(a);
    json_decref(b);
}

static void test_logprobs_stream(void **state)
{
    (void)state;
    const char *whole = "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":"
                        "\"Name three colours\"}],\"max_tokens\":14,\"seed\":5,\"logprobs\":true,"
                        "\"top_logprobs\":3}";
    const char *streamed = "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":"
                           "\"Name three colours\"}],\"max_tokens\":14,\"seed\":5,\"logprobs\":true,"
                           "\"top_logprobs\":3,\"stream\":true}";
    json_t *j = NULL;
    expect_status(post("/v1/chat/completions", whole, &j), 200, j);
    json_t *want = chat_logprobs(j);
    assert_true(json_array_size(want) > 0);

    struct sse_result ev;
    assert_int_equal(kf_stream(g_kf, streamed, &ev, 0), 0);
    assert_int_equal(ev.status, 200);
    json_t *got = json_array();
    size_t i;
    json_t *c;
    int n_with = 0;
    json_array_foreach(ev.events, i, c) {
        json_t *c0 = json_array_get(json_object_get(c, "choices"), 0);
        json_t *delta = json_object_get(c0, "delta");
        json_t *lp = json_object_get(c0, "logprobs");
        const char *dt = json_string_value(json_object_get(delta, "content"));
        if (!json_is_object(lp)) continue;
        json_t *ents = json_object_get(lp, "content");
        assert_true(json_is_array(ents));
        n_with++;
        /* a chunk's entries are the tokens of its own text */
        char bytes[2048];
        size_t nb = 0;
        size_t k;
        json_t *e;
        json_array_foreach(ents, k, e) {
            entry_bytes(e, bytes, &nb, sizeof bytes);
            json_array_append(got, e);
        }
        if (dt && strlen(dt) == nb) assert_memory_equal(bytes, dt, nb);
    }
    assert_true(n_with > 0);
    /* the whole answer's entries, streamed (floats compared as printed) */
    assert_int_equal(json_array_size(got), json_array_size(want));
    json_array_foreach(want, i, c) {
        json_t *g = json_array_get(got, i);
        assert_string_equal(json_string_value(json_object_get(c, "token")),
                            json_string_value(json_object_get(g, "token")));
        assert_true(fabs(json_number_value(json_object_get(c, "logprob")) -
                         json_number_value(json_object_get(g, "logprob"))) < 1e-5);
        assert_int_equal(json_array_size(json_object_get(g, "top_logprobs")), 3);
    }
    json_decref(got);
    sse_result_free(&ev);
    json_decref(j);
}

/* ---- embeddings ---- */

static json_t *vec_of(json_t *j, size_t i)
{
    return json_object_get(json_array_get(json_object_get(j, "data"), i), "embedding");
}

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* base64 of little-endian float32 -> floats; returns how many */
static size_t unb64(const char *s, float *out, size_t cap)
{
    unsigned char raw[65536];
    size_t n = 0, len = strlen(s);
    for (size_t i = 0; i + 3 < len; i += 4) {
        int a = b64val(s[i]), b = b64val(s[i + 1]), c = b64val(s[i + 2]), d = b64val(s[i + 3]);
        assert_true(a >= 0 && b >= 0);
        unsigned v = (unsigned)a << 18 | (unsigned)b << 12 | (c >= 0 ? (unsigned)c << 6 : 0) |
                     (d >= 0 ? (unsigned)d : 0);
        raw[n++] = (unsigned char)(v >> 16);
        if (s[i + 2] != '=') raw[n++] = (unsigned char)(v >> 8);
        if (s[i + 3] != '=') raw[n++] = (unsigned char)v;
    }
    assert_int_equal(n % 4, 0);
    size_t m = n / 4;
    assert_true(m <= cap);
    for (size_t i = 0; i < m; i++) {
        uint32_t u = (uint32_t)raw[4 * i] | (uint32_t)raw[4 * i + 1] << 8 |
                     (uint32_t)raw[4 * i + 2] << 16 | (uint32_t)raw[4 * i + 3] << 24;
        memcpy(&out[i], &u, 4);
    }
    return m;
}

/* vectors a and b (JSON float lists) agree up to the rounding that
 * batching brings (docs/api.md, "Embeddings"): the same width, cosine
 * above 1 - 1e-6 and no component more than 1e-5 apart */
static void assert_vec_close(json_t *a, json_t *b)
{
    size_t n = json_array_size(a);
    assert_true(n > 0);
    assert_int_equal(json_array_size(b), n);
    double dot = 0, na = 0, nb = 0, diff = 0;
    for (size_t i = 0; i < n; i++) {
        double x = json_number_value(json_array_get(a, i)), y = json_number_value(json_array_get(b, i));
        dot += x * y, na += x * x, nb += y * y;
        if (fabs(x - y) > diff) diff = fabs(x - y);
    }
    assert_true(dot / sqrt(na * nb) > 1 - 1e-6);
    assert_true(diff < 1e-5);
}

static json_int_t embed_stat(const char *key)
{
    json_t *j = NULL;
    long st = kf_call(g_kf, "GET", "/status", NULL, &j);
    expect_status(st, 200, j);
    json_int_t v = json_integer_value(json_object_get(json_object_get(j, "embedding"), key));
    json_decref(j);
    return v;
}

static void test_embeddings(void **state)
{
    (void)state;
    /* openai-python embeddings.create(input=, model=) */
    json_t *one = NULL;
    long st = post("/v1/embeddings", "{\"input\":\"the cat sat on the mat\",\"model\":\"test-embed\","
                                     "\"encoding_format\":\"float\"}", &one);
    expect_status(st, 200, one);
    assert_string_equal(json_string_value(json_object_get(one, "object")), "list");
    assert_string_equal(json_string_value(json_object_get(one, "model")), "test-embed");
    json_t *d0 = json_array_get(json_object_get(one, "data"), 0);
    assert_string_equal(json_string_value(json_object_get(d0, "object")), "embedding");
    assert_int_equal(json_integer_value(json_object_get(d0, "index")), 0);
    json_t *v = vec_of(one, 0);
    size_t dim = json_array_size(v);
    assert_true(dim > 0);
    double norm = 0;
    for (size_t i = 0; i < dim; i++) norm += pow(json_number_value(json_array_get(v, i)), 2);
    assert_true(fabs(norm - 1.0) < 1e-3);
    json_t *u = json_object_get(one, "usage");
    int pt = (int)json_integer_value(json_object_get(u, "prompt_tokens"));
    assert_true(pt > 0);
    assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")), pt);

    /* a list (one decode): same text, the same vector up to rounding;
     * other text, another one */
    json_t *many = NULL;
    st = post("/v1/embeddings", "{\"input\":[\"a dog ran\",\"the cat sat on the mat\"],"
                                "\"model\":\"test-embed\"}", &many);
    expect_status(st, 200, many);
    assert_int_equal(json_array_size(json_object_get(many, "data")), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(many, "data"), 1), "index")), 1);
    assert_vec_close(vec_of(many, 1), v);
    assert_false(json_equal(vec_of(many, 0), v));

    /* base64 (what the Python SDK asks for by default) decodes to the
     * same floats */
    json_t *b = NULL;
    st = post("/v1/embeddings", "{\"input\":[\"the cat sat on the mat\"],\"model\":\"test-embed\","
                                "\"encoding_format\":\"base64\"}", &b);
    expect_status(st, 200, b);
    const char *s = json_string_value(vec_of(b, 0));
    assert_non_null(s);
    static float fl[16384];
    assert_int_equal(unb64(s, fl, 16384), dim);
    for (size_t i = 0; i < dim; i++)
        assert_true(fabs((double)fl[i] - json_number_value(json_array_get(v, i))) < 1e-6);
    json_decref(b);

    /* LangChain OpenAIEmbeddings (check_embedding_ctx_length: true) sends
     * token-id lists, through the Python SDK (base64) */
    json_t *t = NULL;
    st = post("/v1/embeddings", "{\"input\":[[10,11,12],[13,14]],\"model\":\"test-embed\","
                                "\"encoding_format\":\"base64\"}", &t);
    expect_status(st, 200, t);
    assert_int_equal(json_array_size(json_object_get(t, "data")), 2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(t, "usage"), "prompt_tokens")), 5);
    json_decref(t);
    st = post("/v1/embeddings", "{\"input\":[10,11,12],\"model\":\"test-embed\"}", &t);
    expect_status(st, 200, t);
    assert_int_equal(json_array_size(json_object_get(t, "data")), 1);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(t, "usage"), "prompt_tokens")), 3);
    /* the ids alone and the same ids batched with others: the same vector */
    json_t *t2 = NULL;
    st = post("/v1/embeddings", "{\"input\":[[13,14],[10,11,12],[7]],\"model\":\"test-embed\"}", &t2);
    expect_status(st, 200, t2);
    assert_vec_close(vec_of(t2, 1), vec_of(t, 0));
    assert_false(json_equal(vec_of(t2, 0), vec_of(t, 0)));
    json_decref(t2);
    json_decref(t);

    /* a long list is split into batches (embedding.n_seq: 32 inputs a
     * decode; about 600 tokens in all, under n_batch): 70 inputs in 3
     * decodes, not 70, and each vector is the
     * input's own (the first, one in the middle and the last, alone) */
    json_int_t texts0 = embed_stat("n_texts"), dec0 = embed_stat("n_decodes");
    char *lb = malloc(70 * 48 + 128);
    assert_non_null(lb);
    size_t o = (size_t)sprintf(lb, "{\"model\":\"test-embed\",\"input\":[");
    for (int i = 0; i < 70; i++)
        o += (size_t)sprintf(lb + o, "%s\"note %d about %s\"", i ? "," : "", i,
                             i % 3 ? "the scheduler" : "a sandbox and its files");
    strcpy(lb + o, "]}");
    json_t *lj = NULL;
    st = post("/v1/embeddings", lb, &lj);
    expect_status(st, 200, lj);
    free(lb);
    assert_int_equal(json_array_size(json_object_get(lj, "data")), 70);
    json_int_t dtexts = embed_stat("n_texts") - texts0, ddec = embed_stat("n_decodes") - dec0;
    assert_true(dtexts >= 70);
    assert_true(ddec >= 3 && ddec <= dtexts - 70 + 3); /* memory may embed a note meanwhile */
    static const int probe[] = {0, 41, 69};
    for (int p = 0; p < 3; p++) {
        char ob[160];
        snprintf(ob, sizeof ob, "{\"model\":\"test-embed\",\"input\":\"note %d about %s\"}",
                 probe[p], probe[p] % 3 ? "the scheduler" : "a sandbox and its files");
        json_t *oj = NULL;
        st = post("/v1/embeddings", ob, &oj);
        expect_status(st, 200, oj);
        assert_int_equal(json_integer_value(json_object_get(
                             json_array_get(json_object_get(lj, "data"), (size_t)probe[p]), "index")),
                         probe[p]);
        assert_vec_close(vec_of(lj, (size_t)probe[p]), vec_of(oj, 0));
        json_decref(oj);
    }
    json_decref(lj);

    /* dimensions: equal is fine, another width is refused */
    char body[256];
    snprintf(body, sizeof body, "{\"input\":\"x y\",\"model\":\"test-embed\",\"dimensions\":%zu}", dim);
    st = post("/v1/embeddings", body, &t);
    expect_status(st, 200, t);
    json_decref(t);
    static const struct {
        const char *body, *needle;
        long status;
    } bad[] = {
        {"{\"input\":\"x\",\"model\":\"test-embed\",\"dimensions\":3}", "'dimensions'", 400},
        {"{\"input\":\"\",\"model\":\"test-embed\"}", "empty", 400},
        {"{\"input\":[],\"model\":\"test-embed\"}", "empty", 400},
        {"{\"input\":[\"a\",7],\"model\":\"test-embed\"}", "'input'[1]", 400},
        {"{\"input\":[[1,2],[-1]],\"model\":\"test-embed\"}", "'input'[1][0]", 400},
        {"{\"input\":[99999999],\"model\":\"test-embed\"}", "token id", 400},
        {"{\"input\":\"x\",\"model\":\"test-embed\",\"encoding_format\":\"int8\"}", "encoding_format", 400},
        {"{\"input\":\"x\",\"model\":\"test-embed\",\"truncate\":true}", "'truncate'", 400},
        {"{\"input\":\"x\"}", "'model'", 400},
        {"{\"model\":\"test-embed\"}", "'input'", 400},
        {"{\"input\":\"x\",\"model\":\"aios-tiny\"}", "test-embed", 404},
        {"{\"input\":\"x\",\"model\":\"nope\"}", "nope", 404},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *x = NULL;
        st = post("/v1/embeddings", bad[i].body, &x);
        expect_status(st, bad[i].status, x);
        assert_error_body(x, bad[i].needle);
        json_decref(x);
    }
    /* longer than embedding.n_ctx (64) tokens: refused, not cut */
    char longb[8192] = "{\"model\":\"test-embed\",\"input\":\"";
    for (int i = 0; i < 300; i++) strcat(longb, "word ");
    strcat(longb, "\"}");
    st = post("/v1/embeddings", longb, &t);
    expect_status(st, 400, t);
    assert_error_body(t, "embedding.n_ctx");
    json_decref(t);
    json_decref(many);
    json_decref(one);
}

/* concurrent calls (which the worker may pack into shared decodes): every
 * vector comes back to its own call, at its own index */
struct emb_conc {
    int id;
    long status;
    json_t *j;
};

static void *emb_conc_worker(void *p)
{
    struct emb_conc *a = p;
    char body[512];
    snprintf(body, sizeof body,
             "{\"model\":\"test-embed\",\"input\":[\"caller %d first\",\"caller %d second text\","
             "\"caller %d, the third and longest of its inputs\",[%d,%d,%d]]}",
             a->id, a->id, a->id, 100 + a->id, 200 + a->id, 300 + a->id);
    a->status = post("/v1/embeddings", body, &a->j);
    return NULL;
}

static void test_embeddings_concurrent(void **state)
{
    (void)state;
    enum { N = 8 };
    pthread_t th[N];
    struct emb_conc a[N];
    json_int_t texts0 = embed_stat("n_texts"), dec0 = embed_stat("n_decodes");
    for (int i = 0; i < N; i++) {
        a[i] = (struct emb_conc){.id = i};
        assert_int_equal(pthread_create(&th[i], NULL, emb_conc_worker, &a[i]), 0);
    }
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    fprintf(stderr, "%d concurrent calls: %lld inputs in %lld decodes\n", N,
            (long long)(embed_stat("n_texts") - texts0), (long long)(embed_stat("n_decodes") - dec0));
    for (int i = 0; i < N; i++) {
        expect_status(a[i].status, 200, a[i].j);
        assert_int_equal(json_array_size(json_object_get(a[i].j, "data")), 4);
        /* each input alone gives the same vector as in the shared call */
        char body[256];
        snprintf(body, sizeof body, "{\"model\":\"test-embed\",\"input\":\"caller %d second text\"}", i);
        json_t *one = NULL;
        long st = post("/v1/embeddings", body, &one);
        expect_status(st, 200, one);
        assert_vec_close(vec_of(a[i].j, 1), vec_of(one, 0));
        json_decref(one);
        snprintf(body, sizeof body, "{\"model\":\"test-embed\",\"input\":[%d,%d,%d]}", 100 + i,
                 200 + i, 300 + i);
        st = post("/v1/embeddings", body, &one);
        expect_status(st, 200, one);
        assert_vec_close(vec_of(a[i].j, 3), vec_of(one, 0));
        json_decref(one);
        json_decref(a[i].j);
    }
}

/* the privilege group binds the embedding model; the call is the agent's */
static void test_embeddings_access(void **state)
{
    (void)state;
    char nora[128], emily[128];
    kf_register_agent(g_kf, "nora", nora, sizeof nora);
    kf_register_agent(g_kf, "emily", emily, sizeof emily);
    const char *body = "{\"input\":[\"one\",\"two words\"],\"model\":\"test-embed\"}";
    json_t *j = NULL;
    long st = kf_call_as(g_kf, nora, NULL, "POST", "/v1/embeddings", body, &j);
    expect_status(st, 403, j);
    assert_error_body(j, "test-embed");
    json_decref(j);
    assert_true(kf_audit_count(g_kf, "nora", "denied", "model:test-embed", NULL) >= 1);
    /* nora may chat */
    st = kf_call_as(g_kf, nora, NULL, "POST", "/v1/chat/completions",
                    "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                    "\"max_tokens\":2}", &j);
    expect_status(st, 200, j);
    json_decref(j);
    /* emily has no group: allowed, and accounted to her */
    st = kf_call_as(g_kf, emily, NULL, "POST", "/v1/embeddings", body, &j);
    expect_status(st, 200, j);
    int pt = (int)json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens"));
    assert_true(pt >= 2);
    json_decref(j);
    /* another agent's name in `user` is impersonation */
    st = kf_call_as(g_kf, emily, NULL, "POST", "/v1/embeddings",
                    "{\"input\":\"x\",\"model\":\"test-embed\",\"user\":\"nora\"}", &j);
    expect_status(st, 403, j);
    json_decref(j);
    st = kf_call(g_kf, "GET", "/agents/emily/stats", NULL, &j);
    expect_status(st, 200, j);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "tokens"), "prompt_computed")), pt);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "calls"), "done")), 1);
    json_decref(j);
}

/* ---- x-request-id ---- */

static int log_count(const char *needle)
{
    FILE *f = fopen(g_kf->child.log_path, "r");
    assert_non_null(f);
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f)) n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

static void test_request_id(void **state)
{
    (void)state;
    char url[512], auth[300];
    snprintf(url, sizeof url, "%s/v1/chat/completions", g_kf->child.base);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", g_kf->child.token);
    const char *body = "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                       "\"max_tokens\":3,\"user\":\"ridagent\"}";
    /* made by the kernel, different each time */
    struct hc_resp a, b;
    const char *hdrs[] = {auth, NULL};
    assert_int_equal(hc_call_h("POST", url, body, strlen(body), hdrs, &a, 60), 0);
    assert_int_equal(hc_call_h("POST", url, body, strlen(body), hdrs, &b, 60), 0);
    assert_int_equal(a.status, 200);
    assert_true(strlen(a.request_id) > 4);
    assert_string_not_equal(a.request_id, b.request_id);
    hc_resp_free(&a);
    hc_resp_free(&b);
    /* errors and other routes carry one too */
    char u2[512];
    snprintf(u2, sizeof u2, "%s/no/such/route", g_kf->child.base);
    assert_int_equal(hc_call_h("GET", u2, NULL, 0, hdrs, &a, 60), 0);
    assert_int_equal(a.status, 404);
    assert_true(a.request_id[0] != 0);
    hc_resp_free(&a);

    /* a client's sane id is echoed, and is in the audit rows and the log
     * lines of that call */
    const char *h2[] = {auth, "X-Request-Id: trace-7f3a.b_9", NULL};
    assert_int_equal(hc_call_h("POST", url, body, strlen(body), h2, &a, 60), 0);
    assert_int_equal(a.status, 200);
    assert_string_equal(a.request_id, "trace-7f3a.b_9");
    hc_resp_free(&a);
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "GET", "/access/audit?agent=ridagent", NULL, &j), 200);
    int rows = 0;
    size_t i;
    json_t *row;
    json_array_foreach(json_object_get(j, "audit"), i, row) {
        const char *rid = json_string_value(json_object_get(row, "request_id"));
        rows += rid && !strcmp(rid, "trace-7f3a.b_9");
    }
    json_decref(j);
    assert_true(rows >= 1);
    /* the route's line and the engine's line for the call */
    assert_true(log_count("request_id=trace-7f3a.b_9") >= 2);

    /* streamed answers too */
    const char *h3[] = {auth, "X-Request-Id: stream-1", NULL};
    const char *sbody = "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                        "\"max_tokens\":3,\"stream\":true}";
    assert_int_equal(hc_call_h("POST", url, sbody, strlen(sbody), h3, &a, 60), 0);
    assert_int_equal(a.status, 200);
    assert_string_equal(a.request_id, "stream-1");
    hc_resp_free(&a);

    /* an id that is not sane (spaces, too long) is replaced */
    const char *h4[] = {auth, "X-Request-Id: has spaces in it", NULL};
    assert_int_equal(hc_call_h("POST", url, body, strlen(body), h4, &a, 60), 0);
    assert_string_not_equal(a.request_id, "has spaces in it");
    assert_true(a.request_id[0] != 0);
    hc_resp_free(&a);
    char longh[200] = "X-Request-Id: ";
    for (int k = 0; k < 100; k++) strcat(longh, "a");
    const char *h5[] = {auth, longh, NULL};
    assert_int_equal(hc_call_h("POST", url, body, strlen(body), h5, &a, 60), 0);
    assert_true(strlen(a.request_id) < 80 && strlen(a.request_id) > 0);
    assert_true(a.request_id[0] != 'a' || strlen(a.request_id) < 100);
    hc_resp_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_bodies),
        cmocka_unit_test(test_model_retrieve),
        cmocka_unit_test(test_logprobs_whole),
        cmocka_unit_test(test_logprobs_grammar),
        cmocka_unit_test(test_logprobs_penalties),
        cmocka_unit_test(test_logprobs_stream),
        cmocka_unit_test(test_embeddings),
        cmocka_unit_test(test_embeddings_concurrent),
        cmocka_unit_test(test_embeddings_access),
        cmocka_unit_test(test_request_id),
    };
    return cmocka_run_group_tests(tests, group_setup, kf_group_teardown);
}
