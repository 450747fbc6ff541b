/*
 * admin_backfill.c -- BACKFILL DRY RUN | START | PAUSE | RESUME | CANCEL from
 * the console: the CLI's engine (backfill/backfill.h), run on the daemon's
 * backfill thread over its own connections (sidecar_dsn), under the same
 * advisory lock, so a console run and a CLI run never overlap.
 *
 * One run per process at a time. START answers once the engine has locked,
 * planned and started its operation_runs (the rows: one per run), or with
 * the error that stopped it before (55P03 lock held, 55000 unresolvable
 * rows, 08001 no connection); the run goes on in the background. PAUSE and
 * CANCEL answer once the engine has acted between two batches; RESUME at
 * once. The engine records start, progress, completion and cancellation in
 * operation_runs and audit_logs; it reports a pause only to its caller, so
 * the backfill thread records pauses and resumes with tg_bf_record_pause()
 * (context.paused of the runs, audit actions ...paused / ...resumed, the
 * same statement as the CLI's) before the engine waits.
 *
 * Threads: abf_job.snap and req_user are shared with the backfill thread
 * under abf_job.mu; everything else of a job belongs to one side at a time
 * (the loop until submitted, the thread while running, the loop in done()).
 * Notes from the thread (started, paused, resumed) come through the mailbox
 * before the job's own done(), so they may use the job.
 */
#include "config.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "backfill/backfill.h"
#include "policy/sqlstate.h"
#include "proxy/admin.h"
#include "proxy/admin_bf.h"
#include "proxy/runtime.h"
#include "proxy/sidepq.h"
#include "proxy/worker.h"

#define ABF_WAITERS 16

typedef enum { ABF_W_START, ABF_W_PAUSE, ABF_W_CANCEL } abf_wait_kind;
typedef enum { ABF_NOTE_STARTED, ABF_NOTE_PAUSED, ABF_NOTE_RESUMED } abf_note_kind;

#define ABF_ENDED_MAX 64

struct adm_backfill {
    tg_workq *q;                /* the backfill thread */
    abf_job *job;               /* the run in flight; NULL when none */
    struct {
        uint64_t sess;
        abf_wait_kind kind;
    } wait[ABF_WAITERS];        /* console sessions waiting for the engine */
    int n_wait;
    char last[1024];            /* how the last run here ended, for SHOW BACKFILL */
    /* The runs of the last job here, ended: SHOW BACKFILL may have read them
     * from operation_runs as running just before the job wrote their end. */
    int64_t ended[ABF_ENDED_MAX];
    int n_ended;
};

typedef struct abf_note {
    tg_job job;
    abf_job *owner;
    abf_note_kind kind;
} abf_note;

/* ---------------------------------------------------------------- shared */

tg_workq *abf_jobs(tg_runtime *rt)
{
    if (!rt->jobs)
        rt->jobs = workq_new(rt->mailbox, "sidecar", 2, 32);
    return rt->jobs;
}

tg_session *abf_waiting_console(tg_runtime *rt, uint64_t id)
{
    tg_session *x;
    TAILQ_FOREACH(x, &rt->sessions, link)
        if (x->id == id)
            return x->state == SS_ADMIN && x->admin && x->admin->waiting ? x : NULL;
    return NULL;
}

void abf_hold(tg_session *s)
{
    s->admin->waiting = true;
    snprintf(s->admin->wait_tag, sizeof(s->admin->wait_tag), "BACKFILL");
}

/* The caller checked abf_can_wait(). */
static void wait_for(adm_backfill *b, tg_session *s, abf_wait_kind kind)
{
    b->wait[b->n_wait].sess = s->id;
    b->wait[b->n_wait++].kind = kind;
    abf_hold(s);
}

static bool abf_can_wait(const adm_backfill *b)
{
    return b->n_wait < ABF_WAITERS;
}

/* Take the sessions waiting for `kind` (they are answered by the caller). */
static int take_waiters(adm_backfill *b, abf_wait_kind kind, uint64_t *out)
{
    int n = 0, k = 0;
    for (int i = 0; i < b->n_wait; i++) {
        if (b->wait[i].kind == kind)
            out[n++] = b->wait[i].sess;
        else
            b->wait[k++] = b->wait[i];
    }
    b->n_wait = k;
    return n;
}

