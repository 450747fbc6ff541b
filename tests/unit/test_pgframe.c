/*
 * test_pgframe.c -- framing (peek, reader, builders) and the request FIFO,
 * table-driven: bytes in, results out.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "proxy/pgframe.h"
#include "proxy/pgproto.h"
#include "proxy/track.h"

/* ---------------------------------------------------------------- peek */

typedef struct peek_case {
    const char *name;
    const char *bytes;
    size_t n;
    pgf_peek_result want;
    char type;
    uint32_t len;
} peek_case;

static const peek_case peek_cases[] = {
    {"empty", "", 0, PGF_NEED_MORE, 0, 0},
    {"one byte", "Q", 1, PGF_NEED_MORE, 0, 0},
    {"four bytes", "Q\0\0\0", 4, PGF_NEED_MORE, 0, 0},
    {"sync", "S\0\0\0\x04", 5, PGF_HEADER, 'S', 4},
    {"query header only", "Q\0\0\0\x0e", 5, PGF_HEADER, 'Q', 14},
    {"length 3 is bad", "Q\0\0\0\x03", 5, PGF_BAD_LENGTH, 0, 0},
    {"length 0 is bad", "X\0\0\0\0", 5, PGF_BAD_LENGTH, 0, 0},
    {"huge length is a header", "d\x7f\xff\xff\xff", 5, PGF_HEADER, 'd', 0x7fffffffu},
    {"max u32", "d\xff\xff\xff\xff", 5, PGF_HEADER, 'd', 0xffffffffu},
};

static void test_peek(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(peek_cases) / sizeof(peek_cases[0]); i++) {
        const peek_case *c = &peek_cases[i];
        struct evbuffer *b = evbuffer_new();
        evbuffer_add(b, c->bytes, c->n);
        pgf_header h = {0};
        pgf_peek_result r = pgf_peek(b, &h);
        if (r != c->want)
            fail_msg("%s: got %d want %d", c->name, r, c->want);
        if (r == PGF_HEADER && (h.type != c->type || h.len != c->len))
            fail_msg("%s: got %c/%u", c->name, h.type, h.len);
        /* peeking never consumes */
        assert_int_equal(evbuffer_get_length(b), c->n);
        evbuffer_free(b);
    }
}

/* A header split across evbuffer chains is read the same. */
static void test_peek_across_chains(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    const char parts[][2] = {"Q", "\0", "\0", "\0", "\x09"};
    for (int i = 0; i < 5; i++) {
        struct evbuffer *piece = evbuffer_new();
        evbuffer_add(piece, parts[i], 1);
        evbuffer_add_buffer(b, piece);
        evbuffer_free(piece);
    }
    pgf_header h;
    assert_int_equal(pgf_peek(b, &h), PGF_HEADER);
    assert_int_equal(h.len, 9);
    assert_int_equal(pgf_wire_len(&h), 10);
    evbuffer_free(b);
}

static void test_startup_len(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    assert_int_equal(pgf_peek_startup_len(b), 0);
    evbuffer_add(b, "\0\0", 2);
    assert_int_equal(pgf_peek_startup_len(b), 0);
    evbuffer_add(b, "\0\x08", 2);
    assert_int_equal(pgf_peek_startup_len(b), 8);
    evbuffer_free(b);
}

/* ---------------------------------------------------------------- reader */

static void test_reader(void **state)
{
    (void)state;
    static const uint8_t p[] = {0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 'a', 'b', 0, 'c', 0, 0xff};
    pgf_reader r = pgf_reader_init(p, sizeof(p));
    assert_int_equal(pgf_get_u16(&r), 1);
    assert_int_equal(pgf_get_u32(&r), 2);
    assert_string_equal(pgf_get_str(&r), "ab");
    assert_string_equal(pgf_get_str(&r), "c");
    assert_false(r.bad);
    assert_int_equal(pgf_get_u8(&r), 0xff);
    assert_false(r.bad);
    /* past the end: zero values and the bad flag, never a read out of bounds */
    assert_int_equal(pgf_get_u32(&r), 0);
    assert_true(r.bad);
    assert_string_equal(pgf_get_str(&r), "");

    static const uint8_t unterminated[] = {'x', 'y'};
    r = pgf_reader_init(unterminated, sizeof(unterminated));
    assert_string_equal(pgf_get_str(&r), "");
    assert_true(r.bad);
    r = pgf_reader_init(unterminated, sizeof(unterminated));
    assert_null(pgf_get_bytes(&r, 3));
    assert_true(r.bad);
}

