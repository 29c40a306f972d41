/* Unit tests for the embedded engine (llm/llama.c) and the context manager
 * (context/kvsnap.c), driving real llama.cpp on the tiny random-weight test
 * model through the scheduler, as the kernel does:
 * - a seeded call gives the same text alone and in a batch of 16;
 * - a lone seeded row is padded, unless the model's one-row calls
 *   multiply as calls of more rows do (Q8_0) and attention does not
 *   split its cells;
 * - a call preempted every few tokens (KV snapshot out and back in, in RAM
 *   or spilled to disk) gives exactly the text of an uninterrupted run;
 * - llm_engine_preempt() switches a running call out and back;
 * - the second turn of a conversation reuses the first turn's KV cells and
 *   answers exactly as a cold engine does;
 * - retained conversations are evicted least recently used first, for a
 *   slot and when the KV cells run out (before any running sequence is
 *   switched out); an evicted agent's next turn recomputes its prompt and
 *   answers as a cold engine does;
 * - but an idle agent's conversation goes before that of an agent whose
 *   tool call is in flight (the scheduler's expected end);
 * - 4 agents with one long system prompt compute it once;
 * - penalties change the output and stay deterministic;
 * - a cancelled call frees its sequence, a stop ends everything with 503;
 * - bad engine knobs are refused with the key in the message. */
#include "context/kvsnap.h"
#include "kernel/config.h"
#include "llm/core.h"
#include "llm/engine.h"
#include "llm/testmodel.h"
#include "sched/sched.h"
#include "util/err.h"
#include "util/util.h"

#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static char g_dir[256], g_model[300];
static const char *g_use_model; /* the model eng_create loads (NULL: g_model) */
static int g_eng_threads = 1;    /* and its n_threads */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;

struct eng {
    struct aios_config cfg;
    struct sched *sched;
    struct llm_core *core;
};

/* the engine thread starts with start true; otherwise eng_start() starts it
 * (calls submitted before are then admitted together, in one order) */
static void eng_create(struct eng *t, int n_ctx, const char *knobs, const char *extra_top, bool start)
{
    char yaml[2048], err[512] = "";
    snprintf(yaml, sizeof yaml,
             "llms:\n  models:\n    - name: t\n      backend: llamacpp\n      path: %s\n"
             "      n_ctx: %d\n      n_threads: %d\n%s%s\ndata_dir: %s\n",
             g_use_model ? g_use_model : g_model, n_ctx, g_eng_threads, knobs ? knobs : "", extra_top ? extra_top : "", g_dir);
    assert_int_equal(config_load_string(&t->cfg, yaml, strlen(yaml), err, sizeof err), 0);
    int rc = llm_llama_create(&t->core, &t->cfg.models[0], &t->cfg, err, sizeof err);
    if (rc) fail_msg("llm_llama_create: %s", err);
    assert_int_equal(sched_create(&t->sched, NULL), 0);
    if (start) assert_int_equal(t->core->ops->start(t->core, t->sched), 0);
}

static void eng_start(struct eng *t) { assert_int_equal(t->core->ops->start(t->core, t->sched), 0); }

static void eng_open_ctx(struct eng *t, int n_ctx, const char *knobs, const char *extra_top)
{
    eng_create(t, n_ctx, knobs, extra_top, true);
}

static void eng_open(struct eng *t, const char *knobs, const char *extra_top)
{
    eng_open_ctx(t, 2048, knobs, extra_top);
}

static void eng_close(struct eng *t)
{
    sched_shutdown(t->sched);
    t->core->ops->stop(t->core);
    t->core->ops->destroy(t->core);
    sched_destroy(t->sched);
    config_free(&t->cfg);
}

static void on_notify(struct syscall *sc, void *ud)
{
    (void)sc;
    (void)ud;
    pthread_mutex_lock(&g_mu);
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

struct call_opts {
    const char *agent;
    const char *system;
    const char *user;
    const char *assistant; /* previous turn, with user2 */
    const char *user2;
    int max_tokens;
    float temperature;
    uint32_t seed;
    float repeat_penalty, frequency_penalty, presence_penalty;
    int priority;
    bool unseeded; /* no seed: not batch invariant under the default "seeded" */
};

static struct syscall *submit(struct eng *t, const struct call_opts *o)
{
    struct llm_req *req = calloc(1, sizeof *req);
    assert_non_null(req);
    req->model = strdup("t");
    req->msgs = calloc(4, sizeof *req->msgs);
    size_t n = 0;
    if (o->system) {
        req->msgs[n].role = strdup("system");
        req->msgs[n++].content = strdup(o->system);
    }
    req->msgs[n].role = strdup("user");
    req->msgs[n++].content = strdup(o->user);
    if (o->assistant) {
        req->msgs[n].role = strdup("assistant");
        req->msgs[n++].content = strdup(o->assistant);
        req->msgs[n].role = strdup("user");
        req->msgs[n++].content = strdup(o->user2);
    }
    req->n_msgs = n;
    req->p.max_tokens = o->max_tokens ? o->max_tokens : 24;
    req->p.temperature = o->temperature;
    req->p.top_p = 1.0f;
    req->p.has_seed = !o->unseeded;
    req->p.seed = o->seed;
    req->p.repeat_penalty = o->repeat_penalty;
    req->p.frequency_penalty = o->frequency_penalty;
    req->p.presence_penalty = o->presence_penalty;
    char err[256];
    assert_int_equal(t->core->ops->prepare(t->core, req, err, sizeof err), 0);
    struct syscall *sc = syscall_new(SYSCALL_KIND_LLM, o->agent ? o->agent : "a", t->core, req,
                                     llm_req_free);
    assert_non_null(sc);
    sc->notify = on_notify;
    if (o->priority) syscall_set_priority(sc, o->priority);
    assert_int_equal(sched_submit(t->sched, sc), 0);
    return sc;
}

static enum syscall_status wait_final(struct syscall *sc)
{
    enum syscall_status st;
    pthread_mutex_lock(&g_mu);
    for (;;) {
        pthread_mutex_lock(&sc->mu);
        st = sc->status;
        pthread_mutex_unlock(&sc->mu);
        if (syscall_status_final(st)) break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&g_cv, &g_mu, &ts);
    }
    pthread_mutex_unlock(&g_mu);
    return st;
}

/* run to completion; returns the result (owned by sc) */
static struct llm_res *run(struct syscall *sc)
{
    enum syscall_status st = wait_final(sc);
    if (st != SYSCALL_STATUS_DONE) fail_msg("call failed: %s", sc->errmsg);
    return sc->res;
}

static char *run_text(struct eng *t, const struct call_opts *o)
{
    struct syscall *sc = submit(t, o);
    char *s = strdup(run(sc)->text);
    syscall_unref(sc);
    return s;
}

static const char *g_users[16] = {
    "hello", "tell me a story about a cat", "2+2?", "write a haiku on the sea",
    "list three colors", "what is an operating system kernel", "translate 'dog' to French",
    "why is the sky blue", "sort 5 3 9 1", "name a prime number larger than 100",
    "summarise the plot of Hamlet in one line", "a", "bb cc", "what day is it",
    "describe continuous batching in LLM serving in two sentences", "ok"};

/* ---- tests ---- */

