/*
 * rw_dml.c -- writes to watched tables: sites (one per DML node), splices,
 * and INSERT (VALUES, SELECT, DEFAULT VALUES, positional) incl. MERGE's
 * INSERT action. SET lists are in rw_assign.c.
 *
 * Shapes, for a watched table policies(tenant_id, workspace_id):
 *
 *   R1  INSERT INTO policies (tenant_id, name) VALUES ($1, $2)
 *    -> INSERT INTO policies (tenant_id, name, "workspace_id") VALUES ($1, $2,
 *         tenantguard.ws_derive('policies', <tsample>, $1, <wsample>))
 *   R2  ... (tenant_id, workspace_id) VALUES ($1, $2)
 *    -> ... VALUES ($1, tenantguard.ws_verify('policies', <tsample>, $1, <wsample>,
 *         tenantguard.as_type(<wsample>, <wsample>, $2), 'workspace_id'))
 *
 * The tenant expression is written twice, so it must give the same value
 * twice (rw_dup_safe). When it may not, an INSERT ... SELECT is wrapped so
 * the tenant is read from the subquery's output column:
 *
 *    INSERT INTO policies (c1, ..., "workspace_id")
 *    SELECT tg_s.*, tenantguard.ws_derive('policies', <tsample>, tg_s."tenant_id", <wsample>)
 *    FROM (<the client's select>) AS tg_s("c1", ...)
 *
 * but only where a subquery cannot change how PostgreSQL types the select
 * list (untyped literals and $n of a plain SELECT would become text); a
 * VALUES row cannot be wrapped for the same reason and is refused.
 */
#include "rewrite/rw_pg.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------ splices */

void rw_splice_add(rw_ctx *c, int pos, int end, const char *ins)
{
    if (c->nspl == c->capspl) {
        int cap = c->capspl ? c->capspl * 2 : 16;
        rw_splice *n = rw_alloc(&c->a, sizeof(*n) * (size_t)cap);
        if (!n)
            return;
        if (c->nspl)
            memcpy(n, c->spl, sizeof(*n) * (size_t)c->nspl);
        c->spl = n;
        c->capspl = cap;
    }
    c->spl[c->nspl++] = (rw_splice){pos, end, ins, c->seq++};
}

const char *rw_text_of(rw_ctx *c, int from_tok, int to_tok)
{
    int a = c->tok[from_tok].start;
    int b = rw_pos_before(c, to_tok);
    if (b < a)
        b = a;
    return rw_strndup(&c->a, c->text + a, (size_t)(b - a));
}

/* -------------------------------------------------------------------- sites */

static bool name_enforced(const rw_policy *p, const char *name)
{
    for (int i = 0; i < p->n_tables; i++)
        if (p->tables[i].mode == TG_MODE_ENFORCE && strcmp(p->tables[i].name, name) == 0)
            return true;
    return false;
}

void rw_pin_name(rw_ctx *c, const RangeVar *rv, const char *pin)
{
    /* A temp table or a look-alike earlier on the path shadows the watched
     * one: write pg_temp.name / schema.name, so that if the shadow is gone,
     * or the server's path is not the one we follow (a function changed it),
     * the statement fails or acts on the shadow -- it never reaches the
     * watched table unchecked. */
    if (!pin || !name_enforced(c->pol, rv->relname))
        return;
    int i = rw_lex(c) ? rw_tok_at(c, rv->location) : -1;
    if (i < 0) {
        c->failed = true;
        return;
    }
    if (strcmp(pin, "pg_temp") == 0) {
        rw_splice_add(c, c->tok[i].start, c->tok[i].start, "pg_temp.");
    } else {
        rw_buf b;
        rw_buf_init(&b, &c->a);
        rw_buf_ident(&b, pin);
        rw_buf_add(&b, ".", 1);
        rw_splice_add(c, c->tok[i].start, c->tok[i].start, rw_buf_cstr(&b));
    }
    c->pinned = true;
}

