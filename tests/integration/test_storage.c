/* Integration: the storage manager through real HTTP (POST /query,
 * query_type "storage") on a real kernel. Escapes out of an agent's root,
 * isolation between agents, versions / rollback / history, retrieve,
 * share, quotas, and the crash test: writers stream writes, the kernel is
 * killed with SIGKILL mid-stream and restarted on the same data directory,
 * and every acknowledged write must be intact and no file torn. */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "storage/sha256.h"

static int group_setup(void **state)
{
    (void)state;
    const char *yaml = "storage:\n"
                       "  root_dir: root\n"
                       "  max_versions: 5\n"
                       "  quota_bytes: 65536\n"
                       "  quota_files: 20\n"
                       "  max_file_bytes: 50000\n";
    g_kf = kf_start_config(yaml);
    return 0;
}

/* One storage query; params is stolen. Returns the status; *out gets the
 * "response" object on 200, the whole body otherwise. */
static long sq_on(struct kernel_fixture *kf, const char *agent, const char *op, json_t *params,
                  json_t **out)
{
    json_t *q = json_pack("{s:s,s:s,s:{s:s,s:s,s:o}}", "agent_name", agent, "query_type",
                          "storage", "query_data", "query_class", "storage", "operation_type", op,
                          "params", params);
    char *body = json_dumps(q, JSON_COMPACT);
    json_decref(q);
    json_t *j = NULL;
    long st = kf_call(kf, "POST", "/query", body, &j);
    free(body);
    if (st == 200) {
        json_t *r = json_object_get(j, "response");
        assert_string_equal(json_string_value(json_object_get(r, "response_class")), "storage");
        assert_true(json_is_true(json_object_get(r, "finished")));
        assert_int_equal(json_integer_value(json_object_get(r, "status_code")), 200);
        assert_true(json_is_null(json_object_get(r, "error")));
        assert_true(json_is_string(json_object_get(r, "response_message")));
        if (out) *out = json_incref(r);
        json_decref(j);
    } else {
        assert_error_body(j, NULL);
        if (out) *out = j;
        else json_decref(j);
    }
    return st;
}

static long sq(const char *agent, const char *op, json_t *params, json_t **out)
{
    return sq_on(g_kf, agent, op, params, out);
}

/* expect an error status whose message mentions needle */
static void sq_err(const char *agent, const char *op, json_t *params, long status, const char *needle)
{
    json_t *j = NULL;
    char *shown = json_dumps(params, JSON_COMPACT);
    long st = sq(agent, op, params, &j);
    if (st != status) fail_msg("%s %s %.200s: expected %ld, got %ld", agent, op, shown, status, st);
    assert_error_body(j, needle);
    json_decref(j);
    free(shown);
}

static char *read_ok_on(struct kernel_fixture *kf, const char *agent, const char *path, const char *owner)
{
    json_t *r = NULL;
    json_t *p = json_pack("{s:s}", "file_path", path);
    if (owner) json_object_set_new(p, "owner", json_string(owner));
    long st = sq_on(kf, agent, "read", p, &r);
    if (st != 200) {
        json_decref(r);
        return NULL;
    }
    char *s = strdup(json_string_value(json_object_get(r, "content")));
    json_decref(r);
    return s;
}

static char *read_ok(const char *agent, const char *path, const char *owner)
{
    return read_ok_on(g_kf, agent, path, owner);
}

static void write_ok(const char *agent, const char *path, const char *content)
{
    long st = sq(agent, "write", json_pack("{s:s,s:s}", "file_path", path, "content", content), NULL);
    if (st != 200) fail_msg("write %s/%s: %ld", agent, path, st);
}

