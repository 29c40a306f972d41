/* Agents as OS processes: the agent factory and its process table.
 *
 * Purpose. An agent is a package folder (config.json in AIOS's layout plus
 * an entry), found by name under the agents directory, then under the
 * example agents built next to the binary (<bin dir>/agents), or by
 * absolute path, then in the hub (src/hub: "author/name", through
 * agent_hub_hooks). agent_submit() launches it as its own OS process in a
 * bubblewrap sandbox, through the tools' spawner (tool_proc_spawn in
 * tools/sandbox.c): a uid of its own per run (AGENT_UID_BASE + id under a
 * root kernel), the system, the package and the Python SDK read-only,
 * its run folder (data_dir/agents/runs/<id>/, cwd and HOME) writable and
 * nothing else of data_dir, stdout and stderr to stdout.log and stderr.log
 * there, rlimits and a pids cgroup (agent_factory.limits, lowered by the
 * package's "limits"), its own network namespace unless
 * agent_factory.network names it. Its pid 1 is `aios forward`
 * (cli/forward.c): it relays signals, reports the agent's exit status and,
 * in a network namespace, copies 127.0.0.1:PORT to the run's channel: a
 * Unix socket in data_dir/agents/sock/ made for that run alone and bound
 * into its sandbox. The reaper accepts on it and hands each connection to
 * the API (agent_set_channel), which knows the run from it: no token. The
 * environment carries only
 *   AIOS_KERNEL_URL, CEREBRUM_KERNEL_URL  where the agent finds the kernel
 *   AIOS_AGENT_NAME, AIOS_AGENT_ID        config.json name, execution id
 *   AIOS_AGENT_TOKEN                      only with the host network
 *   AIOS_TASK, AIOS_RESULT_FILE           the task; where a result may go
 *   AIOS_AGENT_DIR                        the package folder
 *   PYTHONPATH                            the Python SDK, the package
 *   XDG_CACHE_HOME                        run folder/.cache, where the hub
 *                                         put Cerebrum's tool cache
 * plus PATH, HOME, LANG, and the task is also the last argument. Entries:
 * *.py run with python3 (with build.module set, through
 * sdk/python/aios_runner.py, which imports the file and calls
 * Module(name).run(task) the way the reference's agent factory does);
 * *.sh with /bin/sh; anything else is executed directly.
 * agent_factory.sandbox: false runs the same command without bwrap.
 *
 * Invariants. Every process in the table is either RUNNING (not reaped, its
 * pidfd open) or final (reaped, pidfd closed, exit code, end time and
 * result set). Only the reaper thread reaps, and it calls waitpid (with
 * WNOHANG) while holding the table lock, so a signal sent under the same
 * lock never reaches a recycled pid. Result: the content of
 * AIOS_RESULT_FILE if the agent wrote it, else the last non-empty line of
 * stdout.
 *
 * A run's token and channel die with it: the reaper wipes the token and
 * closes and removes the socket when it reaps the run.
 *
 * Threads. Any thread may call the public functions; one mutex guards the
 * table, the usage map and the settings (never held with another lock).
 * One reaper thread polls the pidfds of running agents, their channels and
 * an eventfd (new agent, shutdown); it accepts channel connections and
 * calls the API's callback without the lock (agent_set_channel(NULL)
 * waits for one in progress); every 500 ms it also escalates SIGTERMs
 * older than 2 s to SIGKILL. No thread per agent.
 *
 * Ownership. The factory owns its processes' records until destroy, which
 * terminates agents still running (they belong to this kernel). */
#include "agents/agent.h"

#include "kernel/config.h"
#include "tools/tools.h"
#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/pidfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KILL_GRACE_US 2000000
#define RESULT_MAX (64 * 1024)

struct agent_proc {
    uint64_t id;
    char *agent; /* package name */
    char *ref;   /* as submitted */
    char *dir;
    char *task;
    char *run_dir;
    char token[33];
    json_t *config;
    pid_t pid;
    int pidfd;
    enum agent_status status;
    int64_t t_start_wall_us, t_end_wall_us, t_start_us, t_end_us;
    int exit_code;   /* valid when COMPLETED or FAILED */
    int term_signal; /* valid when KILLED */
    int64_t t_kill_us; /* monotonic time SIGTERM was sent; 0 none */
    bool hard_killed;
    int sent_sig; /* the last signal the kernel sent it; 0 none */
    int pending_sig; /* sent before its pid 1 could take it: sent again by the reaper */
    char *result;
    struct agent_usage usage;
    struct tool_proc tp; /* the sandbox (pid: bwrap, or aios forward when unsandboxed) */
    pid_t inner;         /* aios forward, the sandbox's pid 1 (host pid); 0 unknown */
    int lfd;             /* the run's channel: listening Unix socket, -1 none */
    char sock_name[32];  /* its name in the factory's socket folder */
};

struct usage_entry {
    char *name;
    struct agent_usage u;
};

struct agent_factory {
    pthread_mutex_t mu;
    struct agent_proc **procs;
    size_t n_procs, cap_procs;
    uint64_t next_id;
    struct usage_entry *usage;
    size_t n_usage, cap_usage;
    json_t *selected_llms;
    char *agents_dir;
    char *runs_dir;
    char *sdk_dir;
    char *runner; /* sdk_dir/aios_runner.py */
    char *sock_dir; /* data_dir/agents/sock: the runs' channels (0700) */
    int sock_dfd;   /* O_PATH of sock_dir: binds through /proc/self/fd (short paths) */
    /* settings (agent_factory.*) */
    bool sandbox;
    struct tool_limits limits;
    json_t *network; /* package names allowed the host network (array; "*" all) */
    /* the API's acceptor for run channels (agent_set_channel) */
    agent_channel_fn chan_cb;
    void *chan_ud;
    struct agent_hub_hooks hub; /* set once before the API starts */
    bool in_cb;
    pthread_cond_t cb_done;
    int efd;
    bool stop;
    pthread_t reaper;
    bool reaper_started;
};

void agent_factory_set_hub(struct agent_factory *f, const struct agent_hub_hooks *h)
{
    f->hub = *h;
}

const char *agent_status_name(enum agent_status s)
{
    switch (s) {
    case AGENT_STATUS_RUNNING: return "running";
    case AGENT_STATUS_COMPLETED: return "completed";
    case AGENT_STATUS_FAILED: return "failed";
    case AGENT_STATUS_KILLED: return "killed";
    }
    return "unknown";
}

/* ---------------------------------------------------------------- packages */

static char *read_small_file(const char *path, size_t max, size_t *n_out)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max, f) : 0;
    fclose(f);
    if (!buf) return NULL;
    buf[n] = 0;
    if (n_out) *n_out = n;
    return buf;
}

static bool path_escapes(const char *rel)
{
    if (rel[0] == '/') return true;
    const char *p = rel;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == 2 && p[0] == '.' && p[1] == '.') return true;
        if (!e) break;
        p = e + 1;
    }
    return false;
}

/* The checks of a parsed config.json (pkg->config, pkg->dir set): name,
 * description, tools, meta, build.entry inside the package, build.module;
 * fills name, entry and module. Pure (the entry's existence is checked by
 * agent_pkg_load); `where` names the file in messages. */
