/*
 * track.h -- the in-flight request FIFO of a session.
 *
 * The server answers a connection's messages strictly in order, so the proxy
 * can pair each response with the request that caused it by keeping one slot
 * per request that gets an answer (Query, Parse, Bind, Describe, Execute,
 * Close, Sync, FunctionCall). This is what lets it apply a statement's
 * session effects only once the server confirmed it, replace the error of a
 * rejected statement, and know when a session is idle.
 *
 *   client sends:  P B D E S Q          server answers: 1 2 t T D* C Z ... Z
 *   FIFO:         [P][B][D][E][S][Q]    head pops as each request completes
 *
 * After an ErrorResponse in the extended protocol, the server skips every
 * message until Sync: the skipped slots are dropped without an answer.
 */
#ifndef TG_TRACK_H
#define TG_TRACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sess_track sess_track;

/* What a slot carries for the response handlers: opaque to the FIFO,
 * released through the callback given to track_new when the slot is done. */
typedef struct track_ctx track_ctx;
typedef void (*track_ctx_release_fn)(track_ctx *ctx);

typedef struct track_slot {
    char kind;             /* the frontend message type */
    uint16_t completes;    /* Query: CommandCompletes seen so far */
    bool describe_statement;  /* Describe 'S' (ParameterDescription first) */
    track_ctx *ctx;        /* may be NULL */
} track_slot;

sess_track *track_new(void);
void track_set_release(sess_track *t, track_ctx_release_fn fn);
void track_free(sess_track *t);

/* A client message was forwarded. Messages that get no answer (Flush,
 * CopyData/Done/Fail, Terminate) push nothing. Takes ownership of ctx.
 * Returns -1 out of memory. */
int track_push(sess_track *t, char fe_type, bool describe_statement, track_ctx *ctx);

/* Does a message of this frontend type get an answer (take a slot)? */
bool track_answers(char fe_type);

/* The slot the next server response belongs to, or NULL. */
track_slot *track_head(sess_track *t);

/* A server message arrived: advance the FIFO. Returns the slot it answers
 * (valid until the next track_* call) so that callers may look at its ctx
 * BEFORE calling this, via track_head(). */
void track_server_msg(sess_track *t, char be_type);

/* Slots allocated (SHOW MEM). */
size_t track_capacity(const sess_track *t);

/* In-flight slots (0 = the server owes nothing). */
size_t track_pending(const sess_track *t);

/* Too many requests in flight: stop reading the client for now. */
bool track_full(const sess_track *t);

/* The server skips messages until Sync after an extended-protocol error. */
bool track_skipping(const sess_track *t);

#endif
