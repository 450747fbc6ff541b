/*
 * cli_rollout.c -- `tenantguard migrate`, `validate` and `status`: options
 * and output around tg_migrate_run(), tg_validate_run() and
 * tg_status_json().
 */
#include "config.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backfill/backfill.h"
#include "backfill/cli.h"
#include "backfill/cli_common.h"

enum { O_PHASE = 256, O_DRY, O_LOCKTO, O_RETRIES, O_JSON, O_LIMIT };

/* Options every one of the three takes, plus the command's own. Returns 0
 * or an exit code; own(ch) handles the command's options. */
typedef int (*own_opt_fn)(cli_common *cc, int ch, const char *arg, void *state);

static int parse(int argc, char **argv, cli_common *cc, const struct option *extra, int n_extra,
                 own_opt_fn own, void *state, bool *want_help)
{
    struct option opts[16] = {
        {"config", required_argument, NULL, 'c'}, {"dsn", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'}, {"json", no_argument, NULL, O_JSON},
    };
    memcpy(opts + 4, extra, (size_t)n_extra * sizeof(*extra));
    int ch, rc = 0;
    optind = 1;
    while (rc == 0 && (ch = getopt_long(argc, argv, "c:d:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': cc->config_path = optarg; break;
        case 'd': cc->dsn = optarg; break;
        case 'h': *want_help = true; break;
        case O_JSON: cc->json = true; break;
        case '?':
            fprintf(stderr, "Try: tenantguard %s --help\n", cc->cmd);
            return CLI_EXIT_USAGE;
        default:
            rc = own(cc, ch, optarg, state);
        }
    }
    if (rc == 0 && optind < argc)
        rc = cli_usage_error(cc->cmd, "unexpected argument \"%s\"", argv[optind]);
    return rc;
}

/* ---------------------------------------------------------------- migrate */

static const char migrate_help[] =
    "Usage: tenantguard migrate --phase 1|3 [OPTIONS]\n\n"
    "Phase 1 (before the proxy enforces): for each watched table a nullable workspace\n"
    "column, of the type of the tenants table's workspace column and without a foreign\n"
    "key yet, and an index on it built CONCURRENTLY; a UNIQUE (id, workspace_id) on the\n"
    "tenants table, built CONCURRENTLY and then attached as a constraint; tenantguard's\n"
    "own SQL objects (in the policy's helper_schema), checked with helpers_version().\n\n"
    "Phase 3 (after the backfill, once validate is clean) is refused while any row is\n"
    "unbound or bound to another workspace than its tenant's. Per tenant-owned table:\n"
    "NOT NULL through CHECK (workspace_id IS NOT NULL) added NOT VALID, validated, then\n"
    "SET NOT NULL (PostgreSQL 12+ skips the scan given the valid check) and the check\n"
    "dropped as redundant; a foreign key to the table tenants.workspace_id references\n"
    "(workspaces); the composite foreign key (tenant_id, workspace_id) -> tenants (id,\n"
    "workspace_id). On the audit table: CHECK (tenant_id IS NULL OR workspace_id IS NOT\n"
    "NULL) and the foreign key to workspaces. Each constraint is added NOT VALID and then\n"
    "validated: VALIDATE lets writes go on while it scans; the other statements hold\n"
    "their lock only for a catalog change.\n\n"
    "Both phases are idempotent: what is in place is reported and skipped, a constraint\n"
    "left NOT VALID is validated, an index left INVALID by a failed build is rebuilt.\n"
    "Every statement runs with lock_timeout and is retried when it times out, so no DDL\n"
    "waits long in front of the application's queries; the CONCURRENTLY index builds are\n"
    "the exception: they wait for transactions writing the table to end, which never\n"
    "makes the application wait, so they wait without a timeout. One backfill or\n"
    "migrate at a time per database (the backfill's advisory lock).\n\n"
    "Options:\n"
    "      --phase 1|3        the phase (required; phase 2 is `tenantguard backfill`)\n"
    "      --dry-run          list each step and its SQL; change nothing, take no lock\n"
    "      --lock-timeout MS  lock_timeout of every statement but the CONCURRENTLY builds\n"
    "                         (default 2000; 5s works too)\n"
    "      --retries N        retries of a statement that timed out on a lock (default 10)\n"
    CLI_COMMON_HELP
    "\nExit codes:\n"
    "  0   every step done or already in place (dry run: the steps were listed)\n"
    "  1   error: cannot connect, bad config, a step failed (the steps before it stay\n"
    "      done; fix the cause and run again)\n"
    "  2   refused: phase 3 while rows are unbound or phase 1 is missing (a dry run lists\n"
    "      the steps first), or another backfill or migrate holds the lock\n"
    "  64  usage error\n";

typedef struct migrate_state {
    tg_migrate_options o;
    cli_common *cc;
} migrate_state;

static int migrate_opt(cli_common *cc, int ch, const char *arg, void *state)
{
    tg_migrate_options *o = &((migrate_state *)state)->o;
    int64_t v;
    int rc = 0;
    if (ch == O_PHASE) {
        if (strcmp(arg, "1") != 0 && strcmp(arg, "3") != 0)
            return cli_usage_error(cc->cmd, "--phase: \"%s\" is not 1 or 3 (phase 2 is "
                                   "`tenantguard backfill`)", arg);
        o->phase = atoi(arg);
    } else if (ch == O_DRY) {
        o->dry_run = true;
    } else if (ch == O_LOCKTO) {
        if (!(rc = cli_int_opt(cc, "--lock-timeout", arg, 1, 3600000, true, &v)))
            o->lock_timeout_ms = (int)v;
    } else if (ch == O_RETRIES) {
        if (!(rc = cli_int_opt(cc, "--retries", arg, 0, 1000, false, &v)))
            o->retries = (int)v;
    }
    return rc;
}

static void on_step(const tg_migrate_step *s, void *arg)
{
    migrate_state *ms = arg;
    static const char *const names[] = {"exists", "planned", "done"};
    if (ms->cc->json) {
        cli_json_line(json_pack("{s:s,s:s,s:s,s:s,s:f,s:i}", "event", "step", "what", s->what,
                                "state", names[s->state], "sql", s->sql, "seconds", s->seconds,
                                "attempts", s->attempts));
        return;
    }
    char d[32];
    if (s->state == TG_MIG_STEP_DONE)
        printf("[done   ] %s (%s)\n", s->what, cli_duration(s->seconds, d, sizeof(d)));
    else
        printf("[%-7s] %s\n", names[s->state], s->what);
    if (s->state != TG_MIG_STEP_EXISTS) {
        /* the SQL, indented; a script line by line */
        const char *p = s->sql;
        while (*p) {
            const char *nl = strchr(p, '\n');
            int len = nl ? (int)(nl - p) : (int)strlen(p);
            if (len > 0)
                printf("    %.*s\n", len, p);
            p += len + (nl ? 1 : 0);
        }
    }
    fflush(stdout);
}

static void on_migrate_event(const tg_bf_event *ev, void *arg)
{
    migrate_state *ms = arg;
    if (ms->cc->json) {
        if (ev->type == TG_BF_EV_CONNECTED)
            cli_json_line(json_pack("{s:s,s:s}", "event", "connected", "server", ev->message));
        else
            cli_json_line(json_pack("{s:s,s:i,s:s,s:s}", "event", "retry", "attempt", ev->attempt,
                                    "reason", ev->reason, "message", ev->message));
        return;
    }
    if (ev->type == TG_BF_EV_CONNECTED)
        printf("Connected to %s\n", ev->message);
    else
        printf("          %s, retry %d: %s\n", ev->reason, ev->attempt, ev->message);
    fflush(stdout);
}

int tg_cmd_migrate(int argc, char **argv)
{
    static const struct option extra[] = {
        {"phase", required_argument, NULL, O_PHASE}, {"dry-run", no_argument, NULL, O_DRY},
        {"lock-timeout", required_argument, NULL, O_LOCKTO},
        {"retries", required_argument, NULL, O_RETRIES}, {NULL, 0, NULL, 0},
    };
    cli_common cc = {.cmd = "migrate"};
    migrate_state ms = {.o = {.lock_timeout_ms = 2000, .retries = 10}, .cc = &cc};
    bool want_help = false;
    int rc = parse(argc, argv, &cc, extra, 5, migrate_opt, &ms, &want_help);
    if (rc)
        return rc;
    if (want_help) {
        fputs(migrate_help, stdout);
        return CLI_EXIT_OK;
    }
    if (ms.o.phase == 0)
        return cli_usage_error("migrate", "--phase 1 or --phase 3 is required");
    if ((rc = cli_setup(&cc)))
        return rc;
    ms.o.conninfo = cc.conninfo;
    ms.o.policy = &cc.cfg->policy;
    char msg[1024];
    tg_bf_status st = tg_migrate_run(&ms.o, on_step, on_migrate_event, &ms, msg, sizeof(msg));
    if (cc.json) {
        cli_json_line(json_pack("{s:s,s:i,s:b,s:i,s:s}", "event", "summary", "phase", ms.o.phase,
                                "dry_run", ms.o.dry_run, "exit_code", (int)st, "message", msg));
    } else if (st != TG_BF_OK) {
        fprintf(stderr, "tenantguard migrate: %s\n", msg);
    } else {
        printf("Phase %d %s.\n", ms.o.phase, ms.o.dry_run ? "dry run: nothing changed"
                                                           : "complete");
    }
    cli_teardown(&cc);
    return (int)st;
}

/* ---------------------------------------------------------------- validate */

static const char validate_help[] =
    "Usage: tenantguard validate [OPTIONS]\n\n"
    "The quickstart's validation SQL for every watched table: per tenant-owned table the\n"
    "rows without a workspace (SELECT count(*) FROM policies WHERE workspace_id IS NULL)\n"
    "and the rows whose workspace is not their tenant's (what phase 3's composite foreign\n"
    "key would reject); for the audit table the invariant: rows naming a tenant but no\n"
    "workspace. Prints a table of the counts. Read-only; takes no lock.\n\n"
    "Options:\n"
    CLI_COMMON_HELP
    "\nExit codes:\n"
    "  0   every count is 0\n"
    "  1   error: cannot connect, bad config, a table or column missing\n"
    "  2   some count is not 0 (run `tenantguard backfill`), or phase 1 is not applied\n"
    "  64  usage error\n";

static int no_opt(cli_common *cc, int ch, const char *arg, void *state)
{
    return CLI_EXIT_USAGE;
}

int tg_cmd_validate(int argc, char **argv)
{
    static const struct option none[] = {{NULL, 0, NULL, 0}};
    cli_common cc = {.cmd = "validate"};
    bool want_help = false;
    int rc = parse(argc, argv, &cc, none, 1, no_opt, NULL, &want_help);
    if (rc)
        return rc;
    if (want_help) {
        fputs(validate_help, stdout);
        return CLI_EXIT_OK;
    }
    if ((rc = cli_setup(&cc)))
        return rc;
    tg_validate_row *rows;
    int n;
    char msg[1024], a[32], b[32];
    tg_bf_status st = tg_validate_run(cc.conninfo, &cc.cfg->policy, &rows, &n, msg, sizeof(msg));
    if (cc.json) {
        json_t *arr = json_array();
        for (int i = 0; i < n; i++)
            json_array_append_new(arr, json_pack("{s:s,s:b,s:I,s:o,s:s}", "table", rows[i].name,
                                                 "audit", rows[i].audit, "missing",
                                                 (json_int_t)rows[i].missing, "mismatched",
                                                 rows[i].mismatched < 0 ? json_null()
                                                 : json_integer(rows[i].mismatched),
                                                 "sql", rows[i].sql));
        cli_json_line(json_pack("{s:s,s:b,s:i,s:o,s:s}", "event", "validate", "ok", st == TG_BF_OK,
                                "exit_code", (int)st, "tables", arr,
                                "message", st == TG_BF_OK ? "" : msg));
    } else {
        static const char *const head[] = {"Table", "Missing workspace_id", "Mismatched workspace_id",
                                           "Validation SQL"};
        cli_table *t = cli_table_new(4, head);
        for (int i = 0; i < n; i++) {
            const char *row[] = {rows[i].name, cli_num(rows[i].missing, a, sizeof(a)),
                                 rows[i].mismatched < 0 ? "-" : cli_num(rows[i].mismatched, b, sizeof(b)),
                                 rows[i].sql};
            cli_table_add(t, row);
        }
        if (n > 0)
            cli_table_print(t, stdout);
        cli_table_free(t);
        if (st == TG_BF_OK)
            printf("OK: every row of the %d watched tables is bound to its tenant's workspace.\n", n);
        else
            fprintf(stderr, "tenantguard validate: %s\n", msg);
    }
    free(rows);
    cli_teardown(&cc);
    return (int)st;
}

/* ---------------------------------------------------------------- status */

static const char status_help[] =
    "Usage: tenantguard status [OPTIONS]\n\n"
    "The latest backfill runs from operation_runs (type " TG_BF_RUN_TYPE "):\n"
    "status, outcome, counts, timestamps and per-table progress (target rows, processed,\n"
    "last processed id), failures, and who holds the backfill lock now. A run still\n"
    "queued or running that nobody drives (nobody holds the lock, or the holder drives\n"
    "other runs) was interrupted: the next backfill with the same --table selection\n"
    "resumes it. A run whose call holds it between two batches (SIGUSR1, BACKFILL PAUSE)\n"
    "shows as paused (--json: paused_at, paused_by).\n"
    "The lock's holder is named by the process that runs the backfill (program, OS pid,\n"
    "host: what its runs recorded in context.runner; --json: lock.runner) and by its\n"
    "PostgreSQL session (backend pid, client, application). Signal a `tenantguard\n"
    "backfill` by that OS pid, never the backend pid; a console run (program `tenantguard\n"
    "console backfill`, the daemon's pid) is paused and resumed from a console.\n"
    "Read-only.\n\n"
    "Options:\n"
    "      --limit N          the N most recent runs (default: the active runs and the runs\n"
    "                         of the latest backfill call)\n"
    CLI_COMMON_HELP
    "\nExit codes: 0 shown (also when there is no run yet), 1 error, 64 usage error.\n";

static int status_opt(cli_common *cc, int ch, const char *arg, void *state)
{
    int64_t v;
    int rc = cli_int_opt(cc, "--limit", arg, 1, 100000, false, &v);
    if (!rc)
        *(int *)state = (int)v;
    return rc;
}

static const char *jtext(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : "?";
}

/* Who holds the lock: the process (the one to signal) when its runs
 * recorded it, and always the PostgreSQL session, its pid labelled as a
 * backend's. */
static void status_lock(json_t *lock)
{
    if (!json_is_object(lock)) {
        printf("Backfill lock: free\n");
        return;
    }
    json_t *runner = json_object_get(lock, "runner");
    int backend = (int)json_integer_value(json_object_get(lock, "backend_pid"));
    char session[512];
    snprintf(session, sizeof(session), "client %s, application \"%s\", connected since %s", jtext(lock, "client"),
             jtext(lock, "application"), jtext(lock, "since"));
    if (json_is_object(runner))
        printf("Backfill lock: held by %s pid %" JSON_INTEGER_FORMAT " on host %s since %s (backend pid %d, %s)\n",
               jtext(runner, "program"), json_integer_value(json_object_get(runner, "pid")),
               jtext(runner, "host"), jtext(runner, "since"), backend, session);
    else
        printf("Backfill lock: held by backend pid %d (%s); no run records the process behind it (a migrate, "
               "an older tenantguard, or a backfill still planning)\n", backend, session);
}

static void status_text(json_t *doc)
{
    json_t *lock = json_object_get(doc, "lock"), *runs = json_object_get(doc, "runs"), *run;
    size_t i;
    char a[32], b[32], c[32], d[32], e[32], f[32];
    status_lock(lock);
    if (json_array_size(runs) == 0) {
        printf("No backfill runs recorded yet.\n");
        return;
    }
    static const char *const head[] = {"Run", "Workspace", "Status", "Outcome", "Total", "Processed",
                                       "Succeeded", "Failed", "Started", "Completed", "Duration"};
    static const char *const phead[] = {"Run", "Table", "Target rows", "Processed", "Last processed id"};
    cli_table *t = cli_table_new(11, head), *pt = cli_table_new(5, phead);
    json_array_foreach(runs, i, run) {
        json_t *sc = json_object_get(run, "summary_counts"), *tp = json_object_get(run, "table_progress");
        const char *status = json_string_value(json_object_get(run, "status"));
        char st[40], dur[32], id[24];
        snprintf(id, sizeof(id), "#%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(run, "id")));
        snprintf(st, sizeof(st), "%s%s", status,
                 json_is_true(json_object_get(run, "interrupted")) ? " (interrupted)"
                 : json_is_true(json_object_get(run, "paused"))    ? " (paused)"
                                                                    : "");
        json_t *ds = json_object_get(run, "duration_seconds");
        snprintf(dur, sizeof(dur), "%s", json_is_number(ds) ? cli_duration(json_number_value(ds), a, sizeof(a)) : "-");
        const char *outcome = json_string_value(json_object_get(run, "outcome"));
        const char *started = json_string_value(json_object_get(run, "started_at"));
        const char *completed = json_string_value(json_object_get(run, "completed_at"));
        char ws[24];
        snprintf(ws, sizeof(ws), "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(run, "workspace_id")));
        const char *row[] = {id, ws, st, outcome ? outcome : "-",
                             cli_num(json_integer_value(json_object_get(sc, "total")), b, sizeof(b)),
                             cli_num(json_integer_value(json_object_get(sc, "processed")), c, sizeof(c)),
                             cli_num(json_integer_value(json_object_get(sc, "succeeded")), d, sizeof(d)),
                             cli_num(json_integer_value(json_object_get(sc, "failed")), e, sizeof(e)),
                             started ? started : "-", completed ? completed : "-", dur};
        cli_table_add(t, row);
        const char *key;
        json_t *v;
        json_object_foreach(tp, key, v) {
            int64_t target = json_integer_value(json_object_get(v, "target_rows"));
            int64_t done = json_integer_value(json_object_get(v, "processed"));
            if (target == 0 && done == 0)
                continue;
            const char *prow[] = {id, key, cli_num(target, a, sizeof(a)), cli_num(done, b, sizeof(b)),
                                  cli_num(json_integer_value(json_object_get(v, "last_processed_id")),
                                          f, sizeof(f))};
            cli_table_add(pt, prow);
        }
        json_t *fs = json_object_get(run, "failure_summary"), *fe;
        size_t k;
        json_array_foreach(fs, k, fe)
            printf("Run %s failure: %s (%s): %s\n", id, json_string_value(json_object_get(fe, "code")),
                   json_string_value(json_object_get(fe, "reason_code")),
                   json_string_value(json_object_get(fe, "message")));
    }
    cli_table_print(t, stdout);
    printf("Per-table progress (tables with work):\n");
    cli_table_print(pt, stdout);
    cli_table_free(t);
    cli_table_free(pt);
}

int tg_cmd_status(int argc, char **argv)
{
    static const struct option extra[] = {{"limit", required_argument, NULL, O_LIMIT},
                                          {NULL, 0, NULL, 0}};
    cli_common cc = {.cmd = "status"};
    bool want_help = false;
    int limit = 0;
    int rc = parse(argc, argv, &cc, extra, 2, status_opt, &limit, &want_help);
    if (rc)
        return rc;
    if (want_help) {
        fputs(status_help, stdout);
        return CLI_EXIT_OK;
    }
    if ((rc = cli_setup(&cc)))
        return rc;
    char msg[1024];
    char *text = tg_status_json(cc.conninfo, &cc.cfg->policy, limit, msg, sizeof(msg));
    if (!text) {
        cli_error(&cc, CLI_EXIT_ERROR, "status", msg);
        cli_teardown(&cc);
        return CLI_EXIT_ERROR;
    }
    json_t *doc = json_loads(text, 0, NULL);
    if (cc.json) {
        json_object_set_new(doc, "event", json_string("status"));
        cli_json_line(doc);
    } else {
        status_text(doc);
        json_decref(doc);
    }
    free(text);
    cli_teardown(&cc);
    return CLI_EXIT_OK;
}
