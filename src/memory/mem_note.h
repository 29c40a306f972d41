/* A memory note (the A-MEM fields AIOS uses) and its JSON forms. See
 * mem_note.c. */
#ifndef AIOS_MEMORY_MEM_NOTE_H
#define AIOS_MEMORY_MEM_NOTE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MEM_TS_LEN 13 /* "YYYYMMDDHHMM" + NUL */
#define MEM_ID_MAX 128

struct mem_note {
    char *id;
    char *content;
    json_t *keywords; /* array of strings */
    json_t *tags;     /* array of strings */
    char *category;
    char *context;
    char timestamp[MEM_TS_LEN];     /* creation, UTC, YYYYMMDDHHMM as A-MEM writes it */
    char last_accessed[MEM_TS_LEN]; /* last retrieval */
    json_t *links;    /* array (ids of related notes, as the agent gives them) */
    int64_t retrieval_count;
    json_t *extra;    /* other metadata keys the agent sent (object) */
};

struct mem_note *mem_note_new(void); /* empty lists, category "Uncategorized", context "General" */
void mem_note_free(struct mem_note *n);
/* bytes this note accounts for in the working set: its text and JSON plus a
 * fixed overhead per note */
size_t mem_note_bytes(const struct mem_note *n);

/* {"keywords","tags","category","context","timestamp","last_accessed",
 *  "links","retrieval_count", + extra keys} */
json_t *mem_note_metadata(const struct mem_note *n);
/* a retrieve_memory result: {"memory_id","content","keywords","tags",
 * "category","context","timestamp","score"} */
json_t *mem_note_result(const struct mem_note *n, double score);
/* a retrieve_memory_raw result: the full note as A-MEM's MemoryNote
 * (id, content, keywords, links, retrieval_count, timestamp, last_accessed,
 * context, evolution_history, category, tags) plus memory_id and score */
json_t *mem_note_raw(const struct mem_note *n, double score);

/* current UTC time as YYYYMMDDHHMM */
void mem_ts_now(char out[MEM_TS_LEN]);
/* random UUID v4 text (37 bytes with NUL) */
int mem_uuid(char out[37]);

/* An English stop word ("the", "is", "of", ...)? w is len bytes, any case.
 * Retrieval drops them from queries; keyword extraction skips them. */
bool mem_is_stop_word(const char *w, size_t len);

/* Normalise a list-of-strings field: a JSON array of strings is copied, a
 * string is split at commas (trimmed, empties dropped). *out is a new array.
 * AIOS_EINVAL for anything else (message names `field`). */
int mem_str_list(json_t *v, const char *field, json_t **out, char *err, size_t errlen);

#endif
