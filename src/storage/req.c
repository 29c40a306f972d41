/* Parsing storage calls: the AIOS JSON of one storage call
 * ({operation_type, params}) into a typed struct sto_req, once, at the
 * edge (the /query route, operate_file, the file tools).
 *
 * A pure function: JSON in, a typed request or a 400 with a message out; no
 * I/O, no clock, no shared state, so the fuzz targets can call it alone.
 * Paths are normalised here (sto_path_norm), so the manager only ever sees
 * paths that passed the path rules. What depends on the caller or the disk
 * (who owns a path, whether it exists, whether an agent shares with itself)
 * is the manager's to decide.
 *
 * Params accept the aliases the reference SDKs send (file_path / file_name /
 * path / name, content / data, ...); integers may be numbers or numeric
 * strings. Strings in the request point into the params, of which the
 * request keeps a reference. */
#include "storage/storage.h"

#include "util/err.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct pctx {
    json_t *params;
    int http;
    char *err;
    size_t errlen;
};

static int fail(struct pctx *c, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct pctx *c, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
    c->http = 400;
    return rc;
}

/* the first of the aliases present; must be a string (with its length) */
static int param_str(struct pctx *c, const char *const *names, bool required, const char **v,
                     size_t *len)
{
    *v = NULL;
    if (len) *len = 0;
    for (int i = 0; names[i]; i++) {
        json_t *j = json_object_get(c->params, names[i]);
        if (!j || json_is_null(j)) continue;
        if (!json_is_string(j)) return fail(c, AIOS_EINVAL, "params.%s must be a string", names[i]);
        *v = json_string_value(j);
        if (len) *len = json_string_length(j);
        return 0;
    }
    if (required) {
        char list[256] = "";
        size_t o = 0;
        for (int i = 0; names[i] && o < sizeof list; i++)
            o += (size_t)snprintf(list + o, sizeof list - o, "%s'%s'", i ? " or " : "", names[i]);
        return fail(c, AIOS_EINVAL, "params needs %s (a string)", list);
    }
    return 0;
}

/* an integer given as a number or a numeric string (the reference sends both) */
static int param_int(struct pctx *c, const char *const *names, int64_t def, int64_t lo, int64_t hi,
                     int64_t *v)
{
    *v = def;
    for (int i = 0; names[i]; i++) {
        json_t *j = json_object_get(c->params, names[i]);
        if (!j || json_is_null(j)) continue;
        int64_t x;
        if (json_is_integer(j)) {
            x = json_integer_value(j);
        } else if (json_is_string(j) && json_string_length(j) > 0) {
            char *end;
            errno = 0;
            long long y = strtoll(json_string_value(j), &end, 10);
            if (*end || errno) goto bad;
            x = y;
        } else {
            goto bad;
        }
        if (x < lo || x > hi) goto bad;
        *v = x;
        return 0;
    bad:
        return fail(c, AIOS_EINVAL, "params.%s must be an integer in %lld..%lld", names[i],
                    (long long)lo, (long long)hi);
    }
    return 0;
}

static const char *const FILE_KEYS[] = {"file_path", "file_name", "path", "name", NULL};
static const char *const DIR_KEYS[] = {"dir_path", "dir_name", "path", "name", NULL};
static const char *const ANY_KEYS[] = {"file_path", "dir_path", "path", "file_name", "dir_name", "name", NULL};
static const char *const LINK_KEYS[] = {"link_id", NULL};
static const char *const GRANTEE_KEYS[] = {"agent", "grantee", "share_with", "to", "agent_name", NULL};

/* normalise the path param into norm (STO_PATH_MAX + 1 bytes) */
static int get_path(struct pctx *c, const char *const *keys, bool allow_root, bool required,
                    char *norm)
{
    const char *p;
    size_t n;
    int rc = param_str(c, keys, required, &p, &n);
    if (rc) return rc;
    if (!p) {
        norm[0] = 0;
        return 0;
    }
    char e[512];
    rc = sto_path_norm(p, n, allow_root, norm, STO_PATH_MAX + 1, e, sizeof e);
    if (rc) return fail(c, rc, "%s", e);
    return 0;
}

