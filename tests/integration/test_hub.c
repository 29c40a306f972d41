/* Integration: the local hub with Cerebrum's packages, under `enforce`.
 *
 * A real kernel (built-in test model, real bwrap) and packages in
 * Cerebrum's layout: a tool (config.json + tool.py with a BaseTool class
 * whose get_tool_call_format() gives the schema), a tool that declares a
 * requirement nobody installed, and an agent that imports
 * cerebrum.interface.AutoTool and cerebrum.llm.apis.llm_call_tool exactly
 * as Cerebrum's example agents do. `aios hub add` publishes them with the
 * operator's token; the agent runs from the hub with `aios run
 * author/name`, finds its tool in the Cerebrum cache the kernel filled for
 * the run (no download), runs it in-process, and has the kernel run it
 * through llm_call_tool (the model's forced call, then the hub tool in the
 * tool sandbox; its group allows exactly hubtest/greeter, which it offers
 * under the bare name). /query tool calls name the hub tool (author/name and the
 * bare name); arguments are checked against the schema the class gave;
 * what the tool prints does not leak into its result; missing requirements
 * are named. Publishing: 401 without a token, 403 for an agent without the
 * publish right, 200 for one whose group has it (a newer version, which
 * then runs), 409 for a version that exists, 400 for paths that leave the
 * package or bad base64. Cerebrum's list, download and check_updates
 * shapes. */
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

static char g_dir[256];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void mk(const char *rel)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", g_dir, rel);
    assert_int_equal(mkdir(p, 0755), 0);
}

static void put(const char *rel, const char *text)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", g_dir, rel);
    write_file(p, text);
}

static const char GREETER_PY[] =
    "from cerebrum.tool.base import BaseTool\n"
    "from cerebrum.utils import get_from_env\n"
    "\n"
    "class Greeter(BaseTool):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.greeting = get_from_env('GREETING_NOT_SET', 'hello')\n"
    "\n"
    "    def run(self, params):\n"
    "        print('noise on stdout')\n"
    "        return '%s %s from greeter %s' % (self.greeting, params['who'], VERSION)\n"
    "\n"
    "    def get_tool_call_format(self):\n"
    "        return {'type': 'function', 'function': {\n"
    "            'name': 'greeter', 'description': 'Greets someone',\n"
    "            'parameters': {'type': 'object',\n"
    "                           'properties': {'who': {'type': 'string'}},\n"
    "                           'required': ['who']}}}\n";

