"""The harness itself: the cluster is up, roles and schema are as the other tests expect."""
import psycopg
import pytest


def test_cluster_roles_and_schema(pg):
    assert pg.psql("SELECT current_setting('server_version_num')::int / 10000") == "15"
    roles = pg.psql("SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles "
                    "WHERE rolname IN ('app','md5_user','plain_user','trust_user','tg_admin')")
    assert roles == "app,md5_user,plain_user,tg_admin,trust_user"
    tables = int(pg.psql("SELECT count(*) FROM information_schema.tables "
                         "WHERE table_schema = 'public'"))
    assert tables == 16  # workspaces, tenants, 12 tenant-owned, audit_logs, operation_runs


def test_direct_password_auth_works(pg):
    with psycopg.connect(f"host=127.0.0.1 port={pg.port} user=app password=app-Secret-42 "
                         "dbname=app sslmode=disable") as c:
        assert c.execute("SELECT current_user").fetchone()[0] == "app"
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(f"host=127.0.0.1 port={pg.port} user=app password=wrong dbname=app "
                        "sslmode=disable")
    assert "password authentication failed" in str(e.value)
