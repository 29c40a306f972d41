/* The storage manager (LSFS): per-agent sandboxed files with versions,
 * full-text search and sharing, served as the AIOS `storage` query type.
 * See storage.c (operations), req.c (parsing requests), path.c (path
 * rules), sto_store.h (the metadata store) and store.c (SQLite). */
#ifndef AIOS_STORAGE_STORAGE_H
#define AIOS_STORAGE_STORAGE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct aios_config;
struct sto;
struct emb;
struct sto_store_ops;

/* Limits on names and paths (bytes). */
#define STO_NAME_MAX 255   /* one path component */
#define STO_PATH_MAX 1024  /* a whole relative path */
#define STO_DEPTH_MAX 64   /* components in a path */
#define STO_AGENT_MAX 128  /* agent name */

struct sto_config {
    char *root_dir;          /* absolute or relative to the cwd; owned */
    int max_versions;        /* versions kept per file (>= 1); default 20 */
    int64_t quota_bytes;     /* per agent, bytes of every kept version (each distinct content
                              * once) and of the indexed text; 0 = unlimited */
    int64_t quota_files;     /* per agent, number of files; 0 = unlimited */
    int64_t max_file_bytes;  /* one file; default 16 MiB */
    int n_threads;           /* executor threads; default STO_DEFAULT_THREADS */
    /* a write that would leave less free space than this on the disk of
     * the storage root is refused (507), so the rest of the kernel (memory,
     * audit, other agents' small writes) keeps room; default 64 MiB */
    int64_t reserve_bytes;
    struct emb *emb;         /* embedding model for hybrid search, or NULL (borrowed) */
    const struct sto_store_ops *store; /* the metadata store (sto_store.h); NULL: SQLite */
    const char *store_url;   /* a PostgreSQL URL (borrowed): the metadata goes there
                              * (store_pg.c) unless store is set; NULL: SQLite */
};

#define STO_DEFAULT_MAX_VERSIONS 20
#define STO_DEFAULT_QUOTA_BYTES ((int64_t)1 << 30)
#define STO_DEFAULT_QUOTA_FILES 100000
#define STO_DEFAULT_MAX_FILE_BYTES ((int64_t)16 << 20)
#define STO_DEFAULT_THREADS 16
#define STO_DEFAULT_RESERVE_BYTES ((int64_t)64 << 20)

/* Read storage.* from the kernel config (root_dir resolved under data_dir)
 * and validate it. 0 or AIOS_ECONFIG with "storage.key: what is wrong". */
int sto_config_from(const struct aios_config *cfg, struct sto_config *out, char *err, size_t errlen);
void sto_config_free(struct sto_config *c);

/* Open (creating) the store under c->root_dir and repair what a crash left:
 * files whose newest version committed but whose rename did not happen are
 * rewritten from their blob. c is copied. */
int sto_open(struct sto **out, const struct sto_config *c, char *err, size_t errlen);
/* Close the store. No thread may be inside sto_* any more. */
void sto_close(struct sto *s);
/* executor threads the manager wants (storage.n_threads) */
int sto_n_threads(const struct sto *s);

/* ---- typed requests ----
 * Every storage call is one operation with its own params struct. The API
 * edge turns the AIOS JSON ({operation_type, params}) into a struct sto_req
 * once with sto_req_parse(); the storage executor runs it with sto_do();
 * code inside the kernel calls sto_write(), sto_read(), ... directly. */
enum sto_op {
    STO_OP_MOUNT,
    STO_OP_CREATE_FILE,
    STO_OP_CREATE_DIR,
    STO_OP_WRITE,
    STO_OP_READ,
    STO_OP_LIST,
    STO_OP_DELETE_FILE,
    STO_OP_DELETE_DIR,
    STO_OP_ROLLBACK,
    STO_OP_HISTORY,
    STO_OP_RETRIEVE,
    STO_OP_SHARE,
    STO_OP_UNSHARE,
    STO_OP_SHARES,
    STO_OP_USAGE,
    STO_OP__COUNT
};
/* the canonical operation_type ("write", "delete_dir", ...) */
const char *sto_op_name(enum sto_op op);

enum sto_mode { STO_MODE_READ = 1, STO_MODE_RW = 3 };

