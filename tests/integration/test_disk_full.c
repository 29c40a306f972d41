/* Integration: a full disk is the writer's problem, not everyone's. The
 * storage root lives on a small tmpfs (24 MiB; the test needs root to mount
 * it and skips otherwise):
 *  - with storage.reserve_bytes (8 MiB), one agent's writes succeed until
 *    the next would eat into the reserve, then answer 507
 *    insufficient_storage naming storage.reserve_bytes; nothing of that
 *    write is left; reads and other agents' memory calls keep working,
 *    and the disk keeps room (at least 1 MiB of the 8 MiB reserve);
 *  - with no reserve, the disk itself fills: the write that hits ENOSPC
 *    (or SQLite's "database or disk is full") is a 507 too, never a 500,
 *    and the kernel keeps serving. */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

static char g_mnt[64];
static bool g_mounted;

static int mount_small(void)
{
    snprintf(g_mnt, sizeof g_mnt, "/tmp/aios-full-XXXXXX");
    if (!mkdtemp(g_mnt)) return -1;
    if (mount("aios-full", g_mnt, "tmpfs", 0, "size=24m,mode=0700") != 0) {
        rmdir(g_mnt);
        return -1;
    }
    g_mounted = true;
    return 0;
}

static int group_setup(void **state)
{
    (void)state;
    mount_small(); /* not mounted: the tests skip */
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (g_mounted) {
        umount2(g_mnt, MNT_DETACH);
        rmdir(g_mnt);
    }
    return 0;
}

static long sq(const char *agent, const char *op, json_t *params, json_t **out)
{
    json_t *q = json_pack("{s:s,s:s,s:{s:s,s:o}}", "agent_name", agent, "query_type", "storage",
                          "query_data", "operation_type", op, "params", params);
    char *body = json_dumps(q, JSON_COMPACT);
    json_decref(q);
    long st = kf_call(g_kf, "POST", "/query", body, out);
    free(body);
    return st;
}

static long write_big(const char *agent, const char *path, size_t n, json_t **out)
{
    char *content = malloc(n + 1);
    assert_non_null(content);
    memset(content, 'x', n);
    content[n] = 0;
    long st = sq(agent, "write", json_pack("{s:s,s:s}", "file_path", path, "content", content), out);
    free(content);
    return st;
}

/* write files <prefix>0, <prefix>1, ... of size bytes until a write is
 * refused (at most max); that answer's status, its body in *j, the path
 * refused in path, and how many succeeded in *ok */
static long fill(const char *prefix, size_t size, int max, int *ok, json_t **j, char *path,
                 size_t pathlen)
{
    long st = 0;
    *ok = 0;
    for (int i = 0; i < max; i++) {
        snprintf(path, pathlen, "%s%d", prefix, i);
        st = write_big("filler", path, size, j);
        if (st != 200) break;
        json_decref(*j);
        *j = NULL;
        (*ok)++;
    }
    return st;
}

static void start_kernel(const char *sub, long long reserve)
{
    char yaml[512];
    snprintf(yaml, sizeof yaml,
             "storage:\n  root_dir: %s/%s\n  reserve_bytes: %lld\n  max_file_bytes: 16777216\n",
             g_mnt, sub, reserve);
    g_kf = kf_start_config(yaml);
}

static void test_reserve(void **state)
{
    (void)state;
    if (!g_mounted) skip();
    start_kernel("a", 8 << 20);
    json_t *j = NULL;
    int ok;
    char path[32];
    long st = fill("f", 3 << 20, 12, &ok, &j, path, sizeof path);
    assert_true(ok >= 1);
    assert_int_equal(st, 507);
    assert_error_body(j, "storage.reserve_bytes");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "type")),
                        "insufficient_storage");
    json_decref(j);
    /* the refused write left nothing */
    assert_int_equal(sq("filler", "read", json_pack("{s:s}", "file_path", path), &j), 404);
    json_decref(j);
    /* the rest of the kernel works: reads, another agent's memory */
    assert_int_equal(sq("filler", "read", json_pack("{s:s}", "file_path", "f0"), &j), 200);
    json_decref(j);
    assert_int_equal(kf_call(g_kf, "POST", "/query",
                             "{\"agent_name\":\"other\",\"query_type\":\"memory\",\"query_data\":"
                             "{\"operation_type\":\"add_memory\",\"params\":{\"content\":\"fine\"}}}",
                             &j), 200);
    json_decref(j);
    /* the reserve held: the disk still has room for the rest of the kernel */
    struct statvfs vf;
    assert_int_equal(statvfs(g_mnt, &vf), 0);
    long long avail = (long long)vf.f_bavail * (long long)vf.f_frsize;
    fprintf(stderr, "free on the storage disk after the refusal: %lld bytes\n", avail);
    assert_true(avail >= 1 << 20);
    kf_stop(g_kf);
    g_kf = NULL;
}

static void test_enospc(void **state)
{
    (void)state;
    if (!g_mounted) skip();
    start_kernel("b", 0);
    json_t *j = NULL;
    int ok;
    char path[32];
    long st = fill("g", 2 << 20, 40, &ok, &j, path, sizeof path);
    if (st != 507) {
        char *s = json_dumps(j, 0);
        fail_msg("after %d writes: expected 507, got %ld: %s", ok, st, s ? s : "");
    }
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "type")),
                        "insufficient_storage");
    json_decref(j);
    assert_int_equal(kf_call(g_kf, "GET", "/status", NULL, &j), 200);
    json_decref(j);
    kf_stop(g_kf);
    g_kf = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reserve),
        cmocka_unit_test(test_enospc),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