static void test_escapes(void **state)
{
    (void)state;
    write_ok("esc", "inside.txt", "mine");
    sq_err("esc", "read", json_pack("{s:s}", "file_path", "../esc2/x"), 400, "'..'");
    sq_err("esc", "write", json_pack("{s:s,s:s}", "file_path", "a/../../../etc/x", "content", "x"), 400, "'..'");
    sq_err("esc", "read", json_pack("{s:s}", "file_path", "/etc/passwd"), 400, "absolute");
    sq_err("esc", "write", json_pack("{s:s,s:s}", "file_path", "/tmp/aios-owned", "content", "x"), 400, "absolute");
    sq_err("esc", "create_dir", json_pack("{s:s}", "dir_path", ".."), 400, "'..'");
    sq_err("esc", "list", json_pack("{s:s}", "dir_path", "../.."), 400, "'..'");
    sq_err("esc", "write", json_pack("{s:s,s:s}", "file_path", "a\x01" "b", "content", "x"), 400, "control character");
    char name[300];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = 0;
    sq_err("esc", "write", json_pack("{s:s,s:s}", "file_path", name, "content", "x"), 400, "limit is 255");
    char path[1200];
    for (size_t i = 0; i < sizeof path - 1; i++) path[i] = i % 8 == 7 ? '/' : 'p';
    path[sizeof path - 1] = 0;
    sq_err("esc", "write", json_pack("{s:s,s:s}", "file_path", path, "content", "x"), 400, "limit is 1024");
    /* a NUL byte never reaches a path: the JSON layer refuses \u0000 */
    json_t *j = NULL;
    long st = kf_call(g_kf, "POST", "/query",
                      "{\"agent_name\":\"esc\",\"query_type\":\"storage\",\"query_data\":{\"operation_type\":"
                      "\"write\",\"params\":{\"file_path\":\"a\\u0000/../../x\",\"content\":\"x\"}}}", &j);
    assert_int_equal(st, 400);
    assert_error_body(j, NULL);
    json_decref(j);

    /* symlinks planted in the root (as a tool could) are never followed */
    char outside[512], lnk[512], cmd[1200];
    snprintf(outside, sizeof outside, "%s/outside", g_kf->dir);
    assert_int_equal(mkdir(outside, 0755), 0);
    snprintf(cmd, sizeof cmd, "echo secret > %s/secret.txt", outside);
    assert_int_equal(system(cmd), 0);
    snprintf(lnk, sizeof lnk, "%s/root/esc/out", g_kf->dir);
    assert_int_equal(symlink(outside, lnk), 0);
    snprintf(lnk, sizeof lnk, "%s/root/esc/passwd", g_kf->dir);
    assert_int_equal(symlink("/etc/passwd", lnk), 0);
    sq_err("esc", "read", json_pack("{s:s}", "file_path", "out/secret.txt"), 400, "symbolic link");
    sq_err("esc", "write", json_pack("{s:s,s:s}", "file_path", "out/planted.txt", "content", "x"), 400, "symbolic link");
    sq_err("esc", "read", json_pack("{s:s}", "file_path", "passwd"), 400, "symbolic link");
    sq_err("esc", "write", json_pack("{s:s,s:s}", "file_path", "passwd", "content", "x"), 400, "symbolic link");
    sq_err("esc", "list", json_pack("{s:s}", "dir_path", "out"), 400, "symbolic link");
    snprintf(cmd, sizeof cmd, "%s/planted.txt", outside);
    assert_int_equal(access(cmd, F_OK), -1);
    struct stat st2;
    assert_int_equal(lstat("/etc/passwd", &st2), 0);
    assert_true(S_ISREG(st2.st_mode));

    /* an agent name cannot name a directory outside the root either */
    write_ok("../../evil", "x.txt", "x");
    snprintf(cmd, sizeof cmd, "%s/root/%%2E.%%2F..%%2Fevil/x.txt", g_kf->dir);
    assert_int_equal(access(cmd, F_OK), 0);
    snprintf(cmd, sizeof cmd, "%s/evil", g_kf->dir);
    assert_int_equal(access(cmd, F_OK), -1);

    /* the kernel still serves */
    char *c = read_ok("esc", "inside.txt", NULL);
    assert_string_equal(c, "mine");
    free(c);
}

