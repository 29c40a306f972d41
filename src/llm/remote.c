/* Remote LLM cores: models served by another server over HTTP.
 *
 * One remote core serves one model name. It forwards each LLM syscall for
 * that name to one of its replicas (config entries sharing the name, e.g.
 * four vLLM servers), speaking the OpenAI chat-completions dialect or
 * Anthropic's Messages API (remote_wire.c has the formats).
 *
 * Thread: each core has one thread that owns a libcurl multi handle and
 * every transfer on it; nothing blocks per call, so hundreds of calls can
 * be in flight. The loop: when nothing is in flight it blocks in
 * sched_next(); otherwise it takes queued calls without waiting
 * (sched_next with timeout 0, up to llms.remote.max_inflight), starts due
 * retries, and waits in curl_multi_poll() for at most POLL_MS, so a newly
 * queued call waits at most that long. Streamed answers are parsed from
 * upstream SSE inside curl's write callback (on this thread) and passed to
 * the client with syscall_emit(); a call ends with syscall_finish() (an
 * llm_res with text, finish_reason and upstream usage) or syscall_fail().
 * prepare() runs on HTTP threads: it only builds the upstream body once to
 * validate the request (no tokenizer here). Tools and response_format are
 * sent natively (api_llm_prepare builds no grammar for remote cores); the
 * upstream's tool calls go back in llm_res.tool_calls (res->upstream set),
 * checked by llm_structured_result.
 *
 * Routing and replicas (util/replicas.c): a call goes to the replica with the fewest
 * outstanding requests among those that are up (ties rotate). A replica
 * that refuses connections, times out connecting or answers 5xx is marked
 * down for replica_down_s seconds, doubling with each consecutive failure
 * (at most 60 s); when the time is up it is tried again by the next call
 * and is up again on its first success. When every replica is down, calls
 * still go to the one that comes back soonest (the call is the probe).
 *
 * Retries: 429, 5xx and connection errors are retried up to max_retries
 * times: at once on another replica that is up, else after
 * retry_backoff_ms * 2^attempt (or the upstream's Retry-After, at most
 * 30 s). A stream that breaks after part of the answer reached the client
 * is resumed from its text snapshot where the backend can continue an
 * assistant prefix (Anthropic, vLLM, SGLang): the next attempt sends the
 * text so far as a final assistant message and its deltas are appended;
 * tool calls the broken attempt had begun are dropped (they were never
 * sent to the client: calls go out when the answer ends), so the answer
 * holds exactly the calls of the attempt that finished, never a mix;
 * other backends fail such a call (a new answer would not fit the text
 * already sent). Errors reach the client as AIOS statuses: 400 (upstream refused
 * the request), 401 (key missing or refused), 404 (unknown upstream model
 * or wrong URL), 504 (upstream too slow), 429 (rate limited after retries),
 * 502 (upstream answered 5xx or garbage), 503 (no replica reachable), 500.
 *
 * Keys: per model `api_key`, else api_keys.<backend>, else the backend's
 * environment variable. Keys go only into request headers; they are never
 * logged or shown in /status.
 *
 * Locking: the replicas' counters live in a struct replica_set
 * (util/replicas.c, shared with the cluster's peer kernels) behind its own
 * leaf mutex; stats_mu guards the core's call counters that /status reads
 * (describe() on HTTP threads). The core thread takes each briefly, never
 * both at once, and calls nothing while holding one. Everything else in the core is
 * touched only by its thread (after start) or by the main thread (create,
 * stop, destroy). */
#include "llm/remote.h"

#include "util/err.h"
#include "util/log.h"
#include "util/replicas.h"
#include "util/util.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define POLL_MS 5
#define MAX_BODY_BYTES ((size_t)32 << 20)
#define MAX_DOWN_S 60

struct replica {
    char *url;      /* full endpoint */
    char *api_key;  /* may be NULL; never logged */
};

struct remote_core {
    struct llm_core core;
    const struct remote_backend_info *bi;
    char *upstream_model;
    struct replica *reps;
    size_t n_reps;
    /* the replicas' health and load (util/replicas.c), named by their URLs */
    struct replica_set rs;
    const char **rep_urls;
    char what[160];
    /* settings */
    int timeout_s, connect_timeout_s, max_retries, backoff_ms, down_s, max_inflight;
    int default_max_tokens;

    struct sched *sched;
    pthread_t thread;
    bool thread_started;
    CURLM *multi;
    struct rcall *calls; /* in flight or waiting to retry; core thread only */
    int n_calls;
    unsigned rr;

    pthread_mutex_t stats_mu;
    uint64_t n_total, n_ok, n_err, n_retries, n_resumed;
};

/* one call in progress */
struct rcall {
    struct rcall *next;
    struct remote_core *rc;
    struct syscall *sc;
    int rep;           /* replica of the current/last attempt, -1 before */
    int attempt;       /* attempts started */
    int64_t t_retry_us;/* waiting: start the next attempt at this time */
    CURL *easy;        /* non-NULL while a transfer runs */
    struct curl_slist *hdrs;
    char *body;
    long status;       /* HTTP status of the current attempt */
    char *buf;         /* non-stream body, or the error body */
    size_t n_buf, cap_buf;
    bool too_big;
    struct sse_parser sse;
    struct remote_answer ans;
    size_t n_emitted;  /* bytes of ans.text already sent to the client */
    int n_gen_before;  /* tokens generated by earlier attempts of a resumed call */
    bool bad_event;
    bool saw_event;    /* the streamed answer has had at least one SSE event */
    char curl_err[CURL_ERROR_SIZE];
};

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

