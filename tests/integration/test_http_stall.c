/* Integration: slow and malformed clients cannot stall the HTTP front end.
 * Hundreds of half-open connections from one address take at most
 * server.max_connections_per_ip slots and are closed after
 * server.request_timeout_s, while a fresh client (another loopback address:
 * all of 127.0.0.0/8 reaches the kernel's 127.0.0.1 listener, and each is
 * its own address to the per-address limit) is served within a second.
 * Every malformed or stalled request gets a 4xx or is closed promptly, a
 * keep-alive connection idle past the request timeout still works, and an
 * X-Aios-* header that is not UTF-8 text is a 400 naming it (it never
 * reaches an agent name or a /metrics label). */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define REQUEST_TIMEOUT_S 2
#define PER_IP 32
#define MAX_CONN 256
#define N_ATTACK 400 /* from one address: more than MAX_CONN */


/* the limits small enough to reach from one test */
static int group_setup(void **state)
{
    (void)state;
    char yaml[256];
    snprintf(yaml, sizeof yaml,
             "server:\n"
             "  max_connections: %d\n"
             "  max_connections_per_ip: %d\n"
             "  request_timeout_s: %d\n"
             "  idle_timeout_s: 30\n",
             MAX_CONN, PER_IP, REQUEST_TIMEOUT_S);
    g_kf = kf_start_config(yaml);
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* a TCP connection to the kernel from source address src (127.x.y.z) */
static int connect_from(const char *src)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in s = {.sin_family = AF_INET};
    inet_pton(AF_INET, src, &s.sin_addr);
    struct sockaddr_in d = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_kf->child.port)};
    d.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&s, sizeof s) != 0 ||
        connect(fd, (struct sockaddr *)&d, sizeof d) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool send_all(int fd, const char *b, size_t n)
{
    while (n) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w <= 0) return false;
        b += w;
        n -= (size_t)w;
    }
    return true;
}

/* Read one answer (head and Content-Length body) or until the peer closes,
 * for at most wait_s. Returns the status code, 0 when the connection was
 * closed with no answer, -1 when nothing happened in time. *secs: how long
 * it took. The body (NUL-terminated) goes to body when non-NULL. */
static int read_answer(int fd, double wait_s, double *secs, char *body, size_t cap)
{
    char buf[16384];
    size_t n = 0;
    double t0 = now_s();
    int code = -1;
    if (body && cap) body[0] = 0;
    for (;;) {
        double left = wait_s - (now_s() - t0);
        if (left <= 0) break;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)(left * 1000) + 1) <= 0) continue;
        ssize_t r = recv(fd, buf + n, sizeof buf - 1 - n, 0);
        if (r <= 0) {
            code = 0;
            break;
        }
        n += (size_t)r;
        buf[n] = 0;
        char *eoh = strstr(buf, "\r\n\r\n");
        if (!eoh || strncmp(buf, "HTTP/1.1 ", 9) != 0) {
            if (n == sizeof buf - 1) break;
            continue;
        }
        const char *cl = strcasestr(buf, "\r\nContent-Length:");
        size_t want = cl && cl < eoh ? (size_t)strtoul(cl + 17, NULL, 10) : 0;
        if (n - (size_t)(eoh + 4 - buf) < want) continue;
        code = atoi(buf + 9);
        if (body && cap) snprintf(body, cap, "%s", eoh + 4);
        break;
    }
    if (code == 0 && strncmp(buf, "HTTP/1.1 ", 9) == 0 && n >= 12) code = atoi(buf + 9);
    *secs = now_s() - t0;
    return code;
}

static int get_status_from(const char *src, double *secs)
{
    double t0 = now_s();
    int fd = connect_from(src);
    if (fd < 0) return -2;
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n",
                     g_kf->child.token);
    int code = -1;
    double t;
    if (send_all(fd, req, (size_t)n)) code = read_answer(fd, 5, &t, NULL, 0);
    close(fd);
    *secs = now_s() - t0;
    return code;
}

/* closed by the peer (EOF or reset) without blocking */
static bool peer_closed(int fd)
{
    char c[256];
    for (;;) {
        ssize_t r = recv(fd, c, sizeof c, MSG_DONTWAIT);
        if (r == 0) return true;
        if (r < 0) return errno != EAGAIN && errno != EWOULDBLOCK;
    }
}

