/* The memory manager.
 *
 * Serves the AIOS memory operations (add_memory, get_memory, update_memory,
 * remove_memory, retrieve_memory, retrieve_memory_raw, add_agentic_memory,
 * and the aios extension memory_stats) for the memory syscalls the kernel
 * routes here (SYSCALL_KIND_MEMORY, executed on a small pool of threads).
 *
 * Namespaces: every note belongs to the agent that made the call
 * (sc->agent). Lookups are by (agent, id); an id of another agent is not
 * found, so the answer is 404 whether or not the id exists elsewhere and
 * ids leak nothing. Retrieval searches only the caller's notes. Another
 * agent's namespace is used only when params.owner (or params.namespace)
 * names it and the access manager opens it (a privilege group that names
 * it, or the owner's share_memory grant; src/access/ns.c): else 404.
 *
 * Two tiers, as the AIOS paper describes:
 *  - durable: every note lives in the SQLite store (mem_store.c). Writes go
 *    through to it before the operation answers, so an acknowledged note
 *    survives a crash of the kernel.
 *  - working set: each agent has an in-RAM map id -> note, bounded by
 *    memory.quota_bytes (mem_note_bytes() per note). Get, update and
 *    retrieval touch notes; when the agent's bytes exceed the quota, notes
 *    are evicted by LRU-K (K = 2, mem_lruk.c) until it fits again. An
 *    evicted note is only dropped from RAM; the next access faults it back
 *    from SQLite. So eviction never loses anything, and it is invisible to
 *    the agent except in memory_stats. A note larger than the quota is
 *    stored but not kept resident.
 *
 * Threads and locks: the executor pool threads call mem_manager_exec()
 * concurrently. `m->mu` guards only the agent table (agents are created on
 * first use and live until the manager closes). Each agent has its own
 * mutex, held for the whole of one operation on that agent, including its
 * SQL, so the working set and the store change together and agents do not
 * wait on each other (except for SQLite's single writer). The two are never
 * held together: the agent is looked up under m->mu, m->mu is released,
 * then the agent's lock is taken. add_agentic_memory asks the LLM before
 * taking any lock.
 *
 * Ownership: the manager owns agents, their entries and notes. Responses
 * are new JSON objects owned by the caller. */
#include "memory/mem.h"

#include "access/access.h"
#include "kernel/kernel.h"
#include "kernel/query.h"
#include "llm/embed.h"
#include "memory/mem_lruk.h"
#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <ctype.h>
#include <libgen.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mem_entry {
    struct mem_note *note;
    size_t bytes;
    struct mem_lruk_node lru;
    struct mem_entry *next; /* hash chain */
};

struct mem_agent {
    char *name;
    pthread_mutex_t mu; /* guards everything below */
    struct mem_entry **buckets;
    size_t n_buckets, n;
    size_t bytes;
    struct mem_lruk lruk;
    uint64_t n_hits, n_faults, n_evictions;
    bool vec_complete; /* every note of the agent has a vector (hybrid retrieval) */
    struct mem_agent *next; /* in m->agents[] chain; immutable once linked */
};

#define MEM_AGENT_BUCKETS 256

struct mem_manager {
    struct mem_opts o; /* db_path owned */
    struct kernel *k;
    struct mem_store *store;
    pthread_mutex_t mu; /* guards agents[] */
    struct mem_agent *agents[MEM_AGENT_BUCKETS];
};

/* ---- agents ---- */

static struct mem_agent *agent_get(struct mem_manager *m, const char *name)
{
    size_t b = util_fnv1a64(name) % MEM_AGENT_BUCKETS;
    pthread_mutex_lock(&m->mu);
    struct mem_agent *a = m->agents[b];
    while (a && strcmp(a->name, name)) a = a->next;
    if (!a) {
        a = calloc(1, sizeof *a);
        if (a) a->name = strdup(name);
        if (a && a->name) {
            pthread_mutex_init(&a->mu, NULL);
            mem_lruk_init(&a->lruk);
            a->next = m->agents[b];
            m->agents[b] = a;
        } else if (a) {
            free(a);
            a = NULL;
        }
    }
    pthread_mutex_unlock(&m->mu);
    return a;
}

static void agent_free(struct mem_agent *a)
{
    for (size_t i = 0; i < a->n_buckets; i++) {
        struct mem_entry *e = a->buckets[i];
        while (e) {
            struct mem_entry *n = e->next;
            mem_note_free(e->note);
            free(e);
            e = n;
        }
    }
    free(a->buckets);
    mem_lruk_free(&a->lruk);
    pthread_mutex_destroy(&a->mu);
    free(a->name);
    free(a);
}

/* ---- the working set (agent lock held) ---- */

static struct mem_entry *ws_find(struct mem_agent *a, const char *id)
{
    if (!a->n_buckets) return NULL;
    struct mem_entry *e = a->buckets[util_fnv1a64(id) & (a->n_buckets - 1)];
    while (e && strcmp(e->note->id, id)) e = e->next;
    return e;
}

static int ws_grow(struct mem_agent *a)
{
    size_t nb = a->n_buckets ? a->n_buckets * 2 : 64;
    struct mem_entry **b = calloc(nb, sizeof *b);
    if (!b) return AIOS_ENOMEM;
    for (size_t i = 0; i < a->n_buckets; i++) {
        struct mem_entry *e = a->buckets[i];
        while (e) {
            struct mem_entry *n = e->next;
            size_t h = util_fnv1a64(e->note->id) & (nb - 1);
            e->next = b[h];
            b[h] = e;
            e = n;
        }
    }
    free(a->buckets);
    a->buckets = b;
    a->n_buckets = nb;
    return 0;
}

static void ws_unlink(struct mem_agent *a, struct mem_entry *e)
{
    struct mem_entry **pp = &a->buckets[util_fnv1a64(e->note->id) & (a->n_buckets - 1)];
    while (*pp != e) pp = &(*pp)->next;
    *pp = e->next;
    mem_lruk_remove(&a->lruk, &e->lru);
    a->n--;
    a->bytes -= e->bytes;
}

static void ws_drop(struct mem_agent *a, const char *id)
{
    struct mem_entry *e = ws_find(a, id);
    if (!e) return;
    ws_unlink(a, e);
    mem_note_free(e->note);
    free(e);
}

static struct mem_entry *entry_of(struct mem_lruk_node *n)
{
    return (struct mem_entry *)((char *)n - offsetof(struct mem_entry, lru));
}

