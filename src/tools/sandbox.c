/* The tool sandbox: runs external tools and MCP servers as child processes
 * under bubblewrap.
 *
 * What a sandboxed process sees (bwrap arguments built in build_argv):
 *   - the system read-only: /usr /bin /sbin /lib* /etc (whatever exists);
 *   - a private /tmp (tmpfs), fresh /proc and a minimal /dev;
 *   - the tool's own folder (or its program's folder) read-only;
 *   - exactly one writable directory: the calling agent's storage root
 *     (storage.root_dir/<agent>), created if missing; nothing else;
 *   - no network (--unshare-net) unless the tool declares network: true;
 *   - new pid, ipc and uts namespaces, a new session (no terminal
 *     injection), and --die-with-parent so nothing outlives us;
 *   - a scrubbed environment: PATH, HOME=/tmp, LANG, plus what the caller
 *     adds (AIOS_AGENT, AIOS_TOOL).
 * Limits, set in the child between fork and exec so they bind bwrap and
 * everything below it: RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_CORE=0.
 * The process count is bounded by a pids cgroup made per process (v1
 * /sys/fs/cgroup/pids or a v2 hierarchy with the pids controller) when we
 * may create one, which also works for root (for whom RLIMIT_NPROC is not
 * enforced); otherwise by RLIMIT_NPROC when not root; otherwise it is not
 * bounded and start-up logs a warning. tool_sandbox_pids_mode() says which.
 *
 * Inherited descriptors: the child closes every fd above 2 before exec,
 * so the kernel's listening socket and open files never reach a tool.
 *
 * Killing: SIGKILL to bwrap's process group and to every pid in the
 * cgroup; the pid namespace takes the rest with it.
 *
 * Threads: any thread may spawn/run; state here is the one-time probe
 * (pthread_once) and an atomic counter for cgroup names. The child between
 * fork and exec only calls async-signal-safe functions (the argv and env
 * are built before fork). */
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
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static pthread_once_t g_probe_once = PTHREAD_ONCE_INIT;
static char g_bwrap[PATH_MAX];
static bool g_bwrap_ok;
static char g_bwrap_why[256];
static char g_cg_base[PATH_MAX]; /* parent dir for our pids cgroups, "" if none */
static const char *g_pids_mode = "none";
static atomic_uint g_cg_seq;

static bool path_exec(const char *p) { return access(p, X_OK) == 0; }

static int write_file(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = write(fd, s, strlen(s));
    close(fd);
    return n == (ssize_t)strlen(s) ? 0 : -1;
}

static void probe_cgroup(void)
{
    char dir[PATH_MAX];
    /* cgroup v1 pids hierarchy */
    snprintf(dir, sizeof dir, "/sys/fs/cgroup/pids/aios-tools-%d", (int)getpid());
    if (access("/sys/fs/cgroup/pids/cgroup.procs", W_OK) == 0 && (mkdir(dir, 0755) == 0 || errno == EEXIST)) {
        char f[PATH_MAX + 16];
        snprintf(f, sizeof f, "%s/pids.max", dir);
        if (access(f, W_OK) == 0) {
            snprintf(g_cg_base, sizeof g_cg_base, "%s", dir);
            return;
        }
        rmdir(dir);
    }
    /* cgroup v2: our own cgroup must delegate pids to children */
    FILE *fp = fopen("/proc/self/cgroup", "r");
    char line[1024], own[900] = "";
    while (fp && fgets(line, sizeof line, fp))
        if (!strncmp(line, "0::", 3)) {
            snprintf(own, sizeof own, "%.800s", line + 3);
            own[strcspn(own, "\n")] = 0;
        }
    if (fp) fclose(fp);
    if (!own[0]) return;
    const char *roots[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
    for (int i = 0; i < 2; i++) {
        snprintf(dir, sizeof dir, "%s%s/aios-tools-%d", roots[i], strcmp(own, "/") ? own : "",
                 (int)getpid());
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) continue;
        char f[PATH_MAX + 32];
        snprintf(f, sizeof f, "%s/cgroup.subtree_control", dir);
        write_file(f, "+pids");
        snprintf(f, sizeof f, "%s/pids.max", dir);
        /* children of dir get pids.max only if pids is enabled in dir */
        char probe[PATH_MAX + 8];
        snprintf(probe, sizeof probe, "%s/probe", dir);
        if (mkdir(probe, 0755) == 0) {
            snprintf(f, sizeof f, "%s/pids.max", probe);
            bool ok = access(f, W_OK) == 0;
            rmdir(probe);
            if (ok) {
                snprintf(g_cg_base, sizeof g_cg_base, "%s", dir);
                return;
            }
        }
        rmdir(dir);
    }
}

