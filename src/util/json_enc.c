/* Compact JSON encoder for jansson values (see json_enc.h).
 *
 * Why: every answer of the HTTP API is a jansson tree turned into text,
 * and json_dumps cost about half of the HTTP side's instructions per
 * request (docs/performance.md, "Where the time goes"): it calls its
 * output callback once per token (a bounds-checked append each), checks
 * for cycles with a hash table keyed by the printed address of every
 * object and array, decodes every character of every string to a code
 * point, and prints every number with snprintf.
 *
 * What: the same bytes as json_dumps(v, JSON_COMPACT |
 * JSON_REAL_PRECISION(p)) of jansson 2.14, so that no answer changes:
 * keys in the object's iteration order (insertion order), strings escaped
 * as jansson escapes them ('"', '\\', \b \f \n \r \t, other control
 * characters as \u00XX with upper-case hex; '/' and non-ASCII as they
 * are), NULL for a string that is not valid UTF-8 by jansson's rules
 * (no overlong forms, no surrogates, nothing above U+10FFFF) and, for
 * such a key, jansson's partial text (it ignores the failure), integers
 * in decimal, reals as "%.*g" with ".0" added to a text with neither '.'
 * nor 'e' and the exponent without '+' and leading zeros, NULL for a
 * cycle (a container inside itself) and for a top level that is neither
 * an object nor an array. tests/unit/test_json_enc.c compares it with
 * json_dumps.
 *
 * How: one growable buffer. Strings are copied in runs of bytes that need
 * nothing (found 16 bytes at a time with SSE2, else a table lookup per
 * byte); only multi-byte UTF-8 sequences are decoded, to check them. Integers are printed by hand. A real is
 * rounded to its significant digits exactly with 128-bit integers: a
 * double is m * 2^e, and m * 2^e * 10^k as a quotient and remainder of
 * integers gives the digits and the rounding (to nearest, ties to even,
 * as glibc's printf does); values whose integers would not fit in 128 bits
 * (below about 1e-7 or above about 1e37, and subnormals) go through
 * snprintf. Cycles: the containers on the path from the top are kept in
 * a stack, searched only below depth CYCLE_FREE_DEPTH (a cycle makes the
 * path grow without end, so it is found there). */
#include "util/json_enc.h"
#include "util/util.h"

#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

enum { CYCLE_FREE_DEPTH = 32 };

struct enc {
    char *s;
    size_t len, cap;
    const json_t **path; /* containers from the top to the current one */
    size_t depth, path_cap;
    int precision;
};

static bool grow(struct enc *e, size_t n)
{
    size_t cap = e->cap ? e->cap : 256;
    while (cap - e->len < n) {
        if (cap > SIZE_MAX / 2) return false;
        cap *= 2;
    }
    char *s = realloc(e->s, cap);
    if (!s) return false;
    e->s = s;
    e->cap = cap;
    return true;
}

static inline bool reserve(struct enc *e, size_t n)
{
    return e->cap - e->len >= n || grow(e, n);
}

static inline bool put(struct enc *e, const char *p, size_t n)
{
    if (!reserve(e, n)) return false;
    memcpy(e->s + e->len, p, n);
    e->len += n;
    return true;
}

static inline bool put_c(struct enc *e, char c)
{
    if (!reserve(e, 1)) return false;
    e->s[e->len++] = c;
    return true;
}

/* 0: copied as is; 1: escaped; 2: first byte of a multi-byte sequence
 * (checked); 3: never valid as a first byte */
static const unsigned char k_class[256] = {
    /* 0x00-0x1f: control characters */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    /* 0x20-0x7f: '"' and '\\' */
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 0x80-0xbf: continuation bytes */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    /* 0xc0-0xc1 overlong, 0xc2-0xf4 leading bytes, 0xf5-0xff invalid */
    3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
};


/* the end of the run of bytes from i that are copied as they are */
static inline size_t plain_run(const unsigned char *p, size_t i, size_t n)
{
#ifdef __SSE2__
    /* 16 at a time: a byte below 0x20 or from 0x80 is below 0x20 as a
     * signed byte; '"' and '\\' compared as they are */
    const __m128i ctl = _mm_set1_epi8(0x20), quote = _mm_set1_epi8('"'),
                  bsl = _mm_set1_epi8('\\');
    while (n - i >= 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(p + i));
        __m128i hit = _mm_or_si128(_mm_cmplt_epi8(x, ctl),
                                   _mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, bsl)));
        int mask = _mm_movemask_epi8(hit);
        if (mask) return i + (size_t)__builtin_ctz((unsigned)mask);
        i += 16;
    }
#endif
    while (i < n && k_class[p[i]] == 0) i++;
    return i;
}

/* a string or (is_key) an object's key: jansson ignores a key's failure
 * and goes on after the text it wrote up to then (the opening quote and
 * what came before the last escape); the same bytes here */
