"""Real clients through tenantguard: psql, pgbench, psycopg 3, psycopg2 and libpq's
pipeline mode, compared with PostgreSQL directly where the output is deterministic."""
import datetime
import decimal
import json
import os
import re
import subprocess

import psycopg
import psycopg2
import psycopg2.extensions
import pytest
from psycopg.types.json import Jsonb

import tgtest


# ---------------------------------------------------------------- psql

PSQL_SCRIPT = r"""
\set VERBOSITY verbose
SELECT 1 AS one, 'two' AS two;
SELECT 1; SELECT 2 \; SELECT 3;
CREATE TEMP TABLE t (a int PRIMARY KEY, b text);
INSERT INTO t VALUES (1, 'x'), (2, NULL) RETURNING *;
SELECT 1/0;
INSERT INTO t VALUES (1, 'dup');
BEGIN;
SELECT * FROM no_such_table;
ROLLBACK;
\copy t FROM stdin
3	three
4	\N
\.
\copy t TO stdout
SELECT count(*) FROM t;
DO $$BEGIN RAISE NOTICE 'notice %', 7; END$$;
PREPARE q(int) AS SELECT $1 * 10;
EXECUTE q(5);
SELECT $$multi
line$$ AS text;
"""


def run_psql_script(args, env=None):
    r = subprocess.run(["psql", "-X", "--no-psqlrc", "-v", "ON_ERROR_STOP=0", *args],
                       input=PSQL_SCRIPT, capture_output=True, text=True, timeout=60, env=env)
    return r


def test_psql_script_output_equals_direct(pg, proxy):
    """A psql script with results, errors (SQLSTATEs in verbose mode), \\copy both ways,
    notices and prepared statements: stdout and stderr equal PostgreSQL's."""
    env = dict(os.environ, PGPASSWORD=tgtest.PASSWORDS["app"])
    via = run_psql_script([proxy.dsn()], env)
    direct = run_psql_script([f"host=127.0.0.1 port={pg.port} user=app dbname=app sslmode=disable"], env)
    assert via.stdout == direct.stdout
    assert via.stderr == direct.stderr
    assert "ERROR:  22012: division by zero" in via.stderr
    assert "ERROR:  23505: duplicate key value" in via.stderr
    assert "ERROR:  42P01: relation \"no_such_table\" does not exist" in via.stderr
    assert "NOTICE:  00000: notice 7" in via.stderr
    assert "3\tthree\n4\t\\N\n" in via.stdout


def test_psql_multi_statement(proxy):
    r = proxy.psql("SELECT 1; SELECT 2; SELECT 'three'")
    assert r.stdout.split() == ["1", "2", "three"]


def test_psql_error_sqlstate(proxy):
    r = proxy.psql("SELECT 1/0", check=False, extra_args=["-v", "VERBOSITY=verbose"])
    assert r.returncode == 1
    assert "ERROR:  22012: division by zero" in r.stderr


# ---------------------------------------------------------------- pgbench

@pytest.fixture(scope="module")
def bench_db(pg):
    pg.create_database("tg_bench")
    yield "tg_bench"
    pg.psql("DROP DATABASE IF EXISTS tg_bench WITH (FORCE)", db="postgres")


@pytest.fixture(scope="module")
def bench_initialised(pg, bench_db, tmp_path_factory):
    """pgbench -i through a proxy of its own (COPY, DDL, VACUUM through the relay)."""
    workdir = str(tmp_path_factory.mktemp("bench"))
    os.chmod(workdir, 0o755)
    p = tgtest.Proxy(pg, workdir).start()
    try:
        r = tgtest.pgbench(p, "-i", "-s", "1", "-q", db=bench_db)
        assert r.returncode == 0, r.stderr
        assert "error" not in (r.stdout + r.stderr).lower()
        assert "done in" in r.stderr
    finally:
        assert p.stop() == 0
    assert pg.psql("SELECT count(*) FROM pgbench_accounts", db=bench_db) == "100000"
    return bench_db


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench(proxy, bench_initialised, mode):
    r = tgtest.pgbench(proxy, "-T", "5", "-c", "4", "-j", "2", "-M", mode, db=bench_initialised)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "error" not in out.lower(), out
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    assert m and int(m.group(1)) > 0, out
    m = re.search(r"number of failed transactions: (\d+)", out)
    assert m and int(m.group(1)) == 0, out


# ---------------------------------------------------------------- psycopg 3

def test_psycopg3_server_side_binding_types(proxy):
    values = (42, -2**62, 3.5, decimal.Decimal("12345678901234567890.123"), "héllo wörld ✓", b"\x00\xff\x10",
              None, True, datetime.date(2024, 2, 29), datetime.datetime(2024, 1, 2, 3, 4, 5, 6789),
              [1, 2, 3], Jsonb({"a": [1, None, "x"]}))
    with proxy.connect() as c:
        row = c.execute("SELECT " + ", ".join(["%s"] * len(values)), values).fetchone()
    expect = list(values)
    expect[-1] = {"a": [1, None, "x"]}
    assert list(row) == expect


