/*
 * tls.c -- OpenSSL contexts for both sides: TLS 1.2 at least, the library's
 * secure default cipher list, no renegotiation.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "proxy/runtime.h"

static void ssl_error(char *err, size_t len, const char *what, const char *file)
{
    char buf[200] = "";
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    snprintf(err, len, "%s %s: %s", what, file ? file : "", buf);
    ERR_clear_error();
}

static SSL_CTX *base_ctx(const SSL_METHOD *method)
{
    SSL_CTX *ctx = SSL_CTX_new(method);
    if (!ctx)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* TLS 1.2: forward-secret AEAD suites only (TLS 1.3 suites are all of
     * that kind already). */
    SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!MD5:!DSS");
    return ctx;
}

SSL_CTX *tls_client_ctx_new(const tg_config *cfg, char *err, size_t errlen)
{
    if (cfg->client_tls_mode == TG_CLIENT_TLS_DISABLE)
        return NULL;
    SSL_CTX *ctx = base_ctx(TLS_server_method());
    if (!ctx) {
        ssl_error(err, errlen, "SSL_CTX_new", NULL);
        return NULL;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->client_tls_cert_file) != 1) {
        ssl_error(err, errlen, "cannot load client_tls_cert_file", cfg->client_tls_cert_file);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->client_tls_key_file, SSL_FILETYPE_PEM) != 1) {
        ssl_error(err, errlen, "cannot load client_tls_key_file", cfg->client_tls_key_file);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ssl_error(err, errlen, "client_tls_key_file does not match the certificate", NULL);
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

SSL_CTX *tls_server_ctx_new(const tg_config *cfg, char *err, size_t errlen)
{
    if (cfg->server_sslmode == TG_SERVER_SSL_DISABLE)
        return NULL;
    SSL_CTX *ctx = base_ctx(TLS_client_method());
    if (!ctx) {
        ssl_error(err, errlen, "SSL_CTX_new", NULL);
        return NULL;
    }
    if (cfg->server_sslmode == TG_SERVER_SSL_VERIFY_FULL) {
        int ok = cfg->server_tls_ca_file[0]
                     ? SSL_CTX_load_verify_locations(ctx, cfg->server_tls_ca_file, NULL)
                     : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) {
            ssl_error(err, errlen, "cannot load server_tls_ca_file", cfg->server_tls_ca_file);
            goto fail;
        }
    }
    if (cfg->server_tls_cert_file[0]) {
        if (SSL_CTX_use_certificate_chain_file(ctx, cfg->server_tls_cert_file) != 1 ||
            SSL_CTX_use_PrivateKey_file(ctx, cfg->server_tls_key_file, SSL_FILETYPE_PEM) != 1) {
            ssl_error(err, errlen, "cannot load server_tls_cert_file/key", cfg->server_tls_cert_file);
            goto fail;
        }
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}
