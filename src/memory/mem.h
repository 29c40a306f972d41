/* The memory manager: per-agent notes in two tiers (a bounded in-RAM
 * working set with LRU-K eviction over a durable store behind a table of
 * functions, SQLite by default), BM25 retrieval, and the AIOS memory
 * operations as typed requests and C functions. See mem.c. */
#ifndef AIOS_MEMORY_MEM_H
#define AIOS_MEMORY_MEM_H

#include "kernel/config.h"
#include "memory/mem_req.h"
#include "memory/mem_store.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kernel;
struct mem_manager;
struct syscall;
struct emb;
struct llm_req;
struct llm_core;
struct sched;

struct mem_opts {
    size_t quota_bytes;     /* working-set bytes per agent (memory.quota_bytes) */
    size_t max_note_bytes;  /* largest note accepted (memory.max_note_bytes) */
    int64_t store_quota_bytes; /* stored notes' bytes per agent (memory.store_quota_bytes, 0 = none) */
    bool full_sync;         /* memory.synchronous: full (default) or normal */
    int agentic_max_tokens; /* tokens the model may spend analysing a note */
    int workers;            /* executor threads (memory.workers) */
    char *db_path;          /* resolved path of the database file (owned) */
    bool auto_extract;      /* memory.auto_extract: chat turns become notes */
    struct emb *emb;        /* embedding model for hybrid retrieval, or NULL (borrowed) */
    bool auto_inject;       /* memory.auto_inject: relevant notes join a chat's prompt */
    int inject_k;           /* memory.auto_inject.k: notes retrieved at most */
    int inject_max_tokens;  /* memory.auto_inject.max_tokens: budget of the injected text */
    bool shared;            /* other kernels write the same store (PostgreSQL): a
                             * resident note is read again from the store on use */
};

#define MEM_DEFAULT_INJECT_K 3
#define MEM_DEFAULT_INJECT_TOKENS 256

#define MEM_DEFAULT_QUOTA ((size_t)4 << 20)
#define MEM_DEFAULT_MAX_NOTE ((size_t)64 << 10)
#define MEM_DEFAULT_STORE_QUOTA ((int64_t)256 << 20)
#define MEM_DEFAULT_AGENTIC_TOKENS 64
#define MEM_DEFAULT_WORKERS 16

/* Read and validate the memory.* keys of the config (defaults for absent
 * ones). 0 or AIOS_ECONFIG with "memory.key: what is wrong" in err. */
int mem_opts_from_config(const struct aios_config *cfg, struct mem_opts *o, char *err,
                         size_t errlen);
void mem_opts_free(struct mem_opts *o);

/* add_agentic_memory's analysis (mem_agentic.c): keywords, tags and a
 * one-sentence context; *source says where they came from: "model",
 * "model+keywords" or "keywords". */
struct mem_analysis {
    json_t *keywords, *tags; /* arrays of strings, owned */
    char *context;           /* owned */
    const char *source;
};

/* What the manager takes when it is opened, instead of the kernel. Every
 * member may be NULL (zero): the defaults are in brackets. ud is passed to
 * each callback. */
struct mem_deps {
    const struct mem_store_ops *store; /* the store [mem_store_sqlite] */
    void *ud;
    /* policy: may `agent` use the memory namespace of `owner` (write: to
     * change it)? 0 yes, AIOS_EPERM read-only, anything else: not open
     * (answered 404). op is the operation's name, for the audit.
     * [only the agent's own namespace is open] */
    int (*ns_check)(void *ud, const char *agent, const char *owner, bool write, const char *op);
    /* share_memory / unshare_memory / memory_shares of owner's namespace
     * (0 or AIOS_E* with a message) [answered "sharing memory needs the
     * access manager"] */
    int (*share)(void *ud, const char *owner, const struct mem_share_params *p, char *err,
                 size_t errlen);
    int (*unshare)(void *ud, const char *owner, const char *grantee);
    int (*shares)(void *ud, const char *owner, json_t **out, char *err, size_t errlen);
    /* add_agentic_memory: ask the model about content for agent
     * [keyword extraction, mem_analysis_keywords()] */
    int (*analyze)(void *ud, const char *agent, const char *content, int max_tokens,
                   struct mem_analysis *out);
};

