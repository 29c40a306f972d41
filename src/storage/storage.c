/* The storage manager (LSFS): the operations of the AIOS `storage` query
 * type over per-agent sandboxed directories, with versions, search and
 * sharing.
 *
 * Layout under storage.root_dir:
 *   <agent>/...        each agent's files, real files on disk (so tools that
 *                      get the agent's directory bound into their sandbox see
 *                      them); directory name from sto_agent_dirname()
 *   .lsfs/lsfs.db      the SQLite store (store.c): versions as
 *                      content-addressed blobs, quotas, grants, search index
 *   .lsfs/spare/       recycled files for writes (tmpfile.c)
 *
 * A write (write, create_file, rollback) is atomic and durable, in this
 * order: (1) the content goes to a file of its own, a recycled spare or a
 * temp file in the target directory (tmpfile.c; no fsync); (2) one SQLite
 * transaction checks the quota, stores the blob, adds the version, prunes
 * beyond max_versions, updates the index, and marks the file dirty; it is
 * committed durably (fsync of the WAL, shared with the writes committing
 * at the same moment: group commit, store.c); (3) that file takes the
 * file's place (exchanged or renamed); only then is the call answered. (4) Later the cleaner thread syncs the file system (one
 * syncfs for all files written meanwhile) and then clears the dirty marks.
 * The version is durable from (2) on in the database, which holds its
 * content: a crash (of the kernel or the machine) before (2) commits leaves
 * the old file and an orphan temp file (swept at start); after it, and
 * until (4), the start-up repair rewrites the file from its blob. So an
 * acknowledged write is always intact, a file is never torn (it is only
 * ever replaced by rename, and repaired from its blob while its data may
 * not be on disk), and the history on disk always matches the file. A
 * write costs one (shared) fsync before its answer.
 *
 * Isolation: every path goes through sto_path_norm() and descriptor-relative
 * walking (path.c) inside the owner's directory. Another agent's files are
 * reachable only through a share grant (param "owner"); without one the
 * answer is the same 404 a missing file gets, so nothing leaks. A read-only
 * grant answers 403 to a write, because the caller already knows the path.
 *
 * Calls: a typed request (struct sto_req, parsed at the edge by req.c)
 * reaches sto_do, one switch to the sto_<operation> entry points, which
 * are also the C API for the rest of the kernel. The metadata lives behind
 * struct sto_store_ops (sto_store.h; SQLite in store.c); this file never
 * sees SQLite, JSON params or struct kernel.
 *
 * Threads: the storage worker pool (several threads) and other managers
 * call in. Every mutation of one owner's tree takes that owner's stripe
 * mutex. A plain write holds it from (1) until its version is queued for
 * the group commit (store.c), then lets go and stays on the stripe's
 * inflight list until its rename (3); a write renames only after the
 * writes of the same file queued before it (they commit first), so
 * versions of a path commit in the order its file is renamed, and the
 * owner's next writes share the commit instead of waiting for its fsync. A write waits for a queued one only when one
 * path is a directory above the other. Every other mutation (create_file,
 * create_dir, deletes, rollback, mount's import) holds the stripe
 * throughout and first waits for the stripe's queued writes to drain
 * (the writes that come meanwhile wait for it), so it never meets a
 * half-made tree. A store that commits before it returns (PostgreSQL)
 * never queues: its writes hold the stripe from (1) to (3). Reads take no
 * lock (rename is atomic) and answer 404 / 409 when a path changes under
 * them. The cleaner thread (step 4) takes no stripe; pend_mu, its list's
 * lock, is a leaf a writer takes under its stripe, and the group commit's
 * lock is a leaf too. No thread holds two locks otherwise. */
#include "storage/sto_int.h"

#include "kernel/config.h"
#include "kernel/query.h"
#include "kernel/syscall.h"
#include "llm/embed.h"
#include "storage/sha256.h"
#include "storage/sto_store.h"
#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <assert.h>
#include <ctype.h>
#include <math.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define INDEX_MAX_BYTES ((size_t)256 << 10) /* text indexed per file: its first 256 KiB */
#define MOUNT_IMPORT_MAX 10000

/* ------------------------------------------------------------------ config */

static int cfg_int(const struct aios_config *cfg, const char *key, int64_t lo, int64_t hi,
                   int64_t *v, char *err, size_t errlen)
{
    json_t *j = config_lookup(cfg, key);
    if (!j || json_is_null(j)) return 0;
    if (!json_is_integer(j) || json_integer_value(j) < lo || json_integer_value(j) > hi) {
        snprintf(err, errlen, "%s: expected an integer in %lld..%lld", key, (long long)lo,
                 (long long)hi);
        return AIOS_ECONFIG;
    }
    *v = json_integer_value(j);
    return 0;
}

int sto_config_from(const struct aios_config *cfg, struct sto_config *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    int64_t mv = STO_DEFAULT_MAX_VERSIONS, qb = STO_DEFAULT_QUOTA_BYTES,
            qf = STO_DEFAULT_QUOTA_FILES, mf = STO_DEFAULT_MAX_FILE_BYTES, nt = STO_DEFAULT_THREADS,
            rb = STO_DEFAULT_RESERVE_BYTES;
    int rc;
    if ((rc = cfg_int(cfg, "storage.max_versions", 1, 100000, &mv, err, errlen)) ||
        (rc = cfg_int(cfg, "storage.quota_bytes", 0, INT64_MAX, &qb, err, errlen)) ||
        (rc = cfg_int(cfg, "storage.quota_files", 0, INT64_MAX, &qf, err, errlen)) ||
        (rc = cfg_int(cfg, "storage.max_file_bytes", 1, (int64_t)1 << 30, &mf, err, errlen)) ||
        (rc = cfg_int(cfg, "storage.n_threads", 1, 64, &nt, err, errlen)) ||
        (rc = cfg_int(cfg, "storage.reserve_bytes", 0, INT64_MAX, &rb, err, errlen)))
        return rc;
    out->root_dir = config_resolve_path(cfg, cfg->storage_root ? cfg->storage_root : "root");
    if (!out->root_dir) return AIOS_ENOMEM;
    out->max_versions = (int)mv;
    out->quota_bytes = qb;
    out->quota_files = qf;
    out->max_file_bytes = mf;
    out->n_threads = (int)nt;
    out->reserve_bytes = rb;
    return 0;
}

void sto_config_free(struct sto_config *c)
{
    if (!c) return;
    free(c->root_dir);
    c->root_dir = NULL;
}

/* ------------------------------------------------------------ small helpers */

static bool utf8_ok(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        /* ASCII, 8 bytes at a time */
        if (n - i >= 8) {
            uint64_t w;
            memcpy(&w, p + i, sizeof w);
            if (!(w & 0x8080808080808080ULL)) {
                i += 8;
                continue;
            }
        }
        unsigned char c = p[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) { i++; continue; }
        else if ((c & 0xe0) == 0xc0) { k = 1; cp = c & 0x1f; }
        else if ((c & 0xf0) == 0xe0) { k = 2; cp = c & 0x0f; }
        else if ((c & 0xf8) == 0xf0) { k = 3; cp = c & 0x07; }
        else return false;
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (p[i + j] & 0xc0) != 0x80) return false;
            cp = cp << 6 | (p[i + j] & 0x3f);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}

/* how many leading bytes of data go into the search index: UTF-8 text
 * only, at most INDEX_MAX_BYTES, cut at a character boundary */
static size_t index_len(const char *data, size_t n)
{
    size_t k = n < INDEX_MAX_BYTES ? n : INDEX_MAX_BYTES;
    while (k > 0 && k < n && ((unsigned char)data[k] & 0xc0) == 0x80) k--;
    return utf8_ok((const unsigned char *)data, k) ? k : 0;
}

