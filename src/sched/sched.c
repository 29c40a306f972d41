/* The scheduler.
 *
 * Four resource queues (llm, memory, storage, tool), each an intrusive list
 * of syscalls ordered by the configured policy. HTTP threads submit; worker
 * threads (an LLM engine per model, small pools for the other kinds) block
 * in sched_next() until their queue has work for them.
 *
 * Policies (config scheduler.policy, chosen at start):
 *   fifo  arrival order, never preempts (the AIOS reference's default).
 *   rr    arrival order; a running call whose slice (time_slice_ms, or
 *         slice_tokens) expired while another call waits is preempted by
 *         the engine (sched_preempt) and goes to the back of the queue.
 *   fair  (default) program-level least-attained-service, as in Autellix:
 *         each agent accumulates service (tokens computed + ms of engine
 *         time x ms_weight); among waiting calls the highest effective
 *         priority wins, then the least-served agent, then arrival order.
 *         Effective priority = the call's priority (per call, else the
 *         agent's from scheduler.priorities, else 0) plus one level per
 *         aging_ms spent waiting, capped at the highest priority waiting,
 *         so a low-priority call rises to the top class and then wins on
 *         service: nothing starves. An agent that becomes active again is
 *         lifted to the least service among active agents (as CFS does
 *         with vruntime), so idling banks no credit. The engine preempts a
 *         running call when a waiting one has a higher effective priority,
 *         or the same and its agent is less served by more than
 *         preempt_margin, and the running call has had one time slice.
 *         A pick looks at one call per lane, not at every queued call:
 *         each queue also keeps its calls in per-(agent, target, priority)
 *         FIFO lanes, whose heads are the only candidates (why: at the
 *         fair section below); a pick costs O(lanes with queued calls):
 *         the agents with calls queued, times the targets and priorities
 *         each of them uses. sched_policy_fair_scan is the same order by a
 *         scan of the whole queue, the reference the benchmark compares
 *         against (the unit test has a scan of its own).
 *
 * Accounting: the same per-agent record holds the counters reported by
 * /agents/{id}/stats and /metrics (calls, tokens computed vs reused,
 * generated, engine/queue/tool time, KV bytes, context switches), written
 * by the syscall's on_final hook, i.e. before its waiter is woken, so a
 * client that reads its stats right after an answer sees that call.
 * Records live until the scheduler is destroyed (one per agent name seen).
 *
 * Locking: one mutex for the whole scheduler plus one condvar per kind. The
 * mutex is never held while calling out (notify callbacks, workers) or
 * while a syscall's own mutex is held: what the scheduler needs from a
 * syscall under its lock lives in the sched_* fields, which only the
 * scheduler touches.
 *
 * Status: sched_submit sets QUEUED; sched_next sets RUNNING and begins a
 * slice; sched_preempt sets SUSPENDED and requeues. Final states are set by
 * the worker through syscall_finish/syscall_fail; sched_shutdown fails what
 * is still queued. */
#include "sched/sched.h"

#include "kernel/config.h"
#include "llm/core.h"
#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N_BUCKETS 64

struct sched_agent {
    struct sched_agent *next_hash, *next_all;
    char *name;
    int priority;       /* default for its calls */
    bool priority_set;
    double service;     /* attained service, see the top */
    int64_t n_queued, n_running;
    int n_running_kind[SYSCALL_KIND__COUNT]; /* running calls of each kind */
    int n_queued_kind[SYSCALL_KIND__COUNT];  /* queued calls of each kind */
    struct sched_lane *lanes; /* its lanes, every kind (policy->lanes) */
    struct sched_agent_stats st;
};

/* fair's per-(agent, target, priority) FIFO of queued calls of one kind
 * (see sched.h's struct sched_queue) */
struct sched_lane {
    struct sched_lane *next_agent; /* the agent's lanes */
    struct sched_lane *prev, *next; /* the queue's non-empty lanes */
    struct sched_agent *agent;
    void *target;
    int kind, priority;
    struct syscall *head, *tail; /* by sched_seq */
};

struct sched {
    const struct sched_policy *policy;
    struct sched_tuning tun;
    pthread_mutex_t mu;
    pthread_cond_t cv[SYSCALL_KIND__COUNT];
    /* the pool threads' (sched_next without a timeout, target NULL: [0],
     * SCHED_READ_LANE: [1]). A submit wakes one thread that can take the
     * call (wake_pool), not every thread of the kind: each woken thread
     * scans the queue under the lock, and a herd of them on every submit was a
     * sixth of the kernel's CPU with 1,000 queued storage calls. */
    pthread_cond_t cv_pool[SYSCALL_KIND__COUNT][2];
    /* pool threads waiting on each, not yet chosen by wake_pool; and
     * those wake_pool chose that have not woken yet */
    int n_idle[SYSCALL_KIND__COUNT][2], n_waking[SYSCALL_KIND__COUNT][2];
    struct sched_queue q[SYSCALL_KIND__COUNT];
    size_t n_running[SYSCALL_KIND__COUNT];
    /* most calls of a kind one agent may have running (0: no cap) */
    int agent_cap[SYSCALL_KIND__COUNT];
    uint64_t n_submitted, n_finished, n_preempted;
    uint64_t seq; /* enqueue counter: arrival order, even within a microsecond */
    int64_t t_last_enq; /* the latest queue entry time given (sched_enq_time) */
    int64_t (*clock)(void *ud); /* sched_set_clock, or NULL: util_now_us */
    void *clock_ud;
    struct syscall *running[SYSCALL_KIND__COUNT]; /* handed out, not done: newest first */
    struct sched_preemptor *pre; /* preempt.c, or NULL */
    bool stopping;
    struct sched_agent *buckets[N_BUCKETS], *agents;
    /* called after a call's usage is recorded (sched_set_final_hook) */
    void (*final_hook)(struct syscall *sc, void *ud);
    void *final_hook_ud;
    /* the price of an LLM call's target per token (sched_set_price_fn) */
    void (*price_fn)(const void *target, double *prompt, double *completion);
    /* the read executor of a kind whose pool has reader threads, for
     * calls that run on the thread that submits them (sched_submit_here);
     * `running` counts such runs, and here_cv tells sched_clear_here that
     * none is left */
    struct {
        sched_exec_fn fn;
        void *ud;
        int running;
    } here[SYSCALL_KIND__COUNT];
    pthread_cond_t here_cv;
    /* the timeline ring (sched_timeline): its own leaf lock, taken alone */
    pthread_mutex_t tl_mu;
    struct sched_call_rec *tl;
    size_t tl_next, tl_n;
};

/* ---- agent records (lock held) ---- */

static struct sched_agent *agent_get(struct sched *s, const char *name, bool create)
{
    unsigned b = util_fnv1a32(name) % N_BUCKETS;
    for (struct sched_agent *a = s->buckets[b]; a; a = a->next_hash)
        if (!strcmp(a->name, name)) return a;
    if (!create) return NULL;
    struct sched_agent *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->name = strdup(name);
    if (!a->name) {
        free(a);
        return NULL;
    }
    snprintf(a->st.name, sizeof a->st.name, "%s", name);
    a->next_hash = s->buckets[b];
    s->buckets[b] = a;
    a->next_all = s->agents;
    s->agents = a;
    return a;
}

