"""Raw-socket bad input: each bad client gets an 08P01 ErrorResponse (or a timeout
close), nothing crashes, and a session opened before keeps working."""
import ssl
import struct
import time

import pytest

import tgtest
from tgtest import PgWire

MAX_PACKET = 65536


@pytest.fixture
def small_proxy(proxy_factory):
    return proxy_factory({"max_packet_size": "64kB"})


def assert_alive(proxy, conn):
    assert proxy.proc.poll() is None, f"tenantguard exited:\n{proxy.log()[-3000:]}"
    assert conn.execute("SELECT 41 + 1").fetchone()[0] == 42
    with proxy.connect() as c:
        assert c.execute("SELECT 'new'").fetchone()[0] == "new"


def logged_in(proxy, **kw):
    w = proxy.wire(**kw)
    w.login("trust_user", "app")
    return w


# ---------------------------------------------------------------- framing after login

@pytest.mark.parametrize("length", [0, 1, 2, 3])
def test_message_length_below_4_gets_08P01(small_proxy, length):
    with small_proxy.connect() as other, logged_in(small_proxy) as w:
        w.send(b"Q" + struct.pack("!I", length) + b"SELECT 1\0")
        f = w.expect_fatal_and_close()
        assert f["S"] == "FATAL" and f["C"] == "08P01"
        assert "invalid message length" in f["M"]
        assert_alive(small_proxy, other)


@pytest.mark.parametrize("mtype", ["Q", "P", "B", "d", "F"])
def test_message_over_max_packet_size_gets_08P01_from_its_header(small_proxy, mtype):
    """The header alone is enough: the proxy must not wait for (or buffer) the body."""
    with small_proxy.connect() as other, logged_in(small_proxy) as w:
        w.send(mtype.encode() + struct.pack("!I", MAX_PACKET + 4 + 1))
        f = w.expect_fatal_and_close()
        assert f["C"] == "08P01"
        assert "max_packet_size" in f["M"]
        assert_alive(small_proxy, other)


def test_message_of_exactly_max_packet_size_passes(small_proxy):
    # Query payload = SQL + NUL = MAX_PACKET bytes.
    head, tail = "SELECT length('", "')"
    sql = head + "x" * (MAX_PACKET - 1 - len(head) - len(tail)) + tail
    assert len(sql) + 1 == MAX_PACKET
    with logged_in(small_proxy) as w:
        msgs = w.query(sql)
        assert tgtest.rows_of(msgs) == [[str(MAX_PACKET - 1 - len(head) - len(tail))]]
        # One byte more is refused.
        w.send(PgWire.query_msg(sql + " "))
        f = w.expect_fatal_and_close()
        assert f["C"] == "08P01" and "max_packet_size" in f["M"]


def test_huge_length_field_gets_08P01(small_proxy):
    with small_proxy.connect() as other, logged_in(small_proxy) as w:
        w.send(b"Q\xff\xff\xff\xff")
        f = w.expect_fatal_and_close()
        assert f["C"] == "08P01"
        assert_alive(small_proxy, other)


@pytest.mark.parametrize("mtype", [b"Z", b"\x00", b"A", b"v", b"\xff", b"R"])
def test_unknown_message_type_gets_08P01(small_proxy, mtype):
    with small_proxy.connect() as other, logged_in(small_proxy) as w:
        w.send(mtype + struct.pack("!I", 4))
        f = w.expect_fatal_and_close()
        assert f["C"] == "08P01"
        assert "invalid frontend message type" in f["M"]
        assert_alive(small_proxy, other)


def test_password_message_after_login_gets_the_servers_answer(pg, proxy):
    """'p' is a frontend type, so it is relayed: the server's own refusal comes back."""
    got = {}
    for name, port in (("proxy", proxy.port), ("direct", pg.port)):
        with PgWire(port) as w:
            w.login("trust_user", "app")
            w.send(PgWire.msg("p", b"secret\0"))
            got[name] = w.expect_fatal_and_close()
    assert got["proxy"] == got["direct"]
    assert got["proxy"]["C"] == "08P01"


def test_ssl_request_after_login_gets_08P01(proxy):
    with proxy.connect() as other, logged_in(proxy) as w:
        w.send(PgWire.code_packet(tgtest.SSL_REQUEST))
        f = w.expect_fatal_and_close()
        assert f["C"] == "08P01"
        assert_alive(proxy, other)


# ---------------------------------------------------------------- bad input during authentication

