/* KV affinity between kernels that share one PostgreSQL state.
 *
 * Each kernel's embedded engine keeps agents' conversations in its KV cache
 * (prefix reuse, retention: docs/architecture.md). With several kernels
 * behind one address, an agent's next call may reach a kernel that has
 * never seen the conversation and computes the whole prompt again. The
 * cluster manager records, per (agent, model), which kernel served the
 * agent's last call there, in a table all kernels share (clu_store.h), and
 * tells the API where a new call should run:
 *
 *   - no row, or the row names this kernel: here (the row is written when
 *     missing, and refreshed when a minute old: `updated` says when the
 *     kernel last served the conversation);
 *   - the row names a configured peer that is up and has fewer than
 *     cluster.max_outstanding calls forwarded by this kernel outstanding:
 *     there (the API forwards the HTTP request, api/forward.c);
 *   - the peer is down (a forward to it failed within peer_down_s,
 *     doubling) or overloaded, or the row names a kernel that is not a
 *     peer: here, and the row moves to this kernel.
 * Peer health and load are a struct replica_set (util/replicas.c), the
 * same least-outstanding and failover timing the remote model replicas
 * use; a forward that cannot connect marks the peer down, the call is
 * served here and the affinity moves (clu_forward_failed).
 *
 * Threads: every function is called on HTTP threads; the store is thread
 * safe, the replica set has its own leaf lock, the counters are atomics. */
#include "cluster/cluster.h"

#include "cluster/clu_store.h"
#include "kernel/config.h"
#include "util/err.h"
#include "util/log.h"
#include "util/replicas.h"
#include "util/util.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

/* a row this old is written again when its kernel serves the conversation */
#define REFRESH_S 60.0

struct clu_mgr {
    char *name, *url;
    size_t n_peers;
    char **peer_names, **peer_urls;
    int max_outstanding, connect_timeout_ms, timeout_s;
    struct replica_set peers;
    char what[96];
    const struct clu_store_ops *ops;
    struct clu_store *st;
    /* atomics */
    uint64_t n_here, n_forwarded, n_forwarded_in, n_fell_back;
};

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

int clu_start(struct clu_mgr **out, const struct aios_config *cfg, char *err, size_t errlen)
{
    *out = NULL;
    const struct cfg_cluster *cc = &cfg->cluster;
    if (!cc->name) return 0;
    assert(config_state_pg(cfg) && cfg->state_url); /* config.c refuses a cluster without */
    struct clu_mgr *m = calloc(1, sizeof *m);
    if (!m) return AIOS_ENOMEM;
    int rc = AIOS_ENOMEM;
    m->name = strdup(cc->name);
    m->url = cc->url ? strdup(cc->url) : NULL;
    m->n_peers = cc->n_peers;
    m->peer_names = calloc(cc->n_peers + 1, sizeof *m->peer_names);
    m->peer_urls = calloc(cc->n_peers + 1, sizeof *m->peer_urls);
    if (!m->name || (cc->url && !m->url) || !m->peer_names || !m->peer_urls) goto fail;
    for (size_t i = 0; i < cc->n_peers; i++) {
        m->peer_names[i] = strdup(cc->peers[i].name);
        /* no trailing slash: the request's path is appended */
        size_t n = strlen(cc->peers[i].url);
        while (n > 8 && cc->peers[i].url[n - 1] == '/') n--;
        m->peer_urls[i] = strndup(cc->peers[i].url, n);
        if (!m->peer_names[i] || !m->peer_urls[i]) goto fail;
    }
    m->max_outstanding = cc->max_outstanding;
    m->connect_timeout_ms = cc->connect_timeout_ms;
    m->timeout_s = cc->timeout_s;
    snprintf(m->what, sizeof m->what, "cluster kernel %s: peer", m->name);
    if (replicas_init(&m->peers, m->n_peers, cc->peer_down_s, m->what,
                      (const char *const *)m->peer_names))
        goto fail;
    m->ops = &clu_store_pg;
    if ((rc = m->ops->open(&m->st, cfg->state_url, err, errlen))) goto fail;
    LOG_INFO("cluster", "kernel %s with %zu peer%s; KV affinity in the shared state", m->name,
             m->n_peers, m->n_peers == 1 ? "" : "s");
    *out = m;
    return 0;
fail:
    if (rc == AIOS_ENOMEM) snprintf(err, errlen, "out of memory");
    clu_stop(m);
    return rc;
}

void clu_stop(struct clu_mgr *m)
{
    if (!m) return;
    if (m->st) m->ops->close(m->st);
    replicas_destroy(&m->peers);
    for (size_t i = 0; i < m->n_peers; i++) {
        if (m->peer_names) free(m->peer_names[i]);
        if (m->peer_urls) free(m->peer_urls[i]);
    }
    free(m->peer_names);
    free(m->peer_urls);
    free(m->name);
    free(m->url);
    free(m);
}

