"""Startup through the proxy: what the server refuses reaches the client unchanged,
what the proxy refuses gets a clear FATAL with a SQLSTATE, and odd first packets
(protocol 2, garbage, GSSENCRequest, truncation) never hurt other sessions."""
import struct

import psycopg
import pytest

import tgtest
from tgtest import PgWire, PgWireError


def direct_wire(pg):
    return PgWire(pg.port)


def assert_alive(proxy, conn):
    """The proxy still runs and a session opened before the bad client still works."""
    assert proxy.proc.poll() is None, f"tenantguard exited:\n{proxy.log()[-3000:]}"
    assert conn.execute("SELECT 41 + 1").fetchone()[0] == 42
    with proxy.connect() as c:
        assert c.execute("SELECT 'new'").fetchone()[0] == "new"


def test_unknown_database_gets_the_servers_3D000_unchanged(pg, proxy):
    with pytest.raises(PgWireError) as via_proxy, proxy.wire() as w:
        w.login("trust_user", "no_such_db")
    with pytest.raises(PgWireError) as direct, direct_wire(pg) as w:
        w.login("trust_user", "no_such_db")
    assert via_proxy.value.sqlstate == "3D000"
    assert via_proxy.value.fields == direct.value.fields
    # And through libpq, for a SCRAM user (the error comes after authentication).
    with pytest.raises(psycopg.OperationalError) as e:
        proxy.connect(user="app", db="no_such_db")
    assert 'database "no_such_db" does not exist' in str(e.value)


def test_unknown_user_gets_the_servers_error(pg, proxy):
    with pytest.raises(PgWireError) as via_proxy, proxy.wire() as w:
        w.login("no_such_user", "app", password="x")
    with pytest.raises(PgWireError) as direct, direct_wire(pg) as w:
        w.login("no_such_user", "app", password="x")
    assert via_proxy.value.sqlstate == "28P01"
    assert via_proxy.value.fields == direct.value.fields


@pytest.mark.parametrize("value", ["database", "true", "1"])
def test_replication_connection_refused_cleanly(proxy, value):
    with proxy.connect() as other, proxy.wire() as w:
        w.send(PgWire.startup_packet("trust_user", "app", replication=value))
        f = w.expect_fatal_and_close()
        assert f["S"] == "FATAL"
        assert f["C"] == "0A000"
        assert "replication" in f["M"]
        assert_alive(proxy, other)


def test_replication_refused_through_libpq(proxy):
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(proxy.dsn(replication="database"))
    assert "replication connections are not relayed" in str(e.value)


def test_replication_false_is_a_normal_session(proxy):
    with proxy.wire() as w:
        w.login("trust_user", "app", replication="off")
        assert w.scalar("SELECT current_user") == "trust_user"


def test_protocol_2_startup_gets_08P01(proxy):
    with proxy.connect() as other, proxy.wire() as w:
        w.send(PgWire.startup_packet("trust_user", "app", protocol=0x00020000))
        f = w.expect_fatal_and_close()
        assert f["C"] == "08P01"
        assert "protocol 2.0" in f["M"]
        assert_alive(proxy, other)


GARBAGE = {
    "http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "length_below_8": struct.pack("!I", 4) + b"\0\0\0\0",
    "length_zero": b"\0\0\0\0\0\0\0\0",
    "length_huge": struct.pack("!II", 0x7FFFFFFF, 0x00030000),
    "length_over_10000": struct.pack("!II", 10001, 0x00030000) + b"x" * 10001,
    "unknown_code": struct.pack("!II", 16, 0x12345678) + b"\1" * 8,
    "cancel_wrong_length": struct.pack("!II", 12, tgtest.CANCEL_REQUEST) + b"\0\0\0\1",
    "ssl_request_wrong_length": struct.pack("!II", 12, tgtest.SSL_REQUEST) + b"\0\0\0\0",
}



@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_startup_gets_08P01_and_a_close(proxy, name):
    with proxy.connect() as other, proxy.wire(timeout=3) as w:
        w.send(GARBAGE[name])
        f = w.expect_fatal_and_close()
        assert f["S"] == "FATAL"
        assert f["C"] == "08P01", f
        assert_alive(proxy, other)


def test_startup_without_parameters_terminator_is_refused(proxy):
    # A v3 startup packet whose last string has no NUL.
    body = struct.pack("!I", tgtest.PROTO_3_0) + b"user\0trust_user"
    with proxy.wire() as w:
        w.send(struct.pack("!I", len(body) + 4) + body)
        f = w.expect_fatal_and_close()
        assert f["C"] == "08P01"


def test_startup_without_user_gets_28000(proxy):
    with proxy.wire() as w:
        w.send(PgWire.startup_packet(user=None, database="app"))
        f = w.expect_fatal_and_close()
        assert f["C"] == "28000"
        assert "user" in f["M"]


