/*
 * bf_plan.c -- what a backfill will do, found out before it writes anything.
 *
 * 1. The selected tables (all watched tables -- the tenant-owned ones and
 *    the audit table -- or the one named by --table), each checked in the
 *    catalog: it exists, has the tenant and workspace columns (the latter
 *    from `migrate --phase 1`), and a single-column integer primary key to
 *    walk in keyset batches.
 * 2. One scan per table, grouped by the workspace of each row's tenant:
 *    rows, rows missing the workspace, and the missing rows whose tenant
 *    has no workspace (unresolvable; NULL group), with sample ids.
 *
 * The audit table differs in scope only: its rows without a tenant are
 * workspace- or platform-scoped and stay as they are (seed T046).
 */
#include "config.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backfill/bf_internal.h"

const tg_table *tg_bf_find_table(const tg_policy *p, const char *name)
{
    for (int i = 0; i < p->n_tables; i++) {
        const tg_table *t = &p->tables[i];
        char key[BF_QNAME_MAX], full[BF_QNAME_MAX];
        bf_table_key(t, key, sizeof(key));
        snprintf(full, sizeof(full), "%s.%s", t->schema, t->name);
        if (strcmp(name, key) == 0 || strcmp(name, full) == 0)
            return t;
    }
    return NULL;
}

void tg_bf_table_names(const tg_policy *p, char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i < p->n_tables && n < len; i++) {
        char key[BF_QNAME_MAX];
        bf_table_key(&p->tables[i], key, sizeof(key));
        n += (size_t)snprintf(buf + n, len - n, "%s%s", i ? ", " : "", key);
    }
}

void bf_names_init(bf_names *nm, const tg_policy *p, const char *runs_table)
{
    memset(nm, 0, sizeof(*nm));
    bf_qualify(p->tenant_schema, p->tenant_table, nm->tenants, sizeof(nm->tenants));
    bf_quote_ident(p->tenant_id_col, nm->tid, sizeof(nm->tid));
    bf_quote_ident(p->tenant_ws_col, nm->tws, sizeof(nm->tws));
    if (runs_table && *runs_table) {
        const char *dot = strchr(runs_table, '.');
        if (dot) {
            char schema[BF_IDENT_MAX];
            snprintf(schema, sizeof(schema), "%.*s", (int)(dot - runs_table), runs_table);
            bf_qualify(schema, dot + 1, nm->runs, sizeof(nm->runs));
        } else {
            bf_qualify(p->tenant_schema, runs_table, nm->runs, sizeof(nm->runs));
        }
    } else {
        bf_qualify(p->tenant_schema, "operation_runs", nm->runs, sizeof(nm->runs));
    }
    /* The backfill's own audit entries go to the policy's audit table; with
     * none configured, to audit_logs beside the tenants table. */
    const tg_table *audit = NULL;
    for (int i = 0; i < p->n_tables; i++)
        if (p->tables[i].kind == TG_TABLE_AUDIT)
            audit = &p->tables[i];
    if (audit) {
        bf_qualify(audit->schema, audit->name, nm->audit, sizeof(nm->audit));
        bf_quote_ident(audit->tenant_col, nm->audit_tcol, sizeof(nm->audit_tcol));
        bf_quote_ident(audit->workspace_col, nm->audit_wcol, sizeof(nm->audit_wcol));
    } else {
        bf_qualify(p->tenant_schema, "audit_logs", nm->audit, sizeof(nm->audit));
        bf_quote_ident("tenant_id", nm->audit_tcol, sizeof(nm->audit_tcol));
        bf_quote_ident("workspace_id", nm->audit_wcol, sizeof(nm->audit_wcol));
    }
}

/* ---------------------------------------------------------------- catalog */

static const char catalog_sql[] =
    "SELECT (SELECT a.attname FROM pg_catalog.pg_index i "
    "          JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
    "         WHERE i.indrelid = c.oid AND i.indisprimary AND i.indnkeyatts = 1 "
    "           AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)), "
    "       EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid "
    "                  AND a.attname = $3 AND a.attnum > 0 AND NOT a.attisdropped), "
    "       EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid "
    "                  AND a.attname = $4 AND a.attnum > 0 AND NOT a.attisdropped) "
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')";

