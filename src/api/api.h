/* The HTTP API on libmicrohttpd. See http.c for the request lifecycle. */
#ifndef AIOS_API_API_H
#define AIOS_API_API_H

#include "kernel/kernel.h"

#include <jansson.h>
#include <microhttpd.h>
#include <stdbool.h>

struct api_server;
struct api_req;
struct api_fwd;
struct api_fwd_call;
struct llm_core;

#define API_MAX_PARAMS 4

int api_start(struct api_server **out, struct kernel *k, char *err, size_t errlen);
int api_port(struct api_server *s);
/* new requests get a 503 from now on (in-flight ones keep going) */
void api_quiesce(struct api_server *s);
void api_stop(struct api_server *s);
/* requests in flight (parsed but not completed) */
int api_active(struct api_server *s);

/* ---- for route handlers ---- */
typedef enum MHD_Result (*api_handler_fn)(struct api_req *r);

struct api_req {
    struct api_server *srv;
    struct kernel *k;
    struct MHD_Connection *conn;
    const char *method;
    char *url;
    char *body;
    size_t n_body, cap_body;
    bool too_big;
    bool dispatched;
    bool close_after;          /* answer with Connection: close (bad framing) */
    unsigned long long n_drained; /* body bytes read and dropped past the limit */
    api_handler_fn resume; /* called again after a parked syscall finished */
    struct syscall *sc;    /* the syscall this request waits on, if any */
    void *state;           /* handler state, freed with state_free */
    void (*state_free)(void *);
    void *stream;          /* streaming state (http.c) */
    char *params[API_MAX_PARAMS]; /* values of {name} segments of the route, in order */
    int n_params;
    /* set by the gate (access_routes.c, from the access manager's
     * decision): the acting agent ("admin" for the operator), whether the
     * admin token was used, whether compat mode trusted a tokenless call */
    char acc_agent[128];
    bool acc_admin, acc_compat;
    /* the token is a registered agent's, known to every kernel sharing the
     * state: such a call may be forwarded to a peer (forward.c) */
    bool acc_shared;
    /* KV affinity (forward.c): the request's forward to a peer, if any;
     * no_forward: serve it here (it came forwarded, or the peer failed) */
    struct api_fwd_call *fwd;
    bool no_forward;
    uint64_t acc_run; /* > 0: arrived on this agent run's own channel (http.c) */
    /* the x-request-id header of the answer: the client's X-Request-Id when
     * it is sane, else made here; also on its syscalls, log lines and audit
     * rows (http.c) */
    char request_id[72];
    unsigned status;    /* the status answered (0 until then) */
    int64_t t_start_us; /* monotonic, when the request arrived */
    /* monotonic time the whole request had arrived (parse starts); the
     * answer's X-Aios-Kernel-Us is the time from here to the answer being
     * queued: the kernel's own time, without the network or the client */
    int64_t t_arrived_us;
    /* of that time, what the request spent waiting rather than being
     * worked on: its syscalls' time in the scheduler's queue plus, after
     * each finished, the time until an HTTP thread took it up again
     * (X-Aios-Queue-Us; the rest is X-Aios-Service-Us) */
    int64_t queue_us;
    /* the body parsed once by the access gate (a JSON object, or NULL);
     * api_parse_body hands it to the route instead of parsing again */
    json_t *json;
};

enum MHD_Result api_send_json(struct api_req *r, unsigned status, json_t *body); /* steals body */
/* body (malloc'd, stolen) as it is, with its content type */
enum MHD_Result api_send_raw(struct api_req *r, unsigned status, char *body, size_t len,
                             const char *ctype);
