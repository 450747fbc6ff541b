/*
 * cli_backfill.c -- `tenantguard backfill`: options, signals, the progress
 * bar and the tables. The work is tg_backfill_run(); this file only turns
 * its events into text or JSON lines.
 */
#include "config.h"

#include <getopt.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backfill/backfill.h"
#include "backfill/cli.h"
#include "backfill/cli_common.h"

#define RUN_LINES 20          /* per-run lines printed before summarising */

typedef struct out_state {
    cli_common *cc;
    const tg_bf_options *opts;  /* for tg_bf_record_pause */
    bool tty;                 /* progress bar (stdout is a terminal, not --json) */
    bool bar;                 /* a bar is drawn on the current line */
    double last_line;         /* elapsed time of the last progress line */
    cli_table *plan;          /* collected from PLAN events, printed before the runs */
    int runs, runs_reused, runs_done;
    int64_t *run_ids;         /* every run of the call (RUN events): what a pause marks */
    int n_run_ids, cap_run_ids;
    bool pause_recorded;      /* the runs' context says paused: clear it if the call ends so */
} out_state;

/* The CLI's one piece of process state: what the signal handlers steer. */
static tg_bf_control *g_ctl;

static void on_stop(int sig)
{
    (void)sig;
    tg_bf_request_set(g_ctl, TG_BF_REQ_STOP);
}

static void on_signal(int sig)
{
    tg_bf_request r = sig == SIGUSR1 ? TG_BF_REQ_PAUSE : sig == SIGUSR2 ? TG_BF_REQ_RUN
                                                                        : TG_BF_REQ_CANCEL;
    tg_bf_request cur = tg_bf_request_get(g_ctl);
    if (cur == TG_BF_REQ_STOP || cur == TG_BF_REQ_CANCEL)
        return;               /* a stop is final */
    tg_bf_request_set(g_ctl, r);
}

static void install_signals(tg_bf_control *ctl)
{
    struct sigaction sa = {0};
    g_ctl = ctl;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART | SA_RESETHAND;   /* a second SIGINT kills at once */
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_flags = SA_RESTART;
    sa.sa_handler = on_signal;
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
}

/* ---------------------------------------------------------------- text */

static void clear_bar(out_state *o)
{
    if (o->bar) {
        fputs("\r\033[K", stdout);
        o->bar = false;
    }
}

static void ids_text(const int64_t *ids, int n, char *buf, size_t len)
{
    size_t k = 0;
    buf[0] = '\0';
    if (n == 0)
        snprintf(buf, len, "-");
    for (int i = 0; i < n && k < len; i++) {
        if (ids[i] < 0)
            k += (size_t)snprintf(buf + k, len - k, "%s(none)", i ? "," : "");
        else
            k += (size_t)snprintf(buf + k, len - k, "%s%" PRId64, i ? "," : "", ids[i]);
    }
}

static void plan_row(out_state *o, const tg_bf_table_stats *s)
{
    static const char *const head[] = {"Table", "Scanned", "Missing workspace_id",
                                        "Unresolvable tenant mapping", "Sample row ids"};
    char a[32], b[32], c[32], ids[160];
    if (!o->plan)
        o->plan = cli_table_new(5, head);
    ids_text(s->sample_ids, s->n_samples, ids, sizeof(ids));
    const char *row[] = {s->name, cli_num(s->scanned, a, sizeof(a)), cli_num(s->missing, b, sizeof(b)),
                         cli_num(s->unresolvable, c, sizeof(c)), ids};
    cli_table_add(o->plan, row);
}

static void flush_plan(out_state *o)
{
    if (o->plan) {
        cli_table_print(o->plan, stdout);
        cli_table_free(o->plan);
        o->plan = NULL;
        fflush(stdout);
    }
}

