/*
 * responses.c -- server messages the proxy reads on their way to the client.
 *
 * Each is paired with the request it answers through the FIFO head:
 *   ParseComplete    the statement exists: remember what it writes
 *   CloseComplete    a statement is gone
 *   CommandComplete  a statement ran: apply its session effects
 *   ErrorResponse    replace a marker error by the rejection it stands for;
 *                    count violations the helper functions raised
 *   ReadyForQuery    a transaction may have ended: commit or undo effects
 *   ParameterStatus  standard_conforming_strings, client_encoding
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "policy/sqlstate.h"
#include "proxy/pgproto.h"
#include "proxy/probe.h"
#include "proxy/relay.h"
#include "proxy/runtime.h"
#include "proxy/stmtctx.h"
#include "proxy/track.h"
#include "proxy/vaudit.h"

/* ---------------------------------------------------------------- errors */

/* 42501 / 0A000 raised by tenantguard's helper functions carry the constraint
 * name tenantguard_r2 .. r6 / tenantguard_layout and the table label. */
static bool from_helpers(const pgf_error_fields *f)
{
    return f->constraint && strncmp(f->constraint, "tenantguard_", 12) == 0;
}

static void count_server_violation(tg_session *s, const pgf_error_fields *f, track_ctx *c)
{
    if (!from_helpers(f))
        return;
    tg_runtime *rt = s->rt;
    const char *rule = f->constraint + 12;
    int rule_id = RW_RULE_NONE;
    if (rule[0] == 'r' && rule[1] >= '1' && rule[1] <= '6' && !rule[2])
        rule_id = RW_R1_DERIVE + (rule[1] - '1');
    else if (strcmp(rule, "layout") == 0) {
        rule_id = RW_RULE_FORM;
        probe_cache_forget(rt, s->cl.database);   /* the next sessions look again */
    }
    int table = -1;
    const tg_policy *p = &s->rt->cfg->policy;   /* the policy in force, as the decision's */
    for (int i = 0; f->table && i < p->n_tables; i++) {
        char label[140];
        snprintf(label, sizeof(label), "%s.%s", p->tables[i].schema, p->tables[i].name);
        if (strcmp(f->table, p->tables[i].name) == 0 || strcmp(f->table, label) == 0) {
            table = i;
            break;
        }
    }
    rt->stats->server_rejections++;
    tg_stats_count(rt->stats, table, rule_id,
                   rule_id == RW_RULE_FORM ? RW_EV_REFUSED : RW_EV_REJECTED);
    tg_violation v;
    memset(&v, 0, sizeof(v));
    v.at = time(NULL);
    v.session_id = s->id;
    snprintf(v.client, sizeof(v.client), "%s@%s %s", s->cl.user, s->cl.database, s->cl.peer);
    if (table >= 0)
        snprintf(v.table, sizeof(v.table), "%s.%s", p->tables[table].schema, p->tables[table].name);
    snprintf(v.rule, sizeof(v.rule), "%s", rw_rule_name((rw_rule)rule_id));
    snprintf(v.sqlstate, sizeof(v.sqlstate), "%s", f->code ? f->code : "");
    snprintf(v.mode, sizeof(v.mode), "enforce");
    if (c && c->text)
        rw_fingerprint(c->text, v.fingerprint);
    tg_stats_violation(rt->stats, &v);
    vaudit_violation(s, &v, f->message);
    tg_clog(TG_LOG_INFO, &s->log, "rejected: %s %s on %s (statement %s)", v.sqlstate, v.rule,
            v.table[0] ? v.table : "-", v.fingerprint[0] ? v.fingerprint : "?");
}

/* The server's error for a statement we replaced by a marker: the client
 * gets the rejection instead, as an ERROR (the server's severity). */
static bool substitute_error(tg_session *s, const pgf_error_fields *f, track_ctx *c, struct evbuffer *out)
{
    if (!c || !c->reject || !f->message || !c->reject_marker || !strstr(f->message, c->reject_marker))
        return false;
    pgf_error(out, f->severity ? f->severity : "ERROR", c->reject_sqlstate,
              c->reject_message ? c->reject_message : "tenantguard: statement refused", NULL);
    c->reject = false;   /* one substitution per request */
    (void)s;
    return true;
}

/* A type mistake in the client's text that the server met first inside our
 * helper calls (42883 naming them): the words the server gives for the
 * client's own text (42804), see rw_errmap.c. */