static void test_half_open_flood(void **state)
{
    (void)state;
    static int fds[N_ATTACK];
    int n_open = 0;
    /* half of them send nothing, half a request head that never ends */
    for (int i = 0; i < N_ATTACK; i++) {
        fds[i] = connect_from("127.0.0.3");
        assert_true(fds[i] >= 0);
        n_open++;
        if (i % 2) send_all(fds[i], "GET /status HTTP/1.1\r\nHost: x\r\n", 31);
    }
    /* a fresh client, from another address and from the attacker's own
     * neighbour 127.0.0.1 (the harness's libcurl), is served within a
     * second, again and again */
    for (int k = 0; k < 5; k++) {
        double secs;
        int code = get_status_from("127.0.0.2", &secs);
        if (code != 200 || secs > 1.0)
            fail_msg("fresh client during the flood: %d after %.3f s", code, secs);
        double t0 = now_s();
        assert_int_equal(kf_call(g_kf, "GET", "/status", NULL, NULL), 200);
        if (now_s() - t0 > 1.0) fail_msg("libcurl client took %.3f s", now_s() - t0);
    }
    /* past the per-address limit the kernel closed them at once */
    usleep(200 * 1000);
    int closed = 0;
    for (int i = 0; i < N_ATTACK; i++) closed += peer_closed(fds[i]);
    if (closed < N_ATTACK - PER_IP)
        fail_msg("only %d of %d connections from one address were refused (limit %d)", closed,
                 N_ATTACK, PER_IP);
    /* and the ones it took are closed after request_timeout_s */
    double t0 = now_s();
    while (closed < N_ATTACK && now_s() - t0 < REQUEST_TIMEOUT_S + 3) {
        usleep(100 * 1000);
        closed = 0;
        for (int i = 0; i < N_ATTACK; i++) closed += peer_closed(fds[i]);
    }
    if (closed < N_ATTACK)
        fail_msg("%d half-open connections still open %.1f s after the request timeout",
                 N_ATTACK - closed, now_s() - t0);
    for (int i = 0; i < N_ATTACK; i++) close(fds[i]);
    double secs;
    assert_int_equal(get_status_from("127.0.0.3", &secs), 200); /* its slots are free again */
}

struct bad_req {
    const char *name;
    const char *bytes; /* "%s" stands for the admin token */
    bool prompt;       /* a 4xx or a close at once; otherwise within the timeout */
    int want;          /* the 4xx expected, 0 for "4xx or closed" */
};

static void test_malformed_and_stalled(void **state)
{
    (void)state;
    static char params[8192];
    int n = snprintf(params, sizeof params, "GET /status?");
    for (int i = 0; i < 600; i++) n += snprintf(params + n, sizeof params - (size_t)n, "a%d=1&", i);
    snprintf(params + n - 1, sizeof params - (size_t)n + 1, " HTTP/1.1\r\nHost: x\r\n\r\n");
    const struct bad_req cases[] = {
        {"garbage line", "GARBAGE\r\n\r\n", true, 0},
        {"request line without its end", "\x01\x02GARBAGE", false, 0},
        {"TLS hello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", false, 0},
        {"head that never ends", "GET /status HTTP/1.1\r\nHost: x\r\n", false, 0},
        {"600 query parameters", params, true, 414},
        {"chunk size 2^64-1",
         "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
         "Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\nabc",
         false, 0},
        {"body shorter than its Content-Length",
         "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
         "Content-Length: 100\r\n\r\n{\"model\":",
         false, 0},
        {"conflicting Content-Length",
         "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
         "Content-Length: 100\r\nContent-Length: 2\r\n\r\n{}",
         true, 400},
        {"Content-Length and Transfer-Encoding",
         "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
         "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
         true, 400},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct bad_req *c = &cases[i];
        char *req = malloc(strlen(c->bytes) + 512);
        int len = sprintf(req, c->bytes, g_kf->child.token);
        int fd = connect_from("127.0.0.4");
        assert_true(fd >= 0);
        assert_true(send_all(fd, req, (size_t)len));
        free(req);
        double secs;
        char body[4096];
        int code = read_answer(fd, REQUEST_TIMEOUT_S + 4, &secs, body, sizeof body);
        close(fd);
        double limit = c->prompt ? 1.0 : REQUEST_TIMEOUT_S + 1.5;
        print_message("%-40s -> %d after %.2f s\n", c->name, code, secs);
        if (code < 0 || secs > limit)
            fail_msg("%s: no answer and still open after %.2f s (limit %.1f s)", c->name, secs,
                     limit);
        if (c->want && code != c->want) fail_msg("%s: expected %d, got %d", c->name, c->want, code);
        if (code != 0 && (code < 400 || code > 499)) fail_msg("%s: answered %d", c->name, code);
        if (c->want) {
            json_t *j = json_loads(body, 0, NULL);
            assert_error_body(j, NULL);
            json_decref(j);
        }
    }
    double secs;
    assert_int_equal(get_status_from("127.0.0.4", &secs), 200);
}

