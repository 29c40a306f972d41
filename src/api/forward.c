/* KV affinity: an LLM call forwarded to the peer kernel that retains the
 * agent's conversation (docs/postgres.md, "KV affinity").
 *
 * When the route handlers of /v1/chat/completions, /query (llm) and
 * /v1/responses have the call's agent and model, they ask
 * api_affinity_forward() first. It forwards only a call that
 *   - carries a registered agent's token (r->acc_shared: every kernel on
 *     the shared state knows it; run tokens and the admin token are one
 *     kernel's own),
 *   - goes to a model of this kernel's embedded engine (a remote model has
 *     no KV here to be near),
 *   - did not itself come forwarded (X-Aios-Forwarded), and was not sent
 *     back here by a failed forward (r->no_forward),
 * and only when the cluster manager names a live, not overloaded peer
 * (clu_route). Anything else is served here as usual.
 *
 * What is forwarded: the request as the client sent it (method, path,
 * body, Content-Type, Authorization, X-Aios-Agent-Token, X-Aios-Agent,
 * X-Aios-Priority, Accept) with this request's X-Request-Id and
 * `X-Aios-Forwarded: <this kernel>`. The peer runs its own gate (the token
 * is checked again there), its budgets, access checks, accounting and
 * audit, exactly as for a call a client sent to it; this kernel did only
 * its gate and charged nothing. X-Aios-Forwarded does one thing: the
 * kernel receiving it never forwards that request again, so there are no
 * loops. It grants nothing, so a client that sends it gains nothing: its
 * call is checked and served where it arrived.
 *
 * What comes back: the peer's status, Content-Type, X-Aios-Served-By and
 * body, byte for byte as they arrive (a stream stays a stream). If the
 * peer cannot be reached (refused, connect timeout), hangs up without an
 * answer, gives none within cluster.timeout_s, or answers 503 (it is
 * shutting down) before any byte reached the client, the peer sits out
 * (util/replicas.c), the affinity moves to this kernel and the route
 * handler runs again with r->no_forward: the call is served here. A peer
 * that fails after the answer began ends the answer with an error (the
 * client saw part of it).
 *
 * Threads: one forwarder thread owns a libcurl multi handle and every
 * transfer (no thread per request; nothing blocks an HTTP thread). The
 * request and the thread share a struct api_fwd_call (two references)
 * whose mutex is a leaf lock. Parking follows http.c's protocol for
 * syscalls: the HTTP thread sets `parked` and suspends the connection
 * while holding call->mu; the forwarder clears it under call->mu and
 * resumes after unlocking, so a wake-up is never lost and the request is
 * never touched after it completed (it cannot complete while suspended). */
#include "api/api.h"

#include "cluster/cluster.h"
#include "llm/remote.h"
#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* an answer the client reads slower than the peer sends is buffered up to
 * this much, then cut */
#define FWD_MAX_BUFFER ((size_t)64 << 20)
#define FWD_POLL_MS 1000

enum fwd_state {
    FWD_PENDING, /* sent, no answer yet */
    FWD_HEADERS, /* the peer's status and headers arrived; body may follow */
    FWD_DONE,    /* the whole answer arrived */
    FWD_FAILED,  /* no answer: serve it here */
    FWD_BROKEN,  /* the answer began and then broke */
};

struct api_fwd_call {
    int refs; /* atomic: the request's and the forwarder's */
    pthread_mutex_t mu;
    /* guarded by mu */
    struct api_req *r; /* NULL once the request completed */
    enum fwd_state state;
    bool parked, cancelled;
    bool stopping; /* ended by the kernel's shutdown: no fallback */
    long status;
    char ctype[128], served_by[80], why[256];
    char *buf; /* answer bytes not yet handed to MHD */
    size_t n_buf, off_buf, cap_buf;
    /* set before the call is queued; read-only after */
    struct clu_mgr *clu;
    size_t peer;
    char agent[128], model[128];
    api_handler_fn self;
    char *url;
    struct curl_slist *hdrs;
    /* forwarder thread only */
    CURL *easy;
    bool head_seen; /* a final (non-1xx) status line was read */
    struct api_fwd_call *next;
};

struct api_fwd {
    struct kernel *k;
    pthread_t thread;
    bool started;
    CURLM *multi;
    pthread_mutex_t q_mu; /* leaf: the queue of new calls and `stop` */
    struct api_fwd_call *queue;
    bool stop;
    struct api_fwd_call *calls; /* in flight; thread only */
};

