/*
 * admin_auth.c -- who may use the console, and SCRAM-SHA-256 to prove it.
 *
 * admin_auth_file has PgBouncer's userlist.txt format, one user per line:
 *     "name" "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"
 * (PostgreSQL's own verifier format, base64 parts), which `tenantguard
 * passwd NAME` prints. A plaintext password is accepted too, turned into a
 * verifier at load time, with a warning.
 *
 * The SCRAM exchange (RFC 5802 / 7677) is written here on OpenSSL's HMAC and
 * SHA-256 rather than taken from libgsasl: every PostgreSQL client sends an
 * empty user name ("n=,r=...") in its first message -- the login name is the
 * startup packet's -- and libgsasl's server refuses that message, while
 * rewriting it would change the bytes the client's proof covers.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "policy/log.h"
#include "proxy/admin.h"
#include "proxy/runtime.h"

#define SCRAM_ITERATIONS 4096
#define SCRAM_SALT_LEN 16
#define SCRAM_KEY_LEN 32         /* SHA-256 */
#define SCRAM_NONCE_LEN 18

typedef struct admin_user {
    char *name;
    int iter;
    char *salt_b64;
    unsigned char stored[SCRAM_KEY_LEN];
    unsigned char server[SCRAM_KEY_LEN];
} admin_user;

struct admin_users {
    admin_user *u;
    int n;
    admin_user mock;     /* for unknown users: the exchange runs, then fails */
};

/* One exchange in progress (admin_state.sasl points at it). */
struct scram_state {
    const admin_user *user;
    bool known;
    char gs2_header[64];
    char *client_first_bare;
    char *server_first;
    char nonce[128];     /* client nonce + server nonce */
};

/* ---------------------------------------------------------------- base64 */

static char *b64_encode(const unsigned char *in, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (out)
        EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    return out;
}

/* Decode exactly `want` bytes (or any length when want is 0); -1 if bad. */
static int b64_decode(const char *in, unsigned char *out, size_t cap, size_t want)
{
    size_t len = strlen(in);
    if (len % 4 || (len / 4) * 3 > cap + 2)
        return -1;
    unsigned char tmp[256];
    if ((len / 4) * 3 > sizeof(tmp))
        return -1;
    int n = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)len);
    if (n < 0)
        return -1;
    if (len >= 1 && in[len - 1] == '=')
        n--;
    if (len >= 2 && in[len - 2] == '=')
        n--;
    if ((want && (size_t)n != want) || (size_t)n > cap)
        return -1;
    memcpy(out, tmp, (size_t)n);
    return n;
}

/* ---------------------------------------------------------------- parsing */

/* The next "quoted" field of a userlist line; "" inside doubles a quote. */
static char *quoted_field(const char **p)
{
    const char *s = *p;
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s != '"')
        return NULL;
    s++;
    size_t cap = strlen(s) + 1, n = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    for (;;) {
        if (!*s) {
            free(out);
            return NULL;
        }
        if (*s == '"') {
            if (s[1] != '"')
                break;
            s++;
        }
        out[n++] = *s++;
    }
    out[n] = '\0';
    *p = s + 1;
    return out;
}

/* "SCRAM-SHA-256$iter:salt$stored:server" -> the user's fields. */
static int parse_verifier(admin_user *u, const char *v)
{
    if (strncmp(v, "SCRAM-SHA-256$", 14) != 0)
        return -1;
    char *copy = strdup(v + 14);
    if (!copy)
        return -1;
    char *iter = copy, *salt = strchr(copy, ':');
    char *stored = salt ? strchr(salt, '$') : NULL;
    char *server = stored ? strchr(stored, ':') : NULL;
    int rc = -1;
    if (salt && stored && server) {
        *salt++ = *stored++ = *server++ = '\0';
        unsigned char saltbytes[64];
        if (strspn(iter, "0123456789") == strlen(iter) && *iter && atoi(iter) > 0 &&
            b64_decode(salt, saltbytes, sizeof(saltbytes), 0) > 0 &&
            b64_decode(stored, u->stored, SCRAM_KEY_LEN, SCRAM_KEY_LEN) == SCRAM_KEY_LEN &&
            b64_decode(server, u->server, SCRAM_KEY_LEN, SCRAM_KEY_LEN) == SCRAM_KEY_LEN) {
            u->iter = atoi(iter);
            u->salt_b64 = strdup(salt);
            rc = u->salt_b64 ? 0 : -1;
        }
    }
    free(copy);
    return rc;
}

