/*
 * relay.h -- the message handlers of the active phase that read what they
 * relay: statements from the client (statement.c), and the server's
 * ReadyForQuery, CommandComplete, ErrorResponse and ParameterStatus
 * (responses.c). relay.c owns framing, streaming and backpressure.
 */
#ifndef TG_RELAY_H
#define TG_RELAY_H

#include "proxy/pgframe.h"
#include "proxy/session.h"

struct evbuffer;

/* A whole Query or Parse message is at the head of `in`: decide, forward to
 * `out` (the server), push its FIFO slot. Returns -1 when the session ended. */
int relay_statement(tg_session *s, const pgf_header *h, struct evbuffer *in, struct evbuffer *out);

/* A whole inspected server message is at the head of `in`: act on it and
 * forward it to `out` (the client). Returns -1 when the session ended. */
int relay_server_message(tg_session *s, const pgf_header *h, struct evbuffer *in, struct evbuffer *out);

#endif
