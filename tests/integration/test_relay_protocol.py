"""Byte-exact transparency: the same message script sent to PostgreSQL directly and
through tenantguard gets the same answers, byte for byte, for every message type
of the relay (simple and extended query, pipelining, Flush, portals, FunctionCall,
COPY both ways, notices, errors, transaction states), also when the whole script
arrives in one write."""
import struct

import pytest

import tgtest
from tgtest import PgWire

P = PgWire


def transcript(port, script, setup=None):
    """Log in as trust_user, run `setup` (list of SQL), send every chunk of `script`
    and read the answers up to the expected number of ReadyForQuery; returns the
    messages after login."""
    with PgWire(port) as w:
        w.login("trust_user", "app")
        for sql in setup or ():
            w.query(sql)
        out = []
        for chunk, n_ready in script:
            w.send(chunk)
            for _ in range(n_ready):
                out += w.read_until("Z")
        return out


def both(pg, proxy, script, setup=None):
    direct = transcript(pg.port, script, setup)
    via = transcript(proxy.port, script, setup)
    assert via == direct
    return via


def types(msgs):
    return "".join(t for t, _ in msgs)


def test_extended_pipeline_with_an_error_in_the_middle(pg, proxy):
    script = [(
        P.parse_msg("SELECT $1::int + 1", "s1") +
        P.bind_msg(["41"], stmt="s1") + P.describe_msg("P") + P.execute_msg() +
        P.parse_msg("SELECT 1/0") + P.bind_msg() + P.execute_msg() +
        P.parse_msg("SELECT 'skipped'") + P.bind_msg() + P.execute_msg() +    # skipped by the server
        P.SYNC +
        P.bind_msg(["1"], stmt="s1") + P.execute_msg() + P.SYNC +
        P.describe_msg("S", "s1") + P.close_msg("S", "s1") + P.SYNC, 3)]
    msgs = both(pg, proxy, script)
    assert types(msgs) == "12TDC1EZ" + "2DCZ" + "tT3Z"
    assert tgtest.rows_of(msgs) == [["42"], ["2"]]
    assert tgtest.errors_of(msgs)[0]["C"] == "22012"


def test_portal_suspended_and_multiple_executes(pg, proxy):
    script = [(P.query_msg("BEGIN"), 1), (
        P.parse_msg("SELECT generate_series(1, 5)") + P.bind_msg(portal="p1") +
        P.execute_msg("p1", 2) + P.execute_msg("p1", 2) + P.execute_msg("p1", 0) +
        P.close_msg("P", "p1") + P.SYNC, 1), (P.query_msg("COMMIT"), 1)]
    msgs = both(pg, proxy, script)
    assert "DDsDDsDC3Z" in types(msgs)


def test_flush_gets_answers_before_sync(pg, proxy):
    """After Flush the server's answers must reach the client without a Sync."""
    for port in (pg.port, proxy.port):
        with PgWire(port) as w:
            w.login("trust_user", "app")
            w.send(P.parse_msg("SELECT 'flushed'") + P.bind_msg() + P.execute_msg() + P.FLUSH)
            msgs = w.read_until("C")
            assert types(msgs) == "12DC"
            w.send(P.SYNC)
            assert types(w.read_until("Z")) == "Z"


def test_simple_multi_statement_with_error(pg, proxy):
    msgs = both(pg, proxy, [(P.query_msg("SELECT 1; SELECT 1/0; SELECT 2"), 1),
                            (P.query_msg("SELECT 3; SELECT 4"), 1)])
    assert types(msgs) == "TDCEZ" + "TDCTDCZ"


def test_empty_queries(pg, proxy):
    msgs = both(pg, proxy, [(P.query_msg(""), 1), (P.query_msg(";"), 1), (P.query_msg("-- c"), 1),
                            (P.parse_msg("") + P.bind_msg() + P.execute_msg() + P.SYNC, 1)])
    assert types(msgs) == "IZIZIZ" + "12IZ"


def test_transaction_states(pg, proxy):
    msgs = both(pg, proxy, [(P.query_msg("BEGIN"), 1), (P.query_msg("SELECT 1/0"), 1),
                            (P.query_msg("SELECT 1"), 1), (P.query_msg("ROLLBACK"), 1)])
    states = [p for t, p in msgs if t == "Z"]
    assert states == [b"T", b"E", b"E", b"I"]


