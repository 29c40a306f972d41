/* The PostgreSQL connection pool (see pg.h).
 *
 * Design: a free list of PGconn under `mu` (a leaf lock, never held while
 * talking to the server). pg_take pops one or connects a new one; a
 * connection whose status is bad when taken is reset first (PQreset), so a
 * restarted server costs one failed call per pooled connection, not a
 * restart of the kernel. The pool never limits how many connections it
 * opens: its callers are bounded thread pools (memory workers, storage
 * threads, the access manager's few threads), so the count is bounded by
 * them. Errors are logged here with what the caller was doing; the caller
 * maps them to AIOS_EIO. */
#include "util/pg.h"

#include "util/err.h"
#include "util/log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pg_node {
    PGconn *c;
    struct pg_node *next;
};

struct pg_pool {
    char *url;
    char desc[256];
    char what[32];
    pthread_mutex_t mu; /* guards free_list */
    struct pg_node *free_list;
};

static _Thread_local char t_state[6];

const char *pg_last_state(void) { return t_state; }

/* the URL without the password of user:password@ (for messages) */
static void describe(const char *url, char *out, size_t n)
{
    const char *at = strchr(url, '@'), *scheme = strstr(url, "://");
    if (at && scheme && scheme < at) {
        const char *colon = memchr(scheme + 3, ':', (size_t)(at - scheme - 3));
        if (colon) {
            snprintf(out, n, "%.*s:***%s", (int)(colon - url), url, at);
            return;
        }
    }
    if (strstr(url, "password")) {
        snprintf(out, n, "(a connection string with a password)");
        return;
    }
    snprintf(out, n, "%s", url);
}

static void no_notice(void *ud, const char *msg)
{
    (void)ud;
    (void)msg;
}

static PGconn *connect_one(struct pg_pool *p, char *err, size_t errlen)
{
    PGconn *c = PQconnectdb(p->url);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "%s: cannot connect to PostgreSQL at %s: %s", p->what, p->desc,
                 c ? PQerrorMessage(c) : "out of memory");
        size_t l = strlen(err);
        if (l && err[l - 1] == '\n') err[l - 1] = 0;
        PQfinish(c);
        return NULL;
    }
    /* notices (e.g. "relation already exists, skipping") are not news */
    PQsetNoticeProcessor(c, no_notice, NULL);
    PGresult *r = PQexec(c, "SET client_min_messages = warning");
    PQclear(r);
    return c;
}

const char *pg_pool_describe(struct pg_pool *p) { return p ? p->desc : ""; }

int pg_pool_open(struct pg_pool **out, const char *url, const char *what, const char *schema,
                 char *err, size_t errlen)
{
    *out = NULL;
    struct pg_pool *p = calloc(1, sizeof *p);
    if (!p) return AIOS_ENOMEM;
    p->url = strdup(url);
    if (!p->url) {
        free(p);
        return AIOS_ENOMEM;
    }
    snprintf(p->what, sizeof p->what, "%s", what);
    describe(url, p->desc, sizeof p->desc);
    pthread_mutex_init(&p->mu, NULL);
    PGconn *c = connect_one(p, err, errlen);
    if (!c) {
        pg_pool_close(p);
        return AIOS_EIO;
    }
    if (schema) {
        /* one lock for every aios schema: 0x41494f53 is "AIOS" */
        PGresult *r = PQexec(c, "BEGIN; SELECT pg_advisory_xact_lock(1095323475);");
        bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
        if (ok) {
            r = PQexec(c, schema);
            ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
            if (!ok)
                snprintf(err, errlen, "%s: cannot create the tables in %s: %s", what, p->desc,
                         PQresultErrorMessage(r));
            PQclear(r);
        } else {
            snprintf(err, errlen, "%s: %s: %s", what, p->desc, PQerrorMessage(c));
        }
        r = PQexec(c, ok ? "COMMIT" : "ROLLBACK");
        PQclear(r);
        if (!ok) {
            size_t l = strlen(err);
            if (l && err[l - 1] == '\n') err[l - 1] = 0;
            PQfinish(c);
            pg_pool_close(p);
            return AIOS_EIO;
        }
    }
    pg_give(p, c);
    *out = p;
    return 0;
}

