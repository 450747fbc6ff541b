/*
 * probe.c -- one query of tenantguard's own at login, before the client gets
 * its first ReadyForQuery: the session's effective search_path (which role
 * and database settings may have changed from the server default), whether
 * tenantguard's SQL helpers are installed in the version this policy needs,
 * standard_conforming_strings, and the column order of the watched tables
 * (for INSERTs without a column list).
 *
 * It runs only when some watched table is not in mode off. It cannot fail
 * in a way the client sees: any error leaves the answers unknown, which
 * rewrite/ and the proxy treat as the cautious case.
 */
#include "config.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "policy/helpers_sql.h"
#include "policy/sqlstate.h"
#include "proxy/pgframe.h"
#include "proxy/pgproto.h"
#include "proxy/probe.h"
#include "proxy/runtime.h"
#include "proxy/session.h"

#define PROBE_MAX_MESSAGE (4 * 1024 * 1024)
#define SEP "\x1f"   /* between column names: a byte no sane identifier has */

/* Always: a reload or SET mode may turn enforcement on for sessions that
 * logged in while every table was off, and they need what the probe knows. */
bool probe_needed(const tg_config *cfg)
{
    return cfg->policy.n_tables > 0;
}

static void append_literal(struct evbuffer *b, const char *s)
{
    evbuffer_add(b, "'", 1);
    for (; *s; s++) {
        if (*s == '\'')
            evbuffer_add(b, "'", 1);
        evbuffer_add(b, s, 1);
    }
    evbuffer_add(b, "'", 1);
}

/* The probe's text: two statements, neither of which can fail. */
static char *probe_sql(const tg_policy *p)
{
    struct evbuffer *b = evbuffer_new();
    if (!b)
        return NULL;
    evbuffer_add_printf(b,
        "SELECT pg_catalog.current_setting('search_path'), "
        "pg_catalog.current_setting('standard_conforming_strings'), "
        "(SELECT pr.prosrc FROM pg_catalog.pg_proc pr JOIN pg_catalog.pg_namespace ns "
        "ON ns.oid OPERATOR(pg_catalog.=) pr.pronamespace WHERE ns.nspname OPERATOR(pg_catalog.=) ");
    append_literal(b, p->helper_schema);
    evbuffer_add_printf(b, " AND pr.proname OPERATOR(pg_catalog.=) 'helpers_version' LIMIT 1);"
        "SELECT n.nspname, c.relname, pg_catalog.string_agg(a.attname::pg_catalog.text, E'\\x1f' "
        "ORDER BY a.attnum) FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid "
        "AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped "
        "WHERE (n.nspname::pg_catalog.text, c.relname::pg_catalog.text) IN (");
    for (int i = 0; i < p->n_tables; i++) {
        evbuffer_add_printf(b, "%s(", i ? "," : "");
        append_literal(b, p->tables[i].schema);
        evbuffer_add(b, ",", 1);
        append_literal(b, p->tables[i].name);
        evbuffer_add(b, ")", 1);
    }
    evbuffer_add_printf(b, ") GROUP BY 1, 2");
    size_t len = evbuffer_get_length(b);
    char *sql = malloc(len + 1);
    if (sql) {
        evbuffer_remove(b, sql, len);
        sql[len] = '\0';
    }
    evbuffer_free(b);
    return sql;
}

/* ---------------------------------------------------------------- answers */

static char *field_dup(pgf_reader *r)
{
    uint32_t n = pgf_get_u32(r);
    if (r->bad || n == 0xffffffffu)
        return NULL;
    const uint8_t *p = pgf_get_bytes(r, n);
    if (!p)
        return NULL;
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

static void take_catalog_row(tg_session *s, pgf_reader *r)
{
    char *schema = field_dup(r), *table = field_dup(r), *cols = field_dup(r);
    if (schema && table && cols)
        probe_catalog_set(&s->probe, schema, table, cols);
    free(schema);
    free(table);
    free(cols);
}

static void take_data_row(tg_session *s, const uint8_t *payload, size_t len)
{
    pgf_reader r = pgf_reader_init(payload, len);
    uint16_t ncols = pgf_get_u16(&r);
    if (s->probe.result == 0 && ncols == 3) {
        char *path = field_dup(&r), *scs = field_dup(&r), *ver = field_dup(&r);
        sessenv_set_login_path(&s->env, path);
        sessenv_std_strings(&s->env, !scs || strcmp(scs, "on") == 0);
        char want[64];
        tg_helpers_version_string(&s->cfg->policy, want, sizeof(want));
        s->probe.helpers_ok = ver && strstr(ver, want) != NULL;
        s->probe.got_settings = true;
        free(path);
        free(scs);
        free(ver);
    } else if (s->probe.result == 1 && ncols == 3) {
        take_catalog_row(s, &r);
    }
}

static void probe_done(tg_session *s)
{
    if (!s->probe.got_settings)
        sessenv_set_login_path(&s->env, NULL);   /* unknown */
    tg_clog(TG_LOG_DEBUG, &s->log, "login probe: search_path %s, helpers %s, %d table layouts",
            s->env.effective.known ? "known" : "unknown", s->probe.helpers_ok ? "ok" : "missing",
            s->probe.n);
    /* The client's first ReadyForQuery, held back until now. */
    pgf_ready(bufferevent_get_output(s->cl.bev), 'I');
    sess_set_state(s, SS_ACTIVE);
    relay_begin(s);
}

static void probe_read_cb(struct bufferevent *bev, void *arg)
{
    tg_session *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    while (s->state == SS_PROBE) {
        pgf_header h;
        pgf_peek_result pr = pgf_peek(in, &h);
        if (pr == PGF_NEED_MORE)
            return;
        if (pr == PGF_BAD_LENGTH || h.len > PROBE_MAX_MESSAGE) {
            sess_fatal(s, TG_SQLSTATE_CONNECTION_FAILURE, "tenantguard: invalid message from the server",
                       NULL);
            return;
        }
        size_t wire = pgf_wire_len(&h);
        if (evbuffer_get_length(in) < wire)
            return;
        const uint8_t *msg = evbuffer_pullup(in, (ssize_t)wire);
        switch (h.type) {
        case PG_BE_DATA_ROW:
            take_data_row(s, msg + 5, h.len - 4);
            break;
        case PG_BE_COMMAND_COMPLETE:
            s->probe.result++;
            break;
        case PG_BE_ERROR:
            s->probe.failed = true;
            tg_clog(TG_LOG_WARNING, &s->log, "login probe failed; resolving names cautiously");
            break;
        case PG_BE_PARAM_STATUS:
        case PG_BE_NOTICE:
        case PG_BE_NOTIFICATION:
            /* asynchronous: the client should see these */
            evbuffer_remove_buffer(in, bufferevent_get_output(s->cl.bev), wire);
            continue;
        case PG_BE_READY:
            evbuffer_drain(in, wire);
            probe_done(s);
            return;
        default:
            break;   /* RowDescription etc. */
        }
        evbuffer_drain(in, wire);
    }
}

static void probe_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)what;
    tg_session *s = arg;
    if (bev == s->cl.bev) {
        sess_close(s, "client closed during login");
        return;
    }
    sess_fatal(s, TG_SQLSTATE_CONNECTION_FAILURE, "tenantguard: the server closed the connection", NULL);
}

