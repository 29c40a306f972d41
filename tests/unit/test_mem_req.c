/* Unit tests for the memory manager's typed calls and its seams: the pure
 * parser at the edge (mem_req_parse: fields, defaults, errors, a request
 * that outlives its JSON), the C functions without JSON (mem_add,
 * mem_retrieve counting or not, mem_get, mem_stats), the store table (a
 * counting and failing wrapper around the SQLite store proves every store
 * call goes through it), the policy and analysis callbacks of struct
 * mem_deps, and add_agentic_memory on a note with no word in it. Real
 * SQLite files in a temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "memory/mem.h"
#include "util/err.h"

static char g_dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/aios-memreq-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static char *path_in(const char *name)
{
    static char p[128];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    return p;
}

static struct mem_req *parse_ok(const char *op, const char *params)
{
    json_t *p = json_loads(params, 0, NULL);
    assert_non_null(p);
    struct mem_req *r = NULL;
    char err[512] = "";
    int rc = mem_req_parse(op, p, &r, err, sizeof err);
    json_decref(p); /* the request owns copies: nothing points into p */
    if (rc) fail_msg("%s %s: %s", op, params, err);
    return r;
}

static void parse_err(const char *op, const char *params, const char *needle)
{
    json_t *p = params ? json_loads(params, JSON_DECODE_ANY, NULL) : NULL;
    struct mem_req *r = (struct mem_req *)1;
    char err[512] = "";
    assert_int_equal(mem_req_parse(op, p, &r, err, sizeof err), AIOS_EINVAL);
    assert_null(r);
    if (!strstr(err, needle)) fail_msg("%s %s: message \"%s\" lacks \"%s\"", op, params, err, needle);
    json_decref(p);
}

