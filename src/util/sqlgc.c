/* Group commit for one SQLite writer connection (see sqlgc.h).
 *
 * Purpose: SQLite has one writer at a time and, with synchronous=FULL in
 * WAL mode, one fsync of the WAL per commit. Writers that each commit
 * alone queue on that fsync (and on SQLite's busy handler, which sleeps).
 * Here every write of a store is a job for the store's one writer
 * connection, and the jobs that are waiting at one moment share a commit.
 *
 * How (leader and followers, no thread of its own): a caller appends its
 * job to the queue. If no batch is running it becomes the leader: it takes
 * every queued job, runs them in one transaction, commits once, marks each
 * job done with its result and wakes the waiters. When a job of a batch
 * fails, the leader undoes the whole transaction and runs the batch again
 * with each job inside a savepoint (a failing job undoes only its own
 * changes), so a job may run twice: its effects must be its SQL and what
 * it writes into its own arg. Not a savepoint per job from the start
 * because FTS5 (SQLite 3.40) writes its pending index out as a new
 * segment at every savepoint and release: with one per job every job of a
 * batch paid for a segment of its own, and for merging them later
 * (docs/performance.md, "Where the time goes"). Jobs that arrive while a
 * batch runs wait for the next one, whose leader is the first of them to
 * wake. A caller returns only when its job's commit is over, so a durable
 * job is answered after the fsync that covers it. Jobs commit in the
 * order they were queued; sqlgc_run_queued tells its caller when its job
 * has its place, so the caller can let go of its own lock before the
 * fsync and still know what commits first. A posted job
 * (sqlgc_post) has no caller waiting: it joins the next batch when a
 * batch is running or a caller waits to lead one; otherwise its poster
 * commits it at once (no fsync: posted jobs are not durable). A leader
 * that finds only posted jobs queued after its batch commits them too, so
 * none is left behind.
 *
 * Durable and derived data: with full_sync a batch commits its non-durable
 * jobs (statistics, vectors) first, in their own transaction with
 * synchronous=NORMAL (no fsync), wakes them, then the durable jobs with
 * synchronous=FULL. Without full_sync one transaction takes all.
 *
 * When SQLite rolls a whole transaction back by itself (a full disk, an
 * I/O error), the jobs that ran before in it are lost with it: they get
 * the same error, and the rest of the batch runs in a new transaction. A
 * failed COMMIT fails every job it held. AIOS_ENOSPC for SQLITE_FULL.
 *
 * Locking: `mu` guards the queue, `leading` and the counters; it is a leaf
 * lock, never held during SQL. A caller may hold a lock of its own module
 * around sqlgc_run (the store's agent or stripe lock); sqlgc never calls
 * back into the store with `mu` held. Only the leader touches the
 * connection and the prepared statements. Ownership: jobs are the
 * callers' (usually on their stacks); sqlgc never touches a job after
 * marking it done. */
#include "util/sqlgc.h"

#include "util/err.h"
#include "util/log.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>

enum { S_BEGIN, S_COMMIT, S_ROLLBACK, S_SAVE, S_UNDO, S_RELEASE, S__N };

static const char *const k_sql[S__N] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_SAVE] = "SAVEPOINT sqlgc_job",
    [S_UNDO] = "ROLLBACK TO sqlgc_job",
    [S_RELEASE] = "RELEASE sqlgc_job",
};

struct sqlgc {
    sqlite3 *db;
    void *conn;
    bool full_sync;
    int cur_sync; /* -1 unknown, 0 NORMAL, 1 FULL (leader only) */
    sqlite3_stmt *st[S__N];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct sqlgc_job *head, *tail; /* waiting for the next batch */
    int n_sync;                    /* of them, jobs whose callers wait (sqlgc_run) */
    bool leading;                  /* a batch is running */
    long long n_commits, n_jobs;
};

int sqlgc_open(struct sqlgc **out, sqlite3 *db, void *conn, bool full_sync)
{
    *out = NULL;
    struct sqlgc *g = calloc(1, sizeof *g);
    if (!g) return AIOS_ENOMEM;
    g->db = db;
    g->conn = conn;
    g->full_sync = full_sync;
    g->cur_sync = -1;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    for (int i = 0; i < S__N; i++) {
        if (sqlite3_prepare_v3(db, k_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &g->st[i], NULL) !=
            SQLITE_OK) {
            LOG_ERROR("sqlgc", "%s: %s", k_sql[i], sqlite3_errmsg(db));
            sqlgc_close(g);
            return AIOS_EIO;
        }
    }
    *out = g;
    return 0;
}

