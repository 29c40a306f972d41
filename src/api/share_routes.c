/* Share links: GET /s/TOKEN, and the link in a `share` answer.
 *
 * A storage `share` with a file and no grantee (Cerebrum's share_file
 * sends only file_path) makes a link in the storage manager (see
 * src/storage/storage.h, "Share links"): a random token whose SHA-256 is
 * stored, read-only, expiring, revocable. The kernel serves it itself;
 * nothing is uploaded anywhere.
 *
 * GET /s/TOKEN is an open route (the token is the credential; the access
 * gate lets it through without one). It answers the file's current bytes
 * with a content type that no browser renders as a page (text/plain for
 * UTF-8, else application/octet-stream; nosniff, no-store, a CSP that
 * allows nothing), or one 404 for every kind of miss (unknown, expired,
 * revoked, file gone) so nothing leaks about what exists. Every request
 * is an audit row under the owner's name (or "-" for a miss) with the
 * link's id, never the token. The read is bounded by
 * storage.max_file_bytes and runs on the HTTP thread.
 *
 * api_share_link_fill turns the storage answer's share_path into the full
 * link on the address the caller used (its Host header when that is a
 * plain host[:port], else 127.0.0.1 and the kernel's port) and writes the
 * reference's response_message: the JSON text of {file_name, file_path,
 * share_link, expires_in, last_modified}. */
#include "api/api.h"

#include "access/access.h"
#include "kernel/kernel.h"
#include "storage/storage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool plain_host(const char *h)
{
    size_t n = h ? strlen(h) : 0;
    if (n == 0 || n > 255) return false;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == ':' || c == '[' || c == ']'))
            return false;
    }
    return true;
}

/* UTF-8 with no control characters but tab and line ends */
static bool utf8_text(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f) return false;
    }
    json_t *j = json_stringn(s, n); /* jansson checks UTF-8 */
    bool ok = j != NULL;
    json_decref(j);
    return ok;
}

void api_share_link_fill(struct api_req *r, json_t *resp)
{
    const char *sp = json_string_value(json_object_get(resp, "share_path"));
    if (!sp) return;
    const char *host = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Host");
    char link[600];
    if (plain_host(host)) snprintf(link, sizeof link, "http://%s%s", host, sp);
    else snprintf(link, sizeof link, "http://127.0.0.1:%d%s", api_port(r->srv), sp);
    json_object_set_new(resp, "share_link", json_string(link));
    json_int_t s = json_integer_value(json_object_get(resp, "expires_in_s"));
    char expires_in[64];
    if (s % 86400 == 0) snprintf(expires_in, sizeof expires_in, "%lld day%s", (long long)(s / 86400), s == 86400 ? "" : "s");
    else if (s % 3600 == 0) snprintf(expires_in, sizeof expires_in, "%lld hour%s", (long long)(s / 3600), s == 3600 ? "" : "s");
    else snprintf(expires_in, sizeof expires_in, "%lld seconds", (long long)s);
    json_t *ref = json_pack("{s:O,s:O,s:s,s:s,s:O}", "file_name", json_object_get(resp, "file_name"),
                            "file_path", json_object_get(resp, "file_path"), "share_link", link,
                            "expires_in", expires_in, "last_modified",
                            json_object_get(resp, "last_modified"));
    char *txt = ref ? json_dumps(ref, JSON_COMPACT) : NULL;
    json_decref(ref);
    if (txt) json_object_set_new(resp, "response_message", json_string(txt));
    free(txt);
}

static void audit(struct api_req *r, const char *agent, const char *resource, const char *id,
                  const char *decision, const char *reason)
{
    struct acc_audit *a = acc_mgr_audit(r->k->access);
    if (!a) return;
    char action[64];
    snprintf(action, sizeof action, "GET /s/ (link %s)", id);
    struct acc_audit_row row = {agent, 0, resource, action, decision, reason};
    acc_audit_add(a, &row);
}

enum MHD_Result api_share_link_get(struct api_req *r)
{
    if (!r->k->storage)
        return api_send_error(r, 501, "not_implemented", "the storage manager is not available in this kernel");
    const char *token = r->n_params > 0 ? r->params[0] : "";
    struct sto_link_file f;
    int http;
    char err[256];
    int rc = sto_link_read(r->k->storage, token, &f, &http, err, sizeof err);
    char resource[STO_AGENT_MAX + STO_PATH_MAX + 16];
    snprintf(resource, sizeof resource, "storage:%s/%s", f.owner, f.path);
    if (rc) {
        /* an unknown token names no owner (it may be a guess) */
        audit(r, f.owner[0] ? f.owner : "-", f.owner[0] ? resource : "link",
              f.link_id[0] ? f.link_id : "?", "denied", err);
        return api_send_error(r, (unsigned)http, http == 404 ? "not_found_error" : "server_error",
                              "%s", err);
    }
    audit(r, f.owner, resource, f.link_id, "allowed", "read-only share link");
    const char *ctype = utf8_text(f.data, f.len) ? "text/plain; charset=utf-8" : "application/octet-stream";
    char *body = f.data ? f.data : malloc(1);
    f.data = NULL;
    if (!body) return api_send_error(r, 500, "server_error", "out of memory");
    struct MHD_Response *resp = MHD_create_response_from_buffer(f.len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "Content-Security-Policy", "default-src 'none'; sandbox");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    enum MHD_Result ret = MHD_queue_response(r->conn, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}
