/*
 * main.c -- the tenantguard binary: the daemon and the operator commands.
 *
 *   tenantguard -c FILE               run the proxy in the foreground
 *   tenantguard check-config -c FILE  validate a config file
 *   tenantguard <command> ...         operator commands (see --help)
 *
 * Each command is a row of one table; --help is generated from it.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/config.h"
#include "proxy/commands.h"

static int cmd_check_config(int argc, char **argv);
static int cmd_config_keys(int argc, char **argv);
static int cmd_run(int argc, char **argv);

typedef struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"run", cmd_run, "run the proxy in the foreground (the default): tenantguard -c FILE"},
    {"check-config", cmd_check_config, "validate a config file: exit 0 when good, 1 with file:line: message"},
    {"config-keys", cmd_config_keys, "print every config key with its type, default and meaning (markdown)"},
    TG_EXTRA_COMMANDS
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *out)
{
    fprintf(out,
            "tenantguard %s -- PostgreSQL proxy enforcing workspace isolation\n"
            "\n"
            "Usage:\n"
            "  tenantguard -c FILE                 run the proxy in the foreground (logs to stderr)\n"
            "  tenantguard COMMAND [OPTIONS]       run an operator command\n"
            "  tenantguard COMMAND --help          options of a command\n"
            "  tenantguard --help | --version\n"
            "\n"
            "Commands:\n",
            PACKAGE_VERSION);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-14s %s\n", commands[i].name, commands[i].summary);
    fprintf(out,
            "\n"
            "Signals (daemon): SIGTERM stops accepting and lets sessions finish for up to\n"
            "shutdown_timeout, then closes them with 57P01; SIGINT closes every session at once;\n"
            "SIGHUP reloads the config (sessions keep the snapshot they started with).\n"
            "Under systemd: Type=notify (READY, RELOADING, STOPPING, STATUS, WATCHDOG) and\n"
            "socket activation (LISTEN_FDS replace listen_addr/listen_port/unix_socket_dir);\n"
            "see contrib/systemd/.\n"
            "\n"
            "Exit codes: 0 success, 1 error (bad config, cannot start), 2 refused or incomplete\n"
            "(see each command's --help), 64 usage error.\n");
}

/* -c FILE / --config FILE, shared by run and check-config. */
static const char *parse_config_opt(int argc, char **argv, const char *cmd)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 'h':
            printf("Usage: tenantguard %s -c FILE\n", cmd);
            exit(0);
        default:
            fprintf(stderr, "Try: tenantguard %s --help\n", cmd);
            exit(64);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tenantguard %s: unexpected argument \"%s\"\n", cmd, argv[optind]);
        exit(64);
    }
    if (!path) {
        fprintf(stderr, "tenantguard %s: -c FILE is required\n", cmd);
        exit(64);
    }
    return path;
}

static int cmd_check_config(int argc, char **argv)
{
    const char *path = parse_config_opt(argc, argv, "check-config");
    tg_config_error err;
    tg_config *cfg = tg_config_load(path, &err);
    if (!cfg) {
        fprintf(stderr, "%s:%d: %s\n", path, err.line, err.message);
        return 1;
    }
    printf("%s: OK (%d watched tables, mode %s)\n", path, cfg->policy.n_tables,
           tg_mode_name(cfg->policy.mode));
    tg_config_unref(cfg);
    return 0;
}

static int cmd_config_keys(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("Usage: tenantguard config-keys\n"
               "Prints every config key as a markdown table: section, key, type, default,\n"
               "whether SIGHUP reloads it, meaning.\n");
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "Usage: tenantguard config-keys\n");
        return 64;
    }
    printf("| section | key | type | default | reload | meaning |\n|---|---|---|---|---|---|\n");
    for (int i = 0; i < tg_config_key_count(); i++) {
        const tg_config_keyinfo *k = tg_config_key_at(i);
        char def[256];
        if (k->def[0])
            snprintf(def, sizeof(def), "`%s`", k->def);
        else
            snprintf(def, sizeof(def), "(empty)");
        printf("| %s | `%s` | %s | %s | %s | %s |\n", k->section, k->name, k->type, def,
               k->reloadable ? "yes" : "restart", k->help);
    }
    printf("| table NAME | `mode` | enum | (the global mode) | yes | off, observe or enforce for this table |\n"
           "| table NAME | `tenant_column` | string | (from [policy]) | yes | this table's tenant column |\n"
           "| table NAME | `workspace_column` | string | (from [policy]) | yes | this table's workspace column |\n");
    return 0;
}

static int cmd_run(int argc, char **argv)
{
    const char *path = parse_config_opt(argc, argv, "run");
    return tg_daemon_main(path);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 64;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
        printf("tenantguard %s\n", PACKAGE_VERSION);
        return 0;
    }
    if (argv[1][0] == '-')   /* tenantguard -c FILE: the daemon */
        return cmd_run(argc, argv);
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "tenantguard: unknown command \"%s\"; see tenantguard --help\n", argv[1]);
    return 64;
}
