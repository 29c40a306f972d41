/* Integration: the tool manager through the real daemon.
 *
 * One kernel with a config that registers fixture tools (shell scripts in
 * tests/fixtures/tools), an AIOS-style tool folder, and the C MCP server of
 * tests/mcp. Calls go through AIOS POST /query. Checks: GET /tools; the
 * builtins; schema mismatches answered before anything runs; every call of
 * a request answered under its id; timeouts kill a hung tool; the output
 * cap; MCP calls, paging, timeout and restart; the sandbox (no writes
 * outside the agent's root, no network unless allowed, a fork bomb
 * bounded); max_concurrency and conflict groups observed by a tool that
 * records how many of its kind run at once (no timing assertions). Tools
 * see the agent's files as a view: what they change comes back as new
 * versions, their deletes wait for the operator's approval like any delete,
 * they cannot touch the real files, and one that fills the view past the
 * agent's quota is killed and its excess refused. */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "tools/tools.h"
#include "util/util.h"

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef AIOS_MCP_TEST_SERVER
#error "built by tests/CMakeLists.txt with AIOS_MCP_TEST_SERVER"
#endif

static bool g_bwrap;
static char g_pids_mode[32];

#define FIX AIOS_TOOL_FIXTURES

static const char *CONFIG =
    "tools:\n"
    "  workers: 8\n"
    "  external:\n"
    "    - name: test/echo\n"
    "      command: " FIX "/echo_args.sh\n"
    "      parameters: {type: object, properties: {msg: {type: string}, n: {type: integer}},"
    " required: [msg], additionalProperties: false}\n"
    "    - {name: test/sleepy, command: " FIX "/sleepy.sh, timeout_ms: 500}\n"
    "    - {name: test/sleepy_long, command: " FIX "/sleepy.sh, timeout_ms: 120000}\n"
    "    - {name: test/bigout, command: " FIX "/bigout.sh, max_output_bytes: 1000}\n"
    "    - {name: test/fail, command: " FIX "/fail.sh}\n"
    "    - {name: test/escape, command: " FIX "/escape.sh}\n"
    "    - {name: test/net, command: " FIX "/net.sh}\n"
    "    - {name: test/net_allowed, command: " FIX "/net.sh, network: true}\n"
    "    - {name: test/forkbomb, command: " FIX "/forkbomb.sh, timeout_ms: 3000, max_procs: 32}\n"
    "    - {name: test/tmpfill, command: " FIX "/tmpfill.sh, memory_mb: 64}\n"
    "    - {name: test/conc_one, command: " FIX "/conc.sh, max_concurrency: 1}\n"
    "    - {name: test/conc_any, command: " FIX "/conc.sh}\n"
    "    - {name: test/conflict_a, command: " FIX "/conc.sh, conflicts: [printer]}\n"
    "    - {name: test/conflict_b, command: " FIX "/conc.sh, conflicts: [printer]}\n"
    "    - {name: test/files, command: " FIX "/files.sh, timeout_ms: 1500}\n"
    "    - {name: test/fill, command: " FIX "/fill.sh, timeout_ms: 20000}\n"
    "  folders: [" FIX "/wordcount]\n"
    "  mcp_servers:\n"
    "    - {name: testmcp, command: " AIOS_MCP_TEST_SERVER ", timeout_ms: 1500}\n"
    "storage:\n"
    "  quota_bytes: 4194304\n";

static int group_setup(void **state)
{
    (void)state;
    g_kf = kf_start_config(CONFIG);
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "GET", "/tools", NULL, &j), 200);
    json_t *sb = json_object_get(j, "sandbox");
    g_bwrap = json_is_true(json_object_get(sb, "bwrap"));
    snprintf(g_pids_mode, sizeof g_pids_mode, "%s", json_string_value(json_object_get(sb, "pids_limit")) ?: "?");
    if (!g_bwrap) fprintf(stderr, "WARNING: bwrap unusable here: %s\n",
                          json_string_value(json_object_get(sb, "problem")));
    json_decref(j);
    return 0;
}

/* POST /query with query_type tool to kf; returns the status */
static long tool_query_kf(struct kernel_fixture *kf, const char *agent, const char *calls_json,
                          json_t **out)
{
    size_t n = strlen(calls_json) + strlen(agent) + 128;
    char *body = malloc(n);
    snprintf(body, n, "{\"agent_name\":\"%s\",\"query_type\":\"tool\",\"query_data\":{\"tool_calls\":%s}}",
             agent, calls_json);
    long st = kf_call(kf, "POST", "/query", body, out);
    free(body);
    /* calls that were well formed and allowed but all failed: a 200 whose
     * response is not finished, with the status the failure would have had
     * (as the reference kernel answers; assert_failed_body checks it) */
    json_t *resp = out ? json_object_get(json_object_get(*out, "response"), "response_class") : NULL;
    if (st == 200 && resp && json_is_false(json_object_get(json_object_get(*out, "response"), "finished")))
        st = (long)json_integer_value(json_object_get(json_object_get(*out, "response"), "status_code"));
    return st;
}

