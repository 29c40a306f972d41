/* Integration: every kind of bad input gets the right 4xx with a JSON error
 * body naming the problem, and the kernel keeps serving afterwards. Also
 * bad command lines and configs make `aios serve` exit with a clear message
 * instead of starting half-configured. */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>


static void expect(const char *method, const char *path, const char *body, long status,
                   const char *needle)
{
    json_t *j = NULL;
    char ctype[128] = "";
    long st = kf_call_n(g_kf, method, path, body, body ? strlen(body) : 0, &j, ctype, sizeof ctype);
    if (st != status)
        fail_msg("%s %s %s: expected %ld, got %ld", method, path, body ? body : "", status, st);
    assert_non_null(strstr(ctype, "application/json"));
    assert_error_body(j, needle);
    json_decref(j);
}

#define CHAT "/v1/chat/completions"
#define MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"

static void test_malformed_json(void **state)
{
    (void)state;
    expect("POST", CHAT, "{\"model\": \"aios-tiny\", ", 400, "not valid JSON");
    expect("POST", CHAT, "not json at all", 400, "not valid JSON");
    expect("POST", CHAT, "", 400, "empty");
    expect("POST", CHAT, "[1,2,3]", 400, "JSON object");
    expect("POST", CHAT, "\"just a string\"", 400, NULL);
    expect("POST", CHAT, "{\"model\":\"aios-tiny\",\"model\":\"x\"," MSGS "}", 400, "duplicate");
    /* invalid UTF-8 inside a JSON string */
    expect("POST", CHAT, "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}", 400, "JSON");
}

static void test_missing_and_mistyped(void **state)
{
    (void)state;
    expect("POST", CHAT, "{" MSGS "}", 400, "'model'");
    expect("POST", CHAT, "{\"model\":42," MSGS "}", 400, "'model' must be a string");
    expect("POST", CHAT, "{\"model\":\"aios-tiny\"}", 400, "'messages'");
    expect("POST", CHAT, "{\"model\":\"aios-tiny\",\"messages\":{}}", 400, "array");
    expect("POST", CHAT, "{\"model\":\"aios-tiny\",\"messages\":[]}", 400, "at least one");
    expect("POST", CHAT, "{\"model\":\"aios-tiny\",\"messages\":[7]}", 400, "messages[0]");
    expect("POST", CHAT, "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", 400, "role");
    expect("POST", CHAT, "{\"model\":\"aios-tiny\",\"messages\":[{\"content\":\"x\"}]}", 400, "role");
    expect("POST", CHAT, "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\"}]}", 400, "content");
    expect("POST", CHAT, "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":5}]}", 400, "content");
    expect("POST", CHAT, "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000b\"}]}", 400, "NUL");
    expect("POST", CHAT, "{\"model\":\"aios-tiny\"," MSGS ",\"temperature\":\"hot\"}", 400, "temperature");
    expect("POST", CHAT, "{\"model\":\"aios-tiny\"," MSGS ",\"temperature\":9}", 400, "temperature");
    expect("POST", CHAT, "{\"model\":\"aios-tiny\"," MSGS ",\"top_p\":1.5}", 400, "top_p");
    expect("POST", CHAT, "{\"model\":\"aios-tiny\"," MSGS ",\"max_tokens\":0}", 400, "max_tokens");
    expect("POST", CHAT, "{\"model\":\"aios-tiny\"," MSGS ",\"max_tokens\":\"10\"}", 400, "max_tokens");
    expect("POST", CHAT, "{\"model\":\"aios-tiny\"," MSGS ",\"max_tokens\":2.5}", 400, "max_tokens");
    expect("POST", CHAT, "{\"model\":\"aios-tiny\"," MSGS ",\"seed\":\"x\"}", 400, "seed");
    expect("POST", CHAT, "{\"model\":\"aios-tiny\"," MSGS ",\"stop\":7}", 400, "stop");
    expect("POST", CHAT, "{\"model\":\"aios-tiny\"," MSGS ",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 400, "stop");
    expect("POST", CHAT, "{\"model\":\"aios-tiny\"," MSGS ",\"stop\":[\"\"]}", 400, "stop");
    expect("POST", CHAT, "{\"model\":\"aios-tiny\"," MSGS ",\"stream\":\"yes\"}", 400, "stream");
    expect("POST", CHAT, "{\"model\":\"aios-tiny\"," MSGS ",\"n\":3}", 400, "'n'");
}

static void test_unknown_model(void **state)
{
    (void)state;
    expect("POST", CHAT, "{\"model\":\"gpt-17\"," MSGS "}", 404, "gpt-17");
}

static void test_context_overflow(void **state)
{
    (void)state;
    /* ~6000 words: more tokens than the 4096-token context */
    size_t cap = 80000;
    char *b = malloc(cap);
    size_t n = (size_t)snprintf(b, cap, "{\"model\":\"aios-tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"");
    for (int i = 0; i < 6000; i++) n += (size_t)snprintf(b + n, cap - n, "word%d ", i);
    n += (size_t)snprintf(b + n, cap - n, "\"}]}");
    expect("POST", CHAT, b, 400, "context");
    free(b);
    expect("POST", CHAT, "{\"model\":\"aios-tiny\"," MSGS ",\"max_tokens\":100000}", 400, "max_tokens");
}

/* Only the request head (a declared Content-Length and no body) on a raw
 * socket; returns the status line's code read back, or -1. */
static int head_only_status(const char *extra_header, unsigned long long content_length)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_kf->child.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    char req[1024], resp[4096];
    int n = snprintf(req, sizeof req,
                     "POST " CHAT " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %llu\r\n%s\r\n",
                     g_kf->child.token, content_length, extra_header);
    int code = -1;
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 && write(fd, req, (size_t)n) == n) {
        ssize_t got = read(fd, resp, sizeof resp - 1);
        if (got > 12) {
            resp[got] = 0;
            if (strncmp(resp, "HTTP/1.1 ", 9) == 0) code = atoi(resp + 9);
        }
    }
    close(fd);
    return code;
}

