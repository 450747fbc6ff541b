/*
 * fuzz_pgframe -- message framing and reassembly (pgf_peek, the reader),
 * and the in-flight request FIFO (track_*), on arbitrary byte streams split
 * at arbitrary points.
 *
 * Input: [u16 frontend-stream length][frontend bytes][backend bytes]. The
 * last 8 bytes of the input (when present) also seed the split schedule.
 *
 * Each stream is reassembled twice: from one evbuffer holding everything,
 * and from chunks of pseudo-random sizes (1 byte and up) added one at a time
 * the way a socket delivers them. Both must yield the same messages, the same
 * final state (need more / bad length) and the same bytes left over.
 * Every whole message's payload is then walked with the bounds-checked
 * reader the way the proxy reads its type, and must never read outside it.
 *
 * The FIFO gets the frontend messages as requests (track_push with a context
 * that counts its own release) and the backend messages as answers, in an
 * interleaving chosen by the input. Every context must be released exactly
 * once -- by an answer, a skip after an error, or track_free.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "proxy/pgframe.h"
#include "proxy/pgproto.h"
#include "proxy/track.h"

#define MAX_MSG (1u << 20)   /* the harness's own bound on what it pulls up */

typedef struct msg {
    char type;
    uint32_t len;
    uint32_t hash;
} msg;

typedef struct result {
    msg *msgs;
    size_t n, cap;
    int end;          /* 0 need more, 1 bad length, 2 too big for the harness */
    size_t left;      /* bytes not consumed */
} result;

static uint32_t fnv(const uint8_t *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

static uint64_t rng;
static uint32_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

/* ---------------------------------------------------------------- payload readers */

static void read_strings(pgf_reader *r, int n)
{
    for (int i = 0; i < n && !r->bad; i++)
        (void)pgf_get_str(r);
}

static void read_u16_array(pgf_reader *r)
{
    uint16_t n = pgf_get_u16(r);
    for (uint16_t i = 0; i < n && !r->bad; i++)
        (void)pgf_get_u16(r);
}

/* Walk a payload as the message type says (frontend or backend meaning). */
static void walk(char type, bool frontend, const uint8_t *payload, size_t len)
{
    pgf_reader r = pgf_reader_init(payload, len);
    const uint8_t *end = payload + len;
    if (frontend) {
        switch (type) {
        case PG_FE_PARSE: {
            read_strings(&r, 2);
            uint16_t n = pgf_get_u16(&r);
            for (uint16_t i = 0; i < n && !r.bad; i++)
                (void)pgf_get_u32(&r);
            break;
        }
        case PG_FE_BIND: {
            read_strings(&r, 2);
            read_u16_array(&r);
            uint16_t n = pgf_get_u16(&r);
            for (uint16_t i = 0; i < n && !r.bad; i++) {
                uint32_t l = pgf_get_u32(&r);
                if (l != 0xffffffffu)
                    (void)pgf_get_bytes(&r, l);
            }
            read_u16_array(&r);
            break;
        }
        case PG_FE_EXECUTE:
            read_strings(&r, 1);
            (void)pgf_get_u32(&r);
            break;
        case PG_FE_DESCRIBE:
        case PG_FE_CLOSE:
            (void)pgf_get_u8(&r);
            read_strings(&r, 1);
            break;
        default:
            read_strings(&r, 1);
            break;
        }
    } else {
        switch (type) {
        case PG_BE_ERROR:
        case PG_BE_NOTICE: {
            pgf_error_fields f;
            if (pgf_parse_error(payload, len, &f)) {
                const char *fs[] = {f.severity, f.code, f.message, f.detail, f.hint, f.table, f.schema, f.constraint};
                for (size_t i = 0; i < sizeof(fs) / sizeof(fs[0]); i++)
                    if (fs[i] && ((const uint8_t *)fs[i] < payload || (const uint8_t *)fs[i] + strlen(fs[i]) >= end))
                        abort();   /* a field outside its payload */
            }
            break;
        }
        case PG_BE_DATA_ROW: {
            uint16_t n = pgf_get_u16(&r);
            for (uint16_t i = 0; i < n && !r.bad; i++) {
                uint32_t l = pgf_get_u32(&r);
                if (l != 0xffffffffu)
                    (void)pgf_get_bytes(&r, l);
            }
            break;
        }
        case PG_BE_AUTH:
            (void)pgf_get_u32(&r);
            read_strings(&r, 4);
            break;
        case PG_BE_PARAM_STATUS:
            read_strings(&r, 2);
            break;
        case PG_BE_KEY_DATA:
            (void)pgf_get_u32(&r);
            (void)pgf_get_u32(&r);
            break;
        default:
            read_strings(&r, 1);
            break;
        }
    }
    /* the reader's invariant: it never points outside the payload */
    if (r.p < payload || r.p + r.left != end)
        abort();
}

/* ---------------------------------------------------------------- reassembly */

static void add_msg(result *res, const pgf_header *h, const uint8_t *m)
{
    if (res->n == res->cap) {
        res->cap = res->cap ? res->cap * 2 : 16;
        res->msgs = realloc(res->msgs, res->cap * sizeof(msg));
    }
    res->msgs[res->n++] = (msg){h->type, h->len, fnv(m, pgf_wire_len(h))};
}

/* Take every whole message off the head of buf; returns false when the
 * stream cannot go on (bad length or a message too big for the harness). */
static bool drain(struct evbuffer *buf, result *res, bool frontend)
{
    for (;;) {
        pgf_header h;
        pgf_peek_result pr = pgf_peek(buf, &h);
        if (pr == PGF_NEED_MORE) {
            res->end = 0;
            return true;
        }
        if (pr == PGF_BAD_LENGTH) {
            res->end = 1;
            return false;
        }
        if (h.len < 4)
            abort();   /* pgf_peek said HEADER for a length it must refuse */
        if (h.len > MAX_MSG) {
            res->end = 2;
            return false;
        }
        if (evbuffer_get_length(buf) < pgf_wire_len(&h)) {
            res->end = 0;
            return true;
        }
        const uint8_t *m = evbuffer_pullup(buf, (ssize_t)pgf_wire_len(&h));
        if (!m)
            abort();
        walk(h.type, frontend, m + 5, h.len - 4);
        add_msg(res, &h, m);
        evbuffer_drain(buf, pgf_wire_len(&h));
    }
}

static void reassemble_whole(const uint8_t *p, size_t n, bool frontend, result *res)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, p, n);
    drain(b, res, frontend);
    res->left = evbuffer_get_length(b);
    evbuffer_free(b);
}

