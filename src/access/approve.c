/* Approvals of storage operations that lose data for good, and the hook
 * the HTTP layer runs before it queues a syscall (acc_before_submit).
 *
 * Which storage calls: a delete_file / delete_dir of something that exists
 * (every version of it goes), and a write over an existing file while
 * storage.max_versions is 1 (the old content is not kept); the storage
 * manager decides which (sto_needs_approval). Config
 * access.approvals.storage_delete / storage_overwrite (both default true).
 * Calls made with an agent token only: the operator is the one who
 * approves, so the operator's own calls are not held.
 *
 * Parking, not waiting: such a call is never queued. Its syscall gets
 * status awaiting_approval and a pending approval holds a reference to it;
 * the HTTP connection is suspended exactly as for a queued call (so no
 * thread waits, and a storage worker never sits idle on an approval). One
 * approval thread ends parked approvals: approved -> the syscall is
 * queued and runs as usual; denied by the operator, no decision within
 * access.approval_timeout_s, the caller gone, or the kernel stopping ->
 * the syscall fails with 403 (503 when stopping) and a message that says
 * which. Every step is an audit row. The same thread saves the token
 * budget counters that changed (budget.c) every BUDGET_SAVE_MS.
 *
 * Several kernels (a shared store): an approval is also a row of the
 * database (acc_approvals, written by the kernel that holds the call,
 * before anyone can be told its id, which is the row's), so the operator
 * lists and decides it on any kernel. The call itself stays parked where
 * it is; this thread reads the decisions of its own rows every
 * SHARED_REFRESH_MS and ends the approvals as if decided here, and deletes
 * a row when its approval ends. A kernel that dies leaves its rows behind
 * until its lease runs out (then any kernel deletes them: acc_kernel_beat).
 *
 * Locks: m->mu guards the approval list (shared with the tool approvals
 * of access.c); the thread never holds it while taking a syscall's lock
 * or the scheduler's, nor while talking to the database: it snapshots
 * under m->mu and acts after. */
#include "access/acc_int.h"

#include "kernel/query.h"
#include "kernel/syscall.h"
#include "sched/sched.h"
#include "llm/core.h"
#include "storage/storage.h"
#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void set_status(struct syscall *sc, enum syscall_status s)
{
    pthread_mutex_lock(&sc->mu);
    if (!syscall_status_final(sc->status)) sc->status = s;
    pthread_mutex_unlock(&sc->mu);
}

int acc_appr_share(struct acc_mgr *m, struct approval *a, const char *kind)
{
    struct acc_appr_row row = {.sc_id = a->sc_id, .kernel = m->kernel_id, .agent = a->agent,
                               .tool = a->tool, .args = a->args, .what = a->what, .kind = kind,
                               .created = a->created, .deadline = a->deadline};
    int64_t id = 0;
    char err[512] = "";
    int rc = m->sops->appr_put(m->store, &row, &id, err, sizeof err);
    if (rc) {
        LOG_ERROR("access", "%s", err);
        return AIOS_EIO;
    }
    a->id = (uint64_t)id;
    return 0;
}

void acc_appr_unshare(struct acc_mgr *m, uint64_t id)
{
    char err[512] = "";
    if (m->sops->appr_drop(m->store, (int64_t)id, err, sizeof err))
        LOG_WARN("access", "approval %llu stays listed until this kernel's lease ends: %s",
                 (unsigned long long)id, err);
}

/* shared store: decisions written (by any kernel) for this kernel's
 * approvals, applied to the list; the database is read without m->mu */
static void appr_poll_shared(struct acc_mgr *m)
{
    pthread_mutex_lock(&m->mu);
    bool any = m->approvals != NULL;
    pthread_mutex_unlock(&m->mu);
    if (!any) return;
    struct acc_appr_decided *d = NULL;
    size_t n = 0;
    char err[512] = "";
    if (m->sops->appr_decided(m->store, m->kernel_id, &d, &n, err, sizeof err)) {
        LOG_WARN("access", "cannot read approval decisions: %s", err);
        return;
    }
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < n; i++)
        for (struct approval *a = m->approvals; a; a = a->next) {
            if (a->id != (uint64_t)d[i].id || a->state != APPR_PENDING) continue;
            a->state = d[i].approved ? APPR_APPROVED : APPR_DENIED;
            snprintf(a->reason, sizeof a->reason, "%s", d[i].reason);
        }
    if (n) pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    free(d);
}

