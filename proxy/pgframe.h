/*
 * pgframe.h -- protocol framing over libevent evbuffers.
 *
 * The buffer layer owns framing (style habit 2): handlers get whole messages
 * or, for types nobody needs to read, a declared pass-through stream of a
 * message body. A message is: 1 type byte, int32 length (counting itself,
 * not the type), payload. The startup packet has no type byte.
 *
 *   evbuffer:  [T][len....][payload ......][T][len....][pay...
 *               ^ pgf_peek() looks at these 5 bytes without removing them
 */
#ifndef TG_PGFRAME_H
#define TG_PGFRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

typedef enum {
    PGF_NEED_MORE = 0,   /* fewer than 5 bytes buffered */
    PGF_HEADER,          /* header known: type and total length */
    PGF_BAD_LENGTH,      /* length field < 4 */
} pgf_peek_result;

typedef struct pgf_header {
    char type;
    uint32_t len;        /* the length field: payload + 4 */
} pgf_header;

/* Look at the next message header. */
pgf_peek_result pgf_peek(struct evbuffer *buf, pgf_header *h);

/* The same for the message starting `off` bytes into the buffer. */
pgf_peek_result pgf_peek_at(struct evbuffer *buf, size_t off, pgf_header *h);

/* The same for a header in memory (at least 5 bytes at p). */
static inline pgf_peek_result pgf_peek_mem(const uint8_t *p, pgf_header *h)
{
    h->type = (char)p[0];
    h->len = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | (uint32_t)p[4];
    return h->len < 4 ? PGF_BAD_LENGTH : PGF_HEADER;
}

/* Total bytes of the message on the wire: 1 + len. */
static inline size_t pgf_wire_len(const pgf_header *h)
{
    return (size_t)h->len + 1;
}

/* The next message, whole and contiguous (pulled up), for the phases that
 * read messages one by one (authentication, the console); NULL while it is
 * incomplete, or with *bad set when its length is invalid or over max_len. */
const uint8_t *pgf_whole(struct evbuffer *buf, uint32_t max_len, pgf_header *h, bool *bad);

/* Startup-phase packet (no type byte): its length if known, 0 if fewer than
 * 4 bytes are buffered. */
uint32_t pgf_peek_startup_len(struct evbuffer *buf);

/* ---- reading fields out of a contiguous payload (bounds-checked) ---- */

typedef struct pgf_reader {
    const uint8_t *p;
    size_t left;
    bool bad;            /* a read ran past the end or a string had no NUL */
} pgf_reader;

static inline pgf_reader pgf_reader_init(const void *payload, size_t len)
{
    return (pgf_reader){(const uint8_t *)payload, len, false};
}
uint8_t pgf_get_u8(pgf_reader *r);
uint16_t pgf_get_u16(pgf_reader *r);
uint32_t pgf_get_u32(pgf_reader *r);
/* A NUL-terminated string inside the payload (not copied); "" when bad. */
const char *pgf_get_str(pgf_reader *r);
const uint8_t *pgf_get_bytes(pgf_reader *r, size_t n);

/* ---- building messages ---- */

/* A message under construction: built contiguously, then added at once. */
typedef struct pgf_builder {
    uint8_t *buf;
    size_t len, cap;
    bool oom;
} pgf_builder;

void pgf_begin(pgf_builder *b, char type);
void pgf_put_u8(pgf_builder *b, uint8_t v);
void pgf_put_u16(pgf_builder *b, uint16_t v);
void pgf_put_u32(pgf_builder *b, uint32_t v);
void pgf_put_str(pgf_builder *b, const char *s);       /* with its NUL */
void pgf_put_bytes(pgf_builder *b, const void *p, size_t n);
/* Drop a message under construction. */
void pgf_abort(pgf_builder *b);
/* Append the finished message to `out`; returns 0, or -1 out of memory. */
int pgf_finish(pgf_builder *b, struct evbuffer *out);

/*
 * ErrorResponse with the fields a client needs. severity: "ERROR" or
 * "FATAL". sqlstate: one of policy/sqlstate.h. hint may be NULL.
 */
int pgf_error(struct evbuffer *out, const char *severity, const char *sqlstate,
              const char *message, const char *hint);

/* An ErrorResponse/NoticeResponse payload (as the server sent it) again,
 * without the fields whose codes are in `drop`. 0, or -1 when the payload
 * does not parse (nothing appended) or out of memory. */
int pgf_error_without(struct evbuffer *out, char type, const void *payload, size_t len, const char *drop);

/* ReadyForQuery with a transaction status byte ('I', 'T', 'E'). */
int pgf_ready(struct evbuffer *out, char status);

/* The fields of an ErrorResponse/NoticeResponse payload. Pointers into the
 * payload; NULL when absent. */
typedef struct pgf_error_fields {
    const char *severity, *code, *message, *detail, *hint, *table, *schema, *constraint, *position;
} pgf_error_fields;
bool pgf_parse_error(const void *payload, size_t len, pgf_error_fields *f);

#endif
