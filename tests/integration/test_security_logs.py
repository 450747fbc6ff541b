"""No password and no parameter value ever reaches a log line: text and JSON, every
log level, logins good and bad, statements with literals and parameters, enforcement
rejections (by the proxy and by the helpers), protocol errors and server errors.
test_relay_auth.py covers the debug level for logins and plain statements; this
extends it to enforcement errors, startup parameter values and every level."""
import json

import psycopg
import pytest

import tgtest
from test_security_rewrite import DB, phase1_database
from tgtest import PgWire

PASSWORD = "pw-Planted-5ecret-31"
VALUE = "val-Planted-5ecret-77"
STARTUP_VALUE = "app-Planted-5ecret-19"


@pytest.fixture(scope="module")
def logdb(pg):
    phase1_database(pg, DB + "_logs")
    pg.psql(f"DROP ROLE IF EXISTS planted; CREATE ROLE planted LOGIN PASSWORD '{PASSWORD}'", db="postgres")
    pg.psql("GRANT ALL ON ALL TABLES IN SCHEMA public TO planted; GRANT ALL ON ALL SEQUENCES IN SCHEMA public "
            "TO planted; GRANT USAGE ON SCHEMA tenantguard TO planted",
            db=DB + "_logs")
    pg.psql(f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA tenantguard TO planted", db=DB + "_logs")
    return pg


def exercise(proxy):
    db = DB + "_logs"
    dsn = f"host=127.0.0.1 port={proxy.port} dbname={db} sslmode=disable user=planted"
    # logins: right password, wrong password (the planted one with a suffix)
    with psycopg.connect(dsn + f" password={PASSWORD} application_name={STARTUP_VALUE}", autocommit=True) as c:
        c.execute("SELECT %s::text", (VALUE,))
        # server errors quoting the value
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            c.execute("SELECT %s::int", (VALUE,))
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            c.execute(f"SELECT '{VALUE}'::int")
        # enforcement: rejected by the helpers at run time (R2), by the proxy itself (R3 with a literal
        # tenant, form refusals), with the value as literal and as parameter
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="tenantguard"):
            c.execute(f"INSERT INTO policies (tenant_id, name, workspace_id) VALUES (3, '{VALUE}', 2)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="tenantguard"):
            c.execute("INSERT INTO policies (tenant_id, name, workspace_id) VALUES (%s, %s, %s)", (3, VALUE, 2))
        with pytest.raises(psycopg.Error):
            c.execute(f"INSERT INTO policies (tenant_id, name) VALUES (NULL, '{VALUE}')")
        with pytest.raises(psycopg.Error):
            c.execute(f"INSERT INTO policies SELECT * FROM policies WHERE name = '{VALUE}'")
        c.execute("INSERT INTO policies (tenant_id, name) VALUES (%s, %s)", (3, VALUE))   # accepted (R1)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="tenantguard"):
            c.execute("UPDATE policies SET tenant_id = %s WHERE name = %s", (4, VALUE))
    tgtest.connect_error(dsn + f" password={PASSWORD}x")
    # (user and database names are in every line's prefix by design: not planted there)
    tgtest.connect_error(f"host=127.0.0.1 port={proxy.port} dbname=nosuchdb sslmode=disable "
                         f"user=planted password={PASSWORD}")
    # raw protocol: a password message on a trust login, a bad message carrying the value
    with proxy.wire() as w:
        w.login("trust_user", db, application_name=STARTUP_VALUE, options=f"-c application_name={VALUE}")
        w.send(PgWire.msg("Q", f"SELECT '{VALUE}'".encode()))   # no NUL: the server refuses it
        w.expect_error()
    with proxy.wire() as w:
        w.send(PgWire.startup_packet("planted", db))
        assert w.read_msg()[0] == "R"
        w.send(PgWire.msg("p", PASSWORD.encode() + b"\0"))   # SCRAM expected: a protocol error
        w.read_until_closed()
    with proxy.wire() as w:
        w.send(PgWire.startup_packet("trust_user", db, protocol=0x00020000, x=VALUE))
        w.read_until_closed()


@pytest.mark.parametrize("level", ["error", "warning", "info", "debug"])
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_password_or_value_in_any_log_line(logdb, proxy_factory, level, fmt):
    proxy = proxy_factory({"log_level": level, "log_format": fmt, "mode": "enforce"})
    exercise(proxy)
    proxy.stop()
    log = proxy.log()
    for secret in (PASSWORD, VALUE, STARTUP_VALUE):
        for part in (secret, secret[:12], secret[-12:]):
            assert part not in log, f"{part!r} in the {fmt} log at level {level}"
    if fmt == "json":
        for line in log.splitlines():
            if line.startswith("{"):
                json.loads(line)
    if level in ("info", "debug"):
        assert "refused" in log or "rejected" in log, "the log is not the one we think"