/* Evict by LRU-K until the agent fits its quota. */
static void ws_evict(struct mem_manager *m, struct mem_agent *a)
{
    while (a->bytes > m->o.quota_bytes) {
        struct mem_lruk_node *v = mem_lruk_victim(&a->lruk);
        if (!v) break;
        struct mem_entry *e = entry_of(v);
        LOG_DEBUG("memory", "agent %s: evict %s (%zu bytes)", a->name, e->note->id, e->bytes);
        ws_unlink(a, e);
        mem_note_free(e->note);
        free(e);
        a->n_evictions++;
    }
}

/* Make n resident (taking it; replacing a resident copy) and count an
 * access. On allocation failure the note is freed: the store has it. */
static void ws_put(struct mem_manager *m, struct mem_agent *a, struct mem_note *n)
{
    if (mem_note_bytes(n) > m->o.quota_bytes) {
        /* it could never stay; do not flush the working set trying */
        ws_drop(a, n->id);
        mem_note_free(n);
        return;
    }
    struct mem_entry *e = ws_find(a, n->id);
    if (e) {
        a->bytes -= e->bytes;
        mem_note_free(e->note);
        e->note = n;
        e->bytes = mem_note_bytes(n);
        a->bytes += e->bytes;
    } else {
        if (a->n + 1 > a->n_buckets && ws_grow(a)) goto oom;
        e = calloc(1, sizeof *e);
        if (!e) goto oom;
        e->note = n;
        e->bytes = mem_note_bytes(n);
        mem_lruk_node_init(&e->lru);
        size_t h = util_fnv1a64(n->id) & (a->n_buckets - 1);
        e->next = a->buckets[h];
        a->buckets[h] = e;
        a->n++;
        a->bytes += e->bytes;
    }
    if (mem_lruk_access(&a->lruk, &e->lru)) {
        ws_drop(a, n->id);
        return;
    }
    ws_evict(m, a);
    return;
oom:
    mem_note_free(n);
}

/* The agent's note `id`, resident afterwards if it fits (borrowed; valid
 * until the agent's lock is released or the working set changes). */
static int ws_load(struct mem_manager *m, struct mem_agent *a, const char *id,
                   struct mem_note **out)
{
    *out = NULL;
    struct mem_entry *e = ws_find(a, id);
    if (e) {
        a->n_hits++;
        if (mem_lruk_access(&a->lruk, &e->lru)) return AIOS_ENOMEM;
        *out = e->note;
        return 0;
    }
    struct mem_note *n = NULL;
    int rc = mem_store_get(m->store, a->name, id, &n);
    if (rc) return rc;
    a->n_faults++;
    ws_put(m, a, n);
    e = ws_find(a, id);
    if (e) {
        *out = e->note;
        return 0;
    }
    /* larger than the quota (or no memory): answer from a private copy is
     * not possible through a borrowed pointer, so read it again */
    return AIOS_ETOOBIG;
}

/* ---- notes from params ---- */

static struct mem_note *note_clone(const struct mem_note *s)
{
    struct mem_note *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    n->id = strdup(s->id);
    n->content = strdup(s->content);
    n->keywords = json_deep_copy(s->keywords);
    n->tags = json_deep_copy(s->tags);
    n->category = strdup(s->category);
    n->context = strdup(s->context);
    memcpy(n->timestamp, s->timestamp, sizeof n->timestamp);
    memcpy(n->last_accessed, s->last_accessed, sizeof n->last_accessed);
    n->links = json_deep_copy(s->links);
    n->retrieval_count = s->retrieval_count;
    n->extra = json_deep_copy(s->extra);
    if (!n->id || !n->content || !n->keywords || !n->tags || !n->category || !n->context ||
        !n->links || !n->extra) {
        mem_note_free(n);
        return NULL;
    }
    return n;
}

static bool is_note_key(const char *k)
{
    static const char *const keys[] = {"content", "id", "memory_id", "keywords", "tags",
                                       "category", "context", "links", "timestamp",
                                       "last_accessed", "retrieval_count", "evolution_history"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (!strcmp(k, keys[i])) return true;
    return false;
}

static int set_str(char **dst, json_t *v, const char *field, char *err, size_t errlen)
{
    if (!json_is_string(v)) {
        snprintf(err, errlen, "params.%s must be a string", field);
        return AIOS_EINVAL;
    }
    char *s = strdup(json_string_value(v));
    if (!s) return AIOS_ENOMEM;
    free(*dst);
    *dst = s;
    return 0;
}

/* A note field: from params first, else from params.metadata (the
 * reference accepts both). NULL or JSON null: absent. */
static json_t *field(json_t *params, json_t *meta, const char *k)
{
    json_t *v = json_object_get(params, k);
    if (!v || json_is_null(v)) v = json_object_get(meta, k);
    return json_is_null(v) ? NULL : v;
}

/* Apply the note fields present in params to n (a new note for add, a copy
 * of the stored one for update). */
static int apply_fields(json_t *params, struct mem_note *n, bool for_add, char *err, size_t errlen)
{
    int rc;
    json_t *meta = json_object_get(params, "metadata");
    if (meta && !json_is_null(meta) && !json_is_object(meta)) {
        snprintf(err, errlen, "params.metadata must be an object");
        return AIOS_EINVAL;
    }
    json_t *v = json_object_get(params, "content");
    if (for_add || (v && !json_is_null(v))) {
        if (!json_is_string(v)) {
            snprintf(err, errlen, "params.content must be a string (the text of the note)%s",
                     for_add ? "" : " or null to keep it");
            return AIOS_EINVAL;
        }
        if (for_add && json_string_length(v) == 0) {
            snprintf(err, errlen, "params.content is empty: a note needs some text");
            return AIOS_EINVAL;
        }
        if ((rc = set_str(&n->content, v, "content", err, errlen))) return rc;
    }
    static const char *const lists[] = {"keywords", "tags"};
    for (int i = 0; i < 2; i++) {
        if (!(v = field(params, meta, lists[i]))) continue;
        json_t *a = NULL;
        char f[32];
        snprintf(f, sizeof f, "params.%s", lists[i]);
        if ((rc = mem_str_list(v, f, &a, err, errlen))) return rc;
        json_t **dst = i == 0 ? &n->keywords : &n->tags;
        json_decref(*dst);
        *dst = a;
    }
    if ((v = field(params, meta, "category")) && (rc = set_str(&n->category, v, "category", err, errlen)))
        return rc;
    if ((v = field(params, meta, "context")) && (rc = set_str(&n->context, v, "context", err, errlen)))
        return rc;
    if ((v = field(params, meta, "links"))) {
        if (!json_is_array(v)) {
            snprintf(err, errlen, "params.links must be a list (ids of related notes)");
            return AIOS_EINVAL;
        }
        json_decref(n->links);
        n->links = json_deep_copy(v);
    }
    if ((v = field(params, meta, "timestamp"))) {
        if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= MEM_TS_LEN) {
            snprintf(err, errlen, "params.timestamp must be a string like 202501311200 (YYYYMMDDHHMM)");
            return AIOS_EINVAL;
        }
        snprintf(n->timestamp, sizeof n->timestamp, "%s", json_string_value(v));
    }
    if (json_is_object(meta)) {
        const char *k;
        json_t *mv;
        json_object_foreach(meta, k, mv) {
            if (is_note_key(k) || !strcmp(k, "metadata")) continue;
            json_object_set(n->extra, k, mv);
        }
    }
    return 0;
}

