/* Unit tests for src/storage: SHA-256 against the FIPS vectors, the path
 * rules (every way out of the root refused with a clear message), agent
 * directory names, and the manager through sto_exec on a temp directory:
 * versions, pruning at max_versions, dedup of equal contents, rollback by
 * count and by time, symlinks planted inside a root, quotas, share grants
 * with expiry, and the crash repair of a file whose rename never happened. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sqlite3.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "storage/sha256.h"
#include "storage/sto_int.h"
#include "storage/storage.h"
#include "util/err.h"
#include "util/util.h"

/* ---- sha256 ---- */

static void test_sha256(void **state)
{
    (void)state;
    char hex[65];
    sto_sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sto_sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sto_sha256_hex(m, strlen(m), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* one million 'a', fed in odd-sized pieces */
    struct sto_sha256 c;
    char buf[997];
    memset(buf, 'a', sizeof buf);
    sto_sha256_init(&c);
    size_t left = 1000000;
    while (left) {
        size_t n = left < sizeof buf ? left : sizeof buf;
        sto_sha256_update(&c, buf, n);
        left -= n;
    }
    uint8_t d[32];
    sto_sha256_final(&c, d);
    char h2[65];
    for (int i = 0; i < 32; i++) snprintf(h2 + 2 * i, 3, "%02x", d[i]);
    assert_string_equal(h2, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* ---- path rules ---- */

static int norm(const char *p, size_t len, char *out, char *err)
{
    return sto_path_norm(p, len, false, out, STO_PATH_MAX + 1, err, 512);
}

static void expect_refused(const char *p, size_t len, const char *needle)
{
    char out[STO_PATH_MAX + 1], err[512] = "";
    int rc = norm(p, len, out, err);
    if (rc == 0) fail_msg("path '%.*s' was accepted as '%s'", (int)len, p, out);
    if (!strstr(err, needle)) fail_msg("message '%s' does not mention '%s'", err, needle);
}

static void test_path_norm(void **state)
{
    (void)state;
    char out[STO_PATH_MAX + 1], err[512];
    assert_int_equal(norm("./a//b/", 7, out, err), 0);
    assert_string_equal(out, "a/b");
    assert_int_equal(norm("notes/x.txt", 11, out, err), 0);
    assert_string_equal(out, "notes/x.txt");
    assert_int_equal(norm("a/.hidden/..b", 13, out, err), 0); /* "..b" is a name, not ".." */
    assert_string_equal(out, "a/.hidden/..b");
    assert_int_equal(sto_path_norm(".", 1, true, out, sizeof out, err, sizeof err), 0);
    assert_string_equal(out, "");

    expect_refused("..", 2, "'..'");
    expect_refused("a/../../etc/passwd", 18, "'..'");
    expect_refused("a/..", 4, "'..'");
    expect_refused("/etc/passwd", 11, "absolute");
    expect_refused("a\0b", 3, "NUL");
    expect_refused("a\nb", 3, "control character");
    expect_refused("", 0, "empty");
    expect_refused("./", 2, "empty");
    expect_refused(".~lsfs-123", 10, "reserved");

    char longname[300];
    memset(longname, 'x', sizeof longname);
    expect_refused(longname, 256, "limit is 255");
    assert_int_equal(norm(longname, 255, out, err), 0);

    char longpath[1100];
    for (size_t i = 0; i < sizeof longpath; i++) longpath[i] = i % 10 == 9 ? '/' : 'p';
    expect_refused(longpath, sizeof longpath, "limit is 1024");

    char deep[200] = "";
    for (int i = 0; i < 65; i++) strcat(deep, "d/");
    expect_refused(deep, strlen(deep), "more than 64");
}

static void test_agent_dirname(void **state)
{
    (void)state;
    char out[512];
    assert_int_equal(sto_agent_dirname("example/academic_agent", out, sizeof out), 0);
    assert_string_equal(out, "example%2Facademic_agent");
    assert_int_equal(sto_agent_dirname("..", out, sizeof out), 0);
    assert_string_equal(out, "%2E.");
    assert_int_equal(sto_agent_dirname(".lsfs", out, sizeof out), 0);
    assert_string_equal(out, "%2Elsfs");
    assert_int_equal(sto_agent_dirname("a b", out, sizeof out), 0);
    assert_string_equal(out, "a%20b");
    assert_int_equal(sto_agent_dirname("", out, sizeof out), AIOS_EINVAL);
    char big[200];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_int_equal(sto_agent_dirname(big, out, sizeof out), AIOS_EINVAL);
}

/* ---- the manager ---- */

struct fx {
    char dir[64];
    struct sto *s;
    struct sto_config c;
};

static struct fx *fx_open(int max_versions, int64_t quota_bytes, int64_t quota_files)
{
    struct fx *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/aios-sto-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char root[128];
    snprintf(root, sizeof root, "%s/root", f->dir);
    f->c.root_dir = strdup(root);
    f->c.max_versions = max_versions;
    f->c.quota_bytes = quota_bytes;
    f->c.quota_files = quota_files;
    f->c.max_file_bytes = 1 << 20;
    f->c.n_threads = 1;
    char err[512] = "";
    int rc = sto_open(&f->s, &f->c, err, sizeof err);
    if (rc) fail_msg("sto_open: %s", err);
    return f;
}

static void fx_reopen(struct fx *f)
{
    sto_close(f->s);
    char err[512] = "";
    if (sto_open(&f->s, &f->c, err, sizeof err)) fail_msg("sto_open: %s", err);
}

static void fx_close(struct fx *f)
{
    sto_close(f->s);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f->c.root_dir);
    free(f);
}

/* run an op; params as JSON text; returns the http status; *out kept if asked */
static int run(struct fx *f, const char *agent, const char *op, const char *params, json_t **out,
               char *err)
{
    json_t *p = json_loads(params, 0, NULL);
    assert_non_null(p);
    json_t *o = NULL;
    int http = 0;
    char e[1536] = "";
    int rc = sto_exec(f->s, agent, op, p, &o, &http, e, sizeof e);
    json_decref(p);
    if (rc) assert_int_not_equal(http, 200);
    if (err) snprintf(err, 1536, "%s", e);
    if (out) *out = o;
    else json_decref(o);
    return http;
}

static const char *content_of(struct fx *f, const char *agent, const char *path)
{
    static char buf[4096];
    char p[512];
    json_t *o;
    snprintf(p, sizeof p, "{\"file_path\":\"%s\"}", path);
    if (run(f, agent, "read", p, &o, NULL) != 200) return NULL;
    snprintf(buf, sizeof buf, "%s", json_string_value(json_object_get(o, "content")));
    json_decref(o);
    return buf;
}

static int count_rows(struct fx *f, const char *sql)
{
    char path[256];
    snprintf(path, sizeof path, "%s/root/.lsfs/lsfs.db", f->dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static void test_versions(void **state)
{
    (void)state;
    struct fx *f = fx_open(3, 0, 0);
    char p[256];
    for (int i = 1; i <= 5; i++) {
        snprintf(p, sizeof p, "{\"file_path\":\"d/v.txt\",\"content\":\"version %d\"}", i);
        assert_int_equal(run(f, "a", "write", p, NULL, NULL), 200);
    }
    assert_string_equal(content_of(f, "a", "d/v.txt"), "version 5");
    json_t *o;
    assert_int_equal(run(f, "a", "history", "{\"file_path\":\"d/v.txt\"}", &o, NULL), 200);
    json_t *v = json_object_get(o, "versions");
    assert_int_equal(json_array_size(v), 3); /* pruned to max_versions */
    assert_int_equal(json_integer_value(json_object_get(json_array_get(v, 0), "version")), 5);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(v, 2), "version")), 3);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(v, 0), "size")), 9);
    json_decref(o);
    /* pruned blobs are gone: 3 distinct contents left */
    assert_int_equal(count_rows(f, "SELECT count(*) FROM blobs"), 3);

    /* rollback 2 back: version 3's content, as a new version 6 */
    assert_int_equal(run(f, "a", "rollback", "{\"file_path\":\"d/v.txt\",\"n\":\"2\"}", &o, NULL), 200);
    assert_int_equal(json_integer_value(json_object_get(o, "version")), 6);
    assert_int_equal(json_integer_value(json_object_get(o, "restored_version")), 3);
    json_decref(o);
    assert_string_equal(content_of(f, "a", "d/v.txt"), "version 3");
    /* versions 4, 5, 6 remain (3 was pruned); 6 reuses 3's blob, which
     * therefore survived the pruning with one reference */
    assert_int_equal(count_rows(f, "SELECT count(*) FROM blobs"), 3);
    assert_int_equal(count_rows(f, "SELECT refs FROM blobs WHERE CAST(data AS TEXT) = 'version 3'"), 1);
    /* dedup: writing content that exists adds a reference, not a blob */
    assert_int_equal(run(f, "a", "write", "{\"file_path\":\"other.txt\",\"content\":\"version 5\"}", NULL, NULL), 200);
    assert_int_equal(count_rows(f, "SELECT count(*) FROM blobs"), 3);
    assert_int_equal(count_rows(f, "SELECT refs FROM blobs WHERE CAST(data AS TEXT) = 'version 5'"), 2);
    /* too far back */
    char err[1536];
    assert_int_equal(run(f, "a", "rollback", "{\"file_path\":\"d/v.txt\",\"n\":5}", NULL, err), 404);
    assert_non_null(strstr(err, "cannot go back 5"));
    assert_int_equal(run(f, "a", "rollback", "{\"file_path\":\"nope.txt\"}", NULL, err), 404);
    assert_int_equal(run(f, "a", "rollback", "{\"file_path\":\"d/v.txt\",\"time\":\"yesterday\"}", NULL, err), 400);

    /* by time: the newest version at or before t */
    assert_int_equal(run(f, "a", "write", "{\"file_path\":\"t.txt\",\"content\":\"old\"}", NULL, NULL), 200);
    usleep(20000);
    double t = (double)util_wall_us() / 1e6;
    usleep(20000);
    assert_int_equal(run(f, "a", "write", "{\"file_path\":\"t.txt\",\"content\":\"new\"}", NULL, NULL), 200);
    snprintf(p, sizeof p, "{\"file_path\":\"t.txt\",\"time\":%.6f}", t);
    assert_int_equal(run(f, "a", "rollback", p, NULL, NULL), 200);
    assert_string_equal(content_of(f, "a", "t.txt"), "old");
    /* ISO 8601 form */
    assert_int_equal(run(f, "a", "rollback", "{\"file_path\":\"t.txt\",\"time\":\"2001-01-01T00:00:00Z\"}", NULL, err), 404);
    assert_non_null(strstr(err, "no version at or before"));
    fx_close(f);
}

