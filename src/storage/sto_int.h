/* Internals shared by the storage manager's files (not for other modules). */
#ifndef AIOS_STORAGE_STO_INT_H
#define AIOS_STORAGE_STO_INT_H

#include "storage/storage.h"

#include <pthread.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/types.h>

#define STO_TMP_PREFIX ".~lsfs-"
#define STO_N_STRIPES 64

struct sto_conn;

struct sto {
    struct sto_config cfg;   /* root_dir absolute */
    char *agents_dir;        /* root_dir (agent directories live right under it) */
    char *db_path;           /* root_dir/.lsfs/lsfs.db */
    pthread_key_t key;       /* this thread's struct sto_conn */
    pthread_mutex_t conns_mu; /* guards conns (leaf lock) */
    struct sto_conn *conns;  /* every open connection, for sto_close */
    /* Mutations of one owner's files are serialised by the owner's stripe,
     * so the order of committed versions is the order of renames on disk.
     * A thread holds at most one stripe and no other lock of ours. */
    pthread_mutex_t stripes[STO_N_STRIPES];
    /* the access manager's namespace policy (sto_set_ns_policy), or NULL;
     * set before any operation runs */
    sto_ns_policy_fn ns_policy;
    void *ns_ud;
};

/* ---- path.c: descriptor-relative walking, no symlink ever followed ---- */
enum sto_kind { STO_KIND_NONE, STO_KIND_FILE, STO_KIND_DIR, STO_KIND_LINK, STO_KIND_OTHER };

/* Open the agent's root directory (creating it when create). */
int sto_root_open(struct sto *s, const char *agent, bool create, int *fd, char *err, size_t errlen);
/* Walk norm (from sto_path_norm, not "") from rootfd: *dirfd is its parent
 * directory (caller closes), *leaf its last component (points into norm).
 * Missing directories are made when create. Every component is opened with
 * O_NOFOLLOW relative to the previous one, so a link swapped in at any
 * moment cannot lead outside the root. */
int sto_walk(int rootfd, const char *norm, bool create, int *dirfd, const char **leaf, char *err,
             size_t errlen);
/* Open norm itself as a directory ("" = rootfd dup). */
int sto_open_dir(int rootfd, const char *norm, int *fd, char *err, size_t errlen);
enum sto_kind sto_leaf_kind(int dirfd, const char *leaf, struct stat *st);
/* Write data to a new temp file in dirfd and fsync it; name out (>= 32 bytes). */
int sto_tmp_write(int dirfd, const void *data, size_t n, char *tmpname, char *err, size_t errlen);
/* rename tmp over leaf, then fsync the directory */
int sto_tmp_commit(int dirfd, const char *tmpname, const char *leaf, char *err, size_t errlen);
/* Read a regular file (never a link, fifo or device); at most max bytes,
 * else AIOS_ETOOBIG. *data malloc'd, NUL-terminated. */
int sto_read_leaf(int dirfd, const char *leaf, int64_t max, char **data, size_t *n, char *err,
                  size_t errlen);
/* Remove a directory tree below dirfd/leaf without following links. */
int sto_rmtree(int dirfd, const char *leaf);

/* ---- store.c: the SQLite store (the only code that touches SQLite) ---- */
sqlite3 *sto_db(struct sto *s); /* this thread's connection (opened on first use), or NULL */
int sto_store_init(struct sto *s, char *err, size_t errlen);
void sto_store_close_all(struct sto *s);
int sto_sql_err(sqlite3 *db, const char *what, char *err, size_t errlen);

#endif

/* ---- store.c: records ---- */
struct sto_file_info {
    int64_t id;
    char sha[65];
    int64_t size, t_created_us, t_modified_us, next_seq;
    int n_versions;
    bool dirty;
};
int sto_st_file(struct sto *s, const char *owner, const char *path, struct sto_file_info *fi);
/* Commit a new version of owner/path with content data (sha = its digest)
 * in one transaction: quota check, blob (deduplicated), version row, prune
 * beyond max_versions, file row marked dirty, search index (the first
 * n_index bytes, 0 = none), usage. On a
 * quota refusal AIOS_ETOOBIG with *http 507. *seq = the new version. */
int sto_st_put(struct sto *s, const char *owner, const char *path, const char *data, size_t n,
               const char *sha, const char *kind, size_t n_index, int64_t *seq, int *http,
               char *err, size_t errlen);
/* The rename happened: the file on disk is the version the row names. */
int sto_st_clean(struct sto *s, int64_t file_id, const char *sha);
/* Dirty rows (crash between commit and rename), for repair at start. */
typedef int (*sto_dirty_fn)(struct sto *s, const char *owner, const char *path, int64_t id,
                            const char *sha, void *ud);
int sto_st_each_dirty(struct sto *s, sto_dirty_fn fn, void *ud);
int sto_st_blob(struct sto *s, const char *sha, char **data, size_t *n);
int sto_st_history(struct sto *s, int64_t file_id, json_t **out);
/* sha of the version n back from the newest (n >= 1) or, when t_us > 0,
 * the newest version at or before t_us. AIOS_ENOTFOUND with a message. */
int sto_st_pick(struct sto *s, int64_t file_id, int n, int64_t t_us, char *sha, int64_t *seq,
                char *err, size_t errlen);
/* Forget owner/path (prefix false) or every file below the directory path
 * (prefix true): versions, index, usage. *n_files = how many. */
int sto_st_forget(struct sto *s, const char *owner, const char *path, bool prefix, int *n_files);
/* with_id: each result also has "_id" (the file's row id; internal) */
int sto_st_search(struct sto *s, const char *owner, const char *match, int k, bool with_id,
                  json_t **out, char *err, size_t errlen);
int sto_st_usage(struct sto *s, const char *owner, int64_t *bytes, int64_t *files);
/* ---- embedding vectors of indexed contents (hybrid search) ---- */
/* record the model; drop every vector when it differs (*reset true) */
int sto_st_vec_model(struct sto *s, const char *fingerprint, bool *reset);
/* v = the vector of text[0..n), the start of file_id's indexed text; kept
 * only if the file's current indexed text still starts with it */
int sto_st_vec_set(struct sto *s, int64_t file_id, const char *owner, const float *v, int dim,
                   const char *text, size_t n);
/* up to limit indexed files of owner without a vector: [[id, first max_bytes of text]] */
int sto_st_vec_missing(struct sto *s, const char *owner, int limit, size_t max_bytes, json_t **out);
/* the cosine of q with each of owner's vectors: {file id, cosine}, any order */
struct emb_hit; /* llm/embed.h: {file id, cosine} */
int sto_st_vec_scan(struct sto *s, const char *owner, const float *q, int dim,
                    struct emb_hit **out, size_t *n_out);
/* bm25[i] = the BM25 of file ids[i] for match (0 when it does not match),
 * in one statement */
int sto_st_bm25_of(struct sto *s, const char *match, const int64_t *ids, size_t n, double *bm25);
/* one file as a search result (the shape sto_st_search gives); with match,
 * its score is its BM25 and its snippet FTS5's (one statement; call it
 * for a few rows only), else score 0 and the first words as snippet */
int sto_st_search_row(struct sto *s, const char *owner, int64_t file_id, const char *match,
                      json_t **out);
