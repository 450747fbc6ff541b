/*
 * bf_engine.c -- tg_backfill_run(): lock, plan, runs, keyset batches.
 *
 * Two connections: `lock` holds the session advisory lock for the whole
 * call and does nothing else (it reads how others see it once, for the
 * runs' context.runner, and is pinged before each batch, so a lost lock
 * stops the work); `work` runs everything else, each statement its own
 * short transaction.
 *
 * Per table, one pass in id order over the rows missing their workspace,
 * across all workspaces at once (one scan of the table, not one per
 * workspace). Each batch is ONE statement (bf_batch_sql): it binds the
 * rows and adds their count to the table_progress and summary_counts of
 * the runs of the workspaces they belong to. So a crash at any instant
 * leaves rows and counts consistent, and since only rows whose workspace
 * is still NULL are touched, a row is never bound twice.
 *
 * Where a table resumes: every batch sets last_processed_id (the batch's
 * upper id) of the runs it gave rows to. A run that still has planned rows
 * in the table has all of them above its last_processed_id, so the pass
 * restarts from the lowest such value (or --resume-from). Rows below it
 * are at most scanned again, never updated again.
 */
#include "config.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backfill/bf_internal.h"

typedef struct bf_ctx {
    const tg_bf_options *o;
    tg_bf_control *ctl;
    tg_bf_event_fn fn;
    void *arg;
    tg_bf_result *res;
    PGconn *lock;
    PGconn *work;
    bf_holder self;           /* the lock session as readers see it (context.runner) */
    bf_plan plan;
    bf_runs runs;
    bf_retry rt;
    double t_work;            /* monotonic time of the first batch */
    int64_t planned;          /* sum of the runs' targets */
    int64_t done;             /* sum of the runs' processed */
} bf_ctx;

/* How a table pass ended. */
typedef enum { PASS_DONE, PASS_STOP, PASS_CANCEL, PASS_FAILED, PASS_LOST, PASS_LOCK_LOST } pass_end;

void tg_bf_options_init(tg_bf_options *o)
{
    memset(o, 0, sizeof(*o));
    o->batch_size = 5000;
    o->resume_from = -1;
    o->lock_timeout_ms = 2000;
    o->retries = 10;
}

void tg_bf_result_free(tg_bf_result *r)
{
    free(r->tables);
    r->tables = NULL;
    r->n_tables = 0;
}

static void emit(bf_ctx *cx, const tg_bf_event *ev)
{
    if (cx->fn)
        cx->fn(ev, cx->arg);
}

static tg_bf_status finish(bf_ctx *cx, tg_bf_status st, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static tg_bf_status finish(bf_ctx *cx, tg_bf_status st, const char *reason, const char *fmt, ...)
{
    cx->res->status = st;
    snprintf(cx->res->reason, sizeof(cx->res->reason), "%s", reason);
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cx->res->message, sizeof(cx->res->message), fmt, ap);
        va_end(ap);
    }
    return st;
}

/* Copy the plan's table stats into the result (the caller owns them). */
static void publish_tables(bf_ctx *cx)
{
    tg_bf_result *res = cx->res;
    free(res->tables);
    res->tables = calloc((size_t)cx->plan.n_tbl + 1, sizeof(*res->tables));
    if (!res->tables) {
        res->n_tables = 0;
        return;
    }
    res->n_tables = cx->plan.n_tbl;
    res->rows_left = 0;
    for (int i = 0; i < cx->plan.n_tbl; i++) {
        res->tables[i] = cx->plan.tbl[i].st;
        int64_t left = res->tables[i].missing - res->tables[i].updated;
        res->rows_left += left > 0 ? left : 0;
    }
    res->n_runs = cx->runs.n;
    res->total_planned = cx->planned;
    res->total_done = cx->done;
}

/* ---------------------------------------------------------------- the pass */

static bf_run *run_of(bf_ctx *cx, int64_t ws)
{
    int lo = 0, hi = cx->runs.n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cx->runs.r[mid].ws == ws)
            return &cx->runs.r[mid];
        if (cx->runs.r[mid].ws < ws)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

/* With --max-rows a run takes at most its target per table; without, any
 * missing row of its workspace. Returns the smallest budget left (INT64_MAX
 * when unlimited) and fills the two bigint[] parameters. */
