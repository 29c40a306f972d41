/* Kernel configuration: YAML text -> JSON tree -> struct aios_config.
 *
 * Two stages. config_yaml_to_json() turns one YAML document into a jansson
 * tree using libyaml's event parser and an explicit stack (no recursion, so
 * nesting depth is bounded by Y2J_MAX_DEPTH, not by the C stack). Scalars
 * are typed the way PyYAML types them, because the files we read are
 * written for the AIOS reference, which loads them with PyYAML: plain
 * `8000` is an int, `"8000"` a string, `yes`/`on` booleans, `~` null.
 * Anchors and aliases are refused rather than expanded: expansion is the
 * "billion laughs" amplifier and no AIOS config needs it. Duplicate keys are
 * refused too (PyYAML silently keeps the last one; for a config that hides
 * mistakes).
 *
 * While converting, the loader may record where each value came from in a
 * side table (struct y2j_posv) keyed by (parent container, key or index),
 * plus the container node itself. Keying by parent rather than by value is
 * deliberate: jansson's true/false/null are shared singletons, so a value
 * pointer does not identify a place. Validation (cfg_apply) then reports
 * "line L col C: server.port: ..." for a value that came from the file.
 * The table lives only for the duration of config_load_string().
 *
 * Stage two, cfg_apply(), reads the keys this kernel uses out of the tree
 * into struct aios_config and checks them; unknown keys are ignored but the
 * whole tree stays in cfg->raw for modules that want more (config_lookup).
 *
 * Ownership: every char * in struct aios_config and struct cfg_model is
 * malloc'd and owned by the config; raw is owned (one reference). On any
 * load error the struct is freed and zeroed, so a caller never sees half a
 * configuration. Threads: loading runs once at start-up on one thread;
 * afterwards the struct is read-only and may be read from any thread
 * without locks. Nothing here keeps global state. */
#include "kernel/config.h"
#include "util/err.h"
#include "util/util.h"

#include <yaml.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define Y2J_MAX_DEPTH 256

#define TAG_STR "tag:yaml.org,2002:str"
#define TAG_INT "tag:yaml.org,2002:int"
#define TAG_FLOAT "tag:yaml.org,2002:float"
#define TAG_BOOL "tag:yaml.org,2002:bool"
#define TAG_NULL "tag:yaml.org,2002:null"
#define TAG_MAP "tag:yaml.org,2002:map"
#define TAG_SEQ "tag:yaml.org,2002:seq"

/* printf into err (util_errf) */
#define set_err(err, errlen, ...) ((void)util_errf(err, errlen, AIOS_OK, __VA_ARGS__))

/* ---------------------------------------------------------------------------
 * Source positions
 */

struct y2j_pos {
    const json_t *parent; /* container holding node; NULL for the root */
    const json_t *node;   /* the value (meaningful for containers only) */
    char *key;            /* mapping key (owned) or NULL for a list item */
    size_t index;         /* list index when key == NULL */
    int line, col;        /* 1-based */
};

struct y2j_posv {
    struct y2j_pos *v;
    size_t n, cap;
};

static void posv_free(struct y2j_posv *pv)
{
    if (!pv) return;
    for (size_t i = 0; i < pv->n; i++) free(pv->v[i].key);
    free(pv->v);
    memset(pv, 0, sizeof(*pv));
}

/* Takes ownership of key (freed on failure too). */
static int posv_add(struct y2j_posv *pv, const json_t *parent, const json_t *node, char *key,
                    size_t index, const yaml_mark_t *m)
{
    if (!pv) {
        free(key);
        return 0;
    }
    if (pv->n == pv->cap) {
        size_t cap = pv->cap ? pv->cap * 2 : 64;
        struct y2j_pos *v = realloc(pv->v, cap * sizeof(*v));
        if (!v) {
            free(key);
            return AIOS_ENOMEM;
        }
        pv->v = v;
        pv->cap = cap;
    }
    pv->v[pv->n++] = (struct y2j_pos){parent, node, key, index, (int)m->line + 1,
                                      (int)m->column + 1};
    return 0;
}

static const struct y2j_pos *posv_find_child(const struct y2j_posv *pv, const json_t *parent,
                                             const char *key, size_t index)
{
    if (!pv || !parent) return NULL;
    for (size_t i = 0; i < pv->n; i++) {
        const struct y2j_pos *p = &pv->v[i];
        if (p->parent != parent) continue;
        if (key ? (p->key && !strcmp(p->key, key)) : (!p->key && p->index == index)) return p;
    }
    return NULL;
}

static const struct y2j_pos *posv_find_node(const struct y2j_posv *pv, const json_t *node)
{
    if (!pv || !node) return NULL;
    for (size_t i = 0; i < pv->n; i++)
        if (pv->v[i].node == node) return &pv->v[i];
    return NULL;
}

/* ---------------------------------------------------------------------------
 * Scalar resolution (PyYAML's YAML 1.1 resolver, minus sexagesimal numbers)
 */

static bool in_set(const char *s, size_t n, const char *const *set)
{
    for (; *set; set++)
        if (strlen(*set) == n && !memcmp(*set, s, n)) return true;
    return false;
}

static const char *const k_null[] = {"~", "null", "Null", "NULL", NULL};
static const char *const k_true[] = {"yes", "Yes", "YES", "true", "True", "TRUE",
                                     "on",  "On",  "ON",  NULL};
static const char *const k_false[] = {"no",    "No",    "NO",  "false", "False",
                                      "FALSE", "off",   "Off", "OFF",   NULL};

static int digit_val(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return 99;
}

