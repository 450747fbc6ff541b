/*
 * rw_decide.c -- rw_decide(): pre-filter, cache, parse, decide, and the
 * decision's storage.
 *
 * The flow for one Query/Parse text:
 *   1. pre-filter (rw_policy.c): cannot name a watched table and has no
 *      tracked session effect -> RW_PASS, never parsed, cache untouched;
 *   2. the cache, keyed by text + protocol + environment + policy generation
 *      + catalog version;
 *   3. libpg_query's raw parser, then each statement (rw_stmt.c), each write
 *      site (rw_dml.c, rw_assign.c), splices applied to the client's text;
 *   4. a text it cannot parse passes only when the pre-filter shows it cannot
 *      name a watched table; otherwise enforce mode refuses it (0A000): the
 *      server may be newer than the parser, and an unparsed write must never
 *      slip through.
 *
 * A rejection keeps the statements before the offending one and replaces it
 * (and everything after it) with REJECT_SQL, which fails in the server's
 * parse analysis with an error naming RW_MARKER; the proxy swaps that error
 * for our SQLSTATE and message. For a simple Query the statements before it
 * run and the transaction then aborts, exactly as with a server error; for a
 * Parse the error answers the Parse.
 */
#include "rewrite/rw_pg.h"

#include <pg_query.h>
#include <pg_query/pg_query_internal.h>

#include <stdlib.h>
#include <string.h>

#define RW_MARKER "tenantguard:refused"
#define REJECT_SQL "SELECT \"" RW_MARKER "\""

/* ------------------------------------------------------------------ blobs */

void rw_blob_ref(rw_blob *b)
{
    b->refs++;
}

void rw_blob_unref(rw_blob *b)
{
    if (b && --b->refs == 0)
        free(b);
}

void rw_decision_release(rw_decision *d)
{
    if (!d)
        return;
    if (d->priv)
        rw_blob_unref(d->priv);
    *d = (rw_decision){.action = RW_PASS};
}

typedef struct out_spec {
    rw_action action;
    const char *text;
    size_t len;
    const char *sqlstate, *message;
    int n_statements;
    unsigned flags;
} out_spec;

static size_t str_size(const char *s)
{
    return s ? strlen(s) + 1 : 0;
}

/* One block: header, effects, events, then the strings. */
static rw_blob *blob_build(rw_ctx *c, const out_spec *o)
{
    size_t size = sizeof(rw_blob) + sizeof(rw_effect) * (size_t)c->nfx + sizeof(rw_event) * (size_t)c->nev;
    for (int i = 0; i < c->nfx; i++)
        size += str_size(c->fx[i].arg);
    size += (o->text ? o->len + 1 : 0) + str_size(o->sqlstate) + str_size(o->message);
    if (o->action == RW_REJECT)
        size += sizeof(RW_MARKER);
    rw_blob *b = malloc(size);
    if (!b)
        return NULL;
    memset(b, 0, sizeof(*b));
    b->refs = 1;
    b->size = size;
    char *p = (char *)(b + 1);
    rw_effect *fx = (rw_effect *)p;
    p += sizeof(rw_effect) * (size_t)c->nfx;
    rw_event *ev = (rw_event *)p;
    p += sizeof(rw_event) * (size_t)c->nev;
    if (c->nev)
        memcpy(ev, c->ev, sizeof(rw_event) * (size_t)c->nev);
#define PUTS(dst, src)                                                                             \
    do {                                                                                           \
        if (src) {                                                                                 \
            size_t l_ = strlen(src) + 1;                                                           \
            memcpy(p, (src), l_);                                                                  \
            (dst) = p;                                                                             \
            p += l_;                                                                               \
        }                                                                                          \
    } while (0)
    for (int i = 0; i < c->nfx; i++) {
        fx[i] = c->fx[i];
        fx[i].arg = NULL;
        PUTS(fx[i].arg, c->fx[i].arg);
    }
    rw_decision *d = &b->d;
    d->action = o->action;
    if (o->text) {
        memcpy(p, o->text, o->len);
        p[o->len] = '\0';
        d->text = p;
        d->len = o->len;
        p += o->len + 1;
    }
    PUTS(d->sqlstate, o->sqlstate);
    PUTS(d->message, o->message);
    if (o->action == RW_REJECT)
        PUTS(d->marker, RW_MARKER);
#undef PUTS
    d->events = c->nev ? ev : NULL;
    d->n_events = c->nev;
    d->effects = c->nfx ? fx : NULL;
    d->n_effects = c->nfx;
    d->n_statements = o->n_statements;
    d->flags = o->flags;
    return b;
}

