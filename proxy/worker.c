/*
 * worker.c -- worker threads and the mailbox back to the event loop (see
 * worker.h).
 *
 * The mailbox is a mutex-protected list plus a non-blocking pipe: a poster
 * appends and writes one byte when the list was empty; the loop's read
 * event drains the pipe, takes the whole list and runs each done(). The
 * event loop itself stays single-threaded (no evthread locking on the hot
 * path): only the pipe crosses threads.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "policy/log.h"
#include "proxy/worker.h"

TAILQ_HEAD(job_list, tg_job);

/* ---------------------------------------------------------------- mailbox */

struct tg_mailbox {
    pthread_mutex_t mu;
    struct job_list posted;     /* under mu */
    bool signalled;             /* a byte is in the pipe since the last drain (under mu) */
    int fd[2];                  /* [0] read by the loop, [1] written by posters */
    struct event *ev;
};

static void mailbox_run(tg_mailbox *mb)
{
    struct job_list batch;
    TAILQ_INIT(&batch);
    pthread_mutex_lock(&mb->mu);
    TAILQ_CONCAT(&batch, &mb->posted, link);
    mb->signalled = false;
    pthread_mutex_unlock(&mb->mu);
    tg_job *j;
    while ((j = TAILQ_FIRST(&batch)) != NULL) {
        TAILQ_REMOVE(&batch, j, link);
        j->done(j);   /* frees j */
    }
}

static void mailbox_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    char buf[64];
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    mailbox_run(arg);
}

tg_mailbox *mailbox_new(struct event_base *base)
{
    tg_mailbox *mb = calloc(1, sizeof(*mb));
    if (!mb)
        return NULL;
    TAILQ_INIT(&mb->posted);
    pthread_mutex_init(&mb->mu, NULL);
    if (pipe2(mb->fd, O_NONBLOCK | O_CLOEXEC) != 0) {
        pthread_mutex_destroy(&mb->mu);
        free(mb);
        return NULL;
    }
    mb->ev = event_new(base, mb->fd[0], EV_READ | EV_PERSIST, mailbox_cb, mb);
    if (!mb->ev || event_add(mb->ev, NULL) != 0) {
        mailbox_free(mb);
        return NULL;
    }
    return mb;
}

void mailbox_post(tg_mailbox *mb, tg_job *j)
{
    pthread_mutex_lock(&mb->mu);
    TAILQ_INSERT_TAIL(&mb->posted, j, link);
    bool wake = !mb->signalled;
    mb->signalled = true;
    pthread_mutex_unlock(&mb->mu);
    /* One byte per batch of posts; a full pipe already wakes the loop. */
    if (wake) {
        ssize_t n;
        do
            n = write(mb->fd[1], "", 1);
        while (n < 0 && errno == EINTR);
    }
}

void mailbox_drain(tg_mailbox *mb)
{
    if (mb)
        mailbox_run(mb);
}

void mailbox_free(tg_mailbox *mb)
{
    if (!mb)
        return;
    mailbox_run(mb);
    if (mb->ev)
        event_free(mb->ev);
    close(mb->fd[0]);
    close(mb->fd[1]);
    pthread_mutex_destroy(&mb->mu);
    free(mb);
}

/* ---------------------------------------------------------------- queues */

struct tg_workq {
    tg_mailbox *mb;
    char name[16];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job_list waiting;    /* under mu */
    int n_waiting, n_running;   /* under mu */
    int queue_max;
    bool stopping, drain;       /* under mu */
    bool stopped;               /* loop thread only: threads joined */
    pthread_t *threads;
    int n_threads;
};

static void *worker_main(void *arg)
{
    tg_workq *q = arg;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (TAILQ_EMPTY(&q->waiting) && !q->stopping)
            pthread_cond_wait(&q->cv, &q->mu);
        tg_job *j = TAILQ_FIRST(&q->waiting);
        if (!j || (q->stopping && !q->drain))
            break;
        TAILQ_REMOVE(&q->waiting, j, link);
        q->n_waiting--;
        q->n_running++;
        pthread_mutex_unlock(&q->mu);
        j->run(j);
        mailbox_post(q->mb, j);
        pthread_mutex_lock(&q->mu);
        q->n_running--;
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

tg_workq *workq_new(tg_mailbox *mb, const char *name, int threads, int queue_max)
{
    tg_workq *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    q->mb = mb;
    snprintf(q->name, sizeof(q->name), "tg-%s", name);
    q->queue_max = queue_max;
    TAILQ_INIT(&q->waiting);
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    q->threads = calloc((size_t)threads, sizeof(pthread_t));
    if (!q->threads) {
        workq_free(q);
        return NULL;
    }
    for (int i = 0; i < threads; i++) {
        int rc = pthread_create(&q->threads[i], NULL, worker_main, q);
        if (rc != 0) {
            log_error("cannot start a %s thread: %s", q->name, strerror(rc));
            workq_free(q);
            return NULL;
        }
        pthread_setname_np(q->threads[i], q->name);
        q->n_threads++;
    }
    return q;
}

int workq_submit(tg_workq *q, tg_job *j)
{
    int rc = -1;
    j->cancelled = false;
    pthread_mutex_lock(&q->mu);
    if (!q->stopping && q->n_waiting < q->queue_max) {
        TAILQ_INSERT_TAIL(&q->waiting, j, link);
        q->n_waiting++;
        pthread_cond_signal(&q->cv);
        rc = 0;
    }
    pthread_mutex_unlock(&q->mu);
    return rc;
}

int workq_busy(tg_workq *q)
{
    pthread_mutex_lock(&q->mu);
    int n = q->n_waiting + q->n_running;
    pthread_mutex_unlock(&q->mu);
    return n;
}

void workq_stop(tg_workq *q, bool drain)
{
    if (!q || q->stopped)
        return;
    pthread_mutex_lock(&q->mu);
    q->stopping = true;
    q->drain = drain;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    for (int i = 0; i < q->n_threads; i++)
        pthread_join(q->threads[i], NULL);
    q->stopped = true;
    /* What no thread took: to done(), marked as never run. */
    tg_job *j;
    while ((j = TAILQ_FIRST(&q->waiting)) != NULL) {
        TAILQ_REMOVE(&q->waiting, j, link);
        q->n_waiting--;
        j->cancelled = true;
        mailbox_post(q->mb, j);
    }
}

void workq_free(tg_workq *q)
{
    if (!q)
        return;
    workq_stop(q, false);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    free(q->threads);
    free(q);
}