static void test_symlinks_inside_root(void **state)
{
    (void)state;
    struct fx *f = fx_open(5, 0, 0);
    assert_int_equal(run(f, "a", "write", "{\"file_path\":\"ok.txt\",\"content\":\"x\"}", NULL, NULL), 200);
    char outside[128], link[256], cmd[512];
    snprintf(outside, sizeof outside, "%s/outside", f->dir);
    assert_int_equal(mkdir(outside, 0755), 0);
    snprintf(cmd, sizeof cmd, "echo secret > %s/secret.txt", outside);
    assert_int_equal(system(cmd), 0);
    snprintf(link, sizeof link, "%s/root/a/evil", f->dir);
    assert_int_equal(symlink(outside, link), 0);
    snprintf(link, sizeof link, "%s/root/a/leak.txt", f->dir);
    snprintf(cmd, sizeof cmd, "%s/secret.txt", outside);
    assert_int_equal(symlink(cmd, link), 0);

    char err[1536];
    assert_int_equal(run(f, "a", "read", "{\"file_path\":\"evil/secret.txt\"}", NULL, err), 400);
    assert_non_null(strstr(err, "symbolic link"));
    assert_int_equal(run(f, "a", "read", "{\"file_path\":\"leak.txt\"}", NULL, err), 400);
    assert_non_null(strstr(err, "symbolic link"));
    assert_int_equal(run(f, "a", "write", "{\"file_path\":\"evil/new.txt\",\"content\":\"x\"}", NULL, err), 400);
    assert_int_equal(run(f, "a", "write", "{\"file_path\":\"leak.txt\",\"content\":\"x\"}", NULL, err), 400);
    assert_int_equal(run(f, "a", "list", "{\"dir_path\":\"evil\"}", NULL, err), 400);
    assert_int_equal(run(f, "a", "delete_dir", "{\"dir_path\":\"evil/x\"}", NULL, err), 400);
    /* nothing happened outside */
    snprintf(cmd, sizeof cmd, "%s/new.txt", outside);
    assert_int_equal(access(cmd, F_OK), -1);
    snprintf(cmd, sizeof cmd, "%s/secret.txt", outside);
    struct stat st;
    assert_int_equal(stat(cmd, &st), 0);
    assert_int_equal(st.st_size, 7);
    /* deleting the link itself is fine and does not touch the target */
    assert_int_equal(run(f, "a", "delete_file", "{\"file_path\":\"leak.txt\"}", NULL, err), 200);
    assert_int_equal(stat(cmd, &st), 0);
    fx_close(f);
}

static int64_t usage_bytes(struct fx *f, const char *agent)
{
    json_t *o;
    assert_int_equal(run(f, agent, "usage", "{}", &o, NULL), 200);
    int64_t b = json_integer_value(json_object_get(o, "bytes"));
    json_decref(o);
    return b;
}

/* The quota counts every kept version (each distinct content once per
 * agent) and the indexed text of current versions; a refused write leaves
 * nothing; deletes give the bytes back. */
