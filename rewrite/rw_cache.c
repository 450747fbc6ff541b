/*
 * rw_cache.c -- decisions by statement text, so a text is parsed once.
 *
 * A chained hash table of entries on an LRU list, bounded by entries and by
 * bytes (entry + text + decision). An entry matches only when the text is
 * equal byte for byte and the protocol, environment hash, policy generation
 * and catalog version are equal: the bucket hash only chooses the chain.
 * The text hash is seeded per process so a client cannot aim many texts at
 * one chain.
 *
 * Decisions are shared, not copied: an entry holds one reference to its
 * rw_blob and every decision returned from it holds another, so an eviction
 * never frees a decision the proxy is still using. Single-threaded: one
 * cache per event loop, decisions released on that thread.
 */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "rewrite/rw_internal.h"

typedef struct rw_centry rw_centry;
struct rw_centry {
    rw_centry *hnext;             /* bucket chain */
    rw_centry *prev, *next;       /* LRU list: head = most recently used */
    rw_ckey key;
    size_t len;
    size_t bytes;                 /* what this entry counts against max_bytes */
    rw_blob *blob;
    char text[];                  /* len bytes + NUL */
};

struct rw_cache {
    size_t max_bytes;
    int max_entries;
    rw_centry **buckets;
    size_t n_buckets;             /* power of two */
    rw_centry *head, *tail;
    size_t bytes;
    int entries;
    uint64_t hits, misses, evictions, prefiltered;
    uint64_t seed;
};

/* ------------------------------------------------------------------- hash */

static uint64_t text_seed(void)
{
    uint64_t k[2];
    rw_secret(k);
    return k[0] ^ (k[1] << 1) ^ 0x9e3779b97f4a7c15ULL;
}

static inline uint64_t mix(uint64_t h)
{
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ULL;
    h ^= h >> 32;
    return h;
}

/* 8 bytes per step; quality enough to spread chains, the seed keeps it
 * unpredictable. Equality is always checked on the full text. */
static uint64_t hash_seeded(const char *p, size_t n, uint64_t seed)
{
    uint64_t h = seed ^ (n * 0x9e3779b97f4a7c15ULL);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ULL;
        h ^= h >> 29;
    }
    if (i < n) {
        uint64_t w = 0;
        memcpy(&w, p + i, n - i);
        h = (h ^ w) * 0x94d049bb133111ebULL;
    }
    return mix(h);
}

static uint64_t process_seed;
static pthread_once_t seed_once = PTHREAD_ONCE_INIT;

static void seed_init(void)
{
    process_seed = text_seed();
}

uint64_t rw_hash_text(const char *text, size_t len)
{
    pthread_once(&seed_once, seed_init);
    return hash_seeded(text, len, process_seed);
}

/* -------------------------------------------------------------- lifecycle */

rw_cache *rw_cache_new(size_t max_bytes, int max_entries)
{
    rw_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->max_bytes = max_bytes;
    c->max_entries = max_entries > 0 ? max_entries : 0;
    c->n_buckets = 64;
    while (c->n_buckets < (size_t)c->max_entries && c->n_buckets < (1u << 24))
        c->n_buckets <<= 1;
    c->buckets = calloc(c->n_buckets, sizeof(*c->buckets));
    if (!c->buckets) {
        free(c);
        return NULL;
    }
    return c;
}

static void lru_unlink(rw_cache *c, rw_centry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(rw_cache *c, rw_centry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (!c->tail)
        c->tail = e;
}

static void entry_remove(rw_cache *c, rw_centry *e)
{
    rw_centry **pp = &c->buckets[e->key.hash & (c->n_buckets - 1)];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    lru_unlink(c, e);
    c->bytes -= e->bytes;
    c->entries--;
    rw_blob_unref(e->blob);
    free(e);
}

void rw_cache_clear(rw_cache *c)
{
    if (!c)
        return;
    while (c->tail)
        entry_remove(c, c->tail);
}

void rw_cache_free(rw_cache *c)
{
    if (!c)
        return;
    rw_cache_clear(c);
    free(c->buckets);
    free(c);
}

void rw_cache_get_stats(const rw_cache *c, rw_cache_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!c)
        return;
    out->hits = c->hits;
    out->misses = c->misses;
    out->evictions = c->evictions;
    out->prefiltered = c->prefiltered;
    out->bytes = c->bytes;
    out->entries = c->entries;
}

void rw_cache_count_prefiltered(rw_cache *c)
{
    if (c)
        c->prefiltered++;
}

/* ----------------------------------------------------------------- lookup */

static bool key_eq(const rw_ckey *a, const rw_ckey *b)
{
    return a->hash == b->hash && a->env == b->env && a->generation == b->generation &&
           a->catalog == b->catalog && a->proto == b->proto;
}

bool rw_cache_lookup(rw_cache *c, const char *text, size_t len, const rw_ckey *k, rw_decision *out)
{
    if (!c || c->max_entries == 0 || k->env == 0)
        return false;
    for (rw_centry *e = c->buckets[k->hash & (c->n_buckets - 1)]; e; e = e->hnext) {
        if (e->len != len || !key_eq(&e->key, k) || memcmp(e->text, text, len) != 0)
            continue;
        if (c->head != e) {
            lru_unlink(c, e);
            lru_push_front(c, e);
        }
        c->hits++;
        rw_blob_ref(e->blob);
        *out = e->blob->d;
        out->flags |= RW_F_CACHED;
        out->priv = e->blob;
        return true;
    }
    c->misses++;
    return false;
}

void rw_cache_insert(rw_cache *c, const char *text, size_t len, const rw_ckey *k, rw_blob *blob)
{
    if (!c || c->max_entries == 0 || k->env == 0)
        return;
    size_t bytes = sizeof(rw_centry) + len + 1 + blob->size;
    if (bytes > c->max_bytes)
        return;
    while (c->tail && (c->entries >= c->max_entries || c->bytes + bytes > c->max_bytes)) {
        entry_remove(c, c->tail);
        c->evictions++;
    }
    rw_centry *e = malloc(sizeof(*e) + len + 1);
    if (!e)
        return;                 /* not caching is always correct */
    e->key = *k;
    e->len = len;
    e->bytes = bytes;
    e->blob = blob;
    rw_blob_ref(blob);
    memcpy(e->text, text, len);
    e->text[len] = '\0';
    rw_centry **b = &c->buckets[k->hash & (c->n_buckets - 1)];
    e->hnext = *b;
    *b = e;
    lru_push_front(c, e);
    c->bytes += bytes;
    c->entries++;
}
