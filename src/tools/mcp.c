/* MCP client: tools of Model Context Protocol servers over stdio.
 *
 * Each `tools.mcp_servers` entry is one server process, launched under the
 * tool sandbox (sandbox.c; no writable directory but its private /tmp, no
 * network unless `network: true`). Transport: JSON-RPC 2.0, one JSON
 * message per line on stdin/stdout; stderr is drained and logged at debug.
 * Start-up: initialize -> (response) -> notifications/initialized ->
 * tools/list (following nextCursor) -> every tool is registered as
 * "<server>/<tool>" with the server's properties (timeout_ms,
 * max_concurrency, conflicts, ...). A server that cannot start or list its
 * tools stops the kernel's start with the reason: the config is wrong.
 *
 * Calls: tools/call with a fresh id. The calling worker registers a pending
 * slot, writes the request and waits on the server's condvar until the
 * reader thread fills the slot, the server dies, or the deadline passes.
 * On a timeout the call fails and the server is killed (a hung server is a
 * hung tool); like any death that makes the reader restart it, with
 * backoff (0.1 s doubling to 5 s), re-running the handshake. Calls made
 * while it is down wait for it until their own deadline.
 *
 * Threads: one reader thread per server (not per call) owns the process:
 * it spawns, reads, reaps and restarts. Callers only write (under wmu) and
 * kill. Locks: mu guards alive, gen, the pending list and the process pid;
 * wmu serialises writes to stdin. They are never held together. The pid is
 * killed only under mu while alive, and the reader sets alive=false under
 * mu before it reaps, so a kill never reaches a recycled pid. */
#include "tools/tools.h"

#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MCP_PROTOCOL_VERSION "2025-03-26"
#define MCP_MAX_LINE ((size_t)16 << 20)
#define MCP_START_TIMEOUT_MS 10000

int tool_cfg_props(json_t *e, const char *where, struct tool *t, char *err, size_t errlen);
int tool_cfg_argv(json_t *e, const char *where, char ***argv, char *err, size_t errlen);

struct mcp_pending {
    json_int_t id;
    json_t *msg; /* the response, owned; NULL until it arrives */
    bool done;
    char err[256];
    struct mcp_pending *next;
};

struct tool_mcp {
    struct tool_mgr *m;
    char *name;
    char **argv;
    struct tool props; /* properties every tool of this server gets */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool alive, stopping;
    unsigned gen;
    struct tool_proc proc; /* fds read only by the reader; pid under mu */
    struct mcp_pending *pending;
    json_int_t next_id;
    int n_restarts;

    pthread_mutex_t wmu;
    int wfd; /* the server's stdin; guarded by wmu, -1 while down */

    /* reader-only */
    char last_err[512]; /* the server's last stderr line */
    char *rbuf;
    size_t n_rbuf, cap_rbuf;
    pthread_t reader;
    bool reader_started;
};

static int write_line(struct tool_mcp *s, json_t *msg, int64_t deadline_us)
{
    char *txt = json_dumps(msg, JSON_COMPACT);
    if (!txt) return AIOS_ENOMEM;
    size_t n = strlen(txt);
    txt[n] = '\n'; /* json_dumps output ends with NUL; we send n+1 bytes */
    size_t off = 0;
    int rc = 0;
    pthread_mutex_lock(&s->wmu);
    int fd = s->wfd;
    if (fd < 0) rc = AIOS_EIO;
    while (!rc && off < n + 1) {
        ssize_t w = write(fd, txt + off, n + 1 - off);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno == EAGAIN) {
            int64_t left = deadline_us - util_now_us();
            if (left <= 0) {
                rc = AIOS_EBUSY;
                break;
            }
            struct pollfd pf = {fd, POLLOUT, 0};
            poll(&pf, 1, (int)(left / 1000) + 1);
            continue;
        }
        rc = AIOS_EIO;
        break;
    }
    pthread_mutex_unlock(&s->wmu);
    free(txt);
    return rc;
}