bool rw_site_begin(rw_ctx *c, rw_site *s, RangeVar *rv)
{
    memset(s, 0, sizeof(*s));
    s->c = c;
    s->table = -1;
    if (!rv)
        return false;
    const char *pin;
    int t = rw_resolve(c->pol, c->env, rv->schemaname, rv->relname, &pin);
    if (pin) {
        rw_pin_name(c, rv, pin);
        return false;
    }
    if (t < 0)
        return false;
    s->table = t;
    s->t = &c->pol->tables[t];
    s->mode = s->t->mode;
    s->refname = rv->alias ? rv->alias->aliasname : rv->relname;
    c->watched_write = true;
    if (c->prepare_depth)
        c->prepare_writes++;
    if (s->mode == TG_MODE_OFF)
        return false;
    s->spl_mark = c->nspl;
    s->ev_mark = c->nev;
    rw_event_add(c, t, RW_RULE_NONE, RW_EV_SEEN);
    if (!rw_lex(c))
        c->failed = true;
    return !c->failed;
}

void rw_site_end(rw_site *s)
{
    rw_ctx *c = s->c;
    if (s->mode != TG_MODE_ENFORCE)
        c->nspl = s->spl_mark;          /* observe: the server runs the client's text */
    if (!s->acted)
        rw_event_add(c, s->table, RW_RULE_NONE, RW_EV_PASSED);
    if (s->mode == TG_MODE_OBSERVE)
        c->observed = true;
}

void rw_site_rewritten(rw_site *s, rw_rule rule)
{
    for (int i = s->ev_mark; i < s->c->nev; i++)
        if (s->c->ev[i].rule == rule && s->c->ev[i].kind == RW_EV_REWRITTEN)
            return;                     /* once per site and rule */
    rw_event_add(s->c, s->table, rule, RW_EV_REWRITTEN);
    s->acted = true;
}

static void site_vreject(rw_site *s, rw_rule rule, const char *sqlstate, const char *fmt, va_list ap)
{
    rw_ctx *c = s->c;
    bool refuse = strcmp(sqlstate, "0A000") == 0;
    rw_event_add(c, s->table, rule, refuse ? RW_EV_REFUSED : RW_EV_REJECTED);
    s->acted = true;
    if (s->mode != TG_MODE_ENFORCE || c->stmt_reject)
        return;
    char msg[600];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    c->stmt_reject = true;
    c->rej_sqlstate = sqlstate;
    c->rej_message = rw_strdup(&c->a, msg);
}

void rw_site_reject(rw_site *s, rw_rule rule, const char *sqlstate, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    site_vreject(s, rule, sqlstate, fmt, ap);
    va_end(ap);
}

void rw_site_refuse(rw_site *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    site_vreject(s, RW_RULE_FORM, "0A000", fmt, ap);
    va_end(ap);
}

/* ----------------------------------------------------------- call builders */

/* The helper call that derives the workspace of `tenant` (R1 / R6). */
static const char *call_derive(rw_site *s, const char *tbl, const char *tenant)
{
    rw_buf b;
    rw_buf_init(&b, &s->c->a);
    /* The tenant is looked up as the column will store it: as_type applies
     * the same assignment cast (a float 2^53 or 3.4 must not find another
     * tenant than the row ends up with). */
    rw_buf_printf(&b, "%s.%s(%s, %s, %s.as_type(%s, %s, %s), %s)", s->c->pol->helper_q,
                  s->t->kind == TG_TABLE_AUDIT ? "audit_derive" : "ws_derive", tbl, s->t->tsample,
                  s->c->pol->helper_q, s->t->tsample, s->t->tsample, tenant, s->t->wsample);
    return b.p;
}

/* Opening and closing text around a workspace value to verify (R2 / R6). */
static const char *verify_open(rw_site *s, const char *fn, const char *tbl, const char *tenant)
{
    rw_buf b;
    rw_buf_init(&b, &s->c->a);
    rw_buf_printf(&b, "%s.%s(%s, %s, %s.as_type(%s, %s, %s), %s, %s.as_type(%s, %s, ", s->c->pol->helper_q, fn,
                  tbl, s->t->tsample, s->c->pol->helper_q, s->t->tsample, s->t->tsample, tenant, s->t->wsample,
                  s->c->pol->helper_q, s->t->wsample, s->t->wsample);
    return b.p;
}

