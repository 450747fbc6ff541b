"""Limits: max_client_conn, backpressure (the proxy's memory stays bounded with a
slow reader or a fast writer), client_idle_timeout."""
import socket
import threading
import time

import psycopg
import pytest

import tgtest
from tgtest import PgWire

RSS_LIMIT_KB = 64 * 1024


# ---------------------------------------------------------------- max_client_conn

def settled(proxy):
    """Proxy.start() probes the port with a connection of its own; wait until the
    proxy has seen it close, or it may still count against max_client_conn."""
    proxy.wait_log("closing (client closed during startup)")
    return proxy

def test_max_client_conn_excess_gets_53300(proxy_factory):
    proxy = settled(proxy_factory({"max_client_conn": 3}))
    conns = [proxy.connect() for _ in range(3)]
    try:
        msg = tgtest.connect_error(proxy.dsn())
        assert "too many connections" in msg
        with proxy.wire() as w:
            w.send(PgWire.startup_packet("trust_user", "app"))
            f = w.expect_fatal_and_close()
        assert f["C"] == "53300"
        assert f["M"] == "tenantguard: too many connections (max_client_conn)"
        for c in conns:
            assert c.execute("SELECT 1").fetchone()[0] == 1
    finally:
        conns.pop().close()
    # A slot is free again once a session has ended.
    tgtest.wait_until(lambda: proxy.connect().close() or True, 5, what="a free slot")
    for c in conns:
        c.close()
    proxy.wait_log("max_client_conn (3) reached")


def test_max_client_conn_refusal_is_read_reliably(proxy_factory):
    """The refusal must reach the client even though its startup packet is unread
    when the proxy closes (a close with unread input sends RST on Linux)."""
    proxy = settled(proxy_factory({"max_client_conn": 1}))
    with proxy.connect():
        codes = []
        for _ in range(30):
            with proxy.wire() as w:
                w.send(PgWire.startup_packet("trust_user", "app"))
                msgs = w.read_until_closed()
                codes.append(tgtest.errors_of(msgs)[0]["C"] if msgs else "reset/no message")
        assert codes == ["53300"] * 30


@pytest.mark.parametrize("tls", ["disable", "allow"])
def test_max_client_conn_with_sslmode_prefer(pg, proxy_factory, tls):
    proxy = settled(proxy_factory({"max_client_conn": 1, "client_tls_mode": tls,
                                   "client_tls_cert_file": pg.cert_file,
                                   "client_tls_key_file": pg.key_file}))
    with proxy.connect():
        assert "too many connections" in tgtest.connect_error(proxy.dsn(sslmode="prefer"))


# ---------------------------------------------------------------- backpressure

def backend_wait(pg, pid):
    return pg.psql(f"SELECT state || '/' || coalesce(wait_event, '') FROM pg_stat_activity WHERE pid = {pid}")


def wait_throttled(pg, pid, proxy, limit_kb=RSS_LIMIT_KB):
    """Watch the backend and the proxy while the client reads nothing. Returns
    ("throttled", rss) once the backend has been stuck writing to the proxy for a
    second with the proxy's RSS steady and under the limit; ("unbounded", rss) as
    soon as the RSS passes the limit or the backend finished (the proxy took it all)."""
    steady, last = 0, None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = backend_wait(pg, pid)
        rss = proxy.rss_kb()
        if rss >= limit_kb or state == "idle/ClientRead":
            return "unbounded", rss
        if state == "active/ClientWrite" and last is not None and abs(rss - last) < 1024:
            steady += 1
            if steady >= 10:
                return "throttled", rss
        else:
            steady = 0
        last = rss
        time.sleep(0.1)
    raise AssertionError("neither throttled nor finished within 60s")


def skip_if_sanitized(proxy):
    if proxy.sanitized():
        pytest.skip("RSS bounds are not meaningful under AddressSanitizer (freed-memory quarantine)")


def read_result_slowly(w, proxy, sample_every=2000):
    """Read a result up to ReadyForQuery, sampling the proxy's RSS."""
    peak, rows, nbytes, i = 0, 0, 0, 0
    while True:
        t, p = w.read_msg()
        i += 1
        if t == "D":
            rows += 1
            nbytes += len(p)
        if i % sample_every == 0:
            peak = max(peak, proxy.rss_kb())
            time.sleep(0.001)
        if t == "Z":
            return rows, nbytes, peak


def test_slow_reader_of_a_200mb_result_keeps_proxy_memory_bounded(pg, proxy):
    """200,000 rows of 1 kB: the client reads nothing for a while, then slowly."""
    skip_if_sanitized(proxy)
    with proxy.wire(timeout=60) as w:
        w.login("trust_user", "app")
        base = proxy.rss_kb()
        w.send(PgWire.query_msg("SELECT repeat('x', 1000) FROM generate_series(1, 200000)"))
        state, rss = wait_throttled(pg, w.backend_pid, proxy)
        assert state == "throttled", f"proxy RSS {rss} kB (was {base} kB) with a client not reading"
        rows, nbytes, peak = read_result_slowly(w, proxy)
        assert rows == 200000 and nbytes > 200 * 1000 * 1000
        assert peak < RSS_LIMIT_KB, f"proxy RSS peaked at {peak} kB"


