/* Integration: the reference kernel's answers that Cerebrum agents depend
 * on, on a real kernel over HTTP.
 *
 *  - share_file as Cerebrum sends it (only file_path) returns a link the
 *    kernel serves itself: GET /s/TOKEN with no token answers the file's
 *    current bytes (text/plain or octet-stream, nosniff), read-only (any
 *    other method is 405), for every reader; an unknown or malformed token,
 *    a revoked link (by path or link_id), an expired link and a deleted
 *    file are one 404; every use is an audit row under the owner's name
 *    that carries the link id and never the token; another agent cannot
 *    revoke it; a directory or a path outside the root is refused.
 *  - a tool query whose calls all failed is a 200 with finished: false
 *    (Cerebrum calls raise_for_status()), while a malformed query and an
 *    agent token acting for another agent keep their 4xx. */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int group_setup(void **state)
{
    (void)state;
    g_kf = kf_start_config("storage:\n  root_dir: root\n  max_file_bytes: 100000\n");
    return 0;
}

/* one storage query as the operator; *out gets the whole answer */
static long sq(const char *agent, const char *op, json_t *params, json_t **out)
{
    json_t *q = json_pack("{s:s,s:s,s:{s:s,s:s,s:o}}", "agent_name", agent, "query_type",
                          "storage", "query_data", "query_class", "storage", "operation_type", op,
                          "params", params);
    char *body = json_dumps(q, JSON_COMPACT);
    json_decref(q);
    json_t *j = NULL;
    long st = kf_call(g_kf, "POST", "/query", body, &j);
    free(body);
    if (out) *out = j;
    else json_decref(j);
    return st;
}

static const char *resp_str(json_t *j, const char *key)
{
    return json_string_value(json_object_get(json_object_get(j, "response"), key));
}

/* GET path with no token at all, as a browser or another program would */
static long get_open(const char *method, const char *path, struct hc_resp *r)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", g_kf->child.base, path);
    memset(r, 0, sizeof *r);
    assert_int_equal(hc_call_h(method, url, NULL, 0, NULL, r, 30), 0);
    return r->status;
}

static void expect_404(const char *path)
{
    struct hc_resp r;
    long st = get_open("GET", path, &r);
    if (st != 404) fail_msg("GET %s: %ld %.*s", path, st, (int)r.len, r.body ? r.body : "");
    hc_resp_free(&r);
}

/* audit rows of agent whose action names this link id */
static int link_rows(const char *agent, const char *decision, const char *link_id)
{
    for (int tries = 0; tries < 50; tries++) { /* rows are written by the audit thread */
        char path[256];
        snprintf(path, sizeof path, "/access/audit?agent=%s", agent);
        json_t *j = NULL;
        assert_int_equal(kf_call(g_kf, "GET", path, NULL, &j), 200);
        int n = 0;
        size_t i;
        json_t *row;
        json_array_foreach(json_object_get(j, "audit"), i, row) {
            const char *a = json_string_value(json_object_get(row, "action"));
            const char *d = json_string_value(json_object_get(row, "decision"));
            if (a && d && strstr(a, link_id) && !strcmp(d, decision)) n++;
        }
        json_decref(j);
        if (n) return n;
        usleep(100000);
    }
    return 0;
}

