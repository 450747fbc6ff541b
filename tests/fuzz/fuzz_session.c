/*
 * fuzz_session -- a whole session through the proxy's own code, both sides
 * scripted by the input: what the client sends and what "PostgreSQL"
 * answers, cut at the points the input chooses, with reads, half-closes,
 * closes, policy changes and cancel requests in between (fuzz_sessdrv.h).
 * Seeds are real sessions (psql, pgbench, psycopg) recorded byte for byte.
 */
#include <stddef.h>
#include <stdint.h>

#include "tests/fuzz/fuzz_sessdrv.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_init(false);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fz_run(data, size);
}
