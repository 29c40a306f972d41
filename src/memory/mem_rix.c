/* The memory store's index in RAM (see mem_rix.h).
 *
 * Why: a retrieval whose words are in most of an agent's notes ("meeting
 * room" over notes that all say "meeting" and "room") must score every
 * one of them for an exact top k; through FTS5 that is a walk of each
 * word's doclist, row by row through SQLite's virtual table and an
 * auxiliary function call per row (2.15 ms of CPU for three words over
 * 6,000 notes), and it grows with the notes (docs/performance.md). Here
 * the same scoring is a loop over arrays.
 *
 * Per agent (slot), struct idx: notes numbered in the order they were
 * set (nid[] and a dead flag: a changed note is a new number and its old
 * one dead, so postings only ever grow at their end), a map nid -> number,
 * and a table of terms (an FTS5 token) each with its postings (note
 * number, occurrences in the note's four columns). Dead numbers are
 * compacted away when they are half of all. Tokens over TOK_MAX bytes are
 * not kept: no query word that this index answers is that long.
 *
 * Concurrency: one rwlock (writers preferred, so the group commit's
 * leader is not starved by retrievals) guards every index and the table
 * of agents; a retrieval scores under the read lock, a change takes the
 * write lock for an append. Tokenizing happens outside the lock. A build
 * marks the agent "building", reads its notes from a snapshot taken after
 * that, and meanwhile every change to the agent is queued (tokenized); at
 * the end the queue is replayed onto the new index in commit order before
 * it is installed: a change the snapshot already held is set again to the
 * same text, so replaying is harmless, and one it did not hold is applied.
 * A change that cannot be followed (a failed commit) drops the index, or
 * the build.
 *
 * The store's token counts (struct dft): for every token, the notes of
 * all agents that hold it, and the number of notes, read once from FTS5's
 * vocabulary at open and then changed by every commit (old text's tokens
 * out, new text's in). BM25's IDF of a word then costs a lookup instead
 * of a walk of the word's doclist in FTS5 (all agents' notes: ~3 ms for a
 * word in 40,000 notes, the tail of retrievals under steady writes). */
#include "memory/mem_rix.h"

#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TOK_MAX MEM_RIX_TOKEN_MAX /* longest token kept (mem_store's TF_TOKEN_MAX) */
#define N_BUCKET 256       /* agents' table */
/* an index dropped for room, or too big to build, is not built again for
 * this long, twice as long each time it happens again, up to PAUSE_MAX_S:
 * a build reads and tokenizes all of the agent's notes */
#define EVICT_PAUSE_S 30
#define PAUSE_MAX_S 3600
#define COMPACT_MIN 1024   /* dead notes before a compaction is considered */

struct post {
    uint32_t note, tf;
};

struct term {
    char *tok; /* NULL: empty slot */
    uint32_t len, hash;
    struct post *p;
    uint32_t n, cap;
};

struct idx {
    struct term *t;
    uint32_t t_cap, t_n; /* open addressing, t_cap a power of 2 */
    int64_t *nid;
    uint8_t *dead;
    uint32_t n_note, note_cap, n_dead;
    uint32_t *map; /* nid -> note number + 1 (0: empty); open addressing */
    uint32_t map_cap, map_n;
    size_t bytes;
};

/* a change queued while the agent's index is built */
struct op {
    int64_t nid;
    unsigned char *blob; /* tokens; NULL and !gone: unknown change */
    size_t len;
    bool gone;
    struct op *next;
};

struct ent {
    int64_t slot;
    struct idx *idx;
    bool building, poisoned;
    struct op *pend, **pend_tail;
    atomic_llong used; /* tick of the last search */
    time_t evicted; /* when its index was last dropped for room or not built */
    int pause_s;    /* how long after that no build starts (0: EVICT_PAUSE_S) */
    struct ent *next;
};

/* a token's count of notes; open addressing, tok NULL: empty */
struct dft {
    char *tok;
    uint32_t len, hash;
    int64_t df;
};

struct mem_rix {
    pthread_rwlock_t lock;
    struct ent *bucket[N_BUCKET];
    size_t bytes, max_bytes; /* of the agents' indexes */
    atomic_llong tick;
    fts5_api *api;
    /* the store's token counts; counts_ok false: not kept (not loaded, or
     * a change was lost) */
    struct dft *d;
    uint32_t d_cap, d_n;
    int64_t n_row;
    bool counts_ok;
};

