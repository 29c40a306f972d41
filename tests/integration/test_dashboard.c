/* Integration: the dashboard's routes and `aios top` against a real kernel.
 *  - GET /ui is the embedded page, public (it holds no data);
 *  - GET /ui/state needs a token; the operator's sees every agent, its
 *    calls on the timeline (with their run slices) and the engine; an
 *    agent's token sees only its own agent and calls;
 *  - bad window_s is a 400;
 *  - the energy estimate (engine time x accounting.watts) and the cost
 *    (tokens x the model's price) are in /agents/{id}/stats and /metrics too;
 *  - `aios top` on a real terminal (a pty) draws the agents and quits on q;
 *    `aios top --once` prints one frame.
 * The page itself is tested in headless Chromium by `make ui-test`
 * (tests/ui/ui_test.py). */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>


static struct tiny_kernel g_tk;
static char g_alice[128];

static long call_token(const char *token, const char *path, json_t **out)
{
    return kf_call_as(g_kf, token, NULL, "GET", path, NULL, out);
}

static void chat_as(const char *agent, const char *token)
{
    char url[512], auth[200], who[160];
    snprintf(url, sizeof url, "%s/v1/chat/completions", g_kf->child.base);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    snprintf(who, sizeof who, "X-Aios-Agent: %s", agent);
    const char *hdrs[] = {auth, agent ? who : NULL, NULL};
    const char *body = "{\"model\":\"aios-tiny\",\"max_tokens\":8,\"messages\":[{\"role\":\"user\","
                       "\"content\":\"hello\"}]}";
    struct hc_resp r;
    assert_int_equal(hc_call_h("POST", url, body, strlen(body), hdrs, &r, 60), 0);
    assert_int_equal(r.status, 200);
    hc_resp_free(&r);
}

static int group_setup(void **state)
{
    (void)state;
    if (kf_start_tiny(&g_tk, "dashboard",
                      "      price: {prompt_per_1m: 1000, completion_per_1m: 2000}\n"
                      "accounting:\n"
                      "  watts: 40\n"))
        return -1;
    g_kf = g_tk.kf;
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "POST", "/access/agents", "{\"name\":\"alice\"}", &j), 201);
    snprintf(g_alice, sizeof g_alice, "%s", json_string_value(json_object_get(j, "token")));
    json_decref(j);
    chat_as("alice", g_alice);
    chat_as("bob", g_kf->child.token);
    chat_as("bob", g_kf->child.token);
    /* bob's files and notes, for the usage against quotas */
    assert_int_equal(kf_call(g_kf, "POST", "/query",
                             "{\"agent_name\":\"bob\",\"query_type\":\"storage\",\"query_data\":"
                             "{\"operation_type\":\"write\",\"params\":{\"file_path\":\"a.txt\","
                             "\"content\":\"0123456789\"}}}", &j), 200);
    json_decref(j);
    assert_int_equal(kf_call(g_kf, "POST", "/query",
                             "{\"agent_name\":\"bob\",\"query_type\":\"memory\",\"query_data\":"
                             "{\"operation_type\":\"add_memory\",\"params\":{\"content\":\"a note\"}}}",
                             &j), 200);
    json_decref(j);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    kf_stop_tiny(&g_tk);
    return 0;
}

static json_t *find(json_t *arr, const char *key, const char *value)
{
    size_t i;
    json_t *x;
    json_array_foreach(arr, i, x) {
        const char *v = json_string_value(json_object_get(x, key));
        if (v && !strcmp(v, value)) return x;
    }
    return NULL;
}

static void test_page(void **state)
{
    (void)state;
    struct hc_resp r;
    char url[512];
    snprintf(url, sizeof url, "%s/ui", g_kf->child.base);
    const char *none[] = {NULL};
    assert_int_equal(hc_call_h("GET", url, NULL, 0, none, &r, 60), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.ctype, "text/html"));
    assert_non_null(strstr(r.body, "<title>aios dashboard</title>"));
    assert_non_null(strstr(r.body, "/ui/state"));
    /* nothing loaded from elsewhere: it works offline */
    assert_null(strstr(r.body, "src=\"http"));
    assert_null(strstr(r.body, "<link"));
    assert_null(strstr(r.body, "@import"));
    hc_resp_free(&r);
}

