/* Operator commands of the access manager:
 *
 *   aios audit [--agent A] [--since T] [--limit N] [--json] [--url U]
 *   aios approvals [--url U]                      pending approvals
 *   aios budgets [--agent A] [--json] [--url U]   token budget usage
 *   aios approve ID [--reason R] [--url U]
 *   aios deny ID [--reason R] [--url U]
 *   aios register-agent NAME [--url U]            prints the agent's token
 *
 * They call the kernel over HTTP with the operator's token: $AIOS_TOKEN,
 * else the file $AIOS_TOKEN_FILE, else ./aios-data/admin.token
 * (cli_load_token, also used by main.c for every client command).
 * --since takes unix seconds or a relative age like 10m, 2h, 1d. */
#include "cli/cli.h"
#include "cli/client.h"
#include "util/util.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void cli_load_token(void)
{
    const char *t = getenv("AIOS_TOKEN");
    if (t && *t) return; /* client.c reads it */
    const char *f = getenv("AIOS_TOKEN_FILE");
    char tok[256];
    if (f && *f) {
        if (hc_read_token_file(f, tok, sizeof tok) == 0) hc_set_token(tok);
        else fprintf(stderr, "aios: cannot read a token from %s (AIOS_TOKEN_FILE)\n", f);
        return;
    }
    if (getenv("AIOS_AGENT_TOKEN")) return;
    if (hc_read_token_file("aios-data/admin.token", tok, sizeof tok) == 0) hc_set_token(tok);
}


static int fail_http(const char *what, long st, json_t *j)
{
    if (st) {
        const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
        fprintf(stderr, "aios %s: HTTP %ld: %s\n", what, st, m ? m : "(no message)");
        if (st == 401)
            fprintf(stderr, "  (set AIOS_TOKEN to the operator's token: cat DATA_DIR/admin.token)\n");
    }
    json_decref(j);
    return 1;
}

/* "1767000000", "10m", "2h", "1d", "30s" -> unix seconds; -1 if invalid */
static double parse_since(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || v < 0) return -1;
    double mult = 0;
    if (!*end) return v;
    if (!strcmp(end, "s")) mult = 1;
    else if (!strcmp(end, "m")) mult = 60;
    else if (!strcmp(end, "h")) mult = 3600;
    else if (!strcmp(end, "d")) mult = 86400;
    else return -1;
    return (double)time(NULL) - v * mult;
}

int cli_audit_main(int argc, char **argv)
{
    const char *url = NULL, *agent = NULL, *since = NULL, *limit = NULL;
    int as_json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--url") && i + 1 < argc) url = argv[++i];
        else if (!strcmp(argv[i], "--agent") && i + 1 < argc) agent = argv[++i];
        else if (!strcmp(argv[i], "--since") && i + 1 < argc) since = argv[++i];
        else if (!strcmp(argv[i], "--limit") && i + 1 < argc) limit = argv[++i];
        else if (!strcmp(argv[i], "--json")) as_json = 1;
        else {
            fprintf(stderr, "usage: aios audit [--agent A] [--since T|10m|2h|1d] [--limit N] "
                    "[--json] [--url U]\n");
            return 2;
        }
    }
    char path[1024];
    int n = snprintf(path, sizeof path, "/access/audit?limit=%s", limit ? limit : "1000");
    if (agent) {
        /* agent names are [A-Za-z0-9_.-/@]; '@' and '/' need escaping */
        size_t l = strlen(agent);
        char *esc = malloc(3 * l + 1);
        if (!esc) return 1;
        util_pct_encode(agent, esc, 3 * l + 1);
        n += snprintf(path + n, sizeof path - (size_t)n, "&agent=%s", esc);
        free(esc);
    }
    if (since) {
        double s = parse_since(since);
        if (s < 0) {
            fprintf(stderr, "aios audit: --since takes unix seconds or an age like 30s, 10m, 2h, "
                    "1d\n");
            return 2;
        }
        snprintf(path + n, sizeof path - (size_t)n, "&since=%.3f", s);
    }
    json_t *j;
    long st = hc_call_json(hc_kernel_url(url), "GET", path, NULL, &j);
    if (st != 200) return fail_http("audit", st, j);
    json_t *rows = json_object_get(j, "audit");
    if (as_json) {
        char *s = json_dumps(rows, JSON_INDENT(2));
        if (s) puts(s);
        free(s);
        json_decref(j);
        return 0;
    }
    printf("%-20s %-16s %-10s %-18s %-26s %s\n", "TIME (UTC)", "AGENT", "SYSCALL", "DECISION",
           "RESOURCE", "REASON");
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r) {
        time_t t = (time_t)json_number_value(json_object_get(r, "time"));
        struct tm tm;
        gmtime_r(&t, &tm);
        char ts[32];
        strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", &tm);
        json_t *sc = json_object_get(r, "syscall_id");
        char scs[24] = "-";
        if (json_is_integer(sc)) snprintf(scs, sizeof scs, "%lld", (long long)json_integer_value(sc));
        printf("%-20s %-16s %-10s %-18s %-26s %s\n", ts,
               json_string_value(json_object_get(r, "agent")), scs,
               json_string_value(json_object_get(r, "decision")),
               json_string_value(json_object_get(r, "resource")),
               json_string_value(json_object_get(r, "reason")));
    }
    json_decref(j);
    return 0;
}

