/* The embedded llama.cpp engine: continuous batching over one unified KV
 * cache, with context switching, per-agent KV retention and shared
 * prefixes.
 *
 * One engine per loaded GGUF model. It owns the llama_model (immutable,
 * shared read-only with HTTP threads for tokenising) and one llama_context
 * (touched only by the engine thread) whose KV cache is one unified pool of
 * kv_size cells shared by n_slots sequence ids: at most n_parallel of them
 * run at once, the others hold retained conversations (retain_max).
 *
 * The engine thread runs a loop; every iteration is one step:
 *   1. control: preemption requests (llm_engine_preempt), cancelled calls,
 *      kernel stop;
 *   2. resume: sequences switched out earlier get a slot back and their KV
 *      snapshot restored (context/kvsnap.c), ahead of new calls;
 *   3. admission: while a slot is free (or held only by a retained
 *      conversation), take the next LLM syscall for this core from the
 *      scheduler (blocking only when the engine has nothing else to do);
 *   4. one llama_batch: one decode token for every generating sequence
 *      and prefill chunks (at most prefill_chunk tokens per sequence,
 *      n_batch in all) of sequences still reading their prompt; decoded
 *      in one or more llama_decode calls: whole 64-row tiles of prefill
 *      that need not be batch invariant, the rest in calls of at most 63
 *      rows (see step());
 *   5. sample each sequence that got logits with its own sampler chain,
 *      stream the text, finish sequences that are done.
 * An urgent call that arrives while a step computes stops it (abort_cb;
 * its rows go again later). If llama_decode finds no room in the KV
 * cache, retained conversations are evicted (those whose agents are
 * expected back last first: idle agents' before those of agents waiting on
 * a tool, least recently used among equals; retained_victim), then the
 * youngest running sequence is switched out, and the step is
 * retried. An engine whose model was removed by POST /core/refresh
 * (core.retired) finishes what it has, then frees its context
 * (retire_release).
 *
 * Reuse of KV cells, the point of it all:
 * - retention: a finished call leaves its tokens in its slot, keyed by the
 *   agent and the token sequence. A new call of that agent whose prompt
 *   starts with those tokens takes the slot over and prefills only the rest.
 * - sharing: before a sequence prefills, the longest common prefix with any
 *   other slot (running or retained) is copied with llama_memory_seq_cp,
 *   which in a unified cache only adds the sequence id to the same cells:
 *   the prefix is stored and computed once. A sequence whose prefix is being
 *   prefilled right now by an earlier one waits for it instead of computing
 *   it again.
 * Reused tokens are reported in llm_res.n_prompt_computed.
 *
 * Determinism (batch_invariant, default "seeded": calls that give a seed;
 * true: all; false: none): each sequence has its own sampler chain, and a
 * batch-invariant call's logits depend only on its own tokens and KV cells:
 * its rows only ever go in llama_decode calls of 2 to 63 rows, where CPU
 * kernels compute a row's dot products the same way whatever else is in
 * the call and flash attention takes each query row on its own, skipping
 * masked cells; and it reuses only cells computed that way (n_exact).
 * Tests check that a seeded call gives the same tokens alone, in a batch of
 * 16, beside unseeded calls, and when preempted several times.
 *
 * Threads: llm_llama_create() and destroy() run on the main thread; prepare()
 * on HTTP threads (it only reads the model and vocab); llm_engine_preempt()
 * and the statistics on any thread (mutexes req_mu and stats_mu, leaf locks,
 * never held together or with another lock); everything else on the engine
 * thread, which alone owns the slots, the sequences and the context.
 *
 * Output text: pieces are accumulated as raw bytes; the part that cannot be
 * affected by later tokens (no pending stop-string prefix, no unfinished
 * UTF-8 sequence) is sanitised and emitted. The final answer is the
 * concatenation of what was emitted, so streamed and non-streamed results of
 * the same seed are byte-identical.
 *
 * Log probabilities (llm_params.logprobs): such a call is sampled by
 * seq_sample_lp, which runs the chain's stages one by one as
 * llama_sampler_sample would (same token) and reads the log-softmax of the
 * candidates after the grammar and the penalties, before the picking
 * stages. Each token's numbers wait beside its piece and go out (result and
 * stream aux) when its text does. */
#include "llm/core.h"

#include "context/kvsnap.h"
#include "llm/engine.h"

#include "llm/chat.h"
#include "llm/gpu.h"
#include "llm/structured.h"
#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <llama.h>

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ENGINE_MAX_SEQ 256

struct seq;

/* SLOT_PAUSED: a preempted call that kept its cells (see seq_pause) */
enum slot_kind { SLOT_FREE, SLOT_SEQ, SLOT_RETAINED, SLOT_PAUSED };

/* batch_invariant: false, "seeded" (calls that give a seed), true (all) */
enum { BI_OFF, BI_SEEDED, BI_ALL };

/* One llama sequence id. A retained slot holds a finished conversation:
 * its tokens are exactly the KV cells of that sequence id, positions
 * 0..n_toks-1. */
struct slot {
    enum slot_kind kind;
    struct seq *seq; /* SLOT_SEQ, SLOT_PAUSED */
    char *agent;     /* SLOT_RETAINED */
    int32_t *toks;
    int n_toks;
    int n_exact; /* SLOT_RETAINED: leading cells computed batch-invariantly */
    int64_t t_used_us;
};

struct preempt_req {
    uint64_t id;
    int hold_steps;
};

struct llama_engine {
    struct llm_core core;
    char *path;
    struct llama_model *model;
    const struct llama_vocab *vocab;
    struct llama_context *ctx;
    const char *tmpl; /* owned by the model */
    int n_ctx;        /* per sequence: prompt + output */
    int kv_size, n_parallel, n_slots, n_batch, prefill_chunk, n_threads;
    int prefix_share_min, debug_preempt_every;
    int urgent_prio, urgent_tokens, urgent_chunk; /* the latency lane */
    int pad_seq;    /* >= 0: the padding sequence of one-row calls (step()) */
    bool lone_exact; /* a one-row call multiplies as a two-row one does (lone_row_check) */
    /* an upper bound on the cache's used_max_p1 (one past its highest
     * cell in use): see kv_may_split() */
    int kv_hwm;
    bool kv_q8;            /* K and V cached in Q8_0 */
    int32_t pad_tok;
    int64_t t_urgent_us;                          /* last urgent admission */
    bool retain;
    int bi_mode; /* BI_OFF, BI_SEEDED, BI_ALL: which calls are batch invariant */
    bool random_weights;
    char desc[128];
    struct sched *sched;
    pthread_t thread;
    bool thread_started;
    struct ctx_store *store;

    /* engine thread only */
    struct slot slots[ENGINE_MAX_SEQ];
    struct seq *seqs, *seqs_tail; /* admission order */
    uint64_t n_admitted, n_finished_seqs;
    struct llama_batch batch;
    struct llm_engine_stats st; /* working copy */

    pthread_mutex_t req_mu; /* guards reqs */
    struct preempt_req *reqs;
    int n_reqs, cap_reqs;

    pthread_mutex_t stats_mu; /* guards pub */
    struct llm_engine_stats pub;

    int64_t t_retired_us; /* engine thread: when it first saw core.retired */

    /* KV bytes per agent, reported to the scheduler's accounting */
    int64_t cell_bytes;
    /* device offload (llm/gpu.c): the knobs, where the model went, and the
     * device memory left for KV cells at load (-1: KV not on a device) */
    struct gpu_opts gpu;
    struct gpu_plan plan;
    int64_t kv_dev_avail;
    int kv_dev_cells;   /* cells that fit there; -1: no device bound */
    bool kv_dev_limited; /* kv_size was lowered to kv_dev_cells */
    /* a step an urgent call may stop (abort_cb): set in step() around its
     * llama_decode calls; the time of the last look at the queue */
    bool step_abortable;
    bool prev_aborted; /* the last step was stopped: this one is not */
    int64_t t_abort_check_us;
    /* logprobs (seq_sample_lp): the candidates of one sampling and their
     * logits after the grammar and the penalties, n_vocab each */
    llama_token_data *lp_cand;
    float *lp_logit;
    char *kv_agents[ENGINE_MAX_SEQ]; /* agents reported non-zero last time */
    int n_kv_agents;
    int64_t t_kv_report_us;
};

/* set on the engine thread while llama_decode unwinds a step that
 * abort_cb stopped: llama.cpp reports that as errors, which it is not */
static _Thread_local bool tl_step_stopped;

static void log_cb(enum ggml_log_level level, const char *text, void *ud)
{
    (void)ud;
    if (level == GGML_LOG_LEVEL_ERROR && !tl_step_stopped) {
        size_t n = strlen(text);
        while (n && text[n - 1] == '\n') n--;
        LOG_ERROR("llama", "%.*s", (int)n, text);
    } else if (log_get_level() == LOG_LEVEL_DEBUG) {
        size_t n = strlen(text);
        while (n && text[n - 1] == '\n') n--;
        if (n) LOG_DEBUG("llama", "%.*s", (int)n, text);
    }
}

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static void global_init_once(void)
{
    llama_log_set(log_cb, NULL);
    llama_backend_init();
}

void llm_llama_global_init(void) { pthread_once(&g_once, global_init_once); }
void llm_llama_global_free(void) { llama_backend_free(); }

void llm_req_free(void *p)
{
    struct llm_req *r = p;
    if (!r) return;
    free(r->model);
    for (size_t i = 0; i < r->n_msgs; i++) {
        free(r->msgs[i].role);
        free(r->msgs[i].content);
    }
    free(r->msgs);
    for (int i = 0; i < r->p.n_stop; i++) free(r->p.stop[i]);
    free(r->grammar);
    llm_structured_free(r->structured);
    json_decref(r->memory);
    free(r->prompt);
    free(r->tokens);
    free(r->emb_lens);
    free(r);
}

void llm_res_free(void *p)
{
    struct llm_res *r = p;
    if (!r) return;
    free(r->text);
    json_decref(r->tool_calls);
    json_decref(r->logprobs);
    free(r->emb);
    free(r);
}

/* ---- prepare (HTTP threads) ---- */

static int eng_prepare(struct llm_core *c, struct llm_req *req, char *err, size_t errlen)
{
    struct llama_engine *e = c->impl;
    int rc = 0;
    struct llama_chat_message *cm = NULL;
    char *buf = NULL;
    int32_t *toks = NULL;

    cm = calloc(req->n_msgs ? req->n_msgs : 1, sizeof *cm);
    if (!cm) { rc = AIOS_ENOMEM; goto fail; }
    size_t total = 0;
    for (size_t i = 0; i < req->n_msgs; i++) {
        cm[i].role = req->msgs[i].role;
        cm[i].content = req->msgs[i].content;
        total += strlen(req->msgs[i].content) + strlen(req->msgs[i].role) + 32;
    }
    int32_t cap = (int32_t)(total * 2 + 256);
    if (total > (size_t)INT32_MAX / 4) {
        snprintf(err, errlen, "messages are too long");
        rc = AIOS_ETOOBIG;
        goto fail;
    }
    buf = malloc((size_t)cap);
    if (!buf) { rc = AIOS_ENOMEM; goto fail; }
    int32_t n = llama_chat_apply_template(e->tmpl, cm, req->n_msgs, true, buf, cap);
    if (n > cap) {
        char *nb = realloc(buf, (size_t)n + 1);
        if (!nb) { rc = AIOS_ENOMEM; goto fail; }
        buf = nb;
        cap = n + 1;
        n = llama_chat_apply_template(e->tmpl, cm, req->n_msgs, true, buf, cap);
    }
    if (n < 0) {
        snprintf(err, errlen, "model %s: its chat template is not supported", c->name);
        rc = AIOS_EINVAL;
        goto fail;
    }
    buf[n] = 0;

    int32_t nt = -llama_tokenize(e->vocab, buf, n, NULL, 0, true, true);
    if (nt <= 0 || nt == INT32_MIN) {
        snprintf(err, errlen, "could not tokenize the prompt");
        rc = AIOS_EINVAL;
        goto fail;
    }
    toks = malloc(sizeof *toks * (size_t)nt);
    if (!toks) { rc = AIOS_ENOMEM; goto fail; }
    if (llama_tokenize(e->vocab, buf, n, toks, nt, true, true) != nt) {
        snprintf(err, errlen, "could not tokenize the prompt");
        rc = AIOS_EINVAL;
        goto fail;
    }
    if (nt >= e->n_ctx) {
        snprintf(err, errlen,
                 "the prompt is %d tokens but model %s has a context of %d tokens; "
                 "shorten the messages",
                 nt, c->name, e->n_ctx);
        rc = AIOS_ETOOBIG;
        goto fail;
    }
    if (req->p.max_tokens > 0 && (int64_t)nt + req->p.max_tokens > e->n_ctx) {
        snprintf(err, errlen,
                 "prompt (%d tokens) plus max_tokens (%d) exceeds the context of model %s "
                 "(%d tokens); lower max_tokens to at most %d",
                 nt, req->p.max_tokens, c->name, e->n_ctx, e->n_ctx - nt);
        rc = AIOS_ETOOBIG;
        goto fail;
    }
    req->prompt = buf;
    req->tokens = toks;
    req->n_tokens = nt;
    free(cm);
    return 0;
fail:
    free(cm);
    free(buf);
    free(toks);
    return rc;
}