static void test_batch_determinism(void **state)
{
    (void)state;
    struct eng t;
    eng_open(&t, "      n_parallel: 16\n      retain: false\n", NULL);
    char *alone[16];
    for (int i = 0; i < 16; i++) {
        struct call_opts o = {.user = g_users[i], .temperature = 0.9f, .seed = 100u + (uint32_t)i,
                              .max_tokens = 32};
        alone[i] = run_text(&t, &o);
    }
    struct syscall *sc[16];
    for (int i = 0; i < 16; i++) {
        struct call_opts o = {.user = g_users[i], .temperature = 0.9f, .seed = 100u + (uint32_t)i,
                              .max_tokens = 32};
        sc[i] = submit(&t, &o);
    }
    int n_nonempty = 0;
    for (int i = 0; i < 16; i++) {
        struct llm_res *r = run(sc[i]);
        assert_string_equal(r->text, alone[i]);
        n_nonempty += r->n_gen > 0;
        syscall_unref(sc[i]);
        free(alone[i]);
    }
    assert_true(n_nonempty > 8);
    /* statistics are published after the step that finished the calls */
    struct llm_engine_stats st = {0};
    for (int i = 0; i < 200 && st.n_calls < 32; i++) {
        assert_int_equal(llm_engine_get_stats(t.core, &st), 0);
        usleep(5000);
    }
    assert_int_equal(st.n_calls, 32);
    assert_int_equal(st.n_running, 0);
    eng_close(&t);
}

/* The default n_parallel (32) decodes many agents together, as
 * llama-server -np 32 does: 24 calls queued before the engine starts all
 * run in the same steps, so the steps number about one call's tokens, not
 * three waves of them (as with 8 slots). */
static void test_default_parallel(void **state)
{
    (void)state;
    enum { N = 24, GEN = 16 };
    struct eng t;
    eng_create(&t, 2048, "      retain: false\n", NULL, false);
    struct syscall *sc[N];
    for (int i = 0; i < N; i++) {
        struct call_opts o = {.user = g_users[i % 16], .temperature = 0.9f,
                              .seed = 300u + (uint32_t)i, .max_tokens = GEN};
        sc[i] = submit(&t, &o);
    }
    eng_start(&t);
    int n_full = 0;
    for (int i = 0; i < N; i++) {
        n_full += run(sc[i])->n_gen == GEN;
        syscall_unref(sc[i]);
    }
    assert_true(n_full >= N - 2);
    struct llm_engine_stats st = {0};
    for (int i = 0; i < 200 && st.n_calls < N; i++) {
        assert_int_equal(llm_engine_get_stats(t.core, &st), 0);
        usleep(5000);
    }
    assert_int_equal(st.n_calls, N);
    assert_int_equal(st.n_parallel, 32);
    /* GEN decode steps plus a few of prefill; 8 slots would take 3 x GEN */
    assert_true(st.n_steps < 2 * GEN);
    eng_close(&t);
}

static void test_preempt_identical(void **state)
{
    (void)state;
    struct call_opts o = {.user = "count from one to one hundred, slowly", .temperature = 1.0f,
                          .seed = 7, .max_tokens = 60};
    struct eng t;
    eng_open(&t, "      retain: false\n", NULL);
    char *ref = run_text(&t, &o);
    eng_close(&t);

    /* preempted every 7 tokens, snapshots in RAM */
    eng_open(&t, "      retain: false\n      debug_preempt_every_tokens: 7\n", NULL);
    char *got = run_text(&t, &o);
    struct llm_engine_stats st;
    llm_engine_get_stats(t.core, &st);
    assert_string_equal(got, ref);
    assert_true(st.n_preemptions >= 5);
    assert_int_equal(st.n_resumes, st.n_preemptions);
    assert_true(st.snaps.n_saved >= 5);
    assert_int_equal(st.snaps.n_spilled, 0);
    assert_int_equal(st.snaps.n_snaps, 0);
    free(got);
    eng_close(&t);

    /* the same with a zero RAM budget: every snapshot goes through a file */
    eng_open(&t, "      retain: false\n      debug_preempt_every_tokens: 5\n",
             "context:\n  snapshot_ram_bytes: 0\n  spill_dir: spill\n");
    got = run_text(&t, &o);
    llm_engine_get_stats(t.core, &st);
    assert_string_equal(got, ref);
    assert_true(st.snaps.n_spilled >= 5);
    assert_int_equal(st.snaps.bytes_disk, 0); /* all read back and removed */
    char sp[600];
    snprintf(sp, sizeof sp, "%s/spill", g_dir);
    DIR *d = opendir(sp);
    assert_non_null(d);
    struct dirent *de;
    int n_files = 0;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.') n_files++;
    closedir(d);
    assert_int_equal(n_files, 0);
    free(got);
    eng_close(&t);

    /* and several sequences preempted while batched together; all six are
     * queued before the engine starts, so where their KV cells land does
     * not depend on thread timing (flash attention sums a sequence's
     * cells in cell order, see docs/architecture.md) */
    eng_create(&t, 2048, "      retain: false\n      debug_preempt_every_tokens: 3\n      n_parallel: 4\n",
               NULL, false);
    struct syscall *sc[6];
    char *alone[6];
    for (int i = 0; i < 6; i++) {
        struct call_opts oi = {.user = g_users[i], .temperature = 0.9f, .seed = 5u + (uint32_t)i,
                               .max_tokens = 20};
        sc[i] = submit(&t, &oi);
    }
    eng_start(&t);
    for (int i = 0; i < 6; i++) alone[i] = strdup(run(sc[i])->text);
    eng_close(&t);
    eng_open(&t, "      retain: false\n      n_parallel: 1\n", NULL);
    for (int i = 0; i < 6; i++) {
        struct call_opts oi = {.user = g_users[i], .temperature = 0.9f, .seed = 5u + (uint32_t)i,
                               .max_tokens = 20};
        char *r = run_text(&t, &oi);
        assert_string_equal(alone[i], r);
        free(r);
        free(alone[i]);
        syscall_unref(sc[i]);
    }
    eng_close(&t);
    free(ref);
}

static void test_preempt_api(void **state)
{
    (void)state;
    struct call_opts o = {.user = "write a long essay", .temperature = 1.0f, .seed = 11,
                          .max_tokens = 400};
    struct eng t;
    eng_open(&t, "      retain: false\n", NULL);
    char *ref = run_text(&t, &o);
    struct syscall *sc = submit(&t, &o);
    /* switch it out a few times while it runs */
    struct llm_engine_stats st = {0};
    for (int i = 0; i < 200 && st.n_resumes < 3; i++) {
        pthread_mutex_lock(&sc->mu);
        bool fin = syscall_status_final(sc->status);
        pthread_mutex_unlock(&sc->mu);
        if (fin) break;
        assert_int_equal(llm_engine_preempt(t.core, sc->id, 2), 0);
        usleep(2000);
        llm_engine_get_stats(t.core, &st);
    }
    struct llm_res *r = run(sc);
    assert_string_equal(r->text, ref);
    llm_engine_get_stats(t.core, &st);
    print_message("preempt api: %llu preemptions, %llu resumes\n",
                  (unsigned long long)st.n_preemptions, (unsigned long long)st.n_resumes);
    assert_true(st.n_preemptions >= 1);
    assert_int_equal(st.n_resumes, st.n_preemptions);
    /* with spare sequence ids a preemption pauses in place: no snapshot */
    assert_int_equal(st.snaps.n_saved, 0);
    syscall_unref(sc);
    free(ref);
    eng_close(&t);
}

