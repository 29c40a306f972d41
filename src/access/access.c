/* The access manager: who is calling, may they, and the record of it.
 *
 * Identities. The operator holds the admin token, created on first start
 * in data_dir/admin.token (mode 0600, 64 hex digits). Agents the kernel
 * launches get a per-run token from the agent factory (AIOS_AGENT_TOKEN);
 * agents started elsewhere are registered by the operator with
 * POST /access/agents and get a token whose SHA-256 is kept in the
 * `agents` table of audit.db (the token itself is never stored). A request
 * carries its token as `Authorization: Bearer T` or `X-Aios-Agent-Token: T`.
 *
 * Decisions, not answers: this manager never talks to a client. The gate
 * and the pre-submit hook fill a struct acc_decision (allowed or not, the
 * HTTP status, error type and message, the audit row) from what the API
 * read off the request (struct acc_req), and the API answers with it
 * (api/access_routes.c). What it needs of the kernel (config, agent
 * tokens, scheduler, storage) is given at acc_start; the kernel installs
 * its hooks (acc_tool_approval, acc_budget_on_final, acc_ns_storage_policy).
 *
 * The gate (acc_gate) runs on the HTTP thread for every routed request,
 * after the body arrived and before the handler:
 *   - GET /status, GET /v1/models[/{id}], GET /ui (the page) and GET
 *     /s/TOKEN (a share link: the token is the credential) are open;
 *   - no or unknown token: 401 (in `compat` mode a tokenless request from
 *     loopback is trusted as the operator, as the reference does);
 *   - an agent token may use only the agent routes (/query, chat and
 *     embeddings (OpenAI), GET /tools, GET /access/whoami and the read-only GET
 *     /core/llms/list and /user/selected/llms); everything else (/core/...,
 *     /agents/..., /access/...) needs the admin token: 403;
 *   - the hub's routes (/cerebrum/...) are agent routes; publishing to it
 *     (POST /cerebrum/tools/upload, /cerebrum/upload) needs the admin token
 *     or an agent whose group has publish: true (else 403);
 *   - an agent token claiming another name (agent_name, the `user` field of
 *     a chat request, X-Aios-Agent) is 403: impersonation.
 * Every decision of the gate except the open routes is one audit row.
 * Privilege groups (access.agents -> access.groups) are not the gate's:
 * they are decided on the typed syscall about the model and the tools
 * that actually run (acc_check_model from acc_before_submit, acc_check_tool
 * from the tool manager's permit hook; see "privilege decisions" below),
 * 403 when the group does not list them, one audit row per decision.
 * Memory and storage isolation is done by their managers in the agent's
 * name (which the gate has just proven); which other namespaces a group or
 * grant opens is ns.c's. Token budgets (budget.c) and storage approvals
 * (approve.c) run later, when the request's syscall is about to be queued
 * (acc_before_submit).
 *
 * Approvals. The tool manager calls acc_tool_approval (on a tool pool thread)
 * before a tool marked irreversible runs: the call becomes a pending
 * approval, its syscall's status awaiting_approval, and the thread waits
 * (in 200 ms slices, so a cancelled call or a kernel shutdown ends the
 * wait) until the operator approves or denies it, or
 * access.approval_timeout_s passes (denied). Each step is audited.
 *
 * Several kernels (state.backend postgres, docs/postgres.md): the
 * registered agents and memory grants are then rows every kernel on the
 * database shares; each kernel keeps its copy in memory and reloads both
 * every SHARED_REFRESH_MS (approve.c's thread), so a token replaced or a
 * grant withdrawn on one kernel is refused by every other within that.
 * Each kernel has a random id for this run and a lease in the database
 * (acc_kernel_beat, renewed by the same thread): token reservations and
 * approvals are held under it, and a kernel that stops renewing it for
 * state.lease_s seconds is taken for dead, its reservations given back and
 * its approvals dropped. Approvals are listed and decided on any kernel
 * (approve.c, "Several kernels").
 *
 * Locks: m->mu guards the registered agents and the approval list; it is
 * never held while taking another lock (the audit queue's lock, sc->mu,
 * the agent factory's lock are taken after releasing it).
 * Ownership: the manager owns copies of its config (groups, agent map). */
#include "access/access.h"
#include "access/acc_int.h"

#include "agents/agent.h"
#include "kernel/config.h"
#include "kernel/syscall.h"
#include "storage/sha256.h"
#include "tools/tools.h"
#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

double acc_wall_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static int random_hex(char *out, size_t n_bytes)
{
    unsigned char buf[64];
    if (n_bytes > sizeof buf) return AIOS_EINVAL;
    size_t got = 0;
    while (got < n_bytes) {
        ssize_t n = getrandom(buf + got, n_bytes - got, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return AIOS_EIO;
        }
        got += (size_t)n;
    }
    for (size_t i = 0; i < n_bytes; i++) sprintf(out + 2 * i, "%02x", buf[i]);
    out[2 * n_bytes] = 0;
    return 0;
}

static bool ct_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la != lb) return false;
    unsigned char d = 0;
    for (size_t i = 0; i < la; i++) d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

/* ---- the admin token ---- */