static void call_unref(struct api_fwd_call *f)
{
    if (!f || __atomic_sub_fetch(&f->refs, 1, __ATOMIC_ACQ_REL) > 0) return;
    pthread_mutex_destroy(&f->mu);
    curl_slist_free_all(f->hdrs);
    free(f->url);
    free(f->buf);
    free(f);
}

/* update f's state under its lock, then wake its connection if parked */
static void call_wake(struct api_fwd_call *f)
{
    struct MHD_Connection *conn = NULL;
    if (f->parked && f->r) {
        f->parked = false;
        conn = f->r->conn;
    }
    pthread_mutex_unlock(&f->mu);
    if (conn) MHD_resume_connection(conn);
}

/* ---- the forwarder thread ---- */

static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    struct api_fwd_call *f = ud;
    size_t n = size * nmemb;
    if (n >= 5 && !strncmp(p, "HTTP/", 5)) { /* a status line (again after a 1xx) */
        const char *sp = memchr(p, ' ', n);
        long st = sp ? strtol(sp + 1, NULL, 10) : 0;
        pthread_mutex_lock(&f->mu);
        f->status = st;
        f->ctype[0] = f->served_by[0] = 0;
        pthread_mutex_unlock(&f->mu);
        return n;
    }
    if (n <= 2) { /* the blank line: headers complete */
        pthread_mutex_lock(&f->mu);
        long st = f->status;
        if (st < 200) { /* an interim answer: its own status line follows */
            pthread_mutex_unlock(&f->mu);
            return n;
        }
        f->head_seen = true;
        if (st == 503) { /* shutting down, or the peer has no database: not an answer to pass on */
            snprintf(f->why, sizeof f->why, "it answered 503");
            pthread_mutex_unlock(&f->mu);
            return 0; /* abort: the call is served here */
        }
        f->state = FWD_HEADERS;
        call_wake(f);
        return n;
    }
    /* Name: value */
    const char *colon = memchr(p, ':', n);
    if (!colon) return n;
    size_t kn = (size_t)(colon - p);
    const char *v = colon + 1;
    size_t vn = n - kn - 1;
    while (vn && (*v == ' ' || *v == '\t')) v++, vn--;
    while (vn && (v[vn - 1] == '\r' || v[vn - 1] == '\n' || v[vn - 1] == ' ')) vn--;
    char *dst = NULL;
    size_t cap = 0;
    pthread_mutex_lock(&f->mu);
    if (kn == 12 && !strncasecmp(p, "Content-Type", 12)) dst = f->ctype, cap = sizeof f->ctype;
    else if (kn == 16 && !strncasecmp(p, "X-Aios-Served-By", 16))
        dst = f->served_by, cap = sizeof f->served_by;
    if (dst) {
        if (vn >= cap) vn = cap - 1;
        memcpy(dst, v, vn);
        dst[vn] = 0;
        /* header values go back into headers: no control characters */
        for (size_t i = 0; i < vn; i++)
            if ((unsigned char)dst[i] < 0x20 || dst[i] == 0x7f) dst[i] = ' ';
    }
    pthread_mutex_unlock(&f->mu);
    return n;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    struct api_fwd_call *f = ud;
    size_t n = size * nmemb;
    pthread_mutex_lock(&f->mu);
    if (f->cancelled || f->n_buf - f->off_buf + n > FWD_MAX_BUFFER ||
        util_buf_append(&f->buf, &f->n_buf, &f->cap_buf, p, n)) {
        if (!f->cancelled) snprintf(f->why, sizeof f->why, "the client reads too slowly");
        pthread_mutex_unlock(&f->mu);
        return 0;
    }
    call_wake(f);
    return n;
}

static int call_start(struct api_fwd *fw, struct api_fwd_call *f, const char *body, size_t n_body)
{
    CURL *e = curl_easy_init();
    if (!e) return AIOS_ENOMEM;
    f->easy = e;
    curl_easy_setopt(e, CURLOPT_URL, f->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, f->hdrs);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n_body);
    curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body ? body : "");
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, f);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(e, CURLOPT_PRIVATE, f);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)clu_connect_timeout_ms(f->clu));
    curl_easy_setopt(e, CURLOPT_TIMEOUT, (long)clu_timeout_s(f->clu));
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "aios-forward");
    if (curl_multi_add_handle(fw->multi, e) != CURLM_OK) {
        curl_easy_cleanup(e);
        f->easy = NULL;
        return AIOS_ENOMEM;
    }
    return 0;
}