static json_t *response(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *response(const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return json_pack("{s:s,s:s,s:b,s:n,s:i}", "response_class", "storage", "response_message", msg,
                     "finished", 1, "error", "status_code", 200);
}

struct opctx {
    struct sto *s;
    const char *agent;
    int http;
    char *err;
    size_t errlen;
};

static int fail(struct opctx *c, int http, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(struct opctx *c, int http, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
    c->http = http;
    return rc;
}

/* Whose tree: the owner given (another agent, through a share) or the
 * caller. Returns 0 with *owner set, or fails with 404 / 403. */
static int get_owner(struct opctx *c, const char *o, const char *norm, enum sto_mode mode,
                     const char **owner, const char *shown)
{
    int rc;
    if (!o || !o[0] || !strcmp(o, c->agent)) {
        *owner = c->agent;
        return 0;
    }
    rc = sto_share_check(c->s, o, norm, c->agent, mode);
    if (c->s->ns_policy) /* privilege groups may name other agents' storage */
        rc = c->s->ns_policy(c->s->ns_ud, c->agent, o, norm, mode == STO_MODE_RW, rc);
    if (rc == AIOS_ENOTFOUND)
        return fail(c, 404, AIOS_ENOTFOUND, "no such file or directory: '%s'", shown);
    if (rc == AIOS_EPERM)
        return fail(c, 403, AIOS_EPERM, "agent '%s' shared '%s' with you read-only; writing "
                    "needs a read-write share", o, shown);
    if (rc) return fail(c, 500, rc, "cannot check the share");
    *owner = o;
    return 0;
}

static size_t stripe_of(const char *owner) { return util_fnv1a32(owner) % STO_N_STRIPES; }

/* The owner's tree, locked for a mutation: this kernel's stripe, then,
 * when the store is shared with other kernels (PostgreSQL), the owner's
 * lock in the database, so that versions commit in the order the files
 * are renamed across kernels too. A failure to take the shared lock is
 * logged and the mutation goes on under the stripe alone (the database
 * transaction still keeps quotas and history consistent). */
struct owner_lock {
    struct sto *s;
    size_t i; /* the stripe */
    pthread_mutex_t *m;
    void *held;
};

/* A plain write from the moment its version is queued for a commit to
 * its rename (put): on its stripe's inflight list (newest first), so that
 * what must not overlap it waits. The write let go of the stripe
 * meanwhile, so that the owner's next writes share its commit. */
struct sto_flight {
    const char *owner, *path;
    struct owner_lock *lock;
    bool queued;
    struct sto_flight *next;
};

/* one of a and b is a directory above the other */
static bool path_nested(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la == lb) return false;
    const char *sh = la < lb ? a : b, *lo = la < lb ? b : a;
    size_t ls = la < lb ? la : lb;
    return !strncmp(sh, lo, ls) && lo[ls] == '/';
}

/* a queued write of owner that path's write must not overlap: one of
 * the two paths a directory above the other (writes of the same path
 * commit and rename in queue order; others do not meet) */
static bool flight_conflict(const struct sto *s, size_t i, const char *owner, const char *path)
{
    for (const struct sto_flight *f = s->inflight[i]; f; f = f->next)
        if (!strcmp(f->owner, owner) && path_nested(f->path, path)) return true;
    return false;
}

static void owner_lock_at(struct sto *s, const char *owner, const char *path, struct owner_lock *l)
{
    l->s = s;
    l->i = stripe_of(owner);
    l->m = &s->stripes[l->i];
    l->held = NULL;
    pthread_mutex_lock(l->m);
    if (!path) { /* any other mutation: no write of the stripe in flight */
        s->draining[l->i]++;
        while (s->inflight[l->i]) pthread_cond_wait(&s->stripe_cv[l->i], l->m);
        if (--s->draining[l->i] == 0) pthread_cond_broadcast(&s->stripe_cv[l->i]);
    } else { /* a plain write: none that it must not overlap, no drain waiting */
        while (s->draining[l->i] || flight_conflict(s, l->i, owner, path))
            pthread_cond_wait(&s->stripe_cv[l->i], l->m);
    }
    if (s->ops->lock_owner && s->ops->lock_owner(s->st, owner, &l->held))
        LOG_WARN("storage", "cannot take the shared lock of %s's files", owner);
}

static void owner_lock(struct sto *s, const char *owner, struct owner_lock *l)
{
    owner_lock_at(s, owner, NULL, l);
}

static void owner_unlock(struct owner_lock *l)
{
    if (l->held) l->s->ops->unlock_owner(l->s->st, l->held);
    pthread_mutex_unlock(l->m);
}

/* map an error from path.c to an HTTP status (AIOS_EBUSY: the tree
 * changed under the call, a conflict to retry) */
static int path_fail(struct opctx *c, int rc, const char *e)
{
    int http = rc == AIOS_ENOTFOUND ? 404 : rc == AIOS_EINVAL ? 400 : rc == AIOS_ETOOBIG ? 400
             : rc == AIOS_EBUSY ? 409 : 500;
    return fail(c, http, rc, "%s", e);
}

/* ------------------------------------------------------------ writing */

/* ---- embeddings (hybrid search; only with cfg.emb) ---- */

#define EMBED_TEXT_MAX ((size_t)32 << 10) /* bytes of a file given to the embedding model */
#define EMBED_BACKFILL_MAX 128            /* files without a vector embedded per search */

/* The vector of a file's indexed text (n_index bytes of data). A failure
 * only logs: the next search embeds files that lack one. */
static void embed_file(struct sto *s, const char *owner, int64_t file_id, const char *data,
                       size_t n_index)
{
    if (!s->cfg.emb || n_index == 0) return;
    int dim = emb_dim(s->cfg.emb);
    float *v = malloc((size_t)dim * sizeof *v);
    size_t n = n_index < EMBED_TEXT_MAX ? n_index : EMBED_TEXT_MAX;
    while (n > 0 && n < n_index && ((unsigned char)data[n] & 0xc0) == 0x80) n--;
    if (!v || emb_text(s->cfg.emb, data, n, v) || sto_st_vec_set(s, file_id, owner, v, dim, data, n))
        LOG_WARN("storage", "%s: no vector for file %lld yet; the next search makes it", owner,
                 (long long)file_id);
    free(v);
}

/* ---- the cleaner: files whose version committed, not yet on disk ---- */

/* at most this many wait for the cleaner; a writer past it waits too */
#define STO_PEND_MAX 65536
/* at least this long between two syncs of the file system: each flushes
 * every dirty page of it (other programs' too), so fewer and larger is
 * kinder to the writes that wait for the WAL's fsync meanwhile */
#define STO_SYNC_INTERVAL_US 50000

struct sto_pend {
    int64_t file_id;
    char sha[65];
    struct sto_pend *next;
};

/* Sync the file system holding the storage root, then clear the dirty
 * marks of every file pending at that moment (their data and names are on
 * disk now). One syncfs covers any number of files written since the last
 * one. Runs until sto_close, which it serves last. */
static void *cleaner_main(void *arg)
{
    struct sto *s = arg;
    int64_t t_last = 0;
    pthread_mutex_lock(&s->pend_mu);
    for (;;) {
        while (!s->pend && !s->pend_stop) pthread_cond_wait(&s->pend_cv, &s->pend_mu);
        if (!s->pend) break; /* stopping, nothing left */
        int64_t wait = t_last + STO_SYNC_INTERVAL_US - util_now_us();
        if (wait > 0 && !s->pend_stop) {
            pthread_mutex_unlock(&s->pend_mu);
            struct timespec ts = {wait / 1000000, (long)(wait % 1000000) * 1000};
            nanosleep(&ts, NULL);
            pthread_mutex_lock(&s->pend_mu);
        }
        t_last = util_now_us();
        struct sto_pend *list = s->pend;
        s->pend = NULL;
        s->n_pend = 0;
        pthread_cond_broadcast(&s->pend_cv); /* writers waiting for room */
        pthread_mutex_unlock(&s->pend_mu);
        bool synced = syncfs(s->sync_fd) == 0;
        if (!synced) {
            LOG_WARN("storage", "syncfs of %s failed (%s); syncing everything", s->agents_dir,
                     strerror(errno));
            sync();
            synced = true;
        }
        for (struct sto_pend *p = list, *next; p; p = next) {
            next = p->next;
            if (synced) sto_st_clean(s, p->file_id, p->sha);
            free(p);
        }
        pthread_mutex_lock(&s->pend_mu);
    }
    pthread_mutex_unlock(&s->pend_mu);
    return NULL;
}

/* The write of file_id (version sha) was renamed into place without an
 * fsync: the cleaner makes it durable on disk and clears its mark. Without
 * a cleaner (or memory), do it now. */
static void pend_add(struct sto *s, int64_t file_id, const char *sha)
{
    struct sto_pend *p = s->cleaner_started ? calloc(1, sizeof *p) : NULL;
    if (!p) {
        if (syncfs(s->sync_fd) == 0) sto_st_clean(s, file_id, sha);
        return;
    }
    p->file_id = file_id;
    snprintf(p->sha, sizeof p->sha, "%s", sha);
    pthread_mutex_lock(&s->pend_mu);
    while (s->n_pend >= STO_PEND_MAX && !s->pend_stop) pthread_cond_wait(&s->pend_cv, &s->pend_mu);
    p->next = s->pend;
    s->pend = p;
    s->n_pend++;
    pthread_cond_broadcast(&s->pend_cv);
    pthread_mutex_unlock(&s->pend_mu);
}

/* put's hook (struct sto_put_hook): the write is queued for its commit,
 * so it goes on the stripe's inflight list and lets go of the stripe */
static void flight_queued(void *arg)
{
    struct sto_flight *f = arg;
    struct sto *s = f->lock->s;
    f->queued = true;
    f->next = s->inflight[f->lock->i];
    s->inflight[f->lock->i] = f;
    owner_unlock(f->lock);
}

/* f's version is committed: wait until every write of the same file
 * queued before it has renamed its file (they committed before it), so
 * that renames follow the commit order; writes of other files rename at
 * once, each on its own thread */
static void flight_turn(struct sto_flight *f)
{
    struct sto *s = f->lock->s;
    pthread_mutex_lock(f->lock->m);
    for (;;) {
        const struct sto_flight *o = f->next;
        while (o && (strcmp(o->owner, f->owner) || strcmp(o->path, f->path))) o = o->next;
        if (!o) break;
        pthread_cond_wait(&s->stripe_cv[f->lock->i], f->lock->m);
    }
    pthread_mutex_unlock(f->lock->m);
}

/* the write is answered: off the inflight list (the stripe is free) */
static void flight_land(struct sto_flight *f)
{
    struct sto *s = f->lock->s;
    pthread_mutex_lock(f->lock->m);
    struct sto_flight **pp = &s->inflight[f->lock->i];
    while (*pp != f) pp = &(*pp)->next;
    *pp = f->next;
    pthread_cond_broadcast(&s->stripe_cv[f->lock->i]);
    pthread_mutex_unlock(f->lock->m);
}

/* Put data as the new version of owner/norm (steps 1-4 in the design
 * comment). Caller holds the owner's stripe; with fl (a plain write, see
 * put) the stripe is let go once the version is queued for its commit
 * (flight_queued), and the rename waits for its turn (flight_turn). */
static int put_locked(struct opctx *c, const char *owner, const char *norm, const char *data,
                      size_t n, const char *kind, int64_t *seq, struct sto_flight *fl)
{
    struct sto *s = c->s;
    char e[1024] = "", sha[65];
    struct sto_tmp tmp = {.dfd = -1};
    int rootfd = -1, dirfd = -1, rc;
    const char *leaf;
    if ((int64_t)n > s->cfg.max_file_bytes)
        return fail(c, 413, AIOS_ETOOBIG, "content is %zu bytes; a file may hold at most %lld "
                    "(storage.max_file_bytes)", n, (long long)s->cfg.max_file_bytes);
    rc = sto_root_open(s, owner, true, &rootfd, e, sizeof e);
    if (rc) return path_fail(c, rc, e);
    /* the disk's reserve: a write that would eat into it is refused before
     * anything is written, so one agent cannot fill the disk for all. A
     * write takes up to about four times its size while it is made: the file,
     * its version in the database, its full-text index and the database's
     * write-ahead log until the next checkpoint (measured on a tmpfs by
     * test_disk_full: three times left too little). */
    struct statvfs vf;
    if (s->cfg.reserve_bytes > 0 && fstatvfs(rootfd, &vf) == 0) {
        int64_t avail = (int64_t)vf.f_bavail * (int64_t)vf.f_frsize;
        if (avail - 4 * (int64_t)n < s->cfg.reserve_bytes) {
            rc = fail(c, 507, AIOS_ENOSPC, "the disk holding the storage root has %lld bytes "
                      "free; writing %zu bytes (up to about %lld with its version, index and journal) would "
                      "leave less than the %lld kept in reserve (storage.reserve_bytes): free "
                      "space, or delete files or versions",
                      (long long)avail, n, 4 * (long long)n, (long long)s->cfg.reserve_bytes);
            goto out;
        }
    }
    rc = sto_walk(rootfd, norm, true, &dirfd, &leaf, e, sizeof e);
    if (rc) {
        rc = path_fail(c, rc, e);
        goto out;
    }
    struct stat st;
    enum sto_kind k = sto_leaf_kind(dirfd, leaf, &st);
    if (k == STO_KIND_DIR) {
        rc = fail(c, 409, AIOS_EINVAL, "'%s' is a directory", norm);
        goto out;
    }
    if (k == STO_KIND_LINK || k == STO_KIND_OTHER) {
        rc = fail(c, 400, AIOS_EINVAL, "'%s' is a %s; storage only writes regular files", norm,
                  k == STO_KIND_LINK ? "symbolic link" : "special file");
        goto out;
    }
    struct sto_file_info fi;
    if (k == STO_KIND_FILE && strcmp(kind, "import") &&
        sto_st_file(s, owner, norm, &fi) == AIOS_ENOTFOUND) {
        /* placed here by someone else (a tool): keep its content as a version first */
        char *old = NULL;
        size_t on = 0;
        if (sto_read_leaf(dirfd, leaf, s->cfg.max_file_bytes, &old, &on, e, sizeof e) == 0) {
            char osha[65];
            int64_t oseq;
            int http;
            sto_sha256_hex(old, on, osha);
            if (sto_st_put(s, owner, norm, old, on, osha, "import", index_len(old, on), false,
                           &oseq, &http, e, sizeof e, NULL) == 0) {
                struct sto_file_info f2;
                if (sto_st_file(s, owner, norm, &f2) == 0) sto_st_clean(s, f2.id, osha);
            }
        }
        free(old);
    }
    sto_sha256_hex(data, n, sha);
    size_t n_index = index_len(data, n);
    int http;
    /* the quota, before anything is written: when the write might not fit
     * (the agent's usage plus its size and index over the quota), the
     * store checks it exactly without keeping anything */
    int64_t ub, uf;
    if (s->cfg.quota_bytes > 0 && sto_st_usage(s, owner, &ub, &uf) == 0 &&
        ub + (int64_t)n + (int64_t)n_index > s->cfg.quota_bytes &&
        (rc = sto_st_put(s, owner, norm, data, n, sha, kind, n_index, true, seq,
                         &http, e, sizeof e, NULL))) {
        rc = fail(c, http, rc, "%s", e);
        goto out;
    }
    if (strcmp(kind, "import")) {
        rc = sto_tmp_write(s->spares, dirfd, data, n, false, &tmp, e, sizeof e);
        if (rc == AIOS_ENOSPC) {
            rc = fail(c, 507, rc, "writing '%s': %s: the disk holding the storage root is full; "
                      "nothing was written (free space, or delete files or versions)", norm, e);
            goto out;
        }
        if (rc) {
            rc = fail(c, 500, rc, "writing '%s': %s", norm, e);
            goto out;
        }
    }
    struct sto_put_hook hook = {flight_queued, fl};
    rc = sto_st_put(s, owner, norm, data, n, sha, kind, n_index, false, seq, &http,
                    e, sizeof e, fl ? &hook : NULL);
    if (rc) {
        sto_tmp_drop(s->spares, &tmp);
        rc = fail(c, http, rc, "%s", e);
        goto out;
    }
    bool wrote = tmp.name[0];
    if (wrote) {
        if (fl && fl->queued) flight_turn(fl);
        rc = sto_tmp_commit(s->spares, dirfd, &tmp, leaf, false, e, sizeof e);
        if (rc) {
            rc = fail(c, 500, rc, "writing '%s': %s (the new version is recorded and will be "
                      "restored at the next start)", norm, e);
            goto out;
        }
    }
    if (sto_st_file(s, owner, norm, &fi) == 0) {
        if (wrote) pend_add(s, fi.id, sha);
        else sto_st_clean(s, fi.id, sha);
        embed_file(s, owner, fi.id, data, n_index);
    }
    rc = 0;
out:
    if (dirfd >= 0) close(dirfd);
    if (rootfd >= 0) close(rootfd);
    return rc;
}

/* A plain write. It waits only for the owner's queued writes of a
 * directory above its path or a file below it, and for a mutation that
 * waits to drain the stripe; it holds the stripe until its version is
 * queued for the group commit, so the owner's writes share commits and
 * still commit and rename in the order they were queued (a store that
 * commits before it returns keeps the stripe through, as before). */
static int put(struct opctx *c, const char *owner, const char *norm, const char *data, size_t n,
               const char *kind, int64_t *seq)
{
    struct owner_lock m;
    struct sto_flight fl = {.owner = owner, .path = norm, .lock = &m};
    owner_lock_at(c->s, owner, norm, &m);
    int rc = put_locked(c, owner, norm, data, n, kind, seq, &fl);
    if (fl.queued) flight_land(&fl);
    else owner_unlock(&m);
    return rc;
}

/* ------------------------------------------------------------ operations */

static int op_write(struct opctx *c, const struct sto_write_args *a, json_t **out)
{
    const char *norm = a->at.path, *owner, *content = a->content;
    size_t n = a->len;
    int rc = get_owner(c, a->at.owner, norm, STO_MODE_RW, &owner, norm);
    if (rc) return rc;
    int64_t seq;
    rc = put(c, owner, norm, content, n, "write", &seq);
    if (rc) return rc;
    *out = response("Content has been written to file: %s (version %lld, %zu bytes)", norm,
                    (long long)seq, n);
    json_object_set_new(*out, "file_path", json_string(norm));
    json_object_set_new(*out, "version", json_integer(seq));
    json_object_set_new(*out, "size", json_integer((json_int_t)n));
    return 0;
}

static int op_create_file(struct opctx *c, const struct sto_at *a, json_t **out)
{
    char e[1024];
    const char *norm = a->path, *owner;
    int rc = get_owner(c, a->owner, norm, STO_MODE_RW, &owner, norm);
    if (rc) return rc;
    struct owner_lock m;
    owner_lock(c->s, owner, &m);
    int rootfd = -1, dirfd = -1;
    const char *leaf;
    bool exists = false;
    rc = sto_root_open(c->s, owner, true, &rootfd, e, sizeof e);
    if (!rc) rc = sto_walk(rootfd, norm, true, &dirfd, &leaf, e, sizeof e);
    if (rc) {
        rc = path_fail(c, rc, e);
    } else {
        enum sto_kind k = sto_leaf_kind(dirfd, leaf, NULL);
        if (k == STO_KIND_FILE) exists = true;
        else if (k != STO_KIND_NONE)
            rc = fail(c, 409, AIOS_EINVAL, "'%s' exists and is not a regular file", norm);
    }
    if (dirfd >= 0) close(dirfd);
    if (rootfd >= 0) close(rootfd);
    int64_t seq = 0;
    if (!rc && !exists) rc = put_locked(c, owner, norm, "", 0, "create", &seq, NULL);
    owner_unlock(&m);
    if (rc) return rc;
    *out = exists ? response("File already exists at: %s", norm)
                  : response("File has been created successfully at: %s", norm);
    json_object_set_new(*out, "file_path", json_string(norm));
    json_object_set_new(*out, "created", json_boolean(!exists));
    return 0;
}

static int op_create_dir(struct opctx *c, const struct sto_at *a, json_t **out)
{
    char e[1024];
    const char *norm = a->path, *owner, *leaf;
    int rc = get_owner(c, a->owner, norm, STO_MODE_RW, &owner, norm);
    if (rc) return rc;
    /* a mutation like any other: a write must not find a directory where it
     * just checked for none, nor a recursive delete a new one inside */
    struct owner_lock m;
    owner_lock(c->s, owner, &m);
    int rootfd = -1, dirfd = -1;
    bool created = false;
    rc = sto_root_open(c->s, owner, true, &rootfd, e, sizeof e);
    if (!rc) rc = sto_walk(rootfd, norm, true, &dirfd, &leaf, e, sizeof e);
    if (rc) {
        rc = path_fail(c, rc, e);
        goto out;
    }
    if (mkdirat(dirfd, leaf, 0755) == 0) {
        created = true;
        fsync(dirfd);
    } else if (errno != EEXIST) {
        rc = fail(c, 500, AIOS_EIO, "cannot create '%s': %s", norm, strerror(errno));
        goto out;
    } else if (sto_leaf_kind(dirfd, leaf, NULL) != STO_KIND_DIR) {
        rc = fail(c, 409, AIOS_EINVAL, "'%s' exists and is not a directory", norm);
        goto out;
    }
    *out = created ? response("Directory has been created successfully at: %s", norm)
                   : response("Directory already exists at: %s", norm);
    json_object_set_new(*out, "dir_path", json_string(norm));
    json_object_set_new(*out, "created", json_boolean(created));
out:
    owner_unlock(&m);
    if (dirfd >= 0) close(dirfd);
    if (rootfd >= 0) close(rootfd);
    return rc;
}

static int op_read(struct opctx *c, const struct sto_at *a, json_t **out)
{
    char e[1024];
    const char *norm = a->path, *owner, *leaf;
    int rc = get_owner(c, a->owner, norm, STO_MODE_READ, &owner, norm);
    if (rc) return rc;
    int rootfd = -1, dirfd = -1;
    char *data = NULL;
    size_t n = 0;
    rc = sto_root_open(c->s, owner, false, &rootfd, e, sizeof e);
    if (!rc) rc = sto_walk(rootfd, norm, false, &dirfd, &leaf, e, sizeof e);
    if (rc == AIOS_EBUSY) {
        rc = path_fail(c, rc, e);
        goto out;
    }
    if (!rc) rc = sto_read_leaf(dirfd, leaf, c->s->cfg.max_file_bytes, &data, &n, e, sizeof e);
    if (rc == AIOS_ENOTFOUND) {
        rc = fail(c, 404, rc, "no such file or directory: '%s'", norm);
        goto out;
    }
    if (rc == AIOS_EBUSY) {
        rc = fail(c, 409, rc, "'%s' is a directory; use list", norm);
        goto out;
    }
    if (rc == AIOS_ETOOBIG) {
        rc = fail(c, 413, rc, "%s", e);
        goto out;
    }
    if (rc) {
        rc = path_fail(c, rc, e);
        goto out;
    }
    json_t *content = json_stringn(data, n);
    if (!content) {
        rc = fail(c, 422, AIOS_EINVAL, "'%s' is not UTF-8 text (%zu bytes) and cannot be returned "
                  "as a JSON string", norm, n);
        goto out;
    }
    struct sto_file_info fi;
    bool tracked = sto_st_file(c->s, owner, norm, &fi) == 0;
    const char *base = strrchr(norm, '/');
    /* the content itself is the message, as agents written for the
     * reference read it */
    *out = response("%s", "");
    json_object_set(*out, "response_message", content);
    json_object_set_new(*out, "content", content);
    json_object_set_new(*out, "file_path", json_string(norm));
    json_object_set_new(*out, "file_name", json_string(base ? base + 1 : norm));
    json_object_set_new(*out, "size", json_integer((json_int_t)n));
    json_object_set_new(*out, "version", tracked ? json_integer(fi.next_seq - 1) : json_null());
    json_object_set_new(*out, "owner", json_string(owner));
out:
    free(data);
    if (dirfd >= 0) close(dirfd);
    if (rootfd >= 0) close(rootfd);
    return rc;
}

static int op_list(struct opctx *c, const struct sto_at *a, json_t **out)
{
    char e[1024];
    const char *norm = a->path, *owner;
    int rc = get_owner(c, a->owner, norm, STO_MODE_READ, &owner, norm[0] ? norm : ".");
    if (rc) return rc;
    int rootfd = -1, fd = -1;
    rc = sto_root_open(c->s, owner, owner == c->agent, &rootfd, e, sizeof e);
    if (!rc) rc = sto_open_dir(rootfd, norm, &fd, e, sizeof e);
    if (rootfd >= 0) close(rootfd);
    if (rc == AIOS_ENOTFOUND) return fail(c, 404, rc, "no such file or directory: '%s'", norm);
    if (rc) return path_fail(c, rc, e);
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return fail(c, 500, AIOS_EIO, "cannot list '%s'", norm);
    }
    json_t *entries = json_array();
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (!strncmp(de->d_name, STO_TMP_PREFIX, strlen(STO_TMP_PREFIX))) continue;
        struct stat st;
        enum sto_kind k = sto_leaf_kind(dirfd(d), de->d_name, &st);
        if (k == STO_KIND_NONE) continue; /* deleted meanwhile */
        const char *type = k == STO_KIND_FILE ? "file" : k == STO_KIND_DIR ? "dir"
                         : k == STO_KIND_LINK ? "link" : "other";
        json_t *name = json_string(de->d_name);
        if (!name) continue; /* not UTF-8 */
        json_array_append_new(entries, json_pack("{s:o,s:s,s:I,s:f}", "name", name, "type", type,
                                                 "size", (json_int_t)(k == STO_KIND_FILE ? st.st_size : 0),
                                                 "modified", (double)st.st_mtim.tv_sec +
                                                 st.st_mtim.tv_nsec / 1e9));
    }
    closedir(d);
    /* stable order for agents and tests */
    size_t n = json_array_size(entries);
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0; j--) {
            json_t *a = json_array_get(entries, j - 1), *b = json_array_get(entries, j);
            if (strcmp(json_string_value(json_object_get(a, "name")),
                       json_string_value(json_object_get(b, "name"))) <= 0)
                break;
            json_incref(a);
            json_array_set(entries, j - 1, b);
            json_array_set_new(entries, j, a);
        }
    *out = response("%zu entries in '%s'", n, norm[0] ? norm : ".");
    json_object_set_new(*out, "dir_path", json_string(norm));
    json_object_set_new(*out, "entries", entries);
    return 0;
}