def test_notices_and_parameter_status_in_order(pg, proxy):
    msgs = both(pg, proxy, [(P.query_msg(
        "DO $$BEGIN RAISE NOTICE 'n1 %', 1; RAISE WARNING 'w2'; END$$;"
        "SET application_name = 'tg_x'; SET TimeZone = 'Asia/Tokyo';"
        "RESET application_name"), 1)])
    # PostgreSQL reports changed GUC_REPORT settings once, before ReadyForQuery
    # (application_name ends unchanged, so only TimeZone is reported).
    assert types(msgs) == "NNCCCCSZ"
    assert msgs[-2][1] == b"TimeZone\0Asia/Tokyo\0"


def test_function_call(pg, proxy):
    """FunctionCall ('F') with text and binary arguments."""
    oid = int(pg.psql("SELECT 'int4pl'::regproc::oid"))

    def fcall(args, fmt):
        body = struct.pack("!I", oid) + struct.pack("!HH", 1, fmt) + struct.pack("!H", len(args))
        for a in args:
            body += struct.pack("!i", len(a)) + a
        return P.msg("F", body + struct.pack("!H", fmt))

    binary = fcall([struct.pack("!i", 40), struct.pack("!i", 2)], 1)
    text = fcall([b"40", b"2"], 0)
    msgs = both(pg, proxy, [(binary, 1), (text, 1), (binary + text, 2)])
    results = [p for t, p in msgs if t == "V"]
    assert results[0] == struct.pack("!i", 4) + struct.pack("!i", 42)
    assert results[1] == struct.pack("!i", 2) + b"42"
    # Overflow: an error, then the session goes on.
    over = fcall([struct.pack("!i", 2**31 - 1), struct.pack("!i", 1)], 1)
    msgs = both(pg, proxy, [(over, 1), (binary, 1)])
    assert types(msgs) == "EZVZ"
    assert tgtest.errors_of(msgs)[0]["C"] == "22003"


def test_copy_out_simple_and_extended(pg, proxy):
    msgs = both(pg, proxy, [
        (P.query_msg("COPY (SELECT g, 'r' || g FROM generate_series(1, 3) g) TO STDOUT"), 1),
        (P.parse_msg("COPY (SELECT 1) TO STDOUT (FORMAT binary)") + P.bind_msg() + P.execute_msg() +
         P.SYNC, 1)])
    assert types(msgs).startswith("HdddcCZ")


def test_copy_in_with_copy_fail_and_bad_row(pg, proxy):
    setup = ["CREATE TEMP TABLE t (a int, b text)"]
    script = [
        (P.query_msg("COPY t FROM STDIN"), 0),
        (P.msg("d", b"1\tone\n2\ttwo\n") + P.msg("d", b"3\tthree\n") + P.msg("c"), 1),
        (P.query_msg("COPY t FROM STDIN"), 0),
        (P.msg("d", b"4\tfour\n") + P.msg("f", b"client gave up\0"), 1),
        (P.query_msg("COPY t FROM STDIN"), 0),
        (P.msg("d", b"5\tfive\nnot-a-number\tx\n") + P.msg("c"), 1),
        (P.query_msg("SELECT count(*), string_agg(b, ',' ORDER BY a) FROM t"), 1),
        # extended-protocol COPY FROM STDIN
        (P.parse_msg("COPY t FROM STDIN") + P.bind_msg() + P.execute_msg() +
         P.msg("d", b"9\tnine\n") + P.msg("c") + P.SYNC, 1),
        (P.query_msg("SELECT count(*) FROM t"), 1),
    ]
    # COPY IN: the CopyInResponse arrives before the data is sent; read it.
    got = {}
    for name, port in (("direct", pg.port), ("proxy", proxy.port)):
        with PgWire(port) as w:
            w.login("trust_user", "app")
            for sql in setup:
                w.query(sql)
            out = []
            for chunk, n_ready in script:
                w.send(chunk)
                if n_ready == 0:
                    out.append(w.read_msg())
                for _ in range(n_ready):
                    out += w.read_until("Z")
            got[name] = out
    assert got["proxy"] == got["direct"]
    msgs = got["proxy"]
    errs = tgtest.errors_of(msgs)
    assert [e["C"] for e in errs] == ["57014", "22P02"]
    assert "client gave up" in errs[0]["M"]
    rows = tgtest.rows_of(msgs)
    assert rows[0] == ["3", "one,two,three"]
    assert rows[1] == ["4"]


