/* Unit tests for src/llm/chat.c: the UTF-8 stable-prefix length used while
 * streaming, sanitising (every invalid sequence becomes U+FFFD and the
 * result is always valid), validation, and stop strings (earliest match,
 * `from` offset, hold-back of a suffix that may still become a stop). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "llm/chat.h"
#include "util/err.h"

#define FFFD "\xEF\xBF\xBD"
#define S(lit) (lit), (sizeof(lit) - 1)

/* ---- chat_utf8_stable_len ---- */

static void test_stable_ascii(void **state)
{
    (void)state;
    assert_int_equal(chat_utf8_stable_len("", 0), 0);
    assert_int_equal(chat_utf8_stable_len(S("a")), 1);
    assert_int_equal(chat_utf8_stable_len(S("hello world")), 11);
    /* n limits the view, not strlen */
    assert_int_equal(chat_utf8_stable_len("hello", 3), 3);
}

static const char *const k_chars[] = {
    "\xC3\xA9",         /* é U+00E9 */
    "\xC2\x80",         /* U+0080, smallest 2-byte */
    "\xDF\xBF",         /* U+07FF */
    "\xE2\x82\xAC",     /* € U+20AC */
    "\xE0\xA0\x80",     /* U+0800, smallest 3-byte */
    "\xED\x9F\xBF",     /* U+D7FF, just below the surrogates */
    "\xEF\xBF\xBF",     /* U+FFFF */
    "\xF0\x9F\x98\x80", /* 😀 U+1F600 */
    "\xF0\x90\x80\x80", /* U+10000, smallest 4-byte */
    "\xF4\x8F\xBF\xBF", /* U+10FFFF, largest */
};
#define N_CHARS (sizeof k_chars / sizeof k_chars[0])

static void test_stable_complete_multibyte(void **state)
{
    (void)state;
    char buf[32];
    for (size_t c = 0; c < N_CHARS; c++) {
        size_t l = strlen(k_chars[c]);
        /* alone */
        assert_int_equal(chat_utf8_stable_len(k_chars[c], l), l);
        /* after ASCII and followed by ASCII */
        memcpy(buf, "ab", 2);
        memcpy(buf + 2, k_chars[c], l);
        assert_int_equal(chat_utf8_stable_len(buf, 2 + l), 2 + l);
        buf[2 + l] = 'z';
        assert_int_equal(chat_utf8_stable_len(buf, 3 + l), 3 + l);
        /* two in a row */
        memcpy(buf + 2 + l, k_chars[c], l);
        assert_int_equal(chat_utf8_stable_len(buf, 2 + 2 * l), 2 + 2 * l);
    }
}

static void test_stable_truncated_held_back(void **state)
{
    (void)state;
    char buf[32];
    for (size_t c = 0; c < N_CHARS; c++) {
        size_t l = strlen(k_chars[c]);
        for (size_t cut = 1; cut < l; cut++) {
            /* alone: nothing is stable */
            assert_int_equal(chat_utf8_stable_len(k_chars[c], cut), 0);
            /* after ASCII: the ASCII is stable, the partial char is not */
            memcpy(buf, "xyz", 3);
            memcpy(buf + 3, k_chars[c], cut);
            assert_int_equal(chat_utf8_stable_len(buf, 3 + cut), 3);
            /* after a complete multi-byte char */
            size_t l0 = strlen(k_chars[0]);
            memcpy(buf, k_chars[0], l0);
            memcpy(buf + l0, k_chars[c], cut);
            assert_int_equal(chat_utf8_stable_len(buf, l0 + cut), l0);
            /* after a complete 4-byte char */
            memcpy(buf, "\xF0\x9F\x98\x80", 4);
            memcpy(buf + 4, k_chars[c], cut);
            assert_int_equal(chat_utf8_stable_len(buf, 4 + cut), 4);
        }
    }
}

