/* The HTTP server (libmicrohttpd) and the request lifecycle.
 *
 * MHD runs a small pool of polling threads (epoll); no thread per request
 * and no thread ever blocks on a syscall. A request goes through these
 * steps, all on an MHD thread:
 *
 *  1. First call: allocate struct api_req, find the route (404/405 early),
 *     reject a declared Content-Length over server.max_body_bytes (413) at
 *     once when the client waits for "100 Continue" or the body is huge;
 *     otherwise step 2 drains it (answering before the body is read would
 *     close the socket under the sender: a reset instead of the 413).
 *  2. Upload calls: append to the body; past the limit, keep draining but
 *     remember it is too big (413 at the end).
 *  3. Final call: run the route handler. A handler answers at once, or
 *     submits a syscall with api_submit_and_wait() (the connection is
 *     suspended; the syscall's notify callback resumes it when the call is
 *     final and the handler's `resume` function answers; a cheap read the
 *     scheduler hands back, sched_submit_here, runs right here without
 *     blocking and is answered at once), or with
 *     api_submit_and_stream() (a 200 with a chunked body whose reader
 *     suspends the connection whenever no output is ready).
 *  4. Completion (MHD_OPTION_NOTIFY_COMPLETED): free the api_req. If the
 *     syscall is not final the client went away: ask it to cancel.
 *
 * Suspension and wake-up use the syscall's mutex and its `waiter_parked`
 * flag: the MHD thread sets the flag and suspends the connection while
 * holding sc->mu, the worker clears the flag under sc->mu and resumes after
 * releasing it. MHD_suspend_connection only takes MHD's own internal lock,
 * which never calls back into us, so this cannot deadlock; and a wake-up can
 * never be lost between "nothing ready" and "suspended".
 *
 * The api_req outlives the parked period: MHD never completes a suspended
 * connection, so the notify callback may touch it only after seeing the
 * flag set.
 *
 * Slow and malformed clients (docs/reliability.md, "Slow clients"). A
 * connection holds a slot (server.max_connections in all, at most
 * server.max_connections_per_ip from one address; MHD closes the ones past
 * either at once). While a request's head or body is arriving the
 * connection may be silent for server.request_timeout_s (short: set when
 * the connection opens and again when a head with a body is complete); once
 * the request is dispatched it gets server.idle_timeout_s, which covers an
 * answer the client reads slowly and keep-alive idle before the next
 * request. A suspended connection (a syscall in progress, a stream waiting
 * for output) has no timeout in MHD; its timer restarts on resume.
 * Requests MHD 0.9.75 would leave hanging are answered here instead:
 * too many query parameters (MHD queues a 431 but then goes on reading
 * with no buffer; uri_logger() cuts the query off before MHD parses it and
 * the first call answers 414), conflicting Content-Length headers or one
 * beside Transfer-Encoding (400 and close: the framing is ambiguous), and a
 * chunked body that never ends (closed after DRAIN_MAX_BYTES past the
 * limit). X-Aios-* headers must be UTF-8 text without control characters
 * (400 naming the header): they become agent names, metrics labels and log
 * lines. */
#include "api/api.h"

#include "access/access.h"
#include "agents/agent.h"
#include "kernel/kernel.h"

#include "util/err.h"
#include "util/json_dec.h"
#include "util/json_enc.h"
#include "util/log.h"
#include "util/util.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* a declared body over the limit but under this is read and dropped before
 * the 413 (step 1 above) */
#define DRAIN_MAX_BYTES ((unsigned long long)64 << 20)
/* a query string with more parameters than this gets a 414; the routes
 * read one or two */
#define API_MAX_QUERY_ARGS 100

