/* KV affinity across kernels (docs/postgres.md, "KV affinity"): two real
 * `aios serve` processes on one real PostgreSQL (started by the harness),
 * each with its embedded engine on the tiny test model, naming each other
 * in `cluster:` (one peer list for both). A registered agent's first call
 * on k1 leaves its conversation in k1's KV cache; its next calls sent to k2
 * are forwarded to k1 (X-Aios-Served-By: k1, k1's prefix reuse in
 * usage.prompt_tokens_details.cached_tokens, the counters in /status),
 * streamed answers, /query llm and /v1/responses calls included. A client's forged
 * X-Aios-Forwarded header skips no token check and makes no loop. When k1
 * is killed, the call sent to k2 is served by k2 and the conversation
 * moves there (k2 reuses its own KV on the next call). A peer with
 * cluster.max_outstanding calls unanswered is overloaded: the call is
 * served here and the conversation moves; one that took the connection and
 * drops it unanswered has its call served here too. Skipped (77)
 * without the PostgreSQL binaries. */
#include "harness.h"

#include "util/pg.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <pthread.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct kernel_fixture *g_k1, *g_k2;
static char g_tmp[64], g_cfg1[128], g_cfg2[128], g_db[512];
static char g_alice[128], g_bob[128], g_carol[128];
/* "k3": a peer in both kernels' lists that is a listening socket nobody
 * accepts on: connections are made and never answered */
static int g_k3_fd = -1;

static const char *SYS =
    "You are a careful assistant of the aios project. You answer questions about kernels, "
    "schedulers, memory and storage in one short sentence, plainly and without lists.";

static int listen_port(int *fd_out)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &n) != 0)
        return -1;
    *fd_out = fd;
    return ntohs(a.sin_port);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &n) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

/* ---- one request with its X-Aios-Served-By header ---- */

struct resp {
    long status;
    char *body;
    size_t n;
    char served_by[64], ctype[128];
};

static size_t on_body(char *p, size_t sz, size_t nm, void *ud)
{
    struct resp *r = ud;
    size_t n = sz * nm;
    r->body = realloc(r->body, r->n + n + 1);
    memcpy(r->body + r->n, p, n);
    r->n += n;
    r->body[r->n] = 0;
    return n;
}

static void header_value(const char *p, size_t n, const char *name, char *dst, size_t cap)
{
    size_t kn = strlen(name);
    if (n <= kn + 1 || strncasecmp(p, name, kn) != 0 || p[kn] != ':') return;
    const char *v = p + kn + 1;
    size_t vn = n - kn - 1;
    while (vn && *v == ' ') v++, vn--;
    while (vn && (v[vn - 1] == '\r' || v[vn - 1] == '\n')) vn--;
    if (vn >= cap) vn = cap - 1;
    memcpy(dst, v, vn);
    dst[vn] = 0;
}

static size_t on_header(char *p, size_t sz, size_t nm, void *ud)
{
    struct resp *r = ud;
    size_t n = sz * nm;
    header_value(p, n, "X-Aios-Served-By", r->served_by, sizeof r->served_by);
    header_value(p, n, "Content-Type", r->ctype, sizeof r->ctype);
    return n;
}

/* POST path on kf as token (NULL: none) with one extra header (NULL:
 * none); *out the JSON answer (NULL when not JSON) */
static long post(struct kernel_fixture *kf, const char *path, const char *token,
                 const char *extra, const char *body, struct resp *out)
{
    memset(out, 0, sizeof *out);
    char url[256], auth[300];
    snprintf(url, sizeof url, "%s%s", kf->child.base, path);
    CURL *e = curl_easy_init();
    assert_non_null(e);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    if (extra) h = curl_slist_append(h, extra);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, out);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 300L);
    CURLcode cc = curl_easy_perform(e);
    if (cc == CURLE_OK) curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &out->status);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    if (cc != CURLE_OK) fail_msg("POST %s: %s", url, curl_easy_strerror(cc));
    return out->status;
}

