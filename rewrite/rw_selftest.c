/*
 * rw_selftest.c -- start-up proof that the parser we link is the parser we
 * were built against, plus small lookups (names, fingerprint).
 *
 * rewrite/ reads libpg_query's raw node structs through PostgreSQL 15's
 * server headers. A different libpg_query (another major version, another
 * node layout, other token numbers) would make us read garbage; this parses
 * and scans known texts and checks tags, fields, locations and token codes,
 * so the proxy can refuse to start instead.
 */
#include "rewrite/rw_pg.h"

#include "common/keywords.h"
#include "parser/scanner.h"

#include <pg_query.h>
#include <pg_query/pg_query_internal.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct st_extra {
    core_yy_extra_type core;
    int pad[16];
} st_extra;

static const char *check_tree(List *tree)
{
    /* "INSERT INTO s.t AS x (a, b) VALUES ($1, 'x') RETURNING a" */
    if (list_length(tree) != 1)
        return "rewrite selftest: statement count";
    RawStmt *rs = linitial(tree);
    if (!IsA(rs, RawStmt) || rs->stmt_location != 0 || rs->stmt_len != 0 || !IsA(rs->stmt, InsertStmt))
        return "rewrite selftest: RawStmt";
    InsertStmt *ins = (InsertStmt *)rs->stmt;
    RangeVar *rv = ins->relation;
    if (!rv || !IsA(rv, RangeVar) || !rv->schemaname || strcmp(rv->schemaname, "s") != 0 ||
        strcmp(rv->relname, "t") != 0 || rv->location != 12 || !rv->alias || strcmp(rv->alias->aliasname, "x") != 0)
        return "rewrite selftest: RangeVar layout";
    if (list_length(ins->cols) != 2)
        return "rewrite selftest: InsertStmt.cols";
    ResTarget *b = lsecond(ins->cols);
    if (!IsA(b, ResTarget) || strcmp(b->name, "b") != 0 || b->location != 25)
        return "rewrite selftest: ResTarget layout";
    SelectStmt *sel = (SelectStmt *)ins->selectStmt;
    if (!sel || !IsA(sel, SelectStmt) || list_length(sel->valuesLists) != 1 || sel->op != SETOP_NONE)
        return "rewrite selftest: SelectStmt layout";
    List *row = linitial(sel->valuesLists);
    ParamRef *pr = linitial(row);
    A_Const *k = lsecond(row);
    if (list_length(row) != 2 || !IsA(pr, ParamRef) || pr->number != 1 || pr->location != 36 || !IsA(k, A_Const) ||
        k->isnull || !IsA(&k->val, String) || strcmp(strVal(&k->val), "x") != 0 || k->location != 40)
        return "rewrite selftest: VALUES layout";
    if (list_length(ins->returningList) != 1 || ins->onConflictClause || ins->withClause)
        return "rewrite selftest: InsertStmt layout";
    return NULL;
}

static const char *check_tree2(List *tree)
{
    /* "UPDATE p SET (a, b) = ROW(1, 2) WHERE c IS NOT NULL" */
    RawStmt *rs = linitial(tree);
    UpdateStmt *u = (UpdateStmt *)rs->stmt;
    if (!IsA(u, UpdateStmt) || list_length(u->targetList) != 2)
        return "rewrite selftest: UpdateStmt layout";
    ResTarget *rt = lsecond(u->targetList);
    MultiAssignRef *m = (MultiAssignRef *)rt->val;
    if (!IsA(m, MultiAssignRef) || m->colno != 2 || m->ncolumns != 2 || !IsA(m->source, RowExpr) ||
        ((RowExpr *)m->source)->location != 22)
        return "rewrite selftest: MultiAssignRef layout";
    NullTest *nt = (NullTest *)u->whereClause;
    if (!IsA(nt, NullTest) || nt->nulltesttype != IS_NOT_NULL)
        return "rewrite selftest: NullTest layout";
    return NULL;
}

static const char *parse_check(const char *sql, const char *(*check)(List *))
{
    MemoryContext ctx = pg_query_enter_memory_context();
    PgQueryInternalParsetreeAndError r = pg_query_raw_parse(sql);
    free(r.stderr_buffer);
    const char *err = r.error ? "rewrite selftest: libpg_query could not parse a known statement" : check(r.tree);
    if (r.error)
        pg_query_free_error(r.error);
    pg_query_exit_memory_context(ctx);
    return err;
}

static bool parses(const char *sql)
{
    MemoryContext ctx = pg_query_enter_memory_context();
    PgQueryInternalParsetreeAndError r = pg_query_raw_parse(sql);
    free(r.stderr_buffer);
    bool ok = r.error == NULL;
    if (r.error)
        pg_query_free_error(r.error);
    pg_query_exit_memory_context(ctx);
    return ok;
}

