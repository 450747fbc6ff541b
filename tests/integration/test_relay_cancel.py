"""Cancel through tenantguard: the client's CancelRequest (with tenantguard's own
key) reaches the right backend; wrong keys do nothing."""
import struct
import threading
import time

import psycopg
import pytest

import tgtest
from tgtest import PgWire


def wait_active(pg, pid, what="pg_sleep"):
    tgtest.wait_until(lambda: pg.psql(
        f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND state = 'active' "
        f"AND query LIKE '%{what}%'") == "1", 10, what=f"backend {pid} to run {what}")


def cancel_packet(pid, key):
    return struct.pack("!IIii", 16, tgtest.CANCEL_REQUEST, pid, key)


def send_cancel(port, pid, key):
    with PgWire(port) as w:
        w.send(cancel_packet(pid, key))
        # The proxy answers nothing and closes, as PostgreSQL does.
        assert w.read_until_closed() == []


def run_sleep_and_cancel(pg, conn, canceller, seconds=10):
    """Run pg_sleep in a thread, cancel it; returns (exception, seconds from cancel to error)."""
    pid = conn.info.backend_pid
    out = {}

    def run():
        try:
            conn.execute(f"SELECT pg_sleep({seconds})")
            out["error"] = None
        except psycopg.Error as e:
            out["error"] = e
        out["done"] = time.monotonic()
    t = threading.Thread(target=run)
    t.start()
    wait_active(pg, pid)
    started = time.monotonic()
    canceller(conn)
    t.join(seconds + 5)
    assert not t.is_alive()
    return out["error"], out["done"] - started


def test_cancel_pg_sleep_with_libpq(pg, proxy):
    with proxy.connect() as c:
        err, elapsed = run_sleep_and_cancel(pg, c, lambda conn: conn.cancel())
        assert isinstance(err, psycopg.errors.QueryCanceled), err
        assert err.diag.sqlstate == "57014"
        assert "canceling statement due to user request" in str(err)
        assert elapsed < 3, f"cancel took {elapsed:.1f}s"
        assert c.execute("SELECT 'after cancel'").fetchone()[0] == "after cancel"
    proxy.wait_log("cancel request from")


def test_cancel_with_client_tls(pg, proxy_factory):
    proxy = proxy_factory({"client_tls_mode": "require", "client_tls_cert_file": pg.cert_file,
                           "client_tls_key_file": pg.key_file, "server_sslmode": "require"})
    with psycopg.connect(proxy.dsn(sslmode="require", channel_binding="disable"), autocommit=True) as c:
        err, elapsed = run_sleep_and_cancel(pg, c, lambda conn: conn.cancel())
        assert isinstance(err, psycopg.errors.QueryCanceled), err
        assert elapsed < 3


def test_cancel_with_server_on_unix_socket(pg, proxy_factory):
    proxy = proxy_factory({"server_host": pg.sockdir})
    with proxy.connect() as c:
        err, _ = run_sleep_and_cancel(pg, c, lambda conn: conn.cancel())
        assert isinstance(err, psycopg.errors.QueryCanceled), err


def test_raw_cancel_with_the_right_key(pg, proxy):
    with proxy.wire() as w:
        w.login("trust_user", "app")
        w.send(PgWire.query_msg("SELECT pg_sleep(10)"))
        wait_active(pg, w.backend_pid)
        send_cancel(proxy.port, w.backend_pid, w.backend_key)
        msgs = w.read_until("Z")
        assert [e["C"] for e in tgtest.errors_of(msgs)] == ["57014"]


def test_cancel_with_a_wrong_key_does_nothing(pg, proxy):
    with proxy.wire() as w:
        w.login("trust_user", "app")
        pid, key = w.backend_pid, w.backend_key
        w.send(PgWire.query_msg("SELECT pg_sleep(1.5), 'completed'"))
        wait_active(pg, pid)
        for bad_pid, bad_key in ((pid, key ^ 1), (pid, 0), (pid + 1, key), (0, 0)):
            send_cancel(proxy.port, bad_pid, bad_key)
        msgs = w.read_until("Z")
        assert tgtest.errors_of(msgs) == []
        assert tgtest.rows_of(msgs) == [["", "completed"]]
        assert w.scalar("SELECT 'session fine'") == "session fine"
    proxy.wait_log("unknown key")


def test_cancel_keys_are_per_session_and_not_the_servers(pg, proxy):
    keys = set()
    for _ in range(20):
        with proxy.wire() as w:
            w.login("trust_user", "app")
            keys.add(w.backend_key)
    assert len(keys) == 20
    # The key of a session that has ended cancels nothing and crashes nothing.
    with proxy.wire() as w:
        w.login("trust_user", "app")
        pid, key = w.backend_pid, w.backend_key
    send_cancel(proxy.port, pid, key)
    with proxy.connect() as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_cancel_of_an_idle_session_is_harmless(proxy):
    with proxy.wire() as w:
        w.login("trust_user", "app")
        send_cancel(proxy.port, w.backend_pid, w.backend_key)
        time.sleep(0.2)
        assert w.scalar("SELECT 'fine'") == "fine"


@pytest.mark.parametrize("n", [5])
def test_concurrent_cancels_hit_only_their_own_session(pg, proxy, n):
    wires = []
    try:
        for _ in range(n):
            w = proxy.wire()
            w.login("trust_user", "app")
            w.send(PgWire.query_msg("SELECT pg_sleep(3), 'slept'"))
            wires.append(w)
        for w in wires:
            wait_active(pg, w.backend_pid)
        # Cancel every other session.
        for w in wires[::2]:
            send_cancel(proxy.port, w.backend_pid, w.backend_key)
        for i, w in enumerate(wires):
            msgs = w.read_until("Z")
            if i % 2 == 0:
                assert [e["C"] for e in tgtest.errors_of(msgs)] == ["57014"]
            else:
                assert tgtest.rows_of(msgs) == [["", "slept"]]
    finally:
        for w in wires:
            w.close()


def test_cancel_through_the_unix_socket_listener(pg, proxy_factory, workdir):
    import os
    sockdir = os.path.join(workdir, "s")
    os.makedirs(sockdir)
    proxy = proxy_factory({"unix_socket_dir": sockdir})
    with psycopg.connect(f"host={sockdir} port={proxy.port} user=trust_user dbname=app",
                         autocommit=True) as c:
        err, elapsed = run_sleep_and_cancel(pg, c, lambda conn: conn.cancel())
        assert isinstance(err, psycopg.errors.QueryCanceled), err
        assert elapsed < 3


def test_cancel_when_max_client_conn_is_reached(pg, proxy_factory):
    proxy = proxy_factory({"max_client_conn": 1})
    proxy.wait_log("closing (client closed during startup)")   # Proxy.start()'s probe is gone
    with proxy.connect() as c:
        err, elapsed = run_sleep_and_cancel(pg, c, lambda conn: conn.cancel(), seconds=4)
        assert isinstance(err, psycopg.errors.QueryCanceled), err
        assert elapsed < 3
