/* Memory and storage namespaces: whose notes and files an agent may use.
 *
 * Every agent has its own memory namespace and storage tree (named by the
 * agent). Another agent's is open only
 *   - through a privilege group that names it:
 *       groups: {team: {memory: [ivy, "kb:r"], storage: ["ivy:r"]}}
 *     "NAME" (or "NAME:rw") opens NAME's notes / files for reading and
 *     writing, "NAME:r" for reading; "own" (the default) opens none;
 *   - or through a share grant by the owner, revocable, with an optional
 *     expiry: storage's own grants (op share / unshare, storage.c), and for
 *     memory the ops share_memory / unshare_memory / memory_shares, whose
 *     grants live here (table mem_grants of audit.db, cached in RAM).
 * A request names the other namespace with params.owner (memory also
 * accepts params.namespace). Not open: 404, exactly what a missing note or
 * file answers, so nothing about the other agent leaks; open for reading
 * only and a write asked: 403. Each denial, and each use of another
 * agent's namespace, is an audit row.
 *
 * Threads: memory and storage worker threads (and HTTP threads for the
 * storage approval pre-check). m->mu guards the grant list; never held
 * while the audit queue's lock or SQLite is used. */
#include "access/acc_int.h"

#include "util/err.h"
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct acc_mem_grant {
    struct acc_mem_grant *next;
    char owner[ACC_NAME_MAX], grantee[ACC_NAME_MAX];
    bool write;
    double created, expires; /* unix seconds; expires 0: never */
};

int acc_ns_config(json_t *group, const char *gname, char *err, size_t errlen)
{
    static const char *const keys[] = {"memory", "storage"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(group, keys[i]);
        if (!v || json_is_string(v)) continue; /* "own": checked by the caller */
        size_t j;
        json_t *e;
        json_array_foreach(v, j, e) {
            const char *s = json_string_value(e);
            const char *colon = s ? strchr(s, ':') : NULL;
            bool ok = s && s[0] && s[0] != ':' &&
                      (!colon || !strcmp(colon, ":r") || !strcmp(colon, ":rw"));
            if (!ok) {
                snprintf(err, errlen, "access.groups.%s.%s: each entry must be an agent name, "
                         "\"NAME:r\" (read-only) or \"NAME:rw\"", gname, keys[i]);
                return AIOS_ECONFIG;
            }
        }
    }
    return 0;
}

/* what the agent's group opens of owner's `key` namespace: 0, 1 read, 3 rw */
static int group_mode(struct acc_mgr *m, const char *agent, const char *key, const char *owner,
                      const char **gname)
{
    json_t *grp = acc_group_of(m, agent, gname);
    json_t *l = json_object_get(grp, key);
    if (!json_is_array(l)) return 0;
    size_t i, n = strlen(owner);
    json_t *e;
    json_array_foreach(l, i, e) {
        const char *s = json_string_value(e);
        if (!s || strncmp(s, owner, n) || (s[n] && s[n] != ':')) continue;
        return s[n] && !strcmp(s + n, ":r") ? 1 : 3;
    }
    return 0;
}

int acc_ns_storage_policy(void *ud, const char *agent, const char *owner, const char *path,
                          bool write, int share_rc)
{
    struct acc_mgr *m = ud;
    if (!m || share_rc == 0) return share_rc;
    const char *gname = NULL;
    int mode = group_mode(m, agent, "storage", owner, &gname);
    char res[600], why[800];
    snprintf(res, sizeof res, "storage:%s/%s", owner, path ? path : "");
    if (mode == 3 || (mode == 1 && !write)) {
        if (path) {
            snprintf(why, sizeof why, "group '%s' opens the storage of agent '%s' (%s)", gname,
                     owner, mode == 3 ? "read-write" : "read-only");
            acc_audit_row(m, agent, 0, res, write ? "storage write" : "storage read", "allowed",
                          why);
        }
        return 0;
    }
    if (!path) return share_rc;
    if (mode == 1 || share_rc == AIOS_EPERM) {
        snprintf(why, sizeof why, "agent '%s' may only read the storage of agent '%s'", agent,
                 owner);
        acc_audit_row(m, agent, 0, res, "storage write", "denied", why);
        return AIOS_EPERM;
    }
    snprintf(why, sizeof why, "the storage of agent '%s' is not open to agent '%s' (no group "
             "names it, no live share grant): answered as not found", owner, agent);
    acc_audit_row(m, agent, 0, res, write ? "storage write" : "storage read", "denied", why);
    return share_rc;
}