static void probe(void)
{
    const char *cands[] = {"/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap"};
    for (size_t i = 0; i < 3; i++)
        if (path_exec(cands[i])) {
            snprintf(g_bwrap, sizeof g_bwrap, "%s", cands[i]);
            break;
        }
    if (!g_bwrap[0]) {
        snprintf(g_bwrap_why, sizeof g_bwrap_why,
                 "bubblewrap (bwrap) is not installed; scripts/deps.sh installs it");
    } else {
        /* a real trial run: namespaces may be forbidden here */
        char cmd[PATH_MAX + 256];
        snprintf(cmd, sizeof cmd,
                 "%s --ro-bind / / --proc /proc --dev /dev --unshare-pid --unshare-net "
                 "--die-with-parent /bin/true >/dev/null 2>&1",
                 g_bwrap);
        int st = system(cmd);
        if (st == 0) g_bwrap_ok = true;
        else
            snprintf(g_bwrap_why, sizeof g_bwrap_why,
                     "bwrap cannot create namespaces here (exit status %d); tools that need the "
                     "sandbox are refused", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }
    probe_cgroup();
    if (g_cg_base[0]) g_pids_mode = "cgroup";
    else if (geteuid() != 0) g_pids_mode = "rlimit";
    else g_pids_mode = "none";
    if (!strcmp(g_pids_mode, "none"))
        LOG_WARN("tools", "cannot create a pids cgroup and RLIMIT_NPROC does not bind root: "
                 "the number of processes of a sandboxed tool is NOT bounded");
    else
        LOG_INFO("tools", "sandbox: bwrap %s, process count bounded by %s%s%s",
                 g_bwrap_ok ? "ok" : "unavailable", g_pids_mode, g_cg_base[0] ? " under " : "",
                 g_cg_base);
}

bool tool_sandbox_available(char *why, size_t whylen)
{
    pthread_once(&g_probe_once, probe);
    if (why && whylen) snprintf(why, whylen, "%s", g_bwrap_why);
    return g_bwrap_ok;
}

const char *tool_sandbox_pids_mode(void)
{
    pthread_once(&g_probe_once, probe);
    return g_pids_mode;
}

/* ---- argv building ---- */

struct strv {
    char **v;
    size_t n, cap;
    bool oom;
};

static void sv_push(struct strv *s, const char *x)
{
    if (s->oom) return;
    if (s->n + 2 > s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 64;
        char **nv = realloc(s->v, nc * sizeof *nv);
        if (!nv) {
            s->oom = true;
            return;
        }
        s->v = nv;
        s->cap = nc;
    }
    s->v[s->n] = strdup(x);
    if (!s->v[s->n]) {
        s->oom = true;
        return;
    }
    s->v[++s->n] = NULL;
}

static void sv_free(struct strv *s)
{
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

static bool under_system(const char *p)
{
    const char *sys[] = {"/usr/", "/bin/", "/sbin/", "/lib", "/etc/"};
    for (size_t i = 0; i < 5; i++)
        if (!strncmp(p, sys[i], strlen(sys[i]))) return true;
    return false;
}

static void build_argv(struct strv *s, const struct tool_spawn_opts *o)
{
    if (!o->sandbox) {
        for (size_t i = 0; o->argv[i]; i++) sv_push(s, o->argv[i]);
        return;
    }
    sv_push(s, g_bwrap);
    const char *ro[] = {"/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/etc"};
    for (size_t i = 0; i < sizeof ro / sizeof ro[0]; i++) {
        struct stat st;
        if (lstat(ro[i], &st) != 0) continue;
        if (S_ISLNK(st.st_mode)) {
            char tgt[PATH_MAX];
            ssize_t n = readlink(ro[i], tgt, sizeof tgt - 1);
            if (n <= 0) continue;
            tgt[n] = 0;
            sv_push(s, "--symlink");
            sv_push(s, tgt);
            sv_push(s, ro[i]);
        } else {
            sv_push(s, "--ro-bind");
            sv_push(s, ro[i]);
            sv_push(s, ro[i]);
        }
    }
    static const char *fixed[] = {"--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
                                  "--tmpfs", "/run", "--unshare-pid", "--unshare-ipc",
                                  "--unshare-uts", "--unshare-cgroup-try", "--new-session",
                                  "--die-with-parent", "--hostname", "aios-tool"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) sv_push(s, fixed[i]);
    if (!o->network) sv_push(s, "--unshare-net");
    /* the program's own folder, read-only, when it is not a system path */
    const char *prog = o->argv[0];
    if (prog[0] == '/' && !under_system(prog)) {
        char d[PATH_MAX];
        snprintf(d, sizeof d, "%s", prog);
        char *sl = strrchr(d, '/');
        if (sl && sl != d) {
            *sl = 0;
            if (!o->cwd || strcmp(d, o->cwd)) {
                sv_push(s, "--ro-bind");
                sv_push(s, d);
                sv_push(s, d);
            }
        }
    }
    if (o->cwd) {
        sv_push(s, "--ro-bind");
        sv_push(s, o->cwd);
        sv_push(s, o->cwd);
    }
    if (o->rw_dir) {
        sv_push(s, "--bind");
        sv_push(s, o->rw_dir);
        sv_push(s, o->rw_dir);
    }
    const char *wd = o->rw_dir ? o->rw_dir : o->cwd ? o->cwd : "/tmp";
    sv_push(s, "--chdir");
    sv_push(s, wd);
    sv_push(s, "--");
    for (size_t i = 0; o->argv[i]; i++) sv_push(s, o->argv[i]);
}

void tool_sandbox_cleanup(void)
{
    if (g_cg_base[0]) rmdir(g_cg_base); /* fails (EBUSY) while a call runs: fine */
}

static int make_cgroup(struct tool_proc *p, int max_procs)
{
    p->cgroup[0] = 0;
    if (!g_cg_base[0] || max_procs <= 0) return 0;
    char dir[256], f[300], v[32];
    /* the base may have been removed by tool_sandbox_cleanup */
    if (mkdir(g_cg_base, 0755) == 0) {
        snprintf(f, sizeof f, "%.250s/cgroup.subtree_control", g_cg_base);
        write_file(f, "+pids");
    }
    snprintf(dir, sizeof dir, "%.200s/p%u", g_cg_base, atomic_fetch_add(&g_cg_seq, 1));
    if (mkdir(dir, 0755) != 0) return AIOS_EIO;
    snprintf(f, sizeof f, "%s/pids.max", dir);
    snprintf(v, sizeof v, "%d", max_procs);
    if (write_file(f, v) != 0) {
        rmdir(dir);
        return AIOS_EIO;
    }
    snprintf(p->cgroup, sizeof p->cgroup, "%s", dir);
    return 0;
}

static void kill_cgroup(const char *dir)
{
    if (!dir[0]) return;
    char f[300];
    snprintf(f, sizeof f, "%s/cgroup.kill", dir);
    if (write_file(f, "1") == 0) return; /* v2 with cgroup.kill */
    snprintf(f, sizeof f, "%s/cgroup.procs", dir);
    for (int round = 0; round < 50; round++) {
        FILE *fp = fopen(f, "r");
        if (!fp) return;
        int pid, n = 0;
        while (fscanf(fp, "%d", &pid) == 1) {
            kill(pid, SIGKILL);
            n++;
        }
        fclose(fp);
        if (!n) return;
        usleep(2000);
    }
}

static void set_rlimit(int res, rlim_t v)
{
    struct rlimit rl = {v, v};
    setrlimit(res, &rl);
}

int tool_proc_spawn(struct tool_proc *p, const struct tool_spawn_opts *o, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    p->pid = -1;
    p->fd_in = p->fd_out = p->fd_err = -1;
    pthread_once(&g_probe_once, probe);
    if (!o->argv || !o->argv[0]) {
        snprintf(err, errlen, "no program to run");
        return AIOS_EINVAL;
    }
    if (o->sandbox && !g_bwrap_ok) {
        snprintf(err, errlen, "the tool sandbox is unavailable: %s", g_bwrap_why);
        return AIOS_EPERM;
    }
    int in[2] = {-1, -1}, out[2] = {-1, -1}, er[2] = {-1, -1};
    struct strv av = {0}, env = {0};
    int rc = AIOS_EIO;
    build_argv(&av, o);
    sv_push(&env, "PATH=/usr/local/bin:/usr/bin:/bin");
    sv_push(&env, "HOME=/tmp");
    sv_push(&env, "LANG=C.UTF-8");
    char kv[600];
    if (o->agent) {
        snprintf(kv, sizeof kv, "AIOS_AGENT=%.500s", o->agent);
        sv_push(&env, kv);
    }
    if (o->tool) {
        snprintf(kv, sizeof kv, "AIOS_TOOL=%.500s", o->tool);
        sv_push(&env, kv);
    }
    if (av.oom || env.oom || !av.v) {
        rc = AIOS_ENOMEM;
        goto fail;
    }
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(er, O_CLOEXEC)) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        goto fail;
    }
    if (make_cgroup(p, o->limits.max_procs) != 0)
        LOG_WARN("tools", "could not create a pids cgroup under %s; process count unbounded for "
                 "this call", g_cg_base);
    char cgprocs[300] = "";
    if (p->cgroup[0]) snprintf(cgprocs, sizeof cgprocs, "%s/cgroup.procs", p->cgroup);
    bool nproc = !p->cgroup[0] && geteuid() != 0 && o->limits.max_procs > 0;
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        goto fail;
    }
    if (pid == 0) {
        /* child: async-signal-safe calls only */
        setpgid(0, 0);
        if (cgprocs[0]) {
            int fd = open(cgprocs, O_WRONLY);
            if (fd < 0 || write(fd, "0", 1) != 1) _exit(126);
            close(fd);
        }
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(er[1], 2);
        /* nothing of the kernel's leaks in: listening socket, model files,
         * databases (not every library sets O_CLOEXEC) */
        if (close_range(3, ~0U, 0) != 0)
            for (int fd = 3; fd < 4096; fd++) close(fd);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        if (o->limits.cpu_s > 0) set_rlimit(RLIMIT_CPU, (rlim_t)o->limits.cpu_s);
        if (o->limits.mem_bytes > 0) set_rlimit(RLIMIT_AS, (rlim_t)o->limits.mem_bytes);
        if (o->limits.max_file_bytes > 0) set_rlimit(RLIMIT_FSIZE, (rlim_t)o->limits.max_file_bytes);
        set_rlimit(RLIMIT_CORE, 0);
        if (nproc) set_rlimit(RLIMIT_NPROC, (rlim_t)o->limits.max_procs);
        if (!o->sandbox && o->cwd && chdir(o->cwd) != 0) _exit(126);
        execve(av.v[0], av.v, env.v);
        _exit(127);
    }
    setpgid(pid, pid); /* also in the parent: no race with kill */
    close(in[0]);
    close(out[1]);
    close(er[1]);
    p->pid = pid;
    p->fd_in = in[1];
    p->fd_out = out[0];
    p->fd_err = er[0];
    fcntl(p->fd_in, F_SETFL, O_NONBLOCK);
    sv_free(&av);
    sv_free(&env);
    return 0;
