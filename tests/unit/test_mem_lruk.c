/* Unit tests for src/memory/mem_lruk.c: LRU-K (K = 2) victim order —
 * once-touched notes go before twice-touched ones, oldest first; among
 * twice-touched the oldest second-to-last access goes first; a scan of
 * once-touched notes cannot evict a hot one; removal keeps the heap right;
 * and a randomised run agrees with a brute-force LRU-K at every step. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>

#include "memory/mem_lruk.h"

static void test_once_before_twice(void **state)
{
    (void)state;
    struct mem_lruk r;
    mem_lruk_init(&r);
    struct mem_lruk_node a, b, c;
    mem_lruk_node_init(&a);
    mem_lruk_node_init(&b);
    mem_lruk_node_init(&c);
    assert_null(mem_lruk_victim(&r));
    assert_int_equal(mem_lruk_access(&r, &a), 0);
    assert_int_equal(mem_lruk_access(&r, &b), 0);
    assert_int_equal(mem_lruk_access(&r, &c), 0);
    assert_ptr_equal(mem_lruk_victim(&r), &a); /* all once: oldest first */
    assert_int_equal(mem_lruk_access(&r, &a), 0);
    assert_ptr_equal(mem_lruk_victim(&r), &b); /* a has K accesses now */
    assert_true(mem_lruk_distance(&r, &b) == UINT64_MAX);
    assert_true(mem_lruk_distance(&r, &a) == 3); /* clock 4, a's 2nd-last access at 1 */
    mem_lruk_remove(&r, &b);
    assert_ptr_equal(mem_lruk_victim(&r), &c);
    mem_lruk_remove(&r, &c);
    assert_ptr_equal(mem_lruk_victim(&r), &a);
    mem_lruk_remove(&r, &a);
    mem_lruk_remove(&r, &a); /* twice is harmless */
    assert_null(mem_lruk_victim(&r));
    mem_lruk_free(&r);
}

static void test_kth_access_orders_hot_nodes(void **state)
{
    (void)state;
    struct mem_lruk r;
    mem_lruk_init(&r);
    struct mem_lruk_node a, b;
    mem_lruk_node_init(&a);
    mem_lruk_node_init(&b);
    /* a: t1, t2 ; b: t3, t4 ; a: t5  -> a's hist {2,5}, b's {3,4} */
    mem_lruk_access(&r, &a);
    mem_lruk_access(&r, &a);
    mem_lruk_access(&r, &b);
    mem_lruk_access(&r, &b);
    mem_lruk_access(&r, &a);
    /* plain LRU would evict b (least recent); LRU-2 evicts a: its 2nd most
     * recent access (t2) is older than b's (t3) */
    assert_ptr_equal(mem_lruk_victim(&r), &a);
    mem_lruk_access(&r, &a); /* a: {5,6} */
    assert_ptr_equal(mem_lruk_victim(&r), &b);
    mem_lruk_free(&r);
}

static void test_scan_resistance(void **state)
{
    (void)state;
    struct mem_lruk r;
    mem_lruk_init(&r);
    struct mem_lruk_node hot, scan[100];
    mem_lruk_node_init(&hot);
    mem_lruk_access(&r, &hot);
    mem_lruk_access(&r, &hot);
    for (int i = 0; i < 100; i++) {
        mem_lruk_node_init(&scan[i]);
        mem_lruk_access(&r, &scan[i]);
    }
    /* evicting all 100 scanned nodes first, in scan order, before hot */
    for (int i = 0; i < 100; i++) {
        assert_ptr_equal(mem_lruk_victim(&r), &scan[i]);
        mem_lruk_remove(&r, &scan[i]);
    }
    assert_ptr_equal(mem_lruk_victim(&r), &hot);
    mem_lruk_free(&r);
}

/* brute force: the node with the largest backward 2-distance, ties (all
 * infinite) broken by the oldest access */
static struct mem_lruk_node *brute(struct mem_lruk_node *n, int count)
{
    struct mem_lruk_node *best = NULL;
    for (int i = 0; i < count; i++) {
        if (n[i].pos == SIZE_MAX) continue;
        if (!best) {
            best = &n[i];
            continue;
        }
        int fi = n[i].n_hist >= MEM_LRUK_K, fb = best->n_hist >= MEM_LRUK_K;
        if (fi != fb) {
            if (!fi) best = &n[i];
        } else if (n[i].hist[0] < best->hist[0]) {
            best = &n[i];
        }
    }
    return best;
}

static void test_random_against_brute_force(void **state)
{
    (void)state;
    enum { N = 300 };
    struct mem_lruk r;
    mem_lruk_init(&r);
    struct mem_lruk_node *n = calloc(N, sizeof *n);
    for (int i = 0; i < N; i++) mem_lruk_node_init(&n[i]);
    srand(7);
    for (int step = 0; step < 20000; step++) {
        int i = rand() % N, what = rand() % 10;
        if (what < 7) {
            assert_int_equal(mem_lruk_access(&r, &n[i]), 0);
        } else if (what < 9) {
            mem_lruk_remove(&r, &n[i]);
        } else {
            struct mem_lruk_node *v = mem_lruk_victim(&r);
            if (v) mem_lruk_remove(&r, v);
        }
        assert_ptr_equal(mem_lruk_victim(&r), brute(n, N));
    }
    mem_lruk_free(&r);
    free(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_once_before_twice),
        cmocka_unit_test(test_kth_access_orders_hot_nodes),
        cmocka_unit_test(test_scan_resistance),
        cmocka_unit_test(test_random_against_brute_force),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
