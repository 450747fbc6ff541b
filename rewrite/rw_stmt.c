/*
 * rw_stmt.c -- one parsed statement: find every write to a watched table in
 * it (top level, writable CTEs at any depth, EXPLAIN ANALYZE, PREPARE, COPY),
 * and every session effect the proxy must track (search_path, role, temp
 * tables, prepared statements, savepoints).
 *
 * Statement types fall in four groups:
 *   - queries (SELECT/INSERT/UPDATE/DELETE/MERGE): walked whole;
 *   - statements with a query inside (EXPLAIN ANALYZE, PREPARE, COPY (query),
 *     CREATE TABLE AS, DECLARE CURSOR): the query is decided as one;
 *   - utility statements that cannot write rows of a table: passed as sent,
 *     except the few that would let a write escape us (renaming a watched
 *     table or its schema, changing the type of its tenant/workspace column
 *     with a USING expression, COPY FROM into it);
 *   - bodies we cannot see into (DO, functions, triggers, rules, views):
 *     passed, with an RW_RULE_BEYOND_SIGHT event when they name a watched
 *     table, so observe mode counts them.
 * Anything else, and any node type the walker does not know, is refused in
 * enforce mode when the statement text could name a watched table.
 */
#include "rewrite/rw_pg.h"

#include "utils/builtins.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---------------------------------------------------------------- records */

void rw_event_add(rw_ctx *c, int table, rw_rule rule, rw_event_kind kind)
{
    if (c->nev == c->capev) {
        int cap = c->capev ? c->capev * 2 : 8;
        rw_event *n = rw_alloc(&c->a, sizeof(*n) * (size_t)cap);
        if (!n)
            return;
        if (c->nev)
            memcpy(n, c->ev, sizeof(*n) * (size_t)c->nev);
        c->ev = n;
        c->capev = cap;
    }
    c->ev[c->nev++] = (rw_event){(int16_t)table, (uint8_t)rule, (uint8_t)kind};
}

void rw_effect_add(rw_ctx *c, rw_effect_kind kind, const char *arg, bool writes, bool local)
{
    if (c->nfx == c->capfx) {
        int cap = c->capfx ? c->capfx * 2 : 4;
        rw_effect *n = rw_alloc(&c->a, sizeof(*n) * (size_t)cap);
        if (!n)
            return;
        if (c->nfx)
            memcpy(n, c->fx, sizeof(*n) * (size_t)c->nfx);
        c->fx = n;
        c->capfx = cap;
    }
    /* Inside a PREPARE the query only runs at EXECUTE: its effects are
     * deferred. Past statement 65535 everything is "path unknown", applied
     * at once -- never deferred, which would make the proxy laxer. */
    bool deferred = c->prepare_depth > 0;
    if (c->stmt_no > UINT16_MAX) {
        kind = RW_FX_PATH_UNKNOWN;
        arg = NULL;
        deferred = false;
    }
    c->fx[c->nfx++] = (rw_effect){
        .kind = (uint8_t)kind,
        .stmt = (uint16_t)(c->stmt_no > UINT16_MAX ? UINT16_MAX : c->stmt_no),
        .writes_watched = writes,
        .local = local,
        .deferred = deferred,
        .arg = arg ? rw_strdup(&c->a, arg) : NULL,
    };
}

/* The tables this statement's text could name. */
static uint64_t stmt_mask(rw_ctx *c)
{
    rw_pf_result r = rw_prefilter_run(c->pol, c->text + c->stmt_start, (size_t)(c->stmt_end - c->stmt_start));
    return rw_pf_table_mask(c->pol, &r);
}

/* Refuse (0A000) a statement not tied to one write site, by the strictest
 * mode of the tables in `mask`. */