static void hmac(const unsigned char *key, size_t klen, const void *msg, size_t mlen, unsigned char out[32])
{
    unsigned int n = 32;
    HMAC(EVP_sha256(), key, (int)klen, msg, mlen, out, &n);
}

/* A verifier for a password (with a fresh salt), in PostgreSQL's format. */
static char *make_verifier(const char *password)
{
    unsigned char salt[SCRAM_SALT_LEN], salted[32], client_key[32], stored[32], server_key[32];
    if (RAND_bytes(salt, sizeof(salt)) != 1 ||
        PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, sizeof(salt), SCRAM_ITERATIONS, EVP_sha256(),
                          sizeof(salted), salted) != 1)
        return NULL;
    hmac(salted, sizeof(salted), "Client Key", 10, client_key);
    SHA256(client_key, sizeof(client_key), stored);
    hmac(salted, sizeof(salted), "Server Key", 10, server_key);
    char *s64 = b64_encode(salt, sizeof(salt)), *st64 = b64_encode(stored, 32), *sv64 = b64_encode(server_key, 32);
    char *out = NULL;
    if (s64 && st64 && sv64 && asprintf(&out, "SCRAM-SHA-256$%d:%s$%s:%s", SCRAM_ITERATIONS, s64, st64, sv64) < 0)
        out = NULL;
    free(s64);
    free(st64);
    free(sv64);
    OPENSSL_cleanse(salted, sizeof(salted));
    return out;
}

static void user_free(admin_user *u)
{
    free(u->name);
    free(u->salt_b64);
    OPENSSL_cleanse(u, sizeof(*u));
}

void admin_users_free(admin_users *u)
{
    if (!u)
        return;
    for (int i = 0; i < u->n; i++)
        user_free(&u->u[i]);
    free(u->u);
    user_free(&u->mock);
    free(u);
}

admin_users *admin_users_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "admin_auth_file %s: %s", path, strerror(errno));
        return NULL;
    }
    admin_users *users = calloc(1, sizeof(*users));
    char line[4096];
    int lineno = 0;
    bool ok = users != NULL;
    while (ok && fgets(line, sizeof(line), f)) {
        lineno++;
        const char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\n' || *p == '\0' || *p == ';' || *p == '#')
            continue;
        char *name = quoted_field(&p), *secret = name ? quoted_field(&p) : NULL;
        if (!name || !secret || !*name) {
            snprintf(err, errlen, "%s:%d: expected \"name\" \"secret\"", path, lineno);
            free(name);
            free(secret);
            ok = false;
            break;
        }
        admin_user u = {.name = name};
        if (strncmp(secret, "SCRAM-SHA-256$", 14) != 0) {
            /* Not a verifier: a plaintext password (md5 hashes cannot do SCRAM). */
            if (strncmp(secret, "md5", 3) == 0 && strlen(secret) == 35) {
                snprintf(err, errlen, "%s:%d: md5 hashes cannot be used for SCRAM; use tenantguard passwd",
                         path, lineno);
                ok = false;
            } else {
                log_warning("%s:%d: user \"%s\" has a plaintext password; store a verifier from "
                            "`tenantguard passwd %s` instead", path, lineno, name, name);
                char *v = make_verifier(secret);
                ok = v && parse_verifier(&u, v) == 0;
                free(v);
            }
        } else if (parse_verifier(&u, secret) != 0) {
            snprintf(err, errlen, "%s:%d: not a valid SCRAM-SHA-256 verifier", path, lineno);
            ok = false;
        }
        OPENSSL_cleanse(secret, strlen(secret));
        free(secret);
        if (!ok) {
            user_free(&u);
            break;
        }
        admin_user *grown = realloc(users->u, (size_t)(users->n + 1) * sizeof(*grown));
        if (!grown) {
            user_free(&u);
            ok = false;
            break;
        }
        users->u = grown;
        users->u[users->n++] = u;
    }
    OPENSSL_cleanse(line, sizeof(line));
    fclose(f);
    if (ok) {
        /* Random keys nobody has the password for: unknown users go through
         * the same exchange and fail like a wrong password. */
        unsigned char salt[SCRAM_SALT_LEN];
        ok = RAND_bytes(salt, sizeof(salt)) == 1 && RAND_bytes(users->mock.stored, SCRAM_KEY_LEN) == 1 &&
             RAND_bytes(users->mock.server, SCRAM_KEY_LEN) == 1 &&
             (users->mock.salt_b64 = b64_encode(salt, sizeof(salt))) != NULL;
        users->mock.iter = SCRAM_ITERATIONS;
        if (!ok)
            snprintf(err, errlen, "admin_auth_file: cannot set up SCRAM");
    }
    if (!ok) {
        admin_users_free(users);
        return NULL;
    }
    return users;
}