/* j is a 200 answer whose calls all failed: finished false, an error that
 * contains needle (in the error line or a call's error) */
static void assert_failed_body(json_t *j, const char *needle)
{
    json_t *resp = json_object_get(j, "response");
    assert_true(json_is_false(json_object_get(resp, "finished")));
    assert_true(json_is_string(json_object_get(resp, "error")));
    assert_non_null(strstr(json_string_value(json_object_get(resp, "response_message")),
                           "Tool calling error"));
    char *dump = json_dumps(resp, JSON_COMPACT);
    if (!strstr(dump, needle)) fail_msg("'%s' is not in %s", needle, dump);
    free(dump);
}

static long tool_query(const char *agent, const char *calls_json, json_t **out)
{
    return tool_query_kf(g_kf, agent, calls_json, out);
}

static json_t *result_of(json_t *j, size_t i)
{
    return json_array_get(json_object_get(json_object_get(j, "response"), "tool_results"), i);
}

static void test_list(void **state)
{
    (void)state;
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "GET", "/tools", NULL, &j), 200);
    json_t *data = json_object_get(j, "data");
    const char *want[] = {"aios/calculator", "aios/current_time", "aios/read_file", "test/echo",
                          "example/wordcount", "testmcp/add", "testmcp/echo", "testmcp/slow",
                          "testmcp/crash"};
    for (size_t w = 0; w < sizeof want / sizeof want[0]; w++) {
        bool found = false;
        size_t i;
        json_t *t;
        json_array_foreach(data, i, t) {
            json_t *fn = json_object_get(t, "function");
            if (strcmp(json_string_value(json_object_get(fn, "name")), want[w])) continue;
            found = true;
            assert_string_equal(json_string_value(json_object_get(t, "type")), "function");
            assert_true(json_is_object(json_object_get(fn, "parameters")));
            assert_true(json_is_string(json_object_get(fn, "description")));
        }
        if (!found) fail_msg("tool %s is not listed", want[w]);
    }
    json_decref(j);
}

static void test_builtins(void **state)
{
    (void)state;
    json_t *j = NULL;
    assert_int_equal(tool_query("t/a",
                                "[{\"id\":\"c1\",\"name\":\"aios/calculator\",\"parameters\":"
                                "{\"expression\":\"2*(3+4)^2 - sqrt(16) + -2^2 + max(1,7,3) % 4\"}},"
                                "{\"id\":\"c2\",\"name\":\"aios/current_time\",\"parameters\":{}}]",
                                &j), 200);
    json_t *r0 = result_of(j, 0), *r1 = result_of(j, 1);
    assert_string_equal(json_string_value(json_object_get(r0, "id")), "c1");
    assert_true(json_is_true(json_object_get(r0, "ok")));
    /* 98 - 4 - 4 + 3 = 93 */
    assert_true(json_number_value(json_object_get(json_object_get(r0, "result"), "value")) == 93.0);
    assert_string_equal(json_string_value(json_object_get(r1, "id")), "c2");
    assert_true(json_is_string(json_object_get(json_object_get(r1, "result"), "iso8601")));
    json_t *resp = json_object_get(j, "response");
    assert_string_equal(json_string_value(json_object_get(resp, "response_class")), "tool");
    assert_true(json_is_true(json_object_get(resp, "finished")));
    assert_true(json_is_null(json_object_get(resp, "error")));
    assert_int_equal(json_integer_value(json_object_get(resp, "status_code")), 200);
    json_decref(j);

    /* a parse error names its position; one call alone failing is a 200
     * that is not finished, with the 400 it would have been */
    assert_int_equal(tool_query("t/a", "[{\"name\":\"aios/calculator\",\"parameters\":{\"expression\":\"2*(3+\"}}]", &j), 400);
    assert_failed_body(j, "at position 6");
    json_decref(j);
}

/* File tools go through the storage manager in the agent's name: 501
 * while the kernel has none; with one, a file written by aios/write_file
 * is read back by aios/read_file and seen by a sandboxed program in the
 * agent's directory (the same files). */
static void test_file_tools(void **state)
{
    (void)state;
    json_t *j = NULL;
    long st = tool_query("files/a", "[{\"name\":\"aios/write_file\",\"parameters\":{\"path\":\"n/x.txt\",\"content\":\"hello tools\"}}]", &j);
    if (st == 501) {
        assert_failed_body(j, "storage manager");
        json_decref(j);
        fprintf(stderr, "no storage manager in this build: file tools answer 501 (checked)\n");
        return;
    }
    assert_int_equal(st, 200);
    json_decref(j);
    assert_int_equal(tool_query("files/a", "[{\"name\":\"aios/read_file\",\"parameters\":{\"path\":\"n/x.txt\"}}]", &j), 200);
    assert_string_equal(json_string_value(json_object_get(json_object_get(result_of(j, 0), "result"), "content")), "hello tools");
    json_decref(j);
    /* another agent does not see it */
    st = tool_query("files/b", "[{\"name\":\"aios/read_file\",\"parameters\":{\"path\":\"n/x.txt\"}}]", &j);
    assert_true(st == 404 || st == 400);
    json_decref(j);
    /* climbing out is refused by the storage manager */
    st = tool_query("files/a", "[{\"name\":\"aios/read_file\",\"parameters\":{\"path\":\"../../etc/passwd\"}}]", &j);
    assert_true(st == 400 || st == 403 || st == 404);
    json_decref(j);
    char p[1024];
    snprintf(p, sizeof p, "%s/root/files%%2Fa/n/x.txt", g_kf->dir);
    assert_int_equal(access(p, F_OK), 0);
}