/* the manager's options (db_path, auto_* switches) */
const struct mem_opts *mem_manager_opts(const struct mem_manager *m);
/* deps may be NULL (all defaults). Copies what it needs from o and deps. */
int mem_manager_open(struct mem_manager **out, const struct mem_opts *o,
                     const struct mem_deps *deps, char *err, size_t errlen);
void mem_manager_close(struct mem_manager *m);
/* the open store and its table (bulk loads of the benchmark) */
struct mem_store *mem_manager_store(struct mem_manager *m);
const struct mem_store_ops *mem_manager_store_ops(const struct mem_manager *m);

/* ---- the operations as C functions ----
 * `ns` is the namespace (the agent whose notes) the caller has already
 * resolved; these functions check no policy. All are thread safe and
 * return 0 or a negative AIOS_E* with a message in err: AIOS_ENOTFOUND
 * (no such note), MEM_EEXISTS (the id is taken), AIOS_ETOOBIG (over
 * memory.max_note_bytes), AIOS_EIO (the store failed). */

/* The analysis of add_agentic_memory for content, asked on behalf of
 * agent (deps.analyze, or keyword extraction). Free with mem_analysis_free. */
int mem_analyze(struct mem_manager *m, const char *agent, const char *content,
                struct mem_analysis *out);
/* A new note from p (an, when not NULL, first: what p sets wins). id_out
 * gets its id; *stored, when stored is not NULL, a copy of the note as
 * stored (mem_note_free). */
int mem_add(struct mem_manager *m, const char *ns, const struct mem_add_params *p,
            const struct mem_analysis *an, char id_out[MEM_ID_MAX + 1], struct mem_note **stored,
            char *err, size_t errlen);
/* a copy of the note (mem_note_free) */
int mem_get(struct mem_manager *m, const char *ns, const char *id, struct mem_note **out,
            char *err, size_t errlen);
int mem_update(struct mem_manager *m, const char *ns, const struct mem_update_params *p,
               char *err, size_t errlen);
int mem_remove(struct mem_manager *m, const char *ns, const char *id, char *err, size_t errlen);
/* The best p->k notes for p->query, best first (BM25, or hybrid with an
 * embedding model: then hits[i].bm25 and .cosine are the parts of the
 * score). count: a retrieval is an access (retrieval_count and
 * last_accessed change; retrieve_memory); false: read-only
 * (retrieve_memory_raw). *hits is the caller's (mem_hits_free). */
int mem_retrieve(struct mem_manager *m, const char *ns, const struct mem_retrieve_params *p,
                 bool count, struct mem_hit **hits, size_t *n_hits, char *err, size_t errlen);
/* the namespace's two tiers (memory_stats) */
struct mem_stats {
    long long n_notes;
    int64_t stored_bytes, store_quota_bytes; /* what the notes take on disk, and the limit */
    size_t n_resident, resident_bytes, quota_bytes;
    uint64_t n_hits, n_faults, n_evictions;
    char **eviction_order; /* resident ids, next victim first (owned) */
    size_t n_order;
};
int mem_stats(struct mem_manager *m, const char *ns, struct mem_stats *out);
void mem_stats_free(struct mem_stats *s);

/* Run one typed request for `agent` (the caller): resolve the namespace
 * (req->owner, through deps.ns_check), run the operation, and build the
 * AIOS response object {"response_class":"memory", "memory_id", "content",
 * "metadata", "search_results", "success", "error"}. The one switch over
 * enum mem_op. Thread safe. On failure a negative AIOS_E*, *http_status
 * (400, 403, 404, 409, 413, 500, 503) and a message in err. */
int mem_manager_exec(struct mem_manager *m, const char *agent, const struct mem_req *req,
                     json_t **resp, int *http_status, char *err, size_t errlen);
