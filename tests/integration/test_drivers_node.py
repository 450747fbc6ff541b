"""node-postgres (`pg`, pinned in tests/drivers/node/package.json and its
package-lock.json) through tenantguard: unnamed and named extended-protocol
statements, transactions with rejected statements, a pool of concurrent
clients (tests/drivers/node/pg_driver.js). The script prints JSON; rows are
read back directly on PostgreSQL.

node and npm are test dependencies (scripts/test installs them where they are
missing); `npm ci` fills tests/drivers/node/node_modules from the lock file when
it lacks the pinned pg. A machine without them fails here, it does not skip."""
import json
import os
import shutil
import subprocess

import pytest

import tgtest

NODE_DIR = os.path.join(tgtest.REPO, "tests", "drivers", "node")
SCRIPT = os.path.join(NODE_DIR, "pg_driver.js")

R2 = "tenantguard: workspace_id {w} does not match tenant {t} (workspace {tw}) on policies (R2)"
R4 = "tenantguard: tenant_id of policies cannot change from {a} to {b} (R4)"
NO_TENANT = ("tenantguard: INSERT into policies does not set tenant_id: no tenant to derive the "
             "workspace from (R3)")
ABORTED = "current transaction is aborted, commands ignored until end of transaction block"
WS = {3: 2, 4: 1, 6: 3}


def pinned_pg():
    with open(os.path.join(NODE_DIR, "package.json")) as f:
        return json.load(f)["dependencies"]["pg"]


@pytest.fixture(scope="module")
def node():
    """node, with the pinned pg installed by `npm ci` when node_modules lacks it."""
    exe = shutil.which("node")
    if not exe:
        pytest.fail("node is not installed: apt-get install nodejs npm (scripts/test does)")
    installed = os.path.join(NODE_DIR, "node_modules", "pg", "package.json")
    version = None
    if os.path.exists(installed):
        with open(installed) as f:
            version = json.load(f)["version"]
    if version != pinned_pg():
        npm = shutil.which("npm")
        if not npm:
            pytest.fail("npm is not installed: apt-get install npm (scripts/test does)")
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True,
                           text=True, timeout=600)
        if r.returncode != 0:
            pytest.fail(f"npm ci in {NODE_DIR} failed ({r.returncode}):\n{r.stderr}\n{r.stdout}")
    return exe


def run_node(node, port, db, scenario):
    """Run one scenario of pg_driver.js against 127.0.0.1:port as `app`; its JSON."""
    e = dict(os.environ, TG_HOST="127.0.0.1", TG_PORT=str(port), TG_DB=db, TG_USER="app",
             TG_PASSWORD=tgtest.PASSWORDS["app"])
    r = subprocess.run([node, SCRIPT, scenario], capture_output=True, text=True, env=e, timeout=60,
                       cwd=NODE_DIR)
    assert r.returncode == 0, f"node {scenario} exited {r.returncode}:\n{r.stderr}\n{r.stdout}"
    return json.loads(r.stdout)


def err(step):
    """(code, message) of a step that raised; the severity is PostgreSQL's ERROR."""
    assert "error" in step, f"expected an error, got {step!r}"
    assert step["error"]["severity"] == "ERROR"
    return step["error"]["code"], step["error"]["message"]


def policies(db):
    return db.rows("SELECT tenant_id, workspace_id, name FROM policies ORDER BY id")



def rows_of(steps):
    return [s["ok"] for s in steps]


# ------------------------------------------------------------------ relay (observe mode)

