/* JSON request bodies parsed in a fraction of jansson's instructions,
 * with jansson's result (see json_dec.h).
 *
 * Why: every POST body is parsed once (by the access gate), and
 * jansson's lexer reads it a byte at a time through a callback, checks
 * each byte's UTF-8 class, saves each byte into a growing buffer and
 * then copies each string a second time to undo its escapes: about 75
 * instructions per byte, 600k for a 4 KiB storage write
 * (docs/performance.md, "Where the time goes").
 *
 * What: a parser of the JSON grammar exactly as jansson 2.14 accepts it
 * (top level an object or an array; whitespace ' ', \t, \n, \r; strings
 * of valid UTF-8 by jansson's rules with the escapes \" \\ \/ \b \f \n \r
 * \t \uXXXX and surrogate pairs; numbers -?(0|[1-9][0-9]*)(.[0-9]+)?
 * ([eE][+-]?[0-9]+)?, integers when they have neither fraction nor
 * exponent; true, false, null) that builds the same tree jansson builds:
 * keys in the order they come, integers as json_integer, other numbers as
 * json_real of strtod of the same text (as jansson's jsonp_strtod), strings
 * by their bytes. It never decides a failure: at anything it does not
 * take (any error, a duplicate key, \u0000, an integer of 19 digits or
 * more, a real that overflows, nesting deeper than MAX_DEPTH, flags other
 * than JSON_REJECT_DUPLICATES) it gives the whole input to json_loadb,
 * so errors, their messages and positions are jansson's. On success err
 * is set as jansson sets it. tests/unit/test_json_dec.c compares the two
 * on generated, mutated and hand-made inputs.
 *
 * How: one pass over the bytes; runs of plain string bytes are found 16
 * at a time (SSE2) and copied once into the json_t; strings with escapes
 * are decoded into a buffer first. */
#include "util/json_dec.h"
#include "util/util.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

enum { MAX_DEPTH = 512 };

struct dec {
    const unsigned char *p, *end;
    int depth;
    char *tmp; /* a string's decoded bytes, when it has escapes */
    size_t tmp_cap;
};

static inline void skip_ws(struct dec *d)
{
    while (d->p < d->end && (*d->p == ' ' || *d->p == '\n' || *d->p == '\r' || *d->p == '\t'))
        d->p++;
}

/* after an object member or an array element: the closing byte (0, taken),
 * a comma and the next item's start (1), or anything else (-1) */
static int after_item(struct dec *d, char close)
{
    skip_ws(d);
    if (d->p == d->end) return -1;
    if (*d->p == close) {
        d->p++;
        return 0;
    }
    if (*d->p != ',') return -1;
    d->p++;
    skip_ws(d);
    return 1;
}


/* from p, the first byte that is not plain ASCII string content (a
 * control character, '"', '\\' or a byte >= 0x80), or end */
static inline const unsigned char *plain_run(const unsigned char *p, const unsigned char *end)
{
#ifdef __SSE2__
    const __m128i ctl = _mm_set1_epi8(0x20), quote = _mm_set1_epi8('"'), bsl = _mm_set1_epi8('\\');
    while (end - p >= 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)p);
        __m128i hit = _mm_or_si128(_mm_cmplt_epi8(x, ctl),
                                   _mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, bsl)));
        int mask = _mm_movemask_epi8(hit);
        if (mask) return p + __builtin_ctz((unsigned)mask);
        p += 16;
    }
#endif
    while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\') p++;
    return p;
}

static int hex4(const unsigned char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int c = p[i], h;
        if (c >= '0' && c <= '9') h = c - '0';
        else if (c >= 'a' && c <= 'f') h = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') h = c - 'A' + 10;
        else return -1;
        v = v << 4 | h;
    }
    return v;
}

static bool tmp_room(struct dec *d, size_t n)
{
    if (n <= d->tmp_cap) return true;
    size_t cap = d->tmp_cap ? d->tmp_cap : 256;
    while (cap < n) cap *= 2;
    char *t = realloc(d->tmp, cap);
    if (!t) return false;
    d->tmp = t;
    d->tmp_cap = cap;
    return true;
}

/* the string whose opening quote d->p is at: its bytes in *s, *n (inside
 * the input when it has no escape, else in d->tmp); false to hand over */