static void test_quotas(void **state)
{
    (void)state;
    struct fx *f = fx_open(3, 300, 3);
    char err[1536], p[512], body[120];
    memset(body, 'x', 60);
    body[60] = 0;
    snprintf(p, sizeof p, "{\"file_path\":\"a\",\"content\":\"%s\"}", body);
    assert_int_equal(run(f, "q", "write", p, NULL, err), 200);
    assert_int_equal(usage_bytes(f, "q"), 120); /* 60 content + 60 indexed */
    /* a second version of a: the first still counts */
    memset(body, 'y', 60);
    snprintf(p, sizeof p, "{\"file_path\":\"a\",\"content\":\"%s\"}", body);
    assert_int_equal(run(f, "q", "write", p, NULL, err), 200);
    assert_int_equal(usage_bytes(f, "q"), 180);
    memset(body, 'z', 60);
    snprintf(p, sizeof p, "{\"file_path\":\"b\",\"content\":\"%s\"}", body);
    assert_int_equal(run(f, "q", "write", p, NULL, err), 200);
    assert_int_equal(usage_bytes(f, "q"), 300); /* exactly the quota */
    /* one byte more is refused before anything is written */
    assert_int_equal(run(f, "q", "write", "{\"file_path\":\"c\",\"content\":\"!\"}", NULL, err),
                     507);
    assert_non_null(strstr(err, "storage.quota_bytes"));
    assert_null(content_of(f, "q", "c"));
    assert_int_equal(usage_bytes(f, "q"), 300);
    /* content the agent already holds (a's first version) costs nothing */
    memset(body, 'x', 60);
    snprintf(p, sizeof p, "{\"file_path\":\"a\",\"content\":\"%s\"}", body);
    assert_int_equal(run(f, "q", "write", p, NULL, err), 200);
    assert_int_equal(usage_bytes(f, "q"), 300);
    /* other agents have their own quota */
    assert_int_equal(run(f, "r", "write", p, NULL, err), 200);
    assert_int_equal(usage_bytes(f, "r"), 120);
    /* deleting b gives its version and index back */
    assert_int_equal(run(f, "q", "delete_file", "{\"file_path\":\"b\"}", NULL, err), 200);
    assert_int_equal(usage_bytes(f, "q"), 180);
    assert_int_equal(count_rows(f, "SELECT count(*) FROM owner_blobs WHERE owner = 'q'"), 2);
    /* files quota */
    assert_int_equal(run(f, "q", "create_file", "{\"file_path\":\"e1\"}", NULL, err), 200);
    assert_int_equal(run(f, "q", "create_file", "{\"file_path\":\"e2\"}", NULL, err), 200);
    assert_int_equal(run(f, "q", "create_file", "{\"file_path\":\"e3\"}", NULL, err), 507);
    assert_non_null(strstr(err, "storage.quota_files"));
    /* deleting frees quota */
    assert_int_equal(run(f, "q", "delete_file", "{\"file_path\":\"e1\"}", NULL, err), 200);
    assert_int_equal(run(f, "q", "create_file", "{\"file_path\":\"e3\"}", NULL, err), 200);
    json_t *o;
    assert_int_equal(run(f, "q", "usage", "{}", &o, err), 200);
    assert_int_equal(json_integer_value(json_object_get(o, "bytes")), 180);
    assert_int_equal(json_integer_value(json_object_get(o, "files")), 3);
    json_decref(o);
    /* the accounting survives a restart and matches the tables */
    fx_reopen(f);
    assert_int_equal(usage_bytes(f, "q"), 180);
    fx_close(f);
}

/* A database of the earlier layout (user_version 0, usage of current
 * contents only, no per-agent content counts) is recounted at open. */
static void test_old_layout_recounted(void **state)
{
    (void)state;
    struct fx *f = fx_open(5, 0, 0);
    char err[1536];
    assert_int_equal(run(f, "o", "write", "{\"file_path\":\"a\",\"content\":\"1234\"}", NULL, err), 200);
    assert_int_equal(run(f, "o", "write", "{\"file_path\":\"a\",\"content\":\"56\"}", NULL, err), 200);
    assert_int_equal(usage_bytes(f, "o"), 4 + 2 + 2); /* two versions + "56" indexed */
    sto_close(f->s);
    char path[256];
    snprintf(path, sizeof path, "%s/root/.lsfs/lsfs.db", f->dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "DELETE FROM owner_blobs; UPDATE usage SET n_bytes = 2;"
                                      " UPDATE files SET n_index = 0; PRAGMA user_version = 0;",
                                  NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    char e2[512] = "";
    if (sto_open(&f->s, &f->c, e2, sizeof e2)) fail_msg("sto_open: %s", e2);
    assert_int_equal(usage_bytes(f, "o"), 8);
    assert_int_equal(count_rows(f, "SELECT count(*) FROM owner_blobs WHERE owner = 'o'"), 2);
    assert_int_equal(count_rows(f, "PRAGMA user_version"), 1);
    fx_close(f);
}

static int64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : 0;
}

/* 20 versions of a 200 KiB text file count 20 times (the attack:
 * a quota of current contents let them take 20 times the quota), and
 * deleting the file gives the space back to the filesystem: the database
 * and its log shrink. */
static void test_space_given_back(void **state)
{
    (void)state;
    enum { N = 200 * 1024, V = 20 };
    struct fx *f = fx_open(V, 0, 0);
    char *body = malloc(N + 1), *p = malloc(N + 64), err[1536];
    char db[256], wal[256];
    snprintf(db, sizeof db, "%s/root/.lsfs/lsfs.db", f->dir);
    snprintf(wal, sizeof wal, "%s/root/.lsfs/lsfs.db-wal", f->dir);
    unsigned seed = 7;
    for (int v = 0; v < V; v++) {
        for (int i = 0; i < N; i++) body[i] = (char)('a' + (rand_r(&seed) % 26));
        body[N] = 0;
        snprintf(p, N + 64, "{\"file_path\":\"big\",\"content\":\"%s\"}", body);
        assert_int_equal(run(f, "hog", "write", p, NULL, err), 200);
    }
    /* every version, and the current one's indexed text */
    assert_int_equal(usage_bytes(f, "hog"), (int64_t)V * N + N);
    int64_t before = file_size(db) + file_size(wal);
    assert_true(before > (int64_t)V * N);
    assert_int_equal(run(f, "hog", "delete_file", "{\"file_path\":\"big\"}", NULL, err), 200);
    assert_int_equal(usage_bytes(f, "hog"), 0);
    assert_int_equal(count_rows(f, "SELECT count(*) FROM blobs"), 0);
    int64_t after = file_size(db) + file_size(wal);
    print_message("storage database + log: %lld bytes with %d versions of %d bytes, %lld after "
                  "the delete\n", (long long)before, V, N, (long long)after);
    assert_true(after < before / 10);
    free(body);
    free(p);
    fx_close(f);
}

static void test_shares(void **state)
{
    (void)state;
    struct fx *f = fx_open(5, 0, 0);
    char err[1536];
    assert_int_equal(run(f, "a", "write", "{\"file_path\":\"p/x.txt\",\"content\":\"shared\"}", NULL, err), 200);
    assert_int_equal(run(f, "a", "write", "{\"file_path\":\"q/y.txt\",\"content\":\"private\"}", NULL, err), 200);
    assert_int_equal(sto_share_check(f->s, "a", "p/x.txt", "b", STO_MODE_READ), AIOS_ENOTFOUND);
    assert_int_equal(sto_share_grant(f->s, "a", "p", "b", STO_MODE_READ, 0, err, sizeof err), 0);
    assert_int_equal(sto_share_check(f->s, "a", "p/x.txt", "b", STO_MODE_READ), 0);
    assert_int_equal(sto_share_check(f->s, "a", "p", "b", STO_MODE_READ), 0);
    assert_int_equal(sto_share_check(f->s, "a", "p/x.txt", "b", STO_MODE_RW), AIOS_EPERM);
    assert_int_equal(sto_share_check(f->s, "a", "pp/x.txt", "b", STO_MODE_READ), AIOS_ENOTFOUND);
    assert_int_equal(sto_share_check(f->s, "a", "q/y.txt", "b", STO_MODE_READ), AIOS_ENOTFOUND);
    assert_int_equal(sto_share_check(f->s, "a", "p/x.txt", "c", STO_MODE_READ), AIOS_ENOTFOUND);
    /* expired grants count for nothing */
    assert_int_equal(sto_share_grant(f->s, "a", "q", "b", STO_MODE_RW, util_wall_us() - 1, err, sizeof err), 0);
    assert_int_equal(sto_share_check(f->s, "a", "q/y.txt", "b", STO_MODE_READ), AIOS_ENOTFOUND);
    assert_int_equal(sto_share_revoke(f->s, "a", "p", "b", err, sizeof err), 0);
    assert_int_equal(sto_share_check(f->s, "a", "p/x.txt", "b", STO_MODE_READ), AIOS_ENOTFOUND);
    assert_int_equal(sto_share_revoke(f->s, "a", "p", "b", err, sizeof err), AIOS_ENOTFOUND);
    fx_close(f);
}

