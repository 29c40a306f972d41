/* The access manager: identities (admin and agent tokens), the request
 * gate, privilege groups, approvals of irreversible calls, token budgets,
 * namespaces, and the audit log. See access.c (gate, identities, groups,
 * tool approvals), budget.c (token budgets), approve.c (parked storage
 * approvals, the pre-submit hook), ns.c (memory/storage namespaces, memory
 * grants) and audit.c (the SQLite audit log). docs/security.md is the
 * model. */
#ifndef AIOS_ACCESS_ACCESS_H
#define AIOS_ACCESS_ACCESS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct acc_mgr;
struct acc_audit;
struct aios_config;
struct agent_factory;
struct sched;
struct sto;

/* The token a request carries: `Authorization: Bearer T` (scheme in any
 * case, spaces after it skipped), else `X-Aios-Agent-Token: T`; NULL when
 * neither gives a non-empty one. Pure: the header values, or NULL. */
const char *acc_token_of(const char *authorization, const char *agent_token);

/* Privilege decisions on what runs (access.c), one audit row each
 * (agent, syscall, model:NAME / tool:NAME, action, decision, reason).
 * by_agent: the call is made with an agent's identity (false: the
 * operator's, never bound). 0, or AIOS_EPERM with the reason in err
 * ("agent 'a' (group 'g') may not use model 'm'" / "... call tool 't'").
 * model: the LLM syscall's core's name; tool: the registered tool's name.
 * NULL m: 0. */
int acc_check_model(struct acc_mgr *m, const char *agent, bool by_agent, uint64_t sc_id,
                    const char *model, char *err, size_t errlen);
int acc_check_tool(struct acc_mgr *m, const char *agent, bool by_agent, uint64_t sc_id,
                   const char *tool, const char *action, char *err, size_t errlen);
/* access.mode is compat (tokenless loopback requests are trusted as the
 * operator; the API then refuses what a web page could send: api/compat.c).
 * NULL m: false. */
bool acc_compat_mode(struct acc_mgr *m);

struct syscall;
struct tool;

#define ACC_NAME_MAX 128

/* What the access manager needs, given at creation (all but cfg may be
 * NULL). The kernel wires access's hooks into the managers itself
 * (acc_tool_approval, acc_budget_on_final, acc_ns_storage_policy). */
struct acc_deps {
    const struct aios_config *cfg; /* access:, data_dir */
    struct agent_factory *agents;  /* per-run tokens of launched agents */
    struct sched *sched;           /* queues approved storage calls */
    struct sto *storage;           /* which storage calls lose data */
};

/* Creates data_dir/admin.token (0600) on first start, opens
 * data_dir/audit.db, starts the approval thread. */
int acc_start(struct acc_mgr **out, const struct acc_deps *deps, char *err, size_t errlen);
/* Deny every pending approval and refuse new ones (before tool pools are
 * joined, while storage and the scheduler still run). NULL-safe. */
void acc_quiesce(struct acc_mgr *m);
/* After the API stopped and the hooks were removed: flush the audit log,
 * free. NULL-safe. */
void acc_stop(struct acc_mgr *m);

/* ---- decisions ----
 * The access manager never answers a client: it returns a decision, and
 * the API layer answers with it. A decision that was audited carries the
 * row it wrote. */
struct acc_decision {
    bool allowed;
    unsigned status;     /* refused: the HTTP status (401, 403, 429, 500, 503) */
    const char *type;    /* refused: the error type (authentication_error, ...) */
    char message[768];   /* refused: what the caller is told */
    json_t *detail;      /* refused, or NULL: the whole error body to send instead of
                          * {"error":{message,type}} (owned; acc_decision_clear) */
    /* the audit row (agent empty: none was written) */
    char agent[ACC_NAME_MAX];
    char operation[160]; /* e.g. "POST /query", "llm" */
    char target[300];    /* route, model:NAME, tool:NAME, budget:MODEL */
    const char *decision; /* allowed, denied, ... */
    char reason[768];
};
/* frees detail (when not handed on) */
void acc_decision_clear(struct acc_decision *d);

/* A request as the gate sees it: what the API read off the connection,
 * and (out) who the gate found. */
struct acc_req {
    const char *method, *url;
    const char *authorization; /* the Authorization header, or NULL */
    const char *token_header;  /* X-Aios-Agent-Token, or NULL */
    const char *agent_header;  /* X-Aios-Agent, or NULL */
    uint64_t acc_run;          /* > 0: arrived on this agent run's own channel */
    bool loopback;             /* the peer is 127.0.0.0/8 or ::1 */
    const char *body;          /* the complete body (n_body bytes) */
    size_t n_body;
    /* the body already parsed by the caller (borrowed), or NULL: the
     * gate parses it itself */
    json_t *body_json;
    const char *default_model; /* the model an LLM call naming none gets */
    /* out: the acting agent ("admin" for the operator), whether the
     * admin token was used, whether compat mode trusted a tokenless call */
    char acc_agent[ACC_NAME_MAX];
    bool acc_admin, acc_compat;
    /* out: the identity is a registered agent's token (POST /access/agents),
     * which every kernel sharing the store knows; not a run's, not the
     * admin's (each kernel has its own) */
    bool acc_shared;
    /* out: an agent's chat call that names no agent: the API names it
     * (X-Aios-Agent: acc_agent) */
    bool name_agent;
};

