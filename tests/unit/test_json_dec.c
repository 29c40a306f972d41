/* Unit tests of the request body parser (src/util/json_dec.c): for every
 * input, json_dec_loadb must give what jansson's json_loadb gives: the
 * same tree (types, values, key order) or the same error (text, line,
 * column, position). Inputs: hand-made edge cases, generated documents,
 * and the generated documents with random edits. */
#include "util/json_dec.h"
#include "util/util.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t g_rs = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void) { return util_xorshift64(&g_rs); }
static size_t pick(size_t n) { return (size_t)(rnd() % n); }

static long g_ok, g_failed; /* inputs both accepted, both refused */

static void same(const char *buf, size_t n, size_t flags)
{
    json_error_t e1, e2;
    json_t *a = json_loadb(buf, n, flags, &e1);
    json_t *b = json_dec_loadb(buf, n, flags, &e2);
    bool fine = (a == NULL) == (b == NULL) && !strcmp(e1.text, e2.text) && e1.line == e2.line &&
                e1.column == e2.column && e1.position == e2.position && !strcmp(e1.source, e2.source);
    if (fine && a) {
        size_t f = JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17);
        char *da = json_dumps(a, f), *db = json_dumps(b, f);
        fine = json_equal(a, b) && da && db && !strcmp(da, db);
        free(da);
        free(db);
    }
    if (!fine) {
        print_error("input (%zu bytes, flags %zu): %.*s\njansson: %s (%d:%d@%d)\njson_dec: %s (%d:%d@%d)\n", n,
                    flags, (int)n, buf, a ? "ok" : e1.text, e1.line, e1.column, e1.position,
                    b ? "ok" : e2.text, e2.line, e2.column, e2.position);
        fail();
    }
    if (a) g_ok++;
    else g_failed++;
    json_decref(a);
    json_decref(b);
}

static void same_s(const char *s)
{
    same(s, strlen(s), 0);
    same(s, strlen(s), JSON_REJECT_DUPLICATES);
}

static void test_cases(void **state)
{
    (void)state;
    static const char *cases[] = {
        "{}", "[]", " \t\r\n{ } \n", "{\"a\":1}", "[1,2,3]", "[1,]", "[,1]", "{\"a\":1,}", "{\"a\" 1}",
        "{\"a\":}", "{a:1}", "{\"a\":1", "[1", "[", "{", "", " ", "1", "\"x\"", "null", "true",
        "[true,false,null]", "[tru]", "[truex]", "[true1]", "[nul]", "[True]",
        /* numbers */
        "[0]", "[-0]", "[-0.0]", "[01]", "[-01]", "[-]", "[1.]", "[.5]", "[1e]", "[1e+]", "[1E5]",
        "[1e-5]", "[1.5e+3]", "[-1.25E-2]", "[123456789012345678]", "[-123456789012345678]",
        "[1234567890123456789]", "[9223372036854775807]", "[9223372036854775808]",
        "[-9223372036854775808]", "[-9223372036854775809]", "[1e308]", "[1e309]", "[-1e400]",
        "[1e-400]", "[0.1]", "[1.7976931348623157e308]", "[4.9e-324]", "[+1]", "[0x10]", "[1 2]",
        "[1.0]", "[100000000000000000000000000000]", "[0.000000000000000000000000000001]",
        /* strings */
        "[\"\"]", "[\"a\\\"b\"]", "[\"\\\\\\/\\b\\f\\n\\r\\t\"]", "[\"\\u0041\\u00e9\\u20AC\"]",
        "[\"\\ud83d\\ude00\"]", "[\"\\uD83D\\uDE00x\"]", "[\"\\ud83d\"]", "[\"\\ud83dx\"]",
        "[\"\\ud83d\\u0041\"]", "[\"\\ude00\"]", "[\"\\u0000\"]", "[\"\\u00\"]", "[\"\\u00g0\"]",
        "[\"\\x\"]", "[\"\\\"]", "[\"abc]", "[\"a\nb\"]", "[\"a\tb\"]", "[\"\x7f\"]",
        "[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"]", "[\"\xc0\x80\"]", "[\"\xed\xa0\x80\"]",
        "[\"\xf4\x90\x80\x80\"]", "[\"\xc3\"]", "[\"\x80\"]", "[\"\xff\"]", "[\"\xe2\x82\"]",
        "[\xc3\xa9]", "\xef\xbb\xbf[]",
        /* keys */
        "{\"a\":1,\"a\":2}", "{\"a\":1,\"b\":{\"a\":2},\"c\":[{\"a\":3,\"a\":4}]}",
        "{\"\\u0000\":1}", "{\"a\\u0000b\":1}", "{\"\\u00e9\":1,\"\xc3\xa9\":2}", "{\"k\\n\":\"v\\n\"}",
        "{\"\":1}", "{\"a\":1 \"b\":2}", "{\"a\"::1}", "{,}", "{\"z\":1,\"y\":2,\"x\":3}",
        "{\"a-long-key-with-escapes\\t\\t\\t\\t\\t\\t\\t\\t\\t\\t\\t\\t\\t\\t\\t\\t\\t\\t\\t\\t\\t\\t\\t"
        "\\t\\t\\t\\t\\t\\t\\t\\t\\t\\t\":{\"inner\\n\":\"value\\n\"}}",
        /* after the value */
        "{} x", "{}{}", "[] ]", "{}\x00", "[]\n\n",
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) same_s(cases[i]);
    same("[1]\0", 4, 0);        /* a NUL after the value */
    same("[\"a\0b\"]", 7, 0);   /* a NUL in a string */
    same("{\"a\":1}", 3, 0);    /* cut short */
    /* other flags: jansson's */
    same("[1]", 3, JSON_DECODE_ANY);
    same("1", 1, JSON_DECODE_ANY);
    same("[1] x", 5, JSON_DISABLE_EOF_CHECK);
    /* nesting around the fast path's limit and jansson's */
    static char deep[6000];
    for (int d = 500; d <= 2100; d += 100) {
        memset(deep, '[', (size_t)d);
        memset(deep + d, ']', (size_t)d);
        same(deep, 2 * (size_t)d, 0);
    }
}