static int note_id_param(json_t *params, bool required, const char **out, char *err, size_t errlen)
{
    *out = NULL;
    json_t *v = json_object_get(params, "memory_id");
    if (!v || json_is_null(v)) v = json_object_get(params, "id");
    if (!v || json_is_null(v)) {
        if (!required) return 0;
        snprintf(err, errlen, "params.memory_id is required (the id add_memory returned)");
        return AIOS_EINVAL;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > MEM_ID_MAX) {
        snprintf(err, errlen, "params.memory_id must be a non-empty string of at most %d bytes",
                 MEM_ID_MAX);
        return AIOS_EINVAL;
    }
    for (const char *p = json_string_value(v); *p; p++) {
        if (iscntrl((unsigned char)*p)) {
            snprintf(err, errlen, "params.memory_id must not contain control characters");
            return AIOS_EINVAL;
        }
    }
    *out = json_string_value(v);
    return 0;
}

static int check_size(struct mem_manager *m, const struct mem_note *n, char *err, size_t errlen)
{
    size_t b = mem_note_bytes(n);
    if (b > m->o.max_note_bytes) {
        snprintf(err, errlen, "the note is %zu bytes; the limit is %zu (memory.max_note_bytes)", b,
                 m->o.max_note_bytes);
        return AIOS_ETOOBIG;
    }
    return 0;
}

/* ---- responses ---- */

static json_t *resp_new(const char *id)
{
    return json_pack("{s:s,s:s?,s:n,s:n,s:n,s:b,s:n}", "response_class", "memory", "memory_id", id,
                     "content", "metadata", "search_results", "success", 1, "error");
}

static void not_found(const char *agent, const char *id, char *err, size_t errlen)
{
    snprintf(err, errlen, "no memory '%s' in the namespace of agent '%s'", id, agent);
}

/* ---- embeddings (hybrid retrieval; only with m->o.emb) ---- */

/* Embed the texts and store them as the vectors of notes ids (agent lock
 * held: the notes cannot change meanwhile). A failure only logs: a note
 * without a vector gets one at the next retrieval. */
static void embed_notes(struct mem_manager *m, struct mem_agent *a, const char *const *ids,
                        char *const *texts, size_t n)
{
    int dim = emb_dim(m->o.emb);
    float *v = malloc(n * (size_t)dim * sizeof *v);
    size_t ok = 0;
    const char **okid = calloc(n ? n : 1, sizeof *okid);
    if (!v || !okid) goto out;
    for (size_t i = 0; i < n; i++) {
        if (emb_text(m->o.emb, texts[i], strlen(texts[i]), v + ok * (size_t)dim)) continue;
        okid[ok++] = ids[i];
    }
    if (mem_store_vec_set(m->store, a->name, okid, v, ok, dim) == 0 && ok == n) goto out;
    a->vec_complete = false;
    LOG_WARN("memory", "agent %s: %zu of %zu vectors not stored; retried at the next retrieval",
             a->name, n - ok, n);
out:
    free(v);
    free(okid);
}

#define MEM_BACKFILL_MAX 256 /* notes embedded per retrieval that lack a vector */

static int cmp_hit(const void *x, const void *y)
{
    const struct mem_hit *a = x, *b = y;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    return a->nid < b->nid ? -1 : a->nid > b->nid;
}

/* Hybrid retrieval (agent lock held): the best C notes by BM25 and the best
 * C by cosine with qv (C = max(4k, 32)), each candidate scored with both
 * (the exact BM25 of a vector-only candidate, the cosine of a BM25-only
 * one), score = emb_hybrid(weight, cosine, bm25 / best bm25), best k
 * first. Candidates are row ids and numbers; only the k winners are read.
 * Notes without a vector (added before the model was configured, or by a
 * bulk load) are embedded first, up to MEM_BACKFILL_MAX per call, unless
 * the agent is known to have none missing. */
