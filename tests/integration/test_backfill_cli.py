"""The sidecar commands' surface: --help, usage errors and exit codes,
--json shapes of validate and status, config errors."""
import itertools

import pytest

from test_backfill_common import fresh_db, json_lines, tg

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
