/*
 * fuzz_util.c -- see fuzz_util.h.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "policy/log.h"
#include "proxy/runtime.h"
#include "proxy/session.h"
#include "tests/fuzz/fuzz_util.h"

void fz_die(const char *what)
{
    fprintf(stderr, "fuzz: %s (errno %d: %s)\n", what, errno, strerror(errno));
    abort();
}

void fz_setup_process(char *tmpl)
{
    signal(SIGPIPE, SIG_IGN);
    int null = getenv("FUZZ_LOG") ? 2 : open("/dev/null", O_WRONLY | O_CLOEXEC);
    tg_log_set_fd(null);
    tg_log_configure(TG_LOG_DEBUG, TG_LOGFMT_TEXT);
    if (!mkdtemp(tmpl))
        fz_die("mkdtemp");
}

void fz_reap(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tg_runtime *rt = arg;
    tg_session *s;
    while ((s = TAILQ_FIRST(&rt->justfree)) != NULL) {
        TAILQ_REMOVE(&rt->justfree, s, link);
        sess_free(s);
    }
}

int fz_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}