static int hybrid_search(struct mem_manager *m, struct mem_agent *a, const char *text,
                         const float *qv, int k, bool backfill, struct mem_hit **out,
                         size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    int dim = emb_dim(m->o.emb);
    int rc;
    if (!a->vec_complete && backfill) {
        json_t *miss = NULL;
        if ((rc = mem_store_vec_missing(m->store, a->name, MEM_BACKFILL_MAX, &miss))) return rc;
        size_t nm = json_array_size(miss);
        const char **ids = calloc(nm ? nm : 1, sizeof *ids);
        char **texts = calloc(nm ? nm : 1, sizeof *texts);
        if (ids && texts) {
            for (size_t i = 0; i < nm; i++) {
                ids[i] = json_string_value(json_array_get(json_array_get(miss, i), 0));
                texts[i] = (char *)json_string_value(json_array_get(json_array_get(miss, i), 1));
            }
            a->vec_complete = nm < MEM_BACKFILL_MAX; /* embed_notes clears it on failure */
            if (nm) embed_notes(m, a, ids, texts, nm);
        }
        free(ids);
        free(texts);
        json_decref(miss);
    }

    size_t c = (size_t)(k * 4 > 32 ? k * 4 : 32), nb = 0, nv = 0, n = 0;
    struct mem_hit *all = calloc(2 * c, sizeof *all);
    struct emb_hit *vh = NULL;
    if (!all) return AIOS_ENOMEM;
    if ((rc = mem_store_search_ids(m->store, a->name, text, (int)c, all, &nb))) goto out;
    if ((rc = mem_store_vec_scan(m->store, a->name, qv, dim, &vh, &nv))) goto out;
    /* the best C by cosine that BM25 did not bring, with BM25 0 for now */
    if (nv) qsort(vh, nv, sizeof *vh, emb_hit_cmp_cosine);
    n = nb;
    for (size_t j = 0; j < nv && j < c; j++) {
        bool dup = false;
        for (size_t i = 0; i < nb && !dup; i++) dup = all[i].nid == vh[j].id;
        if (!dup) all[n++] = (struct mem_hit){.nid = vh[j].id};
    }
    if ((rc = mem_store_bm25_of(m->store, text, all + nb, n - nb))) goto out;
    /* every candidate's cosine, by row id */
    if (nv) qsort(vh, nv, sizeof *vh, emb_hit_cmp_id);
    double best = 0, w = emb_weight(m->o.emb);
    for (size_t i = 0; i < n; i++) {
        struct emb_hit key = {.id = all[i].nid};
        struct emb_hit *f = nv ? bsearch(&key, vh, nv, sizeof *vh, emb_hit_cmp_id) : NULL;
        all[i].cosine = f ? f->cosine : 0;
        if (all[i].bm25 > best) best = all[i].bm25;
    }
    for (size_t i = 0; i < n; i++)
        all[i].score = emb_hybrid(w, all[i].cosine, best > 0 ? all[i].bm25 / best : 0);
    if (n) qsort(all, n, sizeof *all, cmp_hit);
    if (n > (size_t)k) n = (size_t)k;
    if ((rc = mem_store_get_nids(m->store, a->name, all, n))) goto out;
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (all[i].note) all[kept++] = all[i]; /* a note gone meanwhile is skipped */
    n = kept;
    *out = all;
    *n_out = n;
    all = NULL;
out:
    if (all) mem_hits_free(all, n);
    free(vh);
    return rc;
}

/* ---- operations ---- */

static int op_add(struct mem_manager *m, struct mem_agent *a, json_t *params,
                  const struct mem_analysis *an, json_t **resp, char *err, size_t errlen)
{
    const char *id = NULL;
    int rc = note_id_param(params, false, &id, err, errlen);
    if (rc) return rc;
    float *vec = NULL;
    struct mem_note *n = mem_note_new();
    if (!n) return AIOS_ENOMEM;
    mem_ts_now(n->timestamp);
    memcpy(n->last_accessed, n->timestamp, sizeof n->last_accessed);
    if (an) {
        /* the model's analysis first; what the agent gave explicitly wins */
        json_decref(n->keywords);
        json_decref(n->tags);
        n->keywords = json_deep_copy(an->keywords);
        n->tags = json_deep_copy(an->tags);
        free(n->context);
        n->context = strdup(an->context);
        if (!n->keywords || !n->tags || !n->context) {
            rc = AIOS_ENOMEM;
            goto fail;
        }
    }
    if ((rc = apply_fields(params, n, true, err, errlen))) goto fail;
    char uuid[37];
    if (id) {
        n->id = strdup(id);
    } else {
        if ((rc = mem_uuid(uuid))) goto fail;
        n->id = strdup(uuid);
    }
    if (!n->id) {
        rc = AIOS_ENOMEM;
        goto fail;
    }
    if ((rc = check_size(m, n, err, errlen))) goto fail;
    /* the vector before the lock: embedding may take a while */
    if (m->o.emb && !(vec = malloc((size_t)emb_dim(m->o.emb) * sizeof *vec))) {
        rc = AIOS_ENOMEM;
        goto fail;
    }
    if (vec && emb_text(m->o.emb, n->content, strlen(n->content), vec)) {
        LOG_WARN("memory", "agent %s: cannot embed note %s now; the next retrieval will", a->name,
                 n->id);
        free(vec);
        vec = NULL;
    }

    pthread_mutex_lock(&a->mu);
    rc = mem_store_insert(m->store, a->name, n);
    json_t *r = NULL;
    if (!rc && m->o.emb) {
        const char *ids[1] = {n->id};
        if (!vec || mem_store_vec_set(m->store, a->name, ids, vec, 1, emb_dim(m->o.emb))) {
            a->vec_complete = false; /* the next retrieval makes it */
            if (vec) LOG_WARN("memory", "agent %s: vector of %s not stored; the next retrieval "
                              "makes it", a->name, n->id);
        }
    }
    if (!rc) {
        r = resp_new(n->id);
        if (an) {
            json_t *md = json_pack("{s:O,s:O,s:s,s:s}", "keywords", n->keywords, "tags", n->tags,
                                   "context", n->context, "analysis", an->source);
            json_object_set_new(r, "metadata", md);
        }
        ws_put(m, a, n); /* takes n */
        n = NULL;
    }
    pthread_mutex_unlock(&a->mu);
    if (rc == MEM_EEXISTS)
        snprintf(err, errlen, "agent '%s' already has a memory '%s'; use update_memory to change it",
                 a->name, id);
    if (rc) goto fail;
    free(vec);
    if (!r) return AIOS_ENOMEM;
    *resp = r;
    return 0;
fail:
    free(vec);
    mem_note_free(n);
    return rc;
}

static int op_get(struct mem_manager *m, struct mem_agent *a, json_t *params, json_t **resp,
                  char *err, size_t errlen)
{
    const char *id;
    int rc = note_id_param(params, true, &id, err, errlen);
    if (rc) return rc;
    struct mem_note *n = NULL, *priv = NULL;
    json_t *r = NULL;
    pthread_mutex_lock(&a->mu);
    rc = ws_load(m, a, id, &n);
    if (rc == AIOS_ETOOBIG) rc = mem_store_get(m->store, a->name, id, &priv), n = priv;
    if (!rc) {
        r = resp_new(n->id);
        json_object_set_new(r, "content", json_string(n->content));
        json_object_set_new(r, "metadata", mem_note_metadata(n));
    }
    pthread_mutex_unlock(&a->mu);
    mem_note_free(priv);
    if (rc == AIOS_ENOTFOUND) not_found(a->name, id, err, errlen);
    if (rc) return rc;
    *resp = r;
    return r ? 0 : AIOS_ENOMEM;
}

