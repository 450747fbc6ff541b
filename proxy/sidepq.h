/*
 * sidepq.h -- libpq for the daemon's worker threads: one way to open a
 * sidecar connection (sidecar_dsn with tenantguard's defaults), and
 * identifier quoting for SQL built from the policy's names.
 *
 * Worker threads only: every call here may block.
 */
#ifndef TG_SIDEPQ_H
#define TG_SIDEPQ_H

#include <stddef.h>

#include <libpq-fe.h>

/* Connect with conninfo (libpq URI or key=value; its keywords override our
 * defaults: connect_timeout 15 s, TCP keepalives, UTF8, application name).
 * NULL with err set ("cannot connect (user@host:port/db): ...", never a
 * password) on failure. */
PGconn *sidepq_connect(const char *conninfo, const char *appname, char *err, size_t errlen);

/* conninfo (URI or key=value) as key=value with application_name = app
 * added unless it names one: the backfill's connections show who runs it
 * (pg_stat_activity, the lock holder a refused run names). malloc'd; NULL
 * when conninfo does not parse (err set). */
char *sidepq_conninfo_app(const char *conninfo, const char *app, char *err, size_t errlen);

/* The last error of c (or of r) as one line, without libpq's newline. */
void sidepq_error(PGconn *c, const PGresult *r, char *err, size_t errlen);

/* "schema"."name" (or "name" when schema is NULL), quotes doubled: the
 * catalog names of the config, exactly. Returns buf. */
char *sidepq_qname(const char *schema, const char *name, char *buf, size_t len);

#endif