int agent_pkg_check(struct agent_pkg *pkg, const char *where, char *err, size_t errlen)
{
    const char *path = where;
    json_t *c = pkg->config;
    if (!json_is_object(c)) {
        snprintf(err, errlen, "%s: must be a JSON object", path);
        return AIOS_EINVAL;
    }
    json_t *name = json_object_get(c, "name");
    if (!json_is_string(name) || json_string_length(name) == 0) {
        snprintf(err, errlen, "%s: 'name' must be a non-empty string", path);
        return AIOS_EINVAL;
    }
    json_t *desc = json_object_get(c, "description");
    if (desc && !json_is_string(desc) && !json_is_array(desc)) {
        snprintf(err, errlen, "%s: 'description' must be a string or a list of strings", path);
        return AIOS_EINVAL;
    }
    json_t *tools = json_object_get(c, "tools"), *t;
    size_t i;
    if (tools && !json_is_array(tools)) {
        snprintf(err, errlen, "%s: 'tools' must be a list of tool names", path);
        return AIOS_EINVAL;
    }
    json_array_foreach(tools, i, t) if (!json_is_string(t))
    {
        snprintf(err, errlen, "%s: tools[%zu] must be a string such as \"author/name\"", path, i);
        return AIOS_EINVAL;
    }
    json_t *meta = json_object_get(c, "meta");
    if (meta && !json_is_object(meta)) {
        snprintf(err, errlen, "%s: 'meta' must be an object {author, version, license}", path);
        return AIOS_EINVAL;
    }
    json_t *build = json_object_get(c, "build");
    json_t *entry = json_object_get(build, "entry");
    json_t *module = json_object_get(build, "module");
    if (!json_is_object(build) || !json_is_string(entry) || json_string_length(entry) == 0) {
        snprintf(err, errlen, "%s: 'build.entry' must name the agent's entry file "
                 "(e.g. \"agent.py\" or \"run.sh\")", path);
        return AIOS_EINVAL;
    }
    if (module && !json_is_null(module) && !json_is_string(module)) {
        snprintf(err, errlen, "%s: 'build.module' must be a string", path);
        return AIOS_EINVAL;
    }
    if (path_escapes(json_string_value(entry))) {
        snprintf(err, errlen, "%s: 'build.entry' must be a path inside the package", path);
        return AIOS_EINVAL;
    }
    pkg->name = strdup(json_string_value(name));
    if (asprintf(&pkg->entry, "%s/%s", pkg->dir, json_string_value(entry)) < 0) pkg->entry = NULL;
    if (json_is_string(module) && json_string_length(module))
        pkg->module = strdup(json_string_value(module));
    if (!pkg->name || !pkg->entry) return AIOS_ENOMEM;
    return 0;
}

int agent_pkg_load(struct agent_pkg *pkg, const char *dir, char *err, size_t errlen)
{
    memset(pkg, 0, sizeof *pkg);
    int rc = AIOS_EINVAL;
    char path[PATH_MAX + 32];
    char *abs = realpath(dir, NULL);
    struct stat st;
    if (!abs || stat(abs, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "agent folder %s does not exist", dir);
        rc = AIOS_ENOTFOUND;
        goto fail;
    }
    pkg->dir = abs;
    abs = NULL;
    snprintf(path, sizeof path, "%s/config.json", pkg->dir);
    json_error_t je;
    pkg->config = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!pkg->config) {
        if (access(path, F_OK) != 0) {
            snprintf(err, errlen, "%s has no config.json (an AIOS agent package needs one with "
                     "name and build.entry)", pkg->dir);
            rc = AIOS_ENOTFOUND;
        } else {
            snprintf(err, errlen, "%s: not valid JSON: %s (line %d)", path, je.text, je.line);
        }
        goto fail;
    }
    rc = agent_pkg_check(pkg, path, err, errlen);
    if (rc) goto fail;
    rc = AIOS_EINVAL;
    if (access(pkg->entry, R_OK) != 0) {
        snprintf(err, errlen, "agent %s: its entry %s does not exist (build.entry in config.json)",
                 pkg->name, pkg->entry);
        goto fail;
    }
    return 0;
fail:
    free(abs);
    agent_pkg_free(pkg);
    return rc;
}

void agent_pkg_free(struct agent_pkg *pkg)
{
    if (!pkg) return;
    free(pkg->dir);
    free(pkg->name);
    free(pkg->entry);
    free(pkg->module);
    json_decref(pkg->config);
    memset(pkg, 0, sizeof *pkg);
}

/* ---------------------------------------------------------------- factory */

static void proc_free(struct agent_proc *p)
{
    if (!p) return;
    if (p->pidfd >= 0) close(p->pidfd);
    if (p->lfd >= 0) close(p->lfd);
    free(p->agent);
    free(p->ref);
    free(p->dir);
    free(p->task);
    free(p->run_dir);
    free(p->result);
    json_decref(p->config);
    free(p);
}

static char *exe_dir(void)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return NULL;
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (slash) *slash = 0;
    return strdup(self);
}

/* The Python SDK folder: agent_factory.sdk_dir, $AIOS_SDK_DIR, or
 * sdk/python next to (or one above) the executable's folder. */
static char *find_sdk_dir(const struct aios_config *cfg)
{
    json_t *v = cfg ? config_lookup(cfg, "agent_factory.sdk_dir") : NULL;
    if (json_is_string(v)) return config_resolve_path(cfg, json_string_value(v));
    const char *env = getenv("AIOS_SDK_DIR");
    if (env && *env) return strdup(env);
    char *d = exe_dir();
    if (!d) return NULL;
    char path[PATH_MAX + 64];
    const char *cands[] = {"%s/sdk/python", "%s/../sdk/python", "%s/../share/aios/sdk/python"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof path, cands[i], d);
        char probe[PATH_MAX + 96];
        snprintf(probe, sizeof probe, "%s/aios_client.py", path);
        if (access(probe, R_OK) == 0) {
            free(d);
            return realpath(path, NULL);
        }
    }
    free(d);
    return NULL;
}

static char *find_agents_dir(const struct aios_config *cfg)
{
    json_t *v = cfg ? config_lookup(cfg, "agent_factory.agents_dir") : NULL;
    if (json_is_string(v) && json_string_length(v)) return config_resolve_path(cfg, json_string_value(v));
    return config_resolve_path(cfg, "agents");
}

static void *reaper_main(void *arg);

/* agent_factory.sandbox (default true), .limits {cpu_s, memory_mb,
 * max_procs, max_file_mb}, .network (package names allowed the host's
 * network, "*" for all). 0 or AIOS_ECONFIG with err. */
static int parse_settings(const struct aios_config *cfg, bool *sandbox, struct tool_limits *lim,
                          json_t **network, char *err, size_t errlen)
{
    *sandbox = true;
    *lim = (struct tool_limits){.cpu_s = 0, .mem_bytes = (size_t)4096 << 20, .max_procs = 256,
                                .max_file_bytes = (size_t)1024 << 20};
    *network = NULL;
    json_t *v = cfg ? config_lookup(cfg, "agent_factory.sandbox") : NULL;
    if (v && !json_is_boolean(v)) {
        snprintf(err, errlen, "agent_factory.sandbox must be true or false");
        return AIOS_ECONFIG;
    }
    if (v) *sandbox = json_is_true(v);
    json_t *l = cfg ? config_lookup(cfg, "agent_factory.limits") : NULL;
    if (l && !json_is_object(l)) {
        snprintf(err, errlen, "agent_factory.limits must be a map {cpu_s, memory_mb, max_procs, "
                 "max_file_mb}");
        return AIOS_ECONFIG;
    }
    const char *keys[] = {"cpu_s", "memory_mb", "max_procs", "max_file_mb"};
    for (int i = 0; l && i < 4; i++) {
        json_t *x = json_object_get(l, keys[i]);
        if (!x) continue;
        if (!json_is_integer(x) || json_integer_value(x) < 0) {
            snprintf(err, errlen, "agent_factory.limits.%s must be a whole number >= 0 (0: none)",
                     keys[i]);
            return AIOS_ECONFIG;
        }
        json_int_t n = json_integer_value(x);
        if (i == 0) lim->cpu_s = n > 1 << 30 ? 1 << 30 : (int)n;
        if (i == 1) lim->mem_bytes = (size_t)n << 20;
        if (i == 2) lim->max_procs = n > 1 << 20 ? 1 << 20 : (int)n;
        if (i == 3) lim->max_file_bytes = (size_t)n << 20;
    }
    json_t *n = cfg ? config_lookup(cfg, "agent_factory.network") : NULL;
    size_t i;
    json_t *x;
    if (n && !json_is_array(n)) {
        snprintf(err, errlen, "agent_factory.network must be a list of agent package names (\"*\": "
                 "all) allowed the host's network");
        return AIOS_ECONFIG;
    }
    json_array_foreach(n, i, x) if (!json_is_string(x))
    {
        snprintf(err, errlen, "agent_factory.network[%zu] must be a package name", i);
        return AIOS_ECONFIG;
    }
    *network = n ? json_deep_copy(n) : json_array();
    return *network ? 0 : AIOS_ENOMEM;
}