static void drain_stderr(struct tool_mcp *s)
{
    char buf[4096];
    ssize_t r = read(s->proc.fd_err, buf, sizeof buf - 1);
    if (r > 0) {
        buf[r] = 0;
        buf[strcspn(buf, "\n")] = 0;
        if (buf[0]) snprintf(s->last_err, sizeof s->last_err, "%.500s", buf);
        LOG_DEBUG("tools", "mcp %s stderr: %s", s->name, buf);
    } else if (r == 0) {
        close(s->proc.fd_err);
        s->proc.fd_err = -1;
    }
}

int tool_mcp_take_line(char *buf, size_t *n, size_t max, char **line)
{
    *line = NULL;
    char *nl = *n ? memchr(buf, '\n', *n) : NULL;
    if (nl) {
        size_t len = (size_t)(nl - buf);
        *line = malloc(len + 1);
        if (!*line) return -1;
        memcpy(*line, buf, len);
        (*line)[len] = 0;
        memmove(buf, nl + 1, *n - len - 1);
        *n -= len + 1;
        return 1;
    }
    return *n > max ? -1 : 0;
}

enum tool_mcp_msg tool_mcp_classify(json_t *msg, json_int_t *id)
{
    *id = 0;
    if (!json_is_object(msg)) return TOOL_MCP_MSG_IGNORE; /* not JSON-RPC (banners) */
    json_t *mid = json_object_get(msg, "id");
    if (json_object_get(msg, "method")) return mid ? TOOL_MCP_MSG_REQUEST : TOOL_MCP_MSG_IGNORE;
    if (!json_is_integer(mid)) return TOOL_MCP_MSG_IGNORE;
    *id = json_integer_value(mid);
    return TOOL_MCP_MSG_RESPONSE;
}

json_t *tool_mcp_server_answer(json_t *msg)
{
    json_t *id = json_object_get(msg, "id");
    const char *method = json_string_value(json_object_get(msg, "method"));
    if (method && !strcmp(method, "ping"))
        return json_pack("{s:s,s:O,s:{}}", "jsonrpc", "2.0", "id", id, "result");
    return json_pack("{s:s,s:O,s:{s:i,s:s}}", "jsonrpc", "2.0", "id", id, "error", "code",
                     -32601, "message", "method not supported by the aios client");
}

/* Reader: next line from the server. 1: *line (malloc'd), 0: timeout or
 * stop poll interval passed, -1: EOF/error. */
static int read_line(struct tool_mcp *s, int64_t deadline_us, char **line)
{
    *line = NULL;
    for (;;) {
        int t = tool_mcp_take_line(s->rbuf, &s->n_rbuf, MCP_MAX_LINE, line);
        if (t > 0) return 1;
        if (t < 0) {
            if (!*line && s->n_rbuf > MCP_MAX_LINE)
                LOG_WARN("tools", "mcp %s: a message over %zu bytes; dropping the server",
                         s->name, MCP_MAX_LINE);
            return -1;
        }
        int64_t left = deadline_us - util_now_us();
        if (left <= 0) return 0;
        struct pollfd pf[2] = {{s->proc.fd_out, POLLIN, 0}, {s->proc.fd_err, POLLIN, 0}};
        int np = s->proc.fd_err >= 0 ? 2 : 1;
        int pr = poll(pf, (nfds_t)np, (int)(left / 1000) + 1);
        if (pr < 0 && errno != EINTR) return -1;
        if (pr <= 0) continue;
        if (np == 2 && pf[1].revents) drain_stderr(s);
        if (!pf[0].revents) continue;
        if (s->n_rbuf + 65536 > s->cap_rbuf) {
            size_t nc = s->cap_rbuf ? s->cap_rbuf * 2 : 131072;
            char *nb = realloc(s->rbuf, nc);
            if (!nb) return -1;
            s->rbuf = nb;
            s->cap_rbuf = nc;
        }
        ssize_t r = read(s->proc.fd_out, s->rbuf + s->n_rbuf, s->cap_rbuf - s->n_rbuf);
        if (r == 0) return -1;
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return -1;
        }
        s->n_rbuf += (size_t)r;
    }
}

