/*
 * rw_arena.c -- the per-call arena, growable strings, SQL quoting.
 *
 * The arena is a list of malloc'd chunks; nothing is freed before the whole
 * arena is. A failed allocation sets `oom` and returns NULL; callers check
 * the flag at the end and fail closed (an enforce-mode text that named a
 * watched table is rejected, never passed) instead of checking every call.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rewrite/rw_internal.h"

struct rw_chunk {
    rw_chunk *next;
    size_t used, cap;
    max_align_t data[];
};

#define RW_CHUNK_MIN 8192

void *rw_alloc(rw_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    rw_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > RW_CHUNK_MIN ? n : RW_CHUNK_MIN;
        c = malloc(sizeof(*c) + cap);
        if (!c) {
            a->oom = true;
            return NULL;
        }
        c->used = 0;
        c->cap = cap;
        c->next = a->head;
        a->head = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

char *rw_strndup(rw_arena *a, const char *s, size_t n)
{
    char *d = rw_alloc(a, n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

char *rw_strdup(rw_arena *a, const char *s)
{
    return rw_strndup(a, s, strlen(s));
}

void rw_arena_free(rw_arena *a)
{
    for (rw_chunk *c = a->head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    a->head = NULL;
}

/* ---------------------------------------------------------------- rw_buf */

void rw_buf_init(rw_buf *b, rw_arena *a)
{
    b->a = a;
    b->p = NULL;
    b->len = b->cap = 0;
}

static bool buf_reserve(rw_buf *b, size_t more)
{
    if (b->a->oom)
        return false;
    if (b->len + more + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap * 2 : 128;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = rw_alloc(b->a, cap);   /* the old block stays in the arena */
    if (!p)
        return false;
    if (b->len)
        memcpy(p, b->p, b->len);
    b->p = p;
    b->cap = cap;
    return true;
}

void rw_buf_add(rw_buf *b, const char *s, size_t n)
{
    if (!buf_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void rw_buf_str(rw_buf *b, const char *s)
{
    rw_buf_add(b, s, strlen(s));
}

void rw_buf_printf(rw_buf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(small)) {
        rw_buf_add(b, small, (size_t)n);
        return;
    }
    if (!buf_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

const char *rw_buf_cstr(rw_buf *b)
{
    return b->p ? b->p : "";
}

void rw_buf_ident(rw_buf *b, const char *ident)
{
    rw_buf_add(b, "\"", 1);
    for (const char *s = ident; *s; s++) {
        if (*s == '"')
            rw_buf_add(b, "\"", 1);
        rw_buf_add(b, s, 1);
    }
    rw_buf_add(b, "\"", 1);
}

void rw_buf_ident_min(rw_buf *b, const char *ident)
{
    if (rw_ident_plain(ident))
        rw_buf_str(b, ident);
    else
        rw_buf_ident(b, ident);
}

void rw_buf_literal(rw_buf *b, const char *s)
{
    bool escape = strpbrk(s, "'\\") != NULL;
    rw_buf_str(b, escape ? "E'" : "'");
    for (; *s; s++) {
        if (*s == '\'' || (escape && *s == '\\'))
            rw_buf_add(b, s, 1);
        rw_buf_add(b, s, 1);
    }
    rw_buf_add(b, "'", 1);
}