static int op_update(struct mem_manager *m, struct mem_agent *a, json_t *params, json_t **resp,
                     char *err, size_t errlen)
{
    const char *id;
    int rc = note_id_param(params, true, &id, err, errlen);
    if (rc) return rc;
    struct mem_note *cur = NULL, *priv = NULL, *n = NULL;
    pthread_mutex_lock(&a->mu);
    rc = ws_load(m, a, id, &cur);
    if (rc == AIOS_ETOOBIG) rc = mem_store_get(m->store, a->name, id, &priv), cur = priv;
    if (rc) goto out;
    n = note_clone(cur);
    if (!n) {
        rc = AIOS_ENOMEM;
        goto out;
    }
    if ((rc = apply_fields(params, n, false, err, errlen))) goto out;
    if ((rc = check_size(m, n, err, errlen))) goto out;
    bool new_text = strcmp(cur->content, n->content) != 0;
    if ((rc = mem_store_update(m->store, a->name, n))) goto out;
    if (new_text && m->o.emb) embed_notes(m, a, (const char *const *)&n->id, &n->content, 1);
    ws_put(m, a, n);
    n = NULL;
out:
    pthread_mutex_unlock(&a->mu);
    mem_note_free(priv);
    mem_note_free(n);
    if (rc == AIOS_ENOTFOUND) not_found(a->name, id, err, errlen);
    if (rc) return rc;
    *resp = resp_new(id);
    return *resp ? 0 : AIOS_ENOMEM;
}

static int op_remove(struct mem_manager *m, struct mem_agent *a, json_t *params, json_t **resp,
                     char *err, size_t errlen)
{
    const char *id;
    int rc = note_id_param(params, true, &id, err, errlen);
    if (rc) return rc;
    pthread_mutex_lock(&a->mu);
    rc = mem_store_delete(m->store, a->name, id);
    if (!rc) ws_drop(a, id);
    pthread_mutex_unlock(&a->mu);
    if (rc == AIOS_ENOTFOUND) not_found(a->name, id, err, errlen);
    if (rc) return rc;
    *resp = resp_new(id);
    return *resp ? 0 : AIOS_ENOMEM;
}

#define MEM_MAX_K 1000

static int op_retrieve(struct mem_manager *m, struct mem_agent *a, json_t *params, bool raw,
                       json_t **resp, char *err, size_t errlen)
{
    json_t *q = json_object_get(params, "content");
    if (!q || json_is_null(q)) q = json_object_get(params, "query");
    if (!json_is_string(q)) {
        snprintf(err, errlen, "params.content (or params.query) must be a string: the text to search for");
        return AIOS_EINVAL;
    }
    json_t *kv = json_object_get(params, "k");
    if (!kv || json_is_null(kv)) kv = json_object_get(params, "n");
    json_int_t k = 5;
    if (kv && !json_is_null(kv)) {
        if (!json_is_integer(kv) || json_integer_value(kv) < 1 || json_integer_value(kv) > MEM_MAX_K) {
            snprintf(err, errlen, "params.k must be an integer from 1 to %d (how many notes to return)",
                     MEM_MAX_K);
            return AIOS_EINVAL;
        }
        k = json_integer_value(kv);
    }
    struct mem_hit *hits = NULL;
    size_t n_hits = 0;
    const char **ids = NULL;
    json_t *list = json_array(), *r = NULL;
    if (!list) return AIOS_ENOMEM;
    float *qv = NULL;
    if (m->o.emb) {
        /* the query's vector before the lock */
        qv = malloc((size_t)emb_dim(m->o.emb) * sizeof *qv);
        if (!qv || emb_text(m->o.emb, json_string_value(q), json_string_length(q), qv)) {
            free(qv);
            json_decref(list);
            snprintf(err, errlen, "the embedding model failed on the query; see the kernel log");
            return qv ? AIOS_EENGINE : AIOS_ENOMEM;
        }
    }
    pthread_mutex_lock(&a->mu);
    /* "_backfill": false (memory.auto_inject, on an HTTP thread): rank
     * what has vectors, embed nothing else now */
    bool backfill = !json_is_false(json_object_get(params, "_backfill"));
    int rc = qv ? hybrid_search(m, a, json_string_value(q), qv, (int)k, backfill, &hits, &n_hits)
                : mem_store_search(m->store, a->name, json_string_value(q), (int)k, &hits, &n_hits);
    if (rc) goto out;
    if (!raw && n_hits) {
        /* a retrieval is an access: count it durably, then in RAM */
        char ts[MEM_TS_LEN];
        mem_ts_now(ts);
        ids = calloc(n_hits, sizeof *ids);
        if (!ids) {
            rc = AIOS_ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < n_hits; i++) ids[i] = hits[i].note->id;
        if ((rc = mem_store_touch(m->store, a->name, ids, n_hits, ts))) goto out;
        for (size_t i = 0; i < n_hits; i++) {
            struct mem_note *n = hits[i].note;
            n->retrieval_count++;
            memcpy(n->last_accessed, ts, sizeof ts);
        }
    }
    for (size_t i = 0; i < n_hits; i++) {
        json_t *e = raw ? mem_note_raw(hits[i].note, hits[i].score)
                        : mem_note_result(hits[i].note, hits[i].score);
        if (e && qv) {
            /* hybrid: the parts of the score */
            json_object_set_new(e, "bm25", json_real(hits[i].bm25));
            json_object_set_new(e, "cosine", json_real(hits[i].cosine));
        }
        if (!e || json_array_append_new(list, e)) {
            rc = AIOS_ENOMEM;
            goto out;
        }
        if (!raw) {
            ws_put(m, a, hits[i].note); /* the fresh row replaces or faults in */
            hits[i].note = NULL;
        }
    }
out:
    pthread_mutex_unlock(&a->mu);
    free(qv);
    free(ids);
    mem_hits_free(hits, n_hits);
    if (!rc) {
        r = resp_new(NULL);
        if (r) json_object_set(r, "search_results", list);
        else rc = AIOS_ENOMEM;
    }
    json_decref(list);
    if (rc) return rc;
    *resp = r;
    return 0;
}

static int cmp_victim(const void *x, const void *y)
{
    const struct mem_lruk_node *a = *(struct mem_lruk_node *const *)x;
    const struct mem_lruk_node *b = *(struct mem_lruk_node *const *)y;
    bool fa = a->n_hist >= MEM_LRUK_K, fb = b->n_hist >= MEM_LRUK_K;
    if (fa != fb) return fa ? 1 : -1;
    return a->hist[0] < b->hist[0] ? -1 : a->hist[0] > b->hist[0];
}

