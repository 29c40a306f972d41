/* The tool sandbox: runs external tools and MCP servers as child processes
 * under bubblewrap.
 *
 * What a sandboxed process sees (bwrap arguments built in build_argv):
 *   - the system read-only: /usr /bin /sbin /lib* /etc (whatever exists);
 *   - a private /tmp (tmpfs), fresh /proc and a minimal /dev;
 *   - the tool's own folder (or its program's folder) read-only;
 *   - exactly one writable directory at the path of the calling agent's
 *     storage root (storage.root_dir/<agent>): with a storage manager, a
 *     copy of the agent's files (a tool view, rw_src; registry.c), else the
 *     root itself; nothing else;
 *   - no network (--unshare-net) unless the tool declares network: true;
 *   - new pid, ipc and uts namespaces, a new session (no terminal
 *     injection), and --die-with-parent so nothing outlives us;
 *   - a scrubbed environment: PATH, HOME=/tmp, LANG, plus what the caller
 *     adds (AIOS_AGENT, AIOS_TOOL).
 * Identity: a kernel running as root never gives a tool root. The child
 * drops to uid/gid 65534 (nobody, no groups) before exec'ing bwrap, which
 * then builds the sandbox unprivileged in a user namespace: the tool has
 * no capabilities anywhere and cannot read root-only files (/etc/shadow).
 * Because an unprivileged bwrap cannot reach bind sources below
 * directories only root may traverse (a 0700 data dir), the child first
 * opens those directories as root, enters a private mount namespace,
 * mounts a tmpfs on /tmp there and bind-mounts them to STAGE/{rw,prog,cwd},
 * and bwrap binds from there to the original paths. The agent's directory
 * is chowned to 65534 by the tool manager so the tool may write in it.
 * A kernel not running as root runs tools as its own uid (bwrap then uses
 * a user namespace as well).
 * Limits, set in the child between fork and exec so they bind bwrap and
 * everything below it: RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_CORE=0.
 * The process count is bounded by a pids cgroup made per process
 * (aios-tools/<kernel pid>-<seq> under v1 /sys/fs/cgroup/pids or a v2
 * hierarchy with the pids controller; removed when reaped) when we
 * may create one, which also works for root (for whom RLIMIT_NPROC is not
 * enforced); otherwise by RLIMIT_NPROC when not root; otherwise it is not
 * bounded and start-up logs a warning. tool_sandbox_pids_mode() says which.
 *
 * Agents (agents/agent.c) use the same spawner with more options: extra
 * binds (files too: a Unix socket, the aios binary) staged like the rest
 * at STAGE/b<i>, their own environment, HOME, hostname and uid, stdout and
 * stderr to log files, bwrap's --as-pid-1 (aios forward is pid 1) and
 * --info-fd on fd 4 (the host pid of that pid 1), and no --die-with-parent
 * (which ties the sandbox to the forking *thread*; their pid 1 asks for
 * PR_SET_PDEATHSIG against bwrap instead).
 *
 * Inherited descriptors: the child closes every fd above 2 before exec,
 * so the kernel's listening socket and open files never reach a tool;
 * only fd 3 may stay: a pipe holding the seccomp program (seccomp.c) that
 * bwrap reads (--seccomp 3) and loads right before it execs the tool. The
 * probe checks bwrap accepts it; if not, tools run without it (warning).
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

#include <dirent.h>
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
#include <grp.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static pthread_once_t g_probe_once = PTHREAD_ONCE_INIT;
#define SECCOMP_FD 3
#define SECCOMP_FD_STR "3"
#define INFO_FD 4 /* bwrap --info-fd: the host pid of the sandbox's first process */
#define INFO_FD_STR "4"
#define MAX_BINDS 16

static char g_bwrap[PATH_MAX];
static bool g_seccomp; /* bwrap loads tool_seccomp_program() (probe found it works) */
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

/* Remove empty cgroups that dead kernels left in dir: entries named
 * "<prefix><pid>..." whose pid no longer exists (rmdir fails on a cgroup
 * that still holds processes, so a live one is never removed). */
static void sweep(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    size_t pl = strlen(prefix);
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, prefix, pl) != 0) continue;
        int pid = atoi(e->d_name + pl);
        if (pid <= 0 || pid == (int)getpid() || kill(pid, 0) == 0 || errno != ESRCH) continue;
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%.3000s/%.250s", dir, e->d_name);
        rmdir(p);
    }
    closedir(d);
}