static double service_of(const struct syscall *sc)
{
    const struct sched_agent *a = sc->sched_agent;
    return a ? a->service : 0.0;
}

/* ---- running list (lock held) ---- */

static void run_link(struct sched *s, struct syscall *sc)
{
    sc->sched_run_prev = NULL;
    sc->sched_run_next = s->running[sc->kind];
    if (sc->sched_run_next) sc->sched_run_next->sched_run_prev = sc;
    s->running[sc->kind] = sc;
}

/* false when sc was not linked */
static bool run_unlink(struct sched *s, struct syscall *sc)
{
    if (sc->sched_run_prev) sc->sched_run_prev->sched_run_next = sc->sched_run_next;
    else if (s->running[sc->kind] == sc) s->running[sc->kind] = sc->sched_run_next;
    else return false;
    if (sc->sched_run_next) sc->sched_run_next->sched_run_prev = sc->sched_run_prev;
    sc->sched_run_prev = sc->sched_run_next = NULL;
    return true;
}

/* a running call stops counting as running (at its final state, or when
 * requeued) */
/* every waiter of kind k may find work now (lock held) */
static void wake_all(struct sched *s, int k)
{
    pthread_cond_broadcast(&s->cv[k]);
    pthread_cond_broadcast(&s->cv_pool[k][0]);
    pthread_cond_broadcast(&s->cv_pool[k][1]);
}

/* A call of kind k was queued (lock held): wake one pool thread that can
 * take it and is waiting: a reader for a read if one is idle, else one
 * that takes any call; none when all are busy (each looks at the queue
 * again when its call is done). Not one of each: for a read, a reader
 * and an any-call thread were both woken and one found nothing, 45% of
 * the pool's wake-ups in the 10-connection memory mix (a context switch
 * each, dear on this hypervisor; docs/performance.md). */
static void wake_pool(struct sched *s, int k, bool read)
{
    int lane = read && s->n_idle[k][1] > 0 ? 1 : 0;
    if (s->n_idle[k][lane] <= 0) return;
    s->n_idle[k][lane]--;
    s->n_waking[k][lane]++;
    pthread_cond_signal(&s->cv_pool[k][lane]);
}

static void run_release(struct sched *s, struct syscall *sc)
{
    if (!run_unlink(s, sc)) return;
    if (s->n_running[sc->kind]) s->n_running[sc->kind]--;
    struct sched_agent *a = sc->sched_agent;
    if (a && a->n_running) a->n_running--;
    if (a && a->n_running_kind[sc->kind]) a->n_running_kind[sc->kind]--;
    /* a call of this agent held back by its cap may start now */
    if (s->agent_cap[sc->kind] > 0) wake_all(s, sc->kind);
}

/* may sc be handed out for target now? (lock held) Its agent's running
 * calls of its kind must be under the kind's per-agent cap. */
static bool eligible(const struct sched_queue *q, const struct syscall *sc, const void *target)
{
    if (target && sc->target != target) return false;
    int cap = q->s->agent_cap[sc->kind];
    const struct sched_agent *a = sc->sched_agent;
    return cap <= 0 || !a || a->n_running_kind[sc->kind] < cap;
}

/* ---- queue primitives (lock held) ---- */

static void lane_append(struct sched_queue *q, struct sched_lane *l, struct syscall *sc)
{
    sc->sched_lane_next = NULL;
    sc->sched_lane_prev = l->tail;
    if (l->tail) {
        l->tail->sched_lane_next = sc;
    } else {
        l->head = sc;
        /* the lane becomes non-empty: list it */
        l->prev = NULL;
        l->next = q->lanes;
        if (q->lanes) q->lanes->prev = l;
        q->lanes = l;
        q->n_lanes++;
    }
    l->tail = sc;
}

static void lane_unlink(struct sched_queue *q, struct sched_lane *l, struct syscall *sc)
{
    if (sc->sched_lane_prev) sc->sched_lane_prev->sched_lane_next = sc->sched_lane_next;
    else l->head = sc->sched_lane_next;
    if (sc->sched_lane_next) sc->sched_lane_next->sched_lane_prev = sc->sched_lane_prev;
    else l->tail = sc->sched_lane_prev;
    sc->sched_lane_prev = sc->sched_lane_next = NULL;
    if (l->head) return;
    /* empty: off the list (it stays with its agent for the next call) */
    if (l->prev) l->prev->next = l->next;
    else q->lanes = l->next;
    if (l->next) l->next->prev = l->prev;
    l->prev = l->next = NULL;
    assert(q->n_lanes > 0);
    q->n_lanes--;
}

static void queue_append(struct sched_queue *q, struct syscall *sc)
{
    sc->next = NULL;
    sc->sched_prev = q->tail;
    if (q->tail) q->tail->next = sc;
    else q->head = sc;
    q->tail = sc;
    q->n++;
}

/* false when sc was not queued here */
static bool queue_unlink(struct sched_queue *q, struct syscall *sc)
{
    if (!sc->sched_prev && q->head != sc) return false;
    if (sc->sched_prev) sc->sched_prev->next = sc->next;
    else q->head = sc->next;
    if (sc->next) sc->next->sched_prev = sc->sched_prev;
    else q->tail = sc->sched_prev;
    sc->next = sc->sched_prev = NULL;
    assert(q->n > 0);
    q->n--;
    if (sc->sched_lane) lane_unlink(q, sc->sched_lane, sc);
    return true;
}

/* The lane of agent a for calls of kind to target at priority, made on
 * first use; NULL when out of memory. Lanes live as long as their agent. */
static struct sched_lane *lane_get(struct sched_agent *a, int kind, void *target, int priority)
{
    for (struct sched_lane *l = a->lanes; l; l = l->next_agent)
        if (l->kind == kind && l->target == target && l->priority == priority) return l;
    struct sched_lane *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->agent = a;
    l->kind = kind;
    l->target = target;
    l->priority = priority;
    l->next_agent = a->lanes;
    a->lanes = l;
    return l;
}

/* ---- FIFO: arrival order, no preemption (AIOS's default) ---- */

static struct syscall *fifo_peek(struct sched_queue *q, void *target)
{
    for (struct syscall *sc = q->head; sc; sc = sc->next)
        if (eligible(q, sc, target)) return sc;
    return NULL;
}

static struct syscall *fifo_pick(struct sched_queue *q, void *target)
{
    struct syscall *sc = fifo_peek(q, target);
    if (sc) queue_unlink(q, sc);
    return sc;
}

const struct sched_policy sched_policy_fifo = {
    .name = "fifo", .push = queue_append, .pick = fifo_pick, .peek = fifo_peek,
};

/* ---- RR: arrival order, preempted calls go to the back ---- */

static bool rr_slice_expired(struct sched_queue *q, struct syscall *sc)
{
    const struct sched_tuning *t = &q->s->tun;
    if (t->slice_tokens > 0 && sc->sched_slice_tokens >= t->slice_tokens) return true;
    return t->time_slice_us > 0 && sc->sched_t_run_us &&
           util_now_us() - sc->sched_t_run_us >= t->time_slice_us;
}

