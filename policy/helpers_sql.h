/*
 * helpers_sql.h -- tenantguard's SQL objects (sql/tenantguard.sql), embedded
 * in the binary and rendered for a policy. Used by `migrate --phase 1` to
 * install them and by the proxy to check, at start-up, that the installed
 * version matches its policy.
 */
#ifndef TG_HELPERS_SQL_H
#define TG_HELPERS_SQL_H

#include "policy/config.h"

#define TG_HELPERS_VERSION 1

/* The SQL with every placeholder filled; malloc'd, caller frees. */
char *tg_helpers_sql_render(const tg_policy *p);

/* What helpers_version() returns for this policy, e.g. "1:9f86d081884c7d65". */
void tg_helpers_version_string(const tg_policy *p, char *buf, size_t len);

#endif