static int op_delete(struct opctx *c, const struct sto_delete_args *a, json_t **out, bool dir)
{
    char e[1024];
    const char *norm = a->at.path, *owner, *leaf;
    int rc = get_owner(c, a->at.owner, norm, STO_MODE_RW, &owner, norm);
    if (rc) return rc;
    bool recursive = a->recursive;
    struct owner_lock m;
    owner_lock(c->s, owner, &m);
    int rootfd = -1, dirfd = -1, n_files = 0;
    rc = sto_root_open(c->s, owner, false, &rootfd, e, sizeof e);
    if (!rc) rc = sto_walk(rootfd, norm, false, &dirfd, &leaf, e, sizeof e);
    if (rc == AIOS_ENOTFOUND) {
        rc = fail(c, 404, rc, "no such file or directory: '%s'", norm);
        goto out;
    }
    if (rc) {
        rc = path_fail(c, rc, e);
        goto out;
    }
    enum sto_kind k = sto_leaf_kind(dirfd, leaf, NULL);
    if (k == STO_KIND_NONE) {
        rc = fail(c, 404, AIOS_ENOTFOUND, "no such file or directory: '%s'", norm);
        goto out;
    }
    if (dir && k != STO_KIND_DIR) {
        rc = fail(c, 409, AIOS_EINVAL, "'%s' is not a directory; use delete_file", norm);
        goto out;
    }
    if (!dir && k == STO_KIND_DIR) {
        rc = fail(c, 409, AIOS_EINVAL, "'%s' is a directory; use delete_dir", norm);
        goto out;
    }
    if (dir) {
        if (unlinkat(dirfd, leaf, AT_REMOVEDIR) != 0) {
            if (errno != ENOTEMPTY && errno != EEXIST) {
                rc = fail(c, 500, AIOS_EIO, "cannot remove '%s': %s", norm, strerror(errno));
                goto out;
            }
            if (!recursive) {
                rc = fail(c, 409, AIOS_EINVAL, "directory '%s' is not empty; pass \"recursive\": "
                          "true to delete it with everything in it", norm);
                goto out;
            }
            if (sto_st_forget(c->s, owner, norm, true, &n_files)) {
                rc = fail(c, 500, AIOS_EIO, "storage database error while deleting '%s'", norm);
                goto out;
            }
            /* only something outside storage (a tool writing into the
             * agent's directory) can add entries meanwhile: try again, then
             * answer a conflict */
            int tries = 0;
            while (sto_rmtree(dirfd, leaf) && sto_leaf_kind(dirfd, leaf, NULL) != STO_KIND_NONE) {
                if (++tries == 3) {
                    rc = fail(c, 409, AIOS_EBUSY, "directory '%s' changed while it was being "
                              "deleted (something else wrote into it); delete it again", norm);
                    goto out;
                }
            }
        }
    } else {
        if (sto_st_forget(c->s, owner, norm, false, &n_files)) {
            rc = fail(c, 500, AIOS_EIO, "storage database error while deleting '%s'", norm);
            goto out;
        }
        if (unlinkat(dirfd, leaf, 0) != 0 && errno != ENOENT) {
            rc = fail(c, 500, AIOS_EIO, "cannot remove '%s': %s", norm, strerror(errno));
            goto out;
        }
    }
    fsync(dirfd);
    *out = dir ? response("Directory has been deleted: %s (%d files)", norm, n_files)
               : response("File has been deleted: %s", norm);
    json_object_set_new(*out, dir ? "dir_path" : "file_path", json_string(norm));
    json_object_set_new(*out, "deleted_files", json_integer(dir ? n_files : 1));
out:
    owner_unlock(&m);
    if (dirfd >= 0) close(dirfd);
    if (rootfd >= 0) close(rootfd);
    return rc;
}

