/* The responses manager (see resp.h): the store chosen at start and the
 * conversation of a response, walked back through previous_response_id.
 *
 * The manager keeps nothing in memory: every call goes to the store, so a
 * kernel restarted on the same data_dir continues any stored chain, and
 * with a shared store (PostgreSQL) any kernel continues any kernel's. The
 * engine's KV cache is a separate matter: the API rebuilds the prompt from
 * the chain every turn, and the engine reuses whatever prefix of it the
 * agent's retained conversation still holds (docs/api.md, "Responses"). */
#include "resp/resp.h"

#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct resp_mgr {
    const struct resp_store_ops *ops;
    struct resp_store *st;
};

void resp_rec_free(struct resp_rec *r)
{
    if (!r) return;
    free(r->id);
    free(r->agent);
    free(r->prev_id);
    free(r->model);
    free(r->input);
    free(r->response);
    free(r);
}

int resp_mgr_open(struct resp_mgr **out, const struct aios_config *cfg, char *err, size_t errlen)
{
    *out = NULL;
    struct resp_mgr *m = calloc(1, sizeof *m);
    if (m && config_state_pg(cfg)) { /* shared by every kernel on the database */
        m->ops = &resp_store_pg;
        int rc = m->ops->open(&m->st, cfg->state_url, err, errlen);
        if (rc) {
            free(m);
            return rc;
        }
        *out = m;
        return 0;
    }
    char *path = config_resolve_path(cfg, "responses.db");
    char *dir = path ? strdup(path) : NULL;
    int rc = AIOS_ENOMEM;
    if (!m || !path || !dir) goto fail;
    const char *d = dirname(dir);
    if (strcmp(d, ".") && util_mkdirs(d)) {
        snprintf(err, errlen, "cannot create %s for the responses database", d);
        rc = AIOS_EIO;
        goto fail;
    }
    m->ops = &resp_store_sqlite;
    rc = m->ops->open(&m->st, path, err, errlen);
    if (rc) goto fail;
    free(path);
    free(dir);
    *out = m;
    return 0;
fail:
    free(path);
    free(dir);
    free(m);
    return rc;
}

void resp_mgr_close(struct resp_mgr *m)
{
    if (!m) return;
    m->ops->close(m->st);
    free(m);
}

int resp_put(struct resp_mgr *m, const struct resp_rec *r)
{
    return m->ops->put(m->st, r);
}

int resp_get(struct resp_mgr *m, const char *agent, const char *id, struct resp_rec **out)
{
    return m->ops->get(m->st, agent, id, out);
}

int resp_delete(struct resp_mgr *m, const char *agent, const char *id)
{
    return m->ops->remove(m->st, agent, id);
}

void resp_chain_free(struct resp_rec **recs, size_t n)
{
    for (size_t i = 0; i < n; i++) resp_rec_free(recs[i]);
    free(recs);
}

int resp_chain(struct resp_mgr *m, const char *agent, const char *id, struct resp_rec ***out,
               size_t *n, char *missing, size_t missinglen)
{
    *out = NULL;
    *n = 0;
    struct resp_rec **v = NULL;
    size_t nv = 0, cap = 0;
    const char *cur = id;
    int rc = 0;
    while (cur) {
        if (nv == RESP_MAX_CHAIN) {
            rc = AIOS_ETOOBIG;
            break;
        }
        if (nv == cap) {
            size_t nc = cap ? cap * 2 : 8;
            struct resp_rec **t = realloc(v, nc * sizeof *t);
            if (!t) {
                rc = AIOS_ENOMEM;
                break;
            }
            v = t;
            cap = nc;
        }
        struct resp_rec *r = NULL;
        rc = m->ops->get(m->st, agent, cur, &r);
        if (rc == AIOS_ENOTFOUND) snprintf(missing, missinglen, "%s", cur);
        if (rc) break;
        v[nv++] = r;
        cur = r->prev_id;
    }
    if (rc) {
        resp_chain_free(v, nv);
        return rc;
    }
    for (size_t i = 0; i < nv / 2; i++) { /* oldest first */
        struct resp_rec *t = v[i];
        v[i] = v[nv - 1 - i];
        v[nv - 1 - i] = t;
    }
    *out = v;
    *n = nv;
    return 0;
}
