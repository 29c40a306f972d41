/* Kernel configuration: a YAML file in the layout of the AIOS reference's
 * aios/config/config.yaml (api_keys, llms.models, memory, storage,
 * scheduler, agent_factory, server), read once at start-up into
 * struct aios_config. Keys this kernel does not use are ignored but kept in
 * cfg->raw. See config.c for the rules. */
#ifndef AIOS_KERNEL_CONFIG_H
#define AIOS_KERNEL_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct cfg_model {
    char *name;     /* id clients use in "model" */
    char *backend;  /* "llamacpp", "openai", "ollama", "anthropic", "vllm", ... lowercased */
    char *path;     /* GGUF file for llamacpp (NULL otherwise) */
    char *hostname; /* base URL for remote backends (NULL if none) */
    int n_ctx;      /* default 4096 */
    int n_threads;  /* 0 = auto */
    /* price: {prompt_per_1m, completion_per_1m} in any currency, per token
     * here; 0 = free (the default). Agents' costs are counted with it. */
    double price_prompt, price_completion;
};

/* cluster.peers[]: another kernel on the same state (docs/postgres.md,
 * "KV affinity") */
struct cfg_peer {
    char *name; /* its cluster.name */
    char *url;  /* its API's base URL, http://host:port */
};

/* cluster: this kernel among others that share one PostgreSQL state */
struct cfg_cluster {
    char *name;            /* cluster.name, or AIOS_CLUSTER_NAME (wins); NULL: no cluster */
    char *url;             /* cluster.url: where the peers reach this kernel (may be NULL) */
    struct cfg_peer *peers; /* the other kernels (an entry named like this one is left out) */
    size_t n_peers;
    int max_outstanding;   /* cluster.max_outstanding: calls forwarded to one peer and not
                            * answered yet past which it counts as overloaded; default 16 */
    int peer_down_s;       /* cluster.peer_down_s: a peer that failed sits out this long,
                            * doubling to 60 s; default 5 */
    int connect_timeout_ms; /* cluster.connect_timeout_ms: default 1000 */
    int timeout_s;         /* cluster.timeout_s: a whole forwarded call; default 600 */
};

struct aios_config {
    char *host;            /* server.host, default "127.0.0.1" ("localhost" kept as is) */
    int port;              /* server.port, default 8000 */
    char *data_dir;        /* top-level data_dir, default "./aios-data" */
    size_t max_body_bytes; /* server.max_body_bytes, default 8 MiB */
    int max_connections;   /* server.max_connections, default 4096 */
    int max_connections_per_ip; /* server.max_connections_per_ip, default 1024 */
    int request_timeout_s; /* server.request_timeout_s: a request's head and
                            * body, silent this long, close; default 10 */
    int idle_timeout_s;    /* server.idle_timeout_s: keep-alive idle and an
                            * answer the client does not read; default 60 */
    char *sched_policy;    /* scheduler.policy, default "fair"; fifo, rr or fair */
    char *storage_root;    /* storage.root_dir as written, default "root";
                            * resolve with config_resolve_path() */
    char *state_backend;   /* state.backend: "sqlite" (default) or "postgres" */
    char *state_url;       /* state.url: the PostgreSQL connection URL (NULL
                            * for sqlite; may hold a password: do not log it) */
    int state_lease_s;     /* state.lease_s: a kernel silent this long on a
                            * shared store is taken for dead; its token
                            * reservations and approvals are dropped; default 10 */
    struct cfg_cluster cluster;
    struct cfg_model *models;
    size_t n_models;
    json_t *raw; /* the whole document as JSON (owned; never NULL after a
                  * successful load; may hold api_keys: do not log it) */
};