def test_bad_length_during_authentication(proxy):
    with proxy.connect() as other, proxy.wire() as w:
        w.send(PgWire.startup_packet("app", "app"))
        assert w.read_msg()[0] == "R"
        w.send(b"p\0\0\0\2")
        f = w.expect_fatal_and_close()
        assert f["C"] == "08P01"
        assert_alive(proxy, other)


def test_query_instead_of_password_gets_08P01(proxy):
    with proxy.connect() as other, proxy.wire() as w:
        w.send(PgWire.startup_packet("plain_user", "app"))
        assert w.read_msg()[0] == "R"
        w.send(PgWire.query_msg("SELECT 1"))
        f = w.expect_fatal_and_close()
        assert f["C"] == "08P01"
        assert_alive(proxy, other)


def test_oversized_password_message_gets_08P01(proxy):
    with proxy.connect() as other, proxy.wire() as w:
        w.send(PgWire.startup_packet("plain_user", "app"))
        assert w.read_msg()[0] == "R"
        w.send(b"p" + struct.pack("!I", 64 * 1024 * 1024))
        f = w.expect_fatal_and_close()
        assert f["C"] == "08P01"
        assert_alive(proxy, other)


# ---------------------------------------------------------------- SSLRequest followed by junk

@pytest.fixture
def tls_proxy(proxy_factory, pg):
    return proxy_factory({"client_tls_mode": "allow", "client_tls_cert_file": pg.cert_file,
                          "client_tls_key_file": pg.key_file})


def test_ssl_request_with_plaintext_behind_it_is_refused(tls_proxy):
    """Bytes sent after SSLRequest, before the handshake, must not be processed
    (CVE-2021-23222): 08P01 and a close."""
    with tls_proxy.connect() as other, tls_proxy.wire() as w:
        w.send(PgWire.code_packet(tgtest.SSL_REQUEST) + PgWire.startup_packet("trust_user", "app"))
        msgs = w.read_until_closed()
        assert msgs and msgs[-1][0] == "E", msgs
        f = tgtest.error_fields(msgs[-1][1])
        assert f["C"] == "08P01"
        assert "unencrypted data after SSL request" in f["M"]
        assert_alive(tls_proxy, other)


@pytest.mark.parametrize("junk", [b"\x16\x03\x01\x00\x05hello", b"GET / HTTP/1.0\r\n\r\n",
                                  PgWire.startup_packet("trust_user", "app")])
def test_ssl_request_then_garbage_instead_of_a_handshake(tls_proxy, junk):
    with tls_proxy.connect() as other, tls_proxy.wire() as w:
        w.send(PgWire.code_packet(tgtest.SSL_REQUEST))
        assert w.read_bytes(1) == b"S"
        w.send(junk)
        # The TLS handshake fails: the proxy closes (a TLS alert may come first).
        assert w.is_closed(timeout=10)
        assert_alive(tls_proxy, other)
    tls_proxy.wait_log("client TLS handshake failed")


def test_ssl_request_then_stall_hits_client_login_timeout(proxy_factory, pg):
    proxy = proxy_factory({"client_tls_mode": "allow", "client_tls_cert_file": pg.cert_file,
                           "client_tls_key_file": pg.key_file, "client_login_timeout": 1})
    with proxy.wire() as w:
        w.send(PgWire.code_packet(tgtest.SSL_REQUEST))
        assert w.read_bytes(1) == b"S"
        assert w.is_closed(timeout=10)


def test_ssl_request_answered_N_then_garbage(proxy):
    """client_tls_mode = disable: 'N', then the garbage is a bad startup packet."""
    with proxy.connect() as other, proxy.wire() as w:
        w.send(PgWire.code_packet(tgtest.SSL_REQUEST))
        assert w.read_bytes(1) == b"N"
        w.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 32)
        f = w.expect_fatal_and_close()
        assert f["C"] == "08P01"
        assert_alive(proxy, other)


def test_duplicate_ssl_request_gets_08P01(proxy):
    with proxy.wire() as w:
        w.send(PgWire.code_packet(tgtest.SSL_REQUEST))
        assert w.read_bytes(1) == b"N"
        w.send(PgWire.code_packet(tgtest.SSL_REQUEST))
        f = w.expect_fatal_and_close()
        assert f["C"] == "08P01"