/* keep-alive idle may last longer than the request timeout */
static void test_keepalive_outlives_request_timeout(void **state)
{
    (void)state;
    int fd = connect_from("127.0.0.5");
    assert_true(fd >= 0);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n",
                     g_kf->child.token);
    double secs;
    for (int k = 0; k < 2; k++) {
        assert_true(send_all(fd, req, (size_t)n));
        int code = read_answer(fd, 5, &secs, NULL, 0);
        if (code != 200) fail_msg("request %d on one connection: %d", k + 1, code);
        if (k == 0) sleep(REQUEST_TIMEOUT_S + 1);
    }
    close(fd);
}

static bool utf8_text(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *e = p + n;
    while (p < e) {
        int k = *p < 0x80 ? 0 : (*p >> 5) == 6 ? 1 : (*p >> 4) == 14 ? 2 : (*p >> 3) == 30 ? 3 : -1;
        if (k < 0 || e - p <= k) return false;
        for (int i = 1; i <= k; i++)
            if ((p[i] & 0xc0) != 0x80) return false;
        p += k + 1;
    }
    return true;
}

static long chat_as(const char *agent_header, json_t **j)
{
    char auth[400];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", g_kf->child.token);
    const char *hdrs[] = {auth, "Content-Type: application/json", agent_header, NULL};
    char url[128];
    snprintf(url, sizeof url, "%s/v1/chat/completions", g_kf->child.base);
    const char *body = "{\"model\":\"aios-tiny\",\"max_tokens\":2,"
                       "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    struct hc_resp r = {0};
    assert_int_equal(hc_call_h("POST", url, body, strlen(body), hdrs, &r, 120), 0);
    *j = r.body ? json_loadb(r.body, r.len, 0, NULL) : NULL;
    long st = r.status;
    hc_resp_free(&r);
    return st;
}

static void test_agent_header_not_utf8(void **state)
{
    (void)state;
    json_t *j = NULL;
    const char *bad[] = {"X-Aios-Agent: ag\xff\xfe", "X-Aios-Agent: \xc0\xaf", "X-Aios-Agent: a\x01z",
                         "X-Aios-Priority: \xed\xa0\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        long st = chat_as(bad[i], &j);
        if (st != 400) fail_msg("header %zu: expected 400, got %ld", i, st);
        assert_error_body(j, i == 3 ? "X-Aios-Priority" : "X-Aios-Agent");
        json_decref(j);
    }
    /* UTF-8 that is not ASCII is a fine agent name */
    assert_int_equal(chat_as("X-Aios-Agent: \xd0\xb0\xd0\xb3\xd0\xb5\xd0\xbd\xd1\x82", &j), 200);
    json_decref(j);
    /* and /metrics stays UTF-8 */
    char auth[400], url[128];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", g_kf->child.token);
    snprintf(url, sizeof url, "%s/metrics", g_kf->child.base);
    const char *hdrs[] = {auth, NULL};
    struct hc_resp r = {0};
    assert_int_equal(hc_call_h("GET", url, NULL, 0, hdrs, &r, 30), 0);
    assert_int_equal(r.status, 200);
    assert_true(r.len > 0);
    assert_true(utf8_text(r.body, r.len));
    assert_non_null(strstr(r.body, "\xd0\xb0\xd0\xb3\xd0\xb5\xd0\xbd\xd1\x82"));
    hc_resp_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_half_open_flood),
        cmocka_unit_test(test_malformed_and_stalled),
        cmocka_unit_test(test_keepalive_outlives_request_timeout),
        cmocka_unit_test(test_agent_header_not_utf8),
    };
    return cmocka_run_group_tests(tests, group_setup, kf_group_teardown);
}
