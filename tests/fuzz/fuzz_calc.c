/* Fuzz target: the calculator's expressions (src/tools/calc.c) and the
 * built-in tools' argument checking (src/tools/registry.c's
 * tool_validate_args against each built-in's parameters schema, then the
 * built-in itself, as a tool worker runs it). The input is evaluated as an
 * expression; when it is also a JSON object it is given as the arguments
 * of every built-in tool (the file tools answer "unavailable" here: there
 * is no storage manager in this process). */
#include "fuzz.h"

#include "tools/tools.h"
#include "util/util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct tool_mgr *g_m;
static const char *const g_builtins[] = {"aios/calculator", "aios/current_time", "aios/read_file",
                                         "aios/write_file", "aios/list_files"};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[512] = "";
    if (tool_mgr_create(&g_m, NULL, NULL, NULL, err, sizeof err)) {
        fprintf(stderr, "fuzz_calc: %s\n", err);
        abort();
    }
    for (size_t i = 0; i < sizeof g_builtins / sizeof g_builtins[0]; i++)
        if (!tool_find(g_m, g_builtins[i])) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = 0;
    double v;
    char err[1024];
    tool_calc_eval(s, &v, err, sizeof err);
    free(s);

    json_t *args = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!args) return 0;
    struct tool_call_env env = {.m = g_m, .agent = "fuzz", .deadline_us = util_now_us() + 1000000};
    for (size_t i = 0; i < sizeof g_builtins / sizeof g_builtins[0]; i++) {
        struct tool *t = tool_find(g_m, g_builtins[i]);
        if (tool_validate_args(t, args, err, sizeof err) != 0) continue;
        json_t *res = NULL;
        if (t->builtin(&env, args, &res, err, sizeof err) == 0 && !res) abort();
        json_decref(res);
    }
    json_decref(args);
    return 0;
}