static void progress_text(out_state *o, const tg_bf_event *ev)
{
    double rate = ev->elapsed > 0 ? (double)ev->rows_this_call / ev->elapsed : 0;
    int64_t left = ev->total_rows - ev->done_rows;
    double pct = ev->total_rows > 0 ? (double)ev->done_rows / (double)ev->total_rows : 1.0;
    char d[32], t[32], r[32], eta[32];
    if (pct > 1)
        pct = 1;
    if (rate > 0 && left > 0)
        cli_duration((double)left / rate, eta, sizeof(eta));
    else
        snprintf(eta, sizeof(eta), left > 0 ? "?" : "0 s");
    cli_num(ev->done_rows, d, sizeof(d));
    cli_num(ev->total_rows, t, sizeof(t));
    cli_num((int64_t)rate, r, sizeof(r));
    if (o->tty) {
        if (ev->elapsed - o->last_line < 0.1 && o->bar && left > 0)
            return;
        char bar[31];
        int fill = (int)(pct * 30);
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : '-';
        bar[30] = '\0';
        printf("\r\033[K%-22.22s [%s] %3d%%  %s/%s rows  %s rows/s  ETA %s", ev->table->name, bar,
               (int)(pct * 100), d, t, r, eta);
        o->bar = true;
    } else {
        if (ev->elapsed - o->last_line < 5 && o->last_line > 0)
            return;
        printf("progress: %s/%s rows (%d%%), %s rows/s, ETA %s, table %s\n", d, t,
               (int)(pct * 100), r, eta, ev->table->name);
    }
    o->last_line = ev->elapsed;
    fflush(stdout);
}

static void event_text(out_state *o, const tg_bf_event *ev)
{
    char a[32], b[32];
    if (ev->type != TG_BF_EV_PROGRESS)
        clear_bar(o);
    switch (ev->type) {
    case TG_BF_EV_CONNECTED:
        printf("Connected to %s\n", ev->message);
        break;
    case TG_BF_EV_PLAN:
        plan_row(o, ev->table);
        return;
    case TG_BF_EV_RUN:
        if (o->runs++ < RUN_LINES)
            printf("Workspace %" PRId64 ": run #%" PRId64 " %s (%s rows planned)\n", ev->workspace_id,
                   ev->run_id, ev->reused ? "resumed" : "created", cli_num(ev->planned_rows, a, sizeof(a)));
        else if (o->runs == RUN_LINES + 1)
            printf("... (more runs: see tenantguard status)\n");
        o->runs_reused += ev->reused;
        break;
    case TG_BF_EV_TABLE_START:
        if (ev->cursor > 0)
            printf("%s: continuing after id %" PRId64 "\n", ev->table->name, ev->cursor);
        break;
    case TG_BF_EV_PROGRESS:
        progress_text(o, ev);
        return;
    case TG_BF_EV_TABLE_DONE:
        if (ev->table->updated > 0)
            printf("%s: %s rows bound in %s\n", ev->table->name,
                   cli_num(ev->table->updated, a, sizeof(a)), cli_duration(ev->table->seconds, b, sizeof(b)));
        break;
    case TG_BF_EV_RETRY:
        printf("%s: %s, retry %d: %s\n", ev->table ? ev->table->name : "statement", ev->reason,
               ev->attempt, ev->message);
        break;
    case TG_BF_EV_PAUSED:
        printf("Paused between batches (SIGUSR2 resumes; the lock and the runs are kept)\n");
        break;
    case TG_BF_EV_RESUMED:
        printf("Resumed\n");
        break;
    case TG_BF_EV_RUN_DONE:
        if (o->runs_done++ < RUN_LINES)
            printf("Workspace %" PRId64 ": run #%" PRId64 " %s (%s)\n", ev->workspace_id, ev->run_id,
                   ev->status, ev->outcome);
        break;
    }
    fflush(stdout);
}

/* ---------------------------------------------------------------- JSON */

static json_t *ids_json(const int64_t *ids, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, ids[i] < 0 ? json_null() : json_integer(ids[i]));
    return a;
}

