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
 *
 * The column order is the same for every session of a database and costs
 * the server most of the probe (a catalog join, ~1 ms), so it is cached per
 * server and database for layout_cache_ttl seconds: sessions starting within
 * that time send only the settings statement. A stale layout is never unsafe --
 * every positional INSERT carries layout_guard(), which checks the columns
 * when the row is written -- and a guard failure drops the entry at once.
 */
#include "config.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
/* Relations named like watched tables that the login keeps: more (a schema
 * per customer, say) and the session resolves names as if it knew none. */
#define PROBE_MAX_RELS 256

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

/* '"schema".name()' -- a literal holding a quoted function name. */
static void append_regproc_literal(struct evbuffer *b, const char *schema, const char *fn)
{
    evbuffer_add(b, "'\"", 2);
    for (const char *c = schema; *c; c++) {
        if (*c == '"')
            evbuffer_add(b, "\"", 1);
        if (*c == '\'')
            evbuffer_add(b, "'", 1);
        evbuffer_add(b, c, 1);
    }
    evbuffer_add_printf(b, "\".%s()'", fn);
}

static char *evbuffer_to_string(struct evbuffer *b)
{
    size_t len = evbuffer_get_length(b);
    char *sql = malloc(len + 1);
    if (sql) {
        evbuffer_remove(b, sql, len);
        sql[len] = '\0';
    }
    evbuffer_free(b);
    return sql;
}

/* The probe's statements, none of which can fail: the settings, the columns
 * of the watched tables (index lookups; no table of the policy need exist)
 * and the look-alikes. They run under the client's search_path, so every
 * operator is pg_catalog's by name: a role's own `=` on type name earlier on
 * its path must not make the probe fail or lie. */

/* (n.nspname = 'public' AND c.relname = 'policies') OR ... for every watched table. */
static void append_watched_pairs(struct evbuffer *b, const tg_policy *p)
{
    evbuffer_add(b, "(", 1);
    for (int i = 0; i < p->n_tables; i++) {
        evbuffer_add_printf(b, "%s(n.nspname OPERATOR(pg_catalog.=) ", i ? " OR " : "");
        append_literal(b, p->tables[i].schema);
        evbuffer_add_printf(b, "::pg_catalog.name AND c.relname OPERATOR(pg_catalog.=) ");
        append_literal(b, p->tables[i].name);
        evbuffer_add_printf(b, "::pg_catalog.name)");
    }
    if (p->n_tables == 0)
        evbuffer_add_printf(b, "false");
    evbuffer_add(b, ")", 1);
}
static char *settings_sql(const tg_policy *p)
{
    struct evbuffer *b = evbuffer_new();
    if (!b)
        return NULL;
    evbuffer_add_printf(b,
        "SELECT pg_catalog.current_setting('search_path'), "
        "pg_catalog.current_setting('standard_conforming_strings'), pg_catalog.\"current_user\"(), "
        "(SELECT pr.prosrc FROM pg_catalog.pg_proc pr WHERE pr.oid OPERATOR(pg_catalog.=) "
        "pg_catalog.to_regprocedure(");
    append_regproc_literal(b, p->helper_schema, "helpers_version");
    evbuffer_add_printf(b, "));");
    return evbuffer_to_string(b);
}

static char *catalog_sql(const tg_policy *p)
{
    struct evbuffer *b = evbuffer_new();
    if (!b)
        return NULL;
    evbuffer_add_printf(b,
        "SELECT n.nspname, c.relname, pg_catalog.string_agg(a.attname::pg_catalog.text, E'\\x1f' "
        "ORDER BY a.attnum) FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid "
        "AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped WHERE ");
    append_watched_pairs(b, p);
    evbuffer_add_printf(b, " GROUP BY 1, 2;");
    /* The look-alikes: other tables, views, foreign and partitioned tables
     * of those names, temp schemas aside (the session follows its own), in
     * schemas this user may use -- the server's name lookup skips the others,
     * so they are not on its path. */
    evbuffer_add_printf(b,
        "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace "
        "WHERE c.relkind OPERATOR(pg_catalog.=) ANY ('{r,p,v,f}'::pg_catalog.\"char\"[]) "
        "AND pg_catalog.has_schema_privilege(n.oid, 'USAGE') "
        "AND n.nspname OPERATOR(pg_catalog.!~) '^pg_(toast_)?temp_' "
        "AND c.relname OPERATOR(pg_catalog.=) ANY (ARRAY[");
    for (int i = 0; i < p->n_tables; i++) {
        if (i)
            evbuffer_add(b, ",", 1);
        append_literal(b, p->tables[i].name);
    }
    evbuffer_add_printf(b, "]::pg_catalog.name[]) AND NOT ");
    append_watched_pairs(b, p);
    evbuffer_add_printf(b, " LIMIT %d", PROBE_MAX_RELS + 1);
    return evbuffer_to_string(b);
}