struct api_server {
    struct kernel *k;
    struct MHD_Daemon *d;
    int port;
    size_t max_body;
    unsigned request_timeout, idle_timeout; /* seconds */
    int n_active; /* requests between first call and completion (atomic) */
    /* set by api_quiesce(): new requests get a 503 (atomic). Not
     * MHD_quiesce_daemon(): in MHD 0.9.75 it races the epoll pool threads
     * removing the listen socket from their epoll sets, and the loser's
     * epoll_ctl(DEL) fails with ENOENT, on which MHD aborts the process
     * ("Failed to remove listen FD from epoll set"; seen at shutdown in
     * test_lifecycle under ASan). poll(2) would avoid the race but served
     * 10-20% fewer requests a second (64 keep-alive clients, GET /status). */
    int closing;
    struct api_fwd *fwd; /* KV affinity's forwarder (forward.c), or NULL */
};

struct api_fwd *api_server_fwd(struct api_server *s) { return s ? s->fwd : NULL; }

/* X-Aios-Served-By: the kernel that served the request, in a cluster */
static void served_by(struct api_req *r, struct MHD_Response *resp)
{
    if (r->k->cfg.cluster.name)
        MHD_add_response_header(resp, "X-Aios-Served-By", r->k->cfg.cluster.name);
}



unsigned api_status_for(int err, const char **type)
{
    const char *t = "server_error";
    unsigned st = 500;
    switch (err) {
    case AIOS_EINVAL: st = 400; t = "invalid_request_error"; break;
    case AIOS_ETOOBIG: st = 400; t = "invalid_request_error"; break;
    case AIOS_ENOTFOUND: st = 404; t = "not_found_error"; break;
    case AIOS_EPERM: st = 403; t = "permission_error"; break;
    case AIOS_EBUSY: st = 429; t = "rate_limit_error"; break;
    case AIOS_ESHUTDOWN: st = 503; t = "service_unavailable"; break;
    case AIOS_ECANCELLED: st = 499; t = "cancelled"; break;
    case AIOS_ENOSPC: st = 507; t = "insufficient_storage"; break;
    default: break;
    }
    if (type) *type = t;
    return st;
}

/* "%lld" of v into out (24 bytes), without snprintf's cost */
static void dec_text(char *out, long long v)
{
    char tmp[24];
    size_t n = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) tmp[n++] = '-';
    for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    out[n] = 0;
}

static enum MHD_Result queue(struct api_req *r, unsigned status, char *body, size_t len,
                             const char *ctype)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (r->request_id[0]) MHD_add_response_header(resp, "x-request-id", r->request_id);
    served_by(r, resp);
    r->status = status;
    if (r->t_arrived_us) { /* the kernel's time for this request (docs/performance.md) */
        long long total = (long long)(util_now_us() - r->t_arrived_us);
        long long wait = (long long)r->queue_us < total ? (long long)r->queue_us : total;
        char kt[24];
        dec_text(kt, total);
        MHD_add_response_header(resp, "X-Aios-Kernel-Us", kt);
        dec_text(kt, wait);
        MHD_add_response_header(resp, "X-Aios-Queue-Us", kt);
        dec_text(kt, total - wait);
        MHD_add_response_header(resp, "X-Aios-Service-Us", kt);
    }
    if (r->close_after) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    if (status == 405) {
        char allow[128] = "";
        api_routes_allowed(r->url, allow, sizeof allow);
        if (allow[0]) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    }
    enum MHD_Result ret = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

enum MHD_Result api_send_raw(struct api_req *r, unsigned status, char *body, size_t len,
                             const char *ctype)
{
    return queue(r, status, body, len, ctype);
}

enum MHD_Result api_send_json(struct api_req *r, unsigned status, json_t *body)
{
    /* json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(15))'s text, in
     * a fraction of its instructions (util/json_enc.c), with room for the
     * newline */
    size_t n = 0;
    char *s = body ? json_enc_compact(body, 15, 1, &n) : NULL;
    json_decref(body);
    if (!s) {
        s = strdup("{\"error\":{\"message\":\"could not encode the response\",\"type\":\"server_error\"}}");
        status = 500;
        if (!s) return MHD_NO;
        n = strlen(s);
        /* room for the newline */
        char *t = realloc(s, n + 2);
        if (!t) return queue(r, status, s, n, "application/json");
        s = t;
    }
    /* newline-terminated, friendlier for curl users */
    s[n++] = '\n';
    s[n] = 0;
    return queue(r, status, s, n, "application/json");
}