const char *clu_name(const struct clu_mgr *m) { return m->name; }
const char *clu_peer_name(const struct clu_mgr *m, size_t i) { return i < m->n_peers ? m->peer_names[i] : NULL; }
const char *clu_peer_url(const struct clu_mgr *m, size_t i) { return i < m->n_peers ? m->peer_urls[i] : NULL; }
int clu_connect_timeout_ms(const struct clu_mgr *m) { return m->connect_timeout_ms; }
int clu_timeout_s(const struct clu_mgr *m) { return m->timeout_s; }

static void count(uint64_t *c) { __atomic_add_fetch(c, 1, __ATOMIC_RELAXED); }

/* this kernel serves agent's conversation with model from now on */
static void claim(struct clu_mgr *m, const char *agent, const char *model)
{
    if (m->ops->put(m->st, agent, model, m->name, now_s()))
        LOG_WARN("cluster", "could not record that kernel %s holds agent %s's conversation with %s",
                 m->name, agent, model);
}

int clu_route(struct clu_mgr *m, const char *agent, const char *model, bool may_forward)
{
    struct clu_affinity a;
    int rc = m->ops->get(m->st, agent, model, &a);
    if (rc == AIOS_EIO) { /* logged; the call is served, affinity or not */
        count(&m->n_here);
        return -1;
    }
    if (!may_forward && !rc && strcmp(a.kernel, m->name)) rc = AIOS_ENOTFOUND; /* claim it */
    if (rc == AIOS_ENOTFOUND || !strcmp(a.kernel, m->name)) {
        if (rc || now_s() - a.updated > REFRESH_S) claim(m, agent, model);
        count(&m->n_here);
        return -1;
    }
    for (size_t i = 0; i < m->n_peers; i++) {
        if (strcmp(a.kernel, m->peer_names[i]) != 0) continue;
        if (replicas_usable(&m->peers, i, m->max_outstanding)) return (int)i;
        LOG_INFO("cluster", "agent %s, model %s: peer %s is down or has %d calls outstanding: "
                 "served here, and the conversation moves to %s", agent, model, a.kernel,
                 m->max_outstanding, m->name);
        count(&m->n_fell_back);
        break;
    }
    /* a kernel that is not a peer (any more), or one down or overloaded */
    claim(m, agent, model);
    count(&m->n_here);
    return -1;
}

void clu_forward_begin(struct clu_mgr *m, size_t peer)
{
    replicas_begin(&m->peers, peer);
    count(&m->n_forwarded);
}

void clu_forward_end(struct clu_mgr *m, size_t peer, bool ok, const char *why)
{
    replicas_end(&m->peers, peer, ok, !ok, why);
}

void clu_forward_release(struct clu_mgr *m, size_t peer) { replicas_release(&m->peers, peer); }

void clu_forward_failed(struct clu_mgr *m, size_t peer, const char *agent, const char *model,
                        const char *why)
{
    replicas_end(&m->peers, peer, false, true, why);
    __atomic_sub_fetch(&m->n_forwarded, 1, __ATOMIC_RELAXED);
    count(&m->n_fell_back);
    count(&m->n_here);
    LOG_INFO("cluster", "agent %s, model %s: forward to %s failed (%s): served here, and the "
             "conversation moves to %s", agent, model, m->peer_names[peer], why, m->name);
    claim(m, agent, model);
}

void clu_note_forwarded_in(struct clu_mgr *m) { count(&m->n_forwarded_in); }

json_t *clu_status_json(struct clu_mgr *m)
{
    json_t *peers = json_array();
    for (size_t i = 0; i < m->n_peers; i++) {
        json_t *p = json_pack("{s:s,s:s}", "name", m->peer_names[i], "url", m->peer_urls[i]);
        if (!p) continue;
        replicas_describe(&m->peers, i, p);
        json_array_append_new(peers, p);
    }
    return json_pack("{s:s,s:s?,s:i,s:I,s:I,s:I,s:I,s:o}", "name", m->name, "url", m->url,
                     "max_outstanding", m->max_outstanding, "served_here",
                     (json_int_t)__atomic_load_n(&m->n_here, __ATOMIC_RELAXED), "forwarded",
                     (json_int_t)__atomic_load_n(&m->n_forwarded, __ATOMIC_RELAXED),
                     "forwarded_in",
                     (json_int_t)__atomic_load_n(&m->n_forwarded_in, __ATOMIC_RELAXED),
                     "fell_back", (json_int_t)__atomic_load_n(&m->n_fell_back, __ATOMIC_RELAXED),
                     "peers", peers);
}
