/*
 * relay.c -- the active phase: messages in both directions.
 *
 * Each direction loops over whole messages at the head of its input buffer
 * and hands each to the handler of its type (a table, not a switch in one
 * long function). Messages nobody needs to read are passed through as a
 * stream: the header and whatever part of the body has arrived, the rest as
 * it comes, so a 1 GB DataRow never sits in memory. Messages that are read
 * (Query and Parse from the client; ReadyForQuery, CommandComplete,
 * ErrorResponse and ParameterStatus from the server) are taken whole.
 *
 * Backpressure: a side stops reading while the other side's output holds
 * more than buffer_high_water bytes, and resumes when that output drained
 * to half of it (the write low-water mark).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "policy/sqlstate.h"
#include "proxy/pgframe.h"
#include "proxy/pgproto.h"
#include "proxy/relay.h"
#include "proxy/runtime.h"
#include "proxy/session.h"
#include "proxy/stmtctx.h"
#include "proxy/track.h"

/* Server messages the proxy reads are small; a bigger one of these types
 * means a broken or hostile server. */
#define SERVER_INSPECT_MAX (16 * 1024 * 1024)

static void client_read_cb(struct bufferevent *bev, void *arg);
static void server_read_cb(struct bufferevent *bev, void *arg);
static void output_drained_cb(struct bufferevent *bev, void *arg);
static void client_event_cb(struct bufferevent *bev, short what, void *arg);
static void server_event_cb(struct bufferevent *bev, short what, void *arg);

void relay_begin(tg_session *s)
{
    size_t hw = (size_t)s->cfg->buffer_high_water;
    if (s->timer)
        evtimer_del(s->timer);   /* login is over; the janitor watches idleness */
    s->last_activity = time(NULL);
    bufferevent_setcb(s->cl.bev, client_read_cb, output_drained_cb, client_event_cb, s);
    bufferevent_setcb(s->sv.bev, server_read_cb, output_drained_cb, server_event_cb, s);
    bufferevent_setwatermark(s->cl.bev, EV_WRITE, hw / 2, 0);
    bufferevent_setwatermark(s->sv.bev, EV_WRITE, hw / 2, 0);
    bufferevent_set_max_single_read(s->cl.bev, 65536);
    bufferevent_set_max_single_read(s->sv.bev, 65536);
    if (fastio_attach(&s->cl_io, s->rt->base, s->cl.bev, !s->cl.tls, hw / 2, client_read_cb, output_drained_cb,
                      client_event_cb, s) != 0 ||
        fastio_attach(&s->sv_io, s->rt->base, s->sv.bev, !s->sv.tls, hw / 2, server_read_cb, output_drained_cb,
                      server_event_cb, s) != 0) {
        sess_fatal(s, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory", NULL);
        return;
    }
    /* Output queued by the auth phase (ReadyForQuery at least) is now ours
     * to write: attaching took EV_WRITE away from libevent. */
    fastio_flush(&s->cl_io);
    fastio_flush(&s->sv_io);
    if (s->state != SS_ACTIVE)
        return;
    /* The client may have pipelined its first queries behind its password. */
    if (evbuffer_get_length(s->cl_io.in) > 0)
        client_read_cb(s->cl.bev, s);
}

/* ---------------------------------------------------------------- plumbing */

uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---------------------------------------------------------------- cursor */

/* An input buffer as the relay loops see it. The first `run` bytes are
 * whole messages already due to the other side: they move in one
 * evbuffer_remove_buffer when something else must be written or the batch
 * ends, not one move per message. `p`/`n` are the buffer's first chain in
 * place, so headers and the names in small messages are read without a
 * copy; `avail` is the buffer's length. Refreshed after every change of
 * `in`. */
typedef struct cursor {
    struct evbuffer *in, *out;
    const uint8_t *p;
    size_t n, avail, run;
} cursor;

static void cur_refresh(cursor *c)
{
    struct evbuffer_iovec v;
    c->avail = evbuffer_get_length(c->in);
    if (c->avail && evbuffer_peek(c->in, 1, NULL, &v, 1) >= 1) {
        c->p = v.iov_base;
        c->n = v.iov_len;
    } else {
        c->p = NULL;
        c->n = 0;
    }
}

/* Move the run; returns its length for the byte counters. */
static size_t cur_flush(cursor *c)
{
    size_t run = c->run;
    if (!run)
        return 0;
    evbuffer_remove_buffer(c->in, c->out, run);
    c->run = 0;
    cur_refresh(c);
    return run;
}

/* The header of the message after the run. */
static pgf_peek_result cur_peek(const cursor *c, pgf_header *h)
{
    if (c->run + 5 <= c->n)
        return pgf_peek_mem(c->p + c->run, h);
    if (c->avail - c->run < 5)
        return PGF_NEED_MORE;
    return pgf_peek_at(c->in, c->run, h);
}

/* The bytes of the message after the run that sit in place (or NULL). */
static const uint8_t *cur_view(const cursor *c, size_t *len)
{
    *len = c->run < c->n ? c->n - c->run : 0;
    return *len ? c->p + c->run : NULL;
}

static bool over_high_water(const tg_session *s, const fastio *dst, size_t run)
{
    return evbuffer_get_length(dst->out) + run >= (size_t)s->cfg->buffer_high_water;
}

/* Move up to `n` bytes of a message being streamed; returns bytes left. */
static uint32_t stream_some(struct evbuffer *in, struct evbuffer *out, uint32_t n, uint64_t *count)
{
    size_t avail = evbuffer_get_length(in);
    size_t take = avail < n ? avail : n;
    if (take) {
        evbuffer_remove_buffer(in, out, take);
        *count += take;
    }
    return n - (uint32_t)take;
}

/* Pass one message through: whole if it is here, else header + what has
 * arrived, the rest streamed later via *stream_left. */
static void pass_message(struct evbuffer *in, struct evbuffer *out, const pgf_header *h,
                         uint32_t *stream_left, uint64_t *count)
{
    *stream_left = stream_some(in, out, (uint32_t)pgf_wire_len(h), count);
}

void relay_resume_reading(tg_session *s)
{
    if (s->state != SS_ACTIVE)
        return;
    if (s->cl.throttled && !over_high_water(s, &s->sv_io, 0) && !track_full(s->track) &&
        s->env.pending_lexing == 0 && !(s->rt->paused && track_pending(s->track) == 0)) {
        s->cl.throttled = false;
        fastio_read(&s->cl_io, true);
        client_read_cb(s->cl.bev, s);   /* work on what is already buffered */
    }
    if (s->state == SS_ACTIVE && s->sv.throttled && !over_high_water(s, &s->cl_io, 0)) {
        s->sv.throttled = false;
        fastio_read(&s->sv_io, true);
        server_read_cb(s->sv.bev, s);
    }
}

static void output_drained_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    tg_session *s = arg;
    if (s->state != SS_ACTIVE)
        return;
    relay_resume_reading(s);
}

