/* Storage manager throughput against plain files on the same disk.
 *
 *   build/bench/bench_storage [--dir DIR] [--n-small N] [--n-large M] [--n-search F]
 *
 * Writes N files of 4 KiB and M files of 1 MiB through sto_exec (the parse
 * the /query edge does and the sto_do the storage executor runs; no HTTP), rotating over 16
 * paths so histories fill up to max_versions, then reads them back. The
 * baselines do the same I/O with plain POSIX calls in DIR:
 *   plain+fsync   open, write, fsync, close (not atomic: a crash can tear it)
 *   atomic        temp file, write, fsync, rename, fsync of the directory
 *                 (what the storage manager does for the file itself)
 *   read          open, read, close
 * Each ratio is storage time / baseline time (lower is better; 1.0 = as
 * fast as the baseline). Contents are prose-like text, different for every
 * write, so dedup does not help; the search index sees every write. Results go to stdout as a table.
 *
 * --n-search F (default 0: skipped) then writes F distinct 4 KiB files and
 * times 200 retrieve calls (k = 5) for two words each, drawn with the same
 * skew as the text, so common words match most files: p50 and p99. */
#include "storage/storage.h"
#include "util/util.h"

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_vocab[4096][12];

/* prose-like text: words from a 4096-word vocabulary with a skewed
 * (roughly Zipf) choice, so the search index sees realistic term counts */
static void fill(char *buf, size_t n, unsigned seed)
{
    uint32_t x = seed * 2654435761u + 1;
    if (!g_vocab[0][0])
        for (int w = 0; w < 4096; w++) {
            uint32_t y = (uint32_t)w * 40503u + 7;
            int len = 3 + (int)(y % 8);
            for (int i = 0; i < len; i++) {
                y = y * 1103515245u + 12345u;
                g_vocab[w][i] = (char)('a' + (y >> 16) % 26);
            }
            g_vocab[w][len] = 0;
        }
    size_t o = 0;
    while (o < n) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        uint32_t r = x % 4096;
        const char *w = g_vocab[(r * r) / 4096]; /* skewed to low ids */
        for (const char *p = w; *p && o < n; p++) buf[o++] = *p;
        if (o < n) buf[o++] = ' ';
    }
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static double plain_write(const char *dir, int i, const char *buf, size_t n, bool atomic)
{
    char path[4300], tmp[4400];
    snprintf(path, sizeof path, "%s/f%02d", dir, i % 16);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int64_t t0 = util_now_us();
    int fd = open(atomic ? tmp : path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) die("open");
    if (write(fd, buf, n) != (ssize_t)n) die("write");
    if (fsync(fd)) die("fsync");
    close(fd);
    if (atomic) {
        if (rename(tmp, path)) die("rename");
        int d = open(dir, O_RDONLY | O_DIRECTORY);
        if (d < 0 || fsync(d)) die("fsync dir");
        close(d);
    }
    return (double)(util_now_us() - t0);
}

static double plain_read(const char *dir, int i, char *buf, size_t n)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/f%02d", dir, i % 16);
    int64_t t0 = util_now_us();
    int fd = open(path, O_RDONLY);
    if (fd < 0) die("open");
    size_t got = 0;
    ssize_t r;
    while ((r = read(fd, buf + got, n - got)) > 0) got += (size_t)r;
    close(fd);
    return (double)(util_now_us() - t0);
}

