/*
 * sessenv.h -- what a session's state means for name resolution: the
 * search_path, the temp tables named like watched ones, the user "$user"
 * stands for, standard_conforming_strings -- and the statements a session
 * prepared, so that one prepared before enforcement is not run after it.
 *
 * It changes only on facts the server confirmed: a statement's effects
 * (from rewrite/) are applied when its CommandComplete arrives, provisionally
 * inside a transaction, and made final or undone when ReadyForQuery shows
 * the transaction ended. Whenever the proxy cannot be sure, the search_path
 * becomes unknown -- and rewrite/ then treats an unqualified watched name as
 * the watched table, which can fail a statement but never let a write pass.
 */
#ifndef TG_SESSENV_H
#define TG_SESSENV_H

#include <stdbool.h>
#include <stdint.h>

#include "proxy/pgproto.h"
#include "rewrite/rewrite.h"

#define SESSENV_MAX_PATH 16
#define SESSENV_MAX_TEMP 32
#define SESSENV_TEMP_NEW 1         /* created in the open transaction: gone if it rolls back */
#define SESSENV_TEMP_ON_COMMIT_DROP 2

typedef struct sessenv_path {
    bool known;
    int n;
    char *schemas[SESSENV_MAX_PATH];   /* "$user" kept as is; expanded when building rw_env */
} sessenv_path;

typedef struct sessenv_prepared {
    char *name;
    char *text;                   /* the client's text, to decide again after a policy change */
    bool rewritten;               /* the server got our rewritten text */
    uint64_t generation;          /* policy generation it was last decided under */
    uint64_t env_hash;            /* ... and name environment */
    rw_effect *effects;           /* what executing it does to the session (owned) */
    int n_effects;
    struct sessenv_prepared *next;
} sessenv_prepared;

/* Which statement a portal runs (Bind); few portals live at once. What
 * the statement does is taken when the portal is bound: PostgreSQL runs the
 * portal's own plan even if the statement is closed or replaced after the
 * Bind. */
typedef struct sessenv_portal {
    char *portal, *statement;
    bool known;                   /* the statement was known at Bind */
    bool rewritten;
    char *text;                   /* only when rewritten (the helpers may name a violation) */
    rw_effect *effects;           /* owned */
    int n_effects;
    struct sessenv_portal *next;
} sessenv_portal;

/* A Parse or Close 'S' sent and not answered yet. The statements the server
 * will have once it has read them are the confirmed ones (e->prepared,
 * e->prepared_sql) with these applied in order: that is what a Bind behind
 * them sees. An answer ends the oldest: ParseComplete/CloseComplete makes
 * it confirmed; an error or a skip (after an earlier error, up to Sync)
 * drops it -- the server kept what it had (a failed Parse of the unnamed
 * statement has dropped the old unnamed one first). */
typedef struct sessenv_stmt_op {
    bool close;
    char name[PG_NAME_MAX + 1];
    sessenv_prepared entry;       /* Parse: the statement (its name is `name`) */
    struct sessenv_stmt_op *prev, *next;
} sessenv_stmt_op;

typedef enum { SESSENV_OP_DONE, SESSENV_OP_FAILED, SESSENV_OP_SKIPPED } sessenv_op_end;

typedef struct sessenv {
    sessenv_path login;           /* as probed at login: what RESET restores */
    sessenv_path committed;       /* outside any transaction */
    sessenv_path session_in_txn;  /* what COMMIT would keep */
    sessenv_path effective;       /* what resolution uses now (SET LOCAL included) */
    bool in_block;                /* the last ReadyForQuery said 'T' or 'E' */
    bool txn_changed;             /* the path changed inside this transaction */
    int pending_changes;          /* requests in flight that may change name resolution:
                                   * until they complete, the path counts as unknown */
    int pending_lexing;           /* ... that may change how the next text is read: the
                                   * proxy reads no further client message until they complete */
    char *user;                   /* what "$user" stands for; NULL = unknown */
    bool std_strings;
    bool client_only_encoding;    /* SJIS, BIG5, GBK, UHC, GB18030 */
    char *temp_rels[SESSENV_MAX_TEMP];
    uint8_t temp_flags[SESSENV_MAX_TEMP];   /* SESSENV_TEMP_* */
    int n_temp;
    bool temp_overflow;           /* too many to track: resolution goes unknown */
    sessenv_prepared *prepared;   /* protocol-level statements (Parse), "" = unnamed */
    sessenv_prepared *prepared_sql; /* SQL PREPARE */
    sessenv_portal *portals;
    int n_portals;
    sessenv_stmt_op *ops_head, *ops_tail;   /* oldest first */
    sessenv_stmt_op *spare_op;    /* one kept for the next Parse */
    /* the login's view of other relations named like watched tables (the
     * probe owns the strings; see rw_env.rel_schemas) */
    const char *const *rel_schemas, *const *rel_names;
    int n_rels;
    bool rels_known;

    /* rw_env built from the above, rebuilt when `dirty` */
    bool dirty;
    rw_env env;
    const char *env_path[SESSENV_MAX_PATH];
    const char *env_temp[SESSENV_MAX_TEMP];
} sessenv;

