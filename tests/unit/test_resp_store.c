/* Unit: the responses manager and its SQLite store (src/resp): records
 * namespaced by agent (another agent's id is absent, for get, delete and
 * chains), chains walked back oldest first, a missing ancestor named, and
 * records surviving a reopen of the database. */
#include "resp/resp.h"
#include "util/err.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_dir[64];

static struct resp_mgr *open_mgr(void)
{
    struct aios_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.data_dir = g_dir;
    struct resp_mgr *m = NULL;
    char err[256] = "";
    int rc = resp_mgr_open(&m, &cfg, err, sizeof err);
    if (rc) fail_msg("open: %s", err);
    return m;
}

static void put(struct resp_mgr *m, const char *agent, const char *id, const char *prev)
{
    struct resp_rec r = {
        .id = (char *)id, .agent = (char *)agent, .prev_id = (char *)prev,
        .model = (char *)"tiny", .created_at = 1700000000, .input = (char *)"[]",
        .response = (char *)"{\"output\":[]}",
    };
    assert_int_equal(resp_put(m, &r), 0);
}

static void test_store(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/aios-resp-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    struct resp_mgr *m = open_mgr();
    put(m, "alice", "resp_a", NULL);
    put(m, "alice", "resp_b", "resp_a");
    put(m, "alice", "resp_c", "resp_b");
    put(m, "bob", "resp_x", NULL);
    /* the same id twice is refused */
    struct resp_rec dup = {.id = (char *)"resp_a", .agent = (char *)"alice", .model = (char *)"t",
                           .input = (char *)"[]", .response = (char *)"{}"};
    assert_int_equal(resp_put(m, &dup), AIOS_EIO);

    struct resp_rec *r = NULL;
    assert_int_equal(resp_get(m, "alice", "resp_b", &r), 0);
    assert_string_equal(r->prev_id, "resp_a");
    assert_string_equal(r->model, "tiny");
    assert_int_equal(r->created_at, 1700000000);
    resp_rec_free(r);
    /* another agent's id is absent */
    assert_int_equal(resp_get(m, "bob", "resp_b", &r), AIOS_ENOTFOUND);
    assert_null(r);
    assert_int_equal(resp_delete(m, "bob", "resp_a"), AIOS_ENOTFOUND);

    struct resp_rec **ch = NULL;
    size_t n = 0;
    char missing[64] = "";
    assert_int_equal(resp_chain(m, "alice", "resp_c", &ch, &n, missing, sizeof missing), 0);
    assert_int_equal(n, 3);
    assert_string_equal(ch[0]->id, "resp_a");
    assert_string_equal(ch[1]->id, "resp_b");
    assert_string_equal(ch[2]->id, "resp_c");
    resp_chain_free(ch, n);
    assert_int_equal(resp_chain(m, "bob", "resp_c", &ch, &n, missing, sizeof missing),
                     AIOS_ENOTFOUND);
    assert_string_equal(missing, "resp_c");

    /* a deleted ancestor breaks the chain, and is named */
    assert_int_equal(resp_delete(m, "alice", "resp_a"), 0);
    assert_int_equal(resp_delete(m, "alice", "resp_a"), AIOS_ENOTFOUND);
    assert_int_equal(resp_chain(m, "alice", "resp_c", &ch, &n, missing, sizeof missing),
                     AIOS_ENOTFOUND);
    assert_string_equal(missing, "resp_a");
    resp_mgr_close(m);

    /* durable: a reopened store has the rest */
    m = open_mgr();
    assert_int_equal(resp_get(m, "alice", "resp_c", &r), 0);
    assert_string_equal(r->response, "{\"output\":[]}");
    resp_rec_free(r);
    assert_int_equal(resp_get(m, "bob", "resp_x", &r), 0);
    resp_rec_free(r);
    resp_mgr_close(m);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_store)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
