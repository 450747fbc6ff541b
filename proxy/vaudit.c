/*
 * vaudit.c -- violations into the audit table (see vaudit.h).
 *
 * Loop side: a list of pending entries and at most one batch in flight on
 * the audit thread; a batch takes everything pending (up to BATCH_MAX) and,
 * when it is done, the next one goes if anything is pending. Worker side:
 * one connection, kept between batches, and one INSERT per batch from a
 * jsonb array (jansson does the escaping).
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "proxy/runtime.h"
#include "proxy/sidepq.h"
#include "proxy/vaudit.h"
#include "proxy/worker.h"

#define BATCH_MAX 500
#define RETRY_MAX_S 30

typedef struct vaudit_entry {
    struct vaudit_entry *next;
    time_t at;
    uint64_t session_id;
    char tenant[72];            /* as the server's message printed it; "" = not named */
    const char *status;         /* "denied", or "observed" (observe mode, violation_audit = all) */
    char table[130], rule[16], sqlstate[6], fingerprint[17];
    char app[64], addr[64], port[8], user[64], db[64];
} vaudit_entry;

typedef enum { VB_WRITTEN = 0, VB_RETRY, VB_REFUSED } vaudit_outcome;

/* One INSERT's worth, handed to the audit thread. */
typedef struct vaudit_batch {
    tg_job job;
    tg_vaudit *va;
    tg_config *cfg;             /* reference: the DSN and the names */
    vaudit_entry *first;        /* n entries, linked; read-only while in flight */
    int n;
    vaudit_outcome outcome;
    char err[512];
} vaudit_batch;

struct tg_vaudit {
    tg_runtime *rt;
    tg_mailbox *mb;
    tg_workq *q;                /* one thread, created when first needed */
    vaudit_entry *head, **tail; /* pending, oldest first */
    int n_pending;
    vaudit_batch *in_flight;
    struct event *retry;        /* back-off after a lost connection */
    int fail_streak;
    time_t refused_logged;      /* last "dropped" line: at most one a minute */
    uint64_t refused_unlogged;  /* entries dropped since */
    /* the audit thread's, touched only while a batch is in flight */
    PGconn *conn;
    char *conn_dsn;             /* the sidecar_dsn conn was opened with */
    int tenant_join;            /* -1 unknown, else the tenant_ids kind of the tenant id column */
};

static void kick(tg_vaudit *va);

/* ---------------------------------------------------------------- loop side */

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kick(arg);
}

tg_vaudit *vaudit_new(tg_runtime *rt, tg_mailbox *mb)
{
    tg_vaudit *va = calloc(1, sizeof(*va));
    if (!va)
        return NULL;
    va->rt = rt;
    va->mb = mb;
    va->tail = &va->head;
    va->tenant_join = -1;
    va->retry = evtimer_new(rt->base, retry_cb, va);
    if (!va->retry) {
        free(va);
        return NULL;
    }
    return va;
}

/* The tenant a helper's rejection names, as the server printed it (see
 * sql/tenantguard.sql): "tenant X does not exist (", "tenant X has no
 * workspace (", "does not match tenant X (workspace ", "cannot change from X
 * to Y (R4)" -- the tenant the row had. An id with a space is not taken: the
 * words around it could not tell where it ends. "NULL" is R4's word for no
 * tenant. The id is checked against its column's type where it is written. */
static void tenant_of(const char *msg, char *out, size_t len)
{
    static const struct {
        const char *mark;
        const char *ends[3];
    } forms[] = {
        {"tenant ", {" does not exist (", " has no workspace (", " (workspace "}},
        {"cannot change from ", {" to ", NULL, NULL}},
    };
    out[0] = '\0';
    for (size_t k = 0; msg && k < sizeof(forms) / sizeof(forms[0]); k++) {
        for (const char *p = strstr(msg, forms[k].mark); p; p = strstr(p + 1, forms[k].mark)) {
            const char *d = p + strlen(forms[k].mark);
            size_t n = strcspn(d, " ");
            if (n == 0 || n >= len || (n == 4 && memcmp(d, "NULL", 4) == 0))
                continue;
            for (int i = 0; i < 3 && forms[k].ends[i]; i++) {
                if (strncmp(d + n, forms[k].ends[i], strlen(forms[k].ends[i])) == 0) {
                    memcpy(out, d, n);
                    out[n] = '\0';
                    return;
                }
            }
        }
    }
}

/* "addr:port" / "[v6]:port" / "unix" into address and port. */
static void split_peer(const char *peer, vaudit_entry *e)
{
    const char *colon = strrchr(peer, ':');
    if (!colon || strcmp(peer, "unix") == 0) {
        snprintf(e->addr, sizeof(e->addr), "%s", peer);
        return;
    }
    const char *a = peer;
    size_t n = (size_t)(colon - peer);
    if (*a == '[' && n >= 2 && a[n - 1] == ']') {
        a++;
        n -= 2;
    }
    snprintf(e->addr, sizeof(e->addr), "%.*s", (int)n, a);
    snprintf(e->port, sizeof(e->port), "%s", colon + 1);
}

