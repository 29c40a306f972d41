/* `aios top`: the dashboard's picture in a terminal. Reads GET /ui/state
 * (the same snapshot the web page polls) every --interval seconds and
 * draws the scheduler's queues, each engine's rate and the agents sorted
 * by engine time (the CPU-like column), refreshing in place; `q` quits.
 * With --once it prints one frame without terminal control (for scripts).
 * Works against any kernel with --url (else $AIOS_KERNEL_URL). */
#include "cli/cli.h"
#include "cli/client.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t g_stop;
static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static double num(json_t *o, const char *key) { return json_number_value(json_object_get(o, key)); }

static int by_engine(const void *a, const void *b)
{
    double x = num(*(json_t *const *)a, "engine_s"), y = num(*(json_t *const *)b, "engine_s");
    return x < y ? 1 : x > y ? -1 : 0;
}

/* previous totals of each engine, for tokens/s */
struct rate {
    char name[128];
    double tokens, t;
};

static void draw(FILE *o, json_t *st, struct rate *rates, size_t n_rates, bool tty, int rows)
{
    if (tty) fputs("\033[H\033[2J", o);
    json_t *sc = json_object_get(st, "scheduler");
    fprintf(o, "aios %s  up %.0f s  policy %s  viewing as %s%s\n",
            json_string_value(json_object_get(st, "version")), num(st, "uptime_s"),
            json_string_value(json_object_get(sc, "policy")),
            json_string_value(json_object_get(json_object_get(st, "viewer"), "agent")),
            tty ? "   (q quits)" : "");
    static const char *const kinds[] = {"llm", "memory", "storage", "tool"};
    fputs("queues (queued/running):", o);
    for (int k = 0; k < 4; k++)
        fprintf(o, "  %s %lld/%lld", kinds[k],
                (long long)json_integer_value(json_object_get(json_object_get(sc, "queued"), kinds[k])),
                (long long)json_integer_value(json_object_get(json_object_get(sc, "running"), kinds[k])));
    fprintf(o, "  preempted %lld\n", (long long)json_integer_value(json_object_get(sc, "preempted")));
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(st, "models"), i, m) {
        json_t *e = json_object_get(m, "engine");
        const char *name = json_string_value(json_object_get(m, "name"));
        if (!e || !name) {
            fprintf(o, "model %s (%s)\n", name ? name : "?",
                    json_string_value(json_object_get(m, "backend")));
            continue;
        }
        double tokens = num(e, "prompt_tokens_computed") + num(e, "tokens_generated");
        char rate[32] = "-";
        if (i < n_rates) {
            if (!strcmp(rates[i].name, name) && now > rates[i].t && rates[i].t > 0)
                snprintf(rate, sizeof rate, "%.1f", (tokens - rates[i].tokens) / (now - rates[i].t));
            snprintf(rates[i].name, sizeof rates[i].name, "%s", name);
            rates[i].tokens = tokens;
            rates[i].t = now;
        }
        fprintf(o, "model %s on %s: running %lld, switched out %lld, retained %lld, steps %lld, "
                   "%s tokens/s, KV %lld of %lld cells\n",
                name, json_string_value(json_object_get(m, "device")) ?: "cpu",
                (long long)num(e, "running"), (long long)num(e, "switched_out"),
                (long long)num(e, "retained"), (long long)num(e, "steps"), rate,
                (long long)num(e, "kv_cells_used"), (long long)num(e, "kv_size"));
    }
    json_t *energy = json_object_get(st, "energy");
    fprintf(o, "energy: estimated at %.1f W (%s)\n\n", num(energy, "watts"),
            json_string_value(json_object_get(energy, "source")));

    json_t *agents = json_object_get(st, "agents");
    size_t n = json_array_size(agents);
    json_t **v = calloc(n ? n : 1, sizeof *v);
    if (!v) return;
    for (i = 0; i < n; i++) v[i] = json_array_get(agents, i);
    qsort(v, n, sizeof *v, by_engine);
    fprintf(o, "%-24s %-7s %5s %5s %5s %5s %9s %9s %9s %10s %6s %8s %9s %9s %9s\n", "AGENT", "STATE",
            "LLM", "MEM", "STO", "TOOL", "COMPUTED", "REUSED", "GEN", "KV_BYTES", "SWITCH", "WAIT_S",
            "ENGINE_S", "ENERGY_J", "COST");
    int room = tty ? rows - 8 : (int)n;
    for (i = 0; i < n && (int)i < room; i++) {
        json_t *a = v[i], *k = json_object_get(a, "calls_by_kind"), *t = json_object_get(a, "tokens");
        const char *state = num(a, "running") > 0 ? "running" : num(a, "queued") > 0 ? "waiting" : "idle";
        fprintf(o, "%-24.24s %-7s %5.0f %5.0f %5.0f %5.0f %9.0f %9.0f %9.0f %10.0f %6.0f %8.2f %9.2f %9.1f %9.4f\n",
                json_string_value(json_object_get(a, "name")), state, num(k, "llm"), num(k, "memory"),
                num(k, "storage"), num(k, "tool"), num(t, "computed"), num(t, "reused"),
                num(t, "generated"), num(a, "kv_bytes"), num(a, "context_switches"), num(a, "queue_s"),
                num(a, "engine_s"), num(a, "energy_j"), num(a, "cost"));
    }
    if (n == 0) fputs("(no agent has called the kernel yet)\n", o);
    else if ((int)n > room) fprintf(o, "... %zu more\n", n - (size_t)room);
    free(v);
    fflush(o);
}

