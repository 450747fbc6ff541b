"""The console steering enforcement on a phase-1 database (migrate --phase 1:
workspace columns and tenantguard's SQL helpers): SET mode per table and
RELOAD take effect for the next statement of an existing session, and
violation_audit writes each rejection into audit_logs."""
import itertools
import json

import psycopg
import pytest

import tgtest
from test_admin_common import ADMIN_USER, connect, console_proxy, ok, psql, q
from test_backfill_common import fresh_db

_n = itertools.count()
R2 = "tenantguard: workspace_id {w} does not match tenant {t} (workspace {tw}) on {table} (R2)"
SECRET = "Secret-Value-8731"


@pytest.fixture
def db(pg):
    """Workspaces 1, 2, 3; tenant 3 in workspace 2, 4 in 1, 5 in none; no rows elsewhere."""
    d = fresh_db(pg, f"adm_enf_{next(_n)}", seed=False)
    with d.conn() as c:
        c.execute("INSERT INTO workspaces (id, name) VALUES (1, 'w1'), (2, 'w2'), (3, 'w3')")
        c.execute("INSERT INTO tenants (id, workspace_id, name) VALUES (3, 2, 't3'), (4, 1, 't4'), (5, NULL, 't5')")
    return d


def app_conn(cp, db):
    return psycopg.connect(cp.dsn(db=db.name), autocommit=True)


def test_set_mode_for_table_applies_to_the_next_statement_of_a_session(proxy_factory, workdir, db):
    cp = console_proxy(proxy_factory, workdir, {"mode": "observe"})
    mismatch = "INSERT INTO {t} (tenant_id, workspace_id, {c}) VALUES (3, 1, 'x')"
    pol = mismatch.format(t="policies", c="name")
    fin = mismatch.format(t="findings", c="title")
    with app_conn(cp, db) as app, connect(cp) as c:
        app.execute(pol)                                   # observe: stored as sent
        ok(c, "SET mode = enforce FOR TABLE policies")
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            app.execute(pol)
        assert e.value.diag.message_primary == R2.format(w=1, t=3, tw=2, table="policies")
        assert app.execute("INSERT INTO policies (tenant_id, name) VALUES (4, 'derived') "
                           "RETURNING workspace_id").fetchone()[0] == 1
        app.execute(fin)                                   # findings is still observed
        # psql steers the same session's next statement
        psql(cp, "SET mode = enforce FOR TABLE public.findings")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute(fin)
        assert {r[0]: r[4] for r in ok(c, "SHOW POLICY").rows}["public.findings"] == "enforce"
        ok(c, "SET mode = default FOR TABLE policies")
        app.execute(pol)                                   # back to the config: observe
        ok(c, "SET mode = off")                            # every table
        app.execute(fin)
        assert {r[4] for r in ok(c, "SHOW POLICY").rows} == {"off"}
    assert db.q("SELECT tenant_id, workspace_id, name FROM policies ORDER BY id") == [
        (3, 1, "x"), (4, 1, "derived"), (3, 1, "x")]
    assert db.q("SELECT tenant_id, workspace_id FROM findings ORDER BY id") == [(3, 1), (3, 1)]
    stats = {(r[0], r[1]): r for r in psql(cp, "SHOW STATS").rows}
    assert int(stats[("public.policies", "R2")][5]) == 1          # rejected once
    log = cp.log()
    assert f"admin {ADMIN_USER}: SET mode = enforce FOR TABLE policies" in log
    assert f"admin {ADMIN_USER}: SET mode = off" in log


def test_reload_of_a_changed_watched_table_list(proxy_factory, workdir, db):
    cp = console_proxy(proxy_factory, workdir, {"mode": "enforce"}, "[policy]\ntables = policies\n")
    fin = "INSERT INTO findings (tenant_id, workspace_id, title) VALUES (3, 1, 'f')"
    with app_conn(cp, db) as app, connect(cp) as c:
        assert [r[0] for r in ok(c, "SHOW POLICY").rows] == ["public.policies", "public.audit_logs"]
        app.execute(fin)                                   # not watched: stored as sent
        cp.write_config(extra_sections="[policy]\ntables = policies, findings\n")
        assert ok(c, "RELOAD").tag == "RELOAD"
        assert [r[0] for r in ok(c, "SHOW POLICY").rows] == ["public.policies", "public.findings",
                                                             "public.audit_logs"]
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            app.execute(fin)                               # the same session, now watched
        assert "does not match tenant 3 (workspace 2)" in str(e.value)
        assert app.execute("INSERT INTO findings (tenant_id, title) VALUES (4, 'derived') "
                           "RETURNING workspace_id").fetchone()[0] == 1
        # and back: findings no longer watched
        cp.write_config(extra_sections="[policy]\ntables = policies\n")
        ok(c, "RELOAD")
        app.execute(fin)
    assert db.q("SELECT tenant_id, workspace_id, title FROM findings ORDER BY id") == [
        (3, 1, "f"), (4, 1, "derived"), (3, 1, "f")]
    assert cp.log().count(f"admin {ADMIN_USER}: RELOAD") == 2


