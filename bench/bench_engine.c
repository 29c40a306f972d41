/* Benchmarks of the embedded engine, each measured side by side with a
 * baseline in the same run (ratios; the machine may be shared):
 *
 *   bench_engine decode [MODEL] [--threads T] [--gen G] [--sizes 1,4,8,16,32] [--reps R]
 *                       [--prompt P] [--unseeded] [--set KNOB=VALUE]... [--min-ratio X]
 *     decode throughput of the engine (through the scheduler, as the kernel
 *     runs it, with its default knobs unless --set) at N concurrent
 *     sequences, against llama.cpp's own batched decode of the same model
 *     (one llama_batch of N tokens per step, one sampler chain per
 *     sequence: what llama.cpp's examples/batched does); P-token prompts
 *     (default 16; sequences x P <= 512). The engine's calls are seeded,
 *     so batch invariant under the default knobs, or not (--unseeded:
 *     what agents send unless they ask for a seed). --min-ratio makes
 *     it a regression guard (exit 1 below X; ctest bench/decode_guard).
 *   bench_engine switch [MODEL] [--threads T] [--lens 256,1024,4096]
 *     context switch: KV snapshot + restore of one sequence (context/
 *     kvsnap.c, in RAM and spilled to disk) against prefilling the same
 *     context again.
 *   bench_engine prefix [MODEL] [--threads T] [--seqs 16] [--prefix 1000]
 *     16 sequences with one shared 1000-token prefix, engine with prefix
 *     sharing against the same engine with sharing off: prompt tokens
 *     computed and wall time.
 *   bench_engine ideal [MODEL] [--threads T] --prompt-computed P --calls C --gen G
 *                      [--batch B] [--ctx L] [--own-prompts] [--batch-invariant on|off]
 *     the ideal time of a workload (aios bench agents prints P, C and G):
 *     P prompt tokens at the engine's measured prefill rate, plus C calls
 *     of G generated tokens decoded B at a time at the engine's measured
 *     step time for B sequences of about L context tokens. Nothing in it
 *     waits: no queueing, no HTTP, no recomputation. The B sequences share
 *     all but their last 32 tokens (as agents share a system prompt), or
 *     nothing with --own-prompts.
 *
 *   bench_engine lone [MODEL] [--threads T] [--lens 16,300,1200] [--steps 8]
 *                     [--kv-type f16|q8_0]
 *     whether llama.cpp computes a decode row alone (a one-row call) bit
 *     for bit as it does beside another row, which is what the engine's
 *     padding row of batch-invariant calls assumes it does not (see
 *     bench_lone).
 *
 *   bench_engine cut [MODEL] [--threads T] [--ctx 900] [--delta 90] [--reps 3]
 *     CPU time of a prompt delta of an unseeded call computed in one
 *     llama_decode call against cut at whole 64-row tiles (bench_cut).
 *
 * MODEL defaults to /tmp/q05.gguf (aios model create-test /tmp/q05.gguf
 * --shape qwen2.5-0.5b). Prompts are synthetic token ids (a random-weight
 * model's text is noise anyway); sampling is temperature 1 with a seed. */
#include "context/kvsnap.h"
#include "kernel/config.h"
#include "llm/core.h"
#include "llm/engine.h"
#include "sched/sched.h"
#include "util/err.h"
#include "util/util.h"

#include <llama.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *g_model = "/tmp/q05.gguf";
static int g_threads = 2;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;

static void quiet(enum ggml_log_level l, const char *t, void *u)
{
    (void)t;
    (void)u;
    if (l == GGML_LOG_LEVEL_ERROR) fputs(t, stderr);
}

static double now_s(void) { return (double)util_now_us() / 1e6; }

static int parse_list(const char *s, int *out, int max)
{
    int n = 0;
    while (s && *s && n < max) {
        out[n++] = atoi(s);
        s = strchr(s, ',');
        if (s) s++;
    }
    return n;
}

static void prompt_tokens(int32_t *t, int n, int salt)
{
    for (int k = 0; k < n; k++) t[k] = 1000 + (int32_t)((k * 7919 + salt * 104729) % 30000);
}

/* ---- engine driver ---- */

struct eng {
    struct aios_config cfg;
    struct sched *sched;
    struct llm_core *core;
    char dir[128];
};

static int eng_open(struct eng *t, int n_parallel, int kv_size, const char *extra)
{
    char yaml[2048], err[512] = "";
    snprintf(t->dir, sizeof t->dir, "/tmp/aios-bench-XXXXXX");
    if (!mkdtemp(t->dir)) return -1;
    char par[64] = ""; /* 0: the engine's default */
    if (n_parallel > 0) snprintf(par, sizeof par, "      n_parallel: %d\n", n_parallel);
    snprintf(yaml, sizeof yaml,
             "llms:\n  models:\n    - name: m\n      backend: llamacpp\n      path: %s\n"
             "      n_ctx: 4096\n      n_threads: %d\n%s      kv_size: %d\n%s"
             "data_dir: %s\n",
             g_model, g_threads, par, kv_size, extra ? extra : "", t->dir);
    if (config_load_string(&t->cfg, yaml, strlen(yaml), err, sizeof err) ||
        llm_llama_create(&t->core, &t->cfg.models[0], &t->cfg, err, sizeof err)) {
        fprintf(stderr, "engine: %s\n", err);
        return -1;
    }
    sched_create(&t->sched, NULL);
    return 0;
}

