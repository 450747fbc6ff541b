/*
 * bf_db.c -- connections, statements, errors and the advisory lock for the
 * rollout sidecar.
 *
 * Nothing here prints: errors travel in a bf_err whose message has been
 * through bf_sanitize(), so they can go into failure_summary and onto an
 * operator's terminal. libpq's DETAIL (which carries key values) is never
 * read.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "backfill/bf_internal.h"

/* ---------------------------------------------------------------- control */

void tg_bf_request_set(tg_bf_control *ctl, tg_bf_request r)
{
    __atomic_store_n(&ctl->request, (int)r, __ATOMIC_RELEASE);
}

tg_bf_request tg_bf_request_get(const tg_bf_control *ctl)
{
    return ctl ? (tg_bf_request)__atomic_load_n(&ctl->request, __ATOMIC_ACQUIRE) : TG_BF_REQ_RUN;
}

double bf_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

bool bf_sleep_ms(int ms, const tg_bf_control *ctl)
{
    /* 20 ms slices: a stop request is seen within a slice. */
    while (ms > 0) {
        tg_bf_request r = tg_bf_request_get(ctl);
        if (r == TG_BF_REQ_STOP || r == TG_BF_REQ_CANCEL)
            return false;
        int slice = ms < 20 ? ms : 20;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)slice * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
        ms -= slice;
    }
    return true;
}

/* ---------------------------------------------------------------- names */

void bf_quote_ident(const char *id, char *buf, size_t len)
{
    size_t n = 0;
    if (len < 3) {
        if (len)
            buf[0] = '\0';
        return;
    }
    buf[n++] = '"';
    for (const char *s = id; *s && n + 3 < len; s++) {
        if (*s == '"')
            buf[n++] = '"';
        buf[n++] = *s;
    }
    buf[n++] = '"';
    buf[n] = '\0';
}

void bf_qualify(const char *schema, const char *name, char *buf, size_t len)
{
    char s[BF_IDENT_MAX], t[BF_IDENT_MAX];
    bf_quote_ident(schema, s, sizeof(s));
    bf_quote_ident(name, t, sizeof(t));
    snprintf(buf, len, "%s.%s", s, t);
}

void bf_table_key(const tg_table *t, char *buf, size_t len)
{
    if (strcmp(t->schema, "public") == 0)
        snprintf(buf, len, "%s", t->name);
    else
        snprintf(buf, len, "%s.%s", t->schema, t->name);
}

/* ---------------------------------------------------------------- errors */

static void set_err(bf_err *err, const char *sqlstate, const char *raw)
{
    if (!err)
        return;
    snprintf(err->sqlstate, sizeof(err->sqlstate), "%s", sqlstate ? sqlstate : "");
    bf_sanitize(raw ? raw : "unknown error", err->message, sizeof(err->message));
}

/* Words after which a double-quoted token is a name, not a value. */
static bool names_follow(const char *word, size_t n)
{
    static const char *const words[] = {"relation", "table", "column", "constraint", "index",
                                        "schema", "function", "role", "user", "database",
                                        "type", "sequence", "view", "trigger", "operator",
                                        "extension", "server", "at", "socket", "file", NULL};
    for (int i = 0; words[i]; i++)
        if (strlen(words[i]) == n && strncasecmp(word, words[i], n) == 0)
            return true;
    return false;
}

/*
 * Keep the first line of a server or libpq message. Single-quoted text is a
 * literal: replaced by '?'. Double-quoted text is kept only right after a
 * word that announces a name (relation "policies", user "app"); otherwise
 * it may be a value (`invalid input syntax for type bigint: "abc"`) and
 * becomes "?". A "password=" fragment loses its value.
 */
