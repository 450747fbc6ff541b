/*
 * admin_cmd.c -- console commands: one table row per command (its leading
 * keywords, syntax, what it does, its handler); SHOW HELP is generated from
 * it. Unknown commands and bad arguments get 42601 with a hint. Operator
 * actions (mode changes, reload, kill, shutdown) are logged with the admin
 * user's name.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "policy/sqlstate.h"
#include "proxy/admin.h"
#include "proxy/runtime.h"
#include "proxy/track.h"

static bool cmd_set_mode(tg_session *s, const adm_args *a, struct evbuffer *out);
static bool cmd_reload(tg_session *s, const adm_args *a, struct evbuffer *out);
static bool cmd_pause(tg_session *s, const adm_args *a, struct evbuffer *out);
static bool cmd_resume(tg_session *s, const adm_args *a, struct evbuffer *out);
static bool cmd_kill(tg_session *s, const adm_args *a, struct evbuffer *out);
static bool cmd_shutdown(tg_session *s, const adm_args *a, struct evbuffer *out);

typedef struct adm_cmd {
    const char *words[3];      /* leading keywords, upper case */
    const char *syntax;
    const char *what;
    adm_handler run;
} adm_cmd;

static const adm_cmd commands[] = {
    {{"SHOW", "HELP"}, "SHOW HELP", "this list", adm_show_help},
    {{"SHOW", "VERSION"}, "SHOW VERSION", "tenantguard's version", adm_show_version},
    {{"SHOW", "CONFIG"}, "SHOW CONFIG", "every config key: value, default, whether SIGHUP reloads it",
     adm_show_config},
    {{"SHOW", "POLICY"}, "SHOW POLICY", "watched tables, their columns and mode (and who set it)",
     adm_show_policy},
    {{"SHOW", "STATS"}, "SHOW STATS",
     "per table and rule: seen, passed, rewritten, rejected, refused; statement latency; audit writes",
     adm_show_stats},
    {{"SHOW", "CLIENTS"}, "SHOW CLIENTS", "client connections: state, user@db, peer, TLS, since, activity",
     adm_show_clients},
    {{"SHOW", "SERVERS"}, "SHOW SERVERS", "server connections: state, user@db, backend pid, TLS, since, bytes",
     adm_show_servers},
    {{"SHOW", "VIOLATIONS"}, "SHOW VIOLATIONS [n]",
     "the last n (default 50) rejections and refusals: time, client, table, rule, fingerprint",
     adm_show_violations},
    {{"SHOW", "BACKFILL"}, "SHOW BACKFILL [n]",
     "backfill runs from operation_runs (every process): status, state, progress per table, rate, ETA",
     adm_show_backfill},
    {{"SHOW", "MEM"}, "SHOW MEM", "objects and bytes: sessions, request queues, decision cache, violation log",
     adm_show_mem},
    {{"SET", "MODE"}, "SET mode = off|observe|enforce|default [FOR TABLE name]",
     "switch enforcement for new statements at once, globally or for one table (default: back to the config)",
     cmd_set_mode},
    {{"RELOAD"}, "RELOAD", "reload the config file, as SIGHUP", cmd_reload},
    {{"PAUSE"}, "PAUSE", "hold every session's next statement; answers once nothing is running", cmd_pause},
    {{"RESUME"}, "RESUME", "release what PAUSE holds", cmd_resume},
    {{"KILL", "CLIENT"}, "KILL CLIENT id", "close a client session (57P01)", cmd_kill},
    {{"SHUTDOWN"}, "SHUTDOWN [WAIT]",
     "stop tenantguard: at once (57P01 to every session), or WAIT for sessions as SIGTERM does", cmd_shutdown},
    {{"BACKFILL", "DRY", "RUN"}, "BACKFILL DRY RUN [TABLE t]",
     "the backfill's plan per table: scanned, missing, unresolvable (with sample ids); writes nothing",
     adm_backfill_dry_run},
    {{"BACKFILL", "START"}, "BACKFILL START [TABLE t] [BATCH n] [MAX ROWS n] [THROTTLE ms]",
     "start the backfill in the background (same engine and lock as the CLI); answers with its runs",
     adm_backfill_start},
    {{"BACKFILL", "PAUSE"}, "BACKFILL PAUSE", "hold this process's backfill between two batches (recorded)",
     adm_backfill_pause},
    {{"BACKFILL", "RESUME"}, "BACKFILL RESUME", "let a paused backfill go on (recorded)", adm_backfill_resume},
    {{"BACKFILL", "CANCEL"}, "BACKFILL CANCEL",
     "stop this process's backfill between two batches and close its runs as cancelled", adm_backfill_cancel},
    TG_ADMIN_EXTRA_COMMANDS
};

