/* The tool manager: registry, configuration, limits, and the executor of
 * TOOL syscalls.
 *
 * Registry. Tools are registered once, during tool_mgr_create (built-ins,
 * `tools.external`, `tools.folders`, the tools each `tools.mcp_servers`
 * entry lists), and are immutable afterwards except for n_running and the
 * moving mean of their duration (mean_us, n_timed). Tools
 * published while the kernel runs (the hub, src/hub) are not registered:
 * a name the registry does not hold goes to the resolver hook
 * (tool_mgr_set_resolver), which hands back a tool it owns until stop. Names
 * are "author/name" and unique; MCP tools are "<server>/<tool>". The
 * manager knows nothing of the kernel: src/kernel/boot.c gives it the scheduler and
 * the file tools' way to storage (struct tool_deps) and registers its pool.
 *
 * Execution. A TOOL syscall (op "call", params {"tool_calls":[...]}) runs
 * on a thread of the kernel's TOOL pool (tool_exec_syscall). That thread
 * parses every call (a call whose "name" and "function.name" differ is
 * refused: 400), resolves its name to a tool once, asks the permit hook
 * (the access manager's privilege groups) about that very tool (one refusal
 * refuses the syscall, 403, before anything runs), validates its arguments
 * against the tool's JSON Schema (llm/schema.h), and queues one job per
 * valid call on the
 * manager's job queue; then it waits for its jobs. A fixed set of job
 * workers (tools.workers) takes jobs: a worker picks the first queued job
 * whose tool may start now, i.e. fewer than max_concurrency of it running,
 * no other tool of any of its conflict groups running, and fewer than
 * max_jobs_per_agent jobs of the same agent running. The scheduler caps an
 * agent's TOOL syscalls holding a pool thread (max_calls_per_agent), so one
 * agent's slow tools leave threads and workers for the others. A job that may
 * not start stays queued (it holds nothing, so no deadlock); every release
 * wakes the workers. Calls of one request therefore run in parallel where
 * their limits allow, and each result is stored at its call's index and
 * attributed to its call id. No thread is made per request or per call.
 *
 * When a TOOL syscall's jobs are queued, the scheduler is told when it is
 * expected to end (sched_set_expected_end): now plus the longest expected
 * duration of its tools (a tool's moving mean, its timeout before it was
 * ever timed). The engine reads it when it must give up a retained
 * conversation: an agent whose tool returns soon keeps its KV cells
 * (docs/scheduling.md, "KV retention").
 *
 * Timeouts are enforced by the executors (sandbox.c kills a process at its
 * deadline; mcp.c gives up on a reply and restarts the server), so a job
 * always ends and a worker is never lost to a hung tool.
 *
 * Agent files. An external tool never gets the agent's storage root: with
 * a storage manager (deps.view), it gets a view, a copy of the agent's
 * files made by the storage manager and bound at the root's path. The
 * running calls of one agent share one view (as they shared the root), so
 * tools of an agent see each other's files; when the last of them ends,
 * what changed in the view since it was copied (its manifest) goes back as
 * ordinary storage calls in the
 * agent's name (tool_storage_call: quota, versions, the approval of
 * deletes, the audit) and the view is removed. A call that starts while
 * its agent's view is being made or imported waits for that to finish, so
 * it always sees every earlier change. The last call's result carries the
 * report ("files": written, deleted, refused, skipped). While tools run,
 * each call checks the view's size (every VIEW_CHECK_US) against the
 * budget the storage manager gave (the agent's quota and the disk's
 * reserve left) and kills its tool beyond it.
 *
 * Locks: one mutex (mu) guards the job queue, n_running and the timing of
 * every tool, the
 * conflict group counters and every batch's counters; batches wait on their
 * own condvar with mu. views_mu guards the table of views (a leaf lock,
 * never held with mu); copies, imports and storage calls run without it.
 * No other lock is taken while mu is held. */
#include "tools/tools.h"

#include "kernel/query.h"
#include "kernel/syscall.h"
#include "llm/schema.h"
#include "sched/sched.h"
#include "storage/storage.h"
#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define TOOL_MAX_CALLS 64
#define VIEW_CHECK_US 200000

/* one agent's tool view (see the top comment) */
enum view_state { VIEW_MAKING, VIEW_READY, VIEW_CLOSING };
struct tool_view {
    char *agent;
    char dir[PATH_MAX];
    enum view_state state;
    int refs;             /* running calls using it */
    int64_t budget;       /* bytes the view may hold; -1 = no bound */
    json_t *manifest;     /* what was copied into it: {path: sha256} */
    atomic_llong last_check_us;
    atomic_bool over;     /* a check found it over budget */
    struct tool_view *next;
};

struct tool_group {
    char *name;
    int n_running;
};

struct tool_batch;

struct tool_job {
    struct tool *t;
    json_t *args;  /* owned */
    struct tool_batch *b;
    size_t idx;
    struct tool_job *next;
};

struct tool_batch {
    pthread_cond_t cv;
    size_t n_left;
    const char *agent;
    struct syscall *sc;
    json_t **results; /* per call: {"ok":true,"result":...} or {"ok":false,"error":{..}} */
};

struct tool_mgr {
    struct tool_deps deps;
    char *storage_root;
    char *data_dir;
    struct tool **tools;
    size_t n_tools, cap_tools;
    struct tool_group *groups;
    size_t n_groups;
    struct tool_mcp **mcps;
    size_t n_mcps;
    tool_approval_fn approval;
    void *approval_ud;
    tool_permit_fn permit;
    void *permit_ud;
    tool_resolve_fn resolve;
    void *resolve_ud;
    int n_pool_threads;

    pthread_mutex_t mu;
    pthread_cond_t cv_work;
    struct tool_job *q_head, *q_tail;
    bool stopping;
    atomic_bool aborting; /* set at stop: running tools are killed */
    pthread_t *workers;
    int n_workers;       /* configured */
    int n_started;       /* threads running */
    /* fairness between agents: at most max_jobs_per_agent jobs of one agent
     * run at once (job_agent[i]: the agent of the job worker slot i runs, or
     * NULL), and at most max_calls_per_agent of its TOOL syscalls hold a pool
     * thread (the scheduler's per-agent cap) */
    const char **job_agent;
    int max_jobs_per_agent, max_calls_per_agent;

    pthread_mutex_t views_mu; /* guards views (leaf) */
    pthread_cond_t views_cv;  /* a view became ready or went away */
    struct tool_view *views;
};

const struct tool_deps *tool_mgr_deps(const struct tool_mgr *m) { return &m->deps; }
void tool_mgr_set_deps(struct tool_mgr *m, const struct tool_deps *d) { m->deps = *d; }
int tool_mgr_pool_threads(const struct tool_mgr *m) { return m->n_pool_threads; }
int tool_mgr_calls_per_agent(const struct tool_mgr *m) { return m->max_calls_per_agent; }

bool tool_mgr_stopping(void *ud)
{
    struct tool_mgr *m = ud;
    if (atomic_load(&m->aborting)) return true;
    return m->deps.sched && sched_stopping(m->deps.sched);
}
const char *tool_mgr_storage_root(struct tool_mgr *m) { return m->storage_root; }
const char *tool_mgr_data_dir(struct tool_mgr *m) { return m->data_dir; }

void tool_mgr_set_approval(struct tool_mgr *m, tool_approval_fn fn, void *ud)
{
    m->approval = fn;
    m->approval_ud = ud;
}

void tool_mgr_set_permit(struct tool_mgr *m, tool_permit_fn fn, void *ud)
{
    m->permit = fn;
    m->permit_ud = ud;
}

void tool_mgr_set_resolver(struct tool_mgr *m, tool_resolve_fn fn, void *ud)
{
    m->resolve = fn;
    m->resolve_ud = ud;
}

