/*
 * admin_show.c -- the console's SHOW commands and the result builder.
 *
 * Each SHOW over sessions is a table of columns (name, type, getter), so a
 * column is one line here and the RowDescription can never disagree with
 * the DataRows.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "policy/sqlstate.h"
#include "proxy/admin.h"
#include "proxy/probe.h"
#include "proxy/pgframe.h"
#include "proxy/pgproto.h"
#include "proxy/runtime.h"
#include "proxy/track.h"

/* ---------------------------------------------------------------- results */

void adm_row_desc(struct evbuffer *out, const adm_col *cols, int n)
{
    pgf_builder b;
    pgf_begin(&b, PG_BE_ROW_DESC);
    pgf_put_u16(&b, (uint16_t)n);
    for (int i = 0; i < n; i++) {
        pgf_put_str(&b, cols[i].name);
        pgf_put_u32(&b, 0);           /* table oid */
        pgf_put_u16(&b, 0);           /* column number */
        pgf_put_u32(&b, cols[i].type);
        pgf_put_u16(&b, cols[i].type == ADM_TEXT ? 0xffff : 8);   /* typlen */
        pgf_put_u32(&b, 0xffffffffu); /* typmod */
        pgf_put_u16(&b, 0);           /* text format */
    }
    pgf_finish(&b, out);
}

void adm_row(struct evbuffer *out, int n, const char *const *values)
{
    pgf_builder b;
    pgf_begin(&b, PG_BE_DATA_ROW);
    pgf_put_u16(&b, (uint16_t)n);
    for (int i = 0; i < n; i++) {
        if (!values[i]) {
            pgf_put_u32(&b, 0xffffffffu);
            continue;
        }
        size_t len = strlen(values[i]);
        pgf_put_u32(&b, (uint32_t)len);
        pgf_put_bytes(&b, values[i], len);
    }
    pgf_finish(&b, out);
}

void adm_complete(struct evbuffer *out, const char *tag)
{
    pgf_builder b;
    pgf_begin(&b, PG_BE_COMMAND_COMPLETE);
    pgf_put_str(&b, tag);
    pgf_finish(&b, out);
}

void adm_error(struct evbuffer *out, const char *sqlstate, const char *msg, const char *hint)
{
    pgf_error(out, "ERROR", sqlstate, msg, hint);
}

void adm_notice(struct evbuffer *out, const char *msg)
{
    pgf_builder b;
    pgf_begin(&b, PG_BE_NOTICE);
    pgf_put_u8(&b, 'S');
    pgf_put_str(&b, "NOTICE");
    pgf_put_u8(&b, 'V');
    pgf_put_str(&b, "NOTICE");
    pgf_put_u8(&b, 'C');
    pgf_put_str(&b, "00000");
    pgf_put_u8(&b, 'M');
    pgf_put_str(&b, msg);
    pgf_put_u8(&b, 0);
    pgf_finish(&b, out);
}

static void complete_rows(struct evbuffer *out, const char *cmd, uint64_t rows)
{
    char tag[64];
    (void)cmd;
    snprintf(tag, sizeof(tag), "SHOW %" PRIu64, rows);
    adm_complete(out, tag);
}

static void fmt_time(time_t t, char *buf, size_t len)
{
    struct tm tm;
    if (!t) {
        buf[0] = '\0';
        return;
    }
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%d %H:%M:%S+00", &tm);
}

static bool no_args(const adm_args *a, struct evbuffer *out, const char *syntax)
{
    if (a->n == 0)
        return true;
    char hint[96];
    snprintf(hint, sizeof(hint), "Syntax: %s", syntax);
    adm_error(out, TG_SQLSTATE_SYNTAX_ERROR, "tenantguard console: bad arguments", hint);
    return false;
}

/* ---------------------------------------------------------------- simple shows */

bool adm_show_help(tg_session *s, const adm_args *a, struct evbuffer *out)
{
    (void)s;
    if (!no_args(a, out, "SHOW HELP"))
        return true;
    static const adm_col cols[] = {{"command", ADM_TEXT}, {"description", ADM_TEXT}};
    adm_row_desc(out, cols, 2);
    int n = admin_help_count();
    for (int i = 0; i < n; i++) {
        const char *v[2];
        admin_help_at(i, &v[0], &v[1]);
        adm_row(out, 2, v);
    }
    complete_rows(out, "HELP", (uint64_t)n);
    return true;
}

