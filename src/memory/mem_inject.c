/* memory.auto_inject: relevant notes of the calling agent added to its chat.
 *
 * Purpose: AIOS's personalisation option. Before an LLM call's prompt is
 * made (api/aios_query.c and api/openai.c call mem_auto_inject() just
 * before api_llm_prepare()), the last user message is used as a retrieval
 * query over the caller's notes (mem_retrieve(), read-only like
 * retrieve_memory_raw: the same ranking as retrieve_memory, BM25 or hybrid
 * BM25 + cosine with an embedding model, but nothing is counted, no write
 * on this path), and the best
 * notes are added to the chat as a system message within a token budget.
 *
 * Budget: the prompt is tokenized later by the core, whose tokenizer this
 * module cannot reach (a remote core has none here at all), so the budget
 * is enforced on an estimate: one token per 3 bytes of text. BPE
 * tokenizers average about 4 bytes per English token, so typical notes stay
 * under it; text that tokenizes worse (rare symbols, some scripts) can pass
 * it. Notes are added best first until the next one would pass the budget;
 * a first note alone that does not fit is cut at a UTF-8 boundary.
 *
 * Placement: appended (after a blank line) to the first message when that
 * is a system message, so the agent's own instructions stay first and
 * templates that allow one system message only still work; otherwise a new
 * system message goes before everything.
 *
 * Threads: runs on the calling thread (an HTTP thread). The retrieval is
 * SQLite reads (a few milliseconds at 10k notes, see docs/memory.md) plus,
 * with an embedding model, one embedding of the query under the embedding
 * model's mutex. That is a bounded wait on the HTTP thread, chosen over
 * splitting every LLM route into a memory syscall whose completion prepares
 * and submits the LLM call; docs/memory.md says so.
 *
 * Ownership: the new message strings and req->memory belong to req (freed
 * by llm_req_free). */
#include "memory/mem.h"

#include "kernel/kernel.h"
#include "llm/core.h"
#include "util/err.h"
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char HEADER[] = "Notes from your memory that may be relevant:";

int mem_inject_est_tokens(size_t bytes) { return (int)((bytes + 2) / 3); }

char *mem_inject_text(const char *const *notes, size_t n, int max_tokens, size_t *n_used)
{
    *n_used = 0;
    size_t cap = (size_t)max_tokens * 3; /* the budget in bytes */
    size_t len = sizeof HEADER - 1;
    if (n == 0 || len + 4 > cap) return NULL;
    char *out = malloc(cap + 1);
    if (!out) return NULL;
    memcpy(out, HEADER, len);
    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(notes[i]);
        if (len + 3 + nl > cap) {
            if (i > 0) break;
            /* the best note alone is too long: its head */
            nl = cap - len - 3;
            while (nl > 0 && ((unsigned char)notes[i][nl] & 0xC0) == 0x80) nl--;
            if (nl == 0) break;
        }
        memcpy(out + len, "\n- ", 3);
        memcpy(out + len + 3, notes[i], nl);
        len += 3 + nl;
        (*n_used)++;
    }
    out[len] = 0;
    if (*n_used == 0) {
        free(out);
        return NULL;
    }
    return out;
}

/* put text into the chat as described above; 0 or AIOS_ENOMEM */
static int add_system(struct llm_req *req, const char *text)
{
    if (req->n_msgs > 0 && !strcmp(req->msgs[0].role, "system")) {
        size_t a = strlen(req->msgs[0].content), b = strlen(text);
        char *c = malloc(a + b + 3);
        if (!c) return AIOS_ENOMEM;
        memcpy(c, req->msgs[0].content, a);
        size_t o = a;
        if (a) c[o++] = '\n', c[o++] = '\n';
        memcpy(c + o, text, b + 1);
        free(req->msgs[0].content);
        req->msgs[0].content = c;
        return 0;
    }
    struct llm_message *m = realloc(req->msgs, (req->n_msgs + 1) * sizeof *m);
    if (!m) return AIOS_ENOMEM;
    req->msgs = m;
    char *role = strdup("system"), *content = strdup(text);
    if (!role || !content) {
        free(role);
        free(content);
        return AIOS_ENOMEM;
    }
    memmove(m + 1, m, req->n_msgs * sizeof *m);
    m[0].role = role;
    m[0].content = content;
    req->n_msgs++;
    return 0;
}

int mem_auto_inject(struct kernel *k, const char *agent, struct llm_req *req)
{
    struct mem_manager *m = k ? k->memory : NULL;
    if (!m || !agent || !*agent || !req) return 0;
    const struct mem_opts *o = mem_manager_opts(m);
    if (!o->auto_inject) return 0;
    const char *user = NULL;
    for (size_t i = req->n_msgs; i-- > 0;) {
        if (!strcmp(req->msgs[i].role, "user")) {
            user = req->msgs[i].content;
            break;
        }
    }
    if (!user || !*user) return 0;
    /* no back-fill of missing vectors on this (HTTP) thread; read-only */
    struct mem_retrieve_params p = {.query = (char *)user, .query_len = strlen(user),
                                    .k = o->inject_k, .backfill = false};
    struct mem_hit *hits = NULL;
    size_t n = 0;
    char err[256] = "";
    int rc = mem_retrieve(m, agent, &p, false, &hits, &n, err, sizeof err);
    if (rc) {
        LOG_WARN("memory", "auto_inject for %s: retrieval failed (%s); the chat goes on without "
                 "notes", agent, err[0] ? err : aios_strerror(rc));
        return 0;
    }
    const char **notes = n ? calloc(n, sizeof *notes) : NULL;
    size_t used = 0;
    char *text = NULL;
    if (n && notes) {
        for (size_t i = 0; i < n; i++) notes[i] = hits[i].note->content;
        text = mem_inject_text(notes, n, o->inject_max_tokens, &used);
    }
    free(notes);
    rc = 0;
    if (text && (rc = add_system(req, text)) == 0) {
        json_t *ids = json_array();
        for (size_t i = 0; i < used; i++) json_array_append_new(ids, json_string(hits[i].note->id));
        json_decref(req->memory);
        req->memory = json_pack("{s:o,s:i,s:i,s:s}", "memory_ids", ids, "n_notes", (int)used,
                                "est_tokens", mem_inject_est_tokens(strlen(text)), "text", text);
        LOG_DEBUG("memory", "auto_inject for %s: %zu notes, about %d tokens", agent, used,
                  mem_inject_est_tokens(strlen(text)));
    }
    free(text);
    mem_hits_free(hits, n);
    return rc;
}
