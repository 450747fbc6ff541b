"""tenantguard backfill against a real PostgreSQL: what it writes, what it
records in operation_runs and audit_logs, and what it refuses."""
import datetime
import itertools

import psycopg
import pytest

from test_backfill_common import (ACTION, OWNED, RUN_TYPE, WATCHED, fresh_db, identity_hash,
                                  json_lines, lock_key, tg)

_n = itertools.count()


@pytest.fixture
def db(pg):
    """3 workspaces, 9 tenants, 300 unbound rows per table."""
    return fresh_db(pg, f"bf_runs_{next(_n)}")


def all_bound(db):
    return all(db.unbound(t) == 0 for t in WATCHED) and all(db.wrong(t) == 0 for t in OWNED)


def test_backfill_binds_every_row_to_its_tenants_workspace(db):
    r = db.backfill()
    assert r.returncode == 0, r.stdout + r.stderr
    assert all_bound(db)
    # audit rows without a tenant are platform/workspace scoped: left alone
    assert db.one("SELECT count(*) FROM audit_logs WHERE action = 'seed' AND tenant_id IS NULL "
                  "AND workspace_id IS NOT NULL") == 0
    out = r.stdout
    # the plan table comes before any run line, the summary after
    assert out.index("Missing workspace_id") < out.index("Workspace 1: run #")
    assert "Done in" in out and "SELECT count(*) FROM policies WHERE workspace_id IS NULL;" in out
    assert ("SELECT count(*) FROM audit_logs WHERE tenant_id IS NOT NULL AND workspace_id IS NULL;"
            in out)


def test_operation_runs_and_audit_logs_exactly_as_specified(db):
    tables = WATCHED
    expected = {t: db.missing_by_ws(t) for t in tables}
    before = datetime.datetime.now(datetime.timezone.utc)
    r = db.backfill("--batch-size", "70", "--actor", "ops:alice")
    assert r.returncode == 0, r.stderr
    runs = db.runs()
    assert [x["workspace_id"] for x in runs] == [1, 2, 3]       # one per workspace with tenants
    for run in runs:
        ws = run["workspace_id"]
        targets = {t: expected[t].get(ws, 0) for t in tables}
        total = sum(targets.values())
        assert run["type"] == RUN_TYPE and run["tenant_id"] is None
        assert run["status"] == "completed" and run["outcome"] == "succeeded"
        assert run["run_identity_hash"] == identity_hash(ws, tables)
        ctx = run["context"]
        assert ctx["source"] == "tenantguard backfill" and ctx["workspace_id"] == ws
        assert ctx["batch_size"] == 70 and ctx["max_rows"] is None and ctx["resume_from"] == 0
        assert ctx["tables"] == sorted(tables)
        assert set(ctx["table_progress"]) == set(tables)
        for t in tables:
            p = ctx["table_progress"][t]
            assert p["target_rows"] == targets[t] and p["processed"] == targets[t], t
            # the upper id of the last batch that bound one of its rows
            assert p["last_processed_id"] >= db.one(
                f"SELECT coalesce(max(t.id), 0) FROM {t} t JOIN tenants tn ON tn.id = t.tenant_id "
                f"WHERE tn.workspace_id = %s", ws)
        assert run["summary_counts"] == {"total": total, "processed": total, "succeeded": total,
                                         "failed": 0}
        assert run["failure_summary"] == []
        assert before <= run["created_at"] <= run["started_at"] <= run["completed_at"]
        assert run["updated_at"] >= run["completed_at"]

        entries = [a for a in db.audits() if a["resource_id"] == str(run["id"])]
        assert [a["action"] for a in entries] == [ACTION + "started", ACTION + "completed"]
        started, completed = entries
        for a in entries:
            assert a["workspace_id"] == ws and a["tenant_id"] is None
            assert a["actor"] == "ops:alice" and a["resource_type"] == "operation_run"
            assert a["status"] == "success"
        assert started["context"] == {"operation_run_id": run["id"], "tables": sorted(tables),
                                      "planned_rows": total, "batch_size": 70, "max_rows": None,
                                      "resume_from": 0}
        c = completed["context"]
        assert c["operation_run_id"] == run["id"] and c["tables"] == sorted(tables)
        assert c["outcome"] == "succeeded" and c["counts"] == run["summary_counts"]
        dur = (run["completed_at"] - run["started_at"]).total_seconds() * 1000
        assert abs(c["duration_ms"] - dur) <= 1
        assert "failures" not in c
    assert len(db.audits()) == 2 * len(runs)


