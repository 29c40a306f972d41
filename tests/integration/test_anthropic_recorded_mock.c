/* Integration, with a MOCK upstream: Anthropic's Messages API cannot be
 * reached from here, so this test serves recorded Anthropic exchanges (the
 * JSON and SSE literals below, in the shapes of Anthropic's API reference)
 * from a small libmicrohttpd server on loopback inside the test process.
 * The kernel under test is the real `aios serve`, configured with backend
 * anthropic and that server as its hostname.
 *
 * Checked: the request mapping (path /v1/messages, x-api-key and
 * anthropic-version headers, system messages lifted to "system",
 * max_tokens always sent, temperature clamped to 0..1, stop ->
 * stop_sequences, no seed), the answer mapping (content text,
 * stop_reason -> finish_reason, usage input/output tokens), streamed
 * answers parsed from Anthropic's SSE events, a broken stream resumed from
 * its text snapshot, (delivered in small pieces so
 * events split across reads), error statuses (404, 401), a retry after 529
 * overloaded, an error event in the middle of a stream, 200 calls in
 * flight at once on the one remote thread, a timeout (504), and a client
 * that leaves mid-stream.
 *
 * Tools (recorded tool_use exchanges): OpenAI tools/tool_choice become
 * Anthropic tools with input_schema and tool_choice {"type":"tool"}, the
 * name "demo_author/web_search" goes as "demo_author__web_search" and comes
 * back restored; tool-call history becomes tool_use / tool_result blocks;
 * a tool_use answer (whole and streamed with input_json_delta) comes back as
 * OpenAI tool_calls with the upstream id; arguments that do not match the
 * schema are a 502 naming the tool; response_format json_schema goes as a
 * forced json_response tool whose input becomes the content; a stream that
 * breaks inside a tool_use block is resumed from its text and yields only
 * the resumed attempt's call. */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- recorded exchanges ---- */

static const char REC_MESSAGE[] =
    "{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\",\"type\":\"message\",\"role\":\"assistant\","
    "\"model\":\"claude-ok\",\"content\":[{\"type\":\"text\",\"text\":\"Hello! How can I help you "
    "today?\"}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,"
    "\"usage\":{\"input_tokens\":12,\"output_tokens\":9}}";

static const char REC_STREAM[] =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY\","
    "\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-ok\","
    "\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n"
    "\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n"
    "\n"
    "event: ping\n"
    "data: {\"type\": \"ping\"}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Red, \"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"green \\u00e9t \"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"blue\"}}\n"
    "\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n"
    "\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\",\"stop_sequence\":null},"
    "\"usage\":{\"output_tokens\":15}}\n"
    "\n"
    "event: message_stop\n"
    "data: {\"type\":\"message_stop\"}\n"
    "\n";

static const char REC_STREAM_ERROR[] =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\",\"type\":\"message\","
    "\"role\":\"assistant\",\"content\":[],\"model\":\"claude-midfail\",\"usage\":{\"input_tokens\":7,"
    "\"output_tokens\":1}}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Partial\"}}\n"
    "\n"
    "event: error\n"
    "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n"
    "\n";

/* the continuation of REC_STREAM_ERROR's "Partial", asked for with that
 * text as the final assistant message */
static const char REC_STREAM_RESUMED[] =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_3\",\"type\":\"message\","
    "\"role\":\"assistant\",\"content\":[],\"model\":\"claude-resume\",\"usage\":{\"input_tokens\":9,"
    "\"output_tokens\":1}}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" answer, resumed.\"}}\n"
    "\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":4}}\n"
    "\n"
    "event: message_stop\n"
    "data: {\"type\":\"message_stop\"}\n"
    "\n";
static const char REC_STREAM_ERROR_AT_ONCE[] =
    "event: error\n"
    "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n"
    "\n";

static const char REC_TOOL_USE[] =
    "{\"id\":\"msg_01Aq9w938a90dw8q\",\"type\":\"message\",\"role\":\"assistant\","
    "\"model\":\"claude-tools\",\"content\":[{\"type\":\"text\",\"text\":\"I'll search for that.\"},"
    "{\"type\":\"tool_use\",\"id\":\"toolu_01A09q90qw90lq917835lq9\",\"name\":\"demo_author__web_search\","
    "\"input\":{\"query\":\"dogs\"}}],\"stop_reason\":\"tool_use\",\"stop_sequence\":null,"
    "\"usage\":{\"input_tokens\":384,\"output_tokens\":57}}";

/* the same, with arguments that break the schema (query must be a string) */
static const char REC_TOOL_USE_BAD[] =
    "{\"id\":\"msg_01Aq9w938a90dw8r\",\"type\":\"message\",\"role\":\"assistant\","
    "\"model\":\"claude-toolsbad\",\"content\":[{\"type\":\"tool_use\",\"id\":\"toolu_01B\","
    "\"name\":\"demo_author__web_search\",\"input\":{\"query\":42}}],\"stop_reason\":\"tool_use\","
    "\"stop_sequence\":null,\"usage\":{\"input_tokens\":380,\"output_tokens\":40}}";

