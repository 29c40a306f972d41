/* aios hub add FOLDER [--tool|--agent] [--url U]
 * aios hub list [--json] [--url U]
 *
 * `add` packages a folder the way Cerebrum's ToolManager.package_tool /
 * AgentManager.package_agent do (author, name, version from config.json's
 * meta and name, entry and module from build, every file base64 encoded;
 * for agents the whole config.json too and only .py, .txt and .json
 * files) and publishes it with the operator's token (POST
 * /cerebrum/tools/upload or /cerebrum/upload). Without --tool or --agent
 * the kind is guessed: an agent when config.json lists "tools" or the
 * folder has meta_requirements.txt, else a tool. `list` prints both hubs. */
#include "cli/cli.h"
#include "cli/client.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char *b64(const unsigned char *p, size_t n)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o = malloc((n + 2) / 3 * 4 + 1);
    if (!o) return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        o[j++] = al[v >> 18 & 63];
        o[j++] = al[v >> 12 & 63];
        o[j++] = i + 1 < n ? al[v >> 6 & 63] : '=';
        o[j++] = i + 2 < n ? al[v & 63] : '=';
    }
    o[j] = 0;
    return o;
}

static bool ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* every file below dir (relative paths), skipping dot files and __pycache__ */
static int walk(const char *root, const char *rel, bool agent, json_t *files, int depth)
{
    char d[PATH_MAX];
    snprintf(d, sizeof d, "%s%s%s", root, rel[0] ? "/" : "", rel);
    DIR *dir = opendir(d);
    if (!dir) return -1;
    struct dirent *e;
    int rc = 0;
    while (!rc && (e = readdir(dir))) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "__pycache__")) continue;
        char r[PATH_MAX], p[PATH_MAX * 2];
        snprintf(r, sizeof r, "%s%s%s", rel, rel[0] ? "/" : "", e->d_name);
        snprintf(p, sizeof p, "%s/%s", root, r);
        struct stat st;
        if (stat(p, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            if (depth < 8) rc = walk(root, r, agent, files, depth + 1);
            continue;
        }
        if (!S_ISREG(st.st_mode)) continue;
        if (agent && !ends_with(r, ".py") && !ends_with(r, ".txt") && !ends_with(r, ".json"))
            continue;
        FILE *f = fopen(p, "rb");
        if (!f) return -1;
        unsigned char *buf = malloc((size_t)st.st_size + 1);
        size_t n = buf ? fread(buf, 1, (size_t)st.st_size, f) : 0;
        fclose(f);
        char *enc = buf ? b64(buf, n) : NULL;
        free(buf);
        if (!enc) return -1;
        json_array_append_new(files, json_pack("{s:s,s:s}", "path", r, "content", enc));
        free(enc);
    }
    closedir(dir);
    return rc;
}

static int fail_http(const char *what, long st, json_t *j)
{
    const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    if (st) fprintf(stderr, "aios hub %s: HTTP %ld: %s\n", what, st, m ? m : "(no message)");
    else fprintf(stderr, "aios hub %s: cannot reach the kernel (is `aios serve` running? --url)\n", what);
    if (st == 401) fprintf(stderr, "  (set AIOS_TOKEN to the operator's token: cat DATA_DIR/admin.token)\n");
    json_decref(j);
    return 1;
}

