/* The scheduler: one queue per resource kind, a policy that orders each
 * queue. See sched.c. */
#ifndef AIOS_SCHED_SCHED_H
#define AIOS_SCHED_SCHED_H

#include "kernel/syscall.h"

#include <stddef.h>
#include <stdint.h>

struct sched_queue;
struct sched;

/* A policy decides order and preemption. push() links a syscall in (a new
 * call, or a preempted one coming back); pick() unlinks and returns the next
 * one for `target` (any target when NULL), or NULL; peek() returns it
 * without unlinking. should_preempt() says whether running call R should
 * give way to waiting call W (NULL: never preempts); slice_expired()
 * whether R used up its time slice (NULL: slices never expire). All are
 * called with the scheduler lock held and must not block. */
struct sched_policy {
    const char *name;
    void (*push)(struct sched_queue *q, struct syscall *sc);
    struct syscall *(*pick)(struct sched_queue *q, void *target);
    struct syscall *(*peek)(struct sched_queue *q, void *target);
    bool (*should_preempt)(struct sched_queue *q, struct syscall *running, struct syscall *waiting);
    bool (*slice_expired)(struct sched_queue *q, struct syscall *running);
    /* the policy orders by lanes (see struct sched_queue): sched_submit
     * gives each call its lane before push() */
    bool lanes;
};

/* A queue: every queued call in arrival order (head..tail, doubly
 * linked), and for policies with lanes, the same calls also in lanes: one
 * FIFO per (agent, target, priority), the non-empty lanes listed in
 * `lanes`. Within a lane every call has the same agent, target and
 * priority and entered the queue no earlier than the one before it, so
 * its head comes first among them under fair's order; a pick compares
 * lane heads only (O(lanes with queued calls), not O(queued calls)). */
struct sched_lane;
struct sched_queue {
    struct syscall *head, *tail;
    size_t n;
    struct sched_lane *lanes; /* non-empty lanes (policy->lanes) */
    size_t n_lanes;
    struct sched *s; /* owner, for policies that read agent state/tuning */
};

/* Tuning (config `scheduler.*`; see sched_configure). */
struct sched_tuning {
    int64_t time_slice_us;     /* rr slice / fair minimum run before preemption */
    int64_t slice_tokens;      /* rr: tokens per slice (0: time only) */
    int64_t aging_us;          /* fair: waiting this long raises a call one priority level (0: off) */
    double preempt_margin;     /* fair: service gap needed to preempt an equal-priority call */
    double ms_weight;          /* fair: service units per ms of engine time (tokens count 1) */
};

struct sched_stats {
    size_t n_queued[SYSCALL_KIND__COUNT];
    size_t n_running[SYSCALL_KIND__COUNT];
    uint64_t n_submitted, n_finished, n_preempted;
    const char *policy;
};

extern const struct sched_policy sched_policy_fifo;
extern const struct sched_policy sched_policy_rr;
extern const struct sched_policy sched_policy_fair;
/* fair's order by a scan of the whole queue on every pick (O(queued
 * calls), no lanes): the straightforward form that fair's lanes must
 * agree with, kept as the reference for the benchmark (bench/bench_sched.c).
 * Not selectable by configuration. */
extern const struct sched_policy sched_policy_fair_scan;
/* "fifo", "rr" or "fair"; NULL for an unknown name */
const struct sched_policy *sched_policy_find(const char *name);

int sched_create(struct sched **out, const struct sched_policy *policy);
void sched_destroy(struct sched *s);

/* Read scheduler.time_slice_ms, scheduler.slice_tokens, scheduler.aging_ms,
 * scheduler.preempt_margin, scheduler.priorities {agent: int} from the
 * config. Before any submit. 0 or AIOS_ECONFIG with a message naming the
 * key. cfg is `const struct aios_config *` (void to keep this header free
 * of the config module). */
int sched_configure(struct sched *s, const void *cfg, char *err, size_t errlen);
void sched_get_tuning(struct sched *s, struct sched_tuning *out);
/* The clock the scheduler reads for queue entry times and aging
 * (monotonic microseconds; NULL: util_now_us), so tests and benchmarks
 * can drive aging without sleeping. Entry times never go backwards: a
 * call entering the queue is given at least the previous call's time.
 * now_us is called with the scheduler's lock held: it must only read a
 * clock. Before any submit. */