bool adm_show_version(tg_session *s, const adm_args *a, struct evbuffer *out)
{
    (void)s;
    if (!no_args(a, out, "SHOW VERSION"))
        return true;
    static const adm_col cols[] = {{"version", ADM_TEXT}};
    const char *v[] = {"tenantguard " PACKAGE_VERSION};
    adm_row_desc(out, cols, 1);
    adm_row(out, 1, v);
    complete_rows(out, "VERSION", 1);
    return true;
}

bool adm_show_config(tg_session *s, const adm_args *a, struct evbuffer *out)
{
    if (!no_args(a, out, "SHOW CONFIG"))
        return true;
    static const adm_col cols[] = {{"section", ADM_TEXT}, {"key", ADM_TEXT}, {"value", ADM_TEXT},
                                   {"default", ADM_TEXT}, {"reload", ADM_BOOL}};
    adm_row_desc(out, cols, 5);
    int n = tg_config_key_count();
    for (int i = 0; i < n; i++) {
        const tg_config_keyinfo *k = tg_config_key_at(i);
        char value[1024];
        tg_config_key_value(s->rt->cfg, i, value, sizeof(value));
        /* Secrets never leave: a DSN may carry a password. */
        if (strcmp(k->name, "sidecar_dsn") == 0 && value[0])
            snprintf(value, sizeof(value), "(set)");
        const char *v[] = {k->section, k->name, value, k->def, k->reloadable ? "t" : "f"};
        adm_row(out, 5, v);
    }
    complete_rows(out, "CONFIG", (uint64_t)n);
    return true;
}

bool adm_show_policy(tg_session *s, const adm_args *a, struct evbuffer *out)
{
    if (!no_args(a, out, "SHOW POLICY"))
        return true;
    static const adm_col cols[] = {{"table", ADM_TEXT},       {"kind", ADM_TEXT},
                                   {"tenant_column", ADM_TEXT}, {"workspace_column", ADM_TEXT},
                                   {"mode", ADM_TEXT},        {"mode_source", ADM_TEXT}};
    adm_row_desc(out, cols, 6);
    const tg_policy *p = &s->rt->cfg->policy;
    for (int i = 0; i < p->n_tables; i++) {
        const tg_table *t = &p->tables[i];
        char name[140];
        snprintf(name, sizeof(name), "%s.%s", t->schema, t->name);
        const char *source = rt_mode_overridden(s->rt, i) ? "admin" : t->mode_set ? "table" : "global";
        const char *v[] = {name, t->kind == TG_TABLE_AUDIT ? "audit" : "tenant-owned", t->tenant_col,
                           t->workspace_col, tg_mode_name(rt_table_mode(s->rt, i)), source};
        adm_row(out, 6, v);
    }
    complete_rows(out, "POLICY", (uint64_t)p->n_tables);
    return true;
}

/* ---------------------------------------------------------------- stats */

static void u64(char *buf, size_t len, uint64_t v)
{
    snprintf(buf, len, "%" PRIu64, v);
}

