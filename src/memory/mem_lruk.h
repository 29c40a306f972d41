/* LRU-K replacement (K = 2) for the memory working set. See mem_lruk.c. */
#ifndef AIOS_MEMORY_MEM_LRUK_H
#define AIOS_MEMORY_MEM_LRUK_H

#include <stddef.h>
#include <stdint.h>

#define MEM_LRUK_K 2

/* Embedded in whatever the replacer tracks (a cached note). */
struct mem_lruk_node {
    uint64_t hist[MEM_LRUK_K]; /* last K access times, hist[0] the oldest of them */
    int n_hist;                /* 0..K */
    size_t pos;                /* index in the heap; SIZE_MAX when not tracked */
};

struct mem_lruk {
    struct mem_lruk_node **heap; /* min-heap: heap[0] is the next victim */
    size_t n, cap;
    uint64_t clock;              /* logical time, one tick per access */
};

void mem_lruk_init(struct mem_lruk *r);
void mem_lruk_free(struct mem_lruk *r); /* frees the heap, not the nodes */
void mem_lruk_node_init(struct mem_lruk_node *n);
/* Record an access; starts tracking n if it was not. 0 or AIOS_ENOMEM. */
int mem_lruk_access(struct mem_lruk *r, struct mem_lruk_node *n);
/* Stop tracking n (no-op when it is not tracked). */
void mem_lruk_remove(struct mem_lruk *r, struct mem_lruk_node *n);
/* The node LRU-K would evict now (not removed), or NULL when empty. */
struct mem_lruk_node *mem_lruk_victim(const struct mem_lruk *r);
/* backward K-distance from now; UINT64_MAX when fewer than K accesses */
uint64_t mem_lruk_distance(const struct mem_lruk *r, const struct mem_lruk_node *n);

#endif
