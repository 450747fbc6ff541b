/*
 * rw_env.c -- what a table name means in a session: the environment hash,
 * search_path values, and resolving a (schema, name) to a watched table.
 *
 * Resolution follows the server: a qualified name is exactly that table; an
 * unqualified one is looked up through search_path, where pg_temp is searched
 * first unless the path lists it elsewhere. We only know the session's temp
 * relations named like watched tables and the path itself, which is enough
 * for the one decision we make: is it the watched table? When the path is
 * unknown, the answer is yes -- enforcing on a look-alike can fail a
 * statement, never let a write through. A temp shadow answers no, and the
 * caller pins the name as pg_temp.name, so a temp table that vanished
 * without the proxy noticing makes the statement fail instead of silently
 * writing the watched table.
 */
#include "config.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rewrite/rw_internal.h"

/* ------------------------------------------------------------- hashing */

/* SipHash-2-4 (Aumasson & Bernstein) with a per-process random key: the
 * environment hash is part of the decision cache key, and the search_path is
 * the client's to choose -- with a known hash function a client could pick
 * two paths with equal hashes and have a decision made under one served
 * under the other. */
#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);                                  \
        v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                                                     \
        v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                                                     \
        v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);                                  \
    } while (0)

uint64_t rw_siphash(const uint64_t key[2], const void *data, size_t n)
{
    const unsigned char *in = data;
    uint64_t v0 = 0x736f6d6570736575ULL ^ key[0], v1 = 0x646f72616e646f6dULL ^ key[1];
    uint64_t v2 = 0x6c7967656e657261ULL ^ key[0], v3 = 0x7465646279746573ULL ^ key[1];
    uint64_t b = (uint64_t)n << 56;
    size_t full = n & ~(size_t)7;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = 0;
        for (int k = 7; k >= 0; k--)
            m = (m << 8) | in[i + (size_t)k];
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    for (size_t k = 0; k < (n & 7); k++)
        b |= (uint64_t)in[full + k] << (8 * k);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static pthread_once_t secret_once = PTHREAD_ONCE_INIT;
static uint64_t secret_key[2];

static void secret_init(void)
{
    uint64_t k[2] = {0, 0};
    FILE *f = fopen("/dev/urandom", "rb");
    if (f) {
        if (fread(k, sizeof(k), 1, f) != 1)
            k[0] = k[1] = 0;
        fclose(f);
    }
    if (k[0] == 0 && k[1] == 0) {
        /* No entropy source: still different per process and boot. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        k[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid();
        k[1] = (uint64_t)ts.tv_sec * 0xc2b2ae3d27d4eb4fULL ^ (uint64_t)(uintptr_t)&k;
    }
    secret_key[0] = k[0];
    secret_key[1] = k[1];
}

void rw_secret(uint64_t key[2])
{
    pthread_once(&secret_once, secret_init);
    key[0] = secret_key[0];
    key[1] = secret_key[1];
}

/* The environment as bytes: flags, then each path element and temp relation
 * with its length in front, so no two environments serialize alike. */
static size_t env_serialize(const rw_env *env, unsigned char *out, size_t cap)
{
    size_t n = 0;
#define PUT(p, l)                                                                                  \
    do {                                                                                           \
        if (n + (l) <= cap)                                                                        \
            memcpy(out + n, (p), (l));                                                             \
        n += (l);                                                                                  \
    } while (0)
    unsigned char flags = (unsigned char)((env->path_known ? 1 : 0) | (env->std_strings ? 2 : 0) |
                                          (env->client_only_encoding ? 4 : 0) | (env->rels_known ? 8 : 0));
    PUT(&flags, 1);
    for (int pass = 0; pass < 4; pass++) {
        const char *const *list = pass == 0   ? env->path
                                  : pass == 1 ? env->temp_rels
                                  : pass == 2 ? env->rel_schemas
                                              : env->rel_names;
        int cnt = pass == 0 ? (env->path_known ? env->n_path : 0)
                  : pass == 1 ? env->n_temp_rels
                              : (env->rels_known ? env->n_rels : 0);
        uint32_t c32 = (uint32_t)cnt;
        PUT(&c32, 4);
        for (int i = 0; i < cnt; i++) {
            const char *s = list[i] ? list[i] : "";
            uint32_t l = (uint32_t)strlen(s);
            PUT(&l, 4);
            PUT(s, l);
        }
    }
#undef PUT
    return n;
}

uint64_t rw_env_hash(const rw_env *env)
{
    if (!env)
        return 1;
    uint64_t key[2];
    rw_secret(key);
    unsigned char small[1024];
    size_t n = env_serialize(env, small, sizeof(small));
    uint64_t h;
    if (n <= sizeof(small)) {
        h = rw_siphash(key, small, n);
    } else {
        unsigned char *big = malloc(n);
        if (!big)
            return 0;   /* 0 is never a real hash: such an env is never served from the cache */
        env_serialize(env, big, n);
        h = rw_siphash(key, big, n);
        free(big);
    }
    return h > 1 ? h : h + 2;
}

bool rw_name_watched(const rw_policy *p, const char *name)
{
    for (int i = 0; i < p->n_tables; i++)
        if (strcmp(p->tables[i].name, name) == 0)
            return true;
    return false;
}

bool rw_schema_watched(const rw_policy *p, const char *schema)
{
    for (int i = 0; i < p->n_tables; i++)
        if (strcmp(p->tables[i].schema, schema) == 0)
            return true;
    return false;
}

static bool in_list(const char *const *list, int n, const char *s)
{
    for (int i = 0; i < n; i++)
        if (list[i] && strcmp(list[i], s) == 0)
            return true;
    return false;
}

static int table_in(const rw_policy *p, const char *schema, const char *name)
{
    for (int i = 0; i < p->n_tables; i++)
        if (strcmp(p->tables[i].name, name) == 0 && strcmp(p->tables[i].schema, schema) == 0)
            return i;
    return -1;
}

static int first_named(const rw_policy *p, const char *name)
{
    for (int i = 0; i < p->n_tables; i++)
        if (strcmp(p->tables[i].name, name) == 0)
            return i;
    return -1;
}

static bool rel_in(const rw_env *env, const char *schema, const char *name)
{
    for (int i = 0; i < env->n_rels; i++)
        if (strcmp(env->rel_names[i], name) == 0 && strcmp(env->rel_schemas[i], schema) == 0)
            return true;
    return false;
}

int rw_resolve(const rw_policy *p, const rw_env *env, const char *schema, const char *name, const char **pin)
{
    *pin = NULL;
    if (!name)
        return -1;
    if (schema)
        return table_in(p, schema, name);
    if (!rw_name_watched(p, name))
        return -1;
    if (!env || !env->path_known)
        return first_named(p, name);   /* unknown path: the watched table */
    bool temp = in_list(env->temp_rels, env->n_temp_rels, name);
    if (temp && !in_list(env->path, env->n_path, "pg_temp")) {
        *pin = "pg_temp";         /* pg_temp is implicitly searched first */
        return -1;
    }
    for (int k = 0; k < env->n_path; k++) {
        const char *s = env->path[k];
        if (!s)
            continue;
        if (strcmp(s, "pg_temp") == 0) {
            if (temp) {
                *pin = "pg_temp";
                return -1;
            }
            continue;
        }
        int t = table_in(p, s, name);
        if (t >= 0)
            return t;
        if (env->rels_known && rel_in(env, s, name)) {
            *pin = s;             /* a look-alike: write it by its full name */
            return -1;
        }
    }
    /* Nothing of that name on the path, as far as the login saw the catalog
     * (or the login could not list the look-alikes: then none are pinned and
     * every one counts as nowhere): on the server such a write fails (42P01)
     * or reaches a look-alike -- unless something the proxy cannot see (a
     * function, a view) has changed the path, and then it is the watched
     * table's. Taken for it, as with an unknown path: at worst a statement
     * fails, never does a write pass unchecked. */
    return first_named(p, name);
}

/* ------------------------------------------------------------ search_path */

#define RW_NAMEDATALEN 64

/* PostgreSQL's scanner_isspace(): no vertical tab -- "other\v" is a schema
 * name of its own there. */
static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

void rw_split_path_free(char **names, int n)
{
    if (!names)
        return;
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* One element at *sp: "quoted" (with "" for a quote) or unquoted (folded to
 * lower case). Truncated as the server truncates identifiers. */
static char *path_element(const char **sp)
{
    const char *s = *sp;
    size_t cap = strlen(s) + 1, n = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    if (*s == '"') {
        s++;
        for (;;) {
            if (!*s) {
                free(out);
                return NULL;            /* unterminated */
            }
            if (*s == '"') {
                if (s[1] != '"')
                    break;
                s++;
            }
            out[n++] = *s++;
        }
        s++;
        if (n == 0) {
            free(out);
            return NULL;                /* "" is not a name */
        }
    } else {
        while (*s && *s != ',' && !is_space(*s)) {
            char c = *s++;
            out[n++] = (c >= 'A' && c <= 'Z') ? (char)(c + ('a' - 'A')) : c;
        }
        if (n == 0) {
            free(out);
            return NULL;
        }
    }
    if (n >= RW_NAMEDATALEN)
        n = RW_NAMEDATALEN - 1;
    out[n] = '\0';
    *sp = s;
    return out;
}

char **rw_split_path(const char *value, int *n_out)
{
    *n_out = 0;
    const char *s = value ? value : "";
    size_t max = 1;
    for (const char *c = s; *c; c++)
        max += *c == ',';
    char **names = calloc(max, sizeof(*names));
    if (!names)
        return NULL;
    int n = 0;
    while (is_space(*s))
        s++;
    if (!*s)
        return names;                   /* '' : an empty path */
    for (;;) {
        char *name = path_element(&s);
        if (!name || (size_t)n >= max) {
            free(name);
            rw_split_path_free(names, n);
            return NULL;
        }
        names[n++] = name;
        while (is_space(*s))
            s++;
        if (*s == ',') {
            s++;
            while (is_space(*s))
                s++;
            continue;
        }
        if (*s == '\0')
            break;
        rw_split_path_free(names, n);
        return NULL;
    }
    *n_out = n;
    return names;
}