/* answer a request the server sent us: we offer no client features */
static void answer_server_request(struct tool_mcp *s, json_t *msg)
{
    json_t *resp = tool_mcp_server_answer(msg);
    if (resp) write_line(s, resp, util_now_us() + 1000000);
    json_decref(resp);
}

/* Synchronous request, used by the reader thread during the handshake
 * only (no other traffic yet). */
static int rpc_sync(struct tool_mcp *s, const char *method, json_t *params, int64_t deadline_us,
                    json_t **result, char *err, size_t errlen)
{
    *result = NULL;
    json_int_t id = ++s->next_id;
    json_t *req = json_pack("{s:s,s:I,s:s,s:o}", "jsonrpc", "2.0", "id", id, "method", method,
                            "params", params ? params : json_object());
    int rc = req ? write_line(s, req, deadline_us) : AIOS_ENOMEM;
    json_decref(req);
    if (rc) {
        snprintf(err, errlen, "cannot send %s: the server closed its input", method);
        return rc;
    }
    for (;;) {
        char *line;
        int r = read_line(s, deadline_us, &line);
        if (r == 0) {
            snprintf(err, errlen, "no answer to %s within %d ms", method, MCP_START_TIMEOUT_MS);
            return AIOS_EBUSY;
        }
        if (r < 0) {
            snprintf(err, errlen, "the server exited during %s", method);
            return AIOS_EIO;
        }
        json_t *msg = json_loads(line, 0, NULL);
        free(line);
        json_int_t mid;
        enum tool_mcp_msg kind = tool_mcp_classify(msg, &mid);
        if (kind == TOOL_MCP_MSG_REQUEST) answer_server_request(s, msg);
        if (kind != TOOL_MCP_MSG_RESPONSE || mid != id) {
            json_decref(msg);
            continue; /* not JSON-RPC (some servers print banners), or not ours */
        }
        json_t *e = json_object_get(msg, "error");
        if (e) {
            snprintf(err, errlen, "%s failed: %s", method,
                     json_string_value(json_object_get(e, "message")) ?: "error");
            json_decref(msg);
            return AIOS_EIO;
        }
        *result = json_incref(json_object_get(msg, "result"));
        json_decref(msg);
        return *result ? 0 : AIOS_EIO;
    }
}

/* reader (or stop) only, with the server marked down: close its stdin
 * under wmu so no caller writes to a recycled descriptor, then reap */
static int close_and_reap(struct tool_mcp *s)
{
    pthread_mutex_lock(&s->wmu);
    s->wfd = -1;
    pthread_mutex_unlock(&s->wmu);
    return tool_proc_reap(&s->proc);
}