enum MHD_Result api_send_error(struct api_req *r, unsigned status, const char *type,
                               const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (status >= 500) LOG_WARN("api", "%s %s -> %u: %s", r->method, r->url, status, msg);
    else LOG_DEBUG("api", "%s %s -> %u: %s", r->method, r->url, status, msg);
    json_t *e = json_pack("{s:{s:s,s:s,s:n}}", "error", "message", msg, "type", type, "code");
    if (!e) { /* msg was not valid UTF-8 */
        e = json_pack("{s:{s:s,s:s,s:n}}", "error", "message", "invalid request", "type", type,
                      "code");
    }
    return api_send_json(r, status, e);
}

json_t *api_parse_body(struct api_req *r, enum MHD_Result *sent)
{
    if (r->json) { /* parsed by the access gate: the caller's now */
        json_t *j = r->json;
        r->json = NULL;
        return j;
    }
    json_error_t je;
    if (r->n_body == 0) {
        *sent = api_send_error(r, 400, "invalid_request_error",
                               "the request body is empty; send a JSON object");
        return NULL;
    }
    json_t *j = json_dec_loadb(r->body, r->n_body, JSON_REJECT_DUPLICATES, &je); /* json_loadb's result, faster */
    if (!j) {
        *sent = api_send_error(r, 400, "invalid_request_error",
                               "the request body is not valid JSON: %s (line %d, column %d)",
                               je.text, je.line, je.column);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        *sent = api_send_error(r, 400, "invalid_request_error",
                               "the request body must be a JSON object");
        return NULL;
    }
    return j;
}

/* ---- waiting on a syscall ---- */

/* r's syscall is final and its handler is about to be resumed: count
 * what it waited (queued in the scheduler, then for this thread) */
static void count_wait(struct api_req *r)
{
    struct syscall *sc = r->sc;
    if (!sc) return;
    int64_t now = util_now_us();
    pthread_mutex_lock(&sc->mu);
    int64_t w = sc->t_wait_us + (sc->t_end_us && now > sc->t_end_us ? now - sc->t_end_us : 0);
    pthread_mutex_unlock(&sc->mu);
    r->queue_us += w;
}

static void on_syscall_event(struct syscall *sc, void *ud)
{
    struct api_req *r = ud;
    bool wake = false;
    pthread_mutex_lock(&sc->mu);
    if (sc->waiter_parked && (sc->stream || syscall_status_final(sc->status))) {
        sc->waiter_parked = false;
        wake = true;
    }
    pthread_mutex_unlock(&sc->mu);
    if (wake) MHD_resume_connection(r->conn);
}

/* Attach sc to r (r owns the caller's reference from now on) and queue it;
 * with `taken`, a cheap read may instead be handed back to run on this
 * thread (sched_submit_here: *taken). On failure the error answer is
 * already queued and *sent holds it. */
static int attach_and_submit(struct api_req *r, struct syscall *sc, bool *taken,
                             enum MHD_Result *sent)
{
    r->sc = sc;
    if (!sc->request_id[0]) snprintf(sc->request_id, sizeof sc->request_id, "%s", r->request_id);
    sc->notify = on_syscall_event;
    sc->notify_ud = r;
    int g = api_access_before_submit(r, sc, sent); /* token budgets, storage approvals */
    if (g) return g < 0 ? AIOS_EPERM : 0;
    int rc = taken ? sched_submit_here(r->k->sched, sc, taken) : sched_submit(r->k->sched, sc);
    if (rc) {
        acc_budget_unreserve(r->k->access, sc);
        const char *type;
        unsigned st = api_status_for(rc, &type);
        *sent = api_send_error(r, st, type, "could not queue the request: %s", aios_strerror(rc));
    }
    return rc;
}