void sessenv_init(sessenv *e, const char *login_user);
void sessenv_free(sessenv *e);

/* The current role's name, what "$user" in the search_path stands for (login probe). */
void sessenv_set_user(sessenv *e, const char *user);

/* The relations named like watched tables the login probe found outside the
 * watched tables (arrays owned by the caller, alive as long as e). */
void sessenv_set_rels(sessenv *e, const char *const *schemas, const char *const *names, int n, bool known);

/* The search_path value as SHOW prints it (login probe); NULL = unknown. */
void sessenv_set_login_path(sessenv *e, const char *value);

/* The environment for rewrite/, valid until the next sessenv_* call. */
const rw_env *sessenv_env(sessenv *e);

/* A statement's effect, confirmed by its CommandComplete. */
void sessenv_apply(sessenv *e, const rw_effect *fx);

/* A CommandComplete tag: COMMIT and ROLLBACK (also AND CHAIN, also inside
 * a multi-statement Query) end the transaction right there. */
void sessenv_command_tag(sessenv *e, const char *tag);

/* ReadyForQuery with status 'I', 'T' or 'E'; request_failed: an
 * ErrorResponse came since the previous ReadyForQuery. At 'I' an implicit
 * transaction (of a Query or a Sync group) has ended: it committed unless
 * the request failed. */
void sessenv_ready(sessenv *e, char status, bool request_failed);

/* A request that may change name resolution was sent / has completed. */
void sessenv_pending(sessenv *e, int delta);

/* A savepoint was rolled back: changes since it are unknown to us. */
void sessenv_savepoint_rollback(sessenv *e);

/* The server reported standard_conforming_strings / client_encoding. */
void sessenv_std_strings(sessenv *e, bool on);
void sessenv_client_encoding(sessenv *e, const char *encoding);

/* A Parse was sent: the statement exists for what follows it in client
 * order until its answer says otherwise. Takes ownership of text and
 * effects. NULL out of memory (they are freed). */
sessenv_stmt_op *sessenv_parse_sent(sessenv *e, const char *name, char *text, bool rewritten, uint64_t generation,
                                    uint64_t env_hash, rw_effect *effects, int n_effects);
/* A Close of statement `name` was sent. NULL out of memory. */
sessenv_stmt_op *sessenv_close_sent(sessenv *e, const char *name);
/* The server answered (or skipped) it; op is freed. */
void sessenv_stmt_op_end(sessenv *e, sessenv_stmt_op *op, sessenv_op_end how);

/* A deep copy of n effects (the strings too); NULL when n <= 0 or out of
 * memory. */
rw_effect *sessenv_effects_copy(const rw_effect *fx, int n);

/* Confirmed statements (a completed SQL PREPARE). Takes ownership of text
 * and effects (both may be NULL). */
void sessenv_prepared_add(sessenv *e, bool sql_level, const char *name, char *text, bool rewritten,
                          uint64_t generation, uint64_t env_hash, rw_effect *effects, int n_effects);
void sessenv_prepared_remove(sessenv *e, bool sql_level, const char *name);   /* NULL = all */
sessenv_prepared *sessenv_prepared_find(sessenv *e, bool sql_level, const char *name);

/* Portals: Bind names a statement (p: what it is now, NULL = unknown);
 * Execute asks what the portal runs (NULL: no such portal known). False
 * out of memory. */
bool sessenv_portal_bind(sessenv *e, const char *portal, const char *statement, const sessenv_prepared *p);
const sessenv_portal *sessenv_portal_find(const sessenv *e, const char *portal);

/* Parse a search_path value ("a, \"B\", $user") into p. Returns false when
 * it cannot be parsed (p->known = false then). */
bool sessenv_parse_path(const char *value, sessenv_path *p);

#endif