static const char AGENT_PY[] =
    "import json, os\n"
    "from cerebrum.interface import AutoTool, AutoAgent\n"
    "from cerebrum.llm.apis import llm_call_tool\n"
    "from cerebrum.config.config_manager import config\n"
    "\n"
    "class HubAgent:\n"
    "    def __init__(self, agent_name):\n"
    "        self.agent_name = agent_name\n"
    "        cache = os.path.join(os.environ['XDG_CACHE_HOME'], 'cerebrum_tools',\n"
    "                             'hubtest', 'greeter')\n"
    "        self.cached = sorted(os.listdir(cache)) if os.path.isdir(cache) else []\n"
    "        self.tools = [t.get_tool_call_format()\n"
    "                      for t in AutoTool.from_batch_preloaded(['hubtest/greeter'])]\n"
    "        self.local = AutoTool.from_preloaded('hubtest/greeter').run({'who': 'agent'})\n"
    "\n"
    "    def run(self, task):\n"
    "        messages = [{'role': 'user', 'content': task}]\n"
    "        try:\n"
    "            resp = llm_call_tool(self.agent_name, messages, self.tools)['response']\n"
    "        except Exception as e:\n"
    "            resp = {'response_message': 'llm_call_tool failed: %s' % e}\n"
    "        hub_tools = sorted(t['name'] for t in AutoTool.TOOL_MANAGER.list_toolhub_tools())\n"
    "        me = AutoAgent.from_preloaded('hubtest/hub_agent').__name__\n"
    "        return {'cached': self.cached, 'local': self.local, 'hub_tools': hub_tools, 'me': me,\n"
    "                'kernel': resp.get('response_message'),\n"
    "                'called': [c.get('name') for c in resp.get('tool_calls') or []]}\n";

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/aios-hub-it-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    chmod(g_dir, 0755);
    mk("greeter");
    put("greeter/config.json",
        "{\"name\": \"greeter\", \"description\": [\"Greets \", \"someone\"],\n"
        " \"meta\": {\"author\": \"hubtest\", \"version\": \"0.1.0\", \"license\": \"MIT\"},\n"
        " \"build\": {\"entry\": \"tool.py\", \"module\": \"Greeter\"}}\n");
    char py[2048];
    snprintf(py, sizeof py, "VERSION = 'v1'\n%s", GREETER_PY);
    put("greeter/tool.py", py);
    mk("needy");
    put("needy/config.json",
        "{\"name\": \"needy\", \"meta\": {\"author\": \"hubtest\", \"version\": \"1.0\"},\n"
        " \"build\": {\"entry\": \"needy.py\", \"module\": \"Needy\"}}\n");
    put("needy/needy.py", "import surely_not_installed_pkg_xyz\nclass Needy: pass\n");
    put("needy/requirements.txt", "# what it needs\nsurely-not-installed-pkg-xyz>=1.0\n");
    mk("hub_agent");
    put("hub_agent/config.json",
        "{\"name\": \"hub_agent\", \"description\": [\"Uses a hub tool\"],\n"
        " \"tools\": [\"hubtest/greeter\"],\n"
        " \"meta\": {\"author\": \"hubtest\", \"version\": \"1.0.0\", \"license\": \"MIT\"},\n"
        " \"build\": {\"entry\": \"agent.py\", \"module\": \"HubAgent\"}}\n");
    put("hub_agent/agent.py", AGENT_PY);
    /* network: both declare it, the operator allows one */
    static const char NET_PY[] =
        "import socket\n"
        "class Net:\n"
        "    def run(self, params):\n"
        "        try:\n"
        "            socket.create_connection(('127.0.0.1', int(params['port'])), timeout=3).close()\n"
        "            return 'reached'\n"
        "        except OSError as e:\n"
        "            return 'blocked: %s' % e\n"
        "    def get_tool_call_format(self):\n"
        "        return {'type': 'function', 'function': {'name': 'net', 'parameters': {\n"
        "            'type': 'object', 'properties': {'port': {'type': 'integer'}}}}}\n";
    const char *nets[] = {"netok", "netno"};
    for (int i = 0; i < 2; i++) {
        char rel[64], cfg[512];
        snprintf(rel, sizeof rel, "%s", nets[i]);
        mk(rel);
        snprintf(rel, sizeof rel, "%s/config.json", nets[i]);
        snprintf(cfg, sizeof cfg, "{\"name\": \"%s\", \"meta\": {\"author\": \"hubtest\", "
                 "\"version\": \"1.0\"}, \"build\": {\"entry\": \"net.py\", \"module\": "
                 "\"Net\"}, \"aios\": {\"network\": true}}", nets[i]);
        put(rel, cfg);
        snprintf(rel, sizeof rel, "%s/net.py", nets[i]);
        put(rel, NET_PY);
    }
    /* a package may lower its limits: this one times out */
    mk("slow");
    put("slow/config.json",
        "{\"name\": \"slow\", \"meta\": {\"author\": \"hubtest\", \"version\": \"1.0\"},\n"
        " \"build\": {\"entry\": \"slow.py\", \"module\": \"Slow\"},\n"
        " \"aios\": {\"timeout_ms\": 2500}}\n");
    put("slow/slow.py",
        "import time\n"
        "class Slow:\n"
        "    def run(self, params):\n"
        "        time.sleep(30)\n"
        "        return 'woke'\n"
        "    def get_tool_call_format(self):\n"
        "        return {'type': 'function', 'function': {'name': 'slow', 'parameters': {'type': 'object'}}}\n");
    static char yaml[512];
    snprintf(yaml, sizeof yaml,
             "hub:\n"
             "  network: [hubtest/netok]\n"
             "access:\n"
             "  groups:\n"
             "    publishers: {publish: true}\n"
             "    readers: {tools: [\"*\"]}\n"
             "    hubonly: {tools: [hubtest/greeter]}\n"
             "  agents: {pubagent: publishers, reader: readers, hub_agent: hubonly}\n");
    g_kf = kf_start_config(yaml);
    return 0;
}

