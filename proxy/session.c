/*
 * session.c -- the session object: creation, the state machine, closing.
 */
#include "config.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "policy/sqlstate.h"
#include "proxy/admin.h"
#include "proxy/pgframe.h"
#include "proxy/runtime.h"
#include "proxy/session.h"
#include "proxy/stmtctx.h"
#include "proxy/track.h"

static const char *const state_names[SS__COUNT] = {
    "startup", "client-tls", "connect", "server-tls-request", "server-tls",
    "auth", "probe", "active", "console-auth", "console", "closing", "dead",
};

const char *sess_state_name(sess_state s)
{
    return (unsigned)s < SS__COUNT ? state_names[s] : "?";
}

/* The legal moves: allowed[from] is a bit set of destination states. Every
 * state may close (CLOSING or DEAD); DEAD is final. */
#define B(s) (1u << (s))
#define ANY_END (B(SS_CLOSING) | B(SS_DEAD))
static const unsigned allowed[SS__COUNT] = {
    [SS_CL_STARTUP] = B(SS_CL_TLS) | B(SS_SV_CONNECT) | B(SS_ADMIN_AUTH) | ANY_END,
    [SS_CL_TLS] = B(SS_CL_STARTUP) | ANY_END,
    [SS_SV_CONNECT] = B(SS_SV_TLS_REQUEST) | B(SS_AUTH) | ANY_END,
    [SS_SV_TLS_REQUEST] = B(SS_SV_TLS) | B(SS_AUTH) | ANY_END,
    [SS_SV_TLS] = B(SS_AUTH) | ANY_END,
    [SS_AUTH] = B(SS_PROBE) | B(SS_ACTIVE) | ANY_END,
    [SS_PROBE] = B(SS_ACTIVE) | ANY_END,
    [SS_ACTIVE] = ANY_END,
    [SS_ADMIN_AUTH] = B(SS_ADMIN) | ANY_END,
    [SS_ADMIN] = ANY_END,
    [SS_CLOSING] = B(SS_DEAD),
    [SS_DEAD] = 0,
};

void sess_set_state(tg_session *s, sess_state to)
{
    assert((unsigned)to < SS__COUNT);
    if (!(allowed[s->state] & B(to))) {
        log_error("S-%llu: illegal state change %s -> %s", (unsigned long long)s->id,
                  sess_state_name(s->state), sess_state_name(to));
        abort();
    }
    tg_clog(TG_LOG_DEBUG, &s->log, "state %s -> %s", sess_state_name(s->state), sess_state_name(to));
    s->state = to;
}

tg_session *sess_new(tg_runtime *rt, int fd, const char *peer)
{
    tg_session *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->rt = rt;
    s->id = ++rt->next_session_id;
    s->cfg = tg_config_ref(rt->cfg);
    s->state = SS_CL_STARTUP;
    s->cl.fd = fd;
    s->sv.txn_status = 'I';
    snprintf(s->cl.peer, sizeof(s->cl.peer), "%s", peer);
    s->started_at = s->last_activity = time(NULL);
    s->log.session_id = s->id;
    s->log.side = "client";
    s->log.peer = s->cl.peer;
    s->track = track_new();
    if (s->track)
        track_set_release(s->track, stmtctx_release);
    if (!s->track) {
        tg_config_unref(s->cfg);
        free(s);
        return NULL;
    }
    TAILQ_INSERT_TAIL(&rt->sessions, s, link);
    rt->n_sessions++;
    return s;
}

void sess_free_server(tg_session *s)
{
    fastio_detach(&s->sv_io);
    if (!s->sv.bev)
        return;
    evutil_socket_t fd = s->sv.bev_owns_fd ? -1 : bufferevent_getfd(s->sv.bev);
    bufferevent_free(s->sv.bev);
    if (fd >= 0)
        close(fd);
    s->sv.bev = NULL;
    s->sv.bev_owns_fd = false;
}

static void free_halves(tg_session *s)
{
    sess_free_server(s);
    fastio_detach(&s->cl_io);
    if (s->cl.bev) {
        bufferevent_free(s->cl.bev);
        s->cl.bev = NULL;
    }
    if (s->cl.fd >= 0 && !s->cl.bev_owns_fd)
        close(s->cl.fd);
    s->cl.fd = -1;
    if (s->timer) {
        event_free(s->timer);
        s->timer = NULL;
    }
}

void sess_close(tg_session *s, const char *why)
{
    if (s->state == SS_DEAD)
        return;
    tg_runtime *rt = s->rt;
    tg_clog(TG_LOG_INFO, &s->log, "closing (%s) after %lds, in %llu bytes, out %llu bytes", why,
            (long)(time(NULL) - s->started_at), (unsigned long long)s->cl.bytes_in,
            (unsigned long long)s->cl.bytes_out);
    if (s->in_cancel_map)
        cancel_unregister(rt, s);
    free_halves(s);
    sess_set_state(s, SS_DEAD);
    TAILQ_REMOVE(&rt->sessions, s, link);
    rt->n_sessions--;
    if (s->is_console)
        rt->n_console--;
    if (s->refusing)
        rt->n_refusing--;
    TAILQ_INSERT_TAIL(&rt->justfree, s, link);
    rt_schedule_reap(rt);
}

