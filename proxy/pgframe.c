/*
 * pgframe.c -- framing and message building on evbuffers (see pgframe.h).
 */
#include "config.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "proxy/pgframe.h"
#include "proxy/pgproto.h"

/* Type byte and length of the 5 header bytes at `hdr`. */
pgf_peek_result pgf_peek(struct evbuffer *buf, pgf_header *h)
{
    uint8_t copy[5];
    const uint8_t *hdr = copy;
    /* Run for every message: read the header in place when the first chain
     * holds it (nearly always), copy it out only across chains. */
    struct evbuffer_iovec v;
    if (evbuffer_peek(buf, 5, NULL, &v, 1) >= 1 && v.iov_len >= 5)
        hdr = v.iov_base;
    else if (evbuffer_copyout(buf, copy, 5) < 5)
        return PGF_NEED_MORE;
    return pgf_peek_mem(hdr, h);
}

const uint8_t *pgf_whole(struct evbuffer *buf, uint32_t max_len, pgf_header *h, bool *bad)
{
    *bad = false;
    pgf_peek_result pr = pgf_peek(buf, h);
    if (pr == PGF_NEED_MORE)
        return NULL;
    if (pr == PGF_BAD_LENGTH || h->len > max_len) {
        *bad = true;
        return NULL;
    }
    if (evbuffer_get_length(buf) < pgf_wire_len(h))
        return NULL;
    return evbuffer_pullup(buf, (ssize_t)pgf_wire_len(h));
}

pgf_peek_result pgf_peek_at(struct evbuffer *buf, size_t off, pgf_header *h)
{
    if (off == 0)
        return pgf_peek(buf, h);
    struct evbuffer_ptr p;
    uint8_t hdr[5];
    if (evbuffer_get_length(buf) < off + 5 || evbuffer_ptr_set(buf, &p, off, EVBUFFER_PTR_SET) != 0 ||
        evbuffer_copyout_from(buf, &p, hdr, 5) < 5)
        return PGF_NEED_MORE;
    return pgf_peek_mem(hdr, h);
}

uint32_t pgf_peek_startup_len(struct evbuffer *buf)
{
    uint32_t len;
    if (evbuffer_copyout(buf, &len, 4) < 4)
        return 0;
    return ntohl(len);
}

/* ---------------------------------------------------------------- reader */

static bool need(pgf_reader *r, size_t n)
{
    if (r->bad || r->left < n) {
        r->bad = true;
        return false;
    }
    return true;
}

uint8_t pgf_get_u8(pgf_reader *r)
{
    if (!need(r, 1))
        return 0;
    r->left--;
    return *r->p++;
}

uint16_t pgf_get_u16(pgf_reader *r)
{
    uint16_t v;
    if (!need(r, 2))
        return 0;
    memcpy(&v, r->p, 2);
    r->p += 2;
    r->left -= 2;
    return ntohs(v);
}

uint32_t pgf_get_u32(pgf_reader *r)
{
    uint32_t v;
    if (!need(r, 4))
        return 0;
    memcpy(&v, r->p, 4);
    r->p += 4;
    r->left -= 4;
    return ntohl(v);
}

const char *pgf_get_str(pgf_reader *r)
{
    if (r->bad)
        return "";
    const uint8_t *nul = memchr(r->p, 0, r->left);
    if (!nul) {
        r->bad = true;
        return "";
    }
    const char *s = (const char *)r->p;
    size_t n = (size_t)(nul - r->p) + 1;
    r->p += n;
    r->left -= n;
    return s;
}

