/* aios bench agents: the multi-agent workload.
 *
 * N agents each run T ReAct-shaped turns against an OpenAI-compatible chat
 * endpoint. Every agent shares one system prompt of S words (a tool
 * catalogue) and has its own task; each turn asks for G tokens, then
 * appends the answer and an observation of O words, optionally after
 * sleeping tool_ms (the "tool" runs; with --kernel-tool the agent calls
 * a tool on the kernel instead, `bench/wait`, which sleeps tool_ms, so the
 * kernel knows the agent waits on a tool). Agents are stateless clients: they
 * send the whole conversation every turn, as OpenAI SDK agents do. They
 * run concurrently (one client thread per agent, libcurl) or, with
 * --sequential, one after another (the no-OS baseline).
 *
 * Targets: --kernel MODEL.gguf starts `aios serve` (this binary) with the
 * given policy and threads; --llama-server MODEL.gguf starts llama.cpp's
 * llama-server (scripts/llama.sh --server builds it) with -np slots; --url
 * points at anything already running. The same workload, with the same
 * seed, is byte-identical across targets.
 *
 * Output: a progress bar on stderr; then a table (or --json) with the
 * makespan, p50/p95 call latency, the spread of per-agent completion
 * times, Jain's fairness index over per-agent throughput (turns per second
 * of that agent's own completion time), and prompt tokens computed vs
 * reused (usage.prompt_tokens_details.cached_tokens).
 *
 * Threads: the main thread owns the child processes and the progress bar;
 * each agent thread owns its conversation and curl handle and writes only
 * its own slot of the results; the shared call counter is atomic. */
#include "cli/cli.h"
#include "cli/client.h"
#include "util/err.h"
#include "util/util.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct bench_opts {
    const char *kernel_model, *server_model, *url, *model, *policy, *server_bin, *out_dir;
    const char *kv_type; /* engine kv_type (--kernel) */
    const char *batch_invariant; /* engine batch_invariant, "true"/"false" (--kernel) */
    int threads, ctx, slots, kv_size;
    bool slots_set;
    int n_agents, n_turns, sys_words, task_words, obs_words, gen, tool_ms;
    int inter_ms, inter_prio; /* the interactive agent: period (0: none), priority */
    bool sequential, json;
    bool kernel_tool; /* --kernel-tool: the tool time is a TOOL call on the kernel */
    unsigned seed;
    bool request_seed; /* --request-seed: each call carries "seed" */
};

struct call_rec {
    double t_start, t_end; /* seconds since the bench start */
    int prompt, cached, completion;
    long status;
    /* the answer's "timings" (aios's embedded engine, llama-server), ms;
     * has_timings false without them */
    bool has_timings;
    double prompt_ms, predicted_ms;
};

struct agent {
    int idx;
    const struct bench_opts *o;
    const char *chat_url, *model;
    const char *query_url; /* --kernel-tool: POST /query */
    const char *system;
    char task[4096];
    unsigned rng;
    struct call_rec *calls;
    double t_done;
    int n_errors;
    char err[256];
    bool interactive; /* its calls carry a priority and are not counted */
    int n_calls;
};

static int g_batch_done; /* atomic: the batch agents have all finished */

static int64_t g_t0_us;
static int g_calls_done; /* atomic */

/* ---- the workload text ---- */

static const char *const k_words[] = {
    "search", "file", "read", "write", "list", "query", "index", "result", "value", "agent",
    "memory", "store", "tool", "call", "return", "string", "number", "path", "name", "option",
    "weather", "city", "price", "stock", "report", "summary", "table", "column", "row", "date",
    "time", "user", "email", "send", "draft", "calendar", "event", "meeting", "note", "task",
    "plan", "step", "check", "verify", "compute", "sum", "average", "filter", "sort", "limit",
    "page", "url", "fetch", "parse", "json", "field", "key", "map", "image", "caption",
    "translate", "language", "text", "length", "format", "output", "input", "error", "retry",
    "status", "code", "update", "delete", "create", "open", "close", "upload", "download",
    "archive", "paper", "author", "title", "abstract", "citation", "dataset", "model", "train",
    "evaluate", "metric", "score", "rank", "top", "recent", "history", "account", "balance",
    "order", "ship", "track", "address", "phone", "contact", "review", "rating", "map", "route",
};
#define N_WORDS (sizeof k_words / sizeof k_words[0])

