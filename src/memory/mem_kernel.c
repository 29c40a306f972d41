/* The memory manager wired to the kernel.
 *
 * Purpose: mem.c is a manager that knows nothing of the kernel; it is
 * given a store and callbacks when it is opened (struct mem_deps). This
 * file is the one place that gives them: the SQLite store under data_dir
 * (the default store), the access manager as the policy for other agents'
 * namespaces and sharing, and the kernel's first LLM core for
 * add_agentic_memory. It also registers the executor that runs memory
 * syscalls (typed requests, struct mem_req, parsed by the API layer) on the
 * memory pool, and queues memory.auto_extract's notes.
 *
 * The access manager starts after the memory manager and stops before it,
 * so the policy callbacks look it up (k->access) at each call; with none
 * running only an agent's own namespace is open and sharing is refused.
 *
 * Threads: the callbacks run on memory pool threads (and on HTTP threads
 * for memory.auto_inject's retrievals, which use no callback). */
#include "memory/mem.h"

#include "access/access.h"
#include "kernel/kernel.h"
#include "kernel/query.h"
#include "llm/core.h"
#include "util/err.h"
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the policy: the access manager ---- */

static int k_ns_check(void *ud, const char *agent, const char *owner, bool write, const char *op)
{
    struct kernel *k = ud;
    return acc_ns_memory_check(k->access, agent, owner, write, op);
}

static int no_access(char *err, size_t errlen)
{
    snprintf(err, errlen, "sharing memory needs the access manager (not running)");
    return AIOS_EINVAL;
}

static int k_share(void *ud, const char *owner, const struct mem_share_params *p, char *err,
                   size_t errlen)
{
    struct kernel *k = ud;
    if (!k->access) return no_access(err, errlen);
    return acc_mem_share(k->access, owner, p->grantee, p->write, p->expires_in, err, errlen);
}

static int k_unshare(void *ud, const char *owner, const char *grantee)
{
    struct kernel *k = ud;
    return k->access ? acc_mem_unshare(k->access, owner, grantee) : AIOS_ENOTFOUND;
}

static int k_shares(void *ud, const char *owner, json_t **out, char *err, size_t errlen)
{
    struct kernel *k = ud;
    *out = NULL;
    if (!k->access) return no_access(err, errlen);
    *out = acc_mem_shares_json(k->access, owner);
    return *out ? 0 : AIOS_ENOMEM;
}

/* ---- add_agentic_memory: the kernel's model ---- */

static int k_analyze(void *ud, const char *agent, const char *content, int max_tokens,
                     struct mem_analysis *out)
{
    struct kernel *k = ud;
    return mem_agentic_analyze(kernel_default_core(k), k->sched, agent, content, max_tokens, out);
}

/* ---- the executor: one memory syscall on a pool thread, or a cheap read
 * on the HTTP thread that submitted it (sc->running_here: from RAM only,
 * else left to a pool thread) ---- */

static void mem_exec(struct syscall *sc, void *ud)
{
    struct mem_manager *m = ud;
    const struct mem_req *req = sc->req;
    json_t *resp = NULL;
    int status = 0;
    char err[SYSCALL_ERRMSG_MAX];
    int rc = !req               ? AIOS_EINVAL
             : sc->running_here ? mem_manager_exec_nowait(m, sc->agent, req, &resp, &status, err,
                                                          sizeof err)
                                : mem_manager_exec(m, sc->agent, req, &resp, &status, err, sizeof err);
    if (rc == AIOS_EBUSY && sc->running_here) return; /* a pool thread serves it */
    if (!req) status = 400, snprintf(err, sizeof err, "a memory syscall without a request");
    if (rc) {
        syscall_fail(sc, rc == MEM_EEXISTS ? AIOS_EINVAL : rc, status, "%s", err);
        return;
    }
    struct kq_res *res = kq_res_new(resp);
    if (!res) {
        syscall_fail(sc, AIOS_ENOMEM, 500, "out of memory");
        return;
    }
    syscall_finish(sc, res, kq_res_free);
}

