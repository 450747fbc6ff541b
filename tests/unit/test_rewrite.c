/*
 * test_rewrite.c -- rewrite/ unit tests.
 *
 *   - the case table (test_rewrite_cases.c): SQL in, action / exact text /
 *     SQLSTATE / message / events / effects / flags out; every REPLACE and
 *     REJECT text is parsed again and must parse; every case is decided
 *     twice through one cache and the second answer must be the cached
 *     copy of the first;
 *   - the pre-filter against a naive reference search, names placed across
 *     every 16-byte block boundary, in every letter case;
 *   - the cache's bounds, keys and reference counting;
 *   - search_path splitting, the environment hash, the start-up self test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pg_query.h>

#include "policy/config.h"
#include "rewrite/rw_internal.h"
#include "tests/unit/test_rewrite.h"

static tg_config *cfg;

static tg_config *load_cfg(void)
{
    tg_config_error err;
    tg_config *c = tg_config_load_string("test", "[tenantguard]\nmode = enforce\n", &err);
    if (!c)
        fail_msg("config: %s", err.message);
    return c;
}

static int table_index(const char *name)
{
    for (int i = 0; i < cfg->policy.n_tables; i++)
        if (strcmp(cfg->policy.tables[i].name, name) == 0)
            return i;
    fail_msg("no table %s", name);
    return -1;
}

/* "enforce" / "observe" / "off", then ",table=mode" overrides. */
static rw_policy *policy_for(const char *spec, uint64_t generation)
{
    int n = cfg->policy.n_tables;
    tg_mode modes[64];
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", spec ? spec : "enforce");
    char *save = NULL;
    char *tok = strtok_r(buf, ",", &save);
    tg_mode m;
    assert_int_equal(tg_mode_parse(tok, &m), 0);
    for (int i = 0; i < n; i++)
        modes[i] = m;
    while ((tok = strtok_r(NULL, ",", &save))) {
        char *eq = strchr(tok, '=');
        assert_non_null(eq);
        *eq = '\0';
        assert_int_equal(tg_mode_parse(eq + 1, &m), 0);
        modes[table_index(tok)] = m;
    }
    rw_policy *p = rw_policy_new(&cfg->policy, modes, generation);
    assert_non_null(p);
    return p;
}

typedef struct env_hold {
    rw_env env;
    char **path;
    int n_path;
    const char *temps[8];
    const char *rel_s[8], *rel_n[8];
} env_hold;

static const rw_env *env_for(const char *spec, env_hold *h)
{
    memset(h, 0, sizeof(*h));
    if (!spec)
        return NULL;
    h->env.std_strings = true;
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", spec);
    char *save = NULL;
    for (char *tok = strtok_r(buf, "|", &save); tok; tok = strtok_r(NULL, "|", &save)) {
        if (strncmp(tok, "path=", 5) == 0) {
            h->path = rw_split_path(tok + 5, &h->n_path);
            assert_non_null(h->path);
            h->env.path_known = true;
            h->env.path = (const char *const *)h->path;
            h->env.n_path = h->n_path;
        } else if (strncmp(tok, "temp=", 5) == 0) {
            h->temps[h->env.n_temp_rels++] = strdup(tok + 5);
        } else if (strncmp(tok, "rel=", 4) == 0) {   /* rel=schema.name: a look-alike */
            char *r = strdup(tok + 4), *dot = r ? strchr(r, '.') : NULL;
            assert_non_null(dot);
            *dot = '\0';
            h->rel_s[h->env.n_rels] = r;
            h->rel_n[h->env.n_rels++] = dot + 1;
            h->env.rels_known = true;
        } else if (strcmp(tok, "rels") == 0) {   /* the login's catalog of look-alikes: none */
            h->env.rels_known = true;
        } else if (strcmp(tok, "std=off") == 0) {
            h->env.std_strings = false;
        } else if (strcmp(tok, "coe") == 0) {
            h->env.client_only_encoding = true;
        } else {
            fail_msg("bad env %s", tok);
        }
    }
    h->env.temp_rels = h->temps;
    h->env.rel_schemas = h->rel_s;
    h->env.rel_names = h->rel_n;
    h->env.hash = rw_env_hash(&h->env);
    return &h->env;
}

static void env_release(env_hold *h)
{
    rw_split_path_free(h->path, h->n_path);
    for (int i = 0; i < h->env.n_temp_rels; i++)
        free((char *)h->temps[i]);
    for (int i = 0; i < h->env.n_rels; i++)
        free((char *)h->rel_s[i]);
}

typedef struct cat_hold {
    rw_catalog cat;
    rw_catalog_table t;
    char **cols;
} cat_hold;

