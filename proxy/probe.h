/*
 * probe.h -- the login probe (see probe.c) and what it learned.
 */
#ifndef TG_PROBE_H
#define TG_PROBE_H

#include <stdbool.h>

#include "policy/config.h"
#include "rewrite/rewrite.h"

/* A session holds only what its probe found, allocated to size: the
 * session object itself stays small (a few hundred bytes for this part). */
typedef struct probe_table {
    char *schema, *table;              /* which table: matched by name to the policy in force */
    char *names;                       /* the columns, NUL-separated in one allocation */
    char **columns;                    /* pointers into names */
    int n;
} probe_table;

typedef struct sess_probe {
    int result;                        /* which statement's rows are arriving */
    bool got_settings;
    bool failed;
    bool helpers_ok;                   /* helpers_version() matches this policy */
    bool from_cache;                   /* the tables came from the runtime's cache */
    uint64_t cache_key;                /* server + catalog statement */
    rw_catalog catalog;                /* column order of the watched tables */
    rw_catalog_table *entries;         /* catalog.tables points here, indexed for ... */
    uint64_t mapped_generation;        /* ... this policy generation */
    uint64_t base_version;             /* hash of the columns seen */
    probe_table *tables;
    int n, cap;
    /* other relations named like watched tables (rw_env.rel_schemas) */
    char **rel_schemas, **rel_names;
    int n_rels, cap_rels;
    bool rels_known;                   /* the whole list arrived (and fits PROBE_MAX_RELS) */
    bool rels_overflow;                /* more than that, or out of memory on the way */
    char *role;                        /* current_user at login */
    char *cached_role;                 /* the role a cached list was made for */
} sess_probe;

struct tg_session;
struct tg_runtime;

/* The cache of table layouts per server and database (probe.c). */
typedef struct probe_cache_info {
    int entries;
    size_t bytes;
    uint64_t hits, misses, drops;
} probe_cache_info;
void probe_cache_forget(struct tg_runtime *rt, const char *database);   /* a layout guard failed */
void probe_cache_clear(struct tg_runtime *rt);                          /* and free it */
void probe_cache_stats(const struct tg_runtime *rt, probe_cache_info *out);

bool probe_needed(const tg_config *cfg);
void probe_begin(struct tg_session *s);
void probe_catalog_set(sess_probe *p, const char *schema, const char *table, const char *cols);
/* One relation named like a watched table that is not one; false out of memory. */
bool probe_rel_add(sess_probe *p, const char *schema, const char *name);
/* The catalog with table indexes of `policy` (the one in force, generation
 * gen): tables the probe did not see are left out. */
const rw_catalog *probe_catalog(sess_probe *p, const tg_policy *policy, uint64_t gen);
void probe_free(sess_probe *p);

#endif