static const char *verify_close(rw_site *s)
{
    rw_buf b;
    rw_buf_init(&b, &s->c->a);
    rw_buf_printf(&b, "), %s)", s->t->wcol_lit);
    return b.p;
}

static rw_rule insert_rule(rw_site *s, bool verify)
{
    if (s->t->kind == TG_TABLE_AUDIT)
        return RW_R6_AUDIT;
    return verify ? RW_R2_VERIFY : RW_R1_DERIVE;
}

static const char *verify_fn(rw_site *s)
{
    return s->t->kind == TG_TABLE_AUDIT ? "audit_verify" : "ws_verify";
}

/* --------------------------------------------------------------- columns */

typedef struct ins_cols {
    int n;
    const char **names;
    int it, iw;               /* index of the tenant / workspace column, -1 if absent */
    int close_tok;            /* ')' of the client's column list, -1 if generated */
    int gen_at_tok;           /* positional: the token the generated list goes before */
    const char *tbl;          /* first argument of the helper calls */
} ins_cols;

/* The client's column list. Returns false after refusing. */
static bool cols_from_list(rw_site *s, List *cols, ins_cols *ic)
{
    rw_ctx *c = s->c;
    ic->n = list_length(cols);
    ic->names = rw_alloc(&c->a, sizeof(char *) * (size_t)(ic->n + 1));
    if (!ic->names)
        return false;
    ic->it = ic->iw = -1;
    ListCell *lc;
    int k = 0;
    foreach (lc, cols) {
        ResTarget *rt = lfirst(lc);
        ic->names[k] = rt->name;
        bool is_t = strcmp(rt->name, s->t->tcol) == 0, is_w = strcmp(rt->name, s->t->wcol) == 0;
        if ((is_t || is_w) && rt->indirection) {
            rw_site_refuse(s, "tenantguard: INSERT into %s assigns a part of %s (subscript or field); "
                              "assign the whole column", s->t->label, rt->name);
            return false;
        }
        if (is_t && ic->it < 0)
            ic->it = k;
        if (is_w && ic->iw < 0)
            ic->iw = k;
        k++;
    }
    ResTarget *last = llast(cols);
    int i = rw_tok_at(c, last->location);
    ic->close_tok = i < 0 ? -1 : rw_expr_end(c, i, last->location, RW_END_LIST);
    if (ic->close_tok < 0 || !rw_tok_is(c, ic->close_tok, ')')) {
        rw_site_refuse(s, "tenantguard: could not locate the column list of the INSERT into %s", s->t->label);
        return false;
    }
    ic->gen_at_tok = -1;
    ic->tbl = s->t->label_lit;
    return true;
}

static const rw_catalog_table *catalog_of(rw_ctx *c, int table)
{
    if (!c->cat)
        return NULL;
    for (int i = 0; i < c->cat->n_tables; i++)
        if (c->cat->tables[i].table == table)
            return &c->cat->tables[i];
    return NULL;
}

/* Positional INSERT: the first `width` columns in catalog order, and a
 * layout guard proving them at run time. gen_at: where the list goes. */
