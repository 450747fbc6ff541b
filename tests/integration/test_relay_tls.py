"""TLS on both sides of tenantguard, and SCRAM channel binding through it."""
import hashlib

import psycopg
import pytest

import tgtest
from tgtest import PgWire, PgWireError


def client_tls(pg, mode="allow", **extra):
    s = {"client_tls_mode": mode, "client_tls_cert_file": pg.cert_file, "client_tls_key_file": pg.key_file}
    s.update(extra)
    return s


def backend_ssl(conn):
    return conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()


# ---------------------------------------------------------------- client side

@pytest.mark.parametrize("mode", ["allow", "require"])
def test_client_sslmode_require(pg, proxy_factory, mode):
    proxy = proxy_factory(client_tls(pg, mode))
    with psycopg.connect(proxy.dsn(sslmode="require")) as c:
        assert c.pgconn.ssl_in_use
        assert c.execute("SELECT current_user").fetchone()[0] == "app"
    proxy.wait_log("client TLS established")


def test_client_sslmode_disable_with_allow_is_plain(pg, proxy_factory):
    proxy = proxy_factory(client_tls(pg, "allow"))
    with psycopg.connect(proxy.dsn(sslmode="disable")) as c:
        assert not c.pgconn.ssl_in_use
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_client_sslmode_disable_with_require_is_refused(pg, proxy_factory):
    proxy = proxy_factory(client_tls(pg, "require"))
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(proxy.dsn(sslmode="disable"))
    assert "TLS is required (client_tls_mode = require)" in str(e.value)
    with proxy.wire() as w:
        w.send(PgWire.startup_packet("trust_user", "app"))
        f = w.expect_fatal_and_close()
        assert f["C"] == "28000"
        assert f["H"] == "Connect with sslmode=require."


def test_client_sslmode_prefer_with_tls_disabled_falls_back(proxy):
    with psycopg.connect(proxy.dsn(sslmode="prefer")) as c:
        assert not c.pgconn.ssl_in_use
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_client_sslmode_require_with_tls_disabled_is_refused_by_libpq(proxy):
    with pytest.raises(psycopg.OperationalError, match="server does not support SSL"):
        psycopg.connect(proxy.dsn(sslmode="require"))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_client_sslmode_verify_full(pg, proxy_factory, host):
    proxy = proxy_factory(client_tls(pg, "require"))
    dsn = (f"host={host} port={proxy.port} user=app dbname=app password={tgtest.PASSWORDS['app']} "
           f"sslmode=verify-full sslrootcert={pg.ca_file}")
    with psycopg.connect(dsn) as c:
        assert c.pgconn.ssl_in_use
        assert c.execute("SELECT 1").fetchone()[0] == 1


def other_ca(workdir):
    """A CA that signed nothing of ours."""
    import subprocess
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=other-ca", "-keyout", f"{workdir}/o.key", "-out", f"{workdir}/o.crt"],
                   check=True, capture_output=True)
    return f"{workdir}/o.crt"


def test_client_verify_full_with_another_ca_fails(pg, proxy_factory, workdir):
    other_ca(workdir)
    proxy = proxy_factory(client_tls(pg, "require"))
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(f"host=127.0.0.1 port={proxy.port} user=app dbname=app sslmode=verify-full "
                        f"sslrootcert={workdir}/o.crt password=x")
    # The failed handshake did not hurt the proxy.
    with psycopg.connect(proxy.dsn(sslmode="require")) as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_big_results_and_copy_over_tls_both_sides(pg, proxy_factory):
    """TLS records split messages anywhere; large transfers in both directions."""
    proxy = proxy_factory(client_tls(pg, "require", server_sslmode="require"))
    data = b"".join(b"%d\t%s\n" % (i, b"z" * 200) for i in range(100000))
    with psycopg.connect(proxy.dsn(sslmode="require", channel_binding="disable"), autocommit=True) as c:
        c.execute("CREATE TEMP TABLE tt (a int, b text)")
        with c.cursor().copy("COPY tt FROM STDIN") as cp:
            for i in range(0, len(data), 100000):
                cp.write(data[i:i + 100000])
        h = hashlib.md5()
        with c.cursor().copy("COPY tt TO STDOUT") as cp:
            for block in cp:
                h.update(block)
        assert h.hexdigest() == hashlib.md5(data).hexdigest()
        big = c.execute("SELECT repeat('q', 20000000)").fetchone()[0]
        assert len(big) == 20000000


# ---------------------------------------------------------------- server side

@pytest.mark.parametrize("mode,expect_ssl", [("disable", False), ("prefer", True), ("require", True)])
def test_server_sslmode(proxy_factory, mode, expect_ssl):
    proxy = proxy_factory({"server_sslmode": mode})
    with proxy.connect() as c:
        ssl, version = backend_ssl(c)
        assert ssl is expect_ssl
        if expect_ssl:
            assert version in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_server_sslmode_verify_full(pg, proxy_factory, host):
    proxy = proxy_factory({"server_sslmode": "verify-full", "server_tls_ca_file": pg.ca_file,
                           "server_host": host})
    with proxy.connect() as c:
        assert backend_ssl(c)[0] is True
    proxy.wait_log("server TLS established")


def test_server_verify_full_with_a_wrong_host_name_is_refused(pg, proxy_factory):
    """The server's certificate names localhost and 127.0.0.1; reach the same server
    as 127.0.0.2 (through a forwarder): verification must fail, 08006 to the client."""
    fwd = tgtest.TcpForwarder(pg.port, listen_host="127.0.0.2")
    try:
        proxy = proxy_factory({"server_sslmode": "verify-full", "server_tls_ca_file": pg.ca_file,
                               "server_host": "127.0.0.2", "server_port": fwd.port})
        with proxy.wire() as w:
            w.send(PgWire.startup_packet("trust_user", "app"))
            f = w.expect_fatal_and_close()
        assert f["C"] == "08006"
        assert "127.0.0.2" in f["M"]
        assert "certificate verify failed" in f["M"]
        with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
            proxy.connect()
        # server_sslmode = require does not check the name: the same route works.
        p2 = proxy_factory({"server_sslmode": "require", "server_host": "127.0.0.2",
                            "server_port": fwd.port})
        with p2.connect() as c:
            assert backend_ssl(c)[0] is True
    finally:
        fwd.close()


