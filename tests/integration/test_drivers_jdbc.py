"""Java's pgJDBC (Debian's libpostgresql-jdbc-java, /usr/share/java/postgresql.jar), a
wire-protocol implementation of its own (not libpq), through tenantguard:
PreparedStatements below and above prepareThreshold (unnamed, then named S_n
statements with binary results), prepareThreshold=0 and 1, preferQueryMode simple
and extendedForPrepared, generated keys, transactions with savepoints and
autosave, and pipelined batches, plain and rewritten (reWriteBatchedInserts).
tests/drivers/java/PgJdbcDriver.java prints JSON; rows are read back directly on
PostgreSQL.

javac and java (default-jdk-headless) and the driver (libpostgresql-jdbc-java) are
test dependencies (scripts/test installs them): a machine without them fails
here, it does not skip. The program is compiled into tests/drivers/java/classes/
(ignored by git) again whenever its source changed."""
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

import tgtest

JAVA_DIR = os.path.join(tgtest.REPO, "tests", "drivers", "java")
SOURCE = os.path.join(JAVA_DIR, "PgJdbcDriver.java")
CLASSES = os.path.join(JAVA_DIR, "classes")
JAR = "/usr/share/java/postgresql.jar"
INSTALL = "apt-get install default-jdk-headless libpostgresql-jdbc-java (scripts/test does)"

R2 = "tenantguard: workspace_id {w} does not match tenant {t} (workspace {tw}) on policies (R2)"
R4 = "tenantguard: tenant_id of policies cannot change from {a} to {b} (R4)"
ABORTED = "current transaction is aborted, commands ignored until end of transaction block"
WS = {3: 2, 4: 1, 6: 3}
TENANTS = [3, 4, 6]


