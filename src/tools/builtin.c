/* Built-in tools, in C, run on a tool worker thread:
 *
 *   aios/calculator    {"expression": "2*(3+4)^2"} -> {"expression", "value"}
 *   aios/current_time  {} -> {"unix": seconds, "iso8601": "...Z", "timezone": "UTC"}
 *   aios/read_file     {"path"}             -> what the storage manager answers
 *   aios/write_file    {"path", "content"}  -> idem
 *   aios/list_files    {"path"?}            -> idem
 *
 * The file tools never touch the disk themselves: each submits a STORAGE
 * syscall (a struct sto_req for "read"/"write"/"list", parsed once from
 * {"path", "content"} with sto_req_parse) in the calling agent's name, so
 * the storage manager applies that agent's rights (paths stay inside the
 * agent's root unless a share grant says otherwise), and waits for it
 * (bounded by the tool's deadline). The result is the storage manager's
 * response object. While no storage manager is registered in this kernel
 * they answer what /query answers for storage: not available (501).
 *
 * Threads: any tool worker; no state of their own. */
#include "tools/tools.h"


#include "kernel/query.h"
#include "kernel/syscall.h"
#include "sched/sched.h"
#include "storage/storage.h"
#include "util/err.h"
#include "util/util.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int b_calc(const struct tool_call_env *env, json_t *args, json_t **result, char *err,
                  size_t errlen)
{
    const char *e = json_string_value(json_object_get(args, "expression"));
    if (!e) {
        snprintf(err, errlen, "'expression' must be a string");
        return AIOS_EINVAL;
    }
    double v;
    char why[256];
    if (tool_calc_eval(e, &v, why, sizeof why)) {
        snprintf(err, errlen, "cannot evaluate '%.200s': %s", e, why);
        return AIOS_EINVAL;
    }
    *result = json_pack("{s:s,s:f}", "expression", e, "value", v);
    return *result ? 0 : AIOS_ENOMEM;
}

static int b_time(const struct tool_call_env *env, json_t *args, json_t **result, char *err,
                  size_t errlen)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char iso[64];
    strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%SZ", &tm);
    *result = json_pack("{s:f,s:s,s:s}", "unix", (double)ts.tv_sec + ts.tv_nsec / 1e9, "iso8601",
                        iso, "timezone", "UTC");
    return *result ? 0 : AIOS_ENOMEM;
}

/* ---- file tools: STORAGE syscalls in the agent's name ---- */

struct sto_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int refs; /* ours and the notify side's */
};

