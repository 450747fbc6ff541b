/*
 * cancel.c -- cancel keys.
 *
 * The client sees the server's real backend pid (so pg_backend_pid() and
 * NOTIFY's sender pid stay meaningful) with a secret key of our own, drawn
 * from OpenSSL's CSPRNG. A CancelRequest carrying that pair is forwarded to
 * the server, over a new connection, with the server's real key; any other
 * pair does nothing, so the server's key never leaves the proxy.
 */
#include "config.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/rand.h>

#include "proxy/pgproto.h"
#include "proxy/runtime.h"

typedef struct cancel_entry {
    uint64_t key;                 /* pid << 32 | our key */
    tg_session *session;
    struct cancel_entry *next;
} cancel_entry;

struct cancel_map {
    cancel_entry **buckets;
    size_t n_buckets;             /* power of two */
    size_t count;
};

static uint64_t pair(int32_t pid, int32_t key)
{
    return ((uint64_t)(uint32_t)pid << 32) | (uint32_t)key;
}

static size_t bucket_of(const struct cancel_map *m, uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (size_t)k & (m->n_buckets - 1);
}

struct cancel_map *cancel_map_new(void)
{
    struct cancel_map *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->n_buckets = 256;
    m->buckets = calloc(m->n_buckets, sizeof(*m->buckets));
    if (!m->buckets) {
        free(m);
        return NULL;
    }
    return m;
}

void cancel_map_free(struct cancel_map *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_buckets; i++) {
        cancel_entry *e = m->buckets[i];
        while (e) {
            cancel_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(m->buckets);
    free(m);
}

static cancel_entry *find(struct cancel_map *m, uint64_t k)
{
    for (cancel_entry *e = m->buckets[bucket_of(m, k)]; e; e = e->next)
        if (e->key == k)
            return e;
    return NULL;
}

static void grow(struct cancel_map *m)
{
    size_t n = m->n_buckets * 2;
    cancel_entry **b = calloc(n, sizeof(*b));
    if (!b)
        return;   /* keep working with longer chains */
    cancel_entry **old = m->buckets;
    size_t old_n = m->n_buckets;
    m->buckets = b;
    m->n_buckets = n;
    for (size_t i = 0; i < old_n; i++) {
        cancel_entry *e = old[i];
        while (e) {
            cancel_entry *next = e->next;
            size_t j = bucket_of(m, e->key);
            e->next = b[j];
            b[j] = e;
            e = next;
        }
    }
    free(old);
}

int cancel_register(tg_runtime *rt, tg_session *s)
{
    struct cancel_map *m = rt->cancels;
    uint64_t k;
    int32_t key;
    do {
        if (RAND_bytes((unsigned char *)&key, sizeof(key)) != 1)
            return -1;
        k = pair(s->sv.backend_pid, key);
    } while (find(m, k));
    cancel_entry *e = malloc(sizeof(*e));
    if (!e)
        return -1;
    e->key = k;
    e->session = s;
    size_t b = bucket_of(m, k);
    e->next = m->buckets[b];
    m->buckets[b] = e;
    if (++m->count > m->n_buckets * 2)
        grow(m);
    s->cancel_key = key;
    s->in_cancel_map = true;
    return 0;
}

void cancel_unregister(tg_runtime *rt, tg_session *s)
{
    struct cancel_map *m = rt->cancels;
    uint64_t k = pair(s->sv.backend_pid, s->cancel_key);
    for (cancel_entry **pp = &m->buckets[bucket_of(m, k)]; *pp; pp = &(*pp)->next) {
        if ((*pp)->key == k) {
            cancel_entry *e = *pp;
            *pp = e->next;
            free(e);
            m->count--;
            break;
        }
    }
    s->in_cancel_map = false;
}

/* ---------------------------------------------------------------- forwarding */

static void cancel_conn_done(struct bufferevent *bev, void *arg)
{
    (void)arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        bufferevent_free(bev);
}

static void cancel_conn_event(struct bufferevent *bev, short what, void *arg)
{
    (void)arg;
    if (what & BEV_EVENT_CONNECTED)
        return;   /* the request is queued; cancel_conn_done frees after writing */
    bufferevent_free(bev);
}

void cancel_forward(tg_runtime *rt, int32_t pid, int32_t key, const char *peer)
{
    cancel_entry *e = find(rt->cancels, pair(pid, key));
    if (!e) {
        rt->counters.cancels_unknown++;
        log_info("cancel request from %s with an unknown key: ignored", peer);
        return;
    }
    tg_session *s = e->session;
    const tg_config *c = s->cfg;
    struct bufferevent *bev = bufferevent_socket_new(rt->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!bev)
        return;
    uint32_t req[4] = {htonl(16), htonl(PG_CANCEL_REQUEST_CODE), htonl((uint32_t)s->sv.backend_pid),
                       htonl((uint32_t)s->sv.backend_key)};
    bufferevent_write(bev, req, sizeof(req));
    bufferevent_setcb(bev, NULL, cancel_conn_done, cancel_conn_event, NULL);
    struct timeval tv = {c->server_connect_timeout, 0};
    bufferevent_set_timeouts(bev, &tv, &tv);
    bufferevent_enable(bev, EV_WRITE);
    int rc;
    if (c->server_host[0] == '/') {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/.s.PGSQL.%d", c->server_host, c->server_port);
        rc = bufferevent_socket_connect(bev, (struct sockaddr *)&sun, sizeof(sun));
    } else {
        rc = bufferevent_socket_connect_hostname(bev, rt->dns, AF_UNSPEC, c->server_host, c->server_port);
    }
    if (rc != 0) {
        bufferevent_free(bev);
        return;
    }
    rt->counters.cancels_forwarded++;
    tg_clog(TG_LOG_INFO, &s->log, "cancel request from %s forwarded", peer);
}