void bf_sanitize(const char *in, char *out, size_t len)
{
    size_t n = 0;
    const char *word = NULL;
    size_t word_len = 0;
    if (!len)
        return;
    while (*in == ' ' || *in == '\n' || *in == '\t')
        in++;
    if (strncmp(in, "ERROR:  ", 8) == 0 || strncmp(in, "FATAL:  ", 8) == 0)
        in += 8;
    for (const char *s = in; *s && *s != '\n' && n + 4 < len; s++) {
        char q = *s;
        if (q == '\'' || q == '"') {
            const char *end = strchr(s + 1, q);
            bool keep = q == '"' && word && names_follow(word, word_len);
            if (!end)
                end = s + strlen(s) - 1;
            if (keep) {
                size_t k = (size_t)(end - s) + 1;
                if (n + k + 1 >= len)
                    break;
                memcpy(out + n, s, k);
                n += k;
            } else {
                out[n++] = q;
                out[n++] = '?';
                out[n++] = q;
            }
            s = end;
            word = NULL;
            continue;
        }
        if (strncasecmp(s, "password=", 9) == 0 && n + 13 < len) {
            memcpy(out + n, "password=****", 13);
            n += 13;
            s += 8;
            while (s[1] && s[1] != ' ' && s[1] != '\n')
                s++;
            continue;
        }
        if (isalpha((unsigned char)q) && (s == in || !isalnum((unsigned char)s[-1]))) {
            word = s;
            word_len = 0;
            while (isalnum((unsigned char)word[word_len]) || word[word_len] == '_')
                word_len++;
        }
        out[n++] = q;
    }
    while (n > 0 && (out[n - 1] == ' ' || out[n - 1] == '.'))
        n--;
    out[n] = '\0';
}

bool bf_err_transient(const bf_err *e)
{
    return strcmp(e->sqlstate, "55P03") == 0 || strcmp(e->sqlstate, "40P01") == 0 ||
           strcmp(e->sqlstate, "40001") == 0;
}

bool bf_err_connection(const bf_err *e)
{
    return strncmp(e->sqlstate, "08", 2) == 0 || strcmp(e->sqlstate, "57P01") == 0 ||
           strcmp(e->sqlstate, "57P02") == 0 || strcmp(e->sqlstate, "57P03") == 0;
}

const char *bf_reason_code(const bf_err *e)
{
    static const struct { const char *prefix; const char *reason; } map[] = {
        {"55P03", "lock_timeout"}, {"40P01", "deadlock"}, {"40001", "serialization_failure"},
        {"57014", "statement_timeout"}, {"57P01", "server_shutdown"}, {"08", "connection_lost"},
        {"42501", "permission_denied"}, {"42P01", "missing_table"}, {"42703", "missing_column"},
        {"23", "constraint_violation"}, {"53", "insufficient_resources"}, {NULL, NULL},
    };
    for (int i = 0; map[i].prefix; i++)
        if (strncmp(e->sqlstate, map[i].prefix, strlen(map[i].prefix)) == 0)
            return map[i].reason;
    return "database_error";
}

/* ---------------------------------------------------------------- connect */

