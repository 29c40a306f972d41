/* Prepared SQLite statements kept per connection (see stmtcache.h).
 *
 * Why: preparing a statement parses and plans its SQL, which costs more
 * than running a small INSERT or a lookup by key. A storage write ran a
 * dozen statements, each prepared and finalized on the spot, and parsing
 * SQL was about a fifth of the kernel's instructions under load
 * (docs/performance.md).
 *
 * How: one process-wide hash table of entries (connection, statement,
 * hash of the SQL text, in use). stc_get finds a free entry of the
 * connection whose text is the same (hash, then strcmp against
 * sqlite3_sql), marks it in use and returns its statement; else it
 * prepares one (SQLITE_PREPARE_PERSISTENT) and adds it, in use. stc_put
 * resets it, clears its bindings and marks it free. A table that grows
 * past STC_MAX entries (SQL text made at run time would do that)
 * finalizes statements on put instead of keeping them.
 *
 * Locking: `mu` guards the table and is a leaf lock, held only for the
 * lookup; the statement is used outside it, by the one thread that took
 * it. stc_forget finalizes the connection's entries (none may be in use:
 * the caller is about to close the connection). */
#include "util/stmtcache.h"

#include "util/util.h"

#include <assert.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define STC_BUCKETS 256
#define STC_MAX 4096

struct stc_ent {
    struct stc_ent *next;
    sqlite3 *db;
    sqlite3_stmt *st;
    uint32_t h;
    bool in_use;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct stc_ent *buckets[STC_BUCKETS];
static size_t n_ents;

static unsigned bucket_of(sqlite3 *db, uint32_t h)
{
    uintptr_t p = (uintptr_t)db;
    return (unsigned)((h ^ (uint32_t)(p >> 4) ^ (uint32_t)(p >> 20)) % STC_BUCKETS);
}

sqlite3_stmt *stc_get(sqlite3 *db, const char *sql)
{
    uint32_t h = util_fnv1a32(sql);
    unsigned b = bucket_of(db, h);
    pthread_mutex_lock(&mu);
    for (struct stc_ent *e = buckets[b]; e; e = e->next) {
        if (e->db == db && e->h == h && !e->in_use && !strcmp(sqlite3_sql(e->st), sql)) {
            e->in_use = true;
            pthread_mutex_unlock(&mu);
            return e->st;
        }
    }
    pthread_mutex_unlock(&mu);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return NULL;
    }
    if (!st) return NULL; /* empty SQL */
    struct stc_ent *e = calloc(1, sizeof *e);
    pthread_mutex_lock(&mu);
    if (e && n_ents < STC_MAX) {
        e->db = db;
        e->st = st;
        e->h = h;
        e->in_use = true;
        e->next = buckets[b];
        buckets[b] = e;
        n_ents++;
        e = NULL;
    }
    pthread_mutex_unlock(&mu);
    free(e); /* not kept: stc_put finalizes st */
    return st;
}

void stc_put(sqlite3_stmt *st)
{
    if (!st) return;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    sqlite3 *db = sqlite3_db_handle(st);
    const char *sql = sqlite3_sql(st);
    unsigned b = bucket_of(db, util_fnv1a32(sql));
    bool kept = false;
    pthread_mutex_lock(&mu);
    for (struct stc_ent *e = buckets[b]; e; e = e->next) {
        if (e->st == st) {
            assert(e->in_use);
            e->in_use = false;
            kept = true;
            break;
        }
    }
    pthread_mutex_unlock(&mu);
    if (!kept) sqlite3_finalize(st);
}

void stc_forget(sqlite3 *db)
{
    if (!db) return;
    struct stc_ent *gone = NULL;
    pthread_mutex_lock(&mu);
    for (unsigned b = 0; b < STC_BUCKETS; b++) {
        for (struct stc_ent **pp = &buckets[b]; *pp;) {
            struct stc_ent *e = *pp;
            if (e->db != db) {
                pp = &e->next;
                continue;
            }
            *pp = e->next;
            e->next = gone;
            gone = e;
            n_ents--;
        }
    }
    pthread_mutex_unlock(&mu);
    while (gone) {
        struct stc_ent *n = gone->next;
        sqlite3_finalize(gone->st);
        free(gone);
        gone = n;
    }
}