/* params.owner: a string when given */
static int get_owner(struct pctx *c, const char **owner)
{
    static const char *const owner_keys[] = {"owner", NULL};
    return param_str(c, owner_keys, false, owner, NULL);
}

/* the path and params.owner */
static int get_at(struct pctx *c, const char *const *keys, bool allow_root, bool required,
                  struct sto_at *at)
{
    int rc = get_path(c, keys, allow_root, required, at->path);
    return rc ? rc : get_owner(c, &at->owner);
}

/* ISO 8601 (naive = UTC, like the reference's datetime.isoformat()) or epoch seconds */
static int parse_time(const char *t, int64_t *us)
{
    char *end;
    double d = strtod(t, &end);
    if (end != t && !*end) {
        *us = llround(d * 1e6);
        return 0;
    }
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *p = strptime(t, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p) p = strptime(t, "%Y-%m-%d %H:%M:%S", &tm);
    if (!p) return AIOS_EINVAL;
    int64_t frac = 0;
    if (*p == '.') {
        int digits = 0;
        for (p++; isdigit((unsigned char)*p); p++)
            if (digits < 6) { frac = frac * 10 + (*p - '0'); digits++; }
        while (digits++ < 6) frac *= 10;
    }
    int64_t off = 0;
    if (*p == 'Z') p++;
    else if (*p == '+' || *p == '-') {
        int hh, mm;
        if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2) return AIOS_EINVAL;
        off = (int64_t)(hh * 3600 + mm * 60) * (*p == '-' ? -1 : 1);
        p += 6;
    }
    if (*p) return AIOS_EINVAL;
    *us = ((int64_t)timegm(&tm) - off) * 1000000 + frac;
    return 0;
}

static int parse_duration(json_t *j, int64_t *secs)
{
    if (json_is_integer(j)) {
        *secs = json_integer_value(j);
        return *secs > 0 && *secs <= 1000000000000 ? 0 : AIOS_EINVAL;
    }
    if (!json_is_string(j)) return AIOS_EINVAL;
    char unit[32] = "";
    double v;
    int nread = sscanf(json_string_value(j), "%lf %31s", &v, unit);
    if (nread < 1 || !(v > 0) || v > 1e12) return AIOS_EINVAL;
    double mul = 1;
    if (nread == 2) {
        size_t l = strlen(unit);
        if (l > 1 && unit[l - 1] == 's') unit[l - 1] = 0;
        if (!strcmp(unit, "s") || !strcmp(unit, "sec") || !strcmp(unit, "second")) mul = 1;
        else if (!strcmp(unit, "m") || !strcmp(unit, "min") || !strcmp(unit, "minute")) mul = 60;
        else if (!strcmp(unit, "h") || !strcmp(unit, "hour")) mul = 3600;
        else if (!strcmp(unit, "d") || !strcmp(unit, "day")) mul = 86400;
        else return AIOS_EINVAL;
    }
    if (v * mul > 1e12) return AIOS_EINVAL; /* beyond any clock */
    *secs = (int64_t)(v * mul);
    return *secs > 0 ? 0 : AIOS_EINVAL;
}

/* words of s: runs of letters, digits, '_' and non-ASCII bytes */
static bool has_word(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; p && *p; p++)
        if (isalnum(*p) || *p >= 0x80 || *p == '_') return true;
    return false;
}

static int parse_rollback(struct pctx *c, struct sto_rollback_args *a)
{
    static const char *const nk[] = {"n", "k", "versions", NULL};
    int64_t n;
    int rc = get_path(c, FILE_KEYS, false, true, a->at.path);
    if (!rc) rc = param_int(c, nk, 1, 1, 1000000, &n);
    if (rc) return rc;
    a->n = (int)n;
    a->t_us = 0;
    json_t *tj = json_object_get(c->params, "time");
    if (!tj || json_is_null(tj)) tj = json_object_get(c->params, "timestamp");
    if (json_is_number(tj)) {
        double t = json_number_value(tj);
        if (!(t > 0) || t > 1e13) return fail(c, AIOS_EINVAL, "params.time must be after the epoch");
        a->t_us = llround(t * 1e6);
        if (a->t_us <= 0) return fail(c, AIOS_EINVAL, "params.time must be after the epoch");
    } else if (json_is_string(tj)) {
        if (parse_time(json_string_value(tj), &a->t_us) || a->t_us <= 0)
            return fail(c, AIOS_EINVAL, "params.time '%s' is not a time: use ISO 8601 "
                        "(2025-01-31T12:00:00Z) or seconds since the epoch", json_string_value(tj));
    } else if (tj && !json_is_null(tj)) {
        return fail(c, AIOS_EINVAL, "params.time must be an ISO 8601 string or epoch seconds");
    }
    return get_owner(c, &a->at.owner);
}

