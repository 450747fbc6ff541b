/*
 * config.c -- INI file -> validated tg_config snapshot.
 *
 * One table row per key (name, type, field, default, bounds, reloadable).
 * Loading fills a fresh struct from the defaults, applies the file through
 * libinih, then validates the whole struct; a reload swaps the pointer only
 * when all of it is good. Policy keys are collected as text and turned into
 * the tg_policy model at the end, because [table ...] sections may come
 * before the [policy] list they refer to.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <ini.h>

#include "policy/config.h"

typedef enum { KT_STRING, KT_INT, KT_BOOL, KT_ENUM, KT_SIZE, KT_SECONDS } key_type;

typedef struct key_def {
    const char *section;     /* "tenantguard", "policy" */
    const char *name;
    key_type type;
    size_t offset;           /* into tg_config, or into policy_text */
    bool in_policy_text;     /* true: a field of struct policy_text */
    const char *def;
    int64_t min, max;        /* KT_INT, KT_SIZE, KT_SECONDS */
    const char *const *enum_names;
    bool reloadable;
    const char *help;
} key_def;

/* Policy keys as given; built into tg_policy by build_policy(). */
typedef struct policy_text {
    char *mode;
    char *tables;
    char *schema;
    char *tenant_column;
    char *workspace_column;
    char *tenant_table;
    char *tenant_id_column;
    char *tenant_workspace_column;
    char *audit_table;
    char *audit_tenant_column;
    char *audit_workspace_column;
    char *helper_schema;
} policy_text;

/* A [table NAME] section: per-table overrides. */
typedef struct table_section {
    char *ref;               /* NAME as written */
    int line;
    char *mode;
    char *tenant_column;
    char *workspace_column;
} table_section;

static const char *const sslmode_names[] = {"disable", "prefer", "require", "verify-full", NULL};
static const char *const tlsmode_names[] = {"disable", "allow", "require", NULL};
static const char *const logfmt_names[] = {"text", "json", NULL};
/* Index = tg_vaudit_level. A boolean (yes, true, 1 ...) is read as off/on. */
static const char *const vaudit_names[] = {"off", "on", "all", NULL};
static const char *const loglevel_names[] = {"error", "warning", "info", "debug", NULL};
static const char *const mode_names[] = {"off", "observe", "enforce", NULL};

#define CF(field) offsetof(tg_config, field), false
#define PT(field) offsetof(policy_text, field), true
#define GIB (1024LL * 1024 * 1024)

static const char default_tables[] =
    "policies, policy_versions, backup_sets, backup_items, restore_runs, backup_schedules, "
    "inventory_items, inventory_links, entra_groups, findings, entra_role_definitions, "
    "tenant_permissions";