static void test_isolation(void **state)
{
    (void)state;
    write_ok("alice", "secret.txt", "alice's secret");
    write_ok("bob", "secret.txt", "bob's own");
    char *c = read_ok("bob", "secret.txt", NULL);
    assert_string_equal(c, "bob's own");
    free(c);
    c = read_ok("alice", "secret.txt", NULL);
    assert_string_equal(c, "alice's secret");
    free(c);
    /* through owner=alice without a share: the same 404 a missing file gets */
    json_t *e1 = NULL, *e2 = NULL;
    assert_int_equal(sq("bob", "read", json_pack("{s:s,s:s}", "file_path", "secret.txt", "owner", "alice"), &e1), 404);
    assert_int_equal(sq("bob", "read", json_pack("{s:s,s:s}", "file_path", "no-such.txt", "owner", "alice"), &e2), 404);
    const char *m1 = json_string_value(json_object_get(json_object_get(e1, "error"), "message"));
    const char *m2 = json_string_value(json_object_get(json_object_get(e2, "error"), "message"));
    /* same wording; only the echoed path differs */
    assert_non_null(strstr(m1, "no such file or directory"));
    assert_non_null(strstr(m2, "no such file or directory"));
    json_decref(e1);
    json_decref(e2);
    sq_err("bob", "write", json_pack("{s:s,s:s,s:s}", "file_path", "secret.txt", "owner", "alice", "content", "pwned"), 404, "no such file");
    sq_err("bob", "list", json_pack("{s:s}", "owner", "alice"), 404, "no such file");
    sq_err("bob", "history", json_pack("{s:s,s:s}", "file_path", "secret.txt", "owner", "alice"), 404, "no such file");
    sq_err("bob", "delete_file", json_pack("{s:s,s:s}", "file_path", "secret.txt", "owner", "alice"), 404, "no such file");
    sq_err("bob", "rollback", json_pack("{s:s,s:s}", "file_path", "secret.txt", "owner", "alice"), 404, "no such file");
    c = read_ok("alice", "secret.txt", NULL);
    assert_string_equal(c, "alice's secret");
    free(c);
    /* retrieve sees only the caller's files */
    json_t *r = NULL;
    assert_int_equal(sq("bob", "retrieve", json_pack("{s:s,s:i}", "query_text", "alice secret", "k", 5), &r), 200);
    json_t *res = json_object_get(r, "results");
    for (size_t i = 0; i < json_array_size(res); i++) {
        const char *s = json_string_value(json_object_get(json_array_get(res, i), "document_summary"));
        assert_null(strstr(s, "alice's"));
    }
    json_decref(r);
}

static void test_versions_rollback_history(void **state)
{
    (void)state;
    char buf[64];
    for (int i = 1; i <= 4; i++) {
        snprintf(buf, sizeof buf, "draft %d", i);
        write_ok("ver", "doc.md", buf);
    }
    json_t *r = NULL;
    assert_int_equal(sq("ver", "history", json_pack("{s:s}", "file_path", "doc.md"), &r), 200);
    json_t *v = json_object_get(r, "versions");
    assert_int_equal(json_array_size(v), 4);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(v, 0), "version")), 4);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(v, 0), "size")), 7);
    assert_true(json_is_string(json_object_get(json_array_get(v, 0), "time")));
    /* ISO 8601 with microseconds: exact */
    char t2[64];
    snprintf(t2, sizeof t2, "%s", json_string_value(json_object_get(json_array_get(v, 2), "time")));
    json_decref(r);
    /* n back, n given as the reference's string */
    assert_int_equal(sq("ver", "rollback", json_pack("{s:s,s:s}", "file_path", "doc.md", "n", "2"), &r), 200);
    assert_int_equal(json_integer_value(json_object_get(r, "restored_version")), 2);
    assert_int_equal(json_integer_value(json_object_get(r, "version")), 5);
    json_decref(r);
    char *c = read_ok("ver", "doc.md", NULL);
    assert_string_equal(c, "draft 2");
    free(c);
    /* rollback is itself a version: undo it */
    assert_int_equal(sq("ver", "rollback", json_pack("{s:s}", "file_path", "doc.md"), NULL), 200);
    c = read_ok("ver", "doc.md", NULL);
    assert_string_equal(c, "draft 4");
    free(c);
    /* by time: version 2's timestamp */
    json_t *tr = NULL;
    long tst = sq("ver", "rollback", json_pack("{s:s,s:s}", "file_path", "doc.md", "time", t2), &tr);
    if (tst != 200) fail_msg("rollback by time %s: %ld", t2, tst);
    json_decref(tr);
    c = read_ok("ver", "doc.md", NULL);
    assert_string_equal(c, "draft 2");
    free(c);
    /* max_versions is 5 in this kernel's config */
    assert_int_equal(sq("ver", "history", json_pack("{s:s}", "file_path", "doc.md"), &r), 200);
    v = json_object_get(r, "versions");
    assert_int_equal(json_array_size(v), 5);
    assert_string_equal(json_string_value(json_object_get(json_array_get(v, 0), "kind")), "rollback");
    json_decref(r);
    sq_err("ver", "rollback", json_pack("{s:s,s:i}", "file_path", "doc.md", "n", 9), 404, "cannot go back 9");
    sq_err("ver", "rollback", json_pack("{s:s,s:s}", "file_path", "doc.md", "n", "two"), 400, "params.n");

    /* create_file, create_dir, list, delete */
    assert_int_equal(sq("ver", "create_dir", json_pack("{s:s}", "dir_path", "d/e"), NULL), 200);
    assert_int_equal(sq("ver", "create_file", json_pack("{s:s}", "file_path", "d/e/empty.txt"), &r), 200);
    assert_true(json_is_true(json_object_get(r, "created")));
    json_decref(r);
    assert_int_equal(sq("ver", "create_file", json_pack("{s:s}", "file_path", "d/e/empty.txt"), &r), 200);
    assert_true(json_is_false(json_object_get(r, "created")));
    json_decref(r);
    assert_int_equal(sq("ver", "list", json_pack("{s:s}", "dir_path", "d/e"), &r), 200);
    json_t *ents = json_object_get(r, "entries");
    assert_int_equal(json_array_size(ents), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(ents, 0), "name")), "empty.txt");
    assert_string_equal(json_string_value(json_object_get(json_array_get(ents, 0), "type")), "file");
    json_decref(r);
    sq_err("ver", "delete_dir", json_pack("{s:s}", "dir_path", "d"), 409, "recursive");
    assert_int_equal(sq("ver", "delete_dir", json_pack("{s:s,s:b}", "dir_path", "d", "recursive", 1), NULL), 200);
    sq_err("ver", "read", json_pack("{s:s}", "file_path", "d/e/empty.txt"), 404, "no such file");
    assert_int_equal(sq("ver", "delete_file", json_pack("{s:s}", "file_path", "doc.md"), NULL), 200);
    sq_err("ver", "history", json_pack("{s:s}", "file_path", "doc.md"), 404, "no such file");
}