static void stmt_refuse(rw_ctx *c, uint64_t mask, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void stmt_refuse(rw_ctx *c, uint64_t mask, const char *fmt, ...)
{
    tg_mode mode = rw_mask_mode(c->pol, mask);
    if (mode == TG_MODE_OFF)
        return;
    rw_event_add(c, rw_mask_first(c->pol, mask), RW_RULE_FORM, RW_EV_REFUSED);
    if (mode == TG_MODE_OBSERVE) {
        c->observed = true;
        return;
    }
    if (c->stmt_reject)
        return;
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    c->stmt_reject = true;
    c->rej_sqlstate = "0A000";
    c->rej_message = rw_strdup(&c->a, msg);
}

static void beyond_sight(rw_ctx *c)
{
    uint64_t mask = stmt_mask(c);
    tg_mode mode = rw_mask_mode(c->pol, mask);
    if (!mask || mode == TG_MODE_OFF)
        return;
    rw_event_add(c, rw_mask_first(c->pol, mask), RW_RULE_BEYOND_SIGHT, RW_EV_PASSED);
    if (mode == TG_MODE_OBSERVE)
        c->observed = true;
}

static uint64_t table_bit(int t)
{
    return t < 0 ? 0 : 1ULL << (t < 63 ? t : 63);
}

/* -------------------------------------------------------------- set_config */

static const char *const_string(Node *n)
{
    if (n && IsA(n, A_Const) && !((A_Const *)n)->isnull && IsA(&((A_Const *)n)->val, String))
        return strVal(&((A_Const *)n)->val);
    return NULL;
}

/* 1 true, 0 false, -1 not a constant we can read. */
static int const_bool(Node *n)
{
    if (!n || !IsA(n, A_Const) || ((A_Const *)n)->isnull)
        return -1;
    A_Const *k = (A_Const *)n;
    if (IsA(&k->val, Boolean))
        return boolVal(&k->val) ? 1 : 0;
    if (IsA(&k->val, String)) {
        const char *s = strVal(&k->val);
        if (!strcasecmp(s, "true") || !strcasecmp(s, "t") || !strcasecmp(s, "on") || !strcasecmp(s, "yes") ||
            !strcasecmp(s, "1"))
            return 1;
        if (!strcasecmp(s, "false") || !strcasecmp(s, "f") || !strcasecmp(s, "off") || !strcasecmp(s, "no") ||
            !strcasecmp(s, "0"))
            return 0;
    }
    return -1;
}

typedef struct walk_state {
    List *simple_targets;     /* FuncCalls run exactly once (SELECT f(...) without FROM etc.) */
} walk_state;

static bool simple_target(walk_state *ws, FuncCall *f)
{
    ListCell *lc;
    foreach (lc, ws->simple_targets)
        if (lfirst(lc) == f)
            return true;
    return false;
}

static bool lexing_guc(const char *name)
{
    return !strcasecmp(name, "standard_conforming_strings") || !strcasecmp(name, "client_encoding");
}

static void set_config_call(rw_ctx *c, FuncCall *f, walk_state *ws)
{
    int nn = list_length(f->funcname);
    const char *fn = strVal(llast(f->funcname));
    if (strcmp(fn, "set_config") != 0 ||
        (nn == 2 && strcmp(strVal(linitial(f->funcname)), "pg_catalog") != 0) || nn > 2)
        return;
    /* Named or too few arguments, a non-constant name: could be anything. */
    const char *name = list_length(f->args) == 3 ? const_string(linitial(f->args)) : NULL;
    if (!name) {
        rw_effect_add(c, RW_FX_PATH_UNKNOWN, NULL, false, false);
        rw_effect_add(c, RW_FX_LEXING, NULL, false, false);
        return;
    }
    if (lexing_guc(name)) {
        rw_effect_add(c, RW_FX_LEXING, NULL, false, false);
        return;
    }
    if (!strcasecmp(name, "role") || !strcasecmp(name, "session_authorization")) {
        rw_effect_add(c, RW_FX_PATH_UNKNOWN, "role", false, false);
        return;
    }
    if (strcasecmp(name, "search_path") != 0)
        return;
    const char *value = const_string(lsecond(f->args));
    int local = const_bool(lthird(f->args));
    if (!value || local < 0 || !simple_target(ws, f)) {
        rw_effect_add(c, RW_FX_PATH_UNKNOWN, NULL, false, false);
        return;
    }
    rw_effect_add(c, local ? RW_FX_SET_LOCAL_PATH : RW_FX_SET_PATH, value, false, false);
}

/* UPDATE pg_settings SET setting = ... WHERE name = ... is set_config() by
 * another name (the view's rule calls it, is_local false): whatever it sets,
 * the path and the lexing settings may have changed. A relation of that name
 * in another schema could shadow the view only with pg_catalog listed late
 * in the path; it is taken as the view all the same, which errs on the safe
 * side. */
static void settings_update(rw_ctx *c, UpdateStmt *u)
{
    RangeVar *rv = u->relation;
    if (!rv || !rv->relname || strcmp(rv->relname, "pg_settings") != 0 ||
        (rv->schemaname && strcmp(rv->schemaname, "pg_catalog") != 0) || rv->catalogname)
        return;
    rw_effect_add(c, RW_FX_PATH_UNKNOWN, NULL, false, false);
    rw_effect_add(c, RW_FX_LEXING, NULL, false, false);
}

/* ------------------------------------------------------------- the walk */

static void temp_created(rw_ctx *c, RangeVar *rv, OnCommitAction oncommit)
{
    if (!rv || !rv->relname || !rw_name_watched(c->pol, rv->relname))
        return;
    bool temp = rv->relpersistence == 't' /* RELPERSISTENCE_TEMP */ ||
                (rv->schemaname && strcmp(rv->schemaname, "pg_temp") == 0);
    if (temp)
        rw_effect_add(c, RW_FX_CREATE_TEMP, rv->relname, false, oncommit == ONCOMMIT_DROP);
}

static rw_walk_result query_visit(rw_ctx *c, Node *n, void *arg)
{
    walk_state *ws = arg;
    switch (nodeTag(n)) {
    case T_InsertStmt:
        rw_dml_insert(c, (InsertStmt *)n);
        break;
    case T_UpdateStmt:
        settings_update(c, (UpdateStmt *)n);
        rw_dml_update(c, (UpdateStmt *)n);
        break;
    case T_DeleteStmt:
        rw_dml_delete(c, (DeleteStmt *)n);
        break;
    case T_MergeStmt:
        rw_dml_merge(c, (MergeStmt *)n);
        break;
    case T_SelectStmt: {
        SelectStmt *s = (SelectStmt *)n;
        if (s->intoClause)
            temp_created(c, s->intoClause->rel, s->intoClause->onCommit);
        break;
    }
    case T_FuncCall:
        set_config_call(c, (FuncCall *)n, ws);
        break;
    default:
        break;
    }
    return RW_WALK_CONTINUE;
}

static void walk_query(rw_ctx *c, Node *q)
{
    walk_state ws = {NIL};
    if (IsA(q, SelectStmt)) {
        SelectStmt *s = (SelectStmt *)q;
        if (s->op == SETOP_NONE && !s->fromClause && !s->whereClause && !s->groupClause && !s->havingClause &&
            !s->withClause && !s->valuesLists && !s->limitCount && !s->limitOffset && !s->intoClause) {
            ListCell *lc;
            foreach (lc, s->targetList) {
                ResTarget *rt = lfirst(lc);
                if (IsA(rt, ResTarget) && rt->val && IsA(rt->val, FuncCall))
                    ws.simple_targets = lappend(ws.simple_targets, rt->val);
            }
        }
    }
    rw_walk(c, q, query_visit, &ws);
}

/* ------------------------------------------------------------ utilities */

/* Does this EXPLAIN execute its statement? Any ANALYZE option that is not
 * clearly false counts as yes -- any of them: PostgreSQL takes the last of
 * EXPLAIN (ANALYZE false, ANALYZE true). */
static bool explain_analyze(ExplainStmt *e)
{
    ListCell *lc;
    foreach (lc, e->options) {
        DefElem *d = lfirst(lc);
        if (strcmp(d->defname, "analyze") != 0)
            continue;
        bool yes = true;
        if (d->arg && IsA(d->arg, String)) {
            const char *s = strVal(d->arg);
            yes = !(!strcasecmp(s, "false") || !strcasecmp(s, "off") || !strcasecmp(s, "no") || !strcmp(s, "0"));
        } else if (d->arg && IsA(d->arg, Integer)) {
            yes = intVal(d->arg) != 0;
        } else if (d->arg && IsA(d->arg, Boolean)) {
            yes = boolVal(d->arg);
        }
        if (yes)
            return true;
    }
    return false;
}

/* ALTER TABLE / INDEX / VIEW / SEQUENCE / MATERIALIZED VIEW / FOREIGN TABLE
 * ... RENAME or SET SCHEMA: PostgreSQL lets several of these act on a table
 * (ALTER INDEX policies RENAME TO x renames the table). */
static bool relation_object(ObjectType t)
{
    return t == OBJECT_TABLE || t == OBJECT_INDEX || t == OBJECT_VIEW || t == OBJECT_MATVIEW ||
           t == OBJECT_SEQUENCE || t == OBJECT_FOREIGN_TABLE;
}

static void set_stmt(rw_ctx *c, VariableSetStmt *v)
{
    const char *name = v->name ? v->name : "";
    if (lexing_guc(name) || v->kind == VAR_RESET_ALL)
        rw_effect_add(c, RW_FX_LEXING, NULL, false, false);
    bool path = strcmp(name, "search_path") == 0;
    bool who = strcmp(name, "role") == 0 || strcmp(name, "session_authorization") == 0;
    switch (v->kind) {
    case VAR_SET_VALUE: {
        if (who) {
            rw_effect_add(c, RW_FX_PATH_UNKNOWN, "role", false, false);
            return;
        }
        if (!path)
            return;
        /* As the server flattens a list GUC: each item quoted when needed. */
        rw_buf b;
        rw_buf_init(&b, &c->a);
        ListCell *lc;
        foreach (lc, v->args) {
            const char *s = const_string(lfirst(lc));
            if (!s) {
                rw_effect_add(c, RW_FX_PATH_UNKNOWN, NULL, false, false);
                return;
            }
            if (b.len)
                rw_buf_str(&b, ", ");
            rw_buf_str(&b, quote_identifier(s));
        }
        rw_effect_add(c, v->is_local ? RW_FX_SET_LOCAL_PATH : RW_FX_SET_PATH, rw_buf_cstr(&b), false, false);
        return;
    }
    case VAR_SET_DEFAULT:
    case VAR_RESET:
        if (path)
            rw_effect_add(c, RW_FX_RESET_PATH, NULL, false, v->is_local);
        else if (who)
            rw_effect_add(c, RW_FX_PATH_UNKNOWN, "role", false, false);
        return;
    case VAR_SET_CURRENT:
        if (path || who)
            rw_effect_add(c, RW_FX_PATH_UNKNOWN, who ? "role" : NULL, false, false);
        return;
    case VAR_RESET_ALL:
        rw_effect_add(c, RW_FX_RESET_PATH, NULL, false, false);
        return;
    case VAR_SET_MULTI:
        return;
    }
}

static void drop_stmt(rw_ctx *c, DropStmt *d)
{
    if (d->removeType != OBJECT_TABLE)
        return;
    ListCell *lc;
    foreach (lc, d->objects) {
        List *names = lfirst(lc);
        const char *rel = strVal(llast(names));
        if (!rw_name_watched(c->pol, rel))
            continue;
        if (list_length(names) == 1) {
            rw_effect_add(c, RW_FX_DROP_REL, rel, false, false);
        } else if (list_length(names) == 2 && strcmp(strVal(linitial(names)), "pg_temp") == 0) {
            char buf[160];
            snprintf(buf, sizeof(buf), "pg_temp.%s", rel);
            rw_effect_add(c, RW_FX_DROP_REL, buf, false, false);
        }
    }
}

/* DDL on a name: the watched table it means, or -1. A name that means a
 * shadow is pinned to it, as a write's is: ALTER TABLE policies RENAME on a
 * path where policies is other.policies must not rename the watched table
 * should the server's path have moved unseen. */
static int watched_rel(rw_ctx *c, RangeVar *rv)
{
    const char *pin;
    int t = rv ? rw_resolve(c->pol, c->env, rv->schemaname, rv->relname, &pin) : -1;
    if (rv && pin)
        rw_pin_name(c, rv, pin);
    return t;
}

static void rename_stmt(rw_ctx *c, RenameStmt *r)
{
    if (r->renameType == OBJECT_SCHEMA) {
        if (r->subname && rw_schema_watched(c->pol, r->subname)) {
            uint64_t mask = 0;
            for (int i = 0; i < c->pol->n_tables; i++)
                if (strcmp(c->pol->tables[i].schema, r->subname) == 0)
                    mask |= table_bit(i);
            stmt_refuse(c, mask, "tenantguard: renaming schema %s, which holds watched tables, is refused in "
                                 "enforce mode", r->subname);
        }
        return;
    }
    int t = watched_rel(c, r->relation);
    if (t < 0)
        return;
    const rw_table *tb = &c->pol->tables[t];
    if (relation_object(r->renameType))
        stmt_refuse(c, table_bit(t), "tenantguard: renaming the watched table %s is refused in enforce mode",
                    tb->label);
    else if (r->renameType == OBJECT_COLUMN && r->subname &&
             (strcmp(r->subname, tb->tcol) == 0 || strcmp(r->subname, tb->wcol) == 0))
        stmt_refuse(c, table_bit(t), "tenantguard: renaming column %s of the watched table %s is refused in "
                                     "enforce mode", r->subname, tb->label);
}

static void alter_table(rw_ctx *c, AlterTableStmt *a)
{
    int t = watched_rel(c, a->relation);
    if (t < 0)
        return;
    const rw_table *tb = &c->pol->tables[t];
    ListCell *lc;
    foreach (lc, a->cmds) {
        AlterTableCmd *cmd = lfirst(lc);
        if (IsA(cmd, AlterTableCmd) && cmd->subtype == AT_AlterColumnType && cmd->name &&
            (strcmp(cmd->name, tb->tcol) == 0 || strcmp(cmd->name, tb->wcol) == 0)) {
            /* ALTER COLUMN ... TYPE ... USING expr rewrites every row's value. */
            stmt_refuse(c, table_bit(t), "tenantguard: changing the type of %s.%s is refused in enforce mode "
                                         "(USING would rewrite it unchecked)", tb->label, cmd->name);
            return;
        }
    }
}

static void copy_stmt(rw_ctx *c, CopyStmt *cp)
{
    if (cp->query) {
        rw_stmt(c, cp->query);
        return;
    }
    if (!cp->is_from)
        return;
    rw_site s;
    if (!rw_site_begin(c, &s, cp->relation))
        return;
    rw_site_refuse(&s, "tenantguard: COPY ... FROM into %s is refused in enforce mode; use INSERT (or the "
                       "backfill path for bulk loads)", s.t->label);
    rw_site_end(&s);
}

static void transaction_stmt(rw_ctx *c, TransactionStmt *t)
{
    switch (t->kind) {
    case TRANS_STMT_SAVEPOINT:
        rw_effect_add(c, RW_FX_SAVEPOINT, t->savepoint_name, false, false);
        break;
    case TRANS_STMT_RELEASE:
        rw_effect_add(c, RW_FX_RELEASE, t->savepoint_name, false, false);
        break;
    case TRANS_STMT_ROLLBACK_TO:
        rw_effect_add(c, RW_FX_ROLLBACK_TO, t->savepoint_name, false, false);
        break;
    default:
        break;
    }
}

/* Statements that cannot write rows of an existing table. */
static bool harmless_utility(NodeTag tag)
{
    switch (tag) {
    case T_AlterDomainStmt: case T_GrantStmt: case T_GrantRoleStmt: case T_AlterDefaultPrivilegesStmt:
    case T_ClosePortalStmt: case T_ClusterStmt: case T_DefineStmt: case T_TruncateStmt: case T_CommentStmt:
    case T_FetchStmt: case T_IndexStmt: case T_AlterFunctionStmt: case T_NotifyStmt: case T_ListenStmt:
    case T_UnlistenStmt: case T_LoadStmt: case T_CreateDomainStmt: case T_CreatedbStmt: case T_DropdbStmt:
    case T_VacuumStmt: case T_CreateSeqStmt: case T_AlterSeqStmt: case T_VariableShowStmt:
    case T_CreatePLangStmt: case T_CreateRoleStmt: case T_AlterRoleStmt: case T_DropRoleStmt: case T_LockStmt:
    case T_ConstraintsSetStmt: case T_ReindexStmt: case T_CheckPointStmt: case T_AlterDatabaseStmt:
    case T_AlterDatabaseRefreshCollStmt: case T_AlterDatabaseSetStmt: case T_AlterRoleSetStmt:
    case T_CreateConversionStmt: case T_CreateCastStmt: case T_CreateOpClassStmt: case T_CreateOpFamilyStmt:
    case T_AlterOpFamilyStmt: case T_CreateTableSpaceStmt: case T_DropTableSpaceStmt:
    case T_AlterObjectDependsStmt: case T_AlterOwnerStmt: case T_AlterOperatorStmt: case T_AlterTypeStmt:
    case T_DropOwnedStmt: case T_ReassignOwnedStmt: case T_CompositeTypeStmt: case T_CreateEnumStmt:
    case T_CreateRangeStmt: case T_AlterEnumStmt: case T_AlterTSDictionaryStmt:
    case T_AlterTSConfigurationStmt: case T_CreateFdwStmt: case T_AlterFdwStmt:
    case T_CreateForeignServerStmt: case T_AlterForeignServerStmt: case T_CreateUserMappingStmt:
    case T_AlterUserMappingStmt: case T_DropUserMappingStmt: case T_AlterTableSpaceOptionsStmt:
    case T_AlterTableMoveAllStmt: case T_SecLabelStmt: case T_CreateForeignTableStmt:
    case T_ImportForeignSchemaStmt: case T_CreateExtensionStmt: case T_AlterExtensionStmt:
    case T_AlterExtensionContentsStmt: case T_AlterEventTrigStmt: case T_RefreshMatViewStmt:
    case T_ReplicaIdentityStmt: case T_AlterSystemStmt: case T_CreatePolicyStmt: case T_AlterPolicyStmt:
    case T_CreateTransformStmt: case T_CreateAmStmt: case T_CreatePublicationStmt:
    case T_AlterPublicationStmt: case T_CreateSubscriptionStmt: case T_AlterSubscriptionStmt:
    case T_DropSubscriptionStmt: case T_CreateStatsStmt: case T_AlterCollationStmt:
    case T_AlterStatsStmt:
        return true;
    default:
        return false;
    }
}

void rw_stmt(rw_ctx *c, Node *n)
{
    if (!n)
        return;
    switch (nodeTag(n)) {
    case T_InsertStmt:
    case T_UpdateStmt:
    case T_DeleteStmt:
    case T_MergeStmt:
    case T_SelectStmt:
        walk_query(c, n);
        break;
    case T_ExplainStmt:
        if (explain_analyze((ExplainStmt *)n))
            rw_stmt(c, ((ExplainStmt *)n)->query);
        break;
    case T_PrepareStmt: {
        /* The inner query's effects come out deferred (rw_effect_add), ahead
         * of the RW_FX_PREPARE that names their statement: the server runs
         * them at EXECUTE, not now. */
        PrepareStmt *p = (PrepareStmt *)n;
        int before = c->prepare_writes;
        c->prepare_depth++;
        rw_stmt(c, p->query);
        c->prepare_depth--;
        rw_effect_add(c, RW_FX_PREPARE, p->name, c->prepare_writes > before, false);
        break;
    }
    case T_ExecuteStmt:
        /* Counts as changing resolution (rw_effect_changes_resolution): the
         * statements after it in this text are decided with the path unknown. */
        rw_effect_add(c, RW_FX_EXECUTE, ((ExecuteStmt *)n)->name, false, false);
        break;
    case T_DeallocateStmt:
        rw_effect_add(c, RW_FX_DEALLOCATE, ((DeallocateStmt *)n)->name, false, false);
        break;
    case T_CopyStmt:
        copy_stmt(c, (CopyStmt *)n);
        break;
    case T_CreateTableAsStmt: {
        CreateTableAsStmt *ct = (CreateTableAsStmt *)n;
        rw_stmt(c, ct->query);
        if (ct->objtype == OBJECT_TABLE && ct->into)
            temp_created(c, ct->into->rel, ct->into->onCommit);
        break;
    }
    case T_DeclareCursorStmt: {
        /* A cursor's query runs at each FETCH or MOVE (or at COMMIT, WITH
         * HOLD), not now; the proxy does not follow cursors. So a cursor
         * whose query changes the session (a set_config()) cannot be
         * followed: refused while a table is enforced, and otherwise the
         * path is unknown from here on rather than changed now. */
        int before = c->nfx;
        rw_stmt(c, ((DeclareCursorStmt *)n)->query);
        if (c->nfx > before) {
            c->nfx = before;
            rw_effect_add(c, RW_FX_PATH_UNKNOWN, NULL, false, false);
            stmt_refuse(c, ~0ULL,
                        "tenantguard: a cursor whose query changes session settings (set_config) is not "
                        "supported while a table is enforced: its effects happen at each FETCH");
        }
        break;
    }
    case T_VariableSetStmt:
        set_stmt(c, (VariableSetStmt *)n);
        break;
    case T_DiscardStmt: {
        DiscardMode m = ((DiscardStmt *)n)->target;
        if (m == DISCARD_ALL) {
            rw_effect_add(c, RW_FX_DISCARD_ALL, NULL, false, false);
            rw_effect_add(c, RW_FX_LEXING, NULL, false, false);   /* it resets every setting */
        }
        else if (m == DISCARD_TEMP)
            rw_effect_add(c, RW_FX_DISCARD_TEMP, NULL, false, false);
        break;
    }
    case T_CreateStmt:
        temp_created(c, ((CreateStmt *)n)->relation, ((CreateStmt *)n)->oncommit);
        break;
    case T_DropStmt:
        drop_stmt(c, (DropStmt *)n);
        break;
    case T_TransactionStmt:
        transaction_stmt(c, (TransactionStmt *)n);
        break;
    case T_CallStmt:
        /* A procedure's SET search_path outlives the CALL (and it may commit):
         * we cannot see it, so the path is no longer known -- nor how the
         * next text is read (it may set client_encoding). */
        rw_effect_add(c, RW_FX_PATH_UNKNOWN, NULL, false, false);
        rw_effect_add(c, RW_FX_LEXING, NULL, false, false);
        break;
    case T_RenameStmt:
        rename_stmt(c, (RenameStmt *)n);
        break;
    case T_AlterObjectSchemaStmt: {
        AlterObjectSchemaStmt *a = (AlterObjectSchemaStmt *)n;
        int t = relation_object(a->objectType) ? watched_rel(c, a->relation) : -1;
        if (t >= 0)
            stmt_refuse(c, table_bit(t), "tenantguard: moving the watched table %s to another schema is "
                                         "refused in enforce mode", c->pol->tables[t].label);
        break;
    }
    case T_AlterTableStmt:
        alter_table(c, (AlterTableStmt *)n);
        break;
    case T_DoStmt:
        /* Like a CALL: a DO block's set_config() or SET outlives it. */
        rw_effect_add(c, RW_FX_PATH_UNKNOWN, NULL, false, false);
        rw_effect_add(c, RW_FX_LEXING, NULL, false, false);
        beyond_sight(c);
        break;
    case T_ViewStmt: {
        /* A temp view named like a watched table shadows it, as a temp table does. */
        ViewStmt *v = (ViewStmt *)n;
        temp_created(c, v->view, ONCOMMIT_NOOP);
        beyond_sight(c);
        break;
    }
    case T_CreateFunctionStmt:
    case T_CreateTrigStmt:
    case T_RuleStmt:
    case T_CreateEventTrigStmt:
    case T_CreateSchemaStmt:
        beyond_sight(c);
        break;
    default:
        if (!harmless_utility(nodeTag(n)))
            c->unknown_node = true;
        break;
    }
}

/* After rw_stmt: a node we do not know, in a statement that could name a
 * watched table, is refused. */
void rw_stmt_finish(rw_ctx *c, Node *n)
{
    if (!c->unknown_node)
        return;
    uint64_t mask = stmt_mask(c);
    if (mask)
        stmt_refuse(c, mask, "tenantguard: a statement of a form tenantguard does not know (node %d) names a "
                             "watched table; refused in enforce mode", (int)nodeTag(n));
}
