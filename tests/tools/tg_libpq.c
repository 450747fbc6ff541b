/*
 * tg_libpq -- a scripted libpq client for the enforcement tests.
 *
 *   tg_libpq CONNINFO < SCRIPT
 *
 * Reads one command a line and prints one line per result, so that a test can
 * assert on exactly what libpq reported (status, SQLSTATE, primary message,
 * values) for PQexecParams / PQprepare / PQexecPrepared / PQdescribePrepared
 * with text and binary parameters, and for the same calls in pipeline mode.
 *
 * Commands (fields separated by '|'):
 *   params SQL|P1|P2...          PQexecParams (PQsendQueryParams in a pipeline)
 *   prepare NAME|SQL|OID1,OID2   PQprepare (PQsendPrepare); OIDs optional
 *   exec NAME|P1|P2...           PQexecPrepared (PQsendQueryPrepared)
 *   describe NAME                PQdescribePrepared (PQsendDescribePrepared)
 *   query SQL                    PQexec (not in a pipeline)
 *   pipeline                     PQenterPipelineMode
 *   sync                         PQpipelineSync, then read every result up to it
 *   endpipeline                  PQexitPipelineMode
 *   # ...                        a comment
 * Parameters:
 *   t:TEXT        text, type left to the server (OID 0)
 *   t8:TEXT       text, typed int8
 *   b8:N b4:N b2:N  binary int8 / int4 / int2 (typed)
 *   null          NULL, type left to the server
 * Output lines:
 *   OK TAG [| v1 | v2 ...]       per row: "ROW v1 | v2"
 *   ERROR SQLSTATE MESSAGE
 *   DESCRIBE params=o1,o2 fields=name:oid,...
 *   SYNC
 * Exit 0 when the script ran to its end, 1 on a client-side failure.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#define MAXP 32

static int in_pipeline;

typedef struct params {
    int n;
    const char *values[MAXP];
    int lengths[MAXP];
    int formats[MAXP];
    Oid types[MAXP];
    char buf[MAXP][64];
} params;

static int fail(PGconn *conn, const char *what)
{
    fprintf(stderr, "tg_libpq: %s: %s", what, conn ? PQerrorMessage(conn) : "?\n");
    return 1;
}

static void put_be(char *dst, int64_t v, int size)
{
    for (int i = size - 1; i >= 0; i--) {
        dst[i] = (char)(v & 0xff);
        v >>= 8;
    }
}

static int parse_param(params *p, char *tok)
{
    int i = p->n++;
    if (i >= MAXP)
        return -1;
    p->formats[i] = 0;
    p->types[i] = 0;
    p->lengths[i] = 0;
    if (strcmp(tok, "null") == 0) {
        p->values[i] = NULL;
    } else if (strncmp(tok, "t:", 2) == 0) {
        p->values[i] = tok + 2;
    } else if (strncmp(tok, "t8:", 3) == 0) {
        p->values[i] = tok + 3;
        p->types[i] = 20;
    } else if (tok[0] == 'b' && (tok[1] == '8' || tok[1] == '4' || tok[1] == '2') && tok[2] == ':') {
        int size = tok[1] - '0';
        put_be(p->buf[i], strtoll(tok + 3, NULL, 10), size);
        p->values[i] = p->buf[i];
        p->lengths[i] = size;
        p->formats[i] = 1;
        p->types[i] = size == 8 ? 20 : size == 4 ? 23 : 21;
    } else {
        return -1;
    }
    return 0;
}

/* Split "a|b|c" in place. */
static int split(char *s, char **out, int max)
{
    int n = 0;
    out[n++] = s;
    for (char *c = s; *c && n < max; c++) {
        if (*c == '|') {
            *c = '\0';
            out[n++] = c + 1;
        }
    }
    return n;
}

static void print_result(PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR) {
        const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
        printf("ERROR %s %s\n", code ? code : "?", msg ? msg : "?");
        return;
    }
    if (st == PGRES_PIPELINE_SYNC) {
        printf("SYNC\n");
        return;
    }
    if (st == PGRES_PIPELINE_ABORTED) {
        printf("ABORTED\n");
        return;
    }
    printf("OK %s\n", PQcmdStatus(r)[0] ? PQcmdStatus(r) : PQresStatus(st));
    for (int i = 0; i < PQntuples(r); i++) {
        printf("ROW");
        for (int j = 0; j < PQnfields(r); j++)
            printf("%s%s", j ? " | " : " ", PQgetisnull(r, i, j) ? "NULL" : PQgetvalue(r, i, j));
        printf("\n");
    }
}

