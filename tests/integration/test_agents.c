/* Integration: agents as processes and the AIOS kernel routes.
 *
 * A kernel starts with a config whose agent_factory.agents_dir is a temp
 * folder of small shell-script agents (no LLM needed): submit by name and
 * by absolute path, the environment an agent gets, logs, result from the
 * last stdout line and from AIOS_RESULT_FILE, exit codes, kill (SIGTERM and
 * SIGKILL), bad packages and ids, /core/status, /core/llms/list, LLM
 * selection, /core/refresh with a changed config file, /core/config/update,
 * /core/cleanup, /get/mcp/server, and the CLI (aios run/ps/kill/logs). */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_dir[256];      /* temp: agents/, config.yaml, mcp.py */
static char g_agents[300];
static char g_cfg[300];

static void write_file(const char *path, const char *text, int mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    chmod(path, (mode_t)mode);
}

static void make_agent(const char *name, const char *entry, const char *script, const char *module)
{
    char d[512], p[600], cfg[1024];
    snprintf(d, sizeof d, "%s/%s", g_agents, name);
    mkdir(d, 0755);
    snprintf(cfg, sizeof cfg,
             "{\"name\":\"%s\",\"description\":[\"test agent\"],\"tools\":[],"
             "\"meta\":{\"author\":\"test\",\"version\":\"0.0.1\",\"license\":\"MIT\"},"
             "\"build\":{\"entry\":\"%s\",\"module\":%s}}",
             name, entry, module ? module : "null");
    snprintf(p, sizeof p, "%s/config.json", d);
    write_file(p, cfg, 0644);
    snprintf(p, sizeof p, "%s/%s", d, entry);
    write_file(p, script, 0755);
}

static void write_config(const char *agents_dir, const char *extra)
{
    char text[2048];
    snprintf(text, sizeof text, "agent_factory:\n  agents_dir: \"%s\"\n%s", agents_dir,
             extra ? extra : "");
    write_file(g_cfg, text, 0644);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/aios-agents-it-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    snprintf(g_agents, sizeof g_agents, "%s/agents", g_dir);
    snprintf(g_cfg, sizeof g_cfg, "%s/config.yaml", g_dir);
    mkdir(g_agents, 0755);
    make_agent("echo", "run.sh",
               "echo \"task=$1\"\n"
               "echo \"env url=$AIOS_KERNEL_URL cerebrum=$CEREBRUM_KERNEL_URL name=$AIOS_AGENT_NAME "
               "id=$AIOS_AGENT_ID toklen=${#AIOS_AGENT_TOKEN} task=$AIOS_TASK\"\n"
               "echo 'to stderr' >&2\n"
               "echo '{\"answer\": 42}'\n",
               NULL);
    make_agent("fail", "run.sh", "echo partial\nexit 7\n", NULL);
    make_agent("resfile", "run.sh", "echo noise\nprintf 'from the result file' > \"$AIOS_RESULT_FILE\"\n",
               NULL);
    make_agent("sleeper", "run.sh", "echo started\nexec sleep 60\n", NULL);
    make_agent("stubborn", "run.sh", "trap '' TERM\necho started\nwhile :; do sleep 1; done\n", NULL);
    make_agent("binary", "agent", "#!/bin/sh\necho \"direct exec: $1\"\n", NULL);
    make_agent("noexec", "agent", "#!/bin/sh\necho hi\n", NULL);
    /* written for AIOS/Cerebrum, unchanged: a class with run(task), cerebrum.* imports */
    make_agent("cerebrum_style", "agent.py",
               "from cerebrum.llm.apis import list_available_llms\n"
               "from cerebrum.config.config_manager import config\n"
               "\n"
               "class DemoAgent:\n"
               "    def __init__(self, agent_name):\n"
               "        self.agent_name = agent_name\n"
               "\n"
               "    def run(self, task):\n"
               "        llms = list_available_llms()\n"
               "        return {\"agent\": self.agent_name, \"task\": task,\n"
               "                \"url\": config.get_kernel_url(),\n"
               "                \"llms\": [m[\"name\"] for m in llms[\"llms\"]]}\n",
               "\"DemoAgent\"");
    char p[900];
    snprintf(p, sizeof p, "%s/noexec/agent", g_agents);
    chmod(p, 0644);
    /* packages with mistakes */
    char d[600];
    snprintf(d, sizeof d, "%s/badjson", g_agents);
    mkdir(d, 0755);
    snprintf(p, sizeof p, "%s/config.json", d);
    write_file(p, "{\"name\": ", 0644);
    snprintf(d, sizeof d, "%s/noentry", g_agents);
    mkdir(d, 0755);
    snprintf(p, sizeof p, "%s/config.json", d);
    write_file(p, "{\"name\":\"noentry\",\"build\":{\"entry\":\"missing.sh\"}}", 0644);
    snprintf(d, sizeof d, "%s/escape", g_agents);
    mkdir(d, 0755);
    snprintf(p, sizeof p, "%s/config.json", d);
    write_file(p, "{\"name\":\"escape\",\"build\":{\"entry\":\"../echo/run.sh\"}}", 0644);
    write_config(g_agents, NULL);
    const char *extra[] = {"--config", g_cfg, NULL};
    g_kf = kf_start(extra);
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

/* agents submitted to this group's kernel; final status within 10 s */
#define submit(agent_id, task) kf_submit_agent(g_kf, agent_id, task)
#define wait_final(id) kf_wait_agent(g_kf, id, 10)

static char *logs(long long id, const char *which)
{
    char path[128];
    snprintf(path, sizeof path, "/agents/%lld/logs", id);
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "GET", path, NULL, &j), 200);
    char *s = strdup(json_string_value(json_object_get(j, which)));
    json_decref(j);
    return s;
}

