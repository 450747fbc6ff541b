/*
 * rw_tls.c -- libpg_query's copy of standard_conforming_strings.
 *
 * libpg_query keeps the lexer's GUCs thread-local (__thread), while the
 * PostgreSQL 15 server headers declare them as plain globals: a file that
 * includes postgres.h cannot name them without a TLS mismatch at link time.
 * So this file includes no PostgreSQL header and declares them itself.
 * rw_selftest() proves that setting the variable changes how a string
 * literal lexes, so a layout or symbol change is caught at start-up.
 */
#include "config.h"

#include <stdbool.h>

#include "rewrite/rw_internal.h"

extern __thread bool standard_conforming_strings;
extern __thread bool escape_string_warning;

void rw_tls_set_std_strings(bool on)
{
    standard_conforming_strings = on;
    /* A non-standard string with a backslash would otherwise print a
     * WARNING to stderr from inside the parser. */
    escape_string_warning = false;
}

bool rw_tls_get_std_strings(void)
{
    return standard_conforming_strings;
}
