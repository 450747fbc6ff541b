/*
 * fastio.c -- the plain-socket fast path of the active phase (see fastio.h).
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "proxy/fastio.h"

/* One read per readiness, into this buffer, then into the evbuffer: a small
 * message costs a memcpy instead of a 64 kB chain allocation. The event loop
 * is single-threaded, so one scratch area serves every session. */
#define FASTIO_READ 65536
static __thread char scratch[FASTIO_READ];

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    fastio *f = arg;
    ssize_t n = recv(fd, scratch, sizeof(scratch), 0);
    if (n > 0) {
        /* A socket bufferevent freezes the end of its input (only libevent
         * adds to it); thaw it for our add, as libevent does for its own. */
        struct evbuffer *in = bufferevent_get_input(f->bev);
        evbuffer_unfreeze(in, 0);
        int rc = evbuffer_add(in, scratch, (size_t)n);
        evbuffer_freeze(in, 0);
        if (rc != 0) {
            f->on_event(f->bev, BEV_EVENT_READING | BEV_EVENT_ERROR, f->arg);
            return;
        }
        f->on_read(f->bev, f->arg);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    f->on_event(f->bev, BEV_EVENT_READING | (n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR), f->arg);
}

int fastio_attach(fastio *f, struct event_base *base, struct bufferevent *bev, bool plain,
                  fastio_read_fn on_read, fastio_event_fn on_event, void *arg)
{
    f->bev = bev;
    f->plain = plain;
    f->on_read = on_read;
    f->on_event = on_event;
    f->arg = arg;
    f->rev = NULL;
    f->reading = false;
    if (!plain) {
        bufferevent_enable(bev, EV_READ | EV_WRITE);
        f->reading = true;
        return 0;
    }
    /* libevent stops reading and writing this socket; we do both. */
    bufferevent_disable(bev, EV_READ | EV_WRITE);
    f->rev = event_new(base, bufferevent_getfd(bev), EV_READ | EV_PERSIST, read_cb, f);
    if (!f->rev)
        return -1;
    fastio_read(f, true);
    return 0;
}

void fastio_detach(fastio *f)
{
    if (f->rev) {
        event_free(f->rev);
        f->rev = NULL;
    }
    f->bev = NULL;
}

void fastio_read(fastio *f, bool on)
{
    if (on == f->reading || !f->bev)
        return;
    f->reading = on;
    if (f->rev) {
        if (on)
            event_add(f->rev, NULL);
        else
            event_del(f->rev);
    } else if (on) {
        bufferevent_enable(f->bev, EV_READ);
    } else {
        bufferevent_disable(f->bev, EV_READ);
    }
}

void fastio_flush(fastio *f)
{
    if (!f->plain || !f->bev)
        return;   /* TLS: libevent writes on its own */
    struct evbuffer *out = bufferevent_get_output(f->bev);
    if (evbuffer_get_length(out) == 0 || (bufferevent_get_enabled(f->bev) & EV_WRITE))
        return;   /* nothing to do, or libevent already waits to write the rest */
    /* Likewise the start of its output is frozen: thaw it to write. */
    evbuffer_unfreeze(out, 1);
    int n = evbuffer_write(out, bufferevent_getfd(f->bev));
    evbuffer_freeze(out, 1);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        f->on_event(f->bev, BEV_EVENT_WRITING | BEV_EVENT_ERROR, f->arg);
        return;
    }
    if (evbuffer_get_length(out) > 0)
        bufferevent_enable(f->bev, EV_WRITE);   /* the rest when writable */
}

void fastio_write_done(fastio *f)
{
    if (f->plain && f->bev && evbuffer_get_length(bufferevent_get_output(f->bev)) == 0)
        bufferevent_disable(f->bev, EV_WRITE);
}