static json_t *table_json(const tg_bf_table_stats *s)
{
    return json_pack("{s:s,s:b,s:I,s:I,s:I,s:I,s:o,s:o,s:f}", "table", s->name, "audit", s->audit,
                     "scanned", (json_int_t)s->scanned, "missing", (json_int_t)s->missing,
                     "unresolvable", (json_int_t)s->unresolvable, "updated", (json_int_t)s->updated,
                     "sample_ids", ids_json(s->sample_ids, s->n_samples), "sample_tenant_ids",
                     ids_json(s->sample_tenants, s->n_sample_tenants), "seconds", s->seconds);
}

/* Add x's members to o and drop x. */
static void merge(json_t *o, json_t *x)
{
    json_object_update(o, x);
    json_decref(x);
}

static void event_json(const tg_bf_event *ev)
{
    static const char *const names[] = {"connected", "plan", "run", "table_start", "progress",
                                        "table_done", "retry", "paused", "resumed", "run_done"};
    json_t *o = json_pack("{s:s}", "event", names[ev->type]);
    if (ev->table && ev->type != TG_BF_EV_PLAN)
        json_object_set_new(o, "table", json_string(ev->table->name));
    switch (ev->type) {
    case TG_BF_EV_CONNECTED:
        json_object_set_new(o, "server", json_string(ev->message));
        break;
    case TG_BF_EV_PLAN:
        merge(o, table_json(ev->table));
        break;
    case TG_BF_EV_RUN:
    case TG_BF_EV_RUN_DONE:
        json_object_set_new(o, "operation_run_id", json_integer(ev->run_id));
        json_object_set_new(o, "workspace_id", json_integer(ev->workspace_id));
        json_object_set_new(o, "status", json_string(ev->status));
        if (ev->type == TG_BF_EV_RUN) {
            json_object_set_new(o, "reused", json_boolean(ev->reused));
            json_object_set_new(o, "planned_rows", json_integer(ev->planned_rows));
        } else {
            json_object_set_new(o, "outcome", json_string(ev->outcome));
        }
        break;
    case TG_BF_EV_PROGRESS: {
        double rate = ev->elapsed > 0 ? (double)ev->rows_this_call / ev->elapsed : 0;
        int64_t left = ev->total_rows - ev->done_rows;
        merge(o, json_pack("{s:I,s:I,s:I,s:I,s:I,s:f,s:o}", "table_updated",
                                        (json_int_t)ev->table->updated, "done", (json_int_t)ev->done_rows,
                                        "total", (json_int_t)ev->total_rows, "rows_this_call",
                                        (json_int_t)ev->rows_this_call, "cursor", (json_int_t)ev->cursor,
                                        "rows_per_second", rate, "eta_seconds",
                                        rate > 0 && left > 0 ? json_real((double)left / rate) : json_integer(0)));
        break;
    }
    case TG_BF_EV_TABLE_START:
        json_object_set_new(o, "cursor", json_integer(ev->cursor));
        break;
    case TG_BF_EV_TABLE_DONE:
        json_object_set_new(o, "updated", json_integer(ev->table->updated));
        json_object_set_new(o, "seconds", json_real(ev->table->seconds));
        break;
    case TG_BF_EV_RETRY:
        merge(o, json_pack("{s:i,s:s,s:s}", "attempt", ev->attempt, "reason", ev->reason,
                                        "message", ev->message));
        break;
    default:
        break;
    }
    cli_json_line(o);
}

/* ---------------------------------------------------------------- pauses */

static void keep_run_id(out_state *o, int64_t id)
{
    if (o->n_run_ids == o->cap_run_ids) {
        int cap = o->cap_run_ids ? 2 * o->cap_run_ids : 8;
        int64_t *p = realloc(o->run_ids, (size_t)cap * sizeof(*p));
        if (!p)
            return;           /* that run's pause goes unrecorded; the work goes on */
        o->run_ids = p;
        o->cap_run_ids = cap;
    }
    o->run_ids[o->n_run_ids++] = id;
}