static int group_teardown(void **state)
{
    kf_group_teardown(state);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return 0;
}

/* the CLI with the operator's token; stdout+stderr into *out */
static int cli(char **out, const char *fmt, ...)
{
    char args[1024], cmd[2400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "AIOS_TOKEN='%s' '%s' %s --url %s 2>&1", g_kf->child.token,
             aios_bin(), args, g_kf->child.base);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 16;
    char *buf = malloc(cap);
    size_t n = fread(buf, 1, cap - 1, p);
    buf[n] = 0;
    int st = pclose(p);
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *dump(json_t *j)
{
    return j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("(no body)");
}

static long tool_query(const char *name, const char *params, json_t **out)
{
    char body[1024];
    snprintf(body, sizeof body,
             "{\"agent_name\":\"tester\",\"query_type\":\"tool\",\"query_data\":{\"tool_calls\":"
             "[{\"name\":\"%s\",\"parameters\":%s}]}}", name, params);
    long st = kf_call(g_kf, "POST", "/query", body, out);
    /* calls that were well formed but all failed answer 200 with finished:
     * false, as the reference kernel does; their status is status_code */
    json_t *resp = json_object_get(*out, "response");
    if (st == 200 && json_is_false(json_object_get(resp, "finished")))
        st = (long)json_integer_value(json_object_get(resp, "status_code"));
    return st;
}

static void test_publish_and_list(void **state)
{
    (void)state;
    char *out;
    int rc = cli(&out, "hub add '%s/greeter'", g_dir);
    if (rc != 0 || !strstr(out, "tool hubtest/greeter 0.1.0 published")) fail_msg("rc %d: %s", rc, out);
    free(out);
    rc = cli(&out, "hub add '%s/greeter'", g_dir); /* versions do not change */
    if (rc != 1 || !strstr(out, "409") || !strstr(out, "already in the hub")) fail_msg("rc %d: %s", rc, out);
    free(out);
    rc = cli(&out, "hub add '%s/needy'", g_dir);
    if (rc != 0 || !strstr(out, "surely-not-installed-pkg-xyz")) fail_msg("rc %d: %s", rc, out);
    free(out);
    rc = cli(&out, "hub add '%s/hub_agent'", g_dir); /* an agent: it lists tools */
    if (rc != 0 || !strstr(out, "agent hubtest/hub_agent 1.0.0 published")) fail_msg("rc %d: %s", rc, out);
    free(out);
    rc = cli(&out, "hub list");
    if (rc != 0 || !strstr(out, "hubtest/greeter") || !strstr(out, "hubtest/hub_agent"))
        fail_msg("rc %d: %s", rc, out);
    free(out);

    /* Cerebrum's list shape: an object of {author, name, version, description} */
    json_t *j = NULL;
    expect_status(kf_call(g_kf, "GET", "/cerebrum/tools/list", NULL, &j), 200, j);
    json_t *g = json_object_get(j, "hubtest/greeter/0.1.0");
    assert_non_null(g);
    assert_string_equal(json_string_value(json_object_get(g, "author")), "hubtest");
    assert_string_equal(json_string_value(json_object_get(g, "name")), "greeter");
    assert_string_equal(json_string_value(json_object_get(g, "version")), "0.1.0");
    assert_string_equal(json_string_value(json_object_get(g, "description")), "Greets someone");
    json_decref(j);
    /* the agent list ends with an entry that Cerebrum's client drops */
    expect_status(kf_call(g_kf, "GET", "/cerebrum/get_all_agents", NULL, &j), 200, j);
    const char *last = NULL, *key;
    json_t *v;
    json_object_foreach(j, key, v) last = key;
    assert_string_equal(last, "aios_total");
    assert_non_null(json_object_get(j, "hubtest/hub_agent/1.0.0"));
    json_decref(j);

    /* download: the upload payload back, files base64 */
    expect_status(kf_call(g_kf, "GET", "/cerebrum/tools/download?author=hubtest&name=greeter",
                          NULL, &j), 200, j);
    assert_string_equal(json_string_value(json_object_get(j, "module")), "Greeter");
    assert_string_equal(json_string_value(json_object_get(j, "entry")), "tool.py");
    assert_true(json_array_size(json_object_get(j, "files")) == 2);
    json_decref(j);
    expect_status(kf_call(g_kf, "GET", "/cerebrum/tools/download?author=hubtest&name=nope", NULL,
                          &j), 404, j);
    json_decref(j);
    expect_status(kf_call(g_kf, "GET", "/cerebrum/tools/download?author=../x&name=greeter", NULL,
                          &j), 400, j);
    json_decref(j);
    expect_status(kf_call(g_kf, "GET", "/cerebrum/download?author=hubtest&name=hub_agent&version=1.0.0",
                          NULL, &j), 200, j);
    assert_string_equal(json_string_value(json_object_get(j, "module")), "HubAgent");
    json_decref(j);
}

static void test_publish_rights(void **state)
{
    (void)state;
    char tok_plain[128], tok_pub[128];
    kf_register_agent(g_kf, "plain", tok_plain, sizeof tok_plain);
    kf_register_agent(g_kf, "pubagent", tok_pub, sizeof tok_pub);
    /* version 0.2.0 of the greeter: VERSION = 'v2' */
    char py[2048], *b64 = NULL;
    snprintf(py, sizeof py, "VERSION = 'v2'\n%s", GREETER_PY);
    char cmd[2300];
    FILE *p = NULL;
    {
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s/v2.py", g_dir);
        write_file(tmp, py);
        snprintf(cmd, sizeof cmd, "base64 -w0 '%s'", tmp);
        p = popen(cmd, "r");
        assert_non_null(p);
        b64 = calloc(1, 8192);
        size_t n = fread(b64, 1, 8191, p);
        b64[n] = 0;
        pclose(p);
    }
    char body[12000];
    snprintf(body, sizeof body,
             "{\"author\":\"hubtest\",\"name\":\"greeter\",\"version\":\"0.2.0\",\"license\":\"MIT\","
             "\"entry\":\"tool.py\",\"module\":\"Greeter\",\"files\":[{\"path\":\"tool.py\","
             "\"content\":\"%s\"}]}", b64);
    free(b64);
    json_t *j = NULL;
    /* no token: 401; an agent without the right: 403 */
    expect_status(kf_call_as(g_kf, NULL, NULL, "POST", "/cerebrum/tools/upload", body, &j), 401, j);
    json_decref(j);
    expect_status(kf_call_as(g_kf, tok_plain, NULL, "POST", "/cerebrum/tools/upload", body, &j), 403, j);
    assert_error_body(j, "may not publish");
    json_decref(j);
    expect_status(kf_call_as(g_kf, tok_plain, NULL, "POST", "/cerebrum/upload", body, &j), 403, j);
    json_decref(j);
    /* ... but it may read the hub */
    expect_status(kf_call_as(g_kf, tok_plain, NULL, "GET", "/cerebrum/tools/list", NULL, &j), 200, j);
    json_decref(j);
    /* an agent whose group has publish: true */
    expect_status(kf_call_as(g_kf, tok_pub, NULL, "POST", "/cerebrum/tools/upload", body, &j), 200, j);
    assert_string_equal(json_string_value(json_object_get(j, "version")), "0.2.0");
    json_decref(j);
    expect_status(kf_call_as(g_kf, tok_pub, NULL, "POST", "/cerebrum/tools/upload", body, &j), 409, j);
    json_decref(j);
    expect_status(kf_call(g_kf, "GET", "/cerebrum/tools/check_updates?author=hubtest&name=greeter"
                          "&current_version=0.1.0", NULL, &j), 200, j);
    assert_true(json_is_true(json_object_get(j, "update_available")));
    json_decref(j);

    /* bad packages: 400, and the kernel keeps serving */
    const char *bad[] = {
        "{\"author\":\"hubtest\",\"name\":\"evil\",\"version\":\"1.0\",\"entry\":\"tool.py\","
        "\"files\":[{\"path\":\"../../escape.py\",\"content\":\"eA==\"}]}",
        "{\"author\":\"hubtest\",\"name\":\"evil\",\"version\":\"1.0\",\"entry\":\"tool.py\","
        "\"files\":[{\"path\":\"/etc/x\",\"content\":\"eA==\"}]}",
        "{\"author\":\"hubtest\",\"name\":\"evil\",\"version\":\"1.0\",\"entry\":\"tool.py\","
        "\"files\":[{\"path\":\"tool.py\",\"content\":\"not base64!\"}]}",
        "{\"author\":\"../hubtest\",\"name\":\"evil\",\"version\":\"1.0\",\"files\":[]}",
        "{\"author\":\"hubtest\",\"name\":\"evil\",\"version\":\"1.0; rm\",\"files\":[]}",
        "{\"author\":\"hubtest\",\"name\":\"evil\",\"version\":\"1.0\",\"entry\":\"missing.py\","
        "\"files\":[{\"path\":\"tool.py\",\"content\":\"eA==\"}]}",
        "[1,2]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expect_status(kf_call(g_kf, "POST", "/cerebrum/tools/upload", bad[i], &j), 400, j);
        json_decref(j);
    }
    expect_status(kf_call(g_kf, "GET", "/cerebrum/tools/list", NULL, &j), 200, j);
    assert_null(json_object_get(j, "hubtest/evil/1.0"));
    json_decref(j);
    struct stat st;
    char esc[600];
    snprintf(esc, sizeof esc, "%s/hub/escape.py", g_kf->dir);
    assert_int_not_equal(stat(esc, &st), 0);
}

static void test_call_hub_tool(void **state)
{
    (void)state;
    json_t *j = NULL;
    /* the newest version (0.2.0, published above) runs, by author/name ... */
    long st = tool_query("hubtest/greeter", "{\"who\":\"query\"}", &j);
    char *s = dump(j);
    if (st != 200 || !strstr(s, "hello query from greeter v2")) fail_msg("%ld %s", st, s);
    /* what the tool printed went to stderr, not into the result */
    assert_null(strstr(s, "noise on stdout"));
    free(s);
    json_decref(j);
    /* ... and by its bare name */
    st = tool_query("greeter", "{\"who\":\"bare\"}", &j);
    s = dump(j);
    if (st != 200 || !strstr(s, "hello bare from greeter v2")) fail_msg("%ld %s", st, s);
    free(s);
    json_decref(j);
    /* its get_tool_call_format() schema checks the arguments */
    st = tool_query("hubtest/greeter", "{\"who\":5}", &j);
    s = dump(j);
    if (st == 200 || !strstr(s, "who")) fail_msg("%ld %s", st, s);
    free(s);
    json_decref(j);
    st = tool_query("hubtest/greeter", "{}", &j);
    assert_int_not_equal(st, 200);
    json_decref(j);
    /* a declared requirement that is not installed is named, nothing is downloaded */
    st = tool_query("hubtest/needy", "{}", &j);
    s = dump(j);
    if (st == 200 && !strstr(s, "\"ok\":false")) fail_msg("%ld %s", st, s);
    if (!strstr(s, "surely-not-installed-pkg-xyz") || !strstr(s, "installs nothing"))
        fail_msg("%ld %s", st, s);
    free(s);
    json_decref(j);
    /* an unknown name stays not found */
    st = tool_query("hubtest/nothing", "{}", &j);
    s = dump(j);
    if (!strstr(s, "no tool named")) fail_msg("%ld %s", st, s);
    free(s);
    json_decref(j);
    /* GET /tools still lists what the config registered, the hub has its own list */
    expect_status(kf_call(g_kf, "GET", "/tools", NULL, &j), 200, j);
    json_decref(j);
}

/* network only when declared and allowed; a package's own lower timeout */
static void test_hub_tool_limits(void **state)
{
    (void)state;
    char *out;
    const char *names[] = {"netok", "netno", "slow"};
    for (int i = 0; i < 3; i++) {
        int rc = cli(&out, "hub add '%s/%s' --tool", g_dir, names[i]);
        if (rc != 0) fail_msg("rc %d: %s", rc, out);
        free(out);
    }
    json_t *j = NULL;
    char params[64];
    snprintf(params, sizeof params, "{\"port\":%d}", g_kf->child.port);
    long st = tool_query("hubtest/netok", params, &j);
    char *s = dump(j);
    if (st != 200 || !strstr(s, "\"reached\"")) fail_msg("netok: %ld %s", st, s);
    free(s);
    json_decref(j);
    st = tool_query("hubtest/netno", params, &j);
    s = dump(j);
    if (st != 200 || !strstr(s, "blocked")) fail_msg("netno: %ld %s", st, s);
    free(s);
    json_decref(j);
    st = tool_query("hubtest/slow", "{}", &j);
    s = dump(j);
    if (st == 200 || !strstr(s, "within its timeout of 2500 ms")) fail_msg("slow: %ld %s", st, s);
    free(s);
    json_decref(j);
}

static void test_agent_from_hub(void **state)
{
    (void)state;
    /* the agent package from the hub, by author/name, under enforce */
    char *out;
    int rc = cli(&out, "run hubtest/hub_agent --task 'Greet the tester'");
    if (rc != 0) fail_msg("aios run: rc %d\n%s", rc, out);
    /* the result line: JSON */
    char *line = strstr(out, "{\"cached\"");
    if (!line) fail_msg("no result in:\n%s", out);
    char *end = strchr(line, '\n');
    if (end) *end = 0;
    json_t *r = json_loads(line, 0, NULL);
    if (!r) fail_msg("not JSON: %s", line);
    /* found in Cerebrum's cache that the kernel filled: no download */
    json_t *c = json_object_get(r, "cached");
    assert_int_equal(json_array_size(c), 1);
    assert_string_equal(json_string_value(json_array_get(c, 0)), "0-2-0.tool");
    /* the newest version ran in the agent itself ... */
    assert_string_equal(json_string_value(json_object_get(r, "local")), "hello agent from greeter v2");
    /* the hub's routes from inside the sandbox (its run channel), through
     * Cerebrum's ToolManager and AutoAgent */
    json_t *ht = json_object_get(r, "hub_tools");
    char *hs = dump(ht);
    if (!strstr(hs, "\"greeter\"") || !strstr(hs, "\"slow\"")) fail_msg("hub_tools: %s", hs);
    free(hs);
    assert_string_equal(json_string_value(json_object_get(r, "me")), "HubAgent");
    /* ... and in the kernel, through the model's forced tool call */
    const char *k = json_string_value(json_object_get(r, "kernel"));
    if (!k || !strstr(k, "from greeter v2")) fail_msg("kernel: %s\n%s", k ? k : "(null)", out);
    json_decref(r);
    free(out);
}

int main(void)
{
    if (system("python3 -c 'import json' >/dev/null 2>&1") != 0) {
        printf("SKIP: no python3\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_publish_and_list),
        cmocka_unit_test(test_publish_rights),
        cmocka_unit_test(test_call_hub_tool),
        cmocka_unit_test(test_hub_tool_limits),
        cmocka_unit_test(test_agent_from_hub),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