/* ---- text snapshot ---- */

int llm_text_snapshot_resume(struct llm_req *req, const char *partial, size_t n,
                             int n_partial_tokens)
{
    if (n == 0) return 0;
    struct llm_message *last = req->n_msgs ? &req->msgs[req->n_msgs - 1] : NULL;
    if (last && !strcmp(last->role, "assistant")) {
        size_t old = last->content ? strlen(last->content) : 0;
        char *c = realloc(last->content, old + n + 1);
        if (!c) return AIOS_ENOMEM;
        memcpy(c + old, partial, n);
        c[old + n] = 0;
        last->content = c;
    } else {
        struct llm_message *m = realloc(req->msgs, (req->n_msgs + 1) * sizeof *m);
        if (!m) return AIOS_ENOMEM;
        req->msgs = m;
        char *role = strdup("assistant"), *content = strndup(partial, n);
        if (!role || !content) {
            free(role);
            free(content);
            return AIOS_ENOMEM;
        }
        m[req->n_msgs].role = role;
        m[req->n_msgs].content = content;
        req->n_msgs++;
    }
    if (n_partial_tokens > 0 && req->p.max_tokens > 0) {
        req->p.max_tokens -= n_partial_tokens;
        if (req->p.max_tokens < 1) req->p.max_tokens = 1;
    }
    return 0;
}

/* ---- request building ---- */

static struct remote_wire_opts wire_opts(struct remote_core *rc, bool stream)
{
    struct remote_wire_opts o = {
        .model = rc->upstream_model,
        .stream = stream,
        .default_max_tokens = rc->default_max_tokens,
        .extra_sampling = rc->bi->extra_sampling,
        .max_completion_tokens = !strcmp(rc->bi->name, "openai"),
        .continue_final = rc->bi->continue_final,
        .repeat_key = rc->bi->repeat_key,
    };
    return o;
}

static int rem_prepare(struct llm_core *c, struct llm_req *req, char *err, size_t errlen)
{
    struct remote_core *rc = c->impl;
    if (req->grammar) {
        snprintf(err, errlen, "model '%s' is served by the remote backend %s, which this kernel "
                 "cannot constrain with a grammar; use a llamacpp model", c->name, c->backend);
        return AIOS_EINVAL;
    }
    struct remote_wire_opts o = wire_opts(rc, false);
    json_t *b = remote_wire_request(rc->bi->dialect, req, &o, err, errlen);
    if (!b) return strcmp(err, "out of memory") ? AIOS_EINVAL : AIOS_ENOMEM;
    json_decref(b);
    return 0;
}

/* ---- transfers ---- */

static int buf_append(struct rcall *cl, const char *p, size_t n)
{
    if (cl->n_buf + n + 1 > MAX_BODY_BYTES) {
        cl->too_big = true;
        return AIOS_ETOOBIG;
    }
    return util_buf_append(&cl->buf, &cl->n_buf, &cl->cap_buf, p, n);
}

static int on_sse_event(void *ud, const char *event, const char *data, size_t n)
{
    struct rcall *cl = ud;
    size_t off, nd;
    cl->saw_event = true;
    size_t n_lp = json_array_size(cl->ans.logprobs);
    int rc = remote_wire_stream_event(cl->rc->bi->dialect, event, data, n, &cl->ans, &off, &nd);
    if (rc == AIOS_EINVAL) {
        cl->bad_event = true;
        return 0;
    }
    if (rc) return rc;
    /* the event's logprobs go out with its text (syscall aux: JSON
     * objects, each followed by a comma) */
    char *aux = NULL;
    size_t n_aux = 0, cap_aux = 0;
    for (size_t i = n_lp; i < json_array_size(cl->ans.logprobs); i++) {
        char *js = json_dumps(json_array_get(cl->ans.logprobs, i), JSON_COMPACT);
        rc = js ? util_buf_append(&aux, &n_aux, &cap_aux, js, strlen(js)) : AIOS_ENOMEM;
        if (!rc) rc = util_buf_append(&aux, &n_aux, &cap_aux, ",", 1);
        free(js);
        if (rc) {
            free(aux);
            return rc;
        }
    }
    if (nd || n_aux) {
        rc = syscall_emit_aux(cl->sc, cl->ans.text + off, nd, aux, n_aux);
        free(aux);
        if (rc) return AIOS_ENOMEM;
        cl->n_emitted = off + nd;
    }
    return 0;
}

static size_t on_write(char *p, size_t size, size_t nmemb, void *ud)
{
    struct rcall *cl = ud;
    size_t n = size * nmemb;
    if (!cl->status) curl_easy_getinfo(cl->easy, CURLINFO_RESPONSE_CODE, &cl->status);
    bool ok = cl->status >= 200 && cl->status < 300;
    if (ok && cl->sc->stream) {
        if (cl->ans.len > MAX_BODY_BYTES) {
            cl->too_big = true;
            return 0;
        }
        /* until an event arrives, keep the raw bytes too: a server that
         * ignores "stream" answers with one JSON body */
        if (!cl->saw_event && cl->n_buf < ((size_t)1 << 20) && buf_append(cl, p, n)) return 0;
        if (sse_feed(&cl->sse, p, n, on_sse_event, cl)) return 0;
        return n;
    }
    return buf_append(cl, p, n) ? 0 : n;
}

