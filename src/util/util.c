/* Small shared helpers: error strings, logging, monotonic and wall clocks,
 * growable buffers, percent-encoding and FNV-1a hashes.
 *
 * Logging writes each line with one write(2) so lines from the HTTP threads
 * and the engine thread never interleave; no lock is needed. The level is a
 * process global set once at start-up (AIOS_LOG or log_set_level). */
#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

const char *aios_strerror(int err)
{
    switch (err) {
    case AIOS_OK: return "ok";
    case AIOS_EINVAL: return "invalid argument";
    case AIOS_ENOMEM: return "out of memory";
    case AIOS_EIO: return "input/output error";
    case AIOS_ENOTFOUND: return "not found";
    case AIOS_ETOOBIG: return "too large";
    case AIOS_EBUSY: return "busy";
    case AIOS_ESHUTDOWN: return "shutting down";
    case AIOS_ECANCELLED: return "cancelled";
    case AIOS_EENGINE: return "engine error";
    case AIOS_EPERM: return "permission denied";
    case AIOS_ECONFIG: return "configuration error";
    case AIOS_ENOSPC: return "no space left on the disk";
    default: return "unknown error";
    }
}

static int g_level = -1;

void log_set_level(enum log_level lvl) { g_level = (int)lvl; }

enum log_level log_get_level(void)
{
    if (g_level < 0) {
        const char *e = getenv("AIOS_LOG");
        g_level = LOG_LEVEL_INFO;
        if (e) {
            if (!strcasecmp(e, "debug")) g_level = LOG_LEVEL_DEBUG;
            else if (!strcasecmp(e, "warn")) g_level = LOG_LEVEL_WARN;
            else if (!strcasecmp(e, "error")) g_level = LOG_LEVEL_ERROR;
        }
    }
    return (enum log_level)g_level;
}

static _Thread_local const char *tl_request_id;

const char *log_set_request_id(const char *id)
{
    const char *prev = tl_request_id;
    tl_request_id = id && *id ? id : NULL;
    return prev;
}

const char *log_request_id(void) { return tl_request_id; }

void log_msg(enum log_level lvl, const char *mod, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if ((int)lvl < (int)log_get_level()) return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %-6s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, names[lvl], mod);
    if (tl_request_id && n > 0 && (size_t)n < sizeof line / 2)
        n += snprintf(line + n, sizeof line - (size_t)n, "request_id=%s ", tl_request_id);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2) len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void util_mono_in_ms(struct timespec *out, long ms)
{
    clock_gettime(CLOCK_MONOTONIC, out);
    out->tv_sec += ms / 1000;
    out->tv_nsec += (ms % 1000) * 1000000L;
    if (out->tv_nsec >= 1000000000L) {
        out->tv_sec++;
        out->tv_nsec -= 1000000000L;
    }
}

int64_t util_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t util_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

char *util_iso_time(char *buf, size_t n, int64_t wall_us)
{
    time_t t = (time_t)(wall_us / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(buf, n, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(wall_us % 1000000));
    return buf;
}

int util_mkdirs(const char *path)
{
    char tmp[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof tmp) return AIOS_EINVAL;
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return AIOS_EIO;
            *p = '/';
        }
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return AIOS_EIO;
    return 0;
}

char *util_cache_dir(void)
{
    const char *x = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    char buf[4096];
    if (x && *x) snprintf(buf, sizeof buf, "%s/aios", x);
    else if (home && *home) snprintf(buf, sizeof buf, "%s/.cache/aios", home);
    else snprintf(buf, sizeof buf, "/tmp/aios-cache");
    return strdup(buf);
}

int util_buf_append(char **buf, size_t *len, size_t *cap, const void *data, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 256;
        while (c < *len + n + 1) c *= 2;
        char *p = realloc(*buf, c);
        if (!p) return AIOS_ENOMEM;
        *buf = p;
        *cap = c;
    }
    if (n) memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

size_t util_buf_sink(char *p, size_t size, size_t nmemb, void *ud)
{
    struct util_buf *b = ud;
    size_t n = size * nmemb;
    return util_buf_append(&b->s, &b->len, &b->cap, p, n) ? 0 : n;
}

int util_errf(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

int util_pct_encode(const char *s, char *out, size_t outlen)
{
    static const char hx[] = "0123456789ABCDEF";
    size_t o = 0;
    if (!outlen) return AIOS_EINVAL;
    for (size_t i = 0; s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || (c == '.' && i > 0);
        if (o + (keep ? 1 : 3) >= outlen) return AIOS_EINVAL;
        if (keep) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hx[c >> 4];
            out[o++] = hx[c & 15];
        }
    }
    out[o] = 0;
    return 0;
}

uint32_t util_fnv1a32(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

size_t util_utf8_seq(const unsigned char *p, size_t avail)
{
    unsigned char u = p[0];
    if (u < 0xc2 || u > 0xf4) return 0;
    size_t n = u <= 0xdf ? 2 : u <= 0xef ? 3 : 4;
    if (n > avail) return 0;
    uint32_t v = u & (n == 2 ? 0x1f : n == 3 ? 0x0f : 0x07);
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        v = (v << 6) | (p[i] & 0x3f);
    }
    if (v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
    if ((n == 3 && v < 0x800) || (n == 4 && v < 0x10000)) return 0; /* overlong */
    return n;
}

uint32_t util_fnv1a32_n(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

uint64_t util_fnv1a64(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

void util_copy(char *dst, size_t cap, const char *src)
{
    if (!src) src = "(null)";
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = 0;
}