void pg_pool_close(struct pg_pool *p)
{
    if (!p) return;
    struct pg_node *n = p->free_list;
    while (n) {
        struct pg_node *next = n->next;
        PQfinish(n->c);
        free(n);
        n = next;
    }
    pthread_mutex_destroy(&p->mu);
    free(p->url);
    free(p);
}

PGconn *pg_take(struct pg_pool *p)
{
    pthread_mutex_lock(&p->mu);
    struct pg_node *n = p->free_list;
    if (n) p->free_list = n->next;
    pthread_mutex_unlock(&p->mu);
    if (n) {
        PGconn *c = n->c;
        free(n);
        /* a connection left inside a transaction by a failed caller, or
         * broken, is reset */
        if (PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) != PQTRANS_IDLE)
            PQclear(PQexec(c, "ROLLBACK"));
        if (PQstatus(c) != CONNECTION_OK || PQtransactionStatus(c) != PQTRANS_IDLE) {
            PQreset(c);
            if (PQstatus(c) != CONNECTION_OK) {
                LOG_ERROR(p->what, "PostgreSQL at %s: %s", p->desc, PQerrorMessage(c));
                PQfinish(c);
                return NULL;
            }
            PQsetNoticeProcessor(c, no_notice, NULL);
        }
        return c;
    }
    char err[512];
    PGconn *c = connect_one(p, err, sizeof err);
    if (!c) LOG_ERROR(p->what, "%s", err);
    return c;
}

void pg_give(struct pg_pool *p, PGconn *c)
{
    if (!c) return;
    struct pg_node *n = malloc(sizeof *n);
    if (!n) {
        PQfinish(c);
        return;
    }
    n->c = c;
    pthread_mutex_lock(&p->mu);
    n->next = p->free_list;
    p->free_list = n;
    pthread_mutex_unlock(&p->mu);
}

PGresult *pg_qb(PGconn *c, const char *what, const char *sql, int n, const char *const *vals,
                const int *lens, bool binary_result)
{
    int fmts[16];
    if (n > 16) return NULL;
    for (int i = 0; i < n; i++) fmts[i] = lens && lens[i] >= 0 ? 1 : 0;
    PGresult *r = PQexecParams(c, sql, n, NULL, vals, lens, fmts, binary_result ? 1 : 0);
    ExecStatusType s = PQresultStatus(r);
    if (s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK) {
        t_state[0] = 0;
        return r;
    }
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    snprintf(t_state, sizeof t_state, "%s", state ? state : "");
    const char *msg = r ? PQresultErrorMessage(r) : PQerrorMessage(c);
    LOG_ERROR("postgres", "%s: %.*s", what, (int)strcspn(msg, "\n"), msg);
    PQclear(r);
    return NULL;
}

PGresult *pg_q(PGconn *c, const char *what, const char *sql, int n, const char *const *vals)
{
    return pg_qb(c, what, sql, n, vals, NULL, false);
}

int pg_exec(PGconn *c, const char *what, const char *sql, int n, const char *const *vals)
{
    PGresult *r = pg_q(c, what, sql, n, vals);
    if (!r) return AIOS_EIO;
    PQclear(r);
    return 0;
}

int64_t pg_changes(const PGresult *r)
{
    const char *s = PQcmdTuples((PGresult *)r);
    return s && *s ? strtoll(s, NULL, 10) : 0;
}

const char *pg_i64(char *buf, int64_t v)
{
    snprintf(buf, 32, "%lld", (long long)v);
    return buf;
}

const char *pg_dbl(char *buf, double v)
{
    snprintf(buf, 32, "%.17g", v);
    return buf;
}

int64_t pg_get_i64(const PGresult *r, int row, int col)
{
    const char *s = PQgetvalue(r, row, col);
    return s && *s ? strtoll(s, NULL, 10) : 0;
}

double pg_get_dbl(const PGresult *r, int row, int col)
{
    const char *s = PQgetvalue(r, row, col);
    return s && *s ? strtod(s, NULL) : 0;
}

const char *pg_get_s(const PGresult *r, int row, int col)
{
    const char *s = PQgetvalue(r, row, col);
    return s ? s : "";
}
