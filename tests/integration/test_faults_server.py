"""Faults on the server side: PostgreSQL killed (pg_ctl stop -m immediate) mid-query
and mid-transaction, then started again; a hostile server. Each test asserts what
the client sees, that nothing half-done was committed, that the proxy serves new
sessions afterwards, and that it leaked neither file descriptors nor sessions."""
import socket
import struct

import pytest

import tgtest
from tgtest import PgWire


def wait_active(pg, pid, what):
    tgtest.wait_until(lambda: pg.psql(
        f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND state = 'active' "
        f"AND query LIKE '%{what}%'") == "1", 10, what=f"backend {pid} to run {what}")


def idle_fds(proxy):
    """The proxy's descriptors with no session open (start() leaves its own
    port probe's session behind for a moment)."""
    tgtest.wait_until(lambda: proxy.live_sessions() == 0, 15, what="no session open")
    return proxy.fd_count()


def assert_no_leaks(proxy, fds_idle):
    """Every session freed and the proxy back at the descriptors it had idle."""
    tgtest.wait_until(lambda: proxy.live_sessions() == 0, 15, what="every session freed")
    # at most what it had idle (a descriptor of its own start-up may have gone since)
    tgtest.wait_until(lambda: proxy.fd_count() <= fds_idle, 15,
                      what=f"the proxy back at {fds_idle} fds (has {proxy.fd_count()})")


def assert_serving(proxy):
    assert proxy.proc.poll() is None, proxy.log()[-3000:]
    tgtest.wait_until(lambda: proxy.connect().execute("SELECT 1").fetchone()[0] == 1, 60,
                      what="a new session through the proxy")


@pytest.fixture
def fault_table(pg):
    pg.psql("CREATE TABLE IF NOT EXISTS tg_fault_test (id int, v text)")
    pg.psql("TRUNCATE tg_fault_test")
    pg.psql("GRANT ALL ON tg_fault_test TO PUBLIC")
    yield "tg_fault_test"
    if tgtest.port_open(pg.port):
        pg.psql("DROP TABLE IF EXISTS tg_fault_test")   # other tests count the public tables


@pytest.fixture
def killed_pg(pg):
    """The cluster, started again at teardown whatever the test did to it."""
    yield pg
    if not tgtest.port_open(pg.port):
        pg.start_server()


def test_immediate_stop_mid_query_and_mid_transaction(fault_table, killed_pg, proxy):
    pg = killed_pg
    fds_idle = idle_fds(proxy)
    with proxy.wire() as busy, proxy.wire() as in_txn, proxy.wire() as idle:
        for w in (busy, in_txn, idle):
            w.login("trust_user", "app")
        in_txn.query("BEGIN")
        assert tgtest.errors_of(in_txn.query(f"INSERT INTO {fault_table} VALUES (1, 'half')")) == []
        busy.send(PgWire.query_msg("SELECT pg_sleep(60)"))
        wait_active(pg, busy.backend_pid, "pg_sleep")

        pg.stop("immediate")
        # Every client hears about it: PostgreSQL's own FATAL (57P01/57P02 class) when
        # the backend got to say it, else tenantguard's 08006 -- and then a close.
        for w in (busy, in_txn, idle):
            f = w.expect_fatal_and_close()
            assert f["C"][:2] in ("57", "08"), f
        # While the server is down a new login fails fast with 08006, not a hang.
        with proxy.wire(timeout=30) as down:
            with pytest.raises(tgtest.PgWireError) as e:
                down.login("trust_user", "app")
            assert e.value.sqlstate == "08006", e.value.fields
        assert proxy.proc.poll() is None

        pg.start_server()
    assert_serving(proxy)
    assert pg.psql(f"SELECT count(*) FROM {fault_table}") == "0"   # the open transaction is gone
    assert_no_leaks(proxy, fds_idle)


