/*
 * notify.c -- sd_notify for the daemon (see notify.h). libsystemd speaks the
 * protocol (the socket, its abstract-namespace form, the watchdog
 * variables); this file decides what to say and when.
 */
#include "config.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <systemd/sd-daemon.h>

#include "policy/log.h"
#include "proxy/notify.h"
#include "proxy/runtime.h"

struct tg_notify {
    tg_runtime *rt;
    struct event *watchdog;     /* EV_PERSIST at half the watchdog interval; NULL = none asked */
    char status[256];           /* the last STATUS= sent */
};

static void send_state(const char *state)
{
    int r = sd_notify(0, state);
    if (r < 0)
        log_warning("sd_notify: %s", strerror(-r));
}

static void status_line(const tg_notify *n, char *buf, size_t len)
{
    const tg_runtime *rt = n->rt;
    const char *phase = rt->phase == RT_RUNNING ? (rt->paused ? "paused" : "running")
                        : rt->phase == RT_DRAINING ? "draining" : "stopping";
    snprintf(buf, len, "%s, mode %s, %d client(s), server %s:%d", phase, tg_mode_name(rt->cfg->policy.mode),
             rt->n_sessions, rt->cfg->server_host, rt->cfg->server_port);
}

void notify_tick(tg_notify *n)
{
    if (!n)
        return;
    char line[sizeof(n->status)];
    status_line(n, line, sizeof(line));
    if (strcmp(line, n->status) == 0)
        return;
    memcpy(n->status, line, sizeof(line));
    char msg[sizeof(line) + 8];
    snprintf(msg, sizeof(msg), "STATUS=%s", line);
    send_state(msg);
}

static void watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    send_state("WATCHDOG=1");
}

tg_notify *notify_start(tg_runtime *rt)
{
    const char *sock = getenv("NOTIFY_SOCKET");
    if (!sock || !*sock)
        return NULL;
    tg_notify *n = calloc(1, sizeof(*n));
    if (!n)
        return NULL;
    n->rt = rt;
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        /* Half the interval, as systemd advises; never below 1 ms. */
        uint64_t half = usec / 2 > 1000 ? usec / 2 : 1000;
        struct timeval tv = {(time_t)(half / 1000000), (suseconds_t)(half % 1000000)};
        n->watchdog = event_new(rt->base, -1, EV_PERSIST, watchdog_cb, n);
        if (!n->watchdog || event_add(n->watchdog, &tv) != 0)
            log_warning("systemd watchdog requested (%llu us) but its timer could not be armed",
                        (unsigned long long)usec);
    }
    char line[sizeof(n->status)], msg[sizeof(line) + 64];
    status_line(n, line, sizeof(line));
    memcpy(n->status, line, sizeof(line));
    snprintf(msg, sizeof(msg), "READY=1\nMAINPID=%lu\nSTATUS=%s", (unsigned long)getpid(), line);
    send_state(msg);
    if (n->watchdog)
        send_state("WATCHDOG=1");
    return n;
}

void notify_reloading(tg_notify *n)
{
    if (!n)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char msg[96];
    /* MONOTONIC_USEC: what Type=notify-reload (systemd 253+) matches the
     * reload by; plain Type=notify ignores it. */
    snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)(ts.tv_nsec / 1000));
    send_state(msg);
}

void notify_reloaded(tg_notify *n)
{
    if (!n)
        return;
    n->status[0] = '\0';   /* the mode may have changed: say it again */
    send_state("READY=1");
    notify_tick(n);
}

void notify_stopping(tg_notify *n, const char *why)
{
    if (!n)
        return;
    char msg[160];
    snprintf(msg, sizeof(msg), "STOPPING=1\nSTATUS=stopping: %s", why);
    send_state(msg);
    snprintf(n->status, sizeof(n->status), "stopping: %s", why);
}

void notify_free(tg_notify *n)
{
    if (!n)
        return;
    if (n->watchdog)
        event_free(n->watchdog);
    free(n);
}