static void test_schema_and_ids(void **state)
{
    (void)state;
    json_t *j = NULL;
    /* mixed: good call, wrong type, missing required, extra property,
     * unknown tool, OpenAI-shaped call with arguments as a JSON string */
    assert_int_equal(tool_query("t/b",
        "[{\"id\":\"ok\",\"name\":\"test/echo\",\"parameters\":{\"msg\":\"hi\",\"n\":2}},"
        "{\"id\":\"type\",\"name\":\"test/echo\",\"parameters\":{\"msg\":5}},"
        "{\"id\":\"req\",\"name\":\"test/echo\",\"parameters\":{\"n\":1}},"
        "{\"id\":\"extra\",\"name\":\"test/echo\",\"parameters\":{\"msg\":\"a\",\"zzz\":1}},"
        "{\"id\":\"nope\",\"name\":\"test/nope\",\"parameters\":{}},"
        "{\"id\":\"oa\",\"type\":\"function\",\"function\":{\"name\":\"testmcp/add\",\"arguments\":\"{\\\"a\\\":2,\\\"b\\\":3}\"}}]",
        &j), 200);
    const char *ids[] = {"ok", "type", "req", "extra", "nope", "oa"};
    for (size_t i = 0; i < 6; i++)
        assert_string_equal(json_string_value(json_object_get(result_of(j, i), "id")), ids[i]);
    json_t *ok = result_of(j, 0);
    assert_true(json_is_true(json_object_get(ok, "ok")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(ok, "result"), "msg")), "hi");
    for (size_t i = 1; i <= 3; i++) {
        json_t *e = json_object_get(result_of(j, i), "error");
        assert_string_equal(json_string_value(json_object_get(e, "type")), "invalid_arguments");
        assert_non_null(strstr(json_string_value(json_object_get(e, "message")), "schema"));
    }
    assert_non_null(strstr(json_string_value(json_object_get(json_object_get(result_of(j, 1), "error"), "message")), "$.msg"));
    assert_string_equal(json_string_value(json_object_get(json_object_get(result_of(j, 4), "error"), "type")), "not_found");
    assert_string_equal(json_string_value(json_object_get(result_of(j, 5), "result")), "5");
    json_t *resp = json_object_get(j, "response");
    assert_non_null(strstr(json_string_value(json_object_get(resp, "error")), "4 of 6"));
    json_t *msgs = json_loads(json_string_value(json_object_get(resp, "response_message")), 0, NULL);
    assert_int_equal(json_array_size(msgs), 6);
    assert_true(json_is_null(json_array_get(msgs, 1)));
    json_decref(msgs);
    json_decref(j);

    /* a single mismatching call: (a 200 that is not finished with) 400 naming the field */
    assert_int_equal(tool_query("t/b", "[{\"name\":\"testmcp/add\",\"parameters\":{\"a\":\"x\",\"b\":1}}]", &j), 400);
    assert_failed_body(j, "$.a");
    json_decref(j);
    assert_int_equal(tool_query("t/b", "[{\"name\":\"no/such\",\"parameters\":{}}]", &j), 404);
    assert_failed_body(j, "GET /tools");
    json_decref(j);
    /* a call that is not a call is a malformed request: a real 400 */
    assert_int_equal(tool_query("t/b", "[{\"parameters\":{}}]", &j), 400);
    assert_error_body(j, NULL);
    json_decref(j);
    assert_int_equal(tool_query("t/b", "[]", &j), 400);
    assert_error_body(j, "non-empty");
    json_decref(j);
}

static void test_external(void **state)
{
    (void)state;
    if (!g_bwrap) skip();
    json_t *j = NULL;
    /* AIOS-style folder tool; the single-call response_message is the result */
    assert_int_equal(tool_query("t/c", "[{\"name\":\"example/wordcount\",\"parameters\":{\"text\":\"one two three\"}}]", &j), 200);
    /* response_message is text (the reference types it as a string) */
    json_t *msg = json_loads(json_string_value(json_object_get(json_object_get(j, "response"), "response_message")), 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(msg, "words")), 3);
    json_decref(msg);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(result_of(j, 0), "result"), "words")), 3);
    json_decref(j);
    /* a hung tool is killed at its timeout: 504 */
    assert_int_equal(tool_query("t/c", "[{\"name\":\"test/sleepy\",\"parameters\":{}}]", &j), 504);
    assert_failed_body(j, "timeout");
    json_decref(j);
    /* oversized output is cut with a marker */
    assert_int_equal(tool_query("t/c", "[{\"name\":\"test/bigout\",\"parameters\":{}}]", &j), 200);
    json_t *r = result_of(j, 0);
    assert_true(json_is_true(json_object_get(r, "truncated")));
    const char *txt = json_string_value(json_object_get(r, "result"));
    assert_non_null(txt);
    assert_true(strlen(txt) < 1100);
    assert_non_null(strstr(txt, "[aios: output truncated at 1000 bytes]"));
    json_decref(j);
    /* a failing tool: its stderr reaches the agent */
    assert_int_equal(tool_query("t/c", "[{\"name\":\"test/fail\",\"parameters\":{}}]", &j), 502);
    assert_failed_body(j, "frobnicator");
    json_decref(j);
    /* the kernel still serves */
    assert_int_equal(kf_call(g_kf, "GET", "/status", NULL, NULL), 200);
}