static int admin_token_load(struct acc_mgr *m, const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        struct stat st;
        if (fstat(fd, &st) == 0 && (st.st_mode & 077)) {
            LOG_WARN("access", "%s was readable by others (mode %o); set to 0600", path,
                     (unsigned)(st.st_mode & 0777));
            if (fchmod(fd, 0600)) LOG_WARN("access", "cannot chmod %s", path);
        }
        char buf[128] = "";
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n < 0) n = 0;
        buf[n] = 0;
        while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) buf[--n] = 0;
        if (n < 32 || n > 64) {
            snprintf(err, errlen, "%s does not hold a token (32 to 64 characters); delete it to "
                     "get a new one", path);
            return AIOS_ECONFIG;
        }
        memcpy(m->admin_token, buf, (size_t)n + 1); /* n <= 64 */
        return 0;
    }
    if (errno != ENOENT) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return AIOS_EIO;
    }
    if (random_hex(m->admin_token, 32)) {
        snprintf(err, errlen, "cannot draw a random admin token");
        return AIOS_EIO;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
        return AIOS_EIO;
    }
    char line[80];
    int len = snprintf(line, sizeof line, "%s\n", m->admin_token);
    bool ok = write(fd, line, (size_t)len) == len && fsync(fd) == 0;
    close(fd);
    if (!ok) {
        unlink(path);
        snprintf(err, errlen, "cannot write %s", path);
        return AIOS_EIO;
    }
    LOG_INFO("access", "created the operator's admin token in %s (mode 0600)", path);
    return 0;
}

/* ---- registered agents ---- */

/* replace the registered agents with what the store holds (at start, and
 * every SHARED_REFRESH_MS when several kernels share the store), unless
 * this kernel registered one while the store was read (reg_gen): that
 * read may predate it, and the next reload sees it */
int acc_reg_load(struct acc_mgr *m, char *err, size_t errlen)
{
    struct acc_agent_row *rows = NULL;
    size_t n = 0;
    pthread_mutex_lock(&m->mu);
    uint64_t gen = m->reg_gen;
    pthread_mutex_unlock(&m->mu);
    int rc = m->sops->agents(m->store, &rows, &n, err, errlen);
    if (rc) return rc;
    struct reg_agent *reg = n ? calloc(n, sizeof *reg) : NULL;
    if (n && !reg) {
        free(rows);
        return AIOS_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        snprintf(reg[i].name, ACC_NAME_MAX, "%s", rows[i].name);
        memcpy(reg[i].sha, rows[i].sha, 65);
    }
    free(rows);
    pthread_mutex_lock(&m->mu);
    struct reg_agent *old = m->reg;
    if (m->reg_gen == gen) {
        m->reg = reg;
        m->n_reg = m->cap_reg = n;
    } else {
        old = reg; /* stale: dropped */
    }
    pthread_mutex_unlock(&m->mu);
    free(old);
    return 0;
}

static bool valid_agent_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= ACC_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.' || c == '/' || c == '@'))
            return false;
    }
    return strcmp(s, "admin") != 0;
}

int acc_register_agent(struct acc_mgr *m, const char *name, char *token_out, size_t toklen,
                       char *err, size_t errlen)
{
    if (!valid_agent_name(name)) {
        snprintf(err, errlen, "'name' must be 1 to %d characters of letters, digits and _ - . / @ "
                 "(and not 'admin')", ACC_NAME_MAX - 1);
        return AIOS_EINVAL;
    }
    char tok[65], sha[65];
    if (toklen < sizeof tok || random_hex(tok, 32)) return AIOS_EIO;
    sto_sha256_hex(tok, strlen(tok), sha);
    struct acc_agent_row row = {.created = acc_wall_s()};
    snprintf(row.name, sizeof row.name, "%s", name);
    memcpy(row.sha, sha, 65);
    /* counted before the store changes: a reload that read the store
     * before this row was in it cannot then install its read */
    pthread_mutex_lock(&m->mu);
    m->reg_gen++;
    pthread_mutex_unlock(&m->mu);
    int rc = m->sops->agent_put(m->store, &row, err, errlen);
    if (rc) return rc;
    pthread_mutex_lock(&m->mu);
    m->reg_gen++;
    size_t i;
    for (i = 0; i < m->n_reg; i++)
        if (!strcmp(m->reg[i].name, name)) break;
    if (i == m->n_reg) {
        if (m->n_reg == m->cap_reg) {
            size_t nc = m->cap_reg ? m->cap_reg * 2 : 8;
            struct reg_agent *n = realloc(m->reg, nc * sizeof *n);
            if (!n) {
                pthread_mutex_unlock(&m->mu);
                return AIOS_ENOMEM;
            }
            m->reg = n;
            m->cap_reg = nc;
        }
        m->n_reg++;
    }
    snprintf(m->reg[i].name, ACC_NAME_MAX, "%s", name);
    memcpy(m->reg[i].sha, sha, 65);
    pthread_mutex_unlock(&m->mu);
    snprintf(token_out, toklen, "%s", tok);
    return 0;
}

/* ---- identities ---- */

enum ident { ID_NONE, ID_ADMIN, ID_AGENT };

/* *shared: the identity is a registered agent's (its token digest is a row
 * of the store, the same for every kernel on a shared store) */