/* aios extension: the agent's two tiers, resident ids in eviction order */
static int op_stats(struct mem_manager *m, struct mem_agent *a, json_t **resp)
{
    long long n_notes = 0;
    json_t *ids = json_array();
    if (!ids) return AIOS_ENOMEM;
    pthread_mutex_lock(&a->mu);
    int rc = mem_store_count(m->store, a->name, &n_notes);
    struct mem_lruk_node **v = a->lruk.n ? malloc(a->lruk.n * sizeof *v) : NULL;
    if (v) {
        memcpy(v, a->lruk.heap, a->lruk.n * sizeof *v);
        qsort(v, a->lruk.n, sizeof *v, cmp_victim);
        for (size_t i = 0; i < a->lruk.n; i++)
            json_array_append_new(ids, json_string(entry_of(v[i])->note->id));
        free(v);
    }
    json_t *md = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:O}", "n_notes", (json_int_t)n_notes,
                           "n_resident", (json_int_t)a->n, "resident_bytes", (json_int_t)a->bytes,
                           "quota_bytes", (json_int_t)m->o.quota_bytes, "n_hits",
                           (json_int_t)a->n_hits, "n_faults", (json_int_t)a->n_faults,
                           "n_evictions", (json_int_t)a->n_evictions, "eviction_order", ids);
    pthread_mutex_unlock(&a->mu);
    json_decref(ids);
    if (rc) {
        json_decref(md);
        return rc;
    }
    json_t *r = resp_new(NULL);
    if (!r || !md) {
        json_decref(r);
        json_decref(md);
        return AIOS_ENOMEM;
    }
    json_object_set_new(r, "metadata", md);
    *resp = r;
    return 0;
}

static int status_for(int rc)
{
    switch (rc) {
    case AIOS_EINVAL: return 400;
    case AIOS_EPERM: return 403;
    case AIOS_ENOTFOUND: return 404;
    case MEM_EEXISTS: return 409;
    case AIOS_ETOOBIG: return 413;
    case AIOS_ESHUTDOWN: return 503;
    default: return 500;
    }
}

/* share_memory {agent, mode: "r"|"rw" (default r), expires_in: seconds},
 * unshare_memory {agent}, memory_shares {}: the caller's own namespace */
static int op_share(struct acc_mgr *acc, const char *agent, const char *op, json_t *params,
                    json_t **resp, char *err, size_t errlen)
{
    json_t *own = json_object_get(params, "owner");
    if (json_is_string(own) && json_string_length(own) && strcmp(json_string_value(own), agent)) {
        snprintf(err, errlen, "only the owner of a memory namespace can share it");
        return AIOS_EPERM;
    }
    if (!acc) {
        snprintf(err, errlen, "sharing memory needs the access manager (not running)");
        return AIOS_EINVAL;
    }
    if (!strcmp(op, "memory_shares")) {
        *resp = json_pack("{s:s,s:o,s:b}", "response_class", "memory", "shares",
                          acc_mem_shares_json(acc, agent), "success", 1);
        return *resp ? 0 : AIOS_ENOMEM;
    }
    const char *to = json_string_value(json_object_get(params, "agent"));
    if (!to) to = json_string_value(json_object_get(params, "grantee"));
    if (!to || !*to) {
        snprintf(err, errlen, "params.agent must name the agent to %s with",
                 !strcmp(op, "share_memory") ? "share" : "stop sharing");
        return AIOS_EINVAL;
    }
    int rc;
    if (!strcmp(op, "unshare_memory")) {
        rc = acc_mem_unshare(acc, agent, to);
        if (rc) {
            snprintf(err, errlen, "agent '%s' has no share of your memory", to);
            return rc;
        }
    } else {
        const char *mode = json_string_value(json_object_get(params, "mode"));
        if (mode && strcmp(mode, "r") && strcmp(mode, "rw")) {
            snprintf(err, errlen, "params.mode must be \"r\" (read-only, the default) or \"rw\"");
            return AIOS_EINVAL;
        }
        json_t *ex = json_object_get(params, "expires_in");
        if (ex && !json_is_null(ex) && (!json_is_integer(ex) || json_integer_value(ex) < 1)) {
            snprintf(err, errlen, "params.expires_in must be a number of seconds (>= 1)");
            return AIOS_EINVAL;
        }
        rc = acc_mem_share(acc, agent, to, mode && !strcmp(mode, "rw"),
                           json_is_integer(ex) ? json_integer_value(ex) : 0, err, errlen);
        if (rc) return rc;
    }
    *resp = json_pack("{s:s,s:s,s:b}", "response_class", "memory", "response_message",
                      !strcmp(op, "unshare_memory") ? "memory no longer shared" : "memory shared",
                      "success", 1);
    return *resp ? 0 : AIOS_ENOMEM;
}