static int64_t eligible(bf_ctx *cx, int ti, char **ws_arr, char **id_arr)
{
    size_t cap = (size_t)cx->runs.n * 21 + 3, nw = 0, ni = 0;
    int64_t min_budget = INT64_MAX;
    char *w = malloc(cap), *d = malloc(cap);
    if (!w || !d) {
        free(w);
        free(d);
        *ws_arr = *id_arr = NULL;
        return -1;
    }
    w[nw++] = '{';
    d[ni++] = '{';
    for (int i = 0; i < cx->runs.n; i++) {
        const bf_run *r = &cx->runs.r[i];
        if (cx->o->max_rows > 0) {
            int64_t budget = r->target[ti] - r->done[ti];
            if (budget <= 0)
                continue;
            if (budget < min_budget)
                min_budget = budget;
        }
        nw += (size_t)snprintf(w + nw, cap - nw, "%s%" PRId64, nw > 1 ? "," : "", r->ws);
        ni += (size_t)snprintf(d + ni, cap - ni, "%s%" PRId64, ni > 1 ? "," : "", r->id);
    }
    memcpy(w + nw, "}", 2);
    memcpy(d + ni, "}", 2);
    *ws_arr = w;
    *id_arr = d;
    return nw > 1 ? min_budget : 0;
}

static int64_t start_cursor(const bf_ctx *cx, int ti)
{
    if (cx->o->resume_from >= 0)
        return cx->o->resume_from;
    int64_t lo = INT64_MAX, hi = 0;
    for (int i = 0; i < cx->runs.n; i++) {
        const bf_run *r = &cx->runs.r[i];
        if (r->done[ti] < r->target[ti] && r->last[ti] < lo)
            lo = r->last[ti];
        if (r->last[ti] > hi)
            hi = r->last[ti];
    }
    return lo != INT64_MAX ? lo : hi;
}

/* Hold while paused; false when asked to stop or cancel instead. */
static pass_end wait_if_paused(bf_ctx *cx)
{
    tg_bf_request req = tg_bf_request_get(cx->ctl);
    if (req == TG_BF_REQ_PAUSE) {
        tg_bf_event ev = {.type = TG_BF_EV_PAUSED};
        emit(cx, &ev);
        while ((req = tg_bf_request_get(cx->ctl)) == TG_BF_REQ_PAUSE)
            bf_sleep_ms(100, cx->ctl);
        if (req == TG_BF_REQ_RUN) {
            ev.type = TG_BF_EV_RESUMED;
            emit(cx, &ev);
        }
    }
    return req == TG_BF_REQ_STOP ? PASS_STOP : req == TG_BF_REQ_CANCEL ? PASS_CANCEL : PASS_DONE;
}

/* The lock is held by the `lock` session: if that session is gone, so is
 * the lock, and another run may start. PASS_DONE while it holds;
 * PASS_LOCK_LOST when only that session died; PASS_LOST when the work
 * connection is gone too (server restart, network). */
static pass_end lock_alive(bf_ctx *cx, bf_err *err)
{
    PGresult *r = bf_exec(cx->lock, "SELECT 1", 0, NULL, err);
    if (r) {
        PQclear(r);
        return PASS_DONE;
    }
    bf_err werr;
    r = bf_exec(cx->work, "SELECT 1", 0, NULL, &werr);
    if (r) {
        PQclear(r);
        return PASS_LOCK_LOST;
    }
    *err = werr;
    return PASS_LOST;
}

/* Apply one batch's result to the local copy of the runs. */
static int64_t account(bf_ctx *cx, int ti, PGresult *r)
{
    /* A batch of n rows touches at most n workspaces. */
    int maxw = cx->o->batch_size + 1;
    int64_t batch_end = bf_int64(r, 0, 1), total = 0;
    int64_t *ws = malloc((size_t)maxw * sizeof(int64_t)), *n = malloc((size_t)maxw * sizeof(int64_t));
    int k = ws && n ? bf_parse_int8_array(PQgetvalue(r, 0, 2), ws, maxw) : 0;
    bf_parse_int8_array(k ? PQgetvalue(r, 0, 3) : "{}", n, maxw);
    for (int i = 0; i < k; i++) {
        bf_run *run = run_of(cx, ws[i]);
        if (run) {
            run->done[ti] += n[i];
            run->last[ti] = batch_end;
        }
        total += n[i];
    }
    free(ws);
    free(n);
    return total;
}