/* ---------------------------------------------------------------- jobs */

static abf_job *abf_job_new(tg_runtime *rt, tg_session *s, bool dry_run, char *err, size_t errlen)
{
    abf_job *j = calloc(1, sizeof(*j));
    if (!j) {
        snprintf(err, errlen, "tenantguard: out of memory");
        return NULL;
    }
    char app[120];
    snprintf(app, sizeof(app), "tenantguard console %s (%s)", dry_run ? "dry run" : "backfill", s->admin->user);
    if (!(j->conninfo = sidepq_conninfo_app(rt->cfg->sidecar_dsn, app, err, errlen))) {
        free(j);
        return NULL;
    }
    pthread_mutex_init(&j->mu, NULL);
    j->rt = rt;
    j->mb = rt->mailbox;
    j->cfg = tg_config_ref(rt->cfg);
    j->dry_run = dry_run;
    snprintf(j->user, sizeof(j->user), "%s", s->admin->user);
    snprintf(j->actor, sizeof(j->actor), "console:%s", s->admin->user);
    snprintf(j->program, sizeof(j->program), "%s", app);
    tg_bf_options_init(&j->o);
    j->o.conninfo = j->conninfo;
    j->o.policy = &j->cfg->policy;
    j->o.dry_run = dry_run;
    j->o.actor = j->actor;
    j->o.program = j->program;
    return j;
}

