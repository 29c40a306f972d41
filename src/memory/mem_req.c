/* The edge of the memory manager: one AIOS memory query (operation_type and
 * params, JSON) parsed into a typed request (struct mem_req).
 *
 * Purpose: the API layer (the /query route's memory syscalls) calls
 * mem_req_parse() once; everything behind it (the scheduler, the memory
 * executor, mem_manager_exec()'s one switch, the mem_add()/mem_retrieve()
 * functions) sees only the typed request. Internal callers (auto_extract,
 * auto_inject) build requests or call the functions in C, never JSON.
 *
 * Pure: no I/O, no globals, no locks; a request owns copies of everything
 * it took from params, so params may be freed right after. The checks and
 * their messages are the ones a client sees as a 400.
 *
 * What is checked here is what needs no state: types, ranges, required
 * fields. What needs the manager (the note's size against
 * memory.max_note_bytes, whether an id exists, whether another agent's
 * namespace is open) is checked by the manager. */
#include "memory/mem_req.h"

#include "util/err.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const k_names[MEM_OP__COUNT] = {
    [MEM_OP_ADD] = "add_memory",
    [MEM_OP_ADD_AGENTIC] = "add_agentic_memory",
    [MEM_OP_GET] = "get_memory",
    [MEM_OP_UPDATE] = "update_memory",
    [MEM_OP_REMOVE] = "remove_memory",
    [MEM_OP_RETRIEVE] = "retrieve_memory",
    [MEM_OP_RETRIEVE_RAW] = "retrieve_memory_raw",
    [MEM_OP_STATS] = "memory_stats",
    [MEM_OP_SHARE] = "share_memory",
    [MEM_OP_UNSHARE] = "unshare_memory",
    [MEM_OP_SHARES] = "memory_shares",
};

const char *mem_op_name(enum mem_op op)
{
    return (unsigned)op < MEM_OP__COUNT ? k_names[op] : NULL;
}

bool mem_op_writes(enum mem_op op)
{
    switch (op) {
    case MEM_OP_GET:
    case MEM_OP_RETRIEVE:
    case MEM_OP_RETRIEVE_RAW:
    case MEM_OP_STATS:
    case MEM_OP_SHARES: return false;
    default: return true;
    }
}

struct mem_req *mem_req_new(enum mem_op op)
{
    struct mem_req *r = calloc(1, sizeof *r);
    if (r) r->op = op;
    return r;
}

static void fields_free(struct mem_fields *f)
{
    free(f->content);
    json_decref(f->keywords);
    json_decref(f->tags);
    free(f->category);
    free(f->context);
    json_decref(f->links);
    json_decref(f->extra);
}

bool mem_req_reads_only(const struct mem_req *r)
{
    switch (r->op) {
    case MEM_OP_GET:
    case MEM_OP_RETRIEVE:
    case MEM_OP_RETRIEVE_RAW:
    case MEM_OP_STATS:
    case MEM_OP_SHARES: return true;
    default: return false;
    }
}

void mem_req_free(void *p)
{
    struct mem_req *r = p;
    if (!r) return;
    switch (r->op) {
    case MEM_OP_ADD:
    case MEM_OP_ADD_AGENTIC:
        free(r->u.add.id);
        fields_free(&r->u.add.f);
        break;
    case MEM_OP_UPDATE:
        free(r->u.update.id);
        fields_free(&r->u.update.f);
        break;
    case MEM_OP_GET:
    case MEM_OP_REMOVE: free(r->u.id.id); break;
    case MEM_OP_RETRIEVE:
    case MEM_OP_RETRIEVE_RAW: free(r->u.retrieve.query); break;
    case MEM_OP_SHARE:
    case MEM_OP_UNSHARE: free(r->u.share.grantee); break;
    default: break;
    }
    free(r->owner);
    free(r);
}

/* ---- note fields ---- */

