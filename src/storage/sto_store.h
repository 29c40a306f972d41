/* The storage manager's metadata store, behind a table of functions.
 *
 * The manager (storage.c) keeps file contents on disk itself and asks the
 * store for everything else: versions (content-addressed blobs), quota
 * accounting, share grants, the search index and embedding vectors. It
 * only ever calls through struct sto_store_ops: store.c (SQLite, the
 * default) and store_pg.c (PostgreSQL, state.backend postgres) are the two
 * implementations. Every function may be called from any thread; the
 * store serialises what must be serialised itself. Not for other modules. */
#ifndef AIOS_STORAGE_STO_STORE_H
#define AIOS_STORAGE_STO_STORE_H

#include "storage/storage.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sto_store; /* the implementation's */
struct emb_hit;   /* llm/embed.h: {file id, cosine} */

struct sto_store_cfg {
    const char *root_dir;   /* absolute; the store may keep its data below root_dir/.lsfs */
    const char *url;        /* the database server's URL (PostgreSQL), else NULL */
    int max_versions;       /* versions kept per file (>= 1) */
    int64_t quota_bytes;    /* per owner, bytes of every kept version's distinct content
                             * plus indexed text; 0 = unlimited */
    int64_t quota_files;    /* per owner, files; 0 = unlimited */
};

/* one file's current version */
struct sto_file_info {
    int64_t id;
    char sha[65];
    int64_t size, t_created_us, t_modified_us, next_seq;
    int n_versions;
    bool dirty;
};

/* What a search looks for: any of the words in `any` (ranked), each of
 * the words in `all` (a filter). Both are words separated by one space
 * (letters, digits, '_' and non-ASCII bytes); either may be "". */
struct sto_terms {
    const char *any;
    const char *all;
};

/* terms.c: t as one query text: any of t->any (joined by or_sep), and
 * each of t->all (and_sep), every word between quote characters; "" when t
 * has no words. SQLite: '"', " OR ", " AND "; PostgreSQL's to_tsquery:
 * '\'', " | ", " & ". */
#define STO_MATCH_MAX 6200
void sto_terms_expr(const struct sto_terms *t, char quote, const char *or_sep,
                    const char *and_sep, char match[STO_MATCH_MAX]);

/* a file whose newest version committed but whose rename on disk may not
 * have happened (a crash): repair it from its blob */
typedef int (*sto_dirty_fn)(void *ud, const char *owner, const char *path, int64_t id,
                            const char *sha);

/* How a put's caller follows the commit order (a store that commits
 * writes in the order they are queued, like SQLite's group commit): once
 * the write has its place in that order the store calls queued(arg), and
 * the caller may let its next write of the same owner queue behind it. A
 * store that does not call it has committed before put returns. */
struct sto_put_hook {
    void (*queued)(void *arg);
    void *arg;
};

struct sto_store_ops {
    const char *name;
    /* open (creating) the store; err says what is wrong */
    int (*open)(struct sto_store **out, const struct sto_store_cfg *c, char *err, size_t errlen);
    /* No thread may be inside the store any more. */
    void (*close)(struct sto_store *st);

    /* ---- files and versions ---- */
    /* AIOS_ENOTFOUND when owner/path has no versions */
    int (*file)(struct sto_store *st, const char *owner, const char *path,
                struct sto_file_info *fi);
    /* Commit a new version of owner/path with content data (sha = its
     * digest) in one transaction: quota check, blob (deduplicated), version
     * row, prune beyond max_versions, file marked dirty, search index (the
     * first n_index bytes, 0 = none), usage. A quota refusal is
     * AIOS_ETOOBIG with *http 507. *seq = the new version. With dry, only
     * the quota is checked (nothing is kept): 0 when the write would fit.
     * hook (may be NULL; see struct sto_put_hook) is the caller's view of
     * the commit order; a store may ignore it. */
    int (*put)(struct sto_store *st, const char *owner, const char *path, const char *data,
               size_t n, const char *sha, const char *kind, size_t n_index, bool dry,
               int64_t *seq, int *http, char *err, size_t errlen,
               const struct sto_put_hook *hook);
    /* the rename happened: the file on disk is the version the row names */
    int (*clean)(struct sto_store *st, int64_t file_id, const char *sha);
    int (*each_dirty)(struct sto_store *st, sto_dirty_fn fn, void *ud);
    /* a version's content; *data malloc'd */
    int (*blob)(struct sto_store *st, const char *sha, char **data, size_t *n);
    /* [{"version","sha256","size","time","timestamp","t_us","kind"}], newest first */
    int (*history)(struct sto_store *st, int64_t file_id, json_t **out);
    /* sha of the version n back from the newest (n >= 1) or, when t_us > 0,
     * the newest version at or before t_us. AIOS_ENOTFOUND with a message. */
    int (*pick)(struct sto_store *st, int64_t file_id, int n, int64_t t_us, char *sha,
                int64_t *seq, char *err, size_t errlen);
    /* Forget owner/path (prefix false) or every file below the directory
     * path (prefix true): versions, index, usage. *n_files = how many. */
    int (*forget)(struct sto_store *st, const char *owner, const char *path, bool prefix,
                  int *n_files);
    int (*usage)(struct sto_store *st, const char *owner, int64_t *bytes, int64_t *files);