static int parse_retrieve(struct pctx *c, struct sto_retrieve_args *a)
{
    static const char *const qk[] = {"query_text", "query", NULL};
    static const char *const kk[] = {"k", "n", "top_k", NULL};
    int64_t k;
    int rc = param_str(c, qk, true, &a->query_text, NULL);
    if (!rc) rc = param_int(c, kk, 3, 1, 100, &k);
    if (rc) return rc;
    a->k = (int)k;
    a->keywords[0] = 0;
    json_t *kwj = json_object_get(c->params, "keywords");
    if (json_is_string(kwj)) {
        snprintf(a->keywords, sizeof a->keywords, "%s", json_string_value(kwj));
    } else if (json_is_array(kwj)) {
        size_t i, o = 0;
        json_t *v;
        json_array_foreach(kwj, i, v) {
            if (!json_is_string(v))
                return fail(c, AIOS_EINVAL, "params.keywords must be a string or a list of strings");
            if (o < sizeof a->keywords - 1)
                o += (size_t)snprintf(a->keywords + o, sizeof a->keywords - o, "%s%s", o ? " " : "",
                                      json_string_value(v));
        }
    } else if (kwj && !json_is_null(kwj)) {
        return fail(c, AIOS_EINVAL, "params.keywords must be a string or a list of strings");
    }
    if (!has_word(a->query_text) && !has_word(a->keywords))
        return fail(c, AIOS_EINVAL, "params.query_text has no words to search for");
    /* not type-checked, as the reference does not */
    a->owner = json_string_value(json_object_get(c->params, "owner"));
    return 0;
}

static int parse_share(struct pctx *c, struct sto_share_args *a)
{
    static const char *const mk[] = {"mode", "access", NULL};
    const char *mode_s;
    int rc = get_path(c, ANY_KEYS, true, false, a->path);
    if (!rc) rc = param_str(c, GRANTEE_KEYS, false, &a->grantee, NULL);
    if (!rc) rc = param_str(c, mk, false, &mode_s, NULL);
    if (rc) return rc;
    if (a->grantee && !a->grantee[0]) a->grantee = NULL;
    if (!a->grantee) { /* a link: one file, read-only */
        if (!a->path[0])
            return fail(c, AIOS_EINVAL, "a share link is for one file: give params.file_path "
                        "(or params.agent to share a directory with another agent)");
        if (mode_s && strcmp(mode_s, "r") && strcmp(mode_s, "read") && strcmp(mode_s, "ro"))
            return fail(c, AIOS_EINVAL, "a share link is read-only; give params.agent to share "
                        "read-write with another agent");
    } else if (strlen(a->grantee) > STO_AGENT_MAX)
        return fail(c, AIOS_EINVAL, "params.agent is longer than %d bytes", STO_AGENT_MAX);
    a->owner = json_string_value(json_object_get(c->params, "owner"));
    a->mode = STO_MODE_READ;
    if (mode_s) {
        if (!strcmp(mode_s, "r") || !strcmp(mode_s, "read") || !strcmp(mode_s, "ro"))
            a->mode = STO_MODE_READ;
        else if (!strcmp(mode_s, "rw") || !strcmp(mode_s, "write") || !strcmp(mode_s, "read-write") ||
                 !strcmp(mode_s, "read_write"))
            a->mode = STO_MODE_RW;
        else
            return fail(c, AIOS_EINVAL, "params.mode must be \"r\" (read) or \"rw\" (read-write)");
    }
    a->expires_in_s = 0;
    json_t *ej = json_object_get(c->params, "expires_in");
    if (ej && !json_is_null(ej) && parse_duration(ej, &a->expires_in_s))
        return fail(c, AIOS_EINVAL, "params.expires_in must be seconds or a string like "
                    "\"7 days\", \"12 hours\", \"30 minutes\"");
    if (!a->grantee && a->expires_in_s > STO_LINK_MAX_S)
        return fail(c, AIOS_EINVAL, "a share link lasts at most 30 days (params.expires_in)");
    if (!a->grantee && a->expires_in_s == 0) a->expires_in_s = STO_LINK_DEFAULT_S;
    return 0;
}

