/*
 * fastio.c -- the I/O of one half of a session in the active phase (see
 * fastio.h).
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "proxy/fastio.h"

/* One read per readiness, into this buffer, then into the evbuffer: a small
 * message costs a memcpy instead of a 64 kB chain allocation. The event loop
 * is single-threaded, so one scratch area serves every session. */
#define FASTIO_READ 65536
static __thread char scratch[FASTIO_READ];

/* Level-triggered, on purpose. Edge-triggered events would spare epoll one
 * tcp_poll per event (measured: 0.23 us of CPU per relayed transaction),
 * but a peer's RST that arrives with bytes still unread then goes unseen:
 * libevent reports EPOLLHUP/EPOLLERR as EV_READ|EV_WRITE, never EV_CLOSED,
 * so a read cannot tell that an error waits behind its bytes, and no new
 * edge comes (test_client_vanishing[copy-rst] hung: the server stayed in
 * COPY). Only reading until EAGAIN is safe with edges, and that extra
 * recv() costs more than it saves. */
static void read_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    fastio *f = arg;
    ssize_t n = recv(fd, scratch, sizeof(scratch), 0);
    if (n > 0) {
        if (f->on_flat && evbuffer_get_length(f->in) == 0) {
            f->on_flat(f->arg, (const uint8_t *)scratch, (size_t)n);
            return;
        }
        if (evbuffer_add(f->in, scratch, (size_t)n) != 0) {
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

/* Write what the kernel takes; false after a write error (on_event ran).
 * send()/sendmsg(), not the writev() of evbuffer_write(): a socket written
 * through the file layer also pays its permission check and fsnotify hook,
 * which the socket calls skip; one piece goes with send(), which spares the
 * kernel copying in a msghdr and an iovec. */
#define FASTIO_IOV 64
static bool write_some(fastio *f)
{
    struct evbuffer_iovec v[FASTIO_IOV];
    int nv = evbuffer_peek(f->out, -1, NULL, v, FASTIO_IOV);
    if (nv <= 0)
        return true;
    if (nv > FASTIO_IOV)
        nv = FASTIO_IOV;   /* the rest on the next write */
    ssize_t n;
    if (nv == 1) {
        n = send(f->fd, v[0].iov_base, v[0].iov_len, MSG_NOSIGNAL | MSG_DONTWAIT);
    } else {
        struct iovec iov[FASTIO_IOV];
        for (int i = 0; i < nv; i++) {
            iov[i].iov_base = v[i].iov_base;
            iov[i].iov_len = v[i].iov_len;
        }
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)nv};
        n = sendmsg(f->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    if (n > 0) {
        evbuffer_drain(f->out, (size_t)n);
        return true;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        f->on_event(f->bev, BEV_EVENT_WRITING | BEV_EVENT_ERROR, f->arg);
        return false;
    }
    return true;
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fastio *f = arg;
    f->writing = false;
    if (!write_some(f))
        return;
    size_t left = evbuffer_get_length(f->out);
    if (left > 0 && event_add(f->wev, NULL) == 0)
        f->writing = true;   /* the rest when writable again */
    if (left <= f->low_water)
        f->on_drained(f->bev, f->arg);
}

int fastio_attach(fastio *f, struct event_base *base, struct bufferevent *bev, bool plain,
                  size_t low_water, fastio_read_fn on_read, fastio_read_fn on_drained,
                  fastio_event_fn on_event, void *arg)
{
    f->bev = bev;
    f->plain = plain;
    f->low_water = low_water;
    f->on_read = on_read;
    f->on_drained = on_drained;
    f->on_event = on_event;
    f->arg = arg;
    f->reading = false;
    if (!plain) {
        f->in = bufferevent_get_input(bev);
        f->out = bufferevent_get_output(bev);
        bufferevent_enable(bev, EV_READ | EV_WRITE);
        f->reading = true;
        return 0;
    }
    /* libevent stops reading and writing this socket; we do both. */
    bufferevent_disable(bev, EV_READ | EV_WRITE);
    if (!f->own_in)
        f->own_in = evbuffer_new();
    if (!f->own_out)
        f->own_out = evbuffer_new();
    evutil_socket_t fd = bufferevent_getfd(bev);
    f->fd = fd;
    f->writing = false;
    f->rev = event_new(base, fd, EV_READ | EV_PERSIST, read_cb, f);
    f->wev = event_new(base, fd, EV_WRITE, write_cb, f);
    if (!f->own_in || !f->own_out || !f->rev || !f->wev) {
        f->in = f->out = NULL;
        return -1;
    }
    f->in = f->own_in;
    f->out = f->own_out;
    /* What the login phase left buffered (the client may have pipelined its
     * first queries behind its password; ReadyForQuery waits to go out). A
     * socket bufferevent freezes the start of its output: thaw it to take. */
    struct evbuffer *bin = bufferevent_get_input(bev), *bout = bufferevent_get_output(bev);
    evbuffer_unfreeze(bout, 1);
    int rc = evbuffer_add_buffer(f->in, bin) | evbuffer_add_buffer(f->out, bout);
    evbuffer_freeze(bout, 1);
    if (rc != 0)
        return -1;
    fastio_read(f, true);
    return 0;
}

void fastio_detach(fastio *f)
{
    if (f->bev && f->plain && f->in) {
        /* The input's end is frozen for all but libevent: thaw it to give
         * back. Appending to the output is allowed. */
        struct evbuffer *bin = bufferevent_get_input(f->bev);
        evbuffer_unfreeze(bin, 0);
        evbuffer_add_buffer(bin, f->in);
        evbuffer_freeze(bin, 0);
        evbuffer_add_buffer(bufferevent_get_output(f->bev), f->out);
    }
    if (f->rev) {
        event_free(f->rev);
        f->rev = NULL;
    }
    if (f->wev) {
        event_free(f->wev);
        f->wev = NULL;
    }
    f->writing = false;
    f->bev = NULL;
    f->reading = false;
}

void fastio_free(fastio *f)
{
    fastio_detach(f);
    if (f->own_in)
        evbuffer_free(f->own_in);
    if (f->own_out)
        evbuffer_free(f->own_out);
    f->own_in = f->own_out = f->in = f->out = NULL;
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
    if (f->writing || evbuffer_get_length(f->out) == 0)
        return;   /* already waiting to write the rest, or nothing to do */
    if (!write_some(f))
        return;
    if (evbuffer_get_length(f->out) > 0 && event_add(f->wev, NULL) == 0)
        f->writing = true;
}

int fastio_send(fastio *f, const void *p, size_t n)
{
    if (f->plain && f->bev && !f->writing && n > 0 && evbuffer_get_length(f->out) == 0) {
        ssize_t k = send(f->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k > 0) {
            p = (const uint8_t *)p + k;
            n -= (size_t)k;
        }
        /* An error: the bytes are queued and fastio_flush meets it again. */
    }
    if (n == 0)
        return 0;
    return evbuffer_add(f->out, p, n) == 0 ? 0 : -1;
}
