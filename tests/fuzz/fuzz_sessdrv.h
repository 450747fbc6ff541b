/*
 * fuzz_sessdrv.h -- drive a real tenantguard session in-process: the proxy's
 * own code (sess_new, startup_begin, ... the relay) on a real libevent loop,
 * its client end a socketpair the harness writes to, its server a unix socket
 * the harness listens on and plays PostgreSQL through.
 *
 * Input (both harnesses):
 *
 *   byte 0   variant: bits 0-1 mode (0 off, 1 observe, 2-3 enforce);
 *            bit 2 client_tls_mode = allow and server_sslmode = prefer;
 *            bit 3 buffer_high_water at its minimum (16 kB);
 *            bits 4-6 the canned server's authentication (fuzz_startup:
 *            trust, cleartext, md5, SASL, refusal, ...);
 *            bit 7 the session is one accepted over max_client_conn
 *   then ops, each one byte:
 *     op & 7 == 0  the client sends: u16 length (big endian), bytes
 *               1  the server sends: u16 length, bytes
 *               2  read everything the proxy sent the client
 *               3  read everything the proxy sent the server
 *               4  the client half-closes (shutdown SHUT_WR)
 *               5  the client closes
 *               6  the server closes
 *               7  by op >> 3: 0 policy change (a reload: prepared
 *                  statements go stale), 1 a CancelRequest with the
 *                  session's real key, 2 one with a wrong key, else a pause
 *   After every op the event loop runs until it has nothing left to do.
 *
 * After each input every session is closed and freed, and the process must
 * hold exactly the file descriptors it held before (else abort: an fd leak).
 */
#ifndef TG_FUZZ_SESSDRV_H
#define TG_FUZZ_SESSDRV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* fuzz_startup: the harness answers the proxy like a small PostgreSQL
 * (authentication per variant, then ReadyForQuery, results, errors). */
void fz_init(bool reactive_server);
int fz_run(const uint8_t *data, size_t size);

#endif
