/* aios: the command line entry point.
 *
 *   aios serve [--config FILE] [--model FILE.gguf] [--host H] [--port P]
 *              [--data-dir D] [--ready-file F]
 *   aios demo                 the main job: a short tour over HTTP
 *   aios model create-test OUT [--shape tiny|tiny-q8|qwen2.5-0.5b|embed] [--seed N]
 *   aios model info FILE.gguf
 *   aios bench agents ...     the multi-agent benchmark (bench.c)
 *   aios version
 *
 * `serve` blocks SIGINT/SIGTERM in every thread before any is created and
 * waits for them with sigwait() on the main thread, so shutdown always runs
 * in one known place (kernel_stop) and never inside a signal handler. */
#include "cli/cli.h"
#include "kernel/kernel.h"
#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <errno.h>
#include <sqlite3.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f,
            "aios %s: an LLM agent operating system\n"
            "\n"
            "usage:\n"
            "  aios serve [--config FILE] [--model FILE.gguf] [--host H] [--port P]\n"
            "             [--data-dir D] [--ready-file F]\n"
            "  aios demo                      start a kernel on the built-in model and tour it\n"
            "  aios model create-test OUT [--shape tiny|tiny-q8|qwen2.5-0.5b|embed] [--seed N]\n"
            "  aios model info FILE.gguf\n"
            "  aios bench agents [--kernel M.gguf|--llama-server M.gguf|--url U] [...]\n"
            "  aios run PATH_OR_NAME --task \"...\" [--url URL]   run an agent, follow its output\n"
            "  aios ps [--url URL]            agent processes\n"
            "  aios top [--url URL] [--once]  agents, queues and engines, refreshing (q quits)\n"
            "  aios kill ID [--signal TERM|KILL|INT] [--url URL]\n"
            "  aios logs ID [-f] [--url URL]\n"
            "  aios audit [--agent A] [--since T|10m|2h|1d] [--url URL]\n"
            "  aios approvals | approve ID | deny ID [--reason R] [--url URL]\n"
            "  aios budgets [--agent A] [--json] [--url URL]   token budget usage\n"
            "  aios register-agent NAME [--url URL]   (prints the agent's token)\n"
            "  aios hub add FOLDER [--tool|--agent] [--url URL]   publish a Cerebrum package\n"
            "  aios hub list [--json] [--url URL]     the local tool and agent hub\n"
            "  aios version\n",
            AIOS_VERSION);
}

static int parse_port(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 0 || v > 65535) return AIOS_EINVAL;
    *out = (int)v;
    return 0;
}

static int write_ready_file(const char *path, int port)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return AIOS_EIO;
    fprintf(f, "%d\n", port);
    if (fclose(f) != 0) return AIOS_EIO;
    return rename(tmp, path) == 0 ? 0 : AIOS_EIO;
}

static char *model_name_from_path(const char *path)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    char *n = strdup(b);
    if (!n) return NULL;
    size_t l = strlen(n);
    if (l > 5 && !strcmp(n + l - 5, ".gguf")) n[l - 5] = 0;
    return n;
}

