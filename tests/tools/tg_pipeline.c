/*
 * tg_pipeline -- a libpq pipeline-mode client for the relay tests.
 *
 *   tg_pipeline CONNINFO [N]
 *
 * Runs one fixed pipeline and prints one line per result, so that a test can
 * compare the output through tenantguard with the output against PostgreSQL
 * directly. The pipeline: a prepared statement, N executions of it queued
 * before any result is read, an error in the middle (the rest of that batch is
 * aborted by the server), a Sync, a batch answered after a Flush request
 * (before its Sync), a Describe, and a final Sync. Exit 0 when the pipeline
 * ran to its end (errors the script provokes are expected), 1 otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

static int fail(PGconn *conn, const char *what)
{
    fprintf(stderr, "tg_pipeline: %s: %s", what, conn ? PQerrorMessage(conn) : "?\n");
    if (conn)
        PQfinish(conn);
    return 1;
}

/* Print one result line; returns its status. */
static ExecStatusType print_result(PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    printf("%s", PQresStatus(st));
    if (st == PGRES_FATAL_ERROR) {
        const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        printf(" %s", code ? code : "?");
    }
    for (int i = 0; i < PQntuples(r); i++)
        for (int j = 0; j < PQnfields(r); j++)
            printf(" %s", PQgetisnull(r, i, j) ? "NULL" : PQgetvalue(r, i, j));
    if (st == PGRES_COMMAND_OK && PQnfields(r) > 0)
        for (int j = 0; j < PQnfields(r); j++)
            printf(" %s", PQfname(r, j));
    printf("\n");
    return st;
}

/* Read the results of one query (until the NULL that ends it), or a sync. */
static int read_one(PGconn *conn)
{
    PGresult *r = PQgetResult(conn);
    if (!r)
        return -1;
    ExecStatusType st = print_result(r);
    PQclear(r);
    if (st == PGRES_PIPELINE_SYNC)
        return 0;
    r = PQgetResult(conn);   /* the NULL that ends this query's results */
    if (r) {
        print_result(r);
        PQclear(r);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: tg_pipeline CONNINFO [N]\n");
        return 64;
    }
    int n = argc > 2 ? atoi(argv[2]) : 500;
    PGconn *conn = PQconnectdb(argv[1]);
    if (PQstatus(conn) != CONNECTION_OK)
        return fail(conn, "connect");
    if (PQenterPipelineMode(conn) != 1)
        return fail(conn, "enter pipeline mode");

    /* Batch 1: prepare, N executions, an error, one aborted query, Sync. */
    if (!PQsendPrepare(conn, "dbl", "SELECT $1::int * 2", 1, NULL))
        return fail(conn, "send prepare");
    char buf[32];
    const char *vals[1] = {buf};
    for (int i = 0; i < n; i++) {
        snprintf(buf, sizeof(buf), "%d", i);
        if (!PQsendQueryPrepared(conn, "dbl", 1, vals, NULL, NULL, 0))
            return fail(conn, "send query prepared");
    }
    if (!PQsendQueryParams(conn, "SELECT 1/0", 0, NULL, NULL, NULL, NULL, 0) ||
        !PQsendQueryParams(conn, "SELECT 'aborted'", 0, NULL, NULL, NULL, NULL, 0) ||
        !PQpipelineSync(conn))
        return fail(conn, "send batch 1");

    /* Batch 2: a query answered after a Flush request, before its Sync. */
    const char *word[1] = {"flushed"};
    if (!PQsendQueryParams(conn, "SELECT $1::text || '!'", 1, NULL, word, NULL, NULL, 0) ||
        !PQsendFlushRequest(conn) || PQflush(conn) != 0)
        return fail(conn, "send batch 2");

    /* Read batch 1: prepare + n + error + aborted + sync. */
    for (int i = 0; i < n + 4; i++)
        if (read_one(conn) != 0)
            return fail(conn, "read batch 1");
    /* Batch 2's result is there before any Sync was sent. */
    if (read_one(conn) != 0)
        return fail(conn, "read the flushed result");

    if (!PQsendDescribePrepared(conn, "dbl") ||
        !PQsendQueryParams(conn, "SELECT generate_series(1, 3)", 0, NULL, NULL, NULL, NULL, 0) ||
        !PQpipelineSync(conn))
        return fail(conn, "send batch 3");
    for (int i = 0; i < 3; i++)
        if (read_one(conn) != 0)
            return fail(conn, "read batch 3");
    if (PQexitPipelineMode(conn) != 1)
        return fail(conn, "exit pipeline mode");
    PGresult *r = PQexec(conn, "SELECT 'done'");
    print_result(r);
    PQclear(r);
    PQfinish(conn);
    return 0;
}