/* A path in an agent's tree. path is normalised (sto_path_norm; "" = the
 * root, for list only); owner NULL or the caller: the caller's own tree,
 * else another agent's, through a share grant or the namespace policy. */
struct sto_at {
    char path[STO_PATH_MAX + 1];
    const char *owner;
};
struct sto_write_args {
    struct sto_at at;
    const char *content; /* len bytes, any bytes */
    size_t len;
};
struct sto_delete_args {
    struct sto_at at;
    bool recursive; /* delete_dir: a directory with files in it too */
};
struct sto_rollback_args {
    struct sto_at at;
    int n;        /* versions back from the newest (>= 1) */
    int64_t t_us; /* > 0: the newest version at or before this wall-clock time instead */
};
struct sto_retrieve_args {
    const char *query_text; /* ranked: any of its words */
    char keywords[4096];    /* a filter: each of these words (space-separated; "" = none) */
    int k;                  /* results, 1..100 */
    const char *owner;      /* NULL: own files; else the files of owner the caller may read */
};
struct sto_share_args {
    char path[STO_PATH_MAX + 1]; /* "" = the whole tree */
    const char *grantee;  /* NULL: a link (one file, read-only, GET /s/TOKEN) */
    enum sto_mode mode;
    int64_t expires_in_s; /* 0 = no expiry (a link: STO_LINK_DEFAULT_S) */
    const char *owner;    /* as given; only the caller's own files can be shared */
};
struct sto_unshare_args {
    char path[STO_PATH_MAX + 1];
    const char *grantee; /* NULL: links (every link of path, or the one link_id names) */
    const char *link_id;
};

/* Share links. `share` with a file and no grantee makes a link: a random
 * token (STO_LINK_TOKEN_LEN hex digits, 256 bits) that reads the file's
 * current content, read-only, until it expires (default 7 days, at most
 * 30) or is revoked (`unshare` with the path, or its link_id). Only the
 * token's SHA-256 is stored; link_id is that hash's first 16 digits. */
#define STO_LINK_TOKEN_LEN 64
#define STO_LINK_DEFAULT_S (7 * 86400)
#define STO_LINK_MAX_S (30 * 86400)
struct sto_link_file {
    char owner[STO_AGENT_MAX + 1];
    char path[STO_PATH_MAX + 1];
    char link_id[17];
    char *data; /* the file's bytes (free with sto_link_file_free) */
    size_t len;
};
/* Resolve token and read its file (any thread). 0, or AIOS_ENOTFOUND (no
 * such link, expired, revoked, or the file is gone: one answer, so nothing
 * leaks), AIOS_ETOOBIG (over max_file_bytes), AIOS_EIO; *http and err. */
int sto_link_read(struct sto *s, const char *token, struct sto_link_file *out, int *http,
                  char *err, size_t errlen);
void sto_link_file_free(struct sto_link_file *f);
struct sto_mount_args {
    const char *root; /* as given (not used: each agent has its own root), or NULL */
};

struct sto_req {
    enum sto_op op;
    char *op_name;  /* operation_type as sent (an alias such as "write_file" too) */
    json_t *params; /* params as sent (owned), shown in approvals and the audit
                     * log; the strings in u point into it */
    union {
        struct sto_at at; /* read, create_file, create_dir, list, history */
        struct sto_write_args write;
        struct sto_delete_args del; /* delete_file, delete_dir */
        struct sto_rollback_args rollback;
        struct sto_retrieve_args retrieve;
        struct sto_share_args share;
        struct sto_unshare_args unshare;
        struct sto_mount_args mount;
    } u;
};

/* Parse one AIOS storage call: op (operation_type or an alias) and params
 * (a JSON object; borrowed, a reference is kept). A pure function: no I/O,
 * no clock, no state. 0 and *out (free with sto_req_free), or AIOS_EINVAL /
 * AIOS_ETOOBIG with *http (400) and a message a person can act on. */
int sto_req_parse(const char *op, json_t *params, struct sto_req **out, int *http, char *err,
                  size_t errlen);
void sto_req_free(void *req); /* a struct sto_req; NULL is fine */
/* the operation changes no file (read, list, history, retrieve, shares,
 * usage): it may run on the storage pool's read lane (SCHED_READ_LANE) */
