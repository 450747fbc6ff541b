/*
 * rw_lex.c -- the token stream of a statement text, from libpg_query's own
 * core scanner (the same lexer the parser used, with the same
 * standard_conforming_strings), and the splice-point finders built on it.
 *
 * The scanner raises ERROR on bad input; outside the parser's PG_TRY that
 * would end the process, so we only ever scan a text the parser accepted
 * (every token of it was lexed successfully moments before, with the same
 * settings).
 *
 * libpg_query's core_yy_extra_type has one more field (yyllocend) than the
 * PostgreSQL 15 server header's; the scanner writes it, so the struct we
 * hand over is padded.
 */
#include "rewrite/rw_pg.h"

#include "common/keywords.h"
#include "parser/scanner.h"

#include <string.h>

typedef struct rw_yyextra {
    core_yy_extra_type core;
    int pad[16];
} rw_yyextra;

static const char *const kw_names[RW_KW__COUNT] = {
    [RW_KW_AS] = "as", [RW_KW_CONFLICT] = "conflict", [RW_KW_DEFAULT] = "default",
    [RW_KW_EXCEPT] = "except", [RW_KW_FETCH] = "fetch", [RW_KW_FOR] = "for",
    [RW_KW_FROM] = "from", [RW_KW_GROUP] = "group", [RW_KW_HAVING] = "having",
    [RW_KW_INTERSECT] = "intersect", [RW_KW_INTO] = "into", [RW_KW_LIMIT] = "limit",
    [RW_KW_OFFSET] = "offset", [RW_KW_ON] = "on", [RW_KW_ORDER] = "order",
    [RW_KW_OVERRIDING] = "overriding", [RW_KW_RETURNING] = "returning", [RW_KW_ROW] = "row",
    [RW_KW_SELECT] = "select", [RW_KW_SET] = "set", [RW_KW_UNION] = "union",
    [RW_KW_VALUES] = "values", [RW_KW_WHEN] = "when", [RW_KW_WHERE] = "where",
    [RW_KW_WINDOW] = "window", [RW_KW_WITH] = "with", [RW_KW_INSERT] = "insert",
    [RW_KW_UPDATE] = "update", [RW_KW_THEN] = "then",
};

void rw_lex_keyword_tokens(int kw_token[RW_KW__COUNT]);

/* Can `s` be written without double quotes? As PostgreSQL's
 * quote_identifier decides: lower-case letters, digits, _ (and $ after the
 * first), and not a keyword other than an unreserved one. */
bool rw_ident_plain(const char *s)
{
    if (!((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '$'))
            return false;
    int n = ScanKeywordLookup(s, &ScanKeywords);
    return n < 0 || ScanKeywordCategories[n] == UNRESERVED_KEYWORD;
}

void rw_lex_keyword_tokens(int kw_token[RW_KW__COUNT])
{
    kw_token[RW_KW_NONE] = 0;
    for (int k = 1; k < RW_KW__COUNT; k++) {
        int n = ScanKeywordLookup(kw_names[k], &ScanKeywords);
        kw_token[k] = n >= 0 ? ScanKeywordTokens[n] : -1;
    }
}

static uint8_t kw_of(const rw_policy *p, int code)
{
    if (code < RW_T_FIRST_KEYWORD)
        return RW_KW_NONE;
    for (int k = 1; k < RW_KW__COUNT; k++)
        if (p->kw_token[k] == code)
            return (uint8_t)k;
    return RW_KW_NONE;
}

bool rw_lex(rw_ctx *c)
{
    if (c->tok_done) {
        if (c->tok)
            rw_lex_statement(c);
        return c->tok != NULL;
    }
    c->tok_done = true;
    int cap = 64, n = 0;
    rw_tok *t = rw_alloc(&c->a, sizeof(*t) * (size_t)cap);
    if (!t)
        return false;
    rw_yyextra ex;
    memset(&ex, 0, sizeof(ex));
    core_YYSTYPE yylval;
    YYLTYPE yylloc = 0;
    core_yyscan_t sc = scanner_init(c->text, &ex.core, &ScanKeywords, ScanKeywordTokens);
    ex.core.escape_string_warning = false;
    for (;;) {
        int code = core_yylex(&yylval, &yylloc, sc);
        if (code == 0)
            break;
        if (n == cap) {
            rw_tok *bigger = rw_alloc(&c->a, sizeof(*t) * (size_t)cap * 2);
            if (!bigger) {
                scanner_finish(sc);
                return false;
            }
            memcpy(bigger, t, sizeof(*t) * (size_t)n);
            t = bigger;
            cap *= 2;
        }
        t[n].start = yylloc;
        t[n].code = code;
        t[n].comment = code == RW_T_SQL_COMMENT || code == RW_T_C_COMMENT;
        t[n].kw = kw_of(c->pol, code);
        /* A word right after a dot is a name (s.returning, t.having), never
         * the keyword it is spelled like. Comments between do not count. */
        for (int p = n - 1; p >= 0; p--) {
            if (t[p].comment)
                continue;
            if (t[p].code == '.')
                t[n].kw = RW_KW_NONE;
            break;
        }
        n++;
    }
    scanner_finish(sc);
    c->tok = t;
    c->ntok = n;
    rw_lex_statement(c);
    return true;
}

/* The current statement's tokens: [tok_lo, tok_hi). */
void rw_lex_statement(rw_ctx *c)
{
    if (!c->tok)
        return;
    int lo = 0, hi = c->ntok;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (c->tok[mid].start < c->stmt_start)
            lo = mid + 1;
        else
            hi = mid;
    }
    c->tok_lo = lo;
    while (hi < c->ntok && c->tok[hi].start < c->stmt_end)
        hi++;
    c->tok_hi = hi;
}

