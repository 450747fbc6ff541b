/*
 * rw_walk.c -- our own walk over raw parse trees.
 *
 * PostgreSQL's raw_expression_tree_walker raises ERROR on a node type it
 * does not know, and outside libpg_query's PG_TRY that would end the
 * process. This walker knows the raw node types DML statements and their
 * expressions are made of (the same set as raw_expression_tree_walker in
 * PostgreSQL 15, plus the few it skips), and reports anything else through
 * c->unknown_node, which the caller turns into a refusal when the statement
 * could touch a watched table. Fail closed, never crash.
 */
#include "rewrite/rw_pg.h"

#include <string.h>

#define RW_MAX_DEPTH 2000

static rw_walk_result walk(rw_ctx *c, Node *n, rw_visit_fn fn, void *arg, int depth);

static rw_walk_result walk_list(rw_ctx *c, List *l, rw_visit_fn fn, void *arg, int depth)
{
    ListCell *lc;
    foreach (lc, l) {
        if (walk(c, (Node *)lfirst(lc), fn, arg, depth) == RW_WALK_STOP)
            return RW_WALK_STOP;
    }
    return RW_WALK_CONTINUE;
}

#define W(x)                                                                                       \
    do {                                                                                           \
        if (walk(c, (Node *)(x), fn, arg, depth + 1) == RW_WALK_STOP)                              \
            return RW_WALK_STOP;                                                                   \
    } while (0)

static rw_walk_result walk_select(rw_ctx *c, SelectStmt *s, rw_visit_fn fn, void *arg, int depth)
{
    W(s->distinctClause);
    W(s->intoClause);
    W(s->targetList);
    W(s->fromClause);
    W(s->whereClause);
    W(s->groupClause);
    W(s->havingClause);
    W(s->windowClause);
    W(s->valuesLists);
    W(s->sortClause);
    W(s->limitOffset);
    W(s->limitCount);
    W(s->lockingClause);
    W(s->withClause);
    W(s->larg);
    W(s->rarg);
    return RW_WALK_CONTINUE;
}

