/* Token budgets of privilege groups: how many tokens an agent may spend
 * per model, optionally per time window.
 *
 * Config (a group of access.groups):
 *   token_budgets:
 *     aios-tiny: 5000                          # tokens since the kernel started
 *     "*": {tokens: 20000, window_s: 3600}     # each other model, per hour
 * Each (agent, model) pair has its own counter; "*" is the rule of every
 * model the group does not name. A window is fixed: it starts with the
 * first call after the previous one ran out and lasts window_s seconds.
 *
 * What counts: every prompt token the model processed for the call
 * (computed, or reused from a retained KV state: the count does not depend
 * on cache luck) plus every generated token. The numbers are the
 * scheduler's (sc->usage as sched.c's on_final accounting records it, the
 * same that /agents/{id}/stats and /metrics show): the scheduler calls
 * acc_budget_on_final for each finished call, nothing is counted twice.
 *
 * Admission (acc_budget_admit, HTTP thread, before the call is queued):
 * the call reserves what it can cost at most, its prompt tokens (exact
 * for llama.cpp models, which tokenized it in prepare(); bytes/4 for remote
 * ones) plus max_tokens. It is refused with 429 when used + reserved (by
 * calls still running) + this reservation would pass the limit. A call
 * without max_tokens gets max_tokens = what is left of the budget (it is
 * refused when not even one token is left). When the call ends its
 * reservation is released and its actual tokens are charged, so the limit
 * is never passed. Budgets apply to calls made with an agent token (the
 * operator's calls are charged to the agent they name but never refused).
 * Counters live in memory and are saved to the access store (budget_use)
 * by the access manager's background thread (approve.c, every few
 * seconds when changed, and at stop), so a restart keeps what was used
 * (at most the last few seconds of usage are lost in a crash). The final
 * hook runs on engine threads and never touches the disk.
 *
 * Several kernels (a shared store, PostgreSQL): the counters are the
 * database's, not the kernel's. Admission is one transaction on the
 * agent's row (SELECT ... FOR UPDATE: roll the window, check used +
 * reserved + this call against the limit, add the reservation), so the
 * limit holds over every kernel. A call's end (release its reservation,
 * charge its tokens) is queued by the final hook, which must not wait on
 * the database on an engine thread, and applied by the access manager's
 * thread within SHARED_REFRESH_MS, or at once before an admission or a
 * budget report on this kernel (which therefore see their own calls).
 * Until then the call's reservation still counts, so the limit is never
 * passed, only approached late. A reservation is a row held by the kernel
 * that admitted the call (acc_store_pg.c, acc_budget_resv): when that
 * kernel dies (killed with calls running), its reservations stop counting
 * once its lease (state.lease_s) runs out and any kernel's next beat
 * deletes them, so the budget is whole again (docs/postgres.md).
 *
 * Locks: m->bmu guards uses and resv; a leaf lock, never held with another
 * (the audit queue's lock is taken after releasing it). */
#include "access/acc_int.h"

#include "kernel/syscall.h"
#include "llm/core.h"
#include "util/err.h"
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct acc_budget_use {
    struct acc_budget_use *next;
    char agent[ACC_NAME_MAX], model[ACC_NAME_MAX];
    int64_t used, reserved; /* in the current window */
    int64_t used_total;     /* since the kernel started */
    double window_start;
    int64_t n_calls, n_denied;
    bool dirty; /* changed since the last save */
};

struct acc_budget_resv {
    struct acc_budget_resv *next;
    uint64_t sc_id;
    struct acc_budget_use *u; /* NULL with a shared store */
    int64_t amount;
    /* shared store: the row and rule, and the reservation's own row */
    char agent[ACC_NAME_MAX], model[ACC_NAME_MAX];
    int64_t window_s, resv_id;
};

