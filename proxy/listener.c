/*
 * listener.c -- TCP and unix-socket listeners and accept().
 *
 * Over max_client_conn, a client gets a FATAL 53300 and a close, as from
 * PostgreSQL. When accept() runs out of descriptors the listeners pause for
 * a moment instead of spinning, and resume on their own.
 *
 * Socket activation: sockets a service manager passes (LISTEN_FDS, e.g. a
 * systemd .socket unit) are the client listeners, instead of listen_addr /
 * listen_port / unix_socket_dir. They stay open in the manager while the
 * daemon restarts, so a client connecting meanwhile waits in the backlog
 * rather than being refused.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <systemd/sd-daemon.h>

#include "policy/sqlstate.h"
#include "proxy/pgframe.h"
#include "proxy/runtime.h"
#include "proxy/session.h"

static void peer_name(const struct sockaddr *sa, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        snprintf(buf, len, "%s:%d", host, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        snprintf(buf, len, "[%s]:%d", host, ntohs(in6->sin6_port));
    } else {
        snprintf(buf, len, "unix");
    }
}

/* Best effort, non-blocking: the socket is fresh, the message is small. */
static void refuse(evutil_socket_t fd, const char *sqlstate, const char *msg)
{
    struct evbuffer *b = evbuffer_new();
    if (b) {
        pgf_error(b, "FATAL", sqlstate, msg, NULL);
        evbuffer_write(b, fd);
        evbuffer_free(b);
    }
    evutil_closesocket(fd);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    (void)l;
    (void)salen;
    tg_runtime *rt = arg;
    char peer[64];
    peer_name(sa, peer, sizeof(peer));

    /* Over the limit (or shutting down) a connection is still read as far
     * as its first packets, bounded by a second allowance of the same size;
     * past that it is refused at once. */
    bool refusing = rt->phase != RT_RUNNING ||
                    rt->n_sessions - rt->n_refusing - rt->n_console >= rt->cfg->max_client_conn;
    if (refusing && rt->n_refusing >= rt->cfg->max_client_conn) {
        rt->counters.clients_refused_max_conn++;
        refuse(fd, rt->phase != RT_RUNNING ? TG_SQLSTATE_CANNOT_CONNECT_NOW : TG_SQLSTATE_TOO_MANY_CONNECTIONS,
               rt->phase != RT_RUNNING ? "tenantguard: the proxy is shutting down"
                                       : "tenantguard: too many connections (max_client_conn)");
        return;
    }
    if (refusing && rt->phase == RT_RUNNING) {
        rt->counters.clients_refused_max_conn++;
        log_warning("refusing %s: max_client_conn (%d) reached", peer, rt->cfg->max_client_conn);
    }
    if (sa->sa_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    }
    tg_session *s = sess_new(rt, fd, peer);
    if (!s) {
        refuse(fd, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory");
        return;
    }
    rt->counters.clients_accepted++;
    if (refusing) {
        s->refusing = true;
        rt->n_refusing++;
    }
    tg_clog(TG_LOG_DEBUG, &s->log, "accepted%s", refusing ? " (to refuse)" : "");
    startup_begin(s);
}

/* The console has its own small allowance, so operators get in when
 * max_client_conn is exhausted. */
#define CONSOLE_MAX_SESSIONS 64

static void accept_console_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                              void *arg)
{
    (void)l;
    (void)salen;
    tg_runtime *rt = arg;
    char peer[64];
    peer_name(sa, peer, sizeof(peer));
    if (rt->n_console >= CONSOLE_MAX_SESSIONS) {
        refuse(fd, TG_SQLSTATE_TOO_MANY_CONNECTIONS, "tenantguard: too many console connections");
        return;
    }
    tg_session *s = sess_new(rt, fd, peer);
    if (!s) {
        refuse(fd, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory");
        return;
    }
    s->is_console = true;
    s->log.side = "admin";
    rt->n_console++;
    tg_clog(TG_LOG_DEBUG, &s->log, "accepted console connection");
    startup_begin(s);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tg_runtime *rt = arg;
    if (rt->phase != RT_RUNNING)
        return;
    for (int i = 0; i < rt->n_listeners; i++)
        evconnlistener_enable(rt->listeners[i]);
    rt->listeners_paused = false;
    log_info("accepting connections again");
}

static void open_spare_fd(tg_runtime *rt)
{
    if (rt->has_spare_fd)
        return;
    rt->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    rt->has_spare_fd = rt->spare_fd >= 0;
}

/* Out of descriptors, a client waiting in the listen backlog would wait
 * until some session ends -- for ever, as far as it can tell. So one
 * descriptor is kept spare: given up, it accepts the client, which gets
 * 53300 and is closed, and is taken back. The listener stays readable while
 * the backlog holds more, so each waiting client gets its answer in turn. */
static bool refuse_with_spare_fd(tg_runtime *rt, struct evconnlistener *l)
{
    if (!rt->has_spare_fd)
        return false;
    close(rt->spare_fd);
    rt->has_spare_fd = false;
    evutil_socket_t fd = accept4(evconnlistener_get_fd(l), NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
        /* What it sent already (a startup packet): unread data would make
         * close() a reset. Bounded: a client streaming at us gets the reset. */
        char junk[1024];
        for (int i = 0; i < 8 && recv(fd, junk, sizeof(junk), 0) > 0; i++)
            ;
        refuse(fd, TG_SQLSTATE_TOO_MANY_CONNECTIONS, "tenantguard: out of file descriptors; try again later");
        rt->counters.refused_fds++;
    }
    open_spare_fd(rt);
    return fd >= 0;
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    tg_runtime *rt = arg;
    int err = EVUTIL_SOCKET_ERROR();
    if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
        log_warning("accept: %s", evutil_socket_error_to_string(err));
        return;
    }
    if ((err == EMFILE || err == ENFILE) && refuse_with_spare_fd(rt, l)) {
        if (rt->counters.refused_fds == 1 || rt->counters.refused_fds % 1000 == 0)
            log_warning("accept: %s; refusing new clients (53300) until descriptors are free "
                        "(%" PRIu64 " so far)", evutil_socket_error_to_string(err), rt->counters.refused_fds);
        return;
    }
    if (rt->listeners_paused)
        return;
    log_warning("accept: %s; pausing new connections for 250ms", evutil_socket_error_to_string(err));
    rt->listeners_paused = true;
    for (int i = 0; i < rt->n_listeners; i++)
        evconnlistener_disable(rt->listeners[i]);
    struct timeval tv = {0, 250000};
    evtimer_add(rt->listen_retry, &tv);
}