static void test_crash_repair(void **state)
{
    (void)state;
    struct fx *f = fx_open(5, 0, 0);
    assert_int_equal(run(f, "a", "write", "{\"file_path\":\"d/f.txt\",\"content\":\"committed\"}", NULL, NULL), 200);
    /* the cleaner has synced the write and cleared its mark (else it
     * would clear the mark set below, as it should after a real sync) */
    for (int i = 0; i < 1000 && count_rows(f, "SELECT count(*) FROM files WHERE dirty = 1"); i++)
        usleep(10000);
    assert_int_equal(count_rows(f, "SELECT count(*) FROM files WHERE dirty = 1"), 0);
    /* simulate a crash after the commit, before the rename: the file on disk
     * is still the previous content and the row is marked dirty; plus a
     * stray temp file */
    char path[256], cmd[512];
    snprintf(path, sizeof path, "%s/root/a/d/f.txt", f->dir);
    FILE *fp = fopen(path, "w");
    fputs("torn-or-old", fp);
    fclose(fp);
    snprintf(cmd, sizeof cmd, "touch %s/root/a/d/.~lsfs-0000000000000001", f->dir);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s/root/.lsfs/lsfs.db", f->dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(cmd, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    assert_int_equal(sqlite3_exec(db, "UPDATE files SET dirty = 1", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    fx_reopen(f);
    assert_string_equal(content_of(f, "a", "d/f.txt"), "committed");
    snprintf(cmd, sizeof cmd, "%s/root/a/d/.~lsfs-0000000000000001", f->dir);
    assert_int_equal(access(cmd, F_OK), -1);
    assert_int_equal(count_rows(f, "SELECT count(*) FROM files WHERE dirty = 1"), 0);
    fx_close(f);
}

static void test_mount_imports(void **state)
{
    (void)state;
    struct fx *f = fx_open(5, 0, 0);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "mkdir -p %s/root/t/sub && echo tool output > %s/root/t/sub/out.txt", f->dir, f->dir);
    assert_int_equal(system(cmd), 0);
    json_t *o;
    assert_int_equal(run(f, "t", "mount", "{\"root\":\"/anywhere\"}", &o, NULL), 200);
    assert_int_equal(json_integer_value(json_object_get(o, "imported")), 1);
    json_decref(o);
    assert_int_equal(run(f, "t", "retrieve", "{\"query_text\":\"tool\",\"k\":2}", &o, NULL), 200);
    assert_int_equal(json_array_size(json_object_get(o, "results")), 1);
    json_decref(o);
    assert_int_equal(run(f, "t", "history", "{\"file_path\":\"sub/out.txt\"}", &o, NULL), 200);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(o, "versions"), 0), "kind")), "import");
    json_decref(o);
    fx_close(f);
}

/* retrieve's two passes (best row ids by score, then their columns) give
 * the same ranking as one ORDER BY bm25 LIMIT k over the caller's files,
 * checked against that query run on the database itself: two owners with
 * interleaved files, term frequencies 0 to 3, several queries and k. */
static void test_retrieve_topk_matches_reference(void **state)
{
    (void)state;
    struct fx *f = fx_open(5, 0, 0);
    const char *words[] = {"alpha", "beta", "gamma", "delta"};
    for (int i = 0; i < 60; i++) {
        char body[512] = "", params[700];
        for (int w = 0; w < 4; w++)
            for (int r = 0; r < (i * (w + 3) + w) % 4; r++) {
                strcat(body, words[w]);
                strcat(body, " ");
            }
        for (int pad = 0; pad < i % 7; pad++) strcat(body, "filler ");
        strcat(body, "end");
        snprintf(params, sizeof params, "{\"file_path\":\"doc%02d\",\"content\":\"%s\"}", i, body);
        assert_int_equal(run(f, i % 2 ? "own1" : "own2", "write", params, NULL, NULL), 200);
    }
    char path[256];
    snprintf(path, sizeof path, "%s/root/.lsfs/lsfs.db", f->dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    const char *queries[] = {"alpha", "beta gamma", "delta", "alpha delta gamma"};
    int n_checked = 0;
    for (int q = 0; q < 4; q++)
        for (int k = 1; k <= 30; k += 7) {
            char params[256];
            snprintf(params, sizeof params, "{\"query_text\":\"%s\",\"k\":%d}", queries[q], k);
            json_t *o;
            assert_int_equal(run(f, "own1", "retrieve", params, &o, NULL), 200);
            json_t *res = json_object_get(o, "results");
            /* the reference: FTS5's bm25 over own1's files, one pass */
            char match[128] = "";
            for (const char *p = queries[q]; *p; p++) {
                if (*p == ' ') strcat(match, " OR ");
                else strncat(match, p, 1);
            }
            sqlite3_stmt *st;
            assert_int_equal(sqlite3_prepare_v2(db,
                                                "SELECT f.path, bm25(fts) FROM fts JOIN files f ON f.id = fts.rowid"
                                                " WHERE fts MATCH ?1 AND fts.owner = 'own1'"
                                                " ORDER BY bm25(fts), f.id LIMIT ?2",
                                                -1, &st, NULL),
                             SQLITE_OK);
            sqlite3_bind_text(st, 1, match, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int(st, 2, k);
            size_t n = 0;
            while (sqlite3_step(st) == SQLITE_ROW) {
                json_t *r = json_array_get(res, n++);
                assert_non_null(r);
                /* same score at each rank (ties may come in either order) */
                double want = -sqlite3_column_double(st, 1);
                double got = json_real_value(json_object_get(r, "score"));
                assert_true(fabs(got - want) < 1e-9 * (1 + fabs(want)));
                assert_true(!strncmp(json_string_value(json_object_get(r, "file_path")), "doc", 3));
                n_checked++;
            }
            sqlite3_finalize(st);
            assert_int_equal(json_array_size(res), n);
            /* and every result is one of own1's (odd-numbered) files */
            for (size_t i = 0; i < n; i++) {
                const char *fp = json_string_value(json_object_get(json_array_get(res, i), "file_path"));
                assert_int_equal(atoi(fp + 3) % 2, 1);
            }
            json_decref(o);
        }
    assert_true(n_checked > 50);
    sqlite3_close(db);
    fx_close(f);
}

static void test_bad_params(void **state)
{
    (void)state;
    struct fx *f = fx_open(5, 0, 0);
    char err[1536];
    assert_int_equal(run(f, "a", "write", "{\"content\":\"x\"}", NULL, err), 400);
    assert_non_null(strstr(err, "file_path"));
    assert_int_equal(run(f, "a", "write", "{\"file_path\":\"x\"}", NULL, err), 400);
    assert_non_null(strstr(err, "content"));
    assert_int_equal(run(f, "a", "write", "{\"file_path\":7,\"content\":\"x\"}", NULL, err), 400);
    assert_int_equal(run(f, "a", "dance", "{}", NULL, err), 400);
    assert_non_null(strstr(err, "unknown storage operation_type"));
    assert_int_equal(run(f, "a", "retrieve", "{\"query_text\":\"!!!\"}", NULL, err), 400);
    assert_int_equal(run(f, "a", "retrieve", "{\"query_text\":\"x\",\"k\":0}", NULL, err), 400);
    /* no agent: a link, which needs a file that exists */
    assert_int_equal(run(f, "a", "share", "{\"file_path\":\"x\"}", NULL, err), 404);
    assert_non_null(strstr(err, "no such file"));
    assert_int_equal(run(f, "a", "share", "{\"dir_path\":\"\"}", NULL, err), 400);
    assert_non_null(strstr(err, "params.agent"));
    assert_int_equal(run(f, "a", "create_dir", "{\"dir_path\":\"d\"}", NULL, err), 200);
    assert_int_equal(run(f, "a", "write", "{\"file_path\":\"d\",\"content\":\"x\"}", NULL, err), 409);
    assert_int_equal(run(f, "a", "read", "{\"file_path\":\"d\"}", NULL, err), 409);
    assert_int_equal(run(f, "a", "delete_file", "{\"file_path\":\"d\"}", NULL, err), 409);
    char big[64];
    snprintf(big, sizeof big, "%s", "{\"file_path\":\"big\",\"content\":\"");
    json_t *p = json_pack("{s:s,s:s%}", "file_path", "big", "content", "", (size_t)0);
    char *blob = malloc((1 << 20) + 2);
    memset(blob, 'z', (1 << 20) + 1);
    json_object_set_new(p, "content", json_stringn(blob, (1 << 20) + 1));
    free(blob);
    json_t *o = NULL;
    int http;
    assert_int_equal(sto_exec(f->s, "a", "write", p, &o, &http, err, 1536), AIOS_ETOOBIG);
    assert_int_equal(http, 413);
    json_decref(p);
    fx_close(f);
}

/* ---- concurrency ---- */

struct same_file {
    struct fx *f;
    int t;
};

static void *same_file_writer(void *arg)
{
    struct same_file *w = arg;
    for (int i = 0; i < 15; i++) {
        char p[128];
        snprintf(p, sizeof p, "{\"file_path\":\"shared.txt\",\"content\":\"writer %d write %d\"}", w->t, i);
        json_t *j = json_loads(p, 0, NULL), *o = NULL;
        int http;
        char e[1536];
        if (sto_exec(w->f->s, "a", "write", j, &o, &http, e, sizeof e) != 0) abort();
        json_decref(o);
        json_decref(j);
    }
    return NULL;
}

/* Several threads write one file: every write is a distinct version, and
 * the newest version is what is on disk (the stripe orders commit and
 * rename together). */
static void test_concurrent_writes(void **state)
{
    (void)state;
    struct fx *f = fx_open(100, 0, 0);
    pthread_t th[4];
    struct same_file w[4];
    for (int t = 0; t < 4; t++) {
        w[t].f = f;
        w[t].t = t;
        assert_int_equal(pthread_create(&th[t], NULL, same_file_writer, &w[t]), 0);
    }
    for (int t = 0; t < 4; t++) pthread_join(th[t], NULL);
    json_t *o;
    assert_int_equal(run(f, "a", "history", "{\"file_path\":\"shared.txt\"}", &o, NULL), 200);
    json_t *v = json_object_get(o, "versions");
    assert_int_equal(json_array_size(v), 60);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(v, 0), "version")), 60);
    const char *disk = content_of(f, "a", "shared.txt");
    char hex[65];
    sto_sha256_hex(disk, strlen(disk), hex);
    assert_string_equal(json_string_value(json_object_get(json_array_get(v, 0), "sha256")), hex);
    json_decref(o);
    fx_close(f);
}

