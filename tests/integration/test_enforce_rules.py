"""Rules R1-R6 x statement forms, enforced through the real proxy.

Every statement goes through tenantguard in enforce mode (psycopg 3's pgconn:
simple Query unless said otherwise, so the client's text is what the proxy
decides) and every test asserts the SQLSTATE, the message and the rows as
stored, read back DIRECTLY on PostgreSQL.

Data set (tgtest.EnforceDb.reset): workspaces 1, 2, 3; tenant 3 in workspace
2, tenant 4 in 1, tenant 5 in none, tenant 6 in 3.
"""
import os
import subprocess

import psycopg
import pytest

import tgtest
from tgtest import simple, simple_all, extended

R2 = "tenantguard: workspace_id {w} does not match tenant {t} (workspace {tw}) on {tbl} (R2)"
R3_MISSING = "tenantguard: tenant {t} does not exist (R3) on {tbl}"
R3_NOWS = "tenantguard: tenant {t} has no workspace (R3) on {tbl}"
R3_NULL = "tenantguard: tenant is NULL (R3) on {tbl}"
R4 = "tenantguard: tenant_id of {tbl} cannot change from {a} to {b} (R4)"
R5 = "tenantguard: workspace_id {w} does not match tenant {t} (workspace {tw}) on update of {tbl} (R5)"
R6 = "tenantguard: workspace_id {w} does not match tenant {t} (workspace {tw}) on audit_logs (R6)"
R6_MISSING = "tenantguard: tenant {t} does not exist (R6) on audit_logs"


@pytest.fixture
def conn(eproxy, data):
    c = psycopg.connect(eproxy.dsn(db=data.name), autocommit=True)
    yield c
    c.close()


def policies(db):
    return db.rows("SELECT id, tenant_id, workspace_id, name FROM policies ORDER BY id")


def ok(out):
    assert out.ok, out
    return out


def rejected(out, sqlstate, message):
    assert (out.sqlstate, out.message) == (sqlstate, message), out
    assert out.severity == "ERROR"


@pytest.fixture
def legacy(conn, data):
    """Rows as they are before the backfill (workspace_id NULL), written directly."""
    data.execute("INSERT INTO policies (id, tenant_id, name) VALUES (1, 3, 'a'), (2, 4, 'b'), (3, 3, 'c')")
    data.execute("SELECT setval('policies_id_seq', 100)")
    return conn


# ------------------------------------------------------------------ R1 derive

