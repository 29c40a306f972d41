/* file_agent: a file agent in C on libaios.
 *
 * Mounts its storage, drafts a report with the LLM, writes it to
 * reports/summary.md, writes a second version, retrieves it by content,
 * and rolls back to the first version. Prints progress lines and a JSON
 * result as its last line.
 *
 * Exit: 0 done; 3 the storage manager answered 501 (printed as SKIP); 1 error. */
#include <aios/client.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int skip_or_fail(struct aios_client *c, int e, const char *what)
{
    if (e == AIOS_CLIENT_ENOTIMPL) {
        printf("SKIP: the storage manager is not in this kernel (501): %s\n", aios_client_error(c));
        printf("{\"agent\":\"file_agent\",\"skipped\":\"storage (501)\"}\n");
        return 3;
    }
    fprintf(stderr, "file_agent: %s failed: %s\n", what, aios_client_error(c));
    return 1;
}

static void say(const char *step, char *msg)
{
    printf("file_agent: %s: %s\n", step, msg ? msg : "ok");
    fflush(stdout);
    free(msg);
}

int main(int argc, char **argv)
{
    const char *task = argc > 1 ? argv[1] : "Write a status report";
    struct aios_client *c;
    if (aios_client_new(&c, NULL, NULL)) return 1;
    int rc = 0, e;
    char *msg = NULL, body[2048];
    printf("file_agent: task: %s\n", task);
    struct aios_message m[] = {{"system", "You write short reports."}, {"user", task}};
    struct aios_llm_opts o = AIOS_LLM_OPTS_INIT;
    o.max_new_tokens = 8;
    o.has_seed = true;
    o.seed = 5;
    struct aios_llm_result r;
    if ((e = aios_llm_chat(c, m, 2, &o, &r))) {
        rc = skip_or_fail(c, e, "LLM chat");
        goto out;
    }
    snprintf(body, sizeof body, "# Report\n\nTask: %s\n\nDraft: %s\n", task, r.text);
    aios_llm_result_free(&r);
    if ((e = aios_storage_mount(c, "root", &msg))) {
        rc = skip_or_fail(c, e, "mount");
        goto out;
    }
    say("mount", msg);
    if ((e = aios_storage_create_dir(c, "reports", &msg)) && e != AIOS_CLIENT_EFAILED) {
        rc = skip_or_fail(c, e, "create_dir");
        goto out;
    }
    say("create_dir reports", msg);
    if ((e = aios_storage_write(c, "reports/summary.md", body, &msg))) {
        rc = skip_or_fail(c, e, "write");
        goto out;
    }
    say("write v1", msg);
    strncat(body, "\nStatus: reviewed.\n", sizeof body - strlen(body) - 1);
    if ((e = aios_storage_write(c, "reports/summary.md", body, &msg))) {
        rc = skip_or_fail(c, e, "write");
        goto out;
    }
    say("write v2", msg);
    if ((e = aios_storage_retrieve(c, "report task", 1, &msg))) {
        rc = skip_or_fail(c, e, "retrieve");
        goto out;
    }
    say("retrieve", msg);
    if ((e = aios_storage_rollback(c, "reports/summary.md", 1, &msg))) {
        rc = skip_or_fail(c, e, "rollback");
        goto out;
    }
    say("rollback", msg);
    printf("{\"agent\":\"file_agent\",\"file\":\"reports/summary.md\",\"versions_written\":2,"
           "\"rolled_back\":true}\n");
out:
    aios_client_free(c);
    return rc;
}
