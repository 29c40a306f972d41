/* HTTP client and child-process helpers for the CLI, benchmarks and tests.
 *
 * Each call makes its own CURL easy handle: simple and thread safe (the
 * process calls curl_global_init once via pthread_once). Not used inside
 * the kernel's request path. */
#include "cli/client.h"

#include "util/err.h"
#include "util/util.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

struct sink {
    struct util_buf b;
    hc_chunk_fn fn;
    void *ud;
    char request_id[80]; /* the answer's x-request-id header */
};

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    struct sink *s = ud;
    size_t len = sz * n;
    static const char name[] = "x-request-id:";
    if (len > sizeof name && !strncasecmp(p, name, sizeof name - 1)) {
        size_t a = sizeof name - 1, e = len;
        while (a < e && (p[a] == ' ' || p[a] == '\t')) a++;
        while (e > a && (p[e - 1] == '\r' || p[e - 1] == '\n' || p[e - 1] == ' ')) e--;
        snprintf(s->request_id, sizeof s->request_id, "%.*s", (int)(e - a), p + a);
    }
    return len;
}

static size_t on_data(char *p, size_t sz, size_t n, void *ud)
{
    struct sink *s = ud;
    size_t len = sz * n;
    if (s->fn) return s->fn(p, len, s->ud) ? 0 : len;
    return util_buf_sink(p, 1, len, &s->b);
}

/* The token sent as "Authorization: Bearer" (access manager): set with
 * hc_set_token (child_start sets the kernel's admin token), else
 * $AIOS_TOKEN, else $AIOS_AGENT_TOKEN. */
static pthread_mutex_t g_tok_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_token[256];

void hc_set_token(const char *token)
{
    pthread_mutex_lock(&g_tok_mu);
    snprintf(g_token, sizeof g_token, "%s", token ? token : "");
    pthread_mutex_unlock(&g_tok_mu);
}

static void auth_header(char *out, size_t outlen)
{
    out[0] = 0;
    pthread_mutex_lock(&g_tok_mu);
    const char *t = g_token[0] ? g_token : NULL;
    if (!t) t = getenv("AIOS_TOKEN");
    if (!t || !*t) t = getenv("AIOS_AGENT_TOKEN");
    if (t && *t) snprintf(out, outlen, "Authorization: Bearer %.200s", t);
    pthread_mutex_unlock(&g_tok_mu);
}

int hc_read_token_file(const char *path, char *out, size_t outlen)
{
    FILE *f = fopen(path, "r");
    if (!f) return AIOS_ENOTFOUND;
    char buf[256] = "";
    int ok = fgets(buf, sizeof buf, f) != NULL;
    fclose(f);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) buf[--n] = 0;
    if (!ok || !n) return AIOS_EINVAL;
    snprintf(out, outlen, "%s", buf);
    return 0;
}

static int perform_h(const char *method, const char *url, const char *body, size_t body_len,
                     struct sink *s, long *status, char *ctype, size_t ctlen, int timeout_s,
                     const char *const *extra)
{
    pthread_once(&g_curl_once, curl_init_once);
    CURL *h = curl_easy_init();
    if (!h) return AIOS_ENOMEM;
    struct curl_slist *hdrs = NULL;
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "Expect:");
    if (extra) {
        for (int i = 0; extra[i]; i++) hdrs = curl_slist_append(hdrs, extra[i]);
    } else {
        char auth[300];
        auth_header(auth, sizeof auth);
        if (auth[0]) hdrs = curl_slist_append(hdrs, auth);
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, s);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)timeout_s);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    CURLcode cc = curl_easy_perform(h);
    int rc = 0;
    if (cc != CURLE_OK && !(s->fn && cc == CURLE_WRITE_ERROR)) rc = AIOS_EIO;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    if (ctype) {
        char *ct = NULL;
        curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
        snprintf(ctype, ctlen, "%s", ct ? ct : "");
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    return rc;
}

static int perform(const char *method, const char *url, const char *body, size_t body_len,
                   struct sink *s, long *status, char *ctype, size_t ctlen, int timeout_s)
{
    return perform_h(method, url, body, body_len, s, status, ctype, ctlen, timeout_s, NULL);
}

int hc_call_h(const char *method, const char *url, const char *body, size_t body_len,
              const char *const *headers, struct hc_resp *out, int timeout_s)
{
    memset(out, 0, sizeof *out);
    struct sink s = {0};
    static const char *const none[] = {NULL};
    int rc = perform_h(method, url, body, body_len, &s, &out->status, out->ctype,
                       sizeof out->ctype, timeout_s, headers ? headers : none);
    out->body = s.b.s ? s.b.s : strdup("");
    out->len = s.b.len;
    snprintf(out->request_id, sizeof out->request_id, "%s", s.request_id);
    return rc;
}

