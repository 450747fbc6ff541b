/*
 * metrics.c -- the Prometheus endpoint (see metrics.h).
 *
 * Names follow Prometheus' conventions: a tenantguard_ prefix, _total on
 * counters, base units (seconds, bytes). The latency histogram is the
 * power-of-two microsecond buckets of policy/stats, cumulated, in seconds.
 * Byte counters are the live sessions' plus those of every session freed
 * (rt->counters), so they never go down while the process lives.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>

#include "proxy/admin.h"
#include "proxy/metrics.h"
#include "proxy/runtime.h"
#include "proxy/vaudit.h"

struct tg_metrics {
    struct evhttp *http;
};

static const char *const kind_names[TG_STATS_KINDS] = {"seen", "passed", "rewritten", "rejected", "refused"};

/* ---------------------------------------------------------------- text */

/* A label value: backslash, double quote and newline escaped. */
static void label(struct evbuffer *out, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            evbuffer_add_printf(out, "\\%c", *v);
        else if (*v == '\n')
            evbuffer_add(out, "\\n", 2);
        else
            evbuffer_add(out, v, 1);
    }
}

static void head(struct evbuffer *out, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metric_u64(struct evbuffer *out, const char *name, const char *type, const char *help, uint64_t v)
{
    head(out, name, type, help);
    evbuffer_add_printf(out, "%s %" PRIu64 "\n", name, v);
}

static void table_name(const tg_table *t, char *buf, size_t len)
{
    snprintf(buf, len, "%s.%s", t->schema, t->name);
}

/* ---------------------------------------------------------------- sections */

static void render_enforcement(tg_runtime *rt, struct evbuffer *out)
{
    const tg_stats *st = rt->stats;
    const tg_policy *p = &rt->cfg->policy;
    char name[140];
    head(out, "tenantguard_statements_total", "counter",
         "Statements per watched table, rule and outcome (seen, passed, rewritten, rejected, refused).");
    for (int t = 0; t < st->n_tables && t < p->n_tables; t++) {
        table_name(&p->tables[t], name, sizeof(name));
        for (int r = 0; r < TG_STATS_RULES; r++)
            for (int k = 0; k < TG_STATS_KINDS; k++) {
                uint64_t v = st->tables[t].by_rule[r][k];
                if (!v)
                    continue;
                evbuffer_add_printf(out, "tenantguard_statements_total{table=\"");
                label(out, name);
                evbuffer_add_printf(out, "\",rule=\"%s\",kind=\"%s\"} %" PRIu64 "\n", rw_rule_name((rw_rule)r),
                                    kind_names[k], v);
            }
    }
    head(out, "tenantguard_table_mode", "gauge", "1 for the mode in force on each watched table.");
    for (int t = 0; t < p->n_tables; t++) {
        table_name(&p->tables[t], name, sizeof(name));
        tg_mode m = rt_table_mode(rt, t);
        for (int i = TG_MODE_OFF; i <= TG_MODE_ENFORCE; i++) {
            evbuffer_add_printf(out, "tenantguard_table_mode{table=\"");
            label(out, name);
            evbuffer_add_printf(out, "\",mode=\"%s\"} %d\n", tg_mode_name((tg_mode)i), m == (tg_mode)i);
        }
    }
    metric_u64(out, "tenantguard_violations_total", "counter", "Rejections and refusals logged (also observed ones).",
               tg_stats_violation_count(st));
    metric_u64(out, "tenantguard_server_rejections_total", "counter",
               "Rejections raised inside PostgreSQL by tenantguard's helper functions.", st->server_rejections);
    metric_u64(out, "tenantguard_parse_failures_total", "counter",
               "Statements the SQL parser could not parse (sent as they were).", st->parse_failures);
}

static void render_connections(tg_runtime *rt, struct evbuffer *out)
{
    uint64_t b[4] = {rt->counters.client_bytes_in, rt->counters.client_bytes_out, rt->counters.server_bytes_in,
                     rt->counters.server_bytes_out};
    int clients = 0, consoles = 0, servers = 0;
    tg_session *s;
    TAILQ_FOREACH(s, &rt->sessions, link) {
        if (s->is_console)
            consoles++;
        else
            clients++;
        if (s->sv.bev)
            servers++;
        b[0] += s->cl.bytes_in;
        b[1] += s->cl.bytes_out;
        b[2] += s->sv.bytes_in;
        b[3] += s->sv.bytes_out;
    }
    head(out, "tenantguard_connections", "gauge", "Open connections by kind.");
    evbuffer_add_printf(out, "tenantguard_connections{kind=\"client\"} %d\ntenantguard_connections{kind=\"console\"} "
                        "%d\ntenantguard_connections{kind=\"server\"} %d\n", clients, consoles, servers);
    const rt_counters *c = &rt->counters;
    metric_u64(out, "tenantguard_clients_accepted_total", "counter", "Client connections accepted.",
               c->clients_accepted);
    metric_u64(out, "tenantguard_clients_refused_total", "counter", "Client connections refused at max_client_conn.",
               c->clients_refused_max_conn);
    metric_u64(out, "tenantguard_login_failures_total", "counter", "Failed logins (clients and console).",
               c->login_failures);
    metric_u64(out, "tenantguard_server_connect_failures_total", "counter", "Failed connections to PostgreSQL.",
               c->server_connect_failures);
    metric_u64(out, "tenantguard_cancels_forwarded_total", "counter", "Cancel requests forwarded.",
               c->cancels_forwarded);
    metric_u64(out, "tenantguard_clients_refused_fds_total", "counter",
               "Clients refused (53300) because the proxy was out of file descriptors.", c->refused_fds);
    metric_u64(out, "tenantguard_protocol_errors_total", "counter", "Connections closed for a protocol error.",
               c->protocol_errors);
    head(out, "tenantguard_bytes_total", "counter", "Bytes by side (client, server) and direction.");
    static const char *const labels[4][2] = {{"client", "received"}, {"client", "sent"}, {"server", "received"},
                                             {"server", "sent"}};
    for (int i = 0; i < 4; i++)
        evbuffer_add_printf(out, "tenantguard_bytes_total{side=\"%s\",direction=\"%s\"} %" PRIu64 "\n",
                            labels[i][0], labels[i][1], b[i]);
    metric_u64(out, "tenantguard_paused", "gauge", "1 while the console's PAUSE holds statements.", rt->paused);
}

static void render_latency(tg_runtime *rt, struct evbuffer *out)
{
    const tg_stats *st = rt->stats;
    head(out, "tenantguard_statement_latency_seconds", "histogram",
         "From a client's first request after idle to the ReadyForQuery that leaves nothing in flight.");
    uint64_t cum = 0;
    for (int b = 0; b < TG_LATENCY_BUCKETS - 1; b++) {
        cum += st->latency_buckets[b];
        evbuffer_add_printf(out, "tenantguard_statement_latency_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                            (double)(1ULL << b) / 1e6, cum);
    }
    evbuffer_add_printf(out, "tenantguard_statement_latency_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n"
                        "tenantguard_statement_latency_seconds_sum %.6f\n"
                        "tenantguard_statement_latency_seconds_count %" PRIu64 "\n",
                        st->latency_count, (double)st->latency_sum_us / 1e6, st->latency_count);
}

static void render_cache(tg_runtime *rt, struct evbuffer *out)
{
    rw_cache_stats cs;
    rw_cache_get_stats(rt->cache, &cs);
    metric_u64(out, "tenantguard_cache_hits_total", "counter", "Decisions answered from the statement cache.",
               cs.hits);
    metric_u64(out, "tenantguard_cache_misses_total", "counter", "Statement texts parsed and decided.", cs.misses);
    metric_u64(out, "tenantguard_cache_evictions_total", "counter", "Cache entries evicted for room.", cs.evictions);
    metric_u64(out, "tenantguard_cache_prefiltered_total", "counter",
               "Statements that could not touch a watched table (never parsed).", cs.prefiltered);
    metric_u64(out, "tenantguard_cache_entries", "gauge", "Entries in the statement cache.", (uint64_t)cs.entries);
    metric_u64(out, "tenantguard_cache_bytes", "gauge", "Bytes held by the statement cache.", (uint64_t)cs.bytes);
}

static void render_backfill_audit(tg_runtime *rt, struct evbuffer *out)
{
    abf_progress p;
    bool running = admin_backfill_progress(rt, &p);
    metric_u64(out, "tenantguard_backfill_running", "gauge", "1 while a console backfill runs in this process.",
               running);
    metric_u64(out, "tenantguard_backfill_paused", "gauge", "1 while that backfill is paused.", p.paused);
    metric_u64(out, "tenantguard_backfill_runs", "gauge", "Its operation runs.", (uint64_t)p.n_runs);
    metric_u64(out, "tenantguard_backfill_rows_done", "gauge",
               "Rows its runs have bound (including earlier calls they resume).", (uint64_t)p.done_rows);
    metric_u64(out, "tenantguard_backfill_rows_total", "gauge", "Rows its runs plan to bind.", (uint64_t)p.total_rows);
    metric_u64(out, "tenantguard_backfill_rows_bound", "gauge", "Rows bound by this call.",
               (uint64_t)p.rows_this_call);
    metric_u64(out, "tenantguard_audit_written_total", "counter",
               "Violations written into the audit table (violation_audit).", rt->stats->audit_written);
    metric_u64(out, "tenantguard_audit_dropped_total", "counter",
               "Violations not written: the queue was full, or the server refused the batch.",
               rt->stats->audit_dropped);
    metric_u64(out, "tenantguard_audit_queued", "gauge", "Violations waiting to be written.",
               rt->vaudit ? (uint64_t)vaudit_pending(rt->vaudit) : 0);
}

void metrics_render(tg_runtime *rt, struct evbuffer *out)
{
    evbuffer_add_printf(out, "# HELP tenantguard_info The running version.\n# TYPE tenantguard_info gauge\n"
                        "tenantguard_info{version=\"%s\"} 1\n", PACKAGE_VERSION);
    render_enforcement(rt, out);
    render_connections(rt, out);
    render_latency(rt, out);
    render_cache(rt, out);
    render_backfill_audit(rt, out);
}

/* ---------------------------------------------------------------- http */

static void handle(struct evhttp_request *req, void *arg)
{
    tg_runtime *rt = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if ((cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) || !path || strcmp(path, "/metrics") != 0) {
        evhttp_send_error(req, HTTP_NOTFOUND, "Not Found: GET /metrics");
        return;
    }
    struct evbuffer *body = evbuffer_new();
    if (!body) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    metrics_render(rt, body);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4; charset=utf-8");
    evhttp_send_reply(req, HTTP_OK, "OK", body);
    evbuffer_free(body);
}

int metrics_start(tg_runtime *rt, tg_metrics **out, char *err, size_t errlen)
{
    *out = NULL;
    const tg_config *c = rt->cfg;
    if (!c->metrics_port)
        return 0;
    tg_metrics *m = calloc(1, sizeof(*m));
    if (!m || !(m->http = evhttp_new(rt->base))) {
        free(m);
        snprintf(err, errlen, "metrics: out of memory");
        return -1;
    }
    evhttp_set_timeout(m->http, 10);
    evhttp_set_max_headers_size(m->http, 16384);
    evhttp_set_max_body_size(m->http, 4096);
    evhttp_set_gencb(m->http, handle, rt);
    const char *addr = strcmp(c->metrics_addr, "localhost") == 0 ? "127.0.0.1" : c->metrics_addr;
    if (!evhttp_bind_socket_with_handle(m->http, addr, (ev_uint16_t)c->metrics_port)) {
        snprintf(err, errlen, "metrics: cannot listen on %s:%d", c->metrics_addr, c->metrics_port);
        metrics_free(m);
        return -1;
    }
    log_info("metrics on http://%s:%d/metrics", addr, c->metrics_port);
    *out = m;
    return 0;
}

void metrics_free(tg_metrics *m)
{
    if (!m)
        return;
    evhttp_free(m->http);
    free(m);
}