/* 1: an int in *out; 0: not an int; -1: an int that does not fit 64 bits. */
static int parse_int(const char *s, size_t n, int64_t *out)
{
    size_t i = 0;
    bool neg = false, overflow = false;
    int base = 10, nd = 0;
    uint64_t acc = 0;

    if (i < n && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
    if (i >= n) return 0;
    if (s[i] == '0') {
        if (i + 1 == n) {
            *out = 0;
            return 1;
        }
        if (s[i + 1] == 'b') {
            base = 2;
            i += 2;
        } else if (s[i + 1] == 'x') {
            base = 16;
            i += 2;
        } else {
            base = 8; /* YAML 1.1: 0755 is octal */
            i += 1;
            nd = 1;
        }
    } else if (s[i] < '1' || s[i] > '9') {
        return 0;
    }
    for (; i < n; i++) {
        if (s[i] == '_') continue;
        int d = digit_val(s[i]);
        if (d >= base) return 0;
        if (acc > (UINT64_MAX - (uint64_t)d) / (uint64_t)base) overflow = true;
        acc = acc * (uint64_t)base + (uint64_t)d;
        nd++;
    }
    if (!nd) return 0;
    if (overflow || acc > (uint64_t)INT64_MAX + (neg ? 1u : 0u)) return -1;
    if (neg)
        *out = acc == (uint64_t)INT64_MAX + 1u ? INT64_MIN : -(int64_t)acc;
    else
        *out = (int64_t)acc;
    return 1;
}

/* [-+]? (digits? . digits? | digits) ([eE][-+]?digits)?, with a dot or an
 * exponent and at least one mantissa digit; '_' allowed in the mantissa.
 * (PyYAML wants a dot and a signed exponent; accepting 1e5 is kinder.) */
static bool parse_float(const char *s, size_t n, double *out)
{
    char buf[128];
    size_t i = 0, o = 0;
    bool dot = false, exp = false;
    int nd = 0;

    if (n >= sizeof(buf)) return false;
    if (i < n && (s[i] == '+' || s[i] == '-')) buf[o++] = s[i++];
    for (; i < n; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9') {
            buf[o++] = c;
            nd++;
        } else if (c == '_' && (nd || dot)) {
            continue;
        } else if (c == '.' && !dot) {
            buf[o++] = c;
            dot = true;
        } else {
            break;
        }
    }
    if (!nd) return false;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        int ne = 0;
        exp = true;
        buf[o++] = s[i++];
        if (i < n && (s[i] == '+' || s[i] == '-')) buf[o++] = s[i++];
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++, ne++) buf[o++] = s[i];
        if (!ne) return false;
    }
    if (i != n || (!dot && !exp)) return false;
    buf[o] = '\0';
    errno = 0;
    char *end;
    double d = strtod(buf, &end);
    if (*end || !isfinite(d)) return false; /* 1e999: keep the text */
    *out = d;
    return true;
}

/* New JSON value for a plain untagged scalar. NULL only on OOM/bad UTF-8. */
static json_t *resolve_plain(const char *s, size_t n)
{
    int64_t iv;
    double dv;
    if (n == 0 || in_set(s, n, k_null)) return json_null();
    if (in_set(s, n, k_true)) return json_true();
    if (in_set(s, n, k_false)) return json_false();
    if (parse_int(s, n, &iv) == 1) return json_integer((json_int_t)iv);
    if (parse_float(s, n, &dv)) return json_real(dv);
    return json_stringn(s, n);
}

/* ---------------------------------------------------------------------------
 * YAML events -> JSON tree
 */

struct y2j_frame {
    json_t *node; /* borrowed: owned by its parent or by the root */
    char *key;    /* pending mapping key (owned) awaiting its value */
};

struct y2j {
    struct y2j_frame stack[Y2J_MAX_DEPTH];
    size_t depth;
    json_t *root;
    struct y2j_posv *pv;
    char *err;
    size_t errlen;
};

#define MARK_FMT "line %d col %d: "
#define MARK_ARGS(m) (int)(m).line + 1, (int)(m).column + 1

/* Place a new value (stolen) in the current container. */
static int y2j_attach(struct y2j *y, json_t *v, const yaml_mark_t *m)
{
    if (y->depth == 0) {
        y->root = v;
        return posv_add(y->pv, NULL, v, NULL, 0, m);
    }
    struct y2j_frame *top = &y->stack[y->depth - 1];
    if (json_is_array(top->node)) {
        size_t idx = json_array_size(top->node);
        if (json_array_append_new(top->node, v)) return AIOS_ENOMEM;
        return posv_add(y->pv, top->node, v, NULL, idx, m);
    }
    char *key = top->key;
    top->key = NULL;
    if (json_object_set_new(top->node, key, v)) {
        set_err(y->err, y->errlen, MARK_FMT "key '%.60s' is not valid UTF-8", MARK_ARGS(*m),
                key);
        free(key);
        return AIOS_ECONFIG;
    }
    return posv_add(y->pv, top->node, v, key, 0, m);
}

static bool y2j_want_key(const struct y2j *y)
{
    return y->depth && json_is_object(y->stack[y->depth - 1].node) && !y->stack[y->depth - 1].key;
}

