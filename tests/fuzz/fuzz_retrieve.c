/* Fuzz target: BM25 retrieval of the SQLite memory store
 * (src/memory/mem_store.c): the query text as an agent sends it
 * (mem_fts_query), the pruned scan (the IDF cache, aios_idf, aios_tf's
 * tokenizing of notes and of the query's words, the rounds) and the plain
 * scan. The input is lines: the first is the query, the others are notes,
 * stored for a fresh agent (the store is shared by all runs, so the IDFs
 * and the cache see a growing corpus of other agents' notes). The best k
 * for k = 1..4 must be the first k of the plain answer (k = 1000), the
 * same notes in the same order with the same scores, and no call may
 * fail. Every agent gets an index in RAM (mem_rix.c) from its first note,
 * and the answer from it must be FTS5's, to the bit. */
#include "fuzz.h"

#include "memory/mem_note.h"
#include "memory/mem_store.h"
#include "util/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct mem_store *g_store;
static unsigned long g_run;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char dir[] = "/tmp/aios-fuzz-retrieve-XXXXXX", path[64], err[256];
    if (!mkdtemp(dir)) abort();
    snprintf(path, sizeof path, "%s/memory.db", dir);
    if (mem_store_open(&g_store, path, false, err, sizeof err)) abort();
    mem_store_rix_min(g_store, 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192) return 0;
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    char agent[32], id[32];
    snprintf(agent, sizeof agent, "f%lu", g_run++);
    char *save = NULL, *query = strtok_r(text, "\n", &save);
    int n_notes = 0;
    for (char *line; n_notes < 32 && (line = strtok_r(NULL, "\n", &save)); n_notes++) {
        struct mem_note *n = mem_note_new();
        snprintf(id, sizeof id, "n%d", n_notes);
        n->id = strdup(id);
        free(n->content);
        n->content = strdup(line);
        mem_ts_now(n->timestamp);
        memcpy(n->last_accessed, n->timestamp, sizeof n->timestamp);
        int rc = mem_store_insert(g_store, agent, n);
        mem_note_free(n);
        if (rc && rc != MEM_EEXISTS) abort();
    }
    if (query) {
        static struct mem_hit all[1000], top[4];
        size_t n_all = 0;
        /* FTS5 alone, then the index in RAM (built by the first) */
        static struct mem_hit ram[1000];
        size_t n_ram = 0;
        mem_store_rix_use(g_store, false);
        if (mem_store_search_ids(g_store, agent, query, 1000, all, &n_all)) abort();
        mem_store_rix_use(g_store, true);
        if (mem_store_search_ids(g_store, agent, query, 1000, ram, &n_ram)) abort();
        if (mem_store_search_ids(g_store, agent, query, 1000, ram, &n_ram)) abort();
        if (n_ram != n_all) abort();
        for (size_t i = 0; i < n_all; i++)
            if (ram[i].nid != all[i].nid || ram[i].score != all[i].score) {
                fprintf(stderr, "RAM MISMATCH i %zu query [%s]: %lld %.17g / fts %lld %.17g\n", i,
                        query, (long long)ram[i].nid, ram[i].score, (long long)all[i].nid, all[i].score);
                abort();
            }
        if (n_all > (size_t)n_notes) abort(); /* another agent's note */
        for (int k = 1; k <= 4; k++) {
            size_t n_top = 0;
            if (mem_store_search_ids(g_store, agent, query, k, top, &n_top)) abort();
            if (n_top != (n_all < (size_t)k ? n_all : (size_t)k)) abort();
            for (size_t i = 0; i < n_top; i++)
                if (top[i].nid != all[i].nid || top[i].score != all[i].score) {
                    fprintf(stderr, "MISMATCH agent %s k %d i %zu query [%s] n_all %zu\n", agent, k, i, query, n_all);
                    for (size_t j = 0; j < n_all && j < 8; j++) fprintf(stderr, " all %lld %.17g\n", (long long)all[j].nid, all[j].score);
                    for (size_t j = 0; j < n_top; j++) fprintf(stderr, " top %lld %.17g\n", (long long)top[j].nid, top[j].score);
                    abort();
                }
        }
    }
    free(text);
    return 0;
}
