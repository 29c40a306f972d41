/* Unit tests for src/util/replicas.c, the health and load of upstream
 * servers shared by the remote model replicas and the cluster's peer
 * kernels: least-outstanding choice with rotating ties, avoiding the
 * replica that just failed, a failed replica out (and its time doubling),
 * the soonest-back one probed when all are down, the overload limit of
 * KV affinity. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "util/replicas.h"

static const char *const k_names[] = {"a", "b", "c"};

static void test_least_outstanding(void **state)
{
    (void)state;
    struct replica_set s;
    assert_int_equal(replicas_init(&s, 3, 5, "test", k_names), 0);
    int first = replicas_pick(&s, -1);
    replicas_begin(&s, (size_t)first);
    int second = replicas_pick(&s, -1);
    assert_int_not_equal(second, first);
    replicas_begin(&s, (size_t)second);
    int third = replicas_pick(&s, -1);
    assert_int_not_equal(third, first);
    assert_int_not_equal(third, second);
    replicas_begin(&s, (size_t)third);
    replicas_begin(&s, 0);
    replicas_begin(&s, 2); /* a: 2, b: 1, c: 2 */
    assert_int_equal(replicas_pick(&s, -1), 1);
    assert_int_not_equal(replicas_pick(&s, 1), 1); /* avoided while another is up */
    json_t *o = json_object();
    replicas_describe(&s, 0, o);
    assert_int_equal(json_integer_value(json_object_get(o, "outstanding")), 2);
    assert_int_equal(json_integer_value(json_object_get(o, "max_outstanding")), 2);
    assert_true(json_is_true(json_object_get(o, "up")));
    json_decref(o);
    replicas_destroy(&s);
}

static void test_down_and_back(void **state)
{
    (void)state;
    struct replica_set s;
    assert_int_equal(replicas_init(&s, 2, 5, "test", k_names), 0);
    replicas_begin(&s, 0);
    replicas_end(&s, 0, false, true, "connection refused");
    assert_false(replicas_usable(&s, 0, 0));
    assert_true(replicas_usable(&s, 1, 0));
    assert_false(replicas_other_up(&s, 1));
    assert_true(replicas_other_up(&s, 0));
    for (int i = 0; i < 4; i++) assert_int_equal(replicas_pick(&s, -1), 1);
    json_t *o = json_object();
    replicas_describe(&s, 0, o);
    assert_true(json_is_false(json_object_get(o, "up")));
    double retry = json_real_value(json_object_get(o, "retry_in_s"));
    assert_true(retry > 0 && retry <= 5);
    assert_string_equal(json_string_value(json_object_get(o, "last_error")), "connection refused");
    json_decref(o);
    /* a second failure in a row: twice as long */
    replicas_begin(&s, 0);
    replicas_end(&s, 0, false, true, "again");
    o = json_object();
    replicas_describe(&s, 0, o);
    assert_true(json_real_value(json_object_get(o, "retry_in_s")) > 5);
    json_decref(o);
    /* both down: the one back soonest is the probe */
    replicas_begin(&s, 1);
    replicas_end(&s, 1, false, true, "refused");
    assert_int_equal(replicas_pick(&s, -1), 1);
    /* a success makes it up at once */
    replicas_begin(&s, 0);
    replicas_end(&s, 0, true, false, NULL);
    assert_true(replicas_usable(&s, 0, 0));
    /* a failure that does not mark it down (a 4xx) keeps it up */
    replicas_begin(&s, 0);
    replicas_end(&s, 0, false, false, "bad request");
    assert_true(replicas_usable(&s, 0, 0));
    replicas_destroy(&s);
}

static void test_overload_limit(void **state)
{
    (void)state;
    struct replica_set s;
    assert_int_equal(replicas_init(&s, 1, 5, "test", k_names), 0);
    assert_true(replicas_usable(&s, 0, 2));
    replicas_begin(&s, 0);
    assert_true(replicas_usable(&s, 0, 2));
    replicas_begin(&s, 0);
    assert_false(replicas_usable(&s, 0, 2)); /* 2 outstanding: overloaded */
    assert_true(replicas_usable(&s, 0, 0));  /* no limit */
    replicas_release(&s, 0);
    assert_true(replicas_usable(&s, 0, 2));
    assert_false(replicas_usable(&s, 1, 2)); /* no such replica */
    replicas_destroy(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_least_outstanding),
        cmocka_unit_test(test_down_and_back),
        cmocka_unit_test(test_overload_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