struct racer {
    char root[256], outside[256];
    volatile int stop;
    int swaps;
};

static void *swap_racer(void *arg)
{
    struct racer *r = arg;
    char d[300], lnk[300];
    snprintf(d, sizeof d, "%s/d", r->root);
    snprintf(lnk, sizeof lnk, "%s/lnk", r->root);
    if (symlink(r->outside, lnk) != 0) return NULL;
    while (!r->stop) {
        /* atomically: d becomes the link to outside, lnk the real directory */
        if (renameat2(AT_FDCWD, d, AT_FDCWD, lnk, RENAME_EXCHANGE) != 0) { perror("exchange 1"); break; }
        usleep(300);
        if (renameat2(AT_FDCWD, d, AT_FDCWD, lnk, RENAME_EXCHANGE) != 0) { perror("exchange 2"); break; }
        r->swaps++;
        usleep(300);
    }
    return NULL;
}

/* TOCTOU: while writes and reads go to d/..., another thread keeps
 * exchanging d with a link to a directory outside the root (atomically, with
 * renameat2 RENAME_EXCHANGE). Calls succeed or are refused, but nothing
 * lands outside and nothing is read from there. */
static char *slurp_at(int dirfd, const char *leaf)
{
    static char buf[256];
    int fd = openat(dirfd, leaf, O_RDONLY);
    if (fd < 0) return NULL;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    return buf;
}

static int count_entries(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", dir);
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (p && fscanf(p, "%d", &n) != 1) n = -1;
    if (p) pclose(p);
    return n;
}

/* A write's temp file takes the place of the old file (exchanged, the old
 * one removed: no temp file is left), makes a new file, and never takes
 * the place of a directory put there meanwhile: that answers an error and
 * the directory and what it holds stay. */
static void test_tmp_commit(void **state)
{
    (void)state;
    char dir[] = "/tmp/aios_commit_XXXXXX";
    assert_non_null(mkdtemp(dir));
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    assert_true(dfd >= 0);
    struct sto_tmp tmp;
    char err[256];
    assert_int_equal(sto_tmp_write(NULL, dfd, "old", 3, false, &tmp, err, sizeof err), 0);
    assert_int_equal(sto_tmp_commit(NULL, dfd, &tmp, "f", false, err, sizeof err), 0); /* new file */
    assert_string_equal(slurp_at(dfd, "f"), "old");
    assert_int_equal(sto_tmp_write(NULL, dfd, "newer", 5, false, &tmp, err, sizeof err), 0);
    assert_int_equal(sto_tmp_commit(NULL, dfd, &tmp, "f", false, err, sizeof err), 0); /* replaced */
    assert_string_equal(slurp_at(dfd, "f"), "newer");
    assert_int_equal(count_entries(dir), 1);
    assert_int_equal(mkdirat(dfd, "d", 0755), 0);
    int in = openat(dfd, "d/keep", O_WRONLY | O_CREAT, 0644);
    assert_true(in >= 0);
    close(in);
    assert_int_equal(sto_tmp_write(NULL, dfd, "x", 1, false, &tmp, err, sizeof err), 0);
    assert_int_equal(sto_tmp_commit(NULL, dfd, &tmp, "d", false, err, sizeof err), AIOS_EIO);
    struct stat st;
    assert_int_equal(fstatat(dfd, "d", &st, 0), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(fstatat(dfd, "d/keep", &st, 0), 0);
    assert_int_equal(count_entries(dir), 2); /* f and d: the temp file is gone */
    close(dfd);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static ino_t ino_at(int dirfd, const char *leaf)
{
    struct stat st;
    assert_int_equal(fstatat(dirfd, leaf, &st, AT_SYMLINK_NOFOLLOW), 0);
    return st.st_ino;
}

/* the one pool directory under dir/.lsfs/spare */
static void pool_dir(const char *dir, char *out, size_t n)
{
    char top[80];
    snprintf(top, sizeof top, "%s/.lsfs/spare", dir);
    DIR *d = opendir(top);
    assert_non_null(d);
    out[0] = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] == 'k') {
            assert_true(out[0] == 0);
            snprintf(out, n, "%s/%.32s", top, e->d_name);
        }
    closedir(d);
    assert_true(out[0] != 0);
}