static rw_walk_result walk_children(rw_ctx *c, Node *n, rw_visit_fn fn, void *arg, int depth)
{
    switch (nodeTag(n)) {
    case T_SetToDefault:
    case T_CurrentOfExpr:
    case T_SQLValueFunction:
    case T_Integer:
    case T_Float:
    case T_Boolean:
    case T_String:
    case T_BitString:
    case T_ParamRef:
    case T_A_Const:
    case T_A_Star:
    case T_Alias:
    case T_ColumnRef:
    case T_IntList:
    case T_OidList:
        break;
    case T_List:
        return walk_list(c, (List *)n, fn, arg, depth + 1);
    case T_RangeVar:
        W(((RangeVar *)n)->alias);
        break;
    case T_GroupingFunc:
        W(((GroupingFunc *)n)->args);
        break;
    case T_SubLink:
        W(((SubLink *)n)->testexpr);
        W(((SubLink *)n)->subselect);
        break;
    case T_CaseExpr:
        W(((CaseExpr *)n)->arg);
        W(((CaseExpr *)n)->args);
        W(((CaseExpr *)n)->defresult);
        break;
    case T_CaseWhen:
        W(((CaseWhen *)n)->expr);
        W(((CaseWhen *)n)->result);
        break;
    case T_RowExpr:
        W(((RowExpr *)n)->args);
        break;
    case T_CoalesceExpr:
        W(((CoalesceExpr *)n)->args);
        break;
    case T_MinMaxExpr:
        W(((MinMaxExpr *)n)->args);
        break;
    case T_XmlExpr:
        W(((XmlExpr *)n)->named_args);
        W(((XmlExpr *)n)->args);
        break;
    case T_NullTest:
        W(((NullTest *)n)->arg);
        break;
    case T_BooleanTest:
        W(((BooleanTest *)n)->arg);
        break;
    case T_JoinExpr:
        W(((JoinExpr *)n)->larg);
        W(((JoinExpr *)n)->rarg);
        W(((JoinExpr *)n)->quals);
        W(((JoinExpr *)n)->alias);
        break;
    case T_IntoClause:
        W(((IntoClause *)n)->rel);
        W(((IntoClause *)n)->viewQuery);
        break;
    case T_InsertStmt: {
        InsertStmt *s = (InsertStmt *)n;
        W(s->relation);
        W(s->cols);
        W(s->selectStmt);
        W(s->onConflictClause);
        W(s->returningList);
        W(s->withClause);
        break;
    }
    case T_DeleteStmt: {
        DeleteStmt *s = (DeleteStmt *)n;
        W(s->relation);
        W(s->usingClause);
        W(s->whereClause);
        W(s->returningList);
        W(s->withClause);
        break;
    }
    case T_UpdateStmt: {
        UpdateStmt *s = (UpdateStmt *)n;
        W(s->relation);
        W(s->targetList);
        W(s->whereClause);
        W(s->fromClause);
        W(s->returningList);
        W(s->withClause);
        break;
    }
    case T_MergeStmt: {
        MergeStmt *s = (MergeStmt *)n;
        W(s->relation);
        W(s->sourceRelation);
        W(s->joinCondition);
        W(s->mergeWhenClauses);
        W(s->withClause);
        break;
    }
    case T_MergeWhenClause:
        W(((MergeWhenClause *)n)->condition);
        W(((MergeWhenClause *)n)->targetList);
        W(((MergeWhenClause *)n)->values);
        break;
    case T_SelectStmt:
        return walk_select(c, (SelectStmt *)n, fn, arg, depth);
    case T_A_Expr:
        W(((A_Expr *)n)->lexpr);
        W(((A_Expr *)n)->rexpr);
        break;
    case T_BoolExpr:
        W(((BoolExpr *)n)->args);
        break;
    case T_FuncCall: {
        FuncCall *f = (FuncCall *)n;
        W(f->args);
        W(f->agg_order);
        W(f->agg_filter);
        W(f->over);
        break;
    }
    case T_NamedArgExpr:
        W(((NamedArgExpr *)n)->arg);
        break;
    case T_A_Indices:
        W(((A_Indices *)n)->lidx);
        W(((A_Indices *)n)->uidx);
        break;
    case T_A_Indirection:
        W(((A_Indirection *)n)->arg);
        W(((A_Indirection *)n)->indirection);
        break;
    case T_A_ArrayExpr:
        W(((A_ArrayExpr *)n)->elements);
        break;
    case T_ResTarget:
        W(((ResTarget *)n)->indirection);
        W(((ResTarget *)n)->val);
        break;
    case T_MultiAssignRef:
        /* The source is shared by every column of the group; each ResTarget
         * points at it, so it is walked once per column. Harmless. */
        W(((MultiAssignRef *)n)->source);
        break;
    case T_TypeCast:
        W(((TypeCast *)n)->arg);
        W(((TypeCast *)n)->typeName);
        break;
    case T_CollateClause:
        W(((CollateClause *)n)->arg);
        break;
    case T_SortBy:
        W(((SortBy *)n)->node);
        break;
    case T_WindowDef: {
        WindowDef *w = (WindowDef *)n;
        W(w->partitionClause);
        W(w->orderClause);
        W(w->startOffset);
        W(w->endOffset);
        break;
    }
    case T_RangeSubselect:
        W(((RangeSubselect *)n)->subquery);
        W(((RangeSubselect *)n)->alias);
        break;
    case T_RangeFunction:
        W(((RangeFunction *)n)->functions);
        W(((RangeFunction *)n)->alias);
        W(((RangeFunction *)n)->coldeflist);
        break;
    case T_RangeTableSample:
        W(((RangeTableSample *)n)->relation);
        W(((RangeTableSample *)n)->args);
        W(((RangeTableSample *)n)->repeatable);
        break;
    case T_RangeTableFunc: {
        RangeTableFunc *r = (RangeTableFunc *)n;
        W(r->docexpr);
        W(r->rowexpr);
        W(r->namespaces);
        W(r->columns);
        W(r->alias);
        break;
    }
    case T_RangeTableFuncCol:
        W(((RangeTableFuncCol *)n)->colexpr);
        W(((RangeTableFuncCol *)n)->coldefexpr);
        break;
    case T_TypeName:
        W(((TypeName *)n)->typmods);
        W(((TypeName *)n)->arrayBounds);
        break;
    case T_ColumnDef:
        W(((ColumnDef *)n)->typeName);
        W(((ColumnDef *)n)->raw_default);
        W(((ColumnDef *)n)->collClause);
        break;
    case T_IndexElem:
        W(((IndexElem *)n)->expr);
        break;
    case T_GroupingSet:
        W(((GroupingSet *)n)->content);
        break;
    case T_LockingClause:
        W(((LockingClause *)n)->lockedRels);
        break;
    case T_XmlSerialize:
        W(((XmlSerialize *)n)->expr);
        W(((XmlSerialize *)n)->typeName);
        break;
    case T_WithClause:
        W(((WithClause *)n)->ctes);
        break;
    case T_InferClause:
        W(((InferClause *)n)->indexElems);
        W(((InferClause *)n)->whereClause);
        break;
    case T_OnConflictClause:
        W(((OnConflictClause *)n)->infer);
        W(((OnConflictClause *)n)->targetList);
        W(((OnConflictClause *)n)->whereClause);
        break;
    case T_CommonTableExpr:
        W(((CommonTableExpr *)n)->ctequery);
        W(((CommonTableExpr *)n)->search_clause);
        W(((CommonTableExpr *)n)->cycle_clause);
        break;
    case T_CTESearchClause:
        break;
    case T_CTECycleClause:
        W(((CTECycleClause *)n)->cycle_mark_value);
        W(((CTECycleClause *)n)->cycle_mark_default);
        break;
    default:
        c->unknown_node = true;
        break;
    }
    return RW_WALK_CONTINUE;
}

