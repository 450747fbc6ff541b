/*
 * statement.c -- statements from the client: the one place where the
 * protocol layer asks rewrite/ what to do with a Query or Parse text, and
 * where Bind, Execute and Close are checked against what was prepared.
 *
 * A rejection is never answered by the proxy alone: the statement is
 * replaced by one that fails on the server with a marker error, so the
 * server's transaction is aborted exactly as with a server error (and
 * earlier statements of the same Query have run), and responses.c puts the
 * real SQLSTATE and message in place of the marker error.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "policy/sqlstate.h"
#include "proxy/pgproto.h"
#include "proxy/relay.h"
#include "proxy/runtime.h"
#include "proxy/stmtctx.h"
#include "proxy/track.h"
#include "proxy/vaudit.h"

/* What the proxy sends in place of a statement it refuses itself. It fails
 * at parse analysis (42703) with the marker in the message. */
#define OWN_MARKER "tenantguard:refused"
static const char own_reject_sql[] = "SELECT \"" OWN_MARKER "\"";

/* ---------------------------------------------------------------- ctx */

track_ctx *stmtctx_new(char kind)
{
    track_ctx *c = calloc(1, sizeof(*c));
    if (c) {
        c->kind = kind;
        c->reject_table = -1;
    }
    return c;
}

void stmtctx_free_effects(rw_effect *fx, int n)
{
    for (int i = 0; fx && i < n; i++)
        free((char *)fx[i].arg);
    free(fx);
}

void stmtctx_release(track_ctx *c)
{
    if (!c)
        return;
    if (c->pending_env)
        sessenv_pending(c->pending_env, -1);
    if (c->lexing_env)
        c->lexing_env->pending_lexing--;
    if (c->has_decision)
        rw_decision_release(&c->d);
    if (c->op)
        sessenv_stmt_op_end(c->op_env, c->op, SESSENV_OP_SKIPPED);   /* never answered */
    stmtctx_free_effects(c->effects, c->n_effects);
    free(c->reject_message);
    free(c->text);
    free(c);
}

/* ---------------------------------------------------------------- helpers */

/* Does a SQL EXECUTE of `name` change how text is read? Unknown: it may. */
static bool executes_lexing(tg_session *s, const char *name)
{
    const sessenv_prepared *p = name ? sessenv_prepared_find(&s->env, true, name) : NULL;
    if (!p)
        return true;
    for (int i = 0; i < p->n_effects; i++)
        if (p->effects[i].kind == RW_FX_LEXING)
            return true;
    return false;
}

/* A request whose effects may change name resolution: until the server has
 * answered it, later statements are decided with the path unknown. */
static void mark_pending(tg_session *s, track_ctx *c, const rw_effect *fx, int n)
{
    for (int i = 0; c && i < n; i++) {
        if (!c->pending_env && rw_effect_changes_resolution(&fx[i])) {
            c->pending_env = &s->env;
            sessenv_pending(&s->env, +1);
        }
        if (!c->lexing_env &&
            (fx[i].kind == RW_FX_LEXING || (fx[i].kind == RW_FX_EXECUTE && executes_lexing(s, fx[i].arg)))) {
            c->lexing_env = &s->env;
            s->env.pending_lexing++;
        }
    }
}

