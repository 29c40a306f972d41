/* Fuzz target: what the hub takes from a publisher (POST
 * /cerebrum/tools/upload and /cerebrum/upload, `aios hub add`): the body
 * parsed as api_parse_body does (a JSON object, duplicates refused), then
 * hub_publish into a hub in a scratch directory (names, versions, file
 * paths, base64 contents, the stored files and Cerebrum's zip), then
 * hub_get and hub_list over what is stored. Checks its promises: an
 * accepted package names a valid author/name/version, every accepted file
 * path is one hub_path_ok allows, and what was published can be read back.
 * The first byte of the input picks tools or agents. */
#include "fuzz.h"

#include "hub/hub.h"
#include "util/err.h"

#include <ftw.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

static char g_dir[64];
static struct hub *g_hub;
static int g_published;

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    remove(p);
    return 0;
}

/* a fresh hub (the scratch directory emptied): published versions are
 * immutable, so without this the store only grows */
static void hub_reset(void)
{
    hub_close(g_hub);
    g_hub = NULL;
    nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    char err[512];
    if (mkdir(g_dir, 0700) || hub_open(&g_hub, g_dir, NULL, err, sizeof err)) {
        fprintf(stderr, "fuzz_hub: %s\n", err);
        abort();
    }
    g_published = 0;
}

/* the scratch directory goes with the process */
static void cleanup(void)
{
    hub_close(g_hub);
    g_hub = NULL;
    nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(g_dir, sizeof g_dir, "/tmp/aios-fuzz-hub-%d", (int)getpid());
    hub_reset();
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    enum hub_kind kind = data[0] & 1 ? HUB_AGENT : HUB_TOOL;
    json_t *body = json_loadb((const char *)data + 1, size - 1, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(body)) {
        json_decref(body);
        return 0;
    }
    json_t *info = NULL;
    char err[1024] = "";
    int rc = hub_publish(g_hub, kind, body, &info, err, sizeof err);
    if (rc == 0) {
        const char *a = json_string_value(json_object_get(info, "author"));
        const char *n = json_string_value(json_object_get(info, "name"));
        const char *v = json_string_value(json_object_get(info, "version"));
        if (!a || !n || !v || !hub_name_ok(a) || !hub_name_ok(n) || !hub_version_ok(v)) abort();
        size_t i;
        json_t *f;
        json_array_foreach(json_object_get(body, "files"), i, f) {
            const char *p = json_string_value(json_object_get(f, "path"));
            if (p && !hub_path_ok(p)) abort();
        }
        json_t *pkg = NULL;
        if (hub_get(g_hub, kind, a, n, v, &pkg, err, sizeof err)) abort();
        json_decref(pkg);
        json_decref(hub_list(g_hub, kind));
        if (++g_published >= 64) hub_reset();
    } else if (!err[0]) {
        abort(); /* a refusal says why */
    }
    json_decref(info);
    json_decref(body);
    return 0;
}