bool sto_req_reads_only(const struct sto_req *q);
/* A request made inside the kernel, not parsed: a write of len bytes of
 * data (copied) or a delete_file, of path (already normalised, the
 * caller's own tree). params (shown in approvals and the audit) say
 * {file_path, bytes, from}. 0, AIOS_ENOMEM or AIOS_ETOOBIG. */
int sto_req_make(enum sto_op op, const char *path, const void *data, size_t len,
                 const char *from, struct sto_req **out);

/* What an operation answers: 0 and out (the AIOS response object,
 * {"response_class":"storage","response_message",...}, owned by the
 * caller), or a negative AIOS_E*, http (400, 403, 404, 409, 413, 422, 500,
 * 503, 507) and a message a person can act on in err. */
struct sto_reply {
    json_t *out;
    int http;
    char err[1536];
};

/* The operations, for `agent` (1..STO_AGENT_MAX bytes), from any thread
 * (each thread gets its own store connection). */
int sto_mount(struct sto *s, const char *agent, const struct sto_mount_args *a, struct sto_reply *r);
int sto_create_file(struct sto *s, const char *agent, const struct sto_at *a, struct sto_reply *r);
int sto_create_dir(struct sto *s, const char *agent, const struct sto_at *a, struct sto_reply *r);
int sto_write(struct sto *s, const char *agent, const struct sto_write_args *a, struct sto_reply *r);
int sto_read(struct sto *s, const char *agent, const struct sto_at *a, struct sto_reply *r);
int sto_list(struct sto *s, const char *agent, const struct sto_at *a, struct sto_reply *r);
int sto_delete_file(struct sto *s, const char *agent, const struct sto_delete_args *a,
                    struct sto_reply *r);
int sto_delete_dir(struct sto *s, const char *agent, const struct sto_delete_args *a,
                   struct sto_reply *r);
int sto_rollback(struct sto *s, const char *agent, const struct sto_rollback_args *a,
                 struct sto_reply *r);
int sto_history(struct sto *s, const char *agent, const struct sto_at *a, struct sto_reply *r);
int sto_retrieve(struct sto *s, const char *agent, const struct sto_retrieve_args *a,
                 struct sto_reply *r);
int sto_share(struct sto *s, const char *agent, const struct sto_share_args *a, struct sto_reply *r);
int sto_unshare(struct sto *s, const char *agent, const struct sto_unshare_args *a,
                struct sto_reply *r);
int sto_shares(struct sto *s, const char *agent, struct sto_reply *r);
int sto_usage(struct sto *s, const char *agent, struct sto_reply *r);

/* Run a parsed request: one switch over q->op to the functions above. */
int sto_do(struct sto *s, const char *agent, const struct sto_req *q, struct sto_reply *r);

/* sto_req_parse + sto_do in one call (tests, fuzzing): on success 0 and
 * *out; on failure a negative AIOS_E*, *http_status and err. */
int sto_exec(struct sto *s, const char *agent, const char *op, json_t *params, json_t **out,
             int *http_status, char *err, size_t errlen);

/* The storage executor: runs the struct sto_req of a storage syscall (ud is
 * the struct sto) and finishes it with a struct kq_res or an error. */
struct syscall;
void sto_executor(struct syscall *sc, void *ud);

/* 1 when q by agent would lose data for good and so needs the operator's
 * approval: a delete (when `deletes`) of something that exists, or (when
 * `overwrites`) a write over an existing file while storage.max_versions
 * is 1; *what then says it for people. 0 otherwise, also for calls that
 * will fail anyway (missing file, no share). Read-only, any thread. */
int sto_needs_approval(struct sto *s, const char *agent, const struct sto_req *q, bool deletes,
                       bool overwrites, char *what, size_t whatlen);

/* ---- tool views (view.c) ----
 * An external tool sees a copy of the agent's files, never the files
 * themselves; what it changed there comes back as storage calls. */
/* Copy agent's current files into a new directory below
 * root_dir/.lsfs/views (path in dir), owned by uid unless uid is
 * (uid_t)-1. *budget: the bytes the view may hold (the copy plus what the
 * agent's quota and the disk above storage.reserve_bytes allow), -1 for no
 * bound. *manifest: what was copied, {path: sha256} (the caller's). */