/* ---- the engine thread ---- */

/* The chain: grammar, penalties, then the stages that pick (top-k, top-p,
 * min-p, temperature, dist; or greedy). *n_pre gets how many stages come
 * before the picking ones: logprobs are read between the two (seq_sample_lp). */
static struct llama_sampler *make_sampler(struct llama_engine *e, const struct llm_req *req,
                                          int *n_pre)
{
    const struct llm_params *p = &req->p;
    struct llama_sampler_chain_params cp = llama_sampler_chain_default_params();
    cp.no_perf = true;
    struct llama_sampler *ch = llama_sampler_chain_init(cp);
    if (!ch) return NULL;
    if (req->grammar) {
        /* first, so every later stage only sees tokens the grammar allows */
        struct llama_sampler *g = llama_sampler_init_grammar(e->vocab, req->grammar, "root");
        if (!g) {
            llama_sampler_free(ch);
            return NULL;
        }
        llama_sampler_chain_add(ch, g);
    }
    float rep = p->repeat_penalty > 0.0f ? p->repeat_penalty : 1.0f;
    if (rep != 1.0f || p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f) {
        int last_n = p->penalty_last_n > 0 ? p->penalty_last_n : 64;
        llama_sampler_chain_add(ch, llama_sampler_init_penalties(llama_vocab_n_tokens(e->vocab), last_n, rep, p->frequency_penalty,
                                                                 p->presence_penalty));
    }
    *n_pre = llama_sampler_chain_n(ch);
    if (p->temperature <= 0.0f) {
        llama_sampler_chain_add(ch, llama_sampler_init_greedy());
        return ch;
    }
    if (p->top_k > 0) llama_sampler_chain_add(ch, llama_sampler_init_top_k(p->top_k));
    if (p->top_p < 1.0f) llama_sampler_chain_add(ch, llama_sampler_init_top_p(p->top_p, 1));
    if (p->min_p > 0.0f) llama_sampler_chain_add(ch, llama_sampler_init_min_p(p->min_p, 1));
    llama_sampler_chain_add(ch, llama_sampler_init_temp(p->temperature));
    uint32_t seed = p->has_seed ? p->seed : (uint32_t)(util_wall_us() ^ (uint64_t)getpid());
    llama_sampler_chain_add(ch, llama_sampler_init_dist(seed));
    return ch;
}

/* logprobs of one generated token, until its text is emitted */
struct lp_tok {
    size_t start, end; /* its piece: gen_state.raw[start..end) */
    int32_t id;
    float lp;
    int n_top;
    int32_t top_id[LLM_MAX_TOP_LOGPROBS];
    float top_lp[LLM_MAX_TOP_LOGPROBS];
};

struct gen_state {
    char *raw; /* generated bytes (before sanitising) */
    size_t n_raw, cap_raw;
    size_t n_done;  /* raw bytes already emitted */
    size_t cap_text;
    struct lp_tok *lp; /* with logprobs: every token sampled (but EOG) */
    int n_lp, cap_lp, lp_done; /* lp[0..lp_done) were emitted */
};

/* One call being served. Tokens toks[0..n_past) are in the KV cache of slot
 * `id` (or in `snap` while switched out); toks[n_past..n_toks) are still to
 * be fed: the rest of the prompt, or the one token just sampled. */
struct seq {
    struct seq *next;
    uint64_t order; /* admission order */
    struct syscall *sc;
    const struct llm_req *req;
    int id;         /* slot / llama seq id; -1 while switched out */
    int32_t *toks;
    int n_toks, cap_toks;
    int n_past, n_prompt, n_reused;
    bool matched;   /* shared-prefix lookup done */
    bool exact;     /* batch invariant: computed only in per-row calls */
    int n_exact;    /* leading cells computed that way (== n_past if exact) */
    int n_plan;     /* this step: tokens planned (step()) */
    struct llama_sampler *smpl;
    int n_pre; /* stages of smpl before the picking ones (make_sampler) */
    struct gen_state g;
    struct llm_res *res;
    int max_new;
    int i_out, n_feed; /* this step: batch index of its logits (-1: none), tokens fed */
    int i_feed;        /* this step: batch index of its first token fed */
    struct ctx_snap *snap;
    int hold_steps;          /* switched out: steps to stay out */
    bool hold_for_room;      /* switched out for lack of KV room */
    uint64_t hold_mark;      /* ... until a sequence finishes after this */
    int n_since_switch;      /* tokens generated since admission or resume */
    bool paused;             /* preempted in place: id and cells kept */
    int64_t t_first_feed, t_first_tok;
};

static void set_status(struct syscall *sc, enum syscall_status st)
{
    pthread_mutex_lock(&sc->mu);
    if (!syscall_status_final(sc->status)) sc->status = st;
    pthread_mutex_unlock(&sc->mu);
}

static llama_memory_t mem(struct llama_engine *e) { return llama_get_memory(e->ctx); }

static void slot_clear(struct llama_engine *e, int i)
{
    struct slot *sl = &e->slots[i];
    if (sl->kind != SLOT_FREE) llama_memory_seq_rm(mem(e), i, -1, -1);
    free(sl->agent);
    free(sl->toks);
    memset(sl, 0, sizeof *sl);
}

/* running: holds a slot and is not paused */
static bool seq_live(const struct seq *s) { return s->id >= 0 && !s->paused; }

/* running and past its prompt: wants one decode token this step */
static bool seq_generating(const struct seq *s)
{
    return seq_live(s) && s->n_past >= s->n_prompt && s->n_toks - s->n_past == 1;
}

/* ids a new or resuming call could take (free or merely retained) */
static int n_free_ids(struct llama_engine *e)
{
    int n = 0;
    for (int i = 0; i < e->n_slots; i++)
        n += e->slots[i].kind == SLOT_FREE || e->slots[i].kind == SLOT_RETAINED;
    return n;
}

static int n_running(struct llama_engine *e)
{
    int n = 0;
    for (int i = 0; i < e->n_slots; i++) n += e->slots[i].kind == SLOT_SEQ;
    return n;
}

/* The latency lane: a call with priority >= scheduler.interactive_priority
 * is urgent until it has generated interactive_tokens tokens. While one
 * runs, steps hold only urgent sequences (the others pause: no snapshot,
 * nothing lost, a step is about one token of theirs), and for a while after
 * one was admitted the other sequences' prefill per step is cut to
 * interactive_chunk tokens, so a newly arriving urgent call never waits
 * behind a long prefill step. Both bounds keep the lane from starving the
 * batch: each urgent call can hold it for at most interactive_tokens
 * steps. */
static bool seq_urgent(const struct llama_engine *e, const struct seq *s)
{
    return e->urgent_prio > 0 && s->sc->priority >= e->urgent_prio &&
           s->n_toks - s->n_prompt < e->urgent_tokens;
}

#define URGENT_EXTRA 2           /* urgent calls admitted past n_parallel */
#define URGENT_RECENT_US 5000000 /* steps stay short this long after one */
#define URGENT_ROWS 3            /* ... decoding about this many rows per step */

/* May the next queued call join although n_parallel calls run? Only an
 * urgent one, and only while a sequence id is free or merely retained. */
static bool admit_urgent(struct llama_engine *e, int running)
{
    if (e->urgent_prio <= 0 || running >= e->n_parallel + URGENT_EXTRA) return false;
    if (n_free_ids(e) == 0) return false;
    struct syscall *w = sched_peek(e->sched, SYSCALL_KIND_LLM, &e->core);
    bool urgent = w && w->priority >= e->urgent_prio;
    if (w) syscall_unref(w);
    return urgent;
}

/* llama.cpp calls this after every node of a llama_decode graph (engine
 * thread, between ggml's threads' barriers). An urgent call that arrives
 * while a step of other calls computes would wait for the whole step (up
 * to about 100 ms on 2 cores even while the lane keeps steps short): the
 * step is stopped instead. llama_decode then returns 2 and has removed
 * that call's new cells; step() feeds its rows again next step, after the
 * urgent call's admission. Only steps without batch-invariant rows are
 * stopped (step_abortable), so an exact call never has its cells placed
 * twice, and never two steps in a row, so the batch always advances: a
 * trial that stopped any step and left out the lane's short steps had 16
 * agents beside an urgent call a second unfinished after 17 minutes
 * (against 95 s). The short steps also keep what a stop throws away
 * small. The queue is looked at every ABORT_CHECK_US at most. */
#define ABORT_CHECK_US 1000
static bool abort_cb(void *data)
{
    struct llama_engine *e = data;
    if (!e->step_abortable) return false;
    int64_t now = util_now_us();
    if (now - e->t_abort_check_us < ABORT_CHECK_US) return false;
    e->t_abort_check_us = now;
    if (!admit_urgent(e, n_running(e))) return false;
    e->step_abortable = false;
    e->st.n_aborted_steps++;
    tl_step_stopped = true;
    return true;
}

/* The retained conversation to give up when a slot or KV cells are
 * needed: the one whose agent is expected back last. The scheduler says
 * when each agent is expected to make its next LLM call
 * (sched_agents_next_llm): now when one is queued, when its tool returns
 * while a call_tool waits on one (the tool manager's estimate), never
 * when it is idle. Idle agents' conversations go first, least recently
 * used first; then those of agents whose tool returns latest; an agent
 * whose call is queued keeps its cells longest. -1 when none is
 * retained. */
static int retained_victim(struct llama_engine *e)
{
    int idx[ENGINE_MAX_SEQ], n = 0;
    const char *agents[ENGINE_MAX_SEQ];
    int64_t back[ENGINE_MAX_SEQ];
    for (int i = 0; i < e->n_slots; i++)
        if (e->slots[i].kind == SLOT_RETAINED) idx[n] = i, agents[n++] = e->slots[i].agent;
    if (n == 0) return -1;
    if (e->sched) sched_agents_next_llm(e->sched, agents, (size_t)n, back);
    else
        for (int k = 0; k < n; k++) back[k] = -1;
    int v = 0;
    for (int k = 1; k < n; k++) {
        int64_t bk = back[k] < 0 ? INT64_MAX : back[k], bv = back[v] < 0 ? INT64_MAX : back[v];
        if (bk > bv || (bk == bv && e->slots[idx[k]].t_used_us < e->slots[idx[v]].t_used_us))
            v = k;
    }
    return idx[v];
}

/* A slot for a new or resuming sequence: a free one, else a retained one
 * (retained_victim, evicted). -1 if every slot runs a sequence. */
static int slot_take(struct llama_engine *e)
{
    for (int i = 0; i < e->n_slots; i++)
        if (e->slots[i].kind == SLOT_FREE) return i;
    int v = retained_victim(e);
    if (v >= 0) {
        slot_clear(e, v);
        e->st.n_evictions++;
    }
    return v;
}

static bool evict_one_retained(struct llama_engine *e)
{
    int v = retained_victim(e);
    if (v < 0) return false;
    slot_clear(e, v);
    e->st.n_evictions++;
    return true;
}

static void seq_unlink(struct llama_engine *e, struct seq *s)
{
    struct seq *prev = NULL;
    for (struct seq *x = e->seqs; x; prev = x, x = x->next) {
        if (x != s) continue;
        if (prev) prev->next = x->next;
        else e->seqs = x->next;
        if (e->seqs_tail == x) e->seqs_tail = prev;
        x->next = NULL;
        return;
    }
}

static void publish_stats(struct llama_engine *e);