def test_pg_relay_equals_direct(node, pg, proxy, data):
    """The default (observe) proxy: results, types, named statements, errors and an aborted
    transaction as PostgreSQL gives them, and a write run exactly as sent."""
    via = run_node(node, proxy.port, data.name, "relay")
    direct = run_node(node, pg.port, data.name, "relay")
    assert via == direct
    assert via["tenants"]["ok"] == [{"id": "3", "workspace_id": "2", "name": "t3"},
                                    {"id": "4", "workspace_id": "1", "name": "t4"},
                                    {"id": "5", "workspace_id": None, "name": "t5"},
                                    {"id": "6", "workspace_id": "3", "name": "t6"}]
    assert via["types"]["ok"] == [{"sum": 42, "t": "it's", "n": None, "b": True, "num": "1.50",
                                   "j": {"a": [1, 2]}, "u": "é ☃", "big": "9007199254740993",
                                   "d": "2024-02-29"}]
    assert via["fields"]["ok"] == [["a", 23], ["b", 20], ["c", 25]]
    assert via["series"]["ok"] == [[1], [2], [3], [4], [5]]
    assert rows_of(via["named"]) == [[{"v": 50}], [{"v": 70}]]
    # observe mode runs exactly what was sent: the row keeps its NULL workspace
    assert via["insert"]["ok"] == [{"tenant_id": "3", "workspace_id": None, "name": "relay-row"}]
    assert via["simple_multi"]["ok"] == [[{"one": 1}], [{"two": "two"}]]
    assert err(via["error"]) == ("22012", "division by zero")
    assert err(via["missing"]) == ("42P01", 'relation "no_such_table" does not exist')
    assert via["begin"]["ok"] == "BEGIN" and err(via["in_tx_error"]) == ("22012", "division by zero")
    assert err(via["in_tx_aborted"]) == ("25P02", ABORTED) and via["rollback"]["ok"] == "ROLLBACK"
    assert via["deleted"]["ok"] == ["DELETE", 1]


# ------------------------------------------------------------------ enforce mode

def test_pg_unnamed_statements(node, eproxy, data):
    """client.query(text, values): R1 injected (single and multi-row), R2 rejected with 42501 and the
    connection usable afterwards, R4."""
    out = run_node(node, eproxy.port, data.name, "unnamed")
    assert rows_of(out["inserted"]) == [[{"id": "1", "workspace_id": "2"}], [{"id": "2", "workspace_id": "1"}],
                                        [{"id": "3", "workspace_id": "3"}]]
    assert out["string_tenant"]["ok"] == [{"id": "4", "workspace_id": "1"}]
    assert out["multi_row"]["ok"] == [{"id": "5", "workspace_id": "3"}, {"id": "6", "workspace_id": "2"}]
    assert err(out["mismatch"]) == ("42501", R2.format(w=1, t=3, tw=2))
    assert out["after"]["ok"] == [{"id": "8", "workspace_id": "3"}]
    assert out["explicit_ok"]["ok"] == [{"id": "9", "workspace_id": "1"}]
    assert err(out["change_tenant"]) == ("42501", R4.format(a=3, b=4))
    assert out["same_tenant"]["ok"] == 1
    assert out["count"]["ok"] == [{"c": 8}]
    assert policies(data) == [(3, 2, "un-3"), (4, 1, "un-4"), (6, 3, "un-6-renamed"), (4, 1, "un-str"),
                              (6, 3, "multi-a"), (3, 2, "multi-b"), (6, 3, "after-mismatch"), (4, 1, "explicit-ok")]


