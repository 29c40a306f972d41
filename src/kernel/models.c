/* The live model table: what POST /core/refresh does to llms.models.
 *
 * k->cores is allocated once with room for KERNEL_MAX_CORES pointers and
 * only ever grows. A core is published by writing its slot and then
 * incrementing k->n_cores (atomic, sequentially consistent), so any thread
 * that reads n_cores sees every slot below it; a published core stays at
 * its index and stays valid until kernel_stop(). That is what lets HTTP
 * threads, the preemption driver and the managers walk k->cores and keep a
 * core pointer without a lock.
 *
 * Removing or replacing a model retires its core (llm_core.retired): the
 * lookups (kernel_find_core, kernel_default_core, /v1/models) skip it, so a
 * new call for that name reaches the replacement, or gets the usual 404
 * that names the model. Calls already queued for it or running on it finish
 * there: its engine (or remote) thread keeps serving them. Once drained, a
 * retired local engine frees its KV cache on its own (llama.c,
 * retire_release). The core itself, with a local model's weights (a
 * read-only file mapping), is freed at kernel stop, not earlier: a thread
 * that looked it up just before retirement may still be tokenising with it
 * or about to queue a call for it (which then gets 404), and no reference
 * count tracks such pointers. A kernel can publish KERNEL_MAX_CORES cores in
 * its life.
 *
 * What a refresh compares, per model name: a fingerprint of what its core
 * was built from, i.e. its llms.models entries in file order (replicas),
 * and for remote backends also llms.remote and api_keys.<backend> (the
 * key, with the ones stored by /core/config/update merged in). A new name
 * is built, started and published. A changed fingerprint builds the new
 * core, publishes it, then retires the old one, so at no moment is there
 * no core for the name. A name gone from the file is retired. A model
 * whose new core cannot be built (missing GGUF, bad setting) keeps its old
 * core, and its change is reported as not applied with the reason. Models
 * that did not come from the file (--model, the built-in test model) are
 * never retired by a refresh; a file entry of the same name replaces them.
 *
 * Threads: kernel_models_start/stop on the main thread during kernel start
 * and stop; refresh and list on HTTP threads. mu guards the state (the
 * per-name records and the busy flag) and is a leaf lock, never held while
 * a core is built or started; busy makes refreshes one at a time (a second
 * gets AIOS_EBUSY), which also makes the refreshing thread the only writer
 * of k->cores. */
#include "kernel/models.h"

#include "llm/remote.h"
#include "util/err.h"
#include "util/log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kernel_models {
    pthread_mutex_t mu;
    bool busy;
    /* per served name, in order: {"name", "info": {name, backend, n_ctx,
     * path?, hostname?, replicas?}, "fp": fingerprint or null (not from
     * the file)} */
    json_t *recs;
    /* api_keys and llms.remote as last applied (for the change report) */
    json_t *keys, *remote;
};

void kernel_models_merge_keys(struct aios_config *cfg)
{
    char *path = config_resolve_path(cfg, "api_keys.json");
    json_t *stored = path ? json_load_file(path, 0, NULL) : NULL;
    free(path);
    if (!json_is_object(stored) || !json_object_size(stored) || !json_is_object(cfg->raw)) {
        json_decref(stored);
        return;
    }
    json_t *keys = json_object_get(cfg->raw, "api_keys");
    if (!json_is_object(keys)) {
        keys = json_object();
        json_object_set_new(cfg->raw, "api_keys", keys);
    }
    const char *p;
    json_t *v;
    json_object_foreach(stored, p, v)
        if (json_is_string(v) && json_string_length(v)) json_object_set(keys, p, v);
    json_decref(stored);
}

/* the entries of cfg's llms.models named name, in file order (new array) */
static json_t *entries_named(const struct aios_config *cfg, const char *name)
{
    json_t *list = config_lookup(cfg, "llms.models"), *out = json_array(), *m;
    size_t i;
    json_array_foreach(list, i, m)
    {
        const char *n = json_string_value(json_object_get(m, "name"));
        if (n && !strcmp(n, name)) json_array_append(out, m);
    }
    return out;
}

/* what a core for name is built from; NULL when no entry of cfg's file
 * names it */