int agent_factory_create(struct agent_factory **out, const struct aios_config *cfg, char *err,
                         size_t errlen)
{
    *out = NULL;
    int rc = AIOS_ENOMEM;
    struct agent_factory *f = calloc(1, sizeof *f);
    if (!f) return AIOS_ENOMEM;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cb_done, NULL);
    f->efd = -1;
    f->sock_dfd = -1;
    f->next_id = 1;
    if ((rc = parse_settings(cfg, &f->sandbox, &f->limits, &f->network, err, errlen))) goto fail;
    rc = AIOS_ENOMEM;
    json_t *v = config_lookup(cfg, "agent_factory.agents_dir");
    if (v && !json_is_null(v) && (!json_is_string(v) || json_string_length(v) == 0)) {
        snprintf(err, errlen, "agent_factory.agents_dir must be a folder path (string)");
        rc = AIOS_ECONFIG;
        goto fail;
    }
    f->agents_dir = find_agents_dir(cfg);
    f->runs_dir = config_resolve_path(cfg, "agents/runs");
    f->selected_llms = json_array();
    if (!f->agents_dir || !f->runs_dir || !f->selected_llms) goto fail;
    f->sdk_dir = find_sdk_dir(cfg);
    if (f->sdk_dir) {
        char p[PATH_MAX + 32];
        snprintf(p, sizeof p, "%s/aios_runner.py", f->sdk_dir);
        f->runner = strdup(p);
    } else {
        LOG_WARN("agents", "the Python SDK (sdk/python) was not found; set AIOS_SDK_DIR or "
                 "agent_factory.sdk_dir so Python agents can import aios_client");
    }
    f->sock_dir = config_resolve_path(cfg, "agents/sock");
    if (!f->sock_dir) goto fail;
    if (util_mkdirs(f->runs_dir) || util_mkdirs(f->sock_dir) || chmod(f->runs_dir, 0700) ||
        chmod(f->sock_dir, 0700)) {
        snprintf(err, errlen, "cannot create %s and %s", f->runs_dir, f->sock_dir);
        rc = AIOS_EIO;
        goto fail;
    }
    f->sock_dfd = open(f->sock_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (f->sock_dfd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", f->sock_dir, strerror(errno));
        rc = AIOS_EIO;
        goto fail;
    }
    if (f->sandbox && !tool_sandbox_available(NULL, 0))
        LOG_WARN("agents", "the agent sandbox (bubblewrap) is unavailable: launches are refused "
                 "until it is installed, or set agent_factory.sandbox: false to run agents "
                 "unsandboxed");
    f->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (f->efd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        rc = AIOS_EIO;
        goto fail;
    }
    if (pthread_create(&f->reaper, NULL, reaper_main, f) != 0) {
        snprintf(err, errlen, "cannot start the agent reaper thread");
        rc = AIOS_EIO;
        goto fail;
    }
    f->reaper_started = true;
    *out = f;
    return 0;
fail:
    agent_factory_destroy(f);
    return rc;
}

static void wake(struct agent_factory *f)
{
    uint64_t one = 1;
    if (f->efd >= 0 && write(f->efd, &one, sizeof one) < 0) { /* full counter: already awake */
    }
}

static char *read_result(struct agent_proc *p)
{
    char path[PATH_MAX + 32];
    size_t n = 0;
    snprintf(path, sizeof path, "%s/result", p->run_dir);
    char *r = read_small_file(path, RESULT_MAX, &n);
    if (r && n > 0) {
        while (n && (r[n - 1] == '\n' || r[n - 1] == '\r')) r[--n] = 0;
        return r;
    }
    free(r);
    /* last non-empty line of stdout: read the tail */
    snprintf(path, sizeof path, "%s/stdout.log", p->run_dir);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    long from = size > RESULT_MAX ? size - RESULT_MAX : 0;
    fseek(f, from, SEEK_SET);
    char *buf = malloc(RESULT_MAX + 1);
    n = buf ? fread(buf, 1, RESULT_MAX, f) : 0;
    fclose(f);
    if (!buf) return NULL;
    buf[n] = 0;
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) buf[--n] = 0;
    char *nl = strrchr(buf, '\n');
    char *line = strdup(nl ? nl + 1 : buf);
    free(buf);
    if (line && !*line) {
        free(line);
        return NULL;
    }
    return line;
}

/* the run's channel ends: no new connection can reach the kernel as it */
static void close_channel(struct agent_factory *f, struct agent_proc *p)
{
    if (p->lfd >= 0) close(p->lfd);
    p->lfd = -1;
    if (p->sock_name[0] && f->sock_dfd >= 0) unlinkat(f->sock_dfd, p->sock_name, 0);
    p->sock_name[0] = 0;
}

/* Signal a running agent. SIGKILL ends the whole sandbox at once (bwrap's
 * process group; its pid 1 follows by PR_SET_PDEATHSIG, then everything in
 * its pid namespace; the pids cgroup when there is one). Other signals go
 * to `aios forward`, the sandbox's pid 1, which relays them to the agent's
 * process group. With f->mu held (the pid is not reaped yet). */
static bool catches(pid_t pid, int sig)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *fp = fopen(path, "re");
    unsigned long long mask = 0;
    while (fp && fgets(line, sizeof line, fp))
        if (sscanf(line, "SigCgt: %llx", &mask) == 1) break;
    if (fp) fclose(fp);
    return (mask >> (sig - 1)) & 1;
}

static void signal_proc(struct agent_proc *p, int sig)
{
    p->sent_sig = sig;
    p->pending_sig = 0;
    if (sig == SIGKILL || p->inner <= 0) {
        kill(-p->pid, sig);
        kill(p->pid, sig);
    }
    if (sig == SIGKILL) tool_proc_kill(&p->tp);
    if (p->inner <= 0 || sig == SIGKILL) return;
    /* a pid 1 drops signals it has no handler for: right after the start
     * aios forward may not have installed its handlers yet */
    if (catches(p->inner, sig)) {
        kill(p->inner, sig);
        /* the grace before SIGKILL counts from when the agent got it */
        if (p->t_kill_us) p->t_kill_us = util_now_us();
    } else {
        p->pending_sig = sig;
    }
}

/* with f->mu held: reap p if it exited */
static void try_reap(struct agent_factory *f, struct agent_proc *p)
{
    int st;
    pid_t r = waitpid(p->pid, &st, WNOHANG);
    if (r != p->pid) {
        if (r < 0 && errno == ECHILD) { /* someone else reaped it: record what we can */
            p->status = AGENT_STATUS_FAILED;
            p->exit_code = -1;
        } else {
            return;
        }
    } else if (WIFSIGNALED(st)) {
        p->status = AGENT_STATUS_KILLED;
        p->term_signal = WTERMSIG(st);
    } else {
        p->exit_code = WEXITSTATUS(st);
        p->status = p->exit_code == 0 ? AGENT_STATUS_COMPLETED : AGENT_STATUS_FAILED;
        /* aios forward reports an agent ended by signal S as 128+S: killed
         * when that is the signal the kernel sent */
        if (p->sent_sig && p->exit_code == 128 + p->sent_sig) {
            p->status = AGENT_STATUS_KILLED;
            p->term_signal = p->sent_sig;
        }
    }
    memset(p->token, 0, sizeof p->token); /* the run's token dies with it */
    close_channel(f, p);
    p->tp.pid = -1; /* reaped above: tool_proc_reap only removes the cgroup */
    tool_proc_reap(&p->tp);
    p->t_end_wall_us = util_wall_us();
    p->t_end_us = util_now_us();
    if (p->pidfd >= 0) close(p->pidfd);
    p->pidfd = -1;
    /* reading a small file under the lock: bounded (64 KiB), local disk */
    p->result = read_result(p);
    LOG_INFO("agents", "agent %s (execution %llu, pid %d) %s%s", p->agent,
             (unsigned long long)p->id, (int)p->pid, agent_status_name(p->status),
             p->status == AGENT_STATUS_KILLED ? " by a signal" : "");
}

