/*
 * fuzz_admin -- the console: a real console session (sess_new +
 * startup_begin on a real libevent loop, in-process), logged in with
 * SCRAM-SHA-256 like psql does, then fed commands from the input. Drives the
 * command parser (admin_cmd.c), every handler's argument checks, the SHOW
 * commands over live sessions, SET mode / RELOAD / PAUSE / KILL, and the
 * BACKFILL commands, whose worker thread meets a server that is not there.
 *
 * Input: byte 0 picks the form of the rest
 *   bit 0 clear  text: one command per line, each sent as a simple Query
 *                after login; the harness waits for its ReadyForQuery
 *   bit 0 set    raw:  the bytes go to the console as they are after login
 *                (any message type, broken lengths, the extended protocol)
 *   bit 1 set    the login itself is the input's: the bytes after byte 0
 *                are the client's from its StartupMessage on (SASL messages)
 *
 * What must hold besides "no crash, no sanitizer report, no leak": every
 * answer is a well-formed message stream; each simple Query gets exactly one
 * ReadyForQuery, after either a CommandComplete, an ErrorResponse with a
 * five-character SQLSTATE and a message, or an EmptyQueryResponse; every
 * session is freed and no fd leaks. SHUTDOWN is left out (it ends the
 * process's runtime, which the integration tests cover): inputs that name
 * it are refused.
 */
#include "config.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "policy/log.h"
#include "proxy/admin.h"
#include "proxy/pgproto.h"
#include "proxy/runtime.h"
#include "proxy/session.h"
#include "proxy/worker.h"
#include "tests/fuzz/fuzz_util.h"

#define PASSWORD "fuzz-console-password"
#define CLIENT_NONCE "fuzzclientnonce0123456789"
#define WAIT_ROUNDS 4000   /* x 1 ms: how long a command answered later may take */

static struct event_base *base;
static tg_runtime rt;
static char dir[64];
static uint8_t client_key[32], stored_key[32];

static void b64(const uint8_t *p, int n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, p, n);
}

static void hmac(const uint8_t *key, const void *msg, size_t n, uint8_t out[32])
{
    unsigned int len = 32;
    if (!HMAC(EVP_sha256(), key, 32, msg, n, out, &len))
        fz_die("HMAC");
}

/* An admin_auth_file with one user whose verifier has one iteration, so a
 * login costs a few hashes. */
static void write_auth_file(const char *path)
{
    static const uint8_t salt[16] = "fuzz-salt-16byte";
    uint8_t salted[32], server_key[32];
    if (!PKCS5_PBKDF2_HMAC(PASSWORD, (int)strlen(PASSWORD), salt, sizeof(salt), 1, EVP_sha256(), 32, salted))
        fz_die("PBKDF2");
    hmac(salted, "Client Key", 10, client_key);
    hmac(salted, "Server Key", 10, server_key);
    SHA256(client_key, 32, stored_key);
    char s[32], st[64], sv[64];
    b64(salt, 16, s);
    b64(stored_key, 32, st);
    b64(server_key, 32, sv);
    FILE *f = fopen(path, "w");
    if (!f)
        fz_die("auth file");
    fprintf(f, "\"admin\" \"SCRAM-SHA-256$1:%s$%s:%s\"\n\"other\" \"SCRAM-SHA-256$1:%s$%s:%s\"\n", s, st, sv, s, st,
            sv);
    fclose(f);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(dir, sizeof(dir), "/tmp/tg-fuzz-admin-XXXXXX");
    fz_setup_process(dir);
    char auth[128], ini_path[128];
    snprintf(auth, sizeof(auth), "%s/userlist.txt", dir);
    snprintf(ini_path, sizeof(ini_path), "%s/tenantguard.ini", dir);
    write_auth_file(auth);
    /* No server listens in `dir`: the backfill's connection fails at once. */
    FILE *f = fopen(ini_path, "w");
    if (!f)
        fz_die("config file");
    fprintf(f,
            "[tenantguard]\n"
            "listen_addr = 127.0.0.1\n"
            "server_host = %s\n"
            "mode = enforce\n"
            "log_level = debug\n"
            "admin_auth_file = %s\n"
            "sidecar_dsn = host=%s port=5432 dbname=app user=app connect_timeout=1\n"
            "cache_max_entries = 64\n"
            "[table policies]\n"
            "mode = observe\n",
            dir, auth, dir);
    fclose(f);
    tg_config_error err;
    tg_config *cfg = tg_config_load(ini_path, &err);
    if (!cfg) {
        fprintf(stderr, "fuzz_admin: config: %s\n", err.message);
        abort();
    }
    char emsg[512];
    base = event_base_new();
    if (!base || rw_selftest())
        fz_die("event base / parser self-test");
    TAILQ_INIT(&rt.sessions);
    TAILQ_INIT(&rt.justfree);
    rt.base = base;
    rt.cfg = cfg;
    rt.generation = 1;
    rt.cancels = cancel_map_new();
    rt.reaper = event_new(base, -1, 0, fz_reap, &rt);
    rt.cache = rw_cache_new(1 << 20, 64);
    rt.mailbox = mailbox_new(base);
    if (!(rt.admin_users = admin_users_load(auth, emsg, sizeof(emsg))))
        fz_die(emsg);
    if (!rt.cancels || !rt.reaper || !rt.cache || !rt.mailbox || admin_backfill_init(&rt) != 0 ||
        rt_policy_rebuild(&rt) != 0)
        fz_die("runtime");
    return 0;
}

