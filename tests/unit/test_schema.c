/* Unit tests for src/llm/schema.c: the supported-subset check (every
 * supported keyword passes, every unsupported one fails naming keyword and
 * path, malformed keyword values fail) and validation (types incl. type
 * arrays and integral reals, properties/required/additionalProperties,
 * items, enum/const by value, length/count/range bounds, nested paths in
 * messages). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/schema.h"
#include "util/err.h"

static json_t *J(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &e);
    if (!j) fprintf(stderr, "bad test JSON: %s: %s\n", text, e.text);
    assert_non_null(j);
    return j;
}

static int check(const char *schema, char *err, size_t errlen)
{
    json_t *s = J(schema);
    int rc = schema_check_supported(s, err, errlen);
    json_decref(s);
    return rc;
}

static int valid(const char *schema, const char *value, char *err, size_t errlen)
{
    json_t *s = J(schema), *v = J(value);
    assert_int_equal(schema_check_supported(s, err, errlen), 0);
    int rc = schema_validate(s, v, err, errlen);
    json_decref(s);
    json_decref(v);
    return rc;
}

#define OK(schema, value)                                                    \
    do {                                                                     \
        char e_[256];                                                        \
        int rc_ = valid(schema, value, e_, sizeof e_);                       \
        if (rc_) fprintf(stderr, "unexpected: %s\n", e_);                    \
        assert_int_equal(rc_, 0);                                            \
    } while (0)

#define BAD(schema, value, msg)                                              \
    do {                                                                     \
        char e_[256];                                                        \
        assert_int_equal(valid(schema, value, e_, sizeof e_), AIOS_EINVAL);  \
        if (!strstr(e_, msg)) fprintf(stderr, "message: %s\n", e_);          \
        assert_non_null(strstr(e_, msg));                                    \
    } while (0)

static void test_supported_keywords(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(check("{}", err, sizeof err), 0);
    assert_int_equal(
        check("{\"type\":\"object\",\"title\":\"t\",\"description\":\"d\","
              "\"$schema\":\"https://json-schema.org/draft/2020-12/schema\","
              "\"properties\":{\"a\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":5},"
              "\"b\":{\"type\":[\"integer\",\"null\"],\"minimum\":0,\"maximum\":9},"
              "\"c\":{\"type\":\"array\",\"items\":{\"enum\":[\"x\",1,null]},\"minItems\":0,"
              "\"maxItems\":3},\"d\":{\"const\":{\"k\":[1]}},\"e\":{\"type\":\"boolean\","
              "\"default\":true}},\"required\":[\"a\"],\"additionalProperties\":false}",
              err, sizeof err), 0);
    assert_string_equal(err, "");
}

static void test_unsupported_keywords(void **state)
{
    (void)state;
    char err[512];
    const char *kw[] = {"pattern", "$ref", "anyOf", "oneOf", "allOf", "not", "format",
                        "exclusiveMinimum", "patternProperties", "uniqueItems", "$defs"};
    for (size_t i = 0; i < sizeof kw / sizeof kw[0]; i++) {
        char s[256];
        snprintf(s, sizeof s, "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":"
                 "\"string\",\"%s\":\"x\"}}}", kw[i]);
        assert_int_equal(check(s, err, sizeof err), AIOS_EINVAL);
        char want[128];
        snprintf(want, sizeof want, "keyword '%s' is not supported", kw[i]);
        assert_non_null(strstr(err, want));
        assert_non_null(strstr(err, "$.properties.city"));
    }
    /* nested under items */
    assert_int_equal(check("{\"type\":\"array\",\"items\":{\"anyOf\":[]}}", err, sizeof err),
                     AIOS_EINVAL);
    assert_non_null(strstr(err, "$.items"));
    assert_non_null(strstr(err, "'anyOf'"));
}

