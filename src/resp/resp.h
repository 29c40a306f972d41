/* The responses manager: stored answers of POST /v1/responses, so that a
 * client continues a conversation with previous_response_id instead of
 * resending it (docs/api.md, "Responses").
 *
 * A stored response is one record: its id, the agent that made it, the
 * response it continues (or none), the model, this turn's input items and
 * the response object as it was answered (whose `output` holds the output
 * items). The conversation of a response is the chain of its ancestors'
 * input and output items, oldest first, then its own.
 *
 * Records belong to an agent: every call names the agent, and another
 * agent's id is simply absent (AIOS_ENOTFOUND, as for an unknown id).
 *
 * The durable store sits behind struct resp_store_ops: SQLite
 * (resp_sqlite.c, data_dir/responses.db) by default, PostgreSQL
 * (resp_pg.c, table resp_responses) with state.backend postgres, where
 * every kernel on the database sees every stored response. The manager and
 * the API do not know which one they talk to. */
#ifndef AIOS_RESP_RESP_H
#define AIOS_RESP_RESP_H

#include "kernel/config.h"

#include <stddef.h>
#include <stdint.h>

/* ancestors a conversation may have (a longer chain is refused) */
#define RESP_MAX_CHAIN 10000

struct resp_rec {
    char *id;
    char *agent;
    char *prev_id;  /* the response this one continues, or NULL */
    char *model;
    int64_t created_at; /* unix seconds */
    char *input;    /* JSON array: this turn's input items (normalised) */
    char *response; /* JSON object: the response as answered */
};

void resp_rec_free(struct resp_rec *r);

struct resp_store;

/* What the manager needs of a store. Every call but open and close is
 * thread safe and its own transaction. 0 or a negative AIOS_E*:
 * AIOS_ENOTFOUND for an absent record (or one of another agent), AIOS_EIO
 * for a failure of the store. */
struct resp_store_ops {
    const char *name;
    /* where: the SQLite file's path, or the PostgreSQL connection URL */
    int (*open)(struct resp_store **out, const char *where, char *err, size_t errlen);
    void (*close)(struct resp_store *s);
    int (*put)(struct resp_store *s, const struct resp_rec *r);
    /* *out: a new record (resp_rec_free) */
    int (*get)(struct resp_store *s, const char *agent, const char *id, struct resp_rec **out);
    int (*remove)(struct resp_store *s, const char *agent, const char *id);
};

extern const struct resp_store_ops resp_store_sqlite;
extern const struct resp_store_ops resp_store_pg;

struct resp_mgr;

/* Open the store named by the config (responses.db under data_dir, or
 * state.url with state.backend postgres).
 * 0 or AIOS_EIO / AIOS_ENOMEM with a message. */
int resp_mgr_open(struct resp_mgr **out, const struct aios_config *cfg, char *err, size_t errlen);
void resp_mgr_close(struct resp_mgr *m);

int resp_put(struct resp_mgr *m, const struct resp_rec *r);
int resp_get(struct resp_mgr *m, const char *agent, const char *id, struct resp_rec **out);
int resp_delete(struct resp_mgr *m, const char *agent, const char *id);

/* The agent's response `id` and its ancestors, oldest first: *out is a new
 * array of *n records (resp_chain_free). AIOS_ENOTFOUND when id or an
 * ancestor is absent (its id in missing), AIOS_ETOOBIG past RESP_MAX_CHAIN. */
int resp_chain(struct resp_mgr *m, const char *agent, const char *id, struct resp_rec ***out,
               size_t *n, char *missing, size_t missinglen);
void resp_chain_free(struct resp_rec **recs, size_t n);

#endif