@pytest.fixture(scope="module")
def jdbc():
    """The java launcher, with PgJdbcDriver compiled by javac when its class is not that of the source."""
    java, javac = shutil.which("java"), shutil.which("javac")
    if not java or not javac:
        pytest.fail(f"java/javac is not installed: {INSTALL}")
    if not os.path.exists(JAR):
        pytest.fail(f"pgJDBC is not installed ({JAR} is missing): {INSTALL}")
    cls = os.path.join(CLASSES, "PgJdbcDriver.class")
    src_mtime = os.stat(SOURCE).st_mtime_ns
    if not os.path.exists(cls) or os.stat(cls).st_mtime_ns != src_mtime:
        os.makedirs(CLASSES, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=CLASSES)
        try:
            r = subprocess.run([javac, "-encoding", "UTF-8", "-Xlint:all", "-d", tmp, "-cp", JAR, SOURCE],
                               capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                pytest.fail(f"javac {SOURCE} failed ({r.returncode}):\n{r.stderr}\n{r.stdout}")
            built = os.path.join(tmp, "PgJdbcDriver.class")
            os.utime(built, ns=(src_mtime, src_mtime))   # the class stands for this version of the source
            os.replace(built, cls)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return java


def run_java(java, port, db, scenario, props="", **env):
    """Run one scenario of PgJdbcDriver against 127.0.0.1:port as `app`, with connection
    properties `props` ("key=value;..."); its JSON."""
    e = dict(os.environ, TG_HOST="127.0.0.1", TG_PORT=str(port), TG_DB=db, TG_USER="app",
             TG_PASSWORD=tgtest.PASSWORDS["app"], TG_PROPS=props, **{k: str(v) for k, v in env.items()})
    argv = [java, "-Duser.language=en", "-Duser.country=US", "-Duser.timezone=UTC", "-Dfile.encoding=UTF-8",
            "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-cp", f"{CLASSES}:{JAR}", "PgJdbcDriver", scenario]
    r = subprocess.run(argv, capture_output=True, text=True, env=e, timeout=60)
    assert r.returncode == 0, f"java {scenario} ({props}) exited {r.returncode}:\n{r.stderr}\n{r.stdout}"
    return json.loads(r.stdout)


def err(step):
    """(sqlstate, primary message) of a step that raised a server error (a PSQLException)."""
    assert "error" in step, f"expected an SQLException, got {step!r}"
    e = step["error"]
    assert e["class"] == "PSQLException" and e["severity"] == "ERROR", e
    if e["message"].startswith("tenantguard: "):
        # the whole exception text is the rule's: pgJDBC shows a CONTEXT line as "Where: PL/pgSQL
        # function ..." (see own_plpgsql in test_jdbc_r2_r4) and a source location as "Location: ..."
        assert e["full"] == "ERROR: " + e["message"], e["full"]
        assert "CONTEXT" not in e["full"] and "PL/pgSQL" not in e["full"], e["full"]
        assert e["where"] is None and e["routine"] is None, e
    return e["sqlstate"], e["message"]


def policies(db):
    return db.rows("SELECT tenant_id, workspace_id, name FROM policies ORDER BY id")


def oks(steps):
    return [s["ok"] for s in steps]


# ------------------------------------------------------------------ relay (observe mode)

TYPES_ROW = {"big": 9007199254740993, "num": "12345678901234567890.0123", "t": "it's é ☃",
             "ts": "2024-02-29T11:34:56.789Z", "bin": "\\x000102ff27", "j": '{"a": [1, 2]}', "n": None,
             "n_null": True, "b": True,
             "classes": ["java.lang.Long", "java.math.BigDecimal", "java.lang.String", "java.sql.Timestamp", "[B",
                         "org.postgresql.util.PGobject", "java.lang.Boolean"]}


def test_jdbc_relay_equals_direct(jdbc, pg, proxy, data):
    """The default (observe) proxy: rows, types (text results, then binary ones once the statement is
    server-prepared as S_1), ResultSetMetaData and DatabaseMetaData (pgJDBC's own catalog queries),
    errors and an aborted transaction as PostgreSQL gives them, and a write run exactly as sent."""
    via = run_java(jdbc, proxy.port, data.name, "relay")
    direct = run_java(jdbc, pg.port, data.name, "relay")
    assert via == direct
    assert via["tenants"]["ok"] == [{"id": 3, "workspace_id": 2, "name": "t3"},
                                    {"id": 4, "workspace_id": 1, "name": "t4"},
                                    {"id": 5, "workspace_id": None, "name": "t5"},
                                    {"id": 6, "workspace_id": 3, "name": "t6"}]
    # name, type name, java.sql.Types, isNullable, PGResultSetMetaData.getBaseTableName
    assert via["tenants_meta"]["ok"] == [["id", "bigserial", -5, 0, "tenants"],
                                         ["workspace_id", "int8", -5, 1, "tenants"],
                                         ["name", "text", 12, 0, "tenants"]]
    assert via["types"] == [{"ok": [TYPES_ROW]}] * 7
    assert via["types_meta"] == [["big", -5, "int8"], ["num", 2, "numeric"], ["t", 12, "text"],
                                 ["ts", 93, "timestamptz"], ["bin", -2, "bytea"], ["j", 1111, "jsonb"],
                                 ["n", 4, "int4"], ["b", -7, "bool"]]
    assert via["prepared"]["ok"] == ["S_1"]   # past prepareThreshold (5) the types query was named
    assert via["columns"]["ok"] == [["id", "bigserial", -5, "NO"], ["workspace_id", "int8", -5, "YES"],
                                    ["name", "text", 12, "NO"], ["external_id", "text", 12, "YES"],
                                    ["created_at", "timestamptz", 93, "NO"]]
    assert via["series"]["ok"] == [{"g": i} for i in range(1, 6)]
    # observe mode runs exactly what was sent: the row keeps its NULL workspace
    assert via["insert"]["ok"] == [{"tenant_id": 3, "workspace_id": None, "name": "relay-row"}]
    assert err(via["error"]) == ("22012", "division by zero")
    assert err(via["missing"]) == ("42P01", 'relation "no_such_table" does not exist')
    assert via["missing"]["error"]["full"].endswith("\n  Position: 15")
    assert via["autocommit_off"]["ok"] is False
    assert err(via["in_tx_error"]) == ("22012", "division by zero")
    assert err(via["in_tx_aborted"]) == ("25P02", ABORTED)
    assert via["rollback"]["ok"] is True and via["deleted"]["ok"] == 1


# ------------------------------------------------------------------ enforce mode

# connection properties -> the server-side statements after the loop and at the end, and whether
# setString binds a tenant_id PostgreSQL takes (a text literal in simple mode, an unspecified type)
MODES = {
    "default": ("", ["S_1"], ["S_1"], False),
    "prepareThreshold=1": ("prepareThreshold=1", ["S_1", "S_2"], None, False),
    "prepareThreshold=0": ("prepareThreshold=0", [], [], False),
    "simple": ("preferQueryMode=simple", [], [], True),
    "extendedForPrepared": ("preferQueryMode=extendedForPrepared", ["S_1"], ["S_1"], False),
    "extendedCacheEverything": ("preferQueryMode=extendedCacheEverything", ["S_1"], ["S_1"], False),
    "stringtype=unspecified": ("stringtype=unspecified", ["S_1"], ["S_1"], True),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_jdbc_r1_in_every_query_mode(jdbc, eproxy, data, mode):
    """One PreparedStatement run 8 times (pgJDBC names it S_1 at the 5th run by default, at the
    first with prepareThreshold=1, never with 0 or in simple mode, where it interpolates the
    values), then an R2 rejection and the same statement again; setInt, setString, generated keys
    and a Statement with literals: every row gets its tenant's workspace."""
    props, after_loop, final, string_ok = MODES[mode]
    out = run_java(jdbc, eproxy.port, data.name, "modes", props)
    assert oks(out["returning"]) == [[{"id": i + 1, "workspace_id": WS[TENANTS[i % 3]]}] for i in range(8)]
    assert out["prepared_after_loop"]["ok"] == after_loop
    assert err(out["mismatch"]) == ("42501", R2.format(w=1, t=3, tw=2))
    assert out["mismatch"]["error"]["constraint"] == "tenantguard_r2"
    assert out["after"]["ok"] == [{"id": 10, "workspace_id": 3}]
    assert out["set_int"]["ok"] == 1
    if string_ok:
        assert out["set_string"]["ok"] == 1
    else:
        # PostgreSQL's own words for a varchar parameter (as directly: no tenantguard helper named)
        assert err(out["set_string"]) == (
            "42804", 'column "tenant_id" is of type bigint but expression is of type character varying')
    assert out["generated"]["ok"] == [1, [{"id": 13 if string_ok else 12, "workspace_id": 3}]]
    assert out["statement"]["ok"] == 1
    if final is not None:
        assert out["prepared"]["ok"] == final
    else:   # every statement was named; S_1, the reused insert, outlived the rejection
        assert out["prepared"]["ok"][:2] == ["S_1", "S_2"] and len(out["prepared"]["ok"]) >= 5
    want = [(TENANTS[i % 3], WS[TENANTS[i % 3]], f"m-{i}") for i in range(8)]
    want += [(6, 3, "m-after"), (4, 1, "m-int")] + ([(4, 1, "m-string")] if string_ok else [])
    want += [(6, 3, "m-keys"), (3, 2, "m-literal")]
    assert policies(data) == want


@pytest.mark.parametrize("props", ["", "preferQueryMode=simple"], ids=["extended", "simple"])
def test_jdbc_r2_r4(jdbc, eproxy, data, props):
    """R2 (a wrong and a NULL workspace, bound and literal) and R4 with autoCommit on: SQLState 42501,
    the rule's message and nothing else in the exception text, and the connection goes on."""
    out = run_java(jdbc, eproxy.port, data.name, "rules", props)
    assert oks(out["inserted"]) == [[{"id": 1, "workspace_id": 2}], [{"id": 2, "workspace_id": 1}],
                                    [{"id": 3, "workspace_id": 3}]]
    assert err(out["mismatch"]) == ("42501", R2.format(w=1, t=3, tw=2))
    assert out["after_mismatch"]["ok"] == [{"id": 5, "workspace_id": 3}]
    assert err(out["null_workspace"]) == ("42501", R2.format(w="NULL", t=4, tw=1))
    assert err(out["mismatch_literal"]) == ("42501", R2.format(w=2, t=6, tw=3))
    assert out["explicit_ok"]["ok"] == 1
    assert err(out["change_tenant"]) == ("42501", R4.format(a=3, b=4))
    assert out["change_tenant"]["error"]["constraint"] == "tenantguard_r4"
    assert err(out["change_tenant_literal"]) == ("42501", R4.format(a=6, b=3))
    assert out["same_tenant"]["ok"] == 1 and out["other_column"]["ok"] == 1
    assert out["count"]["ok"] == [{"c": 5}]
    # the control: the client's own PL/pgSQL error keeps its CONTEXT, which pgJDBC prints as "Where:"
    own = out["own_plpgsql"]["error"]
    assert (own["sqlstate"], own["message"]) == ("42501", "own error")
    assert own["full"] == "ERROR: own error\n  Where: PL/pgSQL function inline_code_block line 1 at RAISE"
    assert data.rows("SELECT id, tenant_id, workspace_id, name, policy_type FROM policies ORDER BY id") == [
        (1, 3, 2, "r-3", "compliance"), (2, 4, 1, "r-4", "settings"), (3, 6, 3, "r-6-renamed", "settings"),
        (5, 6, 3, "r-after", "settings"), (8, 4, 1, "r-explicit", "settings")]


def test_jdbc_transaction_aborted_by_rejection(jdbc, eproxy, data):
    """autoCommit off: after a rejection every statement fails with 25P02 until rollback(), as after
    a server error; rollback(savepoint) recovers, and commit() stores exactly the good rows."""
    out = run_java(jdbc, eproxy.port, data.name, "transaction")
    assert out["ok"]["ok"] == [{"id": 1, "workspace_id": 2}]
    assert err(out["rejected"]) == ("42501", R2.format(w=2, t=4, tw=1))
    assert err(out["next_prepared"]) == ("25P02", ABORTED)
    assert err(out["next_statement"]) == ("25P02", ABORTED)
    assert out["rollback"]["ok"] is True
    assert out["after"]["ok"] == [{"id": 3, "workspace_id": 3}] and out["commit"]["ok"] is True
    assert out["outer"]["ok"] == [{"id": 4, "workspace_id": 1}]
    assert out["savepoint"]["ok"] == "sp1"
    assert err(out["sp_rejected"]) == ("42501", R4.format(a=4, b=3))
    assert err(out["sp_aborted"]) == ("25P02", ABORTED)
    assert out["rollback_to"]["ok"] is True
    assert out["good"]["ok"] == [[{"id": 5, "workspace_id": 2}], 1, [{"id": 7, "workspace_id": 1}]]
    assert out["commit2"]["ok"] is True
    assert policies(data) == [(6, 3, "tx-after-rollback"), (4, 1, "tx-outer"), (3, 2, "tx-good-1"),
                              (6, 3, "tx-good-2"), (4, 1, "tx-good-3")]


def test_jdbc_autosave_always(jdbc, eproxy, data):
    """autosave=always: pgJDBC sends SAVEPOINT PGJDBC_AUTOSAVE with each statement and rolls back to
    it after an error, so a rejection loses that statement only and the transaction commits."""
    out = run_java(jdbc, eproxy.port, data.name, "autosave", "autosave=always")
    assert out["ok"]["ok"] == [{"id": 1, "workspace_id": 2}]
    assert err(out["rejected"]) == ("42501", R2.format(w=2, t=4, tw=1))
    assert out["next"]["ok"] == [{"id": 3, "workspace_id": 1}]
    assert err(out["rejected_r4"]) == ("42501", R4.format(a=3, b=6))
    assert out["next2"]["ok"] == [{"id": 4, "workspace_id": 3}]
    assert out["commit"]["ok"] is True
    assert policies(data) == [(3, 2, "as-1"), (4, 1, "as-2"), (6, 3, "as-3")]


REWRITE = pytest.mark.parametrize("props", ["", "reWriteBatchedInserts=true"], ids=["pipelined", "rewritten"])


@REWRITE
def test_jdbc_batch_binds_each_row(jdbc, eproxy, data, props):
    """executeBatch of 600 inserts for three tenants (pipelined as named statements with Syncs in
    between, or rewritten into multi-row VALUES of up to 128 rows), with generated keys, with
    explicit workspaces, and a Statement batch: every row has its own tenant's workspace."""
    n = 600
    rewritten = bool(props)
    out = run_java(jdbc, eproxy.port, data.name, "batch", props, TG_ROWS=n)
    # -2 (SUCCESS_NO_INFO) is pgJDBC's count for a rewritten batch: it really was rewritten
    assert out["counts"]["ok"] == [-2 if rewritten else 1] * n
    assert out["keys"]["ok"] == [{"workspace_id": WS[TENANTS[(i + 1) % 3]]} for i in range(10)]
    assert out["explicit"]["ok"] == [-2 if rewritten else 1] * 6
    assert out["statement"]["ok"] == [1, 1, 1]
    assert out["prepared"]["ok"][:1] == ["S_1"]   # batches are server-prepared statements
    want = [(TENANTS[i % 3], WS[TENANTS[i % 3]], f"b-{i}") for i in range(n)]
    want += [(TENANTS[(i + 1) % 3], WS[TENANTS[(i + 1) % 3]], f"k-{i}") for i in range(10)]
    want += [(TENANTS[(i + 2) % 3], WS[TENANTS[(i + 2) % 3]], f"e-{i}") for i in range(6)]
    want += [(t, WS[t], f"s-{t}") for t in TENANTS]
    assert policies(data) == want


def batch_entry(e):
    """The batch entry pgJDBC names in a BatchUpdateException ("Batch entry N <statement> was aborted")."""
    m = re.match(r"Batch entry (\d+) ", e["full"])
    assert m, e["full"]
    return int(m.group(1))


@REWRITE
def test_jdbc_batch_with_rejection_like_server_error(jdbc, pg, eproxy, data, props):
    """A batch of 20 rows whose 11th is an R2 violation, with autoCommit off (then rollback) and on,
    fails as the same batch with a foreign-key violation in its place fails on PostgreSQL directly:
    BatchUpdateException, the same update counts and batch entry, nothing of the batch stored,
    and the next batch goes through."""
    via = run_java(jdbc, eproxy.port, data.name, "batch_error", props, TG_BAD="r2", TG_ROWS=20)
    via_rows = policies(data)
    data.reset()
    direct = run_java(jdbc, pg.port, data.name, "batch_error", props, TG_BAD="fk", TG_ROWS=20)
    assert via_rows == policies(data) == [(t, WS[t], f"{tag}-good-{i}") for tag in ("transaction", "autocommit")
                                          for i, t in enumerate(TENANTS)]
    for tag in ("transaction", "autocommit"):
        v, d = via[tag], direct[tag]
        ve, de = v["batch"]["error"], d["batch"]["error"]
        assert ve["class"] == de["class"] == "BatchUpdateException"
        assert (ve["sqlstate"], de["sqlstate"]) == ("42501", "23503")
        assert err({"error": ve["next"]}) == ("42501", R2.format(w=2, t=4, tw=1))
        assert err({"error": de["next"]})[0] == "23503"
        assert ve["counts"] == de["counts"] == [-3] * 20
        # rewritten, the 20 rows went as one statement of 16 rows and one of 4
        assert batch_entry(ve) == batch_entry(de) == (0 if props else 10)
        if tag == "transaction":
            assert err(v["aborted"]) == err(d["aborted"]) == ("25P02", ABORTED)
            assert v["rollback"]["ok"] is d["rollback"]["ok"] is True
        assert v["stored"]["ok"] == d["stored"]["ok"] == [{"c": 0}]
        assert v["good"]["ok"] == d["good"]["ok"] == ([-2, -2, 1] if props else [1, 1, 1])