static void probe_client_read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    (void)arg;   /* the client has no ReadyForQuery yet; what it sends waits */
}

void probe_begin(tg_session *s)
{
    char *sql = probe_sql(&s->cfg->policy);
    if (!sql) {
        sess_fatal(s, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory", NULL);
        return;
    }
    pgf_builder b;
    pgf_begin(&b, PG_FE_QUERY);
    pgf_put_str(&b, sql);
    free(sql);
    if (pgf_finish(&b, bufferevent_get_output(s->sv.bev)) != 0) {
        sess_fatal(s, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory", NULL);
        return;
    }
    bufferevent_setcb(s->sv.bev, probe_read_cb, NULL, probe_event_cb, s);
    bufferevent_setcb(s->cl.bev, probe_client_read_cb, NULL, probe_event_cb, s);
    bufferevent_disable(s->cl.bev, EV_READ);   /* what the client sends early waits in the kernel */
    bufferevent_enable(s->sv.bev, EV_READ | EV_WRITE);
}

/* ---------------------------------------------------------------- catalog */

void probe_catalog_set(sess_probe *p, const char *schema, const char *table, const char *cols)
{
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 16;
        probe_table *t = realloc(p->tables, (size_t)cap * sizeof(*t));
        if (!t)
            return;
        p->tables = t;
        p->cap = cap;
    }
    probe_table *t = &p->tables[p->n];
    memset(t, 0, sizeof(*t));
    t->schema = strdup(schema);
    t->table = strdup(table);
    t->names = strdup(cols);
    int n = 1;
    for (const char *c = cols; (c = strstr(c, SEP)); c++)
        n++;
    t->columns = calloc((size_t)n, sizeof(char *));
    if (!t->schema || !t->table || !t->names || !t->columns) {
        free(t->schema);
        free(t->table);
        free(t->names);
        free(t->columns);
        return;
    }
    for (char *c = t->names; c && t->n < n;) {
        t->columns[t->n++] = c;
        c = strstr(c, SEP);
        if (c)
            *c++ = '\0';
    }
    p->n++;
    /* FNV-1a over what we saw; with the generation, part of the cache key */
    uint64_t h = p->base_version ? p->base_version : 1469598103934665603ULL;
    for (const char *parts[] = {schema, ".", table, ":", cols, NULL}, **q = parts; *q; q++)
        for (const char *c = *q; *c; c++) {
            h ^= (unsigned char)*c;
            h *= 1099511628211ULL;
        }
    p->base_version = h;
    p->mapped_generation = 0;   /* remap on next use */
}

const rw_catalog *probe_catalog(sess_probe *p, const tg_policy *policy, uint64_t gen)
{
    if (p->mapped_generation == gen && gen)
        return &p->catalog;
    free(p->entries);
    p->entries = calloc((size_t)(p->n ? p->n : 1), sizeof(*p->entries));
    p->catalog.n_tables = 0;
    p->catalog.tables = p->entries;
    if (!p->entries)
        return NULL;
    for (int i = 0; i < p->n; i++) {
        const tg_table *t = tg_policy_find(policy, p->tables[i].schema, p->tables[i].table);
        if (!t)
            continue;
        p->entries[p->catalog.n_tables++] = (rw_catalog_table){
            .table = (int)(t - policy->tables), .columns = (const char *const *)p->tables[i].columns,
            .n_columns = p->tables[i].n};
    }
    p->catalog.version = p->base_version ^ (gen * 0x9e3779b97f4a7c15ULL);
    p->mapped_generation = gen;
    return &p->catalog;
}

void probe_free(sess_probe *p)
{
    for (int i = 0; i < p->n; i++) {
        free(p->tables[i].schema);
        free(p->tables[i].table);
        free(p->tables[i].names);
        free(p->tables[i].columns);
    }
    free(p->tables);
    free(p->entries);
    memset(p, 0, sizeof(*p));
}