def test_psycopg3_binary_params_and_results(proxy):
    with proxy.connect() as c:
        cur = c.cursor(binary=True)
        row = cur.execute("SELECT %b::int4, %b::text, %b::bytea, %b::float8, %b::int8[]",
                          (7, "bin", b"\x00\x01", 1.25, [1, 2])).fetchone()
        assert row == (7, "bin", b"\x00\x01", 1.25, [1, 2])
        assert cur.pgresult.fformat(0) == 1   # the server answered in binary
        rows = c.execute("SELECT g, md5(g::text) FROM generate_series(1, 2000) g", binary=True).fetchall()
        assert len(rows) == 2000 and rows[-1][0] == 2000


def test_psycopg3_prepared_statements(proxy):
    with proxy.connect() as c:
        c.prepare_threshold = 0
        for i in range(5):
            assert c.execute("SELECT %s::int * 3", (i,)).fetchone()[0] == i * 3
        n = c.execute("SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql").fetchone()[0]
        assert n >= 1


def test_psycopg3_invalidated_prepared_statement_as_direct(pg, proxy):
    """DDL under a prepared statement: the server's 0A000, then the session goes on."""
    def scenario(conn):
        with conn as c:
            c.prepare_threshold = 0
            c.execute("CREATE TEMP TABLE pt (a int)")
            c.execute("INSERT INTO pt VALUES (1)")
            for _ in range(2):
                assert c.execute("SELECT * FROM pt").fetchall() == [(1,)]
            c.execute("ALTER TABLE pt ADD COLUMN b int DEFAULT 5")
            with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
                c.execute("SELECT * FROM pt")
            return str(e.value), c.execute("SELECT 'after'").fetchone()[0]
    assert scenario(proxy.connect()) == scenario(pg.direct(user="app")) == \
        ("cached plan must not change result type", "after")


def test_psycopg3_pipeline_mode(proxy):
    """psycopg's pipeline mode is libpq's pipeline mode."""
    with proxy.connect() as c:
        c.execute("CREATE TEMP TABLE pl (id int PRIMARY KEY, v text)")
        with c.pipeline():
            curs = [c.execute("INSERT INTO pl VALUES (%s, %s) RETURNING id * 2", (i, f"v{i}"))
                    for i in range(300)]
            c.cursor().executemany("INSERT INTO pl VALUES (%s, %s)", [(i, "m") for i in range(300, 600)])
        assert [cur.fetchone()[0] for cur in curs] == [2 * i for i in range(300)]
        assert c.execute("SELECT count(*) FROM pl").fetchone()[0] == 600
        # An error inside a pipeline: raised, and the connection is usable after.
        with pytest.raises(psycopg.errors.UniqueViolation):
            with c.pipeline():
                c.execute("INSERT INTO pl VALUES (1, 'dup')")
                c.execute("SELECT 1")
        assert c.execute("SELECT count(*) FROM pl").fetchone()[0] == 600


def test_psycopg3_transactions_and_savepoints(proxy):
    with proxy.connect(autocommit=False) as c:
        c.execute("CREATE TEMP TABLE tx (a int) ON COMMIT PRESERVE ROWS")
        c.commit()
        with c.transaction():
            c.execute("INSERT INTO tx VALUES (1)")
            with pytest.raises(psycopg.errors.DivisionByZero):
                with c.transaction():
                    c.execute("INSERT INTO tx VALUES (2)")
                    c.execute("SELECT 1/0")
        assert c.execute("SELECT array_agg(a) FROM tx").fetchone()[0] == [1]
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        c.rollback()
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_psycopg3_server_side_cursor(proxy):
    with proxy.connect(autocommit=False) as c:
        with c.cursor(name="big") as cur:
            cur.itersize = 1000
            cur.execute("SELECT g FROM generate_series(1, 25000) g")
            total = sum(r[0] for r in cur)
        assert total == 25000 * 25001 // 2


def test_psycopg3_copy_with_binary_format(proxy):
    with proxy.connect() as c:
        c.execute("CREATE TEMP TABLE cb (a int, b text)")
        with c.cursor().copy("COPY cb FROM STDIN (FORMAT binary)") as cp:
            cp.set_types(["int4", "text"])
            for i in range(1000):
                cp.write_row((i, f"r{i}"))
        with c.cursor().copy("COPY cb TO STDOUT (FORMAT binary)") as cp:
            cp.set_types(["int4", "text"])
            rows = list(cp.rows())
        assert rows == [(i, f"r{i}") for i in range(1000)]


# ---------------------------------------------------------------- psycopg2

