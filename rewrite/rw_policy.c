/*
 * rw_policy.c -- the compiled policy and the text pre-filter.
 *
 * The pre-filter answers, without parsing: could this text name a watched
 * table, or have a session effect the proxy tracks? It must never say "no"
 * wrongly (a missed name is a silent bypass); "yes" too often only costs a
 * parse, once per distinct text thanks to the cache.
 *
 * Why a byte search is sound. The server folds unquoted identifiers to lower
 * case (ASCII only for our ASCII names) and keeps quoted ones as written;
 * the only other spelling of an identifier is U&"..." with escapes. So a
 * text names table `policies` only if it contains "policies" in some letter
 * case, or "u&". We compare bytes OR 0x20, which folds A-Z onto a-z and maps
 * a few other bytes together (a superset, so still sound). Comments, string
 * literals and dollar quotes are not skipped: a name inside them is a false
 * "yes", which is fine; skipping them would need a lexer to be sound.
 *
 * Session effects: search_path, role and temp-table changes alter what an
 * unqualified name means, and savepoints undo them. Those statements begin
 * with SET, RESET, DISCARD, DEALLOCATE, SAVEPOINT, ROLLBACK, RELEASE, ALTER
 * (ALTER SCHEMA ... RENAME) or CALL (a procedure may SET search_path for the
 * session) -- checked at the text start and after every ';' -- or call
 * set_config(), EXECUTE (also inside EXPLAIN / CREATE TABLE AS) or write
 * pg_settings (its UPDATE rule calls set_config()), searched anywhere.
 *
 * Speed. Each needle is found through one "anchor" byte, its rarest letter
 * in typical SQL (`policies` through 'p', `backup_sets` through 'k', ...).
 * Sixteen bytes at a time are folded and compared against all anchors with
 * vector operations; only a block containing an anchor is looked at byte by
 * byte. A short SELECT costs ~100-200 instructions.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "rewrite/rw_internal.h"

void rw_lex_keyword_tokens(int kw_token[RW_KW__COUNT]);   /* rw_lex.c */

/* ---------------------------------------------------------------- compile */

static char *pol_strdup(rw_arena *a, const char *s)
{
    return rw_strdup(a, s ? s : "");
}

static char *build(rw_arena *a, void (*fn)(rw_buf *, const rw_table *), const rw_table *t)
{
    rw_buf b;
    rw_buf_init(&b, a);
    fn(&b, t);
    return b.p ? b.p : rw_strdup(a, "");
}

static void mk_label(rw_buf *b, const rw_table *t)
{
    if (strcmp(t->schema, "public") != 0)
        rw_buf_printf(b, "%s.", t->schema);
    rw_buf_str(b, t->name);
}

static void mk_qualified(rw_buf *b, const rw_table *t)
{
    rw_buf_ident(b, t->schema);
    rw_buf_str(b, ".");
    rw_buf_ident(b, t->name);
}

static void mk_tsample(rw_buf *b, const rw_table *t)
{
    rw_buf_printf(b, "(NULL::%s).", t->qualified);
    rw_buf_ident(b, t->tcol);
}

static void mk_wsample(rw_buf *b, const rw_table *t)
{
    rw_buf_printf(b, "(NULL::%s).", t->qualified);
    rw_buf_ident(b, t->wcol);
}

static char *quoted_ident(rw_arena *a, const char *s)
{
    rw_buf b;
    rw_buf_init(&b, a);
    rw_buf_ident_min(&b, s);
    return b.p;
}

static char *literal(rw_arena *a, const char *s)
{
    rw_buf b;
    rw_buf_init(&b, a);
    rw_buf_literal(&b, s);
    return b.p;
}

static bool compile_table(rw_policy *p, rw_arena *a, const tg_table *src, tg_mode mode, rw_table *t)
{
    t->schema = pol_strdup(a, src->schema);
    t->name = pol_strdup(a, src->name);
    t->tcol = pol_strdup(a, src->tenant_col);
    t->wcol = pol_strdup(a, src->workspace_col);
    t->kind = src->kind;
    t->mode = mode;
    if (a->oom)
        return false;
    t->qualified = build(a, mk_qualified, t);
    t->label = build(a, mk_label, t);
    if (a->oom)
        return false;
    t->label_lit = literal(a, t->label);
    t->tsample = build(a, mk_tsample, t);
    t->wsample = build(a, mk_wsample, t);
    t->tcol_q = quoted_ident(a, t->tcol);
    t->wcol_q = quoted_ident(a, t->wcol);
    t->tcol_lit = literal(a, t->tcol);
    t->wcol_lit = literal(a, t->wcol);
    (void)p;
    return !a->oom;
}