static void reassemble_chunked(const uint8_t *p, size_t n, bool frontend, result *res)
{
    struct evbuffer *b = evbuffer_new();
    size_t off = 0;
    bool going = true;
    while (off < n) {
        size_t c = 1 + next_rand() % ((next_rand() & 3) == 0 ? 2 : 40);
        if (c > n - off)
            c = n - off;
        evbuffer_add(b, p + off, c);
        off += c;
        if (going)
            going = drain(b, res, frontend);
    }
    if (going)
        drain(b, res, frontend);
    res->left = evbuffer_get_length(b);
    evbuffer_free(b);
}

static void compare(const result *a, const result *b)
{
    if (a->n != b->n || a->end != b->end || a->left != b->left)
        abort();
    for (size_t i = 0; i < a->n; i++)
        if (a->msgs[i].type != b->msgs[i].type || a->msgs[i].len != b->msgs[i].len ||
            a->msgs[i].hash != b->msgs[i].hash)
            abort();
}

/* ---------------------------------------------------------------- the FIFO */

static long live_ctx;

static void release(track_ctx *c)
{
    if (!c || live_ctx <= 0)
        abort();   /* released twice, or never made */
    live_ctx--;
    free(c);
}

static void drive_track(const result *fe, const result *be, const uint8_t *pay_fe)
{
    sess_track *t = track_new();
    if (!t)
        return;
    track_set_release(t, release);
    size_t i = 0, j = 0;
    size_t pushed = 0;
    while (i < fe->n || j < be->n) {
        bool take_fe = j >= be->n || (i < fe->n && (next_rand() & 1));
        if (take_fe) {
            const msg *m = &fe->msgs[i++];
            track_ctx *c = malloc(16);
            live_ctx++;
            bool describe_statement = m->type == PG_FE_DESCRIBE && (m->hash & 1);
            if (track_push(t, m->type, describe_statement, c) != 0)
                abort();
            pushed++;
        } else {
            const msg *m = &be->msgs[j++];
            size_t before = track_pending(t);
            track_slot *head = track_head(t);
            if ((head == NULL) != (before == 0))
                abort();
            track_server_msg(t, m->type);
            if (track_pending(t) > before)
                abort();   /* an answer never adds a request */
        }
        if (track_pending(t) > pushed || (size_t)live_ctx < track_pending(t))
            abort();
    }
    (void)pay_fe;
    track_free(t);
    if (live_ctx != 0)
        abort();   /* a context leaked or was freed without release */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > (1u << 20))
        return 0;
    size_t fe_len = ((size_t)data[0] << 8) | data[1];
    const uint8_t *p = data + 2;
    size_t n = size - 2;
    if (fe_len > n)
        fe_len = n;
    rng = 0x9e3779b97f4a7c15ULL ^ size;
    if (size >= 10) {
        uint64_t seed;
        memcpy(&seed, data + size - 8, 8);
        rng ^= seed;
    }
    if (!rng)
        rng = 1;

    result fe_whole = {0}, fe_chunk = {0}, be_whole = {0}, be_chunk = {0};
    reassemble_whole(p, fe_len, true, &fe_whole);
    reassemble_chunked(p, fe_len, true, &fe_chunk);
    compare(&fe_whole, &fe_chunk);
    reassemble_whole(p + fe_len, n - fe_len, false, &be_whole);
    reassemble_chunked(p + fe_len, n - fe_len, false, &be_chunk);
    compare(&be_whole, &be_chunk);

    /* the startup-phase length peek agrees with the bytes */
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, p, n < 3 ? n : 3);
    if (pgf_peek_startup_len(b) != 0)
        abort();
    if (n >= 4) {
        evbuffer_add(b, p + 3, 1);
        uint32_t want;
        memcpy(&want, p, 4);
        if (pgf_peek_startup_len(b) != ntohl(want))
            abort();
    }
    evbuffer_free(b);

    drive_track(&fe_whole, &be_whole, p);
    free(fe_whole.msgs);
    free(fe_chunk.msgs);
    free(be_whole.msgs);
    free(be_chunk.msgs);
    return 0;
}