static void test_retention(void **state)
{
    (void)state;
    const char *sys = "You are a helpful assistant that answers briefly and precisely.";
    struct call_opts o1 = {.agent = "alice", .system = sys, .user = "what is a kernel?",
                           .temperature = 0.8f, .seed = 3, .max_tokens = 16};
    struct eng t;
    eng_open(&t, "", NULL);
    struct syscall *s1 = submit(&t, &o1);
    struct llm_res *r1 = run(s1);
    assert_int_equal(r1->n_prompt_computed, r1->n_prompt);
    struct call_opts o2 = o1;
    o2.assistant = r1->text;
    o2.user2 = "and what is a scheduler?";
    o2.seed = 4;
    struct syscall *s2 = submit(&t, &o2);
    struct llm_res *r2 = run(s2);
    print_message("turn 2: prompt %d, computed %d\n", r2->n_prompt, r2->n_prompt_computed);
    assert_true(r2->n_prompt_computed < r2->n_prompt);
    assert_true(r2->n_prompt - r2->n_prompt_computed >= r1->n_prompt - 1);
    char *warm = strdup(r2->text);
    struct llm_engine_stats st;
    llm_engine_get_stats(t.core, &st);
    assert_true(st.n_retained_hits >= 1);
    eng_close(&t);

    /* a cold engine gives the same answer to turn 2 */
    eng_open(&t, "      retain: false\n", NULL);
    struct syscall *c2 = submit(&t, &o2);
    struct llm_res *rc2 = run(c2);
    assert_int_equal(rc2->n_prompt_computed, rc2->n_prompt);
    assert_string_equal(rc2->text, warm);
    syscall_unref(c2);
    eng_close(&t);
    syscall_unref(s1);
    syscall_unref(s2);
    free(warm);
}

/* More agents than running slots: each finished conversation keeps a
 * sequence id of its own (retain_max), so six agents on a two-slot
 * engine all find their turn 1 in the cache at turn 2; with retain_max 0
 * some of them must recompute. */
static int retained_turn2(const char *knobs, int n_agents)
{
    struct eng t;
    eng_open(&t, knobs, NULL);
    const char *sys = "You are a helpful assistant that answers briefly and precisely.";
    struct syscall *s1[8], *s2[8];
    struct call_opts o[8];
    char names[8][16];
    for (int i = 0; i < n_agents; i++) {
        snprintf(names[i], sizeof names[i], "agent%d", i);
        o[i] = (struct call_opts){.agent = names[i], .system = sys, .user = g_users[i],
                                  .temperature = 0.8f, .seed = 10u + (uint32_t)i, .max_tokens = 8};
        s1[i] = submit(&t, &o[i]);
    }
    for (int i = 0; i < n_agents; i++) run(s1[i]);
    int hits = 0;
    for (int i = 0; i < n_agents; i++) {
        struct llm_res *r1 = s1[i]->res;
        o[i].assistant = r1->text;
        o[i].user2 = "and then?";
        s2[i] = submit(&t, &o[i]);
        struct llm_res *r2 = run(s2[i]);
        /* its own turn 1, not only the shared system prompt */
        if (r2->n_prompt - r2->n_prompt_computed >= r1->n_prompt - 1) hits++;
    }
    for (int i = 0; i < n_agents; i++) syscall_unref(s1[i]), syscall_unref(s2[i]);
    eng_close(&t);
    return hits;
}

static void test_retention_many_agents(void **state)
{
    (void)state;
    assert_int_equal(retained_turn2("      n_parallel: 2\n", 6), 6);
    /* 2 running + 2 latency-lane ids, none extra: at most 4 stay */
    assert_true(retained_turn2("      n_parallel: 2\n      retain_max: 0\n", 6) <= 4);
}

static bool is_final(struct syscall *sc)
{
    pthread_mutex_lock(&sc->mu);
    bool f = syscall_status_final(sc->status);
    pthread_mutex_unlock(&sc->mu);
    return f;
}

/* The latency lane: with both running slots taken by long calls, an
 * urgent call (priority >= scheduler.interactive_priority) is admitted at
 * once and finishes while they still run; they pause meanwhile and still
 * produce exactly the tokens of an undisturbed run. With the lane off the
 * urgent call waits for a slot. */
static void test_latency_lane(void **state)
{
    (void)state;
    struct call_opts lo[2] = {
        {.agent = "batch0", .user = g_users[1], .temperature = 1.0f, .seed = 21, .max_tokens = 700},
        {.agent = "batch1", .user = g_users[3], .temperature = 1.0f, .seed = 22, .max_tokens = 700}};
    struct call_opts ur = {.agent = "ui", .user = "ok", .temperature = 0.5f, .seed = 5,
                           .max_tokens = 4, .priority = 10};
    char *ref[2];
    struct eng t;
    eng_open(&t, "      n_parallel: 2\n      retain: false\n", NULL);
    for (int i = 0; i < 2; i++) ref[i] = run_text(&t, &lo[i]);
    eng_close(&t);

    for (int lane = 0; lane <= 1; lane++) {
        eng_open(&t, "      n_parallel: 2\n      retain: false\n",
                 lane ? NULL : "scheduler:\n  interactive_priority: 0\n");
        struct syscall *b0 = submit(&t, &lo[0]), *b1 = submit(&t, &lo[1]);
        /* both are generating before the urgent call arrives */
        for (int i = 0; i < 500; i++) {
            struct llm_engine_stats st;
            llm_engine_get_stats(t.core, &st);
            if (st.n_running == 2 && st.n_tokens_generated == 0 && st.n_steps > 4) break;
            usleep(2000);
        }
        int64_t t0 = util_now_us();
        struct syscall *u = submit(&t, &ur);
        run(u);
        bool batch_done = is_final(b0) && is_final(b1);
        print_message("lane %d: urgent call took %.1f ms; batch done: %d\n", lane,
                      (util_now_us() - t0) / 1000.0, batch_done);
        if (lane) assert_false(batch_done);
        else assert_true(is_final(b0) || is_final(b1));
        for (int k = 0; k < 2; k++) {
            const char *x = run(k ? b1 : b0)->text, *y = ref[k];
            size_t c = 0;
            while (x[c] && x[c] == y[c]) c++;
            print_message("lane %d call %d: %zu of %zu/%zu bytes equal\n", lane, k, c, strlen(x), strlen(y));
        }
        assert_string_equal(run(b0)->text, ref[0]);
        assert_string_equal(run(b1)->text, ref[1]);
        syscall_unref(b0);
        syscall_unref(b1);
        syscall_unref(u);
        eng_close(&t);
    }
    free(ref[0]);
    free(ref[1]);
}

/* batch_invariant off (micro-batches past 64 rows, ggml's tiled flash
 * attention for them): when a long prompt arrives while three calls
 * decode, their decode rows run in a call of their own (step() splits the
 * step), so they are computed as they would be without the newcomer:
 * their texts equal those of the same three calls run without it, and the
 * newcomer's text equals its own solo run (this checks the split's
 * bookkeeping: which call's logits each sample reads). Without the split
 * the decode rows share a micro-batch with the prompt's rows and take the
 * tiled kernel: other rounding, rarely enough to change 24 sampled tokens
 * of this tiny model, and over a large cache dense attention over every
 * cell (the cost that made the split, docs/performance.md). Arrival is
 * timed, so the run is repeated until the newcomer's prompt met decoding
 * calls (n_split_steps); every run must match. Cells stay under 256 (ggml
 * pads the cache view to 256; one-row steps past 512 take yet another
 * kernel). */
/* An urgent call that arrives while a step of unseeded calls computes
 * stops that step (abort_cb) instead of waiting for it: one long prefill
 * step (3000 tokens in one llama_decode) is under way when the urgent call
 * comes; the step is stopped, the urgent call runs, and the long call
 * then computes its whole prompt once (its stopped cells were removed),
 * and finishes. */