static void test_mcp(void **state)
{
    (void)state;
    if (!g_bwrap) skip();
    json_t *j = NULL;
    assert_int_equal(tool_query("t/d", "[{\"id\":\"x\",\"name\":\"testmcp/add\",\"parameters\":{\"a\":40,\"b\":2}},"
                                       "{\"id\":\"y\",\"name\":\"testmcp/echo\",\"parameters\":{\"text\":\"hello\"}}]", &j), 200);
    assert_string_equal(json_string_value(json_object_get(result_of(j, 0), "result")), "42");
    assert_string_equal(json_string_value(json_object_get(result_of(j, 1), "result")), "hello");
    json_decref(j);
    /* a hung MCP call times out; the server is killed and restarted */
    assert_int_equal(tool_query("t/d", "[{\"name\":\"testmcp/slow\",\"parameters\":{\"ms\":20000}}]", &j), 504);
    assert_failed_body(j, "restarted");
    json_decref(j);
    long st = 0;
    for (int i = 0; i < 20 && st != 200; i++) {
        st = tool_query("t/d", "[{\"name\":\"testmcp/add\",\"parameters\":{\"a\":1,\"b\":1}}]", &j);
        json_decref(j);
        if (st != 200) usleep(200000);
    }
    assert_int_equal(st, 200);
    /* a server that dies mid-call is restarted too */
    assert_int_equal(tool_query("t/d", "[{\"name\":\"testmcp/crash\",\"parameters\":{}}]", &j), 502);
    assert_failed_body(j, "exited");
    json_decref(j);
    st = 0;
    for (int i = 0; i < 20 && st != 200; i++) {
        st = tool_query("t/d", "[{\"name\":\"testmcp/echo\",\"parameters\":{\"text\":\"back\"}}]", &j);
        if (st == 200)
            assert_string_equal(json_string_value(json_object_get(result_of(j, 0), "result")), "back");
        json_decref(j);
        if (st != 200) usleep(200000);
    }
    assert_int_equal(st, 200);
}

static void test_sandbox_fs(void **state)
{
    (void)state;
    if (!g_bwrap) skip();
    char outside[512], body[1024];
    snprintf(outside, sizeof outside, "%s/escaped.txt", g_kf->dir);
    snprintf(body, sizeof body, "[{\"name\":\"test/escape\",\"parameters\":{\"outside\":\"%s\"}}]", outside);
    json_t *j = NULL;
    assert_int_equal(tool_query("sand/box", body, &j), 200);
    json_t *r = json_object_get(result_of(j, 0), "result");
    assert_true(json_is_true(json_object_get(r, "inside")));
    assert_false(json_is_true(json_object_get(r, "usr")));
    /* a root kernel never gives a tool root */
    assert_false(json_is_true(json_object_get(r, "shadow")));
    if (geteuid() == 0) assert_int_equal(json_integer_value(json_object_get(r, "uid")), 65534);
    else assert_int_equal(json_integer_value(json_object_get(r, "uid")), (json_int_t)geteuid());
    json_decref(j);
    /* whatever the tool believed, nothing landed outside its root */
    assert_int_not_equal(access(outside, F_OK), 0);
    assert_int_not_equal(access("/usr/aios-escape.txt", F_OK), 0);
    char inside[512];
    snprintf(inside, sizeof inside, "%s/root/sand%%2Fbox/inside.txt", g_kf->dir);
    assert_int_equal(access(inside, F_OK), 0);
}

static void test_sandbox_net(void **state)
{
    (void)state;
    if (!g_bwrap) skip();
    char body[256];
    json_t *j = NULL;
    snprintf(body, sizeof body, "[{\"name\":\"test/net\",\"parameters\":{\"port\":%d}},"
             "{\"name\":\"test/net_allowed\",\"parameters\":{\"port\":%d}}]", g_kf->child.port, g_kf->child.port);
    assert_int_equal(tool_query("t/e", body, &j), 200);
    /* network off: the kernel's own port on loopback is unreachable */
    assert_false(json_is_true(json_object_get(json_object_get(result_of(j, 0), "result"), "connected")));
    /* the same script with network: true connects, so the check is real */
    assert_true(json_is_true(json_object_get(json_object_get(result_of(j, 1), "result"), "connected")));
    json_decref(j);
}