static unsigned rng_next(unsigned *s)
{
    unsigned x = *s ? *s : 0x9e3779b9u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* append n words to buf (space separated), with a newline every 12 words */
static void add_words(char *buf, size_t cap, int n, unsigned *rng)
{
    size_t len = strlen(buf);
    for (int i = 0; i < n && len + 20 < cap; i++) {
        const char *w = k_words[rng_next(rng) % N_WORDS];
        len += (size_t)snprintf(buf + len, cap - len, "%s%s", w, (i % 12 == 11) ? "\n" : " ");
    }
}

static char *make_system(int words, unsigned seed)
{
    size_t cap = (size_t)words * 16 + 512;
    char *s = malloc(cap);
    if (!s) return NULL;
    unsigned rng = seed * 2654435761u + 1;
    snprintf(s, cap, "You are an agent that solves tasks with tools. Think, then call one tool "
                     "per step as Action: tool(args). Tool catalogue:\n");
    int left = words, k = 0;
    while (left > 0) {
        int n = left < 24 ? left : 24;
        size_t l = strlen(s);
        snprintf(s + l, cap - l, "- tool_%d: ", k++);
        add_words(s, cap, n - 1, &rng);
        l = strlen(s);
        snprintf(s + l, cap - l, "\n");
        left -= n;
    }
    return s;
}

/* ---- HTTP ---- */

static double now_s(void) { return (double)(util_now_us() - g_t0_us) / 1e6; }

/* bearer token for the target: the spawned kernel's admin token, else
 * $AIOS_TOKEN (an aios kernel with access control), else none */
static char g_bench_token[256];

/* "Authorization: Bearer ..." in buf, or NULL without a token */
static const char *bearer(char *buf, size_t n)
{
    if (!g_bench_token[0]) return NULL;
    snprintf(buf, n, "Authorization: Bearer %s", g_bench_token);
    return buf;
}

/* h plus the bearer token header, if any */
static struct curl_slist *auth_header(struct curl_slist *h)
{
    char auth[300];
    return bearer(auth, sizeof auth) ? curl_slist_append(h, auth) : h;
}

/* one chat call; appends the assistant answer to msgs */
static int agent_turn(struct agent *a, CURL *c, json_t *msgs, int turn)
{
    const struct bench_opts *o = a->o;
    char user[64];
    if (a->interactive) snprintf(user, sizeof user, "interactive");
    else snprintf(user, sizeof user, "agent-%d", a->idx);
    /* greedy; no seed unless asked, as agent frameworks send none (on
     * aios a seed makes the call batch invariant, see --batch-invariant) */
    json_t *body = json_pack("{s:s,s:O,s:i,s:f,s:s,s:b}", "model", a->model, "messages", msgs,
                             "max_tokens", a->interactive ? 4 : o->gen, "temperature", 0.0,
                             "user", user, "stream", 0);
    if (body && o->request_seed) json_object_set_new(body, "seed", json_integer(o->seed));
    if (body && a->interactive) json_object_set_new(body, "priority", json_integer(o->inter_prio));
    char *txt = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!txt) return AIOS_ENOMEM;
    struct util_buf b = {0};
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    char agent_hdr[96];
    snprintf(agent_hdr, sizeof agent_hdr, "X-Aios-Agent: %s", user);
    h = curl_slist_append(h, agent_hdr);
    h = auth_header(h);
    if (a->interactive) {
        char ph[64];
        snprintf(ph, sizeof ph, "X-Aios-Priority: %d", o->inter_prio);
        h = curl_slist_append(h, ph);
    }
    curl_easy_setopt(c, CURLOPT_URL, a->chat_url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, txt);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, util_buf_sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 7200L);
    struct call_rec *r = &a->calls[turn];
    r->t_start = now_s();
    CURLcode cc = curl_easy_perform(c);
    r->t_end = now_s();
    curl_slist_free_all(h);
    free(txt);
    int rc = 0;
    if (cc != CURLE_OK) {
        snprintf(a->err, sizeof a->err, "%s", curl_easy_strerror(cc));
        rc = AIOS_EIO;
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    json_t *j = b.s ? json_loads(b.s, 0, NULL) : NULL;
    if (r->status != 200 || !j) {
        snprintf(a->err, sizeof a->err, "HTTP %ld: %.200s", r->status, b.s ? b.s : "");
        json_decref(j);
        rc = AIOS_EIO;
        goto out;
    }
    json_t *msg = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
    json_t *content = json_object_get(msg, "content");
    json_t *u = json_object_get(j, "usage");
    r->prompt = (int)json_integer_value(json_object_get(u, "prompt_tokens"));
    r->completion = (int)json_integer_value(json_object_get(u, "completion_tokens"));
    r->cached = (int)json_integer_value(
        json_object_get(json_object_get(u, "prompt_tokens_details"), "cached_tokens"));
    json_t *tm = json_object_get(j, "timings");
    if (json_is_object(tm)) {
        r->has_timings = true;
        r->prompt_ms = json_number_value(json_object_get(tm, "prompt_ms"));
        r->predicted_ms = json_number_value(json_object_get(tm, "predicted_ms"));
    }
    json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "assistant", "content",
                                          json_is_string(content) ? json_string_value(content) : ""));
    json_decref(j);
out:
    free(b.s);
    if (!a->interactive) __atomic_add_fetch(&g_calls_done, 1, __ATOMIC_RELAXED);
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double percentile(double *v, size_t n, double p)
{
    if (!n) return 0;
    double pos = p * (double)(n - 1);
    size_t i = (size_t)pos;
    double f = pos - (double)i;
    return i + 1 < n ? v[i] * (1 - f) + v[i + 1] * f : v[i];
}

