/*
 * bf_internal.h -- private to backfill/: connections and errors (bf_db.c),
 * the plan (bf_plan.c), operation_runs and audit_logs (bf_runs.c), shared
 * by the engine (bf_engine.c), migrate.c and validate.c.
 *
 * Identifiers from the policy are plain SQL identifiers (config.c checks
 * that), but every one is still quoted where SQL is built, so a name that
 * is also a keyword (`order`) or has capitals works.
 */
#ifndef TG_BF_INTERNAL_H
#define TG_BF_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "backfill/backfill.h"

/* ---------------------------------------------------------------- bf_db.c */

/* An error to show an operator: the SQLSTATE and a sanitized message (no
 * DETAIL, no literals, no passwords). */
typedef struct bf_err {
    char sqlstate[6];
    char message[320];
} bf_err;

#define BF_IDENT_MAX 132        /* a quoted identifier: 63 bytes, doubled quotes, "" */
#define BF_QNAME_MAX 272        /* "schema"."name" */

PGconn *bf_connect(const char *conninfo, const char *appname, int lock_timeout_ms, bf_err *err);
/* "user@host:port/db" of a live connection; never a password. */
void bf_conn_describe(PGconn *c, char *buf, size_t len);
/* A conninfo with its password masked, for messages about a failed connect. */
void bf_conninfo_mask(const char *conninfo, char *buf, size_t len);

/* PQexecParams in text mode. Returns the result when it is OK (tuples or
 * command), else NULL with *err filled. */
PGresult *bf_exec(PGconn *c, const char *sql, int nparams, const char *const *params, bf_err *err);

/* PQexec of a script (several statements, simple protocol). */
bool bf_exec_script(PGconn *c, const char *sql, bf_err *err);

/* Retry wrapper: the statement is retried (after a growing pause, polling
 * ctl between) while it fails with a transient SQLSTATE (55P03, 40P01,
 * 40001), at most `retries` times. `cb` sees each retry. Every statement
 * run through this must be a single transaction of its own. */
typedef struct bf_retry {
    int retries;
    tg_bf_control *ctl;       /* may be NULL */
    tg_bf_event_fn fn;        /* may be NULL */
    void *arg;
    const tg_bf_table_stats *table;   /* named in the retry event */
} bf_retry;
PGresult *bf_exec_retry(PGconn *c, const bf_retry *r, const char *sql, int nparams,
                        const char *const *params, bf_err *err);

bool bf_err_transient(const bf_err *e);
bool bf_err_connection(const bf_err *e);
/* Normalized cause for failure_summary.reason_code. */
const char *bf_reason_code(const bf_err *e);
/* The sanitizer: primary message only, quoted literals replaced by ?. */
void bf_sanitize(const char *in, char *out, size_t len);

void bf_quote_ident(const char *id, char *buf, size_t len);
void bf_qualify(const char *schema, const char *name, char *buf, size_t len);
/* "name" for tables in public, "schema.name" otherwise. */
void bf_table_key(const tg_table *t, char *buf, size_t len);

/* Sleep ms milliseconds in slices; returns early (false) when ctl asks to
 * stop or cancel. */
bool bf_sleep_ms(int ms, const tg_bf_control *ctl);
double bf_now(void);

int64_t bf_int64(const PGresult *r, int row, int col);   /* NULL -> -1 */
/* Parse "{1,2,3}" (a bigint[] in text form); returns how many, at most max. */
int bf_parse_int8_array(const char *s, int64_t *out, int max);

/* ---------------------------------------------------------------- the lock */

/* A timestamptz as UTC text to the microsecond, whatever the session's
 * TimeZone: the same instant reads the same from any client, so two
 * processes can compare it as text (a lock session's backend_start). */
#define BF_SQL_UTC_US(x) \
    "pg_catalog.to_char((" x ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/* The session holding the lock. pid is a PostgreSQL backend's, on the
 * database server: never the process of the backfill behind it. */
typedef struct bf_holder {
    bool known;
    int pid;                  /* backend pid */
    char client[128];         /* "10.0.0.5:53412", "local socket", or "" */
    char application[64];
    char since[40];           /* backend_start, to the second, for people */
    char backend_start[40];   /* BF_SQL_UTC_US(backend_start); "" when not visible */
} bf_holder;

/* 1: we hold it now; 0: someone else does (*h describes them); -1: error. */
int bf_lock_try(PGconn *c, bf_holder *h, bf_err *err);
/* Who holds it (h->known false when nobody or not visible). On the session
 * that holds it, that session itself: what every reader will see. */
bool bf_lock_holder(PGconn *c, bf_holder *h, bf_err *err);
void bf_holder_describe(const bf_holder *h, char *buf, size_t len);
/* The refusal text: "another backfill is running (backend pid 4711, client ...)". */
void bf_lock_refusal(const bf_holder *h, char *buf, size_t len);

/* ---------------------------------------------------------------- bf_plan.c */

/* One selected table, with its SQL names ready. */
typedef struct bf_tbl {
    const tg_table *t;
    char qname[BF_QNAME_MAX];     /* "schema"."table" */
    char pk[BF_IDENT_MAX];        /* the single-column integer primary key */
    char tcol[BF_IDENT_MAX];      /* tenant column */
    char wcol[BF_IDENT_MAX];      /* workspace column */
    tg_bf_table_stats st;
} bf_tbl;

