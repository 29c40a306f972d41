/* Integration test harness: starts the real `aios serve` (path from the
 * AIOS_BIN environment variable) on a free loopback port with a temporary
 * data directory, and small helpers for HTTP + JSON assertions. */
#ifndef AIOS_TEST_HARNESS_H
#define AIOS_TEST_HARNESS_H

#include "cli/client.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>

struct kernel_fixture {
    struct aios_child child;
    char dir[256];
    char cfgdir[256]; /* kf_start_config's config directory, or "" */
};

/* Start a kernel; extra args NULL-terminated (may be NULL). Aborts the test
 * (fail_msg) if it does not come up, printing its log. */
struct kernel_fixture *kf_start(const char *const *extra);
/* Stop it, assert a clean exit (status 0), remove the data directory. */
void kf_stop(struct kernel_fixture *kf);
void kf_print_log(struct kernel_fixture *kf);
/* kf_start with `--config FILE`, FILE holding yaml in a temporary
 * directory of its own that kf_stop removes. */
struct kernel_fixture *kf_start_config(const char *yaml);

/* The kernel of a test group: cmocka group fixtures that start it with no
 * arguments (kf_group_setup) and stop it (kf_group_teardown). A group with
 * another kernel sets g_kf in its own setup and may still use
 * kf_group_teardown. */
extern struct kernel_fixture *g_kf;
int kf_group_setup(void **state);
int kf_group_teardown(void **state);

/* A kernel on a fresh tiny test model of its own (model "aios-tiny", one
 * thread: on a busy machine two threads spend most of their time waiting
 * for each other), in a temporary directory named after tag; llms_extra
 * (YAML, may be NULL) is appended to the config's llms: section.
 * kf_stop_tiny() stops it and removes the model, config and directory. */
struct tiny_kernel {
    struct kernel_fixture *kf;
    char dir[256], cfg[300], model[300];
};
int kf_start_tiny(struct tiny_kernel *t, const char *tag, const char *llms_extra);
void kf_stop_tiny(struct tiny_kernel *t);

/* llms_extra for kf_start_tiny: small structured-output bounds, which keep
 * the random model's constrained answers short */
#define KF_TINY_SHORT_OUTPUT                                                                       \
    "  structured_output:\n"                                                                       \
    "    max_string_length: 6\n"                                                                   \
    "    max_items: 3\n"                                                                           \
    "    max_depth: 2\n"                                                                           \
    "    max_whitespace: 1\n"

/* Defines g_tk and the cmocka group_setup/group_teardown of a test file
 * whose group runs on one tiny kernel (kf_start_tiny(tag, llms_extra)),
 * with g_kf pointing at it. */
#define KF_TINY_GROUP(tag, llms_extra)                                                             \
    static struct tiny_kernel g_tk;                                                                \
    static int group_setup(void **state)                                                           \
    {                                                                                              \
        (void)state;                                                                               \
        if (kf_start_tiny(&g_tk, (tag), (llms_extra))) return -1;                                  \
        g_kf = g_tk.kf;                                                                            \
        return 0;                                                                                  \
    }                                                                                              \
    static int group_teardown(void **state)                                                        \
    {                                                                                              \
        (void)state;                                                                               \
        kf_stop_tiny(&g_tk);                                                                       \
        g_kf = NULL;                                                                               \
        return 0;                                                                                  \
    }

/* The path of the cached embedding test model (TESTMODEL_SHAPE_EMBED),
 * built on first use; malloc'd. Fails the test when it cannot be built. */
char *kf_embed_model(void);

const char *aios_bin(void);

/* ---- PostgreSQL (docs/postgres.md, "Tests") ----
 * With AIOS_TEST_STATE=postgres in the environment, the harness starts a
 * real PostgreSQL server for the test process (initdb and pg_ctl of
 * Debian's postgresql in a temporary directory, on a free loopback port,
 * as the unprivileged `postgres` user when run as root; stopped and removed
 * at exit), and each kf_start passes the kernel a database through
 * AIOS_STATE_URL, so it keeps its state there instead of SQLite: the same
 * database as before for a kernel started again with the same --config
 * file, else a fresh one. A kernel restarted with child_start inherits the
 * URL of the last kf_start.
 * When the PostgreSQL binaries are absent the test process says so and
 * exits with 77 (ctest: skipped). */
