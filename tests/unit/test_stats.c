/*
 * test_stats.c -- the statement-latency histogram: which power-of-two bucket
 * each latency lands in, as a table (bucket i holds [2^(i-1), 2^i) us; the
 * last one everything beyond), and the count and sum beside it.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "policy/stats.h"

static int bucket_of(uint64_t us)
{
    tg_stats *s = tg_stats_new(0);
    assert_non_null(s);
    tg_stats_latency(s, us);
    int found = -1;
    for (int b = 0; b < TG_LATENCY_BUCKETS; b++) {
        if (s->latency_buckets[b]) {
            assert_int_equal(found, -1);   /* exactly one bucket */
            assert_int_equal(s->latency_buckets[b], 1);
            found = b;
        }
    }
    assert_int_equal(s->latency_count, 1);
    assert_true(s->latency_sum_us == us);
    tg_stats_free(s);
    return found;
}

static void test_latency_buckets(void **state)
{
    (void)state;
    static const struct {
        uint64_t us;
        int bucket;
    } cases[] = {
        {0, 0},
        {1, 1},
        {2, 2},
        {3, 2},
        {4, 3},
        {7, 3},
        {8, 4},
        {999, 10},
        {1000, 10},
        {1023, 10},
        {1024, 11},
        {(1ULL << 30) - 1, 30},
        {1ULL << 30, 31},
        {(1ULL << 31) - 1, 31},
        {1ULL << 31, 31},   /* beyond the last bound: the last bucket */
        {1ULL << 40, 31},
        {UINT64_MAX, 31},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = bucket_of(cases[i].us);
        if (got != cases[i].bucket)
            fail_msg("latency %llu us: bucket %d, want %d", (unsigned long long)cases[i].us, got,
                     cases[i].bucket);
    }
}

static void test_latency_accumulates(void **state)
{
    (void)state;
    tg_stats *s = tg_stats_new(0);
    assert_non_null(s);
    for (uint64_t us = 1; us <= 100; us++)
        tg_stats_latency(s, us);
    assert_int_equal(s->latency_count, 100);
    assert_int_equal(s->latency_sum_us, 5050);
    /* 1 | 2-3 | 4-7 | 8-15 | 16-31 | 32-63 | 64-100 */
    static const uint64_t want[8] = {0, 1, 2, 4, 8, 16, 32, 37};
    for (int b = 0; b < 8; b++)
        assert_int_equal(s->latency_buckets[b], want[b]);
    tg_stats_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_latency_buckets),
        cmocka_unit_test(test_latency_accumulates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