/* operation_type and its aliases */
static const struct {
    const char *name;
    enum sto_op op;
} OPS[] = {
    {"mount", STO_OP_MOUNT},
    {"create_file", STO_OP_CREATE_FILE},
    {"create_dir", STO_OP_CREATE_DIR},      {"create_directory", STO_OP_CREATE_DIR},
    {"write", STO_OP_WRITE},                {"write_file", STO_OP_WRITE},
    {"read", STO_OP_READ},                  {"read_file", STO_OP_READ},
    {"list", STO_OP_LIST},                  {"list_dir", STO_OP_LIST},
    {"ls", STO_OP_LIST},
    {"delete_file", STO_OP_DELETE_FILE},    {"remove_file", STO_OP_DELETE_FILE},
    {"delete_dir", STO_OP_DELETE_DIR},      {"remove_dir", STO_OP_DELETE_DIR},
    {"rollback", STO_OP_ROLLBACK},          {"rollback_file", STO_OP_ROLLBACK},
    {"history", STO_OP_HISTORY},
    {"retrieve", STO_OP_RETRIEVE},          {"retrieve_file", STO_OP_RETRIEVE},
    {"search", STO_OP_RETRIEVE},
    {"share", STO_OP_SHARE},                {"share_file", STO_OP_SHARE},
    {"unshare", STO_OP_UNSHARE},            {"revoke", STO_OP_UNSHARE},
    {"shares", STO_OP_SHARES},              {"list_shares", STO_OP_SHARES},
    {"usage", STO_OP_USAGE},
};

const char *sto_op_name(enum sto_op op)
{
    for (size_t i = 0; i < sizeof OPS / sizeof OPS[0]; i++)
        if (OPS[i].op == op) return OPS[i].name;
    return "?";
}

bool sto_req_reads_only(const struct sto_req *q)
{
    switch (q->op) {
    case STO_OP_READ:
    case STO_OP_LIST:
    case STO_OP_HISTORY:
    case STO_OP_RETRIEVE:
    case STO_OP_SHARES:
    case STO_OP_USAGE: return true;
    default: return false;
    }
}

void sto_req_free(void *p)
{
    struct sto_req *q = p;
    if (!q) return;
    free(q->op_name);
    json_decref(q->params);
    free(q);
}

int sto_req_make(enum sto_op op, const char *path, const void *data, size_t len,
                 const char *from, struct sto_req **out)
{
    *out = NULL;
    assert(op == STO_OP_WRITE || op == STO_OP_DELETE_FILE);
    if (strlen(path) > STO_PATH_MAX) return AIOS_ETOOBIG;
    struct sto_req *q = calloc(1, sizeof *q + len + 1);
    if (!q) return AIOS_ENOMEM;
    q->op = op;
    q->op_name = strdup(sto_op_name(op));
    q->params = op == STO_OP_WRITE
                    ? json_pack("{s:s,s:I,s:s}", "file_path", path, "bytes", (json_int_t)len,
                                "from", from ? from : "")
                    : json_pack("{s:s,s:s}", "file_path", path, "from", from ? from : "");
    if (!q->op_name || !q->params) {
        sto_req_free(q);
        return AIOS_ENOMEM;
    }
    if (op == STO_OP_WRITE) {
        char *buf = (char *)(q + 1); /* the content lives in the same block */
        if (len) memcpy(buf, data, len);
        buf[len] = 0;
        snprintf(q->u.write.at.path, sizeof q->u.write.at.path, "%s", path);
        q->u.write.content = buf;
        q->u.write.len = len;
    } else {
        snprintf(q->u.del.at.path, sizeof q->u.del.at.path, "%s", path);
    }
    *out = q;
    return 0;
}

