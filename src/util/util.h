/* Clocks, file-system helpers, growable buffers, error strings,
 * percent-encoding, FNV-1a hashes and a repeatable pseudo-random
 * sequence shared by every module. */
#ifndef AIOS_UTIL_UTIL_H
#define AIOS_UTIL_UTIL_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

int64_t util_now_us(void);  /* monotonic microseconds */
struct timespec;
/* CLOCK_MONOTONIC now + ms, for pthread_cond_timedwait on a condition
 * variable made with that clock */
void util_mono_in_ms(struct timespec *out, long ms);
int64_t util_wall_us(void); /* wall-clock microseconds since the epoch */
/* wall_us (util_wall_us) as ISO 8601 UTC with microseconds,
 * "2026-12-07T05:15:54.123456Z", into buf (at least 32 bytes); buf */
char *util_iso_time(char *buf, size_t n, int64_t wall_us);
/* mkdir -p; 0 or AIOS_EIO */
int util_mkdirs(const char *path);
/* ${XDG_CACHE_HOME:-$HOME/.cache}/aios, malloc'd */
char *util_cache_dir(void);
/* Append n bytes to a growable, NUL-terminated buffer (*buf, *len, *cap),
 * doubling its capacity as needed. 0 or AIOS_ENOMEM (buffer unchanged). */
int util_buf_append(char **buf, size_t *len, size_t *cap, const void *data, size_t n);
/* Such a buffer as one struct (zero-initialised is empty; free(s)). */
struct util_buf {
    char *s;
    size_t len, cap;
};
/* A libcurl write callback (CURLOPT_WRITEFUNCTION) that appends to the
 * struct util_buf in ud; returns 0, which stops the transfer, when out of
 * memory. */
size_t util_buf_sink(char *p, size_t size, size_t nmemb, void *ud);

/* Marsaglia's xorshift64 (13, 7, 17): the next of a fixed sequence of
 * pseudo-random numbers from *state (not 0), for tests and benchmarks
 * that must repeat themselves; not for anything secret */
static inline uint64_t util_xorshift64(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

/* printf into err when err is non-NULL and errlen non-zero; returns rc, so
 * that `return util_errf(err, errlen, AIOS_EINVAL, "...", ...);` reports and
 * fails in one line. */
int util_errf(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Percent-encode s into out (outlen bytes with the NUL): bytes in
 * [A-Za-z0-9_-], and '.' anywhere but first, stay; every other byte becomes
 * %XX (so the result is never ".", ".." or hidden, and has no '/').
 * 0, or AIOS_EINVAL when out is too small. */
int util_pct_encode(const char *s, char *out, size_t outlen);

/* What snprintf(dst, cap, "%s", src) writes (cut to cap - 1 bytes,
 * NUL-terminated, "(null)" for NULL as glibc prints it), without the cost
 * of a format; cap > 0. */
void util_copy(char *dst, size_t cap, const char *src);

/* the length of the valid UTF-8 sequence at p (avail bytes there, p[0]
 * from 0x80), 0 if it is not one: a leading byte 0xc2-0xf4, continuation
 * bytes, no overlong form, no surrogate, at most U+10FFFF (jansson's
 * utf8_check_first and utf8_check_full) */
size_t util_utf8_seq(const unsigned char *p, size_t avail);

/* FNV-1a hashes of a NUL-terminated string */
uint32_t util_fnv1a32(const char *s);
uint32_t util_fnv1a32_n(const char *s, size_t n); /* the same of n bytes */
uint64_t util_fnv1a64(const char *s);

#endif
