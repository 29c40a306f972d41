/* Fuzz target: MCP JSON-RPC frames as a server might send them
 * (src/tools/mcp.c): the server's stdout, fed in chunks into the reader's
 * buffer and cut into lines (tool_mcp_take_line, with a small line limit
 * so oversized frames are reached), each line parsed and classified as the
 * reader does (tool_mcp_classify: requests of the server's get an answer,
 * responses are matched by integer id, the rest ignored), and every
 * response read both as a tools/call answer (tool_mcp_call_result) and as
 * a tools/list page (each entry made a tool by tool_mcp_tool_new, then
 * nextCursor), as the handshake reads it.
 *
 * Input: byte 0 the chunk size, the rest the byte stream. */
#include "fuzz.h"

#include "tools/tools.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LINE 4096

int LLVMFuzzerInitialize(int *argc, char ***argv) { return 0; }

static void on_line(const char *line)
{
    json_t *msg = json_loads(line, 0, NULL);
    json_int_t id;
    enum tool_mcp_msg kind = tool_mcp_classify(msg, &id);
    if (kind == TOOL_MCP_MSG_REQUEST) {
        json_t *ans = tool_mcp_server_answer(msg);
        char *out = ans ? json_dumps(ans, JSON_COMPACT) : NULL;
        if (out && strchr(out, '\n')) abort(); /* one message, one line */
        free(out);
        json_decref(ans);
    } else if (kind == TOOL_MCP_MSG_RESPONSE) {
        json_t *res;
        char err[1024];
        if (tool_mcp_call_result("srv", "tool", msg, &res, err, sizeof err) == 0) {
            if (!res) abort();
            json_decref(res);
        }
        json_t *page = json_object_get(msg, "result");
        struct tool props = {.timeout_ms = 1000, .max_concurrency = 1};
        size_t i;
        json_t *t;
        json_array_foreach(json_object_get(page, "tools"), i, t) {
            struct tool *x = tool_mcp_tool_new("srv", t, &props);
            if (x && (!x->name || strncmp(x->name, "srv/", 4))) abort();
            tool_free(x);
        }
        const char *nc = json_string_value(json_object_get(page, "nextCursor"));
        char cur[512];
        if (nc) snprintf(cur, sizeof cur, "%s", nc);
    }
    json_decref(msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t chunk = (size_t)data[0] * 4 + 1;
    const char *in = (const char *)data + 1;
    size_t n_in = size - 1;
    char *buf = malloc(MAX_LINE + chunk + 1);
    if (!buf) return 0;
    size_t n = 0;
    for (size_t off = 0; off < n_in;) {
        size_t c = n_in - off < chunk ? n_in - off : chunk;
        memcpy(buf + n, in + off, c);
        n += c;
        off += c;
        for (;;) {
            char *line;
            int r = tool_mcp_take_line(buf, &n, MAX_LINE, &line);
            if (r < 0) goto out; /* oversized: the reader drops the server */
            if (r == 0) break;
            on_line(line);
            free(line);
        }
    }
out:
    free(buf);
    return 0;
}