static void test_stable_invalid_not_held(void **state)
{
    (void)state;
    /* bytes that can never start a valid sequence are not waited for */
    assert_int_equal(chat_utf8_stable_len(S("a\xFF")), 2);
    assert_int_equal(chat_utf8_stable_len(S("a\xFE")), 2);
    assert_int_equal(chat_utf8_stable_len(S("a\xC0")), 2); /* overlong lead */
    assert_int_equal(chat_utf8_stable_len(S("a\xC1")), 2);
    assert_int_equal(chat_utf8_stable_len(S("a\xF5")), 2); /* > U+10FFFF lead */
    assert_int_equal(chat_utf8_stable_len(S("a\xF8")), 2);
    /* lone continuation bytes */
    assert_int_equal(chat_utf8_stable_len(S("a\x80")), 2);
    assert_int_equal(chat_utf8_stable_len(S("\x80\x80\x80")), 3);
    assert_int_equal(chat_utf8_stable_len(S("\xBF\xBF\xBF\xBF")), 4);
    /* a prefix that is already invalid cannot complete */
    assert_int_equal(chat_utf8_stable_len(S("a\xE0\x80")), 3);     /* overlong */
    assert_int_equal(chat_utf8_stable_len(S("a\xED\xA0")), 3);     /* surrogate */
    assert_int_equal(chat_utf8_stable_len(S("a\xF0\x80")), 3);     /* overlong */
    assert_int_equal(chat_utf8_stable_len(S("a\xF4\x90")), 3);     /* > U+10FFFF */
    assert_int_equal(chat_utf8_stable_len(S("a\xF4\x90\x80")), 4); /* > U+10FFFF */
    assert_int_equal(chat_utf8_stable_len(S("a\xE2\x41")), 3);     /* not a continuation */
    assert_int_equal(chat_utf8_stable_len(S("a\xF0\x9F\x41")), 4);
    /* a lead byte followed by another lead byte: the last one is held */
    assert_int_equal(chat_utf8_stable_len(S("a\xE2\xC3")), 2);
}

/* ---- chat_utf8_valid ---- */

static void test_valid(void **state)
{
    (void)state;
    assert_true(chat_utf8_valid("", 0));
    assert_true(chat_utf8_valid(S("plain ascii")));
    for (size_t c = 0; c < N_CHARS; c++) {
        size_t l = strlen(k_chars[c]);
        assert_true(chat_utf8_valid(k_chars[c], l));
        for (size_t cut = 1; cut < l; cut++) assert_false(chat_utf8_valid(k_chars[c], cut));
    }
    assert_false(chat_utf8_valid(S("a\x80")));
    assert_false(chat_utf8_valid(S("\xC0\x80")));
    assert_false(chat_utf8_valid(S("\xE0\x80\x80")));
    assert_false(chat_utf8_valid(S("\xED\xA0\x80")));
    assert_false(chat_utf8_valid(S("\xF4\x90\x80\x80")));
    assert_false(chat_utf8_valid(S("\xF5\x80\x80\x80")));
    assert_false(chat_utf8_valid(S("\xFF")));
    assert_false(chat_utf8_valid("a\0b", 3)); /* NUL is not allowed */
}

/* ---- chat_utf8_append_sanitized ---- */

static void sanitize(const char *in, size_t n, char **out, size_t *len)
{
    size_t cap = 0;
    *out = NULL;
    *len = 0;
    assert_int_equal(chat_utf8_append_sanitized(out, len, &cap, in, n), 0);
    assert_non_null(*out);
    assert_true(cap > *len);
    assert_int_equal((*out)[*len], 0);
    assert_true(chat_utf8_valid(*out, *len));
}

static void expect_sanitized(const char *in, size_t n, const char *want, size_t want_n)
{
    char *out;
    size_t len;
    sanitize(in, n, &out, &len);
    assert_int_equal(len, want_n);
    assert_memory_equal(out, want, want_n);
    free(out);
}