int acc_ns_memory_check(struct acc_mgr *m, const char *agent, const char *owner, bool write,
                        const char *op)
{
    if (!owner || !owner[0] || !strcmp(owner, agent)) return 0;
    if (!m) return AIOS_ENOTFOUND;
    const char *gname = NULL;
    int mode = group_mode(m, agent, "memory", owner, &gname);
    const char *via = mode ? "group" : NULL;
    if (mode != 3) { /* a grant may open more */
        double now = acc_wall_s();
        pthread_mutex_lock(&m->mu);
        for (struct acc_mem_grant *g = m->mem_grants; g; g = g->next) {
            if (strcmp(g->owner, owner) || strcmp(g->grantee, agent)) continue;
            if (g->expires > 0 && now >= g->expires) break;
            int gm = g->write ? 3 : 1;
            if (gm > mode) {
                mode = gm;
                via = "grant";
            }
            break;
        }
        pthread_mutex_unlock(&m->mu);
    }
    char res[300], why[600];
    snprintf(res, sizeof res, "memory:%s", owner);
    if (mode == 3 || (mode == 1 && !write)) {
        if (!strcmp(via, "group"))
            snprintf(why, sizeof why, "group '%s' opens the memory of agent '%s' (%s)", gname, owner,
                     mode == 3 ? "read-write" : "read-only");
        else
            snprintf(why, sizeof why, "agent '%s' shared its memory (%s)", owner,
                     mode == 3 ? "read-write" : "read-only");
        acc_audit_row(m, agent, 0, res, op, "allowed", why);
        return 0;
    }
    if (mode == 1) {
        snprintf(why, sizeof why, "agent '%s' may only read the memory of agent '%s'", agent, owner);
        acc_audit_row(m, agent, 0, res, op, "denied", why);
        return AIOS_EPERM;
    }
    snprintf(why, sizeof why, "the memory of agent '%s' is not open to agent '%s' (no group names "
             "it, no live share grant): answered as not found", owner, agent);
    acc_audit_row(m, agent, 0, res, op, "denied", why);
    return AIOS_ENOTFOUND;
}

/* ---- memory grants ---- */

/* replace the memory grants with what the store holds (at start, and
 * every SHARED_REFRESH_MS when several kernels share the store) */
int acc_ns_load(struct acc_mgr *m, char *err, size_t errlen)
{
    struct acc_grant_row *rows = NULL;
    size_t n = 0;
    int rc = m->sops->grants(m->store, &rows, &n, err, errlen);
    struct acc_mem_grant *list = NULL;
    for (size_t i = 0; !rc && i < n; i++) {
        struct acc_mem_grant *g = calloc(1, sizeof *g);
        if (!g) {
            rc = AIOS_ENOMEM;
            break;
        }
        snprintf(g->owner, sizeof g->owner, "%s", rows[i].owner);
        snprintf(g->grantee, sizeof g->grantee, "%s", rows[i].grantee);
        g->write = rows[i].write;
        g->created = rows[i].created;
        g->expires = rows[i].expires;
        g->next = list;
        list = g;
    }
    free(rows);
    if (!rc) {
        pthread_mutex_lock(&m->mu);
        struct acc_mem_grant *old = m->mem_grants;
        m->mem_grants = list;
        pthread_mutex_unlock(&m->mu);
        list = old;
    }
    while (list) {
        struct acc_mem_grant *nx = list->next;
        free(list);
        list = nx;
    }
    return rc;
}

void acc_ns_free(struct acc_mgr *m)
{
    while (m->mem_grants) {
        struct acc_mem_grant *n = m->mem_grants->next;
        free(m->mem_grants);
        m->mem_grants = n;
    }
}