static const rw_catalog *catalog_for(const char *spec, cat_hold *h)
{
    memset(h, 0, sizeof(*h));
    if (!spec)
        return NULL;
    const char *eq = strchr(spec, '=');
    char name[64];
    snprintf(name, sizeof(name), "%.*s", (int)(eq - spec), spec);
    int n = 0;
    h->cols = rw_split_path(eq + 1, &n);
    h->t.table = table_index(name);
    h->t.columns = (const char *const *)h->cols;
    h->t.n_columns = n;
    h->cat.tables = &h->t;
    h->cat.n_tables = 1;
    h->cat.version = 7;
    return &h->cat;
}

/* ------------------------------------------------------------- formatting */

static void events_str(const rw_decision *d, char *out, size_t len)
{
    size_t n = 0;
    out[0] = '\0';
    for (int i = 0; i < d->n_events; i++) {
        const rw_event *e = &d->events[i];
        n += (size_t)snprintf(out + n, len - n, "%s%s/%s/%s", i ? " " : "", rw_event_kind_name(e->kind),
                              e->rule == RW_RULE_NONE ? "" : rw_rule_name(e->rule),
                              e->table >= 0 ? cfg->policy.tables[e->table].name : "");
        if (n >= len)
            fail_msg("events too long");
    }
}

static void effects_str(const rw_decision *d, char *out, size_t len)
{
    size_t n = 0;
    out[0] = '\0';
    for (int i = 0; i < d->n_effects; i++) {
        const rw_effect *e = &d->effects[i];
        n += (size_t)snprintf(out + n, len - n, "%s%s", i ? " " : "", rw_effect_kind_name(e->kind));
        if (e->stmt)
            n += (size_t)snprintf(out + n, len - n, "[%d]", e->stmt);
        if (e->arg)
            n += (size_t)snprintf(out + n, len - n, "=%s", e->arg);
        if (e->writes_watched)
            n += (size_t)snprintf(out + n, len - n, "+w");
        if (e->local)
            n += (size_t)snprintf(out + n, len - n, "+l");
        if (e->deferred)
            n += (size_t)snprintf(out + n, len - n, "+d");
        if (n >= len)
            fail_msg("effects too long");
    }
}

/* A rewritten text must parse (under the session's string syntax). */
static void assert_parses(const char *name, const char *sql, bool std)
{
    rw_tls_set_std_strings(std);
    PgQueryParseResult r = pg_query_parse(sql);
    rw_tls_set_std_strings(true);
    if (r.error)
        fail_msg("%s: rewritten text does not parse (%s at %d): %s", name, r.error->message, r.error->cursorpos, sql);
    pg_query_free_parse_result(r);
}

/* ------------------------------------------------------------- the table */

static void check_case(const rw_case *k, const rw_decision *d, bool std)
{
    char buf[4096];
    if (d->action != k->action)
        fail_msg("%s: action %s, want %s (text %s, message %s)", k->name, rw_action_name(d->action),
                 rw_action_name(k->action), d->text ? d->text : "-", d->message ? d->message : "-");
    if (k->out) {
        if (!d->text || strcmp(d->text, k->out) != 0)
            fail_msg("%s:\n  got  %s\n  want %s", k->name, d->text ? d->text : "(null)", k->out);
        if (d->len != strlen(k->out))
            fail_msg("%s: len %zu", k->name, d->len);
    } else if (d->text) {
        fail_msg("%s: unexpected text %s", k->name, d->text);
    }
    if ((k->sqlstate == NULL) != (d->sqlstate == NULL) || (k->sqlstate && strcmp(k->sqlstate, d->sqlstate) != 0))
        fail_msg("%s: sqlstate %s", k->name, d->sqlstate ? d->sqlstate : "(null)");
    if (k->msg && (!d->message || !strstr(d->message, k->msg)))
        fail_msg("%s: message %s lacks %s", k->name, d->message ? d->message : "(null)", k->msg);
    events_str(d, buf, sizeof(buf));
    if (strcmp(buf, k->events) != 0)
        fail_msg("%s: events [%s], want [%s]", k->name, buf, k->events);
    effects_str(d, buf, sizeof(buf));
    if (strcmp(buf, k->effects) != 0)
        fail_msg("%s: effects [%s], want [%s]", k->name, buf, k->effects);
    if ((d->flags & ~RW_F_CACHED) != k->flags)
        fail_msg("%s: flags %#x, want %#x", k->name, d->flags, k->flags);
    if (d->action == RW_REJECT) {
        if (!d->marker || !d->text || !strstr(d->text, d->marker) || !d->message ||
            strncmp(d->message, "tenantguard: ", 13) != 0)
            fail_msg("%s: a rejection needs text, marker and a tenantguard message", k->name);
    }
    if (d->action != RW_PASS)
        assert_parses(k->name, d->text, std);
}

