/*
 * fuzz_rewrite -- rw_decide() on arbitrary SQL text with a fixed policy.
 *
 * Input: one flag byte, then the statement text (any bytes; cut at the first
 * NUL, as the proxy only ever passes NUL-terminated texts).
 *
 *   flags & 0x01  extended protocol (Parse) instead of a simple Query
 *   flags & 0x06  environment: 0 unknown, 1 known "public", 2 a path taken
 *                 from the text after a 0x1e byte (through rw_split_path),
 *                 3 known path with a temp table named policies
 *   flags & 0x08  standard_conforming_strings off
 *   flags & 0x10  client-only encoding (SJIS ...)
 *   flags & 0x20  observe mode instead of enforce
 *   flags & 0x40  a catalog (column order) for positional INSERTs
 *   flags & 0x80  the login's look-alikes are known: other.policies and
 *                 a.findings when bit 0x04 is set too, else none
 *
 * What must hold, else abort() (a crash for libFuzzer):
 *   - RW_REPLACE and RW_REJECT texts parse with libpg_query;
 *   - a REPLACE keeps the statement count of a simple Query;
 *   - every REWRITTEN event has its helper call in the rewritten parse tree
 *     (a real FuncCall tenantguard.<fn>('<table label>', ...), counted in the
 *     tree, not in the text, minus the ones the client wrote itself);
 *   - a REJECT carries a SQLSTATE, a message and a marker found in its text;
 *   - the same question asked again through a cache gets the same answer;
 *   - enforce mode, path known to be "public": a text whose parse tree has
 *     an INSERT into a watched table is never passed unchanged.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pg_query.h>

#include "policy/config.h"
#include "rewrite/rewrite.h"

static tg_config *cfg;
static rw_policy *pol_enforce, *pol_observe;
static rw_cache *cache;

static const char *const catalog_cols[] = {"id", "tenant_id", "name", "workspace_id"};

static void die(const char *what, const char *sql, const rw_decision *d)
{
    fprintf(stderr, "fuzz_rewrite: %s\n--- input:\n%s\n--- action %s, text:\n%s\n", what, sql,
            rw_action_name(d->action), d->text ? d->text : "(null)");
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    tg_config_error err;
    cfg = tg_config_load_string("fuzz", "[tenantguard]\nmode = enforce\n", &err);
    if (!cfg) {
        fprintf(stderr, "config: %s\n", err.message);
        abort();
    }
    pol_enforce = rw_policy_new(&cfg->policy, NULL, 1);
    tg_mode *modes = calloc((size_t)cfg->policy.n_tables, sizeof(*modes));
    for (int i = 0; i < cfg->policy.n_tables; i++)
        modes[i] = TG_MODE_OBSERVE;
    pol_observe = rw_policy_new(&cfg->policy, modes, 2);
    free(modes);
    cache = rw_cache_new(1 << 20, 256);
    if (!pol_enforce || !pol_observe || !cache || rw_selftest())
        abort();
    return 0;
}

/* Occurrences of `needle` in `hay`. */
static int count(const char *hay, const char *needle)
{
    int n = 0;
    size_t nl = strlen(needle);
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += nl)
        n++;
    return n;
}

/* The parse tree as JSON, or NULL when the text does not parse. */
static char *tree_of(const char *sql, int *n_stmts)
{
    PgQueryParseResult r = pg_query_parse(sql);
    char *out = NULL;
    if (!r.error && r.parse_tree)
        out = strdup(r.parse_tree);
    pg_query_free_parse_result(r);
    if (out && n_stmts) {
        PgQuerySplitResult sr = pg_query_split_with_parser(sql);
        *n_stmts = sr.error ? -1 : sr.n_stmts;
        pg_query_free_split_result(sr);
    }
    return out;
}

/* Helper calls with a given table label as first argument, in a tree. */
static int helper_calls(const char *tree, const char *fn, const char *label)
{
    char pat[512];
    snprintf(pat, sizeof(pat),
             "{\"String\":{\"sval\":\"%s\"}},{\"String\":{\"sval\":\"%s\"}}],\"args\":[{\"A_Const\":"
             "{\"sval\":{\"sval\":\"%s\"}",
             cfg->policy.helper_schema, fn, label);
    int n = count(tree, pat);
    /* a positional INSERT passes the label through layout_guard() first */
    snprintf(pat, sizeof(pat),
             "{\"String\":{\"sval\":\"%s\"}},{\"String\":{\"sval\":\"%s\"}}],\"args\":[{\"FuncCall\":"
             "{\"funcname\":[{\"String\":{\"sval\":\"%s\"}},{\"String\":{\"sval\":\"layout_guard\"}}]",
             cfg->policy.helper_schema, fn, cfg->policy.helper_schema);
    return n + count(tree, pat);
}