enum MHD_Result api_submit_and_wait(struct api_req *r, struct syscall *sc, api_handler_fn resume)
{
    enum MHD_Result sent;
    r->resume = resume;
    bool here = false;
    if (attach_and_submit(r, sc, &here, &sent)) {
        r->resume = NULL;
        return sent;
    }
    if (here) sched_run_here(r->k->sched, sc); /* final when it returns */
    pthread_mutex_lock(&sc->mu);
    if (syscall_status_final(sc->status)) {
        pthread_mutex_unlock(&sc->mu);
        r->resume = NULL;
        count_wait(r);
        return resume(r);
    }
    sc->waiter_parked = true;
    MHD_suspend_connection(r->conn);
    pthread_mutex_unlock(&sc->mu);
    return MHD_YES;
}

struct stream_state {
    api_stream_fmt_fn format;
    char *out; /* formatted bytes not yet handed to MHD */
    size_t n_out, off_out, cap_out;
    char *delta;
    size_t n_delta, cap_delta;
    char *aux; /* sc->aux taken with delta */
    size_t n_aux, cap_aux;
    bool done;
};

const char *api_stream_aux(struct api_req *r, size_t *n)
{
    struct stream_state *ss = r->stream;
    *n = ss ? ss->n_aux : 0;
    return ss && ss->n_aux ? ss->aux : NULL;
}

static ssize_t stream_reader_in(void *cls, uint64_t pos, char *buf, size_t max);

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct api_req *r = cls;
    const char *prev = log_set_request_id(r->request_id);
    ssize_t n = stream_reader_in(cls, pos, buf, max);
    log_set_request_id(prev);
    return n;
}

static ssize_t stream_reader_in(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct api_req *r = cls;
    struct stream_state *ss = r->stream;
    struct syscall *sc = r->sc;
    (void)pos;
    for (;;) {
        if (ss->off_out < ss->n_out) {
            size_t n = ss->n_out - ss->off_out;
            if (n > max) n = max;
            memcpy(buf, ss->out + ss->off_out, n);
            ss->off_out += n;
            return (ssize_t)n;
        }
        ss->n_out = ss->off_out = 0;
        if (ss->done) return MHD_CONTENT_READER_END_OF_STREAM;

        /* take new output, or park until there is some */
        ss->n_delta = ss->n_aux = 0;
        pthread_mutex_lock(&sc->mu);
        if (sc->n_out) {
            if (util_buf_append(&ss->delta, &ss->n_delta, &ss->cap_delta, sc->out, sc->n_out)) {
                pthread_mutex_unlock(&sc->mu);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            sc->n_out = 0;
        }
        if (sc->n_aux) {
            if (util_buf_append(&ss->aux, &ss->n_aux, &ss->cap_aux, sc->aux, sc->n_aux)) {
                pthread_mutex_unlock(&sc->mu);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            sc->n_aux = 0;
        }
        bool final = syscall_status_final(sc->status);
        if (!ss->n_delta && !ss->n_aux && !final) {
            sc->waiter_parked = true;
            MHD_suspend_connection(r->conn);
            pthread_mutex_unlock(&sc->mu);
            return 0;
        }
        pthread_mutex_unlock(&sc->mu);
        if (ss->format(r, ss->delta, ss->n_delta, final, &ss->out, &ss->n_out, &ss->cap_out))
            return MHD_CONTENT_READER_END_WITH_ERROR;
        if (final) ss->done = true;
    }
}

static void stream_state_free(void *p)
{
    struct stream_state *ss = p;
    if (!ss) return;
    free(ss->out);
    free(ss->delta);
    free(ss->aux);
    free(ss);
}

enum MHD_Result api_submit_and_stream(struct api_req *r, struct syscall *sc,
                                      const char *content_type, api_stream_fmt_fn format)
{
    struct stream_state *ss = calloc(1, sizeof *ss);
    if (!ss) {
        syscall_unref(sc);
        return api_send_error(r, 500, "server_error", "out of memory");
    }
    ss->format = format;
    r->stream = ss;
    sc->stream = true;
    enum MHD_Result sent;
    if (attach_and_submit(r, sc, NULL, &sent)) return sent;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_reader, r, NULL);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    if (r->request_id[0]) MHD_add_response_header(resp, "x-request-id", r->request_id);
    served_by(r, resp);
    r->status = 200;
    enum MHD_Result ret = MHD_queue_response(r->conn, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- MHD callbacks ---- */

static void conn_timeout(struct MHD_Connection *conn, unsigned seconds)
{
    MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, seconds);
}

/* MHD_OPTION_NOTIFY_CONNECTION: a new connection has request_timeout until
 * its first request is dispatched */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct api_server *srv = cls;
    (void)socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) conn_timeout(conn, srv->request_timeout);
}

