/*
 * migrate.c -- `migrate --phase 1` and `migrate --phase 3`.
 *
 * Each phase is a list of steps. A step first looks in the catalog: what is
 * already there is reported as EXISTS and skipped (so both phases are
 * idempotent and resume after a failure); otherwise its SQL runs -- or,
 * dry, is only reported. Every statement runs with lock_timeout and is
 * retried on 55P03/40P01, so no DDL waits long in the lock queue in front
 * of the application's queries.
 *
 * Phase 1: per watched table a nullable workspace column (no foreign key
 * yet: that is phase 3's) and an index on it, built CONCURRENTLY; the
 * tenants table's UNIQUE (id, workspace_id), built CONCURRENTLY then
 * attached as a constraint; tenantguard's own SQL objects.
 *
 * Phase 3, refused while any row is unbound: per tenant-owned table
 *   NOT NULL   CHECK (ws IS NOT NULL) NOT VALID, VALIDATE, SET NOT NULL
 *              (PostgreSQL 12+ skips the scan given the valid check), then
 *              the check is dropped as redundant;
 *   FK         ws -> workspaces(id), NOT VALID then VALIDATE;
 *   FK         (tenant, ws) -> tenants(id, ws), NOT VALID then VALIDATE;
 * and on the audit table CHECK (tenant IS NULL OR ws IS NOT NULL) and the
 * FK to workspaces, NOT VALID then VALIDATE. VALIDATE takes SHARE UPDATE
 * EXCLUSIVE: writes go on while it scans. ADD ... NOT VALID and SET NOT
 * NULL take their strong lock only for a catalog change.
 *
 * The workspaces table is the one tenants.workspace_id references.
 */
#include "config.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backfill/bf_internal.h"
#include "policy/helpers_sql.h"

typedef struct mig_ctx {
    const tg_migrate_options *o;
    PGconn *c;
    tg_migrate_step_fn fn;
    void *arg;
    bf_retry rt;
    char *msg;
    size_t msglen;
    bool dry;                 /* report steps, execute none */
    char ws_type[64];         /* type of tenants' workspace column */
    char wsp_table[BF_QNAME_MAX];   /* the workspaces table, quoted */
    char wsp_id[BF_IDENT_MAX];      /* its key column, quoted */
    char wsp_id_raw[BF_IDENT_MAX];  /* and as stored */
} mig_ctx;

static bool failf(mig_ctx *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool failf(mig_ctx *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->msg, m->msglen, fmt, ap);
    va_end(ap);
    return false;
}

/* A constraint or index name: parts joined by "_", cut to 63 bytes with a
 * hash suffix when longer (PostgreSQL would truncate silently). */