static int y2j_scalar(struct y2j *y, const yaml_event_t *ev)
{
    const char *s = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    const char *tag = (const char *)ev->data.scalar.tag;
    const yaml_mark_t *m = &ev->start_mark;
    json_t *v = NULL;

    if (y2j_want_key(y)) {
        struct y2j_frame *top = &y->stack[y->depth - 1];
        if (strlen(s) != n) {
            set_err(y->err, y->errlen, MARK_FMT "mapping key contains a NUL byte", MARK_ARGS(*m));
            return AIOS_ECONFIG;
        }
        if (json_object_get(top->node, s)) {
            set_err(y->err, y->errlen, MARK_FMT "duplicate key '%.60s'", MARK_ARGS(*m), s);
            return AIOS_ECONFIG;
        }
        top->key = strdup(s);
        return top->key ? 0 : AIOS_ENOMEM;
    }

    if (!tag) {
        if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
            v = resolve_plain(s, n);
        else
            v = json_stringn(s, n);
    } else if (!strcmp(tag, "!") || !strcmp(tag, TAG_STR)) {
        v = json_stringn(s, n);
    } else if (!strcmp(tag, TAG_NULL)) {
        if (n && !in_set(s, n, k_null)) goto bad_tagged;
        v = json_null();
    } else if (!strcmp(tag, TAG_BOOL)) {
        if (in_set(s, n, k_true))
            v = json_true();
        else if (in_set(s, n, k_false))
            v = json_false();
        else
            goto bad_tagged;
    } else if (!strcmp(tag, TAG_INT)) {
        int64_t iv;
        if (parse_int(s, n, &iv) != 1) goto bad_tagged;
        v = json_integer((json_int_t)iv);
    } else if (!strcmp(tag, TAG_FLOAT)) {
        double dv;
        int64_t iv;
        if (parse_float(s, n, &dv))
            v = json_real(dv);
        else if (parse_int(s, n, &iv) == 1)
            v = json_real((double)iv);
        else
            goto bad_tagged;
    } else {
        set_err(y->err, y->errlen, MARK_FMT "unsupported tag '%.60s'", MARK_ARGS(*m), tag);
        return AIOS_ECONFIG;
    }
    if (!v) {
        set_err(y->err, y->errlen, MARK_FMT "string is not valid UTF-8", MARK_ARGS(*m));
        return AIOS_ECONFIG;
    }
    return y2j_attach(y, v, m);

bad_tagged:
    set_err(y->err, y->errlen, MARK_FMT "'%.60s' does not match its tag %s", MARK_ARGS(*m), s,
            tag);
    return AIOS_ECONFIG;
}

static int y2j_start(struct y2j *y, const yaml_event_t *ev, bool is_map)
{
    const char *tag = (const char *)(is_map ? ev->data.mapping_start.tag
                                            : ev->data.sequence_start.tag);
    const yaml_mark_t *m = &ev->start_mark;
    int rc;

    if (y2j_want_key(y)) {
        set_err(y->err, y->errlen, MARK_FMT "complex mapping keys are not supported",
                MARK_ARGS(*m));
        return AIOS_ECONFIG;
    }
    if (tag && strcmp(tag, is_map ? TAG_MAP : TAG_SEQ)) {
        set_err(y->err, y->errlen, MARK_FMT "unsupported tag '%.60s'", MARK_ARGS(*m), tag);
        return AIOS_ECONFIG;
    }
    if (y->depth == Y2J_MAX_DEPTH) {
        set_err(y->err, y->errlen, MARK_FMT "nesting deeper than %d levels", MARK_ARGS(*m),
                Y2J_MAX_DEPTH);
        return AIOS_ECONFIG;
    }
    json_t *v = is_map ? json_object() : json_array();
    if (!v) return AIOS_ENOMEM;
    rc = y2j_attach(y, v, m); /* v now owned by its parent or y->root */
    if (rc) return rc;
    y->stack[y->depth++] = (struct y2j_frame){v, NULL};
    return 0;
}

/* libyaml reports reader errors (bad UTF-8, control characters) by byte
 * offset; turn that into a line and column like the others. */
static void y2j_offset_mark(const char *yaml, size_t len, size_t off, int *line, int *col)
{
    size_t ls = 0;
    *line = 1;
    if (off > len) off = len;
    for (size_t i = 0; i < off; i++)
        if (yaml[i] == '\n') {
            (*line)++;
            ls = i + 1;
        }
    *col = (int)(off - ls) + 1;
}

static int y2j_run(const char *yaml, size_t len, json_t **out, struct y2j_posv *pv, char *err,
                   size_t errlen)
{
    yaml_parser_t parser;
    yaml_event_t ev;
    bool have_ev = false, done = false;
    int n_docs = 0, rc = 0;
    struct y2j *y = calloc(1, sizeof(*y));

    *out = NULL;
    if (!y) return AIOS_ENOMEM;
    y->pv = pv;
    y->err = err;
    y->errlen = errlen;
    if (!yaml_parser_initialize(&parser)) {
        free(y);
        set_err(err, errlen, "out of memory");
        return AIOS_ENOMEM;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)(yaml ? yaml : ""),
                                 yaml ? len : 0);

    while (!done) {
        if (!yaml_parser_parse(&parser, &ev)) {
            if (parser.error == YAML_MEMORY_ERROR) {
                set_err(err, errlen, "out of memory");
                rc = AIOS_ENOMEM;
            } else if (parser.error == YAML_READER_ERROR) {
                int line, col;
                y2j_offset_mark(yaml, len, parser.problem_offset, &line, &col);
                set_err(err, errlen, "line %d col %d: %s", line, col,
                        parser.problem ? parser.problem : "unreadable input");
                rc = AIOS_ECONFIG;
            } else if (parser.context) {
                set_err(err, errlen, MARK_FMT "%s (%s at line %d col %d)",
                        MARK_ARGS(parser.problem_mark),
                        parser.problem ? parser.problem : "syntax error", parser.context,
                        MARK_ARGS(parser.context_mark));
                rc = AIOS_ECONFIG;
            } else {
                set_err(err, errlen, MARK_FMT "%s", MARK_ARGS(parser.problem_mark),
                        parser.problem ? parser.problem : "syntax error");
                rc = AIOS_ECONFIG;
            }
            goto fail;
        }
        have_ev = true;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++n_docs > 1) {
                set_err(err, errlen, MARK_FMT "more than one YAML document in the file",
                        MARK_ARGS(ev.start_mark));
                rc = AIOS_ECONFIG;
                goto fail;
            }
            break;
        case YAML_ALIAS_EVENT:
            set_err(err, errlen, MARK_FMT "aliases (*%.60s) are not supported",
                    MARK_ARGS(ev.start_mark), (const char *)ev.data.alias.anchor);
            rc = AIOS_ECONFIG;
            goto fail;
        case YAML_SCALAR_EVENT:
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT: {
            const yaml_char_t *anchor = ev.type == YAML_SCALAR_EVENT ? ev.data.scalar.anchor
                                        : ev.type == YAML_SEQUENCE_START_EVENT
                                            ? ev.data.sequence_start.anchor
                                            : ev.data.mapping_start.anchor;
            if (anchor) {
                set_err(err, errlen, MARK_FMT "anchors (&%.60s) are not supported",
                        MARK_ARGS(ev.start_mark), (const char *)anchor);
                rc = AIOS_ECONFIG;
                goto fail;
            }
            if (ev.type == YAML_SCALAR_EVENT)
                rc = y2j_scalar(y, &ev);
            else
                rc = y2j_start(y, &ev, ev.type == YAML_MAPPING_START_EVENT);
            if (rc) {
                if (rc == AIOS_ENOMEM) set_err(err, errlen, "out of memory");
                goto fail;
            }
            break;
        }
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            if (y->depth) {
                y->depth--;
                free(y->stack[y->depth].key);
                y->stack[y->depth].key = NULL;
            }
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
        have_ev = false;
    }
    yaml_parser_delete(&parser);
    *out = y->root ? y->root : json_null();
    free(y);
    return 0;

