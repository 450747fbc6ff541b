/*
 * rw_errmap.c -- the server's error for a rewritten statement, said as the
 * server would have said it for the client's own text.
 *
 * A value of a type the column cannot take (`tenant_id = '3'::text` for a
 * bigint column) reaches the injected helper calls first: their polymorphic
 * arguments cannot be unified, and PostgreSQL reports 42883 "function
 * tenantguard.as_type(bigint, bigint, text) does not exist" -- naming our
 * helper, where the client's statement alone gets 42804 "column "tenant_id"
 * is of type bigint but expression is of type text". Parse analysis stops at
 * that first error, so nothing ran; only the words differ. This reads the
 * failed call back out of the rewritten text and the message and gives the
 * words PostgreSQL uses for an assignment of the wrong type.
 *
 * Pure text in, text out. Anything it cannot be sure of (a translated
 * message, a call it cannot find, argument types it cannot pair) leaves the
 * server's error as it is.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "rewrite/rewrite.h"
#include "rewrite/rw_internal.h"

/* Which arguments of each helper are (column sample, client value) pairs,
 * and where the column's name is written: a `(NULL::t)."col"` sample, or a
 * 'col' literal argument. */
typedef struct helper_pairs {
    const char *name;
    struct {
        int sample, value, name_arg;
    } pair[2];
    int n;
} helper_pairs;

static const helper_pairs HELPERS[] = {
    {"as_type", {{1, 2, 1}}, 1},
    {"tenant_keep", {{2, 3, 1}}, 1},
    {"ws_derive", {{1, 2, 1}}, 1},
    {"audit_derive", {{1, 2, 1}}, 1},
    {"ws_verify", {{1, 2, 1}, {3, 4, 5}}, 2},
    {"ws_verify_update", {{1, 2, 1}, {3, 4, 5}}, 2},
    {"audit_verify", {{1, 2, 1}, {3, 4, 5}}, 2},
    {"audit_verify_tenant", {{1, 2, 1}, {3, 4, 5}}, 2},
};

#define MAX_ARGS 8

typedef struct span {
    const char *p;
    size_t n;
} span;

/* "T1, T2, ..." -> spans; -1 when there are more than MAX_ARGS. */
static int split_types(const char *p, const char *end, span *out)
{
    int n = 0;
    while (p < end) {
        const char *c = memchr(p, ',', (size_t)(end - p));
        const char *stop = c ? c : end;
        if (n == MAX_ARGS)
            return -1;
        out[n++] = (span){p, (size_t)(stop - p)};
        p = c ? c + 2 : end;   /* ", " */
        if (c && (c + 1 >= end || c[1] != ' '))
            return -1;
    }
    return n;
}

/* The top-level arguments of the call whose '(' is at open; -1 when they do
 * not close or are too many. Quotes ('..', "..") and nesting respected. */
static int split_args(const char *open, const char *end, span *out)
{
    int n = 0, depth = 0;
    const char *start = open + 1;
    for (const char *p = open + 1; p < end; p++) {
        char ch = *p;
        if (ch == '\'' || ch == '"') {
            for (p++; p < end; p++)
                if (*p == ch) {
                    if (p + 1 < end && p[1] == ch)
                        p++;
                    else
                        break;
                }
            if (p >= end)
                return -1;
            continue;
        }
        if (ch == '(' || ch == '[') {
            depth++;
        } else if ((ch == ')' || ch == ']') && depth > 0) {
            depth--;
        } else if ((ch == ',' || ch == ')') && depth == 0) {
            if (n == MAX_ARGS)
                return -1;
            while (start < p && *start == ' ')
                start++;
            out[n++] = (span){start, (size_t)(p - start)};
            if (ch == ')')
                return n;
            start = p + 1;
        }
    }
    return -1;
}

/* A column name out of 'col' or ...."col" / ....col; false when neither. */
static bool column_name(span a, char *out, size_t outlen)
{
    size_t w = 0;
    const char *p = a.p, *end = a.p + a.n;
    while (end > p && end[-1] == ' ')
        end--;
    if (end - p >= 2 && *p == '\'' && end[-1] == '\'') {
        for (p++; p < end - 1 && w + 1 < outlen; p++) {
            if (*p == '\'')
                p++;   /* '' */
            out[w++] = *p;
        }
    } else if (end > p && end[-1] == '"') {
        const char *q = end - 2;
        while (q >= p && !(*q == '"' && (q == p || q[-1] != '"')))
            q -= (*q == '"') ? 2 : 1;
        if (q < p)
            return false;
        for (const char *c = q + 1; c < end - 1 && w + 1 < outlen; c++) {
            if (*c == '"')
                c++;
            out[w++] = *c;
        }
    } else {
        const char *q = end;
        while (q > p && q[-1] != '.')
            q--;
        if (q == end)
            return false;
        for (; q < end && w + 1 < outlen; q++)
            out[w++] = *q;
    }
    out[w] = '\0';
    return w > 0;
}