int acc_budget_config(json_t *group, const char *gname, char *err, size_t errlen)
{
    json_t *b = json_object_get(group, "token_budgets");
    if (!b) return 0;
    if (!json_is_object(b)) {
        snprintf(err, errlen, "access.groups.%s.token_budgets must be a mapping of model name (or "
                 "\"*\") to a number of tokens or {tokens: N, window_s: S}", gname);
        return AIOS_ECONFIG;
    }
    const char *model;
    json_t *v;
    json_object_foreach(b, model, v) {
        json_t *tok = json_is_object(v) ? json_object_get(v, "tokens") : v;
        json_t *win = json_is_object(v) ? json_object_get(v, "window_s") : NULL;
        bool ok = json_is_integer(tok) && json_integer_value(tok) >= 0 &&
                  (!win || (json_is_integer(win) && json_integer_value(win) >= 1 &&
                            json_integer_value(win) <= 366 * 86400));
        if (ok && json_is_object(v)) {
            const char *k;
            json_t *x;
            json_object_foreach(v, k, x) if (strcmp(k, "tokens") && strcmp(k, "window_s")) ok = false;
        }
        if (!ok) {
            snprintf(err, errlen, "access.groups.%s.token_budgets.%s must be a number of tokens "
                     "(>= 0) or {tokens: N, window_s: S} with S from 1 to 31622400", gname, model);
            return AIOS_ECONFIG;
        }
    }
    return 0;
}

/* the group's rule for model: true with *limit and *window_s (0: none) */
static bool rule_for(json_t *grp, const char *model, int64_t *limit, int64_t *window_s)
{
    json_t *b = json_object_get(grp, "token_budgets");
    json_t *v = json_object_get(b, model);
    if (!v) v = json_object_get(b, "*");
    if (!v) return false;
    json_t *tok = json_is_object(v) ? json_object_get(v, "tokens") : v;
    json_t *win = json_is_object(v) ? json_object_get(v, "window_s") : NULL;
    *limit = json_integer_value(tok);
    *window_s = win ? json_integer_value(win) : 0;
    return true;
}

/* bmu held */
static struct acc_budget_use *use_get(struct acc_mgr *m, const char *agent, const char *model,
                                      double now)
{
    for (struct acc_budget_use *u = m->uses; u; u = u->next)
        if (!strcmp(u->agent, agent) && !strcmp(u->model, model)) return u;
    struct acc_budget_use *u = calloc(1, sizeof *u);
    if (!u) return NULL;
    snprintf(u->agent, sizeof u->agent, "%s", agent);
    snprintf(u->model, sizeof u->model, "%s", model);
    u->window_start = now;
    u->next = m->uses;
    m->uses = u;
    return u;
}

/* bmu held: start a new window when the current one is over */
static void use_roll(struct acc_budget_use *u, int64_t window_s, double now)
{
    if (window_s > 0 && now >= u->window_start + (double)window_s) {
        u->window_start = now;
        u->used = 0;
    }
}

static int64_t prompt_estimate(const struct llm_req *req)
{
    if (req->n_tokens > 0) return req->n_tokens;
    size_t bytes = 0;
    for (size_t i = 0; i < req->n_msgs; i++)
        bytes += (req->msgs[i].content ? strlen(req->msgs[i].content) : 0) + 16;
    return (int64_t)(bytes / 4) + 1;
}

