/*
 * rw_assign.c -- SET lists: UPDATE, INSERT ... ON CONFLICT DO UPDATE and
 * MERGE ... UPDATE, for a watched target row referred to as `refname`.
 *
 *   R4  SET tenant_id = <t>     -> tenant_keep('policies', 'tenant_id', "p"."tenant_id", <t>)
 *   R5  SET workspace_id = <w>  -> ws_verify_update('policies', <tsample>, "p"."tenant_id",
 *                                     <wsample>, as_type(<wsample>, <wsample>, <w>), 'workspace_id')
 *
 * Every SET expression of an UPDATE sees the row as it was, so R5 checks
 * against the old tenant -- which R4 keeps. The audit table (R6) may change
 * its tenant, as long as the row's workspace is the new tenant's.
 *
 * Row-constructor SET: `SET (a, workspace_id) = (x, y)` and `= ROW(x, y)` wrap
 * the element; `= (SELECT x, y ...)` wraps the sub-select's output, which
 * is only done when the sub-select is a plain SELECT with an explicit list
 * and does not itself use the target's name (our "p"."tenant_id" would then
 * mean its row, not the target's).
 */
#include "rewrite/rw_pg.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* A value being assigned: its expression and its tokens [first, end). */
typedef struct rw_val {
    Node *expr;
    int first, end;
} rw_val;

static const char *ref_col(rw_site *s, const char *col_q)
{
    rw_buf b;
    rw_buf_init(&b, &s->c->a);
    rw_buf_ident_min(&b, s->refname);
    rw_buf_printf(&b, ".%s", col_q);
    return b.p;
}

/* The value of a plain `col = expr`. */
static bool locate_plain(rw_site *s, ResTarget *rt, rw_end_set set, rw_val *v)
{
    rw_ctx *c = s->c;
    int i = rw_tok_at(c, rt->location);
    if (i < 0)
        return false;
    int depth = 0;
    for (; i < c->tok_hi; i = rw_tok_next(c, i)) {
        int code = c->tok[i].code;
        if (code == '[' || code == '(')
            depth++;
        else if (code == ']' || code == ')')
            depth--;
        else if (code == '=' && depth == 0)
            break;
    }
    if (i >= c->tok_hi)
        return false;
    int lo, hi;
    rw_loc_range(c, rt->val, &lo, &hi);
    v->expr = rt->val;
    v->first = rw_tok_next(c, i);
    v->end = rw_expr_end(c, v->first, hi, set);
    return v->end > v->first;
}

/* The end of a select-list entry's value, before its alias. */
static int target_end(rw_ctx *c, ResTarget *rt, int first)
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

/* Element colno of `SET (...) = source`. Refuses what it cannot place. */
static bool locate_multi(rw_site *s, MultiAssignRef *m, rw_val *v)
{
    rw_ctx *c = s->c;
    int k = m->colno - 1;
    if (IsA(m->source, RowExpr)) {
        RowExpr *row = (RowExpr *)m->source;
        if (list_length(row->args) != m->ncolumns)
            return false;
        ListCell *lc;
        foreach (lc, row->args) {
            Node *a = lfirst(lc);
            if ((IsA(a, ColumnRef) && IsA(llast(((ColumnRef *)a)->fields), A_Star)) ||
                (IsA(a, A_Indirection) && IsA(llast(((A_Indirection *)a)->indirection), A_Star)))
                return false;           /* t.* expands to an unknown number of columns */
        }
        int i = rw_tok_at(c, row->location);
        if (rw_tok_kw(c, i, RW_KW_ROW))
            i = rw_tok_next(c, i);
        int n = m->ncolumns;
        int *first = rw_alloc(&c->a, sizeof(int) * (size_t)n), *delim = rw_alloc(&c->a, sizeof(int) * (size_t)n);
        if (!first || !delim || i < 0 || rw_split_group(c, i, first, delim, n) != n)
            return false;
        v->expr = list_nth(row->args, k);
        v->first = first[k];
        v->end = delim[k];
        return true;
    }
    if (IsA(m->source, SubLink)) {
        SubLink *sl = (SubLink *)m->source;
        SelectStmt *sel = (SelectStmt *)sl->subselect;
        if (!sel || !IsA(sel, SelectStmt) || sel->op != SETOP_NONE || sel->valuesLists ||
            list_length(sel->targetList) != m->ncolumns || rw_targets_have_star(sel->targetList) ||
            rw_uses_refname(c, (Node *)sel, s->refname))
            return false;
        ResTarget *rt = list_nth(sel->targetList, k);
        v->expr = rt->val;
        v->first = rw_tok_at(c, rt->location);
        v->end = v->first < 0 ? -1 : target_end(c, rt, v->first);
        return v->end > v->first;
    }
    return false;
}

static bool locate(rw_site *s, ResTarget *rt, rw_end_set set, rw_val *v)
{
    if (rt->val && IsA(rt->val, MultiAssignRef))
        return locate_multi(s, (MultiAssignRef *)rt->val, v);
    return locate_plain(s, rt, set, v);
}

static void wrap(rw_site *s, const rw_val *v, const char *open, const char *close)
{
    rw_ctx *c = s->c;
    int a = c->tok[v->first].start, e = rw_pos_before(c, v->end);
    rw_splice_add(c, a, a, open);
    rw_splice_add(c, e, e, close);
}