static void test_submit_run_result(void **state)
{
    (void)state;
    long long id = submit("echo", "count to three");
    json_t *j = wait_final(id);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "completed");
    assert_int_equal(json_integer_value(json_object_get(j, "exit_code")), 0);
    assert_int_equal(json_integer_value(json_object_get(j, "execution_id")), id);
    assert_string_equal(json_string_value(json_object_get(j, "agent_name")), "echo");
    assert_true(json_integer_value(json_object_get(j, "pid")) > 0);
    assert_true(json_is_string(json_object_get(j, "start_time")));
    assert_true(json_is_string(json_object_get(j, "end_time")));
    /* result: last stdout line, JSON when it parses */
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "result"), "answer")), 42);
    json_decref(j);

    char *out = logs(id, "stdout"), *err = logs(id, "stderr");
    assert_non_null(strstr(out, "task=count to three"));
    char want[256];
    /* in its own network namespace: the kernel's port on its loopback,
     * reached through its run's channel, and no token */
    snprintf(want, sizeof want, "url=%s cerebrum=%s name=echo id=%lld toklen=0 task=count to three",
             g_kf->child.base, g_kf->child.base, id);
    if (!strstr(out, want)) fail_msg("stdout lacks '%s':\n%s", want, out);
    assert_string_equal(err, "to stderr\n");
    free(out);
    free(err);

    /* logs with offsets: nothing new after the end */
    char path[128];
    snprintf(path, sizeof path, "/agents/%lld/logs?stdout_offset=5&stderr_offset=3", id);
    json_t *l = NULL;
    assert_int_equal(kf_call(g_kf, "GET", path, NULL, &l), 200);
    assert_string_equal(json_string_value(json_object_get(l, "stderr")), "stderr\n");
    long long so = json_integer_value(json_object_get(l, "stdout_offset"));
    json_decref(l);
    snprintf(path, sizeof path, "/agents/%lld/logs?stdout_offset=%lld&stderr_offset=13", id, so);
    assert_int_equal(kf_call(g_kf, "GET", path, NULL, &l), 200);
    assert_string_equal(json_string_value(json_object_get(l, "stdout")), "");
    json_decref(l);
    snprintf(path, sizeof path, "/agents/%lld/logs?stdout_offset=-1", id);
    assert_int_equal(kf_call(g_kf, "GET", path, NULL, &l), 400);
    assert_error_body(l, "offset");
    json_decref(l);

    /* by absolute path, a directly executed binary entry */
    char abs[600];
    snprintf(abs, sizeof abs, "%s/binary", g_agents);
    id = submit(abs, "hello");
    j = wait_final(id);
    assert_string_equal(json_string_value(json_object_get(j, "result")), "direct exec: hello");
    json_decref(j);

    /* "author/name" from the hub falls back to name */
    id = submit("someone/echo", "x");
    j = wait_final(id);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "completed");
    json_decref(j);
}

