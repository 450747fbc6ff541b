"""Signals: SIGHUP reloads (sessions keep their snapshot, a bad file keeps the old
config), SIGTERM drains (then 57P01 after shutdown_timeout, exit 0), SIGINT closes
every session at once with 57P01."""
import signal
import time

import psycopg
import pytest

import tgtest
from tgtest import PgWire


def reload(proxy, settings=None, raw=None):
    """SIGHUP after rewriting the config (or writing `raw` text); returns 'ok' or 'failed'."""
    log = proxy.log()
    ok, failed = log.count("config reloaded"), log.count("reload failed")
    if raw is not None:
        with open(proxy.config_path, "w") as f:
            f.write(raw)
    else:
        proxy.write_config(settings)
    proxy.send_signal(signal.SIGHUP)

    def outcome():
        log = proxy.log()
        if log.count("config reloaded") > ok:
            return "ok"
        if log.count("reload failed") > failed:
            return "failed"
        return None
    return tgtest.wait_until(outcome, 10, what="the reload")


def settled(proxy):
    proxy.wait_log("closing (client closed during startup)")   # Proxy.start()'s probe
    return proxy


# ---------------------------------------------------------------- SIGHUP

def test_sighup_changes_max_client_conn_for_new_sessions(proxy_factory):
    proxy = settled(proxy_factory({"max_client_conn": 10}))
    a, b = proxy.connect(), proxy.connect()
    try:
        assert reload(proxy, {"max_client_conn": 2}) == "ok"
        with proxy.wire() as w:
            w.send(PgWire.startup_packet("trust_user", "app"))
            assert w.expect_fatal_and_close()["C"] == "53300"
        for c in (a, b):
            assert c.execute("SELECT 'survived'").fetchone()[0] == "survived"
        assert reload(proxy, {"max_client_conn": 10}) == "ok"
        with proxy.connect() as c:
            assert c.execute("SELECT 1").fetchone()[0] == 1
    finally:
        a.close()
        b.close()


def test_sighup_changes_log_level(proxy_factory):
    proxy = proxy_factory({"log_level": "debug"})
    with proxy.connect():
        pass
    assert "accepted" in proxy.log()
    # At level error even "config reloaded" is not logged: watch the effect instead.
    proxy.write_config({"log_level": "error"})
    proxy.send_signal(signal.SIGHUP)

    def connect_unlogged():
        n = proxy.log().count("accepted")
        with proxy.connect() as c:
            c.execute("SELECT 1")
        return proxy.log().count("accepted") == n
    tgtest.wait_until(connect_unlogged, 10, what="debug lines to stop")
    n = proxy.log().count("accepted")
    with proxy.connect() as c:
        c.execute("SELECT 1")
    assert reload(proxy, {"log_level": "info"}) == "ok"
    assert proxy.log().count("accepted") == n
    assert reload(proxy, {"log_level": "debug", "log_format": "json"}) == "ok"
    with proxy.connect():
        pass
    assert '"msg":"accepted"' in proxy.log()


def test_sighup_with_a_bad_file_keeps_the_running_config(proxy_factory):
    proxy = settled(proxy_factory({"max_client_conn": 2}))
    with proxy.connect() as a:
        good = open(proxy.config_path).read()
        assert reload(proxy, raw=good + "no_such_key = 1\n") == "failed"
        log = proxy.log()
        line = len(good.splitlines()) + 1
        assert f"reload failed: {proxy.config_path}:{line}: " in log
        assert "no_such_key" in log
        # The old config (max_client_conn = 2) is still in force; the session survived.
        assert a.execute("SELECT 'alive'").fetchone()[0] == "alive"
        with proxy.connect() as b:
            assert b.execute("SELECT 1").fetchone()[0] == 1
            assert "too many connections" in tgtest.connect_error(proxy.dsn())
        assert reload(proxy, raw=good.replace("max_client_conn = 2", "max_client_conn = 5")) == "ok"
        with proxy.connect(), proxy.connect():
            pass