static void call_reset_attempt(struct rcall *cl)
{
    if (cl->easy) {
        curl_multi_remove_handle(cl->rc->multi, cl->easy);
        curl_easy_cleanup(cl->easy);
        cl->easy = NULL;
    }
    curl_slist_free_all(cl->hdrs);
    cl->hdrs = NULL;
    cl->status = 0;
    cl->n_buf = 0;
    cl->too_big = false;
    cl->bad_event = false;
    cl->saw_event = false;
    cl->curl_err[0] = 0;
    sse_parser_free(&cl->sse);
}

static int call_start_attempt(struct rcall *cl)
{
    struct remote_core *rc = cl->rc;
    int prev = cl->rep;
    cl->rep = replicas_pick(&rc->rs, prev);
    struct replica *r = &rc->reps[cl->rep];
    cl->attempt++;
    cl->t_retry_us = 0;
    /* a retry keeps what the answer already holds (nothing was emitted) */
    if (!cl->n_emitted) {
        remote_answer_free(&cl->ans);
    }
    CURL *e = curl_easy_init();
    if (!e) return AIOS_ENOMEM;
    cl->easy = e;
    char hdr[1024];
    struct curl_slist *h = NULL;
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    if (cl->sc->stream) h = curl_slist_append(h, "Accept: text/event-stream");
    else h = curl_slist_append(h, "Accept: application/json");
    if (r->api_key) {
        if (rc->bi->dialect == REMOTE_DIALECT_ANTHROPIC)
            snprintf(hdr, sizeof hdr, "x-api-key: %s", r->api_key);
        else
            snprintf(hdr, sizeof hdr, "Authorization: Bearer %s", r->api_key);
        h = curl_slist_append(h, hdr);
        memset(hdr, 0, sizeof hdr);
    }
    if (rc->bi->dialect == REMOTE_DIALECT_ANTHROPIC)
        h = curl_slist_append(h, "anthropic-version: 2023-06-01");
    if (!h) return AIOS_ENOMEM;
    cl->hdrs = h;
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, cl->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(cl->body));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, cl);
    curl_easy_setopt(e, CURLOPT_PRIVATE, cl);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, cl->curl_err);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)rc->timeout_s * 1000L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)rc->connect_timeout_s * 1000L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "aios/" "0.1");
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    if (curl_multi_add_handle(rc->multi, e) != CURLM_OK) return AIOS_ENOMEM;
    replicas_begin(&rc->rs, (size_t)cl->rep);
    pthread_mutex_lock(&rc->stats_mu);
    if (cl->attempt > 1) rc->n_retries++;
    pthread_mutex_unlock(&rc->stats_mu);
    const char *prev_rid = log_set_request_id(cl->sc->request_id);
    LOG_DEBUG("remote", "call %llu -> %s (attempt %d)", (unsigned long long)cl->sc->id, r->url,
              cl->attempt);
    log_set_request_id(prev_rid);
    return 0;
}

static void call_free(struct rcall *cl)
{
    call_reset_attempt(cl);
    free(cl->buf);
    free(cl->body);
    remote_answer_free(&cl->ans);
    free(cl);
}

/* Count a call's outcome: before its syscall is made final, so whoever
 * the result wakes already sees it in the statistics. */
static void call_count(struct remote_core *rc, bool ok)
{
    pthread_mutex_lock(&rc->stats_mu);
    if (ok) rc->n_ok++;
    else rc->n_err++;
    pthread_mutex_unlock(&rc->stats_mu);
}

/* end the call (counted, and the syscall already final) and unlink it */
static void call_end(struct remote_core *rc, struct rcall *cl)
{
    struct rcall **pp = &rc->calls;
    while (*pp && *pp != cl) pp = &(*pp)->next;
    if (*pp) *pp = cl->next;
    rc->n_calls--;
    sched_done(rc->sched, cl->sc);
    call_free(cl);
}

static void call_succeed(struct remote_core *rc, struct rcall *cl)
{
    struct llm_res *res = calloc(1, sizeof *res);
    if (!res) {
        call_count(rc, false);
        syscall_fail(cl->sc, AIOS_ENOMEM, 500, "out of memory");
        call_end(rc, cl);
        return;
    }
    struct remote_answer *a = &cl->ans;
    size_t before = a->len;
    if (remote_wire_finish(rc->bi->dialect, cl->sc->req, a)) {
        free(res);
        call_count(rc, false);
        syscall_fail(cl->sc, AIOS_ENOMEM, 500, "out of memory");
        call_end(rc, cl);
        return;
    }
    /* text made from a forced tool's input was not streamed yet */
    if (cl->sc->stream && a->len > before) syscall_emit(cl->sc, a->text + before, a->len - before);
    if (!a->text) remote_answer_append(a, "", 0);
    res->upstream = true;
    res->tool_calls = a->tool_calls;
    a->tool_calls = NULL;
    res->logprobs = a->logprobs;
    a->logprobs = NULL;
    res->text = a->text;
    res->len = a->len;
    a->text = NULL;
    a->len = a->cap = 0;
    if (!res->text) {
        llm_res_free(res);
        call_count(rc, false);
        syscall_fail(cl->sc, AIOS_ENOMEM, 500, "out of memory");
        call_end(rc, cl);
        return;
    }
    res->finish_reason = a->finish_reason ? a->finish_reason : "stop";
    res->n_prompt = a->n_prompt;
    res->n_prompt_computed = a->n_prompt - a->n_cached;
    res->n_gen = a->n_gen + cl->n_gen_before;
    call_count(rc, true);
    syscall_finish(cl->sc, res, llm_res_free);
    call_end(rc, cl);
}

