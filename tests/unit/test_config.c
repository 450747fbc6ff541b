/*
 * test_config.c -- the config loader, table-driven: INI text in, either a
 * loaded snapshot (checked by a probe) or "line: message" out.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "policy/config.h"

typedef struct case_t {
    const char *name;
    const char *ini;
    int err_line;             /* -1: must load */
    const char *err_substr;   /* in the message when it fails */
    void (*probe)(const tg_config *c);
} case_t;

static void probe_defaults(const tg_config *c)
{
    assert_string_equal(c->listen_addr, "127.0.0.1");
    assert_int_equal(c->listen_port, 6432);
    assert_int_equal(c->server_port, 5432);
    assert_int_equal(c->server_sslmode, TG_SERVER_SSL_DISABLE);
    assert_int_equal(c->max_client_conn, 1000);
    assert_int_equal(c->max_packet_size, 128LL * 1024 * 1024);
    assert_int_equal(c->client_login_timeout, 60);
    assert_int_equal(c->policy.mode, TG_MODE_OBSERVE);
    /* twelve tenant-owned tables + the audit table */
    assert_int_equal(c->policy.n_tables, 13);
    const tg_table *t = tg_policy_find(&c->policy, "public", "policies");
    assert_non_null(t);
    assert_string_equal(t->tenant_col, "tenant_id");
    assert_string_equal(t->workspace_col, "workspace_id");
    assert_int_equal(t->kind, TG_TABLE_OWNED);
    t = tg_policy_find(&c->policy, "public", "audit_logs");
    assert_non_null(t);
    assert_int_equal(t->kind, TG_TABLE_AUDIT);
    assert_null(tg_policy_find(&c->policy, "public", "tenants"));
    assert_null(tg_policy_find(&c->policy, "other", "policies"));
    assert_string_equal(c->policy.tenant_schema, "public");
    assert_string_equal(c->policy.tenant_table, "tenants");
}

static void probe_enforce(const tg_config *c)
{
    assert_int_equal(c->policy.mode, TG_MODE_ENFORCE);
    for (int i = 0; i < c->policy.n_tables; i++)
        assert_int_equal(c->policy.tables[i].mode, TG_MODE_ENFORCE);
}

static void probe_values(const tg_config *c)
{
    assert_int_equal(c->listen_port, 7000);
    assert_int_equal(c->max_packet_size, 512 * 1024);
    assert_int_equal(c->client_idle_timeout, 300);
    assert_int_equal(c->log_format, TG_LOGFMT_JSON);
    assert_int_equal(c->log_level, TG_LOG_DEBUG);
    assert_true(c->so_reuseport);
    assert_string_equal(c->unix_socket_dir, "/tmp");
}

static void probe_custom_tables(const tg_config *c)
{
    assert_int_equal(c->policy.n_tables, 2);   /* no audit table */
    const tg_table *t = tg_policy_find(&c->policy, "app", "things");
    assert_non_null(t);
    assert_int_equal(t->mode, TG_MODE_ENFORCE);
    assert_true(t->mode_set);
    assert_string_equal(t->tenant_col, "owner_tenant");
    t = tg_policy_find(&c->policy, "public", "docs");
    assert_non_null(t);
    assert_int_equal(t->mode, TG_MODE_OFF);
    assert_false(t->mode_set);
}

static void probe_four_tables(const tg_config *c)
{
    assert_int_equal(c->policy.n_tables, 5);   /* a, b, c, d + audit */
    assert_non_null(tg_policy_find(&c->policy, "public", "cc"));
    assert_non_null(tg_policy_find(&c->policy, "public", "dd"));
}

/* tenant_table and audit_table given without a schema take [policy] schema. */
static void probe_unqualified_tables(const tg_config *c)
{
    assert_string_equal(c->policy.tenant_schema, "app");
    assert_string_equal(c->policy.tenant_table, "tenants");
    const tg_table *t = tg_policy_find(&c->policy, "app", "audit_logs");
    assert_non_null(t);
    assert_int_equal(t->kind, TG_TABLE_AUDIT);
    assert_non_null(tg_policy_find(&c->policy, "app", "notes"));
}