static void probe_cgroup(void)
{
    char dir[PATH_MAX];
    /* cgroup v1 pids hierarchy; one directory shared by every kernel on the
     * machine, a child "<pid>-<seq>" per sandboxed process */
    sweep("/sys/fs/cgroup/pids", "aios-tools-"); /* per-kernel layout of older builds */
    snprintf(dir, sizeof dir, "/sys/fs/cgroup/pids/aios-tools");
    if (access("/sys/fs/cgroup/pids/cgroup.procs", W_OK) == 0 && (mkdir(dir, 0755) == 0 || errno == EEXIST)) {
        char f[PATH_MAX + 16];
        snprintf(f, sizeof f, "%s/pids.max", dir);
        if (access(f, W_OK) == 0) {
            snprintf(g_cg_base, sizeof g_cg_base, "%s", dir);
            sweep(dir, "");
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
        snprintf(dir, sizeof dir, "%s%s/aios-tools", roots[i], strcmp(own, "/") ? own : "");
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) continue;
        char f[PATH_MAX + 32];
        snprintf(f, sizeof f, "%s/cgroup.subtree_control", dir);
        write_file(f, "+pids");
        snprintf(f, sizeof f, "%s/pids.max", dir);
        /* children of dir get pids.max only if pids is enabled in dir */
        char probe[PATH_MAX + 8];
        snprintf(probe, sizeof probe, "%s/probe-%d", dir, (int)getpid());
        if (mkdir(probe, 0755) == 0) {
            snprintf(f, sizeof f, "%s/pids.max", probe);
            bool ok = access(f, W_OK) == 0;
            rmdir(probe);
            if (ok) {
                snprintf(g_cg_base, sizeof g_cg_base, "%s", dir);
                sweep(dir, "");
                return;
            }
        }
        rmdir(dir);
    }
}

static int spawn_impl(struct tool_proc *p, const struct tool_spawn_opts *o, bool probing,
                      bool seccomp, char *err, size_t errlen);
static int buf_read(int fd, char **b, size_t *n, size_t *cap, size_t limit, bool *trunc, bool *eof);

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
        /* a real trial run, the way tools run: namespaces (or the
         * unprivileged user namespace bwrap needs) may be forbidden here;
         * first with the seccomp filter, then (if that alone fails)
         * without it */
        char *const argv[] = {"/bin/true", NULL};
        struct tool_spawn_opts o = {.argv = argv, .sandbox = true};
        char *errout = NULL;
        int st = -1;
        size_t sc_len = 0;
        bool sc_avail = tool_seccomp_program(&sc_len) != NULL;
        for (int with_sc = sc_avail; with_sc >= 0 && st != 0; with_sc--) {
            struct tool_proc p;
            char err[256] = "";
            int rc = spawn_impl(&p, &o, true, with_sc, err, sizeof err);
            size_t n_err = 0, cap_err = 0;
            bool eof = false;
            free(errout);
            errout = NULL;
            while (!rc && !eof && p.fd_err >= 0) {
                struct pollfd pf = {p.fd_err, POLLIN, 0};
                if (poll(&pf, 1, 5000) <= 0) break;
                if (buf_read(p.fd_err, &errout, &n_err, &cap_err, 512, NULL, &eof) < 0) break;
            }
            st = rc ? -1 : tool_proc_reap(&p);
            if (st == 0) g_seccomp = with_sc;
            else if (with_sc)
                LOG_WARN("tools", "sandbox: bwrap refused the seccomp filter (%.150s); tools run "
                         "without it", errout ? errout : err);
            if (st && !with_sc && !errout && err[0]) errout = strdup(err);
        }
        if (!sc_avail)
            LOG_WARN("tools", "sandbox: no seccomp filter for this architecture; tools run "
                     "without it");
        if (st == 0) g_bwrap_ok = true;
        else
            snprintf(g_bwrap_why, sizeof g_bwrap_why,
                     "bwrap cannot build the sandbox here (exit status %d%s%.150s); tools that "
                     "need the sandbox are refused", WIFEXITED(st) ? WEXITSTATUS(st) : -1,
                     errout ? ": " : "", errout ? errout : "");
        free(errout);
    }
    probe_cgroup();
    /* without a cgroup, RLIMIT_NPROC: per uid, so shared by every tool
     * running as that uid (and, for a non-root kernel, by the kernel) */
    g_pids_mode = g_cg_base[0] ? "cgroup" : "rlimit";
    LOG_INFO("tools", "sandbox: bwrap %s%s%s, tools run as uid %d, process count bounded by %s%s%s",
             g_bwrap_ok ? "ok" : "unavailable: ", g_bwrap_ok ? "" : g_bwrap_why,
             g_seccomp ? " with a seccomp filter" : "", geteuid() == 0 ? TOOL_SANDBOX_UID : (int)geteuid(), g_pids_mode,
             g_cg_base[0] ? " under " : " (shared by all tools of that uid)", g_cg_base);
}

