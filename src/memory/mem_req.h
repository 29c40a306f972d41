/* The memory operations as typed requests: an enum for the operation and a
 * struct for its params, parsed once at the edge (the API layer) by
 * mem_req_parse() and dispatched by mem_manager_exec() with one switch.
 * See mem_req.c. */
#ifndef AIOS_MEMORY_MEM_REQ_H
#define AIOS_MEMORY_MEM_REQ_H

#include "memory/mem_note.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

enum mem_op {
    MEM_OP_ADD,           /* add_memory */
    MEM_OP_ADD_AGENTIC,   /* add_agentic_memory */
    MEM_OP_GET,           /* get_memory */
    MEM_OP_UPDATE,        /* update_memory */
    MEM_OP_REMOVE,        /* remove_memory */
    MEM_OP_RETRIEVE,      /* retrieve_memory (counts an access) */
    MEM_OP_RETRIEVE_RAW,  /* retrieve_memory_raw (read-only) */
    MEM_OP_STATS,         /* memory_stats */
    MEM_OP_SHARE,         /* share_memory */
    MEM_OP_UNSHARE,       /* unshare_memory */
    MEM_OP_SHARES,        /* memory_shares */
    MEM_OP__COUNT
};

/* The note fields a request sets (add) or changes (update). Every member is
 * owned; NULL (or "" for timestamp) means absent. */
struct mem_fields {
    char *content;
    json_t *keywords, *tags; /* arrays of strings */
    char *category, *context;
    json_t *links;                /* array */
    char timestamp[MEM_TS_LEN];   /* YYYYMMDDHHMM */
    json_t *extra;                /* other metadata keys (object) */
};

struct mem_add_params {     /* MEM_OP_ADD, MEM_OP_ADD_AGENTIC */
    char *id;               /* NULL: a new UUID */
    struct mem_fields f;    /* f.content is set */
};
struct mem_update_params {  /* MEM_OP_UPDATE */
    char *id;
    struct mem_fields f;
};
struct mem_id_params {      /* MEM_OP_GET, MEM_OP_REMOVE */
    char *id;
};
struct mem_retrieve_params { /* MEM_OP_RETRIEVE, MEM_OP_RETRIEVE_RAW */
    char *query;
    size_t query_len;
    int k;                  /* 1..MEM_MAX_K */
    bool backfill;          /* embed notes that lack a vector first (hybrid retrieval) */
};
struct mem_share_params {   /* MEM_OP_SHARE, MEM_OP_UNSHARE */
    char *grantee;
    bool write;             /* mode "rw" */
    long long expires_in;   /* seconds, 0: never */
};

#define MEM_MAX_K 1000
#define MEM_DEFAULT_K 5

struct mem_req {
    enum mem_op op;
    char *owner; /* params.owner / params.namespace: the namespace to use, or NULL (own) */
    union {
        struct mem_add_params add;
        struct mem_update_params update;
        struct mem_id_params id;
        struct mem_retrieve_params retrieve;
        struct mem_share_params share;
    } u;
};

/* "add_memory", ... ; NULL for a value out of range */
const char *mem_op_name(enum mem_op op);
/* does the operation change the namespace it acts on? */
bool mem_op_writes(enum mem_op op);

/* Parse one AIOS memory query (operation_type and params) into a typed
 * request. Pure: no I/O, no globals. 0 and *out (free with mem_req_free),
 * or AIOS_EINVAL with a message naming the bad field in err (AIOS_ENOMEM
 * on allocation failure). params is borrowed; nothing in *out points into
 * it. */
int mem_req_parse(const char *op, json_t *params, struct mem_req **out, char *err, size_t errlen);
/* a zeroed request of that operation (for callers that build one in C) */
struct mem_req *mem_req_new(enum mem_op op);
/* frees the request and everything it owns; void * for syscall_new() */
void mem_req_free(void *req);
/* the operation changes no note (get, retrievals, stats, the shares list):
 * it may run on the memory pool's read lane (SCHED_READ_LANE). A retrieval
 * counts the access, but as statistics that wait for no fsync. */
bool mem_req_reads_only(const struct mem_req *r);

/* Set on n the fields present in f (deep copies). 0 or AIOS_ENOMEM. */
int mem_fields_apply(const struct mem_fields *f, struct mem_note *n);

#endif