static bool cols_from_catalog(rw_site *s, int width, int gen_at, ins_cols *ic)
{
    rw_ctx *c = s->c;
    const rw_catalog_table *ct = catalog_of(c, s->table);
    if (!ct) {
        rw_site_refuse(s, "tenantguard: INSERT into %s without a column list cannot be checked; name the columns",
                       s->t->label);
        return false;
    }
    if (width < 1) {   /* SELECT * or another width we cannot count */
        rw_site_refuse(s, "tenantguard: INSERT into %s without a column list from a query whose width "
                          "cannot be counted (SELECT *) cannot be checked; name the columns", s->t->label);
        return false;
    }
    if (width > ct->n_columns || gen_at < 0) {
        rw_site_refuse(s, "tenantguard: INSERT into %s without a column list has %d values for %d columns; "
                          "name the columns", s->t->label, width, ct->n_columns);
        return false;
    }
    ic->n = width;
    ic->names = rw_alloc(&c->a, sizeof(char *) * (size_t)(width + 1));
    if (!ic->names)
        return false;
    ic->it = ic->iw = -1;
    rw_buf sig;
    rw_buf_init(&sig, &c->a);
    for (int k = 0; k < width; k++) {
        ic->names[k] = ct->columns[k];
        if (ic->it < 0 && strcmp(ct->columns[k], s->t->tcol) == 0)
            ic->it = k;
        if (ic->iw < 0 && strcmp(ct->columns[k], s->t->wcol) == 0)
            ic->iw = k;
        rw_buf_printf(&sig, "%s%s", k ? "," : "", ct->columns[k]);
    }
    rw_buf g;
    rw_buf_init(&g, &c->a);
    rw_buf_printf(&g, "%s.layout_guard(", c->pol->helper_q);
    rw_buf_literal(&g, s->t->qualified);
    rw_buf_str(&g, "::pg_catalog.regclass, ");
    rw_buf_literal(&g, rw_buf_cstr(&sig));
    rw_buf_printf(&g, ", %s)", s->t->label_lit);
    ic->tbl = g.p;
    ic->close_tok = -1;
    ic->gen_at_tok = gen_at;
    return !c->a.oom;
}

/* Column list text to add: ", "ws"" after the client's list, or the whole
 * generated list " (...)" for a positional INSERT. */
static void cols_emit(rw_site *s, ins_cols *ic, bool add_ws)
{
    rw_ctx *c = s->c;
    rw_buf b;
    rw_buf_init(&b, &c->a);
    if (ic->close_tok >= 0) {
        if (!add_ws)
            return;
        rw_buf_printf(&b, ", %s", s->t->wcol_q);
        int pos = rw_pos_before(c, ic->close_tok);
        rw_splice_add(c, pos, pos, b.p);
        return;
    }
    rw_buf_str(&b, " (");
    for (int k = 0; k < ic->n; k++) {
        if (k)
            rw_buf_str(&b, ", ");
        rw_buf_ident_min(&b, ic->names[k]);
    }
    if (add_ws)
        rw_buf_printf(&b, ", %s", s->t->wcol_q);
    rw_buf_str(&b, ")");
    int pos = rw_pos_before(c, ic->gen_at_tok);
    rw_splice_add(c, pos, pos, b.p);
}

/* The token after the relation (and its AS alias) of an INSERT target. */
static int after_target(rw_ctx *c, RangeVar *rv)
{
    int i = rw_tok_at(c, rv->location);
    if (i < 0)
        return -1;
    for (;;) {
        int nx = rw_tok_next(c, i);
        if (!rw_tok_is(c, nx, '.'))
            break;
        i = rw_tok_next(c, nx);
    }
    i = rw_tok_next(c, i);
    if (rw_tok_kw(c, i, RW_KW_AS))
        i = rw_tok_next(c, rw_tok_next(c, i));
    return i < c->tok_hi ? i : -1;
}

/* Skip OVERRIDING {SYSTEM|USER} VALUE. */
static int skip_overriding(rw_ctx *c, int i)
{
    if (rw_tok_kw(c, i, RW_KW_OVERRIDING))
        return rw_tok_next(c, rw_tok_next(c, rw_tok_next(c, i)));
    return i;
}

/* ------------------------------------------------------------ VALUES rows */

/* The VALUES keyword before a row whose first element is `first_elem`. */
static int values_kw_before(rw_ctx *c, Node *first_elem)
{
    int lo, hi;
    rw_loc_range(c, first_elem, &lo, &hi);
    int i = lo >= 0 ? rw_tok_at(c, lo) : -1;
    if (i < 0)
        return -1;
    i = rw_tok_prev(c, i);
    while (rw_tok_is(c, i, '(') && !rw_tok_kw(c, rw_tok_prev(c, i), RW_KW_VALUES))
        i = rw_tok_prev(c, i);
    if (!rw_tok_is(c, i, '('))
        return -1;
    i = rw_tok_prev(c, i);
    return rw_tok_kw(c, i, RW_KW_VALUES) ? i : -1;
}

