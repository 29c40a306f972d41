/* JSON Schema subset: support check and validation.
 *
 * The subset is what a grammar can enforce token by token and what tool
 * definitions use in practice:
 *   type (object, array, string, number, integer, boolean, null, or an
 *   array of those), properties, required, additionalProperties (boolean),
 *   items (one schema), enum, const, minItems/maxItems,
 *   minLength/maxLength, minimum/maximum; annotations (description, title,
 *   $schema, $id, $comment, default, examples) are accepted and ignored.
 * Everything else ($ref, anyOf/oneOf/allOf/not, pattern, format,
 * exclusiveMinimum, tuple `items`, object-valued additionalProperties,
 * boolean schemas, ...) is rejected by schema_check_supported with the
 * keyword and its schema path, so a client learns exactly what to change.
 * A schema must be an object; `{}` accepts any value.
 *
 * Semantics follow JSON Schema (draft 2020-12) for that subset: keywords
 * for one type (minLength, properties, ...) constrain only values of that
 * type; "integer" accepts numbers with a zero fraction (1.0); numbers
 * compare by value in enum/const (1 equals 1.0); string lengths count
 * Unicode code points.
 *
 * Paths in messages: schema paths as "$.properties.city", value paths as
 * "$.city[2]"; keys that are not plain identifiers are written ["a b"].
 *
 * Pure functions over borrowed json_t; thread-safe; no allocation beyond
 * jansson's own (json_dumps for messages). */
#include "llm/schema.h"

#include "util/err.h"
#include "util/util.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATH_MAX_LEN 512

struct path {
    char s[PATH_MAX_LEN];
    size_t n;
};

static size_t path_push_key(struct path *p, const char *key)
{
    size_t old = p->n;
    bool plain = *key != 0;
    for (const char *c = key; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '_' && *c != '-') plain = false;
    int w = plain ? snprintf(p->s + p->n, sizeof p->s - p->n, ".%s", key)
                  : snprintf(p->s + p->n, sizeof p->s - p->n, "[\"%s\"]", key);
    if (w > 0) p->n += (size_t)w;
    if (p->n >= sizeof p->s) p->n = sizeof p->s - 1;
    return old;
}

static size_t path_push_index(struct path *p, size_t i)
{
    size_t old = p->n;
    int w = snprintf(p->s + p->n, sizeof p->s - p->n, "[%zu]", i);
    if (w > 0) p->n += (size_t)w;
    if (p->n >= sizeof p->s) p->n = sizeof p->s - 1;
    return old;
}

static void path_pop(struct path *p, size_t old)
{
    p->n = old;
    p->s[old] = 0;
}

/* printf into err and return AIOS_EINVAL (util_errf) */
#define fail(err, errlen, ...) util_errf(err, errlen, AIOS_EINVAL, __VA_ARGS__)

/* ---- support check ---- */

static const char *const k_types[] = {"object", "array", "string", "number",
                                      "integer", "boolean", "null"};

static bool known_type(const char *t)
{
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++)
        if (!strcmp(t, k_types[i])) return true;
    return false;
}

static const char *const k_ignored[] = {"description", "title", "$schema", "$id",
                                        "$comment", "default", "examples"};

static bool ignored_keyword(const char *k)
{
    for (size_t i = 0; i < sizeof k_ignored / sizeof k_ignored[0]; i++)
        if (!strcmp(k, k_ignored[i])) return true;
    return false;
}

#define SUPPORTED_LIST                                                                       \
    "type, properties, required, additionalProperties (boolean), items, enum, const, "       \
    "minItems, maxItems, minLength, maxLength, minimum, maximum, description, title"

static int check_count(json_t *s, const char *key, json_int_t *out, struct path *p, char *err,
                       size_t errlen)
{
    json_t *v = json_object_get(s, key);
    *out = -1;
    if (!v) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return fail(err, errlen, "schema %s: '%s' must be a non-negative integer", p->s, key);
    *out = json_integer_value(v);
    return 0;
}