#define CONFIG_DEFAULT_HOST "127.0.0.1"
#define CONFIG_DEFAULT_PORT 8000
#define CONFIG_DEFAULT_DATA_DIR "./aios-data"
#define CONFIG_DEFAULT_STATE_LEASE_S 10
#define CONFIG_DEFAULT_MAX_BODY ((size_t)8 << 20)
#define CONFIG_DEFAULT_MAX_CONNECTIONS 4096
#define CONFIG_DEFAULT_MAX_CONNECTIONS_PER_IP 1024
#define CONFIG_DEFAULT_REQUEST_TIMEOUT_S 10
#define CONFIG_DEFAULT_IDLE_TIMEOUT_S 60
#define CONFIG_DEFAULT_POLICY "fair"
#define CONFIG_DEFAULT_STORAGE_ROOT "root"
#define CONFIG_DEFAULT_STATE_BACKEND "sqlite"
#define CONFIG_DEFAULT_N_CTX 4096
#define CONFIG_DEFAULT_CLUSTER_MAX_OUTSTANDING 16
#define CONFIG_DEFAULT_CLUSTER_PEER_DOWN_S 5
#define CONFIG_DEFAULT_CLUSTER_CONNECT_TIMEOUT_MS 1000
#define CONFIG_DEFAULT_CLUSTER_TIMEOUT_S 600
#define CONFIG_MAX_FILE_BYTES ((size_t)16 << 20)

/* Overwrite *cfg with the defaults (strings malloc'd, raw an empty object).
 * Does not free what *cfg held. On allocation failure the pointer fields
 * are left NULL; config_load_* report that as AIOS_ENOMEM. */
void config_init_defaults(struct aios_config *cfg);

/* Parse and validate YAML text (need not be NUL-terminated). *cfg is
 * overwritten, not freed, on entry. 0 on success. On error returns
 * AIOS_ECONFIG (or AIOS_ENOMEM), writes "line L col C: key.path: what is
 * wrong" to err (if err != NULL), and leaves *cfg zeroed; config_free() is
 * safe either way. An empty document gives the defaults. */
int config_load_string(struct aios_config *cfg, const char *yaml, size_t len, char *err,
                       size_t errlen);

/* Read path (at most CONFIG_MAX_FILE_BYTES) and config_load_string() it.
 * Messages are prefixed with the path. Errors: AIOS_ENOTFOUND when the file
 * does not exist, AIOS_EIO when it cannot be read, otherwise as
 * config_load_string(). */
int config_load_file(struct aios_config *cfg, const char *path, char *err, size_t errlen);

/* Free everything *cfg owns and zero it. Idempotent; NULL is ignored. */
void config_free(struct aios_config *cfg);

/* YAML document -> new jansson tree in *out (caller json_decref()s).
 * Plain scalars resolve as PyYAML (YAML 1.1) does: null ~ "" -> null;
 * true/false/yes/no/on/off in three casings -> booleans; decimal, 0x hex,
 * 0b binary, 0-prefixed octal ints (underscores allowed); floats with a dot
 * and/or exponent. Quoted and block scalars, and !!str, stay strings.
 * .inf/.nan and ints outside 64 bits stay strings (JSON cannot hold them).
 * Mapping keys are always strings; duplicate keys, complex keys,
 * anchors/aliases, unknown tags and a second document are errors. An empty
 * stream gives JSON null. 0 or AIOS_ECONFIG / AIOS_ENOMEM with a message. */
int config_yaml_to_json(const char *yaml, size_t len, json_t **out, char *err, size_t errlen);

/* The model named name (exact match), or NULL. */
/* state.backend is postgres */
bool config_state_pg(const struct aios_config *cfg);
const struct cfg_model *config_find_model(const struct aios_config *cfg, const char *name);

/* Borrowed reference to the raw value at a dotted path such as
 * "agent_factory.max_workers" (mapping keys only; no list indexing), or
 * NULL when absent. For keys this struct does not carry. */
json_t *config_lookup(const struct aios_config *cfg, const char *dotted);

/* malloc'd path: p itself when absolute, else data_dir "/" p. NULL on OOM
 * or NULL arguments. E.g. config_resolve_path(cfg, cfg->storage_root). */
char *config_resolve_path(const struct aios_config *cfg, const char *p);

#endif