static int cmd_serve(int argc, char **argv)
{
    const char *config = NULL, *model = NULL, *host = NULL, *port_s = NULL, *data_dir = NULL,
               *ready = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        if (!strcmp(a, "--config")) dst = &config;
        else if (!strcmp(a, "--model")) dst = &model;
        else if (!strcmp(a, "--host")) dst = &host;
        else if (!strcmp(a, "--port")) dst = &port_s;
        else if (!strcmp(a, "--data-dir")) dst = &data_dir;
        else if (!strcmp(a, "--ready-file")) dst = &ready;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "aios serve: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "aios serve: %s needs a value\n", a);
            return 2;
        }
        *dst = argv[++i];
    }

    struct kernel k;
    memset(&k, 0, sizeof k);
    k.config_path = config;
    char err[1024] = "";
    int rc;
    if (config) {
        rc = config_load_file(&k.cfg, config, err, sizeof err);
        if (rc) {
            fprintf(stderr, "aios serve: %s\n", err);
            return 1;
        }
    } else {
        rc = config_load_string(&k.cfg, "", 0, err, sizeof err);
        if (rc) {
            fprintf(stderr, "aios serve: %s\n", err);
            return 1;
        }
    }
    if (host) {
        free(k.cfg.host);
        k.cfg.host = strdup(host);
    }
    if (port_s && parse_port(port_s, &k.cfg.port)) {
        fprintf(stderr, "aios serve: --port must be a number in 0..65535, got '%s'\n", port_s);
        config_free(&k.cfg);
        return 2;
    }
    if (data_dir) {
        free(k.cfg.data_dir);
        k.cfg.data_dir = strdup(data_dir);
    }
    if (model) {
        struct cfg_model *ms = calloc(k.cfg.n_models + 1, sizeof *ms);
        char *abs = realpath(model, NULL);
        if (!ms || !abs) {
            fprintf(stderr, "aios serve: cannot use --model %s: %s\n", model,
                    abs ? "out of memory" : strerror(errno));
            free(ms);
            free(abs);
            config_free(&k.cfg);
            return 1;
        }
        if (k.cfg.n_models) memcpy(ms + 1, k.cfg.models, k.cfg.n_models * sizeof *ms);
        ms[0].name = model_name_from_path(abs);
        ms[0].backend = strdup("llamacpp");
        ms[0].path = abs;
        ms[0].n_ctx = CONFIG_DEFAULT_N_CTX;
        free(k.cfg.models);
        k.cfg.models = ms;
        k.cfg.n_models++;
    }
    /* the data directory is the kernel's alone: 0700, and what the kernel
     * creates in it while starting (databases, their WAL files, which take
     * their database's mode, folders) is 0600/0700. Sandboxes reach their
     * part of it only through binds the kernel stages as root. */
    if (util_mkdirs(k.cfg.data_dir) || chmod(k.cfg.data_dir, 0700) != 0) {
        fprintf(stderr, "aios serve: cannot create data directory %s (mode 0700)\n",
                k.cfg.data_dir);
        config_free(&k.cfg);
        return 1;
    }

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    mode_t old_umask = umask(077);
    rc = kernel_start(&k, err, sizeof err);
    umask(old_umask); /* later files have explicit modes (agents' logs, storage, spills) */
    if (rc) {
        fprintf(stderr, "aios serve: %s\n", err);
        config_free(&k.cfg);
        return 1;
    }
    LOG_INFO("kernel", "aios %s ready on port %d (data in %s, policy %s)", AIOS_VERSION,
             kernel_port(&k), k.cfg.data_dir, k.cfg.sched_policy);
    if (ready && write_ready_file(ready, kernel_port(&k)))
        LOG_WARN("kernel", "cannot write the ready file %s", ready);

    int sig = 0;
    sigwait(&set, &sig);
    LOG_INFO("kernel", "received %s; shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
    kernel_stop(&k);
    config_free(&k.cfg);
    llm_llama_global_free();
    LOG_INFO("kernel", "stopped");
    return 0;
}

int main(int argc, char **argv)
{
    /* SQLite keeps no memory statistics (nothing reads them, and no soft
     * heap limit is set): with them, every sqlite3_malloc and sqlite3_free
     * took one process-wide mutex, about 5% of the kernel's instructions
     * under load (docs/performance.md). Before any connection opens. */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "serve")) return cmd_serve(argc - 1, argv + 1);
    if (!strcmp(cmd, "demo")) return cli_demo_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "model")) return cli_model_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "forward")) return cli_forward_main(argc - 1, argv + 1); /* agents' pid 1 */
    if (strcmp(cmd, "serve") && strcmp(cmd, "demo")) cli_load_token(); /* access manager */
    if (!strcmp(cmd, "audit")) return cli_audit_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "approvals")) return cli_approvals_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "budgets")) return cli_budgets_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "approve")) return cli_approve_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "deny")) return cli_deny_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "register-agent")) return cli_register_agent_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "hub")) return cli_hub_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return cli_bench_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "run")) return cli_run_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "ps")) return cli_ps_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "top")) return cli_top_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "kill")) return cli_kill_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "logs")) return cli_logs_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("aios %s\n", AIOS_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "aios: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