/* the interactive agent's call number a->n_calls: a short question */
static int interactive_call(struct agent *a, CURL *c)
{
    char q[64];
    snprintf(q, sizeof q, "Quick question %d: what time is it?", a->n_calls);
    json_t *msgs = json_pack("[{s:s,s:s},{s:s,s:s}]", "role", "system", "content",
                             "You are a helpful assistant.", "role", "user", "content", q);
    if (!msgs) return AIOS_ENOMEM;
    if (agent_turn(a, c, msgs, a->n_calls)) a->n_errors++;
    a->n_calls++;
    json_decref(msgs);
    return 0;
}

/* p50 and p95 latency of the successful calls among calls[0..n_calls) */
static void call_percentiles(const struct call_rec *calls, int n_calls, double *p50, double *p95,
                             int *n)
{
    *p50 = *p95 = 0;
    *n = 0;
    double *il = calloc((size_t)(n_calls > 0 ? n_calls : 0) + 1, sizeof *il);
    if (!il) return;
    for (int i = 0; i < n_calls; i++)
        if (calls[i].status == 200) il[(*n)++] = calls[i].t_end - calls[i].t_start;
    qsort(il, (size_t)*n, sizeof *il, cmp_double);
    *p50 = percentile(il, (size_t)*n, 0.5);
    *p95 = percentile(il, (size_t)*n, 0.95);
    free(il);
}

/* one short high-priority call every inter_ms while the batch runs */
static void *interactive_main(void *p)
{
    struct agent *a = p;
    const struct bench_opts *o = a->o;
    CURL *c = curl_easy_init();
    /* at least one call, however fast the batch is */
    while (c && (a->n_calls == 0 || !__atomic_load_n(&g_batch_done, __ATOMIC_ACQUIRE)) &&
           a->n_calls < 100000) {
        double t0 = now_s();
        if (interactive_call(a, c)) break;
        double left = (double)o->inter_ms / 1000.0 - (now_s() - t0);
        if (left > 0) usleep((useconds_t)(left * 1e6));
    }
    if (c) curl_easy_cleanup(c);
    return NULL;
}

/* --kernel-tool: the tool time as a call of bench/wait on the kernel (the
 * agent's TOOL syscall) */
static int agent_tool(struct agent *a, CURL *c)
{
    char body[256];
    snprintf(body, sizeof body, "{\"agent_name\":\"agent-%d\",\"query_type\":\"tool\","
             "\"query_data\":{\"tool_calls\":[{\"name\":\"bench/wait\",\"parameters\":{}}]}}",
             a->idx);
    struct util_buf b = {0};
    struct curl_slist *h = auth_header(curl_slist_append(NULL, "Content-Type: application/json"));
    curl_easy_setopt(c, CURLOPT_URL, a->query_url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, util_buf_sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 7200L);
    CURLcode cc = curl_easy_perform(c);
    long st = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
    curl_slist_free_all(h);
    json_t *j = b.s ? json_loads(b.s, 0, NULL) : NULL;
    bool ok = cc == CURLE_OK && st == 200 &&
              json_is_true(json_object_get(json_object_get(j, "response"), "finished"));
    if (!ok) snprintf(a->err, sizeof a->err, "tool call: HTTP %ld: %.200s", st, b.s ? b.s : "");
    json_decref(j);
    free(b.s);
    return ok ? 0 : AIOS_EIO;
}

