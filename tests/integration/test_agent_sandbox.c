/* Integration: a launched agent is sandboxed and known by its run's channel.
 *
 * A real kernel (real bwrap) with OPENAI_API_KEY in its environment runs a
 * hostile agent package: its run.sh tries to read data_dir/admin.token,
 * memory.db, audit.db, another agent's storage root, the runs folder and
 * the kernel's environment, then talks to the kernel with no token (as
 * itself: allowed), naming another agent (header, query body: refused),
 * and with the operator's admin token it was handed (ignored on the
 * channel: still itself, operator routes refused). A lingering agent's
 * channel answers as it while it runs, and a connection opened then is
 * refused once it ended; its socket is gone. An agent the operator allows
 * the host network gets a token instead, which dies with its process.
 * Modes: data_dir 0700, the kernel's files 0600. */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>


static char g_dir[256]; /* temp: agents/, config.yaml */

static void write_file(const char *path, const char *text, int mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    chmod(path, (mode_t)mode);
}

static void make_agent(const char *name, const char *script)
{
    char d[512], p[600], cfg[512];
    snprintf(d, sizeof d, "%s/agents/%s", g_dir, name);
    mkdir(d, 0755);
    snprintf(cfg, sizeof cfg, "{\"name\":\"%s\",\"build\":{\"entry\":\"run.sh\"}}", name);
    snprintf(p, sizeof p, "%s/config.json", d);
    write_file(p, cfg, 0644);
    snprintf(p, sizeof p, "%s/run.sh", d);
    write_file(p, script, 0755);
}

static const char ATTACKER[] =
    "set -- $1\n" /* the task: data_dir and the operator's token */
    "D=\"$1\"\n"
    "try() { if cat \"$1\" >/dev/null 2>&1; then echo \"LEAK $2\"; else echo \"DENIED $2\"; fi; }\n"
    "try \"$D/admin.token\" admin.token\n"
    "try \"$D/memory.db\" memory.db\n"
    "try \"$D/audit.db\" audit.db\n"
    "try \"$D/root/victim/secret.txt\" victim_storage\n"
    "echo \"RUNS $(ls \"$D/agents/runs\" 2>&1 | tr '\\n' ' ')\"\n"
    "if env | grep -q sk-test-secret; then echo 'LEAK env'; else echo 'DENIED env'; fi\n"
    "echo \"UID $(id -u)\"\n"
    "echo \"TOKLEN ${#AIOS_AGENT_TOKEN}\"\n"
    "exec python3 - \"$AIOS_KERNEL_URL\" \"$2\" <<'EOF'\n"
    "import json, sys, urllib.request, urllib.error\n"
    "u, admin = sys.argv[1], sys.argv[2]\n"
    "def call(method, path, body=None, headers={}):\n"
    "    h = {'Content-Type': 'application/json'}\n"
    "    h.update(headers)\n"
    "    data = json.dumps(body).encode() if body is not None else None\n"
    "    req = urllib.request.Request(u + path, method=method, data=data, headers=h)\n"
    "    try:\n"
    "        with urllib.request.urlopen(req, timeout=60) as r:\n"
    "            return r.status, json.load(r)\n"
    "    except urllib.error.HTTPError as e:\n"
    "        return e.code, None\n"
    "st, j = call('GET', '/access/whoami')\n"
    "print('WHOAMI', st, j and j.get('agent'), j and j.get('admin'))\n"
    "q = {'agent_name': 'attacker', 'query_type': 'llm', 'query_data': {'messages':\n"
    "     [{'role': 'user', 'content': 'hi'}], 'max_new_tokens': 4}}\n"
    "st, j = call('POST', '/query', q)\n"
    "print('OWN_QUERY', st)\n"
    "q['agent_name'] = 'victim'\n"
    "st, _ = call('POST', '/query', q)\n"
    "print('BODY_CLAIM', st)\n"
    "st, _ = call('GET', '/access/whoami', headers={'X-Aios-Agent': 'victim'})\n"
    "print('HEADER_CLAIM', st)\n"
    "st, j = call('GET', '/access/whoami', headers={'Authorization': 'Bearer ' + admin})\n"
    "print('ADMIN_TOKEN_WHOAMI', st, j and j.get('agent'), j and j.get('admin'))\n"
    "st, _ = call('GET', '/agents/ps', headers={'Authorization': 'Bearer ' + admin})\n"
    "print('ADMIN_ROUTE', st)\n"
    "EOF\n";

