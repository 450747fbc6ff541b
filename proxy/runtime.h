/*
 * runtime.h -- the daemon's one runtime struct: the event loop, listeners,
 * the current config snapshot, TLS contexts, the session lists and counters.
 *
 * Together with the config pointer inside it, this is the only process-wide
 * state (style habit 11). Everything here is touched from the event-loop
 * thread only; worker threads (worker.h) get copies and config references
 * in their jobs and answer through the mailbox.
 */
#ifndef TG_RUNTIME_H
#define TG_RUNTIME_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <time.h>

#include <openssl/ssl.h>

#include "policy/config.h"
#include "policy/stats.h"
#include "proxy/session.h"
#include "rewrite/rewrite.h"

struct event_base;
struct evdns_base;
struct evconnlistener;
struct event;
struct cancel_map;
struct tg_mailbox;
struct tg_workq;
struct adm_backfill;
struct tg_vaudit;
struct tg_metrics;
struct tg_notify;
struct probe_cache;

typedef enum {
    RT_RUNNING = 0,
    RT_DRAINING,        /* SIGTERM: not accepting; sessions may finish */
    RT_STOPPING,        /* closing everything; the loop exits when empty */
} rt_phase;

#define RT_MAX_LISTENERS 8

typedef struct rt_counters {
    uint64_t clients_accepted;
    uint64_t clients_refused_max_conn;
    uint64_t refused_fds;           /* refused at EMFILE/ENFILE with the spare descriptor */
    uint64_t login_failures;
    uint64_t server_connect_failures;
    uint64_t cancels_forwarded;
    uint64_t cancels_unknown;
    uint64_t protocol_errors;
    /* bytes of the sessions freed so far (live ones add theirs) */
    uint64_t client_bytes_in, client_bytes_out, server_bytes_in, server_bytes_out;
} rt_counters;

typedef struct tg_runtime {
    struct event_base *base;
    struct evdns_base *dns;
    tg_config *cfg;                 /* current snapshot; sessions hold their own refs */
    uint64_t generation;            /* of cfg */
    SSL_CTX *client_tls;            /* NULL when client_tls_mode = disable */
    SSL_CTX *server_tls;            /* NULL when server_sslmode = disable */

    struct evconnlistener *listeners[RT_MAX_LISTENERS];
    int n_listeners;
    bool listeners_paused;          /* accept() hit EMFILE/ENFILE */
    bool has_spare_fd;              /* spare_fd is open */
    int spare_fd;                   /* /dev/null, given up to refuse a client at EMFILE */
    char unix_path[108];            /* our socket file, removed at exit */
    struct event *listen_retry;

    struct event *ev_term, *ev_int, *ev_hup, *ev_pipe;
    struct event *janitor;          /* once a second: timeouts, shutdown progress */
    struct event *reaper;           /* frees rt->justfree after the current iteration */

    TAILQ_HEAD(, tg_session) sessions;   /* every live session */
    TAILQ_HEAD(, tg_session) justfree;   /* SS_DEAD, freed by the reaper */
    int n_sessions;                 /* including the refusing ones */
    int n_refusing;                 /* accepted only to answer and refuse */
    int n_console;                  /* admin console sessions */
    uint64_t next_session_id;

    rt_phase phase;
    time_t drain_deadline;
    int exit_code;

    struct cancel_map *cancels;     /* our cancel key -> session */
    rt_counters counters;

    /* the admin console */
    struct admin_users *admin_users;/* from admin_auth_file; NULL = no console logins */
    bool paused;                    /* PAUSE: sessions' next statements wait */
    bool shutdown_wait;             /* SHUTDOWN WAIT (vs. at once) */

    /* enforcement */
    tg_mode *eff_modes;             /* per cfg->policy table: the mode in force */
    tg_mode *overlay;               /* SET mode from the console, per table ... */
    bool *overlay_set;              /* ... where set */
    rw_policy *rw;                  /* compiled from cfg->policy (+ mode overlay) */
    uint64_t rw_generation;
    rw_cache *cache;                /* decisions by statement text */
    struct probe_cache *probe_cache;/* table layouts per database (probe.c); NULL until first used */
    tg_stats *stats;                /* counters per table/rule, violation ring */
    uint64_t observed_seen[4096];   /* fingerprints whose would-be rewrite was logged */
    int observed_count;

    /* worker threads (worker.h) and what runs on them */
    struct tg_mailbox *mailbox;     /* results of worker threads, run on this loop */
    struct tg_workq *jobs;          /* short sidecar jobs (SHOW BACKFILL, DRY RUN); made when first needed */
    struct adm_backfill *backfill;  /* the console's backfill run (admin_backfill.c) */
    struct tg_vaudit *vaudit;       /* violation_audit (vaudit.h) */
    struct tg_metrics *metrics;     /* GET /metrics (metrics.h); NULL when off */
    struct tg_notify *notify;       /* systemd (notify.h); NULL when not under it */
} tg_runtime;

/* Rebuild the compiled policy from rt->cfg (start-up, reload, mode change). */
int rt_policy_rebuild(tg_runtime *rt);

/* Some watched table is in enforce mode. */
bool rt_any_enforced(const tg_runtime *rt);

/* The mode in force for table i, and whether the console set it. */
tg_mode rt_table_mode(const tg_runtime *rt, int i);
bool rt_mode_overridden(const tg_runtime *rt, int i);

/* The console: SET mode (table NULL = every table; reset = back to the
 * config), RELOAD, RESUME, SHUTDOWN. Return 0, or -1 with err. */
int rt_set_mode(tg_runtime *rt, const char *table, bool reset, tg_mode mode, char *err, size_t errlen);
int rt_reload(tg_runtime *rt, char *err, size_t errlen);
void rt_resume(tg_runtime *rt);
void rt_stop(tg_runtime *rt, bool wait);

/* Schedule the reaper (a session was moved to justfree). */
void rt_schedule_reap(tg_runtime *rt);

/* TLS contexts for a config; NULL + message when the files are bad. */
SSL_CTX *tls_client_ctx_new(const tg_config *cfg, char *err, size_t errlen);
SSL_CTX *tls_server_ctx_new(const tg_config *cfg, char *err, size_t errlen);

/* Listeners (listener.c). */
int listeners_open(tg_runtime *rt, char *err, size_t errlen);
void listeners_close(tg_runtime *rt);

/* Cancel keys (cancel.c). */
struct cancel_map *cancel_map_new(void);
void cancel_map_free(struct cancel_map *m);
int cancel_register(tg_runtime *rt, tg_session *s);     /* assigns s->cancel_key */
void cancel_unregister(tg_runtime *rt, tg_session *s);
/* A CancelRequest for (pid, key) arrived: forward it if it is one of ours. */
void cancel_forward(tg_runtime *rt, int32_t pid, int32_t key, const char *peer);

#endif