/* Can a broken stream be continued from its text snapshot? Anthropic
 * continues a final assistant message natively, vLLM and SGLang with
 * continue_final_message; other OpenAI-compatible servers would start a
 * new answer, so their streams are not resumed. */
static bool can_resume(const struct remote_core *rc)
{
    return rc->bi->dialect == REMOTE_DIALECT_ANTHROPIC || rc->bi->continue_final;
}

/* The body of the next attempt of a stream that broke after n_emitted
 * bytes: the request plus the text so far as an assistant prefix (the text
 * snapshot). The answer keeps that text; later deltas append to it. 0 or
 * AIOS_ENOMEM / AIOS_EINVAL. */
static int call_resume_body(struct rcall *cl)
{
    struct remote_core *rc = cl->rc;
    const struct llm_req *req = cl->sc->req;
    struct llm_req tmp = *req;
    tmp.msgs = malloc((req->n_msgs + 1) * sizeof *tmp.msgs);
    if (!tmp.msgs) return AIOS_ENOMEM;
    memcpy(tmp.msgs, req->msgs, req->n_msgs * sizeof *tmp.msgs);
    /* whole messages are borrowed; only a merged last one is new */
    char *merged = NULL;
    struct llm_message *last = req->n_msgs ? &req->msgs[req->n_msgs - 1] : NULL;
    if (last && !strcmp(last->role, "assistant")) {
        size_t n0 = last->content ? strlen(last->content) : 0;
        merged = malloc(n0 + cl->ans.len + 1);
        if (!merged) {
            free(tmp.msgs);
            return AIOS_ENOMEM;
        }
        memcpy(merged, last->content ? last->content : "", n0);
        memcpy(merged + n0, cl->ans.text, cl->ans.len);
        merged[n0 + cl->ans.len] = 0;
        tmp.msgs[req->n_msgs - 1].content = merged;
    } else {
        tmp.msgs[req->n_msgs].role = "assistant";
        tmp.msgs[req->n_msgs].content = cl->ans.text;
        tmp.n_msgs++;
    }
    char err[256];
    struct remote_wire_opts o = wire_opts(rc, true);
    json_t *b = remote_wire_request(rc->bi->dialect, &tmp, &o, err, sizeof err);
    free(merged);
    free(tmp.msgs);
    char *body = b ? json_dumps(b, JSON_COMPACT) : NULL;
    json_decref(b);
    if (!body) return AIOS_ENOMEM;
    free(cl->body);
    cl->body = body;
    /* keep the text; forget the rest of what the broken attempt said,
     * partial tool calls included (the next attempt sends its own) */
    cl->n_gen_before += cl->ans.n_gen;
    remote_answer_keep_text(&cl->ans);
    pthread_mutex_lock(&rc->stats_mu);
    rc->n_resumed++;
    pthread_mutex_unlock(&rc->stats_mu);
    LOG_INFO("remote", "call %llu: the stream broke after %zu bytes; resuming from that text",
             (unsigned long long)cl->sc->id, cl->n_emitted);
    return 0;
}

/* classify a finished attempt and act: succeed, retry, or fail */
enum outcome { OUT_OK, OUT_RETRY_DOWN, OUT_RETRY, OUT_FAIL };

static bool connected(CURL *e)
{
    curl_off_t t = 0;
    curl_easy_getinfo(e, CURLINFO_CONNECT_TIME_T, &t);
    return t > 0;
}

static void call_done_in(struct remote_core *rc, struct rcall *cl, CURLcode cc);

/* the call's log lines carry its request id (a copy: cl and its syscall
 * may be gone before the end) */
static void call_done(struct remote_core *rc, struct rcall *cl, CURLcode cc)
{
    char rid[sizeof cl->sc->request_id];
    memcpy(rid, cl->sc->request_id, sizeof rid);
    const char *prev = log_set_request_id(rid);
    call_done_in(rc, cl, cc);
    log_set_request_id(prev);
}