fail:
    if (have_ev) yaml_event_delete(&ev);
    yaml_parser_delete(&parser);
    for (size_t i = 0; i < y->depth; i++) free(y->stack[i].key);
    json_decref(y->root);
    free(y);
    return rc;
}

int config_yaml_to_json(const char *yaml, size_t len, json_t **out, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    if (!out) {
        set_err(err, errlen, "no output");
        return AIOS_EINVAL;
    }
    return y2j_run(yaml, len, out, NULL, err, errlen);
}

/* ---------------------------------------------------------------------------
 * Tree -> struct aios_config
 */

struct cfg_ctx {
    const struct y2j_posv *pv;
    char *err;
    size_t errlen;
};

static void describe(const json_t *v, char *buf, size_t n)
{
    switch (json_typeof(v)) {
    case JSON_STRING: snprintf(buf, n, "string \"%.40s\"", json_string_value(v)); break;
    case JSON_INTEGER: snprintf(buf, n, "integer %lld", (long long)json_integer_value(v)); break;
    case JSON_REAL: snprintf(buf, n, "float %g", json_real_value(v)); break;
    case JSON_TRUE: snprintf(buf, n, "boolean true"); break;
    case JSON_FALSE: snprintf(buf, n, "boolean false"); break;
    case JSON_NULL: snprintf(buf, n, "null"); break;
    case JSON_OBJECT: snprintf(buf, n, "a mapping"); break;
    case JSON_ARRAY: snprintf(buf, n, "a list"); break;
    default: snprintf(buf, n, "something else"); break;
    }
}

/* Report a problem with parent[key] (or parent[index] when key is NULL),
 * located at that value if it came from the file, else at parent. */
static int cfg_fail(const struct cfg_ctx *cx, const json_t *parent, const char *key, size_t index,
                    const char *path, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static int cfg_fail(const struct cfg_ctx *cx, const json_t *parent, const char *key, size_t index,
                    const char *path, const char *fmt, ...)
{
    char msg[384];
    va_list ap;
    const struct y2j_pos *p = posv_find_child(cx->pv, parent, key, index);

    if (!p) p = posv_find_node(cx->pv, parent);
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (p)
        set_err(cx->err, cx->errlen, "line %d col %d: %s: %s", p->line, p->col, path, msg);
    else
        set_err(cx->err, cx->errlen, "%s: %s", path, msg);
    return AIOS_ECONFIG;
}

/* parent[key] as a mapping: *out NULL when absent or null. */
static int cfg_mapping(const struct cfg_ctx *cx, const json_t *parent, const char *key,
                       const char *path, json_t **out)
{
    char what[96];
    json_t *v = parent ? json_object_get(parent, key) : NULL;
    *out = NULL;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_object(v)) {
        describe(v, what, sizeof(what));
        return cfg_fail(cx, parent, key, 0, path, "expected a mapping, got %s", what);
    }
    *out = v;
    return 0;
}

enum { CFG_REQUIRED = 1, CFG_EMPTY_IS_NULL = 2 };

/* parent[key] as a string into *dst (replacing and freeing the old value).
 * Absent or null keeps *dst unless CFG_REQUIRED; "" is an error unless
 * CFG_EMPTY_IS_NULL (then treated as absent). */
static int cfg_string(const struct cfg_ctx *cx, const json_t *parent, const char *key,
                      const char *path, int flags, char **dst)
{
    char what[96];
    json_t *v = parent ? json_object_get(parent, key) : NULL;

    if (v && json_is_string(v) && !json_string_length(v) && (flags & CFG_EMPTY_IS_NULL))
        v = NULL;
    if (!v || json_is_null(v)) {
        if (flags & CFG_REQUIRED)
            return cfg_fail(cx, parent, key, 0, path, "required key is missing");
        return 0;
    }
    if (!json_is_string(v)) {
        describe(v, what, sizeof(what));
        return cfg_fail(cx, parent, key, 0, path, "expected a string, got %s", what);
    }
    if (!json_string_length(v)) return cfg_fail(cx, parent, key, 0, path, "must not be empty");
    if (strlen(json_string_value(v)) != json_string_length(v))
        return cfg_fail(cx, parent, key, 0, path, "contains a NUL byte");
    char *s = strdup(json_string_value(v));
    if (!s) return AIOS_ENOMEM;
    free(*dst);
    *dst = s;
    return 0;
}

/* parent[key] as an integer in lo..hi into *dst; absent or null keeps it. */
static int cfg_int(const struct cfg_ctx *cx, const json_t *parent, const char *key,
                   const char *path, long long lo, long long hi, long long *dst)
{
    char what[96];
    json_t *v = parent ? json_object_get(parent, key) : NULL;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v)) {
        describe(v, what, sizeof(what));
        if (hi == LLONG_MAX)
            return cfg_fail(cx, parent, key, 0, path, "expected an integer >= %lld, got %s", lo,
                            what);
        return cfg_fail(cx, parent, key, 0, path, "expected an integer in %lld..%lld, got %s",
                        lo, hi, what);
    }
    long long x = (long long)json_integer_value(v);
    if (x < lo || x > hi) {
        if (hi == LLONG_MAX)
            return cfg_fail(cx, parent, key, 0, path, "%lld is too small (minimum %lld)", x, lo);
        return cfg_fail(cx, parent, key, 0, path, "%lld is out of range %lld..%lld", x, lo, hi);
    }
    *dst = x;
    return 0;
}

