/*
 * track.c -- the in-flight request FIFO (see track.h).
 *
 * A ring buffer of slots that grows by doubling. Invariant: slots
 * [head, head + count) are the requests the server has yet to finish
 * answering, oldest first.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "proxy/pgproto.h"
#include "proxy/track.h"

/* At most this many requests in flight; then the client is not read until
 * the server has answered some (bounded memory for endless pipelines). */
#define TRACK_MAX_SLOTS 65536

struct sess_track {
    track_slot *ring;
    size_t cap, head, count;
    bool skipping;             /* error seen in extended mode: skip until Sync */
    track_ctx_release_fn release;
};

sess_track *track_new(void)
{
    sess_track *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->cap = 16;
    t->ring = calloc(t->cap, sizeof(track_slot));
    if (!t->ring) {
        free(t);
        return NULL;
    }
    return t;
}

void track_set_release(sess_track *t, track_ctx_release_fn fn)
{
    t->release = fn;
}

static track_slot *at(sess_track *t, size_t i)
{
    return &t->ring[(t->head + i) & (t->cap - 1)];   /* cap is a power of two */
}

static void pop(sess_track *t)
{
    track_slot *s = at(t, 0);
    if (s->ctx && t->release)
        t->release(s->ctx);
    s->ctx = NULL;
    t->head = (t->head + 1) & (t->cap - 1);
    t->count--;
}

void track_free(sess_track *t)
{
    if (!t)
        return;
    while (t->count)
        pop(t);
    free(t->ring);
    free(t);
}

bool track_answers(char fe_type)
{
    switch (fe_type) {
    case PG_FE_QUERY:
    case PG_FE_PARSE:
    case PG_FE_BIND:
    case PG_FE_DESCRIBE:
    case PG_FE_EXECUTE:
    case PG_FE_CLOSE:
    case PG_FE_SYNC:
    case PG_FE_FUNCTION_CALL:
        return true;
    default:
        return false;
    }
}

int track_push(sess_track *t, char fe_type, bool describe_statement, track_ctx *ctx)
{
    /* Unanswered messages, and everything but Sync while the server skips
     * after an extended-protocol error, take no slot. */
    if (!track_answers(fe_type) || (t->skipping && fe_type != PG_FE_SYNC)) {
        if (ctx && t->release)
            t->release(ctx);
        return 0;
    }
    if (fe_type == PG_FE_SYNC)
        t->skipping = false;
    if (t->count == t->cap) {
        size_t cap = t->cap * 2;
        track_slot *ring = malloc(cap * sizeof(*ring));
        if (!ring) {
            if (ctx && t->release)
                t->release(ctx);
            return -1;
        }
        for (size_t i = 0; i < t->count; i++)
            ring[i] = *at(t, i);
        free(t->ring);
        t->ring = ring;
        t->cap = cap;
        t->head = 0;
    }
    track_slot *s = &t->ring[(t->head + t->count) & (t->cap - 1)];
    memset(s, 0, sizeof(*s));
    s->kind = fe_type;
    s->describe_statement = describe_statement;
    s->ctx = ctx;
    t->count++;
    return 0;
}

track_slot *track_head(sess_track *t)
{
    return t->count ? at(t, 0) : NULL;
}

size_t track_capacity(const sess_track *t)
{
    return t->cap;
}

size_t track_pending(const sess_track *t)
{
    return t->count;
}

bool track_full(const sess_track *t)
{
    return t->count >= TRACK_MAX_SLOTS;
}

bool track_skipping(const sess_track *t)
{
    return t->skipping;
}

/* An extended-protocol request failed: it and every later request up to the
 * next Sync get no answer. */
static void skip_to_sync(sess_track *t)
{
    pop(t);   /* the failed request */
    while (t->count && at(t, 0)->kind != PG_FE_SYNC)
        pop(t);
    /* No Sync sent yet: the client's next messages are skipped too. */
    if (t->count == 0)
        t->skipping = true;
}

void track_server_msg(sess_track *t, char be_type)
{
    track_slot *s = track_head(t);
    if (!s)
        return;   /* asynchronous message (notice, notification, parameter status) */

    switch (be_type) {
    case PG_BE_NOTICE:
    case PG_BE_NOTIFICATION:
    case PG_BE_PARAM_STATUS:
        return;   /* may arrive at any time */
    case PG_BE_ERROR:
        if (s->kind == PG_FE_QUERY || s->kind == PG_FE_FUNCTION_CALL || s->kind == PG_FE_SYNC)
            return;   /* ReadyForQuery still follows */
        skip_to_sync(t);
        return;
    case PG_BE_READY:
        /* Ends a Query, FunctionCall or Sync. Anything still queued before
         * it was skipped by the server. */
        while (t->count) {
            char k = at(t, 0)->kind;
            pop(t);
            if (k == PG_FE_QUERY || k == PG_FE_FUNCTION_CALL || k == PG_FE_SYNC)
                break;
        }
        return;
    default:
        break;
    }

    switch (s->kind) {
    case PG_FE_QUERY:
        if (be_type == PG_BE_COMMAND_COMPLETE)
            s->completes++;
        return;   /* completes on ReadyForQuery */
    case PG_FE_PARSE:
        if (be_type == PG_BE_PARSE_COMPLETE)
            pop(t);
        return;
    case PG_FE_BIND:
        if (be_type == PG_BE_BIND_COMPLETE)
            pop(t);
        return;
    case PG_FE_CLOSE:
        if (be_type == PG_BE_CLOSE_COMPLETE)
            pop(t);
        return;
    case PG_FE_DESCRIBE:
        /* statement: ParameterDescription, then RowDescription or NoData */
        if (be_type == PG_BE_ROW_DESC || be_type == PG_BE_NO_DATA)
            pop(t);
        return;
    case PG_FE_EXECUTE:
        if (be_type == PG_BE_COMMAND_COMPLETE || be_type == PG_BE_EMPTY_QUERY ||
            be_type == PG_BE_PORTAL_SUSPENDED)
            pop(t);
        return;   /* DataRow, Copy*: still running */
    default:
        return;
    }
}
