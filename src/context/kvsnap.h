/* The context manager's snapshot store: a sequence's KV state taken out of
 * a llama_context (llama_state_seq_get_data) and kept in RAM, spilled to
 * disk past a memory budget, until it is put back (set_data) into a
 * sequence slot. See kvsnap.c. */
#ifndef AIOS_CONTEXT_KVSNAP_H
#define AIOS_CONTEXT_KVSNAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct llama_context;
struct ctx_store;
struct ctx_snap;

struct ctx_store_stats {
    uint64_t n_saved, n_restored, n_spilled;
    size_t bytes_ram;  /* held in RAM now */
    size_t bytes_disk; /* held in spill files now */
    size_t ram_budget;
    int n_snaps;       /* live snapshots */
};

/* ram_budget: bytes of snapshots kept in memory; past it they go to files
 * under spill_dir (created on first use). spill_dir may be NULL: then the
 * budget is not enforced (everything stays in RAM). */
int ctx_store_create(struct ctx_store **out, size_t ram_budget, const char *spill_dir);
/* Frees every live snapshot (and removes their files). */
void ctx_store_destroy(struct ctx_store *st);

/* Copy seq_id's KV state out of lctx. Does not touch the sequence itself:
 * the caller frees its cells (llama_memory_seq_rm) when it wants them back.
 * AIOS_ENOMEM / AIOS_EIO / AIOS_EENGINE. */
int ctx_snap_save(struct ctx_store *st, struct llama_context *lctx, int seq_id,
                  struct ctx_snap **out);
/* Put a snapshot back into seq_id (which must be empty). The snapshot stays
 * valid (free it with ctx_snap_free). AIOS_EBUSY when the KV cache has no
 * room for it now (nothing was changed: try again later), AIOS_EIO when a
 * spilled file cannot be read. */
int ctx_snap_restore(struct ctx_store *st, struct llama_context *lctx, struct ctx_snap *snap,
                     int seq_id);
void ctx_snap_free(struct ctx_store *st, struct ctx_snap *snap);
size_t ctx_snap_bytes(const struct ctx_snap *snap);
bool ctx_snap_spilled(const struct ctx_snap *snap);

/* Thread safe (any thread). */
void ctx_store_get_stats(struct ctx_store *st, struct ctx_store_stats *out);

/* Length of the common prefix of two token arrays. */
int ctx_prefix_len(const int32_t *a, int na, const int32_t *b, int nb);

#endif