static void test_parse(void **state)
{
    (void)state;
    /* every operation by its name */
    for (int i = 0; i < MEM_OP__COUNT; i++) {
        const char *params = i == MEM_OP_GET || i == MEM_OP_REMOVE || i == MEM_OP_UPDATE
                                 ? "{\"memory_id\":\"x\"}"
                             : i == MEM_OP_SHARE || i == MEM_OP_UNSHARE ? "{\"agent\":\"b\"}"
                                                                        : "{\"content\":\"c\"}";
        struct mem_req *r = parse_ok(mem_op_name((enum mem_op)i), params);
        assert_int_equal(r->op, i);
        mem_req_free(r);
    }
    assert_null(mem_op_name(MEM_OP__COUNT));
    assert_false(mem_op_writes(MEM_OP_RETRIEVE_RAW));
    assert_true(mem_op_writes(MEM_OP_UPDATE));

    /* add: fields from params and from metadata, extra keys kept, owner */
    struct mem_req *r = parse_ok("add_memory",
                                 "{\"content\":\"hello\",\"memory_id\":\"n1\",\"tags\":\"a, b,,c\","
                                 "\"owner\":\"bob\",\"metadata\":{\"category\":\"work\","
                                 "\"keywords\":[\"k\"],\"priority\":\"high\",\"timestamp\":\"202501311200\"}}");
    assert_int_equal(r->op, MEM_OP_ADD);
    assert_string_equal(r->owner, "bob");
    assert_string_equal(r->u.add.id, "n1");
    assert_string_equal(r->u.add.f.content, "hello");
    assert_string_equal(r->u.add.f.category, "work");
    assert_null(r->u.add.f.context);
    assert_int_equal(json_array_size(r->u.add.f.tags), 3);
    assert_string_equal(json_string_value(json_array_get(r->u.add.f.tags, 2)), "c");
    assert_string_equal(json_string_value(json_array_get(r->u.add.f.keywords, 0)), "k");
    assert_string_equal(r->u.add.f.timestamp, "202501311200");
    assert_int_equal(json_object_size(r->u.add.f.extra), 1);
    assert_string_equal(json_string_value(json_object_get(r->u.add.f.extra, "priority")), "high");
    /* applied to a note */
    struct mem_note *n = mem_note_new();
    assert_int_equal(mem_fields_apply(&r->u.add.f, n), 0);
    assert_string_equal(n->content, "hello");
    assert_string_equal(n->category, "work");
    assert_string_equal(n->context, "General"); /* absent: unchanged */
    assert_string_equal(json_string_value(json_object_get(n->extra, "priority")), "high");
    mem_note_free(n);
    mem_req_free(r);

    /* update: only what is present */
    r = parse_ok("update_memory", "{\"id\":\"n1\",\"content\":null,\"context\":\"c2\"}");
    assert_string_equal(r->u.update.id, "n1");
    assert_null(r->u.update.f.content);
    assert_string_equal(r->u.update.f.context, "c2");
    assert_null(r->owner);
    mem_req_free(r);

    /* retrieve: "query" and "n" as aliases, the default k, a NUL-free copy */
    r = parse_ok("retrieve_memory", "{\"query\":\"river bank\"}");
    assert_string_equal(r->u.retrieve.query, "river bank");
    assert_int_equal(r->u.retrieve.query_len, 10);
    assert_int_equal(r->u.retrieve.k, MEM_DEFAULT_K);
    assert_true(r->u.retrieve.backfill);
    mem_req_free(r);
    r = parse_ok("retrieve_memory_raw", "{\"content\":\"x\",\"n\":7,\"namespace\":\"carol\"}");
    assert_int_equal(r->u.retrieve.k, 7);
    assert_string_equal(r->owner, "carol");
    mem_req_free(r);

    /* sharing: mode and expiry; a non-string owner is ignored there */
    r = parse_ok("share_memory", "{\"grantee\":\"b\",\"mode\":\"rw\",\"expires_in\":60,\"owner\":5}");
    assert_string_equal(r->u.share.grantee, "b");
    assert_true(r->u.share.write);
    assert_int_equal(r->u.share.expires_in, 60);
    assert_null(r->owner);
    mem_req_free(r);

    /* errors name the field */
    parse_err("add_memory", "[1]", "params must be an object");
    parse_err("add_memory", NULL, "params must be an object");
    parse_err("forget_everything", "{}", "unknown memory operation_type 'forget_everything'");
    parse_err(NULL, "{}", "unknown memory operation_type");
    parse_err("add_memory", "{\"content\":\"x\",\"owner\":5}", "params.owner");
    parse_err("add_memory", "{\"content\":\"\"}", "empty");
    parse_err("add_memory", "{\"content\":\"x\",\"category\":3}", "params.category");
    parse_err("add_memory", "{\"content\":\"x\",\"timestamp\":\"2025013112000\"}", "params.timestamp");
    parse_err("add_memory", "{\"content\":\"x\",\"memory_id\":\"a\\nb\"}", "control characters");
    parse_err("add_agentic_memory", "{\"content\":7}", "non-empty string");
    parse_err("update_memory", "{\"content\":5,\"memory_id\":\"a\"}", "or null to keep it");
    parse_err("retrieve_memory", "{\"content\":\"x\",\"k\":1001}", "params.k");
    parse_err("share_memory", "{}", "params.agent");
    parse_err("share_memory", "{\"agent\":\"b\",\"mode\":\"w\"}", "params.mode");
    parse_err("share_memory", "{\"agent\":\"b\",\"expires_in\":0}", "params.expires_in");
}

/* ---- a store table around SQLite that counts and can fail ---- */

enum { C_OPEN, C_CLOSE, C_INSERT, C_GET, C_UPDATE, C_REMOVE, C_TOUCH, C_COUNT, C_SEARCH, C__N };
static int g_calls[C__N];
static int g_fail_insert;