# ---------------------------------------------------------------- violation_audit

def audit_rows(db):
    cols = ("tenant_id", "workspace_id", "actor", "action", "status", "resource_type", "resource_id", "context")
    rows = db.q(f"SELECT {', '.join(cols)} FROM audit_logs WHERE action = 'workspace_isolation.violation' "
                "ORDER BY id")
    return [dict(zip(cols, r)) for r in rows]


def test_violation_audit_rows_survive_the_rollback_and_carry_no_values(proxy_factory, workdir, db):
    cp = console_proxy(proxy_factory, workdir, {"mode": "enforce", "violation_audit": "on",
                                                "sidecar_dsn": db.dsn})
    with psycopg.connect(cp.dsn(db=db.name, application_name="audit-test-app")) as app:
        # R2 inside a transaction that is then rolled back
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute(f"INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 1, '{SECRET}')")
        app.rollback()
        # R3: a tenant without a workspace; R4: tenant_id changes
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute(f"INSERT INTO findings (tenant_id, title) VALUES (5, '{SECRET}')")
        app.rollback()
        app.execute("INSERT INTO backup_sets (tenant_id, name) VALUES (4, 'b')")
        app.commit()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("UPDATE backup_sets SET tenant_id = 3 WHERE name = 'b'")
        app.rollback()
        # a refusal the proxy decides itself (no server round trip for the check)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute(f"INSERT INTO policies (workspace_id, name) VALUES (1, '{SECRET}')")
        app.rollback()
        port = app.info.port
    rows = tgtest.wait_until(lambda: len(audit_rows(db)) >= 4 and audit_rows(db), 15, what="4 audit rows")
    assert len(rows) == 4
    assert {r["action"] for r in rows} == {"workspace_isolation.violation"}
    assert {r["status"] for r in rows} == {"denied"} and {r["actor"] for r in rows} == {"tenantguard"}
    r2, r3, r4, own = rows
    assert (r2["tenant_id"], r2["workspace_id"]) == (3, 2)         # the tenant and ITS workspace
    assert (r3["tenant_id"], r3["workspace_id"]) == (None, None)   # tenant 5 has no workspace
    assert (r4["tenant_id"], r4["workspace_id"]) == (4, 1)
    assert (own["tenant_id"], own["workspace_id"]) == (None, None)
    assert [r["context"]["rule"] for r in rows] == ["R2", "R3", "R4", "R3"]
    assert [r["resource_id"] for r in rows] == ["public.policies", "public.findings", "public.backup_sets",
                                                "public.policies"]
    for r in rows:
        ctx = r["context"]
        assert ctx["sqlstate"] == "42501" and ctx["table"] == r["resource_id"]
        assert ctx["application_name"] == "audit-test-app" and ctx["client_addr"] == "127.0.0.1"
        assert ctx["user"] == "app" and ctx["database"] == db.name and int(ctx["client_port"]) > 0
        assert len(ctx["fingerprint"]) == 16 and int(ctx["fingerprint"], 16) >= 0
        assert r["resource_type"] == "table"
    text = json.dumps([r["context"] for r in rows])
    assert SECRET not in text and "'b'" not in text
    assert port == cp.port
    # the rolled back statements stored nothing
    assert db.q("SELECT count(*) FROM policies")[0][0] == 0
    # SHOW STATS counts them
    with connect(cp) as c:
        total = ok(c, "SHOW STATS").dicts()[-1]
        assert total["audit_written"] == "4" and total["audit_dropped"] == "0"


def test_violation_audit_queue_full_drops_and_counts_without_blocking(proxy_factory, workdir, db, pg):
    """The writer cannot reach PostgreSQL (a closed port): entries queue up to
    violation_audit_queue, the rest are dropped and counted, and clients are
    answered as fast as ever."""
    cp = console_proxy(proxy_factory, workdir, {"mode": "enforce", "violation_audit": "on",
                                                "violation_audit_queue": 3,
                                                "sidecar_dsn": f"host=127.0.0.1 port={tgtest.free_port()} "
                                                               f"dbname={db.name} connect_timeout=2"})
    with app_conn(cp, db) as app:
        for i in range(8):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute("INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 1, 'q')")
    with connect(cp) as c:
        total = tgtest.wait_until(lambda: ok(c, "SHOW STATS").dicts()[-1]["audit_dropped"] != "0" and
                                  ok(c, "SHOW STATS").dicts()[-1], 10, what="drops counted")
        assert int(total["audit_dropped"]) >= 5 and total["audit_written"] == "0"
    assert "violation_audit: cannot connect" in cp.log()
    assert audit_rows(db) == []
    # the writer comes back once the DSN works (RELOAD), and writes what was kept
    cp.write_config({"sidecar_dsn": db.dsn})
    with connect(cp) as c:
        ok(c, "RELOAD")
        with app_conn(cp, db) as app:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute("INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 1, 'q')")
        tgtest.wait_until(lambda: len(audit_rows(db)) >= 1, 40, what="audit rows after the DSN works")