static const char REC_TOOL_STREAM[] =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p7gG3wDgGV9EUtLvnow3U\","
    "\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-tools\",\"stop_sequence\":null,"
    "\"usage\":{\"input_tokens\":472,\"output_tokens\":2},\"content\":[],\"stop_reason\":null}}\n"
    "\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\","
    "\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"demo_author__web_search\",\"input\":{}}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\"\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\"{\\\"query\\\": \\\"do\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\"gs\\\"}\"}}\n"
    "\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n"
    "\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},"
    "\"usage\":{\"output_tokens\":89}}\n"
    "\n"
    "event: message_stop\n"
    "data: {\"type\":\"message_stop\"}\n"
    "\n";

/* a streamed tool_use that breaks inside the tool block (after some text),
 * and its continuation asked for with that text as the assistant prefix */
static const char REC_TOOL_STREAM_BROKEN[] =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_tb1\",\"type\":\"message\","
    "\"role\":\"assistant\",\"model\":\"claude-toolresume\",\"content\":[],\"stop_reason\":null,"
    "\"usage\":{\"input_tokens\":30,\"output_tokens\":1}}}\n"
    "\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me look.\"}}\n"
    "\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n"
    "\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\","
    "\"id\":\"toolu_broken\",\"name\":\"demo_author__web_search\",\"input\":{}}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\"{\\\"query\\\": \\\"ca\"}}\n"
    "\n"
    "event: error\n"
    "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n"
    "\n";
static const char REC_TOOL_STREAM_RESUMED[] =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_tb2\",\"type\":\"message\","
    "\"role\":\"assistant\",\"model\":\"claude-toolresume\",\"content\":[],\"stop_reason\":null,"
    "\"usage\":{\"input_tokens\":33,\"output_tokens\":1}}}\n"
    "\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" Searching.\"}}\n"
    "\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n"
    "\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\","
    "\"id\":\"toolu_whole\",\"name\":\"demo_author__web_search\",\"input\":{}}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\"{\\\"query\\\": \\\"dogs\\\"}\"}}\n"
    "\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":1}\n"
    "\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},"
    "\"usage\":{\"output_tokens\":20}}\n"
    "\n"
    "event: message_stop\n"
    "data: {\"type\":\"message_stop\"}\n"
    "\n";

static const char REC_JSON_TOOL[] =
    "{\"id\":\"msg_01J\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-tools\","
    "\"content\":[{\"type\":\"tool_use\",\"id\":\"toolu_01J\",\"name\":\"json_response\","
    "\"input\":{\"name\":\"Ada\",\"age\":36}}],\"stop_reason\":\"tool_use\",\"stop_sequence\":null,"
    "\"usage\":{\"input_tokens\":120,\"output_tokens\":20}}";

static const char REC_NOT_FOUND[] =
    "{\"type\":\"error\",\"error\":{\"type\":\"not_found_error\",\"message\":\"model: claude-missing\"}}";
static const char REC_BAD_KEY[] =
    "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\",\"message\":\"invalid x-api-key\"}}";
static const char REC_OVERLOADED[] =
    "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}";

/* ---- the mock server ---- */

struct seen {
    char model[64];
    char path[128];
    char api_key[128];
    char version[64];
    json_t *body;
};

static struct MHD_Daemon *g_mock;
static int g_mock_port;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static struct seen g_last; /* the last request, guarded by g_mu */
static int g_busy_requests;
/* claude-slow: every request is held until N_SLOW are in flight at once */
enum { N_SLOW = 200 };
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static int g_slow_arrived;

struct upload {
    char *buf;
    size_t n;
};

/* claude-hang, streamed: one delta, then keep-alive comments every 50 ms
 * for up to 10 s (a write to a client that left ends it sooner) */
static const char REC_HANG_START[] =
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Partial\"}}\n"
    "\n";

static ssize_t hang_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)cls;
    size_t n0 = sizeof REC_HANG_START - 1;
    if (pos < n0) {
        size_t n = n0 - pos < max ? n0 - pos : max;
        memcpy(buf, REC_HANG_START + pos, n);
        return (ssize_t)n;
    }
    if (pos > n0 + 200 * 3) return MHD_CONTENT_READER_END_OF_STREAM;
    usleep(50000);
    if (max < 3) return 0;
    memcpy(buf, ":\n\n", 3);
    return 3;
}