static void test_retrieve(void **state)
{
    (void)state;
    write_ok("ret", "fruit/banana.txt", "Bananas are yellow and rich in potassium.");
    write_ok("ret", "fruit/apple.txt", "Apples can be red or green; an apple a day.");
    write_ok("ret", "code/main.c", "int main(void) { return 0; } /* the entry point */");
    json_t *r = NULL;
    /* the reference's parameter names: query_text, k as a string */
    assert_int_equal(sq("ret", "retrieve", json_pack("{s:s,s:s}", "query_text", "potassium bananas", "k", "1"), &r), 200);
    json_t *res = json_object_get(r, "results");
    assert_int_equal(json_array_size(res), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(res, 0), "file_path")), "fruit/banana.txt");
    assert_true(json_is_string(json_object_get(json_array_get(res, 0), "snippet")));
    json_decref(r);
    /* Cerebrum's retrieve_file sends n and a keyword list */
    assert_int_equal(sq("ret", "retrieve", json_pack("{s:s,s:i,s:[s]}", "query_text", "red yellow", "n", 5, "keywords", "apple"), &r), 200);
    res = json_object_get(r, "results");
    assert_int_equal(json_array_size(res), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(res, 0), "file_name")), "apple.txt");
    json_decref(r);
    /* FTS syntax in the query is plain text, not an error */
    assert_int_equal(sq("ret", "retrieve", json_pack("{s:s}", "query_text", "main(void) AND \"entry NEAR("), &r), 200);
    assert_true(json_array_size(json_object_get(r, "results")) >= 1);
    json_decref(r);
    /* a rewrite re-indexes */
    write_ok("ret", "fruit/banana.txt", "Plantains are starchy.");
    assert_int_equal(sq("ret", "retrieve", json_pack("{s:s}", "query_text", "potassium"), &r), 200);
    assert_int_equal(json_array_size(json_object_get(r, "results")), 0);
    assert_string_equal(json_string_value(json_object_get(r, "response_message")), "No documents found");
    json_decref(r);
    sq_err("ret", "retrieve", json_pack("{}"), 400, "query_text");
    sq_err("ret", "retrieve", json_pack("{s:s,s:i}", "query_text", "x", "k", 1000), 400, "params.k");
}

