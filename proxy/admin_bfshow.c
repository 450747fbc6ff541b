/*
 * admin_bfshow.c -- the console's backfill answers that are tables: BACKFILL
 * DRY RUN (the plan, on a short-job worker) and SHOW BACKFILL [n].
 *
 * SHOW BACKFILL reads operation_runs (tg_status_json, the same reader as
 * `tenantguard status`) on a worker thread, so it is true across processes
 * and hosts: runs of the CLI and of other tenantguards show too. The console
 * answers when the rows arrive. Per run: status and outcome as stored, the
 * state seen from here (running here, paused here, running or paused in
 * another process that holds the lock -- named by the OS pid and host its
 * runs recorded, its backend pid beside --, interrupted), counts, percent,
 * rate, ETA and the per-table progress.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <jansson.h>

#include "policy/sqlstate.h"
#include "proxy/admin.h"
#include "proxy/admin_bf.h"
#include "proxy/runtime.h"

typedef struct abf_status {
    tg_job job;
    struct tg_runtime *rt;      /* loop thread only */
    tg_config *cfg;             /* reference */
    uint64_t sess;
    int limit;
    char *json;                 /* tg_status_json()'s answer, or NULL with err */
    char err[1024];
} abf_status;

/* ---------------------------------------------------------------- DRY RUN */

static void join_ids(const int64_t *ids, int n, char *buf, size_t len)
{
    size_t k = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && k < len; i++)
        k += (size_t)snprintf(buf + k, len - k, "%s%" PRId64, i ? "," : "", ids[i]);
}

void abf_write_plan(const tg_bf_result *res, struct evbuffer *out)
{
    if (res->message[0])
        adm_notice(out, res->message);
    static const adm_col cols[] = {{"table", ADM_TEXT},        {"scanned", ADM_INT8},
                                   {"missing", ADM_INT8},      {"unresolvable", ADM_INT8},
                                   {"sample_ids", ADM_TEXT},   {"sample_tenants", ADM_TEXT}};
    adm_row_desc(out, cols, 6);
    for (int i = 0; i < res->n_tables; i++) {
        const tg_bf_table_stats *t = &res->tables[i];
        char sc[24], mi[24], un[24], ids[200], tenants[200];
        snprintf(sc, sizeof(sc), "%" PRId64, t->scanned);
        snprintf(mi, sizeof(mi), "%" PRId64, t->missing);
        snprintf(un, sizeof(un), "%" PRId64, t->unresolvable);
        join_ids(t->sample_ids, t->n_samples, ids, sizeof(ids));
        join_ids(t->sample_tenants, t->n_sample_tenants, tenants, sizeof(tenants));
        const char *v[] = {t->name, sc, mi, un, ids, tenants};
        adm_row(out, 6, v);
    }
    char tag[40];
    snprintf(tag, sizeof(tag), "BACKFILL %d", res->n_tables);
    adm_complete(out, tag);
}


static void dry_done(tg_job *jb)
{
    abf_job *j = (abf_job *)jb;
    tg_session *s = abf_waiting_console(j->rt, j->dry_session);
    if (s) {
        struct evbuffer *out = bufferevent_get_output(s->cl.bev);
        const tg_bf_result *res = &j->res;
        if (jb->cancelled)
            adm_error(out, TG_SQLSTATE_ADMIN_SHUTDOWN, "tenantguard is shutting down", NULL);
        else if (res->status != TG_BF_OK && strcmp(res->reason, "unresolvable") != 0)
            adm_error(out, abf_error_sqlstate(res), res->message, NULL);
        else
            abf_write_plan(res, out);   /* unresolvable rows: the plan, and what START would say */
        admin_complete_later(s, NULL);
    }
    abf_job_free(j);
}

static void dry_run(tg_job *jb)
{
    abf_job *j = (abf_job *)jb;
    tg_backfill_run(&j->o, NULL, NULL, NULL, &j->res);
}