void tool_free(struct tool *t)
{
    if (!t) return;
    free(t->name);
    free(t->description);
    json_decref(t->parameters);
    if (t->argv)
        for (size_t i = 0; t->argv[i]; i++) free(t->argv[i]);
    free(t->argv);
    free(t->dir);
    free(t->remote_name);
    for (int i = 0; i < t->n_conflicts; i++) free(t->conflicts[i]);
    free(t);
}

struct tool *tool_find(struct tool_mgr *m, const char *name)
{
    for (size_t i = 0; i < m->n_tools; i++)
        if (!strcmp(m->tools[i]->name, name)) return m->tools[i];
    return NULL;
}

static struct tool_group *group_get(struct tool_mgr *m, const char *name, bool create)
{
    for (size_t i = 0; i < m->n_groups; i++)
        if (!strcmp(m->groups[i].name, name)) return &m->groups[i];
    if (!create) return NULL;
    struct tool_group *ng = realloc(m->groups, (m->n_groups + 1) * sizeof *ng);
    if (!ng) return NULL;
    m->groups = ng;
    ng[m->n_groups].name = strdup(name);
    ng[m->n_groups].n_running = 0;
    if (!ng[m->n_groups].name) return NULL;
    return &ng[m->n_groups++];
}

static bool valid_name(const char *n)
{
    const char *sl = strchr(n, '/');
    if (!sl || sl == n || !sl[1] || strchr(sl + 1, '/')) return false;
    for (const char *p = n; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_' || *p == '-' || *p == '.' || *p == '/')) return false;
    return strlen(n) <= 128;
}

int tool_register(struct tool_mgr *m, struct tool *t, char *err, size_t errlen)
{
    int rc = AIOS_ECONFIG;
    if (!t->name || !valid_name(t->name)) {
        snprintf(err, errlen, "tool name '%s' must be 'author/name' (letters, digits, _ - .)",
                 t->name ? t->name : "");
        goto fail;
    }
    if (tool_find(m, t->name)) {
        snprintf(err, errlen, "tool '%s' is registered twice", t->name);
        goto fail;
    }
    if (!t->parameters) t->parameters = json_pack("{s:s,s:{}}", "type", "object", "properties");
    if (!json_is_object(t->parameters)) {
        snprintf(err, errlen, "tool '%s': parameters must be a JSON Schema object", t->name);
        goto fail;
    }
    char why[512];
    if (schema_check_supported(t->parameters, why, sizeof why) != 0)
        LOG_WARN("tools", "tool %s: %s; that part of its schema is not enforced", t->name, why);
    if (!t->description) t->description = strdup("");
    if (t->timeout_ms <= 0) t->timeout_ms = TOOL_DEFAULT_TIMEOUT_MS;
    if (!t->max_output_bytes) t->max_output_bytes = TOOL_DEFAULT_MAX_OUTPUT;
    for (int i = 0; i < t->n_conflicts; i++)
        if (!group_get(m, t->conflicts[i], true)) {
            rc = AIOS_ENOMEM;
            goto fail;
        }
    if (m->n_tools == m->cap_tools) {
        size_t nc = m->cap_tools ? m->cap_tools * 2 : 16;
        struct tool **nt = realloc(m->tools, nc * sizeof *nt);
        if (!nt) {
            rc = AIOS_ENOMEM;
            goto fail;
        }
        m->tools = nt;
        m->cap_tools = nc;
    }
    m->tools[m->n_tools++] = t;
    LOG_DEBUG("tools", "registered %s", t->name);
    return 0;
fail:
    tool_free(t);
    return rc;
}

int tool_validate_args(const struct tool *t, json_t *args, char *err, size_t errlen)
{
    if (!json_is_object(args)) {
        snprintf(err, errlen, "arguments of %s must be a JSON object", t->name);
        return AIOS_EINVAL;
    }
    char why[768];
    if (schema_validate(t->parameters, args, why, sizeof why) != 0) {
        char *schema = json_dumps(t->parameters, JSON_COMPACT | JSON_SORT_KEYS);
        snprintf(err, errlen, "arguments of %s do not match its parameters schema: %s "
                 "(schema: %.600s)", t->name, why, schema ? schema : "?");
        free(schema);
        return AIOS_EINVAL;
    }
    return 0;
}

/* ---- configuration ---- */

/* printf into err and return AIOS_ECONFIG (util_errf) */
#define cfg_fail(err, errlen, ...) util_errf(err, errlen, AIOS_ECONFIG, __VA_ARGS__)

static int check_keys(json_t *obj, const char *where, const char *const *allowed, char *err,
                      size_t errlen)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        bool ok = false;
        for (size_t i = 0; allowed[i]; i++)
            if (!strcmp(key, allowed[i])) ok = true;
        if (!ok) {
            char list[512] = "";
            for (size_t i = 0; allowed[i]; i++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                         allowed[i]);
            return cfg_fail(err, errlen, "%s: unknown key '%s' (known: %s)", where, key, list);
        }
    }
    return 0;
}

static int get_int(json_t *o, const char *key, const char *where, long lo, long hi, long *out,
                   char *err, size_t errlen)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return cfg_fail(err, errlen, "%s.%s: expected an integer in %ld..%ld", where, key, lo, hi);
    *out = (long)json_integer_value(v);
    return 0;
}

static int get_bool(json_t *o, const char *key, const char *where, bool *out, char *err,
                    size_t errlen)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return cfg_fail(err, errlen, "%s.%s: expected true or false", where, key);
    *out = json_is_true(v);
    return 0;
}

static const char *const PROP_KEYS[] = {"max_concurrency", "conflicts", "timeout_ms",
                                        "max_output_bytes", "irreversible", "network",
                                        "cpu_seconds", "memory_mb", "max_procs", NULL};

static struct tool_limits g_default_limits = {.cpu_s = 10, .mem_bytes = (size_t)1 << 30,
                                              .max_procs = 64, .max_file_bytes = (size_t)64 << 20};

/* the properties shared by external tools, folder tools and MCP servers */
static int parse_props(json_t *o, const char *where, struct tool *t, char *err, size_t errlen)
{
    long v;
    int rc;
    t->limits = g_default_limits;
    v = 0;
    if ((rc = get_int(o, "max_concurrency", where, 0, 1024, &v, err, errlen))) return rc;
    t->max_concurrency = (int)v;
    v = 0;
    if ((rc = get_int(o, "timeout_ms", where, 1, 3600000, &v, err, errlen))) return rc;
    t->timeout_ms = (int)v;
    v = 0;
    if ((rc = get_int(o, "max_output_bytes", where, 1, 64L << 20, &v, err, errlen))) return rc;
    t->max_output_bytes = (size_t)v;
    v = t->limits.cpu_s;
    if ((rc = get_int(o, "cpu_seconds", where, 1, 86400, &v, err, errlen))) return rc;
    t->limits.cpu_s = (int)v;
    v = (long)(t->limits.mem_bytes >> 20);
    if ((rc = get_int(o, "memory_mb", where, 16, 1L << 20, &v, err, errlen))) return rc;
    t->limits.mem_bytes = (size_t)v << 20;
    v = t->limits.max_procs;
    if ((rc = get_int(o, "max_procs", where, 1, 65536, &v, err, errlen))) return rc;
    t->limits.max_procs = (int)v;
    if ((rc = get_bool(o, "irreversible", where, &t->irreversible, err, errlen))) return rc;
    if ((rc = get_bool(o, "network", where, &t->network, err, errlen))) return rc;
    json_t *c = json_object_get(o, "conflicts");
    if (c && !json_is_null(c)) {
        if (json_is_string(c)) {
            t->conflicts[t->n_conflicts++] = strdup(json_string_value(c));
        } else if (json_is_array(c)) {
            size_t i;
            json_t *g;
            json_array_foreach(c, i, g) {
                if (!json_is_string(g) || !json_string_length(g))
                    return cfg_fail(err, errlen, "%s.conflicts[%zu]: expected a group name", where, i);
                if (t->n_conflicts >= TOOL_MAX_CONFLICTS)
                    return cfg_fail(err, errlen, "%s.conflicts: at most %d groups", where,
                                    TOOL_MAX_CONFLICTS);
                t->conflicts[t->n_conflicts++] = strdup(json_string_value(g));
            }
        } else {
            return cfg_fail(err, errlen, "%s.conflicts: expected a list of group names", where);
        }
    }
    return 0;
}

