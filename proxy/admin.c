/*
 * admin.c -- a console session: SCRAM-SHA-256 login against admin_auth_file,
 * then simple Query messages run as console commands. The extended protocol
 * gets a clear 0A000 (once per batch, then ReadyForQuery at its Sync), so a
 * driver fails with a message instead of hanging.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "policy/sqlstate.h"
#include "proxy/admin.h"
#include "proxy/pgframe.h"
#include "proxy/pgproto.h"
#include "proxy/runtime.h"

#define ADMIN_MAX_MESSAGE (1024 * 1024)

static void admin_read_cb(struct bufferevent *bev, void *arg);
static void admin_auth_read_cb(struct bufferevent *bev, void *arg);

static void admin_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what;
    sess_close(arg, "console client disconnected");
}

void admin_free(tg_session *s)
{
    if (!s->admin)
        return;
    admin_sasl_free(s->admin->sasl);
    free(s->admin->user);
    free(s->admin);
    s->admin = NULL;
}

static void send_auth(tg_session *s, uint32_t code, const char *data, size_t len)
{
    pgf_builder b;
    pgf_begin(&b, PG_BE_AUTH);
    pgf_put_u32(&b, code);
    if (data)
        pgf_put_bytes(&b, data, len);
    pgf_finish(&b, bufferevent_get_output(s->cl.bev));
}

static void send_param(struct evbuffer *out, const char *name, const char *value)
{
    pgf_builder b;
    pgf_begin(&b, PG_BE_PARAM_STATUS);
    pgf_put_str(&b, name);
    pgf_put_str(&b, value);
    pgf_finish(&b, out);
}

void admin_begin(tg_session *s)
{
    tg_runtime *rt = s->rt;
    s->log.side = "admin";
    if (strcmp(s->cl.database, "tenantguard") != 0) {
        char msg[160];
        snprintf(msg, sizeof(msg), "database \"%.64s\" does not exist: the console's database is tenantguard",
                 s->cl.database);
        sess_fatal(s, TG_SQLSTATE_INVALID_CATALOG_NAME, msg, NULL);
        return;
    }
    if (!rt->admin_users) {
        sess_fatal(s, TG_SQLSTATE_INVALID_AUTHORIZATION, "tenantguard: the console has no users (admin_auth_file)",
                   NULL);
        return;
    }
    s->admin = calloc(1, sizeof(admin_state));
    if (!s->admin || admin_sasl_start(rt, s, s->cl.user) != 0) {
        sess_fatal(s, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory", NULL);
        return;
    }
    sess_set_state(s, SS_ADMIN_AUTH);
    static const char mechs[] = "SCRAM-SHA-256\0";
    send_auth(s, PG_AUTH_SASL, mechs, sizeof(mechs));
    bufferevent_setcb(s->cl.bev, admin_auth_read_cb, NULL, admin_event_cb, s);
    bufferevent_enable(s->cl.bev, EV_READ | EV_WRITE);
}

static void auth_failed(tg_session *s)
{
    char msg[160];
    s->rt->counters.login_failures++;
    tg_clog(TG_LOG_WARNING, &s->log, "console login failed");
    snprintf(msg, sizeof(msg), "password authentication failed for user \"%.64s\"", s->cl.user);
    sess_fatal(s, TG_SQLSTATE_INVALID_PASSWORD, msg, NULL);
}

static void login_ok(tg_session *s)
{
    struct evbuffer *out = bufferevent_get_output(s->cl.bev);
    send_auth(s, PG_AUTH_OK, NULL, 0);
    send_param(out, "server_version", "15.0 (tenantguard " PACKAGE_VERSION " console)");
    send_param(out, "server_encoding", "UTF8");
    send_param(out, "client_encoding", "UTF8");
    send_param(out, "DateStyle", "ISO, MDY");
    send_param(out, "integer_datetimes", "on");
    send_param(out, "standard_conforming_strings", "on");
    send_param(out, "application_name", s->cl.application_name ? s->cl.application_name : "");
    pgf_ready(out, 'I');
    s->admin->user = strdup(s->cl.user);
    if (s->timer)
        evtimer_del(s->timer);   /* the login deadline is over */
    sess_set_state(s, SS_ADMIN);
    tg_clog(TG_LOG_INFO, &s->log, "console login");
    bufferevent_setcb(s->cl.bev, admin_read_cb, NULL, admin_event_cb, s);
    if (evbuffer_get_length(bufferevent_get_input(s->cl.bev)) > 0)
        admin_read_cb(s->cl.bev, s);
}