static bool rr_should_preempt(struct sched_queue *q, struct syscall *running, struct syscall *waiting)
{
    (void)waiting;
    return rr_slice_expired(q, running);
}

const struct sched_policy sched_policy_rr = {
    .name = "rr", .push = queue_append, .pick = fifo_pick, .peek = fifo_peek,
    .should_preempt = rr_should_preempt, .slice_expired = rr_slice_expired,
};

/* ---- fair: least attained service per agent, priorities, aging ----
 *
 * The order: the highest effective priority first, then the least-served
 * agent, then the lowest sched_seq (arrival). sched_seq is unique, so this
 * is a strict total order and the first call under it does not depend on
 * where a scan starts. Every call of a lane has the same priority, agent
 * (so service) and target (so eligibility), and a later sched_seq comes
 * with an entry time no earlier (sched_enq_time), so an effective priority
 * no higher: the lane's head comes first among its calls, and the queue's
 * first call is the first of the eligible lane heads. The highest priority
 * waiting for a target is the highest of its lanes' priorities. */

static int top_priority(struct sched_queue *q, void *target)
{
    int top = SYSCALL_PRIORITY_MIN;
    for (const struct sched_lane *l = q->lanes; l; l = l->next)
        if ((!target || l->target == target) && l->priority > top) top = l->priority;
    return top;
}

static int eff_priority(struct sched_queue *q, const struct syscall *sc, int top, int64_t now)
{
    int64_t aging = q->s->tun.aging_us;
    if (aging <= 0 || sc->priority >= top) return sc->priority;
    int64_t lv = (now - sc->sched_t_enq_us) / aging;
    int64_t e = (int64_t)sc->priority + lv;
    return e > top ? top : (int)e;
}

/* a before b? */
static bool fair_before(int pa, const struct syscall *a, int pb, const struct syscall *b)
{
    if (pa != pb) return pa > pb;
    double sa = service_of(a), sb = service_of(b);
    if (sa != sb) return sa < sb;
    return a->sched_seq < b->sched_seq;
}

static int64_t sched_clock(const struct sched *s);

static void fair_push(struct sched_queue *q, struct syscall *sc)
{
    assert(sc->sched_lane);
    queue_append(q, sc);
    lane_append(q, sc->sched_lane, sc);
}

/* the first of the candidates in fair's order: a pick's running best */
struct fair_best {
    struct sched_queue *q;
    void *target;
    int top;
    int64_t now;
    struct syscall *sc;
    int p;
};

static void fair_consider(struct fair_best *b, struct syscall *sc)
{
    if (!eligible(b->q, sc, b->target)) return;
    int p = eff_priority(b->q, sc, b->top, b->now);
    if (!b->sc || fair_before(p, sc, b->p, b->sc)) {
        b->sc = sc;
        b->p = p;
    }
}

static struct syscall *fair_peek(struct sched_queue *q, void *target)
{
    struct fair_best b = {q, target, top_priority(q, target), sched_clock(q->s), NULL, 0};
    for (const struct sched_lane *l = q->lanes; l; l = l->next) fair_consider(&b, l->head);
    return b.sc;
}

static struct syscall *fair_pick(struct sched_queue *q, void *target)
{
    struct syscall *sc = fair_peek(q, target);
    if (sc) queue_unlink(q, sc);
    return sc;
}

/* should running r give way to waiting w; top(): the highest priority
 * waiting for a target */
static bool fair_should_preempt_top(struct sched_queue *q, struct syscall *r, struct syscall *w,
                                    int (*top_of)(struct sched_queue *, void *))
{
    const struct sched_tuning *t = &q->s->tun;
    if (r->sched_agent == w->sched_agent) return false;
    /* one slice of guaranteed progress, so two calls cannot thrash */
    if (t->time_slice_us > 0 && util_now_us() - r->sched_t_run_us < t->time_slice_us) return false;
    int top = top_of(q, w->target);
    if (r->priority > top) top = r->priority;
    int pw = eff_priority(q, w, top, sched_clock(q->s));
    if (pw != r->priority) return pw > r->priority;
    return service_of(w) + t->preempt_margin < service_of(r);
}

static bool fair_should_preempt(struct sched_queue *q, struct syscall *r, struct syscall *w)
{
    return fair_should_preempt_top(q, r, w, top_priority);
}

const struct sched_policy sched_policy_fair = {
    .name = "fair", .push = fair_push, .pick = fair_pick, .peek = fair_peek,
    .should_preempt = fair_should_preempt, .slice_expired = NULL, .lanes = true,
};

/* the reference: the same order by scanning every queued call */

static int scan_top_priority(struct sched_queue *q, void *target)
{
    int top = SYSCALL_PRIORITY_MIN;
    for (struct syscall *sc = q->head; sc; sc = sc->next)
        if ((!target || sc->target == target) && sc->priority > top) top = sc->priority;
    return top;
}

static struct syscall *scan_peek(struct sched_queue *q, void *target)
{
    struct fair_best b = {q, target, scan_top_priority(q, target), sched_clock(q->s), NULL, 0};
    for (struct syscall *sc = q->head; sc; sc = sc->next) fair_consider(&b, sc);
    return b.sc;
}

static struct syscall *scan_pick(struct sched_queue *q, void *target)
{
    struct syscall *sc = scan_peek(q, target);
    if (sc) queue_unlink(q, sc);
    return sc;
}

static bool scan_should_preempt(struct sched_queue *q, struct syscall *r, struct syscall *w)
{
    return fair_should_preempt_top(q, r, w, scan_top_priority);
}

const struct sched_policy sched_policy_fair_scan = {
    .name = "fair_scan", .push = queue_append, .pick = scan_pick, .peek = scan_peek,
    .should_preempt = scan_should_preempt, .slice_expired = NULL,
};

const struct sched_policy *sched_policy_find(const char *name)
{
    if (!name) return &sched_policy_fair;
    if (!strcmp(name, "fifo")) return &sched_policy_fifo;
    if (!strcmp(name, "rr")) return &sched_policy_rr;
    if (!strcmp(name, "fair")) return &sched_policy_fair;
    return NULL;
}

/* ---- clock ---- */

static int64_t sched_clock(const struct sched *s)
{
    return s->clock ? s->clock(s->clock_ud) : util_now_us();
}

/* the entry time of a call entering a queue now (lock held): never before
 * the previous one's, so within a lane entry times follow sched_seq */
static int64_t sched_enq_time(struct sched *s)
{
    int64_t t = sched_clock(s);
    if (t < s->t_last_enq) t = s->t_last_enq;
    s->t_last_enq = t;
    return t;
}

void sched_set_clock(struct sched *s, int64_t (*now_us)(void *ud), void *ud)
{
    pthread_mutex_lock(&s->mu);
    s->clock = now_us;
    s->clock_ud = ud;
    pthread_mutex_unlock(&s->mu);
}

/* ---- lifecycle and configuration ---- */

