"""The admin console through real psql and psycopg 3: login, every command's
columns and values, refusals (extended protocol, wrong password, unknown
user, non-loopback bind), PAUSE/RESUME, KILL CLIENT, SHUTDOWN."""
import json
import os
import signal
import socket
import subprocess
import threading
import time

import psycopg
import pytest

import tgtest
from test_admin_common import (ADMIN_PASSWORD, ADMIN_USER, BOOL, FLOAT8, INT8, TEXT, TIMESTAMPTZ,
                               connect, console_dsn, console_proxy, ok, passwd_line, psql, q)


@pytest.fixture
def cp(proxy_factory, workdir):
    """A tenantguard (observe mode, default policy) with its console."""
    return console_proxy(proxy_factory, workdir)


def both(cp, sql):
    """The same command through psql and psycopg: (psql result, psycopg result)."""
    a = psql(cp, sql)
    with connect(cp) as c:
        b = ok(c, sql)
    assert a.columns == b.names, (a.columns, b.names)
    return a, b


# ---------------------------------------------------------------- login

def test_psql_logs_in_and_shows_the_version(cp):
    a, b = both(cp, "SHOW VERSION")
    assert b.columns == [("version", TEXT)]
    assert len(a.rows) == 1 and a.rows[0][0].startswith("tenantguard ")
    assert b.rows == a.rows and b.tag == "SHOW 1"
    assert f"admin {ADMIN_USER}: " not in cp.log()   # a SHOW is not an operator action
    assert "console login" in cp.log()


def login_error(cp, user, password, db="tenantguard"):
    """The ErrorResponse of a failed console login (raw protocol: libpq keeps no SQLSTATE)."""
    with tgtest.PgWire(cp.admin_port) as w:
        with pytest.raises(tgtest.PgWireError) as e:
            w.login(user=user, database=db, password=password)
        assert w.is_closed(5)
    return e.value.fields


def test_wrong_password_is_28P01_and_nothing_else(cp):
    f = login_error(cp, ADMIN_USER, "not-the-password")
    assert f["C"] == "28P01" and f["S"] == "FATAL"
    assert f["M"] == 'password authentication failed for user "ops"'
    msg = tgtest.connect_error(console_dsn(cp, password="not-the-password"))
    assert 'password authentication failed for user "ops"' in msg
    r = psql(cp, "SHOW VERSION", password="not-the-password", check=False)
    assert r.returncode != 0 and "password authentication failed" in r.stderr


def test_unknown_user_fails_like_a_wrong_password(cp):
    f = login_error(cp, "mallory", ADMIN_PASSWORD)
    assert f["C"] == "28P01" and f["M"] == 'password authentication failed for user "mallory"'
    msg = tgtest.connect_error(console_dsn(cp, user="mallory"))
    assert 'password authentication failed for user "mallory"' in msg
    r = psql(cp, "SHOW VERSION", user="mallory", check=False)
    assert r.returncode != 0 and r.stdout == ""


def test_the_console_database_is_tenantguard(cp):
    f = login_error(cp, ADMIN_USER, ADMIN_PASSWORD, db="app")
    assert f["C"] == "3D000"


def test_passwd_output_is_a_verifier_postgresql_accepts(pg, workdir):
    """The line's verifier, set as a role's password, lets that role log in
    to PostgreSQL itself with the password: the format is PostgreSQL's."""
    line = passwd_line("verifier_role", "Verif-Pass-9")
    name, verifier = [f.strip('"') for f in line.split()]
    assert name == "verifier_role" and verifier.startswith("SCRAM-SHA-256$4096:")
    pg.psql("DROP ROLE IF EXISTS verifier_role", db="postgres")
    pg.psql(f"CREATE ROLE verifier_role LOGIN PASSWORD '{verifier}'", db="postgres")
    try:
        stored = pg.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'verifier_role'", db="postgres")
        assert stored == verifier   # taken as a verifier, not hashed again
        with psycopg.connect(f"host=127.0.0.1 port={pg.port} user=verifier_role dbname=postgres "
                             f"password=Verif-Pass-9 sslmode=disable") as c:
            assert c.execute("SELECT current_user").fetchone()[0] == "verifier_role"
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(f"host=127.0.0.1 port={pg.port} user=verifier_role dbname=postgres "
                            f"password=wrong sslmode=disable")
    finally:
        pg.psql("DROP ROLE verifier_role", db="postgres")