static void *reaper_main(void *arg)
{
    struct agent_factory *f = arg;
    struct pollfd *fds = NULL;
    uint64_t *ids = NULL; /* per poll entry: the run of a channel, 0 for a pidfd */
    size_t cap = 0;
    bool pending = false; /* a signal waits for a pid 1 to take it */
    for (;;) {
        pthread_mutex_lock(&f->mu);
        if (f->stop) {
            pthread_mutex_unlock(&f->mu);
            break;
        }
        if (cap < 2 * f->n_procs + 1) {
            size_t c = (f->n_procs + 1) * 4;
            struct pollfd *q = realloc(fds, c * sizeof *q);
            uint64_t *qi = realloc(ids, c * sizeof *qi);
            if (qi) ids = qi;
            if (q) fds = q;
            if (q && qi) cap = c;
        }
        size_t n = 0;
        if (fds && ids) {
            fds[n++] = (struct pollfd){.fd = f->efd, .events = POLLIN};
            for (size_t i = 0; i < f->n_procs && n + 2 <= cap; i++) {
                struct agent_proc *p = f->procs[i];
                if (p->status != AGENT_STATUS_RUNNING) continue;
                if (p->pidfd >= 0) {
                    ids[n] = 0;
                    fds[n++] = (struct pollfd){.fd = p->pidfd, .events = POLLIN};
                }
                if (p->lfd >= 0) { /* the run's channel */
                    ids[n] = p->id;
                    fds[n++] = (struct pollfd){.fd = p->lfd, .events = POLLIN};
                }
            }
        }
        pthread_mutex_unlock(&f->mu);
        /* pidfds and channels are closed only by this thread, so they stay
         * valid here */
        int pr = fds && ids ? poll(fds, n, pending ? 20 : 500) : (usleep(100000), 0);
        if (pr > 0 && (fds[0].revents & POLLIN)) {
            uint64_t v;
            if (read(f->efd, &v, sizeof v) < 0) { /* spurious: nothing to drain */
            }
        }
        for (size_t i = 1; pr > 0 && i < n; i++) {
            if (!ids[i] || !(fds[i].revents & POLLIN)) continue;
            int c = accept4(fds[i].fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (c < 0) continue;
            pthread_mutex_lock(&f->mu);
            agent_channel_fn cb = f->chan_cb;
            void *ud = f->chan_ud;
            f->in_cb = cb != NULL;
            pthread_mutex_unlock(&f->mu);
            if (!cb) {
                close(c);
                continue;
            }
            cb(ud, c, ids[i]); /* owns c */
            pthread_mutex_lock(&f->mu);
            f->in_cb = false;
            pthread_cond_broadcast(&f->cb_done);
            pthread_mutex_unlock(&f->mu);
        }
        pthread_mutex_lock(&f->mu);
        int64_t now = util_now_us();
        pending = false;
        for (size_t i = 0; i < f->n_procs; i++) {
            struct agent_proc *p = f->procs[i];
            if (p->status != AGENT_STATUS_RUNNING) continue;
            try_reap(f, p);
            if (p->status == AGENT_STATUS_RUNNING && p->pending_sig) {
                pending = true;
                signal_proc(p, p->pending_sig);
            }
            /* a SIGTERM still waiting for the agent's pid 1 to catch it
             * (a loaded machine) gets more time, but not forever */
            if (p->status == AGENT_STATUS_RUNNING && p->t_kill_us && !p->hard_killed &&
                now - p->t_kill_us > (p->pending_sig ? 4 * KILL_GRACE_US : KILL_GRACE_US)) {
                signal_proc(p, SIGKILL);
                p->hard_killed = true;
            }
        }
        pthread_mutex_unlock(&f->mu);
    }
    free(fds);
    free(ids);
    return NULL;
}

void agent_factory_destroy(struct agent_factory *f)
{
    if (!f) return;
    if (f->reaper_started) {
        pthread_mutex_lock(&f->mu);
        f->stop = true;
        pthread_mutex_unlock(&f->mu);
        wake(f);
        pthread_join(f->reaper, NULL);
    }
    /* the reaper is gone: this thread reaps what is left */
    int n_running = 0;
    for (size_t i = 0; i < f->n_procs; i++) {
        struct agent_proc *p = f->procs[i];
        if (p->status != AGENT_STATUS_RUNNING) continue;
        signal_proc(p, SIGTERM);
        n_running++;
    }
    if (n_running) LOG_INFO("agents", "stopping %d running agent(s)", n_running);
    int64_t deadline = util_now_us() + KILL_GRACE_US;
    for (;;) {
        bool any = false;
        for (size_t i = 0; i < f->n_procs; i++) {
            if (f->procs[i]->status != AGENT_STATUS_RUNNING) continue;
            try_reap(f, f->procs[i]);
            any |= f->procs[i]->status == AGENT_STATUS_RUNNING;
        }
        if (!any) break;
        if (util_now_us() > deadline) {
            for (size_t i = 0; i < f->n_procs; i++) {
                struct agent_proc *p = f->procs[i];
                if (p->status != AGENT_STATUS_RUNNING) continue;
                signal_proc(p, SIGKILL);
                int st;
                waitpid(p->pid, &st, 0);
                p->status = AGENT_STATUS_KILLED;
                p->term_signal = SIGKILL;
                close_channel(f, p);
                p->tp.pid = -1;
                tool_proc_reap(&p->tp);
            }
            break;
        }
        usleep(10000);
    }
    for (size_t i = 0; i < f->n_procs; i++) proc_free(f->procs[i]);
    free(f->procs);
    for (size_t i = 0; i < f->n_usage; i++) free(f->usage[i].name);
    free(f->usage);
    json_decref(f->selected_llms);
    free(f->agents_dir);
    free(f->runs_dir);
    free(f->sdk_dir);
    free(f->runner);
    free(f->sock_dir);
    json_decref(f->network);
    if (f->sock_dfd >= 0) close(f->sock_dfd);
    if (f->efd >= 0) close(f->efd);
    pthread_cond_destroy(&f->cb_done);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

void agent_factory_reconfigure(struct agent_factory *f, const struct aios_config *cfg,
                               json_t *changes)
{
    char *dir = find_agents_dir(cfg);
    char *sdk = find_sdk_dir(cfg);
    bool sandbox;
    struct tool_limits lim;
    json_t *net = NULL;
    char err[256];
    if (parse_settings(cfg, &sandbox, &lim, &net, err, sizeof err) != 0) {
        LOG_WARN("agents", "%s; the sandbox settings stay as they were", err);
        json_decref(net);
        net = NULL;
    }
    pthread_mutex_lock(&f->mu);
    if (net) { /* for the next launches */
        if (sandbox != f->sandbox)
            json_array_append_new(changes, json_pack("{s:s,s:b,s:b}", "key", "agent_factory.sandbox",
                                                     "old", f->sandbox, "new", sandbox));
        if (!json_equal(net, f->network))
            json_array_append_new(changes, json_pack("{s:s,s:O,s:O}", "key", "agent_factory.network",
                                                     "old", f->network, "new", net));
        f->sandbox = sandbox;
        f->limits = lim;
        json_t *old = f->network;
        f->network = net;
        net = old;
    }
    if (dir && strcmp(dir, f->agents_dir) != 0) {
        json_array_append_new(changes, json_pack("{s:s,s:s,s:s}", "key", "agent_factory.agents_dir",
                                                 "old", f->agents_dir, "new", dir));
        free(f->agents_dir);
        f->agents_dir = dir;
        dir = NULL;
    }
    if (sdk && (!f->sdk_dir || strcmp(sdk, f->sdk_dir) != 0)) {
        json_array_append_new(changes, json_pack("{s:s,s:s?,s:s}", "key", "agent_factory.sdk_dir",
                                                 "old", f->sdk_dir, "new", sdk));
        char p[PATH_MAX + 32];
        snprintf(p, sizeof p, "%s/aios_runner.py", sdk);
        free(f->sdk_dir);
        free(f->runner);
        f->sdk_dir = sdk;
        f->runner = strdup(p);
        sdk = NULL;
    }
    pthread_mutex_unlock(&f->mu);
    json_decref(net);
    free(dir);
    free(sdk);
}

void agent_factory_agents_dir(struct agent_factory *f, char *out, size_t outlen)
{
    pthread_mutex_lock(&f->mu);
    snprintf(out, outlen, "%s", f->agents_dir);
    pthread_mutex_unlock(&f->mu);
}

/* ---------------------------------------------------------------- launch */

static bool ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static bool is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ref -> package folder (malloc'd) or NULL */
static char *resolve_ref(const char *agents_dir, const char *ref)
{
    char path[PATH_MAX + 256];
    if (ref[0] == '/') return is_dir(ref) ? strdup(ref) : NULL;
    if (path_escapes(ref)) return NULL;
    snprintf(path, sizeof path, "%s/%s", agents_dir, ref);
    if (is_dir(path)) return strdup(path);
    const char *last = strrchr(ref, '/'); /* "author/name" from the hub: try "name" */
    if (last && last[1]) {
        snprintf(path, sizeof path, "%s/%s", agents_dir, last + 1);
        if (is_dir(path)) return strdup(path);
    }
    return NULL;
}

static int make_token(char out[33])
{
    unsigned char b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) return AIOS_EIO;
    for (int i = 0; i < 16; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
    return 0;
}

struct strv {
    char **v;
    size_t n, cap;
};

static int strv_add(struct strv *s, char *owned)
{
    if (!owned) return AIOS_ENOMEM;
    if (s->n + 2 > s->cap) {
        size_t c = s->cap ? s->cap * 2 : 32;
        char **q = realloc(s->v, c * sizeof *q);
        if (!q) {
            free(owned);
            return AIOS_ENOMEM;
        }
        s->v = q;
        s->cap = c;
    }
    s->v[s->n++] = owned;
    s->v[s->n] = NULL;
    return 0;
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    if (vasprintf(&s, f, ap) < 0) s = NULL;
    va_end(ap);
    return s;
}

static void strv_free(struct strv *s)
{
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
}

/* with f->mu held: room for one more process record */
static int reserve_locked(struct agent_factory *f)
{
    if (f->n_procs < f->cap_procs) return 0;
    size_t c = f->cap_procs ? f->cap_procs * 2 : 16;
    struct agent_proc **q = realloc(f->procs, c * sizeof *q);
    if (!q) return AIOS_ENOMEM;
    f->procs = q;
    f->cap_procs = c;
    return 0;
}

/* the package's limits (config.json "limits", same keys as
 * agent_factory.limits) may only lower the operator's */
static void package_limits(json_t *config, struct tool_limits *lim)
{
    json_t *l = json_object_get(config, "limits");
    const char *keys[] = {"cpu_s", "memory_mb", "max_procs", "max_file_mb"};
    for (int i = 0; i < 4; i++) {
        json_t *x = json_object_get(l, keys[i]);
        if (!json_is_integer(x) || json_integer_value(x) <= 0) continue;
        json_int_t n = json_integer_value(x);
        if (i == 0 && (lim->cpu_s == 0 || n < lim->cpu_s)) lim->cpu_s = (int)n;
        if (i == 1 && n < (1 << 30) && (lim->mem_bytes == 0 || (size_t)n << 20 < lim->mem_bytes))
            lim->mem_bytes = (size_t)n << 20;
        if (i == 2 && (lim->max_procs == 0 || n < lim->max_procs)) lim->max_procs = (int)n;
        if (i == 3 && n < (1 << 30) &&
            (lim->max_file_bytes == 0 || (size_t)n << 20 < lim->max_file_bytes))
            lim->max_file_bytes = (size_t)n << 20;
    }
}

static bool network_allowed(json_t *list, const char *name)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) {
        const char *s = json_string_value(v);
        if (s && (!strcmp(s, "*") || !strcmp(s, name))) return true;
    }
    return false;
}

/* The run's channel: a Unix socket in the factory's socket folder (0700),
 * owned by the run's uid, listening; bound through /proc/self/fd/N so a
 * long data_dir does not matter. */
static int open_channel(struct agent_factory *f, struct agent_proc *p, uid_t uid, char *path,
                        size_t pathlen)
{
    snprintf(p->sock_name, sizeof p->sock_name, "%llu", (unsigned long long)p->id);
    unlinkat(f->sock_dfd, p->sock_name, 0); /* left by a killed kernel */
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "/proc/self/fd/%d/%s", f->sock_dfd, p->sock_name);
    p->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (p->lfd < 0 || bind(p->lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(p->lfd, 64) != 0 || fchmodat(f->sock_dfd, p->sock_name, 0600, 0) != 0 ||
        (uid && fchownat(f->sock_dfd, p->sock_name, uid, uid, 0) != 0))
        return AIOS_EIO;
    snprintf(path, pathlen, "%s/%s", f->sock_dir, p->sock_name);
    return 0;
}

/* the port of "http://host:PORT" (0 if none) */
static int url_port(const char *url)
{
    const char *c = strrchr(url, ':');
    return c && c[1] >= '0' && c[1] <= '9' ? atoi(c + 1) : 0;
}

#define AGENT_UID_BASE 200000 /* run N's uid under a root kernel: BASE + N % SPAN */
#define AGENT_UID_SPAN 100000
#define IN_SANDBOX_BIN "/run/aios/aios"
#define IN_SANDBOX_SOCK "/run/aios/kernel.sock"

int agent_submit(struct agent_factory *f, const char *ref, const char *task,
                 const char *kernel_url, uint64_t *id, char *err, size_t errlen)
{
    *id = 0;
    int rc;
    struct agent_pkg pkg;
    memset(&pkg, 0, sizeof pkg);
    struct strv argv = {0}, envp = {0};
    struct agent_proc *p = NULL;
    int out_fd = -1, err_fd = -1;
    char agents_dir[PATH_MAX], sdk_dir[PATH_MAX] = "", runner[PATH_MAX + 32] = "";
    char self[PATH_MAX] = "", sock_path[PATH_MAX + 64] = "";
    bool sandbox;
    struct tool_limits lim;
    json_t *network;

    if (!ref || !*ref) {
        snprintf(err, errlen, "'agent_id' must name an agent package");
        return AIOS_EINVAL;
    }
    pthread_mutex_lock(&f->mu);
    snprintf(agents_dir, sizeof agents_dir, "%s", f->agents_dir);
    if (f->sdk_dir) snprintf(sdk_dir, sizeof sdk_dir, "%s", f->sdk_dir);
    if (f->runner) snprintf(runner, sizeof runner, "%s", f->runner);
    sandbox = f->sandbox;
    lim = f->limits;
    network = json_incref(f->network);
    pthread_mutex_unlock(&f->mu);
    char why[300] = "";
    if (sandbox && !tool_sandbox_available(why, sizeof why)) {
        json_decref(network);
        snprintf(err, errlen, "the agent sandbox is unavailable (%s); agents are not started "
                 "outside it unless the operator sets agent_factory.sandbox: false", why);
        return AIOS_EPERM;
    }

    char *dir = resolve_ref(agents_dir, ref);
    /* then the example agents built next to the binary (build/agents) */
    char *ed = dir ? NULL : exe_dir(), bundled[PATH_MAX + 16] = "";
    if (ed) {
        snprintf(bundled, sizeof bundled, "%s/agents", ed);
        free(ed);
        if (strcmp(bundled, agents_dir) != 0 && is_dir(bundled)) dir = resolve_ref(bundled, ref);
        else bundled[0] = 0;
    }
    /* then the hub's agents (author/name, newest version) */
    if (!dir && f->hub.agent_dir && strchr(ref, '/') && ref[0] != '/') dir = f->hub.agent_dir(f->hub.ud, ref);
    if (dir && !is_dir(dir)) {
        free(dir);
        dir = NULL;
    }
    if (!dir) {
        json_decref(network);
        snprintf(err, errlen, "no agent package '%s' (looked in %s%s%s and the hub; give a folder name there or "
                 "an absolute path to a folder with config.json)", ref, agents_dir,
                 bundled[0] ? " and " : "", bundled);
        return AIOS_ENOTFOUND;
    }
    rc = agent_pkg_load(&pkg, dir, err, errlen);
    free(dir);
    if (rc) {
        json_decref(network);
        return rc == AIOS_ENOTFOUND ? AIOS_EINVAL : rc;
    }
    bool net = !sandbox || network_allowed(network, pkg.name);
    json_decref(network);
    package_limits(pkg.config, &lim);

    p = calloc(1, sizeof *p);
    if (!p) {
        rc = AIOS_ENOMEM;
        goto fail;
    }
    p->pidfd = -1;
    p->lfd = -1;
    p->tp.pid = -1;
    p->tp.fd_in = p->tp.fd_out = p->tp.fd_err = -1;
    p->agent = strdup(pkg.name);
    p->ref = strdup(ref);
    p->dir = strdup(pkg.dir);
    p->task = strdup(task ? task : "");
    p->config = json_incref(pkg.config);
    if (!p->agent || !p->ref || !p->dir || !p->task) {
        rc = AIOS_ENOMEM;
        goto fail;
    }
    if ((rc = make_token(p->token))) {
        snprintf(err, errlen, "cannot draw a random token");
        goto fail;
    }
    pthread_mutex_lock(&f->mu);
    p->id = f->next_id++;
    pthread_mutex_unlock(&f->mu);
    /* its own uid under a root kernel: the run folder is its only
     * writable place, and no other run's or tool's processes share it */
    uid_t uid = geteuid() == 0 && sandbox ? (uid_t)(AGENT_UID_BASE + p->id % AGENT_UID_SPAN) : 0;
    p->run_dir = fmt("%s/%llu", f->runs_dir, (unsigned long long)p->id);
    if (!p->run_dir || util_mkdirs(p->run_dir) || chmod(p->run_dir, 0700) != 0 ||
        (uid && chown(p->run_dir, uid, uid) != 0)) {
        snprintf(err, errlen, "cannot create the run folder for agent %s", pkg.name);
        rc = AIOS_EIO;
        goto fail;
    }
    /* Cerebrum's tool cache, filled from the hub: AutoTool.from_preloaded
     * finds the hub's tools there, offline */
    char cache_home[PATH_MAX + 16] = "";
    if (f->hub.fill_cache) {
        snprintf(cache_home, sizeof cache_home, "%s/.cache", p->run_dir);
        if ((rc = f->hub.fill_cache(f->hub.ud, cache_home, uid, err, errlen))) goto fail;
    }
    /* the aios binary (its `forward` mode): this process, or $AIOS_BIN for
     * programs that link the kernel library (the unit tests) */
    ssize_t sn = readlink("/proc/self/exe", self, sizeof self - 1);
    self[sn > 0 ? sn : 0] = 0;
    const char *base = strrchr(self, '/');
    const char *envbin = getenv("AIOS_BIN");
    if ((!base || strcmp(base, "/aios") != 0) && envbin && envbin[0] == '/')
        snprintf(self, sizeof self, "%s", envbin);
    if (!self[0] || access(self, X_OK) != 0) {
        snprintf(err, errlen, "cannot find the aios binary (/proc/self/exe, $AIOS_BIN)");
        rc = AIOS_EIO;
        goto fail;
    }
    /* the agent's loopback port for the kernel: the kernel's own, so a
     * hard-wired localhost:PORT works too; a port under 1024 cannot be
     * bound without privileges: Cerebrum's default 8000 then */
    int port = url_port(kernel_url);
    if (port < 1024) port = 8000;
    if (!net && open_channel(f, p, uid, sock_path, sizeof sock_path) != 0) {
        snprintf(err, errlen, "cannot make the kernel channel of agent %s: %s", pkg.name,
                 strerror(errno));
        rc = AIOS_EIO;
        goto fail;
    }

    /* argv: aios forward (pid 1: signals, exit status, the channel), then
     * the entry */
    rc = strv_add(&argv, strdup(sandbox ? IN_SANDBOX_BIN : self));
    if (!rc) rc = strv_add(&argv, strdup("forward"));
    if (!rc && !net) {
        rc = strv_add(&argv, strdup("--port"));
        if (!rc) rc = strv_add(&argv, fmt("%d", port));
        if (!rc) rc = strv_add(&argv, strdup("--socket"));
        if (!rc) rc = strv_add(&argv, strdup(IN_SANDBOX_SOCK));
    }
    if (!rc) rc = strv_add(&argv, strdup("--"));
    if (rc) goto fail;
    bool py = ends_with(pkg.entry, ".py");
    if (py) {
        rc = strv_add(&argv, strdup("python3"));
        if (!rc && pkg.module && runner[0]) {
            rc = strv_add(&argv, strdup(runner));
            if (!rc) rc = strv_add(&argv, strdup(pkg.entry));
            if (!rc) rc = strv_add(&argv, strdup(pkg.module));
        } else if (!rc) {
            rc = strv_add(&argv, strdup(pkg.entry));
        }
    } else if (ends_with(pkg.entry, ".sh")) {
        rc = strv_add(&argv, strdup("/bin/sh"));
        if (!rc) rc = strv_add(&argv, strdup(pkg.entry));
    } else {
        if (access(pkg.entry, X_OK) != 0) {
            snprintf(err, errlen, "agent %s: entry %s is not executable (chmod +x it, or use a .py "
                     "or .sh entry)", pkg.name, pkg.entry);
            rc = AIOS_EINVAL;
            goto fail;
        }
        rc = strv_add(&argv, strdup(pkg.entry));
    }
    if (!rc) rc = strv_add(&argv, strdup(p->task));
    if (rc) goto fail;

    /* environment: only ours (the sandbox adds PATH, HOME, LANG). In its
     * own network namespace the agent reaches the kernel at the same port
     * on its loopback, through its channel, and needs no token. */
    char url_in[64];
    snprintf(url_in, sizeof url_in, "http://127.0.0.1:%d", port);
    const char *url = net ? kernel_url : url_in;
    rc = strv_add(&envp, fmt("AIOS_KERNEL_URL=%s", url));
    if (!rc) rc = strv_add(&envp, fmt("CEREBRUM_KERNEL_URL=%s", url));
    if (!rc) rc = strv_add(&envp, fmt("AIOS_AGENT_NAME=%s", pkg.name));
    if (!rc) rc = strv_add(&envp, fmt("AIOS_AGENT_ID=%llu", (unsigned long long)p->id));
    if (!rc && net) rc = strv_add(&envp, fmt("AIOS_AGENT_TOKEN=%s", p->token));
    if (!rc) rc = strv_add(&envp, fmt("AIOS_TASK=%s", p->task));
    if (!rc) rc = strv_add(&envp, fmt("AIOS_RESULT_FILE=%s/result", p->run_dir));
    if (!rc) rc = strv_add(&envp, fmt("AIOS_AGENT_DIR=%s", pkg.dir));
    if (!rc && cache_home[0]) rc = strv_add(&envp, fmt("XDG_CACHE_HOME=%s", cache_home));
    if (!rc) rc = strv_add(&envp, strdup("PYTHONUNBUFFERED=1"));
    if (!rc) rc = strv_add(&envp, strdup("PYTHONDONTWRITEBYTECODE=1"));
    if (!rc)
        rc = strv_add(&envp, fmt("PYTHONPATH=%s%s%s", sdk_dir, sdk_dir[0] ? ":" : "", pkg.dir));
#if defined(__SANITIZE_ADDRESS__)
    /* an AddressSanitizer build's `aios forward`: LeakSanitizer cannot stop
     * the world inside the sandbox's pid namespace */
    if (!rc) rc = strv_add(&envp, strdup("ASAN_OPTIONS=detect_leaks=0"));
#endif
    if (rc) goto fail;

    char out_path[PATH_MAX + 32], err_path[PATH_MAX + 32];
    snprintf(out_path, sizeof out_path, "%s/stdout.log", p->run_dir);
    snprintf(err_path, sizeof err_path, "%s/stderr.log", p->run_dir);
    out_fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    err_fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out_fd < 0 || err_fd < 0) {
        snprintf(err, errlen, "cannot create the logs of agent %s: %s", pkg.name, strerror(errno));
        rc = AIOS_EIO;
        goto fail;
    }
    /* what the sandbox shows besides the system (read-only) and the run
     * folder (writable): the package, the Python SDK, the aios binary,
     * the channel; nothing else of data_dir */
    struct tool_bind binds[4];
    size_t nb = 0;
    binds[nb++] = (struct tool_bind){pkg.dir, pkg.dir, false};
    if (sdk_dir[0] && is_dir(sdk_dir)) binds[nb++] = (struct tool_bind){sdk_dir, sdk_dir, false};
    binds[nb++] = (struct tool_bind){self, IN_SANDBOX_BIN, false};
    if (!net) binds[nb++] = (struct tool_bind){sock_path, IN_SANDBOX_SOCK, false};
    struct tool_spawn_opts o = {
        .argv = argv.v, .cwd = sandbox ? NULL : p->run_dir, .rw_dir = p->run_dir,
        .network = net, .sandbox = sandbox, .limits = lim, .binds = binds, .n_binds = nb,
        .env = envp.v, .home = p->run_dir, .hostname = "aios-agent", .uid = uid,
        .out_fd = out_fd, .err_fd = err_fd, .as_pid1 = true, .want_inner_pid = sandbox,
        .outlive_thread = true};
#if defined(__SANITIZE_ADDRESS__)
    /* an AddressSanitizer build's `aios forward` (the sandbox's pid 1) maps
     * terabytes of shadow memory at start: no RLIMIT_AS in such a build */
    o.limits.mem_bytes = 0;
#endif
    /* spawned outside the lock (bwrap's info takes a moment); until the
     * record is in the table nobody else can reap or signal the pid */
    pthread_mutex_lock(&f->mu);
    rc = reserve_locked(f);
    pthread_mutex_unlock(&f->mu);
    if (rc) goto fail;
    char serr[512] = "";
    rc = tool_proc_spawn(&p->tp, &o, serr, sizeof serr);
    if (rc) {
        snprintf(err, errlen, "cannot start agent %s: %s", pkg.name, serr);
        rc = rc == AIOS_ENOMEM ? rc : AIOS_EIO;
        goto fail;
    }
    pid_t pid = p->tp.pid;
    p->pid = pid;
    p->inner = sandbox ? p->tp.inner_pid : pid;
    if (sandbox && p->inner <= 0)
        LOG_WARN("agents", "agent %s (execution %llu): bwrap did not report its pid 1; signals "
                 "other than SIGKILL reach only bwrap", pkg.name, (unsigned long long)p->id);
    p->pidfd = pidfd_open(pid, 0); /* -1 on old kernels: the reaper's 500 ms poll still reaps */
    if (p->pidfd >= 0) fcntl(p->pidfd, F_SETFD, FD_CLOEXEC);
    p->status = AGENT_STATUS_RUNNING;
    p->t_start_wall_us = util_wall_us();
    p->t_start_us = util_now_us();
    pthread_mutex_lock(&f->mu);
    if (reserve_locked(f) != 0) { /* another submit took the room */
        pthread_mutex_unlock(&f->mu);
        signal_proc(p, SIGKILL);
        tool_proc_reap(&p->tp);
        p->pid = -1;
        rc = AIOS_ENOMEM;
        goto fail;
    }
    f->procs[f->n_procs++] = p;
    *id = p->id;
    pthread_mutex_unlock(&f->mu);
    wake(f);
    LOG_INFO("agents", "started agent %s (execution %llu, pid %d, %s%s%s): %s", pkg.name,
             (unsigned long long)p->id, (int)pid, sandbox ? "sandboxed" : "NOT sandboxed",
             net ? ", host network" : ", own network namespace",
             uid ? ", own uid" : "", pkg.entry);
    p = NULL;
    rc = 0;
fail:
    if (out_fd >= 0) close(out_fd);
    if (err_fd >= 0) close(err_fd);
    if (p) close_channel(f, p);
    strv_free(&argv);
    strv_free(&envp);
    proc_free(p);
    agent_pkg_free(&pkg);
    if (rc == AIOS_ENOMEM && !err[0]) snprintf(err, errlen, "out of memory");
    return rc;
}