static const case_t cases[] = {
    {"empty file gives defaults", "", -1, NULL, probe_defaults},
    {"comments and blank lines", "; comment\n\n[tenantguard]\n# also\n", -1, NULL, probe_defaults},
    {"mode enforce is all it takes", "[tenantguard]\nmode = enforce\n", -1, NULL, probe_enforce},
    {"values with units",
     "[tenantguard]\nlisten_port = 7000\nmax_packet_size = 512kB\nclient_idle_timeout = 5min\n"
     "log_format = json\nlog_level = DEBUG\nso_reuseport = yes\nunix_socket_dir = /tmp\n",
     -1, NULL, probe_values},
    {"unqualified tenant and audit tables take the policy schema",
     "[policy]\nschema = app\ntables = notes\ntenant_table = tenants\naudit_table = audit_logs\n",
     -1, NULL, probe_unqualified_tables},
    {"custom tables and per-table mode",
     "[tenantguard]\nmode = off\n[policy]\ntables = app.things, docs\naudit_table =\n"
     "[table app.things]\nmode = enforce\ntenant_column = owner_tenant\n",
     -1, NULL, probe_custom_tables},
    {"table section before the list", "[table policies]\nmode = enforce\n", -1, NULL, NULL},
    {"unknown key", "[tenantguard]\nlisten_port = 1\nbogus = 2\n", 3, "unknown key \"bogus\"", NULL},
    {"unknown section", "[tenantguard]\n\n[nope]\nx = 1\n", 3, "unknown section [nope]", NULL},
    {"empty unknown section", "[tenantguard]\nlisten_port = 7000\n[nope]\n", 3, "unknown section [nope]", NULL},
    {"key outside a section", "listen_port = 5\n", 1, "outside a section", NULL},
    {"port out of range", "[tenantguard]\nlisten_port = 70000\n", 2, "out of range", NULL},
    {"port not a number", "[tenantguard]\nlisten_port = abc\n", 2, "not a non-negative integer", NULL},
    {"negative size", "[tenantguard]\nmax_packet_size = -1\n", 2, "not a size", NULL},
    {"bad unit", "[tenantguard]\nmax_packet_size = 5 parsecs\n", 2, "not a size", NULL},
    {"bad enum", "[tenantguard]\n\nserver_sslmode = maybe\n", 3, "not one of: disable, prefer", NULL},
    {"bad bool", "[tenantguard]\nso_reuseport = perhaps\n", 2, "not a boolean", NULL},
    {"bad mode", "[tenantguard]\nmode = strict\n", 2, "mode: \"strict\"", NULL},
    {"tls without cert", "[tenantguard]\nclient_tls_mode = require\n", 2, "needs client_tls_cert_file", NULL},
    {"unreadable cert", "[tenantguard]\nclient_tls_mode = allow\nclient_tls_cert_file = /nonexistent/c\n"
     "client_tls_key_file = /nonexistent/k\n", 3, "cannot read", NULL},
    {"nothing to listen on", "[tenantguard]\nlisten_addr =\n", 2, "nothing to listen on", NULL},
    {"table listed twice", "[policy]\ntables = aa, bb, public.aa\n", 2, "listed twice", NULL},
    {"tenants cannot be owned", "[policy]\ntables = tenants\n", 2, "cannot be tenant-owned", NULL},
    {"bad identifier", "[policy]\ntables = \"Quoted\"\n", 2, "is not [schema.]table", NULL},
    {"unknown table section", "[policy]\ntables = aa\n[table bb]\nmode = off\n", 3, "not a watched table", NULL},
    {"one-letter table", "[policy]\ntables = p\n", 2, "two characters or more", NULL},
    {"dollar in a column", "[policy]\ntenant_column = t$x\n", 2, "not a plain SQL identifier", NULL},
    {"bad key in table section", "[table policies]\ncolour = red\n", 2, "unknown key \"colour\"", NULL},
    {"same tenant and workspace column", "[policy]\nworkspace_column = tenant_id\n", 2, "must differ", NULL},
    {"tenant_table is [schema.]table", "[policy]\ntenant_table = a.b.c\n", 2, "is not [schema.]table", NULL},
    {"long list on continuation lines",
     "[policy]\ntables = aa, bb,\n  cc, dd\n", -1, NULL, probe_four_tables},
    {"line too long",
     "[policy]\ntables = aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n", 2, "line longer than", NULL},
    {"syntax error", "[tenantguard]\nthis line has no equals\n", 2, "syntax error", NULL},
    {"violation_audit needs sidecar_dsn", "[tenantguard]\nviolation_audit = on\n", 2, "needs sidecar_dsn", NULL},
    {"violation_audit = all names itself", "[tenantguard]\nviolation_audit = all\n", 2,
     "violation_audit = all needs sidecar_dsn", NULL},
    {"violation_audit is off, on or all", "[tenantguard]\nviolation_audit = most\n", 2,
     "violation_audit: \"most\" is not one of: off, on, all", NULL},
    {"violation_audit needs an audit table",
     "[tenantguard]\nsidecar_dsn = dbname=x\nviolation_audit = on\n[policy]\naudit_table =\n", 3,
     "needs an audit_table", NULL},
    {"non-loopback console", "[tenantguard]\nadmin_addr = 10.0.0.1\n", 2, "admin_allow_remote", NULL},
};