static void put_spare(struct sto_spares *sp, int dfd, const char *leaf, const char *text, int want)
{
    struct sto_tmp t;
    char err[256];
    assert_int_equal(sto_tmp_write(sp, dfd, text, strlen(text), false, &t, err, sizeof err), 0);
    assert_true(t.spare > 0);
    assert_int_equal(sto_tmp_commit(sp, dfd, &t, leaf, false, err, sizeof err), want);
}

/* Writes through the spare pool (tmpfile.c): a replaced file's inode is
 * reused for a later write, cut to the new length; never while a
 * descriptor of it is open (the open read keeps the old content), never
 * when it has another link, never in place of a directory. Nothing is
 * left in the target directory, and a new pool starts empty. */
static void test_tmp_spares(void **state)
{
    (void)state;
    char dir[] = "/tmp/aios_spares_XXXXXX", sub[64], spd[128];
    assert_non_null(mkdtemp(dir));
    snprintf(sub, sizeof sub, "%s/a", dir);

    assert_int_equal(mkdir(sub, 0755), 0);
    char meta[64];
    snprintf(meta, sizeof meta, "%s/.lsfs", dir);
    assert_int_equal(mkdir(meta, 0755), 0);
    int rootfd = open(dir, O_RDONLY | O_DIRECTORY), dfd = open(sub, O_RDONLY | O_DIRECTORY);
    assert_true(rootfd >= 0 && dfd >= 0);
    struct sto_spares *sp = sto_spares_open(rootfd);
    assert_non_null(sp);
    pool_dir(dir, spd, sizeof spd); /* the only pool: this one's */
    put_spare(sp, dfd, "f", "old content", 0); /* a new file: the spare becomes it */
    assert_int_equal(count_entries(spd), 0);
    ino_t first = ino_at(dfd, "f");
    put_spare(sp, dfd, "f", "newer", 0); /* exchanged: the old file is idle */
    assert_string_equal(slurp_at(dfd, "f"), "newer");
    assert_int_equal(count_entries(spd), 1);
    put_spare(sp, dfd, "f", "x", 0); /* reuses the first inode, cut to 1 byte */
    assert_string_equal(slurp_at(dfd, "f"), "x");
    assert_true(ino_at(dfd, "f") == first);
    assert_int_equal(count_entries(sub), 1);

    /* a read that opened the file before it was replaced keeps it */
    int rd = openat(dfd, "f", O_RDONLY);
    assert_true(rd >= 0);
    put_spare(sp, dfd, "f", "second", 0); /* "x" is idle but open */
    put_spare(sp, dfd, "f", "third, longer than the rest", 0);
    char buf[64] = "";
    assert_int_equal(pread(rd, buf, sizeof buf - 1, 0), 1);
    assert_string_equal(buf, "x");
    assert_true(ino_at(dfd, "f") != first);
    close(rd);
    assert_string_equal(slurp_at(dfd, "f"), "third, longer than the rest");

    /* a file with another link is never reused */
    assert_int_equal(linkat(dfd, "f", dfd, "g", 0), 0);
    put_spare(sp, dfd, "f", "fourth", 0);
    for (int i = 0; i < 4; i++) put_spare(sp, dfd, "f", "more", 0);
    assert_string_equal(slurp_at(dfd, "g"), "third, longer than the rest");
    assert_string_equal(slurp_at(dfd, "f"), "more");

    /* never in a directory's place; the spare goes back to the pool */
    assert_int_equal(mkdirat(dfd, "d", 0755), 0);
    int n_spare = count_entries(spd);
    put_spare(sp, dfd, "d", "y", AIOS_EIO);
    struct stat st;
    assert_int_equal(fstatat(dfd, "d", &st, 0), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(count_entries(spd), n_spare);
    assert_int_equal(count_entries(sub), 3); /* f, g, d */
    assert_int_equal(count_entries(spd), n_spare);

    /* many writes in flight at once: at most 64 idle spares are kept, and
     * every file ends with its own content */
    for (int round = 0; round < 3; round++) {
        struct sto_tmp many[70];
        char text[70][32], err[256], leafn[16];
        for (int i = 0; i < 70; i++) {
            snprintf(text[i], sizeof text[i], "round %d file %d", round, i);
            assert_int_equal(sto_tmp_write(sp, dfd, text[i], strlen(text[i]), false, &many[i], err,
                                           sizeof err), 0);
        }
        for (int i = 0; i < 70; i++) {
            snprintf(leafn, sizeof leafn, "m%d", i);
            assert_int_equal(sto_tmp_commit(sp, dfd, &many[i], leafn, false, err, sizeof err), 0);
        }
        for (int i = 0; i < 70; i++) {
            snprintf(leafn, sizeof leafn, "m%d", i);
            assert_string_equal(slurp_at(dfd, leafn), text[i]);
        }
        /* round 0 made the files (each spare became one), later rounds
         * replaced them (each old file came back; 64 are kept) */
        assert_int_equal(count_entries(spd), round == 0 ? 0 : 64);
    }
    for (int i = 0; i < 70; i++) {
        char leafn[16];
        snprintf(leafn, sizeof leafn, "m%d", i);
        assert_int_equal(unlinkat(dfd, leafn, 0), 0);
    }

    /* a bind mount inside the root: same device, but renames across it
     * fail (EXDEV), so the spare's content is copied there instead */
    char bsrc[80], bdst[80];
    snprintf(bsrc, sizeof bsrc, "%s/bsrc", dir);
    snprintf(bdst, sizeof bdst, "%s/a/bm", dir);
    assert_int_equal(mkdir(bsrc, 0755), 0);
    assert_int_equal(mkdir(bdst, 0755), 0);
    if (mount(bsrc, bdst, NULL, MS_BIND, NULL) == 0) {
        int bfd = open(bdst, O_RDONLY | O_DIRECTORY);
        assert_true(bfd >= 0);
        put_spare(sp, bfd, "h", "across a bind mount", 0);
        put_spare(sp, bfd, "h", "again", 0);
        assert_string_equal(slurp_at(bfd, "h"), "again");
        assert_int_equal(count_entries(bdst), 1);
        close(bfd);
        assert_int_equal(umount2(bdst, MNT_DETACH), 0);
    } else {
        fprintf(stderr, "test_tmp_spares: no bind mount (%s): that case not run\n", strerror(errno));
    }

    /* pools of kernels that are gone go at the next open; a live one (its
     * lock held) stays, however old; a kernel removes its own at close */
    char dead[128], top[80];
    snprintf(top, sizeof top, "%s/.lsfs/spare", dir);
    snprintf(dead, sizeof dead, "%s/kdead", top);
    assert_int_equal(mkdir(dead, 0700), 0);
    char junk[160];
    snprintf(junk, sizeof junk, "%s/s0", dead);
    FILE *jf = fopen(junk, "w");
    assert_non_null(jf);
    fclose(jf);
    struct timespec old_t[2] = {{.tv_sec = time(NULL) - 3600}, {.tv_sec = time(NULL) - 3600}};
    assert_int_equal(utimensat(AT_FDCWD, dead, old_t, 0), 0);
    assert_int_equal(utimensat(AT_FDCWD, spd, old_t, 0), 0);
    struct sto_spares *sp2 = sto_spares_open(rootfd);
    assert_non_null(sp2);
    struct stat pst;
    assert_int_equal(stat(dead, &pst), -1);
    assert_int_equal(stat(spd, &pst), 0);
    assert_int_equal(count_entries(top), 2); /* sp's and sp2's */
    sto_spares_close(sp2);
    sto_spares_close(sp);
    assert_int_equal(count_entries(top), 0);
    close(dfd);
    close(rootfd);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_swap_race(void **state)
{
    (void)state;
    struct fx *f = fx_open(5, 0, 0);
    assert_int_equal(run(f, "a", "create_dir", "{\"dir_path\":\"d\"}", NULL, NULL), 200);
    struct racer r = {.stop = 0};
    snprintf(r.root, sizeof r.root, "%s/root/a", f->dir);
    snprintf(r.outside, sizeof r.outside, "%s/outside", f->dir);
    assert_int_equal(mkdir(r.outside, 0755), 0);
    char known[400];
    snprintf(known, sizeof known, "%s/known.txt", r.outside);
    FILE *kf = fopen(known, "w");
    fputs("OUTSIDE", kf);
    fclose(kf);
    assert_int_equal(run(f, "a", "write", "{\"file_path\":\"d/known.txt\",\"content\":\"inside\"}", NULL, NULL), 200);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, swap_racer, &r), 0);
    int ok = 0, refused = 0;
    /* 150 calls at least, and until both outcomes were seen: a refused
     * call takes microseconds, so on a loaded machine all 150 could fall
     * in one phase of the racer (make test once saw none succeed) */
    for (int i = 0; i < 150 || ((!ok || !refused) && i < 20000); i++) {
        char p[128];
        if (i >= 150) usleep(200); /* let the racer turn */
        if (i % 3) {
            snprintf(p, sizeof p, "{\"file_path\":\"d/f%d.txt\",\"content\":\"x\"}", i);
            if (run(f, "a", "write", p, NULL, NULL) == 200) ok++;
            else refused++;
        } else {
            const char *c = content_of(f, "a", "d/known.txt");
            if (c) {
                assert_string_equal(c, "inside"); /* never the file outside */
                ok++;
            } else {
                refused++;
            }
        }
    }
    r.stop = 1;
    pthread_join(th, NULL);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "test \"$(ls -A %s)\" = known.txt", r.outside);
    if (system(cmd) != 0) fail_msg("a write landed outside the root (%d swaps)", r.swaps);
    assert_true(ok > 0);
    assert_true(refused > 0);
    assert_true(r.swaps > 0);
    fprintf(stderr, "swap race: %d swaps, %d calls succeeded, %d refused\n", r.swaps, ok, refused);
    fx_close(f);
}