static void test_cerebrum_style_python_agent(void **state)
{
    (void)state;
    if (system("python3 -c 'import json' >/dev/null 2>&1") != 0) {
        printf("SKIP cerebrum_style: python3 is not installed on this machine\n");
        return;
    }
    long long id = submit("cerebrum_style", "list the models");
    json_t *j = wait_final(id);
    json_t *res = json_object_get(j, "result");
    if (!json_is_object(res)) {
        char *out = logs(id, "stderr");
        fail_msg("cerebrum_style: no JSON result; stderr:\n%s", out);
    }
    assert_string_equal(json_string_value(json_object_get(res, "agent")), "cerebrum_style");
    assert_string_equal(json_string_value(json_object_get(res, "task")), "list the models");
    assert_string_equal(json_string_value(json_object_get(res, "url")), g_kf->child.base);
    assert_string_equal(json_string_value(json_array_get(json_object_get(res, "llms"), 0)), "aios-tiny");
    assert_int_equal(json_integer_value(json_object_get(j, "exit_code")), 0);
    json_decref(j);
}

static void test_exit_codes_and_result_file(void **state)
{
    (void)state;
    long long id = submit("fail", "t");
    json_t *j = wait_final(id);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "failed");
    assert_int_equal(json_integer_value(json_object_get(j, "exit_code")), 7);
    assert_string_equal(json_string_value(json_object_get(j, "result")), "partial");
    json_decref(j);
    id = submit("resfile", "t");
    j = wait_final(id);
    assert_string_equal(json_string_value(json_object_get(j, "result")), "from the result file");
    json_decref(j);
}

static void test_kill(void **state)
{
    (void)state;
    long long id = submit("sleeper", "t");
    char path[128];
    snprintf(path, sizeof path, "/agents/%lld/status", id);
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "GET", path, NULL, &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "running");
    assert_string_equal(json_string_value(json_object_get(j, "message")), "Execution in progress");
    assert_true(json_is_null(json_object_get(j, "exit_code")));
    json_decref(j);
    /* ps lists it as running */
    assert_int_equal(kf_call(g_kf, "GET", "/agents/ps", NULL, &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "success");
    bool seen = false;
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(j, "processes"), i, p) if (json_integer_value(
                                                                      json_object_get(p, "execution_id")) == id)
    {
        seen = true;
        assert_string_equal(json_string_value(json_object_get(p, "status")), "running");
    }
    assert_true(seen);
    json_decref(j);
    snprintf(path, sizeof path, "/agents/%lld/kill", id);
    assert_int_equal(kf_call(g_kf, "POST", path, NULL, &j), 200);
    json_decref(j);
    j = wait_final(id);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "killed");
    assert_int_equal(json_integer_value(json_object_get(j, "signal")), 15);
    json_decref(j);
    /* killing it again: 409 */
    assert_int_equal(kf_call(g_kf, "POST", path, NULL, &j), 409);
    assert_error_body(j, "not running");
    json_decref(j);
    /* an agent that ignores SIGTERM is SIGKILLed after the grace period */
    id = submit("stubborn", "t");
    /* its trap is set once it has said so (a loaded machine starts it late) */
    for (int i = 0; i < 300; i++) {
        char *out = logs(id, "stdout");
        bool up = strstr(out, "started") != NULL;
        free(out);
        if (up) break;
        usleep(50000);
    }
    snprintf(path, sizeof path, "/agents/%lld/kill", id);
    assert_int_equal(kf_call(g_kf, "POST", path, NULL, &j), 200);
    json_decref(j);
    j = wait_final(id);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "killed");
    assert_int_equal(json_integer_value(json_object_get(j, "signal")), 9);
    json_decref(j);
    /* explicit signal; bad signal */
    id = submit("sleeper", "t");
    assert_int_equal(kf_call(g_kf, "POST", path, "{\"signal\":\"HUP\"}", &j), 400);
    assert_error_body(j, "signal");
    json_decref(j);
    snprintf(path, sizeof path, "/agents/%lld/kill", id);
    assert_int_equal(kf_call(g_kf, "POST", path, "{\"signal\":\"KILL\"}", &j), 200);
    json_decref(j);
    j = wait_final(id);
    assert_int_equal(json_integer_value(json_object_get(j, "signal")), 9);
    json_decref(j);
}