static const key_def keys[] = {
    {"tenantguard", "listen_addr", KT_STRING, CF(listen_addr), "127.0.0.1", 0, 0, NULL, false,
     "TCP address to listen on: an IP, \"*\" for all, empty for none"},
    {"tenantguard", "listen_port", KT_INT, CF(listen_port), "6432", 1, 65535, NULL, false,
     "TCP port for clients"},
    {"tenantguard", "unix_socket_dir", KT_STRING, CF(unix_socket_dir), "", 0, 0, NULL, false,
     "directory for the .s.PGSQL.<port> socket; empty = none"},
    {"tenantguard", "listen_backlog", KT_INT, CF(listen_backlog), "128", 1, 65535, NULL, false,
     "listen(2) backlog"},
    {"tenantguard", "so_reuseport", KT_BOOL, CF(so_reuseport), "off", 0, 0, NULL, false,
     "SO_REUSEPORT, to run several processes on one port"},
    {"tenantguard", "server_host", KT_STRING, CF(server_host), "127.0.0.1", 0, 0, NULL, true,
     "PostgreSQL host name, IP, or socket directory (starts with /)"},
    {"tenantguard", "server_port", KT_INT, CF(server_port), "5432", 1, 65535, NULL, true,
     "PostgreSQL port"},
    {"tenantguard", "server_sslmode", KT_ENUM, CF(server_sslmode), "disable", 0, 0, sslmode_names, true,
     "TLS to PostgreSQL: disable, prefer, require, verify-full"},
    {"tenantguard", "server_tls_ca_file", KT_STRING, CF(server_tls_ca_file), "", 0, 0, NULL, true,
     "CA bundle for verify-full; empty = system default"},
    {"tenantguard", "server_tls_cert_file", KT_STRING, CF(server_tls_cert_file), "", 0, 0, NULL, true,
     "client certificate presented to PostgreSQL (optional)"},
    {"tenantguard", "server_tls_key_file", KT_STRING, CF(server_tls_key_file), "", 0, 0, NULL, true,
     "key of server_tls_cert_file"},
    {"tenantguard", "client_tls_mode", KT_ENUM, CF(client_tls_mode), "disable", 0, 0, tlsmode_names, true,
     "TLS from clients: disable, allow, require"},
    {"tenantguard", "client_tls_cert_file", KT_STRING, CF(client_tls_cert_file), "", 0, 0, NULL, true,
     "certificate tenantguard presents to clients"},
    {"tenantguard", "client_tls_key_file", KT_STRING, CF(client_tls_key_file), "", 0, 0, NULL, true,
     "key of client_tls_cert_file"},
    {"tenantguard", "max_client_conn", KT_INT, CF(max_client_conn), "1000", 1, 1000000, NULL, true,
     "client connections at most; more get 53300"},
    {"tenantguard", "max_packet_size", KT_SIZE, CF(max_packet_size), "128MB", 1024, GIB, NULL, true,
     "largest protocol message a client may send whole; larger gets 08P01"},
    {"tenantguard", "buffer_high_water", KT_SIZE, CF(buffer_high_water), "256kB", 16384, GIB, NULL, true,
     "a side stops reading while the other side has this much unsent"},
    {"tenantguard", "client_login_timeout", KT_SECONDS, CF(client_login_timeout), "60", 1, 86400, NULL, true,
     "seconds for startup, TLS and authentication"},
    {"tenantguard", "server_connect_timeout", KT_SECONDS, CF(server_connect_timeout), "15", 1, 3600, NULL, true,
     "seconds to connect to PostgreSQL (incl. TLS)"},
    {"tenantguard", "client_idle_timeout", KT_SECONDS, CF(client_idle_timeout), "0", 0, 31536000, NULL, true,
     "close a client idle outside a transaction this long; 0 = never"},
    {"tenantguard", "shutdown_timeout", KT_SECONDS, CF(shutdown_timeout), "30", 0, 86400, NULL, true,
     "SIGTERM: seconds to let sessions finish before closing them with 57P01"},
    {"tenantguard", "log_format", KT_ENUM, CF(log_format), "text", 0, 0, logfmt_names, true,
     "text or json"},
    {"tenantguard", "log_level", KT_ENUM, CF(log_level), "info", 0, 0, loglevel_names, true,
     "error, warning, info, debug"},
    {"tenantguard", "cache_max_bytes", KT_SIZE, CF(cache_max_bytes), "16MB", 0, GIB, NULL, true,
     "statement decision cache: bytes at most (0 = no cache)"},
    {"tenantguard", "cache_max_entries", KT_INT, CF(cache_max_entries), "20000", 0, 10000000, NULL, true,
     "statement decision cache: entries at most"},
    {"tenantguard", "layout_cache_ttl", KT_SECONDS, CF(layout_cache_ttl), "2", 0, 3600, NULL, true,
     "seconds the watched tables' column order learnt at one login serves the next logins to that database; 0 = ask at every login"},
    {"tenantguard", "sidecar_dsn", KT_STRING, CF(sidecar_dsn), "", 0, 0, NULL, true,
     "libpq connection string for tenantguard's own connection (catalog, helper check)"},
    {"tenantguard", "admin_addr", KT_STRING, CF(admin_addr), "127.0.0.1", 0, 0, NULL, false,
     "address of the admin console (psql -h ADDR -p PORT -U admin tenantguard)"},
    {"tenantguard", "admin_port", KT_INT, CF(admin_port), "6433", 0, 65535, NULL, false,
     "port of the admin console; 0 = no console"},
    {"tenantguard", "admin_auth_file", KT_STRING, CF(admin_auth_file), "", 0, 0, NULL, true,
     "console users: \"name\" \"SCRAM-SHA-256$...\" per line (tenantguard passwd NAME); empty = no console"},
    {"tenantguard", "admin_allow_remote", KT_BOOL, CF(admin_allow_remote), "off", 0, 0, NULL, false,
     "allow admin_addr / metrics_addr other than loopback"},
    {"tenantguard", "metrics_addr", KT_STRING, CF(metrics_addr), "127.0.0.1", 0, 0, NULL, false,
     "address of the Prometheus metrics endpoint"},
    {"tenantguard", "metrics_port", KT_INT, CF(metrics_port), "0", 0, 65535, NULL, false,
     "port of GET /metrics (Prometheus text format); 0 = off"},
    {"tenantguard", "violation_audit", KT_ENUM, CF(violation_audit), "off", 0, 0, vaudit_names, true,
     "write violations into the audit table (needs sidecar_dsn): on = rejections and refusals, "
     "all = also observe mode's would-be ones"},
    {"tenantguard", "violation_audit_queue", KT_INT, CF(violation_audit_queue), "10000", 1, 1000000, NULL, true,
     "violations waiting to be written at most; more are dropped and counted"},
    {"tenantguard", "mode", KT_STRING, PT(mode), "observe", 0, 0, NULL, true,
     "off, observe or enforce, for every watched table without its own mode"},

    {"policy", "tables", KT_STRING, PT(tables), default_tables, 0, 0, NULL, true,
     "tenant-owned tables: comma-separated [schema.]name"},
    {"policy", "schema", KT_STRING, PT(schema), "public", 0, 0, NULL, true,
     "schema of table names given without one"},
    {"policy", "tenant_column", KT_STRING, PT(tenant_column), "tenant_id", 0, 0, NULL, true,
     "tenant column of the tenant-owned tables"},
    {"policy", "workspace_column", KT_STRING, PT(workspace_column), "workspace_id", 0, 0, NULL, true,
     "workspace column of the tenant-owned tables"},
    {"policy", "tenant_table", KT_STRING, PT(tenant_table), "public.tenants", 0, 0, NULL, true,
     "the tenants table: [schema.]name (schema: [policy] schema)"},
    {"policy", "tenant_id_column", KT_STRING, PT(tenant_id_column), "id", 0, 0, NULL, true,
     "key column of the tenants table"},
    {"policy", "tenant_workspace_column", KT_STRING, PT(tenant_workspace_column), "workspace_id", 0, 0, NULL, true,
     "workspace column of the tenants table"},
    {"policy", "audit_table", KT_STRING, PT(audit_table), "public.audit_logs", 0, 0, NULL, true,
     "audit table (R6): [schema.]name (schema: [policy] schema); empty = none"},
    {"policy", "audit_tenant_column", KT_STRING, PT(audit_tenant_column), "tenant_id", 0, 0, NULL, true,
     "tenant column of the audit table"},
    {"policy", "audit_workspace_column", KT_STRING, PT(audit_workspace_column), "workspace_id", 0, 0, NULL, true,
     "workspace column of the audit table"},
    {"policy", "helper_schema", KT_STRING, PT(helper_schema), "tenantguard", 0, 0, NULL, false,
     "schema holding tenantguard's SQL helper functions"},
};