static int op_rollback(struct opctx *c, const struct sto_rollback_args *a, json_t **out)
{
    char e[512], sha[65];
    const char *norm = a->at.path, *owner;
    int64_t from;
    int rc = get_owner(c, a->at.owner, norm, STO_MODE_RW, &owner, norm);
    if (rc) return rc;
    struct owner_lock m;
    owner_lock(c->s, owner, &m);
    struct sto_file_info fi;
    char *data = NULL;
    size_t len = 0;
    int64_t seq = 0;
    rc = sto_st_file(c->s, owner, norm, &fi);
    if (rc == AIOS_ENOTFOUND) {
        rc = fail(c, 404, rc, "no such file or directory: '%s' (or it has no versions)", norm);
        goto out;
    }
    if (rc) {
        rc = fail(c, 500, rc, "storage database error");
        goto out;
    }
    rc = sto_st_pick(c->s, fi.id, a->n, a->t_us, sha, &from, e, sizeof e);
    if (rc) {
        rc = fail(c, rc == AIOS_ENOTFOUND ? 404 : 500, rc, "'%s': %s", norm, e);
        goto out;
    }
    rc = sto_st_blob(c->s, sha, &data, &len);
    if (rc) {
        rc = fail(c, 500, AIOS_EIO, "version blob of '%s' is missing", norm);
        goto out;
    }
    rc = put_locked(c, owner, norm, data, len, "rollback", &seq, NULL);
out:
    owner_unlock(&m);
    free(data);
    if (rc) return rc;
    *out = response("Successfully rolled back the file: %s to version %lld (now version %lld)",
                    norm, (long long)from, (long long)seq);
    json_object_set_new(*out, "file_path", json_string(norm));
    json_object_set_new(*out, "restored_version", json_integer(from));
    json_object_set_new(*out, "version", json_integer(seq));
    json_object_set_new(*out, "size", json_integer((json_int_t)len));
    return 0;
}

