/*
 * sessenv.c -- the session environment for name resolution (see sessenv.h).
 */
#include "config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/pgproto.h"
#include "proxy/sessenv.h"

/* ---------------------------------------------------------------- paths */

static void path_clear(sessenv_path *p)
{
    for (int i = 0; i < p->n; i++)
        free(p->schemas[i]);
    p->n = 0;
    p->known = false;
}

static void path_copy(sessenv_path *dst, const sessenv_path *src)
{
    if (dst == src)
        return;
    path_clear(dst);
    dst->known = src->known;
    for (int i = 0; i < src->n; i++) {
        dst->schemas[i] = strdup(src->schemas[i]);
        if (!dst->schemas[i]) {   /* out of memory: unknown is the safe answer */
            path_clear(dst);
            return;
        }
        dst->n = i + 1;
    }
}

static void path_unknown(sessenv_path *p)
{
    path_clear(p);
}
bool sessenv_parse_path(const char *value, sessenv_path *p)
{
    path_clear(p);
    if (!value)
        return false;
    int n = 0;
    char **names = rw_split_path(value, &n);
    if (!names || n > SESSENV_MAX_PATH) {
        if (names)
            rw_split_path_free(names, n);
        return false;
    }
    for (int i = 0; i < n; i++) {
        p->schemas[i] = names[i];   /* take the strings */
        names[i] = NULL;
    }
    p->n = n;
    p->known = true;
    rw_split_path_free(names, n);
    return true;
}

/* ---------------------------------------------------------------- lifecycle */

void sessenv_init(sessenv *e, const char *login_user)
{
    memset(e, 0, sizeof(*e));
    e->user = login_user ? strdup(login_user) : NULL;
    e->std_strings = true;
    e->dirty = true;
}

static void prepared_free_one(sessenv_prepared *p)
{
    for (int i = 0; i < p->n_effects; i++)
        free((char *)p->effects[i].arg);
    free(p->effects);
    free(p->name);
    free(p->text);
    free(p);
}

static void prepared_free_list(sessenv_prepared *p)
{
    while (p) {
        sessenv_prepared *next = p->next;
        prepared_free_one(p);
        p = next;
    }
}

static void portals_free(sessenv *e)
{
    sessenv_portal *p = e->portals;
    while (p) {
        sessenv_portal *next = p->next;
        free(p->portal);
        free(p->statement);
        free(p);
        p = next;
    }
    e->portals = NULL;
    e->n_portals = 0;
}

static void temps_clear(sessenv *e)
{
    for (int i = 0; i < e->n_temp; i++)
        free(e->temp_rels[i]);
    e->n_temp = 0;
    e->temp_overflow = false;
}

void sessenv_free(sessenv *e)
{
    path_clear(&e->login);
    path_clear(&e->committed);
    path_clear(&e->session_in_txn);
    path_clear(&e->effective);
    temps_clear(e);
    prepared_free_list(e->prepared);
    prepared_free_list(e->prepared_sql);
    portals_free(e);
    free(e->user);
    memset(e, 0, sizeof(*e));
}

void sessenv_set_login_path(sessenv *e, const char *value)
{
    sessenv_parse_path(value, &e->login);
    path_copy(&e->committed, &e->login);
    path_copy(&e->session_in_txn, &e->login);
    path_copy(&e->effective, &e->login);
    e->dirty = true;
}

/* ---------------------------------------------------------------- effects */

static void set_session_path(sessenv *e, const sessenv_path *p)
{
    path_copy(&e->session_in_txn, p);
    path_copy(&e->effective, p);
    e->txn_changed = true;
}

static void temp_add(sessenv *e, const char *name, bool on_commit_drop)
{
    uint8_t flags = SESSENV_TEMP_NEW | (on_commit_drop ? SESSENV_TEMP_ON_COMMIT_DROP : 0);
    for (int i = 0; i < e->n_temp; i++)
        if (strcmp(e->temp_rels[i], name) == 0) {
            e->temp_flags[i] = flags;
            return;
        }
    if (e->n_temp == SESSENV_MAX_TEMP) {
        e->temp_overflow = true;
        return;
    }
    char *d = strdup(name);
    if (!d) {
        e->temp_overflow = true;
        return;
    }
    e->temp_flags[e->n_temp] = flags;
    e->temp_rels[e->n_temp++] = d;
}

