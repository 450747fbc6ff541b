/*
 * cli.h -- the rollout sidecar's commands, as rows of main.c's command
 * table (TG_EXTRA_COMMANDS in proxy/commands.h). Each takes the command's
 * own argv (argv[0] is the command name) and returns the exit code:
 *   0 done, 1 error, 2 refused or incomplete, 64 usage error.
 */
#ifndef TG_BACKFILL_CLI_H
#define TG_BACKFILL_CLI_H

int tg_cmd_backfill(int argc, char **argv);
int tg_cmd_migrate(int argc, char **argv);
int tg_cmd_validate(int argc, char **argv);
int tg_cmd_status(int argc, char **argv);

#define TG_BACKFILL_COMMANDS \
    {"backfill", tg_cmd_backfill, "bind existing rows to their tenant's workspace (phase 2)"}, \
    {"migrate", tg_cmd_migrate, "schema for the rollout: --phase 1 (columns, indexes) or --phase 3 (constraints)"}, \
    {"validate", tg_cmd_validate, "count rows not bound to their tenant's workspace: exit 0 when none"}, \
    {"status", tg_cmd_status, "the latest backfill runs from operation_runs, with per-table progress"},

#endif