static void test_urgent_stops_step(void **state)
{
    (void)state;
    enum { WORDS = 3000 };
    char *big = malloc(WORDS * 6 + 1);
    assert_non_null(big);
    big[0] = 0;
    for (int i = 0; i < WORDS; i++) strcat(big, i % 2 ? "ocean " : "river ");
    struct call_opts lo = {.agent = "batch", .user = big, .temperature = 0.0f,
                           .max_tokens = 4, .unseeded = true};
    struct call_opts ur = {.agent = "ui", .user = "ok", .temperature = 0.0f, .max_tokens = 2,
                           .priority = 10, .unseeded = true};
    struct eng t;
    eng_open_ctx(&t, 8192, "      n_batch: 8192\n      prefill_chunk: 8192\n      retain: false\n", NULL);
    struct llm_engine_stats st0 = {0};
    assert_int_equal(llm_engine_get_stats(t.core, &st0), 0);
    struct syscall *b = submit(&t, &lo);
    /* its one prefill step has begun (n_steps is published as a step
     * begins) and takes a while: the urgent call comes during it, not in
     * time to be admitted into it */
    for (int i = 0; i < 20000; i++) {
        struct llm_engine_stats s1;
        assert_int_equal(llm_engine_get_stats(t.core, &s1), 0);
        if (s1.n_steps > st0.n_steps) break;
        usleep(500);
    }
    struct syscall *u = submit(&t, &ur);
    struct llm_res *ru = run(u);
    assert_int_equal(ru->n_gen, 2);
    bool long_done = is_final(b);
    struct llm_res *rb = run(b);
    struct llm_engine_stats st = {0};
    for (int i = 0; i < 200 && st.n_calls < 2; i++) {
        assert_int_equal(llm_engine_get_stats(t.core, &st), 0);
        usleep(5000);
    }
    print_message("urgent stop: %llu aborted steps, long call done first: %d, prompt %d computed %d\n",
                  (unsigned long long)st.n_aborted_steps, long_done, rb->n_prompt, rb->n_prompt_computed);
    assert_false(long_done);
    assert_int_equal(st.n_aborted_steps, 1);
    assert_true(rb->n_prompt > 2500);
    assert_int_equal(rb->n_prompt_computed, rb->n_prompt);
    assert_int_equal(st.n_tokens_prefilled, (uint64_t)(rb->n_prompt + ru->n_prompt));
    assert_true(rb->n_gen >= 1);
    syscall_unref(u);
    syscall_unref(b);
    eng_close(&t);
    free(big);
}

static void test_split_decode_from_prefill(void **state)
{
    (void)state;
    const char *knobs = "      retain: false\n      batch_invariant: false\n      n_parallel: 4\n";
    struct call_opts o[3];
    for (int i = 0; i < 3; i++)
        o[i] = (struct call_opts){.agent = (const char *[]){"s1", "s2", "s3"}[i], .user = g_users[i],
                                  .temperature = 0.9f, .seed = 21u + (uint32_t)i, .max_tokens = 24};
    char long_user[2048] = "";
    for (int i = 0; i < 12; i++) strcat(long_user, "please summarise the plan in detail, ");
    struct call_opts late = {.agent = "s4", .user = long_user, .temperature = 0.9f, .seed = 3,
                             .max_tokens = 4};
    /* the reference: the three alone together (all submitted, then started) */
    struct eng t;
    eng_create(&t, 2048, knobs, NULL, false);
    struct syscall *sc[4];
    for (int i = 0; i < 3; i++) sc[i] = submit(&t, &o[i]);
    eng_start(&t);
    char *ref[4];
    for (int i = 0; i < 3; i++) {
        ref[i] = strdup(run(sc[i])->text);
        syscall_unref(sc[i]);
    }
    /* and the late call alone: its prompt is cut the same way alone or
     * after decode rows (a whole 64-row tile, then the rest) */
    ref[3] = run_text(&t, &late);
    eng_close(&t);
    bool split = false;
    for (int attempt = 0; attempt < 8 && !split; attempt++) {
        eng_create(&t, 2048, knobs, NULL, false);
        for (int i = 0; i < 3; i++) sc[i] = submit(&t, &o[i]);
        eng_start(&t);
        /* the long prompt comes once all three decode (step 1 is their prefill) */
        struct llm_engine_stats st;
        for (int w = 0; w < 20000; w++) {
            llm_engine_get_stats(t.core, &st);
            if (st.n_steps >= 2) break;
            usleep(100);
        }
        sc[3] = submit(&t, &late);
        for (int i = 0; i < 4; i++) {
            struct llm_res *r = run(sc[i]);
            assert_string_equal(r->text, ref[i]);
            if (i == 3) assert_true(r->n_prompt > 64);
            syscall_unref(sc[i]);
        }
        llm_engine_get_stats(t.core, &st);
        split = st.n_split_steps > 0;
        eng_close(&t);
    }
    assert_true(split);
    for (int i = 0; i < 4; i++) free(ref[i]);
}

/* batch_invariant off under KV pressure: six calls that together need
 * three times the cache, four at a time, long prompts arriving while
 * others decode. Steps are split (decode rows apart from prefill rows) and
 * a later part of a step can find no room after an earlier part was
 * applied; every call must still finish with all its tokens. */
static void test_split_steps_under_kv_pressure(void **state)
{
    (void)state;
    struct eng t;
    eng_create(&t, 512,
               "      retain: false\n      batch_invariant: false\n      n_parallel: 4\n"
               "      kv_size: 512\n",
               NULL, false);
    char user[6][1024];
    struct syscall *sc[6];
    for (int i = 0; i < 6; i++) {
        user[i][0] = 0;
        for (int w = 0; w < 10 + 3 * i; w++) strcat(user[i], "explain each step of the plan, ");
        struct call_opts o = {.agent = (const char *[]){"p1", "p2", "p3", "p4", "p5", "p6"}[i],
                              .user = user[i], .temperature = 0.9f, .seed = 40u + (uint32_t)i,
                              .max_tokens = 160};
        sc[i] = submit(&t, &o);
    }
    eng_start(&t);
    int total = 0;
    for (int i = 0; i < 6; i++) {
        struct llm_res *r = run(sc[i]);
        assert_true(r->n_prompt > 64);
        assert_true(r->n_gen >= 1 && r->n_gen <= 160);
        total += r->n_prompt + r->n_gen;
        syscall_unref(sc[i]);
    }
    struct llm_engine_stats st;
    llm_engine_get_stats(t.core, &st);
    print_message("kv pressure: %d cells of calls in a 512-cell cache; %llu steps, %llu split, "
                  "%llu preemptions\n", total, (unsigned long long)st.n_steps,
                  (unsigned long long)st.n_split_steps, (unsigned long long)st.n_preemptions);
    assert_true(total > 2 * 512);
    assert_true(st.n_split_steps > 0);
    assert_true(st.n_preemptions > 0);
    assert_int_equal(st.n_resumes, st.n_preemptions);
    eng_close(&t);
}

/* batch_invariant "seeded" (the default): calls without a seed prefill in
 * whole 64-row tiles (ggml's tiled flash attention: faster, other
 * rounding); a seeded call never goes in such a call and never reuses
 * cells computed there, so it gives its cold-engine text beside them:
 * - after an unseeded call of the same agent and prompt (retained cells
 *   that would cover all but one token of its prompt): nothing reused;
 * - its next turn reuses its own (exact) cells and still answers as cold;
 * - submitted together with an unseeded call sharing a long system prompt:
 *   neither waits for nor shares the other's cells. */
