/* Internals shared by the storage manager's files (not for other modules). */
#ifndef AIOS_STORAGE_STO_INT_H
#define AIOS_STORAGE_STO_INT_H

#include "storage/storage.h"
#include "storage/sto_store.h"

#include <pthread.h>
#include <sys/stat.h>
#include <sys/types.h>

#define STO_TMP_PREFIX ".~lsfs-"
#define STO_N_STRIPES 64

struct sto {
    struct sto_config cfg;   /* root_dir absolute */
    char *agents_dir;        /* root_dir (agent directories live right under it) */
    const struct sto_store_ops *ops; /* the metadata store (sto_store.h) */
    struct sto_store *st;
    /* Mutations of one owner's files are serialised by the owner's stripe
     * (a plain write until its version is queued for its commit; storage.c),
     * so the order of committed versions is the order of renames on disk.
     * A thread holds at most one stripe and no other lock of ours. */
    pthread_mutex_t stripes[STO_N_STRIPES];
    /* Under each stripe: the writes queued for a commit and not yet
     * renamed (storage.c, put), the mutations waiting for them to drain,
     * and the condition both wait on. */
    struct sto_flight *inflight[STO_N_STRIPES];
    int draining[STO_N_STRIPES];
    pthread_cond_t stripe_cv[STO_N_STRIPES];
    /* the access manager's namespace policy (sto_set_ns_policy), or NULL;
     * set before any operation runs */
    sto_ns_policy_fn ns_policy;
    void *ns_ud;
    /* Files written whose version is committed (dirty) but whose data and
     * name may not be on disk yet: the cleaner thread syncs the file
     * system (syncfs) and then clears their dirty marks (storage.c,
     * "Writes"). pend_mu is a leaf lock (a writer takes it under its
     * stripe). */
    pthread_mutex_t pend_mu;
    pthread_cond_t pend_cv;
    struct sto_pend *pend;
    size_t n_pend;
    bool pend_stop, cleaner_started;
    pthread_t cleaner;
    int sync_fd; /* agents_dir, for syncfs */
    struct sto_spares *spares; /* recycled files for writes (tmpfile.c), or NULL */
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
/* ---- tmpfile.c: a write's new content before it takes its file's place ---- */
struct sto_spares; /* recycled files under root/.lsfs/spare */
/* this kernel's pool for the storage root rootfd (a new directory; the
 * pools of kernels that are gone are removed), or NULL: no pool */
struct sto_spares *sto_spares_open(int rootfd);
void sto_spares_close(struct sto_spares *sp);
struct sto_tmp {
    int dfd;       /* the directory holding name: the target's, or the spares' */
    char name[32]; /* "" when there is none (not made, dropped, or now the file) */
    unsigned spare; /* 1 + the spare's number, or 0: a temp file in the target directory */
};
/* Write data to a spare from sp (NULL: none) or a new temp file in dirfd
 * (always when sync, which fsyncs it too). On an error nothing is left. */
int sto_tmp_write(struct sto_spares *sp, int dirfd, const void *data, size_t n, bool sync,
                  struct sto_tmp *t, char *err, size_t errlen);
/* Put t in leaf's place (then fsync the directory when sync); on an error
 * t is dropped. */
int sto_tmp_commit(struct sto_spares *sp, int dirfd, struct sto_tmp *t, const char *leaf,
                   bool sync, char *err, size_t errlen);
/* Give up t (removed, or back to the pool) */
void sto_tmp_drop(struct sto_spares *sp, struct sto_tmp *t);
/* Read a regular file (never a link, fifo or device); at most max bytes,
 * else AIOS_ETOOBIG. *data malloc'd, NUL-terminated. */
int sto_read_leaf(int dirfd, const char *leaf, int64_t max, char **data, size_t *n, char *err,
                  size_t errlen);
/* Remove a directory tree below dirfd/leaf without following links. */
int sto_rmtree(int dirfd, const char *leaf);

/* ---- view.c ---- */
/* remove every tool view (at open: none is in use yet) */
void sto_view_sweep(struct sto *s);

/* ---- the metadata store, through its table (sto_store.h) ---- */
#define sto_st_file(s, ...) ((s)->ops->file((s)->st, __VA_ARGS__))
#define sto_st_put(s, ...) ((s)->ops->put((s)->st, __VA_ARGS__))
#define sto_st_clean(s, ...) ((s)->ops->clean((s)->st, __VA_ARGS__))
#define sto_st_each_dirty(s, ...) ((s)->ops->each_dirty((s)->st, __VA_ARGS__))
#define sto_st_blob(s, ...) ((s)->ops->blob((s)->st, __VA_ARGS__))
#define sto_st_history(s, ...) ((s)->ops->history((s)->st, __VA_ARGS__))
#define sto_st_pick(s, ...) ((s)->ops->pick((s)->st, __VA_ARGS__))
#define sto_st_forget(s, ...) ((s)->ops->forget((s)->st, __VA_ARGS__))
#define sto_st_usage(s, ...) ((s)->ops->usage((s)->st, __VA_ARGS__))
#define sto_st_search(s, ...) ((s)->ops->search((s)->st, __VA_ARGS__))
#define sto_st_score_of(s, ...) ((s)->ops->score_of((s)->st, __VA_ARGS__))
#define sto_st_search_row(s, ...) ((s)->ops->search_row((s)->st, __VA_ARGS__))
#define sto_st_vec_model(s, ...) ((s)->ops->vec_model((s)->st, __VA_ARGS__))
#define sto_st_vec_set(s, ...) ((s)->ops->vec_set((s)->st, __VA_ARGS__))
#define sto_st_vec_missing(s, ...) ((s)->ops->vec_missing((s)->st, __VA_ARGS__))
#define sto_st_vec_scan(s, ...) ((s)->ops->vec_scan((s)->st, __VA_ARGS__))

#endif