/* s leaves the run list and gives up its slot: with keep (a finished
 * call, when the engine retains) the slot becomes a retained
 * conversation, else its cells are removed. */
static void seq_drop_slot(struct llama_engine *e, struct seq *s, bool keep)
{
    seq_unlink(e, s);
    if (s->id < 0) return;
    struct slot *sl = &e->slots[s->id];
    if (keep && e->retain && s->n_past > 0) {
        sl->kind = SLOT_RETAINED;
        sl->seq = NULL;
        sl->agent = strdup(s->sc->agent ? s->sc->agent : "");
        sl->toks = s->toks;
        sl->n_toks = s->n_past;
        sl->n_exact = s->n_exact < s->n_past ? s->n_exact : s->n_past;
        sl->t_used_us = util_now_us();
        s->toks = NULL;
        /* cells past n_past do not exist; nothing to trim */
    } else {
        sl->kind = SLOT_SEQ; /* so slot_clear removes the cells */
        slot_clear(e, s->id);
    }
    s->id = -1;
}

/* Free everything of s; the syscall must already be final. */
static void seq_end(struct llama_engine *e, struct seq *s)
{
    seq_drop_slot(e, s, false);
    if (s->snap) ctx_snap_free(e->store, s->snap);
    if (s->smpl) llama_sampler_free(s->smpl);
    free(s->g.raw);
    free(s->g.lp);
    free(s->toks);
    llm_res_free(s->res);
    e->n_finished_seqs++;
    sched_done(e->sched, s->sc);
    free(s);
}

static void seq_fail(struct llama_engine *e, struct seq *s, int err, int http, const char *msg)
{
    syscall_fail(s->sc, err, http, "%s", msg);
    seq_end(e, s);
}

/* {"token","logprob","bytes"} of one token: its piece as text (invalid
 * UTF-8 replaced) and its exact bytes */
static json_t *lp_entry(const char *piece, size_t n, float lp)
{
    char *t = NULL;
    size_t tl = 0, tc = 0;
    if (chat_utf8_append_sanitized(&t, &tl, &tc, piece, n) || (!t && !(t = strdup("")))) {
        free(t);
        return NULL;
    }
    json_t *bytes = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(bytes, json_integer((unsigned char)piece[i]));
    json_t *o = json_pack("{s:s%,s:f,s:o}", "token", t, tl, "logprob", (double)lp, "bytes", bytes);
    free(t);
    return o;
}

/* The logprobs of the tokens whose text raw[..upto) now holds (final: all
 * left that begin before it), appended to res->logprobs and, streaming,
 * to aux as comma-separated JSON objects. */
static int lp_emit(struct llama_engine *e, struct seq *s, size_t upto, bool final, char **aux,
                   size_t *n_aux, size_t *cap_aux)
{
    struct gen_state *g = &s->g;
    bool special = s->req->grammar != NULL; /* rendered like the text (seq_sample) */
    if (!s->res->logprobs && !(s->res->logprobs = json_array())) return AIOS_ENOMEM;
    for (; g->lp_done < g->n_lp; g->lp_done++) {
        struct lp_tok *t = &g->lp[g->lp_done];
        if (t->end > upto && !(final && t->start < upto)) break;
        size_t end = t->end < upto ? t->end : upto;
        json_t *o = lp_entry(g->raw + t->start, end - t->start, t->lp);
        json_t *top = json_array();
        if (!o || !top) {
            json_decref(o);
            json_decref(top);
            return AIOS_ENOMEM;
        }
        json_object_set_new(o, "top_logprobs", top);
        for (int k = 0; k < t->n_top; k++) {
            char piece[256];
            int np = llama_token_to_piece(e->vocab, t->top_id[k], piece, sizeof piece, 0, special);
            json_t *a = lp_entry(piece, np > 0 ? (size_t)np : 0, t->top_lp[k]);
            if (!a || json_array_append_new(top, a)) {
                json_decref(o);
                return AIOS_ENOMEM;
            }
        }
        int rc = 0;
        if (s->sc->stream) {
            char *js = json_dumps(o, JSON_COMPACT);
            rc = js ? util_buf_append(aux, n_aux, cap_aux, js, strlen(js)) : AIOS_ENOMEM;
            if (!rc) rc = util_buf_append(aux, n_aux, cap_aux, ",", 1);
            free(js);
        }
        if (rc || json_array_append_new(s->res->logprobs, o)) return AIOS_ENOMEM;
    }
    return 0;
}

/* Emit raw[n_done..upto) sanitised, to the result text and the stream,
 * with the logprobs of its tokens when asked for. */
static int gen_emit(struct llama_engine *e, struct seq *s, size_t upto, bool final)
{
    struct gen_state *g = &s->g;
    char *aux = NULL;
    size_t n_aux = 0, cap_aux = 0;
    size_t before = s->res->len;
    int rc = 0;
    if (upto > g->n_done) {
        rc = chat_utf8_append_sanitized(&s->res->text, &s->res->len, &g->cap_text,
                                        g->raw + g->n_done, upto - g->n_done);
        if (rc) return rc;
        g->n_done = upto;
    }
    if (s->req->p.logprobs) rc = lp_emit(e, s, upto, final, &aux, &n_aux, &cap_aux);
    if (!rc && s->sc->stream)
        rc = syscall_emit_aux(s->sc, s->res->text + before, s->res->len - before, aux, n_aux);
    free(aux);
    return rc;
}

static void seq_finish(struct llama_engine *e, struct seq *s, const char *reason)
{
    struct llm_res *res = s->res;
    res->finish_reason = reason;
    if (gen_emit(e, s, s->g.n_raw, true)) {
        seq_fail(e, s, AIOS_ENOMEM, 500, "out of memory");
        return;
    }
    if (!res->text && !(res->text = strdup(""))) {
        seq_fail(e, s, AIOS_ENOMEM, 500, "out of memory");
        return;
    }
    int64_t now = util_now_us();
    res->n_prompt_computed = s->n_prompt - s->n_reused;
    res->t_decode_us = s->t_first_tok ? now - s->t_first_tok : 0;
    res->t_end_at_us = now;
    e->st.n_tokens_generated += (uint64_t)res->n_gen;
    e->st.n_tokens_reused += (uint64_t)s->n_reused;
    e->st.n_calls++;
    const char *prev_rid = log_set_request_id(s->sc->request_id);
    LOG_DEBUG("engine", "%s: call %llu agent=%s prompt=%d (reused %d) gen=%d prefill=%.1fms "
              "decode=%.1fms", e->core.name, (unsigned long long)s->sc->id, s->sc->agent,
              res->n_prompt, s->n_reused, res->n_gen, res->t_prefill_us / 1000.0,
              res->t_decode_us / 1000.0);
    log_set_request_id(prev_rid);
    s->res = NULL;
    /* the slot is retained (or freed) and the statistics say so before
     * the caller has its answer: what it reads next (GET /status) is not
     * stale */
    seq_drop_slot(e, s, true);
    publish_stats(e);
    syscall_finish(s->sc, res, llm_res_free);
    seq_end(e, s);
}

/* ---- context switch ---- */

/* Save s's KV state and free its slot. 0 or negative AIOS_E* (then s runs
 * on unchanged). */
static int seq_switch_out(struct llama_engine *e, struct seq *s, int hold_steps, bool for_room)
{
    if (s->id < 0) return 0;
    if (s->n_past > 0) {
        int rc = ctx_snap_save(e->store, e->ctx, s->id, &s->snap);
        if (rc) {
            LOG_WARN("engine", "%s: cannot snapshot call %llu (%s); it keeps running",
                     e->core.name, (unsigned long long)s->sc->id, aios_strerror(rc));
            return rc;
        }
    }
    e->slots[s->id].kind = SLOT_SEQ;
    slot_clear(e, s->id);
    s->id = -1;
    s->paused = false;
    s->hold_steps = hold_steps;
    s->hold_for_room = for_room;
    s->hold_mark = e->n_finished_seqs;
    e->st.n_preemptions++;
    set_status(s->sc, SYSCALL_STATUS_SUSPENDED);
    LOG_DEBUG("engine", "%s: call %llu switched out at %d tokens (%zu bytes%s)", e->core.name,
              (unsigned long long)s->sc->id, s->n_past, ctx_snap_bytes(s->snap),
              ctx_snap_spilled(s->snap) ? ", spilled to disk" : "");
    return 0;
}

/* Preempt s in place: it stops running (its slot no longer counts against
 * n_parallel) but keeps its sequence id and KV cells, shared prefix
 * included, so resuming costs nothing. Spare ids make this possible
 * (n_slots > n_parallel); under KV pressure make_room() turns a paused
 * call into a real switch out (snapshot, cells freed). */
static void seq_pause(struct llama_engine *e, struct seq *s, int hold_steps)
{
    e->slots[s->id].kind = SLOT_PAUSED;
    s->paused = true;
    s->hold_steps = hold_steps;
    s->hold_for_room = false;
    s->hold_mark = e->n_finished_seqs;
    e->st.n_preemptions++;
    set_status(s->sc, SYSCALL_STATUS_SUSPENDED);
}

/* Give switched-out sequences their slots back, oldest first. Returns true
 * when one is still waiting for a slot (then nothing new is admitted). */
static bool resume_switched(struct llama_engine *e)
{
    bool waiting = false;
    for (struct seq *s = e->seqs; s; s = s->next) {
        if (seq_live(s)) continue;
        if (s->hold_steps > 0) {
            s->hold_steps--;
            continue;
        }
        if (s->hold_for_room && e->n_finished_seqs == s->hold_mark && n_running(e) > 0) {
            waiting = true;
            continue;
        }
        if (n_running(e) >= e->n_parallel) return true;
        if (s->paused) {
            e->slots[s->id].kind = SLOT_SEQ;
            s->paused = false;
            s->n_since_switch = 0;
            e->st.n_resumes++;
            set_status(s->sc, SYSCALL_STATUS_RUNNING);
            continue;
        }
        int slot = slot_take(e);
        if (slot < 0) return true;
        if (s->snap) {
            int rc;
            while ((rc = ctx_snap_restore(e->store, e->ctx, s->snap, slot)) == AIOS_EBUSY &&
                   evict_one_retained(e))
                ;
            if (rc == AIOS_EBUSY) {
                if (n_running(e) == 0) {
                    seq_fail(e, s, AIOS_EENGINE, 500, "could not restore the context of this call");
                    return true; /* the list changed; look again next step */
                }
                s->hold_for_room = true;
                s->hold_mark = e->n_finished_seqs;
                waiting = true;
                continue;
            }
            if (rc) {
                seq_fail(e, s, rc, 500, "could not read back the saved context of this call");
                return true;
            }
            ctx_snap_free(e->store, s->snap);
            s->snap = NULL;
            /* restored cells go in one contiguous run, wherever it fits:
             * no bound on the highest cell until the cache empties */
            e->kv_hwm = e->kv_size;
        }
        s->id = slot;
        e->slots[slot].kind = SLOT_SEQ;
        e->slots[slot].seq = s;
        s->hold_for_room = false;
        s->n_since_switch = 0;
        e->st.n_resumes++;
        set_status(s->sc, SYSCALL_STATUS_RUNNING);
    }
    return waiting;
}

/* ---- admission ---- */

/* The slot for a new sequence: a retained conversation of the same agent
 * that its prompt extends (taken over, tail trimmed), else any free slot,
 * else the retained slot sharing the longest prefix, else the retained
 * slot retained_victim names. Sets s->n_past to the tokens reused. */
static int slot_for_new(struct llama_engine *e, struct seq *s)
{
    const char *agent = s->sc->agent ? s->sc->agent : "";
    int best = -1, best_len = 0, any = -1, any_len = 0;
    for (int i = 0; i < e->n_slots; i++) {
        struct slot *sl = &e->slots[i];
        if (sl->kind != SLOT_RETAINED) continue;
        int l = ctx_prefix_len(sl->toks, sl->n_toks, s->toks, s->n_prompt);
        if (s->exact && l > sl->n_exact) l = sl->n_exact; /* reuse only exact cells */
        if (l > s->n_prompt - 1) l = s->n_prompt - 1; /* one token must be computed for logits */
        if (!strcmp(sl->agent, agent) && l > best_len) best = i, best_len = l;
        if (l > any_len) any = i, any_len = l;
    }
    int slot = -1, reuse = 0;
    if (best >= 0) {
        slot = best, reuse = best_len;
        e->st.n_retained_hits++;
    } else {
        for (int i = 0; i < e->n_slots && slot < 0; i++)
            if (e->slots[i].kind == SLOT_FREE) slot = i;
        if (slot < 0 && any >= 0 && any_len >= e->prefix_share_min) {
            slot = any, reuse = any_len;
            e->st.n_retained_hits++;
        }
        if (slot < 0) return slot_take(e);
    }
    struct slot *sl = &e->slots[slot];
    s->n_exact = 0;
    if (sl->kind == SLOT_RETAINED) {
        if (!llama_memory_seq_rm(mem(e), slot, reuse, -1)) {
            slot_clear(e, slot);
            reuse = 0;
        }
        s->n_exact = reuse < sl->n_exact ? reuse : sl->n_exact;
        free(sl->agent);
        free(sl->toks);
        memset(sl, 0, sizeof *sl);
    }
    s->n_past = reuse;
    return slot;
}