static void test_malformed_keywords(void **state)
{
    (void)state;
    char err[512];
    struct {
        const char *schema, *msg;
    } cases[] = {
        {"true", "boolean schemas are not supported"},
        {"[1]", "must be an object"},
        {"{\"type\":\"str\"}", "unknown type 'str'"},
        {"{\"type\":[]}", "'type' must be"},
        {"{\"type\":[\"string\",3]}", "type[1]"},
        {"{\"properties\":[]}", "'properties' must be an object"},
        {"{\"properties\":{\"a\":5}}", "$.properties.a: a schema must be an object"},
        {"{\"required\":\"a\"}", "'required' must be an array"},
        {"{\"properties\":{},\"required\":[\"a\"]}", "required property 'a' is not declared"},
        {"{\"additionalProperties\":{\"type\":\"string\"}}", "'additionalProperties' is supported only as a boolean"},
        {"{\"items\":[{}]}", "tuple form"},
        {"{\"enum\":[]}", "'enum' must be a non-empty array"},
        {"{\"minItems\":-1}", "'minItems' must be a non-negative integer"},
        {"{\"maxLength\":1.5}", "'maxLength' must be a non-negative integer"},
        {"{\"minimum\":\"0\"}", "'minimum' must be a number"},
        {"{\"minItems\":3,\"maxItems\":2}", "minItems (3) is greater than maxItems (2)"},
        {"{\"minLength\":3,\"maxLength\":2}", "minLength (3) is greater than maxLength (2)"},
        {"{\"minimum\":3,\"maximum\":2}", "minimum (3) is greater than maximum (2)"},
        {"{\"properties\":{\"a b\":{\"format\":\"date\"}}}", "$.properties[\"a b\"]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(check(cases[i].schema, err, sizeof err), AIOS_EINVAL);
        if (!strstr(err, cases[i].msg)) fprintf(stderr, "%s -> %s\n", cases[i].schema, err);
        assert_non_null(strstr(err, cases[i].msg));
    }
    /* deep nesting is refused, not a stack overflow */
    char deep[2000] = "";
    for (int i = 0; i < 100; i++) strcat(deep, "{\"items\":");
    strcat(deep, "{}");
    for (int i = 0; i < 100; i++) strcat(deep, "}");
    assert_int_equal(check(deep, err, sizeof err), AIOS_EINVAL);
    assert_non_null(strstr(err, "nested more than"));
}

static void test_validate_types(void **state)
{
    (void)state;
    OK("{\"type\":\"string\"}", "\"x\"");
    BAD("{\"type\":\"string\"}", "1", "$: expected string");
    OK("{\"type\":\"integer\"}", "3");
    OK("{\"type\":\"integer\"}", "3.0");
    BAD("{\"type\":\"integer\"}", "3.5", "$: expected integer");
    BAD("{\"type\":\"integer\"}", "\"3\"", "expected integer");
    OK("{\"type\":\"number\"}", "3");
    OK("{\"type\":\"number\"}", "-3.25e2");
    BAD("{\"type\":\"number\"}", "true", "expected number");
    OK("{\"type\":\"boolean\"}", "false");
    BAD("{\"type\":\"boolean\"}", "0", "expected boolean");
    OK("{\"type\":\"null\"}", "null");
    BAD("{\"type\":\"null\"}", "{}", "expected null");
    OK("{\"type\":\"object\"}", "{\"any\":1}");
    BAD("{\"type\":\"object\"}", "[]", "expected object");
    OK("{\"type\":\"array\"}", "[1,\"a\"]");
    BAD("{\"type\":\"array\"}", "{}", "expected array");
    OK("{\"type\":[\"string\",\"null\"]}", "null");
    OK("{\"type\":[\"string\",\"null\"]}", "\"a\"");
    BAD("{\"type\":[\"string\",\"null\"]}", "1", "$: expected string or null");
    OK("{}", "[{\"a\":null}]");
}

static void test_validate_objects(void **state)
{
    (void)state;
    const char *s = "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},"
                    "\"days\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":7},"
                    "\"unit\":{\"enum\":[\"c\",\"f\"]}},\"required\":[\"city\"],"
                    "\"additionalProperties\":false}";
    OK(s, "{\"city\":\"Paris\"}");
    OK(s, "{\"city\":\"Paris\",\"days\":3,\"unit\":\"f\"}");
    BAD(s, "{\"city\":5}", "$.city: expected string");
    BAD(s, "{\"days\":3}", "$: missing required property 'city'");
    BAD(s, "{\"city\":\"a\",\"days\":0}", "$.days: 0 is less than minimum 1");
    BAD(s, "{\"city\":\"a\",\"days\":8}", "$.days: 8 is greater than maximum 7");
    BAD(s, "{\"city\":\"a\",\"unit\":\"k\"}", "$.unit: must be one of [\"c\",\"f\"]");
    BAD(s, "{\"city\":\"a\",\"x\":1}", "property 'x' is not allowed");
    /* additionalProperties absent or true: extra keys pass */
    OK("{\"properties\":{\"a\":{\"type\":\"string\"}}}", "{\"a\":\"x\",\"b\":2}");
    OK("{\"properties\":{\"a\":{\"type\":\"string\"}},\"additionalProperties\":true}",
       "{\"b\":2}");
    /* nested paths */
    const char *n = "{\"type\":\"object\",\"properties\":{\"trip\":{\"type\":\"object\","
                    "\"properties\":{\"stops\":{\"type\":\"array\",\"items\":{\"type\":"
                    "\"object\",\"properties\":{\"name\":{\"type\":\"string\"}},\"required\":"
                    "[\"name\"]}}}}}}";
    OK(n, "{\"trip\":{\"stops\":[{\"name\":\"a\"},{\"name\":\"b\"}]}}");
    BAD(n, "{\"trip\":{\"stops\":[{\"name\":\"a\"},{\"name\":1}]}}",
        "$.trip.stops[1].name: expected string");
    BAD(n, "{\"trip\":{\"stops\":[{}]}}", "$.trip.stops[0]: missing required property 'name'");
    BAD("{\"properties\":{\"a b\":{\"type\":\"null\"}}}", "{\"a b\":1}",
        "$[\"a b\"]: expected null");
}