/* ---------------------------------------------------------------- builders */

static void test_error_roundtrip(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    assert_int_equal(pgf_error(b, "FATAL", "08P01", "bad thing", "do this"), 0);
    pgf_header h;
    assert_int_equal(pgf_peek(b, &h), PGF_HEADER);
    assert_int_equal(h.type, 'E');
    assert_int_equal(evbuffer_get_length(b), pgf_wire_len(&h));
    const uint8_t *m = evbuffer_pullup(b, -1);
    pgf_error_fields f;
    assert_true(pgf_parse_error(m + 5, h.len - 4, &f));
    assert_string_equal(f.severity, "FATAL");
    assert_string_equal(f.code, "08P01");
    assert_string_equal(f.message, "bad thing");
    assert_string_equal(f.hint, "do this");
    assert_null(f.detail);
    evbuffer_free(b);
}

static void test_parse_error_rejects_garbage(void **state)
{
    (void)state;
    pgf_error_fields f;
    static const uint8_t no_terminator[] = {'C', '4', '2', '5', '0', '1', 0};
    assert_false(pgf_parse_error(no_terminator, sizeof(no_terminator), &f));
    static const uint8_t unterminated_value[] = {'M', 'x', 'y'};
    assert_false(pgf_parse_error(unterminated_value, sizeof(unterminated_value), &f));
    static const uint8_t constraint[] = {'n', 't', 'g', 0, 't', 'p', 0, 0};
    assert_true(pgf_parse_error(constraint, sizeof(constraint), &f));
    assert_string_equal(f.constraint, "tg");
    assert_string_equal(f.table, "p");
}

/* A helper's rejection goes to the client without CONTEXT and source
 * location; everything else stays, in order. */
static void test_error_without(void **state)
{
    (void)state;
    static const uint8_t in[] = "SERROR\0C42501\0Mno\0Wctx line\0Fpl_exec.c\0L1\0Rraise\0ntg_r2\0tp\0";
    struct evbuffer *b = evbuffer_new();
    assert_int_equal(pgf_error_without(b, PG_BE_ERROR, in, sizeof(in), "WFLR"), 0);
    pgf_header h;
    assert_int_equal(pgf_peek(b, &h), PGF_HEADER);
    assert_int_equal(h.type, PG_BE_ERROR);
    static const uint8_t want[] = "SERROR\0C42501\0Mno\0ntg_r2\0tp\0";
    assert_int_equal(h.len - 4, sizeof(want));
    const uint8_t *m = evbuffer_pullup(b, -1);
    assert_memory_equal(m + 5, want, sizeof(want));
    /* garbage: nothing appended */
    static const uint8_t bad[] = {'M', 'x', 'y'};
    assert_int_equal(pgf_error_without(b, PG_BE_ERROR, bad, sizeof(bad), "W"), -1);
    assert_int_equal(evbuffer_get_length(b), pgf_wire_len(&h));
    evbuffer_free(b);
}

static void test_ready(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    pgf_ready(b, 'T');
    uint8_t want[] = {'Z', 0, 0, 0, 5, 'T'};
    assert_int_equal(evbuffer_get_length(b), sizeof(want));
    assert_memory_equal(evbuffer_pullup(b, -1), want, sizeof(want));
    evbuffer_free(b);
}

/* ---------------------------------------------------------------- track */