static int add_listener_cb(tg_runtime *rt, const struct sockaddr *sa, int salen, const char *what,
                           evconnlistener_cb cb, char *err, size_t errlen);

static int add_listener(tg_runtime *rt, const struct sockaddr *sa, int salen, const char *what,
                        char *err, size_t errlen)
{
    return add_listener_cb(rt, sa, salen, what, accept_cb, err, errlen);
}

static int add_listener_cb(tg_runtime *rt, const struct sockaddr *sa, int salen, const char *what,
                           evconnlistener_cb cb, char *err, size_t errlen)
{
    if (rt->n_listeners == RT_MAX_LISTENERS) {
        snprintf(err, errlen, "too many listeners");
        return -1;
    }
    unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC;
    if (rt->cfg->so_reuseport && sa->sa_family != AF_UNIX)
        flags |= LEV_OPT_REUSEABLE_PORT;
    if (sa->sa_family == AF_INET6)
        flags |= LEV_OPT_BIND_IPV6ONLY;
    struct evconnlistener *l =
        evconnlistener_new_bind(rt->base, cb, rt, flags, rt->cfg->listen_backlog, sa, salen);
    if (!l) {
        snprintf(err, errlen, "cannot listen on %s: %s", what,
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        return -1;
    }
    evconnlistener_set_error_cb(l, accept_error_cb);
    rt->listeners[rt->n_listeners++] = l;
    log_info("listening on %s", what);
    return 0;
}

static int open_tcp(tg_runtime *rt, const char *addr, char *err, size_t errlen)
{
    const tg_config *c = rt->cfg;
    char what[128];
    if (strcmp(addr, "*") == 0) {
        struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->listen_port),
                                 .sin_addr.s_addr = htonl(INADDR_ANY)};
        snprintf(what, sizeof(what), "*:%d", c->listen_port);
        if (add_listener(rt, (struct sockaddr *)&in, sizeof(in), what, err, errlen) != 0)
            return -1;
        struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)c->listen_port),
                                   .sin6_addr = IN6ADDR_ANY_INIT};
        snprintf(what, sizeof(what), "[::]:%d", c->listen_port);
        if (add_listener(rt, (struct sockaddr *)&in6, sizeof(in6), what, err, errlen) != 0)
            log_warning("%s (continuing with IPv4 only)", err);
        return 0;
    }
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);
    char spec[160];
    if (strchr(addr, ':'))
        snprintf(spec, sizeof(spec), "[%s]:%d", addr, c->listen_port);
    else
        snprintf(spec, sizeof(spec), "%s:%d", addr, c->listen_port);
    if (evutil_parse_sockaddr_port(spec, (struct sockaddr *)&ss, &sslen) != 0) {
        snprintf(err, errlen, "listen_addr: \"%s\" is not an IP address (or *)", addr);
        return -1;
    }
    return add_listener(rt, (struct sockaddr *)&ss, sslen, spec, err, errlen);
}

static int open_unix(tg_runtime *rt, char *err, size_t errlen)
{
    const tg_config *c = rt->cfg;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int n = snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/.s.PGSQL.%d", c->unix_socket_dir,
                     c->listen_port);
    if (n >= (int)sizeof(sun.sun_path)) {
        snprintf(err, errlen, "unix_socket_dir is too long for a socket path");
        return -1;
    }
    unlink(sun.sun_path);   /* a stale socket of an earlier run */
    if (add_listener(rt, (struct sockaddr *)&sun, sizeof(sun), sun.sun_path, err, errlen) != 0)
        return -1;
    chmod(sun.sun_path, 0777);   /* like PostgreSQL's default unix_socket_permissions */
    snprintf(rt->unix_path, sizeof(rt->unix_path), "%s", sun.sun_path);
    return 0;
}