static void test_seeded_beside_unseeded(void **state)
{
    (void)state;
    char sys[2048] = "You are a careful agent. Tools: ";
    for (int i = 0; i < 30; i++) {
        char w[64];
        snprintf(w, sizeof w, "tool_%d searches the archive %d; ", i, i);
        strcat(sys, w);
    }
    struct call_opts seeded = {.agent = "s", .system = sys, .user = g_users[1],
                               .temperature = 0.9f, .seed = 77, .max_tokens = 24};
    struct call_opts unseeded = seeded;
    unseeded.unseeded = true;
    unseeded.temperature = 0.0f;
    const char *knobs = "      n_parallel: 4\n";
    struct eng t;
    /* references, each on a cold engine */
    eng_open(&t, knobs, NULL);
    char *ref = run_text(&t, &seeded);
    eng_close(&t);
    struct call_opts next = seeded;
    next.assistant = ref;
    next.user2 = "and then?";
    eng_open(&t, knobs, NULL);
    char *ref_next = run_text(&t, &next);
    eng_close(&t);

    eng_open(&t, knobs, NULL);
    struct syscall *u = submit(&t, &unseeded);
    struct llm_res *r = run(u);
    assert_true(r->n_prompt > 128);
    syscall_unref(u);
    struct llm_engine_stats st;
    llm_engine_get_stats(t.core, &st);
    assert_true(st.n_rows_tiled >= 128); /* the unseeded prompt went in tiles */
    uint64_t tiled = st.n_rows_tiled;
    struct syscall *s = submit(&t, &seeded);
    r = run(s);
    assert_string_equal(r->text, ref);
    assert_int_equal(r->n_prompt_computed, r->n_prompt); /* nothing of u's */
    syscall_unref(s);
    s = submit(&t, &next);
    r = run(s);
    assert_string_equal(r->text, ref_next);
    assert_true(r->n_prompt_computed < r->n_prompt / 4); /* its own turn reused */
    syscall_unref(s);
    llm_engine_get_stats(t.core, &st);
    assert_int_equal(st.n_rows_tiled, tiled); /* seeded prompts never in tiles */
    eng_close(&t);

    /* another agent's retained conversation computed in tiles is not
     * shared with a seeded call; a seeded one is, and an unseeded call
     * shares what it finds */
    eng_open(&t, knobs, NULL);
    unseeded.agent = "u3";
    free(run_text(&t, &unseeded));
    for (int i = 0; i < 2; i++) {
        seeded.agent = i ? "s4" : "s3";
        s = submit(&t, &seeded);
        r = run(s);
        assert_string_equal(r->text, ref);
        if (i == 0) assert_int_equal(r->n_prompt_computed, r->n_prompt);
        else assert_true(r->n_prompt_computed < r->n_prompt / 4);
        syscall_unref(s);
    }
    unseeded.agent = "u4";
    u = submit(&t, &unseeded);
    r = run(u);
    assert_true(r->n_prompt_computed < r->n_prompt / 4);
    syscall_unref(u);
    eng_close(&t);

    /* together, sharing the system prompt; other agents, nothing retained */
    eng_create(&t, 2048, knobs, NULL, false);
    unseeded.agent = "u2";
    seeded.agent = "s2";
    u = submit(&t, &unseeded);
    s = submit(&t, &seeded);
    eng_start(&t);
    r = run(s);
    assert_string_equal(r->text, ref);
    assert_int_equal(r->n_prompt_computed, r->n_prompt);
    r = run(u);
    assert_int_equal(r->n_prompt_computed, r->n_prompt);
    syscall_unref(s);
    syscall_unref(u);
    eng_close(&t);
    free(ref);
    free(ref_next);
}

/* the engine's padded steps once n_calls calls are counted (statistics
 * are published after the step that finished them) */
static uint64_t padded_steps(struct eng *t, uint64_t n_calls)
{
    struct llm_engine_stats st = {0};
    for (int i = 0; i < 400; i++) {
        assert_int_equal(llm_engine_get_stats(t->core, &st), 0);
        if (st.n_calls >= n_calls) break;
        usleep(5000);
    }
    assert_int_equal(st.n_calls, n_calls);
    return st.n_padded_steps;
}

/* A seeded call decoding alone gets a padding row in every step, short
 * or long (step()), so its rows never go in a one-row llama_decode call
 * (ggml's KV-split attention for one row past 512 cells, and dot products
 * where two rows or more take GEMMs); padded_steps counts them. */
static void test_lone_seeded_row_padded(void **state)
{
    (void)state;
    char *big = malloc(8000);
    assert_non_null(big);
    big[0] = 0;
    for (int i = 0; i < 400; i++) strcat(big, i % 2 ? "ocean " : "river ");
    struct call_opts shrt = {.agent = "s", .user = "tell me a story about a cat", .temperature = 0.9f,
                             .seed = 7, .max_tokens = 24};
    struct call_opts lng = {.agent = "l", .user = big, .temperature = 0.9f, .seed = 8,
                            .max_tokens = 6};
    struct eng t;
    eng_open(&t, "      retain: false\n", NULL);
    struct syscall *sc = submit(&t, &shrt);
    struct llm_res *r = run(sc);
    char *solo = strdup(r->text);
    int solo_gen = r->n_gen;
    syscall_unref(sc);
    assert_true(solo_gen >= 4);
    assert_true(padded_steps(&t, 1) >= (uint64_t)solo_gen - 1);
    sc = submit(&t, &lng);
    r = run(sc);
    assert_true(r->n_prompt > 300);
    int long_gen = r->n_gen;
    syscall_unref(sc);
    assert_true(padded_steps(&t, 2) >= (uint64_t)(solo_gen - 1 + long_gen - 1));
    eng_close(&t);

    free(solo);
    free(big);
}

static void test_shared_prefix(void **state)
{
    (void)state;
    char sys[4096] = "You are one of many agents. Rules: ";
    for (int i = 0; i < 40; i++) {
        char b[64];
        snprintf(b, sizeof b, "rule %d says be kind and exact; ", i);
        strcat(sys, b);
    }
    struct eng t;
    eng_open(&t, "      n_parallel: 4\n      retain: false\n", NULL);
    struct syscall *sc[4];
    const char *agents[4] = {"a1", "a2", "a3", "a4"};
    for (int i = 0; i < 4; i++) {
        struct call_opts o = {.agent = agents[i], .system = sys, .user = g_users[i],
                              .temperature = 0.7f, .seed = 9, .max_tokens = 8};
        sc[i] = submit(&t, &o);
    }
    int computed = 0, total = 0;
    char *text[4];
    for (int i = 0; i < 4; i++) {
        struct llm_res *r = run(sc[i]);
        computed += r->n_prompt_computed;
        total += r->n_prompt;
        text[i] = strdup(r->text);
    }
    int n_sys = sc[0] ? ((struct llm_res *)sc[0]->res)->n_prompt - 10 : 0;
    print_message("shared prefix: %d prompt tokens, %d computed (system part ~%d)\n", total,
                  computed, n_sys);
    /* the system prompt (hundreds of tokens) is computed once, not 4 times */
    assert_true(computed < total - 2 * n_sys);
    eng_close(&t);
    /* and the answers are those of unshared runs */
    eng_open(&t, "      n_parallel: 1\n      retain: false\n", NULL);
    for (int i = 0; i < 4; i++) {
        struct call_opts o = {.agent = agents[i], .system = sys, .user = g_users[i],
                              .temperature = 0.7f, .seed = 9, .max_tokens = 8};
        char *r = run_text(&t, &o);
        assert_string_equal(r, text[i]);
        free(r);
        free(text[i]);
        syscall_unref(sc[i]);
    }
    eng_close(&t);
}

static void test_penalties(void **state)
{
    (void)state;
    struct eng t;
    eng_open(&t, "      retain: false\n", NULL);
    struct call_opts o = {.user = "repeat after me: la la la la", .temperature = 0.0f,
                          .max_tokens = 40};
    char *plain = run_text(&t, &o);
    o.repeat_penalty = 1.5f;
    o.frequency_penalty = 1.0f;
    o.presence_penalty = 1.0f;
    char *pen1 = run_text(&t, &o);
    char *pen2 = run_text(&t, &o);
    assert_string_equal(pen1, pen2);
    assert_string_not_equal(plain, pen1);
    free(plain);
    free(pen1);
    free(pen2);
    eng_close(&t);
}