static void call_done_in(struct remote_core *rc, struct rcall *cl, CURLcode cc)
{
    struct replica *r = &rc->reps[cl->rep];
    long st = 0;
    curl_easy_getinfo(cl->easy, CURLINFO_RESPONSE_CODE, &st);
    curl_off_t retry_after = 0;
    curl_easy_getinfo(cl->easy, CURLINFO_RETRY_AFTER, &retry_after);
    char msg[600] = "";
    int err = AIOS_EENGINE, http = 500;
    enum outcome out = OUT_FAIL;
    bool stream = cl->sc->stream;

    if (cc == CURLE_OK && st >= 200 && st < 300) {
        if (!stream) {
            char perr[256] = "";
            int prc = remote_wire_parse_response(rc->bi->dialect, cl->buf ? cl->buf : "", cl->n_buf,
                                                 &cl->ans, perr, sizeof perr);
            if (prc == 0) {
                out = OUT_OK;
            } else {
                snprintf(msg, sizeof msg, "upstream %s: %s", r->url, perr);
                http = 502;
                out = OUT_RETRY_DOWN;
            }
        } else if (cl->ans.error[0]) {
            snprintf(msg, sizeof msg, "upstream %s reported an error mid-stream: %s", r->url,
                     cl->ans.error);
            http = strstr(cl->ans.error_type, "overloaded") ? 503 : 502;
            out = cl->n_emitted && !can_resume(rc) ? OUT_FAIL : OUT_RETRY;
        } else if (cl->ans.done || cl->ans.finish_reason) {
            out = OUT_OK;
        } else if (!cl->saw_event && cl->n_buf && !cl->n_emitted &&
                   remote_wire_parse_response(rc->bi->dialect, cl->buf, cl->n_buf, &cl->ans, msg,
                                              sizeof msg) == 0) {
            /* not streamed after all: pass the whole answer on at once */
            if (cl->ans.len && syscall_emit(cl->sc, cl->ans.text, cl->ans.len) == 0)
                cl->n_emitted = cl->ans.len;
            msg[0] = 0;
            out = OUT_OK;
        } else {
            snprintf(msg, sizeof msg, "upstream %s closed the stream before the answer was "
                     "complete%s", r->url, cl->bad_event ? " (it sent events that are not JSON)" : "");
            http = 502;
            out = cl->n_emitted && !can_resume(rc) ? OUT_FAIL : OUT_RETRY_DOWN;
        }
    } else if (cc == CURLE_OK) {
        char um[400];
        remote_wire_error_message(cl->buf, cl->n_buf, um, sizeof um);
        if (st == 429) {
            snprintf(msg, sizeof msg, "upstream %s is rate limiting (429): %s", r->url, um);
            err = AIOS_EBUSY;
            http = 429;
            out = OUT_RETRY;
        } else if (st >= 500) {
            snprintf(msg, sizeof msg, "upstream %s failed with HTTP %ld: %s", r->url, st, um);
            http = (st == 503 || st == 529) ? 503 : 502;
            out = OUT_RETRY_DOWN;
        } else if (st == 401 || st == 403) {
            snprintf(msg, sizeof msg, "upstream %s refused the API key (HTTP %ld): %s. Set "
                     "api_keys.%s in the config%s%s", r->url, st, um, rc->bi->key_name,
                     rc->bi->key_env ? " or " : "", rc->bi->key_env ? rc->bi->key_env : "");
            err = AIOS_EPERM;
            http = 401;
        } else if (st == 404) {
            snprintf(msg, sizeof msg, "upstream %s has no model '%s' or no such endpoint (404): %s",
                     r->url, rc->upstream_model, um);
            err = AIOS_ENOTFOUND;
            http = 404;
        } else if (st == 408) {
            snprintf(msg, sizeof msg, "upstream %s timed out (408): %s", r->url, um);
            http = 504;
        } else {
            snprintf(msg, sizeof msg, "upstream %s rejected the request (HTTP %ld): %s", r->url, st, um);
            err = AIOS_EINVAL;
            http = 400;
        }
    } else if (cl->too_big) {
        snprintf(msg, sizeof msg, "upstream %s sent an answer over %zu MiB", r->url,
                 MAX_BODY_BYTES >> 20);
        http = 502;
    } else if (cc == CURLE_OPERATION_TIMEDOUT && (st > 0 || connected(cl->easy))) {
        snprintf(msg, sizeof msg, "upstream %s did not finish within %d s (llms.remote.timeout_s)",
                 r->url, rc->timeout_s);
        http = 504; /* a gateway's timeout: the kernel waited on its upstream */
        /* a slow server is not a dead one: no retry, not marked down */
    } else {
        const char *what = cl->curl_err[0] ? cl->curl_err : curl_easy_strerror(cc);
        snprintf(msg, sizeof msg, "cannot reach upstream %s: %s", r->url, what);
        http = 503;
        out = cl->n_emitted && !can_resume(rc) ? OUT_FAIL : OUT_RETRY_DOWN;
        if (cl->n_emitted) {
            snprintf(msg, sizeof msg, "upstream %s broke off the answer after %zu bytes: %s",
                     r->url, cl->n_emitted, what);
            http = 502;
        }
    }

    replicas_end(&rc->rs, (size_t)cl->rep, out == OUT_OK, out == OUT_RETRY_DOWN, out == OUT_OK ? NULL : msg);
    if (out == OUT_OK) {
        call_reset_attempt(cl);
        call_succeed(rc, cl);
        return;
    }
    bool retry = (out == OUT_RETRY || out == OUT_RETRY_DOWN) && cl->attempt <= rc->max_retries &&
                 (!cl->n_emitted || can_resume(rc)) && !sched_stopping(rc->sched);
    call_reset_attempt(cl);
    if (retry && cl->n_emitted && call_resume_body(cl)) retry = false;
    if (retry) {
        int64_t delay_ms = 0;
        if (out == OUT_RETRY || !replicas_other_up(&rc->rs, cl->rep)) {
            delay_ms = (int64_t)rc->backoff_ms << (cl->attempt - 1);
            if (retry_after > 0) delay_ms = (int64_t)retry_after * 1000;
            if (delay_ms > 30000) delay_ms = 30000;
        }
        cl->t_retry_us = util_now_us() + delay_ms * 1000;
        LOG_INFO("remote", "call %llu: %s; retry %d of %d in %lld ms", (unsigned long long)cl->sc->id,
                 msg, cl->attempt, rc->max_retries, (long long)delay_ms);
        return;
    }
    if (cl->attempt > 1 && (out == OUT_RETRY || out == OUT_RETRY_DOWN)) {
        size_t l = strlen(msg);
        snprintf(msg + l, sizeof msg - l, " (gave up after %d attempts on %zu replica%s)",
                 cl->attempt, rc->n_reps, rc->n_reps == 1 ? "" : "s");
    }
    LOG_WARN("remote", "model %s, call %llu failed: %s", rc->core.name,
             (unsigned long long)cl->sc->id, msg);
    call_count(rc, false);
    syscall_fail(cl->sc, err, http, "model '%s': %s", rc->core.name, msg);
    call_end(rc, cl);
}