int mem_start(struct kernel *k, char *err, size_t errlen)
{
    struct mem_opts o;
    int rc = mem_opts_from_config(&k->cfg, &o, err, errlen);
    if (rc) return rc;
    o.emb = k->embed;
    bool pg = config_state_pg(&k->cfg);
    o.shared = pg;
    if (pg) { /* the store's "path" is the database's URL */
        free(o.db_path);
        if (!(o.db_path = strdup(k->cfg.state_url))) {
            mem_opts_free(&o);
            return AIOS_ENOMEM;
        }
    }
    struct mem_deps d = {.store = pg ? &mem_store_pg : &mem_store_sqlite, .ud = k,
                         .ns_check = k_ns_check,
                         .share = k_share, .unshare = k_unshare, .shares = k_shares,
                         .analyze = k_analyze};
    rc = mem_manager_open(&k->memory, &o, &d, err, errlen);
    if (!rc) {
        rc = kernel_register_executor(k, SYSCALL_KIND_MEMORY, o.workers, o.workers, mem_exec,
                                      k->memory);
        if (rc) snprintf(err, errlen, "cannot start the memory workers: %s", aios_strerror(rc));
        else LOG_INFO("memory", "notes in %s; working set %zu bytes per agent",
                      pg ? "PostgreSQL (state.url)" : o.db_path, o.quota_bytes);
    }
    mem_opts_free(&o);
    return rc;
}

void mem_stop(struct kernel *k)
{
    mem_manager_close(k->memory);
    k->memory = NULL;
}

/* ---- memory.auto_extract: a chat turn becomes a note ---- */

void mem_auto_extract(struct kernel *k, struct syscall *sc)
{
    struct mem_manager *m = k ? k->memory : NULL;
    const struct mem_opts *o = m ? mem_manager_opts(m) : NULL;
    if (!o || !o->auto_extract || sc->kind != SYSCALL_KIND_LLM || !sc->req || !sc->res) return;
    struct llm_req *req = sc->req;
    struct llm_res *res = sc->res;
    const char *user = NULL;
    for (size_t i = req->n_msgs; i-- > 0;) {
        if (!strcmp(req->msgs[i].role, "user")) {
            user = req->msgs[i].content;
            break;
        }
    }
    if (!user) return;
    /* keep the note under max_note_bytes: each side gets at most a third */
    int cap = (int)(o->max_note_bytes / 3);
    int ul = (int)strnlen(user, (size_t)cap), al = (int)(res->len < (size_t)cap ? res->len : (size_t)cap);
    while (ul > 0 && user[ul] && ((unsigned char)user[ul] & 0xC0) == 0x80) ul--;
    while (al > 0 && (size_t)al < res->len && ((unsigned char)res->text[al] & 0xC0) == 0x80) al--;
    size_t n = (size_t)ul + (size_t)al + 32;
    struct mem_req *mr = mem_req_new(MEM_OP_ADD);
    char *content = malloc(n);
    if (content) snprintf(content, n, "User: %.*s\nAssistant: %.*s", ul, user, al, res->text ? res->text : "");
    if (mr) {
        mr->u.add.f.content = content;
        content = NULL;
        mr->u.add.f.category = strdup("conversation");
        mr->u.add.f.context = strdup("conversation");
    }
    struct syscall *mc = NULL;
    if (mr && mr->u.add.f.content && mr->u.add.f.category && mr->u.add.f.context) {
        mc = syscall_new(SYSCALL_KIND_MEMORY, sc->agent, NULL, mr, mem_req_free);
        mr = NULL; /* the syscall's now, or freed by syscall_new on failure */
    }
    mem_req_free(mr);
    free(content);
    if (!mc) {
        LOG_WARN("memory", "auto_extract: out of memory; the turn of %s is not stored", sc->agent);
        return;
    }
    if (sched_submit(k->sched, mc))
        LOG_WARN("memory", "auto_extract: cannot queue the note for %s (shutting down)", sc->agent);
    syscall_unref(mc); /* the scheduler holds its own reference until it is done */
}