static void test_cancel_and_stop(void **state)
{
    (void)state;
    struct eng t;
    eng_open(&t, "      n_parallel: 2\n", NULL);
    struct call_opts o = {.user = "go on forever", .temperature = 1.0f, .seed = 1,
                          .max_tokens = 1500};
    struct syscall *a = submit(&t, &o);
    struct syscall *b = submit(&t, &o);
    struct syscall *c = submit(&t, &o); /* waits for a slot */
    usleep(20000);
    syscall_request_cancel(a);
    assert_int_equal(wait_final(a), SYSCALL_STATUS_CANCELLED);
    assert_int_equal(a->http_status, 499);
    /* c gets a's slot */
    struct llm_engine_stats st;
    for (int i = 0; i < 100; i++) {
        pthread_mutex_lock(&c->mu);
        enum syscall_status s = c->status;
        pthread_mutex_unlock(&c->mu);
        if (s == SYSCALL_STATUS_RUNNING || syscall_status_final(s)) break;
        usleep(5000);
    }
    sched_shutdown(t.sched);
    assert_int_equal(wait_final(b), SYSCALL_STATUS_ERROR);
    assert_int_equal(b->http_status, 503);
    assert_int_equal(wait_final(c), SYSCALL_STATUS_ERROR);
    assert_int_equal(c->http_status, 503);
    t.core->ops->stop(t.core);
    llm_engine_get_stats(t.core, &st);
    assert_int_equal(st.n_running, 0);
    syscall_unref(a);
    syscall_unref(b);
    syscall_unref(c);
    eng_close(&t);
}

static void test_bad_knobs(void **state)
{
    (void)state;
    const char *bad[] = {"      n_parallel: 0\n", "      n_parallel: many\n",
                         "      kv_size: 100\n", "      retain: 3\n", "      n_batch: 4\n",
                         "      n_batch: 16\n      n_parallel: 32\n", "      retain_max: -1\n",
                         "      batch_invariant: \"always\"\n", "      batch_invariant: 1\n"};
    const char *key[] = {"n_parallel", "n_parallel", "kv_size", "retain", "n_batch", "n_batch",
                         "retain_max", "batch_invariant: expected true, false or \"seeded\", got always",
                         "batch_invariant"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct aios_config cfg;
        char yaml[1024], err[512] = "";
        snprintf(yaml, sizeof yaml,
                 "llms:\n  models:\n    - name: t\n      backend: llamacpp\n      path: %s\n%s",
                 g_model, bad[i]);
        assert_int_equal(config_load_string(&cfg, yaml, strlen(yaml), err, sizeof err), 0);
        struct llm_core *c = NULL;
        assert_int_equal(llm_llama_create(&c, &cfg.models[0], &cfg, err, sizeof err), AIOS_ECONFIG);
        assert_null(c);
        assert_non_null(strstr(err, key[i]));
        assert_non_null(strstr(err, "llms.models[0]"));
        config_free(&cfg);
    }
}

/* A model whose one-row calls multiply matrices bit for bit as calls of
 * more rows do (Q8_0 weights; the engine asks at load, lone_row_check)
 * has a lone seeded row padded only where attention would split its
 * cells (more than one thread and 512 cells), and the call's text alone
 * is still its text in a batch of 4. The tiny F32 model's
 * one-row calls round otherwise: there it is padded (previous test). */
static void test_lone_row_exact_unpadded(void **state)
{
    (void)state;
    struct eng t;
    struct llm_engine_stats st;
    eng_open(&t, "      retain: false\n", NULL);
    assert_int_equal(llm_engine_get_stats(t.core, &st), 0);
    assert_false(st.lone_row_exact); /* F32 */
    eng_close(&t);

    char q8[300], err[256];
    snprintf(q8, sizeof q8, "%s/tiny-q8.gguf", g_dir);
    if (testmodel_create(q8, TESTMODEL_SHAPE_TINY_Q8, 0, 2, err, sizeof err))
        fail_msg("tiny-q8: %s", err);
    g_use_model = q8;
    eng_open(&t, "      retain: false\n", NULL);
    assert_int_equal(llm_engine_get_stats(t.core, &st), 0);
    assert_true(st.lone_row_exact);
    struct call_opts o[4];
    for (int i = 0; i < 4; i++)
        o[i] = (struct call_opts){.agent = "q", .user = g_users[i + 1], .temperature = 0.9f,
                                  .seed = 40u + (uint32_t)i, .max_tokens = 24};
    struct syscall *sc = submit(&t, &o[0]);
    struct llm_res *r = run(sc);
    char *solo = strdup(r->text);
    assert_true(r->n_gen >= 4);
    syscall_unref(sc);
    assert_int_equal(padded_steps(&t, 1), 0);
    eng_close(&t);

    /* the same call admitted with three others */
    eng_create(&t, 2048, "      retain: false\n", NULL, false);
    struct syscall *b[4];
    for (int i = 0; i < 4; i++) b[i] = submit(&t, &o[i]);
    eng_start(&t);
    for (int i = 0; i < 4; i++) run(b[i]);
    assert_string_equal(((struct llm_res *)b[0]->res)->text, solo);
    for (int i = 0; i < 4; i++) syscall_unref(b[i]);
    eng_close(&t);

    /* on two threads, a lone row over 512 cells or more is padded (the
     * split attention), one over fewer is not */
    g_eng_threads = 2;
    eng_open(&t, "      retain: false\n", NULL);
    sc = submit(&t, &o[0]);
    run(sc);
    syscall_unref(sc);
    assert_int_equal(padded_steps(&t, 1), 0);
    char *big = malloc(8000);
    assert_non_null(big);
    big[0] = 0;
    for (int i = 0; i < 400; i++) strcat(big, i % 2 ? "ocean " : "river ");
    struct call_opts lng = {.agent = "l", .user = big, .temperature = 0.9f, .seed = 8, .max_tokens = 6};
    sc = submit(&t, &lng);
    r = run(sc);
    assert_true(r->n_prompt > 300 && r->n_gen >= 2);
    int long_gen = r->n_gen;
    syscall_unref(sc);
    assert_true(padded_steps(&t, 2) >= (uint64_t)long_gen - 1);
    eng_close(&t);
    free(big);
    g_eng_threads = 1;
    g_use_model = NULL;
    unlink(q8);
    free(solo);
}

/* ---- retained conversations under the KV budget ----
 *
 * Prefix sharing is off (prefix_share_min huge) so every sequence owns its
 * cells and the arithmetic is exact; prompt lengths and solo answers come
 * from a cold engine first. A retained conversation holds n_prompt + n_gen
 * - 1 cells (the last token sampled is never fed). */

#define NO_SHARING "      prefix_share_min: 1000000\n"
#define EVICT_N_CTX 256

static const char *g_evict_users[] = {"first question from alice", "first question from bob",
                                      "carol asks something", "dave asks something else",
                                      "eve wants a long answer", "frank wants one too"};

static struct call_opts evict_call(size_t i, const char *agent, int max_tokens)
{
    struct call_opts o = {.agent = agent, .user = g_evict_users[i], .temperature = 0.8f,
                          .seed = 10 + (uint32_t)i, .max_tokens = max_tokens};
    return o;
}

/* prompt length and solo answer of call i with max_tokens */
static void solo_ref(size_t i, int max_tokens, int *n_prompt, char **text)
{
    struct eng t;
    eng_open_ctx(&t, EVICT_N_CTX, "      retain: false\n      n_parallel: 1\n" NO_SHARING, NULL);
    struct call_opts o = evict_call(i, "ref", max_tokens);
    struct syscall *sc = submit(&t, &o);
    struct llm_res *r = run(sc);
    *n_prompt = r->n_prompt;
    if (text) *text = strdup(r->text);
    if (max_tokens > 1) assert_int_equal(r->n_gen, max_tokens); /* no early end */
    syscall_unref(sc);
    eng_close(&t);
}