/* past this many distinct tokens the counts are given up (memory: the
 * table and the tokens take about 40 MiB then) */
#define DFT_MAX (1u << 19)

/* ---- tokens ----
 * A blob: each kept token as one length byte and its bytes. */

struct blob {
    unsigned char *b;
    size_t len, cap;
    size_t n_left_out; /* tokens not kept (empty, or over TOK_MAX bytes) */
    bool oom;
};

static int blob_token(void *ctx, int flags, const char *tok, int n, int start, int end)
{
    (void)flags;
    (void)start;
    (void)end;
    struct blob *bl = ctx;
    if (n <= 0 || n > TOK_MAX) {
        bl->n_left_out++;
        return SQLITE_OK;
    }
    if (bl->len + 1 + (size_t)n > bl->cap) {
        size_t cap = bl->cap ? bl->cap * 2 : 256;
        while (cap < bl->len + 1 + (size_t)n) cap *= 2;
        unsigned char *b = realloc(bl->b, cap);
        if (!b) {
            bl->oom = true;
            return SQLITE_NOMEM;
        }
        bl->b = b;
        bl->cap = cap;
    }
    bl->b[bl->len++] = (unsigned char)n;
    memcpy(bl->b + bl->len, tok, (size_t)n);
    bl->len += (size_t)n;
    return SQLITE_OK;
}

/* the table's tokenizer: tokenize='porter unicode61' */
struct tokr {
    fts5_tokenizer m;
    Fts5Tokenizer *t;
};

static int tokr_open(struct mem_rix *r, struct tokr *k)
{
    void *ud = NULL;
    const char *arg[] = {"unicode61"};
    if (r->api->xFindTokenizer(r->api, "porter", &ud, &k->m) != SQLITE_OK) return AIOS_EIO;
    return k->m.xCreate(ud, arg, 1, &k->t) == SQLITE_OK ? 0 : AIOS_ENOMEM;
}

static void tokr_close(struct tokr *k)
{
    if (k->t) k->m.xDelete(k->t);
}

/* the tokens of t's four columns appended to bl */
static int tokenize_text(struct tokr *k, const struct mem_rix_text *t, struct blob *bl)
{
    for (int c = 0; c < 4; c++) {
        const char *z = t->col[c] ? t->col[c] : "";
        int rc = k->m.xTokenize(k->t, bl, FTS5_TOKENIZE_DOCUMENT, z, (int)strlen(z), blob_token);
        if (rc != SQLITE_OK || bl->oom) return AIOS_ENOMEM;
    }
    return 0;
}

static uint32_t hash_tok(const unsigned char *p, size_t n)
{
    return util_fnv1a32_n((const char *)p, n);
}

static uint32_t hash_nid(int64_t nid)
{
    uint64_t x = (uint64_t)nid * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(x >> 32);
}

/* ---- one agent's index ---- */

static void idx_free(struct idx *x)
{
    if (!x) return;
    for (uint32_t i = 0; i < x->t_cap; i++) {
        free(x->t[i].tok);
        free(x->t[i].p);
    }
    free(x->t);
    free(x->nid);
    free(x->dead);
    free(x->map);
    free(x);
}

static struct idx *idx_new(void)
{
    struct idx *x = calloc(1, sizeof *x);
    if (!x) return NULL;
    x->t_cap = 1024;
    x->map_cap = 1024;
    x->t = calloc(x->t_cap, sizeof *x->t);
    x->map = calloc(x->map_cap, sizeof *x->map);
    if (!x->t || !x->map) {
        idx_free(x);
        return NULL;
    }
    x->bytes = sizeof *x + x->t_cap * sizeof *x->t + x->map_cap * sizeof *x->map;
    return x;
}

static struct term *term_find(const struct idx *x, const unsigned char *tok, size_t len, uint32_t h)
{
    for (uint32_t i = h & (x->t_cap - 1);; i = (i + 1) & (x->t_cap - 1)) {
        struct term *e = &x->t[i];
        if (!e->tok) return (struct term *)e;
        if (e->hash == h && e->len == len && !memcmp(e->tok, tok, len)) return (struct term *)e;
    }
}