#define N_COMMANDS ((int)(sizeof(commands) / sizeof(commands[0])))

int admin_help_count(void)
{
    return N_COMMANDS;
}

void admin_help_at(int i, const char **syntax, const char **what)
{
    *syntax = commands[i].syntax;
    *what = commands[i].what;
}

/* ---------------------------------------------------------------- tokens */

static void args_free(adm_args *a)
{
    for (int i = 0; i < a->n; i++)
        free(a->tok[i]);
    a->n = 0;
}

/* Split a command into words: bare words (folded to lower case), "quoted"
 * identifiers, 'strings', numbers, = and ,. A trailing ; is ignored.
 * Returns false (with *why) on a malformed command. */
static bool tokenize(const char *text, adm_args *a, const char **why)
{
    const char *p = text;
    memset(a, 0, sizeof(*a));
    for (;;) {
        while (isspace((unsigned char)*p))
            p++;
        if (!*p || (*p == ';' && !p[1 + strspn(p + 1, " \t\r\n")]))
            return true;
        if (a->n == ADM_MAX_TOKENS) {
            *why = "too many words";
            return false;
        }
        char buf[256];
        size_t n = 0;
        bool quoted = false;
        if (*p == '"' || *p == '\'') {
            char q = *p++;
            quoted = true;
            for (;;) {
                if (!*p) {
                    *why = "unterminated quote";
                    return false;
                }
                if (*p == q) {
                    if (p[1] != q)
                        break;
                    p++;
                }
                if (n + 1 >= sizeof(buf)) {
                    *why = "word too long";
                    return false;
                }
                buf[n++] = *p++;
            }
            p++;
        } else if (*p == '=' || *p == ',') {
            buf[n++] = *p++;
        } else if (isalnum((unsigned char)*p) || *p == '_' || *p == '.' || *p == '-') {
            while (isalnum((unsigned char)*p) || *p == '_' || *p == '.' || *p == '-' || *p == '$') {
                if (n + 1 >= sizeof(buf)) {
                    *why = "word too long";
                    return false;
                }
                buf[n++] = (char)tolower((unsigned char)*p++);
            }
        } else {
            *why = "unexpected character";
            return false;
        }
        buf[n] = '\0';
        a->quoted[a->n] = quoted;
        a->tok[a->n] = strdup(buf);
        if (!a->tok[a->n]) {
            *why = "out of memory";
            return false;
        }
        a->n++;
    }
}

static bool is_word(const adm_args *a, int i, const char *w)
{
    return i < a->n && !a->quoted[i] && strcasecmp(a->tok[i], w) == 0;
}

static int match(const adm_cmd *c, const adm_args *a)
{
    int i = 0;
    for (; i < 3 && c->words[i]; i++)
        if (!is_word(a, i, c->words[i]))
            return -1;
    return i;
}

/* The arguments after a command's keywords. */
static void shift(const adm_args *a, int k, adm_args *rest)
{
    memset(rest, 0, sizeof(*rest));
    for (int i = k; i < a->n; i++) {
        rest->tok[rest->n] = a->tok[i];
        rest->quoted[rest->n++] = a->quoted[i];
    }
}