static void seq_start(struct llama_engine *e, struct syscall *sc)
{
    struct llm_req *req = sc->req;
    struct seq *s = calloc(1, sizeof *s);
    if (!s) {
        syscall_fail(sc, AIOS_ENOMEM, 500, "out of memory");
        sched_done(e->sched, sc);
        return;
    }
    s->sc = sc;
    s->req = req;
    s->id = -1;
    s->i_out = -1;
    s->order = ++e->n_admitted;
    s->n_prompt = req->n_tokens;
    s->max_new = req->p.max_tokens > 0 ? req->p.max_tokens : e->n_ctx - req->n_tokens;
    s->cap_toks = req->n_tokens + 2;
    s->toks = malloc(sizeof *s->toks * (size_t)s->cap_toks);
    s->res = calloc(1, sizeof *s->res);
    /* link first so seq_end()/seq_fail() can take it out again */
    if (e->seqs_tail) e->seqs_tail->next = s;
    else e->seqs = s;
    e->seqs_tail = s;
    if (!s->toks || !s->res) {
        seq_fail(e, s, AIOS_ENOMEM, 500, "out of memory");
        return;
    }
    memcpy(s->toks, req->tokens, sizeof *s->toks * (size_t)req->n_tokens);
    s->n_toks = req->n_tokens;
    s->exact = e->bi_mode == BI_ALL || (e->bi_mode == BI_SEEDED && req->p.has_seed);
    s->res->n_prompt = req->n_tokens;
    s->res->finish_reason = "length";
    s->smpl = make_sampler(e, req, &s->n_pre);
    if (!s->smpl) {
        syscall_fail(sc, AIOS_EINVAL, 400, "could not create a sampler%s",
                     req->grammar ? " (the output grammar does not parse)" : "");
        seq_end(e, s);
        return;
    }
    if (e->urgent_prio > 0 && sc->priority >= e->urgent_prio) e->t_urgent_us = util_now_us();
    int slot = slot_for_new(e, s);
    /* admission only happens with a slot available */
    s->id = slot;
    e->slots[slot].kind = SLOT_SEQ;
    e->slots[slot].seq = s;
    s->n_reused = s->n_past;
}

/* Share the longest prefix another slot already holds. Returns false when
 * s should wait because an earlier sequence is prefilling a longer common
 * prefix right now (it will be shared when done). */
static bool seq_match(struct llama_engine *e, struct seq *s, bool may_wait)
{
    int lim = s->n_prompt - 1;
    int best = s->n_past, src = -1, src_exact = 0;
    for (int i = 0; i < e->n_slots; i++) {
        struct slot *sl = &e->slots[i];
        if (i == s->id) continue;
        int l = 0, x = 0;
        if (sl->kind == SLOT_RETAINED) {
            l = ctx_prefix_len(sl->toks, sl->n_toks, s->toks, lim);
            x = sl->n_exact;
        } else if (sl->kind == SLOT_SEQ || sl->kind == SLOT_PAUSED) {
            l = ctx_prefix_len(sl->seq->toks, sl->seq->n_past, s->toks, lim);
            x = sl->seq->n_exact;
        }
        /* a batch-invariant call shares only cells computed that way: the
         * others round differently from what it would compute itself */
        if (s->exact && l > x) l = x;
        if (l > best) best = l, src = i, src_exact = x;
    }
    /* an earlier sequence still prefilling a longer common prefix? */
    for (struct seq *x = e->seqs; may_wait && x && x != s; x = x->next) {
        if (x->id < 0 || x->n_past >= x->n_prompt || (s->exact && !x->exact)) continue;
        int l = ctx_prefix_len(x->toks, x->n_prompt, s->toks, lim);
        if (l >= best + e->prefix_share_min && x->n_past < l) return false;
    }
    if (src >= 0 && best - s->n_past >= e->prefix_share_min) {
        llama_memory_seq_cp(mem(e), src, s->id, s->n_past, best);
        if (e->slots[src].kind == SLOT_RETAINED) e->slots[src].t_used_us = util_now_us();
        /* its cells [n_past, best) are exact if the source's are */
        if (s->n_exact == s->n_past && src_exact > s->n_past)
            s->n_exact = best < src_exact ? best : src_exact;
        s->n_past = best;
        s->n_reused = best;
        e->st.n_shared_hits++;
    }
    s->matched = true;
    return true;
}

/* ---- one step ---- */

static void batch_add(struct llama_batch *b, int32_t tok, int pos, int seq, bool logits)
{
    int i = b->n_tokens++;
    b->token[i] = tok;
    b->pos[i] = pos;
    b->n_seq_id[i] = 1;
    b->seq_id[i][0] = seq;
    b->logits[i] = (int8_t)logits;
}

static void seq_feed(struct llama_engine *e, struct seq *s, int n)
{
    struct llama_batch *b = &e->batch;
    bool last = s->n_past + n == s->n_toks;
    s->i_feed = b->n_tokens;
    for (int k = 0; k < n; k++)
        batch_add(b, s->toks[s->n_past + k], s->n_past + k, s->id, last && k == n - 1);
    s->n_feed = n;
    s->i_out = last ? b->n_tokens - 1 : -1;
    if (!s->t_first_feed) s->t_first_feed = util_now_us();
}

static int grow_toks(struct seq *s)
{
    if (s->n_toks < s->cap_toks) return 0;
    int c = s->cap_toks * 2;
    int32_t *p = realloc(s->toks, sizeof *p * (size_t)c);
    if (!p) return AIOS_ENOMEM;
    s->toks = p;
    s->cap_toks = c;
    return 0;
}

/* What llama_sampler_sample does (the same token for the same logits and
 * chain), with the log-probabilities read between the chain's first stages
 * (grammar, penalties) and the picking ones: log-softmax over the whole
 * vocabulary as those stages left it (tokens the grammar forbids have
 * none; temperature and truncation do not change them, as with OpenAI).
 * Fills *t but its piece offsets. */
static llama_token seq_sample_lp(struct llama_engine *e, struct seq *s, struct lp_tok *t)
{
    int nv = llama_vocab_n_tokens(e->vocab);
    if (!e->lp_cand) {
        e->lp_cand = malloc(sizeof *e->lp_cand * (size_t)nv);
        e->lp_logit = malloc(sizeof *e->lp_logit * (size_t)nv);
        if (!e->lp_cand || !e->lp_logit) {
            free(e->lp_cand);
            free(e->lp_logit);
            e->lp_cand = NULL;
            e->lp_logit = NULL;
            return LLAMA_TOKEN_NULL;
        }
    }
    const float *logits = llama_get_logits_ith(e->ctx, s->i_out);
    for (int i = 0; i < nv; i++) e->lp_cand[i] = (llama_token_data){i, logits[i], 0.0f};
    llama_token_data_array cur = {e->lp_cand, (size_t)nv, -1, false};
    int n = llama_sampler_chain_n(s->smpl);
    for (int i = 0; i < s->n_pre; i++) llama_sampler_apply(llama_sampler_chain_get(s->smpl, i), &cur);
    for (int i = 0; i < nv; i++) e->lp_logit[i] = -INFINITY;
    float mx = -INFINITY;
    for (size_t i = 0; i < cur.size; i++) {
        float l = cur.data[i].logit;
        if (cur.data[i].id >= 0 && cur.data[i].id < nv) e->lp_logit[cur.data[i].id] = l;
        if (l > mx) mx = l;
    }
    double sum = 0;
    for (int i = 0; i < nv; i++)
        if (isfinite(e->lp_logit[i])) sum += expf(e->lp_logit[i] - mx);
    float lse = mx + (float)log(sum > 0 ? sum : 1);
    /* the most likely top_logprobs tokens, best first (ties: lower id) */
    int k = s->req->p.top_logprobs;
    t->n_top = 0;
    for (int i = 0; i < nv && k > 0; i++) {
        float l = e->lp_logit[i];
        if (!isfinite(l)) continue;
        if (t->n_top == k && l <= t->top_lp[k - 1]) continue;
        int j = t->n_top < k ? t->n_top++ : k - 1;
        while (j > 0 && t->top_lp[j - 1] < l) {
            t->top_lp[j] = t->top_lp[j - 1];
            t->top_id[j] = t->top_id[j - 1];
            j--;
        }
        t->top_lp[j] = l;
        t->top_id[j] = i;
    }
    for (int j = 0; j < t->n_top; j++) t->top_lp[j] -= lse;
    for (int i = s->n_pre; i < n; i++) llama_sampler_apply(llama_sampler_chain_get(s->smpl, i), &cur);
    assert(cur.selected >= 0 && (size_t)cur.selected < cur.size);
    llama_token tok = cur.data[cur.selected].id;
    llama_sampler_accept(s->smpl, tok);
    t->id = tok;
    t->lp = e->lp_logit[tok] - lse;
    if (!isfinite(t->lp)) t->lp = -9999.0f; /* OpenAI's value for "impossible" */
    return tok;
}

/* After a decode that produced s's logits: sample, stream, maybe finish. */
static void seq_sample(struct llama_engine *e, struct seq *s)
{
    struct llm_res *res = s->res;
    const struct llm_req *req = s->req;
    struct lp_tok lpt = {0};
    llama_token tok;
    if (req->p.logprobs) {
        tok = seq_sample_lp(e, s, &lpt);
        if (tok == LLAMA_TOKEN_NULL) {
            seq_fail(e, s, AIOS_ENOMEM, 500, "out of memory");
            return;
        }
    } else {
        tok = llama_sampler_sample(s->smpl, e->ctx, s->i_out);
    }
    if (!s->t_first_tok) {
        s->t_first_tok = util_now_us();
        res->t_prefill_us = s->t_first_tok - s->t_first_feed;
        res->t_first_tok_at_us = s->t_first_tok;
    }
    if (llama_vocab_is_eog(e->vocab, tok)) {
        seq_finish(e, s, "stop");
        return;
    }
    res->n_gen++;
    char piece[256];
    /* under a grammar, special tokens are text the grammar matched:
     * render them, or the output would differ from what it checked */
    int np = llama_token_to_piece(e->vocab, tok, piece, sizeof piece, 0, req->grammar != NULL);
    if (np < 0) np = 0;
    struct gen_state *g = &s->g;
    if (g->n_raw + (size_t)np + 1 > g->cap_raw) {
        size_t c = g->cap_raw ? g->cap_raw * 2 : 1024;
        while (c < g->n_raw + (size_t)np + 1) c *= 2;
        char *p = realloc(g->raw, c);
        if (!p) {
            seq_fail(e, s, AIOS_ENOMEM, 500, "out of memory");
            return;
        }
        g->raw = p;
        g->cap_raw = c;
    }
    memcpy(g->raw + g->n_raw, piece, (size_t)np);
    size_t prev = g->n_raw;
    g->n_raw += (size_t)np;
    if (req->p.logprobs) {
        if (g->n_lp == g->cap_lp) {
            int c = g->cap_lp ? g->cap_lp * 2 : 64;
            struct lp_tok *q = realloc(g->lp, sizeof *q * (size_t)c);
            if (!q) {
                seq_fail(e, s, AIOS_ENOMEM, 500, "out of memory");
                return;
            }
            g->lp = q;
            g->cap_lp = c;
        }
        lpt.start = prev;
        lpt.end = g->n_raw;
        g->lp[g->n_lp++] = lpt;
    }

    if (req->p.n_stop) {
        size_t maxl = 0;
        for (int k = 0; k < req->p.n_stop; k++) {
            size_t l = strlen(req->p.stop[k]);
            if (l > maxl) maxl = l;
        }
        size_t from = prev >= maxl ? prev - maxl + 1 : 0;
        if (from < g->n_done) from = g->n_done;
        long at = chat_stop_find(g->raw, g->n_raw, from, req->p.stop, req->p.n_stop);
        if (at >= 0) {
            g->n_raw = (size_t)at;
            seq_finish(e, s, "stop");
            return;
        }
    }
    size_t safe = g->n_raw - chat_stop_holdback(g->raw, g->n_raw, req->p.stop, req->p.n_stop);
    safe = chat_utf8_stable_len(g->raw, safe);
    if (gen_emit(e, s, safe, false)) {
        seq_fail(e, s, AIOS_ENOMEM, 500, "out of memory");
        return;
    }
    if (res->n_gen >= s->max_new || s->n_past + 1 >= e->n_ctx) {
        seq_finish(e, s, "length");
        return;
    }
    if (grow_toks(s)) {
        seq_fail(e, s, AIOS_ENOMEM, 500, "out of memory");
        return;
    }
    s->toks[s->n_toks++] = tok;
    s->n_since_switch++;
    if (e->debug_preempt_every > 0 && s->n_since_switch >= e->debug_preempt_every)
        seq_switch_out(e, s, 0, false);
}