static const char *const rule_fns[RW_RULE__COUNT][4] = {
    [RW_R1_DERIVE] = {"ws_derive", NULL},
    [RW_R2_VERIFY] = {"ws_verify", NULL},
    [RW_R4_IMMUTABLE_TENANT] = {"tenant_keep", NULL},
    [RW_R5_VERIFY_UPDATE] = {"ws_verify_update", NULL},
    [RW_R6_AUDIT] = {"audit_derive", "audit_verify", "audit_verify_tenant", NULL},
};

/* The label the rewriter gives a table in its helper calls: the name, or
 * schema.name outside public (rw_policy.c mk_label). */
static void label_of(int t, char *buf, size_t len)
{
    const tg_table *tb = &cfg->policy.tables[t];
    if (strcmp(tb->schema, "public") == 0)
        snprintf(buf, len, "%s", tb->name);
    else
        snprintf(buf, len, "%s.%s", tb->schema, tb->name);
}

static void check_events(const char *sql, const char *in_tree, const char *out_tree, const rw_decision *d)
{
    for (int i = 0; i < d->n_events; i++) {
        const rw_event *e = &d->events[i];
        if (e->kind != RW_EV_REWRITTEN || e->table < 0 || e->rule >= RW_RULE__COUNT || !rule_fns[e->rule][0])
            continue;
        /* events of this (table, rule) pair: each needs a call of its own */
        int want = 0;
        for (int j = 0; j < d->n_events; j++)
            want += d->events[j].kind == RW_EV_REWRITTEN && d->events[j].table == e->table &&
                    d->events[j].rule == e->rule;
        char label[200];
        label_of(e->table, label, sizeof(label));
        int got = 0;
        for (int k = 0; rule_fns[e->rule][k]; k++)
            got += helper_calls(out_tree, rule_fns[e->rule][k], label) -
                   helper_calls(in_tree ? in_tree : "", rule_fns[e->rule][k], label);
        if (got < want) {
            char what[300];
            snprintf(what, sizeof(what), "%d %s event(s) on %s but %d helper call(s) in the rewritten tree",
                     want, rw_rule_name(e->rule), label, got);
            die(what, sql, d);
        }
    }
}

/* Tenant-owned INSERT targets in a parse tree (relname of an InsertStmt whose
 * schema is absent or public). Rough on purpose: it only looks at the
 * "InsertStmt":{"relation":{...}} prefix the JSON output always has. */
static bool inserts_watched(const char *tree)
{
    for (const char *p = tree; (p = strstr(p, "\"InsertStmt\":{\"relation\":{")) != NULL; p++) {
        const char *rel = p + strlen("\"InsertStmt\":{\"relation\":{");
        /* db.schema.table: the catalog name comes first and only PostgreSQL
         * checks it (another database is an error there); the schema decides */
        if (strncmp(rel, "\"catalogname\":\"", 15) == 0) {
            const char *end = strchr(rel + 15, '"');
            if (!end || end[1] != ',')
                continue;
            rel = end + 2;
        }
        bool other_schema = strncmp(rel, "\"schemaname\":", 13) == 0 &&
                            strncmp(rel, "\"schemaname\":\"public\"", 21) != 0;
        if (other_schema)
            continue;
        const char *rn = strstr(rel, "\"relname\":\"");
        if (!rn)
            continue;
        rn += strlen("\"relname\":\"");
        for (int t = 0; t < cfg->policy.n_tables; t++) {
            if (cfg->policy.tables[t].kind != TG_TABLE_OWNED)
                continue;   /* an audit row without a tenant passes as sent (R6) */
            size_t nl = strlen(cfg->policy.tables[t].name);
            if (strncmp(rn, cfg->policy.tables[t].name, nl) == 0 && rn[nl] == '"')
                return true;
        }
    }
    return false;
}