static void test_state_operator(void **state)
{
    (void)state;
    json_t *j = NULL;
    assert_int_equal(call_token(g_kf->child.token, "/ui/state", &j), 200);
    assert_true(json_is_true(json_object_get(json_object_get(j, "viewer"), "admin")));
    json_t *agents = json_object_get(j, "agents");
    json_t *alice = find(agents, "name", "alice"), *bob = find(agents, "name", "bob");
    assert_non_null(alice);
    assert_non_null(bob);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(bob, "calls_by_kind"), "llm")), 2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(bob, "tokens"), "generated")), 16);
    assert_true(json_number_value(json_object_get(bob, "engine_s")) > 0);
    /* energy = engine time x the power in use */
    json_t *energy = json_object_get(j, "energy");
    double w = json_number_value(json_object_get(energy, "watts"));
    assert_true(w > 0);
    if (!strcmp(json_string_value(json_object_get(energy, "source")), "config"))
        assert_true(w == 40.0); /* accounting.watts (no readable RAPL here) */
    assert_true(json_is_true(json_object_get(json_object_get(j, "energy"), "estimated")));
    double e = json_number_value(json_object_get(bob, "energy_j"));
    double want = json_number_value(json_object_get(bob, "engine_s")) * w;
    assert_true(e > want * 0.999 && e < want * 1.001);
    /* usage against quotas: bob's one file of 10 bytes (and its 10
     * indexed: the storage quota counts both) and one note */
    json_t *us = json_object_get(json_object_get(bob, "usage"), "storage");
    assert_int_equal(json_integer_value(json_object_get(us, "bytes")), 20);
    assert_int_equal(json_integer_value(json_object_get(us, "files")), 1);
    assert_true(json_integer_value(json_object_get(us, "quota_bytes")) > 0);
    json_t *um = json_object_get(json_object_get(bob, "usage"), "memory");
    assert_int_equal(json_integer_value(json_object_get(um, "notes")), 1);
    assert_true(json_integer_value(json_object_get(um, "resident_bytes")) > 0);
    assert_true(json_integer_value(json_object_get(um, "quota_bytes")) > 0);
    /* cost: every prompt token at 1000 and every generated one at 2000 per million */
    json_t *bt = json_object_get(bob, "tokens");
    double cost = (double)(json_integer_value(json_object_get(bt, "computed")) +
                           json_integer_value(json_object_get(bt, "reused"))) * 1e-3 +
                  (double)json_integer_value(json_object_get(bt, "generated")) * 2e-3;
    assert_true(cost > 0);
    assert_true(fabs(json_number_value(json_object_get(bob, "cost")) - cost) < 1e-9);
    /* the same estimate in the agent's stats and in /metrics */
    json_t *sj = NULL;
    assert_int_equal(kf_call(g_kf, "GET", "/agents/bob/stats", NULL, &sj), 200);
    json_t *en = json_object_get(sj, "energy");
    double ew = json_number_value(json_object_get(en, "watts"));
    double ej = json_number_value(json_object_get(en, "joules"));
    double es = json_number_value(json_object_get(json_object_get(sj, "time_s"), "engine"));
    assert_true(ew > 0 && ej > es * ew * 0.999 && ej < es * ew * 1.001);
    assert_true(json_is_true(json_object_get(en, "estimated")));
    json_decref(sj);
    struct hc_resp mr;
    char murl[512];
    snprintf(murl, sizeof murl, "%s/metrics", g_kf->child.base);
    assert_int_equal(hc_call("GET", murl, NULL, 0, &mr, 60), 0);
    assert_int_equal(mr.status, 200);
    assert_non_null(strstr(mr.body, "aios_agent_energy_joules_estimated{agent=\"bob\"} "));
    assert_non_null(strstr(mr.body, "aios_power_watts{source="));
    assert_non_null(strstr(mr.body, "aios_agent_cost_total{agent=\"bob\"} "));
    hc_resp_free(&mr);
    /* three LLM calls on the timeline, each with a run slice inside its life */
    json_t *tl = json_object_get(j, "timeline");
    size_t i, n_llm = 0;
    json_t *c;
    json_array_foreach(tl, i, c) {
        if (strcmp(json_string_value(json_object_get(c, "kind")), "llm")) continue;
        n_llm++;
        assert_string_equal(json_string_value(json_object_get(c, "state")), "final");
        assert_string_equal(json_string_value(json_object_get(c, "status")), "done");
        double sub = json_number_value(json_object_get(c, "submitted_ms"));
        double end = json_number_value(json_object_get(c, "end_ms"));
        json_t *sl = json_array_get(json_object_get(c, "slices"), 0);
        double s0 = json_number_value(json_array_get(sl, 0)), s1 = json_number_value(json_array_get(sl, 1));
        assert_true(sub <= s0 && s0 <= s1 && s1 <= end + 0.001 && end <= 0);
    }
    assert_int_equal(n_llm, 3);
    assert_int_equal(json_array_size(json_object_get(j, "models")), 1);
    json_t *eng = json_object_get(json_array_get(json_object_get(j, "models"), 0), "engine");
    assert_non_null(eng);
    /* the three conversations are retained: their cells are in use */
    json_int_t used = json_integer_value(json_object_get(eng, "kv_cells_used"));
    assert_true(used > 0 && used <= json_integer_value(json_object_get(eng, "kv_size")));
    json_decref(j);

    /* a window before the calls shows none of them */
    assert_int_equal(call_token(g_kf->child.token, "/ui/state?window_s=1", &j), 200);
    json_decref(j);
    const char *bad[] = {"/ui/state?window_s=0", "/ui/state?window_s=x", "/ui/state?window_s=100000"};
    for (int k = 0; k < 3; k++) {
        assert_int_equal(call_token(g_kf->child.token, bad[k], &j), 400);
        assert_error_body(j, "window_s");
        json_decref(j);
    }
}