/* "command" as a string (one program) or a list; plus optional "args" */
static int parse_argv(json_t *o, const char *where, const char *base_dir, char ***out, char *err,
                      size_t errlen)
{
    *out = NULL;
    json_t *cmd = json_object_get(o, "command"), *args = json_object_get(o, "args");
    size_t n = 0;
    json_t *items[128];
    if (json_is_string(cmd)) {
        items[n++] = cmd;
    } else if (json_is_array(cmd) && json_array_size(cmd) > 0 && json_array_size(cmd) < 64) {
        for (size_t i = 0; i < json_array_size(cmd); i++) items[n++] = json_array_get(cmd, i);
    } else {
        return cfg_fail(err, errlen, "%s.command: expected a program path (string) or a "
                        "non-empty list [program, args...]", where);
    }
    if (args && !json_is_null(args)) {
        if (!json_is_array(args) || json_array_size(args) > 60)
            return cfg_fail(err, errlen, "%s.args: expected a list of strings", where);
        for (size_t i = 0; i < json_array_size(args); i++) items[n++] = json_array_get(args, i);
    }
    char **argv = calloc(n + 1, sizeof *argv);
    if (!argv) return AIOS_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (!json_is_string(items[i])) {
            for (size_t j = 0; j < i; j++) free(argv[j]);
            free(argv);
            return cfg_fail(err, errlen, "%s.command/args: every item must be a string", where);
        }
        const char *s = json_string_value(items[i]);
        if (i == 0 && s[0] != '/' && base_dir) {
            if (asprintf(&argv[0], "%s/%s", base_dir, s) < 0) argv[0] = NULL;
        } else if (i == 0 && s[0] != '/') {
            /* search PATH now, so the sandbox runs a known absolute path */
            char *path = getenv("PATH") ? strdup(getenv("PATH")) : strdup("/usr/bin:/bin");
            for (char *save = NULL, *d = path ? strtok_r(path, ":", &save) : NULL; d;
                 d = strtok_r(NULL, ":", &save)) {
                char cand[PATH_MAX];
                snprintf(cand, sizeof cand, "%s/%s", d, s);
                if (access(cand, X_OK) == 0) {
                    argv[0] = strdup(cand);
                    break;
                }
            }
            free(path);
            if (!argv[0]) {
                free(argv);
                return cfg_fail(err, errlen, "%s.command: program '%s' not found in PATH", where, s);
            }
        } else {
            argv[i] = strdup(s);
        }
    }
    if (access(argv[0], X_OK) != 0) {
        int r = cfg_fail(err, errlen, "%s.command: %s is not an executable file", where, argv[0]);
        for (size_t j = 0; j < n; j++) free(argv[j]);
        free(argv);
        return r;
    }
    *out = argv;
    return 0;
}

static int add_external(struct tool_mgr *m, json_t *e, const char *where, char *err, size_t errlen)
{
    static const char *const keys[] = {"name", "description", "command", "args", "parameters",
                                       "max_concurrency", "conflicts", "timeout_ms",
                                       "max_output_bytes", "irreversible", "network",
                                       "cpu_seconds", "memory_mb", "max_procs", NULL};
    if (!json_is_object(e)) return cfg_fail(err, errlen, "%s: expected a mapping", where);
    int rc = check_keys(e, where, keys, err, errlen);
    if (rc) return rc;
    struct tool *t = calloc(1, sizeof *t);
    if (!t) return AIOS_ENOMEM;
    t->kind = TOOL_KIND_EXEC;
    json_t *n = json_object_get(e, "name"), *d = json_object_get(e, "description"),
           *p = json_object_get(e, "parameters");
    if (!json_is_string(n)) {
        rc = cfg_fail(err, errlen, "%s.name: expected 'author/name'", where);
        goto fail;
    }
    t->name = strdup(json_string_value(n));
    if (d && !json_is_string(d)) {
        rc = cfg_fail(err, errlen, "%s.description: expected a string", where);
        goto fail;
    }
    if (d) t->description = strdup(json_string_value(d));
    if (p && !json_is_object(p)) {
        rc = cfg_fail(err, errlen, "%s.parameters: expected a JSON Schema mapping", where);
        goto fail;
    }
    if (p) {
        char why[512];
        if (schema_check_supported(p, why, sizeof why)) {
            rc = cfg_fail(err, errlen, "%s.parameters: %s", where, why);
            goto fail;
        }
        t->parameters = json_deep_copy(p);
    }
    if ((rc = parse_props(e, where, t, err, errlen))) goto fail;
    if ((rc = parse_argv(e, where, NULL, &t->argv, err, errlen))) goto fail;
    return tool_register(m, t, err, errlen);
fail:
    tool_free(t);
    return rc;
}

/* An AIOS/Cerebrum-style tool folder: config.json with name, description
 * (string or list of strings), meta.author, build.entry (the executable),
 * parameters or tool_call_format.function.parameters, and optionally our
 * properties under "aios". */
static int add_folder(struct tool_mgr *m, const char *dir, const char *where, char *err, size_t errlen)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t je;
    json_t *c = json_load_file(path, 0, &je);
    if (!c) return cfg_fail(err, errlen, "%s: cannot read %s: %s (line %d)", where, path, je.text, je.line);
    int rc = AIOS_ECONFIG;
    struct tool *t = calloc(1, sizeof *t);
    if (!t) {
        json_decref(c);
        return AIOS_ENOMEM;
    }
    t->kind = TOOL_KIND_EXEC;
    t->dir = strdup(dir);
    json_t *name = json_object_get(c, "name");
    const char *author = json_string_value(json_object_get(json_object_get(c, "meta"), "author"));
    if (!json_is_string(name)) {
        rc = cfg_fail(err, errlen, "%s: %s has no \"name\"", where, path);
        goto fail;
    }
    const char *nm = json_string_value(name);
    if (strchr(nm, '/')) t->name = strdup(nm);
    else if (asprintf(&t->name, "%s/%s", author ? author : "local", nm) < 0) t->name = NULL;
    json_t *d = json_object_get(c, "description");
    if (json_is_string(d)) {
        t->description = strdup(json_string_value(d));
    } else if (json_is_array(d)) {
        size_t len = 0, i;
        json_t *x;
        json_array_foreach(d, i, x) len += json_string_length(x) + 1;
        t->description = calloc(1, len + 1);
        json_array_foreach(d, i, x) if (json_is_string(x) && t->description) {
            if (i) strcat(t->description, " ");
            strcat(t->description, json_string_value(x));
        }
    }
    json_t *p = json_object_get(c, "parameters");
    if (!p) p = json_object_get(json_object_get(json_object_get(c, "tool_call_format"), "function"), "parameters");
    if (p && !json_is_object(p)) {
        rc = cfg_fail(err, errlen, "%s: %s: parameters must be a JSON Schema object", where, path);
        goto fail;
    }
    if (p) t->parameters = json_deep_copy(p);
    json_t *entry = json_object_get(json_object_get(c, "build"), "entry");
    if (!json_is_string(entry)) {
        rc = cfg_fail(err, errlen, "%s: %s: build.entry must name the tool's executable", where, path);
        goto fail;
    }
    json_t *aios = json_object_get(c, "aios");
    if (aios && !json_is_object(aios)) {
        rc = cfg_fail(err, errlen, "%s: %s: \"aios\" must be a mapping of tool properties", where, path);
        goto fail;
    }
    json_t *props = aios ? json_incref(aios) : json_object();
    rc = check_keys(props, where, PROP_KEYS, err, errlen);
    if (!rc) rc = parse_props(props, where, t, err, errlen);
    json_decref(props);
    if (rc) goto fail;
    json_t *cmd = json_pack("{s:O}", "command", entry);
    rc = parse_argv(cmd, where, dir, &t->argv, err, errlen);
    json_decref(cmd);
    if (rc) goto fail;
    json_decref(c);
    return tool_register(m, t, err, errlen);