/* ---------------------------------------------------------------- queries */

static struct agent_proc *find_locked(struct agent_factory *f, uint64_t id)
{
    for (size_t i = 0; i < f->n_procs; i++)
        if (f->procs[i]->id == id) return f->procs[i];
    return NULL;
}

static json_t *iso_time(int64_t wall_us)
{
    if (!wall_us) return json_null();
    char buf[40];
    return json_string(util_iso_time(buf, sizeof buf, wall_us));
}

static json_t *usage_json(const struct agent_usage *u)
{
    json_t *calls = json_object();
    int64_t total = 0;
    for (int k = 0; k < SYSCALL_KIND__COUNT; k++) {
        json_object_set_new(calls, syscall_kind_name(k), json_integer(u->n_calls[k]));
        total += u->n_calls[k];
    }
    return json_pack("{s:I,s:o,s:I,s:I,s:I,s:f,s:f}", "syscalls", (json_int_t)total, "by_kind",
                     calls, "errors", (json_int_t)u->n_errors, "prompt_tokens",
                     (json_int_t)u->prompt_tokens, "completion_tokens",
                     (json_int_t)u->completion_tokens, "waiting_time_s", u->wait_s,
                     "turnaround_time_s", u->turnaround_s);
}

/* result: JSON when it parses as an object or array, else the string */
static json_t *result_json(const char *s)
{
    if (!s) return json_null();
    json_t *j = json_loads(s, JSON_DECODE_ANY, NULL);
    if (j && (json_is_object(j) || json_is_array(j))) return j;
    json_decref(j);
    j = json_string(s);
    return j ? j : json_string("(result is not valid UTF-8)");
}