static bool map_type_error(tg_session *s, const pgf_error_fields *f, track_ctx *c, struct evbuffer *out)
{
    if (!c || !c->has_decision || c->d.action != RW_REPLACE || !f->code || strcmp(f->code, "42883") != 0)
        return false;
    char msg[512];
    if (!rw_map_helper_error(s->rt->rw, c->d.text, f->message, f->position ? atoi(f->position) : 0, msg,
                             sizeof(msg)))
        return false;
    pgf_error(out, f->severity ? f->severity : "ERROR", "42804", msg,
              "You will need to rewrite or cast the expression.");
    return true;
}

/* ---------------------------------------------------------------- effects */

/* A completed SQL EXECUTE does what its statement does (the effects its
 * PREPARE deferred); a statement we do not know may do anything. */
static void apply_execute(tg_session *s, const char *name)
{
    const sessenv_prepared *p = name ? sessenv_prepared_find(&s->env, true, name) : NULL;
    if (!p) {
        sessenv_apply(&s->env, &(rw_effect){.kind = RW_FX_PATH_UNKNOWN});
        return;
    }
    for (int i = 0; i < p->n_effects; i++)
        if (p->effects[i].kind != RW_FX_EXECUTE)   /* an EXECUTE cannot nest */
            sessenv_apply(&s->env, &p->effects[i]);
}

/* The effects a PREPARE deferred: those of statement `stmt` before fx[upto]
 * (copied, no longer deferred). NULL with *n > 0 out of memory. */
static rw_effect *deferred_effects(const rw_effect *fx, int upto, int stmt, int *n)
{
    *n = 0;
    for (int k = 0; k < upto; k++)
        *n += fx[k].deferred && fx[k].stmt == stmt;
    rw_effect *out = *n ? calloc((size_t)*n, sizeof(*out)) : NULL;
    for (int k = 0, got = 0; out && k < upto; k++) {
        if (!fx[k].deferred || fx[k].stmt != stmt)
            continue;
        rw_effect *one = sessenv_effects_copy(&fx[k], 1);
        if (!one) {
            stmtctx_free_effects(out, got);
            return NULL;
        }
        out[got] = *one;
        out[got++].deferred = false;
        free(one);
    }
    return out;
}

static void apply_effects(tg_session *s, track_ctx *c, const rw_effect *fx, int n, int stmt, bool any_stmt)
{
    for (int i = 0; i < n; i++) {
        if (!any_stmt && fx[i].stmt != stmt)
            continue;
        if (fx[i].deferred)
            continue;   /* a PREPARE's inner query: kept with the statement below */
        if (fx[i].kind == RW_FX_PREPARE && fx[i].arg) {
            /* SQL PREPARE: its statement is decided again, from the whole
             * Query text, if the policy changes before EXECUTE; what its
             * query does to the session happens at each EXECUTE. */
            int nd = 0;
            rw_effect *dfx = deferred_effects(fx, i, fx[i].stmt, &nd);
            if (nd && !dfx)
                continue;   /* out of memory: unknown, so its EXECUTE leaves the path unknown */
            /* "Carries the checks" only when the PREPARE is all the text:
             * in a longer one the rewrite may be another statement's. */
            bool checked = c->rewritten && c->has_decision && c->d.n_statements <= 1;
            sessenv_prepared_add(&s->env, true, fx[i].arg, c->text ? strdup(c->text) : NULL, checked,
                                 c->generation, c->env_hash, dfx, nd);
        } else if (fx[i].kind == RW_FX_EXECUTE) {
            apply_execute(s, fx[i].arg);
        } else {
            sessenv_apply(&s->env, &fx[i]);
        }
    }
}

static void on_command_complete(tg_session *s, const uint8_t *payload, size_t len)
{
    track_slot *slot = track_head(s->track);
    size_t n = strnlen((const char *)payload, len);
    if (n >= sizeof(s->last_tag))
        n = sizeof(s->last_tag) - 1;
    memcpy(s->last_tag, payload, n);   /* once per statement: no snprintf */
    s->last_tag[n] = '\0';
    if (slot && slot->ctx) {
        track_ctx *c = slot->ctx;
        if (slot->kind == PG_FE_QUERY && c->has_decision)
            apply_effects(s, c, c->d.effects, c->d.n_effects, slot->completes, false);
        else if (slot->kind == PG_FE_EXECUTE)
            apply_effects(s, c, c->effects, c->n_effects, 0, true);
    }
    /* After the statement's own effects: a COMMIT or ROLLBACK ends the
     * transaction here, also AND CHAIN and inside a multi-statement Query. */
    sessenv_command_tag(&s->env, s->last_tag);
}

/* An Execute with a row limit stopped with PortalSuspended: the rows it
 * returned have run, and with them what the statement does to the session
 * (a set_config in its target list). Applied now; again, harmlessly, by
 * each later Execute of the portal. */
