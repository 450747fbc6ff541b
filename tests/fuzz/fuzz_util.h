/*
 * fuzz_util.h -- what the in-process session harnesses (fuzz_sessdrv.c,
 * fuzz_admin.c) share: dying loudly, the proxy's logs, a scratch directory,
 * the runtime's reaper and the fd count that proves nothing leaked.
 */
#ifndef TG_FUZZ_UTIL_H
#define TG_FUZZ_UTIL_H

#include <stddef.h>

#include <event2/util.h>

/* Print what failed (with errno) and abort: the fuzzer keeps the input. */
void fz_die(const char *what) __attribute__((noreturn));
/* SIGPIPE ignored; the proxy's log lines to /dev/null, or to stderr when
 * FUZZ_LOG is set (to triage an input); a fresh directory from `tmpl`
 * ("/tmp/...-XXXXXX", rewritten in place). */
void fz_setup_process(char *tmpl);
/* The runtime's reaper callback (arg: the tg_runtime): frees rt->justfree. */
void fz_reap(evutil_socket_t fd, short what, void *arg);
/* Open file descriptors of this process. */
int fz_count_fds(void);

#endif