/* start after submitting, so the calls are admitted together */
static void eng_go(struct eng *t) { t->core->ops->start(t->core, t->sched); }

static void eng_close(struct eng *t)
{
    sched_shutdown(t->sched);
    t->core->ops->stop(t->core);
    t->core->ops->destroy(t->core);
    sched_destroy(t->sched);
    config_free(&t->cfg);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", t->dir);
}

static void on_notify(struct syscall *sc, void *ud)
{
    (void)sc;
    (void)ud;
    pthread_mutex_lock(&g_mu);
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

static bool g_unseeded; /* decode --unseeded: the engine's calls give no seed */

static struct syscall *submit_tokens(struct eng *t, const int32_t *toks, int n, int max_tokens,
                                     uint32_t seed, const char *agent)
{
    struct llm_req *req = calloc(1, sizeof *req);
    req->model = strdup("m");
    req->tokens = malloc(sizeof *req->tokens * (size_t)n);
    memcpy(req->tokens, toks, sizeof *toks * (size_t)n);
    req->n_tokens = n;
    req->p.max_tokens = max_tokens;
    req->p.temperature = 1.0f;
    req->p.top_p = 1.0f;
    req->p.has_seed = !g_unseeded;
    req->p.seed = seed;
    struct syscall *sc = syscall_new(SYSCALL_KIND_LLM, agent, t->core, req, llm_req_free);
    sc->notify = on_notify;
    sched_submit(t->sched, sc);
    return sc;
}

/* the process's CPU time (all threads), microseconds */
static int64_t cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* (wall, CPU) samples taken by wait_all every 20 ms at most: the CPU time
 * the engine spent in a window of wall time, interpolated (cpu_at) */
#define N_CPU_SAMPLES 100000
static int64_t g_cs_wall[N_CPU_SAMPLES], g_cs_cpu[N_CPU_SAMPLES];
static int g_n_cs;

static double cpu_at(int64_t wall)
{
    for (int i = 1; i < g_n_cs; i++)
        if (g_cs_wall[i] >= wall) {
            double f = g_cs_wall[i] > g_cs_wall[i - 1]
                           ? (double)(wall - g_cs_wall[i - 1]) / (double)(g_cs_wall[i] - g_cs_wall[i - 1])
                           : 1;
            return (double)g_cs_cpu[i - 1] + f * (double)(g_cs_cpu[i] - g_cs_cpu[i - 1]);
        }
    return g_n_cs ? (double)g_cs_cpu[g_n_cs - 1] : 0;
}

static void wait_all(struct syscall **sc, int n)
{
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < n; i++) {
        for (;;) {
            if (g_n_cs < N_CPU_SAMPLES)
                g_cs_wall[g_n_cs] = util_now_us(), g_cs_cpu[g_n_cs++] = cpu_us();
            pthread_mutex_lock(&sc[i]->mu);
            bool fin = syscall_status_final(sc[i]->status);
            pthread_mutex_unlock(&sc[i]->mu);
            if (fin) break;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 20 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&g_cv, &g_mu, &ts);
        }
        if (sc[i]->status != SYSCALL_STATUS_DONE)
            fprintf(stderr, "call %d failed: %s\n", i, sc[i]->errmsg);
    }
    if (g_n_cs < N_CPU_SAMPLES) g_cs_wall[g_n_cs] = util_now_us(), g_cs_cpu[g_n_cs++] = cpu_us();
    pthread_mutex_unlock(&g_mu);
}

/* ---- decode ---- */

