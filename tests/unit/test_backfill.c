/*
 * test_backfill.c -- the sidecar's pure helpers, table-driven: the message
 * sanitizer (nothing of a value or a password survives), DSN masking,
 * identifier quoting, table names and the operator's validation SQL, the
 * lock key, bigint[] parsing, the control flag, CLI number formatting.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "backfill/bf_internal.h"
#include "backfill/cli_common.h"
#include "policy/config.h"

typedef struct sanitize_case {
    const char *in;
    const char *out;
} sanitize_case;

static const sanitize_case sanitize_cases[] = {
    {"canceling statement due to lock timeout", "canceling statement due to lock timeout"},
    {"ERROR:  deadlock detected\nDETAIL:  Process 1 waits for ShareLock on transaction 2",
     "deadlock detected"},
    {"invalid input syntax for type bigint: \"4111 1111 1111 1111\"",
     "invalid input syntax for type bigint: \"?\""},
    {"relation \"policies\" does not exist", "relation \"policies\" does not exist"},
    {"insert or update on table \"findings\" violates foreign key constraint \"f_fk\"",
     "insert or update on table \"findings\" violates foreign key constraint \"f_fk\""},
    {"value 'secret text' is too long", "value '?' is too long"},
    {"connection to server on socket \"/tmp/s/.s.PGSQL.5432\" failed: FATAL:  role \"x\" does "
     "not exist", "connection to server on socket \"/tmp/s/.s.PGSQL.5432\" failed: FATAL:  role "
     "\"x\" does not exist"},
    {"bad conninfo host=h password=hunter2 user=u", "bad conninfo host=h password=**** user=u"},
    {"unterminated 'quote", "unterminated '?'"},
    {"trailing dot.", "trailing dot"},
    {"", ""},
};

static void test_sanitize(void **state)
{
    for (size_t i = 0; i < sizeof(sanitize_cases) / sizeof(sanitize_cases[0]); i++) {
        char out[320];
        bf_sanitize(sanitize_cases[i].in, out, sizeof(out));
        assert_string_equal(out, sanitize_cases[i].out);
    }
    /* a tiny buffer truncates, never overflows */
    char small[8];
    bf_sanitize("a long message that does not fit", small, sizeof(small));
    assert_true(strlen(small) < sizeof(small));
}

typedef struct mask_case {
    const char *in;
    const char *out;
} mask_case;

static const mask_case mask_cases[] = {
    {"host=db port=5432 user=app password=s3cret dbname=app",
     "user=app password=**** dbname=app host=db port=5432"},
    {"postgresql://app:s3cret@db:5432/app?sslmode=require",
     "user=app password=**** dbname=app host=db port=5432 sslmode=require"},
    {"", "(PG* environment)"},
    {"host='unterminated", "(unparseable connection string)"},
};

static void test_conninfo_mask(void **state)
{
    for (size_t i = 0; i < sizeof(mask_cases) / sizeof(mask_cases[0]); i++) {
        char out[512];
        bf_conninfo_mask(mask_cases[i].in, out, sizeof(out));
        assert_string_equal(out, mask_cases[i].out);
        assert_null(strstr(out, "s3cret"));
    }
    char out[64];
    bf_conninfo_mask(NULL, out, sizeof(out));
    assert_string_equal(out, "(PG* environment)");
}

static void test_quote_and_names(void **state)
{
    char buf[BF_QNAME_MAX];
    bf_quote_ident("policies", buf, sizeof(buf));
    assert_string_equal(buf, "\"policies\"");
    bf_quote_ident("we\"ird", buf, sizeof(buf));
    assert_string_equal(buf, "\"we\"\"ird\"");
    bf_qualify("crm", "Contacts", buf, sizeof(buf));
    assert_string_equal(buf, "\"crm\".\"Contacts\"");
    char tiny[4];
    bf_quote_ident("abcdef", tiny, sizeof(tiny));
    assert_true(strlen(tiny) < sizeof(tiny));

    tg_table pub = {.schema = "public", .name = "policies", .tenant_col = "tenant_id",
                    .workspace_col = "workspace_id", .kind = TG_TABLE_OWNED};
    tg_table crm = {.schema = "crm", .name = "Contacts", .tenant_col = "org",
                    .workspace_col = "ws", .kind = TG_TABLE_OWNED};
    tg_table audit = {.schema = "public", .name = "audit_logs", .tenant_col = "tenant_id",
                      .workspace_col = "workspace_id", .kind = TG_TABLE_AUDIT};
    bf_table_key(&pub, buf, sizeof(buf));
    assert_string_equal(buf, "policies");
    bf_table_key(&crm, buf, sizeof(buf));
    assert_string_equal(buf, "crm.Contacts");

    char sql[400];
    tg_bf_validation_sql(&pub, sql, sizeof(sql));
    assert_string_equal(sql, "SELECT count(*) FROM policies WHERE workspace_id IS NULL;");
    tg_bf_validation_sql(&crm, sql, sizeof(sql));
    assert_string_equal(sql, "SELECT count(*) FROM crm.\"Contacts\" WHERE ws IS NULL;");
    tg_bf_validation_sql(&audit, sql, sizeof(sql));
    assert_string_equal(sql, "SELECT count(*) FROM audit_logs WHERE tenant_id IS NOT NULL AND "
                             "workspace_id IS NULL;");
}

