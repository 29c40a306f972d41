/* Unit tests for src/access/audit.c, the audit log's writer, over the real
 * SQLite access store: a queued row reaches the store without a flush
 * (the writer looks at its queue by itself while rows come), and again
 * after the writer has gone to sleep (the next row wakes it); a flush
 * writes everything at once; more rows than the queue holds are all
 * written (callers wait for room, none is dropped). The store is read
 * through its own ops, never through acc_audit_query, which flushes
 * first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "access/acc_store.h"
#include "access/access.h"

static char g_dir[64];
static struct acc_store *g_st;
static struct acc_audit *g_audit;

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/aios-audit-XXXXXX");
    if (!mkdtemp(g_dir)) return -1;
    char path[128], err[256];
    snprintf(path, sizeof path, "%s/audit.db", g_dir);
    if (acc_store_sqlite.open(&g_st, path, err, sizeof err)) return -1;
    return acc_audit_open(&g_audit, &acc_store_sqlite, g_st, err, sizeof err) ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    acc_audit_close(g_audit);
    acc_store_sqlite.close(g_st);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void add_row(const char *agent, uint64_t id)
{
    struct acc_audit_row r = {.agent = agent, .syscall_id = id, .resource = "memory:a",
                              .action = "get_memory", .decision = "allowed", .reason = "own"};
    acc_audit_add(g_audit, &r);
}

/* rows of agent in the store now (read past the audit writer) */
static size_t stored(const char *agent)
{
    json_t *rows = NULL;
    char err[256];
    assert_int_equal(acc_store_sqlite.audit_query(g_st, agent, 0, 100000, &rows, err, sizeof err), 0);
    size_t n = json_array_size(rows);
    json_decref(rows);
    return n;
}

/* wait up to 10 s for agent to have n rows in the store */
static size_t stored_within(const char *agent, size_t n)
{
    size_t got = 0;
    for (int i = 0; i < 1000 && (got = stored(agent)) < n; i++) usleep(10000);
    return got;
}

static void test_rows_reach_the_store_without_a_flush(void **state)
{
    (void)state;
    add_row("a", 1);
    assert_int_equal(stored_within("a", 1), 1);
    /* idle past the writer's linger, so it sleeps until a row wakes it */
    usleep(600 * 1000);
    add_row("a", 2);
    assert_int_equal(stored_within("a", 2), 2);
    add_row("a", 3);
    assert_int_equal(stored_within("a", 3), 3);
}

static void test_flush_writes_at_once(void **state)
{
    (void)state;
    for (int i = 0; i < 100; i++) add_row("b", (uint64_t)i + 1);
    acc_audit_flush(g_audit);
    assert_int_equal(stored("b"), 100);
}

/* more than the queue's 4,096 rows at once: the caller waits for room */
static void test_a_full_queue_drops_nothing(void **state)
{
    (void)state;
    for (int i = 0; i < 10000; i++) add_row("c", (uint64_t)i + 1);
    acc_audit_flush(g_audit);
    assert_int_equal(stored("c"), 10000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rows_reach_the_store_without_a_flush, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_flush_writes_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_full_queue_drops_nothing, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