/* ---------------------------------------------------------------- the client */

typedef struct client {
    int fd;
    tg_session *s;              /* NULL once it is gone */
    struct evbuffer *in;        /* bytes from the console not yet looked at */
} client;

static bool session_alive(const client *c)
{
    tg_session *x;
    TAILQ_FOREACH(x, &rt.sessions, link)
        if (x == c->s)
            return x->state != SS_CLOSING && x->state != SS_DEAD;
    return false;
}

static void pump(void)
{
    for (int i = 0; i < 8; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
}

static void read_some(client *c)
{
    uint8_t buf[16384];
    for (;;) {
        ssize_t r = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (r <= 0)
            return;
        evbuffer_add(c->in, buf, (size_t)r);
    }
}

static void send_all(client *c, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (int tries = 0; n > 0 && tries < 64; tries++) {
        ssize_t w = send(c->fd, b, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            b += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return;
        pump();
        read_some(c);   /* a console that answers while we write must not block us */
    }
}

static void send_msg(client *c, char type, const void *payload, size_t n)
{
    uint8_t hdr[5] = {(uint8_t)type};
    uint32_t len = htonl((uint32_t)n + 4);
    memcpy(hdr + 1, &len, 4);
    send_all(c, hdr, 5);
    send_all(c, payload, n);
}

/* The next whole message from the console, waiting (pumping) for it; false
 * when the console closed or stays silent. *payload is malloc'd. */
static bool next_msg(client *c, char *type, uint8_t **payload, uint32_t *n)
{
    for (int round = 0; round < WAIT_ROUNDS; round++) {
        if (evbuffer_get_length(c->in) >= 5) {
            uint8_t hdr[5];
            evbuffer_copyout(c->in, hdr, 5);
            uint32_t len;
            memcpy(&len, hdr + 1, 4);
            len = ntohl(len);
            if (len < 4 || len > (1u << 24)) {
                fprintf(stderr, "fuzz_admin: the console sent message '%c' with length %u\n", hdr[0], len);
                abort();
            }
            if (evbuffer_get_length(c->in) >= (size_t)len + 1) {
                *type = (char)hdr[0];
                *n = len - 4;
                *payload = malloc(*n + 1);
                if (!*payload)
                    fz_die("malloc");
                evbuffer_drain(c->in, 5);
                evbuffer_remove(c->in, *payload, *n);
                (*payload)[*n] = 0;
                return true;
            }
        }
        pump();
        read_some(c);
        if (evbuffer_get_length(c->in) < 5 && !session_alive(c)) {
            pump();
            read_some(c);
            if (evbuffer_get_length(c->in) < 5)
                return false;
        }
        if (round > 16)
            usleep(1000);   /* a worker thread answers later */
    }
    return false;
}

/* ErrorResponse fields: a severity, a five-character SQLSTATE, a message. */
static void check_error(const uint8_t *p, uint32_t n)
{
    bool code = false, msg = false;
    uint32_t i = 0;
    while (i < n && p[i]) {
        char f = (char)p[i++];
        const char *v = (const char *)p + i;
        size_t l = strnlen(v, n - i);
        if (i + l >= n) {
            fprintf(stderr, "fuzz_admin: ErrorResponse field '%c' not terminated\n", f);
            abort();
        }
        if (f == 'C')
            code = l == 5;
        if (f == 'M')
            msg = l > 0;
        i += (uint32_t)l + 1;
    }
    if (!code || !msg) {
        fprintf(stderr, "fuzz_admin: ErrorResponse without a SQLSTATE or message\n");
        abort();
    }
}

/* Read the answer to one simple Query up to its ReadyForQuery. */
static void expect_answer(client *c)
{
    bool ended = false;   /* a CommandComplete, an ErrorResponse or an EmptyQueryResponse came */
    for (;;) {
        char t;
        uint8_t *p;
        uint32_t n;
        if (!next_msg(c, &t, &p, &n)) {
            if (session_alive(c) && c->s->state == SS_ADMIN) {
                fprintf(stderr, "fuzz_admin: a console command got no ReadyForQuery\n");
                abort();
            }
            return;   /* KILL CLIENT of itself, or a fatal error */
        }
        switch (t) {
        case 'E':
            check_error(p, n);
            ended = true;
            break;
        case 'C':
        case 'I':
            ended = true;
            break;
        case 'T':
        case 'D':
        case 'N':
        case 'S':
            break;
        case 'Z':
            free(p);
            if (!ended) {
                fprintf(stderr, "fuzz_admin: ReadyForQuery without an answer before it\n");
                abort();
            }
            return;
        default:
            fprintf(stderr, "fuzz_admin: unexpected message '%c' from the console\n", t);
            abort();
        }
        free(p);
    }
}

static void startup(client *c)
{
    static const char params[] = "user\0admin\0database\0tenantguard\0application_name\0fuzz\0";
    uint8_t pkt[8 + sizeof(params)];
    uint32_t len = htonl((uint32_t)sizeof(pkt)), ver = htonl(3u << 16);
    memcpy(pkt, &len, 4);
    memcpy(pkt + 4, &ver, 4);
    memcpy(pkt + 8, params, sizeof(params));   /* ends with the list's own NUL */
    send_all(c, pkt, sizeof(pkt));
}

/* SCRAM-SHA-256 as a client (RFC 5802/7677); true once logged in. */
static bool login(client *c)
{
    char t;
    uint8_t *p;
    uint32_t n;
    startup(c);
    if (!next_msg(c, &t, &p, &n) || t != 'R')
        fz_die("no AuthenticationSASL");
    free(p);
    static const char first_bare[] = "n=,r=" CLIENT_NONCE;
    char init[128];
    int il = snprintf(init, sizeof(init), "SCRAM-SHA-256%c....n,,%s", 0, first_bare);
    uint32_t dl = htonl((uint32_t)(il - 18));
    memcpy(init + 14, &dl, 4);
    send_msg(c, PG_FE_PASSWORD, init, (size_t)il);
    if (!next_msg(c, &t, &p, &n) || t != 'R' || n < 4)
        fz_die("no AuthenticationSASLContinue");
    char *server_first = strndup((const char *)p + 4, n - 4);
    free(p);
    const char *r = strstr(server_first, "r=");
    const char *comma = r ? strchr(r, ',') : NULL;
    if (!r || !comma)
        fz_die("server-first without a nonce");
    char final_wo[256], auth_msg[1024];
    snprintf(final_wo, sizeof(final_wo), "c=biws,r=%.*s", (int)(comma - r - 2), r + 2);
    snprintf(auth_msg, sizeof(auth_msg), "%s,%s,%s", first_bare, server_first, final_wo);
    free(server_first);
    uint8_t sig[32], proof[32];
    hmac(stored_key, auth_msg, strlen(auth_msg), sig);
    for (int i = 0; i < 32; i++)
        proof[i] = client_key[i] ^ sig[i];
    char proof64[64], final[400];
    b64(proof, 32, proof64);
    int fl = snprintf(final, sizeof(final), "%s,p=%s", final_wo, proof64);
    send_msg(c, PG_FE_PASSWORD, final, (size_t)fl);
    for (;;) {   /* SASLFinal, AuthenticationOk, ParameterStatus..., ReadyForQuery */
        if (!next_msg(c, &t, &p, &n))
            fz_die("login did not finish");
        free(p);
        if (t == 'E')
            fz_die("login refused");
        if (t == 'Z')
            return true;
    }
}

/* ---------------------------------------------------------------- one input */

static bool names_shutdown(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i + 8 <= size; i++)
        if (strncasecmp((const char *)data + i, "shutdown", 8) == 0)
            return true;
    return false;
}

/* Wait until the console's backfill and its jobs are idle, so the next input
 * starts from the same state. */
static void settle_backfill(void)
{
    abf_progress p;
    for (int i = 0; i < WAIT_ROUNDS && (admin_backfill_progress(&rt, &p) || (rt.jobs && workq_busy(rt.jobs) > 0));
         i++) {
        pump();
        usleep(1000);
    }
    pump();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    if (names_shutdown(data, size))
        return -1;
    int fds_before = fz_count_fds();
    uint8_t form = data[0];
    data++;
    size--;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        fz_die("socketpair");
    client c = {.fd = sv[0], .in = evbuffer_new()};
    c.s = sess_new(&rt, sv[1], "fuzz");
    if (!c.s || !c.in)
        fz_die("sess_new");
    c.s->is_console = true;
    c.s->log.side = "admin";
    rt.n_console++;
    startup_begin(c.s);

    if (form & 2) {
        send_all(&c, data, size);
        pump();
        read_some(&c);
    } else if (login(&c) && (form & 1)) {
        send_all(&c, data, size);
        for (int i = 0; i < 64; i++) {
            pump();
            read_some(&c);
            usleep(100);
        }
    } else {
        size_t i = 0;
        while (i < size && session_alive(&c)) {
            const uint8_t *nl = memchr(data + i, '\n', size - i);
            size_t len = nl ? (size_t)(nl - data - i) : size - i;
            char *q = malloc(len + 1);
            if (!q)
                fz_die("malloc");
            memcpy(q, data + i, len);
            q[len] = 0;
            send_msg(&c, PG_FE_QUERY, q, strlen(q) + 1);   /* a NUL inside ends the text, as in libpq */
            free(q);
            expect_answer(&c);
            i += len + 1;
        }
    }

    close(c.fd);
    pump();
    tg_session *s;
    while ((s = TAILQ_FIRST(&rt.sessions)) != NULL)
        sess_close(s, "fuzz input done");
    settle_backfill();
    if (!TAILQ_EMPTY(&rt.justfree))
        fz_reap(-1, 0, &rt);
    if (rt.n_sessions != 0)
        fz_die("session count not back to zero");
    evbuffer_free(c.in);
    /* The next input starts from the config's own modes, not paused. */
    char err[200];
    rt_set_mode(&rt, NULL, true, TG_MODE_OFF, err, sizeof(err));
    rt_resume(&rt);
    rw_cache_clear(rt.cache);
    int fds_after = fz_count_fds();
    if (fds_after != fds_before) {
        fprintf(stderr, "fuzz_admin: %d file descriptor(s) before the input, %d after\n", fds_before, fds_after);
        abort();
    }
    return 0;
}
