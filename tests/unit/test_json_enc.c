/* Unit tests of the compact JSON encoder (src/util/json_enc.c): its text
 * must be jansson's json_dumps(v, JSON_COMPACT | JSON_REAL_PRECISION(p))
 * byte for byte, NULL where jansson's is NULL. Reals are compared on random
 * bit patterns, on numbers shaped like the kernel's (timestamps, durations,
 * scores), on ties of the rounding, and around every power of ten. */
#include "util/json_enc.h"
#include "util/util.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t g_rs = 88172645463325252ULL;
static uint64_t rnd(void) { return util_xorshift64(&g_rs); }

/* both encoders on v; fails the test, naming v, when they differ */
static void same(const json_t *v, int precision)
{
    char *want = json_dumps(v, JSON_COMPACT | JSON_REAL_PRECISION(precision));
    size_t len = 0;
    char *got = json_enc_compact(v, precision, 2, &len);
    if (!want || !got || strcmp(want, got) != 0 || strlen(got) != len) {
        char *any = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
        print_error("precision %d, value %s: jansson %s, json_enc %s\n", precision,
                    any ? any : "?", want ? want : "NULL", got ? got : "NULL");
        free(any);
        fail();
    }
    free(want);
    free(got);
}

static void same_real(double d, int precision)
{
    if (!isfinite(d)) return;
    json_t *a = json_array();
    json_array_append_new(a, json_real(d));
    same(a, precision);
    json_decref(a);
}

static void test_reals(void **state)
{
    (void)state;
    static const int precisions[] = {15, 17, 0, 1, 2, 6, 16, 20};
    for (size_t pi = 0; pi < sizeof precisions / sizeof *precisions; pi++) {
        int p = precisions[pi];
        for (int i = 0; i < 20000; i++) { /* any bits */
            uint64_t b = rnd();
            double d;
            memcpy(&d, &b, sizeof d);
            same_real(d, p);
        }
        for (int i = 0; i < 20000; i++) { /* the kernel's: times, durations, scores */
            same_real(1.7e9 + (double)(rnd() % 1000000000) / 1e6, p);
            same_real((double)(rnd() % 100000) / 1e6, p);
            same_real((double)(rnd() % 100000000) * 1e-9, p);
            same_real(-(double)(rnd() % 1000) / 7.0, p);
        }
        for (int i = 0; i < 5000; i++) { /* halves: ties of the rounding */
            int64_t x = (int64_t)(rnd() % 2000000000000000ULL);
            same_real((double)x, p);
            same_real((double)x + 0.5, p);
            same_real((double)x / 1024.0, p);
            same_real(-(double)x / 8.0, p);
        }
        for (int e = -330; e <= 310; e++) { /* powers of ten and their neighbours */
            double d = pow(10, e);
            same_real(d, p);
            same_real(-d, p);
            same_real(nextafter(d, 0), p);
            same_real(nextafter(d, INFINITY), p);
            same_real(9.5 * d, p);
            same_real(0.99999999999999999 * d, p);
        }
        static const double fixed[] = {0.0, -0.0, 0.5, 1.5, 2.5, 1.0, 100.0, 123456789012345.5,
                                       123456789012344.5, 1e15, 1e16, 4e-6, 1e-4, 1e-5,
                                       99999.99999999999, 5e-324, 1.7976931348623157e308};
        for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) same_real(fixed[i], p);
    }
    char out[JSON_ENC_REAL_MAX];
    assert_int_equal(json_enc_real(out, NAN, 15), -1);
    assert_int_equal(json_enc_real(out, INFINITY, 15), -1);
    assert_int_equal(json_enc_real(out, 4e-6, 15), 4);
    assert_string_equal(out, "4e-6");
    assert_int_equal(json_enc_real(out, 2.0, 15), 3);
    assert_string_equal(out, "2.0");
}