int mem_manager_exec(struct mem_manager *m, const char *agent, const char *op, json_t *params,
                     json_t **resp, int *http_status, char *err, size_t errlen)
{
    *resp = NULL;
    *http_status = 200;
    if (errlen) err[0] = 0;
    int rc;
    struct mem_analysis an = {0};
    if (!json_is_object(params)) {
        snprintf(err, errlen, "params must be an object");
        rc = AIOS_EINVAL;
        goto out;
    }
    if (!agent || !*agent) agent = "anonymous";
    /* sharing, and another agent's namespace (params.owner / namespace):
     * the access manager decides (src/access/ns.c); not open -> 404 */
    struct acc_mgr *acc = m->k ? m->k->access : NULL;
    if (!strcmp(op, "share_memory") || !strcmp(op, "unshare_memory") ||
        !strcmp(op, "memory_shares")) {
        rc = op_share(acc, agent, op, params, resp, err, errlen);
        goto out;
    }
    const char *ns = agent;
    json_t *own = json_object_get(params, "owner");
    if (!own || json_is_null(own)) own = json_object_get(params, "namespace");
    if (own && !json_is_null(own)) {
        if (!json_is_string(own)) {
            snprintf(err, errlen, "params.owner must be the name of the agent whose memory to use");
            rc = AIOS_EINVAL;
            goto out;
        }
        const char *o = json_string_value(own);
        bool read = !strcmp(op, "get_memory") || !strcmp(op, "retrieve_memory") ||
                    !strcmp(op, "retrieve_memory_raw") || !strcmp(op, "memory_stats");
        if (*o && strcmp(o, agent)) {
            rc = acc_ns_memory_check(acc, agent, o, !read, op);
            if (rc == AIOS_EPERM) {
                snprintf(err, errlen, "agent '%s' may only read the memory of agent '%s'", agent, o);
                goto out;
            }
            if (rc) {
                snprintf(err, errlen, "no memory namespace '%s' for agent '%s': another agent's "
                         "memory is open only through a privilege group that names it or a "
                         "share_memory grant", o, agent);
                rc = AIOS_ENOTFOUND;
                goto out;
            }
            ns = o;
        }
    }
    struct mem_agent *a = agent_get(m, ns);
    if (!a) {
        rc = AIOS_ENOMEM;
        goto out;
    }
    if (!strcmp(op, "add_memory")) {
        rc = op_add(m, a, params, NULL, resp, err, errlen);
    } else if (!strcmp(op, "add_agentic_memory")) {
        json_t *c = json_object_get(params, "content");
        if (!json_is_string(c) || json_string_length(c) == 0) {
            snprintf(err, errlen, "params.content must be a non-empty string (the text of the note)");
            rc = AIOS_EINVAL;
            goto out;
        }
        rc = mem_agentic_analyze(m->k, agent, json_string_value(c), m->o.agentic_max_tokens, &an);
        if (!rc) rc = op_add(m, a, params, &an, resp, err, errlen);
    } else if (!strcmp(op, "get_memory")) {
        rc = op_get(m, a, params, resp, err, errlen);
    } else if (!strcmp(op, "update_memory")) {
        rc = op_update(m, a, params, resp, err, errlen);
    } else if (!strcmp(op, "remove_memory")) {
        rc = op_remove(m, a, params, resp, err, errlen);
    } else if (!strcmp(op, "retrieve_memory")) {
        rc = op_retrieve(m, a, params, false, resp, err, errlen);
    } else if (!strcmp(op, "retrieve_memory_raw")) {
        rc = op_retrieve(m, a, params, true, resp, err, errlen);
    } else if (!strcmp(op, "memory_stats")) {
        rc = op_stats(m, a, resp);
    } else {
        snprintf(err, errlen,
                 "unknown memory operation_type '%s'; use add_memory, add_agentic_memory, "
                 "get_memory, update_memory, remove_memory, retrieve_memory, "
                 "retrieve_memory_raw, memory_stats, share_memory, unshare_memory or "
                 "memory_shares", op);
        rc = AIOS_EINVAL;
    }
out:
    mem_analysis_free(&an);
    if (rc) {
        *http_status = status_for(rc);
        if (errlen && !err[0]) {
            if (rc == AIOS_EIO) snprintf(err, errlen, "the memory database failed; see the kernel log");
            else snprintf(err, errlen, "%s", aios_strerror(rc));
        }
    }
    return rc;
}

/* ---- lifecycle ---- */

int mem_manager_open(struct mem_manager **out, const struct mem_opts *o, struct kernel *k,
                     char *err, size_t errlen)
{
    *out = NULL;
    struct mem_manager *m = calloc(1, sizeof *m);
    if (!m) return AIOS_ENOMEM;
    m->o = *o;
    m->o.db_path = strdup(o->db_path ? o->db_path : "memory.db");
    m->k = k;
    pthread_mutex_init(&m->mu, NULL);
    if (!m->o.db_path) {
        mem_manager_close(m);
        return AIOS_ENOMEM;
    }
    char *dir = strdup(m->o.db_path);
    if (dir) {
        char *d = dirname(dir);
        if (strcmp(d, ".") && util_mkdirs(d)) {
            snprintf(err, errlen, "cannot create the directory %s for the memory database", d);
            free(dir);
            mem_manager_close(m);
            return AIOS_EIO;
        }
        free(dir);
    }
    int rc = mem_store_open(&m->store, m->o.db_path, m->o.full_sync, err, errlen);
    bool reset = false;
    if (!rc && m->o.emb) rc = mem_store_vec_model(m->store, emb_fingerprint(m->o.emb), &reset);
    if (rc) {
        if (!err[0]) snprintf(err, errlen, "memory database %s: cannot set up vectors", m->o.db_path);
        mem_manager_close(m);
        return rc;
    }
    if (reset) LOG_INFO("memory", "embedding model changed or new: note vectors are rebuilt as "
                        "agents retrieve");
    *out = m;
    return 0;
}

void mem_manager_close(struct mem_manager *m)
{
    if (!m) return;
    for (int i = 0; i < MEM_AGENT_BUCKETS; i++) {
        struct mem_agent *a = m->agents[i];
        while (a) {
            struct mem_agent *n = a->next;
            agent_free(a);
            a = n;
        }
    }
    mem_store_close(m->store);
    pthread_mutex_destroy(&m->mu);
    free(m->o.db_path);
    free(m);
}

struct mem_store *mem_manager_store(struct mem_manager *m) { return m->store; }
const struct mem_opts *mem_manager_opts(const struct mem_manager *m) { return &m->o; }

static int cfg_int(const struct aios_config *cfg, const char *key, long long lo, long long hi,
                   long long *out, char *err, size_t errlen)
{
    json_t *v = config_lookup(cfg, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        snprintf(err, errlen, "%s: expected an integer in %lld..%lld", key, lo, hi);
        return AIOS_ECONFIG;
    }
    *out = json_integer_value(v);
    return 0;
}

