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
#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kernel;
struct api_req;
struct acc_mgr;
struct acc_audit;

/* From k->cfg (`access:`), during kernel_start after the tool manager:
 * creates data_dir/admin.token (0600) on first start, opens
 * data_dir/audit.db, installs the tool approval hook. Sets k->access. */
int acc_start(struct kernel *k, char *err, size_t errlen);
/* Deny every pending approval and refuse new ones (before tool pools are
 * joined). NULL-safe. */
void acc_quiesce(struct kernel *k);
/* After the API stopped: flush the audit log, free. NULL-safe. */
void acc_stop(struct kernel *k);

/* The gate, run by http.c before every route handler (body complete).
 * Returns true when the request may go on; false when it answered it
 * (401/403) and *sent holds MHD's result. */
bool acc_gate(struct api_req *r, enum MHD_Result *sent);

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

/* Run by http.c before it queues a syscall for a request (after the
 * gate). Every call: sc->by_agent from the request's identity. LLM calls:
 * the agent's group must list the model the call runs (its core), else
 * 403; the token budget of the agent's group (budget.c), 429
 * when it would be exceeded. Storage calls that would lose data for good:
 * parked until the operator decides (approve.c). Returns 0: queue it; 1:
 * parked (do not queue; it is queued or failed later, the waiter is woken
 * as usual); -1: refused, the answer is sent and *sent holds MHD's result. */
struct syscall;
int acc_before_submit(struct api_req *r, struct syscall *sc, enum MHD_Result *sent);
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
int acc_audit_open(struct acc_audit **out, const char *path, char *err, size_t errlen);
/* queue a row (copied); written by the audit thread */
void acc_audit_add(struct acc_audit *a, const struct acc_audit_row *row);
/* wait until every queued row is written */
void acc_audit_flush(struct acc_audit *a);
/* rows, newest last; agent may be NULL, since_s 0 for all, limit > 0 */
json_t *acc_audit_query(struct acc_audit *a, const char *agent, double since_s, int limit,
                        char *err, size_t errlen);
void acc_audit_close(struct acc_audit *a);
const char *acc_audit_path(struct acc_audit *a);

/* ---- route handlers (acc_routes.c) ---- */
enum MHD_Result acc_route_agents_register(struct api_req *r); /* POST /access/agents */
enum MHD_Result acc_route_whoami(struct api_req *r);          /* GET /access/whoami */
enum MHD_Result acc_route_audit(struct api_req *r);           /* GET /access/audit */
enum MHD_Result acc_route_approvals(struct api_req *r);       /* GET /access/approvals */
enum MHD_Result acc_route_approve(struct api_req *r);  /* POST /access/approvals/{id}/approve */
enum MHD_Result acc_route_deny(struct api_req *r);     /* POST /access/approvals/{id}/deny */
enum MHD_Result acc_route_core_approval(struct api_req *r); /* POST /core/approvals/{id} */
enum MHD_Result acc_route_budgets(struct api_req *r);  /* GET /access/budgets */

/* for the routes: */
int acc_register_agent(struct acc_mgr *m, const char *name, char *token_out, size_t toklen,
                       char *err, size_t errlen);
json_t *acc_approvals_json(struct acc_mgr *m);
/* approve (true) or deny a pending approval; 0, AIOS_ENOTFOUND, AIOS_EINVAL (decided) */
int acc_decide(struct acc_mgr *m, uint64_t id, bool approve, const char *reason);
struct acc_audit *acc_mgr_audit(struct acc_mgr *m);
/* the identity the gate found for the current request, as JSON */
json_t *acc_whoami(struct api_req *r);

#endif
