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
static void client_flat_cb(void *arg, const uint8_t *p, size_t n);
static void server_flat_cb(void *arg, const uint8_t *p, size_t n);
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
    s->cl_io.on_flat = client_flat_cb;
    s->sv_io.on_flat = server_flat_cb;
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

/* An input as the relay loops see it. The first `run` bytes are whole
 * messages already due to the other side: they move in one piece when
 * something else must be written or the batch ends, not one move per
 * message. `p`/`n` are the input's first bytes in place, so headers, names
 * and statements are read without a copy; `avail` is the input's length.
 *
 * Two kinds of input. Buffered: the bytes are in the evbuffer `in`, `p`/`n`
 * its first chain, refreshed after every change of `in`. Flat: the bytes
 * just read, `p`/`n` all of them, `in` empty -- a read that found nothing
 * buffered before it (the common case: a whole request, a whole answer).
 * A flat run is written straight from the read buffer at the end of the
 * batch, so such a message is never copied into an evbuffer at all. What
 * needs the evbuffer (streaming, a message cut by the end of the read, the
 * rare replacements) first turns the rest of a flat input into a buffered
 * one (cur_unflat). */
typedef struct cursor {
    struct evbuffer *in, *out;
    const uint8_t *p;
    size_t n, avail, run;
    bool flat;
} cursor;

static void cur_refresh(cursor *c)
{
    struct evbuffer_iovec v;
    if (c->flat)
        return;
    c->avail = evbuffer_get_length(c->in);
    if (c->avail && evbuffer_peek(c->in, 1, NULL, &v, 1) >= 1) {
        c->p = v.iov_base;
        c->n = v.iov_len;
    } else {
        c->p = NULL;
        c->n = 0;
    }
}

/* Drop `k` bytes of flat input from the front. */
static void cur_advance(cursor *c, size_t k)
{
    c->p += k;
    c->n -= k;
    c->avail -= k;
}

/* Move the run; returns its length for the byte counters. */
static size_t cur_flush(cursor *c)
{
    size_t run = c->run;
    if (!run)
        return 0;
    c->run = 0;
    if (c->flat) {
        evbuffer_add(c->out, c->p, run);
        cur_advance(c, run);
        return run;
    }
    evbuffer_remove_buffer(c->in, c->out, run);
    cur_refresh(c);
    return run;
}

/* Flat input becomes buffered, the run still at its head. Out of memory
 * the session ends: false. */