static bool same_decision(const rw_decision *a, const rw_decision *b)
{
    if (a->action != b->action || a->n_events != b->n_events || a->n_effects != b->n_effects)
        return false;
    if ((a->text == NULL) != (b->text == NULL))
        return false;
    if (a->text && (a->len != b->len || memcmp(a->text, b->text, a->len) != 0))
        return false;
    return a->n_events == 0 || memcmp(a->events, b->events, sizeof(rw_event) * (size_t)a->n_events) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 16384)
        return 0;
    uint8_t flags = data[0];
    char *sql = malloc(size);
    memcpy(sql, data + 1, size - 1);
    sql[size - 1] = '\0';
    size_t len = strlen(sql);

    /* environment */
    rw_env env = {.std_strings = !(flags & 0x08), .client_only_encoding = (flags & 0x10) != 0};
    static const char *const public_path[] = {"public"};
    static const char *const temp_names[] = {"policies"};
    char **split = NULL;
    int n_split = 0;
    switch ((flags >> 1) & 3) {
    case 0:
        env.path_known = false;
        break;
    case 1:
        env.path_known = true;
        env.path = public_path;
        env.n_path = 1;
        break;
    case 2: {
        char *sep = strchr(sql, 0x1e);
        if (sep) {
            *sep = '\0';
            split = rw_split_path(sep + 1, &n_split);
            len = strlen(sql);
        }
        env.path_known = split != NULL;
        env.path = (const char *const *)split;
        env.n_path = n_split;
        break;
    }
    default:
        env.path_known = true;
        env.path = public_path;
        env.n_path = 1;
        env.temp_rels = temp_names;
        env.n_temp_rels = 1;
        break;
    }
    /* With the fuzzed path (case 2): the login knew look-alikes in two of
     * the schemas it may name, or knew there were none. */
    static const char *const rel_schemas[] = {"other", "a"}, *const rel_names[] = {"policies", "findings"};
    if (flags & 0x80) {
        env.rels_known = true;
        env.rel_schemas = rel_schemas;
        env.rel_names = rel_names;
        env.n_rels = (flags & 0x04) ? 2 : 0;
    }
    env.hash = rw_env_hash(&env);

    rw_catalog_table ct = {.table = 0, .columns = catalog_cols, .n_columns = 4};
    rw_catalog cat = {.tables = &ct, .n_tables = 1, .version = 7};
    const rw_catalog *catalog = (flags & 0x40) ? &cat : NULL;
    const rw_policy *pol = (flags & 0x20) ? pol_observe : pol_enforce;
    rw_proto proto = (flags & 1) ? RW_PROTO_EXTENDED : RW_PROTO_SIMPLE;

    rw_decision d = rw_decide(NULL, pol, &env, catalog, proto, sql, len);
    if (d.action == RW_REPLACE || d.action == RW_REJECT) {
        if (!d.text || strlen(d.text) != d.len)
            die("REPLACE/REJECT without a text of its length", sql, &d);
        int n_in = 0, n_out = 0;
        char *out_tree = tree_of(d.text, &n_out);
        if (!out_tree)
            die("the decided text does not parse", sql, &d);
        char *in_tree = tree_of(sql, &n_in);
        if (d.action == RW_REPLACE && proto == RW_PROTO_SIMPLE && in_tree && n_in != n_out)
            die("a REPLACE changed the number of statements", sql, &d);
        if (d.action == RW_REPLACE) {
            check_events(sql, in_tree, out_tree, &d);
            /* the type-error wording reads the helper calls back out of any rewrite */
            static const char *const msgs[] = {
                "function tenantguard.as_type(bigint, bigint, text) does not exist",
                "function tenantguard.tenant_keep(unknown, unknown, bigint, text) does not exist",
                "function tenantguard.ws_verify(unknown, bigint, bigint, bigint, text, unknown) does not exist",
            };
            char mapped[256];
            if (rw_map_helper_error(pol, d.text, msgs[len % 3], (int)(len % (d.len + 2)), mapped, sizeof(mapped)) &&
                (strncmp(mapped, "column \"", 8) != 0 || !strstr(mapped, "\" is of type ")))
                die("a mapped type error of another shape", sql, &d);
        }
        if (d.action == RW_REJECT &&
            (!d.sqlstate || strlen(d.sqlstate) != 5 || !d.message || !d.marker || !strstr(d.text, d.marker)))
            die("a REJECT without sqlstate/message/marker", sql, &d);
        free(in_tree);
        free(out_tree);
    } else if (d.action == RW_PASS && pol == pol_enforce && !env.client_only_encoding &&
               ((flags >> 1) & 3) == 1 && !(d.flags & RW_F_PARSE_FAILED)) {
        char *in_tree = tree_of(sql, NULL);
        if (in_tree && inserts_watched(in_tree) && !strstr(in_tree, "\"ExplainStmt\"") &&
            !strstr(in_tree, "\"RuleStmt\"") && !strstr(in_tree, "\"CreateFunctionStmt\""))
            die("enforce mode passed an INSERT into a watched table unchanged", sql, &d);
        free(in_tree);
    }

    /* the cache answers what a fresh decision answers */
    rw_decision c1 = rw_decide(cache, pol, &env, catalog, proto, sql, len);
    rw_decision c2 = rw_decide(cache, pol, &env, catalog, proto, sql, len);
    if (!same_decision(&d, &c1) || !same_decision(&c1, &c2))
        die("cached and uncached decisions differ", sql, &d);
    rw_decision_release(&c2);
    rw_decision_release(&c1);
    rw_decision_release(&d);
    rw_split_path_free(split, n_split);
    free(sql);
    return 0;
}