/* processes below pid (not counting pid) */
static int count_descendants(pid_t root)
{
    static int ppid_of[4194304 / 8];
    DIR *d = opendir("/proc");
    int pids[65536], n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) && n < 65536) {
        int pid = atoi(e->d_name);
        if (pid <= 0 || pid >= (int)(sizeof ppid_of / sizeof ppid_of[0])) continue;
        char p[64], buf[512];
        snprintf(p, sizeof p, "/proc/%d/stat", pid);
        FILE *f = fopen(p, "r");
        if (!f) continue;
        size_t r = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[r] = 0;
        char *cp = strrchr(buf, ')');
        int ppid = 0;
        if (!cp || sscanf(cp + 2, "%*c %d", &ppid) != 1) continue;
        ppid_of[pid] = ppid;
        pids[n++] = pid;
    }
    if (d) closedir(d);
    int count = 0;
    for (int i = 0; i < n; i++) {
        int x = pids[i], hops = 0;
        while (x > 1 && x != root && hops++ < 64) {
            int px = ppid_of[x];
            if (px <= 0 || px >= (int)(sizeof ppid_of / sizeof ppid_of[0])) break;
            x = px;
        }
        if (x == root && pids[i] != root) count++;
    }
    for (int i = 0; i < n; i++) ppid_of[pids[i]] = 0;
    return count;
}

struct bomb {
    long status;
    atomic_int done;
};

static void *bomb_thread(void *arg)
{
    struct bomb *b = arg;
    json_t *j = NULL;
    b->status = tool_query("t/f", "[{\"name\":\"test/forkbomb\",\"parameters\":{}}]", &j);
    json_decref(j);
    atomic_store(&b->done, 1);
    return NULL;
}

static void test_sandbox_forkbomb(void **state)
{
    (void)state;
    if (!g_bwrap) skip();
    if (!strcmp(g_pids_mode, "none")) {
        fprintf(stderr, "WARNING: no way to bound processes here (pids_limit none); skipping\n");
        skip();
    }
    struct bomb b = {0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, bomb_thread, &b), 0);
    int peak = 0, n_status = 0;
    while (!atomic_load(&b.done)) {
        int c = count_descendants(g_kf->child.pid);
        if (c > peak) peak = c;
        /* the kernel keeps serving during the bomb */
        if (kf_call(g_kf, "GET", "/status", NULL, NULL) == 200) n_status++;
        usleep(20000);
    }
    pthread_join(th, NULL);
    fprintf(stderr, "fork bomb: peak %d processes below the kernel (max_procs 32, %s)\n", peak, g_pids_mode);
    assert_true(b.status == 504 || b.status == 502);
    assert_true(n_status > 0);
    /* 32 in the sandbox's cgroup, plus the MCP server's few */
    assert_true(peak <= 32 + 4);
    /* and everything is gone afterwards (only the MCP server remains: bwrap, its init, the server) */
    int left = 99;
    for (int i = 0; i < 100 && left > 3; i++) {
        left = count_descendants(g_kf->child.pid);
        if (left > 3) usleep(20000);
    }
    assert_true(left <= 3);
}

/* read a counter file the conc.sh tool keeps in the agent's root */
static int read_counter(const char *agent, const char *file)
{
    char p[1024];
    char dn[256];
    assert_int_equal(tool_agent_dirname(agent, dn, sizeof dn), 0);
    snprintf(p, sizeof p, "%s/root/%s/%s", g_kf->dir, dn, file);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    int v = -1;
    if (fscanf(f, "%d", &v) != 1) v = -1;
    fclose(f);
    return v;
}

static void test_limits(void **state)
{
    (void)state;
    if (!g_bwrap) skip();
    json_t *j = NULL;
    /* unlimited: four calls meet at a barrier, so they ran at once */
    assert_int_equal(tool_query("conc/any", "[{\"name\":\"test/conc_any\",\"parameters\":{\"barrier\":4}},"
                                            "{\"name\":\"test/conc_any\",\"parameters\":{\"barrier\":4}},"
                                            "{\"name\":\"test/conc_any\",\"parameters\":{\"barrier\":4}},"
                                            "{\"name\":\"test/conc_any\",\"parameters\":{\"barrier\":4}}]", &j), 200);
    for (size_t i = 0; i < 4; i++)
        assert_true(json_is_true(json_object_get(json_object_get(result_of(j, i), "result"), "barrier_met")));
    json_decref(j);
    assert_int_equal(read_counter("conc/any", "max"), 4);

    /* max_concurrency 1: never two at once */
    assert_int_equal(tool_query("conc/one", "[{\"name\":\"test/conc_one\",\"parameters\":{\"hold_ms\":100}},"
                                            "{\"name\":\"test/conc_one\",\"parameters\":{\"hold_ms\":100}},"
                                            "{\"name\":\"test/conc_one\",\"parameters\":{\"hold_ms\":100}}]", &j), 200);
    json_decref(j);
    assert_int_equal(read_counter("conc/one", "max"), 1);
    assert_int_equal(read_counter("conc/one", "cur"), 0);

    /* conflict group: a and b never overlap */
    assert_int_equal(tool_query("conc/grp", "[{\"name\":\"test/conflict_a\",\"parameters\":{\"hold_ms\":100}},"
                                            "{\"name\":\"test/conflict_b\",\"parameters\":{\"hold_ms\":100}},"
                                            "{\"name\":\"test/conflict_a\",\"parameters\":{\"hold_ms\":100}},"
                                            "{\"name\":\"test/conflict_b\",\"parameters\":{\"hold_ms\":100}}]", &j), 200);
    for (size_t i = 0; i < 4; i++) assert_true(json_is_true(json_object_get(result_of(j, i), "ok")));
    json_decref(j);
    assert_int_equal(read_counter("conc/grp", "max"), 1);
}