static double baseline_decode(struct llama_model *m, int n, int gen, int plen, double *per_cpu_s)
{
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 8192;
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    cp.n_seq_max = (uint32_t)n;
    cp.kv_unified = true;
    cp.n_threads = g_threads;
    cp.n_threads_batch = g_threads;
    cp.no_perf = true;
    struct llama_context *ctx = llama_init_from_model(m, cp);
    struct llama_batch b = llama_batch_init(512, 0, 1);
    struct llama_sampler **sm = calloc((size_t)n, sizeof *sm);
    int32_t *tok = calloc((size_t)n, sizeof *tok), *p = malloc(sizeof *p * (size_t)plen);
    for (int i = 0; i < n; i++) {
        sm[i] = llama_sampler_chain_init(llama_sampler_chain_default_params());
        llama_sampler_chain_add(sm[i], llama_sampler_init_temp(1.0f));
        llama_sampler_chain_add(sm[i], llama_sampler_init_dist(100u + (uint32_t)i));
    }
    /* prefill all prompts (not timed) */
    int out[64];
    b.n_tokens = 0;
    for (int i = 0; i < n; i++) {
        prompt_tokens(p, plen, i);
        for (int k = 0; k < plen; k++) {
            int j = b.n_tokens++;
            b.token[j] = p[k], b.pos[j] = k, b.n_seq_id[j] = 1, b.seq_id[j][0] = i;
            b.logits[j] = k == plen - 1;
            if (k == plen - 1) out[i] = j;
        }
    }
    llama_decode(ctx, b);
    for (int i = 0; i < n; i++) tok[i] = llama_sampler_sample(sm[i], ctx, out[i]);
    double t0 = now_s();
    int64_t c0 = cpu_us();
    for (int s = 1; s < gen; s++) {
        b.n_tokens = 0;
        for (int i = 0; i < n; i++) {
            int j = b.n_tokens++;
            b.token[j] = tok[i], b.pos[j] = plen + s - 1, b.n_seq_id[j] = 1, b.seq_id[j][0] = i;
            b.logits[j] = 1;
        }
        if (llama_decode(ctx, b)) fprintf(stderr, "baseline decode failed\n");
        for (int i = 0; i < n; i++) tok[i] = llama_sampler_sample(sm[i], ctx, i);
    }
    double dt = now_s() - t0;
    *per_cpu_s = (double)n * (gen - 1) / ((double)(cpu_us() - c0) / 1e6);
    for (int i = 0; i < n; i++) llama_sampler_free(sm[i]);
    free(sm);
    free(tok);
    free(p);
    llama_batch_free(b);
    llama_free(ctx);
    return (double)n * (gen - 1) / dt;
}

/* The engine's decode phase: from the moment every call has its first
 * token (all prompts prefilled; the baseline's untimed part) to the end of
 * the last call, and the tokens generated in it. A call whose prompt went
 * in an earlier llama_decode call of the same step has its first token a
 * little earlier, but decodes nothing before the next step, so the window
 * holds exactly the gen - 1 decode steps (every prompt here fits in one
 * step: n x plen <= n_batch). */