static int check_schema(json_t *s, struct path *p, int depth, char *err, size_t errlen)
{
    if (depth > 64) return fail(err, errlen, "schema %s: nested more than 64 levels deep", p->s);
    if (json_is_boolean(s))
        return fail(err, errlen,
                    "schema %s: boolean schemas are not supported; use {} for any value", p->s);
    if (!json_is_object(s)) return fail(err, errlen, "schema %s: a schema must be an object", p->s);

    const char *key;
    json_t *v;
    json_object_foreach(s, key, v) {
        if (ignored_keyword(key)) continue;
        if (!strcmp(key, "type")) {
            if (json_is_string(v)) {
                if (!known_type(json_string_value(v)))
                    return fail(err, errlen,
                                "schema %s: unknown type '%s' (use object, array, string, number, "
                                "integer, boolean or null)", p->s, json_string_value(v));
            } else if (json_is_array(v) && json_array_size(v) > 0) {
                size_t i;
                json_t *t;
                json_array_foreach(v, i, t) {
                    if (!json_is_string(t) || !known_type(json_string_value(t)))
                        return fail(err, errlen, "schema %s: type[%zu] must be one of object, "
                                    "array, string, number, integer, boolean, null", p->s, i);
                }
            } else {
                return fail(err, errlen,
                            "schema %s: 'type' must be a type name or a non-empty array of them",
                            p->s);
            }
        } else if (!strcmp(key, "properties")) {
            if (!json_is_object(v))
                return fail(err, errlen, "schema %s: 'properties' must be an object", p->s);
            const char *pk;
            json_t *ps;
            json_object_foreach(v, pk, ps) {
                size_t o1 = path_push_key(p, "properties");
                path_push_key(p, pk);
                int rc = check_schema(ps, p, depth + 1, err, errlen);
                path_pop(p, o1);
                if (rc) return rc;
            }
        } else if (!strcmp(key, "required")) {
            if (!json_is_array(v))
                return fail(err, errlen, "schema %s: 'required' must be an array of strings", p->s);
            json_t *props = json_object_get(s, "properties");
            size_t i;
            json_t *r;
            json_array_foreach(v, i, r) {
                if (!json_is_string(r))
                    return fail(err, errlen, "schema %s: required[%zu] must be a string", p->s, i);
                if (!json_object_get(props, json_string_value(r)))
                    return fail(err, errlen,
                                "schema %s: required property '%s' is not declared in "
                                "'properties'", p->s, json_string_value(r));
            }
        } else if (!strcmp(key, "additionalProperties")) {
            if (!json_is_boolean(v))
                return fail(err, errlen,
                            "schema %s: keyword 'additionalProperties' is supported only as a "
                            "boolean", p->s);
        } else if (!strcmp(key, "items")) {
            if (json_is_array(v))
                return fail(err, errlen,
                            "schema %s: tuple form of 'items' (an array) is not supported; give "
                            "one schema", p->s);
            size_t o = path_push_key(p, "items");
            int rc = check_schema(v, p, depth + 1, err, errlen);
            path_pop(p, o);
            if (rc) return rc;
        } else if (!strcmp(key, "enum")) {
            if (!json_is_array(v) || json_array_size(v) == 0)
                return fail(err, errlen, "schema %s: 'enum' must be a non-empty array", p->s);
        } else if (!strcmp(key, "const")) {
            /* any value */
        } else if (!strcmp(key, "minItems") || !strcmp(key, "maxItems") ||
                   !strcmp(key, "minLength") || !strcmp(key, "maxLength")) {
            json_int_t dummy;
            int rc = check_count(s, key, &dummy, p, err, errlen);
            if (rc) return rc;
        } else if (!strcmp(key, "minimum") || !strcmp(key, "maximum")) {
            if (!json_is_number(v))
                return fail(err, errlen, "schema %s: '%s' must be a number", p->s, key);
        } else {
            return fail(err, errlen, "schema %s: keyword '%s' is not supported (supported: "
                        SUPPORTED_LIST ")", p->s, key);
        }
    }
    /* ranges that no value can satisfy are mistakes worth naming */
    json_int_t lo, hi;
    if (check_count(s, "minItems", &lo, p, err, errlen) ||
        check_count(s, "maxItems", &hi, p, err, errlen))
        return AIOS_EINVAL;
    if (lo >= 0 && hi >= 0 && lo > hi)
        return fail(err, errlen, "schema %s: minItems (%lld) is greater than maxItems (%lld)",
                    p->s, (long long)lo, (long long)hi);
    if (check_count(s, "minLength", &lo, p, err, errlen) ||
        check_count(s, "maxLength", &hi, p, err, errlen))
        return AIOS_EINVAL;
    if (lo >= 0 && hi >= 0 && lo > hi)
        return fail(err, errlen, "schema %s: minLength (%lld) is greater than maxLength (%lld)",
                    p->s, (long long)lo, (long long)hi);
    json_t *mn = json_object_get(s, "minimum"), *mx = json_object_get(s, "maximum");
    if (mn && mx && json_number_value(mn) > json_number_value(mx))
        return fail(err, errlen, "schema %s: minimum (%g) is greater than maximum (%g)", p->s,
                    json_number_value(mn), json_number_value(mx));
    return 0;
}

