/* The embedded llama.cpp engine.
 *
 * One engine per loaded GGUF model. It owns the llama_model (immutable and
 * shared read-only with HTTP threads for tokenising) and one llama_context
 * (touched only by the engine thread). The engine thread pulls LLM syscalls
 * for this core from the scheduler and runs them to completion, one sequence
 * at a time in this first version: clear the KV cache, prefill the prompt in
 * chunks of n_batch, then decode token by token with a per-request sampler
 * chain, streaming text through syscall_emit().
 *
 * Threads: llm_llama_create() and destroy() run on the main thread; prepare()
 * on HTTP threads (it only reads the model and vocab); everything touching
 * the context runs on the engine thread.
 *
 * Output text: pieces are accumulated as raw bytes; the part that cannot be
 * affected by later tokens (no pending stop-string prefix, no unfinished
 * UTF-8 sequence) is sanitised and emitted. The final answer is the
 * concatenation of what was emitted, so streamed and non-streamed results of
 * the same seed are byte-identical. */
#include "llm/core.h"

#include "llm/chat.h"
#include "llm/structured.h"
#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <llama.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct llama_engine {
    struct llm_core core;
    char *path;
    struct llama_model *model;
    const struct llama_vocab *vocab;
    struct llama_context *ctx;
    const char *tmpl; /* owned by the model */
    int n_ctx, n_batch, n_threads;
    bool random_weights;
    char desc[128];
    struct sched *sched;
    pthread_t thread;
    bool thread_started;
    /* engine-thread statistics */
    uint64_t n_calls, n_tokens_prefilled, n_tokens_generated;
};