/* ---- typed requests ----
 * sto_req_parse maps operation types and their aliases to one enum and
 * refuses bad input with a 400 before anything runs; the C entry points
 * run without any JSON params. */
static void test_typed_requests(void **state)
{
    (void)state;
    struct sto_req *q = NULL;
    int http = 0;
    char err[512];
    json_t *p = json_pack("{s:s,s:s}", "file_path", "notes//today.txt", "content", "hi");
    assert_int_equal(sto_req_parse("write_file", p, &q, &http, err, sizeof err), 0);
    assert_int_equal(q->op, STO_OP_WRITE);
    assert_string_equal(q->op_name, "write_file");
    assert_string_equal(sto_op_name(q->op), "write");
    assert_string_equal(q->u.write.at.path, "notes/today.txt");
    assert_null(q->u.write.at.owner);
    assert_int_equal(q->u.write.len, 2);
    sto_req_free(q);
    json_decref(p);

    p = json_pack("{s:s}", "file_path", "../etc/passwd");
    assert_int_equal(sto_req_parse("read", p, &q, &http, err, sizeof err), AIOS_EINVAL);
    assert_null(q);
    assert_int_equal(http, 400);
    assert_int_equal(sto_req_parse("frobnicate", p, &q, &http, err, sizeof err), AIOS_EINVAL);
    assert_non_null(strstr(err, "unknown storage operation_type 'frobnicate'"));
    json_decref(p);
    p = json_pack("{s:s,s:i}", "query_text", "...", "k", 3);
    assert_int_equal(sto_req_parse("search", p, &q, &http, err, sizeof err), AIOS_EINVAL);
    assert_non_null(strstr(err, "no words"));
    json_decref(p);
    p = json_pack("{s:s,s:[s,s]}", "query_text", "plans", "keywords", "alpha", "beta");
    assert_int_equal(sto_req_parse("search", p, &q, &http, err, sizeof err), 0);
    assert_int_equal(q->op, STO_OP_RETRIEVE);
    assert_string_equal(q->u.retrieve.keywords, "alpha beta");
    assert_int_equal(q->u.retrieve.k, 3);
    sto_req_free(q);
    json_decref(p);
    p = json_string("not an object");
    assert_int_equal(sto_req_parse("read", p, &q, &http, err, sizeof err), AIOS_EINVAL);
    assert_int_equal(http, 400);
    json_decref(p);

    struct fx *f = fx_open(5, 0, 0);
    struct sto_reply *r = calloc(1, sizeof *r);
    struct sto_write_args w = {.content = "typed", .len = 5};
    snprintf(w.at.path, sizeof w.at.path, "t/x.txt");
    assert_int_equal(sto_write(f->s, "a", &w, r), 0);
    assert_int_equal(r->http, 200);
    assert_int_equal(json_integer_value(json_object_get(r->out, "version")), 1);
    json_decref(r->out);
    struct sto_at at = {.owner = NULL};
    snprintf(at.path, sizeof at.path, "t/x.txt");
    assert_int_equal(sto_read(f->s, "a", &at, r), 0);
    assert_string_equal(json_string_value(json_object_get(r->out, "content")), "typed");
    json_decref(r->out);
    assert_int_equal(sto_read(f->s, "b", &at, r), AIOS_ENOTFOUND); /* b's own tree */
    assert_int_equal(r->http, 404);
    assert_null(r->out);
    assert_int_equal(sto_read(f->s, "", &at, r), AIOS_EINVAL); /* no agent */
    assert_int_equal(r->http, 400);
    struct sto_delete_args d = {.recursive = true};
    snprintf(d.at.path, sizeof d.at.path, "t");
    assert_int_equal(sto_delete_dir(f->s, "a", &d, r), 0);
    assert_int_equal(json_integer_value(json_object_get(r->out, "deleted_files")), 1);
    json_decref(r->out);
    assert_null(content_of(f, "a", "t/x.txt"));
    free(r);
    fx_close(f);
}

/* ---- deletes racing writes ----
 * Threads write, delete (files and whole directories), create
 * directories, read and list the same few paths, where one path is a file
 * at one moment and a directory at the next. Every answer is a 200 or a
 * 4xx (never a 5xx), and afterwards every acknowledged write is either what
 * its path holds or was overtaken by a later write or delete. */

#define DW_THREADS 6
#define DW_OPS 120
#define DW_MAX (DW_THREADS * DW_OPS)

static const char *const DW_PATHS[] = {"d/a", "d/b", "d/e/f", "d", "x"};
#define DW_NPATHS 5

struct dw_event {
    int kind;       /* 0 write, 1 delete_file, 2 delete_dir */
    int path;       /* index into DW_PATHS */
    int64_t t0, t1; /* monotonic start and end of the call */
    char content[48];
};