static void *agent_main(void *p)
{
    struct agent *a = p;
    const struct bench_opts *o = a->o;
    CURL *c = curl_easy_init();
    json_t *msgs = json_pack("[{s:s,s:s},{s:s,s:s}]", "role", "system", "content", a->system,
                             "role", "user", "content", a->task);
    if (!c || !msgs) {
        a->n_errors = o->n_turns;
        goto out;
    }
    for (int t = 0; t < o->n_turns; t++) {
        if (agent_turn(a, c, msgs, t)) {
            a->n_errors++;
            continue;
        }
        if (t + 1 == o->n_turns) break;
        if (o->tool_ms > 0 && o->kernel_tool) {
            if (agent_tool(a, c)) a->n_errors++;
        } else if (o->tool_ms > 0) {
            struct timespec ts = {o->tool_ms / 1000, (long)(o->tool_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
        char obs[8192] = "Observation: ";
        add_words(obs, sizeof obs, o->obs_words, &a->rng);
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", obs));
    }
out:
    a->t_done = now_s();
    json_decref(msgs);
    if (c) curl_easy_cleanup(c);
    return NULL;
}

/* ---- targets ---- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &l) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static pid_t start_llama_server(const struct bench_opts *o, const char *dir, int port)
{
    char log[4200], ts[16], cs[16], ps[16], np[16];
    snprintf(log, sizeof log, "%s/llama-server.log", dir);
    snprintf(ts, sizeof ts, "%d", o->threads);
    snprintf(cs, sizeof cs, "%d", o->ctx * o->slots);
    snprintf(ps, sizeof ps, "%d", port);
    snprintf(np, sizeof np, "%d", o->slots);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(o->server_bin, o->server_bin, "-m", o->server_model, "-t", ts, "-tb", ts, "-c", cs,
              "-np", np, "--port", ps, "--host", "127.0.0.1", "-b", "512", "-ub", "512",
              (char *)NULL);
        _exit(127);
    }
    return pid;
}

static bool wait_http_ok(const char *url, pid_t pid, int timeout_s)
{
    int64_t deadline = util_now_us() + (int64_t)timeout_s * 1000000;
    while (util_now_us() < deadline) {
        struct hc_resp r;
        if (hc_call("GET", url, NULL, 0, &r, 5) == 0 && r.status == 200) {
            hc_resp_free(&r);
            return true;
        }
        hc_resp_free(&r);
        int st;
        if (pid > 0 && waitpid(pid, &st, WNOHANG) == pid) return false;
        usleep(100000);
    }
    return false;
}

static char *first_model(const char *base)
{
    char url[512];
    snprintf(url, sizeof url, "%s/v1/models", base);
    struct hc_resp r;
    char *name = NULL;
    if (hc_call("GET", url, NULL, 0, &r, 30) == 0 && r.status == 200) {
        json_t *j = json_loadb(r.body, r.len, 0, NULL);
        json_t *id = json_object_get(json_array_get(json_object_get(j, "data"), 0), "id");
        if (json_is_string(id)) name = strdup(json_string_value(id));
        json_decref(j);
    }
    hc_resp_free(&r);
    return name;
}

/* ---- statistics ---- */

static void progress(int done, int total, bool final)
{
    static int last = -1;
    bool tty = isatty(2);
    if (!tty && !final && done / (total / 10 + 1) == last) return;
    last = done / (total / 10 + 1);
    int w = 30, fill = total ? done * w / total : w;
    char bar[64];
    for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
    bar[w] = 0;
    fprintf(stderr, "%s[%s] %d/%d calls  %.1fs%s", tty ? "\r" : "", bar, done, total, now_s(),
            tty && !final ? "" : "\n");
}

static void usage_bench(FILE *f)
{
    fprintf(f,
            "usage: aios bench agents [target] [workload] [--json]\n"
            "target (one of):\n"
            "  --kernel MODEL.gguf     start `aios serve` on it [--policy fifo|rr|fair] [--threads N]\n"
            "                          [--ctx N per sequence] [--slots N (n_parallel)] [--kv-size N]\n"
            "                          [--kv-type auto|f16|q8_0] [--batch-invariant on|off|seeded]\n"
            "  --llama-server MODEL.gguf  start llama.cpp's llama-server on it [--server-bin PATH]\n"
            "                          [--slots N (default: agents)] [--threads N] [--ctx N per slot]\n"
            "  --url URL               any OpenAI-compatible server [--model NAME]\n"
            "workload:\n"
            "  --agents N (8) --turns T (4) --sys-words S (600) --task-words W (30)\n"
            "  --obs-words O (40) --gen G (24) --tool-ms MS (0) --seed N (1)\n"
            "  --kernel-tool           (--kernel) the tool time is a call of a kernel tool that\n"
            "                          sleeps MS (the kernel sees the agent wait on a tool)\n"
            "  --request-seed          calls carry the seed (default: none; on aios a seeded\n"
            "                          call is batch invariant under batch_invariant: seeded)\n"
            "  --sequential            agents one after another (baseline)\n"
            "  --interactive-ms MS     plus an interactive agent: one short call every MS while\n"
            "                          the others run, with --interactive-priority P (10)\n");
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || !*s || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

/* the kernel's engine counters after the run (GET /status: models[0].engine;
 * steps, split_steps, prompt_tokens_tiled, ...), or NULL */
static json_t *engine_stats(const char *base)
{
    char url[600], auth[300];
    snprintf(url, sizeof url, "%s/status", base);
    const char *hdr[] = {bearer(auth, sizeof auth), NULL};
    struct hc_resp r;
    json_t *en = NULL;
    if (hc_call_h("GET", url, NULL, 0, hdr, &r, 30) == 0 && r.status == 200) {
        json_t *st = json_loadb(r.body, r.len, 0, NULL);
        en = json_incref(json_object_get(json_array_get(json_object_get(st, "models"), 0), "engine"));
        json_decref(st);
    }
    hc_resp_free(&r);
    return en;
}

static int bench_agents(int argc, char **argv)
{
    struct bench_opts o = {.policy = "fair", .threads = 2, .ctx = 4096, .slots = 0, .inter_prio = 10,
                           .n_agents = 8, .n_turns = 4, .sys_words = 600, .task_words = 30,
                           .obs_words = 40, .gen = 24, .seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int *iv = NULL, lo = 0, hi = 1 << 20;
        if (!strcmp(a, "--sequential")) { o.sequential = true; continue; }
        if (!strcmp(a, "--json")) { o.json = true; continue; }
        if (!strcmp(a, "--request-seed")) { o.request_seed = true; continue; }
        if (!strcmp(a, "--kernel-tool")) { o.kernel_tool = true; continue; }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage_bench(stdout); return 0; }
        if (!v) {
            fprintf(stderr, "aios bench agents: %s needs a value (or is unknown)\n", a);
            usage_bench(stderr);
            return 2;
        }
        if (!strcmp(a, "--kernel")) o.kernel_model = v;
        else if (!strcmp(a, "--llama-server")) o.server_model = v;
        else if (!strcmp(a, "--server-bin")) o.server_bin = v;
        else if (!strcmp(a, "--url")) o.url = v;
        else if (!strcmp(a, "--model")) o.model = v;
        else if (!strcmp(a, "--policy")) o.policy = v;
        else if (!strcmp(a, "--kv-type")) o.kv_type = v;
        else if (!strcmp(a, "--batch-invariant")) {
            if (strcmp(v, "on") && strcmp(v, "off") && strcmp(v, "seeded")) {
                fprintf(stderr, "aios bench agents: --batch-invariant takes on, off or seeded, "
                                "not '%s'\n", v);
                return 2;
            }
            o.batch_invariant = !strcmp(v, "on") ? "true" : !strcmp(v, "off") ? "false" : "\"seeded\"";
        }
        else if (!strcmp(a, "--out-dir")) o.out_dir = v;
        else if (!strcmp(a, "--threads")) iv = &o.threads, lo = 1, hi = 256;
        else if (!strcmp(a, "--ctx")) iv = &o.ctx, lo = 256;
        else if (!strcmp(a, "--slots")) iv = &o.slots, lo = 1, hi = 1024, o.slots_set = true;
        else if (!strcmp(a, "--kv-size")) iv = &o.kv_size, lo = 16;
        else if (!strcmp(a, "--agents")) iv = &o.n_agents, lo = 1, hi = 4096;
        else if (!strcmp(a, "--turns")) iv = &o.n_turns, lo = 1, hi = 1000;
        else if (!strcmp(a, "--sys-words")) iv = &o.sys_words, lo = 0, hi = 100000;
        else if (!strcmp(a, "--task-words")) iv = &o.task_words, lo = 0, hi = 1000;
        else if (!strcmp(a, "--obs-words")) iv = &o.obs_words, lo = 0, hi = 1000;
        else if (!strcmp(a, "--gen")) iv = &o.gen, lo = 1, hi = 100000;
        else if (!strcmp(a, "--tool-ms")) iv = &o.tool_ms, lo = 0, hi = 3600000;
        else if (!strcmp(a, "--interactive-ms")) iv = &o.inter_ms, lo = 0, hi = 3600000;
        else if (!strcmp(a, "--interactive-priority")) iv = &o.inter_prio, lo = -100, hi = 100;
        else if (!strcmp(a, "--seed")) {
            int s;
            if (parse_int(v, 0, 1 << 30, &s)) goto badnum;
            o.seed = (unsigned)s;
        } else {
            fprintf(stderr, "aios bench agents: unknown option '%s'\n", a);
            usage_bench(stderr);
            return 2;
        }
        if (iv && parse_int(v, lo, hi, iv)) {
        badnum:
            fprintf(stderr, "aios bench agents: %s must be a number%s, got '%s'\n", a,
                    iv ? "" : " >= 0", v);
            return 2;
        }
        i++;
    }
    int n_targets = !!o.kernel_model + !!o.server_model + !!o.url;
    if (n_targets != 1) {
        fprintf(stderr, "aios bench agents: give exactly one of --kernel MODEL.gguf, "
                        "--llama-server MODEL.gguf, --url URL\n");
        usage_bench(stderr);
        return 2;
    }
    if (strcmp(o.policy, "fifo") && strcmp(o.policy, "rr") && strcmp(o.policy, "fair")) {
        fprintf(stderr, "aios bench agents: --policy must be fifo, rr or fair\n");
        return 2;
    }
    if (!o.slots) o.slots = o.n_agents;

    int rc = 1;
    char dir[256] = "";
    char base[512] = "";
    struct aios_child child = {0};
    pid_t server_pid = 0;
    char *model = NULL, *sys_prompt = NULL;
    struct agent *ags = NULL;
    pthread_t *th = NULL;
    const char *target = "url";

    if (o.out_dir) snprintf(dir, sizeof dir, "%s", o.out_dir);
    else snprintf(dir, sizeof dir, "/tmp/aios-bench-XXXXXX");
    if (o.out_dir ? util_mkdirs(dir) != 0 : !mkdtemp(dir)) {
        fprintf(stderr, "aios bench agents: cannot create %s\n", dir);
        return 1;
    }
    if (o.kernel_model) {
        target = "aios";
        char *abs = realpath(o.kernel_model, NULL);
        if (!abs) {
            fprintf(stderr, "aios bench agents: --kernel %s: %s\n", o.kernel_model, strerror(errno));
            goto out;
        }
        char cfg[4300];
        snprintf(cfg, sizeof cfg, "%s/bench.yaml", dir);
        FILE *f = fopen(cfg, "w");
        if (!f) {
            free(abs);
            goto out;
        }
        fprintf(f, "llms:\n  models:\n    - name: bench\n      backend: llamacpp\n"
                   "      path: \"%s\"\n      n_ctx: %d\n      n_threads: %d\n", abs, o.ctx,
                o.threads);
        if (o.slots_set) fprintf(f, "      n_parallel: %d\n", o.slots);
        if (o.kv_size) fprintf(f, "      kv_size: %d\n", o.kv_size);
        if (o.kv_type) fprintf(f, "      kv_type: \"%s\"\n", o.kv_type);
        if (o.batch_invariant) fprintf(f, "      batch_invariant: %s\n", o.batch_invariant);
        fprintf(f, "scheduler:\n  policy: %s\n", o.policy);
        if (o.kernel_tool)
            fprintf(f, "tools:\n  external:\n    - name: bench/wait\n"
                       "      command: [/bin/sh, -c, \"sleep %d.%03d; echo '\\\"done\\\"'\"]\n"
                       "      timeout_ms: %d\n",
                    o.tool_ms / 1000, o.tool_ms % 1000, o.tool_ms * 4 + 10000);
        fclose(f);
        free(abs);
        char self[4096];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0) goto out;
        self[n] = 0;
        char data[4300];
        snprintf(data, sizeof data, "%s/data", dir);
        const char *extra[] = {"--config", cfg, NULL};
        if (child_start(&child, self, data, extra, 600)) {
            fprintf(stderr, "aios bench agents: the kernel did not start; see %s\n", child.log_path);
            goto out;
        }
        snprintf(base, sizeof base, "%s", child.base);
        snprintf(g_bench_token, sizeof g_bench_token, "%s", child.token);
    } else if (o.server_model) {
        target = "llama-server";
        if (!o.server_bin) {
            char *cache = util_cache_dir();
            static char path[4200];
            snprintf(path, sizeof path, "%s/llama.cpp-v0.5.0/server/bin/llama-server",
                     cache ? cache : ".");
            free(cache);
            o.server_bin = path;
        }
        if (access(o.server_bin, X_OK)) {
            fprintf(stderr, "aios bench agents: %s not found; build it with scripts/llama.sh "
                            "--server or pass --server-bin\n", o.server_bin);
            goto out;
        }
        int port = free_port();
        server_pid = start_llama_server(&o, dir, port);
        snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
        char health[600];
        snprintf(health, sizeof health, "%s/health", base);
        if (server_pid <= 0 || !wait_http_ok(health, server_pid, 600)) {
            fprintf(stderr, "aios bench agents: llama-server did not start; see %s/llama-server.log\n",
                    dir);
            goto out;
        }
    } else {
        snprintf(base, sizeof base, "%s", o.url);
        size_t l = strlen(base);
        while (l && base[l - 1] == '/') base[--l] = 0;
        if (l > 3 && !strcmp(base + l - 3, "/v1")) base[l - 3] = 0;
    }
    model = o.model ? strdup(o.model) : first_model(base);
    if (!model) {
        fprintf(stderr, "aios bench agents: %s/v1/models lists no model; pass --model\n", base);
        goto out;
    }
    char chat_url[600];
    snprintf(chat_url, sizeof chat_url, "%s/v1/chat/completions", base);
    char query_url[600];
    snprintf(query_url, sizeof query_url, "%s/query", base);
    if (o.kernel_tool && !o.kernel_model) {
        fprintf(stderr, "aios bench agents: --kernel-tool needs --kernel\n");
        goto out;
    }

    sys_prompt = make_system(o.sys_words, o.seed);
    ags = calloc((size_t)o.n_agents, sizeof *ags);
    th = calloc((size_t)o.n_agents, sizeof *th);
    if (!sys_prompt || !ags || !th) goto out;
    for (int i = 0; i < o.n_agents; i++) {
        struct agent *a = &ags[i];
        a->idx = i;
        a->o = &o;
        a->chat_url = chat_url;
        a->query_url = query_url;
        a->model = model;
        a->system = sys_prompt;
        a->rng = o.seed * 7919u + (unsigned)i * 104729u + 17u;
        snprintf(a->task, sizeof a->task, "Task %d: ", i);
        add_words(a->task, sizeof a->task, o.task_words, &a->rng);
        a->calls = calloc((size_t)o.n_turns, sizeof *a->calls);
        if (!a->calls) goto out;
    }

    /* the interactive agent's latency on the idle kernel first: the
     * baseline of its latency under load */
    double idle50 = 0, idle95 = 0;
    int n_idle = 0;
    if (o.inter_ms > 0) {
        struct agent idle = {.idx = -1, .o = &o, .chat_url = chat_url, .model = model,
                             .interactive = true};
        idle.calls = calloc(12, sizeof *idle.calls);
        CURL *c = curl_easy_init();
        g_t0_us = util_now_us();
        for (int i = 0; c && idle.calls && i < 12; i++) {
            if (interactive_call(&idle, c)) break;
            usleep(100000);
        }
        if (c) curl_easy_cleanup(c);
        /* the first two warm the kernel up; they are not counted */
        if (idle.n_calls > 2)
            call_percentiles(idle.calls + 2, idle.n_calls - 2, &idle50, &idle95, &n_idle);
        free(idle.calls);
    }

    int total = o.n_agents * o.n_turns;
    g_calls_done = 0;
    g_batch_done = 0;
    g_t0_us = util_now_us();
    struct agent inter = {.idx = -1, .o = &o, .chat_url = chat_url, .model = model,
                          .interactive = true};
    pthread_t inter_th;
    bool inter_on = false;
    if (o.inter_ms > 0) {
        inter.calls = calloc(100000, sizeof *inter.calls);
        inter_on = inter.calls && pthread_create(&inter_th, NULL, interactive_main, &inter) == 0;
    }
    if (o.sequential) {
        /* each agent on its own thread in turn, so the main thread can
         * draw progress */
        for (int i = 0; i < o.n_agents; i++) {
            if (pthread_create(&th[i], NULL, agent_main, &ags[i])) goto out;
            while (__atomic_load_n(&g_calls_done, __ATOMIC_RELAXED) < (i + 1) * o.n_turns) {
                progress(__atomic_load_n(&g_calls_done, __ATOMIC_RELAXED), total, false);
                usleep(200000);
            }
            pthread_join(th[i], NULL);
        }
    } else {
        for (int i = 0; i < o.n_agents; i++)
            if (pthread_create(&th[i], NULL, agent_main, &ags[i])) {
                fprintf(stderr, "aios bench agents: cannot start agent threads\n");
                for (int k = 0; k < i; k++) pthread_join(th[k], NULL);
                goto out;
            }
        while (__atomic_load_n(&g_calls_done, __ATOMIC_RELAXED) < total) {
            progress(__atomic_load_n(&g_calls_done, __ATOMIC_RELAXED), total, false);
            usleep(200000);
        }
        for (int i = 0; i < o.n_agents; i++) pthread_join(th[i], NULL);
    }
    progress(total, total, true);
    __atomic_store_n(&g_batch_done, 1, __ATOMIC_RELEASE);
    if (inter_on) pthread_join(inter_th, NULL);
    double ip50 = 0, ip95 = 0;
    int n_inter = 0;
    if (inter_on) call_percentiles(inter.calls, inter.n_calls, &ip50, &ip95, &n_inter);
    free(inter.calls);

    /* ---- results ---- */
    double makespan = 0;
    double *lat = calloc((size_t)total, sizeof *lat);
    double *done = calloc((size_t)o.n_agents, sizeof *done);
    if (!lat || !done) {
        free(lat);
        free(done);
        goto out;
    }
    int64_t prompt = 0, cached = 0, completion = 0;
    int n_lat = 0, n_err = 0, n_timed = 0;
    double prompt_ms = 0, predicted_ms = 0; /* summed over the calls with timings */
    double sx = 0, sxx = 0;
    for (int i = 0; i < o.n_agents; i++) {
        struct agent *a = &ags[i];
        n_err += a->n_errors;
        if (a->n_errors) fprintf(stderr, "agent %d: %d failed calls; last: %s\n", i, a->n_errors, a->err);
        for (int t = 0; t < o.n_turns; t++) {
            struct call_rec *r = &a->calls[t];
            if (r->status == 200) lat[n_lat++] = r->t_end - r->t_start;
            prompt += r->prompt;
            cached += r->cached;
            completion += r->completion;
            if (r->status == 200 && r->has_timings) {
                n_timed++;
                prompt_ms += r->prompt_ms;
                predicted_ms += r->predicted_ms;
            }
        }
        /* sequential: an agent's own time starts when its first call does */
        double start = o.sequential ? a->calls[0].t_start : 0;
        done[i] = a->t_done - start;
        if (a->t_done > makespan) makespan = a->t_done;
        double x = done[i] > 0 ? o.n_turns / done[i] : 0;
        sx += x;
        sxx += x * x;
    }
    qsort(lat, (size_t)n_lat, sizeof *lat, cmp_double);
    qsort(done, (size_t)o.n_agents, sizeof *done, cmp_double);
    double jain = sxx > 0 ? sx * sx / (o.n_agents * sxx) : 0;
    double p50 = percentile(lat, (size_t)n_lat, 0.5), p95 = percentile(lat, (size_t)n_lat, 0.95);
    double dmin = done[0], dmax = done[o.n_agents - 1];
    double dmed = percentile(done, (size_t)o.n_agents, 0.5);
    const char *mode = o.sequential ? "sequential" : "concurrent";
    const char *pol = o.kernel_model ? o.policy : "-";
    if (o.json) {
        json_t *j = json_pack(
            "{s:s,s:s,s:s,s:s,s:{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:b},s:f,s:{s:f,s:f},"
            "s:{s:f,s:f,s:f},s:f,s:{s:I,s:I,s:I,s:I},s:i,s:i}",
            "target", target, "url", base, "policy", pol, "mode", mode, "workload", "agents",
            o.n_agents, "turns", o.n_turns, "sys_words", o.sys_words, "task_words", o.task_words,
            "obs_words", o.obs_words, "gen", o.gen, "tool_ms", o.tool_ms, "seed", (int)o.seed,
            "request_seed", o.request_seed, "makespan_s", makespan, "latency_s", "p50", p50, "p95", p95, "agent_done_s", "min",
            dmin, "median", dmed, "max", dmax, "jain_fairness", jain, "tokens", "prompt",
            (json_int_t)prompt, "prompt_cached", (json_int_t)cached, "prompt_computed",
            (json_int_t)(prompt - cached), "completion", (json_int_t)completion, "calls", n_lat,
            "errors", n_err);
        if (n_timed)
            json_object_set_new(j, "timings", json_pack("{s:i,s:f,s:f}", "calls", n_timed,
                                                        "prompt_s", prompt_ms / 1000.0,
                                                        "predicted_s", predicted_ms / 1000.0));
        if (o.server_model) json_object_set_new(j, "slots", json_integer(o.slots));
        if (o.kernel_tool) json_object_set_new(j, "kernel_tool", json_true());
        if (o.kernel_model) {
            json_t *en = engine_stats(base);
            if (en) json_object_set_new(j, "engine", en);
        }
        if (inter_on)
            json_object_set_new(j, "interactive",
                                json_pack("{s:i,s:i,s:i,s:f,s:f,s:i,s:f,s:f,s:i,s:f}",
                                          "period_ms", o.inter_ms, "priority", o.inter_prio,
                                          "calls", n_inter, "p50_s", ip50, "p95_s", ip95,
                                          "errors", inter.n_errors, "idle_p50_s", idle50,
                                          "idle_p95_s", idle95, "idle_calls", n_idle,
                                          "p95_over_idle_p50", idle50 > 0 ? ip95 / idle50 : 0.0));
        char *s = json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        printf("%s\n", s ? s : "{}");
        free(s);
        json_decref(j);
    } else {
        printf("aios bench agents: %s, %s%s%s, %d agents x %d turns (S=%d O=%d G=%d tool=%dms%s)\n",
               mode, target, o.kernel_model ? " policy " : "", o.kernel_model ? o.policy : "",
               o.n_agents, o.n_turns, o.sys_words, o.obs_words, o.gen, o.tool_ms,
               o.kernel_tool ? " on the kernel" : "");
        printf("  %-28s %10.2f s\n", "makespan", makespan);
        printf("  %-28s %10.2f s\n", "call latency p50", p50);
        printf("  %-28s %10.2f s\n", "call latency p95", p95);
        printf("  %-28s %6.2f / %.2f / %.2f s\n", "agent done min/median/max", dmin, dmed, dmax);
        printf("  %-28s %10.3f\n", "Jain's fairness index", jain);
        printf("  %-28s %10lld\n", "prompt tokens", (long long)prompt);
        printf("  %-28s %10lld (%.0f%%)\n", "  computed", (long long)(prompt - cached),
               prompt ? 100.0 * (double)(prompt - cached) / (double)prompt : 0.0);
        printf("  %-28s %10lld\n", "  reused (cached)", (long long)cached);
        printf("  %-28s %10lld\n", "generated tokens", (long long)completion);
        printf("  %-28s %10d of %d\n", "calls ok", n_lat, total);
        if (n_timed) { /* the server's own timings, summed over its calls */
            printf("  %-28s %10.2f s over %d calls\n", "server: prompt (prefill)", prompt_ms / 1000.0,
                   n_timed);
            printf("  %-28s %10.2f s\n", "server: generation (decode)", predicted_ms / 1000.0);
        }
        if (inter_on) {
            printf("  %-28s %6.2f / %.2f s over %d calls (priority %d)\n",
                   "interactive p50/p95", ip50, ip95, n_inter, o.inter_prio);
            printf("  %-28s %6.2f / %.2f s over %d calls\n", "  on the idle kernel", idle50,
                   idle95, n_idle);
            printf("  %-28s %10.2fx\n", "  p95 loaded / p50 idle", idle50 > 0 ? ip95 / idle50 : 0.0);
        }
    }
    free(lat);
    free(done);
    rc = n_err ? 1 : 0;
out:
    if (child.pid > 0) child_stop(&child, 30);
    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        int st;
        for (int i = 0; i < 100 && waitpid(server_pid, &st, WNOHANG) == 0; i++) usleep(100000);
        kill(server_pid, SIGKILL);
        waitpid(server_pid, &st, 0);
    }
    if (ags)
        for (int i = 0; i < o.n_agents; i++) free(ags[i].calls);
    free(ags);
    free(th);
    free(sys_prompt);
    free(model);
    if (!o.out_dir && dir[0] && rc == 0) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    }
    return rc;
}

int cli_bench_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "agents")) {
        fprintf(stderr, "usage: aios bench agents [options]   (aios bench agents --help)\n");
        return 2;
    }
    const char *t = getenv("AIOS_TOKEN");
    if (t) snprintf(g_bench_token, sizeof g_bench_token, "%s", t);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = bench_agents(argc - 1, argv + 1);
    curl_global_cleanup();
    return rc;
}