/* the transfer of f ended (cc) or was dropped (cancelled / shutdown) */
static void call_end(struct api_fwd *fw, struct api_fwd_call *f, CURLcode cc, bool dropped)
{
    if (f->easy) {
        curl_multi_remove_handle(fw->multi, f->easy);
        curl_easy_cleanup(f->easy);
        f->easy = NULL;
    }
    pthread_mutex_lock(&f->mu);
    bool cancelled = f->cancelled;
    char why[300];
    if (cc != CURLE_OK && !f->why[0])
        snprintf(f->why, sizeof f->why, "%s", dropped ? "the kernel is stopping" : curl_easy_strerror(cc));
    snprintf(why, sizeof why, "%s", f->why);
    enum fwd_state was = f->state;
    enum fwd_state now = was == FWD_PENDING ? FWD_FAILED /* nothing reached the client */
                         : cc == CURLE_OK && !dropped ? FWD_DONE : FWD_BROKEN;
    if (cc == CURLE_OK && was == FWD_PENDING && !f->why[0])
        snprintf(f->why, sizeof f->why, "its answer had no headers");
    pthread_mutex_unlock(&f->mu);
    /* the verdict on the peer before the state says the call is over: from
     * then on the client may have all of the answer and send its next
     * call, which must find this one ended (not still outstanding, so the
     * peer overloaded at cluster.max_outstanding). A failure before any
     * answer is the HTTP thread's to report (clu_forward_failed, with the
     * fallback). */
    if (cancelled || dropped) clu_forward_release(f->clu, f->peer);
    else if (now == FWD_DONE) clu_forward_end(f->clu, f->peer, true, NULL);
    else if (now == FWD_BROKEN) clu_forward_end(f->clu, f->peer, false, why);
    pthread_mutex_lock(&f->mu);
    if (dropped && !cancelled) f->stopping = true;
    f->state = now;
    call_wake(f);
    LOG_DEBUG("forward", "%s -> %s: %s%s%s", f->agent, f->url,
              now == FWD_DONE ? "answered" : now == FWD_FAILED ? "no answer" : "broken",
              why[0] ? ": " : "", why);
    call_unref(f);
}

static void *fwd_main(void *arg)
{
    struct api_fwd *fw = arg;
    for (;;) {
        pthread_mutex_lock(&fw->q_mu);
        struct api_fwd_call *q = fw->queue;
        fw->queue = NULL;
        bool stop = fw->stop;
        pthread_mutex_unlock(&fw->q_mu);
        while (q) { /* new calls; their bodies ride in buf until started */
            struct api_fwd_call *f = q;
            q = q->next;
            char *body = f->buf;
            size_t n = f->n_buf;
            f->buf = NULL;
            f->n_buf = f->cap_buf = 0;
            int rc = stop ? AIOS_ESHUTDOWN : call_start(fw, f, body, n);
            free(body);
            if (rc) {
                call_end(fw, f, CURLE_FAILED_INIT, true);
                continue;
            }
            f->next = fw->calls;
            fw->calls = f;
        }
        /* drop transfers whose clients went away, or all at shutdown */
        for (struct api_fwd_call **pp = &fw->calls; *pp;) {
            struct api_fwd_call *f = *pp;
            pthread_mutex_lock(&f->mu);
            bool drop = f->cancelled || stop;
            pthread_mutex_unlock(&f->mu);
            if (!drop) {
                pp = &f->next;
                continue;
            }
            *pp = f->next;
            call_end(fw, f, CURLE_ABORTED_BY_CALLBACK, true);
        }
        if (stop) break;
        int running = 0;
        curl_multi_perform(fw->multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(fw->multi, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            struct api_fwd_call *f = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&f);
            CURLcode cc = msg->data.result;
            for (struct api_fwd_call **pp = &fw->calls; *pp; pp = &(*pp)->next)
                if (*pp == f) {
                    *pp = f->next;
                    break;
                }
            call_end(fw, f, cc, false);
        }
        curl_multi_poll(fw->multi, NULL, 0, FWD_POLL_MS, NULL);
    }
    return NULL;
}