static void print_describe(PGresult *r)
{
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        print_result(r);
        return;
    }
    printf("DESCRIBE params=");
    for (int i = 0; i < PQnparams(r); i++)
        printf("%s%u", i ? "," : "", PQparamtype(r, i));
    printf(" fields=");
    for (int i = 0; i < PQnfields(r); i++)
        printf("%s%s:%u:%d", i ? "," : "", PQfname(r, i), PQftype(r, i), PQfmod(r, i));
    printf("\n");
}

/* Pipeline: read results until the sync. */
static int read_to_sync(PGconn *conn)
{
    for (;;) {
        PGresult *r = PQgetResult(conn);
        if (!r)
            continue;   /* the NULL that ends one query's results */
        ExecStatusType st = PQresultStatus(r);
        if (PQnparams(r) > 0 || (st == PGRES_COMMAND_OK && PQnfields(r) > 0 && !PQcmdStatus(r)[0]))
            print_describe(r);
        else
            print_result(r);
        PQclear(r);
        if (st == PGRES_PIPELINE_SYNC)
            return 0;
        if (PQstatus(conn) != CONNECTION_OK)
            return -1;
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: tg_libpq CONNINFO < SCRIPT\n");
        return 64;
    }
    PGconn *conn = PQconnectdb(argv[1]);
    if (PQstatus(conn) != CONNECTION_OK)
        return fail(conn, "connect");
    char line[8192];
    while (fgets(line, sizeof(line), stdin)) {
        line[strcspn(line, "\n")] = '\0';
        if (!line[0] || line[0] == '#')
            continue;
        char *sp = strchr(line, ' ');
        char *arg = sp ? sp + 1 : line + strlen(line);
        if (sp)
            *sp = '\0';
        char *f[MAXP + 2];
        params p;
        memset(&p, 0, sizeof(p));
        PGresult *r = NULL;
        int ok = 1;
        if (strcmp(line, "params") == 0 || strcmp(line, "exec") == 0) {
            int n = split(arg, f, MAXP + 2);
            for (int i = 1; i < n; i++)
                if (parse_param(&p, f[i]) != 0)
                    return fail(NULL, "bad parameter");
            if (line[0] == 'p') {
                if (in_pipeline)
                    ok = PQsendQueryParams(conn, f[0], p.n, p.types, p.values, p.lengths, p.formats, 0);
                else
                    r = PQexecParams(conn, f[0], p.n, p.types, p.values, p.lengths, p.formats, 0);
            } else {
                if (in_pipeline)
                    ok = PQsendQueryPrepared(conn, f[0], p.n, p.values, p.lengths, p.formats, 0);
                else
                    r = PQexecPrepared(conn, f[0], p.n, p.values, p.lengths, p.formats, 0);
            }
        } else if (strcmp(line, "prepare") == 0) {
            int n = split(arg, f, 3);
            Oid types[MAXP];
            int nt = 0;
            if (n > 2 && f[2][0]) {
                for (char *t = strtok(f[2], ","); t && nt < MAXP; t = strtok(NULL, ","))
                    types[nt++] = (Oid)strtoul(t, NULL, 10);
            }
            if (in_pipeline)
                ok = PQsendPrepare(conn, f[0], f[1], nt, nt ? types : NULL);
            else
                r = PQprepare(conn, f[0], f[1], nt, nt ? types : NULL);
        } else if (strcmp(line, "describe") == 0) {
            if (in_pipeline) {
                ok = PQsendDescribePrepared(conn, arg);
            } else {
                r = PQdescribePrepared(conn, arg);
                print_describe(r);
                PQclear(r);
                r = NULL;
            }
        } else if (strcmp(line, "query") == 0) {
            r = PQexec(conn, arg);
        } else if (strcmp(line, "pipeline") == 0) {
            if (PQenterPipelineMode(conn) != 1)
                return fail(conn, "enter pipeline mode");
            in_pipeline = 1;
        } else if (strcmp(line, "sync") == 0) {
            if (PQpipelineSync(conn) != 1 || read_to_sync(conn) != 0)
                return fail(conn, "sync");
        } else if (strcmp(line, "endpipeline") == 0) {
            if (PQexitPipelineMode(conn) != 1)
                return fail(conn, "exit pipeline mode");
            in_pipeline = 0;
        } else {
            return fail(NULL, "unknown command");
        }
        if (!ok)
            return fail(conn, line);
        if (r) {
            print_result(r);
            PQclear(r);
        }
        fflush(stdout);
    }
    PQfinish(conn);
    return 0;
}
