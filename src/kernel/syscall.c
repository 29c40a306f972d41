/* The syscall object.
 *
 * Every request an agent makes (LLM, memory, storage, tool) becomes one
 * struct syscall. The HTTP thread that parsed the request creates it, fills
 * the immutable part (kind, agent, target, req, notify), and hands it to the
 * scheduler. A worker (the LLM engine thread, or a pool thread for the other
 * kinds) takes it from its queue, runs it, streams output with
 * syscall_emit(), and ends it with syscall_finish() or syscall_fail().
 *
 * Ownership: reference counted. The creator holds one reference, the
 * scheduler takes one while the call is queued or running. Whoever drops the
 * last one frees it (and req/res through their destructors).
 *
 * Locking: `mu` guards the mutable part. It is a leaf lock: no other lock is
 * taken while it is held, except that the API layer may suspend its own
 * connection under it (see api/http.c), which takes only the HTTP library's
 * internal lock and never calls back into us. The notify callback is always
 * called with no lock held.
 *
 * Final status before wake-up: syscall_finish() sets the status, result and
 * end time under mu, releases mu, and only then calls notify. A waiter that
 * is woken (or polls) therefore always sees the final state; a call is never
 * observed as running after it finished, so nothing runs it twice. */
#include "kernel/syscall.h"

#include "util/err.h"
#include "util/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t g_next_id = 1;

const char *syscall_kind_name(enum syscall_kind k)
{
    switch (k) {
    case SYSCALL_KIND_LLM: return "llm";
    case SYSCALL_KIND_MEMORY: return "memory";
    case SYSCALL_KIND_STORAGE: return "storage";
    case SYSCALL_KIND_TOOL: return "tool";
    default: return "?";
    }
}

const char *syscall_status_name(enum syscall_status s)
{
    switch (s) {
    case SYSCALL_STATUS_NEW: return "new";
    case SYSCALL_STATUS_QUEUED: return "queued";
    case SYSCALL_STATUS_RUNNING: return "running";
    case SYSCALL_STATUS_SUSPENDED: return "suspended";
    case SYSCALL_STATUS_AWAITING_APPROVAL: return "awaiting_approval";
    case SYSCALL_STATUS_DONE: return "done";
    case SYSCALL_STATUS_ERROR: return "error";
    case SYSCALL_STATUS_CANCELLED: return "cancelled";
    }
    return "?";
}

bool syscall_status_final(enum syscall_status s)
{
    return s == SYSCALL_STATUS_DONE || s == SYSCALL_STATUS_ERROR || s == SYSCALL_STATUS_CANCELLED;
}

struct syscall *syscall_new(enum syscall_kind kind, const char *agent, void *target,
                            void *req, void (*req_free)(void *))
{
    struct syscall *sc = calloc(1, sizeof *sc);
    if (!sc) goto fail;
    sc->agent = strdup(agent && *agent ? agent : "anonymous");
    if (!sc->agent) goto fail;
    sc->id = __atomic_fetch_add(&g_next_id, 1, __ATOMIC_RELAXED);
    sc->kind = kind;
    sc->target = target;
    sc->req = req;
    sc->req_free = req_free;
    sc->t_created_us = util_now_us();
    sc->status = SYSCALL_STATUS_NEW;
    sc->refs = 1;
    pthread_mutex_init(&sc->mu, NULL);
    return sc;
fail:
    if (sc) free(sc->agent);
    free(sc);
    if (req && req_free) req_free(req);
    return NULL;
}

void syscall_ref(struct syscall *sc) { __atomic_add_fetch(&sc->refs, 1, __ATOMIC_ACQ_REL); }

