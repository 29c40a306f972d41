/* Integration test harness; see harness.h. */
#include "harness.h"

#include "llm/testmodel.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <glob.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

const char *aios_bin(void)
{
    const char *b = getenv("AIOS_BIN");
    return b && *b ? b : "build/aios";
}

void kf_print_log(struct kernel_fixture *kf)
{
    FILE *f = fopen(kf->child.log_path, "r");
    if (!f) return;
    char line[1024];
    fprintf(stderr, "---- kernel log %s ----\n", kf->child.log_path);
    while (fgets(line, sizeof line, f)) fputs(line, stderr);
    fprintf(stderr, "---- end of log ----\n");
    fclose(f);
}

/* ---- PostgreSQL ---- */

static struct {
    bool started;
    char dir[256];   /* the cluster's temporary directory */
    char bindir[256];
    int port;
    int n_db;
    char url[512];   /* the current database's URL */
} g_pg;

bool kf_pg_mode(void)
{
    const char *m = getenv("AIOS_TEST_STATE");
    return m && !strcmp(m, "postgres");
}

const char *kf_pg_url(void) { return g_pg.url; }

/* run argv (as the postgres user when we are root); its exit status */
static int pg_run(const char *const *argv, const char *out_path)
{
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        if (getuid() == 0) {
            struct passwd *pw = getpwnam("postgres");
            if (!pw) pw = getpwnam("nobody");
            if (!pw || setgroups(0, NULL) || setgid(pw->pw_gid) || setuid(pw->pw_uid)) _exit(126);
        }
        if (out_path) {
            FILE *f = freopen(out_path, "a", stdout);
            if (f) dup2(fileno(f), 2);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    if (waitpid(pid, &st, 0) < 0) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void pg_stop_at_exit(void)
{
    if (!g_pg.started) return;
    char bin[300], data[300], cmd[600];
    snprintf(bin, sizeof bin, "%s/pg_ctl", g_pg.bindir);
    snprintf(data, sizeof data, "%s/data", g_pg.dir);
    const char *argv[] = {bin, "-D", data, "-m", "immediate", "-w", "stop", NULL};
    pg_run(argv, NULL);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_pg.dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_pg.dir);
    g_pg.started = false;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

static bool pg_find_bindir(void)
{
    const char *env = getenv("AIOS_PG_BINDIR");
    if (env && *env) {
        snprintf(g_pg.bindir, sizeof g_pg.bindir, "%s", env);
    } else {
        glob_t gl;
        if (glob("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &gl) || gl.gl_pathc == 0) {
            globfree(&gl);
            return false;
        }
        /* the newest version sorts last */
        snprintf(g_pg.bindir, sizeof g_pg.bindir, "%.*s",
                 (int)(strlen(gl.gl_pathv[gl.gl_pathc - 1]) - strlen("/initdb")),
                 gl.gl_pathv[gl.gl_pathc - 1]);
        globfree(&gl);
    }
    char p[300];
    snprintf(p, sizeof p, "%s/pg_ctl", g_pg.bindir);
    return access(p, X_OK) == 0;
}

bool kf_pg_available(void) { return g_pg.started || pg_find_bindir(); }

static bool pg_start(void)
{
    if (g_pg.started) return true;
    if (!pg_find_bindir()) {
        fprintf(stderr, "PostgreSQL: no initdb/pg_ctl (install Debian's postgresql: "
                "scripts/deps.sh); this test needs them\n");
        return false;
    }
    snprintf(g_pg.dir, sizeof g_pg.dir, "/tmp/aios-pg-XXXXXX");
    if (!mkdtemp(g_pg.dir)) return false;
    if (getuid() == 0) {
        /* the server refuses to run as root: the directory is the
         * postgres user's (or nobody's) */
        struct passwd *pw = getpwnam("postgres");
        if (!pw) pw = getpwnam("nobody");
        if (!pw || chown(g_pg.dir, pw->pw_uid, pw->pw_gid)) return false;
    }
    char initdb[300], pg_ctl[300], data[300], log[300], ilog[300], opts[600];
    snprintf(initdb, sizeof initdb, "%s/initdb", g_pg.bindir);
    snprintf(pg_ctl, sizeof pg_ctl, "%s/pg_ctl", g_pg.bindir);
    snprintf(data, sizeof data, "%s/data", g_pg.dir);
    snprintf(log, sizeof log, "%s/server.log", g_pg.dir);
    snprintf(ilog, sizeof ilog, "%s/initdb.log", g_pg.dir);
    const char *a1[] = {initdb, "-D", data, "-U", "aios", "--auth=trust", "-E", "UTF8",
                        "--locale=C", "--no-sync", NULL};
    if (pg_run(a1, ilog) != 0) {
        fprintf(stderr, "PostgreSQL: initdb failed (log in %s)\n", ilog);
        return false;
    }
    g_pg.started = true; /* from here on, stopped and removed at exit */
    atexit(pg_stop_at_exit);
    for (int attempt = 0; attempt < 5; attempt++) {
        g_pg.port = free_port();
        /* fsync off: the tests kill kernels, never the database server */
        snprintf(opts, sizeof opts, "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off "
                 "-c max_connections=200", g_pg.port, g_pg.dir);
        const char *a2[] = {pg_ctl, "-D", data, "-l", log, "-o", opts, "-w", "-t", "120",
                            "start", NULL};
        if (pg_run(a2, ilog) == 0) return true;
    }
    fprintf(stderr, "PostgreSQL: pg_ctl start failed (log in %s)\n", log);
    return false;
}

const char *kf_pg_new_db(void)
{
    if (!pg_start()) return NULL;
    char conn[512], sql[128];
    snprintf(conn, sizeof conn, "host=127.0.0.1 port=%d user=aios dbname=postgres", g_pg.port);
    PGconn *c = PQconnectdb(conn);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "PostgreSQL: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    snprintf(sql, sizeof sql, "CREATE DATABASE aios_%d_%d", (int)getpid(), ++g_pg.n_db);
    PGresult *r = PQexec(c, sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) fprintf(stderr, "PostgreSQL: %s", PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
    if (!ok) return NULL;
    snprintf(g_pg.url, sizeof g_pg.url, "postgresql://aios@127.0.0.1:%d/aios_%d_%d", g_pg.port,
             (int)getpid(), g_pg.n_db);
    return g_pg.url;
}

struct kernel_fixture *kf_start(const char *const *extra)
{
    if (kf_pg_mode()) {
        if (!g_pg.started && !pg_find_bindir()) {
            fprintf(stderr, "SKIPPED: AIOS_TEST_STATE=postgres but the PostgreSQL binaries "
                    "(initdb, pg_ctl) are not installed\n");
            exit(77);
        }
        /* a kernel started again with the same config file finds the same
         * database (as it finds the SQLite files the file names); any
         * other start gets a fresh one */
        static struct { char cfg[300], url[512]; } seen[64];
        static int n_seen;
        const char *cfg = NULL;
        for (int i = 0; extra && extra[i]; i++)
            if (!strcmp(extra[i], "--config") && extra[i + 1]) cfg = extra[i + 1];
        const char *url = NULL;
        for (int i = 0; cfg && i < n_seen && !url; i++)
            if (!strcmp(seen[i].cfg, cfg)) url = seen[i].url;
        if (!url) {
            url = kf_pg_new_db();
            if (!url) fail_msg("could not start PostgreSQL or create a database for the kernel");
            if (cfg && n_seen < 64) {
                snprintf(seen[n_seen].cfg, sizeof seen[n_seen].cfg, "%s", cfg);
                snprintf(seen[n_seen].url, sizeof seen[n_seen].url, "%s", url);
                n_seen++;
            }
        }
        if (url != g_pg.url) snprintf(g_pg.url, sizeof g_pg.url, "%s", url);
        fprintf(stderr, "[ harness  ] kernel state in %s\n", g_pg.url);
        setenv("AIOS_STATE_URL", g_pg.url, 1);
    }
    struct kernel_fixture *kf = calloc(1, sizeof *kf);
    assert_non_null(kf);
    snprintf(kf->dir, sizeof kf->dir, "/tmp/aios-it-XXXXXX");
    assert_non_null(mkdtemp(kf->dir));
    if (child_start(&kf->child, aios_bin(), kf->dir, extra, 300) != 0) {
        kf_print_log(kf);
        fail_msg("aios serve did not start (binary %s)", aios_bin());
    }
    /* the admin token: hc_* send it (child_start), and so do subprocesses
     * (the aios CLI) and the SDKs through $AIOS_TOKEN */
    if (kf->child.token[0]) setenv("AIOS_TOKEN", kf->child.token, 1);
    return kf;
}

struct kernel_fixture *kf_start_config(const char *yaml)
{
    char dir[256], path[300];
    snprintf(dir, sizeof dir, "/tmp/aios-itcfg-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/config.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(yaml, f);
    assert_int_equal(fclose(f), 0);
    const char *extra[] = {"--config", path, NULL};
    struct kernel_fixture *kf = kf_start(extra);
    snprintf(kf->cfgdir, sizeof kf->cfgdir, "%s", dir);
    return kf;
}

struct kernel_fixture *g_kf;

int kf_group_setup(void **state)
{
    (void)state;
    g_kf = kf_start(NULL);
    return 0;
}

int kf_group_teardown(void **state)
{
    (void)state;
    kf_stop(g_kf);
    g_kf = NULL;
    return 0;
}

void kf_stop(struct kernel_fixture *kf)
{
    if (!kf) return;
    int st = child_stop(&kf->child, 60);
    bool clean = st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (!clean) kf_print_log(kf);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", kf->dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", kf->dir);
    if (kf->cfgdir[0]) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", kf->cfgdir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", kf->cfgdir);
    }
    free(kf);
    assert_true(clean);
}

long kf_call_n(struct kernel_fixture *kf, const char *method, const char *path, const char *body,
               size_t len, json_t **json, char *ctype, size_t ctlen)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", kf->child.base, path);
    struct hc_resp r;
    /* this kernel's own admin token (several kernels may run at once) */
    char auth[300];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", kf->child.token);
    const char *hdrs[] = {auth, NULL};
    int rc = kf->child.token[0] ? hc_call_h(method, url, body, len, hdrs, &r, 300)
                                : hc_call(method, url, body, len, &r, 300);
    if (rc != 0) {
        hc_resp_free(&r);
        kf_print_log(kf);
        fail_msg("%s %s: connection failed", method, path);
    }
    if (json) *json = json_loadb(r.body, r.len, 0, NULL);
    if (ctype) snprintf(ctype, ctlen, "%s", r.ctype);
    long st = r.status;
    hc_resp_free(&r);
    return st;
}

long kf_call(struct kernel_fixture *kf, const char *method, const char *path, const char *body,
             json_t **json)
{
    return kf_call_n(kf, method, path, body, body ? strlen(body) : 0, json, NULL, 0);
}

long kf_call_as(struct kernel_fixture *kf, const char *token, const char *extra_hdr,
                const char *method, const char *path, const char *body, json_t **out)
{
    char url[512], auth[200];
    snprintf(url, sizeof url, "%s%s", kf->child.base, path);
    const char *hdrs[3] = {NULL, NULL, NULL};
    int n = 0;
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        hdrs[n++] = auth;
    }
    if (extra_hdr) hdrs[n++] = extra_hdr;
    struct hc_resp r;
    int rc = hc_call_h(method, url, body, body ? strlen(body) : 0, hdrs, &r, 60);
    assert_int_equal(rc, 0);
    if (out) *out = json_loadb(r.body, r.len, 0, NULL);
    long st = r.status;
    hc_resp_free(&r);
    return st;
}

