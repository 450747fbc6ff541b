"""BACKFILL DRY RUN | START | PAUSE | RESUME | CANCEL and SHOW BACKFILL from the
console: the CLI's engine on the daemon's backfill thread, its records in
operation_runs / audit_logs, the advisory lock shared with the CLI, and a
pgbench load through the same proxy that must not notice."""
import itertools
import os
import signal
import socket
import subprocess
import time

import psycopg
import pytest

import tgtest
from test_admin_common import (ADMIN_USER, BOOL, FLOAT8, INT8, TEXT, TIMESTAMPTZ, connect, console_proxy, ok,
                               psql, q)
from test_backfill_common import (ACTION, OWNED, PAUSE_ACTOR, WATCHED, fresh_db, json_lines, lock_backend,
                                  lock_key, recorded, start_slow_backfill, stop, tg, tg_popen)

_n = itertools.count()


@pytest.fixture
def db(pg):
    """3 workspaces, 9 tenants, 300 unbound rows per table."""
    return fresh_db(pg, f"adm_bf_{next(_n)}")


@pytest.fixture
def cp(proxy_factory, workdir, db):
    return console_proxy(proxy_factory, workdir, {"sidecar_dsn": db.dsn})


def unbound(db):
    return {t: db.unbound(t) for t in WATCHED}


def all_bound(db):
    return all(v == 0 for v in unbound(db).values()) and all(db.wrong(t) == 0 for t in OWNED)


def show(c):
    return ok(c, "SHOW BACKFILL").dicts()


def wait_done(c, timeout=120):
    """Until this process runs no backfill and every run shown is done."""
    def done():
        rows = show(c)
        return rows and all(r["state"] == "done" for r in rows) and rows
    return tgtest.wait_until(done, timeout, interval=0.1, what="the backfill to finish")


SHOW_COLUMNS = [("run_id", INT8), ("workspace_id", INT8), ("status", TEXT), ("outcome", TEXT), ("state", TEXT),
                ("total", INT8), ("processed", INT8), ("failed", INT8), ("percent", FLOAT8),
                ("rows_per_second", FLOAT8), ("eta_seconds", FLOAT8), ("started_at", TIMESTAMPTZ),
                ("completed_at", TIMESTAMPTZ), ("progress", TEXT)]


# ---------------------------------------------------------------- DRY RUN

def test_dry_run_answers_the_plan_and_writes_nothing(cp, db):
    before = db.hashes()
    a = psql(cp, "BACKFILL DRY RUN")
    with connect(cp) as c:
        b = ok(c, "BACKFILL DRY RUN")
        assert b.columns == [("table", TEXT), ("scanned", INT8), ("missing", INT8), ("unresolvable", INT8),
                             ("sample_ids", TEXT), ("sample_tenants", TEXT)]
        assert b.tag == "BACKFILL 13"
        one = ok(c, "BACKFILL DRY RUN TABLE findings")
        assert [r[0] for r in one.rows] == ["findings"]
        r = q(c, "BACKFILL DRY RUN TABLE nosuch")
        assert r.sqlstate == "42601" and "not a watched table" in r.message and "policies" in r.hint
        assert q(c, "BACKFILL DRY RUN BATCH 5").sqlstate == "42601"
        r = q(c, "BACKFILL START BATCH zero")
        assert r.sqlstate == "42601" and r.message == 'tenantguard console: bad arguments at "batch"'
        assert r.hint == "Syntax: BACKFILL START [TABLE t] [BATCH n] [MAX ROWS n] [THROTTLE ms]"
        assert q(c, "BACKFILL START MAX ROWS 0").sqlstate == "42601"
        assert q(c, "BACKFILL PAUSE NOW").sqlstate == "42601"
    assert a.columns == b.names and a.rows == b.rows
    plan = {r["table"]: r for r in a.dicts()}
    assert set(plan) == set(WATCHED)
    for t in OWNED:
        assert plan[t]["scanned"] == "300" and plan[t]["missing"] == "300" and plan[t]["unresolvable"] == "0"
    assert plan["audit_logs"]["missing"] == str(db.unbound("audit_logs"))
    assert db.hashes() == before
    assert f"admin {ADMIN_USER}: BACKFILL DRY RUN" in cp.log()