/* ---------------------------------------------------------------- SCRAM */

static const admin_user *find_user(const admin_users *u, const char *name, bool *known)
{
    for (int i = 0; i < u->n; i++)
        if (strcmp(u->u[i].name, name) == 0) {
            *known = true;
            return &u->u[i];
        }
    *known = false;
    return &u->mock;
}

void admin_sasl_free(struct scram_state *st)
{
    if (!st)
        return;
    free(st->client_first_bare);
    free(st->server_first);
    OPENSSL_cleanse(st, sizeof(*st));
    free(st);
}

int admin_sasl_start(tg_runtime *rt, tg_session *s, const char *user)
{
    if (!rt->admin_users)
        return -1;
    struct scram_state *st = calloc(1, sizeof(*st));
    if (!st)
        return -1;
    st->user = find_user(rt->admin_users, user, &st->known);
    s->admin->sasl = st;
    return 0;
}

/* The value of attribute `a` ("r=...") in a comma-separated SCRAM message. */
static const char *attr(const char *msg, char a, size_t *len)
{
    for (const char *p = msg; p && *p;) {
        if (p[0] == a && p[1] == '=') {
            const char *end = strchr(p, ',');
            *len = end ? (size_t)(end - p - 2) : strlen(p + 2);
            return p + 2;
        }
        p = strchr(p, ',');
        if (p)
            p++;
    }
    return NULL;
}

/* client-first: gs2 header "n,," or "y,," (no channel binding: -PLUS is
 * never offered), then "n=<ignored>,r=<nonce>". */
static int step_first(struct scram_state *st, const char *in, char **out, size_t *outlen)
{
    if ((in[0] != 'n' && in[0] != 'y') || in[1] != ',')
        return -1;
    const char *bare = strchr(in + 2, ',');   /* after the optional a=authzid */
    if (!bare)
        return -1;
    bare++;
    size_t hlen = (size_t)(bare - in);
    if (hlen >= sizeof(st->gs2_header))
        return -1;
    memcpy(st->gs2_header, in, hlen);
    st->gs2_header[hlen] = '\0';
    size_t nlen;
    const char *cnonce = attr(bare, 'r', &nlen);
    if (strncmp(bare, "n=", 2) != 0 || !cnonce || nlen == 0 || nlen > 64)
        return -1;
    unsigned char raw[SCRAM_NONCE_LEN];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return -1;
    char *snonce = b64_encode(raw, sizeof(raw));
    if (!snonce)
        return -1;
    snprintf(st->nonce, sizeof(st->nonce), "%.*s%s", (int)nlen, cnonce, snonce);
    free(snonce);
    st->client_first_bare = strdup(bare);
    if (!st->client_first_bare ||
        asprintf(&st->server_first, "r=%s,s=%s,i=%d", st->nonce, st->user->salt_b64, st->user->iter) < 0) {
        st->server_first = NULL;
        return -1;
    }
    *out = strdup(st->server_first);
    *outlen = *out ? strlen(*out) : 0;
    return *out ? 0 : -1;
}