static json_t *resp_json(struct resp *r) { return json_loadb(r->body ? r->body : "", r->n, 0, NULL); }

static char *chat_body(const char *user, const char *assistant, const char *user2, bool stream)
{
    json_t *msgs = json_array();
    json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "system", "content", SYS));
    json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", user));
    if (assistant) {
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "assistant", "content", assistant));
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", user2));
    }
    json_t *b = json_pack("{s:s,s:o,s:i,s:i,s:f,s:b}", "model", "aios-tiny", "messages", msgs,
                          "seed", 7, "max_tokens", 8, "temperature", 0.0, "stream", stream);
    char *s = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    return s;
}

static int cached_tokens(json_t *j)
{
    json_t *u = json_object_get(j, "usage");
    return (int)json_integer_value(
        json_object_get(json_object_get(u, "prompt_tokens_details"), "cached_tokens"));
}

/* GET /status's cluster.<key> on kf */
static json_int_t cluster_count(struct kernel_fixture *kf, const char *key)
{
    json_t *j = NULL;
    assert_int_equal(kf_call(kf, "GET", "/status", NULL, &j), 200);
    json_t *c = json_object_get(j, "cluster");
    assert_true(json_is_object(c));
    json_int_t v = json_integer_value(json_object_get(c, key));
    json_decref(j);
    return v;
}

static struct kernel_fixture *start(const char *cfg, int port)
{
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    const char *extra[] = {"--config", cfg, "--port", p, NULL};
    return kf_start(extra);
}

static void write_cfg(const char *path, const char *name, const char *db, int p1, int p2,
                      int p3)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "storage:\n  root_dir: %s/root\n"
            "state:\n  backend: postgres\n  url: %s\n"
            "cluster:\n  name: %s\n  peer_down_s: 30\n  max_outstanding: 1\n  peers:\n"
            "    - {name: k1, url: \"http://127.0.0.1:%d\"}\n"
            "    - {name: k2, url: \"http://127.0.0.1:%d/\"}\n"
            "    - {name: k3, url: \"http://127.0.0.1:%d\"}\n",
            g_tmp, db, name, p1, p2, p3);
    assert_int_equal(fclose(f), 0);
}

/* the token works on kf (registered agents reach every kernel within 250 ms) */
static void wait_token(struct kernel_fixture *kf, const char *tok)
{
    for (int i = 0; i < 100; i++) {
        if (kf_call_as(kf, tok, NULL, "GET", "/access/whoami", NULL, NULL) == 200) return;
        usleep(50000);
    }
    fail_msg("the registered token never worked on the other kernel");
}

static int group_setup(void **state)
{
    (void)state;
    const char *url = kf_pg_new_db();
    if (!url) return -1;
    char *db = g_db;
    snprintf(g_db, sizeof g_db, "%s", url);
    snprintf(g_tmp, sizeof g_tmp, "/tmp/aios-aff-XXXXXX");
    if (!mkdtemp(g_tmp)) return -1;
    int p1 = free_port(), p2 = free_port();
    while (p2 == p1) p2 = free_port();
    snprintf(g_cfg1, sizeof g_cfg1, "%s/k1.yaml", g_tmp);
    snprintf(g_cfg2, sizeof g_cfg2, "%s/k2.yaml", g_tmp);
    int p3 = listen_port(&g_k3_fd);
    if (p3 < 0) return -1;
    write_cfg(g_cfg1, "k1", db, p1, p2, p3);
    write_cfg(g_cfg2, "k2", db, p1, p2, p3);
    g_k1 = start(g_cfg1, p1);
    g_k2 = start(g_cfg2, p2);
    kf_register_agent(g_k1, "alice", g_alice, sizeof g_alice);
    kf_register_agent(g_k1, "bob", g_bob, sizeof g_bob);
    kf_register_agent(g_k1, "carol", g_carol, sizeof g_carol);
    wait_token(g_k2, g_alice);
    wait_token(g_k2, g_bob);
    wait_token(g_k2, g_carol);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (g_k1) kf_stop(g_k1);
    kf_stop(g_k2);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    return system(cmd) == 0 ? 0 : -1;
}

