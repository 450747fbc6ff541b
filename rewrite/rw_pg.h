/*
 * rw_pg.h -- the parse-tree side of rewrite/: the per-call context, tokens,
 * the tree walker and the statement handlers. Only files that include
 * PostgreSQL's server headers include this one (and they must not include
 * autoconf's config.h, whose PACKAGE_* macros collide with pg_config.h).
 *
 * Locations. The raw parse tree gives start offsets (`location`) but no ends.
 * Every splice point is found in the token stream of the core scanner: a
 * node's location anchors it to a token, and the end of an expression is the
 * first delimiter at parenthesis depth 0 after the last token any of its
 * nodes starts at (so an `IS DISTINCT FROM` or a CASE's WHEN inside the
 * expression is never mistaken for the clause keyword that ends it).
 */
#ifndef TG_RW_PG_H
#define TG_RW_PG_H

#include "postgres.h"
#include "nodes/parsenodes.h"
#include "nodes/pg_list.h"

#include "rewrite/rw_internal.h"

/* Token codes of libpg_query 15-4.0.0's core scanner (its gram.h, which has
 * two comment tokens that PostgreSQL's own does not: so never use the server
 * headers' gram.h). rw_selftest() checks them. Keywords come after these;
 * we identify the ones we need through ScanKeywordLookup (rw_kw). */
enum {
    RW_T_IDENT = 258,
    RW_T_UIDENT,
    RW_T_FCONST,
    RW_T_SCONST,
    RW_T_USCONST,
    RW_T_BCONST,
    RW_T_XCONST,
    RW_T_OP,
    RW_T_ICONST,
    RW_T_PARAM,
    RW_T_TYPECAST,
    RW_T_DOT_DOT,
    RW_T_COLON_EQUALS,
    RW_T_EQUALS_GREATER,
    RW_T_LESS_EQUALS,
    RW_T_GREATER_EQUALS,
    RW_T_NOT_EQUALS,
    RW_T_SQL_COMMENT,
    RW_T_C_COMMENT,
    RW_T_FIRST_KEYWORD,
};

typedef struct rw_tok {
    int start;                /* byte offset in the whole text */
    int code;                 /* scanner token code ('(' etc. for single chars) */
    uint8_t kw;               /* rw_kw, RW_KW_NONE for others */
    bool comment;
} rw_tok;

/* Replace [pos, end) of the text by `text` (end == pos: insert). Applied in
 * (pos, seq) order, so text inserted at one point keeps creation order. */
typedef struct rw_splice {
    int pos, end;
    const char *text;
    int seq;
} rw_splice;

typedef struct rw_ctx {
    rw_arena a;
    const rw_policy *pol;
    const rw_env *env;
    const rw_catalog *cat;
    rw_proto proto;
    const char *text;
    int len;

    /* tokens of the whole text, scanned when first needed */
    rw_tok *tok;
    int ntok;
    bool tok_done;

    /* the statement being decided */
    int stmt_no;
    int stmt_start, stmt_end;     /* byte range */
    int tok_lo, tok_hi;           /* its tokens: [tok_lo, tok_hi) */
    rw_splice *spl;
    int nspl, capspl, seq;
    bool stmt_reject;
    const char *rej_sqlstate;
    const char *rej_message;
    bool unknown_node;            /* the walker met a node type it does not know */
    int prepare_depth;            /* inside PREPARE: count watched writes */
    int prepare_writes;

    /* the whole text */
    rw_event *ev;
    int nev, capev;
    rw_effect *fx;
    int nfx, capfx;
    bool observed;
    bool watched_write;
    bool pinned;                  /* a name was pinned to its shadow (RW_F_PINNED) */
    bool failed;                  /* internal inconsistency: fail closed */
} rw_ctx;

/* ------------------------------------------------------------- rw_lex.c */

bool rw_lex(rw_ctx *c);                         /* fill c->tok (once); false = failed */
void rw_lex_statement(rw_ctx *c);               /* set tok_lo/tok_hi for the current statement */
int rw_tok_at(rw_ctx *c, int loc);              /* token starting at loc, or -1 */
int rw_tok_next(rw_ctx *c, int i);              /* next non-comment token in the statement, or tok_hi */
int rw_tok_prev(rw_ctx *c, int i);              /* previous non-comment token, or tok_lo - 1 */
bool rw_tok_is(rw_ctx *c, int i, int code);
bool rw_tok_kw(rw_ctx *c, int i, rw_kw kw);
int rw_tok_match(rw_ctx *c, int open);          /* the ')' or ']' closing token `open`, or -1 */
int rw_tok_end_pos(rw_ctx *c, int i);           /* byte just after token i's text, best effort */