#define N_KEYS ((int)(sizeof(keys) / sizeof(keys[0])))

/* Keys allowed in a [table NAME] section. */
static const char *const table_keys[] = {"mode", "tenant_column", "workspace_column", NULL};

/* ---------------------------------------------------------------- load state */

typedef struct load_state {
    const char *name;         /* file name, for messages */
    tg_config *cfg;
    policy_text pt;
    table_section *sections;
    int n_sections, cap_sections;
    int key_line[N_KEYS];     /* where each key was set; 0 = default */
    int line;                 /* current line, counted by our reader */
    int section_line;
    bool mid_line;            /* the last read ended inside a line */
    char section[128];
    tg_config_error *err;
    bool failed;
    /* reader over a string or a FILE */
    const char *str_pos;
    FILE *fp;
} load_state;

static void set_error(load_state *st, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_error(load_state *st, int line, const char *fmt, ...)
{
    if (st->failed)
        return;             /* keep the first error */
    st->failed = true;
    st->err->line = line;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->err->message, sizeof(st->err->message), fmt, ap);
    va_end(ap);
}

static char **field_str(void *base, size_t off)
{
    return (char **)((char *)base + off);
}

static bool parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"1", "on", "yes", "true", NULL};
    static const char *const no[] = {"0", "off", "no", "false", NULL};
    for (int i = 0; yes[i]; i++)
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return true;
        }
    for (int i = 0; no[i]; i++)
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return true;
        }
    return false;
}

/* Integer with an optional unit suffix from `units` (multiplier table). */
typedef struct unit { const char *suffix; int64_t mult; } unit;

static const unit size_units[] = {
    {"", 1}, {"B", 1}, {"kB", 1024}, {"KB", 1024}, {"MB", 1024 * 1024}, {"GB", GIB}, {NULL, 0}};
static const unit time_units[] = {
    {"", 1}, {"s", 1}, {"min", 60}, {"h", 3600}, {"d", 86400}, {NULL, 0}};

static bool parse_int_unit(const char *v, const unit *units, int64_t *out)
{
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (end == v || errno == ERANGE || n < 0)
        return false;
    while (*end == ' ')
        end++;
    for (int i = 0; units[i].suffix; i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            if (n > INT64_MAX / units[i].mult)
                return false;
            *out = n * units[i].mult;
            return true;
        }
    }
    return false;
}

static int find_enum(const char *const *names, const char *v)
{
    for (int i = 0; names[i]; i++)
        if (strcasecmp(names[i], v) == 0)
            return i;
    return -1;
}

static void enum_list(const char *const *names, char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; names[i] && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%s", i ? ", " : "", names[i]);
}

/* Apply one value to key k. Returns false (with the error set) when bad. */
static bool apply_key(load_state *st, int k, const char *value)
{
    const key_def *kd = &keys[k];
    void *base = kd->in_policy_text ? (void *)&st->pt : (void *)st->cfg;
    void *field = (char *)base + kd->offset;
    int64_t n;

    switch (kd->type) {
    case KT_STRING: {
        char **s = field_str(base, kd->offset);
        char *dup = strdup(value);
        if (!dup) {
            set_error(st, st->line, "out of memory");
            return false;
        }
        free(*s);
        *s = dup;
        return true;
    }
    case KT_BOOL:
        if (!parse_bool(value, (bool *)field)) {
            set_error(st, st->line, "%s: \"%s\" is not a boolean (on/off, yes/no, true/false, 1/0)",
                      kd->name, value);
            return false;
        }
        return true;
    case KT_ENUM: {
        int e = find_enum(kd->enum_names, value);
        bool b;
        if (e < 0 && kd->enum_names == vaudit_names && parse_bool(value, &b))
            e = b ? TG_VAUDIT_ON : TG_VAUDIT_OFF;   /* it was a boolean before `all` */
        if (e < 0) {
            char list[160];
            enum_list(kd->enum_names, list, sizeof(list));
            set_error(st, st->line, "%s: \"%s\" is not one of: %s", kd->name, value, list);
            return false;
        }
        *(int *)field = e;
        return true;
    }
    case KT_INT:
    case KT_SECONDS:
    case KT_SIZE: {
        const unit *u = kd->type == KT_SIZE ? size_units
                        : kd->type == KT_SECONDS ? time_units : size_units;
        bool ok = kd->type == KT_INT ? parse_int_unit(value, (const unit[]){{"", 1}, {NULL, 0}}, &n)
                                     : parse_int_unit(value, u, &n);
        if (!ok) {
            set_error(st, st->line, "%s: \"%s\" is not a %s", kd->name, value,
                      kd->type == KT_SIZE      ? "size (e.g. 512kB, 128MB)"
                      : kd->type == KT_SECONDS ? "duration in seconds (e.g. 30, 5min)"
                                               : "non-negative integer");
            return false;
        }
        if (n < kd->min || n > kd->max) {
            set_error(st, st->line, "%s: %lld is out of range [%lld, %lld]", kd->name, (long long)n,
                      (long long)kd->min, (long long)kd->max);
            return false;
        }
        if (kd->type == KT_SIZE)
            *(int64_t *)field = n;
        else
            *(int *)field = (int)n;
        return true;
    }
    }
    return false;
}

