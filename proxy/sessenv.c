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

static void effects_free(rw_effect *fx, int n)
{
    for (int i = 0; i < n; i++)
        free((char *)fx[i].arg);
    free(fx);
}

rw_effect *sessenv_effects_copy(const rw_effect *fx, int n)
{
    if (n <= 0)
        return NULL;
    rw_effect *out = calloc((size_t)n, sizeof(*out));
    if (!out)
        return NULL;
    for (int i = 0; i < n; i++) {
        out[i] = fx[i];
        out[i].arg = NULL;
        if (fx[i].arg && !(out[i].arg = strdup(fx[i].arg))) {
            effects_free(out, i);
            return NULL;
        }
    }
    return out;
}

/* What an entry holds (not its name, not the entry). */
static void prepared_clear(sessenv_prepared *p)
{
    effects_free(p->effects, p->n_effects);
    free(p->text);
    p->effects = NULL;
    p->n_effects = 0;
    p->text = NULL;
}

/* Give an (empty) entry what it holds; it owns text and effects. */
static void prepared_fill(sessenv_prepared *p, char *text, bool rewritten, uint64_t generation, uint64_t env_hash,
                          rw_effect *effects, int n_effects)
{
    p->text = text;
    p->rewritten = rewritten;
    p->generation = generation;
    p->env_hash = env_hash;
    p->effects = effects;
    p->n_effects = n_effects;
}