static int op_history(struct opctx *c, const struct sto_at *a, json_t **out)
{
    const char *norm = a->path, *owner;
    int rc = get_owner(c, a->owner, norm, STO_MODE_READ, &owner, norm);
    if (rc) return rc;
    struct sto_file_info fi;
    rc = sto_st_file(c->s, owner, norm, &fi);
    if (rc == AIOS_ENOTFOUND) return fail(c, 404, rc, "no such file or directory: '%s'", norm);
    json_t *v = NULL;
    if (rc || sto_st_history(c->s, fi.id, &v)) return fail(c, 500, AIOS_EIO, "storage database error");
    *out = response("%zu versions of %s", json_array_size(v), norm);
    json_object_set_new(*out, "file_path", json_string(norm));
    json_object_set_new(*out, "versions", v);
    return 0;
}

/* a candidate: a BM25 result row (JSON, from sto_st_search) or a
 * vector-only file (row read only if it wins) */
struct cand {
    json_t *row; /* borrowed from the BM25 results, or NULL */
    int64_t id;
    double bm25, cosine, score;
};

static int cmp_cand(const void *x, const void *y)
{
    const struct cand *a = x, *b = y;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* Hybrid search of owner's files: the best C by BM25 (FTS5 bm25()) and
 * the best C by cosine with the query's vector (C = max(4k, 32)); each
 * candidate scored with both parts (the exact BM25 of a vector-only one,
 * in one statement; the cosine of a BM25-only one, from the same scan of
 * owner's vectors), "score" = emb_hybrid(weight, cosine, bm25 / best bm25),
 * "bm25" and "cosine" returned too, best k first; vector-only rows are
 * read for the winners only. With keywords (a filter) only BM25
 * candidates, which satisfy it, are ranked. Indexed files without a vector
 * are embedded first, up to EMBED_BACKFILL_MAX per search. */
static int hybrid_search(struct opctx *c, const char *owner, const char *qt,
                         const struct sto_terms *match, bool filtered, int k, json_t **out,
                         char *e, size_t elen)
{
    struct sto *s = c->s;
    struct emb *em = s->cfg.emb;
    int dim = emb_dim(em);
    json_t *bm = NULL, *miss = NULL, *res = NULL;
    struct emb_hit *vh = NULL;
    struct cand *cd = NULL;
    int64_t *ids = NULL;
    double *bms = NULL;
    size_t nv = 0, n = 0, i;
    float *qv = malloc((size_t)dim * sizeof *qv);
    int rc = 0;
    *out = NULL;
    if (!qv) goto oom;
    if ((rc = emb_text(em, qt, strlen(qt), qv))) {
        snprintf(e, elen, "the embedding model failed on the query; see the kernel log");
        goto out;
    }
    if (sto_st_vec_missing(s, owner, EMBED_BACKFILL_MAX, EMBED_TEXT_MAX, &miss) == 0) {
        json_t *r;
        json_array_foreach(miss, i, r) {
            const char *t = json_string_value(json_array_get(r, 1));
            embed_file(s, owner, json_integer_value(json_array_get(r, 0)), t, strlen(t));
        }
    }
    size_t cn = (size_t)(k * 4 > 32 ? k * 4 : 32);
    if ((rc = sto_st_search(s, owner, match, (int)cn, true, &bm, e, elen))) goto out;
    if ((rc = sto_st_vec_scan(s, owner, qv, dim, &vh, &nv))) {
        snprintf(e, elen, "storage database: vector search failed");
        goto out;
    }
    size_t nb = json_array_size(bm), nt = filtered ? 0 : (nv < cn ? nv : cn);
    cd = calloc(nb + nt + 1, sizeof *cd);
    ids = calloc(nt + 1, sizeof *ids);
    bms = calloc(nt + 1, sizeof *bms);
    res = json_array();
    if (!cd || !ids || !bms || !res) goto oom;
    json_t *r;
    json_array_foreach(bm, i, r) {
        cd[n].row = r;
        cd[n].id = json_integer_value(json_object_get(r, "_id"));
        cd[n].bm25 = json_real_value(json_object_get(r, "score"));
        n++;
    }
    /* the best C by cosine that BM25 did not bring, and their BM25 */
    if (nv) qsort(vh, nv, sizeof *vh, emb_hit_cmp_cosine);
    size_t ne = 0;
    for (size_t j = 0; j < nt; j++) {
        bool dup = false;
        for (size_t x = 0; x < nb && !dup; x++) dup = cd[x].id == vh[j].id;
        if (!dup) ids[ne++] = vh[j].id;
    }
    if ((rc = sto_st_score_of(s, match, ids, ne, bms))) {
        snprintf(e, elen, "storage database: search failed");
        goto out;
    }
    for (size_t j = 0; j < ne; j++) cd[n++] = (struct cand){.id = ids[j], .bm25 = bms[j]};
    /* every candidate's cosine; the mix */
    if (nv) qsort(vh, nv, sizeof *vh, emb_hit_cmp_id);
    double best = 0, w = emb_weight(em);
    for (i = 0; i < n; i++) {
        struct emb_hit key = {.id = cd[i].id};
        struct emb_hit *f = nv ? bsearch(&key, vh, nv, sizeof *vh, emb_hit_cmp_id) : NULL;
        cd[i].cosine = f ? f->cosine : 0;
        if (cd[i].bm25 > best) best = cd[i].bm25;
    }
    for (i = 0; i < n; i++)
        cd[i].score = emb_hybrid(w, cd[i].cosine, best > 0 ? cd[i].bm25 / best : 0);
    if (n) qsort(cd, n, sizeof *cd, cmp_cand);
    for (i = 0; i < n && json_array_size(res) < (size_t)k; i++) {
        json_t *row = cd[i].row ? json_incref(cd[i].row) : NULL;
        if (!row && sto_st_search_row(s, owner, cd[i].id, cd[i].bm25 > 0 ? match : NULL, &row))
            continue; /* gone meanwhile */
        json_object_del(row, "_id");
        json_object_set_new(row, "bm25", json_real(cd[i].bm25));
        json_object_set_new(row, "cosine", json_real(cd[i].cosine));
        json_object_set_new(row, "score", json_real(cd[i].score));
        json_array_append_new(res, row);
    }
    *out = res;
    res = NULL;
    goto out;
oom:
    rc = AIOS_ENOMEM;
    snprintf(e, elen, "out of memory");
out:
    json_decref(res);
    json_decref(bm);
    json_decref(miss);
    free(vh);
    free(cd);
    free(ids);
    free(bms);
    free(qv);
    return rc;
}

static int op_retrieve(struct opctx *c, const struct sto_retrieve_args *a, json_t **out)
{
    const char *qt = a->query_text;
    int rc, k = a->k;
    struct sto_terms match = {.any = qt, .all = a->keywords};
    bool filtered = false;
    for (const unsigned char *p = (const unsigned char *)a->keywords; *p && !filtered; p++)
        filtered = isalnum(*p) || *p >= 0x80 || *p == '_';
    /* owner: search another agent's files, keeping only those a live grant
     * lets the caller read (nothing else is even counted) */
    const char *owner = a->owner;
    bool foreign = owner && owner[0] && strcmp(owner, c->agent);
    json_t *res = NULL;
    char e[512];
    /* a group that names the owner's storage opens all of it */
    bool open_all = foreign && c->s->ns_policy &&
                    c->s->ns_policy(c->s->ns_ud, c->agent, owner, NULL, false, AIOS_ENOTFOUND) == 0;
    int want = foreign && !open_all ? (int)k * 5 + 20 : (int)k;
    if (c->s->cfg.emb) /* embedding.model: BM25 + cosine */
        rc = hybrid_search(c, foreign ? owner : c->agent, qt, &match, filtered, want, &res, e, sizeof e);
    else
        rc = sto_st_search(c->s, foreign ? owner : c->agent, &match, want, false, &res, e, sizeof e);
    if (rc) return fail(c, rc == AIOS_EENGINE ? 503 : 500, rc, "%s", e);
    if (foreign && !open_all) {
        json_t *kept = json_array();
        size_t i;
        json_t *r;
        json_array_foreach(res, i, r) {
            const char *fp = json_string_value(json_object_get(r, "file_path"));
            if (json_array_size(kept) < (size_t)k &&
                sto_share_check(c->s, owner, fp, c->agent, STO_MODE_READ) == 0)
                json_array_append(kept, r);
        }
        json_decref(res);
        res = kept;
    }
    size_t n = json_array_size(res);
    if (n == 0) {
        *out = response("No documents found");
    } else {
        char *dump = json_dumps(res, JSON_COMPACT);
        *out = response("%s", dump ? dump : "");
        free(dump);
    }
    json_object_set_new(*out, "results", res);
    return 0;
}

static void iso_utc(int64_t t_us, char out[32])
{
    time_t t = (time_t)(t_us / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* a read-only link to one of the caller's files (see storage.h) */
static int op_share_link(struct opctx *c, const struct sto_share_args *a, json_t **out)
{
    char e[1024];
    const char *norm = a->path, *leaf;
    if (a->owner && strcmp(a->owner, c->agent))
        return fail(c, 403, AIOS_EPERM, "only the owner of a file can share it");
    int rootfd = -1, dirfd = -1;
    struct stat st;
    enum sto_kind kind = STO_KIND_NONE;
    int rc = sto_root_open(c->s, c->agent, true, &rootfd, e, sizeof e);
    if (!rc) rc = sto_walk(rootfd, norm, false, &dirfd, &leaf, e, sizeof e);
    if (!rc) kind = sto_leaf_kind(dirfd, leaf, &st);
    if (dirfd >= 0) close(dirfd);
    if (rootfd >= 0) close(rootfd);
    if (rc == AIOS_ENOTFOUND || (!rc && kind == STO_KIND_NONE))
        return fail(c, 404, AIOS_ENOTFOUND, "no such file: '%s'", norm);
    if (rc) return path_fail(c, rc, e);
    if (kind != STO_KIND_FILE)
        return fail(c, 409, AIOS_EINVAL, "'%s' is not a file: a share link is for one file (give "
                    "params.agent to share a directory with another agent)", norm);
    uint8_t raw[STO_LINK_TOKEN_LEN / 2];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        return fail(c, 500, AIOS_EIO, "no randomness for a link token");
    char token[STO_LINK_TOKEN_LEN + 1], hash[65];
    for (size_t i = 0; i < sizeof raw; i++) snprintf(token + 2 * i, 3, "%02x", raw[i]);
    sto_sha256_hex(token, STO_LINK_TOKEN_LEN, hash);
    int64_t exp = util_wall_us() + a->expires_in_s * 1000000;
    rc = c->s->ops->link_add(c->s->st, c->agent, norm, hash, exp, e, sizeof e);
    if (rc) return fail(c, 500, rc, "%s", e);
    char share_path[8 + STO_LINK_TOKEN_LEN], expires[32], modified[32], id[17];
    snprintf(share_path, sizeof share_path, "/s/%s", token);
    snprintf(id, sizeof id, "%.16s", hash);
    iso_utc(exp, expires);
    iso_utc((int64_t)st.st_mtime * 1000000, modified);
    const char *base = strrchr(norm, '/');
    /* the API adds "share_link" (this path on the kernel's address) and the
     * reference's response_message, the JSON text of {file_name, file_path,
     * share_link, expires_in, last_modified} */
    *out = response("'%s' is shared read-only at %s until %s", norm, share_path, expires);
    json_object_set_new(*out, "file_path", json_string(norm));
    json_object_set_new(*out, "file_name", json_string(base ? base + 1 : norm));
    json_object_set_new(*out, "owner", json_string(c->agent));
    json_object_set_new(*out, "share_path", json_string(share_path));
    json_object_set_new(*out, "link_id", json_string(id));
    json_object_set_new(*out, "mode", json_string("r"));
    json_object_set_new(*out, "expires", json_string(expires));
    json_object_set_new(*out, "expires_in_s", json_integer(a->expires_in_s));
    json_object_set_new(*out, "last_modified", json_string(modified));
    return 0;
}

int sto_link_read(struct sto *s, const char *token, struct sto_link_file *out, int *http,
                  char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    *http = 404;
    snprintf(err, errlen, "no such link (it may have expired or been revoked)");
    size_t n = token ? strlen(token) : 0;
    if (n != STO_LINK_TOKEN_LEN) return AIOS_ENOTFOUND;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)token[i]) && (token[i] < 'a' || token[i] > 'f')) return AIOS_ENOTFOUND;
    char hash[65];
    sto_sha256_hex(token, n, hash);
    snprintf(out->link_id, sizeof out->link_id, "%.16s", hash);
    int rc = s->ops->link_find(s->st, hash, out->owner, sizeof out->owner, out->path, sizeof out->path);
    if (rc == AIOS_ENOTFOUND) return rc;
    if (rc) {
        *http = 500;
        snprintf(err, errlen, "storage database error");
        return rc;
    }
    char e[1024];
    const char *leaf;
    int rootfd = -1, dirfd = -1;
    rc = sto_root_open(s, out->owner, false, &rootfd, e, sizeof e);
    if (!rc) rc = sto_walk(rootfd, out->path, false, &dirfd, &leaf, e, sizeof e);
    if (!rc) rc = sto_read_leaf(dirfd, leaf, s->cfg.max_file_bytes, &out->data, &out->len, e, sizeof e);
    if (dirfd >= 0) close(dirfd);
    if (rootfd >= 0) close(rootfd);
    if (rc == AIOS_ETOOBIG) {
        *http = 413;
        snprintf(err, errlen, "the shared file is over storage.max_file_bytes");
    } else if (rc && rc != AIOS_ENOTFOUND && rc != AIOS_EBUSY) {
        *http = 500;
        snprintf(err, errlen, "cannot read the shared file");
    } else if (rc) {
        rc = AIOS_ENOTFOUND; /* the file is gone (or is a directory now) */
    }
    if (rc) sto_link_file_free(out);
    else *http = 200;
    return rc;
}

void sto_link_file_free(struct sto_link_file *f)
{
    if (!f) return;
    free(f->data);
    f->data = NULL;
    f->len = 0;
}

static int op_share(struct opctx *c, const struct sto_share_args *a, json_t **out)
{
    char e[1024];
    const char *norm = a->path, *grantee = a->grantee, *leaf;
    enum sto_mode mode = a->mode;
    int rc;
    if (!grantee) return op_share_link(c, a, out);
    if (!strcmp(grantee, c->agent))
        return fail(c, 400, AIOS_EINVAL, "an agent cannot share with itself");
    if (a->owner && strcmp(a->owner, c->agent))
        return fail(c, 403, AIOS_EPERM, "only the owner of a file can share it");
    int64_t exp = a->expires_in_s ? util_wall_us() + a->expires_in_s * 1000000 : 0;
    /* the path must exist in the owner's tree */
    int rootfd = -1, dirfd = -1;
    rc = sto_root_open(c->s, c->agent, true, &rootfd, e, sizeof e);
    if (!rc && norm[0]) {
        rc = sto_walk(rootfd, norm, false, &dirfd, &leaf, e, sizeof e);
        if (!rc && sto_leaf_kind(dirfd, leaf, NULL) == STO_KIND_NONE) rc = AIOS_ENOTFOUND;
    }
    if (dirfd >= 0) close(dirfd);
    if (rootfd >= 0) close(rootfd);
    if (rc == AIOS_ENOTFOUND) return fail(c, 404, rc, "no such file or directory: '%s'", norm);
    if (rc) return path_fail(c, rc, e);
    rc = sto_share_grant(c->s, c->agent, norm, grantee, mode, exp, e, sizeof e);
    if (rc) return fail(c, 500, rc, "%s", e);
    *out = response("'%s' is shared with agent '%s' (%s)%s", norm[0] ? norm : ".", grantee,
                    mode == STO_MODE_RW ? "read-write" : "read-only",
                    exp ? " until it expires" : "");
    json_object_set_new(*out, "file_path", json_string(norm));
    json_object_set_new(*out, "owner", json_string(c->agent));
    json_object_set_new(*out, "agent", json_string(grantee));
    json_object_set_new(*out, "mode", json_string(mode == STO_MODE_RW ? "rw" : "r"));
    json_object_set_new(*out, "expires_in_s", exp ? json_integer((exp - util_wall_us()) / 1000000 + 1) : json_null());
    return 0;
}

static int op_unshare(struct opctx *c, const struct sto_unshare_args *a, json_t **out)
{
    char e[512];
    const char *norm = a->path, *grantee = a->grantee;
    if (!grantee) { /* links */
        int n = 0;
        int rc = c->s->ops->link_revoke(c->s->st, c->agent, norm, a->link_id, &n, e, sizeof e);
        if (rc) return fail(c, 500, rc, "%s", e);
        if (n == 0) {
            if (a->link_id) return fail(c, 404, AIOS_ENOTFOUND, "you have no link '%s'", a->link_id);
            return fail(c, 404, AIOS_ENOTFOUND, "there is no link to '%s' (give params.agent to "
                        "end a share with an agent)", norm);
        }
        *out = response("%d link%s revoked", n, n == 1 ? "" : "s");
        json_object_set_new(*out, "revoked", json_integer(n));
        return 0;
    }
    int rc = sto_share_revoke(c->s, c->agent, norm, grantee, e, sizeof e);
    if (rc) return fail(c, rc == AIOS_ENOTFOUND ? 404 : 500, rc, "%s", e);
    *out = response("'%s' is no longer shared with agent '%s'", norm[0] ? norm : ".", grantee);
    return 0;
}

static int op_shares(struct opctx *c, json_t **out)
{
    json_t *l = NULL;
    if (sto_share_list(c->s, c->agent, &l)) return fail(c, 500, AIOS_EIO, "storage database error");
    *out = response("%zu shares given, %zu received", json_array_size(json_object_get(l, "given")),
                    json_array_size(json_object_get(l, "received")));
    json_object_update(*out, l);
    json_decref(l);
    json_t *links = NULL;
    if (c->s->ops->links(c->s->st, c->agent, &links)) return fail(c, 500, AIOS_EIO, "storage database error");
    json_object_set_new(*out, "links", links);
    return 0;
}

static int op_usage(struct opctx *c, json_t **out)
{
    int64_t b, f;
    if (sto_st_usage(c->s, c->agent, &b, &f)) return fail(c, 500, AIOS_EIO, "storage database error");
    *out = response("%lld bytes in %lld files", (long long)b, (long long)f);
    json_object_set_new(*out, "bytes", json_integer(b));
    json_object_set_new(*out, "files", json_integer(f));
    json_object_set_new(*out, "quota_bytes", json_integer(c->s->cfg.quota_bytes));
    json_object_set_new(*out, "quota_files", json_integer(c->s->cfg.quota_files));
    return 0;
}

/* import files found in dirfd (placed by tools) that have no versions yet */
static void import_tree(struct opctx *c, int dirfd, char *rel, size_t rlen, int *n, int depth)
{
    if (depth > STO_DEPTH_MAX || *n >= MOUNT_IMPORT_MAX) return;
    int fd = dup(dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0) close(fd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) && *n < MOUNT_IMPORT_MAX) {
        if (de->d_name[0] == '.' && (!de->d_name[1] || !strcmp(de->d_name, "..") ||
                                     !strncmp(de->d_name, STO_TMP_PREFIX, strlen(STO_TMP_PREFIX))))
            continue;
        size_t nl = strlen(de->d_name);
        if (rlen + nl + 2 > STO_PATH_MAX) continue;
        size_t o = rlen;
        if (o) rel[o++] = '/';
        memcpy(rel + o, de->d_name, nl + 1);
        enum sto_kind k = sto_leaf_kind(dirfd, de->d_name, NULL);
        if (k == STO_KIND_DIR) {
            int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub >= 0) {
                import_tree(c, sub, rel, o + nl, n, depth + 1);
                close(sub);
            }
        } else if (k == STO_KIND_FILE) {
            struct sto_file_info fi;
            char *data = NULL, e[256];
            size_t len;
            if (sto_st_file(c->s, c->agent, rel, &fi) == AIOS_ENOTFOUND &&
                sto_read_leaf(dirfd, de->d_name, c->s->cfg.max_file_bytes, &data, &len, e, sizeof e) == 0) {
                int64_t seq;
                if (put_locked(c, c->agent, rel, data, len, "import", &seq, NULL) == 0) (*n)++;
            }
            free(data);
        }
        rel[rlen] = 0;
    }
    closedir(d);
}

