/*
 * daemon.c -- `tenantguard -c FILE`: start-up, the event loop, signals,
 * reload, the janitor and shutdown.
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "policy/sqlstate.h"
#include "proxy/admin.h"
#include "proxy/commands.h"
#include "proxy/metrics.h"
#include "proxy/notify.h"
#include "proxy/probe.h"
#include "proxy/runtime.h"
#include "proxy/session.h"
#include "proxy/sidecar.h"
#include "proxy/track.h"
#include "proxy/vaudit.h"
#include "proxy/worker.h"

/* ---------------------------------------------------------------- policy */

/* Carry console mode overrides over to a new table list, by name. */
static int remap_overlay(tg_runtime *rt, const tg_config *old)
{
    int n = rt->cfg->policy.n_tables;
    tg_mode *ov = calloc((size_t)(n ? n : 1), sizeof(*ov));
    bool *set = calloc((size_t)(n ? n : 1), sizeof(*set));
    tg_mode *eff = calloc((size_t)(n ? n : 1), sizeof(*eff));
    if (!ov || !set || !eff) {
        free(ov);
        free(set);
        free(eff);
        return -1;
    }
    for (int i = 0; old && rt->overlay_set && i < old->policy.n_tables; i++) {
        if (!rt->overlay_set[i])
            continue;
        const tg_table *t = tg_policy_find(&rt->cfg->policy, old->policy.tables[i].schema,
                                           old->policy.tables[i].name);
        if (t) {
            int j = (int)(t - rt->cfg->policy.tables);
            ov[j] = rt->overlay[i];
            set[j] = true;
        }
    }
    free(rt->overlay);
    free(rt->overlay_set);
    free(rt->eff_modes);
    rt->overlay = ov;
    rt->overlay_set = set;
    rt->eff_modes = eff;
    return 0;
}

tg_mode rt_table_mode(const tg_runtime *rt, int i)
{
    if (i < 0 || i >= rt->cfg->policy.n_tables)
        return TG_MODE_OFF;
    return rt->overlay_set && rt->overlay_set[i] ? rt->overlay[i] : rt->cfg->policy.tables[i].mode;
}

bool rt_mode_overridden(const tg_runtime *rt, int i)
{
    return rt->overlay_set && i >= 0 && i < rt->cfg->policy.n_tables && rt->overlay_set[i];
}

int rt_policy_rebuild(tg_runtime *rt)
{
    if (!rt->eff_modes && remap_overlay(rt, NULL) != 0)
        return -1;
    for (int i = 0; i < rt->cfg->policy.n_tables; i++)
        rt->eff_modes[i] = rt_table_mode(rt, i);
    rw_policy *p = rw_policy_new(&rt->cfg->policy, rt->eff_modes, rt->rw_generation + 1);
    if (!p)
        return -1;
    if (rt->rw)
        rw_policy_free(rt->rw);
    rt->rw = p;
    rt->rw_generation++;
    if (rt->cache)
        rw_cache_clear(rt->cache);
    if (!rt->stats || rt->stats->n_tables != rt->cfg->policy.n_tables) {
        if (!rt->stats)
            rt->stats = tg_stats_new(rt->cfg->policy.n_tables);
        else
            tg_stats_resize(rt->stats, rt->cfg->policy.n_tables);
    }
    return rt->stats ? 0 : -1;
}

bool rt_any_enforced(const tg_runtime *rt)
{
    for (int i = 0; i < rt->cfg->policy.n_tables; i++)
        if (rt_table_mode(rt, i) == TG_MODE_ENFORCE)
            return true;
    return false;
}

