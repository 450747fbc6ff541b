"""The relay's basics through real clients: psql and psycopg, every auth method."""
import psycopg
import pytest

import tgtest


def test_psql_simple_query(proxy):
    r = proxy.psql("SELECT 1 + 1, current_user, current_database()")
    assert r.stdout.strip() == "2|app|app"


@pytest.mark.parametrize("user", ["app", "md5_user", "plain_user", "trust_user"])
def test_auth_methods(proxy, user):
    with proxy.connect(user=user) as c:
        assert c.execute("SELECT current_user").fetchone()[0] == user


@pytest.mark.parametrize("user", ["app", "md5_user", "plain_user"])
def test_wrong_password_gets_servers_28P01(proxy, user):
    with pytest.raises(psycopg.OperationalError) as e:
        proxy.connect(user=user, password="wrong-password")
    assert "password authentication failed" in str(e.value)
    assert "wrong-password" not in proxy.log()
    assert tgtest.PASSWORDS[user] not in proxy.log()


def test_extended_protocol_and_params(proxy):
    with proxy.connect() as c:
        rows = c.execute("SELECT %s::int + 1, %s::text", (41, "x")).fetchall()
        assert rows == [(42, "x")]
        cur = c.cursor()
        cur.execute("SELECT generate_series(1, %s)", (1000,), prepare=True)
        assert len(cur.fetchall()) == 1000


def test_error_then_recover(proxy):
    with proxy.connect(autocommit=False) as c:
        with pytest.raises(psycopg.errors.DivisionByZero):
            c.execute("SELECT 1/0")
        c.rollback()
        assert c.execute("SELECT 2").fetchone()[0] == 2