static void expect(const char *method, const char *path, const char *body, long status,
                   const char *needle)
{
    json_t *j = NULL;
    long st = kf_call(g_kf, method, path, body, &j);
    if (st != status) fail_msg("%s %s %s: expected %ld got %ld", method, path, body ? body : "", status, st);
    assert_error_body(j, needle);
    json_decref(j);
}

static void test_bad_submits(void **state)
{
    (void)state;
    expect("POST", "/agents/submit", "{\"agent_config\":{\"task\":\"x\"}}", 400, "agent_id");
    expect("POST", "/agents/submit", "{\"agent_id\":\"echo\"}", 400, "task");
    expect("POST", "/agents/submit", "{\"agent_id\":\"echo\",\"agent_config\":{\"task\":3}}", 400, "task");
    expect("POST", "/agents/submit", "{\"agent_id\":\"nope\",\"agent_config\":{\"task\":\"x\"}}", 404, "nope");
    expect("POST", "/agents/submit", "{\"agent_id\":\"../etc\",\"agent_config\":{\"task\":\"x\"}}", 404, "../etc");
    expect("POST", "/agents/submit", "{\"agent_id\":\"badjson\",\"agent_config\":{\"task\":\"x\"}}", 400, "JSON");
    expect("POST", "/agents/submit", "{\"agent_id\":\"noentry\",\"agent_config\":{\"task\":\"x\"}}", 400, "missing.sh");
    expect("POST", "/agents/submit", "{\"agent_id\":\"escape\",\"agent_config\":{\"task\":\"x\"}}", 400, "inside the package");
    expect("POST", "/agents/submit", "{\"agent_id\":\"noexec\",\"agent_config\":{\"task\":\"x\"}}", 400, "not executable");
    expect("POST", "/agents/submit", "[1", 400, "JSON");
    expect("GET", "/agents/abc/status", NULL, 400, "positive integer");
    expect("GET", "/agents/0/status", NULL, 400, "positive integer");
    expect("GET", "/agents/99999/status", NULL, 404, "99999");
    expect("POST", "/agents/99999/kill", NULL, 404, "99999");
    expect("GET", "/agents/99999/logs", NULL, 404, "99999");
    expect("DELETE", "/agents/ps", NULL, 405, NULL);
    /* still serving */
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "GET", "/agents/ps", NULL, &j), 200);
    json_decref(j);
}