def test_dry_run_reports_unresolvable_rows(cp, db):
    db.q("UPDATE tenants SET workspace_id = NULL WHERE id = 2 RETURNING id")
    with connect(cp) as c:
        r = ok(c, "BACKFILL DRY RUN TABLE policies")
        row = r.dicts()[0]
        assert int(row["unresolvable"]) > 0 and row["sample_tenants"].split(",")[0] == "2"
        assert all(x.isdigit() for x in row["sample_ids"].split(","))
        assert any("unresolvable" in n or "without a workspace" in n for n in c.notices), c.notices
        # START refuses before any write
        before = db.hashes()
        s = q(c, "BACKFILL START TABLE policies")
        assert s.sqlstate == "55000" and "have a tenant without a workspace" in s.message
        assert s.hint == "BACKFILL DRY RUN shows the plan."
        assert db.hashes() == before


def test_backfill_needs_sidecar_dsn(proxy_factory, workdir):
    cp = console_proxy(proxy_factory, workdir)
    with connect(cp) as c:
        for cmd in ("BACKFILL START", "BACKFILL DRY RUN", "SHOW BACKFILL"):
            r = q(c, cmd)
            assert r.sqlstate == "55000" and "sidecar_dsn" in r.message, (cmd, r)
        for cmd in ("BACKFILL PAUSE", "BACKFILL RESUME", "BACKFILL CANCEL"):
            r = q(c, cmd)
            assert r.sqlstate == "55000" and "no backfill is running" in r.message


# ---------------------------------------------------------------- START under load

def pgbench_init(pg, dbname):
    subprocess.run([os.path.join(tgtest.PG_BIN, "pgbench"), "-i", "-q", "-s", "1", "-h", pg.sockdir, "-p",
                    str(pg.port), "-U", "app", dbname], check=True, capture_output=True, timeout=120)