/* the engine's statistics once it published the end of call number
 * n_calls (a call is final before the engine thread publishes) */
static void stats_after(struct eng *t, uint64_t n_calls, struct llm_engine_stats *st)
{
    for (int i = 0; i < 2000; i++) {
        llm_engine_get_stats(t->core, st);
        if (st->n_calls >= n_calls && st->n_running == 0) return;
        usleep(1000);
    }
    fail_msg("the engine did not publish call %llu", (unsigned long long)n_calls);
}

/* Slot pressure: with retain_max 0 the engine has only its running ids
 * (n_parallel plus the urgent lane's), and agents finish one after
 * another until a new one finds every id holding a retained conversation:
 * it takes the least recently used one (the first agent's). That agent's
 * next turn recomputes its whole prompt and answers exactly as a cold
 * engine does, while the second agent, whose conversation stayed, reuses
 * it. */
static void test_lru_eviction_slots(void **state)
{
    (void)state;
    struct eng t;
    eng_open_ctx(&t, EVICT_N_CTX, "      n_parallel: 1\n      retain_max: 0\n" NO_SHARING, NULL);
    char agent[16][16], *t1[16] = {0};
    int n = 0;
    struct llm_engine_stats st = {0};
    for (n = 0; n < 16 && st.n_evictions == 0; n++) {
        snprintf(agent[n], sizeof agent[n], "agent%d", n);
        struct call_opts o = evict_call((size_t)n % 6, agent[n], 16);
        o.seed = 100 + (uint32_t)n;
        struct syscall *sc = submit(&t, &o);
        struct llm_res *r = run(sc);
        t1[n] = strdup(r->text);
        assert_int_equal(r->n_prompt_computed, r->n_prompt); /* nothing to reuse */
        syscall_unref(sc);
        stats_after(&t, (uint64_t)n + 1, &st);
    }
    print_message("slot pressure: the first eviction came with agent %d\n", n - 1);
    assert_int_equal(st.n_evictions, 1);
    assert_true(n >= 3); /* at least two ids kept conversations */
    assert_int_equal(st.n_retained, n - 1);

    /* agent1's second turn extends its retained conversation */
    struct call_opts b2 = evict_call(1, agent[1], 12);
    b2.seed = 101;
    b2.assistant = t1[1];
    b2.user2 = "and then?";
    struct syscall *sb = submit(&t, &b2);
    struct llm_res *rb = run(sb);
    assert_true(rb->n_prompt - rb->n_prompt_computed >= 11); /* its first prompt, at least */
    /* agent0's was evicted: all of it is computed again (and it evicts the
     * LRU now) */
    struct call_opts a2 = evict_call(0, agent[0], 12);
    a2.seed = 100;
    a2.assistant = t1[0];
    a2.user2 = "and then?";
    struct syscall *sa = submit(&t, &a2);
    struct llm_res *ra = run(sa);
    assert_int_equal(ra->n_prompt_computed, ra->n_prompt);
    char *warm_a = strdup(ra->text), *warm_b = strdup(rb->text);
    stats_after(&t, (uint64_t)n + 2, &st);
    assert_int_equal(st.n_evictions, 2);
    assert_int_equal(st.n_retained_hits, 1);
    assert_int_equal(st.n_preemptions, 0);
    syscall_unref(sa);
    syscall_unref(sb);
    eng_close(&t);

    /* the same turns on a cold engine: the same answers */
    eng_open_ctx(&t, EVICT_N_CTX, "      retain: false\n" NO_SHARING, NULL);
    char *cold_a = run_text(&t, &a2), *cold_b = run_text(&t, &b2);
    assert_string_equal(warm_a, cold_a);
    assert_string_equal(warm_b, cold_b);
    eng_close(&t);
    free(cold_a);
    free(cold_b);
    free(warm_a);
    free(warm_b);
    for (int i = 0; i < n; i++) free(t1[i]);
}

/* KV cells run out: retained conversations go first, least recently used
 * first, and only when none is left is a running sequence switched out;
 * every call still ends with all its tokens.
 *
 * Texts are not compared with solo runs here: once an eviction frees cells
 * below the ones a running sequence already holds, its next tokens land
 * there, and flash attention, which sums over cells in index order, rounds
 * differently; a seeded answer then drifts from its solo run after some
 * tokens (measured: a single call, no preemption, matched its solo run for
 * 470 of 767 bytes). Where the cache has room (test_lru_eviction_slots,
 * test_retention) answers are exact. */
static void test_kv_full_evicts_retained_first(void **state)
{
    (void)state;
    int p[6];
    const int g_ab = 40;
    for (size_t i = 0; i < 6; i++) solo_ref(i, 1, &p[i], NULL);

    struct eng t;
    eng_open_ctx(&t, EVICT_N_CTX, "      n_parallel: 4\n      kv_size: 256\n" NO_SHARING, NULL);
    struct llm_engine_stats st;
    llm_engine_get_stats(t.core, &st);
    const int kv = st.kv_size;
    print_message("kv_size %d, prompts %d %d %d %d %d %d\n", kv, p[0], p[1], p[2], p[3], p[4], p[5]);
    const int cells_a = p[0] + g_ab - 1, cells_b = p[1] + g_ab - 1;
    /* carol + dave together: more than is free beside alice and bob, no more
     * than is free beside bob alone (a margin of 2 cells either way) */
    int g_cd = (kv - cells_b - 2 - p[2] - p[3]) / 2;
    assert_true(p[2] + g_cd + p[3] + g_cd > kv - cells_a - cells_b + 2);
    assert_true(p[2] + g_cd <= EVICT_N_CTX && g_cd > 8);
    /* eve + frank: more than the whole cache, each alone fits */
    int g_ef = (kv - p[4] - p[5]) / 2 + 8;
    assert_true(p[4] + g_ef <= EVICT_N_CTX && p[5] + g_ef <= EVICT_N_CTX);

    /* alice, then bob: two retained conversations, alice the older */
    const char *agents[] = {"alice", "bob", "carol", "dave", "eve", "frank"};
    char *t1[2];
    for (size_t i = 0; i < 2; i++) {
        struct call_opts o = evict_call(i, agents[i], g_ab);
        struct syscall *sc = submit(&t, &o);
        struct llm_res *r = run(sc);
        assert_int_equal(r->n_gen, g_ab);
        t1[i] = strdup(r->text);
        syscall_unref(sc);
    }
    stats_after(&t, 2, &st);
    assert_int_equal(st.n_retained, 2);
    assert_int_equal(st.n_evictions, 0);

    /* carol and dave at once: the cache fills; alice's conversation (the
     * LRU) is evicted, nothing running is switched out */
    struct call_opts oc = evict_call(2, "carol", g_cd), od = evict_call(3, "dave", g_cd);
    struct syscall *sc = submit(&t, &oc), *sd = submit(&t, &od);
    assert_int_equal(run(sc)->n_gen, g_cd);
    assert_int_equal(run(sd)->n_gen, g_cd);
    stats_after(&t, 4, &st);
    assert_int_equal(st.n_evictions, 1);
    assert_int_equal(st.n_preemptions, 0);
    syscall_unref(sc);
    syscall_unref(sd);

    /* bob kept his cells: his next turn reuses them; alice recomputes */
    struct call_opts b2 = evict_call(1, "bob", 8), a2 = evict_call(0, "alice", 8);
    b2.assistant = t1[1];
    b2.user2 = "go on";
    a2.assistant = t1[0];
    a2.user2 = "go on";
    struct syscall *sb = submit(&t, &b2);
    struct llm_res *rb = run(sb);
    /* (the first turn's prompt at least: the answer's text, tokenised
     * again, need not give the tokens that were sampled) */
    print_message("bob's second turn: prompt %d, reused %d\n", rb->n_prompt,
                  rb->n_prompt - rb->n_prompt_computed);
    assert_true(rb->n_prompt - rb->n_prompt_computed >= p[1] - 1);
    struct syscall *sa = submit(&t, &a2);
    struct llm_res *ra = run(sa);
    assert_int_equal(ra->n_prompt_computed, ra->n_prompt);
    assert_int_equal(ra->n_gen, 8);
    syscall_unref(sa);
    syscall_unref(sb);

    /* eve and frank need more than the whole cache: every retained
     * conversation goes, then one of them is switched out and resumed */
    stats_after(&t, 6, &st);
    uint64_t ev0 = st.n_evictions;
    int retained0 = st.n_retained;
    assert_true(retained0 >= 2);
    struct call_opts oe = evict_call(4, "eve", g_ef), of = evict_call(5, "frank", g_ef);
    struct syscall *se = submit(&t, &oe), *sf = submit(&t, &of);
    assert_int_equal(run(se)->n_gen, g_ef);
    assert_int_equal(run(sf)->n_gen, g_ef);
    stats_after(&t, 8, &st);
    print_message("kv full: %llu evictions, %llu preemptions, %llu resumes\n",
                  (unsigned long long)st.n_evictions, (unsigned long long)st.n_preemptions,
                  (unsigned long long)st.n_resumes);
    assert_true(st.n_evictions >= ev0 + (uint64_t)retained0 - 2); /* two slots were free */
    assert_true(st.n_preemptions >= 1);
    assert_int_equal(st.n_resumes, st.n_preemptions);
    syscall_unref(se);
    syscall_unref(sf);
    eng_close(&t);
    for (size_t i = 0; i < 2; i++) free(t1[i]);
}