static const char *fmt(rw_site *s, const char *f, ...) __attribute__((format(printf, 2, 3)));
static const char *fmt(rw_site *s, const char *f, ...)
{
    rw_buf b;
    rw_buf_init(&b, &s->c->a);
    char tmp[2048];
    va_list ap;
    va_start(ap, f);
    vsnprintf(tmp, sizeof(tmp), f, ap);
    va_end(ap);
    rw_buf_str(&b, tmp);
    return b.p;
}

/* R4 / R5 on a tenant-owned table. */
static void assign_owned(rw_site *s, ResTarget *rt, bool is_tenant, rw_end_set set)
{
    const rw_table *t = s->t;
    const char *h = s->c->pol->helper_q;
    rw_val v;
    if (!locate(s, rt, set, &v)) {
        rw_site_refuse(s, "tenantguard: UPDATE of %s.%s in a form tenantguard cannot check (a row source "
                          "other than ROW(...) or a plain sub-SELECT naming other tables)", t->label, rt->name);
        return;
    }
    if (IsA(v.expr, SetToDefault)) {
        rw_site_reject(s, is_tenant ? RW_R4_IMMUTABLE_TENANT : RW_R5_VERIFY_UPDATE, "42501",
                       "tenantguard: %s of %s cannot be set to DEFAULT (%s)", rt->name, t->label,
                       is_tenant ? "R4" : "R5");
        return;
    }
    if (is_tenant) {
        wrap(s, &v, fmt(s, "%s.tenant_keep(%s, %s, %s, ", h, t->label_lit, t->tcol_lit, ref_col(s, t->tcol_q)),
             ")");
        rw_site_rewritten(s, RW_R4_IMMUTABLE_TENANT);
    } else {
        wrap(s, &v,
             fmt(s, "%s.ws_verify_update(%s, %s, %s, %s, %s.as_type(%s, %s, ", h, t->label_lit, t->tsample,
                 ref_col(s, t->tcol_q), t->wsample, h, t->wsample, t->wsample),
             fmt(s, "), %s)", t->wcol_lit));
        rw_site_rewritten(s, RW_R5_VERIFY_UPDATE);
    }
}

/* R6 on the audit table: tenant and workspace as a pair. */
static void assign_audit(rw_site *s, ResTarget *rt_t, ResTarget *rt_w, rw_end_set set)
{
    const rw_table *t = s->t;
    const char *h = s->c->pol->helper_q;
    rw_val vt, vw;
    if ((rt_t && !locate(s, rt_t, set, &vt)) || (rt_w && !locate(s, rt_w, set, &vw))) {
        rw_site_refuse(s, "tenantguard: UPDATE of %s in a form tenantguard cannot check", t->label);
        return;
    }
    if ((rt_t && IsA(vt.expr, SetToDefault)) || (rt_w && IsA(vw.expr, SetToDefault))) {
        rw_site_refuse(s, "tenantguard: UPDATE of %s sets %s or %s to DEFAULT; set the values", t->label, t->tcol,
                       t->wcol);
        return;
    }
    if (rt_t && !rt_w) {
        wrap(s, &vt, fmt(s, "%s.audit_verify_tenant(%s, %s, ", h, t->label_lit, t->tsample),
             fmt(s, ", %s, %s, %s)", t->wsample, ref_col(s, t->wcol_q), t->wcol_lit));
    } else {
        const char *tenant;
        if (rt_t) {
            if (!rw_dup_safe(s->c, vt.expr)) {
                rw_site_refuse(s, "tenantguard: UPDATE of %s sets %s to an expression that cannot be evaluated "
                                  "twice together with %s", t->label, t->tcol, t->wcol);
                return;
            }
            tenant = rw_text_of(s->c, vt.first, vt.end);
        } else {
            tenant = ref_col(s, t->tcol_q);
        }
        wrap(s, &vw,
             fmt(s, "%s.audit_verify(%s, %s, %s, %s, %s.as_type(%s, %s, ", h, t->label_lit, t->tsample, tenant,
                 t->wsample, h, t->wsample, t->wsample),
             fmt(s, "), %s)", t->wcol_lit));
    }
    rw_site_rewritten(s, RW_R6_AUDIT);
}

void rw_assign(rw_site *s, List *targets, rw_end_set set)
{
    const rw_table *t = s->t;
    ResTarget *rt_t = NULL, *rt_w = NULL;
    ListCell *lc;
    foreach (lc, targets) {
        ResTarget *rt = lfirst(lc);
        if (!IsA(rt, ResTarget) || !rt->name)
            continue;
        bool is_t = strcmp(rt->name, t->tcol) == 0, is_w = strcmp(rt->name, t->wcol) == 0;
        if (!is_t && !is_w)
            continue;
        if (rt->indirection) {
            rw_site_refuse(s, "tenantguard: UPDATE of %s assigns a part of %s (subscript or field); assign the "
                              "whole column", t->label, rt->name);
            return;
        }
        if (t->kind == TG_TABLE_OWNED) {
            assign_owned(s, rt, is_t, set);
        } else if (is_t && !rt_t) {
            rt_t = rt;
        } else if (is_w && !rt_w) {
            rt_w = rt;
        }
        if (s->c->stmt_reject && s->mode == TG_MODE_ENFORCE)
            return;
    }
    if (t->kind == TG_TABLE_AUDIT && (rt_t || rt_w))
        assign_audit(s, rt_t, rt_w, set);
}