static void run_case(void **state)
{
    const case_t *tc = *state;
    tg_config_error err;
    tg_config *c = tg_config_load_string("test.ini", tc->ini, &err);

    if (tc->err_line < 0) {
        if (!c)
            fail_msg("%s: expected to load, got line %d: %s", tc->name, err.line, err.message);
        if (tc->probe)
            tc->probe(c);
        tg_config_unref(c);
        return;
    }
    if (c) {
        tg_config_unref(c);
        fail_msg("%s: expected an error, it loaded", tc->name);
    }
    if (err.line != tc->err_line || !strstr(err.message, tc->err_substr))
        fail_msg("%s: expected line %d containing \"%s\", got line %d: %s", tc->name, tc->err_line,
                 tc->err_substr, err.line, err.message);
}

static void test_refcount_and_reload_diff(void **state)
{
    (void)state;
    tg_config_error err;
    tg_config *a = tg_config_load_string("a", "[tenantguard]\nlisten_port = 7000\n", &err);
    tg_config *b = tg_config_load_string("b", "[tenantguard]\nlisten_port = 7001\nmax_client_conn = 5\n", &err);
    assert_non_null(a);
    assert_non_null(b);
    char buf[256];
    /* listen_port cannot change on reload; max_client_conn can */
    assert_int_equal(tg_config_nonreloadable_changes(a, b, buf, sizeof(buf)), 1);
    assert_string_equal(buf, "listen_port");
    tg_config_ref(a);
    tg_config_unref(a);
    tg_config_unref(a);
    tg_config_unref(b);
}

static void test_key_introspection(void **state)
{
    (void)state;
    tg_config_error err;
    tg_config *c = tg_config_load_string("c", "", &err);
    assert_non_null(c);
    int n = tg_config_key_count();
    assert_true(n > 20);
    int seen_tables = 0;
    for (int i = 0; i < n; i++) {
        const tg_config_keyinfo *ki = tg_config_key_at(i);
        char buf[1024];
        tg_config_key_value(c, i, buf, sizeof(buf));
        if (strcmp(ki->name, "tables") == 0) {
            seen_tables = 1;
            assert_non_null(strstr(buf, "public.policies"));
            assert_non_null(strstr(buf, "public.tenant_permissions"));
        }
        if (strcmp(ki->name, "listen_port") == 0)
            assert_string_equal(buf, "6432");
    }
    assert_true(seen_tables);
    tg_config_unref(c);
}

int main(void)
{
    size_t n = sizeof(cases) / sizeof(cases[0]);
    struct CMUnitTest tests[sizeof(cases) / sizeof(cases[0]) + 2];
    for (size_t i = 0; i < n; i++) {
        tests[i] = (struct CMUnitTest){cases[i].name, run_case, NULL, NULL, (void *)&cases[i]};
    }
    tests[n] = (struct CMUnitTest)cmocka_unit_test(test_refcount_and_reload_diff);
    tests[n + 1] = (struct CMUnitTest)cmocka_unit_test(test_key_introspection);
    return _cmocka_run_group_tests("config", tests, n + 2, NULL, NULL);
}