/* con_cls of a request whose query string had too many parameters */
static char g_too_many_args;

/* MHD_OPTION_URI_LOG_CALLBACK: runs on the request line before MHD splits
 * the query into its arguments. `uri` points into MHD's writable line buffer
 * (0.9.75: parse_initial_message_line), at the same '?' MHD found; ending
 * the string right after it leaves MHD an empty query, and the marker makes
 * the first call answer 414. */
static void *uri_logger(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls;
    (void)conn;
    char *q = strchr(uri, '?');
    if (!q) return NULL;
    int n = 1;
    for (const char *p = q + 1; *p; p++)
        if (*p == '&' && ++n > API_MAX_QUERY_ARGS) {
            q[1] = 0;
            return &g_too_many_args;
        }
    return NULL;
}

struct header_scan {
    const char *cl;  /* first Content-Length */
    bool cl_conflict; /* another with a different value */
    bool te;         /* Transfer-Encoding present */
    const char *bad; /* an X-Aios-* header that is not UTF-8 text */
};

bool api_header_text_ok(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        int n;
        unsigned cp;
        if (c < 0x80) {
            if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
            p++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) n = 1, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef) n = 2, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4) n = 3, cp = c & 0x07;
        else return false;
        for (int i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        p += n + 1;
    }
    return true;
}

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    struct header_scan *hs = cls;
    (void)kind;
    if (!key) return MHD_YES;
    if (!value) value = "";
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (!hs->cl) hs->cl = value;
        else if (strcmp(hs->cl, value) != 0) hs->cl_conflict = true;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        hs->te = true;
    } else if (!hs->bad && strncasecmp(key, "X-Aios-", 7) == 0 && !api_header_text_ok(value)) {
        hs->bad = key;
    }
    return MHD_YES;
}

/* a header's name as printable ASCII for an error message */
static void printable(char *dst, size_t cap, const char *src)
{
    size_t i = 0;
    for (; src[i] && i + 1 < cap; i++)
        dst[i] = (src[i] > 0x20 && src[i] < 0x7f) ? src[i] : '?';
    dst[i] = 0;
}

static uint64_t channel_run(struct MHD_Connection *c);