static enum ident identify(struct acc_mgr *m, const char *tok, char *name, size_t namelen,
                           bool *shared)
{
    name[0] = 0;
    *shared = false;
    if (!tok || !*tok) return ID_NONE;
    if (ct_equal(tok, m->admin_token)) {
        snprintf(name, namelen, "admin");
        return ID_ADMIN;
    }
    if (m->agents) {
        uint64_t id = agent_find_token(m->agents, tok);
        if (id) {
            json_t *p = agent_proc_json(m->agents, id);
            const char *an = json_string_value(json_object_get(p, "agent_name"));
            if (an) snprintf(name, namelen, "%s", an);
            json_decref(p);
            if (name[0]) return ID_AGENT;
        }
    }
    char sha[65];
    sto_sha256_hex(tok, strlen(tok), sha);
    enum ident r = ID_NONE;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->n_reg; i++) {
        if (ct_equal(sha, m->reg[i].sha)) {
            snprintf(name, namelen, "%s", m->reg[i].name);
            r = ID_AGENT;
            *shared = true;
            break;
        }
    }
    pthread_mutex_unlock(&m->mu);
    return r;
}

const char *acc_token_of(const char *authorization, const char *agent_token)
{
    const char *a = authorization;
    if (a && !strncasecmp(a, "Bearer ", 7)) {
        a += 7;
        while (*a == ' ') a++;
        if (*a) return a;
    }
    return agent_token && *agent_token ? agent_token : NULL;
}

static const char *request_token(const struct acc_req *r)
{
    return acc_token_of(r->authorization, r->token_header);
}

/* ---- privilege groups ---- */

/* the agent's group object, or NULL (unrestricted) */
json_t *acc_group_of(struct acc_mgr *m, const char *agent, const char **gname)
{
    const char *g = json_string_value(json_object_get(m->agent_groups, agent));
    if (!g) g = m->default_group;
    *gname = g;
    return g ? json_object_get(m->groups, g) : NULL;
}

/* is `what` in the group's list `key`? A missing list allows everything;
 * "*" in the list too. */
static bool group_allows(json_t *grp, const char *key, const char *what)
{
    json_t *l = json_object_get(grp, key);
    if (!grp || !l) return true;
    size_t i;
    json_t *v;
    json_array_foreach(l, i, v) {
        const char *s = json_string_value(v);
        if (s && (!strcmp(s, "*") || !strcmp(s, what))) return true;
    }
    return false;
}

/* ---- privilege decisions on what runs ----
 *
 * Made on the typed syscall, about the value that runs: the model is the
 * LLM syscall's core (its target, resolved once from the request, the
 * selection or the default; acc_before_submit), a tool is the registered
 * tool its call resolved to (the tool manager's permit hook, on the TOOL
 * pool thread, before anything runs). Never on a field of the request
 * body, which another field could override. */

static int decide(struct acc_mgr *m, const char *agent, bool by_agent, uint64_t sc_id,
                  bool tool, const char *what, const char *action, char *err, size_t errlen)
{
    const char *kind = tool ? "tool" : "model";
    char res[300], why[512];
    snprintf(res, sizeof res, "%s:%s", kind, what);
    const char *gname = NULL;
    json_t *grp = by_agent ? acc_group_of(m, agent, &gname) : NULL;
    int rc = 0;
    if (!by_agent)
        snprintf(why, sizeof why, "the operator's call (admin token or compat mode): privilege "
                 "groups bind agent identities only");
    else if (!grp)
        snprintf(why, sizeof why, "agent '%s' has no privilege group: every %s is allowed", agent,
                 kind);
    else if (group_allows(grp, tool ? "tools" : "models", what))
        snprintf(why, sizeof why, "group '%s' of agent '%s' allows %s '%s'", gname, agent, kind,
                 what);
    else {
        rc = AIOS_EPERM;
        snprintf(why, sizeof why, "agent '%s' (group '%s') may not %s '%s'", agent, gname,
                 tool ? "call tool" : "use model", what);
    }
    acc_audit_row(m, agent, sc_id, res, action, rc ? "denied" : "allowed", why);
    if (rc) {
        snprintf(err, errlen, "%s", why);
        LOG_INFO("access", "denied %s %s: %s", action, res, why);
    }
    return rc;
}

int acc_check_model(struct acc_mgr *m, const char *agent, bool by_agent, uint64_t sc_id,
                    const char *model, char *err, size_t errlen)
{
    if (!m) return 0;
    return decide(m, agent, by_agent, sc_id, false, model, "llm", err, errlen);
}

int acc_check_tool(struct acc_mgr *m, const char *agent, bool by_agent, uint64_t sc_id,
                   const char *tool, const char *action, char *err, size_t errlen)
{
    if (!m) return 0;
    return decide(m, agent, by_agent, sc_id, true, tool, action, err, errlen);
}

bool acc_compat_mode(struct acc_mgr *m) { return m && m->compat; }

int acc_tool_permit(void *ud, struct syscall *sc, const struct tool *t, char *err,
                    size_t errlen)
{
    if (!sc) return 0; /* the kernel's own calls */
    const char *prev = log_set_request_id(sc->request_id); /* a pool thread's audit row */
    int rc = acc_check_tool(ud, sc->agent ? sc->agent : "-", sc->by_agent, sc->id, t->name,
                            "tool_call", err, errlen);
    log_set_request_id(prev);
    return rc;
}

/* ---- the gate ---- */

void acc_audit_row(struct acc_mgr *m, const char *agent, uint64_t sc_id, const char *resource,
                   const char *action, const char *decision, const char *reason)
{
    struct acc_audit_row row = {agent, sc_id, resource, action, decision, reason};
    acc_audit_add(m->audit, &row);
}

/* the hub's publishing routes (Cerebrum's upload_tool / upload_agent) */
static bool is_publish_route(const char *method, const char *url)
{
    return !strcmp(method, "POST") &&
           (!strcmp(url, "/cerebrum/tools/upload") || !strcmp(url, "/cerebrum/upload"));
}