/* The tenants table and the names every statement needs. */
typedef struct bf_names {
    char tenants[BF_QNAME_MAX];
    char tid[BF_IDENT_MAX];
    char tws[BF_IDENT_MAX];
    char runs[BF_QNAME_MAX];      /* operation_runs */
    char audit[BF_QNAME_MAX];     /* audit_logs */
    char audit_tcol[BF_IDENT_MAX];
    char audit_wcol[BF_IDENT_MAX];
} bf_names;

/* Missing rows of one workspace, per selected table (its runs' targets). */
typedef struct bf_load {
    int64_t ws;
    int64_t *missing;             /* [n_tbl] */
} bf_load;

typedef struct bf_plan {
    bf_names nm;
    bf_tbl *tbl;
    int n_tbl;
    bf_load *load;                /* sorted by ws */
    int n_load;
} bf_plan;

/* Select the tables (all, or the one named), check the catalog. Fills msg
 * and returns TG_BF_REFUSED for an unknown table name or a table without
 * its workspace column (phase 1 missing), TG_BF_ERROR otherwise. */
tg_bf_status bf_plan_tables(PGconn *c, const tg_bf_options *o, bf_plan *p, char *msg, size_t len);
/* One table in the catalog: exists, has tcol and wcol, and (pk not NULL)
 * a single-column integer primary key, whose quoted name goes to pk.
 * TG_BF_REFUSED when only wcol is missing (phase 1 not applied). */
tg_bf_status bf_check_table(PGconn *c, const char *schema, const char *name, const char *tcol,
                            const char *wcol, char *pk, size_t pklen, char *msg, size_t len);
/* Count per table and per workspace (one scan per table); a workspace's
 * load counts only rows above resume_from. */
tg_bf_status bf_plan_count(PGconn *c, bf_plan *p, int64_t resume_from, bf_err *err);
void bf_plan_free(bf_plan *p);
void bf_names_init(bf_names *nm, const tg_policy *p, const char *runs_table);

/* ---------------------------------------------------------------- validate.c */

/* tg_validate_run on an open connection (migrate --phase 3 refuses on it). */
tg_bf_status bf_validate_conn(PGconn *c, const tg_policy *p, tg_validate_row **rows, int *n_rows,
                              char *msg, size_t msglen);

/* ---------------------------------------------------------------- bf_runs.c */

typedef struct bf_run {
    int64_t id;
    int64_t ws;
    bool reused;
    bool running;                 /* status running (its started entry exists) */
    bool left_paused;             /* reused with context.paused true: its call died paused */
    int64_t *target;              /* [n_tbl] table_progress.target_rows */
    int64_t *done;                /* [n_tbl] table_progress.processed */
    int64_t *last;                /* [n_tbl] table_progress.last_processed_id */
} bf_run;

typedef struct bf_runs {
    bf_run *r;
    int n;
} bf_runs;

/* The identity of a run: the selected tables as a JSON array, sorted. */
char *bf_runs_tables_json(const bf_plan *p);
/* Create (queued) or reuse the active run of every workspace in scope, in
 * one statement. */
bool bf_runs_ensure(PGconn *c, const bf_retry *rt, const tg_bf_options *o, const bf_plan *p,
                    bf_runs *runs, bf_err *err);
/* queued -> running, with exactly one "started" audit entry per run, in one
 * statement (a run already running gets none). Every run, started now or
 * reused running, gets context.runner: this process (OS pid, host name,
 * o->program) and `self`, the session holding the lock (bf_lock_holder on
 * it; NULL when unknown), stamped `since` now. Batches and pauses keep it;
 * it stays after the run ends, naming who drove it last. */
bool bf_runs_start(PGconn *c, const bf_retry *rt, const tg_bf_options *o, const bf_plan *p,
                   const bf_holder *self, bf_runs *runs, bf_err *err);
/* -> completed with an outcome and exactly one completed/failed audit
 * entry per run, in one statement. failure NULL: the work is done. */
typedef struct bf_failure {
    const char *code;
    const char *reason_code;
    const char *message;          /* sanitized */
} bf_failure;
bool bf_runs_finish(PGconn *c, const bf_retry *rt, const tg_bf_options *o, const bf_plan *p,
                    bf_runs *runs, const bf_failure *failure, tg_bf_event_fn fn, void *arg,
                    bf_err *err);
/* The runs found left paused (context.paused true: their call was killed
 * while paused) are resumed by this call, before its first batch: the
 * statement of tg_bf_record_pause(TG_BF_MARK_RESUMED), by and actor
 * o->actor, so operation_runs and the audit table say they run again.
 * No statement when there is none. */
bool bf_runs_take_over(PGconn *c, const bf_retry *rt, const tg_bf_options *o, const bf_plan *p,
                       const bf_runs *runs, bf_err *err);
void bf_runs_free(bf_runs *runs);
/* The hash expression over (type, workspace, tables) in SQL; $ws_expr and
 * $tables_param name the workspace expression and the tables parameter. */
void bf_identity_sql(const char *ws_expr, const char *tables_param, char *buf, size_t len);

/* The batch statement for table i: binds up to $2 missing rows after $1 of
 * the workspaces in $3 (whose runs are $4) and adds the counts to those
 * runs' progress, in one statement. */
char *bf_batch_sql(const bf_plan *p, int i);

#endif
