/* Fuzz target: the request headers the kernel reads, where they are
 * parsed: Authorization / X-Aios-Agent-Token (the access manager's
 * acc_token_of: "Bearer" in any case, spaces, fallback), X-Aios-Priority
 * (api_priority_header: an integer in -100..100, nothing after it), and
 * X-Aios-Agent, an agent name, as the managers turn it into a directory
 * name (storage and tools: one safe path component).
 *
 * Input: the header values, one a line, in that order (Authorization,
 * X-Aios-Agent-Token, X-Aios-Priority, X-Aios-Agent); a missing line is
 * an absent header. libmicrohttpd hands values over NUL-terminated, so a
 * line ends at a NUL too. */
#include "fuzz.h"

#include "access/access.h"
#include "api/api.h"
#include "kernel/syscall.h"
#include "storage/storage.h"
#include "tools/tools.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv) { return 0; }

static void dirname_ok(int rc, const char *dn)
{
    if (rc) return;
    if (!dn[0] || strchr(dn, '/') || dn[0] == '.') abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = 0;
    const char *h[4] = {NULL, NULL, NULL, NULL};
    char *p = s;
    for (int i = 0; i < 4 && p; i++) {
        h[i] = p;
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        p = nl ? nl + 1 : NULL;
    }
    const char *tok = acc_token_of(h[0], h[1]);
    if (tok) {
        bool in0 = h[0] && tok >= h[0] && tok < h[0] + strlen(h[0]);
        if (!*tok || (!in0 && tok != h[1])) abort();
    }
    char err[256];
    int prio = 12345;
    if (h[2] && api_priority_header(h[2], &prio, err, sizeof err) == 0 &&
        (prio < SYSCALL_PRIORITY_MIN || prio > SYSCALL_PRIORITY_MAX))
        abort();
    if (h[3]) {
        char dn[1024];
        dirname_ok(sto_agent_dirname(h[3], dn, sizeof dn), dn);
        dirname_ok(tool_agent_dirname(h[3], dn, sizeof dn), dn);
    }
    free(s);
    return 0;
}
