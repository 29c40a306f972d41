/* Kernel lifecycle: the composition root.
 *
 * This file wires the managers together and is the only one in src/kernel
 * that knows them all (and the HTTP server); kernel.c holds the kernel's
 * own small functions that the layers above use.
 *
 *
 * kernel_start() builds the parts in dependency order: scheduler, LLM cores
 * (loading models; with none configured, the built-in random-weight test
 * model, created once into the user cache), engine threads, then the HTTP
 * server last so no request arrives before everything it needs exists.
 * kernel_stop() tears down in the reverse order: stop accepting
 * connections, shut the scheduler (queued calls fail with 503, running ones
 * see the stop flag and end), wait briefly for in-flight HTTP requests to be
 * answered, join the engines, stop the HTTP server, free the models.
 *
 * struct kernel is the only global state; it lives in main(). Its fields are
 * written only during start and stop, when no worker runs; in between they
 * are read-only and every thread may read them without a lock. The one
 * exception is the core table: POST /core/refresh appends cores and retires
 * old ones (kernel/models.c explains why readers still need no lock). */
#include "kernel/kernel.h"
#include "kernel/models.h"

#include "access/access.h"
#include "agents/agent.h"
#include "cluster/cluster.h"
#include "api/api.h"
#include "hub/hub.h"
#include "llm/embed.h"
#include "resp/resp.h"
#include "llm/remote.h"
#include "llm/structured.h"
#include "llm/testmodel.h"
#include "memory/mem.h"
#include "storage/storage.h"
#include "tools/tools.h"
#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Ensure the built-in test model exists in the cache; returns its path. */
static int builtin_model_path(char **out, char *err, size_t errlen)
{
    *out = NULL;
    char *cache = util_cache_dir();
    if (!cache) return AIOS_ENOMEM;
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/models", cache);
    free(cache);
    if (util_mkdirs(dir)) {
        snprintf(err, errlen, "cannot create the model cache %s", dir);
        return AIOS_EIO;
    }
    snprintf(path, sizeof path, "%s/aios-test-tiny-seed0.gguf", dir);
    if (access(path, R_OK) != 0) {
        LOG_INFO("kernel", "creating the built-in test model at %s (once)", path);
        int rc = testmodel_create(path, TESTMODEL_SHAPE_TINY, 0, 0, err, errlen);
        if (rc) return rc;
    }
    *out = strdup(path);
    return *out ? 0 : AIOS_ENOMEM;
}

/* the scheduler's price function: an LLM call's target is its llm_core */
static void core_price(const void *target, double *prompt, double *completion)
{
    const struct llm_core *c = target;
    *prompt = c->price_prompt;
    *completion = c->price_completion;
}

/* The storage manager gets what it needs: its config, the embedding model
 * and a worker pool that runs its executor. */
static int storage_start(struct kernel *k, char *err, size_t errlen)
{
    struct sto_config c;
    int rc = sto_config_from(&k->cfg, &c, err, errlen);
    if (rc) return rc;
    c.emb = k->embed;
    if (config_state_pg(&k->cfg)) c.store_url = k->cfg.state_url; /* PostgreSQL */
    rc = sto_open(&k->storage, &c, err, errlen);
    sto_config_free(&c);
    if (rc) return rc;
    rc = kernel_register_executor(k, SYSCALL_KIND_STORAGE, sto_n_threads(k->storage),
                                  sto_n_threads(k->storage), sto_executor, k->storage);
    if (rc) snprintf(err, errlen, "cannot start the storage workers: %s", aios_strerror(rc));
    return rc;
}

/* the file tools' way to storage: the access manager may park a call
 * that would lose data for the operator, else it is queued */
static int tools_storage_submit(void *ud, struct syscall *sc, char *err, size_t errlen)
{
    struct kernel *k = ud;
    int rc = acc_storage_hold(k->access, sc, err, errlen);
    return rc == 0 ? sched_submit(k->sched, sc) : rc;
}

/* tool views: the storage manager's copy of an agent's files for its tools */
static int tools_view_make(void *ud, const char *agent, uid_t uid, char *dir, size_t dirlen,
                           int64_t *budget, json_t **manifest, char *err, size_t errlen)
{
    return sto_view_make(ud, agent, uid, dir, dirlen, budget, manifest, err, errlen);
}

static int tools_view_changes(void *ud, const char *dir, json_t *manifest,
                              struct sto_view_change **out, size_t *n, json_t *notes, char *err,
                              size_t errlen)
{
    return sto_view_changes(ud, dir, manifest, out, n, notes, err, errlen);
}

static void tools_view_drop(void *ud, const char *dir) { sto_view_drop(ud, dir); }

/* The tool manager gets its `tools:` section, the storage root it runs
 * tools in, the scheduler and the storage path; its TOOL pool is
 * registered here with the per-agent cap of its threads. */