void sched_set_clock(struct sched *s, int64_t (*now_us)(void *ud), void *ud);
void sched_set_tuning(struct sched *s, const struct sched_tuning *t);
/* default priority for calls of `agent` that carry none of their own */
int sched_set_agent_priority(struct sched *s, const char *agent, int priority);

/* Queue a syscall. The scheduler takes its own reference. Returns
 * AIOS_ESHUTDOWN once sched_shutdown() was called. */
int sched_submit(struct sched *s, struct syscall *sc);

/* Worker side: wait up to timeout_ms (-1: forever) for the next syscall of
 * `kind` for `target` (NULL: any). Returns it marked RUNNING; the worker owns
 * the scheduler's reference and must call sched_done() when it is final.
 * NULL on timeout or shutdown. */
struct syscall *sched_next(struct sched *s, enum syscall_kind kind, void *target, int timeout_ms);
/* The call is final (the worker ended it). Ends its last slice, records
 * its usage in the agent's accounting (from the LLM result when the worker
 * filled none) and drops the scheduler's reference. */
void sched_done(struct sched *s, struct syscall *sc);
/* At most cap calls of `kind` from one agent run at once (0: no cap); the
 * others wait in the queue, so one agent cannot hold every worker of a pool
 * while another agent's calls wait. */
void sched_set_agent_cap(struct sched *s, enum syscall_kind kind, int cap);
/* How an LLM call's target (the model it runs on) prices a token, for
 * the agents' `cost`: fn fills the prices per prompt and per generated
 * token. Called with the scheduler's lock held: it must only read. */
void sched_set_price_fn(struct sched *s,
                        void (*fn)(const void *target, double *prompt, double *completion));

/* ---- the engine's side of preemption and admission ----
 *
 * The batching engine admits calls with sched_next(.., 0) while its KV
 * budget allows, using sched_peek() to see the next one first (and its
 * request's token counts) without taking it. Each step it reports what
 * every running call consumed with sched_charge(). When a call waits and
 * the batch is full, it asks sched_pick_victim() (or sched_should_preempt()
 * pairwise) which running call gives way; under rr it asks
 * sched_slice_expired() for each running call. To preempt, it saves the
 * sequence's state (e.g. a KV snapshot in sc->worker_state) and calls
 * sched_preempt(): the call is SUSPENDED, its slice ends, and it goes back
 * in the queue (rr: at the back); a later sched_next() returns it again
 * RUNNING with a new slice, and the engine resumes it where it stopped. */

/* The call sched_next() would return now, with a reference the caller
 * drops (syscall_unref), or NULL. */
struct syscall *sched_peek(struct sched *s, enum syscall_kind kind, void *target);
/* Charge work to a running call and its agent's attained service. */
void sched_charge(struct sched *s, struct syscall *sc, int64_t n_tokens, int64_t t_us);
/* Has sc used up its slice (time or tokens) while another call for its
 * target waits? Always false under fifo. */
bool sched_slice_expired(struct sched *s, struct syscall *running);
/* Should running call R give way to waiting call W (policy decides; fifo:
 * never; rr: when R's slice expired; fair: when W's effective priority is
 * higher, or equal and W's agent is less served by more than the margin,
 * and R has run at least one time slice). */
bool sched_should_preempt(struct sched *s, struct syscall *running, struct syscall *waiting);
/* Of running[0..n), the call to preempt for `waiting` (the most served of
 * the lowest priority among those should_preempt allows), or NULL. */
struct syscall *sched_pick_victim(struct sched *s, struct syscall *const *running, size_t n,
                                  struct syscall *waiting);
/* Put a running call back in its queue (SUSPENDED, one more context
 * switch). The worker keeps no claim on it; the scheduler's reference
 * stays with the queue. AIOS_ESHUTDOWN (the call is failed) when
 * stopping. */