/* "127.0.0.1:6432", "[::1]:6432" or the unix path a listening fd is bound to. */
static void sock_name(int fd, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        snprintf(buf, len, "fd %d", fd);
        return;
    }
    if (ss.ss_family == AF_UNIX) {
        const struct sockaddr_un *u = (const struct sockaddr_un *)&ss;
        snprintf(buf, len, "%s", u->sun_path[0] ? u->sun_path : "(abstract unix socket)");
        return;
    }
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
        snprintf(buf, len, "%s:%d", host, port);
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
        snprintf(buf, len, "[%s]:%d", host, port);
    } else {
        snprintf(buf, len, "fd %d", fd);
    }
}

/* The n sockets a service manager passed, from fd 3 on: each must be a
 * listening stream socket. */
static int open_passed(tg_runtime *rt, int n, char *err, size_t errlen)
{
    if (n > RT_MAX_LISTENERS) {
        snprintf(err, errlen, "socket activation: %d sockets passed; at most %d", n, RT_MAX_LISTENERS);
        return -1;
    }
    for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + n; fd++) {
        char what[160];
        sock_name(fd, what, sizeof(what));
        if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
            snprintf(err, errlen, "socket activation: fd %d (%s) is not a listening stream socket", fd, what);
            return -1;
        }
        if (evutil_make_socket_nonblocking(fd) != 0 || evutil_make_socket_closeonexec(fd) != 0) {
            snprintf(err, errlen, "socket activation: fd %d: %s", fd,
                     evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
            return -1;
        }
        struct evconnlistener *l =
            evconnlistener_new(rt->base, accept_cb, rt, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
        if (!l) {
            snprintf(err, errlen, "socket activation: fd %d (%s): out of memory", fd, what);
            return -1;
        }
        evconnlistener_set_error_cb(l, accept_error_cb);
        rt->listeners[rt->n_listeners++] = l;
        log_info("listening on %s (socket from the service manager)", what);
    }
    log_info("socket activation: listen_addr, listen_port and unix_socket_dir are not used");
    return 0;
}

int listeners_open(tg_runtime *rt, char *err, size_t errlen)
{
    const tg_config *c = rt->cfg;
    open_spare_fd(rt);
    rt->listen_retry = evtimer_new(rt->base, retry_cb, rt);
    if (!rt->listen_retry) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int passed = sd_listen_fds(1);   /* and unset LISTEN_FDS, so no child takes them */
    if (passed < 0) {
        snprintf(err, errlen, "socket activation: %s", strerror(-passed));
        return -1;
    }
    if (passed > 0) {
        if (open_passed(rt, passed, err, errlen) != 0)
            return -1;
    } else if (c->listen_addr[0]) {
        char *list = strdup(c->listen_addr), *save = NULL;
        if (!list) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        for (char *a = strtok_r(list, ", ", &save); a; a = strtok_r(NULL, ", ", &save)) {
            if (open_tcp(rt, a, err, errlen) != 0) {
                free(list);
                return -1;
            }
        }
        free(list);
    }
    if (!passed && c->unix_socket_dir[0] && open_unix(rt, err, errlen) != 0)
        return -1;
    if (c->admin_port && c->admin_auth_file[0] && c->admin_addr[0]) {
        struct sockaddr_storage ss;
        int sslen = sizeof(ss);
        char spec[160];
        snprintf(spec, sizeof(spec), strchr(c->admin_addr, ':') ? "[%s]:%d" : "%s:%d",
                 strcmp(c->admin_addr, "localhost") == 0 ? "127.0.0.1" : c->admin_addr, c->admin_port);
        if (evutil_parse_sockaddr_port(spec, (struct sockaddr *)&ss, &sslen) != 0) {
            snprintf(err, errlen, "admin_addr: \"%s\" is not an IP address", c->admin_addr);
            return -1;
        }
        char what[200];
        snprintf(what, sizeof(what), "%s (admin console)", spec);
        if (add_listener_cb(rt, (struct sockaddr *)&ss, sslen, what, accept_console_cb, err, errlen) != 0)
            return -1;
    } else if (c->admin_port && !c->admin_auth_file[0]) {
        log_info("no admin console: admin_auth_file is not set");
    }
    return 0;
}

void listeners_close(tg_runtime *rt)
{
    for (int i = 0; i < rt->n_listeners; i++)
        evconnlistener_free(rt->listeners[i]);
    rt->n_listeners = 0;
    if (rt->listen_retry) {
        event_free(rt->listen_retry);
        rt->listen_retry = NULL;
    }
    if (rt->has_spare_fd) {
        close(rt->spare_fd);
        rt->has_spare_fd = false;
    }
    if (rt->unix_path[0]) {
        unlink(rt->unix_path);
        rt->unix_path[0] = '\0';
    }
}
