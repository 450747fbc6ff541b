/*
 * worker.h -- the daemon's worker threads: blocking work (libpq) off the
 * event loop, results back on it.
 *
 *   loop thread                       worker thread(s)
 *   workq_submit(q, job) ──queue──▶   job->run(job)       may block (libpq)
 *                                          │
 *   job->done(job)  ◀──mailbox (pipe)──────┘ mailbox_post()
 *
 * A job is a struct that embeds tg_job first. run() happens on a worker
 * thread and touches nothing of the loop's (no session, no runtime field);
 * done() happens on the loop thread, delivers the result (looks sessions up
 * by id -- the one that asked may be gone) and frees the job. A worker may
 * also post other jobs to the mailbox at any time (progress notes): their
 * done() runs on the loop in the order they were posted.
 *
 * Queues are bounded: workq_submit refuses when full. workq_stop joins the
 * threads; jobs still queued then are either run (drain) or handed to done()
 * with `cancelled` set, so every submitted job reaches done() exactly once.
 */
#ifndef TG_WORKER_H
#define TG_WORKER_H

#include <stdbool.h>
#include <sys/queue.h>

struct event_base;

typedef struct tg_job tg_job;
typedef void (*tg_job_fn)(tg_job *j);

struct tg_job {
    tg_job_fn run;              /* worker thread; NULL for a note posted by a worker */
    tg_job_fn done;             /* loop thread; owns j from then on (frees it) */
    bool cancelled;             /* never run: its queue stopped first */
    TAILQ_ENTRY(tg_job) link;   /* on a queue, then on the mailbox */
};

/* ---------------------------------------------------------------- mailbox */

/* Hands jobs from any thread to the loop thread (a pipe wakes the loop). */
typedef struct tg_mailbox tg_mailbox;

tg_mailbox *mailbox_new(struct event_base *base);
/* Any thread: j->done(j) will run on the loop thread. Never fails. */
void mailbox_post(tg_mailbox *mb, tg_job *j);
/* Loop thread: run the done() of everything posted so far (teardown). */
void mailbox_drain(tg_mailbox *mb);
/* Drains, then frees. */
void mailbox_free(tg_mailbox *mb);

/* ---------------------------------------------------------------- queues */

typedef struct tg_workq tg_workq;

/* `threads` threads sharing one queue of at most `queue_max` waiting jobs. */
tg_workq *workq_new(tg_mailbox *mb, const char *name, int threads, int queue_max);
/* Loop thread: 0 when queued (done() will follow), -1 when the queue is full
 * or stopped (the job stays the caller's). */
int workq_submit(tg_workq *q, tg_job *j);
/* Jobs waiting and running now. */
int workq_busy(tg_workq *q);
/* No new jobs; run (drain) or cancel what waits; join the threads. The
 * running jobs must be able to finish: ask them first (backfill: STOP). */
void workq_stop(tg_workq *q, bool drain);
void workq_free(tg_workq *q);   /* stops (cancelling) if not stopped */

#endif