def test_start_under_pgbench_completes_and_shows_progress(pg, cp, db):
    seed_more = ("INSERT INTO policies (tenant_id, name) SELECT 1 + (g % 9), 'more' || g "
                 "FROM generate_series(1, 3000) g")
    db.q(seed_more + " RETURNING 1")
    pgbench_init(pg, db.name)
    missing = sum(unbound(db).values())
    env = dict(os.environ, PGPASSWORD=tgtest.PASSWORDS["app"], PGSSLMODE="disable")
    bench = subprocess.Popen([os.path.join(tgtest.PG_BIN, "pgbench"), "-h", "127.0.0.1", "-p", str(cp.port),
                              "-U", "app", "-c", "2", "-j", "1", "-T", "12", "-n", db.name],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        a = psql(cp, "BACKFILL START BATCH 100 THROTTLE 50")
        assert a.columns == ["run_id", "workspace_id", "status", "outcome", "reused", "planned_rows"]
        runs = a.dicts()
        assert [r["workspace_id"] for r in runs] == ["1", "2", "3"]
        assert {r["status"] for r in runs} == {"running"} and {r["reused"] for r in runs} == {"f"}
        planned = sum(int(r["planned_rows"]) for r in runs)
        assert planned == missing
        assert f"NOTICE:  backfill started by ops: 3 run(s), {planned} row(s) to bind" in a.stderr
        seen = []
        with connect(cp) as c:
            r = ok(c, "SHOW BACKFILL")
            assert r.columns == SHOW_COLUMNS
            while True:
                rows = show(c)
                mine = [x for x in rows if x["run_id"] in {y["run_id"] for y in runs}]
                assert len(mine) == 3
                seen.append(sum(int(x["processed"]) for x in mine))
                if all(x["state"] == "done" for x in mine):
                    break
                assert all(x["state"] in ("running here", "paused here") for x in mine), mine
                if any(x["state"] == "running here" and x["eta_seconds"] for x in mine):
                    assert any(float(x["rows_per_second"] or 0) > 0 for x in mine)
                time.sleep(0.05)
            final = show(c)
        assert seen == sorted(seen), seen                      # progress only goes forward
        moving = {v for v in seen if 0 < v < planned}
        assert len(moving) >= 2, seen                           # seen moving, not just start and end
        assert {x["outcome"] for x in final if x["run_id"] in {y["run_id"] for y in runs}} == {"succeeded"}
        for x in final:
            assert x["percent"] == "100.0" and x["completed_at"] and x["progress"]
        assert all_bound(db)
    finally:
        out, err = bench.communicate(timeout=120)
    assert bench.returncode == 0, err
    assert "error" not in err.lower() and "aborted" not in out.lower(), (out, err)
    assert "number of failed transactions: 0 " in out
    # the engine's records: started and completed per run, actor console:ops
    audits = db.audits()
    assert [x["action"] for x in audits].count(ACTION + "started") == 3
    assert [x["action"] for x in audits].count(ACTION + "completed") == 3
    assert {x["actor"] for x in audits} == {"console:ops"}
    log = cp.log()
    assert f"admin {ADMIN_USER}: BACKFILL START" in log and "console backfill done" in log


def test_show_backfill_through_psql_and_psycopg(cp, db):
    with connect(cp) as c:
        assert ok(c, "BACKFILL START TABLE findings").tag == "BACKFILL 3"
        rows = wait_done(c)
    a = psql(cp, "SHOW BACKFILL")
    assert a.columns == [n for n, _ in SHOW_COLUMNS]
    assert [r["run_id"] for r in a.dicts()] == [r["run_id"] for r in rows]
    for r in a.dicts():
        assert r["status"] == "completed" and r["outcome"] == "succeeded" and r["state"] == "done"
        assert r["progress"] == f"findings {r['processed']}/{r['total']}" and r["eta_seconds"] == ""
    assert len(psql(cp, "SHOW BACKFILL 1").rows) == 1
    with connect(cp) as c:
        assert q(c, "SHOW BACKFILL 0").sqlstate == "42601"
        ok(c, "SHOW BACKFILL")
        assert any(n.startswith("the last console run (started by ops) ended: done") for n in c.notices), c.notices


# ---------------------------------------------------------------- PAUSE / RESUME / CANCEL

def runs_of(db, ids):
    return [r for r in db.runs() if str(r["id"]) in ids]


def test_pause_and_resume_are_recorded_and_hold_between_batches(cp, db):
    with connect(cp) as c:
        ids = {r["run_id"] for r in ok(c, "BACKFILL START BATCH 10 THROTTLE 30").dicts()}
        tgtest.wait_until(lambda: sum(int(r["processed"]) for r in show(c)) > 0, 30, what="some progress")
        assert ok(c, "BACKFILL PAUSE").tag == "BACKFILL PAUSE"   # answered once the engine holds
        rows = show(c)
        assert {r["state"] for r in rows if r["run_id"] in ids} == {"paused here"}
        held = [r["processed"] for r in rows]
        for _ in range(3):
            time.sleep(0.2)
            assert [r["processed"] for r in show(c)] == held     # nothing moves while paused
        runs = runs_of(db, ids)
        assert all(r["context"]["paused"] is True and r["context"]["paused_by"] == ADMIN_USER for r in runs)
        assert [a["action"] for a in db.audits()].count(ACTION + "paused") == 3
        assert ok(c, "BACKFILL PAUSE").tag == "BACKFILL PAUSE"   # already paused: at once
        assert "paused already" in c.notices[-1]
        r = psql(cp, "BACKFILL PAUSE")
        assert r.stdout.strip() == "BACKFILL PAUSE" and "paused already" in r.stderr
        r = psql(cp, "BACKFILL RESUME")
        assert r.stdout.strip() == "BACKFILL RESUME"
        wait_done(c)
    runs = runs_of(db, ids)
    assert all(r["context"]["paused"] is False and r["context"]["resumed_by"] == ADMIN_USER for r in runs)
    assert all(r["outcome"] == "succeeded" for r in runs)
    acts = [a for a in db.audits() if a["action"] in (ACTION + "paused", ACTION + "resumed")]
    assert [a["action"] for a in acts] == [ACTION + "paused"] * 3 + [ACTION + "resumed"] * 3
    assert {a["resource_id"] for a in acts} == ids and {a["actor"] for a in acts} == {"console:ops"}
    assert all(a["context"]["by"] == ADMIN_USER for a in acts)
    assert all_bound(db)
    log = cp.log()
    assert f"admin {ADMIN_USER}: BACKFILL PAUSE" in log and f"admin {ADMIN_USER}: BACKFILL RESUME" in log


def test_cancel_mid_run_stops_between_batches_and_start_resumes(cp, db):
    missing = sum(unbound(db).values())
    with connect(cp) as c:
        ids = {r["run_id"] for r in ok(c, "BACKFILL START BATCH 10 THROTTLE 30").dicts()}
        tgtest.wait_until(lambda: sum(int(r["processed"]) for r in show(c)) > 0, 30, what="some progress")
        r = psql(cp, "BACKFILL CANCEL")                    # answered once the runs are closed
        assert r.stdout.strip() == "BACKFILL CANCEL" and "NOTICE:  cancelled by the operator" in r.stderr
        # nothing runs any more: the second cancel has nothing to stop
        assert q(c, "BACKFILL CANCEL").sqlstate == "55000"
        runs = runs_of(db, ids)
        assert {x["status"] for x in runs} == {"completed"}
        assert {x["outcome"] for x in runs} <= {"partially_succeeded", "failed"}
        assert all(x["failure_summary"][-1]["code"] == "backfill_workspace_ids.cancelled" for x in runs)
        done_first = sum(x["summary_counts"]["succeeded"] for x in runs)
        left = sum(unbound(db).values())
        assert 0 < done_first < missing and left == missing - done_first   # stopped between batches
        assert [a["action"] for a in db.audits()].count(ACTION + "failed") == 3
        # the next START binds the rest, and only the rest
        ids2 = {x["run_id"] for x in ok(c, "BACKFILL START").dicts()}
        assert not ids2 & ids
        wait_done(c)
    runs2 = runs_of(db, ids2)
    assert sum(x["summary_counts"]["total"] for x in runs2) == left
    assert all(x["outcome"] == "succeeded" for x in runs2)
    assert all_bound(db)
    assert f"admin {ADMIN_USER}: BACKFILL CANCEL" in cp.log()


def test_one_run_at_a_time(cp, db):
    with connect(cp) as c:
        ok(c, "BACKFILL START BATCH 10 THROTTLE 30")
        r = q(c, "BACKFILL START")
        assert r.sqlstate == "55006" and "already running" in r.message
        ok(c, "BACKFILL CANCEL")


# ---------------------------------------------------------------- the lock, with the CLI

def runner_of(db):
    """context.runner of every run, once each run has one."""
    runs = db.runs()
    return [r["context"]["runner"] for r in runs] if runs and all("runner" in r["context"] for r in runs) else None


def test_cli_run_is_refused_while_the_console_runs(cp, db):
    program = f"tenantguard console backfill ({ADMIN_USER})"
    with connect(cp) as c:
        ok(c, "BACKFILL START BATCH 10 THROTTLE 30")
        # the console's runs name the daemon that drives them, not a backend
        runners = tgtest.wait_until(lambda: runner_of(db), 30, what="the runs' runner")
        backend = lock_backend(db)
        assert all(x["program"] == program and x["pid"] == cp.pid and x["host"] == socket.gethostname()
                   and x["backend_pid"] == backend for x in runners), runners
        r = db.backfill()
        assert r.returncode == 2, r.stdout + r.stderr
        assert "another backfill is running" in r.stderr
        assert f"(backend pid {backend}, " in r.stderr
        assert f'application "{program}"' in r.stderr
        text = cli_status(db)
        assert (f"Backfill lock: held by {program} pid {cp.pid} on host {socket.gethostname()} since "
                in text), text
        ok(c, "BACKFILL CANCEL")


def test_console_start_is_refused_while_the_cli_runs(cp, db):
    cli = tg_popen("backfill", "--dsn", db.dsn, "--batch-size", "10", "--throttle-ms", "30")
    host = socket.gethostname()
    try:
        tgtest.wait_until(lambda: any(r["status"] == "running" for r in db.runs()), 30, what="the CLI's runs")
        backend = lock_backend(db)
        with connect(cp) as c:
            r = q(c, "BACKFILL START")
            assert r.sqlstate == "55P03" and f"(backend pid {backend}, " in r.message, r
            rows = show(c)
            # the CLI's own pid (what SIGUSR1/SIGUSR2 go to), its host, and the backend labelled as such
            want = f"running in tenantguard backfill pid {cli.pid} on host {host} (backend pid {backend})"
            assert rows and all(x["state"] == want for x in rows if x["status"] == "running"), rows
            assert any(n.startswith(f"the backfill lock is held by tenantguard backfill pid {cli.pid} on host "
                                    f"{host} since ") and f"(backend pid {backend}, " in n
                       for n in c.notices), c.notices
    finally:
        cli.send_signal(signal.SIGINT)      # stop between batches, resumable
        cli.wait(60)
    with connect(cp) as c:
        rows = show(c)
        assert any(x["state"] == "interrupted (resumable)" for x in rows), rows
        # the console resumes the CLI's runs (same identity: same tables)
        started = ok(c, "BACKFILL START").dicts()
        assert {x["reused"] for x in started} == {"t"}
        wait_done(c)
    assert all_bound(db)


def cli_status(db, *args):
    r = tg("status", "--dsn", db.dsn, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_a_cli_backfill_paused_elsewhere_shows_as_paused(cp, db, tmp_path):
    """SIGUSR1 to a CLI backfill: SHOW BACKFILL on the console and
    `tenantguard status` say its runs are paused, not running."""
    p = start_slow_backfill(db, tmp_path)
    host = socket.gethostname()
    try:
        p.send_signal(signal.SIGUSR1)
        runs = tgtest.wait_until(lambda: recorded(db, "paused", True), 30, what="the pause recorded")
        ids = {str(r["id"]) for r in runs}
        backend = lock_backend(db)
        assert backend is not None and backend != p.pid
        with connect(cp) as c:
            rows = [x for x in show(c) if x["run_id"] in ids]
            assert len(rows) == 3, rows
            for x in rows:
                # the pid to send SIGUSR2 to is the CLI's, not the backend's
                assert x["state"] == (f"paused in tenantguard backfill pid {p.pid} on host {host} "
                                      f"(backend pid {backend})"), x
                assert x["status"] == "running" and x["eta_seconds"] is None     # no ETA while held
            assert any(n.startswith(f"the backfill lock is held by tenantguard backfill pid {p.pid} on host "
                                    f"{host} since ") and f"(backend pid {backend}, client local socket, "
                       'application "tenantguard backfill", connected since ' in n for n in c.notices), c.notices
        text = cli_status(db)
        assert text.count("running (paused)") == 3 and "(interrupted)" not in text, text
        assert text.splitlines()[0].startswith(
            f"Backfill lock: held by tenantguard backfill pid {p.pid} on host {host} since "), text
        assert (f" (backend pid {backend}, client local socket, application \"tenantguard backfill\", "
                "connected since ") in text.splitlines()[0], text
        doc = json_lines(cli_status(db, "--json"))[0]
        assert {str(x["id"]) for x in doc["runs"] if x["paused"]} == ids
        assert all(x["paused_by"] == PAUSE_ACTOR and x["paused_at"] for x in doc["runs"])
        lock = doc["lock"]
        assert lock["backend_pid"] == backend and lock["pid"] == backend
        runner = lock["runner"]
        assert (runner["program"], runner["pid"], runner["host"], runner["backend_pid"]) == \
            ("tenantguard backfill", p.pid, host, backend), lock
        assert runner["since"] and runner["backend_start"]
        assert all(x["runner"] == runner for x in doc["runs"])

        p.send_signal(signal.SIGUSR2)
        tgtest.wait_until(lambda: recorded(db, "resumed", False), 30, what="the resume recorded")
        with connect(cp) as c:
            states = {x["state"] for x in show(c) if x["run_id"] in ids}
            assert not any(st.startswith("paused") for st in states), states
        assert "(paused)" not in cli_status(db)
        assert p.wait(120) == 0
    finally:
        stop(p)
    assert {r["outcome"] for r in db.runs()} == {"succeeded"}
    doc = json_lines(cli_status(db, "--json"))[0]
    assert not any(x["paused"] for x in doc["runs"]) and doc["lock"] is None
    assert all_bound(db)


def test_a_runner_is_named_only_while_it_holds_the_lock(cp, db, tmp_path):
    """A killed call's runs keep the runner they recorded (who drove them
    last), but no answer names that dead process as the lock's holder: a
    session that recorded no runner is shown by its backend pid alone, and
    while another call drives other runs, these show as interrupted."""
    host = socket.gethostname()
    first = start_slow_backfill(db, tmp_path, name="first")
    stop(first)                                                    # SIGKILL
    tgtest.wait_until(lambda: lock_backend(db) is None, 30, what="the killed call's lock to go")
    old = {str(r["id"]) for r in db.runs()}
    assert len(old) == 3 and all(r["context"]["runner"]["pid"] == first.pid for r in db.runs())

    with db.conn() as holder:                                      # holds the lock, records nothing
        holder.execute("SET application_name = 'other holder'")
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key(),))
        backend = holder.info.backend_pid
        with connect(cp) as c:
            rows = [x for x in show(c) if x["run_id"] in old]
            assert [x["state"] for x in rows] == [f"running in backend pid {backend} (other holder)"] * 3, rows
            assert any(n.startswith(f"the backfill lock is held by backend pid {backend} (client local socket, "
                                    'application "other holder", connected since ')
                       and n.endswith("no run records the process behind it") for n in c.notices), c.notices
        doc = json_lines(cli_status(db, "--json"))[0]
        assert doc["lock"]["backend_pid"] == backend and doc["lock"]["runner"] is None
        assert {x["runner"]["pid"] for x in doc["runs"]} == {first.pid}    # recorded, not claimed
        line = cli_status(db).splitlines()[0]
        assert line.startswith(f'Backfill lock: held by backend pid {backend} (client local socket, '
                               f'application "other holder", connected since '), line
        assert line.endswith("no run records the process behind it (a migrate, an older tenantguard, "
                             "or a backfill still planning)") and str(first.pid) not in line, line

    # another selection, so other runs; held paused so it stays the holder
    second = tg_popen("backfill", "--dsn", db.dsn, "--table", "findings", "--batch-size", "10",
                      "--throttle-ms", "200", "--actor", PAUSE_ACTOR)
    try:
        tgtest.wait_until(lambda: any(str(r["id"]) not in old and r["summary_counts"]["processed"] > 0
                                      for r in db.runs()), 30, what="the second call's progress")
        second.send_signal(signal.SIGUSR1)
        tgtest.wait_until(lambda: all(r["context"].get("paused") is True for r in db.runs()
                                      if str(r["id"]) not in old), 30, what="the second call's pause")
        backend = lock_backend(db)
        doc = json_lines(cli_status(db, "--json"))[0]
        runner = doc["lock"]["runner"]
        assert (runner["pid"], runner["host"], runner["backend_pid"]) == (second.pid, host, backend), doc["lock"]
        for x in doc["runs"]:
            if str(x["id"]) in old:
                assert x["interrupted"] is True and x["paused"] is False and x["runner"]["pid"] == first.pid, x
            else:
                assert x["interrupted"] is False and x["paused"] is True and x["runner"] == runner, x
        with connect(cp) as c:
            states = {x["run_id"]: x["state"] for x in show(c)}
        assert {states[i] for i in old} == {"interrupted (resumable)"}, states
        assert {v for k, v in states.items() if k not in old} == \
            {f"paused in tenantguard backfill pid {second.pid} on host {host} (backend pid {backend})"}, states
    finally:
        stop(second)


# ---------------------------------------------------------------- exit

def test_sigint_stops_a_running_backfill_resumably(cp, db):
    with connect(cp) as c:
        ids = {r["run_id"] for r in ok(c, "BACKFILL START BATCH 10 THROTTLE 30").dicts()}
        tgtest.wait_until(lambda: sum(int(r["processed"]) for r in show(c)) > 0, 30, what="some progress")
    cp.send_signal(signal.SIGINT)
    assert cp.wait_exit(30) == 0
    runs = runs_of(db, ids)
    assert {x["status"] for x in runs} == {"running"}           # left active: resumable
    assert "stopping the console backfill" in cp.log()
    r = db.backfill()                                           # the CLI resumes them
    assert r.returncode == 0, r.stdout + r.stderr
    assert {x["status"] for x in runs_of(db, ids)} == {"completed"}
    assert all_bound(db)