static void on_portal_suspended(tg_session *s)
{
    track_slot *slot = track_head(s->track);
    if (slot && slot->kind == PG_FE_EXECUTE && slot->ctx)
        apply_effects(s, slot->ctx, slot->ctx->effects, slot->ctx->n_effects, 0, true);
}

/* ParseComplete / CloseComplete / an error: the pending change to the
 * session's statements that the head request made is final or dropped. */
static void end_stmt_op(tg_session *s, char kind, sessenv_op_end how)
{
    track_slot *slot = track_head(s->track);
    if (slot && slot->kind == kind && slot->ctx && slot->ctx->op) {
        sessenv_stmt_op_end(&s->env, slot->ctx->op, how);
        slot->ctx->op = NULL;
    }
}

static void on_parameter_status(tg_session *s, const uint8_t *payload, size_t len)
{
    pgf_reader r = pgf_reader_init(payload, len);
    const char *name = pgf_get_str(&r), *value = pgf_get_str(&r);
    if (r.bad)
        return;
    if (strcmp(name, "standard_conforming_strings") == 0)
        sessenv_std_strings(&s->env, strcmp(value, "on") == 0);
    else if (strcmp(name, "client_encoding") == 0)
        sessenv_client_encoding(&s->env, value);
}

/* ---------------------------------------------------------------- entry */

bool relay_server_inspect(tg_session *s, const pgf_header *h, const uint8_t *payload, struct evbuffer *out)
{
    size_t plen = h->len - 4;
    bool replaced = false;

    switch (h->type) {
    case PG_BE_READY:
        if (plen >= 1)
            s->sv.txn_status = (char)payload[0];
        sessenv_ready(&s->env, s->sv.txn_status, s->request_failed);
        s->request_failed = false;
        s->last_tag[0] = '\0';
        break;
    case PG_BE_COMMAND_COMPLETE:
        on_command_complete(s, payload, plen);
        break;
    case PG_BE_PORTAL_SUSPENDED:
        on_portal_suspended(s);
        break;
    case PG_BE_PARSE_COMPLETE:
        end_stmt_op(s, PG_FE_PARSE, SESSENV_OP_DONE);
        break;
    case PG_BE_CLOSE_COMPLETE:
        end_stmt_op(s, PG_FE_CLOSE, SESSENV_OP_DONE);
        break;
    case PG_BE_PARAM_STATUS:
        on_parameter_status(s, payload, plen);
        break;
    case PG_BE_ERROR: {
        pgf_error_fields f;
        s->request_failed = true;
        if (!pgf_parse_error(payload, plen, &f))
            break;
        if (f.severity && (strcmp(f.severity, "FATAL") == 0 || strcmp(f.severity, "PANIC") == 0))
            s->sv.said_fatal = true;
        track_slot *slot = track_head(s->track);
        track_ctx *c = slot ? slot->ctx : NULL;
        if (slot && (slot->kind == PG_FE_PARSE || slot->kind == PG_FE_CLOSE))
            end_stmt_op(s, slot->kind, SESSENV_OP_FAILED);
        replaced = out && (substitute_error(s, &f, c, out) || map_type_error(s, &f, c, out));
        if (!replaced)
            count_server_violation(s, &f, c);
        /* A helper's rejection reaches the client as the rule's own error:
         * without the CONTEXT line naming tenantguard's PL/pgSQL function
         * ("PL/pgSQL function tenantguard.ws_verify(...) line 23 at RAISE")
         * and the server's source location, which drivers print in their
         * exception texts (PDO, node-postgres's err.where). Out of memory,
         * the server's message goes as it came. */
        if (!replaced && out && from_helpers(&f))
            replaced = pgf_error_without(out, PG_BE_ERROR, payload, plen, "WFLR") == 0;
        break;
    }
    default:
        break;
    }
    track_server_msg(s->track, h->type);
    if (h->type == PG_BE_READY && track_pending(s->track) == 0) {
        s->idle_since = time(NULL);
        if (s->busy_since_us) {
            tg_stats_latency(s->rt->stats, mono_us() - s->busy_since_us);
            s->busy_since_us = 0;
        }
    }
    return replaced;
}

int relay_server_message(tg_session *s, const pgf_header *h, struct evbuffer *in, struct evbuffer *out)
{
    size_t wire = pgf_wire_len(h);
    const uint8_t *msg = evbuffer_pullup(in, (ssize_t)wire);
    if (!msg) {
        sess_fatal(s, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory", NULL);
        return -1;
    }
    bool replaced = relay_server_inspect(s, h, msg + 5, out);
    s->sv.bytes_in += wire;
    if (replaced) {
        evbuffer_drain(in, wire);
        return 0;
    }
    s->cl.bytes_out += wire;
    evbuffer_remove_buffer(in, out, wire);
    return 0;
}
