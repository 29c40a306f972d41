/* aios demo: the project's main job (`make run`).
 *
 * Starts `aios serve` as a child process on a free loopback port with a
 * temporary data directory and the built-in test model, then talks to it
 * over real HTTP the way an agent or an OpenAI client would: status, model
 * list, a chat call, the same call again with the same seed (identical
 * answer), a streamed call, a malformed request (400, kernel keeps
 * serving). Prints what it did and exits 0 only if every step behaved. */
#include "cli/cli.h"
#include "cli/client.h"
#include "cli/demo_agents.h"
#include "kernel/kernel.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int g_fail;

static void step(const char *what, bool ok, const char *detail)
{
    printf("  [%s] %s%s%s\n", ok ? " ok " : "FAIL", what, detail && *detail ? ": " : "",
           detail ? detail : "");
    if (!ok) g_fail++;
    fflush(stdout);
}

/* printable, JSON-escaped, shortened model text (a random model's output is noise) */
static void show_text(const char *label, const char *s)
{
    /* cut at a character boundary, then escape */
    size_t n = strlen(s), cut = n > 60 ? 60 : n;
    while (cut < n && ((unsigned char)s[cut] & 0xC0) == 0x80) cut++;
    json_t *j = json_stringn(s, cut);
    char *e = j ? json_dumps(j, JSON_ENCODE_ANY | JSON_ENSURE_ASCII) : NULL;
    json_decref(j);
    if (e && cut < n) {
        char *t = realloc(e, strlen(e) + 4);
        if (t) {
            e = t;
            strcat(e, "...");
        }
    }
    printf("         %s %s\n", label, e ? e : "(unprintable)");
    free(e);
}

struct sse {
    char buf[1 << 16];
    size_t n;
    int n_chunks;
    bool done;
    char text[1 << 16];
    size_t n_text;
    char finish[32];
};

static int on_sse(const char *d, size_t n, void *ud)
{
    struct sse *s = ud;
    if (s->n + n >= sizeof s->buf) return 1;
    memcpy(s->buf + s->n, d, n);
    s->n += n;
    s->buf[s->n] = 0;
    char *ev;
    while ((ev = strstr(s->buf, "\n\n"))) {
        *ev = 0;
        if (!strncmp(s->buf, "data: ", 6)) {
            const char *payload = s->buf + 6;
            if (!strcmp(payload, "[DONE]")) {
                s->done = true;
            } else {
                json_t *j = json_loads(payload, 0, NULL);
                json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
                json_t *c = json_object_get(json_object_get(ch, "delta"), "content");
                json_t *f = json_object_get(ch, "finish_reason");
                if (json_is_string(c) && s->n_text + json_string_length(c) < sizeof s->text) {
                    memcpy(s->text + s->n_text, json_string_value(c), json_string_length(c));
                    s->n_text += json_string_length(c);
                    s->text[s->n_text] = 0;
                    if (json_string_length(c)) s->n_chunks++;
                }
                if (json_is_string(f)) snprintf(s->finish, sizeof s->finish, "%s", json_string_value(f));
                json_decref(j);
            }
        }
        size_t used = (size_t)(ev + 2 - s->buf);
        memmove(s->buf, ev + 2, s->n - used + 1);
        s->n -= used;
    }
    return 0;
}

static json_t *call_json(const char *method, const char *url, const char *body, long *status)
{
    struct hc_resp r;
    int rc = hc_call(method, url, body, body ? strlen(body) : 0, &r, 120);
    *status = r.status;
    json_t *j = rc ? NULL : json_loadb(r.body, r.len, 0, NULL);
    hc_resp_free(&r);
    return j;
}