def test_slow_reader_of_one_200mb_row_keeps_proxy_memory_bounded(pg, proxy):
    skip_if_sanitized(proxy)
    with proxy.wire(timeout=60) as w:
        w.login("trust_user", "app")
        w.send(PgWire.query_msg("SELECT repeat('y', 200 * 1024 * 1024)"))
        state, rss = wait_throttled(pg, w.backend_pid, proxy)
        try:
            assert state == "throttled", f"proxy RSS {rss} kB with a client not reading"
        finally:
            rows, nbytes, _ = read_result_slowly(w, proxy)
            assert rows == 1 and nbytes > 200 * 1024 * 1024


def test_fast_writer_to_a_busy_server_keeps_proxy_memory_bounded(pg, proxy):
    """Client -> server: 100 MB of queries pipelined behind a pg_sleep. The proxy must
    stop reading the client while the server's output is full."""
    skip_if_sanitized(proxy)
    n = 100000
    query = PgWire.query_msg("SELECT '" + "w" * 1000 + "'")
    with proxy.wire(timeout=60) as w:
        w.login("trust_user", "app")
        w.send(PgWire.query_msg("SELECT pg_sleep(2)"))
        err = []

        def writer():
            try:
                batch = query * 1000
                for _ in range(n // 1000):
                    w.sock.sendall(batch)
            except OSError as e:
                err.append(e)
        t = threading.Thread(target=writer, daemon=True)
        t.start()
        peak = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            peak = max(peak, proxy.rss_kb())
            time.sleep(0.05)
        assert peak < RSS_LIMIT_KB, f"proxy RSS {peak} kB while the server was busy"
        w.read_until("Z")
        count = 0
        while count < n:
            t_, _ = w.read_msg()
            if t_ == "Z":
                count += 1
            if count % 5000 == 0:
                peak = max(peak, proxy.rss_kb())
        t.join(30)
        assert not err
        assert peak < RSS_LIMIT_KB


# ---------------------------------------------------------------- client_idle_timeout

def test_idle_session_is_closed_with_57P05(proxy_factory):
    proxy = proxy_factory({"client_idle_timeout": 1})
    with proxy.wire() as w:
        w.login("trust_user", "app")
        start = time.monotonic()
        f = w.expect_fatal_and_close()
        assert f["C"] == "57P05"
        assert "client_idle_timeout" in f["M"]
        assert time.monotonic() - start < 10


def test_idle_timeout_spares_transactions_and_running_queries(pg, proxy_factory):
    proxy = proxy_factory({"client_idle_timeout": 1})
    with proxy.wire() as idle, proxy.wire() as in_tx, proxy.wire() as busy:
        for w in (idle, in_tx, busy):
            w.login("trust_user", "app")
        in_tx.query("BEGIN")
        busy.send(PgWire.query_msg("SELECT pg_sleep(3), 'done'"))
        f = idle.expect_fatal_and_close()
        assert f["C"] == "57P05"
        # The idle one is gone after >= 1s; the others live on for 2 more seconds.
        rows = tgtest.rows_of(busy.read_until("Z"))
        assert rows == [["", "done"]]
        assert in_tx.scalar("SELECT 'in transaction'") == "in transaction"
        in_tx.query("COMMIT")


def test_idle_time_starts_when_the_result_is_complete(proxy_factory):
    proxy = proxy_factory({"client_idle_timeout": 3})
    with proxy.wire() as w:
        w.login("trust_user", "app")
        msgs = w.query("SELECT pg_sleep(4), 'long query'")
        assert tgtest.rows_of(msgs) == [["", "long query"]]
        # Idle for about a second only (well below 3s): the session must still be there.
        w.sock.settimeout(1.0)
        try:
            early = w.read_msg()
        except socket.timeout:
            early = None
        assert early is None, f"closed after ~1s idle: {tgtest.error_fields(early[1])}"
        w.sock.settimeout(10)
        assert w.scalar("SELECT 'still open'") == "still open"


def test_idle_timeout_zero_never_closes(proxy):
    with proxy.wire() as w:
        w.login("trust_user", "app")
        assert not w.is_closed(timeout=2.2)
        assert w.scalar("SELECT 1") == "1"


def test_idle_timeout_with_psycopg(proxy_factory):
    proxy = proxy_factory({"client_idle_timeout": 1})
    c = psycopg.connect(proxy.dsn(), autocommit=True)
    try:
        pid = c.info.backend_pid
        proxy.wait_log("client_idle_timeout", timeout=10)
        with pytest.raises(psycopg.OperationalError, match="client_idle_timeout"):
            c.execute("SELECT 1")
    finally:
        c.close()
    assert pid
