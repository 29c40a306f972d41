/* Unit tests for src/llm/grammar.c against llama.cpp's own grammar engine
 * (the Qwen2 vocabulary of the tiny test model):
 *  - every generated grammar is accepted by llama_sampler_init_grammar;
 *  - chosen strings are accepted or rejected token by token, as the schema
 *    says (optional properties, enums, integer ranges, lengths, bounds);
 *  - random walks: tokens drawn uniformly from those the grammar allows,
 *    many seeds per schema, always end (the language is finite) and the
 *    text always parses and validates against the schema (schema_validate),
 *    the property that lets a random-weight model produce valid output. */
#include "llm/grammar.h"
#include "llm/schema.h"
#include "llm/testmodel.h"
#include "util/err.h"

#include <llama.h>

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static char g_dir[256], g_path[300];
static struct llama_model *g_model;
static const struct llama_vocab *g_vocab;
static llama_token_data *g_cand;
static int32_t g_n_vocab;

static void quiet_log(enum ggml_log_level level, const char *text, void *ud)
{
    (void)ud;
    /* llama.cpp explains a grammar it rejects at error level */
    if (level == GGML_LOG_LEVEL_ERROR || level == GGML_LOG_LEVEL_CONT) fputs(text, stderr);
}

static int group_setup(void **state)
{
    (void)state;
    const char *t = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/aios-grammar-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(g_dir)) return -1;
    snprintf(g_path, sizeof g_path, "%s/tiny.gguf", g_dir);
    llama_backend_init();
    llama_log_set(quiet_log, NULL);
    char err[256];
    if (testmodel_create(g_path, TESTMODEL_SHAPE_TINY, 1, 1, err, sizeof err)) {
        fprintf(stderr, "testmodel: %s\n", err);
        return -1;
    }
    struct llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    g_model = llama_model_load_from_file(g_path, mp);
    if (!g_model) return -1;
    g_vocab = llama_model_get_vocab(g_model);
    g_n_vocab = llama_vocab_n_tokens(g_vocab);
    g_cand = malloc(sizeof *g_cand * (size_t)g_n_vocab);
    return g_cand ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    free(g_cand);
    llama_model_free(g_model);
    unlink(g_path);
    rmdir(g_dir);
    llama_backend_free();
    return 0;
}

static json_t *J(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &e);
    if (!j) fprintf(stderr, "bad test JSON: %s: %s\n", text, e.text);
    assert_non_null(j);
    return j;
}

static struct grammar_opts small_opts(void)
{
    struct grammar_opts o;
    grammar_opts_default(&o);
    o.max_string = 12;
    o.max_items = 3;
    o.max_depth = 2;
    o.max_ws = 2;
    return o;
}

static char *gbnf_for(const char *schema, const struct grammar_opts *o)
{
    json_t *s = J(schema);
    char err[256];
    assert_int_equal(schema_check_supported(s, err, sizeof err), 0);
    char *g = NULL;
    int rc = grammar_from_schema(s, o, &g, err, sizeof err);
    if (rc) fprintf(stderr, "grammar: %s\n", err);
    assert_int_equal(rc, 0);
    json_decref(s);
    struct llama_sampler *smp = llama_sampler_init_grammar(g_vocab, g, "root");
    if (!smp) fprintf(stderr, "llama.cpp rejected:\n%s\n", g);
    assert_non_null(smp);
    llama_sampler_free(smp);
    return g;
}

/* is `tok` allowed next? */
static bool allowed(struct llama_sampler *smp, llama_token tok)
{
    llama_token_data d = {tok, 0.0f, 0.0f};
    llama_token_data_array a = {&d, 1, -1, false};
    llama_sampler_apply(smp, &a);
    return isfinite(a.data[0].logit);
}

