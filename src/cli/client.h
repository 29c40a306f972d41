/* A small HTTP client (libcurl) and a helper that runs `aios serve` as a
 * child process; used by `aios demo`, `aios bench` and the tests. */
#ifndef AIOS_CLI_CLIENT_H
#define AIOS_CLI_CLIENT_H

#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>

struct hc_resp {
    long status;
    char *body;
    size_t len;
    char ctype[128];
    char request_id[80]; /* the x-request-id header ("" when none) */
};

/* One request. body may be NULL. 0 or AIOS_EIO (connection failed). */
int hc_call(const char *method, const char *url, const char *body, size_t body_len,
            struct hc_resp *out, int timeout_s);
void hc_resp_free(struct hc_resp *r);
/* The kernel's base URL for the CLI: url if given, else $AIOS_KERNEL_URL,
 * else http://127.0.0.1:8000. */
const char *hc_kernel_url(const char *url);
/* base+path; JSON answer in *out (NULL if none). Returns the HTTP status,
 * or 0 when the kernel could not be reached (a message is printed). */
long hc_call_json(const char *base, const char *method, const char *path, const char *body,
                  json_t **out);
/* The same with exactly these extra headers ("Name: value", NULL-ended;
 * NULL: none): no token is added (for tests of the access manager). */
int hc_call_h(const char *method, const char *url, const char *body, size_t body_len,
              const char *const *headers, struct hc_resp *out, int timeout_s);
/* Token sent as "Authorization: Bearer" by hc_call/hc_stream (NULL or ""
 * clears it; then $AIOS_TOKEN, else $AIOS_AGENT_TOKEN is sent if set). */
void hc_set_token(const char *token);
/* Read a token file (first line, trimmed). 0, AIOS_ENOTFOUND, AIOS_EINVAL. */
int hc_read_token_file(const char *path, char *out, size_t outlen);

/* POST and hand each received piece of the body to fn as it arrives
 * (return non-zero from fn to abort). */
typedef int (*hc_chunk_fn)(const char *data, size_t n, void *ud);
int hc_stream(const char *url, const char *body, hc_chunk_fn fn, void *ud, long *status,
              int timeout_s);

/* hc_stream with exactly these extra headers (see hc_call_h) */
int hc_stream_h(const char *url, const char *body, const char *const *headers, hc_chunk_fn fn,
                void *ud, long *status, int timeout_s);

struct aios_child {
    pid_t pid;
    int port;
    char base[64]; /* http://127.0.0.1:PORT */
    char data_dir[4096];
    char log_path[4200];
    char token[256]; /* the kernel's admin token (DATA/admin.token), "" if none */
};

/* Start `bin serve --host 127.0.0.1 --port 0 --data-dir DATA --ready-file ...`
 * plus extra args (NULL-terminated, may be NULL), stderr to DATA/aios.log,
 * and wait up to timeout_s for it to listen. */
int child_start(struct aios_child *c, const char *bin, const char *data_dir,
                const char *const *extra, int timeout_s);
/* SIGTERM, wait up to timeout_s (then SIGKILL); returns the exit status
 * (as from waitpid) or -1. */
int child_stop(struct aios_child *c, int timeout_s);

#endif