int acc_budget_admit(struct acc_mgr *m, struct syscall *sc, struct acc_decision *d)
{
    if (!m || sc->kind != SYSCALL_KIND_LLM || !sc->target || !sc->agent) return 0;
    const char *gname = NULL;
    json_t *grp = acc_group_of(m, sc->agent, &gname);
    int64_t limit, window_s;
    const char *model = ((struct llm_core *)sc->target)->name;
    if (!grp || !rule_for(grp, model, &limit, &window_s)) return 0;
    struct llm_req *req = sc->req;
    int64_t prompt = prompt_estimate(req), gen = req->p.max_tokens;
    double now = acc_wall_s();

    struct acc_budget_resv *rv = calloc(1, sizeof *rv);
    if (!rv) {
        acc_refuse_plain(d, 500, "server_error", "out of memory");
        return -1;
    }
    int64_t used, reserved, need;
    double resets;
    bool ok;
    if (m->shared) {
        /* one transaction on the database's row (see the top) */
        acc_budget_flush(m);
        struct acc_budget_ask q = {.agent = sc->agent, .model = model, .kernel = m->kernel_id,
                                   .limit = limit,
                                   .window_s = window_s, .prompt = prompt, .gen = gen, .now = now};
        struct acc_budget_answer a;
        char err[512] = "";
        if (m->sops->budget_reserve(m->store, &q, &a, err, sizeof err)) {
            LOG_ERROR("access", "%s", err);
            free(rv);
            acc_refuse_plain(d, 503, "server_error", "the token budget cannot be checked: the "
                             "state database is unavailable; try again");
            return -1;
        }
        ok = a.ok;
        need = a.need;
        used = a.used;
        reserved = a.reserved;
        resets = window_s > 0 ? a.window_start + (double)window_s : 0;
        if (ok) {
            if (gen <= 0) {
                int64_t cap = need - prompt;
                req->p.max_tokens = cap > 1000000000 ? 1000000000 : (int)cap;
            }
            rv->sc_id = sc->id;
            rv->amount = need;
            rv->resv_id = a.resv_id;
            snprintf(rv->agent, sizeof rv->agent, "%s", sc->agent);
            snprintf(rv->model, sizeof rv->model, "%s", model);
            rv->window_s = window_s;
            pthread_mutex_lock(&m->bmu);
            rv->next = m->resv;
            m->resv = rv;
            pthread_mutex_unlock(&m->bmu);
            return 0;
        }
        free(rv);
        goto refuse;
    }
    pthread_mutex_lock(&m->bmu);
    struct acc_budget_use *u = use_get(m, sc->agent, model, now);
    if (!u) {
        pthread_mutex_unlock(&m->bmu);
        free(rv);
        acc_refuse_plain(d, 500, "server_error", "out of memory");
        return -1;
    }
    use_roll(u, window_s, now);
    int64_t left = limit - u->used - u->reserved;
    need = gen > 0 ? prompt + gen : prompt + 1;
    ok = need <= left;
    if (ok) {
        if (gen <= 0) { /* no max_tokens: what is left of the budget */
            int64_t cap = left - prompt;
            req->p.max_tokens = cap > 1000000000 ? 1000000000 : (int)cap;
            need = left;
        }
        u->reserved += need;
        u->n_calls++;
        u->dirty = true;
        rv->sc_id = sc->id;
        rv->u = u;
        rv->amount = need;
        rv->next = m->resv;
        m->resv = rv;
    } else {
        u->n_denied++;
        u->dirty = true;
    }
    used = u->used;
    reserved = u->reserved;
    resets = window_s > 0 ? u->window_start + (double)window_s : 0;
    pthread_mutex_unlock(&m->bmu);
    if (ok) return 0;
    free(rv);
refuse:;

    char msg[768], win[96] = "";
    if (window_s > 0)
        snprintf(win, sizeof win, " per %lld s (the window resets in %.0f s)",
                 (long long)window_s, resets - now > 0 ? resets - now : 0);
    snprintf(msg, sizeof msg,
             "token budget exceeded: agent '%s' (group '%s') may use %lld tokens of model '%s'%s; "
             "used %lld, %lld reserved by running calls, and this call needs up to %lld (%lld "
             "prompt + %s); lower max_tokens, wait, or ask the operator to raise "
             "access.groups.%s.token_budgets",
             sc->agent, gname, (long long)limit, model, win, (long long)used, (long long)reserved,
             (long long)need, (long long)prompt,
             gen > 0 ? "max_tokens" : "1 generated", gname);
    char res[300];
    snprintf(res, sizeof res, "budget:%s", model);
    acc_refuse(m, d, 429, "insufficient_quota", sc->agent, sc->id, res, "llm", "%s", msg);
    LOG_INFO("access", "%s", msg);
    json_t *e = json_pack("{s:{s:s,s:s,s:s,s:{s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I}}}", "error",
                          "message", msg, "type", "insufficient_quota", "code",
                          "token_budget_exceeded", "budget", "agent", sc->agent, "group", gname,
                          "model", model, "limit", (json_int_t)limit, "used", (json_int_t)used,
                          "reserved", (json_int_t)reserved, "requested", (json_int_t)need,
                          "window_s", (json_int_t)window_s);
    if (e && window_s > 0)
        json_object_set_new(json_object_get(json_object_get(e, "error"), "budget"), "resets_at",
                            json_real(resets));
    d->detail = e; /* NULL: the plain 429 */
    return -1;
}

