/* The tool manager: a registry of tools (OpenAI function schemas plus an
 * executor and limits), built-in C tools, external executables and MCP
 * servers run under a bubblewrap sandbox, and the executor of TOOL
 * syscalls. See registry.c (registry, limits, the call executor),
 * builtin.c, calc.c, sandbox.c, mcp.c. */
#ifndef AIOS_TOOLS_TOOLS_H
#define AIOS_TOOLS_TOOLS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct syscall;
struct sched;
struct tool_mgr;
struct tool;
struct tool_mcp;

enum tool_kind {
    TOOL_KIND_BUILTIN, /* C function in this binary */
    TOOL_KIND_EXEC,    /* external executable: JSON args on stdin, result on stdout */
    TOOL_KIND_MCP,     /* a tool of an MCP server (stdio JSON-RPC) */
};

/* A built-in tool. Runs on a tool pool thread; must finish quickly or honour
 * deadline_us (monotonic). On success *result is a new JSON value; on error
 * returns negative AIOS_E* with a message in err. */
struct tool_call_env {
    struct tool_mgr *m;
    const char *agent;
    int64_t deadline_us;
};
/* A built-in may also return TOOL_EUNAVAILABLE: what it needs (e.g. the
 * storage manager) is not in this kernel (the call answers 501). */
#define TOOL_EUNAVAILABLE (-100)
typedef int (*tool_builtin_fn)(const struct tool_call_env *env, json_t *args, json_t **result,
                               char *err, size_t errlen);

/* Approval hook for tools marked irreversible (the access manager sets it).
 * Called on the tool pool thread before such a tool runs, may block until
 * an operator decides (the call's status is then awaiting_approval).
 * Return 0 to run the tool, or a negative AIOS_E* (AIOS_EPERM: denied) with
 * a reason in err that is passed to the agent. */
typedef int (*tool_approval_fn)(void *ud, struct syscall *sc, const struct tool *t,
                                json_t *args, char *err, size_t errlen);

/* Privilege hook (the access manager sets it). Called on the TOOL pool
 * thread for every call of a TOOL syscall once its name is resolved to a
 * registered tool (tool_find), with that tool: the one that would run.
 * Return 0 to let it run, or AIOS_EPERM with the reason in err; one refused
 * call refuses the whole syscall (403) before any of its calls runs. */
typedef int (*tool_permit_fn)(void *ud, struct syscall *sc, const struct tool *t, char *err,
                              size_t errlen);

#define TOOL_DEFAULT_TIMEOUT_MS 30000
#define TOOL_DEFAULT_MAX_OUTPUT ((size_t)64 << 10)
#define TOOL_MAX_CONFLICTS 8
#define TOOL_SANDBOX_UID 65534 /* "nobody": what tools run as under a root kernel */
#define TOOL_TRUNC_MARKER "\n[aios: output truncated at %zu bytes]"

/* Sandbox limits for subprocesses (per tool or per MCP server). */
struct tool_limits {
    int cpu_s;           /* RLIMIT_CPU seconds */
    size_t mem_bytes;    /* RLIMIT_AS */
    int max_procs;       /* pids.max of the call's cgroup, and RLIMIT_NPROC */
    size_t max_file_bytes; /* RLIMIT_FSIZE */
};

struct tool {
    char *name;        /* "author/name" */
    char *description;
    json_t *parameters; /* JSON Schema of the arguments (an object schema) */
    enum tool_kind kind;
    /* executor */
    tool_builtin_fn builtin;
    char **argv;       /* EXEC: program and arguments (NULL-terminated) */
    char *dir;         /* EXEC: working directory (tool folder), bound read-only */
    struct tool_mcp *mcp; /* MCP: the server */
    char *remote_name; /* MCP: the tool's name on its server */
    /* properties */
    int max_concurrency; /* 0: unlimited */
    char *conflicts[TOOL_MAX_CONFLICTS]; /* conflict groups: members never run at once */
    int n_conflicts;
    int timeout_ms;
    size_t max_output_bytes;
    bool irreversible; /* needs approval (see tool_approval_fn) */
    bool network;      /* may use the network (off by default) */
    struct tool_limits limits;
    /* guarded by the manager's lock */
    int n_running;
    int64_t mean_us; /* observed duration of its calls (moving mean), once n_timed > 0 */
    int n_timed;     /* calls timed, up to TOOL_MEAN_WINDOW */
};
/* the mean of a tool's duration follows its last calls about this many */
#define TOOL_MEAN_WINDOW 8