static void log_cb(enum ggml_log_level level, const char *text, void *ud)
{
    (void)ud;
    if (level == GGML_LOG_LEVEL_ERROR) {
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
    free(r->prompt);
    free(r->tokens);
    free(r);
}

void llm_res_free(void *p)
{
    struct llm_res *r = p;
    if (!r) return;
    free(r->text);
    json_decref(r->tool_calls);
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
    if (req->p.max_tokens > 0 && nt + req->p.max_tokens > e->n_ctx) {
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

static struct llama_sampler *make_sampler(struct llama_engine *e, const struct llm_req *req)
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

struct gen_state {
    char *raw; /* generated bytes (before sanitising) */
    size_t n_raw, cap_raw;
    size_t n_done;  /* raw bytes already emitted */
    struct llm_res *res;
    size_t cap_text;
};

/* Emit raw[n_done..upto) sanitised, to the result text and the stream. */
static int gen_emit(struct syscall *sc, struct gen_state *g, size_t upto)
{
    if (upto <= g->n_done) return 0;
    size_t before = g->res->len;
    int rc = chat_utf8_append_sanitized(&g->res->text, &g->res->len, &g->cap_text,
                                        g->raw + g->n_done, upto - g->n_done);
    if (rc) return rc;
    g->n_done = upto;
    if (sc->stream) return syscall_emit(sc, g->res->text + before, g->res->len - before);
    return 0;
}

static int batch_fill(struct llama_batch *b, const int32_t *toks, int n, int pos0, bool logits_last)
{
    b->n_tokens = n;
    for (int i = 0; i < n; i++) {
        b->token[i] = toks[i];
        b->pos[i] = pos0 + i;
        b->n_seq_id[i] = 1;
        b->seq_id[i][0] = 0;
        b->logits[i] = (int8_t)(logits_last && i == n - 1);
    }
    return n;
}

/* Between batches: stop if the caller went away or the kernel is stopping. */
static bool should_stop(struct llama_engine *e, struct syscall *sc)
{
    if (syscall_cancel_requested(sc)) {
        syscall_fail(sc, AIOS_ECANCELLED, 499, "the client went away");
        return true;
    }
    if (sched_stopping(e->sched)) {
        syscall_fail(sc, AIOS_ESHUTDOWN, 503, "the kernel is shutting down");
        return true;
    }
    return false;
}

static void run_call(struct llama_engine *e, struct syscall *sc, struct llama_batch *batch)
{
    struct llm_req *req = sc->req;
    struct llm_res *res = calloc(1, sizeof *res);
    struct gen_state g = {0};
    struct llama_sampler *smpl = NULL;
    int rc;

    if (!res) {
        syscall_fail(sc, AIOS_ENOMEM, 500, "out of memory");
        return;
    }
    g.res = res;
    res->n_prompt = req->n_tokens;
    res->finish_reason = "length";

    smpl = make_sampler(e, req);
    if (!smpl) {
        syscall_fail(sc, AIOS_EINVAL, 400, "could not create a sampler%s",
                     req->grammar ? " (the output grammar does not parse)" : "");
        goto out;
    }

    /* one sequence at a time: start from an empty cache */
    llama_memory_clear(llama_get_memory(e->ctx), true);

    int64_t t0 = util_now_us();
    int pos = 0;
    for (int i = 0; i < req->n_tokens; i += e->n_batch) {
        if (should_stop(e, sc)) goto out;
        int n = req->n_tokens - i < e->n_batch ? req->n_tokens - i : e->n_batch;
        batch_fill(batch, req->tokens + i, n, pos, i + n == req->n_tokens);
        rc = llama_decode(e->ctx, *batch);
        if (rc != 0) {
            syscall_fail(sc, AIOS_EENGINE, 500, "llama_decode failed during prefill (%d)", rc);
            goto out;
        }
        pos += n;
    }
    res->n_prompt_computed = req->n_tokens;
    e->n_tokens_prefilled += (uint64_t)req->n_tokens;
    int64_t t1 = util_now_us();
    res->t_prefill_us = t1 - t0;

    int max_new = req->p.max_tokens > 0 ? req->p.max_tokens : e->n_ctx - req->n_tokens;
    char piece[256];
    for (;;) {
        if (should_stop(e, sc)) goto out;
        llama_token tok = llama_sampler_sample(smpl, e->ctx, -1);
        if (llama_vocab_is_eog(e->vocab, tok)) {
            res->finish_reason = "stop";
            break;
        }
        res->n_gen++;
        /* under a grammar, special tokens are text the grammar matched:
         * render them, or the output would differ from what it checked */
        int np = llama_token_to_piece(e->vocab, tok, piece, sizeof piece, 0, req->grammar != NULL);
        if (np < 0) np = 0;
        if (g.n_raw + (size_t)np + 1 > g.cap_raw) {
            size_t c = g.cap_raw ? g.cap_raw * 2 : 1024;
            while (c < g.n_raw + (size_t)np + 1) c *= 2;
            char *p = realloc(g.raw, c);
            if (!p) {
                syscall_fail(sc, AIOS_ENOMEM, 500, "out of memory");
                goto out;
            }
            g.raw = p;
            g.cap_raw = c;
        }
        memcpy(g.raw + g.n_raw, piece, (size_t)np);
        size_t prev = g.n_raw;
        g.n_raw += (size_t)np;

        if (req->p.n_stop) {
            size_t maxl = 0;
            for (int k = 0; k < req->p.n_stop; k++) {
                size_t l = strlen(req->p.stop[k]);
                if (l > maxl) maxl = l;
            }
            size_t from = prev >= maxl ? prev - maxl + 1 : 0;
            if (from < g.n_done) from = g.n_done;
            long at = chat_stop_find(g.raw, g.n_raw, from, req->p.stop, req->p.n_stop);
            if (at >= 0) {
                g.n_raw = (size_t)at;
                res->finish_reason = "stop";
                break;
            }
        }
        size_t safe = g.n_raw - chat_stop_holdback(g.raw, g.n_raw, req->p.stop, req->p.n_stop);
        safe = chat_utf8_stable_len(g.raw, safe);
        if (gen_emit(sc, &g, safe)) {
            syscall_fail(sc, AIOS_ENOMEM, 500, "out of memory");
            goto out;
        }
        if (res->n_gen >= max_new || pos + 1 >= e->n_ctx) {
            res->finish_reason = "length";
            break;
        }
        batch_fill(batch, &tok, 1, pos, true);
        rc = llama_decode(e->ctx, *batch);
        if (rc != 0) {
            syscall_fail(sc, AIOS_EENGINE, 500, "llama_decode failed (%d)", rc);
            goto out;
        }
        pos++;
    }
    if (gen_emit(sc, &g, g.n_raw)) {
        syscall_fail(sc, AIOS_ENOMEM, 500, "out of memory");
        goto out;
    }
    if (!res->text) res->text = strdup("");
    res->t_decode_us = util_now_us() - t1;
    e->n_tokens_generated += (uint64_t)res->n_gen;
    e->n_calls++;
    LOG_DEBUG("engine", "%s: call %llu agent=%s prompt=%d gen=%d prefill=%.1fms decode=%.1fms",
              e->core.name, (unsigned long long)sc->id, sc->agent, res->n_prompt, res->n_gen,
              res->t_prefill_us / 1000.0, res->t_decode_us / 1000.0);
    syscall_finish(sc, res, llm_res_free);
    res = NULL;
out:
    if (smpl) llama_sampler_free(smpl);
    free(g.raw);
    llm_res_free(res);
}

static void *engine_main(void *arg)
{
    struct llama_engine *e = arg;
    struct llama_batch batch = llama_batch_init(e->n_batch, 0, 1);
    struct syscall *sc;
    while ((sc = sched_next(e->sched, SYSCALL_KIND_LLM, &e->core, -1))) {
        run_call(e, sc, &batch);
        sched_done(e->sched, sc);
    }
    llama_batch_free(batch);
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

static void eng_destroy(struct llm_core *c)
{
    struct llama_engine *e = c->impl;
    eng_stop(c);
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
}

static const struct llm_core_ops eng_ops = {
    .prepare = eng_prepare,
    .start = eng_start,
    .stop = eng_stop,
    .destroy = eng_destroy,
    .describe = eng_describe,
};

int llm_llama_create(struct llm_core **out, const struct cfg_model *m, char *err, size_t errlen)
{
    *out = NULL;
    llm_llama_global_init();
    struct llama_engine *e = calloc(1, sizeof *e);
    if (!e) return AIOS_ENOMEM;
    e->core.impl = e;
    e->core.ops = &eng_ops;
    e->core.name = strdup(m->name);
    e->core.backend = strdup("llamacpp");
    e->core.created = (int64_t)time(NULL);
    e->path = strdup(m->path ? m->path : "");
    if (!e->core.name || !e->core.backend || !e->path) goto nomem;

    if (access(e->path, R_OK) != 0) {
        snprintf(err, errlen, "model %s: cannot read GGUF file %s", m->name, e->path);
        goto fail;
    }
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    e->model = llama_model_load_from_file(e->path, mp);
    if (!e->model) {
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
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(m->n_ctx > 0 ? m->n_ctx : 4096);
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    cp.n_seq_max = 1;
    cp.n_threads = e->n_threads;
    cp.n_threads_batch = e->n_threads;
    cp.no_perf = true;
    e->ctx = llama_init_from_model(e->model, cp);
    if (!e->ctx) {
        snprintf(err, errlen, "model %s: could not create a context of %u tokens", m->name, cp.n_ctx);
        goto fail;
    }
    e->n_ctx = (int)llama_n_ctx(e->ctx);
    e->n_batch = (int)llama_n_batch(e->ctx);
    LOG_INFO("engine", "loaded %s from %s (%s, %.1fM params, n_ctx=%d, threads=%d)", m->name,
             e->path, e->desc, llama_model_n_params(e->model) / 1e6, e->n_ctx, e->n_threads);
    if (e->random_weights)
        LOG_WARN("engine", "model %s is a built-in TEST model with RANDOM weights: its text is "
                 "noise; use --model FILE.gguf for real answers", m->name);
    *out = &e->core;
    return 0;
nomem:
    snprintf(err, errlen, "out of memory");
fail:
    eng_destroy(&e->core);
    return AIOS_ECONFIG;
}
