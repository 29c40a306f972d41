/* Text helpers for generation: UTF-8 boundaries and sanitising, stop
 * strings. Pure functions; see chat.c. */
#ifndef AIOS_LLM_CHAT_H
#define AIOS_LLM_CHAT_H

#include <stdbool.h>
#include <stddef.h>

/* Length of the longest prefix of s[0..n) that does not end inside an
 * unfinished UTF-8 sequence (an incomplete tail is held back). */
size_t chat_utf8_stable_len(const char *s, size_t n);
/* Append s[0..n) to *out (realloc'd) with every invalid UTF-8 sequence
 * replaced by U+FFFD. Returns 0 or AIOS_ENOMEM. */
int chat_utf8_append_sanitized(char **out, size_t *len, size_t *cap, const char *s, size_t n);
bool chat_utf8_valid(const char *s, size_t n);

/* Earliest occurrence of any stop string in text[from..n); returns its
 * offset or -1. */
long chat_stop_find(const char *text, size_t n, size_t from, char *const *stops, int n_stop);
/* Length of the longest suffix of text[0..n) that is a proper prefix of a
 * stop string: bytes that must be held back while streaming. */
size_t chat_stop_holdback(const char *text, size_t n, char *const *stops, int n_stop);

#endif