void vaudit_violation(tg_session *s, const tg_violation *v, const char *server_msg)
{
    tg_runtime *rt = s->rt;
    tg_vaudit *va = rt->vaudit;
    bool observed = strcmp(v->mode, "observe") == 0;
    if (!va || rt->cfg->violation_audit == TG_VAUDIT_OFF || (observed && rt->cfg->violation_audit != TG_VAUDIT_ALL))
        return;
    vaudit_entry *e = NULL;
    if (vaudit_pending(va) >= rt->cfg->violation_audit_queue || !(e = calloc(1, sizeof(*e)))) {
        rt->stats->audit_dropped++;
        return;
    }
    e->at = v->at;
    e->session_id = v->session_id;
    tenant_of(server_msg, e->tenant, sizeof(e->tenant));
    e->status = observed ? "observed" : "denied";
    memcpy(e->table, v->table, sizeof(e->table));
    memcpy(e->rule, v->rule, sizeof(e->rule));
    memcpy(e->sqlstate, v->sqlstate, sizeof(e->sqlstate));
    memcpy(e->fingerprint, v->fingerprint, sizeof(e->fingerprint));
    snprintf(e->app, sizeof(e->app), "%s", s->cl.application_name ? s->cl.application_name : "");
    snprintf(e->user, sizeof(e->user), "%s", s->cl.user ? s->cl.user : "");
    snprintf(e->db, sizeof(e->db), "%s", s->cl.database ? s->cl.database : "");
    split_peer(s->cl.peer, e);
    *va->tail = e;
    va->tail = &e->next;
    va->n_pending++;
    kick(va);
}

int vaudit_pending(const tg_vaudit *va)
{
    return va->n_pending + (va->in_flight ? va->in_flight->n : 0);
}

static void free_entries(vaudit_entry *e)
{
    while (e) {
        vaudit_entry *next = e->next;
        free(e);
        e = next;
    }
}

static void batch_run(tg_job *j);
static void batch_done(tg_job *j);

static void dropped(tg_vaudit *va, int n, const char *why)
{
    time_t now = time(NULL);
    va->rt->stats->audit_dropped += (uint64_t)n;
    va->refused_unlogged += (uint64_t)n;
    if (now - va->refused_logged < 60)
        return;
    log_error("violation_audit: %" PRIu64 " entries dropped: %s", va->refused_unlogged, why);
    va->refused_logged = now;
    va->refused_unlogged = 0;
}

/* Send the next batch when none is in flight and no back-off waits. */
static void kick(tg_vaudit *va)
{
    if (!va->rt->cfg->violation_audit && va->head) {
        /* Turned off by a reload: what still waits is not written. */
        dropped(va, va->n_pending, "violation_audit was turned off");
        free_entries(va->head);
        va->head = NULL;
        va->tail = &va->head;
        va->n_pending = 0;
    }
    if (va->in_flight || !va->head || evtimer_pending(va->retry, NULL))
        return;
    if (!va->q && !(va->q = workq_new(va->mb, "audit", 1, 1)))
        return;   /* retried at the next violation */
    vaudit_batch *b = calloc(1, sizeof(*b));
    if (!b)
        return;
    b->job.run = batch_run;
    b->job.done = batch_done;
    b->va = va;
    b->cfg = tg_config_ref(va->rt->cfg);
    /* Take up to BATCH_MAX entries off the head. */
    vaudit_entry **link = &va->head;
    while (*link && b->n < BATCH_MAX) {
        link = &(*link)->next;
        b->n++;
    }
    b->first = va->head;
    va->head = *link;
    *link = NULL;
    if (!va->head)
        va->tail = &va->head;
    va->n_pending -= b->n;
    va->in_flight = b;
    if (workq_submit(va->q, &b->job) != 0) {
        b->job.cancelled = true;   /* stopped: counted as dropped */
        batch_done(&b->job);
    }
}

/* Put a batch's entries back at the head (a retry). */
static void requeue(tg_vaudit *va, vaudit_batch *b)
{
    vaudit_entry *last = b->first;
    while (last->next)
        last = last->next;
    last->next = va->head;
    if (!va->head)
        va->tail = &last->next;
    va->head = b->first;
    va->n_pending += b->n;
    b->first = NULL;
}