static json_t *proc_json_locked(struct agent_proc *p)
{
    json_t *o = json_object();
    json_object_set_new(o, "execution_id", json_integer((json_int_t)p->id));
    json_object_set_new(o, "agent_id", json_string(p->ref));
    json_object_set_new(o, "agent_name", json_string(p->agent));
    json_object_set_new(o, "status", json_string(agent_status_name(p->status)));
    json_object_set_new(o, "pid", json_integer(p->pid));
    json_object_set_new(o, "task", p->task ? json_string(p->task) : json_null());
    json_object_set_new(o, "start_time", iso_time(p->t_start_wall_us));
    json_object_set_new(o, "end_time", iso_time(p->t_end_wall_us));
    int64_t end = p->t_end_us ? p->t_end_us : util_now_us();
    json_object_set_new(o, "elapsed_s", json_real((double)(end - p->t_start_us) / 1e6));
    json_object_set_new(o, "exit_code", p->status == AGENT_STATUS_COMPLETED ||
                                                p->status == AGENT_STATUS_FAILED
                                            ? json_integer(p->exit_code)
                                            : json_null());
    json_object_set_new(o, "signal", p->status == AGENT_STATUS_KILLED ? json_integer(p->term_signal)
                                                                      : json_null());
    json_object_set_new(o, "result", result_json(p->result));
    json_object_set_new(o, "config", json_pack("{s:s}", "task", p->task));
    json_object_set_new(o, "package", json_string(p->dir));
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/stdout.log", p->run_dir);
    json_object_set_new(o, "stdout_log", json_string(path));
    snprintf(path, sizeof path, "%s/stderr.log", p->run_dir);
    json_object_set_new(o, "stderr_log", json_string(path));
    json_object_set_new(o, "usage", usage_json(&p->usage));
    return o;
}