int sched_create(struct sched **out, const struct sched_policy *policy)
{
    *out = NULL;
    struct sched *s = calloc(1, sizeof *s);
    if (!s) return AIOS_ENOMEM;
    s->policy = policy ? policy : &sched_policy_fifo;
    s->tun.time_slice_us = 200 * 1000;
    s->tun.slice_tokens = 0;
    s->tun.aging_us = 5 * 1000 * 1000;
    s->tun.preempt_margin = 1024;
    s->tun.ms_weight = 1.0;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->tl_mu, NULL);
    s->tl = calloc(SCHED_TIMELINE_MAX, sizeof *s->tl); /* NULL: no timeline */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    for (int k = 0; k < SYSCALL_KIND__COUNT; k++) {
        pthread_cond_init(&s->cv[k], &ca);
        pthread_cond_init(&s->cv_pool[k][0], &ca);
        pthread_cond_init(&s->cv_pool[k][1], &ca);
        s->q[k].s = s;
    }
    pthread_cond_init(&s->here_cv, &ca);
    pthread_condattr_destroy(&ca);
    *out = s;
    return 0;
}

void sched_destroy(struct sched *s)
{
    if (!s) return;
    sched_shutdown(s);
    for (int k = 0; k < SYSCALL_KIND__COUNT; k++) {
        pthread_cond_destroy(&s->cv[k]);
        pthread_cond_destroy(&s->cv_pool[k][0]);
        pthread_cond_destroy(&s->cv_pool[k][1]);
    }
    pthread_cond_destroy(&s->here_cv);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->tl_mu);
    free(s->tl);
    struct sched_agent *a = s->agents;
    while (a) {
        struct sched_agent *n = a->next_all;
        while (a->lanes) {
            struct sched_lane *l = a->lanes;
            a->lanes = l->next_agent;
            assert(!l->head); /* shutdown drained every queue */
            free(l);
        }
        free(a->name);
        free(a);
        a = n;
    }
    free(s);
}

void sched_get_tuning(struct sched *s, struct sched_tuning *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->tun;
    pthread_mutex_unlock(&s->mu);
}

void sched_set_tuning(struct sched *s, const struct sched_tuning *t)
{
    pthread_mutex_lock(&s->mu);
    s->tun = *t;
    pthread_mutex_unlock(&s->mu);
}

int sched_set_agent_priority(struct sched *s, const char *agent, int priority)
{
    if (priority < SYSCALL_PRIORITY_MIN || priority > SYSCALL_PRIORITY_MAX) return AIOS_EINVAL;
    pthread_mutex_lock(&s->mu);
    struct sched_agent *a = agent_get(s, agent, true);
    if (a) {
        a->priority = priority;
        a->priority_set = true;
        a->st.priority = priority;
    }
    pthread_mutex_unlock(&s->mu);
    return a ? 0 : AIOS_ENOMEM;
}

static int cfg_num(const struct aios_config *cfg, const char *key, double lo, double hi,
                   double *out, char *err, size_t errlen)
{
    json_t *v = config_lookup(cfg, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v) || json_number_value(v) < lo || json_number_value(v) > hi) {
        snprintf(err, errlen, "%s must be a number between %g and %g", key, lo, hi);
        return AIOS_ECONFIG;
    }
    *out = json_number_value(v);
    return 0;
}

int sched_configure(struct sched *s, const void *vcfg, char *err, size_t errlen)
{
    const struct aios_config *cfg = vcfg;
    struct sched_tuning t;
    sched_get_tuning(s, &t);
    double slice_ms = (double)t.time_slice_us / 1000, aging_ms = (double)t.aging_us / 1000;
    double slice_tok = (double)t.slice_tokens;
    int rc;
    if ((rc = cfg_num(cfg, "scheduler.time_slice_ms", 0, 3600e3, &slice_ms, err, errlen))) return rc;
    if ((rc = cfg_num(cfg, "scheduler.slice_tokens", 0, 1e9, &slice_tok, err, errlen))) return rc;
    if ((rc = cfg_num(cfg, "scheduler.aging_ms", 0, 86400e3, &aging_ms, err, errlen))) return rc;
    if ((rc = cfg_num(cfg, "scheduler.preempt_margin", 0, 1e12, &t.preempt_margin, err, errlen)))
        return rc;
    if ((rc = cfg_num(cfg, "scheduler.ms_weight", 0, 1e6, &t.ms_weight, err, errlen))) return rc;
    t.time_slice_us = (int64_t)(slice_ms * 1000);
    t.aging_us = (int64_t)(aging_ms * 1000);
    t.slice_tokens = (int64_t)slice_tok;
    sched_set_tuning(s, &t);

    json_t *pr = config_lookup(cfg, "scheduler.priorities");
    if (pr && !json_is_null(pr)) {
        if (!json_is_object(pr)) {
            snprintf(err, errlen, "scheduler.priorities must be a mapping of agent name to an "
                                  "integer priority (higher runs first)");
            return AIOS_ECONFIG;
        }
        const char *name;
        json_t *v;
        json_object_foreach(pr, name, v) {
            if (!json_is_integer(v) || json_integer_value(v) < SYSCALL_PRIORITY_MIN ||
                json_integer_value(v) > SYSCALL_PRIORITY_MAX) {
                snprintf(err, errlen, "scheduler.priorities.%.100s must be an integer between %d "
                         "and %d", name, SYSCALL_PRIORITY_MIN, SYSCALL_PRIORITY_MAX);
                return AIOS_ECONFIG;
            }
            rc = sched_set_agent_priority(s, name, (int)json_integer_value(v));
            if (rc) return rc;
        }
    }
    return 0;
}

/* ---- submit / next / done ---- */

static void account_final(struct syscall *sc, void *ud);

/* a picked call leaves the queue for the running list (lock held) */
static void take_locked(struct sched *s, struct syscall *sc, int64_t now)
{
    int kind = sc->kind;
    s->n_running[kind]++;
    sc->sched_t_run_us = now;
    sc->sched_slice_tokens = 0;
    struct sched_agent *a = sc->sched_agent;
    a->n_queued--;
    if (a->n_queued_kind[kind]) a->n_queued_kind[kind]--;
    a->n_running++;
    a->n_running_kind[kind]++;
    run_link(s, sc);
}

/* a taken call starts running (no lock held) */
static void run_begin(struct syscall *sc, int64_t now)
{
    syscall_slice_begin(sc, now);
    pthread_mutex_lock(&sc->mu);
    if (!syscall_status_final(sc->status)) sc->status = SYSCALL_STATUS_RUNNING;
    pthread_mutex_unlock(&sc->mu);
}

/* lift an agent that becomes active to the least service among the active */
static void agent_activate(struct sched *s, struct sched_agent *a)
{
    if (a->n_queued + a->n_running > 0) return;
    bool any = false;
    double min = 0;
    for (struct sched_agent *x = s->agents; x; x = x->next_all) {
        if (x == a || x->n_queued + x->n_running == 0) continue;
        if (!any || x->service < min) min = x->service;
        any = true;
    }
    if (any && a->service < min) a->service = min;
}