/* No room in the KV cache for this batch: free some. false when nothing
 * could be freed (a single sequence that does not fit). */
static bool make_room(struct llama_engine *e)
{
    if (evict_one_retained(e)) return true;
    for (struct seq *s = e->seqs; s; s = s->next)
        if (s->paused) return seq_switch_out(e, s, 0, true) == 0;
    if (n_running(e) < 2) return false;
    struct seq *victim = NULL;
    for (struct seq *s = e->seqs; s; s = s->next)
        if (seq_live(s)) victim = s; /* the youngest running */
    return victim && seq_switch_out(e, victim, 0, true) == 0;
}

static void handle_requests(struct llama_engine *e)
{
    pthread_mutex_lock(&e->req_mu);
    struct preempt_req *reqs = e->reqs;
    int n = e->n_reqs;
    e->reqs = NULL;
    e->n_reqs = e->cap_reqs = 0;
    pthread_mutex_unlock(&e->req_mu);
    for (int i = 0; i < n; i++)
        for (struct seq *s = e->seqs; s; s = s->next)
            if (s->sc->id == reqs[i].id && seq_live(s)) {
                /* in place while ids are spare; else a real switch out */
                if (n_free_ids(e) >= 2) seq_pause(e, s, reqs[i].hold_steps);
                else seq_switch_out(e, s, reqs[i].hold_steps, false);
                break;
            }
    free(reqs);
}

/* Tell the scheduler how many KV bytes each agent holds (its running
 * sequences and retained conversations; shared cells count for every
 * sequence that uses them). At most every 200 ms, and when idle. */
static void report_kv(struct llama_engine *e, bool force)
{
    int64_t now = util_now_us();
    if (!e->sched || (!force && now - e->t_kv_report_us < 200000)) return;
    e->t_kv_report_us = now;
    const char *names[ENGINE_MAX_SEQ];
    int64_t bytes[ENGINE_MAX_SEQ];
    int n = 0;
    for (int i = 0; i < e->n_slots; i++) {
        struct slot *sl = &e->slots[i];
        const char *a = NULL;
        int cells = 0;
        if (sl->kind == SLOT_RETAINED) a = sl->agent, cells = sl->n_toks;
        else if ((sl->kind == SLOT_SEQ || sl->kind == SLOT_PAUSED) && sl->seq)
            a = sl->seq->sc->agent, cells = sl->seq->n_past;
        if (!a || cells <= 0) continue;
        int k = 0;
        while (k < n && strcmp(names[k], a)) k++;
        if (k == n) names[n] = a, bytes[n++] = 0;
        bytes[k] += (int64_t)cells * e->cell_bytes;
    }
    for (int k = 0; k < n; k++) sched_set_agent_kv(e->sched, names[k], bytes[k]);
    /* agents that held KV last time and hold none now */
    for (int j = 0; j < e->n_kv_agents; j++) {
        int k = 0;
        while (k < n && strcmp(names[k], e->kv_agents[j])) k++;
        if (k == n) sched_set_agent_kv(e->sched, e->kv_agents[j], 0);
        free(e->kv_agents[j]);
    }
    e->n_kv_agents = 0;
    for (int k = 0; k < n; k++)
        if ((e->kv_agents[e->n_kv_agents] = strdup(names[k]))) e->n_kv_agents++;
}

static void publish_stats(struct llama_engine *e)
{
    report_kv(e, e->seqs == NULL);
    int run = 0, sw = 0, ret = 0, cells = 0;
    for (int i = 0; i < e->n_slots; i++) {
        const struct slot *sl = &e->slots[i];
        run += sl->kind == SLOT_SEQ;
        ret += sl->kind == SLOT_RETAINED;
        if (sl->kind == SLOT_RETAINED) cells += sl->n_toks;
        else if ((sl->kind == SLOT_SEQ || sl->kind == SLOT_PAUSED) && sl->seq) cells += sl->seq->n_past;
    }
    for (struct seq *s = e->seqs; s; s = s->next) sw += !seq_live(s);
    e->st.n_running = run;
    e->st.n_swapped = sw;
    e->st.n_retained = ret;
    e->st.n_kv_cells = cells < e->kv_size ? cells : e->kv_size;
    pthread_mutex_lock(&e->stats_mu);
    e->pub = e->st;
    pthread_mutex_unlock(&e->stats_mu);
}

/* step(): the end of the llama_decode call that starts at row lo. Rows
 * [0, tiled) go in one call (whole query tiles of 64); rows [tiled, n) in
 * calls of at most 63 rows, as even as can be, so that none has one row
 * unless there is only one (the caller pads that one when it must). */
static int next_cut(int lo, int n, int tiled)
{
    if (lo < tiled) return tiled;
    int r = n - lo, k = (r + 62) / 63; /* rows and per-row calls left */
    return lo + (r + k - 1) / k;
}

/* rows [lo, hi) of the step's batch, as one llama_decode */
static int decode_rows(struct llama_engine *e, int lo, int hi)
{
    struct llama_batch v = e->batch;
    v.n_tokens = hi - lo;
    v.token += lo;
    v.pos += lo;
    v.n_seq_id += lo;
    v.seq_id += lo;
    v.logits += lo;
    return llama_decode(e->ctx, v);
}

/* A llama_decode call of the step from row lo on applied nothing: the
 * sequences with rows there feed them again next step (those rows were
 * not applied; earlier calls' were, and advanced their sequences). */
static void unfeed_from(struct llama_engine *e, int lo)
{
    for (struct seq *s = e->seqs; s; s = s->next)
        if (s->n_feed && s->i_feed + s->n_feed > lo) s->n_feed = 0, s->i_out = -1;
}

/* Does a llama_decode call of one query row take ggml's KV-split flash
 * attention path? It does when the cache view, n_kv, spans 512 cells or
 * more (ggml-cpu ops.cpp) and the call runs on more than one thread (the
 * cells are split between the threads, whose partial sums are merged:
 * other rounding; on one thread there is one part, and the result is bit
 * for bit that of a row beside others: `bench_engine lone`). llama.cpp
 * makes n_kv the highest cell in use plus one, rounded up to 256
 * (llama_kv_cache::get_n_kv): so only once a cell past the first 256 is
 * in use.
 *
 * The engine does not see cell indices; it bounds them. llama.cpp places
 * a batch's tokens in the lowest free cells (find_slot scans from head,
 * every cell below head is in use, and removals move head down to the
 * first cell they free), so the highest cell in use never exceeds the
 * largest number of cells in use since the cache was last empty. kv_hwm
 * is that number, from the engine's own count (cells of every running,
 * paused and retained sequence; shared cells counted once per sharer:
 * an overcount, which only pads more), reset when the count is zero. A
 * restored snapshot is placed as one contiguous run wherever one fits,
 * so after one kv_hwm is the whole cache until it empties. n_new: the
 * rows about to be placed. Called every step: the bound must see every
 * placement. */
#define FA_SPLIT_MIN_KV 512 /* ggml: one row over this many cells splits */
#define KV_VIEW_PAD 256     /* llama.cpp: n_kv rounded up to this */
static bool kv_may_split(struct llama_engine *e, int n_new)
{
    int cells = 0;
    for (int i = 0; i < e->n_slots; i++) {
        struct slot *sl = &e->slots[i];
        if (sl->kind == SLOT_RETAINED) cells += sl->n_toks;
        else if ((sl->kind == SLOT_SEQ || sl->kind == SLOT_PAUSED) && sl->seq) cells += sl->seq->n_past;
    }
    if (cells == 0) e->kv_hwm = 0;
    if (cells + n_new > e->kv_hwm) e->kv_hwm = cells + n_new;
    int n_kv = (e->kv_hwm + KV_VIEW_PAD - 1) / KV_VIEW_PAD * KV_VIEW_PAD;
    if (n_kv > e->kv_size) n_kv = e->kv_size;
    return e->n_threads > 1 && n_kv >= FA_SPLIT_MIN_KV;
}