static int op_mount(struct opctx *c, const struct sto_mount_args *a, json_t **out)
{
    const char *root = a->root;
    char e[512];
    int rc;
    int rootfd;
    struct owner_lock m;
    owner_lock(c->s, c->agent, &m);
    rc = sto_root_open(c->s, c->agent, true, &rootfd, e, sizeof e);
    int n = 0;
    if (!rc) {
        char rel[STO_PATH_MAX + 2] = "";
        import_tree(c, rootfd, rel, 0, &n, 0);
        close(rootfd);
    }
    owner_unlock(&m);
    if (rc) return path_fail(c, rc, e);
    char dn[STO_AGENT_MAX * 3 + 1];
    sto_agent_dirname(c->agent, dn, sizeof dn);
    *out = response("File system mounted successfully for agent: %s%s", c->agent,
                    root ? " (each agent has its own root; the root given was not used)" : "");
    json_object_set_new(*out, "root_dir", json_pack("s++", c->s->agents_dir, "/", dn));
    json_object_set_new(*out, "imported", json_integer(n));
    return 0;
}

/* Would this request lose data for good (a delete: every version goes;
 * a write over an existing file when max_versions is 1: the old content is
 * not kept)? Read-only: resolves the owner as the operation will and looks
 * at the disk. Requests that will fail anyway (no such file, no share)
 * need no approval: they answer as they would. */