/* A pause (SIGUSR1) or resume (SIGUSR2) into the runs' context and the
 * audit table, as the console records its BACKFILL PAUSE / RESUME; `by` is
 * the run's actor, since a signal carries no user. Called from the event
 * callback, so the engine writes no batch meanwhile. A failure is a
 * warning: the backfill goes on. */
static void record_pause(out_state *o, tg_bf_mark what)
{
    char err[400];
    const char *name = what == TG_BF_MARK_PAUSED    ? "pause"
                       : what == TG_BF_MARK_RESUMED ? "resume"
                                                    : "end of the pause";
    if (tg_bf_record_pause(o->opts, what, o->run_ids, o->n_run_ids, o->opts->actor, err, sizeof(err)) !=
        TG_BF_OK) {
        clear_bar(o);
        fprintf(stderr, "tenantguard backfill: could not record the %s in operation_runs: %s\n", name, err);
    }
    o->pause_recorded = what == TG_BF_MARK_PAUSED;
}

static void on_event(const tg_bf_event *ev, void *arg)
{
    out_state *o = arg;
    /* Recorded before it is printed: once the line is out, the row says it. */
    if (ev->type == TG_BF_EV_RUN)
        keep_run_id(o, ev->run_id);
    else if (ev->type == TG_BF_EV_PAUSED)
        record_pause(o, TG_BF_MARK_PAUSED);
    else if (ev->type == TG_BF_EV_RESUMED)
        record_pause(o, TG_BF_MARK_RESUMED);
    if (o->cc->json) {
        event_json(ev);
        return;
    }
    if (ev->type != TG_BF_EV_PLAN)
        flush_plan(o);
    event_text(o, ev);
}

/* ---------------------------------------------------------------- the end */