static bool row_locate(rw_ctx *c, int open, List *elems, rw_row *r)
{
    int n = list_length(elems);
    r->elems = elems;
    r->open = open;
    r->first = rw_alloc(&c->a, sizeof(int) * (size_t)(n + 1));
    r->delim = rw_alloc(&c->a, sizeof(int) * (size_t)(n + 1));
    if (!r->first || !r->delim)
        return false;
    r->n = rw_split_group(c, open, r->first, r->delim, n);
    if (r->n != n)
        return false;
    r->close = r->delim[n - 1];
    return true;
}

/* One VALUES row of an INSERT (or MERGE INSERT) with columns ic. */
static void values_row(rw_site *s, ins_cols *ic, rw_row *r)
{
    rw_ctx *c = s->c;
    ListCell *lc;
    foreach (lc, r->elems) {
        /* x.* in a VALUES row expands to as many values as x has columns:
         * the positions we would splice at are then not the columns'. */
        Node *e = lfirst(lc);
        if ((IsA(e, ColumnRef) && IsA(llast(((ColumnRef *)e)->fields), A_Star)) ||
            (IsA(e, A_Indirection) && IsA(llast(((A_Indirection *)e)->indirection), A_Star))) {
            rw_site_refuse(s, "tenantguard: a VALUES row for %s expands a row with .*; list the values",
                           s->t->label);
            return;
        }
    }
    if (r->n != ic->n) {
        rw_site_refuse(s, "tenantguard: a VALUES row for %s has %d values for %d columns", s->t->label, r->n,
                       ic->n);
        return;
    }
    Node *tenant = list_nth(r->elems, ic->it);
    bool audit = s->t->kind == TG_TABLE_AUDIT;
    if (IsA(tenant, SetToDefault)) {
        if (!audit) {
            rw_site_reject(s, RW_R3_RESOLVABLE, "42501",
                           "tenantguard: INSERT into %s sets %s to DEFAULT: no tenant to derive the workspace "
                           "from (R3)", s->t->label, s->t->tcol);
            return;
        }
        /* An audit row without a tenant passes as sent. */
        if (ic->iw < 0) {
            int pos = rw_pos_before(c, r->close);
            rw_splice_add(c, pos, pos, ", DEFAULT");
        }
        return;
    }
    if (!rw_dup_safe(c, tenant)) {
        rw_site_refuse(s, "tenantguard: INSERT ... VALUES into %s: the %s expression cannot be evaluated twice "
                          "(a function call, subquery or operator); pass the tenant as a literal or "
                          "parameter, or use INSERT ... SELECT", s->t->label, s->t->tcol);
        return;
    }
    const char *ttext = rw_text_of(c, r->first[ic->it], r->delim[ic->it]);
    if (ic->iw < 0 || IsA(list_nth(r->elems, ic->iw), SetToDefault)) {
        rw_buf b;
        rw_buf_init(&b, &c->a);
        if (ic->iw < 0) {
            rw_buf_printf(&b, ", %s", call_derive(s, ic->tbl, ttext));
            int pos = rw_pos_before(c, r->close);
            rw_splice_add(c, pos, pos, b.p);
        } else {
            /* workspace_id = DEFAULT: derived, as if omitted */
            int a = c->tok[r->first[ic->iw]].start, e = rw_pos_before(c, r->delim[ic->iw]);
            rw_splice_add(c, a, e, call_derive(s, ic->tbl, ttext));
        }
        rw_site_rewritten(s, insert_rule(s, false));
        return;
    }
    int a = c->tok[r->first[ic->iw]].start, e = rw_pos_before(c, r->delim[ic->iw]);
    rw_splice_add(c, a, a, verify_open(s, verify_fn(s), ic->tbl, ttext));
    rw_splice_add(c, e, e, verify_close(s));
    rw_site_rewritten(s, insert_rule(s, true));
}

