/* Fuzz target: an agent package's config.json (src/agents/agent.c):
 * jansson's parse as agent_pkg_load does it (duplicates refused), then
 * agent_pkg_check, the validation without the file system. Checks its
 * promise: an accepted build.entry stays inside the package folder. */
#include "fuzz.h"

#include "agents/agent.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv) { return 0; }

#define DIR "/srv/agents/pkg"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct agent_pkg pkg = {0};
    pkg.config = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!pkg.config) return 0;
    pkg.dir = strdup(DIR);
    char err[512];
    if (pkg.dir && agent_pkg_check(&pkg, DIR "/config.json", err, sizeof err) == 0) {
        if (!pkg.name || !*pkg.name || !pkg.entry) abort();
        const char *rel = pkg.entry + strlen(DIR "/");
        if (strncmp(pkg.entry, DIR "/", strlen(DIR "/")) || rel[0] == '/') abort();
        for (const char *c = rel; c;) {
            const char *e = strchr(c, '/');
            size_t l = e ? (size_t)(e - c) : strlen(c);
            if (l == 2 && c[0] == '.' && c[1] == '.') abort();
            c = e ? e + 1 : NULL;
        }
    }
    agent_pkg_free(&pkg);
    return 0;
}