fail:
    json_decref(c);
    tool_free(t);
    return rc;
}

static int add_mcp(struct tool_mgr *m, json_t *e, const char *where, char *err, size_t errlen)
{
    static const char *const keys[] = {"name", "command", "args", "max_concurrency", "conflicts",
                                       "timeout_ms", "max_output_bytes", "irreversible",
                                       "network", "cpu_seconds", "memory_mb", "max_procs",
                                       NULL};
    if (!json_is_object(e)) return cfg_fail(err, errlen, "%s: expected a mapping", where);
    int rc = check_keys(e, where, keys, err, errlen);
    if (rc) return rc;
    json_t *n = json_object_get(e, "name");
    if (!json_is_string(n) || !json_string_length(n) || strchr(json_string_value(n), '/'))
        return cfg_fail(err, errlen, "%s.name: expected the server's name (no '/'); its tools "
                        "register as <name>/<tool>", where);
    struct tool_mcp *s = NULL;
    m->mcps = realloc(m->mcps, (m->n_mcps + 1) * sizeof *m->mcps);
    if (!m->mcps) return AIOS_ENOMEM;
    rc = tool_mcp_start(m, json_string_value(n), e, &s, err, errlen);
    if (rc) return rc;
    m->mcps[m->n_mcps++] = s;
    return 0;
}

/* exported for mcp.c and the hub: the properties of an entry */
int tool_cfg_props(json_t *e, const char *where, struct tool *t, char *err, size_t errlen)
{
    return parse_props(e, where, t, err, errlen);
}
int tool_cfg_argv(json_t *e, const char *where, char ***argv, char *err, size_t errlen);
int tool_cfg_argv(json_t *e, const char *where, char ***argv, char *err, size_t errlen)
{
    return parse_argv(e, where, NULL, argv, err, errlen);
}

static int load_section(struct tool_mgr *m, json_t *sec, char *err, size_t errlen)
{
    static const char *const keys[] = {"workers", "pool_threads", "max_jobs_per_agent",
                                       "max_calls_per_agent", "builtins", "external",
                                       "folders", "mcp_servers", "defaults", NULL};
    static const char *const def_keys[] = {"cpu_seconds", "memory_mb", "max_procs", NULL};
    int rc;
    long v;
    bool builtins = true;
    m->n_workers = 16;
    m->n_pool_threads = 8;
    if (sec && !json_is_null(sec)) {
        if (!json_is_object(sec)) return cfg_fail(err, errlen, "tools: expected a mapping");
        if ((rc = check_keys(sec, "tools", keys, err, errlen))) return rc;
        v = m->n_workers;
        if ((rc = get_int(sec, "workers", "tools", 1, 256, &v, err, errlen))) return rc;
        m->n_workers = (int)v;
        v = m->n_pool_threads;
        if ((rc = get_int(sec, "pool_threads", "tools", 1, 256, &v, err, errlen))) return rc;
        m->n_pool_threads = (int)v;
        v = 0;
        if ((rc = get_int(sec, "max_jobs_per_agent", "tools", 0, 256, &v, err, errlen))) return rc;
        m->max_jobs_per_agent = (int)v;
        v = 0;
        if ((rc = get_int(sec, "max_calls_per_agent", "tools", 0, 256, &v, err, errlen))) return rc;
        m->max_calls_per_agent = (int)v;
        if ((rc = get_bool(sec, "builtins", "tools", &builtins, err, errlen))) return rc;
        json_t *d = json_object_get(sec, "defaults");
        if (d && !json_is_null(d)) {
            if (!json_is_object(d)) return cfg_fail(err, errlen, "tools.defaults: expected a mapping");
            if ((rc = check_keys(d, "tools.defaults", def_keys, err, errlen))) return rc;
            struct tool tmp = {0};
            if ((rc = parse_props(d, "tools.defaults", &tmp, err, errlen))) return rc;
            g_default_limits = tmp.limits;
        }
    }
    if (builtins && (rc = tool_builtins_register(m, err, errlen))) return rc;
    if (!sec || json_is_null(sec)) return 0;
    const char *lists[] = {"external", "folders", "mcp_servers"};
    for (int l = 0; l < 3; l++) {
        json_t *arr = json_object_get(sec, lists[l]);
        if (!arr || json_is_null(arr)) continue;
        if (!json_is_array(arr)) return cfg_fail(err, errlen, "tools.%s: expected a list", lists[l]);
        size_t i;
        json_t *e;
        json_array_foreach(arr, i, e) {
            char where[96];
            snprintf(where, sizeof where, "tools.%s[%zu]", lists[l], i);
            if (l == 0) rc = add_external(m, e, where, err, errlen);
            else if (l == 2) rc = add_mcp(m, e, where, err, errlen);
            else if (!json_is_string(e)) rc = cfg_fail(err, errlen, "%s: expected a folder path", where);
            else {
                char *dir = json_string_value(e)[0] == '/' ? strdup(json_string_value(e))
                            : m->data_dir ? NULL : strdup(json_string_value(e));
                if (!dir && asprintf(&dir, "%s/%s", m->data_dir, json_string_value(e)) < 0) dir = NULL;
                rc = dir ? add_folder(m, dir, where, err, errlen) : AIOS_ENOMEM;
                free(dir);
            }
            if (rc) return rc;
        }
    }
    return 0;
}

/* ---- job workers ---- */

static int agent_jobs(const struct tool_mgr *m, const char *agent)
{
    int n = 0;
    for (int i = 0; i < m->n_workers; i++)
        if (m->job_agent[i] && !strcmp(m->job_agent[i], agent)) n++;
    return n;
}

static bool can_start(struct tool_mgr *m, const struct tool_job *j)
{
    const struct tool *t = j->t;
    if (agent_jobs(m, j->b->agent) >= m->max_jobs_per_agent) return false;
    if (t->max_concurrency > 0 && t->n_running >= t->max_concurrency) return false;
    for (int i = 0; i < t->n_conflicts; i++) {
        struct tool_group *g = group_get(m, t->conflicts[i], false);
        if (g && g->n_running > 0) return false;
    }
    return true;
}

static void acquire(struct tool_mgr *m, struct tool *t, int d)
{
    t->n_running += d;
    for (int i = 0; i < t->n_conflicts; i++) {
        struct tool_group *g = group_get(m, t->conflicts[i], false);
        if (g) g->n_running += d;
    }
}

/* A tool's duration, for the scheduler's estimate of when its calls end
 * (sched_set_expected_end, which the engine's eviction reads): the moving
 * mean of its last calls (about TOOL_MEAN_WINDOW), its timeout before any
 * was timed. Both with mu held. */
static void note_duration(struct tool *t, int64_t dur_us)
{
    if (t->n_timed < TOOL_MEAN_WINDOW) t->n_timed++;
    t->mean_us += (dur_us - t->mean_us) / t->n_timed;
}

static int64_t expected_us(const struct tool *t)
{
    return t->n_timed > 0 ? t->mean_us : (int64_t)t->timeout_ms * 1000;
}

static json_t *call_error(const char *type, const char *msg)
{
    return json_pack("{s:b,s:{s:s,s:s}}", "ok", 0, "error", "type", type, "message", msg);
}

int tool_agent_dirname(const char *agent, char *out, size_t outlen)
{
    size_t n = agent ? strlen(agent) : 0;
    if (n == 0 || n > 128) return AIOS_EINVAL;
    return util_pct_encode(agent, out, outlen);
}

/* The agent's storage root (storage.root_dir/<dirname>), created; NULL
 * with a message when it cannot be, NULL without one when the manager has
 * no storage root (unit tests). */
