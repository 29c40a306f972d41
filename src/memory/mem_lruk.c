/* LRU-K page replacement (O'Neil, O'Neil and Weikum, SIGMOD 1993), K = 2,
 * used to pick which notes leave an agent's in-RAM working set.
 *
 * The victim is the node with the largest backward K-distance: now minus the
 * time of its K-th most recent access. A node accessed fewer than K times has
 * an infinite distance and goes first; among those, the one whose first
 * access is oldest goes first (for K = 2 that is simply the least recently
 * used of the once-touched). So one scan over many notes (a retrieval that
 * touches each once) cannot push out notes that are used repeatedly, which
 * plain LRU would do.
 *
 * Data structure: an indexed binary min-heap ordered by (has K accesses,
 * K-th most recent access time). Each node knows its heap position, so an
 * access (its key only grows) is a sift-down and removal is O(log n). Time
 * is a logical clock ticking once per access, so ties cannot happen.
 *
 * History is not kept for nodes that leave the heap: a note faulted back in
 * starts again with one access. (The paper's "retained information period"
 * is left out; notes are small and faults are cheap.)
 *
 * Threads: none of its own; the owner serialises calls (mem.c holds the
 * agent's lock). */
#include "memory/mem_lruk.h"

#include "util/err.h"

#include <stdbool.h>
#include <stdlib.h>

void mem_lruk_init(struct mem_lruk *r)
{
    r->heap = NULL;
    r->n = r->cap = 0;
    r->clock = 0;
}

void mem_lruk_free(struct mem_lruk *r)
{
    free(r->heap);
    mem_lruk_init(r);
}

void mem_lruk_node_init(struct mem_lruk_node *n)
{
    n->n_hist = 0;
    n->pos = SIZE_MAX;
    for (int i = 0; i < MEM_LRUK_K; i++) n->hist[i] = 0;
}

/* true when a should be evicted before b */
static bool before(const struct mem_lruk_node *a, const struct mem_lruk_node *b)
{
    bool fa = a->n_hist >= MEM_LRUK_K, fb = b->n_hist >= MEM_LRUK_K;
    if (fa != fb) return !fa; /* infinite distance first */
    return a->hist[0] < b->hist[0];
}

static void place(struct mem_lruk *r, size_t i, struct mem_lruk_node *n)
{
    r->heap[i] = n;
    n->pos = i;
}

static void sift_up(struct mem_lruk *r, size_t i)
{
    struct mem_lruk_node *n = r->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(n, r->heap[p])) break;
        place(r, i, r->heap[p]);
        i = p;
    }
    place(r, i, n);
}

static void sift_down(struct mem_lruk *r, size_t i)
{
    struct mem_lruk_node *n = r->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, m = l;
        if (l >= r->n) break;
        if (l + 1 < r->n && before(r->heap[l + 1], r->heap[l])) m = l + 1;
        if (!before(r->heap[m], n)) break;
        place(r, i, r->heap[m]);
        i = m;
    }
    place(r, i, n);
}

int mem_lruk_access(struct mem_lruk *r, struct mem_lruk_node *n)
{
    uint64_t t = ++r->clock;
    if (n->pos == SIZE_MAX) {
        if (r->n == r->cap) {
            size_t cap = r->cap ? r->cap * 2 : 64;
            struct mem_lruk_node **h = realloc(r->heap, cap * sizeof *h);
            if (!h) return AIOS_ENOMEM;
            r->heap = h;
            r->cap = cap;
        }
        n->n_hist = 1;
        n->hist[0] = t;
        for (int i = 1; i < MEM_LRUK_K; i++) n->hist[i] = 0;
        place(r, r->n++, n);
        sift_up(r, n->pos);
        return 0;
    }
    if (n->n_hist < MEM_LRUK_K) {
        n->hist[n->n_hist++] = t;
    } else {
        for (int i = 0; i + 1 < MEM_LRUK_K; i++) n->hist[i] = n->hist[i + 1];
        n->hist[MEM_LRUK_K - 1] = t;
    }
    /* the key only grows (finite now, or a later K-th access) */
    sift_down(r, n->pos);
    return 0;
}

void mem_lruk_remove(struct mem_lruk *r, struct mem_lruk_node *n)
{
    if (n->pos == SIZE_MAX || n->pos >= r->n || r->heap[n->pos] != n) return;
    size_t i = n->pos;
    struct mem_lruk_node *last = r->heap[--r->n];
    n->pos = SIZE_MAX;
    if (i == r->n) return;
    place(r, i, last);
    sift_down(r, i);
    sift_up(r, last->pos);
}

struct mem_lruk_node *mem_lruk_victim(const struct mem_lruk *r)
{
    return r->n ? r->heap[0] : NULL;
}

uint64_t mem_lruk_distance(const struct mem_lruk *r, const struct mem_lruk_node *n)
{
    if (n->n_hist < MEM_LRUK_K) return UINT64_MAX;
    return r->clock - n->hist[0];
}