/* does the grammar accept exactly `text` (tokenized the usual way)? */
static bool accepts(const char *gbnf, const char *text)
{
    struct llama_sampler *smp = llama_sampler_init_grammar(g_vocab, gbnf, "root");
    assert_non_null(smp);
    int n = (int)strlen(text);
    llama_token toks[512];
    int nt = llama_tokenize(g_vocab, text, n, toks, 512, false, false);
    assert_true(nt > 0);
    bool ok = true;
    for (int i = 0; i < nt && ok; i++) {
        if (!allowed(smp, toks[i])) ok = false;
        else llama_sampler_accept(smp, toks[i]);
    }
    if (ok) ok = allowed(smp, llama_vocab_eos(g_vocab));
    llama_sampler_free(smp);
    return ok;
}

/* a uniformly random walk through the grammar; returns the text (malloc'd),
 * asserting it ends within max_tokens */
static char *random_walk(const char *gbnf, uint64_t seed, int max_tokens)
{
    struct llama_sampler *smp = llama_sampler_init_grammar(g_vocab, gbnf, "root");
    assert_non_null(smp);
    uint64_t x = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    size_t cap = 4096, n = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    out[0] = 0;
    llama_token eos = llama_vocab_eos(g_vocab);
    for (int step = 0;; step++) {
        assert_true(step < max_tokens);
        /* a random slice of the vocabulary plus end-of-generation keeps a
         * step cheap; the whole vocabulary when the slice has nothing */
        int n_c = 0;
        for (int i = 0; i < 4096; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            g_cand[n_c++] = (llama_token_data){(llama_token)((x >> 33) % (uint64_t)g_n_vocab), 0.0f, 0.0f};
        }
        g_cand[n_c++] = (llama_token_data){eos, 0.0f, 0.0f};
        llama_token_data_array a = {g_cand, (size_t)n_c, -1, false};
        llama_sampler_apply(smp, &a);
        int n_ok = 0;
        for (size_t i = 0; i < a.size; i++)
            if (isfinite(a.data[i].logit)) n_ok++;
        if (n_ok == 0) {
            for (int32_t i = 0; i < g_n_vocab; i++) g_cand[i] = (llama_token_data){i, 0.0f, 0.0f};
            a = (llama_token_data_array){g_cand, (size_t)g_n_vocab, -1, false};
            llama_sampler_apply(smp, &a);
            for (size_t i = 0; i < a.size; i++)
                if (isfinite(a.data[i].logit)) n_ok++;
        }
        assert_true(n_ok > 0);
        /* stop with a fair chance whenever the grammar allows it */
        bool can_end = false;
        for (size_t i = 0; i < a.size; i++)
            if (isfinite(a.data[i].logit) && llama_vocab_is_eog(g_vocab, a.data[i].id)) can_end = true;
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        if (can_end && ((x >> 33) % 4 == 0 || n_ok == 1)) break;
        int pick = (int)((x >> 33) % (uint64_t)n_ok);
        llama_token tok = -1;
        for (size_t i = 0; i < a.size; i++) {
            if (!isfinite(a.data[i].logit)) continue;
            if (llama_vocab_is_eog(g_vocab, a.data[i].id)) continue;
            tok = a.data[i].id;
            if (pick-- <= 0) break;
        }
        if (tok < 0) break; /* only end-of-generation is left */
        llama_sampler_accept(smp, tok);
        char piece[256];
        int np = llama_token_to_piece(g_vocab, tok, piece, sizeof piece, 0, true);
        assert_true(np >= 0);
        if (n + (size_t)np + 1 > cap) {
            cap = cap * 2 + (size_t)np;
            out = realloc(out, cap);
            assert_non_null(out);
        }
        memcpy(out + n, piece, (size_t)np);
        n += (size_t)np;
        out[n] = 0;
    }
    llama_sampler_free(smp);
    return out;
}

