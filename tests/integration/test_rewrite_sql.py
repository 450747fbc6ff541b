"""rewrite/ against a real PostgreSQL 15, without the proxy.

For every rule and statement form: rwtool decides the client's SQL, the
decided SQL runs straight on PostgreSQL (libpq through psycopg 3's pgconn:
simple Query, extended protocol with text and binary parameters, named
prepared statements, SQL PREPARE), and the test asserts the SQLSTATE, the
message and the rows as stored (read back on another connection).

The database is the demo schema after phase 1: every tenant-owned table has
a nullable workspace_id, tenants has a unique (id, workspace_id), and
tenantguard's helper functions are installed (rendered by rwtool
--render-helpers from sql/tenantguard.sql).
"""
import json
import os
import struct
import subprocess

import psycopg
import pytest
from psycopg import pq

import tgtest

BUILD = os.environ.get("TG_BUILD_DIR", os.path.join(tgtest.REPO, "build"))
RWTOOL = os.path.join(BUILD, "tests", "tools", "rwtool")
DB = "tg_rewrite"
OWNED = ["policies", "policy_versions", "backup_sets", "backup_items", "restore_runs", "backup_schedules",
         "inventory_items", "inventory_links", "entra_groups", "findings", "entra_role_definitions",
         "tenant_permissions"]
INT2, INT4, INT8, TEXT = 21, 23, 20, 25


