/* add_agentic_memory: the kernel's model describes a note before it is
 * stored.
 *
 * As in the AIOS reference, the model is asked for a JSON object with
 * "keywords" (list), "context" (one sentence) and "tags" (list). The call is
 * a real LLM syscall: it is queued on the kernel's scheduler for the first
 * LLM core and runs on that core's engine like any agent's chat, accounted
 * to the same agent. We do not constrain it with a grammar (the reference
 * does not either, and a grammar makes a small model spend its few tokens
 * on syntax); instead the answer is parsed leniently: the first '{' to the
 * last '}' is tried as JSON, and each field is taken only if it has the
 * right type. What the answer lacks (always, with the random-weight test
 * model) is filled by keyword extraction: the most frequent words that are
 * not stop words become keywords, the first three of them tags, and the
 * first sentence (at most 160 bytes) the context. `source` tells the agent
 * which happened.
 *
 * The generation is capped at memory.agentic_max_tokens (default 64) with
 * greedy sampling, so the cost is bounded: on the tiny test model this is a
 * few milliseconds, on a 7B model on CPU a few seconds.
 *
 * The manager does not call this file's model part itself: the kernel
 * gives mem_agentic_analyze() as the manager's analysis callback
 * (mem_kernel.c); a manager without one uses mem_analysis_keywords().
 *
 * Threads: runs on a memory pool thread, which blocks until the LLM syscall
 * is final. It holds no lock meanwhile. The wait cannot be abandoned early
 * (the engine calls our notify callback, whose state lives on this stack),
 * so after 60 s it asks the engine to cancel and keeps waiting for the
 * answer, which then comes at the next token. On shutdown the scheduler
 * fails the queued call with 503, which also ends the wait. */
#include "kernel/syscall.h"
#include "llm/core.h"
#include "sched/sched.h"
#include "memory/mem.h"
#include "memory/mem_note.h"
#include "util/err.h"
#include "util/log.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define AGENTIC_PROMPT_MAX 4000 /* bytes of the note shown to the model */
#define AGENTIC_CANCEL_AFTER_S 60

static const char k_prompt[] =
    "Generate a structured analysis of the following content by:\n"
    "1. Identifying the most salient keywords (nouns, verbs, key concepts)\n"
    "2. Summarising its core theme in one sentence\n"
    "3. Creating relevant categorical tags\n"
    "Reply with a JSON object only, like {\"keywords\": [\"...\"], \"context\": \"...\", "
    "\"tags\": [\"...\"]}, with at least three keywords and three tags.\n\n"
    "Content for analysis:\n";

void mem_analysis_free(struct mem_analysis *a)
{
    json_decref(a->keywords);
    json_decref(a->tags);
    free(a->context);
    memset(a, 0, sizeof *a);
}

/* ---- keyword extraction ---- */

struct word {
    char *w;
    int count, first;
};

static int cmp_word(const void *x, const void *y)
{
    const struct word *a = x, *b = y;
    if (a->count != b->count) return b->count - a->count;
    return a->first - b->first;
}

json_t *mem_extract_keywords(const char *text, int max)
{
    json_t *out = json_array();
    struct word *ws = NULL;
    int n = 0, cap = 0, pos = 0;
    if (!out) return NULL;
    const unsigned char *p = (const unsigned char *)text;
    while (*p) {
        while (*p && !(isalnum(*p) || *p >= 0x80)) p++;
        const unsigned char *b = p;
        while (*p && (isalnum(*p) || *p >= 0x80 || *p == '-' || *p == '_')) p++;
        size_t len = (size_t)(p - b);
        if (len < 3 || len > 64) continue;
        char w[65];
        for (size_t i = 0; i < len; i++) w[i] = (char)tolower(b[i]);
        w[len] = 0;
        if (mem_is_stop_word(w, len) || isdigit((unsigned char)w[0])) continue;
        int i;
        for (i = 0; i < n && strcmp(ws[i].w, w); i++) {}
        if (i < n) {
            ws[i].count++;
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            struct word *nw = realloc(ws, (size_t)cap * sizeof *nw);
            if (!nw) break;
            ws = nw;
        }
        ws[n].w = strdup(w);
        if (!ws[n].w) break;
        ws[n].count = 1;
        ws[n].first = pos++;
        n++;
        if (n >= 4096) break; /* enough to rank a note */
    }
    if (n > 0) qsort(ws, (size_t)n, sizeof *ws, cmp_word); /* no word: ws is NULL */
    for (int i = 0; i < n; i++) {
        if (i < max) json_array_append_new(out, json_string(ws[i].w));
        free(ws[i].w);
    }
    free(ws);
    return out;
}