static void test_share(void **state)
{
    (void)state;
    write_ok("owner", "proj/plan.md", "the plan");
    write_ok("owner", "private/diary.md", "dear diary");
    sq_err("guest", "read", json_pack("{s:s,s:s}", "file_path", "proj/plan.md", "owner", "owner"), 404, "no such file");
    /* no agent: a link, which is for one file */
    sq_err("owner", "share", json_pack("{s:s}", "file_path", "proj"), 409, "a share link is for one file");
    sq_err("owner", "share", json_pack("{s:s,s:s}", "file_path", "nope", "agent", "guest"), 404, "no such file");
    json_t *r = NULL;
    assert_int_equal(sq("owner", "share", json_pack("{s:s,s:s}", "file_path", "proj", "agent", "guest"), &r), 200);
    assert_string_equal(json_string_value(json_object_get(r, "mode")), "r");
    json_decref(r);
    char *c = read_ok("guest", "proj/plan.md", "owner");
    assert_string_equal(c, "the plan");
    free(c);
    /* read-only: the guest knows the file exists, so 403, not 404 */
    sq_err("guest", "write", json_pack("{s:s,s:s,s:s}", "file_path", "proj/plan.md", "owner", "owner", "content", "x"), 403, "read-only");
    sq_err("guest", "read", json_pack("{s:s,s:s}", "file_path", "private/diary.md", "owner", "owner"), 404, "no such file");
    sq_err("third", "read", json_pack("{s:s,s:s}", "file_path", "proj/plan.md", "owner", "owner"), 404, "no such file");
    sq_err("guest", "share", json_pack("{s:s,s:s,s:s}", "file_path", "proj", "owner", "owner", "agent", "third"), 403, "only the owner");
    /* read-write */
    assert_int_equal(sq("owner", "share", json_pack("{s:s,s:s,s:s}", "file_path", "proj", "agent", "guest", "mode", "rw"), NULL), 200);
    assert_int_equal(sq("guest", "write", json_pack("{s:s,s:s,s:s}", "file_path", "proj/plan.md", "owner", "owner", "content", "the better plan"), NULL), 200);
    c = read_ok("owner", "proj/plan.md", NULL);
    assert_string_equal(c, "the better plan");
    free(c);
    /* retrieve over the owner's files finds only the shared ones */
    write_ok("owner", "private/plans.md", "secret plan for the owner only");
    assert_int_equal(sq("guest", "retrieve", json_pack("{s:s,s:s,s:i}", "query_text", "plan", "owner", "owner", "k", 5), &r), 200);
    json_t *found = json_object_get(r, "results");
    assert_int_equal(json_array_size(found), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(found, 0), "file_path")), "proj/plan.md");
    json_decref(r);
    assert_int_equal(sq("third", "retrieve", json_pack("{s:s,s:s}", "query_text", "plan", "owner", "owner"), &r), 200);
    assert_int_equal(json_array_size(json_object_get(r, "results")), 0);
    json_decref(r);
    assert_int_equal(sq("guest", "shares", json_pack("{}"), &r), 200);
    assert_int_equal(json_array_size(json_object_get(r, "received")), 1);
    json_decref(r);
    /* revoke */
    assert_int_equal(sq("owner", "unshare", json_pack("{s:s,s:s}", "file_path", "proj", "agent", "guest"), NULL), 200);
    sq_err("guest", "read", json_pack("{s:s,s:s}", "file_path", "proj/plan.md", "owner", "owner"), 404, "no such file");
    /* expiry */
    assert_int_equal(sq("owner", "share", json_pack("{s:s,s:s,s:i}", "file_path", "proj/plan.md", "agent", "guest", "expires_in", 1), NULL), 200);
    c = read_ok("guest", "proj/plan.md", "owner");
    assert_non_null(c);
    free(c);
    usleep(1100000);
    sq_err("guest", "read", json_pack("{s:s,s:s}", "file_path", "proj/plan.md", "owner", "owner"), 404, "no such file");
}

