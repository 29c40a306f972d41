/* Prepared SQLite statements kept per connection (stmtcache.c).
 *
 * Code that used to prepare a statement, run it and finalize it calls
 * stc_get() and stc_put() instead: the statement is prepared once per
 * connection and SQL text, and later calls get it back reset. A statement
 * handed out is the caller's alone until it is put back; a second stc_get
 * of the same text on the same connection meanwhile (a nested use) gets
 * another statement. stc_forget() finalizes a connection's statements and
 * must run before the connection is closed. Thread safe: one leaf lock,
 * held only for the table lookup, never during SQL. */
#ifndef AIOS_UTIL_STMTCACHE_H
#define AIOS_UTIL_STMTCACHE_H

#include <sqlite3.h>

/* db's statement for sql, reset and without bindings; NULL when it does
 * not prepare (sqlite3_errmsg(db) says why). */
sqlite3_stmt *stc_get(sqlite3 *db, const char *sql);
/* st back to the cache (reset, bindings cleared); NULL is ignored */
void stc_put(sqlite3_stmt *st);
/* finalize every statement cached for db; call before closing db */
void stc_forget(sqlite3 *db);

#endif