static char *g_reply; /* alice's first answer (k1) */

static void test_second_call_goes_to_the_kernel_that_holds_the_conversation(void **state)
{
    (void)state;
    struct resp r;
    char *b1 = chat_body("What is a kernel?", NULL, NULL, false);
    assert_int_equal(post(g_k1, "/v1/chat/completions", g_alice, NULL, b1, &r), 200);
    assert_string_equal(r.served_by, "k1");
    json_t *j = resp_json(&r);
    g_reply = strdup(chat_content(j));
    int p1 = (int)json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens"));
    assert_int_equal(cached_tokens(j), 0);
    json_decref(j);
    free(r.body);
    free(b1);

    json_int_t fwd0 = cluster_count(g_k2, "forwarded"), in0 = cluster_count(g_k1, "forwarded_in");
    char *b2 = chat_body("What is a kernel?", g_reply, "And a scheduler?", false);
    assert_int_equal(post(g_k2, "/v1/chat/completions", g_alice, NULL, b2, &r), 200);
    assert_string_equal(r.served_by, "k1");
    j = resp_json(&r);
    int cached = cached_tokens(j);
    print_message("turn 1 on k1: %d prompt tokens; turn 2 sent to k2, served by %s: %d cached\n",
                  p1, r.served_by, cached);
    assert_true(cached >= p1 - 1); /* k1's KV: the prefix was not computed again */
    assert_non_null(chat_content(j));
    json_decref(j);
    free(r.body);
    assert_int_equal(cluster_count(g_k2, "forwarded"), fwd0 + 1);
    assert_int_equal(cluster_count(g_k1, "forwarded_in"), in0 + 1);

    /* a stream passes through as a stream */
    char *b3 = chat_body("What is a kernel?", g_reply, "And a scheduler?", true);
    assert_int_equal(post(g_k2, "/v1/chat/completions", g_alice, NULL, b3, &r), 200);
    assert_string_equal(r.served_by, "k1");
    assert_non_null(strstr(r.ctype, "text/event-stream"));
    assert_non_null(strstr(r.body, "chat.completion.chunk"));
    assert_non_null(strstr(r.body, "data: [DONE]"));
    free(r.body);
    assert_int_equal(cluster_count(g_k2, "forwarded"), fwd0 + 2);

    /* /query llm of the same agent and model */
    json_t *q = json_pack("{s:s,s:s,s:{s:[{s:s,s:s},{s:s,s:s}],s:i}}", "agent_name", "alice",
                          "query_type", "llm", "query_data", "messages", "role", "system",
                          "content", SYS, "role", "user", "content", "What is a kernel?",
                          "max_new_tokens", 4);
    char *qs = json_dumps(q, JSON_COMPACT);
    json_decref(q);
    long st = post(g_k2, "/query", g_alice, NULL, qs, &r);
    if (st != 200) fail_msg("/query via k2: %ld %s", st, r.body ? r.body : "");
    assert_string_equal(r.served_by, "k1");
    free(r.body);
    free(qs);
    /* and /v1/responses: the chain is stored where it is served */
    st = post(g_k2, "/v1/responses", g_alice, NULL,
              "{\"model\":\"aios-tiny\",\"input\":\"What is a kernel?\",\"max_output_tokens\":4}",
              &r);
    if (st != 200) fail_msg("/v1/responses via k2: %ld %s", st, r.body ? r.body : "");
    assert_string_equal(r.served_by, "k1");
    j = resp_json(&r);
    char path[128];
    snprintf(path, sizeof path, "/v1/responses/%s", json_string_value(json_object_get(j, "id")));
    json_decref(j);
    free(r.body);
    assert_int_equal(kf_call_as(g_k1, g_alice, NULL, "GET", path, NULL, NULL), 200);
    free(b2);
    free(b3);
}

