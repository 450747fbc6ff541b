/*
 * rw_internal.h -- what the files of rewrite/ share and nobody else sees.
 *
 * This header includes no PostgreSQL header: rw_policy.c (pre-filter),
 * rw_cache.c, rw_env.c and rw_arena.c are plain C. The files that walk
 * parse trees include rw_pg.h on top of it.
 *
 * Memory. Every rw_decide call that parses gets one rw_arena (malloc'd
 * chunks, freed at the end) for our own structures, and libpg_query's memory
 * context for the parser's. The decision handed out lives in one malloc'd,
 * reference-counted rw_blob, shared by the cache entry and every decision
 * returned for it (single-threaded: one cache per event loop).
 */
#ifndef TG_RW_INTERNAL_H
#define TG_RW_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rewrite/rewrite.h"

/* ------------------------------------------------------------------ arena */

typedef struct rw_chunk rw_chunk;

typedef struct rw_arena {
    rw_chunk *head;
    bool oom;                 /* an allocation failed: the caller fails closed */
} rw_arena;

void *rw_alloc(rw_arena *a, size_t n);        /* zeroed; NULL (and a->oom) on failure */
char *rw_strndup(rw_arena *a, const char *s, size_t n);
char *rw_strdup(rw_arena *a, const char *s);
void rw_arena_free(rw_arena *a);

/* A growable string in an arena. On failure the arena's oom flag is set and
 * further appends are ignored, so builders need not check every call. */
typedef struct rw_buf {
    rw_arena *a;
    char *p;
    size_t len, cap;
} rw_buf;