static rw_walk_result walk(rw_ctx *c, Node *n, rw_visit_fn fn, void *arg, int depth)
{
    if (!n)
        return RW_WALK_CONTINUE;
    if (depth > RW_MAX_DEPTH) {
        c->unknown_node = true;
        return RW_WALK_CONTINUE;
    }
    rw_walk_result r = fn ? fn(c, n, arg) : RW_WALK_CONTINUE;
    if (r != RW_WALK_CONTINUE)
        return r;
    return walk_children(c, n, fn, arg, depth);
}

rw_walk_result rw_walk(rw_ctx *c, Node *n, rw_visit_fn fn, void *arg)
{
    return walk(c, n, fn, arg, 0) == RW_WALK_STOP ? RW_WALK_STOP : RW_WALK_CONTINUE;
}

/* -------------------------------------------------------------- locations */

int rw_node_location(const Node *n)
{
    if (!n)
        return -1;
    switch (nodeTag(n)) {
    case T_RangeVar: return ((const RangeVar *)n)->location;
    case T_SetToDefault: return ((const SetToDefault *)n)->location;
    case T_SQLValueFunction: return ((const SQLValueFunction *)n)->location;
    case T_ParamRef: return ((const ParamRef *)n)->location;
    case T_A_Const: return ((const A_Const *)n)->location;
    case T_GroupingFunc: return ((const GroupingFunc *)n)->location;
    case T_SubLink: return ((const SubLink *)n)->location;
    case T_CaseExpr: return ((const CaseExpr *)n)->location;
    case T_CaseWhen: return ((const CaseWhen *)n)->location;
    case T_RowExpr: return ((const RowExpr *)n)->location;
    case T_CoalesceExpr: return ((const CoalesceExpr *)n)->location;
    case T_MinMaxExpr: return ((const MinMaxExpr *)n)->location;
    case T_XmlExpr: return ((const XmlExpr *)n)->location;
    case T_NullTest: return ((const NullTest *)n)->location;
    case T_BooleanTest: return ((const BooleanTest *)n)->location;
    case T_A_Expr: return ((const A_Expr *)n)->location;
    case T_BoolExpr: return ((const BoolExpr *)n)->location;
    case T_ColumnRef: return ((const ColumnRef *)n)->location;
    case T_FuncCall: return ((const FuncCall *)n)->location;
    case T_NamedArgExpr: return ((const NamedArgExpr *)n)->location;
    case T_A_ArrayExpr: return ((const A_ArrayExpr *)n)->location;
    case T_ResTarget: return ((const ResTarget *)n)->location;
    case T_TypeCast: return ((const TypeCast *)n)->location;
    case T_CollateClause: return ((const CollateClause *)n)->location;
    case T_SortBy: return ((const SortBy *)n)->location;
    case T_WindowDef: return ((const WindowDef *)n)->location;
    case T_RangeTableSample: return ((const RangeTableSample *)n)->location;
    case T_RangeTableFunc: return ((const RangeTableFunc *)n)->location;
    case T_RangeTableFuncCol: return ((const RangeTableFuncCol *)n)->location;
    case T_TypeName: return ((const TypeName *)n)->location;
    case T_ColumnDef: return ((const ColumnDef *)n)->location;
    case T_GroupingSet: return ((const GroupingSet *)n)->location;
    case T_XmlSerialize: return ((const XmlSerialize *)n)->location;
    case T_WithClause: return ((const WithClause *)n)->location;
    case T_InferClause: return ((const InferClause *)n)->location;
    case T_OnConflictClause: return ((const OnConflictClause *)n)->location;
    case T_CommonTableExpr: return ((const CommonTableExpr *)n)->location;
    case T_CTESearchClause: return ((const CTESearchClause *)n)->location;
    case T_CTECycleClause: return ((const CTECycleClause *)n)->location;
    default: return -1;
    }
}