/* All rows of INSERT ... VALUES. */
static void insert_values(rw_site *s, ins_cols *ic, SelectStmt *sel)
{
    rw_ctx *c = s->c;
    int v = values_kw_before(c, linitial(linitial(sel->valuesLists)));
    int open = v < 0 ? -1 : rw_tok_next(c, v);
    ListCell *lc;
    foreach (lc, sel->valuesLists) {
        rw_row r;
        if (open < 0 || !row_locate(c, open, lfirst(lc), &r)) {
            rw_site_refuse(s, "tenantguard: could not locate the VALUES rows of the INSERT into %s", s->t->label);
            return;
        }
        values_row(s, ic, &r);
        if (c->stmt_reject && s->mode == TG_MODE_ENFORCE)
            return;
        int nx = rw_tok_next(c, r.close);
        open = rw_tok_is(c, nx, ',') ? rw_tok_next(c, nx) : -1;
    }
    cols_emit(s, ic, ic->iw < 0);
}

/* ----------------------------------------------------------- INSERT SELECT */

/* The end of a select-list entry's value (before any AS alias): a token. */
static int target_val_end(rw_ctx *c, ResTarget *rt, int first)
{
    int lo, hi;
    rw_loc_range(c, rt->val, &lo, &hi);
    int e = rw_expr_end(c, first, hi, RW_END_TARGET);
    if (e < 0 || !rt->name)
        return e;
    int label = rw_tok_prev(c, e);
    if (label < first || c->tok[label].start <= hi)
        return -1;
    int before = rw_tok_prev(c, label);
    return rw_tok_kw(c, before, RW_KW_AS) ? before : label;
}

static void wrap_select(rw_site *s, ins_cols *ic, SelectStmt *sel, int start)
{
    rw_ctx *c = s->c;
    if (sel->op == SETOP_NONE && rw_targets_untyped(sel->targetList)) {
        rw_site_refuse(s, "tenantguard: INSERT ... SELECT into %s: the %s expression cannot be evaluated twice "
                          "and the select list has an untyped literal or parameter, whose type would change "
                          "in a subquery; cast it or select the tenant as a column", s->t->label, s->t->tcol);
        return;
    }
    int lo, hi;
    rw_loc_range(c, (Node *)sel, &lo, &hi);
    int end = start >= 0 ? rw_expr_end(c, start, hi, RW_END_INSERT_REST) : -1;
    if (end < 0) {
        rw_site_refuse(s, "tenantguard: could not locate the SELECT of the INSERT into %s", s->t->label);
        return;
    }
    rw_buf pre, suf;
    rw_buf_init(&pre, &c->a);
    rw_buf_init(&suf, &c->a);
    rw_buf tcol;
    rw_buf_init(&tcol, &c->a);
    rw_buf_printf(&tcol, "tg_s.%s", s->t->tcol_q);
    rw_buf_str(&pre, "SELECT ");
    if (ic->iw < 0) {
        rw_buf_printf(&pre, "tg_s.*, %s", call_derive(s, ic->tbl, tcol.p));
    } else {
        for (int k = 0; k < ic->n; k++) {
            if (k)
                rw_buf_str(&pre, ", ");
            if (k == ic->iw) {
                rw_buf_str(&pre, verify_open(s, verify_fn(s), ic->tbl, tcol.p));
                rw_buf_str(&pre, "tg_s.");
                rw_buf_ident_min(&pre, ic->names[k]);
                rw_buf_str(&pre, verify_close(s));
            } else {
                rw_buf_str(&pre, "tg_s.");
                rw_buf_ident_min(&pre, ic->names[k]);
            }
        }
    }
    rw_buf_str(&pre, " FROM (");
    rw_buf_str(&suf, ") AS tg_s(");
    for (int k = 0; k < ic->n; k++) {
        if (k)
            rw_buf_str(&suf, ", ");
        rw_buf_ident_min(&suf, ic->names[k]);
    }
    rw_buf_str(&suf, ")");
    cols_emit(s, ic, ic->iw < 0);      /* first: a generated list may sit where the SELECT starts */
    rw_splice_add(c, c->tok[start].start, c->tok[start].start, pre.p);
    int pos = rw_pos_before(c, end);
    rw_splice_add(c, pos, pos, suf.p);
    rw_site_rewritten(s, insert_rule(s, ic->iw >= 0));
}