/* bmu held: queue a call's end for the database (shared store). Never
 * waits: when the queue cannot grow, the end is lost and its reservation
 * stays counted (errs on the side of the limit). */
static void settle_push(struct acc_mgr *m, const char *agent, const char *model, int64_t window_s,
                        int64_t resv_id, int64_t n, int64_t calls_delta, double now)
{
    if (m->n_settles == m->cap_settles) {
        size_t nc = m->cap_settles ? m->cap_settles * 2 : 32;
        struct acc_budget_settle *x = realloc(m->settles, nc * sizeof *x);
        if (!x) {
            LOG_ERROR("access", "out of memory: a call's tokens are not charged to %s", agent);
            return;
        }
        m->settles = x;
        m->cap_settles = nc;
    }
    struct acc_budget_settle *e = &m->settles[m->n_settles++];
    snprintf(e->agent, sizeof e->agent, "%s", agent);
    snprintf(e->model, sizeof e->model, "%s", model);
    e->window_s = window_s;
    e->resv_id = resv_id;
    e->n = n;
    e->calls_delta = calls_delta;
    e->now = now;
}

void acc_budget_flush(struct acc_mgr *m)
{
    if (!m || !m->shared) return;
    pthread_mutex_lock(&m->bmu);
    struct acc_budget_settle *q = m->settles;
    size_t n = m->n_settles;
    m->settles = NULL;
    m->n_settles = m->cap_settles = 0;
    pthread_mutex_unlock(&m->bmu);
    if (!n) {
        free(q);
        return;
    }
    char err[512] = "";
    if (m->sops->budget_settle(m->store, q, n, err, sizeof err)) {
        LOG_WARN("access", "%s; will retry", err);
        pthread_mutex_lock(&m->bmu); /* back in the queue */
        for (size_t i = 0; i < n; i++)
            settle_push(m, q[i].agent, q[i].model, q[i].window_s, q[i].resv_id, q[i].n,
                        q[i].calls_delta, q[i].now);
        pthread_mutex_unlock(&m->bmu);
    }
    free(q);
}

void acc_budget_unreserve(struct acc_mgr *m, struct syscall *sc)
{
    if (!m || !sc) return;
    pthread_mutex_lock(&m->bmu);
    for (struct acc_budget_resv **p = &m->resv; *p; p = &(*p)->next) {
        if ((*p)->sc_id != sc->id) continue;
        struct acc_budget_resv *rv = *p;
        *p = rv->next;
        if (m->shared) {
            settle_push(m, rv->agent, rv->model, rv->window_s, rv->resv_id, 0, -1, acc_wall_s());
        } else {
            rv->u->reserved -= rv->amount;
            rv->u->n_calls--;
        }
        free(rv);
        break;
    }
    pthread_mutex_unlock(&m->bmu);
}