typedef struct track_case {
    const char *name;
    const char *client;     /* frontend types pushed, in order */
    const char *server;     /* backend types arriving, in order */
    size_t pending_after;   /* slots left */
    bool skipping_after;
} track_case;

static const track_case track_cases[] = {
    {"simple query", "Q", "TDDCZ", 0, false},
    {"simple query, two statements", "Q", "TDCCZ", 0, false},
    {"simple query error keeps until Z", "Q", "E", 1, false},
    {"simple query error then Z", "Q", "EZ", 0, false},
    {"extended round trip", "PBDES", "12TDCZ", 0, false},
    {"extended describe statement", "PDS", "1tTZ", 0, false},
    {"extended describe no data", "PDS", "1tnZ", 0, false},
    {"portal suspended", "BES", "2DsZ", 0, false},
    {"error skips to sync", "PBES", "EZ", 0, false},
    {"error skips to sync, then next batch", "PBESPBES", "EZ12CZ", 0, false},
    {"error with no sync yet", "PBE", "E", 0, true},
    {"flush and copy data take no slot", "HdcdQ", "Z", 0, false},
    {"pipelined", "QQQ", "CZCZ", 1, false},
    {"close", "CS", "3Z", 0, false},
    {"function call", "F", "VZ", 0, false},
    {"notices between", "Q", "NSACAZ", 0, false},
    {"copy in via query", "Q", "GCZ", 0, false},
};

static void test_track(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(track_cases) / sizeof(track_cases[0]); i++) {
        const track_case *c = &track_cases[i];
        sess_track *t = track_new();
        for (const char *p = c->client; *p; p++)
            assert_int_equal(track_push(t, *p, false, NULL), 0);
        for (const char *p = c->server; *p; p++)
            track_server_msg(t, *p);
        if (track_pending(t) != c->pending_after || track_skipping(t) != c->skipping_after)
            fail_msg("%s: pending %zu (want %zu), skipping %d (want %d)", c->name, track_pending(t),
                     c->pending_after, track_skipping(t), c->skipping_after);
        track_free(t);
    }
}

/* While skipping, only Sync takes a slot; its ReadyForQuery ends the skip. */
static void test_track_skip_then_sync(void **state)
{
    (void)state;
    sess_track *t = track_new();
    track_push(t, 'P', false, NULL);
    track_server_msg(t, 'E');
    assert_true(track_skipping(t));
    track_push(t, 'B', false, NULL);
    track_push(t, 'E', false, NULL);
    assert_int_equal(track_pending(t), 0);
    track_push(t, 'S', false, NULL);
    assert_false(track_skipping(t));
    assert_int_equal(track_pending(t), 1);
    track_server_msg(t, 'Z');
    assert_int_equal(track_pending(t), 0);
    track_free(t);
}

/* The ring grows past its first size and keeps order. */
static void test_track_growth(void **state)
{
    (void)state;
    sess_track *t = track_new();
    for (int i = 0; i < 1000; i++) {
        track_push(t, 'P', false, NULL);
        track_push(t, 'S', false, NULL);
    }
    assert_int_equal(track_pending(t), 2000);
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(track_head(t)->kind, 'P');
        track_server_msg(t, '1');
        assert_int_equal(track_head(t)->kind, 'S');
        track_server_msg(t, 'Z');
    }
    assert_int_equal(track_pending(t), 0);
    track_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_peek),
        cmocka_unit_test(test_peek_across_chains),
        cmocka_unit_test(test_startup_len),
        cmocka_unit_test(test_reader),
        cmocka_unit_test(test_error_roundtrip),
        cmocka_unit_test(test_parse_error_rejects_garbage),
        cmocka_unit_test(test_error_without),
        cmocka_unit_test(test_ready),
        cmocka_unit_test(test_track),
        cmocka_unit_test(test_track_skip_then_sync),
        cmocka_unit_test(test_track_growth),
    };
    return cmocka_run_group_tests_name("pgframe", tests, NULL, NULL);
}