/* parent[key] as a non-negative number into *dst; absent or null keeps it. */
static int cfg_price(const struct cfg_ctx *cx, const json_t *parent, const char *key,
                     const char *path, double *dst)
{
    char what[96];
    json_t *v = parent ? json_object_get(parent, key) : NULL;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v) || json_number_value(v) < 0 || !isfinite(json_number_value(v))) {
        describe(v, what, sizeof(what));
        return cfg_fail(cx, parent, key, 0, path, "expected a price >= 0 per million tokens, got %s",
                        what);
    }
    *dst = json_number_value(v) / 1e6;
    return 0;
}

static void lowercase(char *s)
{
    for (; s && *s; s++) *s = (char)tolower((unsigned char)*s);
}

/* a kernel's name in a cluster: 1..64 of letters, digits and -_. (it goes
 * into a database column, headers and log lines) */
static bool cluster_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64) return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("-_.", s[i])) return false;
    return true;
}

static bool http_url_ok(const char *s)
{
    return (!strncmp(s, "http://", 7) && s[7]) || (!strncmp(s, "https://", 8) && s[8]);
}

/* cluster: {name, url, peers: [{name, url}], max_outstanding, peer_down_s,
 * connect_timeout_ms, timeout_s}; AIOS_CLUSTER_NAME wins over cluster.name. Needs the
 * postgres state (the affinity table is shared). */
static int cfg_cluster_parse(const struct cfg_ctx *cx, struct aios_config *cfg, const json_t *root)
{
    struct cfg_cluster *cl = &cfg->cluster;
    json_t *c;
    int rc;
    long long x;
    char path[64], what[96];
    if ((rc = cfg_mapping(cx, root, "cluster", "cluster", &c))) return rc;
    cl->max_outstanding = CONFIG_DEFAULT_CLUSTER_MAX_OUTSTANDING;
    cl->peer_down_s = CONFIG_DEFAULT_CLUSTER_PEER_DOWN_S;
    cl->connect_timeout_ms = CONFIG_DEFAULT_CLUSTER_CONNECT_TIMEOUT_MS;
    cl->timeout_s = CONFIG_DEFAULT_CLUSTER_TIMEOUT_S;
    if ((rc = cfg_string(cx, c, "name", "cluster.name", 0, &cl->name))) return rc;
    const char *env = getenv("AIOS_CLUSTER_NAME");
    if (env && *env) {
        free(cl->name);
        if (!(cl->name = strdup(env))) return AIOS_ENOMEM;
        if (!cluster_name_ok(cl->name))
            return cfg_fail(cx, root, "cluster", 0, "AIOS_CLUSTER_NAME",
                            "\"%.40s\" is not a kernel name (1..64 letters, digits, -_.)", env);
    }
    if (!c && !cl->name) return 0;
    if (!cl->name)
        return cfg_fail(cx, c, "name", 0, "cluster.name",
                        "required: this kernel's name among its peers (or AIOS_CLUSTER_NAME)");
    if (!cluster_name_ok(cl->name))
        return cfg_fail(cx, c, "name", 0, "cluster.name",
                        "\"%.40s\" is not a kernel name (1..64 letters, digits, -_.)", cl->name);
    if (!config_state_pg(cfg))
        return cfg_fail(cx, root, "cluster", 0, "cluster",
                        "kernels in a cluster share their state: set state.backend postgres "
                        "and state.url (docs/postgres.md)");
    if ((rc = cfg_string(cx, c, "url", "cluster.url", 0, &cl->url))) return rc;
    if (cl->url && !http_url_ok(cl->url))
        return cfg_fail(cx, c, "url", 0, "cluster.url", "\"%.60s\" must start with http:// or https://",
                        cl->url);
    x = cl->max_outstanding;
    if ((rc = cfg_int(cx, c, "max_outstanding", "cluster.max_outstanding", 1, 100000, &x))) return rc;
    cl->max_outstanding = (int)x;
    x = cl->peer_down_s;
    if ((rc = cfg_int(cx, c, "peer_down_s", "cluster.peer_down_s", 1, 60, &x))) return rc;
    cl->peer_down_s = (int)x;
    x = cl->connect_timeout_ms;
    if ((rc = cfg_int(cx, c, "connect_timeout_ms", "cluster.connect_timeout_ms", 1, 60000, &x)))
        return rc;
    cl->connect_timeout_ms = (int)x;
    x = cl->timeout_s;
    if ((rc = cfg_int(cx, c, "timeout_s", "cluster.timeout_s", 1, 86400, &x))) return rc;
    cl->timeout_s = (int)x;
    json_t *list = c ? json_object_get(c, "peers") : NULL;
    if (!list || json_is_null(list)) return 0;
    if (!json_is_array(list)) {
        describe(list, what, sizeof what);
        return cfg_fail(cx, c, "peers", 0, "cluster.peers",
                        "expected a list of {name, url}, got %s", what);
    }
    size_t n = json_array_size(list);
    if (n > 64) return cfg_fail(cx, c, "peers", 0, "cluster.peers", "at most 64 peers");
    if (n && !(cl->peers = calloc(n, sizeof *cl->peers))) return AIOS_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(list, i);
        snprintf(path, sizeof path, "cluster.peers[%zu]", i);
        if (!json_is_object(e)) {
            describe(e, what, sizeof what);
            return cfg_fail(cx, list, NULL, i, path, "expected a mapping {name, url}, got %s", what);
        }
        struct cfg_peer pe = {0};
        char p2[80];
        snprintf(p2, sizeof p2, "%s.name", path);
        if ((rc = cfg_string(cx, e, "name", p2, CFG_REQUIRED, &pe.name))) return rc;
        snprintf(p2, sizeof p2, "%s.url", path);
        if ((rc = cfg_string(cx, e, "url", p2, CFG_REQUIRED, &pe.url))) {
            free(pe.name);
            return rc;
        }
        const char *bad = !cluster_name_ok(pe.name) ? "name" : !http_url_ok(pe.url) ? "url" : NULL;
        for (size_t j = 0; !bad && j < cl->n_peers; j++)
            if (!strcmp(cl->peers[j].name, pe.name)) bad = "dup";
        if (bad) {
            snprintf(p2, sizeof p2, "%s.%s", path, strcmp(bad, "dup") ? bad : "name");
            rc = cfg_fail(cx, e, strcmp(bad, "dup") ? bad : "name", 0, p2,
                          !strcmp(bad, "name") ? "\"%.40s\" is not a kernel name (1..64 letters, digits, -_.)"
                          : !strcmp(bad, "url") ? "\"%.60s\" must start with http:// or https://"
                                                : "\"%.40s\" is named twice",
                          !strcmp(bad, "url") ? pe.url : pe.name);
            free(pe.name);
            free(pe.url);
            return rc;
        }
        if (!strcmp(pe.name, cl->name)) { /* one list for every kernel: this one is left out */
            if (!cl->url) cl->url = pe.url;
            else free(pe.url);
            free(pe.name);
            continue;
        }
        cl->peers[cl->n_peers++] = pe;
    }
    return 0;
}

