/* Fuzz target: the request headers the kernel reads, where they are
 * parsed: Authorization / X-Aios-Agent-Token (the access manager's
 * acc_token_of: "Bearer" in any case, spaces, fallback), X-Aios-Priority
 * (api_priority_header: an integer in -100..100, nothing after it), and
 * X-Aios-Agent, an agent name, as the managers turn it into a directory
 * name (storage and tools: one safe path component); X-Request-Id
 * (api_request_id: echoed when it is 1 to 64 characters of a fixed set,
 * else one the kernel makes) and the check every X-Aios-* value passes
 * before any of this (api_header_text_ok: UTF-8 text, no control
 * character but tab), which also gates the X-Aios-Agent line.
 *
 * Input: the header values, one a line, in that order (Authorization,
 * X-Aios-Agent-Token, X-Aios-Priority, X-Aios-Agent, X-Request-Id, any
 * X-Aios-* value); a missing line is an absent header. libmicrohttpd hands values over NUL-terminated, so a
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

static bool id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("-_.:/+=@", c));
}

/* the id is always 1 to 64 characters of the set; a valid header's is it */
static void request_id_ok(const char *h)
{
    char id[72];
    memset(id, 'X', sizeof id);
    api_request_id(h, id, sizeof id);
    size_t n = strnlen(id, sizeof id);
    if (n == 0 || n > 64) abort();
    for (size_t i = 0; i < n; i++)
        if (!id_char(id[i])) abort();
    size_t hn = h ? strlen(h) : 0;
    bool valid = hn > 0 && hn <= 64;
    for (size_t i = 0; valid && i < hn; i++) valid = id_char(h[i]);
    if (valid != (h && strcmp(id, h) == 0)) abort();
}

/* accepted text holds no control byte and no byte that never starts or
 * continues UTF-8; its continuation bytes follow lead bytes */
static void text_ok(const char *s)
{
    if (!api_header_text_ok(s)) return;
    int want = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned c = *p;
        if ((c < 0x20 && c != '\t') || c == 0x7f || c == 0xc0 || c == 0xc1 || c >= 0xf5) abort();
        if ((c & 0xc0) == 0x80) {
            if (want-- <= 0) abort();
        } else {
            if (want) abort();
            want = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : 0;
        }
    }
    if (want) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = 0;
    const char *h[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
    char *p = s;
    for (int i = 0; i < 6 && p; i++) {
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
    /* as the kernel runs them: X-Aios-Agent only when it is text */
    if (h[3] && api_header_text_ok(h[3])) {
        char dn[1024];
        dirname_ok(sto_agent_dirname(h[3], dn, sizeof dn), dn);
        dirname_ok(tool_agent_dirname(h[3], dn, sizeof dn), dn);
    }
    request_id_ok(h[4]);
    if (h[5]) text_ok(h[5]);
    if (h[3]) text_ok(h[3]);
    free(s);
    return 0;
}
