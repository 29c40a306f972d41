/* Group commit for one SQLite writer connection (sqlgc.c).
 *
 * A store that owns a database gives its one writer connection to a
 * struct sqlgc and runs every write as a job through sqlgc_run(). Jobs that
 * wait at the same moment share one transaction and therefore one fsync;
 * each caller returns only after the commit that covers its job. Reads use
 * other connections (WAL readers) and never wait here. */
#ifndef AIOS_UTIL_SQLGC_H
#define AIOS_UTIL_SQLGC_H

#include <sqlite3.h>
#include <stdbool.h>

struct sqlgc;

struct sqlgc_job {
    /* The job's statements, run on the writer connection inside the
     * batch's transaction (never BEGIN/COMMIT of its own). conn is the
     * pointer given to sqlgc_open (the store's writer with its prepared
     * statements). 0, or a negative AIOS_E*: the job's changes are undone
     * and the other jobs of the batch commit. It may run twice (when
     * another job of its batch fails, the batch is undone and run again):
     * its only effects are its SQL and what it writes into arg. */
    int (*fn)(void *conn, void *arg);
    void *arg;
    /* needs the fsync of a synchronous commit (with full_sync); false:
     * derived data (statistics, vectors) committed without one, before
     * the durable jobs of the same batch */
    bool durable;
    /* sqlgc_post only: frees the job (and arg) once it is committed */
    void (*free)(struct sqlgc_job *j);
    /* optional: called once the job is committed (its rc 0), by the thread
     * that committed it, no lock of sqlgc held, before its caller wakes;
     * the callbacks of all jobs run one at a time in commit order, so state
     * derived from the database can follow it (mem_rix.c) */
    void (*committed)(void *arg);
    /* private to sqlgc.c */
    int rc;
    bool done;
    struct sqlgc_job *next;
};

/* db: the writer connection (stays the caller's; close it after
 * sqlgc_close); conn: what each job's fn gets. full_sync: durable jobs
 * commit with synchronous=FULL, the others with NORMAL; false: every
 * commit with NORMAL. 0 or AIOS_ENOMEM / AIOS_EIO. */
int sqlgc_open(struct sqlgc **out, sqlite3 *db, void *conn, bool full_sync);
/* No call may be running. */
void sqlgc_close(struct sqlgc *g);
/* Run j in the next commit and wait for it: j->fn's result, or AIOS_EIO /
 * AIOS_ENOSPC (disk full) when the commit itself failed. Thread safe. */
int sqlgc_run(struct sqlgc *g, struct sqlgc_job *j);
/* sqlgc_run, calling queued(qarg) once j has its place in the queue (no
 * lock of sqlgc held): a caller may then let a later write queue behind
 * it, knowing that its job commits first (jobs commit in queue order). */
int sqlgc_run_queued(struct sqlgc *g, struct sqlgc_job *j, void (*queued)(void *), void *qarg);

/* Queue j for the next commit without waiting for it (derived data whose
 * loss in a crash costs only statistics). j is heap memory with j->free
 * set and durable false; sqlgc frees it after its commit and logs a
 * failure. When no batch is running and no caller waits, the poster
 * commits it (and the other posted jobs) now, without an fsync. */
void sqlgc_post(struct sqlgc *g, struct sqlgc_job *j);

/* counters since open (for tests and benchmarks): commits, jobs done */
void sqlgc_stats(struct sqlgc *g, long long *commits, long long *jobs);
/* jobs queued for the next batch now */
int sqlgc_waiting(struct sqlgc *g);

#endif