/* a tool's private /tmp is a tmpfs (host RAM) bounded by a quarter of its
 * memory limit: 64 MiB -> 16 MiB; 8 MiB fit, 32 MiB do not */
static void test_tmp_bounded(void **state)
{
    (void)state;
    if (!g_bwrap) skip();
    json_t *j = NULL;
    assert_int_equal(tool_query("t/tmp", "[{\"name\":\"test/tmpfill\",\"parameters\":{\"mb\":8}}]", &j), 200);
    assert_true(json_is_true(json_object_get(json_object_get(result_of(j, 0), "result"), "filled")));
    json_decref(j);
    assert_int_equal(tool_query("t/tmp", "[{\"name\":\"test/tmpfill\",\"parameters\":{\"mb\":32}}]", &j), 200);
    assert_true(json_is_false(json_object_get(json_object_get(result_of(j, 0), "result"), "filled")));
    json_decref(j);
}

struct hogcall {
    long status;
    json_t *j;
};

static void *hog_thread(void *arg)
{
    struct hogcall *c = arg;
    c->status = tool_query("t/hog", "[{\"name\":\"test/conc_any\",\"parameters\":{\"hold_ms\":2500}}]",
                           &c->j);
    return NULL;
}

/* One agent's slow tools cannot stall another agent's: eight 2.5-second
 * calls from one agent (as many as the 8 pool threads and the 8 job
 * workers this config has) leave room for another agent's calculator,
 * which answers at once instead of after the slow calls. */
static void test_fair_tool_pool(void **state)
{
    (void)state;
    if (!g_bwrap) skip();
    enum { N = 8 };
    struct hogcall c[N] = {0};
    pthread_t th[N];
    for (int i = 0; i < N; i++) assert_int_equal(pthread_create(&th[i], NULL, hog_thread, &c[i]), 0);
    usleep(500 * 1000); /* the hog's calls hold their workers */
    int64_t t0 = util_now_us();
    json_t *j = NULL;
    assert_int_equal(tool_query("t/other", "[{\"name\":\"aios/calculator\",\"parameters\":"
                                "{\"expression\":\"6*7\"}}]", &j), 200);
    double secs = (double)(util_now_us() - t0) / 1e6;
    assert_true(json_is_true(json_object_get(result_of(j, 0), "ok")));
    json_decref(j);
    /* the hog's calls all finish, none refused */
    int64_t h0 = util_now_us();
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(c[i].status, 200);
        assert_true(json_is_true(json_object_get(result_of(c[i].j, 0), "ok")));
        json_decref(c[i].j);
    }
    double hog_secs = (double)(util_now_us() - h0) / 1e6 + 0.5;
    fprintf(stderr, "calculator beside 8 slow calls of another agent: %.3f s (the slow calls: %.1f s)\n",
            secs, hog_secs);
    /* without the per-agent caps it waits for the slow calls: >= 2 s */
    assert_true(secs < 1.5);
}

struct longcall {
    struct kernel_fixture *kf;
    long status;
    json_t *j;
};

static void *long_thread(void *arg)
{
    struct longcall *c = arg;
    c->status = tool_query_kf(c->kf, "t/g", "[{\"name\":\"test/sleepy_long\",\"parameters\":{}},"
                                  "{\"name\":\"testmcp/slow\",\"parameters\":{\"ms\":1200}}]", &c->j);
    return NULL;
}

/* SIGTERM while a tool hangs (timeout 120 s): the tool is killed, the
 * caller gets an answer, the kernel exits cleanly and soon. Runs last. */
/* a storage call for agent; the status, *out kept when asked */
static long sto_q(const char *agent, const char *op, const char *params, json_t **out)
{
    char body[2048];
    snprintf(body, sizeof body, "{\"agent_name\":\"%s\",\"query_type\":\"storage\","
             "\"query_data\":{\"operation_type\":\"%s\",\"params\":%s}}", agent, op, params);
    json_t *j = NULL;
    long st = kf_call(g_kf, "POST", "/query", body, &j);
    if (out) *out = json_incref(json_object_get(j, "response"));
    json_decref(j);
    return st;
}

static char *sto_read(const char *agent, const char *path)
{
    char p[512];
    snprintf(p, sizeof p, "{\"file_path\":\"%s\"}", path);
    json_t *r = NULL;
    if (sto_q(agent, "read", p, &r) != 200) {
        json_decref(r);
        return NULL;
    }
    char *c = strdup(json_string_value(json_object_get(r, "content")));
    json_decref(r);
    return c;
}

