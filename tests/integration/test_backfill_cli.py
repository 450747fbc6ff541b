"""The sidecar commands' surface: --help, usage errors and exit codes,
--json shapes of validate and status, config errors, and what the backfill's
signals leave in operation_runs and audit_logs."""
import itertools
import signal
import socket

import pytest

import tgtest
from test_backfill_common import (ACTION, PAUSE_ACTOR, fresh_db, json_lines, lock_backend, pause_entries,
                                  recorded, start_slow_backfill, stop, tg, tg_popen)

_n = itertools.count()

COMMANDS = ["backfill", "migrate", "validate", "status"]


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_documents_options_and_exit_codes(cmd):
    for flag in ("--help", "-h"):
        r = tg(cmd, flag)
        assert r.returncode == 0 and r.stderr == ""
        out = r.stdout
        assert out.startswith(f"Usage: tenantguard {cmd}")
        assert "--dsn" in out and "--config" in out and "--json" in out
        assert "Exit codes" in out and "64" in out
    assert tg("--help").stdout.count(f"\n  {cmd} ") == 1


def test_help_lists_every_option_the_command_accepts():
    want = {
        "backfill": ["--dry-run", "--table", "--batch-size", "--resume-from", "--max-rows",
                     "--throttle-ms", "--lock-timeout", "--retries", "--actor"],
        "migrate": ["--phase", "--dry-run", "--lock-timeout", "--retries"],
        "status": ["--limit"],
    }
    for cmd, opts in want.items():
        out = tg(cmd, "--help").stdout
        for o in opts:
            assert o in out, (cmd, o)


@pytest.mark.parametrize("args,needle", [
    (["backfill", "--batch-size", "0"], "--batch-size: 0 is out of range"),
    (["backfill", "--batch-size", "ten"], "is not a whole number"),
    (["backfill", "--max-rows", "-1"], "--max-rows"),
    (["backfill", "--resume-from", "x"], "--resume-from"),
    (["backfill", "--throttle-ms", "600001"], "out of range"),
    (["backfill", "--lock-timeout", "2min"], "milliseconds"),
    (["backfill", "--retries", "1001"], "out of range"),
    (["backfill", "--bogus"], "Try: tenantguard backfill --help"),
    (["backfill", "extra"], 'unexpected argument "extra"'),
    (["backfill", "--table", "users"], 'unknown table "users"; the watched tables are: policies'),
    (["migrate"], "--phase 1 or --phase 3 is required"),
    (["migrate", "--phase", "2"], "phase 2 is `tenantguard backfill`"),
    (["migrate", "--phase", "1", "--retries", "x"], "--retries"),
    (["validate", "--limit", "3"], "Try: tenantguard validate --help"),
    (["status", "--limit", "0"], "--limit: 0 is out of range"),
])
def test_usage_errors_exit_64(args, needle):
    r = tg(*args, env={"PGHOST": "/nonexistent"})
    assert r.returncode == 64, r.stdout + r.stderr
    assert needle in r.stderr
    assert r.stdout == ""


def test_lock_timeout_accepts_seconds(pg):
    db = fresh_db(pg, f"bf_cli_{next(_n)}", seed=False)
    r = db.backfill("--lock-timeout", "3s", "--json")
    assert r.returncode == 0, r.stderr
    assert db.backfill("--lock-timeout", "250ms").returncode == 0


@pytest.mark.parametrize("cmd", COMMANDS)
def test_bad_config_file_exits_1(cmd, tmp_path):
    ini = tmp_path / "bad.ini"
    ini.write_text("[policy]\ntables = policies, policies\n")
    args = [cmd, "-c", str(ini)] + (["--phase", "1"] if cmd == "migrate" else [])
    r = tg(*args)
    assert r.returncode == 1 and f"{ini}:2: table public.policies is listed twice" in r.stderr
    r = tg(*args[:2], str(tmp_path / "missing.ini"), *args[3:])
    assert r.returncode == 1 and "cannot open" in r.stderr


@pytest.mark.parametrize("cmd", COMMANDS)
def test_unreachable_server_exits_1_and_says_where(cmd):
    args = [cmd, "--dsn", "host=/nonexistent port=1 user=u password=hunter2 dbname=d"]
    args += ["--phase", "1"] if cmd == "migrate" else []
    r = tg(*args)
    assert r.returncode == 1
    assert "cannot connect to PostgreSQL" in r.stderr and "password=****" in r.stderr
    assert "hunter2" not in r.stderr + r.stdout