static void call_new(struct remote_core *rc, struct syscall *sc)
{
    struct rcall *cl = calloc(1, sizeof *cl);
    if (!cl) {
        syscall_fail(sc, AIOS_ENOMEM, 500, "out of memory");
        sched_done(rc->sched, sc);
        return;
    }
    cl->rc = rc;
    cl->sc = sc;
    cl->rep = -1;
    cl->next = rc->calls;
    rc->calls = cl;
    rc->n_calls++;
    pthread_mutex_lock(&rc->stats_mu);
    rc->n_total++;
    pthread_mutex_unlock(&rc->stats_mu);

    char err[512] = "";
    if (rc->bi->key_required && !rc->reps[0].api_key) {
        call_count(rc, false);
        syscall_fail(sc, AIOS_EPERM, 401,
                     "model '%s': no API key for backend %s. Set api_keys.%s in the config%s%s, "
                     "or api_key on the model entry", rc->core.name, rc->bi->name,
                     rc->bi->key_name, rc->bi->key_env ? " or the environment variable " : "",
                     rc->bi->key_env ? rc->bi->key_env : "");
        call_end(rc, cl);
        return;
    }
    struct remote_wire_opts o = wire_opts(rc, sc->stream);
    json_t *b = remote_wire_request(rc->bi->dialect, sc->req, &o, err, sizeof err);
    cl->body = b ? json_dumps(b, JSON_COMPACT) : NULL;
    json_decref(b);
    if (!cl->body) {
        call_count(rc, false);
        syscall_fail(sc, err[0] && strcmp(err, "out of memory") ? AIOS_EINVAL : AIOS_ENOMEM,
                     err[0] && strcmp(err, "out of memory") ? 400 : 500, "%s",
                     err[0] ? err : "out of memory");
        call_end(rc, cl);
        return;
    }
    if (call_start_attempt(cl)) {
        call_count(rc, false);
        syscall_fail(sc, AIOS_ENOMEM, 500, "model '%s': could not set up the transfer",
                     rc->core.name);
        call_end(rc, cl);
    }
}

static void fail_all(struct remote_core *rc, int err, int http, const char *why)
{
    while (rc->calls) {
        struct rcall *cl = rc->calls;
        if (cl->easy) replicas_release(&rc->rs, (size_t)cl->rep);
        call_count(rc, false);
        if (err == AIOS_ECANCELLED) syscall_fail(cl->sc, err, http, "%s", why);
        else syscall_fail(cl->sc, err, http, "model '%s': %s", rc->core.name, why);
        call_end(rc, cl);
    }
}

static void *remote_main(void *arg)
{
    struct remote_core *rc = arg;
    for (;;) {
        if (sched_stopping(rc->sched)) break;
        /* take new calls: block when idle, else only what is queued */
        while (rc->n_calls < rc->max_inflight) {
            struct syscall *sc = sched_next(rc->sched, SYSCALL_KIND_LLM, &rc->core,
                                            rc->n_calls ? 0 : -1);
            if (!sc) break;
            call_new(rc, sc);
        }
        if (sched_stopping(rc->sched)) break;
        /* start due retries; drop cancelled calls */
        int64_t now = util_now_us();
        for (struct rcall *cl = rc->calls, *nx; cl; cl = nx) {
            nx = cl->next;
            if (syscall_cancel_requested(cl->sc)) {
                if (cl->easy) replicas_release(&rc->rs, (size_t)cl->rep);
                call_count(rc, false);
                syscall_fail(cl->sc, AIOS_ECANCELLED, 499, "the caller went away");
                call_end(rc, cl);
                continue;
            }
            if (!cl->easy && cl->t_retry_us) {
                if (cl->t_retry_us <= now && call_start_attempt(cl)) {
                    call_count(rc, false);
                    syscall_fail(cl->sc, AIOS_ENOMEM, 500, "could not set up the transfer");
                    call_end(rc, cl);
                }
            }
        }
        if (!rc->n_calls) continue;
        int running = 0;
        curl_multi_poll(rc->multi, NULL, 0, POLL_MS, NULL);
        curl_multi_perform(rc->multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(rc->multi, &left))) {
            if (m->msg != CURLMSG_DONE) continue;
            struct rcall *cl = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&cl);
            if (cl) call_done(rc, cl, m->data.result);
        }
    }
    fail_all(rc, AIOS_ESHUTDOWN, 503, "the kernel is shutting down");
    return NULL;
}

/* ---- core ops ---- */

static int rem_start(struct llm_core *c, struct sched *s)
{
    struct remote_core *rc = c->impl;
    rc->sched = s;
    if (pthread_create(&rc->thread, NULL, remote_main, rc) != 0) return AIOS_ENOMEM;
    rc->thread_started = true;
    return 0;
}

static void rem_stop(struct llm_core *c)
{
    struct remote_core *rc = c->impl;
    if (rc->thread_started) {
        pthread_join(rc->thread, NULL);
        rc->thread_started = false;
    }
}