int api_fwd_start(struct api_fwd **out, struct kernel *k, char *err, size_t errlen)
{
    *out = NULL;
    if (!k->cluster) return 0;
    struct api_fwd *fw = calloc(1, sizeof *fw);
    if (!fw) return AIOS_ENOMEM;
    fw->k = k;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    pthread_mutex_init(&fw->q_mu, NULL);
    fw->multi = curl_multi_init();
    if (!fw->multi || pthread_create(&fw->thread, NULL, fwd_main, fw) != 0) {
        snprintf(err, errlen, "cannot start the cluster forwarder");
        if (fw->multi) curl_multi_cleanup(fw->multi);
        pthread_mutex_destroy(&fw->q_mu);
        free(fw);
        return AIOS_ENOMEM;
    }
    fw->started = true;
    *out = fw;
    return 0;
}

void api_fwd_stop(struct api_fwd *fw)
{
    if (!fw || !fw->started) return;
    pthread_mutex_lock(&fw->q_mu);
    fw->stop = true;
    pthread_mutex_unlock(&fw->q_mu);
    curl_multi_wakeup(fw->multi);
    pthread_join(fw->thread, NULL);
    fw->started = false;
}

void api_fwd_free(struct api_fwd *fw)
{
    if (!fw) return;
    api_fwd_stop(fw);
    curl_multi_cleanup(fw->multi);
    pthread_mutex_destroy(&fw->q_mu);
    free(fw);
}

/* ---- the HTTP side ---- */

static ssize_t fwd_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct api_req *r = cls;
    struct api_fwd_call *f = r->fwd;
    (void)pos;
    pthread_mutex_lock(&f->mu);
    if (f->off_buf < f->n_buf) {
        size_t n = f->n_buf - f->off_buf;
        if (n > max) n = max;
        memcpy(buf, f->buf + f->off_buf, n);
        f->off_buf += n;
        pthread_mutex_unlock(&f->mu);
        return (ssize_t)n;
    }
    f->n_buf = f->off_buf = 0;
    enum fwd_state st = f->state;
    if (st == FWD_DONE || st == FWD_BROKEN || st == FWD_FAILED) {
        pthread_mutex_unlock(&f->mu);
        if (st != FWD_DONE)
            LOG_WARN("forward", "the answer of peer %s broke off: %s", clu_peer_name(f->clu, f->peer),
                     f->why);
        return st == FWD_DONE ? MHD_CONTENT_READER_END_OF_STREAM
                              : MHD_CONTENT_READER_END_WITH_ERROR;
    }
    f->parked = true;
    MHD_suspend_connection(r->conn);
    pthread_mutex_unlock(&f->mu);
    return 0;
}

/* resumed: the peer answered (pass its answer on) or could not be reached
 * (serve it here) */
static enum MHD_Result fwd_resume(struct api_req *r)
{
    struct api_fwd_call *f = r->fwd;
    pthread_mutex_lock(&f->mu);
    enum fwd_state st = f->state;
    long status = f->status;
    char ctype[128], served_by[80], why[256];
    snprintf(ctype, sizeof ctype, "%s", f->ctype[0] ? f->ctype : "application/json");
    snprintf(served_by, sizeof served_by, "%s", f->served_by);
    snprintf(why, sizeof why, "%s", f->why);
    bool stopping = f->stopping;
    pthread_mutex_unlock(&f->mu);
    if (st == FWD_FAILED && stopping) /* the peer is not to blame, and this kernel is going */
        return api_send_error(r, 503, "service_unavailable",
                              "the kernel is shutting down; retry once it runs again");
    if (st == FWD_FAILED) {
        clu_forward_failed(f->clu, f->peer, f->agent, f->model, why);
        r->no_forward = true;
        return f->self(r);
    }
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, fwd_reader, r, NULL);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (!strncasecmp(ctype, "text/event-stream", 17))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    if (served_by[0]) MHD_add_response_header(resp, "X-Aios-Served-By", served_by);
    if (r->request_id[0]) MHD_add_response_header(resp, "x-request-id", r->request_id);
    r->status = (unsigned)status;
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static struct curl_slist *add_hdr(struct curl_slist *h, bool *ok, struct api_req *r,
                                  const char *name)
{
    const char *v = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
    if (!v || !*ok) return h;
    size_t n = strlen(name) + strlen(v) + 3;
    char *line = malloc(n);
    if (!line) {
        *ok = false;
        return h;
    }
    snprintf(line, n, "%s: %s", name, v);
    struct curl_slist *t = curl_slist_append(h, line);
    free(line);
    if (!t) *ok = false;
    return t ? t : h;
}