static bool string_at(struct dec *d, const char **s, size_t *n)
{
    const unsigned char *start = ++d->p, *q = start;
    /* plain bytes and valid multi-byte characters, up to the end or an escape */
    for (;;) {
        q = plain_run(q, d->end);
        if (q == d->end) return false;
        if (*q == '"') {
            *s = (const char *)start;
            *n = (size_t)(q - start);
            d->p = q + 1;
            return true;
        }
        if (*q >= 0x80) {
            size_t k = util_utf8_seq(q, (size_t)(d->end - q));
            if (!k) return false;
            q += k;
            continue;
        }
        if (*q != '\\') return false; /* a control character */
        break;
    }
    /* escapes: decode into tmp; the result is never longer than the rest
     * of the input */
    size_t w = (size_t)(q - start);
    if (!tmp_room(d, (size_t)(d->end - start) + 1)) return false;
    memcpy(d->tmp, start, w);
    while (q < d->end) {
        const unsigned char *r = plain_run(q, d->end);
        memcpy(d->tmp + w, q, (size_t)(r - q));
        w += (size_t)(r - q);
        q = r;
        if (q == d->end) return false;
        if (*q == '"') {
            *s = d->tmp;
            *n = w;
            d->p = q + 1;
            return true;
        }
        if (*q >= 0x80) {
            size_t k = util_utf8_seq(q, (size_t)(d->end - q));
            if (!k) return false;
            memcpy(d->tmp + w, q, k);
            w += k;
            q += k;
            continue;
        }
        if (*q != '\\' || d->end - q < 2) return false;
        char c;
        switch (q[1]) {
        case '"': c = '"'; break;
        case '\\': c = '\\'; break;
        case '/': c = '/'; break;
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        case 'u': {
            if (d->end - q < 6) return false;
            int32_t v = hex4(q + 2);
            if (v <= 0) return false; /* bad hex, or \u0000 (jansson refuses it) */
            q += 6;
            if (v >= 0xdc00 && v <= 0xdfff) return false;
            if (v >= 0xd800 && v <= 0xdbff) { /* a surrogate pair */
                if (d->end - q < 6 || q[0] != '\\' || q[1] != 'u') return false;
                int32_t v2 = hex4(q + 2);
                if (v2 < 0xdc00 || v2 > 0xdfff) return false;
                v = ((v - 0xd800) << 10) + (v2 - 0xdc00) + 0x10000;
                q += 6;
            }
            unsigned char *o = (unsigned char *)d->tmp + w;
            if (v < 0x80) {
                o[0] = (unsigned char)v;
                w += 1;
            } else if (v < 0x800) {
                o[0] = (unsigned char)(0xc0 | v >> 6);
                o[1] = (unsigned char)(0x80 | (v & 0x3f));
                w += 2;
            } else if (v < 0x10000) {
                o[0] = (unsigned char)(0xe0 | v >> 12);
                o[1] = (unsigned char)(0x80 | ((v >> 6) & 0x3f));
                o[2] = (unsigned char)(0x80 | (v & 0x3f));
                w += 3;
            } else {
                o[0] = (unsigned char)(0xf0 | v >> 18);
                o[1] = (unsigned char)(0x80 | ((v >> 12) & 0x3f));
                o[2] = (unsigned char)(0x80 | ((v >> 6) & 0x3f));
                o[3] = (unsigned char)(0x80 | (v & 0x3f));
                w += 4;
            }
            continue;
        }
        default: return false;
        }
        d->tmp[w++] = c;
        q += 2;
    }
    return false;
}

static inline bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static json_t *number_at(struct dec *d)
{
    const unsigned char *s = d->p, *q = s;
    bool neg = q < d->end && *q == '-';
    if (neg) q++;
    if (q == d->end || !is_digit(*q)) return NULL;
    if (*q == '0') {
        q++;
        if (q < d->end && is_digit(*q)) return NULL;
    } else {
        while (q < d->end && is_digit(*q)) q++;
    }
    const unsigned char *int_end = q;
    bool real = false;
    if (q < d->end && *q == '.') {
        q++;
        if (q == d->end || !is_digit(*q)) return NULL;
        while (q < d->end && is_digit(*q)) q++;
        real = true;
    }
    if (q < d->end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < d->end && (*q == '+' || *q == '-')) q++;
        if (q == d->end || !is_digit(*q)) return NULL;
        while (q < d->end && is_digit(*q)) q++;
        real = true;
    }
    d->p = q;
    if (!real) {
        const unsigned char *dg = s + neg;
        if (int_end - dg > 18) return NULL; /* might overflow: jansson's call */
        int64_t v = 0;
        for (; dg < int_end; dg++) v = v * 10 + (*dg - '0');
        return json_integer(neg ? -v : v);
    }
    char buf[64];
    size_t n = (size_t)(q - s);
    if (n >= sizeof buf) return NULL;
    memcpy(buf, s, n);
    buf[n] = 0;
    double v = strtod(buf, NULL);
    if (isinf(v)) return NULL; /* jansson: "real number overflow" */
    return json_real(v);
}