static uint64_t g_padded_steps; /* the engine runs' padded steps (a lone exact row, step()) */
static double engine_decode(int n, int gen, int plen, const char *knobs, double *per_cpu_s)
{
    struct eng t;
    if (eng_open(&t, 0, 8192, knobs)) exit(1);
    struct syscall *sc[64];
    int32_t *p = malloc(sizeof *p * (size_t)plen);
    for (int i = 0; i < n; i++) {
        prompt_tokens(p, plen, i);
        sc[i] = submit_tokens(&t, p, plen, gen, 100u + (uint32_t)i, "bench");
    }
    g_n_cs = 0;
    eng_go(&t);
    wait_all(sc, n);
    int64_t t_from = 0, t_to = 0;
    long toks = 0;
    for (int i = 0; i < n; i++) {
        struct llm_res *r = sc[i]->res;
        if (r) {
            if (r->t_first_tok_at_us > t_from) t_from = r->t_first_tok_at_us;
            if (r->t_end_at_us > t_to) t_to = r->t_end_at_us;
            toks += r->n_gen > 0 ? r->n_gen - 1 : 0;
        }
        syscall_unref(sc[i]);
    }
    free(p);
    struct llm_engine_stats st;
    if (!llm_engine_get_stats(t.core, &st)) g_padded_steps += st.n_padded_steps;
    eng_close(&t);
    double cpu = t_to > t_from ? cpu_at(t_to) - cpu_at(t_from) : 0;
    *per_cpu_s = cpu > 0 ? (double)toks / (cpu / 1e6) : 0;
    return t_to > t_from ? (double)toks / ((double)(t_to - t_from) / 1e6) : 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* --set key=value (repeatable): an engine knob of the model entry
 * (docs/configuration.md), e.g. --set batch_invariant=false; none: the
 * engine's defaults. --min-ratio R: exit 1 if a size's ratio (best engine
 * run / best baseline run) is below R (the ctest guard). */
static int bench_decode(int argc, char **argv)
{
    int sizes[8] = {1, 4, 8, 16, 32}, ns = 5, gen = 32, plen = 16, reps = 2;
    double min_ratio = 0;
    char knobs[1024] = "";
    const char *only = getenv("BENCH_ONLY"); /* "engine" or "llama": one side (profiling) */
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--sizes") && i + 1 < argc) ns = parse_list(argv[++i], sizes, 8);
        else if (!strcmp(argv[i], "--gen") && i + 1 < argc) gen = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--min-ratio") && i + 1 < argc) min_ratio = atof(argv[++i]);
        else if (!strcmp(argv[i], "--prompt") && i + 1 < argc) plen = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--unseeded")) g_unseeded = true;
        else if (!strcmp(argv[i], "--set") && i + 1 < argc) {
            const char *kv = argv[++i], *eq = strchr(kv, '=');
            size_t l = strlen(knobs);
            if (!eq || eq == kv) {
                fprintf(stderr, "--set %s: expected key=value\n", kv);
                return 2;
            }
            snprintf(knobs + l, sizeof knobs - l, "      %.*s: %s\n", (int)(eq - kv), kv, eq + 1);
        }
    }
    for (int i = 0; i < ns; i++)
        if (sizes[i] < 1 || sizes[i] > 64 || plen < 1 || sizes[i] * plen > 512) {
            fprintf(stderr, "--sizes, --prompt: every prompt must fit one step (sequences x "
                    "prompt tokens <= 512)\n");
            return 2;
        }
    if (reps < 1) reps = 1;
    struct llama_model *m = llama_model_load_from_file(g_model, llama_model_default_params());
    if (!m) return 1;
    printf("decode throughput, %s, %d threads, %d-token prompts, %d tokens each, %s engine "
           "calls, best of %d alternating runs%s%s", g_model, g_threads, plen, gen,
           g_unseeded ? "unseeded" : "seeded (batch invariant)", reps, *knobs ? ", engine knobs:\n" : "\n",
           knobs);
    printf("%4s %14s %14s %7s  %s  %s\n", "seqs", "llama.cpp t/s", "engine t/s", "ratio",
           "ratio of each pair (spread)", "cpu: tokens per CPU-second, best engine / best llama.cpp");
    int rc = 0;
    for (int i = 0; i < ns; i++) {
        double base = 0, eng = 0, pr[32], base_c = 0, eng_c = 0;
        char pairs[256] = "";
        for (int r = 0; r < reps; r++) {
            double bc = 1, ec = 1;
            double b = only && !strcmp(only, "engine") ? 1 : baseline_decode(m, sizes[i], gen, plen, &bc);
            double e = only && !strcmp(only, "llama") ? 1 : engine_decode(sizes[i], gen, plen, knobs, &ec);
            if (bc > base_c) base_c = bc;
            if (ec > eng_c) eng_c = ec;
            if (b > base) base = b;
            if (e > eng) eng = e;
            size_t l = strlen(pairs);
            if (r < 32) pr[r] = b > 0 ? e / b : 0;
            snprintf(pairs + l, sizeof pairs - l, "%s%.2f", r ? " " : "", b > 0 ? e / b : 0);
        }
        double ratio = base > 0 ? eng / base : 0;
        int np = reps < 32 ? reps : 32;
        qsort(pr, (size_t)np, sizeof pr[0], cmp_double);
        double med = np % 2 ? pr[np / 2] : (pr[np / 2 - 1] + pr[np / 2]) / 2;
        printf("%4d %14.1f %14.1f %7.2f  %s (median %.2f)  cpu %.2f  padded steps %llu\n", sizes[i],
               base, eng, ratio, pairs, med, base_c > 0 ? eng_c / base_c : 0,
               (unsigned long long)g_padded_steps);
        g_padded_steps = 0;
        fflush(stdout);
        /* a burst of other work on a shared machine slows whichever side
         * runs then: a regression lowers both the best-vs-best ratio and
         * the median pair, noise rarely both */
        if (min_ratio > 0 && ratio < min_ratio && med < min_ratio) {
            printf("FAIL: %d sequences: engine / llama.cpp %.2f (median pair %.2f) is below %.2f\n",
                   sizes[i], ratio, med, min_ratio);
            rc = 1;
        }
    }
    llama_model_free(m);
    return rc;
}

/* ---- context switch ---- */