def test_everything_in_one_write(pg, proxy):
    """Many messages of every kind in a single TCP write."""
    chunk = b"".join([
        P.query_msg("SELECT 1"),
        P.parse_msg("SELECT $1::text || 'x'") + P.bind_msg(["y"]) + P.execute_msg() + P.SYNC,
        P.query_msg("BEGIN; SELECT 2; COMMIT"),
        P.parse_msg("SELECT generate_series(1,100)") + P.bind_msg() + P.describe_msg() +
        P.execute_msg() + P.SYNC,
    ] * 50)
    msgs = both(pg, proxy, [(chunk, 4 * 50)])
    assert len(tgtest.rows_of(msgs)) == 50 * (1 + 1 + 1 + 100)


def test_large_rows_and_binary_results(pg, proxy):
    script = [(P.query_msg("SELECT repeat('ab', 3000000), decode(repeat('00ff', 1000), 'hex')"), 1),
              (P.parse_msg("SELECT $1::bytea, 42::int8") + P.bind_msg([b"\\x000102"],
                                                                       result_formats=(1,)) +
               P.execute_msg() + P.SYNC, 1)]
    msgs = both(pg, proxy, script)
    first, second = [tgtest.data_row(p) for t, p in msgs if t == "D"]
    assert len(first[0]) == 6000000
    assert second == [b"\x00\x01\x02", struct.pack("!q", 42)]


def test_query_then_terminate_in_one_write_is_executed(pg, proxy):
    pg.psql("CREATE TABLE IF NOT EXISTS tg_term_test (v text)")
    pg.psql("TRUNCATE tg_term_test")
    pg.psql("GRANT ALL ON tg_term_test TO PUBLIC")
    # PostgreSQL itself runs the INSERT, then reads Terminate; so must the proxy.
    for n, port in ((1, pg.port), (2, proxy.port)):
        with PgWire(port) as w:
            w.login("trust_user", "app")
            w.send(P.query_msg("INSERT INTO tg_term_test VALUES ('before terminate')") + P.TERMINATE)
            assert w.is_closed(timeout=10)
        tgtest.wait_until(lambda: pg.psql("SELECT count(*) FROM tg_term_test") == str(n), 5,
                          what=f"the INSERT sent before Terminate (port {port})")



@pytest.mark.parametrize("user", ["trust_user", "plain_user", "md5_user"])
def test_query_pipelined_behind_the_login(pg, proxy, user):
    """A client may send its first Query right behind its password (or startup),
    before ReadyForQuery: PostgreSQL reads it once the session is ready."""
    got = {}
    for name, port in (("direct", pg.port), ("proxy", proxy.port)):
        with PgWire(port) as w:
            q = P.query_msg("SELECT 'pipelined'")
            if user == "trust_user":
                w.send(P.startup_packet(user, "app") + q)
            else:
                w.send(P.startup_packet(user, "app"))
                t, p = w.read_msg()
                assert t == "R"
                code = struct.unpack("!I", p[:4])[0]
                pw = tgtest.PASSWORDS[user]
                if code == 3:
                    answer = pw.encode()
                else:
                    import hashlib
                    inner = hashlib.md5((pw + user).encode()).hexdigest()
                    answer = b"md5" + hashlib.md5(inner.encode() + p[4:8]).hexdigest().encode()
                w.send(P.msg("p", answer + b"\0") + q)
            msgs = w.read_until("ZE")          # the login's ReadyForQuery
            assert not tgtest.errors_of(msgs), (name, tgtest.errors_of(msgs))
            got[name] = tgtest.rows_of(w.read_until("Z"))
    assert got["proxy"] == got["direct"] == [["pipelined"]]


def test_very_large_error_message(pg, proxy):
    sql = "DO $$BEGIN RAISE EXCEPTION '%', repeat('e', 20 * 1024 * 1024); END$$"
    msgs = both(pg, proxy, [(P.query_msg(sql), 1), (P.query_msg("SELECT 1"), 1)])
    assert types(msgs) == "EZTDCZ"


def test_very_large_notice(pg, proxy):
    sql = "DO $$BEGIN RAISE NOTICE '%', repeat('n', 20 * 1024 * 1024); END$$"
    msgs = both(pg, proxy, [(P.query_msg(sql), 1)])
    assert types(msgs) == "NCZ"