/* What a running manager needs from the rest of the kernel, given once
 * after tool_mgr_create (src/kernel/boot.c wires it; all may be NULL in tests):
 * the scheduler (is the kernel stopping?) and how the file tools submit a
 * storage syscall: storage_submit returns 0 (queued), 1 (parked for the
 * operator's approval; queued later) or a negative AIOS_E* with err, and
 * is NULL when the kernel has no storage manager. */
typedef int (*tool_storage_submit_fn)(void *ud, struct syscall *sc, char *err, size_t errlen);
/* How external tools see the agent's files (the storage manager's tool
 * views, storage.h sto_view_*): a copy they may change, whose changes come
 * back as storage calls. Absent (make NULL): tools get the agent's storage
 * root itself (a kernel without a storage manager: there is no history). */
struct sto_view_change;
struct tool_view_ops {
    int (*make)(void *ud, const char *agent, uid_t uid, char *dir, size_t dirlen,
                int64_t *budget, json_t **manifest, char *err, size_t errlen);
    int (*changes)(void *ud, const char *dir, json_t *manifest, struct sto_view_change **out,
                   size_t *n, json_t *notes, char *err, size_t errlen);
    void (*drop)(void *ud, const char *dir);
    void *ud;
};
struct tool_deps {
    struct sched *sched;
    tool_storage_submit_fn storage_submit;
    void *storage_ud;
    struct tool_view_ops view;
};
/* A storage call in agent's name through deps.storage_submit (the access
 * manager may park it for approval), waited for until deadline_us; req is
 * taken. 0 and *result (the storage response), or AIOS_E* / TOOL_EUNAVAILABLE
 * with a message. Any thread but the storage pool's. */
struct sto_req;
int tool_storage_call(struct tool_mgr *m, const char *agent, struct sto_req *req,
                      int64_t deadline_us, json_t **result, char *err, size_t errlen);
void tool_mgr_set_deps(struct tool_mgr *m, const struct tool_deps *d);
/* the TOOL pool's size and the per-agent cap of its threads (tools.*) */
int tool_mgr_pool_threads(const struct tool_mgr *m);
int tool_mgr_calls_per_agent(const struct tool_mgr *m);
/* After the pools were joined: stop MCP servers, free. NULL is ignored. */
void tool_mgr_stop(struct tool_mgr *m);
/* For tests and embedders without a kernel: a manager from a `tools:`
 * JSON section (may be NULL), storage root dir for agents, no pool. */
int tool_mgr_create(struct tool_mgr **out, json_t *section, const char *storage_root,
                    const char *data_dir, char *err, size_t errlen);

void tool_mgr_set_approval(struct tool_mgr *m, tool_approval_fn fn, void *ud);
void tool_mgr_set_permit(struct tool_mgr *m, tool_permit_fn fn, void *ud);

/* Resolver of names the registry does not hold (the hub sets it: its
 * tools are published while the kernel runs). Called on a TOOL pool
 * thread with a call's name; may block (e.g. to start the tool once).
 * Returns 0 with *out (owned by the resolver, valid until the manager
 * stops), AIOS_ENOTFOUND (no such tool: the usual not_found), or another
 * negative AIOS_E* with a message in err (TOOL_EUNAVAILABLE: the tool
 * exists but cannot run here, e.g. missing packages; others: the call
 * fails with that message). Set before the pool starts taking calls. */
typedef int (*tool_resolve_fn)(void *ud, const char *name, struct tool **out, char *err,
                               size_t errlen);
void tool_mgr_set_resolver(struct tool_mgr *m, tool_resolve_fn fn, void *ud);

/* The TOOL syscall executor (op "call", params {"tool_calls":[...]}). */
void tool_exec_syscall(struct syscall *sc, void *ud);

