/*
 * fuzz_startup -- the client side of a session: SSLRequest, GSSENCRequest,
 * CancelRequest, the StartupMessage, TLS, authentication messages and what
 * follows, all from the input (fuzz_sessdrv.h), against a canned server
 * that answers like a small PostgreSQL: trust, cleartext, md5, SASL (with
 * and without -PLUS), a refusal or GSS as the variant byte says, then
 * ReadyForQuery, results, errors for tenantguard's marker statements, COPY.
 */
#include <stddef.h>
#include <stdint.h>

#include "tests/fuzz/fuzz_sessdrv.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_init(true);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fz_run(data, size);
}