/* ---------------------------------------------------------------- splices */

static int splice_cmp(const void *a, const void *b)
{
    const rw_splice *x = a, *y = b;
    if (x->pos != y->pos)
        return x->pos < y->pos ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* A byte that continues an identifier or keyword (or a number). */
static bool word_byte(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
           ch == '$' || ch >= 0x80;
}

/* text[0, upto) with the splices inside it applied. Inserted text never
 * glues onto a neighbouring word: "SELECT" + "tenantguard.f(" must not
 * become the call "selecttenantguard.f(" -- a function anyone with CREATE
 * could define. A space goes between whenever both sides are word bytes. */
static bool apply_splices(rw_ctx *c, int upto, rw_buf *out)
{
    qsort(c->spl, (size_t)c->nspl, sizeof(rw_splice), splice_cmp);
    int at = 0;
    for (int i = 0; i < c->nspl; i++) {
        const rw_splice *s = &c->spl[i];
        if (s->pos >= upto && !(s->pos == upto && s->end == s->pos && upto == c->len))
            break;
        if (s->pos < at || s->end < s->pos || s->end > upto)
            return false;               /* overlapping splices: a bug, fail closed */
        rw_buf_add(out, c->text + at, (size_t)(s->pos - at));
        size_t tl = strlen(s->text);
        if (tl && out->len && word_byte((unsigned char)out->p[out->len - 1]) &&
            word_byte((unsigned char)s->text[0]))
            rw_buf_str(out, " ");
        rw_buf_str(out, s->text);
        if (tl && s->end < c->len && word_byte((unsigned char)s->text[tl - 1]) &&
            word_byte((unsigned char)c->text[s->end]))
            rw_buf_str(out, " ");
        at = s->end;
    }
    if (at < upto)
        rw_buf_add(out, c->text + at, (size_t)(upto - at));
    return !c->a.oom;
}

/* --------------------------------------------------------------- parsing */

/* A decision that names no statement of ours: the whole text could not be
 * parsed, or could not be read safely. */
static rw_blob *unparsed(rw_ctx *c, const rw_pf_result *pf, unsigned flags, const char *sqlstate,
                         const char *why)
{
    uint64_t mask = rw_pf_table_mask(c->pol, pf);
    tg_mode mode = rw_mask_mode(c->pol, mask);
    out_spec o = {RW_PASS, NULL, 0, NULL, NULL, 0, flags};
    if (pf->effects)
        rw_effect_add(c, RW_FX_PATH_UNKNOWN, NULL, false, false);
    if (mask && mode != TG_MODE_OFF) {
        rw_event_add(c, rw_mask_first(c->pol, mask), RW_RULE_FORM, RW_EV_REFUSED);
        if (mode == TG_MODE_ENFORCE) {
            o.action = RW_REJECT;
            o.text = REJECT_SQL;
            o.len = strlen(REJECT_SQL);
            o.sqlstate = sqlstate;
            o.message = why;
            c->nfx = 0;                 /* nothing of it will run */
        } else {
            o.flags |= RW_F_OBSERVED;
        }
    }
    return blob_build(c, &o);
}

/* Does an effect change how later names resolve (search_path, temp
 * tables)? Such a statement runs before the later statements of the same
 * Query are analysed, so they must not be decided under the old path.
 * EXECUTE runs a prepared query we do not see here (its set_config() or
 * CREATE TEMP is a deferred effect of an earlier PREPARE, perhaps of an
 * earlier text), so it counts as a change of unknown outcome. */
bool rw_effect_changes_resolution(const rw_effect *fx)
{
    switch (fx->kind) {
    case RW_FX_EXECUTE:
    case RW_FX_SET_PATH:
    case RW_FX_SET_LOCAL_PATH:
    case RW_FX_RESET_PATH:
    case RW_FX_PATH_UNKNOWN:
    case RW_FX_CREATE_TEMP:
    case RW_FX_DROP_REL:
    case RW_FX_DISCARD_ALL:
    case RW_FX_DISCARD_TEMP:
    case RW_FX_ROLLBACK_TO:
        return true;
    default:
        return false;
    }
}

/* Decide each statement; on the first rejection stop. Returns false when
 * something inside went wrong (the caller fails closed). */
static bool decide_statements(rw_ctx *c, List *tree, out_spec *o, rw_buf *out)
{
    /* After a statement that changes name resolution, the rest of the text
     * is decided with the path unknown: an unqualified watched name is then
     * the watched table (fail closed), whatever the new path would say. */
    static const rw_env unknown_std = {.path_known = false, .std_strings = true};
    static const rw_env unknown_nonstd = {.path_known = false, .std_strings = false};
    const rw_env *unknown = (!c->env || c->env->std_strings) ? &unknown_std : &unknown_nonstd;
    int reject_at = -1, fx_keep = 0, ev_keep = 0;
    ListCell *lc;
    int k = 0;
    foreach (lc, tree) {
        RawStmt *rs = lfirst(lc);
        c->stmt_no = k++;
        c->stmt_start = rs->stmt_location < 0 ? 0 : rs->stmt_location;
        c->stmt_end = rs->stmt_len ? c->stmt_start + rs->stmt_len : c->len;
        c->unknown_node = false;
        c->stmt_reject = false;
        if (c->tok_done)
            rw_lex_statement(c);
        int spl_mark = c->nspl;
        rw_stmt(c, rs->stmt);
        rw_stmt_finish(c, rs->stmt);
        if (c->failed || c->a.oom)
            return false;
        if (c->stmt_reject) {
            c->nspl = spl_mark;
            reject_at = c->stmt_start;
            c->nfx = fx_keep;           /* effects of this and later statements never happen */
            (void)ev_keep;
            break;
        }
        for (int i = fx_keep; i < c->nfx; i++)
            if (rw_effect_changes_resolution(&c->fx[i]))
                c->env = unknown;
        fx_keep = c->nfx;
        ev_keep = c->nev;
    }
    o->n_statements = list_length(tree);
    if (reject_at >= 0) {
        if (!apply_splices(c, reject_at, out))
            return false;
        if (out->len && out->p[out->len - 1] != ' ' && out->p[out->len - 1] != '\n')
            rw_buf_str(out, " ");
        rw_buf_str(out, REJECT_SQL);
        o->action = RW_REJECT;
        o->sqlstate = c->rej_sqlstate;
        o->message = c->rej_message;
    } else if (c->nspl > 0) {
        if (!apply_splices(c, c->len, out))
            return false;
        o->action = RW_REPLACE;
    } else {
        o->action = RW_PASS;
        return true;
    }
    o->text = rw_buf_cstr(out);
    o->len = out->len;
    return true;
}

rw_blob *rw_decide_parsed(const rw_policy *p, const rw_env *env, const rw_catalog *cat, rw_proto proto,
                          const char *sql, size_t len, const rw_pf_result *pf)
{
    rw_ctx c;
    memset(&c, 0, sizeof(c));
    c.pol = p;
    c.env = env;
    c.cat = cat;
    c.proto = proto;
    c.text = sql;
    c.len = (int)len;
    rw_blob *b;

    if (len > (size_t)1 << 30 || strlen(sql) != len) {
        /* NUL inside the text, or absurdly long: PostgreSQL reads up to the
         * first NUL, we cannot follow it safely. */
        b = unparsed(&c, pf, RW_F_PARSE_FAILED, "0A000",
                     "tenantguard: statement text holds a NUL byte or is too long; refused in enforce mode");
        rw_arena_free(&c.a);
        return b;
    }
    if (env && env->client_only_encoding) {
        b = unparsed(&c, pf, 0, "0A000",
                     "tenantguard: the client encoding can hide quote and backslash bytes inside multibyte "
                     "characters, so statements naming watched tables are refused in enforce mode; use UTF8");
        rw_arena_free(&c.a);
        return b;
    }

    MemoryContext mctx = pg_query_enter_memory_context();
    rw_tls_set_std_strings(env ? env->std_strings : true);
    PgQueryInternalParsetreeAndError r = pg_query_raw_parse(sql);
    free(r.stderr_buffer);
    if (r.error) {
        char why[200];
        snprintf(why, sizeof(why),
                 "tenantguard: statement could not be parsed (at offset %d) and may write a watched table; "
                 "refused in enforce mode", r.error->cursorpos);
        pg_query_free_error(r.error);
        pg_query_exit_memory_context(mctx);
        b = unparsed(&c, pf, RW_F_PARSE_FAILED, "0A000", why);
        rw_arena_free(&c.a);
        return b;
    }

    out_spec o = {RW_PASS, NULL, 0, NULL, NULL, 0, 0};
    rw_buf out;
    rw_buf_init(&out, &c.a);
    bool ok = decide_statements(&c, r.tree, &o, &out);
    pg_query_exit_memory_context(mctx);
    if (!ok) {
        /* Our own failure: never a silent pass in enforce mode. */
        bool oom = c.a.oom;
        c.nev = c.nfx = 0;
        c.a.oom = false;
        b = unparsed(&c, pf, 0, oom ? "53200" : "XX000",
                     oom ? "tenantguard: out of memory while checking a statement; refused in enforce mode"
                         : "tenantguard: internal error while checking a statement; refused in enforce mode");
        rw_arena_free(&c.a);
        return b;
    }
    if (c.watched_write)
        o.flags |= RW_F_WATCHED_WRITE;
    if (c.pinned)
        o.flags |= RW_F_PINNED;
    if (c.observed)
        o.flags |= RW_F_OBSERVED;
    b = blob_build(&c, &o);
    rw_arena_free(&c.a);
    return b;
}

/* ---------------------------------------------------------------- entry */

rw_decision rw_decision_oom(const rw_policy *p, const rw_pf_result *pf)
{
    rw_decision d;
    memset(&d, 0, sizeof(d));
    d.action = RW_PASS;
    uint64_t mask = rw_pf_table_mask(p, pf);
    if (mask && rw_mask_mode(p, mask) == TG_MODE_ENFORCE) {
        d.action = RW_REJECT;
        d.text = REJECT_SQL;
        d.len = strlen(REJECT_SQL);
        d.sqlstate = "53200";
        d.message = "tenantguard: out of memory while checking a statement; refused in enforce mode";
        d.marker = RW_MARKER;
    }
    return d;
}

rw_decision rw_decide(rw_cache *cache, const rw_policy *policy, const rw_env *env, const rw_catalog *catalog,
                      rw_proto proto, const char *sql, size_t len)
{
    if (!policy || !sql)
        return (rw_decision){.action = RW_PASS, .flags = RW_F_PREFILTERED};
    rw_pf_result pf = rw_prefilter_run(policy, sql, len);
    if (!rw_pf_any(&pf)) {
        rw_cache_count_prefiltered(cache);
        return (rw_decision){.action = RW_PASS, .flags = RW_F_PREFILTERED};
    }
    rw_decision d;
    rw_ckey key = {rw_hash_text(sql, len), env ? env->hash : 1, policy->generation,
                   catalog ? catalog->version : 0, (uint8_t)proto};
    if (rw_cache_lookup(cache, sql, len, &key, &d))
        return d;
    rw_blob *b = rw_decide_parsed(policy, env, catalog, proto, sql, len, &pf);
    if (!b)
        return rw_decision_oom(policy, &pf);
    d = b->d;
    d.priv = b;
    rw_cache_insert(cache, sql, len, &key, b);
    return d;
}