static pass_end table_pass(bf_ctx *cx, int ti, bf_err *err)
{
    bf_tbl *t = &cx->plan.tbl[ti];
    const tg_bf_options *o = cx->o;
    int64_t cursor = start_cursor(cx, ti);
    tg_bf_event ev = {.type = TG_BF_EV_TABLE_START, .table = &t->st, .cursor = cursor};
    emit(cx, &ev);
    char *sql = bf_batch_sql(&cx->plan, ti);
    char *ws_arr = NULL, *id_arr = NULL;
    pass_end end = PASS_DONE;
    double t0 = bf_now();
    cx->rt.table = &t->st;
    /* Nothing resolvable was missing when planned: skip the scan. */
    bool skip = t->st.missing - t->st.unresolvable <= 0;
    while (sql && !skip && (end = wait_if_paused(cx)) == PASS_DONE) {
        free(ws_arr);
        free(id_arr);
        int64_t budget = eligible(cx, ti, &ws_arr, &id_arr);
        if (budget <= 0)
            break;                       /* every run has its rows of this table */
        int64_t n = budget < o->batch_size ? budget : o->batch_size;
        char c_s[24], n_s[24];
        snprintf(c_s, sizeof(c_s), "%" PRId64, cursor);
        snprintf(n_s, sizeof(n_s), "%" PRId64, n);
        const char *params[] = {c_s, n_s, ws_arr, id_arr, t->st.name};
        if ((end = lock_alive(cx, err)) != PASS_DONE)
            break;
        if (cx->t_work == 0)
            cx->t_work = bf_now();
        PGresult *r = bf_exec_retry(cx->work, &cx->rt, sql, 5, params, err);
        if (!r) {
            tg_bf_request req = tg_bf_request_get(cx->ctl);
            end = bf_err_connection(err) ? PASS_LOST
                  : req == TG_BF_REQ_STOP ? PASS_STOP
                  : req == TG_BF_REQ_CANCEL ? PASS_CANCEL : PASS_FAILED;
            break;
        }
        int64_t rows = account(cx, ti, r);
        bool last = PQgetisnull(r, 0, 0);
        if (!last)
            cursor = bf_int64(r, 0, 0);
        PQclear(r);
        t->st.updated += rows;
        cx->done += rows;
        cx->res->rows_this_call += rows;
        t->st.seconds = bf_now() - t0;
        ev = (tg_bf_event){.type = TG_BF_EV_PROGRESS, .table = &t->st, .done_rows = cx->done,
                           .total_rows = cx->planned, .rows_this_call = cx->res->rows_this_call,
                           .elapsed = bf_now() - cx->t_work, .cursor = cursor};
        emit(cx, &ev);
        if (last)
            break;
        if (o->throttle_ms > 0)
            bf_sleep_ms(o->throttle_ms, cx->ctl);
    }
    bool oom = !sql;
    free(ws_arr);
    free(id_arr);
    free(sql);
    t->st.seconds = bf_now() - t0;
    if (oom) {
        snprintf(err->message, sizeof(err->message), "out of memory");
        return PASS_FAILED;
    }
    if (end == PASS_DONE) {
        ev = (tg_bf_event){.type = TG_BF_EV_TABLE_DONE, .table = &t->st, .cursor = cursor};
        emit(cx, &ev);
    }
    return end;
}

/* ---------------------------------------------------------------- the call */

static tg_bf_status refuse_unresolvable(bf_ctx *cx)
{
    char buf[sizeof(cx->res->message)];
    size_t n = 0;
    int64_t total = 0;
    for (int i = 0; i < cx->plan.n_tbl; i++) {
        const tg_bf_table_stats *s = &cx->plan.tbl[i].st;
        if (s->unresolvable == 0)
            continue;
        total += s->unresolvable;
        if (n < sizeof(buf))
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s %" PRId64, n ? ", " : "",
                                  s->name, s->unresolvable);
    }
    if (total == 0)
        return TG_BF_OK;
    return finish(cx, TG_BF_REFUSED, "unresolvable",
                  "%" PRId64 " rows have a tenant without a workspace (%s); nothing was written. "
                  "Give those tenants a workspace (UPDATE %s SET %s = ... WHERE %s IN (...)) or fix "
                  "the rows' tenant, then run again",
                  total, buf, cx->plan.nm.tenants, cx->plan.nm.tws, cx->plan.nm.tid);
}