static int spawn_and_handshake(struct tool_mcp *s, json_t **tools_out, char *err, size_t errlen)
{
    struct tool_spawn_opts o = {.argv = s->argv, .network = s->props.network, .sandbox = true,
                                .limits = s->props.limits};
    /* a server lives long: CPU time is bounded per call by timeouts, not rlimit */
    o.limits.cpu_s = 0;
    struct tool_proc p;
    int rc = tool_proc_spawn(&p, &o, err, errlen);
    if (rc) return rc;
    pthread_mutex_lock(&s->mu);
    s->proc = p;
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_lock(&s->wmu);
    s->wfd = p.fd_in;
    pthread_mutex_unlock(&s->wmu);
    s->n_rbuf = 0;
    s->last_err[0] = 0;
    int64_t dl = util_now_us() + (int64_t)MCP_START_TIMEOUT_MS * 1000;
    json_t *res = NULL;
    json_t *params = json_pack("{s:s,s:{},s:{s:s,s:s}}", "protocolVersion", MCP_PROTOCOL_VERSION,
                               "capabilities", "clientInfo", "name", "aios", "version", "0.1.0");
    rc = rpc_sync(s, "initialize", params, dl, &res, err, errlen);
    json_decref(res);
    if (rc) goto fail;
    json_t *note = json_pack("{s:s,s:s}", "jsonrpc", "2.0", "method", "notifications/initialized");
    rc = write_line(s, note, dl);
    json_decref(note);
    if (rc) goto fail;
    if (tools_out) {
        json_t *all = json_array();
        const char *cursor = NULL;
        char cur[512];
        for (int page = 0; page < 100; page++) {
            json_t *pp = cursor ? json_pack("{s:s}", "cursor", cursor) : json_object();
            rc = rpc_sync(s, "tools/list", pp, dl, &res, err, errlen);
            if (rc) {
                json_decref(all);
                goto fail;
            }
            json_array_extend(all, json_object_get(res, "tools"));
            const char *nc = json_string_value(json_object_get(res, "nextCursor"));
            if (nc) snprintf(cur, sizeof cur, "%s", nc);
            json_decref(res);
            if (!nc) break;
            cursor = cur;
        }
        *tools_out = all;
    }
    return 0;
fail:
    /* what the server (or the sandbox) said on its way out helps most */
    if (s->proc.fd_err >= 0) {
        char tail[600];
        size_t n = 0;
        for (int64_t t0 = util_now_us(); n < sizeof tail - 1 && util_now_us() - t0 < 500000;) {
            struct pollfd pf = {s->proc.fd_err, POLLIN, 0};
            if (poll(&pf, 1, 100) <= 0) continue;
            ssize_t r = read(s->proc.fd_err, tail + n, sizeof tail - 1 - n);
            if (r <= 0) break;
            n += (size_t)r;
        }
        tail[n] = 0;
        while (n && (tail[n - 1] == '\n' || tail[n - 1] == '\r')) tail[--n] = 0;
        if (!n && s->last_err[0]) n = (size_t)snprintf(tail, sizeof tail, "%s", s->last_err);
        if (n) {
            size_t l = strlen(err);
            snprintf(err + l, errlen > l ? errlen - l : 0, "; its stderr: %s", tail);
        }
    }
    pthread_mutex_lock(&s->mu);
    tool_proc_kill(&s->proc);
    pthread_mutex_unlock(&s->mu);
    close_and_reap(s);
    return rc;
}

static void fail_pending(struct tool_mcp *s, const char *why)
{
    for (struct mcp_pending *p = s->pending; p; p = p->next)
        if (!p->done) {
            p->done = true;
            snprintf(p->err, sizeof p->err, "%s", why);
        }
    pthread_cond_broadcast(&s->cv);
}

