/* Integration: the example agents (agents/, built into build/agents/) run
 * end to end as processes on a kernel with the built-in test model, all
 * four at once: react_agent (LLM + tools), note_agent (LLM + memory),
 * file_agent (LLM + storage) in C on libaios, and py_agent (Python,
 * Cerebrum-style, stdlib-only aios_client).
 *
 * An agent that needs a manager this kernel does not have gets HTTP 501,
 * prints "SKIP: ..." and exits 3; the test then prints a SKIP line naming
 * the manager and still asserts everything before it (the LLM call was
 * made and accounted to the process). Any other exit is a failure. */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_agents[PATH_MAX];

static int group_setup(void **state)
{
    (void)state;
    char bin[PATH_MAX];
    snprintf(bin, sizeof bin, "%s", aios_bin());
    char *abs = realpath(bin, NULL);
    assert_non_null(abs);
    snprintf(g_agents, sizeof g_agents, "%s/agents", dirname(abs));
    free(abs);
    char yaml[PATH_MAX + 64];
    snprintf(yaml, sizeof yaml, "agent_factory:\n  agents_dir: \"%s\"\n", g_agents);
    g_kf = kf_start_config(yaml);
    return 0;
}

/* agents submitted to this group's kernel (harness.c) */
#define submit(agent, task) kf_submit_agent(g_kf, agent, task)
#define wait_final(id, timeout_s) kf_wait_agent(g_kf, id, timeout_s)

static char *stdout_of(long long id)
{
    char path[64];
    snprintf(path, sizeof path, "/agents/%lld/logs", id);
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "GET", path, NULL, &j), 200);
    size_t n = strlen(json_string_value(json_object_get(j, "stdout"))) +
               strlen(json_string_value(json_object_get(j, "stderr"))) + 32;
    char *s = malloc(n);
    snprintf(s, n, "%s\n--stderr--\n%s", json_string_value(json_object_get(j, "stdout")),
             json_string_value(json_object_get(j, "stderr")));
    json_decref(j);
    return s;
}

struct expect {
    const char *agent;
    const char *task;
    const char *result_key; /* present in the JSON result when it completed */
};

static void test_all_example_agents_concurrently(void **state)
{
    (void)state;
    struct expect ex[] = {
        {"react_agent", "What is 12*(3+4)?", "answer"},
        {"note_agent", "Remember the meeting on Friday", "memory_id"},
        {"file_agent", "Write a short status report", "file"},
        {"py_agent", "Say hello from Python", "answer_chars"},
    };
    size_t n = sizeof ex / sizeof ex[0];
    bool have_python = system("python3 -c 'import json' >/dev/null 2>&1") == 0;
    long long ids[8];
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(ex[i].agent, "py_agent") && !have_python) {
            printf("SKIP py_agent: python3 is not installed on this machine\n");
            ids[i] = 0;
            continue;
        }
        ids[i] = submit(ex[i].agent, ex[i].task);
    }
    int n_done = 0, n_skip = 0;
    for (size_t i = 0; i < n; i++) {
        if (!ids[i]) continue;
        json_t *j = wait_final(ids[i], 280);
        const char *st = json_string_value(json_object_get(j, "status"));
        json_t *ec = json_object_get(j, "exit_code");
        json_t *res = json_object_get(j, "result");
        char *log = stdout_of(ids[i]);
        /* the LLM call is made first by every agent, and accounted to its process */
        json_t *u = json_object_get(j, "usage");
        if (json_integer_value(json_object_get(json_object_get(u, "by_kind"), "llm")) < 1)
            fail_msg("%s: no LLM syscall accounted to its process:\n%s", ex[i].agent, log);
        if (json_is_integer(ec) && json_integer_value(ec) == 3) {
            const char *skip = strstr(log, "SKIP:");
            if (!skip || !strstr(skip, "501")) fail_msg("%s exited 3 without a SKIP 501 line:\n%s", ex[i].agent, log);
            const char *eol = strchr(skip, '\n');
            printf("SKIP %s: %.*s\n", ex[i].agent, eol ? (int)(eol - skip) : (int)strlen(skip), skip);
            assert_true(json_is_object(res));
            assert_true(json_is_string(json_object_get(res, "skipped")));
            n_skip++;
        } else {
            if (strcmp(st, "completed") != 0)
                fail_msg("%s: %s (exit %lld):\n%s", ex[i].agent, st, (long long)json_integer_value(ec), log);
            if (!json_is_object(res) || !json_object_get(res, ex[i].result_key)) {
                char *d = json_dumps(res, JSON_ENCODE_ANY);
                fail_msg("%s: result lacks '%s': %s\n%s", ex[i].agent, ex[i].result_key, d ? d : "", log);
            }
            json_t *sk = json_object_get(res, "skipped");
            size_t k;
            json_t *v;
            json_array_foreach(sk, k, v) printf("SKIP %s: the %s manager answered 501 (the rest ran)\n",
                                                ex[i].agent, json_string_value(v));
            char *d = json_dumps(res, JSON_COMPACT);
            printf("ok   %s: %s\n", ex[i].agent, d ? d : "");
            free(d);
            n_done++;
        }
        free(log);
        json_decref(j);
    }
    printf("example agents: %d completed, %d skipped a missing manager\n", n_done, n_skip);
    fflush(stdout);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_example_agents_concurrently),
    };
    return cmocka_run_group_tests(tests, group_setup, kf_group_teardown);
}