void abf_job_free(abf_job *j)
{
    tg_bf_result_free(&j->res);
    free(j->snap.runs);
    free(j->conninfo);
    tg_config_unref(j->cfg);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

static void note_done(tg_job *jb);

static void post_note(abf_job *j, abf_note_kind kind)
{
    abf_note *n = calloc(1, sizeof(*n));
    if (!n)
        return;   /* the job's done() answers the waiters anyway */
    n->job.done = note_done;
    n->owner = j;
    n->kind = kind;
    mailbox_post(j->mb, &n->job);
}

/* Backfill thread: write a pause or resume of the runs into operation_runs
 * and the audit table (tg_bf_record_pause, the CLI's statement), or clear a
 * pause the end of the call left behind. A failure is logged: the engine
 * goes on either way. */
static void record_pause(abf_job *j, tg_bf_mark what)
{
    char err[400] = "", user[64];
    int n = 0;
    pthread_mutex_lock(&j->mu);
    snprintf(user, sizeof(user), "%s", j->req_user[0] ? j->req_user : j->user);
    int64_t *ids = malloc(((size_t)j->snap.n_runs + 1) * sizeof(*ids));
    for (int i = 0; ids && i < j->snap.n_runs; i++)
        ids[n++] = j->snap.runs[i].id;
    pthread_mutex_unlock(&j->mu);
    if (!ids || tg_bf_record_pause(&j->o, what, ids, n, user, err, sizeof(err)) != TG_BF_OK)
        log_warning("console backfill: could not record the %s in operation_runs: %s",
                    what == TG_BF_MARK_PAUSED ? "pause" : what == TG_BF_MARK_RESUMED ? "resume" : "end of a pause",
                    ids ? err : "out of memory");
    free(ids);
    j->pause_recorded = what == TG_BF_MARK_PAUSED;
}

static void add_run(abf_job *j, const tg_bf_event *ev)
{
    abf_snap *sn = &j->snap;
    if (sn->n_runs == sn->cap_runs) {
        int cap = sn->cap_runs ? 2 * sn->cap_runs : 8;
        abf_run *r = realloc(sn->runs, (size_t)cap * sizeof(*r));
        if (!r)
            return;
        sn->runs = r;
        sn->cap_runs = cap;
    }
    abf_run *r = &sn->runs[sn->n_runs++];
    memset(r, 0, sizeof(*r));
    r->id = ev->run_id;
    r->ws = ev->workspace_id;
    r->planned = ev->planned_rows;
    r->reused = ev->reused;
    snprintf(r->status, sizeof(r->status), "%s", ev->status ? ev->status : "");
}

static void run_closed(abf_job *j, const tg_bf_event *ev)
{
    for (int i = 0; i < j->snap.n_runs; i++) {
        abf_run *r = &j->snap.runs[i];
        if (r->id == ev->run_id) {
            snprintf(r->status, sizeof(r->status), "%s", ev->status ? ev->status : "completed");
            snprintf(r->outcome, sizeof(r->outcome), "%s", ev->outcome ? ev->outcome : "");
        }
    }
}

/* Backfill thread: the engine's events. */
static void on_event(const tg_bf_event *ev, void *arg)
{
    abf_job *j = arg;
    bool first = false;
    if (ev->type == TG_BF_EV_PAUSED)
        record_pause(j, TG_BF_MARK_PAUSED);
    else if (ev->type == TG_BF_EV_RESUMED)
        record_pause(j, TG_BF_MARK_RESUMED);
    pthread_mutex_lock(&j->mu);
    switch (ev->type) {
    case TG_BF_EV_RUN:
        add_run(j, ev);
        break;
    case TG_BF_EV_TABLE_START:
        first = !j->snap.started;
        j->snap.started = true;
        for (int i = 0; i < j->snap.n_runs; i++)
            snprintf(j->snap.runs[i].status, sizeof(j->snap.runs[i].status), "running");
        snprintf(j->snap.table, sizeof(j->snap.table), "%s", ev->table ? ev->table->name : "");
        break;
    case TG_BF_EV_PROGRESS:
        j->snap.done_rows = ev->done_rows;
        j->snap.total_rows = ev->total_rows;
        j->snap.rows_this_call = ev->rows_this_call;
        j->snap.elapsed = ev->elapsed;
        break;
    case TG_BF_EV_PAUSED:
    case TG_BF_EV_RESUMED:
        j->snap.paused = ev->type == TG_BF_EV_PAUSED;
        break;
    case TG_BF_EV_RUN_DONE:
        run_closed(j, ev);
        break;
    default:
        break;
    }
    pthread_mutex_unlock(&j->mu);
    if (ev->type == TG_BF_EV_RETRY)
        log_info("console backfill: retry %d (%s): %s", ev->attempt, ev->reason ? ev->reason : "?",
                 ev->message ? ev->message : "");
    if (first)
        post_note(j, ABF_NOTE_STARTED);
    else if (ev->type == TG_BF_EV_PAUSED)
        post_note(j, ABF_NOTE_PAUSED);
    else if (ev->type == TG_BF_EV_RESUMED)
        post_note(j, ABF_NOTE_RESUMED);
}

static void job_run(tg_job *jb)
{
    abf_job *j = (abf_job *)jb;
    tg_backfill_run(&j->o, &j->ctl, on_event, j, &j->res);
    /* Cancelled or stopped while paused: nothing holds the runs any more. */
    if (j->pause_recorded)
        record_pause(j, TG_BF_MARK_CLEAR);
}

/* ---------------------------------------------------------------- answers */

const char *abf_error_sqlstate(const tg_bf_result *res)
{
    if (strcmp(res->reason, "lock_held") == 0)
        return TG_SQLSTATE_LOCK_NOT_AVAILABLE;
    if (strcmp(res->reason, "connect") == 0)
        return TG_SQLSTATE_CANNOT_CONNECT;
    if (res->status == TG_BF_REFUSED)
        return TG_SQLSTATE_NOT_IN_PREREQUISITE;
    return TG_SQLSTATE_INTERNAL_ERROR;
}

/* The START answer: one row per operation run. */
static void write_runs(abf_job *j, struct evbuffer *out)
{
    static const adm_col cols[] = {{"run_id", ADM_INT8}, {"workspace_id", ADM_INT8}, {"status", ADM_TEXT},
                                   {"outcome", ADM_TEXT}, {"reused", ADM_BOOL}, {"planned_rows", ADM_INT8}};
    char note[200];
    pthread_mutex_lock(&j->mu);
    int64_t planned = 0;
    for (int i = 0; i < j->snap.n_runs; i++)
        planned += j->snap.runs[i].planned;
    snprintf(note, sizeof(note), "backfill started by %s: %d run(s), %" PRId64 " row(s) to bind; SHOW BACKFILL "
             "follows it", j->user, j->snap.n_runs, planned);
    adm_notice(out, note);
    adm_row_desc(out, cols, 6);
    for (int i = 0; i < j->snap.n_runs; i++) {
        const abf_run *r = &j->snap.runs[i];
        char id[24], ws[24], pl[24];
        snprintf(id, sizeof(id), "%" PRId64, r->id);
        snprintf(ws, sizeof(ws), "%" PRId64, r->ws);
        snprintf(pl, sizeof(pl), "%" PRId64, r->planned);
        const char *v[] = {id, ws, r->status, r->outcome[0] ? r->outcome : NULL, r->reused ? "t" : "f", pl};
        adm_row(out, 6, v);
    }
    char tag[40];
    snprintf(tag, sizeof(tag), "BACKFILL %d", j->snap.n_runs);
    pthread_mutex_unlock(&j->mu);
    adm_complete(out, tag);
}

static void answer_start(tg_runtime *rt, abf_job *j)
{
    uint64_t ids[ABF_WAITERS];
    int n = take_waiters(rt->backfill, ABF_W_START, ids);
    for (int i = 0; i < n; i++) {
        tg_session *s = abf_waiting_console(rt, ids[i]);
        if (!s)
            continue;
        struct evbuffer *out = bufferevent_get_output(s->cl.bev);
        pthread_mutex_lock(&j->mu);
        bool ok = j->snap.started;
        pthread_mutex_unlock(&j->mu);
        ok = ok || j->res.status == TG_BF_OK;
        if (ok) {
            write_runs(j, out);
            admin_complete_later(s, NULL);   /* write_runs wrote CommandComplete */
        } else {
            adm_error(out, abf_error_sqlstate(&j->res), j->res.message[0] ? j->res.message : "backfill failed",
                      strcmp(j->res.reason, "unresolvable") == 0 ? "BACKFILL DRY RUN shows the plan." : NULL);
            admin_complete_later(s, NULL);
        }
    }
}

static void answer_all(tg_runtime *rt, abf_wait_kind kind, const char *tag, const char *notice)
{
    uint64_t ids[ABF_WAITERS];
    int n = take_waiters(rt->backfill, kind, ids);
    for (int i = 0; i < n; i++) {
        tg_session *s = abf_waiting_console(rt, ids[i]);
        if (!s)
            continue;
        if (notice)
            adm_notice(bufferevent_get_output(s->cl.bev), notice);
        admin_complete_later(s, tag);
    }
}

static void note_done(tg_job *jb)
{
    abf_note *n = (abf_note *)jb;
    abf_job *j = n->owner;
    tg_runtime *rt = j->rt;
    switch (n->kind) {
    case ABF_NOTE_STARTED:
        answer_start(rt, j);
        break;
    case ABF_NOTE_PAUSED: {
        pthread_mutex_lock(&j->mu);
        int64_t done = j->snap.done_rows, total = j->snap.total_rows;
        pthread_mutex_unlock(&j->mu);
        log_info("console backfill: paused between two batches (%" PRId64 " of %" PRId64 " rows done)", done,
                 total);
        answer_all(rt, ABF_W_PAUSE, "BACKFILL PAUSE", NULL);
        break;
    }
    case ABF_NOTE_RESUMED:
        log_info("console backfill: resumed");
        break;
    }
    free(n);
}

static void job_done(tg_job *jb)
{
    abf_job *j = (abf_job *)jb;
    tg_runtime *rt = j->rt;
    adm_backfill *b = rt->backfill;
    if (jb->cancelled) {
        j->res.status = TG_BF_ERROR;
        snprintf(j->res.reason, sizeof(j->res.reason), "shutdown");
        snprintf(j->res.message, sizeof(j->res.message), "tenantguard is shutting down");
    }
    if (b->job == j) {
        b->job = NULL;
        pthread_mutex_lock(&j->mu);
        b->n_ended = 0;
        for (int i = 0; i < j->snap.n_runs && b->n_ended < ABF_ENDED_MAX; i++)
            b->ended[b->n_ended++] = j->snap.runs[i].id;
        pthread_mutex_unlock(&j->mu);
    }
    const tg_bf_result *res = &j->res;
    snprintf(b->last, sizeof(b->last), "the last console run (started by %s) ended: %s%s%s (%" PRId64
             " rows bound in %.1f s)", j->user, res->status == TG_BF_OK ? "done" : res->reason,
             res->message[0] ? ": " : "", res->message, res->rows_this_call, res->seconds);
    if (res->status == TG_BF_OK)
        log_info("console backfill done: %" PRId64 " rows bound in %.1f s, %d run(s)", res->rows_this_call,
                 res->seconds, res->n_runs);
    else
        log_warning("console backfill ended (%s): %s", res->reason, res->message);
    answer_start(rt, j);
    answer_all(rt, ABF_W_PAUSE, "BACKFILL PAUSE", "the run ended before it paused");
    answer_all(rt, ABF_W_CANCEL, "BACKFILL CANCEL", res->message[0] ? res->message : "the run had finished");
    abf_job_free(j);
}

/* ---------------------------------------------------------------- commands */

static bool kw(const adm_args *a, int i, const char *w)
{
    return i < a->n && !a->quoted[i] && strcasecmp(a->tok[i], w) == 0;
}

static bool number(const adm_args *a, int i, int64_t lo, int64_t hi, int64_t *out)
{
    if (i >= a->n || a->quoted[i])
        return false;
    char *end;
    long long v = strtoll(a->tok[i], &end, 10);
    if (*end || end == a->tok[i] || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static bool usage_near(struct evbuffer *out, const char *syntax, const char *near)
{
    char hint[200], msg[160];
    snprintf(hint, sizeof(hint), "Syntax: %s", syntax);
    if (near)
        snprintf(msg, sizeof(msg), "tenantguard console: bad arguments at \"%.60s\"", near);
    else
        snprintf(msg, sizeof(msg), "tenantguard console: bad arguments");
    adm_error(out, TG_SQLSTATE_SYNTAX_ERROR, msg, hint);
    return true;
}

static bool usage(struct evbuffer *out, const char *syntax)
{
    return usage_near(out, syntax, NULL);
}

/* TABLE t, BATCH n, MAX ROWS n, THROTTLE ms into j->o (DRY RUN: TABLE only). */
static bool parse_options(const adm_args *a, abf_job *j, bool dry, const char **bad)
{
    for (int i = 0; i < a->n;) {
        int64_t v;
        if (kw(a, i, "table") && i + 1 < a->n) {
            snprintf(j->table, sizeof(j->table), "%s", a->tok[i + 1]);
            j->o.table = j->table;
            i += 2;
        } else if (!dry && kw(a, i, "batch") && number(a, i + 1, 1, 1000000, &v)) {
            j->o.batch_size = (int)v;
            i += 2;
        } else if (!dry && kw(a, i, "max") && kw(a, i + 1, "rows") && number(a, i + 2, 1, INT64_MAX / 2, &v)) {
            j->o.max_rows = v;
            i += 3;
        } else if (!dry && kw(a, i, "throttle") && number(a, i + 1, 0, 600000, &v)) {
            j->o.throttle_ms = (int)v;
            i += 2;
        } else {
            *bad = a->tok[i];
            return false;
        }
    }
    return true;
}

abf_job *abf_prepare(tg_session *s, const adm_args *a, bool dry, struct evbuffer *out, const char *syntax)
{
    tg_runtime *rt = s->rt;
    if (!rt->cfg->sidecar_dsn[0]) {
        adm_error(out, TG_SQLSTATE_NOT_IN_PREREQUISITE, "tenantguard console: BACKFILL needs sidecar_dsn",
                  "Set sidecar_dsn (the connection the backfill uses) and RELOAD.");
        return NULL;
    }
    char err[300];
    abf_job *j = abf_job_new(rt, s, dry, err, sizeof(err));
    const char *bad = NULL;
    if (!j) {
        adm_error(out, TG_SQLSTATE_NOT_IN_PREREQUISITE, err, NULL);
        return NULL;
    }
    if (!parse_options(a, j, dry, &bad)) {
        usage_near(out, syntax, bad);
        abf_job_free(j);
        return NULL;
    }
    if (j->o.table && !tg_bf_find_table(&j->cfg->policy, j->o.table)) {
        char names[1024], msg[200];
        tg_bf_table_names(&j->cfg->policy, names, sizeof(names));
        snprintf(msg, sizeof(msg), "tenantguard console: \"%.100s\" is not a watched table", j->o.table);
        abf_job_free(j);
        adm_error(out, TG_SQLSTATE_SYNTAX_ERROR, msg, names);
        return NULL;
    }
    return j;
}

bool adm_backfill_start(tg_session *s, const adm_args *a, struct evbuffer *out)
{
    static const char syntax[] = "BACKFILL START [TABLE t] [BATCH n] [MAX ROWS n] [THROTTLE ms]";
    adm_backfill *b = s->rt->backfill;
    if (b->job) {
        adm_error(out, TG_SQLSTATE_OBJECT_IN_USE, "tenantguard console: a backfill is already running here",
                  "SHOW BACKFILL follows it; BACKFILL PAUSE or CANCEL stop it.");
        return true;
    }
    abf_job *j = abf_prepare(s, a, false, out, syntax);
    if (!j)
        return true;
    j->job.run = job_run;
    j->job.done = job_done;
    if (!b->q)
        b->q = workq_new(s->rt->mailbox, "backfill", 1, 1);
    if (!b->q || !abf_can_wait(b) || workq_submit(b->q, &j->job) != 0) {
        abf_job_free(j);
        adm_error(out, TG_SQLSTATE_OBJECT_IN_USE, "tenantguard console: cannot start the backfill thread now",
                  NULL);
        return true;
    }
    b->job = j;
    tg_clog(TG_LOG_INFO, &s->log, "admin %s: BACKFILL START%s%s batch %d max rows %" PRId64 " throttle %d ms",
            s->admin->user, j->o.table ? " TABLE " : "", j->o.table ? j->o.table : "", j->o.batch_size,
            j->o.max_rows, j->o.throttle_ms);
    wait_for(b, s, ABF_W_START);
    return false;
}

static bool need_run(tg_session *s, struct evbuffer *out)
{
    if (s->rt->backfill->job)
        return true;
    adm_error(out, TG_SQLSTATE_NOT_IN_PREREQUISITE, "tenantguard console: no backfill is running in this tenantguard",
              "SHOW BACKFILL shows the runs of every process; a CLI run pauses with SIGUSR1, resumes with "
              "SIGUSR2, stops with SIGINT and cancels with SIGQUIT.");
    return false;
}

static void set_request(abf_job *j, tg_bf_request r, const char *user)
{
    pthread_mutex_lock(&j->mu);
    snprintf(j->req_user, sizeof(j->req_user), "%s", user);
    pthread_mutex_unlock(&j->mu);
    tg_bf_request_set(&j->ctl, r);
}

bool adm_backfill_pause(tg_session *s, const adm_args *a, struct evbuffer *out)
{
    if (a->n)
        return usage(out, "BACKFILL PAUSE");
    if (!need_run(s, out))
        return true;
    adm_backfill *b = s->rt->backfill;
    abf_job *j = b->job;
    tg_clog(TG_LOG_INFO, &s->log, "admin %s: BACKFILL PAUSE", s->admin->user);
    pthread_mutex_lock(&j->mu);
    bool paused = j->snap.paused;
    pthread_mutex_unlock(&j->mu);
    if (paused || !abf_can_wait(b)) {
        adm_notice(out, paused ? "the backfill is paused already" : "pausing between two batches");
        set_request(j, TG_BF_REQ_PAUSE, s->admin->user);
        adm_complete(out, "BACKFILL PAUSE");
        return true;
    }
    set_request(j, TG_BF_REQ_PAUSE, s->admin->user);
    wait_for(b, s, ABF_W_PAUSE);   /* answered when the engine holds */
    return false;
}

bool adm_backfill_resume(tg_session *s, const adm_args *a, struct evbuffer *out)
{
    if (a->n)
        return usage(out, "BACKFILL RESUME");
    if (!need_run(s, out))
        return true;
    abf_job *j = s->rt->backfill->job;
    tg_clog(TG_LOG_INFO, &s->log, "admin %s: BACKFILL RESUME", s->admin->user);
    if (tg_bf_request_get(&j->ctl) == TG_BF_REQ_PAUSE)
        set_request(j, TG_BF_REQ_RUN, s->admin->user);
    else
        adm_notice(out, "the backfill was not paused");
    /* A PAUSE still waiting for the engine is overtaken. */
    answer_all(s->rt, ABF_W_PAUSE, "BACKFILL PAUSE", "resumed before the pause took effect");
    adm_complete(out, "BACKFILL RESUME");
    return true;
}

bool adm_backfill_cancel(tg_session *s, const adm_args *a, struct evbuffer *out)
{
    if (a->n)
        return usage(out, "BACKFILL CANCEL");
    if (!need_run(s, out))
        return true;
    adm_backfill *b = s->rt->backfill;
    tg_clog(TG_LOG_INFO, &s->log, "admin %s: BACKFILL CANCEL", s->admin->user);
    set_request(b->job, TG_BF_REQ_CANCEL, s->admin->user);
    if (!abf_can_wait(b)) {
        adm_notice(out, "cancelling between two batches");
        adm_complete(out, "BACKFILL CANCEL");
        return true;
    }
    wait_for(b, s, ABF_W_CANCEL);   /* answered when the runs are closed */
    return false;
}

/* ---------------------------------------------------------------- lifecycle */

int admin_backfill_init(tg_runtime *rt)
{
    rt->backfill = calloc(1, sizeof(*rt->backfill));
    return rt->backfill ? 0 : -1;
}

void admin_backfill_stop(tg_runtime *rt)
{
    adm_backfill *b = rt->backfill;
    if (!b)
        return;
    if (b->job) {
        log_info("stopping the console backfill between two batches; its runs stay active and "
                 "BACKFILL START (or tenantguard backfill) with the same tables resumes them");
        tg_bf_request_set(&b->job->ctl, TG_BF_REQ_STOP);
    }
    workq_stop(b->q, false);
}

void admin_backfill_free(tg_runtime *rt)
{
    adm_backfill *b = rt->backfill;
    if (!b)
        return;
    workq_free(b->q);
    free(b);
    rt->backfill = NULL;
}

bool admin_backfill_progress(const tg_runtime *rt, abf_progress *p)
{
    memset(p, 0, sizeof(*p));
    const adm_backfill *b = rt->backfill;
    if (!b || !b->job)
        return false;
    abf_job *j = b->job;
    pthread_mutex_lock(&j->mu);
    p->started = j->snap.started;
    p->paused = j->snap.paused;
    p->done_rows = j->snap.done_rows;
    p->total_rows = j->snap.total_rows;
    p->rows_this_call = j->snap.rows_this_call;
    p->elapsed = j->snap.elapsed;
    p->n_runs = j->snap.n_runs;
    pthread_mutex_unlock(&j->mu);
    return true;
}

bool admin_backfill_runs_here(const tg_runtime *rt, int64_t run_id, bool *paused)
{
    const adm_backfill *b = rt->backfill;
    if (!b || !b->job)
        return false;
    abf_job *j = b->job;
    bool found = false;
    pthread_mutex_lock(&j->mu);
    for (int i = 0; i < j->snap.n_runs && !found; i++)
        found = j->snap.runs[i].id == run_id;
    *paused = j->snap.paused;
    pthread_mutex_unlock(&j->mu);
    return found;
}

bool admin_backfill_ended_here(const tg_runtime *rt, int64_t run_id)
{
    const adm_backfill *b = rt->backfill;
    for (int i = 0; b && i < b->n_ended; i++)
        if (b->ended[i] == run_id)
            return true;
    return false;
}

const char *admin_backfill_last(const tg_runtime *rt)
{
    return rt->backfill && rt->backfill->last[0] ? rt->backfill->last : NULL;
}