static int tools_start(struct kernel *k, char *err, size_t errlen)
{
    char *root = config_resolve_path(&k->cfg, k->cfg.storage_root ? k->cfg.storage_root : "root");
    int rc = tool_mgr_create(&k->tools, config_lookup(&k->cfg, "tools"), root, k->cfg.data_dir,
                             err, errlen);
    free(root);
    if (rc) {
        char tmp[1024];
        snprintf(tmp, sizeof tmp, "%s", err);
        snprintf(err, errlen, "config: %s", tmp);
        return rc;
    }
    struct tool_deps d = {.sched = k->sched, .storage_ud = k};
    if (k->storage && k->pools[SYSCALL_KIND_STORAGE]) {
        d.storage_submit = tools_storage_submit;
        d.view = (struct tool_view_ops){tools_view_make, tools_view_changes, tools_view_drop,
                                        k->storage};
    }
    tool_mgr_set_deps(k->tools, &d);
    sched_set_agent_cap(k->sched, SYSCALL_KIND_TOOL, tool_mgr_calls_per_agent(k->tools));
    rc = kernel_register_executor(k, SYSCALL_KIND_TOOL, tool_mgr_pool_threads(k->tools), 0,
                                  tool_exec_syscall, k->tools);
    if (rc) {
        snprintf(err, errlen, "cannot start the tool pool: %s", aios_strerror(rc));
        tool_mgr_stop(k->tools);
        k->tools = NULL;
    }
    return rc;
}

/* the agent factory's view of the hub */
static int hub_fill_cache_hook(void *ud, const char *cache_home, uid_t uid, char *err,
                               size_t errlen)
{
    return hub_fill_cache(ud, cache_home, uid, err, errlen);
}
static char *hub_agent_dir_hook(void *ud, const char *ref) { return hub_agent_dir(ud, ref); }

int kernel_start(struct kernel *k, char *err, size_t errlen)
{
    int rc;
    k->t_start_us = util_now_us();
    k->version = AIOS_VERSION;

    kernel_models_merge_keys(&k->cfg); /* keys stored by POST /core/config/update */
    struct grammar_opts go; /* llms.structured_output: checked once here */
    if ((rc = llm_structured_opts(&k->cfg, &go, err, errlen))) return rc;

    const struct sched_policy *pol = sched_policy_find(k->cfg.sched_policy);
    if (!pol) {
        snprintf(err, errlen, "scheduler.policy: unknown policy '%s' (use fifo, rr or fair)",
                 k->cfg.sched_policy);
        rc = AIOS_ECONFIG;
        goto fail;
    }
    rc = sched_create(&k->sched, pol);
    if (rc) goto fail;
    rc = sched_configure(k->sched, &k->cfg, err, errlen);
    if (rc) goto fail;
    rc = emb_kernel_start(k, err, errlen); /* embedding.model, before memory and storage */
    if (rc) goto fail;
    rc = mem_start(k, err, errlen);
    if (rc) goto fail;
    rc = storage_start(k, err, errlen);
    if (rc) goto fail;
    rc = resp_mgr_open(&k->responses, &k->cfg, err, errlen); /* POST /v1/responses */
    if (rc) goto fail;

    if (k->cfg.n_models == 0) {
        char *path = NULL;
        rc = builtin_model_path(&path, err, errlen);
        if (rc) goto fail;
        struct cfg_model *m = calloc(1, sizeof *m);
        if (!m) {
            free(path);
            rc = AIOS_ENOMEM;
            goto fail;
        }
        m->name = strdup("aios-tiny");
        m->backend = strdup("llamacpp");
        m->path = path;
        m->n_ctx = 4096;
        free(k->cfg.models);
        k->cfg.models = m;
        k->cfg.n_models = 1;
        LOG_WARN("kernel", "no model configured: serving the built-in test model 'aios-tiny' "
                 "(random weights, real tokenizer; its answers are noise)");
    }

    if (k->cfg.n_models > KERNEL_MAX_CORES / 2) {
        snprintf(err, errlen, "llms.models: %zu entries; at most %d", k->cfg.n_models,
                 KERNEL_MAX_CORES / 2);
        rc = AIOS_ECONFIG;
        goto fail;
    }
    k->cores = calloc(KERNEL_MAX_CORES, sizeof *k->cores); /* refresh appends (models.c) */
    if (!k->cores) {
        rc = AIOS_ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < k->cfg.n_models; i++) {
        const struct cfg_model *m = &k->cfg.models[i];
        if (llm_backend_is_remote(m->backend)) { /* llm/remote.c: same-name entries are replicas */
            struct llm_core *r = NULL;
            rc = llm_remote_create_entry(&r, &k->cfg, i, err, errlen);
            if (rc) goto fail;
            if (r) {
                r->price_prompt = m->price_prompt;
                r->price_completion = m->price_completion;
                k->cores[k->n_cores++] = r;
            }
            continue;
        }
        if (strcmp(m->backend, "llamacpp") != 0) {
            LOG_WARN("kernel", "model %s: backend '%s' is not supported yet; skipped", m->name,
                     m->backend);
            continue;
        }
        struct llm_core *c = NULL;
        rc = llm_llama_create(&c, m, &k->cfg, err, errlen);
        if (rc) goto fail;
        c->price_prompt = m->price_prompt;
        c->price_completion = m->price_completion;
        k->cores[k->n_cores++] = c;
    }
    if (k->n_cores == 0) {
        snprintf(err, errlen, "no usable model: configure a llamacpp model (llms.models[] with "
                 "backend: llamacpp and path), a remote one (backend: openai, vllm, anthropic, "
                 "...) or pass --model FILE.gguf");
        rc = AIOS_ECONFIG;
        goto fail;
    }
    for (size_t i = 0; i < k->n_cores; i++) {
        rc = k->cores[i]->ops->start(k->cores[i], k->sched);
        if (rc) {
            snprintf(err, errlen, "cannot start the engine for %s", k->cores[i]->name);
            goto fail;
        }
    }
    sched_set_price_fn(k->sched, core_price);
    rc = sched_preemptor_start(k->sched, k->cores, &k->n_cores);
    if (rc) goto fail;
    rc = kernel_models_start(k);
    if (rc) goto fail;
    rc = agent_factory_create(&k->agents, &k->cfg, err, errlen);
    if (rc) goto fail;
    rc = tools_start(k, err, errlen);
    if (rc) goto fail;
    /* the hub: its tools run through the tool manager (resolver), its
     * tools reach agents through the factory (Cerebrum's cache) */
    rc = hub_open(&k->hub, k->cfg.data_dir, config_lookup(&k->cfg, "hub"), err, errlen);
    if (rc) goto fail;
    tool_mgr_set_resolver(k->tools, hub_tool_resolve, k->hub);
    struct agent_hub_hooks hh = {hub_fill_cache_hook, hub_agent_dir_hook, k->hub};
    agent_factory_set_hub(k->agents, &hh);
    struct acc_deps ad = {&k->cfg, k->agents, k->sched, k->storage};
    rc = acc_start(&k->access, &ad, err, errlen);
    if (rc) goto fail;
    /* the access manager's policy hooks (kernel_stop removes the scheduler's; tools
     * and storage stop before access does) */
    if (k->tools) tool_mgr_set_approval(k->tools, acc_tool_approval, k->access);
    if (k->tools) tool_mgr_set_permit(k->tools, acc_tool_permit, k->access);
    sched_set_final_hook(k->sched, acc_budget_on_final, k->access);
    if (k->storage) sto_set_ns_policy(k->storage, acc_ns_storage_policy, k->access);
    /* KV affinity with the peer kernels (docs/postgres.md); NULL without cluster: */
    rc = clu_start(&k->cluster, &k->cfg, err, errlen);
    if (rc) goto fail;
    rc = api_start(&k->api, k, err, errlen);
    if (rc) goto fail;
    k->port = api_port(k->api);
    return 0;
fail:
    if (!err[0]) snprintf(err, errlen, "%s", aios_strerror(rc));
    kernel_stop(k);
    return rc;
}

