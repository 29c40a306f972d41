/* Search terms (struct sto_terms) as a store's full-text query: the one
 * word splitter both stores use, so SQLite's FTS5 and PostgreSQL's
 * to_tsquery see the same words.
 *
 * A word is a run of letters, digits, '_' and non-ASCII bytes; anything
 * else separates words, so no quote character can reach the query. The
 * result is cut (whole words only) at the buffer's size. */
#include "storage/sto_store.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

/* the words of s, each between quote characters, joined by sep, appended
 * at q[o]; the new end */
static size_t terms(const char *s, char quote, const char *sep, char *q, size_t cap, size_t o,
                    int *n_terms)
{
    const unsigned char *p = (const unsigned char *)s;
    while (p && *p) {
        while (*p && !(isalnum(*p) || *p >= 0x80 || *p == '_')) p++;
        const unsigned char *b = p;
        while (*p && (isalnum(*p) || *p >= 0x80 || *p == '_')) p++;
        if (p == b) continue;
        size_t n = (size_t)(p - b);
        if (o + n + strlen(sep) + 4 >= cap) break;
        if (*n_terms) o += (size_t)snprintf(q + o, cap - o, "%s", sep);
        q[o++] = quote;
        memcpy(q + o, b, n);
        o += n;
        q[o++] = quote;
        q[o] = 0;
        (*n_terms)++;
    }
    return o;
}

void sto_terms_expr(const struct sto_terms *t, char quote, const char *or_sep,
                    const char *and_sep, char match[STO_MATCH_MAX])
{
    char q[4096] = "", kw[2048] = "";
    int nq = 0, nk = 0;
    match[0] = 0;
    if (!t) return;
    terms(t->any, quote, or_sep, q, sizeof q, 0, &nq);
    terms(t->all, quote, and_sep, kw, sizeof kw, 0, &nk);
    if (nq && nk) snprintf(match, STO_MATCH_MAX, "(%s)%s%s", q, and_sep, kw);
    else snprintf(match, STO_MATCH_MAX, "%s", nq ? q : kw);
}