static void temp_remove(sessenv *e, const char *name)
{
    const char *n = strncmp(name, "pg_temp.", 8) == 0 ? name + 8 : name;
    for (int i = 0; i < e->n_temp; i++) {
        if (strcmp(e->temp_rels[i], n) == 0) {
            free(e->temp_rels[i]);
            e->temp_rels[i] = e->temp_rels[--e->n_temp];
            e->temp_flags[i] = e->temp_flags[e->n_temp];
            return;
        }
    }
}

void sessenv_apply(sessenv *e, const rw_effect *fx)
{
    sessenv_path p = {0};
    e->dirty = true;
    switch (fx->kind) {
    case RW_FX_SET_PATH:
        sessenv_parse_path(fx->arg, &p);   /* unparseable -> unknown */
        set_session_path(e, &p);
        path_clear(&p);
        break;
    case RW_FX_SET_LOCAL_PATH:
        sessenv_parse_path(fx->arg, &p);
        path_copy(&e->effective, &p);
        e->txn_changed = true;
        path_clear(&p);
        break;
    case RW_FX_RESET_PATH:
        if (fx->local) {           /* SET LOCAL search_path TO DEFAULT */
            path_copy(&e->effective, &e->login);
            e->txn_changed = true;
        } else {
            set_session_path(e, &e->login);
        }
        break;
    case RW_FX_SAVEPOINT:
    case RW_FX_RELEASE:
        break;                     /* nothing to undo */
    case RW_FX_ROLLBACK_TO:
        sessenv_savepoint_rollback(e);
        break;
    case RW_FX_PATH_UNKNOWN:
        path_unknown(&e->session_in_txn);
        path_unknown(&e->effective);
        e->txn_changed = true;
        break;
    case RW_FX_CREATE_TEMP:
        if (fx->arg)
            temp_add(e, fx->arg, fx->local);
        break;
    case RW_FX_DROP_REL:
        if (fx->arg)
            temp_remove(e, fx->arg);
        break;
    case RW_FX_DISCARD_ALL:
        set_session_path(e, &e->login);
        temps_clear(e);
        prepared_free_list(e->prepared);
        prepared_free_list(e->prepared_sql);
        e->prepared = e->prepared_sql = NULL;
        portals_free(e);
        break;
    case RW_FX_DISCARD_TEMP:
        temps_clear(e);
        break;
    case RW_FX_PREPARE:
        /* recorded by the caller, which knows the generation and mode */
        break;
    case RW_FX_DEALLOCATE:
        sessenv_prepared_remove(e, true, fx->arg);
        break;
    default:
        break;
    }
}

/* The transaction ended: keep or undo what it changed. */
static void txn_end(sessenv *e, bool committed)
{
    if (e->txn_changed) {
        if (committed)
            path_copy(&e->committed, &e->session_in_txn);
        path_copy(&e->session_in_txn, &e->committed);
        path_copy(&e->effective, &e->committed);
        e->dirty = true;
    }
    for (int i = 0; i < e->n_temp;) {
        bool gone = committed ? (e->temp_flags[i] & SESSENV_TEMP_ON_COMMIT_DROP)
                              : (e->temp_flags[i] & SESSENV_TEMP_NEW);
        if (gone) {
            free(e->temp_rels[i]);
            e->temp_rels[i] = e->temp_rels[--e->n_temp];
            e->temp_flags[i] = e->temp_flags[e->n_temp];
            e->dirty = true;
            continue;
        }
        e->temp_flags[i] &= (uint8_t)~SESSENV_TEMP_NEW;
        i++;
    }
    e->txn_changed = false;
}

void sessenv_command_tag(sessenv *e, const char *tag)
{
    if (tag[0] != 'C' && tag[0] != 'R' && tag[0] != 'P')
        return;   /* SELECT, INSERT, ...: once per statement, so the cheap test first */
    if (strcmp(tag, "COMMIT") == 0)
        txn_end(e, true);
    else if (strcmp(tag, "ROLLBACK") == 0)
        txn_end(e, false);
    else if (strcmp(tag, "PREPARE TRANSACTION") == 0) {
        /* The transaction is gone from this session: what it changed, we
         * cannot be sure of. */
        txn_end(e, false);
        path_unknown(&e->committed);
        path_unknown(&e->session_in_txn);
        path_unknown(&e->effective);
    }
}