void kf_register_agent(struct kernel_fixture *kf, const char *name, char *tok, size_t toklen)
{
    char body[128];
    snprintf(body, sizeof body, "{\"name\":\"%s\"}", name);
    json_t *j = NULL;
    assert_int_equal(kf_call(kf, "POST", "/access/agents", body, &j), 201);
    const char *t = json_string_value(json_object_get(j, "token"));
    assert_non_null(t);
    assert_true(strlen(t) >= 32);
    snprintf(tok, toklen, "%s", t);
    json_decref(j);
}

void expect_status(long got, long want, json_t *j)
{
    if (got != want) {
        char *s = j ? json_dumps(j, 0) : NULL;
        fprintf(stderr, "expected %ld, got %ld: %s\n", want, got, s ? s : "(no JSON)");
        free(s);
    }
    assert_int_equal(got, want);
}

int kf_audit_count(struct kernel_fixture *kf, const char *agent, const char *decision,
                   const char *resource, const char *needle)
{
    char path[256];
    snprintf(path, sizeof path, "/access/audit?agent=%s", agent);
    json_t *j = NULL;
    assert_int_equal(kf_call(kf, "GET", path, NULL, &j), 200);
    int n = 0;
    size_t i;
    json_t *row;
    json_array_foreach(json_object_get(j, "audit"), i, row) {
        const char *d = json_string_value(json_object_get(row, "decision"));
        const char *res = json_string_value(json_object_get(row, "resource"));
        const char *why = json_string_value(json_object_get(row, "reason"));
        if (d && !strcmp(d, decision) && (!resource || (res && !strcmp(res, resource))) &&
            (!needle || (why && strstr(why, needle))))
            n++;
    }
    json_decref(j);
    return n;
}