struct dw_shared {
    struct fx *f;
    pthread_mutex_t mu;
    struct dw_event ev[DW_MAX]; /* acknowledged writes and deletes */
    int n_ev, n_5xx, n_ok, n_4xx;
    char bad[1600];
};

struct dw_thread {
    struct dw_shared *sh;
    int t;
};

static void *dw_worker(void *arg)
{
    struct dw_thread *w = arg;
    struct dw_shared *sh = w->sh;
    unsigned seed = 7919u * (unsigned)(w->t + 1);
    for (int i = 0; i < DW_OPS; i++) {
        int pick = rand_r(&seed) % 10, pi = rand_r(&seed) % DW_NPATHS;
        const char *path = DW_PATHS[pi], *op;
        char params[256], content[48] = "";
        int kind = -1;
        if (pick < 4) {
            op = "write";
            kind = 0;
            snprintf(content, sizeof content, "t%d-i%d", w->t, i);
            snprintf(params, sizeof params, "{\"file_path\":\"%s\",\"content\":\"%s\"}", path, content);
        } else if (pick < 6) {
            op = "delete_file";
            kind = 1;
            snprintf(params, sizeof params, "{\"file_path\":\"%s\"}", path);
        } else if (pick < 7) {
            op = "delete_dir";
            kind = 2;
            pi = rand_r(&seed) % 2 ? 3 : 2; /* "d" or "d/e/f"'s parent below */
            path = pi == 3 ? "d" : "d/e";
            snprintf(params, sizeof params, "{\"dir_path\":\"%s\",\"recursive\":true}", path);
        } else if (pick < 8) {
            op = "create_dir";
            snprintf(params, sizeof params, "{\"dir_path\":\"%s\"}", rand_r(&seed) % 2 ? "d" : "d/e");
        } else if (pick < 9) {
            op = "read";
            snprintf(params, sizeof params, "{\"file_path\":\"%s\"}", path);
        } else {
            op = "list";
            snprintf(params, sizeof params, "{\"dir_path\":\"%s\"}", rand_r(&seed) % 2 ? "d" : "d/e");
        }
        json_t *j = json_loads(params, 0, NULL), *o = NULL;
        int http = 0;
        char e[1536] = "";
        int64_t t0 = util_now_us();
        int rc = sto_exec(sh->f->s, "a", op, j, &o, &http, e, sizeof e);
        int64_t t1 = util_now_us();
        json_decref(o);
        json_decref(j);
        pthread_mutex_lock(&sh->mu);
        if (http >= 500 || (rc == 0) != (http == 200)) {
            if (!sh->n_5xx++)
                snprintf(sh->bad, sizeof sh->bad, "%s %s -> %d: %.900s", op, params, http, e);
        } else if (http == 200) {
            sh->n_ok++;
            if (kind >= 0) {
                struct dw_event *ev = &sh->ev[sh->n_ev++];
                ev->kind = kind;
                ev->path = kind == 2 ? (pi == 3 ? 3 : -1) : pi; /* -1: "d/e" */
                ev->t0 = t0;
                ev->t1 = t1;
                snprintf(ev->content, sizeof ev->content, "%s", content);
            }
        } else {
            sh->n_4xx++;
        }
        pthread_mutex_unlock(&sh->mu);
    }
    return NULL;
}

/* does a delete event cover DW_PATHS[pi]? */
static bool dw_covers(const struct dw_event *d, int pi)
{
    const char *p = DW_PATHS[pi];
    if (d->kind == 1) return d->path == pi;
    if (d->kind != 2) return false;
    const char *dir = d->path == 3 ? "d" : "d/e";
    size_t n = strlen(dir);
    return !strncmp(p, dir, n) && (p[n] == 0 || p[n] == '/');
}

static void test_deletes_race_writes(void **state)
{
    (void)state;
    struct fx *f = fx_open(3, 0, 0);
    struct dw_shared *sh = calloc(1, sizeof *sh);
    assert_non_null(sh);
    sh->f = f;
    pthread_mutex_init(&sh->mu, NULL);
    pthread_t th[DW_THREADS];
    struct dw_thread w[DW_THREADS];
    for (int t = 0; t < DW_THREADS; t++) {
        w[t] = (struct dw_thread){.sh = sh, .t = t};
        assert_int_equal(pthread_create(&th[t], NULL, dw_worker, &w[t]), 0);
    }
    for (int t = 0; t < DW_THREADS; t++) pthread_join(th[t], NULL);
    if (sh->n_5xx) fail_msg("%d answers were 5xx or inconsistent; first: %s", sh->n_5xx, sh->bad);
    assert_true(sh->n_ok > DW_MAX / 4); /* the race really ran calls */
    int n_writes = 0;
    for (int pi = 0; pi < DW_NPATHS; pi++) {
        const char *now = content_of(f, "a", DW_PATHS[pi]);
        int64_t last_w_start = -1;
        const struct dw_event *holder = NULL;
        for (int i = 0; i < sh->n_ev; i++) {
            const struct dw_event *ev = &sh->ev[i];
            if (ev->kind != 0 || ev->path != pi) continue;
            n_writes++;
            if (ev->t0 > last_w_start) last_w_start = ev->t0;
            if (now && !strcmp(now, ev->content)) holder = ev;
        }
        if (now) {
            /* what the path holds was acknowledged, and nothing that
             * certainly came after it (a write or a delete that started
             * once it was answered) succeeded */
            if (!holder) fail_msg("'%s' holds '%s', which no acknowledged write wrote", DW_PATHS[pi], now);
            for (int i = 0; i < sh->n_ev; i++) {
                const struct dw_event *ev = &sh->ev[i];
                bool later = ev->t0 > holder->t1;
                if (later && ev->kind == 0 && ev->path == pi)
                    fail_msg("'%s': write '%s' was overtaken by '%s', yet it is what the file holds",
                             DW_PATHS[pi], holder->content, ev->content);
                if (later && dw_covers(ev, pi))
                    fail_msg("'%s' holds '%s' although a later delete succeeded", DW_PATHS[pi], holder->content);
            }
        } else if (last_w_start >= 0) {
            /* gone: a delete that could have come after the last write did */
            bool deleted = false;
            for (int i = 0; i < sh->n_ev && !deleted; i++)
                deleted = dw_covers(&sh->ev[i], pi) && sh->ev[i].t1 > last_w_start;
            if (!deleted) fail_msg("'%s' was written (acknowledged) and is gone without a delete", DW_PATHS[pi]);
        }
    }
    assert_true(n_writes > 0);
    pthread_mutex_destroy(&sh->mu);
    free(sh);
    fx_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256),          cmocka_unit_test(test_path_norm),
        cmocka_unit_test(test_agent_dirname),   cmocka_unit_test(test_versions),
        cmocka_unit_test(test_symlinks_inside_root), cmocka_unit_test(test_quotas),
        cmocka_unit_test(test_space_given_back), cmocka_unit_test(test_old_layout_recounted),
        cmocka_unit_test(test_shares),          cmocka_unit_test(test_crash_repair),
        cmocka_unit_test(test_mount_imports),   cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_retrieve_topk_matches_reference),
        cmocka_unit_test(test_concurrent_writes), cmocka_unit_test(test_swap_race),
        cmocka_unit_test(test_tmp_commit),
        cmocka_unit_test(test_tmp_spares),
        cmocka_unit_test(test_typed_requests), cmocka_unit_test(test_deletes_race_writes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