static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    const char *s = cls;
    size_t len = strlen(s);
    if (pos >= len) return MHD_CONTENT_READER_END_OF_STREAM;
    size_t n = len - pos;
    if (n > 13) n = 13; /* small pieces: events and lines split across reads */
    if (n > max) n = max;
    memcpy(buf, s + pos, n);
    return (ssize_t)n;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned st, const char *body, bool sse)
{
    struct MHD_Response *r =
        sse ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 256, sse_reader, (void *)body, NULL)
            : MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, "Content-Type", sse ? "text/event-stream" : "application/json");
    enum MHD_Result ret = MHD_queue_response(c, st, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result answer(struct MHD_Connection *c, const char *url, const char *method,
                              const char *model, bool stream, int busy, bool resumed);

static enum MHD_Result mock_handler(void *cls, struct MHD_Connection *c, const char *url,
                                    const char *method, const char *version, const char *data,
                                    size_t *n_data, void **con_cls)
{
    (void)cls;
    (void)version;
    struct upload *u = *con_cls;
    if (!u) {
        *con_cls = calloc(1, sizeof *u);
        return MHD_YES;
    }
    if (*n_data) {
        u->buf = realloc(u->buf, u->n + *n_data + 1);
        memcpy(u->buf + u->n, data, *n_data);
        u->n += *n_data;
        u->buf[u->n] = 0;
        *n_data = 0;
        return MHD_YES;
    }
    json_t *body = json_loadb(u->buf ? u->buf : "", u->n, 0, NULL);
    const char *model = json_string_value(json_object_get(body, "model"));
    /* a resumed call ends with the text so far as an assistant message */
    json_t *msgs = json_object_get(body, "messages");
    json_t *lastm = json_array_get(msgs, json_array_size(msgs) - 1);
    const char *lrole = json_string_value(json_object_get(lastm, "role"));
    const char *ltext = json_string_value(json_object_get(lastm, "content"));
    bool resumed = lrole && !strcmp(lrole, "assistant") && ltext &&
                   (!strcmp(ltext, "Partial") || !strcmp(ltext, "Let me look."));
    bool stream = json_is_true(json_object_get(body, "stream"));
    const char *key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-api-key");
    const char *ver = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "anthropic-version");
    pthread_mutex_lock(&g_mu);
    json_decref(g_last.body);
    g_last.body = json_incref(body);
    snprintf(g_last.model, sizeof g_last.model, "%s", model ? model : "");
    snprintf(g_last.path, sizeof g_last.path, "%s %s", method, url);
    snprintf(g_last.api_key, sizeof g_last.api_key, "%s", key ? key : "");
    snprintf(g_last.version, sizeof g_last.version, "%s", ver ? ver : "");
    int busy = model && !strcmp(model, "claude-busy") ? ++g_busy_requests : 0;
    pthread_mutex_unlock(&g_mu);
    enum MHD_Result ret = answer(c, url, method, model, stream, busy, resumed);
    json_decref(body); /* model points into it */
    return ret;
}

static enum MHD_Result answer(struct MHD_Connection *c, const char *url, const char *method,
                              const char *model, bool stream, int busy, bool resumed)
{
    if (strcmp(url, "/v1/messages") || strcmp(method, "POST") || !model)
        return reply(c, 404, REC_NOT_FOUND, false);
    if (!strcmp(model, "claude-slow")) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 60;
        pthread_mutex_lock(&g_mu);
        if (++g_slow_arrived >= N_SLOW) pthread_cond_broadcast(&g_cv);
        while (g_slow_arrived < N_SLOW && pthread_cond_timedwait(&g_cv, &g_mu, &until) == 0) {}
        bool all = g_slow_arrived >= N_SLOW;
        pthread_mutex_unlock(&g_mu);
        if (!all) return reply(c, 400, REC_NOT_FOUND, false); /* fails the test */
        return reply(c, 200, REC_MESSAGE, false);
    }
    if (!strcmp(model, "claude-hang")) {
        if (!stream) {
            sleep(3); /* the kernel's timeout_s for this model is 1 */
            return reply(c, 200, REC_MESSAGE, false);
        }
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 256,
                                                                   hang_reader, NULL, NULL);
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        enum MHD_Result ret = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (!strcmp(model, "claude-missing")) return reply(c, 404, REC_NOT_FOUND, false);
    if (!strcmp(model, "claude-badkey")) return reply(c, 401, REC_BAD_KEY, false);
    if (busy == 1) return reply(c, 529, REC_OVERLOADED, false);
    if (!strcmp(model, "claude-midfail"))
        return reply(c, 200, resumed ? REC_STREAM_ERROR_AT_ONCE : REC_STREAM_ERROR, true);
    if (!strcmp(model, "claude-nostream")) return reply(c, 200, REC_MESSAGE, false);
    if (!strcmp(model, "claude-toolsbad")) return reply(c, 200, REC_TOOL_USE_BAD, false);
    if (!strcmp(model, "claude-tools")) {
        pthread_mutex_lock(&g_mu);
        bool json = json_object_get(g_last.body, "tools") &&
                    !strcmp(json_string_value(json_object_get(json_array_get(json_object_get(g_last.body, "tools"), 0), "name")), "json_response");
        pthread_mutex_unlock(&g_mu);
        if (json) return reply(c, 200, REC_JSON_TOOL, false);
        return stream ? reply(c, 200, REC_TOOL_STREAM, true) : reply(c, 200, REC_TOOL_USE, false);
    }
    if (!strcmp(model, "claude-toolresume"))
        return reply(c, 200, resumed ? REC_TOOL_STREAM_RESUMED : REC_TOOL_STREAM_BROKEN, true);
    if (!strcmp(model, "claude-resume"))
        return reply(c, 200, resumed ? REC_STREAM_RESUMED : REC_STREAM_ERROR, true);
    return stream ? reply(c, 200, REC_STREAM, true) : reply(c, 200, REC_MESSAGE, false);
}

static void mock_done(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    struct upload *u = *con_cls;
    if (u) free(u->buf);
    free(u);
    *con_cls = NULL;
}

/* ---- fixture ---- */

static struct kernel_fixture *g_k;
static char g_cfg[64];

