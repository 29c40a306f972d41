/* The memory manager: per-agent notes in two tiers (a bounded in-RAM
 * working set with LRU-K eviction over the durable SQLite store), BM25
 * retrieval, and the AIOS memory operations. See mem.c. */
#ifndef AIOS_MEMORY_MEM_H
#define AIOS_MEMORY_MEM_H

#include "kernel/config.h"
#include "memory/mem_store.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct kernel;
struct mem_manager;
struct syscall;
struct emb;
struct llm_req;

struct mem_opts {
    size_t quota_bytes;     /* working-set bytes per agent (memory.quota_bytes) */
    size_t max_note_bytes;  /* largest note accepted (memory.max_note_bytes) */
    bool full_sync;         /* memory.synchronous: full (default) or normal */
    int agentic_max_tokens; /* tokens the model may spend analysing a note */
    int workers;            /* executor threads (memory.workers) */
    char *db_path;          /* resolved path of the database file (owned) */
    bool auto_extract;      /* memory.auto_extract: chat turns become notes */
    struct emb *emb;        /* embedding model for hybrid retrieval, or NULL (borrowed) */
    bool auto_inject;       /* memory.auto_inject: relevant notes join a chat's prompt */
    int inject_k;           /* memory.auto_inject.k: notes retrieved at most */
    int inject_max_tokens;  /* memory.auto_inject.max_tokens: budget of the injected text */
};

#define MEM_DEFAULT_INJECT_K 3
#define MEM_DEFAULT_INJECT_TOKENS 256

#define MEM_DEFAULT_QUOTA ((size_t)4 << 20)
#define MEM_DEFAULT_MAX_NOTE ((size_t)64 << 10)
#define MEM_DEFAULT_AGENTIC_TOKENS 64
#define MEM_DEFAULT_WORKERS 2

/* Read and validate the memory.* keys of the config (defaults for absent
 * ones). 0 or AIOS_ECONFIG with "memory.key: what is wrong" in err. */
int mem_opts_from_config(const struct aios_config *cfg, struct mem_opts *o, char *err,
                         size_t errlen);
void mem_opts_free(struct mem_opts *o);

/* k may be NULL (no LLM: add_agentic_memory uses keyword extraction).
 * Copies what it needs from o. */
/* the manager's options (db_path, auto_* switches) */
const struct mem_opts *mem_manager_opts(const struct mem_manager *m);
int mem_manager_open(struct mem_manager **out, const struct mem_opts *o, struct kernel *k,
                     char *err, size_t errlen);
void mem_manager_close(struct mem_manager *m);
struct mem_store *mem_manager_store(struct mem_manager *m);

/* Run one AIOS memory operation for `agent`. Thread safe. On success 0 and
 * *resp is the response object {"response_class":"memory", "memory_id",
 * "content", "metadata", "search_results", "success", "error"}. On failure
 * a negative AIOS_E*, *http_status (400, 404, 409, 413, 500, 503) and a
 * message in err. params is borrowed. */
int mem_manager_exec(struct mem_manager *m, const char *agent, const char *op, json_t *params,
                     json_t **resp, int *http_status, char *err, size_t errlen);

/* Kernel glue: read the config, open the store under data_dir and register
 * the executor for SYSCALL_KIND_MEMORY. mem_stop() after the pools stopped. */
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

/* add_agentic_memory's analysis (mem_agentic.c). Asks the kernel's first
 * LLM core for keywords, tags and a one-sentence context; whatever the
 * model's answer lacks comes from mem_extract_keywords(). *source says
 * which: "model", "model+keywords" or "keywords". */
struct mem_analysis {
    json_t *keywords, *tags; /* arrays of strings, owned */
    char *context;           /* owned */
    const char *source;
};
int mem_agentic_analyze(struct kernel *k, const char *agent, const char *content, int max_tokens,
                        struct mem_analysis *out);
void mem_analysis_free(struct mem_analysis *a);
/* Up to max words of text by frequency (then first appearance), lower-cased,
 * without stop words and words under 3 letters. New array. */
json_t *mem_extract_keywords(const char *text, int max);

#endif