static void announce_runs(bf_ctx *cx)
{
    cx->planned = cx->done = 0;
    for (int i = 0; i < cx->runs.n; i++) {
        const bf_run *r = &cx->runs.r[i];
        int64_t total = 0;
        for (int t = 0; t < cx->plan.n_tbl; t++) {
            total += r->target[t];
            cx->done += r->done[t];
        }
        cx->planned += total;
        cx->res->n_runs_reused += r->reused;
        tg_bf_event ev = {.type = TG_BF_EV_RUN, .run_id = r->id, .workspace_id = r->ws,
                          .reused = r->reused, .status = r->running ? "running" : "queued",
                          .planned_rows = total};
        emit(cx, &ev);
    }
}

/* Close the runs after a failure or a cancel; the connection must work. */
static tg_bf_status close_failed(bf_ctx *cx, tg_bf_status st, const char *reason,
                                 const bf_failure *f)
{
    bf_err err2;
    if (!bf_runs_finish(cx->work, &cx->rt, cx->o, &cx->plan, &cx->runs, f, cx->fn, cx->arg,
                        &err2))
        return finish(cx, TG_BF_ERROR, reason, "%s; closing the runs failed too (%s): they stay "
                      "active and the next run resumes them", f->message, err2.message);
    return finish(cx, st, reason, "%s", f->message);
}

static tg_bf_status work(bf_ctx *cx)
{
    bf_err err;
    char msg[sizeof(err.message) + BF_QNAME_MAX + 64];
    pass_end end = PASS_DONE;
    int ti;
    for (ti = 0; ti < cx->plan.n_tbl && end == PASS_DONE; ti++)
        end = table_pass(cx, ti, &err);
    const char *tname = cx->plan.tbl[ti > 0 ? ti - 1 : 0].st.name;
    switch (end) {
    case PASS_DONE:
        if (!bf_runs_finish(cx->work, &cx->rt, cx->o, &cx->plan, &cx->runs, NULL, cx->fn,
                            cx->arg, &err))
            return finish(cx, TG_BF_ERROR, "finish_failed", "every row is done but closing the "
                          "runs failed (%s); run again to close them", err.message);
        return finish(cx, TG_BF_OK, "", NULL);
    case PASS_STOP:
        return finish(cx, TG_BF_REFUSED, "interrupted", "interrupted after %" PRId64 " rows; the "
                      "runs stay active: run the same command again to resume", cx->res->rows_this_call);
    case PASS_CANCEL: {
        snprintf(msg, sizeof(msg), "cancelled by the operator after %" PRId64 " rows in this "
                 "call", cx->res->rows_this_call);
        bf_failure f = {"backfill_workspace_ids.cancelled", "cancelled", msg};
        return close_failed(cx, TG_BF_REFUSED, "cancelled", &f);
    }
    case PASS_LOCK_LOST:
        /* Another backfill may hold the lock by now: stop without writing. */
        return finish(cx, TG_BF_ERROR, "lock_lost", "lost the session that held the advisory "
                      "lock (%s) while on %s, so another backfill could start: stopped. Every "
                      "committed batch is recorded and the runs stay active: run the same "
                      "command again to resume", err.message, tname);
    case PASS_LOST:
        return finish(cx, TG_BF_ERROR, "connection_lost", "lost the connection to PostgreSQL "
                      "(%s) while on %s; every committed batch is recorded and the runs stay "
                      "active: run the same command again to resume", err.message, tname);
    case PASS_FAILED:
    default: {
        snprintf(msg, sizeof(msg), "batch on %s failed: %s [%s]", tname, err.message,
                 err.sqlstate);
        bf_failure f = {"backfill_workspace_ids.batch_failed", bf_reason_code(&err), msg};
        return close_failed(cx, TG_BF_ERROR, bf_reason_code(&err), &f);
    }
    }
}