/* Delimiter sets for rw_expr_end. */
typedef enum {
    RW_END_LIST,              /* , ) */
    RW_END_SET,               /* , FROM WHERE RETURNING ) ; */
    RW_END_CONFLICT_SET,      /* , WHERE RETURNING ) ; */
    RW_END_MERGE_SET,         /* , WHEN ) ; */
    RW_END_TARGET,            /* , FROM INTO WHERE GROUP HAVING WINDOW ORDER LIMIT OFFSET FETCH
                               * FOR UNION INTERSECT EXCEPT ON-CONFLICT RETURNING ) ; */
    RW_END_INSERT_REST,       /* ON-CONFLICT RETURNING ) ; */
} rw_end_set;

/* The delimiter ending an expression that starts at token `first` and has
 * a node starting at byte `max_loc`: the first delimiter of `set` at depth 0
 * after max_loc. Returns its token index (tok_hi at the end of the
 * statement), or -1 when the tokens do not fit. */
int rw_expr_end(rw_ctx *c, int first, int max_loc, rw_end_set set);

/* Where to insert text so it lands right after the token before `delim`
 * (never inside a comment): a byte offset. */
int rw_pos_before(rw_ctx *c, int delim);

/* Split a parenthesized list starting at the '(' token `open` into elements:
 * fills first[k]/delim[k] (first token, and the ',' or ')' after it). Returns
 * the element count, or -1. */
int rw_split_group(rw_ctx *c, int open, int *first, int *delim, int max);

/* ------------------------------------------------------------ rw_walk.c */

typedef enum { RW_WALK_CONTINUE = 0, RW_WALK_SKIP, RW_WALK_STOP } rw_walk_result;
typedef rw_walk_result (*rw_visit_fn)(rw_ctx *c, Node *n, void *arg);

/* Visit n and everything below it (pre-order). Unknown node types set
 * c->unknown_node; so does nesting deeper than we are willing to recurse. */
rw_walk_result rw_walk(rw_ctx *c, Node *n, rw_visit_fn fn, void *arg);

int rw_node_location(const Node *n);
/* Smallest and largest location of any node in the subtree (-1 if none). */
void rw_loc_range(rw_ctx *c, Node *n, int *min_loc, int *max_loc);

/* Can this expression be written twice and give the same value both times
 * (a literal, a $n, NULL, a column, a cast of a literal or $n to a built-in
 * type that cannot be shadowed, an OPERATOR(pg_catalog.x) of those)? */
bool rw_dup_safe(rw_ctx *c, Node *n);

/* Does an untyped literal or a bare $n sit at the top of this select list
 * (its type would be resolved differently inside a subquery)? */
bool rw_targets_untyped(List *targets);
bool rw_targets_have_star(List *targets);

/* Is `name` used as a range-table name anywhere below n (FROM items, CTEs)? */
bool rw_uses_refname(rw_ctx *c, Node *n, const char *name);

/* ------------------------------------------------------------ rw_dml.c */

/* A write to a relation, with the watched table it is (if any). */
typedef struct rw_site {
    rw_ctx *c;
    int table;                    /* -1: not watched */
    const rw_table *t;
    tg_mode mode;
    const char *refname;          /* how the statement refers to the target row */
    int spl_mark;
    int ev_mark;
    bool acted;                   /* a rule event was recorded */
} rw_site;

bool rw_site_begin(rw_ctx *c, rw_site *s, RangeVar *rv);
/* Write rv as pin.name (a shadow's schema from rw_resolve) when its name is
 * an enforced watched table's; nothing when pin is NULL. */
void rw_pin_name(rw_ctx *c, const RangeVar *rv, const char *pin);
void rw_site_end(rw_site *s);
void rw_site_rewritten(rw_site *s, rw_rule rule);
/* 42501 (a rule) or 0A000 (RW_RULE_FORM): enforce rejects the statement,
 * observe records what would happen. */
void rw_site_reject(rw_site *s, rw_rule rule, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void rw_site_refuse(rw_site *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void rw_splice_add(rw_ctx *c, int pos, int end, const char *text);
const char *rw_text_of(rw_ctx *c, int from_tok, int to_tok);   /* tokens [from, to) as written */

void rw_dml_insert(rw_ctx *c, InsertStmt *s);
void rw_dml_update(rw_ctx *c, UpdateStmt *s);
void rw_dml_delete(rw_ctx *c, DeleteStmt *s);
void rw_dml_merge(rw_ctx *c, MergeStmt *s);

/* Shared by INSERT and MERGE INSERT: one VALUES row (tokens of its elements). */
typedef struct rw_row {
    List *elems;
    int open, close;              /* token indexes of its parentheses */
    int *first, *delim;           /* per element */
    int n;
} rw_row;

/* SET lists of UPDATE, ON CONFLICT DO UPDATE and MERGE ... UPDATE. */
void rw_assign(rw_site *s, List *targets, rw_end_set set);

/* -------------------------------------------------------- rw_stmt.c */

void rw_stmt(rw_ctx *c, Node *stmt);
void rw_stmt_finish(rw_ctx *c, Node *stmt);
void rw_event_add(rw_ctx *c, int table, rw_rule rule, rw_event_kind kind);
void rw_effect_add(rw_ctx *c, rw_effect_kind kind, const char *arg, bool writes, bool local);

#endif