static const char NETAGENT[] =
    "echo \"TOKEN $AIOS_AGENT_TOKEN\"\n"
    "exec python3 - <<'EOF'\n"
    "import json, os, urllib.request\n"
    "req = urllib.request.Request(os.environ['AIOS_KERNEL_URL'] + '/access/whoami',\n"
    "    headers={'Authorization': 'Bearer ' + os.environ['AIOS_AGENT_TOKEN']})\n"
    "with urllib.request.urlopen(req, timeout=60) as r:\n"
    "    print('WHOAMI', r.status, json.load(r).get('agent'))\n"
    "EOF\n";

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/aios-sbx-it-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    char p[600];
    snprintf(p, sizeof p, "%s/agents", g_dir);
    mkdir(p, 0755);
    make_agent("attacker", ATTACKER);
    make_agent("lingerer", "echo started\nexec sleep 60\n");
    make_agent("netagent", NETAGENT);
    char cfg[300], text[1024];
    snprintf(cfg, sizeof cfg, "%s/config.yaml", g_dir);
    snprintf(text, sizeof text,
             "agent_factory:\n  agents_dir: \"%s/agents\"\n  network: [netagent]\n"
             "  limits: {max_procs: 64, memory_mb: 2048}\n", g_dir);
    write_file(cfg, text, 0644);
    /* a secret in the kernel's environment, which agents must not inherit */
    setenv("OPENAI_API_KEY", "sk-test-secret", 1);
    const char *extra[] = {"--config", cfg, NULL};
    /* kf_start, with a data_dir made 0755 (the kernel makes it 0700) */
    g_kf = calloc(1, sizeof *g_kf);
    assert_non_null(g_kf);
    snprintf(g_kf->dir, sizeof g_kf->dir, "/tmp/aios-sbx-data-XXXXXX");
    assert_non_null(mkdtemp(g_kf->dir));
    chmod(g_kf->dir, 0755);
    if (child_start(&g_kf->child, aios_bin(), g_kf->dir, extra, 300) != 0) {
        kf_print_log(g_kf);
        fail_msg("aios serve did not start");
    }
    unsetenv("OPENAI_API_KEY");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    kf_stop(g_kf);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return 0;
}

static long long submit(const char *agent, const char *task)
{
    json_t *b = json_pack("{s:s,s:{s:s}}", "agent_id", agent, "agent_config", "task", task);
    char *s = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    json_t *j = NULL;
    long st = kf_call(g_kf, "POST", "/agents/submit", s, &j);
    free(s);
    if (st != 200) fail_msg("submit %s: HTTP %ld", agent, st);
    long long id = json_integer_value(json_object_get(j, "execution_id"));
    json_decref(j);
    return id;
}

static json_t *wait_final(long long id)
{
    char path[64];
    snprintf(path, sizeof path, "/agents/%lld/status", id);
    for (int i = 0; i < 1200; i++) {
        json_t *j = NULL;
        assert_int_equal(kf_call(g_kf, "GET", path, NULL, &j), 200);
        if (strcmp(json_string_value(json_object_get(j, "status")), "running") != 0) return j;
        json_decref(j);
        usleep(50000);
    }
    fail_msg("agent %lld still running after 60 s", id);
    return NULL;
}