int sto_needs_approval(struct sto *s, const char *agent, const struct sto_req *q, bool deletes,
                       bool overwrites, char *what, size_t whatlen)
{
    if (!s || !agent || !q) return 0;
    bool del_file = q->op == STO_OP_DELETE_FILE, del_dir = q->op == STO_OP_DELETE_DIR;
    bool write = q->op == STO_OP_WRITE;
    if (!((deletes && (del_file || del_dir)) || (overwrites && write && s->cfg.max_versions == 1)))
        return 0;
    const struct sto_at *at = write ? &q->u.write.at : &q->u.del.at;
    char err[512], e[512];
    const char *norm = at->path;
    struct opctx c = {.s = s, .agent = agent, .http = 500, .err = err, .errlen = sizeof err};
    const char *owner, *leaf;
    if (get_owner(&c, at->owner, norm, STO_MODE_RW, &owner, norm)) return 0;
    int rootfd = -1, dirfd = -1, need = 0;
    if (sto_root_open(s, owner, false, &rootfd, e, sizeof e) == 0 &&
        sto_walk(rootfd, norm, false, &dirfd, &leaf, e, sizeof e) == 0) {
        enum sto_kind k = sto_leaf_kind(dirfd, leaf, NULL);
        const char *of = strcmp(owner, agent) ? owner : NULL;
        if (del_dir && k == STO_KIND_DIR) {
            need = 1;
            snprintf(what, whatlen, "delete the directory '%s'%s%s%s with everything in it and "
                     "all versions", norm, of ? " of agent '" : "", of ? of : "", of ? "'" : "");
        } else if (del_file && k == STO_KIND_FILE) {
            need = 1;
            snprintf(what, whatlen, "delete the file '%s'%s%s%s and all its versions", norm,
                     of ? " of agent '" : "", of ? of : "", of ? "'" : "");
        } else if (write && k == STO_KIND_FILE) {
            need = 1;
            snprintf(what, whatlen, "overwrite the file '%s'%s%s%s without keeping its current "
                     "content (storage.max_versions is 1)", norm, of ? " of agent '" : "",
                     of ? of : "", of ? "'" : "");
        }
    }
    if (dirfd >= 0) close(dirfd);
    if (rootfd >= 0) close(rootfd);
    return need;
}

void sto_set_ns_policy(struct sto *s, sto_ns_policy_fn fn, void *ud)
{
    if (!s) return;
    s->ns_policy = fn;
    s->ns_ud = ud;
}

/* ------------------------------------------------------------ the operations' entry points */

/* every entry point: a valid agent, then the operation, then one answer */
static int enter(struct opctx *c, struct sto *s, const char *agent, struct sto_reply *r)
{
    r->out = NULL;
    r->http = 500;
    r->err[0] = 0;
    *c = (struct opctx){.s = s, .agent = agent, .http = 500, .err = r->err, .errlen = sizeof r->err};
    char dn[STO_AGENT_MAX * 3 + 1];
    if (!agent || sto_agent_dirname(agent, dn, sizeof dn))
        return fail(c, 400, AIOS_EINVAL, "agent_name must be 1..%d bytes", STO_AGENT_MAX);
    return 0;
}

static int leave(struct opctx *c, int rc, struct sto_reply *r)
{
    if (!rc && !r->out) rc = fail(c, 500, AIOS_ENOMEM, "out of memory");
    if (rc) {
        json_decref(r->out);
        r->out = NULL;
    }
    r->http = rc ? c->http : 200;
    return rc;
}

#define STO_ENTRY(call)                            \
    do {                                           \
        struct opctx c;                            \
        int rc_ = enter(&c, s, agent, r);          \
        if (!rc_) rc_ = call;                      \
        return leave(&c, rc_, r);                  \
    } while (0)

int sto_mount(struct sto *s, const char *agent, const struct sto_mount_args *a, struct sto_reply *r)
{
    STO_ENTRY(op_mount(&c, a, &r->out));
}
int sto_create_file(struct sto *s, const char *agent, const struct sto_at *a, struct sto_reply *r)
{
    STO_ENTRY(op_create_file(&c, a, &r->out));
}
int sto_create_dir(struct sto *s, const char *agent, const struct sto_at *a, struct sto_reply *r)
{
    STO_ENTRY(op_create_dir(&c, a, &r->out));
}
int sto_write(struct sto *s, const char *agent, const struct sto_write_args *a, struct sto_reply *r)
{
    STO_ENTRY(op_write(&c, a, &r->out));
}
int sto_read(struct sto *s, const char *agent, const struct sto_at *a, struct sto_reply *r)
{
    STO_ENTRY(op_read(&c, a, &r->out));
}
int sto_list(struct sto *s, const char *agent, const struct sto_at *a, struct sto_reply *r)
{
    STO_ENTRY(op_list(&c, a, &r->out));
}
int sto_delete_file(struct sto *s, const char *agent, const struct sto_delete_args *a,
                    struct sto_reply *r)
{
    STO_ENTRY(op_delete(&c, a, &r->out, false));
}
int sto_delete_dir(struct sto *s, const char *agent, const struct sto_delete_args *a,
                   struct sto_reply *r)
{
    STO_ENTRY(op_delete(&c, a, &r->out, true));
}
int sto_rollback(struct sto *s, const char *agent, const struct sto_rollback_args *a,
                 struct sto_reply *r)
{
    STO_ENTRY(op_rollback(&c, a, &r->out));
}
int sto_history(struct sto *s, const char *agent, const struct sto_at *a, struct sto_reply *r)
{
    STO_ENTRY(op_history(&c, a, &r->out));
}
int sto_retrieve(struct sto *s, const char *agent, const struct sto_retrieve_args *a,
                 struct sto_reply *r)
{
    STO_ENTRY(op_retrieve(&c, a, &r->out));
}
int sto_share(struct sto *s, const char *agent, const struct sto_share_args *a, struct sto_reply *r)
{
    STO_ENTRY(op_share(&c, a, &r->out));
}
int sto_unshare(struct sto *s, const char *agent, const struct sto_unshare_args *a,
                struct sto_reply *r)
{
    STO_ENTRY(op_unshare(&c, a, &r->out));
}
int sto_shares(struct sto *s, const char *agent, struct sto_reply *r)
{
    STO_ENTRY(op_shares(&c, &r->out));
}
int sto_usage(struct sto *s, const char *agent, struct sto_reply *r)
{
    STO_ENTRY(op_usage(&c, &r->out));
}

int sto_do(struct sto *s, const char *agent, const struct sto_req *q, struct sto_reply *r)
{
    switch (q->op) {
    case STO_OP_MOUNT: return sto_mount(s, agent, &q->u.mount, r);
    case STO_OP_CREATE_FILE: return sto_create_file(s, agent, &q->u.at, r);
    case STO_OP_CREATE_DIR: return sto_create_dir(s, agent, &q->u.at, r);
    case STO_OP_WRITE: return sto_write(s, agent, &q->u.write, r);
    case STO_OP_READ: return sto_read(s, agent, &q->u.at, r);
    case STO_OP_LIST: return sto_list(s, agent, &q->u.at, r);
    case STO_OP_DELETE_FILE: return sto_delete_file(s, agent, &q->u.del, r);
    case STO_OP_DELETE_DIR: return sto_delete_dir(s, agent, &q->u.del, r);
    case STO_OP_ROLLBACK: return sto_rollback(s, agent, &q->u.rollback, r);
    case STO_OP_HISTORY: return sto_history(s, agent, &q->u.at, r);
    case STO_OP_RETRIEVE: return sto_retrieve(s, agent, &q->u.retrieve, r);
    case STO_OP_SHARE: return sto_share(s, agent, &q->u.share, r);
    case STO_OP_UNSHARE: return sto_unshare(s, agent, &q->u.unshare, r);
    case STO_OP_SHARES: return sto_shares(s, agent, r);
    case STO_OP_USAGE: return sto_usage(s, agent, r);
    case STO_OP__COUNT: break;
    }
    assert(0 && "sto_do: not an operation");
    r->out = NULL;
    r->http = 500;
    snprintf(r->err, sizeof r->err, "not a storage operation");
    return AIOS_EINVAL;
}