def test_tls_then_second_ssl_request_inside_tls_gets_08P01(tls_proxy):
    with tls_proxy.wire() as w:
        w.send(PgWire.code_packet(tgtest.SSL_REQUEST))
        assert w.read_bytes(1) == b"S"
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        w.sock = ctx.wrap_socket(w.sock)
        w.send(PgWire.code_packet(tgtest.SSL_REQUEST))
        f = w.expect_fatal_and_close()
        assert f["C"] == "08P01"


# ---------------------------------------------------------------- partial messages and stalls

def test_dribbled_pipeline_one_byte_at_a_time(proxy):
    """Messages split at every byte boundary and spread over time are framed right."""
    data = (PgWire.parse_msg("SELECT $1::int * 2", "s1") + PgWire.bind_msg(["21"], stmt="s1") +
            PgWire.execute_msg() + PgWire.SYNC + PgWire.query_msg("SELECT 'a'; SELECT 'b'"))
    with logged_in(proxy) as w:
        for i in range(len(data)):
            w.send(data[i:i + 1])
            if i % 16 == 0:
                time.sleep(0.002)
        msgs = w.read_until("Z") + w.read_until("Z")
        assert tgtest.rows_of(msgs) == [["42"], ["a"], ["b"]]


def test_half_message_stall_does_not_block_other_sessions(proxy):
    """Without client_idle_timeout the staller just waits; others are served; the
    rest of the message, when it comes, completes the query."""
    msg = PgWire.query_msg("SELECT 'finished late'")
    with proxy.connect() as other, logged_in(proxy) as w:
        w.send(msg[:7])
        for _ in range(3):
            assert other.execute("SELECT 1").fetchone()[0] == 1
        w.send(msg[7:])
        assert tgtest.rows_of(w.read_until("Z")) == [["finished late"]]
        assert_alive(proxy, other)


def test_half_header_stall_is_closed_by_client_idle_timeout(proxy_factory):
    proxy = proxy_factory({"client_idle_timeout": 1})
    with logged_in(proxy) as w:
        w.send(b"Q\0\0")
        f = w.expect_fatal_and_close()
        assert f["C"] == "57P05"


def test_half_query_stall_is_closed_by_client_idle_timeout(proxy_factory):
    """Decision: outside a transaction a client stalled mid-message is idle, as with
    PostgreSQL's idle_session_timeout (whose timer also runs while a message is
    half read): client_idle_timeout closes it with 57P05."""
    proxy = proxy_factory({"client_idle_timeout": 1})
    with proxy.connect(autocommit=False) as other, logged_in(proxy) as w:
        other.execute("SELECT 1")   # in a transaction: exempt from the idle timeout
        w.send(PgWire.query_msg("SELECT 'never finished'")[:10])
        f = w.expect_fatal_and_close()
        assert f["C"] == "57P05"
        assert_alive(proxy, other)


def test_half_bind_stall_is_closed_by_client_idle_timeout(proxy_factory):
    proxy = proxy_factory({"client_idle_timeout": 1})
    with proxy.connect(autocommit=False) as other, logged_in(proxy) as w:
        other.execute("SELECT 1")   # in a transaction: exempt from the idle timeout
        w.send(PgWire.parse_msg("SELECT $1::text", "s") + PgWire.SYNC)
        w.read_until("Z")
        bind = PgWire.bind_msg(["x" * 1000], stmt="s")
        w.send(bind[:200])
        w.sock.settimeout(6)
        f = w.expect_fatal_and_close()
        assert f["C"] == "57P05"
        assert_alive(proxy, other)


def test_stall_in_transaction_is_not_timed_out(proxy_factory):
    """In a transaction the idle timeout does not apply, complete message or not."""
    proxy = proxy_factory({"client_idle_timeout": 1})
    with logged_in(proxy) as w:
        w.query("BEGIN")
        w.send(PgWire.query_msg("SELECT 'late'")[:8])
        assert not w.is_closed(timeout=2.5)
        w.send(PgWire.query_msg("SELECT 'late'")[8:])
        assert tgtest.rows_of(w.read_until("Z")) == [["late"]]
        w.query("COMMIT")


def test_client_closing_mid_message_frees_the_session(pg, proxy):
    """A client that sends half a message and closes: its backend goes away."""
    with logged_in(proxy) as w:
        pid = w.backend_pid
        w.send(PgWire.query_msg("SELECT 1")[:6])
    tgtest.wait_until(lambda: pg.psql(f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}") == "0",
                      10, what="the backend to go away")
    with proxy.connect() as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1
