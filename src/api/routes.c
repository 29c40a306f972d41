/* The route table and its matcher.
 *
 * Every HTTP route of the kernel is one line in g_routes: method, path
 * pattern, handler. A pattern segment written {name} matches one non-empty
 * path segment whose (percent-decoded) value is handed to the handler in
 * r->params. Matching is linear: the table is small and it runs once per
 * request. Modules add their routes here, one line each. */
#include "api/api.h"
#include "api/aios_routes.h"
#include "api/responses.h"

#include <stdlib.h>
#include <string.h>

static const struct api_route g_routes[] = {
    /* kernel */
    {"GET", "/status", api_route_status},
    {"GET", "/metrics", api_metrics},
    {"GET", "/agents/{id}/stats", api_agent_stats},
    /* the dashboard (ui.c) */
    {"GET", "/ui", api_ui_page},
    {"GET", "/ui/state", api_ui_state},
    /* AIOS protocol (Cerebrum) */
    {"POST", "/query", api_aios_query},
    /* AIOS kernel routes (aios_routes.c) */
    {"GET", "/core/status", api_route_core_status},
    {"GET", "/core/llms/list", api_route_llms_list},
    {"POST", "/user/select/llms", api_route_select_llms},
    {"GET", "/user/selected/llms", api_route_selected_llms},
    {"POST", "/core/refresh", api_route_core_refresh},
    {"POST", "/core/config/update", api_route_config_update},
    {"POST", "/core/cleanup", api_route_core_cleanup},
    {"GET", "/get/mcp/server", api_route_mcp_server},
    {"POST", "/agents/submit", api_route_agents_submit},
    {"GET", "/agents/ps", api_route_agents_ps},
    {"GET", "/agents/accounting", api_route_agents_accounting},
    {"GET", "/agents/{id}/status", api_route_agent_status},
    {"POST", "/agents/{id}/kill", api_route_agent_kill},
    {"GET", "/agents/{id}/logs", api_route_agent_logs},
    /* access manager (access_routes.c) */
    {"POST", "/access/agents", api_access_agents_register},
    {"GET", "/access/whoami", api_access_whoami},
    {"GET", "/access/audit", api_access_audit},
    {"GET", "/access/approvals", api_access_approvals},
    {"POST", "/access/approvals/{id}/approve", api_access_approve},
    {"POST", "/access/approvals/{id}/deny", api_access_deny},
    {"POST", "/core/approvals/{id}", api_access_core_approval},
    {"GET", "/access/budgets", api_access_budgets},
    /* tools */
    {"GET", "/tools", api_tools_list},
    /* read-only share links (share_routes.c): open, the token is the credential */
    {"GET", "/s/{token}", api_share_link_get},
    /* the hub, as Cerebrum's SDK calls it (hub_routes.c) */
    {"POST", "/cerebrum/tools/upload", api_hub_tool_upload},
    {"GET", "/cerebrum/tools/download", api_hub_tool_download},
    {"GET", "/cerebrum/tools/list", api_hub_tool_list},
    {"GET", "/cerebrum/tools/check_updates", api_hub_tool_updates},
    {"POST", "/cerebrum/upload", api_hub_agent_upload},
    {"GET", "/cerebrum/download", api_hub_agent_download},
    {"GET", "/cerebrum/get_all_agents", api_hub_agent_list},
    {"GET", "/cerebrum/check_updates", api_hub_agent_updates},
    /* OpenAI-compatible */
    {"GET", "/v1/models", api_openai_models},
    {"GET", "/v1/models/{id*}", api_openai_model},
    {"POST", "/v1/chat/completions", api_openai_chat},
    {"POST", "/chat/completions", api_openai_chat},
    {"POST", "/v1/responses", api_responses_create}, /* responses.c */
    {"GET", "/v1/responses/{id}", api_responses_get},
    {"DELETE", "/v1/responses/{id}", api_responses_delete},
    {"POST", "/v1/embeddings", api_openai_embeddings},
    {"POST", "/embeddings", api_openai_embeddings},
};
#define N_ROUTES (sizeof g_routes / sizeof g_routes[0])

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* decode %XX; NULL if malformed or it would contain NUL, or an encoded '/'
 * unless rest (a {name*} segment, which takes the rest of the path) */
static char *seg_decode(const char *s, size_t n, bool rest)
{
    char *out = malloc(n + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n) goto bad;
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0) goto bad;
            c = (char)(hi * 16 + lo);
            if (c == 0 || (c == '/' && !rest)) goto bad;
            i += 2;
        }
        out[o++] = c;
    }
    out[o] = 0;
    return out;
bad:
    free(out);
    return NULL;
}

/* match url against pattern; fills params (caller frees) */
static bool match(const char *pat, const char *url, char *params[API_MAX_PARAMS], int *n_params)
{
    int np = 0;
    const char *p = pat, *u = url;
    while (*p && *u) {
        if (*p != '/' || *u != '/') return false;
        p++;
        u++;
        const char *pe = strchr(p, '/'), *ue = strchr(u, '/');
        size_t pl = pe ? (size_t)(pe - p) : strlen(p);
        size_t ul = ue ? (size_t)(ue - u) : strlen(u);
        if (pl >= 2 && p[0] == '{' && p[pl - 1] == '}') {
            bool rest = pl >= 3 && p[pl - 2] == '*' && !pe;
            if (rest) ul = strlen(u);
            if (ul == 0 || np >= API_MAX_PARAMS) goto fail;
            if (params) {
                params[np] = seg_decode(u, ul, rest);
                if (!params[np]) goto fail;
            }
            np++;
        } else if (pl != ul || memcmp(p, u, pl) != 0) {
            goto fail;
        }
        p += pl;
        u += ul;
    }
    if (*p || *u) goto fail;
    if (n_params) *n_params = np;
    return true;
fail:
    if (params)
        for (int i = 0; i < np; i++) {
            free(params[i]);
            params[i] = NULL;
        }
    return false;
}

const struct api_route *api_route_find(const char *method, const char *url,
                                       char *params[API_MAX_PARAMS], int *n_params,
                                       bool *path_known)
{
    *path_known = false;
    *n_params = 0;
    for (size_t i = 0; i < N_ROUTES; i++) {
        if (!match(g_routes[i].path, url, NULL, NULL)) continue;
        *path_known = true;
        if (strcmp(g_routes[i].method, method) != 0) continue;
        if (!match(g_routes[i].path, url, params, n_params)) continue;
        return &g_routes[i];
    }
    return NULL;
}

void api_routes_allowed(const char *url, char *out, size_t outlen)
{
    size_t n = 0;
    out[0] = 0;
    for (size_t i = 0; i < N_ROUTES; i++) {
        if (!match(g_routes[i].path, url, NULL, NULL)) continue;
        if (strstr(out, g_routes[i].method)) continue;
        size_t l = strlen(g_routes[i].method);
        if (n + l + 3 >= outlen) break;
        if (n) {
            memcpy(out + n, ", ", 2);
            n += 2;
        }
        memcpy(out + n, g_routes[i].method, l);
        n += l;
        out[n] = 0;
    }
}
