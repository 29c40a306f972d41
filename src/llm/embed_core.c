/* The embedding model as a core the scheduler serves: POST /v1/embeddings.
 *
 * Purpose: the embedder of embedding.model (embed.c) is called directly by
 * the memory and storage workers. Calls from clients go through the same
 * path as chat calls instead: an LLM syscall whose target is this core, so
 * the access manager's model check and token budgets, the scheduler's
 * queue, policy, per-agent accounting (prompt tokens, engine time) and the
 * audit log treat it like any other model call. The API layer
 * (src/api/embeddings.c) parses and tokenizes on the HTTP thread and fills
 * req->tokens / req->emb_lens; this core's one worker thread takes the
 * calls in the policy's order and embeds every input of a call.
 *
 * Batching: the worker holds up to EC_MAX_CALLS calls at once. Each turn
 * it admits the calls waiting in the scheduler (sched_next(.., 0), in the
 * policy's order) while the next decode has room, then fills one
 * llama_decode with the held calls' next inputs, in order, up to the
 * embedder's n_batch tokens and n_seq inputs (emb_tokens_batch: one
 * sequence per input), so a list is embedded a batch at a time and
 * concurrent calls from different agents share decodes. A call is
 * answered when its last input was embedded; the time of each decode is
 * charged to the calls in it in proportion to their tokens there. The
 * vectors equal the one-at-a-time ones up to float rounding (measured in
 * docs/api.md); memory and storage keep their own one-text decodes
 * (emb_text) for stored vectors. The worker thread means no HTTP thread
 * ever waits for a decode.
 *
 * Not in k->cores: it is no chat model (kernel_find_core does not return
 * it, POST /core/refresh does not touch it, the preemption driver does not
 * drive it). The kernel owns it (k->embed_core), started after the
 * scheduler and stopped (joined) after sched_shutdown, before emb_close.
 *
 * Threads: the worker only; emb_tokens_batch() takes the embedder's leaf
 * mutex. */
#include "llm/embed.h"

#include "kernel/kernel.h"
#include "kernel/syscall.h"
#include "llm/core.h"
#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct emb_core {
    struct llm_core core;
    struct emb *emb;
    struct sched *s;
    pthread_t th;
    bool started;
};

static int ec_prepare(struct llm_core *c, struct llm_req *req, char *err, size_t errlen)
{
    (void)req;
    snprintf(err, errlen, "model '%s' is an embedding model: use POST /v1/embeddings", c->name);
    return AIOS_EINVAL;
}

#define EC_MAX_CALLS 64

/* a call the worker holds: its vectors so far and the next input */
struct ec_call {
    struct syscall *sc;
    struct llm_res *res;
    int next;  /* inputs embedded */
    int off;   /* first token of input `next` in req->tokens */
    int64_t t_us; /* its share of decode time */
    int n_dec; /* decodes it was part of */
};

/* the call failed: answer it and give it back to the scheduler */
static void ec_fail(struct emb_core *ec, struct ec_call *c, int err, int status, const char *msg)
{
    llm_res_free(c->res);
    c->res = NULL;
    syscall_fail(c->sc, err, status, "%s", msg);
    sched_done(ec->s, c->sc);
    c->sc = NULL;
}

static void ec_finish(struct emb_core *ec, struct ec_call *c)
{
    struct llm_req *req = c->sc->req;
    struct llm_res *res = c->res;
    res->n_prompt = res->n_prompt_computed = req->n_tokens;
    res->t_prefill_us = c->t_us;
    res->finish_reason = "stop";
    const char *prev = log_set_request_id(c->sc->request_id);
    LOG_DEBUG("embed", "call %llu agent=%s inputs=%d tokens=%d decodes=%d engine %.1f ms",
              (unsigned long long)c->sc->id, c->sc->agent, req->n_emb, req->n_tokens, c->n_dec,
              (double)c->t_us / 1000.0);
    log_set_request_id(prev);
    syscall_finish(c->sc, res, llm_res_free);
    c->res = NULL;
    sched_done(ec->s, c->sc);
    c->sc = NULL;
}

/* take sc into held[*n] (or answer it at once) */
static void ec_admit(struct emb_core *ec, struct syscall *sc, struct ec_call *held, int *n)
{
    struct ec_call *c = &held[*n];
    struct llm_req *req = sc->req;
    int dim = emb_dim(ec->emb);
    *c = (struct ec_call){.sc = sc};
    if (syscall_cancel_requested(sc)) {
        ec_fail(ec, c, AIOS_ECANCELLED, 499, "the client went away");
        return;
    }
    c->res = calloc(1, sizeof *c->res);
    if (c->res)
        c->res->emb = malloc(sizeof *c->res->emb * (size_t)dim *
                             (size_t)(req->n_emb ? req->n_emb : 1));
    if (!c->res || !c->res->emb) {
        ec_fail(ec, c, AIOS_ENOMEM, 500, "out of memory");
        return;
    }
    c->res->emb_dim = dim;
    for (int i = 0; i < req->n_emb; i++) /* the API checked these */
        if (req->emb_lens[i] < 1 || req->emb_lens[i] > emb_n_ctx(ec->emb)) {
            ec_fail(ec, c, AIOS_EINVAL, 400, "an input is empty or longer than embedding.n_ctx");
            return;
        }
    if (req->n_emb == 0) {
        ec_finish(ec, c);
        return;
    }
    (*n)++;
}

/* tokens and inputs the held calls still have to embed, up to the limits */
static bool ec_room(const struct emb_core *ec, const struct ec_call *held, int n)
{
    int64_t tok = 0, seq = 0;
    for (int i = 0; i < n; i++) {
        const struct llm_req *req = held[i].sc->req;
        tok += req->n_tokens - held[i].off;
        seq += req->n_emb - held[i].next;
    }
    return tok < emb_batch_tokens(ec->emb) && seq < emb_batch_seqs(ec->emb);
}

