/*
 * stats.h -- enforcement counters and the bounded log of recent violations.
 *
 * Counters: per watched table, per rule, per kind (seen, passed, rewritten,
 * rejected, refused) -- the same kinds rewrite/ reports in its events, plus
 * rejections that happen inside the server (the helper functions raise
 * 42501) and are counted when their ErrorResponse passes by.
 *
 * The violation log is a ring of the last N entries: time, session, client,
 * table, rule, statement fingerprint and SQLSTATE. Never a value, never
 * statement text.
 *
 * Owned by the event-loop thread; readers on other threads must copy under
 * the admin console's request on the loop (no locks here).
 */
#ifndef TG_STATS_H
#define TG_STATS_H

#include <stdint.h>
#include <time.h>

#define TG_STATS_RULES 12      /* >= RW_RULE__COUNT */
#define TG_STATS_KINDS 5       /* == RW_EV__COUNT */
#define TG_VIOLATIONS_MAX 1024

typedef struct tg_table_stats {
    uint64_t by_rule[TG_STATS_RULES][TG_STATS_KINDS];
    uint64_t statements;       /* statements that wrote this table */
} tg_table_stats;

typedef struct tg_violation {
    time_t at;
    uint64_t session_id;
    char client[96];           /* user@db peer */
    char table[130];           /* schema.table */
    char rule[16];             /* R1..R6, form, ... */
    char sqlstate[6];
    char fingerprint[17];
    char mode[8];              /* enforce (rejected) or observe (would have been) */
} tg_violation;

/* Statement latency: from the first request after idle to the
 * ReadyForQuery that leaves nothing in flight, in power-of-two
 * microsecond buckets (bucket i: < 2^i us). */
#define TG_LATENCY_BUCKETS 32

typedef struct tg_stats {
    tg_table_stats *tables;    /* one per policy table, by index */
    int n_tables;
    uint64_t latency_count;
    uint64_t latency_sum_us;
    uint64_t latency_buckets[TG_LATENCY_BUCKETS];
    uint64_t audit_written;    /* violations written into the audit table */
    uint64_t audit_dropped;    /* ... dropped because the queue was full */
    uint64_t parse_failures;
    uint64_t prefiltered;
    uint64_t server_rejections; /* 42501 raised by the helper functions */
    tg_violation ring[TG_VIOLATIONS_MAX];
    uint64_t ring_next;        /* total entries ever; slot = next % MAX */
} tg_stats;

tg_stats *tg_stats_new(int n_tables);
void tg_stats_free(tg_stats *s);
/* A reload changed the table list: counters restart for the new list. */
int tg_stats_resize(tg_stats *s, int n_tables);

void tg_stats_count(tg_stats *s, int table, int rule, int kind);
void tg_stats_violation(tg_stats *s, const tg_violation *v);

void tg_stats_latency(tg_stats *s, uint64_t us);
/* The latency below which a fraction q of statements finished (bucket upper
 * bound, microseconds); 0 when none was measured. */
double tg_stats_latency_quantile(const tg_stats *s, double q);

/* The i-th most recent violation (0 = newest), or NULL. */
const tg_violation *tg_stats_recent(const tg_stats *s, uint64_t i);
uint64_t tg_stats_violation_count(const tg_stats *s);

#endif
