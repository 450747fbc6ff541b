/*
 * backfill.h -- the rollout sidecar: backfill, migrate (phases 1 and 3),
 * validate and status, as a library over libpq.
 *
 * Callable from any thread: no globals, no exit(), no printing. Every call
 * opens its own connections and closes them before returning. Results come
 * back in structs; progress comes through a callback on the calling thread.
 * A caller (the CLI's signal handler, or the admin console of the daemon on
 * another thread) pauses, stops or cancels a backfill between two batches
 * by setting the request in its tg_bf_control.
 *
 * Status codes are the CLI's exit codes:
 *   TG_BF_OK       0  done (or nothing to do)
 *   TG_BF_ERROR    1  could not do the work: connection, SQL error, failed run
 *   TG_BF_REFUSED  2  refused or stopped because of the database's state, which
 *                     the operator must resolve: another run holds the lock,
 *                     unresolvable tenants, unbound rows (phase 3, validate),
 *                     phase 1 missing, interrupted on request (resumable)
 */
#ifndef TG_BACKFILL_H
#define TG_BACKFILL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy/config.h"

/* operation_runs.type and the audit_logs.action prefix (seeds 003/004). */
#define TG_BF_RUN_TYPE "workspace_isolation_backfill_workspace_ids"
#define TG_BF_ACTION_STARTED "workspace_isolation.backfill_workspace_ids.started"
#define TG_BF_ACTION_COMPLETED "workspace_isolation.backfill_workspace_ids.completed"
#define TG_BF_ACTION_FAILED "workspace_isolation.backfill_workspace_ids.failed"
#define TG_BF_ACTION_PAUSED "workspace_isolation.backfill_workspace_ids.paused"
#define TG_BF_ACTION_RESUMED "workspace_isolation.backfill_workspace_ids.resumed"

/* The advisory lock that makes backfill and migrate one-at-a-time per
 * database: pg_try_advisory_lock(tg_bf_lock_key()), the FNV-1a hash of this
 * name. */
#define TG_BF_LOCK_NAME "tenantguard:backfill-workspace-ids"
int64_t tg_bf_lock_key(void);

#define TG_BF_SAMPLES 5

typedef enum {
    TG_BF_OK = 0,
    TG_BF_ERROR = 1,
    TG_BF_REFUSED = 2,
} tg_bf_status;

/* ---------------------------------------------------------------- control */

typedef enum {
    TG_BF_REQ_RUN = 0,   /* keep going */
    TG_BF_REQ_PAUSE,     /* hold between batches, keep the lock and the runs */
    TG_BF_REQ_STOP,      /* stop between batches; runs stay active and resume next time */
    TG_BF_REQ_CANCEL,    /* stop between batches and close the runs as cancelled */
} tg_bf_request;

/* Shared between the engine and whoever drives it. Zero-initialise. */
typedef struct tg_bf_control {
    int request;          /* a tg_bf_request; use the two functions below */
} tg_bf_control;

/* Both are lock-free atomics: safe from a signal handler or another thread. */
void tg_bf_request_set(tg_bf_control *ctl, tg_bf_request r);
tg_bf_request tg_bf_request_get(const tg_bf_control *ctl);

/* ---------------------------------------------------------------- backfill */

typedef struct tg_bf_options {
    const char *conninfo;     /* libpq URI or key=value; NULL or "" = PG* environment */
    const tg_policy *policy;  /* watched tables and columns; borrowed for the call */
    const char *table;        /* one watched table ("name" or "schema.name"); NULL = all */
    int batch_size;           /* rows per batch transaction (default 5000) */
    int64_t resume_from;      /* < 0: each table resumes from its persisted cursor */
    int64_t max_rows;         /* per workspace run and table; 0 = no limit */
    int throttle_ms;          /* pause between two batches (default 0) */
    int lock_timeout_ms;      /* lock_timeout of every statement (default 2000) */
    int retries;              /* retries of a statement on 55P03/40P01/40001 (default 10) */
    bool dry_run;             /* plan only: print the counts, write nothing */
    const char *actor;        /* audit_logs.actor; NULL = "tenantguard" */
    const char *program;      /* names this process in context.runner.program:
                               * "tenantguard backfill" (NULL), "tenantguard
                               * console backfill (ops)" */
    const char *runs_table;   /* NULL = operation_runs in the tenants table's schema */
} tg_bf_options;

void tg_bf_options_init(tg_bf_options *o);

