/*
 * auth.c -- relay authentication between client and server.
 *
 * The proxy does not authenticate anyone itself: the server's requests
 * (trust, cleartext, md5, SCRAM-SHA-256) go to the client and the client's
 * answers go back, unchanged -- a wrong password gives the client the
 * server's own 28P01. Two things are touched on the way:
 *
 *  - SCRAM-SHA-256-PLUS is removed from the server's mechanism list. Channel
 *    binding ties SCRAM to one TLS channel, and the client's channel ends
 *    here, so it can never succeed through a proxy.
 *  - BackendKeyData: the client gets the server's pid with a key of our own;
 *    a CancelRequest with it is mapped back (cancel.c).
 */
#include "config.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "policy/sqlstate.h"
#include "proxy/pgframe.h"
#include "proxy/pgproto.h"
#include "proxy/runtime.h"
#include "proxy/session.h"

/* Auth-phase messages are small; anything bigger is not a login message. */
#define AUTH_MAX_MESSAGE (1024 * 1024)

static void auth_client_read_cb(struct bufferevent *bev, void *arg);
static void auth_server_read_cb(struct bufferevent *bev, void *arg);
static void auth_event_cb(struct bufferevent *bev, short what, void *arg);

void auth_begin(tg_session *s)
{
    bufferevent_setcb(s->sv.bev, auth_server_read_cb, NULL, auth_event_cb, s);
    bufferevent_setcb(s->cl.bev, auth_client_read_cb, NULL, auth_event_cb, s);
    bufferevent_enable(s->sv.bev, EV_READ | EV_WRITE);
    bufferevent_enable(s->cl.bev, EV_READ | EV_WRITE);
}

/* An authentication request went to the client: read its answer, which may
 * already be buffered behind queries it pipelined earlier. */
static void client_owes_answer(tg_session *s)
{
    if (s->sv.auth_request <= PG_AUTH_OK || s->state != SS_AUTH)
        return;
    bufferevent_enable(s->cl.bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_input(s->cl.bev)) > 0)
        auth_client_read_cb(s->cl.bev, s);
}

static void auth_event_cb(struct bufferevent *bev, short what, void *arg)
{
    tg_session *s = arg;
    if (bev == s->cl.bev) {
        sess_close(s, "client closed during authentication");
        return;
    }
    s->rt->counters.login_failures++;
    if (what & BEV_EVENT_TIMEOUT) {
        sess_fatal(s, TG_SQLSTATE_CONNECTION_FAILURE,
                   "tenantguard: the server did not answer the startup packet within server_connect_timeout",
                   NULL);
        return;
    }
    sess_fatal(s, TG_SQLSTATE_CONNECTION_FAILURE,
               "tenantguard: the server closed the connection during authentication", NULL);
}

/* AuthenticationSASL without SCRAM-SHA-256-PLUS. Returns 0, or -1 when no
 * mechanism is left. */
static int relay_sasl_mechanisms(tg_session *s, const uint8_t *msg, const pgf_header *h,
                                 struct evbuffer *out)
{
    pgf_reader r = pgf_reader_init(msg + 9, h->len - 8);
    pgf_builder b;
    int kept = 0;
    pgf_begin(&b, PG_BE_AUTH);
    pgf_put_u32(&b, PG_AUTH_SASL);
    for (;;) {
        const char *mech = pgf_get_str(&r);
        if (r.bad || !*mech)
            break;
        if (strcmp(mech, "SCRAM-SHA-256-PLUS") == 0)
            continue;
        pgf_put_str(&b, mech);
        kept++;
    }
    pgf_put_u8(&b, 0);
    if (kept == 0) {
        pgf_abort(&b);
        return -1;
    }
    s->cl.bytes_out += b.len;
    return pgf_finish(&b, out);
}