static void insert_select(rw_site *s, ins_cols *ic, SelectStmt *sel, int start)
{
    rw_ctx *c = s->c;
    bool simple = sel->op == SETOP_NONE && !sel->valuesLists && !rw_targets_have_star(sel->targetList);
    if (!simple) {
        wrap_select(s, ic, sel, start);
        return;
    }
    if (list_length(sel->targetList) != ic->n) {
        rw_site_refuse(s, "tenantguard: INSERT ... SELECT into %s selects %d columns for %d", s->t->label,
                       list_length(sel->targetList), ic->n);
        return;
    }
    ResTarget *tt = list_nth(sel->targetList, ic->it);
    if (!rw_dup_safe(c, tt->val)) {
        wrap_select(s, ic, sel, start);
        return;
    }
    int tf = rw_tok_at(c, tt->location);
    int te = tf < 0 ? -1 : target_val_end(c, tt, tf);
    if (te < 0) {
        rw_site_refuse(s, "tenantguard: could not locate the %s value of the INSERT into %s", s->t->tcol,
                       s->t->label);
        return;
    }
    const char *ttext = rw_text_of(c, tf, te);
    if (ic->iw < 0) {
        ResTarget *last = llast(sel->targetList);
        int lf = rw_tok_at(c, last->location), lo, hi;
        rw_loc_range(c, (Node *)last, &lo, &hi);
        int le = lf < 0 ? -1 : rw_expr_end(c, lf, hi, RW_END_TARGET);
        if (le < 0) {
            rw_site_refuse(s, "tenantguard: could not locate the select list of the INSERT into %s", s->t->label);
            return;
        }
        rw_buf b;
        rw_buf_init(&b, &c->a);
        rw_buf_printf(&b, ", %s", call_derive(s, ic->tbl, ttext));
        int pos = rw_pos_before(c, le);
        rw_splice_add(c, pos, pos, b.p);
        cols_emit(s, ic, true);
        rw_site_rewritten(s, insert_rule(s, false));
        return;
    }
    ResTarget *wt = list_nth(sel->targetList, ic->iw);
    int wf = rw_tok_at(c, wt->location);
    int we = wf < 0 ? -1 : target_val_end(c, wt, wf);
    if (we < 0) {
        rw_site_refuse(s, "tenantguard: could not locate the %s value of the INSERT into %s", s->t->wcol,
                       s->t->label);
        return;
    }
    int a = c->tok[wf].start, e = rw_pos_before(c, we);
    rw_splice_add(c, a, a, verify_open(s, verify_fn(s), ic->tbl, ttext));
    rw_splice_add(c, e, e, verify_close(s));
    cols_emit(s, ic, false);
    rw_site_rewritten(s, insert_rule(s, true));
}

/* ------------------------------------------------------------------ INSERT */

static void no_tenant(rw_site *s, const char *form)
{
    if (s->t->kind == TG_TABLE_AUDIT)
        return;                         /* R6: a row without tenant passes as sent */
    rw_site_reject(s, RW_R3_RESOLVABLE, "42501",
                   "tenantguard: %s into %s does not set %s: no tenant to derive the workspace from (R3)", form,
                   s->t->label, s->t->tcol);
}

