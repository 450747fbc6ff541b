/*
 * session.h -- one client connection paired with one server connection.
 *
 * A session owns a client half and a server half (separate types) and has
 * exactly one state; only sess_set_state() changes it, and it asserts that
 * the move is legal (style habit 1). A session is never freed inside its own
 * callback: sess_close() moves it to SS_DEAD on the runtime's justfree list,
 * and the runtime frees it after the current loop iteration (habit 8).
 */
#ifndef TG_SESSION_H
#define TG_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <time.h>

#include "policy/config.h"
#include "policy/log.h"
#include "proxy/fastio.h"
#include "proxy/probe.h"
#include "proxy/sessenv.h"

struct bufferevent;
struct event;
struct evbuffer;
struct tg_runtime;
struct sess_track;

typedef enum sess_state {
    SS_CL_STARTUP = 0,  /* on rt->sessions: reading the client's first packet */
    SS_CL_TLS,          /* 'S' answered; TLS handshake with the client */
    SS_SV_CONNECT,      /* connecting to the server (TCP or unix socket) */
    SS_SV_TLS_REQUEST,  /* SSLRequest sent to the server; awaiting 'S' or 'N' */
    SS_SV_TLS,          /* TLS handshake with the server */
    SS_AUTH,            /* startup relayed; authentication relayed until ReadyForQuery */
    SS_PROBE,           /* tenantguard's login probe runs; the client's ReadyForQuery waits */
    SS_ACTIVE,          /* relaying */
    SS_ADMIN_AUTH,      /* console: SCRAM exchange with the client */
    SS_ADMIN,           /* console: running commands */
    SS_CLOSING,         /* last words queued for the client (or, the client gone, for
                         * the server); closed once flushed */
    SS_DEAD,            /* on rt->justfree: freed after this loop iteration */
    SS__COUNT
} sess_state;

const char *sess_state_name(sess_state s);

/* The client half. */
typedef struct sess_client {
    struct bufferevent *bev;
    int fd;                      /* closed by us unless bev_owns_fd */
    bool bev_owns_fd;            /* the TLS bufferevent closes it */
    bool tls;
    bool ssl_requested;          /* the client sent SSLRequest */
    char peer[64];               /* "addr:port" or "unix" */
    char *user, *database, *application_name;
    struct evbuffer *startup;    /* the StartupMessage, relayed as received */
    uint32_t protocol;           /* requested protocol version */
    uint64_t bytes_in, bytes_out;
    uint32_t stream_left;        /* bytes of a message body still to pass through */
    char stream_type;            /* the type of that message */
    bool stream_drop;            /* ... or to drop (a Bind we replaced) */
    bool throttled;              /* reading paused: server output is full */
} sess_client;

/* The server half. */
typedef struct sess_server {
    struct bufferevent *bev;
    bool bev_owns_fd;            /* false: we close bufferevent_getfd() after freeing */
    bool tls;
    int32_t backend_pid;         /* from BackendKeyData */
    int32_t backend_key;
    int32_t auth_request;        /* the last Authentication request code relayed */
    char txn_status;             /* 'I', 'T', 'E' from the last ReadyForQuery */
    uint64_t bytes_in, bytes_out;
    uint32_t stream_left;
    bool throttled;              /* reading paused: client output is full */
    bool said_fatal;             /* relayed a FATAL ErrorResponse: the server will close */
} sess_server;

typedef struct tg_session {
    uint64_t id;
    sess_state state;
    struct tg_runtime *rt;
    tg_config *cfg;              /* the snapshot this session started with (a reference) */
    TAILQ_ENTRY(tg_session) link;/* rt->sessions, or rt->justfree when SS_DEAD */

    bool is_console;             /* accepted on the admin listener */
    struct admin_state *admin;   /* console sessions, once logging in (admin.h) */
    uint64_t busy_since_us;      /* monotonic: first request after idle, for latency */
    bool refusing;               /* accepted over max_client_conn or while shutting down:
                                  * answers SSL 'N', forwards cancels, refuses the login */
    sess_client cl;
    sess_server sv;
    fastio cl_io, sv_io;         /* the active phase's I/O of each half */

    int32_t cancel_key;          /* the key the client got in BackendKeyData (ours) */
    bool in_cancel_map;

    struct event *timer;         /* login / connect deadline, then idle checks */
    time_t started_at;
    time_t last_activity;        /* last bytes from the client */
    time_t idle_since;           /* the server last answered everything */
    struct sess_track *track;    /* the in-flight request FIFO and session tracking */
    sessenv env;                 /* search_path, temp tables, prepared statements */
    char last_tag[64];           /* the last CommandComplete tag since ReadyForQuery */
    bool request_failed;         /* an ErrorResponse since ReadyForQuery */
    sess_probe probe;            /* what the login probe learned */

    tg_log_ctx log;              /* prefix for log lines: id, user@db, peer */
} tg_session;

/* Create a session for an accepted client socket (takes the fd). */
tg_session *sess_new(struct tg_runtime *rt, int fd, const char *peer);

/* Move to a new state; asserts the move is one the state machine allows. */
void sess_set_state(tg_session *s, sess_state to);

/* Close now: both halves, no more callbacks; freed after this iteration. */
void sess_close(tg_session *s, const char *why);

/* Send a FATAL ErrorResponse to the client, then close once it is written. */
void sess_fatal(tg_session *s, const char *sqlstate, const char *message, const char *hint);

/* The client said goodbye or vanished: write what is queued for the server
 * (its last query, the Terminate), then close. */
void sess_close_after_server_flush(tg_session *s, const char *why);

/* Close the server half now and the client once its output is written. */
void sess_close_after_flush(tg_session *s, const char *why);

/* Close and free the server half now (its fd too). */
void sess_free_server(tg_session *s);

/* Free a dead session (called by the runtime, outside any of its callbacks). */
void sess_free(tg_session *s);

/* ---- phases (each in its own file) ---- */

/* startup.c: the client's first packets, TLS, the startup message */
void startup_begin(tg_session *s);
/* server.c: connect to the server (TCP/unix), TLS, send the startup packet */
void server_connect_begin(tg_session *s);
/* auth.c: relay authentication until ReadyForQuery */
void auth_begin(tg_session *s);
/* relay.c: the active phase */
void relay_begin(tg_session *s);
/* relay.c: a side's output drained below its low-water mark */
void relay_resume_reading(tg_session *s);

#endif
