"""Crash safety: a backfill killed at random moments (SIGKILL) or cut off by a
server restart resumes where it stopped, and ends exactly where an
uninterrupted run ends: every row bound once, counts and audit entries exact.

TG_CRASH_SEED=<n> replays one sequence of kill moments."""
import os
import random
import signal
import time

from test_backfill_common import (ACTION, WATCHED, fresh_db, json_lines, seed_rows, tg_popen)

W, T = 5, 50
N = 17000           # per table: 12 * 17,000 = 204,000 owned rows + 11,333 audit rows
TAIL = 1500         # then per table a block of rows of workspace 6 only, at the end

# Every update of a watched row bumps bf_updates: a row bound twice shows 2.
COUNTER = """
CREATE FUNCTION bf_bump() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN NEW.bf_updates := OLD.bf_updates + 1; RETURN NEW; END $$;
""" + "".join(f"""
ALTER TABLE {t} ADD COLUMN bf_updates integer NOT NULL DEFAULT 0;
CREATE TRIGGER bf_bump BEFORE UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION bf_bump();
""" for t in WATCHED)


def seeded(pg, name):
    """Workspaces 1-5 interleaved over each table, then workspace 6 in one
    block at the end: until the batches reach that block, workspace 6's run
    has work left below every other run's cursor, so a resume must go back
    to its last_processed_id and scan bound rows again (without binding any
    twice)."""
    db = fresh_db(pg, name, W=W, T=T, N=N)
    seed_rows(db, 1, 5, TAIL, ws0=W + 1, t0=T + 1)
    db.q(COUNTER)
    return db


def expected_totals(db):
    """Rows each workspace's run must bind, per table."""
    return {t: db.missing_by_ws(t) for t in WATCHED}


def check_final_state(db, ref, totals, w=W + 1):
    # every row bound to its tenant's workspace, each exactly once
    for t in WATCHED:
        assert db.unbound(t) == 0, t
        if t != "audit_logs":
            assert db.wrong(t) == 0, t
        scope = "tenant_id IS NOT NULL" if t == "audit_logs" else "true"
        assert db.one(f"SELECT count(*) FROM {t} WHERE ({scope}) AND bf_updates <> 1") == 0, t
        assert db.one(f"SELECT count(*) FROM {t} WHERE NOT ({scope}) AND bf_updates <> 0") == 0, t
    assert db.binding_hashes() == ref.binding_hashes()

    runs = db.runs()
    assert all(r["status"] == "completed" and r["outcome"] == "succeeded" for r in runs)
    work = [r for r in runs if r["summary_counts"]["total"] > 0]
    # one run per workspace carried the work, across every kill
    assert sorted(r["workspace_id"] for r in work) == list(range(1, w + 1))
    ref_counts = {r["workspace_id"]: r["summary_counts"] for r in ref.runs()}
    for r in work:
        ws = r["workspace_id"]
        want = {t: totals[t].get(ws, 0) for t in WATCHED}
        total = sum(want.values())
        assert r["summary_counts"] == {"total": total, "processed": total, "succeeded": total,
                                       "failed": 0} == ref_counts[ws]
        for t in WATCHED:
            p = r["context"]["table_progress"][t]
            assert p["target_rows"] == p["processed"] == want[t], (ws, t)
    # a kill after the runs completed leaves the next call nothing to do:
    # such calls record empty runs, nothing else
    assert all(r["summary_counts"] == {"total": 0, "processed": 0, "succeeded": 0, "failed": 0}
               for r in runs if r not in work)
    audits = db.audits()
    for r in runs:
        entries = [a["action"] for a in audits if a["resource_id"] == str(r["id"])]
        assert entries == [ACTION + "started", ACTION + "completed"], (r["id"], entries)
    assert len(audits) == 2 * len(runs)


def read_until(p, pred):
    """Read JSON event lines until pred(event) is true; None when stdout ends."""
    for line in p.stdout:
        if line.startswith("{"):
            ev = json_lines(line)[0]
            if pred(ev):
                return ev
    return None


def test_sigkill_at_random_moments_resumes_exactly(pg):
    seed = int(os.environ.get("TG_CRASH_SEED", random.randrange(1 << 30)))
    rnd = random.Random(seed)
    print(f"TG_CRASH_SEED={seed}")
    ref = seeded(pg, "bf_crash_ref")
    db = seeded(pg, "bf_crash")
    totals = expected_totals(db)
    planned = sum(sum(v.values()) for v in totals.values())
    assert planned >= 200_000
    r = ref.backfill("--batch-size", "1000")
    assert r.returncode == 0, r.stderr

    # Kill moments: a few by the clock since start (they land in connect, plan,
    # run creation or the first batches) and twelve at random points of the work,
    # each a random few milliseconds after a batch was reported.
    # The last work point leaves enough rows that a clock kill after it still
    # lands before the end; so every trigger kills a live process.
    triggers = [("rows", f) for f in sorted(rnd.uniform(0.02, 0.92) for _ in range(12))]
    for _ in range(3):
        triggers.insert(rnd.randrange(len(triggers)), ("clock", rnd.uniform(0.0, 0.25)))
    kills, calls = 0, 0
    for kind, at in triggers:
        args = ["--batch-size", str(rnd.choice([400, 1000, 2500])),
                "--throttle-ms", str(rnd.choice([0, 0, 5])), "--json"]
        p = tg_popen("backfill", "--dsn", db.dsn, *args)
        calls += 1
        if kind == "clock":
            try:
                p.wait(timeout=at)
            except Exception:  # noqa: BLE001 -- still running: kill it
                pass
        else:
            target = int(planned * at)
            read_until(p, lambda e: e["event"] == "progress" and e["done"] >= target
                       or e["event"] == "summary")
            time.sleep(rnd.uniform(0, 0.015))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait(60)
        p.stdout.close()
        p.stderr.close()
    assert kills >= 10, f"only {kills} kills landed (TG_CRASH_SEED={seed})"
    # and once more without interruption
    p = tg_popen("backfill", "--dsn", db.dsn, "--json")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    summary = json_lines(out)[-1]
    assert summary["total_done"] == summary["total_planned"] or summary["total_planned"] == 0
    check_final_state(db, ref, totals)
    print(f"{kills} SIGKILLs over {calls + 1} calls")


def test_server_restart_mid_run_resumes_exactly(pg):
    ref = fresh_db(pg, "bf_restart_ref", W=3, T=9, N=4000)
    db = fresh_db(pg, "bf_restart", W=3, T=9, N=4000)
    for d in (ref, db):
        d.q(COUNTER)
    totals = expected_totals(db)
    assert ref.backfill().returncode == 0
    p = tg_popen("backfill", "--dsn", db.dsn, "--batch-size", "200", "--throttle-ms", "5",
                 "--json")
    read_until(p, lambda e: e["event"] == "progress" and e["done"] >= 8000)
    pg.restart_server(mode="immediate")   # every backend dies, crash recovery on start
    out = p.stdout.read()
    assert p.wait(60) == 1
    summary = json_lines(out)[-1]
    assert summary["reason"] == "connection_lost"
    assert "run the same command again to resume" in summary["message"]
    r = db.backfill("--json")
    assert r.returncode == 0, r.stderr
    assert all(e["reused"] for e in json_lines(r.stdout) if e["event"] == "run")
    check_final_state(db, ref, totals, w=3)