tg_bf_status bf_check_table(PGconn *c, const char *schema, const char *name, const char *tcol,
                                const char *wcol, char *pk, size_t pklen, char *msg, size_t len)
{
    bf_err err;
    const char *params[] = {schema, name, tcol, wcol};
    PGresult *r = bf_exec(c, catalog_sql, 4, params, &err);
    if (!r) {
        snprintf(msg, len, "cannot read the catalog for %s.%s: %s", schema, name, err.message);
        return TG_BF_ERROR;
    }
    tg_bf_status st = TG_BF_OK;
    if (PQntuples(r) == 0) {
        snprintf(msg, len, "table %s.%s does not exist: fix [policy] tables in the config, "
                 "or create it", schema, name);
        st = TG_BF_ERROR;
    } else if (strcmp(PQgetvalue(r, 0, 1), "t") != 0) {
        snprintf(msg, len, "table %s.%s has no column %s: set tenant_column for it in the config",
                 schema, name, tcol);
        st = TG_BF_ERROR;
    } else if (strcmp(PQgetvalue(r, 0, 2), "t") != 0) {
        snprintf(msg, len, "table %s.%s has no column %s yet: run `tenantguard migrate --phase 1` "
                 "first", schema, name, wcol);
        st = TG_BF_REFUSED;
    } else if (pk && PQgetisnull(r, 0, 0)) {
        snprintf(msg, len, "table %s.%s has no single-column integer primary key, which the "
                 "backfill walks in keyset batches", schema, name);
        st = TG_BF_ERROR;
    } else if (pk) {
        bf_quote_ident(PQgetvalue(r, 0, 0), pk, pklen);
    }
    PQclear(r);
    return st;
}

tg_bf_status bf_plan_tables(PGconn *c, const tg_bf_options *o, bf_plan *p, char *msg, size_t len)
{
    const tg_policy *pol = o->policy;
    const tg_table *only = NULL;
    memset(p, 0, sizeof(*p));
    bf_names_init(&p->nm, pol, o->runs_table);
    if (o->table && *o->table) {
        only = tg_bf_find_table(pol, o->table);
        if (!only) {
            char names[1024];
            tg_bf_table_names(pol, names, sizeof(names));
            snprintf(msg, len, "unknown table \"%s\"; the watched tables are: %s", o->table, names);
            return TG_BF_ERROR;
        }
    }
    tg_bf_status st = bf_check_table(c, pol->tenant_schema, pol->tenant_table, pol->tenant_id_col,
                                  pol->tenant_ws_col, NULL, 0, msg, len);
    if (st != TG_BF_OK)
        return st == TG_BF_REFUSED ? TG_BF_ERROR : st;   /* tenants must have the column */
    p->tbl = calloc((size_t)pol->n_tables, sizeof(*p->tbl));
    if (!p->tbl) {
        snprintf(msg, len, "out of memory");
        return TG_BF_ERROR;
    }
    for (int i = 0; i < pol->n_tables; i++) {
        const tg_table *t = &pol->tables[i];
        if (only && t != only)
            continue;
        bf_tbl *bt = &p->tbl[p->n_tbl];
        bt->t = t;
        bf_qualify(t->schema, t->name, bt->qname, sizeof(bt->qname));
        bf_quote_ident(t->tenant_col, bt->tcol, sizeof(bt->tcol));
        bf_quote_ident(t->workspace_col, bt->wcol, sizeof(bt->wcol));
        bf_table_key(t, bt->st.name, sizeof(bt->st.name));
        bt->st.audit = t->kind == TG_TABLE_AUDIT;
        st = bf_check_table(c, t->schema, t->name, t->tenant_col, t->workspace_col, bt->pk,
                         sizeof(bt->pk), msg, len);
        if (st != TG_BF_OK)
            return st;
        p->n_tbl++;
    }
    return TG_BF_OK;
}

/* ---------------------------------------------------------------- counting */

/* The rows a table's backfill is about: workspace missing, and for the audit
 * table only rows that name a tenant. */
static const char *scope_filter(const bf_tbl *t, char *buf, size_t len)
{
    if (t->st.audit)
        snprintf(buf, len, "t.%s IS NULL AND t.%s IS NOT NULL", t->wcol, t->tcol);
    else
        snprintf(buf, len, "t.%s IS NULL", t->wcol);
    return buf;
}

typedef struct triple { int64_t ws; int tbl; int64_t missing; } triple;

static int cmp_triple(const void *a, const void *b)
{
    const triple *x = a, *y = b;
    return x->ws < y->ws ? -1 : x->ws > y->ws ? 1 : x->tbl - y->tbl;
}

static bool count_samples(PGconn *c, const bf_plan *p, bf_tbl *t, bf_err *err)
{
    char filter[2 * BF_IDENT_MAX + 64], sql[2048];
    scope_filter(t, filter, sizeof(filter));
    snprintf(sql, sizeof(sql),
             "SELECT t.%s, t.%s FROM %s t LEFT JOIN %s tn ON tn.%s = t.%s "
             "WHERE %s AND tn.%s IS NULL ORDER BY t.%s LIMIT %d",
             t->pk, t->tcol, t->qname, p->nm.tenants, p->nm.tid, t->tcol, filter, p->nm.tws,
             t->pk, TG_BF_SAMPLES);
    PGresult *r = bf_exec(c, sql, 0, NULL, err);
    if (!r)
        return false;
    for (int i = 0; i < PQntuples(r); i++) {
        t->st.sample_ids[t->st.n_samples++] = bf_int64(r, i, 0);
        int64_t tenant = bf_int64(r, i, 1);
        bool seen = false;
        for (int k = 0; k < t->st.n_sample_tenants; k++)
            seen |= t->st.sample_tenants[k] == tenant;
        if (!seen)
            t->st.sample_tenants[t->st.n_sample_tenants++] = tenant;
    }
    PQclear(r);
    return true;
}

