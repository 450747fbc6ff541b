/*
 * cli_common.c -- config, connection string, option parsing and output
 * shared by the sidecar's commands.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backfill/cli_common.h"

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "tenantguard %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry: tenantguard %s --help\n", cmd);
    return CLI_EXIT_USAGE;
}

int cli_setup(cli_common *cc)
{
    tg_config_error err;
    if (cc->config_path)
        cc->cfg = tg_config_load(cc->config_path, &err);
    else
        cc->cfg = tg_config_load_string("defaults", "", &err);
    if (!cc->cfg) {
        char msg[700];
        snprintf(msg, sizeof(msg), "%s:%d: %s", cc->config_path ? cc->config_path : "defaults",
                 err.line, err.message);
        cli_error(cc, CLI_EXIT_ERROR, "config", msg);
        return CLI_EXIT_ERROR;
    }
    if (cc->dsn)
        cc->conninfo = cc->dsn;
    else if (cc->cfg->sidecar_dsn && cc->cfg->sidecar_dsn[0])
        cc->conninfo = cc->cfg->sidecar_dsn;
    else
        cc->conninfo = NULL;     /* libpq reads PGHOST, PGPORT, PGUSER, PGDATABASE, ... */
    return CLI_EXIT_OK;
}

void cli_teardown(cli_common *cc)
{
    if (cc->cfg)
        tg_config_unref(cc->cfg);
    cc->cfg = NULL;
}

int cli_int_opt(const cli_common *cc, const char *opt, const char *val, int64_t min, int64_t max,
                bool unit_ms, int64_t *out)
{
    char *end;
    errno = 0;
    long long n = strtoll(val, &end, 10);
    if (end != val && unit_ms) {
        if (strcmp(end, "ms") == 0)
            end += 2;
        else if (strcmp(end, "s") == 0 && n <= INT64_MAX / 1000) {
            n *= 1000;
            end += 1;
        }
    }
    if (end == val || *end || errno == ERANGE || *val == '-' || *val == '+')
        return cli_usage_error(cc->cmd, "%s: \"%s\" is not a whole number%s", opt, val,
                               unit_ms ? " of milliseconds (or 5s)" : "");
    if (n < min || n > max)
        return cli_usage_error(cc->cmd, "%s: %lld is out of range [%lld, %lld]", opt, n,
                               (long long)min, (long long)max);
    *out = n;
    return 0;
}

void cli_json_line(json_t *obj)
{
    char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        fflush(stdout);
        free(s);
    }
    json_decref(obj);
}

void cli_error(const cli_common *cc, int exit_code, const char *reason, const char *message)
{
    if (cc->json) {
        cli_json_line(json_pack("{s:s,s:i,s:s,s:s}", "event", "error", "exit_code", exit_code,
                                "reason", reason, "message", message));
        return;
    }
    fprintf(stderr, "tenantguard %s: %s\n", cc->cmd, message);
}

/* ---------------------------------------------------------------- tables */

struct cli_table {
    int ncols;
    int nrows;
    int cap;
    char **cells;            /* (nrows + 1) * ncols, row 0 = headers */
};

static void table_push(cli_table *t, const char *const *cells)
{
    if (t->nrows + 1 >= t->cap) {
        int cap = t->cap ? t->cap * 2 : 16;
        char **g = realloc(t->cells, (size_t)cap * (size_t)t->ncols * sizeof(char *));
        if (!g)
            return;
        t->cells = g;
        t->cap = cap;
    }
    for (int c = 0; c < t->ncols; c++)
        t->cells[t->nrows * t->ncols + c] = strdup(cells[c] ? cells[c] : "");
    t->nrows++;
}

cli_table *cli_table_new(int ncols, const char *const *headers)
{
    cli_table *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->ncols = ncols;
    table_push(t, headers);
    return t;
}

void cli_table_add(cli_table *t, const char *const *cells)
{
    if (t)
        table_push(t, cells);
}

static void rule(const int *w, int ncols, FILE *out)
{
    for (int c = 0; c < ncols; c++) {
        fputc('+', out);
        for (int i = 0; i < w[c] + 2; i++)
            fputc('-', out);
    }
    fputs("+\n", out);
}

void cli_table_print(const cli_table *t, FILE *out)
{
    if (!t)
        return;
    int w[16] = {0};
    for (int r = 0; r < t->nrows; r++)
        for (int c = 0; c < t->ncols && c < 16; c++) {
            int l = (int)strlen(t->cells[r * t->ncols + c]);
            if (l > w[c])
                w[c] = l;
        }
    rule(w, t->ncols, out);
    for (int r = 0; r < t->nrows; r++) {
        for (int c = 0; c < t->ncols; c++)
            fprintf(out, "| %-*s ", w[c], t->cells[r * t->ncols + c]);
        fputs("|\n", out);
        if (r == 0)
            rule(w, t->ncols, out);
    }
    rule(w, t->ncols, out);
}

void cli_table_free(cli_table *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}

/* ---------------------------------------------------------------- numbers */

const char *cli_num(int64_t n, char *buf, size_t len)
{
    char raw[32];
    int l = snprintf(raw, sizeof(raw), "%" PRId64, n < 0 ? -n : n);
    size_t k = 0;
    if (n < 0 && k + 1 < len)
        buf[k++] = '-';
    for (int i = 0; i < l && k + 2 < len; i++) {
        if (i > 0 && (l - i) % 3 == 0)
            buf[k++] = ',';
        buf[k++] = raw[i];
    }
    buf[k] = '\0';
    return buf;
}

const char *cli_duration(double s, char *buf, size_t len)
{
    if (s < 1)
        snprintf(buf, len, "%d ms", (int)(s * 1000 + 0.5));
    else if (s < 60)
        snprintf(buf, len, "%.1f s", s);
    else if (s < 3600)
        snprintf(buf, len, "%d min %02d s", (int)s / 60, (int)s % 60);
    else
        snprintf(buf, len, "%d h %02d min", (int)s / 3600, ((int)s % 3600) / 60);
    return buf;
}