void kernel_stop(struct kernel *k)
{
    if (k->api) api_quiesce(k->api);
    if (k->sched) sched_shutdown(k->sched);
    acc_quiesce(k->access); /* pending approvals end denied before the tool pool joins */
    /* give in-flight requests a moment to receive their (error) answers */
    for (int i = 0; k->api && i < 200 && api_active(k->api) > 0; i++) usleep(10000);
    for (size_t i = 0; i < k->n_cores; i++) k->cores[i]->ops->stop(k->cores[i]);
    for (int i = 0; i < SYSCALL_KIND__COUNT; i++) {
        sched_pool_stop(k->pools[i]);
        k->pools[i] = NULL;
    }
    mem_stop(k);
    sto_close(k->storage);
    k->storage = NULL;
    emb_kernel_stop(k);
    tool_mgr_stop(k->tools);
    k->tools = NULL;
    for (int i = 0; k->api && i < 200 && api_active(k->api) > 0; i++) usleep(10000);
    if (k->api) api_stop(k->api);
    k->api = NULL;
    resp_mgr_close(k->responses);
    k->responses = NULL;
    clu_stop(k->cluster); /* after the API: its forwards ask it */
    k->cluster = NULL;
    if (k->sched) sched_set_final_hook(k->sched, NULL, NULL); /* tools, storage: stopped */
    acc_stop(k->access);
    k->access = NULL;
    /* agents are this kernel's processes: they end with it (after the API,
     * whose handlers use the process table) */
    agent_factory_destroy(k->agents);
    k->agents = NULL;
    /* after the tool manager (its calls ran hub tools), the API and the factory */
    hub_close(k->hub);
    k->hub = NULL;
    for (size_t i = 0; i < k->n_cores; i++) k->cores[i]->ops->destroy(k->cores[i]);
    free(k->cores);
    k->cores = NULL;
    k->n_cores = 0;
    kernel_models_stop(k);
    sched_destroy(k->sched);
    k->sched = NULL;
}

