"""TLS: the client side accepts TLS 1.2 and 1.3 only, with sane ciphers (openssl
s_client through PostgreSQL's SSLRequest, -starttls postgres). The server side's
verify-full host name check is in test_relay_tls.py
(test_server_verify_full_with_a_wrong_host_name_is_refused) and is not repeated here.

Cancel keys: not guessable (distinct, not sequential, bits balanced over many
sessions, never the server's key) and a CancelRequest with a wrong key does
nothing, however many are sent."""
import collections
import subprocess

import pytest

import tgtest
from tgtest import CANCEL_REQUEST, PgWire


@pytest.fixture
def tls_proxy(pg, proxy_factory):
    return proxy_factory({"client_tls_mode": "allow", "client_tls_cert_file": pg.cert_file,
                          "client_tls_key_file": pg.key_file})


def s_client(port, *args):
    """One handshake through an SSLRequest; returns (ok, output). SECLEVEL=0 lets the
    client offer what OpenSSL's own defaults would not, so the refusal is the proxy's."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-starttls", "postgres",
                        "-brief", *args], input="", capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    return ("Protocol version:" in out and r.returncode == 0), out


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
def test_tls_below_1_2_is_refused(tls_proxy, version):
    ok, out = s_client(tls_proxy.port, version, "-cipher", "DEFAULT@SECLEVEL=0")
    assert not ok, out
    tls_proxy.wait_log("client TLS handshake failed")
    with tls_proxy.connect(sslmode="require") as c:       # and the proxy goes on
        assert c.execute("SELECT 1").fetchone()[0] == 1


@pytest.mark.parametrize("version,name", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_tls_1_2_and_1_3_work_with_aead_ciphers(tls_proxy, version, name):
    ok, out = s_client(tls_proxy.port, version)
    assert ok, out
    assert f"Protocol version: {name}" in out
    cipher = [line for line in out.splitlines() if line.startswith("Ciphersuite:")][0]
    assert any(x in cipher for x in ("GCM", "CHACHA20")), cipher


@pytest.mark.parametrize("cipher", ["NULL:eNULL", "aNULL", "RC4:DES:3DES", "EXPORT:LOW", "MD5"])
def test_weak_tls_1_2_ciphers_are_refused(tls_proxy, cipher):
    """Nothing without authentication, without encryption or with broken primitives."""
    ok, out = s_client(tls_proxy.port, "-tls1_2", "-cipher", f"{cipher}@SECLEVEL=0")
    assert not ok, out


def test_tls_1_2_without_forward_secrecy_is_refused(tls_proxy):
    ok, out = s_client(tls_proxy.port, "-tls1_2", "-cipher", "AES128-SHA:AES256-SHA:CAMELLIA@SECLEVEL=0")
    assert not ok, out


# ---------------------------------------------------------------- cancel keys

def keys_of_sessions(proxy, n):
    keys, pids = [], []
    for _ in range(n):
        with proxy.wire() as w:
            w.login("trust_user", "app")
            keys.append(w.backend_key & 0xffffffff)
            pids.append(w.backend_pid)
            w.send(PgWire.TERMINATE)
    return keys, pids


def test_cancel_keys_are_not_guessable(pg, proxy):
    n = 400
    keys, pids = keys_of_sessions(proxy, n)
    assert len(set(keys)) == n, "cancel keys repeat"
    diffs = collections.Counter((b - a) & 0xffffffff for a, b in zip(keys, keys[1:]))
    assert diffs.most_common(1)[0][1] <= 2, f"keys follow a pattern: {diffs.most_common(3)}"
    # every bit is set in about half the keys: 400 draws, p = 1/2, 6 sigma = 60
    for bit in range(32):
        ones = sum((k >> bit) & 1 for k in keys)
        assert abs(ones - n / 2) < 60, f"bit {bit} set in {ones} of {n} keys"
    # ... and none is the server's own key for that backend
    with PgWire(pg.port) as direct:
        direct.login("trust_user", "app")
        server_keys = {direct.backend_key & 0xffffffff}
    assert not server_keys & set(keys)


def test_many_wrong_cancel_keys_do_nothing(pg, proxy):
    """300 CancelRequests with the right pid and wrong keys (the neighbours of the right
    one, and random ones) leave the query running; the right key then cancels it."""
    with proxy.wire(timeout=60) as w:
        w.login("trust_user", "app")
        pid, key = w.backend_pid, w.backend_key & 0xffffffff
        w.send(PgWire.query_msg("SELECT pg_sleep(60)"))
        tgtest.wait_until(lambda: pg.psql(f"SELECT state FROM pg_stat_activity WHERE pid = {pid}") == "active",
                          10, what="the query running")
        wrong = [(key + d) & 0xffffffff for d in range(-50, 51) if d] + \
                [(key * 2654435761 + i) & 0xffffffff for i in range(200)]
        for k in wrong:
            if k == key:
                continue
            with PgWire(proxy.port) as c:
                c.send(PgWire.code_packet(CANCEL_REQUEST, pid & 0xffffffff, k))
                c.read_until_closed()
        tgtest.wait_until(lambda: proxy.log().count("unknown key") >= len(wrong) - 1, 30,
                          what="every wrong key logged as unknown")
        assert pg.psql(f"SELECT state FROM pg_stat_activity WHERE pid = {pid}") == "active"
        with PgWire(proxy.port) as c:
            c.send(PgWire.code_packet(CANCEL_REQUEST, pid & 0xffffffff, key))
            c.read_until_closed()
        err = w.expect_error()
        assert err["C"] == "57014", err