/* ---------------------------------------------------------------- client -> server */

static bool frontend_type_ok(char t)
{
    switch (t) {
    case PG_FE_BIND: case PG_FE_CLOSE: case PG_FE_DESCRIBE: case PG_FE_EXECUTE:
    case PG_FE_FUNCTION_CALL: case PG_FE_FLUSH: case PG_FE_PARSE: case PG_FE_QUERY:
    case PG_FE_SYNC: case PG_FE_TERMINATE: case PG_FE_COPY_FAIL: case PG_FE_COPY_DONE:
    case PG_FE_COPY_DATA: case PG_FE_PASSWORD:
        return true;
    default:
        return false;
    }
}

static void client_protocol_error(tg_session *s, const char *msg)
{
    s->rt->counters.protocol_errors++;
    sess_fatal(s, TG_SQLSTATE_PROTOCOL_VIOLATION, msg, NULL);
}

/* Pass the message after the run: whole, it joins the run; else the run
 * goes, then the message's header and what has arrived, the rest streamed
 * later via stream_left. */
static void client_pass(tg_session *s, cursor *c, const pgf_header *h)
{
    size_t wire = pgf_wire_len(h);
    if (c->avail - c->run >= wire) {
        c->run += wire;
        return;
    }
    s->cl.bytes_in += cur_flush(c);
    pass_message(c->in, c->out, h, &s->cl.stream_left, &s->cl.bytes_in);
    cur_refresh(c);
}

/* Bind, Execute, Close: read their names in place behind the run; when that
 * is not enough (a long name, a chain boundary, a Bind to replace) the run
 * goes first and they read from the head. */
static int names_of(tg_session *s, const pgf_header *h, struct evbuffer *in, const uint8_t *view, size_t vlen,
                    struct evbuffer *out, track_ctx **ctx, bool *sent)
{
    return h->type == PG_FE_BIND      ? relay_bind(s, h, in, view, vlen, out, sent)
           : h->type == PG_FE_EXECUTE ? relay_execute(s, h, in, view, vlen, ctx)
                                      : relay_close(s, h, in, view, vlen, ctx);
}