static table_section *add_section(load_state *st, const char *ref)
{
    for (int i = 0; i < st->n_sections; i++)
        if (strcmp(st->sections[i].ref, ref) == 0)
            return &st->sections[i];
    if (st->n_sections == st->cap_sections) {
        int cap = st->cap_sections ? st->cap_sections * 2 : 8;
        table_section *s = realloc(st->sections, (size_t)cap * sizeof(*s));
        if (!s)
            return NULL;
        st->sections = s;
        st->cap_sections = cap;
    }
    table_section *ts = &st->sections[st->n_sections++];
    memset(ts, 0, sizeof(*ts));
    ts->ref = strdup(ref);
    ts->line = st->section_line;
    return ts->ref ? ts : NULL;
}

static int handle_table_key(load_state *st, const char *ref, const char *name, const char *value)
{
    table_section *ts = add_section(st, ref);
    if (!ts) {
        set_error(st, st->line, "out of memory");
        return 0;
    }
    char **slot = NULL;
    if (strcmp(name, "mode") == 0)
        slot = &ts->mode;
    else if (strcmp(name, "tenant_column") == 0)
        slot = &ts->tenant_column;
    else if (strcmp(name, "workspace_column") == 0)
        slot = &ts->workspace_column;
    if (!slot) {
        char list[120];
        enum_list(table_keys, list, sizeof(list));
        set_error(st, st->line, "unknown key \"%s\" in [table %s] (known: %s)", name, ref, list);
        return 0;
    }
    free(*slot);
    *slot = strdup(value);
    return 1;
}

static int ini_handler_cb(void *user, const char *section, const char *name, const char *value)
{
    load_state *st = user;

    if (st->failed)
        return 0;
    if (strncmp(section, "table ", 6) == 0) {
        const char *ref = section + 6;
        while (*ref == ' ')
            ref++;
        if (!*ref) {
            set_error(st, st->line, "[table] section needs a table name: [table policies]");
            return 0;
        }
        return handle_table_key(st, ref, name, value);
    }
    if (strcmp(section, "tenantguard") != 0 && strcmp(section, "policy") != 0) {
        if (section[0] == '\0')
            set_error(st, st->line, "key \"%s\" outside a section: put it under [tenantguard]", name);
        else
            set_error(st, st->line, "unknown section [%s] (known: [tenantguard], [policy], [table NAME])",
                      section);
        return 0;
    }
    for (int k = 0; k < N_KEYS; k++) {
        if (strcmp(keys[k].section, section) == 0 && strcmp(keys[k].name, name) == 0) {
            /* `tables` is a list: a second line (an indented continuation,
             * or the key again) adds to it rather than replacing it. */
            if (st->key_line[k] && strcmp(name, "tables") == 0 && strcmp(section, "policy") == 0) {
                char *joined;
                if (asprintf(&joined, "%s, %s", st->pt.tables, value) < 0) {
                    set_error(st, st->line, "out of memory");
                    return 0;
                }
                free(st->pt.tables);
                st->pt.tables = joined;
                return 1;
            }
            st->key_line[k] = st->line;
            return apply_key(st, k, value) ? 1 : 0;
        }
    }
    set_error(st, st->line, "unknown key \"%s\" in [%s]", name, section);
    return 0;
}

/* A [section] header is checked where it stands, also when no key follows it
 * (libinih reports only keys). */
static void check_section_name(load_state *st, const char *name)
{
    const char *end = strchr(name, ']');
    size_t n = end ? (size_t)(end - name) : strlen(name);
    while (n && isspace((unsigned char)name[n - 1]))
        n--;
    if ((n == 11 && strncmp(name, "tenantguard", 11) == 0) || (n == 6 && strncmp(name, "policy", 6) == 0))
        return;
    if (n > 6 && strncmp(name, "table ", 6) == 0)
        return;
    set_error(st, st->line, "unknown section [%.*s] (known: [tenantguard], [policy], [table NAME])",
              (int)(n > 64 ? 64 : n), name);
}

/* Remember where the latest [section] header was, for section errors, and
 * refuse lines that libinih would split (its INI_MAX_LINE is 200 in Debian's
 * build): a long list continues on indented lines instead. */
