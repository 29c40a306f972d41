/* Integration: kernel lifecycle. SIGTERM while a long generation streams:
 * the client gets an error event and [DONE] (not a cut connection), the
 * kernel exits 0 promptly; while it drains, new requests get a 503; a config file is honoured (model list, body
 * limit); the built-in model is cached and reused. */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/util.h"

struct stream_arg {
    struct kernel_fixture *kf;
    struct sse_result r;
    int rc;
};

static void *streamer(void *p)
{
    struct stream_arg *a = p;
    a->rc = kf_stream(a->kf,
                      "{\"model\":\"aios-tiny\",\"max_tokens\":4000,\"stream\":true,"
                      "\"messages\":[{\"role\":\"user\",\"content\":\"go on forever\"}]}",
                      &a->r, 0);
    return NULL;
}

static void test_sigterm_mid_stream(void **state)
{
    (void)state;
    struct kernel_fixture *kf = kf_start(NULL);
    struct stream_arg a = {.kf = kf};
    pthread_t th;
    pthread_create(&th, NULL, streamer, &a);
    /* wait until generation is under way */
    json_t *j = NULL;
    for (int i = 0; i < 500; i++) {
        kf_call(kf, "GET", "/status", NULL, &j);
        json_int_t running = json_integer_value(
            json_object_get(json_object_get(json_object_get(j, "scheduler"), "running"), "llm"));
        json_decref(j);
        if (running == 1) break;
        usleep(10000);
    }
    usleep(100000);
    int64_t t0 = util_now_us();
    int st = child_stop(&kf->child, 30);
    int64_t dt = util_now_us() - t0;
    pthread_join(th, NULL);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_true(dt < 10 * 1000000); /* not after 4000 tokens */
    assert_int_equal(a.r.status, 200);
    assert_true(a.r.n_events >= 1);
    assert_non_null(a.r.error);
    assert_non_null(strstr(json_string_value(json_object_get(a.r.error, "message")), "shutting down"));
    assert_true(a.r.done);
    sse_result_free(&a.r);
    kf->child.pid = 0;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", kf->dir);
    assert_int_equal(system(cmd), 0);
    free(kf);
}

/* While the kernel drains after SIGTERM (it waits up to 2 s for requests
 * in flight; here an upload that never finishes), a new request gets a
 * 503 with a JSON error, and the kernel still exits 0. */
static void test_shutdown_refuses_new_requests(void **state)
{
    (void)state;
    struct kernel_fixture *kf = kf_start(NULL);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)kf->child.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: 100000\r\n\r\n{\"model\": \"aios-tiny\", ",
                     kf->child.token);
    assert_int_equal(write(fd, head, (size_t)n), n);
    json_t *j = NULL;
    /* the kernel answers, so it has had time to read the upload's headers
     * (its first handler call, which counts it in flight); and a margin */
    assert_int_equal(kf_call(kf, "GET", "/status", NULL, &j), 200);
    json_decref(j);
    usleep(100000);
    j = NULL;
    assert_int_equal(kill(kf->child.pid, SIGTERM), 0);
    long st = 0;
    for (int i = 0; i < 150; i++) { /* 200 until the kernel sees the signal */
        json_decref(j);
        j = NULL;
        st = kf_call(kf, "GET", "/status", NULL, &j);
        if (st != 200) break;
        usleep(10000);
    }
    assert_int_equal(st, 503);
    assert_error_body(j, "shutting down");
    json_decref(j);
    int ws = child_stop(&kf->child, 30);
    close(fd);
    assert_true(WIFEXITED(ws));
    assert_int_equal(WEXITSTATUS(ws), 0);
    kf->child.pid = 0;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", kf->dir);
    assert_int_equal(system(cmd), 0);
    free(kf);
}

static void test_config_file(void **state)
{
    (void)state;
    /* a config naming the cached built-in model under another name, with a
     * small body limit */
    char *cache = util_cache_dir();
    char path[4096];
    snprintf(path, sizeof path, "%s/models/aios-test-tiny-seed0.gguf", cache);
    free(cache);
    assert_int_equal(access(path, R_OK), 0); /* created by an earlier start */

    char cfg[] = "/tmp/aios-it-cfg-XXXXXX";
    int fd = mkstemp(cfg);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f,
            "api_keys: {openai: \"\"}\n"
            "llms:\n"
            "  models:\n"
            "    - name: \"my-agent-model\"\n"
            "      backend: \"llamacpp\"\n"
            "      path: \"%s\"\n"
            "      n_ctx: 512\n"
            "    - name: \"gpt-4o-mini\"\n"
            "      backend: \"openai\"\n"
            "server:\n"
            "  max_body_bytes: 2048\n"
            "scheduler:\n"
            "  policy: fifo\n",
            path);
    fclose(f);
    const char *extra[] = {"--config", cfg, NULL};
    unsetenv("OPENAI_API_KEY");
    struct kernel_fixture *kf = kf_start(extra);

    json_t *j = NULL;
    assert_int_equal(kf_call(kf, "GET", "/v1/models", NULL, &j), 200);
    json_t *d = json_object_get(j, "data");
    assert_int_equal(json_array_size(d), 2); /* local and remote */
    assert_string_equal(json_string_value(json_object_get(json_array_get(d, 0), "id")), "my-agent-model");
    assert_string_equal(json_string_value(json_object_get(json_array_get(d, 1), "id")), "gpt-4o-mini");
    json_decref(j);

    /* the remote model has no key (empty api_keys.openai, no environment
     * variable): a 401 that says where to put one, without any network */
    assert_int_equal(kf_call(kf, "POST", "/v1/chat/completions",
                             "{\"model\":\"gpt-4o-mini\","
                             "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", &j), 401);
    assert_error_body(j, "OPENAI_API_KEY");
    json_decref(j);

    assert_int_equal(kf_call(kf, "GET", "/status", NULL, &j), 200);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(j, "models"), 0), "n_ctx")), 512);
    json_decref(j);

    /* n_ctx 512 is enforced */
    assert_int_equal(kf_call(kf, "POST", "/v1/chat/completions",
                             "{\"model\":\"my-agent-model\",\"max_tokens\":600,"
                             "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", &j), 400);
    assert_error_body(j, "context");
    json_decref(j);

    /* the 2 KiB body limit is enforced, with and without Content-Length */
    char big[4096];
    memset(big, ' ', sizeof big);
    big[0] = '{';
    big[sizeof big - 1] = '}';
    assert_int_equal(kf_call_n(kf, "POST", "/v1/chat/completions", big, sizeof big, &j, NULL, 0), 413);
    assert_error_body(j, "2048");
    json_decref(j);

    assert_int_equal(kf_call(kf, "POST", "/v1/chat/completions",
                             "{\"model\":\"my-agent-model\",\"max_tokens\":5,"
                             "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", &j), 200);
    json_decref(j);
    kf_stop(kf);
    unlink(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigterm_mid_stream),
        cmocka_unit_test(test_shutdown_refuses_new_requests),
        cmocka_unit_test(test_config_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