int sched_preempt(struct sched *s, struct syscall *sc);
/* KV bytes an agent holds now (retained or running sequences), for
 * accounting; the engine sets it as it allocates and frees. */
void sched_set_agent_kv(struct sched *s, const char *agent, int64_t bytes);

/* ---- when an agent will be back: the engine's eviction hint ----
 *
 * A worker that can tell when a running call will end says so
 * (sched_set_expected_end, monotonic microseconds; the tool manager does
 * it for TOOL calls from the tool's observed mean duration or its
 * timeout). sched_agents_next_llm() gives, for each of agents[0..n), when
 * that agent is expected to make its next LLM call: now when one is
 * queued; else the soonest expected end of its TOOL calls in flight (the
 * answer of a call_tool chain goes back to the agent, whose next turn
 * follows); SCHED_ETA_UNKNOWN for a tool in flight with no estimate; -1
 * when the agent is idle (nothing queued, no tool running), the least
 * likely to be back soon. The engine evicts the retained conversation
 * whose agent is expected back last. Any thread. */
#define SCHED_ETA_UNKNOWN (INT64_MAX / 2)
void sched_set_expected_end(struct sched *s, struct syscall *sc, int64_t t_end_us);
void sched_agents_next_llm(struct sched *s, const char *const *agents, size_t n, int64_t *out);

/* The calls of `kind` for `target` (NULL: any) handed to a worker and not
 * yet done, oldest first: up to cap of them into out, each with a
 * reference the caller drops. Returns how many. */
size_t sched_running_calls(struct sched *s, enum syscall_kind kind, void *target,
                           struct syscall **out, size_t cap);
/* The engine was asked to switch sc out (it keeps it and resumes it
 * itself): count a context switch and start its next slice now. */
void sched_note_switch(struct sched *s, struct syscall *sc);

/* The preemption driver (preempt.c): for rr and fair, a thread that every
 * few milliseconds looks at each embedded engine whose batch is full while
 * a call waits for it, and asks the engine (llm_engine_preempt) to switch
 * out the call the policy names: under rr every call whose slice expired,
 * under fair the victim of sched_pick_victim(). It also charges running
 * calls their share of engine time, so the fair order sees service while
 * calls run. No thread for fifo. Stopped by sched_shutdown(). */
struct llm_core;
struct sched_preemptor;
/* cores[0..*n_cores): the kernel's core table, which may grow while the
 * thread runs (models added by POST /core/refresh are driven too) */
int sched_preemptor_start(struct sched *s, struct llm_core **cores, _Atomic size_t *n_cores);
/* internal to sched.c / preempt.c */
void sched_preemptor_stop(struct sched_preemptor *p);
void sched_attach_preemptor(struct sched *s, struct sched_preemptor *p);
const struct sched_policy *sched_get_policy(struct sched *s);

/* ---- accounting (per agent, since start) ---- */
struct sched_agent_stats {
    char name[128];
    int priority;
    int64_t n_calls, n_done, n_error, n_cancelled;
    int64_t n_calls_kind[SYSCALL_KIND__COUNT];
    int64_t n_prompt_computed, n_prompt_reused, n_gen;
    int64_t t_engine_us, t_queue_us, t_tool_us;
    int64_t kv_bytes;
    int64_t n_ctx_switches;
    int64_t n_queued, n_running;
    double service;
    double cost; /* prompt and generated tokens at their model's price */
};
/* one agent's stats; AIOS_ENOTFOUND for an agent never seen */
int sched_agent_stats(struct sched *s, const char *agent, struct sched_agent_stats *out);
/* every agent's, malloc'd array in *out (caller frees) */
int sched_all_agent_stats(struct sched *s, struct sched_agent_stats **out, size_t *n);
/* One hook called for every call when it becomes final, after its usage
 * (sc->usage, filled) went into the agent's accounting: on the thread that
 * ended the call, no lock held; it must not block. NULL removes it. The
 * access manager uses it to charge token budgets with these same numbers. */
void sched_set_final_hook(struct sched *s, void (*fn)(struct syscall *sc, void *ud), void *ud);

/* Stop accepting work, fail everything still queued with AIOS_ESHUTDOWN,
 * and wake every waiting worker. Running calls finish on their own. */
