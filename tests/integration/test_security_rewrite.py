"""Enforcement against a client that tries to get around it, through the proxy in
enforce mode on a phase-1 database (nullable workspace_id, tenantguard's helpers).

The cases here came from fuzz_rewrite (tests/fuzz); each is a statement a client
may send, checked by what ends up stored."""
import os
import subprocess

import psycopg
import pytest

import tgtest

DB = "tg_security"
OWNED = ["policies", "policy_versions", "backup_sets", "backup_items", "restore_runs", "backup_schedules",
         "inventory_items", "inventory_links", "entra_groups", "findings", "entra_role_definitions",
         "tenant_permissions"]


def phase1_database(pg, name):
    """A database with the demo schema after phase 1 and the helpers installed."""
    rwtool = os.path.join(os.environ.get("TG_BUILD_DIR", os.path.join(tgtest.REPO, "build")),
                          "tests", "tools", "rwtool")
    pg.create_database(name, os.path.join(tgtest.REPO, "sql", "demo_schema.sql"))
    for t in OWNED:
        pg.psql(f"ALTER TABLE {t} ADD COLUMN workspace_id bigint NULL REFERENCES workspaces (id)", db=name,
                user="app")
    pg.psql("CREATE UNIQUE INDEX tenants_id_workspace ON tenants (id, workspace_id)", db=name, user="app")
    helpers = subprocess.run([rwtool, "--render-helpers"], capture_output=True, check=True).stdout.decode()
    path = os.path.join(pg.base, f"{name}_helpers.sql")
    with open(path, "w") as f:
        f.write(helpers)
    os.chmod(path, 0o644)
    pg.psql_file(path, db=name, user="app")
    pg.psql("INSERT INTO workspaces (id, name) VALUES (1, 'w1'), (2, 'w2');"
            "INSERT INTO tenants (id, workspace_id, name) VALUES (3, 1, 't3'), (4, 2, 't4')", db=name, user="app")


@pytest.fixture(scope="module")
def secdb(pg):
    phase1_database(pg, DB)
    return pg


@pytest.fixture
def enforcing(secdb, proxy_factory):
    secdb.psql("TRUNCATE policies CASCADE; DROP SCHEMA IF EXISTS selecttenantguard CASCADE", db=DB, user="app")
    secdb.psql("INSERT INTO policies (id, tenant_id, name, workspace_id) VALUES (1, 3, 'p', 1); "
               "SELECT setval('policies_id_seq', 1)", db=DB, user="app")
    return proxy_factory({"mode": "enforce"})


def stored(pg):
    return pg.psql("SELECT tenant_id, workspace_id FROM policies WHERE id = 1", db=DB, user="app")


def test_plain_tenant_change_is_rejected(secdb, enforcing):
    """The control: R4 holds for the ordinary form."""
    with enforcing.connect(db=DB) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("UPDATE policies SET (tenant_id, name) = (SELECT 4, 'moved') WHERE id = 1")
    assert stored(secdb) == "3|1"


def test_tenant_change_through_a_glued_splice_is_rejected(secdb, enforcing):
    with enforcing.connect(db=DB) as c:
        c.execute("CREATE SCHEMA selecttenantguard")
        c.execute("CREATE FUNCTION selecttenantguard.tenant_keep(text, text, anyelement, anycompatible) "
                  "RETURNS anycompatible LANGUAGE sql AS 'SELECT $4'")
        with pytest.raises(psycopg.Error):
            c.execute("UPDATE policies SET (tenant_id, name) = (SELECT+4, 'moved') WHERE id = 1")
    assert stored(secdb) == "3|1", "tenant 3's row now belongs to tenant 4 and still to workspace 1"


def test_insert_select_from_a_table_named_like_a_keyword(secdb, enforcing):
    secdb.psql('DROP SCHEMA IF EXISTS s CASCADE; CREATE SCHEMA s; CREATE TABLE s."returning" (tenant_id bigint, '
               "name text); INSERT INTO s.\"returning\" VALUES (3, 'kw')", db=DB, user="app")
    with enforcing.connect(db=DB) as c:
        c.execute("INSERT INTO policies (tenant_id, name) SELECT * FROM s.returning")
    assert secdb.psql("SELECT workspace_id FROM policies WHERE name = 'kw'", db=DB, user="app") == "1"
