/*
 * bf_runs.c -- operation_runs and audit_logs for a backfill (seeds 003, 004).
 *
 * One run per workspace in scope and run identity. The identity is
 * sha256(jsonb {type, workspace_id, tables}) in hex, tables being the
 * selected tables' names sorted; an active run (queued or running) with the
 * same identity is reused, never duplicated.
 *
 * Every transition is ONE statement, so it is atomic with its audit entry:
 *
 *   ensure   create as queued, or reuse the active run       (no audit)
 *   start    queued -> running, started_at, "started" entry  (exactly once);
 *            every run of the call, queued or reused running,
 *            gets context.runner: this process           (bf_runs_start)
 *   batch    rows bound + table_progress + summary_counts    (bf_batch_sql;
 *            jsonb_set on its own paths: other keys stay)
 *   finish   running -> completed, outcome, completed_at,
 *            "completed" or "failed" entry                   (exactly once)
 *   pause /  context.paused + paused_at/_by (resumed_at/_by),
 *   resume   "paused" ("resumed") entry   (once per event, by the caller:
 *            tg_bf_record_pause; a batch keeps those context keys)
 *   take     a run left paused (its call killed while paused) is
 *   over     resumed by the next call before its first batch: the resume
 *            statement, by the new call's actor          (bf_runs_take_over)
 *
 * A process killed between any two of them leaves a state the next start
 * continues from: a queued run is started (its entry written then), a
 * running run keeps its started entry and its counts, a completed run is
 * never touched again. The `status = ...` guards make a repeated transition
 * a no-op, so no entry is ever written twice.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "backfill/bf_internal.h"

void bf_identity_sql(const char *ws_expr, const char *tables_param, char *buf, size_t len)
{
    snprintf(buf, len,
             "pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(pg_catalog.jsonb_build_object("
             "'type', '" TG_BF_RUN_TYPE "'::text, 'workspace_id', (%s)::bigint, "
             "'tables', (%s)::jsonb)::text, 'UTF8')), 'hex')",
             ws_expr, tables_param);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

char *bf_runs_tables_json(const bf_plan *p)
{
    const char **names = calloc((size_t)p->n_tbl + 1, sizeof(*names));
    json_t *arr = json_array();
    if (!names || !arr) {
        free(names);
        json_decref(arr);
        return NULL;
    }
    for (int i = 0; i < p->n_tbl; i++)
        names[i] = p->tbl[i].st.name;
    qsort(names, (size_t)p->n_tbl, sizeof(*names), cmp_str);
    for (int i = 0; i < p->n_tbl; i++)
        json_array_append_new(arr, json_string(names[i]));
    char *s = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    free(names);
    return s;
}

/* ---------------------------------------------------------------- ensure */

/* The workspaces in scope: those that own a tenant, and those with an
 * active run of this identity (a tenant may have moved since). */
static int64_t *scope_workspaces(PGconn *c, const bf_retry *rt, const bf_plan *p,
                                 const char *tables, int *n, bf_err *err)
{
    char hash[768], sql[2048];
    bf_identity_sql("r.workspace_id", "$2", hash, sizeof(hash));
    snprintf(sql, sizeof(sql),
             "SELECT %s FROM %s WHERE %s IS NOT NULL "
             "UNION SELECT r.workspace_id FROM %s r WHERE r.type = $1 "
             "  AND r.status IN ('queued', 'running') AND r.run_identity_hash = %s "
             "ORDER BY 1",
             p->nm.tws, p->nm.tenants, p->nm.tws, p->nm.runs, hash);
    const char *params[] = {TG_BF_RUN_TYPE, tables};
    PGresult *r = bf_exec_retry(c, rt, sql, 2, params, err);
    if (!r)
        return NULL;
    *n = PQntuples(r);
    int64_t *ws = calloc((size_t)*n + 1, sizeof(*ws));
    for (int i = 0; ws && i < *n; i++)
        ws[i] = bf_int64(r, i, 0);
    PQclear(r);
    if (!ws)
        snprintf(err->message, sizeof(err->message), "out of memory");
    return ws;
}