static void test_strings_and_shapes(void **state)
{
    (void)state;
    static const char *strs[] = {"plain", "q\"b\\s/\b\f\n\r\t\x01\x1f\x7f end",
                                 "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 \xef\xbf\xbf", ""};
    for (size_t i = 0; i < sizeof strs / sizeof *strs; i++) {
        json_t *v = json_pack("{s:s,s:[i,I,I,b,b,n,{},[]],s:{s:{s:f}}}", strs[i], strs[i], "arr", -5,
                              (json_int_t)INT64_MIN, (json_int_t)INT64_MAX, 1, 0, "nested", "a",
                              "b", 0.25);
        assert_non_null(v);
        same(v, 15);
        json_decref(v);
    }
    /* a NUL inside a string, a key with a NUL, insertion order of keys */
    json_t *o = json_object();
    json_object_set_new(o, "zeta", json_integer(1));
    json_object_setn_new(o, "k\0ey", 4, json_stringn("a\0b", 3));
    json_object_set_new(o, "alpha", json_integer(2));
    same(o, 15);
    /* a long string, bigger than the first buffer */
    char *big = malloc(100001);
    assert_non_null(big);
    for (int i = 0; i < 100000; i++) big[i] = (char)(i % 97 == 0 ? '"' : i % 89 == 0 ? '\n' : 'a' + i % 26);
    big[100000] = 0;
    json_object_set_new(o, "big", json_string(big));
    same(o, 15);
    free(big);
    json_decref(o);
    /* random strings of plain bytes, escapes and multi-byte characters,
     * so that every kind sits at every offset of a 16-byte block */
    static const char *parts[] = {"a", "Z", " ", "\"", "\\", "\n", "\x01", "\x1f", "\x7f", "/",
                                  "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "abcdefghijklmnop"};
    char buf[800];
    for (int it = 0; it < 3000; it++) {
        size_t n = 0, want = rnd() % 700;
        while (n < want) {
            const char *q = parts[rnd() % (sizeof parts / sizeof *parts)];
            memcpy(buf + n, q, strlen(q));
            n += strlen(q);
        }
        json_t *a = json_array();
        json_array_append_new(a, json_stringn(buf, n));
        same(a, 15);
        json_decref(a);
    }
    /* deep nesting */
    json_t *deep = json_array(), *cur = deep;
    for (int i = 0; i < 3000; i++) {
        json_t *x = i % 2 ? json_array() : json_object();
        if (json_is_array(cur)) json_array_append_new(cur, x);
        else json_object_set_new(cur, "k", x);
        cur = x;
    }
    same(deep, 15);
    json_decref(deep);
    /* the room asked for after the text */
    size_t len = 0;
    json_t *e = json_object();
    char *s = json_enc_compact(e, 15, 2, &len);
    assert_non_null(s);
    assert_int_equal(len, 2);
    s[2] = '\n';
    s[3] = 0;
    assert_string_equal(s, "{}\n");
    free(s);
    json_decref(e);
}

static void test_refusals(void **state)
{
    (void)state;
    /* invalid UTF-8 (made with the unchecked constructor): NULL like jansson */
    static const struct {
        const char *s;
        size_t n;
    } bad[] = {{"\xc0\x80", 2},         {"\xed\xa0\x80", 3}, {"\xf4\x90\x80\x80", 4},
               {"\xe0\x80\x80", 3},     {"\x80", 1},         {"ab\xc3", 3},
               {"\xf5\x80\x80\x80", 4}, {"\xe2\x82", 2},     {"x\xff", 2}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        json_t *a = json_array();
        json_array_append_new(a, json_stringn_nocheck(bad[i].s, bad[i].n));
        assert_null(json_dumps(a, JSON_COMPACT));
        assert_null(json_enc_compact(a, 15, 0, NULL));
        json_decref(a);
        /* as a key, jansson ignores the failure and writes part of the key:
         * the same text */
        json_t *o = json_object();
        json_object_setn_new_nocheck(o, bad[i].s, bad[i].n, json_null());
        json_object_setn_new_nocheck(o, "a\nb\xc3", 4, json_null());
        same(o, 15);
        json_decref(o);
    }
    /* a top level that is not a container */
    json_t *str = json_string("x");
    assert_null(json_enc_compact(str, 15, 0, NULL));
    json_decref(str);
    assert_null(json_enc_compact(NULL, 15, 0, NULL));
    /* a cycle, near the top and deep down */
    for (int depth = 1; depth < 100; depth += 40) {
        json_t *top = json_array(), *cur = top;
        for (int i = 0; i < depth; i++) {
            json_t *x = json_array();
            json_array_append_new(cur, x);
            cur = x;
        }
        json_array_append(cur, top);
        assert_null(json_dumps(top, JSON_COMPACT));
        assert_null(json_enc_compact(top, 15, 0, NULL));
        json_array_clear(cur); /* break it, so it can be freed */
        json_decref(top);
    }
    /* the same value twice (not a cycle) is fine */
    json_t *shared = json_pack("{s:i}", "n", 1);
    json_t *twice = json_pack("[O,O,[O]]", shared, shared, shared);
    same(twice, 15);
    json_decref(twice);
    json_decref(shared);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reals),
        cmocka_unit_test(test_strings_and_shapes),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