/* The gate, run by the API before every route handler (body complete).
 * True when the request may go on; false with d refused (401/403). Every
 * decision but the open routes' is an audit row (d carries it). */
bool acc_gate(struct acc_mgr *m, struct acc_req *r, struct acc_decision *d);

/* Run by the API before it queues a syscall for a request (after the
 * gate); admin: the request used the admin token. LLM calls: the token
 * budget of the agent's group (budget.c), 429 when it would be exceeded.
 * Storage calls that would lose data for good: parked until the operator
 * decides (approve.c). Returns 0: queue it; 1: parked (do not queue; it is
 * queued or failed later, the waiter is woken as usual); -1: refused, d
 * says how. */
int acc_before_submit(struct acc_mgr *m, bool admin, struct syscall *sc, struct acc_decision *d);
/* For storage syscalls queued by the kernel itself (the file tools, on a
 * tool thread): 1 when the call would lose data for good and is now parked
 * for the operator (do not queue it; it is queued or failed later and its
 * notify runs as usual), 0 to queue it, or a negative AIOS_E* with err. */
int acc_storage_hold(struct acc_mgr *m, struct syscall *sc, char *err, size_t errlen);
/* the call could not be queued after all: give back its budget reservation */
void acc_budget_unreserve(struct acc_mgr *m, struct syscall *sc);
/* token budget usage rows [{agent, model, group, used, reserved, limit,
 * remaining, window_s, resets_at, used_total, calls, denied}]; agent NULL: all */
json_t *acc_budgets_json(struct acc_mgr *m, const char *agent);

/* ---- hooks the kernel installs in the managers (ud: the acc_mgr) ---- */
/* the tool manager's approval hook (tool_approval_fn): an irreversible
 * tool waits for the operator on its tool thread */
int acc_tool_approval(void *ud, struct syscall *sc, const struct tool *t, json_t *args,
                      char *err, size_t errlen);
/* the tool manager's permit hook (tool_permit_fn): the privilege group
 * check of the tool a call resolved to, with its audit row */
int acc_tool_permit(void *ud, struct syscall *sc, const struct tool *t, char *err,
                    size_t errlen);
/* the scheduler's final hook: charges the token budgets */
void acc_budget_on_final(struct syscall *sc, void *ud);
/* storage's namespace policy hook (sto_ns_policy_fn) */
int acc_ns_storage_policy(void *ud, const char *agent, const char *owner, const char *path,
                          bool write, int share_rc);

/* ---- memory namespaces (ns.c) ----
 * May agent use owner's memory (write: add/update/remove)? 0 when agent
 * is owner, its privilege group names owner under `memory`, or owner
 * shared it (share_memory) and the grant is live; AIOS_EPERM when only
 * reading is allowed and write was asked; else AIOS_ENOTFOUND (answer 404:
 * nothing about owner's notes leaks). Denials and cross-namespace uses are
 * audited. NULL m: only agent's own. */
int acc_ns_memory_check(struct acc_mgr *m, const char *agent, const char *owner, bool write,
                        const char *op);
/* owner lets grantee read (or also write) its memory until expires_in_s
 * from now (0: no expiry); again: replaces. 0 or AIOS_EINVAL with err. */
int acc_mem_share(struct acc_mgr *m, const char *owner, const char *grantee, bool write,
                  int64_t expires_in_s, char *err, size_t errlen);
/* 0, or AIOS_ENOTFOUND when there was no such grant */
int acc_mem_unshare(struct acc_mgr *m, const char *owner, const char *grantee);
/* {"given":[...], "received":[...]}: {owner, grantee, mode, created, expires} */
json_t *acc_mem_shares_json(struct acc_mgr *m, const char *agent);

/* ---- audit log (audit.c) ---- */
struct acc_audit_row {
    const char *agent;    /* acting agent, or "admin" / "-" */
    uint64_t syscall_id;  /* 0 when none */
    const char *resource; /* route, model:NAME, tool:NAME, approval:ID */
    const char *action;   /* e.g. "POST /query", "llm", "tool_call" */
    const char *decision; /* allowed, denied, approved, denied_timeout, awaiting_approval */
    const char *reason;
};
struct acc_store;
struct acc_store_ops;
/* the audit log over an open store (not owned: close the log first) */
int acc_audit_open(struct acc_audit **out, const struct acc_store_ops *ops,
                   struct acc_store *st, char *err, size_t errlen);
/* queue a row (copied); written by the audit thread */
void acc_audit_add(struct acc_audit *a, const struct acc_audit_row *row);
/* wait until every queued row is written */
void acc_audit_flush(struct acc_audit *a);
/* rows, newest last; agent may be NULL, since_s 0 for all, limit > 0 */
json_t *acc_audit_query(struct acc_audit *a, const char *agent, double since_s, int limit,
                        char *err, size_t errlen);
void acc_audit_close(struct acc_audit *a);

/* for the API's /access routes: */
int acc_register_agent(struct acc_mgr *m, const char *name, char *token_out, size_t toklen,
                       char *err, size_t errlen);
json_t *acc_approvals_json(struct acc_mgr *m);
/* approve (true) or deny a pending approval (with a shared store, any kernel's); 0,
 * AIOS_ENOTFOUND, AIOS_EINVAL (decided), AIOS_EIO (the shared store failed) */
int acc_decide(struct acc_mgr *m, uint64_t id, bool approve, const char *reason);
struct acc_audit *acc_mgr_audit(struct acc_mgr *m);

#endif