static void step(struct llama_engine *e)
{
    /* cancelled calls free their sequence now */
    for (struct seq *s = e->seqs, *nx; s; s = nx) {
        nx = s->next;
        s->n_feed = s->n_plan = 0;
        s->i_out = -1;
        if (syscall_cancel_requested(s->sc)) seq_fail(e, s, AIOS_ECANCELLED, 499, "the client went away");
    }
    struct llama_batch *b = &e->batch;
    b->n_tokens = 0;
    bool lane = false;
    for (struct seq *s = e->seqs; s && !lane; s = s->next) lane = seq_live(s) && seq_urgent(e, s);
    /* while urgent calls come, keep steps short: about URGENT_ROWS of the
     * generating sequences decode in each step (rotating, so all advance
     * at the same pace), and the rest of the step is capped below at
     * interactive_chunk rows (prefill, or the decode token of a sequence
     * the stride left out, oldest first) */
    bool recent = !lane && e->t_urgent_us && util_now_us() - e->t_urgent_us < URGENT_RECENT_US;
    int n_gen = 0;
    for (struct seq *s = e->seqs; s && recent; s = s->next)
        n_gen += seq_generating(s);
    /* decode every stride-th generating sequence per step, rotating */
    int stride = recent && n_gen > URGENT_ROWS ? (n_gen + URGENT_ROWS - 1) / URGENT_ROWS : 1;
    /* plan: one decode token for every generating sequence */
    int k = 0, n_rows = 0;
    for (struct seq *s = e->seqs; s; s = s->next) {
        if (!seq_generating(s)) continue;
        if (stride > 1 && (k++ + e->st.n_steps) % (uint64_t)stride) continue;
        if (n_rows < e->n_batch && (!lane || seq_urgent(e, s))) s->n_plan = 1, n_rows++;
    }
    /* then prefill chunks, oldest first (urgent ones first, uncut) */
    int limit = e->n_batch;
    if (recent && n_rows + e->urgent_chunk < limit) limit = n_rows + e->urgent_chunk;
    for (int pass = 0; pass < 2; pass++)
        for (struct seq *s = e->seqs; s && n_rows < limit; s = s->next) {
            if (!seq_live(s) || s->n_plan || s->n_toks == s->n_past) continue;
            bool urgent = seq_urgent(e, s);
            if (pass == 0 ? !urgent : lane) continue;
            /* an urgent call does not wait for another's prefill (paused) */
            if (!s->matched && !seq_match(e, s, !urgent)) continue;
            int n = s->n_toks - s->n_past;
            if (n > e->prefill_chunk) n = e->prefill_chunk;
            if (n > limit - n_rows) n = limit - n_rows;
            s->n_plan = n;
            n_rows += n;
        }
    if (n_rows == 0) return;

    /* The batch, in the order of its llama_decode calls. ggml's CPU flash
     * attention computes a micro-batch of 64 query rows or more with a
     * tiled kernel (F16 K/V converted to F32 tiles: other rounding), and
     * one of fewer row by row, each row over its own cells only (masked
     * cells are skipped), which does not depend on the other rows. So:
     *  - prefill rows of calls that are not batch invariant go first, and
     *    as many of them as fill whole tiles of 64 in one call: the tiled
     *    kernel's GEMMs are the fast way to prefill;
     *  - every other row (the rest of those, the prefill of batch-invariant
     *    calls, and all decode rows) in calls of at most 63 rows. Decode
     *    rows never go in a tiled call: a tile of query rows skips a tile
     *    of cells only where it is masked for all of them, and the decode
     *    rows of many sequences mask almost nothing, so such a call was
     *    dense attention over the whole cache (32 agents, about 10k cells:
     *    a step of 7 decode rows and a 58-token chunk took 0.78 s against
     *    0.1 s + 0.3 s apart, docs/performance.md).
     * A sequence's rows may span two calls (in order); each call advances
     * what it applied. */
    int n_fast = 0;
    for (int cat = 0; cat < 3; cat++)
        for (struct seq *s = e->seqs; s; s = s->next) {
            if (!s->n_plan) continue;
            int c = seq_generating(s) ? 2 : s->exact ? 1 : 0;
            if (c != cat) continue;
            seq_feed(e, s, s->n_plan);
            if (c == 0) n_fast += s->n_plan;
        }
    int tiled = n_fast / 64 * 64;
    /* ggml also computes a micro-batch of exactly one query row another
     * way (KV split across threads, other rounding) once the cache spans
     * 512 cells, for F16 caches: a padding token of a reserved sequence
     * (its own cell, no logits, removed after the call) keeps a batch-
     * invariant row from being alone in a call */
    bool padded = false;
    /* A one-row call may also multiply matrices another way (dot
     * products, where two rows or more take tinyBLAS's GEMMs): for F32
     * weights it rounds otherwise, for Q8_0 it does not (measured with
     * `bench_engine lone`); lone_row_check() asked this model at load.
     * Where either differs the pad goes in: at one sequence the step's
     * matrix work then doubles (docs/performance.md). */
    bool split = e->pad_seq >= 0 && kv_may_split(e, b->n_tokens + 1);
    if (e->pad_seq >= 0 && (split || !e->lone_exact) && b->n_tokens - tiled == 1) {
        for (struct seq *s = e->seqs; s && !padded; s = s->next)
            padded = s->n_feed && s->exact && s->i_feed + s->n_feed == b->n_tokens;
        if (padded) batch_add(b, e->pad_tok, 0, e->pad_seq, false);
        e->st.n_padded_steps += padded;
    }
    e->st.n_steps++;
    /* published as the step begins (the rest after it): a caller can see
     * that a step is under way */
    pthread_mutex_lock(&e->stats_mu);
    e->pub.n_steps = e->st.n_steps;
    pthread_mutex_unlock(&e->stats_mu);
    if (next_cut(0, b->n_tokens, tiled) < b->n_tokens) e->st.n_split_steps++;
    bool abortable = !lane && !padded && !e->prev_aborted;
    e->prev_aborted = false;
    for (struct seq *s = e->seqs; s && abortable; s = s->next)
        abortable = !(s->n_feed && s->exact);
    for (int lo = 0, hi; lo < b->n_tokens; lo = hi) {
        hi = next_cut(lo, b->n_tokens, tiled);
        e->step_abortable = abortable;
        int rc = decode_rows(e, lo, hi);
        e->step_abortable = false;
        tl_step_stopped = false;
        if (padded) llama_memory_seq_rm(mem(e), e->pad_seq, -1, -1);
        if (rc == 2) {
            /* stopped for an urgent call (abort_cb): llama.cpp removed
             * this call's new cells; its rows and the later calls' go
             * again next step (earlier calls were applied) */
            unfeed_from(e, lo);
            e->prev_aborted = true;
            return;
        }
        if (rc == 1) {
            /* no KV room: nothing of this call was applied (earlier calls
             * were, and advanced their sequences); free some and feed the
             * rest again next step */
            unfeed_from(e, lo);
            if (!make_room(e)) {
                for (struct seq *s = e->seqs, *nx; s; s = nx) {
                    nx = s->next;
                    if (seq_live(s) && !s->n_feed)
                        seq_fail(e, s, AIOS_ETOOBIG, 500,
                                 "the KV cache is full (kv_size is too small for this call)");
                }
            }
            return;
        }
        if (rc != 0) {
            char msg[64];
            snprintf(msg, sizeof msg, "llama_decode failed (%d)", rc);
            for (struct seq *s = e->seqs, *nx; s; s = nx) {
                nx = s->next;
                if (s->n_feed && s->i_feed + s->n_feed > lo) seq_fail(e, s, AIOS_EENGINE, 500, msg);
            }
            return;
        }
        for (struct seq *s = e->seqs, *nx; s; s = nx) {
            nx = s->next;
            if (!s->n_feed) continue;
            /* its rows within this call */
            int from = s->i_feed > lo ? s->i_feed : lo;
            int to = s->i_feed + s->n_feed < hi ? s->i_feed + s->n_feed : hi;
            if (to <= from) continue;
            bool prompt = s->n_past < s->n_prompt;
            if (s->exact) s->n_exact = s->n_past + (to - from);
            s->n_past += to - from;
            if (prompt) e->st.n_tokens_prefilled += (uint64_t)(to - from);
            if (hi <= tiled) e->st.n_rows_tiled += (uint64_t)(to - from);
            if (s->i_out >= lo && s->i_out < hi) {
                s->i_out -= lo; /* an index into this call's outputs */
                seq_sample(e, s);
            }
        }
    }
}

static void end_all(struct llama_engine *e)
{
    while (e->seqs) seq_fail(e, e->seqs, AIOS_ESHUTDOWN, 503, "the kernel is shutting down");
}

/* A retired engine (POST /core/refresh removed or replaced its model,
 * kernel/models.c) that has had nothing to do for RETIRE_GRACE_US gives its
 * KV cache back: the context is freed, retained conversations with it. The
 * weights stay until kernel stop: an HTTP thread that found this core just
 * before retirement may still be tokenising with them (they are a
 * read-only file mapping the OS can reclaim anyway). A call that still
 * arrives after the release gets 404. Engine thread. */
#define RETIRE_GRACE_US 1000000

static void retire_release(struct llama_engine *e)
{
    if (!e->ctx || !e->core.retired || e->seqs) return;
    int64_t now = util_now_us();
    if (!e->t_retired_us) e->t_retired_us = now;
    if (now - e->t_retired_us < RETIRE_GRACE_US) return;
    struct syscall *w = sched_peek(e->sched, SYSCALL_KIND_LLM, &e->core);
    if (w) {
        syscall_unref(w);
        return;
    }
    for (int i = 0; i < e->n_slots; i++) {
        free(e->slots[i].agent);
        free(e->slots[i].toks);
        memset(&e->slots[i], 0, sizeof e->slots[i]);
    }
    llama_free(e->ctx);
    e->ctx = NULL;
    e->st.released = true;
    LOG_INFO("engine", "%s: retired and drained: its KV cache (%d cells) is released",
             e->core.name, e->kv_size);
    publish_stats(e);
}

static void *engine_main(void *arg)
{
    struct llama_engine *e = arg;
    for (;;) {
        if (sched_stopping(e->sched)) break;
        handle_requests(e);
        bool waiting = resume_switched(e);
        /* admission: new calls while a slot can be had */
        /* an urgent call is admitted even while switched-out calls wait */
        for (int run; n_free_ids(e) > 0 &&
                      ((run = n_running(e), !waiting && run < e->n_parallel) ||
                       admit_urgent(e, run));) {
            bool idle = e->seqs == NULL;
            if (idle) {
                publish_stats(e);
                retire_release(e);
            }
            /* idle: wake once a second while loaded, to notice retirement */
            int wait_ms = !idle ? 0 : e->ctx ? 1000 : -1;
            struct syscall *sc = sched_next(e->sched, SYSCALL_KIND_LLM, &e->core, wait_ms);
            if (!sc) break;
            if (!e->ctx) { /* released (retired): only a straggler gets here */
                syscall_fail(sc, AIOS_ENOTFOUND, 404, "model '%s' was removed from this kernel's "
                             "configuration (POST /core/refresh); GET /v1/models lists the "
                             "served ones", e->core.name);
                sched_done(e->sched, sc);
                continue;
            }
            seq_start(e, sc);
        }
        if (!e->seqs) continue; /* shutting down, or every new call failed at once */
        step(e);
        publish_stats(e);
    }
    end_all(e);
    publish_stats(e);
    return NULL;
}

static int eng_start(struct llm_core *c, struct sched *s)
{
    struct llama_engine *e = c->impl;
    e->sched = s;
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) return AIOS_ENOMEM;
    e->thread_started = true;
    return 0;
}

static void eng_stop(struct llm_core *c)
{
    struct llama_engine *e = c->impl;
    if (e->thread_started) {
        pthread_join(e->thread, NULL);
        e->thread_started = false;
    }
}

static const struct llm_core_ops eng_ops;

bool llm_engine_is_local(const struct llm_core *c) { return c && c->ops == &eng_ops; }

int llm_engine_preempt(struct llm_core *c, uint64_t syscall_id, int hold_steps)
{
    if (!llm_engine_is_local(c)) return AIOS_EINVAL;
    struct llama_engine *e = c->impl;
    int rc = 0;
    pthread_mutex_lock(&e->req_mu);
    if (e->n_reqs == e->cap_reqs) {
        int cap = e->cap_reqs ? e->cap_reqs * 2 : 8;
        struct preempt_req *p = realloc(e->reqs, sizeof *p * (size_t)cap);
        if (!p) rc = AIOS_ENOMEM;
        else e->reqs = p, e->cap_reqs = cap;
    }
    if (!rc) e->reqs[e->n_reqs++] = (struct preempt_req){syscall_id, hold_steps < 0 ? 0 : hold_steps};
    pthread_mutex_unlock(&e->req_mu);
    return rc;
}

int llm_engine_get_stats(struct llm_core *c, struct llm_engine_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!llm_engine_is_local(c)) return AIOS_EINVAL;
    struct llama_engine *e = c->impl;
    pthread_mutex_lock(&e->stats_mu);
    *out = e->pub;
    pthread_mutex_unlock(&e->stats_mu);
    ctx_store_get_stats(e->store, &out->snaps);
    return 0;
}

static void eng_destroy(struct llm_core *c)
{
    struct llama_engine *e = c->impl;
    eng_stop(c);
    for (int i = 0; i < ENGINE_MAX_SEQ; i++) {
        free(e->slots[i].agent);
        free(e->slots[i].toks);
    }
    for (int j = 0; j < e->n_kv_agents; j++) free(e->kv_agents[j]);
    if (e->batch.token) llama_batch_free(e->batch);
    free(e->lp_cand);
    free(e->lp_logit);
    ctx_store_destroy(e->store);
    free(e->reqs);
    pthread_mutex_destroy(&e->req_mu);
    pthread_mutex_destroy(&e->stats_mu);
    if (e->ctx) llama_free(e->ctx);
    if (e->model) llama_model_free(e->model);
    free(e->path);
    free(c->name);
    free(c->backend);
    free(e);
}