/* --------------------------------------------------------- pre-filter build */

/* How often a (folded) byte shows up in everyday SQL; lower = rarer = a
 * better anchor. Letters of SELECT/FROM/WHERE/INSERT/VALUES/... rank high. */
static int byte_rank(uint8_t c)
{
    switch (c) {
    case '&': return 0;
    case 'z': case 'q': return 1;
    case 'x': case 'k': return 2;
    case 'v': case 'g': return 4;
    case 'y': case 'b': case 0x7f /* '_' */: return 5;
    case 'p': return 6;
    case 'j': return 3;
    case 'e': case 't': case 's': case 'r': case 'a': case 'c': case 'o': case 'f':
    case 'm': case 'w': case 'h': case 'l': case 'i': case 'n': case 'd': case 'u':
        return 8;
    default:
        return 7;
    }
}

typedef struct pf_src {
    const char *s;
    int table;
    uint8_t what;
} pf_src;

/* Anchors: for each needle its rarest byte, preferring one already chosen
 * when it is as rare. */
static uint8_t pick_anchor(const uint8_t *folded, size_t len, const uint8_t *chosen, int n_chosen, size_t *off)
{
    int best = 1000;
    uint8_t best_b = folded[0];
    *off = 0;
    for (size_t i = 0; i < len; i++) {
        int r = byte_rank(folded[i]) * 2;
        for (int k = 0; k < n_chosen; k++)
            if (chosen[k] == folded[i])
                r -= 1;
        if (r < best) {
            best = r;
            best_b = folded[i];
            *off = i;
        }
    }
    return best_b;
}

static bool build_prefilter(rw_policy *p, rw_arena *a)
{
    static const char *const anywhere[] = {"set_config", "execute", "pg_settings"};
    int n_src = p->n_tables + 1 + (int)(sizeof(anywhere) / sizeof(anywhere[0]));
    pf_src *src = rw_alloc(a, sizeof(*src) * (size_t)n_src);
    rw_pf_needle *tmp = rw_alloc(a, sizeof(*tmp) * (size_t)n_src);
    uint8_t *anchor_of = rw_alloc(a, (size_t)n_src);
    if (!src || !tmp || !anchor_of)
        return false;
    int n = 0;
    for (int i = 0; i < p->n_tables; i++)
        src[n++] = (pf_src){p->tables[i].name, i, RW_PF_NAME};
    src[n++] = (pf_src){"u&", -1, RW_PF_UESC};
    for (size_t i = 0; i < sizeof(anywhere) / sizeof(anywhere[0]); i++)
        src[n++] = (pf_src){anywhere[i], -1, RW_PF_EFFECT};

    rw_prefilter *pf = &p->pf;
    uint8_t chosen[256];
    int n_chosen = 0;
    chosen[n_chosen++] = ';';           /* statement starts: leading keywords */
    for (int i = 0; i < n; i++) {
        size_t len = strlen(src[i].s);
        if (len == 0 || len > 255)
            return false;
        uint8_t *f = rw_alloc(a, len + 1);
        if (!f)
            return false;
        for (size_t k = 0; k < len; k++)
            f[k] = (uint8_t)src[i].s[k] | 0x20;
        size_t off;
        uint8_t b = pick_anchor(f, len, chosen, n_chosen, &off);
        bool have = false;
        for (int k = 0; k < n_chosen; k++)
            have |= chosen[k] == b;
        if (!have)
            chosen[n_chosen++] = b;
        tmp[i] = (rw_pf_needle){(const char *)f, (uint8_t)len, (uint8_t)off, (int16_t)src[i].table,
                                src[i].what};
        anchor_of[i] = b;
        if (off + 1 < len) {
            unsigned key = (unsigned)f[off] << 8 | f[off + 1];
            pf->pair_next[key >> 6] |= 1ULL << (key & 63);
        } else if (off > 0) {
            unsigned key = (unsigned)f[off - 1] << 8 | f[off];
            pf->pair_prev[key >> 6] |= 1ULL << (key & 63);
        } else {
            return false;               /* one-byte needles do not exist */
        }
    }

    /* Group the needles by anchor byte. */
    pf->needles = rw_alloc(a, sizeof(*pf->needles) * (size_t)(n ? n : 1));
    if (!pf->needles)
        return false;
    int pos = 0;
    for (int b = 0; b < 256; b++) {
        pf->group_start[b] = pos;
        for (int i = 0; i < n; i++)
            if (anchor_of[i] == b)
                pf->needles[pos++] = tmp[i];
    }
    pf->group_start[256] = pos;
    pf->n_needles = pos;
    memset(pf->slot, 0, sizeof(pf->slot));
    for (int k = 0; k < n_chosen; k++)
        pf->slot[chosen[k]] = 1;
    pf->n_anchors = n_chosen;
    for (int k = 0; k < RW_PF_MAX_ANCHORS; k++) {
        pf->anchors[k] = chosen[k < n_chosen ? k : 0];
        memset(pf->anchor_vec[k], pf->anchors[k], 16);
    }
    return true;
}

