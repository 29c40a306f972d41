/* The audit log: every access decision as one row of the access store's
 * audit table (acc_store.h: data_dir/audit.db, or PostgreSQL).
 *
 * Row: id, t (unix seconds), agent, syscall_id, resource, action, decision,
 * reason, request_id (the x-request-id of the HTTP request the decision was
 * made for: log_request_id() of the deciding thread; NULL when none).
 *
 * Threads: callers (HTTP threads, tool pool threads) only copy the row into
 * an in-memory queue under `mu`; one audit thread is the only writer and
 * appends whatever is queued in one store transaction. While rows keep
 * coming the writer looks at the queue every AUDIT_LINGER_MS by itself,
 * and callers do not wake it: waking a sleeping thread is a futex call
 * (and, with the other core idle, an interrupt to it) on the request's
 * own path, which was 0.07 to 0.1 ms of a 0.15 ms get_memory on the
 * development machine (docs/performance.md). After AUDIT_IDLE_MS without
 * a row the writer sleeps until a caller signals it (it signals only
 * then, or when the queue is half full), so an idle kernel has no timer
 * running. A row reaches the store at most AUDIT_LINGER_MS (plus the
 * write before it) after it was queued; acc_audit_flush wakes the writer
 * at once.
 * Readers (GET /access/audit) query the store directly. A full
 * queue (AUDIT_MAX_QUEUE rows) makes the caller wait: no decision is
 * dropped. acc_audit_flush waits until the queue is empty and written.
 * Ownership: rows are malloc'd copies freed by the writer. */
#include "access/acc_store.h"

#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define AUDIT_MAX_QUEUE 4096
#define AUDIT_LINGER_MS 10
#define AUDIT_IDLE_MS 250

struct arow {
    struct arow *next;
    double t;
    uint64_t syscall_id;
    char *agent, *resource, *action, *decision, *reason;
    char *request_id; /* NULL: none */
};

struct acc_audit {
    const struct acc_store_ops *ops;
    struct acc_store *st; /* not owned */
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv, done_cv;
    struct arow *head, *tail;
    int n_queued;
    bool writing;
    bool asleep; /* the writer waits for a signal, with no timeout */
    bool stop;
};

static double wall_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void arow_free(struct arow *r)
{
    free(r->agent);
    free(r->resource);
    free(r->action);
    free(r->decision);
    free(r->reason);
    free(r->request_id);
    free(r);
}

static void write_batch(struct acc_audit *a, struct arow *list)
{
    size_t n = 0;
    for (struct arow *r = list; r; r = r->next) n++;
    struct acc_audit_rec *recs = calloc(n, sizeof *recs);
    if (!recs) {
        LOG_ERROR("access", "audit log: out of memory; %zu rows are not recorded", n);
        return;
    }
    size_t i = 0;
    for (struct arow *r = list; r; r = r->next, i++)
        recs[i] = (struct acc_audit_rec){.t = r->t, .syscall_id = r->syscall_id, .agent = r->agent,
                                         .resource = r->resource, .action = r->action,
                                         .decision = r->decision, .reason = r->reason,
                                         .request_id = r->request_id};
    char err[512] = "";
    if (a->ops->audit_append(a->st, recs, n, err, sizeof err))
        LOG_ERROR("access", "%s", err);
    free(recs);
}

