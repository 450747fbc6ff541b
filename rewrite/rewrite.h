/*
 * rewrite.h -- the pure rewriter: statement text + policy snapshot + session
 * name environment in, a decision out. No sockets, no globals, no libevent.
 *
 * The proxy asks one question per simple Query text and per Parse text:
 * pass it as is, send this text instead, or reject it. Decisions are cached
 * by text (rw_cache) so a text seen before is not parsed again, and a sound
 * text pre-filter keeps statements that cannot name a watched table away
 * from the parser altogether.
 *
 * Enforcement happens inside the client's own statement: the rewritten text
 * calls the helper functions of sql/tenantguard.sql (schema
 * policy.helper_schema), which look the tenant up in the tenants table within
 * the client's transaction and raise SQLSTATE 42501 on a violation, with
 * CONSTRAINT = tenantguard_r2 .. tenantguard_r6 (0A000 / tenantguard_layout
 * for a positional INSERT whose table changed). The shapes are described in
 * sql/tenantguard.sql and rewrite/rw_dml.c.
 *
 * What the proxy does with it:
 *   - at start-up: rw_selftest(), and refuse enforce mode unless
 *     helper_schema.helpers_version() returns tg_helpers_version_string();
 *   - per Query / Parse: rw_decide(); on RW_REJECT send `text` and replace
 *     the server's error whose message contains `marker` (SQLSTATE 42703) by
 *     sqlstate + message -- for a Parse the error answers the Parse itself;
 *   - count errors from the helpers by their CONSTRAINT field;
 *   - apply `effects` when the statement they belong to completed
 *     (CommandComplete number `stmt` of a simple Query), with transaction and
 *     savepoint semantics, and keep rw_env (and its hash) up to date; keep
 *     deferred effects with the SQL-prepared statement instead and apply them
 *     when an EXECUTE of it completes;
 *   - remember RW_F_WATCHED_WRITE per prepared statement (Parse, SQL PREPARE)
 *     to find statements prepared before enforce mode (RW_RULE_STALE_PREPARED).
 */
#ifndef TG_REWRITE_H
#define TG_REWRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy/config.h"

/* ------------------------------------------------------------------ policy */

/* An immutable, compiled view of the policy: watched names, modes, the
 * pre-filter. Built once per config snapshot or mode change; shared
 * read-only by all sessions of the event-loop thread. */
typedef struct rw_policy rw_policy;

/* table_modes: optional overlay (admin SET mode ... FOR TABLE), one entry per
 * policy->tables[i], or NULL to use each table's configured mode.
 * generation must change whenever the result would decide differently. */
rw_policy *rw_policy_new(const tg_policy *policy, const tg_mode *table_modes, uint64_t generation);
void rw_policy_free(rw_policy *p);
uint64_t rw_policy_generation(const rw_policy *p);

/* ------------------------------------------------------------- environment */

/* What the proxy knows about name resolution in this session. Unqualified
 * names of watched tables resolve through it. When the proxy does not know
 * (path_known = false), an unqualified watched name is taken to BE the
 * watched table: enforcing on a look-alike can at worst fail a statement,
 * never let a write through. */
typedef struct rw_env {
    bool path_known;
    const char *const *path;     /* schema names in search order, "$user" already expanded
                                  * (catalog names: rw_split_path() turns a search_path
                                  * value into them); "pg_temp" / "pg_catalog" may appear */
    int n_path;
    const char *const *temp_rels;/* temp relations of this session named like watched tables */
    int n_temp_rels;
    /* Other relations named like watched tables (tables, views, foreign and
     * partitioned tables), as the login saw the catalog: rel_schemas[i] holds
     * rel_names[i]. An unqualified name on a known path resolves to the first
     * path schema holding a watched table or (with rels_known) one of these;
     * a write to such a look-alike is pinned to schema.name, and one that
     * finds nothing on the path is taken for the watched table. */
    const char *const *rel_schemas, *const *rel_names;
    int n_rels;
    bool rels_known;
    bool std_strings;            /* standard_conforming_strings (ParameterStatus); true by default
                                  * -- a zeroed rw_env means "off": set it. env == NULL means
                                  * path unknown, std_strings on. */
    bool client_only_encoding;   /* client_encoding is SJIS, BIG5, GBK, UHC or GB18030: a
                                  * multibyte character may end in a byte that reads as \ or '
                                  * to the parser, which sees bytes, while the server sees the
                                  * converted text. Enforce mode then refuses (0A000) every
                                  * statement that could name a watched table. */
    uint64_t hash;               /* rw_env_hash() of all the above; part of the cache key:
                                  * recompute it whenever a field changes */
} rw_env;

