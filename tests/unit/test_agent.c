/* Unit tests for src/agents/agent.c without a kernel: package validation,
 * launching a shell agent, the process table, result, kill, tokens,
 * accounting, selection. */
#include "agents/agent.h"
#include "kernel/config.h"
#include "util/err.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[64];

static void put(const char *rel, const char *text, int mode)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", g_dir, rel);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    chmod(p, (mode_t)mode);
}

static void mk(const char *rel)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", g_dir, rel);
    mkdir(p, 0755);
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/aios-unit-agent-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    mk("agents");
    mk("agents/ok");
    put("agents/ok/config.json",
        "{\"name\":\"ok\",\"tools\":[\"a/b\"],\"meta\":{\"author\":\"x\"},\"build\":{\"entry\":\"run.sh\"}}", 0644);
    put("agents/ok/run.sh", "echo \"$AIOS_AGENT_NAME:$1\"\n", 0755);
    mk("agents/badtools");
    put("agents/badtools/config.json", "{\"name\":\"b\",\"tools\":[1],\"build\":{\"entry\":\"x\"}}", 0644);
    mk("agents/noname");
    put("agents/noname/config.json", "{\"build\":{\"entry\":\"x\"}}", 0644);
    mk("agents/badmeta");
    put("agents/badmeta/config.json", "{\"name\":\"m\",\"meta\":[],\"build\":{\"entry\":\"run.sh\"}}", 0644);
    mk("agents/sleep");
    put("agents/sleep/config.json", "{\"name\":\"sleep\",\"build\":{\"entry\":\"run.sh\"}}", 0644);
    put("agents/sleep/run.sh", "exec sleep 30\n", 0755);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void expect_pkg(const char *rel, int want, const char *needle)
{
    char p[512], err[1024] = "";
    snprintf(p, sizeof p, "%s/%s", g_dir, rel);
    struct agent_pkg pkg;
    int rc = agent_pkg_load(&pkg, p, err, sizeof err);
    if (rc != want) fail_msg("%s: rc %d want %d (%s)", rel, rc, want, err);
    if (needle && !strstr(err, needle)) fail_msg("%s: '%s' lacks '%s'", rel, err, needle);
    agent_pkg_free(&pkg);
}

static void test_packages(void **state)
{
    (void)state;
    char p[512], err[1024] = "";
    snprintf(p, sizeof p, "%s/agents/ok", g_dir);
    struct agent_pkg pkg;
    assert_int_equal(agent_pkg_load(&pkg, p, err, sizeof err), 0);
    assert_string_equal(pkg.name, "ok");
    assert_non_null(strstr(pkg.entry, "/agents/ok/run.sh"));
    assert_null(pkg.module);
    agent_pkg_free(&pkg);
    expect_pkg("agents/nothere", AIOS_ENOTFOUND, "does not exist");
    expect_pkg("agents", AIOS_ENOTFOUND, "config.json");
    expect_pkg("agents/badtools", AIOS_EINVAL, "tools[0]");
    expect_pkg("agents/noname", AIOS_EINVAL, "'name'");
    expect_pkg("agents/badmeta", AIOS_EINVAL, "'meta'");
}

static struct agent_factory *factory(struct aios_config *cfg)
{
    char yaml[512], err[1024] = "";
    snprintf(yaml, sizeof yaml, "data_dir: \"%s/data\"\nagent_factory:\n  agents_dir: \"%s/agents\"\n", g_dir, g_dir);
    assert_int_equal(config_load_string(cfg, yaml, strlen(yaml), err, sizeof err), 0);
    struct agent_factory *f = NULL;
    if (agent_factory_create(&f, cfg, err, sizeof err)) fail_msg("%s", err);
    return f;
}

static json_t *wait_final(struct agent_factory *f, uint64_t id)
{
    for (int i = 0; i < 200; i++) {
        json_t *j = agent_proc_json(f, id);
        assert_non_null(j);
        if (strcmp(json_string_value(json_object_get(j, "status")), "running")) return j;
        json_decref(j);
        usleep(25000);
    }
    fail_msg("still running");
    return NULL;
}

static void test_run_kill_tokens(void **state)
{
    (void)state;
    struct aios_config cfg;
    struct agent_factory *f = factory(&cfg);
    char err[1024] = "";
    uint64_t id = 0, id2 = 0;
    assert_int_equal(agent_submit(f, "ok", "t1", "http://127.0.0.1:1", &id, err, sizeof err), 0);
    json_t *j = wait_final(f, id);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "completed");
    assert_string_equal(json_string_value(json_object_get(j, "result")), "ok:t1");
    json_decref(j);
    char *data;
    size_t n;
    int64_t next;
    assert_int_equal(agent_log_read(f, id, "stdout", 3, 1024, &data, &n, &next), 0);
    assert_string_equal(data, "t1\n");
    assert_int_equal(next, 6);
    free(data);
    assert_int_equal(agent_log_read(f, 999, "stdout", 0, 10, &data, &n, &next), AIOS_ENOTFOUND);
    assert_int_equal(agent_kill(f, id, SIGTERM), AIOS_EINVAL);
    assert_int_equal(agent_kill(f, 999, SIGTERM), AIOS_ENOTFOUND);
    assert_int_equal(agent_submit(f, "nope", "t", "u", &id2, err, sizeof err), AIOS_ENOTFOUND);
    assert_int_equal(agent_submit(f, "../x", "t", "u", &id2, err, sizeof err), AIOS_ENOTFOUND);
    assert_int_equal(agent_submit(f, "", "t", "u", &id2, err, sizeof err), AIOS_EINVAL);

    assert_int_equal(agent_submit(f, "sleep", "t", "u", &id2, err, sizeof err), 0);
    assert_int_equal(agent_find_token(f, "short"), 0);
    assert_int_equal(agent_find_token(f, "0123456789abcdef0123456789abcdef"), 0);
    assert_int_equal(agent_find_token(f, NULL), 0);
    assert_int_equal(agent_kill(f, id2, SIGTERM), 0);
    j = wait_final(f, id2);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "killed");
    json_decref(j);

    agent_account(f, 0, NULL, "x", SYSCALL_KIND_LLM, true, 0.5, 1.0, 10, 3);
    agent_account(f, 0, NULL, "x", SYSCALL_KIND_TOOL, false, 0, 0.1, 0, 0);
    json_t *a = agent_accounting_json(f);
    json_t *x = json_object_get(a, "x");
    assert_int_equal(json_integer_value(json_object_get(x, "syscalls")), 2);
    assert_int_equal(json_integer_value(json_object_get(x, "errors")), 1);
    assert_int_equal(json_integer_value(json_object_get(x, "prompt_tokens")), 10);
    json_decref(a);

    json_t *sel = json_pack("[{s:s}]", "name", "m");
    agent_select_llms(f, sel);
    json_decref(sel);
    sel = agent_selected_llms(f);
    assert_int_equal(json_array_size(sel), 1);
    json_decref(sel);

    int killed, removed;
    agent_cleanup(f, &killed, &removed);
    assert_int_equal(killed, 0);
    assert_int_equal(removed, 2);
    assert_int_equal(json_array_size(j = agent_ps_json(f)), 0);
    json_decref(j);
    /* destroy with a running agent: it is stopped */
    assert_int_equal(agent_submit(f, "sleep", "t", "u", &id2, err, sizeof err), 0);
    agent_factory_destroy(f);
    config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_packages),
        cmocka_unit_test(test_run_kill_tokens),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