int schema_check_supported(json_t *schema, char *err, size_t errlen)
{
    if (err && errlen) err[0] = 0;
    struct path p = {.s = "$", .n = 1};
    return check_schema(schema, &p, 0, err, errlen);
}

/* ---- validation ---- */

/* JSON equality where numbers compare by value (1 == 1.0) */
static bool value_equal(json_t *a, json_t *b)
{
    if (json_is_number(a) && json_is_number(b)) {
        if (json_is_integer(a) && json_is_integer(b))
            return json_integer_value(a) == json_integer_value(b);
        return json_number_value(a) == json_number_value(b);
    }
    if (json_typeof(a) != json_typeof(b)) return false;
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b)) return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!value_equal(json_array_get(a, i), json_array_get(b, i))) return false;
        return true;
    }
    if (json_is_object(a)) {
        if (json_object_size(a) != json_object_size(b)) return false;
        const char *k;
        json_t *v;
        json_object_foreach(a, k, v) {
            json_t *w = json_object_get(b, k);
            if (!w || !value_equal(v, w)) return false;
        }
        return true;
    }
    return json_equal(a, b);
}

static bool is_integral(json_t *v)
{
    if (json_is_integer(v)) return true;
    if (!json_is_real(v)) return false;
    double d = json_real_value(v);
    return isfinite(d) && floor(d) == d;
}

static bool type_matches(const char *t, json_t *v)
{
    if (!strcmp(t, "object")) return json_is_object(v);
    if (!strcmp(t, "array")) return json_is_array(v);
    if (!strcmp(t, "string")) return json_is_string(v);
    if (!strcmp(t, "number")) return json_is_number(v);
    if (!strcmp(t, "integer")) return is_integral(v);
    if (!strcmp(t, "boolean")) return json_is_boolean(v);
    if (!strcmp(t, "null")) return json_is_null(v);
    return false;
}

static size_t utf8_count(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) c++;
    return c;
}

/* the compact JSON text of v, cut to fit in out */
static const char *short_json(json_t *v, char *out, size_t outlen)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    snprintf(out, outlen, "%s", s ? s : "?");
    if (s && strlen(s) >= outlen && outlen > 4) memcpy(out + outlen - 4, "...", 4);
    free(s);
    return out;
}

