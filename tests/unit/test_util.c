/* Unit tests of the shared helpers in src/util: percent-encoding, the
 * error-string helper, the FNV-1a hashes and the libcurl buffer sink. */
#include "util/err.h"
#include "util/util.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_pct_encode(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(util_pct_encode("alice_1-x.y", out, sizeof out), 0);
    assert_string_equal(out, "alice_1-x.y");
    assert_int_equal(util_pct_encode("me@host/a b", out, sizeof out), 0);
    assert_string_equal(out, "me%40host%2Fa%20b");
    /* a leading dot is encoded (never ".", ".." or a hidden name) */
    assert_int_equal(util_pct_encode("..", out, sizeof out), 0);
    assert_string_equal(out, "%2E.");
    assert_int_equal(util_pct_encode("\xc3\xa9", out, sizeof out), 0);
    assert_string_equal(out, "%C3%A9");
    assert_int_equal(util_pct_encode("", out, sizeof out), 0);
    assert_string_equal(out, "");
    /* too small: the encoded bytes and the NUL must fit */
    assert_int_equal(util_pct_encode("abc", out, 3), AIOS_EINVAL);
    assert_int_equal(util_pct_encode("abc", out, 4), 0);
    assert_int_equal(util_pct_encode("@", out, 3), AIOS_EINVAL);
    assert_int_equal(util_pct_encode("@", out, 4), 0);
    assert_string_equal(out, "%40");
}

static void test_errf(void **state)
{
    (void)state;
    char err[8];
    assert_int_equal(util_errf(err, sizeof err, AIOS_ECONFIG, "%s %d", "key", 12345), AIOS_ECONFIG);
    assert_string_equal(err, "key 123"); /* cut to the buffer */
    assert_int_equal(util_errf(NULL, 0, AIOS_EINVAL, "x"), AIOS_EINVAL);
    err[0] = 'z';
    assert_int_equal(util_errf(err, 0, AIOS_OK, "x"), AIOS_OK);
    assert_int_equal(err[0], 'z'); /* errlen 0: nothing written */
}

static void test_fnv1a(void **state)
{
    (void)state;
    /* the published FNV-1a test vectors */
    assert_true(util_fnv1a32("") == 0x811c9dc5u);
    assert_true(util_fnv1a32("a") == 0xe40c292cu);
    assert_true(util_fnv1a32("foobar") == 0xbf9cf968u);
    assert_true(util_fnv1a64("") == 0xcbf29ce484222325ull);
    assert_true(util_fnv1a64("a") == 0xaf63dc4c8601ec8cull);
    assert_true(util_fnv1a64("foobar") == 0x85944171f73967e8ull);
}

static void test_buf_sink(void **state)
{
    (void)state;
    struct util_buf b = {0};
    char chunk[1000];
    memset(chunk, 'x', sizeof chunk);
    for (int i = 0; i < 10; i++)
        assert_int_equal(util_buf_sink(chunk, 1, sizeof chunk, &b), sizeof chunk);
    assert_int_equal(util_buf_sink("ab", 2, 1, &b), 2);
    assert_int_equal(b.len, 10002);
    assert_true(b.cap > b.len);
    assert_int_equal(b.s[b.len], 0);
    assert_string_equal(b.s + 10000, "ab");
    free(b.s);
}

/* util_copy writes what snprintf("%s") writes */
static void test_copy(void **state)
{
    (void)state;
    static const char *srcs[] = {"", "a", "agent-7", "exactly8", "a longer string than the buffer", NULL};
    for (size_t i = 0; i < sizeof srcs / sizeof *srcs; i++) {
        for (size_t cap = 1; cap <= 12; cap++) {
            char a[16], b[16];
            memset(a, 'x', sizeof a);
            memset(b, 'x', sizeof b);
            util_copy(a, cap, srcs[i]);
            snprintf(b, cap, "%s", srcs[i] ? srcs[i] : "(null)");
            assert_memory_equal(a, b, sizeof a);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pct_encode),
        cmocka_unit_test(test_errf),
        cmocka_unit_test(test_fnv1a),
        cmocka_unit_test(test_buf_sink),
        cmocka_unit_test(test_copy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