#define SQ mem_store_sqlite
static int w_open(struct mem_store **o, const char *p, bool fs, char *e, size_t el)
{
    g_calls[C_OPEN]++;
    return SQ.open(o, p, fs, e, el);
}
static void w_close(struct mem_store *s)
{
    g_calls[C_CLOSE]++;
    SQ.close(s);
}
static int w_insert(struct mem_store *s, const char *a, const struct mem_note *n)
{
    g_calls[C_INSERT]++;
    return g_fail_insert ? AIOS_EIO : SQ.insert(s, a, n);
}
static int w_get(struct mem_store *s, const char *a, const char *id, struct mem_note **out)
{
    g_calls[C_GET]++;
    return SQ.get(s, a, id, out);
}
static int w_update(struct mem_store *s, const char *a, const struct mem_note *n)
{
    g_calls[C_UPDATE]++;
    return SQ.update(s, a, n);
}
static int w_remove(struct mem_store *s, const char *a, const char *id)
{
    g_calls[C_REMOVE]++;
    return SQ.remove(s, a, id);
}
static int w_touch(struct mem_store *s, const char *a, const char *const *ids, size_t n,
                   const char *ts)
{
    g_calls[C_TOUCH]++;
    return SQ.touch(s, a, ids, n, ts);
}
static int w_count(struct mem_store *s, const char *a, long long *out)
{
    g_calls[C_COUNT]++;
    return SQ.count(s, a, out);
}
static int w_search(struct mem_store *s, const char *a, const char *t, int k, struct mem_hit **h,
                    size_t *n)
{
    g_calls[C_SEARCH]++;
    return SQ.search(s, a, t, k, h, n);
}

static struct mem_store_ops g_counting;

static struct mem_manager *open_mgr(const char *db, const struct mem_deps *d)
{
    struct mem_opts o = {.quota_bytes = 1 << 20, .max_note_bytes = 4096, .full_sync = false,
                         .agentic_max_tokens = 4, .workers = 1, .db_path = path_in(db)};
    struct mem_manager *m = NULL;
    char err[256] = "";
    if (mem_manager_open(&m, &o, d, err, sizeof err)) fail_msg("open: %s", err);
    return m;
}

static json_t *exec(struct mem_manager *m, const char *agent, const char *op, const char *params,
                    int want_status, const char *needle)
{
    json_t *p = json_loads(params, 0, NULL), *r = NULL;
    assert_non_null(p);
    int st = 0;
    char err[512] = "";
    int rc = mem_manager_exec_json(m, agent, op, p, &r, &st, err, sizeof err);
    json_decref(p);
    if (want_status == 200 && rc) fail_msg("%s %s: %d %s", op, params, st, err);
    if (want_status != 200) {
        assert_true(rc < 0);
        assert_null(r);
        if (st != want_status) fail_msg("%s %s: expected %d, got %d (%s)", op, params, want_status, st, err);
        if (!strstr(err, needle)) fail_msg("message \"%s\" lacks \"%s\"", err, needle);
    }
    return r;
}

static void test_store_table(void **state)
{
    (void)state;
    g_counting = mem_store_sqlite;
    g_counting.name = "counting";
    g_counting.open = w_open;
    g_counting.close = w_close;
    g_counting.insert = w_insert;
    g_counting.get = w_get;
    g_counting.update = w_update;
    g_counting.remove = w_remove;
    g_counting.touch = w_touch;
    g_counting.count = w_count;
    g_counting.search = w_search;
    memset(g_calls, 0, sizeof g_calls);
    struct mem_deps d = {.store = &g_counting};
    struct mem_manager *m = open_mgr("table.db", &d);
    assert_ptr_equal(mem_manager_store_ops(m), &g_counting);
    assert_int_equal(g_calls[C_OPEN], 1);
    json_decref(exec(m, "a", "add_memory", "{\"memory_id\":\"n1\",\"content\":\"the river bank\"}", 200, NULL));
    json_decref(exec(m, "a", "get_memory", "{\"memory_id\":\"n1\"}", 200, NULL)); /* resident */
    json_decref(exec(m, "a", "get_memory", "{\"memory_id\":\"zz\"}", 404, "no memory"));
    json_decref(exec(m, "a", "update_memory", "{\"memory_id\":\"n1\",\"context\":\"x\"}", 200, NULL));
    json_decref(exec(m, "a", "retrieve_memory", "{\"content\":\"river\"}", 200, NULL));
    json_decref(exec(m, "a", "retrieve_memory_raw", "{\"content\":\"river\"}", 200, NULL));
    json_decref(exec(m, "a", "memory_stats", "{}", 200, NULL));
    json_decref(exec(m, "a", "remove_memory", "{\"memory_id\":\"n1\"}", 200, NULL));
    assert_int_equal(g_calls[C_INSERT], 1);
    assert_int_equal(g_calls[C_GET], 1); /* the miss only: n1 was resident */
    assert_int_equal(g_calls[C_UPDATE], 1);
    assert_int_equal(g_calls[C_SEARCH], 2);
    assert_int_equal(g_calls[C_TOUCH], 1); /* raw retrieval counts nothing */
    assert_int_equal(g_calls[C_COUNT], 1);
    assert_int_equal(g_calls[C_REMOVE], 1);
    /* a failing store: the manager answers 500 and keeps nothing */
    g_fail_insert = 1;
    json_decref(exec(m, "a", "add_memory", "{\"memory_id\":\"n2\",\"content\":\"lost\"}", 500,
                     "memory database failed"));
    g_fail_insert = 0;
    json_decref(exec(m, "a", "get_memory", "{\"memory_id\":\"n2\"}", 404, "no memory"));
    mem_manager_close(m);
    assert_int_equal(g_calls[C_CLOSE], 1);
}