static void test_sanitize_valid_unchanged(void **state)
{
    (void)state;
    expect_sanitized(S(""), S(""));
    expect_sanitized(S("hello"), S("hello"));
    const char mix[] = "a\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF z";
    expect_sanitized(S(mix), S(mix));
    for (size_t c = 0; c < N_CHARS; c++)
        expect_sanitized(k_chars[c], strlen(k_chars[c]), k_chars[c], strlen(k_chars[c]));
    /* U+FFFD itself is valid */
    expect_sanitized(S(FFFD), S(FFFD));
}

static void test_sanitize_invalid(void **state)
{
    (void)state;
    expect_sanitized(S("a\x80z"), S("a" FFFD "z"));             /* lone continuation */
    expect_sanitized(S("\xBF"), S(FFFD));
    expect_sanitized(S("a\xC0\x80z"), S("a" FFFD FFFD "z"));    /* overlong NUL */
    expect_sanitized(S("\xC1\xBF"), S(FFFD FFFD));              /* overlong */
    expect_sanitized(S("\xE0\x80\xAF"), S(FFFD FFFD FFFD));     /* overlong '/' */
    expect_sanitized(S("\xF0\x80\x80\xAF"), S(FFFD FFFD FFFD FFFD));
    expect_sanitized(S("\xED\xA0\x80"), S(FFFD FFFD FFFD));     /* surrogate D800 */
    expect_sanitized(S("\xED\xBF\xBF"), S(FFFD FFFD FFFD));     /* surrogate DFFF */
    expect_sanitized(S("\xF4\x90\x80\x80"), S(FFFD FFFD FFFD FFFD)); /* U+110000 */
    expect_sanitized(S("\xF5\x80\x80\x80"), S(FFFD FFFD FFFD FFFD));
    expect_sanitized(S("\xFF\xFE"), S(FFFD FFFD));
    expect_sanitized("a\0b", 3, S("a" FFFD "b"));                 /* NUL byte */
    expect_sanitized(S("\xE2\x82z"), S(FFFD FFFD "z"));          /* truncated, then ASCII */
    /* a truncated tail (the engine's final flush) is replaced too */
    char *out;
    size_t len;
    sanitize(S("ok\xF0\x9F\x98"), &out, &len);
    assert_memory_equal(out, "ok", 2);
    assert_true(len > 2);
    assert_null(memchr(out, 0xF0, len));
    free(out);
    /* valid characters around invalid bytes survive */
    expect_sanitized(S("\xC3\xA9\x80\xE2\x82\xAC"), S("\xC3\xA9" FFFD "\xE2\x82\xAC"));
}

static void test_sanitize_appends(void **state)
{
    (void)state;
    char *out = NULL;
    size_t len = 0, cap = 0;
    assert_int_equal(chat_utf8_append_sanitized(&out, &len, &cap, S("ab")), 0);
    assert_int_equal(chat_utf8_append_sanitized(&out, &len, &cap, S("\xFF")), 0);
    assert_int_equal(chat_utf8_append_sanitized(&out, &len, &cap, S("\xC3\xA9")), 0);
    assert_int_equal(chat_utf8_append_sanitized(&out, &len, &cap, "", 0), 0);
    assert_int_equal(len, 2 + 3 + 2);
    assert_memory_equal(out, "ab" FFFD "\xC3\xA9", len + 1);
    /* worst case growth: every byte becomes 3 */
    char bad[1000];
    memset(bad, 0x80, sizeof bad);
    assert_int_equal(chat_utf8_append_sanitized(&out, &len, &cap, bad, sizeof bad), 0);
    assert_int_equal(len, 7 + 3 * sizeof bad);
    assert_true(cap > len);
    assert_true(chat_utf8_valid(out, len));
    free(out);
}

