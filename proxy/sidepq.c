/*
 * sidepq.c -- libpq helpers of the daemon's worker threads (see sidepq.h).
 */
#include "config.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

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

/* 'value' with \\ and \' escaped, as libpq's key=value syntax wants. */
static void add_value(struct evbuffer *b, const char *v)
{
    evbuffer_add(b, "'", 1);
    for (; *v; v++) {
        if (*v == '\\' || *v == '\'')
            evbuffer_add(b, "\\", 1);
        evbuffer_add(b, v, 1);
    }
    evbuffer_add(b, "'", 1);
}

char *sidepq_conninfo_app(const char *conninfo, const char *app, char *err, size_t errlen)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo ? conninfo : "", &perr);
    if (!opts) {
        snprintf(err, errlen, "sidecar_dsn does not parse: %s", perr ? perr : "out of memory");
        PQfreemem(perr);
        return NULL;
    }
    struct evbuffer *b = evbuffer_new();
    bool named = false;
    for (PQconninfoOption *o = opts; b && o->keyword; o++) {
        if (!o->val)
            continue;
        named |= strcmp(o->keyword, "application_name") == 0;
        evbuffer_add_printf(b, "%s=", o->keyword);
        add_value(b, o->val);
        evbuffer_add(b, " ", 1);
    }
    if (b && !named) {
        evbuffer_add_printf(b, "application_name=");
        add_value(b, app);
    }
    PQconninfoFree(opts);
    char *out = NULL;
    if (b) {
        size_t n = evbuffer_get_length(b);
        out = malloc(n + 1);
        if (out) {
            evbuffer_remove(b, out, n);
            out[n] = '\0';
        }
        evbuffer_free(b);
    }
    if (!out)
        snprintf(err, errlen, "out of memory");
    return out;
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