def rwtool(sql, *args):
    r = subprocess.run([RWTOOL, *args], input=sql.encode(), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def db(pg):
    if not os.access(RWTOOL, os.X_OK):
        pytest.fail(f"{RWTOOL} missing: run scripts/build")
    pg.create_database(DB, os.path.join(tgtest.REPO, "sql", "demo_schema.sql"))
    ddl = [f"ALTER TABLE {t} ADD COLUMN workspace_id bigint NULL REFERENCES workspaces (id)" for t in OWNED]
    ddl.append("CREATE UNIQUE INDEX tenants_id_workspace ON tenants (id, workspace_id)")
    for s in ddl:
        pg.psql(s, db=DB, user="app")
    helpers = subprocess.run([RWTOOL, "--render-helpers"], capture_output=True, check=True).stdout.decode()
    path = os.path.join(pg.base, "tg_helpers.sql")
    with open(path, "w") as f:
        f.write(helpers)
    os.chmod(path, 0o644)
    pg.psql_file(path, db=DB, user="app")
    return pg


def connect(pg):
    return psycopg.connect(pg.dsn(user="app", db=DB), autocommit=True)


@pytest.fixture
def conn(db):
    """A fresh data set: workspaces 1, 2; tenant 3 in workspace 2, 4 in 1, 5 in none."""
    with connect(db) as c:
        c.execute("TRUNCATE workspaces, tenants, policies, policy_versions, backup_sets, backup_items, "
                  "audit_logs RESTART IDENTITY CASCADE")
        c.execute("INSERT INTO workspaces (id, name) VALUES (1, 'w1'), (2, 'w2')")
        c.execute("INSERT INTO tenants (id, workspace_id, name) VALUES (3, 2, 't3'), (4, 1, 't4'), (5, NULL, 't5')")
    c = connect(db)
    yield c
    c.close()


def rows(db, sql):
    """Read back on another connection: what is stored, not what the session sees."""
    with connect(db) as c:
        return c.execute(sql).fetchall()


# ------------------------------------------------------------- execution

class Outcome:
    def __init__(self, res):
        self.status = res.status
        self.ok = res.status in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)
        self.sqlstate = (res.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode() or None
        self.message = (res.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or b"").decode()
        self.constraint = (res.error_field(pq.DiagnosticField.CONSTRAINT_NAME) or b"").decode() or None
        self.rows = [[res.get_value(r, c) for c in range(res.nfields)] for r in range(res.ntuples)]


def decided(sql, extended=False, args=()):
    """rwtool's decision as (sql to send, decision). A rejection sends its marker
    statement; the proxy would answer with d['sqlstate'] / d['message']."""
    d = rwtool(sql, *(["--extended"] if extended else []), *args)
    return (d["text"] if d["action"] != "pass" else sql), d


def simple(conn, sql, args=()):
    send, d = decided(sql, False, args)
    res = conn.pgconn.exec_(send.encode())
    return Outcome(res), d


def extended(conn, sql, params, types=None, formats=None, args=()):
    send, d = decided(sql, True, args)
    res = conn.pgconn.exec_params(send.encode(), params, param_types=types, param_formats=formats)
    return Outcome(res), d


def i8(v):
    return struct.pack("!q", v)


def i2(v):
    return struct.pack("!h", v)


def assert_rule(out, d, sqlstate, message, constraint=None):
    """A rule violation: raised by the helpers at run time, or rejected by rwtool."""
    if d["action"] == "reject":
        assert out.sqlstate == "42703" and d["marker"] in out.message
        assert d["sqlstate"] == sqlstate and message in d["message"], d
        return
    assert out.sqlstate == sqlstate, (out.sqlstate, out.message)
    assert message in out.message, out.message
    if constraint:
        assert out.constraint == constraint


# ------------------------------------------------------------------ R1

def test_r1_simple_values(db, conn):
    out, d = simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (3, 'a'), (4, 'b')")
    assert d["action"] == "replace" and out.ok, out.message
    assert rows(db, "SELECT tenant_id, workspace_id, name FROM policies ORDER BY id") == [(3, 2, "a"), (4, 1, "b")]


@pytest.mark.parametrize("fmt", ["text", "binary", "int2-binary", "int4-text", "typed-int8"])
def test_r1_extended_params(db, conn, fmt):
    sql = "INSERT INTO policies (tenant_id, name) VALUES ($1, $2) RETURNING workspace_id"
    if fmt == "text":
        out, _ = extended(conn, sql, [b"3", b"x"])
    elif fmt == "binary":
        out, _ = extended(conn, sql, [i8(3), b"x"], types=[INT8, TEXT], formats=[1, 0])
    elif fmt == "int2-binary":      # psycopg 3 sends small ints as int2
        out, _ = extended(conn, sql, [i2(3), b"x"], types=[INT2, TEXT], formats=[1, 1])
    elif fmt == "int4-text":
        out, _ = extended(conn, sql, [b"3", b"x"], types=[INT4, 0])
    else:
        out, _ = extended(conn, sql, [b"3", b"x"], types=[INT8, TEXT])
    assert out.ok, out.message
    assert out.rows == [[b"2"]]
    assert rows(db, "SELECT tenant_id, workspace_id FROM policies") == [(3, 2)]


def test_r1_named_prepared_statement(db, conn):
    send, d = decided("INSERT INTO policies (tenant_id, name) VALUES ($1, $2)", extended=True)
    pg = conn.pgconn
    assert pg.prepare(b"ins", send.encode()).status == pq.ExecStatus.COMMAND_OK
    for t in (3, 4, 3):
        res = pg.exec_prepared(b"ins", [str(t).encode(), b"p"])
        assert res.status == pq.ExecStatus.COMMAND_OK, res.error_message
    assert rows(db, "SELECT tenant_id, workspace_id FROM policies ORDER BY id") == [(3, 2), (4, 1), (3, 2)]


def test_r1_psycopg_server_side_binding(db, conn):
    """psycopg 3 itself (server-side binding, its own choice of int2/int8 OIDs)."""
    send, _ = decided("INSERT INTO policies (tenant_id, name) VALUES ($1, $2)", extended=True)
    # The rewritten text uses $1 twice; psycopg's named placeholders map each
    # name to one $n, as a driver's own statement would.
    psql = send.replace("$1", "%(t)s").replace("$2", "%(n)s")
    conn.execute(psql, {"t": 3, "n": "psycopg"})
    conn.execute(psql, {"t": 4, "n": "psycopg"}, prepare=True)
    conn.execute(psql, {"t": 3, "n": "psycopg"}, prepare=True)
    assert rows(db, "SELECT tenant_id, workspace_id FROM policies ORDER BY id") == [(3, 2), (4, 1), (3, 2)]


def test_r1_psycopg2_client_side(db, conn):
    """psycopg2 interpolates on the client: what reaches the proxy is a simple
    Query with literals, decided as such."""
    import psycopg2
    c2 = psycopg2.connect(db.dsn(user="app", db=DB))
    try:
        with c2.cursor() as cur:
            text = cur.mogrify("INSERT INTO policies (tenant_id, name) VALUES (%s, %s)", (4, "pg2")).decode()
            send, d = decided(text)
            assert d["action"] == "replace"
            cur.execute(send)
        c2.commit()
    finally:
        c2.close()
    assert rows(db, "SELECT tenant_id, workspace_id, name FROM policies") == [(4, 1, "pg2")]


def test_r1_insert_select_and_wraps(db, conn):
    for sql in ["INSERT INTO policies (tenant_id, name) SELECT id, 'from-select' FROM tenants WHERE id IN (3, 4)",
                "INSERT INTO policies (tenant_id, name) SELECT 3, 'u'::text UNION ALL SELECT 4, 'v'",
                "INSERT INTO policies (tenant_id, name) SELECT generate_series(3, 4), 'gs'::text",
                "INSERT INTO policies (tenant_id, name) SELECT (SELECT max(id) FROM tenants WHERE workspace_id = 1), "
                "'sub'::text"]:
        out, d = simple(conn, sql)
        assert d["action"] == "replace" and out.ok, (sql, out.message, d["text"])
    got = rows(db, "SELECT tenant_id, workspace_id, name FROM policies ORDER BY id")
    assert got == [(3, 2, "from-select"), (4, 1, "from-select"), (3, 2, "u"), (4, 1, "v"), (3, 2, "gs"),
                   (4, 1, "gs"), (4, 1, "sub")]


def test_r1_on_conflict_cte_merge_explain_copy(db, conn):
    stmts = [
        "INSERT INTO policies (id, tenant_id, name) VALUES (10, 3, 'oc') ON CONFLICT DO NOTHING",
        "INSERT INTO policies (id, tenant_id, name) VALUES (10, 4, 'oc2') ON CONFLICT DO NOTHING",
        "WITH x AS (INSERT INTO policies (id, tenant_id, name) VALUES (11, 4, 'cte') RETURNING id) SELECT * FROM x",
        "MERGE INTO policies p USING (VALUES (12, 3, 'merge')) s(id, t, n) ON p.id = s.id "
        "WHEN NOT MATCHED THEN INSERT (id, tenant_id, name) VALUES (s.id, s.t, s.n)",
        "EXPLAIN ANALYZE INSERT INTO policies (id, tenant_id, name) VALUES (13, 4, 'explain')",
        "COPY (INSERT INTO policies (id, tenant_id, name) VALUES (14, 3, 'copy') RETURNING id) TO STDOUT",
    ]
    for sql in stmts:
        send, d = decided(sql)
        assert d["action"] == "replace", (sql, d)
        if sql.startswith("COPY"):
            with conn.cursor() as cur:
                with cur.copy(send) as cp:
                    assert b"".join(bytes(b) for b in cp) == b"14\n"
        else:
            res = Outcome(conn.pgconn.exec_(send.encode()))
            assert res.ok, (sql, res.message)
    assert rows(db, "SELECT id, tenant_id, workspace_id FROM policies ORDER BY id") == [
        (10, 3, 2), (11, 4, 1), (12, 3, 2), (13, 4, 1), (14, 3, 2)]


def test_r1_sql_prepare_execute(db, conn):
    out, d = simple(conn, "PREPARE p1 (bigint, text) AS INSERT INTO policies (tenant_id, name) VALUES ($1, $2)")
    assert out.ok and d["effects"][0]["kind"] == "prepare" and d["effects"][0]["writes_watched"]
    out, d = simple(conn, "EXECUTE p1 (4, 'exec')")
    assert out.ok and d["action"] == "pass" and d["effects"][0]["kind"] == "execute"
    assert rows(db, "SELECT tenant_id, workspace_id FROM policies") == [(4, 1)]


def test_r1_tenant_created_in_same_transaction(db, conn):
    conn.execute("BEGIN")
    conn.execute("INSERT INTO workspaces (id, name) VALUES (7, 'w7')")
    conn.execute("INSERT INTO tenants (id, workspace_id, name) VALUES (70, 7, 'new')")
    out, d = simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (70, 'fresh')")
    assert out.ok, out.message
    conn.execute("UPDATE tenants SET workspace_id = 2 WHERE id = 70")       # moved in the same transaction
    out, d = simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (70, 'moved')")
    assert out.ok, out.message
    conn.execute("COMMIT")
    assert rows(db, "SELECT name, workspace_id FROM policies ORDER BY id") == [("fresh", 7), ("moved", 2)]


def test_search_path_attacks_change_nothing(db, conn):
    conn.execute("CREATE SCHEMA IF NOT EXISTS attacker")
    conn.execute("CREATE TABLE IF NOT EXISTS attacker.tenants (id bigint, workspace_id bigint)")
    conn.execute("TRUNCATE attacker.tenants")
    conn.execute("INSERT INTO attacker.tenants VALUES (3, 1), (9, 1)")   # lies about tenant 3, invents 9
    # A look-alike = operator for bigint that says every pair is equal.
    conn.execute("CREATE OR REPLACE FUNCTION attacker.eq(bigint, bigint) RETURNS boolean "
                 "LANGUAGE sql AS 'SELECT true'")
    conn.execute("DROP OPERATOR IF EXISTS attacker.= (bigint, bigint)")
    conn.execute("CREATE OPERATOR attacker.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = attacker.eq)")
    conn.execute("CREATE TEMP TABLE tenants (id bigint, workspace_id bigint)")
    conn.execute("INSERT INTO tenants VALUES (3, 1)")
    conn.execute("SET search_path = attacker, pg_catalog, public")
    env = ["--path", "attacker,pg_catalog,public"]
    out, d = simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (3, 'a')", env)
    assert d["action"] == "replace" and out.ok, out.message
    out, d = simple(conn, "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 1, 'b')", env)
    assert_rule(out, d, "42501", "workspace_id 1 does not match tenant 3 (workspace 2) on policies")
    out, d = simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (9, 'c')", env)
    assert_rule(out, d, "42501", "tenant 9 does not exist (R3) on policies")
    out, d = simple(conn, "UPDATE policies SET tenant_id = 4 WHERE tenant_id = 3", env)
    assert_rule(out, d, "42501", "tenant_id of policies cannot change from 3 to 4 (R4)")
    conn.execute("RESET search_path")
    assert rows(db, "SELECT tenant_id, workspace_id, name FROM policies") == [(3, 2, "a")]


# ------------------------------------------------------------------ R2/R3

@pytest.mark.parametrize("ws,ok", [(2, True), (1, False), (None, False)])
def test_r2_verify(db, conn, ws, ok):
    sql = "INSERT INTO policies (tenant_id, workspace_id, name) VALUES ($1, $2, 'r2')"
    out, _ = extended(conn, sql, [i2(3), None if ws is None else i2(ws)], types=[INT2, INT2], formats=[1, 1])
    if ok:
        assert out.ok, out.message
        assert rows(db, "SELECT tenant_id, workspace_id FROM policies") == [(3, 2)]
    else:
        shown = "NULL" if ws is None else ws
        assert out.sqlstate == "42501" and out.constraint == "tenantguard_r2"
        assert out.message == f"tenantguard: workspace_id {shown} does not match tenant 3 (workspace 2) on policies (R2)"
        assert rows(db, "SELECT count(*) FROM policies") == [(0,)]


def test_r2_multi_row_rejects_whole_statement(db, conn):
    out, d = simple(conn, "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 2, 'ok'), (4, 2, 'bad')")
    assert_rule(out, d, "42501", "workspace_id 2 does not match tenant 4 (workspace 1)", "tenantguard_r2")
    assert rows(db, "SELECT count(*) FROM policies") == [(0,)]


@pytest.mark.parametrize("sql,msg", [
    ("INSERT INTO policies (tenant_id, name) VALUES (9, 'x')", "tenant 9 does not exist (R3) on policies"),
    ("INSERT INTO policies (tenant_id, name) VALUES (5, 'x')", "tenant 5 has no workspace (R3) on policies"),
    ("INSERT INTO policies (tenant_id, name) VALUES (NULL, 'x')", "tenant is NULL (R3) on policies"),
    ("INSERT INTO policies (name) VALUES ('x')", "does not set tenant_id"),
    ("INSERT INTO policies DEFAULT VALUES", "DEFAULT VALUES into policies"),
    ("INSERT INTO policies (tenant_id, name) SELECT id, 'x' FROM tenants", "tenant 5 has no workspace (R3)"),
])
def test_r3(db, conn, sql, msg):
    out, d = simple(conn, sql)
    assert_rule(out, d, "42501", msg)
    assert rows(db, "SELECT count(*) FROM policies") == [(0,)]


# ------------------------------------------------------------------ R4/R5

@pytest.fixture
def legacy(db, conn):
    """Rows as they are before the backfill: workspace_id NULL."""
    conn.execute("INSERT INTO policies (id, tenant_id, name) VALUES (1, 3, 'a'), (2, 4, 'b'), (3, 3, 'c')")
    return conn


def test_r4(db, legacy):
    conn = legacy
    out, d = simple(conn, "UPDATE policies SET tenant_id = 4 WHERE id = 1")
    assert_rule(out, d, "42501", "tenant_id of policies cannot change from 3 to 4 (R4)", "tenantguard_r4")
    out, d = extended(conn, "UPDATE policies p SET tenant_id = $1, name = $2 WHERE p.id = $3", [b"3", b"same", b"1"])
    assert out.ok, out.message            # an ORM writing every column back
    out, d = simple(conn, "UPDATE policies SET (tenant_id, name) = (4, 'row') WHERE id = 3")
    assert_rule(out, d, "42501", "cannot change from 3 to 4 (R4)")
    out, d = simple(conn, "UPDATE policies SET tenant_id = DEFAULT WHERE id = 3")
    assert_rule(out, d, "42501", "cannot be set to DEFAULT (R4)")
    assert rows(db, "SELECT id, tenant_id, name FROM policies ORDER BY id") == [(1, 3, "same"), (2, 4, "b"), (3, 3, "c")]


def test_r5_backfill_and_verify(db, legacy):
    conn = legacy
    out, d = simple(conn, "UPDATE policies p SET workspace_id = t.workspace_id FROM tenants t "
                          "WHERE t.id = p.tenant_id AND p.workspace_id IS NULL")
    assert d["action"] == "replace" and out.ok, out.message
    assert rows(db, "SELECT id, workspace_id FROM policies ORDER BY id") == [(1, 2), (2, 1), (3, 2)]
    out, d = simple(conn, "UPDATE policies SET workspace_id = tenants.workspace_id FROM tenants "
                          "WHERE tenants.id = policies.tenant_id")
    assert out.ok, out.message
    out, d = extended(conn, "UPDATE policies SET workspace_id = $1 WHERE id = $2", [i8(1), i8(1)],
                      types=[INT8, INT8], formats=[1, 1])
    assert_rule(out, d, "42501", "workspace_id 1 does not match tenant 3 (workspace 2) on update of policies (R5)",
                "tenantguard_r5")
    out, d = simple(conn, "UPDATE policies SET (name, workspace_id) = (SELECT 'x', 1) WHERE id = 2")
    assert out.ok, out.message            # tenant 4 is in workspace 1
    out, d = simple(conn, "UPDATE policies SET workspace_id = NULL WHERE id = 2")
    assert_rule(out, d, "42501", "workspace_id NULL does not match tenant 4")
    assert rows(db, "SELECT id, workspace_id, name FROM policies ORDER BY id") == [(1, 2, "a"), (2, 1, "x"),
                                                                                   (3, 2, "c")]


def test_r5_on_conflict_and_merge(db, legacy):
    conn = legacy
    out, d = simple(conn, "INSERT INTO policies AS p (id, tenant_id, name) VALUES (1, 3, 'up') ON CONFLICT (id) "
                          "DO UPDATE SET workspace_id = EXCLUDED.workspace_id, name = EXCLUDED.name")
    assert out.ok, out.message
    out, d = simple(conn, "INSERT INTO policies (id, tenant_id, name) VALUES (2, 3, 'x') ON CONFLICT (id) "
                          "DO UPDATE SET tenant_id = EXCLUDED.tenant_id")
    assert_rule(out, d, "42501", "cannot change from 4 to 3 (R4)")
    out, d = simple(conn, "INSERT INTO policies (id, tenant_id, name) VALUES (2, 3, 'x') ON CONFLICT (id) "
                          "DO UPDATE SET workspace_id = EXCLUDED.workspace_id")
    assert_rule(out, d, "42501", "workspace_id 2 does not match tenant 4 (workspace 1) on update of policies")
    out, d = simple(conn, "MERGE INTO policies p USING (VALUES (3, 2), (2, 2)) s(id, w) ON p.id = s.id "
                          "WHEN MATCHED THEN UPDATE SET workspace_id = s.w")
    assert_rule(out, d, "42501", "does not match tenant 4")
    out, d = simple(conn, "MERGE INTO policies p USING (VALUES (3, 2)) s(id, w) ON p.id = s.id "
                          "WHEN MATCHED THEN UPDATE SET workspace_id = s.w")
    assert out.ok, out.message
    assert rows(db, "SELECT id, tenant_id, workspace_id, name FROM policies ORDER BY id") == [
        (1, 3, 2, "up"), (2, 4, None, "b"), (3, 3, 2, "c")]


# ------------------------------------------------------------------ R6/R7

def test_r6_audit(db, conn):
    out, d = simple(conn, "INSERT INTO audit_logs (tenant_id, action) VALUES (3, 'tenant'), (NULL, 'platform')")
    assert out.ok, out.message
    out, d = simple(conn, "INSERT INTO audit_logs (workspace_id, action) VALUES (1, 'workspace-only')")
    assert d["action"] == "pass" and out.ok
    out, d = simple(conn, "INSERT INTO audit_logs (tenant_id, workspace_id, action) VALUES (4, 1, 'ok'), "
                          "(NULL, 2, 'ws')")
    assert out.ok, out.message
    out, d = simple(conn, "INSERT INTO audit_logs (tenant_id, workspace_id, action) VALUES (4, 2, 'bad')")
    assert_rule(out, d, "42501", "workspace_id 2 does not match tenant 4 (workspace 1) on audit_logs (R6)",
                "tenantguard_r6")
    out, d = simple(conn, "INSERT INTO audit_logs (tenant_id, action) VALUES (9, 'ghost')")
    assert_rule(out, d, "42501", "tenant 9 does not exist (R6) on audit_logs")
    out, d = simple(conn, "UPDATE audit_logs SET tenant_id = 4 WHERE action = 'tenant'")
    assert_rule(out, d, "42501", "does not match tenant 4")
    assert rows(db, "SELECT tenant_id, workspace_id, action FROM audit_logs ORDER BY id") == [
        (3, 2, "tenant"), (None, None, "platform"), (None, 1, "workspace-only"), (4, 1, "ok"), (None, 2, "ws")]


def test_r7_transparent(db, conn):
    conn.execute("CREATE SCHEMA IF NOT EXISTS other")
    conn.execute("CREATE TABLE IF NOT EXISTS other.policies (tenant_id bigint, workspace_id bigint, name text)")
    conn.execute('CREATE TABLE IF NOT EXISTS "Policies" (tenant_id bigint, workspace_id bigint, name text)')
    conn.execute('TRUNCATE other.policies, "Policies"')
    for sql in ["INSERT INTO other.policies (tenant_id, workspace_id, name) VALUES (3, 1, 'decoy')",
                "INSERT INTO \"Policies\" (tenant_id, workspace_id, name) VALUES (3, 1, 'decoy')",
                "UPDATE tenants SET workspace_id = 1 WHERE id = 3"]:
        out, d = simple(conn, sql)
        assert d["action"] == "pass" and d["events"] == [] and out.ok, (sql, out.message)
    assert rows(db, "SELECT tenant_id, workspace_id FROM other.policies") == [(3, 1)]
    assert rows(db, 'SELECT tenant_id, workspace_id FROM "Policies"') == [(3, 1)]
    # The tenant moved (allowed): new rows follow it.
    out, d = simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (3, 'after-move')")
    assert out.ok
    assert rows(db, "SELECT workspace_id FROM policies") == [(1,)]


def test_observe_mode_changes_nothing(db, conn):
    out, d = simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (3, 'observed')", ["--mode", "observe"])
    assert d["action"] == "pass" and "observed" in d["flags"]
    assert [e["rule"] for e in d["events"]] == ["none", "R1"]
    assert out.ok
    assert rows(db, "SELECT tenant_id, workspace_id FROM policies") == [(3, None)]


def test_rejections_abort_like_server_errors(db, conn):
    """Earlier statements of the simple Query run, then the transaction aborts."""
    conn.execute("BEGIN")
    out, d = simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (3, 'first'); "
                          "INSERT INTO policies (name) VALUES ('no tenant'); "
                          "INSERT INTO policies (tenant_id, name) VALUES (4, 'never')")
    assert d["action"] == "reject" and out.sqlstate == "42703" and "tenantguard:refused" in out.message
    res = Outcome(conn.pgconn.exec_(b"SELECT 1"))
    assert res.sqlstate == "25P02"          # in failed transaction block
    conn.execute("ROLLBACK")
    assert rows(db, "SELECT count(*) FROM policies") == [(0,)]


