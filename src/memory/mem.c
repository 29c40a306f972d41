/* The memory manager.
 *
 * Serves the AIOS memory operations (add_memory, get_memory, update_memory,
 * remove_memory, retrieve_memory, retrieve_memory_raw, add_agentic_memory,
 * and the aios extension memory_stats) for the memory syscalls the kernel
 * routes here (SYSCALL_KIND_MEMORY, executed on a small pool of threads).
 *
 * Calls: the API layer parses each query once (mem_req_parse, mem_req.c)
 * into a typed request; mem_manager_exec() dispatches it with one switch
 * to the C functions mem_add(), mem_get(), mem_update(), mem_remove(),
 * mem_retrieve() and mem_stats(), and turns their results into the AIOS
 * response. Kernel code (mem_inject.c, mem_kernel.c) calls the functions
 * or queues typed requests; nothing inside speaks JSON to the manager.
 *
 * Dependencies: the manager is given what it needs when it is opened
 * (struct mem_deps): a store (a table of functions, struct mem_store_ops;
 * SQLite, mem_store.c, by default) and callbacks for the policy (another
 * agent's namespace, sharing) and for add_agentic_memory's analysis. It
 * never sees the kernel; mem_kernel.c wires it to the kernel.
 *
 * Namespaces: every note belongs to the agent that made the call
 * (sc->agent). Lookups are by (agent, id); an id of another agent is not
 * found, so the answer is 404 whether or not the id exists elsewhere and
 * ids leak nothing. Retrieval searches only the caller's notes. Another
 * agent's namespace is used only when params.owner (or params.namespace)
 * names it and the policy (deps.ns_check: the access manager, a privilege
 * group that names it, or the owner's share_memory grant; src/access/ns.c)
 * opens it: else 404.
 *
 * Two tiers, as the AIOS paper describes:
 *  - durable: every note lives in the store (mem_store.c). Writes go
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
 * Threads and locks: the executor pool threads (and the HTTP threads of
 * memory.auto_inject) call the manager concurrently. `m->mu` guards only
 * the agent table (agents are created on first use and live until the
 * manager closes). Each agent has its own
 * mutex, held for the whole of one operation on that agent, including its
 * SQL, so the working set and the store change together and agents do not
 * wait on each other (except for SQLite's single writer). One exception:
 * add_memory of a note whose id the kernel makes inserts it (and waits
 * for the fsync that covers it) before taking the agent's lock, since no
 * other call can name that note yet; only the working-set update is
 * locked. The two are never
 * held together: the agent is looked up under m->mu, m->mu is released,
 * then the agent's lock is taken. add_agentic_memory asks the LLM before
 * taking any lock.
 *
 * Ownership: the manager owns agents, their entries and notes. Notes,
 * hits and responses it returns are new, owned by the caller. */
#include "memory/mem.h"

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
    uint64_t n_removed; /* remove_memory calls that removed a note (mem_add) */
    bool vec_complete; /* every note of the agent has a vector (hybrid retrieval) */
    struct mem_agent *next; /* in m->agents[] chain; immutable once linked */
};

#define MEM_AGENT_BUCKETS 256