int sto_req_parse(const char *op, json_t *params, struct sto_req **out, int *http, char *err,
                  size_t errlen)
{
    *out = NULL;
    struct pctx c = {.params = params, .http = 400, .err = err, .errlen = errlen};
    err[0] = 0;
    if (!params || !json_is_object(params)) {
        *http = 400;
        return fail(&c, AIOS_EINVAL, "params must be an object");
    }
    if (!op) op = "";
    size_t i = 0, n_ops = sizeof OPS / sizeof OPS[0];
    while (i < n_ops && strcmp(op, OPS[i].name)) i++;
    if (i == n_ops) {
        *http = 400;
        return fail(&c, AIOS_EINVAL, "unknown storage operation_type '%.200s'; one of mount, "
                    "create_file, create_dir, write, read, list, delete_file, delete_dir, rollback, "
                    "history, retrieve, share, unshare, shares, usage", op);
    }
    struct sto_req *q = calloc(1, sizeof *q);
    if (!q || !(q->op_name = strdup(op))) {
        free(q);
        *http = 500;
        snprintf(err, errlen, "out of memory");
        return AIOS_ENOMEM;
    }
    q->op = OPS[i].op;
    q->params = json_incref(params);
    static const char *const content_keys[] = {"content", "data", NULL};
    static const char *const root_keys[] = {"root", "root_dir", "mount_dir", NULL};
    int rc = 0;
    switch (q->op) {
    case STO_OP_MOUNT: rc = param_str(&c, root_keys, false, &q->u.mount.root, NULL); break;
    case STO_OP_CREATE_FILE:
    case STO_OP_READ:
    case STO_OP_HISTORY: rc = get_at(&c, FILE_KEYS, false, true, &q->u.at); break;
    case STO_OP_CREATE_DIR: rc = get_at(&c, DIR_KEYS, false, true, &q->u.at); break;
    case STO_OP_LIST: rc = get_at(&c, DIR_KEYS, true, false, &q->u.at); break;
    case STO_OP_WRITE:
        rc = get_path(&c, FILE_KEYS, false, true, q->u.write.at.path);
        if (!rc) rc = param_str(&c, content_keys, true, &q->u.write.content, &q->u.write.len);
        if (!rc) rc = get_owner(&c, &q->u.write.at.owner);
        break;
    case STO_OP_DELETE_FILE:
    case STO_OP_DELETE_DIR:
        rc = get_at(&c, q->op == STO_OP_DELETE_DIR ? DIR_KEYS : FILE_KEYS, false, true, &q->u.del.at);
        q->u.del.recursive = json_is_true(json_object_get(params, "recursive"));
        break;
    case STO_OP_ROLLBACK: rc = parse_rollback(&c, &q->u.rollback); break;
    case STO_OP_RETRIEVE: rc = parse_retrieve(&c, &q->u.retrieve); break;
    case STO_OP_SHARE: rc = parse_share(&c, &q->u.share); break;
    case STO_OP_UNSHARE:
        /* with no grantee: links, every one of the path or the one link_id names */
        if (!rc) rc = param_str(&c, LINK_KEYS, false, &q->u.unshare.link_id, NULL);
        if (!rc && !q->u.unshare.link_id) rc = get_path(&c, ANY_KEYS, true, false, q->u.unshare.path);
        if (!rc) rc = param_str(&c, GRANTEE_KEYS, false, &q->u.unshare.grantee, NULL);
        if (!rc && q->u.unshare.grantee && !q->u.unshare.grantee[0]) q->u.unshare.grantee = NULL;
        if (!rc && q->u.unshare.grantee && q->u.unshare.link_id)
            rc = fail(&c, AIOS_EINVAL, "give params.agent (a share with an agent) or "
                      "params.link_id (a link), not both");
        break;
    case STO_OP_SHARES:
    case STO_OP_USAGE: break;
    case STO_OP__COUNT: assert(0 && "not an operation"); break;
    }
    if (rc) {
        *http = c.http;
        sto_req_free(q);
        return rc;
    }
    *out = q;
    return 0;
}