def test_copy_from_refused(db, conn):
    send, d = decided("COPY policies (tenant_id, name) FROM STDIN")
    assert d["action"] == "reject" and d["sqlstate"] == "0A000" and "use INSERT" in d["message"]


def test_positional_insert_with_catalog_and_layout_guard(db, conn):
    cols = rows(db, "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute "
                    "WHERE attrelid = 'public.policies'::regclass AND attnum > 0 AND NOT attisdropped")[0][0]
    cat = ["--catalog", "policies=" + cols]
    out, d = simple(conn, "INSERT INTO policies VALUES (DEFAULT, 3, 'positional')", cat)
    assert d["action"] == "replace" and out.ok, out.message
    assert rows(db, "SELECT tenant_id, workspace_id, name FROM policies") == [(3, 2, "positional")]
    # The catalog facts go stale (a column dropped and added back moves it to
    # the end): the statement rewritten from them must fail, not misplace values.
    conn.execute("BEGIN")
    conn.execute("ALTER TABLE policies DROP COLUMN name")
    conn.execute("ALTER TABLE policies ADD COLUMN name text NOT NULL DEFAULT 'n'")
    out, d = simple(conn, "INSERT INTO policies VALUES (DEFAULT, 3, 'stale')", cat)
    assert out.sqlstate == "0A000" and out.constraint == "tenantguard_layout", out.message
    conn.execute("ROLLBACK")