/* one decode over the held calls' next inputs; finished and failed calls
 * leave held[] */
static void ec_step(struct emb_core *ec, struct ec_call *held, int *n)
{
    int max_seq = emb_batch_seqs(ec->emb), max_tok = emb_batch_tokens(ec->emb);
    int dim = emb_dim(ec->emb);
    const int32_t *toks[256];
    int lens[256], who[256], ns = 0, nt = 0;
    int took[EC_MAX_CALLS] = {0}, took_tok[EC_MAX_CALLS] = {0};
    if (max_seq > 256) max_seq = 256;
    for (int c = 0; c < *n && ns < max_seq; c++) {
        struct llm_req *req = held[c].sc->req;
        int off = held[c].off;
        for (int i = held[c].next; i < req->n_emb && ns < max_seq; i++) {
            int len = req->emb_lens[i];
            if (nt + len > max_tok) break;
            toks[ns] = req->tokens + off;
            lens[ns] = len;
            who[ns++] = c;
            nt += len;
            off += len;
            took[c]++;
            took_tok[c] += len;
        }
    }
    assert(ns > 0); /* the first held call's next input always fits */
    float *out = malloc(sizeof *out * (size_t)dim * (size_t)ns);
    int rc = out ? 0 : AIOS_ENOMEM;
    int64_t t0 = util_now_us();
    if (!rc) rc = emb_tokens_batch(ec->emb, ns, toks, lens, out);
    int64_t dt = util_now_us() - t0;
    for (int s = 0; !rc && s < ns; s++) {
        struct ec_call *c = &held[who[s]];
        memcpy(c->res->emb + (size_t)c->next * (size_t)dim, out + (size_t)s * (size_t)dim,
               sizeof *out * (size_t)dim);
        c->off += lens[s];
        c->next++;
    }
    free(out);
    int m = 0;
    for (int c = 0; c < *n; c++) {
        struct ec_call *h = &held[c];
        struct llm_req *req = h->sc->req;
        if (took[c]) {
            h->t_us += nt ? dt * took_tok[c] / nt : 0;
            h->n_dec++;
        }
        if (rc && took[c]) {
            char msg[160];
            snprintf(msg, sizeof msg, "the embedding model failed on input %d: %s", h->next,
                     aios_strerror(rc));
            ec_fail(ec, h, rc, 500, msg);
        } else if (h->next == req->n_emb) {
            ec_finish(ec, h);
        } else if (syscall_cancel_requested(h->sc)) {
            ec_fail(ec, h, AIOS_ECANCELLED, 499, "the client went away");
        } else {
            held[m++] = *h;
        }
    }
    *n = m;
}

static void *ec_main(void *arg)
{
    struct emb_core *ec = arg;
    struct ec_call held[EC_MAX_CALLS];
    int n = 0;
    for (;;) {
        if (n == 0) {
            struct syscall *sc = sched_next(ec->s, SYSCALL_KIND_LLM, &ec->core, -1);
            if (!sc) break; /* shutdown */
            ec_admit(ec, sc, held, &n);
            continue;
        }
        /* calls that came meanwhile share the next decode while it has room */
        while (n < EC_MAX_CALLS && ec_room(ec, held, n)) {
            struct syscall *sc = sched_next(ec->s, SYSCALL_KIND_LLM, &ec->core, 0);
            if (!sc) break;
            ec_admit(ec, sc, held, &n);
        }
        ec_step(ec, held, &n);
    }
    return NULL;
}

static int ec_start(struct llm_core *c, struct sched *s)
{
    struct emb_core *ec = c->impl;
    ec->s = s;
    if (pthread_create(&ec->th, NULL, ec_main, ec)) return AIOS_ENOMEM;
    ec->started = true;
    return 0;
}

static void ec_stop(struct llm_core *c)
{
    struct emb_core *ec = c->impl;
    if (ec->started) pthread_join(ec->th, NULL);
    ec->started = false;
}

static void ec_destroy(struct llm_core *c)
{
    struct emb_core *ec = c->impl;
    ec_stop(c);
    free(c->name);
    free(c->backend);
    free(ec);
}

static void ec_describe(struct llm_core *c, json_t *o)
{
    struct emb_core *ec = c->impl;
    json_t *d = emb_describe(ec->emb);
    if (d) json_object_update(o, d);
    json_decref(d);
}

static const struct llm_core_ops g_ec_ops = {
    .prepare = ec_prepare,
    .start = ec_start,
    .stop = ec_stop,
    .destroy = ec_destroy,
    .describe = ec_describe,
};

int emb_core_create(struct llm_core **out, struct emb *emb)
{
    *out = NULL;
    struct emb_core *ec = calloc(1, sizeof *ec);
    if (!ec) return AIOS_ENOMEM;
    ec->emb = emb;
    ec->core.name = strdup(emb_name(emb));
    ec->core.backend = strdup("embedding");
    ec->core.created = (int64_t)(util_wall_us() / 1000000);
    ec->core.ops = &g_ec_ops;
    ec->core.impl = ec;
    if (!ec->core.name || !ec->core.backend) {
        free(ec->core.name);
        free(ec->core.backend);
        free(ec);
        return AIOS_ENOMEM;
    }
    *out = &ec->core;
    return 0;
}

struct emb *emb_core_embedder(struct llm_core *c)
{
    return c && c->ops == &g_ec_ops ? ((struct emb_core *)c->impl)->emb : NULL;
}