static int group_setup(void **state)
{
    (void)state;
    g_mock = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                                  MHD_USE_POLL | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                              mock_handler, NULL, MHD_OPTION_NOTIFY_COMPLETED, mock_done, NULL,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)(N_SLOW + 50), MHD_OPTION_END);
    assert_non_null(g_mock);
    g_mock_port = MHD_get_daemon_info(g_mock, MHD_DAEMON_INFO_BIND_PORT)->port;
    snprintf(g_cfg, sizeof g_cfg, "/tmp/aios-it-anthropic-XXXXXX");
    int fd = mkstemp(g_cfg);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f, "api_keys:\n  anthropic: \"sk-ant-recorded-test\"\n"
               "llms:\n  remote: {retry_backoff_ms: 10}\n  models:\n");
    const char *names[] = {"claude-ok", "claude-missing", "claude-badkey", "claude-busy",
                           "claude-midfail", "claude-slow", "claude-resume", "claude-nostream",
                           "claude-tools", "claude-toolsbad", "claude-toolresume"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        fprintf(f, "    - {name: %s, backend: anthropic, hostname: \"http://127.0.0.1:%d\"}\n",
                names[i], g_mock_port);
    fprintf(f, "    - {name: claude-hang, backend: anthropic, hostname: \"http://127.0.0.1:%d\", "
               "timeout_s: 1, max_retries: 0}\n", g_mock_port);
    fclose(f);
    const char *extra[] = {"--config", g_cfg, NULL};
    unsetenv("ANTHROPIC_API_KEY");
    g_k = kf_start(extra);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (g_k) kf_stop(g_k);
    MHD_stop_daemon(g_mock);
    json_decref(g_last.body);
    unlink(g_cfg);
    return 0;
}

static struct seen last_request(void)
{
    pthread_mutex_lock(&g_mu);
    struct seen s = g_last;
    json_incref(s.body);
    pthread_mutex_unlock(&g_mu);
    return s;
}

/* ---- tests ---- */

static void test_message_mapping(void **state)
{
    (void)state;
    json_t *j = NULL;
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions",
                             "{\"model\":\"claude-ok\",\"max_tokens\":50,\"temperature\":1.5,"
                             "\"seed\":3,\"stop\":[\"END\"],\"messages\":["
                             "{\"role\":\"system\",\"content\":\"You are terse.\"},"
                             "{\"role\":\"user\",\"content\":\"Hi\"}]}", &j), 200);
    assert_string_equal(chat_content(j), "Hello! How can I help you today?");
    json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(c0, "finish_reason")), "stop");
    json_t *u = json_object_get(j, "usage");
    assert_int_equal(json_integer_value(json_object_get(u, "prompt_tokens")), 12);
    assert_int_equal(json_integer_value(json_object_get(u, "completion_tokens")), 9);
    assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")), 21);
    json_decref(j);

    struct seen s = last_request();
    assert_string_equal(s.path, "POST /v1/messages");
    assert_string_equal(s.api_key, "sk-ant-recorded-test");
    assert_string_equal(s.version, "2023-06-01");
    assert_string_equal(json_string_value(json_object_get(s.body, "model")), "claude-ok");
    assert_string_equal(json_string_value(json_object_get(s.body, "system")), "You are terse.");
    json_t *msgs = json_object_get(s.body, "messages");
    assert_int_equal(json_array_size(msgs), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(msgs, 0), "role")), "user");
    assert_string_equal(json_string_value(json_object_get(json_array_get(msgs, 0), "content")), "Hi");
    assert_int_equal(json_integer_value(json_object_get(s.body, "max_tokens")), 50);
    assert_true(json_number_value(json_object_get(s.body, "temperature")) == 1.0); /* clamped */
    assert_string_equal(json_string_value(json_array_get(json_object_get(s.body, "stop_sequences"), 0)), "END");
    assert_null(json_object_get(s.body, "seed"));
    assert_null(json_object_get(s.body, "stream"));
    json_decref(s.body);

    /* max_tokens is required by Anthropic: a default is sent */
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions",
                             "{\"model\":\"claude-ok\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}",
                             &j), 200);
    json_decref(j);
    s = last_request();
    assert_int_equal(json_integer_value(json_object_get(s.body, "max_tokens")), 4096);
    assert_null(json_object_get(s.body, "system"));
    json_decref(s.body);

    /* only a system message: refused before anything is sent */
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions",
                             "{\"model\":\"claude-ok\",\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}",
                             &j), 400);
    assert_error_body(j, "at least one user or assistant message");
    json_decref(j);
}

#define A_TOOLS                                                                                   \
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"demo_author/web_search\","         \
    "\"description\":\"Search the web\",\"parameters\":{\"type\":\"object\",\"properties\":"      \
    "{\"query\":{\"type\":\"string\"}},\"required\":[\"query\"]}}},{\"type\":\"function\","      \
    "\"function\":{\"name\":\"now\"}}]"