def test_rerun_after_completion_is_a_noop_that_records_its_run(db):
    assert db.backfill().returncode == 0
    data = db.binding_hashes()
    first = db.runs()
    r = db.backfill("--json")
    assert r.returncode == 0, r.stderr
    assert db.binding_hashes() == data
    runs = db.runs()[len(first):]
    assert len(runs) == 3
    for run in runs:
        assert run["status"] == "completed" and run["outcome"] == "succeeded"
        assert run["summary_counts"] == {"total": 0, "processed": 0, "succeeded": 0, "failed": 0}
        # same identity as the first run's: reuse only applies to ACTIVE runs
        assert run["run_identity_hash"] == identity_hash(run["workspace_id"], WATCHED)
    assert len(db.audits()) == 2 * 6
    summary = json_lines(r.stdout)[-1]
    assert summary["event"] == "summary" and summary["rows_this_call"] == 0


def test_dry_run_writes_nothing(db):
    before = db.hashes()
    r = db.backfill("--dry-run")
    assert r.returncode == 0, r.stderr
    assert db.hashes() == before
    assert "Dry-run complete. No changes written" in r.stdout
    assert "| policies " in r.stdout and "| 300 " in r.stdout
    # no lock either: a dry run works while a backfill holds it
    with db.conn() as c:
        c.execute("SELECT pg_advisory_lock(%s)", (lock_key(),))
        assert db.backfill("--dry-run").returncode == 0


def test_unresolvable_tenants_abort_before_any_write(db):
    db.q("UPDATE tenants SET workspace_id = NULL WHERE id IN (4, 8)")
    before = db.hashes()
    for args in ((), ("--dry-run",), ("--table", "findings")):
        r = db.backfill(*args)
        assert r.returncode == 2, r.stdout + r.stderr
        assert db.hashes() == before
    n = db.one("SELECT count(*) FROM findings WHERE tenant_id IN (4, 8)")
    assert f"Unresolvable tenant->workspace mapping in findings ({n} rows)" in r.stderr
    ids = [i for (i,) in db.q("SELECT f.id FROM findings f WHERE tenant_id IN (4, 8) "
                              "ORDER BY id LIMIT 5")]
    assert "Sample ids: %s (tenants: 4,8)" % ",".join(map(str, ids)) in r.stderr
    assert "nothing was written" in r.stderr
    r = db.backfill("--json")
    summary = json_lines(r.stdout)[-1]
    assert summary["reason"] == "unresolvable" and summary["exit_code"] == 2
    plan = {e["table"]: e for e in json_lines(r.stdout) if e["event"] == "plan"}
    assert plan["findings"]["unresolvable"] == n and plan["findings"]["sample_ids"] == ids
    assert plan["audit_logs"]["unresolvable"] == db.one(
        "SELECT count(*) FROM audit_logs WHERE tenant_id IN (4, 8)")


def test_a_second_backfill_is_refused_while_one_holds_the_lock(db):
    with db.conn() as holder:
        holder.execute("SET application_name = 'other backfill'")
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key(),))
        pid = holder.info.backend_pid
        before = db.hashes()
        for cmd in (db.backfill, lambda: db.migrate("--phase", "1")):
            r = cmd()
            assert r.returncode == 2, r.stdout + r.stderr
            assert "another backfill is running" in r.stderr
            assert f"(backend pid {pid}, client local socket, " in r.stderr
            assert 'application "other backfill"' in r.stderr
        assert db.hashes() == before
        r = tg("status", "--dsn", db.dsn)
        # a session that recorded no runner: its backend pid, labelled as such, and nothing more
        assert (f'Backfill lock: held by backend pid {pid} (client local socket, application "other backfill", '
                "connected since ") in r.stdout
        assert "no run records the process behind it" in r.stdout
    assert db.backfill().returncode == 0


def test_help_shows_the_lock_key_it_uses():
    r = tg("backfill", "--help")
    assert r.returncode == 0
    assert f"advisory lock {lock_key()}" in r.stdout


def test_table_selects_one_table_and_its_own_identity(db):
    others = db.binding_hashes([t for t in WATCHED if t != "findings"])
    r = db.backfill("--table", "findings")
    assert r.returncode == 0, r.stderr
    assert db.unbound("findings") == 0 and db.wrong("findings") == 0
    assert db.binding_hashes([t for t in WATCHED if t != "findings"]) == others
    for run in db.runs():
        assert run["context"]["tables"] == ["findings"]
        assert run["run_identity_hash"] == identity_hash(run["workspace_id"], ["findings"])
    # schema-qualified name works too
    assert db.backfill("--table", "public.policies").returncode == 0
    assert db.unbound("policies") == 0 and db.unbound("backup_sets") == 300
    r = db.backfill("--table", "nope")
    assert r.returncode == 64 and "policies, policy_versions" in r.stderr