tg_bf_status bf_plan_count(PGconn *c, bf_plan *p, int64_t resume_from, bf_err *err)
{
    /* A run's targets are the missing rows after --resume-from: the rows at
     * or below it are skipped on purpose, not left undone. */
    char after[24];
    snprintf(after, sizeof(after), "%" PRId64, resume_from > 0 ? resume_from : 0);
    const char *params[] = {after};
    triple *tr = NULL;
    size_t n_tr = 0, cap = 0;
    for (int i = 0; i < p->n_tbl; i++) {
        bf_tbl *t = &p->tbl[i];
        char filter[2 * BF_IDENT_MAX + 64], sql[2048];
        scope_filter(t, filter, sizeof(filter));
        snprintf(sql, sizeof(sql),
                 "SELECT tn.%s, count(*), count(*) FILTER (WHERE %s), "
                 "       count(*) FILTER (WHERE %s AND t.%s > $1::bigint) "
                 "FROM %s t LEFT JOIN %s tn ON tn.%s = t.%s GROUP BY 1 ORDER BY 1",
                 p->nm.tws, filter, filter, t->pk, t->qname, p->nm.tenants, p->nm.tid, t->tcol);
        PGresult *r = bf_exec(c, sql, 1, params, err);
        if (!r) {
            free(tr);
            return TG_BF_ERROR;
        }
        memset(&t->st.scanned, 0, sizeof(t->st) - offsetof(tg_bf_table_stats, scanned));
        for (int row = 0; row < PQntuples(r); row++) {
            int64_t rows = bf_int64(r, row, 1), missing = bf_int64(r, row, 2);
            int64_t todo = bf_int64(r, row, 3);
            t->st.scanned += rows;
            t->st.missing += missing;
            if (PQgetisnull(r, row, 0)) {
                t->st.unresolvable += missing;
                continue;
            }
            if (todo == 0)
                continue;
            if (n_tr == cap) {
                cap = cap ? cap * 2 : 256;
                triple *g = realloc(tr, cap * sizeof(*tr));
                if (!g) {
                    PQclear(r);
                    free(tr);
                    snprintf(err->message, sizeof(err->message), "out of memory");
                    return TG_BF_ERROR;
                }
                tr = g;
            }
            tr[n_tr++] = (triple){bf_int64(r, row, 0), i, todo};
        }
        PQclear(r);
        if (t->st.unresolvable > 0 && !count_samples(c, p, t, err)) {
            free(tr);
            return TG_BF_ERROR;
        }
    }
    /* Per workspace: missing rows per table. */
    if (n_tr > 0)
        qsort(tr, n_tr, sizeof(*tr), cmp_triple);
    p->load = calloc(n_tr ? n_tr : 1, sizeof(*p->load));
    for (size_t k = 0; p->load && k < n_tr; k++) {
        if (p->n_load == 0 || p->load[p->n_load - 1].ws != tr[k].ws) {
            bf_load *l = &p->load[p->n_load++];
            l->ws = tr[k].ws;
            l->missing = calloc((size_t)p->n_tbl, sizeof(int64_t));
            if (!l->missing)
                break;
        }
        p->load[p->n_load - 1].missing[tr[k].tbl] = tr[k].missing;
    }
    free(tr);
    return TG_BF_OK;
}

void bf_plan_free(bf_plan *p)
{
    for (int i = 0; i < p->n_load; i++)
        free(p->load[i].missing);
    free(p->load);
    free(p->tbl);
    memset(p, 0, sizeof(*p));
}

/* ---------------------------------------------------------------- operator SQL */

/* Quote only when needed, as an operator would type it. */
static void plain_ident(const char *id, char *buf, size_t len)
{
    bool plain = (*id >= 'a' && *id <= 'z') || *id == '_';
    for (const char *s = id; *s; s++)
        plain &= (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_';
    if (plain)
        snprintf(buf, len, "%s", id);
    else
        bf_quote_ident(id, buf, len);
}

void tg_bf_validation_sql(const tg_table *t, char *buf, size_t len)
{
    char s[BF_IDENT_MAX], n[BF_IDENT_MAX], tc[BF_IDENT_MAX], wc[BF_IDENT_MAX], tbl[BF_QNAME_MAX];
    plain_ident(t->schema, s, sizeof(s));
    plain_ident(t->name, n, sizeof(n));
    plain_ident(t->tenant_col, tc, sizeof(tc));
    plain_ident(t->workspace_col, wc, sizeof(wc));
    if (strcmp(t->schema, "public") == 0)
        snprintf(tbl, sizeof(tbl), "%s", n);
    else
        snprintf(tbl, sizeof(tbl), "%s.%s", s, n);
    if (t->kind == TG_TABLE_AUDIT)
        snprintf(buf, len, "SELECT count(*) FROM %s WHERE %s IS NOT NULL AND %s IS NULL;", tbl, tc,
                 wc);
    else
        snprintf(buf, len, "SELECT count(*) FROM %s WHERE %s IS NULL;", tbl, wc);
}