static json_t *fingerprint(const struct aios_config *cfg, const char *name)
{
    json_t *ents = entries_named(cfg, name);
    if (json_array_size(ents) == 0) {
        json_decref(ents);
        return NULL;
    }
    json_t *fp = json_pack("{s:o}", "entries", ents);
    const char *backend = json_string_value(json_object_get(json_array_get(ents, 0), "backend"));
    char lower[64] = "";
    for (size_t i = 0; backend && backend[i] && i + 1 < sizeof lower; i++)
        lower[i] = (char)(backend[i] >= 'A' && backend[i] <= 'Z' ? backend[i] + 32 : backend[i]);
    const struct remote_backend_info *bi = remote_backend_find(lower);
    if (bi) {
        char key[96];
        snprintf(key, sizeof key, "api_keys.%s", bi->key_name);
        json_t *remote = config_lookup(cfg, "llms.remote"), *k = config_lookup(cfg, key);
        if (remote) json_object_set(fp, "remote", remote);
        if (k) json_object_set(fp, "key", k);
    }
    return fp;
}

/* model entries as shown in a change record: inline keys hidden */
static json_t *shown(json_t *fp)
{
    json_t *ents = json_deep_copy(json_object_get(fp, "entries")), *e;
    size_t i;
    json_array_foreach(ents, i, e)
        if (json_object_get(e, "api_key")) json_object_set_new(e, "api_key", json_string("(hidden)"));
    if (json_array_size(ents) == 1) {
        json_t *one = json_incref(json_array_get(ents, 0));
        json_decref(ents);
        return one;
    }
    return ents;
}

static json_t *info_of(const struct cfg_model *m, size_t n_replicas)
{
    json_t *o = json_pack("{s:s,s:s,s:i}", "name", m->name, "backend", m->backend, "n_ctx", m->n_ctx);
    if (m->path) json_object_set_new(o, "path", json_string(m->path));
    if (m->hostname) json_object_set_new(o, "hostname", json_string(m->hostname));
    if (n_replicas > 1) json_object_set_new(o, "replicas", json_integer((json_int_t)n_replicas));
    return o;
}

static json_t *rec_find(json_t *recs, const char *name, size_t *idx)
{
    size_t i;
    json_t *r;
    json_array_foreach(recs, i, r)
    {
        if (!strcmp(json_string_value(json_object_get(r, "name")), name)) {
            if (idx) *idx = i;
            return r;
        }
    }
    return NULL;
}

int kernel_models_start(struct kernel *k)
{
    struct kernel_models *km = calloc(1, sizeof *km);
    if (!km) return AIOS_ENOMEM;
    pthread_mutex_init(&km->mu, NULL);
    km->recs = json_array();
    for (size_t i = 0; i < k->cfg.n_models; i++) {
        const struct cfg_model *m = &k->cfg.models[i];
        if (rec_find(km->recs, m->name, NULL) || !kernel_find_core(k, m->name)) continue;
        size_t n = 0;
        for (size_t j = i; j < k->cfg.n_models; j++) n += !strcmp(k->cfg.models[j].name, m->name);
        json_t *fp = fingerprint(&k->cfg, m->name);
        json_array_append_new(km->recs, json_pack("{s:s,s:o,s:o}", "name", m->name, "info",
                                                  info_of(m, n), "fp", fp ? fp : json_null()));
    }
    json_t *keys = config_lookup(&k->cfg, "api_keys"), *remote = config_lookup(&k->cfg, "llms.remote");
    km->keys = keys ? json_deep_copy(keys) : json_null();
    km->remote = remote ? json_deep_copy(remote) : json_null();
    k->models = km;
    return 0;
}

void kernel_models_stop(struct kernel *k)
{
    struct kernel_models *km = k->models;
    if (!km) return;
    json_decref(km->recs);
    json_decref(km->keys);
    json_decref(km->remote);
    pthread_mutex_destroy(&km->mu);
    free(km);
    k->models = NULL;
}