static void batch_done(tg_job *j)
{
    vaudit_batch *b = (vaudit_batch *)j;
    tg_vaudit *va = b->va;
    tg_stats *st = va->rt->stats;
    va->in_flight = NULL;
    if (j->cancelled) {
        b->outcome = VB_REFUSED;
        snprintf(b->err, sizeof(b->err), "shutting down");
    }
    switch (b->outcome) {
    case VB_WRITTEN:
        st->audit_written += (uint64_t)b->n;
        if (va->fail_streak)
            log_info("violation_audit: writing again (%d entries waiting)", va->n_pending);
        va->fail_streak = 0;
        break;
    case VB_RETRY: {
        int delay = va->fail_streak < 5 ? 1 << va->fail_streak : RETRY_MAX_S;
        if (va->fail_streak++ == 0)
            log_warning("violation_audit: %s; retrying (entries queue up to violation_audit_queue, "
                        "then are dropped and counted)", b->err);
        requeue(va, b);
        struct timeval tv = {delay < RETRY_MAX_S ? delay : RETRY_MAX_S, 0};
        evtimer_add(va->retry, &tv);
        break;
    }
    case VB_REFUSED:
        dropped(va, b->n, b->err);
        break;
    }
    free_entries(b->first);
    tg_config_unref(b->cfg);
    free(b);
    kick(va);
}

/* ---------------------------------------------------------------- audit thread */

static json_t *entry_json(const vaudit_entry *e)
{
    char at[40];
    struct tm tm;
    gmtime_r(&e->at, &tm);
    strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_t *ctx = json_pack("{s:s?,s:s,s:s,s:s?,s:s,s:s,s:s?,s:s,s:s,s:I,s:s,s:s}",
                            "table", e->table[0] ? e->table : NULL, "rule", e->rule, "sqlstate", e->sqlstate,
                            "fingerprint", e->fingerprint[0] ? e->fingerprint : NULL, "application_name", e->app,
                            "client_addr", e->addr, "client_port", e->port[0] ? e->port : NULL, "user", e->user,
                            "database", e->db, "session_id", (json_int_t)e->session_id, "occurred_at", at,
                            "source", "tenantguard");
    if (ctx)
        json_object_set_new(ctx, "mode", json_string(strcmp(e->status, "observed") == 0 ? "observe" : "enforce"));
    return json_pack("{s:o,s:s?,s:s,s:s?}", "context", ctx, "table", e->table[0] ? e->table : NULL, "status",
                     e->status, "tenant", e->tenant[0] ? e->tenant : NULL);
}

/* How a rejection's tenant is looked up: by the type of the tenant id
 * column. The id is text from the server's message; it is cast only once a
 * pattern shows the cast cannot fail, so one odd id never costs the batch. */
enum { TENANT_NO_LOOKUP = 0, TENANT_INTEGER, TENANT_UUID, TENANT_TEXT };

static int probe_tenant_ids(PGconn *c, const tg_policy *p)
{
    char tq[300];
    sidepq_qname(p->tenant_schema, p->tenant_table, tq, sizeof(tq));
    const char *params[] = {tq, p->tenant_id_col};
    PGresult *r = PQexecParams(c,
                               "SELECT CASE WHEN a.atttypid IN ('pg_catalog.int2'::pg_catalog.regtype, "
                               "'pg_catalog.int4'::pg_catalog.regtype, 'pg_catalog.int8'::pg_catalog.regtype) "
                               "THEN 1 WHEN a.atttypid = 'pg_catalog.uuid'::pg_catalog.regtype THEN 2 "
                               "WHEN a.atttypid IN ('pg_catalog.text'::pg_catalog.regtype, "
                               "'pg_catalog.varchar'::pg_catalog.regtype) THEN 3 ELSE 0 END "
                               "FROM pg_catalog.pg_attribute a WHERE a.attrelid = pg_catalog.to_regclass($1) "
                               "AND a.attname = $2 AND NOT a.attisdropped",
                               2, NULL, params, NULL, NULL, 0);
    int kind = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? atoi(PQgetvalue(r, 0, 0))
                                                                         : TENANT_NO_LOOKUP;
    PQclear(r);
    return kind;
}

static bool ensure_conn(tg_vaudit *va, vaudit_batch *b)
{
    const char *dsn = b->cfg->sidecar_dsn;
    if (va->conn && (PQstatus(va->conn) != CONNECTION_OK || !va->conn_dsn || strcmp(va->conn_dsn, dsn) != 0)) {
        PQfinish(va->conn);
        va->conn = NULL;
    }
    if (va->conn)
        return true;
    va->conn = sidepq_connect(dsn, "tenantguard violation audit", b->err, sizeof(b->err));
    if (!va->conn)
        return false;
    free(va->conn_dsn);
    va->conn_dsn = strdup(dsn);
    va->tenant_join = probe_tenant_ids(va->conn, &b->cfg->policy);
    return true;
}

