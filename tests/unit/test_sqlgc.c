/* Unit tests for src/util/sqlgc.c, the group commit of the memory and
 * storage stores, on a real SQLite file (WAL, synchronous=FULL): jobs that
 * wait while a batch runs share the next commit; a failing job undoes only
 * its own changes; derived (non-durable) jobs commit in their own
 * transaction, with synchronous=NORMAL where durable ones have FULL;
 * every caller sees its own result; a posted job is
 * committed at once when nothing runs, else after the running batch. The first job holds its
 * batch open until the others are queued, so the grouping is certain
 * rather than left to timing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/err.h"
#include "util/sqlgc.h"

#define N_FOLLOW 7

static char g_dir[64];
static sqlite3 *g_db;
static struct sqlgc *g_gc;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static bool g_entered, g_release;

struct job {
    struct sqlgc_job j;
    int key;
    bool fail;   /* insert, then report a failure */
    bool hold;   /* wait for g_release before inserting */
    int rc;
    pthread_t th;
};

static int insert_fn(void *conn, void *arg)
{
    struct job *jb = arg;
    if (jb->hold) {
        pthread_mutex_lock(&g_mu);
        g_entered = true;
        pthread_cond_broadcast(&g_cv);
        while (!g_release) pthread_cond_wait(&g_cv, &g_mu);
        pthread_mutex_unlock(&g_mu);
    }
    char sql[96];
    snprintf(sql, sizeof sql, "INSERT INTO t(k) VALUES(%d)", jb->key);
    if (sqlite3_exec(conn, sql, NULL, NULL, NULL) != SQLITE_OK) return AIOS_EIO;
    return jb->fail ? AIOS_EINVAL : 0;
}