void acc_budget_on_final(struct syscall *sc, void *ud)
{
    struct acc_mgr *m = ud;
    if (!m || sc->kind != SYSCALL_KIND_LLM || !sc->target || !sc->agent) return;
    pthread_mutex_lock(&sc->mu);
    int64_t n = sc->usage.n_prompt_computed + sc->usage.n_prompt_reused + sc->usage.n_gen;
    pthread_mutex_unlock(&sc->mu);
    const char *model = ((struct llm_core *)sc->target)->name;
    const char *gname;
    json_t *grp = acc_group_of(m, sc->agent, &gname);
    int64_t limit = 0, window_s = 0;
    if (grp) rule_for(grp, model, &limit, &window_s);
    double now = acc_wall_s();
    pthread_mutex_lock(&m->bmu);
    if (m->shared) { /* queued for the database (see the top) */
        int64_t resv_id = 0, calls = 1;
        for (struct acc_budget_resv **p = &m->resv; *p; p = &(*p)->next) {
            if ((*p)->sc_id != sc->id) continue;
            struct acc_budget_resv *rv = *p;
            *p = rv->next;
            resv_id = rv->resv_id;
            calls = 0; /* counted at admission */
            free(rv);
            break;
        }
        settle_push(m, sc->agent, model, window_s, resv_id, n, calls, now);
        pthread_mutex_unlock(&m->bmu);
        return;
    }
    struct acc_budget_use *u = NULL;
    for (struct acc_budget_resv **p = &m->resv; *p; p = &(*p)->next) {
        if ((*p)->sc_id != sc->id) continue;
        struct acc_budget_resv *rv = *p;
        *p = rv->next;
        u = rv->u;
        u->reserved -= rv->amount;
        free(rv);
        break;
    }
    if (!u) {
        u = use_get(m, sc->agent, model, now);
        if (u) u->n_calls++;
    }
    if (u) {
        use_roll(u, window_s, now);
        u->used += n;
        u->used_total += n;
        u->dirty = true;
    }
    pthread_mutex_unlock(&m->bmu);
}

json_t *acc_budgets_json(struct acc_mgr *m, const char *agent)
{
    json_t *arr = json_array();
    if (!m) return arr;
    /* snapshot under the lock, rules looked up after (groups are immutable) */
    struct row {
        struct acc_budget_use u;
    } *rows = NULL;
    size_t n = 0, cap = 0;
    if (m->shared) { /* the database's rows, after this kernel's own ends */
        acc_budget_flush(m);
        struct acc_budget_row *br = NULL;
        size_t nb = 0;
        char err[512] = "";
        if (m->sops->budgets(m->store, &br, &nb, err, sizeof err)) LOG_ERROR("access", "%s", err);
        rows = nb ? calloc(nb, sizeof *rows) : NULL;
        for (size_t i = 0; rows && i < nb; i++) {
            if (agent && strcmp(agent, br[i].agent)) continue;
            struct acc_budget_use *u = &rows[n++].u;
            memcpy(u->agent, br[i].agent, sizeof u->agent);
            memcpy(u->model, br[i].model, sizeof u->model);
            u->used = br[i].used;
            u->reserved = br[i].reserved;
            u->used_total = br[i].used_total;
            u->window_start = br[i].window_start;
            u->n_calls = br[i].n_calls;
            u->n_denied = br[i].n_denied;
        }
        free(br);
        goto build;
    }
    pthread_mutex_lock(&m->bmu);
    for (struct acc_budget_use *u = m->uses; u; u = u->next) {
        if (agent && strcmp(agent, u->agent)) continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            struct row *x = realloc(rows, nc * sizeof *x);
            if (!x) break;
            rows = x;
            cap = nc;
        }
        rows[n++].u = *u;
    }
    pthread_mutex_unlock(&m->bmu);