static void *reader_main(void *arg)
{
    struct tool_mcp *s = arg;
    int64_t t_up = util_now_us();
    for (;;) {
        pthread_mutex_lock(&s->mu);
        bool stop = s->stopping, alive = s->alive;
        pthread_mutex_unlock(&s->mu);
        if (stop) break;
        if (!alive) {
            /* restart with backoff */
            int n = s->n_restarts < 6 ? s->n_restarts : 6;
            int64_t wait_us = util_now_us() - t_up > 10000000 ? 100000 : (int64_t)100000 << n;
            if (wait_us > 5000000) wait_us = 5000000;
            for (int64_t t0 = util_now_us(); util_now_us() - t0 < wait_us;) {
                pthread_mutex_lock(&s->mu);
                stop = s->stopping;
                pthread_mutex_unlock(&s->mu);
                if (stop) goto out;
                usleep(20000);
            }
            char err[512] = "";
            s->n_restarts++;
            if (spawn_and_handshake(s, NULL, err, sizeof err)) {
                LOG_WARN("tools", "mcp %s: restart %d failed: %s", s->name, s->n_restarts, err);
                continue;
            }
            LOG_WARN("tools", "mcp %s: restarted (restart %d)", s->name, s->n_restarts);
            t_up = util_now_us();
            pthread_mutex_lock(&s->mu);
            s->alive = true;
            s->gen++;
            pthread_cond_broadcast(&s->cv);
            pthread_mutex_unlock(&s->mu);
            continue;
        }
        char *line;
        int r = read_line(s, util_now_us() + 200000, &line);
        if (r == 0) continue;
        if (r < 0) {
            pthread_mutex_lock(&s->mu);
            s->alive = false;
            fail_pending(s, "the MCP server exited during the call; it is being restarted");
            pthread_mutex_unlock(&s->mu);
            int st = close_and_reap(s);
            if (!s->stopping)
                LOG_WARN("tools", "mcp %s: server exited (status %d); restarting", s->name, st);
            continue;
        }
        json_t *msg = json_loads(line, 0, NULL);
        free(line);
        json_int_t mid;
        enum tool_mcp_msg kind = tool_mcp_classify(msg, &mid);
        if (kind == TOOL_MCP_MSG_REQUEST) answer_server_request(s, msg);
        if (kind == TOOL_MCP_MSG_RESPONSE) {
            pthread_mutex_lock(&s->mu);
            for (struct mcp_pending *p = s->pending; p; p = p->next)
                if (p->id == mid && !p->done) {
                    p->msg = msg;
                    msg = NULL;
                    p->done = true;
                    pthread_cond_broadcast(&s->cv);
                    break;
                }
            pthread_mutex_unlock(&s->mu);
        }
        json_decref(msg);
    }
out:
    return NULL;
}

static void abs_deadline(struct timespec *ts, int64_t deadline_us)
{
    int64_t left = deadline_us - util_now_us();
    if (left < 0) left = 0;
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += left / 1000000;
    ts->tv_nsec += (left % 1000000) * 1000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

/* MCP CallToolResult -> our result: structuredContent if given, else the
 * text of its text items (joined), else the content list itself. */
static json_t *convert_result(json_t *r, bool *is_error)
{
    *is_error = json_is_true(json_object_get(r, "isError"));
    json_t *sc = json_object_get(r, "structuredContent");
    if (sc && !*is_error) return json_incref(sc);
    json_t *content = json_object_get(r, "content");
    size_t i, len = 0, n_text = 0;
    json_t *c;
    json_array_foreach(content, i, c) {
        if (!json_is_string(json_object_get(c, "text"))) continue;
        len += json_string_length(json_object_get(c, "text")) + 1;
        n_text++;
    }
    if (n_text == 0 || n_text != json_array_size(content))
        return json_incref(content ? content : json_null());
    char *txt = calloc(1, len + 1);
    if (!txt) return NULL;
    size_t off = 0;
    json_array_foreach(content, i, c) {
        json_t *t = json_object_get(c, "text");
        if (off) txt[off++] = '\n';
        memcpy(txt + off, json_string_value(t), json_string_length(t));
        off += json_string_length(t);
    }
    json_t *out = json_stringn_nocheck(txt, off);
    free(txt);
    return out;
}

int tool_mcp_call_result(const char *server, const char *tool, json_t *msg, json_t **result,
                         char *err, size_t errlen)
{
    *result = NULL;
    if (json_object_get(msg, "error")) {
        json_t *e = json_object_get(msg, "error");
        snprintf(err, errlen, "MCP server %s: %s (code %lld)", server,
                 json_string_value(json_object_get(e, "message")) ?: "error",
                 (long long)json_integer_value(json_object_get(e, "code")));
        return AIOS_EIO;
    }
    bool is_err = false;
    json_t *r = convert_result(json_object_get(msg, "result"), &is_err);
    if (is_err) {
        char *t = json_is_string(r) ? NULL : json_dumps(r, JSON_COMPACT);
        snprintf(err, errlen, "%s/%s reported an error: %.800s", server, tool,
                 t ? t : json_string_value(r) ? json_string_value(r) : "");
        free(t);
        json_decref(r);
        return AIOS_EIO;
    }
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return AIOS_ENOMEM;
    }
    *result = r;
    return 0;
}