/* the hub's read routes (Cerebrum's download, list, check_updates) */
static bool is_hub_read_route(const char *method, const char *url)
{
    return !strcmp(method, "GET") &&
           (!strcmp(url, "/cerebrum/tools/download") || !strcmp(url, "/cerebrum/tools/list") ||
            !strcmp(url, "/cerebrum/tools/check_updates") || !strcmp(url, "/cerebrum/download") ||
            !strcmp(url, "/cerebrum/get_all_agents") || !strcmp(url, "/cerebrum/check_updates"));
}

static bool is_agent_route(const char *method, const char *url)
{
    if (is_publish_route(method, url) || is_hub_read_route(method, url)) return true;
    if (!strcmp(method, "POST"))
        return !strcmp(url, "/query") || !strcmp(url, "/v1/chat/completions") ||
               !strcmp(url, "/chat/completions") || !strcmp(url, "/v1/responses") ||
               !strcmp(url, "/v1/embeddings") || !strcmp(url, "/embeddings");
    /* an agent's own stored responses (the route finds only its own) */
    if ((!strcmp(method, "GET") || !strcmp(method, "DELETE")) &&
        !strncmp(url, "/v1/responses/", 14) && url[14] && !strchr(url + 14, '/'))
        return true;
    /* read-only discovery the Cerebrum SDK does from inside agents */
    if (!strcmp(method, "GET"))
        return !strcmp(url, "/tools") || !strcmp(url, "/access/whoami") ||
               !strcmp(url, "/core/llms/list") || !strcmp(url, "/user/selected/llms") ||
               !strcmp(url, "/access/budgets") || !strcmp(url, "/ui/state");
    return false;
}

void acc_decision_clear(struct acc_decision *d)
{
    if (!d) return;
    json_decref(d->detail);
    d->detail = NULL;
}

static void vrefuse(struct acc_decision *d, unsigned status, const char *type, const char *fmt,
                    va_list ap)
{
    d->allowed = false;
    d->status = status;
    d->type = type;
    vsnprintf(d->message, sizeof d->message, fmt, ap);
}

void acc_refuse_plain(struct acc_decision *d, unsigned status, const char *type,
                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vrefuse(d, status, type, fmt, ap);
    va_end(ap);
}

/* the decision's row, not written to the audit log */
static void decision_fill(struct acc_mgr *m, struct acc_decision *d, const char *agent,
                          uint64_t sc_id, const char *target, const char *operation,
                          const char *decision, const char *reason)
{
    (void)m;
    (void)sc_id;
    util_copy(d->agent, sizeof d->agent, agent);
    util_copy(d->target, sizeof d->target, target);
    util_copy(d->operation, sizeof d->operation, operation);
    d->decision = decision;
    util_copy(d->reason, sizeof d->reason, reason);
}

/* ... and written to it */
static void decision_row(struct acc_mgr *m, struct acc_decision *d, const char *agent,
                         uint64_t sc_id, const char *target, const char *operation,
                         const char *decision, const char *reason)
{
    decision_fill(m, d, agent, sc_id, target, operation, decision, reason);
    acc_audit_row(m, agent, sc_id, target, operation, decision, reason);
}

void acc_refuse(struct acc_mgr *m, struct acc_decision *d, unsigned status, const char *type,
                const char *agent, uint64_t sc_id, const char *target, const char *operation,
                const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vrefuse(d, status, type, fmt, ap);
    va_end(ap);
    decision_row(m, d, agent, sc_id, target, operation, "denied", d->message);
}

static bool deny(struct acc_mgr *m, struct acc_req *r, struct acc_decision *d, unsigned status,
                 const char *agent, const char *resource, const char *action, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));

static bool deny(struct acc_mgr *m, struct acc_req *r, struct acc_decision *d, unsigned status,
                 const char *agent, const char *resource, const char *action, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vrefuse(d, status, status == 401 ? "authentication_error" : "permission_error", fmt, ap);
    va_end(ap);
    decision_row(m, d, agent, 0, resource, action, "denied", d->message);
    LOG_INFO("access", "denied %s %s for %s: %s", r->method, r->url, agent, d->message);
    return false;
}