static int term_grow(struct idx *x)
{
    uint32_t cap = x->t_cap * 2;
    struct term *t = calloc(cap, sizeof *t);
    if (!t) return AIOS_ENOMEM;
    struct term *old = x->t;
    uint32_t old_cap = x->t_cap;
    x->t = t;
    x->t_cap = cap;
    for (uint32_t i = 0; i < old_cap; i++)
        if (old[i].tok) *term_find(x, (unsigned char *)old[i].tok, old[i].len, old[i].hash) = old[i];
    free(old);
    x->bytes += (size_t)(cap - old_cap) * sizeof *t;
    return 0;
}

/* the note number of nid (alive or dead), or a pointer to the empty slot */
static uint32_t *map_find(const struct idx *x, int64_t nid)
{
    for (uint32_t i = hash_nid(nid) & (x->map_cap - 1);; i = (i + 1) & (x->map_cap - 1)) {
        uint32_t *e = &x->map[i];
        if (!*e || x->nid[*e - 1] == nid) return e;
    }
}

static int map_grow(struct idx *x)
{
    uint32_t cap = x->map_cap * 2;
    uint32_t *m = calloc(cap, sizeof *m), *old = x->map, old_cap = x->map_cap;
    if (!m) return AIOS_ENOMEM;
    x->map = m;
    x->map_cap = cap;
    for (uint32_t i = 0; i < old_cap; i++)
        if (old[i]) *map_find(x, x->nid[old[i] - 1]) = old[i];
    free(old);
    x->bytes += (size_t)(cap - old_cap) * sizeof *m;
    return 0;
}

static void idx_remove(struct idx *x, int64_t nid)
{
    uint32_t *e = map_find(x, nid);
    if (*e && !x->dead[*e - 1]) {
        x->dead[*e - 1] = 1;
        x->n_dead++;
    }
}

/* note nid now holds the tokens of blob: a new number, the old one dead */
static int idx_set(struct idx *x, int64_t nid, const unsigned char *blob, size_t len)
{
    if ((x->map_n + 1) * 4 > x->map_cap * 3 && map_grow(x)) return AIOS_ENOMEM;
    if (x->n_note == UINT32_MAX - 1) return AIOS_ENOMEM;
    if (x->n_note == x->note_cap) {
        uint32_t cap = x->note_cap ? x->note_cap * 2 : 256;
        int64_t *nids = realloc(x->nid, cap * sizeof *nids);
        if (!nids) return AIOS_ENOMEM;
        x->nid = nids;
        uint8_t *dead = realloc(x->dead, cap);
        if (!dead) return AIOS_ENOMEM;
        x->dead = dead;
        x->bytes += (size_t)(cap - x->note_cap) * (sizeof *nids + 1);
        x->note_cap = cap;
    }
    idx_remove(x, nid);
    uint32_t *e = map_find(x, nid);
    if (!*e) x->map_n++;
    uint32_t no = x->n_note++;
    x->nid[no] = nid;
    x->dead[no] = 0;
    *e = no + 1;
    for (size_t o = 0; o < len;) {
        size_t n = blob[o++];
        const unsigned char *tok = blob + o;
        o += n;
        uint32_t h = hash_tok(tok, n);
        struct term *t = term_find(x, tok, n, h);
        if (!t->tok) {
            if ((x->t_n + 1) * 4 > x->t_cap * 3) {
                if (term_grow(x)) return AIOS_ENOMEM;
                t = term_find(x, tok, n, h);
            }
            if (!(t->tok = malloc(n))) return AIOS_ENOMEM;
            memcpy(t->tok, tok, n);
            t->len = (uint32_t)n;
            t->hash = h;
            x->t_n++;
            x->bytes += n;
        }
        if (t->n && t->p[t->n - 1].note == no) {
            t->p[t->n - 1].tf++;
            continue;
        }
        if (t->n == t->cap) {
            uint32_t cap = t->cap ? t->cap * 2 : 2;
            struct post *p = realloc(t->p, cap * sizeof *p);
            if (!p) return AIOS_ENOMEM;
            t->p = p;
            x->bytes += (size_t)(cap - t->cap) * sizeof *p;
            t->cap = cap;
        }
        t->p[t->n++] = (struct post){no, 1};
    }
    return 0;
}