static void admin_auth_read_cb(struct bufferevent *bev, void *arg)
{
    tg_session *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    while (s->state == SS_ADMIN_AUTH) {
        pgf_header h;
        bool bad;
        const uint8_t *msg = pgf_whole(in, ADMIN_MAX_MESSAGE, &h, &bad);
        if (bad || (msg && h.type != PG_FE_PASSWORD)) {
            sess_fatal(s, TG_SQLSTATE_PROTOCOL_VIOLATION, "tenantguard: expected a SASL response", NULL);
            return;
        }
        if (!msg)
            return;
        pgf_reader r = pgf_reader_init(msg + 5, h.len - 4);
        const char *data;
        size_t len;
        if (s->admin->sasl_round++ == 0) {   /* SASLInitialResponse: mechanism, length, data */
            const char *mech = pgf_get_str(&r);
            uint32_t n = pgf_get_u32(&r);
            data = (const char *)pgf_get_bytes(&r, n == 0xffffffffu ? 0 : n);
            len = n == 0xffffffffu ? 0 : n;
            if (r.bad || strcmp(mech, "SCRAM-SHA-256") != 0) {
                sess_fatal(s, TG_SQLSTATE_INVALID_AUTHORIZATION,
                           "tenantguard: the console accepts SCRAM-SHA-256 only", NULL);
                return;
            }
        } else {
            data = (const char *)r.p;
            len = r.left;
        }
        s->cl.bytes_in += pgf_wire_len(&h);
        char *reply = NULL;
        size_t rlen = 0;
        int rc = admin_sasl_step(s, data ? data : "", len, &reply, &rlen);
        evbuffer_drain(in, pgf_wire_len(&h));
        if (rc < 0) {
            auth_failed(s);
            return;
        }
        send_auth(s, rc == 1 ? PG_AUTH_SASL_FINAL : PG_AUTH_SASL_CONTINUE, reply, rlen);
        free(reply);
        if (rc == 1)
            login_ok(s);
    }
}

/* ---------------------------------------------------------------- commands */

static void refuse_extended(tg_session *s, struct evbuffer *out)
{
    if (s->admin->skipping)
        return;
    adm_error(out, TG_SQLSTATE_FEATURE_NOT_SUPPORTED,
              "the tenantguard console speaks only the simple query protocol",
              "Send commands as simple queries (psql does; psycopg: execute(..., prepare=False) "
              "with no parameters, or use conn.pgconn.exec_).");
    s->admin->skipping = true;
}

void admin_complete_later(tg_session *s, const char *tag)
{
    if (s->state != SS_ADMIN || !s->admin->waiting)
        return;
    struct evbuffer *out = bufferevent_get_output(s->cl.bev);
    if (tag)
        adm_complete(out, tag);
    pgf_ready(out, 'I');
    s->admin->waiting = false;
    bufferevent_enable(s->cl.bev, EV_READ);
    admin_read_cb(s->cl.bev, s);
}

static void admin_read_cb(struct bufferevent *bev, void *arg)
{
    tg_session *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer *out = bufferevent_get_output(bev);
    while (s->state == SS_ADMIN && !s->admin->waiting) {
        pgf_header h;
        bool bad;
        const uint8_t *msg = pgf_whole(in, ADMIN_MAX_MESSAGE, &h, &bad);
        if (bad) {
            sess_fatal(s, TG_SQLSTATE_PROTOCOL_VIOLATION, "tenantguard: invalid message length", NULL);
            return;
        }
        if (!msg)
            return;
        size_t wire = pgf_wire_len(&h);
        s->cl.bytes_in += wire;
        s->last_activity = time(NULL);
        size_t out_before = evbuffer_get_length(out);
        switch (h.type) {
        case PG_FE_QUERY: {
            if (s->admin->skipping)
                break;   /* the server would skip it too, until Sync */
            char *text = strndup((const char *)msg + 5, h.len - 4);
            evbuffer_drain(in, wire);
            if (!text) {
                sess_fatal(s, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory", NULL);
                return;
            }
            bool done = admin_execute(s, text);
            free(text);
            if (s->state != SS_ADMIN)
                return;   /* SHUTDOWN or KILL of ourselves */
            if (done)
                pgf_ready(out, 'I');
            else
                bufferevent_disable(bev, EV_READ);   /* answered later */
            s->cl.bytes_out += evbuffer_get_length(out) - out_before;
            continue;
        }
        case PG_FE_TERMINATE:
            sess_close(s, "console client terminated");
            return;
        case PG_FE_SYNC:
            s->admin->skipping = false;
            pgf_ready(out, 'I');
            break;
        case PG_FE_FUNCTION_CALL:
            refuse_extended(s, out);
            s->admin->skipping = false;
            pgf_ready(out, 'I');
            break;
        case PG_FE_PARSE:
        case PG_FE_BIND:
        case PG_FE_DESCRIBE:
        case PG_FE_EXECUTE:
        case PG_FE_CLOSE:
        case PG_FE_FLUSH:
            refuse_extended(s, out);
            break;
        case PG_FE_COPY_DATA:
        case PG_FE_COPY_DONE:
        case PG_FE_COPY_FAIL:
            break;   /* no COPY is ever started here */
        default:
            sess_fatal(s, TG_SQLSTATE_PROTOCOL_VIOLATION, "tenantguard: invalid frontend message type", NULL);
            return;
        }
        evbuffer_drain(in, wire);
    }
}