/* 1 parked; AIOS_ENOMEM, AIOS_EIO (the shared store failed; logged), or
 * AIOS_ESHUTDOWN (audited) */
static int park(struct acc_mgr *m, struct syscall *sc, const char *op, json_t *params,
                const char *what)
{
    struct approval *a = calloc(1, sizeof *a);
    if (!a) return AIOS_ENOMEM;
    a->sc_id = sc->id;
    snprintf(a->agent, sizeof a->agent, "%s", sc->agent);
    snprintf(a->tool, sizeof a->tool, "storage:%s", op);
    snprintf(a->what, sizeof a->what, "%s", what);
    a->args = json_dumps(params, JSON_COMPACT);
    a->created = acc_wall_s();
    a->deadline = a->created + m->approval_timeout_s;
    if (m->shared && acc_appr_share(m, a, "storage")) { /* its id: the row's */
        free(a->args);
        free(a);
        return AIOS_EIO;
    }
    syscall_ref(sc);
    a->parked_sc = sc;
    set_status(sc, SYSCALL_STATUS_AWAITING_APPROVAL);
    char res[300];
    snprintf(res, sizeof res, "storage:%s", op);

    pthread_mutex_lock(&m->mu);
    bool stopping = m->stopping;
    if (!stopping) {
        if (!m->shared) a->id = ++m->next_approval;
        a->next = m->approvals;
        m->approvals = a;
        pthread_cond_broadcast(&m->cv);
    }
    uint64_t aid = a->id;
    pthread_mutex_unlock(&m->mu);
    if (stopping) {
        if (m->shared) acc_appr_unshare(m, a->id);
        acc_audit_row(m, sc->agent, sc->id, res, "storage", "denied",
                      "the kernel is shutting down");
        set_status(sc, SYSCALL_STATUS_NEW);
        syscall_unref(sc);
        free(a->args);
        free(a);
        return AIOS_ESHUTDOWN;
    }
    char why[600];
    snprintf(why, sizeof why, "approval %llu: agent '%s' wants to %s; waiting up to %d s for the "
             "operator", (unsigned long long)aid, sc->agent, what, m->approval_timeout_s);
    acc_audit_row(m, sc->agent, sc->id, res, "storage", "awaiting_approval", why);
    LOG_WARN("access", "%s: `aios approve %llu` or `aios deny %llu`", why,
             (unsigned long long)aid, (unsigned long long)aid);
    return 1;
}

int acc_storage_hold(struct acc_mgr *m, struct syscall *sc, char *err, size_t errlen)
{
    if (!m || sc->kind != SYSCALL_KIND_STORAGE || !m->storage || !sc->agent) return 0;
    if (!m->approve_delete && !m->approve_overwrite) return 0;
    /* stopping: the storage manager closes soon; the scheduler refuses
     * the call anyway (never touch storage from here after quiesce) */
    pthread_mutex_lock(&m->mu);
    bool stopping = m->stopping;
    pthread_mutex_unlock(&m->mu);
    if (stopping) return 0;
    const struct sto_req *q = sc->req;
    char what[384] = "";
    if (!q || !sto_needs_approval(m->storage, sc->agent, q, m->approve_delete,
                                  m->approve_overwrite, what, sizeof what))
        return 0;
    int rc = park(m, sc, q->op_name, q->params, what);
    if (rc == 1) return 1;
    snprintf(err, errlen, "%s", rc == AIOS_ESHUTDOWN ? "the kernel is shutting down"
                                : rc == AIOS_EIO ? "the approval cannot be recorded: the state "
                                                   "database is unavailable; try again"
                                                 : "out of memory");
    return rc;
}