static void test_validate_arrays_strings_enums(void **state)
{
    (void)state;
    const char *a = "{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":1,"
                    "\"maxItems\":2}";
    OK(a, "[1]");
    OK(a, "[1,2]");
    BAD(a, "[]", "fewer than minItems 1");
    BAD(a, "[1,2,3]", "more than maxItems 2");
    BAD(a, "[1,\"x\"]", "$[1]: expected integer");

    const char *s = "{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}";
    OK(s, "\"ab\"");
    OK(s, "\"\xC3\xA9\xC3\xA9\xC3\xA9\""); /* 3 code points, 6 bytes */
    BAD(s, "\"a\"", "shorter than minLength 2");
    BAD(s, "\"abcd\"", "longer than maxLength 3");
    /* length keywords do not apply to other types */
    OK("{\"minLength\":2,\"maxLength\":3}", "5");

    OK("{\"enum\":[1,\"a\",null,{\"k\":[true]}]}", "1.0");
    OK("{\"enum\":[1,\"a\",null,{\"k\":[true]}]}", "{\"k\":[true]}");
    OK("{\"enum\":[1,\"a\",null,{\"k\":[true]}]}", "null");
    BAD("{\"enum\":[1,\"a\",null]}", "2", "must be one of");
    OK("{\"const\":\"x\"}", "\"x\"");
    BAD("{\"const\":\"x\"}", "\"y\"", "$: must be \"x\"");
    OK("{\"type\":\"number\",\"minimum\":-1.5,\"maximum\":0.5}", "-1.5");
    BAD("{\"type\":\"number\",\"minimum\":-1.5,\"maximum\":0.5}", "0.75", "greater than maximum");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_supported_keywords),
        cmocka_unit_test(test_unsupported_keywords),
        cmocka_unit_test(test_malformed_keywords),
        cmocka_unit_test(test_validate_types),
        cmocka_unit_test(test_validate_objects),
        cmocka_unit_test(test_validate_arrays_strings_enums),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
