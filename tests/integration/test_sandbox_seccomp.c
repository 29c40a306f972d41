/* Integration test of the tool sandbox's seccomp filter (src/tools/
 * seccomp.c): a real kernel runs a real tool under bwrap; the tool tries
 * ptrace, unshare, mount, kexec_load, setns and clone with a namespace flag
 * (each must fail with EPERM) and fork and a file write in its private
 * /tmp (which must still work). The kernel keeps serving. Skipped where
 * bwrap cannot build a sandbox at all. */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef AIOS_SECCOMP_PROBE
#error "built by tests/CMakeLists.txt with AIOS_SECCOMP_PROBE"
#endif

static void test_seccomp_filter(void **state)
{
    (void)state;
    char dir[] = "/tmp/aios-seccomp-cfg-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[300];
    snprintf(path, sizeof path, "%s/config.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("tools:\n"
          "  external:\n"
          "    - name: test/seccomp\n"
          "      command: " AIOS_SECCOMP_PROBE "\n"
          "      parameters: {type: object}\n", f);
    fclose(f);
    const char *extra[] = {"--config", path, NULL};
    struct kernel_fixture *kf = kf_start(extra);
    json_t *j = NULL;
    assert_int_equal(kf_call(kf, "GET", "/tools", NULL, &j), 200);
    json_t *sb = json_object_get(j, "sandbox");
    bool bwrap = json_is_true(json_object_get(sb, "bwrap"));
    bool seccomp = json_is_true(json_object_get(sb, "seccomp"));
    json_decref(j);
    if (!bwrap) {
        fprintf(stderr, "WARNING: bwrap unusable here; seccomp test skipped\n");
        kf_stop(kf);
        skip();
    }
    /* where bwrap works, the filter must be on (x86_64 / aarch64) */
    assert_true(seccomp);
    long st = kf_call(kf, "POST", "/query",
                      "{\"agent_name\":\"sc\",\"query_type\":\"tool\",\"query_data\":{\"tool_calls\":"
                      "[{\"name\":\"test/seccomp\",\"parameters\":{}}]}}", &j);
    if (st != 200) {
        char *d = j ? json_dumps(j, 0) : NULL;
        fprintf(stderr, "tool call: %ld %s\n", st, d ? d : "");
        free(d);
    }
    assert_int_equal(st, 200);
    json_t *r = json_object_get(
        json_array_get(json_object_get(json_object_get(j, "response"), "tool_results"), 0),
        "result");
    char *d = json_dumps(r, 0);
    fprintf(stderr, "probe: %s\n", d ? d : "?");
    free(d);
    static const char *const refused[] = {"ptrace", "unshare_user", "mount", "kexec", "setns",
                                          "clone_newns"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        json_t *v = json_object_get(r, refused[i]);
        assert_true(json_is_integer(v));
        if (json_integer_value(v) != EPERM)
            fail_msg("%s: errno %lld, expected EPERM", refused[i],
                     (long long)json_integer_value(v));
    }
    assert_int_equal(json_integer_value(json_object_get(r, "fork")), 0);
    assert_int_equal(json_integer_value(json_object_get(r, "write")), 0);
    json_decref(j);
    assert_int_equal(kf_call(kf, "GET", "/status", NULL, NULL), 200);
    kf_stop(kf);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seccomp_filter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