def test_server_verify_full_with_a_wrong_ca_is_refused(pg, proxy_factory, workdir):
    proxy = proxy_factory({"server_sslmode": "verify-full", "server_tls_ca_file": other_ca(workdir)})
    with proxy.wire() as w:
        w.send(PgWire.startup_packet("trust_user", "app"))
        f = w.expect_fatal_and_close()
    assert f["C"] == "08006"
    assert "certificate verify failed" in f["M"]


def test_bad_server_tls_ca_file_stops_startup(pg, proxy_factory):
    proxy = proxy_factory({"server_sslmode": "verify-full", "server_tls_ca_file": pg.key_file},
                          start=False)
    proxy.start(wait=False)
    assert proxy.wait_exit(10) == 1
    assert "cannot load server_tls_ca_file" in proxy.log()


def test_bad_client_tls_cert_stops_startup(pg, proxy_factory):
    proxy = proxy_factory(client_tls(pg, "require", client_tls_cert_file=pg.key_file), start=False)
    proxy.start(wait=False)
    assert proxy.wait_exit(10) == 1
    assert "cannot load client_tls_cert_file" in proxy.log()


def test_server_tls_and_client_tls_both(pg, proxy_factory):
    proxy = proxy_factory(client_tls(pg, "require", server_sslmode="verify-full",
                                     server_tls_ca_file=pg.ca_file))
    with psycopg.connect(proxy.dsn(sslmode="require", channel_binding="disable")) as c:
        assert c.pgconn.ssl_in_use
        assert backend_ssl(c)[0] is True


# ---------------------------------------------------------------- SCRAM channel binding

def test_channel_binding_require_gets_a_clear_error(pg, proxy_factory):
    """The client's TLS ends at the proxy, so -PLUS is never offered: libpq refuses."""
    proxy = proxy_factory(client_tls(pg, "require"))
    msg = tgtest.connect_error(proxy.dsn(sslmode="require", channel_binding="require"))
    assert "channel binding is required, but server did not offer an authentication method " \
           "that supports channel binding" in msg


def test_channel_binding_require_with_server_tls_too(pg, proxy_factory):
    proxy = proxy_factory(client_tls(pg, "require", server_sslmode="require"))
    assert "channel binding is required" in tgtest.connect_error(
        proxy.dsn(sslmode="require", channel_binding="require"))


def test_channel_binding_prefer_works_with_server_sslmode_disable(pg, proxy_factory):
    proxy = proxy_factory(client_tls(pg, "require", server_sslmode="disable"))
    with psycopg.connect(proxy.dsn(sslmode="require", channel_binding="prefer")) as c:
        assert c.pgconn.ssl_in_use
        assert c.execute("SELECT current_user").fetchone()[0] == "app"


def test_channel_binding_prefer_plain_client_tls_server(proxy_factory):
    """Plain client, TLS to the server: the server offers -PLUS, the proxy strips it,
    the client (not on TLS) does not bind: works."""
    proxy = proxy_factory({"server_sslmode": "require"})
    with psycopg.connect(proxy.dsn(sslmode="disable", channel_binding="prefer")) as c:
        assert c.execute("SELECT current_user").fetchone()[0] == "app"
    with PgWire(proxy.port) as w:
        w.login("app", "app")
        assert w.sasl_mechanisms == ["SCRAM-SHA-256"]


HINT = "Connect with channel_binding=disable, or set server_sslmode = disable."
MESSAGE = ("tenantguard: SCRAM with channel binding support cannot pass through tenantguard "
           "while both its client and server connections use TLS")


def test_channel_binding_prefer_with_tls_on_both_legs(pg, proxy_factory):
    """Documented behaviour: with TLS on both legs, a client that could bind ('y')
    would fail the server's downgrade check; the proxy answers 28000 with a hint."""
    proxy = proxy_factory(client_tls(pg, "require", server_sslmode="require"))
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(proxy.dsn(sslmode="require", channel_binding="prefer"))
    assert MESSAGE in str(e.value)
    with PgWire(proxy.port) as w:
        assert w.starttls() == b"S"
        w.scram_gs2 = "y,,"
        with pytest.raises(PgWireError) as e:
            w.login("app", "app")
        assert e.value.fields["C"] == "28000"
        assert e.value.fields["M"] == MESSAGE
        assert e.value.fields["H"] == HINT
    # channel_binding=disable is the way through.
    with psycopg.connect(proxy.dsn(sslmode="require", channel_binding="disable")) as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_scram_plus_chosen_by_a_client_is_refused(pg, proxy_factory):
    proxy = proxy_factory(client_tls(pg, "require"))
    with PgWire(proxy.port) as w:
        assert w.starttls() == b"S"
        w.send(PgWire.startup_packet("app", "app"))
        t, p = w.read_msg()
        assert t == "R" and b"SCRAM-SHA-256-PLUS" not in p
        first = b"p=tls-server-end-point,,n=,r=abc"
        w.send(PgWire.msg("p", b"SCRAM-SHA-256-PLUS\0" + len(first).to_bytes(4, "big") + first))
        f = w.expect_fatal_and_close()
        assert f["C"] == "28000"
        assert "channel binding cannot pass through a proxy" in f["M"]