static void test_core_routes(void **state)
{
    (void)state;
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "GET", "/core/status", NULL, &j), 200);
    const char *keys[] = {"llms", "memory", "storage", "tool", "scheduler", "factory"};
    for (int i = 0; i < 6; i++) {
        const char *v = json_string_value(json_object_get(j, keys[i]));
        assert_non_null(v);
        assert_true(!strcmp(v, "active") || !strcmp(v, "inactive"));
    }
    assert_string_equal(json_string_value(json_object_get(j, "llms")), "active");
    assert_string_equal(json_string_value(json_object_get(j, "factory")), "active");
    json_decref(j);

    assert_int_equal(kf_call(g_kf, "GET", "/core/llms/list", NULL, &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "success");
    json_t *m0 = json_array_get(json_object_get(j, "llms"), 0);
    assert_string_equal(json_string_value(json_object_get(m0, "name")), "aios-tiny");
    assert_true(json_is_string(json_object_get(m0, "backend")));
    json_decref(j);

    /* selection */
    assert_int_equal(kf_call(g_kf, "GET", "/user/selected/llms", NULL, &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "warning");
    json_decref(j);
    expect("POST", "/user/select/llms", "[{\"name\":\"gpt-9\",\"backend\":\"openai\"}]", 404, "gpt-9");
    expect("POST", "/user/select/llms", "{\"x\":1}", 400, "list");
    expect("POST", "/user/select/llms", "[{\"backend\":\"x\"}]", 400, "name");
    assert_int_equal(kf_call(g_kf, "POST", "/user/select/llms",
                             "[{\"name\":\"aios-tiny\",\"backend\":\"llamacpp\"}]", &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "success");
    json_decref(j);
    assert_int_equal(kf_call(g_kf, "GET", "/user/selected/llms", NULL, &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "success");
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(j, "llms"), 0), "name")),
                        "aios-tiny");
    json_decref(j);
    /* a query with llms null now goes to the selection */
    assert_int_equal(kf_call(g_kf, "POST", "/query",
                             "{\"agent_name\":\"sel\",\"query_type\":\"llm\",\"query_data\":{\"llms\":null,"
                             "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_new_tokens\":2}}",
                             &j), 200);
    json_decref(j);
    assert_int_equal(kf_call(g_kf, "POST", "/user/select/llms", "[]", &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "warning");
    json_decref(j);

    /* accounting saw the query */
    assert_int_equal(kf_call(g_kf, "GET", "/agents/accounting", NULL, &j), 200);
    json_t *u = json_object_get(json_object_get(j, "agents"), "sel");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(u, "by_kind"), "llm")), 1);
    assert_int_equal(json_integer_value(json_object_get(u, "completion_tokens")), 2);
    json_decref(j);

    /* MCP server: none configured */
    assert_int_equal(kf_call(g_kf, "GET", "/get/mcp/server", NULL, &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "warning");
    json_decref(j);

    /* config update: api key stored 0600, never echoed */
    expect("POST", "/core/config/update", "{\"provider\":\"openai\"}", 400, "api_key");
    expect("POST", "/core/config/update", "{\"provider\":\"nope\",\"api_key\":\"k\"}", 400, "nope");
    assert_int_equal(kf_call(g_kf, "POST", "/core/config/update",
                             "{\"name\":\"gpt-4o\",\"provider\":\"openai\",\"api_key\":\"sk-secret-1\"}", &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "success");
    char *d = json_dumps(j, 0);
    assert_null(strstr(d, "sk-secret-1"));
    free(d);
    json_decref(j);
    char p[600];
    snprintf(p, sizeof p, "%s/api_keys.json", g_kf->dir);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    json_t *keys_j = json_load_file(p, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(keys_j, "openai")), "sk-secret-1");
    json_decref(keys_j);
}

static void test_refresh_keeps_agents(void **state)
{
    (void)state;
    long long id = submit("sleeper", "keep me");
    /* unchanged file: only the key /core/config/update stored (earlier
     * test) is applied, its value not shown; a second refresh: nothing */
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "POST", "/core/refresh", NULL, &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "success");
    json_t *ch0 = json_object_get(j, "changes");
    if (json_array_size(ch0)) {
        assert_int_equal(json_array_size(ch0), 1);
        json_t *c0 = json_array_get(ch0, 0);
        assert_string_equal(json_string_value(json_object_get(c0, "key")), "api_keys");
        assert_true(json_is_true(json_object_get(c0, "applied")));
        char *d0 = json_dumps(j, 0);
        assert_null(strstr(d0, "sk-secret-1"));
        free(d0);
    }
    json_decref(j);
    assert_int_equal(kf_call(g_kf, "POST", "/core/refresh", NULL, &j), 200);
    assert_int_equal(json_array_size(json_object_get(j, "changes")), 0);
    json_decref(j);
    /* a new agents dir (applied live), a model and a memory setting (next restart) */
    char other[400], src[600], dst[1400];
    snprintf(other, sizeof other, "%s/more_agents", g_dir);
    mkdir(other, 0755);
    snprintf(src, sizeof src, "%s/echo", g_agents);
    snprintf(dst, sizeof dst, "cp -r '%s' '%s/echo2'", src, other);
    assert_int_equal(system(dst), 0);
    write_config(other, "llms:\n  models:\n    - name: extra\n      backend: llamacpp\n      path: /nope.gguf\n"
                        "memory:\n  quota_bytes: 1000\n");
    assert_int_equal(kf_call(g_kf, "POST", "/core/refresh", NULL, &j), 200);
    json_t *ch = json_object_get(j, "changes"), *c;
    size_t i;
    bool dir_applied = false, model_pending = false, mem_pending = false;
    json_array_foreach(ch, i, c)
    {
        const char *k = json_string_value(json_object_get(c, "key"));
        bool applied = json_is_true(json_object_get(c, "applied"));
        if (!strcmp(k, "agent_factory.agents_dir")) dir_applied = applied;
        if (!strcmp(k, "llms.models[extra]")) model_pending = !applied;
        if (!strcmp(k, "memory")) mem_pending = !applied;
    }
    assert_true(dir_applied);
    assert_true(model_pending);
    assert_true(mem_pending);
    assert_true(json_integer_value(json_object_get(j, "running_agents")) >= 1);
    json_decref(j);
    /* the running agent survived; the new folder serves submissions */
    char path[64];
    snprintf(path, sizeof path, "/agents/%lld/status", id);
    assert_int_equal(kf_call(g_kf, "GET", path, NULL, &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "running");
    json_decref(j);
    long long id2 = submit("echo2", "from the new dir");
    j = wait_final(id2);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "completed");
    json_decref(j);
    /* a broken config file: 400, nothing changes */
    write_file(g_cfg, "agent_factory: [\n", 0644);
    expect("POST", "/core/refresh", NULL, 400, "unchanged");
    write_config(g_agents, NULL);
    assert_int_equal(kf_call(g_kf, "POST", "/core/refresh", NULL, &j), 200);
    json_decref(j);

    /* cleanup: kills running agents, forgets finished ones, keeps serving */
    assert_int_equal(kf_call(g_kf, "POST", "/core/cleanup", NULL, &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "success");
    assert_true(json_integer_value(json_object_get(j, "killed")) >= 1);
    assert_true(json_integer_value(json_object_get(j, "removed")) >= 1);
    json_decref(j);
    j = wait_final(id);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "killed");
    json_decref(j);
    assert_int_equal(kf_call(g_kf, "GET", "/core/status", NULL, &j), 200);
    json_decref(j);
}