void api_request_id(const char *h, char *out, size_t cap)
{
    size_t n = h ? strlen(h) : 0;
    bool ok = n > 0 && n <= 64 && n < cap;
    for (size_t i = 0; ok && i < n; i++) {
        char c = h[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             strchr("-_.:/+=@", c) != NULL;
    }
    if (ok) {
        memcpy(out, h, n + 1);
        return;
    }
    static uint64_t counter;
    uint64_t c = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
    snprintf(out, cap, "req_%012llx%08llx", (unsigned long long)(util_wall_us() & 0xffffffffffffULL),
             (unsigned long long)(c & 0xffffffffULL));
}

static void request_id_of(struct MHD_Connection *conn, char *out, size_t cap)
{
    api_request_id(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id"), out, cap);
}

static enum MHD_Result handler_in(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls);

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *upload_data,
                               size_t *upload_data_size, void **con_cls)
{
    struct api_req *r = *con_cls;
    const char *prev = NULL;
    if (r && r != (void *)&g_too_many_args) prev = log_set_request_id(r->request_id);
    enum MHD_Result ret = handler_in(cls, conn, url, method, version, upload_data,
                                     upload_data_size, con_cls);
    log_set_request_id(prev);
    return ret;
}

static enum MHD_Result handler_in(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct api_server *srv = cls;
    struct api_req *r = *con_cls;
    (void)version;

    if (!r || r == (void *)&g_too_many_args) {
        bool too_many_args = r != NULL;
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        r->srv = srv;
        r->k = srv->k;
        r->conn = conn;
        r->method = method;
        r->t_start_us = util_now_us();
        request_id_of(conn, r->request_id, sizeof r->request_id);
        log_set_request_id(r->request_id); /* handler() puts the previous back */
        r->url = strdup(url);
        if (!r->url) {
            free(r);
            return MHD_NO;
        }
        *con_cls = r;
        __atomic_add_fetch(&srv->n_active, 1, __ATOMIC_ACQ_REL);
        if (too_many_args) {
            r->dispatched = true;
            r->close_after = true;
            return api_send_error(r, 414, "invalid_request_error",
                                  "the query string has more than %d parameters",
                                  API_MAX_QUERY_ARGS);
        }
        struct header_scan hs = {0};
        MHD_get_connection_values(conn, MHD_HEADER_KIND, scan_header, &hs);
        if (hs.cl_conflict || (hs.cl && hs.te)) {
            /* which body is meant is ambiguous (request smuggling):
             * refuse, and close so nothing after it is read as a request */
            r->dispatched = true;
            r->close_after = true;
            return api_send_error(r, 400, "invalid_request_error", "%s",
                                  hs.cl_conflict
                                      ? "conflicting Content-Length headers"
                                      : "both Content-Length and Transfer-Encoding are set");
        }
        /* a body must keep coming, like the head */
        if (hs.cl || hs.te) conn_timeout(conn, srv->request_timeout);
        const char *cl = hs.cl;
        if (cl) {
            char *end;
            unsigned long long v = strtoull(cl, &end, 10);
            /* A client that waits for "100 Continue" gets the 413 before
             * it sends the body. One that sends at once would meet a
             * socket closed with its body unread, which the peer sees as
             * a reset, not as our answer (seen under ASan with a 9 MiB
             * body): its body is read and dropped, up to DRAIN_MAX_BYTES,
             * and the 413 comes at the end (step 2). */
            if (*end == 0 && v > srv->max_body) {
                const char *ex = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
                if ((ex && strcasecmp(ex, "100-continue") == 0) || v > DRAIN_MAX_BYTES) {
                    r->dispatched = true;
                    return api_send_error(r, 413, "invalid_request_error",
                                          "the request body is %llu bytes; the limit is %zu bytes "
                                          "(server.max_body_bytes)", v, srv->max_body);
                }
                r->too_big = true;
            }
        }
        return MHD_YES;
    }

    if (r->dispatched) {
        /* resumed after a parked syscall finished */
        if (r->resume) {
            api_handler_fn fn = r->resume;
            r->resume = NULL;
            count_wait(r);
            return fn(r);
        }
        *upload_data_size = 0;
        return MHD_YES;
    }

    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->too_big || r->n_body + n > srv->max_body) {
            r->too_big = true;
            /* only a chunked body gets this far (a declared length past
             * DRAIN_MAX_BYTES had its 413 at once): one without end */
            r->n_drained += n;
            if (r->n_drained > DRAIN_MAX_BYTES) return MHD_NO; /* MHD closes it */
            return MHD_YES;
        }
        if (util_buf_append(&r->body, &r->n_body, &r->cap_body, upload_data, n))
            r->too_big = true;
        return MHD_YES;
    }

    r->dispatched = true;
    r->t_arrived_us = util_now_us();
    conn_timeout(conn, srv->idle_timeout); /* the answer, then keep-alive idle */
    if (r->too_big)
        return api_send_error(r, 413, "invalid_request_error",
                              "the request body exceeds the limit of %zu bytes (server.max_body_bytes)",
                              srv->max_body);
    /* after the body is read, like the 413: an answer before it would
     * reach the sender as a reset */
    if (__atomic_load_n(&srv->closing, __ATOMIC_ACQUIRE))
        return api_send_error(r, 503, "service_unavailable",
                              "the kernel is shutting down; retry once it runs again");
    struct header_scan hs = {0};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, scan_header, &hs);
    if (hs.bad) {
        char name[64];
        printable(name, sizeof name, hs.bad);
        return api_send_error(r, 400, "invalid_request_error",
                              "header %s must be UTF-8 text without control characters", name);
    }
    bool known;
    const struct api_route *rt = api_route_find(method, url, r->params, &r->n_params, &known);
    if (!rt) {
        if (known)
            return api_send_error(r, 405, "invalid_request_error", "method %s is not allowed on %s",
                                  method, url);
        return api_send_error(r, 404, "not_found_error", "no route %s %s", method, url);
    }
    r->acc_run = channel_run(conn);
    enum MHD_Result denied;
    if (!api_compat_guard(r, &denied)) return denied; /* compat mode: web pages (compat.c) */
    if (!api_access_gate(r, &denied)) return denied; /* access manager: 401/403 */
    return rt->fn(r);
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    struct api_req *r = *con_cls;
    struct api_server *srv = cls;
    (void)conn;
    if (r == (void *)&g_too_many_args) r = NULL; /* closed before the first call */
    if (!r) {
        *con_cls = NULL;
        return;
    }
    *con_cls = NULL;
    const char *prev = log_set_request_id(r->request_id);
    LOG_DEBUG("api", "%s %s -> %u in %.1f ms%s", r->method, r->url, r->status,
              (double)(util_now_us() - r->t_start_us) / 1000.0,
              toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (not completed)");
    if (r->sc) {
        bool final;
        pthread_mutex_lock(&r->sc->mu);
        final = syscall_status_final(r->sc->status);
        pthread_mutex_unlock(&r->sc->mu);
        if (!final) {
            LOG_INFO("api", "client went away (%d); cancelling syscall %llu", (int)toe,
                     (unsigned long long)r->sc->id);
            syscall_request_cancel(r->sc);
        }
        syscall_unref(r->sc);
    }
    api_fwd_release(r);
    if (r->state_free) r->state_free(r->state);
    stream_state_free(r->stream);
    json_decref(r->json);
    for (int i = 0; i < r->n_params; i++) free(r->params[i]);
    free(r->body);
    free(r->url);
    free(r);
    __atomic_sub_fetch(&srv->n_active, 1, __ATOMIC_ACQ_REL);
    log_set_request_id(prev);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char buf[512];
    (void)cls;
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n && buf[n - 1] == '\n') buf[--n] = 0;
    LOG_DEBUG("mhd", "%s", buf);
}