static void test_share_file_link(void **state)
{
    (void)state;
    json_t *j = NULL;
    assert_int_equal(sq("alice", "write", json_pack("{s:s,s:s}", "file_path", "notes/plan.md",
                                                    "content", "step 1: ship"), NULL), 200);
    /* Cerebrum's share_file: {"file_path"} only */
    assert_int_equal(sq("alice", "share", json_pack("{s:s}", "file_path", "notes/plan.md"), &j), 200);
    json_t *resp = json_object_get(j, "response");
    assert_true(json_is_true(json_object_get(resp, "finished")));
    const char *link = resp_str(j, "share_link");
    assert_non_null(link);
    assert_non_null(strstr(link, "/s/"));
    assert_int_equal(strncmp(link, "http://", 7), 0);
    char path[128], id[32];
    snprintf(path, sizeof path, "%s", strstr(link, "/s/"));
    assert_int_equal(strlen(path), 3 + 64);
    snprintf(id, sizeof id, "%s", resp_str(j, "link_id"));
    assert_int_equal(strlen(id), 16);
    assert_null(strstr(path, id)); /* the id is not a piece of the token */
    /* the reference's response_message: the JSON text of the share */
    json_t *ref = json_loads(resp_str(j, "response_message"), 0, NULL);
    assert_non_null(ref);
    assert_string_equal(json_string_value(json_object_get(ref, "share_link")), link);
    assert_string_equal(json_string_value(json_object_get(ref, "file_name")), "plan.md");
    assert_string_equal(json_string_value(json_object_get(ref, "expires_in")), "7 days");
    assert_true(json_is_string(json_object_get(ref, "last_modified")));
    json_decref(ref);
    json_decref(j);

    /* anyone with the link reads it, with no token */
    struct hc_resp r;
    assert_int_equal(get_open("GET", path, &r), 200);
    assert_int_equal(r.len, strlen("step 1: ship"));
    assert_memory_equal(r.body, "step 1: ship", r.len);
    assert_non_null(strstr(r.ctype, "text/plain"));
    hc_resp_free(&r);
    /* the current content: a new version is what the link serves */
    assert_int_equal(sq("alice", "write", json_pack("{s:s,s:s}", "file_path", "notes/plan.md",
                                                    "content", "step 2: celebrate"), NULL), 200);
    assert_int_equal(get_open("GET", path, &r), 200);
    assert_memory_equal(r.body, "step 2: celebrate", r.len);
    hc_resp_free(&r);
    /* read-only: no other method */
    const char *methods[] = {"POST", "PUT", "DELETE"};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(get_open(methods[i], path, &r), 405);
        hc_resp_free(&r);
    }
    assert_int_equal(get_open("GET", path, &r), 200);
    assert_memory_equal(r.body, "step 2: celebrate", r.len);
    hc_resp_free(&r);
    /* audited under the owner, with the link id and never the token */
    assert_true(link_rows("alice", "allowed", id) >= 2);
    assert_int_equal(kf_call(g_kf, "GET", "/access/audit?agent=alice", NULL, &j), 200);
    char *dump = json_dumps(j, 0);
    assert_null(strstr(dump, path + 3));
    free(dump);
    json_decref(j);
    /* listed with the owner's shares */
    assert_int_equal(sq("alice", "shares", json_object(), &j), 200);
    json_t *links = json_object_get(json_object_get(j, "response"), "links");
    assert_int_equal(json_array_size(links), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(links, 0), "link_id")), id);
    json_decref(j);

    /* misses: one 404 each, whatever the reason */
    char bad[128];
    snprintf(bad, sizeof bad, "/s/%064d", 0);
    expect_404(bad);
    expect_404("/s/short");
    snprintf(bad, sizeof bad, "%s", path);
    bad[3] = bad[3] == 'A' ? 'B' : 'A'; /* upper case is not a token */
    expect_404(bad);
    expect_404("/s/..%2f..%2fetc%2fpasswd");
    assert_true(link_rows("-", "denied", "") >= 1);

    /* another agent cannot revoke alice's link */
    assert_int_equal(sq("mallory", "unshare", json_pack("{s:s}", "link_id", id), NULL), 404);
    assert_int_equal(sq("mallory", "unshare", json_pack("{s:s}", "file_path", "notes/plan.md"), NULL), 404);
    assert_int_equal(get_open("GET", path, &r), 200);
    hc_resp_free(&r);
    /* alice revokes it by its id: gone */
    assert_int_equal(sq("alice", "unshare", json_pack("{s:s}", "link_id", id), &j), 200);
    json_decref(j);
    expect_404(path);
    /* a revoked link is an unknown token: audited with no owner, same id */
    assert_true(link_rows("-", "denied", id) >= 1);
}