bool admin_execute(tg_session *s, const char *text)
{
    adm_args a, rest;
    const char *why = NULL;
    if (!tokenize(text, &a, &why)) {
        char msg[160];
        snprintf(msg, sizeof(msg), "tenantguard console: %s", why);
        adm_error(bufferevent_get_output(s->cl.bev), TG_SQLSTATE_SYNTAX_ERROR, msg, "SHOW HELP lists the commands.");
        args_free(&a);
        return true;
    }
    struct evbuffer *out = bufferevent_get_output(s->cl.bev);
    if (a.n == 0) {
        /* An empty query, as PostgreSQL answers it. */
        static const uint8_t empty[] = {'I', 0, 0, 0, 4};
        evbuffer_add(out, empty, sizeof(empty));
        args_free(&a);
        return true;
    }
    bool done = true;
    int i;
    for (i = 0; i < N_COMMANDS; i++) {
        int k = match(&commands[i], &a);
        if (k < 0)
            continue;
        shift(&a, k, &rest);
        done = commands[i].run(s, &rest, out);
        break;
    }
    if (i == N_COMMANDS) {
        char msg[160];
        snprintf(msg, sizeof(msg), "tenantguard console: unknown command \"%.60s%s%.60s\"", a.tok[0],
                 a.n > 1 ? " " : "", a.n > 1 ? a.tok[1] : "");
        adm_error(out, TG_SQLSTATE_SYNTAX_ERROR, msg, "SHOW HELP lists the commands.");
    }
    args_free(&a);
    return done;
}

static bool bad_args(struct evbuffer *out, const char *syntax)
{
    char hint[160];
    snprintf(hint, sizeof(hint), "Syntax: %s", syntax);
    adm_error(out, TG_SQLSTATE_SYNTAX_ERROR, "tenantguard console: bad arguments", hint);
    return true;
}

/* ---------------------------------------------------------------- SET mode */

static bool cmd_set_mode(tg_session *s, const adm_args *a, struct evbuffer *out)
{
    static const char syntax[] = "SET mode = off|observe|enforce|default [FOR TABLE name]";
    int i = 0;
    if (is_word(a, i, "=") || is_word(a, i, "to"))
        i++;
    if (i >= a->n)
        return bad_args(out, syntax);
    const char *mode = a->tok[i++];
    const char *table = NULL;
    if (i < a->n) {
        if (!is_word(a, i, "for") || !is_word(a, i + 1, "table") || i + 3 != a->n)
            return bad_args(out, syntax);
        table = a->tok[i + 2];
    }
    tg_mode m = TG_MODE_OFF;
    bool reset = strcasecmp(mode, "default") == 0;
    if (!reset && tg_mode_parse(mode, &m) != 0)
        return bad_args(out, syntax);
    char err[200];
    if (rt_set_mode(s->rt, table, reset, m, err, sizeof(err)) != 0) {
        adm_error(out, TG_SQLSTATE_SYNTAX_ERROR, err, "SHOW POLICY lists the watched tables.");
        return true;
    }
    tg_clog(TG_LOG_INFO, &s->log, "admin %s: SET mode = %s%s%s", s->admin->user, reset ? "default" : tg_mode_name(m),
            table ? " FOR TABLE " : "", table ? table : "");
    adm_complete(out, "SET");
    return true;
}

/* ---------------------------------------------------------------- RELOAD */

static bool cmd_reload(tg_session *s, const adm_args *a, struct evbuffer *out)
{
    if (a->n)
        return bad_args(out, "RELOAD");
    char err[600];
    tg_clog(TG_LOG_INFO, &s->log, "admin %s: RELOAD", s->admin->user);
    if (rt_reload(s->rt, err, sizeof(err)) != 0) {
        adm_error(out, TG_SQLSTATE_CONFIG_FILE_ERROR, err, "The running config stays in force.");
        return true;
    }
    adm_complete(out, "RELOAD");
    return true;
}