/* KV cells run out while one agent waits on a tool: the engine gives up
 * the conversation of the agent expected back last. bob answers, then
 * calls a tool the scheduler expects to end in a minute (a TOOL syscall
 * running, with sched_set_expected_end, as the tool manager marks it);
 * alice answers after him and goes idle. carol's call needs the cells of
 * one of them: alice's go (least recently used would take bob's, the
 * older), and bob's next turn reuses his while alice recomputes hers. */
static void test_kv_full_keeps_tool_waiters(void **state)
{
    (void)state;
    int p[3];
    const int g_ab = 40;
    for (size_t i = 0; i < 3; i++) solo_ref(i, 1, &p[i], NULL);

    struct eng t;
    eng_open_ctx(&t, EVICT_N_CTX, "      n_parallel: 4\n      kv_size: 256\n" NO_SHARING, NULL);
    struct llm_engine_stats st;
    llm_engine_get_stats(t.core, &st);
    const int kv = st.kv_size;
    const int cells_a = p[0] + g_ab - 1, cells_b = p[1] + g_ab - 1;
    const int max_ab = cells_a > cells_b ? cells_a : cells_b;
    /* carol: more than is free beside both, no more than beside either */
    const int g_c = kv - max_ab - 2 - p[2];
    assert_true(p[2] + g_c > kv - cells_a - cells_b + 2);
    assert_true(p[2] + g_c <= EVICT_N_CTX && g_c > 8);

    /* bob, then alice: bob's conversation is the older */
    const char *agents[] = {"alice", "bob"};
    char *t1[2];
    for (size_t k = 0; k < 2; k++) {
        size_t i = 1 - k;
        struct call_opts o = evict_call(i, agents[i], g_ab);
        struct syscall *sc = submit(&t, &o);
        struct llm_res *r = run(sc);
        assert_int_equal(r->n_gen, g_ab);
        t1[i] = strdup(r->text);
        syscall_unref(sc);
    }
    stats_after(&t, 2, &st);
    assert_int_equal(st.n_retained, 2);

    /* bob's tool call, running (a pool thread took it), due in an hour */
    struct syscall *tool = syscall_new(SYSCALL_KIND_TOOL, "bob", NULL, NULL, NULL);
    assert_non_null(tool);
    assert_int_equal(sched_submit(t.sched, tool), 0);
    struct syscall *taken = sched_next(t.sched, SYSCALL_KIND_TOOL, NULL, 0);
    assert_ptr_equal(taken, tool);
    const int64_t t_end = util_now_us() + 3600 * 1000000LL;
    sched_set_expected_end(t.sched, tool, t_end);

    struct call_opts oc = evict_call(2, "carol", g_c);
    struct syscall *sc = submit(&t, &oc);
    assert_int_equal(run(sc)->n_gen, g_c);
    stats_after(&t, 3, &st);
    assert_int_equal(st.n_evictions, 1);
    assert_int_equal(st.n_preemptions, 0);
    syscall_unref(sc);

    /* bob kept his cells; alice's were the ones given up */
    struct call_opts b2 = evict_call(1, "bob", 8), a2 = evict_call(0, "alice", 8);
    b2.assistant = t1[1];
    b2.user2 = "go on";
    a2.assistant = t1[0];
    a2.user2 = "go on";
    struct syscall *sb = submit(&t, &b2);
    struct llm_res *rb = run(sb);
    print_message("bob's second turn: prompt %d, reused %d\n", rb->n_prompt,
                  rb->n_prompt - rb->n_prompt_computed);
    assert_true(rb->n_prompt - rb->n_prompt_computed >= p[1] - 1);
    struct syscall *sa = submit(&t, &a2);
    struct llm_res *ra = run(sa);
    assert_int_equal(ra->n_prompt_computed, ra->n_prompt);
    syscall_unref(sa);
    syscall_unref(sb);

    /* the scheduler's view: a tool's agent is due when it ends, an idle
     * agent never */
    const char *who[] = {"bob", "carol", "nobody"};
    int64_t back[3];
    sched_agents_next_llm(t.sched, who, 3, back);
    assert_int_equal(back[0], t_end);
    assert_int_equal(back[1], -1);
    assert_int_equal(back[2], -1);

    syscall_finish(tool, NULL, NULL);
    sched_done(t.sched, tool);
    sched_agents_next_llm(t.sched, who, 1, back);
    assert_int_equal(back[0], -1); /* its tool is done: idle */
    syscall_unref(tool);
    eng_close(&t);
    for (size_t i = 0; i < 2; i++) free(t1[i]);
}

static int group_setup(void **state)
{
    (void)state;
    const char *t = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/aios-engine-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(g_dir)) return -1;
    snprintf(g_model, sizeof g_model, "%s/tiny.gguf", g_dir);
    char err[256];
    llm_llama_global_init();
    return testmodel_create(g_model, TESTMODEL_SHAPE_TINY, 0, 2, err, sizeof err) ? -1 : 0;
}

static int group_teardown(void **state)
{
    (void)state;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_knobs),
        cmocka_unit_test(test_batch_determinism),
        cmocka_unit_test(test_default_parallel),
        cmocka_unit_test(test_preempt_identical),
        cmocka_unit_test(test_preempt_api),
        cmocka_unit_test(test_retention),
        cmocka_unit_test(test_retention_many_agents),
        cmocka_unit_test(test_lru_eviction_slots),
        cmocka_unit_test(test_kv_full_evicts_retained_first),
        cmocka_unit_test(test_kv_full_keeps_tool_waiters),
        cmocka_unit_test(test_latency_lane),
        cmocka_unit_test(test_urgent_stops_step),
        cmocka_unit_test(test_split_decode_from_prefill),
        cmocka_unit_test(test_split_steps_under_kv_pressure),
        cmocka_unit_test(test_seeded_beside_unseeded),
        cmocka_unit_test(test_lone_seeded_row_padded),
        cmocka_unit_test(test_lone_row_exact_unpadded),
        cmocka_unit_test(test_shared_prefix),
        cmocka_unit_test(test_penalties),
        cmocka_unit_test(test_cancel_and_stop),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
