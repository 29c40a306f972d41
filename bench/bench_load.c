/* Load driver for a running kernel: N keep-alive connections (default
 * 1000) on loopback for S seconds (default 60), each sending one request
 * after another (closed loop, optional think time). The mix (-m):
 *   all  GET /status, memory add_memory, memory retrieve_memory, storage
 *        write, storage read (the default; the last four through POST
 *        /query)
 *   mem  add_memory, get_memory (of the note the connection added last),
 *        retrieve_memory
 *   sto  storage write of a -b byte file (default 4096), storage read of it
 *   status  GET /status only: the HTTP side alone, no syscall is queued
 *   get  one add_memory, then nine get_memory of that note: the cost of a
 *        queued syscall that does next to nothing (a hit in RAM)
 * Connection i acts as agent "load<i mod A>" (-a A, default 16).
 * One thread and epoll, so the client costs little next to the kernel.
 * Prints requests/s, client latency p50/p99, kernel time p50/p99 per kind
 * (the answer's X-Aios-Kernel-Us header: from the whole request having
 * arrived to the answer being queued; the network and this client are not
 * in it), split into service (X-Aios-Service-Us: parsing, the access
 * check, the syscall's own run including the fsync it waits for, the
 * answer) and queue (X-Aios-Queue-Us: waiting for a worker, and for an
 * HTTP thread once the syscall finished), the syscall's run time p99
 * (end_times - start_times), errors (non-200
 * answers, closed or failed connections), and the kernel's RSS before and
 * after. With -f DIR it first and last measures the disk's floor: a 4 KiB
 * append plus fdatasync of a file in DIR (the kernel's data directory),
 * p50/p99 of 500 each.
 *
 * Usage: bench_load [-m all|mem|sto|status|get] [-a AGENTS] [-b BYTES] [-f DIR]
 *        PORT TOKEN_FILE [CONNS=1000] [SECONDS=60] [KERNEL_PID] [THINK_MS=0]
 * e.g.  d=$(mktemp -d); build/aios serve --port 0 --data-dir $d \
 *         --ready-file $d/ready & pid=$!
 *       (wait for $d/ready: it holds the port)
 *       build/bench/bench_load -f $d $(head -1 $d/ready) $d/admin.token 1000 60 $pid
 * Results and the exact commands: docs/performance.md ("Memory and storage
 * syscalls") and docs/reliability.md ("Load"). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { OP_STATUS, OP_MEM_ADD, OP_MEM_GET, OP_MEM_RETRIEVE, OP_STO_WRITE, OP_STO_READ, N_OPS };
static const char *k_op_name[N_OPS] = {"GET /status",     "memory add",    "memory get",
                                       "memory retrieve", "storage write", "storage read"};
static const int k_mix_all[] = {OP_STATUS, OP_MEM_ADD, OP_MEM_RETRIEVE, OP_STO_WRITE, OP_STO_READ};
static const int k_mix_mem[] = {OP_MEM_ADD, OP_MEM_GET, OP_MEM_RETRIEVE};
static const int k_mix_sto[] = {OP_STO_WRITE, OP_STO_READ};
static const int k_mix_status[] = {OP_STATUS};
static const int k_mix_get[] = {OP_MEM_ADD, OP_MEM_GET, OP_MEM_GET, OP_MEM_GET, OP_MEM_GET,
                                OP_MEM_GET, OP_MEM_GET, OP_MEM_GET, OP_MEM_GET, OP_MEM_GET};
static const int *g_mix = k_mix_all;
static size_t g_n_mix = sizeof k_mix_all / sizeof *k_mix_all;
static int g_agents = 16;
static size_t g_file_bytes = 0; /* storage content; 0: a short line */

struct samples {
    double *v;
    size_t n, cap;
};