int cli_approvals_main(int argc, char **argv)
{
    const char *url = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--url") && i + 1 < argc) url = argv[++i];
        else {
            fprintf(stderr, "usage: aios approvals [--url U]\n");
            return 2;
        }
    }
    json_t *j;
    long st = hc_call_json(hc_kernel_url(url), "GET", "/access/approvals", NULL, &j);
    if (st != 200) return fail_http("approvals", st, j);
    size_t i;
    json_t *a;
    json_t *arr = json_object_get(j, "approvals");
    if (!json_array_size(arr)) printf("no pending approvals\n");
    json_array_foreach(arr, i, a) {
        const char *what = json_string_value(json_object_get(a, "what"));
        if (what) { /* a storage call: say it in words */
            long long id = (long long)json_integer_value(json_object_get(a, "id"));
            printf("%lld  agent %s wants to %s  (syscall %lld; `aios approve %lld` / `aios deny "
                   "%lld`)\n", id, json_string_value(json_object_get(a, "agent")), what,
                   (long long)json_integer_value(json_object_get(a, "syscall_id")), id, id);
            continue;
        }
        char *args = json_dumps(json_object_get(a, "arguments"), JSON_COMPACT);
        printf("%lld  agent %s wants %s %s  (syscall %lld; `aios approve %lld` / `aios deny "
               "%lld`)\n",
               (long long)json_integer_value(json_object_get(a, "id")),
               json_string_value(json_object_get(a, "agent")),
               json_string_value(json_object_get(a, "tool")), args ? args : "",
               (long long)json_integer_value(json_object_get(a, "syscall_id")),
               (long long)json_integer_value(json_object_get(a, "id")),
               (long long)json_integer_value(json_object_get(a, "id")));
        free(args);
    }
    json_decref(j);
    return 0;
}

static int decide_main(int argc, char **argv, const char *verb)
{
    const char *url = NULL, *id = NULL, *reason = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--url") && i + 1 < argc) url = argv[++i];
        else if (!strcmp(argv[i], "--reason") && i + 1 < argc) reason = argv[++i];
        else if (!id && argv[i][0] != '-') id = argv[i];
        else id = NULL, i = argc;
    }
    if (!id) {
        fprintf(stderr, "usage: aios %s ID [--reason R] [--url U]   (IDs: aios approvals)\n", verb);
        return 2;
    }
    json_t *b = json_object();
    if (reason) json_object_set_new(b, "reason", json_string(reason));
    char *body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    char path[256];
    snprintf(path, sizeof path, "/access/approvals/%s/%s", id, verb);
    json_t *j;
    long st = hc_call_json(hc_kernel_url(url), "POST", path, body, &j);
    free(body);
    if (st != 200) return fail_http(verb, st, j);
    printf("approval %s: %s\n", id, json_string_value(json_object_get(j, "decision")));
    json_decref(j);
    return 0;
}

int cli_approve_main(int argc, char **argv) { return decide_main(argc, argv, "approve"); }
int cli_deny_main(int argc, char **argv) { return decide_main(argc, argv, "deny"); }

int cli_register_agent_main(int argc, char **argv)
{
    const char *url = NULL, *name = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--url") && i + 1 < argc) url = argv[++i];
        else if (!name && argv[i][0] != '-') name = argv[i];
        else name = NULL, i = argc;
    }
    if (!name) {
        fprintf(stderr, "usage: aios register-agent NAME [--url U]\n");
        return 2;
    }
    json_t *b = json_pack("{s:s}", "name", name);
    char *body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    json_t *j;
    long st = hc_call_json(hc_kernel_url(url), "POST", "/access/agents", body, &j);
    free(body);
    if (st != 201) return fail_http("register-agent", st, j);
    printf("%s\n", json_string_value(json_object_get(j, "token")));
    fprintf(stderr, "agent %s registered; give it this token as AIOS_AGENT_TOKEN (shown once)\n",
            name);
    json_decref(j);
    return 0;
}

int cli_budgets_main(int argc, char **argv)
{
    const char *url = NULL, *agent = NULL;
    bool as_json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--url") && i + 1 < argc) url = argv[++i];
        else if (!strcmp(argv[i], "--agent") && i + 1 < argc) agent = argv[++i];
        else if (!strcmp(argv[i], "--json")) as_json = true;
        else {
            fprintf(stderr, "usage: aios budgets [--agent A] [--json] [--url U]\n");
            return 2;
        }
    }
    char path[300];
    snprintf(path, sizeof path, "/access/budgets%s%s", agent ? "?agent=" : "", agent ? agent : "");
    json_t *j;
    long st = hc_call_json(hc_kernel_url(url), "GET", path, NULL, &j);
    if (st != 200) return fail_http("budgets", st, j);
    json_t *arr = json_object_get(j, "budgets");
    if (as_json) {
        char *d = json_dumps(arr, JSON_INDENT(2));
        printf("%s\n", d ? d : "[]");
        free(d);
    } else {
        if (!json_array_size(arr)) printf("no LLM usage yet\n");
        size_t i;
        json_t *b;
        json_array_foreach(arr, i, b) {
            json_t *lim = json_object_get(b, "limit"), *win = json_object_get(b, "window_s");
            printf("%-20s %-24s used %8lld", json_string_value(json_object_get(b, "agent")),
                   json_string_value(json_object_get(b, "model")),
                   (long long)json_integer_value(json_object_get(b, "used")));
            if (json_is_integer(lim)) {
                printf(" of %lld", (long long)json_integer_value(lim));
                if (json_is_integer(win))
                    printf(" per %lld s", (long long)json_integer_value(win));
                printf(" (reserved %lld, denied %lld)",
                       (long long)json_integer_value(json_object_get(b, "reserved")),
                       (long long)json_integer_value(json_object_get(b, "denied")));
            }
            else
                printf(" (no budget)");
            printf("\n");
        }
    }
    json_decref(j);
    return 0;
}