/* ---- the C functions, no JSON ---- */

static void test_c_functions(void **state)
{
    (void)state;
    struct mem_manager *m = open_mgr("cfun.db", NULL);
    struct mem_add_params ap = {.f = {.content = "kettle boils water for tea"}};
    char id[MEM_ID_MAX + 1];
    char err[256] = "";
    struct mem_note *stored = NULL;
    assert_int_equal(mem_add(m, "a", &ap, NULL, id, &stored, err, sizeof err), 0);
    assert_int_equal(strlen(id), 36);
    assert_string_equal(stored->id, id);
    assert_string_equal(stored->category, "Uncategorized");
    mem_note_free(stored);
    ap.id = id; /* the same id again */
    assert_int_equal(mem_add(m, "a", &ap, NULL, id, NULL, err, sizeof err), MEM_EEXISTS);
    assert_non_null(strstr(err, "already has"));
    struct mem_add_params empty = {.f = {.content = ""}};
    char id2[MEM_ID_MAX + 1];
    assert_int_equal(mem_add(m, "a", &empty, NULL, id2, NULL, err, sizeof err), AIOS_EINVAL);

    struct mem_retrieve_params rp = {.query = "tea", .query_len = 3, .k = 5};
    struct mem_hit *hits = NULL;
    size_t n = 0;
    /* read-only retrieval: nothing counted */
    assert_int_equal(mem_retrieve(m, "a", &rp, false, &hits, &n, err, sizeof err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(hits[0].note->id, id);
    assert_int_equal(hits[0].note->retrieval_count, 0);
    mem_hits_free(hits, n);
    assert_int_equal(mem_retrieve(m, "a", &rp, true, &hits, &n, err, sizeof err), 0);
    assert_int_equal(hits[0].note->retrieval_count, 1);
    mem_hits_free(hits, n);
    assert_int_equal(mem_retrieve(m, "b", &rp, true, &hits, &n, err, sizeof err), 0);
    assert_int_equal(n, 0); /* another namespace */
    mem_hits_free(hits, n);

    struct mem_note *g = NULL;
    assert_int_equal(mem_get(m, "a", id, &g, err, sizeof err), 0);
    assert_int_equal(g->retrieval_count, 1);
    mem_note_free(g);
    struct mem_update_params up = {.id = id, .f = {.category = "kitchen"}};
    assert_int_equal(mem_update(m, "a", &up, err, sizeof err), 0);
    assert_int_equal(mem_get(m, "a", id, &g, err, sizeof err), 0);
    assert_string_equal(g->category, "kitchen");
    assert_string_equal(g->content, "kettle boils water for tea");
    mem_note_free(g);

    struct mem_stats st;
    assert_int_equal(mem_stats(m, "a", &st), 0);
    assert_int_equal(st.n_notes, 1);
    assert_int_equal(st.n_order, 1);
    assert_string_equal(st.eviction_order[0], id);
    mem_stats_free(&st);
    assert_int_equal(mem_remove(m, "a", id, err, sizeof err), 0);
    assert_int_equal(mem_remove(m, "a", id, err, sizeof err), AIOS_ENOTFOUND);
    assert_int_equal(mem_get(m, "a", id, &g, err, sizeof err), AIOS_ENOTFOUND);
    assert_null(g);
    mem_manager_close(m);
}

/* ---- policy and analysis callbacks ---- */

struct policy_log {
    int n_checks, n_analyze;
    char last_op[64], share_to[64];
    bool share_write;
    long long share_exp;
};

/* reader may read owner's notes, and nothing else */
static int p_ns(void *ud, const char *agent, const char *owner, bool write, const char *op)
{
    struct policy_log *l = ud;
    l->n_checks++;
    snprintf(l->last_op, sizeof l->last_op, "%s", op);
    if (strcmp(agent, "reader") || strcmp(owner, "owner")) return AIOS_ENOTFOUND;
    return write ? AIOS_EPERM : 0;
}
static int p_share(void *ud, const char *owner, const struct mem_share_params *p, char *err,
                   size_t errlen)
{
    struct policy_log *l = ud;
    (void)owner, (void)err, (void)errlen;
    snprintf(l->share_to, sizeof l->share_to, "%s", p->grantee);
    l->share_write = p->write;
    l->share_exp = p->expires_in;
    return 0;
}
static int p_unshare(void *ud, const char *owner, const char *grantee)
{
    (void)ud, (void)owner;
    return strcmp(grantee, "b") ? AIOS_ENOTFOUND : 0;
}
static int p_shares(void *ud, const char *owner, json_t **out, char *err, size_t errlen)
{
    (void)ud, (void)err, (void)errlen;
    *out = json_pack("{s:s}", "owner", owner);
    return 0;
}
static int p_analyze(void *ud, const char *agent, const char *content, int max_tokens,
                     struct mem_analysis *out)
{
    struct policy_log *l = ud;
    l->n_analyze++;
    assert_string_equal(agent, "reader");
    assert_int_equal(max_tokens, 4);
    assert_non_null(strstr(content, "robots"));
    memset(out, 0, sizeof *out);
    out->keywords = json_pack("[s]", "model-kw");
    out->tags = json_pack("[s]", "model-tag");
    out->context = strdup("model context");
    out->source = "model";
    return 0;
}

static void test_policy_callbacks(void **state)
{
    (void)state;
    /* without a policy: only the own namespace, no sharing */
    struct mem_manager *m = open_mgr("nopol.db", NULL);
    json_decref(exec(m, "reader", "get_memory", "{\"memory_id\":\"x\",\"owner\":\"owner\"}", 404,
                     "no memory namespace 'owner'"));
    json_decref(exec(m, "a", "share_memory", "{\"agent\":\"b\"}", 400, "needs the access manager"));
    mem_manager_close(m);

    struct policy_log l = {0};
    struct mem_deps d = {.ud = &l, .ns_check = p_ns, .share = p_share, .unshare = p_unshare,
                         .shares = p_shares, .analyze = p_analyze};
    m = open_mgr("pol.db", &d);
    json_decref(exec(m, "owner", "add_memory", "{\"memory_id\":\"o1\",\"content\":\"owner's plan\"}", 200, NULL));
    assert_int_equal(l.n_checks, 0); /* the own namespace asks nobody */
    json_t *r = exec(m, "reader", "get_memory", "{\"memory_id\":\"o1\",\"owner\":\"owner\"}", 200, NULL);
    assert_string_equal(json_string_value(json_object_get(r, "content")), "owner's plan");
    json_decref(r);
    assert_string_equal(l.last_op, "get_memory");
    json_decref(exec(m, "reader", "remove_memory", "{\"memory_id\":\"o1\",\"owner\":\"owner\"}", 403,
                     "may only read"));
    json_decref(exec(m, "other", "get_memory", "{\"memory_id\":\"o1\",\"owner\":\"owner\"}", 404,
                     "no memory namespace"));
    /* sharing goes to the callbacks, for the caller's own namespace only */
    json_decref(exec(m, "a", "share_memory", "{\"agent\":\"b\",\"owner\":\"z\"}", 403, "only the owner"));
    r = exec(m, "a", "share_memory", "{\"agent\":\"b\",\"mode\":\"rw\",\"expires_in\":9}", 200, NULL);
    assert_string_equal(json_string_value(json_object_get(r, "response_message")), "memory shared");
    json_decref(r);
    assert_string_equal(l.share_to, "b");
    assert_true(l.share_write);
    assert_int_equal(l.share_exp, 9);
    json_decref(exec(m, "a", "unshare_memory", "{\"agent\":\"c\"}", 404, "has no share"));
    r = exec(m, "a", "memory_shares", "{}", 200, NULL);
    assert_string_equal(json_string_value(json_object_get(json_object_get(r, "shares"), "owner")), "a");
    json_decref(r);
    /* add_agentic_memory asks the analysis callback for the caller */
    r = exec(m, "reader", "add_agentic_memory", "{\"content\":\"robots build robots\"}", 200, NULL);
    json_t *md = json_object_get(r, "metadata");
    assert_string_equal(json_string_value(json_object_get(md, "analysis")), "model");
    assert_string_equal(json_string_value(json_array_get(json_object_get(md, "keywords"), 0)), "model-kw");
    assert_string_equal(json_string_value(json_object_get(md, "context")), "model context");
    json_decref(r);
    assert_int_equal(l.n_analyze, 1);
    mem_manager_close(m);
}

/* A note with no word in it: keyword extraction finds nothing (and must not
 * hand qsort a NULL array: the sanitizer build aborted on it). */
static int64_t disk_bytes(const char *db)
{
    char p[256];
    int64_t n = 0;
    struct stat st;
    if (stat(db, &st) == 0) n += st.st_size;
    snprintf(p, sizeof p, "%s-wal", db);
    if (stat(p, &st) == 0) n += st.st_size;
    return n;
}

static int64_t stored_bytes(struct mem_manager *m, const char *agent)
{
    json_t *r = exec(m, agent, "memory_stats", "{}", 200, NULL);
    int64_t b = json_integer_value(json_object_get(json_object_get(r, "metadata"), "stored_bytes"));
    json_decref(r);
    return b;
}

/* memory.store_quota_bytes bounds what an agent's notes take on disk, is
 * checked before the note is stored (adds and updates), and removing notes
 * gives the bytes back, in the count and on disk. */
static void test_store_quota(void **state)
{
    (void)state;
    struct mem_opts o = {.quota_bytes = 1 << 20, .max_note_bytes = 1 << 16, .full_sync = false,
                         .agentic_max_tokens = 4, .workers = 1, .store_quota_bytes = 4096,
                         .db_path = path_in("quota.db")};
    struct mem_manager *m = NULL;
    char err[512] = "", p[12000], body[10000];
    struct mem_deps d = {0};
    if (mem_manager_open(&m, &o, &d, err, sizeof err)) fail_msg("open: %s", err);
    memset(body, 'w', 1000);
    body[1000] = 0;
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "{\"memory_id\":\"n%d\",\"content\":\"%s\"}", i, body);
        json_decref(exec(m, "a", "add_memory", p, 200, NULL));
    }
    int64_t used = stored_bytes(m, "a");
    assert_true(used > 3000 && used <= 4096);
    snprintf(p, sizeof p, "{\"memory_id\":\"n9\",\"content\":\"%s\"}", body);
    json_decref(exec(m, "a", "add_memory", p, 507, "memory.store_quota_bytes"));
    assert_int_equal(stored_bytes(m, "a"), used); /* nothing of it stored */
    /* another agent has its own */
    json_decref(exec(m, "b", "add_memory", p, 200, NULL));
    /* growing a note over the quota is refused too; shrinking is not */
    memset(body, 'w', 2500);
    body[2500] = 0;
    snprintf(p, sizeof p, "{\"memory_id\":\"n0\",\"content\":\"%s\"}", body);
    json_decref(exec(m, "a", "update_memory", p, 507, "memory.store_quota_bytes"));
    json_decref(exec(m, "a", "update_memory", "{\"memory_id\":\"n0\",\"content\":\"short\"}",
                     200, NULL));
    assert_true(stored_bytes(m, "a") < used - 900);
    json_decref(exec(m, "a", "remove_memory", "{\"memory_id\":\"n1\"}", 200, NULL));
    memset(body, 'w', 1000);
    body[1000] = 0;
    snprintf(p, sizeof p, "{\"memory_id\":\"n9\",\"content\":\"%s\"}", body);
    json_decref(exec(m, "a", "add_memory", p, 200, NULL));
    mem_manager_close(m);

    /* space on disk: 300 notes of 8 KB, then every one removed */
    o.store_quota_bytes = 0;
    o.db_path = path_in("space.db");
    if (mem_manager_open(&m, &o, &d, err, sizeof err)) fail_msg("open: %s", err);
    unsigned seed = 3;
    for (int i = 0; i < 300; i++) {
        /* words of 2..9 letters: text, not one 8000-letter token */
        for (int j = 0; j < 8000; j++)
            body[j] = rand_r(&seed) % 6 == 0 ? ' ' : (char)('a' + rand_r(&seed) % 26);
        body[8000] = 0;
        snprintf(p, sizeof p, "{\"memory_id\":\"s%d\",\"content\":\"%s\"}", i, body);
        json_decref(exec(m, "c", "add_memory", p, 200, NULL));
    }
    int64_t before = disk_bytes(path_in("space.db"));
    for (int i = 0; i < 300; i++) {
        snprintf(p, sizeof p, "{\"memory_id\":\"s%d\"}", i);
        json_decref(exec(m, "c", "remove_memory", p, 200, NULL));
    }
    int64_t after = disk_bytes(path_in("space.db"));
    assert_int_equal(stored_bytes(m, "c"), 0);
    print_message("memory database + log: %lld bytes with 300 notes of 8000 bytes, %lld after "
                  "removing them\n", (long long)before, (long long)after);
    assert_true(after < before / 4);
    mem_manager_close(m);
}

