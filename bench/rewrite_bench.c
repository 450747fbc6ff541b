/*
 * rewrite_bench -- drive rw_decide() in one scenario, for callgrind.
 *
 *   bench/rewrite_bench SCENARIO N
 *
 * Scenarios (policy: the default config in enforce mode; env: search_path
 * known, "public"):
 *   prefilter       a short SELECT of an unwatched table: pre-filtered
 *   prefilter-long  a 400-byte unwatched query
 *   hit             a one-row INSERT into policies, answered from the cache
 *   miss            a one-row INSERT into policies, a new text each time
 *                   (parse, rewrite, decision built, cached, oldest evicted)
 *   miss-nocache    the same INSERT text each time, no cache (parse + rewrite)
 *   update-miss     UPDATE ... SET tenant_id = $1, workspace_id = $2, no cache
 *
 * Only rwb_measure() is meant to be counted (valgrind --toggle-collect=rwb_measure):
 * set-up and warm-up (libpg_query's first-use initialisation, the cache fill)
 * happen outside it. bench/rewrite_callgrind.sh runs every scenario.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/config.h"
#include "rewrite/rewrite.h"

typedef struct bench {
    rw_cache *cache;
    rw_policy *policy;
    rw_env env;
    const char **texts;
    size_t *lens;
    int n_texts;
    bool use_cache;
} bench;

static const char short_select[] = "SELECT id, name, email FROM users WHERE id = $1";
static const char long_select[] =
    "SELECT o.id, o.created_at, o.total_amount, c.name AS customer_name, c.email, a.city, a.country, "
    "count(li.id) AS items, sum(li.quantity * li.unit_price) AS gross FROM orders o "
    "JOIN customers c ON c.id = o.customer_id LEFT JOIN addresses a ON a.id = o.shipping_address_id "
    "LEFT JOIN line_items li ON li.order_id = o.id WHERE o.created_at >= $1 AND o.created_at < $2 "
    "AND o.status IN ('open', 'closed') GROUP BY o.id, c.name, c.email, a.city, a.country "
    "ORDER BY o.created_at DESC LIMIT 50";
static const char one_row_insert[] = "INSERT INTO policies (tenant_id, name) VALUES ($1, $2)";
static const char update_stmt[] = "UPDATE policies SET tenant_id = $1, workspace_id = $2 WHERE id = $3";

/* The measured loop. noinline + external: callgrind toggles on its name. */
void rwb_measure(bench *b, int n) __attribute__((noinline));
void rwb_measure(bench *b, int n)
{
    for (int i = 0; i < n; i++) {
        int k = b->n_texts > 1 ? i % b->n_texts : 0;
        rw_decision d = rw_decide(b->use_cache ? b->cache : NULL, b->policy, &b->env, NULL, RW_PROTO_EXTENDED,
                                  b->texts[k], b->lens[k]);
        rw_decision_release(&d);
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s prefilter|prefilter-long|hit|miss|miss-nocache|update-miss N\n", argv[0]);
        return 64;
    }
    const char *scenario = argv[1];
    int n = atoi(argv[2]);
    const char *selftest = rw_selftest();
    if (selftest) {
        fprintf(stderr, "%s\n", selftest);
        return 1;
    }
    tg_config_error err;
    tg_config *cfg = tg_config_load_string("bench", "[tenantguard]\nmode = enforce\n", &err);
    if (!cfg) {
        fprintf(stderr, "config: %s\n", err.message);
        return 1;
    }
    bench b;
    memset(&b, 0, sizeof(b));
    b.policy = rw_policy_new(&cfg->policy, NULL, 1);
    b.cache = rw_cache_new(16u << 20, 20000);
    static const char *const path[] = {"public"};
    b.env.path_known = true;
    b.env.path = path;
    b.env.n_path = 1;
    b.env.std_strings = true;
    b.env.hash = rw_env_hash(&b.env);
    b.use_cache = true;

    int n_texts = 1;
    if (strcmp(scenario, "miss") == 0)
        n_texts = n + 1;
    b.texts = calloc((size_t)n_texts, sizeof(*b.texts));
    b.lens = calloc((size_t)n_texts, sizeof(*b.lens));
    b.n_texts = n_texts;
    if (strcmp(scenario, "prefilter") == 0) {
        b.texts[0] = short_select;
    } else if (strcmp(scenario, "prefilter-long") == 0) {
        b.texts[0] = long_select;
    } else if (strcmp(scenario, "hit") == 0) {
        b.texts[0] = one_row_insert;
    } else if (strcmp(scenario, "miss") == 0) {
        for (int i = 0; i < n_texts; i++) {
            char *t = malloc(96);
            snprintf(t, 96, "INSERT INTO policies (tenant_id, name) VALUES ($1, 'name %d')", i);
            b.texts[i] = t;
        }
        b.cache = (rw_cache_free(b.cache), rw_cache_new(16u << 20, 64));   /* evicts as it goes */
    } else if (strcmp(scenario, "miss-nocache") == 0) {
        b.texts[0] = one_row_insert;
        b.use_cache = false;
    } else if (strcmp(scenario, "update-miss") == 0) {
        b.texts[0] = update_stmt;
        b.use_cache = false;
    } else {
        fprintf(stderr, "unknown scenario %s\n", scenario);
        return 64;
    }
    for (int i = 0; i < n_texts; i++)
        b.lens[i] = strlen(b.texts[i]);

    /* Warm up outside the measured function: parser initialisation, cache fill. */
    bench warm = b;
    if (strcmp(scenario, "miss") == 0) {
        warm.texts = b.texts + n;
        warm.lens = b.lens + n;
        warm.n_texts = 1;
    }
    for (int i = 0; i < 64; i++) {
        rw_decision d = rw_decide(warm.use_cache ? warm.cache : NULL, warm.policy, &warm.env, NULL,
                                  RW_PROTO_EXTENDED, warm.texts[0], warm.lens[0]);
        if (i == 0)
            printf("%s: action=%s flags=%#x\n", scenario, rw_action_name(d.action), d.flags);
        rw_decision_release(&d);
    }
    b.n_texts = strcmp(scenario, "miss") == 0 ? n : b.n_texts;
    rwb_measure(&b, n);

    rw_cache_stats st;
    rw_cache_get_stats(b.cache, &st);
    printf("%s: %d calls, cache hits=%llu misses=%llu prefiltered=%llu entries=%d\n", scenario, n,
           (unsigned long long)st.hits, (unsigned long long)st.misses, (unsigned long long)st.prefiltered,
           st.entries);
    if (strcmp(scenario, "miss") == 0)
        for (int i = 0; i < n_texts; i++)
            free((char *)b.texts[i]);
    free(b.texts);
    free(b.lens);
    rw_cache_free(b.cache);
    rw_policy_free(b.policy);
    tg_config_unref(cfg);
    return 0;
}
