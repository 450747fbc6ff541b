"""Helpers shared by the backfill and migrate tests (no tests here).

Every test module makes its own databases (`fresh_db`), so it neither
disturbs nor depends on the session database `app` that other tests use.
"""
import hashlib
import json
import os
import signal
import subprocess

import tgtest

SCHEMA = os.path.join(tgtest.REPO, "sql", "demo_schema.sql")
RUN_TYPE = "workspace_isolation_backfill_workspace_ids"
ACTION = "workspace_isolation.backfill_workspace_ids."
OWNED = ["policies", "policy_versions", "backup_sets", "backup_items", "restore_runs",
         "backup_schedules", "inventory_items", "inventory_links", "entra_groups", "findings",
         "entra_role_definitions", "tenant_permissions"]
WATCHED = OWNED + ["audit_logs"]
LOCK_NAME = b"tenantguard:backfill-workspace-ids"

# W workspaces, T tenants (tenant g in workspace ws0 + g % W), N rows per table
# spread round-robin over the tenants t0.. ; a third of audit_logs has no
# tenant. ws0/t0 are the ids the new workspaces/tenants get (1 in a fresh
# database), so a second call can append a block of rows of new tenants.
SEED = """
INSERT INTO workspaces (name) SELECT 'ws' || g FROM generate_series(1, {W}) g;
INSERT INTO tenants (workspace_id, name) SELECT {ws0} + (g % {W}), 't' || g FROM generate_series(1, {T}) g;
INSERT INTO policies (tenant_id, name) SELECT {t0} + (g % {T}), 'p' || g FROM generate_series(1, {N}) g;
INSERT INTO policy_versions (tenant_id, policy_id, version)
  SELECT {t0} + (g % {T}), 1 + (g % {N}), g FROM generate_series(1, {N}) g;
INSERT INTO backup_sets (tenant_id, name) SELECT {t0} + (g % {T}), 'b' || g FROM generate_series(1, {N}) g;
INSERT INTO backup_items (tenant_id, backup_set_id) SELECT {t0} + (g % {T}), 1 + (g % {N}) FROM generate_series(1, {N}) g;
INSERT INTO restore_runs (tenant_id) SELECT {t0} + (g % {T}) FROM generate_series(1, {N}) g;
INSERT INTO backup_schedules (tenant_id, name) SELECT {t0} + (g % {T}), 's' || g FROM generate_series(1, {N}) g;
INSERT INTO inventory_items (tenant_id, external_id) SELECT {t0} + (g % {T}), 'e' || g FROM generate_series(1, {N}) g;
INSERT INTO inventory_links (tenant_id, source_id, target_id)
  SELECT {t0} + (g % {T}), 1 + (g % {N}), 1 + ((g + 1) % {N}) FROM generate_series(1, {N}) g;
INSERT INTO entra_groups (tenant_id, external_id, display_name)
  SELECT {t0} + (g % {T}), 'g' || g, 'G' || g FROM generate_series(1, {N}) g;
INSERT INTO findings (tenant_id, title) SELECT {t0} + (g % {T}), 'f' || g FROM generate_series(1, {N}) g;
INSERT INTO entra_role_definitions (tenant_id, external_id, display_name)
  SELECT {t0} + (g % {T}), 'r' || g, 'R' || g FROM generate_series(1, {N}) g;
INSERT INTO tenant_permissions (tenant_id, permission) SELECT {t0} + (g % {T}), 'perm' || g FROM generate_series(1, {N}) g;
INSERT INTO audit_logs (tenant_id, action)
  SELECT CASE WHEN g % 3 = 0 THEN NULL ELSE {t0} + (g % {T}) END, 'seed' FROM generate_series(1, {N}) g;
"""


def lock_key():
    """FNV-1a 64 of the lock name, as a signed bigint (what backfill uses)."""
    h = 1469598103934665603
    for b in LOCK_NAME:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h - (1 << 64) if h >= 1 << 63 else h