static void test_agentic_no_word(void **state)
{
    (void)state;
    json_t *kw = mem_extract_keywords("?! 12 -- 345 !!", 5);
    assert_int_equal(json_array_size(kw), 0);
    json_decref(kw);
    kw = mem_extract_keywords("", 5);
    assert_int_equal(json_array_size(kw), 0);
    json_decref(kw);
    struct mem_manager *m = open_mgr("noword.db", NULL);
    json_t *r = exec(m, "a", "add_agentic_memory", "{\"content\":\"?! 12 -- 345 !!\"}", 200, NULL);
    json_t *md = json_object_get(r, "metadata");
    assert_string_equal(json_string_value(json_object_get(md, "analysis")), "keywords");
    assert_int_equal(json_array_size(json_object_get(md, "keywords")), 0);
    assert_int_equal(json_array_size(json_object_get(md, "tags")), 0);
    assert_string_equal(json_string_value(json_object_get(md, "context")), "?!");
    char p[128];
    snprintf(p, sizeof p, "{\"memory_id\":\"%s\"}", json_string_value(json_object_get(r, "memory_id")));
    json_decref(r);
    r = exec(m, "a", "get_memory", p, 200, NULL);
    assert_string_equal(json_string_value(json_object_get(r, "content")), "?! 12 -- 345 !!");
    json_decref(r);
    mem_manager_close(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_store_table),
        cmocka_unit_test(test_c_functions),
        cmocka_unit_test(test_policy_callbacks),
        cmocka_unit_test(test_agentic_no_word),
        cmocka_unit_test(test_store_quota),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