void sess_free(tg_session *s)
{
    assert(s->state == SS_DEAD);
    track_free(s->track);
    fastio_free(&s->cl_io);
    fastio_free(&s->sv_io);
    admin_free(s);
    sessenv_free(&s->env);
    probe_free(&s->probe);
    if (s->cl.startup)
        evbuffer_free(s->cl.startup);
    free(s->cl.user);
    free(s->cl.database);
    free(s->cl.application_name);
    tg_config_unref(s->cfg);
    free(s);
}

/* ---------------------------------------------------------------- fatal */

static void closing_write_cb(struct bufferevent *bev, void *arg)
{
    tg_session *s = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        sess_close(s, "error sent");
}

static void closing_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what;
    sess_close(arg, "client gone while closing");
}

static void closing_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sess_close(arg, "client did not read its error");
}

void sess_fatal(tg_session *s, const char *sqlstate, const char *message, const char *hint)
{
    if (s->state == SS_DEAD || s->state == SS_CLOSING)
        return;
    tg_clog(TG_LOG_INFO, &s->log, "fatal to client: %s %s", sqlstate, message);
    /* In the middle of a server message streamed to the client, an
     * ErrorResponse would read as the rest of that message: close instead. */
    fastio_detach(&s->cl_io);   /* what is queued for the client goes first */
    if (s->cl.bev && s->sv.stream_left == 0)
        pgf_error(bufferevent_get_output(s->cl.bev), "FATAL", sqlstate, message, hint);
    sess_close_after_flush(s, message);
}

/* ---------------------------------------------------------------- goodbye */

static void server_flushed_cb(struct bufferevent *bev, void *arg)
{
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        sess_close(arg, "client gone; its last messages reached the server");
}

static void server_gone_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what;
    sess_close(arg, "client gone");
}

void sess_close_after_server_flush(tg_session *s, const char *why)
{
    if (s->state != SS_ACTIVE || !s->sv.bev) {
        sess_close(s, why);
        return;
    }
    tg_clog(TG_LOG_DEBUG, &s->log, "%s: flushing to the server before closing", why);
    /* The client half goes now. */
    fastio_detach(&s->cl_io);
    if (s->cl.bev) {
        bufferevent_free(s->cl.bev);
        s->cl.bev = NULL;
    }
    if (s->cl.fd >= 0 && !s->cl.bev_owns_fd)
        close(s->cl.fd);
    s->cl.fd = -1;
    /* What is queued for the server (a last query, the Terminate) still goes. */
    bool plain = s->sv_io.plain;
    fastio_flush(&s->sv_io);
    fastio_detach(&s->sv_io);
    struct evbuffer *out = bufferevent_get_output(s->sv.bev);
    if (evbuffer_get_length(out) == 0 && plain) {
        sess_close(s, why);
        return;
    }
    sess_set_state(s, SS_CLOSING);
    bufferevent_setwatermark(s->sv.bev, EV_WRITE, 0, 0);
    bufferevent_setcb(s->sv.bev, NULL, server_flushed_cb, server_gone_cb, s);
    bufferevent_disable(s->sv.bev, EV_READ);
    bufferevent_enable(s->sv.bev, EV_WRITE);
    if (evbuffer_get_length(out) == 0) {   /* TLS: libevent flushed it already */
        sess_close(s, why);
        return;
    }
    if (s->timer)
        event_free(s->timer);
    s->timer = evtimer_new(s->rt->base, closing_timeout_cb, s);
    struct timeval tv = {5, 0};
    if (s->timer)
        evtimer_add(s->timer, &tv);
}

void sess_close_after_flush(tg_session *s, const char *why)
{
    if (s->state == SS_DEAD || s->state == SS_CLOSING)
        return;
    /* The server half goes at once: nothing more will be relayed. */
    sess_free_server(s);
    fastio_detach(&s->cl_io);
    if (!s->cl.bev || evbuffer_get_length(bufferevent_get_output(s->cl.bev)) == 0) {
        sess_close(s, why);
        return;
    }
    sess_set_state(s, SS_CLOSING);
    bufferevent_disable(s->cl.bev, EV_READ);
    bufferevent_setwatermark(s->cl.bev, EV_WRITE, 0, 0);
    bufferevent_setcb(s->cl.bev, NULL, closing_write_cb, closing_event_cb, s);
    bufferevent_enable(s->cl.bev, EV_WRITE);
    /* A client that does not read its error is closed anyway. */
    if (s->timer)
        event_free(s->timer);
    s->timer = evtimer_new(s->rt->base, closing_timeout_cb, s);
    struct timeval tv = {5, 0};
    if (s->timer)
        evtimer_add(s->timer, &tv);
}