int cli_demo_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        fprintf(stderr, "aios demo: cannot find its own executable\n");
        return 1;
    }
    self[n] = 0;
    char tmpl[] = "/tmp/aios-demo-XXXXXX";
    if (!mkdtemp(tmpl)) {
        perror("aios demo: mkdtemp");
        return 1;
    }

    printf("aios demo: starting `aios serve` on the built-in test model (data in %s)\n", tmpl);
    printf("  note: the built-in model has RANDOM weights and a real Qwen2 tokenizer, so its\n"
           "  text is noise; everything else (HTTP, scheduling, llama.cpp compute,\n"
           "  sampling, streaming) is real. Use `aios serve --model FILE.gguf` for a real model.\n");
    fflush(stdout);
    /* the example agents live next to the binary (build/agents/) */
    char agents_dir[PATH_MAX + 16], probe[PATH_MAX + 64], cfg[PATH_MAX + 64];
    snprintf(agents_dir, sizeof agents_dir, "%s", self);
    char *slash = strrchr(agents_dir, '/');
    if (slash) strcpy(slash, "/agents");
    snprintf(probe, sizeof probe, "%s/react_agent/config.json", agents_dir);
    bool have_agents = access(probe, R_OK) == 0;
    snprintf(cfg, sizeof cfg, "%s/config.yaml", tmpl);
    FILE *cf = fopen(cfg, "w");
    if (cf) {
        fprintf(cf, "agent_factory:\n  agents_dir: \"%s\"\n", agents_dir);
        fclose(cf);
    }
    const char *extra[] = {"--config", cfg, NULL};
    struct aios_child c;
    if (child_start(&c, self, tmpl, cf ? extra : NULL, 300)) {
        fprintf(stderr, "aios demo: the kernel did not start; see %s/aios.log\n", tmpl);
        return 1;
    }
    char url[256], detail[512];
    long st;

    snprintf(url, sizeof url, "%s/status", c.base);
    json_t *j = call_json("GET", url, NULL, &st);
    json_t *m0 = json_array_get(json_object_get(j, "models"), 0);
    snprintf(detail, sizeof detail, "%s, model %s (%s, %lld params, n_ctx %lld)", c.base,
             json_string_value(json_object_get(m0, "name")),
             json_string_value(json_object_get(m0, "description")),
             (long long)json_integer_value(json_object_get(m0, "n_params")),
             (long long)json_integer_value(json_object_get(m0, "n_ctx")));
    step("GET /status", st == 200 && m0, detail);
    const char *model = json_string_value(json_object_get(m0, "name"));
    char model_name[128];
    snprintf(model_name, sizeof model_name, "%s", model ? model : "aios-tiny");
    json_decref(j);

    snprintf(url, sizeof url, "%s/v1/models", c.base);
    j = call_json("GET", url, NULL, &st);
    snprintf(detail, sizeof detail, "%zu model(s)", json_array_size(json_object_get(j, "data")));
    step("GET /v1/models", st == 200 && json_array_size(json_object_get(j, "data")) > 0, detail);
    json_decref(j);

    if (have_agents) {
        printf("\n");
        int n_failed = 0;
        demo_run_agents(c.base, agents_dir, 240, &n_failed);
        snprintf(detail, sizeof detail, "%d failed", n_failed);
        printf("\n");
        step("example agents ran concurrently as processes", n_failed == 0, detail);
    } else {
        step("example agents", true, "not found next to the binary (build them with make); skipped");
    }

    char body[1024];
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"seed\":42,\"max_tokens\":24,\"temperature\":0.8,"
             "\"messages\":[{\"role\":\"system\",\"content\":\"You are a helpful agent.\"},"
             "{\"role\":\"user\",\"content\":\"Plan a trip to Paris in three steps.\"}]}",
             model_name);
    snprintf(url, sizeof url, "%s/v1/chat/completions", c.base);
    char *first = NULL;
    for (int round = 0; round < 2; round++) {
        j = call_json("POST", url, body, &st);
        json_t *msg = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
        const char *text = json_string_value(json_object_get(msg, "content"));
        json_t *u = json_object_get(j, "usage");
        json_t *a = json_object_get(j, "aios");
        snprintf(detail, sizeof detail, "%lld prompt + %lld generated tokens, waited %.3fs, "
                 "turnaround %.3fs",
                 (long long)json_integer_value(json_object_get(u, "prompt_tokens")),
                 (long long)json_integer_value(json_object_get(u, "completion_tokens")),
                 json_number_value(json_object_get(a, "waiting_time")),
                 json_number_value(json_object_get(a, "turnaround_time")));
        if (round == 0) {
            step("POST /v1/chat/completions (seed 42)", st == 200 && text, detail);
            if (text) show_text("answer:", text);
            first = text ? strdup(text) : NULL;
        } else {
            bool same = text && first && !strcmp(text, first);
            step("same request again: identical answer", st == 200 && same, detail);
        }
        json_decref(j);
    }

    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"seed\":42,\"max_tokens\":24,\"temperature\":0.8,\"stream\":true,"
             "\"messages\":[{\"role\":\"system\",\"content\":\"You are a helpful agent.\"},"
             "{\"role\":\"user\",\"content\":\"Plan a trip to Paris in three steps.\"}]}",
             model_name);
    struct sse *s = calloc(1, sizeof *s);
    int rc = s ? hc_stream(url, body, on_sse, s, &st, 120) : -1;
    if (s) {
        snprintf(detail, sizeof detail, "%d content chunks, finish_reason %s, [DONE] %s",
                 s->n_chunks, s->finish, s->done ? "received" : "missing");
        step("streamed (stream: true, Server-Sent Events)", rc == 0 && st == 200 && s->done, detail);
        step("streamed text equals the non-streamed answer", first && !strcmp(first, s->text), NULL);
        free(s);
    }
    free(first);

    j = call_json("POST", url, "{\"model\": \"x\", \"messages\": [", &st);
    const char *emsg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    snprintf(detail, sizeof detail, "HTTP %ld, \"%s\"", st, emsg ? emsg : "");
    step("malformed JSON is refused", st == 400 && emsg, detail);
    json_decref(j);

    snprintf(url, sizeof url, "%s/status", c.base);
    j = call_json("GET", url, NULL, &st);
    snprintf(detail, sizeof detail, "%lld calls finished",
             (long long)json_integer_value(json_object_get(json_object_get(j, "scheduler"), "finished")));
    step("kernel still serving", st == 200, detail);
    json_decref(j);

    int ws = child_stop(&c, 30);
    step("SIGTERM: clean shutdown", ws >= 0 && WIFEXITED(ws) && WEXITSTATUS(ws) == 0, NULL);

    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
    if (g_fail) {
        printf("aios demo: %d step(s) failed; kernel log kept in %s/aios.log\n", g_fail, tmpl);
        return 1;
    }
    if (system(cmd) != 0) fprintf(stderr, "aios demo: could not remove %s\n", tmpl);
    printf("aios demo: all steps passed\n");
    return 0;
}