def test_gssenc_request_answered_N_then_normal_startup(proxy):
    with proxy.wire() as w:
        w.send(PgWire.code_packet(tgtest.GSSENC_REQUEST))
        assert w.read_bytes(1) == b"N"
        w.login("trust_user", "app")
        assert w.scalar("SELECT current_user") == "trust_user"


def test_gssenc_then_ssl_request_then_startup(proxy_factory, pg):
    # What libpq does with gssencmode=prefer and sslmode=prefer: GSSENC, then SSL.
    proxy = proxy_factory({"client_tls_mode": "allow", "client_tls_cert_file": pg.cert_file,
                           "client_tls_key_file": pg.key_file})
    with psycopg.connect(proxy.dsn(sslmode="require", gssencmode="prefer")) as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1
        assert c.pgconn.ssl_in_use


def test_startup_parameters_are_relayed(proxy):
    r = proxy.psql("SHOW search_path; SHOW application_name; SHOW work_mem",
                   options="'-c search_path=pg_catalog -c work_mem=7MB'",
                   application_name="tg_startup_test")
    assert r.stdout.split() == ["pg_catalog", "tg_startup_test", "7MB"]


def test_negotiate_protocol_version_is_passed_back(pg, proxy):
    """A client asking for 3.5 with an unknown _pq_ option gets the server's
    NegotiateProtocolVersion, and the session then works."""
    out = {}
    for name, port in (("proxy", proxy.port), ("direct", pg.port)):
        with PgWire(port) as w:
            w.send(PgWire.startup_packet("trust_user", "app", protocol=0x00030005,
                                         **{"_pq_.tg_test": "1"}))
            msgs = w.read_until("ZE")
            assert msgs[-1][0] == "Z", msgs
            out[name] = [m for m in msgs if m[0] == "v"]
            assert w.scalar("SELECT 7") == "7"
    assert out["proxy"] == out["direct"]
    assert len(out["proxy"]) == 1
    newest, n = struct.unpack("!II", out["proxy"][0][1][:8])
    assert newest == tgtest.PROTO_3_0 and n == 1


def test_truncated_startup_then_close(proxy):
    with proxy.connect() as other:
        for cut in (1, 3, 4, 7, 20):
            pkt = PgWire.startup_packet("trust_user", "app")
            with proxy.wire() as w:
                w.send(pkt[:cut])
            assert_alive(proxy, other)
        proxy.wait_log("client closed during startup")


def test_truncated_startup_then_stall_hits_client_login_timeout(proxy_factory):
    proxy = proxy_factory({"client_login_timeout": 1})
    with proxy.connect() as other, proxy.wire(timeout=10) as w:
        w.send(PgWire.startup_packet("trust_user", "app")[:10])
        f = w.expect_fatal_and_close()
        assert f["C"] == "08P01"
        assert "client_login_timeout" in f["M"]
        assert_alive(proxy, other)


def test_stall_during_authentication_hits_client_login_timeout(proxy_factory):
    proxy = proxy_factory({"client_login_timeout": 1})
    with proxy.wire(timeout=10) as w:
        w.send(PgWire.startup_packet("app", "app"))
        mtype, payload = w.read_msg()
        assert mtype == "R" and struct.unpack("!I", payload[:4])[0] == 10   # SASL, then silence
        f = w.expect_fatal_and_close()
        assert f["C"] == "08P01"
        assert "client_login_timeout" in f["M"]


def test_session_survives_login_timeout(proxy_factory):
    """The login deadline ends at ReadyForQuery: a session idle longer stays."""
    proxy = proxy_factory({"client_login_timeout": 1})
    with proxy.wire() as w:
        w.login()
        assert not w.is_closed(timeout=2.5)
        assert w.scalar("SELECT 'still here'") == "still here"


def test_half_password_message_then_stall_hits_client_login_timeout(proxy_factory):
    proxy = proxy_factory({"client_login_timeout": 1})
    with proxy.wire(timeout=10) as w:
        w.send(PgWire.startup_packet("plain_user", "app"))
        assert w.read_msg()[0] == "R"
        w.send(PgWire.msg("p", b"plain-Secret-21\0")[:7])
        f = w.expect_fatal_and_close()
        assert f["C"] == "08P01"
        assert "client_login_timeout" in f["M"]


def test_startup_packet_of_10000_bytes_is_accepted_10001_refused(pg, proxy):
    def packet(total):
        base = PgWire.startup_packet("trust_user", "app", application_name="")
        pad = total - len(base)
        return PgWire.startup_packet("trust_user", "app", application_name="a" * pad)
    assert len(packet(10000)) == 10000
    with proxy.wire() as w:
        w.send(packet(10000))
        msgs = w.read_until("ZE")
        assert msgs[-1][0] == "Z", msgs[-1]
    with proxy.wire(timeout=3) as w:
        w.send(packet(10001))
        f = w.expect_fatal_and_close()
        assert f["C"] == "08P01"
        assert "invalid length of startup packet" in f["M"]