static void test_forged_forward_header(void **state)
{
    (void)state;
    struct resp r;
    char *b = chat_body("What is memory?", NULL, NULL, false);
    /* bob's conversation is on k1 */
    assert_int_equal(post(g_k1, "/v1/chat/completions", g_bob, NULL, b, &r), 200);
    assert_string_equal(r.served_by, "k1");
    free(r.body);
    json_int_t fwd2 = cluster_count(g_k2, "forwarded"), in1 = cluster_count(g_k1, "forwarded_in");

    /* the header does not stand in for a token */
    assert_int_equal(post(g_k2, "/v1/chat/completions", NULL, "X-Aios-Forwarded: k1", b, &r), 401);
    free(r.body);
    assert_int_equal(post(g_k2, "/v1/chat/completions", "not-a-token", "X-Aios-Forwarded: k1", b,
                          &r), 401);
    free(r.body);
    assert_int_equal(post(g_k1, "/v1/chat/completions", "not-a-token", "X-Aios-Forwarded: k2", b,
                          &r), 401);
    free(r.body);
    /* with bob's own token it is a call like any other, served where it
     * arrived and forwarded nowhere: no loop */
    assert_int_equal(post(g_k2, "/v1/chat/completions", g_bob, "X-Aios-Forwarded: k1", b, &r), 200);
    assert_string_equal(r.served_by, "k2");
    free(r.body);
    /* acting as another agent is refused as usual */
    assert_int_equal(post(g_k2, "/v1/chat/completions", g_bob,
                          "X-Aios-Agent: alice", b, &r), 403);
    free(r.body);
    assert_int_equal(cluster_count(g_k2, "forwarded"), fwd2);
    assert_int_equal(cluster_count(g_k1, "forwarded_in"), in1);
    free(b);
}

struct held_call {
    const char *body;
    struct resp r;
    long status;
};

static void *held_call_main(void *arg)
{
    struct held_call *h = arg;
    h->status = post(g_k2, "/v1/chat/completions", g_carol, NULL, h->body, &h->r);
    return NULL;
}

/* GET /status on k2: cluster.peers[name].key */
static json_t *k2_peer(const char *name, const char *key)
{
    json_t *s = NULL, *v = NULL;
    assert_int_equal(kf_call(g_k2, "GET", "/status", NULL, &s), 200);
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(json_object_get(s, "cluster"), "peers"), i, p)
        if (!strcmp(json_string_value(json_object_get(p, "name")), name))
            v = json_incref(json_object_get(p, key));
    json_decref(s);
    return v;
}

static void test_overloaded_or_silent_peer(void **state)
{
    (void)state;
    /* carol's conversation is on k3 (as a kernel named k3 would record it) */
    struct pg_pool *pool = NULL;
    char err[256];
    assert_int_equal(pg_pool_open(&pool, g_db, "test", NULL, err, sizeof err), 0);
    PGconn *c = pg_take(pool);
    assert_non_null(c);
    const char *v[1] = {"carol"};
    assert_int_equal(pg_exec(c, "test", "INSERT INTO clu_affinity VALUES($1, 'aios-tiny', 'k3', "
                             "extract(epoch from now()))", 1, v), 0);
    pg_give(pool, c);
    pg_pool_close(pool);
    json_int_t fb = cluster_count(g_k2, "fell_back");

    /* the first call goes to k3, which takes the connection and never answers */
    char *b = chat_body("What is storage?", NULL, NULL, false);
    struct held_call h = {.body = b};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, held_call_main, &h), 0);
    json_t *out = NULL;
    for (int i = 0; i < 600 && json_integer_value(out) != 1; i++) {
        json_decref(out);
        usleep(20000);
        out = k2_peer("k3", "outstanding");
    }
    assert_int_equal(json_integer_value(out), 1);
    json_decref(out);

    /* k3 has max_outstanding (1) calls: overloaded; the next one is served
     * here and carol's conversation moves to k2 */
    struct resp r;
    assert_int_equal(post(g_k2, "/v1/chat/completions", g_carol, NULL, b, &r), 200);
    assert_string_equal(r.served_by, "k2");
    free(r.body);
    assert_int_equal(cluster_count(g_k2, "fell_back"), fb + 1);

    /* k3 hangs up without a word: the held call is served by k2 too, and
     * k3 sits out */
    int conn = accept(g_k3_fd, NULL, NULL);
    assert_true(conn >= 0);
    close(conn);
    close(g_k3_fd);
    g_k3_fd = -1;
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(h.status, 200);
    assert_string_equal(h.r.served_by, "k2");
    free(h.r.body);
    assert_int_equal(cluster_count(g_k2, "fell_back"), fb + 2);
    out = k2_peer("k3", "up");
    assert_true(json_is_false(out));
    json_decref(out);
    free(b);
}