int acc_before_submit(struct acc_mgr *m, bool admin, struct syscall *sc, struct acc_decision *d)
{
    *d = (struct acc_decision){.allowed = true};
    if (!m) return 0;
    sc->by_agent = !admin; /* binds the model here and the tools it runs */
    if (sc->kind == SYSCALL_KIND_LLM) {
        char why[512];
        if (sc->target && acc_check_model(m, sc->agent ? sc->agent : "-", sc->by_agent, sc->id,
                                          ((struct llm_core *)sc->target)->name, why, sizeof why)) {
            acc_refuse_plain(d, 403, "permission_error", "%s", why);
            return -1;
        }
        return admin ? 0 : acc_budget_admit(m, sc, d);
    }
    if (sc->kind != SYSCALL_KIND_STORAGE || admin) return 0;
    char err[128];
    int rc = acc_storage_hold(m, sc, err, sizeof err);
    if (rc >= 0) return rc;
    if (rc == AIOS_ESHUTDOWN || rc == AIOS_EIO)
        acc_refuse_plain(d, 503, "service_unavailable", "%s", err);
    else acc_refuse_plain(d, 500, "server_error", "%s", err);
    return -1;
}

/* an approval the thread took off the list, with how it ended */
enum outcome { OUT_APPROVED, OUT_DENIED, OUT_TIMEOUT, OUT_CANCELLED, OUT_STOPPING };

static void end_parked(struct acc_mgr *m, struct approval *a, enum outcome o)
{
    struct syscall *sc = a->parked_sc;
    char res[300], msg[900];
    snprintf(res, sizeof res, "%s", a->tool);
    unsigned long long aid = (unsigned long long)a->id;
    const char *rs = a->reason[0] ? ": " : "";
    switch (o) {
    case OUT_APPROVED:
        snprintf(msg, sizeof msg, "approval %llu approved by the operator%s%s", aid, rs, a->reason);
        acc_audit_row(m, a->agent, a->sc_id, res, "storage", "approved", msg);
        set_status(sc, SYSCALL_STATUS_NEW);
        if (sched_submit(m->sched, sc))
            syscall_fail(sc, AIOS_ESHUTDOWN, 503, "approval %llu was approved, but the kernel is "
                         "shutting down", aid);
        break;
    case OUT_DENIED:
        snprintf(msg, sizeof msg, "approval %llu: the operator denied the request to %s%s%s", aid,
                 a->what, rs, a->reason);
        acc_audit_row(m, a->agent, a->sc_id, res, "storage", "denied", msg);
        syscall_fail(sc, AIOS_EPERM, 403, "%s", msg);
        break;
    case OUT_TIMEOUT:
        snprintf(msg, sizeof msg, "approval %llu: the request to %s was denied because no "
                 "operator approved it within %d s (access.approval_timeout_s)", aid, a->what,
                 m->approval_timeout_s);
        acc_audit_row(m, a->agent, a->sc_id, res, "storage", "denied_timeout", msg);
        syscall_fail(sc, AIOS_EPERM, 403, "%s", msg);
        break;
    case OUT_CANCELLED:
        snprintf(msg, sizeof msg, "approval %llu: the caller went away", aid);
        acc_audit_row(m, a->agent, a->sc_id, res, "storage", "denied", msg);
        syscall_fail(sc, AIOS_ECANCELLED, 499, "%s", msg);
        break;
    case OUT_STOPPING:
        snprintf(msg, sizeof msg, "approval %llu: denied, the kernel is shutting down", aid);
        acc_audit_row(m, a->agent, a->sc_id, res, "storage", "denied", msg);
        syscall_fail(sc, AIOS_ESHUTDOWN, 503, "%s", msg);
        break;
    }
    if (m->shared) acc_appr_unshare(m, a->id);
    syscall_unref(sc);
    free(a->args);
    free(a);
}

#define SNAP_MAX 64

#define BUDGET_SAVE_MS 3000