static void test_sanitize_random_always_valid(void **state)
{
    (void)state;
    uint32_t x = 12345;
    unsigned char in[64];
    for (int iter = 0; iter < 5000; iter++) {
        size_t n = (size_t)(iter % 64);
        for (size_t i = 0; i < n; i++) {
            x = x * 1664525u + 1013904223u;
            /* bias toward the interesting high bytes */
            in[i] = (unsigned char)((x >> 24) | ((iter & 1) ? 0x80 : 0));
        }
        char *out;
        size_t len;
        sanitize((const char *)in, n, &out, &len);
        /* valid input is returned unchanged */
        if (chat_utf8_valid((const char *)in, n)) {
            assert_int_equal(len, n);
            assert_memory_equal(out, in, n);
        }
        /* the stable prefix followed by its tail sanitises to the same text
         * as the whole: holding back does not change the result */
        size_t st = chat_utf8_stable_len((const char *)in, n);
        assert_true(st <= n);
        assert_true(n - st <= 3);
        char *o2 = NULL;
        size_t l2 = 0, c2 = 0;
        assert_int_equal(chat_utf8_append_sanitized(&o2, &l2, &c2, (const char *)in, st), 0);
        assert_int_equal(chat_utf8_append_sanitized(&o2, &l2, &c2, (const char *)in + st, n - st), 0);
        assert_true(chat_utf8_valid(o2, l2));
        assert_int_equal(l2, len);
        assert_memory_equal(o2, out, len);
        free(o2);
        free(out);
    }
}

/* ---- chat_stop_find ---- */

static void test_stop_find(void **state)
{
    (void)state;
    char *stops[] = {"</s>", "END", "\n\n"};
    const char t[] = "hello END and </s> more";
    assert_int_equal(chat_stop_find(S(t), 0, stops, 3), 6);
    /* earliest wins regardless of the order of the stop list */
    char *rev[] = {"\n\n", "</s>", "END"};
    assert_int_equal(chat_stop_find(S(t), 0, rev, 3), 6);
    const char t2[] = "a</s>b END";
    assert_int_equal(chat_stop_find(S(t2), 0, stops, 3), 1);
    /* from: matches before it are ignored, a match starting at it counts */
    assert_int_equal(chat_stop_find(S(t), 7, stops, 3), 14);
    assert_int_equal(chat_stop_find(S(t), 6, stops, 3), 6);
    assert_int_equal(chat_stop_find(S(t), 15, stops, 3), -1);
    assert_int_equal(chat_stop_find(S(t), sizeof t - 1, stops, 3), -1);
    assert_int_equal(chat_stop_find(S(t), sizeof t + 10, stops, 3), -1);
    /* none */
    assert_int_equal(chat_stop_find(S("nothing here"), 0, stops, 3), -1);
    assert_int_equal(chat_stop_find(S("anything"), 0, stops, 0), -1);
    assert_int_equal(chat_stop_find("", 0, 0, stops, 3), -1);
    /* stop longer than the text */
    char *longstop[] = {"this stop is long"};
    assert_int_equal(chat_stop_find(S("this"), 0, longstop, 1), -1);
    assert_int_equal(chat_stop_find(S("this stop is long"), 0, longstop, 1), 0);
    /* at the very end */
    assert_int_equal(chat_stop_find(S("abcEND"), 0, stops, 3), 3);
    /* n bounds the search: a stop that crosses n is not found */
    assert_int_equal(chat_stop_find("abcEND", 5, 0, stops, 3), -1);
    /* an empty stop string never matches */
    char *empty[] = {"", "x"};
    assert_int_equal(chat_stop_find(S("abc"), 0, empty, 2), -1);
    assert_int_equal(chat_stop_find(S("abx"), 0, empty, 2), 2);
    /* overlapping stops: the one starting first wins */
    char *ov[] = {"bcd", "abc"};
    assert_int_equal(chat_stop_find(S("zabcd"), 0, ov, 2), 1);
    /* bytes, not C strings: text may hold NUL */
    assert_int_equal(chat_stop_find("a\0bEND", 6, 0, stops, 3), 3);
}

/* ---- chat_stop_holdback ---- */