void syscall_unref(struct syscall *sc)
{
    if (!sc) return;
    if (__atomic_sub_fetch(&sc->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
    if (sc->req && sc->req_free) sc->req_free(sc->req);
    if (sc->res && sc->res_free) sc->res_free(sc->res);
    if (sc->worker_state && sc->worker_state_free) sc->worker_state_free(sc->worker_state);
    pthread_mutex_destroy(&sc->mu);
    free(sc->out);
    free(sc->aux);
    free(sc->agent);
    free(sc);
}

static void notify(struct syscall *sc)
{
    if (sc->notify) sc->notify(sc, sc->notify_ud);
}

static void notify_final(struct syscall *sc)
{
    if (sc->on_final) sc->on_final(sc, sc->on_final_ud);
    notify(sc);
}

int syscall_emit(struct syscall *sc, const char *text, size_t len)
{
    if (len == 0) return 0;
    pthread_mutex_lock(&sc->mu);
    int rc = util_buf_append(&sc->out, &sc->n_out, &sc->cap_out, text, len);
    pthread_mutex_unlock(&sc->mu);
    if (rc) return rc;
    notify(sc);
    return 0;
}

int syscall_emit_aux(struct syscall *sc, const char *text, size_t len, const char *aux,
                     size_t n_aux)
{
    if (len == 0 && n_aux == 0) return 0;
    pthread_mutex_lock(&sc->mu);
    int rc = len ? util_buf_append(&sc->out, &sc->n_out, &sc->cap_out, text, len) : 0;
    if (!rc && n_aux) rc = util_buf_append(&sc->aux, &sc->n_aux, &sc->cap_aux, aux, n_aux);
    pthread_mutex_unlock(&sc->mu);
    if (rc) return rc;
    notify(sc);
    return 0;
}

static int slice_idx(int n) { return n < SYSCALL_MAX_SLICES ? n : SYSCALL_MAX_SLICES - 1; }

static void slice_end_locked(struct syscall *sc, int64_t now)
{
    if (sc->n_slices == 0) return;
    int i = slice_idx(sc->n_slices - 1);
    if (!sc->t_slice_end_us[i]) sc->t_slice_end_us[i] = now;
}

void syscall_slice_begin(struct syscall *sc, int64_t now)
{
    pthread_mutex_lock(&sc->mu);
    slice_end_locked(sc, now);
    int i = slice_idx(sc->n_slices);
    sc->t_slice_start_us[i] = now;
    sc->t_slice_end_us[i] = 0;
    sc->n_slices++;
    if (!sc->t_start_us) sc->t_start_us = now;
    if (sc->t_queued_us) {
        sc->t_wait_us += now - sc->t_queued_us;
        sc->t_queued_us = 0;
    }
    pthread_mutex_unlock(&sc->mu);
}

void syscall_slice_undo(struct syscall *sc)
{
    pthread_mutex_lock(&sc->mu);
    int i = sc->n_slices > 0 ? slice_idx(sc->n_slices - 1) : -1;
    if (i >= 0 && sc->t_slice_end_us[i] == 0) {
        /* the wait before it is counted; it goes on from its start */
        sc->t_queued_us = sc->t_slice_start_us[i];
        sc->t_slice_start_us[i] = 0;
        sc->n_slices--;
        if (sc->n_slices == 0) sc->t_start_us = 0;
    }
    pthread_mutex_unlock(&sc->mu);
}

void syscall_slice_end(struct syscall *sc, int64_t now)
{
    pthread_mutex_lock(&sc->mu);
    slice_end_locked(sc, now);
    pthread_mutex_unlock(&sc->mu);
}

void syscall_set_priority(struct syscall *sc, int priority)
{
    if (priority < SYSCALL_PRIORITY_MIN) priority = SYSCALL_PRIORITY_MIN;
    if (priority > SYSCALL_PRIORITY_MAX) priority = SYSCALL_PRIORITY_MAX;
    sc->priority = priority;
    sc->priority_set = true;
}

static bool finish_locked(struct syscall *sc, enum syscall_status st)
{
    if (syscall_status_final(sc->status)) return false;
    sc->status = st;
    sc->t_end_us = util_now_us();
    if (!sc->t_start_us) sc->t_start_us = sc->t_end_us;
    slice_end_locked(sc, sc->t_end_us);
    if (sc->t_queued_us) { /* failed while queued (shutdown) */
        sc->t_wait_us += sc->t_end_us - sc->t_queued_us;
        sc->t_queued_us = 0;
    }
    return true;
}

void syscall_finish(struct syscall *sc, void *res, void (*res_free)(void *))
{
    pthread_mutex_lock(&sc->mu);
    bool first = finish_locked(sc, SYSCALL_STATUS_DONE);
    if (first) {
        sc->res = res;
        sc->res_free = res_free;
    }
    pthread_mutex_unlock(&sc->mu);
    if (!first) {
        if (res && res_free) res_free(res);
        return;
    }
    notify_final(sc);
}

void syscall_fail(struct syscall *sc, int err, int http_status, const char *fmt, ...)
{
    pthread_mutex_lock(&sc->mu);
    bool first = finish_locked(sc, err == AIOS_ECANCELLED ? SYSCALL_STATUS_CANCELLED
                                                          : SYSCALL_STATUS_ERROR);
    if (first) {
        sc->err = err;
        sc->http_status = http_status;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(sc->errmsg, sizeof sc->errmsg, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&sc->mu);
    if (first) notify_final(sc);
}

bool syscall_cancel_requested(struct syscall *sc)
{
    pthread_mutex_lock(&sc->mu);
    bool c = sc->cancel_requested;
    pthread_mutex_unlock(&sc->mu);
    return c;
}

void syscall_request_cancel(struct syscall *sc)
{
    pthread_mutex_lock(&sc->mu);
    sc->cancel_requested = true;
    pthread_mutex_unlock(&sc->mu);
}

enum syscall_status syscall_take_output(struct syscall *sc, char **buf, size_t *len, size_t *cap)
{
    pthread_mutex_lock(&sc->mu);
    if (sc->n_out && util_buf_append(buf, len, cap, sc->out, sc->n_out) == 0) sc->n_out = 0;
    enum syscall_status st = sc->status;
    pthread_mutex_unlock(&sc->mu);
    return st;
}