/* A keyed hash (SipHash with a per-process random key: a client choosing its
 * search_path cannot make two environments collide). 0 only if it could not
 * be computed -- such an env is never served from or stored in the cache. */
uint64_t rw_env_hash(const rw_env *env);

/* Split a search_path value (as SET/SHOW/set_config write it: comma-separated,
 * "quoted" names kept, unquoted ones folded to lower case) into catalog
 * names. Returns a malloc'd array of *n malloc'd strings (free with
 * rw_split_path_free), or NULL when the value does not parse ("$user" is
 * returned as is: the caller expands it). */
char **rw_split_path(const char *value, int *n);
void rw_split_path_free(char **names, int n);

/* Optional catalog facts for positional INSERT (no column list): the
 * columns of each watched table in attnum order (dropped columns left out). */
typedef struct rw_catalog_table {
    int table;                   /* index into policy->tables */
    const char *const *columns;
    int n_columns;
} rw_catalog_table;

typedef struct rw_catalog {
    const rw_catalog_table *tables;
    int n_tables;
    uint64_t version;            /* part of the cache key */
} rw_catalog;

/* ---------------------------------------------------------------- decision */

typedef enum {
    RW_PASS = 0,      /* send the client's text unchanged */
    RW_REPLACE,       /* send `text` instead */
    RW_REJECT,        /* send `text`: the statements before the offending one,
                         then SELECT "tenantguard:refused" in its place (later
                         ones dropped). It fails in the server's parse
                         analysis (42703, message naming the marker), so
                         earlier statements of the same simple Query run and
                         the transaction aborts exactly as with a server
                         error; the proxy replaces that error with
                         sqlstate + message */
} rw_action;

typedef enum {
    RW_RULE_NONE = 0,
    RW_R1_DERIVE,             /* INSERT without workspace: derived */
    RW_R2_VERIFY,             /* INSERT with explicit workspace: verified */
    RW_R3_RESOLVABLE,         /* tenant must exist and have a workspace */
    RW_R4_IMMUTABLE_TENANT,   /* UPDATE of the tenant column: must keep its value */
    RW_R5_VERIFY_UPDATE,      /* UPDATE of the workspace column: verified */
    RW_R6_AUDIT,              /* audit table: derived/verified when a tenant is named */
    RW_RULE_FORM,             /* a form that cannot be proven safe (0A000) */
    RW_RULE_BEYOND_SIGHT,     /* DO / function / trigger / rule body naming a watched table */
    RW_RULE_STALE_PREPARED,   /* executing a statement prepared before enforcement */
    RW_RULE__COUNT
} rw_rule;

/* Per write site (each INSERT/UPDATE/DELETE/MERGE/COPY FROM node on a watched
 * table, CTEs included): one SEEN, then one REWRITTEN per rule injected, or a
 * REJECTED/REFUSED, or else PASSED. Statements not tied to one write (beyond
 * sight, renames, unparsable text) give a single event. Observe mode gives
 * the same events with RW_F_OBSERVED; off mode none. */
typedef enum {
    RW_EV_SEEN = 0,    /* a statement writes this table */
    RW_EV_PASSED,      /* ... and needs nothing (e.g. UPDATE of other columns) */
    RW_EV_REWRITTEN,   /* a derivation/check was injected (observe: would be) */
    RW_EV_REJECTED,    /* rejected with 42501 by the proxy itself */
    RW_EV_REFUSED,     /* refused with 0A000 (observe: would be) */
    RW_EV__COUNT
} rw_event_kind;