static void test_stop_holdback(void **state)
{
    (void)state;
    char *stops[] = {"</s>"};
    assert_int_equal(chat_stop_holdback(S("hello"), stops, 1), 0);
    assert_int_equal(chat_stop_holdback(S("hello<"), stops, 1), 1);
    assert_int_equal(chat_stop_holdback(S("hello</"), stops, 1), 2);
    assert_int_equal(chat_stop_holdback(S("hello</s"), stops, 1), 3);
    /* the full stop is found by chat_stop_find, not held back */
    assert_int_equal(chat_stop_holdback(S("hello</s>"), stops, 1), 0);
    /* a prefix that did not continue is not held */
    assert_int_equal(chat_stop_holdback(S("a</x"), stops, 1), 0);
    /* the text is shorter than the prefix */
    assert_int_equal(chat_stop_holdback(S("</"), stops, 1), 2);
    assert_int_equal(chat_stop_holdback("", 0, stops, 1), 0);
    assert_int_equal(chat_stop_holdback(S("abc"), stops, 0), 0);

    /* several stops: the longest matching prefix */
    char *multi[] = {"ab", "xxab", "abc!"};
    assert_int_equal(chat_stop_holdback(S("zzxxa"), multi, 3), 3); /* "xxa" of "xxab" */
    assert_int_equal(chat_stop_holdback(S("zzab"), multi, 3), 2);  /* "ab" of "abc!" */
    assert_int_equal(chat_stop_holdback(S("zzabc"), multi, 3), 3); /* "abc" of "abc!" */
    assert_int_equal(chat_stop_holdback(S("zza"), multi, 3), 1);
    char *order[] = {"abcd", "cx"};
    assert_int_equal(chat_stop_holdback(S("abc"), order, 2), 3);
    char *order2[] = {"cx", "abcd"};
    assert_int_equal(chat_stop_holdback(S("abc"), order2, 2), 3);

    /* repeated characters: the longest proper prefix, not the first */
    char *rep[] = {"aaab"};
    assert_int_equal(chat_stop_holdback(S("xaaa"), rep, 1), 3);
    assert_int_equal(chat_stop_holdback(S("aaaa"), rep, 1), 3);
    assert_int_equal(chat_stop_holdback(S("xaa"), rep, 1), 2);

    /* an empty stop holds nothing */
    char *empty[] = {""};
    assert_int_equal(chat_stop_holdback(S("abc"), empty, 1), 0);

    /* a single-byte stop never needs hold-back */
    char *one[] = {"\n"};
    assert_int_equal(chat_stop_holdback(S("abc"), one, 1), 0);
}

/* streaming invariant: emit text[0..n - holdback) as bytes arrive, and no
 * emitted byte is ever part of a stop string found later */
static void test_stop_streaming_invariant(void **state)
{
    (void)state;
    char *stops[] = {"<|end|>", "\n\nUser:"};
    const char text[] = "Hi there <|en <|end no\n\nUse and \n\nUser: tail";
    size_t n_text = sizeof text - 1;
    long stop_at = chat_stop_find(text, n_text, 0, stops, 2);
    assert_true(stop_at > 0);
    size_t emitted = 0;
    for (size_t n = 1; n <= n_text; n++) {
        long f = chat_stop_find(text, n, 0, stops, 2);
        if (f >= 0) {
            assert_int_equal(f, stop_at);
            assert_true(emitted <= (size_t)f);
            break;
        }
        size_t safe = n - chat_stop_holdback(text, n, stops, 2);
        if (safe > emitted) emitted = safe;
        assert_true(emitted <= (size_t)stop_at);
    }
    assert_int_equal(emitted, (size_t)stop_at);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stable_ascii),
        cmocka_unit_test(test_stable_complete_multibyte),
        cmocka_unit_test(test_stable_truncated_held_back),
        cmocka_unit_test(test_stable_invalid_not_held),
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_sanitize_valid_unchanged),
        cmocka_unit_test(test_sanitize_invalid),
        cmocka_unit_test(test_sanitize_appends),
        cmocka_unit_test(test_sanitize_random_always_valid),
        cmocka_unit_test(test_stop_find),
        cmocka_unit_test(test_stop_holdback),
        cmocka_unit_test(test_stop_streaming_invariant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