static int client_names(tg_session *s, cursor *c, const pgf_header *h, track_ctx **ctx, bool *sent)
{
    size_t vlen;
    const uint8_t *view = cur_view(c, &vlen);
    int rc = names_of(s, h, NULL, view, vlen, NULL, ctx, sent);
    if (rc != 2)
        return rc;
    s->cl.bytes_in += cur_flush(c);
    rc = names_of(s, h, c->in, NULL, 0, c->out, ctx, sent);
    cur_refresh(c);
    return rc;
}

/* Returns false when the session ended. */
static bool handle_client_message(tg_session *s, const pgf_header *h, cursor *c)
{
    bool whole = c->avail - c->run >= pgf_wire_len(h);

    switch (h->type) {
    case PG_FE_TERMINATE:
        /* Relay it behind whatever precedes it, as the server would see it. */
        s->cl.bytes_in += cur_flush(c);
        pass_message(c->in, c->out, h, &s->cl.stream_left, &s->cl.bytes_in);
        sess_close_after_server_flush(s, "client terminated");
        return false;
    case PG_FE_QUERY:
    case PG_FE_PARSE:
        if (!whole)
            return true;   /* wait: these are read whole (bounded by max_packet_size) */
        s->cl.bytes_in += cur_flush(c);
        if (relay_statement(s, h, c->in, c->out) != 0)
            return false;
        cur_refresh(c);
        break;
    case PG_FE_DESCRIBE: {
        if (!whole)
            return true;
        size_t vlen;
        const uint8_t *view = cur_view(c, &vlen);
        uint8_t kind = 0;   /* 'S'tatement or 'P'ortal */
        if (pgf_wire_len(h) >= 6) {
            if (view && vlen >= 6) {
                kind = view[5];
            } else {
                s->cl.bytes_in += cur_flush(c);
                uint8_t hdr[6];
                if (evbuffer_copyout(c->in, hdr, 6) == 6)
                    kind = hdr[5];
            }
        }
        if (track_push(s->track, h->type, kind == 'S', NULL) != 0) {
            sess_fatal(s, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory", NULL);
            return false;
        }
        client_pass(s, c, h);
        break;
    }
    case PG_FE_BIND:
    case PG_FE_EXECUTE:
    case PG_FE_CLOSE: {
        /* These are read only as far as the names they carry. */
        size_t need = pgf_wire_len(h) < RELAY_NAMES_PEEK ? pgf_wire_len(h) : RELAY_NAMES_PEEK;
        if (c->avail - c->run < need)
            return true;
        track_ctx *ctx = NULL;
        bool sent = false;
        int rc = client_names(s, c, h, &ctx, &sent);
        if (rc > 0)
            return true;   /* a long name: wait for the whole message */
        if (rc != 0) {
            stmtctx_release(ctx);
            if (s->state == SS_ACTIVE)
                sess_fatal(s, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory", NULL);
            return false;
        }
        if (sent) {
            cur_refresh(c);
            break;   /* relay_bind queued its own Bind; the client's is dropped as it streams */
        }
        if (track_push(s->track, h->type, false, ctx) != 0) {
            sess_fatal(s, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory", NULL);
            return false;
        }
        client_pass(s, c, h);
        break;
    }
    case PG_FE_FUNCTION_CALL:
        /* A fast-path function call is opaque: it may set search_path. */
        sessenv_apply(&s->env, &(rw_effect){.kind = RW_FX_PATH_UNKNOWN});
        /* fall through */
    default:
        if (track_push(s->track, h->type, false, NULL) != 0) {
            sess_fatal(s, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory", NULL);
            return false;
        }
        client_pass(s, c, h);
        break;
    }
    s->cl.stream_type = h->type;
    return true;
}

static void client_read_batch(struct bufferevent *bev, tg_session *s);

/* One batch: everything the client sent that can go now, then one write. */
static void client_read_cb(struct bufferevent *bev, void *arg)
{
    tg_session *s = arg;
    client_read_batch(bev, s);
    if (s->state == SS_ACTIVE)
        fastio_flush(&s->sv_io);
}

static void client_read_batch(struct bufferevent *bev, tg_session *s)
{
    (void)bev;
    cursor c = {.in = s->cl_io.in, .out = s->sv_io.out};
    cur_refresh(&c);

    while (s->state == SS_ACTIVE) {
        /* A message is streamed or dropped only with no run before it. */
        if (s->cl.stream_left && s->cl.stream_drop) {
            size_t n = c.avail < s->cl.stream_left ? c.avail : s->cl.stream_left;
            evbuffer_drain(c.in, n);
            cur_refresh(&c);
            s->cl.stream_left -= (uint32_t)n;
            if (s->cl.stream_left)
                break;
            s->cl.stream_drop = false;
        }
        if (s->cl.stream_left && over_high_water(s, &s->sv_io, 0)) {
            s->cl.throttled = true;     /* even inside one big message */
            fastio_read(&s->cl_io, false);
            break;
        }
        if (s->cl.stream_left) {
            s->cl.stream_left = stream_some(c.in, c.out, s->cl.stream_left, &s->cl.bytes_in);
            cur_refresh(&c);
            if (s->cl.stream_left)
                break;
        }
        if (over_high_water(s, &s->sv_io, c.run) || track_full(s->track) || s->env.pending_lexing > 0 ||
            (s->rt->paused && track_pending(s->track) == 0)) {
            /* A setting that changes how text is read (standard_conforming_
             * strings, client_encoding) is in flight: the server reads the
             * next message with the new value, so wait for its answer -- and
             * ask the server for it now, in case no Sync follows yet. */
            if (s->env.pending_lexing > 0 && !s->cl.throttled) {
                s->cl.bytes_in += cur_flush(&c);
                evbuffer_add(c.out, "H\0\0\0\4", 5);
            }
            /* PAUSE holds a session at its next request, once nothing runs. */
            s->cl.throttled = true;
            fastio_read(&s->cl_io, false);
            break;
        }
        if (track_pending(s->track) == 0)
            s->busy_since_us = mono_us();
        pgf_header h;
        pgf_peek_result pr = cur_peek(&c, &h);
        if (pr == PGF_NEED_MORE)
            break;
        if (pr == PGF_BAD_LENGTH) {
            client_protocol_error(s, "tenantguard: invalid message length");
            return;
        }
        if (!frontend_type_ok(h.type)) {
            char msg[96];
            snprintf(msg, sizeof(msg), "tenantguard: invalid frontend message type %d", (unsigned char)h.type);
            client_protocol_error(s, msg);
            return;
        }
        if ((int64_t)h.len - 4 > s->cfg->max_packet_size) {
            char msg[160];
            snprintf(msg, sizeof(msg), "tenantguard: message of %u bytes exceeds max_packet_size (%lld)",
                     h.len - 4, (long long)s->cfg->max_packet_size);
            client_protocol_error(s, msg);
            return;
        }
        size_t before = c.avail - c.run;
        /* The idle clock counts messages, not bytes: a client trickling a
         * Query one byte a second is idle until the message is whole. */
        if (before >= pgf_wire_len(&h))
            s->last_activity = time(NULL);
        if (!handle_client_message(s, &h, &c))
            return;
        if (c.avail - c.run == before && !s->cl.stream_left)
            break;   /* waiting for the rest of a whole-read message */
    }
    if (s->state == SS_ACTIVE)
        s->cl.bytes_in += cur_flush(&c);
}

static void client_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    tg_session *s = arg;
    /* What the client sent before it went still reaches the server. */
    sess_close_after_server_flush(s, (what & BEV_EVENT_EOF) ? "client disconnected" : "client connection error");
}

/* ---------------------------------------------------------------- server -> client */

/* An ErrorResponse larger than this is not one of ours (marker errors and
 * the helpers' 42501s are short): it is passed through as a stream. */
#define SERVER_ERROR_INSPECT_MAX (1024 * 1024)

static bool server_inspects(const pgf_header *h)
{
    switch (h->type) {
    case PG_BE_ERROR:
        return h->len <= SERVER_ERROR_INSPECT_MAX;
    case PG_BE_READY:
    case PG_BE_COMMAND_COMPLETE:
    case PG_BE_PARAM_STATUS:
    case PG_BE_CLOSE_COMPLETE:
        return true;
    default:
        return false;
    }
}

static void server_read_batch(struct bufferevent *bev, tg_session *s);

static void server_read_cb(struct bufferevent *bev, void *arg)
{
    tg_session *s = arg;
    server_read_batch(bev, s);
    if (s->state == SS_ACTIVE)
        fastio_flush(&s->cl_io);
    /* Answers free FIFO slots: a client paused for a full FIFO may go on. */
    if (s->state == SS_ACTIVE && s->cl.throttled)
        relay_resume_reading(s);
}

/* The run goes to the client in one move. */
static void server_flush(tg_session *s, cursor *c)
{
    size_t n = cur_flush(c);
    s->sv.bytes_in += n;
    s->cl.bytes_out += n;
}

/* Small inspected messages (ReadyForQuery, CommandComplete, ...) are read
 * from a copy where they stand, so that a whole answer -- RowDescription,
 * DataRows, CommandComplete, ReadyForQuery -- moves to the client in one
 * evbuffer move instead of one per message. */
#define SERVER_INSPECT_INLINE 512

/* A message up to this size goes to the client only whole: if the server
 * dies in the middle of it, the client gets a clean FATAL instead of half a
 * frame. Bigger ones stream (a 1 GB DataRow must not be held), and a server
 * dying inside one leaves the client a cut frame and a close -- nothing can
 * be appended to it. */
#define SERVER_HOLD_MAX 65536

static void server_read_batch(struct bufferevent *bev, tg_session *s)
{
    (void)bev;
    cursor c = {.in = s->sv_io.in, .out = s->cl_io.out};
    cur_refresh(&c);

    while (s->state == SS_ACTIVE) {
        if (s->sv.stream_left && over_high_water(s, &s->cl_io, 0)) {
            s->sv.throttled = true;     /* even inside one big DataRow */
            fastio_read(&s->sv_io, false);
            break;
        }
        if (s->sv.stream_left) {
            s->sv.stream_left = stream_some(c.in, c.out, s->sv.stream_left, &s->sv.bytes_in);
            cur_refresh(&c);
            if (s->sv.stream_left)
                break;
        }
        if (over_high_water(s, &s->cl_io, c.run)) {
            server_flush(s, &c);
            s->sv.throttled = true;
            fastio_read(&s->sv_io, false);
            break;
        }
        pgf_header h;
        pgf_peek_result pr = cur_peek(&c, &h);
        if (pr == PGF_NEED_MORE)
            break;
        /* No PostgreSQL message comes near 2 GB; 0xffffffff would also wrap
         * the streaming arithmetic (wire length 1 + len). */
        if (pr == PGF_BAD_LENGTH || h.len > 0x7ffffffeu || (server_inspects(&h) && h.len > SERVER_INSPECT_MAX)) {
            server_flush(s, &c);
            sess_fatal(s, TG_SQLSTATE_CONNECTION_FAILURE, "tenantguard: invalid message from the server",
                       NULL);
            return;
        }
        size_t wire = pgf_wire_len(&h);
        bool whole = c.avail - c.run >= wire;
        if (server_inspects(&h)) {
            if (!whole)
                break;
            if (h.type != PG_BE_ERROR && wire <= SERVER_INSPECT_INLINE) {
                if (c.run + wire <= c.n) {
                    relay_server_inspect(s, &h, c.p + c.run + 5, NULL);   /* in place */
                } else {
                    uint8_t msg[SERVER_INSPECT_INLINE];
                    struct evbuffer_ptr p;
                    evbuffer_ptr_set(c.in, &p, c.run, EVBUFFER_PTR_SET);
                    evbuffer_copyout_from(c.in, &p, msg, wire);
                    relay_server_inspect(s, &h, msg + 5, NULL);
                }
                c.run += wire;
                continue;
            }
            /* An error may be replaced, a big message is read in place: both
             * from the head, after what is due before them. */
            server_flush(s, &c);
            if (relay_server_message(s, &h, c.in, c.out) != 0)
                return;
            cur_refresh(&c);
            continue;
        }
        if (!whole && wire <= SERVER_HOLD_MAX)
            break;   /* wait for the rest */
        if (h.type == PG_BE_ERROR)
            s->request_failed = true;   /* a huge error: streamed, still an error */
        track_server_msg(s->track, h.type);
        if (whole) {
            c.run += wire;
            continue;
        }
        server_flush(s, &c);
        pass_message(c.in, c.out, &h, &s->sv.stream_left, &s->sv.bytes_in);
        cur_refresh(&c);
    }
    server_flush(s, &c);
}

static void server_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    tg_session *s = arg;
    if (s->sv.said_fatal) {
        sess_close_after_flush(s, "the server ended the session");
        return;
    }
    /* The server ended the session (it usually said why in an ErrorResponse,
     * already relayed). Tell the client, which may be mid-query. */
    sess_fatal(s, TG_SQLSTATE_CONNECTION_FAILURE,
               (what & BEV_EVENT_EOF) ? "tenantguard: the server closed the connection"
                                      : "tenantguard: lost the connection to the server",
               NULL);
}