static int bench_switch(int argc, char **argv)
{
    int lens[8] = {256, 1024, 4096}, nl = 3;
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--lens") && i + 1 < argc) nl = parse_list(argv[++i], lens, 8);
    struct llama_model *m = llama_model_load_from_file(g_model, llama_model_default_params());
    if (!m) return 1;
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 8192;
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    cp.n_seq_max = 2;
    cp.kv_unified = true;
    cp.n_threads = g_threads;
    cp.n_threads_batch = g_threads;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
    cp.no_perf = true;
    struct llama_context *ctx = llama_init_from_model(m, cp);
    struct llama_batch b = llama_batch_init(512, 0, 1);
    struct ctx_store *ram = NULL, *disk = NULL;
    char dir[] = "/tmp/aios-bench-spill-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    ctx_store_create(&ram, (size_t)1 << 40, NULL);
    ctx_store_create(&disk, 0, dir);
    printf("context switch, %s, %d threads\n", g_model, g_threads);
    printf("%6s %12s %10s %14s %16s %9s %10s\n", "tokens", "prefill ms", "snap MB", "save+restore ms",
           "spilled s+r ms", "ratio", "ratio disk");
    for (int li = 0; li < nl; li++) {
        int L = lens[li];
        int32_t *p = malloc(sizeof *p * (size_t)L);
        prompt_tokens(p, L, li);
        llama_memory_clear(llama_get_memory(ctx), true);
        double t0 = now_s();
        for (int i = 0; i < L; i += 512) {
            int n = L - i < 512 ? L - i : 512;
            b.n_tokens = 0;
            for (int k = 0; k < n; k++) {
                int j = b.n_tokens++;
                b.token[j] = p[i + k], b.pos[j] = i + k, b.n_seq_id[j] = 1, b.seq_id[j][0] = 0;
                b.logits[j] = i + k == L - 1;
            }
            llama_decode(ctx, b);
        }
        double t_prefill = now_s() - t0;
        double best[2] = {1e9, 1e9};
        size_t bytes = 0;
        for (int rep = 0; rep < 3; rep++) {
            for (int d = 0; d < 2; d++) {
                struct ctx_store *st = d ? disk : ram;
                struct ctx_snap *sn = NULL;
                double s0 = now_s();
                if (ctx_snap_save(st, ctx, 0, &sn)) return 1;
                llama_memory_seq_rm(llama_get_memory(ctx), 0, -1, -1);
                if (ctx_snap_restore(st, ctx, sn, 0)) return 1;
                double dt = now_s() - s0;
                bytes = ctx_snap_bytes(sn);
                ctx_snap_free(st, sn);
                if (dt < best[d]) best[d] = dt;
            }
        }
        if (llama_memory_seq_pos_max(llama_get_memory(ctx), 0) != L - 1)
            fprintf(stderr, "restore lost tokens\n");
        printf("%6d %12.1f %10.1f %14.2f %16.2f %8.1fx %9.1fx\n", L, t_prefill * 1e3,
               (double)bytes / 1e6, best[0] * 1e3, best[1] * 1e3, t_prefill / best[0],
               t_prefill / best[1]);
        fflush(stdout);
        free(p);
    }
    ctx_store_destroy(ram);
    ctx_store_destroy(disk);
    rmdir(dir);
    llama_batch_free(b);
    llama_free(ctx);
    llama_model_free(m);
    return 0;
}

/* ---- shared prefix ---- */

static void prefix_run(int seqs, int plen, bool share, double *wall, uint64_t *computed)
{
    struct eng t;
    const char *extra = share ? "      retain: false\n"
                              : "      retain: false\n      prefix_share_min: 16777216\n";
    if (eng_open(&t, seqs, seqs * (plen + 64), extra)) exit(1);
    int n = plen + 16;
    int32_t *p = malloc(sizeof *p * (size_t)n);
    struct syscall *sc[64];
    double t0 = now_s();
    for (int i = 0; i < seqs; i++) {
        prompt_tokens(p, plen, 0); /* the shared prefix */
        for (int k = 0; k < 16; k++) p[plen + k] = 2000 + i * 16 + k;
        char agent[32];
        snprintf(agent, sizeof agent, "agent-%d", i);
        sc[i] = submit_tokens(&t, p, n, 4, 7u + (uint32_t)i, agent);
    }
    eng_go(&t);
    wait_all(sc, seqs);
    *wall = now_s() - t0;
    *computed = 0;
    for (int i = 0; i < seqs; i++) {
        struct llm_res *r = sc[i]->res;
        if (r) *computed += (uint64_t)r->n_prompt_computed;
        syscall_unref(sc[i]);
    }
    free(p);
    eng_close(&t);
}

static int bench_prefix(int argc, char **argv)
{
    int seqs = 16, plen = 1000;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--seqs") && i + 1 < argc) seqs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--prefix") && i + 1 < argc) plen = atoi(argv[++i]);
    }
    if (seqs > 64) seqs = 64;
    double w_share, w_plain;
    uint64_t c_share, c_plain;
    prefix_run(seqs, plen, true, &w_share, &c_share);
    prefix_run(seqs, plen, false, &w_plain, &c_plain);
    printf("prefix sharing, %s, %d threads: %d sequences, %d-token shared prefix + 16 own tokens, "
           "4 generated\n", g_model, g_threads, seqs, plen);
    printf("%10s %16s %10s\n", "", "prompt computed", "wall s");
    printf("%10s %16llu %10.2f\n", "sharing", (unsigned long long)c_share, w_share);
    printf("%10s %16llu %10.2f\n", "no sharing", (unsigned long long)c_plain, w_plain);
    printf("ratios (no sharing / sharing): computed %.1fx, wall %.1fx\n",
           (double)c_plain / (double)c_share, w_plain / w_share);
    return 0;
}

/* ---- ideal time of a workload ---- */