def test_violation_audit_off_writes_nothing(proxy_factory, workdir, db):
    cp = console_proxy(proxy_factory, workdir, {"mode": "enforce", "sidecar_dsn": db.dsn})
    with app_conn(cp, db) as app:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 1, 'q')")
    with connect(cp) as c:
        assert ok(c, "SHOW VIOLATIONS").rows
        assert ok(c, "SHOW STATS").dicts()[-1]["audit_written"] == "0"
    assert audit_rows(db) == []


@pytest.mark.parametrize("level", ["on", "all"])
def test_violation_audit_all_also_writes_observe_modes_would_be_violations(proxy_factory, workdir, db, level):
    """Phase 1 runs in observe mode: with violation_audit = all, what enforce
    would have refused lands in the audit table too, as status observed; with
    on, only what was denied."""
    cp = console_proxy(proxy_factory, workdir, {"mode": "enforce", "violation_audit": level,
                                                "sidecar_dsn": db.dsn}, "[table findings]\nmode = observe\n")
    with app_conn(cp, db) as app:
        # observed: R3 (a workspace without a tenant) and an unparsable text; both run as sent
        with pytest.raises(psycopg.errors.NotNullViolation):
            app.execute(f"INSERT INTO findings (workspace_id, title) VALUES (1, '{SECRET}')")
        with pytest.raises(psycopg.errors.SyntaxError):
            app.execute("INSERT INTO findings VALUES (")
        # enforced: denied
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute(f"INSERT INTO policies (workspace_id, name) VALUES (1, '{SECRET}')")
    with connect(cp) as c:
        tgtest.wait_until(lambda: ok(c, "SHOW STATS").dicts()[-1]["audit_written"] == ("3" if level == "all" else "1"),
                          15, what="the audit writes")
    rows = audit_rows(db)
    got = [(r["status"], r["context"]["mode"], r["context"]["rule"], r["context"]["sqlstate"], r["resource_id"])
           for r in rows]
    observed = [("observed", "observe", "R3", "42501", "public.findings"),
                ("observed", "observe", "form", "0A000", "public.findings")]
    denied = [("denied", "enforce", "R3", "42501", "public.policies")]
    assert got == (observed + denied if level == "all" else denied)
    assert all((r["tenant_id"], r["workspace_id"]) == (None, None) for r in rows)
    assert SECRET not in json.dumps([r["context"] for r in rows])


def test_violation_audit_reads_a_boolean_as_on_or_off(proxy_factory, workdir, db):
    """It was a boolean before `all`: yes/true/1 still mean on."""
    import subprocess
    cp = console_proxy(proxy_factory, workdir, {"mode": "enforce", "violation_audit": "yes", "sidecar_dsn": db.dsn})
    with connect(cp) as c:
        assert {r[1]: r[2] for r in ok(c, "SHOW CONFIG").rows}["violation_audit"] == "on"
    cp.write_config({"violation_audit": "sometimes"})
    r = subprocess.run([tgtest.BINARY, "check-config", "-c", cp.config_path], capture_output=True, text=True)
    assert r.returncode == 1 and 'violation_audit: "sometimes" is not one of: off, on, all' in r.stderr, r.stderr


def test_violation_audit_needs_sidecar_dsn(proxy_factory, workdir):
    import subprocess
    p = console_proxy(proxy_factory, workdir, {"violation_audit": "on"}, start=False)
    r = subprocess.run([tgtest.BINARY, "check-config", "-c", p.config_path], capture_output=True, text=True)
    assert r.returncode == 1 and "violation_audit = on needs sidecar_dsn" in r.stderr


def test_violation_audit_turned_off_drops_what_waits(proxy_factory, workdir, db):
    cp = console_proxy(proxy_factory, workdir, {"mode": "enforce", "violation_audit": "on",
                                                "sidecar_dsn": f"host=127.0.0.1 port={tgtest.free_port()} "
                                                               f"dbname={db.name}"})
    with app_conn(cp, db) as app:
        for _ in range(2):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute("INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 1, 'q')")
    with connect(cp) as c:
        assert ok(c, "SHOW STATS").dicts()[-1]["audit_dropped"] == "0"     # waiting, retried
        cp.write_config({"violation_audit": "off"})
        ok(c, "RELOAD")
        total = tgtest.wait_until(lambda: ok(c, "SHOW STATS").dicts()[-1]["audit_dropped"] == "2" and
                                  ok(c, "SHOW STATS").dicts()[-1], 40, what="the waiting entries dropped")
        assert total["audit_written"] == "0"
    assert "violation_audit was turned off" in cp.log()
