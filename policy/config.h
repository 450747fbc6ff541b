/*
 * config.h -- the configuration snapshot.
 *
 * A config is loaded from an INI file into a fresh struct, validated whole,
 * and only then published (style habit 11). Sessions and worker threads take
 * a reference to the snapshot they start with (tg_config_ref) and drop it
 * when done, so a reload never changes a running session under its feet.
 * Every key is a row of one table in config.c: name, type, default, bounds,
 * reloadable or not.
 */
#ifndef TG_CONFIG_H
#define TG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy/log.h"

typedef enum {
    TG_MODE_OFF = 0,      /* relay only, count nothing */
    TG_MODE_OBSERVE,      /* relay as sent; count and log what enforce would do */
    TG_MODE_ENFORCE,      /* rewrite, reject, refuse */
} tg_mode;

typedef enum {
    TG_SERVER_SSL_DISABLE = 0,
    TG_SERVER_SSL_PREFER,
    TG_SERVER_SSL_REQUIRE,
    TG_SERVER_SSL_VERIFY_FULL,
} tg_server_sslmode;

typedef enum {
    TG_CLIENT_TLS_DISABLE = 0,  /* SSLRequest answered 'N' */
    TG_CLIENT_TLS_ALLOW,        /* TLS when the client asks */
    TG_CLIENT_TLS_REQUIRE,      /* plaintext startup refused */
} tg_client_tls_mode;

typedef enum {
    TG_VAUDIT_OFF = 0,    /* nothing written */
    TG_VAUDIT_ON,         /* rejections and refusals (status denied) */
    TG_VAUDIT_ALL,        /* also observe mode's would-be ones (status observed) */
} tg_vaudit_level;

typedef enum {
    TG_TABLE_OWNED = 0,   /* tenant-owned: R1-R5 */
    TG_TABLE_AUDIT,       /* audit table: R6 */
} tg_table_kind;

/* One watched table. Names are catalog names (case as stored, unquoted). */
typedef struct tg_table {
    char *schema;
    char *name;
    char *tenant_col;
    char *workspace_col;
    tg_table_kind kind;
    bool mode_set;        /* mode given in its [table ...] section */
    tg_mode mode;         /* effective: own mode, else the global one */
} tg_table;

typedef struct tg_policy {
    tg_mode mode;                 /* global default */
    char *tenant_schema;          /* public */
    char *tenant_table;           /* tenants */
    char *tenant_id_col;          /* id */
    char *tenant_ws_col;          /* workspace_id */
    char *helper_schema;          /* tenantguard: schema of the SQL helpers */
    tg_table *tables;             /* owned tables, then the audit table */
    int n_tables;
} tg_policy;

typedef struct tg_config {
    int refcount;                 /* atomic; see tg_config_ref/unref */
    uint64_t generation;          /* 1, 2, ... per successful load */
    char *path;

    /* [tenantguard] -- listeners */
    char *listen_addr;
    int listen_port;
    char *unix_socket_dir;
    int listen_backlog;
    bool so_reuseport;

    /* [tenantguard] -- the server */
    char *server_host;
    int server_port;
    tg_server_sslmode server_sslmode;
    char *server_tls_ca_file;
    char *server_tls_cert_file;
    char *server_tls_key_file;

    /* [tenantguard] -- client TLS */
    tg_client_tls_mode client_tls_mode;
    char *client_tls_cert_file;
    char *client_tls_key_file;

    /* [tenantguard] -- limits and timeouts (seconds) */
    int max_client_conn;
    int64_t max_packet_size;
    int64_t buffer_high_water;    /* stop reading a side past this */
    int client_login_timeout;
    int server_connect_timeout;
    int client_idle_timeout;      /* 0 = off */
    int shutdown_timeout;

    /* [tenantguard] -- logging */
    tg_log_format log_format;
    tg_log_level log_level;

    /* [tenantguard] -- statement cache */
    int64_t cache_max_bytes;
    int cache_max_entries;
    int layout_cache_ttl;         /* seconds a database's table layouts serve new sessions; 0 = probe each */

    /* [tenantguard] -- the sidecar's own connection (catalog, helpers, backfill) */
    char *sidecar_dsn;

    /* [tenantguard] -- the admin console and metrics */
    char *admin_addr;
    int admin_port;               /* 0 = no console */
    char *admin_auth_file;        /* userlist.txt format; empty = no console */
    bool admin_allow_remote;      /* admin_addr may be other than loopback */
    char *metrics_addr;
    int metrics_port;             /* 0 = no metrics endpoint */
    int violation_audit;          /* tg_vaudit_level: which violations go into the audit table */
    int violation_audit_queue;    /* entries waiting at most; more are dropped and counted */

    /* [policy], [table ...] */
    tg_policy policy;
} tg_config;

/* Where a load failed: "file:line: message" (line 0 = whole file). */
typedef struct tg_config_error {
    int line;
    char message[512];
} tg_config_error;

/*
 * Load and validate a config file. Returns a new snapshot with refcount 1,
 * or NULL with *err filled. Pure: no globals, no logging.
 */
tg_config *tg_config_load(const char *path, tg_config_error *err);

/* Same, from a string (tests). `name` is used in messages. */
tg_config *tg_config_load_string(const char *name, const char *text, tg_config_error *err);

tg_config *tg_config_ref(tg_config *cfg);
void tg_config_unref(tg_config *cfg);

/* Keys that differ and cannot change without a restart; fills `buf` with a
 * comma-separated list and returns how many. */
int tg_config_nonreloadable_changes(const tg_config *old, const tg_config *neu, char *buf, size_t len);

/* Look up a watched table by catalog schema and name; NULL if not watched. */
const tg_table *tg_policy_find(const tg_policy *p, const char *schema, const char *name);

const char *tg_mode_name(tg_mode m);
int tg_mode_parse(const char *s, tg_mode *out);

/* Introspection for SHOW CONFIG and --help: iterate over keys. */
typedef struct tg_config_keyinfo {
    const char *section;
    const char *name;
    const char *type;        /* "string", "int", "bool", "enum", "size", "seconds" */
    const char *def;         /* default as text */
    const char *help;
    bool reloadable;
} tg_config_keyinfo;
int tg_config_key_count(void);
const tg_config_keyinfo *tg_config_key_at(int i);
/* The current value of key i in cfg, formatted into buf. */
void tg_config_key_value(const tg_config *cfg, int i, char *buf, size_t len);

#endif