fail:
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0) close(in[i]);
        if (out[i] >= 0) close(out[i]);
        if (er[i] >= 0) close(er[i]);
    }
    if (p->cgroup[0]) rmdir(p->cgroup);
    p->cgroup[0] = 0;
    sv_free(&av);
    sv_free(&env);
    if (rc == AIOS_ENOMEM) snprintf(err, errlen, "out of memory");
    return rc;
}

void tool_proc_kill(struct tool_proc *p)
{
    if (p->pid > 0) {
        kill(-p->pid, SIGKILL);
        kill(p->pid, SIGKILL);
    }
    kill_cgroup(p->cgroup);
}

int tool_proc_reap(struct tool_proc *p)
{
    int st = -1;
    if (p->fd_in >= 0) close(p->fd_in);
    if (p->fd_out >= 0) close(p->fd_out);
    if (p->fd_err >= 0) close(p->fd_err);
    p->fd_in = p->fd_out = p->fd_err = -1;
    if (p->pid > 0) {
        while (waitpid(p->pid, &st, 0) < 0 && errno == EINTR) {}
        /* anything left in its process group or cgroup goes too */
        kill(-p->pid, SIGKILL);
        p->pid = -1;
    }
    if (p->cgroup[0]) {
        kill_cgroup(p->cgroup);
        for (int i = 0; i < 100 && rmdir(p->cgroup) != 0 && errno == EBUSY; i++) usleep(2000);
        p->cgroup[0] = 0;
    }
    return st;
}