/* ---------------------------------------------------------------- cache */

#define PROBE_CACHE_MAX 64          /* databases */

typedef struct pc_row {
    char *schema, *table, *cols;    /* cols: SEP-separated, as the server sent them */
} pc_row;

typedef struct pc_entry {
    char *database;
    uint64_t key;                   /* server + catalog statement */
    uint64_t at_ms;
    pc_row *rows;
    int n;
    char **rel_schemas, **rel_names;  /* the look-alikes, when rels_known */
    int n_rels;
    bool rels_known;
    char *role;                       /* the current role they were listed for (USAGE) */
} pc_entry;

struct probe_cache {
    pc_entry e[PROBE_CACHE_MAX];
    int n;
    uint64_t hits, misses, drops;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t fnv(uint64_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    h ^= 0xff;   /* a separator no string contains */
    return h * 1099511628211ULL;
}

static void entry_clear(pc_entry *e)
{
    for (int i = 0; i < e->n; i++) {
        free(e->rows[i].schema);
        free(e->rows[i].table);
        free(e->rows[i].cols);
    }
    free(e->rows);
    for (int i = 0; i < e->n_rels; i++) {
        free(e->rel_schemas[i]);
        free(e->rel_names[i]);
    }
    free(e->rel_schemas);
    free(e->rel_names);
    free(e->role);
    free(e->database);
    memset(e, 0, sizeof(*e));
}

static pc_entry *cache_find(struct probe_cache *c, const char *database, uint64_t key)
{
    for (int i = 0; c && i < c->n; i++)
        if (c->e[i].key == key && strcmp(c->e[i].database, database) == 0)
            return &c->e[i];
    return NULL;
}

static void cache_remove(struct probe_cache *c, pc_entry *e)
{
    entry_clear(e);
    *e = c->e[--c->n];
    memset(&c->e[c->n], 0, sizeof(c->e[c->n]));
}

/* What session s learned, for the next sessions of its database. */
static void cache_store(tg_session *s)
{
    tg_runtime *rt = s->rt;
    if (!rt->probe_cache && !(rt->probe_cache = calloc(1, sizeof(*rt->probe_cache))))
        return;
    struct probe_cache *c = rt->probe_cache;
    pc_entry *e = cache_find(c, s->cl.database, s->probe.cache_key);
    if (e) {
        cache_remove(c, e);
    } else if (c->n == PROBE_CACHE_MAX) {
        int oldest = 0;
        for (int i = 1; i < c->n; i++)
            if (c->e[i].at_ms < c->e[oldest].at_ms)
                oldest = i;
        cache_remove(c, &c->e[oldest]);
    }
    e = &c->e[c->n];
    e->database = strdup(s->cl.database);
    e->rows = calloc((size_t)(s->probe.n ? s->probe.n : 1), sizeof(*e->rows));
    if (!e->database || !e->rows) {
        entry_clear(e);
        return;
    }
    for (int i = 0; i < s->probe.n; i++) {
        const probe_table *t = &s->probe.tables[i];
        size_t len = 1;
        for (int k = 0; k < t->n; k++)
            len += strlen(t->columns[k]) + 1;
        char *cols = malloc(len), *w = cols;
        pc_row *r = &e->rows[e->n];
        r->schema = strdup(t->schema);
        r->table = strdup(t->table);
        r->cols = cols;
        if (!cols || !r->schema || !r->table) {
            e->n++;
            entry_clear(e);
            return;
        }
        for (int k = 0; k < t->n; k++)
            w += sprintf(w, "%s%s", k ? SEP : "", t->columns[k]);
        *w = '\0';
        e->n++;
    }
    if (s->probe.rels_known) {
        int n = s->probe.n_rels;
        e->rel_schemas = calloc((size_t)(n ? n : 1), sizeof(char *));
        e->rel_names = calloc((size_t)(n ? n : 1), sizeof(char *));
        if (!e->rel_schemas || !e->rel_names) {
            entry_clear(e);
            return;
        }
        for (; e->n_rels < n; e->n_rels++) {
            e->rel_schemas[e->n_rels] = strdup(s->probe.rel_schemas[e->n_rels]);
            e->rel_names[e->n_rels] = strdup(s->probe.rel_names[e->n_rels]);
            if (!e->rel_schemas[e->n_rels] || !e->rel_names[e->n_rels]) {
                e->n_rels++;
                entry_clear(e);
                return;
            }
        }
        e->rels_known = true;
        if (s->probe.role && !(e->role = strdup(s->probe.role))) {
            entry_clear(e);
            return;
        }
    }
    e->key = s->probe.cache_key;
    e->at_ms = mono_ms();
    c->n++;
}

/* A fresh entry for s's database: its tables go into s's probe. */
static bool cache_use(tg_session *s)
{
    struct probe_cache *c = s->rt->probe_cache;
    pc_entry *e = cache_find(c, s->cl.database, s->probe.cache_key);
    if (e && mono_ms() - e->at_ms >= (uint64_t)s->cfg->layout_cache_ttl * 1000u) {
        cache_remove(c, e);
        e = NULL;
    }
    if (!e) {
        if (c)
            c->misses++;
        return false;
    }
    for (int i = 0; i < e->n; i++)
        probe_catalog_set(&s->probe, e->rows[i].schema, e->rows[i].table, e->rows[i].cols);
    bool rels_ok = true;
    for (int i = 0; i < e->n_rels && rels_ok; i++)
        rels_ok = probe_rel_add(&s->probe, e->rel_schemas[i], e->rel_names[i]);
    s->probe.rels_known = e->rels_known && rels_ok;
    if (e->role && !(s->probe.cached_role = strdup(e->role)))
        s->probe.rels_known = false;
    if (s->probe.n != e->n || !rels_ok) {   /* out of memory on the way: ask the server */
        uint64_t key = s->probe.cache_key;
        probe_free(&s->probe);
        s->probe.cache_key = key;
        c->misses++;
        return false;
    }
    c->hits++;
    return true;
}

void probe_cache_forget(tg_runtime *rt, const char *database)
{
    struct probe_cache *c = rt->probe_cache;
    for (int i = 0; c && i < c->n;)
        if (strcmp(c->e[i].database, database) == 0) {
            cache_remove(c, &c->e[i]);
            c->drops++;
        } else {
            i++;
        }
}

void probe_cache_clear(tg_runtime *rt)
{
    struct probe_cache *c = rt->probe_cache;
    if (!c)
        return;
    for (int i = 0; i < c->n; i++)
        entry_clear(&c->e[i]);
    free(c);
    rt->probe_cache = NULL;
}

void probe_cache_stats(const tg_runtime *rt, probe_cache_info *out)
{
    memset(out, 0, sizeof(*out));
    const struct probe_cache *c = rt->probe_cache;
    if (!c)
        return;
    out->entries = c->n;
    out->hits = c->hits;
    out->misses = c->misses;
    out->drops = c->drops;
    out->bytes = sizeof(*c);
    for (int i = 0; i < c->n; i++) {
        out->bytes += strlen(c->e[i].database) + 1 + (size_t)c->e[i].n * sizeof(pc_row);
        for (int k = 0; k < c->e[i].n; k++)
            out->bytes += strlen(c->e[i].rows[k].schema) + strlen(c->e[i].rows[k].table) +
                          strlen(c->e[i].rows[k].cols) + 3;
        for (int k = 0; k < c->e[i].n_rels; k++)
            out->bytes += 2 * sizeof(char *) + strlen(c->e[i].rel_schemas[k]) + strlen(c->e[i].rel_names[k]) + 2;
    }
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
    if (s->probe.result == 0 && ncols == 4) {
        char *path = field_dup(&r), *scs = field_dup(&r), *role = field_dup(&r), *ver = field_dup(&r);
        /* "$user" is the current role: the login's, or a role= startup
         * option's, or the user's ALTER ROLE ... SET role. */
        sessenv_set_user(&s->env, role);
        free(s->probe.role);
        s->probe.role = role;
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
    } else if (s->probe.result == 2 && ncols == 2) {
        char *schema = field_dup(&r), *name = field_dup(&r);
        if (!schema || !name || s->probe.n_rels >= PROBE_MAX_RELS || !probe_rel_add(&s->probe, schema, name))
            s->probe.rels_overflow = true;
        free(schema);
        free(name);
    }
}

static void probe_done(tg_session *s)
{
    if (!s->probe.from_cache)
        s->probe.rels_known = !s->probe.failed && s->probe.result == 3 && !s->probe.rels_overflow;
    else if (!s->probe.role || !s->probe.cached_role || strcmp(s->probe.role, s->probe.cached_role) != 0)
        s->probe.rels_known = false;   /* listed for another role's USAGE: pin nothing */
    sessenv_set_rels(&s->env, (const char *const *)s->probe.rel_schemas, (const char *const *)s->probe.rel_names,
                     s->probe.n_rels, s->probe.rels_known);
    if (!s->probe.got_settings)
        sessenv_set_login_path(&s->env, NULL);   /* unknown */
    else if (!s->probe.from_cache && !s->probe.failed && s->probe.result == 3 && s->cfg->layout_cache_ttl > 0)
        cache_store(s);
    tg_clog(TG_LOG_DEBUG, &s->log, "login probe: search_path %s, helpers %s, %d table layouts%s",
            s->env.effective.known ? "known" : "unknown", s->probe.helpers_ok ? "ok" : "missing",
            s->probe.n, s->probe.from_cache ? " (cached)" : "");
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
    const tg_policy *p = &s->cfg->policy;
    char *sql = settings_sql(p), *cat = catalog_sql(p);
    if (sql && cat) {
        char port[16];
        snprintf(port, sizeof(port), "%d", s->cfg->server_port);
        /* The user too: which look-alikes count depends on its schema privileges. */
        s->probe.cache_key = fnv(fnv(fnv(fnv(1469598103934665603ULL, s->cfg->server_host), port), cat),
                                 s->cl.user ? s->cl.user : "");
        s->probe.from_cache = cache_use(s);
        if (!s->probe.from_cache) {
            char *both = malloc(strlen(sql) + strlen(cat) + 1);
            if (both)
                strcat(strcpy(both, sql), cat);
            free(sql);
            sql = both;
        }
    }
    free(cat);
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

bool probe_rel_add(sess_probe *p, const char *schema, const char *name)
{
    if (p->n_rels == p->cap_rels) {
        int cap = p->cap_rels ? p->cap_rels * 2 : 8;
        char **s = realloc(p->rel_schemas, (size_t)cap * sizeof(*s));
        if (!s)
            return false;
        p->rel_schemas = s;
        char **n = realloc(p->rel_names, (size_t)cap * sizeof(*n));
        if (!n)
            return false;
        p->rel_names = n;
        p->cap_rels = cap;
    }
    char *s = strdup(schema), *n = strdup(name);
    if (!s || !n) {
        free(s);
        free(n);
        return false;
    }
    p->rel_schemas[p->n_rels] = s;
    p->rel_names[p->n_rels] = n;
    p->n_rels++;
    return true;
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
    for (int i = 0; i < p->n_rels; i++) {
        free(p->rel_schemas[i]);
        free(p->rel_names[i]);
    }
    free(p->rel_schemas);
    free(p->rel_names);
    free(p->role);
    free(p->cached_role);
    memset(p, 0, sizeof(*p));
}
