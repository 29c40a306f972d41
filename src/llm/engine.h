/* Control and statistics of the embedded llama.cpp engine (llama.c) beyond
 * the generic llm_core_ops: what the scheduler uses to switch contexts. */
#ifndef AIOS_LLM_ENGINE_H
#define AIOS_LLM_ENGINE_H

#include "context/kvsnap.h"
#include "llm/core.h"

#include <stdbool.h>
#include <stdint.h>

struct llm_engine_stats {
    /* configuration */
    int n_parallel, kv_size, n_ctx, n_batch, prefill_chunk;
    bool retain;
    /* now */
    int n_running;   /* sequences holding a KV slot */
    int n_swapped;   /* preempted, KV state in the snapshot store */
    int n_retained;  /* finished conversations kept in the KV cache */
    int n_kv_cells;  /* cells those hold (running and paused calls' tokens so far, retained
                        conversations' tokens; a shared prefix counts once per holder) */
    /* totals */
    uint64_t n_steps, n_calls;   /* n_steps is published as each step begins, the rest after it */
    uint64_t n_split_steps;      /* steps decoded in more than one llama_decode call (step()) */
    uint64_t n_rows_tiled;       /* prompt tokens computed in whole 64-row tiles (not batch
                                    invariant: other rounding, faster) */
    uint64_t n_tokens_prefilled; /* prompt tokens computed */
    uint64_t n_tokens_reused;    /* prompt tokens taken from the cache */
    uint64_t n_tokens_generated;
    uint64_t n_preemptions, n_resumes;
    uint64_t n_retained_hits, n_shared_hits, n_evictions;
    uint64_t n_aborted_steps; /* steps stopped for an urgent call (abort_cb in llama.c) */
    uint64_t n_padded_steps;  /* lone batch-invariant rows padded (step() in llama.c) */
    /* this model's one-row calls multiply matrices bit for bit as calls of
     * more rows do (lone_row_check in llama.c): a lone batch-invariant row
     * is then padded only where attention would split its cells */
    bool lone_row_exact;
    /* retired by POST /core/refresh, drained, and its KV cache freed */
    bool released;
    struct ctx_store_stats snaps;
};

/* True when c is an embedded llama.cpp engine. */
bool llm_engine_is_local(const struct llm_core *c);

/* Ask the engine to switch the running call syscall_id out at its next
 * step: its KV state is saved (RAM, or disk past the budget), its cells
 * freed, and it waits at least hold_steps engine steps before it resumes
 * (restored, not recomputed) ahead of new admissions. Any thread.
 * 0 (queued), AIOS_EINVAL when c is not a local engine. A call that is
 * not running there by then is left alone. */
int llm_engine_preempt(struct llm_core *c, uint64_t syscall_id, int hold_steps);

/* Any thread. AIOS_EINVAL when c is not a local engine. */
int llm_engine_get_stats(struct llm_core *c, struct llm_engine_stats *out);

#endif
