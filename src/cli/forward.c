/* `aios forward`: the first process of a launched agent's sandbox.
 *
 *   aios forward [--port P --socket PATH] -- PROGRAM ARGS...
 *
 * The agent factory (agents/agent.c) runs this inside bubblewrap as the
 * sandbox's pid 1 (bwrap --as-pid-1). It
 *   - starts PROGRAM (the agent) as its child, in a process group of its
 *     own, and exits with the agent's status (a signal S becomes exit
 *     code 128+S: a pid 1 cannot die of its own signal);
 *   - relays SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 from the
 *     kernel to the agent's process group (a pid 1 receives only signals it
 *     handles);
 *   - reaps every orphan (it is the namespace's init);
 *   - asks for SIGKILL when bwrap (its parent) dies;
 *   - with --port: listens on 127.0.0.1:P in the sandbox's own network
 *     namespace and copies each connection to a new connection on the Unix
 *     socket PATH, which the kernel made for this run alone and
 *     bind-mounted into the sandbox. The kernel knows the run from the
 *     socket a connection arrives on, so the agent needs no token.
 * One thread, one poll loop; at most MAX_PAIRS connections at once (more
 * wait in the listen backlog). Writes block: a peer that does not read
 * stalls only this agent's own forwarder. */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_PAIRS 64

static volatile sig_atomic_t g_child;

static void relay(int sig)
{
    if (g_child > 0) {
        kill(-g_child, sig);
        kill(g_child, sig);
    }
}

struct pair {
    int a, b;          /* a: the agent's TCP connection, b: the kernel's socket */
    bool a_eof, b_eof; /* read side ended */
};

static bool write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* copy what from has to to; false: the pair is done */
static bool pump(int from, int to, bool *eof)
{
    char buf[65536];
    ssize_t r = read(from, buf, sizeof buf);
    if (r < 0) return errno == EINTR || errno == EAGAIN;
    if (r == 0) {
        *eof = true;
        shutdown(to, SHUT_WR);
        return true;
    }
    return write_all(to, buf, (size_t)r);
}

static int listen_tcp(int port)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 64) != 0) {
        close(s);
        return -1;
    }
    return s;
}

static int connect_unix(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path) return -1;
    memcpy(a.sun_path, path, strlen(path) + 1);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
        close(s);
        return -1;
    }
    return s;
}

int cli_forward_main(int argc, char **argv)
{
    int port = 0, i = 1;
    const char *sock = NULL;
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc) port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--socket") && i + 1 < argc) sock = argv[++i];
        else if (!strcmp(argv[i], "--")) {
            i++;
            break;
        } else {
            fprintf(stderr, "aios forward: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (i >= argc || (port && !sock) || port < 0 || port > 65535) {
        fprintf(stderr, "usage: aios forward [--port P --socket PATH] -- PROGRAM ARGS...\n");
        return 2;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int lfd = -1;
    if (port && (lfd = listen_tcp(port)) < 0) {
        fprintf(stderr, "aios forward: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
        return 125;
    }
    /* The handlers are installed before the fork (the kernel sees them in
     * SigCgt and starts signalling), but the signals stay blocked until
     * g_child names the agent: one that arrives in between waits, pending,
     * instead of reaching a relay with nobody to relay to. */
    const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
    sigset_t block, old;
    sigemptyset(&block);
    for (size_t k = 0; k < sizeof sigs / sizeof sigs[0]; k++) sigaddset(&block, sigs[k]);
    sigprocmask(SIG_BLOCK, &block, &old);
    struct sigaction sa = {.sa_handler = relay, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    for (size_t k = 0; k < sizeof sigs / sizeof sigs[0]; k++) sigaction(sigs[k], &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    pid_t pid = fork();
    if (pid < 0) {
        perror("aios forward: fork");
        return 125;
    }
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* unsandboxed runs: no pid namespace to end it */
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        sigemptyset(&dfl.sa_mask);
        for (size_t k = 0; k < sizeof sigs / sizeof sigs[0]; k++) sigaction(sigs[k], &dfl, NULL);
        signal(SIGPIPE, SIG_DFL);
        sigprocmask(SIG_SETMASK, &old, NULL);
        execvp(argv[i], argv + i);
        fprintf(stderr, "aios forward: cannot run %s: %s\n", argv[i], strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid);
    g_child = pid;
    sigprocmask(SIG_SETMASK, &old, NULL); /* what waited is relayed now */
    struct pair pairs[MAX_PAIRS];
    size_t n = 0;
    int status = 0;
    for (;;) {
        /* reap: the agent, and orphans left to us as the namespace's init */
        pid_t w;
        bool done = false;
        while ((w = waitpid(-1, &status, WNOHANG)) > 0)
            if (w == pid) {
                done = true;
                break;
            }
        if (done) break;
        struct pollfd pf[1 + 2 * MAX_PAIRS];
        nfds_t np = 0;
        if (lfd >= 0 && n < MAX_PAIRS) pf[np++] = (struct pollfd){lfd, POLLIN, 0};
        size_t base = np;
        for (size_t k = 0; k < n; k++) {
            pf[np++] = (struct pollfd){pairs[k].a, pairs[k].a_eof ? 0 : POLLIN, 0};
            pf[np++] = (struct pollfd){pairs[k].b, pairs[k].b_eof ? 0 : POLLIN, 0};
        }
        int pr = poll(pf, np, 200);
        if (pr <= 0) continue;
        if (base && (pf[0].revents & POLLIN)) {
            int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
            if (c >= 0) {
                int k = connect_unix(sock);
                if (k < 0) {
                    close(c); /* the kernel is gone or the run ended */
                } else {
                    pairs[n++] = (struct pair){c, k, false, false};
                }
            }
        }
        for (size_t k = 0; k < n && base + 2 * k + 1 < np; k++) {
            struct pair *p = &pairs[k];
            short ra = pf[base + 2 * k].revents, rb = pf[base + 2 * k + 1].revents;
            bool ok = true;
            if (ra & (POLLIN | POLLHUP)) ok = pump(p->a, p->b, &p->a_eof);
            if (ok && (rb & (POLLIN | POLLHUP))) ok = pump(p->b, p->a, &p->b_eof);
            if ((ra | rb) & POLLERR) ok = false;
            /* a side that ended its reads and hung up is gone for good */
            if ((p->a_eof && (ra & POLLHUP)) || (p->b_eof && (rb & POLLHUP))) ok = false;
            if (!ok || (p->a_eof && p->b_eof)) {
                close(p->a);
                close(p->b);
                p->a = -1;
            }
        }
        /* drop closed pairs (after the loop: pf indexes follow pairs) */
        size_t m = 0;
        for (size_t k = 0; k < n; k++)
            if (pairs[k].a >= 0) pairs[m++] = pairs[k];
        n = m;
    }
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}