/* Build and start the core for nc's entries named name. */
static int build_core(struct kernel *k, const struct aios_config *nc, const char *name,
                      struct llm_core **out, char *err, size_t errlen)
{
    *out = NULL;
    size_t idx = 0;
    while (idx < nc->n_models && strcmp(nc->models[idx].name, name)) idx++;
    if (idx == nc->n_models) {
        snprintf(err, errlen, "no llms.models entry named %s", name);
        return AIOS_EINVAL;
    }
    const struct cfg_model *m = &nc->models[idx];
    int rc;
    if (llm_backend_is_remote(m->backend)) rc = llm_remote_create_entry(out, nc, idx, err, errlen);
    else if (!strcmp(m->backend, "llamacpp")) rc = llm_llama_create(out, m, nc, err, errlen);
    else {
        snprintf(err, errlen, "backend '%s' is not supported", m->backend);
        return AIOS_ECONFIG;
    }
    if (rc) return rc;
    if (!*out) {
        snprintf(err, errlen, "no core was built");
        return AIOS_EINVAL;
    }
    (*out)->price_prompt = m->price_prompt;
    (*out)->price_completion = m->price_completion;
    if (k->n_cores >= KERNEL_MAX_CORES) {
        snprintf(err, errlen, "this kernel has published %d models since it started, the most "
                 "it can; restart it to apply", KERNEL_MAX_CORES);
        rc = AIOS_EBUSY;
        goto fail;
    }
    rc = (*out)->ops->start(*out, k->sched);
    if (rc) {
        snprintf(err, errlen, "cannot start the engine for %s", name);
        goto fail;
    }
    return 0;
fail:
    (*out)->ops->stop(*out);
    (*out)->ops->destroy(*out);
    *out = NULL;
    return rc;
}

/* publish c (this thread is the only writer: busy is held) */
static void publish(struct kernel *k, struct llm_core *c)
{
    size_t n = k->n_cores;
    k->cores[n] = c;
    k->n_cores = n + 1;
}

/* retire every serving core named name except keep; how many */
static int retire(struct kernel *k, const char *name, const struct llm_core *keep)
{
    int n = 0;
    size_t nc = k->n_cores;
    for (size_t i = 0; i < nc; i++) {
        struct llm_core *c = k->cores[i];
        if (c == keep || c->retired || strcmp(c->name, name)) continue;
        c->retired = true;
        n++;
    }
    return n;
}

void kernel_models_add_change(json_t *changes, const char *key, json_t *old, json_t *new,
                              bool applied, const char *note)
{
    json_t *o = json_pack("{s:s,s:o?,s:o?,s:b}", "key", key, "old", old, "new", new, "applied",
                          applied);
    if (note) json_object_set_new(o, "note", json_string(note));
    json_array_append_new(changes, o);
}

/* one model name of the new file (or of the old state, when removed) */
static void refresh_one(struct kernel *k, const struct aios_config *nc, const char *name,
                        json_t *old_fp, json_t *changes, json_t *unchanged)
{
    struct kernel_models *km = k->models;
    char key[300], note[1400], err[1024] = "";
    snprintf(key, sizeof key, "llms.models[%s]", name);
    json_t *new_fp = fingerprint(nc, name);
    if (!new_fp) { /* removed from the file */
        int n = retire(k, name, NULL);
        pthread_mutex_lock(&km->mu);
        size_t idx;
        if (rec_find(km->recs, name, &idx)) json_array_remove(km->recs, idx);
        pthread_mutex_unlock(&km->mu);
        snprintf(note, sizeof note, "removed model: retired%s; calls already running on it "
                 "finish, new calls for it get 404", n ? "" : " (it was not serving)");
        kernel_models_add_change(changes, key, shown(old_fp), NULL, true, note);
        LOG_INFO("kernel", "refresh: model %s retired", name);
        return;
    }
    if (old_fp && json_equal(old_fp, new_fp)) {
        json_array_append_new(unchanged, json_string(name));
        json_decref(new_fp);
        return;
    }
    struct llm_core *c = NULL;
    int rc = build_core(k, nc, name, &c, err, sizeof err);
    if (rc) {
        snprintf(note, sizeof note, "%s model not loaded (%s); %s", old_fp ? "changed" : "new",
                 err, old_fp ? "the old one keeps serving" : "fix the entry and refresh again");
        kernel_models_add_change(changes, key, old_fp ? shown(old_fp) : NULL, shown(new_fp), false,
                                 note);
        LOG_WARN("kernel", "refresh: model %s: %s", name, err);
        json_decref(new_fp);
        return;
    }
    publish(k, c);
    int n_old = retire(k, name, c);
    /* record it */
    size_t n = 0, first = nc->n_models;
    for (size_t j = 0; j < nc->n_models; j++)
        if (!strcmp(nc->models[j].name, name)) {
            n++;
            if (first == nc->n_models) first = j;
        }
    json_t *rec = json_pack("{s:s,s:o,s:O}", "name", name, "info", info_of(&nc->models[first], n),
                            "fp", new_fp);
    pthread_mutex_lock(&km->mu);
    size_t idx;
    if (rec_find(km->recs, name, &idx)) json_array_set_new(km->recs, idx, rec);
    else json_array_append_new(km->recs, rec);
    pthread_mutex_unlock(&km->mu);
    if (old_fp || n_old)
        snprintf(note, sizeof note, "changed model: the new one serves new calls; calls already "
                 "running on the old one finish there");
    else snprintf(note, sizeof note, "new model: loaded and serving");
    kernel_models_add_change(changes, key, old_fp ? shown(old_fp) : NULL, shown(new_fp), true,
                             note);
    LOG_INFO("kernel", "refresh: model %s %s (%s)", name, old_fp || n_old ? "replaced" : "added",
             c->backend);
    json_decref(new_fp);
}