bool adm_backfill_dry_run(tg_session *s, const adm_args *a, struct evbuffer *out)
{
    abf_job *j = abf_prepare(s, a, true, out, "BACKFILL DRY RUN [TABLE t]");
    if (!j)
        return true;
    j->job.run = dry_run;
    j->job.done = dry_done;
    j->dry_session = s->id;
    tg_workq *q = abf_jobs(s->rt);
    if (!q || workq_submit(q, &j->job) != 0) {
        abf_job_free(j);
        adm_error(out, TG_SQLSTATE_OBJECT_IN_USE, "tenantguard console: too many sidecar jobs waiting; try again",
                  NULL);
        return true;
    }
    tg_clog(TG_LOG_INFO, &s->log, "admin %s: BACKFILL DRY RUN%s%s", s->admin->user, j->o.table ? " TABLE " : "",
            j->o.table ? j->o.table : "");
    abf_hold(s);
    return false;
}

/* ---------------------------------------------------------------- SHOW BACKFILL */

static const adm_col show_cols[] = {
    {"run_id", ADM_INT8},          {"workspace_id", ADM_INT8},     {"status", ADM_TEXT},
    {"outcome", ADM_TEXT},         {"state", ADM_TEXT},            {"total", ADM_INT8},
    {"processed", ADM_INT8},       {"failed", ADM_INT8},           {"percent", ADM_FLOAT8},
    {"rows_per_second", ADM_FLOAT8}, {"eta_seconds", ADM_FLOAT8},  {"started_at", ADM_TIMESTAMPTZ},
    {"completed_at", ADM_TIMESTAMPTZ}, {"progress", ADM_TEXT},
};
enum { NSHOW = sizeof(show_cols) / sizeof(show_cols[0]) };

static const char *jstr(json_t *o, const char *key, const char *dflt)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : dflt;
}

/* "2026-11-23T10:00:00Z" as timestamptz text input every client parses. */
static const char *pg_time(json_t *v, char *buf, size_t len)
{
    const char *s = json_string_value(v);
    if (!s || strlen(s) < 19)
        return NULL;
    snprintf(buf, len, "%.10s %.8s+00", s, s + 11);
    return buf;
}

/* A run driven by another process, the one holding the lock. Name that
 * process (what an operator signals) only when the run recorded it as its
 * runner and tg_status_json matched that runner to the holder's session
 * (lock.runner); otherwise, as for a run recorded by an older tenantguard,
 * all we know is the holder's backend pid: say so. */
static void held_elsewhere(json_t *run, json_t *lock, char *buf, size_t len)
{
    const char *what = json_is_true(json_object_get(run, "paused")) ? "paused" : "running";
    json_t *runner = json_object_get(lock, "runner");
    int backend = (int)json_integer_value(json_object_get(lock, "backend_pid"));
    if (json_is_object(runner) && json_equal(runner, json_object_get(run, "runner")))
        snprintf(buf, len, "%s in %s pid %" JSON_INTEGER_FORMAT " on host %s (backend pid %d)", what,
                 jstr(runner, "program", "?"), json_integer_value(json_object_get(runner, "pid")),
                 jstr(runner, "host", "?"), backend);
    else
        snprintf(buf, len, "%s in backend pid %d (%s)", what, backend, jstr(lock, "application", "?"));
}

static void state_of(tg_runtime *rt, json_t *run, json_t *lock, char *buf, size_t len)
{
    const char *status = json_string_value(json_object_get(run, "status"));
    bool active = status && (strcmp(status, "queued") == 0 || strcmp(status, "running") == 0);
    bool paused = false;
    int64_t id = json_integer_value(json_object_get(run, "id"));
    if (!active)
        snprintf(buf, len, "done");
    else if (admin_backfill_runs_here(rt, id, &paused))
        snprintf(buf, len, "%s here", paused ? "paused" : "running");
    else if (admin_backfill_ended_here(rt, id))
        snprintf(buf, len, "done");   /* read as running just before its job here ended */
    else if (json_is_object(lock) && !json_is_true(json_object_get(run, "interrupted")))
        held_elsewhere(run, lock, buf, len);
    else   /* nobody holds the lock, or its holder drives other runs */
        snprintf(buf, len, "interrupted (resumable)");
}