static void *run_job(void *arg)
{
    struct job *jb = arg;
    if (!jb->j.fn) jb->j.fn = insert_fn;
    jb->j.arg = jb;
    jb->rc = sqlgc_run(g_gc, &jb->j);
    return NULL;
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/aios-sqlgc-XXXXXX");
    if (!mkdtemp(g_dir)) return -1;
    char path[128];
    snprintf(path, sizeof path, "%s/t.db", g_dir);
    if (sqlite3_open(path, &g_db) != SQLITE_OK) return -1;
    if (sqlite3_exec(g_db, "PRAGMA journal_mode=WAL; CREATE TABLE t(k INTEGER PRIMARY KEY);",
                     NULL, NULL, NULL) != SQLITE_OK)
        return -1;
    g_entered = g_release = false;
    return sqlgc_open(&g_gc, g_db, g_db, true) ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    sqlgc_close(g_gc);
    sqlite3_close(g_db);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int count_rows(void)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(g_db, "SELECT count(*) FROM t", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return n;
}

static bool has_row(int k)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(g_db, "SELECT 1 FROM t WHERE k = ?", -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_int(st, 1, k);
    bool r = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return r;
}

/* a leader holds its batch open; N_FOLLOW jobs queue behind it (durable
 * ones, and `derived` of them not durable); then it is released */
static void run_round(struct job *lead, struct job *f, int derived)
{
    lead->key = 100;
    lead->hold = true;
    lead->j.durable = true;
    assert_int_equal(pthread_create(&lead->th, NULL, run_job, lead), 0);
    pthread_mutex_lock(&g_mu);
    while (!g_entered) pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
    for (int i = 0; i < N_FOLLOW; i++) {
        f[i].key = i;
        f[i].j.durable = i >= derived;
        assert_int_equal(pthread_create(&f[i].th, NULL, run_job, &f[i]), 0);
    }
    while (sqlgc_waiting(g_gc) < N_FOLLOW) usleep(1000);
    pthread_mutex_lock(&g_mu);
    g_release = true;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
    pthread_join(lead->th, NULL);
    for (int i = 0; i < N_FOLLOW; i++) pthread_join(f[i].th, NULL);
}

static void test_waiting_jobs_share_one_commit(void **state)
{
    (void)state;
    struct job lead, f[N_FOLLOW];
    memset(&lead, 0, sizeof lead);
    memset(f, 0, sizeof f);
    run_round(&lead, f, 0);
    assert_int_equal(lead.rc, 0);
    for (int i = 0; i < N_FOLLOW; i++) assert_int_equal(f[i].rc, 0);
    long long commits, jobs;
    sqlgc_stats(g_gc, &commits, &jobs);
    assert_int_equal(jobs, N_FOLLOW + 1);
    assert_int_equal(commits, 2); /* the leader's, then one for all the others */
    assert_int_equal(count_rows(), N_FOLLOW + 1);
}

static void test_failed_job_undoes_only_itself(void **state)
{
    (void)state;
    struct job lead, f[N_FOLLOW];
    memset(&lead, 0, sizeof lead);
    memset(f, 0, sizeof f);
    f[3].fail = true;
    run_round(&lead, f, 0);
    for (int i = 0; i < N_FOLLOW; i++) assert_int_equal(f[i].rc, i == 3 ? AIOS_EINVAL : 0);
    assert_int_equal(count_rows(), N_FOLLOW); /* the leader and six others */
    assert_false(has_row(3));
    assert_true(has_row(2) && has_row(4) && has_row(100));
    long long commits, jobs;
    sqlgc_stats(g_gc, &commits, &jobs);
    assert_int_equal(commits, 2);
}

/* a failing job makes its batch run again, one savepoint per job: the
 * jobs before it ran twice, and what the first try wrote is gone (a row
 * twice would have failed the primary key); a job that fails alone
 * leaves nothing and does not run twice */
static int g_runs[128]; /* by key */

static int counting_fn(void *conn, void *arg)
{
    struct job *jb = arg;
    g_runs[jb->key]++;
    return insert_fn(conn, arg);
}

static void test_failed_job_reruns_its_batch(void **state)
{
    (void)state;
    struct job lead, f[N_FOLLOW];
    memset(&lead, 0, sizeof lead);
    memset(f, 0, sizeof f);
    memset(g_runs, 0, sizeof g_runs);
    f[5].fail = true;
    for (int i = 0; i < N_FOLLOW; i++) f[i].j.fn = counting_fn; /* run_job keeps a set fn */
    run_round(&lead, f, 0);
    for (int i = 0; i < N_FOLLOW; i++) assert_int_equal(f[i].rc, i == 5 ? AIOS_EINVAL : 0);
    /* the failing job ran in both tries; the ones queued before it too,
     * the ones after it only in the second (the threads queue in any order) */
    assert_int_equal(g_runs[5], 2);
    for (int i = 0; i < N_FOLLOW; i++) assert_true(g_runs[i] == 1 || g_runs[i] == 2);
    assert_int_equal(count_rows(), N_FOLLOW);
    assert_false(has_row(5));
    struct job alone = {.key = 50, .fail = true};
    alone.j.fn = counting_fn;
    memset(g_runs, 0, sizeof g_runs);
    run_job(&alone);
    assert_int_equal(alone.rc, AIOS_EINVAL);
    assert_int_equal(g_runs[50], 1);
    assert_false(has_row(50));
    assert_int_equal(count_rows(), N_FOLLOW);
}

static void test_derived_jobs_commit_apart(void **state)
{
    (void)state;
    struct job lead, f[N_FOLLOW];
    memset(&lead, 0, sizeof lead);
    memset(f, 0, sizeof f);
    run_round(&lead, f, 3);
    for (int i = 0; i < N_FOLLOW; i++) assert_int_equal(f[i].rc, 0);
    assert_int_equal(count_rows(), N_FOLLOW + 1);
    long long commits, jobs;
    sqlgc_stats(g_gc, &commits, &jobs);
    assert_int_equal(commits, 3); /* the leader's, the derived ones', the durable ones' */
    assert_int_equal(jobs, N_FOLLOW + 1);
}

/* a job that records the connection's PRAGMA synchronous as it runs */
struct sync_job {
    struct sqlgc_job j;
    int level; /* 1 NORMAL, 2 FULL */
};

static int sync_level_fn(void *conn, void *arg)
{
    struct sync_job *sj = arg;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(conn, "PRAGMA synchronous", -1, &st, NULL) != SQLITE_OK) return AIOS_EIO;
    sj->level = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_finalize(st);
    return 0;
}