int rt_set_mode(tg_runtime *rt, const char *table, bool reset, tg_mode mode, char *err, size_t errlen)
{
    const tg_policy *p = &rt->cfg->policy;
    int only = -1;
    if (table) {
        const char *dot = strchr(table, '.');
        char schema[64];
        const char *name = table;
        if (dot) {
            snprintf(schema, sizeof(schema), "%.*s", (int)(dot - table), table);
            name = dot + 1;
        }
        for (int i = 0; i < p->n_tables; i++)
            if (strcmp(p->tables[i].name, name) == 0 && (!dot || strcmp(p->tables[i].schema, schema) == 0)) {
                if (only >= 0) {
                    snprintf(err, errlen, "tenantguard console: \"%s\" names more than one watched table; "
                             "qualify it with its schema", table);
                    return -1;
                }
                only = i;
            }
        if (only < 0) {
            snprintf(err, errlen, "tenantguard console: \"%s\" is not a watched table", table);
            return -1;
        }
    }
    for (int i = 0; i < p->n_tables; i++) {
        if (only >= 0 && i != only)
            continue;
        rt->overlay_set[i] = !reset;
        rt->overlay[i] = mode;
    }
    if (rt_policy_rebuild(rt) != 0) {
        snprintf(err, errlen, "tenantguard console: out of memory");
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- reaping */

static void maybe_exit(tg_runtime *rt)
{
    if (rt->phase != RT_RUNNING && rt->n_sessions - rt->n_refusing - rt->n_console == 0) {
        listeners_close(rt);
        event_base_loopexit(rt->base, NULL);
    }
}

/* Free a dead session; its byte counts stay in the runtime's totals. */
static void reap_one(tg_runtime *rt, tg_session *s)
{
    TAILQ_REMOVE(&rt->justfree, s, link);
    rt->counters.client_bytes_in += s->cl.bytes_in;
    rt->counters.client_bytes_out += s->cl.bytes_out;
    rt->counters.server_bytes_in += s->sv.bytes_in;
    rt->counters.server_bytes_out += s->sv.bytes_out;
    sess_free(s);
}

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tg_runtime *rt = arg;
    tg_session *s;
    while ((s = TAILQ_FIRST(&rt->justfree)) != NULL)
        reap_one(rt, s);
    maybe_exit(rt);
}

void rt_schedule_reap(tg_runtime *rt)
{
    if (!event_pending(rt->reaper, EV_TIMEOUT, NULL))
        event_active(rt->reaper, 0, 0);
}

/* ---------------------------------------------------------------- janitor */

static void close_all(tg_runtime *rt, const char *sqlstate, const char *msg)
{
    tg_session *s, *next;
    for (s = TAILQ_FIRST(&rt->sessions); s; s = next) {
        next = TAILQ_NEXT(s, link);
        if (s->state == SS_CLOSING)
            continue;
        sess_fatal(s, sqlstate, msg, NULL);
    }
}

/* Idle: outside a transaction and the server owes nothing -- except an
 * answer to a message the client has not finished sending. Counted from
 * the later of the client's last bytes and the server's last answer. */
static bool session_idle_for(const tg_session *s, time_t now, int limit)
{
    if (s->state != SS_ACTIVE || s->sv.txn_status != 'I')
        return false;
    size_t owed = track_pending(s->track);
    if (s->cl.stream_left && owed > 0 && track_answers(s->cl.stream_type))
        owed--;   /* the half-sent message cannot be answered yet */
    if (owed > 0)
        return false;
    time_t since = s->last_activity > s->idle_since ? s->last_activity : s->idle_since;
    return now - since >= limit;
}

static void check_idle(tg_runtime *rt, time_t now)
{
    tg_session *s, *next;
    for (s = TAILQ_FIRST(&rt->sessions); s; s = next) {
        next = TAILQ_NEXT(s, link);
        int limit = s->cfg->client_idle_timeout;
        if (limit > 0 && session_idle_for(s, now, limit))
            sess_fatal(s, TG_SQLSTATE_IDLE_SESSION_TIMEOUT,
                       "tenantguard: terminating connection due to client_idle_timeout", NULL);
    }
}

static void janitor_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tg_runtime *rt = arg;
    time_t now = time(NULL);
    check_idle(rt, now);
    admin_tick(rt);
    notify_tick(rt->notify);
    if (rt->phase == RT_DRAINING && now >= rt->drain_deadline) {
        log_info("shutdown_timeout reached: closing %d session(s)", rt->n_sessions);
        rt->phase = RT_STOPPING;
        close_all(rt, TG_SQLSTATE_ADMIN_SHUTDOWN, "terminating connection due to administrator command");
    }
    if (rt->phase == RT_STOPPING && now >= rt->drain_deadline + 10) {
        log_warning("%d session(s) did not close; exiting anyway", rt->n_sessions);
        event_base_loopexit(rt->base, NULL);
    }
    maybe_exit(rt);
}