def test_validate_counts_and_exit_codes(pg):
    db = fresh_db(pg, f"bf_cli_{next(_n)}")
    r = tg("validate", "--dsn", db.dsn, "--json")
    assert r.returncode == 2
    (doc,) = json_lines(r.stdout)
    rows = {t["table"]: t for t in doc["tables"]}
    assert doc["ok"] is False and len(rows) == 13
    assert rows["policies"]["missing"] == 300 and rows["policies"]["mismatched"] == 0
    assert rows["audit_logs"]["missing"] == 200 and rows["audit_logs"]["mismatched"] is None
    assert rows["policies"]["sql"] == "SELECT count(*) FROM policies WHERE workspace_id IS NULL;"
    text = tg("validate", "--dsn", db.dsn)
    assert text.returncode == 2 and "run `tenantguard backfill`" in text.stderr
    assert "| policies " in text.stdout
    assert db.backfill().returncode == 0
    r = tg("validate", "--dsn", db.dsn)
    assert r.returncode == 0 and "OK: every row of the 13 watched tables" in r.stdout
    db.q("UPDATE policies SET workspace_id = 1 + workspace_id % 3 WHERE id IN (1, 2)")
    (doc,) = json_lines(tg("validate", "--dsn", db.dsn, "--json").stdout)
    assert {t["table"]: t["mismatched"] for t in doc["tables"]}["policies"] == 2


def test_status_shows_runs_progress_and_limit(pg):
    db = fresh_db(pg, f"bf_cli_{next(_n)}")
    r = tg("status", "--dsn", db.dsn)
    assert r.returncode == 0 and "No backfill runs recorded yet." in r.stdout
    assert db.backfill("--table", "findings").returncode == 0
    assert db.backfill("--table", "policies").returncode == 0
    (doc,) = json_lines(tg("status", "--dsn", db.dsn, "--json").stdout)
    assert doc["event"] == "status" and doc["lock"] is None
    assert [x["tables"] for x in doc["runs"]] == [["policies"]] * 3      # the latest call
    run = doc["runs"][0]
    assert run["status"] == "completed" and run["outcome"] == "succeeded"
    assert run["table_progress"]["policies"]["processed"] == run["summary_counts"]["total"]
    assert run["interrupted"] is False and run["duration_seconds"] >= 0
    # who ran it, kept after the end; no lock, so nobody runs it now
    assert run["runner"]["program"] == "tenantguard backfill" and run["runner"]["host"] == socket.gethostname()
    assert isinstance(run["runner"]["pid"], int) and isinstance(run["runner"]["backend_pid"], int)
    (doc,) = json_lines(tg("status", "--dsn", db.dsn, "--json", "--limit", "4").stdout)
    assert [x["tables"] for x in doc["runs"]] == [["policies"]] * 3 + [["findings"]]
    text = tg("status", "--dsn", db.dsn).stdout
    assert "Backfill lock: free" in text and "| completed " in text and "| policies " in text