bool tool_sandbox_available(char *why, size_t whylen)
{
    pthread_once(&g_probe_once, probe);
    if (why && whylen) snprintf(why, whylen, "%s", g_bwrap_why);
    return g_bwrap_ok;
}

bool tool_sandbox_seccomp(void)
{
    pthread_once(&g_probe_once, probe);
    return g_seccomp;
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

#define STAGE "/tmp"
#define STAGE_RW STAGE "/rw"
#define STAGE_PROG STAGE "/prog"
#define STAGE_CWD STAGE "/cwd"

/* the program's folder when it must be bound (not a system path, not cwd) */
static bool prog_dir(const struct tool_spawn_opts *o, char *d, size_t dlen)
{
    const char *prog = o->argv[0];
    if (prog[0] != '/' || under_system(prog)) return false;
    for (size_t i = 0; i < o->n_binds; i++) /* shown by a bind of its own */
        if (!strcmp(o->binds[i].dst, prog)) return false;
    snprintf(d, dlen, "%s", prog);
    char *sl = strrchr(d, '/');
    if (!sl || sl == d) return false;
    *sl = 0;
    return !o->cwd || strcmp(d, o->cwd) != 0;
}

static void bind(struct strv *s, const char *how, const char *src, const char *dst)
{
    sv_push(s, how);
    sv_push(s, src);
    sv_push(s, dst);
}

/* where extra bind i is staged (STAGE/b<i>) */
static void stage_name(char *out, size_t outlen, size_t i)
{
    snprintf(out, outlen, STAGE "/b%zu", i);
}

/* drop: sources come from the child's staging mounts (see the top) */
static void build_argv(struct strv *s, const struct tool_spawn_opts *o, bool drop, bool seccomp)
{
    if (!o->sandbox) {
        for (size_t i = 0; o->argv[i]; i++) sv_push(s, o->argv[i]);
        return;
    }
    sv_push(s, g_bwrap);
    if (drop || geteuid() != 0) sv_push(s, "--unshare-user");
    const char *ro[] = {"/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/etc"};
    for (size_t i = 0; i < sizeof ro / sizeof ro[0]; i++) {
        struct stat st;
        if (lstat(ro[i], &st) != 0) continue;
        if (S_ISLNK(st.st_mode)) {
            char tgt[PATH_MAX];
            ssize_t n = readlink(ro[i], tgt, sizeof tgt - 1);
            if (n <= 0) continue;
            tgt[n] = 0;
            bind(s, "--symlink", tgt, ro[i]);
        } else {
            bind(s, "--ro-bind", ro[i], ro[i]);
        }
    }
    /* the private /tmp and /run are tmpfs, i.e. host RAM: bounded, /tmp by
     * a quarter of the memory limit (64 MiB without one), /run by 1 MiB */
    char tmp_size[32];
    snprintf(tmp_size, sizeof tmp_size, "%llu",
             (unsigned long long)(o->limits.mem_bytes > 0 ? o->limits.mem_bytes / 4
                                                          : (size_t)64 << 20));
    const char *tmpfs[] = {"--size", tmp_size, "--tmpfs", "/tmp", "--size", "1048576",
                           "--tmpfs", "/run"};
    for (size_t i = 0; i < sizeof tmpfs / sizeof tmpfs[0]; i++) sv_push(s, tmpfs[i]);
    static const char *fixed[] = {"--proc", "/proc", "--dev", "/dev", "--unshare-pid",
                                  "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                                  "--new-session"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) sv_push(s, fixed[i]);
    /* bwrap's --die-with-parent ties the sandbox to the *thread* that
     * forked it; agents outlive the request's thread, so their pid 1
     * (aios forward) asks for SIGKILL when bwrap dies instead */
    if (!o->outlive_thread) sv_push(s, "--die-with-parent");
    sv_push(s, "--hostname");
    sv_push(s, o->hostname ? o->hostname : "aios-tool");
    if (o->as_pid1) sv_push(s, "--as-pid-1");
    if (o->want_inner_pid) {
        sv_push(s, "--info-fd");
        sv_push(s, INFO_FD_STR);
    }
    if (!o->network) sv_push(s, "--unshare-net");
    char d[PATH_MAX];
    if (prog_dir(o, d, sizeof d)) bind(s, "--ro-bind", drop ? STAGE_PROG : d, d);
    if (o->cwd) bind(s, "--ro-bind", drop ? STAGE_CWD : o->cwd, o->cwd);
    if (o->rw_dir) bind(s, "--bind", drop ? STAGE_RW : o->rw_src ? o->rw_src : o->rw_dir, o->rw_dir);
    for (size_t i = 0; i < o->n_binds && i < MAX_BINDS; i++) {
        char st[64];
        stage_name(st, sizeof st, i);
        bind(s, o->binds[i].rw ? "--bind" : "--ro-bind", drop ? st : o->binds[i].src,
             o->binds[i].dst);
    }
    const char *wd = o->rw_dir ? o->rw_dir : o->cwd ? o->cwd : "/tmp";
    sv_push(s, "--chdir");
    sv_push(s, wd);
    if (seccomp) { /* the child puts the program on fd 3 (SECCOMP_FD) */
        sv_push(s, "--seccomp");
        sv_push(s, SECCOMP_FD_STR);
    }
    sv_push(s, "--");
    for (size_t i = 0; o->argv[i]; i++) sv_push(s, o->argv[i]);
}

/* child only: say why on stderr (async-signal-safe) and exit 125 */
static void child_die(const char *what)
{
    const char *pre = "aios sandbox: cannot ";
    const char *e = strerror(errno); /* not async-signal-safe in theory; glibc's is a table lookup */
    if (write(2, pre, strlen(pre)) < 0 || write(2, what, strlen(what)) < 0 || write(2, ": ", 2) < 0 ||
        write(2, e, strlen(e)) < 0 || write(2, "\n", 1) < 0)
        _exit(125);
    _exit(125);
}

/* child only (async-signal-safe): bind an open directory or file at a
 * staging path */
static int stage(int fd, const char *at)
{
    char src[64];
    /* "/proc/self/fd/N" without snprintf */
    const char *pre = "/proc/self/fd/";
    size_t n = 0;
    while (pre[n]) {
        src[n] = pre[n];
        n++;
    }
    char dig[16];
    int nd = 0;
    for (int v = fd; v > 0 || nd == 0; v /= 10) dig[nd++] = (char)('0' + v % 10);
    while (nd) src[n++] = dig[--nd];
    src[n] = 0;
    struct stat st;
    if (fstat(fd, &st) != 0) return -1;
    if (S_ISDIR(st.st_mode)) {
        if (mkdir(at, 0755) != 0) return -1;
    } else {
        int t = open(at, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (t < 0) return -1;
        close(t);
    }
    return mount(src, at, NULL, MS_BIND | MS_REC, NULL);
}

void tool_sandbox_cleanup(void)
{
    /* the base directory is shared by every kernel on the machine and
     * stays; per-process cgroups are removed when reaped, and ones a killed
     * kernel left behind are swept by the next kernel's probe */
}

static int make_cgroup(struct tool_proc *p, int max_procs)
{
    p->cgroup[0] = 0;
    if (!g_cg_base[0] || max_procs <= 0) return 0;
    char dir[256], f[300], v[32];
    /* the base may have been removed by someone else */
    if (mkdir(g_cg_base, 0755) == 0) {
        snprintf(f, sizeof f, "%.250s/cgroup.subtree_control", g_cg_base);
        write_file(f, "+pids");
    }
    snprintf(dir, sizeof dir, "%.200s/%d-%u", g_cg_base, (int)getpid(), atomic_fetch_add(&g_cg_seq, 1));
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

/* bwrap's --info-fd document: {"child-pid": N, ...}; 0 when it never
 * came (bwrap failed before the clone), waiting at most 10 s */
static pid_t read_child_pid(int fd)
{
    char buf[512];
    size_t n = 0;
    int64_t end = util_now_us() + 10000000;
    while (n < sizeof buf - 1) {
        struct pollfd pf = {fd, POLLIN, 0};
        int64_t left = end - util_now_us();
        if (left <= 0 || poll(&pf, 1, (int)(left / 1000) + 1) <= 0) break;
        ssize_t r = read(fd, buf + n, sizeof buf - 1 - n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        n += (size_t)r;
        buf[n] = 0;
        if (strchr(buf, '}')) break;
    }
    buf[n] = 0;
    const char *k = strstr(buf, "\"child-pid\"");
    const char *c = k ? strchr(k, ':') : NULL;
    long v = c ? strtol(c + 1, NULL, 10) : 0;
    return v > 0 ? (pid_t)v : 0;
}

int tool_proc_spawn(struct tool_proc *p, const struct tool_spawn_opts *o, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    p->pid = -1;
    p->fd_in = p->fd_out = p->fd_err = -1;
    pthread_once(&g_probe_once, probe);
    if (o->sandbox && !g_bwrap_ok) {
        snprintf(err, errlen, "the tool sandbox is unavailable: %s", g_bwrap_why);
        return AIOS_EPERM;
    }
    return spawn_impl(p, o, false, g_seccomp, err, errlen);
}

static int spawn_impl(struct tool_proc *p, const struct tool_spawn_opts *o, bool probing,
                      bool seccomp, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    p->pid = -1;
    p->fd_in = p->fd_out = p->fd_err = -1;
    if (!o->argv || !o->argv[0]) {
        snprintf(err, errlen, "no program to run");
        return AIOS_EINVAL;
    }
    bool drop = o->sandbox && geteuid() == 0;
    uid_t uid = o->uid ? o->uid : TOOL_SANDBOX_UID;
    char pdir[PATH_MAX];
    bool has_pdir = o->sandbox && prog_dir(o, pdir, sizeof pdir);
    bool to_fds = o->out_fd > 2 && o->err_fd > 2;
    bool want_info = o->sandbox && o->want_inner_pid;
    size_t n_binds = o->sandbox ? o->n_binds : 0;
    if (n_binds > MAX_BINDS) {
        snprintf(err, errlen, "more than %d extra paths to show in the sandbox", MAX_BINDS);
        return AIOS_EINVAL;
    }
    char stages[MAX_BINDS][64]; /* built before fork: the child may not format */
    for (size_t i = 0; i < n_binds; i++) stage_name(stages[i], sizeof stages[i], i);
    int in[2] = {-1, -1}, out[2] = {-1, -1}, er[2] = {-1, -1}, scp[2] = {-1, -1};
    int inf[2] = {-1, -1};
    struct strv av = {0}, env = {0};
    int rc = AIOS_EIO;
    seccomp = seccomp && o->sandbox;
    build_argv(&av, o, drop, seccomp);
    sv_push(&env, "PATH=/usr/local/bin:/usr/bin:/bin");
    char kv[PATH_MAX + 16];
    snprintf(kv, sizeof kv, "HOME=%s", o->home ? o->home : "/tmp");
    sv_push(&env, kv);
    sv_push(&env, "LANG=C.UTF-8");
    for (size_t i = 0; o->env && o->env[i]; i++) sv_push(&env, o->env[i]);
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
    if (pipe2(in, O_CLOEXEC) || (!to_fds && (pipe2(out, O_CLOEXEC) || pipe2(er, O_CLOEXEC))) ||
        (want_info && pipe2(inf, O_CLOEXEC))) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        goto fail;
    }
    if (seccomp) { /* the filter for bwrap to read: a pipe of its own per spawn */
        size_t n_sc = 0;
        const void *prog = tool_seccomp_program(&n_sc);
        if (!prog || pipe2(scp, O_CLOEXEC) || write(scp[1], prog, n_sc) != (ssize_t)n_sc) {
            snprintf(err, errlen, "cannot pass the seccomp filter: %s", strerror(errno));
            goto fail;
        }
        close(scp[1]);
        scp[1] = -1;
    }
    if (!probing && make_cgroup(p, o->limits.max_procs) != 0)
        LOG_WARN("tools", "could not create a pids cgroup under %s; process count unbounded for "
                 "this call", g_cg_base);
    char cgprocs[300] = "";
    if (p->cgroup[0]) snprintf(cgprocs, sizeof cgprocs, "%s/cgroup.procs", p->cgroup);
    bool nproc = !p->cgroup[0] && (drop || geteuid() != 0) && o->limits.max_procs > 0;
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
            if (fd < 0 || write(fd, "0", 1) != 1) child_die("join the pids cgroup");
            close(fd);
        }
        dup2(in[0], 0);
        dup2(to_fds ? o->out_fd : out[1], 1);
        dup2(to_fds ? o->err_fd : er[1], 2);
        if (drop) {
            /* open the bind sources as root, stage them in a private mount
             * namespace where nobody can reach them, then become nobody */
            if (unshare(CLONE_NEWNS) != 0) child_die("unshare the mount namespace");
            if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) child_die("make mounts private");
            /* opened inside the new namespace (a bind from another one is
             * EINVAL) and before the tmpfs may hide them */
            int f_rw = o->rw_dir ? open(o->rw_src ? o->rw_src : o->rw_dir,
                                        O_PATH | O_DIRECTORY | O_CLOEXEC) : -1;
            int f_pg = has_pdir ? open(pdir, O_PATH | O_DIRECTORY | O_CLOEXEC) : -1;
            int f_cw = o->cwd ? open(o->cwd, O_PATH | O_DIRECTORY | O_CLOEXEC) : -1;
            if ((o->rw_dir && f_rw < 0) || (has_pdir && f_pg < 0) || (o->cwd && f_cw < 0))
                child_die("open a directory to bind");
            int f_b[MAX_BINDS];
            for (size_t i = 0; i < n_binds; i++)
                if ((f_b[i] = open(o->binds[i].src, O_PATH | O_CLOEXEC)) < 0)
                    child_die("open a path to bind");
            if (mount("aios-stage", STAGE, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k") != 0)
                child_die("mount the staging tmpfs");
            if (f_rw >= 0 && stage(f_rw, STAGE_RW) != 0) child_die("stage the agent's directory");
            if (f_pg >= 0 && stage(f_pg, STAGE_PROG) != 0) child_die("stage the program's folder");
            if (f_cw >= 0 && stage(f_cw, STAGE_CWD) != 0) child_die("stage the tool's folder");
            for (size_t i = 0; i < n_binds; i++)
                if (stage(f_b[i], stages[i]) != 0) child_die("stage a path to bind");
            if (setgroups(0, NULL) != 0) child_die("drop groups");
            if (setresgid(uid, uid, uid) != 0) child_die("setresgid");
            if (setresuid(uid, uid, uid) != 0) child_die("setresuid");
        }
        /* nothing of the kernel's leaks in: listening socket, model files,
         * databases (not every library sets O_CLOEXEC) */
        int keep = 3; /* fds from here on are closed */
        /* out of the way of fds 3 and 4 first, then into place */
        int sc_fd = scp[0] >= 0 ? fcntl(scp[0], F_DUPFD_CLOEXEC, 100) : -1;
        int in_fd = inf[1] >= 0 ? fcntl(inf[1], F_DUPFD_CLOEXEC, 100) : -1;
        if ((scp[0] >= 0 && sc_fd < 0) || (inf[1] >= 0 && in_fd < 0)) child_die("move a descriptor");
        if (sc_fd >= 0) { /* the seccomp program, for bwrap, on fd 3 */
            if (dup2(sc_fd, SECCOMP_FD) < 0) child_die("pass the seccomp filter");
            keep = SECCOMP_FD + 1;
        }
        if (in_fd >= 0) { /* bwrap's --info-fd on fd 4 (fd 3 closed when unused) */
            if (dup2(in_fd, INFO_FD) < 0) child_die("pass the info pipe");
            if (sc_fd < 0) close(SECCOMP_FD);
            keep = INFO_FD + 1;
        }
        if (close_range((unsigned)keep, ~0U, 0) != 0)
            for (int fd = keep; fd < 4096; fd++) close(fd);
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
    if (scp[0] >= 0) close(scp[0]);
    close(in[0]);
    if (out[1] >= 0) close(out[1]);
    if (er[1] >= 0) close(er[1]);
    p->pid = pid;
    p->fd_in = in[1];
    p->fd_out = out[0];
    p->fd_err = er[0];
    fcntl(p->fd_in, F_SETFL, O_NONBLOCK);
    if (to_fds) { /* stdin is empty */
        close(p->fd_in);
        p->fd_in = -1;
    }
    if (want_info) {
        close(inf[1]);
        inf[1] = -1;
        p->inner_pid = read_child_pid(inf[0]);
        close(inf[0]);
        inf[0] = -1;
    }
    sv_free(&av);
    sv_free(&env);
    return 0;
fail:
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0) close(in[i]);
        if (out[i] >= 0) close(out[i]);
        if (er[i] >= 0) close(er[i]);
        if (scp[i] >= 0) close(scp[i]);
        if (inf[i] >= 0) close(inf[i]);
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
