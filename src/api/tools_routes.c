/* Tool routes: GET /tools lists every registered tool as an OpenAI
 * function schema ({"type":"function","function":{name, description,
 * parameters}}) plus its aios properties (kind, limits, conflicts,
 * irreversible, network). Runs on an HTTP thread; the registry is
 * immutable after start, so no lock is needed. */
#include "api/api.h"

#include "tools/tools.h"

enum MHD_Result api_tools_list(struct api_req *r)
{
    json_t *tools = tool_list_json(r->k->tools);
    if (!tools) return api_send_error(r, 500, "server_error", "out of memory");
    char why[256];
    bool ok = tool_sandbox_available(why, sizeof why);
    return api_send_json(r, 200, json_pack("{s:s,s:o,s:{s:b,s:s,s:s,s:b}}", "object", "list",
                                           "data", tools, "sandbox", "bwrap", ok, "problem", why,
                                           "pids_limit", tool_sandbox_pids_mode(), "seccomp",
                                           ok && tool_sandbox_seccomp()));
}
