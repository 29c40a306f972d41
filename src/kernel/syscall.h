/* The syscall object: one request from an agent to a kernel resource.
 * See syscall.c for the ownership and locking rules. */
#ifndef AIOS_KERNEL_SYSCALL_H
#define AIOS_KERNEL_SYSCALL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum syscall_kind {
    SYSCALL_KIND_LLM,
    SYSCALL_KIND_MEMORY,
    SYSCALL_KIND_STORAGE,
    SYSCALL_KIND_TOOL,
    SYSCALL_KIND__COUNT
};

enum syscall_status {
    SYSCALL_STATUS_NEW,      /* built, not yet submitted */
    SYSCALL_STATUS_QUEUED,
    SYSCALL_STATUS_RUNNING,
    SYSCALL_STATUS_SUSPENDED,
    SYSCALL_STATUS_AWAITING_APPROVAL,
    SYSCALL_STATUS_DONE,
    SYSCALL_STATUS_ERROR,
    SYSCALL_STATUS_CANCELLED,
};

struct syscall;
/* Called (without any lock held) after new stream output is appended and
 * once after the syscall reaches a final status. Runs on the worker thread
 * that made the progress; it must not block. */
typedef void (*syscall_notify_fn)(struct syscall *sc, void *ud);

#define SYSCALL_ERRMSG_MAX 512

struct syscall {
    /* immutable after syscall_new / before submit */
    uint64_t id;
    enum syscall_kind kind;
    char *agent;
    int priority;
    void *target;                 /* resource instance, e.g. the llm core */
    void *req;                    /* kind-specific request, owned */
    void (*req_free)(void *);
    bool stream;                  /* caller wants incremental output */
    syscall_notify_fn notify;
    void *notify_ud;
    int64_t t_created_us;         /* monotonic */

    /* below: guarded by mu */
    pthread_mutex_t mu;
    enum syscall_status status;
    int64_t t_start_us;           /* first time it ran (0 if never) */
    int64_t t_end_us;
    void *res;                    /* kind-specific result, owned */
    void (*res_free)(void *);
    int err;                      /* AIOS_E* when status is ERROR */
    int http_status;              /* suggested HTTP status for the error */
    char errmsg[SYSCALL_ERRMSG_MAX];
    char *out;                    /* stream output not yet taken */
    size_t n_out, cap_out;
    bool cancel_requested;        /* caller went away */
    bool waiter_parked;           /* API side is suspended waiting on us */

    int refs;                     /* atomic */
    struct syscall *next;         /* queue link, owned by the scheduler */
};

const char *syscall_kind_name(enum syscall_kind k);
const char *syscall_status_name(enum syscall_status s);
bool syscall_status_final(enum syscall_status s);

/* New syscall with one reference (the caller's). Takes ownership of req. */
struct syscall *syscall_new(enum syscall_kind kind, const char *agent, void *target,
                            void *req, void (*req_free)(void *));
void syscall_ref(struct syscall *sc);
void syscall_unref(struct syscall *sc);

/* Worker side. Append stream output and notify. */
int syscall_emit(struct syscall *sc, const char *text, size_t len);
/* Set the final state, then notify. The status is final before anyone is
 * woken, so a waiter never sees a finished call as still running. res is
 * owned by the syscall afterwards. Only the first call has an effect. */
void syscall_finish(struct syscall *sc, void *res, void (*res_free)(void *));
void syscall_fail(struct syscall *sc, int err, int http_status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
bool syscall_cancel_requested(struct syscall *sc);

/* Caller side. */
void syscall_request_cancel(struct syscall *sc);
/* Move pending stream output into *buf (appending; caller frees). Returns
 * the status observed under the same lock. */
enum syscall_status syscall_take_output(struct syscall *sc, char **buf, size_t *len, size_t *cap);

#endif