static void sample_add(struct samples *s, double x)
{
    if (s->n == s->cap) {
        size_t c = s->cap ? s->cap * 2 : 4096;
        double *v = realloc(s->v, c * sizeof *v);
        if (!v) return;
        s->v = v;
        s->cap = c;
    }
    s->v[s->n++] = x;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(struct samples *s, double p)
{
    if (!s->n) return 0;
    size_t i = (size_t)(p * (double)(s->n - 1));
    return s->v[i];
}

struct conn {
    int fd, id;
    unsigned long seq;
    int op;
    char mem_id[64]; /* the note this connection added last (get_memory) */
    char req[16384];
    size_t req_len, req_off;
    char buf[65536];
    size_t n_buf;
    double t_sent, next_at;
    bool connected;
};

static struct samples g_lat[N_OPS], g_kern[N_OPS], g_svc[N_OPS], g_que[N_OPS], g_run[N_OPS];
static unsigned long g_ok[N_OPS], g_err_status[N_OPS], g_err_conn;
static char g_token[512];
static int g_port;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long rss_kib(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) v = strtol(line + 6, NULL, 10);
    fclose(f);
    return v;
}

/* n bytes of JSON-safe text for a file: words that change with seq */
static void file_text(char *out, size_t n, int id, unsigned long seq)
{
    size_t o = 0;
    while (o < n) {
        char w[64];
        int k = snprintf(w, sizeof w, "conn %d request %lu word %zu. ", id, seq, o);
        for (int i = 0; i < k && o < n; i++) out[o++] = w[i];
    }
    out[n] = 0;
}

static void build_request(struct conn *c)
{
    c->op = g_mix[c->seq % g_n_mix];
    if (c->op == OP_MEM_GET && !c->mem_id[0]) c->op = OP_MEM_RETRIEVE;
    static char body[12288], text[8192];
    int agent = c->id % g_agents;
    switch (c->op) {
    case OP_MEM_ADD:
        snprintf(body, sizeof body,
                 "{\"agent_name\":\"load%d\",\"query_type\":\"memory\",\"query_data\":{"
                 "\"operation_type\":\"add_memory\",\"params\":{\"content\":\"note %lu from "
                 "connection %d: the meeting about topic %lu moved to room %lu\"}}}",
                 agent, c->seq, c->id, c->seq % 97, c->seq % 13);
        break;
    case OP_MEM_GET:
        snprintf(body, sizeof body,
                 "{\"agent_name\":\"load%d\",\"query_type\":\"memory\",\"query_data\":{"
                 "\"operation_type\":\"get_memory\",\"params\":{\"memory_id\":\"%s\"}}}",
                 agent, c->mem_id);
        break;
    case OP_MEM_RETRIEVE:
        snprintf(body, sizeof body,
                 "{\"agent_name\":\"load%d\",\"query_type\":\"memory\",\"query_data\":{"
                 "\"operation_type\":\"retrieve_memory\",\"params\":{\"content\":\"meeting topic "
                 "%lu room\",\"k\":5}}}",
                 agent, c->seq % 97);
        break;
    case OP_STO_WRITE:
        if (g_file_bytes)
            file_text(text, g_file_bytes < sizeof text - 1 ? g_file_bytes : sizeof text - 1,
                      c->id, c->seq);
        else
            snprintf(text, sizeof text, "connection %d wrote this, request %lu", c->id, c->seq);
        snprintf(body, sizeof body,
                 "{\"agent_name\":\"load%d\",\"query_type\":\"storage\",\"query_data\":{"
                 "\"operation_type\":\"write\",\"params\":{\"file_path\":\"load/c%d.txt\","
                 "\"content\":\"%s\"}}}",
                 agent, c->id, text);
        break;
    case OP_STO_READ:
        snprintf(body, sizeof body,
                 "{\"agent_name\":\"load%d\",\"query_type\":\"storage\",\"query_data\":{"
                 "\"operation_type\":\"read\",\"params\":{\"file_path\":\"load/c%d.txt\"}}}",
                 agent, c->id);
        break;
    default:
        body[0] = 0;
    }
    if (c->op == OP_STATUS)
        c->req_len = (size_t)snprintf(c->req, sizeof c->req,
                                      "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                      "Authorization: Bearer %s\r\n\r\n",
                                      g_token);
    else
        c->req_len = (size_t)snprintf(c->req, sizeof c->req,
                                      "POST /query HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                      "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                                      "Content-Length: %zu\r\n\r\n%s",
                                      g_token, strlen(body), body);
    c->req_off = 0;
    c->n_buf = 0;
}