static void insert_body(rw_site *s, InsertStmt *ins)
{
    rw_ctx *c = s->c;
    SelectStmt *sel = (SelectStmt *)ins->selectStmt;
    if (!sel) {
        no_tenant(s, "INSERT ... DEFAULT VALUES");
        return;
    }
    if (!IsA(sel, SelectStmt)) {
        rw_site_refuse(s, "tenantguard: INSERT into %s has a source tenantguard does not know", s->t->label);
        return;
    }
    ins_cols ic;
    memset(&ic, 0, sizeof(ic));
    int start;
    if (ins->cols) {
        if (!cols_from_list(s, ins->cols, &ic))
            return;
        start = skip_overriding(c, rw_tok_next(c, ic.close_tok));
    } else {
        int at = after_target(c, ins->relation);
        int width = sel->valuesLists ? list_length(linitial(sel->valuesLists))
                    : (sel->op == SETOP_NONE && !rw_targets_have_star(sel->targetList))
                        ? list_length(sel->targetList) : -1;
        if (!cols_from_catalog(s, width, at, &ic))
            return;
        start = skip_overriding(c, at);
    }
    if (ic.it < 0) {
        no_tenant(s, "INSERT");
        return;
    }
    if (sel->valuesLists && sel->op == SETOP_NONE)
        insert_values(s, &ic, sel);
    else
        insert_select(s, &ic, sel, start < c->tok_hi ? start : -1);
}

void rw_dml_insert(rw_ctx *c, InsertStmt *ins)
{
    rw_site s;
    if (!rw_site_begin(c, &s, ins->relation))
        return;
    insert_body(&s, ins);
    OnConflictClause *oc = ins->onConflictClause;
    if (oc && oc->action == ONCONFLICT_UPDATE && !(c->stmt_reject && s.mode == TG_MODE_ENFORCE))
        rw_assign(&s, oc->targetList, RW_END_CONFLICT_SET);
    rw_site_end(&s);
}

void rw_dml_update(rw_ctx *c, UpdateStmt *upd)
{
    rw_site s;
    if (!rw_site_begin(c, &s, upd->relation))
        return;
    rw_assign(&s, upd->targetList, RW_END_SET);
    rw_site_end(&s);
}

void rw_dml_delete(rw_ctx *c, DeleteStmt *del)
{
    rw_site s;
    if (!rw_site_begin(c, &s, del->relation))
        return;
    rw_site_end(&s);
}

/* ------------------------------------------------------------------- MERGE */

static void merge_insert(rw_site *s, MergeWhenClause *w)
{
    rw_ctx *c = s->c;
    if (!w->values) {
        no_tenant(s, "MERGE ... INSERT DEFAULT VALUES");
        return;
    }
    int v = values_kw_before(c, linitial(w->values));
    int open = v < 0 ? -1 : rw_tok_next(c, v);
    ins_cols ic;
    memset(&ic, 0, sizeof(ic));
    if (w->targetList) {
        if (!cols_from_list(s, w->targetList, &ic))
            return;
    } else {
        /* INSERT [OVERRIDING ...] VALUES: the list goes right after INSERT */
        int i = v;
        for (int k = 0; k < 4 && i >= c->tok_lo && !rw_tok_kw(c, i, RW_KW_INSERT); k++)
            i = rw_tok_prev(c, i);
        int at = rw_tok_kw(c, i, RW_KW_INSERT) ? rw_tok_next(c, i) : -1;
        if (!cols_from_catalog(s, list_length(w->values), v < 0 ? -1 : at, &ic))
            return;
    }
    if (ic.it < 0) {
        no_tenant(s, "MERGE ... INSERT");
        return;
    }
    rw_row r;
    if (open < 0 || !row_locate(c, open, w->values, &r)) {
        rw_site_refuse(s, "tenantguard: could not locate the VALUES of the MERGE into %s", s->t->label);
        return;
    }
    values_row(s, &ic, &r);
    cols_emit(s, &ic, ic.iw < 0);
}

void rw_dml_merge(rw_ctx *c, MergeStmt *m)
{
    rw_site s;
    if (!rw_site_begin(c, &s, m->relation))
        return;
    ListCell *lc;
    foreach (lc, m->mergeWhenClauses) {
        MergeWhenClause *w = lfirst(lc);
        if (w->commandType == CMD_INSERT)
            merge_insert(&s, w);
        else if (w->commandType == CMD_UPDATE)
            rw_assign(&s, w->targetList, RW_END_MERGE_SET);
        if (c->stmt_reject && s.mode == TG_MODE_ENFORCE)
            break;
    }
    rw_site_end(&s);
}
