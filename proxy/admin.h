/*
 * admin.h -- the admin console: a second listener that speaks the
 * PostgreSQL protocol through the same framing and TLS code as the proxy,
 * so that `psql -h 127.0.0.1 -p 6433 -U admin tenantguard` works.
 *
 *   admin.c       the console session: SCRAM login, the simple-query loop,
 *                 a clear refusal of the extended protocol
 *   admin_auth.c  admin_auth_file (PgBouncer's userlist.txt format), SCRAM-SHA-256
 *                 through libgsasl, `tenantguard passwd`
 *   admin_cmd.c   the command table, the tokenizer, SET/RELOAD/PAUSE/KILL/SHUTDOWN
 *   admin_show.c  every SHOW, each described as a table of columns
 *   admin_backfill.c  BACKFILL DRY RUN|START|PAUSE|RESUME|CANCEL on the
 *                 backfill thread (admin_bf.h), admin_bfshow.c SHOW BACKFILL
 */
#ifndef TG_ADMIN_H
#define TG_ADMIN_H

#include <stdbool.h>
#include <stdint.h>

#include "proxy/session.h"

struct evbuffer;
struct tg_runtime;
struct scram_state;

/* PostgreSQL type OIDs of the console's columns. */
#define ADM_BOOL 16
#define ADM_INT8 20
#define ADM_TEXT 25
#define ADM_FLOAT8 701
#define ADM_TIMESTAMPTZ 1184

/* What an admin session carries beyond tg_session. */
typedef struct admin_state {
    struct scram_state *sasl;
    int sasl_round;             /* 0: expecting SASLInitialResponse */
    char *user;                 /* authenticated console user */
    bool skipping;              /* extended protocol refused: ignore until Sync */
    bool waiting;               /* a command (PAUSE) answers later */
    char wait_tag[32];
} admin_state;

/* ---- admin.c ---- */
void admin_begin(tg_session *s);            /* after the StartupMessage */
void admin_free(tg_session *s);
/* Finish a command that answered later (PAUSE, BACKFILL ...): CommandComplete
 * `tag` (none when NULL: the answer written before ends in an ErrorResponse
 * or its own CommandComplete) + ReadyForQuery, and read on. */
void admin_complete_later(tg_session *s, const char *tag);

/* ---- admin_auth.c ---- */
typedef struct admin_users admin_users;
admin_users *admin_users_load(const char *path, char *err, size_t errlen);
void admin_users_free(admin_users *u);
/* SCRAM server: the first server message for a client-first message, etc.
 * Returns 0 and *out (malloc'd) to send; 1 when done (then *out is the
 * server-final message); -1 on failure (authentication failed). */
int admin_sasl_start(struct tg_runtime *rt, tg_session *s, const char *user);
int admin_sasl_step(tg_session *s, const char *in, size_t inlen, char **out, size_t *outlen);
void admin_sasl_free(struct scram_state *st);
int tg_cmd_passwd(int argc, char **argv);

/* ---- admin_out (in admin_show.c) ---- */
typedef struct adm_col {
    const char *name;
    uint32_t type;
} adm_col;
void adm_row_desc(struct evbuffer *out, const adm_col *cols, int n);
void adm_row(struct evbuffer *out, int n, const char *const *values);   /* NULL = SQL NULL */
void adm_complete(struct evbuffer *out, const char *tag);
void adm_error(struct evbuffer *out, const char *sqlstate, const char *msg, const char *hint);
void adm_notice(struct evbuffer *out, const char *msg);

/* Rows other modules add to the command table (the backfill commands). */
#ifndef TG_ADMIN_EXTRA_COMMANDS
#define TG_ADMIN_EXTRA_COMMANDS
#endif

/* ---- admin_cmd.c ---- */
/* A command's words after its keywords: identifiers (case-folded unless
 * quoted), numbers, '=' and ','. */
#define ADM_MAX_TOKENS 16
typedef struct adm_args {
    int n;
    char *tok[ADM_MAX_TOKENS];
    bool quoted[ADM_MAX_TOKENS];
} adm_args;

/* A handler writes its whole answer (rows, CommandComplete or an error)
 * and returns true, or returns false when it answers later. */
typedef bool (*adm_handler)(tg_session *s, const adm_args *a, struct evbuffer *out);

/* Run one console command; writes the whole answer except ReadyForQuery.
 * Returns false when the answer comes later (admin_complete_later). */
bool admin_execute(tg_session *s, const char *text);
/* One line per command for SHOW HELP, generated from the command table. */
int admin_help_count(void);
void admin_help_at(int i, const char **syntax, const char **what);

/* ---- admin_show.c: the SHOW handlers ---- */
bool adm_show_help(tg_session *s, const adm_args *a, struct evbuffer *out);
bool adm_show_version(tg_session *s, const adm_args *a, struct evbuffer *out);
bool adm_show_config(tg_session *s, const adm_args *a, struct evbuffer *out);
bool adm_show_policy(tg_session *s, const adm_args *a, struct evbuffer *out);
bool adm_show_stats(tg_session *s, const adm_args *a, struct evbuffer *out);
bool adm_show_clients(tg_session *s, const adm_args *a, struct evbuffer *out);
bool adm_show_servers(tg_session *s, const adm_args *a, struct evbuffer *out);
bool adm_show_violations(tg_session *s, const adm_args *a, struct evbuffer *out);
bool adm_show_mem(tg_session *s, const adm_args *a, struct evbuffer *out);

/* Janitor: finish PAUSE commands once nothing is in flight. */
void admin_tick(struct tg_runtime *rt);

/* ---- admin_backfill.c, admin_bfshow.c: the backfill from the console ---- */
typedef struct adm_backfill adm_backfill;
bool adm_backfill_dry_run(tg_session *s, const adm_args *a, struct evbuffer *out);
bool adm_backfill_start(tg_session *s, const adm_args *a, struct evbuffer *out);
bool adm_backfill_pause(tg_session *s, const adm_args *a, struct evbuffer *out);
bool adm_backfill_resume(tg_session *s, const adm_args *a, struct evbuffer *out);
bool adm_backfill_cancel(tg_session *s, const adm_args *a, struct evbuffer *out);
bool adm_show_backfill(tg_session *s, const adm_args *a, struct evbuffer *out);

int admin_backfill_init(struct tg_runtime *rt);
/* Exit: ask a running backfill to stop between batches (its runs stay
 * active, resumable) and join the backfill thread. */
void admin_backfill_stop(struct tg_runtime *rt);
void admin_backfill_free(struct tg_runtime *rt);

/* The console run of this process, for the metrics; false when none. */
typedef struct abf_progress {
    bool started, paused;
    int n_runs;
    int64_t done_rows, total_rows, rows_this_call;
    double elapsed;
} abf_progress;
bool admin_backfill_progress(const struct tg_runtime *rt, abf_progress *p);

#endif
