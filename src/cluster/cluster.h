/* The cluster manager: KV affinity between kernels that share one
 * PostgreSQL state. It knows this kernel's name and its peers (config
 * `cluster:`), their health and load (util/replicas.h), and, through its
 * store (clu_store.h), which kernel retains each agent's conversation with
 * each model. It decides nothing about HTTP: the API asks it where a call
 * should run (clu_route) and does the forwarding (api/forward.c). See
 * cluster.c and docs/postgres.md, "KV affinity". */
#ifndef AIOS_CLUSTER_CLUSTER_H
#define AIOS_CLUSTER_CLUSTER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct aios_config;
struct clu_mgr;

/* *out NULL (and 0) when the config names no cluster. 0, or AIOS_EIO /
 * AIOS_ENOMEM with a message. */
int clu_start(struct clu_mgr **out, const struct aios_config *cfg, char *err, size_t errlen);
void clu_stop(struct clu_mgr *m); /* NULL-safe */

const char *clu_name(const struct clu_mgr *m);

/* Where should agent's call to model run? The peer's index (>= 0) when a
 * live peer that is not overloaded retains the conversation: forward it
 * there. -1: serve it here; this kernel is then recorded as the one that
 * retains it (when the record named another kernel, or is old).
 * may_forward false (a call forwarded here): always -1. */
int clu_route(struct clu_mgr *m, const char *agent, const char *model, bool may_forward);
/* A forward to peer i failed before it answered (connect refused, it is
 * shutting down): the peer sits out (replicas_end) and the call is served
 * here: record this kernel for agent and model. */
void clu_forward_failed(struct clu_mgr *m, size_t peer, const char *agent, const char *model,
                        const char *why);
/* a forward to peer i is sent / ended (ok: the peer answered) */
void clu_forward_begin(struct clu_mgr *m, size_t peer);
void clu_forward_end(struct clu_mgr *m, size_t peer, bool ok, const char *why);
/* ... ended without a verdict on the peer (the client went away, shutdown) */
void clu_forward_release(struct clu_mgr *m, size_t peer);

const char *clu_peer_name(const struct clu_mgr *m, size_t i);
const char *clu_peer_url(const struct clu_mgr *m, size_t i);
int clu_connect_timeout_ms(const struct clu_mgr *m);
int clu_timeout_s(const struct clu_mgr *m); /* a whole forwarded call */

/* the forwarded request that arrived here (X-Aios-Forwarded) was served */
void clu_note_forwarded_in(struct clu_mgr *m);

/* {"name","url","served_here","forwarded","forwarded_in","fell_back",
 * "peers":[{name,url,up,outstanding,...}]} for GET /status */
json_t *clu_status_json(struct clu_mgr *m);

#endif