static int validate(json_t *s, json_t *v, struct path *p, char *err, size_t errlen)
{
    if (!json_is_object(s)) return 0; /* outside the subset: nothing enforced */
    char buf[160];

    json_t *t = json_object_get(s, "type");
    if (json_is_string(t)) {
        if (!type_matches(json_string_value(t), v))
            return fail(err, errlen, "%s: expected %s", p->s, json_string_value(t));
    } else if (json_is_array(t)) {
        bool ok = false;
        size_t i;
        json_t *e;
        json_array_foreach(t, i, e) {
            if (json_is_string(e) && type_matches(json_string_value(e), v)) ok = true;
        }
        if (!ok) {
            char names[256] = "";
            size_t n = 0;
            json_array_foreach(t, i, e) {
                if (!json_is_string(e)) continue;
                int w = snprintf(names + n, sizeof names - n, "%s%s", i ? " or " : "",
                                 json_string_value(e));
                if (w < 0 || (size_t)w >= sizeof names - n) break;
                n += (size_t)w;
            }
            return fail(err, errlen, "%s: expected %s", p->s, names);
        }
    }

    json_t *c = json_object_get(s, "const");
    if (c && !value_equal(c, v))
        return fail(err, errlen, "%s: must be %s", p->s, short_json(c, buf, sizeof buf));
    json_t *en = json_object_get(s, "enum");
    if (json_is_array(en)) {
        bool ok = false;
        for (size_t i = 0; i < json_array_size(en) && !ok; i++)
            if (value_equal(json_array_get(en, i), v)) ok = true;
        if (!ok)
            return fail(err, errlen, "%s: must be one of %s", p->s,
                        short_json(en, buf, sizeof buf));
    }

    json_t *k;
    if (json_is_string(v)) {
        size_t len = utf8_count(json_string_value(v), json_string_length(v));
        if (json_is_integer(k = json_object_get(s, "minLength")) &&
            (json_int_t)len < json_integer_value(k))
            return fail(err, errlen, "%s: string is shorter than minLength %lld", p->s,
                        (long long)json_integer_value(k));
        if (json_is_integer(k = json_object_get(s, "maxLength")) &&
            (json_int_t)len > json_integer_value(k))
            return fail(err, errlen, "%s: string is longer than maxLength %lld", p->s,
                        (long long)json_integer_value(k));
    } else if (json_is_number(v)) {
        double d = json_number_value(v);
        if (json_is_number(k = json_object_get(s, "minimum")) && d < json_number_value(k))
            return fail(err, errlen, "%s: %g is less than minimum %g", p->s, d,
                        json_number_value(k));
        if (json_is_number(k = json_object_get(s, "maximum")) && d > json_number_value(k))
            return fail(err, errlen, "%s: %g is greater than maximum %g", p->s, d,
                        json_number_value(k));
    } else if (json_is_array(v)) {
        size_t n = json_array_size(v);
        if (json_is_integer(k = json_object_get(s, "minItems")) &&
            (json_int_t)n < json_integer_value(k))
            return fail(err, errlen, "%s: array has fewer than minItems %lld items", p->s,
                        (long long)json_integer_value(k));
        if (json_is_integer(k = json_object_get(s, "maxItems")) &&
            (json_int_t)n > json_integer_value(k))
            return fail(err, errlen, "%s: array has more than maxItems %lld items", p->s,
                        (long long)json_integer_value(k));
        json_t *items = json_object_get(s, "items");
        if (json_is_object(items)) {
            for (size_t i = 0; i < n; i++) {
                size_t o = path_push_index(p, i);
                int rc = validate(items, json_array_get(v, i), p, err, errlen);
                path_pop(p, o);
                if (rc) return rc;
            }
        }
    } else if (json_is_object(v)) {
        json_t *props = json_object_get(s, "properties");
        json_t *req = json_object_get(s, "required");
        size_t i;
        json_t *r;
        json_array_foreach(req, i, r) {
            if (json_is_string(r) && !json_object_get(v, json_string_value(r)))
                return fail(err, errlen, "%s: missing required property '%s'", p->s,
                            json_string_value(r));
        }
        bool closed = json_is_false(json_object_get(s, "additionalProperties"));
        const char *key;
        json_t *pv;
        json_object_foreach(v, key, pv) {
            json_t *ps = json_object_get(props, key);
            if (!ps) {
                if (closed)
                    return fail(err, errlen,
                                "%s: property '%s' is not allowed (additionalProperties is "
                                "false)", p->s, key);
                continue;
            }
            size_t o = path_push_key(p, key);
            int rc = validate(ps, pv, p, err, errlen);
            path_pop(p, o);
            if (rc) return rc;
        }
    }
    return 0;
}

int schema_validate(json_t *schema, json_t *value, char *err, size_t errlen)
{
    if (err && errlen) err[0] = 0;
    if (!value) return fail(err, errlen, "$: no value");
    struct path p = {.s = "$", .n = 1};
    return validate(schema, value, &p, err, errlen);
}