static void test_body_too_big(void **state)
{
    (void)state;
    size_t n = (size_t)9 << 20; /* over the 8 MiB default */
    char *b = malloc(n + 1);
    memset(b, ' ', n);
    b[0] = '{';
    b[n - 1] = '}';
    b[n] = 0;
    json_t *j = NULL;
    /* sent at once (no "Expect: 100-continue"): read and dropped, then 413 */
    long st = kf_call_n(g_kf, "POST", CHAT, b, n, &j, NULL, 0);
    assert_int_equal(st, 413);
    assert_error_body(j, "limit");
    json_decref(j);
    /* a client that waits for "100 Continue", or a huge declared body: the
     * 413 comes before any of the body is sent */
    assert_int_equal(head_only_status("Expect: 100-continue\r\n", (unsigned long long)n), 413);
    assert_int_equal(head_only_status("", 1ULL << 40), 413);
    free(b);
}

static void test_routes(void **state)
{
    (void)state;
    expect("GET", "/no/such/route", NULL, 404, "no route");
    expect("GET", CHAT, NULL, 405, "not allowed");
    expect("DELETE", "/v1/models", NULL, 405, "not allowed");
    expect("POST", "/status", "{}", 405, NULL);
    expect("GET", "/../../etc/passwd", NULL, 404, NULL);
}

static void test_still_serving(void **state)
{
    (void)state;
    json_t *j = NULL;
    assert_int_equal(kf_call(g_kf, "POST", CHAT, "{\"model\":\"aios-tiny\",\"max_tokens\":4," MSGS "}", &j), 200);
    assert_non_null(chat_content(j));
    json_decref(j);
    assert_int_equal(kf_call(g_kf, "GET", "/status", NULL, &j), 200);
    /* nothing that was refused was ever queued */
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "scheduler"), "submitted")), 1);
    json_decref(j);
}

/* run `aios serve ARGS` expecting it to fail fast; returns exit code, fills log */
static int serve_fails(const char *const *args, char *log, size_t loglen)
{
    char dir[] = "/tmp/aios-it-cli-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cmd[4096];
    size_t n = (size_t)snprintf(cmd, sizeof cmd, "timeout 60 '%s' serve --port 0 --data-dir %s", aios_bin(), dir);
    for (int i = 0; args[i]; i++) n += (size_t)snprintf(cmd + n, sizeof cmd - n, " '%s'", args[i]);
    snprintf(cmd + n, sizeof cmd - n, " 2>&1");
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t got = fread(log, 1, loglen - 1, p);
    log[got] = 0;
    int st = pclose(p);
    char rm[256];
    snprintf(rm, sizeof rm, "rm -rf %s", dir);
    if (system(rm) != 0) fprintf(stderr, "cannot remove %s\n", dir);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_bad_command_lines(void **state)
{
    (void)state;
    char log[8192];
    const char *a1[] = {"--model", "/nonexistent/model.gguf", NULL};
    assert_int_equal(serve_fails(a1, log, sizeof log), 1);
    assert_non_null(strstr(log, "/nonexistent/model.gguf"));

    const char *a2[] = {"--config", "/nonexistent/aios.yaml", NULL};
    assert_int_equal(serve_fails(a2, log, sizeof log), 1);
    assert_non_null(strstr(log, "/nonexistent/aios.yaml"));

    char cfg[] = "/tmp/aios-it-cfg-XXXXXX";
    int fd = mkstemp(cfg);
    assert_true(fd >= 0);
    const char *bad = "server:\n  port: \"eighty\"\n";
    assert_int_equal(write(fd, bad, strlen(bad)), (ssize_t)strlen(bad));
    close(fd);
    const char *a3[] = {"--config", cfg, NULL};
    assert_int_equal(serve_fails(a3, log, sizeof log), 1);
    assert_non_null(strstr(log, "server.port"));

    /* a file that is not a GGUF model */
    const char *a4[] = {"--model", cfg, NULL};
    assert_int_equal(serve_fails(a4, log, sizeof log), 1);
    assert_non_null(strstr(log, "GGUF"));
    unlink(cfg);

    const char *a5[] = {"--bogus", NULL};
    assert_int_equal(serve_fails(a5, log, sizeof log), 2);
    assert_non_null(strstr(log, "--bogus"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_missing_and_mistyped),
        cmocka_unit_test(test_unknown_model),
        cmocka_unit_test(test_context_overflow),
        cmocka_unit_test(test_body_too_big),
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_still_serving),
        cmocka_unit_test(test_bad_command_lines),
    };
    return cmocka_run_group_tests(tests, kf_group_setup, kf_group_teardown);
}