bool adm_show_stats(tg_session *s, const adm_args *a, struct evbuffer *out)
{
    if (!no_args(a, out, "SHOW STATS"))
        return true;
    static const adm_col cols[] = {
        {"table", ADM_TEXT},         {"rule", ADM_TEXT},           {"seen", ADM_INT8},
        {"passed", ADM_INT8},        {"rewritten", ADM_INT8},      {"rejected", ADM_INT8},
        {"refused", ADM_INT8},       {"statements", ADM_INT8},     {"avg_latency_us", ADM_FLOAT8},
        {"p99_latency_us", ADM_FLOAT8}, {"audit_written", ADM_INT8}, {"audit_dropped", ADM_INT8},
    };
    enum { NC = sizeof(cols) / sizeof(cols[0]) };
    adm_row_desc(out, cols, NC);
    const tg_stats *st = s->rt->stats;
    const tg_policy *p = &s->rt->cfg->policy;
    uint64_t rows = 0;
    char num[NC][32];
    for (int t = 0; t < st->n_tables && t < p->n_tables; t++) {
        char name[140];
        snprintf(name, sizeof(name), "%s.%s", p->tables[t].schema, p->tables[t].name);
        for (int r = 0; r < TG_STATS_RULES; r++) {
            const uint64_t *k = st->tables[t].by_rule[r];
            uint64_t any = 0;
            for (int j = 0; j < TG_STATS_KINDS; j++)
                any |= k[j];
            if (!any)
                continue;
            const char *v[NC] = {name, rw_rule_name((rw_rule)r)};
            for (int j = 0; j < TG_STATS_KINDS; j++) {
                u64(num[j], sizeof(num[j]), k[j]);
                v[2 + j] = num[j];
            }
            adm_row(out, NC, v);
            rows++;
        }
    }
    /* One line for everything: statements and their latency, audit writes. */
    const char *v[NC] = {"*", NULL};
    uint64_t tot[TG_STATS_KINDS] = {0};
    for (int t = 0; t < st->n_tables; t++)
        for (int r = 0; r < TG_STATS_RULES; r++)
            for (int j = 0; j < TG_STATS_KINDS; j++)
                tot[j] += st->tables[t].by_rule[r][j];
    for (int j = 0; j < TG_STATS_KINDS; j++) {
        u64(num[j], sizeof(num[j]), tot[j]);
        v[2 + j] = num[j];
    }
    u64(num[7], sizeof(num[7]), st->latency_count);
    v[7] = num[7];
    snprintf(num[8], sizeof(num[8]), "%.1f", st->latency_count ? (double)st->latency_sum_us / (double)st->latency_count : 0.0);
    v[8] = num[8];
    snprintf(num[9], sizeof(num[9]), "%.1f", tg_stats_latency_quantile(st, 0.99));
    v[9] = num[9];
    u64(num[10], sizeof(num[10]), st->audit_written);
    v[10] = num[10];
    u64(num[11], sizeof(num[11]), st->audit_dropped);
    v[11] = num[11];
    adm_row(out, NC, v);
    complete_rows(out, "STATS", rows + 1);
    return true;
}

/* ---------------------------------------------------------------- sessions */

typedef void (*sess_getter)(const tg_session *s, char *buf, size_t len);
typedef struct sess_col {
    adm_col col;
    sess_getter get;
} sess_col;

static void g_id(const tg_session *s, char *b, size_t n) { snprintf(b, n, "%" PRIu64, s->id); }
static void g_state(const tg_session *s, char *b, size_t n) { snprintf(b, n, "%s", sess_state_name(s->state)); }
static void g_user(const tg_session *s, char *b, size_t n) { snprintf(b, n, "%s", s->cl.user ? s->cl.user : ""); }
static void g_db(const tg_session *s, char *b, size_t n) { snprintf(b, n, "%s", s->cl.database ? s->cl.database : ""); }
static void g_app(const tg_session *s, char *b, size_t n)
{
    snprintf(b, n, "%s", s->cl.application_name ? s->cl.application_name : "");
}
static void g_peer(const tg_session *s, char *b, size_t n) { snprintf(b, n, "%s", s->cl.peer); }
static void g_ctls(const tg_session *s, char *b, size_t n) { snprintf(b, n, "%s", s->cl.tls ? "t" : "f"); }
static void g_stls(const tg_session *s, char *b, size_t n) { snprintf(b, n, "%s", s->sv.tls ? "t" : "f"); }
static void g_since(const tg_session *s, char *b, size_t n) { fmt_time(s->started_at, b, n); }
static void g_activity(const tg_session *s, char *b, size_t n) { fmt_time(s->last_activity, b, n); }
static void g_txn(const tg_session *s, char *b, size_t n) { snprintf(b, n, "%c", s->sv.txn_status ? s->sv.txn_status : 'I'); }
static void g_pending(const tg_session *s, char *b, size_t n) { snprintf(b, n, "%zu", track_pending(s->track)); }
static void g_pid(const tg_session *s, char *b, size_t n) { snprintf(b, n, "%d", (int)s->sv.backend_pid); }
static void g_cin(const tg_session *s, char *b, size_t n) { snprintf(b, n, "%" PRIu64, s->cl.bytes_in); }
static void g_cout(const tg_session *s, char *b, size_t n) { snprintf(b, n, "%" PRIu64, s->cl.bytes_out); }
static void g_sin(const tg_session *s, char *b, size_t n) { snprintf(b, n, "%" PRIu64, s->sv.bytes_in); }
static void g_sout(const tg_session *s, char *b, size_t n) { snprintf(b, n, "%" PRIu64, s->sv.bytes_out); }
static void g_kind(const tg_session *s, char *b, size_t n) { snprintf(b, n, "%s", s->admin ? "console" : "client"); }
static void g_paused(const tg_session *s, char *b, size_t n)
{
    snprintf(b, n, "%s", s->rt->paused && s->cl.throttled ? "t" : "f");
}