/* renumber the live notes 0.. in order and drop the dead ones' postings */
static int idx_compact(struct idx *x)
{
    uint32_t *to = malloc((size_t)x->n_note * sizeof *to);
    uint32_t *map = calloc(x->map_cap, sizeof *map);
    if (!to || !map) {
        free(to);
        free(map);
        return AIOS_ENOMEM;
    }
    uint32_t live = 0;
    for (uint32_t i = 0; i < x->n_note; i++) {
        to[i] = x->dead[i] ? UINT32_MAX : live;
        if (!x->dead[i]) {
            x->nid[live] = x->nid[i];
            x->dead[live++] = 0;
        }
    }
    for (uint32_t i = 0; i < x->t_cap; i++) {
        struct term *t = &x->t[i];
        uint32_t n = 0;
        for (uint32_t j = 0; t->tok && j < t->n; j++)
            if (to[t->p[j].note] != UINT32_MAX) t->p[n++] = (struct post){to[t->p[j].note], t->p[j].tf};
        t->n = n;
    }
    free(to);
    free(x->map);
    x->map = map;
    x->map_n = live;
    x->n_note = live;
    x->n_dead = 0;
    for (uint32_t i = 0; i < live; i++) *map_find(x, x->nid[i]) = i + 1;
    return 0;
}

/* ---- agents ---- */

static struct ent **ent_at(struct mem_rix *r, int64_t slot)
{
    struct ent **p = &r->bucket[hash_nid(slot) % N_BUCKET];
    while (*p && (*p)->slot != slot) p = &(*p)->next;
    return p;
}

static void ops_free(struct op *o)
{
    while (o) {
        struct op *n = o->next;
        free(o->blob);
        free(o);
        o = n;
    }
}

static void ent_drop_idx(struct mem_rix *r, struct ent *e)
{
    if (!e->idx) return;
    assert(r->bytes >= e->idx->bytes);
    r->bytes -= e->idx->bytes;
    idx_free(e->idx);
    e->idx = NULL;
}

/* write lock held: e's index was dropped for room or not built: no build
 * for a while, longer each time */
static void pause_after(struct ent *e)
{
    e->pause_s = !e->pause_s ? EVICT_PAUSE_S : e->pause_s >= PAUSE_MAX_S / 2 ? PAUSE_MAX_S : e->pause_s * 2;
    e->evicted = time(NULL);
}

/* write lock held: drop the least recently searched indexes but keep's
 * until all fit */
static void evict(struct mem_rix *r, const struct ent *keep)
{
    while (r->bytes > r->max_bytes) {
        struct ent *lru = NULL;
        for (int b = 0; b < N_BUCKET; b++)
            for (struct ent *e = r->bucket[b]; e; e = e->next)
                if (e->idx && e != keep && (!lru || atomic_load(&e->used) < atomic_load(&lru->used)))
                    lru = e;
        if (!lru) return;
        ent_drop_idx(r, lru);
        pause_after(lru);
    }
}

/* write lock held: apply one change to an index; a failure drops it */
static void idx_apply(struct mem_rix *r, struct ent *e, int64_t nid, const unsigned char *blob,
                      size_t len, bool gone)
{
    struct idx *x = e->idx;
    size_t before = x->bytes;
    int rc = 0;
    if (gone) idx_remove(x, nid);
    else rc = idx_set(x, nid, blob, len);
    if (!rc && x->n_dead > COMPACT_MIN && x->n_dead * 2 > x->n_note) rc = idx_compact(x);
    r->bytes += x->bytes - before;
    if (rc) {
        LOG_WARN("memory", "the index in RAM of agent slot %lld is dropped: out of memory",
                 (long long)e->slot);
        ent_drop_idx(r, e);
    }
}

/* write lock held: the count of one token by delta (a new token at 0);
 * false: out of memory, or too many tokens */
