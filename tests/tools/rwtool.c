/*
 * rwtool -- ask rewrite/ about one statement text and print its decision as
 * JSON. The integration tests use it to get the rewritten SQL that they then
 * run straight on PostgreSQL; operators can use it to see what tenantguard
 * would do with a statement.
 *
 *   rwtool [options] [FILE]          SQL from FILE, or stdin ("-" or none)
 *   rwtool --render-helpers [-c INI] the helper SQL (sql/tenantguard.sql) rendered for the policy
 *   rwtool --selftest                rw_selftest()
 *
 * Options:
 *   -c, --config INI          policy from a config file (default: built-in, mode = enforce)
 *   --mode off|observe|enforce        every table in this mode
 *   --table-mode NAME=MODE            one table (by name) in this mode
 *   --path "a,b"              search_path known to be these schemas ("" = empty); default unknown
 *   --temp NAME               a temp table of the session named like a watched table (repeatable)
 *   --rel SCHEMA.NAME         another relation named like a watched table (repeatable); with it or
 *   --rels-known              the login's catalog of such relations is known (rw_env.rels_known)
 *   --std-strings on|off      standard_conforming_strings (default on)
 *   --client-only-encoding    the client encoding is SJIS/BIG5/GBK/UHC/GB18030
 *   --extended                a Parse text (default: a simple Query)
 *   --catalog NAME=c1,c2,...  the columns of a watched table in attnum order (repeatable)
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "policy/config.h"
#include "policy/helpers_sql.h"
#include "rewrite/rewrite.h"

#define MAX_LIST 64

static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    size_t r;
    while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n - 1 == 0) {
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger) {
                free(buf);
                return NULL;
            }
            buf = bigger;
        }
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int table_index(const tg_policy *p, const char *name)
{
    for (int i = 0; i < p->n_tables; i++)
        if (strcmp(p->tables[i].name, name) == 0)
            return i;
    return -1;
}

static json_t *decision_json(const tg_policy *pol, const rw_decision *d)
{
    json_t *o = json_object();
    json_object_set_new(o, "action", json_string(rw_action_name(d->action)));
    json_object_set_new(o, "text", d->text ? json_stringn(d->text, d->len) : json_null());
    json_object_set_new(o, "sqlstate", d->sqlstate ? json_string(d->sqlstate) : json_null());
    json_object_set_new(o, "message", d->message ? json_string(d->message) : json_null());
    json_object_set_new(o, "marker", d->marker ? json_string(d->marker) : json_null());
    json_object_set_new(o, "n_statements", json_integer(d->n_statements));
    json_t *flags = json_array();
    static const struct { unsigned bit; const char *name; } fl[] = {
        {RW_F_PREFILTERED, "prefiltered"}, {RW_F_PARSE_FAILED, "parse_failed"},
        {RW_F_WATCHED_WRITE, "watched_write"}, {RW_F_CACHED, "cached"}, {RW_F_OBSERVED, "observed"},
        {RW_F_PINNED, "pinned"}};
    for (size_t i = 0; i < sizeof(fl) / sizeof(fl[0]); i++)
        if (d->flags & fl[i].bit)
            json_array_append_new(flags, json_string(fl[i].name));
    json_object_set_new(o, "flags", flags);
    json_t *ev = json_array();
    for (int i = 0; i < d->n_events; i++) {
        const rw_event *e = &d->events[i];
        json_t *x = json_object();
        json_object_set_new(x, "table", e->table >= 0 ? json_string(pol->tables[e->table].name) : json_null());
        json_object_set_new(x, "rule", json_string(rw_rule_name(e->rule)));
        json_object_set_new(x, "kind", json_string(rw_event_kind_name(e->kind)));
        json_array_append_new(ev, x);
    }
    json_object_set_new(o, "events", ev);
    json_t *fx = json_array();
    for (int i = 0; i < d->n_effects; i++) {
        const rw_effect *e = &d->effects[i];
        json_t *x = json_object();
        json_object_set_new(x, "kind", json_string(rw_effect_kind_name(e->kind)));
        json_object_set_new(x, "stmt", json_integer(e->stmt));
        json_object_set_new(x, "arg", e->arg ? json_string(e->arg) : json_null());
        json_object_set_new(x, "writes_watched", json_boolean(e->writes_watched));
        json_object_set_new(x, "local", json_boolean(e->local));
        json_array_append_new(fx, x);
    }
    json_object_set_new(o, "effects", fx);
    return o;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: rwtool [-c INI] [--mode M] [--table-mode NAME=M] [--path LIST] [--temp NAME]\n"
                 "              [--rel SCHEMA.NAME] [--rels-known]\n"
                 "              [--std-strings on|off] [--client-only-encoding] [--extended]\n"
                 "              [--catalog NAME=c1,c2] [FILE|-]\n"
                 "       rwtool --render-helpers [-c INI]\n"
                 "       rwtool --selftest\n");
}

int main(int argc, char **argv)
{
    enum { O_MODE = 256, O_TMODE, O_PATH, O_TEMP, O_STD, O_COE, O_EXT, O_CAT, O_RENDER, O_SELFTEST, O_REL,
           O_RELS_KNOWN };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"mode", required_argument, NULL, O_MODE},
        {"table-mode", required_argument, NULL, O_TMODE}, {"path", required_argument, NULL, O_PATH},
        {"temp", required_argument, NULL, O_TEMP}, {"std-strings", required_argument, NULL, O_STD},
        {"client-only-encoding", no_argument, NULL, O_COE}, {"extended", no_argument, NULL, O_EXT},
        {"catalog", required_argument, NULL, O_CAT}, {"render-helpers", no_argument, NULL, O_RENDER},
        {"selftest", no_argument, NULL, O_SELFTEST}, {"rel", required_argument, NULL, O_REL},
        {"rels-known", no_argument, NULL, O_RELS_KNOWN}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    const char *ini = NULL, *mode = NULL, *path = NULL;
    const char *tmodes[MAX_LIST], *temps[MAX_LIST], *cats[MAX_LIST], *rel_s[MAX_LIST], *rel_n[MAX_LIST];
    char rel_buf[MAX_LIST][130];
    int n_tmodes = 0, n_temps = 0, n_cats = 0, n_rels = 0;
    bool std = true, coe = false, render = false, rels_known = false;
    rw_proto proto = RW_PROTO_SIMPLE;
    int ch;
    while ((ch = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': ini = optarg; break;
        case O_MODE: mode = optarg; break;
        case O_TMODE: if (n_tmodes < MAX_LIST) tmodes[n_tmodes++] = optarg; break;
        case O_PATH: path = optarg; break;
        case O_TEMP: if (n_temps < MAX_LIST) temps[n_temps++] = optarg; break;
        case O_STD: std = strcmp(optarg, "off") != 0; break;
        case O_COE: coe = true; break;
        case O_EXT: proto = RW_PROTO_EXTENDED; break;
        case O_CAT: if (n_cats < MAX_LIST) cats[n_cats++] = optarg; break;
        case O_RELS_KNOWN: rels_known = true; break;
        case O_REL: {
            char *dot = strchr(optarg, '.');
            if (!dot || n_rels == MAX_LIST || strlen(optarg) >= sizeof(rel_buf[0])) {
                fprintf(stderr, "rwtool: bad --rel %s (SCHEMA.NAME)\n", optarg);
                return 64;
            }
            strcpy(rel_buf[n_rels], optarg);
            rel_buf[n_rels][dot - optarg] = '\0';
            rel_s[n_rels] = rel_buf[n_rels];
            rel_n[n_rels] = rel_buf[n_rels] + (dot - optarg) + 1;
            n_rels++;
            rels_known = true;
            break;
        }
        case O_RENDER: render = true; break;
        case O_SELFTEST: {
            const char *err = rw_selftest();
            printf("%s\n", err ? err : "ok");
            return err ? 1 : 0;
        }
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 64;
        }
    }
    tg_config_error cerr;
    tg_config *cfg = ini ? tg_config_load(ini, &cerr)
                         : tg_config_load_string("rwtool", "[tenantguard]\nmode = enforce\n", &cerr);
    if (!cfg) {
        fprintf(stderr, "rwtool: %s:%d: %s\n", ini ? ini : "defaults", cerr.line, cerr.message);
        return 1;
    }
    const tg_policy *pol = &cfg->policy;
    if (render) {
        char *sql = tg_helpers_sql_render(pol);
        fputs(sql ? sql : "", stdout);
        free(sql);
        tg_config_unref(cfg);
        return sql ? 0 : 1;
    }

    tg_mode *modes = calloc((size_t)pol->n_tables + 1, sizeof(*modes));
    for (int i = 0; i < pol->n_tables; i++) {
        modes[i] = pol->tables[i].mode;
        if (mode && tg_mode_parse(mode, &modes[i]) != 0) {
            fprintf(stderr, "rwtool: bad --mode %s\n", mode);
            return 64;
        }
    }
    for (int k = 0; k < n_tmodes; k++) {
        char name[128];
        const char *eq = strchr(tmodes[k], '=');
        if (!eq || (size_t)(eq - tmodes[k]) >= sizeof(name)) {
            fprintf(stderr, "rwtool: bad --table-mode %s\n", tmodes[k]);
            return 64;
        }
        memcpy(name, tmodes[k], (size_t)(eq - tmodes[k]));
        name[eq - tmodes[k]] = '\0';
        int t = table_index(pol, name);
        if (t < 0 || tg_mode_parse(eq + 1, &modes[t]) != 0) {
            fprintf(stderr, "rwtool: bad --table-mode %s\n", tmodes[k]);
            return 64;
        }
    }
    rw_policy *rp = rw_policy_new(pol, modes, 1);
    if (!rp) {
        fprintf(stderr, "rwtool: rw_policy_new failed\n");
        return 1;
    }

    rw_env env;
    memset(&env, 0, sizeof(env));
    char **path_names = NULL;
    int n_path = 0;
    if (path) {
        path_names = rw_split_path(path, &n_path);
        if (!path_names) {
            fprintf(stderr, "rwtool: bad --path %s\n", path);
            return 64;
        }
        env.path_known = true;
        env.path = (const char *const *)path_names;
        env.n_path = n_path;
    }
    env.temp_rels = temps;
    env.n_temp_rels = n_temps;
    env.rel_schemas = rel_s;
    env.rel_names = rel_n;
    env.n_rels = n_rels;
    env.rels_known = rels_known;
    env.std_strings = std;
    env.client_only_encoding = coe;
    env.hash = rw_env_hash(&env);

    rw_catalog_table ct[MAX_LIST];
    char **cat_cols[MAX_LIST];
    for (int k = 0; k < n_cats; k++) {
        char name[128];
        const char *eq = strchr(cats[k], '=');
        if (!eq || (size_t)(eq - cats[k]) >= sizeof(name)) {
            fprintf(stderr, "rwtool: bad --catalog %s\n", cats[k]);
            return 64;
        }
        memcpy(name, cats[k], (size_t)(eq - cats[k]));
        name[eq - cats[k]] = '\0';
        int n = 0;
        cat_cols[k] = rw_split_path(eq + 1, &n);
        ct[k].table = table_index(pol, name);
        ct[k].columns = (const char *const *)cat_cols[k];
        ct[k].n_columns = n;
        if (ct[k].table < 0 || !cat_cols[k]) {
            fprintf(stderr, "rwtool: bad --catalog %s\n", cats[k]);
            return 64;
        }
    }
    rw_catalog cat = {ct, n_cats, 1};

    const char *file = optind < argc ? argv[optind] : "-";
    FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "rb");
    if (!f) {
        perror(file);
        return 1;
    }
    size_t len = 0;
    char *sql = read_all(f, &len);
    if (f != stdin)
        fclose(f);
    if (!sql)
        return 1;

    rw_decision d = rw_decide(NULL, rp, &env, n_cats ? &cat : NULL, proto, sql, len);
    json_t *o = decision_json(pol, &d);
    char *s = json_dumps(o, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    printf("%s\n", s);
    free(s);
    json_decref(o);
    rw_decision_release(&d);

    free(sql);
    for (int k = 0; k < n_cats; k++)
        rw_split_path_free(cat_cols[k], ct[k].n_columns);
    rw_split_path_free(path_names, n_path);
    rw_policy_free(rp);
    free(modes);
    tg_config_unref(cfg);
    return 0;
}