static int cfg_model_parse(const struct cfg_ctx *cx, struct aios_config *cfg, const json_t *list,
                           size_t i)
{
    char path[96], what[96];
    const json_t *m = json_array_get(list, i);
    struct cfg_model *md = &cfg->models[i];
    long long x;
    int rc;

    snprintf(path, sizeof(path), "llms.models[%zu]", i);
    if (!json_is_object(m)) {
        describe(m, what, sizeof(what));
        return cfg_fail(cx, list, NULL, i, path,
                        "expected a mapping with name and backend, got %s", what);
    }
    md->n_ctx = CONFIG_DEFAULT_N_CTX;
    snprintf(path, sizeof(path), "llms.models[%zu].name", i);
    if ((rc = cfg_string(cx, m, "name", path, CFG_REQUIRED, &md->name))) return rc;
    snprintf(path, sizeof(path), "llms.models[%zu].backend", i);
    if ((rc = cfg_string(cx, m, "backend", path, CFG_REQUIRED, &md->backend))) return rc;
    lowercase(md->backend);
    if (!strcmp(md->backend, "llama.cpp") || !strcmp(md->backend, "llama_cpp") ||
        !strcmp(md->backend, "llama-cpp"))
        strcpy(md->backend, "llamacpp"); /* shorter: fits in place */
    snprintf(path, sizeof(path), "llms.models[%zu].path", i);
    if ((rc = cfg_string(cx, m, "path", path, CFG_EMPTY_IS_NULL, &md->path))) return rc;
    snprintf(path, sizeof(path), "llms.models[%zu].hostname", i);
    if ((rc = cfg_string(cx, m, "hostname", path, CFG_EMPTY_IS_NULL, &md->hostname))) return rc;
    x = md->n_ctx;
    snprintf(path, sizeof(path), "llms.models[%zu].n_ctx", i);
    if ((rc = cfg_int(cx, m, "n_ctx", path, 16, INT_MAX, &x))) return rc;
    md->n_ctx = (int)x;
    x = md->n_threads;
    json_t *price = NULL;
    snprintf(path, sizeof(path), "llms.models[%zu].price", i);
    if ((rc = cfg_mapping(cx, m, "price", path, &price))) return rc;
    snprintf(path, sizeof(path), "llms.models[%zu].price.prompt_per_1m", i);
    if ((rc = cfg_price(cx, price, "prompt_per_1m", path, &md->price_prompt))) return rc;
    snprintf(path, sizeof(path), "llms.models[%zu].price.completion_per_1m", i);
    if ((rc = cfg_price(cx, price, "completion_per_1m", path, &md->price_completion))) return rc;
    snprintf(path, sizeof(path), "llms.models[%zu].n_threads", i);
    if ((rc = cfg_int(cx, m, "n_threads", path, 0, INT_MAX, &x))) return rc;
    md->n_threads = (int)x;

    if (!strcmp(md->backend, "llamacpp") && !md->path) {
        snprintf(path, sizeof(path), "llms.models[%zu].path", i);
        return cfg_fail(cx, m, "path", 0, path,
                        "model \"%.60s\" has backend llamacpp and needs a path to a GGUF file",
                        md->name);
    }
    for (size_t j = 0; j < i; j++) {
        /* same name and same remote backend: replicas of one model */
        if (!strcmp(cfg->models[j].name, md->name) &&
            (strcmp(cfg->models[j].backend, md->backend) || !strcmp(md->backend, "llamacpp"))) {
            snprintf(path, sizeof(path), "llms.models[%zu].name", i);
            return cfg_fail(cx, m, "name", 0, path,
                            "duplicate model name \"%.60s\" (also llms.models[%zu]; entries "
                            "may share a name only as replicas of one remote backend)", md->name,
                            j);
        }
    }
    return 0;
}