static int bench_ideal(int argc, char **argv)
{
    long P = -1, C = -1;
    int G = -1, B = 1, L = 1000;
    for (int i = 0; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--prompt-computed")) P = atol(argv[++i]);
        else if (!strcmp(argv[i], "--calls")) C = atol(argv[++i]);
        else if (!strcmp(argv[i], "--gen")) G = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch")) B = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ctx")) L = atoi(argv[++i]);
    }
    bool own_prompts = false; /* --own-prompts: no shared prefix between the B sequences */
    /* --batch-invariant on|off: the engine knob for these (seeded) calls, as
     * the workload ran; off by default, like the agents benchmark's calls,
     * which give no seed (the engine's default, "seeded", leaves them out) */
    const char *bi = "      batch_invariant: false\n";
    for (int i = 0; i < argc; i++) {
        own_prompts |= !strcmp(argv[i], "--own-prompts");
        if (!strcmp(argv[i], "--batch-invariant") && i + 1 < argc)
            bi = strcmp(argv[++i], "on") ? "      batch_invariant: false\n"
                                         : "      batch_invariant: true\n";
    }
    if (P < 0 || C < 1 || G < 2 || B < 1 || B > 64 || L < 64 || L > 3000) {
        fprintf(stderr, "ideal: need --prompt-computed P --calls C --gen G (>= 2) "
                        "[--batch 1..64] [--ctx 64..3000]\n");
        return 2;
    }
    /* prefill rate: one 1024-token prompt, alone */
    struct eng t;
    char extra[128];
    snprintf(extra, sizeof extra, "      retain: false\n%s", bi);
    if (eng_open(&t, 1, 8192, extra)) return 1;
    int32_t *p = malloc(sizeof *p * 1024);
    prompt_tokens(p, 1024, 7);
    struct syscall *sc[64];
    sc[0] = submit_tokens(&t, p, 1024, 1, 1, "bench");
    eng_go(&t);
    wait_all(sc, 1);
    double t_pre = sc[0]->res ? (double)((struct llm_res *)sc[0]->res)->t_prefill_us / 1e6 : 0;
    syscall_unref(sc[0]);
    eng_close(&t);
    free(p);
    if (t_pre <= 0) return 1;
    double pre_rate = 1024.0 / t_pre;
    /* decode step time: B sequences of L tokens (a shared prefix, 32 own) */
    if (eng_open(&t, B, 16384, bi)) return 1;
    p = malloc(sizeof *p * (size_t)L);
    for (int i = 0; i < B; i++) {
        prompt_tokens(p, L, own_prompts ? 100 + i : 0);
        int32_t own[32];
        prompt_tokens(own, 32, 1 + i);
        memcpy(p + L - 32, own, sizeof own);
        sc[i] = submit_tokens(&t, p, L, G, 100u + (uint32_t)i, "bench");
    }
    eng_go(&t);
    wait_all(sc, B);
    /* A call's decode window runs from its first token to its last. The
     * first call admitted starts decoding while the others still prefill
     * (with a shared prefix they wait for its cells), so its window holds
     * their prefill steps too; the last call to start decodes in steps
     * where all B decode. The step time is therefore the shortest window
     * per token, and the longest is printed beside it. */
    double step = 0, step_max = 0; /* the shortest and the longest window per token */
    for (int i = 0; i < B; i++) {
        struct llm_res *r = sc[i]->res;
        double st = r && r->n_gen >= 2 && r->t_decode_us > 0
                        ? (double)r->t_decode_us / 1e6 / (r->n_gen - 1) : 0;
        if (i == 0 || st < step) step = st; /* a failed call (0) fails the run */
        if (st > step_max) step_max = st;
        syscall_unref(sc[i]);
    }
    eng_close(&t);
    free(p);
    if (step <= 0) return 1;
    double steps = (double)C * G / B;
    double t_ideal = (double)P / pre_rate + steps * step;
    printf("ideal, %s, %d threads: prefill %.1f tokens/s (1024-token prompt); decode step %.1f ms "
           "at %d sequences of %d tokens (%.1f tokens/s; first call's window %.1f ms per token)\n",
           g_model, g_threads, pre_rate, step * 1e3, B, L, B / step, step_max * 1e3);
    printf("workload: %ld prompt tokens to compute, %ld calls x %d tokens, %d at a time\n", P, C,
           G, B);
    printf("ideal_s %.2f (prefill %.2f + decode %.2f)\n", t_ideal, (double)P / pre_rate,
           steps * step);
    return 0;
}

/* ---- lone: does a row decoded alone round as it does beside others? ----
 *
 * The engine keeps a batch-invariant call's row from being alone in a
 * llama_decode call (step() pads it with a row of a reserved sequence).
 * This asks llama.cpp directly, with the engine's context settings (flash
 * attention, unified cache, F16 or Q8_0 K/V): sequence 0 has an L-token
 * prompt and sequence 1 another (prefilled in calls of at most 63 rows,
 * as batch-invariant prompts are); then for each of `steps` decode tokens
 * of sequence 0 its logits are computed (a) alone, a one-row call, (b)
 * beside a decode row of sequence 1, (c) beside the engine's padding row
 * (sequence 2 at position 0), each time from the same cache, and compared
 * bit for bit. (a) = (b) everywhere: the padding is not needed. */