#define A_HISTORY                                                                                 \
    "\"messages\":[{\"role\":\"system\",\"content\":\"Use tools.\"},"                              \
    "{\"role\":\"user\",\"content\":\"Search cats\"},{\"role\":\"assistant\",\"content\":null,"   \
    "\"tool_calls\":[{\"id\":\"toolu_prev\",\"type\":\"function\",\"function\":{\"name\":"        \
    "\"demo_author/web_search\",\"arguments\":\"{\\\"query\\\":\\\"cats\\\"}\"}}]},"              \
    "{\"role\":\"tool\",\"tool_call_id\":\"toolu_prev\",\"content\":\"cats are mammals\"},"       \
    "{\"role\":\"user\",\"content\":\"Now dogs\"}]"

static void test_tool_use_mapping(void **state)
{
    (void)state;
    json_t *j = NULL;
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions",
                             "{\"model\":\"claude-tools\",\"max_tokens\":100," A_HISTORY "," A_TOOLS ","
                             "\"parallel_tool_calls\":false,\"tool_choice\":{\"type\":\"function\","
                             "\"function\":{\"name\":\"demo_author/web_search\"}}}", &j), 200);
    json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(c0, "finish_reason")), "tool_calls");
    json_t *m = json_object_get(c0, "message");
    assert_string_equal(json_string_value(json_object_get(m, "content")), "I'll search for that.");
    json_t *tc = json_array_get(json_object_get(m, "tool_calls"), 0);
    assert_string_equal(json_string_value(json_object_get(tc, "id")), "toolu_01A09q90qw90lq917835lq9");
    assert_string_equal(json_string_value(json_object_get(tc, "type")), "function");
    json_t *fn = json_object_get(tc, "function");
    assert_string_equal(json_string_value(json_object_get(fn, "name")), "demo_author/web_search");
    json_t *args = json_loads(json_string_value(json_object_get(fn, "arguments")), 0, NULL);
    assert_string_equal(json_string_value(json_object_get(args, "query")), "dogs");
    json_decref(args);
    json_decref(j);

    /* what went upstream */
    struct seen s = last_request();
    json_t *tools = json_object_get(s.body, "tools");
    assert_int_equal(json_array_size(tools), 2);
    json_t *t0 = json_array_get(tools, 0), *t1 = json_array_get(tools, 1);
    assert_string_equal(json_string_value(json_object_get(t0, "name")), "demo_author__web_search");
    assert_string_equal(json_string_value(json_object_get(t0, "description")), "Search the web");
    assert_string_equal(json_string_value(json_object_get(json_object_get(t0, "input_schema"), "type")), "object");
    assert_non_null(json_object_get(json_object_get(json_object_get(t0, "input_schema"), "properties"), "query"));
    assert_string_equal(json_string_value(json_object_get(t1, "name")), "now");
    assert_string_equal(json_string_value(json_object_get(json_object_get(t1, "input_schema"), "type")), "object");
    json_t *tch = json_object_get(s.body, "tool_choice");
    assert_string_equal(json_string_value(json_object_get(tch, "type")), "tool");
    assert_string_equal(json_string_value(json_object_get(tch, "name")), "demo_author__web_search");
    assert_true(json_is_true(json_object_get(tch, "disable_parallel_tool_use")));
    assert_string_equal(json_string_value(json_object_get(s.body, "system")), "Use tools.");
    /* user, assistant [tool_use], user [tool_result, text] */
    json_t *msgs = json_object_get(s.body, "messages");
    assert_int_equal(json_array_size(msgs), 3);
    json_t *a = json_object_get(json_array_get(msgs, 1), "content");
    assert_true(json_is_array(a));
    assert_int_equal(json_array_size(a), 1);
    json_t *tu = json_array_get(a, 0);
    assert_string_equal(json_string_value(json_object_get(tu, "type")), "tool_use");
    assert_string_equal(json_string_value(json_object_get(tu, "id")), "toolu_prev");
    assert_string_equal(json_string_value(json_object_get(tu, "name")), "demo_author__web_search");
    assert_string_equal(json_string_value(json_object_get(json_object_get(tu, "input"), "query")), "cats");
    json_t *u = json_object_get(json_array_get(msgs, 2), "content");
    assert_true(json_is_array(u));
    assert_int_equal(json_array_size(u), 2);
    json_t *tr = json_array_get(u, 0);
    assert_string_equal(json_string_value(json_object_get(tr, "type")), "tool_result");
    assert_string_equal(json_string_value(json_object_get(tr, "tool_use_id")), "toolu_prev");
    assert_string_equal(json_string_value(json_object_get(tr, "content")), "cats are mammals");
    assert_string_equal(json_string_value(json_object_get(json_array_get(u, 1), "text")), "Now dogs");
    json_decref(s.body);

    /* "required" -> {"type":"any"}; streamed tool_use with input_json_delta */
    struct sse_result r;
    assert_int_equal(kf_stream(g_k, "{\"model\":\"claude-tools\",\"stream\":true,"
                                    "\"messages\":[{\"role\":\"user\",\"content\":\"dogs\"}],"
                                    A_TOOLS ",\"tool_choice\":\"required\"}", &r, 0), 0);
    assert_int_equal(r.status, 200);
    assert_true(r.done);
    assert_null(r.error);
    assert_string_equal(r.finish, "tool_calls");
    sse_result_free(&r);
    s = last_request();
    assert_string_equal(json_string_value(json_object_get(json_object_get(s.body, "tool_choice"), "type")), "any");
    json_decref(s.body);

    /* arguments that break the schema: 502 naming the tool */
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions",
                             "{\"model\":\"claude-toolsbad\",\"messages\":[{\"role\":\"user\","
                             "\"content\":\"dogs\"}]," A_TOOLS "}", &j), 502);
    assert_error_body(j, "demo_author/web_search");
    json_decref(j);

    /* response_format json_schema: a forced json_response tool; its input is the content */
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions",
                             "{\"model\":\"claude-tools\",\"messages\":[{\"role\":\"user\",\"content\":"
                             "\"A person\"}],\"response_format\":{\"type\":\"json_schema\",\"json_schema\":"
                             "{\"name\":\"person\",\"schema\":{\"type\":\"object\",\"properties\":{\"name\":"
                             "{\"type\":\"string\"},\"age\":{\"type\":\"integer\"}},\"required\":[\"name\","
                             "\"age\"]}}}}", &j), 200);
    c0 = json_array_get(json_object_get(j, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(c0, "finish_reason")), "stop");
    json_t *v = json_loads(chat_content(j), 0, NULL);
    assert_string_equal(json_string_value(json_object_get(v, "name")), "Ada");
    assert_int_equal(json_integer_value(json_object_get(v, "age")), 36);
    json_decref(v);
    json_decref(j);
    s = last_request();
    tch = json_object_get(s.body, "tool_choice");
    assert_string_equal(json_string_value(json_object_get(tch, "name")), "json_response");
    json_decref(s.body);
}