static void eng_describe(struct llm_core *c, json_t *o)
{
    struct llama_engine *e = c->impl;
    json_object_set_new(o, "path", json_string(e->path));
    json_object_set_new(o, "description", json_string(e->desc));
    json_object_set_new(o, "n_ctx", json_integer(e->n_ctx));
    json_object_set_new(o, "n_threads", json_integer(e->n_threads));
    json_object_set_new(o, "n_params", json_integer((json_int_t)llama_model_n_params(e->model)));
    json_object_set_new(o, "random_weights", json_boolean(e->random_weights));
    struct llm_engine_stats st;
    llm_engine_get_stats(c, &st);
    json_t *en = json_object();
    json_object_set_new(en, "n_parallel", json_integer(e->n_parallel));
    json_object_set_new(en, "retain_max", json_integer(e->n_slots - e->n_parallel - URGENT_EXTRA));
    json_object_set_new(en, "kv_size", json_integer(e->kv_size));
    json_object_set_new(en, "n_batch", json_integer(e->n_batch));
    json_object_set_new(en, "prefill_chunk", json_integer(e->prefill_chunk));
    json_object_set_new(en, "retain", json_boolean(e->retain));
    json_object_set_new(en, "batch_invariant", e->bi_mode == BI_SEEDED ? json_string("seeded")
                                                : json_boolean(e->bi_mode == BI_ALL));
    json_object_set_new(en, "kv_type", json_string(e->kv_q8 ? "q8_0" : "f16"));
    json_object_set_new(en, "running", json_integer(st.n_running));
    json_object_set_new(en, "switched_out", json_integer(st.n_swapped));
    json_object_set_new(en, "retained", json_integer(st.n_retained));
    json_object_set_new(en, "kv_cells_used", json_integer(st.n_kv_cells));
    json_object_set_new(en, "steps", json_integer((json_int_t)st.n_steps));
    json_object_set_new(en, "split_steps", json_integer((json_int_t)st.n_split_steps));
    json_object_set_new(en, "aborted_steps", json_integer((json_int_t)st.n_aborted_steps));
    json_object_set_new(en, "padded_steps", json_integer((json_int_t)st.n_padded_steps));
    json_object_set_new(en, "lone_row_exact", json_boolean(st.lone_row_exact));
    json_object_set_new(en, "prompt_tokens_tiled", json_integer((json_int_t)st.n_rows_tiled));
    json_object_set_new(en, "calls", json_integer((json_int_t)st.n_calls));
    json_object_set_new(en, "prompt_tokens_computed", json_integer((json_int_t)st.n_tokens_prefilled));
    json_object_set_new(en, "prompt_tokens_reused", json_integer((json_int_t)st.n_tokens_reused));
    json_object_set_new(en, "tokens_generated", json_integer((json_int_t)st.n_tokens_generated));
    json_object_set_new(en, "preemptions", json_integer((json_int_t)st.n_preemptions));
    json_object_set_new(en, "resumes", json_integer((json_int_t)st.n_resumes));
    json_object_set_new(en, "retained_hits", json_integer((json_int_t)st.n_retained_hits));
    json_object_set_new(en, "shared_prefix_hits", json_integer((json_int_t)st.n_shared_hits));
    json_object_set_new(en, "evictions", json_integer((json_int_t)st.n_evictions));
    if (st.released) json_object_set_new(en, "released", json_true());
    json_object_set_new(en, "snapshots", json_pack("{s:I,s:I,s:I,s:I,s:I}", "saved",
                        (json_int_t)st.snaps.n_saved, "restored", (json_int_t)st.snaps.n_restored,
                        "spilled", (json_int_t)st.snaps.n_spilled, "bytes_ram",
                        (json_int_t)st.snaps.bytes_ram, "bytes_disk", (json_int_t)st.snaps.bytes_disk));
    json_object_set_new(o, "engine", en);
    /* where the layers and the KV cache live, and the bytes they take */
    json_t *g = gpu_placement_json(&e->gpu, &e->plan, e->model);
    int nl = llama_model_n_layer(e->model);
    int off = gpu_layers_offloaded(&e->plan, e->model);
    int64_t kv_bytes = (int64_t)e->kv_size * e->cell_bytes;
    int64_t kv_dev = e->gpu.offload_kqv && nl > 0 ? kv_bytes / nl * off : 0;
    json_object_set_new(g, "kv_bytes", json_integer((json_int_t)kv_bytes));
    json_object_set_new(g, "kv_bytes_on_device", json_integer((json_int_t)kv_dev));
    json_object_set_new(g, "kv_on_device", json_boolean(kv_dev > 0));
    json_object_set_new(g, "cell_bytes", json_integer((json_int_t)e->cell_bytes));
    if (e->kv_dev_cells >= 0) {
        json_object_set_new(g, "kv_bytes_device_budget", json_integer((json_int_t)e->kv_dev_avail));
        json_object_set_new(g, "compute_reserve_bytes",
                            json_integer((json_int_t)gpu_compute_reserve(&e->plan, e->model, e->n_batch)));
        json_object_set_new(g, "kv_cells_device_max", json_integer(e->kv_dev_cells));
        json_object_set_new(g, "kv_size_limited_by_device", json_boolean(e->kv_dev_limited));
    }
    json_object_set_new(o, "placement", g);
}

static const struct llm_core_ops eng_ops = {
    .prepare = eng_prepare,
    .start = eng_start,
    .stop = eng_stop,
    .destroy = eng_destroy,
    .describe = eng_describe,
};

/* ---- configuration ---- */

/* The llms.models[] entry named `name` in the raw config, and its index. */
static json_t *model_entry(const struct aios_config *cfg, const char *name, size_t *idx)
{
    json_t *list = cfg ? config_lookup(cfg, "llms.models") : NULL, *m;
    size_t i;
    if (!json_is_array(list)) return NULL;
    json_array_foreach(list, i, m) {
        json_t *n = json_object_get(m, "name");
        if (json_is_string(n) && !strcmp(json_string_value(n), name)) {
            *idx = i;
            return m;
        }
    }
    return NULL;
}

static const char *json_kind(json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "a mapping";
    case JSON_ARRAY: return "a list";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* 1: absent (v unchanged), 0: set, AIOS_ECONFIG with a message */
static int knob_int(json_t *v, const char *what, long long lo, long long hi, long long *out,
                    char *err, size_t errlen)
{
    if (!v || json_is_null(v)) return 1;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        snprintf(err, errlen, "%s: expected an integer in %lld..%lld, got %s", what, lo, hi,
                 json_is_integer(v) ? "a value out of range" : json_kind(v));
        return AIOS_ECONFIG;
    }
    *out = json_integer_value(v);
    return 0;
}

enum { KV_AUTO, KV_Q8, KV_F16 };

struct eng_knobs {
    long long n_parallel, retain_max, kv_size, n_batch, prefill_chunk, share_min, debug_preempt;
    long long snap_ram, urgent_prio, urgent_tokens, urgent_chunk;
    int kv_type; /* KV_AUTO, KV_Q8, KV_F16 */
    bool retain;
    bool kv_size_set;
    struct gpu_opts gpu;
    int bi_mode;
    char *spill_dir;
};

static int read_knobs(const struct aios_config *cfg, const struct cfg_model *m, int n_ctx,
                      struct eng_knobs *k, char *err, size_t errlen)
{
    size_t idx = 0;
    json_t *ent = model_entry(cfg, m->name, &idx);
    char what[160];
    int rc;
    k->n_parallel = 32;
    k->retain_max = -1;
    k->n_batch = 512;
    k->prefill_chunk = -1;
    k->kv_size = -1;
    k->share_min = 16;
    k->debug_preempt = 0;
    k->retain = true;
    k->bi_mode = BI_SEEDED;
    k->snap_ram = 256LL << 20;
#define KNOB(key, lo, hi, dst)                                                              \
    do {                                                                                   \
        snprintf(what, sizeof what, "llms.models[%zu].%s", idx, key);                      \
        rc = knob_int(ent ? json_object_get(ent, key) : NULL, what, lo, hi, dst, err, errlen); \
        if (rc < 0) return rc;                                                             \
    } while (0)
    /* ids beyond n_parallel: the latency lane's and the padding one */
    KNOB("n_parallel", 1, ENGINE_MAX_SEQ - URGENT_EXTRA - 1, &k->n_parallel);
    KNOB("retain_max", 0, ENGINE_MAX_SEQ - 1, &k->retain_max);
    KNOB("n_batch", 16, 65536, &k->n_batch);
    KNOB("prefill_chunk", 1, 65536, &k->prefill_chunk);
    KNOB("kv_size", 16, 1LL << 24, &k->kv_size);
    KNOB("prefix_share_min", 1, 1LL << 24, &k->share_min);
    KNOB("debug_preempt_every_tokens", 0, 1LL << 24, &k->debug_preempt);
#undef KNOB
    k->kv_size_set = k->kv_size >= 0;
    snprintf(what, sizeof what, "llms.models[%zu]", idx);
    rc = gpu_opts_read(ent, what, &k->gpu, err, errlen);
    if (rc < 0) return rc;
    json_t *v = ent ? json_object_get(ent, "retain") : NULL;
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v)) {
            snprintf(err, errlen, "llms.models[%zu].retain: expected true or false, got %s", idx,
                     json_kind(v));
            return AIOS_ECONFIG;
        }
        k->retain = json_is_true(v);
    }
    v = ent ? json_object_get(ent, "batch_invariant") : NULL;
    if (v && !json_is_null(v)) {
        if (json_is_boolean(v)) k->bi_mode = json_is_true(v) ? BI_ALL : BI_OFF;
        else if (json_is_string(v) && !strcmp(json_string_value(v), "seeded")) k->bi_mode = BI_SEEDED;
        else {
            snprintf(err, errlen, "llms.models[%zu].batch_invariant: expected true, false or "
                     "\"seeded\", got %s", idx, json_is_string(v) ? json_string_value(v) : json_kind(v));
            return AIOS_ECONFIG;
        }
    }
    k->urgent_prio = 10;
    k->urgent_tokens = 64;
    k->urgent_chunk = 8;
    rc = knob_int(cfg ? config_lookup(cfg, "scheduler.interactive_priority") : NULL,
                  "scheduler.interactive_priority", 0, SYSCALL_PRIORITY_MAX, &k->urgent_prio, err, errlen);
    if (rc < 0) return rc;
    rc = knob_int(cfg ? config_lookup(cfg, "scheduler.interactive_tokens") : NULL,
                  "scheduler.interactive_tokens", 1, 1 << 20, &k->urgent_tokens, err, errlen);
    if (rc < 0) return rc;
    rc = knob_int(cfg ? config_lookup(cfg, "scheduler.interactive_chunk") : NULL,
                  "scheduler.interactive_chunk", 1, 65536, &k->urgent_chunk, err, errlen);
    if (rc < 0) return rc;
    rc = knob_int(cfg ? config_lookup(cfg, "context.snapshot_ram_bytes") : NULL,
                  "context.snapshot_ram_bytes", 0, INT64_MAX, &k->snap_ram, err, errlen);
    if (rc < 0) return rc;
    v = cfg ? config_lookup(cfg, "context.spill_dir") : NULL;
    if (v && !json_is_null(v) && !json_is_string(v)) {
        snprintf(err, errlen, "context.spill_dir: expected a path, got %s", json_kind(v));
        return AIOS_ECONFIG;
    }
    const char *sd = json_is_string(v) ? json_string_value(v) : "kv-spill";
    v = ent ? json_object_get(ent, "kv_type") : NULL;
    k->kv_type = KV_AUTO;
    if (v && !json_is_null(v)) {
        const char *t = json_is_string(v) ? json_string_value(v) : "";
        if (!strcmp(t, "q8_0")) k->kv_type = KV_Q8;
        else if (!strcmp(t, "f16")) k->kv_type = KV_F16;
        else if (strcmp(t, "auto")) {
            snprintf(err, errlen, "llms.models[%zu].kv_type: expected \"auto\", \"f16\" or "
                     "\"q8_0\", got %s", idx, json_is_string(v) ? t : json_kind(v));
            return AIOS_ECONFIG;
        }
    }
    k->spill_dir = cfg ? config_resolve_path(cfg, sd) : NULL;
    if (k->n_batch < k->n_parallel) {
        /* every running sequence must get its decode token each step */
        snprintf(err, errlen, "llms.models[%zu].n_batch: %lld is smaller than n_parallel (%lld)",
                 idx, k->n_batch, k->n_parallel);
        return AIOS_ECONFIG;
    }
    if (k->prefill_chunk < 0 || k->prefill_chunk > k->n_batch) k->prefill_chunk = k->n_batch;
    /* retained conversations live in sequence ids of their own, so that
     * many agents' conversations stay resident while n_parallel of them
     * run; the KV budget (kv_size), not the number of ids, bounds them */
    if (k->retain_max < 0) k->retain_max = 64;
    if (!k->retain) k->retain_max = 0;
    if (k->n_parallel + URGENT_EXTRA + k->retain_max > ENGINE_MAX_SEQ - 1)
        k->retain_max = ENGINE_MAX_SEQ - 1 - URGENT_EXTRA - k->n_parallel; /* 1: padding */
    if (k->kv_size < 0) k->kv_size = (long long)n_ctx * 4;
    if (k->kv_size < n_ctx) {
        snprintf(err, errlen, "llms.models[%zu].kv_size: %lld is smaller than n_ctx (%d); one "
                 "sequence must fit", idx, k->kv_size, n_ctx);
        free(k->spill_dir);
        k->spill_dir = NULL;
        return AIOS_ECONFIG;
    }
    return 0;
}

