/*
 * fastio.h -- the I/O of one half of a session in the active phase.
 *
 * A plain socket is read and written here, not by its bufferevent: one
 * recv() per readiness, one sendmsg() per batch, EV_WRITE armed only for what
 * the kernel did not take (libevent's socket bufferevent adds an FIONREAD
 * ioctl per read and two epoll_ctl per write). Its bytes live in two evbuffers
 * of our own, without the callbacks a bufferevent hangs on its buffers, which
 * libevent runs on every add and remove (measured: a fifth of the proxy's
 * user CPU per relayed transaction went to them).
 *
 * A TLS half keeps libevent's bufferevent and its buffers (SSL needs them);
 * `in` and `out` then point at those, so the relay is the same code either
 * way. Detaching hands whatever is buffered back to the bufferevent, in
 * order, for the closing paths (which write an error and wait for it to
 * drain with the bufferevent's own machinery).
 */
#ifndef TG_FASTIO_H
#define TG_FASTIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bufferevent;
struct event;
struct event_base;
struct evbuffer;

typedef void (*fastio_read_fn)(struct bufferevent *bev, void *arg);
typedef void (*fastio_event_fn)(struct bufferevent *bev, short what, void *arg);
/* Bytes just read, with nothing buffered before them: `p` is valid only
 * during the call; what the callee leaves unconsumed it adds to `in`. */
typedef void (*fastio_flat_fn)(void *arg, const uint8_t *p, size_t n);

typedef struct fastio {
    struct bufferevent *bev;
    struct evbuffer *in, *out;   /* what the relay reads and writes */
    struct evbuffer *own_in, *own_out;   /* plain: ours; kept until fastio_free */
    struct event *rev, *wev;     /* plain: our read and write events */
    int fd;                      /* plain: the socket */
    bool plain;
    bool reading;
    bool writing;                /* plain: wev is armed */
    size_t low_water;            /* on_drained when the output is down to this */
    fastio_read_fn on_read;
    fastio_read_fn on_drained;
    fastio_event_fn on_event;
    fastio_flat_fn on_flat;      /* plain, optional: reads that find `in` empty */
    void *arg;
} fastio;

/* Take over reading and writing of a plain socket bufferevent (its buffered
 * bytes move to our buffers); for a TLS one only remember the callbacks. */
int fastio_attach(fastio *f, struct event_base *base, struct bufferevent *bev, bool plain,
                  size_t low_water, fastio_read_fn on_read, fastio_read_fn on_drained,
                  fastio_event_fn on_event, void *arg);

/* Give the bufferevent back, with what our buffers hold appended to its own.
 * `in`/`out` stay valid (empty) until fastio_free, so a caller up the stack
 * that still holds them touches nothing freed. Idempotent. */
void fastio_detach(fastio *f);
void fastio_free(fastio *f);

void fastio_read(fastio *f, bool on);

/* Write what the kernel takes now; arm EV_WRITE for the rest. */
void fastio_flush(fastio *f);

/* Append `n` bytes to the output; with nothing queued before them, write
 * them straight from `p` first and keep only what the kernel did not take.
 * A write error is left for the next fastio_flush to report. Returns 0, or
 * -1 out of memory. */
int fastio_send(fastio *f, const void *p, size_t n);

#endif
