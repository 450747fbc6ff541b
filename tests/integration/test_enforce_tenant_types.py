"""Tenant ids that are not integers: the tenants table keyed by uuid or by text.

The rules, the violation audit's tenant lookup, the backfill and phase 3's
constraints all take the tenant id column's type from the catalog; nothing may
assume ids are integers. Every other test uses the demo schema's bigint ids.
"""
import itertools
import os

import psycopg
import pytest

import tgtest
from test_admin_common import console_proxy
from test_backfill_common import Db, tg

_n = itertools.count()

# type -> (tenant A in workspace 1, tenant B in workspace 2, tenant C without one)
KINDS = {
    "uuid": ("0b6f1a52-5c1e-4c8e-9d0a-3f7e2b9c4a11", "7d2e9c40-1b3a-4f6d-8e5c-a9b8c7d6e5f4",
             "c3a1e2f4-9b8d-4c7e-a6f5-0d1e2f3a4b5c"),
    "text": ("acme", "globex", "initech"),
    "varchar(40)": ("acme-v", "globex-v", "initech-v"),
}

SCHEMA = """
CREATE TABLE workspaces (id bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE tenants (id {t} PRIMARY KEY, workspace_id bigint NULL REFERENCES workspaces (id),
                      name text NOT NULL);
CREATE TABLE notes (id bigserial PRIMARY KEY, tenant_id {t} NOT NULL REFERENCES tenants (id), body text);
CREATE TABLE audit_logs (id bigserial PRIMARY KEY, tenant_id {t} NULL REFERENCES tenants (id),
                         workspace_id bigint NULL REFERENCES workspaces (id), actor text NULL,
                         action text NOT NULL, status text NOT NULL DEFAULT 'success',
                         resource_type text NULL, resource_id text NULL,
                         context jsonb NOT NULL DEFAULT '{{}}', created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE operation_runs (
    id bigserial PRIMARY KEY, workspace_id bigint NOT NULL REFERENCES workspaces (id),
    tenant_id {t} NULL REFERENCES tenants (id), type text NOT NULL, status text NOT NULL DEFAULT 'queued',
    outcome text NULL, run_identity_hash text NOT NULL, context jsonb NOT NULL DEFAULT '{{}}',
    summary_counts jsonb NOT NULL DEFAULT '{{}}', failure_summary jsonb NOT NULL DEFAULT '[]',
    started_at timestamptz NULL, completed_at timestamptz NULL,
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE UNIQUE INDEX operation_runs_active_identity ON operation_runs (workspace_id, run_identity_hash)
    WHERE status IN ('queued', 'running');
INSERT INTO workspaces VALUES (1, 'w1'), (2, 'w2');
INSERT INTO tenants VALUES ('{a}', 1, 'a'), ('{b}', 2, 'b'), ('{c}', NULL, 'c');
"""

POLICY = "[policy]\ntables = notes\ntenant_table = public.tenants\naudit_table = public.audit_logs\n"


@pytest.fixture(params=sorted(KINDS))
def kind(request):
    return request.param


@pytest.fixture
def setup(pg, workdir, proxy_factory, kind):
    """(db, proxy not yet started, (a, b, c)) after `migrate --phase 1` with the proxy's config."""
    a, b, c = KINDS[kind]
    name = f"tenant_{kind.split('(')[0]}_{next(_n)}"
    path = os.path.join(workdir, f"{name}.sql")
    with open(path, "w") as f:
        f.write(SCHEMA.format(t=kind, a=a, b=b, c=c))
    pg.create_database(name, template_sql=path)
    db = Db(pg, name)
    p = console_proxy(proxy_factory, workdir, {"mode": "enforce", "violation_audit": "on", "sidecar_dsn": db.dsn},
                      POLICY, start=False)
    p.write_config()
    r = tg("migrate", "--phase", "1", "-c", p.config_path, "--dsn", db.dsn)
    assert r.returncode == 0, r.stdout + r.stderr
    return db, p, (a, b, c)


def violations(db):
    return db.q("SELECT tenant_id::text, workspace_id, context->>'rule', status FROM audit_logs "
                "WHERE action = 'workspace_isolation.violation' ORDER BY id")


def test_rules_hold_and_violations_name_the_tenant(setup):
    db, p, (a, b, c) = setup
    p.start()
    with psycopg.connect(p.dsn(db=db.name), autocommit=True) as app:
        # R1, simple and extended protocol (the parameter typed by the driver, or not at all)
        app.execute(f"INSERT INTO notes (tenant_id, body) VALUES ('{a}', 'simple')")
        app.execute("INSERT INTO notes (tenant_id, body) VALUES (%s, %s)", (b, "extended"))
        # R2: a workspace that is not the tenant's
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            app.execute(f"INSERT INTO notes (tenant_id, workspace_id, body) VALUES ('{a}', 2, 'x')")
        assert e.value.diag.message_primary == \
            f"tenantguard: workspace_id 2 does not match tenant {a} (workspace 1) on notes (R2)"
        # R3: a tenant without a workspace
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            app.execute("INSERT INTO notes (tenant_id, body) VALUES (%s, 'x')", (c,))
        assert f"tenant {c} has no workspace (R3)" in e.value.diag.message_primary
        # R4: the tenant of a row does not change
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            app.execute(f"UPDATE notes SET tenant_id = '{b}' WHERE body = 'simple'")
        assert f"cannot change from {a} to {b} (R4)" in e.value.diag.message_primary
        # R6: an audit row naming a tenant gets its workspace
        app.execute("INSERT INTO audit_logs (tenant_id, action) VALUES (%s, 'app.event')", (b,))
    assert db.q("SELECT tenant_id::text, workspace_id, body FROM notes ORDER BY id") == \
        [(a, 1, "simple"), (b, 2, "extended")]
    assert db.q("SELECT tenant_id::text, workspace_id FROM audit_logs WHERE action = 'app.event'") == [(b, 2)]
    # the violation rows carry the tenant the rejection named, and that tenant's own workspace
    rows = tgtest.wait_until(lambda: len(violations(db)) >= 3 and violations(db), 15, what="3 violation rows")
    assert rows == [(a, 1, "R2", "denied"), (None, None, "R3", "denied"), (a, 1, "R4", "denied")]


def test_backfill_and_phase_3_bind_rows(setup):
    db, p, (a, b, c) = setup
    with db.conn() as conn:   # rows written before the proxy: unbound
        for i in range(7):
            conn.execute("INSERT INTO notes (tenant_id, body) VALUES (%s, %s)", (a if i % 2 else b, f"old {i}"))
    r = tg("backfill", "-c", p.config_path, "--dsn", db.dsn, "--batch-size", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert db.q("SELECT tenant_id::text, workspace_id, count(*) FROM notes GROUP BY 1, 2 ORDER BY 2") == \
        [(a, 1, 3), (b, 2, 4)]
    r = tg("migrate", "--phase", "3", "-c", p.config_path, "--dsn", db.dsn)
    assert r.returncode == 0, r.stdout + r.stderr
    # the composite key now holds on the server too, whatever the proxy does
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        db.q("INSERT INTO notes (tenant_id, workspace_id, body) VALUES (%s, 2, 'direct')", a)
