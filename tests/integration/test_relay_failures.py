"""Failures on either side: server unreachable, restarted, terminating or cutting a
session; clients vanishing mid-transaction, mid-query, mid-COPY. The client always
gets an error with a SQLSTATE, nothing uncommitted is kept, the proxy serves on."""
import socket
import struct

import psycopg
import pytest

import tgtest
from tgtest import PgWire


def backend_gone(pg, pid, timeout=15):
    tgtest.wait_until(lambda: pg.psql(f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}") == "0",
                      timeout, what=f"backend {pid} to go away")


def wait_active(pg, pid, what):
    tgtest.wait_until(lambda: pg.psql(
        f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND state = 'active' "
        f"AND query LIKE '%{what}%'") == "1", 10, what=f"backend {pid} to run {what}")


def assert_serving(proxy):
    assert proxy.proc.poll() is None, proxy.log()[-3000:]
    tgtest.wait_until(lambda: proxy.connect().execute("SELECT 1").fetchone()[0] == 1, 30,
                      what="a new session through the proxy")


@pytest.fixture
def scratch_table(pg):
    pg.psql("CREATE TABLE IF NOT EXISTS tg_fail_test (id int, v text)")
    pg.psql("TRUNCATE tg_fail_test")
    pg.psql("GRANT ALL ON tg_fail_test TO PUBLIC")
    return "tg_fail_test"


def rows_in(pg, table):
    return int(pg.psql(f"SELECT count(*) FROM {table}"))


def abort(w):
    """Vanish: close with RST (SO_LINGER 0), no Terminate."""
    w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.close()


# ---------------------------------------------------------------- server side

def test_server_unreachable_gets_08006_with_the_reason(proxy_factory):
    port = tgtest.free_port()
    proxy = proxy_factory({"server_port": port})
    with proxy.wire() as w:
        w.send(PgWire.startup_packet("trust_user", "app"))
        f = w.expect_fatal_and_close()
    assert f["S"] == "FATAL" and f["C"] == "08006"
    assert f["M"] == f"tenantguard: could not connect to the server 127.0.0.1:{port}: Connection refused"
    msg = tgtest.connect_error(proxy.dsn())
    assert "could not connect to the server" in msg and "Connection refused" in msg
    assert proxy.proc.poll() is None


def test_server_unix_socket_missing_gets_08006(proxy_factory, workdir):
    proxy = proxy_factory({"server_host": workdir})
    with proxy.wire() as w:
        w.send(PgWire.startup_packet("trust_user", "app"))
        f = w.expect_fatal_and_close()
    assert f["C"] == "08006"
    assert "No such file or directory" in f["M"]


def test_server_on_unix_socket_works(pg, proxy_factory):
    proxy = proxy_factory({"server_host": pg.sockdir})
    with proxy.connect(user="trust_user") as c:
        assert c.execute("SELECT inet_server_addr() IS NULL").fetchone()[0] is True   # unix socket


def test_unresolvable_server_host_gets_08006(proxy_factory):
    proxy = proxy_factory({"server_host": "no-such-host.invalid", "server_connect_timeout": 3})
    with proxy.wire(timeout=30) as w:
        w.send(PgWire.startup_packet("trust_user", "app"))
        f = w.expect_fatal_and_close()
    assert f["C"] == "08006"
    assert "no-such-host.invalid" in f["M"]


def test_server_that_never_answers(proxy_factory):
    """A server that accepts TCP but never says a word: server_connect_timeout runs until
    the server's first answer, so the client gets 08006 saying so; other sessions are
    unaffected."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        proxy = proxy_factory({"server_port": silent.getsockname()[1], "client_login_timeout": 2,
                               "server_connect_timeout": 1})
        with proxy.wire(timeout=20) as w:
            w.send(PgWire.startup_packet("trust_user", "app"))
            f = w.expect_fatal_and_close()
        assert f["C"] == "08006" and "server_connect_timeout" in f["M"], f
        assert proxy.proc.poll() is None
    finally:
        silent.close()


def test_server_terminates_the_backend(pg, proxy):
    """pg_terminate_backend: the server's own FATAL 57P01 reaches the client, as directly."""
    got = {}
    for name, port in (("proxy", proxy.port), ("direct", pg.port)):
        with PgWire(port) as w:
            w.login("trust_user", "app")
            pg.psql(f"SELECT pg_terminate_backend({w.backend_pid})")
            got[name] = w.expect_fatal_and_close()
    assert got["proxy"] == got["direct"]
    assert got["proxy"]["C"] == "57P01"
    assert_serving(proxy)


def test_server_terminates_a_busy_backend(pg, proxy):
    with proxy.connect() as c:
        pid = c.info.backend_pid
        import threading
        err = []

        def run():
            try:
                c.execute("SELECT pg_sleep(30)")
            except psycopg.Error as e:
                err.append(e)
        t = threading.Thread(target=run)
        t.start()
        wait_active(pg, pid, "pg_sleep")
        pg.psql(f"SELECT pg_terminate_backend({pid})")
        t.join(10)
        assert not t.is_alive()
        assert err and "terminating connection due to administrator command" in str(err[0])
    assert_serving(proxy)


def test_server_connection_cut_without_a_word(pg, proxy_factory):
    """The server side drops (no ErrorResponse): the client gets 08006 and a close,
    idle or mid-query."""
    fwd = tgtest.TcpForwarder(pg.port)
    try:
        proxy = proxy_factory({"server_port": fwd.port})
        with proxy.wire() as idle, proxy.wire() as busy:
            idle.login("trust_user", "app")
            busy.login("trust_user", "app")
            busy.send(PgWire.query_msg("SELECT pg_sleep(30)"))
            wait_active(pg, busy.backend_pid, "pg_sleep")
            fwd.drop_all()
            for w in (idle, busy):
                f = w.expect_fatal_and_close()
                assert f["C"] == "08006"
                assert "server closed the connection" in f["M"] or "lost the connection" in f["M"]
        with proxy.connect() as c:
            assert c.execute("SELECT 'via new forwarded conn'").fetchone()[0] == "via new forwarded conn"
    finally:
        fwd.close()
        pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'")