static void obj_name(char *buf, size_t len, const char *a, const char *b, const char *c,
                     const char *suffix)
{
    char full[512];
    snprintf(full, sizeof(full), "%s_%s%s%s_%s", a, b, c ? "_" : "", c ? c : "", suffix);
    if (strlen(full) <= 63) {
        snprintf(buf, len, "%s", full);
        return;
    }
    uint32_t h = 2166136261u;
    for (const char *s = full; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    snprintf(buf, len, "%.54s_%08x", full, h);
}

/* ---------------------------------------------------------------- catalog */

/* One value of a catalog query with text parameters; NULL when no row. */
static char *cat_value(mig_ctx *m, const char *sql, int n, const char *const *params, bool *ok)
{
    bf_err err;
    PGresult *r = bf_exec(m->c, sql, n, params, &err);
    if (!r) {
        *ok = failf(m, "reading the catalog failed: %s", err.message);
        return NULL;
    }
    char *v = PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? strdup(PQgetvalue(r, 0, 0)) : NULL;
    PQclear(r);
    return v;
}

/* "t" / "f" / NULL (no such column) for attnotnull of table.col. */
static char *col_notnull(mig_ctx *m, const char *qtable, const char *col, bool *ok)
{
    const char *params[] = {qtable, col};
    return cat_value(m,
        "SELECT a.attnotnull FROM pg_catalog.pg_attribute a "
        "WHERE a.attrelid = pg_catalog.to_regclass($1) AND a.attname = $2 "
        "  AND a.attnum > 0 AND NOT a.attisdropped", 2, params, ok);
}

/* An index whose first column is `col`: "valid", "invalid:<name>" for our
 * named one left invalid by a failed CONCURRENTLY build, or NULL. */
static char *col_index(mig_ctx *m, const char *qtable, const char *col, const char *name,
                       bool *ok)
{
    const char *params[] = {qtable, col, name};
    return cat_value(m,
        "SELECT CASE WHEN bool_or(i.indisvalid) THEN 'valid' ELSE 'invalid' END "
        "FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = pg_catalog.to_regclass($1) AND (c.relname = $3 OR i.indkey[0] = "
        "  (SELECT attnum FROM pg_catalog.pg_attribute WHERE attrelid = i.indrelid AND attname = $2)) "
        "HAVING count(*) > 0", 3, params, ok);
}

/* "t"/"f" (validated) for a constraint of `contype` on table, by name. */
static char *con_by_name(mig_ctx *m, const char *qtable, const char *name, bool *ok)
{
    const char *params[] = {qtable, name};
    return cat_value(m,
        "SELECT convalidated FROM pg_catalog.pg_constraint "
        "WHERE conrelid = pg_catalog.to_regclass($1) AND conname = $2", 2, params, ok);
}

/* A foreign key from table(cols) to ref(refcols), whatever its name:
 * "t:<name>" validated, "f:<name>" not yet, NULL none. cols and refcols
 * are comma-separated column names in key order. */
static char *fk_by_columns(mig_ctx *m, const char *qtable, const char *cols, const char *qref,
                           const char *refcols, bool *ok)
{
    const char *params[] = {qtable, cols, qref, refcols};
    return cat_value(m,
        "SELECT CASE WHEN c.convalidated THEN 't:' ELSE 'f:' END || c.conname "
        "FROM pg_catalog.pg_constraint c "
        "WHERE c.contype = 'f' AND c.conrelid = pg_catalog.to_regclass($1) "
        "  AND c.confrelid = pg_catalog.to_regclass($3) "
        "  AND c.conkey = ARRAY(SELECT a.attnum FROM unnest(string_to_array($2, ',')) WITH ORDINALITY k(n, o) "
        "        JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attname = k.n ORDER BY k.o) "
        "  AND c.confkey = ARRAY(SELECT a.attnum FROM unnest(string_to_array($4, ',')) WITH ORDINALITY k(n, o) "
        "        JOIN pg_catalog.pg_attribute a ON a.attrelid = c.confrelid AND a.attname = k.n ORDER BY k.o) "
        "ORDER BY c.convalidated DESC LIMIT 1", 4, params, ok);
}

/* A unique index or constraint on exactly {a, b} of table: "constraint",
 * "index:<name>" (a valid unique index, not yet a constraint), or NULL. */
static char *unique_pair(mig_ctx *m, const char *qtable, const char *a, const char *b, bool *ok)
{
    const char *params[] = {qtable, a, b};
    return cat_value(m,
        "WITH cols AS (SELECT array_agg(attnum ORDER BY attnum) AS k FROM pg_catalog.pg_attribute "
        "              WHERE attrelid = pg_catalog.to_regclass($1) AND attname IN ($2, $3)) "
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_constraint c, cols "
        "                 WHERE c.conrelid = pg_catalog.to_regclass($1) AND c.contype IN ('u', 'p') "
        "                   AND ARRAY(SELECT unnest(c.conkey) ORDER BY 1) = cols.k) THEN 'constraint' "
        "            ELSE 'index:' || (SELECT ic.relname FROM pg_catalog.pg_index i "
        "                 JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid, cols "
        "                 WHERE i.indrelid = pg_catalog.to_regclass($1) AND i.indisunique "
        "                   AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL "
        "                   AND i.indnkeyatts = 2 "
        "                   AND ARRAY(SELECT unnest(i.indkey::int2[]) ORDER BY 1) = cols.k LIMIT 1) END",
        3, params, ok);
}

/* ---------------------------------------------------------------- steps */

static void report(mig_ctx *m, const char *what, const char *sql, tg_migrate_step_state st,
                   double secs, int attempts)
{
    tg_migrate_step s = {.what = what, .sql = sql, .state = st, .seconds = secs,
                         .attempts = attempts};
    if (m->fn)
        m->fn(&s, m->arg);
}

/* Run (or, dry, report) one statement. */
static bool run_sql(mig_ctx *m, const char *what, const char *sql)
{
    if (m->dry) {
        report(m, what, sql, TG_MIG_STEP_PLANNED, 0, 0);
        return true;
    }
    double t0 = bf_now();
    bf_err err;
    PGresult *r = bf_exec_retry(m->c, &m->rt, sql, 0, NULL, &err);
    if (!r)
        return failf(m, "%s failed: %s [%s]%s", what, err.message, err.sqlstate,
                     bf_err_transient(&err) ? "; the table stayed locked by other sessions "
                     "through every retry: run again at a quieter time or raise --lock-timeout"
                     : "");
    PQclear(r);
    report(m, what, sql, TG_MIG_STEP_DONE, bf_now() - t0, 1);
    return true;
}

static bool step(mig_ctx *m, bool exists, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static bool step(mig_ctx *m, bool exists, const char *what, const char *fmt, ...)
{
    char sql[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    if (exists) {
        report(m, what, sql, TG_MIG_STEP_EXISTS, 0, 0);
        return true;
    }
    return run_sql(m, what, sql);
}

/* lock_timeout of the session; 0 = wait as long as it takes. */
static bool set_lock_timeout(mig_ctx *m, int ms)
{
    char sql[64];
    bf_err err;
    snprintf(sql, sizeof(sql), "SET lock_timeout = %d", ms);
    PGresult *r = bf_exec(m->c, sql, 0, NULL, &err);
    if (!r)
        return failf(m, "%s failed: %s", sql, err.message);
    PQclear(r);
    return true;
}

/*
 * CREATE [UNIQUE] INDEX CONCURRENTLY. Such a build (and DROP INDEX
 * CONCURRENTLY) waits for the transactions that write the table to end,
 * but holds only SHARE UPDATE EXCLUSIVE: the application's reads and
 * writes never wait for it. So these two run without lock_timeout -- a
 * timeout would only abandon the build halfway. A build that failed
 * anyway (cancelled, crashed) leaves an INVALID index behind, which is
 * dropped, concurrently, before the next attempt.
 */
static bool index_step(mig_ctx *m, const char *state, const char *what, const char *schema,
                       const char *name, const char *create_sql)
{
    char drop[512], qname[BF_QNAME_MAX];
    bf_qualify(schema, name, qname, sizeof(qname));   /* an index lives in its table's schema */
    if (state && strcmp(state, "valid") == 0)
        return step(m, true, what, "%s", create_sql);
    if (m->dry) {
        if (state)
            report(m, "drop the invalid index left by a failed build", "DROP INDEX CONCURRENTLY "
                   "IF EXISTS ...", TG_MIG_STEP_PLANNED, 0, 0);
        return step(m, false, what, "%s", create_sql);
    }
    double t0 = bf_now();
    bf_err err;
    if (!set_lock_timeout(m, 0))
        return false;
    bool ok = true;
    for (int attempt = 1; ok; attempt++) {
        if (state || attempt > 1) {
            snprintf(drop, sizeof(drop), "DROP INDEX CONCURRENTLY IF EXISTS %s", qname);
            PGresult *d = bf_exec_retry(m->c, &m->rt, drop, 0, NULL, &err);
            if (!d) {
                ok = failf(m, "dropping the invalid index %s failed: %s", name, err.message);
                break;
            }
            PQclear(d);
        }
        PGresult *r = bf_exec(m->c, create_sql, 0, NULL, &err);
        if (r) {
            PQclear(r);
            report(m, what, create_sql, TG_MIG_STEP_DONE, bf_now() - t0, attempt);
            break;
        }
        if (!bf_err_transient(&err) || attempt > m->rt.retries) {   /* e.g. a deadlock */
            ok = failf(m, "%s failed: %s [%s]", what, err.message, err.sqlstate);
            break;
        }
        if (m->rt.fn) {
            tg_bf_event ev = {.type = TG_BF_EV_RETRY, .attempt = attempt,
                              .reason = bf_reason_code(&err), .message = err.message};
            m->rt.fn(&ev, m->rt.arg);
        }
        bf_sleep_ms(200 * attempt, NULL);
    }
    return set_lock_timeout(m, m->o->lock_timeout_ms) && ok;
}

/* ---------------------------------------------------------------- phase 1 */

static bool phase1_table(mig_ctx *m, const tg_table *t)
{
    bool ok = true;
    char q[BF_QNAME_MAX], w[BF_IDENT_MAX], what[512], idx[80], qidx[BF_IDENT_MAX];
    bf_qualify(t->schema, t->name, q, sizeof(q));
    bf_quote_ident(t->workspace_col, w, sizeof(w));
    char *nn = col_notnull(m, q, t->workspace_col, &ok);
    if (!ok)
        return false;
    snprintf(what, sizeof(what), "add column %s to %s.%s", t->workspace_col, t->schema, t->name);
    ok = step(m, nn != NULL, what, "ALTER TABLE %s ADD COLUMN IF NOT EXISTS %s %s", q, w,
              m->ws_type);
    free(nn);
    obj_name(idx, sizeof(idx), t->name, t->workspace_col, NULL, "index");
    bf_quote_ident(idx, qidx, sizeof(qidx));
    /* Without the column (dry run) there is no index to look for. */
    char *state = ok ? col_index(m, q, t->workspace_col, idx, &ok) : NULL;
    if (!ok)
        return false;
    char create[1024];
    snprintf(create, sizeof(create), "CREATE INDEX CONCURRENTLY %s ON %s (%s)", qidx, q, w);
    snprintf(what, sizeof(what), "index %s.%s (%s)", t->schema, t->name, t->workspace_col);
    ok = index_step(m, state, what, t->schema, idx, create);
    free(state);
    return ok;
}

static bool phase1_tenants(mig_ctx *m)
{
    const tg_policy *p = m->o->policy;
    bool ok = true;
    char q[BF_QNAME_MAX], id[BF_IDENT_MAX], w[BF_IDENT_MAX], name[80], qn[BF_IDENT_MAX];
    char what[512], create[1024];
    bf_qualify(p->tenant_schema, p->tenant_table, q, sizeof(q));
    bf_quote_ident(p->tenant_id_col, id, sizeof(id));
    bf_quote_ident(p->tenant_ws_col, w, sizeof(w));
    obj_name(name, sizeof(name), p->tenant_table, p->tenant_id_col, p->tenant_ws_col, "unique");
    bf_quote_ident(name, qn, sizeof(qn));
    char *u = unique_pair(m, q, p->tenant_id_col, p->tenant_ws_col, &ok);
    if (!ok)
        return false;
    snprintf(what, sizeof(what), "unique index %s.%s (%s, %s)", p->tenant_schema, p->tenant_table,
             p->tenant_id_col, p->tenant_ws_col);
    snprintf(create, sizeof(create), "CREATE UNIQUE INDEX CONCURRENTLY %s ON %s (%s, %s)", qn, q,
             id, w);
    char *idx_state = NULL;
    if (!u) {   /* maybe our own index, left invalid */
        idx_state = col_index(m, q, "-", name, &ok);
        if (!ok)
            return false;
        if (idx_state && strcmp(idx_state, "valid") == 0) {
            free(idx_state);
            idx_state = strdup("invalid");   /* valid but not unique on the pair: rebuild */
        }
    }
    ok = index_step(m, u != NULL ? "valid" : idx_state, what, p->tenant_schema, name, create);
    free(idx_state);
    if (ok) {
        /* Attach the index as a UNIQUE constraint (what a composite foreign
         * key refers to); a catalog change only. */
        const char *iname = u && strncmp(u, "index:", 6) == 0 ? u + 6 : name;
        char qi[BF_IDENT_MAX];
        bf_quote_ident(iname, qi, sizeof(qi));
        snprintf(what, sizeof(what), "unique constraint %s.%s (%s, %s)", p->tenant_schema,
                 p->tenant_table, p->tenant_id_col, p->tenant_ws_col);
        ok = step(m, u && strcmp(u, "constraint") == 0, what,
                  "ALTER TABLE %s ADD CONSTRAINT %s UNIQUE USING INDEX %s", q, qi, qi);
    }
    free(u);
    return ok;
}

static bool phase1_helpers(mig_ctx *m)
{
    const tg_policy *p = m->o->policy;
    char want[64], fn[BF_QNAME_MAX], sql[BF_QNAME_MAX + 64];
    bool ok = true;
    tg_helpers_version_string(p, want, sizeof(want));
    bf_qualify(p->helper_schema, "helpers_version", fn, sizeof(fn));
    char sig[BF_QNAME_MAX + 8];  /* fn + "()" */
    snprintf(sig, sizeof(sig), "%s()", fn);
    const char *params[] = {sig};
    char *exists = cat_value(m, "SELECT pg_catalog.to_regprocedure($1) IS NOT NULL", 1, params, &ok);
    if (!ok)
        return false;
    char *have = NULL;
    snprintf(sql, sizeof(sql), "SELECT %s()", fn);
    if (exists && strcmp(exists, "t") == 0)
        have = cat_value(m, sql, 0, NULL, &ok);
    free(exists);
    char *script = tg_helpers_sql_render(p);
    if (!ok || !script) {
        free(have);
        free(script);
        return ok ? failf(m, "out of memory") : false;
    }
    char what[256];
    snprintf(what, sizeof(what), "install tenantguard's SQL objects in schema %s (version %s)",
             p->helper_schema, want);
    bool current = have && strcmp(have, want) == 0;
    free(have);
    if (current || m->dry) {
        report(m, what, script, current ? TG_MIG_STEP_EXISTS : TG_MIG_STEP_PLANNED, 0, 0);
        free(script);
        return true;
    }
    double t0 = bf_now();
    bf_err err;
    ok = bf_exec_script(m->c, script, &err);
    if (!ok) {
        free(script);
        return failf(m, "%s failed: %s [%s]", what, err.message, err.sqlstate);
    }
    have = cat_value(m, sql, 0, NULL, &ok);
    if (ok && (!have || strcmp(have, want) != 0))
        ok = failf(m, "after installing, %s() returns \"%s\", expected \"%s\"", fn,
                   have ? have : "(nothing)", want);
    if (ok)
        report(m, what, script, TG_MIG_STEP_DONE, bf_now() - t0, 1);
    free(have);
    free(script);
    return ok;
}

/* ---------------------------------------------------------------- phase 3 */

static bool check_step(mig_ctx *m, const char *q, const char *tname, const char *name,
                       const char *expr, const char *label)
{
    bool ok = true;
    char qn[BF_IDENT_MAX], what[512];
    bf_quote_ident(name, qn, sizeof(qn));
    char *v = con_by_name(m, q, name, &ok);
    if (!ok)
        return false;
    snprintf(what, sizeof(what), "%s on %s: add NOT VALID", label, tname);
    ok = step(m, v != NULL, what, "ALTER TABLE %s ADD CONSTRAINT %s CHECK (%s) NOT VALID", q, qn,
              expr);
    snprintf(what, sizeof(what), "%s on %s: validate", label, tname);
    if (ok)
        ok = step(m, v && strcmp(v, "t") == 0, what, "ALTER TABLE %s VALIDATE CONSTRAINT %s", q, qn);
    free(v);
    return ok;
}

static bool fk_step(mig_ctx *m, const char *q, const char *tname, const char *cols_csv,
                    const char *cols_sql, const char *qref, const char *refcols_csv,
                    const char *refcols_sql, const char *name, const char *label)
{
    bool ok = true;
    char qn[BF_IDENT_MAX], what[512];
    char *v = fk_by_columns(m, q, cols_csv, qref, refcols_csv, &ok);
    if (!ok)
        return false;
    bf_quote_ident(v ? v + 2 : name, qn, sizeof(qn));
    snprintf(what, sizeof(what), "%s on %s: add NOT VALID", label, tname);
    ok = step(m, v != NULL, what, "ALTER TABLE %s ADD CONSTRAINT %s FOREIGN KEY (%s) "
              "REFERENCES %s (%s) NOT VALID", q, qn, cols_sql, qref, refcols_sql);
    snprintf(what, sizeof(what), "%s on %s: validate", label, tname);
    if (ok)
        ok = step(m, v && v[0] == 't', what, "ALTER TABLE %s VALIDATE CONSTRAINT %s", q, qn);
    free(v);
    return ok;
}

static bool phase3_not_null(mig_ctx *m, const tg_table *t, const char *q, const char *tname)
{
    bool ok = true;
    char w[BF_IDENT_MAX], name[80], qn[BF_IDENT_MAX], expr[200], what[512];
    bf_quote_ident(t->workspace_col, w, sizeof(w));
    obj_name(name, sizeof(name), t->name, t->workspace_col, NULL, "not_null");
    bf_quote_ident(name, qn, sizeof(qn));
    char *nn = col_notnull(m, q, t->workspace_col, &ok);
    char *chk = ok ? con_by_name(m, q, name, &ok) : NULL;
    if (!ok)
        return false;
    bool done = nn && strcmp(nn, "t") == 0;
    free(nn);
    snprintf(expr, sizeof(expr), "%s IS NOT NULL", w);
    if (!done)
        ok = check_step(m, q, tname, name, expr, "NOT NULL check");
    snprintf(what, sizeof(what), "NOT NULL on %s.%s (no scan: the valid check proves it)", tname,
             t->workspace_col);
    if (ok)
        ok = step(m, done, what, "ALTER TABLE %s ALTER COLUMN %s SET NOT NULL", q, w);
    snprintf(what, sizeof(what), "drop the NOT NULL check on %s, now redundant", tname);
    if (ok && (!done || chk))
        ok = step(m, false, what, "ALTER TABLE %s DROP CONSTRAINT IF EXISTS %s", q, qn);
    free(chk);
    return ok;
}

static bool phase3_table(mig_ctx *m, const tg_table *t)
{
    const tg_policy *p = m->o->policy;
    char q[BF_QNAME_MAX], tname[BF_QNAME_MAX], w[BF_IDENT_MAX], tc[BF_IDENT_MAX];
    char tq[BF_QNAME_MAX], tid[BF_IDENT_MAX], tws[BF_IDENT_MAX], name[80], cols[300], refs[300];
    char csv[200], refcsv[200];
    bf_qualify(t->schema, t->name, q, sizeof(q));
    snprintf(tname, sizeof(tname), "%s.%s", t->schema, t->name);
    bf_quote_ident(t->workspace_col, w, sizeof(w));
    bf_quote_ident(t->tenant_col, tc, sizeof(tc));
    bf_qualify(p->tenant_schema, p->tenant_table, tq, sizeof(tq));
    bf_quote_ident(p->tenant_id_col, tid, sizeof(tid));
    bf_quote_ident(p->tenant_ws_col, tws, sizeof(tws));

    bool ok;
    if (t->kind == TG_TABLE_AUDIT) {
        char expr[300];
        snprintf(expr, sizeof(expr), "%s IS NULL OR %s IS NOT NULL", tc, w);
        obj_name(name, sizeof(name), t->name, t->tenant_col, t->workspace_col, "check");
        ok = check_step(m, q, tname, name, expr, "audit scope check");
    } else {
        ok = phase3_not_null(m, t, q, tname);
    }
    obj_name(name, sizeof(name), t->name, t->workspace_col, NULL, "foreign");
    if (ok)
        ok = fk_step(m, q, tname, t->workspace_col, w, m->wsp_table, m->wsp_id_raw, m->wsp_id,
                     name, "foreign key to the workspaces");
    if (!ok || t->kind == TG_TABLE_AUDIT)
        return ok;
    obj_name(name, sizeof(name), t->name, t->tenant_col, t->workspace_col, "foreign");
    snprintf(cols, sizeof(cols), "%s, %s", tc, w);
    snprintf(refs, sizeof(refs), "%s, %s", tid, tws);
    snprintf(csv, sizeof(csv), "%s,%s", t->tenant_col, t->workspace_col);
    snprintf(refcsv, sizeof(refcsv), "%s,%s", p->tenant_id_col, p->tenant_ws_col);
    return fk_step(m, q, tname, csv, cols, tq, refcsv, refs, name,
                   "composite foreign key to the tenant's workspace");
}

/* ---------------------------------------------------------------- the call */

/* The type of tenants' workspace column (phase 1's new columns take it)
 * and the table it references (phase 3's foreign keys point there). */
static bool read_tenants(mig_ctx *m)
{
    const tg_policy *p = m->o->policy;
    char q[BF_QNAME_MAX];
    bool ok = true;
    bf_qualify(p->tenant_schema, p->tenant_table, q, sizeof(q));
    const char *params[] = {q, p->tenant_ws_col};
    char *type = cat_value(m,
        "SELECT pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute "
        "WHERE attrelid = pg_catalog.to_regclass($1) AND attname = $2 AND NOT attisdropped",
        2, params, &ok);
    if (!ok)
        return false;
    if (!type)
        return failf(m, "%s.%s has no column %s (tenant_table / tenant_workspace_column in the "
                     "config): tenants need their workspace before anything can be bound to it",
                     p->tenant_schema, p->tenant_table, p->tenant_ws_col);
    snprintf(m->ws_type, sizeof(m->ws_type), "%s", type);
    free(type);
    bf_err err;
    PGresult *r = bf_exec(m->c,
        "SELECT n.nspname, c.relname, a.attname FROM pg_catalog.pg_constraint k "
        "JOIN pg_catalog.pg_class c ON c.oid = k.confrelid "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = k.confkey[1] "
        "WHERE k.contype = 'f' AND k.conrelid = pg_catalog.to_regclass($1) "
        "  AND k.conkey = ARRAY[(SELECT attnum FROM pg_catalog.pg_attribute "
        "                        WHERE attrelid = k.conrelid AND attname = $2)] LIMIT 1",
        2, params, &err);
    if (!r)
        return failf(m, "reading the catalog failed: %s", err.message);
    if (PQntuples(r) == 1) {
        bf_qualify(PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), m->wsp_table, sizeof(m->wsp_table));
        bf_quote_ident(PQgetvalue(r, 0, 2), m->wsp_id, sizeof(m->wsp_id));
        snprintf(m->wsp_id_raw, sizeof(m->wsp_id_raw), "%s", PQgetvalue(r, 0, 2));
    }
    PQclear(r);
    return true;
}

static tg_bf_status phase3_precheck(mig_ctx *m)
{
    const tg_policy *p = m->o->policy;
    if (!m->wsp_table[0]) {
        failf(m, "%s.%s.%s references no table: phase 3's foreign keys point to the table it "
              "references; add that foreign key first", p->tenant_schema, p->tenant_table,
              p->tenant_ws_col);
        return TG_BF_ERROR;
    }
    bool ok = true;
    char q[BF_QNAME_MAX];
    bf_qualify(p->tenant_schema, p->tenant_table, q, sizeof(q));
    char *u = unique_pair(m, q, p->tenant_id_col, p->tenant_ws_col, &ok);
    bool have = u && strcmp(u, "constraint") == 0;
    free(u);
    if (!ok)
        return TG_BF_ERROR;
    if (!have) {
        failf(m, "refused: %s.%s has no UNIQUE (%s, %s) for the composite foreign keys: run "
              "`tenantguard migrate --phase 1` first", p->tenant_schema, p->tenant_table,
              p->tenant_id_col, p->tenant_ws_col);
        return TG_BF_REFUSED;
    }
    tg_validate_row *rows;
    int n;
    char why[512];
    tg_bf_status st = bf_validate_conn(m->c, p, &rows, &n, why, sizeof(why));
    if (st == TG_BF_REFUSED) {
        size_t k = (size_t)snprintf(m->msg, m->msglen, "refused: rows are still unbound (");
        for (int i = 0, first = 1; i < n && k < m->msglen; i++) {
            if (rows[i].missing <= 0 && rows[i].mismatched <= 0)
                continue;
            k += (size_t)snprintf(m->msg + k, m->msglen - k, "%s%s: %" PRId64 " missing",
                                  first ? "" : ", ", rows[i].name, rows[i].missing);
            if (rows[i].mismatched > 0 && k < m->msglen)
                k += (size_t)snprintf(m->msg + k, m->msglen - k, ", %" PRId64 " mismatched",
                                      rows[i].mismatched);
            first = 0;
        }
        if (k < m->msglen)
            snprintf(m->msg + k, m->msglen - k, "); run `tenantguard backfill` and "
                     "`tenantguard validate` until every count is 0, then phase 3");
    } else if (st != TG_BF_OK) {
        snprintf(m->msg, m->msglen, "%s", why);
    }
    free(rows);
    return st;
}

static tg_bf_status run_phase(mig_ctx *m)
{
    const tg_policy *p = m->o->policy;
    if (!read_tenants(m))
        return TG_BF_ERROR;
    tg_bf_status pre = TG_BF_OK;
    if (m->o->phase == 3) {
        pre = phase3_precheck(m);
        if (pre == TG_BF_ERROR || (pre == TG_BF_REFUSED && !m->dry))
            return pre;
    }
    for (int i = 0; i < p->n_tables; i++) {
        bool ok = m->o->phase == 1 ? phase1_table(m, &p->tables[i]) : phase3_table(m, &p->tables[i]);
        if (!ok)
            return TG_BF_ERROR;
    }
    if (m->o->phase == 1 && (!phase1_tenants(m) || !phase1_helpers(m)))
        return TG_BF_ERROR;
    return pre;   /* dry phase 3: the steps are listed, the refusal still stands */
}

tg_bf_status tg_migrate_run(const tg_migrate_options *o, tg_migrate_step_fn fn,
                            tg_bf_event_fn retry_fn, void *arg, char *msg, size_t msglen)
{
    mig_ctx m = {.o = o, .fn = fn, .arg = arg, .msg = msg, .msglen = msglen, .dry = o->dry_run};
    m.rt = (bf_retry){.retries = o->retries, .fn = retry_fn, .arg = arg};
    msg[0] = '\0';
    if (o->phase != 1 && o->phase != 3) {
        snprintf(msg, msglen, "phase must be 1 or 3 (phase 2 is `tenantguard backfill`)");
        return TG_BF_ERROR;
    }
    bf_err err;
    m.c = bf_connect(o->conninfo, "tenantguard migrate", o->lock_timeout_ms, &err);
    if (!m.c) {
        char where[512];
        bf_conninfo_mask(o->conninfo, where, sizeof(where));
        snprintf(msg, msglen, "cannot connect to PostgreSQL (%s): %s", where, err.message);
        return TG_BF_ERROR;
    }
    if (retry_fn) {
        char who[512];
        bf_conn_describe(m.c, who, sizeof(who));
        tg_bf_event ev = {.type = TG_BF_EV_CONNECTED, .message = who};
        retry_fn(&ev, arg);
    }
    /* One rollout command at a time: the backfill's lock, in this session. */
    bf_holder h;
    tg_bf_status st;
    int got = m.dry ? 1 : bf_lock_try(m.c, &h, &err);
    if (got < 0) {
        snprintf(msg, msglen, "cannot take the advisory lock: %s", err.message);
        st = TG_BF_ERROR;
    } else if (got == 0) {
        bf_lock_refusal(&h, msg, msglen);
        st = TG_BF_REFUSED;
    } else {
        st = run_phase(&m);
    }
    PQfinish(m.c);
    return st;
}
