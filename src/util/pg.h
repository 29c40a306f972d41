/* A small PostgreSQL connection pool over libpq, shared by the stores that
 * keep their state on a database server (memory, storage, access; see
 * docs/postgres.md).
 *
 * A pool hands out one connection to one caller at a time (pg_take /
 * pg_give), opening a new one when none is free, so there are never more
 * connections than callers that ever ran at the same time. A connection
 * that failed (the server restarted, the network dropped) is reset when it
 * is next taken. Queries use PQexecParams with text parameters; a
 * parameter can be binary (bytea) through pg_qb. Every statement runs in
 * autocommit unless the caller says BEGIN. */
#ifndef AIOS_UTIL_PG_H
#define AIOS_UTIL_PG_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pg_pool;

/* Connect to url (a libpq connection URI or key=value string) and run
 * schema (may be NULL; several statements) inside a transaction that holds
 * a cluster-wide advisory lock, so kernels that start together do not race
 * on CREATE ... IF NOT EXISTS. what names the pool in messages. */
int pg_pool_open(struct pg_pool **out, const char *url, const char *what, const char *schema,
                 char *err, size_t errlen);
void pg_pool_close(struct pg_pool *p);
/* the URL with any password left out, for messages */
const char *pg_pool_describe(struct pg_pool *p);

/* a connection for the caller alone, or NULL (logged) */
PGconn *pg_take(struct pg_pool *p);
void pg_give(struct pg_pool *p, PGconn *c);

/* Run sql with n text parameters (NULL entries are SQL NULL). The result
 * (PGRES_TUPLES_OK or PGRES_COMMAND_OK), or NULL after logging the error
 * (what: which operation); PQclear it. */
PGresult *pg_q(PGconn *c, const char *what, const char *sql, int n, const char *const *vals);
/* the same, where parameter i is binary when lens[i] >= 0 (bytea of that
 * many bytes) and text otherwise; binary_result: columns come back binary */
PGresult *pg_qb(PGconn *c, const char *what, const char *sql, int n, const char *const *vals,
                const int *lens, bool binary_result);
/* a statement without rows: 0, or AIOS_EIO (logged) */
int pg_exec(PGconn *c, const char *what, const char *sql, int n, const char *const *vals);
/* the SQLSTATE of this thread's last failed statement ("" when none) */
const char *pg_last_state(void);
/* the number of rows a command changed */
int64_t pg_changes(const PGresult *r);

/* text of an int64 / double parameter (buf: at least 32 bytes) */
const char *pg_i64(char *buf, int64_t v);
const char *pg_dbl(char *buf, double v);
/* column values (text format) */
int64_t pg_get_i64(const PGresult *r, int row, int col);
double pg_get_dbl(const PGresult *r, int row, int col);
const char *pg_get_s(const PGresult *r, int row, int col);

#endif