def test_pg_named_statements_reused(node, eproxy, data):
    """{name, text, values}: parsed once per connection and reused, around an execution the
    helpers reject and a Parse the proxy refuses (twice: pg parses it again, as PostgreSQL left
    no statement behind)."""
    out = run_node(node, eproxy.port, data.name, "named")
    tenants = [3, 4, 6]
    assert rows_of(out["first"]) == [[{"id": str(i + 1), "workspace_id": str(WS[tenants[i % 3]])}]
                                     for i in range(30)]
    assert out["ws_ok"]["ok"] == [{"id": "31", "workspace_id": "3"}]
    assert err(out["ws_bad"]) == ("42501", R2.format(w=1, t=3, tw=2))
    assert out["ws_again"]["ok"] == [{"id": "33", "workspace_id": "2"}]
    assert err(out["refused"]) == ("42501", NO_TENANT)
    assert err(out["refused_again"]) == ("42501", NO_TENANT)
    assert rows_of(out["second"]) == [[{"id": str(34 + i), "workspace_id": str(WS[tenants[(i + 1) % 3]])}]
                                      for i in range(30)]
    assert out["statements"]["ok"] == [{"name": "ins"}, {"name": "ins_ws"}]
    want = [(tenants[i % 3], WS[tenants[i % 3]], f"first-{i}") for i in range(30)]
    want += [(6, 3, "ws-ok"), (3, 2, "ws-again")]
    want += [(tenants[(i + 1) % 3], WS[tenants[(i + 1) % 3]], f"second-{i}") for i in range(30)]
    assert policies(data) == want


def test_pg_transaction_aborted_by_rejection(node, eproxy, data):
    """A rejected statement leaves the transaction aborted: 25P02 for unnamed, named and simple
    statements until ROLLBACK, as after any server error; ROLLBACK TO SAVEPOINT recovers."""
    out = run_node(node, eproxy.port, data.name, "transaction")
    assert out["begin"]["ok"] == "BEGIN"
    assert out["ok"]["ok"] == [{"id": "1", "workspace_id": "2"}]
    assert err(out["rejected"]) == ("42501", R2.format(w=2, t=4, tw=1))
    for k in ("next_unnamed", "next_named", "next_simple"):
        assert err(out[k]) == ("25P02", ABORTED), k
    assert out["rollback"]["ok"] == "ROLLBACK"
    assert out["after"]["ok"] == [{"id": "3", "workspace_id": "3"}]
    assert out["outer"]["ok"] == [{"id": "4", "workspace_id": "1"}]
    assert out["savepoint"]["ok"] == "SAVEPOINT"
    assert err(out["sp_rejected"]) == ("42501", R4.format(a=4, b=3))
    assert err(out["sp_aborted"]) == ("25P02", ABORTED)
    assert out["rollback_to"]["ok"] == "ROLLBACK"
    assert out["sp_good"]["ok"] == [{"id": "5", "workspace_id": "2"}]
    assert out["commit"]["ok"] == "COMMIT"
    assert policies(data) == [(6, 3, "after-rollback"), (4, 1, "outer"), (3, 2, "after-savepoint")]


def test_pg_pool_concurrent_tenants(node, eproxy, data):
    """A Pool of 6: 4 clients in transactions for different tenants (one ends with a rejection
    and rolls back) while 60 pool.query() inserts share the other clients."""
    out = run_node(node, eproxy.port, data.name, "pool")
    assert out["total"] == 6
    assert len({w["pid"] for w in out["workers"]}) == 4
    for w, got in enumerate(out["workers"]):
        assert got["tenant"] == [3, 4, 6][w % 3]
        assert got["rows"] == [str(WS[got["tenant"]])] * 15, w
    assert err(out["workers"][1]["rejected"]) == ("42501", R2.format(w=2, t=4, tw=1))
    assert out["queries"] == [[t, str(WS[t])] for t in ([6, 3, 4] * 20)]
    stored = data.rows("SELECT tenant_id, workspace_id, name FROM policies")
    assert len(stored) == 3 * 15 + 60
    assert all(WS[t] == w for t, w, _ in stored)
    assert sorted(n for _, _, n in stored) == sorted(
        [f"w{w}-{i}" for w in (0, 2, 3) for i in range(15)] + [f"pq-{i}" for i in range(60)])
    # the clients really ran side by side: the workers' rows are interleaved by id
    ids = [n for n, in data.rows("SELECT name FROM policies WHERE name LIKE 'w%' ORDER BY id")]
    assert ids != sorted(ids, key=lambda n: (int(n[1]), int(n.split("-")[1])))