static void test_streamed_events(void **state)
{
    (void)state;
    struct sse_result r;
    assert_int_equal(kf_stream(g_k, "{\"model\":\"claude-ok\",\"stream\":true,"
                                    "\"stream_options\":{\"include_usage\":true},"
                                    "\"messages\":[{\"role\":\"user\",\"content\":\"Colours?\"}]}",
                               &r, 0), 0);
    assert_int_equal(r.status, 200);
    assert_true(r.done);
    assert_null(r.error);
    assert_false(r.bad_event);
    assert_string_equal(r.text, "Red, green \xc3\xa9t blue");
    assert_true(r.n_content >= 1); /* the API may merge deltas that arrive together */
    assert_string_equal(r.finish, "length"); /* stop_reason max_tokens */
    assert_non_null(r.usage);
    assert_int_equal(json_integer_value(json_object_get(r.usage, "prompt_tokens")), 25);
    assert_int_equal(json_integer_value(json_object_get(r.usage, "completion_tokens")), 15);
    sse_result_free(&r);
    struct seen s = last_request();
    assert_true(json_is_true(json_object_get(s.body, "stream")));
    json_decref(s.body);

    /* an error event after some text: the text arrives, then the error */
    assert_int_equal(kf_stream(g_k, "{\"model\":\"claude-midfail\",\"stream\":true,"
                                    "\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}",
                               &r, 0), 0);
    assert_string_equal(r.text, "Partial");
    assert_non_null(r.error);
    assert_non_null(strstr(json_string_value(json_object_get(r.error, "message")), "Overloaded"));
    assert_true(r.done);
    sse_result_free(&r);
    struct seen s2 = last_request(); /* the retries carried the text snapshot */
    json_t *msgs = json_object_get(s2.body, "messages");
    assert_int_equal(json_array_size(msgs), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(msgs, 1), "content")), "Partial");
    json_decref(s2.body);

    /* the stream breaks after "Partial"; the call resumes with that text
     * as the assistant prefix and the client gets one seamless answer */
    assert_int_equal(kf_stream(g_k, "{\"model\":\"claude-resume\",\"stream\":true,"
                                    "\"stream_options\":{\"include_usage\":true},"
                                    "\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}",
                               &r, 0), 0);
    assert_null(r.error);
    assert_true(r.done);
    assert_string_equal(r.text, "Partial answer, resumed.");
    assert_string_equal(r.finish, "stop");
    assert_int_equal(json_integer_value(json_object_get(r.usage, "completion_tokens")), 1 + 4);
    sse_result_free(&r);

    /* a server that ignores "stream" and answers with one JSON body */
    assert_int_equal(kf_stream(g_k, "{\"model\":\"claude-nostream\",\"stream\":true,"
                                    "\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}",
                               &r, 0), 0);
    assert_null(r.error);
    assert_string_equal(r.text, "Hello! How can I help you today?");
    assert_string_equal(r.finish, "stop");
    sse_result_free(&r);
}

/* raw SSE of a streamed call, for what kf_stream does not collect */
static int raw_chunk(const char *data, size_t n, void *ud)
{
    char **buf = ud;
    size_t o = *buf ? strlen(*buf) : 0;
    char *b = realloc(*buf, o + n + 1);
    if (!b) return 1;
    memcpy(b + o, data, n);
    b[o + n] = 0;
    *buf = b;
    return 0;
}

/* A stream that breaks inside a tool_use block after some text is resumed
 * from its text snapshot; the client gets the whole text and exactly the
 * resumed attempt's tool call (not the broken one, not a mix). */