static json_t *files_entry(json_t *files, const char *key, const char *path)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(files, key), i, e)
        if (!strcmp(json_string_value(json_object_get(e, "path")) ?: "", path)) return e;
    return NULL;
}

static void test_tool_view(void **state)
{
    (void)state;
    if (!g_bwrap) skip();
    const char *A = "view/a";
    assert_int_equal(sto_q(A, "write", "{\"file_path\":\"doc.txt\",\"content\":\"v1\"}", NULL), 200);
    assert_int_equal(sto_q(A, "write", "{\"file_path\":\"keep.txt\",\"content\":\"precious\"}", NULL), 200);
    json_t *j = NULL;
    assert_int_equal(tool_query(A, "[{\"name\":\"test/files\",\"parameters\":{\"read\":\"doc.txt\","
                                   "\"write\":\"doc.txt\",\"content\":\"v2 by the tool\","
                                   "\"delete\":\"keep.txt\",\"link\":\"ln\"}}]", &j), 200);
    json_t *r0 = result_of(j, 0), *res = json_object_get(r0, "result");
    /* the tool saw the agent's file, and believed its changes worked */
    assert_string_equal(json_string_value(json_object_get(res, "read")), "v1");
    assert_true(json_is_true(json_object_get(res, "wrote")));
    assert_true(json_is_true(json_object_get(res, "deleted")));
    json_t *files = json_object_get(r0, "files");
    char *dump = json_dumps(r0, JSON_COMPACT);
    fprintf(stderr, "tool view report: %s\n", dump);
    free(dump);
    /* its write became a new version; the first one is kept */
    assert_non_null(files_entry(files, "written", "doc.txt"));
    char *c = sto_read(A, "doc.txt");
    assert_string_equal(c, "v2 by the tool");
    free(c);
    json_t *h = NULL;
    assert_int_equal(sto_q(A, "history", "{\"file_path\":\"doc.txt\"}", &h), 200);
    json_t *vs = json_object_get(h, "versions");
    assert_int_equal(json_array_size(vs), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(vs, 1), "size")), 2);
    json_decref(h);
    /* its delete went to the operator's approval like a delete call, and
     * with no approval within the tool's timeout it was refused: the file
     * and its history are still there */
    json_t *ref = files_entry(files, "refused", "keep.txt");
    assert_non_null(ref);
    assert_non_null(strstr(json_string_value(json_object_get(ref, "error")), "approval"));
    c = sto_read(A, "keep.txt");
    assert_string_equal(c, "precious");
    free(c);
    /* the link was not imported */
    assert_non_null(files_entry(files, "skipped", "ln"));
    json_decref(j);
    /* the real files were never the tool's: still the kernel's, and no
     * link among them */
    char dn[256], p[1024];
    assert_int_equal(tool_agent_dirname(A, dn, sizeof dn), 0);
    snprintf(p, sizeof p, "%s/root/%s/doc.txt", g_kf->dir, dn);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_uid, geteuid());
    snprintf(p, sizeof p, "%s/root/%s/ln", g_kf->dir, dn);
    assert_int_not_equal(lstat(p, &st), 0);
    /* the audit shows the tool's delete waiting for approval */
    assert_int_equal(kf_call(g_kf, "GET", "/access/audit?agent=view%2Fa", NULL, &j), 200);
    dump = json_dumps(j, JSON_COMPACT);
    assert_non_null(strstr(dump, "awaiting_approval"));
    free(dump);
    json_decref(j);
}

struct bg_call {
    const char *agent, *calls;
    long st;
    json_t *j;
};

static void *bg_tool(void *p)
{
    struct bg_call *b = p;
    b->st = tool_query(b->agent, b->calls, &b->j);
    return NULL;
}

/* Writes the agent makes through storage while its tool runs are neither
 * reverted nor deleted when the tool's view comes back: the view is
 * compared with what was copied into it. The tool (conc.sh, barrier 2)
 * waits inside until the test, having written, lets it go by raising the
 * "arrived" count in its view. */
