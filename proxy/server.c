/*
 * server.c -- the server half's login: connect (TCP through evdns, or a unix
 * socket), TLS per server_sslmode, then relay the client's StartupMessage.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "policy/sqlstate.h"
#include "proxy/pgframe.h"
#include "proxy/pgproto.h"
#include "proxy/runtime.h"
#include "proxy/session.h"

static void server_event_cb(struct bufferevent *bev, short what, void *arg);
static void server_tls_answer_cb(struct bufferevent *bev, void *arg);

static void connect_failed(tg_session *s, const char *reason)
{
    char msg[320];
    const tg_config *c = s->cfg;
    snprintf(msg, sizeof(msg), "tenantguard: could not connect to the server %s:%d: %s", c->server_host,
             c->server_port, reason);
    s->rt->counters.server_connect_failures++;
    tg_clog(TG_LOG_WARNING, &s->log, "%s", msg);
    sess_fatal(s, TG_SQLSTATE_CONNECTION_FAILURE, msg, NULL);
}

/* The relay of the client's StartupMessage; authentication follows. */
static void send_startup(tg_session *s)
{
    /* server_connect_timeout keeps running until the server's first answer
     * (auth.c): a server that accepts and never speaks is a connect failure. */
    s->sv.bytes_out += evbuffer_get_length(s->cl.startup);
    bufferevent_write_buffer(s->sv.bev, s->cl.startup);
    evbuffer_free(s->cl.startup);
    s->cl.startup = NULL;
    sess_set_state(s, SS_AUTH);
    auth_begin(s);
}

static int is_ip_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* 'S': the server agreed; wrap the same socket in TLS. */
static void start_server_tls(tg_session *s)
{
    const tg_config *c = s->cfg;
    evutil_socket_t fd = bufferevent_getfd(s->sv.bev);
    SSL *ssl = SSL_new(s->rt->server_tls);
    if (!ssl) {
        connect_failed(s, "SSL_new failed");
        return;
    }
    if (c->server_host[0] != '/') {
        if (!is_ip_literal(c->server_host))
            SSL_set_tlsext_host_name(ssl, c->server_host);
        if (c->server_sslmode == TG_SERVER_SSL_VERIFY_FULL) {
            X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
            if (is_ip_literal(c->server_host))
                X509_VERIFY_PARAM_set1_ip_asc(vp, c->server_host);
            else
                SSL_set1_host(ssl, c->server_host);
            SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
        }
    }
    bufferevent_free(s->sv.bev);   /* options 0: the socket stays open */
    s->sv.bev = bufferevent_openssl_socket_new(s->rt->base, fd, ssl, BUFFEREVENT_SSL_CONNECTING,
                                               BEV_OPT_CLOSE_ON_FREE);
    if (!s->sv.bev) {
        SSL_free(ssl);
        evutil_closesocket(fd);
        connect_failed(s, "out of memory");
        return;
    }
    s->sv.bev_owns_fd = true;
    bufferevent_openssl_set_allow_dirty_shutdown(s->sv.bev, 1);
    struct timeval tv = {c->server_connect_timeout, 0};
    bufferevent_set_timeouts(s->sv.bev, &tv, &tv);
    bufferevent_setcb(s->sv.bev, NULL, NULL, server_event_cb, s);
    bufferevent_enable(s->sv.bev, EV_READ | EV_WRITE);
    sess_set_state(s, SS_SV_TLS);
}

static void server_tls_answer_cb(struct bufferevent *bev, void *arg)
{
    tg_session *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    char answer;
    if (evbuffer_remove(in, &answer, 1) != 1)
        return;
    s->sv.bytes_in++;
    if (answer == 'S') {
        if (evbuffer_get_length(in) > 0) {   /* bytes before the handshake: refuse */
            connect_failed(s, "server sent unencrypted data after its SSL answer");
            return;
        }
        start_server_tls(s);
    } else if (answer == 'N' && s->cfg->server_sslmode == TG_SERVER_SSL_PREFER) {
        bufferevent_setcb(s->sv.bev, NULL, NULL, server_event_cb, s);
        send_startup(s);
    } else if (answer == 'N') {
        connect_failed(s, "the server does not accept TLS (server_sslmode requires it)");
    } else {
        connect_failed(s, "unexpected answer to SSLRequest");
    }
}

