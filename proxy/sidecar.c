/*
 * sidecar.c -- the daemon's own libpq connection at start-up (sidecar_dsn):
 * before it accepts anyone in enforce mode, check that tenantguard's SQL
 * helpers are installed in the version this policy needs. Without
 * sidecar_dsn each session checks at login (probe.c) and refuses enforced
 * writes when they are missing.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <libpq-fe.h>

#include "policy/helpers_sql.h"
#include "proxy/sidecar.h"

int sidecar_check_helpers(const tg_config *cfg, char *msg, size_t len)
{
    PGconn *c = PQconnectdb(cfg->sidecar_dsn);
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(msg, len, "sidecar_dsn: cannot connect: %s", PQerrorMessage(c));
        /* PQerrorMessage ends with a newline */
        size_t n = strlen(msg);
        if (n && msg[n - 1] == '\n')
            msg[n - 1] = '\0';
        PQfinish(c);
        return -1;
    }
    const char *params[1] = {cfg->policy.helper_schema};
    PGresult *r = PQexecParams(c,
                               "SELECT pr.prosrc FROM pg_catalog.pg_proc pr JOIN pg_catalog.pg_namespace ns "
                               "ON ns.oid = pr.pronamespace WHERE ns.nspname = $1 "
                               "AND pr.proname = 'helpers_version' LIMIT 1",
                               1, NULL, params, NULL, NULL, 0);
    int rc = 0;
    char want[64];
    tg_helpers_version_string(&cfg->policy, want, sizeof(want));
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(msg, len, "sidecar_dsn: cannot read the catalog: %s", PQresultErrorMessage(r));
        rc = -1;
    } else if (PQntuples(r) == 0) {
        snprintf(msg, len,
                 "enforce mode needs tenantguard's SQL helpers (schema %s), which are not installed; "
                 "run: tenantguard migrate --phase 1 -c <this config>",
                 cfg->policy.helper_schema);
        rc = 1;
    } else if (!strstr(PQgetvalue(r, 0, 0), want)) {
        snprintf(msg, len,
                 "tenantguard's SQL helpers in schema %s are of another version or policy (want %s); "
                 "run: tenantguard migrate --phase 1 -c <this config>",
                 cfg->policy.helper_schema, want);
        rc = 1;
    }
    PQclear(r);
    PQfinish(c);
    return rc;
}
