/* The storage manager (LSFS): per-agent sandboxed files with versions,
 * full-text search and sharing, served as the AIOS `storage` query type.
 * See storage.c (operations), path.c (path rules) and store.c (SQLite). */
#ifndef AIOS_STORAGE_STORAGE_H
#define AIOS_STORAGE_STORAGE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct aios_config;
struct kernel;
struct sto;

/* Limits on names and paths (bytes). */
#define STO_NAME_MAX 255   /* one path component */
#define STO_PATH_MAX 1024  /* a whole relative path */
#define STO_DEPTH_MAX 64   /* components in a path */
#define STO_AGENT_MAX 128  /* agent name */

struct sto_config {
    char *root_dir;          /* absolute or relative to the cwd; owned */
    int max_versions;        /* versions kept per file (>= 1); default 20 */
    int64_t quota_bytes;     /* per agent, bytes of current file contents; 0 = unlimited */
    int64_t quota_files;     /* per agent, number of files; 0 = unlimited */
    int64_t max_file_bytes;  /* one file; default 16 MiB */
    int n_threads;           /* executor threads; default 2 */
};

#define STO_DEFAULT_MAX_VERSIONS 20
#define STO_DEFAULT_QUOTA_BYTES ((int64_t)1 << 30)
#define STO_DEFAULT_QUOTA_FILES 100000
#define STO_DEFAULT_MAX_FILE_BYTES ((int64_t)16 << 20)
#define STO_DEFAULT_THREADS 2

/* Read storage.* from the kernel config (root_dir resolved under data_dir)
 * and validate it. 0 or AIOS_ECONFIG with "storage.key: what is wrong". */
int sto_config_from(const struct aios_config *cfg, struct sto_config *out, char *err, size_t errlen);
void sto_config_free(struct sto_config *c);

/* Open (creating) the store under c->root_dir and repair what a crash left:
 * files whose newest version committed but whose rename did not happen are
 * rewritten from their blob. c is copied. */
int sto_open(struct sto **out, const struct sto_config *c, char *err, size_t errlen);
/* Close every SQLite connection. No thread may be inside sto_* any more. */
void sto_close(struct sto *s);

/* Run one AIOS storage operation ("write", "read", ...) for `agent`, as the
 * executor does. Callable from any thread (each thread gets its own SQLite
 * connection); the tool manager calls it for file tools with the calling
 * agent's name. On success 0 and *out = the response object
 * ({"response_class":"storage","response_message",...}); on failure a
 * negative AIOS_E*, *http_status (400, 403, 404, 409, 413, 422, 500, 507) and a
 * message a person can act on in err. */
int sto_exec(struct sto *s, const char *agent, const char *op, json_t *params, json_t **out,
             int *http_status, char *err, size_t errlen);

/* 1 when op on params by agent would lose data for good and so needs the
 * operator's approval: a delete (when `deletes`) of something that exists,
 * or (when `overwrites`) a write over an existing file while
 * storage.max_versions is 1; *what then says it for people. 0 otherwise,
 * also for calls that will fail anyway (bad path, missing file, no share).
 * Read-only, callable from any thread. */
int sto_needs_approval(struct sto *s, const char *agent, const char *op, json_t *params,
                       bool deletes, bool overwrites, char *what, size_t whatlen);

/* ---- share grants, for the access manager ----
 * A grant lets `grantee` use `owner`'s path (a file or a directory and
 * everything below it) read-only ("r") or read-write ("rw") until
 * t_expires_us (wall-clock microseconds; 0 = no expiry). Granting again
 * replaces mode and expiry. path is relative to the owner's root, "" = all. */
enum sto_mode { STO_MODE_READ = 1, STO_MODE_RW = 3 };
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

/* Kernel hook: build the manager from the kernel's config and register the
 * storage executor; called from kernel_start after the scheduler exists. */
int sto_kernel_start(struct kernel *k, char *err, size_t errlen);
/* after the worker pools stopped */
void sto_kernel_stop(struct kernel *k);

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
