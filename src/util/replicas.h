/* Health and load of a set of upstream servers (replicas), shared by the
 * remote model cores (src/llm/remote.c: replicas of one model) and the
 * cluster's peer kernels (src/cluster: KV affinity). See replicas.c. */
#ifndef AIOS_UTIL_REPLICAS_H
#define AIOS_UTIL_REPLICAS_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* one replica's counters (guarded by the set's mutex) */
struct replica_health {
    int n_outstanding;   /* calls sent and not ended */
    int max_outstanding; /* the most there ever were */
    uint64_t n_sent, n_ok, n_failed;
    int n_consec_fail;
    int64_t t_down_until_us; /* 0 (or past): up */
    char last_error[256];
};

struct replica_set {
    pthread_mutex_t mu; /* a leaf lock: nothing is called while it is held */
    struct replica_health *h;
    size_t n;
    int down_s;         /* first time out after a failure; doubles, at most 60 s */
    unsigned rr;        /* rotates ties */
    const char *what;   /* for log lines, e.g. "model qwen" (borrowed) */
    const char *const *names; /* replica i's name in log lines (borrowed) */
};

/* n > 0 replicas, all up. 0 or AIOS_ENOMEM. */
int replicas_init(struct replica_set *s, size_t n, int down_s, const char *what,
                  const char *const *names);
void replicas_destroy(struct replica_set *s);

/* The replica a call should go to: the one with the fewest outstanding
 * calls among those up (ties rotate), other than `avoid` (-1: none) when
 * another is up; when every one is down, the one back soonest (the call is
 * the probe). */
int replicas_pick(struct replica_set *s, int avoid);
/* is some replica other than `except` up now? */
bool replicas_other_up(struct replica_set *s, int except);
/* is replica i up, with fewer than max_outstanding calls outstanding
 * (max_outstanding <= 0: no limit)? */
bool replicas_usable(struct replica_set *s, size_t i, int max_outstanding);
/* a call was sent to replica i */
void replicas_begin(struct replica_set *s, size_t i);
/* a call to replica i ended: ok (up again), or failed (why: kept as
 * last_error); mark_down: the replica is out for down_s, doubling with
 * every failure in a row */
void replicas_end(struct replica_set *s, size_t i, bool ok, bool mark_down, const char *why);
/* a call to replica i ended without a verdict (cancelled, shut down) */
void replicas_release(struct replica_set *s, size_t i);
/* replica i's counters into o: up, outstanding, max_outstanding, sent, ok,
 * failed, retry_in_s (when down), last_error (when any) */
void replicas_describe(struct replica_set *s, size_t i, json_t *o);

#endif