static bool put_string(struct enc *e, const char *str, size_t n, bool is_key)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = (const unsigned char *)str;
    /* the common case: every byte copied, plus the quotes */
    if (!reserve(e, n + 2)) return false;
    e->s[e->len++] = '"';
    size_t mark = e->len; /* what jansson has written at a failure */
    size_t i = 0;
    while (i < n) {
        size_t run = plain_run(p, i, n);
        if (run > i) {
            if (!put(e, str + i, run - i)) return false;
            i = run;
            if (i == n) break;
        }
        unsigned char c = p[i];
        switch (k_class[c]) {
        case 1: {
            char esc[6] = {'\\', 0, 0, 0, 0, 0};
            size_t k = 2;
            switch (c) {
            case '"': esc[1] = '"'; break;
            case '\\': esc[1] = '\\'; break;
            case '\b': esc[1] = 'b'; break;
            case '\f': esc[1] = 'f'; break;
            case '\n': esc[1] = 'n'; break;
            case '\r': esc[1] = 'r'; break;
            case '\t': esc[1] = 't'; break;
            default:
                esc[1] = 'u';
                esc[2] = '0';
                esc[3] = '0';
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                k = 6;
            }
            if (!put(e, esc, k)) return false;
            mark = e->len;
            i++;
            break;
        }
        case 2: {
            size_t k = util_utf8_seq(p + i, n - i);
            if (!k) goto invalid;
            if (!put(e, str + i, k)) return false;
            i += k;
            break;
        }
        default:
            goto invalid;
        }
    }
    return put_c(e, '"');
invalid: /* not valid UTF-8 */
    if (!is_key) return false;
    e->len = mark;
    return true;
}

static size_t u64_text(char *out, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    return n;
}

static bool put_integer(struct enc *e, json_int_t v)
{
    char buf[24];
    size_t n = 0;
    uint64_t u = (uint64_t)v;
    if (v < 0) {
        buf[n++] = '-';
        u = 0 - u;
    }
    n += u64_text(buf + n, u);
    return put(e, buf, n);
}

/* ---- reals ---- */

typedef unsigned __int128 u128;

static const uint64_t k_pow10[20] = {
    1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL,
    100000000ULL, 1000000000ULL, 10000000000ULL, 100000000000ULL, 1000000000000ULL,
    10000000000000ULL, 100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL,
    100000000000000000ULL, 1000000000000000000ULL, 10000000000000000000ULL,
};

/* 10^k, k in [0, 38] */
static u128 pow10_u128(int k)
{
    assert(k >= 0 && k <= 38);
    return k < 20 ? k_pow10[k] : (u128)k_pow10[19] * k_pow10[k - 19];
}

static int bitlen(u128 v)
{
    uint64_t hi = (uint64_t)(v >> 64), lo = (uint64_t)v;
    if (hi) return 128 - __builtin_clzll(hi);
    return lo ? 64 - __builtin_clzll(lo) : 0;
}

/* bits of 10^k, k in [0, 38] */
static int bits10(int k) { return bitlen(pow10_u128(k)); }

/* *q = floor(m * 2^ex * 10^k), *up = whether rounding to nearest (ties
 * to even) goes up; false when an integer would not fit in 126 bits */
static bool scaled(uint64_t m, int ex, int k, u128 *q, bool *up)
{
    u128 num = m, den = 1;
    int nb = bitlen(num), db = 1;
    if (ex >= 0) {
        if (nb + ex > 126) return false;
        num <<= ex;
        nb += ex;
    } else {
        if (1 - ex > 126) return false;
        den <<= -ex;
        db = 1 - ex;
    }
    if (k >= 0) {
        if (k > 38 || nb + bits10(k) > 126) return false;
        num *= pow10_u128(k);
    } else {
        if (-k > 38 || db + bits10(-k) > 126) return false;
        den *= pow10_u128(-k);
    }
    u128 qq = num / den, r = num % den;
    *up = 2 * r > den || (2 * r == den && (qq & 1));
    *q = qq;
    return true;
}

/* jansson's clean-up of snprintf's "%.*g" (jsonp_dtostr) */
static int real_fallback(char *out, double v, int precision)
{
    int n = snprintf(out, JSON_ENC_REAL_MAX, "%.*g", precision, v);
    if (n < 0 || n >= JSON_ENC_REAL_MAX - 3) return -1;
    if (!strchr(out, '.') && !strchr(out, 'e')) {
        out[n++] = '.';
        out[n++] = '0';
        out[n] = 0;
    }
    char *start = strchr(out, 'e');
    if (start) {
        start++;
        char *end = start + 1;
        if (*start == '-') start++;
        while (*end == '0') end++;
        if (end != start) {
            memmove(start, end, (size_t)n - (size_t)(end - out) + 1);
            n -= (int)(end - start);
        }
    }
    return n;
}

