/* Fuzz target: what remote backends send back (src/llm/remote_wire.c), as
 * remote.c handles it: a whole JSON body (remote_wire_parse_response) or an
 * SSE stream fed in chunks (sse_feed -> remote_wire_stream_event), in the
 * OpenAI or the Anthropic dialect; then remote_wire_finish and the answer
 * read back for the request's tools / response_format
 * (llm_structured_result, which maps and validates upstream tool calls), and
 * remote_wire_error_message for a non-2xx body.
 *
 * Input: byte 0 picks the dialect (bit 0), streaming (bit 1) and the
 * request (bits 2-3: plain, tools, json_schema with an object root,
 * json_schema with a non-object root); byte 1 the SSE chunk size; the rest
 * is the upstream's body. */
#include "fuzz.h"

#include "llm/core.h"
#include "llm/remote.h"
#include "llm/structured.h"
#include "util/err.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const g_bodies[4] = {
    "{}",
    "{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":"
    "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},\"days\":{\"type\":"
    "\"integer\",\"minimum\":1}},\"required\":[\"city\"]}}},{\"type\":\"function\",\"function\":"
    "{\"name\":\"author/tool\"}}]}",
    "{\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\",\"schema\":"
    "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},\"required\":[\"a\"]}}}}",
    "{\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\",\"schema\":"
    "{\"type\":\"array\",\"items\":{\"type\":\"string\"}}}}}",
};
static struct llm_req g_req[4];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    for (int i = 0; i < 4; i++) {
        json_t *b = json_loads(g_bodies[i], 0, NULL);
        char err[512];
        if (!b || llm_structured_parse(b, &g_req[i].structured, err, sizeof err)) {
            fprintf(stderr, "fuzz_remote: body %d: %s\n", i, err);
            abort();
        }
        json_decref(b);
    }
    return 0;
}

struct feed {
    enum remote_dialect d;
    struct remote_answer *a;
};

static int on_event(void *ud, const char *event, const char *data, size_t n)
{
    struct feed *f = ud;
    size_t off = 0, nd = 0;
    int rc = remote_wire_stream_event(f->d, event, data, n, f->a, &off, &nd);
    if (rc && rc != AIOS_EINVAL) return rc;
    if (nd && (off + nd > f->a->len || !f->a->text)) abort(); /* the delta is in the text */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    enum remote_dialect d = (data[0] & 1) ? REMOTE_DIALECT_ANTHROPIC : REMOTE_DIALECT_OPENAI;
    bool stream = data[0] & 2;
    const struct llm_req *req = &g_req[(data[0] >> 2) & 3];
    size_t chunk = (size_t)data[1] + 1;
    const char *body = (const char *)data + 2;
    size_t n = size - 2;

    struct remote_answer a = {0};
    char err[512], msg[400];
    int rc = 0;
    if (stream) {
        struct sse_parser p = {0};
        struct feed f = {d, &a};
        for (size_t off = 0; off < n && !rc; off += chunk)
            rc = sse_feed(&p, body + off, n - off < chunk ? n - off : chunk, on_event, &f);
        sse_parser_free(&p);
    } else {
        rc = remote_wire_parse_response(d, body, n, &a, err, sizeof err);
    }
    remote_wire_error_message(body, n, msg, sizeof msg);
    if (rc == 0 && remote_wire_finish(d, req, &a) == 0) {
        struct llm_res *res = calloc(1, sizeof *res);
        if (!res) abort();
        if (!a.text) remote_answer_append(&a, "", 0);
        res->upstream = true;
        res->tool_calls = a.tool_calls;
        a.tool_calls = NULL;
        res->text = a.text;
        res->len = a.len;
        a.text = NULL;
        a.len = a.cap = 0;
        res->finish_reason = a.finish_reason ? a.finish_reason : "stop";
        struct llm_structured_result sr;
        if (res->text && llm_structured_result(req->structured, res, &sr, err, sizeof err) == 0) {
            if (sr.content_len > res->len) abort();
            json_decref(sr.calls);
        }
        llm_res_free(res);
    }
    remote_answer_free(&a);
    return 0;
}
