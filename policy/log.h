/*
 * log.h -- log lines for the daemon and the CLI.
 *
 * One line per call, written with a single write(2) so that lines from the
 * event loop and the backfill thread never interleave. Text or JSON (one
 * object per line, the same fields). A line about a connection carries its
 * prefix (session id, side, user@db, peer) -- and never a parameter value,
 * a password or statement text with literals: callers pass table names,
 * rule names, ids and fingerprints only (style habit 7).
 */
#ifndef TG_LOG_H
#define TG_LOG_H

#include <stdarg.h>
#include <stdint.h>

typedef enum {
    TG_LOG_ERROR = 0,
    TG_LOG_WARNING,
    TG_LOG_INFO,
    TG_LOG_DEBUG,
} tg_log_level;

typedef enum {
    TG_LOGFMT_TEXT = 0,
    TG_LOGFMT_JSON,
} tg_log_format;

/* Who a line is about. Every field may be 0/NULL. */
typedef struct tg_log_ctx {
    uint64_t session_id;
    const char *side;   /* "client", "server", "admin", "backfill" */
    const char *user;
    const char *db;
    const char *peer;   /* "addr:port" or "unix" */
} tg_log_ctx;

void tg_log_configure(tg_log_level level, tg_log_format format);
void tg_log_set_fd(int fd);     /* default 2 (stderr); tests redirect */
int tg_log_enabled(tg_log_level level);

void tg_log_ctxv(tg_log_level level, const tg_log_ctx *ctx, const char *fmt, va_list ap);
void tg_log_ctx_msg(tg_log_level level, const tg_log_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

const char *tg_log_level_name(tg_log_level level);
int tg_log_level_parse(const char *s, tg_log_level *out);

/* Lines without a connection. The level test happens before formatting. */
#define tg_log_at(lvl, ...) \
    do { if (tg_log_enabled(lvl)) tg_log_ctx_msg((lvl), NULL, __VA_ARGS__); } while (0)
#define log_error(...)   tg_log_at(TG_LOG_ERROR, __VA_ARGS__)
#define log_warning(...) tg_log_at(TG_LOG_WARNING, __VA_ARGS__)
#define log_info(...)    tg_log_at(TG_LOG_INFO, __VA_ARGS__)
#define log_debug(...)   tg_log_at(TG_LOG_DEBUG, __VA_ARGS__)

/* Lines about a connection: ctx is a tg_log_ctx pointer. */
#define tg_clog(lvl, ctx, ...) \
    do { if (tg_log_enabled(lvl)) tg_log_ctx_msg((lvl), (ctx), __VA_ARGS__); } while (0)

#endif