static char *agent_root(struct tool_mgr *m, const char *agent, bool hand_over, char *err,
                        size_t errlen)
{
    if (!m->storage_root) return NULL;
    char dn[128 * 3 + 1];
    if (tool_agent_dirname(agent, dn, sizeof dn)) {
        snprintf(err, errlen, "agent name '%.200s' cannot name a storage directory (1 to 128 bytes)",
                 agent);
        return NULL;
    }
    char *p;
    if (asprintf(&p, "%s/%s", m->storage_root, dn) < 0) return NULL;
    if (util_mkdirs(p) != 0) {
        snprintf(err, errlen, "cannot create the agent's storage root %s", p);
        free(p);
        return NULL;
    }
    /* without tool views (no storage manager), under a root kernel tools
     * run as TOOL_SANDBOX_UID in the root itself: let them write here */
    if (hand_over && geteuid() == 0 && chown(p, TOOL_SANDBOX_UID, TOOL_SANDBOX_UID) != 0) {
        snprintf(err, errlen, "cannot hand the agent's storage root %s to the sandbox uid: %s", p,
                 strerror(errno));
        free(p);
        return NULL;
    }
    return p;
}

/* The agent's view, shared with its other running calls, or a new one
 * (made here, outside views_mu). NULL with a message in err. */
static struct tool_view *view_acquire(struct tool_mgr *m, const char *agent, char *err,
                                      size_t errlen)
{
    pthread_mutex_lock(&m->views_mu);
    for (;;) {
        struct tool_view *v = m->views;
        while (v && strcmp(v->agent, agent)) v = v->next;
        if (!v) break;
        if (v->state == VIEW_READY) {
            v->refs++;
            pthread_mutex_unlock(&m->views_mu);
            return v;
        }
        pthread_cond_wait(&m->views_cv, &m->views_mu); /* being made or imported */
    }
    struct tool_view *v = calloc(1, sizeof *v);
    if (!v || !(v->agent = strdup(agent))) {
        pthread_mutex_unlock(&m->views_mu);
        free(v);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    v->state = VIEW_MAKING;
    v->refs = 1;
    v->next = m->views;
    m->views = v;
    pthread_mutex_unlock(&m->views_mu);
    uid_t uid = geteuid() == 0 ? TOOL_SANDBOX_UID : (uid_t)-1;
    int rc = m->deps.view.make(m->deps.view.ud, agent, uid, v->dir, sizeof v->dir, &v->budget,
                               &v->manifest, err, errlen);
    pthread_mutex_lock(&m->views_mu);
    if (rc) { /* unlink it: the next call tries again */
        for (struct tool_view **p = &m->views; *p; p = &(*p)->next)
            if (*p == v) {
                *p = v->next;
                break;
            }
        free(v->agent);
        free(v);
        v = NULL;
    } else {
        v->state = VIEW_READY;
    }
    pthread_cond_broadcast(&m->views_cv);
    pthread_mutex_unlock(&m->views_mu);
    return v;
}

static void report_add(json_t *rep, const char *key, json_t *item)
{
    json_t *a = json_object_get(rep, key);
    if (!a) json_object_set_new(rep, key, a = json_array());
    json_array_append_new(a, item);
}

/* The last running call of the view's agent ended: send what changed as
 * storage calls, remove the view. The report, or NULL when other calls
 * still use the view. */
static json_t *view_release(struct tool_mgr *m, struct tool_view *v, const struct tool *t)
{
    pthread_mutex_lock(&m->views_mu);
    bool last = --v->refs == 0;
    if (last) v->state = VIEW_CLOSING;
    pthread_mutex_unlock(&m->views_mu);
    if (!last) return NULL;
    json_t *rep = json_object(), *notes = json_array();
    struct sto_view_change *ch = NULL;
    size_t n = 0;
    char err[1024] = "";
    if (atomic_load(&v->over))
        json_object_set_new(rep, "killed", json_string("the files written took more than the "
                                                       "agent's storage quota and the disk's "
                                                       "reserve allow"));
    int rc = m->deps.view.changes(m->deps.view.ud, v->dir, v->manifest, &ch, &n, notes, err,
                                  sizeof err);
    if (rc) json_object_set_new(rep, "error", json_string(err));
    for (size_t i = 0; !rc && i < n; i++) {
        struct sto_req *q = NULL;
        char from[256];
        snprintf(from, sizeof from, "tool %s", t->name);
        int e = sto_req_make(ch[i].op, ch[i].path, ch[i].data, ch[i].len, from, &q);
        json_t *res = NULL;
        char why[1024] = "";
        /* deletes may wait for the operator's approval, within the tool's timeout */
        if (!e)
            e = tool_storage_call(m, v->agent, q, util_now_us() + (int64_t)t->timeout_ms * 1000,
                                  &res, why, sizeof why);
        const char *what = ch[i].op == STO_OP_WRITE ? "written" : "deleted";
        if (!e) {
            json_t *ver = json_object_get(res, "version");
            report_add(rep, what, ver ? json_pack("{s:s,s:O}", "path", ch[i].path, "version", ver)
                                      : json_pack("{s:s}", "path", ch[i].path));
        } else {
            report_add(rep, "refused",
                       json_pack("{s:s,s:s,s:s}", "path", ch[i].path, "operation",
                                 ch[i].op == STO_OP_WRITE ? "write" : "delete_file", "error",
                                 why[0] ? why : aios_strerror(e)));
        }
        json_decref(res);
    }
    sto_view_changes_free(ch, n);
    if (json_array_size(notes)) json_object_set_new(rep, "skipped", notes);
    else json_decref(notes);
    m->deps.view.drop(m->deps.view.ud, v->dir);
    pthread_mutex_lock(&m->views_mu);
    for (struct tool_view **p = &m->views; *p; p = &(*p)->next)
        if (*p == v) {
            *p = v->next;
            break;
        }
    pthread_cond_broadcast(&m->views_cv);
    pthread_mutex_unlock(&m->views_mu);
    json_decref(v->manifest);
    free(v->agent);
    free(v);
    return rep;
}

struct exec_watch {
    struct tool_mgr *m;
    struct tool_view *v;
};

/* polled while a tool runs: the kernel stops, or the agent's view grew
 * past its budget */
static bool exec_should_abort(void *ud)
{
    struct exec_watch *w = ud;
    if (tool_mgr_stopping(w->m)) return true;
    struct tool_view *v = w->v;
    if (!v || v->budget < 0) return false;
    if (atomic_load(&v->over)) return true;
    long long now = (long long)util_now_us(), last = atomic_load(&v->last_check_us);
    if (now - last < VIEW_CHECK_US || !atomic_compare_exchange_strong(&v->last_check_us, &last, now))
        return false;
    if (sto_view_bytes(v->dir) > v->budget) atomic_store(&v->over, true);
    return atomic_load(&v->over);
}

static json_t *run_exec(struct tool_mgr *m, struct tool *t, const char *agent, json_t *args)
{
    char err[1024] = "";
    char *root = agent_root(m, agent, !m->deps.view.make, err, sizeof err);
    if (!root && err[0]) return call_error("tool_error", err);
    struct tool_view *view = NULL;
    if (root && m->deps.view.make && !(view = view_acquire(m, agent, err, sizeof err))) {
        free(root);
        return call_error("tool_error", err);
    }
    struct exec_watch watch = {m, view};
    char *input = json_dumps(args, JSON_COMPACT);
    struct tool_spawn_opts o = {.argv = t->argv, .cwd = t->dir, .rw_dir = root,
                                .rw_src = view ? view->dir : NULL,
                                .network = t->network, .sandbox = true, .limits = t->limits,
                                .agent = agent, .tool = t->name,
                                .should_abort = exec_should_abort, .abort_ud = &watch};
    char *out = NULL, *errout = NULL;
    size_t n_out = 0;
    bool trunc = false;
    int wst = -1;
    int64_t deadline = util_now_us() + (int64_t)t->timeout_ms * 1000;
    int rc = input ? tool_proc_run(&o, input, strlen(input), t->max_output_bytes, deadline, &out,
                                   &n_out, &trunc, &errout, &wst, err, sizeof err)
                   : AIOS_ENOMEM;
    free(input);
    free(root);
    bool over = view && atomic_load(&view->over);
    json_t *files = view ? view_release(m, view, t) : NULL;
    json_t *res;
    if (over) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s was killed: the files it wrote took more than the agent's "
                 "storage quota (storage.quota_bytes) and the disk's reserve "
                 "(storage.reserve_bytes) allow", t->name);
        res = call_error("quota_exceeded", msg);
    } else if (rc == AIOS_ESHUTDOWN) {
        res = call_error("shutdown", err);
    } else if (rc == AIOS_EBUSY) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s did not finish within its timeout of %d ms and was killed",
                 t->name, t->timeout_ms);
        res = call_error("timeout", msg);
    } else if (rc) {
        res = call_error("tool_error", err[0] ? err : aios_strerror(rc));
    } else if (!WIFEXITED(wst) || WEXITSTATUS(wst) != 0) {
        char msg[2048];
        if (WIFSIGNALED(wst))
            snprintf(msg, sizeof msg, "%s was killed by signal %d (a sandbox limit?)%s%.1500s",
                     t->name, WTERMSIG(wst), errout ? ": " : "", errout ? errout : "");
        else
            snprintf(msg, sizeof msg, "%s exited with status %d%s%.1500s", t->name,
                     WIFEXITED(wst) ? WEXITSTATUS(wst) : -1, errout ? ": " : "",
                     errout ? errout : "");
        res = call_error("tool_error", msg);
    } else {
        json_t *v = NULL;
        if (!trunc && n_out) v = json_loadb(out, n_out, JSON_DECODE_ANY, NULL);
        if (!v) {
            /* plain text (or cut JSON): the text, with a marker when cut */
            char marker[96];
            snprintf(marker, sizeof marker, TOOL_TRUNC_MARKER, t->max_output_bytes);
            size_t len = n_out + (trunc ? strlen(marker) : 0);
            char *txt = malloc(len + 1);
            if (txt) {
                if (n_out) memcpy(txt, out, n_out);
                if (trunc) memcpy(txt + n_out, marker, strlen(marker));
                txt[len] = 0;
                v = json_stringn_nocheck(txt, len);
                free(txt);
            }
        }
        res = v ? json_pack("{s:b,s:o,s:b}", "ok", 1, "result", v, "truncated", trunc)
                : call_error("tool_error", "tool output could not be stored");
    }
    if (files) json_object_set_new(res, "files", files);
    free(out);
    free(errout);
    return res;
}