def test_unparsable_refused_but_server_syntax_error_elsewhere(db, conn):
    _, d = decided("INSERT INTO policies VALUES (")
    assert d["action"] == "reject" and d["sqlstate"] == "0A000"
    _, d = decided("SELEC 1")
    assert d["action"] == "pass" and "prefiltered" in d["flags"]


# ----------------------------------------------------------- transparency

DESCRIBE_CASES = [
    "INSERT INTO policies (tenant_id, name) VALUES ($1, $2)",
    "INSERT INTO policies (tenant_id, name) VALUES ($1, $2), ($3, $4) RETURNING *",
    "INSERT INTO policies (tenant_id, workspace_id, name) VALUES ($1, $2, $3) RETURNING id, workspace_id",
    "INSERT INTO policies (tenant_id, name) SELECT $1, $2 RETURNING tenant_id",
    "INSERT INTO policies (tenant_id, name, settings) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE "
    "SET workspace_id = EXCLUDED.workspace_id, tenant_id = $1",
    "UPDATE policies SET tenant_id = $1, workspace_id = $2, name = $3 WHERE id = $4 RETURNING *",
    "UPDATE policies SET (tenant_id, workspace_id) = ($1, $2) WHERE id = $3",
    "UPDATE policies p SET workspace_id = t.workspace_id FROM tenants t WHERE t.id = p.tenant_id AND t.id = $1",
    "INSERT INTO audit_logs (tenant_id, workspace_id, action, context) VALUES ($1, $2, $3, $4)",
    "MERGE INTO policies p USING (SELECT $1::bigint AS id) s ON p.id = s.id WHEN MATCHED THEN UPDATE "
    "SET workspace_id = $2 WHEN NOT MATCHED THEN INSERT (tenant_id, name) VALUES ($3, $4)",
    "WITH x AS (INSERT INTO policies (tenant_id, name) VALUES ($1, $2) RETURNING *) SELECT id, workspace_id FROM x",
]


def describe(conn, sql):
    pg = conn.pgconn
    r = pg.prepare(b"", sql.encode())
    assert r.status == pq.ExecStatus.COMMAND_OK, r.error_message
    d = pg.describe_prepared(b"")
    return ([d.param_type(i) for i in range(d.nparams)],
            [(d.fname(i), d.ftype(i), d.fmod(i)) for i in range(d.nfields)])


@pytest.mark.parametrize("sql", DESCRIBE_CASES)
def test_describe_same_as_original(db, conn, sql):
    send, d = decided(sql, extended=True)
    assert d["action"] == "replace", d
    assert describe(conn, send) == describe(conn, sql)


def test_sql_prepare_parameter_types_same(db, conn):
    for i, sql in enumerate(DESCRIBE_CASES[:8]):
        conn.execute(f"PREPARE o{i} AS {sql}")
        send, d = decided(f"PREPARE r{i} AS {sql}")
        assert d["action"] == "replace"
        conn.execute(send)
        types = conn.execute("SELECT name, parameter_types::text FROM pg_prepared_statements "
                             f"WHERE name IN ('o{i}', 'r{i}') ORDER BY name").fetchall()
        assert types[0][1] == types[1][1], (sql, types)