static void test_link_revoke_expire_delete(void **state)
{
    (void)state;
    json_t *j = NULL;
    struct hc_resp r;
    char p1[128], p2[128], p3[128];
    assert_int_equal(sq("bob", "write", json_pack("{s:s,s:s}", "file_path", "a.txt", "content", "A"), NULL), 200);
    /* two links to one file, revoked together by path */
    assert_int_equal(sq("bob", "share_file", json_pack("{s:s}", "file_path", "a.txt"), &j), 200);
    snprintf(p1, sizeof p1, "%s", strstr(resp_str(j, "share_link"), "/s/"));
    json_decref(j);
    assert_int_equal(sq("bob", "share", json_pack("{s:s}", "file_path", "a.txt"), &j), 200);
    snprintf(p2, sizeof p2, "%s", strstr(resp_str(j, "share_link"), "/s/"));
    json_decref(j);
    assert_string_not_equal(p1, p2);
    assert_int_equal(get_open("GET", p1, &r), 200);
    hc_resp_free(&r);
    assert_int_equal(sq("bob", "unshare", json_pack("{s:s}", "file_path", "a.txt"), &j), 200);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "response"), "revoked")), 2);
    json_decref(j);
    expect_404(p1);
    expect_404(p2);
    assert_int_equal(sq("bob", "unshare", json_pack("{s:s}", "file_path", "a.txt"), NULL), 404);

    /* a link that expires */
    assert_int_equal(sq("bob", "share", json_pack("{s:s,s:i}", "file_path", "a.txt", "expires_in", 1), &j), 200);
    snprintf(p3, sizeof p3, "%s", strstr(resp_str(j, "share_link"), "/s/"));
    json_decref(j);
    sleep(2);
    expect_404(p3);

    /* a deleted file: the link finds nothing */
    assert_int_equal(sq("bob", "share", json_pack("{s:s}", "file_path", "a.txt"), &j), 200);
    snprintf(p3, sizeof p3, "%s", strstr(resp_str(j, "share_link"), "/s/"));
    json_decref(j);
    assert_int_equal(sq("bob", "delete_file", json_pack("{s:s}", "file_path", "a.txt"), NULL), 200);
    expect_404(p3);

    /* refused: a directory, the root, a path out of the root, read-write,
     * over 30 days, another agent's file */
    assert_int_equal(sq("bob", "create_dir", json_pack("{s:s}", "dir_path", "d"), NULL), 200);
    assert_int_equal(sq("bob", "share", json_pack("{s:s}", "file_path", "d"), NULL), 409);
    assert_int_equal(sq("bob", "share", json_pack("{s:s}", "file_path", ""), NULL), 400);
    assert_int_equal(sq("bob", "share", json_pack("{s:s}", "file_path", "../alice/notes/plan.md"), NULL), 400);
    assert_int_equal(sq("bob", "write", json_pack("{s:s,s:s}", "file_path", "b.txt", "content", "B"), NULL), 200);
    assert_int_equal(sq("bob", "share", json_pack("{s:s,s:s}", "file_path", "b.txt", "mode", "rw"), NULL), 400);
    assert_int_equal(sq("bob", "share", json_pack("{s:s,s:s}", "file_path", "b.txt", "expires_in", "31 days"), NULL), 400);
    assert_int_equal(sq("bob", "share", json_pack("{s:s,s:s}", "file_path", "notes/plan.md", "owner", "alice"), NULL), 403);
    /* binary content comes back byte for byte, not as text */
    assert_int_equal(sq("bob", "write", json_pack("{s:s,s:s}", "file_path", "bin", "content", "\x01\x02"), NULL), 200);
    assert_int_equal(sq("bob", "share", json_pack("{s:s}", "file_path", "bin"), &j), 200);
    snprintf(p3, sizeof p3, "%s", strstr(resp_str(j, "share_link"), "/s/"));
    json_decref(j);
    assert_int_equal(get_open("GET", p3, &r), 200);
    assert_int_equal(r.len, 2);
    assert_non_null(strstr(r.ctype, "application/octet-stream"));
    hc_resp_free(&r);
    /* the kernel still serves */
    assert_int_equal(kf_call(g_kf, "GET", "/status", NULL, NULL), 200);
}