def test_immediate_stop_with_many_sessions(killed_pg, proxy):
    """30 sessions, some in transactions and some running queries, all cut at once."""
    pg = killed_pg
    fds_idle = idle_fds(proxy)
    wires = []
    for i in range(30):
        w = proxy.wire(timeout=30)
        w.login("trust_user", "app")
        if i % 3 == 0:
            w.query("BEGIN")
        elif i % 3 == 1:
            w.send(PgWire.query_msg("SELECT pg_sleep(60)"))
        wires.append(w)
    pg.stop("immediate")
    for w in wires:
        f = w.expect_fatal_and_close()
        assert f["C"][:2] in ("57", "08"), f
        w.close()
    pg.start_server()
    assert_serving(proxy)
    assert_no_leaks(proxy, fds_idle)


# ---------------------------------------------------------------- a hostile server

def test_server_message_of_length_ffffffff_does_not_hang_the_proxy(proxy_factory):
    bad = tgtest.FakeServer(on_query=lambda sql: b"D" + b"\xff\xff\xff\xff" + b"\0\1")
    try:
        proxy = proxy_factory({"server_port": bad.port, "mode": "off"})
        with proxy.wire(timeout=10) as a:
            a.login("x", "x")
            a.send(PgWire.query_msg("SELECT 1"))
            # the proxy must refuse the message: an error and a close for this client ...
            f = a.expect_fatal_and_close()
            assert f["C"] in ("08P01", "08006"), f
        # ... and go on serving everyone else
        with proxy.wire(timeout=10) as b:
            b.login("y", "y")
    finally:
        bad.close()


def test_server_closing_mid_message_gets_08006(proxy_factory):
    """The server dies in the middle of a (small) DataRow: the client gets the
    whole messages before it, then 08006 and a close -- never half a frame with an
    ErrorResponse glued to it; the next session is served."""
    cut = tgtest.FakeServer(on_query=lambda sql: (PgWire.msg("T", b"\0\0") + b"D\0\0\0\x20\0\1",
                                                  tgtest.FakeServer.CLOSE))
    try:
        proxy = proxy_factory({"server_port": cut.port, "mode": "off"})
        fds_idle = idle_fds(proxy)
        with proxy.wire(timeout=10) as a:
            a.login("x", "x")
            a.send(PgWire.query_msg("SELECT 1"))
            msgs = a.read_until_closed()
            assert [t for t, _ in msgs] == ["T", "E"], msgs
            f = tgtest.error_fields(msgs[-1][1])
            assert f["C"] == "08006" and f["S"] == "FATAL", f
        with proxy.wire(timeout=10) as b:
            b.login("y", "y")
        assert_no_leaks(proxy, fds_idle)
    finally:
        cut.close()


def test_server_closing_mid_streamed_message_cuts_the_frame(proxy_factory):
    """A DataRow too big to hold is streamed as it arrives; when the server dies
    inside it the client gets exactly the bytes the server sent, then the close:
    nothing appended that would read as the rest of the row."""
    body = b"\0\1" + struct.pack("!I", 4 << 20)      # one column of 4 MiB ...
    sent = b"D" + struct.pack("!I", 4 + len(body) + (4 << 20)) + body + b"x" * (300 << 10)   # ... of which 300 KiB
    cut = tgtest.FakeServer(on_query=lambda sql: (PgWire.msg("T", b"\0\0") + sent, tgtest.FakeServer.CLOSE))
    try:
        proxy = proxy_factory({"server_port": cut.port, "mode": "off"})
        fds_idle = idle_fds(proxy)
        with proxy.wire(timeout=10) as a:
            a.login("x", "x")
            a.send(PgWire.query_msg("SELECT 1"))
            raw = a.read_raw_until_closed()
            assert raw == PgWire.msg("T", b"\0\0") + sent, (len(raw), raw[-40:])
        with proxy.wire(timeout=10) as b:
            b.login("y", "y")
        assert_no_leaks(proxy, fds_idle)
    finally:
        cut.close()
