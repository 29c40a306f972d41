/* A small, real MCP server over stdio for the tests: JSON-RPC 2.0, one
 * message per line. It answers initialize, ping, tools/list and tools/call,
 * ignores notifications, and offers:
 *   add   {"a": number, "b": number} -> text "<a+b>"
 *   echo  {"text": string}           -> text "<text>"
 *   slow  {"ms": integer}            -> sleeps, then "slept <ms>" (timeouts)
 *   crash {}                         -> exits with status 3 (restarts)
 * tools/list is paged (two tools per page, nextCursor) so the client's
 * paging is exercised. Errors in arguments come back as isError results;
 * unknown methods as JSON-RPC errors (-32601). Single-threaded. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void send_msg(json_t *m)
{
    char *s = json_dumps(m, JSON_COMPACT);
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        fflush(stdout);
    }
    free(s);
    json_decref(m);
}

static json_t *text_result(const char *t, int is_error)
{
    return json_pack("{s:[{s:s,s:s}],s:b}", "content", "type", "text", "text", t, "isError", is_error);
}

static json_t *tool_defs(void)
{
    return json_pack(
        "[{s:s,s:s,s:{s:s,s:{s:{s:s},s:{s:s}},s:[s,s]}},"
        "{s:s,s:s,s:{s:s,s:{s:{s:s}},s:[s]}},"
        "{s:s,s:s,s:{s:s,s:{s:{s:s}},s:[s]}},"
        "{s:s,s:s,s:{s:s,s:{}}}]",
        "name", "add", "description", "Add two numbers", "inputSchema", "type", "object",
        "properties", "a", "type", "number", "b", "type", "number", "required", "a", "b",
        "name", "echo", "description", "Echo a text", "inputSchema", "type", "object",
        "properties", "text", "type", "string", "required", "text",
        "name", "slow", "description", "Sleep ms milliseconds", "inputSchema", "type", "object",
        "properties", "ms", "type", "integer", "required", "ms",
        "name", "crash", "description", "Exit the server", "inputSchema", "type", "object",
        "properties");
}

static json_t *call(const char *name, json_t *args)
{
    char buf[256];
    if (!strcmp(name, "add")) {
        json_t *a = json_object_get(args, "a"), *b = json_object_get(args, "b");
        if (!json_is_number(a) || !json_is_number(b)) return text_result("a and b must be numbers", 1);
        snprintf(buf, sizeof buf, "%g", json_number_value(a) + json_number_value(b));
        return text_result(buf, 0);
    }
    if (!strcmp(name, "echo")) {
        const char *t = json_string_value(json_object_get(args, "text"));
        return text_result(t ? t : "", !t);
    }
    if (!strcmp(name, "slow")) {
        long ms = (long)json_integer_value(json_object_get(args, "ms"));
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        snprintf(buf, sizeof buf, "slept %ld", ms);
        return text_result(buf, 0);
    }
    if (!strcmp(name, "crash")) exit(3);
    return NULL;
}

int main(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        json_t *m = json_loads(line, 0, NULL);
        if (!json_is_object(m)) {
            send_msg(json_pack("{s:s,s:n,s:{s:i,s:s}}", "jsonrpc", "2.0", "id", "error", "code",
                               -32700, "message", "parse error"));
            json_decref(m);
            continue;
        }
        json_t *id = json_object_get(m, "id");
        const char *method = json_string_value(json_object_get(m, "method"));
        json_t *params = json_object_get(m, "params");
        if (!id || !method) { /* notification (or a response): nothing to say */
            json_decref(m);
            continue;
        }
        json_t *result = NULL;
        if (!strcmp(method, "initialize")) {
            result = json_pack("{s:s,s:{s:{}},s:{s:s,s:s}}", "protocolVersion", "2025-03-26",
                               "capabilities", "tools", "serverInfo", "name", "aios-test-mcp",
                               "version", "1.0");
        } else if (!strcmp(method, "ping")) {
            result = json_object();
        } else if (!strcmp(method, "tools/list")) {
            json_t *all = tool_defs();
            const char *cur = json_string_value(json_object_get(params, "cursor"));
            size_t start = cur ? (size_t)atoi(cur) : 0, i;
            json_t *page = json_array();
            for (i = start; i < json_array_size(all) && i < start + 2; i++)
                json_array_append(page, json_array_get(all, i));
            result = json_pack("{s:o}", "tools", page);
            if (i < json_array_size(all)) {
                char nc[32];
                snprintf(nc, sizeof nc, "%zu", i);
                json_object_set_new(result, "nextCursor", json_string(nc));
            }
            json_decref(all);
        } else if (!strcmp(method, "tools/call")) {
            const char *name = json_string_value(json_object_get(params, "name"));
            result = name ? call(name, json_object_get(params, "arguments")) : NULL;
            if (!result) {
                send_msg(json_pack("{s:s,s:O,s:{s:i,s:s}}", "jsonrpc", "2.0", "id", id, "error",
                                   "code", -32602, "message", "unknown tool"));
                json_decref(m);
                continue;
            }
        } else {
            send_msg(json_pack("{s:s,s:O,s:{s:i,s:s}}", "jsonrpc", "2.0", "id", id, "error", "code",
                               -32601, "message", "method not found"));
            json_decref(m);
            continue;
        }
        send_msg(json_pack("{s:s,s:O,s:o}", "jsonrpc", "2.0", "id", id, "result", result));
        json_decref(m);
    }
    free(line);
    return 0;
}