static void walk_validate(const char *schema, const struct grammar_opts *o, int n_seeds,
                          int max_tokens)
{
    char *g = gbnf_for(schema, o);
    json_t *s = J(schema);
    for (int seed = 1; seed <= n_seeds; seed++) {
        char *text = random_walk(g, (uint64_t)seed, max_tokens);
        json_error_t je;
        json_t *v = json_loads(text, JSON_DECODE_ANY, &je);
        if (!v) fprintf(stderr, "seed %d: not JSON (%s): %s\n", seed, je.text, text);
        assert_non_null(v);
        char err[256];
        int rc = schema_validate(s, v, err, sizeof err);
        if (rc) fprintf(stderr, "seed %d: %s: %s\n", seed, err, text);
        assert_int_equal(rc, 0);
        json_decref(v);
        free(text);
    }
    json_decref(s);
    free(g);
}

/* ---- tests ---- */

static const char *k_weather =
    "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":10},"
    "\"days\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":14},"
    "\"unit\":{\"enum\":[\"celsius\",\"fahrenheit\"]},\"detailed\":{\"type\":\"boolean\"}},"
    "\"required\":[\"city\",\"days\"],\"additionalProperties\":false}";

static void test_accepts_and_rejects(void **state)
{
    (void)state;
    struct grammar_opts o = small_opts();
    char *g = gbnf_for(k_weather, &o);
    assert_true(accepts(g, "{\"city\": \"Paris\", \"days\": 3}"));
    assert_true(accepts(g, "{\"city\":\"Paris\",\"days\":14,\"unit\":\"celsius\",\"detailed\":true}"));
    assert_true(accepts(g, "{\"city\": \"Paris\", \"days\": 3, \"detailed\": false}"));
    assert_true(accepts(g, "{\n  \"city\": \"a\\\"b\",\n  \"days\": 10\n}"));
    assert_false(accepts(g, "{\"days\": 3}"));                              /* required */
    assert_false(accepts(g, "{\"days\": 3, \"city\": \"Paris\"}"));         /* order */
    assert_false(accepts(g, "{\"city\": \"Paris\", \"days\": 15}"));        /* maximum */
    assert_false(accepts(g, "{\"city\": \"Paris\", \"days\": 0}"));         /* minimum */
    assert_false(accepts(g, "{\"city\": \"Paris\", \"days\": 1.5}"));       /* integer */
    assert_false(accepts(g, "{\"city\": \"Paris\", \"days\": 3,}"));        /* comma */
    assert_false(accepts(g, "{\"city\": \"Paris\", \"days\": 3, \"unit\": \"kelvin\"}"));
    assert_false(accepts(g, "{\"city\": \"Parisparisparis\", \"days\": 3}")); /* maxLength */
    assert_false(accepts(g, "{\"city\": \"Paris\", \"days\": 3, \"x\": 1}"));
    assert_false(accepts(g, "{\"city\": \"a\nb\", \"days\": 3}")); /* raw control char */
    free(g);

    g = gbnf_for("{\"type\":\"array\",\"items\":{\"type\":\"number\",\"minimum\":-2.5,"
                 "\"maximum\":3},\"minItems\":1,\"maxItems\":3}", &o);
    assert_true(accepts(g, "[3]"));
    assert_true(accepts(g, "[-2, 0.5, 2.999]"));
    assert_true(accepts(g, "[-1.25]"));
    assert_false(accepts(g, "[]"));
    assert_false(accepts(g, "[1, 2, 3, 1]"));
    assert_false(accepts(g, "[3.5]"));
    assert_false(accepts(g, "[-3]"));
    assert_false(accepts(g, "[-2.75]"));
    free(g);

    g = gbnf_for("{\"type\":[\"string\",\"null\"],\"minLength\":2}", &o);
    assert_true(accepts(g, "null"));
    assert_true(accepts(g, "\"ab\""));
    assert_false(accepts(g, "\"a\""));
    assert_false(accepts(g, "1"));
    free(g);

    /* enum values that break the rest of the schema are left out */
    g = gbnf_for("{\"type\":\"string\",\"enum\":[\"a\",1,\"b\"]}", &o);
    assert_true(accepts(g, "\"b\""));
    assert_false(accepts(g, "1"));
    free(g);
}