static void test_state_agent_sees_itself(void **state)
{
    (void)state;
    json_t *j = NULL;
    assert_int_equal(call_token(NULL, "/ui/state", &j), 401);
    assert_error_body(j, NULL);
    json_decref(j);
    assert_int_equal(call_token(g_alice, "/ui/state", &j), 200);
    json_t *v = json_object_get(j, "viewer");
    assert_false(json_is_true(json_object_get(v, "admin")));
    assert_string_equal(json_string_value(json_object_get(v, "agent")), "alice");
    json_t *agents = json_object_get(j, "agents");
    assert_int_equal(json_array_size(agents), 1);
    assert_non_null(find(agents, "name", "alice"));
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(j, "timeline"), i, c)
        assert_string_equal(json_string_value(json_object_get(c, "agent")), "alice");
    assert_int_equal(json_array_size(json_object_get(j, "timeline")), 1);
    json_decref(j);
}

/* read from fd until needle shows up (or timeout); returns whether it did */
static bool read_until(int fd, const char *needle, int timeout_ms, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = 0;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        int left = timeout_ms - (int)((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        if (left <= 0) return false;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, left) <= 0) continue;
        ssize_t k = read(fd, buf + n, cap - 1 - n);
        if (k <= 0) return strstr(buf, needle) != NULL;
        n += (size_t)k;
        buf[n] = 0;
        if (strstr(buf, needle)) return true;
        if (n > cap / 2) { /* keep the tail */
            memmove(buf, buf + n - cap / 4, cap / 4);
            n = cap / 4;
            buf[n] = 0;
        }
    }
}

static void test_top_on_a_terminal(void **state)
{
    (void)state;
    int master;
    pid_t pid = forkpty(&master, NULL, NULL, NULL);
    assert_true(pid >= 0);
    if (pid == 0) {
        setenv("AIOS_TOKEN", g_kf->child.token, 1);
        execl(aios_bin(), "aios", "top", "--url", g_kf->child.base, "--interval", "0.3", (char *)NULL);
        _exit(127);
    }
    static char buf[65536];
    /* two frames: the header and the agents, then a refresh */
    assert_true(read_until(master, "bob", 15000, buf, sizeof buf));
    assert_non_null(strstr(buf, "ENGINE_S"));
    assert_true(read_until(master, "queues", 5000, buf, sizeof buf));
    assert_int_equal(write(master, "q", 1), 1);
    int st = -1;
    for (int i = 0; i < 50; i++) {
        if (waitpid(pid, &st, WNOHANG) == pid) break;
        usleep(100 * 1000);
        st = -1;
    }
    if (st == -1) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        fail_msg("aios top did not quit on q");
    }
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    close(master);

    /* --once: one frame, no terminal control */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "AIOS_TOKEN=%s '%s' top --once --url %s", g_kf->child.token, aios_bin(),
             g_kf->child.base);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = 0;
    assert_int_equal(pclose(p), 0);
    assert_non_null(strstr(buf, "alice"));
    assert_non_null(strstr(buf, "bob"));
    assert_null(strstr(buf, "\033["));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_page),
        cmocka_unit_test(test_state_operator),
        cmocka_unit_test(test_state_agent_sees_itself),
        cmocka_unit_test(test_top_on_a_terminal),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