/* run the CLI; stdout+stderr into *out; returns the exit status */
static int cli(char **out, const char *fmt, ...)
{
    char args[1024], cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "'%s' %s --url %s 2>&1", aios_bin(), args, g_kf->child.base);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    n = fread(buf, 1, cap - 1, p);
    buf[n] = 0;
    int st = pclose(p);
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli(void **state)
{
    (void)state;
    char *out;
    int rc = cli(&out, "run echo --task 'cli task'");
    if (rc != 0 || !strstr(out, "task=cli task") || !strstr(out, "completed (exit 0)"))
        fail_msg("aios run echo: rc %d\n%s", rc, out);
    assert_non_null(strstr(out, "to stderr"));
    free(out);
    rc = cli(&out, "run fail --task x");
    assert_int_equal(rc, 7);
    free(out);
    /* a local folder by relative path */
    char cmd[700];
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' run ./binary --task rel --url %s 2>&1", g_agents,
             aios_bin(), g_kf->child.base);
    FILE *p = popen(cmd, "r");
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = 0;
    assert_int_equal(WEXITSTATUS(pclose(p)), 0);
    assert_non_null(strstr(buf, "direct exec: rel"));

    rc = cli(&out, "run nope --task x");
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "no agent package"));
    free(out);
    rc = cli(&out, "run echo");
    assert_int_equal(rc, 2);
    free(out);

    long long id = submit("sleeper", "t");
    rc = cli(&out, "ps");
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "sleeper"));
    assert_non_null(strstr(out, "running"));
    free(out);
    rc = cli(&out, "kill %lld", id);
    assert_int_equal(rc, 0);
    free(out);
    json_t *j = wait_final(id);
    json_decref(j);
    rc = cli(&out, "logs %lld", id);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "started\n");
    free(out);
    rc = cli(&out, "logs %lld -f", id);
    assert_int_equal(rc, 0);
    free(out);
    rc = cli(&out, "kill %lld", id);
    assert_int_equal(rc, 1);
    free(out);
    /* unreachable kernel */
    snprintf(cmd, sizeof cmd, "'%s' ps --url http://127.0.0.1:1 2>&1", aios_bin());
    p = popen(cmd, "r");
    n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = 0;
    assert_int_equal(WEXITSTATUS(pclose(p)), 1);
    assert_non_null(strstr(buf, "cannot reach"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_submit_run_result),
        cmocka_unit_test(test_exit_codes_and_result_file),
        cmocka_unit_test(test_cerebrum_style_python_agent),
        cmocka_unit_test(test_kill),
        cmocka_unit_test(test_bad_submits),
        cmocka_unit_test(test_core_routes),
        cmocka_unit_test(test_cli),
        cmocka_unit_test(test_refresh_keeps_agents),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