static bool is_note_key(const char *k)
{
    static const char *const keys[] = {"content", "id", "memory_id", "keywords", "tags",
                                       "category", "context", "links", "timestamp",
                                       "last_accessed", "retrieval_count", "evolution_history",
                                       "metadata"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (!strcmp(k, keys[i])) return true;
    return false;
}

static int dup_str(char **dst, json_t *v, const char *field, char *err, size_t errlen)
{
    if (!json_is_string(v)) {
        snprintf(err, errlen, "params.%s must be a string", field);
        return AIOS_EINVAL;
    }
    *dst = strdup(json_string_value(v));
    return *dst ? 0 : AIOS_ENOMEM;
}

/* A note field: from params first, else from params.metadata (the
 * reference accepts both). NULL or JSON null: absent. */
static json_t *field(json_t *params, json_t *meta, const char *k)
{
    json_t *v = json_object_get(params, k);
    if (!v || json_is_null(v)) v = json_object_get(meta, k);
    return json_is_null(v) ? NULL : v;
}

static int parse_fields(json_t *params, bool for_add, struct mem_fields *f, char *err,
                        size_t errlen)
{
    int rc;
    json_t *meta = json_object_get(params, "metadata");
    if (meta && !json_is_null(meta) && !json_is_object(meta)) {
        snprintf(err, errlen, "params.metadata must be an object");
        return AIOS_EINVAL;
    }
    json_t *v = json_object_get(params, "content");
    if (for_add || (v && !json_is_null(v))) {
        if (!json_is_string(v)) {
            snprintf(err, errlen, "params.content must be a string (the text of the note)%s",
                     for_add ? "" : " or null to keep it");
            return AIOS_EINVAL;
        }
        if (for_add && json_string_length(v) == 0) {
            snprintf(err, errlen, "params.content is empty: a note needs some text");
            return AIOS_EINVAL;
        }
        if ((rc = dup_str(&f->content, v, "content", err, errlen))) return rc;
    }
    if ((v = field(params, meta, "keywords")) &&
        (rc = mem_str_list(v, "params.keywords", &f->keywords, err, errlen)))
        return rc;
    if ((v = field(params, meta, "tags")) &&
        (rc = mem_str_list(v, "params.tags", &f->tags, err, errlen)))
        return rc;
    if ((v = field(params, meta, "category")) &&
        (rc = dup_str(&f->category, v, "category", err, errlen)))
        return rc;
    if ((v = field(params, meta, "context")) &&
        (rc = dup_str(&f->context, v, "context", err, errlen)))
        return rc;
    if ((v = field(params, meta, "links"))) {
        if (!json_is_array(v)) {
            snprintf(err, errlen, "params.links must be a list (ids of related notes)");
            return AIOS_EINVAL;
        }
        if (!(f->links = json_deep_copy(v))) return AIOS_ENOMEM;
    }
    if ((v = field(params, meta, "timestamp"))) {
        if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= MEM_TS_LEN) {
            snprintf(err, errlen, "params.timestamp must be a string like 202501311200 (YYYYMMDDHHMM)");
            return AIOS_EINVAL;
        }
        snprintf(f->timestamp, sizeof f->timestamp, "%s", json_string_value(v));
    }
    if (json_is_object(meta)) {
        const char *k;
        json_t *mv;
        json_object_foreach(meta, k, mv) {
            if (is_note_key(k)) continue;
            if (!f->extra && !(f->extra = json_object())) return AIOS_ENOMEM;
            if (json_object_set_new(f->extra, k, json_deep_copy(mv))) return AIOS_ENOMEM;
        }
    }
    return 0;
}