/* Room for every connection slot plus the kernel's own files: raise the
 * soft RLIMIT_NOFILE toward the hard one when it is lower. */
static void raise_fd_limit(rlim_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want) return;
    rlim_t to = (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) ? rl.rlim_max : want;
    if (to > rl.rlim_cur) {
        rl.rlim_cur = to;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < want)
        LOG_WARN("api", "open files limit %llu is below server.max_connections + 256 (%llu); "
                 "connections past it are refused", (unsigned long long)rl.rlim_cur,
                 (unsigned long long)want);
}

/* ---- run channels ----
 * A sandboxed agent reaches the kernel only through its run's Unix socket
 * (agents/agent.c). The agent factory accepts there and hands us the
 * connection; we give it to MHD with a made-up client address
 * "aios-run:<id>" (AF_UNIX: no TCP peer can have it), and the request
 * handler reads the run back from it for the access manager. */
#define RUN_ADDR_PREFIX "aios-run:"

static void channel_accept(void *ud, int fd, uint64_t id)
{
    struct api_server *s = ud;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, RUN_ADDR_PREFIX "%llu", (unsigned long long)id);
    /* MHD closes fd itself when it refuses it */
    if (MHD_add_connection(s->d, fd, (const struct sockaddr *)&a, sizeof a) != MHD_YES)
        LOG_WARN("api", "could not take a connection of agent run %llu", (unsigned long long)id);
}

