"""Every client path through the enforcing proxy: libpq (PQexecParams, PQprepare,
text and binary parameters, pipeline mode -- tests/tools/tg_libpq), psycopg 3
(server-side binding, text and binary, prepare=True, pipeline mode,
executemany), psycopg2 (client-side interpolation), pgbench with a custom
script (-M simple / extended / prepared). Rows are read back directly."""
import os
import subprocess

import psycopg
import psycopg2
import pytest

import tgtest

R2 = "tenantguard: workspace_id {w} does not match tenant {t} (workspace {tw}) on policies (R2)"
R3_MISSING = "tenantguard: tenant {t} does not exist (R3) on policies"
R4 = "tenantguard: tenant_id of policies cannot change from {a} to {b} (R4)"
WS = {3: 2, 4: 1, 6: 3}


def policies(db):
    return db.rows("SELECT tenant_id, workspace_id, name FROM policies ORDER BY id")


def all_bound(db):
    got = db.rows("SELECT tenant_id, workspace_id FROM policies")
    return got and all(WS[t] == w for t, w in got)


# ------------------------------------------------------------------ libpq

def libpq(dsn, script):
    tool = tgtest.tool_path("tg_libpq")
    if not os.access(tool, os.X_OK):
        pytest.fail(f"{tool} missing: run scripts/build")
    r = subprocess.run([tool, dsn], input=script, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


INS = "INSERT INTO policies (tenant_id, name) VALUES ($1, $2) RETURNING workspace_id"
INS_WS = "INSERT INTO policies (tenant_id, workspace_id, name) VALUES ($1, $2, $3)"


def test_libpq_exec_params_text_and_binary(eproxy, data):
    out = libpq(eproxy.dsn(db=data.name), f"""
params {INS}|t:3|t:text-untyped
params {INS}|t8:4|t:text-int8
params {INS}|b8:6|t:binary-int8
params {INS}|b4:3|t:binary-int4
params {INS}|b2:4|t:binary-int2
params {INS}|b8:9|t:ghost
params {INS}|null|t:null-tenant
params {INS_WS}|b8:3|b8:1|t:mismatch
params {INS_WS}|t:4|null|t:null-ws
params {INS_WS}|b2:6|b2:3|t:explicit-ok
params UPDATE policies SET tenant_id = $1 WHERE name = $2|b8:4|t:text-untyped
params UPDATE policies SET tenant_id = $1, name = $2 WHERE name = 'binary-int8'|b8:6|t:orm-same
""")
    assert out == [
        "OK INSERT 0 1", "ROW 2",
        "OK INSERT 0 1", "ROW 1",
        "OK INSERT 0 1", "ROW 3",
        "OK INSERT 0 1", "ROW 2",
        "OK INSERT 0 1", "ROW 1",
        "ERROR 42501 " + R3_MISSING.format(t=9),
        "ERROR 42501 tenantguard: tenant is NULL (R3) on policies",
        "ERROR 42501 " + R2.format(w=1, t=3, tw=2),
        "ERROR 42501 " + R2.format(w="NULL", t=4, tw=1),
        "OK INSERT 0 1",
        "ERROR 42501 " + R4.format(a=3, b=4),
        "OK UPDATE 1",
    ]
    assert policies(data) == [(3, 2, "text-untyped"), (4, 1, "text-int8"), (6, 3, "orm-same"),
                              (3, 2, "binary-int4"), (4, 1, "binary-int2"), (6, 3, "explicit-ok")]


def test_libpq_prepare_and_describe(eproxy, pg, data):
    script = f"""
prepare ins|{INS}|
prepare ins_typed|{INS}|20,25
prepare ins_small|{INS_WS}|21,21,0
describe ins
describe ins_typed
describe ins_small
exec ins|t:3|t:p1
exec ins|b8:4|t:p2
exec ins_typed|b8:6|t:p3
exec ins_small|b2:3|b2:2|t:p4
exec ins_small|b2:3|b2:3|t:p5
exec ins|t:5|t:p6
"""
    via = libpq(eproxy.dsn(db=data.name), script)
    assert via == [
        "OK PGRES_COMMAND_OK", "OK PGRES_COMMAND_OK", "OK PGRES_COMMAND_OK",
        "DESCRIBE params=20,25 fields=workspace_id:20:-1",
        "DESCRIBE params=20,25 fields=workspace_id:20:-1",
        "DESCRIBE params=21,21,25 fields=",
        "OK INSERT 0 1", "ROW 2",
        "OK INSERT 0 1", "ROW 1",
        "OK INSERT 0 1", "ROW 3",
        "OK INSERT 0 1",
        "ERROR 42501 " + R2.format(w=3, t=3, tw=2),
        "ERROR 42501 tenantguard: tenant 5 has no workspace (R3) on policies",
    ]
    assert policies(data) == [(3, 2, "p1"), (4, 1, "p2"), (6, 3, "p3"), (3, 2, "p4")]
    # the descriptions are what PostgreSQL gives for the client's own text
    direct = libpq(pg.dsn(user="app", db=data.name), "\n".join(
        line for line in script.splitlines() if line.startswith(("prepare", "describe"))))
    assert direct == via[:6]


def test_libpq_pipeline(eproxy, data):
    lines = ["pipeline", f"prepare ins|{INS}|"]
    for i in range(60):
        lines.append(f"exec ins|b8:{[3, 4, 6][i % 3]}|t:pipe-{i}")
    lines += [f"exec ins|t:9|t:ghost",                  # rejected: the rest of the batch is aborted
              f"exec ins|t:3|t:aborted", "sync",
              f"params {INS_WS}|b8:4|b8:1|t:after-sync",
              f"params {INS_WS}|b8:4|b8:2|t:bad-after-sync", "sync",
              f"params {INS}|t:6|t:last", "sync", "endpipeline"]
    out = libpq(eproxy.dsn(db=data.name), "\n".join(lines) + "\n")
    expected = ["OK PGRES_COMMAND_OK"]
    for i in range(60):
        expected += ["OK INSERT 0 1", f"ROW {WS[[3, 4, 6][i % 3]]}"]
    expected += ["ERROR 42501 " + R3_MISSING.format(t=9), "ABORTED", "SYNC",
                 "OK INSERT 0 1", "ERROR 42501 " + R2.format(w=2, t=4, tw=1), "SYNC",
                 "OK INSERT 0 1", "ROW 3", "SYNC"]
    assert out == expected
    # the first batch failed as a whole (one implicit transaction), so did the second
    assert policies(data) == [(6, 3, "last")]


def test_libpq_pipeline_statement_level_rejection(eproxy, data):
    """A Parse the proxy rejects itself (no tenant column) in the middle of a pipeline."""
    out = libpq(eproxy.dsn(db=data.name), f"""
pipeline
params {INS}|t:3|t:first
params INSERT INTO policies (name) VALUES ($1)|t:no-tenant
params {INS}|t:4|t:aborted
sync
params {INS}|t:4|t:second
sync
endpipeline
""")
    assert out == ["OK INSERT 0 1", "ROW 2",
                   "ERROR 42501 tenantguard: INSERT into policies does not set tenant_id: no tenant to derive the "
                   "workspace from (R3)",
                   "ABORTED", "SYNC", "OK INSERT 0 1", "ROW 1", "SYNC"]
    assert policies(data) == [(4, 1, "second")]


# ------------------------------------------------------------------ psycopg 3

@pytest.fixture
def pconn(eproxy, data):
    c = psycopg.connect(eproxy.dsn(db=data.name), autocommit=True)
    yield c
    c.close()


SQL3 = "INSERT INTO policies (tenant_id, name) VALUES (%s, %s) RETURNING workspace_id"
SQL3_WS = "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (%s, %s, %s)"


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("prepare", [None, True])
def test_psycopg3_server_side_binding(pconn, data, binary, prepare):
    cur = pconn.cursor(binary=binary)
    for t in (3, 4, 6, 3):
        assert cur.execute(SQL3, (t, f"ps3-{t}"), prepare=prepare).fetchone() == (WS[t],)
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
        cur.execute(SQL3_WS, (6, 1, "bad"), prepare=prepare)
    assert ei.value.diag.message_primary == R2.format(w=1, t=6, tw=3)
    assert ei.value.diag.sqlstate == "42501"
    # the rule's own error: no CONTEXT naming tenantguard's PL/pgSQL helper, no server source
    # location (drivers print both in their exception texts); the constraint still names the rule
    assert (ei.value.diag.context, ei.value.diag.source_file, ei.value.diag.source_line,
            ei.value.diag.source_function) == (None, None, None, None)
    assert ei.value.diag.constraint_name == "tenantguard_r2" and ei.value.diag.severity == "ERROR"
    assert "tenantguard." not in str(ei.value).replace("tenantguard: ", "")
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
        cur.execute(SQL3, (2 ** 40, "big"), prepare=prepare)          # an int8 the server must see as such
    assert ei.value.diag.message_primary == R3_MISSING.format(t=2 ** 40)
    cur.execute(SQL3_WS, (4, 1, "explicit"), prepare=prepare)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        cur.execute("UPDATE policies SET tenant_id = %s WHERE name = %s", (4, "ps3-3"), prepare=prepare)
    cur.execute("UPDATE policies SET tenant_id = %s, name = %s WHERE name = %s", (6, "same", "ps3-6"),
                prepare=prepare)
    assert policies(data) == [(3, 2, "ps3-3"), (4, 1, "ps3-4"), (6, 3, "same"), (3, 2, "ps3-3"),
                              (4, 1, "explicit")]


def test_psycopg3_executemany_and_transaction(eproxy, data):
    with psycopg.connect(eproxy.dsn(db=data.name)) as c:
        with c.cursor() as cur:
            cur.executemany("INSERT INTO policies (tenant_id, name) VALUES (%s, %s)",
                            [(t, f"many-{i}") for i, t in enumerate([3, 4, 6] * 10)])
        c.commit()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with c.cursor() as cur:
                cur.executemany(SQL3_WS, [(3, 2, "ok"), (4, 2, "bad"), (6, 3, "after")])
        c.rollback()
    assert len(policies(data)) == 30 and all_bound(data)


def test_psycopg3_pipeline_mode(eproxy, data):
    with psycopg.connect(eproxy.dsn(db=data.name), autocommit=True) as c:
        with c.pipeline():
            curs = [c.execute(SQL3, (t, f"pipe-{i}")) for i, t in enumerate([3, 4, 6] * 20)]
        assert [cur.fetchone()[0] for cur in curs] == [2, 1, 3] * 20
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
            with c.pipeline():
                c.execute(SQL3, (3, "in-failed-batch"))
                c.execute(SQL3_WS, (3, 1, "bad"))
                c.execute(SQL3, (4, "never"))
        assert ei.value.diag.message_primary == R2.format(w=1, t=3, tw=2)
        with c.pipeline():
            c.execute(SQL3, (4, "after"), prepare=True)
            c.execute(SQL3, (6, "after"), prepare=True)
    got = policies(data)
    assert len(got) == 62 and all_bound(data)
    assert got[-2:] == [(4, 1, "after"), (6, 3, "after")]
    assert not [r for r in got if r[2] in ("in-failed-batch", "bad", "never")]


def test_psycopg3_prepared_statement_description(pconn, pg, data):
    """psycopg's prepared statements see the parameter types PostgreSQL gives the client's text."""
    sql = "INSERT INTO policies (tenant_id, workspace_id, name) VALUES ($1, $2, $3) RETURNING id, workspace_id"
    with pg.direct(db=data.name, user="app") as d:
        want = d.pgconn.prepare(b"x", sql.encode()), d.pgconn.describe_prepared(b"x")
        want = ([want[1].param_type(i) for i in range(want[1].nparams)],
                [(want[1].fname(i), want[1].ftype(i)) for i in range(want[1].nfields)])
    pconn.pgconn.prepare(b"x", sql.encode())
    got = pconn.pgconn.describe_prepared(b"x")
    assert ([got.param_type(i) for i in range(got.nparams)],
            [(got.fname(i), got.ftype(i)) for i in range(got.nfields)]) == want == ([20, 20, 25], [
                (b"id", 20), (b"workspace_id", 20)])


# ------------------------------------------------------------------ psycopg2

def test_psycopg2_client_side_interpolation(eproxy, data):
    c2 = psycopg2.connect(eproxy.dsn(db=data.name))
    try:
        cur = c2.cursor()
        for t in (3, 4, 6):
            cur.execute("INSERT INTO policies (tenant_id, name) VALUES (%s, %s) RETURNING workspace_id",
                        (t, "pg2 'quoted' name"))
            assert cur.fetchone() == (WS[t],)
        cur.executemany("INSERT INTO policies (tenant_id, name) VALUES (%(t)s, %(n)s)",
                        [{"t": 3, "n": "many"}, {"t": 6, "n": "many"}])
        c2.commit()
        with pytest.raises(psycopg2.errors.InsufficientPrivilege) as ei:
            cur.execute("INSERT INTO policies (tenant_id, workspace_id, name) VALUES (%s, %s, %s)", (3, 3, "bad"))
        assert ei.value.pgcode == "42501"
        assert ei.value.diag.message_primary == R2.format(w=3, t=3, tw=2)
        c2.rollback()
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("UPDATE policies SET tenant_id = %s", (4,))
        c2.rollback()
        cur.execute("UPDATE policies SET workspace_id = %s WHERE tenant_id = %s", (2, 3))
        c2.commit()
    finally:
        c2.close()
    assert policies(data) == [(3, 2, "pg2 'quoted' name"), (4, 1, "pg2 'quoted' name"), (6, 3, "pg2 'quoted' name"),
                              (3, 2, "many"), (6, 3, "many")]


# ------------------------------------------------------------------ pgbench

PGBENCH_SCRIPT = r"""\set r random(1, 3)
\set t CASE WHEN :r = 1 THEN 3 WHEN :r = 2 THEN 4 ELSE 6 END
INSERT INTO policies (tenant_id, name) VALUES (:t, 'bench') RETURNING id \gset
UPDATE policies SET tenant_id = :t, name = 'bench-upd' WHERE id = :id;
INSERT INTO audit_logs (tenant_id, action) VALUES (:t, 'bench');
"""


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_custom_script(eproxy, data, workdir, mode):
    script = os.path.join(workdir, "enforce.sql")
    with open(script, "w") as f:
        f.write(PGBENCH_SCRIPT)
    r = tgtest.pgbench(eproxy, "-n", "-c", "4", "-j", "2", "-t", "50", "-M", mode, "-f", script, db=data.name)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "number of transactions actually processed: 200/200" in r.stdout
    assert data.rows("SELECT count(*), count(*) FILTER (WHERE name = 'bench-upd') FROM policies") == [(200, 200)]
    assert all_bound(data)
    got = data.rows("SELECT tenant_id, workspace_id FROM audit_logs")
    assert len(got) == 200 and all(WS[t] == w for t, w in got)