int json_enc_real(char *out, double v, int precision)
{
    if (!isfinite(v)) return -1;
    int P = precision > 0 ? precision : 17;
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    bool neg = bits >> 63;
    int be = (int)((bits >> 52) & 0x7ff);
    uint64_t m = bits & ((1ULL << 52) - 1);
    size_t n = 0;
    if (be == 0 && m == 0) { /* "%g" gives "0", jansson adds ".0" */
        if (neg) out[n++] = '-';
        memcpy(out + n, "0.0", 4);
        return (int)n + 3;
    }
    if (be == 0 || P > 17) return real_fallback(out, v, P); /* subnormal, or long */
    m |= 1ULL << 52;
    int ex = be - 1075; /* |v| = m * 2^ex */
    /* decimal exponent E of |v|, first guess from the binary one, then
     * corrected so that the rounded digits number exactly P */
    int E = (int)floor((ex + 52) * 0.30102999566398120);
    u128 lo = pow10_u128(P - 1), hi = lo * 10, q = 0;
    bool up = false;
    for (int tries = 0;; tries++) {
        if (tries == 4 || !scaled(m, ex, P - 1 - E, &q, &up)) return real_fallback(out, v, P);
        if (q < lo) E--;
        else if (q >= hi) E++;
        else break;
    }
    q += up;
    if (q == hi) { /* rounded up to the next power of ten: one digit more */
        q = lo;
        E++;
    }
    char d[40];
    size_t nd = u64_text(d, (uint64_t)q);
    assert(nd == (size_t)P);
    while (nd > 1 && d[nd - 1] == '0') nd--; /* %g drops trailing zeros */
    if (neg) out[n++] = '-';
    if (E < -4 || E >= P) { /* d.ddde[-]X */
        out[n++] = d[0];
        if (nd > 1) {
            out[n++] = '.';
            memcpy(out + n, d + 1, nd - 1);
            n += nd - 1;
        }
        out[n++] = 'e';
        if (E < 0) out[n++] = '-';
        n += u64_text(out + n, (uint64_t)(E < 0 ? -E : E));
    } else if (E >= 0) { /* ddd.ddd, at least "d.0" */
        size_t ni = (size_t)E + 1;
        for (size_t i = 0; i < ni; i++) out[n++] = i < nd ? d[i] : '0';
        out[n++] = '.';
        if (nd > ni) {
            memcpy(out + n, d + ni, nd - ni);
            n += nd - ni;
        } else {
            out[n++] = '0';
        }
    } else { /* 0.000ddd */
        out[n++] = '0';
        out[n++] = '.';
        for (int i = 0; i < -E - 1; i++) out[n++] = '0';
        memcpy(out + n, d, nd);
        n += nd;
    }
    out[n] = 0;
    return (int)n;
}

/* ---- values ---- */

static bool enter(struct enc *e, const json_t *v)
{
    if (e->depth >= CYCLE_FREE_DEPTH)
        for (size_t i = 0; i < e->depth; i++)
            if (e->path[i] == v) return false; /* a cycle */
    if (e->depth == e->path_cap) {
        size_t cap = e->path_cap ? e->path_cap * 2 : 16;
        const json_t **p = realloc(e->path, cap * sizeof *p);
        if (!p) return false;
        e->path = p;
        e->path_cap = cap;
    }
    e->path[e->depth++] = v;
    return true;
}

static bool put_value(struct enc *e, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_NULL: return put(e, "null", 4);
    case JSON_TRUE: return put(e, "true", 4);
    case JSON_FALSE: return put(e, "false", 5);
    case JSON_INTEGER: return put_integer(e, json_integer_value(v));
    case JSON_REAL: {
        char buf[JSON_ENC_REAL_MAX];
        int n = json_enc_real(buf, json_real_value(v), e->precision);
        return n >= 0 && put(e, buf, (size_t)n);
    }
    case JSON_STRING: return put_string(e, json_string_value(v), json_string_length(v), false);
    case JSON_ARRAY: {
        if (!enter(e, v) || !put_c(e, '[')) return false;
        size_t n = json_array_size(v);
        for (size_t i = 0; i < n; i++) {
            if (i && !put_c(e, ',')) return false;
            if (!put_value(e, json_array_get(v, i))) return false;
        }
        e->depth--;
        return put_c(e, ']');
    }
    case JSON_OBJECT: {
        if (!enter(e, v) || !put_c(e, '{')) return false;
        bool first = true;
        for (void *it = json_object_iter((json_t *)v); it; it = json_object_iter_next((json_t *)v, it)) {
            if (!first && !put_c(e, ',')) return false;
            first = false;
            if (!put_string(e, json_object_iter_key(it), json_object_iter_key_len(it), true) ||
                !put_c(e, ':') || !put_value(e, json_object_iter_value(it)))
                return false;
        }
        e->depth--;
        return put_c(e, '}');
    }
    }
    return false;
}

char *json_enc_compact(const json_t *v, int real_precision, size_t extra, size_t *len)
{
    if (!v || (!json_is_object(v) && !json_is_array(v))) return NULL;
    struct enc e = {.precision = real_precision};
    bool ok = put_value(&e, v) && reserve(&e, 1 + extra);
    free(e.path);
    if (!ok) {
        free(e.s);
        return NULL;
    }
    e.s[e.len] = 0;
    if (len) *len = e.len;
    return e.s;
}