typedef struct rw_event {
    int16_t table;     /* index into policy->tables; -1 = none */
    uint8_t rule;      /* rw_rule */
    uint8_t kind;      /* rw_event_kind */
} rw_event;

/* Session effects of a statement, applied by the proxy only once the server
 * confirmed the statement (its CommandComplete), with transaction semantics --
 * except deferred ones (see rw_effect.deferred), which PREPARE only records. */
typedef enum {
    RW_FX_SET_PATH = 1,        /* arg: the new search_path value as SHOW would show it
                                * (SET) or as given (set_config); rw_split_path() reads it */
    RW_FX_SET_LOCAL_PATH,      /* SET LOCAL search_path: until the transaction ends */
    RW_FX_RESET_PATH,          /* RESET search_path / SET ... TO DEFAULT / RESET ALL */
    RW_FX_PATH_UNKNOWN,        /* set_config() with a non-literal, SET ROLE, CALL, ...; arg "role"
                                * when the current role may have changed ("$user" is unknown) */
    RW_FX_CREATE_TEMP,         /* arg: relation name (a watched name) */
    RW_FX_DROP_REL,            /* arg: relation name (unqualified or pg_temp.) */
    RW_FX_DISCARD_ALL,         /* DISCARD ALL: path reset, temp gone, prepared gone */
    RW_FX_DISCARD_TEMP,
    RW_FX_PREPARE,             /* SQL PREPARE; arg: name; flags: writes watched */
    RW_FX_DEALLOCATE,          /* arg: name, NULL = ALL */
    RW_FX_EXECUTE,             /* SQL EXECUTE; arg: name (the proxy checks staleness and
                                * applies the statement's deferred effects). The rewriter
                                * cannot see what it does to search_path, so it changes
                                * resolution: later statements are decided path unknown */
    RW_FX_SAVEPOINT,           /* SAVEPOINT; arg: name -- a SET after it is undone by
                                * ROLLBACK TO it, kept by RELEASE */
    RW_FX_RELEASE,             /* RELEASE [SAVEPOINT]; arg: name */
    RW_FX_ROLLBACK_TO,         /* ROLLBACK TO [SAVEPOINT]; arg: name */
    RW_FX_LEXING,              /* standard_conforming_strings or client_encoding may change
                                * (SET, SET NAMES, RESET ALL, set_config): the server reads the
                                * NEXT message with the new setting, so the proxy holds later
                                * messages until this one has completed */
} rw_effect_kind;

typedef struct rw_effect {
    uint8_t kind;              /* rw_effect_kind */
    uint16_t stmt;             /* index of the statement in the text (simple Query); past
                                * 65535 every effect is reported as RW_FX_PATH_UNKNOWN at
                                * 65535 -- applied early, it only makes the proxy stricter */
    bool writes_watched;       /* RW_FX_PREPARE */
    bool local;                /* until the transaction ends: SET LOCAL ... TO DEFAULT
                                * (RW_FX_RESET_PATH), CREATE TEMP ... ON COMMIT DROP */
    bool deferred;             /* from the query inside a SQL PREPARE: NOT applied when the
                                * statement completes. Deferred effects come right before the
                                * RW_FX_PREPARE of the same stmt; they belong to the prepared
                                * statement it names and apply each time that is EXECUTEd */
    const char *arg;
} rw_effect;                   /* 16 bytes on LP64: kind, stmt, three bools, arg */

/* Decision flags. */
#define RW_F_PREFILTERED    0x01u   /* never parsed: cannot name a watched table */
#define RW_F_PARSE_FAILED   0x02u   /* libpg_query could not parse it */
#define RW_F_WATCHED_WRITE  0x04u   /* writes a watched table (Parse: remember per statement) */
#define RW_F_CACHED         0x08u   /* answered from the cache */
#define RW_F_OBSERVED       0x10u   /* observe mode: events say what enforce would do */
#define RW_F_PINNED         0x20u   /* a name is written schema.name for its shadow: the text depends on
                                     * the search_path it was decided under */