void sessenv_ready(sessenv *e, char status, bool request_failed)
{
    if (status == 'T' || status == 'E') {
        e->in_block = true;
        return;
    }
    /* 'I'. An explicit block ends with a COMMIT/ROLLBACK tag (handled
     * there); what is still open now was an implicit transaction. */
    bool was_block = e->in_block;
    e->in_block = false;
    if (was_block && e->txn_changed) {
        /* A block ended without a tag we saw: do not guess. */
        txn_end(e, false);
        path_unknown(&e->committed);
        path_unknown(&e->session_in_txn);
        path_unknown(&e->effective);
        return;
    }
    txn_end(e, !request_failed);
}

void sessenv_pending(sessenv *e, int delta)
{
    e->pending_changes += delta;
    if (e->pending_changes < 0)
        e->pending_changes = 0;
    e->dirty = true;
}

void sessenv_savepoint_rollback(sessenv *e)
{
    if (!e->txn_changed)
        return;
    /* We do not track savepoints: what the path is now is unknown. */
    path_unknown(&e->session_in_txn);
    path_unknown(&e->effective);
    e->dirty = true;
}

void sessenv_client_encoding(sessenv *e, const char *encoding)
{
    static const char *const client_only[] = {"SJIS", "SHIFT_JIS", "BIG5", "GBK", "UHC", "GB18030",
                                              "WIN932", "WIN936", "WIN949", "WIN950", "JOHAB", NULL};
    bool co = false;
    for (int i = 0; client_only[i]; i++)
        if (strcasecmp(encoding, client_only[i]) == 0)
            co = true;
    if (co != e->client_only_encoding) {
        e->client_only_encoding = co;
        e->dirty = true;
    }
}

void sessenv_std_strings(sessenv *e, bool on)
{
    if (e->std_strings != on) {
        e->std_strings = on;
        e->dirty = true;
    }
}

/* ---------------------------------------------------------------- prepared */

/* PostgreSQL keeps SQL PREPAREd and protocol-level named statements in one
 * table, and keys it, like its portals, by the first NAMEDATALEN - 1 bytes of
 * a name: "st" from PREPARE is the statement a Bind of "st" runs, and a long
 * name is the statement of its first 63 bytes. The lists here follow that;
 * only the unnamed statement ("") is the protocol's alone. */
static bool same_name(const char *a, const char *b)
{
    return strncmp(a, b, PG_NAME_MAX) == 0;
}

static bool remove_from(sessenv_prepared **pp, const char *name)
{
    for (; *pp; pp = &(*pp)->next) {
        if (same_name((*pp)->name, name)) {
            sessenv_prepared *p = *pp;
            *pp = p->next;
            prepared_free_one(p);
            return true;
        }
    }
    return false;
}

void sessenv_prepared_add(sessenv *e, bool sql_level, const char *name, char *text, bool rewritten,
                          uint64_t generation, uint64_t env_hash, rw_effect *effects, int n_effects)
{
    sessenv_prepared **head = sql_level ? &e->prepared_sql : &e->prepared;
    for (sessenv_prepared *p = *head; p; p = p->next) {
        if (!same_name(p->name, name))
            continue;
        /* A statement replaced in its own list (the unnamed one of a driver
         * that parses before each execution): keep the entry and its name,
         * change what it holds -- as remove + add would, without the
         * allocations. */
        for (int i = 0; i < p->n_effects; i++)
            free((char *)p->effects[i].arg);
        free(p->effects);
        free(p->text);
        p->text = text;
        p->rewritten = rewritten;
        p->effects = effects;
        p->n_effects = n_effects;
        p->generation = generation;
        p->env_hash = env_hash;
        return;
    }
    sessenv_prepared_remove(e, sql_level, name);
    sessenv_prepared *p = calloc(1, sizeof(*p));
    if (!p || !(p->name = strndup(name, PG_NAME_MAX))) {
        free(p);
        free(text);
        for (int i = 0; i < n_effects; i++)
            free((char *)effects[i].arg);
        free(effects);
        return;
    }
    p->text = text;
    p->rewritten = rewritten;
    p->effects = effects;
    p->n_effects = n_effects;
    p->generation = generation;
    p->env_hash = env_hash;
    p->next = *head;
    *head = p;
}

