/*
 * relay.h -- the message handlers of the active phase that read what they
 * relay: statements from the client (statement.c), and the server's
 * ReadyForQuery, CommandComplete, ErrorResponse and ParameterStatus
 * (responses.c). relay.c owns framing, streaming and backpressure.
 */
#ifndef TG_RELAY_H
#define TG_RELAY_H

#include "proxy/pgframe.h"
#include <stdbool.h>

#include "proxy/session.h"

struct evbuffer;

/* Microseconds on the monotonic clock (statement latency). */
uint64_t mono_us(void);

/* A whole Query or Parse message, `msg` (its header included): decide and
 * push its FIFO slot. Returns 0 when it goes to the server as it is (the
 * caller moves it), 1 when `b` holds the message to send in its place (the
 * caller finishes `b` and drops `msg`), -1 when the session ended. `msg` is
 * only read. */
int relay_statement(tg_session *s, const pgf_header *h, const uint8_t *msg, pgf_builder *b);

struct track_ctx;

/* Bind: may replace a stale statement's Bind (then *sent is set and the
 * client's message is dropped as it streams). Execute and Close: *ctx gets
 * what their slot must remember (or NULL). They need the first
 * RELAY_NAMES_PEEK bytes of the message, or all of it when a name is longer:
 * then they return 1 until it is whole. Return -1 when the session ended.
 *
 * The message is at the head of `in`; or, with `in` NULL, it is somewhere
 * behind other messages still due to the server and `view` holds its first
 * `view_len` bytes in place: then they return 2 when they need more than
 * the view, or (Bind) need to write to `out` -- the caller sends what
 * precedes the message and calls again with `in`. */
#define RELAY_NAMES_PEEK 135
int relay_bind(tg_session *s, const pgf_header *h, struct evbuffer *in, const uint8_t *view, size_t view_len,
               struct evbuffer *out, bool *sent);
int relay_execute(tg_session *s, const pgf_header *h, struct evbuffer *in, const uint8_t *view, size_t view_len,
                  struct track_ctx **ctx);
int relay_close(tg_session *s, const pgf_header *h, struct evbuffer *in, const uint8_t *view, size_t view_len,
                struct track_ctx **ctx);

/* The bookkeeping of one inspected server message whose bytes the caller
 * forwards itself; returns true when it wrote a replacement to `out` instead
 * (an ErrorResponse standing for a rejection; `out` NULL: never replace). */
bool relay_server_inspect(tg_session *s, const pgf_header *h, const uint8_t *payload, struct evbuffer *out);

/* A whole inspected server message is at the head of `in`: act on it and
 * forward it to `out` (the client). Returns -1 when the session ended. */
int relay_server_message(tg_session *s, const pgf_header *h, struct evbuffer *in, struct evbuffer *out);

#endif
