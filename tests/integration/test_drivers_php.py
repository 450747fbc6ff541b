"""PHP's PDO (pdo_pgsql) through tenantguard, configured and driven as Laravel
drives it (tests/drivers/php/pdo_laravel.php): server-side prepares with
named statements that PDO deallocates (Laravel's default,
ATTR_EMULATE_PREPARES false), and client-side interpolation (emulated
prepares). The script prints JSON; rows are read back directly on PostgreSQL.

php-cli and php-pgsql are test dependencies (scripts/test installs them): a
machine without them fails here, it does not skip."""
import json
import os
import shutil
import subprocess

import pytest

import tgtest

SCRIPT = os.path.join(tgtest.REPO, "tests", "drivers", "php", "pdo_laravel.php")

R2 = "tenantguard: workspace_id {w} does not match tenant {t} (workspace {tw}) on policies (R2)"
R4 = "tenantguard: tenant_id of policies cannot change from {a} to {b} (R4)"
ABORTED = "current transaction is aborted, commands ignored until end of transaction block"
WS = {3: 2, 4: 1, 6: 3}

EMULATE = pytest.mark.parametrize("emulate", [False, True], ids=["server-prepares", "emulated"])


@pytest.fixture(scope="module")
def php():
    exe = shutil.which("php")
    if not exe:
        pytest.fail("php is not installed: apt-get install php-cli php-pgsql (scripts/test does)")
    r = subprocess.run([exe, "-r", "exit(in_array('pgsql', PDO::getAvailableDrivers()) ? 0 : 3);"],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        pytest.fail(f"PHP has no PDO pgsql driver ({r.returncode}: {r.stderr.strip()}): "
                    "apt-get install php-pgsql (scripts/test does)")
    return exe


def run_php(php, port, db, scenario, emulate=False, **env):
    """Run one scenario of pdo_laravel.php against 127.0.0.1:port as `app`; its JSON."""
    e = dict(os.environ, TG_HOST="127.0.0.1", TG_PORT=str(port), TG_DB=db, TG_USER="app",
             TG_PASSWORD=tgtest.PASSWORDS["app"], TG_EMULATE="1" if emulate else "0",
             **{k: str(v) for k, v in env.items()})
    r = subprocess.run([php, SCRIPT, scenario], capture_output=True, text=True, env=e, timeout=60)
    assert r.returncode == 0, f"php {scenario} exited {r.returncode}:\n{r.stderr}\n{r.stdout}"
    return json.loads(r.stdout)


def err(step):
    """(sqlstate, primary message) of a step that raised."""
    assert "error" in step, f"expected a PDOException, got {step!r}"
    e = step["error"]
    assert e["class"] == "PDOException"
    if e["sqlstate"] == "42501":
        # the whole exception text is the rule's: no CONTEXT naming tenantguard's PL/pgSQL helper
        assert "CONTEXT" not in e["full"] and "PL/pgSQL" not in e["full"], e["full"]
    return e["sqlstate"], e["message"]


def policies(db):
    return db.rows("SELECT tenant_id, workspace_id, name FROM policies ORDER BY id")


# ------------------------------------------------------------------ relay (observe mode)

@EMULATE
def test_pdo_relay_equals_direct(php, pg, proxy, data, emulate):
    """The default (observe) proxy: reads, types, errors and an unrewritten write as PostgreSQL gives them."""
    via = run_php(php, proxy.port, data.name, "relay", emulate)
    direct = run_php(php, pg.port, data.name, "relay", emulate)
    assert via == direct
    assert via["emulated"] is emulate
    assert via["tenants"]["ok"] == [{"id": 3, "workspace_id": 2, "name": "t3"},
                                    {"id": 4, "workspace_id": 1, "name": "t4"},
                                    {"id": 5, "workspace_id": None, "name": "t5"},
                                    {"id": 6, "workspace_id": 3, "name": "t6"}]
    assert via["where"]["ok"] == [{"name": "t3"}, {"name": "t6"}]
    assert via["types"]["ok"] == [{"sum": 42, "t": "it's", "n": None, "b": True, "num": "1.50",
                                   "j": '{"a": [1, 2]}', "u": "é ☃", "big": 9007199254740993}]
    assert via["series"]["ok"] == [{"g": i} for i in range(1, 6)]
    assert via["path"]["ok"] == [{"p": "public", "e": "UTF8"}]
    # observe mode runs exactly what was sent: the row keeps its NULL workspace
    assert via["insert"]["ok"] == [{"tenant_id": 3, "workspace_id": None, "name": "relay-row"}]
    assert err(via["error"]) == ("22012", "division by zero")
    assert err(via["missing"]) == ("42P01", 'relation "no_such_table" does not exist')
    assert via["after"]["ok"] == [{"c": 1}] and via["deleted"]["ok"] == 1



# ------------------------------------------------------------------ enforce mode

@EMULATE
def test_pdo_insert_update_rules(php, eproxy, data, emulate):
    """R1 with ? and :name bindings, insertGetId and a multi-row insert; R2 with the connection usable
    afterwards; R4."""
    out = run_php(php, eproxy.port, data.name, "rules", emulate)
    # R1: each row got its tenant's workspace, RETURNING "id" is the row's id
    assert [s["ok"] for s in out["positional"]] == [{"id": 1, "workspace_id": 2}, {"id": 2, "workspace_id": 1},
                                                     {"id": 3, "workspace_id": 3}]
    assert [s["ok"] for s in out["named"]] == [{"id": 4, "workspace_id": 3}, {"id": 5, "workspace_id": 2}]
    assert out["string_tenant"]["ok"] == {"id": 6, "workspace_id": 1}
    assert out["insert_get_id"]["ok"] == 7
    assert out["get_id_row"]["ok"] == [{"tenant_id": 4, "workspace_id": 1, "name": "get-id"}]
    # R2, with ? and with :name bindings
    assert err(out["mismatch"]) == ("42501", R2.format(w=1, t=3, tw=2))
    assert err(out["mismatch_named"]) == ("42501", R2.format(w=2, t=6, tw=3))
    assert out["after_mismatch"]["ok"] == {"id": 10, "workspace_id": 3}
    assert out["explicit_ok"]["ok"] is True
    # R4: a new tenant is refused; the same tenant (Eloquent writes every column) and other columns pass
    assert err(out["change_tenant"]) == ("42501", R4.format(a=3, b=4))
    assert out["same_tenant"]["ok"] == 1
    assert out["other_column"]["ok"] == 2
    assert out["bulk"]["ok"] is True
    assert out["usable"]["ok"] == [{"c": 12}]
    assert data.rows("SELECT id, tenant_id, workspace_id, name, policy_type FROM policies ORDER BY id") == [
        (1, 3, 2, "pos-3", "compliance"), (2, 4, 1, "pos-4", "settings"), (3, 6, 3, "pos-6-renamed", "settings"),
        (4, 6, 3, "named-6", "settings"), (5, 3, 2, "named-3", "compliance"), (6, 4, 1, "str-4", "settings"),
        (7, 4, 1, "get-id", "settings"), (10, 6, 3, "after-mismatch", "settings"),
        (11, 6, 3, "explicit-ok", "settings"), (12, 4, 1, "bulk-a", "settings"), (13, 6, 3, "bulk-b", "settings"),
        (14, 3, 2, "bulk-c", "settings")]


@EMULATE
def test_pdo_laravel_nested_transactions(php, eproxy, data, emulate):
    """DB::transaction() nesting: SAVEPOINT trans2, a rejected insert, ROLLBACK TO SAVEPOINT trans2,
    more inserts, commit; then a transaction rolled back as a whole after a rejected UPDATE."""
    out = run_php(php, eproxy.port, data.name, "nested", emulate)
    assert out["begin"]["ok"] is True and out["savepoint"]["ok"] == 0
    assert out["outer"]["ok"]["workspace_id"] == 2
    assert out["inner_ok"]["ok"]["workspace_id"] == 1
    assert err(out["rejected"]) == ("42501", R2.format(w=2, t=4, tw=1))
    assert err(out["aborted"]) == ("25P02", ABORTED)
    assert out["in_transaction"]["ok"] is True
    assert out["rollback_to"]["ok"] == 0
    assert out["good"]["ok"]["workspace_id"] == 3
    assert out["good_named"]["ok"]["workspace_id"] == 1
    assert out["commit"]["ok"] is True
    assert out["doomed"]["ok"]["workspace_id"] == 2
    assert err(out["rejected2"]) == ("42501", R4.format(a=6, b=3))
    assert out["rollback"]["ok"] is True
    assert out["after"]["ok"] == [{"c": 3}]
    assert policies(data) == [(3, 2, "outer"), (6, 3, "after-rollback"), (4, 1, "after-rollback-named")]


@EMULATE
def test_pdo_many_statements(php, eproxy, data, emulate):
    """200 inserts with distinct texts and 200 with one text, each prepared and deallocated as Laravel
    does (pdo_stmt_N names, DEALLOCATE), then one statement executed 200 times around a rejection."""
    n = 200
    out = run_php(php, eproxy.port, data.name, "many", emulate, TG_ROWS=n)
    tenants = [3, 4, 6]
    mid_tenant = tenants[(n // 2 + 1) % 3]
    assert out["errors"] == [{"expected": {"error": {
        "sqlstate": "42501", "message": R2.format(w=99, t=mid_tenant, tw=WS[mid_tenant]),
        "full": out["errors"][0]["expected"]["error"]["full"], "class": "PDOException"}}}]
    assert out["returned"] == [{"id": i + 1, "workspace_id": WS[tenants[i // 2 % 3]]} for i in range(2 * n)]
    # server-side: PDO deallocated every statement but the one counting them; emulated: none was prepared
    assert out["prepared_left"]["ok"] == [{"c": 0 if emulate else 1}]
    want = []
    for i in range(n):
        t = tenants[i % 3]
        want += [(t, WS[t], f"d-{i}", f"distinct-{i}"), (t, WS[t], f"s-{i}", "settings")]
    for i in range(n):
        t = tenants[(i + 1) % 3]
        want.append((t, WS[t], f"r-{i}", f"reused-{t}"))
    assert data.rows("SELECT tenant_id, workspace_id, name, policy_type FROM policies ORDER BY id") == want