static void test_find_table(void **state)
{
    tg_config_error err;
    tg_config *cfg = tg_config_load_string("t", "[policy]\ntables = policies, crm.deals\n", &err);
    assert_non_null(cfg);
    const tg_policy *p = &cfg->policy;
    assert_non_null(tg_bf_find_table(p, "policies"));
    assert_non_null(tg_bf_find_table(p, "public.policies"));
    assert_non_null(tg_bf_find_table(p, "crm.deals"));
    assert_null(tg_bf_find_table(p, "deals"));        /* not in public */
    assert_non_null(tg_bf_find_table(p, "audit_logs"));
    assert_null(tg_bf_find_table(p, "users"));
    char names[256];
    tg_bf_table_names(p, names, sizeof(names));
    assert_string_equal(names, "policies, crm.deals, audit_logs");
    tg_config_unref(cfg);
}

static void test_lock_key(void **state)
{
    /* FNV-1a 64 of the name: the key an operator sees in --help and pg_locks */
    assert_true(tg_bf_lock_key() == (int64_t)UINT64_C(0xb4212c20ca60e4cf));
    assert_true(tg_bf_lock_key() == tg_bf_lock_key());
}

typedef struct array_case {
    const char *in;
    int n;
    int64_t v[4];
} array_case;

static const array_case array_cases[] = {
    {"{}", 0, {0}},
    {"{7}", 1, {7}},
    {"{1,22,-3}", 3, {1, 22, -3}},
    {"{9223372036854775807,2}", 2, {INT64_MAX, 2}},
    {"{1,2,3,4,5,6}", 4, {1, 2, 3, 4}},          /* at most max */
    {"1,2", 0, {0}},
    {"{x}", 0, {0}},
    {NULL, 0, {0}},
};

static void test_parse_int8_array(void **state)
{
    for (size_t i = 0; i < sizeof(array_cases) / sizeof(array_cases[0]); i++) {
        int64_t out[4] = {0};
        int n = bf_parse_int8_array(array_cases[i].in, out, 4);
        assert_int_equal(n, array_cases[i].n);
        for (int k = 0; k < n; k++)
            assert_true(out[k] == array_cases[i].v[k]);
    }
}

static void test_control(void **state)
{
    tg_bf_control ctl = {0};
    assert_int_equal(tg_bf_request_get(&ctl), TG_BF_REQ_RUN);
    assert_int_equal(tg_bf_request_get(NULL), TG_BF_REQ_RUN);
    tg_bf_request_set(&ctl, TG_BF_REQ_PAUSE);
    assert_int_equal(tg_bf_request_get(&ctl), TG_BF_REQ_PAUSE);
    assert_true(bf_sleep_ms(5, &ctl));               /* a pause does not cut a sleep */
    tg_bf_request_set(&ctl, TG_BF_REQ_STOP);
    assert_false(bf_sleep_ms(60000, &ctl));          /* a stop does, at once */
}

static void test_cli_numbers(void **state)
{
    char buf[32];
    assert_string_equal(cli_num(0, buf, sizeof(buf)), "0");
    assert_string_equal(cli_num(999, buf, sizeof(buf)), "999");
    assert_string_equal(cli_num(1000, buf, sizeof(buf)), "1,000");
    assert_string_equal(cli_num(1234567, buf, sizeof(buf)), "1,234,567");
    assert_string_equal(cli_num(-1234, buf, sizeof(buf)), "-1,234");
    assert_string_equal(cli_duration(0.25, buf, sizeof(buf)), "250 ms");
    assert_string_equal(cli_duration(12.34, buf, sizeof(buf)), "12.3 s");
    assert_string_equal(cli_duration(245, buf, sizeof(buf)), "4 min 05 s");
    assert_string_equal(cli_duration(3720, buf, sizeof(buf)), "1 h 02 min");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sanitize),
        cmocka_unit_test(test_conninfo_mask),
        cmocka_unit_test(test_quote_and_names),
        cmocka_unit_test(test_find_table),
        cmocka_unit_test(test_lock_key),
        cmocka_unit_test(test_parse_int8_array),
        cmocka_unit_test(test_control),
        cmocka_unit_test(test_cli_numbers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