static void summary_text(out_state *o, const tg_bf_result *res, const tg_policy *p)
{
    char a[32], b[32], c[32], d[32], e[32];
    flush_plan(o);
    clear_bar(o);
    if (res->status == TG_BF_REFUSED && strcmp(res->reason, "unresolvable") == 0) {
        for (int i = 0; i < res->n_tables; i++) {
            const tg_bf_table_stats *s = &res->tables[i];
            char ids[160], tids[160];
            if (s->unresolvable == 0)
                continue;
            ids_text(s->sample_ids, s->n_samples, ids, sizeof(ids));
            ids_text(s->sample_tenants, s->n_sample_tenants, tids, sizeof(tids));
            fprintf(stderr, "Unresolvable tenant->workspace mapping in %s (%s rows). Sample ids: %s "
                    "(tenants: %s)\n", s->name, cli_num(s->unresolvable, a, sizeof(a)), ids, tids);
        }
    }
    if (res->status != TG_BF_OK) {
        fprintf(stderr, "tenantguard backfill: %s\n", res->message);
        return;
    }
    if (res->dry_run) {
        int64_t missing = 0;
        for (int i = 0; i < res->n_tables; i++)
            missing += res->tables[i].missing;
        printf("Dry-run complete. No changes written (%s rows would be bound).\n",
               cli_num(missing, a, sizeof(a)));
        return;
    }
    static const char *const head[] = {"Table", "Scanned", "Missing", "Updated", "Duration"};
    cli_table *t = cli_table_new(5, head);
    for (int i = 0; i < res->n_tables; i++) {
        const tg_bf_table_stats *s = &res->tables[i];
        const char *row[] = {s->name, cli_num(s->scanned, a, sizeof(a)), cli_num(s->missing, b, sizeof(b)),
                             cli_num(s->updated, c, sizeof(c)), cli_duration(s->seconds, d, sizeof(d))};
        cli_table_add(t, row);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    printf("Done in %s: %s rows bound by this call; %d workspace run(s) (%d resumed), %s of %s "
           "planned rows done.\n", cli_duration(res->seconds, a, sizeof(a)),
           cli_num(res->rows_this_call, b, sizeof(b)), res->n_runs, res->n_runs_reused,
           cli_num(res->total_done, c, sizeof(c)), cli_num(res->total_planned, e, sizeof(e)));
    if (res->rows_left > 0)
        printf("About %s rows still miss their workspace (--max-rows, or written since the count): "
               "run the backfill again.\n", cli_num(res->rows_left, a, sizeof(a)));
    printf("Recommended validation SQL (each must return 0), or run `tenantguard validate`:\n");
    for (int i = 0; i < p->n_tables; i++) {
        char sql[400];
        tg_bf_validation_sql(&p->tables[i], sql, sizeof(sql));
        printf("  %s\n", sql);
    }
}

static void summary_json(const tg_bf_result *res, const tg_policy *p)
{
    static const char *const st[] = {"ok", "error", "refused"};
    json_t *tables = json_array(), *sql = json_array();
    for (int i = 0; i < res->n_tables; i++)
        json_array_append_new(tables, table_json(&res->tables[i]));
    for (int i = 0; i < p->n_tables; i++) {
        char s[400];
        tg_bf_validation_sql(&p->tables[i], s, sizeof(s));
        json_array_append_new(sql, json_string(s));
    }
    cli_json_line(json_pack("{s:s,s:s,s:i,s:s,s:s,s:b,s:o,s:i,s:i,s:I,s:I,s:I,s:I,s:f,s:o}",
                            "event", "summary", "status", st[res->status], "exit_code", (int)res->status,
                            "reason", res->reason, "message", res->message, "dry_run", res->dry_run,
                            "tables", tables, "runs", res->n_runs, "runs_reused", res->n_runs_reused,
                            "rows_this_call", (json_int_t)res->rows_this_call, "rows_left",
                            (json_int_t)res->rows_left, "total_planned", (json_int_t)res->total_planned,
                            "total_done", (json_int_t)res->total_done, "duration_seconds", res->seconds,
                            "validation_sql", sql));
}

/* ---------------------------------------------------------------- options */

/* The table names, wrapped at 80 columns under the --table option. */
static void wrap_names(const tg_policy *p, char *buf, size_t len)
{
    char names[2048];
    tg_bf_table_names(p, names, sizeof(names));
    size_t n = 0, col = 25;
    buf[0] = '\0';
    char *save = NULL;
    for (char *w = strtok_r(names, " ", &save); w && n + 64 < len; w = strtok_r(NULL, " ", &save)) {
        if (col + strlen(w) + 1 > 80) {
            n += (size_t)snprintf(buf + n, len - n, "\n                         ");
            col = 25;
        }
        n += (size_t)snprintf(buf + n, len - n, "%s%s", col > 25 ? " " : "", w);
        col += strlen(w) + 1;
    }
}

static void help(const tg_policy *p)
{
    char names[4096];
    wrap_names(p, names, sizeof(names));
    printf("Usage: tenantguard backfill [OPTIONS]\n\n"
           "Phase 2 of the rollout: set the workspace column of every row of the watched tables\n"
           "that has none to its tenant's workspace (the tenants table's workspace column).\n\n"
           "First it counts, per table, the rows scanned, the rows missing their workspace and\n"
           "the rows whose tenant has no workspace (unresolvable, with sample ids), and prints\n"
           "that table before writing anything. Unresolvable rows abort the run before any\n"
           "write. Then it binds rows in keyset batches by id, one short transaction per batch,\n"
           "and records the progress in operation_runs in that same transaction: a call killed\n"
           "at any moment resumes where it stopped when run again with the same --table.\n\n"
           "Runs: one operation_runs row (type " TG_BF_RUN_TYPE ")\n"
           "per call and workspace that owns a tenant; an active run of the same workspace and\n"
           "table selection (left by an interrupted call) is resumed, not duplicated. audit_logs\n"
           "gets exactly one \"started\" and one \"completed\" (or \"failed\") entry per run, and\n"
           "one \"paused\" / \"resumed\" entry per run for each pause and resume (actions\n"
           "workspace_isolation.backfill_workspace_ids.*). The audit table itself is\n"
           "backfilled too: its rows that name a tenant but no workspace.\n\n"
           "One backfill or migrate at a time per database: advisory lock %" PRId64 "\n"
           "(pg_try_advisory_lock; FNV-1a of \"" TG_BF_LOCK_NAME "\").\n\n"
           "Options:\n"
           "      --dry-run          print the per-table counts and exit; writes nothing, no lock\n"
           "      --table NAME       only this watched table, one of:\n"
           "                         %s\n"
           "      --batch-size N     rows per batch transaction (default 5000; 1..1000000)\n"
           "      --resume-from ID   start each selected table after this id, instead of where\n"
           "                         the active run stopped (rows at or below it are skipped)\n"
           "      --max-rows N       bind at most N rows per workspace run and table, then\n"
           "                         complete the run (a safety valve: run again for more)\n"
           "      --throttle-ms N    pause between two batches (default 0; up to 600000)\n"
           "      --lock-timeout MS  lock_timeout of every statement (default 2000; 5s works too)\n"
           "      --retries N        retries of a statement that hit a lock timeout, deadlock or\n"
           "                         serialization failure, with a growing pause (default 10)\n"
           "      --actor NAME       audit_logs.actor of the run's entries (default cli:USER@HOST)\n"
           CLI_COMMON_HELP
           "\nOutput: on a terminal a progress bar with rate and ETA, otherwise a progress line\n"
           "every 5 seconds; with --json one JSON object per event (connected, plan, run,\n"
           "table_start, progress, table_done, retry, paused, resumed, run_done, summary).\n"
           "Ids are the only row values ever printed.\n\n"
           "Signals: SIGINT or SIGTERM stop after the current batch (the runs stay active: run\n"
           "the same command again to resume; a second one kills at once, which is safe too);\n"
           "SIGUSR1 pauses between batches and SIGUSR2 resumes, each recorded in the runs'\n"
           "context (paused, paused_at/paused_by or resumed_at/resumed_by; by = the actor) and\n"
           "in audit_logs, as the console's BACKFILL PAUSE / RESUME are; SIGQUIT cancels: stops\n"
           "after the current batch and closes the runs as failed with reason \"cancelled\".\n\n"
           "Exit codes:\n"
           "  0   done: every planned row bound, or nothing to do; a clean dry run\n"
           "  1   error: cannot connect, bad config or table, a batch failed after its retries\n"
           "      (runs closed as failed), or the connection -- or the session holding the\n"
           "      lock -- was lost (runs stay active: run again to resume)\n"
           "  2   refused or incomplete: another backfill or migrate holds the lock, rows with\n"
           "      unresolvable tenants (nothing written; also on --dry-run), phase 1 not applied,\n"
           "      stopped by a signal (resumable) or cancelled\n"
           "  64  usage error\n",
           tg_bf_lock_key(), names);
}

static const char *default_actor(char *buf, size_t len)
{
    const char *user = getenv("USER");
    struct passwd pwbuf, *pw = NULL;
    char pwstr[1024];
    if (!user && getpwuid_r(geteuid(), &pwbuf, pwstr, sizeof(pwstr), &pw) != 0)
        pw = NULL;
    char host[256] = "localhost";
    gethostname(host, sizeof(host) - 1);
    snprintf(buf, len, "cli:%s@%s", user ? user : pw ? pw->pw_name : "unknown", host);
    return buf;
}

enum { O_DRY = 256, O_TABLE, O_BATCH, O_RESUME, O_MAX, O_THROTTLE, O_LOCKTO, O_RETRIES, O_ACTOR,
       O_JSON };

static int parse(int argc, char **argv, cli_common *cc, tg_bf_options *o, bool *want_help)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"dsn", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'}, {"dry-run", no_argument, NULL, O_DRY},
        {"table", required_argument, NULL, O_TABLE}, {"batch-size", required_argument, NULL, O_BATCH},
        {"resume-from", required_argument, NULL, O_RESUME}, {"max-rows", required_argument, NULL, O_MAX},
        {"throttle-ms", required_argument, NULL, O_THROTTLE},
        {"lock-timeout", required_argument, NULL, O_LOCKTO},
        {"retries", required_argument, NULL, O_RETRIES}, {"actor", required_argument, NULL, O_ACTOR},
        {"json", no_argument, NULL, O_JSON}, {NULL, 0, NULL, 0},
    };
    int ch, rc = 0;
    int64_t v;
    optind = 1;
    while (rc == 0 && (ch = getopt_long(argc, argv, "c:d:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': cc->config_path = optarg; break;
        case 'd': cc->dsn = optarg; break;
        case 'h': *want_help = true; break;
        case O_DRY: o->dry_run = true; break;
        case O_TABLE: o->table = optarg; break;
        case O_JSON: cc->json = true; break;
        case O_ACTOR: o->actor = optarg; break;
        case O_BATCH:
            if (!(rc = cli_int_opt(cc, "--batch-size", optarg, 1, 1000000, false, &v)))
                o->batch_size = (int)v;
            break;
        case O_RESUME:
            if (!(rc = cli_int_opt(cc, "--resume-from", optarg, 0, INT64_MAX, false, &v)))
                o->resume_from = v;
            break;
        case O_MAX:
            if (!(rc = cli_int_opt(cc, "--max-rows", optarg, 1, INT64_MAX, false, &v)))
                o->max_rows = v;
            break;
        case O_THROTTLE:
            if (!(rc = cli_int_opt(cc, "--throttle-ms", optarg, 0, 600000, false, &v)))
                o->throttle_ms = (int)v;
            break;
        case O_LOCKTO:
            if (!(rc = cli_int_opt(cc, "--lock-timeout", optarg, 1, 3600000, true, &v)))
                o->lock_timeout_ms = (int)v;
            break;
        case O_RETRIES:
            if (!(rc = cli_int_opt(cc, "--retries", optarg, 0, 1000, false, &v)))
                o->retries = (int)v;
            break;
        default:
            fprintf(stderr, "Try: tenantguard backfill --help\n");
            return CLI_EXIT_USAGE;
        }
    }
    if (rc == 0 && optind < argc)
        rc = cli_usage_error("backfill", "unexpected argument \"%s\"", argv[optind]);
    return rc;
}