static void test_quotas(void **state)
{
    (void)state;
    /* both stores count alike (storage.md): every distinct content of every
     * kept version, and the indexed text */
    /* this kernel: quota_bytes 65536, quota_files 20, max_file_bytes 50000 */
    char *big = malloc(50002);
    memset(big, 'q', 50001);
    big[50001] = 0;
    sq_err("quo", "write", json_pack("{s:s,s:s}", "file_path", "huge", "content", big), 413, "storage.max_file_bytes");
    /* a text file counts its content and its indexed text: 60000 */
    big[30000] = 0;
    write_ok("quo", "one", big);
    sq_err("quo", "write", json_pack("{s:s,s:s}", "file_path", "two", "content", big), 507, "storage.quota_bytes");
    sq_err("quo", "read", json_pack("{s:s}", "file_path", "two"), 404, "no such file");
    free(big);
    for (int i = 0; i < 19; i++) {
        char p[32];
        snprintf(p, sizeof p, "small/%d", i);
        write_ok("quo", p, "s");
    }
    sq_err("quo", "create_file", json_pack("{s:s}", "file_path", "small/20"), 507, "storage.quota_files");
    /* overwriting an existing file is still allowed at the file limit */
    write_ok("quo", "small/0", "t");
    json_t *r = NULL;
    assert_int_equal(sq("quo", "usage", json_pack("{}"), &r), 200);
    assert_int_equal(json_integer_value(json_object_get(r, "files")), 20);
    /* one: 30000 + 30000 indexed; the 19 "s" files: one content (1 byte,
     * held once) + 19 indexed; small/0's new version "t": 1 more (its first
     * version is kept) */
    assert_int_equal(json_integer_value(json_object_get(r, "bytes")), 60000 + 1 + 19 + 1);
    json_decref(r);
    /* another agent is unaffected */
    write_ok("quo2", "x", "fine");
}

static void test_mount_and_bad_ops(void **state)
{
    (void)state;
    json_t *r = NULL;
    assert_int_equal(sq("m", "mount", json_pack("{s:s}", "root", "/data/storage"), &r), 200);
    assert_non_null(strstr(json_string_value(json_object_get(r, "response_message")), "mounted"));
    json_decref(r);
    assert_int_equal(sq("m", "mount", json_pack("{s:s}", "root_dir", "x"), NULL), 200);
    sq_err("m", "teleport", json_pack("{}"), 400, "unknown storage operation_type");
    sq_err("m", "write", json_pack("{s:s}", "file_path", "x"), 400, "content");
    sq_err("m", "write", json_pack("{s:i,s:s}", "file_path", 3, "content", "x"), 400, "params.file_path");
}

/* ---------------------------------------------------------------- crash */

#define CR_FILES 4
#define CR_THREADS 2

struct writer {
    struct kernel_fixture *kf;
    int t;
    int next;                 /* next sequence number to write */
    int acked[CR_FILES];      /* last acknowledged seq per file, -1 none */
    int inflight;             /* seq in flight when the kernel died, -1 none */
    volatile int n_acked;
};

static char *cr_content(int t, int seq, size_t *len)
{
    /* distinctive, self-describing, sizes from 1 KiB to ~33 KiB */
    size_t n = 1024 + (size_t)((seq * 7919) % 32768);
    char *s = malloc(n + 1);
    char unit[64];
    int ul = snprintf(unit, sizeof unit, "[t%d s%d]", t, seq);
    for (size_t i = 0; i < n; i++) s[i] = unit[i % (size_t)ul];
    s[n] = 0;
    *len = n;
    return s;
}