typedef struct loc_acc {
    int lo, hi;
} loc_acc;

static rw_walk_result loc_visit(rw_ctx *c, Node *n, void *arg)
{
    loc_acc *a = arg;
    int l = rw_node_location(n);
    if (l >= 0) {
        if (a->lo < 0 || l < a->lo)
            a->lo = l;
        if (l > a->hi)
            a->hi = l;
    }
    return RW_WALK_CONTINUE;
}

void rw_loc_range(rw_ctx *c, Node *n, int *min_loc, int *max_loc)
{
    loc_acc a = {-1, -1};
    rw_walk(c, n, loc_visit, &a);
    *min_loc = a.lo;
    *max_loc = a.hi;
}

/* -------------------------------------------------------------- dup safety */

/* Type names a cast may name unqualified and still mean pg_catalog's type:
 * only when pg_catalog is searched first, i.e. the path is known and does
 * not list pg_catalog (where it is listed, a schema before it could hold a
 * look-alike type with a cast function of its own). */
static bool builtin_type_ok(rw_ctx *c, TypeName *tn)
{
    static const char *const builtin[] = {"int2", "int4", "int8", "text", "varchar", "bpchar",
                                          "numeric", "uuid", "float4", "float8", "bool", "oid"};
    if (!tn || tn->setof || tn->pct_type || tn->arrayBounds || tn->typmods)
        return false;
    int n = list_length(tn->names);
    if (n == 2) {
        return strcmp(strVal(linitial(tn->names)), "pg_catalog") == 0;
    }
    if (n != 1 || !c->env || !c->env->path_known)
        return false;
    for (int i = 0; i < c->env->n_path; i++)
        if (c->env->path[i] && strcmp(c->env->path[i], "pg_catalog") == 0)
            return false;
    const char *name = strVal(linitial(tn->names));
    for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++)
        if (strcmp(name, builtin[i]) == 0)
            return true;
    return false;
}