bool acc_gate(struct acc_mgr *m, struct acc_req *r, struct acc_decision *d)
{
    *d = (struct acc_decision){.allowed = true};
    if (!m) return true;
    const char *method = r->method, *url = r->url;
    /* GET /s/TOKEN: a share link, the token is its credential (the
     * handler audits each use) */
    if (!strcmp(method, "GET") && (!strcmp(url, "/status") || !strcmp(url, "/v1/models") ||
                                   !strncmp(url, "/v1/models/", 11) || !strcmp(url, "/ui") ||
                                   !strncmp(url, "/s/", 3)))
        return true;
    char action[160];
    snprintf(action, sizeof action, "%s %s", method, url);

    /* a run's own channel: the run is the identity, a token is not needed
     * and cannot change it (the channel is the kernel's, not the agent's) */
    const char *tok = r->acc_run ? NULL : request_token(r);
    char name[ACC_NAME_MAX];
    enum ident id = ID_NONE;
    if (r->acc_run) {
        if (!m->agents || !agent_run_identity(m->agents, r->acc_run, name, sizeof name))
            return deny(m, r, d, 401, "-", url, action,
                        "agent run %llu has ended: its channel no longer acts for it",
                        (unsigned long long)r->acc_run);
        id = ID_AGENT;
    } else {
        id = identify(m, tok, name, sizeof name, &r->acc_shared);
    }
    if (id == ID_NONE) {
        if (m->compat && !tok && r->loopback) {
            id = ID_ADMIN;
            snprintf(name, sizeof name, "admin");
            r->acc_compat = true;
        } else if (!tok) {
            return deny(m, r, d, 401, "-", url, action,
                        "this request carries no token: send 'Authorization: Bearer TOKEN' (the "
                        "operator's token is in data_dir/admin.token; agents get "
                        "AIOS_AGENT_TOKEN)");
        } else {
            return deny(m, r, d, 401, "-", url, action,
                        "the token is not valid (not the admin token, not a running agent's, not "
                        "a registered agent's)");
        }
    }
    r->acc_admin = id == ID_ADMIN;
    util_copy(r->acc_agent, sizeof r->acc_agent, name);

    if (id == ID_AGENT && !is_agent_route(method, url))
        return deny(m, r, d, 403, name, url, action,
                    "%s %s needs the operator's admin token; agent '%s' may use /query, /v1/responses, "
                    "/v1/chat/completions, /v1/embeddings, GET /tools, GET /core/llms/list, GET "
                    "/user/selected/llms, GET /access/budgets, GET /access/whoami and the hub's "
                    "/cerebrum/... routes", method, url, name);

    /* publishing to the hub: the operator, or an agent whose group has
     * publish: true (agents without a group may not: the hub is shared) */
    if (id == ID_AGENT && is_publish_route(method, url)) {
        const char *gname = NULL;
        json_t *grp = acc_group_of(m, name, &gname);
        if (!json_is_true(json_object_get(grp, "publish")))
            return deny(m, r, d, 403, name, url, action,
                        "agent '%s' may not publish to the hub: its privilege group%s%s%s has no "
                        "publish: true (the operator publishes with the admin token, e.g. aios hub "
                        "add FOLDER)", name, gname ? " '" : "", gname ? gname : " (none)",
                        gname ? "'" : "");
    }

    /* what the request says about itself */
    json_t *body = NULL;
    if (r->body_json) body = json_incref(r->body_json);
    else if (r->n_body && strcmp(method, "GET")) body = json_loadb(r->body, r->n_body, 0, NULL);
    bool chat = !strcmp(url, "/v1/chat/completions") || !strcmp(url, "/chat/completions") ||
                !strcmp(url, "/v1/responses") || !strcmp(url, "/v1/embeddings") || !strcmp(url, "/embeddings");
    bool query = !strcmp(url, "/query");
    const char *claims[3] = {
        r->agent_header,
        query ? json_string_value(json_object_get(body, "agent_name")) : NULL,
        chat ? json_string_value(json_object_get(body, "user")) : NULL,
    };
    const char *acting = id == ID_AGENT ? name : NULL;
    for (int i = 0; i < 3; i++) {
        if (!claims[i] || !*claims[i]) continue;
        if (id == ID_AGENT && strcmp(claims[i], name) != 0) {
            char claimed[ACC_NAME_MAX];
            snprintf(claimed, sizeof claimed, "%s", claims[i]);
            json_decref(body);
            return deny(m, r, d, 403, name, url, action,
                        "the %s belongs to agent '%s', which may not act as '%s'",
                        r->acc_run ? "run channel" : "token", name, claimed);
        }
        if (!acting) acting = claims[i];
    }
    if (!acting) acting = name;
    if (id == ID_ADMIN && acting != name) /* the operator acting as an agent */
        snprintf(r->acc_agent, sizeof r->acc_agent, "%s", acting);

    json_decref(body);
    /* an agent's chat call that names no agent is its own: the OpenAI route
     * reads X-Aios-Agent (r->acc_agent lives as long as the request) */
    r->name_agent = id == ID_AGENT && chat && !claims[0] && !claims[2];
    /* the dashboard polls its snapshot every second: a read that would
     * bury the audit log (denials of it are audited above) */
    bool quiet = !strcmp(method, "GET") && !strcmp(url, "/ui/state");
    (quiet ? decision_fill : decision_row)(m, d, r->acc_agent, 0, url, action, "allowed",
          r->acc_compat ? "compat mode: tokenless loopback request trusted"
          : id == ID_ADMIN ? "admin token" : r->acc_run ? "run channel" : "agent token");
    return true;
}

/* ---- approvals ---- */

static void appr_unlink_locked(struct acc_mgr *m, struct approval *a)
{
    for (struct approval **p = &m->approvals; *p; p = &(*p)->next)
        if (*p == a) {
            *p = a->next;
            return;
        }
}

static void set_status(struct syscall *sc, enum syscall_status s)
{
    if (!sc) return;
    pthread_mutex_lock(&sc->mu);
    if (!syscall_status_final(sc->status)) sc->status = s;
    pthread_mutex_unlock(&sc->mu);
}