static json_t *run_job(struct tool_mgr *m, struct tool_job *j)
{
    struct tool *t = j->t;
    char err[1024] = "";
    if (tool_mgr_stopping(m)) return call_error("shutdown", "the kernel is shutting down");
    if (t->irreversible) {
        if (m->approval) {
            int rc = m->approval(m->approval_ud, j->b->sc, t, j->args, err, sizeof err);
            if (rc) return call_error("permission_denied", err[0] ? err : "not approved");
        } else {
            LOG_WARN("tools", "%s is irreversible but no approval hook is installed (no access "
                     "manager); running it for %s", t->name, j->b->agent);
        }
    }
    switch (t->kind) {
    case TOOL_KIND_BUILTIN: {
        struct tool_call_env env = {m, j->b->agent, util_now_us() + (int64_t)t->timeout_ms * 1000};
        json_t *res = NULL;
        int rc = t->builtin(&env, j->args, &res, err, sizeof err);
        if (rc)
            return call_error(rc == AIOS_EINVAL ? "invalid_arguments"
                              : rc == AIOS_ENOTFOUND ? "not_found"
                              : rc == AIOS_EPERM ? "permission_denied"
                              : rc == AIOS_ETOOBIG ? "too_large"
                              : rc == TOOL_EUNAVAILABLE ? "unavailable"
                              : rc == AIOS_EBUSY ? "timeout"
                              : rc == AIOS_ESHUTDOWN ? "shutdown" : "tool_error", err);
        return json_pack("{s:b,s:o}", "ok", 1, "result", res ? res : json_null());
    }
    case TOOL_KIND_EXEC: return run_exec(m, t, j->b->agent, j->args);
    case TOOL_KIND_MCP: {
        json_t *res = NULL;
        int rc = tool_mcp_call(t->mcp, t->remote_name, j->args,
                               util_now_us() + (int64_t)t->timeout_ms * 1000, &res, err, sizeof err);
        if (rc == AIOS_EBUSY) return call_error("timeout", err);
        if (rc == AIOS_ESHUTDOWN) return call_error("shutdown", err);
        if (rc) return call_error("tool_error", err);
        /* cut oversized text content */
        char *s = json_dumps(res, JSON_COMPACT);
        bool trunc = s && strlen(s) > t->max_output_bytes;
        if (trunc) {
            char marker[96];
            snprintf(marker, sizeof marker, TOOL_TRUNC_MARKER, t->max_output_bytes);
            s[t->max_output_bytes] = 0;
            json_decref(res);
            size_t n = strlen(s);
            char *cut = malloc(n + strlen(marker) + 1);
            if (cut) {
                memcpy(cut, s, n);
                strcpy(cut + n, marker);
            }
            res = cut ? json_stringn_nocheck(cut, strlen(cut)) : json_null();
            free(cut);
        }
        free(s);
        return json_pack("{s:b,s:o,s:b}", "ok", 1, "result", res, "truncated", trunc);
    }
    }
    return call_error("tool_error", "unknown tool kind");
}