/* One table of the plan, then of the result. Ids only, never row values. */
typedef struct tg_bf_table_stats {
    char name[132];           /* as in --table and in context.table_progress */
    bool audit;               /* the audit table: rows without a tenant are out of scope */
    int64_t scanned;          /* rows in the table when planned */
    int64_t missing;          /* in scope and workspace_id IS NULL */
    int64_t unresolvable;     /* missing, and the tenant has no workspace (or no tenant) */
    int64_t sample_ids[TG_BF_SAMPLES];       /* unresolvable rows, lowest ids */
    int n_samples;
    int64_t sample_tenants[TG_BF_SAMPLES];   /* their tenants (-1: no tenant id) */
    int n_sample_tenants;
    int64_t updated;          /* rows bound by this invocation */
    double seconds;           /* time spent on its batches */
} tg_bf_table_stats;

typedef enum {
    TG_BF_EV_CONNECTED,   /* message: "user@host:port/db" (never a password) */
    TG_BF_EV_PLAN,        /* table: the plan of one table, before any write */
    TG_BF_EV_RUN,         /* one operation_runs row created or reused */
    TG_BF_EV_TABLE_START, /* table, cursor */
    TG_BF_EV_PROGRESS,    /* after each batch: table, rows, cursor */
    TG_BF_EV_TABLE_DONE,  /* table */
    TG_BF_EV_RETRY,       /* a statement is retried: attempt, reason, message */
    TG_BF_EV_PAUSED,
    TG_BF_EV_RESUMED,
    TG_BF_EV_RUN_DONE,    /* one run closed: status, outcome */
} tg_bf_event_type;

typedef struct tg_bf_event {
    tg_bf_event_type type;
    const tg_bf_table_stats *table;
    /* TG_BF_EV_RUN, TG_BF_EV_RUN_DONE */
    int64_t run_id;
    int64_t workspace_id;
    bool reused;              /* an active run of the same identity was found */
    const char *status;       /* queued, running, completed */
    const char *outcome;      /* RUN_DONE: succeeded, partially_succeeded, failed */
    int64_t planned_rows;     /* RUN: its summary_counts.total */
    /* TG_BF_EV_PROGRESS: overall, across tables and runs */
    int64_t done_rows;        /* bound so far by the active runs (incl. before a resume) */
    int64_t total_rows;       /* planned by the active runs */
    int64_t rows_this_call;   /* bound by this invocation */
    double elapsed;           /* seconds since the first batch */
    int64_t cursor;           /* TABLE_START, PROGRESS: keyset cursor (last id covered) */
    /* TG_BF_EV_RETRY */
    int attempt;
    const char *reason;       /* lock_timeout, deadlock, serialization_failure */
    const char *message;      /* CONNECTED, RETRY: text for the operator */
} tg_bf_event;

typedef void (*tg_bf_event_fn)(const tg_bf_event *ev, void *arg);

typedef struct tg_bf_result {
    tg_bf_status status;
    char message[768];        /* what went wrong and what to do; "" when OK */
    char reason[48];          /* machine-readable: lock_held, unresolvable, interrupted, ... */
    tg_bf_table_stats *tables;
    int n_tables;
    int n_runs;               /* operation_runs rows used by this invocation */
    int n_runs_reused;
    int64_t total_planned;    /* sum of the runs' summary_counts.total */
    int64_t total_done;       /* bound by the runs, over all their invocations */
    int64_t rows_this_call;   /* bound by this invocation */
    int64_t rows_left;        /* still missing at the end in the selected tables */
    double seconds;
    bool dry_run;
} tg_bf_result;

void tg_bf_result_free(tg_bf_result *r);

/*
 * Run the backfill: plan (per table counts, before any write), abort on
 * unresolvable tenants, then per batch bind rows and persist progress in
 * the same transaction. `fn` may be NULL. Fills *res (free it with
 * tg_bf_result_free) and returns res->status.
 */
tg_bf_status tg_backfill_run(const tg_bf_options *o, tg_bf_control *ctl, tg_bf_event_fn fn,
                             void *arg, tg_bf_result *res);

/* ---------------------------------------------------------------- pauses */

/*
 * The engine only reports a pause to its caller (TG_BF_EV_PAUSED before it
 * holds between two batches, TG_BF_EV_RESUMED before the next batch); the
 * caller records it with tg_bf_record_pause(), from its event callback, so
 * no batch writes the runs meanwhile. The CLI and the console both do, so a
 * paused run looks the same in operation_runs whoever drives it.
 */
typedef enum {
    TG_BF_MARK_PAUSED,    /* context.paused true, paused_at, paused_by; a "paused" audit entry */
    TG_BF_MARK_RESUMED,   /* context.paused false, resumed_at, resumed_by; a "resumed" audit entry */
    TG_BF_MARK_CLEAR,     /* the call ended while paused: context.paused false, no audit entry */
} tg_bf_mark;

