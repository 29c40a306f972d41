/* Fuzz target: the storage manager's path rules (src/storage/path.c):
 * sto_path_norm for a path an agent sends (with and without the root
 * allowed) and sto_agent_dirname for an agent name. Checks the rules'
 * promises: a normalised path is relative, has no "." / ".." / empty
 * component, and normalising it again gives itself; an agent's directory
 * name is one safe component. */
#include "fuzz.h"

#include "storage/storage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv) { return 0; }

static void check_norm(const char *out, bool allow_root)
{
    size_t n = strlen(out);
    if (n == 0) {
        if (!allow_root) abort(); /* "" (the root) only when allowed */
        return;
    }
    if (out[0] == '/' || out[n - 1] == '/' || strstr(out, "//")) abort();
    for (const char *c = out; c;) {
        const char *e = strchr(c, '/');
        size_t l = e ? (size_t)(e - c) : strlen(c);
        if ((l == 1 && c[0] == '.') || (l == 2 && c[0] == '.' && c[1] == '.')) abort();
        c = e ? e + 1 : NULL;
    }
    char again[4096], err[256];
    if (sto_path_norm(out, n, allow_root, again, sizeof again, err, sizeof err) != 0 ||
        strcmp(again, out) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char out[4096], err[256];
    for (int allow = 0; allow < 2; allow++)
        if (sto_path_norm((const char *)data, size, allow, out, sizeof out, err, sizeof err) == 0)
            check_norm(out, allow);
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = 0;
    char dn[512];
    if (sto_agent_dirname(s, dn, sizeof dn) == 0) {
        if (!dn[0] || strchr(dn, '/') || !strcmp(dn, ".") || !strcmp(dn, "..")) abort();
    }
    free(s);
    return 0;
}
