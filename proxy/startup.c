/*
 * startup.c -- the client's first packets: SSLRequest, GSSENCRequest,
 * CancelRequest and the StartupMessage; the TLS upgrade of the client side.
 *
 * Nothing is sent to the server before a valid protocol 3 StartupMessage has
 * been read. Bytes that arrive after an SSLRequest and before the TLS
 * handshake are refused (they would be processed as if encrypted, CVE-2021-23222).
 */
#include "config.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "policy/sqlstate.h"
#include "proxy/admin.h"
#include "proxy/pgframe.h"
#include "proxy/pgproto.h"
#include "proxy/runtime.h"
#include "proxy/session.h"

static void startup_read_cb(struct bufferevent *bev, void *arg);
static void startup_event_cb(struct bufferevent *bev, short what, void *arg);

static void login_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tg_session *s = arg;
    s->rt->counters.login_failures++;
    sess_fatal(s, TG_SQLSTATE_PROTOCOL_VIOLATION,
               "tenantguard: client_login_timeout expired before the session was ready", NULL);
}

void startup_begin(tg_session *s)
{
    s->cl.bev = bufferevent_socket_new(s->rt->base, s->cl.fd, 0);
    if (!s->cl.bev) {
        sess_close(s, "out of memory");
        return;
    }
    bufferevent_setcb(s->cl.bev, startup_read_cb, NULL, startup_event_cb, s);
    bufferevent_enable(s->cl.bev, EV_READ | EV_WRITE);
    /* The whole login -- startup, TLS, server connect, auth -- has one deadline. */
    s->timer = evtimer_new(s->rt->base, login_timeout_cb, s);
    struct timeval tv = {s->cfg->client_login_timeout, 0};
    if (!s->timer || evtimer_add(s->timer, &tv) != 0)
        sess_close(s, "out of memory");
}

static void startup_event_cb(struct bufferevent *bev, short what, void *arg)
{
    tg_session *s = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {   /* TLS handshake with the client done */
        if (s->state == SS_CL_TLS) {
            s->cl.tls = true;
            sess_set_state(s, SS_CL_STARTUP);
            tg_clog(TG_LOG_DEBUG, &s->log, "client TLS established (%s)",
                    SSL_get_version(bufferevent_openssl_get_ssl(s->cl.bev)));
            /* The startup message may already be buffered. */
            startup_read_cb(s->cl.bev, s);
        }
        return;
    }
    if (what & BEV_EVENT_ERROR && s->state == SS_CL_TLS) {
        unsigned long e = bufferevent_get_openssl_error(s->cl.bev);
        char buf[160] = "connection closed";
        if (e)
            ERR_error_string_n(e, buf, sizeof(buf));
        tg_clog(TG_LOG_INFO, &s->log, "client TLS handshake failed: %s", buf);
        s->rt->counters.login_failures++;
        sess_close(s, "client TLS handshake failed");
        return;
    }
    sess_close(s, what & BEV_EVENT_EOF ? "client closed during startup" : "client error during startup");
}

/* After 'S' has been written: replace the plain bufferevent by a TLS one on
 * the same socket and start the handshake. */
static void ssl_answer_written_cb(struct bufferevent *bev, void *arg)
{
    tg_session *s = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
        return;
    SSL *ssl = SSL_new(s->rt->client_tls);
    if (!ssl) {
        sess_close(s, "SSL_new failed");
        return;
    }
    bufferevent_free(s->cl.bev);   /* no CLOSE_ON_FREE: the fd stays open */
    s->cl.bev = bufferevent_openssl_socket_new(s->rt->base, s->cl.fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                               BEV_OPT_CLOSE_ON_FREE);
    if (!s->cl.bev) {
        SSL_free(ssl);
        sess_close(s, "out of memory");
        return;
    }
    s->cl.bev_owns_fd = true;
    bufferevent_openssl_set_allow_dirty_shutdown(s->cl.bev, 1);
    bufferevent_setcb(s->cl.bev, startup_read_cb, NULL, startup_event_cb, s);
    bufferevent_enable(s->cl.bev, EV_READ | EV_WRITE);
}

static void answer_ssl_request(tg_session *s, struct evbuffer *in)
{
    if (s->cl.tls || s->cl.ssl_requested) {
        s->rt->counters.protocol_errors++;
        sess_fatal(s, TG_SQLSTATE_PROTOCOL_VIOLATION, "tenantguard: duplicate SSLRequest", NULL);
        return;
    }
    s->cl.ssl_requested = true;
    if (!s->rt->client_tls || s->refusing) {
        bufferevent_write(s->cl.bev, "N", 1);
        return;
    }
    if (evbuffer_get_length(in) > 0) {
        s->rt->counters.protocol_errors++;
        sess_fatal(s, TG_SQLSTATE_PROTOCOL_VIOLATION,
                   "tenantguard: received unencrypted data after SSL request", NULL);
        return;
    }
    sess_set_state(s, SS_CL_TLS);
    bufferevent_disable(s->cl.bev, EV_READ);
    bufferevent_setcb(s->cl.bev, NULL, ssl_answer_written_cb, startup_event_cb, s);
    bufferevent_write(s->cl.bev, "S", 1);
}

static bool is_false(const char *v)
{
    return strcasecmp(v, "false") == 0 || strcasecmp(v, "off") == 0 || strcmp(v, "0") == 0 ||
           strcasecmp(v, "no") == 0;
}

static char *dup_or_null(const char *v)
{
    return v ? strdup(v) : NULL;
}

/* A connection accepted only to be refused (max_client_conn, shutting down):
 * it got this far so that its SSLRequest could be answered and a
 * CancelRequest forwarded -- libpq shows no error sent in answer to an
 * SSLRequest, and a full proxy must still cancel runaway queries. */