static void test_integer_ranges(void **state)
{
    (void)state;
    struct grammar_opts o = small_opts();
    /* exhaustive over a few ranges, including negatives and digit-count
     * boundaries */
    const long long ranges[][2] = {{0, 9}, {7, 123}, {-15, 4}, {-250, -99}, {95, 1005}, {0, 0}};
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
        long long lo = ranges[r][0], hi = ranges[r][1];
        char schema[128];
        snprintf(schema, sizeof schema, "{\"type\":\"integer\",\"minimum\":%lld,\"maximum\":%lld}",
                 lo, hi);
        char *g = gbnf_for(schema, &o);
        for (long long v = lo - 12; v <= hi + 12; v += (hi - lo > 200 ? 7 : 1)) {
            char text[32];
            snprintf(text, sizeof text, "%lld", v);
            bool want = v >= lo && v <= hi;
            if (accepts(g, text) != want) fprintf(stderr, "[%lld,%lld] %lld\n", lo, hi, v);
            assert_true(accepts(g, text) == want);
        }
        assert_false(accepts(g, "-0"));
        assert_false(accepts(g, "007"));
        free(g);
    }
    /* only a minimum */
    char *g = gbnf_for("{\"type\":\"integer\",\"minimum\":-3}", &o);
    assert_true(accepts(g, "-3"));
    assert_true(accepts(g, "123456789"));
    assert_false(accepts(g, "-4"));
    free(g);
    /* no integer in range */
    json_t *s = J("{\"type\":\"integer\",\"minimum\":0.2,\"maximum\":0.8}");
    char err[256], *out = NULL;
    assert_int_equal(grammar_from_schema(s, &o, &out, err, sizeof err), AIOS_EINVAL);
    assert_non_null(strstr(err, "no integer"));
    json_decref(s);
    /* a number range narrower than one step still has values */
    g = gbnf_for("{\"type\":\"number\",\"minimum\":0.2,\"maximum\":0.8}", &o);
    assert_true(accepts(g, "0.8"));
    assert_false(accepts(g, "1"));
    free(g);
}

static void test_random_walks_validate(void **state)
{
    (void)state;
    struct grammar_opts o = small_opts();
    walk_validate(k_weather, &o, 6, 200);
    walk_validate("{\"type\":\"object\",\"properties\":{\"trip\":{\"type\":\"object\","
                  "\"properties\":{\"stops\":{\"type\":\"array\",\"items\":{\"type\":\"object\","
                  "\"properties\":{\"name\":{\"type\":\"string\"},\"nights\":{\"type\":"
                  "\"integer\",\"minimum\":0}},\"required\":[\"name\"]},\"maxItems\":2},"
                  "\"budget\":{\"type\":[\"number\",\"null\"]}},\"required\":[\"stops\"]},"
                  "\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"a\",\"b\",3,null]}},"
                  "\"note\":{\"const\":\"fixed\"}},\"required\":[\"trip\",\"tags\",\"note\"]}",
                  &o, 4, 400);
    walk_validate("{\"type\":\"object\",\"properties\":{\"a\":{},\"b\":{\"type\":\"array\"},"
                  "\"c\":{\"type\":\"object\"},\"d\":{\"type\":\"number\",\"minimum\":-1,"
                  "\"maximum\":1}}}", &o, 4, 400);
    walk_validate("{\"type\":\"string\",\"minLength\":3,\"maxLength\":5}", &o, 4, 50);
}