typedef struct rw_decision {
    rw_action action;
    const char *text;          /* RW_REPLACE / RW_REJECT: NUL-terminated */
    size_t len;
    const char *sqlstate;      /* RW_REJECT */
    const char *message;       /* RW_REJECT: names table, rule, form; never values */
    const char *marker;        /* RW_REJECT: substring of the server's error to replace */
    const rw_event *events;
    int n_events;
    const rw_effect *effects;
    int n_effects;
    int n_statements;          /* statements in the text (0 when pre-filtered) */
    unsigned flags;
    void *priv;                /* owned storage; release with rw_decision_release */
} rw_decision;

typedef enum {
    RW_PROTO_SIMPLE = 0,       /* Query: any number of statements, no $n */
    RW_PROTO_EXTENDED,         /* Parse: one statement, $n parameters allowed */
} rw_proto;

/* ------------------------------------------------------------------- cache */

/* Bounded cache of decisions keyed by (text, proto, env hash, policy
 * generation, catalog version). Single-threaded: one per event loop; a
 * decision it answered is shared (reference-counted) and must be released on
 * that thread, but stays valid after its entry is evicted or the cache freed. */
typedef struct rw_cache rw_cache;

rw_cache *rw_cache_new(size_t max_bytes, int max_entries);
void rw_cache_free(rw_cache *c);
void rw_cache_clear(rw_cache *c);

typedef struct rw_cache_stats {
    uint64_t hits, misses, evictions, prefiltered;
    size_t bytes;
    int entries;
} rw_cache_stats;
void rw_cache_get_stats(const rw_cache *c, rw_cache_stats *out);

/* ------------------------------------------------------------------- entry */

/*
 * Decide what to do with one Query or Parse text. `text` is NUL-terminated
 * at text[len]. cache, env and catalog may be NULL. Never fails: out of
 * memory or an internal error in enforce mode yields RW_REJECT (53200 /
 * XX000), never a silent pass of a statement that names a watched table.
 * Thread-safe given a cache per thread (libpg_query keeps its state per
 * thread; the policy is read-only).
 */
rw_decision rw_decide(rw_cache *cache, const rw_policy *policy, const rw_env *env,
                      const rw_catalog *catalog, rw_proto proto, const char *text, size_t len);

void rw_decision_release(rw_decision *d);

/* Statement fingerprint (libpg_query) as 16 hex digits, for the violation
 * log; "" when the text does not parse. */
void rw_fingerprint(const char *text, char out[17]);

/* The server's 42883 "function SCHEMA.helper(types) does not exist" for
 * `text` (a rewrite's text; position: the error's 1-based character
 * position, 0 if none) as PostgreSQL words the client's own mistake: into
 * out, "column "c" is of type T but expression is of type U" (42804).
 * p: the policy the rewrite was made under. False: leave the error. */
bool rw_map_helper_error(const rw_policy *p, const char *text, const char *message, int position, char *out,
                         size_t outlen);

/* Start-up check that the parser's node layout is the one we were built
 * against. Returns NULL when good, else a static message. */
const char *rw_selftest(void);

/* Does this effect change how later names resolve (search_path, temp
 * tables, an EXECUTE that may do either)? The proxy treats the path as
 * unknown while one is in flight. Deferred effects count too: they change
 * nothing when the PREPARE completes, but counting them only costs strictness. */
bool rw_effect_changes_resolution(const rw_effect *fx);

const char *rw_rule_name(rw_rule r);          /* "R1", ..., "form", ... */
const char *rw_event_kind_name(rw_event_kind k);
const char *rw_effect_kind_name(rw_effect_kind k); /* "set_path", ... */
const char *rw_action_name(rw_action a);      /* "pass", "replace", "reject" */

#endif
