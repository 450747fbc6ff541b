/*
 * commands.h -- entry points of the binary's commands, implemented by the
 * modules that own them. main.c only dispatches.
 */
#ifndef TG_COMMANDS_H
#define TG_COMMANDS_H

/* proxy/daemon.c: run the proxy until shut down; returns the exit code. */
int tg_daemon_main(const char *config_path);

#include "backfill/cli.h"

/* Rows that other modules add to main.c's command table (name, fn, summary).
 * Each module appends its row here when it lands. */
int tg_cmd_passwd(int argc, char **argv);

#define TG_EXTRA_COMMANDS \
    TG_BACKFILL_COMMANDS \
    {"passwd", tg_cmd_passwd, "print an admin_auth_file line (SCRAM-SHA-256 verifier) for a console user"},

#endif