static void test_json_object_and_tools(void **state)
{
    (void)state;
    struct grammar_opts o = small_opts();
    char *g = NULL;
    assert_int_equal(grammar_json_object(&o, &g), 0);
    assert_true(accepts(g, "{\"a\": [1, \"y\"], \"c\": {\"d\": null}}"));
    assert_false(accepts(g, "{\"a\": [1, {\"b\": null}]}")); /* deeper than max_depth */
    assert_false(accepts(g, "[1]"));
    assert_false(accepts(g, "\"x\""));
    for (int seed = 1; seed <= 4; seed++) {
        char *t = random_walk(g, (uint64_t)seed, 600);
        json_t *v = json_loads(t, 0, NULL);
        if (!v) fprintf(stderr, "not an object: %s\n", t);
        assert_true(json_is_object(v));
        json_decref(v);
        free(t);
    }
    free(g);

    json_t *p = J("{\"type\":\"object\",\"properties\":{\"q\":{\"type\":\"string\"}},"
                  "\"required\":[\"q\"]}");
    struct grammar_tool tools[2] = {{"search", p}, {"author__now", NULL}};
    char err[256];
    assert_int_equal(grammar_tool_calls(tools, 2, 2, false, &o, &g, err, sizeof err), 0);
    struct llama_sampler *smp = llama_sampler_init_grammar(g_vocab, g, "root");
    assert_non_null(smp);
    llama_sampler_free(smp);
    assert_true(accepts(g, "<tool_call>\n{\"name\": \"search\", \"arguments\": {\"q\": \"x\"}}\n</tool_call>"));
    assert_true(accepts(g, "<tool_call>\n{\"name\": \"author__now\", \"arguments\": {}}\n</tool_call>\n"
                           "<tool_call>\n{\"name\": \"search\", \"arguments\": {\"q\": \"\"}}\n</tool_call>"));
    assert_false(accepts(g, "<tool_call>\n{\"name\": \"other\", \"arguments\": {}}\n</tool_call>"));
    assert_false(accepts(g, "<tool_call>\n{\"name\": \"search\", \"arguments\": {}}\n</tool_call>"));
    assert_false(accepts(g, "hello"));
    free(g);
    assert_int_equal(grammar_tool_calls(tools, 2, 1, true, &o, &g, err, sizeof err), 0);
    assert_true(accepts(g, "hello <there>"));
    assert_true(accepts(g, "<tool_call>\n{\"name\": \"author__now\", \"arguments\": {}}\n</tool_call>"));
    assert_false(accepts(g, "<tool_call>\n{\"name\": \"author__now\", \"arguments\": {}}\n</tool_call>\n"
                            "<tool_call>\n{\"name\": \"author__now\", \"arguments\": {}}\n</tool_call>"));
    assert_false(accepts(g, "<b>"));
    free(g);
    json_decref(p);
}

/* bounds no value can meet are refused, never a repetition {6,3} that
 * llama.cpp's grammar parser does not return from (found by fuzz_schema) */
static void test_contradictory_bounds_refused(void **state)
{
    (void)state;
    struct grammar_opts o = small_opts();
    static const char *bad[] = {
        "{\"type\":\"string\",\"minLength\":6,\"maxLength\":3}",
        "{\"type\":\"string\",\"minLength\":-1}",
        "{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":3,\"maxItems\":2}",
        "{\"type\":\"array\",\"maxItems\":-2}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *s = J(bad[i]);
        char *g = NULL, err[256] = "";
        assert_int_equal(grammar_from_schema(s, &o, &g, err, sizeof err), AIOS_EINVAL);
        assert_null(g);
        assert_true(strstr(err, "Length") || strstr(err, "Items"));
        struct grammar_tool t = {"t", s};
        assert_int_equal(grammar_tool_calls(&t, 1, 1, false, &o, &g, err, sizeof err), AIOS_EINVAL);
        json_decref(s);
    }
    json_t *s = J("{\"type\":\"string\",\"minLength\":3,\"maxLength\":3}");
    char *g = NULL, err[256];
    assert_int_equal(grammar_from_schema(s, &o, &g, err, sizeof err), 0);
    assert_true(accepts(g, "\"abc\""));
    assert_false(accepts(g, "\"ab\""));
    free(g);
    json_decref(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts_and_rejects),
        cmocka_unit_test(test_integer_ranges),
        cmocka_unit_test(test_random_walks_validate),
        cmocka_unit_test(test_json_object_and_tools),
        cmocka_unit_test(test_contradictory_bounds_refused),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