/* the disk's floor: 4 KiB appended to a file in dir and fdatasync'd, n
 * times; p50 and p99 in ms (0 when it could not be measured) */
static void fsync_floor(const char *dir, int n, double *p50, double *p99)
{
    *p50 = *p99 = 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/bench_load.fsync", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "fsync floor: cannot create %s\n", path);
        return;
    }
    char block[4096];
    memset(block, 'x', sizeof block);
    struct samples s = {0};
    for (int i = 0; i < n; i++) {
        double t = now_s();
        if (write(fd, block, sizeof block) != (ssize_t)sizeof block || fdatasync(fd) != 0) break;
        sample_add(&s, now_s() - t);
    }
    close(fd);
    unlink(path);
    qsort(s.v, s.n, sizeof(double), cmp_d);
    *p50 = pct(&s, 0.5) * 1e3;
    *p99 = pct(&s, 0.99) * 1e3;
    free(s.v);
}

static int open_conn(int ep, struct conn *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    c->connected = false;
    return 0;
}

static void want(int ep, struct conn *c, unsigned events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* a complete answer in c->buf: 1 (handled), 0 (need more), -1 (bad) */
static int take_answer(struct conn *c)
{
    c->buf[c->n_buf < sizeof c->buf ? c->n_buf : sizeof c->buf - 1] = 0;
    char *eoh = strstr(c->buf, "\r\n\r\n");
    if (!eoh) return c->n_buf >= sizeof c->buf - 1 ? -1 : 0;
    if (strncmp(c->buf, "HTTP/1.1 ", 9) != 0) return -1;
    const char *cl = strcasestr(c->buf, "\r\nContent-Length:");
    if (!cl || cl > eoh) return -1;
    size_t want_n = (size_t)strtoul(cl + 17, NULL, 10);
    size_t head = (size_t)(eoh + 4 - c->buf);
    if (head + want_n >= sizeof c->buf) return -1;
    if (c->n_buf < head + want_n) return 0;
    int status = atoi(c->buf + 9);
    double lat = now_s() - c->t_sent;
    if (status == 200) {
        g_ok[c->op]++;
        sample_add(&g_lat[c->op], lat);
        const char *kt = strcasestr(c->buf, "\r\nX-Aios-Kernel-Us:");
        if (kt && kt < eoh) sample_add(&g_kern[c->op], strtod(kt + 19, NULL) / 1e6);
        const char *sv = strcasestr(c->buf, "\r\nX-Aios-Service-Us:");
        if (sv && sv < eoh) sample_add(&g_svc[c->op], strtod(sv + 20, NULL) / 1e6);
        const char *qu = strcasestr(c->buf, "\r\nX-Aios-Queue-Us:");
        if (qu && qu < eoh) sample_add(&g_que[c->op], strtod(qu + 18, NULL) / 1e6);
        const char *st = strstr(eoh, "\"start_times\":[");
        const char *en = strstr(eoh, "\"end_times\":[");
        if (st && en) sample_add(&g_run[c->op], strtod(en + 13, NULL) - strtod(st + 15, NULL));
        const char *id = c->op == OP_MEM_ADD ? strstr(eoh, "\"memory_id\":\"") : NULL;
        if (id) {
            id += 13;
            size_t k = strcspn(id, "\"");
            if (k < sizeof c->mem_id) {
                memcpy(c->mem_id, id, k);
                c->mem_id[k] = 0;
            }
        }
    } else {
        if (g_err_status[c->op]++ < 5)
            fprintf(stderr, "%s answered %d: %.200s\n", k_op_name[c->op], status, eoh + 4);
    }
    /* keep-alive: nothing may follow an answer we did not ask for */
    if (c->n_buf != head + want_n) return -1;
    c->n_buf = 0;
    return 1;
}

int main(int argc, char **argv)
{
    const char *mix = "all", *fsync_dir = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "m:a:b:f:")) != -1) {
        switch (opt) {
        case 'm': mix = optarg; break;
        case 'a': g_agents = atoi(optarg); break;
        case 'b': g_file_bytes = (size_t)atol(optarg); break;
        case 'f': fsync_dir = optarg; break;
        default: argc = 0;
        }
    }
    if (!strcmp(mix, "mem")) {
        g_mix = k_mix_mem;
        g_n_mix = sizeof k_mix_mem / sizeof *k_mix_mem;
    } else if (!strcmp(mix, "sto")) {
        g_mix = k_mix_sto;
        g_n_mix = sizeof k_mix_sto / sizeof *k_mix_sto;
        if (!g_file_bytes) g_file_bytes = 4096;
    } else if (!strcmp(mix, "status")) {
        g_mix = k_mix_status;
        g_n_mix = 1;
    } else if (!strcmp(mix, "get")) {
        g_mix = k_mix_get;
        g_n_mix = sizeof k_mix_get / sizeof *k_mix_get;
    } else if (strcmp(mix, "all")) {
        argc = 0;
    }
    if (argc - optind < 2 || g_agents < 1 || g_file_bytes > 8000) {
        fprintf(stderr, "usage: %s [-m all|mem|sto|status|get] [-a AGENTS] [-b BYTES<=8000] [-f DIR] PORT "
                        "TOKEN_FILE [CONNS=1000] [SECONDS=60] [KERNEL_PID] [THINK_MS=0]\n",
                argv[0]);
        return 2;
    }
    argv += optind - 1;
    argc -= optind - 1;
    g_port = atoi(argv[1]);
    FILE *tf = fopen(argv[2], "r");
    if (!tf || !fgets(g_token, sizeof g_token, tf)) {
        fprintf(stderr, "cannot read the token from %s\n", argv[2]);
        return 2;
    }
    fclose(tf);
    g_token[strcspn(g_token, "\r\n")] = 0;
    int n_conns = argc > 3 ? atoi(argv[3]) : 1000;
    double seconds = argc > 4 ? atof(argv[4]) : 60;
    int pid = argc > 5 ? atoi(argv[5]) : 0;
    double think = argc > 6 ? atof(argv[6]) / 1000.0 : 0;
    if (n_conns < 1 || seconds <= 0) return 2;
    double f50a = 0, f99a = 0, f50b = 0, f99b = 0;
    if (fsync_dir) fsync_floor(fsync_dir, 500, &f50a, &f99a);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)n_conns + 64) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)n_conns + 64 ? rl.rlim_max : (rlim_t)n_conns + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    long rss0 = pid ? rss_kib(pid) : -1;
    int ep = epoll_create1(0);
    struct conn *cs = calloc((size_t)n_conns, sizeof *cs);
    if (ep < 0 || !cs) return 1;
    int n_open = 0;
    for (int i = 0; i < n_conns; i++) {
        cs[i].id = i;
        if (open_conn(ep, &cs[i]) == 0) n_open++;
        else g_err_conn++;
    }
    double t0 = now_s(), end = t0 + seconds;
    struct epoll_event evs[256];
    int max_open = 0, n_connected = 0;
    while (n_open > 0) {
        double t = now_s();
        bool stopping = t >= end;
        int n = epoll_wait(ep, evs, 256, 10);
        t = now_s();
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            bool broken = (evs[i].events & (EPOLLERR | EPOLLHUP)) != 0;
            if (!broken && !c->connected && (evs[i].events & EPOLLOUT)) {
                c->connected = true;
                if (++n_connected > max_open) max_open = n_connected;
                build_request(c);
                c->t_sent = t;
            }
            if (!broken && c->req_off < c->req_len && (evs[i].events & EPOLLOUT)) {
                ssize_t w = send(c->fd, c->req + c->req_off, c->req_len - c->req_off, MSG_NOSIGNAL);
                if (w < 0 && errno != EAGAIN) broken = true;
                else if (w > 0) c->req_off += (size_t)w;
                if (!broken && c->req_off == c->req_len) want(ep, c, EPOLLIN);
            }
            if (!broken && (evs[i].events & EPOLLIN)) {
                ssize_t r = recv(c->fd, c->buf + c->n_buf, sizeof c->buf - 1 - c->n_buf, 0);
                if (r == 0 || (r < 0 && errno != EAGAIN)) broken = true;
                else if (r > 0) {
                    c->n_buf += (size_t)r;
                    int a = take_answer(c);
                    if (a < 0) broken = true;
                    else if (a > 0) {
                        if (stopping) {
                            close(c->fd);
                            c->fd = -1;
                            n_open--;
                            n_connected--;
                            continue;
                        }
                        c->seq++;
                        build_request(c);
                        if (think > 0) {
                            c->next_at = t + think;
                            want(ep, c, 0);
                        } else {
                            c->t_sent = t;
                            want(ep, c, EPOLLOUT);
                        }
                    }
                }
            }
            if (broken) {
                g_err_conn++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                n_open--;
                if (c->connected) n_connected--;
            }
        }
        if (think > 0) /* connections whose think time is over */
            for (int i = 0; i < n_conns; i++)
                if (cs[i].fd >= 0 && cs[i].next_at > 0 && cs[i].next_at <= t) {
                    cs[i].next_at = 0;
                    cs[i].t_sent = t;
                    if (stopping) {
                        close(cs[i].fd);
                        cs[i].fd = -1;
                        n_open--;
                        n_connected--;
                    } else {
                        want(ep, &cs[i], EPOLLOUT);
                    }
                }
        if (stopping && now_s() > end + 30) break; /* answers that never came */
    }
    double el = now_s() - t0;
    if (fsync_dir) fsync_floor(fsync_dir, 500, &f50b, &f99b);
    unsigned long total = 0, errs = g_err_conn;
    for (int o = 0; o < N_OPS; o++) {
        total += g_ok[o];
        errs += g_err_status[o];
    }
    printf("connections %d (at most %d open at once), %.1f s, think %.0f ms\n", n_conns, max_open,
           el, think * 1000);
    printf("requests %lu ok, %.0f requests/s; errors %lu (non-200 answers %lu, failed or closed "
           "connections %lu)\n",
           total, (double)total / el, errs, errs - g_err_conn, g_err_conn);
    if (fsync_dir)
        printf("disk floor (4 KiB append + fdatasync in %s): p50 %.3f / p99 %.3f ms before, "
               "p50 %.3f / p99 %.3f ms after\n", fsync_dir, f50a, f99a, f50b, f99b);
    printf("times in ms: wall (client), kernel (X-Aios-Kernel-Us) = service (X-Aios-Service-Us)\n"
           "+ queue (X-Aios-Queue-Us), run (the syscall's end_times - start_times)\n");
    printf("%-16s %7s %9s %9s %9s %9s %9s %9s %9s %9s %9s\n", "kind", "ok", "wall p50",
           "wall p99", "kern p50", "kern p99", "serv p50", "serv p99", "queue p50", "queue p99",
           "run p99");
    for (int o = 0; o < N_OPS; o++) {
        if (!g_ok[o] && !g_err_status[o]) continue;
        struct samples *col[] = {&g_kern[o], &g_svc[o], &g_que[o], &g_run[o]};
        char v[4][2][32];
        for (int i = 0; i < 4; i++) {
            qsort(col[i]->v, col[i]->n, sizeof(double), cmp_d);
            for (int j = 0; j < 2; j++) {
                if (col[i]->n) snprintf(v[i][j], 32, "%.3f", pct(col[i], j ? 0.99 : 0.5) * 1e3);
                else snprintf(v[i][j], 32, "-");
            }
        }
        qsort(g_lat[o].v, g_lat[o].n, sizeof(double), cmp_d);
        printf("%-16s %7lu %9.2f %9.2f %9s %9s %9s %9s %9s %9s %9s\n", k_op_name[o], g_ok[o],
               pct(&g_lat[o], 0.5) * 1e3, pct(&g_lat[o], 0.99) * 1e3, v[0][0], v[0][1], v[1][0],
               v[1][1], v[2][0], v[2][1], v[3][1]);
    }
    if (pid) {
        sleep(1);
        printf("kernel RSS: %ld KiB before, %ld KiB after\n", rss0, rss_kib(pid));
    }
    for (int i = 0; i < n_conns; i++)
        if (cs[i].fd >= 0) close(cs[i].fd);
    free(cs);
    return errs ? 1 : 0;
}