def test_server_restart_mid_session(pg, proxy):
    """A restart (fast): idle and busy sessions get the server's 57P01 and a close;
    the proxy serves new sessions once the server is back."""
    other = proxy.connect()
    with proxy.wire() as idle, proxy.wire() as busy:
        idle.login("trust_user", "app")
        busy.login("trust_user", "app")
        busy.send(PgWire.query_msg("SELECT pg_sleep(30)"))
        wait_active(pg, busy.backend_pid, "pg_sleep")
        pg.restart_server()
        for w in (idle, busy):
            f = w.expect_fatal_and_close()
            assert f["C"] == "57P01", f
    with pytest.raises(psycopg.OperationalError):
        other.execute("SELECT 1")
    other.close()
    assert_serving(proxy)
    with proxy.connect() as c:
        assert c.execute("SELECT count(*) FROM pg_stat_activity").fetchone()[0] >= 1


# ---------------------------------------------------------------- client side

def test_client_vanishing_mid_transaction_rolls_back(pg, proxy, scratch_table):
    with proxy.wire() as w:
        w.login("trust_user", "app")
        pid = w.backend_pid
        w.query("BEGIN")
        assert tgtest.errors_of(w.query(f"INSERT INTO {scratch_table} VALUES (1, 'uncommitted')")) == []
        abort(w)
    backend_gone(pg, pid)
    assert rows_in(pg, scratch_table) == 0
    assert_serving(proxy)


def test_client_closing_cleanly_mid_transaction_rolls_back(pg, proxy, scratch_table):
    with proxy.wire() as w:
        w.login("trust_user", "app")
        pid = w.backend_pid
        w.query("BEGIN")
        w.query(f"INSERT INTO {scratch_table} VALUES (2, 'uncommitted')")
    backend_gone(pg, pid)
    assert rows_in(pg, scratch_table) == 0


def test_client_vanishing_mid_query(pg, proxy, scratch_table):
    """With client_connection_check_interval the backend notices the closed socket
    during pg_sleep: that proves the proxy closed its server connection."""
    with proxy.wire() as w:
        w.login("trust_user", "app")
        pid = w.backend_pid
        w.query("SET client_connection_check_interval = '100ms'")
        w.query("BEGIN")
        w.query(f"INSERT INTO {scratch_table} VALUES (3, 'uncommitted')")
        w.send(PgWire.query_msg("SELECT pg_sleep(60)"))
        wait_active(pg, pid, "pg_sleep")
        abort(w)
    backend_gone(pg, pid)
    assert rows_in(pg, scratch_table) == 0


def test_client_vanishing_mid_copy(pg, proxy, scratch_table):
    with proxy.wire() as w:
        w.login("trust_user", "app")
        pid = w.backend_pid
        w.send(PgWire.query_msg(f"COPY {scratch_table} FROM STDIN"))
        assert w.read_msg()[0] == "G"
        w.send(PgWire.msg("d", b"".join(b"%d\tx\n" % i for i in range(10000))))
        abort(w)
    backend_gone(pg, pid)
    assert rows_in(pg, scratch_table) == 0


def test_client_vanishing_while_result_streams(pg, proxy):
    """The client disappears while the server is sending a large result."""
    with proxy.wire() as w:
        w.login("trust_user", "app")
        pid = w.backend_pid
        w.send(PgWire.query_msg("SELECT repeat('v', 1000) FROM generate_series(1, 300000)"))
        w.read_msg()
        abort(w)
    backend_gone(pg, pid)
    assert_serving(proxy)


def test_many_clients_vanishing_at_once(pg, proxy, scratch_table):
    wires = []
    for i in range(20):
        w = proxy.wire()
        w.login("trust_user", "app")
        w.query("BEGIN")
        w.query(f"INSERT INTO {scratch_table} VALUES ({i}, 'uncommitted')")
        wires.append(w)
    pids = [w.backend_pid for w in wires]
    for w in wires:
        abort(w)
    for pid in pids:
        backend_gone(pg, pid)
    assert rows_in(pg, scratch_table) == 0
    assert_serving(proxy)


def test_client_vanishing_during_login(pg, proxy):
    for user in ("app", "md5_user", "plain_user"):
        with proxy.wire() as w:
            w.send(PgWire.startup_packet(user, "app"))
            assert w.read_msg()[0] == "R"
            abort(w)
    tgtest.wait_until(lambda: proxy.log().count("client closed during authentication") >= 3, 10,
                      what="3 sessions closed during authentication")
    assert_serving(proxy)


@pytest.mark.parametrize("setting,sqlstate", [("idle_in_transaction_session_timeout", "25P03"),
                                              ("idle_session_timeout", "57P05")])
def test_server_side_session_timeouts_reach_the_client(pg, proxy, setting, sqlstate):
    """The server ends a session on its own (FATAL): the client gets that error, as directly."""
    got = {}
    for name, port in (("proxy", proxy.port), ("direct", pg.port)):
        with PgWire(port) as w:
            w.login("trust_user", "app")
            w.query(f"SET {setting} = '300ms'")
            if sqlstate == "25P03":
                w.query("BEGIN")
            got[name] = w.expect_fatal_and_close()
    assert got["proxy"] == got["direct"]
    assert got["proxy"]["C"] == sqlstate
    assert_serving(proxy)