/* "policies 120/300, findings 0/300": the tables with work. */
static void progress_of(json_t *run, char *buf, size_t len)
{
    json_t *tp = json_object_get(run, "table_progress"), *v;
    const char *key;
    size_t n = 0;
    buf[0] = '\0';
    json_object_foreach(tp, key, v) {
        json_int_t target = json_integer_value(json_object_get(v, "target_rows"));
        json_int_t done = json_integer_value(json_object_get(v, "processed"));
        if ((target || done) && n < len)
            n += (size_t)snprintf(buf + n, len - n, "%s%s %" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT,
                                  n ? ", " : "", key, done, target);
    }
}

static void show_run(tg_runtime *rt, json_t *run, json_t *lock, struct evbuffer *out)
{
    json_t *sc = json_object_get(run, "summary_counts");
    json_int_t total = json_integer_value(json_object_get(sc, "total"));
    json_int_t done = json_integer_value(json_object_get(sc, "processed"));
    double secs = json_number_value(json_object_get(run, "duration_seconds"));
    char f[NSHOW][160], progress[2048], st[512];   /* st: program and host name */
    const char *v[NSHOW] = {0};
    snprintf(f[0], sizeof(f[0]), "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(run, "id")));
    snprintf(f[1], sizeof(f[1]), "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(run, "workspace_id")));
    v[0] = f[0];
    v[1] = f[1];
    v[2] = json_string_value(json_object_get(run, "status"));
    v[3] = json_string_value(json_object_get(run, "outcome"));
    state_of(rt, run, lock, st, sizeof(st));
    v[4] = st;
    snprintf(f[5], sizeof(f[5]), "%" JSON_INTEGER_FORMAT, total);
    snprintf(f[6], sizeof(f[6]), "%" JSON_INTEGER_FORMAT, done);
    snprintf(f[7], sizeof(f[7]), "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(sc, "failed")));
    snprintf(f[8], sizeof(f[8]), "%.1f", total > 0 ? 100.0 * (double)done / (double)total : 100.0);
    v[5] = f[5];
    v[6] = f[6];
    v[7] = f[7];
    v[8] = f[8];
    double rate = secs > 0 && done > 0 ? (double)done / secs : 0;
    if (rate > 0) {
        snprintf(f[9], sizeof(f[9]), "%.1f", rate);
        v[9] = f[9];
    }
    if (rate > 0 && strncmp(st, "running", 7) == 0) {   /* ETA only while it moves */
        snprintf(f[10], sizeof(f[10]), "%.1f", (double)(total - done) / rate);
        v[10] = f[10];
    }
    v[11] = pg_time(json_object_get(run, "started_at"), f[11], sizeof(f[11]));
    v[12] = pg_time(json_object_get(run, "completed_at"), f[12], sizeof(f[12]));
    progress_of(run, progress, sizeof(progress));
    v[13] = progress;
    adm_row(out, NSHOW, v);
}

/* Who holds the lock: the process behind it when its runs recorded it,
 * and always its session, the pid labelled as a backend's. */
static void lock_notice(json_t *lock, struct evbuffer *out)
{
    json_t *runner = json_object_get(lock, "runner");
    int backend = (int)json_integer_value(json_object_get(lock, "backend_pid"));
    char session[512], msg[1024];
    snprintf(session, sizeof(session), "client %s, application \"%s\", connected since %s", jstr(lock, "client", "?"),
             jstr(lock, "application", ""), jstr(lock, "since", "?"));
    if (json_is_object(runner))
        snprintf(msg, sizeof(msg),
                 "the backfill lock is held by %s pid %" JSON_INTEGER_FORMAT " on host %s since %s "
                 "(backend pid %d, %s)",
                 jstr(runner, "program", "?"), json_integer_value(json_object_get(runner, "pid")),
                 jstr(runner, "host", "?"), jstr(runner, "since", "?"), backend, session);
    else
        snprintf(msg, sizeof(msg), "the backfill lock is held by backend pid %d (%s); no run records the process "
                 "behind it", backend, session);
    adm_notice(out, msg);
}

static void show_answer(abf_status *q, tg_session *s)
{
    struct evbuffer *out = bufferevent_get_output(s->cl.bev);
    json_t *doc = q->json ? json_loads(q->json, 0, NULL) : NULL;
    if (!doc) {
        adm_error(out, q->json ? TG_SQLSTATE_INTERNAL_ERROR : TG_SQLSTATE_CANNOT_CONNECT,
                  q->json ? "tenantguard console: unreadable status" : q->err, NULL);
        admin_complete_later(s, NULL);
        return;
    }
    json_t *lock = json_object_get(doc, "lock"), *runs = json_object_get(doc, "runs"), *run;
    const char *last = admin_backfill_last(q->rt);
    if (last)
        adm_notice(out, last);
    if (json_is_object(lock))
        lock_notice(lock, out);
    adm_row_desc(out, show_cols, NSHOW);
    size_t i;
    json_array_foreach(runs, i, run)
        show_run(q->rt, run, lock, out);
    char tag[40];
    snprintf(tag, sizeof(tag), "SHOW %zu", json_array_size(runs));
    json_decref(doc);
    admin_complete_later(s, tag);
}

static void status_run(tg_job *jb)
{
    abf_status *q = (abf_status *)jb;
    q->json = tg_status_json(q->cfg->sidecar_dsn, &q->cfg->policy, q->limit, q->err, sizeof(q->err));
}

static void status_done(tg_job *jb)
{
    abf_status *q = (abf_status *)jb;
    tg_session *s = abf_waiting_console(q->rt, q->sess);
    if (s && jb->cancelled) {
        adm_error(bufferevent_get_output(s->cl.bev), TG_SQLSTATE_ADMIN_SHUTDOWN, "tenantguard is shutting down",
                  NULL);
        admin_complete_later(s, NULL);
    } else if (s) {
        show_answer(q, s);
    }
    free(q->json);
    tg_config_unref(q->cfg);
    free(q);
}

bool adm_show_backfill(tg_session *s, const adm_args *a, struct evbuffer *out)
{
    long n = 0;
    char *end = NULL;
    if (a->n > 1 || (a->n == 1 && ((n = strtol(a->tok[0], &end, 10)) < 1 || n > 100000 || *end))) {
        adm_error(out, TG_SQLSTATE_SYNTAX_ERROR, "tenantguard console: bad arguments",
                  "Syntax: SHOW BACKFILL [n] (n: the n most recent runs, 1 to 100000)");
        return true;
    }
    if (!s->rt->cfg->sidecar_dsn[0]) {
        adm_error(out, TG_SQLSTATE_NOT_IN_PREREQUISITE, "tenantguard console: SHOW BACKFILL needs sidecar_dsn",
                  "Set sidecar_dsn (the connection that reads operation_runs) and RELOAD.");
        return true;
    }
    abf_status *q = calloc(1, sizeof(*q));
    tg_workq *jobs = q ? abf_jobs(s->rt) : NULL;
    if (q) {
        q->job.run = status_run;
        q->job.done = status_done;
        q->rt = s->rt;
        q->cfg = tg_config_ref(s->rt->cfg);
        q->sess = s->id;
        q->limit = (int)n;
    }
    if (!jobs || workq_submit(jobs, &q->job) != 0) {
        if (q)
            tg_config_unref(q->cfg);
        free(q);
        adm_error(out, TG_SQLSTATE_OBJECT_IN_USE, "tenantguard console: too many sidecar jobs waiting; try again",
                  NULL);
        return true;
    }
    abf_hold(s);
    return false;
}