json_t *agent_proc_json(struct agent_factory *f, uint64_t id)
{
    pthread_mutex_lock(&f->mu);
    struct agent_proc *p = find_locked(f, id);
    json_t *o = p ? proc_json_locked(p) : NULL;
    pthread_mutex_unlock(&f->mu);
    return o;
}

json_t *agent_ps_json(struct agent_factory *f)
{
    json_t *a = json_array();
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < f->n_procs; i++) json_array_append_new(a, proc_json_locked(f->procs[i]));
    pthread_mutex_unlock(&f->mu);
    return a;
}

int agent_kill(struct agent_factory *f, uint64_t id, int sig)
{
    int rc = 0;
    pthread_mutex_lock(&f->mu);
    struct agent_proc *p = find_locked(f, id);
    if (!p) rc = AIOS_ENOTFOUND;
    else if (p->status != AGENT_STATUS_RUNNING) rc = AIOS_EINVAL;
    else {
        signal_proc(p, sig);
        if (sig == SIGTERM && !p->t_kill_us) p->t_kill_us = util_now_us();
    }
    pthread_mutex_unlock(&f->mu);
    if (!rc) wake(f);
    return rc;
}

void agent_cleanup(struct agent_factory *f, int *n_killed, int *n_removed)
{
    *n_killed = *n_removed = 0;
    pthread_mutex_lock(&f->mu);
    size_t w = 0;
    for (size_t i = 0; i < f->n_procs; i++) {
        struct agent_proc *p = f->procs[i];
        if (p->status == AGENT_STATUS_RUNNING) {
            signal_proc(p, SIGTERM);
            if (!p->t_kill_us) p->t_kill_us = util_now_us();
            (*n_killed)++;
            f->procs[w++] = p;
        } else {
            proc_free(p);
            (*n_removed)++;
        }
    }
    f->n_procs = w;
    pthread_mutex_unlock(&f->mu);
    wake(f);
}