PGconn *bf_connect(const char *conninfo, const char *appname, int lock_timeout_ms, bf_err *err)
{
    /* Our defaults come first: keywords expanded from `dbname` (the
     * operator's conninfo) override them. */
    const char *keys[] = {"fallback_application_name", "connect_timeout", "keepalives",
                          "keepalives_idle", "keepalives_interval", "keepalives_count",
                          "client_encoding", "dbname", NULL};
    const char *vals[] = {appname, "15", "1", "30", "10", "3", "UTF8", conninfo, NULL};
    if (!conninfo || !*conninfo)
        keys[7] = NULL;
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c) {
        set_err(err, "08006", "out of memory");
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        set_err(err, "08006", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    /* Every statement of the sidecar waits at most this long for a lock,
     * then is retried: a DDL or a batch never queues in front of the
     * application for long. Session level is SET LOCAL in each of our
     * single-statement transactions. */
    char sql[96];
    snprintf(sql, sizeof(sql), "SET lock_timeout = %d", lock_timeout_ms);
    PGresult *r = bf_exec(c, sql, 0, NULL, err);
    if (!r) {
        PQfinish(c);
        return NULL;
    }
    PQclear(r);
    return c;
}

void bf_conn_describe(PGconn *c, char *buf, size_t len)
{
    const char *host = PQhost(c);
    snprintf(buf, len, "%s@%s:%s/%s", PQuser(c), host && *host ? host : "localhost", PQport(c),
             PQdb(c));
}

void bf_conninfo_mask(const char *conninfo, char *buf, size_t len)
{
    if (!conninfo || !*conninfo) {
        snprintf(buf, len, "(PG* environment)");
        return;
    }
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &errmsg);
    if (!opts) {
        PQfreemem(errmsg);
        snprintf(buf, len, "(unparseable connection string)");
        return;
    }
    size_t n = 0;
    buf[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword && n < len; o++) {
        if (!o->val || !*o->val)
            continue;
        bool secret = strcmp(o->keyword, "password") == 0 || strcmp(o->keyword, "sslpassword") == 0;
        n += (size_t)snprintf(buf + n, len - n, "%s%s=%s", n ? " " : "", o->keyword,
                              secret ? "****" : o->val);
    }
    PQconninfoFree(opts);
}

/* ---------------------------------------------------------------- exec */

PGresult *bf_exec(PGconn *c, const char *sql, int nparams, const char *const *params, bf_err *err)
{
    PGresult *r = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return r;
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!state || PQstatus(c) != CONNECTION_OK) {
        /* libpq's own error: the connection is gone or unusable. */
        set_err(err, state && PQstatus(c) == CONNECTION_OK ? state : "08006",
                primary ? primary : PQerrorMessage(c));
    } else {
        set_err(err, state, primary);
    }
    PQclear(r);
    return NULL;
}

bool bf_exec_script(PGconn *c, const char *sql, bf_err *err)
{
    /* Simple protocol: several statements, one implicit transaction. */
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK || st == PGRES_EMPTY_QUERY) {
        PQclear(r);
        return true;
    }
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    bool conn_ok = PQstatus(c) == CONNECTION_OK;
    set_err(err, state && conn_ok ? state : "08006", primary ? primary : PQerrorMessage(c));
    PQclear(r);
    return false;
}

PGresult *bf_exec_retry(PGconn *c, const bf_retry *rt, const char *sql, int nparams,
                        const char *const *params, bf_err *err)
{
    for (int attempt = 1;; attempt++) {
        PGresult *r = bf_exec(c, sql, nparams, params, err);
        if (r || !bf_err_transient(err) || attempt > rt->retries)
            return r;
        if (rt->fn) {
            tg_bf_event ev = {.type = TG_BF_EV_RETRY, .table = rt->table, .attempt = attempt,
                              .reason = bf_reason_code(err), .message = err->message};
            rt->fn(&ev, rt->arg);
        }
        /* 100 ms, doubling, at most 5 s, plus up to 1/4 jitter so two
         * waiters do not collide again. */
        int wait = 100 << (attempt < 6 ? attempt - 1 : 5);
        if (wait > 5000)
            wait = 5000;
        unsigned seed = (unsigned)(bf_now() * 1e6) ^ (unsigned)attempt;  /* no shared rand() */
        wait += (int)(((unsigned)rand_r(&seed) % 1000u) * (unsigned)wait / 4000u);
        if (!bf_sleep_ms(wait, rt->ctl))
            return NULL;     /* err still describes the last failure */
    }
}