static tg_bf_status connect_all(bf_ctx *cx)
{
    bf_err err;
    char where[512];
    cx->work = bf_connect(cx->o->conninfo, "tenantguard backfill", cx->o->lock_timeout_ms, &err);
    if (!cx->work) {
        bf_conninfo_mask(cx->o->conninfo, where, sizeof(where));
        return finish(cx, TG_BF_ERROR, "connect", "cannot connect to PostgreSQL (%s): %s; check "
                      "--dsn or the PG* environment", where, err.message);
    }
    bf_conn_describe(cx->work, where, sizeof(where));
    tg_bf_event ev = {.type = TG_BF_EV_CONNECTED, .message = where};
    emit(cx, &ev);
    if (cx->o->dry_run)
        return TG_BF_OK;        /* a dry run writes nothing and takes no lock */
    cx->lock = bf_connect(cx->o->conninfo, "tenantguard backfill", cx->o->lock_timeout_ms, &err);
    if (!cx->lock)
        return finish(cx, TG_BF_ERROR, "connect", "cannot open the lock connection: %s",
                      err.message);
    bf_holder h;
    int got = bf_lock_try(cx->lock, &h, &err);
    if (got < 0)
        return finish(cx, TG_BF_ERROR, "lock", "cannot take the advisory lock: %s", err.message);
    if (got == 0) {
        char text[512];
        bf_lock_refusal(&h, text, sizeof(text));
        return finish(cx, TG_BF_REFUSED, "lock_held", "%s", text);
    }
    /* We hold the lock, so its holder is this session: read as `tenantguard
     * status` reads it (not PQbackendPID, which a pooler fakes), so the
     * runner recorded in the runs matches it. Unreadable: the runs are
     * recorded without it and shown with the backend pid only. */
    bf_lock_holder(cx->lock, &cx->self, &err);     /* on failure self.known is false */
    return TG_BF_OK;
}

static tg_bf_status check_options(bf_ctx *cx)
{
    const tg_bf_options *o = cx->o;
    if (!o->policy)
        return finish(cx, TG_BF_ERROR, "options", "no policy given");
    if (o->batch_size < 1 || o->lock_timeout_ms < 1 || o->retries < 0 || o->throttle_ms < 0 ||
        o->max_rows < 0)
        return finish(cx, TG_BF_ERROR, "options", "batch size and lock timeout must be positive; "
                      "retries, throttle and max rows not negative");
    return TG_BF_OK;
}

tg_bf_status tg_backfill_run(const tg_bf_options *o, tg_bf_control *ctl, tg_bf_event_fn fn,
                             void *arg, tg_bf_result *res)
{
    bf_ctx cx = {.o = o, .ctl = ctl, .fn = fn, .arg = arg, .res = res};
    bf_err err;
    double t0 = bf_now();
    memset(res, 0, sizeof(*res));
    res->dry_run = o->dry_run;
    cx.rt = (bf_retry){.retries = o->retries, .ctl = ctl, .fn = fn, .arg = arg};
    tg_bf_status st = check_options(&cx);
    if (st == TG_BF_OK)
        st = connect_all(&cx);
    if (st == TG_BF_OK) {
        char msg[sizeof(res->message)];
        st = bf_plan_tables(cx.work, o, &cx.plan, msg, sizeof(msg));
        if (st != TG_BF_OK)
            finish(&cx, st, st == TG_BF_REFUSED ? "phase1_missing" : "table", "%s", msg);
    }
    if (st == TG_BF_OK && bf_plan_count(cx.work, &cx.plan, o->resume_from, &err) != TG_BF_OK)
        st = finish(&cx, TG_BF_ERROR, "count", "counting rows failed: %s", err.message);
    if (st == TG_BF_OK) {
        for (int i = 0; i < cx.plan.n_tbl; i++) {
            tg_bf_event ev = {.type = TG_BF_EV_PLAN, .table = &cx.plan.tbl[i].st};
            emit(&cx, &ev);
        }
        st = refuse_unresolvable(&cx);
    }
    if (st == TG_BF_OK && !o->dry_run) {
        if (!bf_runs_ensure(cx.work, &cx.rt, o, &cx.plan, &cx.runs, &err))
            st = finish(&cx, TG_BF_ERROR, "runs", "cannot create the operation runs: %s",
                        err.message);
        if (st == TG_BF_OK) {
            announce_runs(&cx);
            if (!bf_runs_start(cx.work, &cx.rt, o, &cx.plan, &cx.self, &cx.runs, &err))
                st = finish(&cx, TG_BF_ERROR, "runs", "cannot start the operation runs: %s",
                            err.message);
        }
        if (st == TG_BF_OK && !bf_runs_take_over(cx.work, &cx.rt, o, &cx.plan, &cx.runs, &err))
            st = finish(&cx, TG_BF_ERROR, "runs", "cannot record the resume of the runs left paused: %s; "
                        "they stay active: run again", err.message);
        if (st == TG_BF_OK)
            st = work(&cx);
    }
    publish_tables(&cx);
    res->seconds = bf_now() - t0;
    bf_runs_free(&cx.runs);
    bf_plan_free(&cx.plan);
    if (cx.work)
        PQfinish(cx.work);
    if (cx.lock)
        PQfinish(cx.lock);       /* releases the advisory lock */
    res->status = st;
    return st;
}
