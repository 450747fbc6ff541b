/*
 * fastio.h -- fewer syscalls per relayed message for plain sockets.
 *
 * libevent's socket bufferevent asks FIONREAD before every read and, when
 * data is added to its output, waits for the next loop pass to write it,
 * arming and disarming EPOLLOUT around it: readv + ioctl + writev + 2
 * epoll_ctl per forwarded message (measured with strace -c). In the active
 * phase a plain socket instead gets one recv() per readiness into the
 * bufferevent's input, and its output is written straight away at the end
 * of each batch; EV_WRITE is armed only for what the kernel did not take.
 * TLS bufferevents keep libevent's own paths (SSL needs them).
 */
#ifndef TG_FASTIO_H
#define TG_FASTIO_H

#include <stdbool.h>

struct bufferevent;
struct event;
struct event_base;

typedef void (*fastio_read_fn)(struct bufferevent *bev, void *arg);
typedef void (*fastio_event_fn)(struct bufferevent *bev, short what, void *arg);

typedef struct fastio {
    struct bufferevent *bev;
    struct event *rev;        /* our read event; NULL when not plain */
    bool plain;
    bool reading;
    fastio_read_fn on_read;
    fastio_event_fn on_event;
    void *arg;
} fastio;

/* Take over reading (and writing) of a plain socket bufferevent; for a TLS
 * one only remember the callbacks. scratch: a buffer for recv(). */
int fastio_attach(fastio *f, struct event_base *base, struct bufferevent *bev, bool plain,
                  fastio_read_fn on_read, fastio_event_fn on_event, void *arg);
void fastio_detach(fastio *f);

void fastio_read(fastio *f, bool on);

/* Write what the kernel takes now; arm EV_WRITE for the rest. */
void fastio_flush(fastio *f);

/* The bufferevent's write callback for a plain socket calls this: when the
 * output is empty, stop watching writability. */
void fastio_write_done(fastio *f);

#endif
