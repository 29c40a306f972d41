/* What compat mode refuses so that a web page cannot act as the operator.
 *
 * Under access.mode: compat a request without a token from loopback is
 * trusted as the operator (access.c). A page open in the operator's
 * browser can send such requests too: a "simple" cross-origin POST
 * (text/plain or a form, no preflight) or, through DNS rebinding, a
 * request to a name the attacker controls that resolves to 127.0.0.1. So,
 * in compat mode and for tokenless requests only (a token is checked by
 * the gate whatever sent it), before the gate:
 *   - Host, when sent, must name this kernel: localhost, a 127.x.x.x
 *     address, [::1] or server.host, with the port the kernel listens on;
 *     else 403 (DNS rebinding);
 *   - Origin, when sent, must be this same origin ("http://" + Host);
 *     else 403 (a cross-origin page);
 *   - a request with a method other than GET/HEAD must have Content-Type
 *     application/json (parameters allowed), or no Content-Type and no
 *     body; else 415 (what a page can send without a preflight: text/plain,
 *     forms, multipart).
 * A request with two Host, Origin or Content-Type headers is ambiguous:
 * 400. Each refusal is an audit row (agent "-"). Browsers always send Host and, for
 * cross-origin and POST requests, Origin; clients that are not browsers
 * (curl, the SDKs, Cerebrum) send Host right and no Origin. */
#include "api/api.h"

#include "access/access.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* is name (no port, IPv6 without brackets) this kernel's? */
static bool host_name_ok(struct api_req *r, const char *name, size_t n)
{
    char h[256];
    if (n == 0 || n >= sizeof h) return false;
    memcpy(h, name, n);
    h[n] = 0;
    if (!strcasecmp(h, "localhost") || !strcmp(h, "::1")) return true;
    struct in_addr a4;
    if (inet_pton(AF_INET, h, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127) return true;
    const char *cfg = r->k->cfg.host;
    return cfg && *cfg && strcmp(cfg, "0.0.0.0") && strcmp(cfg, "::") && !strcasecmp(h, cfg);
}

/* "name:port" or "[v6]:port" with this kernel's name and port */
static bool host_ok(struct api_req *r, const char *host)
{
    const char *name = host, *colon;
    size_t n;
    if (host[0] == '[') {
        const char *end = strchr(host, ']');
        if (!end || end[1] != ':') return false;
        name = host + 1;
        n = (size_t)(end - name);
        colon = end + 1;
    } else {
        colon = strrchr(host, ':');
        if (!colon) return false; /* the port is required */
        n = (size_t)(colon - host);
    }
    char port[16];
    snprintf(port, sizeof port, "%d", api_port(r->srv));
    return !strcmp(colon + 1, port) && host_name_ok(r, name, n);
}

/* the media type, without parameters, is application/json */
static bool is_json_type(const char *ct)
{
    while (*ct == ' ') ct++;
    size_t n = strcspn(ct, "; ");
    return n == strlen("application/json") && !strncasecmp(ct, "application/json", n);
}

static enum MHD_Result refuse(struct api_req *r, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum MHD_Result refuse(struct api_req *r, unsigned status, const char *fmt, ...)
{
    char msg[700], action[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(action, sizeof action, "%s %s", r->method, r->url);
    struct acc_audit_row row = {"-", 0, r->url, action, "denied", msg};
    if (acc_mgr_audit(r->k->access)) acc_audit_add(acc_mgr_audit(r->k->access), &row);
    return api_send_error(r, status, status == 403 ? "permission_error" : "invalid_request_error",
                          "%s", msg);
}

/* how many Host, Origin and Content-Type headers came */
static enum MHD_Result count_hdr(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    int *n = cls;
    (void)kind;
    (void)value;
    if (!strcasecmp(key, "Host")) n[0]++;
    else if (!strcasecmp(key, "Origin")) n[1]++;
    else if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_TYPE)) n[2]++;
    return MHD_YES;
}

bool api_compat_guard(struct api_req *r, enum MHD_Result *sent)
{
    if (!acc_compat_mode(r->k->access)) return true;
    /* an agent run's own channel is its identity, not trust in a tokenless
     * local caller: no web page can reach it */
    if (r->acc_run) return true;
    const char *auth = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization");
    const char *tok = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Aios-Agent-Token");
    if ((auth && *auth) || (tok && *tok)) return true; /* not trusted for free: the gate checks */
    int n[3] = {0, 0, 0};
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, count_hdr, n);
    if (n[0] > 1 || n[1] > 1 || n[2] > 1) {
        *sent = refuse(r, 400, "compat mode: a tokenless request may carry at most one Host, "
                       "Origin and Content-Type header");
        return false;
    }

    const char *host = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Host");
    if (host && !host_ok(r, host)) {
        *sent = refuse(r, 403, "compat mode: Host '%.200s' is not this kernel (localhost, "
                       "127.0.0.1, [::1] or server.host, with port %d); a tokenless request "
                       "is trusted only when it names this kernel",
                       host, api_port(r->srv));
        return false;
    }
    const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    if (origin) {
        char same[300];
        snprintf(same, sizeof same, "http://%s", host ? host : "");
        if (!host || strcasecmp(origin, same)) {
            *sent = refuse(r, 403, "compat mode: a request from origin '%.200s' (a web page) is "
                           "not trusted; only same-origin requests or requests with a token are",
                           origin);
            return false;
        }
    }
    if (strcmp(r->method, "GET") && strcmp(r->method, "HEAD")) {
        const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_TYPE);
        if (ct ? !is_json_type(ct) : r->n_body > 0) {
            *sent = refuse(r, 415, "compat mode: %s %s needs Content-Type: application/json "
                           "(got %.100s%s%s)", r->method, r->url, ct ? "'" : "no Content-Type",
                           ct ? ct : "", ct ? "'" : "");
            return false;
        }
    }
    return true;
}