static json_t *value_at(struct dec *d);

static json_t *object_at(struct dec *d)
{
    json_t *o = json_object();
    if (!o) return NULL;
    d->p++; /* '{' */
    skip_ws(d);
    if (d->p < d->end && *d->p == '}') {
        d->p++;
        return o;
    }
    for (;;) {
        const char *k;
        size_t kn;
        if (d->p == d->end || *d->p != '"' || !string_at(d, &k, &kn)) goto fail;
        /* a key with escapes is in d->tmp, which the value may reuse */
        char kbuf[64], *key = (char *)k, *owned = NULL;
        if (k == d->tmp) {
            key = kn < sizeof kbuf ? kbuf : (owned = malloc(kn));
            if (!key) goto fail;
            memcpy(key, k, kn);
        }
        skip_ws(d);
        json_t *v = NULL;
        if (d->p < d->end && *d->p == ':') {
            d->p++;
            skip_ws(d);
            v = value_at(d);
        }
        size_t before = json_object_size(o);
        /* a duplicate key is jansson's to judge (refused or replaced) */
        bool ok = v && json_object_setn_new_nocheck(o, key, kn, v) == 0 &&
                  json_object_size(o) == before + 1;
        free(owned);
        if (!ok) goto fail;
        int more = after_item(d, '}');
        if (more < 0) goto fail;
        if (!more) return o;
    }
fail:
    json_decref(o);
    return NULL;
}

static json_t *array_at(struct dec *d)
{
    json_t *a = json_array();
    if (!a) return NULL;
    d->p++; /* '[' */
    skip_ws(d);
    if (d->p < d->end && *d->p == ']') {
        d->p++;
        return a;
    }
    for (;;) {
        if (json_array_append_new(a, value_at(d))) goto fail;
        int more = after_item(d, ']');
        if (more < 0) goto fail;
        if (!more) return a;
    }
fail:
    json_decref(a);
    return NULL;
}

static bool word_at(struct dec *d, const char *w, size_t n)
{
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, w, n)) return false;
    d->p += n;
    return true;
}

static json_t *value_at(struct dec *d)
{
    if (d->p == d->end) return NULL;
    switch (*d->p) {
    case '{':
    case '[': {
        if (++d->depth > MAX_DEPTH) return NULL;
        json_t *v = *d->p == '{' ? object_at(d) : array_at(d);
        d->depth--;
        return v;
    }
    case '"': {
        const char *s;
        size_t n;
        return string_at(d, &s, &n) ? json_stringn_nocheck(s, n) : NULL;
    }
    case 't': return word_at(d, "true", 4) ? json_true() : NULL;
    case 'f': return word_at(d, "false", 5) ? json_false() : NULL;
    case 'n': return word_at(d, "null", 4) ? json_null() : NULL;
    default: return number_at(d);
    }
}

json_t *json_dec_loadb(const char *buf, size_t n, size_t flags, json_error_t *err)
{
    if (!buf || (flags & ~(size_t)JSON_REJECT_DUPLICATES)) return json_loadb(buf, n, flags, err);
    struct dec d = {.p = (const unsigned char *)buf, .end = (const unsigned char *)buf + n};
    skip_ws(&d);
    json_t *v = NULL;
    if (d.p < d.end && (*d.p == '{' || *d.p == '[')) v = value_at(&d);
    skip_ws(&d);
    free(d.tmp);
    if (!v || d.p != d.end) {
        json_decref(v);
        return json_loadb(buf, n, flags, err);
    }
    if (err) { /* as jansson leaves it after a success */
        memset(err, 0, sizeof *err);
        err->line = -1;
        err->column = -1;
        err->position = (int)n;
        snprintf(err->source, sizeof err->source, "<buffer>");
    }
    return v;
}