/* ---------------------------------------------------------------- signals */

static void begin_stop(tg_runtime *rt)
{
    if (rt->phase == RT_RUNNING)
        notify_stopping(rt->notify, "closing every session");
    rt->phase = RT_STOPPING;
    rt->drain_deadline = time(NULL);
    listeners_close(rt);
    close_all(rt, TG_SQLSTATE_ADMIN_SHUTDOWN, "terminating connection due to administrator command");
    maybe_exit(rt);
}

static void sigterm_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    tg_runtime *rt = arg;
    if (rt->phase != RT_RUNNING) {
        log_info("SIGTERM again: closing every session now");
        begin_stop(rt);
        return;
    }
    rt->phase = RT_DRAINING;
    rt->drain_deadline = time(NULL) + rt->cfg->shutdown_timeout;
    notify_stopping(rt->notify, "draining sessions");
    /* The listeners stay open while draining: a CancelRequest for a running
     * session is still served; new logins get 57P03. */
    log_info("SIGTERM: not accepting; waiting up to %ds for %d session(s) to finish",
             rt->cfg->shutdown_timeout, rt->n_sessions);
    if (rt->cfg->shutdown_timeout == 0) {
        begin_stop(rt);
        return;
    }
    maybe_exit(rt);
}

static void sigint_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    tg_runtime *rt = arg;
    log_info("SIGINT: closing %d session(s) now", rt->n_sessions);
    begin_stop(rt);
}

/* SIGHUP / RELOAD: a new snapshot for new sessions (running ones keep
 * their connection settings; the enforcement policy applies to every
 * session's next statement). */
static int reload(tg_runtime *rt, char *errbuf, size_t errlen);

int rt_reload(tg_runtime *rt, char *errbuf, size_t errlen)
{
    notify_reloading(rt->notify);
    int r = reload(rt, errbuf, errlen);
    notify_reloaded(rt->notify);
    return r;
}

static int reload(tg_runtime *rt, char *errbuf, size_t errlen)
{
    tg_config_error err;
    tg_config *neu = tg_config_load(rt->cfg->path, &err);
    if (!neu) {
        snprintf(errbuf, errlen, "reload failed: %s:%d: %s", rt->cfg->path, err.line, err.message);
        log_error("%s (keeping the running config)", errbuf);
        return -1;
    }
    char emsg[256] = "";
    SSL_CTX *ctls = NULL, *stls = NULL;
    admin_users *users = NULL;
    if (neu->client_tls_mode != TG_CLIENT_TLS_DISABLE &&
        !(ctls = tls_client_ctx_new(neu, emsg, sizeof(emsg))))
        goto fail;
    if (neu->server_sslmode != TG_SERVER_SSL_DISABLE && !(stls = tls_server_ctx_new(neu, emsg, sizeof(emsg))))
        goto fail;
    if (neu->admin_auth_file[0] && !(users = admin_users_load(neu->admin_auth_file, emsg, sizeof(emsg))))
        goto fail;
    /* The new policy must compile before anything is swapped. */
    rw_policy *probe = rw_policy_new(&neu->policy, NULL, 0);
    if (!probe) {
        snprintf(emsg, sizeof(emsg), "cannot compile the policy of the new config");
        admin_users_free(users);
        users = NULL;
        goto fail;
    }
    rw_policy_free(probe);
    char changed[256];
    if (tg_config_nonreloadable_changes(rt->cfg, neu, changed, sizeof(changed)) > 0)
        log_warning("reload: %s changed; that takes a restart", changed);
    /* Sessions hold their own SSL objects; the old contexts are refcounted
     * by OpenSSL and go when the last connection using them closes. */
    if (rt->client_tls)
        SSL_CTX_free(rt->client_tls);
    if (rt->server_tls)
        SSL_CTX_free(rt->server_tls);
    rt->client_tls = ctls;
    rt->server_tls = stls;
    admin_users_free(rt->admin_users);   /* running console sessions keep their login */
    rt->admin_users = users;
    tg_config *old = rt->cfg;
    rt->cfg = neu;
    rt->generation++;
    if (remap_overlay(rt, old) != 0 || rt_policy_rebuild(rt) != 0)
        log_error("reload: out of memory building the policy");
    tg_config_unref(old);
    tg_log_configure(neu->log_level, neu->log_format);
    log_info("config reloaded (generation %llu)", (unsigned long long)rt->generation);
    return 0;
fail:
    snprintf(errbuf, errlen, "reload failed: %s", emsg);
    log_error("%s (keeping the running config)", errbuf);
    if (ctls)
        SSL_CTX_free(ctls);
    if (stls)
        SSL_CTX_free(stls);
    tg_config_unref(neu);
    return -1;
}