static void *worker_main(void *arg)
{
    struct tool_mgr *m = arg;
    pthread_mutex_lock(&m->mu);
    for (;;) {
        struct tool_job *j = NULL, *prev = NULL;
        for (struct tool_job *x = m->q_head; x; prev = x, x = x->next)
            if (can_start(m, x)) {
                j = x;
                break;
            }
        if (!j) {
            if (m->stopping && !m->q_head) break;
            pthread_cond_wait(&m->cv_work, &m->mu);
            continue;
        }
        if (prev) prev->next = j->next;
        else m->q_head = j->next;
        if (m->q_tail == j) m->q_tail = prev;
        acquire(m, j->t, +1);
        int slot = 0;
        while (m->job_agent[slot]) slot++; /* fewer jobs run than workers */
        assert(slot < m->n_workers);
        m->job_agent[slot] = j->b->agent;
        pthread_mutex_unlock(&m->mu);

        int64_t t0 = util_now_us();
        json_t *res = run_job(m, j);
        int64_t dur = util_now_us() - t0;
        if (res) json_object_set_new(res, "duration_ms", json_real((double)dur / 1000.0));

        pthread_mutex_lock(&m->mu);
        acquire(m, j->t, -1);
        note_duration(j->t, dur);
        m->job_agent[slot] = NULL;
        struct tool_batch *b = j->b;
        b->results[j->idx] = res;
        b->n_left--;
        pthread_cond_signal(&b->cv);
        pthread_cond_broadcast(&m->cv_work);
        json_decref(j->args);
        free(j);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

/* ---- a request ---- */

/* accept {"name","parameters"} (AIOS), {"name","arguments"} and
 * {"id","type":"function","function":{"name","arguments": "json text"}} (OpenAI) */
static int parse_call(json_t *c, size_t i, const char **name, json_t **args, char *id, size_t idlen,
                      char *err, size_t errlen)
{
    *args = NULL;
    *name = NULL;
    snprintf(id, idlen, "call_%zu", i);
    if (!json_is_object(c)) {
        snprintf(err, errlen, "tool_calls[%zu] must be an object {\"name\", \"parameters\"}", i);
        return AIOS_EINVAL;
    }
    json_t *jid = json_object_get(c, "id");
    if (json_is_string(jid)) snprintf(id, idlen, "%s", json_string_value(jid));
    json_t *fn = json_object_get(c, "function");
    json_t *src = json_is_object(fn) ? fn : c;
    json_t *n = json_object_get(src, "name");
    json_t *outer = json_object_get(c, "name");
    if (src != c && json_is_string(outer) && json_is_string(n) && !json_equal(outer, n)) {
        snprintf(err, errlen, "tool_calls[%zu] names two tools: 'name' is '%s' and "
                 "'function.name' is '%s'; send one name", i, json_string_value(outer),
                 json_string_value(n));
        return AIOS_ECONFIG; /* the whole request is refused (tool_run_calls) */
    }
    if (!json_is_string(n)) {
        snprintf(err, errlen, "tool_calls[%zu].name must be a string naming a tool (GET /tools lists them)", i);
        return AIOS_EINVAL;
    }
    *name = json_string_value(n);
    json_t *a = json_object_get(src, "parameters");
    if (!a) a = json_object_get(src, "arguments");
    if (!a || json_is_null(a)) {
        *args = json_object();
    } else if (json_is_string(a)) {
        json_error_t je;
        *args = json_loads(json_string_value(a), 0, &je);
        if (!*args) {
            snprintf(err, errlen, "tool_calls[%zu] (%s): arguments are not valid JSON: %s", i,
                     *name, je.text);
            return AIOS_EINVAL;
        }
    } else {
        *args = json_incref(a);
    }
    return 0;
}

int tool_run_calls(struct tool_mgr *m, struct syscall *sc, const char *agent, json_t *calls,
                   json_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!json_is_array(calls) || json_array_size(calls) == 0) {
        snprintf(err, errlen, "tool_calls must be a non-empty list of {\"name\", \"parameters\"}");
        return AIOS_EINVAL;
    }
    size_t n = json_array_size(calls);
    if (n > TOOL_MAX_CALLS) {
        snprintf(err, errlen, "too many tool calls in one request (%zu, at most %d)", n, TOOL_MAX_CALLS);
        return AIOS_ETOOBIG;
    }
    struct tool_batch b = {.n_left = 0, .agent = agent, .sc = sc};
    pthread_cond_init(&b.cv, NULL);
    b.results = calloc(n, sizeof *b.results);
    json_t *ids = json_array(), *names = json_array();
    if (!b.results || !ids || !names) goto oom;
    struct tool_job *jobs = NULL, *jtail = NULL;
    int refused = 0; /* AIOS_EINVAL (two names) or AIOS_EPERM (permit hook): nothing runs */
    for (size_t i = 0; i < n && !refused; i++) {
        const char *name;
        json_t *args;
        char id[128], msg[1536];
        int rc = parse_call(json_array_get(calls, i), i, &name, &args, id, sizeof id, msg, sizeof msg);
        json_array_append_new(ids, json_string(id));
        json_array_append_new(names, name ? json_string(name) : json_null());
        if (rc == AIOS_ECONFIG) {
            refused = AIOS_EINVAL;
            snprintf(err, errlen, "%s", msg);
            continue;
        }
        if (rc) {
            b.results[i] = call_error("invalid_request", msg);
            continue;
        }
        struct tool *t = tool_find(m, name);
        rc = t || !m->resolve ? AIOS_ENOTFOUND : m->resolve(m->resolve_ud, name, &t, msg, sizeof msg);
        if (!t && rc == AIOS_ENOTFOUND) {
            snprintf(msg, sizeof msg, "no tool named '%s' (GET /tools lists the registered tools, "
                     "GET /cerebrum/tools/list the hub's)", name);
            b.results[i] = call_error("not_found", msg);
            json_decref(args);
            continue;
        }
        if (!t) { /* a hub tool that cannot run here: the resolver says why */
            b.results[i] = call_error(rc == TOOL_EUNAVAILABLE ? "unavailable"
                                      : rc == AIOS_EINVAL ? "invalid_request" : "tool_error", msg);
            json_decref(args);
            continue;
        }
        /* the privilege check, on the tool that would run */
        if (m->permit && (rc = m->permit(m->permit_ud, sc, t, msg, sizeof msg)) != 0) {
            refused = rc == AIOS_ENOMEM ? AIOS_ENOMEM : AIOS_EPERM;
            snprintf(err, errlen, "%s", msg);
            json_decref(args);
            continue;
        }
        if (tool_validate_args(t, args, msg, sizeof msg)) {
            b.results[i] = call_error("invalid_arguments", msg);
            json_decref(args);
            continue;
        }
        struct tool_job *j = calloc(1, sizeof *j);
        if (!j) {
            json_decref(args);
            b.results[i] = call_error("tool_error", "out of memory");
            continue;
        }
        j->t = t;
        j->args = args;
        j->b = &b;
        j->idx = i;
        if (jtail) jtail->next = j;
        else jobs = j;
        jtail = j;
        b.n_left++;
    }
    if (refused) { /* before anything was queued */
        while (jobs) {
            struct tool_job *nx = jobs->next;
            json_decref(jobs->args);
            free(jobs);
            jobs = nx;
        }
        for (size_t i = 0; i < n; i++) json_decref(b.results[i]);
        json_decref(ids);
        json_decref(names);
        free(b.results);
        pthread_cond_destroy(&b.cv);
        return refused;
    }
    /* the calls run in parallel where their limits allow: the batch is
     * expected to end with its slowest call */
    int64_t est_us = 0;
    pthread_mutex_lock(&m->mu);
    for (struct tool_job *j = jobs; j; j = j->next)
        if (expected_us(j->t) > est_us) est_us = expected_us(j->t);
    if (jobs) {
        if (m->q_tail) m->q_tail->next = jobs;
        else m->q_head = jobs;
        m->q_tail = jtail;
        pthread_cond_broadcast(&m->cv_work);
    }
    pthread_mutex_unlock(&m->mu);
    if (jobs && sc && m->deps.sched) sched_set_expected_end(m->deps.sched, sc, util_now_us() + est_us);
    pthread_mutex_lock(&m->mu);
    while (b.n_left > 0) pthread_cond_wait(&b.cv, &m->mu);
    pthread_mutex_unlock(&m->mu);

    json_t *results = json_array(), *msgs = json_array();
    size_t n_fail = 0;
    char first_err[1024] = "";
    for (size_t i = 0; i < n; i++) {
        json_t *r = b.results[i];
        json_object_set(r, "id", json_array_get(ids, i));
        json_object_set(r, "name", json_array_get(names, i));
        bool ok = json_is_true(json_object_get(r, "ok"));
        if (!ok) {
            if (!n_fail++)
                snprintf(first_err, sizeof first_err, "%s (%s): %s",
                         json_string_value(json_array_get(ids, i)),
                         json_is_string(json_array_get(names, i)) ? json_string_value(json_array_get(names, i)) : "?",
                         json_string_value(json_object_get(json_object_get(r, "error"), "message")));
        }
        json_array_append(msgs, ok ? json_object_get(r, "result") : json_null());
        json_array_append_new(results, r);
        b.results[i] = NULL;
    }
    /* response_message is a string, as the reference's ToolResponse types
     * it: the result itself when it is text, else its JSON text; for
     * several calls the JSON text of the list. Structured results are in
     * tool_results. */
    json_t *m0 = n == 1 ? json_array_get(msgs, 0) : msgs;
    json_t *msg;
    if (json_is_string(m0)) {
        msg = json_incref(m0);
    } else if (json_is_null(m0)) {
        msg = json_null();
    } else {
        char *txt = json_dumps(m0, JSON_COMPACT | JSON_ENCODE_ANY);
        msg = txt ? json_string_nocheck(txt) : NULL;
        free(txt);
    }
    json_t *e = json_null();
    if (n_fail) {
        char line[1200];
        snprintf(line, sizeof line, "%zu of %zu tool calls failed; first: %s", n_fail, n, first_err);
        e = json_string(line);
    }
    *out = json_pack("{s:s,s:o,s:o,s:b,s:o,s:i}", "response_class", "tool", "response_message",
                     msg ? msg : json_null(), "tool_results", results, "finished", 1, "error", e,
                     "status_code", 200);
    json_decref(msgs);
    json_decref(ids);
    json_decref(names);
    free(b.results);
    pthread_cond_destroy(&b.cv);
    return *out ? 0 : AIOS_ENOMEM;
oom:
    json_decref(ids);
    json_decref(names);
    free(b.results);
    pthread_cond_destroy(&b.cv);
    snprintf(err, errlen, "out of memory");
    return AIOS_ENOMEM;
}

void tool_exec_syscall(struct syscall *sc, void *ud)
{
    struct tool_mgr *m = ud;
    struct kq_req *req = sc->req;
    if (!req || !req->op || strcmp(req->op, "call") != 0) {
        syscall_fail(sc, AIOS_EINVAL, 400, "tool operation '%s' is not known (only \"call\")",
                     req && req->op ? req->op : "");
        return;
    }
    json_t *out = NULL;
    char err[1024] = "";
    int rc = tool_run_calls(m, sc, sc->agent ? sc->agent : "", json_object_get(req->params, "tool_calls"),
                            &out, err, sizeof err);
    if (rc) {
        syscall_fail(sc, rc, rc == AIOS_ENOMEM ? 500 : rc == AIOS_ETOOBIG ? 413
                             : rc == AIOS_EPERM ? 403 : 400, "%s", err);
        return;
    }
    /* Every call failed. A request the kernel refuses (a call that is not a
     * call: invalid_request; one the agent may not run: permission_denied;
     * the kernel stopping) is a real HTTP error. Calls that were well formed
     * and allowed but failed (no such tool, bad arguments, the tool failed
     * or timed out) are an answer, as the reference kernel gives it: a 200
     * whose response says finished: false, with the error and the status
     * the first failure would have had (Cerebrum's client calls
     * raise_for_status() and would stop the agent on a 4xx/5xx). */
    json_t *results = json_object_get(out, "tool_results");
    size_t i, n_ok = 0;
    json_t *r;
    const char *refusal = NULL;
    json_array_foreach(results, i, r) {
        if (json_is_true(json_object_get(r, "ok"))) n_ok++;
        const char *ty = json_string_value(json_object_get(json_object_get(r, "error"), "type"));
        if (!refusal && ty && (!strcmp(ty, "invalid_request") || !strcmp(ty, "permission_denied") ||
                               !strcmp(ty, "shutdown")))
            refusal = ty;
    }
    if (n_ok == 0) {
        const char *type = refusal ? refusal : json_string_value(json_object_get(json_object_get(json_array_get(results, 0), "error"), "type"));
        int st = !type ? 500 : !strcmp(type, "not_found") ? 404 : !strcmp(type, "timeout") ? 504
               : !strcmp(type, "shutdown") ? 503
               : !strcmp(type, "unavailable") ? 501 : !strcmp(type, "too_large") ? 413
               : !strcmp(type, "permission_denied") ? 403 : !strcmp(type, "tool_error") ? 502 : 400;
        if (!refusal) {
            const char *e = json_string_value(json_object_get(out, "error"));
            char *msg = NULL;
            if (asprintf(&msg, "Tool calling error: %s", e ? e : "every call failed") < 0) msg = NULL;
            json_object_set_new(out, "finished", json_false());
            json_object_set_new(out, "status_code", json_integer(st));
            json_object_set_new(out, "response_message", msg ? json_string(msg) : json_null());
            free(msg);
        } else {
            char *all = json_dumps(results, JSON_COMPACT);
            int code = st == 403 ? AIOS_EPERM : st == 503 ? AIOS_ESHUTDOWN : AIOS_EINVAL;
            syscall_fail(sc, code, st,
                         "%s; tool_results: %.400s", json_string_value(json_object_get(out, "error")),
                         all ? all : "");
            free(all);
            json_decref(out);
            return;
        }
    }
    struct kq_res *res = kq_res_new(out);
    if (!res) {
        syscall_fail(sc, AIOS_ENOMEM, 500, "out of memory");
        return;
    }
    syscall_finish(sc, res, kq_res_free);
}

json_t *tool_list_json(struct tool_mgr *m)
{
    json_t *arr = json_array();
    for (size_t i = 0; m && i < m->n_tools; i++) {
        struct tool *t = m->tools[i];
        const char *kinds[] = {"builtin", "executable", "mcp"};
        json_t *conf = json_array();
        for (int c = 0; c < t->n_conflicts; c++) json_array_append_new(conf, json_string(t->conflicts[c]));
        json_array_append_new(
            arr, json_pack("{s:s,s:{s:s,s:s,s:O},s:{s:s,s:i,s:o,s:i,s:I,s:b,s:b}}", "type",
                           "function", "function", "name", t->name, "description", t->description,
                           "parameters", t->parameters, "aios", "kind", kinds[t->kind],
                           "max_concurrency", t->max_concurrency, "conflicts", conf, "timeout_ms",
                           t->timeout_ms, "max_output_bytes", (json_int_t)t->max_output_bytes,
                           "irreversible", t->irreversible, "network", t->network));
    }
    return arr;
}

/* ---- lifecycle ---- */

int tool_mgr_create(struct tool_mgr **out, json_t *section, const char *storage_root,
                    const char *data_dir, char *err, size_t errlen)
{
    *out = NULL;
    struct tool_mgr *m = calloc(1, sizeof *m);
    if (!m) return AIOS_ENOMEM;
    pthread_mutex_init(&m->mu, NULL);
    pthread_mutex_init(&m->views_mu, NULL);
    pthread_cond_init(&m->views_cv, NULL);
    pthread_cond_init(&m->cv_work, NULL);
    m->storage_root = storage_root ? strdup(storage_root) : NULL;
    m->data_dir = data_dir ? strdup(data_dir) : NULL;
    char why[256];
    if (!tool_sandbox_available(why, sizeof why))
        LOG_WARN("tools", "%s: external tools and MCP servers cannot run", why);
    int rc = load_section(m, section, err, errlen);
    if (rc) goto fail;
    if (m->max_jobs_per_agent <= 0) m->max_jobs_per_agent = m->n_workers > 1 ? m->n_workers / 2 : 1;
    if (m->max_calls_per_agent <= 0)
        m->max_calls_per_agent = m->n_pool_threads > 1 ? m->n_pool_threads / 2 : 1;
    m->workers = calloc((size_t)m->n_workers, sizeof *m->workers);
    m->job_agent = calloc((size_t)m->n_workers, sizeof *m->job_agent);
    if (!m->workers || !m->job_agent) {
        rc = AIOS_ENOMEM;
        goto fail;
    }
    for (; m->n_started < m->n_workers; m->n_started++)
        if (pthread_create(&m->workers[m->n_started], NULL, worker_main, m) != 0) {
            rc = AIOS_ENOMEM;
            goto fail;
        }
    LOG_INFO("tools", "%zu tools registered (%zu MCP servers), %d workers", m->n_tools, m->n_mcps,
             m->n_workers);
    *out = m;
    return 0;
fail:
    if (!err[0]) snprintf(err, errlen, "%s", aios_strerror(rc));
    tool_mgr_stop(m);
    return rc;
}

void tool_mgr_stop(struct tool_mgr *m)
{
    if (!m) return;
    atomic_store(&m->aborting, true);
    pthread_mutex_lock(&m->mu);
    m->stopping = true;
    pthread_cond_broadcast(&m->cv_work);
    pthread_mutex_unlock(&m->mu);
    for (int i = 0; i < m->n_started; i++) pthread_join(m->workers[i], NULL);
    free(m->workers);
    free(m->job_agent);
    for (size_t i = 0; i < m->n_mcps; i++) tool_mcp_stop(m->mcps[i]);
    free(m->mcps);
    for (size_t i = 0; i < m->n_tools; i++) tool_free(m->tools[i]);
    free(m->tools);
    for (size_t i = 0; i < m->n_groups; i++) free(m->groups[i].name);
    free(m->groups);
    free(m->storage_root);
    free(m->data_dir);
    tool_sandbox_cleanup();
    pthread_mutex_destroy(&m->mu);
    pthread_mutex_destroy(&m->views_mu);
    pthread_cond_destroy(&m->views_cv);
    pthread_cond_destroy(&m->cv_work);
    free(m);
}
