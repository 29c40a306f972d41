/* libaios: the C client for agents running on an aios (or AIOS) kernel.
 *
 * Every call is one AIOS `POST /query` (llm, memory, storage, tool) made
 * with libcurl and answered with a typed result. Calls return 0 or a
 * negative AIOS_CLIENT_E* code; aios_client_error() then says what went
 * wrong in words (the kernel's message when it sent one) and
 * aios_client_http_status() gives the HTTP status. A 200 whose response
 * says "finished": false (a tool query or LLM action whose calls all
 * failed) is reported as the error of its "status_code".
 *
 *   struct aios_client *c;
 *   aios_client_new(&c, NULL, NULL);   // $AIOS_KERNEL_URL, $AIOS_AGENT_NAME
 *   struct aios_message m[] = {{"user", "Plan a trip"}};
 *   struct aios_llm_result r;
 *   if (aios_llm_chat(c, m, 1, NULL, &r) == 0) puts(r.text);
 *   aios_llm_result_free(&r);
 *   aios_client_free(c);
 *
 * A client may be used by one thread at a time; make one per thread. */
#ifndef AIOS_CLIENT_H
#define AIOS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    AIOS_CLIENT_OK = 0,
    AIOS_CLIENT_EINVAL = -1,    /* bad argument (before anything was sent) */
    AIOS_CLIENT_ENOMEM = -2,
    AIOS_CLIENT_ECONNECT = -3,  /* the kernel could not be reached */
    AIOS_CLIENT_EREQUEST = -4,  /* 4xx: the kernel refused the request */
    AIOS_CLIENT_ENOTFOUND = -5, /* 404: no such model, memory, file, tool */
    AIOS_CLIENT_ENOTIMPL = -6,  /* 501: that manager is not in this kernel */
    AIOS_CLIENT_ESERVER = -7,   /* 5xx other than 501 */
    AIOS_CLIENT_EPROTOCOL = -8, /* an answer that is not the AIOS shape */
    AIOS_CLIENT_EFAILED = -9,   /* 200 but the operation reports failure */
};

struct aios_client;

/* base_url NULL: $AIOS_KERNEL_URL, $CEREBRUM_KERNEL_URL, else
 * http://127.0.0.1:8000. agent_name NULL: $AIOS_AGENT_NAME, else "agent".
 * $AIOS_AGENT_TOKEN is sent as X-Aios-Agent-Token when set. */
int aios_client_new(struct aios_client **out, const char *base_url, const char *agent_name);
void aios_client_free(struct aios_client *c);
const char *aios_client_error(const struct aios_client *c);
long aios_client_http_status(const struct aios_client *c);
const char *aios_client_agent(const struct aios_client *c);
/* per-request timeout in seconds (default 300) */
void aios_client_set_timeout(struct aios_client *c, int seconds);
const char *aios_strerror_client(int err);

/* ---- LLM ---- */
struct aios_message {
    const char *role; /* "system", "user", "assistant", "tool" */
    const char *content;
};

struct aios_llm_opts {
    const char *model;       /* NULL: the kernel's choice */
    int max_new_tokens;      /* 0: kernel default */
    double temperature;      /* < 0: kernel default */
    bool has_seed;
    unsigned seed;
};
#define AIOS_LLM_OPTS_INIT {NULL, 0, -1.0, false, 0}

struct aios_tool_call {
    char *id;
    char *name;            /* "author/name" */
    char *parameters_json; /* JSON object text */
};

struct aios_llm_result {
    char *text;            /* response_message ("" when only tool calls) */
    struct aios_tool_call *tool_calls;
    size_t n_tool_calls;
    int prompt_tokens, completion_tokens;
    double waiting_s, turnaround_s;
};

int aios_llm_chat(struct aios_client *c, const struct aios_message *msgs, size_t n_msgs,
                  const struct aios_llm_opts *opts, struct aios_llm_result *out);
/* Cerebrum's llm_call_tool (action call_tool): the model answers with tool
 * calls and the kernel runs them. out->text is the tool manager's
 * response_message (the tools' results), out->tool_calls the model's calls
 * (names "author/name"). tools_json is an OpenAI tools array text. A tool
 * that fails gives its status (e.g. ENOTFOUND for an unknown tool). */
int aios_llm_call_tool(struct aios_client *c, const struct aios_message *msgs, size_t n_msgs,
                       const char *tools_json, const struct aios_llm_opts *opts,
                       struct aios_llm_result *out);
/* the model answers with tool calls that are returned, not run (action
 * chat_with_tool_call_output): the agent runs them itself (aios_tool_call) */
int aios_llm_chat_with_tool_call_output(struct aios_client *c, const struct aios_message *msgs,
                                        size_t n_msgs, const char *tools_json,
                                        const struct aios_llm_opts *opts,
                                        struct aios_llm_result *out);
/* JSON output following response_format_json (chat_with_json_output) */
int aios_llm_chat_json(struct aios_client *c, const struct aios_message *msgs, size_t n_msgs,
                       const char *response_format_json, const struct aios_llm_opts *opts,
                       struct aios_llm_result *out);
void aios_llm_result_free(struct aios_llm_result *r);

/* ---- memory ---- */
struct aios_memory_note {
    char *memory_id;
    char *content;
    char *metadata_json; /* may be NULL */
    double score;        /* search results only */
};
int aios_memory_add(struct aios_client *c, const char *content, const char *metadata_json,
                    char **memory_id);
int aios_memory_get(struct aios_client *c, const char *memory_id, struct aios_memory_note *out);
int aios_memory_update(struct aios_client *c, const char *memory_id, const char *content,
                       const char *metadata_json);
int aios_memory_remove(struct aios_client *c, const char *memory_id);
int aios_memory_search(struct aios_client *c, const char *query, int k,
                       struct aios_memory_note **notes, size_t *n_notes);
void aios_memory_note_free(struct aios_memory_note *n);
void aios_memory_notes_free(struct aios_memory_note *notes, size_t n);

/* ---- storage ---- (message: the kernel's response_message, malloc'd, may be NULL) */
int aios_storage_mount(struct aios_client *c, const char *root, char **message);
int aios_storage_create_file(struct aios_client *c, const char *path, char **message);
int aios_storage_create_dir(struct aios_client *c, const char *path, char **message);
int aios_storage_write(struct aios_client *c, const char *path, const char *content, char **message);
int aios_storage_retrieve(struct aios_client *c, const char *query, int k, char **message);
int aios_storage_rollback(struct aios_client *c, const char *path, int n, char **message);
/* share path with another agent (with_agent), or as Cerebrum does (NULL) */
int aios_storage_share(struct aios_client *c, const char *path, const char *with_agent,
                       char **message);

/* ---- tools ---- */
/* run one tool; result: response_message (malloc'd) */
int aios_tool_call(struct aios_client *c, const char *name, const char *parameters_json,
                   char **result);

/* ---- anything else ---- */
/* One raw query: query_data_json is the query_data object text; response
 * gets the "response" object as JSON text (malloc'd). */
int aios_query(struct aios_client *c, const char *query_type, const char *query_data_json,
               char **response_json);

#ifdef __cplusplus
}
#endif
#endif