int acc_tool_approval(void *ud, struct syscall *sc, const struct tool *t, json_t *args,
                         char *err, size_t errlen)
{
    struct acc_mgr *m = ud;
    const char *agent = sc && sc->agent ? sc->agent : "-";
    uint64_t sc_id = sc ? sc->id : 0;
    struct approval *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return AIOS_ENOMEM;
    }
    a->sc_id = sc_id;
    snprintf(a->agent, sizeof a->agent, "%s", agent);
    snprintf(a->tool, sizeof a->tool, "%s", t->name);
    a->args = json_dumps(args, JSON_COMPACT);
    a->created = acc_wall_s();
    a->deadline = a->created + m->approval_timeout_s;
    char res[256];
    snprintf(res, sizeof res, "tool:%s", t->name);

    if (m->shared && acc_appr_share(m, a, "tool")) { /* its id: the row's */
        free(a->args);
        free(a);
        snprintf(err, errlen, "denied: the approval cannot be recorded (the state database is "
                 "unavailable)");
        acc_audit_row(m, agent, sc_id, res, "tool_call", "denied", err);
        return AIOS_EPERM;
    }
    pthread_mutex_lock(&m->mu);
    if (m->stopping) {
        pthread_mutex_unlock(&m->mu);
        if (m->shared) acc_appr_unshare(m, a->id);
        free(a->args);
        free(a);
        snprintf(err, errlen, "denied: the kernel is shutting down");
        acc_audit_row(m, agent, sc_id, res, "tool_call", "denied", err);
        return AIOS_EPERM;
    }
    if (!m->shared) a->id = ++m->next_approval;
    a->next = m->approvals;
    m->approvals = a;
    uint64_t aid = a->id;
    pthread_mutex_unlock(&m->mu);

    char why[300];
    snprintf(why, sizeof why, "approval %llu: %s is irreversible; waiting up to %d s for the operator",
             (unsigned long long)aid, t->name, m->approval_timeout_s);
    acc_audit_row(m, agent, sc_id, res, "tool_call", "awaiting_approval", why);
    LOG_WARN("access", "%s wants to run %s (irreversible): `aios approve %llu` or `aios deny %llu`",
             agent, t->name, (unsigned long long)aid, (unsigned long long)aid);
    set_status(sc, SYSCALL_STATUS_AWAITING_APPROVAL);

    enum appr_state st;
    bool timed_out = false, cancelled = false;
    pthread_mutex_lock(&m->mu);
    for (;;) {
        st = a->state;
        if (st != APPR_PENDING || m->stopping) break;
        if (acc_wall_s() >= a->deadline) {
            timed_out = true;
            break;
        }
        pthread_mutex_unlock(&m->mu);
        cancelled = sc && syscall_cancel_requested(sc);
        pthread_mutex_lock(&m->mu);
        if (cancelled) break;
        struct timespec ts;
        util_mono_in_ms(&ts, 200);
        if (a->state == APPR_PENDING && !m->stopping) pthread_cond_timedwait(&m->cv, &m->mu, &ts);
    }
    st = a->state;
    char reason[256];
    snprintf(reason, sizeof reason, "%s", a->reason);
    appr_unlink_locked(m, a);
    bool stopping = m->stopping;
    pthread_mutex_unlock(&m->mu);
    if (m->shared) acc_appr_unshare(m, aid);
    free(a->args);
    free(a);
    set_status(sc, SYSCALL_STATUS_RUNNING);

    if (st == APPR_APPROVED) {
        snprintf(why, sizeof why, "approval %llu approved by the operator%s%s",
                 (unsigned long long)aid, reason[0] ? ": " : "", reason);
        acc_audit_row(m, agent, sc_id, res, "tool_call", "approved", why);
        return 0;
    }
    const char *decision = "denied";
    if (st == APPR_DENIED)
        snprintf(err, errlen, "approval %llu: the operator denied %s%s%s", (unsigned long long)aid,
                 t->name, reason[0] ? ": " : "", reason);
    else if (timed_out) {
        decision = "denied_timeout";
        snprintf(err, errlen, "approval %llu: %s was denied because no operator approved it "
                 "within %d s (access.approval_timeout_s)", (unsigned long long)aid, t->name,
                 m->approval_timeout_s);
    } else if (cancelled)
        snprintf(err, errlen, "approval %llu: the caller went away", (unsigned long long)aid);
    else if (stopping)
        snprintf(err, errlen, "approval %llu: denied, the kernel is shutting down",
                 (unsigned long long)aid);
    else
        snprintf(err, errlen, "approval %llu: denied", (unsigned long long)aid);
    acc_audit_row(m, agent, sc_id, res, "tool_call", decision, err);
    return AIOS_EPERM;
}

json_t *acc_approvals_json(struct acc_mgr *m)
{
    if (m->shared) { /* every live kernel's */
        json_t *all = NULL;
        char err[512] = "";
        if (!m->sops->appr_list(m->store, &all, err, sizeof err)) return all;
        LOG_ERROR("access", "%s; listing this kernel's approvals only", err);
    }
    json_t *arr = json_array();
    pthread_mutex_lock(&m->mu);
    for (struct approval *a = m->approvals; a; a = a->next) {
        if (a->state != APPR_PENDING) continue;
        json_t *args = a->args ? json_loads(a->args, 0, NULL) : NULL;
        json_t *o = json_pack("{s:I,s:I,s:s,s:s,s:o,s:f,s:f,s:s,s:s}", "id", (json_int_t)a->id,
                              "syscall_id", (json_int_t)a->sc_id, "agent", a->agent, "tool",
                              a->tool, "arguments", args ? args : json_null(), "created",
                              a->created, "deadline", a->deadline, "status", "awaiting_approval",
                              "kind", a->parked_sc ? "storage" : "tool");
        if (o && a->what[0]) json_object_set_new(o, "what", json_string(a->what));
        json_array_append_new(arr, o);
    }
    pthread_mutex_unlock(&m->mu);
    return arr;
}