long long kf_submit_agent(struct kernel_fixture *kf, const char *agent_id, const char *task)
{
    json_t *b = json_pack("{s:s,s:{s:s}}", "agent_id", agent_id, "agent_config", "task", task);
    char *s = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    json_t *j = NULL;
    long st = kf_call(kf, "POST", "/agents/submit", s, &j);
    free(s);
    if (st != 200) {
        char *d = json_dumps(j, 0);
        fail_msg("submit %s: HTTP %ld %s", agent_id, st, d ? d : "");
    }
    assert_string_equal(json_string_value(json_object_get(j, "status")), "success");
    assert_true(json_is_integer(json_object_get(j, "execution_id")));
    assert_non_null(strstr(json_string_value(json_object_get(j, "message")), "submitted"));
    long long id = json_integer_value(json_object_get(j, "execution_id"));
    json_decref(j);
    return id;
}

json_t *kf_wait_agent(struct kernel_fixture *kf, long long id, int timeout_s)
{
    char path[64];
    snprintf(path, sizeof path, "/agents/%lld/status", id);
    for (int i = 0; i < timeout_s * 20; i++) {
        json_t *j = NULL;
        assert_int_equal(kf_call(kf, "GET", path, NULL, &j), 200);
        if (strcmp(json_string_value(json_object_get(j, "status")), "running") != 0) return j;
        json_decref(j);
        usleep(50000);
    }
    fail_msg("agent %lld still running after %d s", id, timeout_s);
    return NULL;
}