static int push(tg_session *s, char type, bool describe_statement, track_ctx *ctx)
{
    if (track_push(s->track, type, describe_statement, ctx) != 0) {
        sess_fatal(s, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory", NULL);
        return -1;
    }
    return 0;
}

static void count_events(tg_session *s, const rw_decision *d)
{
    tg_stats *st = s->rt->stats;
    for (int i = 0; i < d->n_events; i++)
        tg_stats_count(st, d->events[i].table, d->events[i].rule, d->events[i].kind);
    if (d->flags & RW_F_PREFILTERED)
        st->prefiltered++;
    if (d->flags & RW_F_PARSE_FAILED)
        st->parse_failures++;
}

/* The client's text, up to its NUL, when the payload is exactly one string
 * (Query) -- anything else the server rejects on its own. */
static const char *query_text(const uint8_t *payload, size_t len, size_t *tlen)
{
    if (len == 0 || payload[len - 1] != '\0')
        return NULL;
    size_t n = strlen((const char *)payload);
    if (n != len - 1)
        return NULL;
    *tlen = n;
    return (const char *)payload;
}

/* Record a violation the proxy decided (static rejection or refusal). */
static void record_violation(tg_session *s, int table, int rule, const char *sqlstate, const char *text,
                             bool observed)
{
    tg_violation v;
    memset(&v, 0, sizeof(v));
    v.at = time(NULL);
    v.session_id = s->id;
    snprintf(v.client, sizeof(v.client), "%s@%s %s", s->cl.user ? s->cl.user : "?",
             s->cl.database ? s->cl.database : "?", s->cl.peer);
    const tg_policy *p = &s->rt->cfg->policy;   /* the policy the decision was made with */
    if (table >= 0 && table < p->n_tables)
        snprintf(v.table, sizeof(v.table), "%s.%s", p->tables[table].schema, p->tables[table].name);
    snprintf(v.rule, sizeof(v.rule), "%s", rw_rule_name((rw_rule)rule));
    snprintf(v.sqlstate, sizeof(v.sqlstate), "%s", sqlstate);
    snprintf(v.mode, sizeof(v.mode), "%s", observed ? "observe" : "enforce");
    if (text)
        rw_fingerprint(text, v.fingerprint);
    tg_stats_violation(s->rt->stats, &v);
    vaudit_violation(s, &v, NULL);
    tg_clog(TG_LOG_INFO, &s->log, "%s: %s %s on %s (statement %s)",
            observed ? "would refuse (observe)" : "refused", v.sqlstate, v.rule,
            v.table[0] ? v.table : "-", v.fingerprint[0] ? v.fingerprint : "unparsed");
}

/* Observe mode: log what enforce would have rewritten, once per statement
 * fingerprint (a text with literals is new every time, its fingerprint is
 * not). A bounded set; when it fills up it starts over. */
static void log_would_rewrite(tg_session *s, const rw_decision *d, const char *text)
{
    const rw_event *ev = NULL;
    for (int i = 0; i < d->n_events && !ev; i++)
        if (d->events[i].kind == RW_EV_REWRITTEN)
            ev = &d->events[i];
    if (!ev || !tg_log_enabled(TG_LOG_INFO))
        return;
    char fp[17];
    rw_fingerprint(text, fp);
    uint64_t key = strtoull(fp, NULL, 16) | 1;
    tg_runtime *rt = s->rt;
    size_t n = sizeof(rt->observed_seen) / sizeof(rt->observed_seen[0]);
    if (rt->observed_count > (int)(n * 3 / 4)) {
        memset(rt->observed_seen, 0, sizeof(rt->observed_seen));
        rt->observed_count = 0;
    }
    for (size_t i = key % n;; i = (i + 1) % n) {
        if (rt->observed_seen[i] == key)
            return;
        if (!rt->observed_seen[i]) {
            rt->observed_seen[i] = key;
            rt->observed_count++;
            break;
        }
    }
    const tg_policy *p = &rt->cfg->policy;
    tg_clog(TG_LOG_INFO, &s->log, "observe: enforce would rewrite this statement: %s on %s.%s (statement %s)",
            rw_rule_name((rw_rule)ev->rule), ev->table >= 0 && ev->table < p->n_tables ? p->tables[ev->table].schema : "?",
            ev->table >= 0 && ev->table < p->n_tables ? p->tables[ev->table].name : "?", fp);
}

/* Turn a statement into a proxy-side refusal: the marker statement goes to
 * the server, and the slot carries what replaces its error. */
static void own_reject(track_ctx *c, const char *sqlstate, const char *message, int table, int rule)
{
    c->reject = true;
    c->reject_sqlstate = sqlstate;
    free(c->reject_message);
    c->reject_message = strdup(message);
    c->reject_marker = OWN_MARKER;
    c->reject_table = (int16_t)table;
    c->reject_rule = (uint8_t)rule;
}

/* Would this decision need tenantguard's SQL helpers in the database? */
static bool needs_helpers(const rw_decision *d)
{
    return d->action == RW_REPLACE;
}

static const rw_catalog *session_catalog(tg_session *s)
{
    return s->probe.got_settings ? probe_catalog(&s->probe, &s->rt->cfg->policy, s->rt->rw_generation) : NULL;
}

static bool has_effect(const rw_decision *d, rw_effect_kind k)
{
    for (int i = 0; i < d->n_effects; i++)
        if (d->effects[i].kind == k)
            return true;
    return false;
}

/*
 * Is a prepared statement still what the current policy would have sent?
 * After a policy change (reload, SET mode) a statement prepared earlier is
 * decided again from its text: one the server got unrewritten but that
 * would now be rewritten or refused is stale, and running it would bypass
 * enforcement. A statement we know nothing about (no text) is stale when
 * anything is enforced.
 */
static bool prepared_is_stale(tg_session *s, sessenv_prepared *p)
{
    tg_runtime *rt = s->rt;
    const rw_env *env = sessenv_env(&s->env);
    /* PostgreSQL analyses a prepared statement again when the search_path
     * changed since it was prepared: so must we. */
    if (p->generation == rt->rw_generation && p->env_hash == env->hash)
        return false;
    if (p->rewritten)
        return false;   /* it already carries the checks */
    if (!p->text) {
        if (!rt_any_enforced(rt))
            return false;
        return true;
    }
    rw_decision d = rw_decide(rt->cache, rt->rw, env, session_catalog(s), RW_PROTO_EXTENDED, p->text,
                              strlen(p->text));
    bool stale = d.action != RW_PASS;
    rw_decision_release(&d);
    if (!stale) {
        p->generation = rt->rw_generation;
        p->env_hash = env->hash;
    }
    return stale;
}

/* Would the statement be rewritten or refused with the path unknown -- does
 * it name anything that may be a watched table? */
static bool stale_on_any_path(tg_session *s, const sessenv_prepared *p)
{
    tg_runtime *rt = s->rt;
    if (!p->text)
        return rt_any_enforced(rt);
    rw_decision d = rw_decide(rt->cache, rt->rw, NULL, session_catalog(s), RW_PROTO_EXTENDED, p->text,
                              strlen(p->text));
    bool stale = d.action != RW_PASS;
    rw_decision_release(&d);
    return stale;
}

/* Does an effect before fx[upto] in the same text change what names mean? */
static bool resolution_changes_before(const rw_decision *d, int upto)
{
    for (int k = 0; k < upto; k++) {
        switch (d->effects[k].kind) {
        case RW_FX_PREPARE: case RW_FX_DEALLOCATE: case RW_FX_EXECUTE: case RW_FX_SAVEPOINT: case RW_FX_RELEASE:
        case RW_FX_LEXING:
            break;
        default:
            if (!d->effects[k].deferred)
                return true;
        }
    }
    return false;
}

/* A SQL-level EXECUTE of a statement prepared under another policy or path.
 * One that follows a path change in its own text (SET search_path = public;
 * EXECUTE p) runs under a path the proxy cannot vouch for yet: a statement
 * that does not carry the checks (sent as is, or pinned to a look-alike) is
 * stale then too. */
static bool stale_execute(tg_session *s, const rw_decision *d, const char **name)
{
    for (int i = 0; i < d->n_effects; i++) {
        if (d->effects[i].kind != RW_FX_EXECUTE || !d->effects[i].arg)
            continue;
        sessenv_prepared *p = sessenv_prepared_find(&s->env, true, d->effects[i].arg);
        if (p && (prepared_is_stale(s, p) || (!p->rewritten && resolution_changes_before(d, i) &&
                                               stale_on_any_path(s, p)))) {
            *name = d->effects[i].arg;
            return true;
        }
    }
    return false;
}

/* ---------------------------------------------------------------- Query / Parse */

/* Decide about one text; fills ctx; returns the text to send (the client's
 * own when NULL) and its length. */
static const char *decide(tg_session *s, track_ctx *c, rw_proto proto, const char *text, size_t len, bool named,
                          size_t *out_len)
{
    tg_runtime *rt = s->rt;
    const rw_env *env = sessenv_env(&s->env);
    c->env_hash = env->hash;
    c->d = rw_decide(rt->cache, rt->rw, env, session_catalog(s), proto, text, len);
    c->has_decision = true;
    rw_decision *d = &c->d;
    count_events(s, d);
    c->generation = rt->rw_generation;

    const char *stale_name = NULL;
    if (d->action == RW_REJECT) {
        c->reject = true;
        c->reject_sqlstate = d->sqlstate;
        c->reject_message = strdup(d->message ? d->message : "tenantguard: statement refused");
        c->reject_marker = d->marker;
        for (int i = 0; i < d->n_events; i++) {
            if (d->events[i].kind == RW_EV_REJECTED || d->events[i].kind == RW_EV_REFUSED) {
                c->reject_table = d->events[i].table;
                c->reject_rule = d->events[i].rule;
                break;
            }
        }
        record_violation(s, c->reject_table, c->reject_rule, d->sqlstate, text, false);
        *out_len = d->len;
        return d->text;
    }
    if ((d->flags & RW_F_OBSERVED) && !(d->flags & RW_F_CACHED))
        log_would_rewrite(s, d, text);
    if (d->flags & RW_F_OBSERVED) {
        for (int i = 0; i < d->n_events; i++)
            if (d->events[i].kind == RW_EV_REFUSED || d->events[i].kind == RW_EV_REJECTED)
                record_violation(s, d->events[i].table, d->events[i].rule,
                                 d->events[i].kind == RW_EV_REFUSED ? TG_SQLSTATE_FEATURE_NOT_SUPPORTED
                                                                    : TG_SQLSTATE_INSUFFICIENT_PRIVILEGE,
                                 text, true);
    }
    if (needs_helpers(d) && !s->probe.helpers_ok) {
        char msg[256];
        snprintf(msg, sizeof(msg),
                 "tenantguard: enforcement needs tenantguard's SQL helpers in schema %s, which are "
                 "missing or of another version; run: tenantguard migrate --phase 1",
                 s->cfg->policy.helper_schema);
        own_reject(c, TG_SQLSTATE_FEATURE_NOT_SUPPORTED, msg, -1, RW_RULE_FORM);
        record_violation(s, -1, RW_RULE_FORM, TG_SQLSTATE_FEATURE_NOT_SUPPORTED, NULL, false);
        *out_len = sizeof(own_reject_sql) - 1;
        return own_reject_sql;
    }
    if (stale_execute(s, d, &stale_name)) {
        char msg[256];
        snprintf(msg, sizeof(msg),
                 "tenantguard: prepared statement \"%.64s\" was prepared under another enforcement "
                 "policy or search_path and would now be rewritten; prepare it again", stale_name);
        own_reject(c, TG_SQLSTATE_FEATURE_NOT_SUPPORTED, msg, -1, RW_RULE_STALE_PREPARED);
        record_violation(s, -1, RW_RULE_STALE_PREPARED, TG_SQLSTATE_FEATURE_NOT_SUPPORTED, NULL, false);
        *out_len = sizeof(own_reject_sql) - 1;
        return own_reject_sql;
    }
    /* A statement that calls the helpers may be rejected by them at run
     * time: keep its text for the violation's fingerprint. A named Parse
     * keeps it too, to be decided again after a policy change. */
    if (d->action == RW_REPLACE || (proto == RW_PROTO_EXTENDED && named) ||
        has_effect(d, RW_FX_PREPARE))
        c->text = strndup(text, len);
    if (d->action == RW_REPLACE) {
        /* A pinned name depends on the search_path it was decided under: a
         * statement prepared with one is decided again, like one sent as
         * is, when the path changes (prepared_is_stale). */
        c->rewritten = !(d->flags & RW_F_PINNED);
        *out_len = d->len;
        return d->text;
    }
    *out_len = len;
    return NULL;
}

static int relay_query(tg_session *s, const pgf_header *h, const uint8_t *msg, pgf_builder *b)
{
    size_t tlen;
    /* Decided into a context on the stack: most statements (reads, anything
     * pre-filtered) need nothing remembered, and then no slot context is
     * allocated at all. */
    track_ctx local = {.kind = PG_FE_QUERY, .reject_table = -1};
    const char *text = query_text(msg + 5, h->len - 4, &tlen);
    const char *send = text ? decide(s, &local, RW_PROTO_SIMPLE, text, tlen, false, &tlen) : NULL;
    track_ctx *c = NULL;
    if (!send && !local.reject && !local.text && (!local.has_decision || local.d.n_effects == 0)) {
        if (local.has_decision)
            rw_decision_release(&local.d);
    } else {
        c = malloc(sizeof(*c));
        if (!c) {
            if (local.has_decision)
                rw_decision_release(&local.d);
            free(local.reject_message);
            free(local.text);
            sess_fatal(s, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory", NULL);
            return -1;
        }
        *c = local;
        if (c->has_decision)
            mark_pending(s, c, c->d.effects, c->d.n_effects);
    }
    if (!send)
        return push(s, PG_FE_QUERY, false, c) != 0 ? -1 : 0;
    /* Built before the push: once pushed, the slot (and the decision's text
     * with it) belongs to the FIFO. */
    pgf_begin(b, PG_FE_QUERY);
    pgf_put_bytes(b, send, tlen);
    pgf_put_u8(b, 0);
    if (push(s, PG_FE_QUERY, false, c) != 0) {
        pgf_abort(b);
        return -1;
    }
    return 1;
}

static int relay_parse(tg_session *s, const pgf_header *h, const uint8_t *msg, pgf_builder *b)
{
    size_t tlen;
    track_ctx *c = stmtctx_new(PG_FE_PARSE);
    if (!c) {
        sess_fatal(s, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory", NULL);
        return -1;
    }
    pgf_reader r = pgf_reader_init(msg + 5, h->len - 4);
    const char *name = pgf_get_str(&r);
    const char *text = pgf_get_str(&r);
    const uint8_t *params = r.p;   /* int16 count + oids: relayed as they are */
    size_t params_len = r.left;
    const char *send = NULL;
    if (!r.bad) {
        send = decide(s, c, RW_PROTO_EXTENDED, text, strlen(text), name[0] != '\0', &tlen);
        if (!c->text && !c->reject)
            c->text = strdup(text);   /* unnamed statements too: Bind may come after a reload */
        /* The statement exists for what follows it in client order: a Bind
         * and Execute pipelined behind this Parse must see it (its effects:
         * SET through the extended protocol) before ParseComplete returns.
         * Its answer makes it final, or drops it (sessenv_stmt_op_end). */
        if (!c->reject) {
            rw_effect *fx = sessenv_effects_copy(c->d.effects, c->d.n_effects);
            if (fx || c->d.n_effects <= 0)   /* it owns text and fx, also when it fails */
                c->op = sessenv_parse_sent(&s->env, name, c->text, c->rewritten, c->generation, c->env_hash, fx,
                                           c->d.n_effects > 0 ? c->d.n_effects : 0);
            else
                free(c->text);
            c->op_env = &s->env;
            c->text = NULL;   /* the statement owns it; Execute copies it for fingerprints */
            if (!c->op) {
                stmtctx_release(c);
                sess_fatal(s, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory", NULL);
                return -1;
            }
        }
    }
    if (!send)
        return push(s, PG_FE_PARSE, false, c) != 0 ? -1 : 0;
    pgf_begin(b, PG_FE_PARSE);
    pgf_put_str(b, name);
    pgf_put_bytes(b, send, tlen);
    pgf_put_u8(b, 0);
    pgf_put_bytes(b, params, params_len);
    if (push(s, PG_FE_PARSE, false, c) != 0) {
        pgf_abort(b);
        return -1;
    }
    return 1;
}

int relay_statement(tg_session *s, const pgf_header *h, const uint8_t *msg, pgf_builder *b)
{
    return h->type == PG_FE_QUERY ? relay_query(s, h, msg, b) : relay_parse(s, h, msg, b);
}

/* ---------------------------------------------------------------- Bind / Execute / Close */

/* The names a Bind, Execute or Close carries (after `skip` bytes: Close's
 * 'S'/'P'), as PostgreSQL keys them: their first PG_NAME_MAX bytes, into
 * buffers of PG_NAME_MAX + 1. Returns 0; 1 when a name runs past what is
 * buffered (read the message whole first: max_packet_size bounds it); -1
 * when the message is malformed (the server will say so). */
static int peek_names(struct evbuffer *in, const uint8_t *view, size_t view_len, const pgf_header *h, size_t skip,
                      char *a, char *b)
{
    size_t wire = pgf_wire_len(h), n = wire < RELAY_NAMES_PEEK ? wire : RELAY_NAMES_PEEK;
    uint8_t head[RELAY_NAMES_PEEK];
    const uint8_t *p = head, *end1, *end2;
    if (n < 5 + skip + 1)
        return -1;
    if (view && view_len >= n)
        p = view;   /* read in place: the buffer's first chain holds it */
    else if (!in)
        return 2;   /* not all in the view: the caller reads it from the head */
    else if (evbuffer_copyout(in, head, n) != (ssize_t)n)
        return -1;
    for (;;) {
        const uint8_t *start = p + 5 + skip, *lim = p + n;
        end1 = memchr(start, 0, (size_t)(lim - start));
        end2 = !end1 || !b ? end1 : memchr(end1 + 1, 0, (size_t)(lim - end1 - 1));
        if (end1 && end2)
            break;
        if (n == wire)
            return -1;
        if (!in)
            return 2;   /* a long name: the caller reads it from the head */
        if (evbuffer_get_length(in) < wire)
            return 1;
        if (!(p = evbuffer_pullup(in, (ssize_t)wire)))
            return -1;
        n = wire;
    }
    size_t la = (size_t)(end1 - (p + 5 + skip));
    la = la < PG_NAME_MAX ? la : PG_NAME_MAX;
    memcpy(a, p + 5 + skip, la);
    a[la] = '\0';
    if (b) {
        size_t lb = (size_t)(end2 - end1 - 1);
        lb = lb < PG_NAME_MAX ? lb : PG_NAME_MAX;
        memcpy(b, end1 + 1, lb);
        b[lb] = '\0';
    }
    return 0;
}

/* Bind: remember which statement the portal runs; refuse a statement that
 * was prepared before enforcement and writes a watched table. */
int relay_bind(tg_session *s, const pgf_header *h, struct evbuffer *in, const uint8_t *view, size_t view_len,
               struct evbuffer *out, bool *sent)
{
    char portal[PG_NAME_MAX + 1], stmt[PG_NAME_MAX + 1];
    *sent = false;
    int rc = peek_names(in, view, view_len, h, 0, portal, stmt);
    if (rc != 0)
        return rc > 0 ? rc : 0;   /* wait for the rest; malformed: the server will say so */
    sessenv_prepared *p = sessenv_prepared_find(&s->env, false, stmt);
    if (!sessenv_portal_bind(&s->env, portal, stmt, p))
        return -1;
    if (!p || !prepared_is_stale(s, p))
        return 0;
    if (!in)
        return 2;   /* it is replaced: again from the head, with what precedes it sent */
    track_ctx *c = stmtctx_new(PG_FE_BIND);
    if (!c) {
        sess_fatal(s, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory", NULL);
        return -1;
    }
    char msg[256];
    snprintf(msg, sizeof(msg),
             "tenantguard: prepared statement \"%.64s\" was prepared under another enforcement "
             "policy or search_path and would now be rewritten; prepare it again", stmt);
    own_reject(c, TG_SQLSTATE_FEATURE_NOT_SUPPORTED, msg, -1, RW_RULE_STALE_PREPARED);
    record_violation(s, -1, RW_RULE_STALE_PREPARED, TG_SQLSTATE_FEATURE_NOT_SUPPORTED, NULL, false);
    if (push(s, PG_FE_BIND, false, c) != 0)
        return -1;
    /* A Bind of a statement that does not exist fails at once (26000) with
     * the name -- our marker -- in its message. */
    pgf_builder b;
    pgf_begin(&b, PG_FE_BIND);
    pgf_put_str(&b, portal);
    pgf_put_str(&b, OWN_MARKER);
    pgf_put_u16(&b, 0);
    pgf_put_u16(&b, 0);
    pgf_put_u16(&b, 0);
    s->cl.bytes_in += pgf_wire_len(h);
    s->cl.stream_left = (uint32_t)pgf_wire_len(h);   /* drop the client's Bind as it arrives */
    s->cl.stream_drop = true;
    *sent = true;
    return pgf_finish(&b, out) == 0 ? 0 : -1;
}

/* Execute: the effects of the portal's statement apply when it completes. */
int relay_execute(tg_session *s, const pgf_header *h, struct evbuffer *in, const uint8_t *view, size_t view_len,
                  track_ctx **ctx)
{
    char portal[PG_NAME_MAX + 1];
    *ctx = NULL;
    int rc = peek_names(in, view, view_len, h, 0, portal, NULL);
    if (rc != 0)
        return rc > 0 ? rc : 0;
    /* What the portal runs was taken at its Bind. A portal we know nothing
     * of (bound to a statement we did not know, forgotten, a cursor) may do
     * anything: once it has run, the search_path is unknown. */
    const sessenv_portal *p = sessenv_portal_find(&s->env, portal);
    static const rw_effect unknown_fx = {.kind = RW_FX_PATH_UNKNOWN};
    bool known = p && p->known;
    if (known && !p->n_effects && !p->rewritten)
        return 0;
    track_ctx *c = stmtctx_new(PG_FE_EXECUTE);
    if (!c)
        return -1;
    c->n_effects = known ? p->n_effects : 1;
    c->effects = sessenv_effects_copy(known ? p->effects : &unknown_fx, c->n_effects);
    if (c->n_effects && !c->effects) {
        stmtctx_release(c);
        return -1;
    }
    /* the helpers may reject it at run time: its text names the violation */
    if (known && p->rewritten && p->text && !(c->text = strdup(p->text))) {
        stmtctx_release(c);
        return -1;
    }
    mark_pending(s, c, c->effects, c->n_effects);
    *ctx = c;
    return 0;
}

/* Close of a statement: forget it once the server confirms. */
int relay_close(tg_session *s, const pgf_header *h, struct evbuffer *in, const uint8_t *view, size_t view_len,
                track_ctx **ctx)
{
    uint8_t head[6];
    char name[PG_NAME_MAX + 1];
    *ctx = NULL;
    if (view && view_len >= 6)
        memcpy(head, view, 6);
    else if (!in || evbuffer_copyout(in, head, 6) != 6)
        return in ? 0 : 2;
    if (head[5] != 'S')
        return 0;
    int rc = peek_names(in, view, view_len, h, 1, name, NULL);
    if (rc != 0)
        return rc > 0 ? rc : 0;
    track_ctx *c = stmtctx_new(PG_FE_CLOSE);
    if (!c)
        return -1;
    c->op = sessenv_close_sent(&s->env, name);
    c->op_env = &s->env;
    if (!c->op) {
        stmtctx_release(c);
        return -1;
    }
    *ctx = c;
    return 0;
}