static void lone_prefill(struct llama_context *ctx, struct llama_batch *b, int seq, int L, int salt)
{
    int32_t *p = malloc(sizeof *p * (size_t)L);
    prompt_tokens(p, L, salt);
    for (int lo = 0; lo < L; lo += 63) {
        b->n_tokens = 0;
        for (int k = lo; k < L && k < lo + 63; k++) {
            int j = b->n_tokens++;
            b->token[j] = p[k], b->pos[j] = k, b->n_seq_id[j] = 1, b->seq_id[j][0] = seq;
            b->logits[j] = 0;
        }
        if (llama_decode(ctx, *b)) fprintf(stderr, "lone: prefill failed\n");
    }
    free(p);
}

/* decode rows (seq, tok, pos) and copy the logits of the first into out */
static int lone_decode(struct llama_context *ctx, struct llama_batch *b, int n, const int *seq,
                       const int32_t *tok, const int *pos, float *out, int n_vocab)
{
    b->n_tokens = 0;
    for (int i = 0; i < n; i++) {
        int j = b->n_tokens++;
        b->token[j] = tok[i], b->pos[j] = pos[i], b->n_seq_id[j] = 1, b->seq_id[j][0] = seq[i];
        b->logits[j] = i == 0;
    }
    int rc = llama_decode(ctx, *b);
    if (rc) return rc;
    memcpy(out, llama_get_logits_ith(ctx, 0), sizeof *out * (size_t)n_vocab);
    return 0;
}

static void lone_cmp(const float *x, const float *y, int n, int *n_diff, double *max_diff)
{
    for (int i = 0; i < n; i++)
        if (memcmp(&x[i], &y[i], sizeof *x)) {
            (*n_diff)++;
            double d = fabs((double)x[i] - (double)y[i]);
            if (d > *max_diff) *max_diff = d;
        }
}

static int bench_lone(int argc, char **argv)
{
    int lens[8] = {16, 300, 1200}, n_lens = 3, steps = 8;
    bool q8 = false;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--lens") && i + 1 < argc) n_lens = parse_list(argv[++i], lens, 8);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--kv-type") && i + 1 < argc) q8 = !strcmp(argv[++i], "q8_0");
    }
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model *m = llama_model_load_from_file(g_model, mp);
    if (!m) {
        fprintf(stderr, "cannot load %s\n", g_model);
        return 1;
    }
    int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(m));
    float *a = malloc(sizeof *a * (size_t)n_vocab), *bb = malloc(sizeof *bb * (size_t)n_vocab),
          *c = malloc(sizeof *c * (size_t)n_vocab);
    int bad = 0;
    printf("lone, %s, %d threads, %s K/V: logits of a row alone (a), beside another decode row "
           "(b), beside the padding row (c), bit for bit over %d steps x %d logits\n",
           g_model, g_threads, q8 ? "Q8_0" : "F16", steps, n_vocab);
    printf("| prompt tokens each | cells spanned | logits a != b | max abs a - b | logits c != b |\n");
    printf("|---:|---:|---:|---:|---:|\n");
    for (int li = 0; li < n_lens; li++) {
        int L = lens[li];
        struct llama_context_params cp = llama_context_default_params();
        cp.n_ctx = (uint32_t)(2 * L + 2 * steps + 256);
        cp.n_batch = cp.n_ubatch = 512;
        cp.n_seq_max = 3;
        cp.kv_unified = true;
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
        if (q8) cp.type_k = cp.type_v = GGML_TYPE_Q8_0;
        cp.n_threads = cp.n_threads_batch = g_threads;
        cp.no_perf = true;
        struct llama_context *ctx = llama_init_from_model(m, cp);
        if (!ctx) {
            fprintf(stderr, "cannot make a context of %u cells\n", cp.n_ctx);
            return 1;
        }
        struct llama_batch b = llama_batch_init(512, 0, 1);
        lone_prefill(ctx, &b, 0, L, 1);
        lone_prefill(ctx, &b, 1, L, 2);
        llama_memory_t mem = llama_get_memory(ctx);
        int n_ab = 0, n_cb = 0;
        double max_ab = 0, max_cb = 0;
        for (int k = 0; k < steps; k++) {
            int32_t t0 = 2000 + 37 * k, t1 = 5000 + 91 * k, pad = 1;
            int seq_a[] = {0}, pos_a[] = {L + k};
            int seq_b[] = {0, 1}, pos_b[] = {L + k, L + k};
            int seq_c[] = {0, 2}, pos_c[] = {L + k, 0};
            int32_t tok_a[] = {t0}, tok_b[] = {t0, t1}, tok_c[] = {t0, pad};
            if (lone_decode(ctx, &b, 1, seq_a, tok_a, pos_a, a, n_vocab)) break;
            llama_memory_seq_rm(mem, 0, L + k, -1);
            if (lone_decode(ctx, &b, 2, seq_c, tok_c, pos_c, c, n_vocab)) break;
            llama_memory_seq_rm(mem, 0, L + k, -1);
            llama_memory_seq_rm(mem, 2, -1, -1);
            /* (b) last: its cells stay, as a batched step's would */
            if (lone_decode(ctx, &b, 2, seq_b, tok_b, pos_b, bb, n_vocab)) break;
            lone_cmp(a, bb, n_vocab, &n_ab, &max_ab);
            lone_cmp(c, bb, n_vocab, &n_cb, &max_cb);
        }
        printf("| %d | %d | %d | %.3g | %d |\n", L, 2 * L + steps, n_ab, max_ab, n_cb);
        fflush(stdout);
        bad += n_ab > 0;
        llama_batch_free(b);
        llama_free(ctx);
    }
    free(a);
    free(bb);
    free(c);
    llama_model_free(m);
    printf("padding needed: %s\n", bad ? "yes (a lone row rounds otherwise)" : "not at these lengths");
    return 0;
}

