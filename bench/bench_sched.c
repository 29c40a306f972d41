/* Benchmark of the fair policy's pick (src/sched/sched.c): its lanes
 * against sched_policy_fair_scan, the same order by a scan of the whole
 * queue on every pick, in one process through the same public calls, so
 * the ratio holds on a loaded machine (the absolute numbers do not).
 *
 *   bench_sched [--depths 10,100,1000,10000] [--agents 16] [--reps 3]
 *               [--prio N]
 *
 * For each queue depth D and each policy, alternating, best of reps: a
 * scheduler is filled with D calls of `agents` agents (round robin), then
 * in a steady state one call is submitted and one picked (sched_submit +
 * sched_next: the queue stays D deep), timed in batches of 256; between
 * batches, untimed, each picked call's agent is charged 1 to 100 tokens
 * of service and the call finished, so the least-served agent moves.
 * Then sched_peek alone, D deep (the order's cost without the queue's
 * bookkeeping). --prio N gives the first N agents priority 1 (default
 * 0: one priority class). Prints ns per push+pick and per peek. */
#include "kernel/syscall.h"
#include "sched/sched.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH 256
#define MAX_AGENTS 1024

static char g_agents[MAX_AGENTS][16];
static int g_n_agents = 16;
static uint64_t g_rng = 88172645463325252ull;

static uint32_t rnd(uint32_t n) { return (uint32_t)(util_xorshift64(&g_rng) % n); }

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static struct syscall *mk(int i)
{
    struct syscall *sc = syscall_new(SYSCALL_KIND_MEMORY, g_agents[i % g_n_agents], NULL, NULL, NULL);
    if (!sc) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return sc;
}

static void submit(struct sched *s, struct syscall *sc)
{
    if (sched_submit(s, sc)) {
        fprintf(stderr, "submit failed\n");
        exit(1);
    }
    syscall_unref(sc); /* the queue holds its own */
}

/* ns per push+pick and per peek at depth d under policy p */
static void run(const struct sched_policy *p, int d, int ops, int n_prio, double *ns_op,
                double *ns_peek)
{
    struct sched *s = NULL;
    if (sched_create(&s, p)) exit(1);
    for (int a = 0; a < n_prio && a < g_n_agents; a++) sched_set_agent_priority(s, g_agents[a], 1);
    int next = 0;
    for (int i = 0; i < d; i++) submit(s, mk(next++));
    struct syscall *fresh[BATCH], *picked[BATCH];
    int64_t t_ops = 0;
    int done = 0;
    while (done < ops) {
        for (int i = 0; i < BATCH; i++) fresh[i] = mk(next++);
        int64_t t0 = now_ns();
        for (int i = 0; i < BATCH; i++) {
            if (sched_submit(s, fresh[i])) exit(1);
            picked[i] = sched_next(s, SYSCALL_KIND_MEMORY, NULL, 0);
        }
        t_ops += now_ns() - t0;
        for (int i = 0; i < BATCH; i++) {
            syscall_unref(fresh[i]);
            if (!picked[i]) exit(1);
            sched_charge(s, picked[i], 1 + (int64_t)rnd(100), 0);
            syscall_finish(picked[i], NULL, NULL);
            sched_done(s, picked[i]);
        }
        done += BATCH;
    }
    *ns_op = (double)t_ops / done;
    int n_peek = ops;
    int64_t t0 = now_ns();
    for (int i = 0; i < n_peek; i++) {
        struct syscall *x = sched_peek(s, SYSCALL_KIND_MEMORY, NULL);
        if (!x) exit(1);
        syscall_unref(x);
    }
    *ns_peek = (double)(now_ns() - t0) / n_peek;
    sched_destroy(s);
}

int main(int argc, char **argv)
{
    char depths_s[256] = "10,100,1000,10000";
    int reps = 3, n_prio = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--depths") && i + 1 < argc) {
            snprintf(depths_s, sizeof depths_s, "%s", argv[++i]);
        } else if (!strcmp(argv[i], "--agents") && i + 1 < argc) {
            g_n_agents = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--prio") && i + 1 < argc) {
            n_prio = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: bench_sched [--depths 10,100,1000,10000] [--agents 16] "
                            "[--reps 3] [--prio N]\n");
            return 2;
        }
    }
    if (g_n_agents < 1 || g_n_agents > MAX_AGENTS || reps < 1) {
        fprintf(stderr, "--agents 1..%d, --reps >= 1\n", MAX_AGENTS);
        return 2;
    }
    for (int a = 0; a < g_n_agents; a++) snprintf(g_agents[a], sizeof g_agents[a], "agent%d", a);
    printf("agents %d, priority 1 for %d of them, best of %d, alternating\n", g_n_agents, n_prio,
           reps);
    printf("%8s %14s %14s %7s %14s %14s %7s\n", "depth", "scan ns/op", "lanes ns/op", "ratio",
           "scan ns/peek", "lanes ns/peek", "ratio");
    for (char *tok = strtok(depths_s, ","); tok; tok = strtok(NULL, ",")) {
        int d = atoi(tok);
        if (d < 0) continue;
        /* about the same time per depth for the scan; at least 2048 ops */
        int ops = d > 0 ? 4000000 / d : 100000;
        if (ops < 2048) ops = 2048;
        if (ops > 100000) ops = 100000;
        double best[4] = {0, 0, 0, 0};
        for (int r = 0; r < reps; r++) {
            for (int k = 0; k < 2; k++) {
                double op, pk;
                run(k ? &sched_policy_fair : &sched_policy_fair_scan, d, ops, n_prio, &op, &pk);
                if (!r || op < best[2 * k]) best[2 * k] = op;
                if (!r || pk < best[2 * k + 1]) best[2 * k + 1] = pk;
            }
        }
        printf("%8d %14.0f %14.0f %6.1fx %14.0f %14.0f %6.1fx\n", d, best[0], best[2],
               best[0] / best[2], best[1], best[3], best[1] / best[3]);
        fflush(stdout);
    }
    return 0;
}
