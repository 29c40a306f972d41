/* aios run | ps | kill | logs: the agent commands of the command line.
 *
 *   aios run PATH_OR_NAME --task "..." [--url U]   submit, then follow output
 *   aios ps [--url U]                               the process table
 *   aios kill ID [--signal TERM|KILL|INT] [--url U]
 *   aios logs ID [-f] [--url U]                     stdout, then stderr
 *
 * They talk to a running kernel over HTTP (hc_call): the URL comes from
 * --url, else $AIOS_KERNEL_URL, else http://127.0.0.1:8000. A local folder
 * given to `run` is sent as an absolute path (the kernel's working
 * directory may differ); anything else is a name under the kernel's agents
 * directory. Following polls GET /agents/{id}/logs with byte offsets every
 * 100 ms, so output appears while the agent runs; Ctrl-C during `run` asks
 * the kernel to terminate the agent. Exit codes: `run` returns the agent's
 * exit code (128+signal when killed), the others 0 ok, 1 failure, 2 usage.
 * (follow() returns -1 when the kernel cannot answer.) */
#include "cli/cli.h"
#include "cli/client.h"

#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile sig_atomic_t g_interrupted;
static void on_sigint(int sig)
{
    (void)sig;
    g_interrupted = 1;
}


static void print_error(const char *what, long st, json_t *j)
{
    const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    fprintf(stderr, "aios %s: HTTP %ld: %s\n", what, st, m ? m : "(no message)");
}

static int parse_common(int *i, int argc, char **argv, const char **url)
{
    if (!strcmp(argv[*i], "--url")) {
        if (*i + 1 >= argc) return -1;
        *url = argv[++*i];
        return 1;
    }
    return 0;
}

/* Follow the logs of execution id until it is final. Returns the exit code
 * to report (agent's code, 128+signal, 1 if unknown). */
static int follow(const char *base, unsigned long long id, bool follow_on, bool kill_on_int)
{
    long long oo = 0, eo = 0;
    int killed_sent = 0;
    for (;;) {
        char path[256];
        snprintf(path, sizeof path, "/agents/%llu/logs?stdout_offset=%lld&stderr_offset=%lld", id,
                 oo, eo);
        json_t *j = NULL;
        long st = hc_call_json(base, "GET", path, NULL, &j);
        if (st != 200) {
            if (st) print_error("logs", st, j);
            json_decref(j);
            return -1;
        }
        const char *out = json_string_value(json_object_get(j, "stdout"));
        const char *err = json_string_value(json_object_get(j, "stderr"));
        if (out && *out) {
            fputs(out, stdout);
            fflush(stdout);
        }
        if (err && *err) {
            fputs(err, stderr);
            fflush(stderr);
        }
        long long no = json_integer_value(json_object_get(j, "stdout_offset"));
        long long ne = json_integer_value(json_object_get(j, "stderr_offset"));
        const char *status = json_string_value(json_object_get(j, "status"));
        bool more = no != oo || ne != eo;
        oo = no;
        eo = ne;
        bool final = status && strcmp(status, "running") != 0;
        if ((final && !more) || (!follow_on && !more)) {
            int code = 0;
            if (final) {
                json_t *s = NULL;
                snprintf(path, sizeof path, "/agents/%llu/status", id);
                if (hc_call_json(base, "GET", path, NULL, &s) == 200) {
                    json_t *ec = json_object_get(s, "exit_code"), *sig = json_object_get(s, "signal");
                    code = json_is_integer(ec) ? (int)json_integer_value(ec)
                           : json_is_integer(sig) ? 128 + (int)json_integer_value(sig)
                                                  : 1;
                    if (follow_on) {
                        json_t *res = json_object_get(s, "result");
                        char *rs = json_is_string(res) ? strdup(json_string_value(res))
                                                       : json_dumps(res, JSON_COMPACT | JSON_ENCODE_ANY);
                        fprintf(stderr, "[aios] execution %llu %s (%s %d) in %.2fs; result: %s\n", id,
                                status, json_is_integer(sig) ? "signal" : "exit",
                                json_is_integer(sig) ? (int)json_integer_value(sig) : code,
                                json_number_value(json_object_get(s, "elapsed_s")), rs ? rs : "null");
                        free(rs);
                    }
                }
                json_decref(s);
            }
            json_decref(j);
            return code;
        }
        json_decref(j);
        if (g_interrupted && kill_on_int && !killed_sent) {
            snprintf(path, sizeof path, "/agents/%llu/kill", id);
            json_t *k = NULL;
            hc_call_json(base, "POST", path, NULL, &k);
            json_decref(k);
            fprintf(stderr, "[aios] interrupted: asked the kernel to terminate execution %llu\n", id);
            killed_sent = 1;
        } else if (g_interrupted && !kill_on_int) {
            return 130;
        }
        if (!more) usleep(100000);
    }
}