static void test_owner_killed_conversation_moves(void **state)
{
    (void)state;
    assert_non_null(g_reply);
    kill(g_k1->child.pid, SIGKILL);
    int st;
    waitpid(g_k1->child.pid, &st, 0);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_k1->dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_k1->dir);
    free(g_k1);
    g_k1 = NULL;
    json_int_t fwd = cluster_count(g_k2, "forwarded"), fb = cluster_count(g_k2, "fell_back");

    struct resp r;
    char *b = chat_body("What is a kernel?", g_reply, "And storage?", false);
    assert_int_equal(post(g_k2, "/v1/chat/completions", g_alice, NULL, b, &r), 200);
    assert_string_equal(r.served_by, "k2");
    json_t *j = resp_json(&r);
    int c3 = cached_tokens(j); /* at most the system prompt, which bob's call left on k2 */
    json_decref(j);
    free(r.body);
    assert_int_equal(cluster_count(g_k2, "fell_back"), fb + 1);
    assert_int_equal(cluster_count(g_k2, "forwarded"), fwd);

    /* k1 is down in k2's view, and the conversation is k2's now: its next
     * turn is served there, from k2's own KV */
    json_t *s = NULL;
    assert_int_equal(kf_call(g_k2, "GET", "/status", NULL, &s), 200);
    json_t *peer = json_array_get(json_object_get(json_object_get(s, "cluster"), "peers"), 0);
    assert_string_equal(json_string_value(json_object_get(peer, "name")), "k1");
    assert_true(json_is_false(json_object_get(peer, "up")));
    json_decref(s);
    assert_int_equal(post(g_k2, "/v1/chat/completions", g_alice, NULL, b, &r), 200);
    assert_string_equal(r.served_by, "k2");
    j = resp_json(&r);
    int c4 = cached_tokens(j);
    int p4 = (int)json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens"));
    print_message("k1 killed: turn 3 served by k2 with %d cached, turn 4 on k2: %d of %d cached\n",
                  c3, c4, p4);
    assert_true(c4 > c3);
    assert_true(c4 >= p4 - 1);
    json_decref(j);
    free(r.body);
    assert_int_equal(cluster_count(g_k2, "forwarded"), fwd);
    free(b);
    free(g_reply);
}

int main(void)
{
    unsetenv("AIOS_TEST_STATE");
    unsetenv("AIOS_STATE_URL");
    if (!kf_pg_available()) {
        fprintf(stderr, "SKIPPED: the PostgreSQL binaries (initdb, pg_ctl) are not installed\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_second_call_goes_to_the_kernel_that_holds_the_conversation),
        cmocka_unit_test(test_forged_forward_header),
        cmocka_unit_test(test_overloaded_or_silent_peer),
        cmocka_unit_test(test_owner_killed_conversation_moves),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