/* tool calls that all failed: the reference's 200 with finished: false;
 * malformed and unauthorized requests keep their 4xx */
static void test_failed_calls_answer(void **state)
{
    (void)state;
    json_t *j = NULL;
    long st = kf_call(g_kf, "POST", "/query",
                      "{\"agent_name\":\"carol\",\"query_type\":\"tool\",\"query_data\":{\"tool_calls\":"
                      "[{\"name\":\"nobody/missing\",\"parameters\":{}},"
                      "{\"name\":\"aios/calculator\",\"parameters\":{\"expression\":\"1/(\"}}]}}", &j);
    expect_status(st, 200, j);
    json_t *resp = json_object_get(j, "response");
    assert_string_equal(json_string_value(json_object_get(resp, "response_class")), "tool");
    assert_true(json_is_false(json_object_get(resp, "finished")));
    assert_int_equal(json_integer_value(json_object_get(resp, "status_code")), 404);
    assert_non_null(strstr(json_string_value(json_object_get(resp, "response_message")), "Tool calling error"));
    assert_non_null(strstr(json_string_value(json_object_get(resp, "error")), "2 of 2"));
    assert_int_equal(json_array_size(json_object_get(resp, "tool_results")), 2);
    assert_int_equal(json_array_size(json_object_get(j, "start_times")), 1);
    json_decref(j);
    /* malformed: 400 */
    st = kf_call(g_kf, "POST", "/query",
                 "{\"agent_name\":\"carol\",\"query_type\":\"tool\",\"query_data\":{\"tool_calls\":7}}", &j);
    expect_status(st, 400, j);
    json_decref(j);
    st = kf_call(g_kf, "POST", "/query",
                 "{\"agent_name\":\"carol\",\"query_type\":\"tool\",\"query_data\":{\"tool_calls\":"
                 "[{\"parameters\":{}}]}}", &j);
    expect_status(st, 400, j);
    json_decref(j);
    /* unauthorized: no token 401, another agent's name 403 */
    char tok[128];
    kf_register_agent(g_kf, "dave", tok, sizeof tok);
    const char *q = "{\"agent_name\":\"carol\",\"query_type\":\"tool\",\"query_data\":{\"tool_calls\":"
                    "[{\"name\":\"nobody/missing\",\"parameters\":{}}]}}";
    expect_status(kf_call_as(g_kf, NULL, NULL, "POST", "/query", q, &j), 401, j);
    json_decref(j);
    expect_status(kf_call_as(g_kf, tok, NULL, "POST", "/query", q, &j), 403, j);
    json_decref(j);
    /* dave's own failing call: a 200 that is not finished */
    const char *qd = "{\"agent_name\":\"dave\",\"query_type\":\"tool\",\"query_data\":{\"tool_calls\":"
                     "[{\"name\":\"nobody/missing\",\"parameters\":{}}]}}";
    expect_status(kf_call_as(g_kf, tok, NULL, "POST", "/query", qd, &j), 200, j);
    assert_true(json_is_false(json_object_get(json_object_get(j, "response"), "finished")));
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_share_file_link),
        cmocka_unit_test(test_link_revoke_expire_delete),
        cmocka_unit_test(test_failed_calls_answer),
    };
    return cmocka_run_group_tests(tests, group_setup, kf_group_teardown);
}