static const bf_load *find_load(const bf_plan *p, int64_t ws)
{
    int lo = 0, hi = p->n_load - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (p->load[mid].ws == ws)
            return &p->load[mid];
        if (p->load[mid].ws < ws)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

/* The context and summary_counts of a new run (seed 003's shape). */
static json_t *new_run_json(const tg_bf_options *o, const bf_plan *p, int64_t ws,
                            const char *tables)
{
    const bf_load *l = find_load(p, ws);
    int64_t resume = o->resume_from > 0 ? o->resume_from : 0, total = 0;
    json_t *progress = json_object();
    for (int i = 0; i < p->n_tbl; i++) {
        int64_t target = l ? l->missing[i] : 0;
        if (o->max_rows > 0 && target > o->max_rows)
            target = o->max_rows;
        total += target;
        json_object_set_new(progress, p->tbl[i].st.name,
                            json_pack("{s:I,s:I,s:I}", "target_rows", (json_int_t)target,
                                      "processed", (json_int_t)0, "last_processed_id",
                                      (json_int_t)resume));
    }
    json_t *ctx = json_pack("{s:s,s:I,s:i,s:o,s:I,s:o,s:o}", "source", "tenantguard backfill",
                            "workspace_id", (json_int_t)ws, "batch_size", o->batch_size,
                            "max_rows", o->max_rows > 0 ? json_integer(o->max_rows) : json_null(),
                            "resume_from", (json_int_t)resume, "tables", json_loads(tables, 0, NULL),
                            "table_progress", progress);
    json_t *sc = json_pack("{s:I,s:i,s:i,s:i}", "total", (json_int_t)total, "processed", 0,
                           "succeeded", 0, "failed", 0);
    return json_pack("{s:I,s:o,s:o}", "ws", (json_int_t)ws, "ctx", ctx, "sc", sc);
}

/* Read a run's table_progress back (a reused run continues from it). */
static bool load_progress(bf_run *run, const bf_plan *p, const char *context)
{
    json_t *ctx = json_loads(context, 0, NULL);
    json_t *tp = ctx ? json_object_get(ctx, "table_progress") : NULL;
    run->target = calloc((size_t)p->n_tbl, sizeof(int64_t));
    run->done = calloc((size_t)p->n_tbl, sizeof(int64_t));
    run->last = calloc((size_t)p->n_tbl, sizeof(int64_t));
    if (!run->target || !run->done || !run->last) {
        json_decref(ctx);
        return false;
    }
    for (int i = 0; i < p->n_tbl; i++) {
        json_t *e = json_object_get(tp, p->tbl[i].st.name);
        run->target[i] = json_integer_value(json_object_get(e, "target_rows"));
        run->done[i] = json_integer_value(json_object_get(e, "processed"));
        run->last[i] = json_integer_value(json_object_get(e, "last_processed_id"));
    }
    json_decref(ctx);
    return true;
}

bool bf_runs_ensure(PGconn *c, const bf_retry *rt, const tg_bf_options *o, const bf_plan *p,
                    bf_runs *runs, bf_err *err)
{
    memset(runs, 0, sizeof(*runs));
    char *tables = bf_runs_tables_json(p);
    int n_ws = 0;
    int64_t *ws = tables ? scope_workspaces(c, rt, p, tables, &n_ws, err) : NULL;
    if (!ws) {
        free(tables);
        return false;
    }
    json_t *want = json_array();
    for (int i = 0; i < n_ws; i++)
        json_array_append_new(want, new_run_json(o, p, ws[i], tables));
    char *want_s = json_dumps(want, JSON_COMPACT);
    json_decref(want);
    free(ws);

    char hash[768], sql[4096];
    bf_identity_sql("u.ws", "$2", hash, sizeof(hash));
    snprintf(sql, sizeof(sql),
        "WITH want AS ("
        "  SELECT u.ws, u.ctx, u.sc, %s AS h"
        "  FROM pg_catalog.jsonb_to_recordset($1::jsonb) AS u(ws bigint, ctx jsonb, sc jsonb)), "
        "act AS ("
        "  SELECT DISTINCT ON (r.workspace_id) r.id, r.workspace_id, r.status, r.context"
        "  FROM %s r JOIN want w ON r.workspace_id = w.ws AND r.run_identity_hash = w.h"
        "  WHERE r.type = $3 AND r.status IN ('queued', 'running')"
        "  ORDER BY r.workspace_id, r.id), "
        "ins AS ("
        "  INSERT INTO %s (workspace_id, type, status, run_identity_hash, context,"
        "                  summary_counts, failure_summary)"
        "  SELECT w.ws, $3, 'queued', w.h, w.ctx, w.sc, '[]'::jsonb FROM want w"
        "  WHERE NOT EXISTS (SELECT 1 FROM act WHERE act.workspace_id = w.ws)"
        "  RETURNING id, workspace_id, context), "
        /* A reused run that never started takes the new plan. */
        "ref AS ("
        "  UPDATE %s r SET context = w.ctx, summary_counts = w.sc, updated_at = now()"
        "  FROM act JOIN want w ON w.ws = act.workspace_id"
        "  WHERE r.id = act.id AND act.status = 'queued' RETURNING r.id) "
        "SELECT id, workspace_id, false, 'queued', context::text, false FROM ins "
        "UNION ALL "
        "SELECT a.id, a.workspace_id, true, a.status,"
        "       (CASE WHEN a.status = 'queued' THEN w.ctx ELSE a.context END)::text,"
        "       coalesce(a.context->'paused' = 'true'::jsonb, false)"
        "  FROM act a JOIN want w ON w.ws = a.workspace_id "
        "ORDER BY 2",
        hash, p->nm.runs, p->nm.runs, p->nm.runs);
    const char *params[] = {want_s, tables, TG_BF_RUN_TYPE};
    PGresult *r = want_s ? bf_exec_retry(c, rt, sql, 3, params, err) : NULL;
    free(want_s);
    free(tables);
    if (!r)
        return false;
    runs->n = PQntuples(r);
    runs->r = calloc((size_t)runs->n + 1, sizeof(*runs->r));
    bool ok = runs->r != NULL;
    for (int i = 0; ok && i < runs->n; i++) {
        bf_run *run = &runs->r[i];
        run->id = bf_int64(r, i, 0);
        run->ws = bf_int64(r, i, 1);
        run->reused = strcmp(PQgetvalue(r, i, 2), "t") == 0;
        run->running = strcmp(PQgetvalue(r, i, 3), "running") == 0;
        run->left_paused = strcmp(PQgetvalue(r, i, 5), "t") == 0;
        ok = load_progress(run, p, PQgetvalue(r, i, 4));
    }
    PQclear(r);
    if (!ok)
        snprintf(err->message, sizeof(err->message), "out of memory");
    return ok;
}

/* ---------------------------------------------------------------- start / finish */

/* "{1,2,3}": the ids of the runs, for a bigint[] parameter. */
static char *id_array(const bf_runs *runs, bool only_running)
{
    size_t cap = (size_t)runs->n * 21 + 3, n = 0;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    s[n++] = '{';
    for (int i = 0; i < runs->n; i++) {
        if (only_running && !runs->r[i].running)
            continue;
        n += (size_t)snprintf(s + n, cap - n, "%s%" PRId64, n > 1 ? "," : "", runs->r[i].id);
    }
    s[n++] = '}';
    s[n] = '\0';
    return s;
}

/* A string, or null when it is not UTF-8 (json_string refuses those). */
static json_t *json_text(const char *s)
{
    json_t *v = s ? json_string(s) : NULL;
    return v ? v : json_null();
}

/*
 * context.runner without `since` (the statement adds it from the server's
 * clock, like every other timestamp of the run): this process, which an
 * operator can signal, and the session through which it holds the lock,
 * which a reader matches to the lock's holder (bf_lock_holder on that
 * session reads what every reader reads). self NULL or unknown: no
 * session, so no reader ever takes this runner for the holder.
 */
static char *runner_json(const tg_bf_options *o, const bf_holder *self)
{
    char host[256];
    bool named = gethostname(host, sizeof(host)) == 0;
    host[sizeof(host) - 1] = '\0';       /* POSIX: truncated names may lack it */
    bool known = self && self->known;
    json_t *r = json_object();
    json_object_set_new(r, "program", json_text(o->program ? o->program : "tenantguard backfill"));
    json_object_set_new(r, "pid", json_integer((json_int_t)getpid()));
    json_object_set_new(r, "host", json_text(named && host[0] ? host : NULL));
    json_object_set_new(r, "backend_pid", known ? json_integer(self->pid) : json_null());
    json_object_set_new(r, "backend_start",
                        json_text(known && self->backend_start[0] ? self->backend_start : NULL));
    char *s = r ? json_dumps(r, JSON_COMPACT) : NULL;
    json_decref(r);
    return s;
}

bool bf_runs_start(PGconn *c, const bf_retry *rt, const tg_bf_options *o, const bf_plan *p,
                   const bf_holder *self, bf_runs *runs, bf_err *err)
{
    char sql[4096];
    /* `q` locks the runs and keeps the status each had before: only those
     * that were queued get a started entry, while every one of them gets
     * the runner, so a run taken over names its new process. */
    snprintf(sql, sizeof(sql),
        "WITH q AS ("
        "  SELECT id, status FROM %s"
        "  WHERE id = ANY($1::bigint[]) AND status IN ('queued', 'running') FOR UPDATE), "
        "s AS ("
        "  UPDATE %s r SET status = 'running', started_at = coalesce(r.started_at, now()),"
        "    context = r.context || pg_catalog.jsonb_build_object('runner', $3::jsonb"
        "        || pg_catalog.jsonb_build_object('since', pg_catalog.to_char(now() AT TIME ZONE 'UTC',"
        "                                         'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))),"
        "    updated_at = now()"
        "  FROM q WHERE r.id = q.id"
        "  RETURNING r.id, r.workspace_id, r.context, r.summary_counts, q.status AS was) "
        "INSERT INTO %s (%s, %s, actor, action, status, resource_type, resource_id, context) "
        "SELECT s.workspace_id, NULL, $2, '" TG_BF_ACTION_STARTED "', 'success', 'operation_run',"
        "       s.id::text, pg_catalog.jsonb_build_object("
        "         'operation_run_id', s.id, 'tables', s.context->'tables',"
        "         'planned_rows', (s.summary_counts->>'total')::bigint,"
        "         'batch_size', s.context->'batch_size', 'max_rows', s.context->'max_rows',"
        "         'resume_from', s.context->'resume_from')"
        "  FROM s WHERE s.was = 'queued' RETURNING resource_id",
        p->nm.runs, p->nm.runs, p->nm.audit, p->nm.audit_wcol, p->nm.audit_tcol);
    char *ids = id_array(runs, false);
    char *runner = runner_json(o, self);
    const char *params[] = {ids, o->actor ? o->actor : "tenantguard", runner};
    PGresult *r = ids && runner ? bf_exec_retry(c, rt, sql, 3, params, err) : NULL;
    if (!r && (!ids || !runner))
        snprintf(err->message, sizeof(err->message), "out of memory");
    free(ids);
    free(runner);
    if (!r)
        return false;
    PQclear(r);
    for (int i = 0; i < runs->n; i++)
        runs->r[i].running = true;
    return true;
}

static char *failure_json(const bf_failure *f)
{
    if (!f)
        return strdup("[]");
    json_t *a = json_pack("[{s:s,s:s,s:s}]", "code", f->code, "reason_code", f->reason_code,
                          "message", f->message);
    char *s = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    return s;
}

bool bf_runs_finish(PGconn *c, const bf_retry *rt, const tg_bf_options *o, const bf_plan *p,
                    bf_runs *runs, const bf_failure *failure, tg_bf_event_fn fn, void *arg,
                    bf_err *err)
{
    char sql[4096];
    /* A failed call still closes a run whose planned rows were all bound
     * as succeeded; otherwise the rows left count as failed, and the
     * outcome says whether any were bound. */
    snprintf(sql, sizeof(sql),
        "WITH o AS ("
        "  SELECT r.id, CASE WHEN NOT $2::bool OR s.succ >= s.total THEN 'succeeded'"
        "                    WHEN s.succ > 0 THEN 'partially_succeeded' ELSE 'failed' END AS outcome,"
        "         CASE WHEN NOT $2::bool OR s.succ >= s.total THEN 0"
        "              ELSE s.total - s.succ END AS failed, s.succ"
        "  FROM %s r, LATERAL (SELECT coalesce((r.summary_counts->>'total')::bigint, 0) AS total,"
        "      coalesce((r.summary_counts->>'succeeded')::bigint, 0) AS succ) s"
        "  WHERE r.id = ANY($1::bigint[])), "
        "c AS ("
        "  UPDATE %s r SET status = 'completed', outcome = o.outcome,"
        "    summary_counts = r.summary_counts || pg_catalog.jsonb_build_object("
        "        'failed', o.failed, 'processed', o.succ + o.failed),"
        "    failure_summary = CASE WHEN o.outcome = 'succeeded' THEN r.failure_summary"
        "                           ELSE r.failure_summary || $3::jsonb END,"
        "    completed_at = now(), updated_at = now()"
        "  FROM o WHERE r.id = o.id AND r.status = 'running'"
        "  RETURNING r.id, r.workspace_id, r.outcome, r.context, r.summary_counts,"
        "            r.failure_summary, r.started_at, r.completed_at), "
        "a AS ("
        "  INSERT INTO %s (%s, %s, actor, action, status, resource_type, resource_id, context)"
        "  SELECT c.workspace_id, NULL, $4,"
        "         CASE WHEN c.outcome = 'succeeded' THEN '" TG_BF_ACTION_COMPLETED "'"
        "              ELSE '" TG_BF_ACTION_FAILED "' END,"
        "         CASE WHEN c.outcome = 'succeeded' THEN 'success' ELSE 'failed' END,"
        "         'operation_run', c.id::text,"
        "         pg_catalog.jsonb_build_object('operation_run_id', c.id,"
        "           'tables', c.context->'tables', 'outcome', c.outcome,"
        "           'counts', c.summary_counts,"
        "           'duration_ms', round(extract(epoch FROM c.completed_at"
        "                               - coalesce(c.started_at, c.completed_at)) * 1000)::bigint)"
        "         || CASE WHEN c.outcome = 'succeeded' THEN '{}'::jsonb"
        "                 ELSE pg_catalog.jsonb_build_object('failures', c.failure_summary) END"
        "  FROM c RETURNING 1) "
        "SELECT c.id, c.workspace_id, c.outcome FROM c ORDER BY c.workspace_id",
        p->nm.runs, p->nm.runs, p->nm.audit, p->nm.audit_wcol, p->nm.audit_tcol);
    char *ids = id_array(runs, true);
    char *fj = failure_json(failure);
    const char *params[] = {ids, failure ? "true" : "false", fj, o->actor ? o->actor : "tenantguard"};
    PGresult *r = ids && fj ? bf_exec_retry(c, rt, sql, 4, params, err) : NULL;
    free(ids);
    free(fj);
    if (!r)
        return false;
    for (int i = 0; i < PQntuples(r); i++) {
        if (!fn)
            continue;
        tg_bf_event ev = {.type = TG_BF_EV_RUN_DONE, .run_id = bf_int64(r, i, 0),
                          .workspace_id = bf_int64(r, i, 1), .status = "completed",
                          .outcome = PQgetvalue(r, i, 2)};
        fn(&ev, arg);
    }
    PQclear(r);
    for (int i = 0; i < runs->n; i++)
        runs->r[i].running = false;
    return true;
}

void bf_runs_free(bf_runs *runs)
{
    for (int i = 0; i < runs->n; i++) {
        free(runs->r[i].target);
        free(runs->r[i].done);
        free(runs->r[i].last);
    }
    free(runs->r);
    memset(runs, 0, sizeof(*runs));
}

/* ---------------------------------------------------------------- the batch */

char *bf_batch_sql(const bf_plan *p, int i)
{
    const bf_tbl *t = &p->tbl[i];
    char filter[2 * BF_IDENT_MAX + 64];
    if (t->st.audit)
        snprintf(filter, sizeof(filter), "t.%s IS NULL AND t.%s IS NOT NULL", t->wcol, t->tcol);
    else
        snprintf(filter, sizeof(filter), "t.%s IS NULL", t->wcol);
    char *sql = NULL;
    /*
     * $1 cursor (last id covered), $2 rows at most, $3 workspaces whose runs
     * take rows, $4 their run ids (same order), $5 the table's key in
     * table_progress. `lim` is the id of the $2-th missing row after the
     * cursor: the batch is (cursor, lim], or everything after the cursor
     * when fewer are left. The rows, their runs' processed counts and
     * last_processed_id commit together or not at all.
     */
    int n = asprintf(&sql,
        "WITH lim AS ("
        "  SELECT t.%s AS id FROM %s t WHERE %s AND t.%s > $1::bigint"
        "  ORDER BY t.%s OFFSET $2::int - 1 LIMIT 1), "
        "upd AS ("
        "  UPDATE %s t SET %s = tn.%s FROM %s tn"
        "  WHERE tn.%s = t.%s AND tn.%s = ANY($3::bigint[])"
        "    AND t.%s IS NULL AND t.%s > $1::bigint"
        "    AND t.%s <= coalesce((SELECT id FROM lim), 9223372036854775807)"
        "  RETURNING t.%s AS id, tn.%s AS ws), "
        "agg AS (SELECT ws, count(*) AS n FROM upd GROUP BY ws), "
        "e AS (SELECT coalesce((SELECT id FROM lim), (SELECT max(id) FROM upd), $1::bigint)"
        "             AS batch_end), "
        "prog AS ("
        "  UPDATE %s r SET"
        "    context = pg_catalog.jsonb_set(pg_catalog.jsonb_set(r.context,"
        "        ARRAY['table_progress', $5, 'processed'],"
        "        pg_catalog.to_jsonb(coalesce((r.context #>> ARRAY['table_progress', $5,"
        "                                      'processed'])::bigint, 0) + agg.n)),"
        "        ARRAY['table_progress', $5, 'last_processed_id'], pg_catalog.to_jsonb(e.batch_end)),"
        "    summary_counts = r.summary_counts || pg_catalog.jsonb_build_object("
        "        'processed', coalesce((r.summary_counts->>'processed')::bigint, 0) + agg.n,"
        "        'succeeded', coalesce((r.summary_counts->>'succeeded')::bigint, 0) + agg.n),"
        "    updated_at = now()"
        "  FROM agg JOIN unnest($3::bigint[], $4::bigint[]) AS m(ws, run_id) ON m.ws = agg.ws, e"
        "  WHERE r.id = m.run_id"
        "  RETURNING m.ws, agg.n) "
        "SELECT (SELECT id FROM lim), (SELECT batch_end FROM e),"
        "       coalesce((SELECT array_agg(ws ORDER BY ws) FROM prog), '{}'),"
        "       coalesce((SELECT array_agg(n ORDER BY ws) FROM prog), '{}')",
        t->pk, t->qname, filter, t->pk, t->pk,
        t->qname, t->wcol, p->nm.tws, p->nm.tenants,
        p->nm.tid, t->tcol, p->nm.tws,
        t->wcol, t->pk,
        t->pk,
        t->pk, p->nm.tws,
        p->nm.runs);
    return n < 0 ? NULL : sql;
}

/* ---------------------------------------------------------------- pauses */

/* The statement of a tg_bf_record_pause(): $1 the run ids, $2 who asked,
 * $3 the actor. Pause and resume touch only active runs, so a run closed
 * meanwhile gets no entry; clear touches any run a pause was left on (a
 * cancel closes the runs while paused). The entries go where the started
 * and completed entries go (nm->audit: the policy's audit table, else
 * audit_logs beside the tenants table), so audit_logs tells one story in
 * every configuration. Returns how many parameters it takes. */
static int pause_sql(const bf_names *nm, tg_bf_mark what, char *sql, size_t len)
{
    if (what == TG_BF_MARK_CLEAR) {
        /* Nobody asked for anything: the call ended while paused. */
        snprintf(sql, len,
                 "UPDATE %s SET context = context OPERATOR(pg_catalog.||) "
                 "pg_catalog.jsonb_build_object('paused', false) "
                 "WHERE id OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.int8[]) AND context ? 'paused'",
                 nm->runs);
        return 1;
    }
    const char *w = what == TG_BF_MARK_PAUSED ? "paused" : "resumed";
    snprintf(sql, len,
             "WITH r AS (UPDATE %s SET context = context OPERATOR(pg_catalog.||) "
             "pg_catalog.jsonb_build_object('paused', %s, '%s_at', pg_catalog.now(), "
             "'%s_by', $2::pg_catalog.text), "
             "updated_at = pg_catalog.now() "
             "WHERE id OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.int8[]) "
             "AND status IN ('queued', 'running') "
             "RETURNING id, workspace_id) "
             "INSERT INTO %s (%s, %s, actor, action, status, resource_type, resource_id, context) "
             "SELECT r.workspace_id, NULL, $3, '%s', 'success', "
             "'operation_run', r.id::pg_catalog.text, "
             "pg_catalog.jsonb_build_object('operation_run_id', r.id, 'by', $2::pg_catalog.text) FROM r",
             nm->runs, what == TG_BF_MARK_PAUSED ? "true" : "false", w, w, nm->audit, nm->audit_wcol,
             nm->audit_tcol, what == TG_BF_MARK_PAUSED ? TG_BF_ACTION_PAUSED : TG_BF_ACTION_RESUMED);
    return 3;
}

tg_bf_status tg_bf_record_pause(const tg_bf_options *o, tg_bf_mark what, const int64_t *runs, int n_runs,
                                const char *by, char *msg, size_t msglen)
{
    bf_names nm;
    bf_err err = {"", ""};
    char sql[2048];
    if (!o->policy) {
        snprintf(msg, msglen, "no policy given");
        return TG_BF_ERROR;
    }
    bf_names_init(&nm, o->policy, o->runs_table);
    int nparams = pause_sql(&nm, what, sql, sizeof(sql));
    /* "{1,2,3}": the runs as a bigint[] parameter. */
    size_t cap = (size_t)(n_runs > 0 ? n_runs : 0) * 21 + 3, n = 0;
    char *ids = malloc(cap);
    if (!ids) {
        snprintf(msg, msglen, "out of memory");
        return TG_BF_ERROR;
    }
    ids[n++] = '{';
    for (int i = 0; i < n_runs; i++)
        n += (size_t)snprintf(ids + n, cap - n, "%s%" PRId64, i ? "," : "", runs[i]);
    snprintf(ids + n, cap - n, "}");
    const char *actor = o->actor ? o->actor : "tenantguard";
    const char *params[] = {ids, by ? by : actor, actor};
    bf_retry rt = {.retries = o->retries};
    PGconn *c = bf_connect(o->conninfo, "tenantguard backfill", o->lock_timeout_ms, &err);
    PGresult *r = c ? bf_exec_retry(c, &rt, sql, nparams, params, &err) : NULL;
    tg_bf_status st = r ? TG_BF_OK : TG_BF_ERROR;
    if (!r)
        snprintf(msg, msglen, "%s", err.message);
    PQclear(r);
    if (c)
        PQfinish(c);
    free(ids);
    return st;
}

bool bf_runs_take_over(PGconn *c, const bf_retry *rt, const tg_bf_options *o, const bf_plan *p,
                       const bf_runs *runs, bf_err *err)
{
    int n_left = 0;
    size_t cap = (size_t)runs->n * 21 + 3, n = 0;
    char *ids = malloc(cap);
    if (!ids) {
        snprintf(err->message, sizeof(err->message), "out of memory");
        return false;
    }
    ids[n++] = '{';
    for (int i = 0; i < runs->n; i++) {
        if (!runs->r[i].left_paused)
            continue;
        n += (size_t)snprintf(ids + n, cap - n, "%s%" PRId64, n_left ? "," : "", runs->r[i].id);
        n_left++;
    }
    snprintf(ids + n, cap - n, "}");
    bool ok = true;
    if (n_left > 0) {
        /* Nobody asked: the new call resumes them by taking them over, so
         * it is both who asked and the actor. */
        char sql[2048];
        const char *actor = o->actor ? o->actor : "tenantguard";
        const char *params[] = {ids, actor, actor};
        int nparams = pause_sql(&p->nm, TG_BF_MARK_RESUMED, sql, sizeof(sql));
        PGresult *r = bf_exec_retry(c, rt, sql, nparams, params, err);
        ok = r != NULL;
        PQclear(r);
    }
    free(ids);
    return ok;
}