static char *stdout_of(long long id)
{
    char path[128];
    snprintf(path, sizeof path, "/agents/%lld/logs", id);
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "GET", path, NULL, &j), 200);
    char *s = strdup(json_string_value(json_object_get(j, "stdout")));
    char *e = json_string_value(json_object_get(j, "stderr")) ? strdup(json_string_value(json_object_get(j, "stderr"))) : NULL;
    json_decref(j);
    if (e && *e) fprintf(stderr, "agent %lld stderr:\n%s\n", id, e);
    free(e);
    return s;
}

static void expect_line(const char *out, const char *line)
{
    char want[256];
    snprintf(want, sizeof want, "%s\n", line);
    if (!strstr(out, want)) fail_msg("agent output lacks '%s':\n%s", line, out);
}

static void test_hostile_agent_is_contained(void **state)
{
    (void)state;
    /* another agent's stored file */
    char p[600];
    snprintf(p, sizeof p, "%s/root/victim", g_kf->dir);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/root/victim/secret.txt", g_kf->dir);
    write_file(p, "victim's secret", 0644);
    /* the task: data_dir, and the operator's token as if it had leaked */
    char task[900];
    snprintf(task, sizeof task, "%s %s", g_kf->dir, g_kf->child.token);
    long long id = submit("attacker", task);
    json_t *j = wait_final(id);
    char *out = stdout_of(id);
    if (strcmp(json_string_value(json_object_get(j, "status")), "completed") != 0)
        fail_msg("attacker: %s\n%s", json_string_value(json_object_get(j, "status")), out);
    /* nothing of data_dir, nothing of the kernel's environment */
    expect_line(out, "DENIED admin.token");
    expect_line(out, "DENIED memory.db");
    expect_line(out, "DENIED audit.db");
    expect_line(out, "DENIED victim_storage");
    /* of the runs folder only its own run shows (run 1 exists too) */
    char runs[64];
    snprintf(runs, sizeof runs, "RUNS %lld ", id);
    expect_line(out, runs);
    expect_line(out, "DENIED env");
    expect_line(out, "TOKLEN 0");
    if (geteuid() == 0) {
        char uid[64];
        snprintf(uid, sizeof uid, "UID %lld", 200000 + id);
        expect_line(out, uid);
    }
    /* no token: itself; its own query works; naming another is refused */
    expect_line(out, "WHOAMI 200 attacker False");
    expect_line(out, "OWN_QUERY 200");
    expect_line(out, "BODY_CLAIM 403");
    expect_line(out, "HEADER_CLAIM 403");
    /* the admin token changes nothing on the channel */
    expect_line(out, "ADMIN_TOKEN_WHOAMI 200 attacker False");
    expect_line(out, "ADMIN_ROUTE 403");
    /* its LLM call was accounted to its process */
    json_t *u = json_object_get(j, "usage");
    assert_true(json_integer_value(json_object_get(u, "syscalls")) >= 1);
    json_decref(j);
    free(out);
}

static int connect_channel(long long id)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%.60s/agents/sock/%lld", g_kf->dir, id);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(s >= 0);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
        close(s);
        return -1;
    }
    return s;
}

/* one HTTP/1.1 request on s (kept open unless close); the status code,
 * the answer in buf */
static int raw_get(int s, const char *path, bool close_after, char *buf, size_t len)
{
    char req[256];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n", path,
             close_after ? "Connection: close\r\n" : "");
    if (write(s, req, strlen(req)) != (ssize_t)strlen(req)) return -1;
    size_t n = 0;
    ssize_t r;
    buf[0] = 0;
    for (;;) { /* headers, then Content-Length bytes */
        char *e = strstr(buf, "\r\n\r\n");
        if (e) {
            const char *cl = strcasestr(buf, "Content-Length:");
            size_t want = (size_t)(e + 4 - buf) + (cl ? strtoul(cl + 15, NULL, 10) : 0);
            if (n >= want) break;
        }
        if (n >= len - 1 || (r = read(s, buf + n, len - 1 - n)) <= 0) break;
        n += (size_t)r;
        buf[n] = 0;
    }
    int code = 0;
    return sscanf(buf, "HTTP/1.%*d %d", &code) == 1 ? code : -1;
}