    /* ---- search ---- */
    /* the best k of owner's files for t, best first: [{"file_path",
     * "file_name","size","last_modified","score","snippet",
     * "document_summary","metadata"}]; with_id adds "_id" (the file id) */
    int (*search)(struct sto_store *st, const char *owner, const struct sto_terms *t, int k,
                  bool with_id, json_t **out, char *err, size_t errlen);
    /* bm25[i] = the score of file ids[i] for t (0 when it does not match) */
    int (*score_of)(struct sto_store *st, const struct sto_terms *t, const int64_t *ids,
                    size_t n, double *bm25);
    /* one file as a search result (the shape search gives); with t, its
     * score and snippet for t, else score 0 and its first words */
    int (*search_row)(struct sto_store *st, const char *owner, int64_t file_id,
                      const struct sto_terms *t, json_t **out);

    /* ---- embedding vectors of indexed contents (hybrid search) ---- */
    /* record the model; drop every vector when it differs (*reset true) */
    int (*vec_model)(struct sto_store *st, const char *fingerprint, bool *reset);
    /* v = the vector of text[0..n), the start of file_id's indexed text;
     * kept only if the file's indexed text still starts with it */
    int (*vec_set)(struct sto_store *st, int64_t file_id, const char *owner, const float *v,
                   int dim, const char *text, size_t n);
    /* up to limit indexed files of owner without a vector: [[id, text]] */
    int (*vec_missing)(struct sto_store *st, const char *owner, int limit, size_t max_bytes,
                       json_t **out);
    /* the cosine of q with each of owner's vectors, any order */
    int (*vec_scan)(struct sto_store *st, const char *owner, const float *q, int dim,
                    struct emb_hit **out, size_t *n_out);

    /* ---- several kernels (NULL where the store is one kernel's) ----
     * Hold owner's lock across kernels until unlock_owner(*held): the
     * manager takes it inside its own stripe lock around every mutation
     * of owner's tree. */
    int (*lock_owner)(struct sto_store *st, const char *owner, void **held);
    void (*unlock_owner)(struct sto_store *st, void *held);

    /* ---- share grants (see storage.h) ---- */
    int (*grant)(struct sto_store *st, const char *owner, const char *path, const char *grantee,
                 enum sto_mode mode, int64_t t_expires_us, char *err, size_t errlen);
    int (*revoke)(struct sto_store *st, const char *owner, const char *path,
                  const char *grantee, char *err, size_t errlen);
    int (*check)(struct sto_store *st, const char *owner, const char *path, const char *agent,
                 enum sto_mode mode);
    int (*grants)(struct sto_store *st, const char *agent, json_t **out);

    /* ---- read-only share links (see storage.h); hash: the token's SHA-256, hex ---- */
    int (*link_add)(struct sto_store *st, const char *owner, const char *path, const char *hash,
                    int64_t t_expires_us, char *err, size_t errlen);
    /* an unexpired link: 0 and its owner and path, else AIOS_ENOTFOUND */
    int (*link_find)(struct sto_store *st, const char *hash, char *owner, size_t ownerlen,
                     char *path, size_t pathlen);
    /* owner's links with this id (the hash's first 16 hex digits), or (id
     * NULL) every link of path; *n_revoked how many */
    int (*link_revoke)(struct sto_store *st, const char *owner, const char *path, const char *id,
                       int *n_revoked, char *err, size_t errlen);
    /* owner's unexpired links: [{link_id, path, created, expires}] */
    int (*links)(struct sto_store *st, const char *owner, json_t **out);
};

/* store.c: SQLite, in root_dir/.lsfs/lsfs.db */
extern const struct sto_store_ops sto_sqlite_store;
/* store_pg.c: PostgreSQL at cfg->url */
extern const struct sto_store_ops sto_pg_store;

#endif