struct mem_manager {
    struct mem_opts o; /* db_path owned */
    struct mem_deps d;
    const struct mem_store_ops *st; /* the store's functions (every store call goes through it) */
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
    if (e && !m->o.shared) {
        a->n_hits++;
        if (mem_lruk_access(&a->lruk, &e->lru)) return AIOS_ENOMEM;
        *out = e->note;
        return 0;
    }
    /* shared store: another kernel may have changed or removed the note
     * since it became resident here, so the store's copy replaces it */
    struct mem_note *n = NULL;
    int rc = m->st->get(m->store, a->name, id, &n);
    if (rc == AIOS_ENOTFOUND && e) ws_drop(a, id);
    if (rc) return rc;
    if (e) a->n_hits++;
    else a->n_faults++;
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

/* ---- notes ---- */

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

/* a note refused by the store's quota (MEM_EQUOTA) */
static void quota_msg(struct mem_manager *m, const char *agent, char *err, size_t errlen)
{
    int64_t used = 0;
    if (m->st->used) m->st->used(m->store, agent, &used);
    snprintf(err, errlen, "memory quota exceeded: agent '%s' has %lld bytes of notes stored and "
             "this note would take it over its limit of %lld (memory.store_quota_bytes); remove "
             "notes or store less", agent, (long long)used, (long long)m->o.store_quota_bytes);
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
    if (m->st->vec_set(m->store, a->name, okid, v, ok, dim) == 0 && ok == n) goto out;
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
        if ((rc = m->st->vec_missing(m->store, a->name, MEM_BACKFILL_MAX, &miss))) return rc;
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
    if ((rc = m->st->search_ids(m->store, a->name, text, (int)c, all, &nb))) goto out;
    if ((rc = m->st->vec_scan(m->store, a->name, qv, dim, &vh, &nv))) goto out;
    /* the best C by cosine that BM25 did not bring, with BM25 0 for now */
    if (nv) qsort(vh, nv, sizeof *vh, emb_hit_cmp_cosine);
    n = nb;
    for (size_t j = 0; j < nv && j < c; j++) {
        bool dup = false;
        for (size_t i = 0; i < nb && !dup; i++) dup = all[i].nid == vh[j].id;
        if (!dup) all[n++] = (struct mem_hit){.nid = vh[j].id};
    }
    if ((rc = m->st->bm25_of(m->store, text, all + nb, n - nb))) goto out;
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
    if ((rc = m->st->get_nids(m->store, a->name, all, n))) goto out;
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

int mem_add(struct mem_manager *m, const char *ns, const struct mem_add_params *p,
            const struct mem_analysis *an, char id_out[MEM_ID_MAX + 1], struct mem_note **stored,
            char *err, size_t errlen)
{
    if (stored) *stored = NULL; /* id_out is written on success only (p->id may be it) */
    struct mem_agent *a = agent_get(m, ns);
    if (!a) return AIOS_ENOMEM;
    float *vec = NULL;
    struct mem_note *n = mem_note_new(), *copy = NULL;
    int rc;
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
    if ((rc = mem_fields_apply(&p->f, n))) goto fail;
    if (!n->content || !n->content[0]) {
        snprintf(err, errlen, "params.content is empty: a note needs some text");
        rc = AIOS_EINVAL;
        goto fail;
    }
    char uuid[37];
    if (p->id) {
        if (!p->id[0] || strlen(p->id) > MEM_ID_MAX) {
            snprintf(err, errlen, "params.memory_id must be a non-empty string of at most %d bytes",
                     MEM_ID_MAX);
            rc = AIOS_EINVAL;
            goto fail;
        }
        n->id = strdup(p->id);
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

    /* A note with an id made here cannot be named by any other call
     * before this one answers, so its insert (which waits for the group
     * commit's fsync) runs without the agent's lock: the agent's reads
     * and other adds do not wait behind that fsync. An id the agent chose
     * can be updated or removed meanwhile, so that insert keeps the lock
     * (else a remove could run between the insert and ws_put and leave a
     * deleted note resident). */
    bool fresh = !p->id;
    uint64_t removed0 = 0;
    if (fresh) {
        pthread_mutex_lock(&a->mu);
        removed0 = a->n_removed;
        pthread_mutex_unlock(&a->mu);
        rc = m->st->insert(m->store, a->name, n);
    }
    pthread_mutex_lock(&a->mu);
    if (!fresh) rc = m->st->insert(m->store, a->name, n);
    if (!rc && m->o.emb) {
        const char *ids[1] = {n->id};
        if (!vec || m->st->vec_set(m->store, a->name, ids, vec, 1, emb_dim(m->o.emb))) {
            a->vec_complete = false; /* the next retrieval makes it */
            if (vec) LOG_WARN("memory", "agent %s: vector of %s not stored; the next retrieval "
                              "makes it", a->name, n->id);
        }
    }
    if (!rc) {
        snprintf(id_out, MEM_ID_MAX + 1, "%s", n->id);
        if (stored) copy = note_clone(n);
        /* Between the commit and this lock a retrieval may have found
         * the note and made it resident (with its access counted: keep
         * that), and its caller may even have removed it: then it must
         * not become resident again (the next access reads the store). */
        if (fresh && (ws_find(a, n->id) || a->n_removed != removed0)) mem_note_free(n);
        else ws_put(m, a, n); /* takes n */
        n = NULL;
    }
    pthread_mutex_unlock(&a->mu);
    if (rc == MEM_EEXISTS)
        snprintf(err, errlen, "agent '%s' already has a memory '%s'; use update_memory to change it",
                 a->name, p->id);
    if (rc == MEM_EQUOTA) quota_msg(m, a->name, err, errlen);
    if (rc) goto fail;
    free(vec);
    if (stored && !copy) return AIOS_ENOMEM; /* stored all the same */
    if (stored) *stored = copy;
    return 0;
fail:
    free(vec);
    mem_note_free(n);
    return rc;
}

int mem_get(struct mem_manager *m, const char *ns, const char *id, struct mem_note **out,
            char *err, size_t errlen)
{
    *out = NULL;
    struct mem_agent *a = agent_get(m, ns);
    if (!a) return AIOS_ENOMEM;
    struct mem_note *n = NULL;
    pthread_mutex_lock(&a->mu);
    int rc = ws_load(m, a, id, &n);
    if (rc == AIOS_ETOOBIG) rc = m->st->get(m->store, a->name, id, out);
    else if (!rc && !(*out = note_clone(n))) rc = AIOS_ENOMEM;
    pthread_mutex_unlock(&a->mu);
    if (rc == AIOS_ENOTFOUND) not_found(a->name, id, err, errlen);
    return rc;
}

int mem_update(struct mem_manager *m, const char *ns, const struct mem_update_params *p,
               char *err, size_t errlen)
{
    struct mem_agent *a = agent_get(m, ns);
    if (!a) return AIOS_ENOMEM;
    struct mem_note *cur = NULL, *priv = NULL, *n = NULL;
    pthread_mutex_lock(&a->mu);
    int rc = ws_load(m, a, p->id, &cur);
    if (rc == AIOS_ETOOBIG) rc = m->st->get(m->store, a->name, p->id, &priv), cur = priv;
    if (rc) goto out;
    n = note_clone(cur);
    if (!n) {
        rc = AIOS_ENOMEM;
        goto out;
    }
    if ((rc = mem_fields_apply(&p->f, n))) goto out;
    if ((rc = check_size(m, n, err, errlen))) goto out;
    bool new_text = strcmp(cur->content, n->content) != 0;
    if ((rc = m->st->update(m->store, a->name, n))) goto out;
    if (new_text && m->o.emb) embed_notes(m, a, (const char *const *)&n->id, &n->content, 1);
    ws_put(m, a, n);
    n = NULL;
out:
    pthread_mutex_unlock(&a->mu);
    mem_note_free(priv);
    mem_note_free(n);
    if (rc == AIOS_ENOTFOUND) not_found(a->name, p->id, err, errlen);
    if (rc == MEM_EQUOTA) quota_msg(m, a->name, err, errlen);
    return rc;
}

int mem_remove(struct mem_manager *m, const char *ns, const char *id, char *err, size_t errlen)
{
    struct mem_agent *a = agent_get(m, ns);
    if (!a) return AIOS_ENOMEM;
    pthread_mutex_lock(&a->mu);
    int rc = m->st->remove(m->store, a->name, id);
    if (!rc) {
        ws_drop(a, id);
        a->n_removed++;
    }
    pthread_mutex_unlock(&a->mu);
    if (rc == AIOS_ENOTFOUND) not_found(a->name, id, err, errlen);
    return rc;
}

/* mem_retrieve; nowait (an HTTP thread): only when neither the agent's
 * lock nor the ranking would make it wait (the store answers from RAM,
 * no embedding), else AIOS_EBUSY and nothing done */
static int retrieve(struct mem_manager *m, const char *ns, const struct mem_retrieve_params *p,
                    bool count, bool nowait, struct mem_hit **hits_out, size_t *n_out, char *err,
                    size_t errlen)
{
    *hits_out = NULL;
    *n_out = 0;
    if (nowait && (m->o.emb || m->o.shared || !m->st->search_ram)) return AIOS_EBUSY;
    struct mem_agent *a = agent_get(m, ns);
    if (!a) return AIOS_ENOMEM;
    int k = p->k < 1 ? 1 : p->k > MEM_MAX_K ? MEM_MAX_K : p->k;
    struct mem_hit *hits = NULL;
    size_t n_hits = 0;
    const char **ids = NULL;
    float *qv = NULL;
    if (m->o.emb) {
        /* the query's vector before the lock */
        qv = malloc((size_t)emb_dim(m->o.emb) * sizeof *qv);
        if (!qv || emb_text(m->o.emb, p->query, p->query_len, qv)) {
            free(qv);
            snprintf(err, errlen, "the embedding model failed on the query; see the kernel log");
            return qv ? AIOS_EENGINE : AIOS_ENOMEM;
        }
    }
    if (nowait && pthread_mutex_trylock(&a->mu) != 0) return AIOS_EBUSY;
    if (!nowait) pthread_mutex_lock(&a->mu);
    /* backfill false (memory.auto_inject, on an HTTP thread): rank what has
     * vectors, embed nothing else now */
    int rc = qv ? hybrid_search(m, a, p->query, qv, k, p->backfill, &hits, &n_hits)
             : nowait ? m->st->search_ram(m->store, a->name, p->query, k, &hits, &n_hits)
                      : m->st->search(m->store, a->name, p->query, k, &hits, &n_hits);
    if (rc || !count || !n_hits) goto out;
    /* a retrieval is an access: count it in the store (committed after the
     * answer, without an fsync: mem_store_touch), then in RAM */
    char ts[MEM_TS_LEN];
    mem_ts_now(ts);
    ids = calloc(n_hits, sizeof *ids);
    if (!ids) {
        rc = AIOS_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n_hits; i++) ids[i] = hits[i].note->id;
    if ((rc = m->st->touch(m->store, a->name, ids, n_hits, ts))) goto out;
    for (size_t i = 0; i < n_hits; i++) {
        struct mem_note *n = hits[i].note;
        /* the store's row may not count the last retrievals yet (touch
         * commits after the answer); a resident note is always current */
        struct mem_entry *e = ws_find(a, n->id);
        if (e && e->note->retrieval_count > n->retrieval_count) {
            n->retrieval_count = e->note->retrieval_count;
            memcpy(n->last_accessed, e->note->last_accessed, sizeof n->last_accessed);
        }
        n->retrieval_count++;
        memcpy(n->last_accessed, ts, sizeof ts);
        /* a copy of the fresh row replaces the resident one or faults in */
        struct mem_note *c = note_clone(n);
        if (c) ws_put(m, a, c);
    }
out:
    pthread_mutex_unlock(&a->mu);
    free(qv);
    free(ids);
    if (rc) {
        mem_hits_free(hits, n_hits);
        return rc;
    }
    *hits_out = hits;
    *n_out = n_hits;
    return 0;
}

int mem_retrieve(struct mem_manager *m, const char *ns, const struct mem_retrieve_params *p,
                 bool count, struct mem_hit **hits_out, size_t *n_out, char *err, size_t errlen)
{
    return retrieve(m, ns, p, count, false, hits_out, n_out, err, errlen);
}

static int cmp_victim(const void *x, const void *y)
{
    const struct mem_lruk_node *a = *(struct mem_lruk_node *const *)x;
    const struct mem_lruk_node *b = *(struct mem_lruk_node *const *)y;
    bool fa = a->n_hist >= MEM_LRUK_K, fb = b->n_hist >= MEM_LRUK_K;
    if (fa != fb) return fa ? 1 : -1;
    return a->hist[0] < b->hist[0] ? -1 : a->hist[0] > b->hist[0];
}

void mem_stats_free(struct mem_stats *s)
{
    for (size_t i = 0; i < s->n_order; i++) free(s->eviction_order[i]);
    free(s->eviction_order);
    memset(s, 0, sizeof *s);
}

int mem_stats(struct mem_manager *m, const char *ns, struct mem_stats *out)
{
    memset(out, 0, sizeof *out);
    struct mem_agent *a = agent_get(m, ns);
    if (!a) return AIOS_ENOMEM;
    pthread_mutex_lock(&a->mu);
    int rc = m->st->count(m->store, a->name, &out->n_notes);
    if (!rc && m->st->used) rc = m->st->used(m->store, a->name, &out->stored_bytes);
    out->store_quota_bytes = m->o.store_quota_bytes;
    struct mem_lruk_node **v = a->lruk.n ? malloc(a->lruk.n * sizeof *v) : NULL;
    out->eviction_order = a->lruk.n ? calloc(a->lruk.n, sizeof *out->eviction_order) : NULL;
    if (a->lruk.n && (!v || !out->eviction_order) && !rc) rc = AIOS_ENOMEM;
    if (!rc && a->lruk.n) {
        memcpy(v, a->lruk.heap, a->lruk.n * sizeof *v);
        qsort(v, a->lruk.n, sizeof *v, cmp_victim);
        for (size_t i = 0; i < a->lruk.n && !rc; i++) {
            if (!(out->eviction_order[i] = strdup(entry_of(v[i])->note->id))) rc = AIOS_ENOMEM;
            else out->n_order++;
        }
    }
    free(v);
    out->n_resident = a->n;
    out->resident_bytes = a->bytes;
    out->quota_bytes = m->o.quota_bytes;
    out->n_hits = a->n_hits;
    out->n_faults = a->n_faults;
    out->n_evictions = a->n_evictions;
    pthread_mutex_unlock(&a->mu);
    if (rc) mem_stats_free(out);
    return rc;
}

static int status_for(int rc)
{
    switch (rc) {
    case AIOS_EINVAL: return 400;
    case AIOS_EPERM: return 403;
    case AIOS_ENOTFOUND: return 404;
    case MEM_EEXISTS: return 409;
    case AIOS_ETOOBIG: return 413;
    case MEM_EQUOTA: return 507;
    case AIOS_ESHUTDOWN: return 503;
    default: return 500;
    }
}

/* share_memory {agent, mode: "r"|"rw" (default r), expires_in: seconds},
 * unshare_memory {agent}, memory_shares {}: the caller's own namespace */

/* ---- the typed request: one switch ---- */

/* share_memory, unshare_memory, memory_shares: the caller's own namespace,
 * through the policy (the access manager's grants) */
static int exec_share(struct mem_manager *m, const char *agent, const struct mem_req *req,
                      json_t **resp, char *err, size_t errlen)
{
    if (req->owner && strcmp(req->owner, agent)) {
        snprintf(err, errlen, "only the owner of a memory namespace can share it");
        return AIOS_EPERM;
    }
    if (!m->d.share || !m->d.unshare || !m->d.shares) {
        snprintf(err, errlen, "sharing memory needs the access manager (not running)");
        return AIOS_EINVAL;
    }
    int rc;
    switch (req->op) {
    case MEM_OP_SHARES: {
        json_t *list = NULL;
        if ((rc = m->d.shares(m->d.ud, agent, &list, err, errlen))) return rc;
        *resp = json_pack("{s:s,s:o,s:b}", "response_class", "memory", "shares", list, "success", 1);
        return *resp ? 0 : AIOS_ENOMEM;
    }
    case MEM_OP_UNSHARE:
        if ((rc = m->d.unshare(m->d.ud, agent, req->u.share.grantee))) {
            snprintf(err, errlen, "agent '%s' has no share of your memory", req->u.share.grantee);
            return rc;
        }
        break;
    default:
        if ((rc = m->d.share(m->d.ud, agent, &req->u.share, err, errlen))) return rc;
        break;
    }
    *resp = json_pack("{s:s,s:s,s:b}", "response_class", "memory", "response_message",
                      req->op == MEM_OP_UNSHARE ? "memory no longer shared" : "memory shared",
                      "success", 1);
    return *resp ? 0 : AIOS_ENOMEM;
}

/* The namespace the request acts on: the caller's, or params.owner's when
 * the policy opens it (not open -> 404, read-only -> 403). */
static int resolve_ns(struct mem_manager *m, const char *agent, const struct mem_req *req,
                      const char **ns, char *err, size_t errlen)
{
    *ns = agent;
    const char *o = req->owner;
    if (!o || !*o || !strcmp(o, agent)) return 0;
    int rc = m->d.ns_check ? m->d.ns_check(m->d.ud, agent, o, mem_op_writes(req->op),
                                           mem_op_name(req->op))
                           : AIOS_ENOTFOUND;
    if (rc == AIOS_EPERM) {
        snprintf(err, errlen, "agent '%s' may only read the memory of agent '%s'", agent, o);
        return rc;
    }
    if (rc) {
        snprintf(err, errlen, "no memory namespace '%s' for agent '%s': another agent's memory is "
                 "open only through a privilege group that names it or a share_memory grant",
                 o, agent);
        return AIOS_ENOTFOUND;
    }
    *ns = o;
    return 0;
}

static json_t *hits_json(struct mem_manager *m, const struct mem_hit *hits, size_t n, bool raw)
{
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++) {
        json_t *e = raw ? mem_note_raw(hits[i].note, hits[i].score)
                        : mem_note_result(hits[i].note, hits[i].score);
        if (e && m->o.emb) {
            /* hybrid: the parts of the score */
            json_object_set_new(e, "bm25", json_real(hits[i].bm25));
            json_object_set_new(e, "cosine", json_real(hits[i].cosine));
        }
        if (!e || json_array_append_new(list, e)) {
            json_decref(list);
            return NULL;
        }
    }
    return list;
}

static json_t *stats_json(const struct mem_stats *s)
{
    json_t *ids = json_array();
    for (size_t i = 0; ids && i < s->n_order; i++)
        if (json_array_append_new(ids, json_string(s->eviction_order[i]))) {
            json_decref(ids);
            return NULL;
        }
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "n_notes", (json_int_t)s->n_notes,
                     "stored_bytes", (json_int_t)s->stored_bytes, "store_quota_bytes",
                     (json_int_t)s->store_quota_bytes,
                     "n_resident", (json_int_t)s->n_resident, "resident_bytes",
                     (json_int_t)s->resident_bytes, "quota_bytes", (json_int_t)s->quota_bytes,
                     "n_hits", (json_int_t)s->n_hits, "n_faults", (json_int_t)s->n_faults,
                     "n_evictions", (json_int_t)s->n_evictions, "eviction_order", ids);
}

int mem_analyze(struct mem_manager *m, const char *agent, const char *content,
                struct mem_analysis *out)
{
    if (m->d.analyze) return m->d.analyze(m->d.ud, agent, content, m->o.agentic_max_tokens, out);
    return mem_analysis_keywords(content, out);
}

/* a resident note of agent ns, cloned, without waiting for the agent's
 * lock or the store: AIOS_EBUSY when either would be needed */
static int mem_get_nowait(struct mem_manager *m, const char *ns, const char *id,
                          struct mem_note **out)
{
    *out = NULL;
    if (m->o.shared) return AIOS_EBUSY; /* the store's copy rules: a query */
    struct mem_agent *a = agent_get(m, ns);
    if (!a) return AIOS_ENOMEM;
    if (pthread_mutex_trylock(&a->mu) != 0) return AIOS_EBUSY;
    struct mem_entry *e = ws_find(a, id);
    int rc = AIOS_EBUSY;
    if (e) {
        a->n_hits++;
        rc = mem_lruk_access(&a->lruk, &e->lru);
        if (!rc && !(*out = note_clone(e->note))) rc = AIOS_ENOMEM;
    }
    pthread_mutex_unlock(&a->mu);
    return rc;
}

static int exec(struct mem_manager *m, const char *agent, const struct mem_req *req, bool nowait,
                json_t **resp, int *http_status, char *err, size_t errlen);

int mem_manager_exec(struct mem_manager *m, const char *agent, const struct mem_req *req,
                     json_t **resp, int *http_status, char *err, size_t errlen)
{
    return exec(m, agent, req, false, resp, http_status, err, errlen);
}

int mem_manager_exec_nowait(struct mem_manager *m, const char *agent, const struct mem_req *req,
                            json_t **resp, int *http_status, char *err, size_t errlen)
{
    *resp = NULL;
    if ((req->op != MEM_OP_GET && req->op != MEM_OP_RETRIEVE && req->op != MEM_OP_RETRIEVE_RAW) ||
        req->owner)
        return AIOS_EBUSY;
    return exec(m, agent, req, true, resp, http_status, err, errlen);
}

static int exec(struct mem_manager *m, const char *agent, const struct mem_req *req, bool nowait,
                json_t **resp, int *http_status, char *err, size_t errlen)
{
    *resp = NULL;
    *http_status = 200;
    if (errlen) err[0] = 0;
    if (!agent || !*agent) agent = "anonymous";
    struct mem_analysis an = {0};
    struct mem_note *note = NULL;
    struct mem_hit *hits = NULL;
    size_t n_hits = 0;
    struct mem_stats st = {0};
    char id[MEM_ID_MAX + 1];
    json_t *r = NULL, *x = NULL;
    const char *ns = agent;
    int rc = 0;
    if (req->op != MEM_OP_SHARE && req->op != MEM_OP_UNSHARE && req->op != MEM_OP_SHARES &&
        (rc = resolve_ns(m, agent, req, &ns, err, errlen)))
        goto out;
    switch (req->op) {
    case MEM_OP_ADD_AGENTIC:
        if ((rc = mem_analyze(m, agent, req->u.add.f.content, &an))) break;
        if ((rc = mem_add(m, ns, &req->u.add, &an, id, &note, err, errlen))) break;
        x = json_pack("{s:O,s:O,s:s,s:s}", "keywords", note->keywords, "tags", note->tags,
                      "context", note->context, "analysis", an.source);
        r = resp_new(id);
        if (json_object_set_new(r, "metadata", x)) rc = AIOS_ENOMEM; /* takes x */
        x = NULL;
        break;
    case MEM_OP_ADD:
        if (!(rc = mem_add(m, ns, &req->u.add, NULL, id, NULL, err, errlen)) && !(r = resp_new(id)))
            rc = AIOS_ENOMEM;
        break;
    case MEM_OP_GET:
        rc = nowait ? mem_get_nowait(m, ns, req->u.id.id, &note)
                    : mem_get(m, ns, req->u.id.id, &note, err, errlen);
        if (rc) break;
        r = resp_new(note->id);
        if (json_object_set_new(r, "content", json_string(note->content)) ||
            json_object_set_new(r, "metadata", mem_note_metadata(note)))
            rc = AIOS_ENOMEM;
        break;
    case MEM_OP_UPDATE:
        if (!(rc = mem_update(m, ns, &req->u.update, err, errlen)) && !(r = resp_new(req->u.update.id)))
            rc = AIOS_ENOMEM;
        break;
    case MEM_OP_REMOVE:
        if (!(rc = mem_remove(m, ns, req->u.id.id, err, errlen)) && !(r = resp_new(req->u.id.id)))
            rc = AIOS_ENOMEM;
        break;
    case MEM_OP_RETRIEVE:
    case MEM_OP_RETRIEVE_RAW: {
        bool raw = req->op == MEM_OP_RETRIEVE_RAW;
        if ((rc = retrieve(m, ns, &req->u.retrieve, !raw, nowait, &hits, &n_hits, err, errlen)))
            break;
        x = hits_json(m, hits, n_hits, raw);
        r = resp_new(NULL);
        if (json_object_set_new(r, "search_results", x)) rc = AIOS_ENOMEM;
        x = NULL;
        break;
    }
    case MEM_OP_STATS:
        if ((rc = mem_stats(m, ns, &st))) break;
        x = stats_json(&st);
        r = resp_new(NULL);
        if (json_object_set_new(r, "metadata", x)) rc = AIOS_ENOMEM;
        x = NULL;
        break;
    case MEM_OP_SHARE:
    case MEM_OP_UNSHARE:
    case MEM_OP_SHARES: rc = exec_share(m, agent, req, &r, err, errlen); break;
    default:
        snprintf(err, errlen, "unknown memory operation %d", (int)req->op);
        rc = AIOS_EINVAL;
        break;
    }
out:
    json_decref(x);
    mem_analysis_free(&an);
    mem_note_free(note);
    mem_hits_free(hits, n_hits);
    mem_stats_free(&st);
    if (rc) {
        json_decref(r);
        *http_status = status_for(rc);
        if (errlen && !err[0]) {
            if (rc == AIOS_EIO) snprintf(err, errlen, "the memory database failed; see the kernel log");
            else snprintf(err, errlen, "%s", aios_strerror(rc));
        }
        return rc;
    }
    *resp = r;
    return 0;
}

int mem_manager_exec_json(struct mem_manager *m, const char *agent, const char *op,
                          json_t *params, json_t **resp, int *http_status, char *err,
                          size_t errlen)
{
    *resp = NULL;
    struct mem_req *req = NULL;
    int rc = mem_req_parse(op, params, &req, err, errlen);
    if (rc) {
        *http_status = status_for(rc);
        return rc;
    }
    rc = mem_manager_exec(m, agent, req, resp, http_status, err, errlen);
    mem_req_free(req);
    return rc;
}

/* ---- lifecycle ---- */

int mem_manager_open(struct mem_manager **out, const struct mem_opts *o,
                     const struct mem_deps *deps, char *err, size_t errlen)
{
    *out = NULL;
    struct mem_manager *m = calloc(1, sizeof *m);
    if (!m) return AIOS_ENOMEM;
    m->o = *o;
    m->o.db_path = strdup(o->db_path ? o->db_path : "memory.db");
    if (deps) m->d = *deps;
    m->st = m->d.store ? m->d.store : &mem_store_sqlite;
    pthread_mutex_init(&m->mu, NULL);
    if (!m->o.db_path) {
        mem_manager_close(m);
        return AIOS_ENOMEM;
    }
    /* a file path for SQLite; another store's path is its own (a URL) */
    char *dir = m->st == &mem_store_sqlite ? strdup(m->o.db_path) : NULL;
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
    int rc = m->st->open(&m->store, m->o.db_path, m->o.full_sync, err, errlen);
    if (!rc && m->st->set_quota && m->st->set_quota(m->store, m->o.store_quota_bytes)) {
        snprintf(err, errlen, "memory database %s: cannot set memory.store_quota_bytes", m->o.db_path);
        rc = AIOS_EIO;
    }
    bool reset = false;
    if (!rc && m->o.emb) rc = m->st->vec_model(m->store, emb_fingerprint(m->o.emb), &reset);
    if (rc) {
        if (!err[0]) snprintf(err, errlen, "memory database (%s): cannot set up vectors", m->st->name);
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
    if (m->store) m->st->close(m->store);
    pthread_mutex_destroy(&m->mu);
    free(m->o.db_path);
    free(m);
}

struct mem_store *mem_manager_store(struct mem_manager *m) { return m->store; }
const struct mem_store_ops *mem_manager_store_ops(const struct mem_manager *m) { return m->st; }
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
    long long store_quota = (long long)MEM_DEFAULT_STORE_QUOTA;
    int rc;
    if ((rc = cfg_int(cfg, "memory.store_quota_bytes", 0, 1LL << 50, &store_quota, err, errlen)))
        return rc;
    if ((rc = cfg_int(cfg, "memory.quota_bytes", 1024, 1LL << 40, &quota, err, errlen))) return rc;
    if ((rc = cfg_int(cfg, "memory.max_note_bytes", 256, 1LL << 30, &max_note, err, errlen)))
        return rc;
    if ((rc = cfg_int(cfg, "memory.agentic_max_tokens", 1, 4096, &tokens, err, errlen))) return rc;
    if ((rc = cfg_int(cfg, "memory.workers", 1, 64, &workers, err, errlen))) return rc;
    o->quota_bytes = (size_t)quota;
    o->max_note_bytes = (size_t)max_note;
    o->store_quota_bytes = store_quota;
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