static char *first_sentence(const char *text)
{
    while (*text && isspace((unsigned char)*text)) text++;
    size_t n = 0;
    while (text[n] && n < 160) {
        if ((text[n] == '.' || text[n] == '!' || text[n] == '?' || text[n] == '\n') && n > 0) {
            if (text[n] != '\n') n++;
            break;
        }
        n++;
    }
    /* do not cut a UTF-8 sequence */
    while (n > 0 && text[n] && ((unsigned char)text[n] & 0xC0) == 0x80) n--;
    char *s = strndup(text, n);
    return s;
}

/* ---- the model ---- */

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
};

static void on_llm_event(struct syscall *sc, void *ud)
{
    struct waiter *w = ud;
    pthread_mutex_lock(&sc->mu);
    bool final = syscall_status_final(sc->status);
    pthread_mutex_unlock(&sc->mu);
    if (!final) return;
    pthread_mutex_lock(&w->mu);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* The model's raw answer in *text (malloc'd), or an error. */
static int ask_model(struct llm_core *core, struct sched *s, const char *agent,
                     const char *content, int max_tokens, char **text)
{
    *text = NULL;
    if (!core || !s) return AIOS_ENOTFOUND;
    struct llm_req *req = calloc(1, sizeof *req);
    if (!req) return AIOS_ENOMEM;
    req->model = strdup(core->name);
    req->msgs = calloc(2, sizeof *req->msgs);
    if (!req->model || !req->msgs) goto oom;
    req->n_msgs = 2;
    size_t clen = strnlen(content, AGENTIC_PROMPT_MAX);
    while (clen > 0 && content[clen] && ((unsigned char)content[clen] & 0xC0) == 0x80) clen--;
    size_t ulen = sizeof k_prompt + clen + 1;
    req->msgs[0].role = strdup("system");
    req->msgs[0].content = strdup("You reply with a JSON object only.");
    req->msgs[1].role = strdup("user");
    req->msgs[1].content = malloc(ulen);
    if (!req->msgs[0].role || !req->msgs[0].content || !req->msgs[1].role || !req->msgs[1].content)
        goto oom;
    snprintf(req->msgs[1].content, ulen, "%s%.*s", k_prompt, (int)clen, content);
    req->p.max_tokens = max_tokens;
    req->p.temperature = 0;
    req->p.top_p = 1;
    req->p.has_seed = true;
    req->p.seed = 0;
    char err[256] = "";
    int rc = core->ops->prepare(core, req, err, sizeof err);
    if (rc) {
        LOG_WARN("memory", "add_agentic_memory: cannot ask %s: %s", core->name, err);
        llm_req_free(req);
        return rc;
    }
    struct syscall *sc = syscall_new(SYSCALL_KIND_LLM, agent, core, req, llm_req_free);
    if (!sc) return AIOS_ENOMEM;
    struct waiter w = {.done = false};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    sc->notify = on_llm_event;
    sc->notify_ud = &w;
    rc = sched_submit(s, sc);
    if (!rc) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += AGENTIC_CANCEL_AFTER_S;
        bool cancelled = false;
        pthread_mutex_lock(&w.mu);
        while (!w.done) {
            if (cancelled) {
                pthread_cond_wait(&w.cv, &w.mu);
            } else if (pthread_cond_timedwait(&w.cv, &w.mu, &dl) == ETIMEDOUT) {
                syscall_request_cancel(sc);
                cancelled = true;
            }
        }
        pthread_mutex_unlock(&w.mu);
        pthread_mutex_lock(&sc->mu);
        if (sc->status == SYSCALL_STATUS_DONE && sc->res) {
            struct llm_res *res = sc->res;
            *text = strndup(res->text ? res->text : "", res->len);
            if (!*text) rc = AIOS_ENOMEM;
        } else {
            rc = sc->err ? sc->err : AIOS_EENGINE;
        }
        pthread_mutex_unlock(&sc->mu);
    }
    /* The engine may still be inside on_llm_event's last unlock; taking the
     * waiter's mutex once more orders that before we destroy it. */
    pthread_mutex_lock(&w.mu);
    pthread_mutex_unlock(&w.mu);
    syscall_unref(sc);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return rc;