void sqlgc_close(struct sqlgc *g)
{
    if (!g) return;
    assert(!g->head && !g->leading);
    for (int i = 0; i < S__N; i++) sqlite3_finalize(g->st[i]);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

void sqlgc_stats(struct sqlgc *g, long long *commits, long long *jobs)
{
    pthread_mutex_lock(&g->mu);
    *commits = g->n_commits;
    *jobs = g->n_jobs;
    pthread_mutex_unlock(&g->mu);
}

int sqlgc_waiting(struct sqlgc *g)
{
    int n = 0;
    pthread_mutex_lock(&g->mu);
    for (struct sqlgc_job *k = g->head; k; k = k->next) n++;
    pthread_mutex_unlock(&g->mu);
    return n;
}

/* SQLITE_DONE -> 0, else the SQLite error */
static int step(struct sqlgc *g, int i)
{
    int r = sqlite3_step(g->st[i]);
    sqlite3_reset(g->st[i]);
    return r == SQLITE_DONE ? 0 : r;
}

static int err_of(int sqlite_rc)
{
    return (sqlite_rc & 0xff) == SQLITE_FULL ? AIOS_ENOSPC : AIOS_EIO;
}

static void fail_from(struct sqlgc_job *from, struct sqlgc_job *to, int e)
{
    for (struct sqlgc_job *k = from; k && k != to; k = k->next)
        if (!k->rc) k->rc = e;
}

/* The common case: list's jobs in one transaction without a savepoint
 * each, committed. 1 when that worked (every job's rc is 0), 0 when a job
 * failed or SQLite ended the transaction: then nothing of it is left and
 * every rc is back to 0, except for a list of one job, whose outcome is
 * final (the transaction held nothing else) and *done is set. */
static int commit_plain(struct sqlgc *g, struct sqlgc_job *list, bool *done)
{
    *done = false;
    int r = step(g, S_BEGIN);
    if (r) return 0; /* the savepoint path begins again and reports */
    bool ok = true;
    for (struct sqlgc_job *j = list; j && ok; j = j->next) {
        j->rc = j->fn(g->conn, j->arg);
        ok = !j->rc && !sqlite3_get_autocommit(g->db);
    }
    if (ok) {
        if (!(r = step(g, S_COMMIT))) return 1;
        LOG_ERROR("sqlgc", "commit: %s", sqlite3_errmsg(g->db));
        fail_from(list, NULL, err_of(r));
        if (!sqlite3_get_autocommit(g->db)) step(g, S_ROLLBACK);
        *done = true;
        return 0;
    }
    bool ended = sqlite3_get_autocommit(g->db); /* SQLite rolled it back itself */
    if (!ended) step(g, S_ROLLBACK);
    if (!list->next) { /* as the savepoint path would end it */
        if (!list->rc) list->rc = AIOS_EIO;
        *done = true;
        return 0;
    }
    for (struct sqlgc_job *j = list; j; j = j->next) j->rc = 0;
    return 0;
}

/* Run list (all durable, or all not) in one transaction (or more, when
 * SQLite rolls one back by itself) and commit. Sets every job's rc. */
static int commit_list(struct sqlgc *g, struct sqlgc_job *list, bool durable)
{
    if (!list) return 0;
    if (g->full_sync && g->cur_sync != (int)durable) {
        /* run from its text each time: SQLite applies PRAGMA synchronous
         * when it compiles the statement, so the first step of a prepared
         * one changed nothing (the first derived batch got an fsync) */
        if (sqlite3_exec(g->db, durable ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                         NULL, NULL, NULL) == SQLITE_OK) {
            g->cur_sync = durable;
        } else if (durable) { /* never commit a durable job without its fsync */
            LOG_ERROR("sqlgc", "cannot set synchronous=FULL: %s", sqlite3_errmsg(g->db));
            fail_from(list, NULL, AIOS_EIO);
            return 0;
        }
    }
    bool done;
    if (commit_plain(g, list, &done) || done) return !done;
    /* a job failed: again, each job in a savepoint of its own */
    int r, n_commits = 0;
    struct sqlgc_job *open_from = list; /* the jobs in the open transaction */
    if ((r = step(g, S_BEGIN))) {
        LOG_ERROR("sqlgc", "begin: %s", sqlite3_errmsg(g->db));
        fail_from(list, NULL, err_of(r));
        return 0;
    }
    for (struct sqlgc_job *j = list; j; j = j->next) {
        if ((r = step(g, S_SAVE))) {
            j->rc = err_of(r);
        } else {
            j->rc = j->fn(g->conn, j->arg);
            if (!sqlite3_get_autocommit(g->db)) {
                if (j->rc) step(g, S_UNDO);
                step(g, S_RELEASE);
            }
        }
        if (!sqlite3_get_autocommit(g->db)) continue;
        /* SQLite ended the transaction itself: what ran in it is gone */
        if (!j->rc) j->rc = AIOS_EIO;
        fail_from(open_from, j, j->rc);
        open_from = j->next;
        if (open_from && (r = step(g, S_BEGIN))) {
            LOG_ERROR("sqlgc", "begin: %s", sqlite3_errmsg(g->db));
            fail_from(open_from, NULL, err_of(r));
            return n_commits;
        }
    }
    if (!open_from) return n_commits;
    if ((r = step(g, S_COMMIT))) {
        LOG_ERROR("sqlgc", "commit: %s", sqlite3_errmsg(g->db));
        fail_from(open_from, NULL, err_of(r));
        if (!sqlite3_get_autocommit(g->db)) step(g, S_ROLLBACK);
        return n_commits;
    }
    return n_commits + 1;
}

/* mark the jobs of list done, or free the posted ones (mu held); returns
 * how many */
static long long mark_done(struct sqlgc_job *list)
{
    long long n = 0;
    for (struct sqlgc_job *k = list, *next; k; k = next) {
        next = k->next; /* k may be gone once done is seen */
        if (k->free) {
            if (k->rc) LOG_WARN("sqlgc", "a posted write failed: %s", aios_strerror(k->rc));
            k->free(k);
        } else {
            k->done = true;
        }
        n++;
    }
    return n;
}

/* the committed callbacks of list's jobs that committed, in order */
static void call_committed(struct sqlgc_job *list)
{
    for (struct sqlgc_job *k = list; k; k = k->next)
        if (!k->rc && k->committed) k->committed(k->arg);
}

/* Run one batch: every job queued now. Called and returns with mu held;
 * mu is released while the batch runs. Posted jobs are freed, the others
 * marked done (their callers wake on the broadcast). */
static void lead(struct sqlgc *g)
{
    assert(!g->leading);
    g->leading = true;
    struct sqlgc_job *batch = g->head;
    g->head = g->tail = NULL;
    g->n_sync = 0;
    pthread_mutex_unlock(&g->mu);
    struct sqlgc_job *nd = NULL, **nd_tail = &nd, *du = NULL, **du_tail = &du;
    for (struct sqlgc_job *k = batch, *next; k; k = next) {
        next = k->next;
        k->next = NULL;
        if (k->durable && g->full_sync) {
            *du_tail = k;
            du_tail = &k->next;
        } else {
            *nd_tail = k;
            nd_tail = &k->next;
        }
    }
    int nc = commit_list(g, nd, false);
    call_committed(nd);
    if (nd && du) { /* derived data need not wait for the fsync */
        pthread_mutex_lock(&g->mu);
        g->n_jobs += mark_done(nd);
        nd = NULL;
        pthread_cond_broadcast(&g->cv);
        pthread_mutex_unlock(&g->mu);
    }
    nc += commit_list(g, du, true);
    call_committed(du);
    pthread_mutex_lock(&g->mu);
    g->n_jobs += mark_done(nd) + mark_done(du);
    g->n_commits += nc;
    g->leading = false;
    pthread_cond_broadcast(&g->cv);
}

/* posted jobs that no waiting caller will take: commit them now */
static void lead_leftovers(struct sqlgc *g)
{
    while (g->head && !g->n_sync && !g->leading) lead(g);
}

static void enqueue(struct sqlgc *g, struct sqlgc_job *j)
{
    j->rc = 0;
    j->done = false;
    j->next = NULL;
    if (g->tail) g->tail->next = j;
    else g->head = j;
    g->tail = j;
}

int sqlgc_run(struct sqlgc *g, struct sqlgc_job *j)
{
    return sqlgc_run_queued(g, j, NULL, NULL);
}

int sqlgc_run_queued(struct sqlgc *g, struct sqlgc_job *j, void (*queued)(void *), void *qarg)
{
    j->free = NULL;
    pthread_mutex_lock(&g->mu);
    enqueue(g, j);
    g->n_sync++;
    if (queued) { /* a leader may take j meanwhile: the loop below sees it */
        pthread_mutex_unlock(&g->mu);
        queued(qarg);
        pthread_mutex_lock(&g->mu);
    }
    while (!j->done) {
        if (g->leading) pthread_cond_wait(&g->cv, &g->mu);
        else lead(g);
    }
    int rc = j->rc;
    lead_leftovers(g);
    pthread_mutex_unlock(&g->mu);
    return rc;
}

void sqlgc_post(struct sqlgc *g, struct sqlgc_job *j)
{
    assert(j->free && !j->durable);
    pthread_mutex_lock(&g->mu);
    enqueue(g, j);
    /* a caller that waits will lead the next batch and take it; else
     * commit it (and the other posted ones) now, without an fsync */
    lead_leftovers(g);
    pthread_mutex_unlock(&g->mu);
}