static int cfg_apply(const struct cfg_ctx *cx, struct aios_config *cfg)
{
    const json_t *root = cfg->raw;
    json_t *server, *storage, *sched, *llms;
    char what[96];
    long long x;
    int rc;

    if ((rc = cfg_string(cx, root, "data_dir", "data_dir", 0, &cfg->data_dir))) return rc;

    if ((rc = cfg_mapping(cx, root, "server", "server", &server))) return rc;
    if ((rc = cfg_string(cx, server, "host", "server.host", 0, &cfg->host))) return rc;
    x = cfg->port;
    if ((rc = cfg_int(cx, server, "port", "server.port", 1, 65535, &x))) return rc;
    cfg->port = (int)x;
    x = (long long)cfg->max_body_bytes;
    if ((rc = cfg_int(cx, server, "max_body_bytes", "server.max_body_bytes", 1024,
                      (unsigned long long)SIZE_MAX > (unsigned long long)LLONG_MAX
                          ? LLONG_MAX
                          : (long long)SIZE_MAX,
                      &x)))
        return rc;
    cfg->max_body_bytes = (size_t)x;
    x = cfg->max_connections;
    if ((rc = cfg_int(cx, server, "max_connections", "server.max_connections", 16, 1 << 20, &x)))
        return rc;
    cfg->max_connections = (int)x;
    x = cfg->max_connections_per_ip;
    if ((rc = cfg_int(cx, server, "max_connections_per_ip", "server.max_connections_per_ip", 1,
                      cfg->max_connections, &x)))
        return rc;
    /* the default when only max_connections is set lower */
    cfg->max_connections_per_ip = (int)(x < cfg->max_connections ? x : cfg->max_connections);
    x = cfg->request_timeout_s;
    if ((rc = cfg_int(cx, server, "request_timeout_s", "server.request_timeout_s", 1, 3600, &x)))
        return rc;
    cfg->request_timeout_s = (int)x;
    x = cfg->idle_timeout_s;
    if ((rc = cfg_int(cx, server, "idle_timeout_s", "server.idle_timeout_s", 1, 86400, &x)))
        return rc;
    cfg->idle_timeout_s = (int)x;

    if ((rc = cfg_mapping(cx, root, "storage", "storage", &storage))) return rc;
    if ((rc = cfg_string(cx, storage, "root_dir", "storage.root_dir", 0, &cfg->storage_root)))
        return rc;

    /* where the managers keep their durable state (docs/postgres.md) */
    json_t *state;
    if ((rc = cfg_mapping(cx, root, "state", "state", &state))) return rc;
    if ((rc = cfg_string(cx, state, "backend", "state.backend", 0, &cfg->state_backend)))
        return rc;
    lowercase(cfg->state_backend);
    if (!strcmp(cfg->state_backend, "postgresql")) {
        free(cfg->state_backend);
        if (!(cfg->state_backend = strdup("postgres"))) return AIOS_ENOMEM;
    }
    if (strcmp(cfg->state_backend, "sqlite") && strcmp(cfg->state_backend, "postgres"))
        return cfg_fail(cx, state, "backend", 0, "state.backend",
                        "unknown backend \"%.40s\" (use sqlite or postgres)", cfg->state_backend);
    if ((rc = cfg_string(cx, state, "url", "state.url", 0, &cfg->state_url))) return rc;
    long long lease = cfg->state_lease_s;
    if ((rc = cfg_int(cx, state, "lease_s", "state.lease_s", 1, 3600, &lease))) return rc;
    cfg->state_lease_s = (int)lease;
    /* AIOS_STATE_URL (the environment) wins over the file: the same
     * kernel configuration can be pointed at a database server */
    const char *env_url = getenv("AIOS_STATE_URL");
    if (env_url && *env_url) {
        free(cfg->state_backend);
        free(cfg->state_url);
        cfg->state_backend = strdup("postgres");
        cfg->state_url = strdup(env_url);
        if (!cfg->state_backend || !cfg->state_url) return AIOS_ENOMEM;
    }
    if (!strcmp(cfg->state_backend, "postgres") && !cfg->state_url)
        return cfg_fail(cx, state, "url", 0, "state.url",
                        "state.backend postgres needs state.url (e.g. "
                        "postgresql://user@host:5432/aios)");

    if ((rc = cfg_cluster_parse(cx, cfg, root))) return rc;

    if ((rc = cfg_mapping(cx, root, "scheduler", "scheduler", &sched))) return rc;
    if ((rc = cfg_string(cx, sched, "policy", "scheduler.policy", 0, &cfg->sched_policy)))
        return rc;
    lowercase(cfg->sched_policy);
    if (strcmp(cfg->sched_policy, "fifo") && strcmp(cfg->sched_policy, "rr") &&
        strcmp(cfg->sched_policy, "fair"))
        return cfg_fail(cx, sched, "policy", 0, "scheduler.policy",
                        "unknown policy \"%.40s\" (use fifo, rr or fair)", cfg->sched_policy);

    if ((rc = cfg_mapping(cx, root, "llms", "llms", &llms))) return rc;
    json_t *list = llms ? json_object_get(llms, "models") : NULL;
    if (list && !json_is_null(list)) {
        if (!json_is_array(list)) {
            describe(list, what, sizeof(what));
            return cfg_fail(cx, llms, "models", 0, "llms.models",
                            "expected a list of models, got %s", what);
        }
        size_t n = json_array_size(list);
        if (n) {
            cfg->models = calloc(n, sizeof(*cfg->models));
            if (!cfg->models) return AIOS_ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
            cfg->n_models = i + 1; /* so config_free sees a partial entry */
            if ((rc = cfg_model_parse(cx, cfg, list, i))) return rc;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------
 * Public API
 */

void config_init_defaults(struct aios_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof(*cfg));
    cfg->host = strdup(CONFIG_DEFAULT_HOST);
    cfg->port = CONFIG_DEFAULT_PORT;
    cfg->data_dir = strdup(CONFIG_DEFAULT_DATA_DIR);
    cfg->max_body_bytes = CONFIG_DEFAULT_MAX_BODY;
    cfg->max_connections = CONFIG_DEFAULT_MAX_CONNECTIONS;
    cfg->max_connections_per_ip = CONFIG_DEFAULT_MAX_CONNECTIONS_PER_IP;
    cfg->request_timeout_s = CONFIG_DEFAULT_REQUEST_TIMEOUT_S;
    cfg->idle_timeout_s = CONFIG_DEFAULT_IDLE_TIMEOUT_S;
    cfg->sched_policy = strdup(CONFIG_DEFAULT_POLICY);
    cfg->storage_root = strdup(CONFIG_DEFAULT_STORAGE_ROOT);
    cfg->state_backend = strdup(CONFIG_DEFAULT_STATE_BACKEND);
    cfg->state_lease_s = CONFIG_DEFAULT_STATE_LEASE_S;
    cfg->raw = json_object();
}

void config_free(struct aios_config *cfg)
{
    if (!cfg) return;
    free(cfg->host);
    free(cfg->data_dir);
    free(cfg->sched_policy);
    free(cfg->storage_root);
    free(cfg->state_backend);
    free(cfg->state_url);
    free(cfg->cluster.name);
    free(cfg->cluster.url);
    for (size_t i = 0; i < cfg->cluster.n_peers; i++) {
        free(cfg->cluster.peers[i].name);
        free(cfg->cluster.peers[i].url);
    }
    free(cfg->cluster.peers);
    for (size_t i = 0; i < cfg->n_models; i++) {
        free(cfg->models[i].name);
        free(cfg->models[i].backend);
        free(cfg->models[i].path);
        free(cfg->models[i].hostname);
    }
    free(cfg->models);
    json_decref(cfg->raw);
    memset(cfg, 0, sizeof(*cfg));
}

int config_load_string(struct aios_config *cfg, const char *yaml, size_t len, char *err,
                       size_t errlen)
{
    struct y2j_posv pv = {0};
    struct cfg_ctx cx = {&pv, err, errlen};
    json_t *doc = NULL;
    char what[96];
    int rc;

    if (err && errlen) err[0] = '\0';
    if (!cfg) {
        set_err(err, errlen, "no configuration to fill");
        return AIOS_EINVAL;
    }
    config_init_defaults(cfg);
    if (!cfg->host || !cfg->data_dir || !cfg->sched_policy || !cfg->storage_root || !cfg->state_backend ||
        !cfg->raw) {
        rc = AIOS_ENOMEM;
        goto fail;
    }
    rc = y2j_run(yaml, yaml ? len : 0, &doc, &pv, err, errlen);
    if (rc) goto fail;
    if (json_is_null(doc)) {
        json_decref(doc); /* empty file: defaults, raw stays {} */
        doc = NULL;
    } else if (!json_is_object(doc)) {
        const struct y2j_pos *p = posv_find_node(&pv, doc);
        describe(doc, what, sizeof(what));
        set_err(err, errlen, "line %d col %d: top level: expected a mapping, got %s",
                p ? p->line : 1, p ? p->col : 1, what);
        rc = AIOS_ECONFIG;
        goto fail;
    } else {
        json_decref(cfg->raw);
        cfg->raw = doc;
        doc = NULL;
    }
    rc = cfg_apply(&cx, cfg);
    if (rc) goto fail;
    posv_free(&pv);
    return 0;

fail:
    if (rc == AIOS_ENOMEM) set_err(err, errlen, "out of memory");
    json_decref(doc);
    posv_free(&pv);
    config_free(cfg);
    return rc;
}

int config_load_file(struct aios_config *cfg, const char *path, char *err, size_t errlen)
{
    char inner[512];
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int fd = -1, rc;
    struct stat st;

    if (err && errlen) err[0] = '\0';
    if (cfg) memset(cfg, 0, sizeof(*cfg));
    if (!cfg || !path) {
        set_err(err, errlen, "no configuration or path");
        return AIOS_EINVAL;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        set_err(err, errlen, "%s: cannot open config file: %s", path, strerror(e));
        rc = e == ENOENT ? AIOS_ENOTFOUND : AIOS_EIO;
        goto fail;
    }
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        set_err(err, errlen, "%s: is a directory, not a config file", path);
        rc = AIOS_EIO;
        goto fail;
    }
    for (;;) {
        if (n == cap) {
            if (cap > CONFIG_MAX_FILE_BYTES) {
                set_err(err, errlen, "%s: config file larger than %zu bytes", path,
                        (size_t)CONFIG_MAX_FILE_BYTES);
                rc = AIOS_ECONFIG;
                goto fail;
            }
            size_t ncap = cap ? cap * 2 : 4096;
            char *nb = realloc(buf, ncap + 1);
            if (!nb) {
                set_err(err, errlen, "%s: out of memory", path);
                rc = AIOS_ENOMEM;
                goto fail;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            set_err(err, errlen, "%s: cannot read config file: %s", path, strerror(errno));
            rc = AIOS_EIO;
            goto fail;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    fd = -1;
    if (n > CONFIG_MAX_FILE_BYTES) {
        set_err(err, errlen, "%s: config file larger than %zu bytes", path,
                (size_t)CONFIG_MAX_FILE_BYTES);
        rc = AIOS_ECONFIG;
        goto fail;
    }
    rc = config_load_string(cfg, buf ? buf : "", n, inner, sizeof(inner));
    if (rc) {
        set_err(err, errlen, "%s: %s", path, inner);
        goto fail;
    }
    free(buf);
    return 0;

fail:
    if (fd >= 0) close(fd);
    free(buf);
    config_free(cfg);
    return rc;
}

bool config_state_pg(const struct aios_config *cfg)
{
    return cfg && cfg->state_backend && !strcmp(cfg->state_backend, "postgres");
}

const struct cfg_model *config_find_model(const struct aios_config *cfg, const char *name)
{
    if (!cfg || !name) return NULL;
    for (size_t i = 0; i < cfg->n_models; i++)
        if (cfg->models[i].name && !strcmp(cfg->models[i].name, name)) return &cfg->models[i];
    return NULL;
}

json_t *config_lookup(const struct aios_config *cfg, const char *dotted)
{
    json_t *v;
    if (!cfg || !cfg->raw || !dotted) return NULL;
    v = cfg->raw;
    for (const char *p = dotted;;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (!json_is_object(v)) return NULL;
        v = json_object_getn(v, p, n);
        if (!v || !dot) return v;
        p = dot + 1;
    }
}

char *config_resolve_path(const struct aios_config *cfg, const char *p)
{
    char *out;
    if (!cfg || !p) return NULL;
    if (p[0] == '/' || !cfg->data_dir || !cfg->data_dir[0]) return strdup(p);
    size_t dl = strlen(cfg->data_dir);
    bool slash = cfg->data_dir[dl - 1] == '/';
    if (asprintf(&out, "%s%s%s", cfg->data_dir, slash ? "" : "/", p) < 0) return NULL;
    return out;
}
