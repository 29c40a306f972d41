/* Unit: the hub's pure checks (names, versions, package paths), strict
 * base64, Cerebrum's version order, and the stored zip it writes for
 * Cerebrum's cache (read back by Python's zipfile when python3 exists). */
#include "hub/hub.h"
#include "util/err.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void test_names(void **state)
{
    (void)state;
    assert_true(hub_name_ok("example"));
    assert_true(hub_name_ok("stability-ai"));
    assert_true(hub_name_ok("a.b_c"));
    assert_false(hub_name_ok(""));
    assert_false(hub_name_ok(NULL));
    assert_false(hub_name_ok(".hidden"));
    assert_false(hub_name_ok(".."));
    assert_false(hub_name_ok("a/b"));
    assert_false(hub_name_ok("a b"));
    char longname[80];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    assert_false(hub_name_ok(longname));
}

static void test_versions(void **state)
{
    (void)state;
    assert_true(hub_version_ok("0.0.1"));
    assert_true(hub_version_ok("1"));
    assert_true(hub_version_ok("1.2.3.4"));
    assert_false(hub_version_ok("1.2.3.4.5"));
    assert_false(hub_version_ok("1..2"));
    assert_false(hub_version_ok("1.2."));
    assert_false(hub_version_ok("v1"));
    assert_false(hub_version_ok("1.0-beta"));
    assert_false(hub_version_ok("../1"));
    assert_false(hub_version_ok(""));
    assert_true(hub_version_cmp("0.0.10", "0.0.9") > 0);
    assert_true(hub_version_cmp("1.0", "1.0.0") == 0);
    assert_true(hub_version_cmp("1.1.7", "1.2") < 0);
    assert_true(hub_version_cmp("2", "10") < 0);
}

static void test_paths(void **state)
{
    (void)state;
    assert_true(hub_path_ok("tool.py"));
    assert_true(hub_path_ok("pkg/sub/mod.py"));
    assert_true(hub_path_ok("..a"));
    assert_false(hub_path_ok("../x"));
    assert_false(hub_path_ok("a/../../x"));
    assert_false(hub_path_ok("/etc/passwd"));
    assert_false(hub_path_ok("a//b"));
    assert_false(hub_path_ok("./a"));
    assert_false(hub_path_ok("a/"));
    assert_false(hub_path_ok("a\\b"));
    assert_false(hub_path_ok("a\nb"));
    assert_false(hub_path_ok(""));
}

static void test_b64(void **state)
{
    (void)state;
    size_t n = 0;
    unsigned char *d = hub_b64_decode("aGVsbG8=", 8, &n);
    assert_non_null(d);
    assert_int_equal(n, 5);
    assert_memory_equal(d, "hello", 5);
    free(d);
    d = hub_b64_decode("aGVsbG8", 7, &n); /* padding optional */
    assert_non_null(d);
    assert_int_equal(n, 5);
    free(d);
    d = hub_b64_decode("", 0, &n);
    assert_non_null(d);
    assert_int_equal(n, 0);
    free(d);
    assert_null(hub_b64_decode("aGVs bG8=", 9, &n));
    assert_null(hub_b64_decode("a", 1, &n));
    assert_null(hub_b64_decode("!!!!", 4, &n));
}

static void test_zip(void **state)
{
    (void)state;
    char dir[] = "/tmp/aios-hub-zip-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], err[256] = "";
    snprintf(path, sizeof path, "%s/t.zip", dir);
    const char *meta = "{\"entry\":\"tool.py\"}";
    struct hub_zip_entry e[] = {
        {"metadata.json", (const unsigned char *)meta, strlen(meta)},
        {"pkg/tool.py", (const unsigned char *)"x = 1\n", 6},
        {"empty.txt", (const unsigned char *)"", 0},
    };
    assert_int_equal(hub_zip_write(path, e, 3, err, sizeof err), 0);
    /* it does not overwrite */
    assert_int_not_equal(hub_zip_write(path, e, 3, err, sizeof err), 0);
    if (system("python3 -c 'import zipfile' >/dev/null 2>&1") == 0) {
        char cmd[512];
        snprintf(cmd, sizeof cmd,
                 "python3 -c \"import zipfile,sys; z=zipfile.ZipFile('%s'); "
                 "assert z.testzip() is None; "
                 "assert z.namelist()==['metadata.json','pkg/tool.py','empty.txt']; "
                 "assert z.read('pkg/tool.py')==b'x = 1\\n'; "
                 "assert z.read('metadata.json')==b'%s'\"",
                 path, "{\\\"entry\\\":\\\"tool.py\\\"}");
        assert_int_equal(system(cmd), 0);
    }
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),   cmocka_unit_test(test_versions),
        cmocka_unit_test(test_paths),   cmocka_unit_test(test_b64),
        cmocka_unit_test(test_zip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