int acc_mem_share(struct acc_mgr *m, const char *owner, const char *grantee, bool write,
                  int64_t expires_in_s, char *err, size_t errlen)
{
    if (!m) {
        snprintf(err, errlen, "sharing memory needs the access manager");
        return AIOS_EINVAL;
    }
    if (!grantee || !grantee[0] || strlen(grantee) >= ACC_NAME_MAX || strchr(grantee, ':')) {
        snprintf(err, errlen, "params.agent must name the agent to share with");
        return AIOS_EINVAL;
    }
    if (!strcmp(owner, grantee)) {
        snprintf(err, errlen, "an agent cannot share its memory with itself");
        return AIOS_EINVAL;
    }
    double now = acc_wall_s(), exp = expires_in_s > 0 ? now + (double)expires_in_s : 0;
    struct acc_grant_row row = {.write = write, .created = now, .expires = exp};
    snprintf(row.owner, sizeof row.owner, "%s", owner);
    snprintf(row.grantee, sizeof row.grantee, "%s", grantee);
    int rc = m->sops->grant_put(m->store, &row, err, errlen);
    if (rc) return rc;
    pthread_mutex_lock(&m->mu);
    struct acc_mem_grant *g;
    for (g = m->mem_grants; g; g = g->next)
        if (!strcmp(g->owner, owner) && !strcmp(g->grantee, grantee)) break;
    if (!g && (g = calloc(1, sizeof *g))) {
        snprintf(g->owner, sizeof g->owner, "%s", owner);
        snprintf(g->grantee, sizeof g->grantee, "%s", grantee);
        g->next = m->mem_grants;
        m->mem_grants = g;
    }
    if (g) {
        g->write = write;
        g->created = now;
        g->expires = exp;
    }
    pthread_mutex_unlock(&m->mu);
    if (!g) return AIOS_ENOMEM;
    char res[300], why[300];
    snprintf(res, sizeof res, "memory:%s", owner);
    snprintf(why, sizeof why, "shared with agent '%s' (%s%s)", grantee,
             write ? "read-write" : "read-only", exp > 0 ? ", expires" : "");
    acc_audit_row(m, owner, 0, res, "share_memory", "allowed", why);
    return 0;
}

int acc_mem_unshare(struct acc_mgr *m, const char *owner, const char *grantee)
{
    if (!m || !grantee) return AIOS_ENOTFOUND;
    bool found = false;
    pthread_mutex_lock(&m->mu);
    for (struct acc_mem_grant **p = &m->mem_grants; *p; p = &(*p)->next) {
        if (strcmp((*p)->owner, owner) || strcmp((*p)->grantee, grantee)) continue;
        struct acc_mem_grant *g = *p;
        *p = g->next;
        free(g);
        found = true;
        break;
    }
    pthread_mutex_unlock(&m->mu);
    char err[512] = "";
    if (m->sops->grant_delete(m->store, owner, grantee, err, sizeof err))
        LOG_ERROR("access", "%s", err);
    if (found) {
        char res[300], why[300];
        snprintf(res, sizeof res, "memory:%s", owner);
        snprintf(why, sizeof why, "no longer shared with agent '%s'", grantee);
        acc_audit_row(m, owner, 0, res, "unshare_memory", "allowed", why);
    }
    return found ? 0 : AIOS_ENOTFOUND;
}

json_t *acc_mem_shares_json(struct acc_mgr *m, const char *agent)
{
    json_t *given = json_array(), *received = json_array();
    if (m) {
        double now = acc_wall_s();
        pthread_mutex_lock(&m->mu);
        for (struct acc_mem_grant *g = m->mem_grants; g; g = g->next) {
            bool giv = !strcmp(g->owner, agent), rec = !strcmp(g->grantee, agent);
            if ((!giv && !rec) || (g->expires > 0 && now >= g->expires)) continue;
            json_t *o = json_pack("{s:s,s:s,s:s,s:f}", "owner", g->owner, "grantee", g->grantee,
                                  "mode", g->write ? "rw" : "r", "created", g->created);
            json_object_set_new(o, "expires", g->expires > 0 ? json_real(g->expires) : json_null());
            json_array_append_new(giv ? given : received, o);
        }
        pthread_mutex_unlock(&m->mu);
    }
    return json_pack("{s:o,s:o}", "given", given, "received", received);
}