static void test_resumed_stream_with_tools(void **state)
{
    (void)state;
    char url[512], auth[300], *raw = NULL;
    snprintf(url, sizeof url, "%s/v1/chat/completions", g_k->child.base);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", g_k->child.token);
    const char *hdrs[] = {auth, NULL};
    long st = 0;
    assert_int_equal(hc_stream_h(url, "{\"model\":\"claude-toolresume\",\"stream\":true,"
                                      "\"messages\":[{\"role\":\"user\",\"content\":\"dogs\"}],"
                                      A_TOOLS ",\"tool_choice\":\"required\"}",
                                 hdrs, raw_chunk, &raw, &st, 60), 0);
    assert_int_equal(st, 200);
    assert_non_null(raw);
    /* walk the events: text deltas, tool-call deltas, finish, no error */
    char text[256] = "";
    json_t *calls = json_array();
    const char *finish = NULL;
    bool done = false, error = false;
    json_t *keep = json_array();
    for (char *line = strtok(raw, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "data: ", 6)) continue;
        if (!strcmp(line + 6, "[DONE]")) {
            done = true;
            continue;
        }
        json_t *ev = json_loads(line + 6, 0, NULL);
        assert_non_null(ev);
        json_array_append_new(keep, ev);
        error |= json_object_get(ev, "error") != NULL;
        json_t *c0 = json_array_get(json_object_get(ev, "choices"), 0);
        json_t *d = json_object_get(c0, "delta");
        const char *t = json_string_value(json_object_get(d, "content"));
        if (t) strncat(text, t, sizeof text - strlen(text) - 1);
        if (json_is_array(json_object_get(d, "tool_calls")))
            json_array_extend(calls, json_object_get(d, "tool_calls"));
        if (json_is_string(json_object_get(c0, "finish_reason")))
            finish = json_string_value(json_object_get(c0, "finish_reason"));
    }
    assert_true(done);
    assert_false(error);
    assert_string_equal(text, "Let me look. Searching.");
    assert_non_null(finish);
    assert_string_equal(finish, "tool_calls");
    assert_int_equal(json_array_size(calls), 1);
    json_t *c = json_array_get(calls, 0), *fn = json_object_get(c, "function");
    assert_string_equal(json_string_value(json_object_get(c, "id")), "toolu_whole");
    assert_string_equal(json_string_value(json_object_get(fn, "name")), "demo_author/web_search");
    json_t *args = json_loads(json_string_value(json_object_get(fn, "arguments")), 0, NULL);
    assert_non_null(args);
    assert_string_equal(json_string_value(json_object_get(args, "query")), "dogs");
    assert_int_equal(json_object_size(args), 1);
    json_decref(args);
    json_decref(calls);
    json_decref(keep);
    free(raw);
    /* the resumed attempt carried the text as the assistant prefix */
    struct seen s = last_request();
    json_t *msgs = json_object_get(s.body, "messages");
    json_t *lastm = json_array_get(msgs, json_array_size(msgs) - 1);
    assert_string_equal(json_string_value(json_object_get(lastm, "role")), "assistant");
    assert_string_equal(json_string_value(json_object_get(lastm, "content")), "Let me look.");
    json_decref(s.body);
}

static void test_error_statuses(void **state)
{
    (void)state;
    json_t *j = NULL;
    /* Anthropic's API has no token probabilities: refused, naming the field */
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions",
                             "{\"model\":\"claude-ok\",\"logprobs\":true,\"top_logprobs\":2,"
                             "\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}",
                             &j), 400);
    assert_error_body(j, "'logprobs'");
    json_decref(j);
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions",
                             "{\"model\":\"claude-missing\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}",
                             &j), 404);
    assert_error_body(j, "model: claude-missing");
    json_decref(j);

    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions",
                             "{\"model\":\"claude-badkey\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}",
                             &j), 401);
    assert_error_body(j, "invalid x-api-key");
    assert_error_body(j, "ANTHROPIC_API_KEY");
    json_decref(j);

    /* 529 overloaded is retried; the second answer is a success */
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions",
                             "{\"model\":\"claude-busy\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}",
                             &j), 200);
    assert_string_equal(chat_content(j), "Hello! How can I help you today?");
    json_decref(j);
    pthread_mutex_lock(&g_mu);
    int n = g_busy_requests;
    pthread_mutex_unlock(&g_mu);
    assert_int_equal(n, 2);

    /* no key in /status, only whether there is one */
    assert_int_equal(kf_call(g_k, "GET", "/status", NULL, &j), 200);
    char *dump = json_dumps(j, 0);
    assert_null(strstr(dump, "sk-ant-recorded-test"));
    assert_non_null(strstr(dump, "\"has_key\": true"));
    free(dump);
    json_decref(j);
}

static json_t *status_of(const char *name)
{
    json_t *j = NULL, *m, *found = NULL;
    assert_int_equal(kf_call(g_k, "GET", "/status", NULL, &j), 200);
    size_t i;
    json_array_foreach(json_object_get(j, "models"), i, m) {
        if (!strcmp(json_string_value(json_object_get(m, "name")), name)) found = json_incref(m);
    }
    json_decref(j);
    assert_non_null(found);
    return found;
}

/* A call slower than timeout_s is a 504 (not retried, replica not marked
 * down); a client that leaves mid-stream ends the upstream transfer. */