int64_t bf_int64(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return -1;
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

int bf_parse_int8_array(const char *s, int64_t *out, int max)
{
    int n = 0;
    if (!s || *s != '{')
        return 0;
    s++;
    while (*s && *s != '}' && n < max) {
        char *end;
        long long v = strtoll(s, &end, 10);
        if (end == s)
            break;
        out[n++] = v;
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}

/* ---------------------------------------------------------------- the lock */

int64_t tg_bf_lock_key(void)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *s = TG_BF_LOCK_NAME; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return (int64_t)h;
}

bool bf_lock_holder(PGconn *c, bf_holder *h, bf_err *err)
{
    /* A bigint advisory key shows in pg_locks as classid = high 32 bits,
     * objid = low 32 bits, objsubid = 1. */
    uint64_t key = (uint64_t)tg_bf_lock_key();
    char hi[24], lo[24];
    snprintf(hi, sizeof(hi), "%" PRIu64, key >> 32);
    snprintf(lo, sizeof(lo), "%" PRIu64, key & UINT64_C(0xffffffff));
    const char *params[] = {hi, lo};
    PGresult *r = bf_exec(c,
        "SELECT l.pid, host(a.client_addr), a.client_port, a.application_name, "
        "       to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC', "
        "       " BF_SQL_UTC_US("a.backend_start") " "
        "FROM pg_catalog.pg_locks l "
        "LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
        "  AND l.classid = $1::oid AND l.objid = $2::oid "
        "  AND l.database = (SELECT oid FROM pg_catalog.pg_database "
        "                    WHERE datname = pg_catalog.current_database()) "
        "LIMIT 1", 2, params, err);
    memset(h, 0, sizeof(*h));
    if (!r)
        return false;
    if (PQntuples(r) == 1) {
        h->known = true;
        h->pid = atoi(PQgetvalue(r, 0, 0));
        if (!PQgetisnull(r, 0, 1))
            snprintf(h->client, sizeof(h->client), "%s:%s", PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2));
        else if (!PQgetisnull(r, 0, 2) && strcmp(PQgetvalue(r, 0, 2), "-1") == 0)
            snprintf(h->client, sizeof(h->client), "local socket");
        snprintf(h->application, sizeof(h->application), "%s", PQgetvalue(r, 0, 3));
        snprintf(h->since, sizeof(h->since), "%s", PQgetvalue(r, 0, 4));
        snprintf(h->backend_start, sizeof(h->backend_start), "%s", PQgetvalue(r, 0, 5));
    }
    PQclear(r);
    return true;
}

int bf_lock_try(PGconn *c, bf_holder *h, bf_err *err)
{
    char key[24];
    snprintf(key, sizeof(key), "%" PRId64, tg_bf_lock_key());
    const char *params[] = {key};
    PGresult *r = bf_exec(c, "SELECT pg_catalog.pg_try_advisory_lock($1::bigint)", 1, params, err);
    if (!r)
        return -1;
    bool got = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (got)
        return 1;
    if (!bf_lock_holder(c, h, err))
        memset(h, 0, sizeof(*h));
    return 0;
}

void bf_holder_describe(const bf_holder *h, char *buf, size_t len)
{
    if (!h->known) {
        snprintf(buf, len, "holder not visible to this role");
        return;
    }
    /* "backend": the pid is the server's, not the holding process's. */
    size_t n = (size_t)snprintf(buf, len, "backend pid %d", h->pid);
    if (h->client[0] && n < len)
        n += (size_t)snprintf(buf + n, len - n, ", client %s", h->client);
    if (h->application[0] && n < len)
        n += (size_t)snprintf(buf + n, len - n, ", application \"%s\"", h->application);
    if (h->since[0] && n < len)
        snprintf(buf + n, len - n, ", connected since %s", h->since);
}

void bf_lock_refusal(const bf_holder *h, char *buf, size_t len)
{
    char who[320];
    bf_holder_describe(h, who, sizeof(who));
    const char *what = strstr(h->application, "migrate") ? "a tenantguard migrate is running"
                                                         : "another backfill is running";
    snprintf(buf, len, "%s (%s); wait for it to finish (see tenantguard status) and run again",
             what, who);
}