/* ---- cut: a prompt delta in one call or cut at 64 rows ----
 *
 * What the engine does with an unseeded call's prompt rows (step()): whole
 * 64-row tiles in one llama_decode call, the rest in calls of at most 63
 * rows. Here an L-token context, then a D-token delta computed (a) in one
 * call of D rows, (b) as 64 * (D / 64) rows and then the rest; CPU time
 * of the delta, best of --reps alternating. */
static int bench_cut(int argc, char **argv)
{
    int L = 900, D = 90, reps = 3;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--ctx") && i + 1 < argc) L = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--delta") && i + 1 < argc) D = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
    }
    if (D < 65 || D > 500 || L < 1 || L > 6000) {
        fprintf(stderr, "--delta 65..500, --ctx 1..6000\n");
        return 2;
    }
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model *m = llama_model_load_from_file(g_model, mp);
    if (!m) return 1;
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(L + D + 256);
    cp.n_batch = cp.n_ubatch = 512;
    cp.n_seq_max = 1;
    cp.kv_unified = true;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
    cp.n_threads = cp.n_threads_batch = g_threads;
    cp.no_perf = true;
    struct llama_context *ctx = llama_init_from_model(m, cp);
    struct llama_batch b = llama_batch_init(512, 0, 1);
    int32_t *p = malloc(sizeof *p * (size_t)(L + D));
    prompt_tokens(p, L + D, 3);
    for (int lo = 0; lo < L; lo += 512) {
        b.n_tokens = 0;
        for (int k = lo; k < L && k < lo + 512; k++) {
            int j = b.n_tokens++;
            b.token[j] = p[k], b.pos[j] = k, b.n_seq_id[j] = 1, b.seq_id[j][0] = 0, b.logits[j] = 0;
        }
        llama_decode(ctx, b);
    }
    double best[2] = {0, 0};
    int cut = D / 64 * 64;
    for (int r = 0; r < reps; r++)
        for (int v = 0; v < 2; v++) {
            int64_t c0 = cpu_us();
            for (int lo = 0; lo < D;) {
                int hi = v == 0 ? D : lo < cut ? cut : D;
                b.n_tokens = 0;
                for (int k = lo; k < hi; k++) {
                    int j = b.n_tokens++;
                    b.token[j] = p[L + k], b.pos[j] = L + k, b.n_seq_id[j] = 1, b.seq_id[j][0] = 0;
                    b.logits[j] = k == D - 1;
                }
                llama_decode(ctx, b);
                lo = hi;
            }
            double c = (double)(cpu_us() - c0) / 1e3;
            if (best[v] == 0 || c < best[v]) best[v] = c;
            llama_memory_seq_rm(llama_get_memory(ctx), 0, L, -1);
        }
    printf("cut, %s, %d threads: %d-token delta after %d tokens, CPU ms (best of %d): one call "
           "%.1f, %d + %d rows %.1f, ratio %.3f\n", g_model, g_threads, D, L, reps, best[0], cut,
           D - cut, best[1], best[0] > 0 ? best[1] / best[0] : 0);
    free(p);
    llama_batch_free(b);
    llama_free(ctx);
    llama_model_free(m);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_engine decode|switch|prefix|ideal|lone|cut [MODEL] [--threads T] ...\n");
        return 2;
    }
    int rest = 2;
    if (argc > 2 && argv[2][0] != '-') g_model = argv[rest++];
    for (int i = rest; i < argc; i++)
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) g_threads = atoi(argv[i + 1]);
    llm_llama_global_init();
    llama_log_set(quiet, NULL);
    if (!strcmp(argv[1], "decode")) return bench_decode(argc - rest, argv + rest);
    if (!strcmp(argv[1], "switch")) return bench_switch(argc - rest, argv + rest);
    if (!strcmp(argv[1], "prefix")) return bench_prefix(argc - rest, argv + rest);
    if (!strcmp(argv[1], "ideal")) return bench_ideal(argc - rest, argv + rest);
    if (!strcmp(argv[1], "lone")) return bench_lone(argc - rest, argv + rest);
    if (!strcmp(argv[1], "cut")) return bench_cut(argc - rest, argv + rest);
    fprintf(stderr, "unknown benchmark %s\n", argv[1]);
    return 2;
}