int sto_view_make(struct sto *s, const char *agent, uid_t uid, char *dir, size_t dirlen,
                  int64_t *budget, json_t **manifest, char *err, size_t errlen);
/* the disk a view takes now (blocks of everything in it) */
int64_t sto_view_bytes(const char *dir);
/* What the tool changed, against the manifest of the copy: writes (regular
 * files new or different from what was copied, content read, up to
 * storage.max_file_bytes) and deletes (copied files the view lacks); what
 * the agent changed meanwhile through storage is not touched. What cannot become a storage call (links, special files,
 * names the path rules refuse, files too large) is appended to notes as
 * {"path","skipped"} when notes is an array. */
struct sto_view_change {
    enum sto_op op; /* STO_OP_WRITE or STO_OP_DELETE_FILE */
    char path[STO_PATH_MAX + 1];
    char *data; /* write: the content (malloc'd), len bytes */
    size_t len;
};
int sto_view_changes(struct sto *s, const char *dir, json_t *manifest,
                     struct sto_view_change **out, size_t *n, json_t *notes, char *err,
                     size_t errlen);
void sto_view_changes_free(struct sto_view_change *v, size_t n);
/* remove a view (after its changes were sent) */
void sto_view_drop(struct sto *s, const char *dir);

/* ---- share grants, for the access manager ----
 * A grant lets `grantee` use `owner`'s path (a file or a directory and
 * everything below it) read-only ("r") or read-write ("rw") until
 * t_expires_us (wall-clock microseconds; 0 = no expiry). Granting again
 * replaces mode and expiry. path is relative to the owner's root, "" = all. */
int sto_share_grant(struct sto *s, const char *owner, const char *path, const char *grantee,
                    enum sto_mode mode, int64_t t_expires_us, char *err, size_t errlen);
/* 0, or AIOS_ENOTFOUND when there was no such grant */
int sto_share_revoke(struct sto *s, const char *owner, const char *path, const char *grantee,
                     char *err, size_t errlen);
/* May `agent` use owner's path for `mode`? 0 yes; AIOS_ENOTFOUND when no live
 * grant covers it (the caller must then answer 404, leaking nothing);
 * AIOS_EPERM when a read-only grant covers it and mode asks for writing. */
int sto_share_check(struct sto *s, const char *owner, const char *path, const char *agent,
                    enum sto_mode mode);
/* Grants given by and to agent: {"given":[...], "received":[...]}, each
 * {"owner","path","grantee","mode","created","expires"}. */
int sto_share_list(struct sto *s, const char *agent, json_t **out);

/* The access manager's say on another agent's tree: called whenever an
 * operation names owner (!= agent), with share_rc = sto_share_check()'s
 * answer (0, AIOS_ENOTFOUND, AIOS_EPERM). Returns the final answer (e.g. 0
 * when agent's privilege group names owner's storage). Any thread; must not
 * block. path NULL: a probe for the whole tree (not a decision to record).
 * Set once, before operations run. */
typedef int (*sto_ns_policy_fn)(void *ud, const char *agent, const char *owner, const char *path,
                                bool write, int share_rc);
void sto_set_ns_policy(struct sto *s, sto_ns_policy_fn fn, void *ud);

/* ---- path rules (path.c), exposed for tests and other managers ---- */
/* Normalise an agent-supplied relative path of len bytes into out
 * ("a/b/c"; "" is the root when allow_root). Refuses NUL bytes, control
 * characters, absolute paths, "..", over-long components and paths, too
 * many components and reserved names. 0 or AIOS_EINVAL / AIOS_ETOOBIG with
 * a message. */
int sto_path_norm(const char *p, size_t len, bool allow_root, char *out, size_t outlen, char *err,
                  size_t errlen);
/* Directory name for an agent under root_dir: bytes outside [A-Za-z0-9_-.]
 * become %XX and a leading '.' is encoded, so no agent directory can be
 * ".", "..", hidden or contain '/'. AIOS_EINVAL for an empty or over-long
 * name. */
int sto_agent_dirname(const char *agent, char *out, size_t outlen);

#endif