static void *audit_main(void *ud)
{
    struct acc_audit *a = ud;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        int64_t idle_end_us = util_now_us() + AUDIT_IDLE_MS * 1000;
        while (!a->head && !a->stop) {
            if (util_now_us() >= idle_end_us) { /* no row for a while: sleep until one comes */
                a->asleep = true;
                while (!a->head && !a->stop) pthread_cond_wait(&a->cv, &a->mu);
                a->asleep = false;
            } else {
                struct timespec t;
                util_mono_in_ms(&t, AUDIT_LINGER_MS);
                pthread_cond_timedwait(&a->cv, &a->mu, &t);
            }
        }
        if (!a->head && a->stop) break;
        struct arow *list = a->head;
        a->head = a->tail = NULL;
        a->n_queued = 0;
        a->writing = true;
        pthread_cond_broadcast(&a->done_cv); /* room in the queue */
        pthread_mutex_unlock(&a->mu);
        write_batch(a, list);
        while (list) {
            struct arow *n = list->next;
            arow_free(list);
            list = n;
        }
        pthread_mutex_lock(&a->mu);
        a->writing = false;
        pthread_cond_broadcast(&a->done_cv);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

int acc_audit_open(struct acc_audit **out, const struct acc_store_ops *ops,
                   struct acc_store *st, char *err, size_t errlen)
{
    *out = NULL;
    struct acc_audit *a = calloc(1, sizeof *a);
    if (!a) return AIOS_ENOMEM;
    a->ops = ops;
    a->st = st;
    pthread_mutex_init(&a->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&a->done_cv, NULL);
    if (pthread_create(&a->th, NULL, audit_main, a)) {
        snprintf(err, errlen, "cannot start the audit thread");
        pthread_mutex_destroy(&a->mu);
        pthread_cond_destroy(&a->cv);
        pthread_cond_destroy(&a->done_cv);
        free(a);
        return AIOS_ENOMEM;
    }
    *out = a;
    return 0;
}

static char *dupz(const char *s) { return strdup(s ? s : ""); }

void acc_audit_add(struct acc_audit *a, const struct acc_audit_row *row)
{
    if (!a) return;
    struct arow *r = calloc(1, sizeof *r);
    if (!r) return;
    r->t = wall_s();
    r->syscall_id = row->syscall_id;
    r->agent = dupz(row->agent);
    r->resource = dupz(row->resource);
    r->action = dupz(row->action);
    r->decision = dupz(row->decision);
    r->reason = dupz(row->reason);
    const char *rid = log_request_id();
    if (rid && !(r->request_id = strdup(rid))) {
        arow_free(r);
        return;
    }
    if (!r->agent || !r->resource || !r->action || !r->decision || !r->reason) {
        LOG_ERROR("access", "audit log: out of memory; a %s decision is not recorded",
                  row->decision);
        arow_free(r);
        return;
    }
    LOG_DEBUG("access", "audit: %s %s %s %s: %s", r->agent, r->action, r->resource, r->decision,
              r->reason);
    pthread_mutex_lock(&a->mu);
    while (a->n_queued >= AUDIT_MAX_QUEUE && !a->stop) pthread_cond_wait(&a->done_cv, &a->mu);
    if (a->tail) a->tail->next = r;
    else a->head = r;
    a->tail = r;
    a->n_queued++;
    if (a->asleep || a->n_queued >= AUDIT_MAX_QUEUE / 2) pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

void acc_audit_flush(struct acc_audit *a)
{
    if (!a) return;
    pthread_mutex_lock(&a->mu);
    if (a->head) pthread_cond_signal(&a->cv); /* write it now, not after the linger */
    while (a->head || a->writing) pthread_cond_wait(&a->done_cv, &a->mu);
    pthread_mutex_unlock(&a->mu);
}

json_t *acc_audit_query(struct acc_audit *a, const char *agent, double since_s, int limit,
                        char *err, size_t errlen)
{
    acc_audit_flush(a);
    json_t *rows = NULL;
    if (a->ops->audit_query(a->st, agent, since_s, limit, &rows, err, errlen)) return NULL;
    return rows;
}

void acc_audit_close(struct acc_audit *a)
{
    if (!a) return;
    pthread_mutex_lock(&a->mu);
    a->stop = true;
    pthread_cond_broadcast(&a->cv);
    pthread_cond_broadcast(&a->done_cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->th, NULL);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    pthread_cond_destroy(&a->done_cv);
    free(a);
}
