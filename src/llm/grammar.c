/* JSON Schema -> GBNF, for grammar-constrained sampling.
 *
 * The grammar's language is a subset of the values the schema accepts:
 * soundness (every output parses and validates) matters more than
 * completeness, because a constrained random-weight model must still
 * produce valid output. Where the subset is narrower than the schema:
 *   - objects list their declared properties in declared order, each
 *     optional one present or absent; no undeclared keys are generated even
 *     when additionalProperties allows them;
 *   - strings use no \u escapes and no DEL; at most maxLength characters,
 *     else at most opts.max_string;
 *   - arrays hold at most maxItems, else at most opts.max_items, items;
 *   - integers have at most 15 digits; bounded numbers are integers or
 *     decimals with up to 6 fraction digits whose integer part keeps them
 *     inside [minimum, maximum], no exponent (a range too narrow for that
 *     is offered its bounds as literals); unbounded numbers have at most a
 *     two-digit exponent (jansson rejects overflowing reals);
 *   - whitespace is "", " " or a newline with up to opts.max_ws spaces or
 *     tabs, between tokens only; the output starts with the value;
 *   - free-form values ({} or json_object) nest at most opts.max_depth deep.
 * So every generation ends: the grammar's language is finite.
 *
 * llama.cpp (v0.5.0) GBNF constraints honoured here: rule names are
 * [a-zA-Z0-9-]; `x{m,n}` with n <= 2000 (larger n silently becomes
 * unbounded, so we clamp); a repeated group counts the new rules it
 * mentions, so shared rules are written first. Rules are built children
 * first into one buffer; forward references are legal.
 *
 * Pure functions; thread-safe; the caller owns the returned string. */
#include "llm/grammar.h"

#include "llm/schema.h"
#include "util/err.h"
#include "util/util.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REP_MAX 2000             /* llama.cpp's repetition threshold */
#define INT_LIM 999999999999999LL /* 15 digits */
#define FRAC_DIGITS 6

void grammar_opts_default(struct grammar_opts *o)
{
    o->max_string = GRAMMAR_DEFAULT_MAX_STRING;
    o->max_items = GRAMMAR_DEFAULT_MAX_ITEMS;
    o->max_depth = GRAMMAR_DEFAULT_MAX_DEPTH;
    o->max_ws = GRAMMAR_DEFAULT_MAX_WS;
}

/* ---- string builder ---- */

struct sb {
    char *s;
    size_t n, cap;
    bool oom;
};

static void sb_add(struct sb *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (util_buf_append(&b->s, &b->n, &b->cap, s, n)) b->oom = true;
}