/* ----------------------------------------------------------------- access */

int rw_tok_at(rw_ctx *c, int loc)
{
    int lo = c->tok_lo, hi = c->tok_hi - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (c->tok[mid].start == loc)
            return mid;
        if (c->tok[mid].start < loc)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

int rw_tok_next(rw_ctx *c, int i)
{
    for (i++; i < c->tok_hi; i++)
        if (!c->tok[i].comment)
            return i;
    return c->tok_hi;
}

int rw_tok_prev(rw_ctx *c, int i)
{
    for (i--; i >= c->tok_lo; i--)
        if (!c->tok[i].comment)
            return i;
    return c->tok_lo - 1;
}

bool rw_tok_is(rw_ctx *c, int i, int code)
{
    return i >= c->tok_lo && i < c->tok_hi && c->tok[i].code == code;
}

bool rw_tok_kw(rw_ctx *c, int i, rw_kw kw)
{
    return i >= c->tok_lo && i < c->tok_hi && c->tok[i].kw == kw;
}

static int open_delta(int code)
{
    if (code == '(' || code == '[')
        return 1;
    if (code == ')' || code == ']')
        return -1;
    return 0;
}

int rw_tok_match(rw_ctx *c, int open)
{
    int depth = 0;
    for (int i = open; i < c->tok_hi; i++) {
        depth += open_delta(c->tok[i].code);
        if (depth == 0)
            return i;
    }
    return -1;
}

/* The end of a token: the start of the next one, less the whitespace
 * between them (a comment is a token of its own). */
int rw_tok_end_pos(rw_ctx *c, int i)
{
    int end = i + 1 < c->ntok ? c->tok[i + 1].start : c->len;
    while (end > c->tok[i].start + 1) {
        char ch = c->text[end - 1];
        if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v')
            end--;
        else
            break;
    }
    if (c->tok[i].code == ';' || open_delta(c->tok[i].code) != 0 || c->tok[i].code == ',')
        end = c->tok[i].start + 1;
    return end;
}

/* Text inserted here lands right after the last significant token before
 * `delim`: comments are tokens of their own, so only whitespace lies between
 * a token's end and the next token, and we never insert inside a comment. */
int rw_pos_before(rw_ctx *c, int delim)
{
    int p = rw_tok_prev(c, delim);
    if (p < c->tok_lo)
        return delim < c->ntok ? c->tok[delim].start : c->len;
    return rw_tok_end_pos(c, p);
}

/* ---------------------------------------------------------------- ranges */

static bool is_delim(rw_ctx *c, int i, rw_end_set set)
{
    const rw_tok *t = &c->tok[i];
    if (t->code == ')' || t->code == ';')
        return true;
    if (t->code == ',')
        return set != RW_END_INSERT_REST;
    switch (set) {
    case RW_END_LIST:
        return false;
    case RW_END_SET:
        return t->kw == RW_KW_FROM || t->kw == RW_KW_WHERE || t->kw == RW_KW_RETURNING;
    case RW_END_CONFLICT_SET:
        return t->kw == RW_KW_WHERE || t->kw == RW_KW_RETURNING;
    case RW_END_MERGE_SET:
        return t->kw == RW_KW_WHEN;
    case RW_END_TARGET:
        switch (t->kw) {
        case RW_KW_FROM: case RW_KW_INTO: case RW_KW_WHERE: case RW_KW_GROUP: case RW_KW_HAVING:
        case RW_KW_WINDOW: case RW_KW_ORDER: case RW_KW_LIMIT: case RW_KW_OFFSET: case RW_KW_FETCH:
        case RW_KW_FOR: case RW_KW_UNION: case RW_KW_INTERSECT: case RW_KW_EXCEPT:
        case RW_KW_RETURNING:
            return true;
        case RW_KW_ON:
            return rw_tok_kw(c, rw_tok_next(c, i), RW_KW_CONFLICT);
        default:
            return false;
        }
    case RW_END_INSERT_REST:
        if (t->kw == RW_KW_RETURNING)
            return true;
        return t->kw == RW_KW_ON && rw_tok_kw(c, rw_tok_next(c, i), RW_KW_CONFLICT);
    }
    return false;
}

int rw_expr_end(rw_ctx *c, int first, int max_loc, rw_end_set set)
{
    if (first < c->tok_lo || first >= c->tok_hi)
        return -1;
    int depth = 0;
    for (int i = first; i < c->tok_hi; i++) {
        const rw_tok *t = &c->tok[i];
        if (t->comment)
            continue;
        if (depth == 0 && i > first) {
            if (t->code == ')' || t->code == ';')
                return t->start > max_loc ? i : -1;
            if (t->start > max_loc && is_delim(c, i, set))
                return i;
        }
        depth += open_delta(t->code);
        if (depth < 0)
            return -1;                   /* the expression's start was inside parentheses */
    }
    return depth == 0 ? c->tok_hi : -1;
}

int rw_split_group(rw_ctx *c, int open, int *first, int *delim, int max)
{
    if (!rw_tok_is(c, open, '('))
        return -1;
    int n = 0, depth = 0, start = -1;
    for (int i = open; i < c->tok_hi; i++) {
        const rw_tok *t = &c->tok[i];
        if (t->comment)
            continue;
        if (depth == 1 && (t->code == ',' || t->code == ')')) {
            if (start < 0 || n >= max)
                return -1;               /* an empty element, or too many */
            first[n] = start;
            delim[n] = i;
            n++;
            start = -1;
            if (t->code == ')')
                return n;
            continue;
        }
        depth += open_delta(t->code);
        if (i > open && depth >= 1 && start < 0)
            start = i;
        if (depth <= 0)
            return -1;
    }
    return -1;
}