def test_sighup_with_bad_tls_files_keeps_the_running_config(pg, proxy_factory):
    proxy = proxy_factory()
    assert reload(proxy, {"client_tls_mode": "require", "client_tls_cert_file": "/nonexistent.crt",
                          "client_tls_key_file": "/nonexistent.key"}) == "failed"
    with proxy.connect(sslmode="disable") as c:   # TLS is still not required
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_sighup_sessions_keep_their_snapshot(proxy_factory):
    """client_idle_timeout 0 -> 1: the session started before keeps 0, a new one gets 1."""
    proxy = proxy_factory({"client_idle_timeout": 0})
    with proxy.wire() as old:
        old.login("trust_user", "app")
        assert reload(proxy, {"client_idle_timeout": 1}) == "ok"
        with proxy.wire() as new:
            new.login("trust_user", "app")
            assert new.expect_fatal_and_close()["C"] == "57P05"
        assert not old.is_closed(timeout=1.5)
        assert old.scalar("SELECT 'old snapshot'") == "old snapshot"


def test_sighup_to_client_tls_require(pg, proxy_factory):
    proxy = proxy_factory()
    with proxy.connect() as plain:
        assert reload(proxy, {"client_tls_mode": "require", "client_tls_cert_file": pg.cert_file,
                              "client_tls_key_file": pg.key_file}) == "ok"
        assert "TLS is required" in tgtest.connect_error(proxy.dsn(sslmode="disable"))
        with psycopg.connect(proxy.dsn(sslmode="require")) as c:
            assert c.pgconn.ssl_in_use
        assert plain.execute("SELECT 'plain survives'").fetchone()[0] == "plain survives"


def test_sighup_non_reloadable_key_is_reported(proxy_factory):
    proxy = proxy_factory()
    old_port = proxy.port
    assert reload(proxy, {"listen_port": tgtest.free_port()}) == "ok"
    proxy.wait_log("listen_port changed; that takes a restart")
    assert tgtest.port_open(old_port)
    with psycopg.connect(proxy.dsn()) as c:   # still on the old port
        assert c.execute("SELECT 1").fetchone()[0] == 1


# ---------------------------------------------------------------- SIGTERM

def test_sigterm_drains_then_exits_0(proxy_factory):
    proxy = proxy_factory({"shutdown_timeout": 30})
    c = proxy.connect(autocommit=False)
    c.execute("SELECT 1")   # a transaction is open
    proxy.send_signal(signal.SIGTERM)
    proxy.wait_log("SIGTERM: not accepting")
    # New logins are refused with 57P03 (the listener stays open so that
    # CancelRequests for running sessions are still served).
    with pytest.raises(psycopg.OperationalError) as e:
        proxy.connect()
    assert "shutting down" in str(e.value)
    # The open session goes on, transaction and all.
    for i in range(3):
        assert c.execute("SELECT %s::int", (i,)).fetchone()[0] == i
    c.commit()
    assert proxy.proc.poll() is None
    c.close()
    assert proxy.wait_exit(10) == 0
    assert "tenantguard stopped" in proxy.log()


def test_sigterm_shutdown_timeout_closes_remaining_with_57P01(proxy_factory):
    proxy = proxy_factory({"shutdown_timeout": 1})
    with proxy.wire() as idle, proxy.wire() as busy:
        idle.login("trust_user", "app")
        busy.login("trust_user", "app")
        busy.send(PgWire.query_msg("SELECT pg_sleep(20)"))
        start = time.monotonic()
        proxy.send_signal(signal.SIGTERM)
        for w in (idle, busy):
            f = w.expect_fatal_and_close()
            assert f["C"] == "57P01"
            assert f["M"] == "terminating connection due to administrator command"
        assert time.monotonic() - start < 10
    assert proxy.wait_exit(15) == 0
    proxy.wait_log("shutdown_timeout reached")


def test_sigterm_with_no_sessions_exits_at_once(proxy_factory):
    proxy = proxy_factory({"shutdown_timeout": 30})
    with proxy.connect():
        pass
    proxy.send_signal(signal.SIGTERM)
    assert proxy.wait_exit(10) == 0


