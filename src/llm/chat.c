/* Generation text helpers.
 *
 * A token's bytes need not be a whole UTF-8 character (byte-level BPE splits
 * them), and a random-weight model emits arbitrary byte tokens. Streaming
 * must never send half a character, and JSON must carry valid UTF-8, so the
 * engine holds back an unfinished tail (chat_utf8_stable_len) and sanitises
 * what it emits (chat_utf8_append_sanitized). The non-streamed answer is the
 * concatenation of the same sanitised pieces, so both forms are identical.
 *
 * Stop strings are matched on bytes; while streaming, a suffix that could
 * still grow into a stop string is held back (chat_stop_holdback).
 * All functions here are pure and thread-safe. */
#include "llm/chat.h"

#include "util/err.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* expected length of a sequence from its lead byte; 0 if not a lead byte */
static int utf8_seq_len(unsigned char c)
{
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c >= 0xE0 && c <= 0xEF) return 3;
    if (c >= 0xF0 && c <= 0xF4) return 4;
    return 0;
}

/* length of a valid sequence at s (n bytes available), 0 if invalid,
 * -1 if valid so far but truncated */
static int utf8_valid_at(const unsigned char *s, size_t n)
{
    int l = utf8_seq_len(s[0]);
    if (l == 0) return 0;
    for (int i = 1; i < l; i++) {
        if ((size_t)i >= n) return -1;
        if ((s[i] & 0xC0) != 0x80) return 0;
        if (i == 1) {
            if (s[0] == 0xE0 && s[1] < 0xA0) return 0;      /* overlong */
            if (s[0] == 0xED && s[1] > 0x9F) return 0;      /* surrogate */
            if (s[0] == 0xF0 && s[1] < 0x90) return 0;      /* overlong */
            if (s[0] == 0xF4 && s[1] > 0x8F) return 0;      /* > U+10FFFF */
        }
    }
    return l;
}

size_t chat_utf8_stable_len(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    /* look at most 3 bytes back for the start of an unfinished sequence */
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        size_t i = n - back;
        if ((u[i] & 0xC0) == 0x80) continue; /* continuation byte */
        if (utf8_valid_at(u + i, back) == -1) return i;
        break;
    }
    return n;
}

bool chat_utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        int l = utf8_valid_at(u + i, n - i);
        if (l <= 0) return false;
        if (l == 1 && u[i] == 0) return false; /* no NUL inside JSON text */
        i += (size_t)l;
    }
    return true;
}

static int grow(char **out, size_t *cap, size_t need)
{
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    char *p = realloc(*out, c);
    if (!p) return AIOS_ENOMEM;
    *out = p;
    *cap = c;
    return 0;
}

int chat_utf8_append_sanitized(char **out, size_t *len, size_t *cap, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    if (grow(out, cap, *len + n * 3 + 1)) return AIOS_ENOMEM;
    size_t i = 0;
    while (i < n) {
        int l = utf8_valid_at(u + i, n - i);
        if (l > 0 && !(l == 1 && u[i] == 0)) {
            memcpy(*out + *len, u + i, (size_t)l);
            *len += (size_t)l;
            i += (size_t)l;
        } else {
            memcpy(*out + *len, "\xEF\xBF\xBD", 3);
            *len += 3;
            i += 1;
        }
    }
    (*out)[*len] = 0;
    return 0;
}

long chat_stop_find(const char *text, size_t n, size_t from, char *const *stops, int n_stop)
{
    long best = -1;
    for (int k = 0; k < n_stop; k++) {
        size_t sl = strlen(stops[k]);
        if (sl == 0 || sl > n) continue;
        for (size_t i = from; i + sl <= n; i++) {
            if (best >= 0 && (long)i >= best) break;
            if (memcmp(text + i, stops[k], sl) == 0) {
                best = (long)i;
                break;
            }
        }
    }
    return best;
}

size_t chat_stop_holdback(const char *text, size_t n, char *const *stops, int n_stop)
{
    size_t hold = 0;
    for (int k = 0; k < n_stop; k++) {
        size_t sl = strlen(stops[k]);
        for (size_t m = sl > 0 ? sl - 1 : 0; m > hold; m--) {
            if (m <= n && memcmp(text + n - m, stops[k], m) == 0) {
                hold = m;
                break;
            }
        }
    }
    return hold;
}
