"""COPY through tenantguard with a 100 MB payload both ways (psycopg and psql
\\copy), checksums equal to the data / to PostgreSQL directly; CopyFail and a bad
row in the middle of a big stream."""
import hashlib
import os
import subprocess

import psycopg
import pytest

import tgtest

ROWS = 1_000_000          # ~100 bytes a row: ~100 MB
OUT_QUERY = ("SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, %d) g" % ROWS)


def make_payload(rows=ROWS):
    pad = "abcdefghij" * 9
    return "".join(f"{i}\t{pad}{i % 997:03d}\n" for i in range(1, rows + 1)).encode()


@pytest.fixture(scope="module")
def payload():
    data = make_payload()
    assert len(data) > 100 * 1000 * 1000
    return data


CHECK_SQL = ("SELECT count(*), md5(string_agg(a::text || E'\\t' || b, E'\\n' ORDER BY a) || E'\\n') "
             "FROM big")


def test_copy_from_stdin_100mb(proxy, payload):
    with proxy.connect() as c:
        c.execute("CREATE TEMP TABLE big (a int, b text)")
        with c.cursor().copy("COPY big FROM STDIN") as cp:
            for i in range(0, len(payload), 1 << 20):
                cp.write(payload[i:i + (1 << 20)])
        count, md5 = c.execute(CHECK_SQL).fetchone()
    assert count == ROWS
    assert md5 == hashlib.md5(payload).hexdigest()


def copy_out_digest(conn):
    h = hashlib.md5()
    n = 0
    with conn as c:
        with c.cursor().copy(f"COPY ({OUT_QUERY}) TO STDOUT") as cp:
            for block in cp:
                h.update(block)
                n += len(block)
    return n, h.hexdigest()


def test_copy_to_stdout_100mb(pg, proxy):
    via = copy_out_digest(proxy.connect())
    direct = copy_out_digest(pg.direct(user="app"))
    assert via[0] > 100 * 1000 * 1000
    assert via == direct


def test_psql_copy_100mb_both_ways(pg, proxy, payload, workdir):
    path = os.path.join(workdir, "payload.tsv")
    with open(path, "wb") as f:
        f.write(payload)
    env = dict(os.environ, PGPASSWORD=tgtest.PASSWORDS["app"])
    script = (f"CREATE TEMP TABLE big (a int, b text);\n\\copy big FROM '{path}'\n"
              f"{CHECK_SQL};\n")
    r = subprocess.run(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", proxy.dsn()], input=script,
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["CREATE", "TABLE", "COPY", str(ROWS), f"{ROWS}|{hashlib.md5(payload).hexdigest()}"]

    def psql_out(dsn):
        r = subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-c", f"\\copy ({OUT_QUERY}) TO STDOUT",
                            dsn], capture_output=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        return len(r.stdout), hashlib.md5(r.stdout).hexdigest()
    assert psql_out(proxy.dsn()) == psql_out(pg.dsn(user="app"))


def test_copy_fail_mid_stream(proxy, payload):
    """The client aborts a big COPY halfway (CopyFail): nothing is stored, the
    server's 57014 is consumed by the client, the session goes on."""
    with proxy.connect() as c:
        c.execute("CREATE TEMP TABLE big (a int, b text)")
        with pytest.raises(psycopg.errors.QueryCanceled, match="client gives up"):
            with c.cursor().copy("COPY big FROM STDIN") as cp:
                cp.write(payload[:50 * 1000 * 1000])
                raise RuntimeError("client gives up")
        assert c.execute("SELECT count(*) FROM big").fetchone()[0] == 0
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        # The same session can COPY again.
        with c.cursor().copy("COPY big FROM STDIN") as cp:
            cp.write(b"1\tone\n")
        assert c.execute("SELECT count(*) FROM big").fetchone()[0] == 1


def copy_bad_row(conn, data):
    with conn as c:
        c.execute("CREATE TEMP TABLE big (a int, b text)")
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as e:
            with c.cursor().copy("COPY big FROM STDIN") as cp:
                for i in range(0, len(data), 1 << 20):
                    cp.write(data[i:i + (1 << 20)])
        after = c.execute("SELECT count(*) FROM big").fetchone()[0]
        return e.value.diag.sqlstate, e.value.diag.message_primary, e.value.diag.context, after


def test_copy_bad_row_mid_stream(pg, proxy, payload):
    """A bad row in the middle of 100 MB: the server's 22P02 with its context (the
    line number), the rest of the stream discarded, nothing stored, as directly."""
    half = payload.index(b"\n", len(payload) // 2) + 1
    data = payload[:half] + b"not-a-number\tx\n" + payload[half:]
    via = copy_bad_row(proxy.connect(), data)
    direct = copy_bad_row(pg.direct(user="app"), data)
    assert via == direct
    assert via[0] == "22P02"
    assert "line %d" % (payload[:half].count(b"\n") + 1) in via[2]
    assert via[3] == 0