def test_r1_single_and_multi_row_values(conn, data):
    ok(simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (3, 'one')"))
    ok(simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (4, 'two'), (3, 'three'), (6, 'four')"))
    assert policies(data) == [(1, 3, 2, "one"), (2, 4, 1, "two"), (3, 3, 2, "three"), (4, 6, 3, "four")]


def test_r1_large_multi_row_values(conn, data):
    rows = ", ".join(f"({[3, 4, 6][i % 3]}, 'bulk-{i}')" for i in range(3000))
    assert ok(simple(conn, f"INSERT INTO policies (tenant_id, name) VALUES {rows}")).tag == "INSERT 0 3000"
    got = data.rows("SELECT tenant_id, workspace_id, count(*) FROM policies GROUP BY 1, 2 ORDER BY 1")
    assert got == [(3, 2, 1000), (4, 1, 1000), (6, 3, 1000)]


def test_r1_returning_shows_the_derived_workspace(conn, data):
    out = ok(simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (4, 'r'), (3, 's') "
                          "RETURNING id, tenant_id, workspace_id, name"))
    assert out.rows == [["1", "4", "1", "r"], ["2", "3", "2", "s"]]
    out = ok(simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (6, 'star') RETURNING *"))
    assert out.rows[0][1] == "6" and out.rows[0][-1] == "3"
    assert policies(data) == [(1, 4, 1, "r"), (2, 3, 2, "s"), (3, 6, 3, "star")]


def test_r1_every_watched_table(conn, data):
    """Each of the twelve tenant-owned tables gets its tenant's workspace."""
    stmts = [
        "INSERT INTO policies (id, tenant_id, name) VALUES (1, 3, 'p')",
        "INSERT INTO policy_versions (tenant_id, policy_id, version) VALUES (3, 1, 1)",
        "INSERT INTO backup_sets (id, tenant_id, name) VALUES (1, 4, 'b')",
        "INSERT INTO backup_items (tenant_id, backup_set_id, policy_id) VALUES (4, 1, 1)",
        "INSERT INTO restore_runs (tenant_id, backup_set_id) VALUES (6, 1)",
        "INSERT INTO backup_schedules (tenant_id, name) VALUES (3, 's')",
        "INSERT INTO inventory_items (id, tenant_id, external_id) VALUES (1, 4, 'x1'), (2, 4, 'x2')",
        "INSERT INTO inventory_links (tenant_id, source_id, target_id) VALUES (4, 1, 2)",
        "INSERT INTO entra_groups (tenant_id, external_id, display_name) VALUES (6, 'g', 'G')",
        "INSERT INTO findings (tenant_id, title) VALUES (3, 'f')",
        "INSERT INTO entra_role_definitions (tenant_id, external_id, display_name) VALUES (4, 'r', 'R')",
        "INSERT INTO tenant_permissions (tenant_id, permission) VALUES (6, 'perm')",
    ]
    for s in stmts:
        ok(simple(conn, s))
    for t in tgtest.OWNED_TABLES:
        got = data.rows(f"SELECT tenant_id, workspace_id FROM {t}")
        assert got and all(ws == {3: 2, 4: 1, 6: 3}[tid] for tid, ws in got), (t, got)


def test_r1_default_values_refused_r3(conn, data):
    rejected(simple(conn, "INSERT INTO policies DEFAULT VALUES"), "42501",
             "tenantguard: INSERT ... DEFAULT VALUES into policies does not set tenant_id: no tenant to derive "
             "the workspace from (R3)")
    assert policies(data) == []


def test_r1_insert_select_union_generate_series(conn, data):
    ok(simple(conn, "INSERT INTO policies (tenant_id, name) SELECT id, 'sel' FROM tenants WHERE id IN (3, 4) "
                    "ORDER BY id"))
    ok(simple(conn, "INSERT INTO policies (tenant_id, name) SELECT 6, 'u1'::text UNION ALL SELECT 4, 'u2'"))
    ok(simple(conn, "INSERT INTO policies (tenant_id, name) SELECT g, 'gs' FROM generate_series(3, 4) g"))
    ok(simple(conn, "INSERT INTO policies (tenant_id, name) SELECT generate_series(3, 4), 'srf'::text"))
    assert [r[1:] for r in policies(data)] == [
        (3, 2, "sel"), (4, 1, "sel"), (6, 3, "u1"), (4, 1, "u2"), (3, 2, "gs"), (4, 1, "gs"),
        (3, 2, "srf"), (4, 1, "srf")]


def test_r1_insert_select_with_unresolvable_tenant_stores_nothing(conn, data):
    rejected(simple(conn, "INSERT INTO policies (tenant_id, name) SELECT id, 'all' FROM tenants ORDER BY id"),
             "42501", R3_NOWS.format(t=5, tbl="policies"))
    assert policies(data) == []


def test_r1_on_conflict_do_nothing(conn, data):
    ok(simple(conn, "INSERT INTO policies (id, tenant_id, name) VALUES (1, 3, 'first') ON CONFLICT DO NOTHING"))
    out = ok(simple(conn, "INSERT INTO policies (id, tenant_id, name) VALUES (1, 4, 'dup'), (2, 4, 'new') "
                          "ON CONFLICT (id) DO NOTHING"))
    assert out.tag == "INSERT 0 1"
    assert policies(data) == [(1, 3, 2, "first"), (2, 4, 1, "new")]


def test_r1_on_conflict_do_update(legacy, data):
    conn = legacy
    # no conflict: derived; conflict on a row of the same tenant: EXCLUDED.workspace_id is the derived one
    ok(simple(conn, "INSERT INTO policies (id, tenant_id, name) VALUES (50, 6, 'new'), (1, 3, 'upd') "
                    "ON CONFLICT (id) DO UPDATE SET workspace_id = EXCLUDED.workspace_id, name = EXCLUDED.name"))
    assert policies(data) == [(1, 3, 2, "upd"), (2, 4, None, "b"), (3, 3, None, "c"), (50, 6, 3, "new")]
    # conflict with a row of another tenant: EXCLUDED.workspace_id is tenant 3's (2), the row's is 1: R5
    rejected(simple(conn, "INSERT INTO policies (id, tenant_id, name) VALUES (2, 3, 'x') ON CONFLICT (id) "
                          "DO UPDATE SET workspace_id = EXCLUDED.workspace_id"),
             "42501", R5.format(w=2, t=4, tw=1, tbl="policies"))
    rejected(simple(conn, "INSERT INTO policies (id, tenant_id, name) VALUES (2, 3, 'x') ON CONFLICT (id) "
                          "DO UPDATE SET tenant_id = EXCLUDED.tenant_id"),
             "42501", R4.format(a=4, b=3, tbl="policies"))
    # ORMs' upsert writing every column back: same tenant, allowed
    ok(simple(conn, "INSERT INTO policies AS p (id, tenant_id, name) VALUES (3, 3, 'orm') ON CONFLICT (id) "
                    "DO UPDATE SET tenant_id = EXCLUDED.tenant_id, name = EXCLUDED.name, "
                    "workspace_id = EXCLUDED.workspace_id RETURNING p.workspace_id"))
    assert policies(data) == [(1, 3, 2, "upd"), (2, 4, None, "b"), (3, 3, 2, "orm"), (50, 6, 3, "new")]


def test_r1_writable_ctes(conn, data):
    out = ok(simple(conn, "WITH x AS (INSERT INTO policies (tenant_id, name) VALUES (4, 'cte') RETURNING id, "
                          "workspace_id) SELECT workspace_id FROM x"))
    assert out.rows == [["1"]]
    ok(simple(conn, "WITH a AS (INSERT INTO policies (tenant_id, name) VALUES (3, 'a') RETURNING tenant_id), "
                    "b AS (INSERT INTO findings (tenant_id, title) SELECT tenant_id, 'from-cte' FROM a "
                    "RETURNING 1) SELECT count(*) FROM b"))
    ok(simple(conn, "WITH s AS (SELECT 6 AS t) INSERT INTO policies (tenant_id, name) SELECT t, 'with-select' FROM s"))
    assert [r[1:] for r in policies(data)] == [(4, 1, "cte"), (3, 2, "a"), (6, 3, "with-select")]
    assert data.rows("SELECT tenant_id, workspace_id, title FROM findings") == [(3, 2, "from-cte")]
    rejected(simple(conn, "WITH x AS (INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 3, 'bad') "
                          "RETURNING id) SELECT * FROM x"),
             "42501", R2.format(w=3, t=3, tw=2, tbl="policies"))
    assert len(policies(data)) == 3


def test_r1_merge_insert_action(conn, data):
    ok(simple(conn, "MERGE INTO policies p USING (VALUES (10, 3, 'm1'), (11, 4, 'm2')) s(id, t, n) ON p.id = s.id "
                    "WHEN NOT MATCHED THEN INSERT (id, tenant_id, name) VALUES (s.id, s.t, s.n)"))
    assert policies(data) == [(10, 3, 2, "m1"), (11, 4, 1, "m2")]
    rejected(simple(conn, "MERGE INTO policies p USING (VALUES (12, 9)) s(id, t) ON p.id = s.id "
                          "WHEN NOT MATCHED THEN INSERT (id, tenant_id, name) VALUES (s.id, s.t, 'ghost')"),
             "42501", R3_MISSING.format(t=9, tbl="policies"))
    rejected(simple(conn, "MERGE INTO policies p USING (VALUES (12, 3)) s(id, t) ON p.id = s.id "
                          "WHEN NOT MATCHED THEN INSERT (id, tenant_id, workspace_id, name) VALUES (s.id, s.t, 1, 'x')"),
             "42501", R2.format(w=1, t=3, tw=2, tbl="policies"))
    assert len(policies(data)) == 2


def test_r1_explain_analyze(conn, data):
    out = ok(simple(conn, "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
                          "INSERT INTO policies (tenant_id, name) VALUES (4, 'explained')"))
    assert out.rows and "Insert on policies" in out.rows[0][0]
    rejected(simple(conn, "EXPLAIN ANALYZE INSERT INTO policies (tenant_id, workspace_id, name) VALUES (4, 2, 'x')"),
             "42501", R2.format(w=2, t=4, tw=1, tbl="policies"))
    # EXPLAIN without ANALYZE runs nothing: passed as sent
    ok(simple(conn, "EXPLAIN INSERT INTO policies (tenant_id, workspace_id, name) VALUES (4, 2, 'plan only')"))
    assert policies(data) == [(1, 4, 1, "explained")]


def test_r1_sql_prepare_execute(conn, data):
    ok(simple(conn, "PREPARE ins (bigint, text) AS INSERT INTO policies (tenant_id, name) VALUES ($1, $2) "
                    "RETURNING workspace_id"))
    assert ok(simple(conn, "EXECUTE ins (3, 'e1')")).rows == [["2"]]
    assert ok(simple(conn, "EXECUTE ins(4, 'e2')")).rows == [["1"]]
    rejected(simple(conn, "EXECUTE ins (9, 'e3')"), "42501", R3_MISSING.format(t=9, tbl="policies"))
    ok(simple(conn, "PREPARE untyped AS INSERT INTO policies (tenant_id, workspace_id, name) VALUES ($1, $2, $3)"))
    rejected(simple(conn, "EXECUTE untyped (6, 1, 'bad')"), "42501", R2.format(w=1, t=6, tw=3, tbl="policies"))
    ok(simple(conn, "EXECUTE untyped (6, 3, 'good')"))
    ok(simple(conn, "DEALLOCATE ALL"))
    assert [r[1:] for r in policies(data)] == [(3, 2, "e1"), (4, 1, "e2"), (6, 3, "good")]


def test_r1_tenant_expression_evaluated_once(conn, data):
    """A volatile tenant expression must not be evaluated twice (once for the
    row, once for the derivation): the row and its workspace must agree."""
    ok(simple(conn, "CREATE TEMP SEQUENCE flip START 3 INCREMENT 1 MAXVALUE 4 CYCLE MINVALUE 3"))
    for _ in range(4):
        out = simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (nextval('flip'), 'volatile')")
        assert out.ok or out.sqlstate in ("0A000", "42501"), out
    for _, tid, ws, _ in policies(data):
        assert ws == {3: 2, 4: 1}[tid]


# ------------------------------------------------------------------ R2 / R3

@pytest.mark.parametrize("ws,good", [(2, True), (1, False), (3, False), ("NULL", False)])
def test_r2_explicit_workspace(conn, data, ws, good):
    out = simple(conn, f"INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, {ws}, 'r2')")
    if good:
        ok(out)
        assert policies(data) == [(1, 3, 2, "r2")]
    else:
        rejected(out, "42501", R2.format(w=ws, t=3, tw=2, tbl="policies"))
        assert policies(data) == []


def test_r2_multi_row_one_bad_row_stores_nothing(conn, data):
    rejected(simple(conn, "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 2, 'ok'), (4, 2, 'bad'), "
                          "(6, 3, 'ok too')"),
             "42501", R2.format(w=2, t=4, tw=1, tbl="policies"))
    assert policies(data) == []


def test_r2_insert_select_with_workspace(conn, data):
    ok(simple(conn, "INSERT INTO policies (tenant_id, workspace_id, name) SELECT id, workspace_id, 'copy' "
                    "FROM tenants WHERE id IN (3, 4, 6)"))
    rejected(simple(conn, "INSERT INTO policies (tenant_id, workspace_id, name) SELECT id, 1, 'all-in-1' "
                          "FROM tenants WHERE id IN (4, 3) ORDER BY id"),
             "42501", R2.format(w=1, t=3, tw=2, tbl="policies"))
    assert sorted(r[1:3] for r in policies(data)) == [(3, 2), (4, 1), (6, 3)]


@pytest.mark.parametrize("sql,message", [
    ("INSERT INTO policies (tenant_id, name) VALUES (9, 'x')", R3_MISSING.format(t=9, tbl="policies")),
    ("INSERT INTO policies (tenant_id, name) VALUES (5, 'x')", R3_NOWS.format(t=5, tbl="policies")),
    ("INSERT INTO policies (tenant_id, name) VALUES (NULL, 'x')", R3_NULL.format(tbl="policies")),
    ("INSERT INTO policies (tenant_id, workspace_id, name) VALUES (9, 1, 'x')", R3_MISSING.format(t=9, tbl="policies")),
    ("INSERT INTO policies (tenant_id, name) VALUES (3, 'ok'), (5, 'x')", R3_NOWS.format(t=5, tbl="policies")),
    ("INSERT INTO policies (name) VALUES ('x')",
     "tenantguard: INSERT into policies does not set tenant_id: no tenant to derive the workspace from (R3)"),
])
def test_r3_unresolvable_tenant(conn, data, sql, message):
    rejected(simple(conn, sql), "42501", message)
    assert policies(data) == []


# ------------------------------------------------------------------ R4 / R5

def test_r4_tenant_change_rejected_same_value_allowed(legacy, data):
    conn = legacy
    rejected(simple(conn, "UPDATE policies SET tenant_id = 4 WHERE id = 1"), "42501", R4.format(a=3, b=4, tbl="policies"))
    rejected(simple(conn, "UPDATE policies SET tenant_id = NULL WHERE id = 1"), "42501",
             R4.format(a=3, b="NULL", tbl="policies"))
    rejected(simple(conn, "UPDATE policies SET tenant_id = tenant_id + 1"), "42501",
             R4.format(a=3, b=4, tbl="policies"))
    # ORMs write every column back: the same tenant is fine, on legacy rows too
    ok(simple(conn, "UPDATE policies SET tenant_id = 3, name = 'same' WHERE id = 1"))
    ok(simple(conn, "UPDATE policies SET tenant_id = tenant_id, name = name || '!' WHERE id IN (2, 3)"))
    assert policies(data) == [(1, 3, None, "same"), (2, 4, None, "b!"), (3, 3, None, "c!")]


@pytest.mark.parametrize("setclause", [
    "(tenant_id, name) = (4, 'row')",
    "(name, tenant_id) = ROW('row', 4)",
    "(tenant_id, name) = (SELECT 4, 'sub')",
    "(name, tenant_id) = (SELECT 'sub', id FROM tenants WHERE id = 4)",
])
def test_r4_row_constructor_set(legacy, data, setclause):
    rejected(simple(legacy, f"UPDATE policies SET {setclause} WHERE id = 1"), "42501",
             R4.format(a=3, b=4, tbl="policies"))
    assert policies(data)[0] == (1, 3, None, "a")


def test_r4_update_from_and_current_of(legacy, data):
    conn = legacy
    rejected(simple(conn, "UPDATE policies p SET tenant_id = t.id FROM tenants t WHERE t.id = 4 AND p.id = 1"),
             "42501", R4.format(a=3, b=4, tbl="policies"))
    ok(simple(conn, "BEGIN"))
    ok(simple(conn, "DECLARE cur CURSOR FOR SELECT * FROM policies WHERE id = 3 FOR UPDATE"))
    assert ok(simple(conn, "FETCH cur")).rows[0][0] == "3"
    rejected(simple(conn, "UPDATE policies SET tenant_id = 4 WHERE CURRENT OF cur"), "42501",
             R4.format(a=3, b=4, tbl="policies"))
    assert simple(conn, "SELECT 1").sqlstate == "25P02"
    ok(simple(conn, "ROLLBACK"))
    ok(simple(conn, "BEGIN"))
    ok(simple(conn, "DECLARE cur CURSOR FOR SELECT * FROM policies WHERE id = 3 FOR UPDATE"))
    ok(simple(conn, "FETCH cur"))
    ok(simple(conn, "UPDATE policies SET workspace_id = 2, name = 'cursor' WHERE CURRENT OF cur"))
    ok(simple(conn, "FETCH cur"))
    ok(simple(conn, "COMMIT"))
    assert policies(data) == [(1, 3, None, "a"), (2, 4, None, "b"), (3, 3, 2, "cursor")]


def test_r4_writable_cte_and_merge_update(legacy, data):
    conn = legacy
    rejected(simple(conn, "WITH u AS (UPDATE policies SET tenant_id = 6 WHERE id = 2 RETURNING 1) "
                          "SELECT count(*) FROM u"), "42501", R4.format(a=4, b=6, tbl="policies"))
    rejected(simple(conn, "MERGE INTO policies p USING (VALUES (1, 4)) s(id, t) ON p.id = s.id "
                          "WHEN MATCHED THEN UPDATE SET tenant_id = s.t"), "42501", R4.format(a=3, b=4, tbl="policies"))
    ok(simple(conn, "MERGE INTO policies p USING (VALUES (1, 3, 'merged')) s(id, t, n) ON p.id = s.id "
                    "WHEN MATCHED THEN UPDATE SET tenant_id = s.t, name = s.n"))
    assert policies(data) == [(1, 3, None, "merged"), (2, 4, None, "b"), (3, 3, None, "c")]


def test_r5_backfill_statement_allowed(legacy, data):
    ok(simple(legacy, "UPDATE policies p SET workspace_id = t.workspace_id FROM tenants t "
                      "WHERE t.id = p.tenant_id AND p.workspace_id IS NULL"))
    assert policies(data) == [(1, 3, 2, "a"), (2, 4, 1, "b"), (3, 3, 2, "c")]
    ok(simple(legacy, "UPDATE policies SET workspace_id = tenants.workspace_id FROM tenants "
                      "WHERE tenants.id = policies.tenant_id"))


@pytest.mark.parametrize("sql,message", [
    ("UPDATE policies SET workspace_id = 1 WHERE id = 1", R5.format(w=1, t=3, tw=2, tbl="policies")),
    ("UPDATE policies SET workspace_id = NULL WHERE id = 2", R5.format(w="NULL", t=4, tw=1, tbl="policies")),
    ("UPDATE policies SET workspace_id = 2", R5.format(w=2, t=4, tw=1, tbl="policies")),
    ("UPDATE policies SET (name, workspace_id) = ('x', 3) WHERE id = 1", R5.format(w=3, t=3, tw=2, tbl="policies")),
    ("UPDATE policies SET (name, workspace_id) = ROW('x', 3) WHERE id = 1", R5.format(w=3, t=3, tw=2, tbl="policies")),
    ("UPDATE policies SET (workspace_id, name) = (SELECT 1, 'x') WHERE id = 1",
     R5.format(w=1, t=3, tw=2, tbl="policies")),
    # a FROM item aliased "tenants" that is not the tenants table
    ("UPDATE policies p SET workspace_id = tenants.workspace_id FROM (VALUES (3, 1)) AS tenants(id, workspace_id) "
     "WHERE p.tenant_id = tenants.id", R5.format(w=1, t=3, tw=2, tbl="policies")),
    ("UPDATE policies SET workspace_id = tenants.workspace_id FROM tenants WHERE tenants.id = 6 AND policies.id = 1",
     R5.format(w=3, t=3, tw=2, tbl="policies")),
    ("WITH u AS (UPDATE policies SET workspace_id = 3 WHERE id = 1 RETURNING 1) SELECT * FROM u",
     R5.format(w=3, t=3, tw=2, tbl="policies")),
    ("MERGE INTO policies p USING (VALUES (1, 1)) s(id, w) ON p.id = s.id WHEN MATCHED THEN UPDATE SET workspace_id = s.w",
     R5.format(w=1, t=3, tw=2, tbl="policies")),
    ("EXPLAIN ANALYZE UPDATE policies SET workspace_id = 1 WHERE id = 3", R5.format(w=1, t=3, tw=2, tbl="policies")),
])
def test_r5_wrong_workspace_rejected(legacy, data, sql, message):
    rejected(simple(legacy, sql), "42501", message)
    assert policies(data) == [(1, 3, None, "a"), (2, 4, None, "b"), (3, 3, None, "c")]


def test_r5_right_workspace_forms(legacy, data):
    conn = legacy
    ok(simple(conn, "UPDATE policies SET (name, workspace_id) = ROW('row', 2) WHERE id = 1"))
    ok(simple(conn, "UPDATE policies SET (workspace_id, name) = (SELECT workspace_id, 'sub' FROM tenants WHERE id = 4) "
                    "WHERE id = 2"))
    ok(simple(conn, "MERGE INTO policies p USING (VALUES (3, 2)) s(id, w) ON p.id = s.id "
                    "WHEN MATCHED THEN UPDATE SET workspace_id = s.w"))
    assert policies(data) == [(1, 3, 2, "row"), (2, 4, 1, "sub"), (3, 3, 2, "c")]


# ------------------------------------------------------------------ R6 audit

def test_r6_audit_rows(conn, data):
    ok(simple(conn, "INSERT INTO audit_logs (tenant_id, action) VALUES (3, 'tenant'), (NULL, 'platform')"))
    ok(simple(conn, "INSERT INTO audit_logs (workspace_id, action) VALUES (1, 'workspace-only')"))
    ok(simple(conn, "INSERT INTO audit_logs (tenant_id, workspace_id, action) VALUES (4, 1, 'ok'), (NULL, 2, 'ws')"))
    rejected(simple(conn, "INSERT INTO audit_logs (tenant_id, workspace_id, action) VALUES (4, 2, 'bad')"),
             "42501", R6.format(w=2, t=4, tw=1))
    rejected(simple(conn, "INSERT INTO audit_logs (tenant_id, action) VALUES (9, 'ghost')"),
             "42501", R6_MISSING.format(t=9))
    rejected(simple(conn, "UPDATE audit_logs SET tenant_id = 4 WHERE action = 'tenant'"),
             "42501", R6.format(w=2, t=4, tw=1))
    rejected(simple(conn, "UPDATE audit_logs SET workspace_id = 1 WHERE action = 'tenant'"),
             "42501", R6.format(w=1, t=3, tw=2))
    ok(simple(conn, "UPDATE audit_logs SET status = 'failed', workspace_id = 3 WHERE tenant_id IS NULL AND "
                    "action = 'platform'"))
    assert data.rows("SELECT tenant_id, workspace_id, action, status FROM audit_logs ORDER BY id") == [
        (3, 2, "tenant", "success"), (None, 3, "platform", "failed"), (None, 1, "workspace-only", "success"),
        (4, 1, "ok", "success"), (None, 2, "ws", "success")]


# ------------------------------------------------------------------ multi-statement, transactions

def test_multi_statement_static_rejection_in_the_middle(conn, data):
    """The statement before the rejected one ran (its CommandComplete reached the
    client) and was rolled back with the implicit transaction, as with a server error."""
    res = simple_all(conn, "INSERT INTO policies (tenant_id, name) VALUES (3, 'first'); "
                           "INSERT INTO policies (name) VALUES ('no tenant'); "
                           "INSERT INTO policies (tenant_id, name) VALUES (4, 'never')")
    assert [r.tag for r in res if r.ok] == ["INSERT 0 1"]
    rejected(res[-1], "42501",
             "tenantguard: INSERT into policies does not set tenant_id: no tenant to derive the workspace from (R3)")
    assert policies(data) == []


def test_multi_statement_runtime_rejection_in_the_middle(conn, data):
    res = simple_all(conn, "INSERT INTO policies (tenant_id, name) VALUES (3, 'first'); "
                           "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (4, 2, 'bad'); "
                           "INSERT INTO policies (tenant_id, name) VALUES (4, 'never')")
    assert [r.tag for r in res if r.ok] == ["INSERT 0 1"]
    rejected(res[-1], "42501", R2.format(w=2, t=4, tw=1, tbl="policies"))
    assert policies(data) == []


@pytest.mark.parametrize("bad", ["INSERT INTO policies (name) VALUES ('no tenant')",
                                 "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (4, 2, 'bad')",
                                 "COPY policies FROM STDIN"])
def test_rejection_aborts_the_transaction(conn, data, bad):
    ok(simple(conn, "BEGIN"))
    ok(simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (3, 'in-txn')"))
    out = simple(conn, bad)
    assert out.sqlstate in ("42501", "0A000"), out
    out = simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (3, 'after')")
    assert out.sqlstate == "25P02", out
    assert simple(conn, "SELECT 1").sqlstate == "25P02"
    assert ok(simple(conn, "COMMIT")).tag == "ROLLBACK"
    assert policies(data) == []
    ok(simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (3, 'next')"))
    assert [r[1:] for r in policies(data)] == [(3, 2, "next")]


def test_rejection_rolls_back_to_savepoint(conn, data):
    ok(simple(conn, "BEGIN; INSERT INTO policies (tenant_id, name) VALUES (3, 'kept'); SAVEPOINT s"))
    rejected(simple(conn, "INSERT INTO policies (name) VALUES ('x')"), "42501",
             "tenantguard: INSERT into policies does not set tenant_id: no tenant to derive the workspace from (R3)")
    ok(simple(conn, "ROLLBACK TO SAVEPOINT s"))
    ok(simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (4, 'after savepoint')"))
    ok(simple(conn, "COMMIT"))
    assert [r[1:] for r in policies(data)] == [(3, 2, "kept"), (4, 1, "after savepoint")]


# ------------------------------------------------------------------ COPY

@pytest.mark.parametrize("opts", ["", " WITH (FORMAT csv)", " WITH (FORMAT binary)", " (tenant_id, name)"])
def test_copy_from_stdin_refused(conn, data, opts):
    sql = "COPY policies" + (opts if opts.startswith(" (") else "") + " FROM STDIN" + \
          ("" if opts.startswith(" (") else opts)
    rejected(simple(conn, sql), "0A000",
             "tenantguard: COPY ... FROM into policies is refused in enforce mode; use INSERT (or the backfill path "
             "for bulk loads)")
    # the session is usable afterwards (it never entered COPY mode)
    ok(simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (3, 'after copy')"))
    assert [r[1:] for r in policies(data)] == [(3, 2, "after copy")]


def test_copy_psycopg_and_psql(eproxy, data):
    with psycopg.connect(eproxy.dsn(db=data.name), autocommit=True) as c:
        with pytest.raises(psycopg.errors.FeatureNotSupported) as ei:
            with c.cursor().copy("COPY policies (tenant_id, name) FROM STDIN") as cp:
                cp.write_row((3, "copied"))
        assert "COPY ... FROM into policies is refused" in str(ei.value)
        # COPY TO and COPY of an unwatched table work
        with c.cursor().copy("COPY workspaces (id, name) FROM STDIN") as cp:
            cp.write_row((9, "w9"))
    env = dict(os.environ, PGPASSWORD=tgtest.PASSWORDS["app"])
    r = subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose", eproxy.dsn(db=data.name),
                        "-c", "\\copy policies (tenant_id, name) FROM stdin"],
                       input="3\tx\n\\.\n", capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode != 0
    assert "ERROR:  0A000: tenantguard: COPY ... FROM into policies is refused in enforce mode" in r.stderr
    assert policies(data) == []
    assert data.rows("SELECT id FROM workspaces WHERE id = 9") == [(9,)]


# ------------------------------------------------------------------ psql

PSQL_SCRIPT = r"""
\set VERBOSITY verbose
INSERT INTO policies (tenant_id, name) VALUES (3, 'psql-1'), (6, 'psql-2') RETURNING tenant_id, workspace_id;
INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 1, 'psql-bad');
INSERT INTO policies (tenant_id, name) VALUES (9, 'psql-ghost');
UPDATE policies SET tenant_id = 4 WHERE name = 'psql-1';
UPDATE policies SET workspace_id = 1 WHERE name = 'psql-1';
INSERT INTO audit_logs (tenant_id, action) VALUES (4, 'psql-audit') RETURNING workspace_id;
SELECT 1 \; INSERT INTO policies (tenant_id, name) VALUES (4, 'psql-3') \; SELECT 2;
"""


def test_psql_script(eproxy, data):
    env = dict(os.environ, PGPASSWORD=tgtest.PASSWORDS["app"])
    r = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=0", eproxy.dsn(db=data.name)],
                       input=PSQL_SCRIPT, capture_output=True, text=True, timeout=60, env=env)
    assert r.stdout.split() == ["3|2", "6|3", "1", "1", "2"], r.stdout
    errors = [line for line in r.stderr.splitlines() if line.startswith("ERROR:")]
    assert errors == [
        "ERROR:  42501: " + R2.format(w=1, t=3, tw=2, tbl="policies"),
        "ERROR:  42501: " + R3_MISSING.format(t=9, tbl="policies"),
        "ERROR:  42501: " + R4.format(a=3, b=4, tbl="policies"),
        "ERROR:  42501: " + R5.format(w=1, t=3, tw=2, tbl="policies"),
    ]
    assert sorted(r[1:] for r in policies(data)) == [(3, 2, "psql-1"), (4, 1, "psql-3"), (6, 3, "psql-2")]
    assert data.rows("SELECT tenant_id, workspace_id FROM audit_logs") == [(4, 1)]


# ------------------------------------------------------------------ positional INSERT, layout guard

LAYOUT_MSG = ("tenantguard: the columns of tenant_permissions changed since the INSERT without a column list was "
              "rewritten; name the columns")


def test_positional_insert_and_layout_guard(pg, eproxy):
    """Column order comes from the login probe's catalog; after ALTER TABLE in
    another session the runtime guard fails closed; a new session works."""
    data = tgtest.EnforceDb(pg, "tg_enforce_layout")     # its own: the layout changes for good
    data.reset()
    a = psycopg.connect(eproxy.dsn(db=data.name), autocommit=True)
    try:
        # id, tenant_id, permission, granted, checked_at, workspace_id
        ok(simple(a, "INSERT INTO tenant_permissions VALUES (DEFAULT, 3, 'p1')"))
        ok(simple(a, "INSERT INTO tenant_permissions VALUES (DEFAULT, 4, 'p2', true, NULL, 1)"))
        rejected(simple(a, "INSERT INTO tenant_permissions VALUES (DEFAULT, 4, 'p3', true, NULL, 2)"), "42501",
                 R2.format(w=2, t=4, tw=1, tbl="tenant_permissions"))
        assert data.rows("SELECT tenant_id, workspace_id, permission FROM tenant_permissions ORDER BY id") == [
            (3, 2, "p1"), (4, 1, "p2")]
        # another session moves a column to the end (drop and add back): same names, new order
        data.execute("ALTER TABLE tenant_permissions DROP COLUMN granted")
        data.execute("ALTER TABLE tenant_permissions ADD COLUMN granted boolean NOT NULL DEFAULT false")
        # now: id, tenant_id, permission, checked_at, workspace_id, granted
        rejected(simple(a, "INSERT INTO tenant_permissions VALUES (DEFAULT, 6, 'p3', true)"), "0A000", LAYOUT_MSG)
        rejected(simple(a, "INSERT INTO tenant_permissions VALUES (DEFAULT, 6, 'p3', true, NULL, 3)"), "0A000",
                 LAYOUT_MSG)
        # a prefix that did not move still binds right
        ok(simple(a, "INSERT INTO tenant_permissions VALUES (DEFAULT, 6, 'p4')"))
        # ... a dropped column the old layout names: the statement fails (guard or server), nothing stored
        data.execute("ALTER TABLE tenant_permissions DROP COLUMN permission")
        out = simple(a, "INSERT INTO tenant_permissions VALUES (DEFAULT, 6, 'p5')")
        assert (out.sqlstate, out.message) in [("0A000", LAYOUT_MSG), (
            "42703", 'column "permission" of relation "tenant_permissions" does not exist')], out
        # now: id, tenant_id, checked_at, workspace_id, granted -- a new session learns it at login
        b = psycopg.connect(eproxy.dsn(db=data.name), autocommit=True)
        try:
            ok(simple(b, "INSERT INTO tenant_permissions VALUES (DEFAULT, 4, NULL)"))
            ok(simple(b, "INSERT INTO tenant_permissions VALUES (DEFAULT, 3, NULL, 2, true)"))
            rejected(simple(b, "INSERT INTO tenant_permissions VALUES (DEFAULT, 3, NULL, 3, true)"), "42501",
                     R2.format(w=3, t=3, tw=2, tbl="tenant_permissions"))
            # a column added at the end: the old width keeps binding right, the new width is known
            data.execute("ALTER TABLE tenant_permissions ADD COLUMN note text")
            ok(simple(b, "INSERT INTO tenant_permissions VALUES (DEFAULT, 6, NULL, 3, true)"))
            out = simple(b, "INSERT INTO tenant_permissions VALUES (DEFAULT, 6, NULL, 3, true, 'note')")
            assert out.sqlstate == "0A000" and "name the columns" in out.message, out
        finally:
            b.close()
        assert data.rows("SELECT tenant_id, workspace_id, granted FROM tenant_permissions ORDER BY id") == [
            (3, 2, False), (4, 1, False), (6, 3, False), (4, 1, False), (3, 2, True), (6, 3, True)]
    finally:
        a.close()



def test_layout_cache_serves_logins_and_a_stale_one_fails_closed(pg, proxy_factory):
    """The column order learnt at one login serves the next logins to the database
    (layout_cache_ttl); after an ALTER TABLE a session with the cached, stale order
    never binds a row wrongly: the layout guard refuses its positional INSERT and the
    cache is dropped, so the next session learns the new order. ttl 0: every login asks."""
    data = tgtest.EnforceDb(pg, "tg_enforce_layout_cache")
    data.reset()
    proxy = proxy_factory({"mode": "enforce", "log_level": "debug", "layout_cache_ttl": 3600})

    def session():
        return psycopg.connect(proxy.dsn(db=data.name), autocommit=True)

    def probes():
        return [line for line in proxy.log().splitlines() if "login probe:" in line]

    with session() as a:
        ok(simple(a, "INSERT INTO tenant_permissions VALUES (DEFAULT, 3, 'p1')"))
    with session() as b:
        ok(simple(b, "INSERT INTO tenant_permissions VALUES (DEFAULT, 4, 'p2', true, NULL, 1)"))
    got = probes()
    assert len(got) == 2 and "(cached)" not in got[0] and "(cached)" in got[1], got
    # id, tenant_id, permission, granted, checked_at, workspace_id -> granted moves to the end
    data.execute("ALTER TABLE tenant_permissions DROP COLUMN granted")
    data.execute("ALTER TABLE tenant_permissions ADD COLUMN granted boolean NOT NULL DEFAULT false")
    with session() as c:   # logs in with the cached order, now stale
        # the old order names (id, tenant_id, permission, granted): the guard sees they moved
        rejected(simple(c, "INSERT INTO tenant_permissions VALUES (DEFAULT, 6, 'p3', true)"), "0A000", LAYOUT_MSG)
    with session() as d:   # the guard's failure dropped the entry: d asks the server
        ok(simple(d, "INSERT INTO tenant_permissions VALUES (DEFAULT, 6, 'p3', NULL, 3, true)"))
    got = probes()
    assert "(cached)" in got[2] and "(cached)" not in got[3], got
    assert data.rows("SELECT tenant_id, workspace_id, permission, granted FROM tenant_permissions ORDER BY id") == [
        (3, 2, "p1", False), (4, 1, "p2", False), (6, 3, "p3", True)]   # granted was dropped and added back

    proxy.reload({"layout_cache_ttl": 0})
    for _ in range(2):
        with session() as e:
            ok(simple(e, "INSERT INTO tenant_permissions VALUES (DEFAULT, 4, 'p4', NULL, 1)"))
    assert all("(cached)" not in line for line in probes()[4:]) and len(probes()) == 6, probes()

# ------------------------------------------------------------------ typing of the tenant value

def test_float_tenant_value_binds_the_stored_tenant(conn, data):
    import struct
    data.execute("INSERT INTO tenants (id, workspace_id, name) VALUES (9007199254740993, 2, 'attacker'), "
                 "(9007199254740992, 1, 'victim')")
    for ws in (1, 2):
        extended(conn, "INSERT INTO policies (tenant_id, workspace_id, name) VALUES ($1, $2, $3)",
                 [struct.pack("!d", 9007199254740992.0), str(ws).encode(), b"float"], types=[701, 20, 25],
                 formats=[1, 0, 0])
    got = data.rows("SELECT p.workspace_id, t.workspace_id FROM policies p JOIN tenants t ON t.id = p.tenant_id")
    assert got and all(a == b for a, b in got), got


def test_numeric_tenant_value_rounded_like_the_column(conn, data):
    ok(simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (3.4, 'rounded')"))
    assert policies(data) == [(1, 3, 2, "rounded")]


@pytest.mark.parametrize("proto", ["simple", "extended"])
@pytest.mark.parametrize("sql", ["INSERT INTO policies (tenant_id, name) VALUES ('3'::text, 'x')",
                                 "UPDATE policies SET tenant_id = '3'::text",
                                 "UPDATE policies SET tenant_id = now() WHERE id = 1",
                                 "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 'two'::text, 'x')"])
def test_type_errors_same_as_direct(conn, data, sql, proto):
    """A value of the wrong type meets tenantguard's helper calls first (42883 naming
    them); the client gets what PostgreSQL says for its own text."""
    run = simple if proto == "simple" else extended
    with data.direct() as d:
        want = run(d, sql)
    got = run(conn, sql)
    assert want.sqlstate == "42804", want
    assert (got.sqlstate, got.message) == (want.sqlstate, want.message)
    assert "tenantguard" not in got.message
    assert policies(data) == []


def test_positional_insert_select_star_message(conn, data):
    out = simple(conn, "INSERT INTO policies SELECT * FROM policies")
    assert out.sqlstate == "0A000" and "name the columns" in out.message, out
    assert "-1" not in out.message