bool kf_pg_mode(void);
/* initdb and pg_ctl are installed (AIOS_PG_BINDIR, else /usr/lib/postgresql/N/bin) */
bool kf_pg_available(void);
/* Make a fresh database and return its URL (static buffer), starting the
 * server on first use; NULL (after printing why) when it cannot. Works
 * without AIOS_TEST_STATE too (tests that always need PostgreSQL). */
const char *kf_pg_new_db(void);
/* the URL kf_start's kernels use now ("" when not in PostgreSQL mode) */
const char *kf_pg_url(void);

/* Request against the fixture; path like "/v1/models". Response JSON is
 * parsed into *json when non-NULL (NULL if not JSON). */
long kf_call(struct kernel_fixture *kf, const char *method, const char *path, const char *body,
             json_t **json);
long kf_call_n(struct kernel_fixture *kf, const char *method, const char *path, const char *body,
               size_t len, json_t **json, char *ctype, size_t ctlen);

/* One request with exactly these headers and no admin token: token (may be
 * NULL) as "Authorization: Bearer", extra_hdr (may be NULL) as it is.
 * *out (when non-NULL) gets the JSON body or NULL. */
long kf_call_as(struct kernel_fixture *kf, const char *token, const char *extra_hdr,
                const char *method, const char *path, const char *body, json_t **out);
/* POST /access/agents {"name": name} (201); the new agent's token into tok */
void kf_register_agent(struct kernel_fixture *kf, const char *name, char *tok, size_t toklen);
/* assert got == want, printing the body j (may be NULL) when it is not */
void expect_status(long got, long want, json_t *j);

/* Rows of GET /access/audit?agent=agent with this decision, resource
 * (NULL: any) and a reason containing needle (NULL: any) */
int kf_audit_count(struct kernel_fixture *kf, const char *agent, const char *decision,
                   const char *resource, const char *needle);
/* POST /agents/submit {agent_id, agent_config.task}: asserts a 200 with
 * status "success" and returns the execution id */
long long kf_submit_agent(struct kernel_fixture *kf, const char *agent_id, const char *task);
/* poll GET /agents/{id}/status until it is not "running" (fails the test
 * after timeout_s); the status object, to json_decref */
json_t *kf_wait_agent(struct kernel_fixture *kf, long long id, int timeout_s);

/* Assert that j is {"error":{"message":<non-empty string>,"type":<string>}}
 * and the message contains `needle` (when non-NULL). */
void assert_error_body(json_t *j, const char *needle);

/* Streamed chat: collects the SSE events. */
struct sse_result {
    long status;
    int n_events;       /* data: events, excluding [DONE] */
    int n_content;      /* events with non-empty delta.content */
    bool done;          /* saw data: [DONE] */
    bool first_has_role;
    char *text;         /* concatenated delta.content */
    char finish[32];
    json_t *usage;      /* from the usage chunk, if any */
    json_t *error;      /* error event, if any */
    bool bad_event;     /* an event that was not valid JSON */
    json_t *events;     /* every data: event but [DONE], parsed, in order */
};
int kf_stream(struct kernel_fixture *kf, const char *body, struct sse_result *out,
              int abort_after_events);
/* kf_stream that also counts the content events in *seen as they arrive,
 * so another thread can tell that this stream is being served (its call
 * was admitted and produced a token), not merely sent */
int kf_stream_watch(struct kernel_fixture *kf, const char *body, struct sse_result *out,
                    int abort_after_events, atomic_int *seen);
void sse_result_free(struct sse_result *r);

/* content of choices[0].message.content, or NULL */
const char *chat_content(json_t *j);
/* choices[0].logprobs.content of a chat answer or of one streamed chunk
 * (borrowed), or NULL */
json_t *chat_logprobs(json_t *j);

#endif