bool rw_dup_safe(rw_ctx *c, Node *n)
{
    if (!n)
        return false;
    switch (nodeTag(n)) {
    case T_A_Const:
    case T_ParamRef:
        return true;
    case T_ColumnRef: {
        ListCell *lc;
        foreach (lc, ((ColumnRef *)n)->fields)
            if (!IsA(lfirst(lc), String))
                return false;
        return true;
    }
    case T_TypeCast: {
        TypeCast *tc = (TypeCast *)n;
        /* Only the input function of a built-in type runs: immutable. A cast
         * of a column could run a user's cast function (volatile). */
        Node *arg = tc->arg;
        while (arg && IsA(arg, TypeCast) && builtin_type_ok(c, ((TypeCast *)arg)->typeName))
            arg = ((TypeCast *)arg)->arg;
        return arg && (IsA(arg, A_Const) || IsA(arg, ParamRef)) && builtin_type_ok(c, tc->typeName);
    }
    case T_A_Expr: {
        A_Expr *e = (A_Expr *)n;
        /* An operator is looked up through search_path and may be any
         * (volatile) function: only OPERATOR(pg_catalog.x) is certain. */
        if (e->kind != AEXPR_OP || list_length(e->name) != 2 ||
            strcmp(strVal(linitial(e->name)), "pg_catalog") != 0)
            return false;
        return (!e->lexpr || rw_dup_safe(c, e->lexpr)) && rw_dup_safe(c, e->rexpr);
    }
    default:
        return false;
    }
}

/* ------------------------------------------------------------ select lists */

bool rw_targets_untyped(List *targets)
{
    ListCell *lc;
    foreach (lc, targets) {
        ResTarget *rt = lfirst(lc);
        if (!IsA(rt, ResTarget) || !rt->val)
            return true;
        Node *v = rt->val;
        if (IsA(v, ParamRef))
            return true;
        if (IsA(v, A_Const)) {
            A_Const *k = (A_Const *)v;
            if (k->isnull || IsA(&k->val, String) || IsA(&k->val, BitString))
                return true;
        }
    }
    return false;
}

bool rw_targets_have_star(List *targets)
{
    ListCell *lc;
    foreach (lc, targets) {
        ResTarget *rt = lfirst(lc);
        if (!IsA(rt, ResTarget) || !rt->val)
            return true;
        if (IsA(rt->val, ColumnRef)) {
            ColumnRef *cr = (ColumnRef *)rt->val;
            if (IsA(llast(cr->fields), A_Star))
                return true;
        }
        if (IsA(rt->val, A_Indirection)) {
            A_Indirection *ind = (A_Indirection *)rt->val;
            if (ind->indirection && IsA(llast(ind->indirection), A_Star))
                return true;
        }
    }
    return false;
}

/* ------------------------------------------------------------ ref names */

typedef struct ref_acc {
    const char *name;
    bool found;
} ref_acc;

static rw_walk_result ref_visit(rw_ctx *c, Node *n, void *arg)
{
    ref_acc *r = arg;
    const char *s = NULL;
    switch (nodeTag(n)) {
    case T_RangeVar: {
        RangeVar *rv = (RangeVar *)n;
        s = rv->alias ? rv->alias->aliasname : rv->relname;
        break;
    }
    case T_Alias:
        s = ((Alias *)n)->aliasname;
        break;
    case T_CommonTableExpr:
        s = ((CommonTableExpr *)n)->ctename;
        break;
    default:
        break;
    }
    if (s && strcmp(s, r->name) == 0) {
        r->found = true;
        return RW_WALK_STOP;
    }
    return RW_WALK_CONTINUE;
}

bool rw_uses_refname(rw_ctx *c, Node *n, const char *name)
{
    ref_acc r = {name, false};
    rw_walk(c, n, ref_visit, &r);
    return r.found;
}