int mem_fields_apply(const struct mem_fields *f, struct mem_note *n)
{
    char *s;
    json_t *j;
#define SET_STR(member)                                   \
    if (f->member) {                                      \
        if (!(s = strdup(f->member))) return AIOS_ENOMEM; \
        free(n->member);                                  \
        n->member = s;                                    \
    }
#define SET_JSON(member)                                            \
    if (f->member) {                                                \
        if (!(j = json_deep_copy(f->member))) return AIOS_ENOMEM;   \
        json_decref(n->member);                                     \
        n->member = j;                                              \
    }
    SET_STR(content)
    SET_JSON(keywords)
    SET_JSON(tags)
    SET_STR(category)
    SET_STR(context)
    SET_JSON(links)
#undef SET_STR
#undef SET_JSON
    if (f->timestamp[0]) memcpy(n->timestamp, f->timestamp, sizeof n->timestamp);
    const char *k;
    json_t *v;
    json_object_foreach(f->extra, k, v) {
        if (json_object_set_new(n->extra, k, json_deep_copy(v))) return AIOS_ENOMEM;
    }
    return 0;
}

/* ---- the other params ---- */

static int parse_id(json_t *params, bool required, char **out, char *err, size_t errlen)
{
    json_t *v = json_object_get(params, "memory_id");
    if (!v || json_is_null(v)) v = json_object_get(params, "id");
    if (!v || json_is_null(v)) {
        if (!required) return 0;
        snprintf(err, errlen, "params.memory_id is required (the id add_memory returned)");
        return AIOS_EINVAL;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > MEM_ID_MAX) {
        snprintf(err, errlen, "params.memory_id must be a non-empty string of at most %d bytes",
                 MEM_ID_MAX);
        return AIOS_EINVAL;
    }
    for (const char *p = json_string_value(v); *p; p++) {
        if (iscntrl((unsigned char)*p)) {
            snprintf(err, errlen, "params.memory_id must not contain control characters");
            return AIOS_EINVAL;
        }
    }
    *out = strdup(json_string_value(v));
    return *out ? 0 : AIOS_ENOMEM;
}

static int parse_retrieve(json_t *params, struct mem_retrieve_params *p, char *err, size_t errlen)
{
    json_t *q = json_object_get(params, "content");
    if (!q || json_is_null(q)) q = json_object_get(params, "query");
    if (!json_is_string(q)) {
        snprintf(err, errlen, "params.content (or params.query) must be a string: the text to search for");
        return AIOS_EINVAL;
    }
    json_t *kv = json_object_get(params, "k");
    if (!kv || json_is_null(kv)) kv = json_object_get(params, "n");
    p->k = MEM_DEFAULT_K;
    if (kv && !json_is_null(kv)) {
        if (!json_is_integer(kv) || json_integer_value(kv) < 1 || json_integer_value(kv) > MEM_MAX_K) {
            snprintf(err, errlen, "params.k must be an integer from 1 to %d (how many notes to return)",
                     MEM_MAX_K);
            return AIOS_EINVAL;
        }
        p->k = (int)json_integer_value(kv);
    }
    p->query_len = json_string_length(q);
    p->query = malloc(p->query_len + 1);
    if (!p->query) return AIOS_ENOMEM;
    memcpy(p->query, json_string_value(q), p->query_len + 1);
    p->backfill = true;
    return 0;
}

/* share_memory {agent, mode: "r"|"rw" (default r), expires_in: seconds},
 * unshare_memory {agent} */
static int parse_share(json_t *params, enum mem_op op, struct mem_share_params *p, char *err,
                       size_t errlen)
{
    const char *to = json_string_value(json_object_get(params, "agent"));
    if (!to) to = json_string_value(json_object_get(params, "grantee"));
    if (!to || !*to) {
        snprintf(err, errlen, "params.agent must name the agent to %s with",
                 op == MEM_OP_SHARE ? "share" : "stop sharing");
        return AIOS_EINVAL;
    }
    if (op == MEM_OP_SHARE) {
        const char *mode = json_string_value(json_object_get(params, "mode"));
        if (mode && strcmp(mode, "r") && strcmp(mode, "rw")) {
            snprintf(err, errlen, "params.mode must be \"r\" (read-only, the default) or \"rw\"");
            return AIOS_EINVAL;
        }
        json_t *ex = json_object_get(params, "expires_in");
        if (ex && !json_is_null(ex) && (!json_is_integer(ex) || json_integer_value(ex) < 1)) {
            snprintf(err, errlen, "params.expires_in must be a number of seconds (>= 1)");
            return AIOS_EINVAL;
        }
        p->write = mode && !strcmp(mode, "rw");
        p->expires_in = json_is_integer(ex) ? json_integer_value(ex) : 0;
    }
    p->grantee = strdup(to);
    return p->grantee ? 0 : AIOS_ENOMEM;
}