static void test_channel_dies_with_the_run(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN); /* a closed connection fails an assertion instead */
    long long id = submit("lingerer", "t");
    char buf[4096];
    int s = -1;
    for (int i = 0; i < 100 && s < 0; i++) { /* the socket exists once launched */
        s = connect_channel(id);
        if (s < 0) usleep(20000);
    }
    assert_true(s >= 0);
    /* the run's channel answers as the run, with no token */
    assert_int_equal(raw_get(s, "/access/whoami", false, buf, sizeof buf), 200);
    assert_non_null(strstr(buf, "lingerer"));
    /* the same connection, used after the run ended */
    char path[64];
    snprintf(path, sizeof path, "/agents/%lld/kill", id);
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "POST", path, "{\"signal\":\"KILL\"}", &j), 200);
    json_decref(j);
    j = wait_final(id);
    json_decref(j);
    assert_int_equal(raw_get(s, "/access/whoami", true, buf, sizeof buf), 401);
    assert_non_null(strstr(buf, "has ended"));
    close(s);
    /* and its socket is gone */
    assert_int_equal(connect_channel(id), -1);
    char sp[600];
    struct stat st;
    snprintf(sp, sizeof sp, "%s/agents/sock/%lld", g_kf->dir, id);
    assert_int_not_equal(stat(sp, &st), 0);
}

static void test_network_agent_token_dies_with_it(void **state)
{
    (void)state;
    long long id = submit("netagent", "t");
    json_t *j = wait_final(id);
    char *out = stdout_of(id);
    if (strcmp(json_string_value(json_object_get(j, "status")), "completed") != 0)
        fail_msg("netagent: %s\n%s", json_string_value(json_object_get(j, "status")), out);
    json_decref(j);
    expect_line(out, "WHOAMI 200 netagent");
    const char *t = strstr(out, "TOKEN ");
    assert_non_null(t);
    char tok[64] = "";
    assert_int_equal(sscanf(t, "TOKEN %63s", tok), 1);
    assert_int_equal(strlen(tok), 32);
    free(out);
    /* the run ended: its token is refused */
    char auth[128];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", tok);
    char url[256];
    snprintf(url, sizeof url, "%s/access/whoami", g_kf->child.base);
    const char *hdrs[] = {auth, NULL};
    struct hc_resp r;
    assert_int_equal(hc_call_h("GET", url, NULL, 0, hdrs, &r, 30), 0);
    assert_int_equal(r.status, 401);
    hc_resp_free(&r);
}

static void expect_mode(const char *rel, unsigned mode)
{
    char p[700];
    snprintf(p, sizeof p, "%s%s%s", g_kf->dir, rel[0] ? "/" : "", rel);
    struct stat st;
    if (stat(p, &st) != 0) fail_msg("%s: %s", p, strerror(errno));
    if ((st.st_mode & 0777) != mode) fail_msg("%s: mode %o, want %o", p, st.st_mode & 0777, mode);
}

static void test_data_dir_modes(void **state)
{
    (void)state;
    /* made 0755 before the kernel started (group_setup) */
    expect_mode("", 0700);
    expect_mode("admin.token", 0600);
    expect_mode("audit.db", 0600);
    expect_mode("memory.db", 0600);
    expect_mode("root", 0700);
    expect_mode("agents/sock", 0700);
    expect_mode("agents/runs", 0700);
    expect_mode("agents/runs/1", 0700);
    expect_mode("agents/runs/1/stdout.log", 0600);
    expect_mode("agents/runs/1/stderr.log", 0600);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_network_agent_token_dies_with_it), /* run 1 */
        cmocka_unit_test(test_hostile_agent_is_contained),
        cmocka_unit_test(test_channel_dies_with_the_run),
        cmocka_unit_test(test_data_dir_modes),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