int hc_call(const char *method, const char *url, const char *body, size_t body_len,
            struct hc_resp *out, int timeout_s)
{
    memset(out, 0, sizeof *out);
    struct sink s = {0};
    int rc = perform(method, url, body, body_len, &s, &out->status, out->ctype, sizeof out->ctype,
                     timeout_s);
    out->body = s.b.s ? s.b.s : strdup("");
    out->len = s.b.len;
    snprintf(out->request_id, sizeof out->request_id, "%s", s.request_id);
    return rc;
}

void hc_resp_free(struct hc_resp *r)
{
    if (!r) return;
    free(r->body);
    r->body = NULL;
}

int hc_stream(const char *url, const char *body, hc_chunk_fn fn, void *ud, long *status,
              int timeout_s)
{
    struct sink s = {.fn = fn, .ud = ud};
    return perform("POST", url, body, body ? strlen(body) : 0, &s, status, NULL, 0, timeout_s);
}

int hc_stream_h(const char *url, const char *body, const char *const *headers, hc_chunk_fn fn,
                void *ud, long *status, int timeout_s)
{
    struct sink s = {.fn = fn, .ud = ud};
    static const char *const none[] = {NULL};
    return perform_h("POST", url, body, body ? strlen(body) : 0, &s, status, NULL, 0, timeout_s,
                     headers ? headers : none);
}

int child_start(struct aios_child *c, const char *bin, const char *data_dir,
                const char *const *extra, int timeout_s)
{
    memset(c, 0, sizeof *c);
    snprintf(c->data_dir, sizeof c->data_dir, "%s", data_dir);
    snprintf(c->log_path, sizeof c->log_path, "%s/aios.log", data_dir);
    if (util_mkdirs(data_dir)) return AIOS_EIO;
    char ready[4200];
    snprintf(ready, sizeof ready, "%s/ready", data_dir);
    unlink(ready);

    const char *argv[64];
    int n = 0;
    argv[n++] = bin;
    argv[n++] = "serve";
    argv[n++] = "--host";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--port";
    argv[n++] = "0";
    argv[n++] = "--data-dir";
    argv[n++] = data_dir;
    argv[n++] = "--ready-file";
    argv[n++] = ready;
    for (int i = 0; extra && extra[i] && n < 62; i++) argv[n++] = extra[i];
    argv[n] = NULL;

    pid_t pid = fork();
    if (pid < 0) return AIOS_EIO;
    if (pid == 0) {
        int fd = open(c->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        int nul = open("/dev/null", O_RDWR);
        if (nul >= 0) {
            dup2(nul, 0);
            dup2(nul, 1);
            close(nul);
        }
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    c->pid = pid;
    int64_t deadline = util_now_us() + (int64_t)timeout_s * 1000000;
    while (util_now_us() < deadline) {
        FILE *f = fopen(ready, "r");
        if (f) {
            int port = 0;
            if (fscanf(f, "%d", &port) == 1 && port > 0) {
                fclose(f);
                c->port = port;
                snprintf(c->base, sizeof c->base, "http://127.0.0.1:%d", port);
                /* the kernel's admin token (access manager): later calls send it */
                char tokpath[4200], tok[256];
                snprintf(tokpath, sizeof tokpath, "%s/admin.token", data_dir);
                if (hc_read_token_file(tokpath, tok, sizeof tok) == 0) {
                    snprintf(c->token, sizeof c->token, "%s", tok);
                    hc_set_token(tok);
                }
                return 0;
            }
            fclose(f);
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            c->pid = 0;
            return AIOS_EIO;
        }
        usleep(20000);
    }
    child_stop(c, 5);
    return AIOS_EIO;
}

int child_stop(struct aios_child *c, int timeout_s)
{
    if (c->pid <= 0) return -1;
    kill(c->pid, SIGTERM);
    int64_t deadline = util_now_us() + (int64_t)timeout_s * 1000000;
    int st = -1;
    while (util_now_us() < deadline) {
        if (waitpid(c->pid, &st, WNOHANG) == c->pid) {
            c->pid = 0;
            return st;
        }
        usleep(10000);
    }
    kill(c->pid, SIGKILL);
    waitpid(c->pid, &st, 0);
    c->pid = 0;
    return -1;
}

const char *hc_kernel_url(const char *url)
{
    if (url) return url;
    const char *e = getenv("AIOS_KERNEL_URL");
    return e && *e ? e : "http://127.0.0.1:8000";
}

long hc_call_json(const char *base, const char *method, const char *path, const char *body,
                  json_t **out)
{
    char url[2048];
    snprintf(url, sizeof url, "%s%s", base, path);
    struct hc_resp r;
    *out = NULL;
    if (hc_call(method, url, body, body ? strlen(body) : 0, &r, 60)) {
        fprintf(stderr, "aios: cannot reach the kernel at %s (is `aios serve` running? set --url "
                "or AIOS_KERNEL_URL)\n", base);
        hc_resp_free(&r);
        return 0;
    }
    *out = json_loadb(r.body, r.len, 0, NULL);
    long st = r.status;
    hc_resp_free(&r);
    return st;
}