static bool dft_add(struct mem_rix *r, const unsigned char *tok, size_t len, int64_t delta)
{
    uint32_t h = hash_tok(tok, len);
    if ((r->d_n + 1) * 4 > r->d_cap * 3) {
        uint32_t cap = r->d_cap ? r->d_cap * 2 : 4096;
        if (r->d_n >= DFT_MAX) return false;
        struct dft *d = calloc(cap, sizeof *d), *old = r->d;
        if (!d) return false;
        for (uint32_t i = 0; i < r->d_cap; i++) {
            if (!old[i].tok) continue;
            uint32_t j = old[i].hash & (cap - 1);
            while (d[j].tok) j = (j + 1) & (cap - 1);
            d[j] = old[i];
        }
        free(old);
        r->d = d;
        r->d_cap = cap;
    }
    uint32_t i = h & (r->d_cap - 1);
    for (; r->d[i].tok; i = (i + 1) & (r->d_cap - 1))
        if (r->d[i].hash == h && r->d[i].len == len && !memcmp(r->d[i].tok, tok, len)) {
            r->d[i].df += delta;
            return true;
        }
    if (!(r->d[i].tok = malloc(len ? len : 1))) return false;
    memcpy(r->d[i].tok, tok, len);
    r->d[i].len = (uint32_t)len;
    r->d[i].hash = h;
    r->d[i].df = delta;
    r->d_n++;
    return true;
}

/* read lock held: the count of a token (0: none) */
static int64_t dft_get(const struct mem_rix *r, const unsigned char *tok, size_t len)
{
    if (!r->d_cap) return 0;
    uint32_t h = hash_tok(tok, len);
    for (uint32_t i = h & (r->d_cap - 1); r->d[i].tok; i = (i + 1) & (r->d_cap - 1))
        if (r->d[i].hash == h && r->d[i].len == len && !memcmp(r->d[i].tok, tok, len))
            return r->d[i].df;
    return 0;
}

static int tok_cmp(const void *a, const void *b)
{
    const unsigned char *x = *(const unsigned char *const *)a, *y = *(const unsigned char *const *)b;
    int c = memcmp(x + 1, y + 1, x[0] < y[0] ? x[0] : y[0]);
    return c ? c : (int)x[0] - (int)y[0];
}

/* write lock held: each distinct token of blob counted by delta */
static bool dft_blob(struct mem_rix *r, const struct blob *bl, int64_t delta)
{
    size_t n = 0;
    for (size_t o = 0; o < bl->len; o += 1 + bl->b[o]) n++;
    if (!n) return true;
    const unsigned char **t = malloc(n * sizeof *t);
    if (!t) return false;
    n = 0;
    for (size_t o = 0; o < bl->len; o += 1 + bl->b[o]) t[n++] = bl->b + o;
    qsort(t, n, sizeof *t, tok_cmp);
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++)
        if (!i || tok_cmp(&t[i - 1], &t[i])) ok = dft_add(r, t[i] + 1, t[i][0], delta);
    free(t);
    return ok;
}

static void dft_free(struct mem_rix *r)
{
    for (uint32_t i = 0; i < r->d_cap; i++) free(r->d[i].tok);
    free(r->d);
    r->d = NULL;
    r->d_cap = r->d_n = 0;
    r->counts_ok = false;
}

/* write lock held: the counts no longer follow the store */
static void counts_lost(struct mem_rix *r, const char *why)
{
    if (!r->counts_ok) return;
    LOG_WARN("memory", "the token counts in RAM are given up (%s): IDFs are counted by FTS5", why);
    dft_free(r);
}

void mem_rix_set(struct mem_rix *r, int64_t slot, int64_t nid, const struct mem_rix_text *old,
                 const struct mem_rix_text *t)
{
    pthread_rwlock_rdlock(&r->lock);
    struct ent *e = *ent_at(r, slot);
    bool wanted = r->counts_ok || (e && (e->idx || e->building));
    pthread_rwlock_unlock(&r->lock);
    if (!wanted) return; /* a build from now on reads it from its snapshot */
    struct blob bo = {0}, bn = {0};
    struct tokr k = {0};
    bool ok = !tokr_open(r, &k) && (!old || !tokenize_text(&k, old, &bo)) &&
              (!t || !tokenize_text(&k, t, &bn));
    tokr_close(&k);
    pthread_rwlock_wrlock(&r->lock);
    if (r->counts_ok) {
        if (ok && dft_blob(r, &bo, -1) && dft_blob(r, &bn, 1)) r->n_row += (t != NULL) - (old != NULL);
        else counts_lost(r, "out of memory");
    }
    e = *ent_at(r, slot);
    if (e && e->idx) {
        if (ok) idx_apply(r, e, nid, bn.b, bn.len, !t);
        else ent_drop_idx(r, e);
        evict(r, e);
    }
    if (e && e->building) {
        struct op *o = calloc(1, sizeof *o);
        if (o && ok) {
            *o = (struct op){.nid = nid, .blob = bn.b, .len = bn.len, .gone = !t};
            bn.b = NULL;
            *e->pend_tail = o;
            e->pend_tail = &o->next;
        } else {
            free(o);
            e->poisoned = true;
        }
    }
    pthread_rwlock_unlock(&r->lock);
    free(bo.b);
    free(bn.b);
}