static bool cur_unflat(tg_session *s, cursor *c)
{
    if (!c->flat)
        return true;
    c->flat = false;
    bool ok = c->n == 0 || evbuffer_add(c->in, c->p, c->n) == 0;
    cur_refresh(c);
    if (!ok)
        sess_fatal(s, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory", NULL);
    return ok;
}

/* Drop the `k` bytes after the run (a message sent in another's place);
 * the run goes first. */
static void cur_skip(cursor *c, size_t k)
{
    cur_flush(c);
    if (c->flat) {
        cur_advance(c, k);
        return;
    }
    evbuffer_drain(c->in, k);
    cur_refresh(c);
}

/* The end of a batch: the run goes to `dst` -- from a flat input straight
 * out of the read buffer when nothing is queued before it -- and what a
 * flat input still holds (the start of a message) is kept in `in`. Returns
 * the run's length; false in *ok out of memory. */
static size_t cur_finish(cursor *c, fastio *dst, bool *ok)
{
    *ok = true;
    if (!c->flat)
        return cur_flush(c);
    size_t run = c->run;
    if (run && fastio_send(dst, c->p, run) != 0)
        *ok = false;
    c->run = 0;
    cur_advance(c, run);
    if (c->n && evbuffer_add(c->in, c->p, c->n) != 0)
        *ok = false;
    cur_advance(c, c->n);
    c->flat = false;
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
    if (!cur_unflat(s, c))
        return;   /* the loop sees the session ended */
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
    if (!cur_unflat(s, c))
        return -1;
    rc = names_of(s, h, c->in, NULL, 0, c->out, ctx, sent);
    cur_refresh(c);
    return rc;
}

/* A whole Query or Parse after the run: read in place when it is (else
 * from the head, after the run), then it joins the run or is dropped for
 * the message relay_statement built in its place. Returns false when the
 * session ended. */
static bool client_statement(tg_session *s, cursor *c, const pgf_header *h)
{
    size_t wire = pgf_wire_len(h);
    const uint8_t *msg;
    if (c->run + wire <= c->n) {
        msg = c->p + c->run;
    } else {
        s->cl.bytes_in += cur_flush(c);   /* not flat: a flat input is all in place */
        msg = evbuffer_pullup(c->in, (ssize_t)wire);
        cur_refresh(c);
        if (!msg) {
            sess_fatal(s, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory", NULL);
            return false;
        }
    }
    pgf_builder b;
    int rc = relay_statement(s, h, msg, &b);
    if (rc < 0)
        return false;
    if (rc == 0) {
        c->run += wire;
    } else {
        s->cl.bytes_in += cur_flush(c) + wire;
        int fin = pgf_finish(&b, c->out);
        cur_skip(c, wire);
        if (fin != 0) {
            sess_fatal(s, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory", NULL);
            return false;
        }
    }
    s->cl.stream_type = h->type;
    return true;
}

/* Returns false when the session ended. */
static bool handle_client_message(tg_session *s, const pgf_header *h, cursor *c)
{
    bool whole = c->avail - c->run >= pgf_wire_len(h);

    switch (h->type) {
    case PG_FE_TERMINATE:
        /* Relay it behind whatever precedes it, as the server would see it. */
        s->cl.bytes_in += cur_flush(c);
        if (!cur_unflat(s, c))
            return false;
        pass_message(c->in, c->out, h, &s->cl.stream_left, &s->cl.bytes_in);
        sess_close_after_server_flush(s, "client terminated");
        return false;
    case PG_FE_QUERY:
    case PG_FE_PARSE:
        if (!whole)
            return true;   /* wait: these are read whole (bounded by max_packet_size) */
        return client_statement(s, c, h);
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
                if (!cur_unflat(s, c))
                    return false;
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

static void client_read_batch(tg_session *s, const uint8_t *flat, size_t flat_len);

/* One batch: everything the client sent that can go now, then one write. */
static void client_read(tg_session *s, const uint8_t *flat, size_t flat_len)
{
    client_read_batch(s, flat, flat_len);
    if (s->state == SS_ACTIVE)
        fastio_flush(&s->sv_io);
}

static void client_read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    client_read(arg, NULL, 0);
}

static void client_flat_cb(void *arg, const uint8_t *p, size_t n)
{
    client_read(arg, p, n);
}

static void cursor_init(cursor *c, struct evbuffer *in, struct evbuffer *out, const uint8_t *flat, size_t flat_len)
{
    *c = (cursor){.in = in, .out = out, .p = flat, .n = flat_len, .avail = flat_len, .flat = flat != NULL};
    cur_refresh(c);
}

static void client_read_batch(tg_session *s, const uint8_t *flat, size_t flat_len)
{
    cursor c;
    cursor_init(&c, s->cl_io.in, s->sv_io.out, flat, flat_len);

    while (s->state == SS_ACTIVE) {
        /* A message is streamed or dropped only with no run before it. */
        if (s->cl.stream_left && !cur_unflat(s, &c))
            return;
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
    if (s->state == SS_ACTIVE) {
        bool ok;
        s->cl.bytes_in += cur_finish(&c, &s->sv_io, &ok);
        if (!ok)
            sess_fatal(s, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory", NULL);
    }
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
    case PG_BE_PARSE_COMPLETE:
    case PG_BE_CLOSE_COMPLETE:
    case PG_BE_PORTAL_SUSPENDED:
        return true;
    default:
        return false;
    }
}

static void server_read_batch(tg_session *s, const uint8_t *flat, size_t flat_len);

static void server_read(tg_session *s, const uint8_t *flat, size_t flat_len)
{
    server_read_batch(s, flat, flat_len);
    if (s->state == SS_ACTIVE)
        fastio_flush(&s->cl_io);
    /* Answers free FIFO slots: a client paused for a full FIFO may go on. */
    if (s->state == SS_ACTIVE && s->cl.throttled)
        relay_resume_reading(s);
}

static void server_read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    server_read(arg, NULL, 0);
}

static void server_flat_cb(void *arg, const uint8_t *p, size_t n)
{
    server_read(arg, p, n);
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

static void server_read_batch(tg_session *s, const uint8_t *flat, size_t flat_len)
{
    cursor c;
    cursor_init(&c, s->sv_io.in, s->cl_io.out, flat, flat_len);

    while (s->state == SS_ACTIVE) {
        if (s->sv.stream_left && !cur_unflat(s, &c))
            return;
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
                } else {   /* across chains: not flat, a flat input is all in place */
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
            if (!cur_unflat(s, &c) || relay_server_message(s, &h, c.in, c.out) != 0)
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
        if (!cur_unflat(s, &c))
            return;
        pass_message(c.in, c.out, &h, &s->sv.stream_left, &s->sv.bytes_in);
        cur_refresh(&c);
    }
    if (s->state == SS_ACTIVE) {
        bool ok;
        size_t n = cur_finish(&c, &s->cl_io, &ok);
        s->sv.bytes_in += n;
        s->cl.bytes_out += n;
        if (!ok)
            sess_fatal(s, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory", NULL);
    }
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