/* Run every call of a request (a JSON array of {"id"?, "name",
 * "parameters"|"arguments"}) for agent; *out gets the AIOS tool response
 * object. Per-call failures are inside it; returns negative AIOS_E* only
 * for a malformed request (AIOS_EINVAL, e.g. a call whose "name" and
 * "function.name" name different tools) or a call the permit hook refused
 * (AIOS_EPERM: nothing ran), with the message in err. */
int tool_run_calls(struct tool_mgr *m, struct syscall *sc, const char *agent, json_t *calls,
                   json_t **out, char *err, size_t errlen);

/* All registered tools as OpenAI function schemas:
 * [{"type":"function","function":{"name","description","parameters"},
 *   "aios":{kind, max_concurrency, conflicts, timeout_ms, ...}}] */
json_t *tool_list_json(struct tool_mgr *m);
struct tool *tool_find(struct tool_mgr *m, const char *name);

/* ---- internal, shared between the tool sources ---- */

/* Register t (takes ownership; freed on failure). */
int tool_register(struct tool_mgr *m, struct tool *t, char *err, size_t errlen);
void tool_free(struct tool *t);
int tool_builtins_register(struct tool_mgr *m, char *err, size_t errlen);
/* a config mapping's tool properties (max_concurrency, conflicts,
 * timeout_ms, max_output_bytes, irreversible, network, cpu_seconds,
 * memory_mb, max_procs) into t, limits starting from tools.defaults;
 * unknown keys are ignored. 0 or AIOS_ECONFIG naming where. */
int tool_cfg_props(json_t *e, const char *where, struct tool *t, char *err, size_t errlen);
/* Validate args against t->parameters. 0 or AIOS_EINVAL with a message. */
int tool_validate_args(const struct tool *t, json_t *args, char *err, size_t errlen);

/* calc.c: evaluate an arithmetic expression. 0, or AIOS_EINVAL with
 * "at position N: ..." in err. */
int tool_calc_eval(const char *expr, double *out, char *err, size_t errlen);

/* The agent's directory name under storage.root_dir, the storage
 * manager's rule (sto_agent_dirname): bytes outside [A-Za-z0-9_.-] and a
 * leading '.' become %XX, so "author/name" is "author%2Fname" and no name
 * can be ".", "..", hidden or nested. 0 or AIOS_EINVAL (empty, over 128
 * bytes, or out too small). */
int tool_agent_dirname(const char *agent, char *out, size_t outlen);

/* manager accessors for the other sources */
bool tool_mgr_stopping(void *m); /* the kernel is shutting down */
const struct tool_deps *tool_mgr_deps(const struct tool_mgr *m);
const char *tool_mgr_storage_root(struct tool_mgr *m);
const char *tool_mgr_data_dir(struct tool_mgr *m);

/* sandbox.c: a sandboxed child process with pipes. The same spawner runs
 * launched agents (agents/agent.c), which use the fields marked "agents". */
struct tool_proc {
    pid_t pid;
    int fd_in, fd_out, fd_err; /* our ends; -1 when closed */
    char cgroup[256];          /* pids cgroup dir, "" if none */
    pid_t inner_pid;           /* want_inner_pid: the sandbox's first process (host pid), else 0 */
};
/* one more path shown in the sandbox (a directory or a file, a socket
 * included), staged like the others so it may lie below root-only dirs */