/* client-final: "c=<base64 gs2 header>,r=<nonce>,p=<proof>". */
static int step_final(struct scram_state *st, const char *in, char **out, size_t *outlen)
{
    size_t clen, rlen, plen;
    const char *c = attr(in, 'c', &clen), *r = attr(in, 'r', &rlen), *p = attr(in, 'p', &plen);
    const char *proof_at = strstr(in, ",p=");
    if (!c || !r || !p || !proof_at)
        return -1;
    char *want_c = b64_encode((const unsigned char *)st->gs2_header, strlen(st->gs2_header));
    bool ok = want_c && strlen(want_c) == clen && memcmp(want_c, c, clen) == 0 && rlen == strlen(st->nonce) &&
              memcmp(r, st->nonce, rlen) == 0;
    free(want_c);
    char proof_b64[128];
    unsigned char proof[SCRAM_KEY_LEN];
    if (!ok || plen >= sizeof(proof_b64))
        return -1;
    memcpy(proof_b64, p, plen);
    proof_b64[plen] = '\0';
    if (b64_decode(proof_b64, proof, sizeof(proof), SCRAM_KEY_LEN) != SCRAM_KEY_LEN)
        return -1;
    /* AuthMessage = client-first-bare "," server-first "," client-final-without-proof */
    char *auth = NULL;
    if (asprintf(&auth, "%s,%s,%.*s", st->client_first_bare, st->server_first, (int)(proof_at - in), in) < 0)
        return -1;
    unsigned char sig[32], client_key[32], stored[32], server_sig[32];
    hmac(st->user->stored, SCRAM_KEY_LEN, auth, strlen(auth), sig);
    for (int i = 0; i < SCRAM_KEY_LEN; i++)
        client_key[i] = proof[i] ^ sig[i];
    SHA256(client_key, sizeof(client_key), stored);
    bool proven = CRYPTO_memcmp(stored, st->user->stored, SCRAM_KEY_LEN) == 0 && st->known;
    hmac(st->user->server, SCRAM_KEY_LEN, auth, strlen(auth), server_sig);
    free(auth);
    OPENSSL_cleanse(client_key, sizeof(client_key));
    if (!proven)
        return -1;
    char *v = b64_encode(server_sig, sizeof(server_sig));
    if (!v || asprintf(out, "v=%s", v) < 0) {
        free(v);
        return -1;
    }
    free(v);
    *outlen = strlen(*out);
    return 1;
}

int admin_sasl_step(tg_session *s, const char *in, size_t inlen, char **out, size_t *outlen)
{
    struct scram_state *st = s->admin->sasl;
    char *msg = strndup(in, inlen);   /* SCRAM messages are text; a NUL inside ends it */
    *out = NULL;
    if (!st || !msg) {
        free(msg);
        return -1;
    }
    int rc = st->server_first ? step_final(st, msg, out, outlen) : step_first(st, msg, out, outlen);
    free(msg);
    if (rc < 0) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

/* ---------------------------------------------------------------- passwd */

static char *read_password(void)
{
    struct termios old, quiet;
    bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
    if (tty) {
        fprintf(stderr, "Password: ");
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    char buf[1024];
    char *r = fgets(buf, sizeof(buf), stdin);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fprintf(stderr, "\n");
    }
    if (!r)
        return NULL;
    buf[strcspn(buf, "\r\n")] = '\0';
    char *pw = strdup(buf);
    explicit_bzero(buf, sizeof(buf));
    return pw;
}

int tg_cmd_passwd(int argc, char **argv)
{
    if (argc != 2 || argv[1][0] == '-') {
        FILE *o = (argc == 2 && strcmp(argv[1], "--help") == 0) ? stdout : stderr;
        fprintf(o, "Usage: tenantguard passwd NAME\n"
                   "Reads a password from the terminal (or one line of standard input) and prints the\n"
                   "admin_auth_file line for NAME: \"NAME\" \"SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:"
                   "<ServerKey>\"\n");
        return o == stdout ? 0 : 64;
    }
    if (strchr(argv[1], '"')) {
        fprintf(stderr, "tenantguard passwd: a name may not contain a double quote\n");
        return 64;
    }
    char *pw = read_password();
    if (!pw || !*pw) {
        fprintf(stderr, "tenantguard passwd: no password given\n");
        free(pw);
        return 1;
    }
    char *v = make_verifier(pw);
    explicit_bzero(pw, strlen(pw));
    free(pw);
    if (!v) {
        fprintf(stderr, "tenantguard passwd: cannot compute the verifier\n");
        return 1;
    }
    printf("\"%s\" \"%s\"\n", argv[1], v);
    free(v);
    return 0;
}