void rw_buf_init(rw_buf *b, rw_arena *a);
void rw_buf_add(rw_buf *b, const char *s, size_t n);
void rw_buf_str(rw_buf *b, const char *s);
void rw_buf_printf(rw_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *rw_buf_cstr(rw_buf *b);           /* NUL-terminated; "" when empty */

/* SQL quoting for text we generate. Identifiers always in double quotes;
 * literals as E'...' when they hold a quote or a backslash, so they read
 * the same whatever standard_conforming_strings is. */
void rw_buf_ident(rw_buf *b, const char *ident);
void rw_buf_ident_min(rw_buf *b, const char *ident);   /* quoted only when needed */
bool rw_ident_plain(const char *ident);               /* rw_lex.c: needs no quotes */
void rw_buf_literal(rw_buf *b, const char *s);

/* ----------------------------------------------------------------- policy */

/* A watched table, compiled: names plus the SQL fragments the rewriter
 * splices in for it. */
typedef struct rw_table {
    const char *schema, *name, *tcol, *wcol;  /* catalog names (point into tg_policy copy) */
    tg_table_kind kind;
    tg_mode mode;
    char *label;              /* "policies", or "schema.name" outside public */
    char *label_lit;          /* 'policies' as a SQL literal */
    char *tsample;            /* (NULL::"public"."policies")."tenant_id" */
    char *wsample;            /* (NULL::"public"."policies")."workspace_id" */
    char *tcol_q, *wcol_q;    /* "tenant_id", "workspace_id" */
    char *tcol_lit, *wcol_lit;/* 'tenant_id', 'workspace_id' */
    char *qualified;          /* "public"."policies" */
} rw_table;

/* Pre-filter result: why a text might matter. */
typedef struct rw_pf_result {
    uint64_t tables;          /* bit i: the name of table i occurs (tables >= 64 share bit 63) */
    bool uesc;                /* U&"..." occurs: could spell any name */
    bool effects;             /* a session-effect keyword occurs */
} rw_pf_result;

#define RW_PF_MAX_ANCHORS 12

typedef struct rw_pf_needle {
    const char *folded;       /* needle bytes | 0x20 */
    uint8_t len;
    uint8_t anchor_off;       /* offset of the anchor byte in the needle */
    int16_t table;            /* table index, or -1 */
    uint8_t what;             /* RW_PF_NAME / RW_PF_UESC / RW_PF_EFFECT */
} rw_pf_needle;

enum { RW_PF_NAME = 1, RW_PF_UESC, RW_PF_EFFECT };

typedef struct rw_prefilter {
    /* anchor byte (folded) -> first needle index + 1 in `by_anchor`, 0 = none */
    uint8_t slot[256];
    int n_anchors;            /* distinct anchor bytes; > RW_PF_MAX_ANCHORS: scalar scan */
    uint8_t anchors[RW_PF_MAX_ANCHORS];
    uint8_t anchor_vec[RW_PF_MAX_ANCHORS][16] __attribute__((aligned(16)));  /* broadcast */
    rw_pf_needle *needles;    /* grouped by anchor: [start[a], start[a+1]) */
    int n_needles;
    int group_start[257];
    /* Second-level filter at an anchor hit: folded byte pairs (anchor, next)
     * and (previous, anchor) that some needle contains; a hit whose pairs are
     * in neither set cannot be a needle. */
    uint64_t pair_next[1024], pair_prev[1024];
} rw_prefilter;

/* Keyword token codes of the core scanner for the keywords we look at. */
typedef enum {
    RW_KW_NONE = 0,
    RW_KW_AS, RW_KW_CONFLICT, RW_KW_DEFAULT, RW_KW_EXCEPT, RW_KW_FETCH, RW_KW_FOR,
    RW_KW_FROM, RW_KW_GROUP, RW_KW_HAVING, RW_KW_INTERSECT, RW_KW_INTO, RW_KW_LIMIT,
    RW_KW_OFFSET, RW_KW_ON, RW_KW_ORDER, RW_KW_OVERRIDING, RW_KW_RETURNING, RW_KW_ROW,
    RW_KW_SELECT, RW_KW_SET, RW_KW_UNION, RW_KW_VALUES, RW_KW_WHEN, RW_KW_WHERE,
    RW_KW_WINDOW, RW_KW_WITH, RW_KW_INSERT, RW_KW_UPDATE, RW_KW_THEN,
    RW_KW__COUNT
} rw_kw;

struct rw_policy {
    uint64_t generation;
    tg_policy *copy;          /* our own deep copy of the names */
    rw_table *tables;
    int n_tables;
    char *helper_q;           /* "tenantguard" (quoted) */
    bool any_active;          /* some table is observe or enforce */
    rw_prefilter pf;
    int kw_token[RW_KW__COUNT];   /* scanner token code per rw_kw, 0 = unknown */
};

/* The pre-filter (rw_policy.c). Sound: a text that can name a watched table
 * or have a session effect we track never comes back empty. */
rw_pf_result rw_prefilter_run(const rw_policy *p, const char *text, size_t len);
static inline bool rw_pf_any(const rw_pf_result *r)
{
    return r->tables || r->uesc || r->effects;
}

/* The tables a text could name, as a mask (u& -> all). */
uint64_t rw_pf_table_mask(const rw_policy *p, const rw_pf_result *r);
bool rw_mask_has(uint64_t mask, int table);

/* The strictest mode among the tables of `mask`. */
tg_mode rw_mask_mode(const rw_policy *p, uint64_t mask);
int rw_mask_first(const rw_policy *p, uint64_t mask);

/* --------------------------------------------------------------- names/env */

/* Which watched table, if any, an unqualified/qualified name means under env.
 * Returns the table index, or -1 (not watched). *pin is set to a schema when
 * the name resolves to another relation named like a watched table -- a temp
 * shadow ("pg_temp") or a look-alike earlier on the path -- and a write must
 * name it schema.name: if the server's path is not what the proxy believes,
 * the statement then fails or writes that relation, never the watched table
 * unchecked. */
int rw_resolve(const rw_policy *p, const rw_env *env, const char *schema, const char *name, const char **pin);

/* Any watched table called `name` (in any schema)? */
bool rw_name_watched(const rw_policy *p, const char *name);
bool rw_schema_watched(const rw_policy *p, const char *schema);

/* ---------------------------------------------------------------- decision */

/* One malloc'd block: this header, then events, effects, strings, text. */
typedef struct rw_blob {
    int refs;
    size_t size;
    rw_decision d;            /* its pointers point into this block */
} rw_blob;

void rw_blob_ref(rw_blob *b);
void rw_blob_unref(rw_blob *b);

/* The cache (rw_cache.c). An entry matches only when the text is equal byte
 * for byte and every other part of the key is equal. */
typedef struct rw_ckey {
    uint64_t hash;            /* of the text, seeded per process (bucket choice only) */
    uint64_t env, generation, catalog;
    uint8_t proto;
} rw_ckey;

uint64_t rw_hash_text(const char *text, size_t len);
bool rw_cache_lookup(rw_cache *c, const char *text, size_t len, const rw_ckey *k, rw_decision *out);
void rw_cache_insert(rw_cache *c, const char *text, size_t len, const rw_ckey *k, rw_blob *blob);
void rw_cache_count_prefiltered(rw_cache *c);

/* Per-process random keys: hashes an attacker cannot precompute collisions
 * for (rw_env.c). */
void rw_secret(uint64_t key[2]);
uint64_t rw_siphash(const uint64_t key[2], const void *p, size_t n);

/* The parse path (rw_decide.c): decide a text that passed the pre-filter. */
rw_blob *rw_decide_parsed(const rw_policy *p, const rw_env *env, const rw_catalog *cat, rw_proto proto,
                          const char *text, size_t len, const rw_pf_result *pf);

/* A standing decision for when we cannot even allocate: enforce fails closed. */
rw_decision rw_decision_oom(const rw_policy *p, const rw_pf_result *pf);

/* libpg_query's standard_conforming_strings (rw_tls.c). */
void rw_tls_set_std_strings(bool on);
bool rw_tls_get_std_strings(void);

#endif