static void test_case_table(void **state)
{
    (void)state;
    assert_true(rw_n_cases >= 150);
    rw_cache *cache = rw_cache_new(1 << 20, 10000);
    for (int i = 0; i < rw_n_cases; i++) {
        const rw_case *k = &rw_cases[i];
        rw_policy *p = policy_for(k->mode, (uint64_t)i + 1);
        env_hold eh;
        cat_hold ch;
        const rw_env *env = env_for(k->env, &eh);
        const rw_catalog *cat = catalog_for(k->catalog, &ch);
        size_t len = k->sql_len ? k->sql_len : strlen(k->sql);
        bool std = !env || env->std_strings;

        rw_decision d = rw_decide(NULL, p, env, cat, k->proto, k->sql, len);
        check_case(k, &d, std);
        assert_false(d.flags & RW_F_CACHED);
        /* Through the cache: a miss, then a hit that answers the same. */
        rw_decision d1 = rw_decide(cache, p, env, cat, k->proto, k->sql, len);
        rw_decision d2 = rw_decide(cache, p, env, cat, k->proto, k->sql, len);
        check_case(k, &d1, std);
        check_case(k, &d2, std);
        if (!(k->flags & RW_F_PREFILTERED))
            assert_true(d2.flags & RW_F_CACHED);
        rw_decision_release(&d);
        rw_decision_release(&d1);
        rw_decision_release(&d2);
        env_release(&eh);
        rw_split_path_free(ch.cols, ch.t.n_columns);
        rw_policy_free(p);
    }
    rw_cache_free(cache);
}

/* ------------------------------------------------------------ pre-filter */

static bool naive_has(const char *hay, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++) {
        size_t j = 0;
        while (j < n && ((unsigned char)hay[i + j] | 0x20) == ((unsigned char)needle[j] | 0x20))
            j++;
        if (j == n)
            return true;
    }
    return false;
}

static uint64_t rng = 88172645463325252ULL;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Every watched name, in random letter case, at every offset 0..47 inside
 * filler text: always found, and with exactly the right table bit. */
static void test_prefilter_finds_every_name(void **state)
{
    (void)state;
    rw_policy *p = policy_for("enforce", 1);
    char buf[160];
    for (int t = 0; t < cfg->policy.n_tables; t++) {
        const char *name = cfg->policy.tables[t].name;
        size_t nl = strlen(name);
        for (size_t off = 0; off < 48; off++) {
            memset(buf, '.', sizeof(buf));
            for (size_t k = 0; k < nl; k++) {
                char ch = name[k];
                if (next_rand() & 1 && ch >= 'a' && ch <= 'z')
                    ch = (char)(ch - 32);
                buf[off + k] = ch;
            }
            size_t len = off + nl + (next_rand() % 20);
            buf[len] = '\0';
            rw_pf_result r = rw_prefilter_run(p, buf, len);
            if (!rw_mask_has(r.tables, t))
                fail_msg("pre-filter missed %s at offset %zu in %s", name, off, buf);
        }
    }
    rw_policy_free(p);
}

/* Random texts: the pre-filter's table bits equal a naive search's. */
static void test_prefilter_matches_reference(void **state)
{
    (void)state;
    rw_policy *p = policy_for("enforce", 1);
    static const char *const words[] = {"select", "from", "where", "policies", "POLICY_VERSIONS", "backup_",
                                        "sets", "audit", "_logs", "u", "&", "findings", "inventory_links",
                                        " ", ";", "'", "\"", "--", "/*", "*/", "$$", "x", "k", "v", "g", "p"};
    char buf[600];
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = 0;
        int nw = (int)(next_rand() % 40);
        for (int w = 0; w < nw; w++) {
            const char *s = words[next_rand() % (sizeof(words) / sizeof(words[0]))];
            size_t l = strlen(s);
            if (len + l >= sizeof(buf) - 1)
                break;
            memcpy(buf + len, s, l);
            len += l;
        }
        buf[len] = '\0';
        rw_pf_result r = rw_prefilter_run(p, buf, len);
        for (int t = 0; t < cfg->policy.n_tables; t++) {
            bool want = naive_has(buf, len, cfg->policy.tables[t].name);
            if (rw_mask_has(r.tables, t) != want)
                fail_msg("table %d: pre-filter %d, reference %d: %s", t, !want, want, buf);
        }
        if (r.uesc != naive_has(buf, len, "u&"))
            fail_msg("u& mismatch: %s", buf);
    }
    rw_policy_free(p);
}