int kernel_models_refresh(struct kernel *k, const struct aios_config *nc, json_t *changes,
                          json_t *unchanged)
{
    struct kernel_models *km = k->models;
    pthread_mutex_lock(&km->mu);
    if (km->busy) {
        pthread_mutex_unlock(&km->mu);
        return AIOS_EBUSY;
    }
    km->busy = true;
    json_t *before = json_deep_copy(km->recs);
    pthread_mutex_unlock(&km->mu);

    /* names of the new file, in order, then names gone from it */
    json_t *names = json_array(), *m, *r;
    size_t i;
    json_array_foreach(config_lookup(nc, "llms.models"), i, m)
    {
        json_t *n = json_object_get(m, "name");
        bool seen = false;
        size_t j;
        json_t *x;
        json_array_foreach(names, j, x) seen |= json_equal(x, n);
        if (json_is_string(n) && !seen) json_array_append(names, n);
    }
    json_array_foreach(names, i, m)
    {
        const char *name = json_string_value(m);
        json_t *old = rec_find(before, name, NULL);
        json_t *ofp = old ? json_object_get(old, "fp") : NULL;
        refresh_one(k, nc, name, json_is_object(ofp) ? ofp : NULL, changes, unchanged);
    }
    json_array_foreach(before, i, r)
    {
        json_t *fp = json_object_get(r, "fp");
        const char *name = json_string_value(json_object_get(r, "name"));
        bool listed = false;
        size_t j;
        json_t *x;
        json_array_foreach(names, j, x) listed |= !strcmp(json_string_value(x), name);
        if (listed) continue;
        if (json_is_object(fp)) refresh_one(k, nc, name, fp, changes, unchanged);
        else json_array_append_new(unchanged, json_string(name)); /* not from the file: stays */
    }
    json_decref(names);
    json_decref(before);
    /* the settings every remote model's fingerprint holds (only the refresh
     * thread touches keys and remote: busy is held) */
    json_t *keys = config_lookup(nc, "api_keys"), *remote = config_lookup(nc, "llms.remote");
    if (!json_equal(keys ? keys : json_null(), km->keys)) {
        kernel_models_add_change(changes, "api_keys", NULL, NULL, true,
                                 "api keys changed (values not shown): remote models that "
                                 "use a changed key were rebuilt with it (their llms.models "
                                 "entries above)");
        json_decref(km->keys);
        km->keys = keys ? json_deep_copy(keys) : json_null();
    }
    if (!json_equal(remote ? remote : json_null(), km->remote)) {
        kernel_models_add_change(changes, "llms.remote", json_incref(km->remote),
                                 remote ? json_deep_copy(remote) : NULL, true,
                                 "remote models were rebuilt with it (their llms.models "
                                 "entries above)");
        json_decref(km->remote);
        km->remote = remote ? json_deep_copy(remote) : json_null();
    }
    pthread_mutex_lock(&km->mu);
    km->busy = false;
    pthread_mutex_unlock(&km->mu);
    return 0;
}

json_t *kernel_models_list(struct kernel *k)
{
    struct kernel_models *km = k->models;
    json_t *out = json_array(), *r;
    size_t i;
    if (!km) return out;
    pthread_mutex_lock(&km->mu);
    json_t *recs = json_deep_copy(km->recs);
    pthread_mutex_unlock(&km->mu);
    json_array_foreach(recs, i, r)
    {
        json_t *o = json_deep_copy(json_object_get(r, "info"));
        json_object_set_new(o, "served",
                            json_boolean(kernel_find_core(k, json_string_value(json_object_get(o, "name"))) != NULL));
        json_array_append_new(out, o);
    }
    json_decref(recs);
    return out;
}