static int run_sync_job(bool durable)
{
    struct sync_job sj = {.j = {.fn = sync_level_fn, .durable = durable}, .level = 0};
    sj.j.arg = &sj;
    assert_int_equal(sqlgc_run(g_gc, &sj.j), 0);
    return sj.level;
}

/* derived jobs commit with synchronous=NORMAL (no fsync), durable ones
 * with FULL, from the very first batch on (a prepared PRAGMA statement
 * takes effect when compiled, not at its first step: the first derived
 * batch used to run under FULL) */
static void test_sync_level_per_kind(void **state)
{
    (void)state;
    assert_int_equal(run_sync_job(false), 1);
    assert_int_equal(run_sync_job(true), 2);
    assert_int_equal(run_sync_job(false), 1);
    assert_int_equal(run_sync_job(false), 1);
    assert_int_equal(run_sync_job(true), 2);
}

/* a duplicate key fails inside SQLite; the job's own error comes back */
static void test_sql_error_reaches_its_caller(void **state)
{
    (void)state;
    struct job a = {.key = 7}, b = {.key = 7};
    run_job(&a);
    run_job(&b);
    assert_int_equal(a.rc, 0);
    assert_int_equal(b.rc, AIOS_EIO);
    assert_int_equal(count_rows(), 1);
}

static int g_freed;

static void posted_free(struct sqlgc_job *j)
{
    g_freed++;
    free(j->arg);
    free(j);
}

static struct sqlgc_job *posted(int key)
{
    struct job *jb = calloc(1, sizeof *jb);
    struct sqlgc_job *j = calloc(1, sizeof *j);
    assert_non_null(jb);
    assert_non_null(j);
    jb->key = key;
    j->fn = insert_fn;
    j->arg = jb;
    j->free = posted_free;
    return j;
}

/* a posted job: committed at once when nothing runs; else with the next
 * batch, after the one that was running, and freed either way */
static void test_posted_jobs(void **state)
{
    (void)state;
    g_freed = 0;
    sqlgc_post(g_gc, posted(50));
    assert_true(has_row(50)); /* committed before sqlgc_post returned */
    assert_int_equal(g_freed, 1);
    struct job lead;
    memset(&lead, 0, sizeof lead);
    lead.key = 100;
    lead.hold = true;
    lead.j.durable = true;
    assert_int_equal(pthread_create(&lead.th, NULL, run_job, &lead), 0);
    pthread_mutex_lock(&g_mu);
    while (!g_entered) pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
    sqlgc_post(g_gc, posted(51)); /* returns at once: a batch is running */
    assert_int_equal(sqlgc_waiting(g_gc), 1);
    assert_false(has_row(51));
    pthread_mutex_lock(&g_mu);
    g_release = true;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
    pthread_join(lead.th, NULL); /* its leader commits the posted job after its own */
    assert_int_equal(lead.rc, 0);
    assert_true(has_row(51) && has_row(100));
    assert_int_equal(g_freed, 2);
    assert_int_equal(sqlgc_waiting(g_gc), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_waiting_jobs_share_one_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_job_undoes_only_itself, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_job_reruns_its_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_derived_jobs_commit_apart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_level_per_kind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sql_error_reaches_its_caller, setup, teardown),
        cmocka_unit_test_setup_teardown(test_posted_jobs, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