/* Does a one-row llama_decode call give the logits that the same row
 * gets beside another row, bit for bit, for this model's matrices on this
 * CPU? ggml multiplies one row with dot products and two rows or more
 * with tinyBLAS's GEMMs where it has one for the weight type; whether they
 * round alike depends on the type (F32: not; Q8_0: alike, `bench_engine
 * lone`). Asked once at load, in the engine's own context while it is
 * empty: 4 prompt tokens, then the 5th alone and again beside the padding
 * row (attention over 5 cells is the same either way, so only the
 * matrices can differ). false also when anything fails: then every lone
 * batch-invariant row is padded, as is always exact. */
static bool lone_row_check(struct llama_engine *e)
{
    int n_vocab = llama_vocab_n_tokens(e->vocab);
    float *a = malloc(sizeof *a * (size_t)n_vocab);
    struct llama_batch b = llama_batch_init(8, 0, 1);
    bool same = false;
    if (!a) goto out;
    int32_t t0 = e->pad_tok, t1 = n_vocab > 300 ? 300 : n_vocab - 1;
    for (int k = 0; k < 4; k++) batch_add(&b, k % 2 ? t1 : t0, k, 0, false);
    if (llama_decode(e->ctx, b)) goto out;
    b.n_tokens = 0;
    batch_add(&b, t1, 4, 0, true);
    if (llama_decode(e->ctx, b)) goto out;
    memcpy(a, llama_get_logits_ith(e->ctx, 0), sizeof *a * (size_t)n_vocab);
    llama_memory_seq_rm(mem(e), 0, 4, -1);
    batch_add(&b, e->pad_tok, 0, e->pad_seq, false);
    if (llama_decode(e->ctx, b)) goto out;
    same = !memcmp(a, llama_get_logits_ith(e->ctx, 0), sizeof *a * (size_t)n_vocab);
out:
    llama_memory_clear(mem(e), true);
    llama_batch_free(b);
    free(a);
    return same;
}

int llm_llama_create(struct llm_core **out, const struct cfg_model *m,
                     const struct aios_config *cfg, char *err, size_t errlen)
{
    *out = NULL;
    llm_llama_global_init();
    struct eng_knobs kn = {0};
    struct llama_engine *e = calloc(1, sizeof *e);
    if (!e) return AIOS_ENOMEM;
    pthread_mutex_init(&e->req_mu, NULL);
    pthread_mutex_init(&e->stats_mu, NULL);
    e->core.impl = e;
    e->core.ops = &eng_ops;
    e->core.name = strdup(m->name);
    e->core.backend = strdup("llamacpp");
    e->core.created = (int64_t)time(NULL);
    e->path = strdup(m->path ? m->path : "");
    if (!e->core.name || !e->core.backend || !e->path) goto nomem;

    e->n_ctx = m->n_ctx > 0 ? m->n_ctx : 4096;
    if (read_knobs(cfg, m, e->n_ctx, &kn, err, errlen)) goto fail;
    e->n_parallel = (int)kn.n_parallel;
    /* ids for the running calls, the latency lane and retained ones */
    e->n_slots = (int)(kn.n_parallel + URGENT_EXTRA + kn.retain_max);
    e->kv_size = (int)kn.kv_size;
    e->n_batch = (int)kn.n_batch;
    e->prefill_chunk = (int)kn.prefill_chunk;
    e->prefix_share_min = (int)kn.share_min;
    e->debug_preempt_every = (int)kn.debug_preempt;
    e->urgent_prio = (int)kn.urgent_prio;
    e->urgent_tokens = (int)kn.urgent_tokens;
    e->urgent_chunk = (int)kn.urgent_chunk;
    e->retain = kn.retain;
    e->bi_mode = kn.bi_mode;
    if (ctx_store_create(&e->store, (size_t)kn.snap_ram, kn.spill_dir)) goto nomem;

    if (access(e->path, R_OK) != 0) {
        snprintf(err, errlen, "model %s: cannot read GGUF file %s", m->name, e->path);
        goto fail;
    }
    struct llama_model_params mp = llama_model_default_params();
    e->gpu = kn.gpu;
    e->kv_dev_cells = -1;
    {
        char where[64];
        size_t idx = 0;
        model_entry(cfg, m->name, &idx);
        snprintf(where, sizeof where, "llms.models[%zu]", idx);
        if (gpu_resolve(&e->gpu, where, &e->plan, &mp, err, errlen)) goto fail;
    }
    /* (mp points into e->gpu and e->plan, which outlive the load) */
    e->model = llama_model_load_from_file(e->path, mp);
    if (!e->model) {
        if (e->plan.n_gpu_layers > 0)
            snprintf(err, errlen, "model %s: %s could not be loaded: not a GGUF model, or its "
                     "layers do not fit in device memory (%lld MiB free; lower n_gpu_layers)",
                     m->name, e->path, (long long)(e->plan.free_bytes >> 20));
        else
            snprintf(err, errlen, "model %s: %s is not a loadable GGUF model", m->name, e->path);
        goto fail;
    }
    e->vocab = llama_model_get_vocab(e->model);
    e->tmpl = llama_model_chat_template(e->model, NULL);
    if (!e->tmpl) {
        LOG_WARN("engine", "model %s has no chat template; using ChatML", m->name);
        e->tmpl = "chatml";
    }
    llama_model_desc(e->model, e->desc, sizeof e->desc);
    char gname[128] = "";
    llama_model_meta_val_str(e->model, "general.name", gname, sizeof gname);
    e->random_weights = strncmp(gname, "aios-test", 9) == 0;

    e->n_threads = m->n_threads > 0 ? m->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (e->n_threads <= 0) e->n_threads = 2;
    /* a model this small is all synchronisation overhead with more threads
     * (each graph node ends in a barrier), badly so on a busy machine */
    if (m->n_threads <= 0 && llama_model_n_params(e->model) < 50000000) e->n_threads = 1;
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)e->kv_size;
    cp.n_batch = (uint32_t)e->n_batch;
    /* one llama_decode call is one micro-batch: step() decides which rows
     * go together (batch invariance is kept by its cuts, per call) */
    cp.n_ubatch = (uint32_t)e->n_batch;
    cp.kv_unified = true;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
    cp.abort_callback = abort_cb;
    cp.abort_callback_data = e;
    /* ggml's CPU flash attention takes a KV-split path (other rounding)
     * for a micro-batch of exactly one query row once the cache spans 512
     * cells, for F16/F32 caches (not Q8_0): step() pads such a call with a
     * token of one more, reserved sequence id. */
    int n_head = llama_model_n_head(e->model), n_head_kv = llama_model_n_head_kv(e->model);
    int64_t head_dim = n_head > 0 ? (int64_t)llama_model_n_embd(e->model) / n_head : 0;
    e->pad_seq = -1;
    bool q8_ok = head_dim % ggml_blck_size(GGML_TYPE_Q8_0) == 0;
    if (kn.kv_type == KV_Q8 && !q8_ok) {
        snprintf(err, errlen, "model %s: kv_type q8_0 needs a head size that is a multiple of "
                 "32 (this model's is %lld); use f16", m->name, (long long)head_dim);
        goto fail;
    }
    /* auto: F16, measured 1.21x faster than Q8_0 on 8 agents at ~1000
     * cells (docs/performance.md); Q8_0 only when asked for */
    bool q8 = kn.kv_type == KV_Q8;
    if (q8) cp.type_k = cp.type_v = GGML_TYPE_Q8_0;
    else if (e->bi_mode != BI_OFF)
        e->pad_seq = e->n_slots;
    e->kv_q8 = q8;
    cp.n_seq_max = (uint32_t)e->n_slots + (e->pad_seq >= 0);
    cp.offload_kqv = e->gpu.offload_kqv;
    {
        /* KV cells of the offloaded layers live on the devices: the budget
         * is what fits there (gpu.c), in llama.cpp's units of 256 cells */
        int nl = llama_model_n_layer(e->model);
        int off = gpu_layers_offloaded(&e->plan, e->model);
        if (off > 0 && e->gpu.offload_kqv && nl > 0) {
            int64_t dev_cell = (int64_t)off * 2 * (int64_t)ggml_row_size(cp.type_k, head_dim * n_head_kv);
            e->kv_dev_avail = gpu_kv_bytes_avail(&e->gpu, &e->plan, e->model, e->n_batch);
            int64_t cells = e->kv_dev_avail > 0 ? e->kv_dev_avail / dev_cell : 0;
            if (cells >= 256) cells = cells / 256 * 256;
            if (cells > (1LL << 24)) cells = 1LL << 24;
            int64_t need = ((int64_t)e->n_ctx + 255) / 256 * 256;
            if (cells < need) {
                size_t idx = 0;
                model_entry(cfg, m->name, &idx);
                const double mib = 1024.0 * 1024.0;
                snprintf(err, errlen, "llms.models[%zu]: the KV cache of one sequence (n_ctx %d: "
                         "%.1f MiB) does not fit in device memory (%.1f MiB left for KV of %.1f "
                         "MiB free%s, after %.1f MiB of weights and %.1f MiB for computing); "
                         "lower n_ctx or n_gpu_layers, or raise gpu_mem_bytes", idx, e->n_ctx,
                         (double)(need * dev_cell) / mib,
                         (double)(e->kv_dev_avail > 0 ? e->kv_dev_avail : 0) / mib,
                         (double)e->plan.free_bytes / mib,
                         e->gpu.mem_bytes >= 0 ? ", capped by gpu_mem_bytes" : "",
                         (double)gpu_model_bytes_on_device(&e->plan, e->model) / mib,
                         (double)gpu_compute_reserve(&e->plan, e->model, e->n_batch) / mib);
                goto fail;
            }
            e->kv_dev_cells = (int)cells;
            if (e->kv_size > cells) {
                if (kn.kv_size_set)
                    LOG_WARN("engine", "model %s: kv_size %d does not fit in device memory; "
                             "using %lld cells", m->name, e->kv_size, (long long)cells);
                e->kv_size = (int)cells;
                e->kv_dev_limited = true;
                cp.n_ctx = (uint32_t)e->kv_size;
            }
        }
    }
    cp.n_threads = e->n_threads;
    cp.n_threads_batch = e->n_threads;
    cp.no_perf = true;
    e->ctx = llama_init_from_model(e->model, cp);
    if (!e->ctx) {
        /* what the KV cache alone would take: the usual reason is memory */
        int64_t kv_mib = (int64_t)llama_model_n_layer(e->model) * 2 *
                         (int64_t)ggml_row_size(cp.type_k, head_dim * n_head_kv) * cp.n_ctx >> 20;
        snprintf(err, errlen, "model %s: could not create a context of %u tokens for %d sequences "
                 "(its KV cache alone needs %lld MiB: out of memory? lower kv_size)",
                 m->name, cp.n_ctx, e->n_parallel, (long long)kv_mib);
        goto fail;
    }
    e->kv_size = (int)llama_n_ctx(e->ctx);
    {
        /* K and V rows of every layer, in the cache's type */
        int64_t kv_dim = head_dim * n_head_kv;
        e->cell_bytes = (int64_t)llama_model_n_layer(e->model) * 2 *
                        (int64_t)ggml_row_size(cp.type_k, kv_dim);
    }
    e->pad_tok = llama_vocab_bos(e->vocab) >= 0 ? llama_vocab_bos(e->vocab) : 0;
    e->batch = llama_batch_init(e->n_batch + 1, 0, 1); /* + a padding token */
    if (e->pad_seq >= 0) e->lone_exact = lone_row_check(e);
    e->st.lone_row_exact = e->lone_exact;
    e->st.n_parallel = e->n_parallel;
    e->st.kv_size = e->kv_size;
    e->st.n_ctx = e->n_ctx;
    e->st.n_batch = e->n_batch;
    e->st.prefill_chunk = e->prefill_chunk;
    e->st.retain = e->retain;
    e->pub = e->st;
    LOG_INFO("engine", "loaded %s from %s (%s, %.1fM params, n_ctx=%d per call, kv_size=%d, "
             "n_parallel=%d, n_batch=%d, threads=%d)", m->name, e->path, e->desc,
             llama_model_n_params(e->model) / 1e6, e->n_ctx, e->kv_size, e->n_parallel,
             e->n_batch, e->n_threads);
    if (e->random_weights)
        LOG_WARN("engine", "model %s is a built-in TEST model with RANDOM weights: its text is "
                 "noise; use --model FILE.gguf for real answers", m->name);
    free(kn.spill_dir);
    *out = &e->core;
    return 0;
nomem:
    snprintf(err, errlen, "out of memory");
fail:
    free(kn.spill_dir);
    eng_destroy(&e->core);
    return AIOS_ECONFIG;
}