bool api_affinity_forward(struct api_req *r, const struct llm_core *core, api_handler_fn self,
                          enum MHD_Result *sent)
{
    struct clu_mgr *m = r->k->cluster;
    struct api_fwd *fw = api_server_fwd(r->srv);
    if (!m || !fw || !r->acc_shared || !r->acc_agent[0] || llm_backend_is_remote(core->backend))
        return false;
    const char *agent = r->acc_agent, *model = core->name;
    bool forwarded_in =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Aios-Forwarded") != NULL;
    if (forwarded_in && !r->no_forward) clu_note_forwarded_in(m);
    if (r->no_forward) return false; /* the peer failed: fallback already recorded */
    int peer = clu_route(m, agent, model, !forwarded_in);
    if (peer < 0) return false;

    struct api_fwd_call *f = calloc(1, sizeof *f);
    if (!f) return false; /* served here */
    pthread_mutex_init(&f->mu, NULL);
    f->refs = 2;
    f->r = r;
    f->clu = m;
    f->peer = (size_t)peer;
    f->self = self;
    snprintf(f->agent, sizeof f->agent, "%s", agent);
    snprintf(f->model, sizeof f->model, "%s", model);
    const char *base = clu_peer_url(m, (size_t)peer);
    size_t nu = strlen(base) + strlen(r->url) + 1;
    f->url = malloc(nu);
    bool ok = f->url != NULL && !util_buf_append(&f->buf, &f->n_buf, &f->cap_buf, r->body,
                                                   r->n_body);
    if (f->url) snprintf(f->url, nu, "%s%s", base, r->url);
    struct curl_slist *h = NULL;
    const char *names[] = {"Content-Type", "Authorization", "X-Aios-Agent-Token", "X-Aios-Agent",
                           "X-Aios-Priority", "Accept"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) h = add_hdr(h, &ok, r, names[i]);
    char line[256];
    snprintf(line, sizeof line, "X-Aios-Forwarded: %s", clu_name(m));
    struct curl_slist *t = ok ? curl_slist_append(h, line) : NULL;
    if (t) h = t;
    snprintf(line, sizeof line, "X-Request-Id: %s", r->request_id);
    t = t ? curl_slist_append(h, line) : NULL;
    if (t) h = t;
    t = t ? curl_slist_append(h, "Expect:") : NULL;
    if (t) h = t;
    f->hdrs = h;
    if (!ok || !t) {
        f->refs = 1;
        call_unref(f);
        return false;
    }
    clu_forward_begin(m, (size_t)peer);
    LOG_DEBUG("forward", "agent %s, model %s -> peer %s (%s)", agent, model,
              clu_peer_name(m, (size_t)peer), f->url);
    pthread_mutex_lock(&fw->q_mu);
    bool stopped = fw->stop;
    if (!stopped) {
        f->next = fw->queue;
        fw->queue = f;
    }
    pthread_mutex_unlock(&fw->q_mu);
    if (stopped) { /* the kernel is stopping: nobody would run it */
        clu_forward_release(m, (size_t)peer);
        f->refs = 1;
        call_unref(f);
        return false;
    }
    r->fwd = f;
    r->resume = fwd_resume;
    curl_multi_wakeup(fw->multi);
    /* park until the peer's headers (or its failure) arrive */
    pthread_mutex_lock(&f->mu);
    if (f->state != FWD_PENDING) {
        pthread_mutex_unlock(&f->mu);
        r->resume = NULL;
        *sent = fwd_resume(r);
        return true;
    }
    f->parked = true;
    MHD_suspend_connection(r->conn);
    pthread_mutex_unlock(&f->mu);
    *sent = MHD_YES;
    return true;
}

void api_fwd_release(struct api_req *r)
{
    struct api_fwd_call *f = r->fwd;
    if (!f) return;
    r->fwd = NULL;
    pthread_mutex_lock(&f->mu);
    f->r = NULL;
    f->parked = false;
    bool live = f->state == FWD_PENDING || f->state == FWD_HEADERS;
    if (live) f->cancelled = true;
    pthread_mutex_unlock(&f->mu);
    if (live) {
        struct api_fwd *fw = api_server_fwd(r->srv);
        if (fw) curl_multi_wakeup(fw->multi);
    }
    call_unref(f);
}
