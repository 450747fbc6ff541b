"""Authentication relayed for every method: the server's requests and errors reach
the client unchanged, and no password, parameter value or literal reaches the log."""
import json
import struct
import threading

import psycopg
import pytest

import tgtest
from tgtest import PgWire, PgWireError

USERS = {"trust_user": [0], "plain_user": [3, 0], "md5_user": [5, 0], "app": [10, 11, 12, 0]}


def auth_codes(msgs):
    return [struct.unpack("!I", p[:4])[0] for t, p in msgs if t == "R"]


@pytest.mark.parametrize("user", sorted(USERS))
def test_auth_requests_are_the_servers(pg, proxy, user):
    with PgWire(proxy.port) as a, PgWire(pg.port) as b:
        via, direct = a.login(user, "app"), b.login(user, "app")
        assert auth_codes(via) == auth_codes(direct) == USERS[user]
        assert a.scalar("SELECT current_user") == user


@pytest.mark.parametrize("user", ["plain_user", "md5_user", "app"])
def test_wrong_password_error_is_the_servers_unchanged(pg, proxy, user):
    errors = {}
    for name, port in (("proxy", proxy.port), ("direct", pg.port)):
        with PgWire(port) as w:
            with pytest.raises(PgWireError) as e:
                w.login(user, "app", password="wrong-" + tgtest.PASSWORDS[user])
            errors[name] = e.value.fields
            assert w.read_until_closed() == []
    assert errors["proxy"] == errors["direct"]
    assert errors["proxy"]["C"] == "28P01"
    assert errors["proxy"]["M"] == f'password authentication failed for user "{user}"'


@pytest.mark.parametrize("user", ["plain_user", "md5_user", "app"])
def test_wrong_password_through_libpq(proxy, user):
    msg = tgtest.connect_error(proxy.dsn(user=user, password="nope"))
    assert f'password authentication failed for user "{user}"' in msg
    with proxy.connect(user=user) as c:   # and the right one still works
        assert c.execute("SELECT current_user").fetchone()[0] == user


def test_missing_password_through_libpq(proxy):
    msg = tgtest.connect_error(f"host=127.0.0.1 port={proxy.port} user=app dbname=app "
                               "sslmode=disable password=''", )
    assert "password" in msg


def test_many_concurrent_scram_logins(proxy):
    errors, done = [], []

    def one():
        try:
            with proxy.connect() as c:
                done.append(c.execute("SELECT pg_backend_pid()").fetchone()[0])
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=one) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(set(done)) == 40


SECRETS = ["tg-literal-Secret-9", "tg-param-Secret-8"]


def exercise(proxy):
    """Logins (good and bad) for every method, statements with literals and parameters."""
    for user in ("app", "md5_user", "plain_user", "trust_user"):
        with proxy.connect(user=user) as c:
            c.execute("SELECT 1")
        if tgtest.PASSWORDS[user]:
            tgtest.connect_error(proxy.dsn(user=user, password="Wrong-" + tgtest.PASSWORDS[user]))
    with proxy.wire() as w:
        w.login("md5_user", "app")
        w.query(f"SELECT '{SECRETS[0]}'")
        w.query(f"SELECT '{SECRETS[0]}'::int")
    with proxy.connect() as c:
        c.execute("SELECT %s::text", (SECRETS[1],))
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            c.execute("SELECT %s::int", (SECRETS[1],))
    r = proxy.psql(f"SELECT '{SECRETS[0]}'", user="plain_user")
    assert SECRETS[0] in r.stdout


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_password_or_value_in_the_debug_log(proxy_factory, fmt):
    proxy = proxy_factory({"log_level": "debug", "log_format": fmt})
    exercise(proxy)
    proxy.stop()
    log = proxy.log()
    assert "login ok" in log and "login failed" in log   # the log is the one we think
    for user, pw in tgtest.PASSWORDS.items():
        if pw:
            assert pw not in log, f"password of {user} in the log"
            assert pw[:8] not in log
    for s in SECRETS:
        assert s not in log
    if fmt == "json":
        lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        assert lines and all("msg" in x and "level" in x for x in lines)
        assert any(x.get("user") == "md5_user" and x.get("db") == "app" for x in lines)
    else:
        assert "md5_user@app" in log


def test_md5_user_really_has_an_md5_password(pg):
    """md5_user must authenticate with md5 (its stored hash is md5), or the md5 relay
    goes untested: PostgreSQL falls back to SCRAM for a SCRAM-hashed password."""
    assert pg.psql("SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = 'md5_user'",
                   db="postgres") == "md5"