static void *cr_writer(void *arg)
{
    struct writer *w = arg;
    char url[256];
    snprintf(url, sizeof url, "%s/query", w->kf->child.base);
    for (;;) {
        int seq = w->next++;
        size_t n;
        char *content = cr_content(w->t, seq, &n);
        char path[64], agent[32];
        snprintf(path, sizeof path, "f%d.txt", seq % CR_FILES);
        snprintf(agent, sizeof agent, "crash%d", w->t);
        json_t *q = json_pack("{s:s,s:s,s:{s:s,s:{s:s,s:s}}}", "agent_name", agent, "query_type",
                              "storage", "query_data", "operation_type", "write", "params",
                              "file_path", path, "content", content);
        char *body = json_dumps(q, JSON_COMPACT);
        json_decref(q);
        free(content);
        struct hc_resp r;
        w->inflight = seq;
        int rc = hc_call("POST", url, body, strlen(body), &r, 30);
        free(body);
        long st = r.status;
        hc_resp_free(&r);
        if (rc != 0 || st != 200) break; /* the kernel died under us */
        w->acked[seq % CR_FILES] = seq;
        w->inflight = -1;
        __atomic_add_fetch(&w->n_acked, 1, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

static int count_tmp(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (!strncmp(e->d_name, ".~lsfs-", 7)) n++;
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) n += count_tmp(p);
    }
    closedir(d);
    return n;
}

static void test_crash(void **state)
{
    (void)state;
    struct kernel_fixture *kf = kf_start(NULL);
    struct writer w[CR_THREADS];
    memset(w, 0, sizeof w);
    for (int t = 0; t < CR_THREADS; t++) {
        w[t].kf = kf;
        w[t].t = t;
        for (int f = 0; f < CR_FILES; f++) w[t].acked[f] = -1;
    }
    srand((unsigned)time(NULL));
    for (int round = 0; round < 2; round++) {
        pthread_t th[CR_THREADS];
        int base[CR_THREADS];
        for (int t = 0; t < CR_THREADS; t++) {
            base[t] = w[t].n_acked;
            w[t].inflight = -1;
            assert_int_equal(pthread_create(&th[t], NULL, cr_writer, &w[t]), 0);
        }
        /* let each writer get some writes acknowledged, then kill mid-stream */
        for (int i = 0; i < 3000; i++) {
            bool ready = true;
            for (int t = 0; t < CR_THREADS; t++)
                if (__atomic_load_n(&w[t].n_acked, __ATOMIC_SEQ_CST) < base[t] + 6) ready = false;
            if (ready) break;
            usleep(10000);
        }
        usleep((useconds_t)(rand() % 20000));
        assert_int_equal(kill(kf->child.pid, SIGKILL), 0);
        for (int t = 0; t < CR_THREADS; t++) pthread_join(th[t], NULL);
        int status = 0;
        waitpid(kf->child.pid, &status, 0);
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        int total = 0;
        for (int t = 0; t < CR_THREADS; t++) total += w[t].n_acked - base[t];
        fprintf(stderr, "crash round %d: killed after %d acknowledged writes\n", round, total);

        /* restart on the same data directory */
        if (child_start(&kf->child, aios_bin(), kf->dir, NULL, 300) != 0) {
            kf_print_log(kf);
            fail_msg("the kernel did not restart after SIGKILL");
        }
        char root[600];
        snprintf(root, sizeof root, "%s/root", kf->dir);
        assert_int_equal(count_tmp(root), 0);
        for (int t = 0; t < CR_THREADS; t++) {
            char agent[32];
            snprintf(agent, sizeof agent, "crash%d", t);
            for (int f = 0; f < CR_FILES; f++) {
                char path[64];
                snprintf(path, sizeof path, "f%d.txt", f);
                char *got = read_ok_on(kf, agent, path, NULL);
                int a = w[t].acked[f];
                int inf = w[t].inflight >= 0 && w[t].inflight % CR_FILES == f ? w[t].inflight : -1;
                if (a < 0 && inf < 0) {
                    assert_null(got);
                    continue;
                }
                size_t n1 = 0, n2 = 0;
                char *e1 = a >= 0 ? cr_content(t, a, &n1) : NULL;
                char *e2 = inf >= 0 ? cr_content(t, inf, &n2) : NULL;
                bool ok = got && ((e1 && !strcmp(got, e1)) || (e2 && !strcmp(got, e2)));
                if (!got && a < 0) ok = true; /* the only write was in flight: absent is fine */
                if (!ok)
                    fail_msg("%s/%s: after the crash it holds %.40s... (%zu bytes); the last "
                             "acknowledged write was seq %d, in flight %d", agent, path,
                             got ? got : "(nothing)", got ? strlen(got) : 0, a, inf);
                /* the newest version in the history is what is on disk */
                if (got) {
                    json_t *r = NULL;
                    assert_int_equal(sq_on(kf, agent, "history", json_pack("{s:s}", "file_path", path), &r), 200);
                    char hex[65];
                    sto_sha256_hex(got, strlen(got), hex);
                    assert_string_equal(json_string_value(json_object_get(
                                            json_array_get(json_object_get(r, "versions"), 0), "sha256")),
                                        hex);
                    json_decref(r);
                    if (e2 && !strcmp(got, e2)) w[t].acked[f] = inf; /* it landed */
                }
                free(e1);
                free(e2);
                free(got);
            }
        }
    }
    kf_stop(kf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_isolation),
        cmocka_unit_test(test_versions_rollback_history),
        cmocka_unit_test(test_retrieve),
        cmocka_unit_test(test_share),
        cmocka_unit_test(test_quotas),
        cmocka_unit_test(test_mount_and_bad_ops),
        cmocka_unit_test(test_crash),
    };
    return cmocka_run_group_tests(tests, group_setup, kf_group_teardown);
}