int sto_exec(struct sto *s, const char *agent, const char *op, json_t *params, json_t **out,
             int *http_status, char *err, size_t errlen)
{
    *out = NULL;
    struct sto_req *q;
    int rc = sto_req_parse(op, params, &q, http_status, err, errlen);
    if (rc) return rc;
    struct sto_reply *r = malloc(sizeof *r);
    if (!r) {
        sto_req_free(q);
        *http_status = 500;
        snprintf(err, errlen, "out of memory");
        return AIOS_ENOMEM;
    }
    rc = sto_do(s, agent, q, r);
    *out = r->out;
    *http_status = r->http;
    snprintf(err, errlen, "%s", rc ? r->err : "");
    free(r);
    sto_req_free(q);
    return rc;
}

void sto_executor(struct syscall *sc, void *ud)
{
    struct sto *s = ud;
    const struct sto_req *q = sc->req;
    assert(q);
    struct sto_reply *r = malloc(sizeof *r);
    if (!r) {
        syscall_fail(sc, AIOS_ENOMEM, 500, "out of memory");
        return;
    }
    int rc = sto_do(s, sc->agent, q, r);
    if (rc) {
        syscall_fail(sc, rc, r->http, "%s", r->err);
        free(r);
        return;
    }
    struct kq_res *res = kq_res_new(r->out);
    free(r);
    if (!res) syscall_fail(sc, AIOS_ENOMEM, 500, "out of memory");
    else syscall_finish(sc, res, kq_res_free);
}

/* ---- share grants, for the access manager: through the store ---- */

int sto_share_grant(struct sto *s, const char *owner, const char *path, const char *grantee,
                    enum sto_mode mode, int64_t t_expires_us, char *err, size_t errlen)
{
    return s->ops->grant(s->st, owner, path, grantee, mode, t_expires_us, err, errlen);
}

int sto_share_revoke(struct sto *s, const char *owner, const char *path, const char *grantee,
                     char *err, size_t errlen)
{
    return s->ops->revoke(s->st, owner, path, grantee, err, errlen);
}

int sto_share_check(struct sto *s, const char *owner, const char *path, const char *agent,
                    enum sto_mode mode)
{
    return s->ops->check(s->st, owner, path, agent, mode);
}

int sto_share_list(struct sto *s, const char *agent, json_t **out)
{
    return s->ops->grants(s->st, agent, out);
}

int sto_n_threads(const struct sto *s)
{
    return s->cfg.n_threads;
}

/* ------------------------------------------------------------ open / repair */

static int repair_one(void *ud, const char *owner, const char *path, int64_t id,
                      const char *sha)
{
    struct sto *s = ud;
    char e[512];
    struct sto_tmp tmp;
    char *data = NULL;
    size_t n;
    int rootfd = -1, dirfd = -1, rc;
    const char *leaf;
    rc = sto_st_blob(s, sha, &data, &n);
    if (!rc) rc = sto_root_open(s, owner, true, &rootfd, e, sizeof e);
    if (!rc) rc = sto_walk(rootfd, path, true, &dirfd, &leaf, e, sizeof e);
    if (!rc && sto_leaf_kind(dirfd, leaf, NULL) == STO_KIND_DIR) rc = AIOS_EBUSY;
    if (!rc) rc = sto_tmp_write(NULL, dirfd, data, n, true, &tmp, e, sizeof e);
    if (!rc) rc = sto_tmp_commit(NULL, dirfd, &tmp, leaf, true, e, sizeof e);
    if (!rc) rc = sto_st_clean(s, id, sha);
    if (rc) LOG_ERROR("storage", "could not restore %s/%s after a crash (%s)", owner, path, aios_strerror(rc));
    else LOG_INFO("storage", "restored %s/%s to its last committed version after a crash", owner, path);
    free(data);
    if (dirfd >= 0) close(dirfd);
    if (rootfd >= 0) close(rootfd);
    return 0;
}

/* remove temp files a crash left behind */
static void sweep_tmp(int dirfd, int depth)
{
    if (depth > STO_DEPTH_MAX + 1) return;
    int fd = dup(dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0) close(fd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") || !strcmp(de->d_name, ".lsfs"))
            continue;
        enum sto_kind k = sto_leaf_kind(dirfd, de->d_name, NULL);
        if (k == STO_KIND_FILE && !strncmp(de->d_name, STO_TMP_PREFIX, strlen(STO_TMP_PREFIX))) {
            unlinkat(dirfd, de->d_name, 0);
        } else if (k == STO_KIND_DIR) {
            int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub >= 0) {
                sweep_tmp(sub, depth + 1);
                close(sub);
            }
        }
    }
    closedir(d);
}

int sto_open(struct sto **out, const struct sto_config *c, char *err, size_t errlen)
{
    *out = NULL;
    int rc;
    struct sto *s = calloc(1, sizeof *s);
    if (!s) return AIOS_ENOMEM;
    s->cfg = *c;
    s->cfg.root_dir = NULL;
    for (int i = 0; i < STO_N_STRIPES; i++) {
        pthread_mutex_init(&s->stripes[i], NULL);
        pthread_cond_init(&s->stripe_cv[i], NULL);
    }
    pthread_mutex_init(&s->pend_mu, NULL);
    pthread_cond_init(&s->pend_cv, NULL);
    s->sync_fd = -1;
    if (s->cfg.max_versions < 1) s->cfg.max_versions = STO_DEFAULT_MAX_VERSIONS;
    if (s->cfg.max_file_bytes <= 0) s->cfg.max_file_bytes = STO_DEFAULT_MAX_FILE_BYTES;
    if (s->cfg.n_threads <= 0) s->cfg.n_threads = STO_DEFAULT_THREADS;
    char meta[4200];
    if (!c->root_dir || !c->root_dir[0]) {
        snprintf(err, errlen, "storage.root_dir is empty");
        rc = AIOS_ECONFIG;
        goto fail_early;
    }
    snprintf(meta, sizeof meta, "%s/.lsfs", c->root_dir);
    if (util_mkdirs(meta)) {
        snprintf(err, errlen, "storage.root_dir: cannot create %s: %s", meta, strerror(errno));
        rc = AIOS_EIO;
        goto fail_early;
    }
    s->agents_dir = realpath(c->root_dir, NULL);
    s->cfg.root_dir = s->agents_dir ? strdup(s->agents_dir) : NULL;
    if (!s->agents_dir || !s->cfg.root_dir) {
        rc = AIOS_ENOMEM;
        goto fail_early;
    }
    s->ops = c->store ? c->store : c->store_url ? &sto_pg_store : &sto_sqlite_store;
    struct sto_store_cfg sc = {.root_dir = s->agents_dir, .url = c->store_url,
                               .max_versions = s->cfg.max_versions,
                               .quota_bytes = s->cfg.quota_bytes, .quota_files = s->cfg.quota_files};
    rc = s->ops->open(&s->st, &sc, err, errlen);
    if (rc) goto fail;
    bool reset = false;
    if (s->cfg.emb && (rc = sto_st_vec_model(s, emb_fingerprint(s->cfg.emb), &reset))) {
        snprintf(err, errlen, "storage database under %s: cannot set up vectors", s->agents_dir);
        goto fail;
    }
    if (reset) LOG_INFO("storage", "embedding model changed or new: file vectors are rebuilt as "
                        "agents search");
    int top = open(s->agents_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (top >= 0) {
        sweep_tmp(top, 0);
        s->spares = sto_spares_open(top);
        close(top);
    }
    if (!s->spares) LOG_WARN("storage", "no spare files under %s/.lsfs: every write makes a new "
                             "file", s->agents_dir);
    sto_st_each_dirty(s, repair_one, s);
    sto_view_sweep(s); /* tool views a killed kernel left behind */
    s->sync_fd = open(s->agents_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->sync_fd < 0) {
        snprintf(err, errlen, "storage.root_dir: cannot open %s: %s", s->agents_dir, strerror(errno));
        rc = AIOS_EIO;
        goto fail;
    }
    if (pthread_create(&s->cleaner, NULL, cleaner_main, s) == 0) s->cleaner_started = true;
    else LOG_WARN("storage", "no cleaner thread: every write syncs the disk itself");
    LOG_INFO("storage", "storage at %s (max_versions %d, quota %lld bytes / %lld files per agent, "
             "%s store)", s->agents_dir, s->cfg.max_versions, (long long)s->cfg.quota_bytes,
             (long long)s->cfg.quota_files, s->ops->name);
    *out = s;
    return 0;
fail:
    sto_close(s);
    return rc;
fail_early:
    for (int i = 0; i < STO_N_STRIPES; i++) {
        pthread_mutex_destroy(&s->stripes[i]);
        pthread_cond_destroy(&s->stripe_cv[i]);
    }
    pthread_mutex_destroy(&s->pend_mu);
    pthread_cond_destroy(&s->pend_cv);
    free(s->agents_dir);
    free(s->cfg.root_dir);
    free(s);
    return rc;
}

void sto_close(struct sto *s)
{
    if (!s) return;
    if (s->cleaner_started) { /* it syncs and clears what is pending, then ends */
        pthread_mutex_lock(&s->pend_mu);
        s->pend_stop = true;
        pthread_cond_broadcast(&s->pend_cv);
        pthread_mutex_unlock(&s->pend_mu);
        pthread_join(s->cleaner, NULL);
    }
    assert(!s->pend);
    if (s->sync_fd >= 0) close(s->sync_fd);
    sto_spares_close(s->spares);
    if (s->st) s->ops->close(s->st);
    for (int i = 0; i < STO_N_STRIPES; i++) {
        pthread_mutex_destroy(&s->stripes[i]);
        pthread_cond_destroy(&s->stripe_cv[i]);
    }
    pthread_mutex_destroy(&s->pend_mu);
    pthread_cond_destroy(&s->pend_cv);
    free(s->agents_dir);
    free(s->cfg.root_dir);
    free(s);
}