enum MHD_Result api_send_error(struct api_req *r, unsigned status, const char *type,
                               const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Parse the body as a JSON object; on failure sends a 400 and returns NULL
 * with *sent set. */
json_t *api_parse_body(struct api_req *r, enum MHD_Result *sent);
/* Submit sc and park the connection until it is final; then `resume` runs
 * on an HTTP thread. Takes over the caller's reference to sc. */
enum MHD_Result api_submit_and_wait(struct api_req *r, struct syscall *sc, api_handler_fn resume);
/* Submit sc and answer with a stream: `format` turns stream output and the
 * final state into bytes (SSE). Takes over the caller's reference. */
typedef int (*api_stream_fmt_fn)(struct api_req *r, const char *delta, size_t n,
                                 bool final, char **out, size_t *n_out, size_t *cap_out);
enum MHD_Result api_submit_and_stream(struct api_req *r, struct syscall *sc,
                                      const char *content_type, api_stream_fmt_fn format);
/* In a stream's format function: the syscall's aux bytes taken with this
 * delta (sc->aux; NULL and *n 0 when none) */
const char *api_stream_aux(struct api_req *r, size_t *n);
/* Map an AIOS_E* code to an HTTP status and OpenAI error type. */
unsigned api_status_for(int err, const char **type);

/* ---- KV affinity (forward.c; docs/postgres.md, "KV affinity") ---- */
/* the forwarder: its thread, when the kernel is in a cluster (*out NULL
 * otherwise). Stop it (every forward ends, its connection woken) before
 * the MHD daemon stops; free it after. */
int api_fwd_start(struct api_fwd **out, struct kernel *k, char *err, size_t errlen);
void api_fwd_stop(struct api_fwd *fw);
void api_fwd_free(struct api_fwd *fw);
struct api_fwd *api_server_fwd(struct api_server *s);
/* An LLM call of agent r->acc_agent to core, about to be served: true when
 * it was forwarded to the peer kernel that retains the conversation (*sent
 * holds MHD's result; the answer comes from the peer). false: serve it
 * here. If the peer cannot be reached, `self` (the route handler) runs
 * again with r->no_forward set. */
bool api_affinity_forward(struct api_req *r, const struct llm_core *core, api_handler_fn self,
                          enum MHD_Result *sent);
/* the request completed: let go of its forward (cancelled if still running) */
void api_fwd_release(struct api_req *r);

/* The route table lives in routes.c. A path segment written {name}
 * matches any one non-empty segment; its value lands in r->params. */
struct api_route {
    const char *method;
    const char *path;
    api_handler_fn fn;
};
const struct api_route *api_route_find(const char *method, const char *url,
                                       char *params[API_MAX_PARAMS], int *n_params,
                                       bool *path_known);
/* comma-separated methods allowed on url (for 405's Allow header) */
void api_routes_allowed(const char *url, char *out, size_t outlen);

/* Parse an OpenAI chat-completions body into req (everything but the
 * prompt, which core->ops->prepare fills). 0, AIOS_EINVAL with a message
 * naming the field, or AIOS_ENOMEM. Shared by every route that makes LLM
 * calls (OpenAI, AIOS /query). */
int api_openai_parse_chat(json_t *body, struct llm_req *req, bool *stream, char *err, size_t errlen);
/* The chat completions route's check of the body's field names: 0, or
 * AIOS_EINVAL naming the first field aios does not support (accepted and
 * ignored ones pass; docs/api.md lists both). */
int api_openai_check_chat_fields(json_t *body, char *err, size_t errlen);
/* The parts every LLM front end shares, for a front end that builds the
 * typed request itself (AIOS /query): the messages array into req->msgs,
 * and the common sampling fields of obj (temperature, top_p, seed, stop,
 * and the maximum length under the front end's own name max_tokens_key)
 * into p, defaults set. 0, AIOS_EINVAL with a message naming the field,
 * or AIOS_ENOMEM. */
int api_chat_parse_messages(json_t *msgs, struct llm_req *req, char *err, size_t errlen);
int api_chat_parse_sampling(json_t *obj, const char *max_tokens_key, struct llm_params *p,
                            char *err, size_t errlen);
/* Render structured output / tools for the core (llm/structured.c) and run
 * core->ops->prepare: what every LLM route does after parsing. */
int api_llm_prepare(struct kernel *k, struct llm_core *core, struct llm_req *req, char *err,
                    size_t errlen);
/* [{"name","arguments":object}] -> OpenAI tool_calls (ids, arguments as a
 * JSON string); new reference */
json_t *api_openai_tool_calls(struct syscall *sc, json_t *calls);

/* The pure parts of POST /query (aios_query.c), without I/O: */
/* the envelope: agent_name, query_type (-> *kind), query_data (borrowed
 * from body). 0 or AIOS_EINVAL with a message (a 400). */
int api_query_envelope(json_t *body, const char **agent, enum syscall_kind *kind, json_t **qd,
                       char *err, size_t errlen);
enum api_query_action { API_QUERY_CHAT, API_QUERY_CALL_TOOL, API_QUERY_OPERATE_FILE };
/* an llm query's query_data (any action_type) -> a prepared request for
 * *core (prompt, grammar). 0, or AIOS_EINVAL with *status (400, 404, 500,
 * 501) and a message. */
int api_query_llm_req(struct kernel *k, const char *agent, json_t *qd, struct llm_req **out,
                      struct llm_core **core, enum api_query_action *action, unsigned *status,
                      char *err, size_t errlen);
/* a memory / storage / tool query's query_data -> the executor's request.
 * 0, AIOS_EINVAL (a 400) or AIOS_ENOMEM with a message. */
struct kq_req;
int api_query_kq_req(enum syscall_kind kind, json_t *qd, struct kq_req **out, char *err,
                     size_t errlen);

/* route handlers (openai.c, kernel_routes.c) */
enum MHD_Result api_openai_models(struct api_req *r);
enum MHD_Result api_openai_model(struct api_req *r);
/* the dashboard (ui.c) */
enum MHD_Result api_ui_page(struct api_req *r);
enum MHD_Result api_ui_state(struct api_req *r);
/* the power that energy estimates use: RAPL's when readable ("rapl"), else
 * accounting.watts ("config") */
double api_power_watts(struct kernel *k, const char **source);
enum MHD_Result api_openai_chat(struct api_req *r);
enum MHD_Result api_openai_embeddings(struct api_req *r); /* embeddings.c */
/* What a POST /v1/embeddings body is checked against: the embedding
 * model's id, width, tokens per input and vocabulary size, and its
 * tokenizer (text -> malloc'd ids; 0, AIOS_ENOMEM or another error). */
struct api_emb_model {
    const char *name;
    int dim, n_ctx, n_vocab;
    int (*tokenize)(const void *ud, const char *text, size_t len, int32_t **out, int *n);
    const void *ud;
};
#define API_EMB_MAX_INPUTS 2048
/* The pure part of POST /v1/embeddings: a body (a JSON object) -> req
 * (model, tokens, emb_lens, n_emb) and *base64 (encoding_format), with no
 * engine. m NULL: the kernel has no embedding model. 0, AIOS_EINVAL (400,
 * message in err), AIOS_ENOTFOUND (404, message in err) or AIOS_ENOMEM. */
int api_embeddings_parse(json_t *body, const struct api_emb_model *m, struct llm_req *req,
                         bool *base64, char *err, size_t errlen);
enum MHD_Result api_route_status(struct api_req *r);
enum MHD_Result api_aios_query(struct api_req *r);
/* scheduler routes (sched_routes.c) */
enum MHD_Result api_agent_stats(struct api_req *r);
enum MHD_Result api_metrics(struct api_req *r);
/* Per-call priority from the X-Aios-Priority header (wins) or the body's
 * "priority" field; *set false when neither is given. AIOS_EINVAL with a
 * message for a bad value. */
int api_parse_priority(struct api_req *r, json_t *body, int *prio, bool *set, char *err,
                       size_t errlen);
/* the X-Aios-Priority header's value -> *prio; AIOS_EINVAL with a message */
int api_priority_header(const char *h, int *prio, char *err, size_t errlen);
/* The request id of a request whose X-Request-Id header is h (NULL: none)
 * into out[cap] (cap > 64): h when it is 1 to 64 characters of letters,
 * digits and -_.:/+=@ (it goes into headers, logs and the audit log);
 * otherwise one the kernel makes ("req_" and 20 hex digits). */
void api_request_id(const char *h, char *out, size_t cap);
/* Is an X-Aios-* header's value text: valid UTF-8 (no overlongs,
 * surrogates or code points past U+10FFFF) with no control character but
 * tab? (They become agent names, /metrics labels and log lines.) */
bool api_header_text_ok(const char *s);
enum MHD_Result api_tools_list(struct api_req *r); /* tools_routes.c */
/* share_routes.c: GET /s/{token}; the full link in a storage share answer */
enum MHD_Result api_share_link_get(struct api_req *r);
void api_share_link_fill(struct api_req *r, json_t *resp);
/* hub_routes.c */
enum MHD_Result api_hub_tool_upload(struct api_req *r);
enum MHD_Result api_hub_tool_download(struct api_req *r);
enum MHD_Result api_hub_tool_list(struct api_req *r);
enum MHD_Result api_hub_tool_updates(struct api_req *r);
enum MHD_Result api_hub_agent_upload(struct api_req *r);
enum MHD_Result api_hub_agent_download(struct api_req *r);
enum MHD_Result api_hub_agent_list(struct api_req *r);
enum MHD_Result api_hub_agent_updates(struct api_req *r);
/* compat.c: under access.mode compat, refuse a tokenless request that a
 * web page could have sent (foreign Host or Origin: 403; a body that is
 * not application/json: 415). true: go on; false: answered, *sent holds
 * MHD's result. Run before the gate. */
bool api_compat_guard(struct api_req *r, enum MHD_Result *sent);

/* ---- the access manager's face (access_routes.c) ---- */
struct acc_decision;
/* answer with a refusal of the access manager (its status, error type and
 * message, or its whole error body); takes d's detail */
enum MHD_Result api_send_decision(struct api_req *r, struct acc_decision *d);
/* the gate before every route handler: true when the request may go on
 * (r->acc_* set); false when it was refused and *sent holds the answer */
bool api_access_gate(struct api_req *r, enum MHD_Result *sent);
/* before a request's syscall is queued (token budgets, storage approvals):
 * 0 queue it, 1 parked, -1 refused and *sent holds the answer */
int api_access_before_submit(struct api_req *r, struct syscall *sc, enum MHD_Result *sent);
enum MHD_Result api_access_agents_register(struct api_req *r); /* POST /access/agents */
enum MHD_Result api_access_whoami(struct api_req *r);          /* GET /access/whoami */
enum MHD_Result api_access_audit(struct api_req *r);           /* GET /access/audit */
enum MHD_Result api_access_approvals(struct api_req *r);       /* GET /access/approvals */
enum MHD_Result api_access_approve(struct api_req *r); /* POST /access/approvals/{id}/approve */
enum MHD_Result api_access_deny(struct api_req *r);    /* POST /access/approvals/{id}/deny */
enum MHD_Result api_access_core_approval(struct api_req *r); /* POST /core/approvals/{id} */
enum MHD_Result api_access_budgets(struct api_req *r);       /* GET /access/budgets */

#endif