void mem_rix_lost(struct mem_rix *r, int64_t slot)
{
    pthread_rwlock_wrlock(&r->lock);
    counts_lost(r, "a write's outcome is unknown");
    struct ent *e = *ent_at(r, slot);
    if (e) {
        ent_drop_idx(r, e);
        if (e->building) e->poisoned = true;
    }
    pthread_rwlock_unlock(&r->lock);
}

int mem_rix_load_counts(struct mem_rix *r, sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_exec(db, "CREATE VIRTUAL TABLE IF NOT EXISTS temp.aios_vocab USING "
                              "fts5vocab(main, notes_fts, row)", NULL, NULL, NULL) == SQLITE_OK &&
             sqlite3_prepare_v2(db, "SELECT count(*) FROM notes", -1, &st, NULL) == SQLITE_OK &&
             sqlite3_step(st) == SQLITE_ROW ? 0 : AIOS_EIO;
    pthread_rwlock_wrlock(&r->lock);
    dft_free(r);
    r->n_row = rc ? 0 : sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    st = NULL;
    if (!rc && sqlite3_prepare_v2(db, "SELECT term, doc FROM temp.aios_vocab", -1, &st, NULL) != SQLITE_OK)
        rc = AIOS_EIO;
    int s = SQLITE_ROW;
    while (!rc && (s = sqlite3_step(st)) == SQLITE_ROW) {
        int n = sqlite3_column_bytes(st, 0);
        const unsigned char *tok = sqlite3_column_blob(st, 0);
        if (n > 0 && n <= TOK_MAX && !dft_add(r, tok, (size_t)n, sqlite3_column_int64(st, 1)))
            rc = AIOS_ENOMEM;
    }
    if (!rc && s != SQLITE_DONE) rc = AIOS_EIO;
    sqlite3_finalize(st);
    r->counts_ok = !rc;
    if (rc) dft_free(r);
    pthread_rwlock_unlock(&r->lock);
    sqlite3_exec(db, "DROP TABLE IF EXISTS temp.aios_vocab", NULL, NULL, NULL);
    return rc;
}

/* the one token of a query's word into tok (TOK_MAX bytes), its length
 * into *n; AIOS_EINVAL: none, several, or one too long */
static int one_token(struct tokr *k, const char *word, size_t len, unsigned char *tok, size_t *n)
{
    struct blob bl = {0};
    int rc = 0, tr = k->m.xTokenize(k->t, &bl, FTS5_TOKENIZE_QUERY, word, (int)len, blob_token);
    if (tr != SQLITE_OK || bl.oom) rc = AIOS_ENOMEM;
    else if (bl.n_left_out || bl.len == 0 || (size_t)bl.b[0] + 1 != bl.len)
        rc = AIOS_EINVAL; /* a token left out (too long) is a token too: FTS5 sees a phrase */
    else memcpy(tok, bl.b + 1, *n = bl.b[0]);
    free(bl.b);
    return rc;
}

int mem_rix_query(struct mem_rix *r, const char *const *word, const size_t *len, int n,
                  struct mem_rix_query *q)
{
    q->n = n;
    if (n <= 0 || n > MEM_RIX_WORDS) return AIOS_EINVAL;
    struct tokr k = {0};
    int rc = tokr_open(r, &k);
    for (int i = 0; i < n && !rc; i++) rc = one_token(&k, word[i], len[i], q->tok[i], &q->len[i]);
    tokr_close(&k);
    return rc;
}