def lock_backend(db):
    """The backend pid of the session holding the backfill lock, or None:
    read from pg_locks here, independently of what tenantguard reports."""
    key = lock_key() & 0xFFFFFFFFFFFFFFFF
    return db.one("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
                  "AND classid = %s::oid AND objid = %s::oid "
                  "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                  str(key >> 32), str(key & 0xFFFFFFFF))


def tg(*args, env=None, timeout=300, input=None):
    """Run the binary; returns CompletedProcess (text)."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([tgtest.BINARY, *args], capture_output=True, text=True, timeout=timeout,
                          env=e, input=input)


def tg_popen(*args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.Popen([tgtest.BINARY, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=e)


def json_lines(text):
    """Every stdout line of a --json call must be a JSON object."""
    out = []
    for line in text.splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


class Db:
    """One test database: its DSN and quick SQL helpers (psycopg, autocommit)."""

    def __init__(self, pg, name):
        self.pg = pg
        self.name = name
        self.dsn = pg.dsn(db=name)

    def conn(self, **kw):
        return self.pg.direct(db=self.name, **kw)

    def q(self, sql, *params):
        with self.conn() as c:
            cur = c.execute(sql, params or None)
            return cur.fetchall() if cur.description else None

    def one(self, sql, *params):
        rows = self.q(sql, *params)
        return rows[0][0] if rows else None

    def backfill(self, *args, **kw):
        return tg("backfill", "--dsn", self.dsn, *args, **kw)

    def migrate(self, *args, **kw):
        return tg("migrate", "--dsn", self.dsn, *args, **kw)

    # -- state snapshots
    def hashes(self, tables=None):
        """md5 of every row of each table, in id order (dry runs must not change it)."""
        tables = tables or (WATCHED + ["tenants", "workspaces", "operation_runs"])
        return {t: self.one(f"SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY id), '')) "
                            f"FROM {t} t") for t in tables}

    def binding_hashes(self, tables=WATCHED):
        """id, tenant and workspace only (comparable across databases)."""
        extra = ", t.bf_updates" if self.one(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'policies' "
            "AND column_name = 'bf_updates'") else ""
        return {t: self.one(f"SELECT md5(coalesce(string_agg(concat_ws(',', t.id, t.tenant_id, "
                            f"t.workspace_id{extra}), ';' ORDER BY t.id), '')) FROM {t} t "
                            f"{'WHERE action = %s' % repr('seed') if t == 'audit_logs' else ''}")
                for t in tables}

    def unbound(self, table):
        scope = "tenant_id IS NOT NULL AND " if table == "audit_logs" else ""
        return self.one(f"SELECT count(*) FROM {table} WHERE {scope}workspace_id IS NULL")

    def wrong(self, table):
        """Rows whose workspace is set but is not their tenant's."""
        return self.one(f"SELECT count(*) FROM {table} t JOIN tenants tn ON tn.id = t.tenant_id "
                        f"WHERE t.workspace_id IS NOT NULL AND t.workspace_id <> tn.workspace_id")

    def missing_by_ws(self, table):
        """{workspace: rows missing} as the plan counts them."""
        scope = "t.tenant_id IS NOT NULL AND " if table == "audit_logs" else ""
        rows = self.q(f"SELECT tn.workspace_id, count(*) FROM {table} t JOIN tenants tn "
                      f"ON tn.id = t.tenant_id WHERE {scope}t.workspace_id IS NULL "
                      f"GROUP BY 1")
        return {ws: n for ws, n in rows}

    def runs(self):
        cols = ("id", "workspace_id", "tenant_id", "type", "status", "outcome", "run_identity_hash",
                "context", "summary_counts", "failure_summary", "started_at", "completed_at",
                "created_at", "updated_at")
        rows = self.q(f"SELECT {', '.join(cols)} FROM operation_runs ORDER BY id")
        return [dict(zip(cols, r)) for r in rows]

    def audits(self):
        cols = ("id", "workspace_id", "tenant_id", "actor", "action", "status", "resource_type",
                "resource_id", "context", "created_at")
        rows = self.q(f"SELECT {', '.join(cols)} FROM audit_logs WHERE action LIKE %s ORDER BY id",
                      ACTION + "%")
        return [dict(zip(cols, r)) for r in rows]


def seed_rows(db, W, T, N, ws0=1, t0=1):
    with db.conn() as c:
        c.execute(SEED.format(W=W, T=T, N=N, ws0=ws0, t0=t0))
        c.execute("ANALYZE")


def fresh_db(pg, name, W=3, T=9, N=300, phase1=True, seed=True):
    """A new database: demo schema, `migrate --phase 1` (the columns backfill
    needs), then the seed rows, all unbound."""
    pg.create_database(name, template_sql=SCHEMA)
    db = Db(pg, name)
    if phase1:
        r = db.migrate("--phase", "1")
        assert r.returncode == 0, r.stdout + r.stderr
    if seed:
        seed_rows(db, W, T, N)
    return db


def identity_hash(workspace_id, tables):
    """sha256 of the jsonb text of {type, workspace_id, tables}, computed here
    independently: jsonb orders keys by length, then bytes."""
    text = ('{"type": "%s", "tables": [%s], "workspace_id": %d}'
            % (RUN_TYPE, ", ".join('"%s"' % t for t in sorted(tables)), workspace_id))
    return hashlib.sha256(text.encode()).hexdigest()


def stop(proc, sig=signal.SIGKILL):
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout=60)


# ---------------------------------------------------------------- a CLI backfill to signal

PAUSE_ACTOR = "ops:carol"


def start_slow_backfill(db, tmp_path, *extra, actor=PAUSE_ACTOR, name="backfill"):
    """Every table in batches of 10 with a throttle: ~380 batches, several
    seconds of work. Output goes to tmp_path/NAME.out and .err (a full pipe
    would stall it). Returns once a run has progress, so the signal handlers
    are in place."""
    out = open(tmp_path / f"{name}.out", "w")
    err = open(tmp_path / f"{name}.err", "w")
    p = subprocess.Popen([tgtest.BINARY, "backfill", "--dsn", db.dsn, "--batch-size", "10",
                          "--throttle-ms", "20", "--actor", actor, *extra], stdout=out, stderr=err)
    out.close()
    err.close()
    tgtest.wait_until(lambda: any(r["status"] == "running" and r["summary_counts"]["processed"] > 0
                                  for r in db.runs()), 30, what="a running run with progress")
    return p


def pause_entries(db, what):
    return [a for a in db.audits() if a["action"] == ACTION + what]


def recorded(db, what, paused):
    """The runs once each has context.paused == paused and its `what` entry."""
    runs = db.runs()
    if len(pause_entries(db, what)) == len(runs) and all(
            r["context"].get("paused") is paused for r in runs):
        return runs
    return None