static void test_timeout_and_cancel(void **state)
{
    (void)state;
    json_t *j = NULL;
    assert_int_equal(kf_call(g_k, "POST", "/v1/chat/completions",
                             "{\"model\":\"claude-hang\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}",
                             &j), 504);
    assert_error_body(j, "timeout_s");
    json_decref(j);
    json_t *m = status_of("claude-hang");
    json_t *r0 = json_array_get(json_object_get(m, "replicas"), 0);
    assert_true(json_is_true(json_object_get(r0, "up")));
    assert_int_equal(json_integer_value(json_object_get(r0, "sent")), 1);
    json_decref(m);

    struct sse_result r;
    kf_stream(g_k, "{\"model\":\"claude-hang\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}",
              &r, 2); /* role chunk, "Partial", then hang up */
    assert_string_equal(r.text, "Partial");
    sse_result_free(&r);
    /* the kernel notices, drops the transfer, and counts the call as ended */
    json_int_t failed = 0, outstanding = 1;
    for (int i = 0; i < 200 && (failed < 2 || outstanding); i++) {
        usleep(25000);
        m = status_of("claude-hang");
        failed = json_integer_value(json_object_get(json_object_get(m, "calls"), "failed"));
        outstanding = json_integer_value(json_object_get(json_array_get(json_object_get(m, "replicas"), 0), "outstanding"));
        json_decref(m);
    }
    assert_int_equal(failed, 2);
    assert_int_equal(outstanding, 0);
}

struct hang_client {
    struct sse_result r;
};

static void *hang_client_main(void *arg)
{
    struct hang_client *h = arg;
    kf_stream(g_k, "{\"model\":\"claude-hang\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}",
              &h->r, 0);
    return NULL;
}

/* SIGTERM with a remote call in flight: the call ends with a 503 error
 * event after its partial text, and the kernel exits cleanly (last test:
 * it stops the kernel). */
static void test_shutdown_with_call_in_flight(void **state)
{
    (void)state;
    static struct hang_client h;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, hang_client_main, &h), 0);
    json_int_t outstanding = 0;
    for (int i = 0; i < 200 && !outstanding; i++) {
        usleep(25000);
        json_t *m = status_of("claude-hang");
        outstanding = json_integer_value(json_object_get(json_array_get(json_object_get(m, "replicas"), 0), "outstanding"));
        json_decref(m);
    }
    assert_int_equal(outstanding, 1);
    kf_stop(g_k); /* asserts exit status 0 */
    g_k = NULL;
    pthread_join(th, NULL);
    assert_string_equal(h.r.text, "Partial");
    assert_non_null(h.r.error);
    assert_non_null(strstr(json_string_value(json_object_get(h.r.error, "message")), "shutting down"));
    sse_result_free(&h.r);
}

struct slow_client {
    const char *base;
    long status;
};

static void *slow_client_main(void *arg)
{
    struct slow_client *c = arg;
    char url[128];
    snprintf(url, sizeof url, "%s/v1/chat/completions", c->base);
    const char *body = "{\"model\":\"claude-slow\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}";
    struct hc_resp r;
    if (hc_call("POST", url, body, strlen(body), &r, 120) == 0) c->status = r.status;
    hc_resp_free(&r);
    return NULL;
}

/* The mock answers claude-slow only once N_SLOW requests are in flight at
 * the same time, so all of them succeeding shows that the one remote
 * thread keeps N_SLOW transfers going at once (and /status saw them). */
static void test_hundreds_in_flight(void **state)
{
    (void)state;
    static struct slow_client c[N_SLOW];
    static pthread_t th[N_SLOW];
    for (int i = 0; i < N_SLOW; i++) {
        c[i] = (struct slow_client){.base = g_k->child.base};
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setstacksize(&a, 256 * 1024);
        assert_int_equal(pthread_create(&th[i], &a, slow_client_main, &c[i]), 0);
        pthread_attr_destroy(&a);
    }
    int ok = 0;
    for (int i = 0; i < N_SLOW; i++) {
        pthread_join(th[i], NULL);
        ok += c[i].status == 200;
    }
    assert_int_equal(ok, N_SLOW);
    json_t *j = NULL;
    assert_int_equal(kf_call(g_k, "GET", "/status", NULL, &j), 200);
    json_t *m, *slow = NULL;
    size_t i;
    json_array_foreach(json_object_get(j, "models"), i, m) {
        if (!strcmp(json_string_value(json_object_get(m, "name")), "claude-slow")) slow = m;
    }
    assert_non_null(slow);
    json_t *r0 = json_array_get(json_object_get(slow, "replicas"), 0);
    assert_int_equal(json_integer_value(json_object_get(r0, "max_outstanding")), N_SLOW);
    assert_int_equal(json_integer_value(json_object_get(r0, "outstanding")), 0);
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_message_mapping),
        cmocka_unit_test(test_streamed_events),
        cmocka_unit_test(test_tool_use_mapping),
        cmocka_unit_test(test_resumed_stream_with_tools),
        cmocka_unit_test(test_error_statuses),
        cmocka_unit_test(test_hundreds_in_flight),
        cmocka_unit_test(test_timeout_and_cancel),
        cmocka_unit_test(test_shutdown_with_call_in_flight), /* last: stops the kernel */
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