bool mem_rix_query_idf(struct mem_rix *r, const struct mem_rix_query *q, double *idf, double *df)
{
    pthread_rwlock_rdlock(&r->lock);
    bool ok = r->counts_ok;
    for (int i = 0; ok && i < q->n; i++) {
        df[i] = (double)dft_get(r, q->tok[i], q->len[i]);
        idf[i] = mem_idf((double)r->n_row, df[i]);
    }
    pthread_rwlock_unlock(&r->lock);
    return ok;
}

bool mem_rix_idf(struct mem_rix *r, const char *word, size_t len, double *idf, double *df)
{
    struct mem_rix_query q;
    return !mem_rix_query(r, &word, &len, 1, &q) && mem_rix_query_idf(r, &q, idf, df);
}

/* The calling thread's scores, n zeroed doubles, kept from call to call:
 * a fresh calloc of tens of KiB per retrieval made glibc consolidate its
 * fast bins each time (malloc_consolidate, 2% of the kernel's samples in
 * the memory mix). Freed when the thread ends. */
#define TF_PARTS 16
static pthread_key_t g_scratch_key;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;

struct scratch_buf {
    double *v;
    size_t cap;
};

static void scratch_free(void *p)
{
    struct scratch_buf *b = p;
    free(b->v);
    free(b);
}

static void scratch_key(void)
{
    pthread_key_create(&g_scratch_key, scratch_free);
}

static double *scratch(size_t n)
{
    pthread_once(&g_scratch_once, scratch_key);
    struct scratch_buf *b = pthread_getspecific(g_scratch_key);
    if (!b) {
        if (!(b = calloc(1, sizeof *b))) return NULL;
        if (pthread_setspecific(g_scratch_key, b)) {
            free(b);
            return NULL;
        }
    }
    if (!b->v || n > b->cap) {
        size_t cap = n < 1024 ? 1024 : n + n / 2;
        double *v = malloc(cap * sizeof *v);
        if (!v) return NULL;
        free(b->v);
        b->v = v;
        b->cap = cap;
    }
    memset(b->v, 0, (n ? n : 1) * sizeof *b->v);
    return b->v;
}

int mem_rix_score(struct mem_rix *r, int64_t slot, const struct mem_rix_query *q,
                  const double *idf, void (*hit)(void *ud, int64_t nid, double score), void *ud)
{
    int rc = 0;
    pthread_rwlock_rdlock(&r->lock);
    struct ent *e = *ent_at(r, slot);
    struct idx *x = e ? e->idx : NULL;
    double *acc = x ? scratch(x->n_note) : NULL;
    if (!x) rc = AIOS_ENOTFOUND;
    else if (!acc) rc = AIOS_ENOMEM;
    if (!rc) {
        atomic_store(&e->used, atomic_fetch_add(&r->tick, 1));
        for (int i = 0; i < q->n; i++) {
            /* a word's part for the common counts, the same expression */
            double part[TF_PARTS];
            for (int f = 1; f < TF_PARTS; f++) part[f] = mem_rank_term(idf[i], f);
            const struct term *t =
                term_find(x, q->tok[i], q->len[i], hash_tok(q->tok[i], q->len[i]));
            for (uint32_t j = 0; t->tok && j < t->n; j++) {
                uint32_t f = t->p[j].tf;
                acc[t->p[j].note] += f < TF_PARTS ? part[f] : mem_rank_term(idf[i], (int)f);
            }
        }
        for (uint32_t i = 0; i < x->n_note; i++)
            if (acc[i] > 0 && !x->dead[i]) hit(ud, x->nid[i], acc[i]);
    }
    pthread_rwlock_unlock(&r->lock);
    return rc;
}

bool mem_rix_wanted(struct mem_rix *r, int64_t slot)
{
    pthread_rwlock_rdlock(&r->lock);
    struct ent *e = *ent_at(r, slot);
    bool w = !e || (!e->idx && !e->building && (!e->evicted || time(NULL) - e->evicted >= e->pause_s));
    pthread_rwlock_unlock(&r->lock);
    return w;
}

