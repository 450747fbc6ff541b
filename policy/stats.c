/*
 * stats.c -- enforcement counters and the violation ring (see stats.h).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "policy/stats.h"

tg_stats *tg_stats_new(int n_tables)
{
    tg_stats *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    if (tg_stats_resize(s, n_tables) != 0) {
        free(s);
        return NULL;
    }
    return s;
}

void tg_stats_free(tg_stats *s)
{
    if (!s)
        return;
    free(s->tables);
    free(s);
}

int tg_stats_resize(tg_stats *s, int n_tables)
{
    tg_table_stats *t = calloc((size_t)(n_tables > 0 ? n_tables : 1), sizeof(*t));
    if (!t)
        return -1;
    free(s->tables);
    s->tables = t;
    s->n_tables = n_tables;
    return 0;
}

void tg_stats_count(tg_stats *s, int table, int rule, int kind)
{
    if (table < 0 || table >= s->n_tables || rule < 0 || rule >= TG_STATS_RULES || kind < 0 ||
        kind >= TG_STATS_KINDS)
        return;
    s->tables[table].by_rule[rule][kind]++;
}

void tg_stats_violation(tg_stats *s, const tg_violation *v)
{
    s->ring[s->ring_next % TG_VIOLATIONS_MAX] = *v;
    s->ring_next++;
}

void tg_stats_latency(tg_stats *s, uint64_t us)
{
    /* Bucket b holds [2^(b-1), 2^b) microseconds: b is the bit length of
     * us (0 for 0), the last bucket everything beyond. */
    int b = us ? 64 - __builtin_clzll(us) : 0;
    if (b > TG_LATENCY_BUCKETS - 1)
        b = TG_LATENCY_BUCKETS - 1;
    s->latency_buckets[b]++;
    s->latency_count++;
    s->latency_sum_us += us;
}

double tg_stats_latency_quantile(const tg_stats *s, double q)
{
    if (!s->latency_count)
        return 0.0;
    uint64_t want = (uint64_t)((double)s->latency_count * q + 0.5), seen = 0;
    for (int b = 0; b < TG_LATENCY_BUCKETS; b++) {
        seen += s->latency_buckets[b];
        if (seen >= want && seen)
            return (double)(1ULL << b);
    }
    return (double)(1ULL << (TG_LATENCY_BUCKETS - 1));
}

const tg_violation *tg_stats_recent(const tg_stats *s, uint64_t i)
{
    if (i >= s->ring_next || i >= TG_VIOLATIONS_MAX)
        return NULL;
    return &s->ring[(s->ring_next - 1 - i) % TG_VIOLATIONS_MAX];
}

uint64_t tg_stats_violation_count(const tg_stats *s)
{
    return s->ring_next;
}