int agent_log_read(struct agent_factory *f, uint64_t id, const char *which, int64_t offset,
                   size_t max, char **data, size_t *n, int64_t *next)
{
    *data = NULL;
    *n = 0;
    *next = offset;
    char path[PATH_MAX + 32];
    pthread_mutex_lock(&f->mu);
    struct agent_proc *p = find_locked(f, id);
    if (p) snprintf(path, sizeof path, "%s/%s.log", p->run_dir, which);
    pthread_mutex_unlock(&f->mu);
    if (!p) return AIOS_ENOTFOUND;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    char *buf = malloc(max + 1);
    if (!buf) {
        if (fd >= 0) close(fd);
        return AIOS_ENOMEM;
    }
    ssize_t r = 0;
    if (fd >= 0) {
        r = pread(fd, buf, max, offset < 0 ? 0 : offset);
        close(fd);
        if (r < 0) r = 0;
    }
    size_t len = (size_t)r;
    /* end on a character boundary: drop an unfinished UTF-8 sequence */
    size_t back = 0;
    while (back < 4 && back < len && ((unsigned char)buf[len - 1 - back] & 0xC0) == 0x80) back++;
    if (back < len) {
        unsigned char lead = (unsigned char)buf[len - 1 - back];
        size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
        if (lead >= 0xC0 && need > back + 1 && len == max) len -= back + 1;
    }
    buf[len] = 0;
    *data = buf;
    *n = len;
    *next = (offset < 0 ? 0 : offset) + (int64_t)len;
    return 0;
}

uint64_t agent_find_token(struct agent_factory *f, const char *token)
{
    if (!token || strlen(token) != 32) return 0;
    uint64_t id = 0;
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < f->n_procs; i++) {
        unsigned char d = 0;
        for (int j = 0; j < 32; j++) d |= (unsigned char)(f->procs[i]->token[j] ^ token[j]);
        if (d == 0 && f->procs[i]->status == AGENT_STATUS_RUNNING) id = f->procs[i]->id;
    }
    pthread_mutex_unlock(&f->mu);
    return id;
}

bool agent_run_identity(struct agent_factory *f, uint64_t id, char *name, size_t namelen)
{
    bool ok = false;
    pthread_mutex_lock(&f->mu);
    struct agent_proc *p = find_locked(f, id);
    if (p && p->status == AGENT_STATUS_RUNNING) {
        snprintf(name, namelen, "%s", p->agent);
        ok = true;
    }
    pthread_mutex_unlock(&f->mu);
    return ok;
}

void agent_set_channel(struct agent_factory *f, agent_channel_fn cb, void *ud)
{
    if (!f) return;
    pthread_mutex_lock(&f->mu);
    f->chan_cb = cb;
    f->chan_ud = ud;
    while (!cb && f->in_cb) pthread_cond_wait(&f->cb_done, &f->mu);
    pthread_mutex_unlock(&f->mu);
}

static void usage_add(struct agent_usage *u, enum syscall_kind kind, bool ok, double w, double t,
                      int pt, int ct)
{
    if ((unsigned)kind < SYSCALL_KIND__COUNT) u->n_calls[kind]++;
    if (!ok) u->n_errors++;
    u->wait_s += w;
    u->turnaround_s += t;
    u->prompt_tokens += pt;
    u->completion_tokens += ct;
}

void agent_account(struct agent_factory *f, uint64_t run, const char *token, const char *agent,
                   enum syscall_kind kind, bool ok, double wait_s, double turnaround_s,
                   int prompt_tokens, int completion_tokens)
{
    if (!f || !agent) return;
    uint64_t id = run ? run : agent_find_token(f, token);
    pthread_mutex_lock(&f->mu);
    if (id) {
        struct agent_proc *p = find_locked(f, id);
        if (p) usage_add(&p->usage, kind, ok, wait_s, turnaround_s, prompt_tokens, completion_tokens);
    }
    struct usage_entry *e = NULL;
    for (size_t i = 0; i < f->n_usage; i++)
        if (!strcmp(f->usage[i].name, agent)) e = &f->usage[i];
    if (!e && f->n_usage < 4096) { /* bounded: names come from requests */
        if (f->n_usage == f->cap_usage) {
            size_t c = f->cap_usage ? f->cap_usage * 2 : 16;
            struct usage_entry *q = realloc(f->usage, c * sizeof *q);
            if (q) {
                f->usage = q;
                f->cap_usage = c;
            }
        }
        if (f->n_usage < f->cap_usage) {
            char *name = strdup(agent);
            if (name) {
                e = &f->usage[f->n_usage++];
                memset(e, 0, sizeof *e);
                e->name = name;
            }
        }
    }
    if (e) usage_add(&e->u, kind, ok, wait_s, turnaround_s, prompt_tokens, completion_tokens);
    pthread_mutex_unlock(&f->mu);
}

json_t *agent_accounting_json(struct agent_factory *f)
{
    json_t *o = json_object();
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < f->n_usage; i++)
        json_object_set_new(o, f->usage[i].name, usage_json(&f->usage[i].u));
    pthread_mutex_unlock(&f->mu);
    return o;
}

void agent_select_llms(struct agent_factory *f, json_t *llms)
{
    json_t *copy = json_is_array(llms) ? json_deep_copy(llms) : json_array();
    if (!copy) return;
    pthread_mutex_lock(&f->mu);
    json_t *old = f->selected_llms;
    f->selected_llms = copy;
    pthread_mutex_unlock(&f->mu);
    json_decref(old);
}

json_t *agent_selected_llms(struct agent_factory *f)
{
    pthread_mutex_lock(&f->mu);
    json_t *s = json_deep_copy(f->selected_llms);
    pthread_mutex_unlock(&f->mu);
    return s ? s : json_array();
}