int cli_run_main(int argc, char **argv)
{
    const char *url = NULL, *ref = NULL, *task = NULL;
    for (int i = 1; i < argc; i++) {
        int c = parse_common(&i, argc, argv, &url);
        if (c < 0) goto usage;
        if (c) continue;
        if (!strcmp(argv[i], "--task")) {
            if (i + 1 >= argc) goto usage;
            task = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "aios run: unknown option '%s'\n", argv[i]);
            goto usage;
        } else if (!ref) {
            ref = argv[i];
        } else {
            goto usage;
        }
    }
    if (!ref || !task) goto usage;
    const char *base = hc_kernel_url(url);
    /* a local package folder travels as an absolute path */
    char abs[PATH_MAX], cfgp[PATH_MAX + 16];
    snprintf(cfgp, sizeof cfgp, "%s/config.json", ref);
    struct stat st;
    if (stat(cfgp, &st) == 0 && realpath(ref, abs)) ref = abs;
    json_t *body = json_pack("{s:s,s:{s:s}}", "agent_id", ref, "agent_config", "task", task);
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!s) {
        fprintf(stderr, "aios run: the task is not valid UTF-8\n");
        return 2;
    }
    json_t *j = NULL;
    long code = hc_call_json(base, "POST", "/agents/submit", s, &j);
    free(s);
    if (code != 200) {
        if (code) print_error("run", code, j);
        json_decref(j);
        return 1;
    }
    unsigned long long id = (unsigned long long)json_integer_value(json_object_get(j, "execution_id"));
    json_decref(j);
    fprintf(stderr, "[aios] %s started as execution %llu on %s\n", ref, id, base);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    int rc = follow(base, id, true, true);
    return rc < 0 ? 1 : rc;
usage:
    fprintf(stderr, "usage: aios run PATH_OR_NAME --task \"...\" [--url URL]\n");
    return 2;
}

int cli_ps_main(int argc, char **argv)
{
    const char *url = NULL;
    for (int i = 1; i < argc; i++) {
        int c = parse_common(&i, argc, argv, &url);
        if (c <= 0) {
            fprintf(stderr, "usage: aios ps [--url URL]\n");
            return 2;
        }
    }
    json_t *j = NULL;
    long st = hc_call_json(hc_kernel_url(url), "GET", "/agents/ps", NULL, &j);
    if (st != 200) {
        if (st) print_error("ps", st, j);
        json_decref(j);
        return 1;
    }
    printf("%-5s %-20s %-10s %-8s %-9s %-5s %-8s %s\n", "ID", "AGENT", "STATUS", "PID", "ELAPSED",
           "EXIT", "SYSCALLS", "RESULT");
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(j, "processes"), i, p)
    {
        json_t *res = json_object_get(p, "result");
        char *rs = json_is_string(res) ? strdup(json_string_value(res))
                                       : json_dumps(res, JSON_COMPACT | JSON_ENCODE_ANY);
        if (rs && strlen(rs) > 40) strcpy(rs + 37, "...");
        json_t *ec = json_object_get(p, "exit_code"), *sig = json_object_get(p, "signal");
        char exitb[16] = "-";
        if (json_is_integer(ec)) snprintf(exitb, sizeof exitb, "%d", (int)json_integer_value(ec));
        else if (json_is_integer(sig)) snprintf(exitb, sizeof exitb, "sig%d", (int)json_integer_value(sig));
        printf("%-5lld %-20s %-10s %-8lld %8.2fs %-5s %-8lld %s\n",
               (long long)json_integer_value(json_object_get(p, "execution_id")),
               json_string_value(json_object_get(p, "agent_name")),
               json_string_value(json_object_get(p, "status")),
               (long long)json_integer_value(json_object_get(p, "pid")),
               json_number_value(json_object_get(p, "elapsed_s")), exitb,
               (long long)json_integer_value(json_object_get(json_object_get(p, "usage"), "syscalls")),
               rs ? rs : "");
        free(rs);
    }
    json_decref(j);
    return 0;
}

int cli_kill_main(int argc, char **argv)
{
    const char *url = NULL, *id = NULL, *sig = NULL;
    for (int i = 1; i < argc; i++) {
        int c = parse_common(&i, argc, argv, &url);
        if (c < 0) goto usage;
        if (c) continue;
        if (!strcmp(argv[i], "--signal") || !strcmp(argv[i], "-s")) {
            if (i + 1 >= argc) goto usage;
            sig = argv[++i];
        } else if (!id) {
            id = argv[i];
        } else {
            goto usage;
        }
    }
    if (!id) goto usage;
    char path[256], body[64];
    snprintf(path, sizeof path, "/agents/%s/kill", id);
    if (sig) snprintf(body, sizeof body, "{\"signal\":\"%.16s\"}", sig);
    json_t *j = NULL;
    long st = hc_call_json(hc_kernel_url(url), "POST", path, sig ? body : NULL, &j);
    if (st != 200) {
        if (st) print_error("kill", st, j);
        json_decref(j);
        return 1;
    }
    printf("%s\n", json_string_value(json_object_get(j, "message")));
    json_decref(j);
    return 0;
usage:
    fprintf(stderr, "usage: aios kill ID [--signal TERM|KILL|INT] [--url URL]\n");
    return 2;
}

int cli_logs_main(int argc, char **argv)
{
    const char *url = NULL, *id = NULL;
    bool f = false;
    for (int i = 1; i < argc; i++) {
        int c = parse_common(&i, argc, argv, &url);
        if (c < 0) goto usage;
        if (c) continue;
        if (!strcmp(argv[i], "-f") || !strcmp(argv[i], "--follow")) f = true;
        else if (!id) id = argv[i];
        else goto usage;
    }
    if (!id) goto usage;
    char *end;
    unsigned long long n = strtoull(id, &end, 10);
    if (*end || n == 0) {
        fprintf(stderr, "aios logs: ID must be an execution id (see aios ps)\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    int rc = follow(hc_kernel_url(url), n, f, false);
    return rc < 0 ? 1 : 0;
usage:
    fprintf(stderr, "usage: aios logs ID [-f] [--url URL]\n");
    return 2;
}