static void sighup_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    char err[600];
    rt_reload(arg, err, sizeof(err));
}

void rt_stop(tg_runtime *rt, bool wait)
{
    if (wait)
        sigterm_cb(SIGTERM, 0, rt);
    else
        sigint_cb(SIGINT, 0, rt);
}

void rt_resume(tg_runtime *rt)
{
    rt->paused = false;
    tg_session *s, *next;
    for (s = TAILQ_FIRST(&rt->sessions); s; s = next) {
        next = TAILQ_NEXT(s, link);
        if (s->state == SS_ACTIVE && s->cl.throttled)
            relay_resume_reading(s);
    }
}

/* ---------------------------------------------------------------- setup */

static int setup(tg_runtime *rt, tg_config *cfg)
{
    char err[512];
    TAILQ_INIT(&rt->sessions);
    TAILQ_INIT(&rt->justfree);
    rt->cfg = cfg;
    rt->generation = 1;
    rt->base = event_base_new();
    if (!rt->base) {
        log_error("cannot create the event loop");
        return -1;
    }
    rt->dns = evdns_base_new(rt->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (!rt->dns)   /* no resolv.conf: numeric hosts still work */
        rt->dns = evdns_base_new(rt->base, 0);
    rt->cancels = cancel_map_new();
    rt->mailbox = mailbox_new(rt->base);
    if (rt->mailbox) {
        rt->vaudit = vaudit_new(rt, rt->mailbox);
        admin_backfill_init(rt);
    }
    if (!rt->dns || !rt->cancels || !rt->mailbox || !rt->vaudit || !rt->backfill) {
        log_error("out of memory");
        return -1;
    }
    if (cfg->client_tls_mode != TG_CLIENT_TLS_DISABLE &&
        !(rt->client_tls = tls_client_ctx_new(cfg, err, sizeof(err)))) {
        log_error("%s", err);
        return -1;
    }
    if (cfg->server_sslmode != TG_SERVER_SSL_DISABLE &&
        !(rt->server_tls = tls_server_ctx_new(cfg, err, sizeof(err)))) {
        log_error("%s", err);
        return -1;
    }
    rt->reaper = event_new(rt->base, -1, 0, reap_cb, rt);
    rt->janitor = event_new(rt->base, -1, EV_PERSIST, janitor_cb, rt);
    rt->ev_term = evsignal_new(rt->base, SIGTERM, sigterm_cb, rt);
    rt->ev_int = evsignal_new(rt->base, SIGINT, sigint_cb, rt);
    rt->ev_hup = evsignal_new(rt->base, SIGHUP, sighup_cb, rt);
    if (!rt->reaper || !rt->janitor || !rt->ev_term || !rt->ev_int || !rt->ev_hup) {
        log_error("out of memory");
        return -1;
    }
    struct timeval second = {1, 0};
    event_add(rt->janitor, &second);
    event_add(rt->ev_term, NULL);
    event_add(rt->ev_int, NULL);
    event_add(rt->ev_hup, NULL);
    if (rt_any_enforced(rt)) {
        if (cfg->sidecar_dsn[0]) {
            int hc = sidecar_check_helpers(cfg, err, sizeof(err));
            if (hc > 0) {
                log_error("%s", err);
                return -1;
            }
            if (hc < 0)
                log_warning("%s; each session checks the helpers at login instead", err);
        } else {
            log_info("enforce mode: no sidecar_dsn, so each session checks tenantguard's SQL helpers "
                     "at login");
        }
    }
    const char *selftest = rw_selftest();
    if (selftest) {
        log_error("the SQL parser failed its self-test: %s", selftest);
        return -1;
    }
    if (cfg->admin_auth_file[0] && !(rt->admin_users = admin_users_load(cfg->admin_auth_file, err, sizeof(err)))) {
        log_error("%s", err);
        return -1;
    }
    rt->cache = rw_cache_new((size_t)cfg->cache_max_bytes, cfg->cache_max_entries);
    if (!rt->cache || rt_policy_rebuild(rt) != 0) {
        log_error("out of memory");
        return -1;
    }
    if (listeners_open(rt, err, sizeof(err)) != 0 || metrics_start(rt, &rt->metrics, err, sizeof(err)) != 0) {
        log_error("%s", err);
        return -1;
    }
    return 0;
}

/* Worker threads at exit: a console backfill stops between two batches
 * (resumable), queued violations get a last write, then every thread is
 * joined and every job's done() has run. */
static void stop_workers(tg_runtime *rt)
{
    admin_backfill_stop(rt);
    vaudit_stop(rt->vaudit);
    workq_stop(rt->jobs, false);
    mailbox_drain(rt->mailbox);
    vaudit_free(rt->vaudit);
    admin_backfill_free(rt);
    workq_free(rt->jobs);
    mailbox_free(rt->mailbox);
    rt->vaudit = NULL;
    rt->jobs = NULL;
    rt->mailbox = NULL;
}

static void teardown(tg_runtime *rt)
{
    listeners_close(rt);
    metrics_free(rt->metrics);
    rt->metrics = NULL;
    tg_session *s;
    while ((s = TAILQ_FIRST(&rt->sessions)) != NULL)
        sess_close(s, "exit");
    while ((s = TAILQ_FIRST(&rt->justfree)) != NULL)
        reap_one(rt, s);
    stop_workers(rt);
    notify_free(rt->notify);
    rt->notify = NULL;
    struct event *evs[] = {rt->reaper, rt->janitor, rt->ev_term, rt->ev_int, rt->ev_hup};
    for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
        if (evs[i])
            event_free(evs[i]);
    cancel_map_free(rt->cancels);
    if (rt->rw)
        rw_policy_free(rt->rw);
    if (rt->cache)
        rw_cache_free(rt->cache);
    probe_cache_clear(rt);
    tg_stats_free(rt->stats);
    admin_users_free(rt->admin_users);
    free(rt->overlay);
    free(rt->overlay_set);
    free(rt->eff_modes);
    if (rt->dns)
        evdns_base_free(rt->dns, 0);
    if (rt->client_tls)
        SSL_CTX_free(rt->client_tls);
    if (rt->server_tls)
        SSL_CTX_free(rt->server_tls);
    if (rt->base)
        event_base_free(rt->base);
    tg_config_unref(rt->cfg);
}

int tg_daemon_main(const char *config_path)
{
    tg_config_error cerr;
    tg_config *cfg = tg_config_load(config_path, &cerr);
    if (!cfg) {
        fprintf(stderr, "%s:%d: %s\n", config_path, cerr.line, cerr.message);
        return 1;
    }
    tg_log_configure(cfg->log_level, cfg->log_format);
    signal(SIGPIPE, SIG_IGN);

    tg_runtime rt;
    memset(&rt, 0, sizeof(rt));
    int rc = 1;
    if (setup(&rt, cfg) == 0) {
        log_info("tenantguard %s started (pid %d), server %s:%d, mode %s", PACKAGE_VERSION, (int)getpid(),
                 cfg->server_host, cfg->server_port, tg_mode_name(cfg->policy.mode));
        rt.notify = notify_start(&rt);
        event_base_dispatch(rt.base);
        log_info("tenantguard stopped");
        rc = rt.exit_code;
    }
    teardown(&rt);
    return rc;
}