static double sto_op(struct sto *s, const char *op, int i, const char *buf, size_t n)
{
    char path[64], err[1536];
    snprintf(path, sizeof path, i >= 16 ? "s%05d" : "f%02d", i);
    json_t *p = json_pack("{s:s}", "file_path", path);
    if (buf) json_object_set_new(p, "content", json_stringn(buf, n));
    json_t *out = NULL;
    int http;
    int64_t t0 = util_now_us();
    int rc = sto_exec(s, "bench", op, p, &out, &http, err, sizeof err);
    double us = (double)(util_now_us() - t0);
    if (rc) {
        fprintf(stderr, "%s: %d %s\n", op, http, err);
        exit(1);
    }
    json_decref(out);
    json_decref(p);
    return us;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void search_bench(struct sto *s, int n_files, char *buf)
{
    double tw = 0;
    for (int i = 0; i < n_files; i++) {
        fill(buf, 4096, (unsigned)(500000 + i));
        tw += sto_op(s, "write", 16 + i, buf, 4096);
    }
    enum { N_Q = 200 };
    static double lat[N_Q];
    uint32_t x = 12345;
    for (int q = 0; q < N_Q; q++) {
        char text[64] = "";
        for (int w = 0; w < 2; w++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            uint32_t r = x % 4096;
            strcat(text, g_vocab[(r * r) / 4096]);
            strcat(text, " ");
        }
        json_t *p = json_pack("{s:s,s:i}", "query_text", text, "k", 5);
        json_t *out = NULL;
        int http;
        char err[1536];
        int64_t t0 = util_now_us();
        if (sto_exec(s, "bench", "retrieve", p, &out, &http, err, sizeof err)) {
            fprintf(stderr, "retrieve: %d %s\n", http, err);
            exit(1);
        }
        lat[q] = (double)(util_now_us() - t0);
        json_decref(out);
        json_decref(p);
    }
    qsort(lat, N_Q, sizeof *lat, cmp_double);
    printf("search: %d files of 4 KiB (written in %.1f s), %d retrieve calls (2 words, k 5): "
           "p50 %.0f us, p99 %.0f us\n", n_files, tw / 1e6, N_Q, lat[N_Q / 2],
           lat[(int)ceil(N_Q * 0.99) - 1]);
}

int main(int argc, char **argv)
{
    const char *dir = "bench-data";
    int n_small = 200, n_large = 30, n_search = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--n-small") && i + 1 < argc) n_small = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--n-large") && i + 1 < argc) n_large = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--n-search") && i + 1 < argc) n_search = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--dir DIR] [--n-small N] [--n-large M] [--n-search F]\n",
                    argv[0]);
            return 2;
        }
    }
    char base[4096], plain[4200], root[4200], cmd[8600];
    snprintf(base, sizeof base, "%s/bench-storage-%d", dir, (int)getpid());
    snprintf(plain, sizeof plain, "%s/plain", base);
    snprintf(root, sizeof root, "%s/root", base);
    if (util_mkdirs(plain)) die("mkdir");
    struct sto_config c = {.root_dir = root, .max_versions = 20, .quota_bytes = 0, .quota_files = 0,
                           .max_file_bytes = 2 << 20, .n_threads = 1};
    struct sto *s;
    char err[512];
    if (sto_open(&s, &c, err, sizeof err)) {
        fprintf(stderr, "sto_open: %s\n", err);
        return 1;
    }
    printf("storage benchmark in %s (machine shared; single thread; no HTTP)\n", base);
    printf("%-8s %-6s %6s %12s %12s %12s %10s %10s\n", "size", "op", "n", "storage/s", "plain+fsync/s",
           "atomic/s", "vs fsync", "vs atomic");
    const size_t sizes[2] = {4096, 1 << 20};
    const int counts[2] = {n_small, n_large};
    char *buf = malloc((1 << 20) + 1);
    for (int k = 0; k < 2; k++) {
        size_t n = sizes[k];
        int cnt = counts[k];
        double ts = 0, tp = 0, ta = 0, rs = 0, rp = 0;
        for (int i = 0; i < cnt; i++) {
            fill(buf, n, (unsigned)(k * 100000 + i));
            ts += sto_op(s, "write", i % 16, buf, n);
            tp += plain_write(plain, i, buf, n, false);
            ta += plain_write(plain, i, buf, n, true);
        }
        for (int i = 0; i < cnt; i++) {
            rs += sto_op(s, "read", i % 16, NULL, 0);
            rp += plain_read(plain, i, buf, n);
        }
        const char *label = k == 0 ? "4KiB" : "1MiB";
        printf("%-8s %-6s %6d %12.1f %12.1f %12.1f %10.2f %10.2f\n", label, "write", cnt,
               cnt / (ts / 1e6), cnt / (tp / 1e6), cnt / (ta / 1e6), ts / tp, ts / ta);
        printf("%-8s %-6s %6d %12.1f %12.1f %12s %10.2f %10s\n", label, "read", cnt,
               cnt / (rs / 1e6), cnt / (rp / 1e6), "-", rs / rp, "-");
        printf("%-8s %-6s        mean write latency: storage %.2f ms, plain+fsync %.2f ms, atomic %.2f ms\n",
               label, "", ts / cnt / 1e3, tp / cnt / 1e3, ta / cnt / 1e3);
    }
    if (n_search > 0) search_bench(s, n_search, buf);
    free(buf);
    sto_close(s);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", base);
    return 0;
}