build:;
    double now = acc_wall_s();
    for (size_t i = 0; i < n; i++) {
        struct acc_budget_use *u = &rows[i].u;
        const char *gname = NULL;
        json_t *grp = acc_group_of(m, u->agent, &gname);
        int64_t limit = 0, window_s = 0;
        bool has = grp && rule_for(grp, u->model, &limit, &window_s);
        if (window_s > 0 && now >= u->window_start + (double)window_s) u->used = 0; /* over */
        json_t *o = json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I}", "agent", u->agent, "model",
                              u->model, "used", (json_int_t)u->used, "reserved",
                              (json_int_t)u->reserved, "used_total", (json_int_t)u->used_total,
                              "calls", (json_int_t)u->n_calls, "denied",
                              (json_int_t)u->n_denied);
        json_object_set_new(o, "group", gname ? json_string(gname) : json_null());
        json_object_set_new(o, "limit", has ? json_integer(limit) : json_null());
        json_object_set_new(o, "remaining",
                            has ? json_integer(limit - u->used - u->reserved > 0
                                                   ? limit - u->used - u->reserved : 0)
                                : json_null());
        json_object_set_new(o, "window_s", window_s ? json_integer(window_s) : json_null());
        if (window_s)
            json_object_set_new(o, "resets_at", json_real(u->window_start + (double)window_s));
        json_array_append_new(arr, o);
    }
    free(rows);
    return arr;
}

void acc_budget_free(struct acc_mgr *m)
{
    free(m->settles);
    m->settles = NULL;
    m->n_settles = m->cap_settles = 0;
    while (m->resv) {
        struct acc_budget_resv *n = m->resv->next;
        free(m->resv);
        m->resv = n;
    }
    while (m->uses) {
        struct acc_budget_use *n = m->uses->next;
        free(m->uses);
        m->uses = n;
    }
}

/* ---- persistence (the store's budget_use) ---- */

int acc_budget_load(struct acc_mgr *m, char *err, size_t errlen)
{
    if (m->shared) return 0; /* the database's rows are the counters */
    struct acc_budget_row *rows = NULL;
    size_t n = 0;
    int rc = m->sops->budgets(m->store, &rows, &n, err, errlen);
    for (size_t i = 0; !rc && i < n; i++) {
        struct acc_budget_use *u = calloc(1, sizeof *u);
        if (!u) {
            rc = AIOS_ENOMEM;
            break;
        }
        snprintf(u->agent, sizeof u->agent, "%s", rows[i].agent);
        snprintf(u->model, sizeof u->model, "%s", rows[i].model);
        u->used = rows[i].used;
        u->used_total = rows[i].used_total;
        u->window_start = rows[i].window_start;
        u->n_calls = rows[i].n_calls;
        u->n_denied = rows[i].n_denied;
        u->next = m->uses;
        m->uses = u;
    }
    free(rows);
    return rc;
}

void acc_budget_save(struct acc_mgr *m)
{
    if (m->shared) {
        acc_budget_flush(m);
        return;
    }
    /* copy what changed under the lock; write without it */
    struct acc_budget_row *rows = NULL;
    size_t n = 0, cap = 0;
    pthread_mutex_lock(&m->bmu);
    for (struct acc_budget_use *u = m->uses; u; u = u->next) {
        if (!u->dirty) continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            struct acc_budget_row *x = realloc(rows, nc * sizeof *x);
            if (!x) break;
            rows = x;
            cap = nc;
        }
        struct acc_budget_row *r = &rows[n++];
        memcpy(r->agent, u->agent, sizeof r->agent);
        memcpy(r->model, u->model, sizeof r->model);
        r->used = u->used;
        r->used_total = u->used_total;
        r->window_start = u->window_start;
        r->n_calls = u->n_calls;
        r->n_denied = u->n_denied;
        u->dirty = false;
    }
    pthread_mutex_unlock(&m->bmu);
    if (!n) {
        free(rows);
        return;
    }
    char err[512] = "";
    if (m->sops->budgets_put(m->store, rows, n, err, sizeof err)) {
        LOG_ERROR("access", "%s; will retry", err);
        pthread_mutex_lock(&m->bmu); /* mark them again */
        for (size_t i = 0; i < n; i++)
            for (struct acc_budget_use *u = m->uses; u; u = u->next)
                if (!strcmp(u->agent, rows[i].agent) && !strcmp(u->model, rows[i].model))
                    u->dirty = true;
        pthread_mutex_unlock(&m->bmu);
    }
    free(rows);
}