static int parse_op(enum mem_op op, json_t *params, struct mem_req *r, char *err, size_t errlen)
{
    int rc;
    switch (op) {
    case MEM_OP_ADD_AGENTIC: {
        json_t *c = json_object_get(params, "content");
        if (!json_is_string(c) || json_string_length(c) == 0) {
            snprintf(err, errlen, "params.content must be a non-empty string (the text of the note)");
            return AIOS_EINVAL;
        }
    }
    /* fall through */
    case MEM_OP_ADD:
        if ((rc = parse_id(params, false, &r->u.add.id, err, errlen))) return rc;
        return parse_fields(params, true, &r->u.add.f, err, errlen);
    case MEM_OP_UPDATE:
        if ((rc = parse_id(params, true, &r->u.update.id, err, errlen))) return rc;
        return parse_fields(params, false, &r->u.update.f, err, errlen);
    case MEM_OP_GET:
    case MEM_OP_REMOVE: return parse_id(params, true, &r->u.id.id, err, errlen);
    case MEM_OP_RETRIEVE:
    case MEM_OP_RETRIEVE_RAW: return parse_retrieve(params, &r->u.retrieve, err, errlen);
    case MEM_OP_SHARE:
    case MEM_OP_UNSHARE: return parse_share(params, op, &r->u.share, err, errlen);
    case MEM_OP_STATS:
    case MEM_OP_SHARES: return 0;
    default: break;
    }
    return AIOS_EINVAL;
}

int mem_req_parse(const char *op, json_t *params, struct mem_req **out, char *err, size_t errlen)
{
    *out = NULL;
    if (errlen) err[0] = 0;
    if (!json_is_object(params)) {
        snprintf(err, errlen, "params must be an object");
        return AIOS_EINVAL;
    }
    int i;
    for (i = 0; i < MEM_OP__COUNT && strcmp(op ? op : "", k_names[i]); i++) {}
    if (i == MEM_OP__COUNT) {
        snprintf(err, errlen,
                 "unknown memory operation_type '%s'; use add_memory, add_agentic_memory, "
                 "get_memory, update_memory, remove_memory, retrieve_memory, "
                 "retrieve_memory_raw, memory_stats, share_memory, unshare_memory or "
                 "memory_shares", op ? op : "");
        return AIOS_EINVAL;
    }
    struct mem_req *r = mem_req_new((enum mem_op)i);
    if (!r) return AIOS_ENOMEM;
    int rc = 0;
    /* another agent's namespace; the share operations act on the caller's
     * own, and the manager refuses one that names another owner */
    json_t *own = json_object_get(params, "owner");
    bool sharing = r->op == MEM_OP_SHARE || r->op == MEM_OP_UNSHARE || r->op == MEM_OP_SHARES;
    if (!sharing && (!own || json_is_null(own))) own = json_object_get(params, "namespace");
    if (sharing && !json_is_string(own)) own = NULL;
    if (own && !json_is_null(own)) {
        if (!json_is_string(own)) {
            snprintf(err, errlen, "params.owner must be the name of the agent whose memory to use");
            rc = AIOS_EINVAL;
            goto out;
        }
        if (json_string_length(own) && !(r->owner = strdup(json_string_value(own)))) {
            rc = AIOS_ENOMEM;
            goto out;
        }
    }
    rc = parse_op(r->op, params, r, err, errlen);
out:
    if (rc) {
        mem_req_free(r);
        if (rc == AIOS_ENOMEM && errlen) snprintf(err, errlen, "out of memory");
        return rc;
    }
    *out = r;
    return 0;
}