int tool_mcp_call(struct tool_mcp *s, const char *tool, json_t *args, int64_t deadline_us,
                  json_t **result, char *err, size_t errlen)
{
    *result = NULL;
    struct mcp_pending *p = calloc(1, sizeof *p);
    if (!p) return AIOS_ENOMEM;
    struct timespec ts;
    abs_deadline(&ts, deadline_us);
    pthread_mutex_lock(&s->mu);
    while (!s->alive && !s->stopping)
        if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT) break;
    if (!s->alive) {
        pthread_mutex_unlock(&s->mu);
        free(p);
        snprintf(err, errlen, "MCP server %s is not running (it is being restarted)", s->name);
        return AIOS_EIO;
    }
    p->id = ++s->next_id;
    p->next = s->pending;
    s->pending = p;
    unsigned gen = s->gen;
    pthread_mutex_unlock(&s->mu);

    json_t *req = json_pack("{s:s,s:I,s:s,s:{s:s,s:O}}", "jsonrpc", "2.0", "id", p->id, "method",
                            "tools/call", "params", "name", tool, "arguments", args);
    int rc = req ? write_line(s, req, deadline_us) : AIOS_ENOMEM;
    json_decref(req);

    pthread_mutex_lock(&s->mu);
    bool aborted = false;
    while (!rc && !p->done) {
        /* wake every 100 ms to notice a kernel shutdown */
        struct timespec slice;
        int64_t left = deadline_us - util_now_us();
        abs_deadline(&slice, util_now_us() + (left < 100000 ? left : 100000));
        if (pthread_cond_timedwait(&s->cv, &s->mu, &slice) == ETIMEDOUT) {
            if (util_now_us() >= deadline_us) break;
            pthread_mutex_unlock(&s->mu);
            aborted = tool_mgr_stopping(s->m);
            pthread_mutex_lock(&s->mu);
            if (aborted) break;
        }
    }
    bool done = p->done, timed_out = !rc && !done && !aborted;
    /* unlink */
    for (struct mcp_pending **pp = &s->pending; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    if (timed_out && s->alive && s->gen == gen) {
        /* a hung tool is killed: the reader sees EOF and restarts the server */
        LOG_WARN("tools", "mcp %s: %s timed out; killing the server", s->name, tool);
        tool_proc_kill(&s->proc);
    }
    pthread_mutex_unlock(&s->mu);

    if (rc) {
        snprintf(err, errlen, "cannot send the call to MCP server %s: %s", s->name, aios_strerror(rc));
    } else if (aborted && !done) {
        snprintf(err, errlen, "the kernel is shutting down");
        rc = AIOS_ESHUTDOWN;
    } else if (timed_out) {
        snprintf(err, errlen, "%s/%s did not answer within its timeout of %d ms; the server was "
                 "killed and is being restarted", s->name, tool, s->props.timeout_ms);
        rc = AIOS_EBUSY;
    } else if (!p->msg) {
        snprintf(err, errlen, "%s", p->err);
        rc = AIOS_EIO;
    } else {
        rc = tool_mcp_call_result(s->name, tool, p->msg, result, err, errlen);
    }
    json_decref(p->msg);
    free(p);
    return rc;
}