/* append up to cap bytes; count the rest as dropped */
static int buf_read(int fd, char **b, size_t *n, size_t *cap, size_t limit, bool *trunc, bool *eof)
{
    char tmp[8192];
    ssize_t r = read(fd, tmp, sizeof tmp);
    if (r < 0) return errno == EINTR || errno == EAGAIN ? 0 : -1;
    if (r == 0) {
        *eof = true;
        return 0;
    }
    size_t take = (size_t)r;
    if (*n + take > limit) {
        take = limit > *n ? limit - *n : 0;
        if (trunc) *trunc = true;
    }
    if (take) {
        if (*n + take + 1 > *cap) {
            size_t nc = (*n + take + 1) * 2;
            if (nc > limit + 1) nc = limit + 1;
            char *nb = realloc(*b, nc);
            if (!nb) return -1;
            *b = nb;
            *cap = nc;
        }
        memcpy(*b + *n, tmp, take);
        *n += take;
        (*b)[*n] = 0;
    }
    return 0;
}

int tool_proc_run(const struct tool_spawn_opts *o, const char *input, size_t n_input,
                  size_t max_out, int64_t deadline_us, char **out, size_t *n_out, bool *truncated,
                  char **errout, int *wstatus, char *err, size_t errlen)
{
    *out = NULL;
    *n_out = 0;
    *truncated = false;
    *errout = NULL;
    *wstatus = -1;
    struct tool_proc p;
    int rc = tool_proc_spawn(&p, o, err, errlen);
    if (rc) return rc;
    size_t cap_out = 0, n_err = 0, cap_err = 0, written = 0;
    bool out_eof = false, err_eof = false, timed_out = false, aborted = false;
    if (n_input == 0) {
        close(p.fd_in);
        p.fd_in = -1;
    }
    while (!out_eof || !err_eof) {
        struct pollfd pf[3];
        int np = 0, i_out = -1, i_err = -1, i_in = -1;
        if (!out_eof) {
            pf[np] = (struct pollfd){p.fd_out, POLLIN, 0};
            i_out = np++;
        }
        if (!err_eof) {
            pf[np] = (struct pollfd){p.fd_err, POLLIN, 0};
            i_err = np++;
        }
        if (p.fd_in >= 0) {
            pf[np] = (struct pollfd){p.fd_in, POLLOUT, 0};
            i_in = np++;
        }
        int64_t left = deadline_us - util_now_us();
        if (left <= 0) {
            timed_out = true;
            break;
        }
        if (o->should_abort && o->should_abort(o->abort_ud)) {
            aborted = true;
            break;
        }
        if (left > 100000) left = 100000;
        int pr = poll(pf, (nfds_t)np, (int)((left + 999) / 1000));
        if (pr < 0 && errno != EINTR) break;
        if (pr <= 0) continue;
        if (i_out >= 0 && pf[i_out].revents &&
            buf_read(p.fd_out, out, n_out, &cap_out, max_out, truncated, &out_eof) < 0)
            out_eof = true;
        if (i_err >= 0 && pf[i_err].revents &&
            buf_read(p.fd_err, errout, &n_err, &cap_err, 4096, NULL, &err_eof) < 0)
            err_eof = true;
        if (i_in >= 0 && pf[i_in].revents) {
            ssize_t w = pf[i_in].revents & POLLOUT ? write(p.fd_in, input + written, n_input - written) : -1;
            if (w > 0) written += (size_t)w;
            if (w < 0 && errno == EAGAIN) continue;
            if (w < 0 || written == n_input) {
                close(p.fd_in);
                p.fd_in = -1;
            }
        }
    }
    if (timed_out || aborted) tool_proc_kill(&p);
    else if (p.pid > 0) {
        /* output closed: give it until the deadline to exit */
        for (;;) {
            int st;
            pid_t w = waitpid(p.pid, &st, WNOHANG);
            if (w == p.pid) {
                *wstatus = st;
                p.pid = -1;
                break;
            }
            if (util_now_us() >= deadline_us || (o->should_abort && o->should_abort(o->abort_ud))) {
                timed_out = true;
                tool_proc_kill(&p);
                break;
            }
            usleep(1000);
        }
    }
    int st = tool_proc_reap(&p);
    if (*wstatus == -1) *wstatus = st;
    if (aborted) {
        snprintf(err, errlen, "the kernel is shutting down; the tool was stopped");
        return AIOS_ESHUTDOWN;
    }
    if (timed_out) {
        snprintf(err, errlen, "timed out and was killed");
        return AIOS_EBUSY;
    }
    return 0;
}