static void note_line(load_state *st, const char *buf, int num)
{
    size_t len = strlen(buf);
    if ((int)len >= num - 1 && buf[len - 1] != '\n')
        set_error(st, st->line, "line longer than %d characters: continue a long value on "
                  "indented lines", num - 2);
    while (*buf == ' ' || *buf == '\t')
        buf++;
    if (*buf == '[') {
        st->section_line = st->line;
        check_section_name(st, buf + 1);
    }
}

static void count_line(load_state *st, const char *buf, int num)
{
    size_t len = strlen(buf);
    if (!st->mid_line)
        st->line++;
    st->mid_line = len > 0 && buf[len - 1] != '\n';
    note_line(st, buf, num);
}

/* fgets-style readers that count lines, so errors found by our handler or
 * by later validation can name the line. */
static char *reader_string(char *buf, int num, void *stream)
{
    load_state *st = stream;
    const char *p = st->str_pos;
    if (!p || !*p)
        return NULL;
    int i = 0;
    while (i < num - 1 && p[i]) {
        buf[i] = p[i];
        if (p[i++] == '\n')
            break;
    }
    buf[i] = '\0';
    st->str_pos = p + i;
    count_line(st, buf, num);
    return buf;
}

static char *reader_file(char *buf, int num, void *stream)
{
    load_state *st = stream;
    char *r = fgets(buf, num, st->fp);
    if (r)
        count_line(st, buf, num);
    return r;
}

/* ---------------------------------------------------------------- policy */