def test_progress_bar_on_a_terminal_plain_lines_otherwise(pg):
    """On a tty: a redrawn bar with rate and ETA; in a pipe: no control codes."""
    import os
    import pty
    import subprocess
    import tgtest
    db = fresh_db(pg, f"bf_cli_{next(_n)}")
    master, slave = pty.openpty()
    p = subprocess.Popen([tgtest.BINARY, "backfill", "--dsn", db.dsn, "--table", "findings",
                          "--batch-size", "10", "--throttle-ms", "30"],
                         stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:          # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    assert p.wait(60) == 0
    os.close(master)
    text = out.decode()
    assert "\r\x1b[K" in text and "[#" in text and "rows/s" in text and "ETA" in text
    assert "findings" in text and "Done in" in text
    piped = db.backfill("--table", "policies", "--batch-size", "10")
    assert piped.returncode == 0 and "\x1b[" not in piped.stdout and "\r" not in piped.stdout
    assert "progress: " in piped.stdout          # the first plain progress line


# ---------------------------------------------------------------- SIGUSR1 / SIGUSR2

def test_sigusr1_pause_and_sigusr2_resume_are_recorded_like_the_console(pg, tmp_path):
    db = fresh_db(pg, f"bf_cli_{next(_n)}")
    p = start_slow_backfill(db, tmp_path)
    try:
        p.send_signal(signal.SIGUSR1)
        runs = tgtest.wait_until(lambda: recorded(db, "paused", True), 30,
                                 what="the pause in operation_runs and audit_logs")
        assert len(runs) == 3 and p.poll() is None
        ids = {str(r["id"]) for r in runs}
        # the process to signal, and the session through which it holds the lock
        runner = runs[0]["context"]["runner"]
        assert (runner["program"], runner["pid"], runner["host"], runner["backend_pid"]) == \
            ("tenantguard backfill", p.pid, socket.gethostname(), lock_backend(db)), runner
        assert db.one("SELECT bool_and((context#>>'{runner,since}')::timestamptz "
                      "BETWEEN date_trunc('second', started_at) AND now()) FROM operation_runs") is True
        for r in runs:
            assert r["status"] == "running" and r["completed_at"] is None and r["outcome"] is None
            assert r["context"]["paused_by"] == PAUSE_ACTOR and "resumed_at" not in r["context"]
            assert r["context"]["runner"] == runner
        assert db.one("SELECT bool_and((context->>'paused_at')::timestamptz "
                      "BETWEEN started_at AND now()) FROM operation_runs") is True
        entries = pause_entries(db, "paused")
        assert {a["resource_id"] for a in entries} == ids
        for a in entries:
            assert a["actor"] == PAUSE_ACTOR and a["status"] == "success"
            assert a["resource_type"] == "operation_run" and a["tenant_id"] is None
            assert a["context"] == {"operation_run_id": int(a["resource_id"]), "by": PAUSE_ACTOR}
        # held between two batches: nothing moves until SIGUSR2
        held = [r["summary_counts"]["processed"] for r in runs]
        for _ in range(20):
            assert [r["summary_counts"]["processed"] for r in db.runs()] == held
        assert 0 < sum(held) < sum(r["summary_counts"]["total"] for r in runs)

        p.send_signal(signal.SIGUSR2)
        tgtest.wait_until(lambda: recorded(db, "resumed", False), 30,
                          what="the resume in operation_runs and audit_logs")
        assert p.wait(120) == 0
    finally:
        stop(p)
    runs = db.runs()
    assert {r["status"] for r in runs} == {"completed"}
    assert {r["outcome"] for r in runs} == {"succeeded"}
    for r in runs:
        ctx = r["context"]
        assert ctx["paused"] is False and ctx["resumed_by"] == PAUSE_ACTOR
        assert ctx["paused_by"] == PAUSE_ACTOR and "paused_at" in ctx
        assert ctx["runner"] == runner           # ~380 batches, a pause and a resume kept it
    assert db.one("SELECT bool_and((context->>'resumed_at')::timestamptz "
                  ">= (context->>'paused_at')::timestamptz) FROM operation_runs") is True
    acts = [a["action"][len(ACTION):] for a in db.audits()]
    assert acts == ["started"] * 3 + ["paused"] * 3 + ["resumed"] * 3 + ["completed"] * 3
    assert {a["actor"] for a in db.audits()} == {PAUSE_ACTOR}
    assert all(db.unbound(t) == 0 for t in ("policies", "findings", "audit_logs"))
    out = (tmp_path / "backfill.out").read_text()
    assert "Paused between batches" in out and "Resumed" in out and "Done in" in out
    assert (tmp_path / "backfill.err").read_text() == ""


def test_sigint_while_paused_clears_the_pause_and_the_runs_resume_later(pg, tmp_path):
    db = fresh_db(pg, f"bf_cli_{next(_n)}")
    p = start_slow_backfill(db, tmp_path)
    try:
        p.send_signal(signal.SIGUSR1)
        tgtest.wait_until(lambda: recorded(db, "paused", True), 30, what="the pause recorded")
        p.send_signal(signal.SIGINT)
        assert p.wait(60) == 2
    finally:
        stop(p)
    runs = db.runs()
    # stopped, resumable, and no longer said to be paused (nothing holds them)
    assert {r["status"] for r in runs} == {"running"}
    assert all(r["context"]["paused"] is False and "resumed_at" not in r["context"] for r in runs)
    assert len(pause_entries(db, "paused")) == 3 and pause_entries(db, "resumed") == []
    assert "interrupted" in (tmp_path / "backfill.err").read_text()
    r = db.backfill()
    assert r.returncode == 0, r.stdout + r.stderr
    assert [x["id"] for x in db.runs()] == [x["id"] for x in runs]
    assert {x["outcome"] for x in db.runs()} == {"succeeded"}


def test_pause_without_an_audit_table_is_audited_where_start_and_end_are(pg, tmp_path):
    """With `audit_table =` (none) the started/completed entries go to
    audit_logs beside the tenants table: the pause and the resume must go
    there too, not only into the runs' context."""
    db = fresh_db(pg, f"bf_cli_{next(_n)}")
    ini = tmp_path / "no_audit.ini"
    ini.write_text("[policy]\naudit_table =\n")
    p = start_slow_backfill(db, tmp_path, "-c", str(ini))
    try:
        p.send_signal(signal.SIGUSR1)
        runs = tgtest.wait_until(lambda: recorded(db, "paused", True), 30,
                                 what="the pause in operation_runs and audit_logs")
        assert len(runs) == 3 and p.poll() is None
        assert all(r["context"]["paused_by"] == PAUSE_ACTOR for r in runs)
        assert "audit_logs" not in runs[0]["context"]["tables"]      # not a watched table here
        p.send_signal(signal.SIGUSR2)
        tgtest.wait_until(lambda: recorded(db, "resumed", False), 30, what="the resume recorded")
        assert p.wait(120) == 0
    finally:
        stop(p)
    runs = db.runs()
    assert {r["outcome"] for r in runs} == {"succeeded"}
    assert all(r["context"]["resumed_by"] == PAUSE_ACTOR for r in runs)
    ids = {str(r["id"]) for r in runs}
    audits = db.audits()
    assert [a["action"][len(ACTION):] for a in audits] == \
        ["started"] * 3 + ["paused"] * 3 + ["resumed"] * 3 + ["completed"] * 3
    for what in ("paused", "resumed"):
        entries = pause_entries(db, what)
        assert {a["resource_id"] for a in entries} == ids
        assert all(a["actor"] == PAUSE_ACTOR and a["context"]["by"] == PAUSE_ACTOR for a in entries)
    assert (tmp_path / "backfill.err").read_text() == ""


def backfill_sessions(db):
    return db.one("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                  "AND application_name = 'tenantguard backfill'", db.name)


def test_a_call_that_takes_over_runs_left_paused_records_their_resume(pg, tmp_path):
    """SIGKILL while paused leaves context.paused = true; the next call on
    the same runs must say they run again before its first batch."""
    db = fresh_db(pg, f"bf_cli_{next(_n)}")
    p = start_slow_backfill(db, tmp_path)
    try:
        p.send_signal(signal.SIGUSR1)
        before = tgtest.wait_until(lambda: recorded(db, "paused", True), 30, what="the pause recorded")
        p.send_signal(signal.SIGKILL)
        assert p.wait(60) == -signal.SIGKILL
    finally:
        stop(p)
    # its sessions (and with them the advisory lock) go once the server sees the socket close
    tgtest.wait_until(lambda: backfill_sessions(db) == 0, 30, what="the killed call's sessions to end")
    assert all(r["status"] == "running" and r["context"]["paused"] is True for r in db.runs())
    assert pause_entries(db, "resumed") == []
    assert {r["context"]["runner"]["pid"] for r in db.runs()} == {p.pid}

    q = tg_popen("backfill", "--dsn", db.dsn, "--actor", "ops:dave")
    out, err = q.communicate(timeout=300)
    assert q.returncode == 0, out + err
    runs = db.runs()
    assert [x["id"] for x in runs] == [x["id"] for x in before]          # taken over, not new
    assert {x["status"] for x in runs} == {"completed"} and {x["outcome"] for x in runs} == {"succeeded"}
    for x, old in zip(runs, before):
        ctx = x["context"]
        assert ctx["paused"] is False and ctx["resumed_by"] == "ops:dave"
        assert ctx["paused_by"] == PAUSE_ACTOR
        # the runner is the process that took them over, with its own session
        assert ctx["runner"]["pid"] == q.pid and ctx["runner"]["host"] == socket.gethostname()
        assert ctx["runner"]["backend_pid"] != old["context"]["runner"]["backend_pid"] or \
            ctx["runner"]["backend_start"] != old["context"]["runner"]["backend_start"]
        assert ctx["runner"]["since"] >= old["context"]["runner"]["since"]
    assert db.one("SELECT bool_and((context->>'resumed_at')::timestamptz "
                  ">= (context->>'paused_at')::timestamptz) FROM operation_runs") is True
    resumed = pause_entries(db, "resumed")
    assert {a["resource_id"] for a in resumed} == {str(x["id"]) for x in runs}
    assert all(a["actor"] == "ops:dave" and a["context"]["by"] == "ops:dave" and a["status"] == "success"
               for a in resumed)
    # recorded before the first batch of the new call: after the pause, before completion
    acts = [a["action"][len(ACTION):] for a in db.audits()]
    assert acts == ["started"] * 3 + ["paused"] * 3 + ["resumed"] * 3 + ["completed"] * 3
    assert all(db.unbound(t) == 0 for t in ("policies", "findings", "audit_logs"))