int acc_decide(struct acc_mgr *m, uint64_t id, bool approve, const char *reason)
{
    if (m->shared) { /* the row decides (whichever kernel holds the call) */
        char err[512] = "";
        int rc = m->sops->appr_decide(m->store, (int64_t)id, approve, reason, err, sizeof err);
        if (rc == AIOS_EIO) LOG_ERROR("access", "%s", err);
        if (rc) return rc;
        /* one of ours: ended now rather than at the next read of the rows */
    }
    int rc = m->shared ? 0 : AIOS_ENOTFOUND;
    pthread_mutex_lock(&m->mu);
    for (struct approval *a = m->approvals; a; a = a->next) {
        if (a->id != id) continue;
        if (a->state != APPR_PENDING) {
            if (!m->shared) rc = AIOS_EINVAL; /* shared: the row said it was pending */
            break;
        }
        a->state = approve ? APPR_APPROVED : APPR_DENIED;
        snprintf(a->reason, sizeof a->reason, "%s", reason ? reason : "");
        pthread_cond_broadcast(&m->cv);
        rc = 0;
        break;
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

struct acc_audit *acc_mgr_audit(struct acc_mgr *m) { return m ? m->audit : NULL; }

/* ---- lifecycle ---- */

static int read_config(struct acc_mgr *m, const struct aios_config *cfg, char *err, size_t errlen)
{
    json_t *mode = config_lookup(cfg, "access.mode");
    m->compat = false;
    if (mode) {
        const char *s = json_string_value(mode);
        if (!s || (strcmp(s, "enforce") && strcmp(s, "compat"))) {
            snprintf(err, errlen, "access.mode must be \"enforce\" or \"compat\"");
            return AIOS_ECONFIG;
        }
        m->compat = !strcmp(s, "compat");
    }
    m->approval_timeout_s = 300;
    json_t *to = config_lookup(cfg, "access.approval_timeout_s");
    if (to) {
        if (!json_is_integer(to) || json_integer_value(to) < 1 ||
            json_integer_value(to) > 7 * 86400) {
            snprintf(err, errlen, "access.approval_timeout_s must be an integer from 1 to 604800");
            return AIOS_ECONFIG;
        }
        m->approval_timeout_s = (int)json_integer_value(to);
    }
    m->approve_delete = m->approve_overwrite = true;
    json_t *ap = config_lookup(cfg, "access.approvals");
    if (ap) {
        static const char *const keys[] = {"storage_delete", "storage_overwrite"};
        bool *vals[] = {&m->approve_delete, &m->approve_overwrite};
        const char *k;
        json_t *v;
        bool ok = json_is_object(ap);
        if (ok) json_object_foreach(ap, k, v) {
            int i = !strcmp(k, keys[0]) ? 0 : !strcmp(k, keys[1]) ? 1 : -1;
            if (i < 0 || !json_is_boolean(v)) ok = false;
            else *vals[i] = json_is_true(v);
        }
        if (!ok) {
            snprintf(err, errlen, "access.approvals must be a mapping with storage_delete and "
                     "storage_overwrite (true or false)");
            return AIOS_ECONFIG;
        }
    }
    json_t *groups = config_lookup(cfg, "access.groups");
    if (groups) {
        if (!json_is_object(groups)) {
            snprintf(err, errlen, "access.groups must be a mapping of group name to "
                     "{models: [...], tools: [...]}");
            return AIOS_ECONFIG;
        }
        const char *gn;
        json_t *g;
        json_object_foreach(groups, gn, g) {
            if (!json_is_object(g)) {
                snprintf(err, errlen, "access.groups.%s must be a mapping", gn);
                return AIOS_ECONFIG;
            }
            static const char *const lists[] = {"models", "tools"};
            for (int i = 0; i < 2; i++) {
                json_t *l = json_object_get(g, lists[i]);
                bool ok = !l || json_is_array(l);
                size_t j;
                json_t *v;
                if (ok) json_array_foreach(l, j, v) if (!json_is_string(v)) ok = false;
                if (!ok) {
                    snprintf(err, errlen, "access.groups.%s.%s must be a list of names", gn,
                             lists[i]);
                    return AIOS_ECONFIG;
                }
            }
            json_t *pub = json_object_get(g, "publish");
            if (pub && !json_is_boolean(pub)) {
                snprintf(err, errlen, "access.groups.%s.publish must be true or false (may its "
                         "agents publish tools and agents to the hub)", gn);
                return AIOS_ECONFIG;
            }
            int brc = acc_budget_config(g, gn, err, errlen);
            if (!brc) brc = acc_ns_config(g, gn, err, errlen);
            if (brc) return brc;
            for (int i = 0; i < 2; i++) { /* memory / storage: own or a list */
                const char *key = i ? "storage" : "memory";
                json_t *v = json_object_get(g, key);
                if (v && !json_is_array(v) &&
                    !(json_is_string(v) && !strcmp(json_string_value(v), "own"))) {
                    snprintf(err, errlen, "access.groups.%s.%s must be \"own\" or a list", gn, key);
                    return AIOS_ECONFIG;
                }
            }
        }
        m->groups = json_deep_copy(groups);
    }
    json_t *agents = config_lookup(cfg, "access.agents");
    if (agents) {
        const char *an;
        json_t *g;
        if (!json_is_object(agents)) {
            snprintf(err, errlen, "access.agents must be a mapping of agent name to group name");
            return AIOS_ECONFIG;
        }
        json_object_foreach(agents, an, g) {
            if (!json_is_string(g) || !json_object_get(m->groups, json_string_value(g))) {
                snprintf(err, errlen, "access.agents.%s names no group of access.groups", an);
                return AIOS_ECONFIG;
            }
        }
        m->agent_groups = json_deep_copy(agents);
    }
    json_t *dg = config_lookup(cfg, "access.default_group");
    if (dg) {
        if (!json_is_string(dg) || !json_object_get(m->groups, json_string_value(dg))) {
            snprintf(err, errlen, "access.default_group must name a group of access.groups");
            return AIOS_ECONFIG;
        }
        m->default_group = strdup(json_string_value(dg));
    }
    return 0;
}

static void mgr_free(struct acc_mgr *m)
{
    if (!m) return;
    acc_approvals_stop(m);
    if (m->audit) acc_budget_save(m); /* usage charged after the thread stopped */
    if (m->shared && m->store && m->kernel_id[0]) {
        /* the last calls' ends, then this kernel leaves: lease 0, so its
         * row (and anything still held under it) goes at once */
        acc_budget_flush(m);
        int64_t n, tokens;
        char err[512] = "";
        if (m->sops->kernel_beat(m->store, m->kernel_id, 0, &n, &tokens, err, sizeof err))
            LOG_WARN("access", "%s", err);
    }
    acc_audit_close(m->audit);
    if (m->store) m->sops->close(m->store);
    json_decref(m->groups);
    json_decref(m->agent_groups);
    free(m->default_group);
    free(m->reg);
    acc_budget_free(m);
    acc_ns_free(m);
    pthread_mutex_destroy(&m->bmu);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m);
}

void acc_kernel_beat(struct acc_mgr *m)
{
    if (!m->shared) return;
    int64_t n = 0, tokens = 0;
    char err[512] = "";
    if (m->sops->kernel_beat(m->store, m->kernel_id, m->lease_s, &n, &tokens, err, sizeof err))
        LOG_WARN("access", "cannot renew this kernel's lease: %s", err);
    else if (n)
        LOG_WARN("access", "a kernel stopped renewing its lease (state.lease_s): %lld token "
                 "reservation(s) of its running calls (%lld tokens) given back",
                 (long long)n, (long long)tokens);
}

int acc_start(struct acc_mgr **out, const struct acc_deps *deps, char *err, size_t errlen)
{
    assert(deps && deps->cfg);
    *out = NULL;
    struct acc_mgr *m = calloc(1, sizeof *m);
    if (!m) return AIOS_ENOMEM;
    m->agents = deps->agents;
    m->sched = deps->sched;
    m->storage = deps->storage;
    const struct aios_config *cfg = deps->cfg;
    pthread_mutex_init(&m->mu, NULL);
    pthread_mutex_init(&m->bmu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cv, &ca);
    pthread_condattr_destroy(&ca);
    char *tokpath = NULL, *dbpath = NULL;
    int rc = read_config(m, cfg, err, errlen);
    if (rc) goto fail;
    if (util_mkdirs(cfg->data_dir)) {
        snprintf(err, errlen, "cannot create data_dir %s", cfg->data_dir);
        rc = AIOS_EIO;
        goto fail;
    }
    tokpath = config_resolve_path(cfg, "admin.token");
    dbpath = config_resolve_path(cfg, "audit.db");
    if (!tokpath || !dbpath) {
        rc = AIOS_ENOMEM;
        goto fail;
    }
    if ((rc = admin_token_load(m, tokpath, err, errlen))) goto fail;
    m->shared = config_state_pg(cfg);
    m->sops = m->shared ? &acc_store_pg : &acc_store_sqlite;
    if ((rc = m->sops->open(&m->store, m->shared ? cfg->state_url : dbpath, err, errlen)))
        goto fail;
    if (m->shared) { /* this run's id and lease among the kernels */
        m->lease_s = cfg->state_lease_s;
        if ((rc = random_hex(m->kernel_id, 16))) {
            snprintf(err, errlen, "cannot read random bytes for the kernel's id");
            goto fail;
        }
        int64_t n, tokens;
        if ((rc = m->sops->kernel_beat(m->store, m->kernel_id, m->lease_s, &n, &tokens, err,
                                       errlen)))
            goto fail;
    }
    if ((rc = acc_audit_open(&m->audit, m->sops, m->store, err, errlen))) goto fail;
    if ((rc = acc_reg_load(m, err, errlen))) goto fail;
    if ((rc = acc_ns_load(m, err, errlen))) goto fail;
    if ((rc = acc_budget_load(m, err, errlen))) goto fail;
    if ((rc = acc_approvals_start(m, err, errlen))) goto fail;
    if (m->compat)
        LOG_WARN("access", "!!! access.mode is COMPAT: requests without a token from loopback are "
                 "trusted as the operator and may act as any agent. Use only with unmodified "
                 "AIOS clients on a single-user machine. !!!");
    else
        LOG_INFO("access", "access control enforced: admin token in %s, audit log %s", tokpath,
                 m->shared ? "in PostgreSQL (state.url)" : dbpath);
    free(tokpath);
    free(dbpath);
    *out = m;
    return 0;
fail:
    free(tokpath);
    free(dbpath);
    mgr_free(m);
    return rc;
}

void acc_quiesce(struct acc_mgr *m)
{
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->stopping = true;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    acc_approvals_stop(m); /* parked storage calls end denied */
}

void acc_stop(struct acc_mgr *m)
{
    if (!m) return;
    acc_approvals_stop(m);
    mgr_free(m);
}