void assert_error_body(json_t *j, const char *needle)
{
    assert_non_null(j);
    json_t *e = json_object_get(j, "error");
    assert_true(json_is_object(e));
    json_t *m = json_object_get(e, "message");
    assert_true(json_is_string(m));
    assert_true(json_string_length(m) > 0);
    assert_true(json_is_string(json_object_get(e, "type")));
    if (needle && !strstr(json_string_value(m), needle))
        fail_msg("error message \"%s\" does not mention \"%s\"", json_string_value(m), needle);
}

json_t *chat_logprobs(json_t *j)
{
    json_t *c = json_array_get(json_object_get(j, "choices"), 0);
    return json_object_get(json_object_get(c, "logprobs"), "content");
}

const char *chat_content(json_t *j)
{
    json_t *c = json_array_get(json_object_get(j, "choices"), 0);
    return json_string_value(json_object_get(json_object_get(c, "message"), "content"));
}

struct sse_ctx {
    struct sse_result *r;
    char *buf;
    size_t n, cap;
    size_t n_text, cap_text;
    int abort_after;
    atomic_int *seen; /* kf_stream_watch: content events so far */
};

static int on_chunk(const char *d, size_t n, void *ud)
{
    struct sse_ctx *c = ud;
    if (c->n + n + 1 > c->cap) {
        c->cap = (c->n + n + 1) * 2;
        c->buf = realloc(c->buf, c->cap);
        if (!c->buf) return 1;
    }
    memcpy(c->buf + c->n, d, n);
    c->n += n;
    c->buf[c->n] = 0;
    char *ev;
    while ((ev = strstr(c->buf, "\n\n"))) {
        *ev = 0;
        struct sse_result *r = c->r;
        if (strncmp(c->buf, "data: ", 6) != 0) {
            r->bad_event = true;
        } else if (!strcmp(c->buf + 6, "[DONE]")) {
            r->done = true;
        } else {
            json_t *j = json_loads(c->buf + 6, 0, NULL);
            if (!j) {
                r->bad_event = true;
            } else {
                r->n_events++;
                json_array_append(r->events, j);
                json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
                json_t *delta = json_object_get(ch, "delta");
                if (r->n_events == 1 && json_is_string(json_object_get(delta, "role")))
                    r->first_has_role = true;
                json_t *ct = json_object_get(delta, "content");
                if (json_is_string(ct) && json_string_length(ct)) {
                    size_t l = json_string_length(ct);
                    if (c->n_text + l + 1 > c->cap_text) {
                        c->cap_text = (c->n_text + l + 1) * 2;
                        r->text = realloc(r->text, c->cap_text);
                    }
                    memcpy(r->text + c->n_text, json_string_value(ct), l);
                    c->n_text += l;
                    r->text[c->n_text] = 0;
                    r->n_content++;
                    if (c->seen) atomic_fetch_add(c->seen, 1);
                }
                json_t *f = json_object_get(ch, "finish_reason");
                if (json_is_string(f)) snprintf(r->finish, sizeof r->finish, "%s", json_string_value(f));
                json_t *u = json_object_get(j, "usage");
                if (json_is_object(u)) r->usage = json_incref(u);
                json_t *e = json_object_get(j, "error");
                if (json_is_object(e)) r->error = json_incref(e);
                json_decref(j);
            }
        }
        size_t used = (size_t)(ev + 2 - c->buf);
        memmove(c->buf, ev + 2, c->n - used + 1);
        c->n -= used;
        if (c->abort_after > 0 && r->n_events >= c->abort_after) return 1;
    }
    return 0;
}