struct tool_bind {
    const char *src, *dst;
    bool rw;
};
struct tool_spawn_opts {
    char *const *argv;     /* program inside the sandbox and its arguments */
    const char *cwd;       /* bound read-only and used as working dir (may be NULL) */
    const char *rw_dir;    /* bound writable at the same path (may be NULL) */
    const char *rw_src;    /* when set: this directory is bound at rw_dir instead (a tool view) */
    bool network;
    bool sandbox;          /* false: run directly (tests of the runner only) */
    struct tool_limits limits;
    const char *agent;     /* exported as AIOS_AGENT (may be NULL) */
    const char *tool;      /* exported as AIOS_TOOL (may be NULL) */
    /* polled at least every 100 ms while running; true kills the process
     * (kernel shutdown). May be NULL. */
    bool (*should_abort)(void *ud);
    void *abort_ud;
    /* agents: */
    const struct tool_bind *binds; /* more binds, n_binds of them */
    size_t n_binds;
    char *const *env;       /* more "NAME=value" entries, NULL-terminated (may be NULL) */
    const char *home;       /* HOME (default /tmp) */
    const char *hostname;   /* default "aios-tool" */
    uid_t uid;              /* under a root kernel: run as this uid/gid (0: TOOL_SANDBOX_UID) */
    int out_fd, err_fd;     /* > 2: stdout/stderr go there (stdin is empty), no pipes */
    bool as_pid1;           /* argv[0] is the sandbox's pid 1 (bwrap --as-pid-1) */
    bool want_inner_pid;    /* learn the host pid of the sandbox's first process (--info-fd) */
    bool outlive_thread;    /* no --die-with-parent ... see sandbox.c */
};
/* 0 or negative AIOS_E* (message in err). */
int tool_proc_spawn(struct tool_proc *p, const struct tool_spawn_opts *o, char *err, size_t errlen);
/* SIGKILL the whole sandbox (process group and cgroup). */
void tool_proc_kill(struct tool_proc *p);
/* Reap (blocking; after kill or EOF); returns wait status; closes fds, removes cgroup. */
int tool_proc_reap(struct tool_proc *p);
/* Which mechanism bounds the process count: "cgroup", "rlimit" or "none". */
const char *tool_sandbox_pids_mode(void);
/* Remove this process's cgroup directory (at manager stop). */
void tool_sandbox_cleanup(void);
/* The seccomp filter bwrap loads into sandboxed processes (seccomp.c):
 * a struct sock_filter array of *len bytes, or NULL on an architecture
 * without one. */
const void *tool_seccomp_program(size_t *len);
/* Whether sandboxed processes run under that filter (checked once). */
bool tool_sandbox_seccomp(void);
/* Whether bwrap is usable here (checked once). */
bool tool_sandbox_available(char *why, size_t whylen);

/* Run a one-shot process: write input to stdin, collect stdout up to
 * max_out bytes (more is drained and discarded, *truncated set), stderr up
 * to 4 KiB, kill at deadline_us. Returns 0 (with *wstatus) or AIOS_EBUSY on
 * timeout (process killed), or other AIOS_E*. Out buffers malloc'd. */
int tool_proc_run(const struct tool_spawn_opts *o, const char *input, size_t n_input,
                  size_t max_out, int64_t deadline_us, char **out, size_t *n_out,
                  bool *truncated, char **errout, int *wstatus, char *err, size_t errlen);

/* mcp.c */
int tool_mcp_start(struct tool_mgr *m, const char *name, json_t *cfg, struct tool_mcp **out,
                   char *err, size_t errlen);
/* Call a tool; blocks until the result, an error or deadline_us (or the
 * manager is stopping). */
int tool_mcp_call(struct tool_mcp *s, const char *tool, json_t *args, int64_t deadline_us,
                  json_t **result, char *err, size_t errlen);
void tool_mcp_stop(struct tool_mcp *s);
/* The pure parts of the MCP client (mcp.c), for tests and fuzzing: */
/* the next '\n'-ended line of buf[0..*n) into *line (malloc'd; removed from
 * buf): 1; 0 when no line is complete yet; -1 on OOM or when *n exceeds
 * max without a line end (the server is dropped) */
int tool_mcp_take_line(char *buf, size_t *n, size_t max, char **line);
/* what a parsed line is: a request of the server's (method and id: it gets
 * tool_mcp_server_answer), a response to our request *id, or something to
 * ignore (notifications, banners, responses without an integer id) */
enum tool_mcp_msg { TOOL_MCP_MSG_IGNORE, TOOL_MCP_MSG_REQUEST, TOOL_MCP_MSG_RESPONSE };
enum tool_mcp_msg tool_mcp_classify(json_t *msg, json_int_t *id);
json_t *tool_mcp_server_answer(json_t *msg);
/* a tools/call response -> the call's result (new reference) or AIOS_EIO
 * with a message (a JSON-RPC error, isError), AIOS_ENOMEM */
int tool_mcp_call_result(const char *server, const char *tool, json_t *msg, json_t **result,
                         char *err, size_t errlen);
/* a tools/list entry -> the tool "<server>/<name>" with props' properties
 * (not registered, no server attached); NULL without a string name or on OOM */
struct tool *tool_mcp_tool_new(const char *server, json_t *entry, const struct tool *props);

#endif
