/*
 * cli_common.h -- what the sidecar's commands share: the config and the
 * connection string, number options, output (text tables, JSON lines).
 * CLI only: the engine never includes this.
 */
#ifndef TG_BACKFILL_CLI_COMMON_H
#define TG_BACKFILL_CLI_COMMON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "policy/config.h"

#define CLI_EXIT_OK 0
#define CLI_EXIT_ERROR 1
#define CLI_EXIT_REFUSED 2
#define CLI_EXIT_USAGE 64

/* Connection and config options every command takes; the text for --help. */
#define CLI_COMMON_HELP \
    "  -c, --config FILE     the proxy's config: watched tables and columns come from its\n" \
    "                        [policy] section (default: the built-in defaults, the twelve\n" \
    "                        tables of the seeds and audit_logs in schema public)\n" \
    "  -d, --dsn CONNINFO    libpq URI or key=value string (default: sidecar_dsn of the\n" \
    "                        config when set, else libpq's PG* environment variables);\n" \
    "                        never printed with its password\n" \
    "      --json            one JSON object per line instead of text\n" \
    "  -h, --help            this help\n"

typedef struct cli_common {
    const char *cmd;
    const char *config_path;
    const char *dsn;
    bool json;
    tg_config *cfg;
    const char *conninfo;    /* resolved: --dsn, else sidecar_dsn, else NULL (PG*) */
} cli_common;

/* Load the config (or the defaults) and resolve the connection string.
 * Returns 0, or an exit code after printing why. */
int cli_setup(cli_common *cc);
void cli_teardown(cli_common *cc);

/* Parse an integer option within [min, max]; `unit_ms` also accepts "5s",
 * "250ms". Returns 0, or CLI_EXIT_USAGE after printing why. */
int cli_int_opt(const cli_common *cc, const char *opt, const char *val, int64_t min, int64_t max,
                bool unit_ms, int64_t *out);
/* "tenantguard CMD: MESSAGE\nTry: tenantguard CMD --help" and CLI_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print one JSON object as a line on stdout and flush; takes the reference. */
void cli_json_line(json_t *obj);
/* An error: a text line on stderr, or {"event":"error",...} on stdout. */
void cli_error(const cli_common *cc, int exit_code, const char *reason, const char *message);

/* A text table in the seed's style (+---+ borders). */
typedef struct cli_table cli_table;
cli_table *cli_table_new(int ncols, const char *const *headers);
void cli_table_add(cli_table *t, const char *const *cells);
void cli_table_print(const cli_table *t, FILE *out);
void cli_table_free(cli_table *t);

/* 1234567 -> "1,234,567" */
const char *cli_num(int64_t n, char *buf, size_t len);
/* seconds -> "850 ms", "12.3 s", "4 min 05 s", "1 h 02 min" */
const char *cli_duration(double s, char *buf, size_t len);

#endif