def test_psycopg2_queries_errors_and_notices(proxy):
    conn = psycopg2.connect(proxy.dsn())
    try:
        cur = conn.cursor()
        cur.execute("SELECT %s, %s, %s", (1, "two", None))
        assert cur.fetchone() == (1, "two", None)
        with pytest.raises(psycopg2.errors.DivisionByZero) as e:
            cur.execute("SELECT 1/0")
        assert e.value.pgcode == "22012"
        conn.rollback()
        cur.execute("DO $$BEGIN RAISE NOTICE 'pg2 notice'; END$$")
        assert any("pg2 notice" in n for n in conn.notices)
        cur.executemany("SELECT %s", [(i,) for i in range(50)])
        conn.commit()
    finally:
        conn.close()


def test_psycopg2_named_cursor(proxy):
    conn = psycopg2.connect(proxy.dsn())
    try:
        cur = conn.cursor("named")
        cur.itersize = 500
        cur.execute("SELECT g FROM generate_series(1, 10000) g")
        assert sum(r[0] for r in cur) == 10000 * 10001 // 2
        cur.close()
        conn.commit()
    finally:
        conn.close()


def test_psycopg2_large_objects_use_function_call(proxy):
    """libpq's large-object functions use the FunctionCall ('F') message."""
    data = os.urandom(300000)
    conn = psycopg2.connect(proxy.dsn())
    try:
        lo = conn.lobject(0, "wb")
        lo.write(data)
        oid = lo.oid
        lo.close()
        conn.commit()
        lo = conn.lobject(oid, "rb")
        assert lo.read() == data
        lo.seek(1000)
        assert lo.read(10) == data[1000:1010]
        lo.unlink()
        conn.commit()
    finally:
        conn.close()


def test_psycopg2_copy_expert(proxy):
    import io
    conn = psycopg2.connect(proxy.dsn())
    try:
        cur = conn.cursor()
        cur.execute("CREATE TEMP TABLE c2 (a int, b text)")
        cur.copy_expert("COPY c2 FROM STDIN", io.StringIO("".join(f"{i}\tr{i}\n" for i in range(500))))
        out = io.StringIO()
        cur.copy_expert("COPY c2 TO STDOUT", out)
        assert out.getvalue() == "".join(f"{i}\tr{i}\n" for i in range(500))
        conn.commit()
    finally:
        conn.close()


def test_psycopg2_async_connection(proxy):
    """psycopg2's asynchronous mode (non-blocking libpq) through the proxy."""
    import select
    conn = psycopg2.connect(proxy.dsn(), async_=1)

    def wait(c):
        while True:
            state = c.poll()
            if state == psycopg2.extensions.POLL_OK:
                return
            if state == psycopg2.extensions.POLL_READ:
                select.select([c.fileno()], [], [], 10)
            elif state == psycopg2.extensions.POLL_WRITE:
                select.select([], [c.fileno()], [], 10)
    try:
        wait(conn)
        cur = conn.cursor()
        cur.execute("SELECT pg_sleep(0.1), 'async'")
        wait(conn)
        assert cur.fetchone()[1] == "async"
    finally:
        conn.close()


# ---------------------------------------------------------------- libpq pipeline mode (C)

def test_libpq_pipeline_tool_equals_direct(pg, proxy):
    tool = tgtest.tool_path("tg_pipeline")
    assert os.access(tool, os.X_OK), f"{tool} not built: run scripts/build"
    via = subprocess.run([tool, proxy.dsn(), "1000"], capture_output=True, text=True, timeout=60)
    assert via.returncode == 0, via.stderr
    direct = subprocess.run([tool, pg.dsn(user="app"), "1000"], capture_output=True, text=True, timeout=60)
    assert direct.returncode == 0, direct.stderr
    assert via.stdout == direct.stdout
    lines = via.stdout.splitlines()
    assert lines[0] == "PGRES_COMMAND_OK"                       # the Prepare
    assert lines[1:1001] == [f"PGRES_TUPLES_OK {2 * i}" for i in range(1000)]
    assert lines[1001] == "PGRES_FATAL_ERROR 22012"
    assert lines[1002] == "PGRES_PIPELINE_ABORTED"
    assert lines[1003] == "PGRES_PIPELINE_SYNC"
    assert lines[1004] == "PGRES_TUPLES_OK flushed!"
    assert lines[-1] == "PGRES_TUPLES_OK done"


def test_libpq_pipeline_tool_with_tls_both_sides(pg, proxy_factory):
    proxy = proxy_factory({"client_tls_mode": "require", "client_tls_cert_file": pg.cert_file,
                           "client_tls_key_file": pg.key_file, "server_sslmode": "require"})
    tool = tgtest.tool_path("tg_pipeline")
    r = subprocess.run([tool, proxy.dsn(sslmode="require", channel_binding="disable"), "3000"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "PGRES_TUPLES_OK 5998" in r.stdout


def test_json_roundtrip_large(proxy):
    doc = {"k%d" % i: ["v" * 50, i, None] for i in range(20000)}
    with proxy.connect() as c:
        got = c.execute("SELECT %s::jsonb", (Jsonb(doc),)).fetchone()[0]
    assert got == json.loads(json.dumps(doc))