static void server_event_cb(struct bufferevent *bev, short what, void *arg)
{
    tg_session *s = arg;
    char reason[256];

    if (what & BEV_EVENT_CONNECTED) {
        if (s->state == SS_SV_TLS) {
            s->sv.tls = true;
            tg_clog(TG_LOG_DEBUG, &s->log, "server TLS established (%s)",
                    SSL_get_version(bufferevent_openssl_get_ssl(bev)));
            send_startup(s);
            return;
        }
        /* TCP or unix connect done. Small request/response messages must not
         * wait for Nagle's algorithm. */
        if (s->cfg->server_host[0] != '/') {
            int one = 1;
            evutil_socket_t fd = bufferevent_getfd(bev);
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
        }
        if (s->cfg->server_sslmode == TG_SERVER_SSL_DISABLE || s->cfg->server_host[0] == '/') {
            send_startup(s);
            return;
        }
        uint32_t req[2] = {htonl(8), htonl(PG_SSL_REQUEST_CODE)};
        sess_set_state(s, SS_SV_TLS_REQUEST);
        bufferevent_setcb(bev, server_tls_answer_cb, NULL, server_event_cb, s);
        bufferevent_write(bev, req, sizeof(req));
        s->sv.bytes_out += sizeof(req);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        connect_failed(s, "server_connect_timeout expired");
        return;
    }
    if (s->state == SS_SV_TLS) {
        unsigned long e = bufferevent_get_openssl_error(bev);
        if (e)
            ERR_error_string_n(e, reason, sizeof(reason));
        else
            snprintf(reason, sizeof(reason), "TLS handshake failed");
        connect_failed(s, reason);
        return;
    }
    int dns_err = bufferevent_socket_get_dns_error(bev);
    if (dns_err)
        snprintf(reason, sizeof(reason), "%s", evutil_gai_strerror(dns_err));
    else if (what & BEV_EVENT_EOF)
        snprintf(reason, sizeof(reason), "the server closed the connection");
    else
        snprintf(reason, sizeof(reason), "%s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    connect_failed(s, reason);
}

void server_connect_begin(tg_session *s)
{
    const tg_config *c = s->cfg;
    tg_runtime *rt = s->rt;

    if (c->server_sslmode != TG_SERVER_SSL_DISABLE && !rt->server_tls) {
        connect_failed(s, "no TLS context for the server side");
        return;
    }
    s->sv.bev = bufferevent_socket_new(rt->base, -1, 0);
    if (!s->sv.bev) {
        connect_failed(s, "out of memory");
        return;
    }
    bufferevent_setcb(s->sv.bev, NULL, NULL, server_event_cb, s);
    struct timeval tv = {c->server_connect_timeout, 0};
    bufferevent_set_timeouts(s->sv.bev, &tv, &tv);
    bufferevent_enable(s->sv.bev, EV_READ | EV_WRITE);

    int rc;
    if (c->server_host[0] == '/') {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        int n = snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/.s.PGSQL.%d", c->server_host,
                         c->server_port);
        if (n >= (int)sizeof(sun.sun_path)) {
            connect_failed(s, "unix socket path too long");
            return;
        }
        rc = bufferevent_socket_connect(s->sv.bev, (struct sockaddr *)&sun, sizeof(sun));
    } else {
        rc = bufferevent_socket_connect_hostname(s->sv.bev, rt->dns, AF_UNSPEC, c->server_host,
                                                 c->server_port);
    }
    if (rc != 0 && s->state == SS_SV_CONNECT)
        connect_failed(s, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}