int cli_top_main(int argc, char **argv)
{
    const char *url = NULL;
    double interval = 1.0;
    bool once = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--url") && i + 1 < argc) url = argv[++i];
        else if (!strcmp(argv[i], "--interval") && i + 1 < argc) interval = atof(argv[++i]);
        else if (!strcmp(argv[i], "--once")) once = true;
        else {
            fprintf(stderr, "usage: aios top [--url URL] [--interval SECONDS] [--once]\n");
            return 2;
        }
    }
    if (interval < 0.1) interval = 0.1;
    const char *base = hc_kernel_url(url);
    bool tty = !once && isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    struct termios saved;
    if (tty && tcgetattr(STDIN_FILENO, &saved) == 0) {
        struct termios raw = saved;
        raw.c_lflag &= (tcflag_t) ~(ICANON | ECHO);
        raw.c_cc[VMIN] = 0;
        raw.c_cc[VTIME] = 0;
        tcsetattr(STDIN_FILENO, TCSANOW, &raw);
        fputs("\033[?25l", stdout); /* hide the cursor */
    } else {
        tty = false;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    struct rate rates[16] = {{{0}, 0, 0}};
    int rc = 0;
    while (!g_stop) {
        json_t *st = NULL;
        long s = hc_call_json(base, "GET", "/ui/state", NULL, &st);
        if (s != 200) {
            const char *m = json_string_value(json_object_get(json_object_get(st, "error"), "message"));
            if (s) fprintf(stderr, "aios top: HTTP %ld: %s\n", s, m ? m : "(no message)");
            json_decref(st);
            rc = 1;
            break;
        }
        int rows = 40;
        const char *lines = getenv("LINES");
        if (lines && atoi(lines) > 10) rows = atoi(lines);
        draw(stdout, st, rates, sizeof rates / sizeof rates[0], tty, rows);
        json_decref(st);
        if (once) break;
        /* wait for the interval or a key */
        struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
        int r = poll(&p, 1, (int)(interval * 1000));
        if (r > 0 && (p.revents & POLLIN)) {
            char c;
            ssize_t k = read(STDIN_FILENO, &c, 1);
            if (k == 1 && (c == 'q' || c == 'Q')) break;
            if (k == 0 && !tty) break; /* stdin closed */
        } else if (r < 0 && errno != EINTR) {
            break;
        }
    }
    if (tty) {
        fputs("\033[?25h\n", stdout);
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    }
    return rc;
}