/* ---------------------------------------------------------------- PAUSE */

static int busy_sessions(tg_runtime *rt)
{
    int n = 0;
    tg_session *x;
    TAILQ_FOREACH(x, &rt->sessions, link)
        if (x->state == SS_ACTIVE && track_pending(x->track) > 0)
            n++;
    return n;
}

static bool cmd_pause(tg_session *s, const adm_args *a, struct evbuffer *out)
{
    if (a->n)
        return bad_args(out, "PAUSE");
    tg_clog(TG_LOG_INFO, &s->log, "admin %s: PAUSE", s->admin->user);
    s->rt->paused = true;
    if (busy_sessions(s->rt) == 0) {
        adm_complete(out, "PAUSE");
        return true;
    }
    /* Answered by admin_tick once running statements are done. */
    s->admin->waiting = true;
    snprintf(s->admin->wait_tag, sizeof(s->admin->wait_tag), "PAUSE");
    return false;
}

static bool cmd_resume(tg_session *s, const adm_args *a, struct evbuffer *out)
{
    if (a->n)
        return bad_args(out, "RESUME");
    tg_clog(TG_LOG_INFO, &s->log, "admin %s: RESUME", s->admin->user);
    rt_resume(s->rt);
    adm_complete(out, "RESUME");
    return true;
}

void admin_tick(tg_runtime *rt)
{
    if (!rt->paused || busy_sessions(rt) > 0)
        return;
    tg_session *x, *next;
    for (x = TAILQ_FIRST(&rt->sessions); x; x = next) {
        next = TAILQ_NEXT(x, link);
        if (x->state == SS_ADMIN && x->admin->waiting && strcmp(x->admin->wait_tag, "PAUSE") == 0)
            admin_complete_later(x, "PAUSE");
    }
}

/* ---------------------------------------------------------------- KILL */

static bool cmd_kill(tg_session *s, const adm_args *a, struct evbuffer *out)
{
    char *end = NULL;
    unsigned long long id = a->n == 1 ? strtoull(a->tok[0], &end, 10) : 0;
    if (a->n != 1 || !end || *end)
        return bad_args(out, "KILL CLIENT id");
    tg_session *x;
    TAILQ_FOREACH(x, &s->rt->sessions, link) {
        if (x->id != id || x->state == SS_CLOSING)
            continue;
        tg_clog(TG_LOG_INFO, &s->log, "admin %s: KILL CLIENT %llu", s->admin->user, id);
        adm_complete(out, "KILL");
        sess_fatal(x, TG_SQLSTATE_ADMIN_SHUTDOWN, "terminating connection due to administrator command", NULL);
        return true;
    }
    char msg[96];
    snprintf(msg, sizeof(msg), "tenantguard console: no client with id %llu", id);
    adm_error(out, TG_SQLSTATE_UNDEFINED_OBJECT, msg, "SHOW CLIENTS lists them.");
    return true;
}

/* ---------------------------------------------------------------- SHUTDOWN */

static void shutdown_later(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tg_runtime *rt = arg;
    rt_stop(rt, rt->shutdown_wait);
}

static bool cmd_shutdown(tg_session *s, const adm_args *a, struct evbuffer *out)
{
    bool wait = is_word(a, 0, "wait") && a->n == 1;
    if (a->n && !wait)
        return bad_args(out, "SHUTDOWN [WAIT]");
    tg_clog(TG_LOG_INFO, &s->log, "admin %s: SHUTDOWN%s", s->admin->user, wait ? " WAIT" : "");
    adm_complete(out, "SHUTDOWN");
    /* After this loop pass, so that our own answer is written first. */
    s->rt->shutdown_wait = wait;
    event_base_once(s->rt->base, -1, EV_TIMEOUT, shutdown_later, s->rt, NULL);
    return true;
}