static void sto_wait_unref(struct sto_wait *w)
{
    pthread_mutex_lock(&w->mu);
    int r = --w->refs;
    pthread_mutex_unlock(&w->mu);
    if (r) return;
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

static void sto_notify(struct syscall *sc, void *ud)
{
    struct sto_wait *w = ud;
    pthread_mutex_lock(&sc->mu);
    bool fin = syscall_status_final(sc->status);
    pthread_mutex_unlock(&sc->mu);
    if (!fin) return;
    pthread_mutex_lock(&w->mu);
    bool first = !w->done;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (first) sto_wait_unref(w);
}

int tool_storage_call(struct tool_mgr *m, const char *agent, struct sto_req *req,
                      int64_t deadline_us, json_t **result, char *err, size_t errlen)
{
    const struct tool_deps *deps = tool_mgr_deps(m);
    int rc;
    if (!deps->storage_submit) {
        sto_req_free(req);
        snprintf(err, errlen, "the storage manager is not available in this kernel yet (storage "
                 "syscalls answer 501); file tools need it");
        return TOOL_EUNAVAILABLE;
    }
    struct sto_wait *w = calloc(1, sizeof *w);
    struct syscall *sc = w ? syscall_new(SYSCALL_KIND_STORAGE, agent,
                                         sto_req_reads_only(req) ? SCHED_READ_LANE : NULL,
                                         req, sto_req_free)
                           : (sto_req_free(req), NULL);
    if (!sc) {
        free(w);
        snprintf(err, errlen, "out of memory");
        return AIOS_ENOMEM;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->refs = 2;
    sc->notify = sto_notify;
    sc->notify_ud = w;
    /* a write that would lose data for good waits for the operator
     * (src/access/approve.c), within this tool's timeout */
    rc = deps->storage_submit(deps->storage_ud, sc, err, errlen);
    if (rc == 1) rc = 0;
    if (rc) {
        sto_wait_unref(w); /* the notify side's: it will not run */
        sto_wait_unref(w);
        syscall_unref(sc);
        snprintf(err, errlen, "storage is not accepting calls: %s", aios_strerror(rc));
        return rc;
    }
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    int64_t left = deadline_us - util_now_us();
    if (left < 0) left = 0;
    dl.tv_sec += left / 1000000;
    dl.tv_nsec += (left % 1000000) * 1000;
    if (dl.tv_nsec >= 1000000000) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        if (pthread_cond_timedwait(&w->cv, &w->mu, &dl) == ETIMEDOUT) break;
    bool done = w->done;
    pthread_mutex_unlock(&w->mu);
    if (!done) {
        pthread_mutex_lock(&sc->mu);
        bool awaiting = sc->status == SYSCALL_STATUS_AWAITING_APPROVAL;
        pthread_mutex_unlock(&sc->mu);
        syscall_request_cancel(sc);
        sto_wait_unref(w);
        syscall_unref(sc);
        if (awaiting) {
            snprintf(err, errlen, "denied: the call needs the operator's approval (it would not "
                     "keep the old content) and none came within the tool's timeout");
            return AIOS_EPERM;
        }
        snprintf(err, errlen, "the storage manager did not answer within the tool's timeout");
        return AIOS_EBUSY;
    }
    sto_wait_unref(w);
    pthread_mutex_lock(&sc->mu);
    if (sc->status == SYSCALL_STATUS_DONE && sc->res) {
        *result = json_incref(((struct kq_res *)sc->res)->response);
        rc = 0;
    } else {
        snprintf(err, errlen, "storage: %s", sc->errmsg[0] ? sc->errmsg : "failed");
        rc = sc->err ? sc->err : AIOS_EIO;
    }
    pthread_mutex_unlock(&sc->mu);
    syscall_unref(sc);
    return rc;
}

static int storage_call(const struct tool_call_env *env, const char *op, json_t *params,
                        json_t **result, char *err, size_t errlen)
{
    if (!tool_mgr_deps(env->m)->storage_submit) {
        json_decref(params);
        snprintf(err, errlen, "the storage manager is not available in this kernel yet (storage "
                 "syscalls answer 501); file tools need it");
        return TOOL_EUNAVAILABLE;
    }
    /* the model's arguments are parsed here, once, into a typed request */
    struct sto_req *req = NULL;
    int http;
    int rc = sto_req_parse(op, params, &req, &http, err, errlen);
    json_decref(params);
    if (rc) {
        char e[512];
        snprintf(e, sizeof e, "%s", err);
        snprintf(err, errlen, "storage: %s", e);
        return rc;
    }
    return tool_storage_call(env->m, env->agent, req, env->deadline_us, result, err, errlen);
}

static int b_read(const struct tool_call_env *env, json_t *args, json_t **result, char *err,
                  size_t errlen)
{
    return storage_call(env, "read", json_pack("{s:O}", "path", json_object_get(args, "path")),
                        result, err, errlen);
}

static int b_write(const struct tool_call_env *env, json_t *args, json_t **result, char *err,
                   size_t errlen)
{
    return storage_call(env, "write",
                        json_pack("{s:O,s:O}", "path", json_object_get(args, "path"),
                                  "content", json_object_get(args, "content")),
                        result, err, errlen);
}

static int b_list(const struct tool_call_env *env, json_t *args, json_t **result, char *err,
                  size_t errlen)
{
    json_t *p = json_object_get(args, "path");
    json_t *params = p ? json_pack("{s:O}", "path", p) : json_object();
    return storage_call(env, "list", params, result, err, errlen);
}

static int add(struct tool_mgr *m, const char *name, const char *desc, const char *schema,
               tool_builtin_fn fn, int timeout_ms, char *err, size_t errlen)
{
    struct tool *t = calloc(1, sizeof *t);
    if (!t) return AIOS_ENOMEM;
    t->kind = TOOL_KIND_BUILTIN;
    t->name = strdup(name);
    t->description = strdup(desc);
    t->parameters = json_loads(schema, 0, NULL);
    t->builtin = fn;
    t->timeout_ms = timeout_ms;
    if (!t->name || !t->description || !t->parameters) {
        tool_free(t);
        return AIOS_ENOMEM;
    }
    return tool_register(m, t, err, errlen);
}

int tool_builtins_register(struct tool_mgr *m, char *err, size_t errlen)
{
    int rc;
    if ((rc = add(m, "aios/calculator",
                  "Evaluate an arithmetic expression: + - * / % ^, parentheses, unary minus, "
                  "sqrt abs min max floor ceil round log exp sin cos, constants pi and e.",
                  "{\"type\":\"object\",\"properties\":{\"expression\":{\"type\":\"string\","
                  "\"description\":\"e.g. 2*(3+4)^2 - sqrt(16)\",\"minLength\":1,\"maxLength\":4096}},"
                  "\"required\":[\"expression\"],\"additionalProperties\":false}",
                  b_calc, 1000, err, errlen)))
        return rc;
    if ((rc = add(m, "aios/current_time", "The current date and time (UTC).",
                  "{\"type\":\"object\",\"properties\":{},\"additionalProperties\":false}", b_time,
                  1000, err, errlen)))
        return rc;
    if ((rc = add(m, "aios/read_file", "Read a file from the calling agent's storage.",
                  "{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\",\"minLength\":1}},"
                  "\"required\":[\"path\"],\"additionalProperties\":false}",
                  b_read, 10000, err, errlen)))
        return rc;
    if ((rc = add(m, "aios/write_file",
                  "Write a file in the calling agent's storage (a new version; the old one is kept).",
                  "{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\",\"minLength\":1},"
                  "\"content\":{\"type\":\"string\"}},\"required\":[\"path\",\"content\"],"
                  "\"additionalProperties\":false}",
                  b_write, 10000, err, errlen)))
        return rc;
    return add(m, "aios/list_files", "List files in the calling agent's storage.",
               "{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\"}},"
               "\"additionalProperties\":false}",
               b_list, 10000, err, errlen);
}