/* --------------------------------------------------------------- lifecycle */

rw_policy *rw_policy_new(const tg_policy *policy, const tg_mode *table_modes, uint64_t generation)
{
    rw_policy *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    /* The policy's own memory is an arena that lives as long as it does. */
    rw_arena *a = calloc(1, sizeof(*a));
    if (!a) {
        free(p);
        return NULL;
    }
    p->copy = (tg_policy *)a;   /* see rw_policy_free */
    p->generation = generation;
    p->n_tables = policy->n_tables;
    p->tables = rw_alloc(a, sizeof(*p->tables) * (size_t)(policy->n_tables ? policy->n_tables : 1));
    bool ok = p->tables != NULL;
    for (int i = 0; ok && i < policy->n_tables; i++) {
        tg_mode m = table_modes ? table_modes[i] : policy->tables[i].mode;
        ok = compile_table(p, a, &policy->tables[i], m, &p->tables[i]);
        p->any_active |= m != TG_MODE_OFF;
    }
    if (ok) {
        p->helper_q = quoted_ident(a, policy->helper_schema ? policy->helper_schema : "tenantguard");
        ok = !a->oom && build_prefilter(p, a);
    }
    if (!ok) {
        rw_policy_free(p);
        return NULL;
    }
    rw_lex_keyword_tokens(p->kw_token);
    return p;
}

void rw_policy_free(rw_policy *p)
{
    if (!p)
        return;
    rw_arena *a = (rw_arena *)p->copy;
    if (a) {
        rw_arena_free(a);
        free(a);
    }
    free(p);
}

uint64_t rw_policy_generation(const rw_policy *p)
{
    return p->generation;
}

/* ------------------------------------------------------------------- masks */

bool rw_mask_has(uint64_t mask, int table)
{
    return (mask >> (table < 63 ? table : 63)) & 1;
}

uint64_t rw_pf_table_mask(const rw_policy *p, const rw_pf_result *r)
{
    if (r->uesc)
        return p->n_tables >= 64 ? ~0ULL : ((1ULL << p->n_tables) - 1);
    return r->tables;
}

tg_mode rw_mask_mode(const rw_policy *p, uint64_t mask)
{
    tg_mode m = TG_MODE_OFF;
    for (int i = 0; i < p->n_tables; i++)
        if (rw_mask_has(mask, i) && p->tables[i].mode > m)
            m = p->tables[i].mode;
    return m;
}

int rw_mask_first(const rw_policy *p, uint64_t mask)
{
    int first = -1;
    for (int i = 0; i < p->n_tables; i++) {
        if (!rw_mask_has(mask, i))
            continue;
        if (first < 0 || p->tables[i].mode > p->tables[first].mode)
            first = i;
    }
    return first;
}

/* ------------------------------------------------------------------- search */

static inline uint8_t fold(char c)
{
    return (uint8_t)c | 0x20;
}

/* Bytes that continue an identifier or keyword: letters, digits, _, $, and
 * every byte >= 0x80 -- as a 256-bit set. */
static inline bool is_ident_byte(uint8_t c)
{
    static const uint64_t set[4] = {0x03FF001000000000ULL, 0x07FFFFFE87FFFFFEULL, ~0ULL, ~0ULL};
    return (set[c >> 6] >> (c & 63)) & 1;
}

