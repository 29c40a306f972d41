/* KV snapshots: the context switch of the LLM engine.
 *
 * A snapshot is the byte image llama.cpp gives for one sequence
 * (llama_state_seq_get_data: the positions and K/V rows of every cell that
 * belongs to it). Restoring it into an empty sequence slot gives back
 * exactly the same K/V values, so a preempted generation continues as if
 * it had never stopped; the alternative (the Python reference's) is to keep
 * the text and prefill it all again.
 *
 * Memory: snapshots live in RAM until their total passes ram_budget; a
 * snapshot that does not fit is written to a file under spill_dir instead
 * and read back (then deleted) when restored or freed.
 *
 * Threads: a store belongs to one engine thread, which alone saves,
 * restores and frees. Only the statistics are shared (mutex `mu`, a leaf
 * lock) so /status can read them from an HTTP thread.
 *
 * Ownership: ctx_snap_save() hands the caller a snapshot; it stays valid
 * across restores until ctx_snap_free(). */
#include "context/kvsnap.h"

#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <llama.h>

#include <pthread.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct ctx_snap {
    uint8_t *data; /* NULL when spilled */
    size_t len;
    char *path;    /* spill file, or NULL */
};

struct ctx_store {
    size_t ram_budget;
    char *spill_dir;
    bool spill_dir_made;
    uint64_t n_files; /* for unique file names */
    pthread_mutex_t mu;
    struct ctx_store_stats st;
};

int ctx_store_create(struct ctx_store **out, size_t ram_budget, const char *spill_dir)
{
    *out = NULL;
    struct ctx_store *s = calloc(1, sizeof *s);
    if (!s) return AIOS_ENOMEM;
    s->ram_budget = ram_budget;
    s->st.ram_budget = ram_budget;
    if (spill_dir && !(s->spill_dir = strdup(spill_dir))) {
        free(s);
        return AIOS_ENOMEM;
    }
    pthread_mutex_init(&s->mu, NULL);
    *out = s;
    return 0;
}

void ctx_store_destroy(struct ctx_store *s)
{
    if (!s) return;
    pthread_mutex_destroy(&s->mu);
    free(s->spill_dir);
    free(s);
}

static int spill(struct ctx_store *s, struct ctx_snap *sn)
{
    if (!s->spill_dir_made) {
        if (util_mkdirs(s->spill_dir)) {
            LOG_ERROR("context", "cannot create the KV spill directory %s", s->spill_dir);
            return AIOS_EIO;
        }
        s->spill_dir_made = true;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/kv-%d-%llu.snap", s->spill_dir, (int)getpid(),
             (unsigned long long)++s->n_files);
    /* 0600: a spill holds an agent's context */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        if (fd >= 0) close(fd);
        return AIOS_EIO;
    }
    size_t w = fwrite(sn->data, 1, sn->len, f);
    if (fclose(f) != 0 || w != sn->len) {
        unlink(path);
        return AIOS_EIO;
    }
    sn->path = strdup(path);
    if (!sn->path) {
        unlink(path);
        return AIOS_ENOMEM;
    }
    free(sn->data);
    sn->data = NULL;
    return 0;
}

int ctx_snap_save(struct ctx_store *s, struct llama_context *lctx, int seq_id,
                  struct ctx_snap **out)
{
    *out = NULL;
    struct ctx_snap *sn = calloc(1, sizeof *sn);
    if (!sn) return AIOS_ENOMEM;
    size_t cap = llama_state_seq_get_size(lctx, seq_id);
    sn->data = malloc(cap ? cap : 1);
    if (!sn->data) {
        free(sn);
        return AIOS_ENOMEM;
    }
    sn->len = llama_state_seq_get_data(lctx, sn->data, cap, seq_id);
    if (sn->len == 0) {
        free(sn->data);
        free(sn);
        return AIOS_EENGINE;
    }
    pthread_mutex_lock(&s->mu);
    bool over = s->spill_dir && s->st.bytes_ram + sn->len > s->ram_budget;
    pthread_mutex_unlock(&s->mu);
    if (over) {
        int rc = spill(s, sn);
        if (rc) {
            /* a snapshot that cannot be spilled stays in RAM rather than
             * being lost; the budget is a target, not a hard cap */
            LOG_WARN("context", "cannot spill a %zu-byte KV snapshot to %s (%s); keeping it in RAM",
                     sn->len, s->spill_dir, aios_strerror(rc));
        }
    }
    pthread_mutex_lock(&s->mu);
    s->st.n_saved++;
    s->st.n_snaps++;
    if (sn->path) {
        s->st.n_spilled++;
        s->st.bytes_disk += sn->len;
    } else {
        s->st.bytes_ram += sn->len;
    }
    pthread_mutex_unlock(&s->mu);
    *out = sn;
    return 0;
}

int ctx_snap_restore(struct ctx_store *s, struct llama_context *lctx, struct ctx_snap *sn,
                     int seq_id)
{
    uint8_t *buf = sn->data;
    if (!buf) {
        buf = malloc(sn->len);
        if (!buf) return AIOS_ENOMEM;
        FILE *f = fopen(sn->path, "rb");
        size_t r = f ? fread(buf, 1, sn->len, f) : 0;
        if (f) fclose(f);
        if (r != sn->len) {
            free(buf);
            return AIOS_EIO;
        }
    }
    size_t n = llama_state_seq_set_data(lctx, buf, sn->len, seq_id);
    if (buf != sn->data) free(buf);
    if (n == 0) {
        /* no room in the cache now; make sure nothing half-restored stays */
        llama_memory_seq_rm(llama_get_memory(lctx), seq_id, -1, -1);
        return AIOS_EBUSY;
    }
    pthread_mutex_lock(&s->mu);
    s->st.n_restored++;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

void ctx_snap_free(struct ctx_store *s, struct ctx_snap *sn)
{
    if (!sn) return;
    pthread_mutex_lock(&s->mu);
    s->st.n_snaps--;
    if (sn->path) s->st.bytes_disk -= sn->len;
    else s->st.bytes_ram -= sn->len;
    pthread_mutex_unlock(&s->mu);
    if (sn->path) {
        unlink(sn->path);
        free(sn->path);
    }
    free(sn->data);
    free(sn);
}

size_t ctx_snap_bytes(const struct ctx_snap *sn) { return sn ? sn->len : 0; }
bool ctx_snap_spilled(const struct ctx_snap *sn) { return sn && sn->path; }

void ctx_store_get_stats(struct ctx_store *s, struct ctx_store_stats *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->st;
    pthread_mutex_unlock(&s->mu);
}

int ctx_prefix_len(const int32_t *a, int na, const int32_t *b, int nb)
{
    int n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}
