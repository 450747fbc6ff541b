/*
 * sidepq.c -- libpq helpers of the daemon's worker threads (see sidepq.h).
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "proxy/sidepq.h"

static void one_line(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
        s[--n] = '\0';
    for (char *p = s; *p; p++)
        if (*p == '\n')
            *p = ' ';
}

PGconn *sidepq_connect(const char *conninfo, const char *appname, char *err, size_t errlen)
{
    /* Our defaults first: keywords expanded from `dbname` (the operator's
     * conninfo) come later and override them. */
    const char *keys[] = {"fallback_application_name", "connect_timeout", "keepalives", "keepalives_idle",
                          "keepalives_interval", "keepalives_count", "client_encoding", "dbname", NULL};
    const char *vals[] = {appname, "15", "1", "30", "10", "3", "UTF8", conninfo, NULL};
    if (!conninfo || !*conninfo)
        keys[7] = NULL;
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c) {
        snprintf(err, errlen, "cannot connect: out of memory");
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        char why[512];
        sidepq_error(c, NULL, why, sizeof(why));
        const char *host = PQhost(c);
        snprintf(err, errlen, "cannot connect (%s@%s:%s/%s): %s", PQuser(c) ? PQuser(c) : "?",
                 host && *host ? host : "localhost", PQport(c) ? PQport(c) : "?", PQdb(c) ? PQdb(c) : "?", why);
        PQfinish(c);
        return NULL;
    }
    return c;
}

void sidepq_error(PGconn *c, const PGresult *r, char *err, size_t errlen)
{
    const char *m = r ? PQresultErrorMessage(r) : NULL;
    if (!m || !*m)
        m = c ? PQerrorMessage(c) : "";
    snprintf(err, errlen, "%s", *m ? m : "unknown error");
    one_line(err);
}

static size_t quote_ident(const char *s, char *out, size_t cap)
{
    size_t n = 0;
    if (cap < 3)
        return 0;
    out[n++] = '"';
    for (; *s && n + 4 <= cap; s++) {
        if (*s == '"')
            out[n++] = '"';
        out[n++] = *s;
    }
    out[n++] = '"';
    out[n] = '\0';
    return n;
}

char *sidepq_qname(const char *schema, const char *name, char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = '\0';
    if (schema && *schema) {
        n = quote_ident(schema, buf, len);
        if (n + 1 < len)
            buf[n++] = '.';
        buf[n] = '\0';
    }
    if (n < len)
        quote_ident(name, buf + n, len - n);
    return buf;
}
