/* The calculator's expression evaluator: a recursive-descent parser that
 * evaluates while it parses.
 *
 *   expr   := term (('+' | '-') term)*
 *   term   := unary (('*' | '/' | '%') unary)*
 *   unary  := ('-' | '+') unary | power
 *   power  := atom ('^' unary)?          right-associative; -2^2 = -4, 2^-1 = 0.5
 *   atom   := number | '(' expr ')' | name '(' args ')' | constant
 *   number := digits ['.' digits] [('e'|'E') ['+'|'-'] digits]
 *
 * Functions: sqrt abs min max floor ceil round log exp sin cos (min/max take
 * one or more arguments); constants pi, e. Errors carry the 1-based
 * position of the offending character, e.g. "at position 5: expected ')'".
 * Division or modulo by zero, a non-finite result and nesting deeper than
 * 64 are errors. Pure function, no state: any thread. */
#include "tools/tools.h"

#include "util/err.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CALC_MAX_DEPTH 64

struct calc {
    const char *s;
    size_t pos;
    int depth;
    char *err;
    size_t errlen;
    bool failed;
};

static int calc_fail(struct calc *c, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int calc_fail(struct calc *c, size_t at, const char *fmt, ...)
{
    if (c->failed) return AIOS_EINVAL;
    c->failed = true;
    int n = snprintf(c->err, c->errlen, "at position %zu: ", at + 1);
    if (n < 0) n = 0;
    if ((size_t)n < c->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return AIOS_EINVAL;
}

static void skip_ws(struct calc *c)
{
    while (c->s[c->pos] && isspace((unsigned char)c->s[c->pos])) c->pos++;
}

static int parse_expr(struct calc *c, double *out);
static int parse_unary(struct calc *c, double *out);

static int parse_number(struct calc *c, double *out)
{
    size_t start = c->pos;
    const char *s = c->s;
    size_t i = c->pos;
    while (isdigit((unsigned char)s[i])) i++;
    if (s[i] == '.') {
        i++;
        while (isdigit((unsigned char)s[i])) i++;
    }
    if (i == start || (i == start + 1 && s[start] == '.'))
        return calc_fail(c, start, "expected a number");
    if (s[i] == 'e' || s[i] == 'E') {
        size_t j = i + 1;
        if (s[j] == '+' || s[j] == '-') j++;
        if (!isdigit((unsigned char)s[j])) return calc_fail(c, j, "expected digits in the exponent");
        while (isdigit((unsigned char)s[j])) j++;
        i = j;
    }
    char buf[128];
    if (i - start >= sizeof buf) return calc_fail(c, start, "number too long");
    memcpy(buf, s + start, i - start);
    buf[i - start] = 0;
    *out = strtod(buf, NULL);
    c->pos = i;
    return 0;
}

static int call_fn(struct calc *c, const char *name, size_t at, double *a, int n, double *out)
{
    struct {
        const char *name;
        double (*f)(double);
    } one[] = {{"sqrt", sqrt}, {"abs", fabs}, {"floor", floor}, {"ceil", ceil}, {"round", round},
               {"log", log},   {"exp", exp},  {"sin", sin},     {"cos", cos}};
    for (size_t i = 0; i < sizeof one / sizeof one[0]; i++) {
        if (strcmp(name, one[i].name)) continue;
        if (n != 1) return calc_fail(c, at, "%s takes 1 argument, got %d", name, n);
        if (!strcmp(name, "sqrt") && a[0] < 0)
            return calc_fail(c, at, "sqrt of a negative number (%g)", a[0]);
        if (!strcmp(name, "log") && a[0] <= 0)
            return calc_fail(c, at, "log of a non-positive number (%g)", a[0]);
        *out = one[i].f(a[0]);
        return 0;
    }
    if (!strcmp(name, "min") || !strcmp(name, "max")) {
        if (n < 1) return calc_fail(c, at, "%s takes at least 1 argument", name);
        double v = a[0];
        for (int i = 1; i < n; i++) v = name[1] == 'i' ? fmin(v, a[i]) : fmax(v, a[i]);
        *out = v;
        return 0;
    }
    return calc_fail(c, at,
                     "unknown function '%s' (known: sqrt abs min max floor ceil round log exp sin cos)",
                     name);
}

static int parse_atom(struct calc *c, double *out)
{
    skip_ws(c);
    size_t at = c->pos;
    char ch = c->s[at];
    if (ch == '(') {
        c->pos++;
        int rc = parse_expr(c, out);
        if (rc) return rc;
        skip_ws(c);
        if (c->s[c->pos] != ')') return calc_fail(c, c->pos, "expected ')' to close '(' at position %zu", at + 1);
        c->pos++;
        return 0;
    }
    if (isdigit((unsigned char)ch) || ch == '.') return parse_number(c, out);
    if (isalpha((unsigned char)ch) || ch == '_') {
        char name[32];
        size_t n = 0;
        while (isalnum((unsigned char)c->s[c->pos]) || c->s[c->pos] == '_') {
            if (n + 1 >= sizeof name) return calc_fail(c, at, "name too long");
            name[n++] = (char)tolower((unsigned char)c->s[c->pos++]);
        }
        name[n] = 0;
        skip_ws(c);
        if (c->s[c->pos] != '(') {
            if (!strcmp(name, "pi")) *out = M_PI;
            else if (!strcmp(name, "e")) *out = M_E;
            else return calc_fail(c, at, "unknown name '%s' (constants: pi, e)", name);
            return 0;
        }
        c->pos++;
        double args[16];
        int na = 0;
        skip_ws(c);
        if (c->s[c->pos] == ')') {
            c->pos++;
        } else {
            for (;;) {
                if (na >= 16) return calc_fail(c, c->pos, "too many arguments (at most 16)");
                int rc = parse_expr(c, &args[na++]);
                if (rc) return rc;
                skip_ws(c);
                if (c->s[c->pos] == ',') {
                    c->pos++;
                    continue;
                }
                if (c->s[c->pos] == ')') {
                    c->pos++;
                    break;
                }
                return calc_fail(c, c->pos, "expected ',' or ')' in the arguments of %s", name);
            }
        }
        return call_fn(c, name, at, args, na, out);
    }
    if (!ch) return calc_fail(c, at, "unexpected end of expression");
    return calc_fail(c, at, "unexpected '%c'", ch);
}

static int parse_power(struct calc *c, double *out)
{
    int rc = parse_atom(c, out);
    if (rc) return rc;
    skip_ws(c);
    if (c->s[c->pos] == '^') {
        size_t at = c->pos++;
        double e;
        if (++c->depth > CALC_MAX_DEPTH) return calc_fail(c, at, "expression nested too deeply");
        rc = parse_unary(c, &e);
        c->depth--;
        if (rc) return rc;
        double v = pow(*out, e);
        if (!isfinite(v)) return calc_fail(c, at, "%g ^ %g is not a finite number", *out, e);
        *out = v;
    }
    return 0;
}

static int parse_unary(struct calc *c, double *out)
{
    skip_ws(c);
    char ch = c->s[c->pos];
    if (ch == '-' || ch == '+') {
        size_t at = c->pos++;
        if (++c->depth > CALC_MAX_DEPTH) return calc_fail(c, at, "expression nested too deeply");
        int rc = parse_unary(c, out);
        c->depth--;
        if (rc) return rc;
        if (ch == '-') *out = -*out;
        return 0;
    }
    return parse_power(c, out);
}

static int parse_term(struct calc *c, double *out)
{
    int rc = parse_unary(c, out);
    if (rc) return rc;
    for (;;) {
        skip_ws(c);
        char op = c->s[c->pos];
        if (op != '*' && op != '/' && op != '%') return 0;
        size_t at = c->pos++;
        double r;
        rc = parse_unary(c, &r);
        if (rc) return rc;
        if ((op == '/' || op == '%') && r == 0) return calc_fail(c, at, "division by zero");
        if (op == '*') *out *= r;
        else if (op == '/') *out /= r;
        else *out = fmod(*out, r);
    }
}

static int parse_expr(struct calc *c, double *out)
{
    if (++c->depth > CALC_MAX_DEPTH) return calc_fail(c, c->pos, "expression nested too deeply");
    int rc = parse_term(c, out);
    while (!rc) {
        skip_ws(c);
        char op = c->s[c->pos];
        if (op != '+' && op != '-') break;
        c->pos++;
        double r;
        rc = parse_term(c, &r);
        if (!rc) *out = op == '+' ? *out + r : *out - r;
    }
    c->depth--;
    return rc;
}

int tool_calc_eval(const char *expr, double *out, char *err, size_t errlen)
{
    *out = 0;
    if (err && errlen) err[0] = 0;
    char dummy[8];
    struct calc c = {.s = expr, .err = err ? err : dummy, .errlen = err ? errlen : sizeof dummy};
    int rc = parse_expr(&c, out);
    if (rc) return rc;
    skip_ws(&c);
    if (c.s[c.pos]) return calc_fail(&c, c.pos, "unexpected '%c' after the expression", c.s[c.pos]);
    if (!isfinite(*out)) return calc_fail(&c, 0, "the result is not a finite number");
    return 0;
}