/* DEALLOCATE ALL (name NULL) drops every named statement, not the unnamed one. */
void sessenv_prepared_remove(sessenv *e, bool sql_level, const char *name)
{
    if (!name) {
        prepared_free_list(e->prepared_sql);
        e->prepared_sql = NULL;
        sessenv_prepared *unnamed = NULL, *p = e->prepared, *next;
        for (; p; p = next) {
            next = p->next;
            if (!p->name[0] && !unnamed) {
                unnamed = p;
                p->next = NULL;
            } else {
                prepared_free_one(p);
            }
        }
        e->prepared = unnamed;
        return;
    }
    if (!remove_from(sql_level ? &e->prepared_sql : &e->prepared, name) && name[0])
        remove_from(sql_level ? &e->prepared : &e->prepared_sql, name);
}

sessenv_prepared *sessenv_prepared_find(sessenv *e, bool sql_level, const char *name)
{
    for (sessenv_prepared *p = sql_level ? e->prepared_sql : e->prepared; p; p = p->next)
        if (same_name(p->name, name))
            return p;
    if (!name[0])
        return NULL;
    for (sessenv_prepared *p = sql_level ? e->prepared : e->prepared_sql; p; p = p->next)
        if (same_name(p->name, name))
            return p;
    return NULL;
}

/* ---------------------------------------------------------------- portals */

#define SESSENV_MAX_PORTALS 256   /* beyond this the oldest is forgotten */

void sessenv_portal_bind(sessenv *e, const char *portal, const char *statement)
{
    sessenv_portal **pp = &e->portals;
    for (; *pp; pp = &(*pp)->next) {
        if (same_name((*pp)->portal, portal)) {
            if (same_name((*pp)->statement, statement))
                return;   /* the common case: the same portal runs the same statement again */
            char *st = strndup(statement, PG_NAME_MAX);
            if (st) {
                free((*pp)->statement);
                (*pp)->statement = st;
            }
            return;
        }
    }
    sessenv_portal *p = calloc(1, sizeof(*p));
    if (!p || !(p->portal = strndup(portal, PG_NAME_MAX)) || !(p->statement = strndup(statement, PG_NAME_MAX))) {
        if (p)
            free(p->portal);
        free(p);
        return;
    }
    p->next = e->portals;
    e->portals = p;
    if (++e->n_portals > SESSENV_MAX_PORTALS) {
        /* drop the last (oldest) one */
        sessenv_portal **q = &e->portals;
        while ((*q)->next)
            q = &(*q)->next;
        free((*q)->portal);
        free((*q)->statement);
        free(*q);
        *q = NULL;
        e->n_portals--;
    }
}

const char *sessenv_portal_statement(const sessenv *e, const char *portal)
{
    for (const sessenv_portal *p = e->portals; p; p = p->next)
        if (same_name(p->portal, portal))
            return p->statement;
    return "";
}

/* ---------------------------------------------------------------- rw_env */

const rw_env *sessenv_env(sessenv *e)
{
    if (!e->dirty)
        return &e->env;
    rw_env *env = &e->env;
    memset(env, 0, sizeof(*env));
    env->std_strings = e->std_strings;
    env->client_only_encoding = e->client_only_encoding;
    /* A request in flight may change resolution before the next statement
     * runs: until it has completed, the path is unknown (fail closed). */
    env->path_known = e->effective.known && !e->temp_overflow && e->pending_changes == 0;
    for (int i = 0; env->path_known && i < e->effective.n; i++) {
        const char *s = e->effective.schemas[i];
        if (strcmp(s, "$user") == 0) {
            if (!e->user) {
                env->path_known = false;
                break;
            }
            s = e->user;
        }
        e->env_path[env->n_path++] = s;
    }
    if (!env->path_known)
        env->n_path = 0;
    env->path = e->env_path;
    for (int i = 0; i < e->n_temp; i++)
        e->env_temp[i] = e->temp_rels[i];
    env->temp_rels = e->env_temp;
    env->n_temp_rels = e->n_temp;
    env->hash = rw_env_hash(env);
    e->dirty = false;
    return env;
}