const uint8_t *pgf_get_bytes(pgf_reader *r, size_t n)
{
    if (!need(r, n))
        return NULL;
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

/* ---------------------------------------------------------------- builder */

static void grow(pgf_builder *b, size_t n)
{
    if (b->oom || b->len + n <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
        cap *= 2;
    uint8_t *p = realloc(b->buf, cap);
    if (!p) {
        b->oom = true;
        return;
    }
    b->buf = p;
    b->cap = cap;
}

void pgf_begin(pgf_builder *b, char type)
{
    memset(b, 0, sizeof(*b));
    grow(b, 5);
    if (b->oom)
        return;
    b->buf[0] = (uint8_t)type;
    b->len = 5;   /* length patched in pgf_finish */
}

void pgf_put_bytes(pgf_builder *b, const void *p, size_t n)
{
    grow(b, n);
    if (b->oom)
        return;
    memcpy(b->buf + b->len, p, n);
    b->len += n;
}

void pgf_put_u8(pgf_builder *b, uint8_t v)
{
    pgf_put_bytes(b, &v, 1);
}

void pgf_put_u16(pgf_builder *b, uint16_t v)
{
    v = htons(v);
    pgf_put_bytes(b, &v, 2);
}

void pgf_put_u32(pgf_builder *b, uint32_t v)
{
    v = htonl(v);
    pgf_put_bytes(b, &v, 4);
}

void pgf_put_str(pgf_builder *b, const char *s)
{
    pgf_put_bytes(b, s, strlen(s) + 1);
}

void pgf_abort(pgf_builder *b)
{
    free(b->buf);
    b->buf = NULL;
}

int pgf_finish(pgf_builder *b, struct evbuffer *out)
{
    int rc = -1;
    if (!b->oom) {
        uint32_t len = htonl((uint32_t)(b->len - 1));
        memcpy(b->buf + 1, &len, 4);
        rc = evbuffer_add(out, b->buf, b->len) == 0 ? 0 : -1;
    }
    free(b->buf);
    b->buf = NULL;
    return rc;
}

int pgf_error(struct evbuffer *out, const char *severity, const char *sqlstate,
              const char *message, const char *hint)
{
    pgf_builder b;
    pgf_begin(&b, PG_BE_ERROR);
    pgf_put_u8(&b, PG_EF_SEVERITY);
    pgf_put_str(&b, severity);
    pgf_put_u8(&b, PG_EF_SEVERITY_NONLOC);
    pgf_put_str(&b, severity);
    pgf_put_u8(&b, PG_EF_CODE);
    pgf_put_str(&b, sqlstate);
    pgf_put_u8(&b, PG_EF_MESSAGE);
    pgf_put_str(&b, message);
    if (hint) {
        pgf_put_u8(&b, PG_EF_HINT);
        pgf_put_str(&b, hint);
    }
    pgf_put_u8(&b, 0);
    return pgf_finish(&b, out);
}

int pgf_error_without(struct evbuffer *out, char type, const void *payload, size_t len, const char *drop)
{
    pgf_reader r = pgf_reader_init(payload, len);
    pgf_builder b;
    pgf_begin(&b, type);
    for (;;) {
        uint8_t code = pgf_get_u8(&r);
        if (r.bad)
            break;
        if (code == 0) {
            pgf_put_u8(&b, 0);
            return pgf_finish(&b, out);
        }
        const char *v = pgf_get_str(&r);
        if (r.bad)
            break;
        if (strchr(drop, code))
            continue;
        pgf_put_u8(&b, code);
        pgf_put_str(&b, v);
    }
    pgf_abort(&b);
    return -1;
}

int pgf_ready(struct evbuffer *out, char status)
{
    pgf_builder b;
    pgf_begin(&b, PG_BE_READY);
    pgf_put_u8(&b, (uint8_t)status);
    return pgf_finish(&b, out);
}

bool pgf_parse_error(const void *payload, size_t len, pgf_error_fields *f)
{
    pgf_reader r = pgf_reader_init(payload, len);
    memset(f, 0, sizeof(*f));
    for (;;) {
        uint8_t code = pgf_get_u8(&r);
        if (r.bad)
            return false;
        if (code == 0)
            return true;
        const char *v = pgf_get_str(&r);
        if (r.bad)
            return false;
        switch (code) {
        case PG_EF_SEVERITY: f->severity = v; break;
        case PG_EF_CODE: f->code = v; break;
        case PG_EF_MESSAGE: f->message = v; break;
        case PG_EF_DETAIL: f->detail = v; break;
        case PG_EF_HINT: f->hint = v; break;
        case PG_EF_POSITION: f->position = v; break;
        case PG_EF_TABLE: f->table = v; break;
        case PG_EF_SCHEMA: f->schema = v; break;
        case PG_EF_CONSTRAINT: f->constraint = v; break;
        default: break;
        }
    }
}