void sched_shutdown(struct sched *s);
bool sched_stopping(struct sched *s);

void sched_get_stats(struct sched *s, struct sched_stats *out);

/* ---- the timeline: recent calls, for the dashboard ----
 *
 * The scheduler keeps the last SCHED_TIMELINE_MAX final calls (a ring) and
 * can list the calls in flight. Times are monotonic microseconds
 * (util_now_us). A final call keeps its first SCHED_REC_SLICES - 1 run
 * slices and its last; a call in flight shows its current state only. */
#define SCHED_TIMELINE_MAX 2048
#define SCHED_REC_SLICES 8
enum sched_rec_state { SCHED_REC_QUEUED, SCHED_REC_RUNNING, SCHED_REC_FINAL };
struct sched_call_rec {
    uint64_t id;
    char agent[64];
    enum syscall_kind kind;
    enum sched_rec_state state;
    int final_status;        /* enum syscall_status when FINAL */
    int64_t t_created_us;    /* submitted */
    int64_t t_end_us;        /* final (0 in flight) */
    int64_t t_since_us;      /* in flight: queued or running since */
    int n_slices;            /* run slices in all (may exceed those kept) */
    int n_kept;
    int64_t slice_start_us[SCHED_REC_SLICES], slice_end_us[SCHED_REC_SLICES];
    int64_t n_gen, n_prompt_computed;
};
/* Calls that ended at or after since_us, oldest first, then the calls in
 * flight. Malloc'd array in *out (caller frees). 0 or AIOS_ENOMEM. */
int sched_timeline(struct sched *s, int64_t since_us, struct sched_call_rec **out, size_t *n);

/* A small pool of worker threads for one resource kind (memory, storage,
 * tool). Each thread takes the next syscall of that kind and calls fn, which
 * must end it with syscall_finish() or syscall_fail() (the pool fails it
 * with a 500 if fn forgot). fn may block (disk, subprocess), which is why
 * these kinds get threads of their own and never run on HTTP threads. */
typedef void (*sched_exec_fn)(struct syscall *sc, void *ud);
struct sched_pool;
/* The target of a memory or storage call that only reads (set before
 * submit by whoever makes the call). A pool's reader threads take only
 * such calls, so a read never waits behind writes that hold every other
 * thread (a write waits for its fsync); the other threads take any call. */
extern char sched_read_lane;
#define SCHED_READ_LANE ((void *)&sched_read_lane)
/* run sc (handed out by sched_next or sched_submit_here) with fn, fail it
 * with a 500 if fn left it unfinished, and hand it back (sched_done) */
void sched_exec(struct sched *s, struct syscall *sc, sched_exec_fn fn, void *ud);
/* Cheap reads on the submitting thread. sched_submit_here is sched_submit,
 * except that a call with run_here set whose kind has a read executor
 * (sched_set_here) and that the kind's reader threads would take next (no
 * read queued that it would pass, its agent under the kind's cap) is not
 * left for them: *taken, it is running, and the caller must run it at once
 * with sched_run_here. There the executor sees sc->running_here: it must
 * not block (no lock another call may hold long, no I/O that may wait), and
 * a call it cannot serve so it leaves unfinished, which hands it to the
 * pool threads (queued again; the caller then waits for it as for any
 * call). sched_pool_start sets the executor of a pool with readers,
 * sched_pool_stop clears it and waits for the runs in progress. */
int sched_submit_here(struct sched *s, struct syscall *sc, bool *taken);
void sched_run_here(struct sched *s, struct syscall *sc);
void sched_set_here(struct sched *s, enum syscall_kind kind, sched_exec_fn fn, void *ud);
void sched_clear_here(struct sched *s, enum syscall_kind kind);
/* n_threads that take any call of kind, and n_readers more that take only
 * calls whose target is SCHED_READ_LANE */
int sched_pool_start(struct sched_pool **out, struct sched *s, enum syscall_kind kind,
                     int n_threads, int n_readers, sched_exec_fn fn, void *ud);
/* join the threads; call after sched_shutdown() */
void sched_pool_stop(struct sched_pool *p);

#endif