static bool valid_ident(const char *s)
{
    if (!*s || strlen(s) > 63)
        return false;
    if (!(isalpha((unsigned char)*s) || *s == '_'))
        return false;
    /* No '$': the names go into tenantguard's SQL helpers, whose function
     * bodies are dollar-quoted. */
    for (const char *p = s + 1; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_'))
            return false;
    return true;
}

/* Split "[schema.]name" into parts; default_schema when none. */
static bool split_qualified(const char *ref, const char *default_schema, char **schema, char **name)
{
    const char *dot = strchr(ref, '.');
    char *s, *n;
    if (dot) {
        s = strndup(ref, (size_t)(dot - ref));
        n = strdup(dot + 1);
    } else {
        s = default_schema ? strdup(default_schema) : NULL;
        n = strdup(ref);
    }
    if (!s || !n || !valid_ident(s) || !valid_ident(n)) {
        free(s);
        free(n);
        return false;
    }
    *schema = s;
    *name = n;
    return true;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static int key_index(const char *section, const char *name)
{
    for (int k = 0; k < N_KEYS; k++)
        if (strcmp(keys[k].section, section) == 0 && strcmp(keys[k].name, name) == 0)
            return k;
    return -1;
}

static int line_of(load_state *st, const char *section, const char *name)
{
    int k = key_index(section, name);
    return k >= 0 ? st->key_line[k] : 0;
}

static bool add_table(load_state *st, tg_policy *p, const char *schema, const char *name,
                      const char *tcol, const char *wcol, tg_table_kind kind, int line)
{
    if (strlen(name) < 2) {
        /* The text pre-filter looks for each name; one letter would match
         * nearly every statement. */
        set_error(st, line, "table \"%s\": a watched table name needs two characters or more", name);
        return false;
    }
    if (tg_policy_find(p, schema, name)) {
        set_error(st, line, "table %s.%s is listed twice", schema, name);
        return false;
    }
    tg_table *t = realloc(p->tables, (size_t)(p->n_tables + 1) * sizeof(*t));
    if (!t) {
        set_error(st, line, "out of memory");
        return false;
    }
    p->tables = t;
    t = &p->tables[p->n_tables++];
    memset(t, 0, sizeof(*t));
    t->schema = strdup(schema);
    t->name = strdup(name);
    t->tenant_col = strdup(tcol);
    t->workspace_col = strdup(wcol);
    t->kind = kind;
    t->mode = p->mode;
    return t->schema && t->name && t->tenant_col && t->workspace_col;
}

static bool check_ident(load_state *st, const char *section, const char *key, const char *v)
{
    if (valid_ident(v))
        return true;
    set_error(st, line_of(st, section, key), "%s: \"%s\" is not a plain SQL identifier", key, v);
    return false;
}

static bool build_policy(load_state *st)
{
    policy_text *pt = &st->pt;
    tg_policy *p = &st->cfg->policy;
    char *schema = NULL, *name = NULL;

    if (tg_mode_parse(pt->mode, &p->mode) != 0) {
        set_error(st, line_of(st, "tenantguard", "mode"),
                  "mode: \"%s\" is not one of: off, observe, enforce", pt->mode);
        return false;
    }
    if (!check_ident(st, "policy", "schema", pt->schema) ||
        !check_ident(st, "policy", "tenant_column", pt->tenant_column) ||
        !check_ident(st, "policy", "workspace_column", pt->workspace_column) ||
        !check_ident(st, "policy", "tenant_id_column", pt->tenant_id_column) ||
        !check_ident(st, "policy", "tenant_workspace_column", pt->tenant_workspace_column) ||
        !check_ident(st, "policy", "audit_tenant_column", pt->audit_tenant_column) ||
        !check_ident(st, "policy", "audit_workspace_column", pt->audit_workspace_column) ||
        !check_ident(st, "policy", "helper_schema", pt->helper_schema))
        return false;
    if (strcmp(pt->tenant_column, pt->workspace_column) == 0) {
        set_error(st, line_of(st, "policy", "workspace_column"),
                  "workspace_column must differ from tenant_column");
        return false;
    }
    if (!split_qualified(pt->tenant_table, pt->schema, &schema, &name)) {
        set_error(st, line_of(st, "policy", "tenant_table"),
                  "tenant_table: \"%s\" is not [schema.]table", pt->tenant_table);
        return false;
    }
    p->tenant_schema = schema;
    p->tenant_table = name;
    p->tenant_id_col = strdup(pt->tenant_id_column);
    p->tenant_ws_col = strdup(pt->tenant_workspace_column);
    p->helper_schema = strdup(pt->helper_schema);

    /* The tenant-owned tables, in the order given. */
    char *list = strdup(pt->tables);
    if (!list) {
        set_error(st, 0, "out of memory");
        return false;
    }
    int tables_line = line_of(st, "policy", "tables");
    char *save = NULL;
    bool ok = true;
    for (char *tok = strtok_r(list, ",", &save); tok && ok; tok = strtok_r(NULL, ",", &save)) {
        char *ref = trim(tok);
        if (!*ref)
            continue;
        if (!split_qualified(ref, pt->schema, &schema, &name)) {
            set_error(st, tables_line, "tables: \"%s\" is not [schema.]table", ref);
            ok = false;
            break;
        }
        if (strcmp(schema, p->tenant_schema) == 0 && strcmp(name, p->tenant_table) == 0) {
            set_error(st, tables_line, "tables: the tenants table %s.%s cannot be tenant-owned", schema,
                      name);
            ok = false;
        } else {
            ok = add_table(st, p, schema, name, pt->tenant_column, pt->workspace_column, TG_TABLE_OWNED,
                           tables_line);
        }
        free(schema);
        free(name);
    }
    free(list);
    if (!ok)
        return false;

    if (pt->audit_table[0]) {
        if (!split_qualified(pt->audit_table, pt->schema, &schema, &name)) {
            set_error(st, line_of(st, "policy", "audit_table"),
                      "audit_table: \"%s\" is not [schema.]table (or empty for none)", pt->audit_table);
            return false;
        }
        ok = add_table(st, p, schema, name, pt->audit_tenant_column, pt->audit_workspace_column,
                       TG_TABLE_AUDIT, line_of(st, "policy", "audit_table"));
        free(schema);
        free(name);
        if (!ok)
            return false;
    }

    /* Per-table sections refer to tables listed above. */
    for (int i = 0; i < st->n_sections; i++) {
        table_section *ts = &st->sections[i];
        if (!split_qualified(ts->ref, pt->schema, &schema, &name)) {
            set_error(st, ts->line, "[table %s]: not a [schema.]table name", ts->ref);
            return false;
        }
        tg_table *t = (tg_table *)tg_policy_find(p, schema, name);
        free(schema);
        free(name);
        if (!t) {
            set_error(st, ts->line, "[table %s]: not a watched table (add it to tables in [policy])",
                      ts->ref);
            return false;
        }
        if (ts->mode) {
            if (tg_mode_parse(ts->mode, &t->mode) != 0) {
                set_error(st, ts->line, "[table %s] mode: \"%s\" is not one of: off, observe, enforce",
                          ts->ref, ts->mode);
                return false;
            }
            t->mode_set = true;
        }
        char **cols[2] = {ts->tenant_column ? &t->tenant_col : NULL,
                          ts->workspace_column ? &t->workspace_col : NULL};
        const char *vals[2] = {ts->tenant_column, ts->workspace_column};
        for (int c = 0; c < 2; c++) {
            if (!cols[c])
                continue;
            if (!valid_ident(vals[c])) {
                set_error(st, ts->line, "[table %s]: \"%s\" is not a plain SQL identifier", ts->ref,
                          vals[c]);
                return false;
            }
            free(*cols[c]);
            *cols[c] = strdup(vals[c]);
        }
        if (strcmp(t->tenant_col, t->workspace_col) == 0) {
            set_error(st, ts->line, "[table %s]: workspace_column must differ from tenant_column",
                      ts->ref);
            return false;
        }
    }
    return true;
}

/* ---------------------------------------------------------------- validation */

static bool readable(const char *path)
{
    return access(path, R_OK) == 0;
}

static bool validate(load_state *st)
{
    tg_config *c = st->cfg;

    if (c->client_tls_mode != TG_CLIENT_TLS_DISABLE) {
        if (!c->client_tls_cert_file[0] || !c->client_tls_key_file[0]) {
            set_error(st, line_of(st, "tenantguard", "client_tls_mode"),
                      "client_tls_mode = %s needs client_tls_cert_file and client_tls_key_file",
                      tlsmode_names[c->client_tls_mode]);
            return false;
        }
    }
    const char *files[][2] = {
        {"client_tls_cert_file", c->client_tls_cert_file},
        {"client_tls_key_file", c->client_tls_key_file},
        {"server_tls_ca_file", c->server_tls_ca_file},
        {"server_tls_cert_file", c->server_tls_cert_file},
        {"server_tls_key_file", c->server_tls_key_file},
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        if (files[i][1][0] && !readable(files[i][1])) {
            set_error(st, line_of(st, "tenantguard", files[i][0]), "%s: cannot read \"%s\": %s",
                      files[i][0], files[i][1], strerror(errno));
            return false;
        }
    }
    if (!c->server_tls_cert_file[0] != !c->server_tls_key_file[0]) {
        set_error(st, line_of(st, "tenantguard", "server_tls_cert_file"),
                  "server_tls_cert_file and server_tls_key_file go together");
        return false;
    }
    if (!c->listen_addr[0] && !c->unix_socket_dir[0]) {
        set_error(st, line_of(st, "tenantguard", "listen_addr"),
                  "listen_addr and unix_socket_dir are both empty: nothing to listen on");
        return false;
    }
    if (!c->admin_allow_remote) {
        const char *addrs[][2] = {{"admin_addr", c->admin_addr}, {"metrics_addr", c->metrics_addr}};
        for (int i = 0; i < 2; i++) {
            const char *a = addrs[i][1];
            if (a[0] && strncmp(a, "127.", 4) != 0 && strcmp(a, "::1") != 0 && strcmp(a, "localhost") != 0) {
                set_error(st, line_of(st, "tenantguard", addrs[i][0]),
                          "%s = %s is not a loopback address; set admin_allow_remote = on to allow it",
                          addrs[i][0], a);
                return false;
            }
        }
    }
    if (c->admin_auth_file[0] && !readable(c->admin_auth_file)) {
        set_error(st, line_of(st, "tenantguard", "admin_auth_file"), "admin_auth_file: cannot read \"%s\": %s",
                  c->admin_auth_file, strerror(errno));
        return false;
    }
    if (c->violation_audit && !c->sidecar_dsn[0]) {
        set_error(st, line_of(st, "tenantguard", "violation_audit"),
                  "violation_audit = %s needs sidecar_dsn (the connection it writes with)",
                  vaudit_names[c->violation_audit]);
        return false;
    }
    if (c->violation_audit && !st->pt.audit_table[0]) {
        set_error(st, line_of(st, "tenantguard", "violation_audit"),
                  "violation_audit = %s needs an audit_table (the table it writes into)",
                  vaudit_names[c->violation_audit]);
        return false;
    }
    if (!c->server_host[0]) {
        set_error(st, line_of(st, "tenantguard", "server_host"), "server_host is empty");
        return false;
    }
    return build_policy(st);
}

/* ---------------------------------------------------------------- lifecycle */

static void free_policy(tg_policy *p)
{
    free(p->tenant_schema);
    free(p->tenant_table);
    free(p->tenant_id_col);
    free(p->tenant_ws_col);
    free(p->helper_schema);
    for (int i = 0; i < p->n_tables; i++) {
        free(p->tables[i].schema);
        free(p->tables[i].name);
        free(p->tables[i].tenant_col);
        free(p->tables[i].workspace_col);
    }
    free(p->tables);
}

static void free_config(tg_config *c)
{
    for (int k = 0; k < N_KEYS; k++)
        if (keys[k].type == KT_STRING && !keys[k].in_policy_text)
            free(*field_str(c, keys[k].offset));
    free_policy(&c->policy);
    free(c->path);
    free(c);
}

static void free_state(load_state *st)
{
    for (int k = 0; k < N_KEYS; k++)
        if (keys[k].type == KT_STRING && keys[k].in_policy_text)
            free(*field_str(&st->pt, keys[k].offset));
    for (int i = 0; i < st->n_sections; i++) {
        free(st->sections[i].ref);
        free(st->sections[i].mode);
        free(st->sections[i].tenant_column);
        free(st->sections[i].workspace_column);
    }
    free(st->sections);
}

static bool apply_defaults(load_state *st)
{
    for (int k = 0; k < N_KEYS; k++) {
        st->line = 0;
        if (!apply_key(st, k, keys[k].def))
            return false;   /* a bad default is a bug; the message says which */
    }
    return true;
}

static tg_config *load(load_state *st, const char *name, bool from_string)
{
    st->cfg = calloc(1, sizeof(tg_config));
    if (!st->cfg) {
        set_error(st, 0, "out of memory");
        return NULL;
    }
    st->cfg->refcount = 1;
    st->cfg->path = strdup(name);
    if (!apply_defaults(st))
        goto fail;
    st->line = 0;
    int rc = ini_parse_stream(from_string ? reader_string : reader_file, st, ini_handler_cb, st);
    if (rc < 0) {
        set_error(st, 0, "cannot parse: %s", rc == -2 ? "out of memory" : "read error");
        goto fail;
    }
    if (rc > 0 && !st->failed)
        set_error(st, rc, "syntax error (expected [section] or key = value)");
    if (st->failed || !validate(st))
        goto fail;
    free_state(st);
    return st->cfg;
fail:
    free_state(st);
    free_config(st->cfg);
    return NULL;
}

tg_config *tg_config_load_string(const char *name, const char *text, tg_config_error *err)
{
    load_state st = {.name = name, .err = err, .str_pos = text};
    memset(err, 0, sizeof(*err));
    return load(&st, name, true);
}

tg_config *tg_config_load(const char *path, tg_config_error *err)
{
    load_state st = {.name = path, .err = err};
    memset(err, 0, sizeof(*err));
    st.fp = fopen(path, "r");
    if (!st.fp) {
        snprintf(err->message, sizeof(err->message), "cannot open: %s", strerror(errno));
        return NULL;
    }
    tg_config *c = load(&st, path, false);
    fclose(st.fp);
    return c;
}

tg_config *tg_config_ref(tg_config *cfg)
{
    __atomic_add_fetch(&cfg->refcount, 1, __ATOMIC_RELAXED);
    return cfg;
}

void tg_config_unref(tg_config *cfg)
{
    if (cfg && __atomic_sub_fetch(&cfg->refcount, 1, __ATOMIC_ACQ_REL) == 0)
        free_config(cfg);
}

/* ---------------------------------------------------------------- queries */

const tg_table *tg_policy_find(const tg_policy *p, const char *schema, const char *name)
{
    for (int i = 0; i < p->n_tables; i++)
        if (strcmp(p->tables[i].name, name) == 0 && strcmp(p->tables[i].schema, schema) == 0)
            return &p->tables[i];
    return NULL;
}

const char *tg_mode_name(tg_mode m)
{
    return (unsigned)m < 3 ? mode_names[m] : "?";
}

int tg_mode_parse(const char *s, tg_mode *out)
{
    int e = find_enum(mode_names, s);
    if (e < 0)
        return -1;
    *out = (tg_mode)e;
    return 0;
}

static const char *const type_names[] = {"string", "int", "bool", "enum", "size", "seconds"};

int tg_config_key_count(void)
{
    return N_KEYS;
}

const tg_config_keyinfo *tg_config_key_at(int i)
{
    static tg_config_keyinfo infos[N_KEYS];   /* immutable after first fill */
    if (i < 0 || i >= N_KEYS)
        return NULL;
    tg_config_keyinfo *ki = &infos[i];
    ki->section = keys[i].section;
    ki->name = keys[i].name;
    ki->type = type_names[keys[i].type];
    ki->def = keys[i].def;
    ki->help = keys[i].help;
    ki->reloadable = keys[i].reloadable;
    return ki;
}

void tg_config_key_value(const tg_config *cfg, int i, char *buf, size_t len)
{
    const key_def *kd = &keys[i];
    if (kd->in_policy_text) {
        /* Policy keys live in the built model; show the model's view. */
        const tg_policy *p = &cfg->policy;
        if (strcmp(kd->name, "mode") == 0)
            snprintf(buf, len, "%s", tg_mode_name(p->mode));
        else if (strcmp(kd->name, "tenant_table") == 0)
            snprintf(buf, len, "%s.%s", p->tenant_schema, p->tenant_table);
        else if (strcmp(kd->name, "tenant_id_column") == 0)
            snprintf(buf, len, "%s", p->tenant_id_col);
        else if (strcmp(kd->name, "tenant_workspace_column") == 0)
            snprintf(buf, len, "%s", p->tenant_ws_col);
        else if (strcmp(kd->name, "helper_schema") == 0)
            snprintf(buf, len, "%s", p->helper_schema);
        else if (strcmp(kd->name, "tables") == 0) {
            size_t n = 0;
            buf[0] = '\0';
            for (int t = 0; t < p->n_tables && n < len; t++)
                if (p->tables[t].kind == TG_TABLE_OWNED)
                    n += (size_t)snprintf(buf + n, len - n, "%s%s.%s", n ? "," : "",
                                          p->tables[t].schema, p->tables[t].name);
        } else if (strcmp(kd->name, "audit_table") == 0) {
            buf[0] = '\0';
            for (int t = 0; t < p->n_tables; t++)
                if (p->tables[t].kind == TG_TABLE_AUDIT)
                    snprintf(buf, len, "%s.%s", p->tables[t].schema, p->tables[t].name);
        } else
            snprintf(buf, len, "(per table: SHOW POLICY)");
        return;
    }
    const void *field = (const char *)cfg + kd->offset;
    switch (kd->type) {
    case KT_STRING:
        snprintf(buf, len, "%s", *(char *const *)field);
        break;
    case KT_BOOL:
        snprintf(buf, len, "%s", *(const bool *)field ? "on" : "off");
        break;
    case KT_ENUM:
        snprintf(buf, len, "%s", kd->enum_names[*(const int *)field]);
        break;
    case KT_SIZE:
        snprintf(buf, len, "%lld", (long long)*(const int64_t *)field);
        break;
    case KT_INT:
    case KT_SECONDS:
        snprintf(buf, len, "%d", *(const int *)field);
        break;
    }
}

int tg_config_nonreloadable_changes(const tg_config *old, const tg_config *neu, char *buf, size_t len)
{
    int changed = 0;
    size_t n = 0;
    buf[0] = '\0';
    for (int k = 0; k < N_KEYS; k++) {
        if (keys[k].reloadable)
            continue;
        char a[256], b[256];
        tg_config_key_value(old, k, a, sizeof(a));
        tg_config_key_value(neu, k, b, sizeof(b));
        if (strcmp(a, b) != 0) {
            changed++;
            if (n < len)
                n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? ", " : "", keys[k].name);
        }
    }
    return changed;
}