/* The same for a caller that must not block (an HTTP thread: sched_run_here):
 * a get_memory of the caller's own note that is resident and whose agent is
 * not busy is answered from RAM; anything else is AIOS_EBUSY at once, with
 * nothing done, and belongs on a pool thread. */
int mem_manager_exec_nowait(struct mem_manager *m, const char *agent, const struct mem_req *req,
                            json_t **resp, int *http_status, char *err, size_t errlen);
/* mem_req_parse() then mem_manager_exec() (tests, the benchmark); a parse
 * error is 400 (500 for no memory) */
int mem_manager_exec_json(struct mem_manager *m, const char *agent, const char *op,
                          json_t *params, json_t **resp, int *http_status, char *err,
                          size_t errlen);

/* ---- kernel glue (mem_kernel.c, mem_inject.c) ---- */

/* Read the config, open the manager (the SQLite store under data_dir, the
 * access manager as its policy, the kernel's first LLM core for
 * add_agentic_memory) and register the executor for SYSCALL_KIND_MEMORY,
 * whose syscalls carry a struct mem_req (mem_req_free).
 * mem_stop() after the pools stopped. */
int mem_start(struct kernel *k, char *err, size_t errlen);
void mem_stop(struct kernel *k);

/* memory.auto_extract (AIOS personalisation): after a chat call through
 * POST /query, or through /v1/chat/completions by an agent named with
 * `user` or X-Aios-Agent, finished, store "User: <last user message>\nAssistant:
 * <answer>" as a note of the calling agent (category and context
 * "conversation"). Queues a memory syscall and returns at once, so the
 * HTTP thread never waits on SQLite; failures are only logged. No-op when
 * the option is off or there is no memory manager. sc is a finished LLM
 * syscall (borrowed). */
void mem_auto_extract(struct kernel *k, struct syscall *sc);

/* memory.auto_inject (AIOS personalisation): before a chat's prompt is
 * made, retrieve up to inject_k notes of `agent` relevant to the last user
 * message (the same ranking as retrieve_memory: BM25, or hybrid with an
 * embedding model; read-only, nothing counted) and add them to the chat
 * as a system message of at most inject_max_tokens (estimated as one
 * token per 3 bytes): appended to the first message when that is a system
 * message, else inserted before everything. req->memory records what was
 * added ({"memory_ids", "n_notes", "est_tokens", "text"}) for the
 * response. Runs on the calling (HTTP) thread. No-op (0) when the option
 * is off, agent is NULL, there is no user message or nothing matches;
 * a failed retrieval is logged and the chat goes on without notes. */
int mem_auto_inject(struct kernel *k, const char *agent, struct llm_req *req);
/* Text of the injected system message for the notes' contents: a header
 * and "- <note>" lines, stopping before the estimate passes max_tokens (a
 * first note alone that does not fit is cut). malloc'd; *n_used = notes in
 * it (0: NULL returned). mem_inject.c; exposed for unit tests. */
char *mem_inject_text(const char *const *notes, size_t n, int max_tokens, size_t *n_used);
/* the estimate: ceil(bytes / 3) */
int mem_inject_est_tokens(size_t bytes);

/* The analysis by the kernel's first LLM core (mem_agentic.c; the
 * kernel's deps.analyze): a real LLM syscall for agent; whatever the
 * model's answer lacks comes from mem_extract_keywords(). */
int mem_agentic_analyze(struct llm_core *core, struct sched *s, const char *agent,
                        const char *content, int max_tokens, struct mem_analysis *out);
/* The analysis without a model: keywords by frequency, the first three as
 * tags, the first sentence as context; source "keywords". */
int mem_analysis_keywords(const char *content, struct mem_analysis *out);
void mem_analysis_free(struct mem_analysis *a);
/* Up to max words of text by frequency (then first appearance), lower-cased,
 * without stop words and words under 3 letters. New array. */
json_t *mem_extract_keywords(const char *text, int max);

#endif