/* Queue sc, or with `here` (a cheap read: syscall.run_here) hand it to
 * the caller at once when its kind's readers would take it next anyway:
 * no read of the kind is waiting that it could take (so it passes no one)
 * and its agent is under the kind's cap. Then it is running as if a pool
 * thread had picked it (*taken) and the caller runs it (sched_run_here):
 * no worker's wake-up, no connection suspended and resumed. */
static int submit(struct sched *s, struct syscall *sc, bool here, bool *taken)
{
    if ((unsigned)sc->kind >= SYSCALL_KIND__COUNT) return AIOS_EINVAL;
    syscall_ref(sc);
    int64_t now = util_now_us();
    /* QUEUED must be set before a worker can see the call (it sets RUNNING
     * after picking it), and sc->mu is never held with ours, so set it
     * first and undo it if the call is refused: a refused call is in no
     * queue, and nobody would ever move it out of QUEUED. */
    pthread_mutex_lock(&sc->mu);
    enum syscall_status prev = sc->status;
    sc->status = SYSCALL_STATUS_QUEUED;
    sc->t_queued_us = now;
    pthread_mutex_unlock(&sc->mu);

    pthread_mutex_lock(&s->mu);
    struct sched_agent *a = s->stopping ? NULL : agent_get(s, sc->agent, true);
    int prio = a && !sc->priority_set ? a->priority : sc->priority;
    struct sched_lane *lane = NULL;
    if (a && s->policy->lanes) lane = lane_get(a, sc->kind, sc->target, prio);
    if (!a || (s->policy->lanes && !lane)) {
        bool stopping = s->stopping;
        pthread_mutex_unlock(&s->mu);
        pthread_mutex_lock(&sc->mu);
        if (sc->status == SYSCALL_STATUS_QUEUED) sc->status = prev;
        sc->t_queued_us = 0;
        pthread_mutex_unlock(&sc->mu);
        syscall_unref(sc);
        return stopping ? AIOS_ESHUTDOWN : AIOS_ENOMEM;
    }
    sc->priority = prio;
    sc->sched_lane = lane;
    agent_activate(s, a);
    a->n_queued++;
    a->n_queued_kind[sc->kind]++;
    a->st.n_calls++;
    a->st.n_calls_kind[sc->kind]++;
    sc->sched_agent = a;
    sc->on_final = account_final;
    sc->on_final_ud = s;
    sc->sched_t_enq_us = sched_enq_time(s);
    sc->sched_seq = ++s->seq;
    s->policy->push(&s->q[sc->kind], sc);
    s->n_submitted++;
    if (here && sc->target == SCHED_READ_LANE && s->here[sc->kind].fn &&
        s->policy->peek(&s->q[sc->kind], SCHED_READ_LANE) == sc) {
        /* the one read its readers could take: take it as they would */
        struct syscall *got = s->policy->pick(&s->q[sc->kind], SCHED_READ_LANE);
        assert(got == sc);
        take_locked(s, got, now);
        s->here[sc->kind].running++;
        *taken = true;
        pthread_mutex_unlock(&s->mu);
        run_begin(sc, now);
        return 0;
    }
    /* timed waiters (engines) as before; of the pool threads one that
     * takes any call, and one reader for a read. A thread that takes
     * another call instead looks at the queue again when it is done, so
     * nothing is left waiting for good. */
    pthread_cond_broadcast(&s->cv[sc->kind]);
    wake_pool(s, sc->kind, sc->target == SCHED_READ_LANE);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int sched_submit(struct sched *s, struct syscall *sc)
{
    bool taken = false;
    return submit(s, sc, false, &taken);
}

int sched_submit_here(struct sched *s, struct syscall *sc, bool *taken)
{
    *taken = false;
    return submit(s, sc, sc->run_here, taken);
}

/* sc, taken by sched_submit_here and left unfinished by the executor
 * (it would have had to wait), goes to the pool threads as if it had been
 * queued: the slice it began is taken back (its times show one run), it
 * is queued again and a reader is woken */
static void hand_off(struct sched *s, struct syscall *sc)
{
    syscall_slice_undo(sc);
    pthread_mutex_lock(&sc->mu);
    if (!syscall_status_final(sc->status)) sc->status = SYSCALL_STATUS_QUEUED;
    pthread_mutex_unlock(&sc->mu);
    pthread_mutex_lock(&s->mu);
    bool stopping = s->stopping;
    if (!stopping) {
        run_release(s, sc);
        struct sched_agent *a = sc->sched_agent;
        a->n_queued++;
        a->n_queued_kind[sc->kind]++;
        sc->sched_t_enq_us = sched_enq_time(s);
        sc->sched_seq = ++s->seq;
        s->policy->push(&s->q[sc->kind], sc);
        wake_pool(s, sc->kind, sc->target == SCHED_READ_LANE);
    }
    pthread_mutex_unlock(&s->mu);
    if (stopping) {
        syscall_fail(sc, AIOS_ESHUTDOWN, 503, "the kernel is shutting down");
        sched_done(s, sc);
    }
}

void sched_run_here(struct sched *s, struct syscall *sc)
{
    pthread_mutex_lock(&s->mu);
    sched_exec_fn fn = s->here[sc->kind].fn;
    void *ud = s->here[sc->kind].ud;
    pthread_mutex_unlock(&s->mu);
    assert(fn); /* sched_clear_here waits for this run */
    sc->running_here = true;
    fn(sc, ud);
    sc->running_here = false;
    pthread_mutex_lock(&sc->mu);
    bool final = syscall_status_final(sc->status);
    pthread_mutex_unlock(&sc->mu);
    if (final) sched_done(s, sc);
    else hand_off(s, sc);
    pthread_mutex_lock(&s->mu);
    if (--s->here[sc->kind].running == 0) pthread_cond_broadcast(&s->here_cv);
    pthread_mutex_unlock(&s->mu);
}

void sched_set_here(struct sched *s, enum syscall_kind kind, sched_exec_fn fn, void *ud)
{
    pthread_mutex_lock(&s->mu);
    s->here[kind].fn = fn;
    s->here[kind].ud = ud;
    pthread_mutex_unlock(&s->mu);
}

void sched_clear_here(struct sched *s, enum syscall_kind kind)
{
    pthread_mutex_lock(&s->mu);
    s->here[kind].fn = NULL;
    while (s->here[kind].running > 0) pthread_cond_wait(&s->here_cv, &s->mu);
    s->here[kind].ud = NULL;
    pthread_mutex_unlock(&s->mu);
}

/* run sc (handed out by sched_next or sched_submit_here) with fn, fail it
 * if fn left it unfinished, and hand it back */
void sched_exec(struct sched *s, struct syscall *sc, sched_exec_fn fn, void *ud)
{
    fn(sc, ud);
    pthread_mutex_lock(&sc->mu);
    bool final = syscall_status_final(sc->status);
    pthread_mutex_unlock(&sc->mu);
    if (!final) {
        LOG_ERROR("sched", "%s executor left syscall %llu unfinished", syscall_kind_name(sc->kind),
                  (unsigned long long)sc->id);
        syscall_fail(sc, AIOS_EENGINE, 500, "internal error: the %s executor did not answer",
                     syscall_kind_name(sc->kind));
    }
    sched_done(s, sc);
}

struct syscall *sched_next(struct sched *s, enum syscall_kind kind, void *target, int timeout_ms)
{
    struct timespec deadline;
    if (timeout_ms >= 0) util_mono_in_ms(&deadline, timeout_ms);
    struct syscall *sc = NULL;
    int64_t now = 0;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->stopping) break;
        sc = s->policy->pick(&s->q[kind], target);
        if (sc) {
            now = util_now_us();
            take_locked(s, sc, now);
            break;
        }
        if (timeout_ms < 0 && (!target || target == SCHED_READ_LANE)) {
            int lane = target != NULL;
            s->n_idle[kind][lane]++;
            pthread_cond_wait(&s->cv_pool[kind][lane], &s->mu);
            if (s->n_waking[kind][lane] > 0) s->n_waking[kind][lane]--; /* wake_pool's */
            else s->n_idle[kind][lane]--; /* a broadcast, or woken for no reason */
        } else if (timeout_ms < 0) {
            pthread_cond_wait(&s->cv[kind], &s->mu);
        } else if (pthread_cond_timedwait(&s->cv[kind], &s->mu, &deadline) == ETIMEDOUT) {
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (!sc) return NULL;
    run_begin(sc, now);
    return sc;
}

/* What a final call consumed, read under its own lock. For workers that
 * filled no usage (the one-sequence engine), take it from the LLM result.
 * The slice the call was running in was closed when it became final. */
struct done_info {
    enum syscall_status status;
    struct syscall_usage u;
    int64_t t_wait_us, t_run_us;
};

static void read_done_info(struct syscall *sc, struct done_info *d)
{
    memset(d, 0, sizeof *d);
    pthread_mutex_lock(&sc->mu);
    d->status = sc->status;
    if (!sc->usage.filled && sc->kind == SYSCALL_KIND_LLM && sc->res &&
        d->status == SYSCALL_STATUS_DONE) {
        const struct llm_res *r = sc->res;
        sc->usage.n_prompt_computed = r->n_prompt_computed;
        sc->usage.n_prompt_reused = r->n_prompt - r->n_prompt_computed;
        sc->usage.n_gen = r->n_gen;
        if (!sc->usage.t_engine_us) sc->usage.t_engine_us = r->t_prefill_us + r->t_decode_us;
        sc->usage.filled = true;
    }
    int n = sc->n_slices < SYSCALL_MAX_SLICES ? sc->n_slices : SYSCALL_MAX_SLICES;
    for (int i = 0; i < n; i++)
        if (sc->t_slice_end_us[i] > sc->t_slice_start_us[i])
            d->t_run_us += sc->t_slice_end_us[i] - sc->t_slice_start_us[i];
    if (sc->kind != SYSCALL_KIND_LLM && sc->kind != SYSCALL_KIND_TOOL) d->t_run_us = 0;
    if (sc->kind == SYSCALL_KIND_TOOL && !sc->usage.t_tool_us) sc->usage.t_tool_us = d->t_run_us;
    if (sc->kind == SYSCALL_KIND_LLM && !sc->usage.t_engine_us) sc->usage.t_engine_us = d->t_run_us;
    d->u = sc->usage;
    d->t_wait_us = sc->t_wait_us;
    pthread_mutex_unlock(&sc->mu);
}

/* the final call into the timeline ring (no lock held on entry) */
static void timeline_record(struct sched *s, struct syscall *sc, const struct done_info *d)
{
    struct sched_call_rec r = {.id = sc->id, .kind = sc->kind, .state = SCHED_REC_FINAL,
                               .final_status = d->status, .n_gen = d->u.n_gen,
                               .n_prompt_computed = d->u.n_prompt_computed};
    snprintf(r.agent, sizeof r.agent, "%s", sc->agent ? sc->agent : "");
    int64_t now = util_now_us();
    pthread_mutex_lock(&sc->mu);
    r.t_created_us = sc->t_created_us;
    r.t_end_us = sc->t_end_us ? sc->t_end_us : now;
    r.n_slices = sc->n_slices;
    int kept = sc->n_slices < SYSCALL_MAX_SLICES ? sc->n_slices : SYSCALL_MAX_SLICES;
    for (int i = 0; i < kept; i++) {
        /* the first SCHED_REC_SLICES - 1 and the last */
        int o = i < SCHED_REC_SLICES - 1 ? i : i == kept - 1 ? SCHED_REC_SLICES - 1 : -1;
        if (o < 0) continue;
        if (o >= r.n_kept) r.n_kept = o + 1;
        r.slice_start_us[o] = sc->t_slice_start_us[i];
        r.slice_end_us[o] = sc->t_slice_end_us[i] ? sc->t_slice_end_us[i] : r.t_end_us;
    }
    pthread_mutex_unlock(&sc->mu);
    pthread_mutex_lock(&s->tl_mu);
    if (s->tl) {
        s->tl[s->tl_next] = r;
        s->tl_next = (s->tl_next + 1) % SCHED_TIMELINE_MAX;
        if (s->tl_n < SCHED_TIMELINE_MAX) s->tl_n++;
    }
    pthread_mutex_unlock(&s->tl_mu);
}

int sched_timeline(struct sched *s, int64_t since_us, struct sched_call_rec **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    /* in flight: counted and copied under the scheduler's lock */
    pthread_mutex_lock(&s->mu);
    size_t n_live = 0;
    for (int k = 0; k < SYSCALL_KIND__COUNT; k++) {
        n_live += s->q[k].n;
        for (struct syscall *sc = s->running[k]; sc; sc = sc->sched_run_next) n_live++;
    }
    struct sched_call_rec *live = n_live ? calloc(n_live, sizeof *live) : NULL;
    size_t nl = 0;
    for (int k = 0; k < SYSCALL_KIND__COUNT && (live || !n_live); k++) {
        for (int pass = 0; pass < 2; pass++) {
            struct syscall *sc = pass ? s->running[k] : s->q[k].head;
            for (; sc && nl < n_live; sc = pass ? sc->sched_run_next : sc->next) {
                struct sched_call_rec *r = &live[nl++];
                r->id = sc->id;
                r->kind = sc->kind;
                r->state = pass ? SCHED_REC_RUNNING : SCHED_REC_QUEUED;
                /* agent and id never change after submit; times are ours */
                snprintf(r->agent, sizeof r->agent, "%s", sc->agent ? sc->agent : "");
                r->t_created_us = sc->t_created_us;
                r->t_since_us = pass ? sc->sched_t_run_us : sc->sched_t_enq_us;
            }
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (n_live && !live) return AIOS_ENOMEM;

    pthread_mutex_lock(&s->tl_mu);
    size_t total = s->tl_n + nl;
    struct sched_call_rec *all = calloc(total ? total : 1, sizeof *all);
    size_t o = 0;
    if (all) {
        size_t first = (s->tl_next + SCHED_TIMELINE_MAX - s->tl_n) % SCHED_TIMELINE_MAX;
        for (size_t i = 0; i < s->tl_n; i++) {
            const struct sched_call_rec *r = &s->tl[(first + i) % SCHED_TIMELINE_MAX];
            if (r->t_end_us >= since_us) all[o++] = *r;
        }
    }
    pthread_mutex_unlock(&s->tl_mu);
    if (!all) {
        free(live);
        return AIOS_ENOMEM;
    }
    if (nl) memcpy(all + o, live, nl * sizeof *live);
    free(live);
    *out = all;
    *n = o + nl;
    return 0;
}

/* on_final hook: the call just became final (worker thread, or the thread
 * that failed it); record it before its waiter is woken */
static void account_final(struct syscall *sc, void *ud)
{
    struct sched *s = ud;
    struct done_info d;
    read_done_info(sc, &d);
    pthread_mutex_lock(&s->mu);
    run_release(s, sc);
    struct sched_agent *a = sc->sched_agent;
    if (a) {
        if (!sc->sched_charged && sc->kind == SYSCALL_KIND_LLM)
            a->service += (double)(d.u.n_prompt_computed + d.u.n_gen);
        if (sc->kind == SYSCALL_KIND_LLM && d.u.t_engine_us > sc->sched_charged_us)
            a->service += (double)(d.u.t_engine_us - sc->sched_charged_us) / 1000.0 *
                          s->tun.ms_weight;
        struct sched_agent_stats *st = &a->st;
        if (d.status == SYSCALL_STATUS_DONE) st->n_done++;
        else if (d.status == SYSCALL_STATUS_CANCELLED) st->n_cancelled++;
        else st->n_error++;
        double pp = 0, pc = 0;
        if (sc->kind == SYSCALL_KIND_LLM && sc->target && s->price_fn) {
            s->price_fn(sc->target, &pp, &pc);
            st->cost += (double)(d.u.n_prompt_computed + d.u.n_prompt_reused) * pp +
                        (double)d.u.n_gen * pc;
        }
        st->n_prompt_computed += d.u.n_prompt_computed;
        st->n_prompt_reused += d.u.n_prompt_reused;
        st->n_gen += d.u.n_gen;
        st->t_engine_us += sc->kind == SYSCALL_KIND_LLM ? d.u.t_engine_us : 0;
        st->t_tool_us += d.u.t_tool_us;
        st->t_queue_us += d.t_wait_us;
        st->n_ctx_switches += d.u.n_ctx_switches;
    }
    void (*hook)(struct syscall *, void *) = s->final_hook;
    void *hook_ud = s->final_hook_ud;
    pthread_mutex_unlock(&s->mu);
    timeline_record(s, sc, &d);
    if (hook) hook(sc, hook_ud); /* e.g. the access manager's token budgets */
}

void sched_set_final_hook(struct sched *s, void (*fn)(struct syscall *sc, void *ud), void *ud)
{
    pthread_mutex_lock(&s->mu);
    s->final_hook = fn;
    s->final_hook_ud = ud;
    pthread_mutex_unlock(&s->mu);
}

void sched_set_price_fn(struct sched *s,
                        void (*fn)(const void *target, double *prompt, double *completion))
{
    pthread_mutex_lock(&s->mu);
    s->price_fn = fn;
    pthread_mutex_unlock(&s->mu);
}

void sched_set_agent_cap(struct sched *s, enum syscall_kind kind, int cap)
{
    assert((unsigned)kind < SYSCALL_KIND__COUNT);
    pthread_mutex_lock(&s->mu);
    s->agent_cap[kind] = cap > 0 ? cap : 0;
    wake_all(s, kind);
    pthread_mutex_unlock(&s->mu);
}

void sched_done(struct sched *s, struct syscall *sc)
{
    syscall_slice_end(sc, util_now_us());
    pthread_mutex_lock(&s->mu);
    s->n_finished++;
    run_release(s, sc); /* normally done already when it became final */
    pthread_mutex_unlock(&s->mu);
    syscall_unref(sc);
}

/* ---- the engine's side ---- */

struct syscall *sched_peek(struct sched *s, enum syscall_kind kind, void *target)
{
    if ((unsigned)kind >= SYSCALL_KIND__COUNT) return NULL;
    pthread_mutex_lock(&s->mu);
    struct syscall *sc = s->stopping ? NULL : s->policy->peek(&s->q[kind], target);
    if (sc) syscall_ref(sc);
    pthread_mutex_unlock(&s->mu);
    return sc;
}

void sched_charge(struct sched *s, struct syscall *sc, int64_t n_tokens, int64_t t_us)
{
    pthread_mutex_lock(&s->mu);
    if (n_tokens > 0) sc->sched_charged = true;
    sc->sched_slice_tokens += n_tokens;
    sc->sched_charged_us += t_us;
    struct sched_agent *a = sc->sched_agent;
    if (a) a->service += (double)n_tokens + (double)t_us / 1000.0 * s->tun.ms_weight;
    pthread_mutex_unlock(&s->mu);
}

static bool others_waiting(struct sched *s, struct syscall *sc)
{
    return s->policy->peek(&s->q[sc->kind], sc->target) != NULL;
}

bool sched_slice_expired(struct sched *s, struct syscall *running)
{
    pthread_mutex_lock(&s->mu);
    bool r = s->policy->slice_expired && others_waiting(s, running) &&
             s->policy->slice_expired(&s->q[running->kind], running);
    pthread_mutex_unlock(&s->mu);
    return r;
}

bool sched_should_preempt(struct sched *s, struct syscall *running, struct syscall *waiting)
{
    if (!running || !waiting || running == waiting) return false;
    pthread_mutex_lock(&s->mu);
    bool r = s->policy->should_preempt &&
             s->policy->should_preempt(&s->q[running->kind], running, waiting);
    pthread_mutex_unlock(&s->mu);
    return r;
}

struct syscall *sched_pick_victim(struct sched *s, struct syscall *const *running, size_t n,
                                  struct syscall *waiting)
{
    if (!waiting) return NULL;
    struct syscall *victim = NULL;
    pthread_mutex_lock(&s->mu);
    if (s->policy->should_preempt) {
        for (size_t i = 0; i < n; i++) {
            struct syscall *r = running[i];
            if (!r || r == waiting) continue;
            if (!s->policy->should_preempt(&s->q[r->kind], r, waiting)) continue;
            if (!victim || r->priority < victim->priority ||
                (r->priority == victim->priority && service_of(r) > service_of(victim)))
                victim = r;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return victim;
}

int sched_preempt(struct sched *s, struct syscall *sc)
{
    int64_t now = util_now_us();
    syscall_slice_end(sc, now);
    pthread_mutex_lock(&sc->mu);
    bool final = syscall_status_final(sc->status);
    if (!final) {
        sc->status = SYSCALL_STATUS_SUSPENDED;
        sc->t_queued_us = now;
        sc->usage.n_ctx_switches++;
    }
    pthread_mutex_unlock(&sc->mu);
    if (final) {
        sched_done(s, sc);
        return 0;
    }
    pthread_mutex_lock(&s->mu);
    bool stopping = s->stopping;
    if (!stopping) {
        run_release(s, sc);
        struct sched_agent *a = sc->sched_agent;
        if (a) a->n_queued++;
        if (a) a->n_queued_kind[sc->kind]++;
        sc->sched_t_expect_end_us = 0;
        sc->sched_t_enq_us = sched_enq_time(s);
        sc->sched_seq = ++s->seq;
        s->n_preempted++;
        s->policy->push(&s->q[sc->kind], sc);
        wake_all(s, sc->kind);
    }
    pthread_mutex_unlock(&s->mu);
    if (stopping) {
        syscall_fail(sc, AIOS_ESHUTDOWN, 503, "the kernel is shutting down");
        sched_done(s, sc);
        return AIOS_ESHUTDOWN;
    }
    return 0;
}

size_t sched_running_calls(struct sched *s, enum syscall_kind kind, void *target,
                           struct syscall **out, size_t cap)
{
    if ((unsigned)kind >= SYSCALL_KIND__COUNT) return 0;
    size_t n = 0;
    pthread_mutex_lock(&s->mu);
    struct syscall *last = s->running[kind];
    while (last && last->sched_run_next) last = last->sched_run_next;
    for (struct syscall *sc = last; sc && n < cap; sc = sc->sched_run_prev) {
        if (target && sc->target != target) continue;
        syscall_ref(sc);
        out[n++] = sc;
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

void sched_note_switch(struct sched *s, struct syscall *sc)
{
    pthread_mutex_lock(&s->mu);
    sc->sched_t_run_us = util_now_us();
    sc->sched_slice_tokens = 0;
    s->n_preempted++;
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_lock(&sc->mu);
    sc->usage.n_ctx_switches++;
    pthread_mutex_unlock(&sc->mu);
}

void sched_attach_preemptor(struct sched *s, struct sched_preemptor *p)
{
    pthread_mutex_lock(&s->mu);
    s->pre = p;
    pthread_mutex_unlock(&s->mu);
}

const struct sched_policy *sched_get_policy(struct sched *s)
{
    return s->policy; /* immutable after create */
}

void sched_set_agent_kv(struct sched *s, const char *agent, int64_t bytes)
{
    pthread_mutex_lock(&s->mu);
    struct sched_agent *a = agent_get(s, agent, true);
    if (a) a->st.kv_bytes = bytes;
    pthread_mutex_unlock(&s->mu);
}

void sched_set_expected_end(struct sched *s, struct syscall *sc, int64_t t_end_us)
{
    pthread_mutex_lock(&s->mu);
    sc->sched_t_expect_end_us = t_end_us;
    pthread_mutex_unlock(&s->mu);
}

/* When agent a is expected to make its next LLM call (see sched.h; lock
 * held): now with one queued, else the soonest expected end of its tool
 * calls in flight (one without an estimate ranks after every estimated
 * one), else -1. */
static int64_t agent_next_llm(struct sched *s, const struct sched_agent *a, int64_t now)
{
    if (!a) return -1;
    if (a->n_queued_kind[SYSCALL_KIND_LLM] > 0) return now;
    if (a->n_running_kind[SYSCALL_KIND_TOOL] <= 0) return -1;
    int64_t best = -1;
    for (const struct syscall *sc = s->running[SYSCALL_KIND_TOOL]; sc; sc = sc->sched_run_next) {
        if (sc->sched_agent != a) continue;
        int64_t t = sc->sched_t_expect_end_us > 0 ? sc->sched_t_expect_end_us : SCHED_ETA_UNKNOWN;
        if (t < now) t = now; /* overdue: any moment now */
        if (best < 0 || t < best) best = t;
    }
    return best;
}

void sched_agents_next_llm(struct sched *s, const char *const *agents, size_t n, int64_t *out)
{
    int64_t now = util_now_us();
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < n; i++)
        out[i] = agents[i] ? agent_next_llm(s, agent_get(s, agents[i], false), now) : -1;
    pthread_mutex_unlock(&s->mu);
}

/* ---- shutdown and stats ---- */

void sched_shutdown(struct sched *s)
{
    struct syscall *drained = NULL;
    /* the driver calls into the scheduler: join it without our lock */
    pthread_mutex_lock(&s->mu);
    struct sched_preemptor *pre = s->pre;
    s->pre = NULL;
    pthread_mutex_unlock(&s->mu);
    if (pre) sched_preemptor_stop(pre);
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    for (int k = 0; k < SYSCALL_KIND__COUNT; k++) {
        struct syscall *sc;
        while ((sc = s->q[k].head)) {
            queue_unlink(&s->q[k], sc);
            struct sched_agent *a = sc->sched_agent;
            if (a && a->n_queued) a->n_queued--;
            if (a && a->n_queued_kind[k]) a->n_queued_kind[k]--;
            sc->next = drained;
            drained = sc;
        }
        wake_all(s, k);
    }
    pthread_mutex_unlock(&s->mu);
    while (drained) {
        struct syscall *sc = drained;
        drained = sc->next;
        sc->next = NULL;
        syscall_fail(sc, AIOS_ESHUTDOWN, 503, "the kernel is shutting down");
        syscall_unref(sc);
    }
}

bool sched_stopping(struct sched *s)
{
    pthread_mutex_lock(&s->mu);
    bool r = s->stopping;
    pthread_mutex_unlock(&s->mu);
    return r;
}

void sched_get_stats(struct sched *s, struct sched_stats *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&s->mu);
    for (int k = 0; k < SYSCALL_KIND__COUNT; k++) {
        out->n_queued[k] = s->q[k].n;
        out->n_running[k] = s->n_running[k];
    }
    out->n_submitted = s->n_submitted;
    out->n_finished = s->n_finished;
    out->n_preempted = s->n_preempted;
    out->policy = s->policy->name;
    pthread_mutex_unlock(&s->mu);
}

static void fill_stats(const struct sched_agent *a, struct sched_agent_stats *o)
{
    *o = a->st;
    o->priority = a->priority;
    o->n_queued = a->n_queued;
    o->n_running = a->n_running;
    o->service = a->service;
}

int sched_agent_stats(struct sched *s, const char *agent, struct sched_agent_stats *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&s->mu);
    struct sched_agent *a = agent_get(s, agent, false);
    if (a) fill_stats(a, out);
    pthread_mutex_unlock(&s->mu);
    return a ? 0 : AIOS_ENOTFOUND;
}

int sched_all_agent_stats(struct sched *s, struct sched_agent_stats **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&s->mu);
    size_t cnt = 0;
    for (struct sched_agent *a = s->agents; a; a = a->next_all) cnt++;
    struct sched_agent_stats *arr = calloc(cnt ? cnt : 1, sizeof *arr);
    if (arr) {
        size_t i = cnt;
        /* the list is newest first; report in first-seen order */
        for (struct sched_agent *a = s->agents; a; a = a->next_all) fill_stats(a, &arr[--i]);
    }
    pthread_mutex_unlock(&s->mu);
    if (!arr) return AIOS_ENOMEM;
    *out = arr;
    *n = cnt;
    return 0;
}
