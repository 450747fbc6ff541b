/*
 * notify.h -- the daemon as a systemd service (Type=notify): the sd_notify
 * protocol through libsystemd.
 *
 *   READY=1       once every listener, the console and the metrics endpoint
 *                 are open: a unit ordered After= tenantguard finds it
 *                 accepting;
 *   RELOADING=1   while SIGHUP / RELOAD reads the config, READY=1 after it
 *                 (whether the new config was taken or refused);
 *   STOPPING=1    when SIGTERM / SIGINT / SHUTDOWN begins;
 *   STATUS=...    one line `systemctl status` shows: phase, mode, clients;
 *                 sent when it changes, at most once a second;
 *   WATCHDOG=1    from the event loop at half of WatchdogSec=, so a loop
 *                 that hangs gets the service restarted.
 *
 * Started by anything else (no NOTIFY_SOCKET), every call does nothing.
 */
#ifndef TG_NOTIFY_H
#define TG_NOTIFY_H

struct tg_runtime;
typedef struct tg_notify tg_notify;

/* After setup: READY=1 and the first STATUS=; arms the watchdog when the
 * service manager asked for one. NULL when not under a service manager (or
 * out of memory: notifying is best effort and never stops the daemon). */
tg_notify *notify_start(struct tg_runtime *rt);
void notify_reloading(tg_notify *n);
void notify_reloaded(tg_notify *n);
void notify_stopping(tg_notify *n, const char *why);
/* Once a second (the janitor): STATUS= when the line changed. */
void notify_tick(tg_notify *n);
void notify_free(tg_notify *n);

#endif