int mem_rix_build(struct mem_rix *r, int64_t slot,
                  int (*next)(void *ud, int64_t *nid, struct mem_rix_text *t), void *ud)
{
    pthread_rwlock_wrlock(&r->lock);
    struct ent **p = ent_at(r, slot), *e = *p;
    int rc = 0;
    if (!e && (e = calloc(1, sizeof *e))) {
        e->slot = slot;
        *p = e;
    }
    if (!e) rc = AIOS_ENOMEM;
    else if (e->idx || e->building) rc = AIOS_EBUSY;
    else {
        e->building = true;
        e->poisoned = false;
        e->pend = NULL;
        e->pend_tail = &e->pend;
    }
    pthread_rwlock_unlock(&r->lock);
    if (rc) return rc;

    struct idx *x = idx_new();
    struct tokr k = {0};
    struct blob bl = {0};
    rc = x ? tokr_open(r, &k) : AIOS_ENOMEM;
    int64_t nid;
    struct mem_rix_text t;
    int more;
    while (!rc && (more = next(ud, &nid, &t)) != 0) {
        if (more < 0) {
            rc = more;
            break;
        }
        bl.len = 0;
        if ((rc = tokenize_text(&k, &t, &bl)) || (rc = idx_set(x, nid, bl.b, bl.len))) break;
        if (x->bytes > r->max_bytes / 2) rc = AIOS_EBUSY; /* it would not leave room for others */
    }
    tokr_close(&k);
    free(bl.b);

    pthread_rwlock_wrlock(&r->lock);
    e = *ent_at(r, slot);
    assert(e && e->building);
    if (!rc && e->poisoned) rc = AIOS_EBUSY;
    for (struct op *o = e->pend; o && !rc; o = o->next) {
        if (!o->blob && !o->gone) rc = AIOS_EBUSY;
        else if (o->gone) idx_remove(x, o->nid);
        else rc = idx_set(x, o->nid, o->blob, o->len);
    }
    if (!rc && x->n_dead * 2 > x->n_note) rc = idx_compact(x);
    ops_free(e->pend);
    e->pend = NULL;
    e->pend_tail = &e->pend;
    e->building = false;
    if (!rc) {
        e->idx = x;
        x = NULL;
        r->bytes += e->idx->bytes;
        atomic_store(&e->used, atomic_fetch_add(&r->tick, 1));
        evict(r, e);
    } else if (rc == AIOS_EBUSY || rc == AIOS_ENOMEM) {
        pause_after(e); /* not again at once */
    }
    pthread_rwlock_unlock(&r->lock);
    idx_free(x);
    return rc;
}

int mem_rix_open(struct mem_rix **out, fts5_api *api, size_t max_bytes)
{
    *out = NULL;
    if (!api) return AIOS_EINVAL;
    struct mem_rix *r = calloc(1, sizeof *r);
    if (!r) return AIOS_ENOMEM;
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&r->lock, &a);
    pthread_rwlockattr_destroy(&a);
    r->api = api;
    r->max_bytes = max_bytes;
    *out = r;
    return 0;
}

void mem_rix_close(struct mem_rix *r)
{
    if (!r) return;
    for (int b = 0; b < N_BUCKET; b++)
        for (struct ent *e = r->bucket[b], *n; e; e = n) {
            n = e->next;
            assert(!e->building);
            idx_free(e->idx);
            ops_free(e->pend);
            free(e);
        }
    dft_free(r);
    pthread_rwlock_destroy(&r->lock);
    free(r);
}

void mem_rix_stats(struct mem_rix *r, size_t *bytes, int *n_index)
{
    pthread_rwlock_rdlock(&r->lock);
    *bytes = r->bytes;
    *n_index = 0;
    for (int b = 0; b < N_BUCKET; b++)
        for (struct ent *e = r->bucket[b]; e; e = e->next) *n_index += e->idx != NULL;
    pthread_rwlock_unlock(&r->lock);
}

void mem_rix_drop_all(struct mem_rix *r)
{
    pthread_rwlock_wrlock(&r->lock);
    for (int b = 0; b < N_BUCKET; b++)
        for (struct ent *e = r->bucket[b]; e; e = e->next) {
            ent_drop_idx(r, e);
            if (e->building) e->poisoned = true;
        }
    pthread_rwlock_unlock(&r->lock);
}