static int hub_add(int argc, char **argv)
{
    const char *url = NULL, *folder = NULL;
    int kind = -1; /* 0 tool, 1 agent */
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--url") && i + 1 < argc) url = argv[++i];
        else if (!strcmp(argv[i], "--tool")) kind = 0;
        else if (!strcmp(argv[i], "--agent")) kind = 1;
        else if (!folder && argv[i][0] != '-') folder = argv[i];
        else folder = NULL, i = argc;
    }
    if (!folder) {
        fprintf(stderr, "usage: aios hub add FOLDER [--tool|--agent] [--url U]\n");
        return 2;
    }
    char root[PATH_MAX], p[PATH_MAX + 32];
    if (!realpath(folder, root)) {
        fprintf(stderr, "aios hub add: %s: %s\n", folder, strerror(errno));
        return 1;
    }
    snprintf(p, sizeof p, "%s/config.json", root);
    json_error_t je;
    json_t *cfg = json_load_file(p, 0, &je);
    if (!json_is_object(cfg)) {
        fprintf(stderr, "aios hub add: %s: %s (a Cerebrum package has a config.json object)\n", p,
                cfg ? "not an object" : je.text);
        json_decref(cfg);
        return 1;
    }
    if (kind < 0) {
        snprintf(p, sizeof p, "%s/meta_requirements.txt", root);
        struct stat st;
        kind = json_object_get(cfg, "tools") || stat(p, &st) == 0 ? 1 : 0;
    }
    json_t *meta = json_object_get(cfg, "meta"), *build = json_object_get(cfg, "build");
    json_t *files = json_array();
    if (walk(root, "", kind == 1, files, 0) != 0) {
        fprintf(stderr, "aios hub add: cannot read the files of %s\n", root);
        json_decref(files);
        json_decref(cfg);
        return 1;
    }
    json_t *entry = json_object_get(build, "entry"), *module = json_object_get(build, "module");
    json_t *payload = kind == 1 ? json_deep_copy(cfg) : json_object();
    /* Cerebrum's shapes: package_tool takes the license from the top level,
     * package_agent from meta */
    json_t *lic = kind == 1 ? json_object_get(meta, "license") : json_object_get(cfg, "license");
    json_object_set(payload, "author", json_object_get(meta, "author"));
    json_object_set(payload, "name", json_object_get(cfg, "name"));
    json_object_set(payload, "version", json_object_get(meta, "version"));
    json_object_set_new(payload, "license", lic ? json_incref(lic) : json_string("Unknown"));
    json_object_set_new(payload, "entry", entry ? json_incref(entry)
                                                : json_string(kind ? "agent.py" : "tool.py"));
    json_object_set_new(payload, "module", module ? json_incref(module)
                                                  : json_string(kind ? "Agent" : "Tool"));
    json_object_set_new(payload, "files", files);
    char *body = json_dumps(payload, JSON_COMPACT);
    json_decref(payload);
    json_decref(cfg);
    if (!body) return 1;
    json_t *j = NULL;
    long st = hc_call_json(hc_kernel_url(url), "POST",
                           kind == 1 ? "/cerebrum/upload" : "/cerebrum/tools/upload", body, &j);
    free(body);
    if (st != 200) return fail_http("add", st, j);
    printf("%s %s/%s %s published\n", kind == 1 ? "agent" : "tool",
           json_string_value(json_object_get(j, "author")), json_string_value(json_object_get(j, "name")),
           json_string_value(json_object_get(j, "version")));
    json_t *reqs = json_object_get(j, "requirements");
    if (json_array_size(reqs)) {
        char *r = json_dumps(reqs, JSON_COMPACT);
        printf("  declares Python packages %s: the kernel host must have them (nothing is "
               "downloaded)\n", r ? r : "?");
        free(r);
    }
    json_decref(j);
    return 0;
}

static int hub_list(int argc, char **argv)
{
    const char *url = NULL;
    bool as_json = false;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--url") && i + 1 < argc) url = argv[++i];
        else if (!strcmp(argv[i], "--json")) as_json = true;
        else {
            fprintf(stderr, "usage: aios hub list [--json] [--url U]\n");
            return 2;
        }
    }
    json_t *t = NULL, *a = NULL;
    long st = hc_call_json(hc_kernel_url(url), "GET", "/cerebrum/tools/list", NULL, &t);
    if (st != 200) return fail_http("list", st, t);
    st = hc_call_json(hc_kernel_url(url), "GET", "/cerebrum/get_all_agents", NULL, &a);
    if (st != 200) {
        json_decref(t);
        return fail_http("list", st, a);
    }
    json_object_del(a, "aios_total");
    if (as_json) {
        json_t *o = json_pack("{s:o,s:o}", "tools", t, "agents", a);
        char *s = json_dumps(o, JSON_INDENT(2));
        if (s) puts(s);
        free(s);
        json_decref(o);
        return 0;
    }
    printf("%-6s %-36s %-10s %s\n", "KIND", "NAME", "VERSION", "DESCRIPTION (requirements)");
    for (int k = 0; k < 2; k++) {
        const char *key;
        json_t *v;
        json_object_foreach(k ? a : t, key, v) {
            char *r = json_array_size(json_object_get(v, "requirements"))
                      ? json_dumps(json_object_get(v, "requirements"), JSON_COMPACT) : NULL;
            char name[160];
            snprintf(name, sizeof name, "%s/%s", json_string_value(json_object_get(v, "author")),
                     json_string_value(json_object_get(v, "name")));
            printf("%-6s %-36s %-10s %.60s%s%s\n", k ? "agent" : "tool", name,
                   json_string_value(json_object_get(v, "version")),
                   json_string_value(json_object_get(v, "description")), r ? " " : "", r ? r : "");
            free(r);
        }
    }
    json_decref(t);
    json_decref(a);
    return 0;
}

int cli_hub_main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "add")) return hub_add(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "list")) return hub_list(argc, argv);
    fprintf(stderr, "usage: aios hub add FOLDER [--tool|--agent] [--url U]\n"
                    "       aios hub list [--json] [--url U]\n");
    return 2;
}