def test_batch_size_bounds_each_transaction(db):
    r = db.backfill("--table", "findings", "--batch-size", "7", "--json")
    assert r.returncode == 0, r.stderr
    progress = [e for e in json_lines(r.stdout) if e["event"] == "progress"]
    assert len(progress) == -(-300 // 7)
    steps = [b["table_updated"] - a["table_updated"] for a, b in zip(progress, progress[1:])]
    assert steps and max(steps) == 7 and progress[0]["table_updated"] == 7
    assert progress[-1]["table_updated"] == 300


def test_max_rows_caps_each_workspace_run_per_table(db):
    want = {t: db.missing_by_ws(t) for t in ("findings", "policies")}
    r = db.backfill("--max-rows", "5", "--batch-size", "3")
    assert r.returncode == 0, r.stderr
    for t in ("findings", "policies"):
        got = dict(db.q(f"SELECT workspace_id, count(*) FROM {t} WHERE workspace_id IS NOT NULL "
                        f"GROUP BY 1"))
        assert got == {ws: min(5, n) for ws, n in want[t].items()}
    for run in db.runs():
        assert run["context"]["max_rows"] == 5
        assert all(p["target_rows"] <= 5 and p["processed"] == p["target_rows"]
                   for p in run["context"]["table_progress"].values())
        assert run["outcome"] == "succeeded"
    assert "still miss their workspace" in r.stdout
    # again: the next five of each
    assert db.backfill("--max-rows", "5").returncode == 0
    assert db.one("SELECT count(*) FROM findings WHERE workspace_id IS NOT NULL") == 30
    assert db.backfill().returncode == 0 and all_bound(db)


def test_resume_from_skips_rows_at_or_below_the_id(db):
    r = db.backfill("--table", "findings", "--resume-from", "120")
    assert r.returncode == 0, r.stderr
    assert db.one("SELECT count(*) FROM findings WHERE id <= 120 AND workspace_id IS NULL") == 120
    assert db.one("SELECT count(*) FROM findings WHERE id > 120 AND workspace_id IS NULL") == 0
    for run in db.runs():
        assert run["context"]["resume_from"] == 120
        p = run["context"]["table_progress"]["findings"]
        # planned: the rows after the cursor; the skipped ones are not "left undone"
        assert p["target_rows"] == p["processed"] == db.one(
            "SELECT count(*) FROM findings f JOIN tenants tn ON tn.id = f.tenant_id "
            "WHERE f.id > 120 AND tn.workspace_id = %s", run["workspace_id"])
        assert run["outcome"] == "succeeded"
    assert tg("validate", "--dsn", db.dsn).returncode == 2


def test_lock_timeout_and_retries_then_failure_is_recorded(db):
    assert db.backfill("--table", "policies").returncode == 0
    with db.conn() as blocker:
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE findings IN SHARE MODE")   # blocks UPDATE, not SELECT
        r = db.backfill("--table", "findings", "--lock-timeout", "50ms", "--retries", "2", "--json")
        blocker.execute("ROLLBACK")
    assert r.returncode == 1, r.stdout + r.stderr
    events = json_lines(r.stdout)
    retries = [e for e in events if e["event"] == "retry"]
    assert [e["attempt"] for e in retries] == [1, 2]
    assert all(e["reason"] == "lock_timeout" and e["table"] == "findings" for e in retries)
    assert events[-1]["reason"] == "lock_timeout"
    failed = [x for x in db.runs() if x["context"]["tables"] == ["findings"]]
    assert len(failed) == 3
    for run in failed:
        assert run["status"] == "completed" and run["outcome"] == "failed"
        t = run["summary_counts"]["total"]
        assert run["summary_counts"] == {"total": t, "processed": t, "succeeded": 0, "failed": t}
        (f,) = run["failure_summary"]
        assert f["code"] == "backfill_workspace_ids.batch_failed"
        assert f["reason_code"] == "lock_timeout"
        assert f["message"].startswith("batch on findings failed: canceling statement due to "
                                       "lock timeout")
        entries = [a for a in db.audits() if a["resource_id"] == str(run["id"])]
        assert [a["action"] for a in entries] == [ACTION + "started", ACTION + "failed"]
        assert entries[1]["status"] == "failed"
        assert entries[1]["context"]["failures"] == run["failure_summary"]
        assert entries[1]["context"]["outcome"] == "failed"
    # nothing bound, and a new call starts new runs (the failed ones are closed)
    assert db.unbound("findings") == 300
    assert db.backfill("--table", "findings").returncode == 0 and db.unbound("findings") == 0


def test_a_retry_that_gets_the_lock_goes_on(db):
    with db.conn() as blocker:
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE findings IN SHARE MODE")
        from test_backfill_common import tg_popen
        p = tg_popen("backfill", "--dsn", db.dsn, "--table", "findings", "--lock-timeout", "50",
                     "--retries", "100", "--json")
        first = p.stdout.readline()
        while '"retry"' not in first:
            first = p.stdout.readline()
            assert first, p.stderr.read()
        blocker.execute("ROLLBACK")
        rest = p.stdout.read()
        assert p.wait(60) == 0, rest
    assert db.unbound("findings") == 0
    run = db.runs()[0]
    assert run["outcome"] == "succeeded" and run["failure_summary"] == []


def test_actor_defaults_to_the_os_user_and_host(db):
    import getpass
    import socket
    assert db.backfill("--table", "findings").returncode == 0
    actors = {a["actor"] for a in db.audits()}
    user = __import__("os").environ.get("USER") or getpass.getuser()
    assert actors == {f"cli:{user}@{socket.gethostname()}"}


def test_password_never_printed(pg, db):
    secret = "app-Secret-42"
    with db.conn() as c:
        c.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO app")
        c.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO app")
    good = f"postgresql://app:{secret}@127.0.0.1:{pg.port}/{db.name}?sslmode=disable"
    bad = f"host=127.0.0.1 port={pg.port} user=app password=wrong-{secret} dbname={db.name}"
    for cmd in ("backfill", "validate", "status"):
        for dsn in (good, bad):
            r = tg(cmd, "--dsn", dsn)
            assert secret not in r.stdout + r.stderr, (cmd, r.stdout + r.stderr)
        r = tg(cmd, "--dsn", bad)
        assert r.returncode == 1 and "password=****" in r.stderr
    r = tg("migrate", "--phase", "1", "--dsn", bad)
    assert r.returncode == 1 and secret not in r.stdout + r.stderr
    assert db.unbound("findings") == 0


def test_pg_environment_and_sidecar_dsn_from_the_config(pg, db, tmp_path):
    env = {"PGHOST": pg.sockdir, "PGPORT": str(pg.port), "PGUSER": "postgres",
           "PGDATABASE": db.name}
    r = tg("backfill", "--table", "findings", env=env)
    assert r.returncode == 0, r.stderr
    assert f"/{db.name}" in r.stdout and db.unbound("findings") == 0
    ini = tmp_path / "tg.ini"
    ini.write_text(f"[tenantguard]\nsidecar_dsn = {db.dsn}\n")
    r = tg("backfill", "-c", str(ini), "--table", "policies",
           env={"PGHOST": "/nonexistent", "PGDATABASE": "nope"})
    assert r.returncode == 0, r.stderr
    assert db.unbound("policies") == 0
    # --dsn wins over the config
    r = tg("validate", "-c", str(ini), "--dsn",
           f"host={pg.sockdir} port={pg.port} user=postgres dbname=nope")
    assert r.returncode == 1 and 'database "nope" does not exist' in r.stderr


def test_phase1_missing_is_refused(pg):
    db = fresh_db(pg, f"bf_runs_{next(_n)}", phase1=False, seed=False)
    r = db.backfill()
    assert r.returncode == 2
    assert "has no column workspace_id yet: run `tenantguard migrate --phase 1` first" in r.stderr


def test_rows_written_during_a_run_are_picked_up_by_the_next(db):
    assert db.backfill().returncode == 0
    db.q("INSERT INTO findings (tenant_id, title) SELECT 1 + g % 9, 'late' FROM "
         "generate_series(1, 10) g")
    r = db.backfill("--json")
    assert r.returncode == 0
    runs = db.runs()[-3:]
    assert sum(x["summary_counts"]["succeeded"] for x in runs) == 10
    assert all_bound(db)


def test_pause_and_resume_by_signal(db):
    import signal
    from test_backfill_common import tg_popen
    p = tg_popen("backfill", "--dsn", db.dsn, "--table", "findings", "--batch-size", "10",
                 "--throttle-ms", "20", "--json")
    line = p.stdout.readline()
    while '"progress"' not in line:
        line = p.stdout.readline()
    p.send_signal(signal.SIGUSR1)
    while '"paused"' not in line:
        line = p.stdout.readline()
        assert line, p.stderr.read()
    held = db.one("SELECT count(*) FROM findings WHERE workspace_id IS NOT NULL")
    # paused after a committed batch: nothing moves until SIGUSR2
    for _ in range(20):
        assert db.one("SELECT count(*) FROM findings WHERE workspace_id IS NOT NULL") == held
    assert held < 300
    p.send_signal(signal.SIGUSR2)
    rest = p.stdout.read()
    assert p.wait(60) == 0
    assert '"resumed"' in rest and db.unbound("findings") == 0


def test_sigint_stops_between_batches_and_the_next_call_resumes(db):
    import signal
    from test_backfill_common import tg_popen
    p = tg_popen("backfill", "--dsn", db.dsn, "--batch-size", "10", "--throttle-ms", "60000",
                 "--json")
    line = p.stdout.readline()
    while '"progress"' not in line:
        line = p.stdout.readline()
    p.send_signal(signal.SIGINT)          # inside a 60 s throttle: must not wait it out
    out = p.stdout.read()
    assert p.wait(30) == 2
    summary = json_lines(out)[-1]
    assert summary["reason"] == "interrupted" and summary["rows_this_call"] == 10
    runs = db.runs()
    assert all(x["status"] == "running" for x in runs)
    assert sum(x["summary_counts"]["succeeded"] for x in runs) == 10
    r = tg("status", "--dsn", db.dsn, "--json")
    doc = json_lines(r.stdout)[0]
    assert doc["lock"] is None and all(x["interrupted"] for x in doc["runs"])
    r = db.backfill("--json")
    assert r.returncode == 0
    ev = json_lines(r.stdout)
    assert [e["reused"] for e in ev if e["event"] == "run"] == [True] * 3
    assert [x["id"] for x in db.runs()] == [x["id"] for x in runs]
    assert all_bound(db)
    assert len(db.audits()) == 6


def test_sigquit_cancels_and_closes_the_runs(db):
    import signal
    from test_backfill_common import tg_popen
    p = tg_popen("backfill", "--dsn", db.dsn, "--batch-size", "10", "--throttle-ms", "60000",
                 "--json")
    line = p.stdout.readline()
    while '"progress"' not in line:
        line = p.stdout.readline()
    p.send_signal(signal.SIGQUIT)
    out = p.stdout.read()
    assert p.wait(30) == 2
    assert json_lines(out)[-1]["reason"] == "cancelled"
    outcomes = sorted(x["outcome"] for x in db.runs())
    # the first batch's 10 rows went to some workspaces: those are partial
    assert set(outcomes) <= {"partially_succeeded", "failed"} and "partially_succeeded" in outcomes
    for run in db.runs():
        assert run["status"] == "completed"
        assert run["failure_summary"][0]["reason_code"] == "cancelled"
        assert [a["action"] for a in db.audits() if a["resource_id"] == str(run["id"])] == \
            [ACTION + "started", ACTION + "failed"]


def test_json_emits_one_object_per_line_for_every_event(db):
    r = db.backfill("--json", "--batch-size", "100")
    assert r.returncode == 0
    events = json_lines(r.stdout)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "connected" and kinds[-1] == "summary"
    assert kinds.count("plan") == 13 and kinds.count("run") == 3 and kinds.count("run_done") == 3
    assert kinds.count("table_done") == 13
    p = [e for e in events if e["event"] == "progress"][-1]
    assert p["done"] == p["total"] and p["rows_per_second"] > 0
    assert r.stderr == ""


def test_losing_the_lock_session_stops_the_work(db):
    """If the session holding the advisory lock dies, another backfill could
    start: this one must stop before its next batch."""
    import signal
    from test_backfill_common import tg_popen
    p = tg_popen("backfill", "--dsn", db.dsn, "--batch-size", "10", "--throttle-ms", "50",
                 "--json")
    line = p.stdout.readline()
    while '"progress"' not in line:
        line = p.stdout.readline()
    key = lock_key() & 0xFFFFFFFFFFFFFFFF
    holder = db.one("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND classid = %s AND objid = %s AND objsubid = 1",
                    key >> 32, key & 0xFFFFFFFF)
    assert holder
    db.q("SELECT pg_terminate_backend(%s)", holder)
    out = p.stdout.read()
    assert p.wait(30) == 1
    summary = json_lines(out)[-1]
    assert summary["reason"] == "lock_lost" and "another backfill could start" in summary["message"]
    done = db.one("SELECT count(*) FROM policies WHERE workspace_id IS NOT NULL")
    assert all(x["status"] == "running" for x in db.runs())
    assert sum(x["summary_counts"]["succeeded"] for x in db.runs()) == summary["rows_this_call"]
    assert db.backfill().returncode == 0 and all_bound(db)
    assert done < 300