static void test_tool_view_concurrent_writes(void **state)
{
    (void)state;
    if (!g_bwrap) skip();
    const char *A = "view/c";
    assert_int_equal(sto_q(A, "write", "{\"file_path\":\"doc.txt\",\"content\":\"old\"}", NULL), 200);
    struct bg_call b = {A, "[{\"name\":\"test/conc_any\",\"parameters\":{\"barrier\":2}}]", 0, NULL};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, bg_tool, &b), 0);
    /* the tool's view: the one directory below root/.lsfs/views with an "arrived" file */
    char views[512], arrived[1024] = "";
    snprintf(views, sizeof views, "%s/root/.lsfs/views", g_kf->dir);
    for (int i = 0; i < 400 && !arrived[0]; i++) {
        DIR *d = opendir(views);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char p[1024];
            snprintf(p, sizeof p, "%s/%s/arrived", views, e->d_name);
            if (access(p, F_OK) == 0) snprintf(arrived, sizeof arrived, "%s", p);
        }
        if (d) closedir(d);
        if (!arrived[0]) usleep(25000);
    }
    assert_true(arrived[0]);
    /* meanwhile, through storage: a new file and a new version */
    assert_int_equal(sto_q(A, "write", "{\"file_path\":\"late.txt\",\"content\":\"late\"}", NULL), 200);
    assert_int_equal(sto_q(A, "write", "{\"file_path\":\"doc.txt\",\"content\":\"new\"}", NULL), 200);
    FILE *f = fopen(arrived, "w");
    assert_non_null(f);
    fprintf(f, "9\n");
    fclose(f);
    pthread_join(th, NULL);
    assert_int_equal(b.st, 200);
    json_t *r0 = result_of(b.j, 0);
    assert_true(json_is_true(json_object_get(json_object_get(r0, "result"), "barrier_met")));
    json_t *files = json_object_get(r0, "files");
    assert_null(files_entry(files, "deleted", "late.txt"));
    assert_null(files_entry(files, "written", "doc.txt"));
    assert_non_null(files_entry(files, "written", "max")); /* the tool's own file came back */
    json_decref(b.j);
    char *c = sto_read(A, "late.txt");
    assert_string_equal(c, "late");
    free(c);
    c = sto_read(A, "doc.txt");
    assert_string_equal(c, "new");
    free(c);
}

/* A tool that writes more than the agent's quota into its view is killed,
 * and what it wrote past the quota is refused, naming the limit. */
static void test_tool_view_quota(void **state)
{
    (void)state;
    if (!g_bwrap) skip();
    json_t *j = NULL;
    /* with a call that succeeds beside it, so the answer lists both */
    long st = tool_query("view/fill", "[{\"name\":\"test/fill\",\"parameters\":{}},"
                         "{\"name\":\"test/echo\",\"parameters\":{\"msg\":\"x\"}}]", &j);
    assert_int_equal(st, 200);
    json_t *r0 = result_of(j, 0);
    char *dump = json_dumps(r0, JSON_COMPACT);
    fprintf(stderr, "fill: %.600s\n", dump);
    free(dump);
    json_t *e = json_object_get(r0, "error");
    assert_string_equal(json_string_value(json_object_get(e, "type")), "quota_exceeded");
    assert_non_null(strstr(json_string_value(json_object_get(e, "message")), "storage.quota_bytes"));
    json_t *refused = json_object_get(json_object_get(r0, "files"), "refused");
    assert_true(json_array_size(refused) > 0);
    assert_non_null(strstr(json_string_value(json_object_get(json_array_get(refused, 0), "error")),
                           "storage.quota_bytes"));
    json_decref(j);
    json_t *u = NULL;
    assert_int_equal(sto_q("view/fill", "usage", "{}", &u), 200);
    assert_true(json_integer_value(json_object_get(u, "bytes")) <= 4194304);
    assert_true(json_integer_value(json_object_get(u, "bytes")) > 0);
    json_decref(u);
}

static void test_shutdown_kills_tools(void **state)
{
    (void)state;
    if (!g_bwrap) skip();
    struct longcall c = {.kf = g_kf};
    pthread_t th;
    int before = count_descendants(g_kf->child.pid);
    assert_int_equal(pthread_create(&th, NULL, long_thread, &c), 0);
    for (int i = 0; i < 500 && count_descendants(g_kf->child.pid) <= before; i++) usleep(10000);
    int64_t t0 = util_now_us();
    struct kernel_fixture *kf = g_kf;
    g_kf = NULL;
    kill(kf->child.pid, SIGTERM);
    pthread_join(th, NULL);
    kf_stop(kf); /* asserts exit status 0 */
    double secs = (double)(util_now_us() - t0) / 1e6;
    fprintf(stderr, "shutdown with a hung tool took %.2f s; the call got %ld\n", secs, c.status);
    /* every call ended (503 for the killed one), long before the 120 s timeout */
    assert_true(c.status == 503 || c.status == 200);
    if (c.status == 200) {
        json_t *e = json_object_get(result_of(c.j, 0), "error");
        assert_string_equal(json_string_value(json_object_get(e, "type")), "shutdown");
    }
    json_decref(c.j);
    assert_true(secs < 30);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list),
        cmocka_unit_test(test_builtins),
        cmocka_unit_test(test_file_tools),
        cmocka_unit_test(test_schema_and_ids),
        cmocka_unit_test(test_external),
        cmocka_unit_test(test_mcp),
        cmocka_unit_test(test_sandbox_fs),
        cmocka_unit_test(test_sandbox_net),
        cmocka_unit_test(test_sandbox_forkbomb),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_fair_tool_pool),
        cmocka_unit_test(test_tmp_bounded),
        cmocka_unit_test(test_tool_view),
        cmocka_unit_test(test_tool_view_concurrent_writes),
        cmocka_unit_test(test_tool_view_quota),
        cmocka_unit_test(test_shutdown_kills_tools),
    };
    return cmocka_run_group_tests(tests, group_setup, kf_group_teardown);
}