static void rem_destroy(struct llm_core *c)
{
    struct remote_core *rc = c->impl;
    rem_stop(c);
    if (rc->multi) curl_multi_cleanup(rc->multi);
    for (size_t i = 0; i < rc->n_reps; i++) {
        free(rc->reps[i].url);
        if (rc->reps[i].api_key) {
            memset(rc->reps[i].api_key, 0, strlen(rc->reps[i].api_key));
            free(rc->reps[i].api_key);
        }
    }
    free(rc->reps);
    replicas_destroy(&rc->rs);
    free(rc->rep_urls);
    free(rc->upstream_model);
    pthread_mutex_destroy(&rc->stats_mu);
    free(c->name);
    free(c->backend);
    free(rc);
}

static void rem_describe(struct llm_core *c, json_t *o)
{
    struct remote_core *rc = c->impl;
    json_t *reps = json_array();
    for (size_t i = 0; i < rc->n_reps; i++) {
        json_t *j = json_pack("{s:s}", "url", rc->reps[i].url);
        if (!j) continue;
        replicas_describe(&rc->rs, i, j);
        json_object_set_new(j, "has_key", json_boolean(rc->reps[i].api_key != NULL));
        json_array_append_new(reps, j);
    }
    pthread_mutex_lock(&rc->stats_mu);
    json_t *calls = json_pack("{s:I,s:I,s:I,s:I,s:I}", "total", (json_int_t)rc->n_total, "ok",
                              (json_int_t)rc->n_ok, "failed", (json_int_t)rc->n_err, "retries",
                              (json_int_t)rc->n_retries, "resumed", (json_int_t)rc->n_resumed);
    pthread_mutex_unlock(&rc->stats_mu);
    json_object_set_new(o, "remote", json_true());
    json_object_set_new(o, "dialect", json_string(rc->bi->dialect == REMOTE_DIALECT_ANTHROPIC
                                                      ? "anthropic" : "openai"));
    json_object_set_new(o, "upstream_model", json_string(rc->upstream_model));
    json_object_set_new(o, "replicas", reps);
    json_object_set_new(o, "calls", calls);
}

static const struct llm_core_ops rem_ops = {
    .prepare = rem_prepare,
    .start = rem_start,
    .stop = rem_stop,
    .destroy = rem_destroy,
    .describe = rem_describe,
};

/* ---- creation: settings, URLs, keys ---- */

/* integer setting: the model entry, else llms.remote.<key>, else def */
static int setting_int(const struct aios_config *cfg, json_t *entry, size_t idx, const char *key,
                       int lo, int hi, int def, int *out, char *err, size_t errlen)
{
    char path[128];
    json_t *v = json_object_get(entry, key);
    if (v && !json_is_null(v)) {
        snprintf(path, sizeof path, "llms.models[%zu].%s", idx, key);
    } else {
        snprintf(path, sizeof path, "llms.remote.%s", key);
        v = config_lookup(cfg, path);
    }
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        snprintf(err, errlen, "%s: expected an integer in %d..%d", path, lo, hi);
        return AIOS_ECONFIG;
    }
    *out = (int)json_integer_value(v);
    return 0;
}

static int setting_str(json_t *entry, size_t idx, const char *key, const char **out, char *err,
                       size_t errlen)
{
    json_t *v = json_object_get(entry, key);
    *out = NULL;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v)) {
        snprintf(err, errlen, "llms.models[%zu].%s: expected a string", idx, key);
        return AIOS_ECONFIG;
    }
    if (json_string_length(v)) *out = json_string_value(v);
    return 0;
}

/* base URL -> endpoint: a bare host gets /v1/chat/completions (/v1/messages
 * for Anthropic); a base with a path (…/v1, …/openai/v1) gets
 * /chat/completions (/messages); a full endpoint is kept. */
char *remote_endpoint_url(const char *base, enum remote_dialect d)
{
    size_t n = strlen(base);
    while (n && base[n - 1] == '/') n--;
    const char *full = d == REMOTE_DIALECT_ANTHROPIC ? "/messages" : "/chat/completions";
    const char *tail = d == REMOTE_DIALECT_ANTHROPIC ? "/v1/messages" : "/v1/chat/completions";
    size_t fl = strlen(full);
    const char *scheme = strstr(base, "://");
    const char *path = scheme ? strchr(scheme + 3, '/') : strchr(base, '/');
    bool has_path = path && (size_t)(path - base) < n;
    const char *add = "";
    if (n >= fl && !strncmp(base + n - fl, full, fl)) add = "";
    else if (has_path) add = full;
    else add = tail;
    size_t len = n + strlen(add) + 1;
    char *u = malloc(len);
    if (!u) return NULL;
    snprintf(u, len, "%.*s%s", (int)n, base, add);
    return u;
}