static void auth_server_read_cb(struct bufferevent *bev, void *arg)
{
    tg_session *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer *out = bufferevent_get_output(s->cl.bev);

    /* The server answered: its connect timeout is over (a client typing its
     * password must not trip it); client_login_timeout still runs. */
    bufferevent_set_timeouts(bev, NULL, NULL);
    while (s->state == SS_AUTH) {
        pgf_header h;
        bool bad;
        const uint8_t *msg = pgf_whole(in, AUTH_MAX_MESSAGE, &h, &bad);
        if (bad) {
            sess_fatal(s, TG_SQLSTATE_PROTOCOL_VIOLATION,
                       "tenantguard: invalid message from the server during authentication", NULL);
            return;
        }
        if (!msg)
            return;
        size_t wire = pgf_wire_len(&h);
        s->sv.bytes_in += wire;

        if (h.type == PG_BE_AUTH && h.len >= 8) {
            uint32_t code;
            memcpy(&code, msg + 5, 4);
            code = ntohl(code);
            s->sv.auth_request = (int32_t)code;
            if (code == PG_AUTH_SASL_FINAL)
                s->sv.auth_request = PG_AUTH_OK;   /* no answer expected */
            if (code == PG_AUTH_SASL) {
                if (relay_sasl_mechanisms(s, msg, &h, out) != 0) {
                    sess_fatal(s, TG_SQLSTATE_INVALID_AUTHORIZATION,
                               "tenantguard: the server offers only SCRAM-SHA-256-PLUS (channel binding), "
                               "which cannot pass through a proxy", NULL);
                    return;
                }
                evbuffer_drain(in, wire);
                client_owes_answer(s);
                continue;
            }
        } else if (h.type == PG_BE_KEY_DATA && h.len == 12) {
            int32_t pid, key;
            memcpy(&pid, msg + 5, 4);
            memcpy(&key, msg + 9, 4);
            s->sv.backend_pid = (int32_t)ntohl((uint32_t)pid);
            s->sv.backend_key = (int32_t)ntohl((uint32_t)key);
            evbuffer_drain(in, wire);
            if (cancel_register(s->rt, s) != 0) {
                sess_fatal(s, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory", NULL);
                return;
            }
            pgf_builder b;
            pgf_begin(&b, PG_BE_KEY_DATA);
            pgf_put_u32(&b, (uint32_t)s->sv.backend_pid);
            pgf_put_u32(&b, (uint32_t)s->cancel_key);
            s->cl.bytes_out += 13;
            pgf_finish(&b, out);
            continue;
        } else if (h.type == PG_BE_READY) {
            s->sv.txn_status = h.len >= 5 ? (char)msg[5] : 'I';
            tg_clog(TG_LOG_INFO, &s->log, "login ok%s%s", s->cl.tls ? ", client TLS" : "",
                    s->sv.tls ? ", server TLS" : "");
            sessenv_init(&s->env, s->cl.user);
            if (probe_needed(s->cfg)) {
                /* Hold the client's ReadyForQuery until the probe answered. */
                evbuffer_drain(in, wire);
                sess_set_state(s, SS_PROBE);
                probe_begin(s);
                return;
            }
            s->cl.bytes_out += wire;
            evbuffer_remove_buffer(in, out, wire);
            sessenv_set_login_path(&s->env, NULL);
            sess_set_state(s, SS_ACTIVE);
            relay_begin(s);
            return;
        } else if (h.type == PG_BE_ERROR) {
            /* Authentication refused (or the database is gone): the server's own
             * error goes to the client unchanged, then we close. */
            pgf_error_fields f;
            if (pgf_parse_error(msg + 5, h.len - 4, &f))
                tg_clog(TG_LOG_INFO, &s->log, "login failed: server said %s", f.code ? f.code : "?");
            s->rt->counters.login_failures++;
            s->cl.bytes_out += wire;
            evbuffer_remove_buffer(in, out, wire);
            sess_close_after_flush(s, "login refused by the server");
            return;
        }
        /* Everything else (ParameterStatus, notices, NegotiateProtocolVersion,
         * other auth requests) goes to the client as is. */
        s->cl.bytes_out += wire;
        evbuffer_remove_buffer(in, out, wire);
        if (h.type == PG_BE_AUTH)
            client_owes_answer(s);
    }
}

/* SASLInitialResponse: mechanism, int32 length, client-first-message. A
 * client that supports channel binding but was not offered -PLUS (we removed
 * it) says "y": PostgreSQL refuses that on a TLS connection as a downgrade
 * attack. Say so clearly instead of relaying a confusing refusal. */
static bool sasl_initial_ok(tg_session *s, const uint8_t *payload, size_t len)
{
    pgf_reader r = pgf_reader_init(payload, len);
    const char *mech = pgf_get_str(&r);
    uint32_t n = pgf_get_u32(&r);
    const uint8_t *data = (!r.bad && n != 0xffffffffu && n > 0) ? pgf_get_bytes(&r, n) : NULL;
    if (r.bad)
        return true;   /* not a SASLInitialResponse: the server will judge */
    if (strcmp(mech, "SCRAM-SHA-256-PLUS") == 0) {
        sess_fatal(s, TG_SQLSTATE_INVALID_AUTHORIZATION,
                   "tenantguard: SCRAM channel binding cannot pass through a proxy",
                   "Connect with channel_binding=prefer or disable.");
        return false;
    }
    if (data && data[0] == 'y' && s->sv.tls) {
        sess_fatal(s, TG_SQLSTATE_INVALID_AUTHORIZATION,
                   "tenantguard: SCRAM with channel binding support cannot pass through tenantguard "
                   "while both its client and server connections use TLS",
                   "Connect with channel_binding=disable, or set server_sslmode = disable.");
        return false;
    }
    return true;
}

static void auth_client_read_cb(struct bufferevent *bev, void *arg)
{
    tg_session *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    while (s->state == SS_AUTH) {
        pgf_header h;
        bool bad;
        const uint8_t *msg = pgf_whole(in, AUTH_MAX_MESSAGE, &h, &bad);
        if (bad) {
            s->rt->counters.protocol_errors++;
            sess_fatal(s, TG_SQLSTATE_PROTOCOL_VIOLATION, "tenantguard: invalid message length", NULL);
            return;
        }
        if (!msg)
            return;
        size_t wire = pgf_wire_len(&h);
        s->cl.bytes_in += wire;
        if (h.type == PG_FE_TERMINATE) {
            sess_close(s, "client terminated during authentication");
            return;
        }
        if (h.type != PG_FE_PASSWORD) {
            /* A client may pipeline its first queries behind its last
             * password message, as PostgreSQL allows: they wait until the
             * session is active. Only when the server asks for more
             * authentication is anything but a password a violation. */
            if (s->sv.auth_request > PG_AUTH_OK) {
                s->rt->counters.protocol_errors++;
                sess_fatal(s, TG_SQLSTATE_PROTOCOL_VIOLATION,
                           "tenantguard: expected an authentication message from the client", NULL);
                return;
            }
            bufferevent_disable(bev, EV_READ);
            return;
        }
        /* Only the first answer to AuthenticationSASL is a SASLInitialResponse. */
        if (s->sv.auth_request == PG_AUTH_SASL) {
            s->sv.auth_request = -1;
            if (!sasl_initial_ok(s, msg + 5, h.len - 4))
                return;
        }
        s->sv.bytes_out += wire;
        evbuffer_remove_buffer(in, bufferevent_get_output(s->sv.bev), wire);
        s->sv.auth_request = PG_AUTH_OK;   /* answered; the server speaks next */
    }
}