static void *appr_main(void *ud)
{
    struct acc_mgr *m = ud;
    double last_save = acc_wall_s(), last_refresh = last_save;
    for (;;) {
        if (m->shared) appr_poll_shared(m); /* decided on any kernel */
        /* which parked calls did their caller give up on? (sc->mu is
         * never taken while holding m->mu) */
        struct syscall *snap[SNAP_MAX];
        uint64_t snap_id[SNAP_MAX];
        bool gone[SNAP_MAX];
        size_t n_snap = 0;
        pthread_mutex_lock(&m->mu);
        for (struct approval *a = m->approvals; a && n_snap < SNAP_MAX; a = a->next) {
            if (!a->parked_sc) continue;
            syscall_ref(a->parked_sc);
            snap[n_snap] = a->parked_sc;
            snap_id[n_snap++] = a->id;
        }
        pthread_mutex_unlock(&m->mu);
        for (size_t i = 0; i < n_snap; i++) gone[i] = syscall_cancel_requested(snap[i]);

        struct approval *done = NULL;
        enum outcome outs[256];
        size_t n_done = 0;
        pthread_mutex_lock(&m->mu);
        double now = acc_wall_s();
        for (struct approval **p = &m->approvals; *p && n_done < 256;) {
            struct approval *a = *p;
            if (!a->parked_sc) {
                p = &a->next;
                continue;
            }
            bool cancelled = false;
            for (size_t i = 0; i < n_snap; i++)
                if (snap_id[i] == a->id) cancelled = gone[i];
            enum outcome o;
            if (a->state == APPR_APPROVED) o = OUT_APPROVED;
            else if (a->state == APPR_DENIED) o = OUT_DENIED;
            else if (m->stopping) o = OUT_STOPPING;
            else if (now >= a->deadline) o = OUT_TIMEOUT;
            else if (cancelled) o = OUT_CANCELLED;
            else {
                p = &a->next;
                continue;
            }
            *p = a->next; /* unlink; `done` keeps the order they ended in */
            a->next = done;
            done = a;
            outs[n_done++] = o;
        }
        bool any_parked = false;
        for (struct approval *a = m->approvals; a; a = a->next)
            if (a->parked_sc) any_parked = true;
        bool exit_now = m->stopping && !any_parked && !done;
        if (!done && !exit_now) {
            /* parked calls: look again in 200 ms (deadlines, callers gone);
             * else sleep until one is parked, a stop, or the budget save */
            long step_ms = any_parked || m->stopping ? 200 : BUDGET_SAVE_MS;
            if (m->shared && step_ms > SHARED_REFRESH_MS) step_ms = SHARED_REFRESH_MS;
            struct timespec ts;
            util_mono_in_ms(&ts, step_ms);
            pthread_cond_timedwait(&m->cv, &m->mu, &ts);
        }
        pthread_mutex_unlock(&m->mu);
        double tnow = acc_wall_s();
        if (m->shared && !exit_now && tnow - last_refresh >= SHARED_REFRESH_MS / 1000.0) {
            /* this kernel is alive; what other kernels changed: tokens,
             * memory grants */
            acc_kernel_beat(m);
            char err[512] = "";
            if (acc_reg_load(m, err, sizeof err) || acc_ns_load(m, err, sizeof err))
                LOG_WARN("access", "cannot refresh agents and grants: %s", err);
            acc_budget_flush(m); /* ends of calls, to the database */
            last_refresh = tnow;
        }
        if (exit_now || tnow - last_save >= BUDGET_SAVE_MS / 1000.0) {
            acc_budget_save(m); /* token budget counters that changed */
            last_save = tnow;
        }
        for (size_t i = 0; i < n_snap; i++) syscall_unref(snap[i]);
        /* done is newest-ended first; outs in the same order reversed */
        size_t i = n_done;
        while (done) {
            struct approval *n = done->next;
            end_parked(m, done, outs[--i]);
            done = n;
        }
        if (exit_now) break;
    }
    return NULL;
}

int acc_approvals_start(struct acc_mgr *m, char *err, size_t errlen)
{
    if (pthread_create(&m->appr_th, NULL, appr_main, m)) {
        snprintf(err, errlen, "cannot start the approval thread");
        return AIOS_ENOMEM;
    }
    m->appr_th_started = true;
    return 0;
}

void acc_approvals_stop(struct acc_mgr *m)
{
    if (!m->appr_th_started) return;
    pthread_mutex_lock(&m->mu);
    m->stopping = true;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->appr_th, NULL);
    m->appr_th_started = false;
}
