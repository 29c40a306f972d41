/* HTTP routes of the access manager (all but whoami need the admin token;
 * the gate in access.c enforces that before these run):
 *
 *   POST /access/agents                 {"name"} -> {"name","token"}: register
 *                                       an agent not launched by the kernel
 *                                       (again: a new token, the old one dies)
 *   GET  /access/whoami                 the identity of the caller's token
 *   GET  /access/audit?agent=&since=&limit=   audit rows, oldest first
 *   GET  /access/approvals              pending approvals
 *   POST /access/approvals/{id}/approve {"reason"?}
 *   POST /access/approvals/{id}/deny    {"reason"?}
 *   POST /core/approvals/{id}           {"decision":"approve"|"deny","reason"?}
 *   GET  /access/budgets?agent=         token budget usage (an agent token:
 *                                       its own rows only)
 *
 * Handlers run on an HTTP thread and answer at once (the audit query reads
 * SQLite on its own connection). */
#include "access/access.h"

#include "api/api.h"
#include "kernel/kernel.h"
#include "util/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum MHD_Result acc_route_agents_register(struct api_req *r)
{
    enum MHD_Result sent;
    json_t *body = api_parse_body(r, &sent);
    if (!body) return sent;
    const char *name = json_string_value(json_object_get(body, "name"));
    if (!name) {
        json_decref(body);
        return api_send_error(r, 400, "invalid_request_error",
                              "'name' (the agent's name, a string) is required");
    }
    char tok[80], err[256] = "";
    int rc = acc_register_agent(r->k->access, name, tok, sizeof tok, err, sizeof err);
    if (rc) {
        json_decref(body);
        const char *type;
        unsigned st = api_status_for(rc, &type);
        return api_send_error(r, st, type, "%s", err[0] ? err : aios_strerror(rc));
    }
    json_t *o = json_pack("{s:s,s:s,s:s}", "status", "success", "name", name, "token", tok);
    json_decref(body);
    return api_send_json(r, 201, o);
}

enum MHD_Result acc_route_whoami(struct api_req *r)
{
    return api_send_json(r, 200, acc_whoami(r));
}

enum MHD_Result acc_route_audit(struct api_req *r)
{
    const char *agent = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "agent");
    const char *since = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "since");
    const char *limit = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "limit");
    double since_s = 0;
    long lim = 1000;
    char *end;
    if (since && *since) {
        since_s = strtod(since, &end);
        if (*end || since_s < 0)
            return api_send_error(r, 400, "invalid_request_error",
                                  "'since' must be unix seconds (e.g. 1767000000.5), got '%s'",
                                  since);
    }
    if (limit && *limit) {
        lim = strtol(limit, &end, 10);
        if (*end || lim < 1 || lim > 100000)
            return api_send_error(r, 400, "invalid_request_error",
                                  "'limit' must be an integer from 1 to 100000");
    }
    char err[256] = "";
    json_t *rows = acc_audit_query(acc_mgr_audit(r->k->access), agent && *agent ? agent : NULL,
                                   since_s, (int)lim, err, sizeof err);
    if (!rows) return api_send_error(r, 500, "server_error", "%s", err);
    return api_send_json(r, 200, json_pack("{s:s,s:o}", "status", "success", "audit", rows));
}

enum MHD_Result acc_route_approvals(struct api_req *r)
{
    return api_send_json(r, 200, json_pack("{s:s,s:o}", "status", "success", "approvals",
                                           acc_approvals_json(r->k->access)));
}

static enum MHD_Result decide(struct api_req *r, bool approve, const char *reason)
{
    char *end;
    unsigned long long id = strtoull(r->params[0], &end, 10);
    if (*end || !id)
        return api_send_error(r, 400, "invalid_request_error",
                              "'%s' is not an approval id (a positive integer; see GET "
                              "/access/approvals)", r->params[0]);
    int rc = acc_decide(r->k->access, id, approve, reason);
    if (rc == AIOS_ENOTFOUND)
        return api_send_error(r, 404, "not_found_error",
                              "no pending approval %llu (decided, timed out, or never asked; see "
                              "GET /access/approvals)", id);
    if (rc == AIOS_EINVAL)
        return api_send_error(r, 409, "invalid_request_error", "approval %llu is already decided",
                              id);
    return api_send_json(r, 200, json_pack("{s:s,s:I,s:s}", "status", "success", "id",
                                           (json_int_t)id, "decision",
                                           approve ? "approved" : "denied"));
}

static const char *body_reason(struct api_req *r, json_t **body)
{
    *body = r->n_body ? json_loadb(r->body, r->n_body, 0, NULL) : NULL;
    return json_string_value(json_object_get(*body, "reason"));
}

enum MHD_Result acc_route_approve(struct api_req *r)
{
    json_t *b;
    const char *why = body_reason(r, &b);
    enum MHD_Result ret = decide(r, true, why);
    json_decref(b);
    return ret;
}

enum MHD_Result acc_route_deny(struct api_req *r)
{
    json_t *b;
    const char *why = body_reason(r, &b);
    enum MHD_Result ret = decide(r, false, why);
    json_decref(b);
    return ret;
}

enum MHD_Result acc_route_core_approval(struct api_req *r)
{
    enum MHD_Result sent;
    json_t *body = api_parse_body(r, &sent);
    if (!body) return sent;
    const char *d = json_string_value(json_object_get(body, "decision"));
    if (!d || (strcmp(d, "approve") && strcmp(d, "deny"))) {
        json_decref(body);
        return api_send_error(r, 400, "invalid_request_error",
                              "'decision' must be \"approve\" or \"deny\"");
    }
    enum MHD_Result ret =
        decide(r, !strcmp(d, "approve"), json_string_value(json_object_get(body, "reason")));
    json_decref(body);
    return ret;
}

enum MHD_Result acc_route_budgets(struct api_req *r)
{
    const char *agent = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "agent");
    if (!r->acc_admin) agent = r->acc_agent; /* an agent sees its own */
    return api_send_json(r, 200, json_pack("{s:s,s:o}", "status", "success", "budgets",
                                           acc_budgets_json(r->k->access,
                                                            agent && *agent ? agent : NULL)));
}
