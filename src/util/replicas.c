/* Replica health: least-outstanding choice and failover timing for a set
 * of upstream servers.
 *
 * Used by the remote model cores (a model served by several vLLM servers)
 * and by the cluster (peer kernels that hold agents' conversations). Each
 * replica counts the calls outstanding on it; a call goes to the one with
 * the fewest among those up (replicas_pick), or, where the caller has a
 * preferred one (KV affinity), to that one while it is up and not
 * overloaded (replicas_usable). A replica that fails (refused connection,
 * connect timeout, 5xx: the caller decides) is out for down_s seconds,
 * doubling with each failure in a row up to MAX_DOWN_S; when its time is up
 * the next call tries it again, and its first success makes it up.
 *
 * Locking: one mutex per set, a leaf: held only to read or change the
 * counters, never while calling out (logging happens after unlocking). */
#include "util/replicas.h"

#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>

#define MAX_DOWN_S 60

int replicas_init(struct replica_set *s, size_t n, int down_s, const char *what,
                  const char *const *names)
{
    *s = (struct replica_set){.n = n, .down_s = down_s > 0 ? down_s : 1, .what = what,
                              .names = names};
    s->h = calloc(n ? n : 1, sizeof *s->h);
    if (!s->h) return AIOS_ENOMEM;
    pthread_mutex_init(&s->mu, NULL);
    return 0;
}

void replicas_destroy(struct replica_set *s)
{
    if (!s->h) return;
    pthread_mutex_destroy(&s->mu);
    free(s->h);
    s->h = NULL;
}

int replicas_pick(struct replica_set *s, int avoid)
{
    int64_t now = util_now_us();
    int best = -1, best_out = 0;
    pthread_mutex_lock(&s->mu);
    for (size_t k = 0; k < s->n; k++) {
        int i = (int)((s->rr + k) % s->n);
        struct replica_health *r = &s->h[i];
        if (r->t_down_until_us > now) continue;
        if (i == avoid && s->n > 1) continue;
        if (best < 0 || r->n_outstanding < best_out) {
            best = i;
            best_out = r->n_outstanding;
        }
    }
    if (best < 0 && avoid >= 0 && s->h[avoid].t_down_until_us <= now) best = avoid;
    if (best < 0) { /* all down: the one back soonest is probed */
        for (size_t i = 0; i < s->n; i++)
            if (best < 0 || s->h[i].t_down_until_us < s->h[best].t_down_until_us) best = (int)i;
    }
    s->rr++;
    pthread_mutex_unlock(&s->mu);
    return best;
}

bool replicas_other_up(struct replica_set *s, int except)
{
    int64_t now = util_now_us();
    bool up = false;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n; i++)
        if ((int)i != except && s->h[i].t_down_until_us <= now) up = true;
    pthread_mutex_unlock(&s->mu);
    return up;
}

bool replicas_usable(struct replica_set *s, size_t i, int max_outstanding)
{
    if (i >= s->n) return false;
    int64_t now = util_now_us();
    pthread_mutex_lock(&s->mu);
    bool ok = s->h[i].t_down_until_us <= now &&
              (max_outstanding <= 0 || s->h[i].n_outstanding < max_outstanding);
    pthread_mutex_unlock(&s->mu);
    return ok;
}

void replicas_begin(struct replica_set *s, size_t i)
{
    pthread_mutex_lock(&s->mu);
    struct replica_health *r = &s->h[i];
    r->n_sent++;
    r->n_outstanding++;
    if (r->n_outstanding > r->max_outstanding) r->max_outstanding = r->n_outstanding;
    pthread_mutex_unlock(&s->mu);
}

void replicas_end(struct replica_set *s, size_t i, bool ok, bool mark_down, const char *why)
{
    struct replica_health *r = &s->h[i];
    bool went_down = false, came_up = false;
    int down_s = 0;
    pthread_mutex_lock(&s->mu);
    if (r->n_outstanding > 0) r->n_outstanding--;
    if (ok) {
        r->n_ok++;
        came_up = r->n_consec_fail > 0 && r->t_down_until_us;
        r->n_consec_fail = 0;
        r->t_down_until_us = 0;
    } else {
        r->n_failed++;
        if (why) snprintf(r->last_error, sizeof r->last_error, "%s", why);
        if (mark_down) {
            r->n_consec_fail++;
            down_s = s->down_s;
            for (int k = 1; k < r->n_consec_fail && down_s < MAX_DOWN_S; k++) down_s *= 2;
            if (down_s > MAX_DOWN_S) down_s = MAX_DOWN_S;
            r->t_down_until_us = util_now_us() + (int64_t)down_s * 1000000;
            went_down = true;
        }
    }
    pthread_mutex_unlock(&s->mu);
    const char *name = s->names ? s->names[i] : "?";
    if (went_down)
        LOG_WARN("replicas", "%s: %s is down for %d s: %s", s->what, name, down_s, why ? why : "");
    if (came_up) LOG_INFO("replicas", "%s: %s is up again", s->what, name);
}

void replicas_release(struct replica_set *s, size_t i)
{
    pthread_mutex_lock(&s->mu);
    if (s->h[i].n_outstanding > 0) s->h[i].n_outstanding--;
    pthread_mutex_unlock(&s->mu);
}

void replicas_describe(struct replica_set *s, size_t i, json_t *o)
{
    int64_t now = util_now_us();
    pthread_mutex_lock(&s->mu);
    struct replica_health r = s->h[i];
    pthread_mutex_unlock(&s->mu);
    bool up = r.t_down_until_us <= now;
    json_object_set_new(o, "up", json_boolean(up));
    json_object_set_new(o, "outstanding", json_integer(r.n_outstanding));
    json_object_set_new(o, "max_outstanding", json_integer(r.max_outstanding));
    json_object_set_new(o, "sent", json_integer((json_int_t)r.n_sent));
    json_object_set_new(o, "ok", json_integer((json_int_t)r.n_ok));
    json_object_set_new(o, "failed", json_integer((json_int_t)r.n_failed));
    if (!up) json_object_set_new(o, "retry_in_s", json_real((double)(r.t_down_until_us - now) / 1e6));
    if (r.last_error[0]) json_object_set_new(o, "last_error", json_string(r.last_error));
}
