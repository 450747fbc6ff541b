/*
 * validate.c -- `validate` (the quickstart's counts, per watched table) and
 * `status` (the latest backfill runs, as JSON).
 *
 * validate counts, per tenant-owned table, the rows without a workspace
 * (the quickstart's statement) and the rows whose workspace is not their
 * tenant's (what phase 3's composite foreign key would reject); for the
 * audit table, the seed's invariant: rows naming a tenant but no workspace.
 * An audit row's workspace is not compared with its tenant's current one:
 * history may predate a tenant's move, and phase 3 puts no composite key
 * on the audit table.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "backfill/bf_internal.h"

static bool count_table(PGconn *c, const tg_policy *p, const tg_table *t, tg_validate_row *row,
                        char *msg, size_t msglen)
{
    char q[BF_QNAME_MAX], tc[BF_IDENT_MAX], wc[BF_IDENT_MAX], tn[BF_QNAME_MAX];
    char tid[BF_IDENT_MAX], tws[BF_IDENT_MAX], sql[2048];
    bf_qualify(t->schema, t->name, q, sizeof(q));
    bf_quote_ident(t->tenant_col, tc, sizeof(tc));
    bf_quote_ident(t->workspace_col, wc, sizeof(wc));
    bf_qualify(p->tenant_schema, p->tenant_table, tn, sizeof(tn));
    bf_quote_ident(p->tenant_id_col, tid, sizeof(tid));
    bf_quote_ident(p->tenant_ws_col, tws, sizeof(tws));
    if (t->kind == TG_TABLE_AUDIT)
        snprintf(sql, sizeof(sql),
                 "SELECT count(*), -1 FROM %s WHERE %s IS NOT NULL AND %s IS NULL", q, tc, wc);
    else
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FILTER (WHERE t.%s IS NULL),"
                 "       count(*) FILTER (WHERE t.%s IS NOT NULL AND t.%s IS DISTINCT FROM tn.%s) "
                 "FROM %s t LEFT JOIN %s tn ON tn.%s = t.%s",
                 wc, wc, wc, tws, q, tn, tid, tc);
    bf_err err;
    PGresult *r = bf_exec(c, sql, 0, NULL, &err);
    if (!r) {
        snprintf(msg, msglen, "counting %s failed: %s", row->name, err.message);
        return false;
    }
    row->missing = bf_int64(r, 0, 0);
    row->mismatched = bf_int64(r, 0, 1);
    PQclear(r);
    return true;
}

tg_bf_status bf_validate_conn(PGconn *c, const tg_policy *p, tg_validate_row **rows, int *n_rows,
                              char *msg, size_t msglen)
{
    tg_validate_row *v = calloc((size_t)p->n_tables + 1, sizeof(*v));
    *rows = v;
    *n_rows = 0;
    if (!v) {
        snprintf(msg, msglen, "out of memory");
        return TG_BF_ERROR;
    }
    tg_bf_status st = TG_BF_OK;
    for (int i = 0; i < p->n_tables; i++) {
        const tg_table *t = &p->tables[i];
        tg_validate_row *row = &v[(*n_rows)++];
        bf_table_key(t, row->name, sizeof(row->name));
        row->audit = t->kind == TG_TABLE_AUDIT;
        tg_bf_validation_sql(t, row->sql, sizeof(row->sql));
        char why[512];
        tg_bf_status cs = bf_check_table(c, t->schema, t->name, t->tenant_col, t->workspace_col,
                                         NULL, 0, why, sizeof(why));
        if (cs != TG_BF_OK) {
            snprintf(msg, msglen, "%s", why);
            return cs;
        }
        if (!count_table(c, p, t, row, msg, msglen))
            return TG_BF_ERROR;
        if (row->missing > 0 || row->mismatched > 0)
            st = TG_BF_REFUSED;
    }
    if (st == TG_BF_REFUSED)
        snprintf(msg, msglen, "some rows are not bound to their tenant's workspace: run "
                 "`tenantguard backfill` (dry run first), then validate again");
    return st;
}

tg_bf_status tg_validate_run(const char *conninfo, const tg_policy *p, tg_validate_row **rows,
                             int *n_rows, char *msg, size_t msglen)
{
    bf_err err;
    *rows = NULL;
    *n_rows = 0;
    PGconn *c = bf_connect(conninfo, "tenantguard validate", 2000, &err);
    if (!c) {
        char where[512];
        bf_conninfo_mask(conninfo, where, sizeof(where));
        snprintf(msg, msglen, "cannot connect to PostgreSQL (%s): %s", where, err.message);
        return TG_BF_ERROR;
    }
    tg_bf_status st = bf_validate_conn(c, p, rows, n_rows, msg, msglen);
    PQfinish(c);
    return st;
}

/* ---------------------------------------------------------------- status */

/* The runner the holder's runs recorded (bf_runs_start), or null. A
 * backend pid alone is reused once its session ends, so a runner left by a
 * dead call could name a later session; (pid, backend_start) is unique.
 * Only a role that cannot see the holder's backend_start matches on the pid
 * alone. jsonb comparisons, so a malformed context matches nothing and
 * never fails the statement. */
