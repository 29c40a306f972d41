/* Agents as OS processes: packages, the agent factory, the process table.
 * See agent.c for the design (launch, reaping, kill, logs, accounting). */
#ifndef AIOS_AGENTS_AGENT_H
#define AIOS_AGENTS_AGENT_H

#include "kernel/syscall.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct aios_config;

/* An agent package: a folder with config.json in AIOS's layout
 *   {"name", "description", "tools": [...], "meta": {"author","version","license"},
 *    "build": {"entry", "module"}}
 * and the entry it names (a Python file, a shell script or any executable). */
struct agent_pkg {
    char *dir;    /* absolute package folder */
    char *name;   /* config.json name */
    char *entry;  /* absolute path of build.entry */
    char *module; /* build.module or NULL */
    json_t *config; /* the whole config.json (owned) */
};

/* Load and validate dir/config.json. 0, AIOS_ENOTFOUND (no such folder or
 * no config.json) or AIOS_EINVAL with a message naming the field. */
int agent_pkg_load(struct agent_pkg *pkg, const char *dir, char *err, size_t errlen);
/* The validation part of agent_pkg_load for a parsed pkg->config with
 * pkg->dir set (no I/O): fills name, entry, module. 0, AIOS_EINVAL with a
 * message naming the field (where: the file's name for it), AIOS_ENOMEM.
 * On error the caller frees pkg (agent_pkg_free). */
int agent_pkg_check(struct agent_pkg *pkg, const char *where, char *err, size_t errlen);
void agent_pkg_free(struct agent_pkg *pkg);

enum agent_status {
    AGENT_STATUS_RUNNING,
    AGENT_STATUS_COMPLETED, /* exit 0 */
    AGENT_STATUS_FAILED,    /* non-zero exit */
    AGENT_STATUS_KILLED,    /* ended by a signal */
};
const char *agent_status_name(enum agent_status s);

/* Per-agent accounting of the syscalls the kernel served. */
struct agent_usage {
    int64_t n_calls[SYSCALL_KIND__COUNT];
    int64_t n_errors;
    int64_t prompt_tokens, completion_tokens;
    double wait_s, turnaround_s; /* sums */
};

struct agent_factory;

/* cfg is read (agents dir, sdk dir); data_dir holds agents/runs/<id>/.
 * Starts the reaper thread. */
int agent_factory_create(struct agent_factory **out, const struct aios_config *cfg, char *err,
                         size_t errlen);
/* Terminate running agents (SIGTERM, then SIGKILL after 2 s), join the
 * reaper, free everything. NULL is ignored. */
void agent_factory_destroy(struct agent_factory *f);

/* Re-read the factory's settings (agent_factory.*) from a new config.
 * Running agents are untouched. Appends what changed to `changes`. */
void agent_factory_reconfigure(struct agent_factory *f, const struct aios_config *cfg,
                               json_t *changes);
/* The agents directory now in use (copy into out). */
void agent_factory_agents_dir(struct agent_factory *f, char *out, size_t outlen);

/* The hub's part in launching (src/hub; boot.c sets it before the API
 * starts, read without a lock afterwards): fill_cache fills a run's
 * XDG_CACHE_HOME with Cerebrum's tool cache (uid > 0: hand it to that
 * uid), agent_dir finds a hub agent "author/name" (malloc'd folder or NULL)
 * when no agents directory has it. */
struct agent_hub_hooks {
    int (*fill_cache)(void *ud, const char *cache_home, uid_t uid, char *err, size_t errlen);
    char *(*agent_dir)(void *ud, const char *ref);
    void *ud;
};
void agent_factory_set_hub(struct agent_factory *f, const struct agent_hub_hooks *h);

/* Launch the package named ref (a folder name under the agents directory,
 * "author/name" (its last part is tried too), or an absolute folder path)
 * with task. kernel_url goes to the agent as AIOS_KERNEL_URL and
 * CEREBRUM_KERNEL_URL. 0 with *id, AIOS_ENOTFOUND, AIOS_EINVAL (bad
 * package or task), AIOS_EIO (spawn failed) with a message. */
int agent_submit(struct agent_factory *f, const char *ref, const char *task,
                 const char *kernel_url, uint64_t *id, char *err, size_t errlen);

/* JSON of one process (status, pid, times, exit code, result, usage, log
 * paths) or NULL when the id is unknown. */
json_t *agent_proc_json(struct agent_factory *f, uint64_t id);
/* array of every process, by id */
json_t *agent_ps_json(struct agent_factory *f);
/* Send sig to the agent's process group; SIGTERM escalates to SIGKILL after
 * 2 s. 0, AIOS_ENOTFOUND, or AIOS_EINVAL when it is not running. */
int agent_kill(struct agent_factory *f, uint64_t id, int sig);
/* Kill every running agent and forget finished ones; counts out. */
void agent_cleanup(struct agent_factory *f, int *n_killed, int *n_removed);
/* Read the agent's stdout ("stdout") or stderr ("stderr") log from offset:
 * at most max bytes, ending on a UTF-8 boundary. *data is malloc'd;
 * *next is the offset to ask next. 0 or AIOS_ENOTFOUND / AIOS_EIO. */
int agent_log_read(struct agent_factory *f, uint64_t id, const char *which, int64_t offset,
                   size_t max, char **data, size_t *n, int64_t *next);

/* Run channels: the kernel-side end of each sandboxed run's private Unix
 * socket (see agent.c). cb gets every connection accepted on the socket of
 * run `id` (it owns fd); called on the reaper thread, never with the
 * factory's lock held. NULL cb: connections are closed; it returns after a
 * callback in progress ended, so the caller may free ud. */
typedef void (*agent_channel_fn)(void *ud, int fd, uint64_t id);
void agent_set_channel(struct agent_factory *f, agent_channel_fn cb, void *ud);
/* The agent name of run id if it is running (true), for the access
 * manager: a connection on a run's channel acts as that run's agent. */
bool agent_run_identity(struct agent_factory *f, uint64_t id, char *name, size_t namelen);

/* The running process whose token this is (0 if none: a run's token dies
 * with its process). Token comparison is in
 * constant time. For the access manager and accounting. */
uint64_t agent_find_token(struct agent_factory *f, const char *token);

/* Account a finished syscall to the agent name (and to the process: run
 * when > 0, the request came on its channel; else the one owning token). */
void agent_account(struct agent_factory *f, uint64_t run, const char *token, const char *agent,
                   enum syscall_kind kind, bool ok, double wait_s, double turnaround_s,
                   int prompt_tokens, int completion_tokens);
/* {"agent name": {usage}, ...} */
json_t *agent_accounting_json(struct agent_factory *f);

/* LLMs selected with POST /user/select/llms (a JSON list, copied) */
void agent_select_llms(struct agent_factory *f, json_t *llms);
/* new reference to the selection (an array, maybe empty) */
json_t *agent_selected_llms(struct agent_factory *f);

#endif
