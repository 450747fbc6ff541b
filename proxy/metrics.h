/*
 * metrics.h -- GET /metrics in Prometheus' text format (0.0.4) on
 * metrics_addr:metrics_port, served by libevent's evhttp on the event loop.
 *
 * Everything it reports is in memory on the loop thread (counters, the
 * session list, the decision cache, the console backfill's progress, the
 * violation_audit counters): a scrape never waits for anything. Any other
 * path or method gets 404.
 */
#ifndef TG_METRICS_H
#define TG_METRICS_H

#include <stddef.h>

struct tg_runtime;
struct evbuffer;
typedef struct tg_metrics tg_metrics;

/* Listen when metrics_port is set. Returns 0 (*out NULL when off), or -1
 * with err (the address cannot be bound). */
int metrics_start(struct tg_runtime *rt, tg_metrics **out, char *err, size_t errlen);
void metrics_free(tg_metrics *m);

/* The exposition text (tests and the handler). */
void metrics_render(struct tg_runtime *rt, struct evbuffer *out);

#endif