static void refuse_startup(tg_session *s)
{
    if (s->rt->phase != RT_RUNNING)
        sess_fatal(s, TG_SQLSTATE_CANNOT_CONNECT_NOW, "tenantguard: the proxy is shutting down", NULL);
    else
        sess_fatal(s, TG_SQLSTATE_TOO_MANY_CONNECTIONS,
                   "tenantguard: too many connections (max_client_conn)", NULL);
}

/* A protocol 3 StartupMessage: read its parameters, keep it for the server. */
static void accept_startup(tg_session *s, const uint8_t *pkt, uint32_t len)
{
    pgf_reader r = pgf_reader_init(pkt + 8, len - 8);
    const char *user = NULL, *database = NULL, *appname = NULL, *replication = NULL;
    for (;;) {
        const char *key = pgf_get_str(&r);
        if (r.bad || !*key)
            break;
        const char *val = pgf_get_str(&r);
        if (r.bad)
            break;
        if (strcmp(key, "user") == 0)
            user = val;
        else if (strcmp(key, "database") == 0)
            database = val;
        else if (strcmp(key, "application_name") == 0)
            appname = val;
        else if (strcmp(key, "replication") == 0)
            replication = val;
    }
    if (r.bad) {
        s->rt->counters.protocol_errors++;
        sess_fatal(s, TG_SQLSTATE_PROTOCOL_VIOLATION, "tenantguard: invalid startup packet layout", NULL);
        return;
    }
    if (!user || !*user) {
        sess_fatal(s, TG_SQLSTATE_INVALID_AUTHORIZATION,
                   "tenantguard: no user name specified in startup packet", NULL);
        return;
    }
    if (replication && !is_false(replication)) {
        sess_fatal(s, TG_SQLSTATE_FEATURE_NOT_SUPPORTED,
                   "tenantguard: replication connections are not relayed",
                   "Connect replication clients to PostgreSQL directly.");
        return;
    }
    if (s->cfg->client_tls_mode == TG_CLIENT_TLS_REQUIRE && !s->cl.tls) {
        s->rt->counters.login_failures++;
        sess_fatal(s, TG_SQLSTATE_INVALID_AUTHORIZATION,
                   "tenantguard: TLS is required (client_tls_mode = require)",
                   "Connect with sslmode=require.");
        return;
    }
    s->cl.user = strdup(user);
    s->cl.database = strdup(database && *database ? database : user);
    s->cl.application_name = dup_or_null(appname);
    s->cl.startup = evbuffer_new();
    if (!s->cl.user || !s->cl.database || !s->cl.startup ||
        evbuffer_add(s->cl.startup, pkt, len) != 0) {
        sess_close(s, "out of memory");
        return;
    }
    s->log.user = s->cl.user;
    s->log.db = s->cl.database;
    if (s->is_console) {
        admin_begin(s);
        return;
    }
    tg_clog(TG_LOG_DEBUG, &s->log, "startup: protocol %u.%u%s", PG_PROTO_MAJOR(s->cl.protocol),
            PG_PROTO_MINOR(s->cl.protocol), s->cl.tls ? ", TLS" : "");
    /* Stop reading the client until the server side is ready. */
    bufferevent_disable(s->cl.bev, EV_READ);
    sess_set_state(s, SS_SV_CONNECT);
    server_connect_begin(s);
}

static void startup_read_cb(struct bufferevent *bev, void *arg)
{
    tg_session *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    while (s->state == SS_CL_STARTUP) {
        if (evbuffer_get_length(in) < 4)
            return;
        uint32_t len = pgf_peek_startup_len(in);
        if (len < 8 || len > PG_STARTUP_MAX_LEN) {
            s->rt->counters.protocol_errors++;
            sess_fatal(s, TG_SQLSTATE_PROTOCOL_VIOLATION, "tenantguard: invalid length of startup packet",
                       NULL);
            return;
        }
        if (evbuffer_get_length(in) < len)
            return;
        uint8_t *pkt = malloc(len);
        if (!pkt) {
            sess_close(s, "out of memory");
            return;
        }
        evbuffer_remove(in, pkt, len);
        s->cl.bytes_in += len;
        uint32_t code;
        memcpy(&code, pkt + 4, 4);
        code = ntohl(code);

        if (code == PG_SSL_REQUEST_CODE && len == 8) {
            answer_ssl_request(s, in);
        } else if (code == PG_GSSENC_REQUEST_CODE && len == 8) {
            bufferevent_write(bev, "N", 1);   /* GSSAPI encryption is not offered */
        } else if (code == PG_CANCEL_REQUEST_CODE && len == 16) {
            int32_t pid, key;
            memcpy(&pid, pkt + 8, 4);
            memcpy(&key, pkt + 12, 4);
            cancel_forward(s->rt, (int32_t)ntohl((uint32_t)pid), (int32_t)ntohl((uint32_t)key), s->cl.peer);
            free(pkt);
            sess_close(s, "cancel request handled");
            return;
        } else if (PG_PROTO_MAJOR(code) == 3) {
            s->cl.protocol = code;
            if (s->refusing)
                refuse_startup(s);
            else
                accept_startup(s, pkt, len);
        } else {
            char msg[160];
            s->rt->counters.protocol_errors++;
            snprintf(msg, sizeof(msg),
                     "tenantguard: unsupported frontend protocol %u.%u: tenantguard supports 3.0",
                     PG_PROTO_MAJOR(code), PG_PROTO_MINOR(code));
            sess_fatal(s, TG_SQLSTATE_PROTOCOL_VIOLATION, msg, NULL);
        }
        free(pkt);
    }
}