struct tool *tool_mcp_tool_new(const char *server, json_t *entry, const struct tool *props)
{
    const char *tn = json_string_value(json_object_get(entry, "name"));
    if (!tn) return NULL;
    struct tool *x = calloc(1, sizeof *x);
    if (!x) return NULL;
    x->kind = TOOL_KIND_MCP;
    if (asprintf(&x->name, "%s/%s", server, tn) < 0) x->name = NULL;
    const char *d = json_string_value(json_object_get(entry, "description"));
    x->description = strdup(d ? d : "");
    json_t *schema = json_object_get(entry, "inputSchema");
    x->parameters = json_is_object(schema) ? json_deep_copy(schema) : NULL;
    x->remote_name = strdup(tn);
    x->max_concurrency = props->max_concurrency;
    for (int c = 0; c < props->n_conflicts; c++) x->conflicts[c] = strdup(props->conflicts[c]);
    x->n_conflicts = props->n_conflicts;
    x->timeout_ms = props->timeout_ms;
    x->max_output_bytes = props->max_output_bytes;
    x->irreversible = props->irreversible;
    x->network = props->network;
    x->limits = props->limits;
    return x;
}

int tool_mcp_start(struct tool_mgr *m, const char *name, json_t *cfg, struct tool_mcp **out,
                   char *err, size_t errlen)
{
    *out = NULL;
    char where[160];
    snprintf(where, sizeof where, "tools.mcp_servers[%s]", name);
    struct tool_mcp *s = calloc(1, sizeof *s);
    if (!s) return AIOS_ENOMEM;
    s->m = m;
    s->name = strdup(name);
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->wmu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->proc.fd_in = s->proc.fd_out = s->proc.fd_err = -1;
    s->proc.pid = -1;
    s->wfd = -1;
    json_t *tools = NULL;
    int rc = tool_cfg_props(cfg, where, &s->props, err, errlen);
    if (!rc) rc = tool_cfg_argv(cfg, where, &s->argv, err, errlen);
    if (rc) goto fail;
    if (s->props.timeout_ms <= 0) s->props.timeout_ms = TOOL_DEFAULT_TIMEOUT_MS;
    char why[768];
    rc = spawn_and_handshake(s, &tools, why, sizeof why);
    if (rc) {
        snprintf(err, errlen, "%s: MCP server %s did not start: %s", where, s->argv[0], why);
        rc = AIOS_ECONFIG;
        goto fail;
    }
    s->alive = true;
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        const char *tn = json_string_value(json_object_get(t, "name"));
        if (!tn) continue;
        struct tool *x = tool_mcp_tool_new(name, t, &s->props);
        if (!x) {
            rc = AIOS_ENOMEM;
            goto fail;
        }
        x->mcp = s;
        char terr[512] = "";
        if (tool_register(m, x, terr, sizeof terr) != 0)
            LOG_WARN("tools", "mcp %s: tool '%s' skipped: %s", name, tn, terr);
    }
    if (pthread_create(&s->reader, NULL, reader_main, s) != 0) {
        rc = AIOS_ENOMEM;
        goto fail;
    }
    s->reader_started = true;
    LOG_INFO("tools", "mcp %s: %zu tools", name, json_array_size(tools));
    json_decref(tools);
    *out = s;
    return 0;
fail:
    json_decref(tools);
    tool_mcp_stop(s);
    return rc;
}

void tool_mcp_stop(struct tool_mcp *s)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    if (s->alive) tool_proc_kill(&s->proc);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->reader_started) pthread_join(s->reader, NULL);
    if (s->proc.pid > 0 || s->proc.fd_out >= 0) {
        tool_proc_kill(&s->proc);
        close_and_reap(s);
    }
    for (struct mcp_pending *p = s->pending; p; p = p->next) json_decref(p->msg);
    if (s->argv)
        for (size_t i = 0; s->argv[i]; i++) free(s->argv[i]);
    free(s->argv);
    for (int i = 0; i < s->props.n_conflicts; i++) free(s->props.conflicts[i]);
    free(s->rbuf);
    free(s->name);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->wmu);
    pthread_cond_destroy(&s->cv);
    free(s);
}