bool rw_map_helper_error(const rw_policy *pol, const char *text, const char *message, int position, char *out,
                         size_t outlen)
{
    if (!pol || !pol->helper_q || !text || !message)
        return false;
    /* The schema as the server prints it: helper_q without its quotes. */
    const char *helper_q = pol->helper_q;
    char helper_schema[128];
    size_t w = 0;
    if (helper_q[0] == '"') {
        for (const char *c = helper_q + 1; *c && w + 1 < sizeof(helper_schema); c++) {
            if (*c == '"' && c[1] != '"')
                break;
            if (*c == '"')
                c++;
            helper_schema[w++] = *c;
        }
    } else {
        w = (size_t)snprintf(helper_schema, sizeof(helper_schema), "%s", helper_q);
        if (w >= sizeof(helper_schema))
            return false;
    }
    helper_schema[w] = '\0';
    /* "function SCHEMA.NAME(T1, T2) does not exist" */
    static const char pre[] = "function ", post[] = ") does not exist";
    size_t ml = strlen(message), sl = strlen(helper_schema);
    if (ml < sizeof(pre) + sl + sizeof(post) || strncmp(message, pre, sizeof(pre) - 1) != 0 ||
        strcmp(message + ml - (sizeof(post) - 1), post) != 0)
        return false;
    const char *name = message + sizeof(pre) - 1;
    if (strncmp(name, helper_schema, sl) != 0 || name[sl] != '.')
        return false;
    name += sl + 1;
    const char *open = strchr(name, '(');
    if (!open)
        return false;
    const helper_pairs *h = NULL;
    for (size_t i = 0; i < sizeof(HELPERS) / sizeof(HELPERS[0]); i++)
        if (strlen(HELPERS[i].name) == (size_t)(open - name) && strncmp(name, HELPERS[i].name, (size_t)(open - name)) == 0)
            h = &HELPERS[i];
    if (!h)
        return false;
    span types[MAX_ARGS];
    int nt = split_types(open + 1, message + ml - (sizeof(post) - 1), types);
    if (nt < 0)
        return false;

    /* The call in the rewritten text: the only one, or the one at the
     * error's position (a character offset: used only over ASCII text). */
    char call[160];
    int cl = snprintf(call, sizeof(call), "%s.%s(", helper_q, h->name);
    if (cl < 0 || (size_t)cl >= sizeof(call))
        return false;
    const char *at = NULL, *hit = text;
    int found = 0;
    while ((hit = strstr(hit, call)) != NULL) {
        found++;
        if (!at)
            at = hit;
        if (position > 0 && hit - text == position - 1) {
            bool ascii = true;
            for (const char *c = text; c < hit; c++)
                ascii = ascii && !((unsigned char)*c & 0x80);
            if (ascii) {
                at = hit;
                found = 1;
                break;
            }
        }
        hit++;
    }
    if (found != 1)
        return false;
    span args[MAX_ARGS];
    int na = split_args(at + cl - 1, text + strlen(text), args);
    if (na != nt)
        return false;

    for (int k = 0; k < h->n; k++) {
        int si = h->pair[k].sample, vi = h->pair[k].value;
        if (si >= nt || vi >= nt || h->pair[k].name_arg >= na)
            return false;
        span st = types[si], vt = types[vi];
        if (st.n == vt.n && memcmp(st.p, vt.p, st.n) == 0)
            continue;
        if ((st.n == 7 && memcmp(st.p, "unknown", 7) == 0) || (vt.n == 7 && memcmp(vt.p, "unknown", 7) == 0))
            continue;
        char col[128];
        if (!column_name(args[h->pair[k].name_arg], col, sizeof(col)))
            return false;
        int n = snprintf(out, outlen, "column \"%s\" is of type %.*s but expression is of type %.*s", col, (int)st.n,
                         st.p, (int)vt.n, vt.p);
        return n > 0 && (size_t)n < outlen;
    }
    return false;
}