int llm_remote_create(struct llm_core **out, const struct aios_config *cfg,
                      const struct cfg_model *const *models, size_t n, char *err, size_t errlen)
{
    *out = NULL;
    pthread_once(&g_curl_once, curl_init_once);
    const struct remote_backend_info *bi = remote_backend_find(models[0]->backend);
    if (!bi || n == 0) {
        snprintf(err, errlen, "model %s: backend '%s' is not a remote backend", models[0]->name,
                 models[0]->backend);
        return AIOS_ECONFIG;
    }
    struct remote_core *rc = calloc(1, sizeof *rc);
    if (!rc) return AIOS_ENOMEM;
    pthread_mutex_init(&rc->stats_mu, NULL);
    rc->core.impl = rc;
    rc->core.ops = &rem_ops;
    rc->core.name = strdup(models[0]->name);
    rc->core.backend = strdup(bi->name);
    rc->core.created = (int64_t)time(NULL);
    rc->bi = bi;
    rc->reps = calloc(n, sizeof *rc->reps);
    rc->multi = curl_multi_init();
    if (!rc->core.name || !rc->core.backend || !rc->reps || !rc->multi) goto nomem;
    rc->n_reps = n;
    json_t *list = config_lookup(cfg, "llms.models");
    int rc_ = 0;
    for (size_t i = 0; i < n; i++) {
        const struct cfg_model *m = models[i];
        if (remote_backend_find(m->backend) != bi) {
            snprintf(err, errlen, "model %s: its replicas must share one backend (%s and %s)",
                     m->name, bi->name, m->backend);
            goto fail;
        }
        size_t idx = (size_t)(m - cfg->models);
        json_t *entry = idx < cfg->n_models ? json_array_get(list, idx) : NULL;
        if (i == 0) {
            const char *um = NULL;
            if ((rc_ = setting_str(entry, idx, "upstream_model", &um, err, errlen))) goto fail;
            rc->upstream_model = strdup(um ? um : m->name);
            if (!rc->upstream_model) goto nomem;
            if ((rc_ = setting_int(cfg, entry, idx, "timeout_s", 1, 86400, 600, &rc->timeout_s, err, errlen)) ||
                (rc_ = setting_int(cfg, entry, idx, "connect_timeout_s", 1, 600, 10, &rc->connect_timeout_s, err, errlen)) ||
                (rc_ = setting_int(cfg, entry, idx, "max_retries", 0, 10, 2, &rc->max_retries, err, errlen)) ||
                (rc_ = setting_int(cfg, entry, idx, "retry_backoff_ms", 1, 60000, 250, &rc->backoff_ms, err, errlen)) ||
                (rc_ = setting_int(cfg, entry, idx, "replica_down_s", 1, MAX_DOWN_S, 5, &rc->down_s, err, errlen)) ||
                (rc_ = setting_int(cfg, entry, idx, "max_inflight", 1, 100000, 256, &rc->max_inflight, err, errlen)) ||
                (rc_ = setting_int(cfg, entry, idx, "default_max_tokens", 1, 1 << 24, 4096, &rc->default_max_tokens, err, errlen)))
                goto fail;
        }
        const char *base = m->hostname ? m->hostname : bi->default_base;
        if (!base) {
            snprintf(err, errlen, "llms.models[%zu] (%s): backend %s needs a hostname: the "
                     "server's base URL, e.g. http://10.0.0.5:8000/v1", idx, m->name, bi->name);
            goto fail;
        }
        if (strncmp(base, "http://", 7) && strncmp(base, "https://", 8)) {
            snprintf(err, errlen, "llms.models[%zu].hostname: '%s' must start with http:// or "
                     "https://", idx, base);
            goto fail;
        }
        rc->reps[i].url = remote_endpoint_url(base, bi->dialect);
        if (!rc->reps[i].url) goto nomem;
        /* key: model entry, api_keys.<backend>, environment */
        const char *key = NULL;
        if ((rc_ = setting_str(entry, idx, "api_key", &key, err, errlen))) goto fail;
        if (!key) {
            char path[96];
            snprintf(path, sizeof path, "api_keys.%s", bi->key_name);
            json_t *v = config_lookup(cfg, path);
            if (json_is_string(v) && json_string_length(v)) key = json_string_value(v);
        }
        if (!key && bi->key_env) {
            const char *e = getenv(bi->key_env);
            if (e && *e) key = e;
        }
        if (key && !(rc->reps[i].api_key = strdup(key))) goto nomem;
        if (bi->key_required && !key)
            LOG_WARN("remote", "model %s: no API key for %s (api_keys.%s%s%s); its calls will "
                     "fail with 401 until one is set", m->name, bi->name, bi->key_name,
                     bi->key_env ? " or " : "", bi->key_env ? bi->key_env : "");
        LOG_INFO("remote", "model %s: replica %zu of %zu at %s (%s, upstream model %s%s)", m->name,
                 i + 1, n, rc->reps[i].url, bi->name, rc->upstream_model,
                 key ? ", with key" : "");
    }
    rc->rep_urls = calloc(n, sizeof *rc->rep_urls);
    if (!rc->rep_urls) goto nomem;
    for (size_t i = 0; i < n; i++) rc->rep_urls[i] = rc->reps[i].url;
    snprintf(rc->what, sizeof rc->what, "model %s", rc->core.name);
    if (replicas_init(&rc->rs, n, rc->down_s, rc->what, rc->rep_urls)) goto nomem;
    *out = &rc->core;
    return 0;
nomem:
    snprintf(err, errlen, "out of memory");
    rc_ = AIOS_ENOMEM;
fail:
    rem_destroy(&rc->core);
    return rc_ ? rc_ : AIOS_ECONFIG;
}

int llm_remote_create_entry(struct llm_core **out, const struct aios_config *cfg, size_t idx,
                            char *err, size_t errlen)
{
    *out = NULL;
    const struct cfg_model *m = &cfg->models[idx];
    const struct cfg_model *reps[64];
    size_t n = 0;
    for (size_t j = 0; j < cfg->n_models; j++) {
        if (strcmp(cfg->models[j].name, m->name)) continue;
        if (j < idx) return 0; /* served by the core of its first entry */
        if (n == sizeof reps / sizeof reps[0]) {
            snprintf(err, errlen, "model %s: more than %zu replicas", m->name, n);
            return AIOS_ECONFIG;
        }
        reps[n++] = &cfg->models[j];
    }
    return llm_remote_create(out, cfg, reps, n, err, errlen);
}