/*
 * Record a pause or a resume of the runs `runs[0..n_runs)` (the run_id of
 * the TG_BF_EV_RUN events): their context, and one audit entry per run still
 * queued or running, actor o->actor, context {operation_run_id, by}. `by`
 * is who asked (NULL: o->actor). The entries go where the run's started and
 * completed entries go: the policy's audit table, or with none, audit_logs
 * beside the tenants table. One statement on a connection of its own
 * (o->conninfo, o->lock_timeout_ms, retried o->retries times). Returns
 * TG_BF_OK, or TG_BF_ERROR with a sanitized reason in msg; the caller's run
 * goes on either way.
 */
tg_bf_status tg_bf_record_pause(const tg_bf_options *o, tg_bf_mark what, const int64_t *runs, int n_runs,
                                const char *by, char *msg, size_t msglen);

/* The watched table named `name` ("name" or "schema.name"), or NULL. */
const tg_table *tg_bf_find_table(const tg_policy *p, const char *name);
/* The valid names, comma-separated, for an error message. */
void tg_bf_table_names(const tg_policy *p, char *buf, size_t len);

/* The quickstart's validation statements for one table, as an operator
 * would type them (e.g. "SELECT count(*) FROM policies WHERE workspace_id
 * IS NULL;"). */
void tg_bf_validation_sql(const tg_table *t, char *buf, size_t len);

/* ---------------------------------------------------------------- migrate */

typedef struct tg_migrate_options {
    const char *conninfo;
    const tg_policy *policy;
    int phase;                /* 1 or 3 */
    bool dry_run;             /* print the steps and their SQL, change nothing */
    int lock_timeout_ms;
    int retries;
} tg_migrate_options;

typedef enum {
    TG_MIG_STEP_EXISTS,       /* already in place: skipped */
    TG_MIG_STEP_PLANNED,      /* dry run: would execute sql */
    TG_MIG_STEP_DONE,         /* executed */
} tg_migrate_step_state;

typedef struct tg_migrate_step {
    const char *what;         /* "add column workspace_id to public.policies" */
    const char *sql;          /* statement(s); for EXISTS the SQL it would have run */
    tg_migrate_step_state state;
    double seconds;
    int attempts;
} tg_migrate_step;

typedef void (*tg_migrate_step_fn)(const tg_migrate_step *step, void *arg);

/* Runs (or, dry, lists) the phase's steps in order; each step is reported
 * through fn when it is done or skipped. Retries come through retry_fn
 * (may be NULL) as TG_BF_EV_RETRY events. */
tg_bf_status tg_migrate_run(const tg_migrate_options *o, tg_migrate_step_fn fn,
                            tg_bf_event_fn retry_fn, void *arg, char *msg, size_t msglen);

/* ---------------------------------------------------------------- validate */

typedef struct tg_validate_row {
    char name[132];
    bool audit;
    int64_t missing;          /* owned: workspace_id IS NULL; audit: tenant set, workspace not */
    int64_t mismatched;       /* owned: workspace_id differs from its tenant's; audit: -1 */
    char sql[400];            /* the quickstart statement for `missing` */
} tg_validate_row;

/* Counts per watched table. Returns TG_BF_OK when every count is 0,
 * TG_BF_REFUSED when some are not, TG_BF_ERROR (msg set) when it could not
 * count. *rows is malloc'd (free()), one per watched table. */
tg_bf_status tg_validate_run(const char *conninfo, const tg_policy *p, tg_validate_row **rows,
                             int *n_rows, char *msg, size_t msglen);

/* ---------------------------------------------------------------- status */

/*
 * The latest backfill runs as a JSON text: {"lock": {...} | null, "runs": [...]}.
 * limit > 0: the `limit` most recent runs; 0: the active runs and the runs of
 * the latest invocation.
 *
 * A call that drives runs records itself in their context.runner when it
 * starts or takes them over: {program, pid, host, since, backend_pid,
 * backend_start} -- its own OS pid and host name, and the PostgreSQL
 * session through which it holds the lock.
 *
 * `lock`: the session holding the advisory lock: `backend_pid` (a server
 * backend's pid, not the holding process's; also as `pid`, its name before
 * there was a runner), `client`, `application`, `since` (when that session
 * connected), and `runner`: the context.runner of the active runs whose
 * recorded session is this one (same backend pid, and same backend_start
 * when this role can see it, since backend pids are reused), or null: no
 * run records the holder (a migrate, an older tenantguard, or a call still
 * planning).
 *
 * Per run, besides its columns: `runner` (as recorded, or null: the process
 * that last drove it); `interrupted` (active, and not driven now: nobody
 * holds the lock, or the holder's runner is known and is not this run's)
 * and `paused` (active, not interrupted, its context says paused and a
 * process holds the lock: held between two batches), with `paused_at` and
 * `paused_by` (null unless paused). A run is driven by the holder's process
 * exactly when its `runner` equals `lock.runner`. Returns a malloc'd
 * string, or NULL with msg set.
 */
char *tg_status_json(const char *conninfo, const tg_policy *p, int limit, char *msg, size_t msglen);

#endif
