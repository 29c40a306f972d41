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
 * Why one input per llama_decode and not several sequences in one batch:
 * embed.c keeps a text's vector independent of what is embedded with it
 * (same text, same bits, which memory and storage rely on for their stored
 * vectors); a client's vector must equal the one memory computes for the
 * same text. The worker thread means no HTTP thread ever waits for a
 * decode.
 *
 * Not in k->cores: it is no chat model (kernel_find_core does not return
 * it, POST /core/refresh does not touch it, the preemption driver does not
 * drive it). The kernel owns it (k->embed_core), started after the
 * scheduler and stopped (joined) after sched_shutdown, before emb_close.
 *
 * Threads: the worker only; emb_tokens() takes the embedder's leaf mutex. */
#include "llm/embed.h"

#include "kernel/kernel.h"
#include "kernel/syscall.h"
#include "llm/core.h"
#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

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

static void run_call(struct emb_core *ec, struct syscall *sc)
{
    struct llm_req *req = sc->req;
    int dim = emb_dim(ec->emb);
    if (syscall_cancel_requested(sc)) {
        syscall_fail(sc, AIOS_ECANCELLED, 499, "the client went away");
        return;
    }
    struct llm_res *res = calloc(1, sizeof *res);
    if (res) res->emb = malloc(sizeof *res->emb * (size_t)dim * (size_t)(req->n_emb ? req->n_emb : 1));
    if (!res || !res->emb) {
        llm_res_free(res);
        syscall_fail(sc, AIOS_ENOMEM, 500, "out of memory");
        return;
    }
    res->emb_dim = dim;
    int64_t t0 = util_now_us();
    int off = 0;
    for (int i = 0; i < req->n_emb; i++) {
        int rc = emb_tokens(ec->emb, req->tokens + off, req->emb_lens[i],
                            res->emb + (size_t)i * (size_t)dim);
        if (rc) {
            llm_res_free(res);
            syscall_fail(sc, rc, 500, "the embedding model failed on input %d: %s", i,
                         aios_strerror(rc));
            return;
        }
        off += req->emb_lens[i];
        if (syscall_cancel_requested(sc)) {
            llm_res_free(res);
            syscall_fail(sc, AIOS_ECANCELLED, 499, "the client went away");
            return;
        }
    }
    res->n_prompt = res->n_prompt_computed = req->n_tokens;
    res->t_prefill_us = util_now_us() - t0;
    res->finish_reason = "stop";
    const char *prev = log_set_request_id(sc->request_id);
    LOG_DEBUG("embed", "call %llu agent=%s inputs=%d tokens=%d in %.1f ms",
              (unsigned long long)sc->id, sc->agent, req->n_emb, req->n_tokens,
              (double)res->t_prefill_us / 1000.0);
    log_set_request_id(prev);
    syscall_finish(sc, res, llm_res_free);
}

static void *ec_main(void *arg)
{
    struct emb_core *ec = arg;
    for (;;) {
        struct syscall *sc = sched_next(ec->s, SYSCALL_KIND_LLM, &ec->core, -1);
        if (!sc) break; /* shutdown */
        run_call(ec, sc);
        sched_done(ec->s, sc);
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