int tg_cmd_backfill(int argc, char **argv)
{
    cli_common cc = {.cmd = "backfill"};
    tg_bf_options o;
    bool want_help = false;
    char actor[300];
    tg_bf_options_init(&o);
    int rc = parse(argc, argv, &cc, &o, &want_help);
    if (rc)
        return rc;
    if ((rc = cli_setup(&cc)))
        return rc;
    const tg_policy *p = &cc.cfg->policy;
    if (want_help) {
        help(p);
        cli_teardown(&cc);
        return CLI_EXIT_OK;
    }
    if (o.table && !tg_bf_find_table(p, o.table)) {
        char names[1024];
        tg_bf_table_names(p, names, sizeof(names));
        cli_teardown(&cc);
        return cli_usage_error("backfill", "--table: unknown table \"%s\"; the watched tables "
                               "are: %s", o.table, names);
    }
    o.policy = p;
    o.conninfo = cc.conninfo;
    if (!o.actor)
        o.actor = default_actor(actor, sizeof(actor));

    tg_bf_control ctl = {0};
    out_state out = {.cc = &cc, .opts = &o, .tty = !cc.json && isatty(STDOUT_FILENO)};
    tg_bf_result res;
    install_signals(&ctl);
    tg_backfill_run(&o, &ctl, on_event, &out, &res);
    /* Stopped (SIGINT) or cancelled (SIGQUIT) while paused: nothing holds
     * the runs any more. */
    if (out.pause_recorded)
        record_pause(&out, TG_BF_MARK_CLEAR);
    free(out.run_ids);
    if (cc.json)
        summary_json(&res, p);
    else
        summary_text(&out, &res, p);
    cli_table_free(out.plan);
    rc = (int)res.status;
    tg_bf_result_free(&res);
    cli_teardown(&cc);
    return rc;
}