static const sess_col client_cols[] = {
    {{"id", ADM_INT8}, g_id},           {{"kind", ADM_TEXT}, g_kind},
    {{"state", ADM_TEXT}, g_state},     {{"user", ADM_TEXT}, g_user},
    {{"database", ADM_TEXT}, g_db},     {{"application_name", ADM_TEXT}, g_app},
    {{"peer", ADM_TEXT}, g_peer},       {{"tls", ADM_BOOL}, g_ctls},
    {{"since", ADM_TIMESTAMPTZ}, g_since}, {{"last_activity", ADM_TIMESTAMPTZ}, g_activity},
    {{"transaction", ADM_TEXT}, g_txn}, {{"pending", ADM_INT8}, g_pending},
    {{"paused", ADM_BOOL}, g_paused},   {{"bytes_in", ADM_INT8}, g_cin},
    {{"bytes_out", ADM_INT8}, g_cout},
};

static const sess_col server_cols[] = {
    {{"id", ADM_INT8}, g_id},             {{"state", ADM_TEXT}, g_state},
    {{"user", ADM_TEXT}, g_user},         {{"database", ADM_TEXT}, g_db},
    {{"backend_pid", ADM_INT8}, g_pid},   {{"client_peer", ADM_TEXT}, g_peer},
    {{"tls", ADM_BOOL}, g_stls},          {{"since", ADM_TIMESTAMPTZ}, g_since},
    {{"transaction", ADM_TEXT}, g_txn},   {{"bytes_in", ADM_INT8}, g_sin},
    {{"bytes_out", ADM_INT8}, g_sout},
};

static void show_sessions(tg_runtime *rt, struct evbuffer *out, const sess_col *cols, int n, bool servers)
{
    adm_col desc[32];
    for (int i = 0; i < n; i++)
        desc[i] = cols[i].col;
    adm_row_desc(out, desc, n);
    uint64_t rows = 0;
    char bufs[32][128];
    const char *v[32];
    tg_session *x;
    TAILQ_FOREACH(x, &rt->sessions, link) {
        if (servers && (x->admin || !x->sv.bev))
            continue;   /* only sessions holding a server connection */
        for (int i = 0; i < n; i++) {
            cols[i].get(x, bufs[i], sizeof(bufs[i]));
            v[i] = bufs[i][0] || cols[i].col.type == ADM_TEXT ? bufs[i] : NULL;
        }
        adm_row(out, n, v);
        rows++;
    }
    complete_rows(out, servers ? "SERVERS" : "CLIENTS", rows);
}

bool adm_show_clients(tg_session *s, const adm_args *a, struct evbuffer *out)
{
    if (no_args(a, out, "SHOW CLIENTS"))
        show_sessions(s->rt, out, client_cols, (int)(sizeof(client_cols) / sizeof(client_cols[0])), false);
    return true;
}

bool adm_show_servers(tg_session *s, const adm_args *a, struct evbuffer *out)
{
    if (no_args(a, out, "SHOW SERVERS"))
        show_sessions(s->rt, out, server_cols, (int)(sizeof(server_cols) / sizeof(server_cols[0])), true);
    return true;
}

/* ---------------------------------------------------------------- violations */