static json_t *holder_runner(PGconn *c, const bf_names *nm, const bf_holder *h)
{
    char sql[1024], pid[16];
    snprintf(sql, sizeof(sql),
             "SELECT r.context->'runner' FROM %s r"
             " WHERE r.type = $1 AND r.status IN ('queued', 'running')"
             "   AND r.context #> '{runner,backend_pid}' = pg_catalog.to_jsonb($2::int)"
             "   AND ($3::text = '' OR r.context #>> '{runner,backend_start}' = $3::text)"
             " ORDER BY r.id DESC LIMIT 1", nm->runs);
    snprintf(pid, sizeof(pid), "%d", h->pid);
    const char *params[] = {TG_BF_RUN_TYPE, pid, h->backend_start};
    bf_err err;
    PGresult *r = bf_exec(c, sql, 3, params, &err);
    json_t *runner = r && PQntuples(r) == 1 ? json_loads(PQgetvalue(r, 0, 0), 0, NULL) : NULL;
    PQclear(r);
    return runner ? runner : json_null();
}

static json_t *lock_json(PGconn *c, const bf_names *nm)
{
    bf_holder h;
    bf_err err;
    if (!bf_lock_holder(c, &h, &err) || !h.known)
        return json_null();
    /* `pid` is the name the backend pid had before there was a runner:
     * kept for the scripts that read it. */
    return json_pack("{s:i,s:i,s:s,s:s,s:s,s:o}", "backend_pid", h.pid, "pid", h.pid, "client",
                     h.client, "application", h.application, "since", h.since, "runner",
                     holder_runner(c, nm, &h));
}

/* Per run: what tg_status_json() derives (see backfill.h). Once the
 * holder's runner is known, a run with another runner (or none) is not one
 * of the holder's: bf_runs_start writes the runner of all of a call's runs
 * in one statement. */
static void derive_state(json_t *run, json_t *lock)
{
    const char *s = json_string_value(json_object_get(run, "status"));
    bool active = s && (strcmp(s, "queued") == 0 || strcmp(s, "running") == 0);
    json_t *theirs = json_object_get(lock, "runner");
    bool elsewhere = json_is_object(theirs) && !json_equal(theirs, json_object_get(run, "runner"));
    bool interrupted = active && (json_is_null(lock) || elsewhere);
    bool paused = active && !interrupted && json_is_true(json_object_get(run, "paused"));
    json_object_set_new(run, "interrupted", json_boolean(interrupted));
    json_object_set_new(run, "paused", json_boolean(paused));
    if (!paused) {
        json_object_set_new(run, "paused_at", json_null());
        json_object_set_new(run, "paused_by", json_null());
    }
}

static const char status_sql[] =
    "SELECT coalesce(pg_catalog.json_agg(x ORDER BY x.id DESC), '[]')"
    "  FROM (SELECT r.id, r.workspace_id, r.status, r.outcome,"
    "        r.context->'tables' AS tables, r.context->'table_progress' AS table_progress,"
    "        r.context->'batch_size' AS batch_size, r.context->'max_rows' AS max_rows,"
    "        r.summary_counts, r.failure_summary, r.run_identity_hash,"
    "        coalesce(r.context->'paused' = 'true'::jsonb, false) AS paused,"
    "        r.context->>'paused_at' AS paused_at, r.context->>'paused_by' AS paused_by,"
    "        r.context->'runner' AS runner,"
    "        to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS created_at,"
    "        to_char(r.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS started_at,"
    "        to_char(r.completed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS completed_at,"
    "        round(extract(epoch FROM coalesce(r.completed_at, now()) - r.started_at)::numeric, 3)"
    "          AS duration_seconds"
    "   FROM %s r WHERE r.type = $1 AND (%s)"
    "   ORDER BY r.id DESC LIMIT %d) x";

char *tg_status_json(const char *conninfo, const tg_policy *p, int limit, char *msg, size_t msglen)
{
    bf_err err;
    PGconn *c = bf_connect(conninfo, "tenantguard status", 2000, &err);
    if (!c) {
        char where[512];
        bf_conninfo_mask(conninfo, where, sizeof(where));
        snprintf(msg, msglen, "cannot connect to PostgreSQL (%s): %s", where, err.message);
        return NULL;
    }
    bf_names nm;
    bf_names_init(&nm, p, NULL);
    char where[512], sql[4096];
    if (limit > 0)
        snprintf(where, sizeof(where), "true");
    else  /* active runs, and the runs of the latest call (created together) */
        snprintf(where, sizeof(where),
                 "r.status IN ('queued', 'running') OR r.created_at = "
                 "(SELECT max(created_at) FROM %s WHERE type = $1)", nm.runs);
    snprintf(sql, sizeof(sql), status_sql, nm.runs, where, limit > 0 ? limit : 100000);
    const char *params[] = {TG_BF_RUN_TYPE};
    PGresult *r = bf_exec(c, sql, 1, params, &err);
    char *out = NULL;
    if (!r) {
        snprintf(msg, msglen, "cannot read %s: %s", nm.runs, err.message);
    } else {
        json_t *lock = lock_json(c, &nm);
        json_t *runs = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
        size_t i;
        json_t *run;
        /* A run still active but not driven was interrupted: the next
         * backfill with the same selection resumes it. One whose context
         * says paused is paused only while its call holds the lock (a call
         * killed while paused leaves the flag; the next call clears it). */
        json_array_foreach(runs, i, run)
            derive_state(run, lock);
        json_t *doc = json_pack("{s:o,s:o}", "lock", lock, "runs", runs ? runs : json_array());
        out = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
        json_decref(doc);
        PQclear(r);
        if (!out)
            snprintf(msg, msglen, "out of memory");
    }
    PQfinish(c);
    return out;
}