int mem_opts_from_config(const struct aios_config *cfg, struct mem_opts *o, char *err,
                         size_t errlen)
{
    memset(o, 0, sizeof *o);
    long long quota = (long long)MEM_DEFAULT_QUOTA, max_note = (long long)MEM_DEFAULT_MAX_NOTE;
    long long tokens = MEM_DEFAULT_AGENTIC_TOKENS, workers = MEM_DEFAULT_WORKERS;
    int rc;
    if ((rc = cfg_int(cfg, "memory.quota_bytes", 1024, 1LL << 40, &quota, err, errlen))) return rc;
    if ((rc = cfg_int(cfg, "memory.max_note_bytes", 256, 1LL << 30, &max_note, err, errlen)))
        return rc;
    if ((rc = cfg_int(cfg, "memory.agentic_max_tokens", 1, 4096, &tokens, err, errlen))) return rc;
    if ((rc = cfg_int(cfg, "memory.workers", 1, 64, &workers, err, errlen))) return rc;
    o->quota_bytes = (size_t)quota;
    o->max_note_bytes = (size_t)max_note;
    o->agentic_max_tokens = (int)tokens;
    o->workers = (int)workers;
    o->full_sync = true;
    json_t *v = config_lookup(cfg, "memory.synchronous");
    if (v && !json_is_null(v)) {
        const char *s = json_string_value(v);
        if (!s || (strcmp(s, "full") && strcmp(s, "normal"))) {
            snprintf(err, errlen, "memory.synchronous: expected \"full\" or \"normal\"");
            return AIOS_ECONFIG;
        }
        o->full_sync = !strcmp(s, "full");
    }
    v = config_lookup(cfg, "memory.provider");
    if (v && json_is_string(v) && strcmp(json_string_value(v), "in-house"))
        LOG_WARN("memory", "memory.provider '%s' is not available in this kernel; using the "
                 "built-in SQLite memory", json_string_value(v));
    const char *db = "memory.db";
    v = config_lookup(cfg, "memory.db_path");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v) || json_string_length(v) == 0) {
            snprintf(err, errlen, "memory.db_path: expected a file path");
            return AIOS_ECONFIG;
        }
        db = json_string_value(v);
    }
    v = config_lookup(cfg, "memory.auto_extract");
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v)) {
            snprintf(err, errlen, "memory.auto_extract: expected true or false");
            return AIOS_ECONFIG;
        }
        o->auto_extract = json_is_true(v);
    }
    o->inject_k = MEM_DEFAULT_INJECT_K;
    o->inject_max_tokens = MEM_DEFAULT_INJECT_TOKENS;
    v = config_lookup(cfg, "memory.auto_inject");
    if (v && !json_is_null(v)) {
        /* AIOS writes a boolean; ours may also be {enabled, k, max_tokens} */
        if (json_is_boolean(v)) {
            o->auto_inject = json_is_true(v);
        } else if (json_is_object(v)) {
            const char *key;
            json_t *x;
            json_object_foreach(v, key, x) {
                if (strcmp(key, "enabled") && strcmp(key, "k") && strcmp(key, "max_tokens")) {
                    snprintf(err, errlen, "memory.auto_inject.%s: unknown key (use enabled, k, "
                             "max_tokens)", key);
                    return AIOS_ECONFIG;
                }
            }
            x = json_object_get(v, "enabled");
            if (x && !json_is_boolean(x)) {
                snprintf(err, errlen, "memory.auto_inject.enabled: expected true or false");
                return AIOS_ECONFIG;
            }
            o->auto_inject = !x || json_is_true(x);
            long long ik = o->inject_k, it = o->inject_max_tokens;
            if ((rc = cfg_int(cfg, "memory.auto_inject.k", 1, 50, &ik, err, errlen))) return rc;
            if ((rc = cfg_int(cfg, "memory.auto_inject.max_tokens", 16, 32768, &it, err, errlen)))
                return rc;
            o->inject_k = (int)ik;
            o->inject_max_tokens = (int)it;
        } else {
            snprintf(err, errlen, "memory.auto_inject: expected true, false or {enabled, k, "
                     "max_tokens}");
            return AIOS_ECONFIG;
        }
    }
    o->db_path = config_resolve_path(cfg, db);
    return o->db_path ? 0 : AIOS_ENOMEM;
}

void mem_opts_free(struct mem_opts *o)
{
    free(o->db_path);
    o->db_path = NULL;
}

/* The executor: one memory syscall on a pool thread. */
static void mem_exec(struct syscall *sc, void *ud)
{
    struct mem_manager *m = ud;
    struct kq_req *req = sc->req;
    json_t *resp = NULL;
    int status = 0;
    char err[SYSCALL_ERRMSG_MAX];
    int rc = mem_manager_exec(m, sc->agent, req->op, req->params, &resp, &status, err, sizeof err);
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
    rc = mem_manager_open(&k->memory, &o, k, err, errlen);
    if (!rc) {
        rc = kernel_register_executor(k, SYSCALL_KIND_MEMORY, o.workers, mem_exec, k->memory);
        if (rc) snprintf(err, errlen, "cannot start the memory workers: %s", aios_strerror(rc));
        else LOG_INFO("memory", "notes in %s; working set %zu bytes per agent", o.db_path,
                      o.quota_bytes);
    }
    mem_opts_free(&o);
    return rc;
}

void mem_auto_extract(struct kernel *k, struct syscall *sc)
{
    struct mem_manager *m = k ? k->memory : NULL;
    if (!m || !m->o.auto_extract || sc->kind != SYSCALL_KIND_LLM || !sc->req || !sc->res) return;
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
    int cap = (int)(m->o.max_note_bytes / 3);
    int ul = (int)strnlen(user, (size_t)cap), al = (int)(res->len < (size_t)cap ? res->len : (size_t)cap);
    while (ul > 0 && user[ul] && ((unsigned char)user[ul] & 0xC0) == 0x80) ul--;
    while (al > 0 && (size_t)al < res->len && ((unsigned char)res->text[al] & 0xC0) == 0x80) al--;
    size_t n = (size_t)ul + (size_t)al + 32;
    char *content = malloc(n);
    if (!content) return;
    snprintf(content, n, "User: %.*s\nAssistant: %.*s", ul, user, al, res->text ? res->text : "");
    json_t *params = json_pack("{s:s,s:s,s:s}", "content", content, "category", "conversation",
                               "context", "conversation");
    free(content);
    struct kq_req *kq = params ? kq_req_new("add_memory", params) : NULL;
    struct syscall *mc = kq ? syscall_new(SYSCALL_KIND_MEMORY, sc->agent, NULL, kq, kq_req_free) : NULL;
    if (!mc) {
        LOG_WARN("memory", "auto_extract: out of memory; the turn of %s is not stored", sc->agent);
        return;
    }
    if (sched_submit(k->sched, mc))
        LOG_WARN("memory", "auto_extract: cannot queue the note for %s (shutting down)", sc->agent);
    syscall_unref(mc); /* the scheduler holds its own reference until it is done */
}

void mem_stop(struct kernel *k)
{
    mem_manager_close(k->memory);
    k->memory = NULL;
}