static const tg_table *audit_table(const tg_policy *p)
{
    for (int i = 0; i < p->n_tables; i++)
        if (p->tables[i].kind == TG_TABLE_AUDIT)
            return &p->tables[i];
    return NULL;
}

static void batch_sql(const tg_vaudit *va, const tg_policy *p, const tg_table *at, char *sql, size_t len)
{
    char audit[300], tcol[140], wcol[140], tenants[300], tid[140], tws[140];
    sidepq_qname(at->schema, at->name, audit, sizeof(audit));
    sidepq_qname(NULL, at->tenant_col, tcol, sizeof(tcol));
    sidepq_qname(NULL, at->workspace_col, wcol, sizeof(wcol));
    sidepq_qname(p->tenant_schema, p->tenant_table, tenants, sizeof(tenants));
    sidepq_qname(NULL, p->tenant_id_col, tid, sizeof(tid));
    sidepq_qname(NULL, p->tenant_ws_col, tws, sizeof(tws));
    /* A tenant counts only when it exists and has a workspace: a row
     * naming a tenant must name its workspace too. */
    static const char *const id_of[] = {
        [TENANT_INTEGER] = "CASE WHEN e.x->>'tenant' OPERATOR(pg_catalog.~) '^-?[0-9]{1,18}$' "
                           "THEN (e.x->>'tenant')::pg_catalog.int8 END",
        [TENANT_UUID] = "CASE WHEN e.x->>'tenant' OPERATOR(pg_catalog.~) "
                        "'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' "
                        "THEN (e.x->>'tenant')::pg_catalog.uuid END",
        [TENANT_TEXT] = "(e.x->>'tenant')",
    };
    char join[1200] = "", cols[300] = "NULL, NULL";
    if (va->tenant_join > TENANT_NO_LOOKUP && va->tenant_join <= TENANT_TEXT) {
        snprintf(cols, sizeof(cols), "t.%s, t.%s", tws, tid);
        snprintf(join, sizeof(join), " LEFT JOIN %s t ON t.%s OPERATOR(pg_catalog.=) %s AND t.%s IS NOT NULL",
                 tenants, tid, id_of[va->tenant_join], tws);
    }
    snprintf(sql, len,
             "INSERT INTO %s (%s, %s, actor, action, status, resource_type, resource_id, context) "
             "SELECT %s, 'tenantguard', 'workspace_isolation.violation', e.x->>'status', 'table', e.x->>'table', "
             "e.x->'context' FROM pg_catalog.jsonb_array_elements($1::pg_catalog.jsonb) WITH ORDINALITY "
             "AS e(x, n)%s ORDER BY e.n",
             audit, wcol, tcol, cols, join);
}

static void batch_run(tg_job *j)
{
    vaudit_batch *b = (vaudit_batch *)j;
    tg_vaudit *va = b->va;
    const tg_policy *p = &b->cfg->policy;
    const tg_table *at = audit_table(p);
    if (!at) {
        b->outcome = VB_REFUSED;
        snprintf(b->err, sizeof(b->err), "the policy has no audit table");
        return;
    }
    if (!ensure_conn(va, b)) {
        b->outcome = VB_RETRY;
        return;
    }
    json_t *arr = json_array();
    for (const vaudit_entry *e = b->first; e && arr; e = e->next)
        json_array_append_new(arr, entry_json(e));
    char *text = arr ? json_dumps(arr, JSON_COMPACT) : NULL;
    json_decref(arr);
    char sql[3000];
    batch_sql(va, p, at, sql, sizeof(sql));
    const char *params[] = {text};
    PGresult *r = text ? PQexecParams(va->conn, sql, 1, NULL, params, NULL, NULL, 0) : NULL;
    free(text);
    if (PQresultStatus(r) == PGRES_COMMAND_OK) {
        b->outcome = VB_WRITTEN;
    } else {
        sidepq_error(va->conn, r, b->err, sizeof(b->err));
        b->outcome = PQstatus(va->conn) == CONNECTION_OK ? VB_REFUSED : VB_RETRY;
    }
    PQclear(r);
}

/* ---------------------------------------------------------------- exit */

void vaudit_stop(tg_vaudit *va)
{
    if (!va || !va->q)
        return;
    /* A last batch of what waits, unless writing is failing anyway. */
    if (!va->fail_streak && va->head && !va->in_flight) {
        evtimer_del(va->retry);
        kick(va);
    }
    workq_stop(va->q, true);
}

void vaudit_free(tg_vaudit *va)
{
    if (!va)
        return;
    vaudit_stop(va);
    /* batch_done ran from the mailbox (drained by the caller) or runs now. */
    workq_free(va->q);
    free_entries(va->head);
    if (va->conn)
        PQfinish(va->conn);
    free(va->conn_dsn);
    event_free(va->retry);
    free(va);
}