oom:
    llm_req_free(req);
    return AIOS_ENOMEM;
}

static json_t *str_array(json_t *v, int max)
{
    if (!json_is_array(v)) return NULL;
    json_t *a = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        if (json_is_string(e) && json_string_length(e) > 0 && json_array_size(a) < (size_t)max)
            json_array_append(a, e);
    }
    if (json_array_size(a) == 0) {
        json_decref(a);
        return NULL;
    }
    return a;
}

/* what the model's answer lacked (got: how many of the three it gave),
 * from keyword extraction */
static int fill_missing(const char *content, int got, struct mem_analysis *out)
{
    json_t *kw = NULL;
    if (!out->keywords || !out->tags) kw = mem_extract_keywords(content, 5);
    if (!out->keywords) out->keywords = json_deep_copy(kw);
    if (!out->tags) {
        out->tags = json_array();
        for (size_t i = 0; i < 3 && i < json_array_size(kw); i++)
            json_array_append(out->tags, json_array_get(kw, i));
    }
    json_decref(kw);
    if (!out->context) out->context = first_sentence(content);
    out->source = got == 3 ? "model" : got > 0 ? "model+keywords" : "keywords";
    if (!out->keywords || !out->tags || !out->context) {
        mem_analysis_free(out);
        return AIOS_ENOMEM;
    }
    return 0;
}

int mem_agentic_analyze(struct llm_core *core, struct sched *s, const char *agent,
                        const char *content, int max_tokens,
                        struct mem_analysis *out)
{
    memset(out, 0, sizeof *out);
    char *text = NULL;
    int got = 0;
    int rc = ask_model(core, s, agent, content, max_tokens, &text);
    if (rc == AIOS_ENOMEM) return rc;
    if (rc == 0 && text) {
        const char *b = strchr(text, '{'), *e = strrchr(text, '}');
        json_t *j = (b && e && e > b) ? json_loadb(b, (size_t)(e - b + 1), 0, NULL) : NULL;
        if (json_is_object(j)) {
            out->keywords = str_array(json_object_get(j, "keywords"), 16);
            out->tags = str_array(json_object_get(j, "tags"), 16);
            json_t *c = json_object_get(j, "context");
            if (json_is_string(c) && json_string_length(c) > 0) out->context = strdup(json_string_value(c));
            got = (out->keywords != NULL) + (out->tags != NULL) + (out->context != NULL);
        }
        json_decref(j);
    } else if (rc != AIOS_ENOTFOUND) {
        LOG_WARN("memory", "add_agentic_memory: the model call failed (%s); using keyword extraction",
                 aios_strerror(rc));
    }
    free(text);
    return fill_missing(content, got, out);
}

int mem_analysis_keywords(const char *content, struct mem_analysis *out)
{
    memset(out, 0, sizeof *out);
    return fill_missing(content, 0, out);
}