/* Is the word at s[i] (already known to start with its first letter) `kw`? */
static inline bool word_is(const char *s, size_t len, size_t i, const char *kw, size_t kl)
{
    if (i + kl > len)
        return false;
    for (size_t j = 1; j < kl; j++)
        if (fold(s[i + j]) != (uint8_t)kw[j])
            return false;
    return i + kl == len || !is_ident_byte((uint8_t)s[i + kl]);
}

#define WORD_IS(kw) word_is(s, len, i, kw, sizeof(kw) - 1)

/* Does a statement starting at s[i] begin with a session-effect keyword
 * (SET, RESET, DISCARD, DEALLOCATE, SAVEPOINT, ROLLBACK, RELEASE, ALTER, CALL, DO)?
 * Whitespace and comments before it are skipped; an unterminated comment
 * answers yes (we cannot tell). Runs on every text: a statement starting
 * with any other letter costs a handful of instructions. */
static inline bool keyword_at(const char *s, size_t len, size_t i)
{
    switch (fold(s[i])) {
    case 's':
        return WORD_IS("set") || WORD_IS("savepoint");
    case 'r':
        return WORD_IS("reset") || WORD_IS("rollback") || WORD_IS("release");
    case 'd':
        return WORD_IS("discard") || WORD_IS("deallocate") || WORD_IS("do");
    case 'a':
        return WORD_IS("alter");
    case 'c':
        return WORD_IS("call");
    default:
        return false;
    }
}

static bool leading_effect(const char *s, size_t len, size_t i)
{
    /* The common case first: the statement starts right away with a letter. */
    if (i < len) {
        uint8_t c = fold(s[i]);
        if (c >= 'a' && c <= 'z')
            return keyword_at(s, len, i);
    }
    for (;;) {
        while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '\f' ||
                           s[i] == '\v'))
            i++;
        if (i + 1 < len && s[i] == '-' && s[i + 1] == '-') {
            while (i < len && s[i] != '\n')
                i++;
            continue;
        }
        if (i + 1 < len && s[i] == '/' && s[i + 1] == '*') {
            int depth = 1;
            i += 2;
            while (i < len && depth > 0) {
                if (i + 1 < len && s[i] == '/' && s[i + 1] == '*') {
                    depth++;
                    i += 2;
                } else if (i + 1 < len && s[i] == '*' && s[i + 1] == '/') {
                    depth--;
                    i += 2;
                } else {
                    i++;
                }
            }
            if (depth > 0)
                return true;
            continue;
        }
        break;
    }
    return i < len && keyword_at(s, len, i);
}

/* The needles anchored at byte b that the pair filter let through. */
static __attribute__((noinline)) void match_needles(const rw_prefilter *pf, const char *s, size_t len, size_t i,
                                                   uint8_t b, rw_pf_result *r)
{
    for (int k = pf->group_start[b]; k < pf->group_start[b + 1]; k++) {
        const rw_pf_needle *nd = &pf->needles[k];
        if (i < nd->anchor_off || i - nd->anchor_off + nd->len > len)
            continue;
        const char *at = s + (i - nd->anchor_off);
        size_t j = 0;
        while (j < nd->len && fold(at[j]) == (uint8_t)nd->folded[j])
            j++;
        if (j < nd->len)
            continue;
        if (nd->what == RW_PF_NAME)
            r->tables |= 1ULL << (nd->table < 63 ? nd->table : 63);
        else if (nd->what == RW_PF_UESC)
            r->uesc = true;
        else
            r->effects = true;
    }
}

/* The needles anchored at byte b, found at s[i]. Inlined into the scan:
 * most hits end at the pair test (an anchor byte inside an ordinary word),
 * and a call per hit cost as much as the test. */
static inline __attribute__((always_inline)) void check_at(const rw_prefilter *pf, const char *s, size_t len,
                                                           size_t i, uint8_t b, rw_pf_result *r)
{
    if (b == ';' && i + 1 < len)
        r->effects |= leading_effect(s, len, i + 1);
    unsigned next = i + 1 < len ? (unsigned)b << 8 | fold(s[i + 1]) : 0;
    unsigned prev = i > 0 ? (unsigned)fold(s[i - 1]) << 8 | b : 0;
    if (((pf->pair_next[next >> 6] >> (next & 63)) & 1) | ((pf->pair_prev[prev >> 6] >> (prev & 63)) & 1))
        match_needles(pf, s, len, i, b, r);
}