/* ---- generated documents ---- */

struct out {
    char buf[1 << 16];
    size_t n;
};

static void emit(struct out *o, const char *s, size_t n)
{
    if (o->n + n < sizeof o->buf) {
        memcpy(o->buf + o->n, s, n);
        o->n += n;
    }
}
static void emits(struct out *o, const char *s) { emit(o, s, strlen(s)); }
static void ws(struct out *o)
{
    static const char *w[] = {"", "", "", " ", "\n", "\t", "\r\n  "};
    emits(o, w[pick(sizeof w / sizeof *w)]);
}

static void gen_string(struct out *o)
{
    static const char *parts[] = {"a", "key", " ", "\\\"", "\\\\", "\\/", "\\n", "\\t", "\\b", "\\f",
                                  "\\r", "\\u0041", "\\u00e9", "\\u20ac", "\\ud83d\\ude00",
                                  "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\x7f",
                                  "0123456789abcdefghijklmnopqrstuvwxyz"};
    emits(o, "\"");
    size_t k = pick(4) == 0 ? pick(60) : pick(6);
    for (size_t i = 0; i < k; i++) emits(o, parts[pick(sizeof parts / sizeof *parts)]);
    emits(o, "\"");
}

static void gen_number(struct out *o)
{
    char b[64];
    switch (pick(6)) {
    case 0: snprintf(b, sizeof b, "%lld", (long long)(rnd() % 2000001) - 1000000); break;
    case 1: snprintf(b, sizeof b, "%lld", (long long)rnd() >> pick(64)); break;
    case 2: snprintf(b, sizeof b, "%.17g", (double)(int64_t)rnd() / (double)(1 + rnd() % 1000000)); break;
    case 3: snprintf(b, sizeof b, "%de%d", (int)pick(100), (int)pick(700) - 350); break;
    case 4: snprintf(b, sizeof b, "-0.%06d", (int)pick(1000000)); break;
    default: snprintf(b, sizeof b, "%u.5E+%d", (unsigned)pick(1000), (int)pick(20)); break;
    }
    emits(o, b);
}

static void gen_value(struct out *o, int depth)
{
    size_t kind = depth > 5 ? 2 + pick(5) : pick(7);
    switch (kind) {
    case 0: { /* object; keys from a small set, so duplicates happen */
        static const char *keys[] = {"\"a\"", "\"b\"", "\"query_type\"", "\"params\"", "\"\\u0061\"",
                                     "\"content\"", "\"k\\n\""};
        emits(o, "{");
        ws(o);
        size_t k = pick(5);
        for (size_t i = 0; i < k; i++) {
            if (i) {
                emits(o, ",");
                ws(o);
            }
            if (pick(3)) emits(o, keys[pick(sizeof keys / sizeof *keys)]);
            else gen_string(o);
            ws(o);
            emits(o, ":");
            ws(o);
            gen_value(o, depth + 1);
            ws(o);
        }
        emits(o, "}");
        break;
    }
    case 1: {
        emits(o, "[");
        ws(o);
        size_t k = pick(5);
        for (size_t i = 0; i < k; i++) {
            if (i) {
                emits(o, ",");
                ws(o);
            }
            gen_value(o, depth + 1);
            ws(o);
        }
        emits(o, "]");
        break;
    }
    case 2:
    case 3: gen_string(o); break;
    case 4: gen_number(o); break;
    case 5: emits(o, pick(2) ? "true" : "false"); break;
    default: emits(o, "null"); break;
    }
}

static void test_generated(void **state)
{
    (void)state;
    static struct out o;
    static const char edits[] = "{}[]\",:\\u0123456789.eE+-tfn \n\t\x01\x7f\xc3\xa9\xed\xff";
    for (int it = 0; it < 30000; it++) {
        o.n = 0;
        ws(&o);
        if (pick(2)) {
            emits(&o, "{");
            emits(&o, "\"x\":");
            gen_value(&o, 1);
            emits(&o, "}");
        } else {
            emits(&o, "[");
            gen_value(&o, 1);
            emits(&o, "]");
        }
        ws(&o);
        same(o.buf, o.n, it % 2 ? JSON_REJECT_DUPLICATES : 0);
        /* the same with random edits */
        size_t n_edits = 1 + pick(3);
        for (size_t e = 0; e < n_edits && o.n > 0; e++) {
            size_t at = pick(o.n);
            switch (pick(4)) {
            case 0: o.buf[at] = edits[pick(sizeof edits - 1)]; break;
            case 1:
                memmove(o.buf + at, o.buf + at + 1, o.n - at - 1);
                o.n--;
                break;
            case 2:
                if (o.n + 1 < sizeof o.buf) {
                    memmove(o.buf + at + 1, o.buf + at, o.n - at);
                    o.buf[at] = edits[pick(sizeof edits - 1)];
                    o.n++;
                }
                break;
            default: o.n = at; break;
            }
        }
        same(o.buf, o.n, it % 2 ? JSON_REJECT_DUPLICATES : 0);
    }
    /* both kinds were seen often */
    assert_true(g_ok > 10000);
    assert_true(g_failed > 10000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_generated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