int kf_stream(struct kernel_fixture *kf, const char *body, struct sse_result *out,
              int abort_after_events)
{
    return kf_stream_watch(kf, body, out, abort_after_events, NULL);
}

int kf_stream_watch(struct kernel_fixture *kf, const char *body, struct sse_result *out,
                    int abort_after_events, atomic_int *seen)
{
    memset(out, 0, sizeof *out);
    out->text = calloc(1, 1);
    out->events = json_array();
    struct sse_ctx c = {.r = out, .abort_after = abort_after_events, .cap_text = 1, .seen = seen};
    char url[512];
    snprintf(url, sizeof url, "%s/v1/chat/completions", kf->child.base);
    char auth[300];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", kf->child.token);
    const char *hdrs[] = {auth, NULL};
    int rc = kf->child.token[0] ? hc_stream_h(url, body, hdrs, on_chunk, &c, &out->status, 300)
                                : hc_stream(url, body, on_chunk, &c, &out->status, 300);
    free(c.buf);
    return rc;
}

void sse_result_free(struct sse_result *r)
{
    free(r->text);
    json_decref(r->usage);
    json_decref(r->error);
    json_decref(r->events);
    memset(r, 0, sizeof *r);
}

int kf_start_tiny(struct tiny_kernel *t, const char *tag, const char *llms_extra)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/aios-%s-XXXXXX", tag);
    if (!mkdtemp(t->dir)) return -1;
    snprintf(t->model, sizeof t->model, "%s/tiny.gguf", t->dir);
    snprintf(t->cfg, sizeof t->cfg, "%s/config.yaml", t->dir);
    char err[256];
    if (testmodel_create(t->model, TESTMODEL_SHAPE_TINY, 0, 1, err, sizeof err)) {
        fprintf(stderr, "testmodel: %s\n", err);
        return -1;
    }
    FILE *f = fopen(t->cfg, "w");
    if (!f) return -1;
    fprintf(f, "llms:\n"
               "  models:\n"
               "    - name: aios-tiny\n"
               "      backend: llamacpp\n"
               "      path: %s\n"
               "      n_threads: 1\n%s", t->model, llms_extra ? llms_extra : "");
    fclose(f);
    const char *extra[] = {"--config", t->cfg, NULL};
    t->kf = kf_start(extra);
    return 0;
}

char *kf_embed_model(void)
{
    char err[512] = "", *model = NULL;
    if (testmodel_cached(TESTMODEL_SHAPE_EMBED, &model, err, sizeof err))
        fail_msg("embedding test model: %s", err);
    return model;
}

void kf_stop_tiny(struct tiny_kernel *t)
{
    kf_stop(t->kf);
    unlink(t->cfg);
    unlink(t->model);
    rmdir(t->dir);
}
