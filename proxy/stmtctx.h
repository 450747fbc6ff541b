/*
 * stmtctx.h -- what a request's FIFO slot remembers until the server has
 * answered it: the rewrite decision (events, session effects, a rejection
 * to put in place of the server's marker error), the statement name of a
 * Parse or Close, the effects an Execute will have.
 */
#ifndef TG_STMTCTX_H
#define TG_STMTCTX_H

#include <stdbool.h>
#include <stdint.h>

#include "proxy/track.h"
#include "rewrite/rewrite.h"

struct track_ctx {
    char kind;                  /* the frontend message type */
    bool has_decision;
    rw_decision d;              /* Query / Parse: released with the slot */

    /* Parse / Close 'S': the change to the session's statements, pending
     * until the server answers it (sessenv_stmt_op_end) */
    struct sessenv_stmt_op *op;
    struct sessenv *op_env;
    bool rewritten;             /* the server got our text, not the client's */
    uint64_t generation;        /* the policy ... */
    uint64_t env_hash;          /* ... and name environment it was decided under */
    rw_effect *effects;         /* Parse: kept for Execute; Execute: to apply */
    int n_effects;

    /* a rejection decided here: the server's marker error is replaced */
    bool reject;
    const char *reject_sqlstate;
    char *reject_message;
    const char *reject_marker;
    int16_t reject_table;
    uint8_t reject_rule;

    struct sessenv *pending_env; /* counted in its pending_changes until released */
    struct sessenv *lexing_env;  /* counted in its pending_lexing until released */
    char *text;                 /* the client's text: a violation's fingerprint; a Parse's
                                 * statement is decided again after a policy change */
};

track_ctx *stmtctx_new(char kind);
void stmtctx_release(track_ctx *c);

/* Frees an effect array (the strings too); copies: sessenv_effects_copy. */
void stmtctx_free_effects(rw_effect *fx, int n);

#endif