def test_second_sigterm_closes_everything(proxy_factory):
    proxy = proxy_factory({"shutdown_timeout": 60})
    with proxy.wire() as w:
        w.login("trust_user", "app")
        proxy.send_signal(signal.SIGTERM)
        proxy.wait_log("SIGTERM: not accepting")
        assert w.scalar("SELECT 'draining'") == "draining"
        proxy.send_signal(signal.SIGTERM)
        assert w.expect_fatal_and_close()["C"] == "57P01"
    assert proxy.wait_exit(10) == 0


def test_sigterm_closed_session_rolls_back(pg, proxy_factory):
    pg.psql("CREATE TABLE IF NOT EXISTS tg_sig_test (v text)")
    pg.psql("TRUNCATE tg_sig_test")
    pg.psql("GRANT ALL ON tg_sig_test TO PUBLIC")
    proxy = proxy_factory({"shutdown_timeout": 1})
    with proxy.wire() as w:
        w.login("trust_user", "app")
        pid = w.backend_pid
        w.query("BEGIN")
        w.query("INSERT INTO tg_sig_test VALUES ('uncommitted')")
        proxy.send_signal(signal.SIGTERM)
        assert w.expect_fatal_and_close()["C"] == "57P01"
    tgtest.wait_until(lambda: pg.psql(f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}") == "0",
                      10, what="the backend to go")
    assert pg.psql("SELECT count(*) FROM tg_sig_test") == "0"


# ---------------------------------------------------------------- SIGINT

def test_sigint_closes_every_session_at_once(pg, proxy_factory):
    proxy = proxy_factory({"shutdown_timeout": 60})
    with proxy.wire() as idle, proxy.wire() as busy, proxy.wire() as in_tx:
        for w in (idle, busy, in_tx):
            w.login("trust_user", "app")
        in_tx.query("BEGIN")
        busy.send(PgWire.query_msg("SELECT pg_sleep(20)"))
        start = time.monotonic()
        proxy.send_signal(signal.SIGINT)
        for w in (idle, busy, in_tx):
            f = w.expect_fatal_and_close()
            assert f["C"] == "57P01"
        assert time.monotonic() - start < 5
    assert proxy.wait_exit(10) == 0
    assert not tgtest.port_open(proxy.port)


def test_sigint_while_draining(proxy_factory):
    proxy = proxy_factory({"shutdown_timeout": 60})
    with proxy.wire() as w:
        w.login("trust_user", "app")
        proxy.send_signal(signal.SIGTERM)
        proxy.wait_log("SIGTERM: not accepting")
        proxy.send_signal(signal.SIGINT)
        assert w.expect_fatal_and_close()["C"] == "57P01"
    assert proxy.wait_exit(10) == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_with_sessions_mid_login(proxy_factory, sig):
    """Sessions still logging in (waiting for a password) are closed too."""
    proxy = proxy_factory({"shutdown_timeout": 1})
    with proxy.wire() as w:
        w.send(PgWire.startup_packet("app", "app"))
        assert w.read_msg()[0] == "R"
        proxy.send_signal(sig)
        assert w.is_closed(timeout=10)
    assert proxy.wait_exit(15) == 0


def test_cancel_is_served_while_draining(proxy_factory):
    """PostgreSQL serves cancels during a smart shutdown; so does a draining tenantguard."""
    proxy = proxy_factory({"shutdown_timeout": 30})
    c = proxy.connect()
    import threading
    errors = []

    def run():
        try:
            c.execute("SELECT pg_sleep(20) /* drain-cancel */")
        except psycopg.Error as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    tgtest.wait_until(lambda: proxy.pg.psql("SELECT count(*) FROM pg_stat_activity WHERE query = "
                                            "'SELECT pg_sleep(20) /* drain-cancel */' AND state = 'active'") == "1",
                      10, what="pg_sleep running")
    proxy.send_signal(signal.SIGTERM)
    proxy.wait_log("SIGTERM: not accepting")
    c.cancel()
    t.join(10)
    assert not t.is_alive()
    assert errors and errors[0].sqlstate == "57014"
    c.close()
    assert proxy.wait_exit(10) == 0