typedef uint8_t rw_v16 __attribute__((vector_size(16)));

static void scan_scalar(const rw_prefilter *pf, const char *s, size_t from, size_t to, size_t len, rw_pf_result *r)
{
    for (size_t i = from; i < to; i++) {
        uint8_t b = fold(s[i]);
        if (pf->slot[b])
            check_at(pf, s, len, i, b, r);
    }
}

/* One bit per byte of a 16-byte block whose lane in m is 0xff. */
static inline unsigned lane_bits(rw_v16 m)
{
#ifdef __SSE2__
    return (unsigned)_mm_movemask_epi8((__m128i)m);
#else
    unsigned bits = 0;
    for (int k = 0; k < 16; k++)
        bits |= (unsigned)(m[k] & 1) << k;
    return bits;
#endif
}

/* The anchor bytes of the block at s[at]: one bit per byte in `bits`. */
static inline void hits(const rw_prefilter *pf, const char *s, size_t len, size_t at, unsigned bits,
                        rw_pf_result *r)
{
    while (bits) {
        size_t i = at + (size_t)__builtin_ctz(bits);
        bits &= bits - 1;
        check_at(pf, s, len, i, fold(s[i]), r);
    }
}

#define RW_FOLD16 {0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20}

/* Up to 8 anchors (the default policy needs 8) ... */
static inline rw_v16 mask8(const rw_v16 *a, rw_v16 x)
{
    x |= (rw_v16)RW_FOLD16;
    return (rw_v16)(x == a[0]) | (rw_v16)(x == a[1]) | (rw_v16)(x == a[2]) | (rw_v16)(x == a[3]) |
           (rw_v16)(x == a[4]) | (rw_v16)(x == a[5]) | (rw_v16)(x == a[6]) | (rw_v16)(x == a[7]);
}

/* ... or up to 12. */
static inline rw_v16 mask12(const rw_v16 *a, rw_v16 x)
{
    x |= (rw_v16)RW_FOLD16;
    return (rw_v16)(x == a[0]) | (rw_v16)(x == a[1]) | (rw_v16)(x == a[2]) | (rw_v16)(x == a[3]) |
           (rw_v16)(x == a[4]) | (rw_v16)(x == a[5]) | (rw_v16)(x == a[6]) | (rw_v16)(x == a[7]) |
           (rw_v16)(x == a[8]) | (rw_v16)(x == a[9]) | (rw_v16)(x == a[10]) | (rw_v16)(x == a[11]);
}

/* Every 16-byte block of s; the last one overlaps the one before it, and
 * its lanes already seen are dropped. */
static inline __attribute__((always_inline)) void scan_blocks(const rw_prefilter *pf, const char *s, size_t len,
                                                              bool wide, rw_pf_result *r)
{
    const rw_v16 *a = (const rw_v16 *)(const void *)pf->anchor_vec;
    rw_v16 x;
    if (len < 16) {
        memset(&x, 0, sizeof(x));       /* 0 | 0x20 is a space: never an anchor */
        memcpy(&x, s, len);
        hits(pf, s, len, 0, lane_bits(wide ? mask12(a, x) : mask8(a, x)), r);
        return;
    }
    size_t i = 0;
    for (; i + 16 <= len; i += 16) {
        memcpy(&x, s + i, 16);
        hits(pf, s, len, i, lane_bits(wide ? mask12(a, x) : mask8(a, x)), r);
    }
    if (i < len) {
        memcpy(&x, s + len - 16, 16);
        unsigned seen = 16 - (unsigned)(len - i);   /* lanes of the block before */
        hits(pf, s, len, len - 16, lane_bits(wide ? mask12(a, x) : mask8(a, x)) & ~((1u << seen) - 1), r);
    }
}

rw_pf_result rw_prefilter_run(const rw_policy *p, const char *s, size_t len)
{
    const rw_prefilter *pf = &p->pf;
    rw_pf_result r = {0, false, false};
    r.effects = leading_effect(s, len, 0);
    if (pf->n_anchors > RW_PF_MAX_ANCHORS)
        scan_scalar(pf, s, 0, len, len, &r);
    else if (pf->n_anchors > 8)
        scan_blocks(pf, s, len, true, &r);
    else
        scan_blocks(pf, s, len, false, &r);
    return r;
}