def test_plaintext_password_in_the_auth_file_works_with_a_warning(proxy_factory, workdir):
    path = os.path.join(workdir, "plain_users.txt")
    with open(path, "w") as f:
        f.write('"plainops" "plain-Pass-1"\n')
    cp = console_proxy(proxy_factory, workdir, {"admin_auth_file": path})
    assert "plaintext" in cp.log().lower()
    assert "plain-Pass-1" not in cp.log()
    r = psql(cp, "SHOW VERSION", user="plainops", password="plain-Pass-1")
    assert r.rows[0][0].startswith("tenantguard")


def test_non_loopback_admin_addr_is_refused_unless_allowed(proxy_factory, workdir):
    p = console_proxy(proxy_factory, workdir, {"admin_addr": "0.0.0.0"}, start=False)
    r = subprocess.run([tgtest.BINARY, "check-config", "-c", p.config_path], capture_output=True, text=True)
    assert r.returncode == 1
    assert "admin_addr = 0.0.0.0 is not a loopback address" in r.stderr
    assert "admin_allow_remote" in r.stderr
    p.write_config({"metrics_addr": "0.0.0.0", "admin_addr": "127.0.0.1"})
    r = subprocess.run([tgtest.BINARY, "check-config", "-c", p.config_path], capture_output=True, text=True)
    assert r.returncode == 1 and "metrics_addr = 0.0.0.0 is not a loopback address" in r.stderr
    p.write_config({"admin_addr": "0.0.0.0", "metrics_addr": "0.0.0.0", "admin_allow_remote": "on"})
    r = subprocess.run([tgtest.BINARY, "check-config", "-c", p.config_path], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    p.start()
    tgtest.wait_until(lambda: tgtest.port_open(p.admin_port), 10, what="console on 0.0.0.0")
    assert psql(p, "SHOW VERSION").rows


# ---------------------------------------------------------------- protocol

def test_extended_protocol_gets_0A000_not_a_hang(cp):
    with connect(cp) as c:
        with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
            c.execute("SHOW STATS", binary=True)    # Parse/Bind/Describe/Execute/Sync
        assert "only the simple query protocol" in str(e.value)
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            c.execute("SHOW HELP", prepare=True)
        r = c.pgconn.exec_params(b"SHOW VERSION", [])
        assert r.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == b"0A000"
        # the session goes on with simple queries
        assert ok(c, "SHOW VERSION").rows[0][0].startswith("tenantguard")


def test_extended_protocol_raw_batch_one_error_then_ready(cp):
    with tgtest.PgWire(cp.admin_port) as w:
        w.login(user=ADMIN_USER, database="tenantguard", password=ADMIN_PASSWORD)
        w.send(w.parse_msg("SHOW STATS") + w.bind_msg() + w.execute_msg() + w.SYNC)
        msgs = w.read_until("Z")
        errs = tgtest.errors_of(msgs)
        assert len(errs) == 1 and errs[0]["C"] == "0A000"
        rows = tgtest.rows_of(w.query("SHOW VERSION"))
        assert rows and rows[0][0].startswith("tenantguard")


def test_unknown_command_and_bad_arguments_are_42601_with_a_hint(cp):
    with connect(cp) as c:
        r = q(c, "SHOW NOTHING")
        assert r.sqlstate == "42601" and "unknown command" in r.message and "SHOW HELP" in r.hint
        r = q(c, "KILL CLIENT abc")
        assert r.sqlstate == "42601" and r.hint == "Syntax: KILL CLIENT id"
        r = q(c, "SET mode = loud")
        assert r.sqlstate == "42601" and "SET mode" in r.hint
        r = q(c, "BACKFILL START BATCH zero")     # no sidecar_dsn here: that comes first
        assert r.sqlstate == "55000" and "sidecar_dsn" in r.message
    r = psql(cp, "SHOW NOTHING", check=False)
    assert r.returncode != 0 and "unknown command" in r.stderr


# ---------------------------------------------------------------- SHOWs

def test_show_help_lists_every_command(cp):
    a, b = both(cp, "SHOW HELP")
    assert b.columns == [("command", TEXT), ("description", TEXT)]
    cmds = [r[0] for r in a.rows]
    for c in ("SHOW HELP", "SHOW VERSION", "SHOW CONFIG", "SHOW POLICY", "SHOW STATS", "SHOW CLIENTS",
              "SHOW SERVERS", "SHOW VIOLATIONS [n]", "SHOW BACKFILL [n]", "SHOW MEM", "RELOAD", "PAUSE",
              "RESUME", "KILL CLIENT id", "SHUTDOWN [WAIT]", "BACKFILL DRY RUN [TABLE t]", "BACKFILL PAUSE",
              "BACKFILL RESUME", "BACKFILL CANCEL"):
        assert c in cmds, c
    assert any(c.startswith("SET mode") for c in cmds)
    assert any(c.startswith("BACKFILL START [TABLE t] [BATCH n] [MAX ROWS n]") for c in cmds)
    assert b.rows == a.rows and all(r[1] for r in b.rows)


def test_show_config_hides_the_sidecar_password(proxy_factory, workdir, pg):
    cp = console_proxy(proxy_factory, workdir, {"sidecar_dsn": pg.dsn(password="dsn-Secret-1")})
    a, b = both(cp, "SHOW CONFIG")
    assert b.columns == [("section", TEXT), ("key", TEXT), ("value", TEXT), ("default", TEXT),
                         ("reload", BOOL)]
    by_key = {r[1]: r for r in a.rows}
    assert by_key["listen_port"][2] == str(cp.port) and by_key["listen_port"][4] == "f"
    assert by_key["admin_port"][2] == str(cp.admin_port)
    assert by_key["sidecar_dsn"][2] == "(set)"
    assert by_key["log_level"][4] == "t"
    assert "dsn-Secret-1" not in a.stdout and all("dsn-Secret-1" not in str(r) for r in b.rows)


def test_show_policy_lists_the_watched_tables(cp):
    a, b = both(cp, "SHOW POLICY")
    assert b.columns == [("table", TEXT), ("kind", TEXT), ("tenant_column", TEXT), ("workspace_column", TEXT),
                         ("mode", TEXT), ("mode_source", TEXT)]
    d = {r["table"]: r for r in a.dicts()}
    assert len(d) == 13
    assert d["public.policies"] == {"table": "public.policies", "kind": "tenant-owned", "tenant_column": "tenant_id",
                                    "workspace_column": "workspace_id", "mode": "observe", "mode_source": "global"}
    assert d["public.audit_logs"]["kind"] == "audit"


def test_show_clients_and_servers_see_a_session(cp):
    with cp.connect() as app:
        app.execute("SELECT 1")
        pid = app.info.backend_pid
        a, b = both(cp, "SHOW CLIENTS")
        assert b.columns[:4] == [("id", INT8), ("kind", TEXT), ("state", TEXT), ("user", TEXT)]
        assert ("since", TIMESTAMPTZ) in b.columns and ("tls", BOOL) in b.columns
        rows = a.dicts()
        client = [r for r in rows if r["kind"] == "client"]
        console = [r for r in rows if r["kind"] == "console"]
        assert len(client) == 1 and len(console) == 1    # psql's own console session
        c = client[0]
        assert c["user"] == "app" and c["database"] == "app" and c["state"] == "active"
        assert c["peer"].startswith("127.0.0.1:") and c["tls"] == "f" and int(c["bytes_in"]) > 0
        a, b = both(cp, "SHOW SERVERS")
        assert b.columns[:5] == [("id", INT8), ("state", TEXT), ("user", TEXT), ("database", TEXT),
                                 ("backend_pid", INT8)]
        srv = a.dicts()
        assert len(srv) == 1 and srv[0]["backend_pid"] == str(pid) and srv[0]["id"] == c["id"]
        assert int(srv[0]["bytes_out"]) > 0 and int(srv[0]["bytes_in"]) > 0


def test_show_stats_and_mem_columns(cp):
    with cp.connect() as app:
        for _ in range(3):
            app.execute("SELECT 1")
    a, b = both(cp, "SHOW STATS")
    assert b.columns == [("table", TEXT), ("rule", TEXT), ("seen", INT8), ("passed", INT8), ("rewritten", INT8),
                         ("rejected", INT8), ("refused", INT8), ("statements", INT8), ("avg_latency_us", FLOAT8),
                         ("p99_latency_us", FLOAT8), ("audit_written", INT8), ("audit_dropped", INT8)]
    total = a.dicts()[-1]
    assert total["table"] == "*" and int(total["statements"]) >= 3
    assert float(total["avg_latency_us"]) > 0 and total["audit_written"] == "0"
    a, b = both(cp, "SHOW MEM")
    assert b.columns == [("object", TEXT), ("count", INT8), ("bytes", INT8), ("detail", TEXT)]
    objs = {r[0]: r for r in a.rows}
    assert set(objs) == {"sessions", "request queue slots", "decision cache", "violation log", "table layout cache"}
    assert "hit rate" in objs["decision cache"][3]


def test_show_violations_after_a_refusal(proxy_factory, workdir):
    cp = console_proxy(proxy_factory, workdir, {"mode": "enforce"})
    with cp.connect() as app:
        # enforcement without tenantguard's SQL helpers in the database: refused
        with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
            app.execute("INSERT INTO policies (tenant_id, name) VALUES (1, 'x-secret-value')")
        state = e.value.sqlstate
    a, b = both(cp, "SHOW VIOLATIONS")
    assert b.columns == [("time", TIMESTAMPTZ), ("session", INT8), ("client", TEXT), ("table", TEXT),
                         ("rule", TEXT), ("sqlstate", TEXT), ("mode", TEXT), ("fingerprint", TEXT)]
    assert len(a.rows) >= 1
    v = a.dicts()[0]
    assert v["sqlstate"] == state and v["mode"] == "enforce" and v["client"].startswith("app@app 127.0.0.1:")
    assert "x-secret-value" not in a.stdout
    assert len(psql(cp, "SHOW VIOLATIONS 0").rows) == 0
    with connect(cp) as c:
        assert q(c, "SHOW VIOLATIONS 99999").sqlstate == "42601"


# ---------------------------------------------------------------- operator actions

def test_reload_and_set_mode_are_logged_with_the_admin_user(cp):
    with connect(cp) as c:
        assert ok(c, "SET mode = enforce FOR TABLE policies").tag == "SET"
        pol = {r[0]: r for r in ok(c, "SHOW POLICY").rows}
        assert pol["public.policies"][4:] == ["enforce", "admin"]
        assert pol["public.findings"][4:] == ["observe", "global"]
        assert ok(c, "SET mode = default FOR TABLE policies").tag == "SET"
        assert {r[0]: r for r in ok(c, "SHOW POLICY").rows}["public.policies"][4:] == ["observe", "global"]
        r = q(c, "SET mode = enforce FOR TABLE nosuch")
        assert r.sqlstate == "42601" and "not a watched table" in r.message
        assert ok(c, "RELOAD").tag == "RELOAD"
    log = cp.log()
    assert f"admin {ADMIN_USER}: SET mode = enforce FOR TABLE policies" in log
    assert f"admin {ADMIN_USER}: RELOAD" in log


def test_operator_commands_through_psql(cp):
    """psql prints each command's tag; the effects are those of the psycopg tests."""
    for cmd, tag in (("SET mode = enforce FOR TABLE findings", "SET"), ("RELOAD", "RELOAD"),
                     ("PAUSE", "PAUSE"), ("RESUME", "RESUME"), ("SET mode = default", "SET")):
        r = psql(cp, cmd)
        assert r.stdout.strip() == tag and r.stderr == "", (cmd, r.stdout, r.stderr)
    r = psql(cp, "SHOW POLICY")
    assert {row["mode_source"] for row in r.dicts()} == {"global"}
    r = psql(cp, "KILL CLIENT 999999", check=False)
    assert r.returncode != 0 and "no client with id 999999" in r.stderr


def test_reload_that_fails_keeps_the_running_config(cp):
    with open(cp.config_path, "a") as f:
        f.write("bogus_key = 1\n")
    with connect(cp) as c:
        r = q(c, "RELOAD")
        assert r.sqlstate == "F0000" and "reload failed" in r.message
        assert ok(c, "SHOW VERSION").ok


def test_pause_holds_and_resume_releases_a_waiting_statement(cp):
    with cp.connect() as app, connect(cp) as c:
        app.execute("SELECT 1")
        assert ok(c, "PAUSE").tag == "PAUSE"
        done = threading.Event()
        result = {}

        def run():
            result["v"] = app.execute("SELECT 42").fetchone()[0]
            done.set()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        # held: the client shows up as paused and gets no answer
        tgtest.wait_until(lambda: any(r["paused"] == "t" for r in ok(c, "SHOW CLIENTS").dicts()), 10,
                          what="a paused client")
        assert not done.is_set()
        assert ok(c, "RESUME").tag == "RESUME"
        assert done.wait(10) and result["v"] == 42
        t.join(5)
    log = cp.log()
    assert f"admin {ADMIN_USER}: PAUSE" in log and f"admin {ADMIN_USER}: RESUME" in log


def test_pause_waits_for_a_running_statement(cp):
    """PAUSE answers only once the running statement is done: the statement's
    own end (clock_timestamp() on the server, same machine) comes first."""
    import datetime
    with cp.connect() as app, connect(cp) as c:
        ended = {}
        t = threading.Thread(target=lambda: ended.setdefault(
            "at", app.execute("SELECT pg_sleep(1), clock_timestamp()").fetchone()[1]), daemon=True)
        t.start()
        tgtest.wait_until(lambda: any(r["pending"] != "0" for r in ok(c, "SHOW CLIENTS").dicts()
                                      if r["kind"] == "client"), 10, what="a running statement")
        assert ok(c, "PAUSE").tag == "PAUSE"
        answered = datetime.datetime.now(datetime.timezone.utc)
        t.join(10)
        assert ended["at"] <= answered
        ok(c, "RESUME")


def test_kill_client(cp):
    with cp.connect() as app, connect(cp) as c:
        app.execute("SELECT 1")
        cid = [r for r in ok(c, "SHOW CLIENTS").dicts() if r["kind"] == "client"][0]["id"]
        assert ok(c, f"KILL CLIENT {cid}").tag == "KILL"
        with pytest.raises(psycopg.OperationalError) as e:
            app.execute("SELECT 1")
        assert "administrator command" in str(e.value)
        tgtest.wait_until(lambda: not [r for r in ok(c, "SHOW CLIENTS").dicts() if r["kind"] == "client"], 10,
                          what="the client gone")
        r = q(c, f"KILL CLIENT {cid}")
        assert r.sqlstate == "42704"
    assert f"admin {ADMIN_USER}: KILL CLIENT {cid}" in cp.log()


def test_kill_client_through_psql(cp):
    with cp.connect() as app:
        app.execute("SELECT 1")
        cid = [r for r in psql(cp, "SHOW CLIENTS").dicts() if r["kind"] == "client"][0]["id"]
        r = psql(cp, f"KILL CLIENT {cid}")
        assert r.returncode == 0
        with pytest.raises(psycopg.OperationalError):
            app.execute("SELECT 1")


def test_shutdown_closes_everything_and_exits(cp):
    app = cp.connect()
    with connect(cp) as c:
        r = q(c, "SHUTDOWN")
        assert r.ok and r.tag == "SHUTDOWN"
    assert cp.wait_exit(15) == 0
    with pytest.raises(psycopg.OperationalError):
        app.execute("SELECT 1")
    app.close()
    assert f"admin {ADMIN_USER}: SHUTDOWN" in cp.log()


def test_shutdown_wait_lets_a_transaction_finish(cp):
    app = cp.connect()
    app.execute("SELECT 1")
    r = psql(cp, "SHUTDOWN WAIT")
    assert r.returncode == 0
    # draining: the open session still works, new logins are refused
    assert app.execute("SELECT 7").fetchone()[0] == 7
    assert "shutting down" in tgtest.connect_error(cp.dsn())
    assert cp.proc.poll() is None
    app.close()
    assert cp.wait_exit(15) == 0


# ---------------------------------------------------------------- logs

def test_json_log_lines_parse_and_carry_the_admin_user(proxy_factory, workdir):
    cp = console_proxy(proxy_factory, workdir, {"log_format": "json"})
    with connect(cp) as c:
        ok(c, "SET mode = enforce FOR TABLE findings")
        ok(c, "RELOAD")
    with cp.connect() as app:
        app.execute("SELECT 1")
    cp.stop()
    lines = [l for l in cp.log().splitlines() if l.strip()]
    objs = []
    for l in lines:
        if l.startswith("==") or "Sanitizer" in l:
            continue
        o = json.loads(l)
        assert {"ts", "level", "msg"} <= set(o), o
        objs.append(o)
    ops = [o for o in objs if o["msg"].startswith(f"admin {ADMIN_USER}: SET mode")]
    assert ops and ops[0]["side"] == "admin" and ops[0]["user"] == ADMIN_USER
    assert ops[0]["db"] == "tenantguard" and ops[0]["peer"].startswith("127.0.0.1:")
    assert any(o["msg"].startswith(f"admin {ADMIN_USER}: RELOAD") for o in objs)
    assert ADMIN_PASSWORD not in cp.log()
