/*
 * admin_bf.h -- private to the console's backfill (admin_backfill.c: the
 * commands and the job on the backfill thread; admin_bfshow.c: SHOW
 * BACKFILL and the DRY RUN table). The public part is in admin.h.
 */
#ifndef TG_ADMIN_BF_H
#define TG_ADMIN_BF_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "backfill/backfill.h"
#include "proxy/admin.h"
#include "proxy/worker.h"

struct evbuffer;
struct tg_runtime;

/* One operation run of the job, as the engine announced it. */
typedef struct abf_run {
    int64_t id, ws, planned;
    bool reused;
    char status[16];            /* queued, running, completed */
    char outcome[24];           /* once completed */
} abf_run;

/* What the backfill thread reports; read by the loop under abf_job.mu. */
typedef struct abf_snap {
    bool started;               /* the runs are running: START answers */
    bool paused;                /* the engine holds between two batches */
    abf_run *runs;
    int n_runs, cap_runs;
    int64_t done_rows, total_rows, rows_this_call;
    double elapsed;             /* seconds since the first batch */
    char table[132];            /* the table being worked on */
} abf_snap;

/* A backfill call (START) or plan (DRY RUN) on a worker thread. */
typedef struct abf_job {
    tg_job job;
    struct tg_mailbox *mb;
    tg_config *cfg;             /* reference: sidecar_dsn and the policy, for the whole call */
    char *conninfo;             /* sidecar_dsn + application_name naming the console user */
    tg_bf_options o;
    tg_bf_control ctl;          /* PAUSE / RESUME / CANCEL / STOP from the loop */
    char table[132], actor[160], user[64];
    char program[120];          /* o.program: the runs' context.runner names this daemon so */
    bool dry_run;
    tg_bf_result res;           /* filled by the call; read in done() */
    pthread_mutex_t mu;
    abf_snap snap;              /* under mu */
    char req_user[64];          /* under mu: who asked for the last pause / resume */
    bool pause_recorded;        /* backfill thread only */
    struct tg_runtime *rt;      /* loop thread only */
    uint64_t dry_session;       /* DRY RUN: the console that gets the plan */
} abf_job;

/* A job for the console session s of this command (sidecar_dsn, the
 * options of a[]: TABLE, and for START BATCH / MAX ROWS / THROTTLE), or NULL
 * with the error written to out. */
abf_job *abf_prepare(tg_session *s, const adm_args *a, bool dry, struct evbuffer *out, const char *syntax);
void abf_job_free(abf_job *j);
/* The SQLSTATE a console answer gets for a call that did not succeed. */
const char *abf_error_sqlstate(const tg_bf_result *res);
/* The command answers later: the console reads no more until then. */
void abf_hold(tg_session *s);

/* The short-job queue (SHOW BACKFILL, DRY RUN), created when first needed. */
tg_workq *abf_jobs(struct tg_runtime *rt);
/* The console session `id` when it still waits for an answer, else NULL. */
tg_session *abf_waiting_console(struct tg_runtime *rt, uint64_t id);
/* DRY RUN's answer: the engine's message as a NOTICE (unresolvable rows),
 * one row per table of the plan, then CommandComplete. */
void abf_write_plan(const tg_bf_result *res, struct evbuffer *out);
/* Does this process drive run `run_id` now (and is it paused)? */
bool admin_backfill_runs_here(const struct tg_runtime *rt, int64_t run_id, bool *paused);
/* Was run `run_id` driven by the last console job here, which has ended? */
bool admin_backfill_ended_here(const struct tg_runtime *rt, int64_t run_id);
/* How the last console run of this process ended; NULL before any. */
const char *admin_backfill_last(const struct tg_runtime *rt);

#endif
