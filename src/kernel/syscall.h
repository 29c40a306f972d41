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
/* slices recorded per call; later slices overwrite the last entry and only
 * n_slices keeps counting */
#define SYSCALL_MAX_SLICES 32

/* What one call consumed. The worker fills it (the batching engine as it
 * goes; sched_done() fills it from the LLM result for engines that do
 * not); the scheduler copies it into the per-agent accounting when the
 * call ends. Guarded by the syscall's mu. */
struct syscall_usage {
    bool filled;                  /* the worker set the token fields itself */
    int64_t n_prompt_computed;    /* prompt tokens prefilled by this call */
    int64_t n_prompt_reused;      /* prompt tokens found in a retained KV state */
    int64_t n_gen;                /* generated tokens */
    int64_t t_engine_us;          /* time the engine spent on this call */
    int64_t t_tool_us;            /* time a tool executor spent */
    int64_t kv_bytes;             /* KV cache bytes the call holds (gauge) */
    int n_ctx_switches;           /* times it was preempted and restored */
};

struct syscall {
    /* immutable after syscall_new / before submit */
    uint64_t id;
    enum syscall_kind kind;
    char *agent;
    int priority;                 /* higher runs first; see sched.c */
    bool priority_set;            /* set per call (else the agent's default) */
    void *target;                 /* resource instance, e.g. the llm core */
    void *req;                    /* kind-specific request, owned */
    void (*req_free)(void *);
    bool stream;                  /* caller wants incremental output */
    /* a read that costs about as little as handing it to a worker (one
     * note by id): it may run on the thread that submits it
     * (sched_submit_here) */
    bool run_here;
    /* set while it runs there (sched_run_here): the executor must not
     * block, and leaves the call unfinished to hand it to a pool thread */
    bool running_here;
    /* made for an agent's own identity (its token), not by the operator:
     * the agent's privilege group binds the model this call runs and the
     * tools it runs (set by the access manager before submit) */
    bool by_agent;
    /* the HTTP request that made it (its x-request-id; "" when none), for
     * log lines and the audit log */
    char request_id[72];
    syscall_notify_fn notify;
    void *notify_ud;
    int64_t t_created_us;         /* monotonic */

    /* below: guarded by mu */
    pthread_mutex_t mu;
    enum syscall_status status;
    int64_t t_start_us;           /* first time it ran (0 if never) */
    int64_t t_end_us;
    int64_t t_queued_us;          /* last time it entered a queue */
    int64_t t_wait_us;            /* total time spent queued, all slices */
    /* each run slice: [t_slice_start_us[i], t_slice_end_us[i]) (end 0 while
     * running); n_slices counts every slice, the arrays keep the first
     * SYSCALL_MAX_SLICES - 1 and the latest */
    int64_t t_slice_start_us[SYSCALL_MAX_SLICES];
    int64_t t_slice_end_us[SYSCALL_MAX_SLICES];
    int n_slices;
    struct syscall_usage usage;
    void *res;                    /* kind-specific result, owned */
    void (*res_free)(void *);
    int err;                      /* AIOS_E* when status is ERROR */
    int http_status;              /* suggested HTTP status for the error */
    char errmsg[SYSCALL_ERRMSG_MAX];
    char *out;                    /* stream output not yet taken */
    size_t n_out, cap_out;
    /* beside it, what describes that output (an LLM's token logprobs as
     * comma-separated JSON objects), taken with it */
    char *aux;
    size_t n_aux, cap_aux;
    bool cancel_requested;        /* caller went away */
    bool waiter_parked;           /* API side is suspended waiting on us */

    int refs;                     /* atomic */
    struct syscall *next;         /* queue link, owned by the scheduler */
    /* owned by the scheduler, guarded by its lock */
    struct syscall *sched_prev;   /* queue link back */
    void *sched_lane;             /* fair: its (agent, target, priority) lane */
    struct syscall *sched_lane_prev, *sched_lane_next; /* in that lane, oldest first */
    void *sched_agent;            /* the agent's record, set at submit */
    /* called once when the call becomes final, with no lock held, before
     * notify wakes the waiter (so accounting is never behind the answer) */
    void (*on_final)(struct syscall *sc, void *ud);
    void *on_final_ud;
    int64_t sched_slice_tokens;   /* tokens charged in the current slice */
    int64_t sched_t_enq_us;       /* when it last entered the queue */
    uint64_t sched_seq;           /* order in which it last entered a queue */
    int64_t sched_charged_us;     /* engine time already charged to its agent */
    struct syscall *sched_run_prev, *sched_run_next; /* list of running calls */
    int64_t sched_t_run_us;       /* when its current slice began */
    bool sched_charged;           /* the worker called sched_charge() */
    int64_t sched_t_expect_end_us; /* running: when its worker expects it to end (0: unknown) */
    /* owned by the worker that runs the call (e.g. the engine's saved KV
     * state of a preempted sequence); freed with the syscall */
    void *worker_state;
    void (*worker_state_free)(void *);
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
/* The same with aux bytes appended to sc->aux under the same lock, so a
 * reader takes text and aux together. */
int syscall_emit_aux(struct syscall *sc, const char *text, size_t len, const char *aux,
                     size_t n_aux);
/* Set the final state, then notify. The status is final before anyone is
 * woken, so a waiter never sees a finished call as still running. res is
 * owned by the syscall afterwards. Only the first call has an effect. */
void syscall_finish(struct syscall *sc, void *res, void (*res_free)(void *));
void syscall_fail(struct syscall *sc, int err, int http_status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
bool syscall_cancel_requested(struct syscall *sc);
/* Run slices (sc->mu taken inside). The scheduler begins one when it hands
 * the call to a worker and ends it when the call is preempted or final. */
void syscall_slice_begin(struct syscall *sc, int64_t now_us);
/* take back the slice just begun, which did no work (a call handed from
 * the submitting thread to a pool thread: sched_run_here): it is waiting
 * again since the slice's start */
void syscall_slice_undo(struct syscall *sc);
void syscall_slice_end(struct syscall *sc, int64_t now_us);
/* Per-call priority, before submit: clamps to SYSCALL_PRIORITY_MIN..MAX. */
void syscall_set_priority(struct syscall *sc, int priority);
#define SYSCALL_PRIORITY_MIN (-100)
#define SYSCALL_PRIORITY_MAX 100

/* Caller side. */
void syscall_request_cancel(struct syscall *sc);
/* Move pending stream output into *buf (appending; caller frees). Returns
 * the status observed under the same lock. */
enum syscall_status syscall_take_output(struct syscall *sc, char **buf, size_t *len, size_t *cap);

#endif
