/* note_agent: a note-taking agent in C on libaios.
 *
 * Asks the LLM for a thought about its task, stores two notes in its memory
 * (the task, and the thought), searches its memory for the task, and reads
 * the first note back by id. Prints progress lines and a JSON result as its
 * last line.
 *
 * Exit: 0 done; 3 the memory manager answered 501 (printed as SKIP); 1 error. */
#include <aios/client.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void printable(const char *s, char *out, size_t outlen)
{
    size_t j = 0;
    for (size_t i = 0; s && s[i] && j + 1 < outlen; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[j++] = (ch >= 32 && ch < 127 && ch != '"' && ch != '\\') ? (char)ch : '.';
    }
    out[j] = 0;
}

static int skip_or_fail(struct aios_client *c, int e, const char *what)
{
    if (e == AIOS_CLIENT_ENOTIMPL) {
        printf("SKIP: the memory manager is not in this kernel (501): %s\n", aios_client_error(c));
        printf("{\"agent\":\"note_agent\",\"skipped\":\"memory (501)\"}\n");
        return 3;
    }
    fprintf(stderr, "note_agent: %s failed: %s\n", what, aios_client_error(c));
    return 1;
}

int main(int argc, char **argv)
{
    const char *task = argc > 1 ? argv[1] : "Remember that the demo runs on aios";
    struct aios_client *c;
    if (aios_client_new(&c, NULL, NULL)) return 1;
    int rc = 0;
    char *id = NULL, *id2 = NULL, note[1024], p[128];
    struct aios_memory_note *hits = NULL, got = {0};
    size_t n_hits = 0;
    printf("note_agent: task: %s\n", task);
    struct aios_message m[] = {{"system", "You take short notes."}, {"user", task}};
    struct aios_llm_opts o = AIOS_LLM_OPTS_INIT;
    o.max_new_tokens = 8;
    o.has_seed = true;
    o.seed = 11;
    struct aios_llm_result r;
    int e = aios_llm_chat(c, m, 2, &o, &r);
    if (e) {
        rc = skip_or_fail(c, e, "LLM chat");
        goto out;
    }
    printable(r.text, p, 48);
    printf("note_agent: thought (%d tokens): \"%s\"\n", r.completion_tokens, p);
    fflush(stdout);
    if ((e = aios_memory_add(c, task, "{\"kind\":\"task\"}", &id))) {
        aios_llm_result_free(&r);
        rc = skip_or_fail(c, e, "add_memory");
        goto out;
    }
    snprintf(note, sizeof note, "Thought about %s: %s", task, r.text);
    aios_llm_result_free(&r);
    if ((e = aios_memory_add(c, note, "{\"kind\":\"thought\"}", &id2))) {
        rc = skip_or_fail(c, e, "add_memory");
        goto out;
    }
    printf("note_agent: stored notes %s and %s\n", id, id2);
    fflush(stdout);
    if ((e = aios_memory_search(c, task, 3, &hits, &n_hits))) {
        rc = skip_or_fail(c, e, "retrieve_memory");
        goto out;
    }
    printf("note_agent: search found %zu note(s)\n", n_hits);
    if ((e = aios_memory_get(c, id, &got))) {
        rc = skip_or_fail(c, e, "get_memory");
        goto out;
    }
    bool same = got.content && !strcmp(got.content, task);
    printable(got.content, p, 64);
    printf("note_agent: recalled %s: \"%s\" (%s)\n", id, p, same ? "intact" : "DIFFERENT");
    printf("{\"agent\":\"note_agent\",\"memory_id\":\"%s\",\"notes\":2,\"search_hits\":%zu,"
           "\"recalled\":\"%s\"}\n", id, n_hits, p);
    rc = same ? 0 : 1;
out:
    free(id);
    free(id2);
    aios_memory_notes_free(hits, n_hits);
    aios_memory_note_free(&got);
    aios_client_free(c);
    return rc;
}