static void test_prefilter_effect_keywords(void **state)
{
    (void)state;
    rw_policy *p = policy_for("enforce", 1);
    static const struct { const char *sql; bool effects; } cases[] = {
        {"SET x = 1", true}, {"  \t\nreset all", true}, {"/* a /* nested */ b */ DISCARD ALL", true},
        {"-- c\n-- d\nDeallocate p", true}, {"SAVEPOINT s", true}, {"rollback to s", true},
        {"RELEASE s", true}, {"ALTER SCHEMA a RENAME TO b", true}, {"select 1; set x=1", true},
        {"CALL p()", true}, {"callx()", false},
        {"SELECT set_config('a','b',false)", true}, {"EXPLAIN EXECUTE p", true},
        {"/* unterminated", true}, {"SELECT 1", false}, {"SELECT settings FROM t", false},
        {"INSERT INTO resets (x) VALUES (1)", false}, {"UPDATE t SET x = 1", false}, {"", false},
        {"setx = 1", false}, {"ALTERNATIVE", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rw_pf_result r = rw_prefilter_run(p, cases[i].sql, strlen(cases[i].sql));
        if (r.effects != cases[i].effects)
            fail_msg("effects(%s) = %d", cases[i].sql, r.effects);
    }
    rw_policy_free(p);
}

/* Enough anchors to leave the vector path: still sound. */
static void test_prefilter_scalar_fallback(void **state)
{
    (void)state;
    tg_config_error err;
    tg_config *c = tg_config_load_string("t", "[tenantguard]\nmode = enforce\n[policy]\n"
                                              "tables = ab, cd, ef, hi, jk, lm, no, qr, st, uv, wx, yz, a1, b2\n",
                                         &err);
    assert_non_null(c);
    rw_policy *p = rw_policy_new(&c->policy, NULL, 1);
    assert_non_null(p);
    char buf[64];
    for (int t = 0; t < c->policy.n_tables; t++) {
        snprintf(buf, sizeof(buf), "SELECT 1 FROM x%sx", c->policy.tables[t].name);
        rw_pf_result r = rw_prefilter_run(p, buf, strlen(buf));
        assert_true(rw_mask_has(r.tables, t));
    }
    rw_policy_free(p);
    tg_config_unref(c);
}

/* ------------------------------------------------------------------ cache */

static void test_cache_bounds_and_refs(void **state)
{
    (void)state;
    rw_policy *p = policy_for("enforce", 1);
    rw_cache *c = rw_cache_new(1 << 20, 3);
    char sql[128];
    rw_decision keep;
    for (int i = 0; i < 10; i++) {
        snprintf(sql, sizeof(sql), "INSERT INTO policies (tenant_id, name) VALUES (%d, 'n')", i);
        rw_decision d = rw_decide(c, p, NULL, NULL, RW_PROTO_SIMPLE, sql, strlen(sql));
        assert_int_equal(d.action, RW_REPLACE);
        if (i == 0)
            keep = d;               /* held across its eviction */
        else
            rw_decision_release(&d);
    }
    rw_cache_stats st;
    rw_cache_get_stats(c, &st);
    assert_int_equal(st.entries, 3);
    assert_int_equal(st.misses, 10);
    assert_int_equal(st.evictions, 7);
    assert_non_null(strstr(keep.text, "VALUES (0, 'n', tenantguard.ws_derive"));
    rw_decision_release(&keep);

    /* A hit, then keys: another env, protocol, generation or catalog misses. */
    snprintf(sql, sizeof(sql), "INSERT INTO policies (tenant_id, name) VALUES (9, 'n')");
    rw_decision d = rw_decide(c, p, NULL, NULL, RW_PROTO_SIMPLE, sql, strlen(sql));
    assert_true(d.flags & RW_F_CACHED);
    rw_decision_release(&d);
    env_hold eh;
    const rw_env *env = env_for("path=other|rel=other.policies", &eh);
    d = rw_decide(c, p, env, NULL, RW_PROTO_SIMPLE, sql, strlen(sql));
    assert_false(d.flags & RW_F_CACHED);
    assert_int_equal(d.action, RW_REPLACE);  /* not the watched table under that path: pinned to it */
    assert_true(d.flags & RW_F_PINNED);
    assert_non_null(strstr(d.text, "INSERT INTO \"other\".policies (tenant_id, name) VALUES (9, 'n')"));
    rw_decision_release(&d);
    env_release(&eh);
    d = rw_decide(c, p, NULL, NULL, RW_PROTO_EXTENDED, sql, strlen(sql));
    assert_false(d.flags & RW_F_CACHED);
    rw_decision_release(&d);
    rw_policy *p2 = policy_for("observe", 2);
    d = rw_decide(c, p2, NULL, NULL, RW_PROTO_SIMPLE, sql, strlen(sql));
    assert_false(d.flags & RW_F_CACHED);
    assert_int_equal(d.action, RW_PASS);
    rw_decision_release(&d);
    rw_policy_free(p2);

    /* Pre-filtered texts never enter. */
    d = rw_decide(c, p, NULL, NULL, RW_PROTO_SIMPLE, "SELECT 1", 8);
    assert_true(d.flags & RW_F_PREFILTERED);
    rw_cache_get_stats(c, &st);
    assert_int_equal(st.prefiltered, 1);
    rw_cache_clear(c);
    rw_cache_get_stats(c, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.bytes, 0);
    rw_cache_free(c);
    rw_policy_free(p);
}

static void test_cache_byte_bound(void **state)
{
    (void)state;
    rw_policy *p = policy_for("enforce", 1);
    rw_cache *c = rw_cache_new(4096, 1000);
    char sql[256];
    for (int i = 0; i < 50; i++) {
        snprintf(sql, sizeof(sql), "UPDATE policies SET workspace_id = %d WHERE id = %d", i, i);
        rw_decision d = rw_decide(c, p, NULL, NULL, RW_PROTO_SIMPLE, sql, strlen(sql));
        rw_decision_release(&d);
        rw_cache_stats st;
        rw_cache_get_stats(c, &st);
        assert_true(st.bytes <= 4096);
    }
    /* An entry larger than the whole budget is not cached, and still answered. */
    rw_cache *tiny = rw_cache_new(64, 10);
    rw_decision d = rw_decide(tiny, p, NULL, NULL, RW_PROTO_SIMPLE, sql, strlen(sql));
    assert_int_equal(d.action, RW_REPLACE);
    rw_decision_release(&d);
    rw_cache_stats st;
    rw_cache_get_stats(tiny, &st);
    assert_int_equal(st.entries, 0);
    rw_cache_free(tiny);
    /* A disabled cache. */
    rw_cache *off = rw_cache_new(0, 0);
    d = rw_decide(off, p, NULL, NULL, RW_PROTO_SIMPLE, sql, strlen(sql));
    assert_int_equal(d.action, RW_REPLACE);
    rw_decision_release(&d);
    rw_cache_free(off);
    rw_cache_free(c);
    rw_policy_free(p);
}

/* The cache outlives nothing: decisions held after rw_cache_free stay valid. */
static void test_cache_free_with_outstanding(void **state)
{
    (void)state;
    rw_policy *p = policy_for("enforce", 1);
    rw_cache *c = rw_cache_new(1 << 16, 10);
    const char *sql = "UPDATE policies SET tenant_id = 1";
    rw_decision a = rw_decide(c, p, NULL, NULL, RW_PROTO_SIMPLE, sql, strlen(sql));
    rw_decision b = rw_decide(c, p, NULL, NULL, RW_PROTO_SIMPLE, sql, strlen(sql));
    rw_cache_free(c);
    assert_string_equal(a.text, b.text);
    rw_decision_release(&a);
    rw_decision_release(&b);
    rw_policy_free(p);
}

/* -------------------------------------------------------- env and paths */

static void test_split_path(void **state)
{
    (void)state;
    static const struct { const char *in; const char *out; } cases[] = {
        {"a, b", "a|b"}, {"\"$user\", public", "$user|public"}, {"A,\"B\"", "a|B"},
        {"  x  ", "x"}, {"", ""}, {"\"a, b\"", "a, b"}, {"\"a\"\"b\"", "a\"b"},
        {"pg_temp,pg_catalog", "pg_temp|pg_catalog"},
        /* PostgreSQL's scanner_isspace() has no vertical tab: part of the name */
        {"other\v, public", "other\v|public"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int n;
        char **v = rw_split_path(cases[i].in, &n);
        assert_non_null(v);
        char buf[128] = "";
        for (int k = 0; k < n; k++) {
            strcat(buf, k ? "|" : "");
            strcat(buf, v[k]);
        }
        if (strcmp(buf, cases[i].out) != 0)
            fail_msg("split(%s) = %s", cases[i].in, buf);
        rw_split_path_free(v, n);
    }
    static const char *const bad[] = {"a,", ",a", "\"a", "\"\"", "a b", "a,,b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int n;
        char **v = rw_split_path(bad[i], &n);
        if (v)
            fail_msg("split(%s) should fail", bad[i]);
    }
}

static void test_env_hash(void **state)
{
    (void)state;
    env_hold a, b, c2, d;
    uint64_t ha = env_for("path=public", &a)->hash;
    uint64_t hb = env_for("path=public", &b)->hash;
    uint64_t hc = env_for("path=public|temp=policies", &c2)->hash;
    uint64_t hd = env_for("path=public|std=off", &d)->hash;
    assert_true(ha == hb);
    assert_true(ha != hc);
    assert_true(ha != hd);
    assert_true(ha != rw_env_hash(NULL));
    /* Element boundaries matter: "ab" is not "a","b". */
    env_hold e, f;
    assert_true(env_for("path=ab", &e)->hash != env_for("path=a,b", &f)->hash);
    env_release(&a);
    env_release(&b);
    env_release(&c2);
    env_release(&d);
    env_release(&e);
    env_release(&f);
}

/* ----------------------------------------------------------------- misc */

static void test_selftest(void **state)
{
    (void)state;
    assert_null(rw_selftest());
    /* It leaves the lexer as it found it. */
    assert_true(rw_tls_get_std_strings());
}

static void test_fingerprint_and_names(void **state)
{
    (void)state;
    char fp[17], fp2[17];
    rw_fingerprint("INSERT INTO policies (tenant_id) VALUES (1)", fp);
    rw_fingerprint("INSERT INTO policies (tenant_id) VALUES (2)", fp2);
    assert_int_equal(strlen(fp), 16);
    assert_string_equal(fp, fp2);
    rw_fingerprint("INSERT INTO", fp);
    assert_string_equal(fp, "");
    assert_string_equal(rw_rule_name(RW_R4_IMMUTABLE_TENANT), "R4");
    assert_string_equal(rw_event_kind_name(RW_EV_REFUSED), "refused");
    assert_string_equal(rw_effect_kind_name(RW_FX_ROLLBACK_TO), "rollback_to");
    assert_string_equal(rw_action_name(RW_REJECT), "reject");
}

/* One text decided under env spec `env`: its action, events and effects. */
static void assert_decides(const rw_policy *p, const char *env, const char *sql, rw_action action,
                           const char *events, const char *effects)
{
    env_hold eh;
    char buf[1024];
    rw_decision d = rw_decide(NULL, p, env_for(env, &eh), NULL, RW_PROTO_SIMPLE, sql, strlen(sql));
    if (d.action != action)
        fail_msg("%s: action %s, want %s", sql, rw_action_name(d.action), rw_action_name(action));
    events_str(&d, buf, sizeof(buf));
    if (strcmp(buf, events) != 0)
        fail_msg("%s: events [%s], want [%s]", sql, buf, events);
    effects_str(&d, buf, sizeof(buf));
    if (strcmp(buf, effects) != 0)
        fail_msg("%s: effects [%s], want [%s]", sql, buf, effects);
    rw_decision_release(&d);
    env_release(&eh);
}

/* SQL PREPARE: the server runs the inner query's set_config() at EXECUTE,
 * not at PREPARE, so its effects are deferred -- never a path change the
 * proxy applies when the PREPARE completes. */
static void test_prepare_defers_effects(void **state)
{
    (void)state;
    rw_policy *p = policy_for("enforce", 1);
    const char *sql = "PREPARE s AS SELECT set_config('search_path', 'other', false)";
    rw_decision d = rw_decide(NULL, p, NULL, NULL, RW_PROTO_SIMPLE, sql, strlen(sql));
    assert_int_equal(d.action, RW_PASS);
    assert_int_equal(d.n_effects, 2);
    assert_int_equal(d.effects[0].kind, RW_FX_SET_PATH);
    assert_string_equal(d.effects[0].arg, "other");
    assert_true(d.effects[0].deferred);
    assert_int_equal(d.effects[1].kind, RW_FX_PREPARE);
    assert_string_equal(d.effects[1].arg, "s");
    assert_false(d.effects[1].deferred);
    for (int i = 0; i < d.n_effects; i++) {
        assert_int_equal(d.effects[i].stmt, 0);
        if (!d.effects[i].deferred)
            assert_false(d.effects[i].kind == RW_FX_SET_PATH || d.effects[i].kind == RW_FX_SET_LOCAL_PATH ||
                         d.effects[i].kind == RW_FX_RESET_PATH || d.effects[i].kind == RW_FX_PATH_UNKNOWN);
    }
    rw_decision_release(&d);

    /* Same statement number as its PREPARE, wherever it sits in the text. */
    assert_decides(p, NULL, "SELECT 1; PREPARE s AS SELECT set_config('search_path', $1, false)", RW_PASS, "",
                   "path_unknown[1]+d prepare[1]=s");
    assert_decides(p, NULL, "PREPARE s AS SELECT set_config('search_path', 'a', true); SET search_path = b",
                   RW_PASS, "", "set_local_path=a+d prepare=s set_path[1]=b");
    /* A plain write: nothing deferred, only the PREPARE itself. */
    assert_decides(p, NULL, "PREPARE s(bigint, text) AS INSERT INTO policies (tenant_id, name) VALUES ($1, $2)",
                   RW_REPLACE, "seen//policies rewritten/R1/policies", "prepare=s+w");
    rw_policy_free(p);
}

/* EXECUTE may change search_path (a deferred effect of an earlier PREPARE):
 * later statements of the same text are decided with the path unknown, as
 * after an in-text SET search_path -- an unqualified watched name is then
 * the watched table, not the look-alike the old path would pick. */
static void test_execute_makes_path_unknown(void **state)
{
    (void)state;
    rw_policy *p = policy_for("enforce", 1);
    const char *ins = "INSERT INTO policies (tenant_id, name) VALUES (3, 'x')";
    const char *r1 = "seen//policies rewritten/R1/policies";
    char sql[256];
    /* The control: under path=other an unqualified policies is a look-alike (pinned). */
    snprintf(sql, sizeof(sql), "SELECT 1; %s", ins);
    assert_decides(p, "path=other|rel=other.policies", sql, RW_REPLACE, "", "");
    /* The in-text SET this mirrors. */
    snprintf(sql, sizeof(sql), "SET search_path = other; %s", ins);
    assert_decides(p, "path=other|rel=other.policies", sql, RW_REPLACE, r1, "set_path=other");
    snprintf(sql, sizeof(sql), "EXECUTE s; %s", ins);
    assert_decides(p, "path=other|rel=other.policies", sql, RW_REPLACE, r1, "execute=s");
    snprintf(sql, sizeof(sql), "EXPLAIN ANALYZE EXECUTE s; %s", ins);
    assert_decides(p, "path=other|rel=other.policies", sql, RW_REPLACE, r1, "execute=s");
    snprintf(sql, sizeof(sql), "PREPARE s AS SELECT 1; EXECUTE s; %s", ins);
    assert_decides(p, "path=other|rel=other.policies", sql, RW_REPLACE, r1, "prepare=s execute[1]=s");
    /* The unknown path shows in the text: the look-alike is enforced on. */
    snprintf(sql, sizeof(sql), "EXECUTE s; %s", ins);
    env_hold eh;
    rw_decision d = rw_decide(NULL, p, env_for("path=other|rel=other.policies", &eh), NULL, RW_PROTO_SIMPLE, sql, strlen(sql));
    assert_non_null(d.text);
    assert_non_null(strstr(d.text, "EXECUTE s; INSERT INTO policies (tenant_id, name, workspace_id) VALUES (3, 'x', "
                                   "tenantguard.ws_derive('policies', "));
    assert_true(d.flags & RW_F_WATCHED_WRITE);
    rw_decision_release(&d);
    env_release(&eh);
    rw_policy_free(p);
}

/* Big and deep texts: no crash, never a silent pass of a watched write. */
static void test_big_and_deep(void **state)
{
    (void)state;
    rw_policy *p = policy_for("enforce", 1);
    size_t cap = 200000, n = 0;
    char *sql = malloc(cap);
    n += (size_t)snprintf(sql + n, cap - n, "INSERT INTO policies (tenant_id, name) VALUES ");
    for (int i = 0; i < 3000; i++)
        n += (size_t)snprintf(sql + n, cap - n, "%s(%d, 'row %d')", i ? ", " : "", i, i);
    rw_decision d = rw_decide(NULL, p, NULL, NULL, RW_PROTO_SIMPLE, sql, n);
    assert_int_equal(d.action, RW_REPLACE);
    assert_non_null(strstr(d.text, "(2999, 'row 2999', tenantguard.ws_derive('policies', " TS_P ", tenantguard.as_type(" TS_P ", " TS_P ", 2999), " WS_P "))"));
    assert_parses("big", d.text, true);
    rw_decision_release(&d);

    n = (size_t)snprintf(sql, cap, "UPDATE policies SET workspace_id = ");
    for (int i = 0; i < 20000; i++)
        sql[n++] = '(';
    sql[n++] = '1';
    for (int i = 0; i < 20000; i++)
        sql[n++] = ')';
    sql[n] = '\0';
    d = rw_decide(NULL, p, NULL, NULL, RW_PROTO_SIMPLE, sql, n);
    assert_int_not_equal(d.action, RW_PASS);
    rw_decision_release(&d);
    /* Statement 65536 and beyond: effects become "path unknown". */
    size_t big = 65536 * 9 + 64;
    char *many = malloc(big);
    n = 0;
    for (int i = 0; i < 65536; i++)
        n += (size_t)snprintf(many + n, big - n, "SELECT 1;");
    n += (size_t)snprintf(many + n, big - n, "SET search_path = x");
    d = rw_decide(NULL, p, NULL, NULL, RW_PROTO_SIMPLE, many, n);
    assert_int_equal(d.n_statements, 65537);
    assert_int_equal(d.n_effects, 1);
    assert_int_equal(d.effects[0].kind, RW_FX_PATH_UNKNOWN);
    assert_int_equal(d.effects[0].stmt, 65535);
    rw_decision_release(&d);
    free(many);
    free(sql);
    rw_policy_free(p);
}

/* The server's 42883 on a helper call, said as the server says the client's
 * own type mistake; anything unsure is left alone. */
static void test_map_helper_error(void **state)
{
    (void)state;
    rw_policy *p = policy_for("enforce", 1);
    env_hold eh;
    const rw_env *env = env_for("path=public", &eh);
    char out[256];
    struct {
        const char *sql, *message, *want;
    } cases[] = {
        {"INSERT INTO policies (tenant_id, name) VALUES ('3'::text, 'x')",
         "function tenantguard.as_type(bigint, bigint, text) does not exist",
         "column \"tenant_id\" is of type bigint but expression is of type text"},
        {"UPDATE policies SET tenant_id = '3'::text", "function tenantguard.tenant_keep(unknown, unknown, bigint, text) does not exist",
         "column \"tenant_id\" is of type bigint but expression is of type text"},
        {"UPDATE policies SET tenant_id = now()",
         "function tenantguard.tenant_keep(unknown, unknown, bigint, timestamp with time zone) does not exist",
         "column \"tenant_id\" is of type bigint but expression is of type timestamp with time zone"},
        /* not ours, translated, or types that do not differ: left alone */
        {"UPDATE policies SET tenant_id = '3'::text", "function public.tenant_keep(unknown, unknown, bigint, text) does not exist", NULL},
        {"UPDATE policies SET tenant_id = '3'::text", "Funktion tenantguard.tenant_keep(unknown, unknown, bigint, text) existiert nicht", NULL},
        {"UPDATE policies SET tenant_id = '3'::text", "function tenantguard.tenant_keep(unknown, unknown, bigint, bigint) does not exist", NULL},
        {"UPDATE policies SET tenant_id = '3'::text", "function tenantguard.tenant_keep(unknown, bigint, text) does not exist", NULL},
        {"UPDATE policies SET tenant_id = '3'::text", "function tenantguard.nope(bigint, text) does not exist", NULL},
        /* two calls of the same helper and no position: which one failed is unknown */
        {"UPDATE policies SET tenant_id = '3'::text; UPDATE findings SET tenant_id = 4",
         "function tenantguard.tenant_keep(unknown, unknown, bigint, text) does not exist", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rw_decision d = rw_decide(NULL, p, env, NULL, RW_PROTO_SIMPLE, cases[i].sql, strlen(cases[i].sql));
        assert_int_equal(d.action, RW_REPLACE);
        bool ok = rw_map_helper_error(p, d.text, cases[i].message, 0, out, sizeof(out));
        if (cases[i].want) {
            assert_true(ok);
            assert_string_equal(out, cases[i].want);
        } else {
            assert_false(ok);
        }
        rw_decision_release(&d);
    }
    /* ... with the error's position, the second call is found */
    const char *two = "UPDATE policies SET tenant_id = 5; UPDATE findings SET tenant_id = '3'::text";
    rw_decision d = rw_decide(NULL, p, env, NULL, RW_PROTO_SIMPLE, two, strlen(two));
    const char *second = strstr(strstr(d.text, "tenant_keep(") + 1, "tenantguard.tenant_keep(");
    assert_non_null(second);
    assert_true(rw_map_helper_error(p, d.text, "function tenantguard.tenant_keep(unknown, unknown, bigint, text) does not exist",
                                    (int)(second - d.text) + 1, out, sizeof(out)));
    assert_string_equal(out, "column \"tenant_id\" is of type bigint but expression is of type text");
    assert_false(rw_map_helper_error(p, d.text, "function tenantguard.tenant_keep(unknown, unknown, bigint, text) does not exist",
                                     (int)(second - d.text), out, sizeof(out)));
    rw_decision_release(&d);
    env_release(&eh);
    rw_policy_free(p);
}

int main(void)
{
    cfg = load_cfg();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_selftest),
        cmocka_unit_test(test_case_table),
        cmocka_unit_test(test_prefilter_finds_every_name),
        cmocka_unit_test(test_prefilter_matches_reference),
        cmocka_unit_test(test_prefilter_effect_keywords),
        cmocka_unit_test(test_prefilter_scalar_fallback),
        cmocka_unit_test(test_cache_bounds_and_refs),
        cmocka_unit_test(test_cache_byte_bound),
        cmocka_unit_test(test_cache_free_with_outstanding),
        cmocka_unit_test(test_split_path),
        cmocka_unit_test(test_env_hash),
        cmocka_unit_test(test_fingerprint_and_names),
        cmocka_unit_test(test_prepare_defers_effects),
        cmocka_unit_test(test_execute_makes_path_unknown),
        cmocka_unit_test(test_big_and_deep),
        cmocka_unit_test(test_map_helper_error),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tg_config_unref(cfg);
    return rc;
}
