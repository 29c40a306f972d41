/* The hub's routes: Cerebrum's tool hub and agent hub, as its SDK calls
 * them (cerebrum/manager/tool.py, agent.py):
 *
 *   POST /cerebrum/tools/upload          package JSON           -> {status, author, name, version}
 *   GET  /cerebrum/tools/download?author&name[&version]          -> the package JSON
 *   GET  /cerebrum/tools/list                                    -> {"a/n/v": {author, name, version, description}}
 *   GET  /cerebrum/tools/check_updates?author&name&current_version -> {update_available}
 *   POST /cerebrum/upload, GET /cerebrum/download, GET /cerebrum/get_all_agents,
 *   GET  /cerebrum/check_updates: the same for agents
 *
 * The gate decided who may call them (publishing needs the admin token or
 * the publish right, src/access); the store is src/hub. Handlers run on an
 * HTTP thread; a publish writes at most server.max_body_bytes of files. */
#include "api/api.h"

#include "hub/hub.h"
#include "kernel/kernel.h"
#include "util/err.h"

#include <microhttpd.h>
#include <string.h>

static const char *arg(struct api_req *r, const char *key)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

static enum MHD_Result fail(struct api_req *r, int rc, const char *err)
{
    unsigned st = rc == AIOS_EINVAL ? 400 : rc == AIOS_ENOTFOUND ? 404 : rc == AIOS_EBUSY ? 409
                : rc == AIOS_ETOOBIG ? 413 : rc == AIOS_ENOSPC ? 507 : 500;
    const char *type = st == 404 ? "not_found_error" : st == 409 ? "conflict_error"
                     : st >= 500 ? "server_error" : "invalid_request_error";
    return api_send_error(r, st, type, "%s", err[0] ? err : aios_strerror(rc));
}

static enum MHD_Result upload(struct api_req *r, enum hub_kind kind)
{
    if (!r->k->hub) return api_send_error(r, 501, "not_implemented", "this kernel has no hub");
    enum MHD_Result sent;
    json_t *body = api_parse_body(r, &sent);
    if (!body) return sent;
    json_t *info = NULL;
    char err[512] = "";
    int rc = hub_publish(r->k->hub, kind, body, &info, err, sizeof err);
    json_decref(body);
    if (rc) return fail(r, rc, err);
    json_object_set_new(info, "status", json_string("ok"));
    return api_send_json(r, 200, info);
}

static enum MHD_Result download(struct api_req *r, enum hub_kind kind)
{
    if (!r->k->hub) return api_send_error(r, 501, "not_implemented", "this kernel has no hub");
    json_t *pkg = NULL;
    char err[512] = "";
    const char *v = arg(r, "version");
    int rc = hub_get(r->k->hub, kind, arg(r, "author"), arg(r, "name"), v && *v ? v : NULL, &pkg,
                     err, sizeof err);
    if (rc) return fail(r, rc, err);
    return api_send_json(r, 200, pkg);
}

static enum MHD_Result list(struct api_req *r, enum hub_kind kind)
{
    if (!r->k->hub) return api_send_error(r, 501, "not_implemented", "this kernel has no hub");
    json_t *l = hub_list(r->k->hub, kind);
    if (!l) return api_send_error(r, 500, "server_error", "out of memory");
    return api_send_json(r, 200, l);
}

static enum MHD_Result updates(struct api_req *r, enum hub_kind kind)
{
    if (!r->k->hub) return api_send_error(r, 501, "not_implemented", "this kernel has no hub");
    bool newer = false;
    char err[512] = "";
    int rc = hub_check_updates(r->k->hub, kind, arg(r, "author"), arg(r, "name"),
                               arg(r, "current_version"), &newer, err, sizeof err);
    if (rc) return fail(r, rc, err);
    return api_send_json(r, 200, json_pack("{s:b}", "update_available", newer));
}

enum MHD_Result api_hub_tool_upload(struct api_req *r) { return upload(r, HUB_TOOL); }
enum MHD_Result api_hub_tool_download(struct api_req *r) { return download(r, HUB_TOOL); }
enum MHD_Result api_hub_tool_list(struct api_req *r) { return list(r, HUB_TOOL); }
enum MHD_Result api_hub_tool_updates(struct api_req *r) { return updates(r, HUB_TOOL); }
enum MHD_Result api_hub_agent_upload(struct api_req *r) { return upload(r, HUB_AGENT); }
enum MHD_Result api_hub_agent_download(struct api_req *r) { return download(r, HUB_AGENT); }
enum MHD_Result api_hub_agent_list(struct api_req *r) { return list(r, HUB_AGENT); }
enum MHD_Result api_hub_agent_updates(struct api_req *r) { return updates(r, HUB_AGENT); }