static const char *check_tokens(void)
{
    static const char sql[] = "a 'b' $1 :: 1.5 -- c\n/* d */ 7 select";
    const int want[] = {RW_T_IDENT, RW_T_SCONST, RW_T_PARAM, RW_T_TYPECAST, RW_T_FCONST,
                        RW_T_SQL_COMMENT, RW_T_C_COMMENT, RW_T_ICONST, -1};
    const int at[] = {0, 2, 6, 9, 12, 16, 21, 29, 31};
    int kw = ScanKeywordLookup("select", &ScanKeywords);
    MemoryContext ctx = pg_query_enter_memory_context();
    st_extra ex;
    memset(&ex, 0, sizeof(ex));
    core_YYSTYPE v;
    YYLTYPE loc = 0;
    core_yyscan_t sc = scanner_init(sql, &ex.core, &ScanKeywords, ScanKeywordTokens);
    const char *err = NULL;
    for (int i = 0; i < 9 && !err; i++) {
        int code = core_yylex(&v, &loc, sc);
        int expect = want[i] >= 0 ? want[i] : (kw >= 0 ? ScanKeywordTokens[kw] : -2);
        if (code != expect || loc != at[i] || (want[i] < 0 && code < RW_T_FIRST_KEYWORD))
            err = "rewrite selftest: scanner token codes differ from libpg_query 15-4.0.0";
    }
    if (!err && core_yylex(&v, &loc, sc) != 0)
        err = "rewrite selftest: scanner did not end";
    scanner_finish(sc);
    pg_query_exit_memory_context(ctx);
    return err;
}

const char *rw_selftest(void)
{
    const char *err = parse_check("INSERT INTO s.t AS x (a, b) VALUES ($1, 'x') RETURNING a", check_tree);
    if (!err)
        err = parse_check("UPDATE p SET (a, b) = ROW(1, 2) WHERE c IS NOT NULL", check_tree2);
    if (!err)
        err = check_tokens();
    if (err)
        return err;
    /* standard_conforming_strings reaches libpg_query's lexer. */
    bool saved = rw_tls_get_std_strings();
    rw_tls_set_std_strings(false);
    bool off_ok = parses("SELECT 'a\\'b'");
    rw_tls_set_std_strings(true);
    bool on_fails = !parses("SELECT 'a\\'b'");
    rw_tls_set_std_strings(saved);
    if (!off_ok || !on_fails)
        return "rewrite selftest: standard_conforming_strings does not reach libpg_query's lexer";
    return NULL;
}

/* ----------------------------------------------------------------- lookups */

void rw_fingerprint(const char *sql, char out[17])
{
    out[0] = '\0';
    PgQueryFingerprintResult r = pg_query_fingerprint(sql);
    if (!r.error && r.fingerprint_str && strlen(r.fingerprint_str) == 16)
        memcpy(out, r.fingerprint_str, 17);
    pg_query_free_fingerprint_result(r);
}

const char *rw_rule_name(rw_rule r)
{
    static const char *const names[RW_RULE__COUNT] = {
        [RW_RULE_NONE] = "none", [RW_R1_DERIVE] = "R1", [RW_R2_VERIFY] = "R2",
        [RW_R3_RESOLVABLE] = "R3", [RW_R4_IMMUTABLE_TENANT] = "R4", [RW_R5_VERIFY_UPDATE] = "R5",
        [RW_R6_AUDIT] = "R6", [RW_RULE_FORM] = "form", [RW_RULE_BEYOND_SIGHT] = "beyond_sight",
        [RW_RULE_STALE_PREPARED] = "stale_prepared",
    };
    return (unsigned)r < RW_RULE__COUNT ? names[r] : "?";
}

const char *rw_event_kind_name(rw_event_kind k)
{
    static const char *const names[RW_EV__COUNT] = {"seen", "passed", "rewritten", "rejected", "refused"};
    return (unsigned)k < RW_EV__COUNT ? names[k] : "?";
}

const char *rw_effect_kind_name(rw_effect_kind k)
{
    switch (k) {
    case RW_FX_SET_PATH: return "set_path";
    case RW_FX_SET_LOCAL_PATH: return "set_local_path";
    case RW_FX_RESET_PATH: return "reset_path";
    case RW_FX_PATH_UNKNOWN: return "path_unknown";
    case RW_FX_CREATE_TEMP: return "create_temp";
    case RW_FX_DROP_REL: return "drop_rel";
    case RW_FX_DISCARD_ALL: return "discard_all";
    case RW_FX_DISCARD_TEMP: return "discard_temp";
    case RW_FX_PREPARE: return "prepare";
    case RW_FX_DEALLOCATE: return "deallocate";
    case RW_FX_EXECUTE: return "execute";
    case RW_FX_SAVEPOINT: return "savepoint";
    case RW_FX_RELEASE: return "release";
    case RW_FX_ROLLBACK_TO: return "rollback_to";
    case RW_FX_LEXING: return "lexing";
    }
    return "?";
}

const char *rw_action_name(rw_action a)
{
    switch (a) {
    case RW_PASS: return "pass";
    case RW_REPLACE: return "replace";
    case RW_REJECT: return "reject";
    }
    return "?";
}