bool adm_show_violations(tg_session *s, const adm_args *a, struct evbuffer *out)
{
    long n = 50;
    if (a->n > 1) {
        adm_error(out, TG_SQLSTATE_SYNTAX_ERROR, "tenantguard console: bad arguments", "Syntax: SHOW VIOLATIONS [n]");
        return true;
    }
    if (a->n == 1) {
        char *end;
        n = strtol(a->tok[0], &end, 10);
        if (*end || n < 0 || n > TG_VIOLATIONS_MAX) {
            char hint[80];
            snprintf(hint, sizeof(hint), "n is 0 to %d.", TG_VIOLATIONS_MAX);
            adm_error(out, TG_SQLSTATE_SYNTAX_ERROR, "tenantguard console: bad arguments", hint);
            return true;
        }
    }
    static const adm_col cols[] = {{"time", ADM_TIMESTAMPTZ}, {"session", ADM_INT8}, {"client", ADM_TEXT},
                                   {"table", ADM_TEXT},       {"rule", ADM_TEXT},    {"sqlstate", ADM_TEXT},
                                   {"mode", ADM_TEXT},        {"fingerprint", ADM_TEXT}};
    adm_row_desc(out, cols, 8);
    uint64_t rows = 0;
    for (long i = 0; i < n; i++) {
        const tg_violation *v = tg_stats_recent(s->rt->stats, (uint64_t)i);
        if (!v)
            break;
        char t[40], id[24];
        fmt_time(v->at, t, sizeof(t));
        snprintf(id, sizeof(id), "%" PRIu64, v->session_id);
        const char *vals[] = {t, id, v->client, v->table[0] ? v->table : NULL, v->rule, v->sqlstate, v->mode,
                              v->fingerprint[0] ? v->fingerprint : NULL};
        adm_row(out, 8, vals);
        rows++;
    }
    complete_rows(out, "VIOLATIONS", rows);
    return true;
}

/* ---------------------------------------------------------------- mem */

bool adm_show_mem(tg_session *s, const adm_args *a, struct evbuffer *out)
{
    if (!no_args(a, out, "SHOW MEM"))
        return true;
    tg_runtime *rt = s->rt;
    static const adm_col cols[] = {{"object", ADM_TEXT}, {"count", ADM_INT8}, {"bytes", ADM_INT8},
                                   {"detail", ADM_TEXT}};
    adm_row_desc(out, cols, 4);
    size_t slots = 0, sess_bytes = 0;
    int n = 0;
    tg_session *x;
    TAILQ_FOREACH(x, &rt->sessions, link) {
        n++;
        sess_bytes += sizeof(*x);
        slots += track_capacity(x->track);
    }
    rw_cache_stats cs;
    rw_cache_get_stats(rt->cache, &cs);
    char c1[24], b1[24], c2[24], b2[24], c3[24], b3[24], d3[96], c4[24], b4[24];
    snprintf(c1, sizeof(c1), "%d", n);
    snprintf(b1, sizeof(b1), "%zu", sess_bytes);
    snprintf(c2, sizeof(c2), "%zu", slots);
    snprintf(b2, sizeof(b2), "%zu", slots * sizeof(track_slot));
    snprintf(c3, sizeof(c3), "%d", cs.entries);
    snprintf(b3, sizeof(b3), "%zu", cs.bytes);
    uint64_t lookups = cs.hits + cs.misses;
    snprintf(d3, sizeof(d3), "hits %" PRIu64 ", misses %" PRIu64 ", hit rate %.1f%%, evictions %" PRIu64
                             ", pre-filtered %" PRIu64, cs.hits, cs.misses,
             lookups ? 100.0 * (double)cs.hits / (double)lookups : 0.0, cs.evictions, cs.prefiltered);
    uint64_t vc = tg_stats_violation_count(rt->stats);
    snprintf(c4, sizeof(c4), "%" PRIu64, vc < TG_VIOLATIONS_MAX ? vc : TG_VIOLATIONS_MAX);
    snprintf(b4, sizeof(b4), "%zu", sizeof(rt->stats->ring));
    probe_cache_info pc;
    probe_cache_stats(rt, &pc);
    char c5[24], b5[24], d5[128];
    snprintf(c5, sizeof(c5), "%d", pc.entries);
    snprintf(b5, sizeof(b5), "%zu", pc.bytes);
    snprintf(d5, sizeof(d5), "databases; hits %" PRIu64 ", misses %" PRIu64 ", dropped after a layout change %" PRIu64,
             pc.hits, pc.misses, pc.drops);
    const char *rows[][4] = {
        {"sessions", c1, b1, NULL},
        {"request queue slots", c2, b2, NULL},
        {"decision cache", c3, b3, d3},
        {"violation log", c4, b4, "ring of the most recent"},
        {"table layout cache", c5, b5, d5},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        adm_row(out, 4, rows[i]);
    complete_rows(out, "MEM", sizeof(rows) / sizeof(rows[0]));
    return true;
}