static uint64_t channel_run(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr || ci->client_addr->sa_family != AF_UNIX) return 0;
    const struct sockaddr_un *a = (const struct sockaddr_un *)(const void *)ci->client_addr;
    if (strncmp(a->sun_path, RUN_ADDR_PREFIX, strlen(RUN_ADDR_PREFIX)) != 0) return 0;
    return strtoull(a->sun_path + strlen(RUN_ADDR_PREFIX), NULL, 10);
}

int api_start(struct api_server **out, struct kernel *k, char *err, size_t errlen)
{
    *out = NULL;
    struct api_server *s = calloc(1, sizeof *s);
    if (!s) return AIOS_ENOMEM;
    s->k = k;
    s->max_body = k->cfg.max_body_bytes;
    s->request_timeout = (unsigned)k->cfg.request_timeout_s;
    s->idle_timeout = (unsigned)k->cfg.idle_timeout_s;
    raise_fd_limit((rlim_t)k->cfg.max_connections + 256);

    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", k->cfg.port);
    int gai = getaddrinfo(k->cfg.host, portstr, &hints, &ai);
    if (gai != 0 || !ai) {
        snprintf(err, errlen, "cannot resolve server.host '%s': %s", k->cfg.host, gai_strerror(gai));
        free(s);
        return AIOS_ECONFIG;
    }
    /* prefer IPv4 (localhost resolves to both) */
    struct addrinfo *pick = ai;
    for (struct addrinfo *p = ai; p; p = p->ai_next)
        if (p->ai_family == AF_INET) {
            pick = p;
            break;
        }
    int frc = api_fwd_start(&s->fwd, k, err, errlen);
    if (frc) {
        freeaddrinfo(ai);
        free(s);
        return frc;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (pick->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    s->d = MHD_start_daemon(flags, (uint16_t)k->cfg.port, NULL, NULL, handler, s,
                            MHD_OPTION_SOCK_ADDR, pick->ai_addr,
                            MHD_OPTION_THREAD_POOL_SIZE, (unsigned)2,
                            MHD_OPTION_NOTIFY_COMPLETED, completed, s,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
                            MHD_OPTION_URI_LOG_CALLBACK, uri_logger, s,
                            MHD_OPTION_CONNECTION_TIMEOUT, s->idle_timeout,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)k->cfg.max_connections,
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                            (unsigned)k->cfg.max_connections_per_ip,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
                            MHD_OPTION_END);
    char hostbuf[64] = "";
    if (pick->ai_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)pick->ai_addr)->sin_addr, hostbuf, sizeof hostbuf);
    else
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)pick->ai_addr)->sin6_addr, hostbuf, sizeof hostbuf);
    freeaddrinfo(ai);
    if (!s->d) {
        snprintf(err, errlen, "cannot listen on %s:%d (in use, or not an address of this machine?)",
                 k->cfg.host, k->cfg.port);
        api_fwd_free(s->fwd);
        free(s);
        return AIOS_EIO;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : k->cfg.port;
    LOG_INFO("api", "listening on http://%s:%d", hostbuf, s->port);
    agent_set_channel(k->agents, channel_accept, s);
    *out = s;
    return 0;
}

int api_port(struct api_server *s) { return s ? s->port : 0; }

void api_quiesce(struct api_server *s)
{
    if (s) __atomic_store_n(&s->closing, 1, __ATOMIC_RELEASE);
}

int api_active(struct api_server *s)
{
    return s ? __atomic_load_n(&s->n_active, __ATOMIC_ACQUIRE) : 0;
}

void api_stop(struct api_server *s)
{
    if (!s) return;
    agent_set_channel(s->k->agents, NULL, NULL); /* waits for a hand-over in progress */
    api_fwd_stop(s->fwd); /* wakes every parked forward: MHD stops no suspended connection */
    if (s->d) MHD_stop_daemon(s->d);
    api_fwd_free(s->fwd);
    free(s);
}