static void prepared_free_one(sessenv_prepared *p)
{
    prepared_clear(p);
    free(p->name);
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

static void portal_free(sessenv_portal *p)
{
    free(p->portal);
    free(p->statement);
    free(p->text);
    effects_free(p->effects, p->n_effects);
    free(p);
}

static void portals_free(sessenv *e)
{
    sessenv_portal *p = e->portals;
    while (p) {
        sessenv_portal *next = p->next;
        portal_free(p);
        p = next;
    }
    e->portals = NULL;
    e->n_portals = 0;
}

static void ops_free(sessenv *e)
{
    for (sessenv_stmt_op *op = e->ops_head, *next; op; op = next) {
        next = op->next;
        prepared_clear(&op->entry);
        free(op);
    }
    e->ops_head = e->ops_tail = NULL;
    free(e->spare_op);
    e->spare_op = NULL;
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
    ops_free(e);
    free(e->user);
    memset(e, 0, sizeof(*e));
}

void sessenv_set_user(sessenv *e, const char *user)
{
    char *u = user ? strdup(user) : NULL;
    free(e->user);
    e->user = u;   /* NULL (also out of memory): "$user" unknown, the path with it too */
    e->dirty = true;
}

void sessenv_set_rels(sessenv *e, const char *const *schemas, const char *const *names, int n, bool known)
{
    e->rel_schemas = schemas;
    e->rel_names = names;
    e->n_rels = known ? n : 0;
    e->rels_known = known;
    e->dirty = true;
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
        if (fx->arg && strcmp(fx->arg, "role") == 0) {
            /* "$user" is the current role's name: unknown from now on. */
            free(e->user);
            e->user = NULL;
        }
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
        prepared_clear(p);
        prepared_fill(p, text, rewritten, generation, env_hash, effects, n_effects);
        return;
    }
    sessenv_prepared_remove(e, sql_level, name);
    sessenv_prepared *p = calloc(1, sizeof(*p));
    if (!p || !(p->name = strndup(name, PG_NAME_MAX))) {
        free(p);
        free(text);
        effects_free(effects, n_effects);
        return;
    }
    prepared_fill(p, text, rewritten, generation, env_hash, effects, n_effects);
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
    /* Pending Parse and Close first, newest first: what the server will
     * have when it reads what comes after them. SQL cannot name the
     * unnamed statement. */
    if (!sql_level || name[0])
        for (sessenv_stmt_op *op = e->ops_tail; op; op = op->prev)
            if (same_name(op->name, name))
                return op->close ? NULL : &op->entry;
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

/* ------------------------------------------------------ pending Parse/Close */

static sessenv_stmt_op *op_new(sessenv *e, bool close, const char *name)
{
    sessenv_stmt_op *op = e->spare_op;
    if (op)
        e->spare_op = NULL;
    else if (!(op = malloc(sizeof(*op))))
        return NULL;
    memset(op, 0, sizeof(*op));
    op->close = close;
    size_t n = strnlen(name, PG_NAME_MAX);
    memcpy(op->name, name, n);
    op->name[n] = '\0';
    op->entry.name = op->name;
    op->prev = e->ops_tail;
    if (e->ops_tail)
        e->ops_tail->next = op;
    else
        e->ops_head = op;
    e->ops_tail = op;
    return op;
}

sessenv_stmt_op *sessenv_parse_sent(sessenv *e, const char *name, char *text, bool rewritten, uint64_t generation,
                                    uint64_t env_hash, rw_effect *effects, int n_effects)
{
    sessenv_stmt_op *op = op_new(e, false, name);
    if (!op) {
        free(text);
        effects_free(effects, n_effects);
        return NULL;
    }
    prepared_fill(&op->entry, text, rewritten, generation, env_hash, effects, n_effects);
    return op;
}

sessenv_stmt_op *sessenv_close_sent(sessenv *e, const char *name)
{
    return op_new(e, true, name);
}

void sessenv_stmt_op_end(sessenv *e, sessenv_stmt_op *op, sessenv_op_end how)
{
    if (!op)
        return;
    if (how == SESSENV_OP_DONE && op->close) {
        sessenv_prepared_remove(e, false, op->name);
    } else if (how == SESSENV_OP_DONE) {
        /* Moves the text and effects over (the entry is left empty). */
        sessenv_prepared_add(e, false, op->name, op->entry.text, op->entry.rewritten, op->entry.generation,
                             op->entry.env_hash, op->entry.effects, op->entry.n_effects);
        op->entry.text = NULL;
        op->entry.effects = NULL;
        op->entry.n_effects = 0;
    } else if (how == SESSENV_OP_FAILED && !op->close && !op->name[0]) {
        remove_from(&e->prepared, "");   /* PostgreSQL drops the old unnamed one first */
    }
    prepared_clear(&op->entry);
    if (op->prev)
        op->prev->next = op->next;
    else
        e->ops_head = op->next;
    if (op->next)
        op->next->prev = op->prev;
    else
        e->ops_tail = op->prev;
    if (!e->spare_op)
        e->spare_op = op;
    else
        free(op);
}

/* ---------------------------------------------------------------- portals */

#define SESSENV_MAX_PORTALS 256   /* beyond this the oldest is forgotten */

/* Take what statement p does into portal q (replacing what it held). */
static bool portal_take(sessenv_portal *q, const sessenv_prepared *p)
{
    free(q->text);
    effects_free(q->effects, q->n_effects);
    q->text = NULL;
    q->effects = NULL;
    q->n_effects = 0;
    q->known = p != NULL;
    q->rewritten = p && p->rewritten;
    if (!p || (!p->n_effects && !p->rewritten))
        return true;   /* the common case: nothing to copy */
    if (p->rewritten && p->text && !(q->text = strdup(p->text)))
        return false;
    if (p->n_effects && !(q->effects = sessenv_effects_copy(p->effects, p->n_effects)))
        return false;
    q->n_effects = p->n_effects;
    return true;
}

bool sessenv_portal_bind(sessenv *e, const char *portal, const char *statement, const sessenv_prepared *p)
{
    sessenv_portal **pp = &e->portals;
    for (; *pp; pp = &(*pp)->next) {
        if (same_name((*pp)->portal, portal)) {
            if (!same_name((*pp)->statement, statement)) {
                char *st = strndup(statement, PG_NAME_MAX);
                if (!st)
                    return false;
                free((*pp)->statement);
                (*pp)->statement = st;
            }
            return portal_take(*pp, p);
        }
    }
    sessenv_portal *q = calloc(1, sizeof(*q));
    if (!q || !(q->portal = strndup(portal, PG_NAME_MAX)) || !(q->statement = strndup(statement, PG_NAME_MAX)) ||
        !portal_take(q, p)) {
        if (q)
            portal_free(q);
        return false;
    }
    q->next = e->portals;
    e->portals = q;
    if (++e->n_portals > SESSENV_MAX_PORTALS) {
        /* drop the last (oldest) one: an Execute of it counts as unknown */
        sessenv_portal **r = &e->portals;
        while ((*r)->next)
            r = &(*r)->next;
        portal_free(*r);
        *r = NULL;
        e->n_portals--;
    }
    return true;
}

const sessenv_portal *sessenv_portal_find(const sessenv *e, const char *portal)
{
    for (const sessenv_portal *p = e->portals; p; p = p->next)
        if (same_name(p->portal, portal))
            return p;
    return NULL;
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
    env->rel_schemas = e->rel_schemas;
    env->rel_names = e->rel_names;
    env->n_rels = e->n_rels;
    env->rels_known = e->rels_known;
    env->hash = rw_env_hash(env);
    e->dirty = false;
    return env;
}