static void sb_puts(struct sb *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_printf(struct sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sb *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) {
        sb_add(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_add(b, big, (size_t)n);
    free(big);
}

/* a GBNF string literal matching exactly the bytes s[0..n) */
static void sb_literal(struct sb *b, const char *s, size_t n)
{
    sb_puts(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"') sb_puts(b, "\\\"");
        else if (c == '\\') sb_puts(b, "\\\\");
        else if (c == '\n') sb_puts(b, "\\n");
        else if (c == '\r') sb_puts(b, "\\r");
        else if (c == '\t') sb_puts(b, "\\t");
        else if (c < 0x20 || c == 0x7F) sb_printf(b, "\\x%02X", c);
        else sb_add(b, (const char *)&c, 1);
    }
    sb_puts(b, "\"");
}

/* a literal matching the compact JSON text of v */
static int sb_json_literal(struct sb *b, json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
    if (!s) return AIOS_ENOMEM;
    sb_literal(b, s, strlen(s));
    free(s);
    return 0;
}

/* a literal of the shortest decimal text that reads back as exactly d */
static void sb_shortest_number(struct sb *b, double d)
{
    char t[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(t, sizeof t, "%.*g", prec, d);
        if (strtod(t, NULL) == d) break;
    }
    /* JSON has no "1e+20" without a digit before e, but %g always writes
     * one; it does write "inf"/"nan", which schema checks exclude */
    sb_literal(b, t, strlen(t));
}

/* ---- generator ---- */

enum {
    USE_STRING = 1 << 0,
    USE_INTEGER = 1 << 1,
    USE_NUMBER = 1 << 2,
    USE_BOOLEAN = 1 << 3,
    USE_GENERIC = 1 << 4,
};

struct gen {
    struct sb rules; /* definitions, children first */
    const struct grammar_opts *o;
    int n_rules;
    unsigned used;
    char *err;
    size_t errlen;
};

#define NAME_LEN 32

static int gfail(struct gen *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int gfail(struct gen *g, const char *fmt, ...)
{
    if (g->err && g->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g->err, g->errlen, fmt, ap);
        va_end(ap);
    }
    return AIOS_EINVAL;
}

static void new_name(struct gen *g, const char *kind, char name[NAME_LEN])
{
    snprintf(name, NAME_LEN, "%s%d", kind, ++g->n_rules);
}

static int clamp_rep(int n) { return n < 0 ? 0 : n > REP_MAX ? REP_MAX : n; }

/* the shared rules, written before everything else */
static void emit_shared(struct gen *g, struct sb *b)
{
    const struct grammar_opts *o = g->o;
    sb_printf(b, "ws ::= | \" \" | \"\\n\" [ \\t]{0,%d}\n", clamp_rep(o->max_ws));
    sb_puts(b, "char ::= [^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" [\"\\\\/bfnrt]\n");
    sb_printf(b, "string ::= \"\\\"\" char{0,%d} \"\\\"\"\n", clamp_rep(o->max_string));
    sb_puts(b, "integer ::= \"-\"? (\"0\" | [1-9] [0-9]{0,14})\n");
    sb_puts(b, "number ::= integer (\".\" [0-9]{1,15})? ([eE] [-+]? [0-9]{1,2})?\n");
    sb_puts(b, "boolean ::= \"true\" | \"false\"\n");
    if (g->used & USE_GENERIC) {
        int d_max = o->max_depth < 0 ? 0 : o->max_depth > 16 ? 16 : o->max_depth;
        int k = clamp_rep(o->max_items);
        for (int d = 0; d <= d_max; d++) {
            if (d < d_max) {
                sb_printf(b, "jv%d ::= jo%d | ja%d | string | number | boolean | \"null\"\n", d,
                          d, d);
                if (k > 0) {
                    sb_printf(b, "jo%d ::= \"{\" ws (string ws \":\" ws jv%d ws (\",\" ws string "
                              "ws \":\" ws jv%d ws){0,%d})? \"}\"\n", d, d + 1, d + 1, k - 1);
                    sb_printf(b, "ja%d ::= \"[\" ws (jv%d ws (\",\" ws jv%d ws){0,%d})? \"]\"\n",
                              d, d + 1, d + 1, k - 1);
                } else {
                    sb_printf(b, "jo%d ::= \"{\" ws \"}\"\n", d);
                    sb_printf(b, "ja%d ::= \"[\" ws \"]\"\n", d);
                }
            } else {
                sb_printf(b, "jv%d ::= string | number | boolean | \"null\"\n", d);
                sb_printf(b, "jo%d ::= \"{\" ws \"}\"\n", d);
            }
        }
    }
}

/* ---- integer ranges ---- */

static bool all_digit(const char *s, int n, char d)
{
    for (int i = 0; i < n; i++)
        if (s[i] != d) return false;
    return true;
}

/* numbers written with exactly n digits between L and H (L <= H) */
static void range_same_len(struct sb *b, const char *L, const char *H, int n)
{
    if (n == 0) return;
    if (L[0] == H[0]) {
        sb_printf(b, "\"%c\"", L[0]);
        if (n > 1) {
            sb_puts(b, " ");
            range_same_len(b, L + 1, H + 1, n - 1);
        }
        return;
    }
    bool lzero = all_digit(L + 1, n - 1, '0'), hnine = all_digit(H + 1, n - 1, '9');
    char lo = lzero ? L[0] : (char)(L[0] + 1), hi = hnine ? H[0] : (char)(H[0] - 1);
    char nines[20], zeros[20];
    memset(nines, '9', sizeof nines);
    memset(zeros, '0', sizeof zeros);
    bool first = true;
    sb_puts(b, "(");
    if (!lzero) {
        sb_printf(b, "\"%c\" ", L[0]);
        range_same_len(b, L + 1, nines, n - 1);
        first = false;
    }
    if (lo <= hi) {
        if (!first) sb_puts(b, " | ");
        sb_printf(b, "[%c-%c]", lo, hi);
        if (n > 1) sb_printf(b, " [0-9]{%d}", n - 1);
        first = false;
    }
    if (!hnine) {
        if (!first) sb_puts(b, " | ");
        sb_printf(b, "\"%c\" ", H[0]);
        range_same_len(b, zeros, H + 1, n - 1);
    }
    sb_puts(b, ")");
}

static int n_digits(long long x)
{
    int n = 1;
    while (x >= 10) {
        x /= 10;
        n++;
    }
    return n;
}

/* decimal numbers without leading zeros in [lo, hi], 0 <= lo <= hi */
static void range_nonneg(struct sb *b, long long lo, long long hi)
{
    int dl = n_digits(lo), dh = n_digits(hi);
    sb_puts(b, "(");
    for (int len = dl; len <= dh; len++) {
        long long p = 1;
        for (int i = 1; i < len; i++) p *= 10;
        long long L = len == dl ? lo : p, H = len == dh ? hi : p * 10 - 1;
        char ls[24], hs[24];
        snprintf(ls, sizeof ls, "%0*lld", len, L);
        snprintf(hs, sizeof hs, "%0*lld", len, H);
        if (len > dl) sb_puts(b, " | ");
        range_same_len(b, ls, hs, len);
    }
    sb_puts(b, ")");
}

/* integers in [a, b], a <= b */
static void range_int(struct sb *b, long long a, long long hi)
{
    sb_puts(b, "(");
    bool first = true;
    if (hi >= 0) {
        range_nonneg(b, a > 0 ? a : 0, hi);
        first = false;
    }
    if (a < 0) {
        if (!first) sb_puts(b, " | ");
        sb_puts(b, "\"-\" ");
        range_nonneg(b, hi < 0 ? -hi : 1, -a);
    }
    sb_puts(b, ")");
}

/* [a, b] = the integers inside [minimum, maximum] within +-INT_LIM */
static void int_bounds(json_t *s, long long *a, long long *b)
{
    json_t *mn = json_object_get(s, "minimum"), *mx = json_object_get(s, "maximum");
    double lo = mn ? ceil(json_number_value(mn)) : (double)-INT_LIM;
    double hi = mx ? floor(json_number_value(mx)) : (double)INT_LIM;
    if (lo < (double)-INT_LIM) lo = (double)-INT_LIM;
    if (hi > (double)INT_LIM) hi = (double)INT_LIM;
    if (lo > (double)INT_LIM) lo = (double)INT_LIM + 1; /* empty */
    if (hi < (double)-INT_LIM) hi = (double)-INT_LIM - 1;
    *a = (long long)lo;
    *b = (long long)hi;
}

static int gen_integer(struct gen *g, json_t *s, char name[NAME_LEN])
{
    if (!json_object_get(s, "minimum") && !json_object_get(s, "maximum")) {
        g->used |= USE_INTEGER;
        snprintf(name, NAME_LEN, "integer");
        return 0;
    }
    long long a, b;
    int_bounds(s, &a, &b);
    if (a > b)
        return gfail(g, "no integer lies between minimum and maximum (or they exceed 15 digits)");
    new_name(g, "int", name);
    sb_printf(&g->rules, "%s ::= ", name);
    range_int(&g->rules, a, b);
    sb_puts(&g->rules, "\n");
    return 0;
}

static int gen_number(struct gen *g, json_t *s, char name[NAME_LEN])
{
    json_t *mn = json_object_get(s, "minimum"), *mx = json_object_get(s, "maximum");
    if (!mn && !mx) {
        g->used |= USE_NUMBER;
        snprintf(name, NAME_LEN, "number");
        return 0;
    }
    long long a, b;
    int_bounds(s, &a, &b);
    new_name(g, "num", name);
    struct sb *r = &g->rules;
    sb_printf(r, "%s ::= ", name);
    bool any = false;
    if (a <= b) {
        range_int(r, a, b);
        any = true;
    }
    /* m.fff with 0 <= m, a <= m, m + 1 <= b */
    long long lo = a > 0 ? a : 0, hi = b - 1;
    if (lo <= hi) {
        if (any) sb_puts(r, " | ");
        range_nonneg(r, lo, hi);
        sb_printf(r, " \".\" [0-9]{1,%d}", FRAC_DIGITS);
        any = true;
    }
    /* -m.fff with 1 <= m, -b <= m, m + 1 <= -a */
    lo = -b > 1 ? -b : 1;
    hi = -a - 1;
    if (lo <= hi) {
        if (any) sb_puts(r, " | ");
        sb_puts(r, "\"-\" ");
        range_nonneg(r, lo, hi);
        sb_printf(r, " \".\" [0-9]{1,%d}", FRAC_DIGITS);
        any = true;
    }
    if (!any) {
        /* a range narrower than one integer step: its bounds are values */
        if (mn) {
            sb_shortest_number(r, json_number_value(mn));
            any = true;
        }
        if (mx) {
            if (any) sb_puts(r, " | ");
            sb_shortest_number(r, json_number_value(mx));
        }
    }
    sb_puts(r, "\n");
    return 0;
}

/* ---- strings, arrays, objects ---- */

static int gen_string(struct gen *g, json_t *s, char name[NAME_LEN])
{
    json_t *mn = json_object_get(s, "minLength"), *mx = json_object_get(s, "maxLength");
    if (!mn && !mx) {
        g->used |= USE_STRING;
        snprintf(name, NAME_LEN, "string");
        return 0;
    }
    long long lo = json_is_integer(mn) ? json_integer_value(mn) : 0;
    long long hi = json_is_integer(mx) ? json_integer_value(mx) : -1;
    if (lo < 0 || (mx && hi < 0))
        return gfail(g, "minLength and maxLength must be non-negative integers");
    if (mx && hi < lo)
        return gfail(g, "minLength (%lld) is greater than maxLength (%lld): no string matches",
                     lo, hi);
    if (lo > REP_MAX) return gfail(g, "minLength above %d is not supported", REP_MAX);
    if (hi < 0) hi = lo > g->o->max_string ? lo : g->o->max_string;
    if (hi > REP_MAX) hi = REP_MAX;
    new_name(g, "str", name);
    sb_printf(&g->rules, "%s ::= \"\\\"\" char{%lld,%lld} \"\\\"\"\n", name, lo, hi);
    return 0;
}

static int gen_value(struct gen *g, json_t *s, char name[NAME_LEN]);

static int gen_array(struct gen *g, json_t *s, char name[NAME_LEN])
{
    char item[NAME_LEN];
    json_t *items = json_object_get(s, "items");
    int rc;
    if (items) {
        if ((rc = gen_value(g, items, item))) return rc;
    } else {
        g->used |= USE_GENERIC;
        snprintf(item, sizeof item, "jv1");
        if (g->o->max_depth < 1) snprintf(item, sizeof item, "jv0");
    }
    json_t *mn = json_object_get(s, "minItems"), *mx = json_object_get(s, "maxItems");
    long long lo = json_is_integer(mn) ? json_integer_value(mn) : 0;
    long long hi = json_is_integer(mx) ? json_integer_value(mx) : -1;
    if (lo < 0 || (mx && hi < 0))
        return gfail(g, "minItems and maxItems must be non-negative integers");
    if (mx && hi < lo)
        return gfail(g, "minItems (%lld) is greater than maxItems (%lld): no array matches", lo,
                     hi);
    if (lo > REP_MAX) return gfail(g, "minItems above %d is not supported", REP_MAX);
    if (hi < 0) hi = lo > g->o->max_items ? lo : g->o->max_items;
    if (hi > REP_MAX) hi = REP_MAX;
    new_name(g, "arr", name);
    struct sb *r = &g->rules;
    if (hi == 0) {
        sb_printf(r, "%s ::= \"[\" ws \"]\"\n", name);
        return 0;
    }
    sb_printf(r, "%s ::= \"[\" ws ", name);
    if (lo == 0) sb_puts(r, "(");
    sb_printf(r, "%s ws", item);
    if (hi > 1) sb_printf(r, " (\",\" ws %s ws){%lld,%lld}", item, lo > 0 ? lo - 1 : 0, hi - 1);
    if (lo == 0) sb_puts(r, ")?");
    sb_puts(r, " \"]\"\n");
    return 0;
}

static int gen_object(struct gen *g, json_t *s, char name[NAME_LEN])
{
    json_t *props = json_object_get(s, "properties");
    bool closed = json_is_false(json_object_get(s, "additionalProperties"));
    size_t n = json_object_size(props);
    if (n == 0) {
        if (!closed) {
            g->used |= USE_GENERIC;
            snprintf(name, NAME_LEN, "jo0");
            return 0;
        }
        new_name(g, "obj", name);
        sb_printf(&g->rules, "%s ::= \"{\" ws \"}\"\n", name);
        return 0;
    }
    json_t *req = json_object_get(s, "required");
    char(*vals)[NAME_LEN] = calloc(n, NAME_LEN);
    const char **keys = calloc(n, sizeof *keys);
    bool *required = calloc(n, sizeof *required);
    int rc = 0;
    if (!vals || !keys || !required) {
        rc = AIOS_ENOMEM;
        goto out;
    }
    size_t i = 0;
    const char *k;
    json_t *ps;
    json_object_foreach(props, k, ps) {
        keys[i] = k;
        size_t j;
        json_t *rv;
        json_array_foreach(req, j, rv) {
            if (json_is_string(rv) && !strcmp(json_string_value(rv), k)) required[i] = true;
        }
        if ((rc = gen_value(g, ps, vals[i]))) goto out;
        i++;
    }
    /* o<id>-<i>-<f>: the members from property i on; f = 1 when a member
     * was already written (so a comma comes first) */
    int id = ++g->n_rules;
    struct sb *r = &g->rules;
    for (i = 0; i < n; i++) {
        for (int f = 0; f < 2; f++) {
            if (i == 0 && f == 1) continue;
            sb_printf(r, "o%d-%zu-%d ::= ", id, i, f);
            /* an optional member may be left out: the empty or the
             * shorter alternative comes first ("x ::= | a" is how GBNF
             * spells an empty alternative) */
            if (!required[i]) {
                if (i + 1 < n) sb_printf(r, "o%d-%zu-%d", id, i + 1, f);
                sb_puts(r, " | ");
            }
            if (f) sb_puts(r, "\",\" ws ");
            json_t *key = json_string(keys[i]);
            if (!key) {
                rc = AIOS_ENOMEM;
                goto out;
            }
            rc = sb_json_literal(r, key);
            json_decref(key);
            if (rc) goto out;
            sb_printf(r, " ws \":\" ws %s ws", vals[i]);
            if (i + 1 < n) sb_printf(r, " o%d-%zu-1", id, i + 1);
            sb_puts(r, "\n");
        }
    }
    snprintf(name, NAME_LEN, "obj%d", id);
    sb_printf(r, "%s ::= \"{\" ws o%d-0-0 \"}\"\n", name, id);
out:
    free(vals);
    free(keys);
    free(required);
    return rc;
}

/* enum / const: the listed values that satisfy the whole schema */
static int gen_literals(struct gen *g, json_t *s, char name[NAME_LEN])
{
    json_t *c = json_object_get(s, "const"), *en = json_object_get(s, "enum");
    json_t *vals = c ? json_pack("[O]", c) : json_incref(en);
    if (!vals) return AIOS_ENOMEM;
    char vb[8];
    new_name(g, "lit", name);
    struct sb *r = &g->rules;
    sb_printf(r, "%s ::= ", name);
    int n_ok = 0, rc = 0;
    size_t i;
    json_t *v;
    json_array_foreach(vals, i, v) {
        if (schema_validate(s, v, vb, sizeof vb)) continue;
        if (n_ok++) sb_puts(r, " | ");
        if ((rc = sb_json_literal(r, v))) break;
    }
    json_decref(vals);
    if (rc) return rc;
    if (!n_ok)
        return gfail(g, c ? "the 'const' value does not satisfy the rest of its schema"
                          : "no 'enum' value satisfies the rest of its schema");
    sb_puts(r, "\n");
    return 0;
}

static int gen_typed(struct gen *g, json_t *s, const char *t, char name[NAME_LEN])
{
    if (!strcmp(t, "object")) return gen_object(g, s, name);
    if (!strcmp(t, "array")) return gen_array(g, s, name);
    if (!strcmp(t, "string")) return gen_string(g, s, name);
    if (!strcmp(t, "integer")) return gen_integer(g, s, name);
    if (!strcmp(t, "number")) return gen_number(g, s, name);
    if (!strcmp(t, "boolean")) {
        g->used |= USE_BOOLEAN;
        snprintf(name, NAME_LEN, "boolean");
        return 0;
    }
    if (!strcmp(t, "null")) {
        new_name(g, "null", name);
        sb_printf(&g->rules, "%s ::= \"null\"\n", name);
        return 0;
    }
    return gfail(g, "unknown type '%s'", t);
}

static int gen_value(struct gen *g, json_t *s, char name[NAME_LEN])
{
    if (!json_is_object(s)) return gfail(g, "a schema must be an object");
    if (json_object_get(s, "const") || json_object_get(s, "enum")) return gen_literals(g, s, name);
    json_t *t = json_object_get(s, "type");
    if (json_is_string(t)) return gen_typed(g, s, json_string_value(t), name);
    if (json_is_array(t)) {
        size_t n = json_array_size(t);
        char(*alts)[NAME_LEN] = calloc(n ? n : 1, NAME_LEN);
        if (!alts) return AIOS_ENOMEM;
        int rc = 0;
        for (size_t i = 0; i < n && !rc; i++) {
            json_t *ti = json_array_get(t, i);
            rc = json_is_string(ti) ? gen_typed(g, s, json_string_value(ti), alts[i])
                                    : gfail(g, "'type' entries must be strings");
        }
        if (!rc) {
            new_name(g, "alt", name);
            sb_printf(&g->rules, "%s ::= ", name);
            for (size_t i = 0; i < n; i++) sb_printf(&g->rules, "%s%s", i ? " | " : "", alts[i]);
            sb_puts(&g->rules, "\n");
        }
        free(alts);
        return rc;
    }
    /* no type: the keywords say what is meant; nothing says: any value */
    if (json_object_get(s, "properties") || json_object_get(s, "required") ||
        json_object_get(s, "additionalProperties"))
        return gen_object(g, s, name);
    if (json_object_get(s, "items") || json_object_get(s, "minItems") ||
        json_object_get(s, "maxItems"))
        return gen_array(g, s, name);
    if (json_object_get(s, "minLength") || json_object_get(s, "maxLength"))
        return gen_string(g, s, name);
    if (json_object_get(s, "minimum") || json_object_get(s, "maximum"))
        return gen_number(g, s, name);
    g->used |= USE_GENERIC;
    snprintf(name, NAME_LEN, "jv0");
    return 0;
}

/* root line + shared rules + generated rules */
static int finish(struct gen *g, const char *root_body, char **out)
{
    struct sb b = {0};
    sb_printf(&b, "root ::= %s\n", root_body);
    emit_shared(g, &b);
    if (g->rules.n) sb_add(&b, g->rules.s, g->rules.n);
    free(g->rules.s);
    g->rules.s = NULL;
    if (b.oom || g->rules.oom) {
        free(b.s);
        return AIOS_ENOMEM;
    }
    *out = b.s;
    return 0;
}

int grammar_from_schema(json_t *schema, const struct grammar_opts *o, char **out, char *err,
                        size_t errlen)
{
    *out = NULL;
    if (err && errlen) err[0] = 0;
    struct grammar_opts def;
    if (!o) {
        grammar_opts_default(&def);
        o = &def;
    }
    struct gen g = {.o = o, .err = err, .errlen = errlen};
    char name[NAME_LEN];
    int rc = gen_value(&g, schema, name);
    if (rc) {
        free(g.rules.s);
        return rc;
    }
    return finish(&g, name, out);
}

int grammar_json_object(const struct grammar_opts *o, char **out)
{
    *out = NULL;
    struct grammar_opts def;
    if (!o) {
        grammar_opts_default(&def);
        o = &def;
    }
    struct gen g = {.o = o, .used = USE_GENERIC};
    return finish(&g, "jo0", out);
}

int grammar_tool_calls(const struct grammar_tool *tools, size_t n_tools, int max_calls,
                       bool allow_text, const struct grammar_opts *o, char **out, char *err,
                       size_t errlen)
{
    *out = NULL;
    if (err && errlen) err[0] = 0;
    if (n_tools == 0) {
        snprintf(err, errlen, "no tools to call");
        return AIOS_EINVAL;
    }
    struct grammar_opts def;
    if (!o) {
        grammar_opts_default(&def);
        o = &def;
    }
    struct gen g = {.o = o, .err = err, .errlen = errlen};
    struct sb names = {0};
    int rc = 0;
    for (size_t i = 0; i < n_tools; i++) {
        char args[NAME_LEN];
        if (tools[i].params) {
            if ((rc = gen_value(&g, tools[i].params, args))) goto fail;
        } else {
            new_name(&g, "noargs", args);
            sb_printf(&g.rules, "%s ::= \"{\" ws \"}\"\n", args);
        }
        char tn[NAME_LEN];
        new_name(&g, "tool", tn);
        sb_printf(&g.rules, "%s ::= ", tn);
        json_t *nm = json_string(tools[i].name);
        if (!nm) {
            rc = AIOS_ENOMEM;
            goto fail;
        }
        struct sb lit = {0};
        char *nj = json_dumps(nm, JSON_ENCODE_ANY);
        json_decref(nm);
        if (!nj) {
            rc = AIOS_ENOMEM;
            goto fail;
        }
        sb_puts(&lit, nj);
        sb_puts(&lit, ", \"arguments\": ");
        free(nj);
        if (lit.oom) {
            free(lit.s);
            rc = AIOS_ENOMEM;
            goto fail;
        }
        sb_literal(&g.rules, lit.s, lit.n);
        free(lit.s);
        sb_printf(&g.rules, " %s\n", args);
        sb_printf(&names, "%s%s", i ? " | " : "", tn);
    }
    if (names.oom) {
        rc = AIOS_ENOMEM;
        goto fail;
    }
    sb_puts(&g.rules, "call ::= \"<tool_call>\\n{\\\"name\\\": \" (");
    sb_add(&g.rules, names.s, names.n);
    sb_puts(&g.rules, ") \"}\\n</tool_call>\"\n");
    if (max_calls < 1) max_calls = 1;
    if (max_calls > 1)
        sb_printf(&g.rules, "calls ::= call (\"\\n\" call){0,%d}\n", clamp_rep(max_calls - 1));
    else
        sb_puts(&g.rules, "calls ::= call\n");
    if (allow_text) sb_puts(&g.rules, "text ::= [^<\\x00] [^\\x00]*\n");
    free(names.s);
    return finish(&g, allow_text ? "calls | text" : "calls", out);
fail:
    free(names.s);
    free(g.rules.s);
    return rc;
}
