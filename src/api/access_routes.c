/* The HTTP face of the access manager (src/access/, which decides and
 * never answers a client): the gate before every route handler, the hook
 * before a request's syscall is queued, sending a decision, and the
 * /access routes (all but whoami and budgets need the admin token; the
 * gate enforces that before these run):
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
#include "util/json_dec.h"
#include "util/util.h"

#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum MHD_Result api_send_decision(struct api_req *r, struct acc_decision *d)
{
    assert(!d->allowed);
    json_t *detail = d->detail;
    d->detail = NULL;
    if (detail) return api_send_json(r, d->status, detail);
    return api_send_error(r, d->status, d->type, "%s", d->message);
}

static bool from_loopback(struct api_req *r)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr) return false;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a6) ||
               (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127);
    }
    return false;
}

/* the model an LLM call that names none gets */
static const char *default_model(struct kernel *k)
{
    struct llm_core *dc = kernel_default_core(k);
    return dc ? dc->name : (k->cfg.n_models ? k->cfg.models[0].name : "");
}

bool api_access_gate(struct api_req *r, enum MHD_Result *sent)
{
    struct acc_mgr *m = r->k->access;
    if (!m) return true;
    /* parsed once here, as api_parse_body would (the route takes it); a
     * body it refuses is left to the gate's own parse and the route's 400 */
    if (r->n_body && strcmp(r->method, "GET") && !r->json) {
        json_t *j = json_dec_loadb(r->body, r->n_body, JSON_REJECT_DUPLICATES, NULL);
        if (json_is_object(j)) r->json = j;
        else json_decref(j);
    }
    struct acc_req q = {
        .method = r->method,
        .url = r->url,
        .authorization = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization"),
        .token_header = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                    "X-Aios-Agent-Token"),
        .agent_header = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Aios-Agent"),
        .acc_run = r->acc_run,
        .loopback = from_loopback(r),
        .body = r->body,
        .n_body = r->n_body,
        .body_json = r->json,
        .default_model = default_model(r->k),
    };
    struct acc_decision d;
    bool ok = acc_gate(m, &q, &d);
    util_copy(r->acc_agent, sizeof r->acc_agent, q.acc_agent);
    r->acc_admin = q.acc_admin;
    r->acc_compat = q.acc_compat;
    r->acc_shared = q.acc_shared;
    if (!ok) {
        *sent = api_send_decision(r, &d);
        acc_decision_clear(&d);
        return false;
    }
    /* r->acc_agent lives as long as the request (the OpenAI route reads
     * X-Aios-Agent) */
    if (q.name_agent)
        MHD_set_connection_value(r->conn, MHD_HEADER_KIND, "X-Aios-Agent", r->acc_agent);
    acc_decision_clear(&d);
    return true;
}

int api_access_before_submit(struct api_req *r, struct syscall *sc, enum MHD_Result *sent)
{
    struct acc_decision d;
    int g = acc_before_submit(r->k->access, r->acc_admin, sc, &d);
    if (g < 0) *sent = api_send_decision(r, &d);
    acc_decision_clear(&d);
    return g;
}

enum MHD_Result api_access_agents_register(struct api_req *r)
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

enum MHD_Result api_access_whoami(struct api_req *r)
{
    return api_send_json(r, 200, json_pack("{s:s,s:b,s:b}", "agent", r->acc_agent, "admin",
                                           r->acc_admin, "compat", r->acc_compat));
}

enum MHD_Result api_access_audit(struct api_req *r)
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

enum MHD_Result api_access_approvals(struct api_req *r)
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
    if (rc)
        return api_send_error(r, 503, "service_unavailable", "approval %llu cannot be decided: "
                              "the state database is unavailable; try again", id);
    return api_send_json(r, 200, json_pack("{s:s,s:I,s:s}", "status", "success", "id",
                                           (json_int_t)id, "decision",
                                           approve ? "approved" : "denied"));
}

static const char *body_reason(struct api_req *r, json_t **body)
{
    *body = r->n_body ? json_loadb(r->body, r->n_body, 0, NULL) : NULL;
    return json_string_value(json_object_get(*body, "reason"));
}

enum MHD_Result api_access_approve(struct api_req *r)
{
    json_t *b;
    const char *why = body_reason(r, &b);
    enum MHD_Result ret = decide(r, true, why);
    json_decref(b);
    return ret;
}

enum MHD_Result api_access_deny(struct api_req *r)
{
    json_t *b;
    const char *why = body_reason(r, &b);
    enum MHD_Result ret = decide(r, false, why);
    json_decref(b);
    return ret;
}

enum MHD_Result api_access_core_approval(struct api_req *r)
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

enum MHD_Result api_access_budgets(struct api_req *r)
{
    const char *agent = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "agent");
    if (!r->acc_admin) agent = r->acc_agent; /* an agent sees its own */
    return api_send_json(r, 200, json_pack("{s:s,s:o}", "status", "success", "budgets",
                                           acc_budgets_json(r->k->access,
                                                            agent && *agent ? agent : NULL)));
}
