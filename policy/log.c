/*
 * log.c -- text and JSON log lines (see log.h for the rules).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "policy/log.h"

/* The level and format are set once at start-up and on reload, from the
 * event-loop thread; other threads only read them. Plain ints are enough:
 * a racing reader sees the old or the new value, both valid. */
static volatile int log_level = TG_LOG_INFO;
static volatile int log_format = TG_LOGFMT_TEXT;
static volatile int log_fd = 2;

static const char *const level_names[] = {"error", "warning", "info", "debug"};

void tg_log_configure(tg_log_level level, tg_log_format format)
{
    log_level = level;
    log_format = format;
}

void tg_log_set_fd(int fd)
{
    log_fd = fd;
}

int tg_log_enabled(tg_log_level level)
{
    return (int)level <= log_level;
}

const char *tg_log_level_name(tg_log_level level)
{
    if ((unsigned)level >= sizeof(level_names) / sizeof(level_names[0]))
        return "?";
    return level_names[level];
}

int tg_log_level_parse(const char *s, tg_log_level *out)
{
    for (unsigned i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (tg_log_level)i;
            return 0;
        }
    }
    return -1;
}

static void format_time(char *buf, size_t len)
{
    struct timeval tv;
    struct tm tm;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%03dZ", (int)(tv.tv_usec / 1000));
}

/* Write a whole line; retry on EINTR and short writes. */
static void write_line(const char *line, size_t len)
{
    while (len > 0) {
        ssize_t n = write(log_fd, line, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        line += n;
        len -= (size_t)n;
    }
}

static void emit_text(tg_log_level level, const tg_log_ctx *ctx, const char *ts, const char *msg)
{
    char line[4096];
    int n = snprintf(line, sizeof(line), "%s %s ", ts, tg_log_level_name(level));
    if (ctx) {
        if (ctx->session_id)
            n += snprintf(line + n, sizeof(line) - (size_t)n, "S-%llu ",
                          (unsigned long long)ctx->session_id);
        if (ctx->side)
            n += snprintf(line + n, sizeof(line) - (size_t)n, "%s ", ctx->side);
        if (ctx->user || ctx->db)
            n += snprintf(line + n, sizeof(line) - (size_t)n, "%s@%s ",
                          ctx->user ? ctx->user : "?", ctx->db ? ctx->db : "?");
        if (ctx->peer)
            n += snprintf(line + n, sizeof(line) - (size_t)n, "%s ", ctx->peer);
    }
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    n += snprintf(line + n, sizeof(line) - (size_t)n, "%s", msg);
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    write_line(line, (size_t)n);
}

static void emit_json(tg_log_level level, const tg_log_ctx *ctx, const char *ts, const char *msg)
{
    json_t *o = json_object();
    if (!o)
        return;
    json_object_set_new(o, "ts", json_string(ts));
    json_object_set_new(o, "level", json_string(tg_log_level_name(level)));
    if (ctx) {
        if (ctx->session_id)
            json_object_set_new(o, "session", json_integer((json_int_t)ctx->session_id));
        if (ctx->side)
            json_object_set_new(o, "side", json_string(ctx->side));
        if (ctx->user)
            json_object_set_new(o, "user", json_string(ctx->user));
        if (ctx->db)
            json_object_set_new(o, "db", json_string(ctx->db));
        if (ctx->peer)
            json_object_set_new(o, "peer", json_string(ctx->peer));
    }
    /* json_string() refuses invalid UTF-8; keep the line rather than lose it. */
    json_t *m = json_string(msg);
    json_object_set_new(o, "msg", m ? m : json_string("(message not valid UTF-8)"));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s)
        return;
    size_t len = strlen(s);
    s[len] = '\n';   /* json_dumps leaves room: replace NUL, write len+1 */
    write_line(s, len + 1);
    free(s);
}

void tg_log_ctxv(tg_log_level level, const tg_log_ctx *ctx, const char *fmt, va_list ap)
{
    char msg[2048];
    char ts[40];
    int saved = errno;

    vsnprintf(msg, sizeof(msg), fmt, ap);
    format_time(ts, sizeof(ts));
    if (log_format == TG_LOGFMT_JSON)
        emit_json(level, ctx, ts, msg);
    else
        emit_text(level, ctx, ts, msg);
    errno = saved;
}

void tg_log_ctx_msg(tg_log_level level, const tg_log_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tg_log_ctxv(level, ctx, fmt, ap);
    va_end(ap);
}
